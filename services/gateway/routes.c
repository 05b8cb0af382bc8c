// THE route table: every REST route of the gateway, one line each (DESIGN
// §9; proto/README.md's REST mapping). The generic handler (handler.c) does
// the rest from the protobuf descriptors, which gw_routes_init resolves from
// each service's descriptor by method name.
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "gateway.h"
#include "parley/agents/v1/agents.pb-c.h"
#include "parley/analytics/v1/analytics.pb-c.h"
#include "parley/billing/v1/billing.pb-c.h"
#include "parley/messaging/v1/messaging.pb-c.h"
#include "parley/tenants/v1/tenants.pb-c.h"

#define T GW_TENANTS
#define B GW_BILLING
#define A GW_AGENTS
#define M GW_MESSAGING
#define N GW_ANALYTICS
#define L GW_LOCAL
#define P GW_PUBLIC

#define R(meth, pat, svc, rpc, bind, st, fl, hk, sum)                          \
	{                                                                      \
		meth, pat, svc, rpc, bind, st, fl, hk, sum, NULL, NULL, NULL   \
	}

// clang-format off
gw_route gw_routes[] = {
	// Public: documentation, the widget page, sign-up and login.
	R("GET",    "/v1/openapi.json", L, NULL, NULL, 200, P, &gw_hooks_openapi, "This document"),
	R("GET",    "/chat/{channel_id}", L, NULL, NULL, 200, P | GW_ANY_ORIGIN, &gw_hooks_chat_page, "The web-chat widget page (HTML)"),
	R("POST",   "/v1/signup", T, "SignUp", NULL, 201, P, &gw_hooks_signup, "Sign up: a tenant, its owner and a session token"),
	R("POST",   "/v1/login", T, "Login", NULL, 200, P, &gw_hooks_login, "Log in: a session token"),

	// Provider webhooks (public; verified by the services on the raw body).
	R("GET",    "/v1/webhooks/whatsapp/{channel_id}", M, "VerifyWebhookSubscription", NULL, 200, P, &gw_hooks_wa_verify, "Meta's subscription challenge (text/plain)"),
	R("POST",   "/v1/webhooks/whatsapp/{channel_id}", M, "HandleWebhook", NULL, 200, P | GW_RAW, &gw_hooks_webhook_wa, "WhatsApp Cloud webhook (X-Hub-Signature-256)"),
	R("POST",   "/v1/webhooks/infobip/{channel_id}", M, "HandleWebhook", NULL, 200, P | GW_RAW, &gw_hooks_webhook_infobip, "Infobip webhook"),
	R("POST",   "/v1/webhooks/payments", B, "HandlePaymentWebhook", NULL, 200, P | GW_RAW, &gw_hooks_payments, "Payment provider webhook (Stripe-Signature)"),

	// Web chat (public; the session token authenticates the visitor).
	R("POST",   "/v1/webchat/{channel_id}/sessions", M, "StartWebchatSession", NULL, 201, P | GW_ANY_ORIGIN, &gw_hooks_webchat_start, "Start (or resume) a web-chat session"),
	R("POST",   "/v1/webchat/{channel_id}/messages", M, "PostWebchatMessage", NULL, 202, P | GW_ANY_ORIGIN, &gw_hooks_webchat_post, "A visitor's message (Authorization: Bearer <session_token>)"),
	R("GET",    "/v1/webchat/{channel_id}/messages", M, "PollWebchatMessages", NULL, 200, P | GW_ANY_ORIGIN, &gw_hooks_webchat_poll, "New messages after ?after=<cursor> (long-poll ?wait_ms=, at most 25 s)"),

	// Tenants: the caller, API keys, members, channels, tenant, audit log.
	R("POST",   "/v1/logout", T, "Logout", NULL, 200, 0, &gw_hooks_logout, "End the caller's session (or all with all_sessions)"),
	R("GET",    "/v1/me", T, "GetMe", NULL, 200, 0, NULL, "The caller, its tenant and memberships"),
	R("POST",   "/v1/me/password", T, "ChangePassword", NULL, 200, 0, NULL, "Change the caller's password"),
	R("POST",   "/v1/api-keys", T, "CreateApiKey", NULL, 201, 0, NULL, "Create an API key (the key is shown once)"),
	R("GET",    "/v1/api-keys", T, "ListApiKeys", NULL, 200, 0, NULL, "List API keys"),
	R("DELETE", "/v1/api-keys/{id}", T, "RevokeApiKey", NULL, 200, 0, NULL, "Revoke an API key"),
	R("POST",   "/v1/members", T, "AddMember", NULL, 201, 0, NULL, "Add a member"),
	R("GET",    "/v1/members", T, "ListMembers", NULL, 200, 0, NULL, "List members"),
	R("PATCH",  "/v1/members/{user_id}", T, "SetRole", NULL, 200, 0, NULL, "Change a member's role"),
	R("DELETE", "/v1/members/{user_id}", T, "RemoveMember", NULL, 200, 0, NULL, "Remove a member"),
	R("POST",   "/v1/channels", T, "CreateChannel", NULL, 201, 0, NULL, "Create a channel (WhatsApp Cloud, Infobip, web chat)"),
	R("GET",    "/v1/channels", T, "ListChannels", NULL, 200, 0, NULL, "List channels"),
	R("GET",    "/v1/channels/{id}", T, "GetChannel", NULL, 200, 0, NULL, "Get a channel"),
	R("PATCH",  "/v1/channels/{id}", T, "UpdateChannel", NULL, 200, GW_MASK, NULL, "Update a channel ({agent_id} attaches an agent)"),
	R("POST",   "/v1/channels/{id}/disable", T, "DisableChannel", NULL, 200, 0, NULL, "Disable a channel"),
	R("POST",   "/v1/channels/{id}/enable", T, "EnableChannel", NULL, 200, 0, NULL, "Enable a channel"),
	R("GET",    "/v1/tenant", T, "GetTenant", NULL, 200, 0, NULL, "The caller's tenant"),
	R("PATCH",  "/v1/tenant", T, "UpdateTenant", NULL, 200, GW_MASK, NULL, "Update the caller's tenant"),
	R("GET",    "/v1/audit-log", T, "ListAuditLog", NULL, 200, 0, NULL, "The tenant's audit log"),
	R("GET",    "/v1/admin/tenants", T, "ListTenants", NULL, 200, 0, NULL, "Platform: list tenants"),
	R("GET",    "/v1/admin/tenants/{id}", T, "GetTenant", NULL, 200, 0, NULL, "Platform: get a tenant"),
	R("POST",   "/v1/admin/tenants/{id}/suspend", T, "SuspendTenant", NULL, 200, 0, NULL, "Platform: suspend a tenant"),
	R("POST",   "/v1/admin/tenants/{id}/reactivate", T, "ReactivateTenant", NULL, 200, 0, NULL, "Platform: reactivate a tenant"),
	R("POST",   "/v1/admin/channel-keys/rotate", T, "RotateChannelKeys", NULL, 200, 0, NULL, "Platform: re-encrypt channel credentials"),

	// Billing.
	R("GET",    "/v1/billing/plans", B, "ListPlans", NULL, 200, 0, NULL, "List plans"),
	R("POST",   "/v1/admin/plans", B, "CreatePlan", NULL, 201, 0, NULL, "Platform: create a plan"),
	R("PATCH",  "/v1/admin/plans/{id}", B, "UpdatePlan", NULL, 200, GW_MASK, NULL, "Platform: update a plan"),
	R("GET",    "/v1/billing/subscription", B, "GetSubscription", NULL, 200, 0, NULL, "The subscription and its plan"),
	R("GET",    "/v1/billing/subscription/history", B, "ListSubscriptionHistory", NULL, 200, 0, NULL, "The subscription's changes"),
	R("POST",   "/v1/billing/subscription/change-plan", B, "ChangePlan", NULL, 200, 0, NULL, "Change plan (prorated)"),
	R("POST",   "/v1/billing/subscription/cancel", B, "CancelSubscription", NULL, 200, 0, NULL, "Cancel now or at period end"),
	R("POST",   "/v1/billing/subscription/resume", B, "ResumeSubscription", NULL, 200, 0, NULL, "Undo a cancel at period end"),
	R("GET",    "/v1/billing/entitlements", B, "GetEntitlements", NULL, 200, 0, NULL, "Features, limits and usage"),
	R("GET",    "/v1/billing/usage", B, "GetUsage", NULL, 200, 0, NULL, "Usage in the period: {plan, period, limits, used}"),
	R("GET",    "/v1/billing/invoices", B, "ListInvoices", NULL, 200, 0, NULL, "List invoices"),
	R("GET",    "/v1/billing/invoices/{id}", B, "GetInvoice", NULL, 200, 0, NULL, "Get an invoice"),
	R("POST",   "/v1/admin/billing/close-period", B, "CloseBillingPeriod", NULL, 200, 0, NULL, "Platform: close ended billing periods"),

	// Agents and knowledge.
	R("POST",   "/v1/agents", A, "CreateAgent", NULL, 201, 0, NULL, "Create an agent"),
	R("GET",    "/v1/agents", A, "ListAgents", NULL, 200, 0, NULL, "List agents"),
	R("GET",    "/v1/agents/{id}", A, "GetAgent", NULL, 200, 0, NULL, "Get an agent"),
	R("PATCH",  "/v1/agents/{id}", A, "UpdateAgent", NULL, 200, GW_MASK, NULL, "Update an agent's draft"),
	R("POST",   "/v1/agents/{id}/publish", A, "PublishAgent", NULL, 200, 0, NULL, "Publish the draft: {version}"),
	R("POST",   "/v1/agents/{id}/archive", A, "ArchiveAgent", NULL, 200, 0, NULL, "Archive an agent"),
	R("GET",    "/v1/agents/{id}/versions", A, "ListVersions", "id=agent_id", 200, 0, NULL, "An agent's published versions"),
	R("POST",   "/v1/agents/{id}/knowledge", A, "ImportKnowledge", "id=agent_id", 201, 0, NULL, "Add knowledge entries to the agent's knowledge base"),
	R("GET",    "/v1/agents/{id}/knowledge", A, "ListKnowledge", "id=agent_id", 200, 0, NULL, "The agent's knowledge entries"),
	R("GET",    "/v1/agents/{id}/knowledge/search", A, "SearchKnowledge", "id=agent_id", 200, 0, NULL, "Search the agent's knowledge (?query=)"),
	R("POST",   "/v1/knowledge-bases", A, "CreateKnowledgeBase", NULL, 201, 0, NULL, "Create a knowledge base"),
	R("GET",    "/v1/knowledge-bases", A, "ListKnowledgeBases", NULL, 200, 0, NULL, "List knowledge bases"),
	R("PATCH",  "/v1/knowledge-bases/{id}", A, "UpdateKnowledgeBase", NULL, 200, GW_MASK, NULL, "Update a knowledge base"),
	R("DELETE", "/v1/knowledge-bases/{id}", A, "DeleteKnowledgeBase", NULL, 200, 0, NULL, "Delete a knowledge base"),
	R("POST",   "/v1/knowledge-bases/{id}/entries", A, "ImportKnowledge", "id=knowledge_base_id", 201, 0, NULL, "Add entries to a knowledge base"),
	R("GET",    "/v1/knowledge-bases/{id}/entries", A, "ListKnowledge", "id=knowledge_base_id", 200, 0, NULL, "A knowledge base's entries"),
	R("GET",    "/v1/knowledge-bases/{id}/export", A, "ExportKnowledge", "id=knowledge_base_id", 200, 0, NULL, "Export a knowledge base"),
	R("PATCH",  "/v1/knowledge/{id}", A, "UpdateEntry", NULL, 200, GW_MASK, NULL, "Update a knowledge entry"),
	R("DELETE", "/v1/knowledge/{id}", A, "DeleteEntry", NULL, 200, 0, NULL, "Delete a knowledge entry"),
	R("GET",    "/v1/agent-sessions", A, "ListSessions", NULL, 200, 0, NULL, "List agent sessions"),
	R("GET",    "/v1/agent-sessions/{id}", A, "GetSession", NULL, 200, 0, NULL, "Get an agent session"),
	R("POST",   "/v1/agent-sessions/{id}/end", A, "EndSession", NULL, 200, 0, NULL, "End an agent session"),
	R("GET",    "/v1/agent-sessions/{id}/messages", A, "ListSessionMessages", "id=session_id", 200, 0, NULL, "An agent session's turns"),
	R("GET",    "/v1/agent-checkpoints/latest", A, "GetLatestCheckpoint", NULL, 200, 0, NULL, "The latest checkpoint of a thread (?thread_id=)"),

	// Conversations and messages.
	R("GET",    "/v1/conversations", M, "ListConversations", NULL, 200, 0, NULL, "List conversations (?limit=, ?page_token=, filters)"),
	R("GET",    "/v1/conversations/{id}", M, "GetConversation", NULL, 200, 0, NULL, "Get a conversation"),
	R("GET",    "/v1/conversations/{id}/messages", M, "ListMessages", "id=conversation_id", 200, 0, NULL, "A conversation's messages"),
	R("POST",   "/v1/conversations/{id}/messages", M, "SendHumanReply", "id=conversation_id", 202, GW_KEY, NULL, "A person's reply {text}"),
	R("POST",   "/v1/conversations/{id}/takeover", M, "TakeOver", NULL, 200, 0, NULL, "A person takes the conversation over"),
	R("POST",   "/v1/conversations/{id}/handback", M, "HandBack", NULL, 200, 0, NULL, "Hand the conversation back to the bot"),
	R("PATCH",  "/v1/conversations/{id}/state", M, "UpdateConversationState", NULL, 200, 0, NULL, "Set stage, intent level, sentiment"),
	R("POST",   "/v1/conversations/{id}/close", M, "CloseConversation", NULL, 200, 0, NULL, "Close a conversation"),
	R("POST",   "/v1/conversations/{id}/reopen", M, "ReopenConversation", NULL, 200, 0, NULL, "Reopen a conversation"),
	R("POST",   "/v1/messages", M, "SendMessage", NULL, 202, GW_KEY, NULL, "Send a message (Idempotency-Key)"),
	R("GET",    "/v1/messages/{id}", M, "GetMessage", NULL, 200, 0, NULL, "Get a message"),
	R("POST",   "/v1/contacts", M, "CreateContact", NULL, 201, 0, NULL, "Create a contact"),
	R("GET",    "/v1/contacts", M, "ListContacts", NULL, 200, 0, NULL, "List contacts"),
	R("GET",    "/v1/contacts/{id}", M, "GetContact", NULL, 200, 0, NULL, "Get a contact"),
	R("PATCH",  "/v1/contacts/{id}", M, "UpdateContact", NULL, 200, GW_MASK, NULL, "Update a contact"),
	R("GET",    "/v1/messaging/settings", M, "GetMessagingSettings", NULL, 200, 0, NULL, "Messaging settings"),
	R("PATCH",  "/v1/messaging/settings", M, "UpdateMessagingSettings", NULL, 200, 0, NULL, "Update messaging settings ({settings, update_mask})"),

	// Engagement: templates, campaigns, follow-ups, leads, orders, actions,
	// outbound webhooks.
	R("POST",   "/v1/templates", M, "CreateTemplate", NULL, 201, 0, NULL, "Create a template"),
	R("GET",    "/v1/templates", M, "ListTemplates", NULL, 200, 0, NULL, "List templates"),
	R("GET",    "/v1/templates/{id}", M, "GetTemplate", NULL, 200, 0, NULL, "Get a template"),
	R("PATCH",  "/v1/templates/{id}", M, "UpdateTemplate", NULL, 200, GW_MASK, NULL, "Update a template"),
	R("DELETE", "/v1/templates/{id}", M, "DeleteTemplate", NULL, 200, 0, NULL, "Delete a template"),
	R("POST",   "/v1/templates/{id}/status", M, "SetTemplateStatus", NULL, 200, 0, NULL, "Set a template's approval status"),
	R("POST",   "/v1/campaigns", M, "CreateCampaign", NULL, 201, 0, NULL, "Create a campaign"),
	R("GET",    "/v1/campaigns", M, "ListCampaigns", NULL, 200, 0, NULL, "List campaigns"),
	R("GET",    "/v1/campaigns/{id}", M, "GetCampaign", NULL, 200, 0, NULL, "Get a campaign"),
	R("PATCH",  "/v1/campaigns/{id}", M, "UpdateCampaign", NULL, 200, GW_MASK, NULL, "Update a campaign"),
	R("DELETE", "/v1/campaigns/{id}", M, "DeleteCampaign", NULL, 200, 0, NULL, "Delete a campaign"),
	R("POST",   "/v1/campaigns/{id}/schedule", M, "ScheduleCampaign", NULL, 200, 0, NULL, "Schedule a campaign"),
	R("POST",   "/v1/campaigns/{id}/start", M, "StartCampaign", NULL, 200, 0, NULL, "Start a campaign now"),
	R("POST",   "/v1/campaigns/{id}/pause", M, "PauseCampaign", NULL, 200, 0, NULL, "Pause a campaign"),
	R("POST",   "/v1/campaigns/{id}/resume", M, "ResumeCampaign", NULL, 200, 0, NULL, "Resume a campaign"),
	R("POST",   "/v1/campaigns/{id}/cancel", M, "CancelCampaign", NULL, 200, 0, NULL, "Cancel a campaign"),
	R("GET",    "/v1/campaigns/{id}/stats", M, "GetCampaignStats", NULL, 200, 0, NULL, "A campaign's counters"),
	R("GET",    "/v1/campaigns/{id}/recipients", M, "ListCampaignRecipients", "id=campaign_id", 200, 0, NULL, "A campaign's recipients"),
	R("POST",   "/v1/followup-rules", M, "CreateFollowupRule", NULL, 201, 0, NULL, "Create a follow-up rule"),
	R("GET",    "/v1/followup-rules", M, "ListFollowupRules", NULL, 200, 0, NULL, "List follow-up rules"),
	R("GET",    "/v1/followup-rules/{id}", M, "GetFollowupRule", NULL, 200, 0, NULL, "Get a follow-up rule"),
	R("PATCH",  "/v1/followup-rules/{id}", M, "UpdateFollowupRule", NULL, 200, GW_MASK, NULL, "Update a follow-up rule"),
	R("DELETE", "/v1/followup-rules/{id}", M, "DeleteFollowupRule", NULL, 200, 0, NULL, "Delete a follow-up rule"),
	R("POST",   "/v1/leads", M, "CreateLead", NULL, 201, 0, NULL, "Create a lead"),
	R("GET",    "/v1/leads", M, "ListLeads", NULL, 200, 0, NULL, "List leads"),
	R("GET",    "/v1/leads/{id}", M, "GetLead", NULL, 200, 0, NULL, "Get a lead"),
	R("PATCH",  "/v1/leads/{id}", M, "UpdateLead", NULL, 200, GW_MASK, NULL, "Update a lead"),
	R("DELETE", "/v1/leads/{id}", M, "DeleteLead", NULL, 200, 0, NULL, "Delete a lead"),
	R("POST",   "/v1/orders", M, "CreateOrder", NULL, 201, 0, NULL, "Create an order"),
	R("GET",    "/v1/orders", M, "ListOrders", NULL, 200, 0, NULL, "List orders"),
	R("GET",    "/v1/orders/{id}", M, "GetOrder", NULL, 200, 0, NULL, "Get an order"),
	R("PATCH",  "/v1/orders/{id}", M, "UpdateOrder", NULL, 200, GW_MASK, NULL, "Update an order"),
	R("DELETE", "/v1/orders/{id}", M, "DeleteOrder", NULL, 200, 0, NULL, "Delete an order"),
	R("POST",   "/v1/orders/{id}/status", M, "UpdateOrderStatus", NULL, 200, 0, NULL, "Move an order to a status"),
	R("GET",    "/v1/actions", M, "ListActions", NULL, 200, 0, NULL, "List actions awaiting a person"),
	R("GET",    "/v1/actions/{id}", M, "GetAction", NULL, 200, 0, NULL, "Get an action"),
	R("POST",   "/v1/actions/{id}/approve", M, "ApproveAction", NULL, 200, 0, NULL, "Approve an action"),
	R("POST",   "/v1/actions/{id}/reject", M, "RejectAction", NULL, 200, 0, NULL, "Reject an action"),
	R("POST",   "/v1/webhook-endpoints", M, "CreateWebhookEndpoint", NULL, 201, 0, NULL, "Create an outbound webhook endpoint (secret shown once)"),
	R("GET",    "/v1/webhook-endpoints", M, "ListWebhookEndpoints", NULL, 200, 0, NULL, "List outbound webhook endpoints"),
	R("GET",    "/v1/webhook-endpoints/{id}", M, "GetWebhookEndpoint", NULL, 200, 0, NULL, "Get an outbound webhook endpoint"),
	R("PATCH",  "/v1/webhook-endpoints/{id}", M, "UpdateWebhookEndpoint", NULL, 200, GW_MASK, NULL, "Update an outbound webhook endpoint"),
	R("DELETE", "/v1/webhook-endpoints/{id}", M, "DeleteWebhookEndpoint", NULL, 200, 0, NULL, "Delete an outbound webhook endpoint"),
	R("POST",   "/v1/webhook-endpoints/{id}/rotate-secret", M, "RotateWebhookSecret", NULL, 200, 0, NULL, "Rotate an endpoint's signing secret"),
	R("GET",    "/v1/webhook-endpoints/{id}/deliveries", M, "ListWebhookDeliveries", "id=endpoint_id", 200, 0, NULL, "An endpoint's deliveries"),
	R("POST",   "/v1/webhook-deliveries/{id}/redeliver", M, "RedeliverWebhook", NULL, 200, 0, NULL, "Send a delivery again"),

	// Analytics.
	R("GET",    "/v1/analytics/summary", N, "Summary", NULL, 200, 0, NULL, "KPIs over a range"),
	R("GET",    "/v1/analytics/timeseries", N, "TimeSeries", NULL, 200, 0, NULL, "A metric over time"),
	R("GET",    "/v1/analytics/top", N, "TopN", NULL, 200, 0, NULL, "Top values of a dimension"),
	R("GET",    "/v1/analytics/funnel", N, "Funnel", NULL, 200, 0, NULL, "The conversation funnel"),
	R("GET",    "/v1/analytics/monthly-usage", N, "MonthlyUsage", NULL, 200, 0, NULL, "Usage per month"),
	R("GET",    "/v1/analytics/events", N, "ListEvents", NULL, 200, 0, NULL, "Raw events"),
	R("GET",    "/v1/admin/analytics/summary", N, "PlatformSummary", NULL, 200, 0, NULL, "Platform: the whole platform's KPIs"),
	R("GET",    "/v1/admin/analytics/retention", N, "GetRetention", NULL, 200, 0, NULL, "Platform: event retention"),
	R("PATCH",  "/v1/admin/analytics/retention", N, "SetRetention", NULL, 200, 0, NULL, "Platform: set event retention"),
	R("POST",   "/v1/admin/analytics/retention/apply", N, "ApplyRetention", NULL, 200, 0, NULL, "Platform: drop expired partitions"),
};
// clang-format on

