// pl_httpc against a scripted fake server built on pl_httpd, on loopback.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "pl/httpc.h"
#include "pl/httpd.h"
#include "pl/status.h"

// One scripted answer; the last step repeats.
typedef struct step {
	int status;
	const char *body;
	size_t body_size; // > 0: that many 'x' instead of body
	const char *retry_after;
	int sleep_ms;
} step;

#define MAX_STEPS 8

typedef struct fake {
	pl_httpd *d;
	uint16_t port;
	pl_httpc *c;
	char url[128];
	pthread_mutex_t mu;
	step steps[MAX_STEPS];
	int n_steps;
	int hits;
	// The last request as the server saw it.
	char method[16];
	char token[64];
	char ctype[64];
	char expect[64];
	char *body;
	size_t body_len;
} fake;

static void
fake_handler(const pl_http_req *req, pl_http_resp *resp, void *arg)
{
	fake *f = arg;
	step st;
	const char *h;

	pthread_mutex_lock(&f->mu);
	st = f->steps[f->hits < f->n_steps ? f->hits : f->n_steps - 1];
	f->hits++;
	snprintf(f->method, sizeof(f->method), "%s", req->method);
	h = pl_http_req_header(req, "X-Token");
	snprintf(f->token, sizeof(f->token), "%s", h ? h : "");
	h = pl_http_req_header(req, "Content-Type");
	snprintf(f->ctype, sizeof(f->ctype), "%s", h ? h : "");
	h = pl_http_req_header(req, "Expect");
	snprintf(f->expect, sizeof(f->expect), "%s", h ? h : "");
	free(f->body);
	f->body = NULL;
	f->body_len = req->body_len;
	if (req->body_len > 0) {
		f->body = malloc(req->body_len);
		if (f->body != NULL) {
			memcpy(f->body, req->body, req->body_len);
		}
	}
	pthread_mutex_unlock(&f->mu);

	if (st.sleep_ms > 0) {
		struct timespec ts = { st.sleep_ms / 1000,
			               (st.sleep_ms % 1000) * 1000000L };
		nanosleep(&ts, NULL);
	}
	if (st.retry_after != NULL) {
		pl_http_resp_header(resp, "Retry-After", st.retry_after);
	}
	if (st.body_size > 0) {
		resp->status = st.status;
		resp->body = malloc(st.body_size);
		if (resp->body != NULL) {
			memset(resp->body, 'x', st.body_size);
			resp->body_len = st.body_size;
		}
	} else {
		const char *b = st.body ? st.body : "";
		pl_http_resp_set(resp, st.status, "text/plain", b, strlen(b));
	}
}

static void
script(fake *f, const step *steps, int n)
{
	pthread_mutex_lock(&f->mu);
	memcpy(f->steps, steps, sizeof(*steps) * (size_t)n);
	f->n_steps = n;
	f->hits = 0;
	pthread_mutex_unlock(&f->mu);
}

static int
hits(fake *f)
{
	int n;

	pthread_mutex_lock(&f->mu);
	n = f->hits;
	pthread_mutex_unlock(&f->mu);
	return n;
}

static int
setup(void **state)
{
	fake *f = calloc(1, sizeof(*f));
	pl_httpd_config cfg = {
		.bind = "127.0.0.1",
		.threads = 4,
		.max_body = 64 * 1024,
	};

	if (f == NULL) {
		return -1;
	}
	pthread_mutex_init(&f->mu, NULL);
	if (pl_httpd_start(&f->d, &cfg, fake_handler, f) != 0) {
		free(f);
		return -1;
	}
	f->port = pl_httpd_port(f->d);
	snprintf(f->url, sizeof(f->url), "http://127.0.0.1:%u/x", f->port);
	f->c = pl_httpc_open();
	if (f->c == NULL) {
		pl_httpd_stop(f->d);
		free(f);
		return -1;
	}
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	fake *f = *state;

	pl_httpc_close(f->c);
	pl_httpd_stop(f->d);
	pthread_mutex_destroy(&f->mu);
	free(f->body);
	free(f);
	return 0;
}

