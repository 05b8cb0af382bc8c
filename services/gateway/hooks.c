// Per-route hooks: where a route needs more than the generic JSON mapping
// (client address, Meta's hub.* names, raw webhook bodies, the web chat's
// session token, documents served by the gateway itself).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "gateway.h"
#include "parley/billing/v1/billing.pb-c.h"
#include "parley/messaging/v1/messaging.pb-c.h"
#include "parley/tenants/v1/tenants.pb-c.h"

#define UA_MAX 512

// Headers passed on with a webhook's raw body (signatures, content type).
static const char *const webhook_headers[] = {
	"Content-Type",        "User-Agent",
	"X-Hub-Signature-256", "X-Hub-Signature",
	"Stripe-Signature",    "X-Infobip-Signature",
	"X-Signature",         "Authorization",
	"X-Request-Id",        NULL,
};

// Sets obj[name] = value unless already there (or value is NULL/empty).
static void
set_default(json_t *obj, const char *name, const char *value, size_t max)
{
	json_t *s;

	if (value == NULL || value[0] == '\0' ||
	    json_object_get(obj, name) != NULL)
		return;
	s = json_stringn(value, strnlen(value, max));
	if (s != NULL)
		json_object_set_new(obj, name, s);
}

static void
set_force(json_t *obj, const char *name, const char *value)
{
	json_t *s = json_string(value ? value : "");

	json_object_set_new(obj, name, s ? s : json_string(""));
}

// Sign-up and login: the client's address and agent, for throttling and the
// audit log (behind PARLEY_TRUSTED_PROXIES, the address they forwarded).
static int
pre_client(gw_ctx *x, json_t *obj)
{
	set_force(obj, "source_ip", x->client_ip);
	set_default(obj, "user_agent", pl_http_req_header(x->req, "User-Agent"),
	            UA_MAX);
	return PL_OK;
}

const gw_hooks gw_hooks_signup = { .pre = pre_client };
const gw_hooks gw_hooks_login = { .pre = pre_client };

// Logout ends the caller's own session unless the body names one.
static int
pre_logout(gw_ctx *x, json_t *obj)
{
	set_default(obj, "token", x->token, 512);
	return PL_OK;
}

const gw_hooks gw_hooks_logout = { .pre = pre_logout };

// Meta's verification: ?hub.mode=subscribe&hub.verify_token=&hub.challenge=
// -> mode, verify_token, challenge; the answer is the challenge as text.
static int
pre_wa_verify(gw_ctx *x, json_t *obj)
{
	static const char *const map[][2] = {
		{ "hub.mode", "mode" },
		{ "hub.verify_token", "verify_token" },
		{ "hub.challenge", "challenge" },
	};

	for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
		const char *v = pl_http_req_query(x->req, map[i][0]);
		json_t *s;
		if (v == NULL)
			continue;
		if ((s = json_string(v)) == NULL) {
			gw_reply_error(x, PL_PERMISSION_DENIED,
			               "verification refused", NULL, 0);
			return PL_PERMISSION_DENIED;
		}
		json_object_set_new(obj, map[i][1], s);
	}
	return PL_OK;
}

static bool
answer_wa_verify(gw_ctx *x, const ProtobufCMessage *out)
{
	const Parley__Messaging__V1__VerifyWebhookSubscriptionResponse *r =
	        (const void *)out;
	const char *c = r->challenge ? r->challenge : "";

	pl_http_resp_set(x->resp, 200, "text/plain; charset=utf-8", c,
	                 strlen(c));
	return true;
}

const gw_hooks gw_hooks_wa_verify = { .pre = pre_wa_verify,
	                              .answer = answer_wa_verify };