const size_t gw_n_routes = sizeof(gw_routes) / sizeof(gw_routes[0]);

static const ProtobufCServiceDescriptor *const svc_desc[GW_NSVC] = {
	[GW_TENANTS] = &parley__tenants__v1__tenants__descriptor,
	[GW_BILLING] = &parley__billing__v1__billing__descriptor,
	[GW_AGENTS] = &parley__agents__v1__agents__descriptor,
	[GW_MESSAGING] = &parley__messaging__v1__messaging__descriptor,
	[GW_ANALYTICS] = &parley__analytics__v1__analytics__descriptor,
};

static const char *const svc_names[GW_NSVC] = {
	"tenants", "billing", "agents", "messaging", "analytics",
};

const char *
gw_svc_name(int svc)
{
	return svc >= 0 && svc < GW_NSVC ? svc_names[svc] : NULL;
}

const char *
gw_route_field(const gw_route *r, const char *param, char *buf, size_t size)
{
	const char *p = r->bind;
	size_t n = strlen(param);

	while (p != NULL && *p != '\0') {
		const char *end = strchr(p, ',');
		size_t len = end ? (size_t)(end - p) : strlen(p);

		if (len > n + 1 && strncmp(p, param, n) == 0 && p[n] == '=') {
			size_t flen = len - n - 1;
			if (flen >= size)
				flen = size - 1;
			memcpy(buf, p + n + 1, flen);
			buf[flen] = '\0';
			return buf;
		}
		p = end ? end + 1 : NULL;
	}
	snprintf(buf, size, "%s", param);
	return buf;
}

