/* Screencasts as Motion JPEG in AVI (see record.h).
 *
 * The file's layout, fixed so that every offset is known when a frame is
 * queued (RIFF's little-endian chunks, Microsoft's AVI 1.0 as ffmpeg and
 * VLC read it):
 *     0  RIFF <size> AVI
 *    12    LIST <192> hdrl
 *    24      avih <56> main header: frame time, frame count, size
 *    88      LIST <116> strl
 *   100        strh <56> one video stream, MJPG, rate = fps
 *   164        strf <40> BITMAPINFOHEADER, MJPG
 *   212    LIST <size> movi
 *   224      00dc <n> JPEG [pad]  ... one chunk per frame
 *            idx1 <16 * frames>   where each chunk is, all keyframes
 * The headers are written last, when the counts are known.
 */
#include "record.h"

#include "files.h"
#include "sbx/alloc.h"
#include "sbx/log.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define HEADER_BYTES 224u
#define MAX_QUEUED   64u

struct frame {
	unsigned refs;
	size_t len;
	unsigned char data[];
};

/* One write: a frame's chunk (head, the shared JPEG, a pad byte), or bytes
 * of its own (the index, the headers). */
struct wbuf {
	struct wbuf *next;
	uint64_t off;
	unsigned char head[8];
	struct frame *frame;
	unsigned char *own;
	size_t own_len;
};

struct recording {
	uv_loop_t *loop;
	char *path;
	unsigned fps;
	uint64_t max_frames;
	uv_file fd;
	int open_err;
	bool opened, failed, paused, stopping, limit_said, closing, done_called;
	char error[300];
	uv_work_t open_work;
	uv_fs_t write_req, close_req;
	bool writing;
	struct wbuf *q_head, *q_tail;
	unsigned queued;
	uv_timer_t tick;
	struct frame *latest;
	uint64_t started_ms, paused_at_ms, paused_ms; /* loop time; started_ms 0: no frame yet */
	uint64_t frames, dropped;
	uint64_t end; /* where the next chunk goes */
	uint32_t *index;
	size_t index_cap;
	size_t max_chunk;
	unsigned width, height;
	recording_open_cb open_cb;
	void (*limit_cb)(void *arg);
	void *arg;
	recording_done_cb done;
	void *done_arg;
};

static void put16(unsigned char *p, unsigned v)
{
	p[0] = (unsigned char)v;
	p[1] = (unsigned char)(v >> 8);
}

static void put32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)v;
	p[1] = (unsigned char)(v >> 8);
	p[2] = (unsigned char)(v >> 16);
	p[3] = (unsigned char)(v >> 24);
}

static void put_id(unsigned char *p, const char *four)
{
	memcpy(p, four, 4);
}

int jpeg_dimensions(const unsigned char *p, size_t len, unsigned *width, unsigned *height)
{
	size_t i = 2;

	if (len < 4 || p[0] != 0xff || p[1] != 0xd8)
		return -1;
	/* Segments: FF marker, then a big-endian length that counts itself. */
	while (i + 4 <= len) {
		unsigned marker, seg;

		if (p[i] != 0xff)
			return -1;
		marker = p[i + 1];
		if (marker == 0xff) {
			i++; /* fill byte */
			continue;
		}
		seg = (unsigned)p[i + 2] << 8 | p[i + 3];
		/* SOF0-SOF15 but DHT (C4), JPG (C8) and DAC (CC) */
		if (marker >= 0xc0 && marker <= 0xcf && marker != 0xc4 && marker != 0xc8 &&
		    marker != 0xcc) {
			if (i + 9 > len)
				return -1;
			*height = (unsigned)p[i + 5] << 8 | p[i + 6];
			*width = (unsigned)p[i + 7] << 8 | p[i + 8];
			return 0;
		}
		if (seg < 2)
			return -1;
		i += 2 + seg;
	}
	return -1;
}

static void frame_unref(struct frame *f)
{
	if (f && --f->refs == 0)
		sbx_free(f);
}

/* ---- the headers ----------------------------------------------------------------------- */

