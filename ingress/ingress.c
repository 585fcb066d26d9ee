/* A worker's state and its metrics (see ingress.h). */
#include "ingress.h"

#include "sbx/metrics.h"

#include <stdio.h>
#include <string.h>

int ingress_init(struct ingress *in, uv_loop_t *loop, const struct ingress_opts *o,
		 const struct sbx_http_pool_opts *pool)
{
	int rc;

	memset(in, 0, sizeof(*in));
	in->loop = loop;
	sbx_spares_init(&in->proxies, ingress_proxy_size);
	in->o = *o;
	if (!(in->table = ingress_table_new()))
		return -ENOMEM;
	if ((rc = sbx_http_pool_new(loop, pool, &in->pool))) {
		ingress_table_unref(in->table);
		return rc;
	}
	uv_timer_init(loop, &in->hold_timer);
	in->hold_timer.data = in;
	uv_unref((uv_handle_t *)&in->hold_timer);
	uv_timer_init(loop, &in->heads_timer);
	in->heads_timer.data = in;
	uv_unref((uv_handle_t *)&in->heads_timer);
	return 0;
}

void ingress_release(struct ingress *in)
{
	/* Held requests are answered by their connections' drain: by now the
	 * server is closed and none is left. */
	uv_close((uv_handle_t *)&in->hold_timer, NULL);
	uv_close((uv_handle_t *)&in->heads_timer, NULL);
	sbx_http_pool_free(in->pool);
	in->pool = NULL;
	ingress_table_unref(in->table);
	in->table = NULL;
	sbx_spares_release(&in->proxies);
}

static const char *const form_labels[INGRESS_FORMS] = { "host", "header", "path", "none" };
static const char *const error_labels[BACKEND_ERRORS] = { "refused", "timeout", "reset", "protocol",
							  "other" };

void ingress_snapshot(const struct ingress *in, struct ingress_snapshot *out)
{
	out->st = in->st;
	if (in->http) /* else: closed, out->http as last taken */
		out->http = *sbx_http_server_stats(in->http);
	sbx_http_pool_stats(in->pool, &out->pool);
}

void ingress_snapshot_add(struct ingress_snapshot *sum, const struct ingress_snapshot *one)
{
	struct ingress_stats *a = &sum->st;
	const struct ingress_stats *b = &one->st;

	for (int f = 0; f < INGRESS_FORMS; f++)
		for (int c = 0; c < 6; c++)
			a->requests[f][c] += b->requests[f][c];
	for (int i = 0; i <= INGRESS_LATENCY_BUCKETS; i++)
		a->latency[i] += b->latency[i];
	a->latency_sum += b->latency_sum;
	for (int e = 0; e < BACKEND_ERRORS; e++)
		a->backend_errors[e] += b->backend_errors[e];
	a->held_total += b->held_total;
	a->hold_expired += b->hold_expired;
	a->held_now += b->held_now;
	a->proxied_now += b->proxied_now;
	a->tunnels_total += b->tunnels_total;
	sum->http.connections_accepted += one->http.connections_accepted;
	sum->http.connections_rejected += one->http.connections_rejected;
	sum->http.connections_open += one->http.connections_open;
	sum->http.requests += one->http.requests;
	for (int c = 0; c < 6; c++)
		sum->http.responses_by_class[c] += one->http.responses_by_class[c];
	sum->http.bytes_in += one->http.bytes_in;
	sum->http.bytes_out += one->http.bytes_out;
	sum->http.tunnels_open += one->http.tunnels_open;
	sum->pool.connects += one->pool.connects;
	sum->pool.reuses += one->pool.reuses;
	sum->pool.retries += one->pool.retries;
	sum->pool.expired += one->pool.expired;
	sum->pool.dropped += one->pool.dropped;
	sum->pool.evicted += one->pool.evicted;
	sum->pool.idle += one->pool.idle;
	sum->pool.active += one->pool.active;
}

