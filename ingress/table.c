/* The routing table (see table.h). */
#include "table.h"

#include "route.h"

#include "sbx/alloc.h"
#include "sbx/json.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

static void sandbox_unref(struct ingress_sandbox *s)
{
	if (s && atomic_fetch_sub(&s->refs, 1) == 1)
		sbx_free(s);
}

static bool is_ip(const char *s)
{
	unsigned char buf[16];

	return inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1;
}

struct ingress_table *ingress_table_new(void)
{
	struct ingress_table *t = sbx_calloc(1, sizeof(*t));

	if (!t)
		return NULL;
	atomic_init(&t->refs, 1);
	sbx_map_init(&t->by_id, INGRESS_MAX_SANDBOXES);
	return t;
}

struct clone_ctx {
	struct ingress_table *to;
	int rc;
};

static void clone_one(const char *key, void *value, void *arg)
{
	struct clone_ctx *c = arg;
	struct ingress_sandbox *s = value;

	if (c->rc)
		return;
	if (!(c->rc = sbx_map_put(&c->to->by_id, key, s, NULL)))
		atomic_fetch_add(&s->refs, 1);
}

struct ingress_table *ingress_table_clone(const struct ingress_table *t)
{
	struct ingress_table *n = ingress_table_new();
	struct clone_ctx c = { n, 0 };

	if (!n)
		return NULL;
	n->generation = t->generation + 1;
	sbx_map_foreach(&t->by_id, clone_one, &c);
	if (c.rc) {
		ingress_table_unref(n);
		return NULL;
	}
	return n;
}

struct ingress_table *ingress_table_ref(struct ingress_table *t)
{
	atomic_fetch_add(&t->refs, 1);
	return t;
}

void ingress_table_unref(struct ingress_table *t)
{
	struct ingress_sandbox *s;

	if (!t || atomic_fetch_sub(&t->refs, 1) != 1)
		return;
	while ((s = sbx_map_pop(&t->by_id)))
		sandbox_unref(s);
	sbx_map_release(&t->by_id);
	sbx_free(t);
}

/* Copies src to *at and moves *at past it. */
static const char *put_str(char **at, const char *src)
{
	char *dst = *at;
	size_t n = strlen(src) + 1;

	memcpy(dst, src, n);
	*at += n;
	return dst;
}

int ingress_table_put(struct ingress_table *t, const struct ingress_sandbox_spec *s)
{
	const char *address = s->address ?: "", *ns = s->ns ?: "", *phase = s->phase ?: "";
	struct ingress_sandbox *e;
	void *old = NULL;
	char *at;
	int rc;

	if (!s->id || !ingress_valid_id(s->id, strlen(s->id)) || s->n_ports > INGRESS_MAX_PORTS ||
	    (*address && !is_ip(address)))
		return -EINVAL;
	e = sbx_calloc(1, sizeof(*e) + strlen(s->id) + strlen(address) + strlen(ns) +
				  strlen(phase) + 4);
	if (!e)
		return -ENOMEM;
	atomic_init(&e->refs, 1);
	at = (char *)(e + 1);
	e->id = put_str(&at, s->id);
	e->address = put_str(&at, address);
	e->ns = put_str(&at, ns);
	e->phase = put_str(&at, phase);
	e->ready = s->ready && *address;
	e->n_ports = s->n_ports;
	if (s->n_ports)
		memcpy(e->ports, s->ports, s->n_ports * sizeof(s->ports[0]));
	if ((rc = sbx_map_put(&t->by_id, e->id, e, &old))) {
		sbx_free(e);
		return rc;
	}
	sandbox_unref(old);
	return 0;
}

void ingress_table_remove(struct ingress_table *t, const char *id)
{
	sandbox_unref(sbx_map_remove(&t->by_id, id));
}

const struct ingress_sandbox *ingress_table_get(const struct ingress_table *t, const char *id)
{
	return sbx_map_get(&t->by_id, id);
}

size_t ingress_table_count(const struct ingress_table *t)
{
	return t->by_id.count;
}

bool ingress_sandbox_has_port(const struct ingress_sandbox *s, unsigned port)
{
	for (size_t i = 0; i < s->n_ports; i++)
		if (s->ports[i] == port)
			return true;
	return false;
}

/* ---- the routes file ------------------------------------------------------------------ */

