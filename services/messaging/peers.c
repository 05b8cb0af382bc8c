// The services messaging calls: tenants (channel -> tenant, credentials),
// billing (message quota) and agents (the bot's reply). Each is an RPC
// client opened from its URL; a missing URL turns that integration off.
// Channels and their credentials are cached briefly (the smaller of the
// configured time and tenants' cache_ttl_ms).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "pl/log.h"
#include "messaging.h"

#define CACHE_SLOTS 512

struct msg_peers {
	pl_rpc_client *tenants, *billing, *agents;
	int64_t cache_ms;
	pthread_mutex_t mu;
	msg_channel cache[CACHE_SLOTS];
	size_t next; // round-robin eviction
};

static int
open_one(pl_rpc_client **out, const char *url, const char *secret,
         const char *what)
{
	pl_rpc_client_config cc = { 0 };

	*out = NULL;
	if (url == NULL || url[0] == '\0') {
		pl_info("%s integration is off (no URL configured)", what);
		return PL_OK;
	}
	cc.urls = url;
	cc.secret = secret;
	cc.service = "messaging";
	cc.timeout_ms = 10000;
	return pl_rpc_client_open(out, &cc);
}

int
messaging_peers_open(msg_peers **out, const char *tenants_url,
                     const char *billing_url, const char *agents_url,
                     const char *secret, int64_t cache_ms)
{
	msg_peers *p = calloc(1, sizeof(*p));
	int rv;

	if (p == NULL)
		return PL_RESOURCE_EXHAUSTED;
	pthread_mutex_init(&p->mu, NULL);
	p->cache_ms = cache_ms;
	if ((rv = open_one(&p->tenants, tenants_url, secret, "tenants")) !=
	            PL_OK ||
	    (rv = open_one(&p->billing, billing_url, secret, "billing")) !=
	            PL_OK ||
	    (rv = open_one(&p->agents, agents_url, secret, "agents")) !=
	            PL_OK) {
		messaging_peers_close(p);
		return rv;
	}
	*out = p;
	return PL_OK;
}

void
messaging_peers_close(msg_peers *p)
{
	if (p == NULL)
		return;
	if (p->tenants)
		pl_rpc_client_close(p->tenants);
	if (p->billing)
		pl_rpc_client_close(p->billing);
	if (p->agents)
		pl_rpc_client_close(p->agents);
	sodium_memzero(p->cache, sizeof(p->cache));
	pthread_mutex_destroy(&p->mu);
	free(p);
}

bool
messaging_peers_has_agents(const msg_peers *p)
{
	return p->agents != NULL;
}

static void
cp(char *dst, size_t n, const char *s)
{
	snprintf(dst, n, "%s", s ? s : "");
}

void
messaging_peers_forget(msg_peers *p, const char *channel_id)
{
	pthread_mutex_lock(&p->mu);
	for (size_t i = 0; i < CACHE_SLOTS; i++)
		if (strcmp(p->cache[i].channel_id, channel_id) == 0)
			memset(&p->cache[i], 0, sizeof(p->cache[i]));
	pthread_mutex_unlock(&p->mu);
}