// The webhook's headers as HttpHeader messages (both services' HttpHeader
// messages have the same layout: name = 1, value = 2).
static Parley__Messaging__V1__HttpHeader **
headers(gw_ctx *x, size_t *n)
{
	size_t k = 0, cap = sizeof(webhook_headers) / sizeof(*webhook_headers);
	Parley__Messaging__V1__HttpHeader **hs =
	        pl_arena_alloc(&x->arena, cap * sizeof(*hs));

	*n = 0;
	if (hs == NULL)
		return NULL;
	for (size_t i = 0; webhook_headers[i] != NULL; i++) {
		const char *v = pl_http_req_header(x->req, webhook_headers[i]);
		Parley__Messaging__V1__HttpHeader *h;
		if (v == NULL)
			continue;
		h = pl_arena_alloc(&x->arena, sizeof(*h));
		if (h == NULL)
			return NULL;
		parley__messaging__v1__http_header__init(h);
		h->name = (char *)webhook_headers[i];
		h->value = pl_arena_strdup(&x->arena, v);
		hs[k++] = h;
	}
	*n = k;
	return hs;
}

static char *
now_rfc3339(pl_arena *a)
{
	struct timespec ts;
	struct tm tm;
	char buf[32];

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
	return pl_arena_printf(a, "%s.%03ldZ", buf, ts.tv_nsec / 1000000);
}

static int
raw_provider(gw_ctx *x, ProtobufCMessage **in, int type)
{
	Parley__Messaging__V1__HandleWebhookRequest *m =
	        pl_arena_alloc(&x->arena, sizeof(*m));

	if (m == NULL) {
		gw_reply_error(x, PL_RESOURCE_EXHAUSTED, "out of memory", NULL,
		               0);
		return PL_RESOURCE_EXHAUSTED;
	}
	parley__messaging__v1__handle_webhook_request__init(m);
	m->channel_id = (char *)gw_param_get(x, "channel_id");
	m->channel_type = type;
	m->body.data = (uint8_t *)x->req->body;
	m->body.len = x->req->body ? x->req->body_len : 0;
	m->headers = headers(x, &m->n_headers);
	m->source_ip = x->client_ip;
	m->received_at = now_rfc3339(&x->arena);
	*in = &m->base;
	return PL_OK;
}

static int
raw_wa(gw_ctx *x, ProtobufCMessage **in)
{
	return raw_provider(
	        x, in,
	        PARLEY__TENANTS__V1__CHANNEL_TYPE__CHANNEL_TYPE_WHATSAPP_CLOUD);
}

static int
raw_infobip(gw_ctx *x, ProtobufCMessage **in)
{
	return raw_provider(
	        x, in, PARLEY__TENANTS__V1__CHANNEL_TYPE__CHANNEL_TYPE_INFOBIP);
}

const gw_hooks gw_hooks_webhook_wa = { .raw = raw_wa };
const gw_hooks gw_hooks_webhook_infobip = { .raw = raw_infobip };

static int
raw_payments(gw_ctx *x, ProtobufCMessage **in)
{
	Parley__Billing__V1__HandlePaymentWebhookRequest *m =
	        pl_arena_alloc(&x->arena, sizeof(*m));
	size_t n;

	if (m == NULL) {
		gw_reply_error(x, PL_RESOURCE_EXHAUSTED, "out of memory", NULL,
		               0);
		return PL_RESOURCE_EXHAUSTED;
	}
	parley__billing__v1__handle_payment_webhook_request__init(m);
	m->body.data = (uint8_t *)x->req->body;
	m->body.len = x->req->body ? x->req->body_len : 0;
	m->headers = (Parley__Billing__V1__HttpHeader **)headers(x, &n);
	m->n_headers = n;
	// Same layout, different descriptor: fix each header's type.
	for (size_t i = 0; i < n; i++)
		m->headers[i]->base.descriptor =
		        &parley__billing__v1__http_header__descriptor;
	m->source_ip = x->client_ip;
	*in = &m->base;
	return PL_OK;
}

const gw_hooks gw_hooks_payments = { .raw = raw_payments };

// The website's domain from Origin: "https://shop.example:8443" ->
// "shop.example".
static const char *
origin_domain(gw_ctx *x)
{
	const char *o = pl_http_req_header(x->req, "Origin"), *p;
	size_t n;

	if (o == NULL || strcmp(o, "null") == 0)
		return "";
	p = strstr(o, "://");
	p = p ? p + 3 : o;
	n = strcspn(p, ":/");
	return pl_arena_strndup(&x->arena, p, n > 253 ? 253 : n);
}

