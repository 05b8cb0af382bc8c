// The HTTP client over libcurl: one easy handle per pl_httpc so that
// connections stay alive between calls, retries with capped exponential
// back-off and full jitter. Headers, bodies and URLs are never logged: they
// carry tokens.
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <curl/curl.h>
#include <sodium.h>

#include "pl/httpc.h"
#include "pl/log.h"
#include "pl/status.h"

#define DEFAULT_CONNECT_TIMEOUT_MS 2000
#define DEFAULT_TIMEOUT_MS         20000
#define DEFAULT_MAX_RESPONSE       (1024 * 1024)
#define DEFAULT_BACKOFF_BASE_MS    200
#define DEFAULT_BACKOFF_MAX_MS     10000
// Retry-After values are clamped here (a year) so milliseconds never overflow.
#define RETRY_AFTER_MAX_S (365LL * 24 * 3600)

struct pl_httpc {
	CURL *curl;
	char errbuf[CURL_ERROR_SIZE];
};

// What one attempt collects through libcurl's callbacks.
typedef struct sink {
	char *buf;
	size_t len;
	size_t cap;
	size_t max;
	bool too_large;
	int64_t retry_after_ms;
} sink;

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static bool global_ok;

static void
global_init(void)
{
	CURLcode cc = curl_global_init(CURL_GLOBAL_ALL);

	if (cc != CURLE_OK) {
		pl_error("could not initialise libcurl: %s",
		         curl_easy_strerror(cc));
		return;
	}
	if (sodium_init() < 0) {
		pl_error("could not initialise libsodium");
		return;
	}
	global_ok = true;
}

static int64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
sleep_ms(int64_t ms)
{
	struct timespec ts;

	if (ms <= 0) {
		return;
	}
	ts.tv_sec = ms / 1000;
	ts.tv_nsec = (ms % 1000) * 1000000;
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
	}
}

pl_httpc *
pl_httpc_open(void)
{
	pl_httpc *c;

	pthread_once(&global_once, global_init);
	if (!global_ok) {
		return NULL;
	}
	c = calloc(1, sizeof(*c));
	if (c == NULL) {
		return NULL;
	}
	c->curl = curl_easy_init();
	if (c->curl == NULL) {
		pl_error("could not open http client: curl_easy_init failed");
		free(c);
		return NULL;
	}
	return c;
}

void
pl_httpc_close(pl_httpc *c)
{
	if (c == NULL) {
		return;
	}
	curl_easy_cleanup(c->curl);
	free(c);
}

void
pl_httpc_resp_fini(pl_httpc_resp *resp)
{
	if (resp == NULL) {
		return;
	}
	free(resp->body);
	resp->body = NULL;
	resp->len = 0;
}

int64_t
pl_httpc_backoff_ms(int n, int64_t base, int64_t max, int64_t retry_after_ms)
{
	int64_t cap, wait;
	uint32_t bound;

	pthread_once(&global_once, global_init);
	if (n < 1) {
		n = 1;
	}
	if (max < 0) {
		max = 0;
	}
	if (base < 0) {
		base = 0;
	}
	cap = base < max ? base : max;
	for (int i = 1; i < n && cap < max; i++) {
		cap = cap > max / 2 ? max : cap * 2;
	}
	// randombytes_uniform(b) returns [0, b): b = cap + 1 includes cap.
	bound = cap >= UINT32_MAX ? UINT32_MAX : (uint32_t)cap + 1;
	wait = (int64_t)randombytes_uniform(bound);
	if (retry_after_ms > wait) {
		wait = retry_after_ms < max ? retry_after_ms : max;
	}
	return wait;
}

