// hload (tests/lib) against pl_httpd, and against a scripted raw server for
// what pl_httpd does not send: chunked bodies, bodies up to the close,
// connections closed while idle, answers past the limits.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "hload.h"
#include "pl/httpd.h"

#define FIXED "the same answer every time"

static void
handler(const pl_http_req *req, pl_http_resp *resp, void *arg)
{
	const char *h = pl_http_req_header(req, "X-Test");

	(void)arg;
	if (strcmp(req->path, "/fixed") == 0 && h != NULL &&
	    strcmp(h, "yes") == 0)
		pl_http_resp_set(resp, 200, "text/plain", FIXED, strlen(FIXED));
	else if (strcmp(req->path, "/echo") == 0 &&
	         strcmp(req->method, "POST") == 0)
		pl_http_resp_set(resp, 201, "application/octet-stream",
		                 req->body, req->body_len);
	else if (strcmp(req->path, "/none") == 0)
		resp->status = 204;
	else
		pl_http_resp_set(resp, 404, "text/plain", "no", 2);
}

static void
test_httpd(void **state)
{
	pl_httpd *d;
	pl_httpd_config cfg = { .bind = "127.0.0.1", .threads = 2 };
	const char *hdrs[] = { "X-Test: yes", NULL };
	size_t big_len = 100 * 1000;
	char *big = malloc(big_len), *out;
	hload *h;
	long st;
	int port;

	(void)state;
	assert_non_null(big);
	for (size_t i = 0; i < big_len; i++)
		big[i] = (char)('a' + i % 26);
	assert_int_equal(pl_httpd_start(&d, &cfg, handler, NULL), 0);
	port = pl_httpd_port(d);
	assert_non_null(h = hload_open(port));

	for (int i = 0; i < 1000; i++) {
		assert_int_equal(
		        hload_do(h, "GET", "/fixed", hdrs, NULL, 0, &st, &out),
		        0);
		assert_int_equal(st, 200);
		assert_string_equal(out, FIXED);
		free(out);
	}
	assert_int_equal(
	        hload_do(h, "POST", "/echo", NULL, big, big_len, &st, &out), 0);
	assert_int_equal(st, 201);
	assert_memory_equal(out, big, big_len);
	assert_int_equal(out[big_len], '\0');
	free(out);
	// No body wanted, none sent, an empty one.
	assert_int_equal(hload_do(h, "GET", "/fixed", hdrs, NULL, 0, &st, NULL),
	                 0);
	assert_int_equal(st, 200);
	assert_int_equal(hload_do(h, "GET", "/none", NULL, NULL, 0, &st, &out),
	                 0);
	assert_int_equal(st, 204);
	assert_string_equal(out, "");
	free(out);
	assert_int_equal(hload_do(h, "POST", "/echo", NULL, "", 0, &st, &out),
	                 0);
	assert_int_equal(st, 201);
	assert_string_equal(out, "");
	free(out);

	hload_close(h);
	pl_httpd_stop(d);
	free(big);
	// Nothing listens there now.
	assert_null(hload_open(port));
}

// A raw server: answers each request (read up to its blank line; bodies
// are not sent to it) with the next scripted answer, closing the
// connection after those marked so, and accepting the next connection
// when the client closes its own.
typedef struct step {
	const char *answer;
	bool close;
} step;

typedef struct raw {
	int lfd;
	const step *steps;
	int n;
	atomic_int accepts;
	atomic_int served;
} raw;

static void *
raw_main(void *arg)
{
	raw *s = arg;
	char buf[4096];
	int fd = -1;

	for (int i = 0; i < s->n;) {
		size_t len = 0;
		if (fd < 0) {
			if ((fd = accept(s->lfd, NULL, NULL)) < 0)
				return NULL;
			s->accepts++;
		}
		buf[0] = '\0';
		while (strstr(buf, "\r\n\r\n") == NULL &&
		       len + 1 < sizeof(buf)) {
			ssize_t r =
			        recv(fd, buf + len, sizeof(buf) - 1 - len, 0);
			if (r <= 0)
				break;
			len += (size_t)r;
			buf[len] = '\0';
		}
		if (strstr(buf, "\r\n\r\n") == NULL) {
			close(fd); // closed by the client: the next one
			fd = -1;
			continue;
		}
		send(fd, s->steps[i].answer, strlen(s->steps[i].answer),
		     MSG_NOSIGNAL);
		s->served++;
		if (s->steps[i++].close) {
			close(fd);
			fd = -1;
		}
	}
	if (fd >= 0)
		close(fd);
	return NULL;
}

