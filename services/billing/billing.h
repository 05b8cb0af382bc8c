// The billing service's internal header (issue 4): plans, subscriptions,
// atomic quota reservation, invoices, signed payment webhooks.
#ifndef BILLING_H
#define BILLING_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <libpq-fe.h>

#include "parley/billing/v1/billing.pb-c.h"
#include "pl/migrate.h"
#include "pl/outbox.h"
#include "pl/service.h"
#include "pl/wake.h"

extern const pl_service_def billing_service_def;

// How many files migrations/ holds (the definition needs a constant).
#include "billing_migrations.h" // BILLING_N_MIGRATIONS
extern const pl_migration billing_migrations[];
extern const size_t billing_n_migrations;

typedef Parley__Billing__V1__Plan billing_plan;
typedef Parley__Billing__V1__Subscription billing_sub;
typedef Parley__Billing__V1__Invoice billing_invoice;
typedef Parley__Billing__V1__InvoiceLine billing_line;

// ---------------------------------------------------------------------------
// period.c: time, periods, money. Pure functions, no SQL, no sockets.

#define BILLING_DAY_S 86400LL

// Days since 1970-01-01 of a proleptic Gregorian date, and back.
int64_t billing_days_from_civil(int y, int m, int d);
void billing_civil_from_days(int64_t days, int *y, int *m, int *d);

// Days in month m (1..12) of year y.
int billing_month_days(int y, int m);

// 00:00 UTC of the day holding t (Unix seconds; negative ones too).
int64_t billing_day_start(int64_t t);

// The anchor day (Unix seconds at 00:00 UTC) plus k months, the day
// clamped to the target month's last day: Jan 31 + 1 = Feb 28/29,
// Jan 31 + 2 = Mar 31 (always counted from the anchor, never chained).
int64_t billing_add_months(int64_t anchor_day, int k);

// The billing month [*start, *end) holding t, for a subscription anchored
// on anchor_day (00:00 UTC of its start day).
void billing_month_period(int64_t anchor_day, int64_t t, int64_t *start,
                          int64_t *end);

// round_half_up(amount * num / den) for amount >= 0, 0 <= num <= den,
// den > 0, computed without overflow. Returns -1 on bad arguments.
int64_t billing_prorate(int64_t amount, int64_t num, int64_t den);

// Overage charge of units at price_per_1000 (minor units per 1,000),
// rounded half up; -1 when either is negative or the result overflows.
int64_t billing_overage_charge(int64_t units, int64_t price_per_1000);

// The fee of one billing month: price for monthly plans, price / 12
// rounded half up for yearly ones (billed in twelve monthly parts).
int64_t billing_period_fee(int64_t price_minor, int interval);

// True for the ISO 4217 codes billing accepts (upper case).
bool billing_currency_valid(const char *code);

// Metric enum <-> the names in SQL ("messages", "campaigns", "ai_tokens");
// NULL / -1 for unknown.
const char *billing_metric_name(int metric);
int billing_metric_parse(const char *name);

// Subscription status enum <-> SQL text.
const char *billing_status_name(int status);
int billing_status_parse(const char *name);

// RFC 3339 ("2026-11-22T13:20:00.123Z", any offset) -> Unix milliseconds.
// Returns false on anything else.
bool billing_parse_time(const char *s, int64_t *ms);

// The wall clock in Unix milliseconds.
int64_t billing_now_ms(void);

// Unix milliseconds -> "2026-11-22T13:20:00.123Z" (out: 32 bytes).
void billing_format_time(int64_t ms, char out[32]);

// ---------------------------------------------------------------------------
// sig.c: payment webhook signatures ("t=<unix>,v1=<hex>[,v1=<hex>...]").

#define BILLING_SIG_TOLERANCE_S 300
#define BILLING_SIG_MAX_V1      8

