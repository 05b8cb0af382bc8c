// Outbound HTTP over libcurl: providers, LLM APIs, tenants' webhooks. One
// pl_httpc per worker keeps connections alive between calls. Retries with
// capped exponential back-off and full jitter on transport errors, 429 and
// 5xx, honouring Retry-After; responses larger than the limit are refused.
#ifndef PL_HTTPC_H
#define PL_HTTPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct pl_httpc pl_httpc;

pl_httpc *pl_httpc_open(void);
void pl_httpc_close(pl_httpc *c);

typedef struct pl_httpc_req {
	const char *method; // "POST"
	const char *url;
	const char *const *headers; // "Name: value", NULL-terminated; or NULL
	const char *body;
	size_t body_len;
	int64_t connect_timeout_ms; // 0: 2000
	int64_t timeout_ms;         // whole attempt; 0: 20000
	size_t max_response;        // 0: 1 MiB
	int attempts;               // 0 or 1: no retry
	int64_t backoff_base_ms;    // 0: 200
	int64_t backoff_max_ms;     // 0: 10000
	int64_t deadline_ms;        // total budget for all attempts; 0: none
} pl_httpc_req;

typedef struct pl_httpc_resp {
	long status; // HTTP status of the last attempt; 0 if none
	char *body;  // malloc'd, NUL-terminated; NULL when none
	size_t len;
	int attempts;           // attempts made
	int64_t retry_after_ms; // from the last response's Retry-After; -1 none
	char error[256];        // transport error text of the last attempt
} pl_httpc_resp;

// Performs the request. Returns PL_OK when a response arrived (whatever its
// HTTP status), PL_DEADLINE_EXCEEDED on timeout, PL_RESOURCE_EXHAUSTED when
// the response passed max_response, PL_UNAVAILABLE on other transport
// failures, PL_INVALID_ARGUMENT on a bad request. resp is filled in every
// case and must be released with pl_httpc_resp_fini.
int pl_httpc_do(pl_httpc *c, const pl_httpc_req *req, pl_httpc_resp *resp);
void pl_httpc_resp_fini(pl_httpc_resp *resp);

// The back-off before attempt n (1-based retry count): a random value in
// [0, min(max, base * 2^(n-1))], or retry_after_ms when larger (capped at
// max). Exposed for tests.
int64_t pl_httpc_backoff_ms(int n, int64_t base, int64_t max,
                            int64_t retry_after_ms);

// Parses Retry-After (delta seconds or an HTTP date) into milliseconds from
// now; -1 when unparseable.
int64_t pl_httpc_parse_retry_after(const char *v);

#endif
