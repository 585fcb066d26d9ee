/* The browser, when the sandbox has one (--cdp ADDR: a Chromium started
 * with --remote-debugging-port): GET /v1/browser/info (a cdp_url that
 * Playwright's connect_over_cdp takes, pointing back through the agent),
 * /cdp/json/version and /cdp/json[/list] (Chromium's answers with their
 * WebSocket addresses rewritten to the agent's), the DevTools WebSocket
 * passed through at /cdp/devtools/..., and GET /v1/browser/screenshot
 * (Page.captureScreenshot of the first page, PNG or JPEG). Without a
 * browser each of these answers that there is none. */
#ifndef SBX_AGENT_BROWSER_H
#define SBX_AGENT_BROWSER_H

#include <uv.h>

struct sbx_http_req;

struct browser {
	uv_loop_t *loop;
	const char *cdp;	/* "127.0.0.1:9222", or NULL */
	unsigned width, height; /* the display size reported */
};

void browser_handle_info(struct sbx_http_req *req, void *arg);
void browser_handle_json(struct sbx_http_req *req, void *arg);
void browser_handle_devtools(struct sbx_http_req *req, void *arg);
void browser_handle_screenshot(struct sbx_http_req *req, void *arg);

#endif
