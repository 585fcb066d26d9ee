/* Fuzz target: the watch-stream splitter (bytes from the apiserver). The
 * input is fed in chunks whose sizes come from the input itself, so chunk
 * boundaries fall everywhere; the result must not depend on them. */
#include "sbx/kube_watch.h"

#include <stdint.h>
#include <string.h>

static int on_event(const char *type, json_t *object, void *arg)
{
	size_t *n = arg;

	(*n)++;
	/* Touch what a consumer would read. */
	(void)json_object_get(object, "metadata");
	return strcmp(type, "STOP") == 0 ? -1 : 0;
}

static int feed(const uint8_t *data, size_t size, size_t chunk, size_t *events)
{
	struct sbx_watch_splitter s;
	int rc = 0;

	sbx_watch_splitter_init(&s, 4096, on_event, events);
	for (size_t off = 0; off < size && rc == 0; off += chunk) {
		size_t n = size - off < chunk ? size - off : chunk;

		rc = sbx_watch_splitter_feed(&s, (const char *)data + off, n);
	}
	sbx_watch_splitter_release(&s);
	return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t whole = 0, pieces = 0;
	size_t chunk = size ? (size_t)data[0] % 17 + 1 : 1;
	int a = feed(data, size, size ? size : 1, &whole);
	int b = feed(data, size, chunk, &pieces);

	/* Chunking must not change the outcome of a clean stream. */
	if (a == 0 && (b != 0 || whole != pieces))
		__builtin_trap();
	return 0;
}
