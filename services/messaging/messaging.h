// The messaging service, core part (issue 6): provider webhooks, contacts,
// conversations, messages, delivery, statuses, human takeover, web chat.
#ifndef MESSAGING_H
#define MESSAGING_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "parley/agents/v1/agents.pb-c.h"
#include "parley/billing/v1/billing.pb-c.h"
#include "parley/messaging/v1/messaging.pb-c.h"
#include "parley/tenants/v1/tenants.pb-c.h"
#include "pl/arena.h"
#include "pl/db.h"
#include "pl/httpc.h"
#include "pl/migrate.h"
#include "pl/outbox.h"
#include "pl/rpc.h"
#include "pl/service.h"

extern const pl_service_def messaging_service_def;
extern const pl_rpc_service messaging_rpc_service;
extern const pl_migration messaging_migrations[];
extern const size_t messaging_n_migrations;

#define MSG_SCHEMA "messaging"
#include "messaging_migrations.h"    // MESSAGING_N_MIGRATIONS
#define MSG_MAX_BODY (1024 * 1024)   // webhook bodies
#define MSG_MAX_ID   256             // a provider's message id, sender, user id
#define MSG_MAX_KEY  200             // an idempotency key billing takes
#define MSG_MAX_TEXT (64 * 1024 - 1) // a text (agents.Reply's limit)
// What WhatsApp (Cloud and Infobip's) takes in one text body and in one
// media caption, in characters; messaging_fit_text cuts what is longer.
#define MSG_WA_MAX_TEXT    4096
#define MSG_WA_MAX_CAPTION 1024
// Bytes of outbound text a person or a template sends: within WhatsApp's
// characters whatever the text, so it is never cut.
#define MSG_MAX_SEND_TEXT MSG_WA_MAX_TEXT

// ---------------------------------------------------------------------------
// Enum names as stored (index = proto enum value; "" for UNSPECIFIED).

extern const char *const msg_status_names[8];
extern const char *const msg_type_names[12];
extern const char *const msg_direction_names[3];
extern const char *const msg_sender_names[5];
extern const char *const conv_status_names[4];
extern const char *const conv_owner_names[3];
extern const char *const conv_stage_names[7];
extern const char *const intent_level_names[4];
extern const char *const sentiment_names[4];
extern const char *const ext_kind_names[4];

// Index of name in names[0..n) or 0 when none.
int msg_enum_from_name(const char *const *names, int n, const char *name);

// Ranks of statuses: received < queued < sent < delivered < read < played;
// failed is terminal. True when `next` may replace `cur`.
bool messaging_status_advances(int cur, int next);

// ---------------------------------------------------------------------------
// Phones (phone.c)

#define MSG_PHONE_MAX 20

// Normalizes any written phone ("+55 (11) 98765-4321", "0055...",
// "5511987654321") to E.164 into out; false when it is not 8..15 digits.
bool messaging_phone_normalize(const char *raw, char out[MSG_PHONE_MAX]);

// The forms a lookup must try: the number itself and, for a Brazilian
// mobile, the same with or without the ninth digit. Returns 1 or 2.
int messaging_phone_variants(const char *e164, char a[MSG_PHONE_MAX],
                             char b[MSG_PHONE_MAX]);

// ---------------------------------------------------------------------------
// Provider adapters (webhook.c): signature and parsing, no I/O.

// Checks "sha256=<hex>" (X-Hub-Signature-256) against HMAC-SHA256 of the
// raw body under secret, in constant time.
bool messaging_wa_signature_ok(const char *header, const char *secret,
                               const uint8_t *body, size_t len);

// Infobip does not sign its webhooks. An Infobip channel given an
// app_secret takes the subscription's BASIC security instead: header (an
// Authorization value) must be "Basic " and the base64 of
// "username:password", equal to secret. Compared in constant time.
#define MSG_BASIC_MAX 512 // decoded credentials, bytes
bool messaging_basic_auth_ok(const char *header, const char *secret);

