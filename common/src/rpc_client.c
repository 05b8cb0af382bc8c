// The RPC client: a REQ socket dialing one or more replicas; each call takes
// a context from a pool, sends and receives through one aio whose callback
// chains the receive after the send, so the calling thread sleeps once.
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>
#include <nng/supplemental/tls/tls.h>
#include <nng/supplemental/util/platform.h>
#include <sodium.h>

#include "pl/id.h"
#include "pl/log.h"
#include "pl/rpc.h"

#define DEFAULT_TIMEOUT_MS 5000
#define DEFAULT_ATTEMPTS   3
#define DEFAULT_CONNS      2
#define MAX_REPLY          (64u << 20)

// A pooled context with two aios that have no callbacks: nng completes
// such an aio by waking its waiter directly, where a callback would cost a
// hop through nng's task queue and then another to wake the caller.
typedef struct slot {
	pl_rpc_client *c;
	nng_ctx ctx;
	nng_aio *saio;     // the request's send
	nng_aio *raio;     // the reply's receive
	struct slot *next; // free list
} slot;

struct pl_rpc_client {
	nng_socket sock;
	nng_tls_config *tls;
	char *service;
	char *secret;
	size_t secret_len;
	int64_t timeout_ms;
	int attempts;
	pthread_mutex_t mtx;
	slot *free_slots;
	slot **all; // every slot made, for close
	size_t n_all, cap_all;
	_Atomic uint64_t next_id;
	_Atomic int pipes; // live connections
};

static void
pipe_cb(nng_pipe p, nng_pipe_ev ev, void *arg)
{
	pl_rpc_client *c = arg;
	(void)p;
	if (ev == NNG_PIPE_EV_ADD_POST)
		atomic_fetch_add(&c->pipes, 1);
	else if (ev == NNG_PIPE_EV_REM_POST)
		atomic_fetch_sub(&c->pipes, 1);
}

static slot *
slot_get(pl_rpc_client *c)
{
	slot *s;

	pthread_mutex_lock(&c->mtx);
	if ((s = c->free_slots) != NULL) {
		c->free_slots = s->next;
		pthread_mutex_unlock(&c->mtx);
		return s;
	}
	if (c->n_all == c->cap_all) {
		size_t n = c->cap_all ? c->cap_all * 2 : 16;
		slot **na = realloc(c->all, n * sizeof(*na));
		if (na == NULL) {
			pthread_mutex_unlock(&c->mtx);
			return NULL;
		}
		c->all = na;
		c->cap_all = n;
	}
	if ((s = calloc(1, sizeof(*s))) == NULL) {
		pthread_mutex_unlock(&c->mtx);
		return NULL;
	}
	s->c = c;
	if (nng_aio_alloc(&s->saio, NULL, NULL) != 0 ||
	    nng_aio_alloc(&s->raio, NULL, NULL) != 0 ||
	    nng_ctx_open(&s->ctx, c->sock) != 0) {
		if (s->saio)
			nng_aio_free(s->saio);
		if (s->raio)
			nng_aio_free(s->raio);
		free(s);
		pthread_mutex_unlock(&c->mtx);
		return NULL;
	}
	c->all[c->n_all++] = s;
	pthread_mutex_unlock(&c->mtx);
	return s;
}

static void
slot_put(pl_rpc_client *c, slot *s)
{
	pthread_mutex_lock(&c->mtx);
	s->next = c->free_slots;
	c->free_slots = s;
	pthread_mutex_unlock(&c->mtx);
}

