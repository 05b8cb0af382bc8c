// The messaging service, engagement part (issue 7): settings (opt-out
// keywords), templates, campaigns, leads, orders, the actions center. The
// core calls the hooks below from one place each; the RPC handlers are
// bound in handlers.c's table.
#ifndef ENGAGE_H
#define ENGAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "messaging.h"

#define EG_M(x) Parley__Messaging__V1__##x
#define EG_E(x) PARLEY__MESSAGING__V1__##x

#define EG_MAX_COMPONENTS 16384 // template components JSON
#define EG_MAX_PARAMS     32    // {{1}}..{{32}}
#define EG_MAX_PARAM_LEN  1024
#define EG_MAX_ITEMS      100 // order items
#define EG_MAX_JSON       16384

// ---------------------------------------------------------------------------
// Hooks into the core (each called from one place).

// Inside the inbound message's transaction (store.c ingest): an opt-out or
// opt-in keyword (whole message, any case) sets or clears the contact's
// opted_out_at, queues the confirmation and marks the message answered
// (reply outcome "opt_out") so the bot does not answer it.
int engage_on_inbound(pl_db *db, const char *tenant_id, const char *contact_id,
                      const char *conversation_id, const char *channel_id,
                      const char *message_id, const char *text);

// Inside the bot's turn's transaction (store.c reply finish): the captured
// lead fields become the contact's lead (created or updated) and proposed
// actions become pending actions (de-duplicated by message id + index).
int engage_on_reply(pl_db *db, const char *tenant_id, const char *contact_id,
                    const char *conversation_id, const char *message_id,
                    const char *agent_id, const char *metadata_json);

// The delivery worker's request builder: templates from the message's
// metadata.template, everything else through messaging_build_send.
int engage_build_send(pl_db *db, const msg_delivery *d, const msg_send *s,
                      pl_arena *a, const char **url, const char ***headers,
                      char **body);

// SendMessage with a template (called by send_message for TEMPLATE).
int engage_send_template(pl_call *call, const void *in, void *out);

// Background jobs (campaign sender), from messaging_workers_start/stop.
int engage_start(msg_service *s);
void engage_stop(msg_service *s);

// ---------------------------------------------------------------------------
// Templates (templates.c, no I/O)

// Counts the {{n}} placeholders of a body text: they must be {{1}}..{{n}}
// with none missing. Returns n, or -1 with err set.
int engage_template_params(const char *text, char *err, size_t errlen);

// Validates components JSON (an object with body.text of 1..1024 chars);
// returns the parameter count or -1 with err set.
int engage_template_check(const char *components, char *err, size_t errlen);

// WhatsApp Cloud / Infobip template request for one message.
int engage_build_template(const msg_send *s, const char *name,
                          const char *language, const char *const *params,
                          size_t n, pl_arena *a, const char **url,
                          const char ***headers, char **body);

// Whole-message keyword match (trimmed, case-insensitive ASCII).
bool engage_keyword_match(const char *text, const char *const *kw, size_t n);

// ---------------------------------------------------------------------------
// Orders (orders.c, no I/O)

// pending -> confirmed -> shipped -> delivered; pending|confirmed ->
// cancelled; the same status again is allowed (a no-op).
bool engage_order_transition_ok(const char *from, const char *to);

// ---------------------------------------------------------------------------
// Store (engage_store.c): the SQL and the helpers that run it.

// A statement in a transaction for tenant whose rows are one JSON object
// each (column 0) in the shape of message d. One row expected: none →
// NOT_FOUND "<what> not found".
int eg_get(pl_call *call, const char *tenant, const char *sql, int n,
           const char *const *p, const ProtobufCMessageDescriptor *d,
           void **out, const char *what);

// Many rows; limit+1 are asked ($N is the limit the caller put in p), the
// extra one makes the next page token (the last row's "id").
int eg_list(pl_call *call, const char *tenant, const char *sql, int n,
            const char *const *p, int limit,
            const ProtobufCMessageDescriptor *d, void ***out, size_t *nout,
            char **next);

