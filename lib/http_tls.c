/* TLS under the HTTP codecs: OpenSSL on memory BIOs, so that the libuv
 * socket stays the only I/O. Records read from the socket go into the
 * engine; the plaintext it yields goes to the codec; what the codec sends
 * is encrypted and the records are written like any other bytes. ALPN picks
 * h2 or http/1.1 (the codec then sees HTTP/2's preface or a request line).
 */
#include "http_types.h"

#include "sbx/alloc.h"
#include "sbx/log.h"

#include <errno.h>
#include <openssl/err.h>
#include <stdio.h>
#include <string.h>

static void on_written(uv_write_t *w, int status)
{
	struct http_wreq *wr = (struct http_wreq *)w;
	struct http_conn *c = wr->owner;

	sbx_free(wr);
	conn_written(c, status);
}

/* Writes the records the engine has produced. */
static int flush_records(struct http_conn *c)
{
	BIO *w = SSL_get_wbio(c->ssl);
	char records[32768];
	int n;

	while ((n = BIO_read(w, records, sizeof(records))) > 0) {
		uv_buf_t buf = uv_buf_init(records, (unsigned)n);
		ssize_t queued = http_write((uv_stream_t *)&c->tcp, &buf, 1, on_written, c);

		if (queued < 0)
			return -EPIPE;
		if (queued && !c->write_at) {
			c->write_at = uv_now(c->s->loop) + c->s->o.write_timeout_ms;
			conn_arm(c);
		}
	}
	return 0;
}

static int tls_send(struct http_conn *c, const uv_buf_t *bufs, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		if (bufs[i].len && SSL_write(c->ssl, bufs[i].base, (int)bufs[i].len) <= 0) {
			ERR_clear_error();
			return -EIO;
		}
	}
	return flush_records(c);
}

static void tls_input(struct http_conn *c, const char *data, size_t len)
{
	char plain[16384];
	int n = 0, e;

	if (BIO_write(SSL_get_rbio(c->ssl), data, (int)len) != (int)len) {
		conn_close(c);
		return;
	}
	if (!SSL_is_init_finished(c->ssl)) {
		n = SSL_do_handshake(c->ssl);
		flush_records(c);
		if (n <= 0) {
			e = SSL_get_error(c->ssl, n);
			if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
				sbx_log_debug(
					"TLS handshake failed", SBX_LS("peer", c->peer),
					SBX_LS("error", ERR_reason_error_string(ERR_peek_error())
								?: "closed"));
				ERR_clear_error();
				conn_close(c);
			}
			return;
		}
	}
	while (conn_alive(c) && (n = SSL_read(c->ssl, plain, sizeof(plain))) > 0)
		conn_input(c, plain, (size_t)n);
	if (!conn_alive(c))
		return;
	e = SSL_get_error(c->ssl, n);
	flush_records(c);
	if (e == SSL_ERROR_ZERO_RETURN) {
		conn_shutdown(c); /* the client's close_notify */
	} else if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
		ERR_clear_error();
		conn_close(c);
	}
}

static void tls_shutdown(struct http_conn *c)
{
	if (SSL_is_init_finished(c->ssl)) {
		SSL_shutdown(c->ssl); /* close_notify, then the TCP half-close */
		flush_records(c);
	}
}

const struct http_xprt http_tls_xprt = {
	.send = tls_send,
	.input = tls_input,
	.shutdown = tls_shutdown,
};

int tls_attach(struct http_conn *c, SSL_CTX *ctx)
{
	BIO *r = BIO_new(BIO_s_mem()), *w = BIO_new(BIO_s_mem());

	c->ssl = SSL_new(ctx);
	if (!c->ssl || !r || !w) {
		BIO_free(r);
		BIO_free(w);
		return -ENOMEM;
	}
	SSL_set_bio(c->ssl, r, w);
	SSL_set_accept_state(c->ssl);
	return 0;
}

/* ALPN: HTTP/2 when the client offers it, else HTTP/1.1. */
static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
		       const unsigned char *in, unsigned int inlen, void *arg)
{
	static const unsigned char ours[] = "\x02h2\x08http/1.1";

	(void)ssl;
	(void)arg;
	if (SSL_select_next_proto((unsigned char **)out, outlen, ours, sizeof(ours) - 1, in,
				  inlen) != OPENSSL_NPN_NEGOTIATED)
		return SSL_TLSEXT_ERR_ALERT_FATAL; /* no protocol in common */
	return SSL_TLSEXT_ERR_OK;
}

SSL_CTX *tls_ctx_new(const char *cert_file, const char *key_file, char *err, size_t err_size)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

	if (!ctx) {
		snprintf(err, err_size, "cannot make a TLS context");
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
	SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
	if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1 ||
	    SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_check_private_key(ctx) != 1) {
		snprintf(err, err_size, "TLS certificate %s / key %s: %s", cert_file, key_file,
			 ERR_reason_error_string(ERR_peek_last_error()) ?: "unusable");
		ERR_clear_error();
		SSL_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}
