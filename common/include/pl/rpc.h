// Parley's gRPC-style RPC over nng (DESIGN §2).
//
// A server binds one or more protobuf-c service descriptors to handler
// tables and listens on URLs (inproc://, ipc://, tcp://, tls+tcp://) with
// nng's byte streams. Each connection has a thread that reads a request
// frame (4-byte big-endian length + the protobuf envelope), borrows one of
// a fixed pool of worker states (a database connection and such), unpacks
// the envelope, checks the caller, dispatches, and writes the reply frame.
//
// A client keeps a pool of connections to one or several replicas (one
// call at a time on each, more dialed on demand up to a limit), so it is
// safe to share between threads.
#ifndef PL_RPC_H
#define PL_RPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <protobuf-c/protobuf-c.h>

#include "parley/rpc/v1/envelope.pb-c.h"
#include "pl/arena.h"
#include "pl/status.h"

typedef Parley__Rpc__V1__Principal pl_principal;

// Who may call a method; checked by the runtime before the handler runs.
typedef enum pl_access {
	PL_CALLER_PUBLIC = 0, // any Parley service, no principal needed
	PL_CALLER_SERVICE,    // a service acting as itself (kind SERVICE)
	PL_PLATFORM_ADMIN,    // a platform-admin user, or a service
	PL_ROLE_VIEWER,       // a tenant principal with at least this role
	PL_ROLE_AGENT,        // (API keys need the entry's scope instead;
	PL_ROLE_ADMIN,        //  services acting for a tenant pass)
	PL_ROLE_OWNER,
} pl_access;

// Method flags.
#define PL_RPC_NEEDS_KEY 0x1u // refuse without an idempotency key

typedef struct pl_call pl_call;
typedef struct pl_rpc_server pl_rpc_server;

// A handler gets its typed input and an initialised output message, both in
// the call's arena, and returns a status (PL_OK or an error set with
// pl_call_error). It never sees bytes.
typedef int (*pl_rpc_handler)(pl_call *call, const void *in, void *out);

typedef struct pl_rpc_method {
	const char *name; // the proto method name, "ReserveUsage"
	pl_rpc_handler handler;
	pl_access access;
	const char *scope; // API-key scope required; NULL: no API keys
	unsigned flags;
} pl_rpc_method;

typedef struct pl_rpc_service {
	const ProtobufCServiceDescriptor *desc;
	const pl_rpc_method *methods; // ends with { NULL }
} pl_rpc_service;

// The state of one call, owned by the worker running it.
struct pl_call {
	pl_arena *arena;               // freed when the reply is sent
	const pl_principal *principal; // never NULL; kind UNSPECIFIED if none
	const char *method;            // full name
	const char *idempotency_key;   // NULL when none
	const char *trace_id;          // never NULL
	uint64_t request_id;
	int64_t deadline;      // CLOCK_MONOTONIC ns; 0 = none
	void *worker;          // what worker_init made (e.g. a pl_db)
	void *arg;             // the server config's arg
	pl_rpc_server *server; // the server running the call
	// Reply state, set through pl_call_error / pl_call_violation.
	int code;
	char *message;
	Parley__Rpc__V1__FieldViolation **violations;
	size_t n_violations;
	size_t cap_violations;
};

