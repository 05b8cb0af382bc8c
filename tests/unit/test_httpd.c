// pl_httpd on an ephemeral loopback port, driven by libcurl and raw sockets.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <setjmp.h>
#include <stddef.h>
#include <cmocka.h>

#include <curl/curl.h>

#include "pl/httpd.h"

#define MAX_BODY 1024

typedef struct server {
	pl_httpd *d;
	uint16_t port;
	atomic_int calls;
} server;

static void
handler(const pl_http_req *req, pl_http_resp *resp, void *arg)
{
	server *s = arg;
	char buf[512];

	atomic_fetch_add(&s->calls, 1);
	if (strcmp(req->path, "/info") == 0) {
		const char *q = pl_http_req_query(req, "a");
		const char *h = pl_http_req_header(req, "x-test");
		int n = snprintf(buf, sizeof(buf),
		                 "method=%s path=%s q=%s h=%s ip=%s body=%s",
		                 req->method, req->path, q ? q : "-",
		                 h ? h : "-", req->remote_ip,
		                 req->body ? "yes" : "no");
		pl_http_resp_set(resp, 200, "text/plain", buf, (size_t)n);
	} else if (strcmp(req->path, "/echo") == 0) {
		// The method, a colon, then the body byte for byte.
		size_t ml = strlen(req->method);
		resp->body = malloc(ml + 1 + req->body_len);
		assert_non_null(resp->body);
		memcpy(resp->body, req->method, ml);
		resp->body[ml] = ':';
		if (req->body_len > 0) {
			assert_int_equal(req->body[req->body_len], '\0');
			memcpy(resp->body + ml + 1, req->body, req->body_len);
		}
		resp->body_len = ml + 1 + req->body_len;
	} else if (strcmp(req->path, "/headers") == 0) {
		pl_http_resp_header(resp, "X-One", "1");
		pl_http_resp_header(resp, "X-Two", "two");
		pl_http_resp_set(resp, 201, "application/json", "{}", 2);
	} else if (strcmp(req->path, "/badstatus") == 0) {
		resp->status = 42;
	} else if (strcmp(req->path, "/badheader") == 0) {
		pl_http_resp_header(resp, "X-Bad", "a\r\nInjected: yes");
		pl_http_resp_set(resp, 200, NULL, "ok", 2);
	} else if (strcmp(req->path, "/slow") == 0) {
		struct timespec ts = { 0, 20 * 1000 * 1000 };
		nanosleep(&ts, NULL);
		pl_http_resp_set(resp, 200, "text/plain", "slow", 4);
	} else if (strcmp(req->path, "/empty") == 0) {
		// Nothing set: 200 with an empty body.
	} else if (strcmp(req->path, "/nodefer") == 0) {
		// Not a deferrable server: nothing moves, answered now.
		pl_http_resp_header(resp, "X-Kept", "1");
		assert_null(pl_http_defer(req, resp));
		assert_int_equal(resp->n_headers, 1);
		pl_http_resp_set(resp, 200, "text/plain", "now", 3);
	} else {
		pl_http_resp_set(resp, 404, "text/plain", "not found", 9);
	}
}

static int
setup(void **state)
{
	server *s = calloc(1, sizeof(*s));
	pl_httpd_config cfg = {
		.bind = "127.0.0.1",
		.port = 0,
		.threads = 4,
		.max_body = MAX_BODY,
		.timeout_s = 5,
	};

	if (s == NULL || pl_httpd_start(&s->d, &cfg, handler, s) != 0) {
		free(s);
		return -1;
	}
	s->port = pl_httpd_port(s->d);
	if (s->port == 0) {
		pl_httpd_stop(s->d);
		free(s);
		return -1;
	}
	*state = s;
	return 0;
}

static int
teardown(void **state)
{
	server *s = *state;

	pl_httpd_stop(s->d);
	free(s);
	return 0;
}

// A growable buffer for curl's callbacks.
typedef struct buf {
	char *p;
	size_t len;
} buf;