typedef enum billing_sig_result {
	BILLING_SIG_OK = 0,
	BILLING_SIG_MISSING,   // no header, or an empty one
	BILLING_SIG_MALFORMED, // no t=, no v1=, bad hex, junk
	BILLING_SIG_STALE,     // |now - t| > tolerance
	BILLING_SIG_MISMATCH,  // no v1 matches
} billing_sig_result;

typedef struct billing_sig {
	int64_t t;
	uint8_t v1[BILLING_SIG_MAX_V1][32];
	int n_v1;
} billing_sig;

// Parses a header value; BILLING_SIG_OK or MISSING / MALFORMED.
billing_sig_result billing_sig_parse(const char *header, billing_sig *out);

// Computes HMAC-SHA256(secret, "<t>.<body>") into mac.
void billing_sig_mac(const char *secret, int64_t t, const uint8_t *body,
                     size_t len, uint8_t mac[32]);

// Verifies header against body at time now (Unix seconds): parse, window,
// then a constant-time comparison with every v1 given.
billing_sig_result billing_sig_verify(const char *header, const uint8_t *body,
                                      size_t len, const char *secret,
                                      int64_t now, int64_t tolerance);

// Writes a header value for body signed at t (tests and tools); out must
// hold 96 bytes.
void billing_sig_sign(const char *secret, int64_t t, const uint8_t *body,
                      size_t len, char out[96]);

// UpdatePlan mask bits (handlers.c parses the names).
enum {
	BILLING_M_NAME = 1u << 0,
	BILLING_M_DESC = 1u << 1,
	BILLING_M_PRICE = 1u << 2,
	BILLING_M_TRIAL = 1u << 3,
	BILLING_M_PUBLIC = 1u << 4,
	BILLING_M_DEFAULT = 1u << 5,
	BILLING_M_ARCHIVED = 1u << 6,
	BILLING_M_LIMITS = 1u << 7,
	BILLING_M_FEATURES = 1u << 8,
	BILLING_M_OVERAGE = 1u << 9,
};

// Short names for the generated enums.
#define BILLING_ST(x)                                                          \
	PARLEY__BILLING__V1__SUBSCRIPTION_STATUS__SUBSCRIPTION_STATUS_##x
#define BILLING_IV(x) PARLEY__BILLING__V1__INVOICE_STATUS__INVOICE_STATUS_##x
#define BILLING_LK(x)                                                          \
	PARLEY__BILLING__V1__INVOICE_LINE_KIND__INVOICE_LINE_KIND_##x
#define BILLING_BI(x)                                                          \
	PARLEY__BILLING__V1__BILLING_INTERVAL__BILLING_INTERVAL_##x

// ---------------------------------------------------------------------------
// reserve.c: ReserveUsage in batches (group commit).

typedef struct billing_reserve_result {
	char outcome[24]; // ok, exhausted, conflict, no_subscription, inactive
	char reservation_id[40];
	int64_t remaining_day, remaining_month, overage;
	bool replayed;
	char refusal[40];
	int64_t day_limit, month_limit;
} billing_reserve_result;

// One ReserveUsage waiting for its answer. The caller fills tenant (a
// valid uuid), metric (a name from billing_metric_name), amount and key;
// rc (PL_OK or the store's error) and res come back.
typedef struct billing_reserve_item {
	const char *tenant;
	const char *metric;
	const char *key;
	int64_t amount;
	int rc;
	billing_reserve_result res;
	// The batcher's, under its mutex.
	struct billing_reserve_item *next;
	pl_wake *wake; // its caller's, posted after the mutex is let go
	bool done;
	struct billing_lease *lease;     // admitted under it (lease.c)
	struct billing_lease_slot *slot; // waiting for a lease grant
} billing_reserve_item;

// A share of a (tenant, metric)'s day and month units granted to this
// replica (lease.c, migration 005).
typedef struct billing_lease {
	struct billing_lease *next; // on the batcher's retired list
	char tenant[40];
	char id[40];
	char metric[16];
	int64_t units, left;
	// At the grant: the limits (-1 none) and the counters, the lease's
	// units included (day_used -1: a month-only metric).
	int64_t day_limit, month_limit, day_used, month_used;
	int64_t deadline; // CLOCK_MONOTONIC ns: not used from then on
	int inflight;     // items of running batches admitted under it
} billing_lease;

