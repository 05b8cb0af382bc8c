// The messaging service's RPCs and the table that binds them (access as the
// proto's comments say). Engagement RPCs (issue 7) are bound to engage.h's
// handlers.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <jansson.h>
#include <sodium.h>

#include "pl/id.h"
#include "pl/log.h"
#include "messaging.h"
#include "engage.h"

#define M(x) Parley__Messaging__V1__##x
#define E(x) PARLEY__MESSAGING__V1__##x

static const char *
tenant_of(const pl_call *call)
{
	return call->principal->tenant_id ? call->principal->tenant_id : "";
}

static const char *
nz(const char *s)
{
	return (s != NULL && s[0] != '\0') ? s : NULL;
}

static int
page_size(pl_call *call, const Parley__Rpc__V1__PageRequest *pg, int *size,
          char **after)
{
	*size = 50;
	*after = NULL;
	if (pg == NULL)
		return PL_OK;
	if (pg->page_size < 0)
		return pl_call_violation(call, "page.page_size",
		                         "must not be negative");
	if (pg->page_size > 0)
		*size = pg->page_size > 200 ? 200 : pg->page_size;
	if (nz(pg->page_token)) {
		*after = messaging_cursor_decode(call->arena, pg->page_token);
		if (*after == NULL)
			return pl_call_violation(call, "page.page_token",
			                         "is not a valid page token");
	}
	return PL_OK;
}

static int
need_uuid(pl_call *call, const char *field, const char *v)
{
	if (v == NULL || v[0] == '\0')
		return pl_call_violation(call, field, "is required");
	if (!pl_uuid_valid(v))
		return pl_call_violation(call, field, "is not a valid id");
	return PL_OK;
}

static msg_service *
svc(pl_call *call)
{
	return call->arg;
}

// ---------------------------------------------------------------------------
// Inbound

// The senders of a body's messages (external id, else business-scoped id),
// each once, as a JSON array in the arena; NULL when it has none (statuses
// only). The inbox keeps one sender's bodies in arrival order by them.
static const char *
webhook_senders(const msg_items *items, pl_arena *a)
{
	json_t *arr = json_array();
	const char *out = NULL;
	char *text;

	for (size_t i = 0; i < items->n && arr != NULL; i++) {
		const msg_item *it = &items->v[i];
		const char *k = it->external_id && it->external_id[0]
		                        ? it->external_id
		                        : it->business_user_id;
		bool seen = false;
		size_t j;
		json_t *v;
		if (it->kind != MSG_ITEM_MESSAGE || k == NULL || k[0] == '\0')
			continue;
		json_array_foreach(arr, j, v)
		{
			if (strcmp(json_string_value(v), k) == 0)
				seen = true;
		}
		if (!seen)
			json_array_append_new(arr, json_string(k));
	}
	if (json_array_size(arr) > 0 &&
	    (text = json_dumps(arr, JSON_COMPACT)) != NULL) {
		out = pl_arena_strdup(a, text);
		free(text);
	}
	json_decref(arr);
	return out;
}

// The value of a webhook's header name (the last one given), or NULL.
static const char *
webhook_header(const M(HandleWebhookRequest) * in, const char *name)
{
	const char *v = NULL;

	for (size_t i = 0; i < in->n_headers; i++)
		if (in->headers[i]->name &&
		    strcasecmp(in->headers[i]->name, name) == 0)
			v = in->headers[i]->value;
	return v;
}

static int
handle_webhook(pl_call *call, const void *inp, void *outp)
{
	const M(HandleWebhookRequest) *in = inp;
	M(HandleWebhookResponse) *out = outp;
	msg_service *s = svc(call);
	msg_channel ch;
	msg_items items;
	char err[256], id[40];
	const char *senders;
	bool dup;
	int rv;

	if ((rv = need_uuid(call, "channel_id", in->channel_id)) != PL_OK)
		return rv;
	if (in->channel_type !=
	            PARLEY__TENANTS__V1__CHANNEL_TYPE__CHANNEL_TYPE_WHATSAPP_CLOUD &&
	    in->channel_type !=
	            PARLEY__TENANTS__V1__CHANNEL_TYPE__CHANNEL_TYPE_INFOBIP)
		return pl_call_violation(
		        call, "channel_type",
		        "must be whatsapp_cloud or infobip (web "
		        "chat posts through PostWebchatMessage)");
	if (in->body.len == 0)
		return pl_call_violation(call, "body", "is empty");
	if (in->body.len > MSG_MAX_BODY)
		return pl_call_violation(call, "body",
		                         "is larger than 1 MiB (%zu bytes)",
		                         in->body.len);
	rv = messaging_peers_channel(s->peers, in->channel_id, in->channel_type,
	                             NULL, call, &ch);
	if (rv == PL_NOT_FOUND)
		return pl_call_error(call, rv, "channel %s not found",
		                     in->channel_id);
	if (rv != PL_OK)
		return pl_call_error(call, PL_UNAVAILABLE,
		                     "could not resolve channel %s: tenants is "
		                     "unavailable",
		                     in->channel_id);
	if (ch.tenant_status ==
	    PARLEY__TENANTS__V1__TENANT_STATUS__TENANT_STATUS_SUSPENDED)
		return pl_call_error(call, PL_PERMISSION_DENIED,
		                     "the channel's tenant is suspended");
	if (ch.status ==
	    PARLEY__TENANTS__V1__CHANNEL_STATUS__CHANNEL_STATUS_DISABLED)
		return pl_call_error(call, PL_FAILED_PRECONDITION,
		                     "channel %s is disabled", in->channel_id);
	if (in->channel_type ==
	    PARLEY__TENANTS__V1__CHANNEL_TYPE__CHANNEL_TYPE_WHATSAPP_CLOUD) {
		const char *sig = webhook_header(in, "X-Hub-Signature-256");
		// Verified over the raw bytes before anything is parsed.
		if (!messaging_wa_signature_ok(sig, ch.app_secret,
		                               in->body.data, in->body.len))
			return pl_call_error(
			        call, PL_UNAUTHENTICATED,
			        sig ? "the webhook signature does not "
			              "match the body"
			            : "the webhook has no "
			              "X-Hub-Signature-256 header");
	} else if (ch.app_secret[0] != '\0') {
		// An Infobip channel with a webhook secret: its subscription
		// sends BASIC credentials, checked before anything is parsed.
		const char *auth = webhook_header(in, "Authorization");
		if (!messaging_basic_auth_ok(auth, ch.app_secret))
			return pl_call_error(
			        call, PL_UNAUTHENTICATED,
			        auth ? "the webhook's Basic credentials do not "
			               "match the channel's app_secret"
			             : "the webhook has no Authorization "
			               "header "
			               "(the channel has an app_secret)");
	}
	if (messaging_parse_webhook(in->channel_type, in->body.data,
	                            in->body.len, call->arena, &items, err,
	                            sizeof(err)) != PL_OK)
		return pl_call_violation(call, "body", "%s", err);
	senders = webhook_senders(&items, call->arena);
	rv = messaging_store_inbox_add(
	        pl_call_db(call), ch.tenant_id, in->channel_id,
	        in->channel_type ==
	                        PARLEY__TENANTS__V1__CHANNEL_TYPE__CHANNEL_TYPE_INFOBIP
	                ? "2"
	                : "1",
	        in->body.data, in->body.len, in->source_ip, senders, id, &dup);
	if (rv != PL_OK)
		return pl_call_error(call, rv, "could not store the webhook");
	if (!dup)
		messaging_kick_kind(s, MSG_WORK_INBOX);
	out->inbox_id = pl_arena_strdup(call->arena, id);
	out->duplicate = dup;
	return PL_OK;
}

