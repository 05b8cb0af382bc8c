// The gateway through real HTTP (libcurl) against fake backend services:
// pl_rpc_server tables over the real proto descriptors, answering from test
// data for the calls DESIGN §9 names and UNIMPLEMENTED for the rest.
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <cmocka.h>
#include <curl/curl.h>

#include "gateway.h"
#include "parley/agents/v1/agents.pb-c.h"
#include "parley/analytics/v1/analytics.pb-c.h"
#include "parley/billing/v1/billing.pb-c.h"
#include "parley/messaging/v1/messaging.pb-c.h"
#include "parley/tenants/v1/tenants.pb-c.h"
#include "pl/log.h"

#define SECRET "gateway-test-secret-0123456789"
#define NEW(call, T, init)                                                     \
	({                                                                     \
		T *_p = pl_arena_alloc((call)->arena, sizeof(T));              \
		init(_p);                                                      \
		_p;                                                            \
	})

// What the fakes saw.
static struct {
	int authenticate_calls;
	bool revoked_a;
	char trace[80];
	char idem[160];
	char signup_ip[64];
	char auth_ip[64];
	char webhook_ip[64];
	char webchat_ip[64];
	int32_t page_size;
	int conv_status;
	uint8_t webhook_body[4096];
	size_t webhook_len;
	char website_domain[128];
	int32_t wait_ms;
	int n_entries;
	char mask[64];
} seen;

// The fake PollWebchatBatch: the session whose poll it reports a message
// for, "wsgone"'s session expired, and the most polls one call held.
static pthread_mutex_t wc_mu = PTHREAD_MUTEX_INITIALIZER;
static char wc_ready[32];
static size_t wc_batch_max;

// ---------------------------------------------------------------------------
// Fake services.

static bool
tenant_is(pl_call *call, const char *t)
{
	return call->principal->tenant_id != NULL &&
	       strcmp(call->principal->tenant_id, t) == 0;
}

static int
f_authenticate(pl_call *call, const void *vin, void *vout)
{
	const Parley__Tenants__V1__AuthenticateRequest *in = vin;
	Parley__Tenants__V1__AuthenticateResponse *out = vout;
	pl_principal *p =
	        NEW(call, pl_principal, parley__rpc__v1__principal__init);

	seen.authenticate_calls++;
	snprintf(seen.auth_ip, sizeof(seen.auth_ip), "%s", in->source_ip);
	p->kind = PARLEY__RPC__V1__PRINCIPAL_KIND__PRINCIPAL_KIND_USER;
	p->role = PARLEY__RPC__V1__ROLE__ROLE_OWNER;
	p->tenant_id = "ta";
	p->user_id = "ua";
	out->tenant_status =
	        PARLEY__TENANTS__V1__TENANT_STATUS__TENANT_STATUS_ACTIVE;
	out->cache_ttl_ms = 1000;
	if (strcmp(in->token, "tok-a") == 0 && !seen.revoked_a) {
	} else if (strcmp(in->token, "tok-b") == 0) {
		p->tenant_id = "tb";
		p->user_id = "ub";
	} else if (strcmp(in->token, "tok-viewer") == 0) {
		p->role = PARLEY__RPC__V1__ROLE__ROLE_VIEWER;
	} else if (strcmp(in->token, "tok-susp") == 0) {
		out->tenant_status =
		        PARLEY__TENANTS__V1__TENANT_STATUS__TENANT_STATUS_SUSPENDED;
	} else if (strcmp(in->token, "key-1") == 0) {
		p->kind =
		        PARLEY__RPC__V1__PRINCIPAL_KIND__PRINCIPAL_KIND_API_KEY;
		static char *scopes[] = { "billing:read" };
		p->api_key_id = "k1";
		p->scopes = scopes;
		p->n_scopes = 1;
		out->rate_limit_per_minute = 300; // 5/s, burst 10
	} else {
		return pl_call_error(call, PL_UNAUTHENTICATED, "bad token");
	}
	out->principal = p;
	return PL_OK;
}

static int
f_signup(pl_call *call, const void *vin, void *vout)
{
	const Parley__Tenants__V1__SignUpRequest *in = vin;
	Parley__Tenants__V1__SignUpResponse *out = vout;

	if (in->tenant_name[0] == '\0')
		return pl_call_violation(call, "tenant_name", "required");
	snprintf(seen.signup_ip, sizeof(seen.signup_ip), "%s", in->source_ip);
	out->tenant = NEW(call, Parley__Tenants__V1__Tenant,
	                  parley__tenants__v1__tenant__init);
	out->tenant->id = "ta";
	out->tenant->name = in->tenant_name;
	out->user = NEW(call, Parley__Tenants__V1__User,
	                parley__tenants__v1__user__init);
	out->user->id = "ua";
	out->user->email = in->email;
	out->token = "tok-a";
	return PL_OK;
}

static int
f_login(pl_call *call, const void *vin, void *vout)
{
	const Parley__Tenants__V1__LoginRequest *in = vin;
	Parley__Tenants__V1__LoginResponse *out = vout;

	if (strcmp(in->password, "right-password") != 0)
		return pl_call_error(call, PL_UNAUTHENTICATED,
		                     "wrong email or password");
	out->token = "tok-a";
	out->tenant_id = "ta";
	out->user_id = "ua";
	return PL_OK;
}

static int
f_create_api_key(pl_call *call, const void *vin, void *vout)
{
	Parley__Tenants__V1__CreateApiKeyResponse *out = vout;

	(void)call;
	(void)vin;
	out->id = "k2";
	out->key = "pk_secret";
	return PL_OK;
}

static int
f_create_channel(pl_call *call, const void *vin, void *vout)
{
	const Parley__Tenants__V1__CreateChannelRequest *in = vin;
	Parley__Tenants__V1__CreateChannelResponse *out = vout;

	out->id = "ch1";
	out->webhook_url = "http://gw/v1/webhooks/whatsapp/ch1";
	out->channel = NEW(call, Parley__Tenants__V1__Channel,
	                   parley__tenants__v1__channel__init);
	out->channel->id = "ch1";
	out->channel->type = in->type;
	out->channel->name = in->name;
	out->channel->credentials_set = in->access_token[0] != '\0';
	return PL_OK;
}

static int
f_update_channel(pl_call *call, const void *vin, void *vout)
{
	const Parley__Tenants__V1__UpdateChannelRequest *in = vin;
	Parley__Tenants__V1__UpdateChannelResponse *out = vout;

	if (!tenant_is(call, "ta") || strcmp(in->id, "ch1") != 0)
		return pl_call_error(call, PL_NOT_FOUND, "channel %s not found",
		                     in->id);
	seen.mask[0] = '\0';
	for (size_t i = 0; i < in->n_update_mask; i++)
		snprintf(seen.mask + strlen(seen.mask),
		         sizeof(seen.mask) - strlen(seen.mask), "%s%s",
		         i ? "," : "", in->update_mask[i]);
	out->channel = NEW(call, Parley__Tenants__V1__Channel,
	                   parley__tenants__v1__channel__init);
	out->channel->id = in->id;
	out->channel->agent_id = in->agent_id;
	return PL_OK;
}

static int
f_import_knowledge(pl_call *call, const void *vin, void *vout)
{
	const Parley__Agents__V1__ImportKnowledgeRequest *in = vin;
	Parley__Agents__V1__ImportKnowledgeResponse *out = vout;

	if (!tenant_is(call, "ta") || strcmp(in->agent_id, "ag1") != 0)
		return pl_call_error(call, PL_NOT_FOUND, "agent not found");
	seen.n_entries = (int)in->n_entries;
	out->knowledge_base_id = "kb1";
	out->created = (int32_t)in->n_entries;
	return PL_OK;
}