typedef enum msg_item_kind {
	MSG_ITEM_MESSAGE = 1,
	MSG_ITEM_STATUS = 2,
} msg_item_kind;

// One message or status found in a webhook body; strings in the arena.
typedef struct msg_item {
	msg_item_kind kind;
	// both
	const char *provider_message_id;
	const char *routing_key; // phone_number_id (WhatsApp), "to" (Infobip)
	// messages
	const char *external_id;
	int external_id_kind; // Parley__Messaging__V1__ExternalIdKind
	const char *phone_raw;
	const char *business_user_id;
	const char *parent_user_id;
	const char *contact_name;
	const char *profile_json;
	int type; // MessageType
	const char *text;
	const char *media_url;
	const char *media_mime_type;
	const char *provider_created_at; // RFC 3339 or NULL
	const char *metadata_json;
	// statuses
	int status; // MessageStatus
	const char *at;
	const char *error_code;
	const char *error_text;
} msg_item;

typedef struct msg_items {
	msg_item *v;
	size_t n;
} msg_items;

// Parses a body of the channel type (1 WhatsApp Cloud, 2 Infobip) into
// items. Returns PL_OK, or PL_INVALID_ARGUMENT with err saying what is wrong
// (not JSON, not the provider's shape).
int messaging_parse_webhook(int channel_type, const uint8_t *body, size_t len,
                            pl_arena *a, msg_items *out, char *err,
                            size_t errlen);

// ---------------------------------------------------------------------------
// Outbound requests and answers (provider.c), no I/O.

typedef struct msg_send {
	int channel_type;
	const char *api_base_url;
	const char *phone_number_id; // WhatsApp
	const char *sender_number;   // Infobip
	const char *access_token;
	const char *to; // external id
	int to_kind;    // ExternalIdKind
	int type;       // MessageType
	const char *text;
	const char *media_url;
} msg_send;

// s, or a copy cut to at most max characters (UTF-16 code units) that
// ends with "…" (provider.c).
const char *messaging_fit_text(const char *s, size_t max, pl_arena *a);

// Builds URL, headers and JSON body (malloc'd into the arena).
int messaging_build_send(const msg_send *s, pl_arena *a, const char **url,
                         const char ***headers, char **body);

typedef enum msg_send_verdict {
	MSG_SEND_OK = 0,        // provider id in *provider_id
	MSG_SEND_RETRY = 1,     // transient: timeout, 429, 5xx, throughput
	MSG_SEND_PERMANENT = 2, // 4xx: failed, error code and text set
} msg_send_verdict;

// Classifies an answer (http 0 = no answer) and extracts the provider id
// or the provider's error code and text.
msg_send_verdict messaging_classify_send(int channel_type, long http,
                                         const char *body, pl_arena *a,
                                         const char **provider_id,
                                         const char **err_code,
                                         const char **err_text);

// Capped exponential back-off with full jitter for retry n (1-based),
// honouring retry_after_ms (-1 none).
int64_t messaging_backoff_ms(int n, int64_t base, int64_t cap,
                             int64_t retry_after_ms);

// ---------------------------------------------------------------------------
// Peers (peers.c): tenants, billing, agents; each may be off (no URL).

typedef struct msg_channel {
	char tenant_id[40];
	char channel_id[40];
	int type; // ChannelType
	int tenant_status;
	int status; // ChannelStatus
	char agent_id[40];
	char phone_number_id[64];
	char sender_number[64];
	char api_base_url[256];
	int send_rate;
	char access_token[512];
	char app_secret[256];
	char verify_token[256];
	int64_t expires_ns;
} msg_channel;

typedef struct msg_peers msg_peers;

int messaging_peers_open(msg_peers **out, const char *tenants_url,
                         const char *billing_url, const char *agents_url,
                         const char *secret, int64_t cache_ms);
void messaging_peers_close(msg_peers *p);

