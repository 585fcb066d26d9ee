/* Resource observation (see observe.h). Samples, exports and the reading
 * back of reports run on the thread pool; sessions, events and the report
 * list are touched only on the loop thread. A sample in flight holds a
 * reference on its session, so that a session stopped meanwhile is freed
 * only once its last sample is back.
 */
#define _GNU_SOURCE
#include "observe.h"

#include "api.h"
#include "files.h"
#include "sbx/alloc.h"
#include "sbx/buf.h"
#include "sbx/http.h"
#include "sbx/json.h"
#include "sbx/log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <openssl/rand.h>
#include <pwd.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#define MAX_SAMPLE_BYTES (32ull << 20) /* per session */
#define MAX_REPORTS	 16
#define MAX_PROCESSES	 65536 /* looked at per sample */
#define SESSION_TOP	 10    /* process rows per session sample */
#define LIVE_EVENTS	 20    /* events in a live snapshot */
#define MAX_DURATION_S	 (7 * 86400)
#define MIN_INTERVAL_S	 0.2
#define MAX_INTERVAL_S	 3600.0
#define HIGH_PCT	 90.0
#define RELAX_PCT	 80.0

enum mode { MODE_OFF, MODE_GUARDRAIL, MODE_CAPTURE };

static const char *const mode_names[] = { "off", "guardrail", "capture" };

struct observe_session {
	char id[33];
	enum mode mode;
	time_t started_at, ends_at, ended_at, last_sample_at; /* 0: none */
	double interval_s;
	bool processes, disk;
	char dir[PATH_MAX + 64];
	int fd; /* samples.jsonl, append-only; -1 once closed */
	uint64_t bytes;
	bool full, sampling;
	unsigned first_event; /* o->n_events when it started */
	unsigned refs;
	struct sbx_http_req *stop_req; /* a stop waiting for the session's report */
};

struct observe_report {
	struct observe_report *next;
	char id[33];
	char session_id[33]; /* "" : none */
	char reason[65];
	time_t created_at;
	char path[PATH_MAX + 128];
	uint64_t size;
};

/* ---- small things ------------------------------------------------------------------- */

static void iso_time(time_t t, char *out, size_t size)
{
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(out, size, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static json_t *time_or_null(time_t t)
{
	char s[32];

	if (!t)
		return json_null();
	iso_time(t, s, sizeof(s));
	return json_string(s);
}

static uint64_t now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void new_id(char out[33])
{
	unsigned char raw[16];

	if (RAND_bytes(raw, sizeof(raw)) != 1) {
		/* Unique enough without the CSPRNG: time and a counter. */
		static unsigned n;

		snprintf(out, 33, "%016llx%016x", (unsigned long long)now_us(), ++n);
		return;
	}
	for (int i = 0; i < 16; i++)
		snprintf(out + 2 * i, 3, "%02x", raw[i]);
}

/* A whole small file into buf, NUL-ended: its length, or -1. */
static ssize_t read_small(const char *path, char *buf, size_t size)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n, got = 0;

	if (fd < 0)
		return -1;
	while ((size_t)got < size - 1 && (n = read(fd, buf + got, size - 1 - (size_t)got)) > 0)
		got += n;
	close(fd);
	buf[got] = '\0';
	return got;
}

static bool read_u64(const char *dir, const char *name, unsigned long long *out)
{
	char path[PATH_MAX + 64], buf[64], *end;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	if (read_small(path, buf, sizeof(buf)) <= 0)
		return false;
	errno = 0;
	*out = strtoull(buf, &end, 10);
	return !errno && end != buf;
}

/* "key value" lines (cpu.stat, memory.stat, memory.events): the value of key. */
static bool keyed(const char *text, const char *key, unsigned long long *out)
{
	size_t n = strlen(key);

	for (const char *l = text; l && *l; l = strchr(l, '\n'), l = l ? l + 1 : NULL)
		if (!strncmp(l, key, n) && l[n] == ' ') {
			*out = strtoull(l + n + 1, NULL, 10);
			return true;
		}
	return false;
}

static json_t *u64_or_null(bool have, unsigned long long v)
{
	return have ? json_integer((json_int_t)v) : json_null();
}

/* ---- the cgroup ---------------------------------------------------------------------- */

/* Where the agent's cgroup is: a v2 folder, or the v1 cpuacct/cpu and
 * memory ones. A path from /proc/self/cgroup that is not under the mount
 * (a cgroup namespace, or a container's own view) means the mount's root is
 * the agent's. */
struct cgroup_dirs {
	int version; /* 0: none found */
	char cpu[PATH_MAX], mem[PATH_MAX];
};

static void cgroup_dir(const char *mount, const char *rel, char *out, size_t size)
{
	struct stat st;

	snprintf(out, size, "%s%s", mount, rel);
	if (stat(out, &st) || !S_ISDIR(st.st_mode))
		snprintf(out, size, "%s", mount);
}

static void find_cgroup(struct cgroup_dirs *d)
{
	char text[8192], *line, *save = NULL;
	struct stat st;

	memset(d, 0, sizeof(*d));
	if (read_small("/proc/self/cgroup", text, sizeof(text)) <= 0)
		return;
	for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char *ctl = strchr(line, ':'), *rel;

		if (!ctl || !(rel = strchr(ctl + 1, ':')))
			continue;
		*rel++ = '\0';
		ctl++;
		if (!*ctl && !stat("/sys/fs/cgroup/cgroup.controllers", &st)) {
			d->version = 2;
			cgroup_dir("/sys/fs/cgroup", rel, d->cpu, sizeof(d->cpu));
			snprintf(d->mem, sizeof(d->mem), "%s", d->cpu);
			return;
		}
		if (strstr(ctl, "cpuacct") && !stat("/sys/fs/cgroup/cpuacct/cpuacct.usage", &st))
			cgroup_dir("/sys/fs/cgroup/cpuacct", rel, d->cpu, sizeof(d->cpu));
		else if (!strcmp(ctl, "memory") && !stat("/sys/fs/cgroup/memory", &st))
			cgroup_dir("/sys/fs/cgroup/memory", rel, d->mem, sizeof(d->mem));
	}
	if (*d->cpu || *d->mem)
		d->version = 1;
}

struct cgroup_reading {
	bool have_usage;
	unsigned long long usage_usec;
	double cpus; /* what 100 % is: the quota, or the CPUs the agent may use */
	json_t *json;
	long long oom_kill; /* -1: not known */
	double mem_pct;	    /* NAN: no limit */
};

static double cpus_allowed(void)
{
	cpu_set_t set;
	int n;

	if (sched_getaffinity(0, sizeof(set), &set) == 0 && (n = CPU_COUNT(&set)) > 0)
		return n;
	n = (int)sysconf(_SC_NPROCESSORS_ONLN);
	return n > 0 ? n : 1;
}