static int
f_publish(pl_call *call, const void *vin, void *vout)
{
	const Parley__Agents__V1__PublishAgentRequest *in = vin;
	Parley__Agents__V1__PublishAgentResponse *out = vout;

	if (!tenant_is(call, "ta") || strcmp(in->id, "ag1") != 0)
		return pl_call_error(call, PL_NOT_FOUND, "agent not found");
	out->version = 3;
	return PL_OK;
}

static int
f_list_conversations(pl_call *call, const void *vin, void *vout)
{
	const Parley__Messaging__V1__ListConversationsRequest *in = vin;
	Parley__Messaging__V1__ListConversationsResponse *out = vout;
	Parley__Messaging__V1__Conversation *c;

	seen.page_size = in->page ? in->page->page_size : -1;
	seen.conv_status = (int)in->status;
	c = NEW(call, Parley__Messaging__V1__Conversation,
	        parley__messaging__v1__conversation__init);
	c->id = "cv1";
	c->owner =
	        PARLEY__MESSAGING__V1__CONVERSATION_OWNER__CONVERSATION_OWNER_BOT;
	c->contact = NEW(call, Parley__Messaging__V1__Contact,
	                 parley__messaging__v1__contact__init);
	c->contact->name = "Ana";
	out->conversations = pl_arena_alloc(call->arena, sizeof(c));
	out->conversations[0] = c;
	out->n_conversations = 1;
	out->next_page_token = "next";
	return PL_OK;
}

static int
f_list_messages(pl_call *call, const void *vin, void *vout)
{
	const Parley__Messaging__V1__ListMessagesRequest *in = vin;
	Parley__Messaging__V1__ListMessagesResponse *out = vout;
	Parley__Messaging__V1__Message *m;

	if (!tenant_is(call, "ta") || strcmp(in->conversation_id, "cv1") != 0)
		return pl_call_error(call, PL_NOT_FOUND,
		                     "conversation not found");
	m = NEW(call, Parley__Messaging__V1__Message,
	        parley__messaging__v1__message__init);
	m->id = "m1";
	m->direction =
	        PARLEY__MESSAGING__V1__MESSAGE_DIRECTION__MESSAGE_DIRECTION_INBOUND;
	m->text = "hola";
	out->messages = pl_arena_alloc(call->arena, sizeof(m));
	out->messages[0] = m;
	out->n_messages = 1;
	return PL_OK;
}

static int
f_send_human_reply(pl_call *call, const void *vin, void *vout)
{
	const Parley__Messaging__V1__SendHumanReplyRequest *in = vin;
	Parley__Messaging__V1__SendHumanReplyResponse *out = vout;

	if (!tenant_is(call, "ta") || strcmp(in->conversation_id, "cv1") != 0)
		return pl_call_error(call, PL_NOT_FOUND,
		                     "conversation not found");
	snprintf(seen.trace, sizeof(seen.trace), "%s", call->trace_id);
	snprintf(seen.idem, sizeof(seen.idem), "%s",
	         call->idempotency_key ? call->idempotency_key : "");
	out->message = NEW(call, Parley__Messaging__V1__Message,
	                   parley__messaging__v1__message__init);
	out->message->id = "m2";
	out->message->text = in->text;
	return PL_OK;
}

static int
owner_change(pl_call *call, const char *id, void *vout, int owner)
{
	Parley__Messaging__V1__TakeOverResponse *out = vout;

	if (!tenant_is(call, "ta") || strcmp(id, "cv1") != 0)
		return pl_call_error(call, PL_NOT_FOUND,
		                     "conversation not found");
	out->conversation = NEW(call, Parley__Messaging__V1__Conversation,
	                        parley__messaging__v1__conversation__init);
	out->conversation->id = "cv1";
	out->conversation->owner = owner;
	return PL_OK;
}

static int
f_takeover(pl_call *call, const void *vin, void *vout)
{
	const Parley__Messaging__V1__TakeOverRequest *in = vin;
	return owner_change(
	        call, in->id, vout,
	        PARLEY__MESSAGING__V1__CONVERSATION_OWNER__CONVERSATION_OWNER_HUMAN);
}

static int
f_handback(pl_call *call, const void *vin, void *vout)
{
	const Parley__Messaging__V1__HandBackRequest *in = vin;
	return owner_change(
	        call, in->id, vout,
	        PARLEY__MESSAGING__V1__CONVERSATION_OWNER__CONVERSATION_OWNER_BOT);
}

static int
f_handle_webhook(pl_call *call, const void *vin, void *vout)
{
	const Parley__Messaging__V1__HandleWebhookRequest *in = vin;
	Parley__Messaging__V1__HandleWebhookResponse *out = vout;
	const char *sig = NULL;

	for (size_t i = 0; i < in->n_headers; i++)
		if (strcasecmp(in->headers[i]->name, "X-Hub-Signature-256") ==
		    0)
			sig = in->headers[i]->value;
	if (in->channel_type ==
	            PARLEY__TENANTS__V1__CHANNEL_TYPE__CHANNEL_TYPE_WHATSAPP_CLOUD &&
	    (sig == NULL || strcmp(sig, "sha256=good") != 0))
		return pl_call_error(call, PL_UNAUTHENTICATED, "bad signature");
	seen.webhook_len = in->body.len < sizeof(seen.webhook_body)
	                           ? in->body.len
	                           : sizeof(seen.webhook_body);
	if (seen.webhook_len > 0)
		memcpy(seen.webhook_body, in->body.data, seen.webhook_len);
	snprintf(seen.webhook_ip, sizeof(seen.webhook_ip), "%s", in->source_ip);
	out->inbox_id = "in1";
	return PL_OK;
}

static int
f_verify(pl_call *call, const void *vin, void *vout)
{
	const Parley__Messaging__V1__VerifyWebhookSubscriptionRequest *in = vin;
	Parley__Messaging__V1__VerifyWebhookSubscriptionResponse *out = vout;

	if (strcmp(in->mode, "subscribe") != 0 ||
	    strcmp(in->verify_token, "vt") != 0 ||
	    strcmp(in->channel_id, "ch1") != 0)
		return pl_call_error(call, PL_PERMISSION_DENIED,
		                     "verification refused");
	out->challenge = in->challenge;
	return PL_OK;
}

static int
f_webchat_start(pl_call *call, const void *vin, void *vout)
{
	const Parley__Messaging__V1__StartWebchatSessionRequest *in = vin;
	Parley__Messaging__V1__StartWebchatSessionResponse *out = vout;

	(void)call;
	snprintf(seen.website_domain, sizeof(seen.website_domain), "%s",
	         in->website_domain);
	snprintf(seen.webchat_ip, sizeof(seen.webchat_ip), "%s", in->client_ip);
	out->session_token = "ws1";
	out->cursor = "c0";
	return PL_OK;
}

static int
f_webchat_post(pl_call *call, const void *vin, void *vout)
{
	const Parley__Messaging__V1__PostWebchatMessageRequest *in = vin;
	Parley__Messaging__V1__PostWebchatMessageResponse *out = vout;

	if (strcmp(in->session_token, "ws1") != 0)
		return pl_call_error(call, PL_UNAUTHENTICATED, "bad session");
	out->message = NEW(call, Parley__Messaging__V1__Message,
	                   parley__messaging__v1__message__init);
	out->message->id = "wm1";
	out->message->text = in->text;
	return PL_OK;
}

