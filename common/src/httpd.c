// The HTTP server over libmicrohttpd: an epoll thread pool, the body read
// into memory up to a limit, one user handler per complete request.
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include <microhttpd.h>

#include "pl/httpd.h"
#include "pl/log.h"

#define DEFAULT_THREADS   2
#define DEFAULT_MAX_BODY  (1024 * 1024)
#define DEFAULT_TIMEOUT_S 30
#define DEFAULT_MAX_CONNS 1024
// Headers and the read buffer of one connection live in this much memory;
// the body is copied out of the read buffer as it arrives. libmicrohttpd
// zeroes the whole of it before each request of a kept-alive connection,
// so it is kept at the library's default, which takes a request head of
// up to just under 32 KiB (a 31 KiB header was taken; test_httpd holds 24
// KiB), as nginx's default buffers do. At 64 KiB the zeroing was ~5 % of
// the gateway's CPU on GET /v1/conversations.
#define CONN_MEMORY_LIMIT (32 * 1024)
// Past max_body a body without Content-Length is read and dropped so that
// the 413 can be sent; past this much more the connection is closed instead.
#define DISCARD_MAX (1024 * 1024)

struct pl_httpd {
	struct MHD_Daemon *mhd;
	pl_http_handler handler;
	void *arg;
	size_t max_body;
	bool handle_too_large;
	bool deferrable;
	// Orders a deferred request's suspension (its handler's thread) and
	// its finish (any thread): whichever comes second acts.
	pthread_mutex_t defer_mu;
};

// The state of one request, from its headers to its completion.
typedef struct request {
	char *body;
	size_t len;
	size_t cap;
	size_t discarded; // bytes dropped after the body passed max_body
	bool too_large;
	char remote_ip[INET6_ADDRSTRLEN];
	// A deferred answer (pl_http_defer): the response waiting for
	// pl_http_finish, and where the connection stands.
	pl_httpd *d;
	struct MHD_Connection *conn;
	pl_http_resp dresp;
	bool deferred;  // the handler deferred; dresp holds the response
	bool suspended; // MHD_suspend_connection done, resume not yet
	bool finished;  // pl_http_finish called
} request;

static const char too_large_msg[] = "request body too large\n";
static const char internal_msg[] = "internal error\n";

const char *
pl_http_req_header(const pl_http_req *r, const char *name)
{
	if (r == NULL || r->conn_ == NULL || name == NULL) {
		return NULL;
	}
	return MHD_lookup_connection_value(r->conn_, MHD_HEADER_KIND, name);
}

const char *
pl_http_req_query(const pl_http_req *r, const char *name)
{
	if (r == NULL || r->conn_ == NULL || name == NULL) {
		return NULL;
	}
	return MHD_lookup_connection_value(r->conn_, MHD_GET_ARGUMENT_KIND,
	                                   name);
}

void
pl_http_resp_header(pl_http_resp *r, const char *name, const char *value)
{
	char *n, *v;

	if (r == NULL || name == NULL || value == NULL) {
		return;
	}
	if (r->n_headers < 0 || r->n_headers >= PL_HTTP_MAX_HEADERS) {
		pl_warn("could not add response header \"%s\": too many "
		        "headers",
		        name);
		return;
	}
	n = strdup(name);
	v = strdup(value);
	if (n == NULL || v == NULL) {
		free(n);
		free(v);
		pl_error("could not add response header: out of memory");
		return;
	}
	r->headers[r->n_headers][0] = n;
	r->headers[r->n_headers][1] = v;
	r->n_headers++;
}

void
pl_http_resp_set(pl_http_resp *r, int status, const char *content_type,
                 const char *body, size_t len)
{
	if (r == NULL) {
		return;
	}
	r->status = status;
	if (content_type != NULL) {
		bool replaced = false;
		for (int i = 0; i < r->n_headers; i++) {
			if (strcasecmp(r->headers[i][0], "Content-Type") != 0) {
				continue;
			}
			char *v = strdup(content_type);
			if (v == NULL) {
				pl_error("could not set content type: out of "
				         "memory");
			} else {
				free(r->headers[i][1]);
				r->headers[i][1] = v;
			}
			replaced = true;
			break;
		}
		if (!replaced) {
			pl_http_resp_header(r, "Content-Type", content_type);
		}
	}
	free(r->body);
	r->body = NULL;
	r->body_len = 0;
	if (body == NULL || len == 0) {
		return;
	}
	r->body = malloc(len);
	if (r->body == NULL) {
		// The caller cannot check; an empty 500 beats a truncated body.
		pl_error("could not set response body of %zu bytes: out of "
		         "memory",
		         len);
		r->status = 500;
		return;
	}
	memcpy(r->body, body, len);
	r->body_len = len;
}

