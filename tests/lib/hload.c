#include "hload.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define HL_HEAD_MAX  (64 * 1024)
#define HL_BODY_MAX  (16 * 1024 * 1024)
#define HL_TIMEOUT_S 10

// hl_answer's outcomes besides 0.
#define HL_ERR   (-1)
#define HL_STALE (-2) // a reused connection closed before any byte came

struct hload {
	int port;
	int fd;      // -1: opened by the next request
	bool reused; // has answered a request, so the server may close it idle
	char *req;   // the request being sent, kept for the next one
	size_t req_cap;
	// Bytes received and not yet parsed: in[off..len). It holds a whole
	// header block, hence HL_HEAD_MAX; bodies pass through it.
	size_t off, len;
	char in[HL_HEAD_MAX];
};

// A body as it is read; with discard set only its length is kept (the
// caller does not want it).
typedef struct hl_body {
	char *p;
	size_t len, cap;
	bool discard;
} hl_body;

static void
hl_drop(hload *h)
{
	if (h->fd >= 0)
		close(h->fd);
	h->fd = -1;
	h->reused = false;
	h->off = h->len = 0;
}

static int
hl_connect(hload *h)
{
	struct sockaddr_in a = { 0 };
	struct timeval tv = { HL_TIMEOUT_S, 0 };
	int one = 1, fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -1;
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	a.sin_port = htons((uint16_t)h->port);
	// Without TCP_NODELAY a request written after the previous answer's
	// ACK is still pending waits for it (Nagle): 40 ms stalls.
	if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) != 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) != 0 ||
	    connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
		close(fd);
		return -1;
	}
	h->fd = fd;
	h->reused = false;
	h->off = h->len = 0;
	return 0;
}

hload *
hload_open(int port)
{
	hload *h;

	if (port <= 0 || port > 65535 || (h = malloc(sizeof(*h))) == NULL)
		return NULL;
	h->port = port;
	h->fd = -1;
	h->req = NULL;
	h->req_cap = 0;
	if (hl_connect(h) != 0) {
		free(h);
		return NULL;
	}
	return h;
}

void
hload_close(hload *h)
{
	if (h == NULL)
		return;
	hl_drop(h);
	free(h->req);
	free(h);
}

// The request line, headers and body into h->req; its length in *len.
static int
hl_build(hload *h, const char *method, const char *path,
         const char *const *headers, const char *body, size_t body_len,
         size_t *len)
{
	// With room for " HTTP/1.1", the Host line, a Content-Length line,
	// the blank line and sprintf's NUL.
	size_t cap = strlen(method) + strlen(path) + 96;
	char *p;

	if (body != NULL && body_len > HL_BODY_MAX)
		return -1;
	cap += body != NULL ? body_len : 0;
	for (size_t i = 0; headers != NULL && headers[i] != NULL; i++)
		cap += strlen(headers[i]) + 2;
	if (cap > h->req_cap) {
		if ((p = realloc(h->req, cap)) == NULL)
			return -1;
		h->req = p;
		h->req_cap = cap;
	}
	// The Host line as curl writes it, so requests are as stack_http's.
	p = h->req + sprintf(h->req, "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n",
	                     method, path, h->port);
	for (size_t i = 0; headers != NULL && headers[i] != NULL; i++)
		p += sprintf(p, "%s\r\n", headers[i]);
	if (body != NULL)
		p += sprintf(p, "Content-Length: %zu\r\n", body_len);
	memcpy(p, "\r\n", 2);
	p += 2;
	if (body != NULL && body_len > 0) {
		memcpy(p, body, body_len);
		p += body_len;
	}
	*len = (size_t)(p - h->req);
	return 0;
}

static int
hl_send(hload *h, size_t len)
{
	const char *p = h->req;

	while (len > 0) {
		ssize_t r = send(h->fd, p, len, MSG_NOSIGNAL);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		p += r;
		len -= (size_t)r;
	}
	return 0;
}

// Receives more into h->in (moving what is unparsed to its start first).
// Returns the bytes received, 0 at the end of the stream, or -1 (errno
// EMSGSIZE when h->in is full of unparsed bytes).
static ssize_t
hl_fill(hload *h)
{
	ssize_t r;

	if (h->off > 0) {
		memmove(h->in, h->in + h->off, h->len - h->off);
		h->len -= h->off;
		h->off = 0;
	}
	if (h->len == sizeof(h->in)) {
		errno = EMSGSIZE;
		return -1;
	}
	do
		r = recv(h->fd, h->in + h->len, sizeof(h->in) - h->len, 0);
	while (r < 0 && errno == EINTR);
	if (r > 0)
		h->len += (size_t)r;
	return r;
}

