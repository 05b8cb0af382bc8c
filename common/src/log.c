// JSON-lines logging. Each line is built in memory and written with one
// fwrite under a mutex, so lines from different threads never interleave.
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "pl/log.h"
#include "pl/utf8.h"

#define SVCMAX 64  // service name bytes kept
#define CTXMAX 128 // request/tenant id bytes kept

static pthread_mutex_t log_mtx = PTHREAD_MUTEX_INITIALIZER;
static FILE *log_out;                       // NULL = stderr; under log_mtx
static char log_svc[SVCMAX + 1] = "parley"; // under log_mtx
static atomic_int log_min = PL_LOG_INFO;

static _Thread_local char ctx_req[CTXMAX + 1];
static _Thread_local char ctx_tenant[CTXMAX + 1];

static const char *const level_names[] = { "debug", "info", "warn", "error" };

// A growable buffer that starts on the stack.
typedef struct sbuf {
	char *p;
	size_t len, cap;
	bool heap, oom;
} sbuf;

static void
sb_init(sbuf *b, char *stack, size_t cap)
{
	b->p = stack;
	b->len = 0;
	b->cap = cap;
	b->heap = false;
	b->oom = false;
}

static bool
sb_reserve(sbuf *b, size_t more)
{
	size_t ncap;
	char *np;

	if (b->oom)
		return false;
	if (b->cap - b->len >= more)
		return true;
	if (more > SIZE_MAX / 2 - b->len) {
		b->oom = true;
		return false;
	}
	ncap = b->cap * 2;
	while (ncap - b->len < more)
		ncap *= 2;
	if (b->heap) {
		np = realloc(b->p, ncap);
	} else {
		np = malloc(ncap);
		if (np != NULL)
			memcpy(np, b->p, b->len);
	}
	if (np == NULL) {
		b->oom = true;
		return false;
	}
	b->p = np;
	b->cap = ncap;
	b->heap = true;
	return true;
}

static void
sb_put(sbuf *b, const char *s, size_t n)
{
	if (!sb_reserve(b, n))
		return;
	memcpy(b->p + b->len, s, n);
	b->len += n;
}

static void
sb_puts(sbuf *b, const char *s)
{
	sb_put(b, s, strlen(s));
}

static void
sb_free(sbuf *b)
{
	if (b->heap)
		free(b->p);
}

// Appends s as a JSON string, quotes included. Bytes that are not valid
// UTF-8 become U+FFFD.
static void
sb_json_str(sbuf *b, const char *str, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *s = (const unsigned char *)str;
	size_t i = 0;

	sb_put(b, "\"", 1);
	while (i < n) {
		size_t run = i;

		// Copy plain ASCII in one go.
		while (run < n && s[run] >= 0x20 && s[run] < 0x80 &&
		       s[run] != '"' && s[run] != '\\')
			run++;
		if (run > i) {
			sb_put(b, str + i, run - i);
			i = run;
			continue;
		}
		unsigned char c = s[i];
		if (c >= 0x80) {
			size_t len = pl_utf8_seq(str + i, n - i);
			if (len == 0) {
				sb_put(b, "\xef\xbf\xbd", 3);
				i++;
			} else {
				sb_put(b, str + i, len);
				i += len;
			}
			continue;
		}
		switch (c) {
		case '"':
			sb_put(b, "\\\"", 2);
			break;
		case '\\':
			sb_put(b, "\\\\", 2);
			break;
		case '\n':
			sb_put(b, "\\n", 2);
			break;
		case '\r':
			sb_put(b, "\\r", 2);
			break;
		case '\t':
			sb_put(b, "\\t", 2);
			break;
		case '\b':
			sb_put(b, "\\b", 2);
			break;
		case '\f':
			sb_put(b, "\\f", 2);
			break;
		default: {
			char u[6] = { '\\', 'u',         '0',
				      '0',  hex[c >> 4], hex[c & 0xf] };
			sb_put(b, u, sizeof(u));
			break;
		}
		}
		i++;
	}
	sb_put(b, "\"", 1);
}

static void
copy_trunc(char *dst, size_t cap, const char *src)
{
	size_t n = strlen(src);

	if (n >= cap)
		n = cap - 1;
	memcpy(dst, src, n);
	dst[n] = '\0';
}

