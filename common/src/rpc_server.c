// The RPC server: one thread per connection reads a request frame, borrows
// a worker state (a database connection and such) from a fixed pool,
// dispatches through the services' handler tables, and writes the reply.
//
// Why this shape: the reading thread is the one nng's poller wakes when the
// bytes arrive, and it runs the call itself, so a call costs two wake-ups on
// the server (none when requests are already waiting), against about ten
// through nng's REQ/REP task queues. Handlers may block (libpq, libcurl):
// only their own connection waits. The pool bounds the database
// connections; a connection thread without a request holds nothing.
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/supplemental/tls/tls.h>
#include <nng/supplemental/util/platform.h>
#include <sodium.h>

#include "parley/rpc/v1/health.pb-c.h"
#include "pl/log.h"
#include "pl/rpc.h"
#include "rpc_internal.h"

#define DEFAULT_WORKERS     4
#define DEFAULT_MAX_MSG     (4u << 20)
#define DEFAULT_ARENA_LIMIT (64u << 20)
// Requests up to this are read and answered INVALID_ARGUMENT past
// max_msg; a longer frame closes the connection.
#define DROP_MAX (256u << 20)
// A reply must be taken by the client within this.
#define IO_BUDGET_NS (30LL * 1000000000LL)
#define MAX_CONNS    4096

static const uint64_t latency_bounds_us[PL_RPC_NBUCKETS - 1] = {
	50,    100,   250,   500,    1000,   2500,    5000,
	10000, 25000, 50000, 100000, 250000, 1000000, 5000000
};

typedef struct method_ent {
	const char *full; // "/pkg.Svc/Method"
	const pl_rpc_method *m;
	const ProtobufCMessageDescriptor *in;
	const ProtobufCMessageDescriptor *out;
	pl_rpc_metrics metrics;
} method_ent;

typedef struct worker {
	pl_arena arena;
	void *state;
	int idx;
	struct worker *next; // free list
} worker;

typedef struct conn {
	pl_rpc_server *s;
	pl_wire w;
	pthread_t thr;
	uint8_t *out; // reply frame buffer
	size_t out_cap;
	bool idle;   // waiting for a request: stop may close it
	bool exited; // the thread has finished: join and free
	struct conn *next;
} conn;

typedef struct acceptor {
	pl_rpc_server *s;
	nng_stream_listener *l;
	pthread_t thr;
	bool running;
} acceptor;

struct pl_rpc_server {
	pl_rpc_server_config cfg;
	char *name;
	char *listen;
	uint8_t secret_hash[crypto_generichash_BYTES];
	method_ent *methods;
	size_t n_methods;
	acceptor *acceptors;
	size_t n_acceptors;
	nng_tls_config *tls;
	worker *workers;
	int n_workers;
	// Worker pool, connections and shutdown, under mtx.
	pthread_mutex_t mtx;
	pthread_cond_t work_cv; // a worker state came back
	pthread_cond_t idle_cv; // a connection thread exited
	worker *free_workers;
	conn *conns;
	int n_conns;
	int n_direct; // of them, read and written on their sockets
	int busy;     // calls being served
	bool stopping;
	bool started;
	bool stopped;
	int64_t t_start;
	// Health's own metrics slot, for calls with unknown methods too.
	pl_rpc_metrics unknown_metrics;
};

static const pl_principal no_principal = PARLEY__RPC__V1__PRINCIPAL__INIT;

int64_t
pl_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

struct timespec
pl_timespec_in(clockid_t clock, int64_t ns)
{
	struct timespec ts;

	clock_gettime(clock, &ts);
	ts.tv_sec += ns / 1000000000;
	ts.tv_nsec += ns % 1000000000;
	if (ts.tv_nsec >= 1000000000) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000;
	}
	return ts;
}

void
pl_call_item(pl_call *item, const pl_call *call)
{
	*item = *call;
	item->idempotency_key = NULL;
	item->code = PL_OK;
	item->message = NULL;
	item->violations = NULL;
	item->n_violations = item->cap_violations = 0;
}

int
pl_call_error(pl_call *call, int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	call->message = pl_arena_vprintf(call->arena, fmt, ap);
	va_end(ap);
	call->code = code;
	return code;
}

int
pl_call_violation(pl_call *call, const char *field, const char *fmt, ...)
{
	Parley__Rpc__V1__FieldViolation *v;
	va_list ap;

	if (call->n_violations == call->cap_violations) {
		size_t n = call->cap_violations ? call->cap_violations * 2 : 4;
		Parley__Rpc__V1__FieldViolation **nv =
		        pl_arena_alloc(call->arena, n * sizeof(*nv));
		if (nv == NULL)
			return pl_call_error(call, PL_INVALID_ARGUMENT,
			                     "invalid %s", field);
		if (call->n_violations)
			memcpy(nv, call->violations,
			       call->n_violations * sizeof(*nv));
		call->violations = nv;
		call->cap_violations = n;
	}
	v = pl_arena_alloc(call->arena, sizeof(*v));
	if (v == NULL)
		return pl_call_error(call, PL_INVALID_ARGUMENT, "invalid %s",
		                     field);
	parley__rpc__v1__field_violation__init(v);
	v->field = pl_arena_strdup(call->arena, field);
	va_start(ap, fmt);
	v->description = pl_arena_vprintf(call->arena, fmt, ap);
	va_end(ap);
	if (v->field == NULL || v->description == NULL)
		return pl_call_error(call, PL_INVALID_ARGUMENT, "invalid %s",
		                     field);
	call->violations[call->n_violations++] = v;
	if (call->code != PL_INVALID_ARGUMENT || call->message == NULL)
		pl_call_error(call, PL_INVALID_ARGUMENT, "%s: %s", field,
		              v->description);
	return PL_INVALID_ARGUMENT;
}