// Gathers concurrent ReserveUsage calls: a call that finds no batch
// running leads one with every call queued (up to max_batch, itself
// included) on its own connection; the others sleep until their answer is
// there, and the first of those still queued leads the next batch.
typedef struct billing_batcher {
	pthread_mutex_t mtx;
	billing_reserve_item *head, *tail;
	int running;     // batches being run now
	int max_running; // 1: one batch at a time per replica
	int max_batch;   // 1: no batching (the one-call path, 002)
	bool emit;       // usage.refused to analytics (outbox)
	uint64_t batches, items, fallbacks; // counters, under mtx

	// Leases (lease.c), under mtx. lease_ttl_ms 0: none.
	int64_t lease_ttl_ms;
	int lease_min_rate; // calls a second before a pair gets leases
	struct billing_lease_slot **buckets;
	size_t nslots;
	billing_lease *retired; // waiting for inflight 0, then returned
	char owner[96];
	char *database_url;
	pthread_t keeper;
	pthread_cond_t keeper_cv;
	// Return statements running (return_ready); returned_cv is signalled
	// when the last ends, for billing_leases_flush to wait on.
	int returning;
	pthread_cond_t returned_cv;
	bool keeper_on, keeper_stop;
	uint64_t leased, grants, grants_refused, returns; // counters
} billing_batcher;

#define BILLING_MAX_BATCH 256

void billing_batcher_init(billing_batcher *b, int max_batch, int max_running,
                          bool emit);
void billing_batcher_fini(billing_batcher *b);

// Decides item through b (db: the caller's own connection, used when the
// caller leads a batch). Returns item->rc.
int billing_reserve(billing_batcher *b, pl_db *db, billing_reserve_item *item);

// Decides items[0..n) through b, queued together (in one batch when they
// fit): what ReserveUsageBatch runs. Each item's rc and res come back.
void billing_reserve_n(billing_batcher *b, pl_db *db,
                       billing_reserve_item *const *items, size_t n);

// PostgreSQL array literals for the batch statements (reserve.c): a
// growing buffer, NUL-terminated; oom set (and nothing more appended) when
// out of memory.
typedef struct billing_sbuf {
	char *p;
	size_t len, cap;
	bool oom;
} billing_sbuf;

void billing_sb_put(billing_sbuf *b, const char *s, size_t n);
void billing_sb_str(billing_sbuf *b, const char *s);
// An element of a text[]/uuid[] literal: quoted, '"' and '\\' escaped.
void billing_sb_elem(billing_sbuf *b, const char *s);
void billing_sb_int(billing_sbuf *b, int64_t v);

// lease.c: counter leases (README "Leases"). billing_leases_init keeps
// database_url for the keeper thread (started with the first lease: it
// retires expired leases and returns them); ttl_ms 0 turns leases off.
int billing_leases_init(billing_batcher *b, const char *database_url,
                        int64_t ttl_ms, int min_rate);
// Stops the keeper, which returns every lease first.
void billing_leases_fini(billing_batcher *b);

// The leader's part: admits what it can of items[0..n) under leases
// (asking for leases where a pair is busy enough), writes their answers
// with billing.reserve_leased and sets their rc and res; the others are
// put in exact[] (*nexact) to be decided against the counters (retired
// leases no batch holds are returned first, so that their units count).
void billing_leases_run(billing_batcher *b, pl_db *db,
                        billing_reserve_item *const *items, size_t n,
                        billing_reserve_item **exact, size_t *nexact);

// Retires the leases of tenant (NULL: all) so that the next call asks
// the database again (a plan or subscription change).
void billing_leases_forget(billing_batcher *b, const char *tenant);

// Units of (tenant, metric) leased to this replica and not used yet.
int64_t billing_leases_unused(billing_batcher *b, const char *tenant,
                              const char *metric);