// Sets the call's error and returns code, so handlers can
// `return pl_call_error(call, PL_NOT_FOUND, "agent %s not found", id);`.
int pl_call_error(pl_call *call, int code, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

// Records a field violation and returns PL_INVALID_ARGUMENT (the first one
// also becomes the call's message).
int pl_call_violation(pl_call *call, const char *field, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

// A batch item's own call state (its errors: code, message, violations),
// the rest (arena, principal, deadline...) the batch call's, without its
// idempotency key. For handlers of batch RPCs that answer a status per
// item.
void pl_call_item(pl_call *item, const pl_call *call);

// Milliseconds left before the deadline (INT64_MAX when none; <= 0 past it).
int64_t pl_call_remaining_ms(const pl_call *call);

// True when the caller's tenant is the one named (service callers, which
// carry the tenant they act for, included).
bool pl_call_is_tenant(const pl_call *call, const char *tenant_id);

// Monotonic clock in nanoseconds.
int64_t pl_now_ns(void);

// clock's time ns (>= 0) from now: the deadline of a
// pthread_cond_timedwait on a condition that waits on that clock
// (CLOCK_REALTIME unless its attributes say otherwise).
struct timespec pl_timespec_in(clockid_t clock, int64_t ns);

// Server.

typedef struct pl_rpc_server_config {
	const char *name;     // "billing": logs, metrics, Health
	const char *listen;   // comma-separated nng URLs
	int workers;          // worker states: calls served at once (0: 4)
	int contexts;         // unused (kept for configurations that set it)
	size_t max_msg;       // larger requests: INVALID_ARGUMENT (0: 4 MiB)
	size_t arena_limit;   // per call (0: 64 MiB)
	const char *secret;   // shared service secret; required
	const char *tls_cert; // PEM files for tls+tcp:// (optional)
	const char *tls_key;
	// Per-worker state, e.g. a database connection, made at start with
	// worker_arg. A state serves one call at a time, but not always from
	// the same thread: keep nothing about it in thread-local storage.
	// init returns 0 or a status that fails pl_rpc_server_start.
	int (*worker_init)(void *worker_arg, int idx, void **state);
	void (*worker_fini)(void *worker_arg, void *state);
	// Readiness for Health and /readyz (NULL: always ready); state is a
	// worker's, or NULL when asked from outside the workers.
	bool (*ready)(void *worker_arg, void *state, bool *db_ok, bool *mig_ok);
	void *worker_arg;
	void *arg; // the service's own state: call->arg in handlers
} pl_rpc_server_config;

// Checks that a handler table and its proto service agree: every proto
// method has exactly one entry with a handler and every entry names a proto
// method. Writes the first mismatch into err; returns 0 when they agree.
int pl_rpc_table_check(const pl_rpc_service *svc, char *err, size_t errlen);

// Creates a server for a NULL-terminated array of services (each checked
// with pl_rpc_table_check). Listens at start.
int pl_rpc_server_open(pl_rpc_server **out, const pl_rpc_server_config *cfg,
                       const pl_rpc_service *const *services);

// Starts workers and listeners; returns a status (UNAVAILABLE when an
// address cannot be bound).
int pl_rpc_server_start(pl_rpc_server *s);

// Stops accepting, lets in-flight calls finish and send their replies, and
// joins the workers. Safe to call twice.
void pl_rpc_server_stop(pl_rpc_server *s);

// Stops if needed and frees everything.
void pl_rpc_server_close(pl_rpc_server *s);

// Prometheus text of the server's counters and latency histograms; the
// caller frees it.
char *pl_rpc_server_metrics(pl_rpc_server *s);

// Calls read and not yet answered.
int pl_rpc_server_in_flight(pl_rpc_server *s);
// The server's readiness as Health would answer it.
bool pl_rpc_server_ready(pl_rpc_server *s);

// Dispatches one encoded Request without any socket (what the workers do;
// tests use it). The reply is allocated in arena and encoded into *reply
// (malloc'd, caller frees). worker is passed as call->worker.
int pl_rpc_server_dispatch(pl_rpc_server *s, void *worker, pl_arena *arena,
                           const uint8_t *req, size_t len, uint8_t **reply,
                           size_t *reply_len);

// Client.

typedef struct pl_rpc_client pl_rpc_client;

typedef struct pl_rpc_client_config {
	const char *urls;    // comma-separated replicas
	const char *secret;  // shared service secret
	const char *service; // this program's name, sent as principal.service
	int64_t timeout_ms;  // default per-call budget (0: 5000)
	int attempts;        // for retryable calls (0: 3)
	int conns;           // most connections per replica (0: 64)
	const char *tls_ca;  // CA file for tls+tcp:// (optional)
} pl_rpc_client_config;

int pl_rpc_client_open(pl_rpc_client **out, const pl_rpc_client_config *cfg);
void pl_rpc_client_close(pl_rpc_client *c);

typedef struct pl_rpc_opts {
	const pl_principal *principal; // NULL: the service acting as itself
	const pl_call *parent; // propagate its deadline, principal, trace
	int64_t timeout_ms;    // 0: client default; parent's rest wins
	const char *idempotency_key;
	bool idempotent; // safe to repeat without a key
} pl_rpc_opts;

typedef struct pl_rpc_result {
	int code;
	const char *message; // in the arena; "" when OK
	Parley__Rpc__V1__FieldViolation **details;
	size_t n_details;
} pl_rpc_result;

// Calls method ("/parley.billing.v1.Billing/ReserveUsage") with in, and on
// OK unpacks the output (of out_desc) into *out, in arena. Returns the
// status code (also in res when res is not NULL). Transport failures are
// UNAVAILABLE, a passed deadline DEADLINE_EXCEEDED. Retries UNAVAILABLE only
// for idempotent calls or calls with an idempotency key.
int pl_rpc_call(pl_rpc_client *c, const char *method,
                const ProtobufCMessage *in,
                const ProtobufCMessageDescriptor *out_desc, void **out,
                pl_arena *arena, const pl_rpc_opts *opts, pl_rpc_result *res);

// The same without unpacking: on OK *payload and *len are the output's
// wire form (in arena), for a caller that reads it otherwise (the
// gateway's pl_json_dump_wire); NULL and 0 otherwise.
int pl_rpc_call_raw(pl_rpc_client *c, const char *method,
                    const ProtobufCMessage *in, const uint8_t **payload,
                    size_t *len, pl_arena *arena, const pl_rpc_opts *opts,
                    pl_rpc_result *res);

// Sends raw bytes as one request frame on a new connection to url and
// returns the reply frame's bytes (malloc'd, caller frees). For tests and
// tools that speak the wire without the envelope helpers.
// Plain TCP connections are read and written on their sockets by the
// calling thread instead of through nng's poller (on by default; applies
// to connections made after the call). For benchmarks comparing the two.
void pl_rpc_set_direct_io(bool on);

int pl_rpc_raw_exchange(const char *url, const void *req, size_t len,
                        int64_t timeout_ms, uint8_t **reply, size_t *reply_len);

#endif
