/* What the test tools share: they report to the tests as JSON lines on
 * stdout, one object per line, flushed at once. */
#ifndef SBX_TEST_TOOL_H
#define SBX_TEST_TOOL_H

#include "sbx/alloc.h"
#include "sbx/json.h"

#include <stdio.h>

/* Prints o as one line and takes the reference. */
static inline void print_line(json_t *o)
{
	char *s = sbx_json_dumps(o);

	if (s) {
		puts(s);
		fflush(stdout);
		sbx_free(s);
	}
	json_decref(o);
}

#endif