static size_t
buf_write(char *data, size_t size, size_t nmemb, void *arg)
{
	buf *b = arg;
	size_t n = size * nmemb;
	char *np = realloc(b->p, b->len + n + 1);

	if (np == NULL) {
		return 0;
	}
	b->p = np;
	memcpy(b->p + b->len, data, n);
	b->len += n;
	b->p[b->len] = '\0';
	return n;
}

typedef struct result {
	long status;
	buf body;
	buf headers;
	CURLcode cc;
} result;

static void
result_fini(result *r)
{
	free(r->body.p);
	free(r->headers.p);
}

static void
fetch(CURL *h, uint16_t port, const char *method, const char *target,
      const char *body, size_t len, const char *header, result *r)
{
	char url[256];
	struct curl_slist *hl = NULL;

	memset(r, 0, sizeof(*r));
	snprintf(url, sizeof(url), "http://127.0.0.1:%u%s", port, target);
	curl_easy_reset(h);
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 5000L);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, buf_write);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &r->body);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, buf_write);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, &r->headers);
	if (header != NULL) {
		hl = curl_slist_append(hl, header);
		curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl);
	}
	if (strcmp(method, "HEAD") == 0) {
		curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
	} else if (body != NULL) {
		curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)len);
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
	} else if (strcmp(method, "GET") != 0) {
		curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
	}
	r->cc = curl_easy_perform(h);
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r->status);
	curl_slist_free_all(hl);
}

static void
fetch1(uint16_t port, const char *method, const char *target, const char *body,
       size_t len, const char *header, result *r)
{
	CURL *h = curl_easy_init();

	assert_non_null(h);
	fetch(h, port, method, target, body, len, header, r);
	curl_easy_cleanup(h);
}