static int
verify_subscription(pl_call *call, const void *inp, void *outp)
{
	const M(VerifyWebhookSubscriptionRequest) *in = inp;
	M(VerifyWebhookSubscriptionResponse) *out = outp;
	unsigned char a[32], b[32];
	msg_channel ch;
	int rv;

	if ((rv = need_uuid(call, "channel_id", in->channel_id)) != PL_OK)
		return rv;
	if (in->mode == NULL || strcmp(in->mode, "subscribe") != 0)
		return pl_call_violation(call, "mode", "must be \"subscribe\"");
	if (in->challenge == NULL || in->challenge[0] == '\0' ||
	    strlen(in->challenge) > 256)
		return pl_call_violation(call, "challenge",
		                         "must be 1 to 256 characters");
	rv = messaging_peers_channel(
	        svc(call)->peers, in->channel_id,
	        PARLEY__TENANTS__V1__CHANNEL_TYPE__CHANNEL_TYPE_WHATSAPP_CLOUD,
	        NULL, call, &ch);
	if (rv == PL_NOT_FOUND)
		return pl_call_error(call, rv, "channel %s not found",
		                     in->channel_id);
	if (rv != PL_OK)
		return pl_call_error(call, PL_UNAVAILABLE,
		                     "could not resolve the channel");
	// Hashes of both sides compared in constant time (lengths hidden).
	crypto_hash_sha256(a, (const unsigned char *)ch.verify_token,
	                   strlen(ch.verify_token));
	crypto_hash_sha256(b,
	                   (const unsigned char *)(in->verify_token
	                                                   ? in->verify_token
	                                                   : ""),
	                   in->verify_token ? strlen(in->verify_token) : 0);
	if (ch.verify_token[0] == '\0' || sodium_memcmp(a, b, 32) != 0)
		return pl_call_error(call, PL_PERMISSION_DENIED,
		                     "the verify token does not match");
	out->challenge = in->challenge;
	return PL_OK;
}

static int
ingest_inbound(pl_call *call, const void *inp, void *outp)
{
	const M(IngestInboundRequest) *in = inp;
	M(IngestInboundResponse) *out = outp;
	msg_item it = { 0 };
	msg_message_pb *m;
	msg_channel ch;
	bool dup;
	int rv;

	if ((rv = need_uuid(call, "tenant_id", in->tenant_id)) != PL_OK ||
	    (rv = need_uuid(call, "channel_id", in->channel_id)) != PL_OK)
		return rv;
	// The contact's id as the webhooks take it (MSG_MAX_ID).
	if (!nz(in->external_id) || strlen(in->external_id) > MSG_MAX_ID)
		return pl_call_violation(call, "external_id",
		                         "must be 1 to 256 bytes");
	if (!nz(in->provider_message_id) ||
	    strlen(in->provider_message_id) > 256)
		return pl_call_violation(call, "provider_message_id",
		                         "must be 1 to 256 characters");
	if (in->text && strlen(in->text) > MSG_MAX_TEXT)
		return pl_call_violation(call, "text", "is longer than 64 KB");
	if (in->metadata && nz(in->metadata->text)) {
		json_t *j = json_loads(in->metadata->text, 0, NULL);
		bool ok = json_is_object(j);
		json_decref(j);
		if (!ok)
			return pl_call_violation(call, "metadata",
			                         "must be a JSON object");
	}
	rv = messaging_peers_channel(svc(call)->peers, in->channel_id, 0,
	                             in->tenant_id, call, &ch);
	if (rv == PL_NOT_FOUND)
		return pl_call_error(call, rv, "channel %s not found",
		                     in->channel_id);
	if (rv != PL_OK)
		memset(&ch, 0, sizeof(ch)); // tenants off: no agent known
	it.kind = MSG_ITEM_MESSAGE;
	it.provider_message_id = in->provider_message_id;
	it.external_id = in->external_id;
	it.external_id_kind =
	        in->external_id_kind ? (int)in->external_id_kind : 1;
	it.phone_raw = nz(in->phone_raw);
	it.business_user_id = nz(in->business_user_id);
	it.parent_user_id = nz(in->parent_user_id);
	it.contact_name = in->contact_name;
	it.type = in->type ? (int)in->type : 1;
	it.text = in->text;
	it.media_url = in->media_url;
	it.media_mime_type = in->media_mime_type;
	it.provider_created_at = nz(in->provider_created_at);
	it.metadata_json = in->metadata ? nz(in->metadata->text) : NULL;
	{
		msg_ingest g = { in->tenant_id, in->channel_id,
			         ch.type,       ch.agent_id,
			         &it,           true };
		rv = messaging_store_ingest(pl_call_db(call), &g, call->arena,
		                            &m, &dup);
	}
	if (rv != PL_OK)
		return pl_call_error(call, rv, "could not store the message");
	if (!dup)
		messaging_kick_kind(svc(call), MSG_WORK_REPLY);
	out->message = m;
	out->duplicate = dup;
	out->outcome = dup ? E(REPLY_OUTCOME__REPLY_OUTCOME_DUPLICATE)
	                   : E(REPLY_OUTCOME__REPLY_OUTCOME_DEFERRED);
	if (messaging_store_get_conversation(call, pl_call_db(call),
	                                     in->tenant_id, m->conversation_id,
	                                     &out->conversation) == PL_OK)
		out->contact = out->conversation->contact;
	call->code = PL_OK;
	return PL_OK;
}

static int
ingest_status(pl_call *call, const void *inp, void *outp)
{
	const M(IngestStatusRequest) *in = inp;
	M(IngestStatusResponse) *out = outp;
	msg_item it = { 0 };
	bool applied, deferred;
	int rv;

	if ((rv = need_uuid(call, "tenant_id", in->tenant_id)) != PL_OK ||
	    (rv = need_uuid(call, "channel_id", in->channel_id)) != PL_OK)
		return rv;
	if (!nz(in->provider_message_id) ||
	    strlen(in->provider_message_id) > 256)
		return pl_call_violation(call, "provider_message_id",
		                         "must be 1 to 256 characters");
	if (in->status < E(MESSAGE_STATUS__MESSAGE_STATUS_SENT) ||
	    in->status > E(MESSAGE_STATUS__MESSAGE_STATUS_FAILED))
		return pl_call_violation(
		        call, "status",
		        "must be sent, delivered, read, played "
		        "or failed");
	it.kind = MSG_ITEM_STATUS;
	it.provider_message_id = in->provider_message_id;
	it.status = in->status;
	it.at = nz(in->at);
	it.error_code = in->error_code;
	it.error_text = in->error_text;
	rv = messaging_store_apply_status(pl_call_db(call), in->tenant_id,
	                                  in->channel_id, &it, call->arena,
	                                  &applied, &deferred, &out->message);
	if (rv != PL_OK)
		return pl_call_error(call, rv, "could not apply the status");
	out->applied = applied;
	out->deferred = deferred;
	return PL_OK;
}

// ---------------------------------------------------------------------------
// Web chat

static int
wc_channel(pl_call *call, const char *channel_id, msg_channel *ch)
{
	int rv = need_uuid(call, "channel_id", channel_id);

	if (rv != PL_OK)
		return rv;
	rv = messaging_peers_channel(
	        svc(call)->peers, channel_id,
	        PARLEY__TENANTS__V1__CHANNEL_TYPE__CHANNEL_TYPE_WEBCHAT, NULL,
	        call, ch);
	if (rv == PL_NOT_FOUND)
		return pl_call_error(call, rv, "web-chat channel %s not found",
		                     channel_id);
	if (rv != PL_OK)
		return pl_call_error(call, PL_UNAVAILABLE,
		                     "could not resolve the channel");
	if (ch->status ==
	    PARLEY__TENANTS__V1__CHANNEL_STATUS__CHANNEL_STATUS_DISABLED)
		return pl_call_error(call, PL_FAILED_PRECONDITION,
		                     "channel %s is disabled", channel_id);
	return PL_OK;
}