static int
f_webchat_poll(pl_call *call, const void *vin, void *vout)
{
	const Parley__Messaging__V1__PollWebchatMessagesRequest *in = vin;
	Parley__Messaging__V1__PollWebchatMessagesResponse *out = vout;

	if (strncmp(in->session_token, "ws", 2) != 0)
		return pl_call_error(call, PL_UNAUTHENTICATED, "bad session");
	seen.wait_ms = in->wait_ms;
	// Nothing new yet: the cursor comes back as it went.
	out->cursor = in->cursor;
	return PL_OK;
}

static int
f_webchat_batch(pl_call *call, const void *vin, void *vout)
{
	const Parley__Messaging__V1__PollWebchatBatchRequest *in = vin;
	Parley__Messaging__V1__PollWebchatBatchResponse *out = vout;

	out->ready =
	        pl_arena_zalloc(call->arena, in->n_polls * sizeof(*out->ready));
	pthread_mutex_lock(&wc_mu);
	if (in->n_polls > wc_batch_max)
		wc_batch_max = in->n_polls;
	for (size_t i = 0; i < in->n_polls; i++) {
		const char *t = in->polls[i]->session_token;
		Parley__Messaging__V1__PollWebchatBatchResult *r;
		if (strcmp(t, wc_ready) != 0 && strcmp(t, "wsgone") != 0)
			continue;
		r = NEW(call, Parley__Messaging__V1__PollWebchatBatchResult,
		        parley__messaging__v1__poll_webchat_batch_result__init);
		r->index = (int32_t)i;
		if (strcmp(t, "wsgone") == 0) {
			r->code = PL_UNAUTHENTICATED;
			r->message = "the session has expired";
		} else {
			Parley__Messaging__V1__Message *m;
			r->result = NEW(
			        call,
			        Parley__Messaging__V1__PollWebchatMessagesResponse,
			        parley__messaging__v1__poll_webchat_messages_response__init);
			m = NEW(call, Parley__Messaging__V1__Message,
			        parley__messaging__v1__message__init);
			m->id = "wm2";
			m->text = pl_arena_printf(call->arena, "hello %s", t);
			r->result->messages = pl_arena_zalloc(
			        call->arena, sizeof(*r->result->messages));
			r->result->messages[0] = m;
			r->result->n_messages = 1;
			r->result->cursor = "wm2";
		}
		out->ready[out->n_ready++] = r;
	}
	pthread_mutex_unlock(&wc_mu);
	return PL_OK;
}

static int
f_get_usage(pl_call *call, const void *vin, void *vout)
{
	Parley__Billing__V1__GetUsageResponse *out = vout;

	(void)vin;
	if (!tenant_is(call, "ta"))
		return pl_call_error(call, PL_NOT_FOUND, "no subscription");
	out->plan = "starter";
	out->limits = NEW(call, Parley__Billing__V1__Limits,
	                  parley__billing__v1__limits__init);
	out->limits->messages_per_day = 5;
	out->used = NEW(call, Parley__Billing__V1__UsageCounts,
	                parley__billing__v1__usage_counts__init);
	out->used->messages_per_day = 5;
	return PL_OK;
}

static int
f_payment(pl_call *call, const void *vin, void *vout)
{
	const Parley__Billing__V1__HandlePaymentWebhookRequest *in = vin;
	Parley__Billing__V1__HandlePaymentWebhookResponse *out = vout;

	for (size_t i = 0; i < in->n_headers; i++)
		if (strcasecmp(in->headers[i]->name, "Stripe-Signature") == 0 &&
		    strcmp(in->headers[i]->value, "t=1,v1=ok") == 0) {
			out->event_id = "evt_1";
			out->applied = true;
			return PL_OK;
		}
	return pl_call_error(call, PL_UNAUTHENTICATED, "bad signature");
}

static int
f_unimplemented(pl_call *call, const void *in, void *out)
{
	(void)in;
	(void)out;
	return pl_call_error(call, PL_UNIMPLEMENTED, "%s is not implemented",
	                     call->method);
}

static const struct {
	const char *name;
	pl_rpc_handler h;
	pl_access access;
	const char *scope;
} fakes[] = {
	{ "Authenticate", f_authenticate, PL_CALLER_SERVICE, NULL },
	{ "SignUp", f_signup, PL_CALLER_PUBLIC, NULL },
	{ "Login", f_login, PL_CALLER_PUBLIC, NULL },
	{ "CreateApiKey", f_create_api_key, PL_ROLE_ADMIN, NULL },
	{ "CreateChannel", f_create_channel, PL_ROLE_ADMIN, NULL },
	{ "UpdateChannel", f_update_channel, PL_ROLE_ADMIN, NULL },
	{ "ImportKnowledge", f_import_knowledge, PL_ROLE_ADMIN, NULL },
	{ "PublishAgent", f_publish, PL_ROLE_ADMIN, NULL },
	{ "ListConversations", f_list_conversations, PL_ROLE_VIEWER, NULL },
	{ "ListMessages", f_list_messages, PL_ROLE_VIEWER, NULL },
	{ "SendHumanReply", f_send_human_reply, PL_ROLE_AGENT, NULL },
	{ "TakeOver", f_takeover, PL_ROLE_AGENT, NULL },
	{ "HandBack", f_handback, PL_ROLE_AGENT, NULL },
	{ "HandleWebhook", f_handle_webhook, PL_CALLER_SERVICE, NULL },
	{ "VerifyWebhookSubscription", f_verify, PL_CALLER_SERVICE, NULL },
	{ "StartWebchatSession", f_webchat_start, PL_CALLER_SERVICE, NULL },
	{ "PostWebchatMessage", f_webchat_post, PL_CALLER_SERVICE, NULL },
	{ "PollWebchatMessages", f_webchat_poll, PL_CALLER_SERVICE, NULL },
	{ "PollWebchatBatch", f_webchat_batch, PL_CALLER_SERVICE, NULL },
	{ "GetUsage", f_get_usage, PL_ROLE_VIEWER, "billing:read" },
	{ "HandlePaymentWebhook", f_payment, PL_CALLER_SERVICE, NULL },
};

static const ProtobufCServiceDescriptor *const descs[GW_NSVC] = {
	&parley__tenants__v1__tenants__descriptor,
	&parley__billing__v1__billing__descriptor,
	&parley__agents__v1__agents__descriptor,
	&parley__messaging__v1__messaging__descriptor,
	&parley__analytics__v1__analytics__descriptor,
};

static pl_rpc_method *tables[GW_NSVC];
static pl_rpc_service services[GW_NSVC];
static pl_rpc_server *servers[GW_NSVC];
static char urls[GW_NSVC][64];
static gw *G;
static CURL *curl;
static char base[64];

