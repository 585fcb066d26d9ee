/* A Chrome DevTools Protocol client on the loop: one WebSocket to the
 * browser's own endpoint (ws://.../devtools/browser/<id>, found through
 * /json/version), commands with a callback and a deadline each, and events
 * handed to one listener. Pages are reached through flat sessions
 * (Target.attachToTarget with flatten): a command names its session, an
 * event carries one.
 *
 * Opening is asynchronous: cdp_call before the socket is up queues the
 * command. When the connection fails or closes, every pending call gets
 * its callback with an error, and the next call opens a new connection.
 */
#ifndef SBX_AGENT_CDP_H
#define SBX_AGENT_CDP_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

struct cdp;

/* result is the command's "result" (borrowed, for the callback's length),
 * or NULL with error set: the browser's error message, "timed out", or why
 * the connection failed. */
typedef void (*cdp_reply_cb)(json_t *result, const char *error, void *arg);
/* An event: its method, its session ("" for the browser's own), params. */
typedef void (*cdp_event_cb)(const char *method, const char *session, json_t *params, void *arg);
/* The connection is gone (after the pending calls had their errors). */
typedef void (*cdp_lost_cb)(void *arg);

/* addr is "host:port" of Chromium's DevTools HTTP side. */
struct cdp *cdp_new(uv_loop_t *loop, const char *addr, cdp_event_cb on_event, cdp_lost_cb on_lost,
		    void *arg);
/* Closes the connection; pending calls get an error first. */
void cdp_free(struct cdp *c);

/* Sends method with params (stolen; NULL: {}) to session (NULL or "": the
 * browser). cb runs exactly once, never before this returns. */
void cdp_call(struct cdp *c, const char *session, const char *method, json_t *params,
	      uint64_t timeout_ms, cdp_reply_cb cb, void *arg);

/* Whether the WebSocket is up. */
bool cdp_connected(const struct cdp *c);

#endif