static int
pre_webchat_start(gw_ctx *x, json_t *obj)
{
	set_force(obj, "website_domain", origin_domain(x));
	set_force(obj, "client_ip", x->client_ip);
	set_default(obj, "user_agent", pl_http_req_header(x->req, "User-Agent"),
	            UA_MAX);
	return PL_OK;
}

const gw_hooks gw_hooks_webchat_start = { .pre = pre_webchat_start };

// The widget's session token: Authorization: Bearer, X-Webchat-Session, or
// the body's session_token.
static void
session_token(gw_ctx *x, json_t *obj)
{
	const char *t = x->token;

	if (t == NULL)
		t = pl_http_req_header(x->req, "X-Webchat-Session");
	set_default(obj, "session_token", t, 512);
}

static int
pre_webchat_post(gw_ctx *x, json_t *obj)
{
	session_token(x, obj);
	return PL_OK;
}

const gw_hooks gw_hooks_webchat_post = { .pre = pre_webchat_post };

// Long-poll: ?after=<cursor>&wait_ms=. Messaging is asked at once (wait
// 0); when it has nothing, the poll is parked (poll.c) for the wait asked,
// capped by PARLEY_WEBCHAT_POLL_MAX, and no thread waits.
static int
pre_webchat_poll(gw_ctx *x, json_t *obj)
{
	const char *after = pl_http_req_query(x->req, "after");
	json_t *w = json_object_get(obj, "wait_ms");
	long long wait = 0;

	session_token(x, obj);
	if (after != NULL) {
		json_t *s = json_string(after);
		if (s == NULL) {
			gw_reply_error(x, PL_INVALID_ARGUMENT,
			               "after: not valid UTF-8", NULL, 0);
			return PL_INVALID_ARGUMENT;
		}
		json_object_set_new(obj, "cursor", s);
	}
	if (json_is_string(w))
		wait = atoll(json_string_value(w));
	else if (json_is_integer(w))
		wait = json_integer_value(w);
	if (wait < 0)
		wait = 0;
	if (wait > x->g->cfg.poll_max)
		wait = x->g->cfg.poll_max;
	x->poll_wait_ms = wait;
	x->poll_token = pl_arena_strdup(
	        &x->arena,
	        json_string_value(json_object_get(obj, "session_token")));
	json_object_set_new(obj, "wait_ms", json_integer(0));
	return PL_OK;
}

// Nothing new yet and a wait asked: parked (answered later, true), unless
// the poller is full (answered now, with no messages).
static bool
answer_webchat_poll(gw_ctx *x, const ProtobufCMessage *out)
{
	const Parley__Messaging__V1__PollWebchatMessagesResponse *r =
	        (const void *)out;

	if (r->n_messages > 0 || x->poll_wait_ms <= 0)
		return false;
	return gw_poller_park(x->g->poller, x, gw_param_get(x, "channel_id"),
	                      x->poll_token, r->cursor);
}

const gw_hooks gw_hooks_webchat_poll = { .pre = pre_webchat_poll,
	                                 .answer = answer_webchat_poll };

static void
serve_openapi(gw_ctx *x)
{
	gw_reply_json(x, 200, x->g->openapi, x->g->openapi_len);
}

const gw_hooks gw_hooks_openapi = { .serve = serve_openapi };

static void
serve_chat(gw_ctx *x)
{
	pl_http_resp_header(x->resp, "X-Content-Type-Options", "nosniff");
	pl_http_resp_header(x->resp, "Cache-Control", "no-cache");
	pl_http_resp_set(x->resp, 200, "text/html; charset=utf-8",
	                 (const char *)gateway_chat_html,
	                 gateway_chat_html_len);
}

const gw_hooks gw_hooks_chat_page = { .serve = serve_chat };