void
pl_log_init(const char *service, pl_log_level min)
{
	if (min < PL_LOG_DEBUG)
		min = PL_LOG_DEBUG;
	if (min > PL_LOG_ERROR)
		min = PL_LOG_ERROR;
	pthread_mutex_lock(&log_mtx);
	copy_trunc(log_svc, sizeof(log_svc), service != NULL ? service : "");
	pthread_mutex_unlock(&log_mtx);
	atomic_store(&log_min, (int)min);
}

int
pl_log_level_parse(const char *s)
{
	if (s == NULL)
		return -1;
	for (int i = 0; i < 4; i++) {
		if (strcasecmp(s, level_names[i]) == 0)
			return i;
	}
	if (strcasecmp(s, "warning") == 0)
		return PL_LOG_WARN;
	return -1;
}

void
pl_log_set_stream(FILE *f)
{
	pthread_mutex_lock(&log_mtx);
	if (log_out != NULL)
		fflush(log_out);
	log_out = f;
	pthread_mutex_unlock(&log_mtx);
}

void
pl_log_ctx_set(const char *request_id, const char *tenant_id)
{
	copy_trunc(ctx_req, sizeof(ctx_req),
	           request_id != NULL ? request_id : "");
	copy_trunc(ctx_tenant, sizeof(ctx_tenant),
	           tenant_id != NULL ? tenant_id : "");
}

static void
put_ts(sbuf *b)
{
	struct timespec ts;
	struct tm tm;
	char buf[40];
	int n;

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	n = snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ",
	             tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
	             tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);
	if (n > 0 && (size_t)n < sizeof(buf))
		sb_put(b, buf, (size_t)n);
}

void
pl_logf(pl_log_level lvl, const char *fmt, ...)
{
	char msgstack[512], linestack[1024], svc[SVCMAX + 1];
	char *msg = msgstack;
	size_t msglen;
	va_list ap;
	int n;
	sbuf b;

	if (lvl < PL_LOG_DEBUG)
		lvl = PL_LOG_DEBUG;
	if (lvl > PL_LOG_ERROR)
		lvl = PL_LOG_ERROR;
	if ((int)lvl < atomic_load(&log_min))
		return;
	if (fmt == NULL)
		fmt = "";

	va_start(ap, fmt);
	n = vsnprintf(msgstack, sizeof(msgstack), fmt, ap);
	va_end(ap);
	if (n < 0) {
		msg = "(bad log format)";
		msglen = strlen(msg);
	} else if ((size_t)n >= sizeof(msgstack)) {
		msg = malloc((size_t)n + 1);
		if (msg == NULL) {
			// Keep what fitted rather than lose the line.
			msg = msgstack;
			msglen = sizeof(msgstack) - 1;
		} else {
			va_start(ap, fmt);
			vsnprintf(msg, (size_t)n + 1, fmt, ap);
			va_end(ap);
			msglen = (size_t)n;
		}
	} else {
		msglen = (size_t)n;
	}

	pthread_mutex_lock(&log_mtx);
	memcpy(svc, log_svc, sizeof(svc));
	pthread_mutex_unlock(&log_mtx);

	sb_init(&b, linestack, sizeof(linestack));
	sb_puts(&b, "{\"ts\":\"");
	put_ts(&b);
	sb_puts(&b, "\",\"level\":\"");
	sb_puts(&b, level_names[lvl]);
	sb_puts(&b, "\",\"service\":");
	sb_json_str(&b, svc, strlen(svc));
	if (ctx_req[0] != '\0') {
		sb_puts(&b, ",\"request_id\":");
		sb_json_str(&b, ctx_req, strlen(ctx_req));
	}
	if (ctx_tenant[0] != '\0') {
		sb_puts(&b, ",\"tenant_id\":");
		sb_json_str(&b, ctx_tenant, strlen(ctx_tenant));
	}
	sb_puts(&b, ",\"msg\":");
	sb_json_str(&b, msg, msglen);
	sb_puts(&b, "}\n");
	if (msg != msgstack && n >= 0)
		free(msg);

	if (!b.oom) {
		pthread_mutex_lock(&log_mtx);
		FILE *out = log_out != NULL ? log_out : stderr;
		fwrite(b.p, 1, b.len, out);
		fflush(out);
		pthread_mutex_unlock(&log_mtx);
	}
	sb_free(&b);
}