static int
wc_start(pl_call *call, const void *inp, void *outp)
{
	const M(StartWebchatSessionRequest) *in = inp;
	M(StartWebchatSessionResponse) *out = outp;
	msg_channel ch;
	msg_conv_pb *conv;
	char sid[40], tenant[40], contact[40];
	char *token, *expires;
	int rv;

	if ((rv = wc_channel(call, in->channel_id, &ch)) != PL_OK)
		return rv;
	if (in->visitor_name && strlen(in->visitor_name) > 256)
		return pl_call_violation(call, "visitor_name",
		                         "is longer than 256 characters");
	if (nz(in->resume_token) &&
	    messaging_store_webchat_session(call, pl_call_db(call),
	                                    in->channel_id, in->resume_token,
	                                    tenant, contact, sid) == PL_OK) {
		msg_message_pb **msgs;
		size_t n;
		call->code = PL_OK;
		out->session_token = in->resume_token;
		out->session_id = pl_arena_strdup(call->arena, sid);
		out->contact_id = pl_arena_strdup(call->arena, contact);
		if (messaging_store_webchat_poll(call, pl_call_db(call), tenant,
		                                 contact, NULL, 50, &msgs,
		                                 &n) == PL_OK) {
			out->messages = msgs;
			out->n_messages = n;
			if (n > 0) {
				out->conversation_id =
				        msgs[n - 1]->conversation_id;
				out->cursor = msgs[n - 1]->id;
			}
		}
		return PL_OK;
	}
	call->code = PL_OK;
	rv = messaging_store_webchat_start(
	        call, pl_call_db(call), ch.tenant_id, in->channel_id,
	        ch.agent_id, in->visitor_name, in->website_domain,
	        in->client_ip, sid, &token, &conv, &expires);
	if (rv != PL_OK)
		return rv;
	out->session_token = token;
	out->session_id = pl_arena_strdup(call->arena, sid);
	out->conversation_id = conv->id;
	out->contact_id = conv->contact_id;
	out->expires_at = expires;
	return PL_OK;
}

static int
wc_post(pl_call *call, const void *inp, void *outp)
{
	const M(PostWebchatMessageRequest) *in = inp;
	M(PostWebchatMessageResponse) *out = outp;
	msg_channel ch;
	char tenant[40], contact[40], sid[40], mid[40];
	msg_item it = { 0 };
	msg_message_pb *m;
	bool dup;
	int rv;

	if ((rv = wc_channel(call, in->channel_id, &ch)) != PL_OK)
		return rv;
	if (in->text == NULL || in->text[0] == '\0' || strlen(in->text) > 4096)
		return pl_call_violation(call, "text",
		                         "must be 1 byte to 4 KB");
	if (in->client_message_id && strlen(in->client_message_id) > 128)
		return pl_call_violation(call, "client_message_id",
		                         "is longer than 128 characters");
	if ((rv = messaging_store_webchat_session(
	             call, pl_call_db(call), in->channel_id, in->session_token,
	             tenant, contact, sid)) != PL_OK)
		return rv;
	pl_uuid7_str(mid);
	it.kind = MSG_ITEM_MESSAGE;
	it.provider_message_id = pl_arena_printf(
	        call->arena, "webchat:%s:%s", sid,
	        nz(in->client_message_id) ? in->client_message_id : mid);
	it.external_id = sid;
	it.external_id_kind =
	        E(EXTERNAL_ID_KIND__EXTERNAL_ID_KIND_WEBCHAT_SESSION);
	it.type = E(MESSAGE_TYPE__MESSAGE_TYPE_TEXT);
	it.text = in->text;
	{
		msg_ingest g = {
			tenant,
			in->channel_id,
			PARLEY__TENANTS__V1__CHANNEL_TYPE__CHANNEL_TYPE_WEBCHAT,
			ch.agent_id,
			&it,
			true
		};
		rv = messaging_store_ingest(pl_call_db(call), &g, call->arena,
		                            &m, &dup);
	}
	if (rv != PL_OK)
		return pl_call_error(call, rv, "could not store the message");
	if (!dup)
		messaging_kick_kind(svc(call), MSG_WORK_REPLY);
	out->message = m;
	return PL_OK;
}

static int
wc_poll(pl_call *call, const void *inp, void *outp)
{
	const M(PollWebchatMessagesRequest) *in = inp;
	M(PollWebchatMessagesResponse) *out = outp;
	msg_channel ch;
	char tenant[40], contact[40], sid[40];
	int64_t until;
	int rv;

	if ((rv = wc_channel(call, in->channel_id, &ch)) != PL_OK)
		return rv;
	if (in->wait_ms < 0 || in->wait_ms > 25000)
		return pl_call_violation(call, "wait_ms",
		                         "must be between 0 and 25000");
	if ((rv = messaging_store_webchat_session(
	             call, pl_call_db(call), in->channel_id, in->session_token,
	             tenant, contact, sid)) != PL_OK)
		return rv;
	until = pl_now_ns() + (int64_t)in->wait_ms * 1000000;
	for (;;) {
		rv = messaging_store_webchat_poll(
		        call, pl_call_db(call), tenant, contact, in->cursor,
		        100, &out->messages, &out->n_messages);
		if (rv != PL_OK || out->n_messages > 0 ||
		    pl_now_ns() >= until || pl_call_remaining_ms(call) < 200)
			break;
		usleep(100000);
	}
	if (rv != PL_OK)
		return rv;
	out->cursor = out->n_messages ? out->messages[out->n_messages - 1]->id
	                              : (char *)(in->cursor ? in->cursor : "");
	return PL_OK;
}

#define WC_BATCH_MAX 256

// The error an item's step left on the call, taken off it (the batch
// itself answers OK): its message, or NULL.
static const char *
wc_take_error(pl_call *call)
{
	const char *m = call->message;

	if (call->n_violations > 0 && call->violations[0]->description)
		m = pl_arena_printf(call->arena, "%s: %s",
		                    call->violations[0]->field,
		                    call->violations[0]->description);
	call->code = PL_OK;
	call->message = NULL;
	call->n_violations = 0;
	return m;
}