static int64_t
mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
test_ok(void **state)
{
	fake *f = *state;
	step s[] = { { .status = 200, .body = "hello" } };
	pl_httpc_req req = { .method = "GET", .url = f->url };
	pl_httpc_resp resp;

	script(f, s, 1);
	assert_int_equal(pl_httpc_do(f->c, &req, &resp), PL_OK);
	assert_int_equal(resp.status, 200);
	assert_int_equal(resp.len, 5);
	assert_string_equal(resp.body, "hello");
	assert_int_equal(resp.attempts, 1);
	assert_int_equal(resp.retry_after_ms, -1);
	pl_httpc_resp_fini(&resp);

	// Again on the same handle (its connection is reused), no method.
	req.method = NULL;
	assert_int_equal(pl_httpc_do(f->c, &req, &resp), PL_OK);
	assert_int_equal(resp.status, 200);
	assert_string_equal(f->method, "GET");
	pl_httpc_resp_fini(&resp);
	assert_int_equal(hits(f), 2);
}

static void
test_retry_after_429(void **state)
{
	fake *f = *state;
	step s[] = { { .status = 429, .retry_after = "1" },
		     { .status = 200, .body = "done" } };
	pl_httpc_req req = { .method = "GET",
		             .url = f->url,
		             .attempts = 3,
		             .backoff_base_ms = 10,
		             .backoff_max_ms = 5000 };
	pl_httpc_resp resp;
	int64_t t0;

	script(f, s, 2);
	t0 = mono_ms();
	assert_int_equal(pl_httpc_do(f->c, &req, &resp), PL_OK);
	assert_true(mono_ms() - t0 >= 950);
	assert_int_equal(resp.status, 200);
	assert_int_equal(resp.attempts, 2);
	assert_string_equal(resp.body, "done");
	pl_httpc_resp_fini(&resp);
	assert_int_equal(hits(f), 2);
}

static void
test_retry_5xx(void **state)
{
	fake *f = *state;
	step s[] = { { .status = 500 },
		     { .status = 500 },
		     { .status = 500 },
		     { .status = 200, .body = "ok" } };
	pl_httpc_req req = { .method = "POST",
		             .url = f->url,
		             .body = "b",
		             .body_len = 1,
		             .attempts = 4,
		             .backoff_base_ms = 5,
		             .backoff_max_ms = 20 };
	pl_httpc_resp resp;

	script(f, s, 4);
	assert_int_equal(pl_httpc_do(f->c, &req, &resp), PL_OK);
	assert_int_equal(resp.status, 200);
	assert_int_equal(resp.attempts, 4);
	assert_string_equal(resp.body, "ok");
	pl_httpc_resp_fini(&resp);
	assert_int_equal(hits(f), 4);

	// Out of attempts: the last answer is returned as it is.
	step s503[] = { { .status = 503, .body = "busy" } };
	script(f, s503, 1);
	req.attempts = 3;
	assert_int_equal(pl_httpc_do(f->c, &req, &resp), PL_OK);
	assert_int_equal(resp.status, 503);
	assert_int_equal(resp.attempts, 3);
	assert_string_equal(resp.body, "busy");
	pl_httpc_resp_fini(&resp);
	assert_int_equal(hits(f), 3);
}

static void
test_no_retry_400(void **state)
{
	fake *f = *state;
	step s[] = { { .status = 400, .body = "bad" } };
	pl_httpc_req req = { .url = f->url,
		             .attempts = 5,
		             .backoff_base_ms = 1 };
	pl_httpc_resp resp;

	script(f, s, 1);
	assert_int_equal(pl_httpc_do(f->c, &req, &resp), PL_OK);
	assert_int_equal(resp.status, 400);
	assert_int_equal(resp.attempts, 1);
	assert_string_equal(resp.body, "bad");
	pl_httpc_resp_fini(&resp);
	assert_int_equal(hits(f), 1);
}

static void
test_deadline_stops_retries(void **state)
{
	fake *f = *state;
	step s[] = { { .status = 503, .retry_after = "5" } };
	pl_httpc_req req = { .url = f->url,
		             .attempts = 3,
		             .backoff_max_ms = 10000,
		             .deadline_ms = 500 };
	pl_httpc_resp resp;

	// Waiting 5 s would pass the 500 ms budget: no second attempt.
	script(f, s, 1);
	assert_int_equal(pl_httpc_do(f->c, &req, &resp), PL_OK);
	assert_int_equal(resp.status, 503);
	assert_int_equal(resp.attempts, 1);
	assert_int_equal(resp.retry_after_ms, 5000);
	pl_httpc_resp_fini(&resp);
	assert_int_equal(hits(f), 1);
}

