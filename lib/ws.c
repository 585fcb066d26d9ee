/* WebSocket (RFC 6455, framing by wslay) on the byte stream that a
 * protocol switch provides: HTTP/1.1 Upgrade with its key handshake, or an
 * HTTP/2 extended CONNECT (RFC 8441, no key). The same route therefore works
 * over both. Pings go out every ws_ping_interval_ms; a peer that sends
 * nothing (not even a pong) for two intervals is gone. When the server
 * stops, the peer gets a close frame (1001, going away).
 */
#include "http_types.h"

#include "sbx/alloc.h"
#include "sbx/base64.h"

#include <errno.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <wslay/wslay.h>

struct sbx_ws {
	struct http_stream *st; /* NULL once gone */
	wslay_event_context_ptr ctx;
	const struct sbx_ws_callbacks *cb;
	void *arg;
	uv_timer_t ping;
	uint64_t last_in_ms;
	struct sbx_buf in; /* read, not yet taken by wslay */
	size_t in_off;
	bool blocked; /* the send callback said "would block" */
	bool closing; /* our side has ended the stream */
	char peer[64];
};

static ssize_t recv_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags, void *user)
{
	struct sbx_ws *ws = user;
	size_t n = ws->in.len - ws->in_off;

	(void)flags;
	if (!n) {
		wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
		return -1;
	}
	if (n > len)
		n = len;
	memcpy(buf, ws->in.data + ws->in_off, n);
	ws->in_off += n;
	return (ssize_t)n;
}

static ssize_t send_cb(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags,
		       void *user)
{
	struct sbx_ws *ws = user;

	(void)flags;
	if (!ws->st || ws->closing) {
		wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
		return -1;
	}
	if (ws->st->ops->congested(ws->st)) {
		ws->blocked = true;
		wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
		return -1;
	}
	if (ws->st->ops->send(ws->st, data, len) < 0) {
		wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
		return -1;
	}
	return (ssize_t)len;
}

static void msg_cb(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *m,
		   void *user)
{
	struct sbx_ws *ws = user;

	(void)ctx;
	if ((m->opcode == WSLAY_TEXT_FRAME || m->opcode == WSLAY_BINARY_FRAME) && ws->cb->message)
		ws->cb->message(ws, m->opcode == WSLAY_TEXT_FRAME ? SBX_WS_TEXT : SBX_WS_BINARY,
				(const char *)m->msg, m->msg_length, ws->arg);
}

/* Ends our side of the stream; the closed callback follows. */
static void end_stream(struct sbx_ws *ws)
{
	if (ws->st && !ws->closing) {
		ws->closing = true;
		ws->st->ops->close(ws->st);
	}
}

/* Sends what wslay has queued; ends the stream once both sides have closed
 * (or wslay has given up). */
static void flush(struct sbx_ws *ws)
{
	if (!ws->st || ws->closing)
		return;
	ws->blocked = false;
	if (wslay_event_send(ws->ctx)) {
		end_stream(ws);
		return;
	}
	if (ws->st && !wslay_event_want_read(ws->ctx) && !wslay_event_want_write(ws->ctx))
		end_stream(ws);
}

static void on_data(void *arg, const char *data, size_t len)
{
	struct sbx_ws *ws = arg;

	ws->last_in_ms = uv_now(ws->st->s->loop);
	if (sbx_buf_append(&ws->in, data, len)) {
		end_stream(ws);
		return;
	}
	if (wslay_event_recv(ws->ctx)) {
		end_stream(ws);
		return;
	}
	if (!ws->st)
		return; /* a message callback closed it */
	sbx_buf_consume(&ws->in, ws->in_off);
	ws->in_off = 0;
	flush(ws);
}

static void on_drained(void *arg)
{
	struct sbx_ws *ws = arg;

	if (ws->blocked)
		flush(ws);
	if (ws->st && !ws->blocked && ws->cb->drain)
		ws->cb->drain(ws, ws->arg);
}

static void on_shutdown(void *arg)
{
	sbx_ws_close(arg, 1001, "server stopping");
}

static void ping_closed(uv_handle_t *h)
{
	struct sbx_ws *ws = h->data;

	wslay_event_context_free(ws->ctx);
	sbx_buf_release(&ws->in);
	sbx_free(ws);
}

static void on_closed(void *arg)
{
	struct sbx_ws *ws = arg;

	ws->st = NULL;
	if (ws->cb->closed)
		ws->cb->closed(ws, ws->arg);
	uv_close((uv_handle_t *)&ws->ping, ping_closed);
}

static const struct http_stream_cb ws_stream_cb = {
	.data = on_data,
	.drained = on_drained,
	.shutdown = on_shutdown,
	.closed = on_closed,
};

static void on_ping(uv_timer_t *t)
{
	struct sbx_ws *ws = t->data;
	uint64_t interval = ws->st ? ws->st->s->o.ws_ping_interval_ms : 0;
	struct wslay_event_msg ping = { .opcode = WSLAY_PING, .msg = NULL, .msg_length = 0 };

	if (!ws->st || ws->closing)
		return;
	if (uv_now(ws->st->s->loop) - ws->last_in_ms >= 2 * interval) {
		end_stream(ws); /* silent for two intervals: gone */
		return;
	}
	wslay_event_queue_msg(ws->ctx, &ping);
	flush(ws);
}

