/* Skills (see skills.h). Registration reads folders and unpacks zips on the
 * thread pool; the registry itself is touched only on the loop thread. */
#define _GNU_SOURCE
#include "skills.h"

#include "api.h"
#include "files.h"
#include "sbx/alloc.h"
#include "sbx/buf.h"
#include "sbx/http.h"
#include "sbx/json.h"
#include "sbx/log.h"
#include "sbx/multipart.h"
#include "sbx/yaml.h"

#include <dirent.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <minizip/unzip.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_SKILL_MD	 (1u << 20)
#define MAX_ZIP_ENTRIES	 10000
#define MAX_ZIP_BYTES	 (512ull << 20) /* unpacked, all entries */
#define MAX_FOUND	 256
#define MAX_UPLOAD_BYTES (64u << 20)

struct skill {
	char name[256];
	char path[PATH_MAX];
	json_t *metadata;
	bool owned; /* unpacked by us: its files go when it is deleted */
};

/* ---- reading a skill ---------------------------------------------------------------- */

/* SKILL.md of dir: front matter as JSON (an object, maybe empty) and the
 * body after it. 0 or -errno / -EINVAL (front matter that is not YAML). */
static int read_skill_md(const char *dir, json_t **meta, char **body, char *err, size_t err_size)
{
	char path[PATH_MAX];
	struct sbx_buf b;
	const char *text, *end;
	int fd, rc = 0;
	ssize_t n;
	char chunk[65536];

	*meta = NULL;
	if (body)
		*body = NULL;
	if (snprintf(path, sizeof(path), "%s/SKILL.md", dir) >= (int)sizeof(path))
		return -ENAMETOOLONG;
	fd = files_open_read(path);
	if (fd < 0)
		return fd;
	sbx_buf_init(&b, MAX_SKILL_MD);
	while ((n = read(fd, chunk, sizeof(chunk))) > 0)
		if ((rc = sbx_buf_append(&b, chunk, (size_t)n)))
			break;
	close(fd);
	if (rc || n < 0) {
		sbx_buf_release(&b);
		snprintf(err, err_size, "%.200s: %s", path,
			 rc ? "larger than 1 MiB" : strerror(errno));
		return rc ? -EFBIG : -EIO;
	}
	text = b.data ? b.data : "";
	end = text;
	if (strncmp(text, "---\n", 4) == 0 || strncmp(text, "---\r\n", 5) == 0) {
		const char *yaml = text + (text[3] == '\r' ? 5 : 4), *close = yaml;

		/* The front matter ends at a line holding only "---". */
		for (;;) {
			close = strstr(close, "\n---");
			if (!close || close[4] == '\n' || close[4] == '\r' || !close[4])
				break;
			close += 4;
		}
		if (close) {
			*meta = sbx_yaml_load(yaml, (size_t)(close + 1 - yaml), 32, err, err_size);
			if (!*meta) {
				sbx_buf_release(&b);
				return -EINVAL;
			}
			end = close + 4;
			while (*end == '\r' || *end == '\n')
				end++;
		}
	}
	if (!json_is_object(*meta)) {
		json_decref(*meta);
		*meta = json_object();
	}
	if (body)
		*body = sbx_strdup(end);
	sbx_buf_release(&b);
	return 0;
}

static json_t *skill_json(const struct skill *s)
{
	return json_pack("{s:s, s:s, s:O, s:[]}", "name", s->name, "path", s->path, "metadata",
			 s->metadata, "dependency_commands");
}

/* ---- registration work (thread pool) --------------------------------------------------- */

struct found {
	char path[PATH_MAX];
	json_t *metadata;
	char name[256];
};

struct reg_job {
	uv_work_t work;
	struct skills *sk;
	struct sbx_http_req *req; /* NULL once the client has gone */
	char path[PATH_MAX];	  /* a folder to register, or "" */
	char name[256];		  /* the name asked for, or "" */
	char *zip;		  /* uploaded bytes, or NULL */
	size_t zip_len;
	struct found found[MAX_FOUND];
	size_t n_found;
	bool owned;
	int err;
	char message[512];
};