int64_t
pl_call_remaining_ms(const pl_call *call)
{
	if (call->deadline == 0)
		return INT64_MAX;
	return (call->deadline - pl_now_ns()) / 1000000;
}

bool
pl_call_is_tenant(const pl_call *call, const char *tenant_id)
{
	const char *t = call->principal->tenant_id;
	return t != NULL && tenant_id != NULL && t[0] != '\0' &&
	       strcmp(t, tenant_id) == 0;
}

// Metrics.

void
pl_rpc_metrics_observe(pl_rpc_metrics *m, int code, int64_t ns)
{
	uint64_t us = ns > 0 ? (uint64_t)ns / 1000 : 0;
	int b = 0;

	if (code < 0 || code >= PL_STATUS_COUNT)
		code = PL_UNKNOWN;
	while (b < PL_RPC_NBUCKETS - 1 && us > latency_bounds_us[b])
		b++;
	atomic_fetch_add_explicit(&m->count[code], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&m->bucket[b], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&m->sum_us, us, memory_order_relaxed);
}

// Dispatch.

static int
cmp_method(const void *a, const void *b)
{
	return strcmp(((const method_ent *)a)->full,
	              ((const method_ent *)b)->full);
}

static method_ent *
find_method(pl_rpc_server *s, const char *name)
{
	method_ent key = { .full = name };
	if (name == NULL)
		return NULL;
	return bsearch(&key, s->methods, s->n_methods, sizeof(key), cmp_method);
}

static bool
has_scope(const pl_principal *p, const char *scope)
{
	for (size_t i = 0; i < p->n_scopes; i++)
		if (p->scopes[i] != NULL && strcmp(p->scopes[i], scope) == 0)
			return true;
	return false;
}

static const char *
role_name(int role)
{
	switch (role) {
	case PL_ROLE_VIEWER:
		return "viewer";
	case PL_ROLE_AGENT:
		return "agent";
	case PL_ROLE_ADMIN:
		return "admin";
	case PL_ROLE_OWNER:
		return "owner";
	}
	return "none";
}

int
pl_rpc_check_access(pl_call *call, const pl_rpc_method *m)
{
	const pl_principal *p = call->principal;
	int need;

	switch (m->access) {
	case PL_CALLER_PUBLIC:
		return PL_OK;
	case PL_CALLER_SERVICE:
		if (p->kind ==
		    PARLEY__RPC__V1__PRINCIPAL_KIND__PRINCIPAL_KIND_SERVICE)
			return PL_OK;
		return pl_call_error(call, PL_PERMISSION_DENIED,
		                     "%s is for Parley services only",
		                     call->method);
	case PL_PLATFORM_ADMIN:
		if (p->kind ==
		            PARLEY__RPC__V1__PRINCIPAL_KIND__PRINCIPAL_KIND_SERVICE ||
		    (p->kind ==
		             PARLEY__RPC__V1__PRINCIPAL_KIND__PRINCIPAL_KIND_USER &&
		     p->platform_admin))
			return PL_OK;
		if (p->kind ==
		    PARLEY__RPC__V1__PRINCIPAL_KIND__PRINCIPAL_KIND_UNSPECIFIED)
			return pl_call_error(call, PL_UNAUTHENTICATED,
			                     "authentication required");
		return pl_call_error(call, PL_PERMISSION_DENIED,
		                     "%s is for platform administrators only",
		                     call->method);
	default:
		break;
	}

	// A tenant role: map PL_ROLE_* onto the proto's Role numbering.
	need = (int)m->access - (int)PL_ROLE_VIEWER + 1;
	if (p->kind ==
	    PARLEY__RPC__V1__PRINCIPAL_KIND__PRINCIPAL_KIND_UNSPECIFIED)
		return pl_call_error(call, PL_UNAUTHENTICATED,
		                     "authentication required");
	// Platform administrators pass tenant role checks, as services do:
	// they operate the whole platform (handlers that need a tenant check
	// for one).
	if (p->kind == PARLEY__RPC__V1__PRINCIPAL_KIND__PRINCIPAL_KIND_USER &&
	    p->platform_admin)
		return PL_OK;
	if (p->tenant_id == NULL || p->tenant_id[0] == '\0')
		return pl_call_error(call, PL_PERMISSION_DENIED,
		                     "%s needs a tenant", call->method);
	switch (p->kind) {
	case PARLEY__RPC__V1__PRINCIPAL_KIND__PRINCIPAL_KIND_SERVICE:
		return PL_OK;
	case PARLEY__RPC__V1__PRINCIPAL_KIND__PRINCIPAL_KIND_USER:
		if ((int)p->role >= need)
			return PL_OK;
		return pl_call_error(
		        call, PL_PERMISSION_DENIED,
		        "role %s may not call %s (needs %s)",
		        role_name((int)p->role + PL_ROLE_VIEWER - 1),
		        call->method, role_name(m->access));
	case PARLEY__RPC__V1__PRINCIPAL_KIND__PRINCIPAL_KIND_API_KEY:
		// A key needs the method's scope, and its role ceiling must
		// reach the method's role.
		if (m->scope == NULL)
			return pl_call_error(
			        call, PL_PERMISSION_DENIED,
			        "%s cannot be called with an API key",
			        call->method);
		if (!has_scope(p, m->scope))
			return pl_call_error(call, PL_PERMISSION_DENIED,
			                     "API key lacks scope %s",
			                     m->scope);
		if ((int)p->role < need)
			return pl_call_error(
			        call, PL_PERMISSION_DENIED,
			        "API key's role %s is below %s",
			        role_name((int)p->role + PL_ROLE_VIEWER - 1),
			        role_name(m->access));
		return PL_OK;
	default:
		return pl_call_error(call, PL_UNAUTHENTICATED,
		                     "unknown principal kind");
	}
}