// The next line (without its CRLF, which is consumed) and its length in
// *n; valid until the next hl_fill. NULL when the stream ends or fails
// first, or past HL_HEAD_MAX.
static const char *
hl_line(hload *h, size_t *n)
{
	for (;;) {
		const char *s = h->in + h->off,
		           *e = memmem(s, h->len - h->off, "\r\n", 2);
		if (e != NULL) {
			*n = (size_t)(e - s);
			h->off += *n + 2;
			return s;
		}
		if (hl_fill(h) <= 0)
			return NULL;
	}
}

static int
hl_body_add(hl_body *b, const char *p, size_t n)
{
	if (n > HL_BODY_MAX - b->len)
		return -1;
	if (!b->discard && b->len + n + 1 > b->cap) {
		size_t cap = b->cap > 0 ? b->cap : 4096;
		char *np;
		while (cap < b->len + n + 1)
			cap *= 2;
		if ((np = realloc(b->p, cap)) == NULL)
			return -1;
		b->p = np;
		b->cap = cap;
	}
	if (!b->discard) {
		memcpy(b->p + b->len, p, n);
		b->p[b->len + n] = '\0';
	}
	b->len += n;
	return 0;
}

// Moves the next n bytes of the stream into b.
static int
hl_take(hload *h, hl_body *b, size_t n)
{
	while (n > 0) {
		size_t k = h->len - h->off;
		if (k == 0) {
			if (hl_fill(h) <= 0)
				return -1;
			continue;
		}
		if (k > n)
			k = n;
		if (hl_body_add(b, h->in + h->off, k) != 0)
			return -1;
		h->off += k;
		n -= k;
	}
	return 0;
}

static int
hl_chunked(hload *h, hl_body *b)
{
	const char *l;
	size_t n, trailers = 0;

	for (;;) {
		size_t size = 0, i;
		if ((l = hl_line(h, &n)) == NULL)
			return -1;
		for (i = 0; i < n && isxdigit((unsigned char)l[i]); i++) {
			int c = tolower((unsigned char)l[i]);
			size = size * 16 +
			       (size_t)(c <= '9' ? c - '0' : c - 'a' + 10);
			if (size > HL_BODY_MAX)
				return -1;
		}
		// Chunk extensions (";name=value") are allowed and ignored.
		if (i == 0 ||
		    (i < n && l[i] != ';' && l[i] != ' ' && l[i] != '\t'))
			return -1;
		if (size == 0)
			break;
		if (hl_take(h, b, size) != 0 || (l = hl_line(h, &n)) == NULL ||
		    n != 0)
			return -1;
	}
	// Trailer fields, ignored, up to the blank line.
	do {
		if ((l = hl_line(h, &n)) == NULL)
			return -1;
		trailers += n + 2;
	} while (n > 0 && trailers <= HL_HEAD_MAX);
	return n == 0 ? 0 : -1;
}

static bool
name_is(const char *s, size_t n, const char *name)
{
	return n == strlen(name) && strncasecmp(s, name, n) == 0;
}

// Whether the header value v[0..n) contains tok, in any case.
static bool
value_has(const char *v, size_t n, const char *tok)
{
	size_t t = strlen(tok);

	for (size_t i = 0; i + t <= n; i++)
		if (strncasecmp(v + i, tok, t) == 0)
			return true;
	return false;
}