// The channel with its credentials (cached briefly). PL_NOT_FOUND when
// tenants does not know it; PL_UNAVAILABLE when tenants is off or down.
void messaging_peers_forget(msg_peers *p, const char *channel_id);
int messaging_peers_channel(msg_peers *p, const char *channel_id, int type,
                            const char *tenant_id, const pl_call *parent,
                            msg_channel *out);

// Forgets the cached channel (tests, credential changes).

// billing.ReserveUsage(messages, 1, key). PL_OK allowed (also when billing
// is off), PL_RESOURCE_EXHAUSTED refused, other codes: could not ask.
int messaging_peers_reserve(msg_peers *p, const char *tenant_id,
                            const char *key, char *why, size_t whylen);

// agents.Reply. PL_OK with *out in arena; PL_FAILED_PRECONDITION /
// PL_NOT_FOUND when the agent cannot answer; PL_UNAVAILABLE when off.
int messaging_peers_reply(msg_peers *p,
                          const Parley__Agents__V1__ReplyRequest *in,
                          pl_arena *a, Parley__Agents__V1__ReplyResponse **out);

// agents.ReplyBatch (1 .. MSG_REPLY_BATCH items): one status per item in
// *out (arena). PL_UNIMPLEMENTED from an agents service without it.
#define MSG_REPLY_BATCH 64
int messaging_peers_reply_batch(msg_peers *p,
                                const Parley__Agents__V1__ReplyBatchRequest *in,
                                pl_arena *a,
                                Parley__Agents__V1__ReplyBatchResponse **out);

// billing.ReserveUsageBatch (1 .. MSG_RESERVE_BATCH items): one
// ReserveUsage(messages, 1, keys[i]) for tenants[i] each, its status in
// rv[i] (as messaging_peers_reserve's) and its message in why[i] (arena).
// Returns the call's own status: when not PL_OK, rv and why are not set
// (PL_UNIMPLEMENTED from a billing service without it).
#define MSG_RESERVE_BATCH 256
int messaging_peers_reserve_batch(msg_peers *p, const char *const *tenants,
                                  const char *const *keys, size_t n,
                                  pl_arena *a, int *rv, const char **why);

bool messaging_peers_has_agents(const msg_peers *p);

// ---------------------------------------------------------------------------
// The service's state (def->init) and background workers (workers.c).

typedef struct msg_workers msg_workers;

typedef struct msg_service {
	char *database_url;
	msg_peers *peers;
	msg_workers *workers;
	pl_outbox_relay *relay;
	pl_rpc_client *analytics;
	// config
	int64_t inbox_workers, reply_workers, delivery_workers;
	int64_t retry_base_ms, retry_max_ms, max_attempts;
	int64_t send_timeout_ms, send_rate, poll_ms, window_ms;
	int64_t lease_ms; // inbox and reply claims (a dead worker's work waits
	                  // this long)
	int64_t batch;    // rows a worker claims at once (each stage)
	int64_t cache_ms; // channel credentials and messaging settings
	int64_t call_threads;  // agent/billing/provider calls in flight
	int64_t inbox_keep_ms; // processed bodies kept this long (0: for ever)
	int64_t inbox_pruned_ns; // last prune (pl_now_ns), under mu
	// wakes the workers when work arrives in this process
	pthread_mutex_t mu;
	pthread_cond_t cv;
	uint64_t kick;
	// per worker kind (msg_work): only the kind that has work is woken
	pthread_cond_t cvk[3];
	uint64_t kickk[3];
	// workers of the kind inside a round, and the kicks since one of them
	// last began one (messaging_kick_kind): another worker is woken only
	// when none is at work or that backlog is large
	int busy[3];
	uint64_t unclaimed[3];
} msg_service;

typedef enum msg_work {
	MSG_WORK_INBOX = 0,
	MSG_WORK_REPLY = 1,
	MSG_WORK_DELIVERY = 2,
} msg_work;