// Starts one dialer to url; a replica that is down now is dialed again in
// the background until it comes up. Returns an nng error.
static int
dial(pl_rpc_client *c, const pl_rpc_client_config *cfg, const char *url)
{
	nng_dialer d;
	int rv = nng_dialer_create(&d, c->sock, url);

	if (rv == 0 && strncmp(url, "tls+", 4) == 0) {
		if (c->tls == NULL) {
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
			rv = nng_dialer_set_ptr(d, NNG_OPT_TLS_CONFIG, c->tls);
	}
	if (rv == 0)
		rv = nng_dialer_start(d, NNG_FLAG_NONBLOCK);
	return rv;
}

int
pl_rpc_client_open(pl_rpc_client **out, const pl_rpc_client_config *cfg)
{
	pl_rpc_client *c;
	char *urls, *save = NULL;
	int rv, n = 0, nconns;

	*out = NULL;
	if (cfg->urls == NULL || cfg->secret == NULL || cfg->secret[0] == 0)
		return PL_INVALID_ARGUMENT;
	if (sodium_init() < 0)
		return PL_INTERNAL;
	if ((c = calloc(1, sizeof(*c))) == NULL)
		return PL_RESOURCE_EXHAUSTED;
	pthread_mutex_init(&c->mtx, NULL);
	c->service = strdup(cfg->service ? cfg->service : "");
	c->secret = strdup(cfg->secret);
	c->secret_len = strlen(cfg->secret);
	c->timeout_ms =
	        cfg->timeout_ms > 0 ? cfg->timeout_ms : DEFAULT_TIMEOUT_MS;
	c->attempts = cfg->attempts > 0 ? cfg->attempts : DEFAULT_ATTEMPTS;
	atomic_init(&c->next_id, 1);
	atomic_init(&c->pipes, 0);
	if (c->service == NULL || c->secret == NULL) {
		pl_rpc_client_close(c);
		return PL_RESOURCE_EXHAUSTED;
	}
	if ((rv = nng_req0_open(&c->sock)) != 0) {
		free(c->service);
		sodium_memzero(c->secret, c->secret_len);
		free(c->secret);
		pthread_mutex_destroy(&c->mtx);
		free(c);
		return PL_UNAVAILABLE;
	}
	// nng's own timed re-send would repeat calls that are not idempotent;
	// retries are decided per call instead.
	nng_socket_set_ms(c->sock, NNG_OPT_REQ_RESENDTIME,
	                  NNG_DURATION_INFINITE);
	nng_socket_set_size(c->sock, NNG_OPT_RECVMAXSZ, MAX_REPLY);
	nng_socket_set_ms(c->sock, NNG_OPT_RECONNMINT, 10);
	nng_socket_set_ms(c->sock, NNG_OPT_RECONNMAXT, 1000);
	nng_pipe_notify(c->sock, NNG_PIPE_EV_ADD_POST, pipe_cb, c);
	nng_pipe_notify(c->sock, NNG_PIPE_EV_REM_POST, pipe_cb, c);

	if ((urls = strdup(cfg->urls)) == NULL) {
		pl_rpc_client_close(c);
		return PL_RESOURCE_EXHAUSTED;
	}
	// Several connections per replica: a connection carries one message at
	// a time each way, so concurrent calls would queue behind each other on
	// one; REQ spreads calls over every ready connection.
	nconns = cfg->conns > 0 ? (cfg->conns > 16 ? 16 : cfg->conns)
	                        : DEFAULT_CONNS;
	for (char *u = strtok_r(urls, ", ", &save); u != NULL;
	     u = strtok_r(NULL, ", ", &save)) {
		for (int k = 0; k < nconns; k++) {
			if ((rv = dial(c, cfg, u)) != 0) {
				pl_error("could not dial %s: %s", u,
				         nng_strerror(rv));
				free(urls);
				pl_rpc_client_close(c);
				return PL_INVALID_ARGUMENT;
			}
		}
		n++;
	}
	free(urls);
	if (n == 0) {
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
	for (size_t i = 0; i < c->n_all; i++)
		nng_aio_stop(c->all[i]->saio), nng_aio_stop(c->all[i]->raio);
	nng_close(c->sock);
	for (size_t i = 0; i < c->n_all; i++) {
		slot *s = c->all[i];
		nng_aio_free(s->saio);
		nng_aio_free(s->raio);
		free(s);
	}
	free(c->all);
	if (c->tls)
		nng_tls_config_free(c->tls);
	if (c->secret) {
		sodium_memzero(c->secret, c->secret_len);
		free(c->secret);
	}
	free(c->service);
	pthread_mutex_destroy(&c->mtx);
	free(c);
}

// One exchange on a slot: returns the nng error, the reply in *reply.
static int
exchange(pl_rpc_client *c, slot *s, const uint8_t *req, size_t len,
         int64_t deadline, nng_msg **reply)
{
	nng_msg *m;
	int64_t left = (deadline - pl_now_ns()) / 1000000;
	int rv;

	(void)c;
	*reply = NULL;
	if (left <= 0)
		return NNG_ETIMEDOUT;
	if ((rv = nng_msg_alloc(&m, len)) != 0)
		return rv;
	memcpy(nng_msg_body(m), req, len);
	nng_aio_set_msg(s->saio, m);
	nng_aio_set_timeout(s->saio, (nng_duration)left);
	nng_ctx_send(s->ctx, s->saio);
	// With a connection ready, REQ hands the request over inside the send
	// call, so this wait rarely sleeps. (The receive cannot be posted
	// before: nng 1.5 asserts when a queued send times out under it.)
	nng_aio_wait(s->saio);
	if ((rv = nng_aio_result(s->saio)) != 0) {
		nng_msg_free(nng_aio_get_msg(s->saio));
		nng_aio_set_msg(s->saio, NULL);
		return rv;
	}
	left = (deadline - pl_now_ns()) / 1000000;
	if (left <= 0)
		return NNG_ETIMEDOUT;
	nng_aio_set_timeout(s->raio, (nng_duration)left);
	nng_ctx_recv(s->ctx, s->raio);
	nng_aio_wait(s->raio);
	if ((rv = nng_aio_result(s->raio)) == 0)
		*reply = nng_aio_get_msg(s->raio);
	return rv;
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

int
pl_rpc_call(pl_rpc_client *c, const char *method, const ProtobufCMessage *in,
            const ProtobufCMessageDescriptor *out_desc, void **out,
            pl_arena *arena, const pl_rpc_opts *opts, pl_rpc_result *res)
{
	static const pl_rpc_opts none = { 0 };
	Parley__Rpc__V1__Request req = PARLEY__RPC__V1__REQUEST__INIT;
	pl_principal self = PARLEY__RPC__V1__PRINCIPAL__INIT;
	pl_principal copy;
	Parley__Rpc__V1__Response *resp = NULL;
	int64_t now = pl_now_ns(), deadline;
	uint8_t *buf;
	size_t len;
	bool retry;
	int attempt, rv = PL_UNAVAILABLE;
	slot *s;
	char trace[PL_UUID_STRLEN + 1];

	if (opts == NULL)
		opts = &none;
	if (out != NULL)
		*out = NULL;
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
	if ((s = slot_get(c)) == NULL)
		return fail(res, arena, PL_RESOURCE_EXHAUSTED,
		            "could not call %s: out of memory", method);

	for (attempt = 1;; attempt++) {
		nng_msg *reply;
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
		if ((buf = pl_arena_alloc(arena, len)) == NULL) {
			rv = fail(res, arena, PL_RESOURCE_EXHAUSTED,
			          "request to %s too large", method);
			break;
		}
		parley__rpc__v1__request__pack(&req, buf);
		e = exchange(c, s, buf, len, deadline, &reply);
		if (e == 0) {
			resp = parley__rpc__v1__response__unpack(
			        pl_arena_pb(arena), nng_msg_len(reply),
			        nng_msg_body(reply));
			nng_msg_free(reply);
			// nng's context pairs replies with requests; the id is
			// a second check (0: the server could not read ours).
			if (resp == NULL ||
			    (resp->request_id != req.request_id &&
			     resp->request_id != 0)) {
				rv = fail(res, arena, PL_INTERNAL,
				          "undecodable reply from %s", method);
				break;
			}
			rv = (int)resp->code;
		} else if (e == NNG_ETIMEDOUT) {
			rv = atomic_load(&c->pipes) == 0 ? PL_UNAVAILABLE
			                                 : PL_DEADLINE_EXCEEDED;
			fail(res, arena, rv,
			     rv == PL_UNAVAILABLE
			             ? "no replica reachable for %s"
			             : "deadline exceeded calling %s",
			     method);
			break;
		} else {
			rv = fail(res, arena, PL_UNAVAILABLE,
			          "transport failure calling %s", method);
			resp = NULL;
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
	slot_put(c, s);

	if (resp != NULL && res != NULL) {
		res->code = (int)resp->code;
		res->message = resp->message ? resp->message : "";
		res->details = resp->details;
		res->n_details = resp->n_details;
	}
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
