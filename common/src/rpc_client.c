// The RPC client: a pool of stream connections to one or more replicas.
// A call takes an idle connection (round robin over the replicas), or dials
// a new one up to the per-replica limit, writes its request frame and reads
// the reply on the same connection; nng wakes the calling thread directly
// when the reply arrives. Safe to share between threads.
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nng/nng.h>
#include <nng/supplemental/tls/tls.h>
#include <nng/supplemental/util/platform.h>
#include <sodium.h>

#include "pl/id.h"
#include "pl/log.h"
#include "pl/rpc.h"
#include "rpc_internal.h"

#define DEFAULT_TIMEOUT_MS 5000
#define DEFAULT_ATTEMPTS   3
#define DEFAULT_CONNS      64
#define MAX_REPLY          (64u << 20)
#define DOWN_NS            (50LL * 1000000) // a refused replica rests

typedef struct cconn {
	pl_wire w;
	int rep;            // replica index
	bool reused;        // served a call before this one
	struct cconn *next; // idle list
} cconn;

typedef struct replica {
	char *url; // for nng's stream API
	nng_stream_dialer *d;
	cconn *idle; // idle connections (LIFO)
	int n;       // connections open or being dialed
	int64_t down_until;
	bool unreachable; // the last dial failed
} replica;

struct pl_rpc_client {
	nng_tls_config *tls;
	char *service;
	char *secret;
	size_t secret_len;
	int64_t timeout_ms;
	int attempts;
	int max_conns; // per replica
	replica *reps;
	int n_reps;
	pthread_mutex_t mtx;
	pthread_cond_t cv; // a connection went idle or closed
	unsigned rr;
	_Atomic uint64_t next_id;
	_Atomic bool ever_connected;
};

static void
conn_free(cconn *k)
{
	pl_wire_fini(&k->w);
	free(k);
}

// Gives back a connection: idle when it may serve again, else closed.
static void
conn_put(pl_rpc_client *c, cconn *k, bool keep)
{
	pthread_mutex_lock(&c->mtx);
	if (keep) {
		k->reused = true;
		k->next = c->reps[k->rep].idle;
		c->reps[k->rep].idle = k;
	} else {
		c->reps[k->rep].n--;
	}
	pthread_cond_signal(&c->cv);
	pthread_mutex_unlock(&c->mtx);
	if (!keep)
		conn_free(k);
}

// Dials replica r (its slot is already counted); NULL on failure, with
// the replica resting a moment.
static cconn *
conn_dial(pl_rpc_client *c, int r, int64_t deadline)
{
	replica *rp = &c->reps[r];
	cconn *k = calloc(1, sizeof(*k));
	int rv = k == NULL ? NNG_ENOMEM : pl_wire_dial(&k->w, rp->d, deadline);

	pthread_mutex_lock(&c->mtx);
	rp->unreachable = rv != 0;
	if (rv != 0) {
		rp->n--;
		if (rv != NNG_ETIMEDOUT)
			rp->down_until = pl_now_ns() + DOWN_NS;
		pthread_cond_signal(&c->cv);
	}
	pthread_mutex_unlock(&c->mtx);
	if (rv != 0) {
		free(k);
		return NULL;
	}
	k->rep = r;
	atomic_store(&c->ever_connected, true);
	return k;
}