void
pl_http_resp_take(pl_http_resp *r, int status, const char *content_type,
                  char *body, size_t len)
{
	if (r == NULL) {
		free(body);
		return;
	}
	pl_http_resp_set(r, status, content_type, NULL, 0);
	r->body = body;
	r->body_len = body != NULL ? len : 0;
}

static void
resp_fini(pl_http_resp *r)
{
	free(r->body);
	for (int i = 0; i < r->n_headers && i < PL_HTTP_MAX_HEADERS; i++) {
		free(r->headers[i][0]);
		free(r->headers[i][1]);
	}
	memset(r, 0, sizeof(*r)); // a second call frees nothing
}

static enum MHD_Result
queue_static(struct MHD_Connection *conn, unsigned status, const char *msg)
{
	struct MHD_Response *mr;
	enum MHD_Result rv;

	mr = MHD_create_response_from_buffer(strlen(msg), (void *)msg,
	                                     MHD_RESPMEM_PERSISTENT);
	if (mr == NULL) {
		return MHD_NO;
	}
	MHD_add_response_header(mr, "Content-Type", "text/plain");
	rv = MHD_queue_response(conn, status, mr);
	MHD_destroy_response(mr);
	return rv;
}

static void
client_ip(struct MHD_Connection *conn, char *buf, size_t size)
{
	const union MHD_ConnectionInfo *ci;
	const struct sockaddr *sa;

	buf[0] = '\0';
	ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	if (ci == NULL || ci->client_addr == NULL) {
		return;
	}
	sa = ci->client_addr;
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const void *)sa;
		inet_ntop(AF_INET, &in->sin_addr, buf, size);
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const void *)sa;
		inet_ntop(AF_INET6, &in6->sin6_addr, buf, size);
	}
}

// Appends upload data; false when the body passed the limit.
static bool
body_append(request *rq, size_t max_body, const char *data, size_t n)
{
	if (n > max_body - rq->len) {
		return false;
	}
	if (rq->len + n + 1 > rq->cap) {
		size_t cap = rq->cap ? rq->cap : 1024;
		while (cap < rq->len + n + 1) {
			cap *= 2;
		}
		if (cap > max_body + 1) {
			cap = max_body + 1;
		}
		char *nb = realloc(rq->body, cap);
		if (nb == NULL) {
			return false;
		}
		rq->body = nb;
		rq->cap = cap;
	}
	memcpy(rq->body + rq->len, data, n);
	rq->len += n;
	rq->body[rq->len] = '\0';
	return true;
}

// Queues resp (status, headers, body) on conn and frees its parts.
static enum MHD_Result
queue_resp(struct MHD_Connection *conn, const char *method, pl_http_resp *resp)
{
	struct MHD_Response *mr;
	enum MHD_Result rv;
	unsigned status;

	if (resp->n_headers < 0 || resp->n_headers > PL_HTTP_MAX_HEADERS) {
		// Paths stay out of logs: some carry webhook secrets.
		pl_error("handler of a %s request set a bad header count %d",
		         method, resp->n_headers);
		resp->n_headers = 0; // cannot know which pointers are real
		resp_fini(resp);
		return queue_static(conn, 500, internal_msg);
	}
	status = resp->status == 0 ? 200 : (unsigned)resp->status;
	if (resp->status < 0 || status < 100 || status > 599) {
		pl_error("handler of a %s request set a bad status %d", method,
		         resp->status);
		resp_fini(resp);
		return queue_static(conn, 500, internal_msg);
	}
	if (resp->body != NULL && resp->body_len > 0) {
		mr = MHD_create_response_from_buffer_with_free_callback(
		        resp->body_len, resp->body, free);
		if (mr != NULL) {
			resp->body = NULL; // owned by the response now
		}
	} else {
		mr = MHD_create_response_from_buffer(0, (void *)"",
		                                     MHD_RESPMEM_PERSISTENT);
	}
	if (mr == NULL) {
		pl_error("could not create response to a %s request: out of "
		         "memory",
		         method);
		resp_fini(resp);
		return MHD_NO;
	}
	for (int i = 0; i < resp->n_headers; i++) {
		const char *n = resp->headers[i][0];
		const char *v = resp->headers[i][1];
		if (n == NULL || v == NULL ||
		    MHD_add_response_header(mr, n, v) != MHD_YES) {
			// MHD refuses CR/LF and headers it owns itself.
			pl_warn("dropped response header \"%s\" of a %s "
			        "request",
			        n ? n : "(null)", method);
		}
	}
	rv = MHD_queue_response(conn, status, mr);
	MHD_destroy_response(mr);
	resp_fini(resp);
	return rv;
}