static void
test_timeout(void **state)
{
	fake *f = *state;
	step s[] = { { .status = 200, .body = "late", .sleep_ms = 600 } };
	pl_httpc_req req = { .url = f->url, .timeout_ms = 150 };
	pl_httpc_resp resp;

	script(f, s, 1);
	assert_int_equal(pl_httpc_do(f->c, &req, &resp), PL_DEADLINE_EXCEEDED);
	assert_null(resp.body);
	assert_int_equal(resp.attempts, 1);
	assert_true(resp.error[0] != '\0');
	pl_httpc_resp_fini(&resp);

	// A deadline shorter than timeout_ms bounds the attempt too.
	req.timeout_ms = 5000;
	req.deadline_ms = 150;
	assert_int_equal(pl_httpc_do(f->c, &req, &resp), PL_DEADLINE_EXCEEDED);
	pl_httpc_resp_fini(&resp);
}

static void
test_too_large(void **state)
{
	fake *f = *state;
	step s[] = { { .status = 200, .body_size = 2 * 1024 * 1024 } };
	pl_httpc_req req = { .url = f->url,
		             .max_response = 1024 * 1024,
		             .attempts = 3,
		             .backoff_base_ms = 1 };
	pl_httpc_resp resp;

	script(f, s, 1);
	assert_int_equal(pl_httpc_do(f->c, &req, &resp), PL_RESOURCE_EXHAUSTED);
	assert_null(resp.body);
	assert_int_equal(resp.attempts, 1); // never retried
	pl_httpc_resp_fini(&resp);

	// Exactly at the limit is fine.
	step fits[] = { { .status = 200, .body_size = 1024 * 1024 } };
	script(f, fits, 1);
	assert_int_equal(pl_httpc_do(f->c, &req, &resp), PL_OK);
	assert_int_equal(resp.len, 1024 * 1024);
	assert_int_equal(resp.body[resp.len], '\0');
	pl_httpc_resp_fini(&resp);
}

// A server that streams a chunked body of 2 MiB with no Content-Length, so
// only the write callback can stop it.
typedef struct streamer {
	int lfd;
} streamer;

static void *
stream_main(void *arg)
{
	streamer *st = arg;
	char buf[4096];
	char *chunk;
	size_t len = 0;
	int fd = accept(st->lfd, NULL, NULL);
	const char *head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
	                   "Connection: close\r\n\r\n";

	if (fd < 0) {
		return NULL;
	}
	while (len + 1 < sizeof(buf)) {
		ssize_t r = recv(fd, buf + len, sizeof(buf) - 1 - len, 0);
		if (r <= 0) {
			break;
		}
		len += (size_t)r;
		buf[len] = '\0';
		if (strstr(buf, "\r\n\r\n") != NULL) {
			break;
		}
	}
	chunk = malloc(65536 + 16);
	if (chunk != NULL && send(fd, head, strlen(head), MSG_NOSIGNAL) > 0) {
		int n = snprintf(chunk, 16, "%x\r\n", 65536);
		memset(chunk + n, 'y', 65536);
		memcpy(chunk + n + 65536, "\r\n", 2);
		for (int i = 0; i < 32; i++) {
			if (send(fd, chunk, (size_t)n + 65538, MSG_NOSIGNAL) <
			    0) {
				break;
			}
		}
		send(fd, "0\r\n\r\n", 5, MSG_NOSIGNAL);
	}
	free(chunk);
	close(fd);
	return NULL;
}

static void
test_too_large_chunked(void **state)
{
	struct sockaddr_in sa = { 0 };
	socklen_t sl = sizeof(sa);
	streamer st;
	pthread_t t;
	pl_httpc *c = ((fake *)*state)->c;
	char url[64];
	pl_httpc_resp resp;

	st.lfd = socket(AF_INET, SOCK_STREAM, 0);
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(st.lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(st.lfd, 4), 0);
	getsockname(st.lfd, (struct sockaddr *)&sa, &sl);
	snprintf(url, sizeof(url), "http://127.0.0.1:%u/big",
	         ntohs(sa.sin_port));
	assert_int_equal(pthread_create(&t, NULL, stream_main, &st), 0);

	pl_httpc_req req = { .url = url, .max_response = 1024 * 1024 };
	assert_int_equal(pl_httpc_do(c, &req, &resp), PL_RESOURCE_EXHAUSTED);
	assert_null(resp.body);
	assert_int_equal(resp.status, 200);
	pl_httpc_resp_fini(&resp);
	pthread_join(t, NULL);
	close(st.lfd);
}