static int
start_fake(int i)
{
	const ProtobufCServiceDescriptor *sd = descs[i];
	const pl_rpc_service *list[2] = { &services[i], NULL };
	pl_rpc_server_config sc = { 0 };

	tables[i] = calloc(sd->n_methods + 1, sizeof(pl_rpc_method));
	for (unsigned m = 0; m < sd->n_methods; m++) {
		tables[i][m].name = sd->methods[m].name;
		tables[i][m].handler = f_unimplemented;
		tables[i][m].access = PL_CALLER_PUBLIC;
		for (size_t k = 0; k < sizeof(fakes) / sizeof(fakes[0]); k++)
			if (strcmp(fakes[k].name, sd->methods[m].name) == 0) {
				tables[i][m].handler = fakes[k].h;
				tables[i][m].access = fakes[k].access;
				tables[i][m].scope = fakes[k].scope;
			}
	}
	services[i].desc = sd;
	services[i].methods = tables[i];
	snprintf(urls[i], sizeof(urls[i]), "inproc://gw-fake-%s-%d",
	         gw_svc_name(i), (int)getpid());
	sc.name = gw_svc_name(i);
	sc.listen = urls[i];
	sc.workers = 4;
	sc.secret = SECRET;
	if (pl_rpc_server_open(&servers[i], &sc, list) != 0)
		return -1;
	return pl_rpc_server_start(servers[i]);
}

static int
setup(void **state)
{
	gw_config cfg = { 0 };

	(void)state;
	pl_log_init("gateway-test", PL_LOG_ERROR);
	for (int i = 0; i < GW_NSVC; i++) {
		if (i == GW_ANALYTICS)
			continue; // not configured: its routes answer 503
		assert_int_equal(start_fake(i), 0);
		cfg.urls[i] = urls[i];
	}
	cfg.bind = "127.0.0.1";
	cfg.port = 0;
	cfg.secret = SECRET;
	cfg.public_url = "http://localhost";
	cfg.max_body = 1024 * 1024;
	cfg.cors_origins = "https://app.example, https://other.example";
	cfg.api_key_rps = 20;
	cfg.threads = 4;
	cfg.timeout_s = 5;
	cfg.rpc_timeout = 5000;
	cfg.poll_max = 2000;
	cfg.max_waiting = 16;
	cfg.auth_ttl = 1000;
	// The tests' client is a trusted proxy: its X-Forwarded-For counts.
	cfg.trusted_proxies = "127.0.0.0/8, ::1";
	assert_int_equal(gw_open(&G, &cfg), 0);
	assert_int_equal(gw_start(G), 0);
	snprintf(base, sizeof(base), "http://127.0.0.1:%u", gw_port(G));
	curl_global_init(CURL_GLOBAL_DEFAULT);
	curl = curl_easy_init();
	return 0;
}

static int
teardown(void **state)
{
	(void)state;
	curl_easy_cleanup(curl);
	curl_global_cleanup();
	gw_close(G);
	for (int i = 0; i < GW_NSVC; i++) {
		if (servers[i] != NULL)
			pl_rpc_server_close(servers[i]);
		free(tables[i]);
	}
	return 0;
}

// ---------------------------------------------------------------------------
// HTTP.

typedef struct hresp {
	long status;
	char *body;
	size_t len;
	char hdrs[8192];
	size_t hlen;
	json_t *json;
} hresp;

static size_t
on_body(char *p, size_t sz, size_t n, void *arg)
{
	hresp *r = arg;
	char *nb = realloc(r->body, r->len + sz * n + 1);

	memcpy(nb + r->len, p, sz * n);
	r->body = nb;
	r->len += sz * n;
	r->body[r->len] = '\0';
	return sz * n;
}

static size_t
on_header(char *p, size_t sz, size_t n, void *arg)
{
	hresp *r = arg;
	size_t k = sz * n;

	if (r->hlen + k < sizeof(r->hdrs)) {
		memcpy(r->hdrs + r->hlen, p, k);
		r->hlen += k;
		r->hdrs[r->hlen] = '\0';
	}
	return k;
}

static void
hfree(hresp *r)
{
	free(r->body);
	json_decref(r->json);
	memset(r, 0, sizeof(*r));
}

// The value of a response header (static buffer) or NULL.
static const char *
hget(hresp *r, const char *name)
{
	static char v[512];
	size_t n = strlen(name);

	for (char *l = r->hdrs; l && *l;
	     l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
		if (strncasecmp(l, name, n) == 0 && l[n] == ':') {
			const char *s = l + n + 1;
			while (*s == ' ')
				s++;
			size_t k = strcspn(s, "\r\n");
			snprintf(v, sizeof(v), "%.*s", (int)k, s);
			return v;
		}
	return NULL;
}

static long
req(hresp *r, const char *method, const char *path, const char *token,
    const char *body, size_t blen, const char *const *headers)
{
	char url[1024], auth[600];
	struct curl_slist *hl = NULL;

	memset(r, 0, sizeof(*r));
	curl_easy_reset(curl);
	snprintf(url, sizeof(url), "%s%s", base, path);
	curl_easy_setopt(curl, CURLOPT_URL, url);
	curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
	if (strcmp(method, "HEAD") == 0)
		curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
	if (body != NULL) {
		curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE,
		                 (curl_off_t)blen);
		hl = curl_slist_append(hl, "Content-Type: application/json");
	}
	if (token != NULL) {
		snprintf(auth, sizeof(auth), "Authorization: Bearer %s", token);
		hl = curl_slist_append(hl, auth);
	}
	hl = curl_slist_append(hl, "Expect:");
	for (size_t i = 0; headers && headers[i]; i++)
		hl = curl_slist_append(hl, headers[i]);
	curl_easy_setopt(curl, CURLOPT_HTTPHEADER, hl);
	curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(curl, CURLOPT_WRITEDATA, r);
	curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(curl, CURLOPT_HEADERDATA, r);
	curl_easy_setopt(curl, CURLOPT_TIMEOUT, 20L);
	if (curl_easy_perform(curl) != CURLE_OK)
		r->status = -1;
	else
		curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &r->status);
	curl_slist_free_all(hl);
	if (r->body != NULL)
		r->json = json_loads(r->body, 0, NULL);
	return r->status;
}

static long
jreq(hresp *r, const char *method, const char *path, const char *token,
     const char *body)
{
	return req(r, method, path, token, body, body ? strlen(body) : 0, NULL);
}

static const char *
jstr(hresp *r, const char *a, const char *b)
{
	json_t *v = json_object_get(r->json, a);

	if (b != NULL)
		v = json_object_get(v, b);
	return json_string_value(v);
}

static const char *
err_code(hresp *r)
{
	return jstr(r, "error", "code");
}

// ---------------------------------------------------------------------------
// Tests.

static void
test_signup_login(void **state)
{
	hresp r;

	(void)state;
	assert_int_equal(
	        jreq(&r, "POST", "/v1/signup", NULL,
	             "{\"tenant_name\":\"Pizza\",\"email\":\"a@b.c\","
	             "\"password\":\"pw-123456789\",\"full_name\":\"A\"}"),
	        201);
	assert_string_equal(jstr(&r, "tenant", "id"), "ta");
	assert_string_equal(jstr(&r, "tenant", "name"), "Pizza");
	assert_string_equal(jstr(&r, "user", "id"), "ua");
	assert_string_equal(jstr(&r, "token", NULL), "tok-a");
	assert_string_equal(seen.signup_ip, "127.0.0.1");
	assert_non_null(hget(&r, "X-Request-Id"));
	hfree(&r);
	// The service's violation comes back with the field named.
	assert_int_equal(
	        jreq(&r, "POST", "/v1/signup", NULL, "{\"tenant_name\":\"\"}"),
	        400);
	assert_string_equal(err_code(&r), "INVALID_ARGUMENT");
	json_t *d = json_array_get(
	        json_object_get(json_object_get(r.json, "error"), "details"),
	        0);
	assert_string_equal(json_string_value(json_object_get(d, "field")),
	                    "tenant_name");
	hfree(&r);
	assert_int_equal(jreq(&r, "POST", "/v1/login", NULL,
	                      "{\"email\":\"a@b.c\",\"password\":"
	                      "\"right-password\"}"),
	                 200);
	assert_string_equal(jstr(&r, "token", NULL), "tok-a");
	assert_string_equal(jstr(&r, "tenant_id", NULL), "ta");
	assert_string_equal(jstr(&r, "user_id", NULL), "ua");
	hfree(&r);
	assert_int_equal(jreq(&r, "POST", "/v1/login", NULL,
	                      "{\"email\":\"a@b.c\",\"password\":\"no\"}"),
	                 401);
	assert_string_equal(err_code(&r), "UNAUTHENTICATED");
	hfree(&r);
}

