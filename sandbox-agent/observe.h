/* /v1/sandbox/observe: what the sandbox uses, sampled.
 *
 * A sample reads the sandbox's cgroup, v2 or v1 (CPU, throttling, memory and
 * its breakdown, OOM counters), the disks under the workspace and the root, and
 * optionally the processes with the most memory, all on the thread pool.
 * GET live takes one now. A session (POST start) samples at an interval
 * into a JSON Lines file under its runtime folder, in one of two modes:
 * "capture" (every second by default, processes included; a report is made
 * when it stops) and "guardrail" (every 5 s, no processes; events when
 * memory or disk pass 90 %, and a report made by itself on an OOM kill).
 * A report (POST export, or the above) is one gzip'd JSON Lines file: a
 * header line, the session's samples, its events; without a session, one
 * sample taken then. Everything is bounded: 32 MiB of samples per session
 * (sampling stops there, with an event), 16 reports (the oldest goes), the
 * last 100 events, the current and the previous session's folders.
 * Reports survive a restart of the agent.
 */
#ifndef SBX_AGENT_OBSERVE_H
#define SBX_AGENT_OBSERVE_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

struct sbx_http_req;
struct observe_session;
struct observe_report;

#define OBSERVE_EVENTS 100

struct observe_event {
	char ts[32];
	char type[32];
	char message[200];
};

struct observe {
	uv_loop_t *loop;
	char root[4096];      /* runtime folder: sessions/, reports/ */
	char workspace[4096]; /* a disk to report */
	bool loaded;	      /* reports read back from root */
	struct observe_session *cur, *prev;
	uv_timer_t timer; /* the session's next sample */
	uv_timer_t end;	  /* the session's duration */
	unsigned timers_open;
	bool closing;
	/* CPU use is a rate: the last reading, for the next. */
	uint64_t cpu_usec, cpu_at_us;
	long long oom_kills; /* -1 before the first reading */
	bool mem_high, disk_high;
	struct observe_event events[OBSERVE_EVENTS];
	unsigned n_events; /* total ever; the ring holds the last OBSERVE_EVENTS */
	struct observe_report *reports;
	unsigned n_reports;
	unsigned exporting; /* exports in flight */
	unsigned long samples, dropped;
	/* Idempotency keys of start and export, with their answers. */
	struct {
		char key[136];
		char *answer; /* the JSON data */
	} idem[32];
	unsigned idem_next;
};

/* Folder "" : ~/.sbx/observe. */
void observe_init(struct observe *o, uv_loop_t *loop, const char *root, const char *workspace);
void observe_close(struct observe *o);

void observe_handle_status(struct sbx_http_req *req, void *arg);
void observe_handle_live(struct sbx_http_req *req, void *arg);
void observe_handle_start(struct sbx_http_req *req, void *arg);
void observe_handle_stop(struct sbx_http_req *req, void *arg);
void observe_handle_export(struct sbx_http_req *req, void *arg);
void observe_handle_reports(struct sbx_http_req *req, void *arg);
void observe_handle_report_get(struct sbx_http_req *req, void *arg);
void observe_handle_report_delete(struct sbx_http_req *req, void *arg);

#endif
