// Frames on nng byte streams: the transport under pl_rpc (rpc_internal.h).
//
// Why streams and not REQ/REP sockets: nng 1.5 completes every protocol
// step of REQ/REP through its task-queue threads, about 20 thread wake-ups
// per round trip, and on 2 cores that is where a call's time went. A byte
// stream read with a callback-less aio is completed by nng's poller waking
// the reading thread itself: four wake-ups per round trip.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/transport/tcp/tcp.h>

#include "rpc_internal.h"

int
pl_wire_url(const char *url, char *out, size_t n)
{
	int k;

	if (strncmp(url, "inproc://", 9) == 0)
		k = snprintf(out, n, "abstract://parley-%d-%s", (int)getpid(),
		             url + 9);
	else
		k = snprintf(out, n, "%s", url);
	return k < 0 || (size_t)k >= n ? -1 : 0;
}

static bool
is_tcp(const char *url)
{
	return strncmp(url, "tcp", 3) == 0 || strncmp(url, "tls+tcp", 7) == 0;
}

int
pl_wire_dialer(nng_stream_dialer **d, const char *url, nng_tls_config *tls)
{
	int rv = nng_stream_dialer_alloc(d, url);

	if (rv != 0)
		return rv;
	if (is_tcp(url))
		nng_stream_dialer_set_bool(*d, NNG_OPT_TCP_NODELAY, true);
	if (tls != NULL && strncmp(url, "tls+", 4) == 0)
		rv = nng_stream_dialer_set_ptr(*d, NNG_OPT_TLS_CONFIG, tls);
	if (rv != 0) {
		nng_stream_dialer_free(*d);
		*d = NULL;
	}
	return rv;
}

int
pl_wire_listener(nng_stream_listener **l, const char *url, nng_tls_config *tls)
{
	int rv = nng_stream_listener_alloc(l, url);

	if (rv != 0)
		return rv;
	if (is_tcp(url))
		nng_stream_listener_set_bool(*l, NNG_OPT_TCP_NODELAY, true);
	if (tls != NULL && strncmp(url, "tls+", 4) == 0)
		rv = nng_stream_listener_set_ptr(*l, NNG_OPT_TLS_CONFIG, tls);
	if (rv == 0)
		rv = nng_stream_listener_listen(*l);
	if (rv != 0) {
		nng_stream_listener_free(*l);
		*l = NULL;
	}
	return rv;
}

int
pl_wire_init(pl_wire *w, nng_stream *s)
{
	memset(w, 0, sizeof(*w));
	if (nng_aio_alloc(&w->aio, NULL, NULL) != 0)
		return NNG_ENOMEM;
	if ((w->buf = malloc(PL_WIRE_BUF)) == NULL) {
		nng_aio_free(w->aio);
		w->aio = NULL;
		return NNG_ENOMEM;
	}
	w->s = s;
	return 0;
}

int
pl_wire_dial(pl_wire *w, nng_stream_dialer *d, int64_t deadline)
{
	nng_aio *aio;
	nng_stream *s;
	int64_t left = (deadline - pl_now_ns()) / 1000000;
	int rv = nng_aio_alloc(&aio, NULL, NULL);

	if (rv != 0)
		return rv;
	nng_aio_set_timeout(aio, (nng_duration)(left > 0 ? left : 1));
	nng_stream_dialer_dial(d, aio);
	nng_aio_wait(aio);
	if ((rv = nng_aio_result(aio)) == 0) {
		s = nng_aio_get_output(aio, 0);
		if ((rv = pl_wire_init(w, s)) != 0)
			nng_stream_free(s);
	}
	nng_aio_free(aio);
	return rv;
}

void
pl_wire_fini(pl_wire *w)
{
	if (w->s != NULL)
		nng_stream_free(w->s); // closes it
	if (w->aio != NULL)
		nng_aio_free(w->aio);
	free(w->buf);
	free(w->big);
	memset(w, 0, sizeof(*w));
}

static nng_duration
left_ms(int64_t deadline)
{
	int64_t ms;

	if (deadline == 0)
		return NNG_DURATION_INFINITE;
	ms = (deadline - pl_now_ns() + 999999) / 1000000;
	return ms <= 0 ? 0 : ms > INT32_MAX ? INT32_MAX : (nng_duration)ms;
}