static int
raw_connect(uint16_t port)
{
	struct sockaddr_in sa = { 0 };
	struct timeval tv = { 5, 0 };
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	assert_true(fd >= 0);
	sa.sin_family = AF_INET;
	sa.sin_port = htons(port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	return fd;
}

// Sends everything; false when the peer stopped reading.
static bool
raw_send(int fd, const void *p, size_t n)
{
	const char *c = p;

	while (n > 0) {
		ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
		if (w <= 0) {
			return false;
		}
		c += w;
		n -= (size_t)w;
	}
	return true;
}

// Reads until the status line and headers are in, or the peer closes.
// Returns the bytes read (0 when closed without a word).
static size_t
raw_read_head(int fd, char *out, size_t size)
{
	size_t len = 0;

	while (len + 1 < size) {
		ssize_t r = recv(fd, out + len, size - 1 - len, 0);
		if (r <= 0) {
			break;
		}
		len += (size_t)r;
		out[len] = '\0';
		if (strstr(out, "\r\n\r\n") != NULL) {
			break;
		}
	}
	out[len] = '\0';
	return len;
}

static void
test_get_query_headers(void **state)
{
	server *s = *state;
	result r;

	fetch1(s->port, "GET", "/info?a=hello%20world&b=2", NULL, 0,
	       "X-Test: yes", &r);
	assert_int_equal(r.cc, CURLE_OK);
	assert_int_equal(r.status, 200);
	assert_string_equal(
	        r.body.p,
	        "method=GET path=/info q=hello world h=yes ip=127.0.0.1 "
	        "body=no");
	assert_non_null(strcasestr(r.headers.p, "content-type: text/plain"));
	result_fini(&r);

	// Absent query and header come back NULL.
	fetch1(s->port, "GET", "/info", NULL, 0, NULL, &r);
	assert_int_equal(r.status, 200);
	assert_non_null(strstr(r.body.p, "q=- h=-"));
	result_fini(&r);
}

static void
test_post_echo(void **state)
{
	server *s = *state;
	char body[] = "hello\0body";
	char big[MAX_BODY];
	result r;

	fetch1(s->port, "POST", "/echo", body, sizeof(body) - 1, NULL, &r);
	assert_int_equal(r.cc, CURLE_OK);
	assert_int_equal(r.status, 200);
	assert_int_equal(r.body.len, 5 + sizeof(body) - 1);
	assert_memory_equal(r.body.p, "POST:hello\0body", r.body.len);
	result_fini(&r);

	// Exactly at the limit is accepted.
	memset(big, 'b', sizeof(big));
	fetch1(s->port, "PUT", "/echo", big, sizeof(big), NULL, &r);
	assert_int_equal(r.status, 200);
	assert_int_equal(r.body.len, 4 + sizeof(big));
	assert_memory_equal(r.body.p + 4, big, sizeof(big));
	result_fini(&r);

	// No body: the handler sees NULL.
	fetch1(s->port, "DELETE", "/info", NULL, 0, NULL, &r);
	assert_int_equal(r.status, 200);
	assert_non_null(strstr(r.body.p, "method=DELETE"));
	assert_non_null(strstr(r.body.p, "body=no"));
	result_fini(&r);
}

static void
test_413_content_length(void **state)
{
	server *s = *state;
	char head[4096];
	int calls = atomic_load(&s->calls);
	int fd = raw_connect(s->port);
	char req[256];

	// The headers alone: the answer must come without the body.
	snprintf(req, sizeof(req),
	         "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n",
	         MAX_BODY + 1);
	assert_true(raw_send(fd, req, strlen(req)));
	assert_true(raw_read_head(fd, head, sizeof(head)) > 0);
	assert_true(strncmp(head, "HTTP/1.1 413", 12) == 0);
	close(fd);

	// The same through curl, body and all.
	char *big = malloc(MAX_BODY * 4);
	result r;
	memset(big, 'z', MAX_BODY * 4);
	fetch1(s->port, "POST", "/echo", big, MAX_BODY * 4,
	       "Expect: 100-continue", &r);
	assert_int_equal(r.status, 413);
	result_fini(&r);
	free(big);
	assert_int_equal(atomic_load(&s->calls), calls);
}

static void
test_413_chunked(void **state)
{
	server *s = *state;
	int calls = atomic_load(&s->calls);
	char chunk[512 + 16];
	char head[4096];
	int fd = raw_connect(s->port);
	const char *req = "POST /echo HTTP/1.1\r\nHost: x\r\n"
	                  "Transfer-Encoding: chunked\r\n\r\n";

	assert_true(raw_send(fd, req, strlen(req)));
	int n = snprintf(chunk, sizeof(chunk), "200\r\n");
	memset(chunk + n, 'c', 512);
	memcpy(chunk + n + 512, "\r\n", 2);
	for (int i = 0; i < 4; i++) { // 2 KiB against a 1 KiB limit
		assert_true(raw_send(fd, chunk, (size_t)n + 514));
	}
	assert_true(raw_send(fd, "0\r\n\r\n", 5));
	assert_true(raw_read_head(fd, head, sizeof(head)) > 0);
	assert_true(strncmp(head, "HTTP/1.1 413", 12) == 0);
	close(fd);

	// Chunked within the limit is served.
	fd = raw_connect(s->port);
	req = "POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
	      "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
	assert_true(raw_send(fd, req, strlen(req)));
	assert_true(raw_read_head(fd, head, sizeof(head)) > 0);
	assert_true(strncmp(head, "HTTP/1.1 200", 12) == 0);
	close(fd);
	assert_int_equal(atomic_load(&s->calls), calls + 1);
}

static void
test_endless_chunked_closed(void **state)
{
	server *s = *state;
	char *chunk;
	char head[4096];
	int fd = raw_connect(s->port);
	size_t csz = 64 * 1024;
	bool ok = true;
	const char *req = "POST /echo HTTP/1.1\r\nHost: x\r\n"
	                  "Transfer-Encoding: chunked\r\n\r\n";

	chunk = malloc(csz + 16);
	assert_non_null(chunk);
	int n = snprintf(chunk, 16, "%zx\r\n", csz);
	memset(chunk + n, 'e', csz);
	memcpy(chunk + n + csz, "\r\n", 2);
	assert_true(raw_send(fd, req, strlen(req)));
	// 4 MiB, far past the limit and what the server will drop for it.
	for (int i = 0; i < 64 && ok; i++) {
		ok = raw_send(fd, chunk, (size_t)n + csz + 2);
	}
	free(chunk);
	// Either the send failed or the server closes without an answer.
	if (ok) {
		size_t got = raw_read_head(fd, head, sizeof(head));
		assert_true(got == 0 || strncmp(head, "HTTP/1.1 413", 12) == 0);
	}
	close(fd);

	result r;
	fetch1(s->port, "GET", "/info", NULL, 0, NULL, &r);
	assert_int_equal(r.status, 200);
	result_fini(&r);
}

static void
test_keepalive(void **state)
{
	server *s = *state;
	CURL *h = curl_easy_init();
	long connects, total = 0;
	result r;

	assert_non_null(h);
	for (int i = 0; i < 20; i++) {
		fetch(h, s->port, i % 2 ? "POST" : "GET", "/echo", "x", 1, NULL,
		      &r);
		assert_int_equal(r.status, 200);
		curl_easy_getinfo(h, CURLINFO_NUM_CONNECTS, &connects);
		total += connects;
		result_fini(&r);
	}
	assert_int_equal(total, 1);
	curl_easy_cleanup(h);
}

static void
test_response_headers(void **state)
{
	server *s = *state;
	result r;

	fetch1(s->port, "GET", "/headers", NULL, 0, NULL, &r);
	assert_int_equal(r.status, 201);
	assert_string_equal(r.body.p, "{}");
	assert_non_null(strcasestr(r.headers.p, "x-one: 1\r\n"));
	assert_non_null(strcasestr(r.headers.p, "x-two: two\r\n"));
	assert_non_null(
	        strcasestr(r.headers.p, "content-type: application/json"));
	result_fini(&r);

	// A header MHD refuses is dropped, never injected.
	fetch1(s->port, "GET", "/badheader", NULL, 0, NULL, &r);
	assert_int_equal(r.status, 200);
	assert_null(strcasestr(r.headers.p, "injected"));
	result_fini(&r);

	fetch1(s->port, "GET", "/badstatus", NULL, 0, NULL, &r);
	assert_int_equal(r.status, 500);
	result_fini(&r);

	fetch1(s->port, "GET", "/empty", NULL, 0, NULL, &r);
	assert_int_equal(r.status, 200);
	assert_int_equal(r.body.len, 0);
	result_fini(&r);

	fetch1(s->port, "GET", "/nowhere", NULL, 0, NULL, &r);
	assert_int_equal(r.status, 404);
	result_fini(&r);
}

static void
test_head_options(void **state)
{
	server *s = *state;
	result r;

	fetch1(s->port, "HEAD", "/info", NULL, 0, NULL, &r);
	assert_int_equal(r.cc, CURLE_OK);
	assert_int_equal(r.status, 200);
	assert_int_equal(r.body.len, 0);
	result_fini(&r);

	fetch1(s->port, "OPTIONS", "/echo", NULL, 0, NULL, &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(r.body.p, "OPTIONS:");
	result_fini(&r);
}

static void *
concurrent_one(void *arg)
{
	server *s = arg;
	result r;
	long ok;

	fetch1(s->port, "GET", "/slow", NULL, 0, NULL, &r);
	ok = r.cc == CURLE_OK && r.status == 200 && r.body.p != NULL &&
	     strcmp(r.body.p, "slow") == 0;
	result_fini(&r);
	return (void *)ok;
}

static void
test_concurrent(void **state)
{
	server *s = *state;
	pthread_t t[100];
	int good = 0;

	for (int i = 0; i < 100; i++) {
		assert_int_equal(pthread_create(&t[i], NULL, concurrent_one, s),
		                 0);
	}
	for (int i = 0; i < 100; i++) {
		void *rv;
		pthread_join(t[i], &rv);
		good += rv != NULL;
	}
	assert_int_equal(good, 100);
}

// A GET whose one X-Big header has hsz bytes of value; *len: its size.
static char *
big_header_get(size_t hsz, size_t *len)
{
	char *req = malloc(hsz + 64);
	int n;

	assert_non_null(req);
	n = snprintf(req, 64, "GET /info HTTP/1.1\r\nHost: x\r\nX-Big: ");
	memset(req + n, 'h', hsz);
	memcpy(req + n + hsz, "\r\n\r\n", 4);
	*len = (size_t)n + hsz + 4;
	return req;
}

static void
test_odd_requests(void **state)
{
	server *s = *state;
	char head[4096];
	char *huge;
	size_t len;
	int fd;
	int calls = atomic_load(&s->calls);

	// HTTP/1.1 without Host.
	fd = raw_connect(s->port);
	assert_true(raw_send(fd, "GET /info HTTP/1.1\r\n\r\n", 22));
	assert_true(raw_read_head(fd, head, sizeof(head)) > 0);
	assert_true(strncmp(head, "HTTP/1.1 200", 12) == 0);
	close(fd);
	calls = atomic_load(&s->calls);

	// A 24 KiB header is taken (httpd.c: CONN_MEMORY_LIMIT).
	huge = big_header_get(24 * 1024, &len);
	fd = raw_connect(s->port);
	assert_true(raw_send(fd, huge, len));
	assert_true(raw_read_head(fd, head, sizeof(head)) > 0);
	assert_true(strncmp(head, "HTTP/1.1 200", 12) == 0);
	close(fd);
	free(huge);
	calls = atomic_load(&s->calls);

	// 100 KiB of headers.
	huge = big_header_get(100 * 1024, &len);
	fd = raw_connect(s->port);
	if (raw_send(fd, huge, len)) {
		size_t got = raw_read_head(fd, head, sizeof(head));
		assert_true(got == 0 || strncmp(head, "HTTP/1.1 4", 10) == 0);
	}
	close(fd);
	free(huge);

	// Garbage.
	fd = raw_connect(s->port);
	raw_send(fd, "\x01\x02\xff nonsense \r\n\r\n", 17);
	size_t got = raw_read_head(fd, head, sizeof(head));
	assert_true(got == 0 || strncmp(head, "HTTP/1.1 4", 10) == 0);
	close(fd);

	// A client that leaves mid-request.
	fd = raw_connect(s->port);
	const char *part = "POST /echo HTTP/1.1\r\nHost: x\r\n"
	                   "Content-Length: 100\r\n\r\nabc";
	raw_send(fd, part, strlen(part));
	close(fd);

	assert_int_equal(atomic_load(&s->calls), calls);
	result r;
	fetch1(s->port, "GET", "/info", NULL, 0, NULL, &r);
	assert_int_equal(r.status, 200);
	result_fini(&r);
}

static void
noop_handler(const pl_http_req *req, pl_http_resp *resp, void *arg)
{
	(void)req;
	(void)resp;
	(void)arg;
}

static void
test_start_stop(void **state)
{
	pl_httpd_config cfg = { .bind = "127.0.0.1" };
	pl_httpd *d;
	(void)state;

	// Stop while idle.
	assert_int_equal(pl_httpd_start(&d, &cfg, noop_handler, NULL), 0);
	assert_true(pl_httpd_port(d) != 0);
	pl_httpd_stop(d);

	// Stop with an idle keep-alive connection open.
	assert_int_equal(pl_httpd_start(&d, &cfg, noop_handler, NULL), 0);
	int fd = raw_connect(pl_httpd_port(d));
	assert_true(raw_send(fd, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 27));
	char head[1024];
	assert_true(raw_read_head(fd, head, sizeof(head)) > 0);
	assert_true(strncmp(head, "HTTP/1.1 200", 12) == 0);
	pl_httpd_stop(d);
	close(fd);

	// IPv6 loopback, when the machine has it.
	pl_httpd_config cfg6 = { .bind = "::1", .threads = 1 };
	if (pl_httpd_start(&d, &cfg6, noop_handler, NULL) == 0) {
		assert_true(pl_httpd_port(d) != 0);
		pl_httpd_stop(d);
	}

	// Bad configurations are refused, not crashed on.
	pl_httpd_config bad = { .bind = "not-an-address" };
	d = (pl_httpd *)1;
	assert_int_equal(pl_httpd_start(&d, &bad, noop_handler, NULL), -1);
	assert_null(d);
	assert_int_equal(pl_httpd_start(&d, &cfg, NULL, NULL), -1);
	pl_httpd_config neg = { .bind = "127.0.0.1", .threads = -1 };
	assert_int_equal(pl_httpd_start(&d, &neg, noop_handler, NULL), -1);
	assert_int_equal(pl_httpd_port(NULL), 0);
	pl_httpd_stop(NULL);

	// A port in use.
	assert_int_equal(pl_httpd_start(&d, &cfg, noop_handler, NULL), 0);
	pl_httpd_config same = { .bind = "127.0.0.1",
		                 .port = pl_httpd_port(d) };
	pl_httpd *d2;
	assert_int_equal(pl_httpd_start(&d2, &same, noop_handler, NULL), -1);
	pl_httpd_stop(d);
}

static void
resp_free(pl_http_resp *r)
{
	free(r->body);
	for (int i = 0; i < r->n_headers; i++) {
		free(r->headers[i][0]);
		free(r->headers[i][1]);
	}
}

static void
test_resp_helpers(void **state)
{
	pl_http_resp r = { 0 };
	(void)state;

	pl_http_resp_set(&r, 202, "text/plain", "abc", 3);
	assert_int_equal(r.status, 202);
	assert_int_equal(r.body_len, 3);
	assert_memory_equal(r.body, "abc", 3);
	assert_int_equal(r.n_headers, 1);
	assert_string_equal(r.headers[0][0], "Content-Type");

	// Setting again replaces body and content type.
	pl_http_resp_set(&r, 200, "application/json", "{}", 2);
	assert_int_equal(r.n_headers, 1);
	assert_string_equal(r.headers[0][1], "application/json");
	assert_memory_equal(r.body, "{}", 2);
	pl_http_resp_set(&r, 204, NULL, NULL, 0);
	assert_null(r.body);
	assert_int_equal(r.body_len, 0);

	for (int i = 0; i < PL_HTTP_MAX_HEADERS + 4; i++) {
		pl_http_resp_header(&r, "X-N", "v");
	}
	assert_int_equal(r.n_headers, PL_HTTP_MAX_HEADERS);
	pl_http_resp_header(&r, NULL, "v");
	pl_http_resp_header(NULL, "X", "v");
	pl_http_resp_set(NULL, 200, NULL, NULL, 0);
	resp_free(&r);

	assert_null(pl_http_req_header(NULL, "x"));
	pl_http_req none = { 0 };
	assert_null(pl_http_req_query(&none, "x"));
}

// Deferred answers: a server of ONE thread answers a request whose
// answer another thread finishes later, and serves others meanwhile.
typedef struct dserver {
	pl_httpd *d;
	uint16_t port;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	pl_http_deferred *parked; // /later, waiting for release
	bool release;
} dserver;

static void
dhandler(const pl_http_req *req, pl_http_resp *resp, void *arg)
{
	dserver *s = arg;
	pl_http_deferred *p;

	pl_http_resp_header(resp, "X-Before", "kept");
	if (strcmp(req->path, "/later") == 0) {
		p = pl_http_defer(req, resp);
		assert_non_null(p);
		assert_null(pl_http_defer(req, resp)); // once only
		assert_int_equal(resp->n_headers, 0);  // moved out
		pthread_mutex_lock(&s->mu);
		s->parked = p;
		pthread_cond_broadcast(&s->cv);
		pthread_mutex_unlock(&s->mu);
	} else if (strcmp(req->path, "/now") == 0) {
		// Finished before the handler returns: sent when it does.
		p = pl_http_defer(req, resp);
		assert_non_null(p);
		pl_http_resp_set(pl_http_deferred_resp(p), 202, "text/plain",
		                 "now", 3);
		pl_http_finish(p);
	} else {
		pl_http_resp_set(resp, 200, "text/plain", "plain", 5);
	}
}

static void *
finisher(void *arg)
{
	dserver *s = arg;
	pl_http_deferred *p;

	pthread_mutex_lock(&s->mu);
	while (s->parked == NULL || !s->release)
		pthread_cond_wait(&s->cv, &s->mu);
	p = s->parked;
	s->parked = NULL;
	pthread_mutex_unlock(&s->mu);
	pl_http_resp_set(pl_http_deferred_resp(p), 200, "text/plain", "later",
	                 5);
	pl_http_finish(p);
	return NULL;
}

typedef struct dfetch {
	pthread_t thr;
	uint16_t port;
	const char *path;
	result r;
} dfetch;

static void *
dfetch_main(void *arg)
{
	dfetch *f = arg;

	fetch1(f->port, "GET", f->path, NULL, 0, NULL, &f->r);
	return NULL;
}

static void
test_deferred(void **state)
{
	dserver s = { 0 };
	pl_httpd_config cfg = {
		.bind = "127.0.0.1",
		.threads = 1,
		.timeout_s = 5,
		.deferrable = true,
	};
	pthread_t fin;
	dfetch later = { 0 };
	result r;

	(void)state;
	pthread_mutex_init(&s.mu, NULL);
	pthread_cond_init(&s.cv, NULL);
	assert_int_equal(pl_httpd_start(&s.d, &cfg, dhandler, &s), 0);
	s.port = later.port = pl_httpd_port(s.d);
	later.path = "/later";
	assert_int_equal(pthread_create(&fin, NULL, finisher, &s), 0);
	assert_int_equal(pthread_create(&later.thr, NULL, dfetch_main, &later),
	                 0);
	pthread_mutex_lock(&s.mu);
	while (s.parked == NULL)
		pthread_cond_wait(&s.cv, &s.mu);
	pthread_mutex_unlock(&s.mu);
	// /later waits; the one thread serves the others meanwhile.
	fetch1(s.port, "GET", "/plain", NULL, 0, NULL, &r);
	assert_int_equal(r.cc, CURLE_OK);
	assert_int_equal(r.status, 200);
	assert_string_equal(r.body.p, "plain");
	result_fini(&r);
	fetch1(s.port, "GET", "/now", NULL, 0, NULL, &r);
	assert_int_equal(r.status, 202);
	assert_string_equal(r.body.p, "now");
	assert_non_null(strstr(r.headers.p, "X-Before: kept"));
	result_fini(&r);
	pthread_mutex_lock(&s.mu);
	s.release = true;
	pthread_cond_broadcast(&s.cv);
	pthread_mutex_unlock(&s.mu);
	pthread_join(fin, NULL);
	pthread_join(later.thr, NULL);
	assert_int_equal(later.r.cc, CURLE_OK);
	assert_int_equal(later.r.status, 200);
	assert_string_equal(later.r.body.p, "later");
	assert_non_null(strstr(later.r.headers.p, "X-Before: kept"));
	result_fini(&later.r);
	pl_httpd_stop(s.d);
	pthread_cond_destroy(&s.cv);
	pthread_mutex_destroy(&s.mu);
}

static void
test_not_deferrable(void **state)
{
	server *s = *state;
	result r;

	fetch1(s->port, "GET", "/nodefer", NULL, 0, NULL, &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(r.body.p, "now");
	assert_non_null(strstr(r.headers.p, "X-Kept: 1"));
	result_fini(&r);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_get_query_headers),
		cmocka_unit_test(test_post_echo),
		cmocka_unit_test(test_413_content_length),
		cmocka_unit_test(test_413_chunked),
		cmocka_unit_test(test_endless_chunked_closed),
		cmocka_unit_test(test_keepalive),
		cmocka_unit_test(test_response_headers),
		cmocka_unit_test(test_head_options),
		cmocka_unit_test(test_concurrent),
		cmocka_unit_test(test_odd_requests),
		cmocka_unit_test(test_start_stop),
		cmocka_unit_test(test_resp_helpers),
		cmocka_unit_test(test_deferred),
		cmocka_unit_test(test_not_deferrable),
	};
	int rv;

	curl_global_init(CURL_GLOBAL_ALL);
	rv = cmocka_run_group_tests(tests, setup, teardown);
	curl_global_cleanup();
	return rv;
}