int64_t
pl_httpc_parse_retry_after(const char *v)
{
	const char *p, *end;
	char buf[128];
	size_t n;

	if (v == NULL) {
		return -1;
	}
	while (*v == ' ' || *v == '\t') {
		v++;
	}
	end = v + strlen(v);
	while (end > v && isspace((unsigned char)end[-1])) {
		end--;
	}
	n = (size_t)(end - v);
	if (n == 0 || n >= sizeof(buf)) {
		return -1;
	}
	for (p = v; p < end && isdigit((unsigned char)*p); p++) {
	}
	if (p == end) {
		int64_t secs = 0;
		for (p = v; p < end; p++) {
			secs = secs * 10 + (*p - '0');
			if (secs > RETRY_AFTER_MAX_S) {
				secs = RETRY_AFTER_MAX_S;
				break;
			}
		}
		return secs * 1000;
	}
	// An HTTP date must start with a day name.
	if (!isalpha((unsigned char)*v)) {
		return -1;
	}
	memcpy(buf, v, n);
	buf[n] = '\0';
	time_t t = curl_getdate(buf, NULL);
	if (t == -1) {
		return -1;
	}
	int64_t delta = (int64_t)t - (int64_t)time(NULL);
	if (delta <= 0) {
		return 0;
	}
	if (delta > RETRY_AFTER_MAX_S) {
		delta = RETRY_AFTER_MAX_S;
	}
	return delta * 1000;
}

static size_t
on_write(char *data, size_t size, size_t nmemb, void *arg)
{
	sink *s = arg;
	size_t n = size * nmemb;

	if (n > s->max - s->len) {
		s->too_large = true;
		return 0; // aborts the transfer with CURLE_WRITE_ERROR
	}
	if (s->len + n + 1 > s->cap) {
		size_t cap = s->cap ? s->cap : 4096;
		while (cap < s->len + n + 1) {
			cap *= 2;
		}
		if (cap > s->max + 1) {
			cap = s->max + 1;
		}
		char *nb = realloc(s->buf, cap);
		if (nb == NULL) {
			return 0;
		}
		s->buf = nb;
		s->cap = cap;
	}
	memcpy(s->buf + s->len, data, n);
	s->len += n;
	s->buf[s->len] = '\0';
	return n;
}

static size_t
on_header(char *data, size_t size, size_t nmemb, void *arg)
{
	static const char name[] = "retry-after:";
	sink *s = arg;
	size_t n = size * nmemb;
	char v[128];
	size_t vlen;

	// A new status line (after 100 Continue, say) starts a new response.
	if (n >= 5 && memcmp(data, "HTTP/", 5) == 0) {
		s->retry_after_ms = -1;
		return n;
	}
	if (n <= sizeof(name) - 1 ||
	    strncasecmp(data, name, sizeof(name) - 1) != 0) {
		return n;
	}
	vlen = n - (sizeof(name) - 1);
	if (vlen >= sizeof(v)) {
		return n; // no valid Retry-After is this long
	}
	memcpy(v, data + sizeof(name) - 1, vlen);
	v[vlen] = '\0';
	s->retry_after_ms = pl_httpc_parse_retry_after(v);
	return n;
}

// A method is an HTTP token: no spaces, no CR/LF.
static bool
method_ok(const char *m)
{
	if (*m == '\0' || strlen(m) > 32) {
		return false;
	}
	for (; *m != '\0'; m++) {
		if (!isalnum((unsigned char)*m) && *m != '-' && *m != '_') {
			return false;
		}
	}
	return true;
}

static bool
header_ok(const char *h)
{
	return strchr(h, ':') != NULL && strpbrk(h, "\r\n") == NULL;
}

static bool
has_header(const char *const *headers, const char *name)
{
	size_t n = strlen(name);

	for (; headers != NULL && *headers != NULL; headers++) {
		if (strncasecmp(*headers, name, n) == 0 &&
		    (*headers)[n] == ':') {
			return true;
		}
	}
	return false;
}