static void read_cgroup(const struct cgroup_dirs *d, struct cgroup_reading *r)
{
	char stat_text[4096] = "", mem_text[8192] = "", ev_text[1024] = "", path[PATH_MAX + 64],
	     buf[128];
	unsigned long long v, periods = 0, throttled = 0, throttled_us = 0, current = 0, limit = 0,
			      oom = 0, oom_kill = 0, anon = 0, file = 0, shmem = 0, slab = 0;
	bool have_periods = false, have_throttled = false, have_throttled_us = false,
	     have_limit = false, have_oom = false, have_oom_kill = false, have_anon = false,
	     have_file = false, have_shmem = false, have_slab = false;

	r->cpus = cpus_allowed();
	r->have_usage = false;
	r->usage_usec = 0;
	if (d->version == 2) {
		long long quota, period;

		snprintf(path, sizeof(path), "%s/cpu.stat", d->cpu);
		read_small(path, stat_text, sizeof(stat_text));
		r->have_usage = keyed(stat_text, "usage_usec", &r->usage_usec);
		have_periods = keyed(stat_text, "nr_periods", &periods);
		have_throttled = keyed(stat_text, "nr_throttled", &throttled);
		have_throttled_us = keyed(stat_text, "throttled_usec", &throttled_us);
		snprintf(path, sizeof(path), "%s/cpu.max", d->cpu);
		if (read_small(path, buf, sizeof(buf)) > 0 &&
		    sscanf(buf, "%lld %lld", &quota, &period) == 2 && quota > 0 && period > 0)
			r->cpus = (double)quota / (double)period;
		read_u64(d->mem, "memory.current", &current);
		have_limit = read_u64(d->mem, "memory.max", &limit); /* "max": no limit */
		snprintf(path, sizeof(path), "%s/memory.events", d->mem);
		read_small(path, ev_text, sizeof(ev_text));
		have_oom = keyed(ev_text, "oom", &oom);
		have_oom_kill = keyed(ev_text, "oom_kill", &oom_kill);
		snprintf(path, sizeof(path), "%s/memory.stat", d->mem);
		read_small(path, mem_text, sizeof(mem_text));
		have_anon = keyed(mem_text, "anon", &anon);
		have_file = keyed(mem_text, "file", &file);
		have_shmem = keyed(mem_text, "shmem", &shmem);
		have_slab = keyed(mem_text, "slab", &slab);
	} else if (d->version == 1) {
		char cpu_dir[PATH_MAX + 8];
		long long quota;
		unsigned long long period;

		if (read_u64(d->cpu, "cpuacct.usage", &v)) {
			r->have_usage = true;
			r->usage_usec = v / 1000;
		}
		/* Throttling is the cpu controller's, often mounted with cpuacct. */
		snprintf(cpu_dir, sizeof(cpu_dir), "%s", d->cpu);
		snprintf(path, sizeof(path), "%s/cpu.stat", cpu_dir);
		if (read_small(path, stat_text, sizeof(stat_text)) > 0) {
			have_periods = keyed(stat_text, "nr_periods", &periods);
			have_throttled = keyed(stat_text, "nr_throttled", &throttled);
			if ((have_throttled_us = keyed(stat_text, "throttled_time", &v)))
				throttled_us = v / 1000;
		}
		snprintf(path, sizeof(path), "%s/cpu.cfs_quota_us", cpu_dir);
		if (read_small(path, buf, sizeof(buf)) > 0 &&
		    (quota = strtoll(buf, NULL, 10)) > 0 &&
		    read_u64(cpu_dir, "cpu.cfs_period_us", &period) && period)
			r->cpus = (double)quota / (double)period;
		read_u64(d->mem, "memory.usage_in_bytes", &current);
		have_limit =
			read_u64(d->mem, "memory.limit_in_bytes", &limit) && limit < (1ull << 62);
		snprintf(path, sizeof(path), "%s/memory.oom_control", d->mem);
		read_small(path, ev_text, sizeof(ev_text));
		have_oom_kill = keyed(ev_text, "oom_kill", &oom_kill);
		snprintf(path, sizeof(path), "%s/memory.stat", d->mem);
		read_small(path, mem_text, sizeof(mem_text));
		have_anon = keyed(mem_text, "rss", &anon);
		have_file = keyed(mem_text, "cache", &file);
		have_shmem = keyed(mem_text, "shmem", &shmem);
	}
	r->oom_kill = have_oom_kill ? (long long)oom_kill : -1;
	r->mem_pct = have_limit && limit ? 100.0 * (double)current / (double)limit : NAN;
	r->json = json_pack(
		"{s:n, s:I, s:o, s:o, s:o, s:I, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o}",
		"cpu_usage_pct", "cpu_usage_usec", (json_int_t)(r->have_usage ? r->usage_usec : 0),
		"cpu_nr_periods", u64_or_null(have_periods, periods), "cpu_nr_throttled",
		u64_or_null(have_throttled, throttled), "cpu_throttled_usec",
		u64_or_null(have_throttled_us, throttled_us), "mem_current_bytes",
		(json_int_t)current, "mem_max_bytes", u64_or_null(have_limit, limit),
		"mem_usage_pct", isnan(r->mem_pct) ? json_null() : json_real(r->mem_pct), "oom",
		u64_or_null(have_oom, oom), "oom_kill", u64_or_null(have_oom_kill, oom_kill),
		"memory_anon_bytes", u64_or_null(have_anon, anon), "memory_file_bytes",
		u64_or_null(have_file, file), "memory_shmem_bytes", u64_or_null(have_shmem, shmem),
		"memory_slab_bytes", u64_or_null(have_slab, slab));
}

/* ---- disks ----------------------------------------------------------------------------- */

static json_t *disk_row(const char *path, double *worst)
{
	struct statvfs v;
	unsigned long long used, total, avail;
	double pct;
	json_t *row;

	if (statvfs(path, &v))
		return NULL;
	total = (unsigned long long)v.f_blocks * v.f_frsize;
	used = (unsigned long long)(v.f_blocks - v.f_bfree) * v.f_frsize;
	avail = (unsigned long long)v.f_bavail * v.f_frsize;
	/* As df: what is used of what non-root users can have. */
	pct = used + avail ? 100.0 * (double)used / (double)(used + avail) : 0;
	if (pct > *worst)
		*worst = pct;
	row = json_pack("{s:s, s:I, s:I, s:I, s:f}", "path", path, "used_bytes", (json_int_t)used,
			"total_bytes", (json_int_t)total, "free_bytes", (json_int_t)avail,
			"usage_pct", pct);
	if (v.f_files) {
		unsigned long long iused = v.f_files - v.f_ffree;

		json_object_set_new(row, "inode_used", json_integer((json_int_t)iused));
		json_object_set_new(row, "inode_total", json_integer((json_int_t)v.f_files));
		json_object_set_new(row, "inode_usage_pct",
				    json_real(100.0 * (double)iused / (double)v.f_files));
	} else {
		json_object_set_new(row, "inode_used", json_null());
		json_object_set_new(row, "inode_total", json_null());
		json_object_set_new(row, "inode_usage_pct", json_null());
	}
	return row;
}