static void build_headers(const struct recording *r, unsigned char *h, uint64_t movi_bytes)
{
	uint32_t usec = r->fps ? 1000000u / r->fps : 0;
	uint64_t idx = 16 * r->frames;

	memset(h, 0, HEADER_BYTES);
	put_id(h, "RIFF");
	put32(h + 4, (uint32_t)(HEADER_BYTES - 8 + movi_bytes + 8 + idx));
	put_id(h + 8, "AVI ");
	put_id(h + 12, "LIST");
	put32(h + 16, 192);
	put_id(h + 20, "hdrl");
	put_id(h + 24, "avih");
	put32(h + 28, 56);
	put32(h + 32, usec);
	put32(h + 36, (uint32_t)(r->max_chunk * r->fps));
	put32(h + 44, 0x10); /* AVIF_HASINDEX */
	put32(h + 48, (uint32_t)r->frames);
	put32(h + 56, 1); /* streams */
	put32(h + 60, (uint32_t)r->max_chunk);
	put32(h + 64, r->width);
	put32(h + 68, r->height);
	put_id(h + 88, "LIST");
	put32(h + 92, 116);
	put_id(h + 96, "strl");
	put_id(h + 100, "strh");
	put32(h + 104, 56);
	put_id(h + 108, "vids");
	put_id(h + 112, "MJPG");
	put32(h + 128, 1); /* scale */
	put32(h + 132, r->fps);
	put32(h + 140, (uint32_t)r->frames);
	put32(h + 144, (uint32_t)r->max_chunk);
	put32(h + 148, 0xffffffffu); /* quality: the default */
	put16(h + 160, r->width);
	put16(h + 162, r->height);
	put_id(h + 164, "strf");
	put32(h + 168, 40);
	put32(h + 172, 40);
	put32(h + 176, r->width);
	put32(h + 180, r->height);
	put16(h + 184, 1);
	put16(h + 186, 24);
	put_id(h + 188, "MJPG");
	put32(h + 192, r->width * r->height * 3);
	put_id(h + 212, "LIST");
	put32(h + 216, (uint32_t)(4 + movi_bytes));
	put_id(h + 220, "movi");
}

/* ---- writing ---------------------------------------------------------------------------- */

static void pump(struct recording *r);
static void finish(struct recording *r);

static void wbuf_free(struct wbuf *w)
{
	frame_unref(w->frame);
	sbx_free(w->own);
	sbx_free(w);
}

static void set_failed(struct recording *r, int err)
{
	if (r->failed)
		return;
	r->failed = true;
	snprintf(r->error, sizeof(r->error), "cannot write %s: %s", r->path, uv_strerror(err));
	sbx_log_warn("a page recording failed", SBX_LS("path", r->path),
		     SBX_LS("error", uv_strerror(err)));
}

static void written(uv_fs_t *req)
{
	struct recording *r = req->data;
	struct wbuf *w = r->q_head;

	if (req->result < 0)
		set_failed(r, (int)req->result);
	uv_fs_req_cleanup(req);
	r->writing = false;
	r->q_head = w->next;
	if (!r->q_head)
		r->q_tail = NULL;
	r->queued--;
	wbuf_free(w);
	pump(r);
}

static void pump(struct recording *r)
{
	static const unsigned char pad = 0;
	struct wbuf *w = r->q_head;
	uv_buf_t bufs[3];
	unsigned n = 0;

	if (r->writing || !r->opened)
		return;
	if (!w) {
		if (r->stopping)
			finish(r);
		return;
	}
	if (r->failed) {
		/* Nothing more goes to the file: drop what waits. */
		while ((w = r->q_head)) {
			r->q_head = w->next;
			r->queued--;
			wbuf_free(w);
		}
		r->q_tail = NULL;
		if (r->stopping)
			finish(r);
		return;
	}
	if (w->frame) {
		bufs[n++] = uv_buf_init((char *)w->head, 8);
		bufs[n++] = uv_buf_init((char *)w->frame->data, (unsigned)w->frame->len);
		if (w->frame->len & 1)
			bufs[n++] = uv_buf_init((char *)&pad, 1);
	} else {
		bufs[n++] = uv_buf_init((char *)w->own, (unsigned)w->own_len);
	}
	r->write_req.data = r;
	r->writing = true;
	if (uv_fs_write(r->loop, &r->write_req, r->fd, bufs, n, (int64_t)w->off, written)) {
		r->writing = false;
		set_failed(r, UV_EIO);
		pump(r);
	}
}

static void enqueue(struct recording *r, struct wbuf *w)
{
	if (r->q_tail)
		r->q_tail->next = w;
	else
		r->q_head = w;
	r->q_tail = w;
	r->queued++;
	pump(r);
}