// A statement's single JSON row → pb, for callers already in a transaction.
int eg_row_pb(pl_call *call, PGresult *r, const ProtobufCMessageDescriptor *d,
              void **out);

// Runs fn in a tenant transaction and maps SQL errors onto the call.
typedef int (*eg_fn)(pl_call *call, pl_db *db, void *arg);
int eg_tx(pl_call *call, const char *tenant, eg_fn fn, void *arg);

// Executes in the current transaction; on error the call's error is set
// (when call is not NULL) and the status returned. *out only on success.
int eg_exec(pl_call *call, pl_db *db, const char *sql, int n,
            const char *const *p, PGresult **out, const char *what);

// An event to analytics (outbox) inside the caller's transaction.
int eg_event(pl_db *db, const char *tenant, const char *type,
             const char *dims_json, const char *payload_json);

// Queues an outbound message (text or template) with its delivery in the
// caller's transaction. metadata_json may be NULL.
int eg_queue(pl_db *db, const char *tenant, const char *conversation_id,
             const char *channel_id, const char *type, const char *text,
             const char *metadata_json, const char *user_id, char id_out[40]);

// Handler helpers (engage_store.c).
const char *eg_tenant(const pl_call *call);
const char *eg_nz(const char *s);
int eg_need_uuid(pl_call *call, const char *field, const char *v);
// Page size (default 50, at most 200) and the decoded cursor (NULL: first
// page).
int eg_page(pl_call *call, const Parley__Rpc__V1__PageRequest *pg, int *size,
            char **after);
// The JSON text of a Json field when it is an object (or an array when
// array is true) of at most max bytes; NULL value → def. Violation else.
int eg_json_arg(pl_call *call, const char *field,
                const Parley__Rpc__V1__Json *j, bool array, size_t max,
                const char *def, const char **out);
msg_service *eg_svc(pl_call *call);
// ParameterBinding[] checked (index 1..32 once each, a known contact field,
// sizes) and written as stored JSON (campaigns.c). Violation else.
int eg_bindings_json(pl_call *call, EG_M(ParameterBinding) * *b, size_t n,
                     const char **out);

// SQL text (engage_store.c).
extern const char EG_SQL_TEMPLATE_JSON[];
extern const char EG_SQL_CAMPAIGN_JSON[];
extern const char EG_SQL_LEAD_JSON[];
extern const char EG_SQL_ORDER_JSON[];
extern const char EG_SQL_ACTION_JSON[];

// RPC handlers (bound in handlers.c's table).
int eg_create_template(pl_call *call, const void *in, void *out);
int eg_update_template(pl_call *call, const void *in, void *out);
int eg_get_template(pl_call *call, const void *in, void *out);
int eg_list_templates(pl_call *call, const void *in, void *out);
int eg_delete_template(pl_call *call, const void *in, void *out);
int eg_set_template_status(pl_call *call, const void *in, void *out);
int eg_create_campaign(pl_call *call, const void *in, void *out);
int eg_update_campaign(pl_call *call, const void *in, void *out);
int eg_get_campaign(pl_call *call, const void *in, void *out);
int eg_list_campaigns(pl_call *call, const void *in, void *out);
int eg_delete_campaign(pl_call *call, const void *in, void *out);
int eg_schedule_campaign(pl_call *call, const void *in, void *out);
int eg_start_campaign(pl_call *call, const void *in, void *out);
int eg_pause_campaign(pl_call *call, const void *in, void *out);
int eg_resume_campaign(pl_call *call, const void *in, void *out);
int eg_cancel_campaign(pl_call *call, const void *in, void *out);
int eg_get_campaign_stats(pl_call *call, const void *in, void *out);
int eg_list_campaign_recipients(pl_call *call, const void *in, void *out);
int eg_create_lead(pl_call *call, const void *in, void *out);
int eg_update_lead(pl_call *call, const void *in, void *out);
int eg_get_lead(pl_call *call, const void *in, void *out);
int eg_list_leads(pl_call *call, const void *in, void *out);
int eg_delete_lead(pl_call *call, const void *in, void *out);
int eg_create_order(pl_call *call, const void *in, void *out);
int eg_update_order(pl_call *call, const void *in, void *out);
int eg_get_order(pl_call *call, const void *in, void *out);
int eg_list_orders(pl_call *call, const void *in, void *out);
int eg_delete_order(pl_call *call, const void *in, void *out);
int eg_update_order_status(pl_call *call, const void *in, void *out);
int eg_create_action(pl_call *call, const void *in, void *out);
int eg_list_actions(pl_call *call, const void *in, void *out);
int eg_get_action(pl_call *call, const void *in, void *out);
int eg_approve_action(pl_call *call, const void *in, void *out);
int eg_reject_action(pl_call *call, const void *in, void *out);
int eg_get_settings(pl_call *call, const void *in, void *out);
int eg_update_settings(pl_call *call, const void *in, void *out);