// A server that accepts one connection only and answers two requests on
// it: a client that does not reuse its connection gets no second answer.
typedef struct one_conn {
	int lfd;
	int served;
} one_conn;

static void *
one_conn_main(void *arg)
{
	one_conn *oc = arg;
	char buf[4096];
	const char *ans = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
	int fd = accept(oc->lfd, NULL, NULL);

	if (fd < 0) {
		return NULL;
	}
	for (int i = 0; i < 2; i++) {
		size_t len = 0;
		buf[0] = '\0';
		while (strstr(buf, "\r\n\r\n") == NULL &&
		       len + 1 < sizeof(buf)) {
			ssize_t r =
			        recv(fd, buf + len, sizeof(buf) - 1 - len, 0);
			if (r <= 0) {
				goto out_close;
			}
			len += (size_t)r;
			buf[len] = '\0';
		}
		if (send(fd, ans, strlen(ans), MSG_NOSIGNAL) < 0) {
			break;
		}
		oc->served++;
	}
out_close:
	close(fd);
	return NULL;
}

static void
test_connection_reused(void **state)
{
	struct sockaddr_in sa = { 0 };
	socklen_t sl = sizeof(sa);
	one_conn oc = { 0 };
	pthread_t t;
	pl_httpc *c = ((fake *)*state)->c;
	char url[64];
	pl_httpc_resp resp;

	oc.lfd = socket(AF_INET, SOCK_STREAM, 0);
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(oc.lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(oc.lfd, 4), 0);
	getsockname(oc.lfd, (struct sockaddr *)&sa, &sl);
	snprintf(url, sizeof(url), "http://127.0.0.1:%u/", ntohs(sa.sin_port));
	assert_int_equal(pthread_create(&t, NULL, one_conn_main, &oc), 0);

	pl_httpc_req req = { .url = url, .timeout_ms = 2000 };
	assert_int_equal(pl_httpc_do(c, &req, &resp), PL_OK);
	assert_string_equal(resp.body, "ok");
	pl_httpc_resp_fini(&resp);
	req.method = "POST";
	req.body = "x";
	req.body_len = 1;
	assert_int_equal(pl_httpc_do(c, &req, &resp), PL_OK);
	assert_string_equal(resp.body, "ok");
	pl_httpc_resp_fini(&resp);
	pthread_join(t, NULL);
	assert_int_equal(oc.served, 2);
	close(oc.lfd);
}

static void
test_refused(void **state)
{
	struct sockaddr_in sa = { 0 };
	socklen_t sl = sizeof(sa);
	pl_httpc *c = ((fake *)*state)->c;
	char url[64];
	pl_httpc_resp resp;
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	// Bound but not listening: the port stays ours and refuses.
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	getsockname(fd, (struct sockaddr *)&sa, &sl);
	snprintf(url, sizeof(url), "http://127.0.0.1:%u/", ntohs(sa.sin_port));

	pl_httpc_req req = { .url = url, .attempts = 2, .backoff_base_ms = 1 };
	assert_int_equal(pl_httpc_do(c, &req, &resp), PL_UNAVAILABLE);
	assert_int_equal(resp.attempts, 2); // transport errors are retried
	assert_int_equal(resp.status, 0);
	assert_null(resp.body);
	assert_true(resp.error[0] != '\0');
	pl_httpc_resp_fini(&resp);
	close(fd);
}