/* The workspace's file system, and the root's when it is another. */
static json_t *disks(const char *workspace, double *worst)
{
	json_t *rows = json_array(), *row;
	struct stat a, b;

	if ((row = disk_row(workspace, worst)))
		json_array_append_new(rows, row);
	if (stat(workspace, &a) || stat("/", &b) || a.st_dev != b.st_dev)
		if ((row = disk_row("/", worst)))
			json_array_append_new(rows, row);
	return rows;
}

/* ---- processes ------------------------------------------------------------------------- */

struct proc_row {
	int pid, ppid;
	uid_t uid;
	char state;
	char comm[64];
	unsigned long long ticks, start;
	long threads;
	unsigned long long rss;
};

static int by_rss(const void *a, const void *b)
{
	const struct proc_row *x = a, *y = b;

	return x->rss < y->rss ? 1 : x->rss > y->rss ? -1 : x->pid - y->pid;
}

static bool read_proc(int pid, struct proc_row *p)
{
	char path[64], text[2048], *open_paren, *close_paren;
	unsigned long utime, stime;
	long rss_pages;
	struct stat st;
	size_t n;

	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	if (read_small(path, text, sizeof(text)) <= 0 || !(open_paren = strchr(text, '(')) ||
	    !(close_paren = strrchr(text, ')')))
		return false;
	/* comm may hold spaces and parentheses: it ends at the last ')'. */
	n = (size_t)(close_paren - open_paren - 1);
	if (n >= sizeof(p->comm))
		n = sizeof(p->comm) - 1;
	memcpy(p->comm, open_paren + 1, n);
	p->comm[n] = '\0';
	if (sscanf(close_paren + 2,
		   "%c %d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu %*d %*d %*d %*d %ld %*d "
		   "%llu %*u %ld",
		   &p->state, &p->ppid, &utime, &stime, &p->threads, &p->start, &rss_pages) != 7)
		return false;
	snprintf(path, sizeof(path), "/proc/%d", pid);
	if (stat(path, &st))
		return false;
	p->pid = pid;
	p->uid = st.st_uid;
	p->ticks = (unsigned long long)utime + stime;
	p->rss = rss_pages > 0 ? (unsigned long long)rss_pages * (unsigned long long)getpagesize()
			       : 0;
	return true;
}

static json_t *count_fds(int pid)
{
	char path[64];
	DIR *d;
	struct dirent *e;
	json_int_t n = 0;

	snprintf(path, sizeof(path), "/proc/%d/fd", pid);
	if (!(d = opendir(path)))
		return json_null(); /* another user's */
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return json_integer(n);
}

static json_t *processes(unsigned top)
{
	struct proc_row *rows = NULL;
	size_t n = 0, cap = 0;
	char text[128];
	double uptime = 0, hz = (double)sysconf(_SC_CLK_TCK);
	DIR *d = opendir("/proc");
	struct dirent *e;
	json_t *out = json_array();

	if (read_small("/proc/uptime", text, sizeof(text)) > 0)
		uptime = strtod(text, NULL);
	while (d && (e = readdir(d)) && n < MAX_PROCESSES) {
		char *end;
		long pid = strtol(e->d_name, &end, 10);

		if (*end || pid <= 0)
			continue;
		if (n == cap) {
			struct proc_row *more =
				sbx_realloc(rows, (cap ? cap * 2 : 256) * sizeof(*rows));

			if (!more)
				break;
			rows = more;
			cap = cap ? cap * 2 : 256;
		}
		if (read_proc((int)pid, &rows[n]))
			n++;
	}
	if (d)
		closedir(d);
	qsort(rows, n, sizeof(*rows), by_rss);
	for (size_t i = 0; i < n && i < top; i++) {
		const struct proc_row *p = &rows[i];
		double age = uptime - (double)p->start / hz;
		struct passwd pw, *found = NULL;
		char pwbuf[1024], uid[16];
		json_t *cpu;

		if (age < 0)
			age = 0;
		/* As ps: CPU time over the time since the process started. */
		cpu = age > 0 ? json_real(100.0 * ((double)p->ticks / hz) / age) : json_null();
		snprintf(uid, sizeof(uid), "%u", (unsigned)p->uid);
		getpwuid_r(p->uid, &pw, pwbuf, sizeof(pwbuf), &found);
		json_array_append_new(
			out,
			json_pack("{s:i, s:s, s:s, s:I, s:f, s:o, s:I, s:o, s:s#, s:f, s:i}", "pid",
				  p->pid, "user", found ? found->pw_name : uid, "comm", p->comm,
				  "rss_bytes", (json_int_t)p->rss, "rss_mib",
				  (double)p->rss / (1024.0 * 1024.0), "cpu_pct", cpu, "threads",
				  (json_int_t)p->threads, "fds", count_fds(p->pid), "state",
				  &p->state, (size_t)1, "uptime_sec", age, "ppid", p->ppid));
	}
	sbx_free(rows);
	return out;
}

/* ---- a sample, on the thread pool ------------------------------------------------------ */

struct sample {
	uv_work_t work;
	struct observe *o;
	struct observe_session *s; /* NULL: a live snapshot */
	struct sbx_http_req *req;  /* a live snapshot's asker, NULL once gone */
	unsigned top;		   /* process rows (0: none) */
	bool disk;
	/* The last CPU reading, for the rate; then this one's. */
	uint64_t prev_usec, prev_at_us, usec, at_us;
	bool have_usage;
	int fd; /* the session's file, and the room left in it */
	uint64_t room;
	/* Out. */
	json_t *snap;
	long long oom_kill;
	double mem_pct, disk_pct;
	size_t written;
	bool full;
	int err;
};

static void sample_work(uv_work_t *w)
{
	struct sample *x = w->data;
	struct cgroup_reading cg;
	struct cgroup_dirs dirs;
	char when[32];
	char *line;
	size_t len;

	find_cgroup(&dirs);
	read_cgroup(&dirs, &cg);
	x->at_us = now_us();
	x->have_usage = cg.have_usage;
	x->usec = cg.usage_usec;
	if (cg.have_usage && x->prev_at_us && x->at_us > x->prev_at_us && x->usec >= x->prev_usec &&
	    cg.cpus > 0)
		json_object_set_new(cg.json, "cpu_usage_pct",
				    json_real(100.0 * (double)(x->usec - x->prev_usec) /
					      ((double)(x->at_us - x->prev_at_us) * cg.cpus)));
	x->oom_kill = cg.oom_kill;
	x->mem_pct = cg.mem_pct;
	x->disk_pct = 0;
	iso_time(time(NULL), when, sizeof(when));
	x->snap = json_pack("{s:s, s:o}", "captured_at", when, "cgroup", cg.json);
	json_object_set_new(x->snap, "disk",
			    x->disk ? disks(x->o->workspace, &x->disk_pct) : json_array());
	json_object_set_new(x->snap, "top_processes", x->top ? processes(x->top) : json_array());
	if (!x->s)
		return;
	/* A session's sample: one line of its file. */
	json_object_set_new(x->snap, "record", json_string("sample"));
	line = json_dumps(x->snap, JSON_COMPACT);
	if (!line) {
		x->err = ENOMEM;
		return;
	}
	len = strlen(line);
	line[len++] = '\n'; /* over the NUL: written by length */
	if (len > x->room) {
		x->full = true;
	} else if (write(x->fd, line, len) != (ssize_t)len) {
		x->err = errno ? errno : EIO;
	} else {
		x->written = len;
	}
	sbx_free(line);
}