// Wakes every worker (work of any kind arrived in this process).
void messaging_kick(msg_service *s);
// Wakes the workers of one kind.
void messaging_kick_kind(msg_service *s, msg_work kind);

int messaging_workers_start(msg_service *s);
void messaging_workers_stop(msg_service *s);

// One pass of each worker kind on the caller's connection (tests, bench):
// returns the number of rows handled.
int messaging_inbox_once(msg_service *s, pl_db *db, pl_httpc *http,
                         pl_arena *a);
int messaging_reply_once(msg_service *s, pl_db *db, pl_httpc *http,
                         pl_arena *a);
int messaging_deliver_once(msg_service *s, pl_db *db, pl_httpc *http,
                           pl_arena *a);

// ---------------------------------------------------------------------------
// Store (store.c): every SQL statement. Rows come back as protobuf messages
// in the arena.

typedef Parley__Messaging__V1__Contact msg_contact_pb;
typedef Parley__Messaging__V1__Conversation msg_conv_pb;
typedef Parley__Messaging__V1__Message msg_message_pb;

// Inbox. senders_json: the body's senders, a JSON array of strings (the
// inbox keeps one sender's bodies in arrival order; NULL: none).
int messaging_store_inbox_add(pl_db *db, const char *tenant_id,
                              const char *channel_id, const char *channel_type,
                              const uint8_t *body, size_t len,
                              const char *source_ip, const char *senders_json,
                              char id_out[40], bool *duplicate);

typedef struct msg_inbox_row {
	char tenant_id[40], id[40], channel_id[40];
	int channel_type;
	uint8_t *body; // arena
	size_t len;
} msg_inbox_row;

// Claims the oldest due inbox row under a lease; 1 claimed, 0 none, <0
// error status negated.
int messaging_store_inbox_claim(pl_db *db, int64_t lease_ms, pl_arena *a,
                                msg_inbox_row *row);
int messaging_store_inbox_done(pl_db *db, const msg_inbox_row *row,
                               const char *error);

// Deletes up to limit processed inbox rows received more than keep_ms ago;
// returns how many, or an error status negated.
int messaging_store_inbox_prune(pl_db *db, int64_t keep_ms, int limit);
int messaging_store_retention_prune(pl_db *db, int64_t keep_ms, int limit);

// The inbox batch, inside the caller's transaction (opened with tenant
// "*"): locks up to max due rows, oldest first (SKIP LOCKED; the locks are
// the lease). *rows in the arena.
int messaging_store_inbox_lock_batch(pl_db *db, int max, pl_arena *a,
                                     msg_inbox_row **rows, size_t *n);
// Sets the transaction's tenant (row-level security).
int messaging_store_tx_tenant(pl_db *db, const char *tenant_id);

// Phase A of an inbound message: contact, conversation, message, event, all
// in one transaction. duplicate: the provider id was seen (nothing new).
typedef struct msg_ingest {
	const char *tenant_id;
	const char *channel_id;
	int channel_type;
	const char *agent_id; // the channel's agent, for new conversations
	const msg_item *item;
	bool reply_wanted; // reply_state pending (else done)
} msg_ingest;

int messaging_store_ingest(pl_db *db, const msg_ingest *in, pl_arena *a,
                           msg_message_pb **msg, bool *duplicate);

// What the batch made of one message item (statuses leave it zeroed).
typedef struct msg_ingested {
	char message_id[40], conversation_id[40], contact_id[40];
	bool duplicate;
	bool keyword; // engage_on_inbound was run for it
	// Claimed for its bot turn by the insert itself (claim_lease_ms > 0;
	// migration 023): nothing was pending before it in its conversation.
	bool claimed;
	// Claimed, and a new customer's first message (the contact and the
	// conversation this batch made): what the turn needs came with it;
	// owner "bot", no language and no history, as new rows have. Other
	// claimed messages read it with messaging_store_reply_context_tx.
	bool context;
	char created_at[40], agent_id[40];
	char contact_name[256], contact_phone[MSG_PHONE_MAX];
} msg_ingested;