static int fail(struct reg_job *j, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int fail(struct reg_job *j, int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(j->message, sizeof(j->message), fmt, ap);
	va_end(ap);
	j->err = err ? err : EINVAL;
	return -1;
}

static bool has_skill_md(const char *dir)
{
	char p[PATH_MAX];
	struct stat st;

	return snprintf(p, sizeof(p), "%s/SKILL.md", dir) < (int)sizeof(p) && stat(p, &st) == 0 &&
	       S_ISREG(st.st_mode);
}

/* A skill's name becomes a folder under the skills directory: one path
 * segment of letters, digits, '.', '_' and '-', not starting with a dot (so
 * not "." or ".." either), so that it cannot name anything outside. */
static bool safe_name(const char *name, size_t len)
{
	if (!len || len > 255 || name[0] == '.')
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)name[i];

		if (!isalnum(c) && c != '.' && c != '_' && c != '-')
			return false;
	}
	return true;
}

static int add_found(struct reg_job *j, const char *dir, const char *fallback_name)
{
	struct found *f;
	char err[256];
	const char *name;
	int rc;

	if (j->n_found == MAX_FOUND)
		return fail(j, E2BIG, "more than %d skills at once", MAX_FOUND);
	f = &j->found[j->n_found];
	if ((rc = read_skill_md(dir, &f->metadata, NULL, err, sizeof(err))))
		return fail(j, -rc, "%s/SKILL.md: %s", dir, err[0] ? err : strerror(-rc));
	name = json_string_value(json_object_get(f->metadata, "name"));
	/* The name the front matter gives, else the one asked for, else the
	 * folder's (an unpacked zip's root has none usable). */
	snprintf(f->name, sizeof(f->name), "%s",
		 name && *name ? name
		 : j->name[0]  ? j->name
			       : fallback_name);
	if (!safe_name(f->name, strlen(f->name))) {
		json_decref(f->metadata);
		return fail(j, EINVAL, "skill name '%s' is not a usable name", f->name);
	}
	snprintf(f->path, sizeof(f->path), "%s", dir);
	j->n_found++;
	return 0;
}

/* dir is a skill, or a folder whose subfolders are skills. */
static int scan(struct reg_job *j, const char *dir)
{
	struct dirent **list;
	const char *base = strrchr(dir, '/');
	int n, rc = 0;

	if (has_skill_md(dir))
		return add_found(j, dir, base && base[1] ? base + 1 : dir);
	n = scandir(dir, &list, NULL, alphasort);
	if (n < 0)
		return fail(j, errno, "cannot read %s: %s", dir, strerror(errno));
	for (int i = 0; i < n; i++) {
		char sub[PATH_MAX];
		struct stat st;

		if (!rc && list[i]->d_name[0] != '.' &&
		    snprintf(sub, sizeof(sub), "%s/%s", dir, list[i]->d_name) < (int)sizeof(sub) &&
		    stat(sub, &st) == 0 && S_ISDIR(st.st_mode) && has_skill_md(sub))
			rc = add_found(j, sub, list[i]->d_name);
		free(list[i]);
	}
	free(list);
	if (!rc && !j->n_found)
		return fail(j, ENOENT, "no SKILL.md in %s or in its subfolders", dir);
	return rc;
}

/* A zip entry name is safe to create under a folder: relative, no "..", no
 * empty parts, no backslashes or control characters. */
static bool safe_entry(const char *name)
{
	if (!*name || name[0] == '/' || strlen(name) > 1024)
		return false;
	for (const char *p = name; *p;) {
		size_t n = strcspn(p, "/");

		if ((n == 2 && p[0] == '.' && p[1] == '.') || (n == 0 && p[n]))
			return false;
		p += n + (p[n] == '/');
	}
	for (const unsigned char *c = (const unsigned char *)name; *c; c++)
		if (*c < 0x20 || *c == '\\')
			return false;
	return true;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(path);
}