/* ---- sessions, events ----------------------------------------------------------------- */

static void add_event(struct observe *o, const char *type, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void add_event(struct observe *o, const char *type, const char *fmt, ...)
{
	struct observe_event *e = &o->events[o->n_events % OBSERVE_EVENTS];
	va_list ap;

	iso_time(time(NULL), e->ts, sizeof(e->ts));
	snprintf(e->type, sizeof(e->type), "%s", type);
	va_start(ap, fmt);
	vsnprintf(e->message, sizeof(e->message), fmt, ap);
	va_end(ap);
	o->n_events++;
	sbx_log_info("observation event", SBX_LS("type", e->type), SBX_LS("message", e->message));
}

/* Events from index 'from' on (those the ring still has), oldest first,
 * at most 'max' of the newest. */
static json_t *events_json(const struct observe *o, unsigned from, unsigned max)
{
	json_t *out = json_array();
	unsigned first = o->n_events > OBSERVE_EVENTS ? o->n_events - OBSERVE_EVENTS : 0;

	if (from < first)
		from = first;
	if (o->n_events - from > max)
		from = o->n_events - max;
	for (unsigned i = from; i < o->n_events; i++) {
		const struct observe_event *e = &o->events[i % OBSERVE_EVENTS];

		json_array_append_new(out, json_pack("{s:s, s:s, s:s, s:{}}", "ts", e->ts, "type",
						     e->type, "message", e->message, "data"));
	}
	return out;
}

static void session_unref(struct observe_session *s)
{
	if (--s->refs)
		return;
	if (s->fd >= 0)
		close(s->fd);
	sbx_free(s);
}

static void load_reports(struct observe *o);
static int export_start(struct observe *o, struct observe_session *s, const char *reason,
			struct sbx_http_req *req, const char *idem, bool for_stop);

static void end_session(struct observe *o, const char *why)
{
	struct observe_session *s = o->cur;

	if (!s)
		return;
	uv_timer_stop(&o->timer);
	uv_timer_stop(&o->end);
	s->ended_at = time(NULL);
	o->cur = NULL;
	add_event(o, "session_stopped", "session %s stopped: %s", s->id, why);
	if (o->prev)
		session_unref(o->prev);
	o->prev = s; /* kept for an export */
}

static void schedule(struct observe *o);

static void sample_done(uv_work_t *w, int status)
{
	struct sample *x = w->data;
	struct observe *o = x->o;
	struct observe_session *s = x->s;

	if (x->have_usage && x->at_us > o->cpu_at_us) {
		o->cpu_usec = x->usec;
		o->cpu_at_us = x->at_us;
	}
	if (status == 0 && x->snap) {
		o->samples++;
		/* What guardrail watches (a live snapshot counts too). */
		if (x->oom_kill >= 0) {
			if (o->oom_kills >= 0 && x->oom_kill > o->oom_kills) {
				add_event(o, "oom_kill",
					  "the kernel killed %lld process(es) for memory",
					  x->oom_kill - o->oom_kills);
				if (o->cur && o->cur->mode == MODE_GUARDRAIL)
					export_start(o, o->cur, "oom_kill", NULL, NULL, false);
			}
			o->oom_kills = x->oom_kill;
		}
		if (!isnan(x->mem_pct)) {
			if (!o->mem_high && x->mem_pct >= HIGH_PCT)
				add_event(o, "memory_high", "memory at %.1f%% of the limit",
					  x->mem_pct);
			o->mem_high = x->mem_pct >= (o->mem_high ? RELAX_PCT : HIGH_PCT);
		}
		if (x->disk) {
			if (!o->disk_high && x->disk_pct >= HIGH_PCT)
				add_event(o, "disk_high", "a disk is %.1f%% full", x->disk_pct);
			o->disk_high = x->disk_pct >= (o->disk_high ? RELAX_PCT : HIGH_PCT);
		}
	}
	if (s) {
		s->sampling = false;
		if (x->written) {
			s->bytes += x->written;
			s->last_sample_at = time(NULL);
		} else {
			o->dropped++;
		}
		if (x->full && !s->full) {
			s->full = true;
			add_event(o, "sample_limit",
				  "session %s holds %llu MiB of samples: sampling stopped", s->id,
				  MAX_SAMPLE_BYTES >> 20);
		}
		if (x->err)
			sbx_log_warn("cannot write a sample", SBX_LS("session", s->id),
				     SBX_LS("error", strerror(x->err)));
		if (o->cur == s)
			schedule(o);
		session_unref(s);
	} else if (x->req) {
		sbx_http_on_abort(x->req, NULL, NULL);
		json_object_set_new(x->snap, "mode",
				    json_string(mode_names[o->cur ? o->cur->mode : MODE_OFF]));
		json_object_set_new(x->snap, "recent_events", events_json(o, 0, LIVE_EVENTS));
		api_ok(x->req, "Snapshot taken", x->snap);
		x->snap = NULL;
	}
	json_decref(x->snap);
	sbx_free(x);
}

static void live_gone(struct sbx_http_req *req, void *arg)
{
	struct sample *x = arg;

	(void)req;
	x->req = NULL;
}

static int sample_start(struct observe *o, struct observe_session *s, struct sbx_http_req *req,
			unsigned top)
{
	struct sample *x = sbx_calloc(1, sizeof(*x));
	int rc;

	if (!x)
		return -ENOMEM;
	x->work.data = x;
	x->o = o;
	x->s = s;
	x->req = req;
	x->prev_usec = o->cpu_usec;
	x->prev_at_us = o->cpu_at_us;
	if (s) {
		x->top = s->processes ? SESSION_TOP : 0;
		x->disk = s->disk;
		x->fd = s->fd;
		x->room = MAX_SAMPLE_BYTES - s->bytes;
	} else {
		x->top = top;
		x->disk = true;
	}
	if ((rc = uv_queue_work(o->loop, &x->work, sample_work, sample_done))) {
		sbx_free(x);
		return rc;
	}
	if (s) {
		s->refs++;
		s->sampling = true;
	} else {
		sbx_http_on_abort(req, live_gone, x);
	}
	return 0;
}

static void on_tick(uv_timer_t *t)
{
	struct observe *o = t->data;
	struct observe_session *s = o->cur;

	if (!s || s->sampling || s->full)
		return;
	if (sample_start(o, s, NULL, 0))
		schedule(o); /* try again at the next tick */
}

static void schedule(struct observe *o)
{
	if (o->cur && !o->cur->full && !o->closing)
		uv_timer_start(&o->timer, on_tick, (uint64_t)(o->cur->interval_s * 1000), 0);
}

static void on_end(uv_timer_t *t)
{
	struct observe *o = t->data;
	struct observe_session *s = o->cur;

	if (!s)
		return;
	end_session(o, "its duration ended");
	if (s->mode == MODE_CAPTURE)
		export_start(o, s, "session_ended", NULL, NULL, false);
}

/* ---- reports --------------------------------------------------------------------------- */

static json_t *report_json(const struct observe_report *r)
{
	char when[32];

	iso_time(r->created_at, when, sizeof(when));
	return json_pack("{s:s, s:o, s:s, s:s, s:s, s:I}", "report_id", r->id, "session_id",
			 *r->session_id ? json_string(r->session_id) : json_null(), "reason",
			 r->reason, "created_at", when, "path", r->path, "size_bytes",
			 (json_int_t)r->size);
}

static void add_report(struct observe *o, struct observe_report *r)
{
	struct observe_report **pp;

	/* Newest first. */
	for (pp = &o->reports; *pp && (*pp)->created_at > r->created_at; pp = &(*pp)->next)
		;
	r->next = *pp;
	*pp = r;
	o->n_reports++;
}

static void remove_files(const struct observe_report *r)
{
	char meta[PATH_MAX + 160];

	unlink(r->path);
	/* The meta file sits beside the report: same name, .json. */
	snprintf(meta, sizeof(meta), "%.*s.json", (int)(strlen(r->path) - strlen(".jsonl.gz")),
		 r->path);
	unlink(meta);
}

static void evict_reports(struct observe *o)
{
	while (o->n_reports > MAX_REPORTS) {
		struct observe_report **pp = &o->reports, *last;

		while ((*pp)->next)
			pp = &(*pp)->next;
		last = *pp;
		*pp = NULL;
		o->n_reports--;
		add_event(o, "report_evicted", "report %s removed: %d reports are kept", last->id,
			  MAX_REPORTS);
		remove_files(last);
		sbx_free(last);
	}
}

struct export
{
	uv_work_t work;
	struct observe *o;
	struct observe_session *s; /* NULL: a one-sample report */
	struct sbx_http_req *req;  /* NULL: nobody waits (or gone) */
	struct observe_report *r;
	char *header, *events; /* JSON lines, made on the loop */
	char idem[136];
	bool for_stop; /* the session's stop waits: answer it */
	int err;
};

/* The events from index 'from' as report lines ({"record": "event", ...}). */
static char *event_lines(const struct observe *o, unsigned from)
{
	json_t *events = events_json(o, from, OBSERVE_EVENTS), *e;
	struct sbx_buf b;
	char *out, *line;
	size_t i;
	int rc = 0;

	sbx_buf_init(&b, 1u << 20);
	json_array_foreach(events, i, e)
	{
		json_object_set_new(e, "record", json_string("event"));
		if (!(line = json_dumps(e, JSON_COMPACT))) {
			rc = -ENOMEM;
			break;
		}
		if (!rc)
			rc = sbx_buf_append_str(&b, line);
		if (!rc)
			rc = sbx_buf_append(&b, "\n", 1);
		sbx_free(line);
	}
	json_decref(events);
	if (!rc)
		rc = sbx_buf_append(&b, "", 1);
	out = rc ? NULL : sbx_strdup(b.data);
	sbx_buf_release(&b);
	return out;
}

static int gz_put(gzFile gz, const char *data, size_t len)
{
	return len && gzwrite(gz, data, (unsigned)len) != (int)len ? -EIO : 0;
}

/* The session's complete lines, into gz. */
static int copy_samples(const char *dir, gzFile gz)
{
	char path[PATH_MAX + 80], buf[65536];
	int fd, rc = 0;
	ssize_t n;
	size_t held = 0;

	snprintf(path, sizeof(path), "%s/samples.jsonl", dir);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return errno == ENOENT ? 0 : -errno;
	while (!rc && (n = read(fd, buf + held, sizeof(buf) - held)) > 0) {
		size_t have = held + (size_t)n, whole = have;

		/* Up to the last newline: a sample being written is left out. */
		while (whole && buf[whole - 1] != '\n')
			whole--;
		if (!whole && have == sizeof(buf))
			whole = have; /* a line longer than the buffer: as it is */
		rc = gz_put(gz, buf, whole);
		memmove(buf, buf + whole, have - whole);
		held = have - whole;
	}
	close(fd);
	return rc;
}

static void export_work(uv_work_t *w)
{
	struct export *x = w->data;
	char tmp[2 * PATH_MAX + 400], meta[2 * PATH_MAX + 300];
	struct observe_report *r = x->r;
	struct stat st;
	json_t *info;
	gzFile gz;
	int rc = 0, fd;

	snprintf(tmp, sizeof(tmp), "%s.part", r->path);
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)) < 0 ||
	    !(gz = gzdopen(fd, "wb6"))) {
		x->err = errno ? errno : ENOMEM;
		if (fd >= 0)
			close(fd);
		return;
	}
	rc = gz_put(gz, x->header, strlen(x->header));
	if (!rc)
		rc = gz_put(gz, "\n", 1);
	if (!rc && x->s)
		rc = copy_samples(x->s->dir, gz);
	if (!rc && !x->s) {
		/* No session: one sample, taken now. */
		struct sample one = { .o = x->o, .top = SESSION_TOP, .disk = true };
		char *line;

		sample_work(&(uv_work_t){ .data = &one });
		json_object_set_new(one.snap, "record", json_string("sample"));
		line = json_dumps(one.snap, JSON_COMPACT);
		json_decref(one.snap);
		rc = line ? gz_put(gz, line, strlen(line)) : -ENOMEM;
		if (!rc)
			rc = gz_put(gz, "\n", 1);
		sbx_free(line);
	}
	if (!rc)
		rc = gz_put(gz, x->events, strlen(x->events));
	if (gzclose(gz) != Z_OK && !rc)
		rc = -EIO;
	if (!rc && stat(tmp, &st))
		rc = -errno;
	if (!rc && rename(tmp, r->path))
		rc = -errno;
	if (rc) {
		unlink(tmp);
		x->err = -rc;
		return;
	}
	r->size = (uint64_t)st.st_size;
	/* The report's facts beside it, for the list after a restart. */
	snprintf(meta, sizeof(meta), "%.*s.json", (int)(strlen(r->path) - strlen(".jsonl.gz")),
		 r->path);
	info = report_json(r);
	snprintf(tmp, sizeof(tmp), "%s.part", meta);
	if (json_dump_file(info, tmp, JSON_COMPACT) || rename(tmp, meta))
		x->err = errno ? errno : EIO;
	json_decref(info);
}

