// Runtime internals shared by the RPC server and client files.
#ifndef PL_RPC_INTERNAL_H
#define PL_RPC_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <nng/nng.h>
#include <nng/supplemental/tls/tls.h>

#include "pl/rpc.h"

#define PL_VERSION "0.1.0"

// Latency buckets, in microseconds, of the per-method histograms.
#define PL_RPC_NBUCKETS 15

typedef struct pl_rpc_metrics {
	_Atomic uint64_t count[PL_STATUS_COUNT];
	_Atomic uint64_t bucket[PL_RPC_NBUCKETS];
	_Atomic uint64_t sum_us;
} pl_rpc_metrics;

void pl_rpc_metrics_observe(pl_rpc_metrics *m, int code, int64_t ns);

// Checks the call's principal against a method's access rule; sets the
// call's error and returns it when refused.
int pl_rpc_check_access(pl_call *call, const pl_rpc_method *m);

// The wire (DESIGN §2): every call is one request frame and one reply
// frame on an nng byte stream (tcp, ipc, tls+tcp; inproc:// names become
// abstract sockets of this process). A frame is a 4-byte big-endian length
// and that many bytes of a protobuf envelope. A connection carries one call
// at a time, so replies need no demultiplexing: the thread that sent the
// request reads its reply, and nng wakes it directly (callback-less aios).
// The read buffer per connection: a whole 20-row page's answer (~20 KB)
// in one recv. With 16 KiB it took two, and a copy of the first into the
// frame's own buffer: bench_rpc --payload 20000, tcp, CPU a call 41-48 ->
// 37-43 us. Untouched pages of it cost no memory.
#define PL_WIRE_BUF (64u << 10)

typedef struct pl_wire {
	nng_stream *s;
	int fd;       // plain TCP: the socket, read and written directly; or -1
	nng_aio *aio; // no callback: completion wakes the waiting thread
	uint8_t *buf; // buffered bytes [beg, end)
	size_t beg, end;
	uint8_t *big; // a frame larger than buf, malloc'd
	size_t big_cap;
} pl_wire;

// Error of pl_wire_recv for a frame over max (its bytes were read and
// dropped, so the connection stays usable).
#define PL_WIRE_TOOBIG (-1)

// Rewrites an RPC URL for nng's stream API into out ("inproc://x" becomes
// "abstract://parley-<pid>-x"). Returns 0, or -1 when it does not fit.
int pl_wire_url(const char *url, char *out, size_t n);
// Sets the options every stream endpoint gets (TCP_NODELAY; TLS config).
int pl_wire_dialer(nng_stream_dialer **d, const char *url, nng_tls_config *tls);
int pl_wire_listener(nng_stream_listener **l, const char *url,
                     nng_tls_config *tls);
int pl_wire_init(pl_wire *w, nng_stream *s);
// Dials with d before deadline and sets w up on the new stream.
int pl_wire_dial(pl_wire *w, nng_stream_dialer *d, int64_t deadline);
// Closes the stream so that a thread waiting in pl_wire_recv returns.
void pl_wire_close(pl_wire *w);
void pl_wire_fini(pl_wire *w);
// Reads one frame before deadline (monotonic ns; 0: none). *frame stays
// valid until the next call. Frames over max are read and dropped up to
// drop_max (PL_WIRE_TOOBIG, *len set); a longer one is an error. *got is
// set when any byte of the frame arrived. Returns 0 or an nng error.
int pl_wire_recv(pl_wire *w, size_t max, size_t drop_max, int64_t deadline,
                 const uint8_t **frame, size_t *len, bool *got);
// Writes a frame whose first 4 bytes are reserved for the length.
int pl_wire_send(pl_wire *w, uint8_t *frame, size_t len, int64_t deadline);

#endif