// Takes a connection before deadline: an idle one of the next replica in
// turn, a new one to it, or any idle one; waits when every replica is at
// its limit or resting. NULL when the deadline passes.
static cconn *
conn_get(pl_rpc_client *c, int64_t deadline)
{
	pthread_mutex_lock(&c->mtx);
	for (;;) {
		int64_t now = pl_now_ns(), wake = deadline;
		int r0 = (int)(c->rr++ % (unsigned)c->n_reps);
		if (now >= deadline)
			break;
		for (int i = 0; i < c->n_reps; i++) {
			int r = (r0 + i) % c->n_reps;
			replica *rp = &c->reps[r];
			cconn *k = rp->idle;
			if (k != NULL) {
				rp->idle = k->next;
				pthread_mutex_unlock(&c->mtx);
				return k;
			}
			if (rp->down_until > now) {
				if (rp->down_until < wake)
					wake = rp->down_until;
				continue;
			}
			if (rp->n < c->max_conns) {
				rp->n++;
				pthread_mutex_unlock(&c->mtx);
				if ((k = conn_dial(c, r, deadline)) != NULL)
					return k;
				pthread_mutex_lock(&c->mtx);
				goto again;
			}
		}
		{
			struct timespec ts =
			        pl_timespec_in(CLOCK_REALTIME, wake - now);
			pthread_cond_timedwait(&c->cv, &c->mtx, &ts);
		}
	again:;
	}
	pthread_mutex_unlock(&c->mtx);
	return NULL;
}

int
pl_rpc_client_open(pl_rpc_client **out, const pl_rpc_client_config *cfg)
{
	pl_rpc_client *c;
	char *urls, *save = NULL;
	int n = 1;

	*out = NULL;
	if (cfg->urls == NULL || cfg->secret == NULL || cfg->secret[0] == 0)
		return PL_INVALID_ARGUMENT;
	if (sodium_init() < 0)
		return PL_INTERNAL;
	if ((c = calloc(1, sizeof(*c))) == NULL)
		return PL_RESOURCE_EXHAUSTED;
	pthread_mutex_init(&c->mtx, NULL);
	pthread_cond_init(&c->cv, NULL);
	c->service = strdup(cfg->service ? cfg->service : "");
	c->secret = strdup(cfg->secret);
	c->secret_len = strlen(cfg->secret);
	c->timeout_ms =
	        cfg->timeout_ms > 0 ? cfg->timeout_ms : DEFAULT_TIMEOUT_MS;
	c->attempts = cfg->attempts > 0 ? cfg->attempts : DEFAULT_ATTEMPTS;
	c->max_conns = cfg->conns > 0 ? cfg->conns : DEFAULT_CONNS;
	atomic_init(&c->next_id, 1);
	atomic_init(&c->ever_connected, false);
	for (const char *p = cfg->urls; *p; p++)
		n += *p == ',';
	c->reps = calloc((size_t)n, sizeof(*c->reps));
	urls = strdup(cfg->urls);
	if (c->service == NULL || c->secret == NULL || c->reps == NULL ||
	    urls == NULL) {
		free(urls);
		pl_rpc_client_close(c);
		return PL_RESOURCE_EXHAUSTED;
	}
	for (char *u = strtok_r(urls, ", ", &save); u != NULL;
	     u = strtok_r(NULL, ", ", &save)) {
		replica *rp = &c->reps[c->n_reps];
		char url[512];
		int rv = 0;
		if (pl_wire_url(u, url, sizeof(url)) != 0)
			rv = NNG_EADDRINVAL;
		if (rv == 0 && strncmp(u, "tls+", 4) == 0 && c->tls == NULL) {
			rv = nng_tls_config_alloc(&c->tls, NNG_TLS_MODE_CLIENT);
			if (rv == 0 && cfg->tls_ca != NULL) {
				rv = nng_tls_config_ca_file(c->tls,
				                            cfg->tls_ca);
				if (rv == 0)
					rv = nng_tls_config_auth_mode(
					        c->tls,
					        NNG_TLS_AUTH_MODE_REQUIRED);
			} else if (rv == 0) {
				rv = nng_tls_config_auth_mode(
				        c->tls, NNG_TLS_AUTH_MODE_NONE);
			}
		}
		if (rv == 0)
			rv = pl_wire_dialer(&rp->d, url, c->tls);
		if (rv != 0 || (rp->url = strdup(url)) == NULL) {
			pl_error("could not dial %s: %s", u,
			         nng_strerror(rv ? rv : NNG_ENOMEM));
			free(urls);
			if (rp->d != NULL)
				nng_stream_dialer_free(rp->d);
			pl_rpc_client_close(c);
			return PL_INVALID_ARGUMENT;
		}
		c->n_reps++;
	}
	free(urls);
	if (c->n_reps == 0) {
		pl_rpc_client_close(c);
		return PL_INVALID_ARGUMENT;
	}
	*out = c;
	return PL_OK;
}