// The gateway's waiting long-polls, all at once: two statements for the
// whole batch, then the messages of those that have some.
static int
wc_poll_batch(pl_call *call, const void *inp, void *outp)
{
	const M(PollWebchatBatchRequest) *in = inp;
	M(PollWebchatBatchResponse) *out = outp;
	msg_wc_wait *w;
	size_t n = in->n_polls;
	int rv;

	if (n == 0 || n > WC_BATCH_MAX)
		return pl_call_violation(call, "polls",
		                         "must hold 1 to 256 polls");
	w = pl_arena_zalloc(call->arena, n * sizeof(*w));
	out->ready = pl_arena_zalloc(call->arena, n * sizeof(*out->ready));
	if (w == NULL || out->ready == NULL)
		return pl_call_error(call, PL_RESOURCE_EXHAUSTED,
		                     "out of memory");
	for (size_t i = 0; i < n; i++) {
		w[i].channel_id = in->polls[i]->channel_id;
		w[i].token = in->polls[i]->session_token;
		w[i].cursor = in->polls[i]->cursor;
	}
	if ((rv = messaging_store_webchat_ready(call, pl_call_db(call), w,
	                                        n)) != PL_OK)
		return rv;
	for (size_t i = 0; i < n; i++) {
		M(PollWebchatBatchResult) * res;
		M(PollWebchatMessagesResponse) * pr;
		msg_channel ch;
		const char *msg = NULL;
		int code = w[i].code;

		if (code == PL_OK && !w[i].ready)
			continue;
		// The channel as PollWebchatMessages checks it (cached): a
		// disabled channel ends its waits.
		if (code == PL_OK &&
		    (code = wc_channel(call, w[i].channel_id, &ch)) != PL_OK)
			msg = wc_take_error(call);
		res = pl_arena_zalloc(call->arena, sizeof(*res));
		pr = pl_arena_zalloc(call->arena, sizeof(*pr));
		if (res == NULL || pr == NULL)
			return pl_call_error(call, PL_RESOURCE_EXHAUSTED,
			                     "out of memory");
		parley__messaging__v1__poll_webchat_batch_result__init(res);
		parley__messaging__v1__poll_webchat_messages_response__init(pr);
		res->index = (int32_t)i;
		if (code == PL_OK &&
		    (code = messaging_store_webchat_poll(
		             call, pl_call_db(call), w[i].tenant_id,
		             w[i].contact_id, w[i].cursor, 100, &pr->messages,
		             &pr->n_messages)) != PL_OK)
			msg = wc_take_error(call);
		if (code == PL_UNAUTHENTICATED)
			msg = "the web-chat session token is not valid or has "
			      "expired";
		else if (code == PL_INVALID_ARGUMENT && msg == NULL)
			msg = "cursor: is not a valid cursor";
		res->code = code;
		if (code != PL_OK) {
			res->message = (char *)(msg ? msg : "");
		} else {
			pr->cursor =
			        pr->n_messages
			                ? pr->messages[pr->n_messages - 1]->id
			                : (char *)(w[i].cursor ? w[i].cursor
			                                       : "");
			res->result = pr;
		}
		out->ready[out->n_ready++] = res;
	}
	return PL_OK;
}

// ---------------------------------------------------------------------------
// Conversations and messages

static int
list_conversations(pl_call *call, const void *inp, void *outp)
{
	const M(ListConversationsRequest) *in = inp;
	M(ListConversationsResponse) *out = outp;
	msg_conv_filter f = { 0 };
	char *after, *next;
	int size, rv;

	if ((rv = page_size(call, in->page, &size, &after)) != PL_OK)
		return rv;
	if ((nz(in->assigned_user_id) && !pl_uuid_valid(in->assigned_user_id)))
		return pl_call_violation(call, "assigned_user_id",
		                         "is not a valid id");
	if ((nz(in->channel_id) && !pl_uuid_valid(in->channel_id)))
		return pl_call_violation(call, "channel_id",
		                         "is not a valid id");
	if ((nz(in->contact_id) && !pl_uuid_valid(in->contact_id)))
		return pl_call_violation(call, "contact_id",
		                         "is not a valid id");
	if ((nz(in->agent_id) && !pl_uuid_valid(in->agent_id)))
		return pl_call_violation(call, "agent_id", "is not a valid id");
	if ((unsigned)in->status > 3 || (unsigned)in->owner > 2 ||
	    (unsigned)in->stage > 6 || (unsigned)in->intent_level > 3 ||
	    (unsigned)in->sentiment > 3)
		return pl_call_violation(call, "status", "unknown enum value");
	f.status = in->status ? conv_status_names[in->status] : NULL;
	f.owner = in->owner ? conv_owner_names[in->owner] : NULL;
	f.stage = in->stage ? conv_stage_names[in->stage] : NULL;
	f.intent =
	        in->intent_level ? intent_level_names[in->intent_level] : NULL;
	f.sentiment = in->sentiment ? sentiment_names[in->sentiment] : NULL;
	f.assigned = nz(in->assigned_user_id);
	f.channel = nz(in->channel_id);
	f.contact = nz(in->contact_id);
	f.agent = nz(in->agent_id);
	f.unassigned = in->unassigned;
	rv = messaging_store_list_conversations(
	        call, pl_call_db(call), tenant_of(call), &f, after, size,
	        &out->conversations, &out->n_conversations, &next);
	out->next_page_token = next ? next : "";
	return rv;
}

static int
get_conversation(pl_call *call, const void *inp, void *outp)
{
	const M(GetConversationRequest) *in = inp;
	M(GetConversationResponse) *out = outp;

	return messaging_store_get_conversation(call, pl_call_db(call),
	                                        tenant_of(call), in->id,
	                                        &out->conversation);
}

static int
list_messages(pl_call *call, const void *inp, void *outp)
{
	const M(ListMessagesRequest) *in = inp;
	M(ListMessagesResponse) *out = outp;
	char *after, *next;
	int size, rv;

	if ((rv = page_size(call, in->page, &size, &after)) != PL_OK)
		return rv;
	rv = messaging_store_list_messages(
	        call, pl_call_db(call), tenant_of(call), in->conversation_id,
	        in->newest_first, after, size, &out->messages, &out->n_messages,
	        &next);
	out->next_page_token = next ? next : "";
	return rv;
}

static int
get_message(pl_call *call, const void *inp, void *outp)
{
	const M(GetMessageRequest) *in = inp;
	M(GetMessageResponse) *out = outp;

	return messaging_store_get_message(
	        call, pl_call_db(call), tenant_of(call), in->id, &out->message);
}

static int
check_outbound(pl_call *call, int type, const char *text, const char *media_url)
{
	if (type == E(MESSAGE_TYPE__MESSAGE_TYPE_TEMPLATE))
		return pl_call_error(call, PL_UNIMPLEMENTED,
		                     "templates are not available yet");
	if (type != E(MESSAGE_TYPE__MESSAGE_TYPE_TEXT) && type != 2 &&
	    type != 3 && type != 4 && type != 5)
		return pl_call_violation(call, "type",
		                         "must be text, image, audio, video or "
		                         "document");
	if (text && strlen(text) > MSG_MAX_SEND_TEXT)
		return pl_call_violation(call, "text",
		                         "is longer than 4096 characters");
	if (type == E(MESSAGE_TYPE__MESSAGE_TYPE_TEXT) && !nz(text))
		return pl_call_violation(call, "text", "is required");
	if (type != E(MESSAGE_TYPE__MESSAGE_TYPE_TEXT) &&
	    (!nz(media_url) || strlen(media_url) > 2048 ||
	     strncmp(media_url, "https://", 8) != 0))
		return pl_call_violation(call, "media_url",
		                         "must be an https URL of at most 2048 "
		                         "characters");
	return PL_OK;
}