static bool
secret_ok(pl_rpc_server *s, const ProtobufCBinaryData *b)
{
	uint8_t h[crypto_generichash_BYTES];

	// Hash first so the comparison is constant-time whatever the length.
	crypto_generichash(h, sizeof(h), b->data, b->len, NULL, 0);
	return sodium_memcmp(h, s->secret_hash, sizeof(h)) == 0;
}

// Encodes resp into a malloc'd buffer.
static int
encode_reply(const Parley__Rpc__V1__Response *resp, uint8_t **bufp,
             size_t *lenp)
{
	size_t n = parley__rpc__v1__response__get_packed_size(resp);

	*bufp = malloc(n ? n : 1);
	if (*bufp == NULL)
		return -1;
	parley__rpc__v1__response__pack(resp, *bufp);
	*lenp = n;
	return 0;
}

// The generic work of every call (Redis processCommand): unpack the
// envelope, find the method, check deadline and caller, unpack the input,
// run the handler, pack the output into resp (allocated in the arena).
static void
dispatch(pl_rpc_server *s, void *wstate, pl_arena *a, const uint8_t *data,
         size_t len, int64_t t_recv, Parley__Rpc__V1__Response *resp)
{
	Parley__Rpc__V1__Request *req = NULL;
	method_ent *me = NULL;
	pl_call call;
	ProtobufCMessage *in, *out;
	int rv;

	memset(&call, 0, sizeof(call));
	call.arena = a;
	call.principal = &no_principal;
	call.trace_id = "";
	call.worker = wstate;
	call.arg = s->cfg.arg;
	call.server = s;

	if (len > s->cfg.max_msg) {
		pl_call_error(&call, PL_INVALID_ARGUMENT,
		              "request of %zu bytes exceeds the limit of %zu",
		              len, s->cfg.max_msg);
		goto out_reply;
	}
	req = parley__rpc__v1__request__unpack(pl_arena_pb(a), len, data);
	if (req == NULL) {
		pl_call_error(&call, PL_INVALID_ARGUMENT,
		              "could not decode the request envelope");
		goto out_reply;
	}
	call.request_id = req->request_id;
	call.method = req->method;
	if (req->principal != NULL)
		call.principal = req->principal;
	if (req->trace_id != NULL && req->trace_id[0] != '\0')
		call.trace_id = req->trace_id;
	if (req->idempotency_key != NULL && req->idempotency_key[0] != '\0')
		call.idempotency_key = req->idempotency_key;
	if (req->timeout_ms > 0)
		call.deadline = t_recv + (int64_t)req->timeout_ms * 1000000;

	if (!secret_ok(s, &req->service_secret)) {
		pl_call_error(&call, PL_UNAUTHENTICATED,
		              "caller is not a Parley service");
		goto out_reply;
	}
	me = find_method(s, req->method);
	if (me == NULL) {
		pl_call_error(&call, PL_UNIMPLEMENTED, "unknown method %s",
		              req->method ? req->method : "");
		goto out_reply;
	}
	if (call.deadline != 0 && pl_now_ns() >= call.deadline) {
		pl_call_error(&call, PL_DEADLINE_EXCEEDED,
		              "deadline passed before %s started", me->full);
		goto out_reply;
	}
	if (pl_rpc_check_access(&call, me->m) != PL_OK)
		goto out_reply;
	if ((me->m->flags & PL_RPC_NEEDS_KEY) && call.idempotency_key == NULL) {
		pl_call_error(&call, PL_INVALID_ARGUMENT,
		              "%s needs an idempotency key", me->full);
		goto out_reply;
	}
	in = protobuf_c_message_unpack(me->in, pl_arena_pb(a), req->payload.len,
	                               req->payload.data);
	if (in == NULL) {
		pl_call_error(&call, PL_INVALID_ARGUMENT, "could not decode %s",
		              me->in->name);
		goto out_reply;
	}
	out = pl_arena_alloc(a, me->out->sizeof_message);
	if (out == NULL) {
		pl_call_error(&call, PL_RESOURCE_EXHAUSTED,
		              "request too large to process");
		goto out_reply;
	}
	me->out->message_init(out);

	pl_log_ctx_set(call.trace_id[0] ? call.trace_id : NULL,
	               call.principal->tenant_id);
	rv = me->m->handler(&call, in, out);
	pl_log_ctx_set(NULL, NULL);
	if (rv != PL_OK && call.code != rv)
		pl_call_error(&call, rv, "%s",
		              call.message && call.message[0]
		                      ? call.message
		                      : pl_status_name(rv));
	call.code = rv;

	if (rv == PL_OK && call.deadline != 0 && pl_now_ns() > call.deadline) {
		// The caller has given up; say so rather than pretend.
		pl_call_error(&call, PL_DEADLINE_EXCEEDED,
		              "%s finished after its deadline", me->full);
	} else if (rv == PL_OK) {
		size_t n = protobuf_c_message_get_packed_size(out);
		uint8_t *buf = pl_arena_alloc(a, n ? n : 1);
		if (buf == NULL) {
			pl_call_error(&call, PL_RESOURCE_EXHAUSTED,
			              "reply too large");
		} else {
			protobuf_c_message_pack(out, buf);
			resp->payload.data = buf;
			resp->payload.len = n;
		}
	}

out_reply:
	resp->request_id = call.request_id;
	resp->code = (Parley__Rpc__V1__Code)call.code;
	resp->message = call.message ? call.message : "";
	resp->details = call.violations;
	resp->n_details = call.n_violations;
	if (call.code != PL_OK) {
		resp->payload.data = NULL;
		resp->payload.len = 0;
	}
	pl_rpc_metrics_observe(me ? &me->metrics : &s->unknown_metrics,
	                       call.code, pl_now_ns() - t_recv);
}

