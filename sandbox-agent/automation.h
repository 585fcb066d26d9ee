/* Browser automation: AIO's /v1/browser/page, tabs, cookies, state and network
 * operations, on one DevTools connection to the browser (cdp.h).
 *
 * The agent keeps the tabs (page targets) in the order it first saw them;
 * one of them is active, and page operations act on it. Each page it has
 * worked on is attached through a flat session with Page, Runtime and
 * Network enabled, so its console messages and its requests are recorded
 * (the last AUTOMATION_LOG entries of each) for /page/console,
 * /network/requests and the HAR export. Routes (block, or answer with a
 * given response) are applied with the Fetch domain on every attached page.
 */
#ifndef SBX_AGENT_AUTOMATION_H
#define SBX_AGENT_AUTOMATION_H

#include <jansson.h>
#include <stdbool.h>
#include <uv.h>

#define AUTOMATION_MAX_TABS 64
#define AUTOMATION_LOG	    1000

struct sbx_http_req;
struct cdp;
struct auto_job;
struct recording;

struct auto_tab {
	char target[64];
	char session[64]; /* "" until attached */
	char url[2048];
	char title[256];
	bool seen; /* in the last target list */
};

struct automation {
	uv_loop_t *loop;
	const char *cdp_addr; /* NULL: no browser */
	const char *workspace;
	struct cdp *cdp;
	struct auto_tab tabs[AUTOMATION_MAX_TABS];
	unsigned n_tabs;
	char active[64];  /* the active tab's target id */
	json_t *console;  /* [{type, text, timestamp, url}] */
	json_t *requests; /* [{request_id, url, method, ...}], oldest first */
	json_t *routes;	  /* [{url_pattern, abort, response}] */
	json_t *headers;  /* extra request headers */
	json_t *scoped;	  /* origin -> {header: value}: added to that origin's requests */
	unsigned res_width, res_height; /* POST /v1/browser/config; 0: the browser's own */
	double mouse_x, mouse_y;	/* where POST /v1/browser/actions left the pointer */
	struct auto_job *jobs;
	uint64_t network_at; /* the last request event (loop time) */
	/* POST /v1/browser/page/record: one screencast at a time. */
	struct recording *rec;	      /* NULL: none */
	char rec_session[64];	      /* the page it records */
	bool rec_ready;		      /* the screencast runs */
	bool rec_finishing;	      /* the file is being completed */
	struct auto_job *rec_starter; /* the start waiting for the file */
	struct auto_job *rec_job;     /* a "once" waiting for its end */
	struct auto_job *rec_stopper; /* a "stop" waiting for the file */
	json_t *rec_last;	      /* the last recording's result */
};

void automation_init(struct automation *a, uv_loop_t *loop, const char *cdp_addr,
		     const char *workspace);
/* Closes the browser connection (pending operations fail); on stop. */
void automation_close(struct automation *a);
/* Drops the DevTools connection and the page sessions; the next operation
 * connects again (a browser restarted, or a soft restart). */
void automation_reconnect(struct automation *a);
void automation_release(struct automation *a);

/* The route handlers; arg is the struct automation. */
void automation_navigate(struct sbx_http_req *req, void *arg);
void automation_back(struct sbx_http_req *req, void *arg);
void automation_forward(struct sbx_http_req *req, void *arg);
void automation_reload(struct sbx_http_req *req, void *arg);
void automation_click(struct sbx_http_req *req, void *arg);
void automation_fill(struct sbx_http_req *req, void *arg);
void automation_type(struct sbx_http_req *req, void *arg);
void automation_press_key(struct sbx_http_req *req, void *arg);
void automation_text(struct sbx_http_req *req, void *arg);
void automation_html(struct sbx_http_req *req, void *arg);
void automation_elements(struct sbx_http_req *req, void *arg);
void automation_markdown(struct sbx_http_req *req, void *arg);
void automation_evaluate(struct sbx_http_req *req, void *arg);
void automation_wait(struct sbx_http_req *req, void *arg);
void automation_hover(struct sbx_http_req *req, void *arg);
void automation_fill_form(struct sbx_http_req *req, void *arg);
void automation_hot_key(struct sbx_http_req *req, void *arg);
void automation_upload_file(struct sbx_http_req *req, void *arg);
void automation_scroll(struct sbx_http_req *req, void *arg);
void automation_scroll_to(struct sbx_http_req *req, void *arg);
void automation_scroll_to_element(struct sbx_http_req *req, void *arg);
void automation_check(struct sbx_http_req *req, void *arg);
void automation_uncheck(struct sbx_http_req *req, void *arg);
void automation_select_option(struct sbx_http_req *req, void *arg);
void automation_find_text(struct sbx_http_req *req, void *arg);
void automation_export_console(struct sbx_http_req *req, void *arg);
void automation_headers(struct sbx_http_req *req, void *arg);
void automation_scoped_headers(struct sbx_http_req *req, void *arg);
void automation_config(struct sbx_http_req *req, void *arg);
void automation_actions(struct sbx_http_req *req, void *arg);
void automation_captcha_detect(struct sbx_http_req *req, void *arg);
void automation_captcha_wait(struct sbx_http_req *req, void *arg);
void automation_screenshot(struct sbx_http_req *req, void *arg);
void automation_console(struct sbx_http_req *req, void *arg);
void automation_tabs(struct sbx_http_req *req, void *arg);
void automation_tab_new(struct sbx_http_req *req, void *arg);
void automation_tab_close(struct sbx_http_req *req, void *arg);
void automation_tab_activate(struct sbx_http_req *req, void *arg);
void automation_cookies(struct sbx_http_req *req, void *arg);
void automation_cookies_set(struct sbx_http_req *req, void *arg);
void automation_cookies_clear(struct sbx_http_req *req, void *arg);
void automation_state_save(struct sbx_http_req *req, void *arg);
void automation_state_load(struct sbx_http_req *req, void *arg);
void automation_route(struct sbx_http_req *req, void *arg);
void automation_route_remove(struct sbx_http_req *req, void *arg);
void automation_requests(struct sbx_http_req *req, void *arg);
void automation_export_har(struct sbx_http_req *req, void *arg);
void automation_record(struct sbx_http_req *req, void *arg);

#endif