static void
test_headers_and_body(void **state)
{
	fake *f = *state;
	step s[] = { { .status = 200, .body = "ok" } };
	const char *const hdrs[] = { "X-Token: secret-abc",
		                     "Content-Type: application/json", NULL };
	const char body[] = "{\"a\":1,\"z\":\"\xc3\xa9\"}";
	static const char *methods[] = { "POST", "PUT", "PATCH", "DELETE" };
	pl_httpc_resp resp;

	script(f, s, 1);
	for (size_t i = 0; i < 4; i++) {
		pl_httpc_req req = { .method = methods[i],
			             .url = f->url,
			             .headers = hdrs,
			             .body = body,
			             .body_len = sizeof(body) - 1 };
		assert_int_equal(pl_httpc_do(f->c, &req, &resp), PL_OK);
		assert_int_equal(resp.status, 200);
		pl_httpc_resp_fini(&resp);
		pthread_mutex_lock(&f->mu);
		assert_string_equal(f->method, methods[i]);
		assert_string_equal(f->token, "secret-abc");
		assert_string_equal(f->ctype, "application/json");
		assert_string_equal(f->expect, "");
		assert_int_equal(f->body_len, sizeof(body) - 1);
		assert_memory_equal(f->body, body, sizeof(body) - 1);
		pthread_mutex_unlock(&f->mu);
	}

	// A body larger than curl's Expect threshold goes straight out.
	size_t big_len = 40000;
	char *big = malloc(big_len);
	assert_non_null(big);
	for (size_t i = 0; i < big_len; i++) {
		big[i] = (char)('a' + i % 26);
	}
	pl_httpc_req req = { .method = "POST",
		             .url = f->url,
		             .body = big,
		             .body_len = big_len };
	assert_int_equal(pl_httpc_do(f->c, &req, &resp), PL_OK);
	pl_httpc_resp_fini(&resp);
	pthread_mutex_lock(&f->mu);
	assert_int_equal(f->body_len, big_len);
	assert_memory_equal(f->body, big, big_len);
	pthread_mutex_unlock(&f->mu);
	free(big);

	// DELETE without a body.
	pl_httpc_req del = { .method = "DELETE", .url = f->url };
	assert_int_equal(pl_httpc_do(f->c, &del, &resp), PL_OK);
	pl_httpc_resp_fini(&resp);
	pthread_mutex_lock(&f->mu);
	assert_string_equal(f->method, "DELETE");
	assert_int_equal(f->body_len, 0);
	pthread_mutex_unlock(&f->mu);
}

static void
test_bad_requests(void **state)
{
	fake *f = *state;
	const char *const crlf[] = { "X-A: b\r\nX-Injected: c", NULL };
	const char *const noc[] = { "no colon", NULL };
	pl_httpc_resp resp;
	pl_httpc_req req;
	int before = hits(f);

	req = (pl_httpc_req){ .url = NULL };
	assert_int_equal(pl_httpc_do(f->c, &req, &resp), PL_INVALID_ARGUMENT);
	pl_httpc_resp_fini(&resp);

	req = (pl_httpc_req){ .url = f->url, .headers = crlf };
	assert_int_equal(pl_httpc_do(f->c, &req, &resp), PL_INVALID_ARGUMENT);
	pl_httpc_resp_fini(&resp);

	req = (pl_httpc_req){ .url = f->url, .headers = noc };
	assert_int_equal(pl_httpc_do(f->c, &req, &resp), PL_INVALID_ARGUMENT);
	pl_httpc_resp_fini(&resp);

	req = (pl_httpc_req){ .url = f->url, .method = "GE T" };
	assert_int_equal(pl_httpc_do(f->c, &req, &resp), PL_INVALID_ARGUMENT);
	pl_httpc_resp_fini(&resp);

	req = (pl_httpc_req){ .url = f->url, .body_len = 3 };
	assert_int_equal(pl_httpc_do(f->c, &req, &resp), PL_INVALID_ARGUMENT);
	pl_httpc_resp_fini(&resp);

	req = (pl_httpc_req){ .url = f->url, .timeout_ms = -1 };
	assert_int_equal(pl_httpc_do(f->c, &req, &resp), PL_INVALID_ARGUMENT);
	pl_httpc_resp_fini(&resp);

	req = (pl_httpc_req){ .url = "ftp://127.0.0.1/x", .attempts = 3 };
	assert_int_equal(pl_httpc_do(f->c, &req, &resp), PL_INVALID_ARGUMENT);
	assert_int_equal(resp.attempts, 1);
	pl_httpc_resp_fini(&resp);

	req = (pl_httpc_req){ .url = "http://[::1" };
	assert_int_equal(pl_httpc_do(f->c, &req, &resp), PL_INVALID_ARGUMENT);
	pl_httpc_resp_fini(&resp);

	req = (pl_httpc_req){ .url = f->url };
	assert_int_equal(pl_httpc_do(NULL, &req, &resp), PL_INVALID_ARGUMENT);
	assert_int_equal(pl_httpc_do(f->c, NULL, &resp), PL_INVALID_ARGUMENT);
	assert_int_equal(pl_httpc_do(f->c, &req, NULL), PL_INVALID_ARGUMENT);
	pl_httpc_resp_fini(NULL);
	pl_httpc_close(NULL);
	assert_int_equal(hits(f), before);
}