int
pl_rpc_server_dispatch(pl_rpc_server *s, void *worker, pl_arena *arena,
                       const uint8_t *req, size_t len, uint8_t **reply,
                       size_t *reply_len)
{
	Parley__Rpc__V1__Response resp = PARLEY__RPC__V1__RESPONSE__INIT;

	dispatch(s, worker, arena, req, len, pl_now_ns(), &resp);
	if (encode_reply(&resp, reply, reply_len) != 0)
		return PL_RESOURCE_EXHAUSTED;
	return (int)resp.code;
}

// Health, answered by every server.

static int
health_check(pl_call *call, const void *in, void *outp)
{
	Parley__Rpc__V1__HealthCheckResponse *out = outp;
	pl_rpc_server *s = call->server;
	bool db_ok = true, mig_ok = true, ready = true;

	(void)in;
	if (s->cfg.ready != NULL)
		ready = s->cfg.ready(s->cfg.worker_arg, call->worker, &db_ok,
		                     &mig_ok);
	out->status =
	        ready ? PARLEY__RPC__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING_STATUS_SERVING
	              : PARLEY__RPC__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING_STATUS_NOT_SERVING;
	out->service = s->name;
	out->version = PL_VERSION;
	out->uptime_s = (pl_now_ns() - s->t_start) / 1000000000;
	out->database_ok = db_ok;
	out->migrations_ok = mig_ok;
	return PL_OK;
}

static const pl_rpc_method health_methods[] = {
	{ "Check", health_check, PL_CALLER_PUBLIC, NULL, 0 },
	{ NULL, NULL, 0, NULL, 0 },
};

static const pl_rpc_service health_service = {
	&parley__rpc__v1__health__descriptor,
	health_methods,
};

int
pl_rpc_table_check(const pl_rpc_service *svc, char *err, size_t errlen)
{
	const ProtobufCServiceDescriptor *d = svc->desc;
	size_t n = 0;

	if (d == NULL || svc->methods == NULL) {
		snprintf(err, errlen, "service table without descriptor");
		return -1;
	}
	for (const pl_rpc_method *m = svc->methods; m->name != NULL; m++) {
		const ProtobufCMethodDescriptor *md =
		        protobuf_c_service_descriptor_get_method_by_name(
		                d, m->name);
		if (md == NULL) {
			snprintf(err, errlen,
			         "%s: table names %s, which the "
			         "proto does not declare",
			         d->name, m->name);
			return -1;
		}
		if (m->handler == NULL) {
			snprintf(err, errlen, "%s.%s has no handler", d->name,
			         m->name);
			return -1;
		}
		if (m->access > PL_ROLE_OWNER) {
			snprintf(err, errlen,
			         "%s.%s has an unknown access rule", d->name,
			         m->name);
			return -1;
		}
		for (const pl_rpc_method *o = svc->methods; o < m; o++)
			if (strcmp(o->name, m->name) == 0) {
				snprintf(err, errlen, "%s.%s is listed twice",
				         d->name, m->name);
				return -1;
			}
		n++;
	}
	for (unsigned i = 0; i < d->n_methods; i++) {
		bool found = false;
		for (const pl_rpc_method *m = svc->methods; m->name != NULL;
		     m++)
			if (strcmp(m->name, d->methods[i].name) == 0)
				found = true;
		if (!found) {
			snprintf(err, errlen,
			         "%s.%s is declared in the proto "
			         "but has no handler",
			         d->name, d->methods[i].name);
			return -1;
		}
	}
	if (n != d->n_methods) {
		snprintf(err, errlen, "%s: %zu entries for %u methods", d->name,
		         n, d->n_methods);
		return -1;
	}
	return 0;
}