static int
raw_start(raw *s, pthread_t *t, const step *steps, int n)
{
	struct sockaddr_in sa = { 0 };
	socklen_t sl = sizeof(sa);

	memset(s, 0, sizeof(*s));
	s->steps = steps;
	s->n = n;
	s->lfd = socket(AF_INET, SOCK_STREAM, 0);
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(s->lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(s->lfd, 4), 0);
	getsockname(s->lfd, (struct sockaddr *)&sa, &sl);
	assert_int_equal(pthread_create(t, NULL, raw_main, s), 0);
	return ntohs(sa.sin_port);
}

static void
test_raw(void **state)
{
	static const step steps[] = {
		// Chunked, with an extension and trailers, then an answer on
		// the same connection.
		{ "HTTP/1.1 200 OK\r\ntransfer-encoding: Chunked\r\n\r\n"
		  "5;x=y\r\nhello\r\n1\r\n \r\nA\r\nchunked!!!\r\n0\r\n"
		  "X-Trailer: 1\r\n\r\n",
		  false },
		{ "HTTP/1.1 202 Accepted\r\ncontent-length: 2\r\n\r\nok",
		  false },
		// Closed after the answer, unannounced: the next request
		// meets a closed connection and is sent again on a new one.
		{ "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\none", true },
		{ "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\ntwo", false },
		// Announced, then a body up to the close (HTTP/1.0).
		{ "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: "
		  "5\r\n\r\nthree",
		  true },
		{ "HTTP/1.0 200 OK\r\n\r\nup to the close", true },
		// Past the limits.
		{ "HTTP/1.1 200 OK\r\nContent-Length: 16777217\r\n\r\n", true },
		{ "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
		  "1000001\r\n",
		  true },
		{ "HTTP/1.1 200 OK\r\nNo colon here\r\n\r\n", true },
		// Interim answer first.
		{ "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n"
		  "Content-Length: 4\r\n\r\nlast",
		  false },
	};
	const char *hdrs[] = { "X-A: 1", "X-B: 2", NULL };
	raw s;
	pthread_t t;
	hload *h;
	long st;
	char *out;

	(void)state;
	assert_non_null(h = hload_open(raw_start(
	                        &s, &t, steps,
	                        (int)(sizeof(steps) / sizeof(steps[0])))));
	assert_int_equal(hload_do(h, "GET", "/", hdrs, NULL, 0, &st, &out), 0);
	assert_int_equal(st, 200);
	assert_string_equal(out, "hello chunked!!!");
	free(out);
	assert_int_equal(hload_do(h, "POST", "/", NULL, "x", 1, &st, &out), 0);
	assert_int_equal(st, 202);
	assert_string_equal(out, "ok");
	free(out);
	assert_int_equal(s.accepts, 1);

	assert_int_equal(hload_do(h, "GET", "/", NULL, NULL, 0, &st, &out), 0);
	assert_string_equal(out, "one");
	free(out);
	assert_int_equal(hload_do(h, "GET", "/", NULL, NULL, 0, &st, &out), 0);
	assert_string_equal(out, "two");
	free(out);
	assert_int_equal(s.accepts, 2);

	assert_int_equal(hload_do(h, "GET", "/", NULL, NULL, 0, &st, &out), 0);
	assert_string_equal(out, "three");
	free(out);
	assert_int_equal(hload_do(h, "GET", "/", NULL, NULL, 0, &st, &out), 0);
	assert_string_equal(out, "up to the close");
	free(out);

	for (int i = 0; i < 3; i++) {
		assert_int_equal(
		        hload_do(h, "GET", "/", NULL, NULL, 0, &st, &out), -1);
		assert_null(out);
	}

	assert_int_equal(hload_do(h, "GET", "/", NULL, NULL, 0, &st, &out), 0);
	assert_int_equal(st, 200);
	assert_string_equal(out, "last");
	free(out);
	hload_close(h);
	pthread_join(t, NULL);
	close(s.lfd);
	assert_int_equal(s.served, (int)(sizeof(steps) / sizeof(steps[0])));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_httpd),
		cmocka_unit_test(test_raw),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
