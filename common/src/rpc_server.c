// The RPC server: nng REP contexts receive asynchronously and hand requests
// to a fixed pool of worker threads, which dispatch through the services'
// handler tables and send replies asynchronously.
//
// Why this shape: nng's aio callbacks must not block, while handlers block on
// libpq. Blocking nng_recv in each worker costs two extra thread wake-ups per
// call (receive and send completion), which is where raw blocking REQ/REP
// loses against gRPC. Here a worker wakes once per request, and under load a
// worker takes the next queued request without sleeping at all.
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
#include <nng/protocol/reqrep0/rep.h>
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
// Past max_msg plus this, nng drops the connection instead of delivering.
#define RECV_GRACE (1u << 20)

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

typedef enum { CTX_IDLE, CTX_RECV, CTX_QUEUED, CTX_SEND } ctx_state;

typedef struct srv_ctx {
	pl_rpc_server *s;
	nng_ctx ctx;
	nng_aio *aio;
	ctx_state state;
	nng_msg *msg;         // request while queued
	int64_t t_recv;       // when the request arrived (monotonic ns)
	struct srv_ctx *next; // work queue link
} srv_ctx;

typedef struct worker {
	pl_rpc_server *s;
	int idx;
	pthread_t thr;
	pl_arena arena;
	void *state;
	int init_rv;
	bool booted;
} worker;