// Follow-up rules (followups.c).
int eg_create_followup_rule(pl_call *call, const void *in, void *out);
int eg_update_followup_rule(pl_call *call, const void *in, void *out);
int eg_get_followup_rule(pl_call *call, const void *in, void *out);
int eg_list_followup_rules(pl_call *call, const void *in, void *out);
int eg_delete_followup_rule(pl_call *call, const void *in, void *out);

// Outbound webhooks (outhooks.c).
int eg_create_webhook_endpoint(pl_call *call, const void *in, void *out);
int eg_update_webhook_endpoint(pl_call *call, const void *in, void *out);
int eg_get_webhook_endpoint(pl_call *call, const void *in, void *out);
int eg_list_webhook_endpoints(pl_call *call, const void *in, void *out);
int eg_delete_webhook_endpoint(pl_call *call, const void *in, void *out);
int eg_rotate_webhook_secret(pl_call *call, const void *in, void *out);
int eg_list_webhook_deliveries(pl_call *call, const void *in, void *out);
int eg_redeliver_webhook(pl_call *call, const void *in, void *out);

// Follow-up scheduler (followups.c): sends the due follow-ups (at most max)
// on the caller's connection; returns how many were handled (sent,
// skipped or canceled), -1 on a database error. Tests and the threads use
// it.
int engage_followups_once(msg_service *s, pl_db *db, pl_arena *a, int max);
int engage_followups_start(msg_service *s);
void engage_followups_stop(void);

// Webhook sender (outhooks.c): one due delivery claimed, signed and sent;
// returns 1 when one was handled, 0 when none was due, -1 on error.
int engage_outhooks_once(msg_service *s, pl_db *db, pl_arena *a);
int engage_outhooks_start(msg_service *s);
void engage_outhooks_stop(void);

// Standard Webhooks signature "v1,<base64 HMAC-SHA256(id.ts.body)>" with a
// "whsec_<base64 key>" secret, into out (arena). NULL on a bad secret.
char *engage_webhook_sign(pl_arena *a, const char *secret, const char *id,
                          long long ts, const char *body, size_t len);

// SSRF guard: true when url is http(s) without credentials and every
// address its host resolves to is public or in the operator's allow-list
// (PARLEY_MESSAGING_WEBHOOK_ALLOW, CIDRs). On success pin (when not NULL,
// 80 bytes) gets "host:port:address" for CURLOPT_RESOLVE.
bool engage_webhook_url_ok(const char *url, char *why, size_t whylen, char *pin,
                           size_t pinlen);

// Campaign sender (campaigns.c): one pass over running and due campaigns on
// the caller's connection; returns recipients handled (tests, bench).
int engage_campaigns_once(msg_service *s, pl_db *db, pl_arena *a);

#endif