// Reads one answer to a request sent on h, after interim 1xx answers
// to it. Returns 0, HL_ERR or HL_STALE.
static int
hl_answer(hload *h, bool head, int interim, long *status, char **out)
{
	const char *p, *e, *end;
	char *hb;
	size_t n, cl = 0;
	long st;
	bool has_cl = false, chunked = false, keep;
	hl_body b = { NULL, 0, 0, out == NULL };
	ssize_t r;

	// The header block, through its blank line.
	while ((hb = memmem(h->in + h->off, h->len - h->off, "\r\n\r\n", 4)) ==
	       NULL) {
		if ((r = hl_fill(h)) > 0)
			continue;
		// The server closed a connection it had kept idle just as we
		// wrote to it: nothing of the request was seen, so it can be
		// sent again.
		if (interim == 0 && h->reused && h->len == h->off &&
		    (r == 0 || errno == ECONNRESET || errno == EPIPE))
			return HL_STALE;
		return HL_ERR;
	}
	p = h->in + h->off;
	end = hb + 2; // the last header line's CRLF, not the blank line
	n = (size_t)(hb + 4 - p);
	if (n < 16 || memcmp(p, "HTTP/1.", 7) != 0 || p[8] != ' ' ||
	    !isdigit((unsigned char)p[9]) || !isdigit((unsigned char)p[10]) ||
	    !isdigit((unsigned char)p[11]))
		return HL_ERR;
	st = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
	keep = p[7] != '0'; // HTTP/1.0 closes unless it says keep-alive
	p = (const char *)memmem(p, (size_t)(end - p), "\r\n", 2) + 2;
	for (; p < end; p = e + 2) {
		const char *c, *v, *ve;
		e = memmem(p, (size_t)(end - p), "\r\n", 2);
		if ((c = memchr(p, ':', (size_t)(e - p))) == NULL)
			return HL_ERR;
		for (v = c + 1; v < e && (*v == ' ' || *v == '\t'); v++)
			;
		for (ve = e; ve > v && (ve[-1] == ' ' || ve[-1] == '\t'); ve--)
			;
		if (name_is(p, (size_t)(c - p), "Content-Length")) {
			if (v == ve)
				return HL_ERR;
			for (cl = 0; v < ve; v++) {
				if (!isdigit((unsigned char)*v))
					return HL_ERR;
				cl = cl * 10 + (size_t)(*v - '0');
				if (cl > HL_BODY_MAX)
					return HL_ERR;
			}
			has_cl = true;
		} else if (name_is(p, (size_t)(c - p), "Transfer-Encoding")) {
			chunked = value_has(v, (size_t)(ve - v), "chunked");
		} else if (name_is(p, (size_t)(c - p), "Connection")) {
			if (value_has(v, (size_t)(ve - v), "close"))
				keep = false;
			else if (value_has(v, (size_t)(ve - v), "keep-alive"))
				keep = true;
		}
	}
	h->off += n;
	if (status != NULL)
		*status = st;
	if (st >= 100 && st < 200) {
		// An interim answer (100 Continue): the real one follows.
		// Nothing here upgrades a connection (101).
		if (st == 101 || interim >= 8)
			return HL_ERR;
		return hl_answer(h, head, interim + 1, status, out);
	}

	if (head || st == 204 || st == 304) {
		// No body.
	} else if (chunked) {
		if (hl_chunked(h, &b) != 0)
			goto fail;
	} else if (has_cl) {
		if (!b.discard && (b.p = malloc(cl + 1)) != NULL)
			b.cap = cl + 1;
		if (hl_take(h, &b, cl) != 0)
			goto fail;
	} else {
		// Neither: the body runs to the close.
		for (;;) {
			if (hl_body_add(&b, h->in + h->off, h->len - h->off) !=
			    0)
				goto fail;
			h->off = h->len;
			if ((r = hl_fill(h)) == 0)
				break;
			if (r < 0)
				goto fail;
		}
		keep = false;
	}
	if (out != NULL) {
		if (b.p == NULL && (b.p = malloc(1)) == NULL)
			goto fail;
		b.p[b.len] = '\0';
		*out = b.p;
	}
	if (keep)
		h->reused = true;
	else
		hl_drop(h);
	return 0;
fail:
	free(b.p);
	return HL_ERR;
}

int
hload_do(hload *h, const char *method, const char *path,
         const char *const *headers, const char *body, size_t body_len,
         long *status, char **out)
{
	size_t len;

	if (status != NULL)
		*status = 0;
	if (out != NULL)
		*out = NULL;
	if (h == NULL || method == NULL || path == NULL ||
	    hl_build(h, method, path, headers, body, body_len, &len) != 0)
		return -1;
	// Twice at most: the second time on a new connection, which is not
	// retried.
	for (int attempt = 0; attempt < 2; attempt++) {
		bool reused;
		int rv;
		// Bytes nobody asked for: what they belong to is unknown.
		if (h->fd >= 0 && h->len > h->off)
			hl_drop(h);
		if (h->fd < 0 && hl_connect(h) != 0)
			return -1;
		reused = h->reused;
		if (hl_send(h, len) != 0) {
			hl_drop(h);
			if (reused)
				continue;
			return -1;
		}
		if ((rv = hl_answer(h, strcmp(method, "HEAD") == 0, 0, status,
		                    out)) == 0)
			return 0;
		hl_drop(h);
		if (rv != HL_STALE)
			break;
	}
	return -1;
}