// One receive into [p, p + n): *got bytes (> 0), or an nng error (a
// closed peer is NNG_ECLOSED).
static int
recv_some(pl_wire *w, uint8_t *p, size_t n, int64_t deadline, size_t *got)
{
	nng_iov iov = { .iov_buf = p, .iov_len = n };
	nng_duration ms = left_ms(deadline);
	int rv;

	if (ms == 0)
		return NNG_ETIMEDOUT;
	nng_aio_set_iov(w->aio, 1, &iov);
	nng_aio_set_timeout(w->aio, ms);
	nng_stream_recv(w->s, w->aio);
	nng_aio_wait(w->aio);
	if ((rv = nng_aio_result(w->aio)) != 0)
		return rv;
	*got = nng_aio_count(w->aio);
	return *got == 0 ? NNG_ECLOSED : 0;
}

// Makes at least need bytes available at w->buf + w->beg.
static int
fill(pl_wire *w, size_t need, int64_t deadline, bool *got)
{
	while (w->end - w->beg < need) {
		size_t n;
		int rv;
		if (w->end == PL_WIRE_BUF || PL_WIRE_BUF - w->beg < need) {
			memmove(w->buf, w->buf + w->beg, w->end - w->beg);
			w->end -= w->beg;
			w->beg = 0;
		}
		rv = recv_some(w, w->buf + w->end, PL_WIRE_BUF - w->end,
		               deadline, &n);
		if (rv != 0)
			return rv;
		w->end += n;
		*got = true;
	}
	return 0;
}

int
pl_wire_recv(pl_wire *w, size_t max, size_t drop_max, int64_t deadline,
             const uint8_t **frame, size_t *len, bool *got)
{
	const uint8_t *h;
	size_t n, have;
	int rv;

	if (w->big_cap > (1u << 20)) {
		// A large frame's buffer is not kept past the next call.
		free(w->big);
		w->big = NULL;
		w->big_cap = 0;
	}
	*got = w->end > w->beg;
	if ((rv = fill(w, 4, deadline, got)) != 0)
		return rv;
	h = w->buf + w->beg;
	n = (size_t)h[0] << 24 | (size_t)h[1] << 16 | (size_t)h[2] << 8 | h[3];
	w->beg += 4;
	*len = n;
	if (n <= PL_WIRE_BUF - 4) {
		// The usual case: the frame fits the buffer.
		if ((rv = fill(w, n, deadline, got)) != 0)
			return rv;
		*frame = w->buf + w->beg;
		w->beg += n;
		return 0;
	}
	if (n > drop_max)
		return NNG_EMSGSIZE;
	have = w->end - w->beg;
	if (n > max) {
		// Read and drop it so the caller can answer on this connection.
		size_t left = n;
		while (left > 0) {
			size_t k = have < left ? have : left;
			w->beg += k;
			left -= k;
			if (left == 0)
				break;
			w->beg = w->end = 0;
			if ((rv = recv_some(w, w->buf, PL_WIRE_BUF, deadline,
			                    &have)) != 0)
				return rv;
			w->end = have;
		}
		return PL_WIRE_TOOBIG;
	}
	if (n > w->big_cap) {
		uint8_t *b = malloc(n);
		if (b == NULL)
			return NNG_ENOMEM;
		free(w->big);
		w->big = b;
		w->big_cap = n;
	}
	memcpy(w->big, w->buf + w->beg, have);
	w->beg = w->end = 0;
	for (size_t off = have; off < n;) {
		size_t k;
		if ((rv = recv_some(w, w->big + off, n - off, deadline, &k)) !=
		    0)
			return rv;
		off += k;
	}
	*frame = w->big;
	return 0;
}

int
pl_wire_send(pl_wire *w, uint8_t *frame, size_t len, int64_t deadline)
{
	size_t n = len - 4, off = 0;
	int rv;

	frame[0] = (uint8_t)(n >> 24);
	frame[1] = (uint8_t)(n >> 16);
	frame[2] = (uint8_t)(n >> 8);
	frame[3] = (uint8_t)n;
	while (off < len) {
		nng_iov iov = { .iov_buf = frame + off, .iov_len = len - off };
		nng_duration ms = left_ms(deadline);
		if (ms == 0)
			return NNG_ETIMEDOUT;
		nng_aio_set_iov(w->aio, 1, &iov);
		nng_aio_set_timeout(w->aio, ms);
		nng_stream_send(w->s, w->aio);
		nng_aio_wait(w->aio);
		if ((rv = nng_aio_result(w->aio)) != 0)
			return rv;
		off += nng_aio_count(w->aio);
	}
	return 0;
}