static void
test_bad_input(void **state)
{
	hresp r;
	size_t big = 2 * 1024 * 1024;
	char *body = malloc(big + 1);

	(void)state;
	assert_int_equal(jreq(&r, "POST", "/v1/signup", NULL, "{\"tenant_"),
	                 400);
	assert_string_equal(err_code(&r), "INVALID_ARGUMENT");
	assert_non_null(strstr(jstr(&r, "error", "message"), "malformed JSON"));
	hfree(&r);
	assert_int_equal(jreq(&r, "POST", "/v1/signup", NULL, "[1,2]"), 400);
	hfree(&r);
	// Unknown field: 400 naming it.
	assert_int_equal(jreq(&r, "POST", "/v1/login", NULL,
	                      "{\"email\":\"a@b.c\",\"bogus\":1}"),
	                 400);
	assert_non_null(strstr(jstr(&r, "error", "message"), "bogus"));
	hfree(&r);
	// 2 MB body: 413.
	memset(body, ' ', big);
	body[0] = '{';
	body[big - 1] = '}';
	body[big] = '\0';
	assert_int_equal(req(&r, "POST", "/v1/signup", NULL, body, big, NULL),
	                 413);
	// In the API's own error format, with the request id.
	assert_string_equal(err_code(&r), "INVALID_ARGUMENT");
	assert_non_null(strstr(jstr(&r, "error", "message"), "too large"));
	assert_non_null(hget(&r, "X-Request-Id"));
	hfree(&r);
	free(body);
	assert_int_equal(jreq(&r, "GET", "/v1/nowhere", "tok-a", NULL), 404);
	assert_string_equal(err_code(&r), "NOT_FOUND");
	hfree(&r);
	assert_int_equal(jreq(&r, "PUT", "/v1/conversations", "tok-a", NULL),
	                 405);
	assert_non_null(hget(&r, "Allow"));
	assert_non_null(strstr(hget(&r, "Allow"), "GET"));
	hfree(&r);
	assert_int_equal(jreq(&r, "GET", "/v1/conversations", NULL, NULL), 401);
	assert_string_equal(err_code(&r), "UNAUTHENTICATED");
	assert_non_null(hget(&r, "WWW-Authenticate"));
	hfree(&r);
	assert_int_equal(jreq(&r, "GET", "/v1/conversations", "nope", NULL),
	                 401);
	hfree(&r);
	const char *basic[] = { "Authorization: Basic abc", NULL };
	assert_int_equal(
	        req(&r, "GET", "/v1/conversations", NULL, NULL, 0, basic), 401);
	hfree(&r);
	// A query value of the wrong type: 400.
	assert_int_equal(jreq(&r, "GET", "/v1/conversations?status=bogus",
	                      "tok-a", NULL),
	                 400);
	hfree(&r);
}

static void
test_essentials(void **state)
{
	hresp r;
	json_t *c;

	(void)state;
	assert_int_equal(
	        jreq(&r, "POST", "/v1/channels", "tok-a",
	             "{\"type\":\"whatsapp_cloud\",\"name\":\"Main\","
	             "\"phone_number_id\":\"123\",\"access_token\":\"t\","
	             "\"app_secret\":\"s\",\"verify_token\":\"vt\","
	             "\"api_base_url\":\"http://fake\"}"),
	        201);
	assert_string_equal(jstr(&r, "id", NULL), "ch1");
	assert_non_null(jstr(&r, "webhook_url", NULL));
	assert_string_equal(jstr(&r, "channel", "type"), "whatsapp_cloud");
	assert_null(strstr(r.body, "\"t\"")); // no secret echoed
	hfree(&r);
	assert_int_equal(jreq(&r, "PATCH", "/v1/channels/ch1", "tok-a",
	                      "{\"agent_id\":\"ag1\"}"),
	                 200);
	assert_string_equal(jstr(&r, "channel", "agent_id"), "ag1");
	assert_string_equal(seen.mask, "agent_id");
	hfree(&r);
	assert_int_equal(
	        jreq(&r, "POST", "/v1/agents/ag1/knowledge", "tok-a",
	             "{\"entries\":[{\"question\":\"Open?\",\"answer\":"
	             "\"9-5\",\"keywords\":[\"hours\"]},{\"question\":"
	             "\"Delivery?\",\"answer\":\"Yes\",\"intent\":\"d\"}]}"),
	        201);
	assert_int_equal(seen.n_entries, 2);
	assert_int_equal(json_integer_value(json_object_get(r.json, "created")),
	                 2);
	hfree(&r);
	assert_int_equal(
	        jreq(&r, "POST", "/v1/agents/ag1/publish", "tok-a", NULL), 200);
	assert_int_equal(json_integer_value(json_object_get(r.json, "version")),
	                 3);
	hfree(&r);
	assert_int_equal(jreq(&r, "GET",
	                      "/v1/conversations?limit=20&status=open", "tok-a",
	                      NULL),
	                 200);
	assert_int_equal(seen.page_size, 20);
	assert_int_equal(seen.conv_status, 1);
	c = json_array_get(json_object_get(r.json, "conversations"), 0);
	assert_string_equal(json_string_value(json_object_get(c, "id")), "cv1");
	assert_string_equal(json_string_value(json_object_get(c, "owner")),
	                    "bot");
	assert_string_equal(json_string_value(json_object_get(
	                            json_object_get(c, "contact"), "name")),
	                    "Ana");
	assert_string_equal(jstr(&r, "next_page_token", NULL), "next");
	hfree(&r);
	assert_int_equal(jreq(&r, "GET", "/v1/conversations/cv1/messages",
	                      "tok-a", NULL),
	                 200);
	c = json_array_get(json_object_get(r.json, "messages"), 0);
	assert_string_equal(json_string_value(json_object_get(c, "direction")),
	                    "inbound");
	hfree(&r);
	assert_int_equal(jreq(&r, "POST", "/v1/conversations/cv1/takeover",
	                      "tok-a", NULL),
	                 200);
	assert_string_equal(jstr(&r, "conversation", "owner"), "human");
	hfree(&r);
	assert_int_equal(jreq(&r, "POST", "/v1/conversations/cv1/handback",
	                      "tok-a", NULL),
	                 200);
	assert_string_equal(jstr(&r, "conversation", "owner"), "bot");
	hfree(&r);
	// A person's reply: 202, the request id as trace id, an idempotency
	// key (the client's, or one made up).
	const char *h[] = { "X-Request-Id: trace-abc.1", "Idempotency-Key: k-1",
		            NULL };
	assert_int_equal(req(&r, "POST", "/v1/conversations/cv1/messages",
	                     "tok-a", "{\"text\":\"hi\"}", 13, h),
	                 202);
	assert_string_equal(jstr(&r, "message", "text"), "hi");
	assert_string_equal(hget(&r, "X-Request-Id"), "trace-abc.1");
	assert_string_equal(seen.trace, "trace-abc.1");
	assert_string_equal(seen.idem, "k-1");
	hfree(&r);
	const char *bad[] = { "X-Request-Id: bad id with spaces", NULL };
	assert_int_equal(req(&r, "POST", "/v1/conversations/cv1/messages",
	                     "tok-a", "{\"text\":\"hi\"}", 13, bad),
	                 202);
	assert_string_not_equal(hget(&r, "X-Request-Id"), "bad id with spaces");
	assert_int_equal(strlen(hget(&r, "X-Request-Id")), 36);
	assert_string_equal(seen.trace, hget(&r, "X-Request-Id"));
	assert_int_equal(strlen(seen.idem), 36);
	hfree(&r);
	assert_int_equal(jreq(&r, "GET", "/v1/billing/usage", "tok-a", NULL),
	                 200);
	assert_string_equal(jstr(&r, "plan", NULL), "starter");
	assert_int_equal(
	        json_integer_value(json_object_get(
	                json_object_get(r.json, "used"), "messages_per_day")),
	        5);
	hfree(&r);
}