static void rm_tree(const char *path)
{
	nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static int unpack(struct reg_job *j, const char *zip_path, const char *dest)
{
	unzFile z = unzOpen64(zip_path);
	unsigned long long total = 0;
	unsigned entries = 0;
	int rc;

	if (!z)
		return fail(j, EINVAL, "the upload is not a zip archive");
	for (rc = unzGoToFirstFile(z); rc == UNZ_OK; rc = unzGoToNextFile(z)) {
		unz_file_info64 info;
		char name[1100], out[PATH_MAX];
		char buf[65536];
		int fd, n;

		if (++entries > MAX_ZIP_ENTRIES) {
			unzClose(z);
			return fail(j, E2BIG, "the zip has more than %d entries", MAX_ZIP_ENTRIES);
		}
		if (unzGetCurrentFileInfo64(z, &info, name, sizeof(name), NULL, 0, NULL, 0) !=
			    UNZ_OK ||
		    !safe_entry(name)) {
			unzClose(z);
			return fail(j, EINVAL, "the zip holds an unsafe or unreadable entry name");
		}
		if (snprintf(out, sizeof(out), "%s/%s", dest, name) >= (int)sizeof(out)) {
			unzClose(z);
			return fail(j, ENAMETOOLONG, "a zip entry's path is too long");
		}
		if (name[strlen(name) - 1] == '/') {
			if (files_make_parents(out) || (mkdir(out, 0755) && errno != EEXIST)) {
				unzClose(z);
				return fail(j, errno, "cannot create %s", out);
			}
			continue;
		}
		if (files_make_parents(out) || unzOpenCurrentFile(z) != UNZ_OK) {
			unzClose(z);
			return fail(j, EIO, "cannot unpack %s", name);
		}
		fd = open(out, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
		if (fd < 0) {
			unzCloseCurrentFile(z);
			unzClose(z);
			return fail(j, errno, "cannot create %s: %s", out, strerror(errno));
		}
		while ((n = unzReadCurrentFile(z, buf, sizeof(buf))) > 0) {
			total += (unsigned long long)n;
			if (total > MAX_ZIP_BYTES || write(fd, buf, (size_t)n) != n) {
				n = total > MAX_ZIP_BYTES ? -2 : -1;
				break;
			}
		}
		close(fd);
		if (unzCloseCurrentFile(z) != UNZ_OK || n < 0) {
			unzClose(z);
			return fail(j, n == -2 ? EFBIG : EIO,
				    n == -2 ? "the zip unpacks to more than 512 MiB"
					    : "the zip is damaged (bad data or checksum)");
		}
	}
	unzClose(z);
	if (rc != UNZ_END_OF_LIST_OF_FILE)
		return fail(j, EINVAL, "the zip is damaged");
	return 0;
}

static void reg_work(uv_work_t *w)
{
	struct reg_job *j = w->data;
	char tmp[PATH_MAX], zip_path[PATH_MAX];
	int fd;

	if (!j->zip) {
		struct stat st;

		if (stat(j->path, &st) || !S_ISDIR(st.st_mode)) {
			fail(j, errno ? errno : ENOTDIR, "%s is not a folder", j->path);
			return;
		}
		(void)scan(j, j->path);
		return;
	}
	/* Unpack next to the skills, then move each skill into place. */
	j->owned = true;
	if (files_make_parents(j->sk->root) || (mkdir(j->sk->root, 0755) && errno != EEXIST)) {
		fail(j, errno, "cannot create %s: %s", j->sk->root, strerror(errno));
		return;
	}
	if (snprintf(tmp, sizeof(tmp), "%s/.unpack-XXXXXX", j->sk->root) >= (int)sizeof(tmp) - 4 ||
	    !mkdtemp(tmp)) {
		fail(j, errno, "cannot create a folder in %s: %s", j->sk->root, strerror(errno));
		return;
	}
	if (snprintf(zip_path, sizeof(zip_path), "%s.zip", tmp) >= (int)sizeof(zip_path)) {
		rm_tree(tmp); /* cannot happen: 4 bytes were kept free above */
		fail(j, ENAMETOOLONG, "skills directory path too long");
		return;
	}
	fd = open(zip_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0 || write(fd, j->zip, j->zip_len) != (ssize_t)j->zip_len) {
		if (fd >= 0)
			close(fd);
		unlink(zip_path);
		rm_tree(tmp);
		fail(j, EIO, "cannot store the upload");
		return;
	}
	close(fd);
	if (unpack(j, zip_path, tmp) == 0 && scan(j, tmp) == 0) {
		/* A single skill also named by the form field takes that name. */
		if (j->name[0] && j->n_found == 1)
			snprintf(j->found[0].name, sizeof(j->found[0].name), "%s", j->name);
		for (size_t i = 0; i < j->n_found; i++) {
			char final[PATH_MAX];
			struct found *f = &j->found[i];

			if (snprintf(final, sizeof(final), "%s/%s", j->sk->root, f->name) >=
			    (int)sizeof(final)) {
				fail(j, ENAMETOOLONG, "skill name too long: %.100s", f->name);
				break;
			}
			rm_tree(final); /* a new version replaces the old */
			/* The zip's root may be the skill itself: then the whole
			 * folder moves. */
			if (rename(f->path, final)) {
				fail(j, errno, "cannot place skill %s: %s", f->name,
				     strerror(errno));
				break;
			}
			snprintf(f->path, sizeof(f->path), "%s", final);
		}
	}
	unlink(zip_path);
	rm_tree(tmp);
}

static void reg_done(uv_work_t *w, int status)
{
	struct reg_job *j = w->data;
	json_t *registered = json_array();

	if (j->req) {
		sbx_http_on_abort(j->req, NULL, NULL);
		if (!j->err && j->name[0] && j->n_found == 1 && !j->owned)
			snprintf(j->found[0].name, sizeof(j->found[0].name), "%s", j->name);
		for (size_t i = 0; !j->err && i < j->n_found; i++) {
			struct skill *s = sbx_calloc(1, sizeof(*s)), *old = NULL;

			if (!s)
				break;
			snprintf(s->name, sizeof(s->name), "%s", j->found[i].name);
			snprintf(s->path, sizeof(s->path), "%s", j->found[i].path);
			s->metadata = json_incref(j->found[i].metadata);
			s->owned = j->owned;
			if (sbx_map_put(&j->sk->reg, s->name, s, (void **)&old)) {
				json_decref(s->metadata);
				sbx_free(s);
				continue;
			}
			if (old) {
				json_decref(old->metadata);
				sbx_free(old);
			}
			json_array_append_new(registered, skill_json(s));
		}
		if (j->err)
			api_fail(j->req, j->message, NULL);
		else
			api_ok(j->req, "Skills registered",
			       json_pack("{s:I, s:o}", "count",
					 (json_int_t)json_array_size(registered), "registered",
					 json_incref(registered)));
	}
	json_decref(registered);
	for (size_t i = 0; i < j->n_found; i++)
		json_decref(j->found[i].metadata);
	sbx_free(j->zip);
	sbx_free(j);
}

static void reg_gone(struct sbx_http_req *req, void *arg)
{
	((struct reg_job *)arg)->req = NULL;
}

/* ---- the multipart form ------------------------------------------------------------------ */

struct form {
	struct sbx_buf path, name, file;
	struct sbx_buf *cur;
	bool has_file;
};

static int form_begin(void *arg, const struct sbx_multipart_part *p)
{
	struct form *f = arg;

	f->cur = strcmp(p->name, "path") == 0	? &f->path
		 : strcmp(p->name, "name") == 0 ? &f->name
		 : strcmp(p->name, "file") == 0 ? &f->file
						: NULL;
	if (f->cur == &f->file)
		f->has_file = true;
	return 0;
}

static int form_data(void *arg, const char *at, size_t len)
{
	struct form *f = arg;

	return f->cur && sbx_buf_append(f->cur, at, len) ? -E2BIG : 0;
}

static int form_end(void *arg)
{
	((struct form *)arg)->cur = NULL;
	return 0;
}

void skills_handle_register(struct sbx_http_req *req, void *arg)
{
	static const struct sbx_multipart_callbacks cb = { form_begin, form_data, form_end };
	struct skills *sk = arg;
	struct form f = { 0 };
	struct sbx_multipart *mp;
	struct reg_job *j;
	const char *body;
	char err[160];
	size_t len;
	int rc;

	sbx_buf_init(&f.path, PATH_MAX);
	sbx_buf_init(&f.name, 255);
	sbx_buf_init(&f.file, MAX_UPLOAD_BYTES);
	mp = sbx_multipart_new(sbx_http_header(req, "Content-Type"), &cb, &f, 16, err, sizeof(err));
	if (!mp) {
		api_invalid(req, "body", err, "value_error");
		goto out;
	}
	body = sbx_http_body(req, &len);
	rc = sbx_multipart_feed(mp, body, len);
	if (!rc)
		rc = sbx_multipart_finish(mp);
	if (rc) {
		api_invalid(req, "body",
			    rc == -E2BIG ? "a field is too large" : sbx_multipart_error(mp),
			    "value_error");
		goto out;
	}
	if (!f.has_file && !f.path.len) {
		api_invalid(req, "body", "give a zip as 'file' or a folder as 'path'", "missing");
		goto out;
	}
	if (f.name.len && !safe_name(f.name.data, f.name.len)) {
		api_invalid(
			req, "body.name",
			"a skill name is one path segment of letters, digits, '.', '_' and '-', "
			"not starting with '.'",
			"value_error");
		goto out;
	}
	j = sbx_calloc(1, sizeof(*j));
	if (!j) {
		sbx_http_respond_error(req, 503, "out of memory");
		goto out;
	}
	j->sk = sk;
	j->req = req;
	j->work.data = j;
	if (f.name.len)
		snprintf(j->name, sizeof(j->name), "%.*s", (int)f.name.len, f.name.data);
	if (f.has_file) {
		j->zip_len = f.file.len;
		j->zip = sbx_buf_steal(&f.file);
	} else if (files_resolve(&(struct files){ .workspace = sk->workspace }, f.path.data,
				 f.path.len, j->path, sizeof(j->path))) {
		sbx_free(j);
		api_invalid(req, "body.path", "not a usable path", "value_error");
		goto out;
	}
	sbx_http_on_abort(req, reg_gone, j);
	if (uv_queue_work(sk->loop, &j->work, reg_work, reg_done)) {
		sbx_http_on_abort(req, NULL, NULL);
		sbx_free(j->zip);
		sbx_free(j);
		sbx_http_respond_error(req, 503, "cannot queue the work");
	}
out:
	sbx_multipart_free(mp);
	sbx_buf_release(&f.path);
	sbx_buf_release(&f.name);
	sbx_buf_release(&f.file);
}

/* ---- reading the registry ------------------------------------------------------------------- */

struct listing {
	json_t *skills;
	const char *names; /* comma-separated filter, or NULL */
};

static bool in_list(const char *names, const char *name)
{
	size_t n = strlen(name);

	for (const char *p = names; *p;) {
		size_t len = strcspn(p, ",");

		if (len == n && strncmp(p, name, n) == 0)
			return true;
		p += len + (p[len] == ',');
	}
	return false;
}

static void list_one(const char *key, void *value, void *arg)
{
	struct listing *l = arg;
	const struct skill *s = value;

	if (!l->names || in_list(l->names, s->name))
		json_array_append_new(l->skills, skill_json(s));
}

void skills_handle_list(struct sbx_http_req *req, void *arg)
{
	struct skills *sk = arg;
	char names[4096];
	struct listing l = { .skills = json_array() };

	if (sbx_http_query(req, "names", names, sizeof(names)) >= 0)
		l.names = names;
	sbx_map_foreach(&sk->reg, list_one, &l);
	api_ok(req, "Skills", json_pack("{s:o}", "skills", l.skills));
}

void skills_handle_content(struct sbx_http_req *req, void *arg)
{
	struct skills *sk = arg;
	struct skill *s = sbx_map_get(&sk->reg, sbx_http_param(req, "name"));
	char err[256];
	json_t *meta;
	char *body;
	int rc;

	if (!s) {
		api_fail(req, "no such skill", NULL);
		return;
	}
	/* Read now: the skill's files may have changed since it was registered. */
	if ((rc = read_skill_md(s->path, &meta, &body, err, sizeof(err)))) {
		api_fail(req,
			 rc == -ENOENT ? "the skill's SKILL.md is gone" : "cannot read SKILL.md",
			 NULL);
		return;
	}
	json_decref(meta);
	api_ok(req, "Skill content",
	       json_pack("{s:s, s:s, s:s}", "name", s->name, "path", s->path, "content", body));
	sbx_free(body);
}

static void skill_free(struct skill *s, bool remove_files)
{
	if (remove_files && s->owned)
		rm_tree(s->path);
	json_decref(s->metadata);
	sbx_free(s);
}

void skills_handle_delete(struct sbx_http_req *req, void *arg)
{
	struct skills *sk = arg;
	struct skill *s = sbx_map_remove(&sk->reg, sbx_http_param(req, "name"));

	if (!s) {
		api_fail(req, "no such skill", NULL);
		return;
	}
	json_t *gone = skill_json(s);

	/* Files first: the answer must not reach the client before they go. */
	skill_free(s, true);
	api_ok(req, "Skill deleted", gone);
}

static size_t clear_all(struct skills *sk, bool remove_files)
{
	struct skill *s;
	size_t n = 0;

	for (; (s = sbx_map_pop(&sk->reg)); n++)
		skill_free(s, remove_files);
	return n;
}

void skills_handle_clear(struct sbx_http_req *req, void *arg)
{
	size_t n = clear_all(arg, true);

	api_ok(req, "Skills cleared", json_pack("{s:I}", "cleared", (json_int_t)n));
}

int skills_init(struct skills *sk, uv_loop_t *loop, const char *workspace, const char *root)
{
	const char *home = getenv("HOME");

	memset(sk, 0, sizeof(*sk));
	sk->loop = loop;
	sk->workspace = workspace;
	if (root && *root)
		snprintf(sk->root, sizeof(sk->root), "%s", root);
	else
		snprintf(sk->root, sizeof(sk->root), "%s/.sbx/skills",
			 home && *home ? home : workspace);
	sbx_map_init(&sk->reg, 4096);
	return 0;
}

void skills_release(struct skills *sk)
{
	clear_all(sk, false);
	sbx_map_release(&sk->reg);
}
