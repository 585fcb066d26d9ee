/* Shared helpers for the cmocka unit tests. */
#ifndef SBX_TEST_UNIT_H
#define SBX_TEST_UNIT_H

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Captures what the code under test writes to stderr. */
struct capture {
	int saved_fd;
	FILE *tmp;
	char text[8192];
};

static inline void capture_start(struct capture *c)
{
	fflush(stderr);
	c->tmp = tmpfile();
	c->saved_fd = dup(2);
	dup2(fileno(c->tmp), 2);
}

static inline const char *capture_stop(struct capture *c)
{
	size_t n;

	fflush(stderr);
	dup2(c->saved_fd, 2);
	close(c->saved_fd);
	rewind(c->tmp);
	n = fread(c->text, 1, sizeof(c->text) - 1, c->tmp);
	c->text[n] = '\0';
	fclose(c->tmp);
	return c->text;
}

/* A file with the given content in a fresh temporary folder; returns its path
 * (static storage, one per call site is enough for tests). */
static inline void write_file(const char *path, const char *content)
{
	FILE *f = fopen(path, "wb");

	assert_non_null(f);
	fputs(content, f);
	fclose(f);
}

#define assert_contains(haystack, needle)                                                    \
	do {                                                                                 \
		if (!strstr((haystack), (needle)))                                           \
			fail_msg("expected to find \"%s\" in \"%s\"", (needle), (haystack)); \
	} while (0)

#endif