static void
test_backoff(void **state)
{
	int64_t max_seen = 0;
	(void)state;

	for (int n = 1; n <= 8; n++) {
		int64_t cap = 100LL << (n - 1);
		if (cap > 3000) {
			cap = 3000;
		}
		for (int i = 0; i < 500; i++) {
			int64_t v = pl_httpc_backoff_ms(n, 100, 3000, -1);
			assert_true(v >= 0 && v <= cap);
			if (n == 1 && v > max_seen) {
				max_seen = v;
			}
		}
	}
	// Full jitter: the draws spread over the range.
	assert_true(max_seen > 50);

	// Retry-After wins when larger, capped at max.
	assert_int_equal(pl_httpc_backoff_ms(1, 10, 10000, 5000), 5000);
	assert_int_equal(pl_httpc_backoff_ms(1, 10, 10000, 50000), 10000);
	assert_true(pl_httpc_backoff_ms(1, 1000, 1000, 0) <= 1000);

	// No overflow for huge retry counts or bounds; odd input is clamped.
	for (int i = 0; i < 100; i++) {
		int64_t v = pl_httpc_backoff_ms(1000, 1000, 20000, -1);
		assert_true(v >= 0 && v <= 20000);
		v = pl_httpc_backoff_ms(62, INT64_MAX / 2, INT64_MAX, -1);
		assert_true(v >= 0);
	}
	assert_int_equal(pl_httpc_backoff_ms(0, 0, 0, -1), 0);
	assert_int_equal(pl_httpc_backoff_ms(-5, -1, -1, -1), 0);
}

static void
test_parse_retry_after(void **state)
{
	char date[64];
	time_t t = time(NULL) + 100;
	struct tm tm;
	(void)state;

	assert_int_equal(pl_httpc_parse_retry_after("3"), 3000);
	assert_int_equal(pl_httpc_parse_retry_after(" 3 "), 3000);
	assert_int_equal(pl_httpc_parse_retry_after("0"), 0);
	assert_int_equal(pl_httpc_parse_retry_after("Wed, 21 Oct 2015 "
	                                            "07:28:00 GMT"),
	                 0);
	gmtime_r(&t, &tm);
	strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
	int64_t v = pl_httpc_parse_retry_after(date);
	assert_true(v >= 95000 && v <= 100000);
	// Absurd delays are clamped, never overflowed.
	assert_true(pl_httpc_parse_retry_after("99999999999999999999999") > 0);

	assert_int_equal(pl_httpc_parse_retry_after("garbage"), -1);
	assert_int_equal(pl_httpc_parse_retry_after(""), -1);
	assert_int_equal(pl_httpc_parse_retry_after("   "), -1);
	assert_int_equal(pl_httpc_parse_retry_after(NULL), -1);
	assert_int_equal(pl_httpc_parse_retry_after("-5"), -1);
	assert_int_equal(pl_httpc_parse_retry_after("3abc"), -1);
	assert_int_equal(pl_httpc_parse_retry_after("1.5"), -1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ok),
		cmocka_unit_test(test_retry_after_429),
		cmocka_unit_test(test_retry_5xx),
		cmocka_unit_test(test_no_retry_400),
		cmocka_unit_test(test_deadline_stops_retries),
		cmocka_unit_test(test_timeout),
		cmocka_unit_test(test_too_large),
		cmocka_unit_test(test_too_large_chunked),
		cmocka_unit_test(test_connection_reused),
		cmocka_unit_test(test_refused),
		cmocka_unit_test(test_headers_and_body),
		cmocka_unit_test(test_bad_requests),
		cmocka_unit_test(test_backoff),
		cmocka_unit_test(test_parse_retry_after),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