static int
add_service(pl_rpc_server *s, const pl_rpc_service *svc, size_t *k)
{
	const ProtobufCServiceDescriptor *d = svc->desc;

	for (const pl_rpc_method *m = svc->methods; m->name != NULL; m++) {
		const ProtobufCMethodDescriptor *md =
		        protobuf_c_service_descriptor_get_method_by_name(
		                d, m->name);
		method_ent *e = &s->methods[(*k)++];
		size_t n = strlen(d->name) + strlen(m->name) + 3;
		char *f = malloc(n);
		if (f == NULL)
			return -1;
		snprintf(f, n, "/%s/%s", d->name, m->name);
		e->full = f;
		e->m = m;
		e->in = md->input;
		e->out = md->output;
	}
	return 0;
}

int
pl_rpc_server_open(pl_rpc_server **out, const pl_rpc_server_config *cfg,
                   const pl_rpc_service *const *services)
{
	pl_rpc_server *s;
	size_t total = 0, k = 0;
	char err[256];

	*out = NULL;
	if (cfg->secret == NULL || cfg->secret[0] == '\0') {
		pl_error("rpc server needs a service secret");
		return PL_INVALID_ARGUMENT;
	}
	if (sodium_init() < 0)
		return PL_INTERNAL;
	for (size_t i = 0; services[i] != NULL; i++) {
		if (pl_rpc_table_check(services[i], err, sizeof(err)) != 0) {
			pl_error("handler table mismatch: %s", err);
			return PL_INVALID_ARGUMENT;
		}
		total += services[i]->desc->n_methods;
	}
	total += health_service.desc->n_methods;

	if ((s = calloc(1, sizeof(*s))) == NULL)
		return PL_RESOURCE_EXHAUSTED;
	s->cfg = *cfg;
	s->name = strdup(cfg->name ? cfg->name : "parley");
	s->listen = strdup(cfg->listen ? cfg->listen : "");
	s->cfg.name = s->name;
	s->cfg.listen = s->listen;
	s->cfg.secret = NULL; // only its hash is kept
	if (s->cfg.workers <= 0)
		s->cfg.workers = DEFAULT_WORKERS;
	if (s->cfg.max_msg == 0)
		s->cfg.max_msg = DEFAULT_MAX_MSG;
	if (s->cfg.arena_limit == 0)
		s->cfg.arena_limit = DEFAULT_ARENA_LIMIT;
	crypto_generichash(s->secret_hash, sizeof(s->secret_hash),
	                   (const uint8_t *)cfg->secret, strlen(cfg->secret),
	                   NULL, 0);
	pthread_mutex_init(&s->mtx, NULL);
	pthread_cond_init(&s->work_cv, NULL);
	pthread_cond_init(&s->idle_cv, NULL);

	s->methods = calloc(total, sizeof(*s->methods));
	if (s->methods == NULL || s->name == NULL || s->listen == NULL)
		goto out_free;
	for (size_t i = 0; services[i] != NULL; i++)
		if (add_service(s, services[i], &k) != 0)
			goto out_free;
	if (add_service(s, &health_service, &k) != 0)
		goto out_free;
	s->n_methods = k;
	qsort(s->methods, s->n_methods, sizeof(*s->methods), cmp_method);
	for (size_t i = 1; i < s->n_methods; i++)
		if (strcmp(s->methods[i - 1].full, s->methods[i].full) == 0) {
			pl_error("method %s is served twice",
			         s->methods[i].full);
			goto out_free;
		}
	s->t_start = pl_now_ns();
	*out = s;
	return PL_OK;

out_free:
	pl_rpc_server_close(s);
	return PL_RESOURCE_EXHAUSTED;
}

// Connections.

// Takes a worker state, waiting for one to come back when all are busy.
static worker *
worker_take(pl_rpc_server *s)
{
	worker *w;

	pthread_mutex_lock(&s->mtx);
	while ((w = s->free_workers) == NULL)
		pthread_cond_wait(&s->work_cv, &s->mtx);
	s->free_workers = w->next;
	pthread_mutex_unlock(&s->mtx);
	return w;
}

static void
worker_give(pl_rpc_server *s, worker *w)
{
	pthread_mutex_lock(&s->mtx);
	w->next = s->free_workers;
	s->free_workers = w;
	pthread_cond_signal(&s->work_cv);
	pthread_mutex_unlock(&s->mtx);
}

// Runs one request and writes its reply frame into c->out; returns the
// frame's length, or 0 when out of memory (the connection is dropped).
static size_t
serve(conn *c, const uint8_t *req, size_t len, bool too_big, int64_t t_recv)
{
	pl_rpc_server *s = c->s;
	Parley__Rpc__V1__Response resp = PARLEY__RPC__V1__RESPONSE__INIT;
	worker *w = worker_take(s);
	size_t n;

	pl_arena_reset(&w->arena);
	if (too_big) {
		// Read and dropped: answer as dispatch answers a long request.
		pl_call call = { .arena = &w->arena };
		pl_call_error(&call, PL_INVALID_ARGUMENT,
		              "request of %zu bytes exceeds the limit of %zu",
		              len, s->cfg.max_msg);
		resp.code = (Parley__Rpc__V1__Code)call.code;
		resp.message = call.message ? call.message : "";
		pl_rpc_metrics_observe(&s->unknown_metrics, call.code,
		                       pl_now_ns() - t_recv);
	} else {
		dispatch(s, w->state, &w->arena, req, len, t_recv, &resp);
	}
	n = parley__rpc__v1__response__get_packed_size(&resp) + 4;
	if (n > c->out_cap || (c->out_cap > (1u << 20) && n <= PL_WIRE_BUF)) {
		uint8_t *b = malloc(n > PL_WIRE_BUF ? n : PL_WIRE_BUF);
		if (b == NULL) {
			worker_give(s, w);
			pl_error("could not allocate a reply");
			return 0;
		}
		free(c->out);
		c->out = b;
		c->out_cap = n > PL_WIRE_BUF ? n : PL_WIRE_BUF;
	}
	parley__rpc__v1__response__pack(&resp, c->out + 4);
	worker_give(s, w);
	return n;
}

