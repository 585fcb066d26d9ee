/* Fuzz target: sbx-ingress's route parser. The input is three lines (path,
 * Host, OpenSandbox-Ingress-To); an empty Host or header line stands for
 * none. Whatever it routes must name a valid id and port, and a path that
 * is within the request's own. */
#include <assert.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "route.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *in = malloc(size + 1), *path, *host, *to, *nl;
	struct ingress_target t;
	const char *why;
	int rc;

	if (!in)
		return 0;
	memcpy(in, data, size);
	in[size] = '\0';
	path = in;
	host = (nl = strchr(path, '\n')) ? (*nl = '\0', nl + 1) : NULL;
	to = host && (nl = strchr(host, '\n')) ? (*nl = '\0', nl + 1) : NULL;
	rc = ingress_route(path, host && *host ? host : NULL, to && *to ? to : NULL,
			   "sbx.example.com", &t, &why);
	if (rc == 0) {
		assert(ingress_valid_id(t.id, strlen(t.id)));
		assert(t.port >= 1 && t.port <= 65535);
		assert(t.rest >= path && t.rest <= path + strlen(path));
		assert(!strchr(t.rest, '\\'));
		assert(t.form == INGRESS_FORM_PATH ? t.prefix_len > 0 : t.prefix_len == 0);
	} else {
		assert(rc == -ENOENT || (rc == -EINVAL && why));
	}
	free(in);
	return 0;
}