static json_t *remember(struct observe *o, const char *kind, const char *key, json_t *data)
{
	char full[136];

	if (key && *key) {
		unsigned i = o->idem_next++ % (sizeof(o->idem) / sizeof(o->idem[0]));

		snprintf(full, sizeof(full), "%s:%s", kind, key);
		snprintf(o->idem[i].key, sizeof(o->idem[i].key), "%s", full);
		sbx_free(o->idem[i].answer);
		o->idem[i].answer = json_dumps(data, JSON_COMPACT);
	}
	return data;
}

static json_t *recall(struct observe *o, const char *kind, const char *key)
{
	char full[136];

	if (!key || !*key)
		return NULL;
	snprintf(full, sizeof(full), "%s:%s", kind, key);
	for (size_t i = 0; i < sizeof(o->idem) / sizeof(o->idem[0]); i++)
		if (o->idem[i].answer && !strcmp(o->idem[i].key, full))
			return json_loads(o->idem[i].answer, 0, NULL);
	return NULL;
}

static void stop_answer(struct observe_session *s, bool report_ready)
{
	struct sbx_http_req *req = s->stop_req;

	if (!req)
		return;
	s->stop_req = NULL;
	sbx_http_on_abort(req, NULL, NULL);
	api_ok(req, report_ready ? "Observation stopped; report ready" : "Observation stopped",
	       json_pack("{s:s, s:b, s:b}", "session_id", s->id, "stopped", 1, "report_ready",
			 report_ready));
}