// Retires the leases of tenant (NULL: all) and returns those no batch
// holds, on db; then waits for the returns other threads (the keeper, a
// batch's leader) have under way, so that the counters read after it no
// longer hold the units of a lease this replica already gave up.
void billing_leases_flush(billing_batcher *b, pl_db *db, const char *tenant);

// Decides n items (n <= BILLING_MAX_BATCH) with one call of
// billing.reserve_batch (003), in their order, as if called one after
// another; sets every item's rc and res. A batch the database refuses as a
// whole (an error in one item) is decided again item by item with
// billing_store_reserve, so only that item fails. Returns the number of
// items that were decided one by one (0 normally).
int billing_store_reserve_batch(pl_db *db, billing_reserve_item *const *items,
                                size_t n, bool emit);

// ---------------------------------------------------------------------------
// The service's state (call->arg).

typedef struct billing_state {
	char *database_url;
	char *webhook_secret; // "" = payment webhooks refused
	int64_t grace_days;
	int64_t job_interval_ms;
	int64_t reservation_ttl_days;
	const char *dest_analytics[2]; // outbox destinations, NULL-ended
	const char *dest_tenants[3];
	bool emit_analytics;
	pl_rpc_client *analytics; // NULL: integration off
	pl_rpc_client *tenants;
	pl_outbox_relay *relay;
	struct billing_jobs *jobs;
	billing_batcher batcher;
} billing_state;

// ---------------------------------------------------------------------------
// store.c: every SQL statement.

// One reservation alone: billing.reserve_usage (002), then
// billing.reserve_replay for a used key.
int billing_store_reserve(pl_db *db, const char *tenant, const char *metric,
                          int64_t amount, const char *key, bool emit,
                          billing_reserve_result *out);

// Fills out from row `row` of r, columns col..col+8 (outcome,
// reservation_id, remaining_day, remaining_month, overage, replayed,
// refusal, day_limit, month_limit).
void billing_reserve_row(const PGresult *r, int row, int col,
                         billing_reserve_result *out);

// Runs sql prepared as `name` (a literal) on db's connection.
PGresult *billing_exec_prepared(pl_db *db, const char *name, const char *sql,
                                int n, const char *const *params);

int billing_store_release(pl_db *db, const char *tenant, const char *key,
                          int64_t amount, bool *found, int64_t *released,
                          int64_t *remaining);

// Plans.
int billing_store_plan_create(pl_call *call, pl_db *db,
                              const Parley__Billing__V1__CreatePlanRequest *in,
                              billing_plan **out);
int billing_store_plan_update(pl_call *call, pl_db *db,
                              const Parley__Billing__V1__UpdatePlanRequest *in,
                              unsigned mask, billing_plan **out);
int billing_store_plan_by_code(pl_call *call, pl_db *db, const char *code,
                               billing_plan **out);
int billing_store_plans_list(pl_call *call, pl_db *db, bool internal,
                             bool archived, const char *after_code, int limit,
                             billing_plan ***out, size_t *n);

// Subscriptions. *out NULL when the tenant has none (PL_OK).
// *anchor_ms: 00:00 UTC of the day monthly periods are anchored on.
int billing_store_sub_get(pl_call *call, pl_db *db, const char *tenant,
                          billing_sub **sub, billing_plan **plan,
                          int64_t *anchor_ms);

// Usage of the metered metrics for the day [day_start, ...) and the month
// starting at month_start (Unix seconds).
int billing_store_usage(pl_call *call, pl_db *db, const char *tenant,
                        int64_t day_start, int64_t month_start,
                        Parley__Billing__V1__UsageCounts *used);

typedef struct billing_change_req {
	const char *tenant;
	const char *plan_code;
	const char *actor;
	bool dry_run;
	bool may_internal;
	int64_t now_ms;
	// results
	billing_sub *sub;
	billing_plan *plan;
	billing_line *lines[2];
	size_t n_lines;
	int64_t proration;
	char currency[8];
} billing_change_req;
int billing_store_change_plan(pl_call *call, pl_db *db, billing_state *st,
                              billing_change_req *req);

