/* Unit tests for the HTTP core's pieces that need no socket: route
 * patterns, percent-decoding, target splitting, reason phrases. (The codecs
 * are driven over socketpairs in test_http_codec.c, and the server over real
 * sockets in tests/integration/test_http_server.py.) */
#define _GNU_SOURCE /* memmem, in http_req.c */
#include "unit.h"

#include "http_req.c"

static int match(const char *pattern, const char *path, size_t *n)
{
	const char *names[SBX_HTTP_MAX_PARAMS], *values[SBX_HTTP_MAX_PARAMS];
	size_t lens[SBX_HTTP_MAX_PARAMS];

	return sbx_http_match(pattern, path, names, values, lens, n);
}

static void patterns(void **state)
{
	const char *names[SBX_HTTP_MAX_PARAMS], *values[SBX_HTTP_MAX_PARAMS];
	size_t lens[SBX_HTTP_MAX_PARAMS], n;

	assert_true(match("/v1/ping", "/v1/ping", &n) && n == 0);
	assert_false(match("/v1/ping", "/v1/ping/", &n));
	assert_false(match("/v1/ping", "/v1/pin", &n));
	assert_true(match("/v1/mcp/*", "/v1/mcp/", &n));
	assert_true(match("/v1/mcp/*", "/v1/mcp/a/b/c", &n));
	assert_false(match("/v1/mcp/*", "/v1/mc", &n));
	assert_true(sbx_http_match("/v1/mcp/{server}/tools/{tool}", "/v1/mcp/fs/tools/read", names,
				   values, lens, &n));
	assert_int_equal(n, 2);
	assert_memory_equal(values[0], "fs", lens[0]);
	assert_int_equal(lens[1], 4);
	assert_memory_equal(names[1], "tool}", 5);
	/* A parameter never matches an empty segment or crosses a slash. */
	assert_false(match("/a/{x}/b", "/a//b", &n));
	assert_false(match("/a/{x}", "/a/b/c", &n));
	assert_false(match("/a/{x", "/a/b", &n));
}

static void decoding(void **state)
{
	char out[32];

	assert_int_equal(url_decode("a%20b+c%2F%zz%4", 15, out, sizeof(out)), 11);
	assert_string_equal(out, "a b c/%zz%4");
	assert_int_equal(url_decode("%41%42", 6, out, sizeof(out)), 2);
	assert_string_equal(out, "AB");
	assert_int_equal(url_decode("abcdef", 6, out, 4), -ENAMETOOLONG);
	/* A '%' at the very end, and one byte before it. */
	assert_int_equal(url_decode("x%", 2, out, sizeof(out)), 2);
	assert_int_equal(url_decode("x%4", 3, out, sizeof(out)), 3);
}

static void reasons_and_headers(void **state)
{
	assert_string_equal(sbx_http_reason(404), "Not Found");
	assert_string_equal(sbx_http_reason(431), "Request Header Fields Too Large");
	assert_string_equal(sbx_http_reason(299), "Unknown");
	assert_true(http_valid_header("X-Trace-Id", "abc def"));
	assert_false(http_valid_header("X Bad", "v"));
	assert_false(http_valid_header("", "v"));
	assert_false(http_valid_header("X-Ok", "a\r\nSet-Cookie: evil"));
	/* Connection lists: tokens in any case, any spacing, none partial. */
	assert_true(sbx_http_list_has("keep-alive, Upgrade", "upgrade"));
	assert_true(sbx_http_list_has(" ,\tX-Secret\t ,", "x-secret"));
	assert_false(sbx_http_list_has("X-Secret-2, keep-alive", "x-secret"));
	assert_false(sbx_http_list_has("close", "clos"));
	assert_false(sbx_http_list_has("", "close"));
	assert_false(sbx_http_list_has(NULL, "close"));
}

/* Every byte value against RFC 9110's tchar list, and names compared as
 * ASCII in any case, and only letters folded. */
static void tokens_and_names(void **state)
{
	static const struct sbx_http_name set[] = {
		SBX_HTTP_NAME("host"),
		SBX_HTTP_NAME("upgrade"),
		SBX_HTTP_NAME("te"),
	};
	static const char listed[] = "!#$%&'*+-.^_`|~0123456789"
				     "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

	for (int c = 0; c < 256; c++) {
		char one = (char)c;

		assert_int_equal(http_is_token(&one, 1), c && strchr(listed, c) != NULL);
	}
	assert_true(http_is_token("X-Forwarded-For", 15));
	assert_false(http_is_token("X Forwarded", 11));
	assert_true(http_is_token("", 0));
	assert_true(sbx_http_name_eq("Content-Type", "content-type"));
	assert_true(sbx_http_name_eq("", ""));
	assert_false(sbx_http_name_eq("Content-Type", "content-typ"));
	assert_false(sbx_http_name_eq("content-typ", "Content-Type"));
	assert_false(sbx_http_name_eq("a^b", "a~b")); /* 0x5e and 0x7e: not letters */
	assert_false(sbx_http_name_eq("a@b", "a`b"));
	assert_false(sbx_http_name_eq("x_y", "x\x7fy"));
	assert_true(sbx_http_name_in("UPGRADE", 7, set, 3));
	assert_true(sbx_http_name_in("Te", 2, set, 3));
	assert_false(sbx_http_name_in("upgrades", 8, set, 3));
	assert_false(sbx_http_name_in("upgrad", 6, set, 3));
	assert_false(sbx_http_name_in("hist", 4, set, 3)); /* same length, same first letter */
	assert_false(sbx_http_name_in("upgrade", 7, set, 0));
	assert_true(SBX_HTTP_NAME_IS("Content-Length", 14, "content-length"));
	assert_false(SBX_HTTP_NAME_IS("Content-Lengths", 15, "content-length"));
	assert_false(SBX_HTTP_NAME_IS("Content-Type", 12, "content-length"));
}