static void *
conn_main(void *arg)
{
	conn *c = arg;
	pl_rpc_server *s = c->s;

	pthread_setname_np(pthread_self(), "rpc-conn");

	for (;;) {
		const uint8_t *req;
		size_t len, n;
		bool got = false, stop;
		int rv;

		pthread_mutex_lock(&s->mtx);
		stop = s->stopping;
		c->idle = !stop;
		pthread_mutex_unlock(&s->mtx);
		if (stop)
			break;
		// No deadline while reading: pl_rpc_server_stop closes
		// connections that wait here. A peer that stalls mid-frame
		// holds this thread until then (at most MAX_CONNS of them;
		// the RPC ports are internal).
		rv = pl_wire_recv(&c->w, s->cfg.max_msg, DROP_MAX, 0, &req,
		                  &len, &got);
		pthread_mutex_lock(&s->mtx);
		c->idle = false;
		if (rv == 0 || rv == PL_WIRE_TOOBIG)
			s->busy++;
		pthread_mutex_unlock(&s->mtx);
		if (rv != 0 && rv != PL_WIRE_TOOBIG)
			break; // closed, reset, or a frame too long to drop
		n = serve(c, req, len, rv == PL_WIRE_TOOBIG, pl_now_ns());
		rv = n == 0 ? NNG_ENOMEM
		            : pl_wire_send(&c->w, c->out, n,
		                           pl_now_ns() + IO_BUDGET_NS);
		pthread_mutex_lock(&s->mtx);
		s->busy--;
		pthread_mutex_unlock(&s->mtx);
		if (rv != 0)
			break;
	}
	pthread_mutex_lock(&s->mtx);
	c->idle = false;
	c->exited = true;
	s->n_conns--;
	s->n_direct -= c->w.fd >= 0;
	pthread_cond_broadcast(&s->idle_cv);
	pthread_mutex_unlock(&s->mtx);
	return NULL;
}

// Joins and frees connections whose threads have ended (under mtx).
static void
reap_conns(pl_rpc_server *s, bool all)
{
	conn **pp = &s->conns;

	while (*pp != NULL) {
		conn *c = *pp;
		if (!c->exited && !all) {
			pp = &c->next;
			continue;
		}
		*pp = c->next;
		pthread_mutex_unlock(&s->mtx);
		pthread_join(c->thr, NULL);
		pl_wire_fini(&c->w);
		free(c->out);
		free(c);
		pthread_mutex_lock(&s->mtx);
	}
}

static void *
accept_main(void *arg)
{
	acceptor *a = arg;
	pl_rpc_server *s = a->s;
	nng_aio *aio;

	pthread_setname_np(pthread_self(), "rpc-accept");

	if (nng_aio_alloc(&aio, NULL, NULL) != 0) {
		pl_error("%s: could not accept connections: out of memory",
		         s->name);
		return NULL;
	}
	for (;;) {
		nng_stream *st;
		conn *c;
		int rv;

		nng_stream_listener_accept(a->l, aio);
		nng_aio_wait(aio);
		rv = nng_aio_result(aio);
		pthread_mutex_lock(&s->mtx);
		if (s->stopping) {
			pthread_mutex_unlock(&s->mtx);
			if (rv == 0)
				nng_stream_free(nng_aio_get_output(aio, 0));
			break;
		}
		reap_conns(s, false);
		pthread_mutex_unlock(&s->mtx);
		if (rv == NNG_ECLOSED || rv == NNG_ECANCELED)
			break;
		if (rv != 0) {
			// Out of descriptors or such: do not spin.
			pl_warn("%s: accept failed: %s", s->name,
			        nng_strerror(rv));
			nng_msleep(10);
			continue;
		}
		st = nng_aio_get_output(aio, 0);
		c = calloc(1, sizeof(*c));
		if (c == NULL || pl_wire_init(&c->w, st) != 0) {
			free(c);
			nng_stream_free(st);
			continue;
		}
		c->s = s;
		pthread_mutex_lock(&s->mtx);
		if (s->stopping || s->n_conns >= MAX_CONNS) {
			pthread_mutex_unlock(&s->mtx);
			pl_wire_fini(&c->w);
			free(c);
			continue;
		}
		if (pthread_create(&c->thr, NULL, conn_main, c) != 0) {
			pthread_mutex_unlock(&s->mtx);
			pl_wire_fini(&c->w);
			free(c);
			continue;
		}
		s->n_conns++;
		s->n_direct += c->w.fd >= 0;
		c->next = s->conns;
		s->conns = c;
		pthread_mutex_unlock(&s->mtx);
	}
	nng_aio_free(aio);
	return NULL;
}