// Items (messages and statuses, in arrival order, any tenants) and the
// inbox rows they came from (marked done, with errors[i] when not NULL), in
// ONE statement (messaging.ingest_batch), inside the caller's transaction;
// opt-out keywords then go through engage_on_inbound in the same
// transaction. With claim_lease_ms > 0, a new message whose conversation
// has nothing pending before it, and that is not a possible keyword, is
// claimed for its bot turn under that lease as it is inserted
// (out[i].claimed); 0 claims nothing. out has n entries.
int messaging_store_ingest_batch_tx(pl_db *db, const msg_ingest *in, size_t n,
                                    const msg_inbox_row *rows,
                                    const char *const *errors, size_t nrows,
                                    int64_t claim_lease_ms, pl_arena *a,
                                    msg_ingested *out);

// Applies a status forward-only, or keeps it when the id is unknown.
int messaging_store_apply_status(pl_db *db, const char *tenant_id,
                                 const char *channel_id, const msg_item *st,
                                 pl_arena *a, bool *applied, bool *deferred,
                                 msg_message_pb **msg);

// Reply worker: claims the oldest pending inbound message whose
// conversation has no earlier pending one.
typedef struct msg_pending {
	char tenant_id[40], message_id[40], conversation_id[40], channel_id[40],
	        contact_id[40];
	char provider_message_id[256];
	char owner[8];
	char agent_id[40];
	char contact_name[256], contact_phone[MSG_PHONE_MAX],
	        contact_language[36];
	char *text; // arena
	char created_at[40];
	// Recent turns of the conversation before it, oldest first (arena).
	Parley__Agents__V1__HistoryTurn **history;
	size_t n_history;
} msg_pending;

int messaging_store_reply_retry_in(pl_db *db, const char *tenant_id,
                                   const char *message_id, int64_t ms);
// Claims up to max pending messages (each the oldest pending one of its
// conversation) under a lease, with up to `history` turns each: one
// statement, its own transaction. *out in the arena.
int messaging_store_reply_claim_batch(pl_db *db, int max, int64_t lease_ms,
                                      int history, pl_arena *a,
                                      msg_pending **out, size_t *n);

typedef struct msg_reply_result {
	const char *outcome; // "replied", "handoff", "human_owned", ...
	const char *text;    // the reply; NULL: none
	const char *agent_id;
	bool handoff;
	const char *handoff_reason;
	const char *metadata_json; // captured lead, proposed actions, intent
	const char *limit_why;     // quota refusal
} msg_reply_result;

// Claims, in the caller's transaction, those of the k messages just
// ingested (tenants[i], ids[i]) that reply_claim_batch would take (the
// oldest pending of its conversation, not leased), with the same lease and
// history. *out in the arena.
int messaging_store_reply_claim_ids_tx(pl_db *db, const char *const *tenants,
                                       const char *const *ids, size_t k,
                                       int64_t lease_ms, int history,
                                       pl_arena *a, msg_pending **out,
                                       size_t *n);
// What the bot turns of k messages ingest_batch claimed need (as
// reply_claim_ids answers it, without claiming), in the caller's
// transaction. *out in the arena.
int messaging_store_reply_context_tx(pl_db *db, const char *const *tenants,
                                     const char *const *ids, size_t k,
                                     int history, pl_arena *a,
                                     msg_pending **out, size_t *n);

// The tenant's reply_burst_window_ms (0: off, or no settings row).
int messaging_store_burst_window(pl_db *db, const char *tenant_id,
                                 int64_t *window_ms);
// The pending messages of head's conversation that arrived within
// window_ms after it (up to max, oldest first; texts in the arena).
int messaging_store_reply_burst(pl_db *db, const msg_pending *head,
                                int64_t window_ms, pl_arena *a, char (*ids)[40],
                                char **texts, size_t max, size_t *n);