struct pl_rpc_server {
	pl_rpc_server_config cfg;
	char *name;
	char *listen;
	uint8_t secret_hash[crypto_generichash_BYTES];
	method_ent *methods;
	size_t n_methods;
	nng_socket sock;
	bool sock_open;
	nng_listener *listeners;
	size_t n_listeners;
	nng_tls_config *tls;
	srv_ctx *ctxs;
	int n_ctxs;
	worker *workers;
	int n_workers;
	// Work queue and shutdown, under mtx.
	pthread_mutex_t mtx;
	pthread_cond_t work_cv;
	pthread_cond_t idle_cv;
	srv_ctx *q_head, *q_tail;
	int busy; // contexts QUEUED or SEND (in flight)
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

// Encodes resp into a new nng message (or a malloc'd buffer when bufp).
static int
encode_reply(const Parley__Rpc__V1__Response *resp, nng_msg **msgp,
             uint8_t **bufp, size_t *lenp)
{
	size_t n = parley__rpc__v1__response__get_packed_size(resp);

	if (msgp != NULL) {
		if (nng_msg_alloc(msgp, n) != 0)
			return -1;
		parley__rpc__v1__response__pack(resp, nng_msg_body(*msgp));
		return 0;
	}
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
	if (encode_reply(&resp, NULL, reply, reply_len) != 0)
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
	if (s->cfg.contexts <= 0)
		s->cfg.contexts = 4 * s->cfg.workers;
	if (s->cfg.contexts < s->cfg.workers)
		s->cfg.contexts = s->cfg.workers;
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

// Work queue.

static void
enqueue(pl_rpc_server *s, srv_ctx *c)
{
	pthread_mutex_lock(&s->mtx);
	c->next = NULL;
	if (s->q_tail)
		s->q_tail->next = c;
	else
		s->q_head = c;
	s->q_tail = c;
	pthread_cond_signal(&s->work_cv);
	pthread_mutex_unlock(&s->mtx);
}

static void
ctx_done(pl_rpc_server *s, srv_ctx *c)
{
	// A call finished sending; re-arm unless stopping.
	pthread_mutex_lock(&s->mtx);
	s->busy--;
	if (s->stopping) {
		c->state = CTX_IDLE;
		pthread_cond_broadcast(&s->idle_cv);
		pthread_mutex_unlock(&s->mtx);
		return;
	}
	c->state = CTX_RECV;
	pthread_mutex_unlock(&s->mtx);
	nng_ctx_recv(c->ctx, c->aio);
}

static void
ctx_cb(void *arg)
{
	srv_ctx *c = arg;
	pl_rpc_server *s = c->s;
	int rv = nng_aio_result(c->aio);

	switch (c->state) {
	case CTX_RECV:
		if (rv != 0) {
			pthread_mutex_lock(&s->mtx);
			if (s->stopping || rv == NNG_ECLOSED ||
			    rv == NNG_ECANCELED) {
				c->state = CTX_IDLE;
				pthread_cond_broadcast(&s->idle_cv);
				pthread_mutex_unlock(&s->mtx);
				return;
			}
			pthread_mutex_unlock(&s->mtx);
			nng_ctx_recv(c->ctx, c->aio);
			return;
		}
		c->msg = nng_aio_get_msg(c->aio);
		c->t_recv = pl_now_ns();
		pthread_mutex_lock(&s->mtx);
		c->state = CTX_QUEUED;
		s->busy++;
		pthread_mutex_unlock(&s->mtx);
		enqueue(s, c);
		return;
	case CTX_SEND:
		if (rv != 0) {
			nng_msg *m = nng_aio_get_msg(c->aio);
			if (m != NULL)
				nng_msg_free(m);
			nng_aio_set_msg(c->aio, NULL);
		}
		ctx_done(s, c);
		return;
	default:
		return;
	}
}

static void
handle(worker *w, srv_ctx *c)
{
	pl_rpc_server *s = w->s;
	Parley__Rpc__V1__Response resp = PARLEY__RPC__V1__RESPONSE__INIT;
	nng_msg *reply = NULL;

	pl_arena_reset(&w->arena);
	dispatch(s, w->state, &w->arena, nng_msg_body(c->msg),
	         nng_msg_len(c->msg), c->t_recv, &resp);
	nng_msg_free(c->msg);
	c->msg = NULL;
	if (encode_reply(&resp, &reply, NULL, NULL) != 0) {
		// Out of memory: drop the reply; the client times out.
		pl_error("could not allocate a reply");
		ctx_done(s, c);
		return;
	}
	c->state = CTX_SEND;
	nng_aio_set_msg(c->aio, reply);
	nng_ctx_send(c->ctx, c->aio);
}

static void *
worker_main(void *arg)
{
	worker *w = arg;
	pl_rpc_server *s = w->s;

	for (;;) {
		srv_ctx *c;
		pthread_mutex_lock(&s->mtx);
		while (s->q_head == NULL && !(s->stopping && s->busy == 0))
			pthread_cond_wait(&s->work_cv, &s->mtx);
		c = s->q_head;
		if (c == NULL) {
			pthread_mutex_unlock(&s->mtx);
			break;
		}
		s->q_head = c->next;
		if (s->q_head == NULL)
			s->q_tail = NULL;
		pthread_mutex_unlock(&s->mtx);
		handle(w, c);
	}
	return NULL;
}

// Per-worker state must be made on the worker's own thread (libpq
// connections are not to be shared), but before any call is served.
static void *
worker_boot(void *arg)
{
	worker *w = arg;
	pl_rpc_server *s = w->s;

	w->init_rv = PL_OK;
	if (s->cfg.worker_init != NULL)
		w->init_rv = s->cfg.worker_init(s->cfg.worker_arg, w->idx,
		                                &w->state);
	pthread_mutex_lock(&s->mtx);
	w->booted = true;
	pthread_cond_broadcast(&s->idle_cv);
	pthread_mutex_unlock(&s->mtx);
	if (w->init_rv != PL_OK)
		return NULL;
	worker_main(w);
	if (s->cfg.worker_fini != NULL)
		s->cfg.worker_fini(s->cfg.worker_arg, w->state);
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
	s->listeners = calloc(cap, sizeof(*s->listeners));
	if (s->listeners == NULL) {
		free(urls);
		return PL_RESOURCE_EXHAUSTED;
	}
	for (char *u = strtok_r(urls, ", ", &save); u != NULL;
	     u = strtok_r(NULL, ", ", &save)) {
		nng_listener l;
		int e = nng_listener_create(&l, s->sock, u);
		if (e == 0 && strncmp(u, "tls+", 4) == 0) {
			if (s->tls == NULL) {
				e = nng_tls_config_alloc(&s->tls,
				                         NNG_TLS_MODE_SERVER);
				if (e == 0 && s->cfg.tls_cert && s->cfg.tls_key)
					e = nng_tls_config_cert_key_file(
					        s->tls, s->cfg.tls_cert, NULL);
			}
			if (e == 0)
				e = nng_listener_set_ptr(l, NNG_OPT_TLS_CONFIG,
				                         s->tls);
		}
		if (e == 0)
			e = nng_listener_start(l, 0);
		if (e != 0) {
			pl_error("could not listen on %s: %s", u,
			         nng_strerror(e));
			rv = nng_status(e);
			break;
		}
		s->listeners[s->n_listeners++] = l;
	}
	free(urls);
	if (rv == PL_OK && s->n_listeners == 0) {
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
	if ((rv = nng_rep0_open(&s->sock)) != 0)
		return nng_status(rv);
	s->sock_open = true;
	nng_socket_set_size(s->sock, NNG_OPT_RECVMAXSZ,
	                    s->cfg.max_msg + RECV_GRACE);

	// Workers first, each making its state on its own thread.
	s->workers = calloc((size_t)s->cfg.workers, sizeof(*s->workers));
	if (s->workers == NULL)
		return PL_RESOURCE_EXHAUSTED;
	for (int i = 0; i < s->cfg.workers; i++) {
		worker *w = &s->workers[i];
		w->s = s;
		w->idx = i;
		pl_arena_init(&w->arena, 0, s->cfg.arena_limit);
		if (pthread_create(&w->thr, NULL, worker_boot, w) != 0) {
			pl_arena_fini(&w->arena);
			break;
		}
		s->n_workers++;
	}
	pthread_mutex_lock(&s->mtx);
	for (int i = 0; i < s->n_workers; i++)
		while (!s->workers[i].booted)
			pthread_cond_wait(&s->idle_cv, &s->mtx);
	pthread_mutex_unlock(&s->mtx);
	rv = s->n_workers == s->cfg.workers ? PL_OK : PL_RESOURCE_EXHAUSTED;
	for (int i = 0; i < s->n_workers && rv == PL_OK; i++)
		if (s->workers[i].init_rv != PL_OK) {
			pl_error("worker %d could not start: %s", i,
			         pl_status_name(s->workers[i].init_rv));
			rv = s->workers[i].init_rv;
		}
	if (rv != PL_OK)
		return rv;

	s->ctxs = calloc((size_t)s->cfg.contexts, sizeof(*s->ctxs));
	if (s->ctxs == NULL)
		return PL_RESOURCE_EXHAUSTED;
	for (int i = 0; i < s->cfg.contexts; i++) {
		srv_ctx *c = &s->ctxs[i];
		c->s = s;
		if (nng_aio_alloc(&c->aio, ctx_cb, c) != 0)
			return PL_RESOURCE_EXHAUSTED;
		if (nng_ctx_open(&c->ctx, s->sock) != 0) {
			nng_aio_free(c->aio);
			c->aio = NULL;
			return PL_RESOURCE_EXHAUSTED;
		}
		s->n_ctxs++;
	}
	if ((rv = listen_all(s)) != PL_OK)
		return rv;
	for (int i = 0; i < s->n_ctxs; i++) {
		s->ctxs[i].state = CTX_RECV;
		nng_ctx_recv(s->ctxs[i].ctx, s->ctxs[i].aio);
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
	// Closing a listener would close its connections too, and with them
	// the replies still to be sent: stop receiving instead, and close the
	// socket once in-flight calls have answered. Requests left unread go
	// back to the clients' REQ sockets, which resend them to a replica.
	// Cancel receives that hold no request; queued and running calls go on.
	for (int i = 0; i < s->n_ctxs; i++)
		nng_aio_cancel(s->ctxs[i].aio);
	pthread_mutex_lock(&s->mtx);
	for (;;) {
		bool waiting = s->busy > 0;
		for (int i = 0; i < s->n_ctxs && !waiting; i++)
			waiting = s->ctxs[i].state == CTX_RECV;
		if (!waiting)
			break;
		pthread_cond_wait(&s->idle_cv, &s->mtx);
	}
	pthread_cond_broadcast(&s->work_cv);
	pthread_mutex_unlock(&s->mtx);
	for (int i = 0; i < s->n_workers; i++)
		pthread_join(s->workers[i].thr, NULL);
	// Replies handed to a pipe are written asynchronously; give them a
	// moment before the socket (and its pipes) go.
	if (s->n_ctxs > 0)
		nng_msleep(50);
	for (int i = 0; i < s->n_ctxs; i++)
		nng_aio_stop(s->ctxs[i].aio);
	if (s->sock_open) {
		nng_close(s->sock);
		s->sock_open = false;
	}
	pl_info("%s stopped", s->name);
}

void
pl_rpc_server_close(pl_rpc_server *s)
{
	if (s == NULL)
		return;
	if (s->started)
		pl_rpc_server_stop(s);
	for (int i = 0; i < s->n_ctxs; i++) {
		nng_ctx_close(s->ctxs[i].ctx);
		nng_aio_free(s->ctxs[i].aio);
	}
	free(s->ctxs);
	for (int i = 0; i < s->n_workers; i++)
		pl_arena_fini(&s->workers[i].arena);
	free(s->workers);
	free(s->listeners);
	if (s->tls)
		nng_tls_config_free(s->tls);
	if (s->sock_open)
		nng_close(s->sock);
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
	return buf;
}