static int
nng_status(int rv)
{
	switch (rv) {
	case 0:
		return PL_OK;
	case NNG_EINVAL:
	case NNG_EADDRINVAL:
	case NNG_ENOTSUP:
		return PL_INVALID_ARGUMENT;
	case NNG_ENOMEM:
		return PL_RESOURCE_EXHAUSTED;
	case NNG_ETIMEDOUT:
		return PL_DEADLINE_EXCEEDED;
	default:
		return PL_UNAVAILABLE;
	}
}

static int
listen_all(pl_rpc_server *s)
{
	char *urls = strdup(s->listen), *save = NULL;
	size_t cap = 1;
	int rv = PL_OK;

	if (urls == NULL)
		return PL_RESOURCE_EXHAUSTED;
	for (const char *p = s->listen; *p; p++)
		cap += *p == ',';
	s->acceptors = calloc(cap, sizeof(*s->acceptors));
	if (s->acceptors == NULL) {
		free(urls);
		return PL_RESOURCE_EXHAUSTED;
	}
	for (char *u = strtok_r(urls, ", ", &save); u != NULL;
	     u = strtok_r(NULL, ", ", &save)) {
		acceptor *a = &s->acceptors[s->n_acceptors];
		char url[512];
		int e = 0;
		if (pl_wire_url(u, url, sizeof(url)) != 0)
			e = NNG_EADDRINVAL;
		if (e == 0 && strncmp(u, "tls+", 4) == 0 && s->tls == NULL) {
			e = nng_tls_config_alloc(&s->tls, NNG_TLS_MODE_SERVER);
			if (e == 0 && s->cfg.tls_cert && s->cfg.tls_key)
				e = nng_tls_config_cert_key_file(
				        s->tls, s->cfg.tls_cert, NULL);
		}
		if (e == 0)
			e = pl_wire_listener(&a->l, url, s->tls);
		if (e != 0) {
			pl_error("could not listen on %s: %s", u,
			         nng_strerror(e));
			rv = nng_status(e);
			break;
		}
		a->s = s;
		s->n_acceptors++;
	}
	free(urls);
	if (rv == PL_OK && s->n_acceptors == 0) {
		pl_error("no address to listen on");
		rv = PL_INVALID_ARGUMENT;
	}
	return rv;
}

int
pl_rpc_server_start(pl_rpc_server *s)
{
	int rv;

	if (s->started)
		return PL_FAILED_PRECONDITION;
	s->started = true;

	// Worker states first (each is used by one call at a time, from
	// whichever connection thread runs it).
	s->workers = calloc((size_t)s->cfg.workers, sizeof(*s->workers));
	if (s->workers == NULL)
		return PL_RESOURCE_EXHAUSTED;
	for (int i = 0; i < s->cfg.workers; i++) {
		worker *w = &s->workers[i];
		w->idx = i;
		pl_arena_init(&w->arena, 0, s->cfg.arena_limit);
		s->n_workers++;
		rv = PL_OK;
		if (s->cfg.worker_init != NULL)
			rv = s->cfg.worker_init(s->cfg.worker_arg, i,
			                        &w->state);
		if (rv != PL_OK) {
			pl_error("worker %d could not start: %s", i,
			         pl_status_name(rv));
			w->state = NULL;
			w->idx = -1; // nothing to finish
			return rv;
		}
		w->next = s->free_workers;
		s->free_workers = w;
	}
	if ((rv = listen_all(s)) != PL_OK)
		return rv;
	for (size_t i = 0; i < s->n_acceptors; i++) {
		acceptor *a = &s->acceptors[i];
		if (pthread_create(&a->thr, NULL, accept_main, a) != 0)
			return PL_RESOURCE_EXHAUSTED;
		a->running = true;
	}
	pl_info("%s listening on %s with %d workers", s->name, s->listen,
	        s->n_workers);
	return PL_OK;
}

void
pl_rpc_server_stop(pl_rpc_server *s)
{
	if (s == NULL || s->stopped)
		return;
	s->stopped = true;

	pthread_mutex_lock(&s->mtx);
	s->stopping = true;
	pthread_mutex_unlock(&s->mtx);
	// Stop accepting; then close the connections that wait for a request.
	// Those inside a call finish it, send the reply, and close.
	for (size_t i = 0; i < s->n_acceptors; i++)
		nng_stream_listener_close(s->acceptors[i].l);
	for (size_t i = 0; i < s->n_acceptors; i++)
		if (s->acceptors[i].running) {
			pthread_join(s->acceptors[i].thr, NULL);
			s->acceptors[i].running = false;
		}
	pthread_mutex_lock(&s->mtx);
	for (conn *c = s->conns; c != NULL; c = c->next)
		if (c->idle)
			pl_wire_close(&c->w);
	while (s->n_conns > 0)
		pthread_cond_wait(&s->idle_cv, &s->mtx);
	reap_conns(s, true);
	pthread_mutex_unlock(&s->mtx);
	for (int i = 0; i < s->n_workers; i++)
		if (s->cfg.worker_fini != NULL && s->workers[i].idx >= 0)
			s->cfg.worker_fini(s->cfg.worker_arg,
			                   s->workers[i].state);
	pl_info("%s stopped", s->name);
}