static enum MHD_Result
run_handler(pl_httpd *d, struct MHD_Connection *conn, const char *url,
            const char *method, request *rq)
{
	pl_http_req req = { 0 };
	pl_http_resp resp = { 0 };
	bool wait;

	client_ip(conn, rq->remote_ip, sizeof(rq->remote_ip));
	req.method = method;
	req.path = url;
	req.too_large = rq->too_large;
	req.body = rq->len > 0 && !rq->too_large ? rq->body : NULL;
	req.body_len = rq->too_large ? 0 : rq->len;
	req.remote_ip = rq->remote_ip;
	req.conn_ = conn;
	req.rq_ = rq;
	rq->d = d;
	rq->conn = conn;

	d->handler(&req, &resp, d->arg);

	if (!rq->deferred)
		return queue_resp(conn, method, &resp);
	resp_fini(&resp); // anything set after pl_http_defer
	// Finished already (by another thread, while the handler ran): sent
	// now. Otherwise the connection waits for pl_http_finish.
	pthread_mutex_lock(&d->defer_mu);
	wait = !rq->finished;
	if (wait) {
		MHD_suspend_connection(conn);
		rq->suspended = true;
	}
	pthread_mutex_unlock(&d->defer_mu);
	if (wait)
		return MHD_YES;
	return queue_resp(conn, method, &rq->dresp);
}

pl_http_deferred *
pl_http_defer(const pl_http_req *req, pl_http_resp *resp)
{
	request *rq = req != NULL ? req->rq_ : NULL;

	if (rq == NULL || resp == NULL || rq->deferred || !rq->d->deferrable)
		return NULL;
	rq->dresp = *resp;
	memset(resp, 0, sizeof(*resp));
	rq->deferred = true;
	return (pl_http_deferred *)rq;
}

pl_http_resp *
pl_http_deferred_resp(pl_http_deferred *p)
{
	return p != NULL ? &((request *)p)->dresp : NULL;
}

void
pl_http_finish(pl_http_deferred *p)
{
	request *rq = (request *)p;
	pl_httpd *d;
	struct MHD_Connection *conn = NULL;

	if (rq == NULL)
		return;
	d = rq->d;
	pthread_mutex_lock(&d->defer_mu);
	rq->finished = true;
	if (rq->suspended) {
		rq->suspended = false;
		conn = rq->conn;
	}
	pthread_mutex_unlock(&d->defer_mu);
	// MHD calls on_request for it again, which sends dresp; rq may be
	// gone once this returns.
	if (conn != NULL)
		MHD_resume_connection(conn);
}

static enum MHD_Result
on_request(void *cls, struct MHD_Connection *conn, const char *url,
           const char *method, const char *version, const char *upload_data,
           size_t *upload_data_size, void **con_cls)
{
	pl_httpd *d = cls;
	request *rq = *con_cls;

	(void)version;
	if (rq != NULL && rq->deferred) {
		// Resumed by pl_http_finish.
		if (!rq->finished)
			return MHD_YES;
		return queue_resp(conn, method, &rq->dresp);
	}
	if (rq == NULL) {
		const char *cl;
		unsigned long long n;
		char *end;

		rq = calloc(1, sizeof(*rq));
		if (rq == NULL) {
			return MHD_NO;
		}
		*con_cls = rq;
		cl = MHD_lookup_connection_value(
		        conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
		if (cl == NULL) {
			return MHD_YES;
		}
		errno = 0;
		n = strtoull(cl, &end, 10);
		// MHD itself refuses a malformed Content-Length.
		if (end != cl && (errno == ERANGE || n > d->max_body)) {
			// Refused before the body is read (and before any
			// "100 Continue"); MHD then closes the connection.
			rq->too_large = true;
			if (d->handle_too_large)
				return run_handler(d, conn, url, method, rq);
			return queue_static(conn, MHD_HTTP_CONTENT_TOO_LARGE,
			                    too_large_msg);
		}
		if (n > 0) {
			rq->body = malloc((size_t)n + 1);
			if (rq->body == NULL) {
				return MHD_NO;
			}
			rq->cap = (size_t)n + 1;
		}
		return MHD_YES;
	}

	if (*upload_data_size > 0) {
		size_t n = *upload_data_size;

		*upload_data_size = 0;
		if (!rq->too_large &&
		    !body_append(rq, d->max_body, upload_data, n)) {
			rq->too_large = true;
		}
		if (rq->too_large) {
			// A response cannot be queued while data arrives: drop
			// the rest and answer at the end, up to a bound.
			rq->discarded += n;
			if (rq->discarded > DISCARD_MAX) {
				return MHD_NO;
			}
		}
		return MHD_YES;
	}

	if (rq->too_large && !d->handle_too_large) {
		return queue_static(conn, MHD_HTTP_CONTENT_TOO_LARGE,
		                    too_large_msg);
	}
	return run_handler(d, conn, url, method, rq);
}

static void
on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
             enum MHD_RequestTerminationCode toe)
{
	request *rq = *con_cls;