void
pl_rpc_client_close(pl_rpc_client *c)
{
	if (c == NULL)
		return;
	// Calls still running on this client are the caller's error.
	for (int i = 0; i < c->n_reps; i++) {
		replica *rp = &c->reps[i];
		while (rp->idle != NULL) {
			cconn *k = rp->idle;
			rp->idle = k->next;
			conn_free(k);
		}
		if (rp->d != NULL)
			nng_stream_dialer_free(rp->d);
		free(rp->url);
	}
	free(c->reps);
	if (c->tls)
		nng_tls_config_free(c->tls);
	if (c->secret) {
		sodium_memzero(c->secret, c->secret_len);
		free(c->secret);
	}
	free(c->service);
	pthread_cond_destroy(&c->cv);
	pthread_mutex_destroy(&c->mtx);
	free(c);
}

// True when no replica has been reached, or the last dial to every one
// failed.
static bool
all_down(pl_rpc_client *c)
{
	bool down = true;

	if (!atomic_load(&c->ever_connected))
		return true;
	pthread_mutex_lock(&c->mtx);
	for (int i = 0; i < c->n_reps && down; i++)
		down = c->reps[i].unreachable;
	pthread_mutex_unlock(&c->mtx);
	return down;
}

// One exchange on a connection: the nng error, or 0 with the reply frame in
// *reply (valid until the connection's next use). *got is set when any
// byte of the reply arrived.
static int
exchange(cconn *k, uint8_t *frame, size_t len, int64_t deadline,
         const uint8_t **reply, size_t *rlen, bool *got)
{
	int rv;

	*got = false;
	if ((rv = pl_wire_send(&k->w, frame, len, deadline)) != 0)
		return rv;
	rv = pl_wire_recv(&k->w, MAX_REPLY, MAX_REPLY, deadline, reply, rlen,
	                  got);
	return rv == PL_WIRE_TOOBIG ? NNG_EMSGSIZE : rv;
}

static int
fail(pl_rpc_result *res, pl_arena *a, int code, const char *fmt,
     const char *arg)
{
	if (res != NULL) {
		memset(res, 0, sizeof(*res));
		res->code = code;
		res->message = pl_arena_printf(a, fmt, arg);
		if (res->message == NULL)
			res->message = "";
	}
	return code;
}