void
pl_rpc_server_close(pl_rpc_server *s)
{
	if (s == NULL)
		return;
	if (s->started)
		pl_rpc_server_stop(s);
	for (int i = 0; i < s->n_workers; i++)
		pl_arena_fini(&s->workers[i].arena);
	free(s->workers);
	for (size_t i = 0; i < s->n_acceptors; i++)
		nng_stream_listener_free(s->acceptors[i].l);
	free(s->acceptors);
	if (s->tls)
		nng_tls_config_free(s->tls);
	for (size_t i = 0; i < s->n_methods; i++)
		free((char *)s->methods[i].full);
	free(s->methods);
	pthread_mutex_destroy(&s->mtx);
	pthread_cond_destroy(&s->work_cv);
	pthread_cond_destroy(&s->idle_cv);
	free(s->name);
	free(s->listen);
	free(s);
}

bool
pl_rpc_server_ready(pl_rpc_server *s)
{
	bool db_ok, mig_ok;

	if (s->stopping)
		return false;
	if (s->cfg.ready == NULL)
		return true;
	// Readiness asks on the caller's thread without a worker's state; the
	// callback opens what it needs.
	return s->cfg.ready(s->cfg.worker_arg, NULL, &db_ok, &mig_ok);
}

static int
append(char **buf, size_t *len, size_t *cap, const char *fmt, ...)
{
	va_list ap;
	int n;

	for (;;) {
		va_start(ap, fmt);
		n = vsnprintf(*buf + *len, *cap - *len, fmt, ap);
		va_end(ap);
		if (n < 0)
			return -1;
		if ((size_t)n < *cap - *len) {
			*len += (size_t)n;
			return 0;
		}
		char *nb = realloc(*buf, *cap * 2 + (size_t)n);
		if (nb == NULL)
			return -1;
		*buf = nb;
		*cap = *cap * 2 + (size_t)n;
	}
}

static void
metrics_of(char **buf, size_t *len, size_t *cap, const char *svc,
           const char *method, pl_rpc_metrics *m)
{
	uint64_t cum = 0, total = 0;

	for (int c = 0; c < PL_STATUS_COUNT; c++) {
		uint64_t v = atomic_load_explicit(&m->count[c],
		                                  memory_order_relaxed);
		if (v)
			append(buf, len, cap,
			       "parley_rpc_requests_total{service=\"%s\","
			       "method=\"%s\",code=\"%s\"} %" PRIu64 "\n",
			       svc, method, pl_status_name(c), v);
		total += v;
	}
	if (total == 0)
		return;
	for (int b = 0; b < PL_RPC_NBUCKETS; b++) {
		cum += atomic_load_explicit(&m->bucket[b],
		                            memory_order_relaxed);
		if (b < PL_RPC_NBUCKETS - 1)
			append(buf, len, cap,
			       "parley_rpc_latency_seconds_bucket{service=\"%"
			       "s\","
			       "method=\"%s\",le=\"%g\"} %" PRIu64 "\n",
			       svc, method, latency_bounds_us[b] / 1e6, cum);
		else
			append(buf, len, cap,
			       "parley_rpc_latency_seconds_bucket{service=\"%"
			       "s\","
			       "method=\"%s\",le=\"+Inf\"} %" PRIu64 "\n",
			       svc, method, cum);
	}
	append(buf, len, cap,
	       "parley_rpc_latency_seconds_sum{service=\"%s\",method=\"%s\"} "
	       "%.6f\n",
	       svc, method,
	       atomic_load_explicit(&m->sum_us, memory_order_relaxed) / 1e6);
	append(buf, len, cap,
	       "parley_rpc_latency_seconds_count{service=\"%s\",method=\"%s\"} "
	       "%" PRIu64 "\n",
	       svc, method, cum);
}

char *
pl_rpc_server_metrics(pl_rpc_server *s)
{
	size_t len = 0, cap = 4096;
	char *buf = malloc(cap);

	if (buf == NULL)
		return NULL;
	buf[0] = '\0';
	append(&buf, &len, &cap,
	       "# HELP parley_rpc_requests_total RPC calls by method and "
	       "status.\n"
	       "# TYPE parley_rpc_requests_total counter\n"
	       "# HELP parley_rpc_latency_seconds RPC latency from receipt to "
	       "reply.\n"
	       "# TYPE parley_rpc_latency_seconds histogram\n");
	for (size_t i = 0; i < s->n_methods; i++)
		metrics_of(&buf, &len, &cap, s->name, s->methods[i].full,
		           &s->methods[i].metrics);
	metrics_of(&buf, &len, &cap, s->name, "unknown", &s->unknown_metrics);
	append(&buf, &len, &cap,
	       "# TYPE parley_up gauge\nparley_up{service=\"%s\"} 1\n",
	       s->name);
	pthread_mutex_lock(&s->mtx);
	append(&buf, &len, &cap,
	       "# TYPE parley_rpc_in_flight gauge\n"
	       "parley_rpc_in_flight{service=\"%s\"} %d\n"
	       "# TYPE parley_rpc_connections gauge\n"
	       "parley_rpc_connections{service=\"%s\"} %d\n"
	       "# TYPE parley_rpc_connections_direct gauge\n"
	       "parley_rpc_connections_direct{service=\"%s\"} %d\n",
	       s->name, s->busy, s->name, s->n_conns, s->name, s->n_direct);
	pthread_mutex_unlock(&s->mtx);
	return buf;
}

int
pl_rpc_server_in_flight(pl_rpc_server *s)
{
	int n;

	pthread_mutex_lock(&s->mtx);
	n = s->busy;
	pthread_mutex_unlock(&s->mtx);
	return n;
}