void ingress_metrics(struct sbx_buf *b, const struct ingress_snapshot *snap, size_t routes)
{
	const struct ingress_stats *st = &snap->st;
	const struct sbx_http_pool_stats *ps = &snap->pool;
	char lab[96];
	bool first = true;
	uint64_t cum = 0, total = 0;

	for (int f = 0; f < INGRESS_FORMS; f++) {
		for (int c = 1; c <= 5; c++) {
			snprintf(lab, sizeof(lab), "form=\"%s\",code=\"%dxx\"", form_labels[f], c);
			if (first)
				sbx_metrics_sample(
					b, "sbx_ingress_requests_total", "counter",
					"Requests answered, by route form and status class "
					"(a WebSocket switch counts as 1xx).",
					lab, (double)st->requests[f][c]);
			else
				sbx_metrics_more(b, "sbx_ingress_requests_total", lab,
						 (double)st->requests[f][c]);
			first = false;
		}
	}
	sbx_buf_append_str(b, "# HELP sbx_ingress_request_duration_seconds Time to the answer's "
			      "head (or to the ingress's own answer).\n"
			      "# TYPE sbx_ingress_request_duration_seconds histogram\n");
	for (int i = 0; i <= INGRESS_LATENCY_BUCKETS; i++) {
		cum += st->latency[i];
		if (i < INGRESS_LATENCY_BUCKETS)
			sbx_buf_printf(
				b, "sbx_ingress_request_duration_seconds_bucket{le=\"%g\"} %llu\n",
				ingress_latency_bounds[i], (unsigned long long)cum);
	}
	total = cum;
	sbx_buf_printf(b,
		       "sbx_ingress_request_duration_seconds_bucket{le=\"+Inf\"} %llu\n"
		       "sbx_ingress_request_duration_seconds_sum %.6f\n"
		       "sbx_ingress_request_duration_seconds_count %llu\n",
		       (unsigned long long)total, st->latency_sum, (unsigned long long)total);
	for (int e = 0; e < BACKEND_ERRORS; e++) {
		snprintf(lab, sizeof(lab), "reason=\"%s\"", error_labels[e]);
		if (e == 0)
			sbx_metrics_sample(b, "sbx_ingress_backend_errors_total", "counter",
					   "Exchanges with pods that failed, by reason.", lab,
					   (double)st->backend_errors[e]);
		else
			sbx_metrics_more(b, "sbx_ingress_backend_errors_total", lab,
					 (double)st->backend_errors[e]);
	}
	sbx_metrics_sample(b, "sbx_ingress_held_requests", "gauge",
			   "Requests waiting for their sandbox to be ready or listen.", "",
			   st->held_now);
	sbx_metrics_sample(b, "sbx_ingress_held_requests_total", "counter",
			   "Requests that had to wait for their sandbox.", "",
			   (double)st->held_total);
	sbx_metrics_sample(b, "sbx_ingress_hold_expired_total", "counter",
			   "Held requests answered 503 or 502 at --hold-timeout-ms.", "",
			   (double)st->hold_expired);
	sbx_metrics_sample(b, "sbx_ingress_proxied_requests", "gauge",
			   "Requests being proxied now.", "", st->proxied_now);
	sbx_metrics_sample(b, "sbx_ingress_websocket_tunnels_total", "counter",
			   "Protocol switches (WebSocket) handed to a tunnel.", "",
			   (double)st->tunnels_total);
	sbx_metrics_sample(b, "sbx_ingress_websocket_tunnels", "gauge", "Tunnels open now.", "",
			   snap->http.tunnels_open);
	sbx_metrics_sample(b, "sbx_ingress_routes", "gauge", "Sandboxes in the routing table.", "",
			   (double)routes);
	sbx_metrics_sample(b, "sbx_ingress_pool_connects_total", "counter",
			   "Connections opened to pods.", "", (double)ps->connects);
	sbx_metrics_sample(b, "sbx_ingress_pool_reuses_total", "counter",
			   "Requests sent on a kept-alive connection to a pod.", "",
			   (double)ps->reuses);
	sbx_metrics_sample(b, "sbx_ingress_pool_idle_connections", "gauge",
			   "Kept-alive connections to pods, idle now.", "", ps->idle);
	sbx_metrics_http_stats(b, &snap->http, "sbx_ingress");
}
