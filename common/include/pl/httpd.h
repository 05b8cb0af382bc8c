// A small HTTP server over libmicrohttpd (epoll, thread pool): the ops
// endpoints of every service and the gateway. The handler sees a whole
// request (body read up to a limit; past it the wrapper answers 413) and
// fills a response.
#ifndef PL_HTTPD_H
#define PL_HTTPD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct pl_http_req {
	const char *method; // "GET"
	const char *path;   // "/v1/conversations" (no query)
	const char *body;   // NUL-terminated copy; NULL when empty
	size_t body_len;
	const char *remote_ip; // "127.0.0.1"
	bool too_large;        // body past max_body, not read (see config)
	void *conn_;           // internal
	void *rq_;             // internal
} pl_http_req;

// A request header (case-insensitive) or NULL.
const char *pl_http_req_header(const pl_http_req *r, const char *name);

// A query-string argument (decoded) or NULL.
const char *pl_http_req_query(const pl_http_req *r, const char *name);

#define PL_HTTP_MAX_HEADERS 16

typedef struct pl_http_resp {
	int status; // 200 unless set
	char *body; // malloc'd; freed by the wrapper
	size_t body_len;
	char *headers[PL_HTTP_MAX_HEADERS][2]; // malloc'd name/value pairs
	int n_headers;
} pl_http_resp;

// Adds a header (copied). Content-Type goes here too.
void pl_http_resp_header(pl_http_resp *r, const char *name, const char *value);

// Sets status, content type and a copy of the body.
void pl_http_resp_set(pl_http_resp *r, int status, const char *content_type,
                      const char *body, size_t len);

// pl_http_resp_set with a malloc'd body the response takes and frees (no
// copy: a page of conversations is ~30 KB).
void pl_http_resp_take(pl_http_resp *r, int status, const char *content_type,
                       char *body, size_t len);

typedef void (*pl_http_handler)(const pl_http_req *req, pl_http_resp *resp,
                                void *arg);

// A request whose answer comes later, from another thread (a long-poll):
// see pl_http_defer.
typedef struct pl_http_deferred pl_http_deferred;

// Called by a handler of a server started with `deferrable`: the answer is
// not sent when the handler returns. The connection then waits, holding
// no thread, until pl_http_finish(p) is called, from any thread and
// exactly once. The response moves out of resp (which is left empty) with
// what the handler set so far (its headers); fill it through
// pl_http_deferred_resp before finishing. NULL (nothing moved) when the
// server is not deferrable or the request is already deferred. Every
// deferred request must be finished before pl_httpd_stop.
pl_http_deferred *pl_http_defer(const pl_http_req *req, pl_http_resp *resp);
pl_http_resp *pl_http_deferred_resp(pl_http_deferred *p);
void pl_http_finish(pl_http_deferred *p);

typedef struct pl_httpd_config {
	const char *bind;   // "127.0.0.1", "0.0.0.0" (NULL: 0.0.0.0)
	uint16_t port;      // 0: an ephemeral port (see pl_httpd_port)
	int threads;        // 0: 2
	size_t max_body;    // 0: 1 MiB; larger bodies get 413
	int timeout_s;      // idle connection timeout (0: 30)
	unsigned max_conns; // 0: 1024
	// Past max_body the wrapper answers a plain-text 413 itself; with
	// this set it calls the handler instead, with too_large set and no
	// body, so the answer can be in the application's own format.
	bool handle_too_large;
	// Handlers may defer their answers (pl_http_defer).
	bool deferrable;
} pl_httpd_config;

typedef struct pl_httpd pl_httpd;

// Starts serving; returns 0, or -1 (logged) when it cannot listen.
int pl_httpd_start(pl_httpd **out, const pl_httpd_config *cfg,
                   pl_http_handler h, void *arg);
uint16_t pl_httpd_port(const pl_httpd *d);
// Stops accepting, waits for running handlers, frees.
void pl_httpd_stop(pl_httpd *d);

#endif