// Builds the header list; false on out of memory.
static bool
build_headers(const pl_httpc_req *req, struct curl_slist **out)
{
	struct curl_slist *l = NULL, *t;

	for (const char *const *h = req->headers; h != NULL && *h != NULL;
	     h++) {
		t = curl_slist_append(l, *h);
		if (t == NULL) {
			goto out_free;
		}
		l = t;
	}
	// libcurl waits up to a second for "100 Continue" on large bodies.
	if (!has_header(req->headers, "Expect")) {
		t = curl_slist_append(l, "Expect:");
		if (t == NULL) {
			goto out_free;
		}
		l = t;
	}
	*out = l;
	return true;

out_free:
	curl_slist_free_all(l);
	return false;
}

static int
status_of(CURLcode cc, const sink *s)
{
	switch (cc) {
	case CURLE_OK:
		return PL_OK;
	case CURLE_OPERATION_TIMEDOUT:
		return PL_DEADLINE_EXCEEDED;
	case CURLE_FILESIZE_EXCEEDED:
		return PL_RESOURCE_EXHAUSTED;
	case CURLE_WRITE_ERROR:
		return s->too_large ? PL_RESOURCE_EXHAUSTED : PL_UNAVAILABLE;
	case CURLE_URL_MALFORMAT:
	case CURLE_UNSUPPORTED_PROTOCOL:
	case CURLE_BAD_FUNCTION_ARGUMENT:
		return PL_INVALID_ARGUMENT;
	default:
		return PL_UNAVAILABLE;
	}
}

// One attempt; fills resp's status, body and retry_after_ms.
static int
attempt(pl_httpc *c, const pl_httpc_req *req, const char *method,
        struct curl_slist *hdrs, int64_t connect_ms, int64_t timeout_ms,
        size_t max_response, pl_httpc_resp *resp)
{
	CURL *h = c->curl;
	sink s = { .max = max_response, .retry_after_ms = -1 };
	CURLcode cc;
	int rv;
	long code = 0;

	// Reset keeps the connection cache: that is the point of reusing h.
	curl_easy_reset(h);
	c->errbuf[0] = '\0';
	if (connect_ms > timeout_ms) {
		connect_ms = timeout_ms;
	}
	cc = curl_easy_setopt(h, CURLOPT_URL, req->url);
	if (cc == CURLE_OK) {
		curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
		curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
		curl_easy_setopt(h, CURLOPT_ERRORBUFFER, c->errbuf);
		curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS,
		                 (long)connect_ms);
		curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
		curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE,
		                 (curl_off_t)max_response);
		curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_write);
		curl_easy_setopt(h, CURLOPT_WRITEDATA, &s);
		curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
		curl_easy_setopt(h, CURLOPT_HEADERDATA, &s);
		curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
		if (strcmp(method, "GET") == 0 && req->body_len == 0) {
			curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
		} else if (strcmp(method, "HEAD") == 0) {
			curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
		} else {
			if (req->body_len > 0 || strcmp(method, "POST") == 0 ||
			    strcmp(method, "PUT") == 0 ||
			    strcmp(method, "PATCH") == 0) {
				curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE,
				                 (curl_off_t)req->body_len);
				curl_easy_setopt(h, CURLOPT_POSTFIELDS,
				                 req->body_len ? req->body
				                               : "");
			}
			curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
		}
		cc = curl_easy_perform(h);
	}
	rv = status_of(cc, &s);
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
	resp->status = code;
	resp->retry_after_ms = s.retry_after_ms;
	if (rv == PL_OK) {
		resp->body = s.buf;
		resp->len = s.len;
		resp->error[0] = '\0';
	} else {
		free(s.buf);
		snprintf(resp->error, sizeof(resp->error), "%s",
		         c->errbuf[0] ? c->errbuf : curl_easy_strerror(cc));
	}
	return rv;
}

static bool
is_retryable(int rv, long status)
{
	if (rv == PL_OK) {
		return status == 429 || (status >= 500 && status <= 599);
	}
	return rv == PL_UNAVAILABLE || rv == PL_DEADLINE_EXCEEDED;
}