// Hands back to the bot up to max conversations whose person has been
// inactive for the tenant's auto_handback_minutes; *n: how many.
int messaging_store_handback_due(pl_db *db, int max, int *n);

struct msg_delivery;

// Finishes n bot turns in one transaction (one statement unless the
// engagement hooks have leads or actions to record): each reply stored and
// queued, handoffs applied, events, the inbound messages marked done (a
// message finished before is left alone). reply_ids[i]: the queued reply's
// id or "". With claimed (n entries) each reply's delivery is claimed for
// the caller under lease_ms (attempt 1) and claimed[i] says what to send
// (id "" when nothing was queued); else the delivery workers send it.
int messaging_store_reply_finish_batch(pl_db *db, msg_pending *const *pd,
                                       const msg_reply_result *rr, size_t n,
                                       int64_t lease_ms, pl_arena *a,
                                       char (*reply_ids)[40],
                                       struct msg_delivery *claimed);

// Delivery.
typedef struct msg_delivery {
	char tenant_id[40], id[40], message_id[40], channel_id[40],
	        conversation_id[40];
	int attempts;
	int type;
	char *text, *media_url;
	char to[256];
	int to_kind;
} msg_delivery;

// Claims up to max due deliveries, oldest first, with what to send, under
// a lease of lease_ms: one statement, its own transaction.
int messaging_store_delivery_claim_batch(pl_db *db, int max, int64_t lease_ms,
                                         pl_arena *a, msg_delivery **out,
                                         size_t *n);

typedef enum msg_delivery_outcome {
	MSG_DELIVERY_SENT = 0,   // provider_id: statuses kept for it applied
	MSG_DELIVERY_RETRY = 1,  // next attempt in delay_ms, text = last error
	MSG_DELIVERY_FAILED = 2, // the provider's code and text
} msg_delivery_outcome;

typedef struct msg_delivery_result {
	int kind; // msg_delivery_outcome
	const char *provider_id;
	int64_t delay_ms;
	const char *code, *text;
} msg_delivery_result;

// Records n results in one statement (its own transaction).
int messaging_store_delivery_done_batch(pl_db *db, const msg_delivery *d,
                                        const msg_delivery_result *res,
                                        size_t n);

// Outbound message from a person or the API: stored QUEUED with a delivery.
typedef struct msg_outbound {
	const char *tenant_id;
	const char *conversation_id;
	const char *sender; // "human", "system"
	const char *user_id;
	int type;
	const char *text;
	const char *media_url;
	const char *media_mime_type;
	const char *metadata_json;
	const char *idempotency_key;
	bool take_over; // a person's reply on a bot conversation takes it
	bool check_window;
} msg_outbound;

int messaging_store_send(pl_call *call, pl_db *db, const msg_outbound *o,
                         msg_message_pb **msg, msg_conv_pb **conv);

// Reads.
int messaging_store_get_conversation(pl_call *call, pl_db *db,
                                     const char *tenant_id, const char *id,
                                     msg_conv_pb **out);
int messaging_store_get_contact(pl_call *call, pl_db *db, const char *tenant_id,
                                const char *id, msg_contact_pb **out);
int messaging_store_get_message(pl_call *call, pl_db *db, const char *tenant_id,
                                const char *id, msg_message_pb **out);

// Conversation state changes: op is "takeover", "handback", "state",
// "close", "reopen".
typedef struct msg_conv_change {
	const char *op;
	const char *user_id;
	const char *stage, *intent_level, *sentiment; // NULL: leave
} msg_conv_change;

int messaging_store_conv_change(pl_call *call, pl_db *db, const char *tenant_id,
                                const char *id, const msg_conv_change *c,
                                msg_conv_pb **out);

typedef struct msg_conv_filter {
	const char *status, *owner, *assigned, *stage, *channel, *contact,
	        *agent, *intent, *sentiment;
	bool unassigned;
} msg_conv_filter;

