/* Prometheus text exposition (see sbx/metrics.h). Owns the collector list. */
#include "sbx/metrics.h"

#include "sbx/http.h"
#include "sbx/version.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define MAX_COLLECTORS	 16
#define SCRAPE_MAX_BYTES (4u << 20)

static struct {
	sbx_metrics_collector fn;
	void *arg;
} collectors[MAX_COLLECTORS];
static unsigned n_collectors;

static int value(struct sbx_buf *b, double v)
{
	if (isnan(v))
		return sbx_buf_append_str(b, "NaN\n");
	if (v == floor(v) && fabs(v) < 1e15)
		return sbx_buf_printf(b, "%.0f\n", v);
	return sbx_buf_printf(b, "%.17g\n", v);
}

int sbx_metrics_more(struct sbx_buf *b, const char *name, const char *labels, double v)
{
	int rc = labels && *labels ? sbx_buf_printf(b, "%s{%s} ", name, labels)
				   : sbx_buf_printf(b, "%s ", name);

	return rc ? rc : value(b, v);
}

int sbx_metrics_sample(struct sbx_buf *b, const char *name, const char *type, const char *help,
		       const char *labels, double v)
{
	int rc = sbx_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);

	return rc ? rc : sbx_metrics_more(b, name, labels, v);
}

int sbx_metrics_label(struct sbx_buf *b, const char *name, const char *val)
{
	int rc = sbx_buf_printf(b, "%s%s=\"", b->len ? "," : "", name);

	for (const char *p = val; !rc && *p; p++) {
		if (*p == '\\' || *p == '"')
			rc = sbx_buf_printf(b, "\\%c", *p);
		else if (*p == '\n')
			rc = sbx_buf_append_str(b, "\\n");
		else
			rc = sbx_buf_append(b, p, 1);
	}
	return rc ? rc : sbx_buf_append_str(b, "\"");
}

int sbx_metrics_register(sbx_metrics_collector fn, void *arg)
{
	if (n_collectors >= MAX_COLLECTORS)
		return -E2BIG;
	collectors[n_collectors].fn = fn;
	collectors[n_collectors].arg = arg;
	n_collectors++;
	return 0;
}

/* The standard process metrics Prometheus client libraries export. */
static void process_metrics(struct sbx_buf *b)
{
	struct rusage ru;
	long rss_pages = 0;
	FILE *f = fopen("/proc/self/statm", "r");
	struct sbx_buf labels;

	if (f) {
		if (fscanf(f, "%*s %ld", &rss_pages) != 1)
			rss_pages = 0;
		fclose(f);
	}
	getrusage(RUSAGE_SELF, &ru);
	sbx_metrics_sample(b, "process_resident_memory_bytes", "gauge", "Resident memory size.", "",
			   (double)rss_pages * (double)sysconf(_SC_PAGESIZE));
	sbx_metrics_sample(b, "process_cpu_seconds_total", "counter",
			   "User and system CPU time spent.", "",
			   (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
				   (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6);
	sbx_buf_init(&labels, 256);
	sbx_metrics_label(&labels, "version", SBX_VERSION);
	sbx_metrics_sample(b, "sbx_build_info", "gauge", "The sbx version, as a label.",
			   labels.data ? labels.data : "", 1);
	sbx_buf_release(&labels);
}

int sbx_metrics_render(struct sbx_buf *b)
{
	process_metrics(b);
	for (unsigned i = 0; i < n_collectors; i++)
		collectors[i].fn(b, collectors[i].arg);
	return b->len >= b->max ? -E2BIG : 0;
}

void sbx_metrics_handle(struct sbx_http_req *req, void *arg)
{
	struct sbx_buf b;

	(void)arg;
	sbx_buf_init(&b, SCRAPE_MAX_BYTES);
	if (sbx_metrics_render(&b))
		sbx_http_respond_error(req, 500, "metrics larger than the scrape limit");
	else
		sbx_http_respond(req, 200, "text/plain; version=0.0.4; charset=utf-8",
				 b.data ? b.data : "", b.len);
	sbx_buf_release(&b);
}

void sbx_metrics_http_server(struct sbx_buf *b, const struct sbx_http_server *s, const char *prefix)
{
	sbx_metrics_http_stats(b, sbx_http_server_stats(s), prefix);
}

void sbx_metrics_http_stats(struct sbx_buf *b, const struct sbx_http_stats *st, const char *prefix)
{
	char name[128], lab[32];

	snprintf(name, sizeof(name), "%s_http_connections_accepted_total", prefix);
	sbx_metrics_sample(b, name, "counter", "Connections accepted.", "",
			   (double)st->connections_accepted);
	snprintf(name, sizeof(name), "%s_http_connections_rejected_total", prefix);
	sbx_metrics_sample(b, name, "counter", "Connections refused over the limit.", "",
			   (double)st->connections_rejected);
	snprintf(name, sizeof(name), "%s_http_connections_open", prefix);
	sbx_metrics_sample(b, name, "gauge", "Connections open now.", "",
			   (double)st->connections_open);
	snprintf(name, sizeof(name), "%s_http_requests_total", prefix);
	sbx_metrics_sample(b, name, "counter", "Requests received.", "", (double)st->requests);
	snprintf(name, sizeof(name), "%s_http_responses_total", prefix);
	for (int cls = 1; cls <= 5; cls++) {
		snprintf(lab, sizeof(lab), "code=\"%dxx\"", cls);
		if (cls == 1)
			sbx_metrics_sample(b, name, "counter", "Responses by status class.", lab,
					   (double)st->responses_by_class[cls]);
		else
			sbx_metrics_more(b, name, lab, (double)st->responses_by_class[cls]);
	}
	snprintf(name, sizeof(name), "%s_http_received_bytes_total", prefix);
	sbx_metrics_sample(b, name, "counter", "Bytes read from clients.", "",
			   (double)st->bytes_in);
	snprintf(name, sizeof(name), "%s_http_sent_bytes_total", prefix);
	sbx_metrics_sample(b, name, "counter", "Bytes written to clients.", "",
			   (double)st->bytes_out);
}