static int
send_message(pl_call *call, const void *inp, void *outp)
{
	const M(SendMessageRequest) *in = inp;
	M(SendMessageResponse) *out = outp;
	msg_outbound o = { 0 };
	const char *conv = nz(in->conversation_id);
	int type = in->type ? (int)in->type
	           : nz(in->template_id)
	                   ? E(MESSAGE_TYPE__MESSAGE_TYPE_TEMPLATE)
	                   : E(MESSAGE_TYPE__MESSAGE_TYPE_TEXT);
	int rv;

	if (type == E(MESSAGE_TYPE__MESSAGE_TYPE_TEMPLATE))
		return engage_send_template(call, inp, outp); // engagement
	if ((rv = check_outbound(call, type, in->text, in->media_url)) != PL_OK)
		return rv;
	if (conv == NULL && nz(in->contact_id)) {
		// The contact's open conversation.
		msg_conv_filter f = { 0 };
		msg_conv_pb **cs;
		size_t n;
		char *next;
		if (!pl_uuid_valid(in->contact_id))
			return pl_call_error(call, PL_NOT_FOUND,
			                     "contact %s not found",
			                     in->contact_id);
		f.contact = in->contact_id;
		if ((rv = messaging_store_list_conversations(
		             call, pl_call_db(call), tenant_of(call), &f, NULL,
		             1, &cs, &n, &next)) != PL_OK)
			return rv;
		if (n == 0 ||
		    cs[0]->status ==
		            E(CONVERSATION_STATUS__CONVERSATION_STATUS_CLOSED))
			return pl_call_error(
			        call, PL_FAILED_PRECONDITION,
			        "contact %s has no open conversation",
			        in->contact_id);
		conv = cs[0]->id;
	}
	if (conv == NULL)
		return pl_call_violation(
		        call, "conversation_id",
		        "give conversation_id or contact_id "
		        "(channel_id + to is not supported yet)");
	if (in->metadata && nz(in->metadata->text)) {
		json_t *j = json_loads(in->metadata->text, 0, NULL);
		bool ok = json_is_object(j) &&
		          strlen(in->metadata->text) <= 16384;
		json_decref(j);
		if (!ok)
			return pl_call_violation(
			        call, "metadata",
			        "must be a JSON object of at most "
			        "16 KB");
	}
	o.tenant_id = tenant_of(call);
	o.conversation_id = conv;
	o.sender = "system";
	o.user_id = nz(call->principal->user_id);
	o.type = type;
	o.text = in->text;
	o.media_url = in->media_url;
	o.media_mime_type = in->media_mime_type;
	o.metadata_json = in->metadata ? nz(in->metadata->text) : NULL;
	o.idempotency_key = call->idempotency_key;
	o.check_window = true;
	rv = messaging_store_send(call, pl_call_db(call), &o, &out->message,
	                          &out->conversation);
	if (rv == PL_OK)
		messaging_kick_kind(svc(call), MSG_WORK_DELIVERY);
	return rv;
}

static int
send_human_reply(pl_call *call, const void *inp, void *outp)
{
	const M(SendHumanReplyRequest) *in = inp;
	M(SendHumanReplyResponse) *out = outp;
	msg_outbound o = { 0 };
	int type = nz(in->media_url) ? E(MESSAGE_TYPE__MESSAGE_TYPE_IMAGE)
	                             : E(MESSAGE_TYPE__MESSAGE_TYPE_TEXT);
	int rv;

	if (nz(in->media_url) && nz(in->media_mime_type)) {
		if (strncmp(in->media_mime_type, "audio/", 6) == 0)
			type = 3;
		else if (strncmp(in->media_mime_type, "video/", 6) == 0)
			type = 4;
		else if (strncmp(in->media_mime_type, "image/", 6) != 0)
			type = 5;
	}
	if ((rv = check_outbound(call, type, in->text, in->media_url)) != PL_OK)
		return rv;
	o.tenant_id = tenant_of(call);
	o.conversation_id = in->conversation_id ? in->conversation_id : "";
	o.sender = "human";
	o.user_id = nz(call->principal->user_id);
	o.type = type;
	o.text = in->text;
	o.media_url = in->media_url;
	o.media_mime_type = in->media_mime_type;
	o.idempotency_key = call->idempotency_key;
	o.take_over = true;
	o.check_window = true;
	rv = messaging_store_send(call, pl_call_db(call), &o, &out->message,
	                          &out->conversation);
	if (rv == PL_OK)
		messaging_kick_kind(svc(call), MSG_WORK_DELIVERY);
	return rv;
}

static int
conv_change(pl_call *call, const char *id, const msg_conv_change *c,
            msg_conv_pb **out)
{
	return messaging_store_conv_change(
	        call, pl_call_db(call), tenant_of(call), id ? id : "", c, out);
}

static int
take_over(pl_call *call, const void *inp, void *outp)
{
	const M(TakeOverRequest) *in = inp;
	M(TakeOverResponse) *out = outp;
	msg_conv_change c = { "takeover", NULL, NULL, NULL, NULL };

	c.user_id = nz(in->assigned_user_id) ? in->assigned_user_id
	                                     : nz(call->principal->user_id);
	if (c.user_id && !pl_uuid_valid(c.user_id))
		return pl_call_violation(call, "assigned_user_id",
		                         "is not a valid id");
	return conv_change(call, in->id, &c, &out->conversation);
}

static int
hand_back(pl_call *call, const void *inp, void *outp)
{
	const M(HandBackRequest) *in = inp;
	M(HandBackResponse) *out = outp;
	msg_conv_change c = { "handback", NULL, NULL, NULL, NULL };

	return conv_change(call, in->id, &c, &out->conversation);
}

static int
update_state(pl_call *call, const void *inp, void *outp)
{
	const M(UpdateConversationStateRequest) *in = inp;
	M(UpdateConversationStateResponse) *out = outp;
	msg_conv_change c = { "state", NULL, NULL, NULL, NULL };

	if ((unsigned)in->stage > 6)
		return pl_call_violation(call, "stage", "unknown stage");
	if ((unsigned)in->intent_level > 3)
		return pl_call_violation(call, "intent_level",
		                         "unknown intent level");
	if ((unsigned)in->sentiment > 3)
		return pl_call_violation(call, "sentiment",
		                         "unknown sentiment");
	if (!in->stage && !in->intent_level && !in->sentiment)
		return pl_call_violation(call, "stage",
		                         "nothing to change: give stage, "
		                         "intent_level or sentiment");
	c.stage = in->stage ? conv_stage_names[in->stage] : NULL;
	c.intent_level =
	        in->intent_level ? intent_level_names[in->intent_level] : NULL;
	c.sentiment = in->sentiment ? sentiment_names[in->sentiment] : NULL;
	return conv_change(call, in->id, &c, &out->conversation);
}

static int
close_conversation(pl_call *call, const void *inp, void *outp)
{
	const M(CloseConversationRequest) *in = inp;
	M(CloseConversationResponse) *out = outp;
	msg_conv_change c = { "close", NULL, NULL, NULL, NULL };

	return conv_change(call, in->id, &c, &out->conversation);
}

static int
reopen_conversation(pl_call *call, const void *inp, void *outp)
{
	const M(ReopenConversationRequest) *in = inp;
	M(ReopenConversationResponse) *out = outp;
	msg_conv_change c = { "reopen", NULL, NULL, NULL, NULL };

	return conv_change(call, in->id, &c, &out->conversation);
}

// ---------------------------------------------------------------------------
// Contacts

// A PostgreSQL text[] literal of tags, each checked.
static int
tags_literal(pl_call *call, char **tags, size_t n, const char **out)
{
	if (n > 50)
		return pl_call_violation(call, "tags", "at most 50 tags");
	for (size_t i = 0; i < n; i++) {
		size_t l = strlen(tags[i]);
		if (l == 0 || l > 64)
			return pl_call_violation(call, "tags",
			                         "each tag must be 1 to 64 "
			                         "characters");
	}
	if ((*out = pl_db_array(call->arena, (const char *const *)tags, n)) ==
	    NULL)
		return pl_call_error(call, PL_RESOURCE_EXHAUSTED,
		                     "out of memory");
	return PL_OK;
}

static int
custom_fields(pl_call *call, const Parley__Rpc__V1__Json *j, const char **out)
{
	json_t *o;
	bool ok;

	*out = NULL;
	if (j == NULL || !nz(j->text))
		return PL_OK;
	if (strlen(j->text) > 16384)
		return pl_call_violation(call, "custom_fields",
		                         "is larger than 16 KB");
	o = json_loads(j->text, 0, NULL);
	ok = json_is_object(o);
	json_decref(o);
	if (!ok)
		return pl_call_violation(call, "custom_fields",
		                         "must be a JSON object");
	*out = j->text;
	return PL_OK;
}