int
messaging_peers_channel(msg_peers *p, const char *channel_id, int type,
                        const char *tenant_id, const pl_call *parent,
                        msg_channel *out)
{
	Parley__Tenants__V1__ResolveChannelRequest rq =
	        PARLEY__TENANTS__V1__RESOLVE_CHANNEL_REQUEST__INIT;
	Parley__Tenants__V1__ResolveChannelResponse *rr = NULL;
	Parley__Tenants__V1__GetChannelSecretsRequest sq =
	        PARLEY__TENANTS__V1__GET_CHANNEL_SECRETS_REQUEST__INIT;
	Parley__Tenants__V1__GetChannelSecretsResponse *sr = NULL;
	const Parley__Tenants__V1__Channel *ch;
	pl_rpc_opts o = { 0 };
	pl_arena a;
	int64_t now = pl_now_ns(), ttl;
	int rv;

	pthread_mutex_lock(&p->mu);
	for (size_t i = 0; i < CACHE_SLOTS; i++) {
		msg_channel *c = &p->cache[i];
		if (c->expires_ns > now &&
		    strcmp(c->channel_id, channel_id) == 0) {
			*out = *c;
			pthread_mutex_unlock(&p->mu);
			goto check;
		}
	}
	pthread_mutex_unlock(&p->mu);
	if (p->tenants == NULL)
		return PL_UNAVAILABLE;

	pl_arena_init(&a, 0, 4 << 20);
	memset(out, 0, sizeof(*out));
	o.parent = NULL; // service acting as itself
	o.idempotent = true;
	(void)parent;
	rq.channel_id = (char *)channel_id;
	rq.type = (Parley__Tenants__V1__ChannelType)type;
	rv = pl_rpc_call(
	        p->tenants, "/parley.tenants.v1.Tenants/ResolveChannel",
	        &rq.base,
	        &parley__tenants__v1__resolve_channel_response__descriptor,
	        (void **)&rr, &a, &o, NULL);
	if (rv != PL_OK)
		goto out;
	sq.tenant_id = rr->tenant_id;
	sq.channel_id = (char *)channel_id;
	rv = pl_rpc_call(
	        p->tenants, "/parley.tenants.v1.Tenants/GetChannelSecrets",
	        &sq.base,
	        &parley__tenants__v1__get_channel_secrets_response__descriptor,
	        (void **)&sr, &a, &o, NULL);
	if (rv != PL_OK)
		goto out;
	ch = sr->channel ? sr->channel : rr->channel;
	cp(out->tenant_id, sizeof(out->tenant_id), rr->tenant_id);
	cp(out->channel_id, sizeof(out->channel_id), channel_id);
	out->tenant_status = rr->tenant_status;
	if (ch != NULL) {
		out->type = ch->type;
		out->status = ch->status;
		out->send_rate = ch->send_rate_per_second;
		cp(out->agent_id, sizeof(out->agent_id), ch->agent_id);
		cp(out->phone_number_id, sizeof(out->phone_number_id),
		   ch->phone_number_id);
		cp(out->sender_number, sizeof(out->sender_number),
		   ch->sender_number);
		cp(out->api_base_url, sizeof(out->api_base_url),
		   ch->api_base_url);
	}
	cp(out->access_token, sizeof(out->access_token), sr->access_token);
	cp(out->app_secret, sizeof(out->app_secret), sr->app_secret);
	cp(out->verify_token, sizeof(out->verify_token), sr->verify_token);
	ttl = p->cache_ms;
	if (sr->cache_ttl_ms > 0 && sr->cache_ttl_ms < ttl)
		ttl = sr->cache_ttl_ms;
	out->expires_ns = now + ttl * 1000000;
	if (ttl > 0) {
		pthread_mutex_lock(&p->mu);
		p->cache[p->next] = *out;
		p->next = (p->next + 1) % CACHE_SLOTS;
		pthread_mutex_unlock(&p->mu);
	}
out:
	pl_arena_fini(&a);
	if (rv != PL_OK)
		return rv;
check:
	if (type != 0 && out->type != 0 && out->type != type)
		return PL_NOT_FOUND;
	if (tenant_id != NULL && strcmp(tenant_id, out->tenant_id) != 0)
		return PL_NOT_FOUND;
	return PL_OK;
}