int billing_store_cancel(pl_call *call, pl_db *db, billing_state *st,
                         const char *tenant, const char *actor,
                         bool at_period_end, const char *reason,
                         billing_sub **out);
int billing_store_resume(pl_call *call, pl_db *db, billing_state *st,
                         const char *tenant, const char *actor,
                         billing_sub **out);

int billing_store_history(pl_call *call, pl_db *db, const char *tenant,
                          const char *before_id, int limit,
                          Parley__Billing__V1__SubscriptionChange ***out,
                          size_t *n);

// Closes every period of the tenant's subscription that ended at or before
// at_ms, issuing one invoice per period; appends them to *out.
// billing.lease_reap (005): gives back what the leases expired more than
// grace_ms ago (tenant's only, unless NULL) did not use. Returns how many,
// or -1.
int billing_store_reap_leases(pl_db *db, const char *tenant, int64_t grace_ms);

int billing_store_close(pl_call *call, pl_db *db, billing_state *st,
                        const char *tenant, int64_t at_ms,
                        billing_invoice ***out, size_t *n, size_t *cap);

// Tenants whose current period ended at or before at_ms (service-level:
// crosses tenants).
int billing_store_due_tenants(pl_db *db, pl_arena *a, int64_t at_ms,
                              char ***out, size_t *n);

// Past-due subscriptions beyond grace: marks them and emits
// subscription.grace_expired. Returns the count or -1.
int billing_store_grace_sweep(pl_db *db, billing_state *st, int64_t at_ms);

// Deletes reservations older than ttl_days. Returns the count or -1.
int billing_store_prune_reservations(pl_db *db, int64_t ttl_days);

int billing_store_invoices_list(pl_call *call, pl_db *db, const char *tenant,
                                const char *status, int64_t before_number,
                                int limit, billing_invoice ***out, size_t *n);
int billing_store_invoice_get(pl_call *call, pl_db *db, const char *tenant,
                              const char *id, billing_invoice **out);

typedef struct billing_payment {
	const char *event_id;
	const char *type;
	const char *tenant_id;  // may be NULL
	const char *invoice_id; // may be NULL
	const char *provider_invoice_id;
	const char *provider_customer_id;     // may be NULL
	const char *provider_subscription_id; // may be NULL
	const char *payload;
	int64_t signed_at;
	bool duplicate;
	bool applied;
} billing_payment;
int billing_store_payment_event(pl_call *call, pl_db *db, billing_state *st,
                                billing_payment *ev);

typedef struct billing_delivered {
	const char *id;
	const char *tenant_id;
	const char *type;
	const char *plan_code; // tenant.created: may be NULL/empty
} billing_delivered;
int billing_store_deliver(pl_call *call, pl_db *db, billing_state *st,
                          const billing_delivered *evs, size_t n, int *accepted,
                          int *dups, int *ignored);

// ---------------------------------------------------------------------------
// jobs.c: the periodic job (closing periods, grace sweep, pruning).

// One pass at at_ms on db; returns the number of invoices issued or -1.
// One round of closes (the periodic job's, and CloseBillingPeriod's for
// every tenant, which runs rounds until one closes nothing): the
// subscriptions due at at_ms (at most 1,000, earliest periods first), each
// closed in its own transaction, their invoices appended to *inv. One
// tenant's failure is logged and does not stop the others: *failed counts
// the failures, *first_rc and *first (in call's arena) name the first.
// Returns how many were closed, or -1 when the due list could not be read
// (the call's error says so).
int billing_close_round(pl_call *call, pl_db *db, billing_state *st,
                        int64_t at_ms, billing_invoice ***inv, size_t *n_inv,
                        size_t *cap, size_t *failed, int *first_rc,
                        const char **first);
int billing_jobs_run_once(pl_db *db, billing_state *st, int64_t at_ms);

int billing_jobs_start(billing_state *st);
void billing_jobs_stop(billing_state *st);

#endif