static int
create_contact(pl_call *call, const void *inp, void *outp)
{
	const M(CreateContactRequest) *in = inp;
	M(CreateContactResponse) *out = outp;
	msg_contact_in c = { 0 };
	char phone[MSG_PHONE_MAX];
	int rv;

	if ((rv = need_uuid(call, "channel_id", in->channel_id)) != PL_OK)
		return rv;
	if (in->name && strlen(in->name) > 256)
		return pl_call_violation(call, "name",
		                         "is longer than 256 characters");
	if (in->language && strlen(in->language) > 35)
		return pl_call_violation(call, "language",
		                         "is longer than 35 characters");
	c.channel_id = in->channel_id;
	c.name = in->name;
	c.language = in->language;
	if (nz(in->phone)) {
		if (strlen(in->phone) > 40 ||
		    !messaging_phone_normalize(in->phone, phone))
			return pl_call_violation(
			        call, "phone",
			        "is not a phone number (8 to 15 "
			        "digits with the country code)");
		c.phone = pl_arena_strdup(call->arena, phone);
		c.phone_raw = in->phone;
		c.external_id =
		        nz(in->external_id) ? in->external_id : c.phone + 1;
		c.kind = "phone";
	} else if (nz(in->external_id)) {
		c.external_id = in->external_id;
		c.kind = "business_user_id";
	} else {
		return pl_call_violation(call, "phone",
		                         "phone or external_id is required");
	}
	if (strlen(c.external_id) > MSG_MAX_ID)
		return pl_call_violation(call, "external_id",
		                         "is longer than 256 bytes");
	if ((rv = tags_literal(call, in->tags, in->n_tags, &c.tags_literal)) !=
	            PL_OK ||
	    (rv = custom_fields(call, in->custom_fields, &c.custom_fields)) !=
	            PL_OK)
		return rv;
	rv = messaging_store_create_contact(call, pl_call_db(call),
	                                    tenant_of(call), &c, &out->contact);
	if (rv == PL_OK)
		out->id = out->contact->id;
	return rv;
}

static int
get_contact(pl_call *call, const void *inp, void *outp)
{
	const M(GetContactRequest) *in = inp;
	M(GetContactResponse) *out = outp;

	return messaging_store_get_contact(call, pl_call_db(call),
	                                   tenant_of(call),
	                                   in->id ? in->id : "", &out->contact);
}

static int
list_contacts(pl_call *call, const void *inp, void *outp)
{
	const M(ListContactsRequest) *in = inp;
	M(ListContactsResponse) *out = outp;
	msg_contact_filter f = { 0 };
	char a[MSG_PHONE_MAX], b[MSG_PHONE_MAX], e[MSG_PHONE_MAX];
	char *after, *next;
	int size, rv;

	if ((rv = page_size(call, in->page, &size, &after)) != PL_OK)
		return rv;
	if (nz(in->channel_id) && !pl_uuid_valid(in->channel_id))
		return pl_call_violation(call, "channel_id",
		                         "is not a valid id");
	if (nz(in->phone)) {
		if (strlen(in->phone) > 40 ||
		    !messaging_phone_normalize(in->phone, e))
			return pl_call_violation(call, "phone",
			                         "is not a phone number");
		f.phone_a = a;
		if (messaging_phone_variants(e, a, b) == 2)
			f.phone_b = b;
	}
	if (in->query && strlen(in->query) > 256)
		return pl_call_violation(call, "query",
		                         "is longer than 256 characters");
	if ((unsigned)in->opt_out > 2)
		return pl_call_violation(call, "opt_out", "unknown value");
	f.channel = nz(in->channel_id);
	f.tag = nz(in->tag);
	f.query = nz(in->query);
	f.opt_out = in->opt_out;
	rv = messaging_store_list_contacts(
	        call, pl_call_db(call), tenant_of(call), &f, after, size,
	        &out->contacts, &out->n_contacts, &next);
	out->next_page_token = next ? next : "";
	return rv;
}

static bool
in_mask(const M(UpdateContactRequest) * in, const char *name)
{
	for (size_t i = 0; i < in->n_update_mask; i++)
		if (strcmp(in->update_mask[i], name) == 0)
			return true;
	return false;
}

static int
update_contact(pl_call *call, const void *inp, void *outp)
{
	static const char *const known[] = { "name", "language", "tags",
		                             "custom_fields", "opted_out" };
	const M(UpdateContactRequest) *in = inp;
	M(UpdateContactResponse) *out = outp;
	msg_contact_in c = { 0 };
	bool all = in->n_update_mask == 0;
	int rv;

	for (size_t i = 0; i < in->n_update_mask; i++) {
		bool ok = false;
		for (size_t k = 0; k < 5; k++)
			ok |= strcmp(in->update_mask[i], known[k]) == 0;
		if (!ok)
			return pl_call_violation(call, "update_mask",
			                         "unknown field \"%s\"",
			                         in->update_mask[i]);
	}
	if (in->name && strlen(in->name) > 256)
		return pl_call_violation(call, "name",
		                         "is longer than 256 characters");
	if (in->language && strlen(in->language) > 35)
		return pl_call_violation(call, "language",
		                         "is longer than 35 characters");
	c.set_name = all ? nz(in->name) != NULL : in_mask(in, "name");
	c.name = in->name;
	c.set_language =
	        all ? nz(in->language) != NULL : in_mask(in, "language");
	c.language = in->language;
	if ((all ? in->n_tags > 0 : in_mask(in, "tags")) &&
	    (rv = tags_literal(call, in->tags, in->n_tags, &c.tags_literal)) !=
	            PL_OK)
		return rv;
	if ((all || in_mask(in, "custom_fields")) &&
	    (rv = custom_fields(call, in->custom_fields, &c.custom_fields)) !=
	            PL_OK)
		return rv;
	if (!all && in_mask(in, "custom_fields") && c.custom_fields == NULL)
		c.custom_fields = "{}";
	c.opted_out = all                        ? (in->opted_out ? 1 : -1)
	              : in_mask(in, "opted_out") ? (in->opted_out ? 1 : 0)
	                                         : -1;
	return messaging_store_update_contact(
	        call, pl_call_db(call), tenant_of(call), in->id ? in->id : "",
	        &c, &out->contact);
}

#define VIEWER(s) PL_ROLE_VIEWER, s
#define AGENT(s)  PL_ROLE_AGENT, s
#define ADMIN(s)  PL_ROLE_ADMIN, s

