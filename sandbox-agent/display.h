/* POST /v1/display/record: screen recording of the sandbox's X display.
 *
 * The request is checked against the AIO shape (action start/stop/status,
 * fps 1..30, crf 0..51, max_duration, width, height, save_path). Recording
 * itself is not built into this agent: the answer is a 501 whose message
 * names what the sandbox lacks (no X display: DISPLAY unset or its socket
 * missing) or, where a display exists, that the agent does not record it. */
#ifndef SBX_AGENT_DISPLAY_H
#define SBX_AGENT_DISPLAY_H

struct sbx_http_req;

void display_handle_record(struct sbx_http_req *req, void *arg);

#endif
