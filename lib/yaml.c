/* YAML to jansson (see sbx/yaml.h), on libyaml's event parser. */
#include "sbx/yaml.h"

#include "sbx/alloc.h"
#include "sbx/buf.h"
#include "sbx/log.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

struct parse {
	yaml_parser_t parser;
	unsigned max_depth;
	char *err;
	size_t err_size;
};

static json_t *parse_node(struct parse *p, yaml_event_t *ev, unsigned depth);

static void fail_at(struct parse *p, const yaml_mark_t *m, const char *what)
{
	snprintf(p->err, p->err_size, "line %zu, column %zu: %s", m->line + 1, m->column + 1, what);
}

static bool next(struct parse *p, yaml_event_t *ev)
{
	if (yaml_parser_parse(&p->parser, ev))
		return true;
	fail_at(p, &p->parser.problem_mark, p->parser.problem ? p->parser.problem : "invalid YAML");
	return false;
}

static bool is_plain(const yaml_event_t *ev)
{
	return ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE && !ev->data.scalar.tag;
}

/* Core-schema typing of a plain scalar. */
static json_t *scalar(const yaml_event_t *ev)
{
	const char *s = (const char *)ev->data.scalar.value;
	size_t n = ev->data.scalar.length;
	char *end;

	if (!is_plain(ev))
		return json_stringn(s, n);
	if (n == 0 || strcmp(s, "~") == 0 || strcmp(s, "null") == 0 || strcmp(s, "Null") == 0 ||
	    strcmp(s, "NULL") == 0)
		return json_null();
	if (strcmp(s, "true") == 0 || strcmp(s, "True") == 0 || strcmp(s, "TRUE") == 0)
		return json_true();
	if (strcmp(s, "false") == 0 || strcmp(s, "False") == 0 || strcmp(s, "FALSE") == 0)
		return json_false();
	if (strspn(s, "+-0123456789") == n && strpbrk(s, "0123456789")) {
		long long v;

		errno = 0;
		v = strtoll(s, &end, 10);
		if (*end == '\0' && errno == 0)
			return json_integer(v);
	}
	if (strspn(s, "+-0123456789.eE") == n && strpbrk(s, "0123456789")) {
		double d = strtod(s, &end);

		if (*end == '\0')
			return json_real(d);
	}
	return json_stringn(s, n);
}

static json_t *parse_mapping(struct parse *p, unsigned depth)
{
	json_t *obj = json_object(), *key, *val;
	yaml_event_t ev;

	if (!obj)
		return NULL;
	for (;;) {
		if (!next(p, &ev))
			goto out_free;
		if (ev.type == YAML_MAPPING_END_EVENT) {
			yaml_event_delete(&ev);
			return obj;
		}
		/* A mapping or list as a key would have to become text, and nested
		 * ones grow that text exponentially: keys are scalars, full stop. */
		if (ev.type != YAML_SCALAR_EVENT) {
			fail_at(p, &ev.start_mark, "mapping keys must be plain values");
			yaml_event_delete(&ev);
			goto out_free;
		}
		key = parse_node(p, &ev, depth + 1);
		if (!key)
			goto out_free;
		if (!json_is_string(key)) {
			/* Keys like 'true' or '1' are strings to every consumer of ours. */
			char *text = json_dumps(key, JSON_ENCODE_ANY);

			json_decref(key);
			key = text ? json_string(text) : NULL;
			sbx_free(text);
			if (!key)
				goto out_free;
		}
		if (!next(p, &ev)) {
			json_decref(key);
			goto out_free;
		}
		val = parse_node(p, &ev, depth + 1);
		if (!val || json_object_set_new(obj, json_string_value(key), val)) {
			json_decref(key);
			goto out_free;
		}
		json_decref(key);
	}
out_free:
	json_decref(obj);
	return NULL;
}

static json_t *parse_sequence(struct parse *p, unsigned depth)
{
	json_t *arr = json_array(), *val;
	yaml_event_t ev;

	if (!arr)
		return NULL;
	for (;;) {
		if (!next(p, &ev))
			goto out_free;
		if (ev.type == YAML_SEQUENCE_END_EVENT) {
			yaml_event_delete(&ev);
			return arr;
		}
		val = parse_node(p, &ev, depth + 1);
		if (!val || json_array_append_new(arr, val))
			goto out_free;
	}
out_free:
	json_decref(arr);
	return NULL;
}

