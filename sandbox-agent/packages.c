/* GET /v1/sandbox/packages/python and /nodejs: the packages installed for
 * the sandbox's runtimes, asked of the runtimes themselves (python3 lists
 * its distributions with importlib.metadata, so pip is not needed; npm
 * lists its global packages). Each run is bounded in time and output. */
#include "packages.h"

#include "api.h"
#include "sbx/alloc.h"
#include "sbx/buf.h"
#include "sbx/http.h"
#include "sbx/json.h"

#include <signal.h>
#include <string.h>

#define TIMEOUT_MS (30 * 1000)
#define MAX_OUTPUT (8u << 20)

static const char python_list[] =
	"import json, importlib.metadata as m\n"
	"seen = {}\n"
	"for d in m.distributions():\n"
	"    name = d.metadata['Name']\n"
	"    if name and name.lower() not in seen:\n"
	"        seen[name.lower()] = {'name': name, 'version': d.version}\n"
	"print(json.dumps(sorted(seen.values(), key=lambda p: p['name'].lower())))\n";

struct listing {
	struct sbx_http_req *req; /* NULL once the client has gone */
	bool python;
	uv_process_t proc;
	uv_pipe_t out;
	uv_timer_t timer;
	int open_handles;
	int pending; /* exit + EOF */
	int64_t status;
	bool timed_out;
	struct sbx_buf buf;
};

static void closed(uv_handle_t *h)
{
	struct listing *l = h->data;

	if (--l->open_handles)
		return;
	sbx_buf_release(&l->buf);
	sbx_free(l);
}

/* npm ls --json: {"dependencies": {"name": {"version": ...}}} into a list. */
static json_t *npm_list(json_t *tree)
{
	json_t *list = json_array(), *v;
	const char *name;

	json_object_foreach(json_object_get(tree, "dependencies"), name, v)
		json_array_append_new(list, json_pack("{s:s, s:s}", "name", name, "version",
						      sbx_json_str(v, "version") ?: ""));
	return list;
}

static void answer(struct listing *l)
{
	char err[160];
	json_t *parsed;

	if (!l->req)
		return;
	sbx_http_on_abort(l->req, NULL, NULL);
	parsed = l->buf.len ? sbx_json_loadb(l->buf.data, l->buf.len, MAX_OUTPUT, err, sizeof(err))
			    : NULL;
	if (l->timed_out)
		api_fail(l->req, "listing the packages took longer than 30 s", NULL);
	else if (!parsed)
		api_fail(l->req,
			 l->python ? "python3 could not list its packages"
				   : "npm could not list its global packages",
			 NULL);
	else
		api_ok(l->req, "Packages",
		       l->python ? json_incref(parsed) : npm_list(parsed)); /* npm: exit 1 on
									     * peer problems,
									     * output still good */
	json_decref(parsed);
}

static void step(struct listing *l)
{
	if (--l->pending)
		return;
	answer(l);
	uv_timer_stop(&l->timer);
	uv_close((uv_handle_t *)&l->proc, closed);
	uv_close((uv_handle_t *)&l->out, closed);
	uv_close((uv_handle_t *)&l->timer, closed);
}

static void on_exit_cb(uv_process_t *p, int64_t status, int sig)
{
	struct listing *l = p->data;

	l->status = status;
	step(l);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	static char chunk[65536];

	*buf = uv_buf_init(chunk, sizeof(chunk));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
	struct listing *l = s->data;

	if (n > 0) {
		if (sbx_buf_append(&l->buf, buf->base, (size_t)n))
			sbx_buf_reset(&l->buf); /* too much: answered as a failure */
		return;
	}
	if (n < 0) {
		uv_read_stop(s);
		step(l);
	}
}

static void on_timeout(uv_timer_t *t)
{
	struct listing *l = t->data;

	l->timed_out = true;
	uv_process_kill(&l->proc, SIGKILL);
}

static void gone(struct sbx_http_req *req, void *arg)
{
	((struct listing *)arg)->req = NULL;
}

static void start(struct sbx_http_req *req, uv_loop_t *loop, bool python)
{
	static char *py[] = { "python3", "-c", (char *)python_list, NULL };
	static char *npm[] = { "npm", "ls", "-g", "--json", "--depth=0", NULL };
	struct listing *l = sbx_calloc(1, sizeof(*l));
	uv_stdio_container_t stdio[3] = { { .flags = UV_IGNORE },
					  { .flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE },
					  { .flags = UV_IGNORE } };
	uv_process_options_t o = { 0 };
	int rc;

	if (!l) {
		sbx_http_respond_error(req, 503, "out of memory");
		return;
	}
	l->req = req;
	l->python = python;
	l->pending = 2;
	sbx_buf_init(&l->buf, MAX_OUTPUT);
	uv_pipe_init(loop, &l->out, 0);
	uv_timer_init(loop, &l->timer);
	l->proc.data = l->out.data = l->timer.data = l;
	l->open_handles = 3;
	stdio[1].data.stream = (uv_stream_t *)&l->out;
	o.file = python ? py[0] : npm[0];
	o.args = python ? py : npm;
	o.stdio = stdio;
	o.stdio_count = 3;
	o.exit_cb = on_exit_cb;
	rc = uv_spawn(loop, &l->proc, &o);
	if (rc) {
		api_fail(req,
			 python ? "no Python (python3) in this sandbox" : "no npm in this sandbox",
			 NULL);
		l->req = NULL;
		l->pending = 1;
		step(l);
		return;
	}
	uv_read_start((uv_stream_t *)&l->out, on_alloc, on_read);
	uv_timer_start(&l->timer, on_timeout, TIMEOUT_MS, 0);
	sbx_http_on_abort(req, gone, l);
}

void packages_handle_python(struct sbx_http_req *req, void *arg)
{
	start(req, arg, true);
}

void packages_handle_nodejs(struct sbx_http_req *req, void *arg)
{
	start(req, arg, false);
}