// Another tenant's resource is 404; a role below the table's is 403; a
// suspended tenant is 403; UNIMPLEMENTED is 501; an unconfigured service is
// 503.
static void
test_status_mapping(void **state)
{
	hresp r;

	(void)state;
	assert_int_equal(jreq(&r, "GET", "/v1/conversations/cv1/messages",
	                      "tok-b", NULL),
	                 404);
	assert_string_equal(err_code(&r), "NOT_FOUND");
	hfree(&r);
	assert_int_equal(jreq(&r, "PATCH", "/v1/channels/ch1", "tok-b",
	                      "{\"agent_id\":\"x\"}"),
	                 404);
	hfree(&r);
	assert_int_equal(jreq(&r, "POST", "/v1/agents/ag1/knowledge", "tok-b",
	                      "{\"entries\":[]}"),
	                 404);
	hfree(&r);
	assert_int_equal(jreq(&r, "POST", "/v1/api-keys", "tok-viewer",
	                      "{\"name\":\"k\",\"scopes\":[\"agents:read\"]}"),
	                 403);
	assert_string_equal(err_code(&r), "PERMISSION_DENIED");
	hfree(&r);
	assert_int_equal(jreq(&r, "POST", "/v1/api-keys", "tok-a",
	                      "{\"name\":\"k\",\"scopes\":[\"agents:read\"]}"),
	                 201);
	assert_string_equal(jstr(&r, "key", NULL), "pk_secret");
	hfree(&r);
	assert_int_equal(jreq(&r, "GET", "/v1/conversations", "tok-susp", NULL),
	                 403);
	hfree(&r);
	assert_int_equal(jreq(&r, "GET", "/v1/templates", "tok-a", NULL), 501);
	assert_string_equal(err_code(&r), "UNIMPLEMENTED");
	hfree(&r);
	assert_int_equal(
	        jreq(&r, "GET", "/v1/analytics/summary", "tok-a", NULL), 503);
	assert_string_equal(err_code(&r), "UNAVAILABLE");
	hfree(&r);
}

static void
test_webhooks(void **state)
{
	hresp r;
	// Bytes a JSON round trip would change: key order, spaces, escapes.
	static const char body[] = "{\"object\":\"whatsapp_business_account\","
	                           "  \"entry\" : [ {\"x\":\"\\u00e9\"} ]}";
	const char *good[] = { "X-Hub-Signature-256: sha256=good", NULL };
	const char *badsig[] = { "X-Hub-Signature-256: sha256=bad", NULL };
	const char *pay[] = { "Stripe-Signature: t=1,v1=ok", NULL };

	(void)state;
	assert_int_equal(jreq(&r, "GET",
	                      "/v1/webhooks/whatsapp/ch1?hub.mode=subscribe&"
	                      "hub.verify_token=vt&hub.challenge=1158201444",
	                      NULL, NULL),
	                 200);
	assert_string_equal(r.body, "1158201444");
	assert_non_null(strstr(hget(&r, "Content-Type"), "text/plain"));
	hfree(&r);
	assert_int_equal(jreq(&r, "GET",
	                      "/v1/webhooks/whatsapp/ch1?hub.mode=subscribe&"
	                      "hub.verify_token=wrong&hub.challenge=1",
	                      NULL, NULL),
	                 403);
	hfree(&r);
	seen.webhook_len = 0;
	assert_int_equal(req(&r, "POST", "/v1/webhooks/whatsapp/ch1", NULL,
	                     body, sizeof(body) - 1, good),
	                 200);
	assert_int_equal(seen.webhook_len, sizeof(body) - 1);
	assert_memory_equal(seen.webhook_body, body, sizeof(body) - 1);
	hfree(&r);
	assert_int_equal(req(&r, "POST", "/v1/webhooks/whatsapp/ch1", NULL,
	                     body, sizeof(body) - 1, badsig),
	                 401);
	hfree(&r);
	// Not even JSON: passed on as bytes all the same.
	assert_int_equal(req(&r, "POST", "/v1/webhooks/infobip/ch1", NULL,
	                     "not json", 8, NULL),
	                 200);
	assert_int_equal(seen.webhook_len, 8);
	hfree(&r);
	assert_int_equal(
	        req(&r, "POST", "/v1/webhooks/payments", NULL, "{}", 2, pay),
	        200);
	assert_string_equal(jstr(&r, "event_id", NULL), "evt_1");
	hfree(&r);
	assert_int_equal(
	        req(&r, "POST", "/v1/webhooks/payments", NULL, "{}", 2, NULL),
	        401);
	hfree(&r);
}

static void
test_webchat(void **state)
{
	hresp r;
	const char *origin[] = { "Origin: https://shop.example:8443", NULL };

	(void)state;
	assert_int_equal(req(&r, "POST", "/v1/webchat/ch1/sessions", NULL, "{}",
	                     2, origin),
	                 201);
	assert_string_equal(jstr(&r, "session_token", NULL), "ws1");
	assert_string_equal(seen.website_domain, "shop.example");
	// The widget may be embedded anywhere: CORS is open on web chat.
	assert_string_equal(hget(&r, "Access-Control-Allow-Origin"),
	                    "https://shop.example:8443");
	hfree(&r);
	assert_int_equal(jreq(&r, "POST", "/v1/webchat/ch1/messages", "ws1",
	                      "{\"text\":\"Are you open?\"}"),
	                 202);
	assert_string_equal(jstr(&r, "message", "text"), "Are you open?");
	hfree(&r);
	assert_int_equal(jreq(&r, "POST", "/v1/webchat/ch1/messages", "wrong",
	                      "{\"text\":\"x\"}"),
	                 401);
	hfree(&r);
	// Long-poll: messaging is asked at once (wait 0), then the poll waits
	// parked for the wait asked, capped by the configuration (2 s here),
	// and comes back with no messages and the cursor it had.
	{
		int64_t t0 = pl_now_ns();
		assert_int_equal(
		        jreq(&r, "GET",
		             "/v1/webchat/ch1/messages?after=c0&wait_ms=60000",
		             "ws1", NULL),
		        200);
		assert_true(pl_now_ns() - t0 >= 1900 * 1000000LL);
	}
	assert_int_equal(seen.wait_ms, 0);
	assert_string_equal(jstr(&r, "cursor", NULL), "c0");
	assert_int_equal(json_array_size(json_object_get(r.json, "messages")),
	                 0);
	assert_non_null(hget(&r, "X-Request-Id"));
	hfree(&r);
	assert_int_equal(jreq(&r, "GET",
	                      "/v1/webchat/ch1/messages?after=c0&wait_ms=1000",
	                      "wrong", NULL),
	                 401);
	assert_int_equal(gw_poller_waiting(G->poller), 0);
	hfree(&r);
	assert_int_equal(jreq(&r, "GET", "/chat/ch1", NULL, NULL), 200);
	assert_non_null(strstr(hget(&r, "Content-Type"), "text/html"));
	assert_non_null(strstr(r.body, "/v1/webchat/"));
	hfree(&r);
}