static bool anchored(const yaml_event_t *ev)
{
	switch (ev->type) {
	case YAML_SCALAR_EVENT:
		return ev->data.scalar.anchor != NULL;
	case YAML_MAPPING_START_EVENT:
		return ev->data.mapping_start.anchor != NULL;
	case YAML_SEQUENCE_START_EVENT:
		return ev->data.sequence_start.anchor != NULL;
	default:
		return false;
	}
}

/* Consumes ev (always deleted) and the events of its children. */
static json_t *parse_node(struct parse *p, yaml_event_t *ev, unsigned depth)
{
	yaml_event_type_t type = ev->type;
	yaml_mark_t m = ev->start_mark;
	json_t *v = NULL;

	if (depth > p->max_depth) {
		fail_at(p, &m, "nested too deeply");
		yaml_event_delete(ev);
		return NULL;
	}
	if (type == YAML_ALIAS_EVENT || anchored(ev)) {
		fail_at(p, &m, "anchors and aliases are not supported");
		yaml_event_delete(ev);
		return NULL;
	}
	if (type == YAML_SCALAR_EVENT) {
		v = scalar(ev);
		yaml_event_delete(ev);
		if (!v)
			fail_at(p, &m, "string is not valid UTF-8");
		return v;
	}
	yaml_event_delete(ev);
	if (type == YAML_MAPPING_START_EVENT)
		v = parse_mapping(p, depth);
	else if (type == YAML_SEQUENCE_START_EVENT)
		v = parse_sequence(p, depth);
	else
		fail_at(p, &m, "unexpected YAML event");
	if (!v && !p->err[0])
		fail_at(p, &m, "out of memory");
	return v;
}

json_t *sbx_yaml_load(const char *data, size_t len, unsigned max_depth, char *err, size_t err_size)
{
	struct parse p = { .max_depth = max_depth, .err = err, .err_size = err_size };
	yaml_event_t ev;
	json_t *root = NULL;

	err[0] = '\0';
	if (!yaml_parser_initialize(&p.parser)) {
		snprintf(err, err_size, "out of memory");
		return NULL;
	}
	yaml_parser_set_input_string(&p.parser, (const unsigned char *)data, len);
	for (;;) {
		if (!next(&p, &ev))
			break;
		if (ev.type == YAML_STREAM_START_EVENT || ev.type == YAML_DOCUMENT_START_EVENT) {
			yaml_event_delete(&ev);
			continue;
		}
		if (ev.type == YAML_STREAM_END_EVENT || ev.type == YAML_DOCUMENT_END_EVENT) {
			yaml_event_delete(&ev);
			root = json_null();
			break;
		}
		root = parse_node(&p, &ev, 0);
		break;
	}
	yaml_parser_delete(&p.parser);
	return root;
}

json_t *sbx_yaml_load_file(const char *path, size_t max_bytes, char *err, size_t err_size)
{
	char inner[256], chunk[8192];
	struct sbx_buf b;
	json_t *v = NULL;
	size_t n;
	FILE *f;
	int rc = 0;

	f = fopen(path, "rb");
	if (!f) {
		snprintf(err, err_size, "%s: %s", path, strerror(errno));
		return NULL;
	}
	sbx_buf_init(&b, max_bytes);
	while (!rc && (n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		rc = sbx_buf_append(&b, chunk, n);
	if (rc == -E2BIG)
		snprintf(err, err_size, "%s: larger than %zu bytes", path, max_bytes);
	else if (rc || ferror(f))
		snprintf(err, err_size, "%s: %s", path, rc ? sbx_strerror(rc) : "read error");
	else if (!(v = sbx_yaml_load(b.data ? b.data : "", b.len, 64, inner, sizeof(inner))))
		snprintf(err, err_size, "%s: %s", path, inner);
	fclose(f);
	sbx_buf_release(&b);
	return v;
}