static const pl_rpc_method messaging_methods[] = {
	{ "HandleWebhook", handle_webhook, PL_CALLER_SERVICE, NULL, 0 },
	{ "VerifyWebhookSubscription", verify_subscription, PL_CALLER_SERVICE,
	  NULL, 0 },
	{ "IngestInbound", ingest_inbound, PL_CALLER_SERVICE, NULL, 0 },
	{ "IngestStatus", ingest_status, PL_CALLER_SERVICE, NULL, 0 },
	{ "StartWebchatSession", wc_start, PL_CALLER_SERVICE, NULL, 0 },
	{ "PostWebchatMessage", wc_post, PL_CALLER_SERVICE, NULL, 0 },
	{ "PollWebchatMessages", wc_poll, PL_CALLER_SERVICE, NULL, 0 },
	{ "PollWebchatBatch", wc_poll_batch, PL_CALLER_SERVICE, NULL, 0 },
	{ "ListConversations", list_conversations, VIEWER("conversations:read"),
	  0 },
	{ "GetConversation", get_conversation, VIEWER("conversations:read"),
	  0 },
	{ "ListMessages", list_messages, VIEWER("conversations:read"), 0 },
	{ "GetMessage", get_message, VIEWER("conversations:read"), 0 },
	{ "SendMessage", send_message, AGENT("messages:write"),
	  PL_RPC_NEEDS_KEY },
	{ "SendHumanReply", send_human_reply, AGENT("messages:write"),
	  PL_RPC_NEEDS_KEY },
	{ "TakeOver", take_over, AGENT("conversations:write"), 0 },
	{ "HandBack", hand_back, AGENT("conversations:write"), 0 },
	{ "UpdateConversationState", update_state, AGENT("conversations:write"),
	  0 },
	{ "CloseConversation", close_conversation, AGENT("conversations:write"),
	  0 },
	{ "ReopenConversation", reopen_conversation,
	  AGENT("conversations:write"), 0 },
	{ "CreateContact", create_contact, AGENT("contacts:write"), 0 },
	{ "GetContact", get_contact, VIEWER("contacts:read"), 0 },
	{ "ListContacts", list_contacts, VIEWER("contacts:read"), 0 },
	{ "UpdateContact", update_contact, AGENT("contacts:write"), 0 },
	{ "GetMessagingSettings", eg_get_settings, VIEWER("settings:read"), 0 },
	{ "UpdateMessagingSettings", eg_update_settings,
	  ADMIN("settings:write"), 0 },
	{ "CreateTemplate", eg_create_template, ADMIN("templates:write"), 0 },
	{ "UpdateTemplate", eg_update_template, ADMIN("templates:write"), 0 },
	{ "GetTemplate", eg_get_template, VIEWER("templates:read"), 0 },
	{ "ListTemplates", eg_list_templates, VIEWER("templates:read"), 0 },
	{ "DeleteTemplate", eg_delete_template, ADMIN("templates:write"), 0 },
	{ "SetTemplateStatus", eg_set_template_status, ADMIN("templates:write"),
	  0 },
	{ "CreateCampaign", eg_create_campaign, ADMIN("campaigns:write"), 0 },
	{ "UpdateCampaign", eg_update_campaign, ADMIN("campaigns:write"), 0 },
	{ "GetCampaign", eg_get_campaign, VIEWER("campaigns:read"), 0 },
	{ "ListCampaigns", eg_list_campaigns, VIEWER("campaigns:read"), 0 },
	{ "DeleteCampaign", eg_delete_campaign, ADMIN("campaigns:write"), 0 },
	{ "ScheduleCampaign", eg_schedule_campaign, ADMIN("campaigns:write"),
	  0 },
	{ "StartCampaign", eg_start_campaign, ADMIN("campaigns:write"), 0 },
	{ "PauseCampaign", eg_pause_campaign, ADMIN("campaigns:write"), 0 },
	{ "ResumeCampaign", eg_resume_campaign, ADMIN("campaigns:write"), 0 },
	{ "CancelCampaign", eg_cancel_campaign, ADMIN("campaigns:write"), 0 },
	{ "GetCampaignStats", eg_get_campaign_stats, VIEWER("campaigns:read"),
	  0 },
	{ "ListCampaignRecipients", eg_list_campaign_recipients,
	  VIEWER("campaigns:read"), 0 },
	{ "CreateFollowupRule", eg_create_followup_rule,
	  ADMIN("followups:write"), 0 },
	{ "UpdateFollowupRule", eg_update_followup_rule,
	  ADMIN("followups:write"), 0 },
	{ "GetFollowupRule", eg_get_followup_rule, VIEWER("followups:read"),
	  0 },
	{ "ListFollowupRules", eg_list_followup_rules, VIEWER("followups:read"),
	  0 },
	{ "DeleteFollowupRule", eg_delete_followup_rule,
	  ADMIN("followups:write"), 0 },
	{ "CreateLead", eg_create_lead, AGENT("leads:write"), 0 },
	{ "UpdateLead", eg_update_lead, AGENT("leads:write"), 0 },
	{ "GetLead", eg_get_lead, VIEWER("leads:read"), 0 },
	{ "ListLeads", eg_list_leads, VIEWER("leads:read"), 0 },
	{ "DeleteLead", eg_delete_lead, ADMIN("leads:write"), 0 },
	{ "CreateOrder", eg_create_order, AGENT("orders:write"), 0 },
	{ "UpdateOrder", eg_update_order, AGENT("orders:write"), 0 },
	{ "GetOrder", eg_get_order, VIEWER("orders:read"), 0 },
	{ "ListOrders", eg_list_orders, VIEWER("orders:read"), 0 },
	{ "DeleteOrder", eg_delete_order, ADMIN("orders:write"), 0 },
	{ "UpdateOrderStatus", eg_update_order_status, AGENT("orders:write"),
	  0 },
	{ "CreateAction", eg_create_action, PL_CALLER_SERVICE, NULL, 0 },
	{ "ListActions", eg_list_actions, VIEWER("actions:read"), 0 },
	{ "GetAction", eg_get_action, VIEWER("actions:read"), 0 },
	{ "ApproveAction", eg_approve_action, AGENT("actions:write"), 0 },
	{ "RejectAction", eg_reject_action, AGENT("actions:write"), 0 },
	{ "CreateWebhookEndpoint", eg_create_webhook_endpoint,
	  ADMIN("webhooks:write"), 0 },
	{ "UpdateWebhookEndpoint", eg_update_webhook_endpoint,
	  ADMIN("webhooks:write"), 0 },
	{ "GetWebhookEndpoint", eg_get_webhook_endpoint, ADMIN("webhooks:read"),
	  0 },
	{ "ListWebhookEndpoints", eg_list_webhook_endpoints,
	  ADMIN("webhooks:read"), 0 },
	{ "DeleteWebhookEndpoint", eg_delete_webhook_endpoint,
	  ADMIN("webhooks:write"), 0 },
	{ "RotateWebhookSecret", eg_rotate_webhook_secret,
	  ADMIN("webhooks:write"), 0 },
	{ "ListWebhookDeliveries", eg_list_webhook_deliveries,
	  ADMIN("webhooks:read"), 0 },
	{ "RedeliverWebhook", eg_redeliver_webhook, ADMIN("webhooks:write"),
	  0 },
	{ "ImportContacts", messaging_import_contacts, PL_CALLER_SERVICE, NULL,
	  0 },
	{ "ImportConversations", messaging_import_conversations,
	  PL_CALLER_SERVICE, NULL, 0 },
	{ "ImportOrders", messaging_import_orders, PL_CALLER_SERVICE, NULL, 0 },
	{ "ImportCampaigns", messaging_import_campaigns, PL_CALLER_SERVICE,
	  NULL, 0 },
	{ "GetImportSummary", messaging_import_summary, PL_CALLER_SERVICE, NULL,
	  0 },
	{ NULL, NULL, 0, NULL, 0 },
};

const pl_rpc_service messaging_rpc_service = {
	&parley__messaging__v1__messaging__descriptor,
	messaging_methods,
};

static const pl_rpc_service *const messaging_services[] = {
	&messaging_rpc_service,
	NULL,
};

// ---------------------------------------------------------------------------
// Configuration and life cycle

static char *cfg_tenants_url, *cfg_billing_url, *cfg_agents_url,
        *cfg_analytics_url;
static int64_t cfg_inbox_workers, cfg_reply_workers, cfg_delivery_workers,
        cfg_retry_base, cfg_retry_max, cfg_max_attempts, cfg_send_timeout,
        cfg_send_rate, cfg_poll, cfg_cache, cfg_lease, cfg_batch,
        cfg_inbox_keep, cfg_call_threads;