static void export_done(uv_work_t *w, int status)
{
	struct export *x = w->data;
	struct observe *o = x->o;
	int err = status ? -status : x->err;

	o->exporting--;
	if (err) {
		sbx_log_warn("cannot make a report", SBX_LS("report", x->r->id),
			     SBX_LS("error", strerror(err)));
		add_event(o, "report_failed", "report %s: %s", x->r->id, strerror(err));
		if (x->req) {
			sbx_http_on_abort(x->req, NULL, NULL);
			api_fail(x->req, "cannot make the report", NULL);
		}
		sbx_free(x->r);
	} else if (o->closing) {
		sbx_free(x->r); /* made, on disk: the next run lists it */
	} else {
		add_event(o, "report_ready", "report %s (%s, %llu bytes)", x->r->id, x->r->reason,
			  (unsigned long long)x->r->size);
		add_report(o, x->r);
		if (x->req) {
			sbx_http_on_abort(x->req, NULL, NULL);
			api_ok(x->req, "Report ready",
			       remember(o, "export", x->idem, report_json(x->r)));
		}
		evict_reports(o);
	}
	if (x->s) {
		if (x->for_stop)
			stop_answer(x->s, !err);
		session_unref(x->s);
	}
	sbx_free(x->header);
	sbx_free(x->events);
	sbx_free(x);
}

static void export_gone(struct sbx_http_req *req, void *arg)
{
	struct export *x = arg;

	(void)req;
	x->req = NULL;
}

static int export_start(struct observe *o, struct observe_session *s, const char *reason,
			struct sbx_http_req *req, const char *idem, bool for_stop)
{
	struct export *x = sbx_calloc(1, sizeof(*x));
	json_t *header;
	char when[32];
	int rc;

	if (!x || !(x->r = sbx_calloc(1, sizeof(*x->r)))) {
		sbx_free(x);
		return -ENOMEM;
	}
	x->work.data = x;
	x->o = o;
	x->s = s;
	x->req = req;
	x->for_stop = for_stop;
	snprintf(x->idem, sizeof(x->idem), "%s", idem ? idem : "");
	new_id(x->r->id);
	snprintf(x->r->session_id, sizeof(x->r->session_id), "%s", s ? s->id : "");
	snprintf(x->r->reason, sizeof(x->r->reason), "%s", reason);
	x->r->created_at = time(NULL);
	snprintf(x->r->path, sizeof(x->r->path), "%s/reports/%s.jsonl.gz", o->root, x->r->id);
	iso_time(x->r->created_at, when, sizeof(when));
	header = json_pack("{s:s, s:s, s:o, s:s, s:s, s:s}", "record", "report", "report_id",
			   x->r->id, "session_id", s ? json_string(s->id) : json_null(), "reason",
			   reason, "created_at", when, "mode", mode_names[s ? s->mode : MODE_OFF]);
	if (s) {
		json_object_set_new(header, "started_at", time_or_null(s->started_at));
		json_object_set_new(header, "ended_at", time_or_null(s->ended_at));
		json_object_set_new(header, "interval_seconds", json_real(s->interval_s));
		json_object_set_new(header, "truncated", json_boolean(s->full));
	}
	x->header = json_dumps(header, JSON_COMPACT);
	json_decref(header);
	x->events = event_lines(o, s ? s->first_event : 0);
	if (!x->header || !x->events ||
	    (rc = uv_queue_work(o->loop, &x->work, export_work, export_done))) {
		sbx_free(x->header);
		sbx_free(x->events);
		sbx_free(x->r);
		sbx_free(x);
		return -ENOMEM;
	}
	o->exporting++;
	if (s)
		s->refs++;
	if (req)
		sbx_http_on_abort(req, export_gone, x);
	return 0;
}

/* ---- the folder ------------------------------------------------------------------------ */

static int ensure_dir(const char *path)
{
	return mkdir(path, 0700) && errno != EEXIST ? -errno : 0;
}

static int ensure_dirs(struct observe *o)
{
	char path[PATH_MAX + 32], *slash;
	int rc = 0;

	/* The root's parents too (~/.sbx may not be there yet). */
	snprintf(path, sizeof(path), "%s", o->root);
	for (slash = strchr(path + 1, '/'); !rc && slash; slash = strchr(slash + 1, '/')) {
		*slash = '\0';
		rc = ensure_dir(path);
		*slash = '/';
	}
	if (!rc)
		rc = ensure_dir(o->root);
	snprintf(path, sizeof(path), "%s/sessions", o->root);
	if (!rc)
		rc = ensure_dir(path);
	snprintf(path, sizeof(path), "%s/reports", o->root);
	if (!rc)
		rc = ensure_dir(path);
	return rc;
}

/* Session folders but the running and the previous session's go (their samples are in
 * the reports that wanted them). Small and few: on the loop. */
static void prune_sessions(struct observe *o)
{
	char path[2 * PATH_MAX];
	struct dirent *e;
	DIR *d;

	snprintf(path, sizeof(path), "%s/sessions", o->root);
	if (!(d = opendir(path)))
		return;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.' || (o->prev && !strcmp(e->d_name, o->prev->id)) ||
		    (o->cur && !strcmp(e->d_name, o->cur->id)))
			continue;
		snprintf(path, sizeof(path), "%s/sessions/%s/samples.jsonl", o->root, e->d_name);
		unlink(path);
		snprintf(path, sizeof(path), "%s/sessions/%s", o->root, e->d_name);
		rmdir(path);
	}
	closedir(d);
}