typedef struct waiter {
	pthread_t thr;
	char token[16];
	long status;
	char body[512];
} waiter;

static size_t
waiter_body(char *p, size_t sz, size_t n, void *arg)
{
	waiter *w = arg;
	size_t have = strlen(w->body), k = sz * n;

	if (have + k < sizeof(w->body)) {
		memcpy(w->body + have, p, k);
		w->body[have + k] = '\0';
	}
	return k;
}

static void *
waiter_main(void *arg)
{
	waiter *w = arg;
	CURL *c = curl_easy_init();
	struct curl_slist *hl = NULL;
	char url[256], auth[64];

	snprintf(url, sizeof(url),
	         "%s/v1/webchat/ch1/messages?after=c0&wait_ms=2000", base);
	snprintf(auth, sizeof(auth), "X-Webchat-Session: %s", w->token);
	hl = curl_slist_append(hl, auth);
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, waiter_body);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, w);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, 20L);
	if (curl_easy_perform(c) == CURLE_OK)
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &w->status);
	curl_slist_free_all(hl);
	curl_easy_cleanup(c);
	return NULL;
}

// More waiting polls than the gateway has HTTP threads (4 here): every
// one waits parked, the API is served meanwhile, messaging is asked about
// all of them in one call a tick, and each is answered on its own: news
// for its session, an expired session, or no messages at its deadline.
static void
test_webchat_waiting(void **state)
{
	enum { N = 12 };
	waiter w[N + 1];
	hresp r;
	int i;

	(void)state;
	memset(w, 0, sizeof(w));
	pthread_mutex_lock(&wc_mu);
	wc_batch_max = 0;
	wc_ready[0] = '\0';
	pthread_mutex_unlock(&wc_mu);
	for (i = 0; i <= N; i++) {
		if (i < N)
			snprintf(w[i].token, sizeof(w[i].token), "ws%d", i);
		else
			snprintf(w[i].token, sizeof(w[i].token), "wsgone");
		assert_int_equal(
		        pthread_create(&w[i].thr, NULL, waiter_main, &w[i]), 0);
	}
	// All parked (the expired one is answered at the first tick).
	for (i = 0; i < 150 && gw_poller_waiting(G->poller) < N; i++)
		usleep(10000);
	assert_true(gw_poller_waiting(G->poller) >= N);
	// The HTTP threads are free: the API answers meanwhile.
	assert_int_equal(jreq(&r, "GET", "/chat/ch1", NULL, NULL), 200);
	hfree(&r);
	pthread_mutex_lock(&wc_mu);
	snprintf(wc_ready, sizeof(wc_ready), "ws7");
	pthread_mutex_unlock(&wc_mu);
	for (i = 0; i <= N; i++)
		pthread_join(w[i].thr, NULL);
	for (i = 0; i < N; i++) {
		json_t *j = json_loads(w[i].body, 0, NULL);
		json_t *m = json_object_get(j, "messages");
		assert_int_equal(w[i].status, 200);
		if (i == 7) {
			assert_int_equal(json_array_size(m), 1);
			assert_string_equal(
			        json_string_value(json_object_get(
			                json_array_get(m, 0), "text")),
			        "hello ws7");
			assert_string_equal(
			        json_string_value(json_object_get(j, "cursor")),
			        "wm2");
		} else {
			assert_int_equal(json_array_size(m), 0);
			assert_string_equal(
			        json_string_value(json_object_get(j, "cursor")),
			        "c0");
		}
		json_decref(j);
	}
	assert_int_equal(w[N].status, 401);
	assert_non_null(strstr(w[N].body, "UNAUTHENTICATED"));
	pthread_mutex_lock(&wc_mu);
	assert_true(wc_batch_max >= N);
	wc_ready[0] = '\0';
	pthread_mutex_unlock(&wc_mu);
	assert_int_equal(gw_poller_waiting(G->poller), 0);
}

// PARLEY_WEBCHAT_MAX_WAITING (16 here): past it a poll is answered at
// once (no messages, its cursor) rather than parked, so the waiting never
// take every connection from the API and the providers' webhooks.
static void
test_webchat_cap(void **state)
{
	enum { N = 16 };
	waiter w[N];
	const char *hdrs[] = { "X-Webchat-Session: wsextra", NULL };
	json_t *j;
	hresp r;
	int i;

	(void)state;
	memset(w, 0, sizeof(w));
	for (i = 0; i < N; i++) {
		snprintf(w[i].token, sizeof(w[i].token), "wscap%d", i);
		assert_int_equal(
		        pthread_create(&w[i].thr, NULL, waiter_main, &w[i]), 0);
	}
	for (i = 0; i < 150 && gw_poller_waiting(G->poller) < N; i++)
		usleep(10000);
	assert_int_equal(gw_poller_waiting(G->poller), N);
	// One more: answered now, while the 16 still wait (they are answered
	// together at their 2 s deadline).
	assert_int_equal(req(&r, "GET",
	                     "/v1/webchat/ch1/messages?after=c0&wait_ms=2000",
	                     NULL, NULL, 0, hdrs),
	                 200);
	assert_int_equal(gw_poller_waiting(G->poller), N);
	j = json_loads(r.body, 0, NULL);
	assert_int_equal(json_array_size(json_object_get(j, "messages")), 0);
	assert_string_equal(json_string_value(json_object_get(j, "cursor")),
	                    "c0");
	json_decref(j);
	hfree(&r);
	for (i = 0; i < N; i++) {
		pthread_join(w[i].thr, NULL);
		assert_int_equal(w[i].status, 200);
	}
	assert_int_equal(gw_poller_waiting(G->poller), 0);
}

static void
test_cors(void **state)
{
	hresp r;
	const char *pre[] = { "Origin: https://app.example",
		              "Access-Control-Request-Method: PATCH", NULL };
	const char *evil[] = { "Origin: https://evil.example", NULL };

	(void)state;
	assert_int_equal(
	        req(&r, "OPTIONS", "/v1/channels/ch1", NULL, NULL, 0, pre),
	        204);
	assert_string_equal(hget(&r, "Access-Control-Allow-Origin"),
	                    "https://app.example");
	assert_non_null(
	        strstr(hget(&r, "Access-Control-Allow-Methods"), "PATCH"));
	assert_non_null(strstr(hget(&r, "Access-Control-Allow-Headers"),
	                       "Authorization"));
	hfree(&r);
	assert_int_equal(
	        req(&r, "OPTIONS", "/v1/channels/ch1", NULL, NULL, 0, evil),
	        204);
	assert_null(hget(&r, "Access-Control-Allow-Origin"));
	hfree(&r);
	assert_int_equal(
	        req(&r, "GET", "/v1/billing/usage", "tok-a", NULL, 0, pre),
	        200);
	assert_string_equal(hget(&r, "Access-Control-Allow-Origin"),
	                    "https://app.example");
	hfree(&r);
	assert_int_equal(req(&r, "OPTIONS", "/v1/nope", NULL, NULL, 0, pre),
	                 404);
	hfree(&r);
}