static const pl_cfg_entry messaging_cfg[] = {
	{ "PARLEY_TENANTS_URL", PL_CFG_STRING, "", 0, 0, &cfg_tenants_url,
	  "tenants service (channels, credentials); empty: off" },
	{ "PARLEY_BILLING_URL", PL_CFG_STRING, "", 0, 0, &cfg_billing_url,
	  "billing service (message quota); empty: off (no limit)" },
	{ "PARLEY_AGENTS_URL", PL_CFG_STRING, "", 0, 0, &cfg_agents_url,
	  "agents service (bot replies); empty: off" },
	{ "PARLEY_ANALYTICS_URL", PL_CFG_STRING, "", 0, 0, &cfg_analytics_url,
	  "analytics service (events); empty: events wait in the outbox" },
	{ "PARLEY_MESSAGING_INBOX_WORKERS", PL_CFG_INT, "3", 0, 16,
	  &cfg_inbox_workers,
	  "threads turning webhook bodies into messages and answering them" },
	{ "PARLEY_MESSAGING_REPLY_WORKERS", PL_CFG_INT, "2", 0, 16,
	  &cfg_reply_workers, "threads running the bot's turn" },
	{ "PARLEY_MESSAGING_DELIVERY_WORKERS", PL_CFG_INT, "2", 0, 16,
	  &cfg_delivery_workers, "threads sending to the providers" },
	{ "PARLEY_MESSAGING_RETRY_BASE", PL_CFG_DURATION, "1s", 1, 3600000,
	  &cfg_retry_base, "first retry delay (doubles, with jitter)" },
	{ "PARLEY_MESSAGING_RETRY_MAX", PL_CFG_DURATION, "5m", 1, 86400000,
	  &cfg_retry_max, "longest retry delay" },
	{ "PARLEY_MESSAGING_MAX_ATTEMPTS", PL_CFG_INT, "10", 1, 100,
	  &cfg_max_attempts, "send attempts before a message fails" },
	{ "PARLEY_MESSAGING_SEND_TIMEOUT", PL_CFG_DURATION, "10s", 50, 120000,
	  &cfg_send_timeout, "one provider call's time budget" },
	{ "PARLEY_MESSAGING_SEND_RATE", PL_CFG_INT, "80", 1, 100000,
	  &cfg_send_rate, "messages per second per channel (default)" },
	{ "PARLEY_MESSAGING_POLL", PL_CFG_DURATION, "200ms", 1, 60000,
	  &cfg_poll, "workers' poll interval when idle" },
	{ "PARLEY_MESSAGING_CHANNEL_CACHE", PL_CFG_DURATION, "1s", 0, 3600000,
	  &cfg_cache,
	  "how long channel credentials and messaging settings are kept in "
	  "memory" },
	{ "PARLEY_MESSAGING_LEASE", PL_CFG_DURATION, "60s", 100, 3600000,
	  &cfg_lease,
	  "a claimed inbox row or reply is retried after this long (longer "
	  "than an agent's answer)" },
	{ "PARLEY_MESSAGING_BATCH", PL_CFG_INT, "64", 1, 1000, &cfg_batch,
	  "rows an inbox, reply or delivery worker claims at once" },
	{ "PARLEY_MESSAGING_CALL_THREADS", PL_CFG_INT, "8", 0, 32,
	  &cfg_call_threads,
	  "threads making a batch's agent, billing and provider calls "
	  "concurrently (0: one after the other)" },
	{ "PARLEY_MESSAGING_INBOX_KEEP", PL_CFG_DURATION, "168h", 0,
	  366LL * 86400000, &cfg_inbox_keep,
	  "processed webhook bodies are deleted after this long (the "
	  "window in which the same bytes are answered `duplicate`); 0: "
	  "kept for ever" },
	{ NULL, 0, NULL, 0, 0, NULL, NULL },
};

static int
messaging_init(const pl_service_cfg *cfg, void **arg)
{
	msg_service *s = calloc(1, sizeof(*s));
	int rv;

	if (s == NULL)
		return PL_RESOURCE_EXHAUSTED;
	if (sodium_init() < 0) {
		free(s);
		return PL_INTERNAL;
	}
	pthread_mutex_init(&s->mu, NULL);
	pthread_cond_init(&s->cv, NULL);
	for (int k = 0; k < 3; k++)
		pthread_cond_init(&s->cvk[k], NULL);
	s->database_url = strdup(cfg->database_url ? cfg->database_url : "");
	s->inbox_workers = cfg_inbox_workers;
	s->reply_workers = cfg_reply_workers;
	s->delivery_workers = cfg_delivery_workers;
	s->retry_base_ms = cfg_retry_base;
	s->retry_max_ms = cfg_retry_max;
	s->max_attempts = cfg_max_attempts;
	s->send_timeout_ms = cfg_send_timeout;
	s->send_rate = cfg_send_rate;
	s->poll_ms = cfg_poll;
	s->lease_ms = cfg_lease;
	s->batch = cfg_batch;
	s->cache_ms = cfg_cache;
	s->call_threads = cfg_call_threads;
	s->inbox_keep_ms = cfg_inbox_keep;
	rv = messaging_peers_open(&s->peers, cfg_tenants_url, cfg_billing_url,
	                          cfg_agents_url, cfg->secret, cfg_cache);
	if (rv == PL_OK && nz(cfg_analytics_url)) {
		pl_rpc_client_config cc = { 0 };
		cc.urls = cfg_analytics_url;
		cc.secret = cfg->secret;
		cc.service = "messaging";
		rv = pl_rpc_client_open(&s->analytics, &cc);
	} else if (rv == PL_OK) {
		pl_info("analytics integration is off (no URL configured)");
	}
	if (rv != PL_OK) {
		messaging_peers_close(s->peers);
		free(s->database_url);
		free(s);
		return rv;
	}
	*arg = s;
	return PL_OK;
}

static int
messaging_start(void *arg)
{
	msg_service *s = arg;

	if (s->analytics != NULL) {
		static const pl_outbox_route routes_tpl[2] = {
			{ "analytics", NULL,
			  "/parley.analytics.v1.Analytics/Track" },
			{ NULL, NULL, NULL },
		};
		static pl_outbox_route routes[2];
		pl_outbox_relay_config rc = { 0 };
		memcpy(routes, routes_tpl, sizeof(routes));
		routes[0].client = s->analytics;
		rc.database_url = s->database_url;
		rc.schema = MSG_SCHEMA;
		rc.source = "messaging";
		rc.routes = routes;
		if (pl_outbox_relay_start(&s->relay, &rc) != PL_OK)
			return PL_UNAVAILABLE;
	}
	return messaging_workers_start(s);
}

static void
messaging_stop(void *arg)
{
	msg_service *s = arg;

	messaging_workers_stop(s);
	if (s->relay) {
		pl_outbox_relay_stop(s->relay);
		s->relay = NULL;
	}
}

static void
messaging_fini(void *arg)
{
	msg_service *s = arg;

	if (s == NULL)
		return;
	messaging_stop(s);
	messaging_peers_close(s->peers);
	if (s->analytics)
		pl_rpc_client_close(s->analytics);
	pthread_mutex_destroy(&s->mu);
	pthread_cond_destroy(&s->cv);
	for (int k = 0; k < 3; k++)
		pthread_cond_destroy(&s->cvk[k]);
	free(s->database_url);
	free(s);
}

const pl_service_def messaging_service_def = {
	.name = "messaging",
	.schema = MSG_SCHEMA,
	.services = messaging_services,
	.migrations = messaging_migrations,
	// A constant (messaging_n_migrations is not one in C);
	// unit_messaging_table checks that the two agree.
	.n_migrations = MESSAGING_N_MIGRATIONS,
	.default_listen = "tcp://127.0.0.1:7104",
	.default_ops_port = 9104,
	.cfg = messaging_cfg,
	.init = messaging_init,
	.start = messaging_start,
	.stop = messaging_stop,
	.fini = messaging_fini,
};
