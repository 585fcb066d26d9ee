/* Prometheus metrics in the text exposition format (version 0.0.4).
 *
 * Pull-based: a program registers collectors, and each scrape asks them to
 * write their current values. Nothing is kept here between scrapes, so there
 * is no second copy of a counter to fall out of step with the real one.
 */
#ifndef SBX_METRICS_H
#define SBX_METRICS_H

#include "sbx/buf.h"

#include <stdint.h>

struct sbx_http_server;
struct sbx_http_req;

/* Writes "# HELP", "# TYPE" (counter, gauge) and one sample. labels is
 * "" or 'a="x",b="y"' (values escaped by sbx_metrics_label). */
int sbx_metrics_sample(struct sbx_buf *b, const char *name, const char *type, const char *help,
		       const char *labels, double value);
/* A further sample of a metric whose HELP/TYPE were written already. */
int sbx_metrics_more(struct sbx_buf *b, const char *name, const char *labels, double value);
/* Appends name="value" with the value escaped (\\, \", \n), comma-separated. */
int sbx_metrics_label(struct sbx_buf *b, const char *name, const char *value);

typedef void (*sbx_metrics_collector)(struct sbx_buf *b, void *arg);

/* Up to 16 collectors. 0 or -E2BIG. */
int sbx_metrics_register(sbx_metrics_collector fn, void *arg);
/* Runs every collector into b (the process metrics come first). */
int sbx_metrics_render(struct sbx_buf *b);

/* Route handler for GET /metrics. */
void sbx_metrics_handle(struct sbx_http_req *req, void *arg);
/* A collector for an HTTP server's counters, prefixed "<prefix>_http_". */
void sbx_metrics_http_server(struct sbx_buf *b, const struct sbx_http_server *s,
			     const char *prefix);
/* The same from counters gathered elsewhere (summed over servers, say). */
struct sbx_http_stats;
void sbx_metrics_http_stats(struct sbx_buf *b, const struct sbx_http_stats *st, const char *prefix);

#endif
