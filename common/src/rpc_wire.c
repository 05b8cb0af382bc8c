// Frames on nng byte streams: the transport under pl_rpc (rpc_internal.h).
//
// Why streams and not REQ/REP sockets: nng 1.5 completes every protocol
// step of REQ/REP through its task-queue threads, about 20 thread wake-ups
// per round trip, and on 2 cores that is where a call's time went. A byte
// stream read with a callback-less aio is completed by nng's poller waking
// the reading thread itself: four wake-ups per round trip.
//
// Plain TCP goes one step further: nng dials, listens and accepts, and the
// connection's own thread then reads and writes the socket nng made
// (poll(2), then recv or send), so no byte waits for nng's one poller thread
// and each side of a call costs one wake-up. nng 1.5 has no option that
// gives a stream's descriptor; it is found by the address pair, which only
// that open socket has (see find_fd). TLS, ipc and abstract streams keep
// nng's I/O. Measured with bench_billing's health runs (DESIGN §2 allows
// another threading model where measurement shows it faster).
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
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

static atomic_bool direct_io = true;

void
pl_rpc_set_direct_io(bool on)
{
	atomic_store(&direct_io, on);
}

// Whether the socket address ss is nng's a.
static bool
same_addr(const struct sockaddr_storage *ss, const nng_sockaddr *a)
{
	if (ss->ss_family == AF_INET && a->s_family == NNG_AF_INET) {
		const struct sockaddr_in *v4 = (const void *)ss;
		return v4->sin_port == a->s_in.sa_port &&
		       v4->sin_addr.s_addr == a->s_in.sa_addr;
	}
	if (ss->ss_family == AF_INET6 && a->s_family == NNG_AF_INET6) {
		const struct sockaddr_in6 *v6 = (const void *)ss;
		return v6->sin6_port == a->s_in6.sa_port &&
		       memcmp(&v6->sin6_addr, a->s_in6.sa_addr, 16) == 0;
	}
	return false;
}

// The descriptor of a plain TCP stream, or -1 (TLS, ipc, abstract, or not
// found). A TCP connection's local and remote addresses together belong
// to one socket while it is open, and the stream keeps it open, so the
// descriptor whose names match is this stream's.
static int
find_fd(nng_stream *s)
{
	nng_sockaddr la, ra;
	struct dirent *e;
	bool tls;
	DIR *d;
	int fd = -1;

	if (!atomic_load(&direct_io) ||
	    nng_stream_get_bool(s, NNG_OPT_TLS_VERIFIED, &tls) == 0 ||
	    nng_stream_get_addr(s, NNG_OPT_LOCADDR, &la) != 0 ||
	    nng_stream_get_addr(s, NNG_OPT_REMADDR, &ra) != 0 ||
	    (la.s_family != NNG_AF_INET && la.s_family != NNG_AF_INET6) ||
	    (d = opendir("/proc/self/fd")) == NULL)
		return -1;
	while (fd < 0 && (e = readdir(d)) != NULL) {
		struct sockaddr_storage ss;
		socklen_t n = sizeof(ss);
		int k = atoi(e->d_name);

		if (e->d_name[0] < '0' || e->d_name[0] > '9' || k == dirfd(d))
			continue;
		if (getsockname(k, (struct sockaddr *)&ss, &n) != 0 ||
		    !same_addr(&ss, &la))
			continue;
		n = sizeof(ss);
		if (getpeername(k, (struct sockaddr *)&ss, &n) == 0 &&
		    same_addr(&ss, &ra))
			fd = k;
	}
	closedir(d);
	return fd;
}

int
pl_wire_init(pl_wire *w, nng_stream *s)
{
	memset(w, 0, sizeof(*w));
	w->fd = -1;
	if (nng_aio_alloc(&w->aio, NULL, NULL) != 0)
		return NNG_ENOMEM;
	if ((w->buf = malloc(PL_WIRE_BUF)) == NULL) {
		nng_aio_free(w->aio);
		w->aio = NULL;
		return NNG_ENOMEM;
	}
	w->s = s;
	w->fd = find_fd(s);
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
pl_wire_close(pl_wire *w)
{
	// A thread polling the socket wakes on the shutdown; nng's close
	// alone would not reach it. The descriptor stays open until fini.
	if (w->fd >= 0)
		shutdown(w->fd, SHUT_RDWR);
	nng_stream_close(w->s);
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
	w->fd = -1;
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

static int
sys_error(int e)
{
	switch (e) {
	case ECONNRESET:
		return NNG_ECONNRESET;
	case ECONNREFUSED:
		return NNG_ECONNREFUSED;
	case ENOMEM:
	case ENOBUFS:
		return NNG_ENOMEM;
	default:
		return NNG_ECONNSHUT;
	}
}

// Waits before deadline until the socket is ready for events.
static int
direct_wait(pl_wire *w, short events, int64_t deadline)
{
	for (;;) {
		struct pollfd p = { .fd = w->fd, .events = events };
		nng_duration ms = left_ms(deadline);
		int k;

		if (ms == 0)
			return NNG_ETIMEDOUT;
		k = poll(&p, 1, ms == NNG_DURATION_INFINITE ? -1 : (int)ms);
		if (k > 0)
			return 0; // ready, or an error the next call reports
		if (k < 0 && errno != EINTR)
			return sys_error(errno);
	}
}

// One receive into [p, p + n): *got bytes (> 0), or an nng error (a
// closed peer is NNG_ECLOSED). more: part of the frame being read has
// come, so the rest is likely there already (a 100 KB answer outgrows the
// buffer's first read): try before waiting.
static int
recv_some(pl_wire *w, uint8_t *p, size_t n, int64_t deadline, bool more,
          size_t *got)
{
	nng_iov iov = { .iov_buf = p, .iov_len = n };
	nng_duration ms = left_ms(deadline);
	int rv;

	if (ms == 0)
		return NNG_ETIMEDOUT;
	if (w->fd >= 0) {
		// Otherwise the peer's bytes are rarely there yet: wait
		// first.
		for (;; more = false) {
			ssize_t k;
			if (!more &&
			    (rv = direct_wait(w, POLLIN, deadline)) != 0)
				return rv;
			k = recv(w->fd, p, n, MSG_DONTWAIT);
			if (k > 0) {
				*got = (size_t)k;
				return 0;
			}
			if (k == 0)
				return NNG_ECLOSED;
			if (errno != EAGAIN && errno != EWOULDBLOCK &&
			    errno != EINTR)
				return sys_error(errno);
		}
	}
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
		               deadline, w->end > w->beg, &n);
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
			                    true, &have)) != 0)
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
		if ((rv = recv_some(w, w->big + off, n - off, deadline, true,
		                    &k)) != 0)
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
	while (off < len && w->fd >= 0) {
		ssize_t k = send(w->fd, frame + off, len - off, MSG_NOSIGNAL);
		if (k > 0) {
			off += (size_t)k;
			continue;
		}
		if (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK &&
		    errno != EINTR)
			return sys_error(errno);
		if ((rv = direct_wait(w, POLLOUT, deadline)) != 0)
			return rv;
	}
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