/* One frame of video: the latest picture, as a chunk at the end. */
static void write_frame(struct recording *r)
{
	struct frame *f = r->latest;
	size_t chunk = 8 + f->len + (f->len & 1);
	struct wbuf *w;

	if (r->end + chunk + 8 + 16 * (r->frames + 1) > RECORD_MAX_BYTES ||
	    r->frames >= r->max_frames) {
		if (!r->limit_said && r->limit_cb) {
			r->limit_said = true;
			r->limit_cb(r->arg);
		}
		return;
	}
	if (r->queued >= MAX_QUEUED || r->failed || !(w = sbx_calloc(1, sizeof(*w)))) {
		r->dropped++;
		return;
	}
	if (r->frames * 2 + 2 > r->index_cap) {
		size_t cap = r->index_cap ? r->index_cap * 2 : 1024;
		uint32_t *grown = sbx_realloc(r->index, cap * sizeof(*grown));

		if (!grown) {
			sbx_free(w);
			r->dropped++;
			return;
		}
		r->index = grown;
		r->index_cap = cap;
	}
	put_id(w->head, "00dc");
	put32(w->head + 4, (uint32_t)f->len);
	w->off = r->end;
	w->frame = f;
	f->refs++;
	r->index[2 * r->frames] = (uint32_t)(r->end - (HEADER_BYTES - 4));
	r->index[2 * r->frames + 1] = (uint32_t)f->len;
	r->frames++;
	r->end += chunk;
	if (f->len > r->max_chunk)
		r->max_chunk = f->len;
	enqueue(r, w);
}

/* Frames due by now at fps since the first picture, not counting pauses:
 * the video keeps the wall clock's time. */
static void on_tick(uv_timer_t *t)
{
	struct recording *r = t->data;
	uint64_t now = uv_now(r->loop), due;

	if (!r->latest || r->paused || r->stopping)
		return;
	due = (now - r->started_ms - r->paused_ms) * r->fps / 1000 + 1;
	while (r->frames + r->dropped < due) {
		uint64_t before = r->frames + r->dropped;

		write_frame(r);
		if (r->frames + r->dropped == before)
			break; /* at a limit */
	}
}

void recording_frame(struct recording *r, const void *jpeg, size_t len)
{
	struct frame *f;
	unsigned w, h;

	if (r->stopping || !r->opened || len > (64u << 20) || jpeg_dimensions(jpeg, len, &w, &h))
		return;
	if (r->width && (w != r->width || h != r->height)) {
		/* A video has one size: a frame of another is not taken
		 * (the page was resized); the last one goes on. */
		return;
	}
	if (!(f = sbx_malloc(sizeof(*f) + len)))
		return;
	f->refs = 1;
	f->len = len;
	memcpy(f->data, jpeg, len);
	frame_unref(r->latest);
	r->latest = f;
	if (!r->width) {
		r->width = w;
		r->height = h;
	}
	if (!r->started_ms) {
		r->started_ms = uv_now(r->loop);
		if (r->paused)
			r->paused_at_ms = r->started_ms;
		on_tick(&r->tick);
	}
}

/* ---- opening and closing ------------------------------------------------------------------ */

