/* A page's screencast written as a video: Motion JPEG in an AVI file.
 *
 * The browser sends a JPEG whenever the page changes (CDP's
 * Page.startScreencast); the recording keeps the latest one and writes it
 * at a steady rate (fps), so the video's time is the wall clock's and a
 * still page is a still picture. AVI with Motion JPEG needs no encoder:
 * each frame is the browser's JPEG as it came, in a '00dc' chunk, with the
 * idx1 index at the end and the headers (frame count, size) written last,
 * over the start of the file. Every player reads it (ffmpeg, VLC, mpv).
 *
 * All file work runs on libuv's thread pool, one write at a time; frames
 * wait in a queue that shares the JPEG bytes, and beyond 64 queued frames
 * a tick is dropped (and counted) rather than held. A recording ends at
 * max_ms or at 1 GiB, whichever comes first (the limit callback says so).
 */
#ifndef SBX_AGENT_RECORD_H
#define SBX_AGENT_RECORD_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#define RECORD_MAX_BYTES (1ull << 30)

struct recording;

/* The file is open (error NULL), or could not be made (the recording is
 * freed after this call). */
typedef void (*recording_open_cb)(struct recording *r, const char *error, void *arg);
/* The file is complete (info: path, format, frames, fps, duration, width,
 * height, size, dropped), or error says why not; r is freed after. info
 * is the callee's. */
typedef void (*recording_done_cb)(json_t *info, const char *error, void *arg);

/* Makes path's folders and opens it (on the thread pool); frames are
 * taken once open_cb has said yes. limit_cb runs when max_ms or the size
 * limit is reached (the caller then stops it). */
int recording_open(uv_loop_t *loop, const char *path, unsigned fps, uint64_t max_ms,
		   recording_open_cb open_cb, void (*limit_cb)(void *arg), void *arg,
		   struct recording **out);
/* The page's latest picture (a JPEG, copied). */
void recording_frame(struct recording *r, const void *jpeg, size_t len);
void recording_pause(struct recording *r, bool paused);
bool recording_paused(const struct recording *r);
/* {path, format, frames, fps, duration, width, height, size, dropped}. */
json_t *recording_info(const struct recording *r);
/* Stops taking frames, writes the index and the headers, closes; done
 * runs once (maybe before this returns). */
void recording_stop(struct recording *r, recording_done_cb done, void *arg);

/* A JPEG's size from its frame header: 0, or -1 if there is none. */
int jpeg_dimensions(const unsigned char *p, size_t len, unsigned *width, unsigned *height);

#endif