int
messaging_peers_reserve(msg_peers *p, const char *tenant_id, const char *key,
                        char *why, size_t whylen)
{
	Parley__Billing__V1__ReserveUsageRequest rq =
	        PARLEY__BILLING__V1__RESERVE_USAGE_REQUEST__INIT;
	void *resp = NULL;
	pl_rpc_opts o = { 0 };
	pl_rpc_result res = { 0 };
	pl_arena a;
	int rv;

	why[0] = '\0';
	if (p->billing == NULL)
		return PL_OK;
	pl_arena_init(&a, 0, 1 << 20);
	rq.tenant_id = (char *)tenant_id;
	rq.metric = PARLEY__BILLING__V1__METRIC__METRIC_MESSAGES;
	rq.amount = 1;
	rq.idempotency_key = (char *)key;
	o.idempotency_key = key;
	rv = pl_rpc_call(
	        p->billing, "/parley.billing.v1.Billing/ReserveUsage", &rq.base,
	        &parley__billing__v1__reserve_usage_response__descriptor, &resp,
	        &a, &o, &res);
	if (rv != PL_OK)
		snprintf(why, whylen, "%s", res.message ? res.message : "");
	pl_arena_fini(&a);
	return rv;
}

int
messaging_peers_reply(msg_peers *p, const Parley__Agents__V1__ReplyRequest *in,
                      pl_arena *a, Parley__Agents__V1__ReplyResponse **out)
{
	pl_rpc_opts o = { 0 };

	if (p->agents == NULL)
		return PL_UNAVAILABLE;
	o.idempotency_key = in->message_id;
	o.timeout_ms = 30000;
	return pl_rpc_call(p->agents, "/parley.agents.v1.Agents/Reply",
	                   &in->base,
	                   &parley__agents__v1__reply_response__descriptor,
	                   (void **)out, a, &o, NULL);
}

int
messaging_peers_reply_batch(msg_peers *p,
                            const Parley__Agents__V1__ReplyBatchRequest *in,
                            pl_arena *a,
                            Parley__Agents__V1__ReplyBatchResponse **out)
{
	pl_rpc_opts o = { 0 };

	if (p->agents == NULL)
		return PL_UNAVAILABLE;
	o.timeout_ms = 30000;
	return pl_rpc_call(
	        p->agents, "/parley.agents.v1.Agents/ReplyBatch", &in->base,
	        &parley__agents__v1__reply_batch_response__descriptor,
	        (void **)out, a, &o, NULL);
}

int
messaging_peers_reserve_batch(msg_peers *p, const char *const *tenants,
                              const char *const *keys, size_t n, pl_arena *a,
                              int *rv, const char **why)
{
	Parley__Billing__V1__ReserveUsageBatchRequest rq =
	        PARLEY__BILLING__V1__RESERVE_USAGE_BATCH_REQUEST__INIT;
	Parley__Billing__V1__ReserveUsageBatchResponse *resp = NULL;
	Parley__Billing__V1__ReserveUsageRequest *its, **ptrs;
	pl_rpc_opts o = { 0 };
	int r;

	if (p->billing == NULL) {
		for (size_t i = 0; i < n; i++) {
			rv[i] = PL_OK;
			why[i] = "";
		}
		return PL_OK;
	}
	its = pl_arena_alloc(a, n * sizeof(*its));
	ptrs = pl_arena_alloc(a, n * sizeof(*ptrs));
	if (its == NULL || ptrs == NULL)
		return PL_RESOURCE_EXHAUSTED;
	for (size_t i = 0; i < n; i++) {
		parley__billing__v1__reserve_usage_request__init(&its[i]);
		its[i].tenant_id = (char *)tenants[i];
		its[i].metric = PARLEY__BILLING__V1__METRIC__METRIC_MESSAGES;
		its[i].amount = 1;
		its[i].idempotency_key = (char *)keys[i];
		ptrs[i] = &its[i];
	}
	rq.items = ptrs;
	rq.n_items = n;
	r = pl_rpc_call(
	        p->billing, "/parley.billing.v1.Billing/ReserveUsageBatch",
	        &rq.base,
	        &parley__billing__v1__reserve_usage_batch_response__descriptor,
	        (void **)&resp, a, &o, NULL);
	if (r != PL_OK)
		return r;
	if (resp->n_results != n)
		return PL_INTERNAL;
	for (size_t i = 0; i < n; i++) {
		rv[i] = resp->results[i]->code;
		why[i] = resp->results[i]->message ? resp->results[i]->message
		                                   : "";
	}
	return PL_OK;
}