static void open_work(uv_work_t *w)
{
	struct recording *r = w->data;
	int rc = files_make_parents(r->path);

	if (rc) {
		r->open_err = rc;
		return;
	}
	r->fd = open(r->path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	r->open_err = r->fd < 0 ? -errno : 0;
}

static void tick_closed(uv_handle_t *h)
{
	struct recording *r = h->data;

	frame_unref(r->latest);
	sbx_free(r->index);
	sbx_free(r->path);
	sbx_free(r);
}

static void free_recording(struct recording *r)
{
	uv_close((uv_handle_t *)&r->tick, tick_closed);
}

static void open_done(uv_work_t *w, int status)
{
	struct recording *r = w->data;
	char msg[400];

	if (status == UV_ECANCELED)
		r->open_err = -ECANCELED;
	if (r->open_err) {
		snprintf(msg, sizeof(msg), "cannot create %s: %s", r->path, strerror(-r->open_err));
		r->open_cb(r, msg, r->arg);
		if (r->stopping)
			r->done(NULL, msg, r->done_arg);
		free_recording(r);
		return;
	}
	r->opened = true;
	uv_timer_start(&r->tick, on_tick, 1000 / r->fps ? 1000 / r->fps : 1, 1000 / r->fps ?: 1);
	r->open_cb(r, NULL, r->arg);
	pump(r); /* a stop that came meanwhile */
}

int recording_open(uv_loop_t *loop, const char *path, unsigned fps, uint64_t max_ms,
		   recording_open_cb open_cb, void (*limit_cb)(void *arg), void *arg,
		   struct recording **out)
{
	struct recording *r = sbx_calloc(1, sizeof(*r));
	int rc;

	if (!r || !(r->path = sbx_strdup(path))) {
		sbx_free(r);
		return -ENOMEM;
	}
	r->loop = loop;
	r->fps = fps ? fps : 1;
	r->max_frames = max_ms * r->fps / 1000;
	r->fd = -1;
	r->end = HEADER_BYTES;
	r->open_cb = open_cb;
	r->limit_cb = limit_cb;
	r->arg = arg;
	uv_timer_init(loop, &r->tick);
	r->tick.data = r;
	r->open_work.data = r;
	if ((rc = uv_queue_work(loop, &r->open_work, open_work, open_done))) {
		free_recording(r);
		return rc;
	}
	*out = r;
	return 0;
}

void recording_pause(struct recording *r, bool paused)
{
	uint64_t now = uv_now(r->loop);

	if (paused == r->paused)
		return;
	r->paused = paused;
	if (paused) {
		r->paused_at_ms = now;
	} else if (r->started_ms) {
		r->paused_ms += now - r->paused_at_ms;
		on_tick(&r->tick);
	}
}

bool recording_paused(const struct recording *r)
{
	return r->paused;
}

json_t *recording_info(const struct recording *r)
{
	uint64_t size = r->end + (r->frames || r->stopping ? 8 + 16 * r->frames : 0);

	return json_pack("{s:s, s:s, s:s, s:I, s:i, s:f, s:i, s:i, s:I, s:I}", "path", r->path,
			 "format", "avi", "codec", "mjpeg", "frames", (json_int_t)r->frames, "fps",
			 (int)r->fps, "duration", (double)r->frames / r->fps, "width",
			 (int)r->width, "height", (int)r->height, "size", (json_int_t)size,
			 "dropped", (json_int_t)r->dropped);
}

static void closed(uv_fs_t *req)
{
	struct recording *r = req->data;
	json_t *info = NULL;

	if (req->result < 0)
		set_failed(r, (int)req->result);
	uv_fs_req_cleanup(req);
	if (!r->failed)
		info = recording_info(r);
	r->done(info, r->failed ? r->error : NULL, r->done_arg);
	free_recording(r);
}

/* Everything queued is written: close. */
static void finish(struct recording *r)
{
	if (r->closing)
		return;
	r->closing = true;
	r->close_req.data = r;
	if (uv_fs_close(r->loop, &r->close_req, r->fd, closed)) {
		set_failed(r, UV_EIO);
		r->done(NULL, r->error, r->done_arg);
		free_recording(r);
	}
}

void recording_stop(struct recording *r, recording_done_cb done, void *arg)
{
	struct wbuf *idx, *head;
	uint64_t movi;

	if (r->stopping)
		return;
	r->stopping = true;
	r->done = done;
	r->done_arg = arg;
	uv_timer_stop(&r->tick);
	movi = r->end - HEADER_BYTES;
	idx = sbx_calloc(1, sizeof(*idx));
	head = sbx_calloc(1, sizeof(*head));
	if (!idx || !head || !(idx->own = sbx_malloc(8 + 16 * r->frames)) ||
	    !(head->own = sbx_malloc(HEADER_BYTES))) {
		if (idx)
			sbx_free(idx->own);
		sbx_free(idx);
		sbx_free(head);
		r->failed = true;
		snprintf(r->error, sizeof(r->error), "out of memory for %s's index", r->path);
		pump(r);
		return;
	}
	/* The index, then the headers over the start. */
	put_id(idx->own, "idx1");
	put32(idx->own + 4, (uint32_t)(16 * r->frames));
	for (uint64_t i = 0; i < r->frames; i++) {
		unsigned char *e = idx->own + 8 + 16 * i;

		put_id(e, "00dc");
		put32(e + 4, 0x10); /* AVIIF_KEYFRAME */
		put32(e + 8, r->index[2 * i]);
		put32(e + 12, r->index[2 * i + 1]);
	}
	idx->own_len = 8 + 16 * r->frames;
	idx->off = r->end;
	head->own_len = HEADER_BYTES;
	build_headers(r, head->own, movi);
	enqueue(r, idx);
	enqueue(r, head);
}
