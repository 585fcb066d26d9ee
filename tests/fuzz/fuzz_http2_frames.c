/* Fuzz target: HTTP/2 frames from a client that has sent a valid connection
 * preface and SETTINGS, so that every input reaches the frame layer
 * (HEADERS and CONTINUATION, DATA against the windows, RST_STREAM,
 * PRIORITY, PING, GOAWAY, WINDOW_UPDATE, extended CONNECT) on the same
 * server and routes as fuzz_http_request. */
#define FUZZ_HTTP2_FRAMES 1
#include "fuzz_http_request.c"