// A call up to its reply: the envelope in *respp (NULL when none came).
static int
call(pl_rpc_client *c, const char *method, const ProtobufCMessage *in,
     pl_arena *arena, const pl_rpc_opts *opts, pl_rpc_result *res,
     Parley__Rpc__V1__Response **respp)
{
	static const pl_rpc_opts none = { 0 };
	Parley__Rpc__V1__Request req = PARLEY__RPC__V1__REQUEST__INIT;
	pl_principal self = PARLEY__RPC__V1__PRINCIPAL__INIT;
	pl_principal copy;
	Parley__Rpc__V1__Response *resp = NULL;
	int64_t now = pl_now_ns(), deadline;
	uint8_t *buf;
	size_t len;
	bool retry, stale_retried = false;
	int attempt, rv = PL_UNAVAILABLE;
	char trace[PL_UUID_STRLEN + 1];

	*respp = NULL;
	if (opts == NULL)
		opts = &none;
	deadline = now +
	           (opts->timeout_ms > 0 ? opts->timeout_ms : c->timeout_ms) *
	                   1000000;
	if (opts->parent != NULL && opts->parent->deadline != 0 &&
	    opts->parent->deadline < deadline)
		deadline = opts->parent->deadline;
	if (deadline <= now)
		return fail(res, arena, PL_DEADLINE_EXCEEDED,
		            "no time left to call %s", method);

	if (opts->principal != NULL) {
		copy = *opts->principal;
		copy.service = c->service;
		req.principal = &copy;
	} else {
		self.kind =
		        PARLEY__RPC__V1__PRINCIPAL_KIND__PRINCIPAL_KIND_SERVICE;
		self.service = c->service;
		req.principal = &self;
	}
	req.method = (char *)method;
	req.request_id = atomic_fetch_add(&c->next_id, 1);
	req.idempotency_key =
	        (char *)(opts->idempotency_key ? opts->idempotency_key : "");
	req.service_secret.data = (uint8_t *)c->secret;
	req.service_secret.len = c->secret_len;
	if (opts->parent != NULL && opts->parent->trace_id[0] != '\0') {
		req.trace_id = (char *)opts->parent->trace_id;
	} else {
		pl_uuid7_str(trace);
		req.trace_id = trace;
	}
	len = protobuf_c_message_get_packed_size(in);
	req.payload.data = pl_arena_alloc(arena, len ? len : 1);
	if (req.payload.data == NULL)
		return fail(res, arena, PL_RESOURCE_EXHAUSTED,
		            "request to %s too large", method);
	protobuf_c_message_pack(in, req.payload.data);
	req.payload.len = len;

	retry = opts->idempotent ||
	        (opts->idempotency_key && opts->idempotency_key[0]);

	for (attempt = 1;; attempt++) {
		const uint8_t *reply;
		size_t rlen;
		bool got, stale;
		cconn *k;
		int e;
		int64_t left = (deadline - pl_now_ns()) / 1000000;

		if (left <= 0) {
			rv = fail(res, arena, PL_DEADLINE_EXCEEDED,
			          "deadline exceeded calling %s", method);
			break;
		}
		req.timeout_ms =
		        (uint32_t)(left > UINT32_MAX ? UINT32_MAX : left);
		len = parley__rpc__v1__request__get_packed_size(&req);
		if ((buf = pl_arena_alloc(arena, len + 4)) == NULL) {
			rv = fail(res, arena, PL_RESOURCE_EXHAUSTED,
			          "request to %s too large", method);
			break;
		}
		parley__rpc__v1__request__pack(&req, buf + 4);
		if ((k = conn_get(c, deadline)) == NULL) {
			rv = all_down(c) ? PL_UNAVAILABLE
			                 : PL_DEADLINE_EXCEEDED;
			fail(res, arena, rv,
			     rv == PL_UNAVAILABLE
			             ? "no replica reachable for %s"
			             : "deadline exceeded calling %s",
			     method);
			break;
		}
		e = exchange(k, buf, len + 4, deadline, &reply, &rlen, &got);
		if (e == 0) {
			resp = parley__rpc__v1__response__unpack(
			        pl_arena_pb(arena), rlen, reply);
			conn_put(c, k, resp != NULL);
			// One call at a time per connection pairs replies with
			// requests; the id is a second check (0: the server
			// could not read ours).
			if (resp == NULL ||
			    (resp->request_id != req.request_id &&
			     resp->request_id != 0)) {
				rv = fail(res, arena, PL_INTERNAL,
				          "undecodable reply from %s", method);
				break;
			}
			rv = (int)resp->code;
		} else if (e == NNG_ETIMEDOUT) {
			conn_put(c, k, false);
			rv = fail(res, arena, PL_DEADLINE_EXCEEDED,
			          "deadline exceeded calling %s", method);
			break;
		} else {
			// A kept connection that the server closed while idle
			// (a restart) fails before any reply byte: the request
			// was not served, so it goes again on a fresh one.
			stale = k->reused && !got;
			conn_put(c, k, false);
			rv = fail(res, arena, PL_UNAVAILABLE,
			          "transport failure calling %s", method);
			resp = NULL;
			if (stale && !stale_retried) {
				stale_retried = true;
				attempt--;
				continue;
			}
		}
		if (rv != PL_UNAVAILABLE || !retry || attempt >= c->attempts)
			break;
		// Back off a little (10, 20, 40 ms... with jitter), within the
		// deadline.
		{
			int64_t ms = 10LL
			             << (attempt - 1 > 4 ? 4 : attempt - 1);
			ms = ms / 2 + randombytes_uniform((uint32_t)ms);
			if (pl_now_ns() + ms * 1000000 >= deadline)
				break;
			nng_msleep((nng_duration)ms);
		}
	}

	if (resp != NULL && res != NULL) {
		res->code = (int)resp->code;
		res->message = resp->message ? resp->message : "";
		res->details = resp->details;
		res->n_details = resp->n_details;
	}
	*respp = resp;
	return rv;
}