int
pl_httpc_do(pl_httpc *c, const pl_httpc_req *req, pl_httpc_resp *resp)
{
	struct curl_slist *hdrs = NULL;
	const char *method;
	int64_t connect_ms, timeout_ms, base, max, start;
	size_t max_response;
	int attempts, rv;

	if (resp == NULL) {
		return PL_INVALID_ARGUMENT;
	}
	memset(resp, 0, sizeof(*resp));
	resp->retry_after_ms = -1;
	if (c == NULL || req == NULL || req->url == NULL ||
	    (req->body == NULL && req->body_len > 0)) {
		snprintf(resp->error, sizeof(resp->error), "bad request");
		return PL_INVALID_ARGUMENT;
	}
	method = req->method ? req->method : "GET";
	if (!method_ok(method)) {
		snprintf(resp->error, sizeof(resp->error), "bad method");
		return PL_INVALID_ARGUMENT;
	}
	for (const char *const *h = req->headers; h != NULL && *h != NULL;
	     h++) {
		if (!header_ok(*h)) {
			snprintf(resp->error, sizeof(resp->error),
			         "bad header");
			return PL_INVALID_ARGUMENT;
		}
	}
	if (req->connect_timeout_ms < 0 || req->timeout_ms < 0 ||
	    req->backoff_base_ms < 0 || req->backoff_max_ms < 0 ||
	    req->deadline_ms < 0 || req->attempts < 0) {
		snprintf(resp->error, sizeof(resp->error),
		         "negative timeout or count");
		return PL_INVALID_ARGUMENT;
	}
	if (!build_headers(req, &hdrs)) {
		snprintf(resp->error, sizeof(resp->error), "out of memory");
		return PL_RESOURCE_EXHAUSTED;
	}

	connect_ms = req->connect_timeout_ms ? req->connect_timeout_ms
	                                     : DEFAULT_CONNECT_TIMEOUT_MS;
	timeout_ms = req->timeout_ms ? req->timeout_ms : DEFAULT_TIMEOUT_MS;
	max_response =
	        req->max_response ? req->max_response : DEFAULT_MAX_RESPONSE;
	attempts = req->attempts > 1 ? req->attempts : 1;
	base = req->backoff_base_ms ? req->backoff_base_ms
	                            : DEFAULT_BACKOFF_BASE_MS;
	max = req->backoff_max_ms ? req->backoff_max_ms
	                          : DEFAULT_BACKOFF_MAX_MS;
	if (connect_ms > LONG_MAX || timeout_ms > LONG_MAX) {
		connect_ms = timeout_ms = LONG_MAX;
	}
	start = now_ms();

	for (int n = 1;; n++) {
		int64_t t = timeout_ms;

		if (req->deadline_ms > 0) {
			int64_t left = req->deadline_ms - (now_ms() - start);
			if (left <= 0) {
				rv = PL_DEADLINE_EXCEEDED;
				snprintf(resp->error, sizeof(resp->error),
				         "deadline exceeded");
				break;
			}
			if (left < t) {
				t = left;
			}
		}
		pl_httpc_resp_fini(resp);
		rv = attempt(c, req, method, hdrs, connect_ms, t, max_response,
		             resp);
		resp->attempts = n;
		if (rv != PL_OK) {
			// The status name only: curl's text may name the host.
			pl_debug("http %s attempt %d of %d failed: %s", method,
			         n, attempts, pl_status_name(rv));
		}
		if (n >= attempts || !is_retryable(rv, resp->status)) {
			break;
		}
		int64_t wait =
		        pl_httpc_backoff_ms(n, base, max, resp->retry_after_ms);
		if (req->deadline_ms > 0 &&
		    now_ms() - start + wait >= req->deadline_ms) {
			break; // the next attempt would start past the deadline
		}
		sleep_ms(wait);
	}
	curl_slist_free_all(hdrs);
	return rv;
}