/* What a proxy keeps of a request's or an answer's header fields. */
static void hop_by_hop_fields(void **state)
{
	static const char *const hop[] = { "Connection", "KEEP-ALIVE", "proxy-connection",
					   "TE",	 "Trailer",    "Transfer-Encoding",
					   "upgrade" };
	const struct sbx_http_field answer[] = {
		{ .name = "Content-Type", .value = "text/plain", .name_len = 12 },
		{ .name = "Connection", .value = "keep-alive, X-Hop", .name_len = 10 },
		{ .name = "X-App", .value = "yes", .name_len = 5 },
		{ .name = "x-hop", .value = "secret", .name_len = 5 },
		{ .name = "Keep-Alive", .value = "timeout=5", .name_len = 10 },
		{ .name = "Content-Length", .value = "5", .name_len = 14 },
		{ .name = "Date", .value = "then", .name_len = 4 },
		{ .name = "Server", .value = "upstream", .name_len = 6 },
		{ .name = "Set-Cookie", .value = "a=1", .name_len = 10 },
		{ .name = "Transfer-Encoding", .value = "chunked", .name_len = 17 },
	};
	struct sbx_http_req r = { 0 };
	const char *type, *length;

	for (size_t i = 0; i < sizeof(hop) / sizeof(hop[0]); i++)
		assert_true(sbx_http_hop_by_hop(hop[i], strlen(hop[i])));
	assert_false(sbx_http_hop_by_hop("Host", 4));
	assert_false(sbx_http_hop_by_hop("Content-Length", 14));
	assert_false(sbx_http_hop_by_hop("tee", 3));
	assert_false(sbx_http_hop_by_hop("upgrades", 8));
	/* The answer's end-to-end fields pass, in their order; the server
	 * writes the type, length, date and server itself. */
	sbx_buf_init(&r.resp_headers, 64);
	sbx_http_pass_answer_fields(&r, answer, sizeof(answer) / sizeof(answer[0]), &type, &length);
	assert_string_equal(type, "text/plain");
	assert_string_equal(length, "5");
	assert_int_equal(r.resp_headers.len, strlen("X-App: yes\r\nSet-Cookie: a=1\r\n"));
	assert_memory_equal(r.resp_headers.data, "X-App: yes\r\nSet-Cookie: a=1\r\n",
			    r.resp_headers.len);
	sbx_buf_reset(&r.resp_headers);
	sbx_http_pass_answer_fields(&r, answer + 2, 1, &type, &length);
	assert_null(type);
	assert_null(length);
	assert_int_equal(r.resp_headers.len, strlen("X-App: yes\r\n"));
	sbx_buf_release(&r.resp_headers);
}

static void targets(void **state)
{
	struct sbx_http_req r = { 0 };

	sbx_buf_init(&r.arena, 256);
	sbx_buf_append(&r.arena, "/v1/file/read?path=%2Ftmp&x=1", 30);
	req_split_target(&r);
	assert_string_equal(r.path, "/v1/file/read");
	assert_string_equal(r.query, "path=%2Ftmp&x=1");
	sbx_buf_reset(&r.arena);
	sbx_buf_append(&r.arena, "http://example.test:8080/p?q", 29);
	r.query = "";
	req_split_target(&r);
	assert_string_equal(r.path, "/p");
	assert_string_equal(r.query, "q");
	/* A forward proxy's request: the authority apart, and the scheme. */
	assert_string_equal(sbx_http_authority(&r), "example.test:8080");
	assert_string_equal(sbx_http_scheme(&r), "http");
	sbx_buf_reset(&r.arena);
	sbx_buf_append(&r.arena, "HTTPS://h?only=query", 21);
	r.query = NULL;
	req_split_target(&r);
	assert_string_equal(r.path, "/");
	assert_string_equal(r.query, "only=query");
	assert_string_equal(sbx_http_authority(&r), "h");
	assert_string_equal(sbx_http_scheme(&r), "https");
	/* origin-form has none */
	sbx_buf_reset(&r.arena);
	sbx_free(r.authority);
	r.authority = NULL;
	sbx_buf_append(&r.arena, "/x", 3);
	req_split_target(&r);
	assert_null(sbx_http_authority(&r));
	assert_null(sbx_http_scheme(&r));
	sbx_buf_release(&r.arena);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(patterns),
		cmocka_unit_test(decoding),
		cmocka_unit_test(reasons_and_headers),
		cmocka_unit_test(tokens_and_names),
		cmocka_unit_test(hop_by_hop_fields),
		cmocka_unit_test(targets),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