/* The reports a previous run left, from their .json files (a few small
 * files, once). */
static void load_reports(struct observe *o)
{
	char path[2 * PATH_MAX];
	struct dirent *e;
	DIR *d;

	if (o->loaded)
		return;
	o->loaded = true;
	snprintf(path, sizeof(path), "%s/reports", o->root);
	if (!(d = opendir(path)))
		return;
	while ((e = readdir(d))) {
		size_t n = strlen(e->d_name);
		struct observe_report *r;
		const char *id, *sid, *reason, *created;
		json_t *j, *session = NULL;
		struct stat st;
		struct tm tm = { 0 };

		if (n > 5 && !strcmp(e->d_name + n - 5, ".part")) {
			snprintf(path, sizeof(path), "%s/reports/%s", o->root, e->d_name);
			unlink(path); /* an export cut by a stop */
			continue;
		}
		if (n != 32 + 5 || strcmp(e->d_name + 32, ".json"))
			continue;
		snprintf(path, sizeof(path), "%s/reports/%s", o->root, e->d_name);
		if (!(j = json_load_file(path, 0, NULL)))
			continue;
		if (json_unpack(j, "{s:s, s?:o, s:s, s:s}", "report_id", &id, "session_id",
				&session, "reason", &reason, "created_at", &created) ||
		    strlen(id) != 32 || !(r = sbx_calloc(1, sizeof(*r)))) {
			json_decref(j);
			continue;
		}
		snprintf(r->id, sizeof(r->id), "%s", id);
		sid = json_string_value(session); /* null: a report of one sample */
		snprintf(r->session_id, sizeof(r->session_id), "%s", sid ? sid : "");
		snprintf(r->reason, sizeof(r->reason), "%s", reason);
		if (strptime(created, "%Y-%m-%dT%H:%M:%SZ", &tm))
			r->created_at = timegm(&tm);
		snprintf(r->path, sizeof(r->path), "%s/reports/%s.jsonl.gz", o->root, r->id);
		json_decref(j);
		if (stat(r->path, &st)) {
			sbx_free(r);
			continue;
		}
		r->size = (uint64_t)st.st_size;
		add_report(o, r);
	}
	closedir(d);
	evict_reports(o);
}

/* ---- the API ----------------------------------------------------------------------------- */

static json_t *status_json(struct observe *o)
{
	const struct observe_session *s = o->cur;
	char dir[PATH_MAX + 64];

	if (s)
		snprintf(dir, sizeof(dir), "%s", s->dir);
	return json_pack("{s:s, s:b, s:o, s:o, s:o, s:o, s:o, s:o, s:i}", "mode",
			 mode_names[s ? s->mode : MODE_OFF], "running", s != NULL, "session_id",
			 s ? json_string(s->id) : json_null(), "started_at",
			 time_or_null(s ? s->started_at : 0), "ends_at",
			 time_or_null(s ? s->ends_at : 0), "interval_seconds",
			 s ? json_real(s->interval_s) : json_null(), "last_sample_at",
			 time_or_null(s ? s->last_sample_at : 0), "runtime_dir",
			 s ? json_string(dir) : json_null(), "report_count", (int)o->n_reports);
}

void observe_handle_status(struct sbx_http_req *req, void *arg)
{
	struct observe *o = arg;

	load_reports(o);
	api_ok(req, "Observation status", status_json(o));
}

void observe_handle_live(struct sbx_http_req *req, void *arg)
{
	struct observe *o = arg;
	char raw[16], *end;
	long top = 10;

	if (sbx_http_query(req, "top_rows", raw, sizeof(raw)) >= 0) {
		top = strtol(raw, &end, 10);
		if (!*raw || *end || top < 0 || top > 1000) {
			api_invalid(req, "query.top_rows",
				    "Input should be an integer from 0 to 1000", "int_parsing");
			return;
		}
	}
	if (sample_start(o, NULL, req, (unsigned)top))
		sbx_http_respond_error(req, 503, "cannot take a snapshot now");
}

static bool opt_bool(struct sbx_http_req *req, json_t *body, const char *field, bool *out)
{
	json_t *v = json_object_get(body, field);
	char loc[64];

	if (!v || json_is_null(v))
		return true;
	if (!json_is_boolean(v)) {
		snprintf(loc, sizeof(loc), "body.%s", field);
		api_invalid(req, loc, "Input should be a valid boolean", "bool_type");
		return false;
	}
	*out = json_is_true(v);
	return true;
}

static bool opt_key(struct sbx_http_req *req, json_t *body, const char **key)
{
	if (!api_opt_string(req, body, "idempotency_key", key))
		return false;
	if (*key && strlen(*key) > 128) {
		api_invalid(req, "body.idempotency_key",
			    "String should have at most 128 characters", "string_too_long");
		return false;
	}
	return true;
}

void observe_handle_start(struct sbx_http_req *req, void *arg)
{
	struct observe *o = arg;
	json_t *body = api_body_object_or_empty(req), *done;
	const char *mode = "capture", *key = NULL;
	double interval = 0, duration = 0;
	bool have_interval, have_duration, procs, disk = true;
	struct observe_session *s;
	char path[PATH_MAX + 96];
	enum mode m;
	int rc;

	if (!body)
		return;
	if (!api_opt_string(req, body, "mode", &mode) || !opt_key(req, body, &key) ||
	    !api_opt_number(req, body, "interval_seconds", MIN_INTERVAL_S, MAX_INTERVAL_S, false,
			    &interval, &have_interval) ||
	    !api_opt_number(req, body, "duration_seconds", 1, MAX_DURATION_S, true, &duration,
			    &have_duration) ||
	    !opt_bool(req, body, "include_disk", &disk))
		goto out;
	if (!mode)
		mode = "capture";
	if (strcmp(mode, "capture") && strcmp(mode, "guardrail")) {
		api_invalid(req, "body.mode", "Input should be 'guardrail' or 'capture'", "enum");
		goto out;
	}
	m = !strcmp(mode, "capture") ? MODE_CAPTURE : MODE_GUARDRAIL;
	procs = m == MODE_CAPTURE;
	if (!opt_bool(req, body, "include_processes", &procs))
		goto out;
	load_reports(o);
	if ((done = recall(o, "start", key))) {
		api_ok(req, "Observation already started (same idempotency key)", done);
		goto out;
	}
	if (o->cur) {
		char msg[128];

		snprintf(msg, sizeof(msg), "session %s is running: stop it first", o->cur->id);
		api_fail(req, msg, status_json(o));
		goto out;
	}
	if (!(s = sbx_calloc(1, sizeof(*s)))) {
		sbx_http_respond_error(req, 503, "out of memory");
		goto out;
	}
	s->refs = 1;
	s->fd = -1;
	s->mode = m;
	s->processes = procs;
	s->disk = disk;
	s->interval_s = have_interval ? interval : m == MODE_CAPTURE ? 1.0 : 5.0;
	new_id(s->id);
	snprintf(s->dir, sizeof(s->dir), "%s/sessions/%s", o->root, s->id);
	snprintf(path, sizeof(path), "%s/samples.jsonl", s->dir);
	if ((rc = ensure_dirs(o)) || (rc = ensure_dir(s->dir)) ||
	    (s->fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600)) < 0) {
		char msg[PATH_MAX + 160];

		snprintf(msg, sizeof(msg), "cannot make %s: %s", s->dir,
			 strerror(rc ? -rc : errno));
		session_unref(s);
		api_fail(req, msg, NULL);
		goto out;
	}
	s->started_at = time(NULL);
	s->ends_at = have_duration ? s->started_at + (time_t)duration : 0;
	s->first_event = o->n_events;
	o->cur = s;
	prune_sessions(o);
	add_event(o, "session_started", "session %s started (%s, every %gs)", s->id, mode,
		  s->interval_s);
	if (have_duration)
		uv_timer_start(&o->end, on_end, (uint64_t)duration * 1000, 0);
	if (sample_start(o, s, NULL, 0)) /* the first sample now */
		schedule(o);
	api_ok(req, "Observation started",
	       remember(o, "start", key,
			json_pack("{s:s, s:s, s:o, s:o, s:f, s:s}", "session_id", s->id, "mode",
				  mode, "started_at", time_or_null(s->started_at), "ends_at",
				  time_or_null(s->ends_at), "interval_seconds", s->interval_s,
				  "runtime_dir", s->dir)));