void sbx_ws_accept_key(const char *key, char out[SBX_WS_ACCEPT_SIZE])
{
	static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
	unsigned char digest[SHA_DIGEST_LENGTH];
	EVP_MD_CTX *md = EVP_MD_CTX_new();

	/* With no context (out of memory) the answer is empty: the peer refuses. */
	out[0] = '\0';
	if (md && EVP_DigestInit_ex(md, EVP_sha1(), NULL) &&
	    EVP_DigestUpdate(md, key, strlen(key)) &&
	    EVP_DigestUpdate(md, guid, sizeof(guid) - 1) && EVP_DigestFinal_ex(md, digest, NULL))
		EVP_EncodeBlock((unsigned char *)out, digest, sizeof(digest));
	EVP_MD_CTX_free(md);
}

/* The handshake's checks; 0, or the status to answer (and the message). */
static int check_handshake(struct sbx_http_req *req, const char **why)
{
	const char *key = sbx_http_header(req, "Sec-WebSocket-Key");
	const char *version = sbx_http_header(req, "Sec-WebSocket-Version");
	char *raw = NULL;
	size_t raw_len = 0;
	bool key_ok;

	*why = "a WebSocket upgrade (GET with Upgrade: websocket, Connection: Upgrade and a "
	       "Sec-WebSocket-Key, or an HTTP/2 extended CONNECT with :protocol websocket) "
	       "is expected here";
	if (!req->upgrade || strcasecmp(req->upgrade, "websocket") != 0)
		return 400;
	if (!req->upgrade_by_connect) {
		/* HTTP/1.1: the key handshake (RFC 8441 has none). */
		key_ok = key && !sbx_base64_decode(key, strlen(key), &raw, &raw_len) &&
			 raw_len == 16;
		sbx_free(raw);
		if (!key_ok)
			return 400;
	}
	if (!version || strcmp(version, "13") != 0) {
		*why = "WebSocket version 13 is required";
		return 426;
	}
	return 0;
}

int sbx_http_websocket(struct sbx_http_req *req, const struct sbx_ws_callbacks *cb, void *arg,
		       size_t max_message, struct sbx_ws **out)
{
	static const struct wslay_event_callbacks wcb = { .recv_callback = recv_cb,
							  .send_callback = send_cb,
							  .on_msg_recv_callback = msg_cb };
	const char *key = sbx_http_header(req, "Sec-WebSocket-Key");
	struct sbx_http_server *s = req->s;
	char accept[SBX_WS_ACCEPT_SIZE];
	struct http_stream *st;
	const char *why;
	struct sbx_ws *ws;
	int status = check_handshake(req, &why);

	if (status) {
		if (status == 426)
			sbx_http_add_header(req, "Sec-WebSocket-Version", "13");
		sbx_http_respond_error(req, status, why);
		return -EINVAL;
	}
	ws = sbx_calloc(1, sizeof(*ws));
	if (!ws || wslay_event_context_server_init(&ws->ctx, &wcb, ws)) {
		sbx_free(ws);
		sbx_http_respond_error(req, 503, "out of memory");
		return -ENOMEM;
	}
	max_message = max_message ? max_message : 1u << 20;
	wslay_event_config_set_max_recv_msg_length(ws->ctx, max_message);
	sbx_buf_init(&ws->in, max_message + 2 * sizeof(s->read_buf) + s->o.max_header_bytes);
	if (!req->upgrade_by_connect) {
		sbx_ws_accept_key(key, accept);
		sbx_http_add_header(req, "Sec-WebSocket-Accept", accept);
	}
	if (req->ops->upgrade(req, &st)) {
		wslay_event_context_free(ws->ctx);
		sbx_free(ws);
		sbx_http_respond_error(req, 500, "cannot switch protocols");
		return -EIO;
	}
	/* The request is done; the stream is the WebSocket's. */
	ws->st = st;
	ws->cb = cb;
	ws->arg = arg;
	ws->last_in_ms = uv_now(s->loop);
	snprintf(ws->peer, sizeof(ws->peer), "%s", st->peer);
	uv_timer_init(s->loop, &ws->ping);
	ws->ping.data = ws;
	uv_timer_start(&ws->ping, on_ping, s->o.ws_ping_interval_ms, s->o.ws_ping_interval_ms);
	*out = ws;
	/* Frames the client sent right behind its handshake arrive now. */
	http_stream_attach(st, &ws_stream_cb, ws);
	return 0;
}

int sbx_ws_send(struct sbx_ws *ws, int opcode, const void *data, size_t len)
{
	struct wslay_event_msg m = { .opcode = opcode == SBX_WS_BINARY ? WSLAY_BINARY_FRAME
								       : WSLAY_TEXT_FRAME,
				     .msg = data,
				     .msg_length = len };

	if (!ws->st || ws->closing)
		return -ECONNRESET;
	/* wslay copies the message when it is queued. */
	if (wslay_event_queue_msg(ws->ctx, &m))
		return -ENOMEM;
	flush(ws);
	if (!ws->st || ws->closing)
		return -ECONNRESET;
	return ws->blocked || ws->st->ops->congested(ws->st);
}

void sbx_ws_close(struct sbx_ws *ws, uint16_t code, const char *reason)
{
	if (!ws->st || ws->closing)
		return;
	wslay_event_queue_close(ws->ctx, code, (const uint8_t *)(reason ? reason : ""),
				reason ? strlen(reason) : 0);
	flush(ws);
}

const char *sbx_ws_peer(const struct sbx_ws *ws)
{
	return ws->peer;
}