static char init_err[256];
static int init_rv;
static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static char full_names[sizeof(gw_routes) / sizeof(gw_routes[0])][128];

static int
resolve(gw_route *r, size_t i)
{
	const ProtobufCServiceDescriptor *sd;
	const ProtobufCMethodDescriptor *md = NULL;
	gw_param params[GW_MAX_PARAMS];
	const char *p;
	int n = 0;

	if (r->svc == GW_LOCAL) {
		if (r->hooks == NULL || r->hooks->serve == NULL) {
			snprintf(init_err, sizeof(init_err),
			         "%s %s: a local route needs a serve hook",
			         r->method, r->pattern);
			return -1;
		}
		return 0;
	}
	if (r->svc < 0 || r->svc >= GW_NSVC || r->rpc == NULL) {
		snprintf(init_err, sizeof(init_err), "%s %s: bad service",
		         r->method, r->pattern);
		return -1;
	}
	sd = svc_desc[r->svc];
	for (unsigned k = 0; k < sd->n_methods; k++)
		if (strcmp(sd->methods[k].name, r->rpc) == 0)
			md = &sd->methods[k];
	if (md == NULL) {
		snprintf(init_err, sizeof(init_err), "%s %s: %s has no %s",
		         r->method, r->pattern, sd->name, r->rpc);
		return -1;
	}
	r->in = md->input;
	r->out = md->output;
	snprintf(full_names[i], sizeof(full_names[i]), "/%s/%s", sd->name,
	         md->name);
	r->full = full_names[i];
	if ((r->flags & GW_MASK) != 0 &&
	    protobuf_c_message_descriptor_get_field_by_name(
	            r->in, "update_mask") == NULL) {
		snprintf(init_err, sizeof(init_err),
		         "%s %s: %s has no update_mask", r->method, r->pattern,
		         r->in->name);
		return -1;
	}
	// Every path parameter fills a string field of the input.
	for (p = r->pattern; (p = strchr(p, '{')) != NULL; p++) {
		const char *e = strchr(p, '}');
		char name[32], field[64];
		const ProtobufCFieldDescriptor *f;

		if (e == NULL || (size_t)(e - p - 1) >= sizeof(name) ||
		    ++n > GW_MAX_PARAMS) {
			snprintf(init_err, sizeof(init_err), "%s: bad pattern",
			         r->pattern);
			return -1;
		}
		memcpy(name, p + 1, (size_t)(e - p - 1));
		name[e - p - 1] = '\0';
		gw_route_field(r, name, field, sizeof(field));
		f = protobuf_c_message_descriptor_get_field_by_name(r->in,
		                                                    field);
		if (f == NULL || f->type != PROTOBUF_C_TYPE_STRING ||
		    f->label == PROTOBUF_C_LABEL_REPEATED) {
			snprintf(init_err, sizeof(init_err),
			         "%s %s: %s has no string field %s", r->method,
			         r->pattern, r->in->name, field);
			return -1;
		}
	}
	(void)params;
	return 0;
}

static void
init_routes(void)
{
	for (size_t i = 0; i < gw_n_routes; i++) {
		if (resolve(&gw_routes[i], i) != 0) {
			init_rv = -1;
			return;
		}
		// One route per (method, pattern).
		for (size_t j = 0; j < i; j++) {
			if (strcmp(gw_routes[i].method, gw_routes[j].method) ==
			            0 &&
			    strcmp(gw_routes[i].pattern,
			           gw_routes[j].pattern) == 0) {
				snprintf(init_err, sizeof(init_err),
				         "%s %s: listed twice",
				         gw_routes[i].method,
				         gw_routes[i].pattern);
				init_rv = -1;
				return;
			}
		}
	}
}

int
gw_routes_init(char *err, size_t errlen)
{
	pthread_once(&init_once, init_routes);
	if (init_rv != 0 && err != NULL)
		snprintf(err, errlen, "%s", init_err);
	return init_rv;
}