int
pl_rpc_call(pl_rpc_client *c, const char *method, const ProtobufCMessage *in,
            const ProtobufCMessageDescriptor *out_desc, void **out,
            pl_arena *arena, const pl_rpc_opts *opts, pl_rpc_result *res)
{
	Parley__Rpc__V1__Response *resp;
	int rv;

	if (out != NULL)
		*out = NULL;
	rv = call(c, method, in, arena, opts, res, &resp);
	if (resp != NULL && rv == PL_OK && out_desc != NULL && out != NULL) {
		*out = protobuf_c_message_unpack(out_desc, pl_arena_pb(arena),
		                                 resp->payload.len,
		                                 resp->payload.data);
		if (*out == NULL)
			return fail(res, arena, PL_INTERNAL,
			            "undecodable reply payload from %s",
			            method);
	}
	return rv;
}

int
pl_rpc_call_raw(pl_rpc_client *c, const char *method,
                const ProtobufCMessage *in, const uint8_t **payload,
                size_t *len, pl_arena *arena, const pl_rpc_opts *opts,
                pl_rpc_result *res)
{
	Parley__Rpc__V1__Response *resp;
	int rv = call(c, method, in, arena, opts, res, &resp);

	*payload = NULL;
	*len = 0;
	if (resp != NULL && rv == PL_OK) {
		*payload = resp->payload.data;
		*len = resp->payload.len;
	}
	return rv;
}

int
pl_rpc_raw_exchange(const char *url, const void *req, size_t len,
                    int64_t timeout_ms, uint8_t **reply, size_t *reply_len)
{
	char u[512];
	nng_stream_dialer *d = NULL;
	pl_wire w = { 0 };
	uint8_t *frame = malloc(len + 4);
	const uint8_t *r;
	int64_t deadline = pl_now_ns() + timeout_ms * 1000000;
	bool got;
	int rv;

	*reply = NULL;
	*reply_len = 0;
	if (frame == NULL)
		return PL_RESOURCE_EXHAUSTED;
	memcpy(frame + 4, req, len);
	rv = pl_wire_url(url, u, sizeof(u)) != 0 ? NNG_EADDRINVAL
	                                         : pl_wire_dialer(&d, u, NULL);
	if (rv == 0)
		rv = pl_wire_dial(&w, d, deadline);
	if (rv == 0)
		rv = pl_wire_send(&w, frame, len + 4, deadline);
	if (rv == 0)
		rv = pl_wire_recv(&w, MAX_REPLY, MAX_REPLY, deadline, &r,
		                  reply_len, &got);
	if (rv == 0 && (*reply = malloc(*reply_len ? *reply_len : 1)) != NULL)
		memcpy(*reply, r, *reply_len);
	pl_wire_fini(&w);
	if (d != NULL)
		nng_stream_dialer_free(d);
	free(frame);
	if (rv == 0 && *reply == NULL)
		return PL_RESOURCE_EXHAUSTED;
	return rv == 0               ? PL_OK
	       : rv == NNG_ETIMEDOUT ? PL_DEADLINE_EXCEEDED
	                             : PL_UNAVAILABLE;
}