static int load_entry(struct ingress_table *t, const json_t *e, size_t i, char *err,
		      size_t err_size)
{
	uint16_t ports[INGRESS_MAX_PORTS];
	struct ingress_sandbox_spec s = { .ports = ports };
	const json_t *ready = json_object_get(e, "ready"), *p;
	const char *key;
	json_t *v;
	size_t j;

	if (!json_is_object(e)) {
		snprintf(err, err_size, "sandboxes[%zu]: expected a mapping", i);
		return -EINVAL;
	}
	json_object_foreach((json_t *)e, key, v)
	{
		if (strcmp(key, "id") && strcmp(key, "address") && strcmp(key, "ports") &&
		    strcmp(key, "ready") && strcmp(key, "namespace")) {
			snprintf(err, err_size, "sandboxes[%zu]: unknown key '%s'", i, key);
			return -EINVAL;
		}
	}
	s.id = json_string_value(json_object_get(e, "id"));
	s.address = json_string_value(json_object_get(e, "address"));
	s.ns = json_string_value(json_object_get(e, "namespace"));
	if (!s.id || !ingress_valid_id(s.id, strlen(s.id))) {
		snprintf(err, err_size, "sandboxes[%zu].id: expected a DNS label (a-z, 0-9, '-')",
			 i);
		return -EINVAL;
	}
	if (!s.address || !is_ip(s.address)) {
		snprintf(err, err_size, "sandboxes[%zu].address: expected an IP address", i);
		return -EINVAL;
	}
	if (ready && !json_is_boolean(ready)) {
		snprintf(err, err_size, "sandboxes[%zu].ready: expected true or false", i);
		return -EINVAL;
	}
	s.ready = !ready || json_is_true(ready);
	s.phase = s.ready ? "Running" : "Pending";
	if (!json_is_array(json_object_get(e, "ports")) ||
	    json_array_size(json_object_get(e, "ports")) > INGRESS_MAX_PORTS) {
		snprintf(err, err_size, "sandboxes[%zu].ports: expected a list of up to %d ports",
			 i, INGRESS_MAX_PORTS);
		return -EINVAL;
	}
	json_array_foreach(json_object_get(e, "ports"), j, p)
	{
		json_int_t port = json_integer_value(p);

		if (!json_is_integer(p) || port < 1 || port > 65535) {
			snprintf(err, err_size, "sandboxes[%zu].ports[%zu]: expected 1-65535", i,
				 j);
			return -EINVAL;
		}
		ports[s.n_ports++] = (uint16_t)port;
	}
	if (ingress_table_get(t, s.id)) {
		snprintf(err, err_size, "sandboxes[%zu].id: '%s' is listed twice", i, s.id);
		return -EINVAL;
	}
	if (ingress_table_put(t, &s)) {
		snprintf(err, err_size, "sandboxes[%zu]: too many sandboxes", i);
		return -E2BIG;
	}
	return 0;
}

struct ingress_table *ingress_routes_load(const json_t *doc, char *err, size_t err_size)
{
	struct ingress_table *t;
	const json_t *list = json_object_get(doc, "sandboxes"), *e;
	size_t i;

	if (!json_is_object(doc) || (list && !json_is_array(list))) {
		snprintf(err, err_size, "expected a mapping with a list under 'sandboxes'");
		return NULL;
	}
	if (!(t = ingress_table_new())) {
		snprintf(err, err_size, "out of memory");
		return NULL;
	}
	json_array_foreach(list, i, e)
	{
		if (load_entry(t, e, i, err, err_size)) {
			ingress_table_unref(t);
			return NULL;
		}
	}
	return t;
}

/* ---- Sandbox objects ---------------------------------------------------------------------- */

static bool ready_condition(const json_t *status)
{
	const json_t *c;
	size_t i;

	json_array_foreach(json_object_get(status, "conditions"), i, c)
	{
		if (!strcmp(sbx_json_str(c, "type") ?: "", "Ready"))
			return !strcmp(sbx_json_str(c, "status") ?: "", "True");
	}
	return false;
}

int ingress_sandbox_from_object(const json_t *obj, struct ingress_sandbox_spec *out,
				uint16_t ports[INGRESS_MAX_PORTS])
{
	const json_t *status = json_object_get(obj, "status"), *e;
	size_t i;

	memset(out, 0, sizeof(*out));
	out->id = sbx_json_str(status, "id");
	if (!out->id || !*out->id)
		return -ENOENT;
	out->address = sbx_json_str(status, "podIP") ?: "";
	out->ns = sbx_json_str(obj, "metadata.namespace") ?: "";
	out->phase = sbx_json_str(status, "phase") ?: "Pending";
	out->ready = ready_condition(status) && !strcmp(out->phase, "Running");
	out->ports = ports;
	json_array_foreach(json_object_get(status, "endpoints"), i, e)
	{
		json_int_t port = json_integer_value(json_object_get(e, "port"));

		if (port >= 1 && port <= 65535 && out->n_ports < INGRESS_MAX_PORTS)
			ports[out->n_ports++] = (uint16_t)port;
	}
	return 0;
}