out:
	json_decref(body);
}

static void stop_gone(struct sbx_http_req *req, void *arg)
{
	struct observe_session *s = arg;

	(void)req;
	s->stop_req = NULL;
}

void observe_handle_stop(struct sbx_http_req *req, void *arg)
{
	struct observe *o = arg;
	json_t *body = api_body_object_or_empty(req);
	const char *id = NULL;
	struct observe_session *s = o->cur;

	if (!body || !api_opt_string(req, body, "session_id", &id))
		goto out;
	if (!s || (id && strcmp(id, s->id))) {
		char msg[128];

		if (s)
			snprintf(msg, sizeof(msg), "session %.40s is not the running one (%s)", id,
				 s->id);
		else
			snprintf(msg, sizeof(msg), "no observation session is running");
		api_fail(req, msg, NULL);
		goto out;
	}
	end_session(o, "stopped through the API");
	s->stop_req = req;
	sbx_http_on_abort(req, stop_gone, s);
	/* A capture ends in a report, which the answer waits for. */
	if (s->mode != MODE_CAPTURE || export_start(o, s, "session_stopped", NULL, NULL, true))
		stop_answer(s, false);
out:
	json_decref(body);
}

void observe_handle_export(struct sbx_http_req *req, void *arg)
{
	struct observe *o = arg;
	json_t *body = api_body_object_or_empty(req), *done;
	const char *id = NULL, *reason = NULL, *key = NULL;
	struct observe_session *s;

	if (!body || !api_opt_string(req, body, "session_id", &id) ||
	    !api_opt_string(req, body, "reason", &reason) || !opt_key(req, body, &key))
		goto out;
	if (reason && (!*reason || strlen(reason) > 64)) {
		api_invalid(req, "body.reason", "String should have 1 to 64 characters",
			    "string_too_long");
		goto out;
	}
	load_reports(o);
	if ((done = recall(o, "export", key))) {
		api_ok(req, "Report ready (same idempotency key)", done);
		goto out;
	}
	s = o->cur ? o->cur : o->prev;
	if (id && !((o->cur && !strcmp(o->cur->id, id)) || (o->prev && !strcmp(o->prev->id, id)))) {
		char msg[128];

		snprintf(msg, sizeof(msg),
			 "no session %.40s: only the running and the last session can be exported",
			 id);
		api_fail(req, msg, NULL);
		goto out;
	}
	if (id)
		s = o->cur && !strcmp(o->cur->id, id) ? o->cur : o->prev;
	if (ensure_dirs(o) || export_start(o, s, reason ? reason : "manual", req, key, false))
		api_fail(req, "cannot make the report", NULL);
out:
	json_decref(body);
}

void observe_handle_reports(struct sbx_http_req *req, void *arg)
{
	struct observe *o = arg;
	json_t *list = json_array();

	load_reports(o);
	for (const struct observe_report *r = o->reports; r; r = r->next)
		json_array_append_new(list, report_json(r));
	api_ok(req, "Reports, newest first", list);
}

static struct observe_report **find_report(struct observe *o, struct sbx_http_req *req)
{
	const char *id = sbx_http_param(req, "report_id");
	struct observe_report **pp;

	load_reports(o);
	for (pp = &o->reports; *pp; pp = &(*pp)->next)
		if (!strcmp((*pp)->id, id))
			return pp;
	sbx_http_respond_error(req, 404, "no such report");
	return NULL;
}

void observe_handle_report_get(struct sbx_http_req *req, void *arg)
{
	struct observe_report **pp = find_report(arg, req);
	int rc;

	if (pp && (rc = files_send(req, (*pp)->path, "application/gzip")) < 0)
		sbx_http_respond_error(req, rc == -ENOENT ? 404 : 500,
				       rc == -ENOENT ? "the report's file is gone"
						     : "cannot read the report");
}

void observe_handle_report_delete(struct sbx_http_req *req, void *arg)
{
	struct observe *o = arg;
	struct observe_report **pp = find_report(o, req), *r;

	if (!pp)
		return;
	r = *pp;
	*pp = r->next;
	o->n_reports--;
	remove_files(r);
	api_ok(req, "Report deleted", report_json(r));
	sbx_free(r);
}

/* ---- life ------------------------------------------------------------------------------- */

void observe_init(struct observe *o, uv_loop_t *loop, const char *root, const char *workspace)
{
	const char *home = getenv("HOME");

	memset(o, 0, sizeof(*o));
	o->loop = loop;
	o->oom_kills = -1;
	if (root && *root)
		snprintf(o->root, sizeof(o->root), "%s", root);
	else
		snprintf(o->root, sizeof(o->root), "%s/.sbx/observe",
			 home && *home ? home : workspace);
	snprintf(o->workspace, sizeof(o->workspace), "%s", workspace);
	uv_timer_init(loop, &o->timer);
	uv_timer_init(loop, &o->end);
	o->timer.data = o->end.data = o;
}

void observe_close(struct observe *o)
{
	if (o->closing)
		return;
	o->closing = true;
	end_session(o, "the agent is stopping");
	uv_close((uv_handle_t *)&o->timer, NULL);
	uv_close((uv_handle_t *)&o->end, NULL);
	if (o->prev) {
		session_unref(o->prev);
		o->prev = NULL;
	}
	while (o->reports) {
		struct observe_report *r = o->reports;

		o->reports = r->next;
		sbx_free(r);
	}
	for (size_t i = 0; i < sizeof(o->idem) / sizeof(o->idem[0]); i++)
		sbx_free(o->idem[i].answer);
}