	(void)cls;
	(void)conn;
	(void)toe;
	if (rq != NULL) {
		resp_fini(&rq->dresp);
		free(rq->body);
		free(rq);
		*con_cls = NULL;
	}
}

int
pl_httpd_start(pl_httpd **out, const pl_httpd_config *cfg, pl_http_handler h,
               void *arg)
{
	static const pl_httpd_config defaults = { 0 };
	struct sockaddr_storage ss = { 0 };
	unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD;
	const char *bind;
	pl_httpd *d;
	int threads;
	unsigned timeout_s, max_conns;

	if (out == NULL || h == NULL) {
		pl_error("could not start http server: no handler");
		return -1;
	}
	*out = NULL;
	if (cfg == NULL) {
		cfg = &defaults;
	}
	if (cfg->threads < 0 || cfg->timeout_s < 0) {
		pl_error("could not start http server: negative threads or "
		         "timeout");
		return -1;
	}
	bind = cfg->bind ? cfg->bind : "0.0.0.0";
	threads = cfg->threads ? cfg->threads : DEFAULT_THREADS;
	timeout_s =
	        cfg->timeout_s ? (unsigned)cfg->timeout_s : DEFAULT_TIMEOUT_S;
	max_conns = cfg->max_conns ? cfg->max_conns : DEFAULT_MAX_CONNS;

	if (strchr(bind, ':') != NULL) {
		struct sockaddr_in6 *in6 = (void *)&ss;
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons(cfg->port);
		if (inet_pton(AF_INET6, bind, &in6->sin6_addr) != 1) {
			pl_error("could not start http server: bad bind "
			         "address \"%s\"",
			         bind);
			return -1;
		}
		flags |= MHD_USE_IPv6;
	} else {
		struct sockaddr_in *in = (void *)&ss;
		in->sin_family = AF_INET;
		in->sin_port = htons(cfg->port);
		if (inet_pton(AF_INET, bind, &in->sin_addr) != 1) {
			pl_error("could not start http server: bad bind "
			         "address \"%s\"",
			         bind);
			return -1;
		}
	}

	d = calloc(1, sizeof(*d));
	if (d == NULL) {
		pl_error("could not start http server: out of memory");
		return -1;
	}
	d->handler = h;
	d->arg = arg;
	d->max_body = cfg->max_body ? cfg->max_body : DEFAULT_MAX_BODY;
	d->handle_too_large = cfg->handle_too_large;
	d->deferrable = cfg->deferrable;
	if (d->deferrable)
		flags |= MHD_ALLOW_SUSPEND_RESUME;
	pthread_mutex_init(&d->defer_mu, NULL);

	// MHD_USE_ERROR_LOG stays off: MHD's messages may quote requests.
	d->mhd = MHD_start_daemon(
	        flags, cfg->port, NULL, NULL, on_request, d,
	        MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
	        MHD_OPTION_THREAD_POOL_SIZE, (unsigned)threads,
	        MHD_OPTION_CONNECTION_TIMEOUT, timeout_s,
	        MHD_OPTION_CONNECTION_LIMIT, max_conns,
	        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)CONN_MEMORY_LIMIT,
	        MHD_OPTION_NOTIFY_COMPLETED, on_completed, d, MHD_OPTION_END);
	if (d->mhd == NULL) {
		pl_error("could not start http server on %s port %u", bind,
		         (unsigned)cfg->port);
		pthread_mutex_destroy(&d->defer_mu);
		free(d);
		return -1;
	}
	*out = d;
	return 0;
}

uint16_t
pl_httpd_port(const pl_httpd *d)
{
	const union MHD_DaemonInfo *di;

	if (d == NULL) {
		return 0;
	}
	di = MHD_get_daemon_info(d->mhd, MHD_DAEMON_INFO_BIND_PORT);
	return di ? di->port : 0;
}

void
pl_httpd_stop(pl_httpd *d)
{
	if (d == NULL) {
		return;
	}
	MHD_stop_daemon(d->mhd);
	pthread_mutex_destroy(&d->defer_mu);
	free(d);
}