// Authenticate answers are cached at most 1 s: a revoked token stops
// working within that second.
static void
test_auth_cache_and_revocation(void **state)
{
	hresp r;
	int calls;

	(void)state;
	usleep(1100 * 1000); // nothing cached from earlier tests
	calls = seen.authenticate_calls;
	for (int i = 0; i < 5; i++) {
		assert_int_equal(
		        jreq(&r, "GET", "/v1/billing/usage", "tok-a", NULL),
		        200);
		hfree(&r);
	}
	assert_int_equal(seen.authenticate_calls, calls + 1);
	seen.revoked_a = true;
	usleep(1050 * 1000);
	assert_int_equal(jreq(&r, "GET", "/v1/billing/usage", "tok-a", NULL),
	                 401);
	hfree(&r);
	seen.revoked_a = false;
}

static void
test_rate_limit(void **state)
{
	hresp r;
	int ok = 0, limited = 0;

	(void)state;
	int64_t t0 = pl_now_ns();
	double secs;

	// The key allows 300/min = 5/s with a burst of 10.
	for (int i = 0; i < 30; i++) {
		long s = jreq(&r, "GET", "/v1/billing/usage", "key-1", NULL);
		if (s == 200)
			ok++;
		if (s == 429) {
			limited++;
			assert_string_equal(err_code(&r), "RESOURCE_EXHAUSTED");
			assert_non_null(hget(&r, "Retry-After"));
			assert_true(atoi(hget(&r, "Retry-After")) >= 1);
		}
		hfree(&r);
	}
	secs = (double)(pl_now_ns() - t0) / 1e9;
	assert_true(ok >= 10);
	assert_true(ok <= 10 + (int)(secs * 5) + 1);
	assert_true(limited > 0);
	assert_int_equal(ok + limited, 30);
	// Session tokens (people) are not limited per key.
	for (int i = 0; i < 15; i++) {
		assert_int_equal(
		        jreq(&r, "GET", "/v1/billing/usage", "tok-a", NULL),
		        200);
		hfree(&r);
	}
}

// Every operation of the served document reaches its route: never the
// router's 404 or a 405.
static void
test_openapi_served(void **state)
{
	hresp r, x;
	const char *path, *method;
	json_t *item, *op;
	int n = 0;

	(void)state;
	assert_int_equal(jreq(&r, "GET", "/v1/openapi.json", NULL, NULL), 200);
	assert_non_null(r.json);
	json_object_foreach(json_object_get(r.json, "paths"), path, item)
	{
		json_object_foreach(item, method, op)
		{
			char url[512], M[8];
			size_t u = 0, k;
			(void)op;
			for (const char *s = path; *s;) {
				if (*s == '{') {
					memcpy(url + u, "zz", 2);
					u += 2;
					s = strchr(s, '}') + 1;
				} else {
					url[u++] = *s++;
				}
			}
			url[u] = '\0';
			for (k = 0; method[k]; k++)
				M[k] = (char)(method[k] & ~0x20);
			M[k] = '\0';
			jreq(&x, M, url, "tok-viewer", NULL);
			assert_int_not_equal(x.status, 405);
			if (x.status == 404)
				assert_string_not_equal(
				        jstr(&x, "error", "message"),
				        "no such route");
			hfree(&x);
			n++;
		}
	}
	assert_int_equal(n, (int)gw_n_routes);
	hfree(&r);
}

// Behind trusted proxies (PARLEY_TRUSTED_PROXIES, 127.0.0.0/8 here) every
// service is given the client's address from X-Forwarded-For: sign-up and
// login throttling, authentication, webhooks and web-chat sessions. A
// gateway that trusts no proxy ignores the header; a bad list stops it.
static void
test_forwarded_for(void **state)
{
	hresp r;
	const char *fwd[] = {
		"X-Forwarded-For: 1.1.1.1, 203.0.113.9, 127.0.0.2", NULL
	};
	const char *sig[] = { "X-Hub-Signature-256: sha256=good",
		              "X-Forwarded-For: 198.51.100.4", NULL };
	const char *junk[] = { "X-Forwarded-For: <script>", NULL };
	gw_config cfg = G->cfg;
	gw *g2;

	(void)state;
	assert_int_equal(
	        req(&r, "POST", "/v1/signup", NULL,
	            "{\"tenant_name\":\"P\",\"email\":\"a@b.c\","
	            "\"password\":\"pw-123456789\"}",
	            strlen("{\"tenant_name\":\"P\",\"email\":\"a@b.c\","
	                   "\"password\":\"pw-123456789\"}"),
	            fwd),
	        201);
	assert_string_equal(seen.signup_ip, "203.0.113.9");
	hfree(&r);
	assert_int_equal(req(&r, "POST", "/v1/webhooks/whatsapp/ch1", NULL,
	                     "{}", 2, sig),
	                 200);
	assert_string_equal(seen.webhook_ip, "198.51.100.4");
	hfree(&r);
	assert_int_equal(
	        req(&r, "POST", "/v1/webchat/ch1/sessions", NULL, "{}", 2, fwd),
	        201);
	assert_string_equal(seen.webchat_ip, "203.0.113.9");
	hfree(&r);
	seen.auth_ip[0] = '\0';
	assert_int_equal(
	        req(&r, "GET", "/v1/conversations", "tok-fwd", NULL, 0, fwd),
	        401);
	assert_string_equal(seen.auth_ip, "203.0.113.9");
	hfree(&r);
	// Not an address: the proxy's own.
	assert_int_equal(req(&r, "POST", "/v1/webchat/ch1/sessions", NULL, "{}",
	                     2, junk),
	                 201);
	assert_string_equal(seen.webchat_ip, "127.0.0.1");
	hfree(&r);

	// A gateway that trusts no proxy: the socket's address.
	cfg.port = 0;
	cfg.trusted_proxies = "";
	assert_int_equal(gw_open(&g2, &cfg), 0);
	assert_int_equal(gw_start(g2), 0);
	char saved[64];
	snprintf(saved, sizeof(saved), "%s", base);
	snprintf(base, sizeof(base), "http://127.0.0.1:%u", gw_port(g2));
	assert_int_equal(
	        req(&r, "POST", "/v1/webchat/ch1/sessions", NULL, "{}", 2, fwd),
	        201);
	assert_string_equal(seen.webchat_ip, "127.0.0.1");
	hfree(&r);
	snprintf(base, sizeof(base), "%s", saved);
	gw_close(g2);

	cfg.trusted_proxies = "127.0.0.0/8, proxy.internal";
	assert_int_equal(gw_open(&g2, &cfg), -1);
	assert_null(g2);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_signup_login),
		cmocka_unit_test(test_bad_input),
		cmocka_unit_test(test_essentials),
		cmocka_unit_test(test_status_mapping),
		cmocka_unit_test(test_webhooks),
		cmocka_unit_test(test_webchat),
		cmocka_unit_test(test_webchat_waiting),
		cmocka_unit_test(test_webchat_cap),
		cmocka_unit_test(test_cors),
		cmocka_unit_test(test_auth_cache_and_revocation),
		cmocka_unit_test(test_rate_limit),
		cmocka_unit_test(test_openapi_served),
		cmocka_unit_test(test_forwarded_for),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