int messaging_store_list_conversations(pl_call *call, pl_db *db,
                                       const char *tenant_id,
                                       const msg_conv_filter *f,
                                       const char *after, int limit,
                                       msg_conv_pb ***out, size_t *n,
                                       char **next);

int messaging_store_list_messages(pl_call *call, pl_db *db,
                                  const char *tenant_id, const char *conv_id,
                                  bool newest_first, const char *after,
                                  int limit, msg_message_pb ***out, size_t *n,
                                  char **next);

typedef struct msg_contact_filter {
	const char *channel, *tag, *phone_a, *phone_b, *query;
	int opt_out;
} msg_contact_filter;

int messaging_store_list_contacts(pl_call *call, pl_db *db,
                                  const char *tenant_id,
                                  const msg_contact_filter *f,
                                  const char *after, int limit,
                                  msg_contact_pb ***out, size_t *n,
                                  char **next);

typedef struct msg_contact_in {
	const char *channel_id;
	const char *external_id;
	const char *kind;
	const char *phone, *phone_raw;
	const char *name, *language;
	const char *tags_literal;  // text[] literal, NULL: leave
	const char *custom_fields; // JSON object, NULL: leave
	int opted_out;             // -1 leave, 0 clear, 1 set
	bool set_name, set_language;
} msg_contact_in;

int messaging_store_create_contact(pl_call *call, pl_db *db,
                                   const char *tenant_id,
                                   const msg_contact_in *c,
                                   msg_contact_pb **out);
int messaging_store_update_contact(pl_call *call, pl_db *db,
                                   const char *tenant_id, const char *id,
                                   const msg_contact_in *c,
                                   msg_contact_pb **out);

// Web chat.
int messaging_store_webchat_start(pl_call *call, pl_db *db,
                                  const char *tenant_id, const char *channel_id,
                                  const char *agent_id,
                                  const char *visitor_name, const char *domain,
                                  const char *ip, char session_id[40],
                                  char **token, msg_conv_pb **conv,
                                  char **expires);
// Finds the session behind a token ("<session id>.<secret>"), checking
// the secret in constant time. PL_UNAUTHENTICATED when it does not match.
int messaging_store_webchat_session(pl_call *call, pl_db *db,
                                    const char *channel_id, const char *token,
                                    char tenant_id[40], char contact_id[40],
                                    char session_id[40]);

// Rows with id > cursor of the contact's conversations, oldest first.
int messaging_store_webchat_poll(pl_call *call, pl_db *db,
                                 const char *tenant_id, const char *contact_id,
                                 const char *cursor, int limit,
                                 msg_message_pb ***out, size_t *n);

// One waiting long-poll of PollWebchatBatch: channel_id, token and cursor
// in; code (PL_OK, PL_UNAUTHENTICATED for a token that is not valid or
// has expired, PL_INVALID_ARGUMENT for a bad cursor), the session's
// tenant and contact, and whether a message is there after the cursor,
// out.
typedef struct msg_wc_wait {
	const char *channel_id, *token, *cursor;
	int code;
	bool ready;
	char tenant_id[40], contact_id[40];
} msg_wc_wait;

// Checks n waiting polls' sessions and finds which have news: two
// statements whatever n.
int messaging_store_webchat_ready(pl_call *call, pl_db *db, msg_wc_wait *w,
                                  size_t n);

// A cursor (base64url of text) and back.
char *messaging_cursor_encode(pl_arena *a, const char *s);
char *messaging_cursor_decode(pl_arena *a, const char *tok);

// ---------------------------------------------------------------------------
// Legacy import (import.c, issue 10): the bulk RPCs, idempotent by legacy id.

int messaging_import_contacts(pl_call *call, const void *in, void *out);
int messaging_import_conversations(pl_call *call, const void *in, void *out);
int messaging_import_orders(pl_call *call, const void *in, void *out);
int messaging_import_campaigns(pl_call *call, const void *in, void *out);
int messaging_import_summary(pl_call *call, const void *in, void *out);

#endif
