// The analytics service (issue 8): de-duplicated event intake into
// monthly partitions, rollups in the tenant's time zone, KPI queries.
#ifndef ANALYTICS_H
#define ANALYTICS_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "parley/analytics/v1/analytics.pb-c.h"
#include "parley/rpc/v1/event.pb-c.h"
#include "pl/db.h"
#include "pl/migrate.h"
#include "pl/rpc.h"
#include "pl/service.h"

extern const pl_service_def analytics_service_def;
extern const pl_rpc_service analytics_rpc_service;
extern const pl_migration analytics_migrations[];
extern const size_t analytics_n_migrations;

typedef Parley__Rpc__V1__Event analytics_event_pb;
typedef Parley__Analytics__V1__Kpis analytics_kpis_pb;

#include "analytics_migrations.h" // ANALYTICS_N_MIGRATIONS
#define ANALYTICS_MAX_BATCH      5000
#define ANALYTICS_MAX_PAYLOAD    65536
#define ANALYTICS_FUTURE_US      (5LL * 60 * 1000000)
#define ANALYTICS_MAX_LABEL      200
#define ANALYTICS_MAX_RANGE_DAYS 366
#define ANALYTICS_MAX_HOUR_DAYS  31

// The service's state: config and the periodic job.
typedef struct analytics_state {
	char *database_url;
	int64_t job_interval_ms;
	int64_t months_ahead;
	pthread_t job;
	bool job_running;
	bool stopping;
	pthread_mutex_t mu;
	pthread_cond_t cv;
} analytics_state;

// Time (metrics.c).

// Parses RFC 3339 ("2026-11-22T13:20:00.123Z", any offset) into Unix
// microseconds; false when s is not such a time.
bool analytics_time_parse(const char *s, int64_t *us);
// Writes the UTC form with microseconds (for SQL parameters), 32 bytes.
void analytics_time_format_us(int64_t us, char out[32]);
// Writes the contract's form: UTC, milliseconds, "Z", 32 bytes.
void analytics_time_format_ms(int64_t us, char out[32]);
int64_t analytics_now_us(void);
// The first day of the UTC month holding us, as days since 1970-01-01.
int32_t analytics_utc_month(int64_t us);

// Events (metrics.c).

// True for the event types of proto/README.md.
bool analytics_type_known(const char *type);

// One rollup increment.
typedef void (*analytics_emit_fn)(void *arg, const char *metric,
                                  const char *dim_key, const char *dim_value,
                                  int64_t value);

// The rollup increments one event makes: each metric as a total and per
// channel, agent and campaign it carries, plus its labels. payload may be
// NULL (treated as {}).
void analytics_map_event(const char *type,
                         const Parley__Rpc__V1__EventDimensions *dims,
                         json_t *payload, analytics_emit_fn emit, void *arg);

// A first response time carried by a message.sent event: kind "bot" or
// "human" and the milliseconds; false when the event carries none.
bool analytics_response_time(const char *type, json_t *payload,
                             const char **kind, int64_t *ms);

// Checks one event of a Track batch. On failure writes the field
// ("type", "payload") and a message and returns false. On success
// *payload is the parsed object (caller json_decref()s) and *us the time.
bool analytics_event_check(const analytics_event_pb *e, int64_t now_us,
                           json_t **payload, int64_t *us, const char **field,
                           char *msg, size_t msglen);

// Intake grouping (intake.c): what one batch adds, grouped in C.

// monthly_usage counters, in this order.
enum {
	ANALYTICS_MU_MESSAGES_IN,
	ANALYTICS_MU_MESSAGES_OUT,
	ANALYTICS_MU_CONVERSATIONS,
	ANALYTICS_MU_AI_REPLIES,
	ANALYTICS_MU_AI_TOKENS,
	ANALYTICS_MU_CAMPAIGN_SENT,
	ANALYTICS_MU_QUOTA_REFUSALS,
	ANALYTICS_MU_N
};

// Days are days since 1970-01-01; tenant is an index into the batch's
// tenants sorted by their 16 bytes (so index order is uuid order).
typedef struct analytics_roll {
	int32_t tenant, day;
	const char *metric, *dk, *dv;
	int64_t v;
} analytics_roll;

// The count metrics kept by hour (hourly_rollups' columns, in this order).
#define ANALYTICS_HOURLY_N 19
extern const char *const analytics_hourly_metrics[ANALYTICS_HOURLY_N];
// The column of a rollup metric name, or -1.
int analytics_hourly_index(const char *metric);

// The counters of one tenant-local hour. hour_q is the hour's start in
// quarter hours since 1970-01-01T00:00Z (local hours start on whole
// quarter hours of UTC in every zone since 2000).
typedef struct analytics_hour {
	int32_t tenant;
	int32_t hour_q;
	int64_t c[ANALYTICS_HOURLY_N];
} analytics_hour;

typedef struct analytics_contact {
	int32_t tenant, day;
	uint8_t contact[16];
} analytics_contact;

typedef struct analytics_month {
	int32_t tenant, month;
	int64_t c[ANALYTICS_MU_N];
} analytics_month;

typedef struct analytics_agg {
	pl_arena arena; // the rolls' strings
	analytics_roll *rolls;
	size_t n_rolls, cap_rolls;
	uint32_t *slots; // hash index over rolls (index + 1; 0 empty)
	size_t n_slots;
	analytics_contact *dc; // contacts per local day
	size_t n_dc, cap_dc;
	analytics_month *months;
	size_t n_months, cap_months;
	analytics_hour *hours;
	size_t n_hours, cap_hours;
	uint32_t *hslots; // hash index over hours (index + 1; 0 empty)
	size_t n_hslots;
	int32_t cur_tenant, cur_day, cur_hour_q;
	bool oom;
} analytics_agg;

void analytics_agg_init(analytics_agg *a);
void analytics_agg_reset(analytics_agg *a);
void analytics_agg_fini(analytics_agg *a);
// Adds one stored event: its rollup increments on its local day, its
// totals in its local hour (hour_q: the hour's start in quarter hours since
// the epoch), its contact (16 bytes, NULL if none) and its monthly usage.
void analytics_agg_event(analytics_agg *a, int32_t tenant, int32_t day,
                         int32_t hour_q, const char *type,
                         const Parley__Rpc__V1__EventDimensions *dims,
                         json_t *payload, const uint8_t *contact);
// Sorts rolls into write order, removes duplicate contacts, merges months.
// False when out of memory.
bool analytics_agg_finish(analytics_agg *a);
// The first day of the month holding day (days since 1970-01-01).
int32_t analytics_month_of_day(int32_t day);

// Metrics (metrics.c).

// The rollup metric behind a proto Metric ("messages_in"); NULL for
// UNSPECIFIED, unknown, and the computed ones (unique contacts, response
// times).
const char *analytics_metric_name(int metric);
// The rollup dim_key of a proto Dimension ("channel"); NULL if none.
const char *analytics_dimension_key(int dim);
// What TopN ranks a dimension by when no metric is given.
int analytics_dimension_default_metric(int dim);

// Sums by metric name: the KPIs' raw material.
typedef struct analytics_sums {
	size_t n, cap;
	char **names;
	int64_t *values;
} analytics_sums;

void analytics_sums_add(analytics_sums *s, const char *name, int64_t v);
int64_t analytics_sums_get(const analytics_sums *s, const char *name);
void analytics_sums_fini(analytics_sums *s);
// Emit callback adding the totals (dim_key "") or those of one dimension
// when arg's filter is set.
typedef struct analytics_sums_filter {
	analytics_sums *sums;
	const char *dim_key; // "" for totals
	const char *dim_value;
} analytics_sums_filter;
void analytics_sums_emit(void *arg, const char *metric, const char *dim_key,
                         const char *dim_value, int64_t value);

// Fills k's counters and rates from sums (money lists in arena).
void analytics_kpis_fill(analytics_kpis_pb *k, const analytics_sums *s,
                         pl_arena *arena);

// Store (store.c): every SQL statement.

// Stores a checked batch (all events, their parsed payloads and times) and
// updates the rollups; *accepted is what was new. Returns a status.
int analytics_store_track(pl_db *db, analytics_event_pb **ev, json_t **payloads,
                          const int64_t *us, size_t n, int *accepted,
                          pl_call *call);

// Makes partitions for this month and the next months_ahead; writes the
// created months ("2026-11") to created (NULL allowed). Returns a status.
int analytics_store_partitions_ahead(pl_db *db, int months_ahead,
                                     char ***created, size_t *n_created,
                                     pl_arena *arena);
int analytics_store_apply_retention(pl_db *db, bool dry_run, char ***detached,
                                    size_t *n, pl_arena *arena);
int analytics_store_get_retention(pl_db *db, int *months, char ***parts,
                                  size_t *n, pl_arena *arena);
int analytics_store_set_retention(pl_db *db, int months);

// Forgets the months known to have partitions (after retention).
void analytics_store_forget_partitions(void);

#endif

// Queries (store.c). Every function runs inside the caller's pl_db_tx for
// the tenant (row-level security) and also filters by tenant_id.

// A tenant's range and optional filter (NULL: none).
typedef struct analytics_range {
	const char *tenant_id;
	int64_t start_us, end_us;
	const char *channel_id, *agent_id, *campaign_id;
} analytics_range;

// The range cut at the tenant's local midnights: whole days [d0, d1)
// (has_days false when there is none) whose instants are [t0_us, t1_us);
// the rest ([start, t0) and [t1, end)) is read raw.
typedef struct analytics_split {
	char tz[80];
	bool has_days;
	char d0[16], d1[16];
	int64_t t0_us, t1_us;
} analytics_split;

int analytics_store_split(pl_db *db, const analytics_range *r,
                          analytics_split *s);

// One raw event as the raw scans hand it over.
typedef void (*analytics_raw_fn)(void *arg, int64_t bucket_us, const char *type,
                                 const Parley__Rpc__V1__EventDimensions *dims,
                                 json_t *payload);

// Scans raw events of [a0, b0) and [a1, b1) (empty when equal) with r's
// filter and, when types is not NULL, only those types; gran (NULL, "hour",
// "day", "week", "month") names the bucket handed to fn, in tz.
int analytics_store_raw(pl_db *db, const analytics_range *r, int64_t a0,
                        int64_t b0, int64_t a1, int64_t b1,
                        const char *types_literal, const char *gran,
                        const char *tz, analytics_raw_fn fn, void *arg);

// Rollup sums over whole days [d0, d1) for dim_key (and dim_value when not
// NULL), metrics in metrics_literal (NULL: all): fn(arg, dim_value,
// metric, sum).
typedef void (*analytics_row_fn)(void *arg, const char *dim_value,
                                 const char *metric, int64_t v);
int analytics_store_rollups(pl_db *db, const char *tenant_id,
                            const char *dim_key, const char *dim_value,
                            const char *d0, const char *d1,
                            const char *metrics_literal, analytics_row_fn fn,
                            void *arg);

// Unique contacts: whole days from daily_contacts, the rest raw.
int analytics_store_unique_contacts(pl_db *db, const analytics_range *r,
                                    const analytics_split *s, bool use_days,
                                    int64_t *out);

// First-response statistics over r, bot and human, in one statement.
int analytics_store_frt_both(pl_db *db, const analytics_range *r,
                             Parley__Analytics__V1__DurationStats *bot,
                             Parley__Analytics__V1__DurationStats *human);

// Bucket starts (Unix µs) of [start, end) by gran in tz.
int analytics_store_buckets(pl_db *db, const analytics_range *r,
                            const char *gran, const char *tz, int64_t **out,
                            size_t *n, pl_arena *arena);

// Per-bucket values from rollups (whole days, gran day/week/month),
// unique contacts (raw) and response-time medians.
typedef void (*analytics_point_fn)(void *arg, int64_t bucket_us, int64_t v);
int analytics_store_series_rollups(pl_db *db, const char *tenant_id,
                                   const char *dim_key, const char *dim_value,
                                   const char *d0, const char *d1,
                                   const char *metrics_literal,
                                   const char *gran, const char *tz,
                                   analytics_point_fn fn, void *arg);
// Hourly series from hourly_rollups: the sum of columns cols (indexes into
// analytics_hourly_metrics) for every whole tenant-local hour of the range
// that starts at or after rollup_epochs.hourly_from. [*a_us, *b_us) is
// what was served (equal when nothing); the rest is for raw scans.
int analytics_store_series_hourly(pl_db *db, const analytics_range *r,
                                  const char *tz, const int *cols,
                                  size_t n_cols, int64_t *a_us, int64_t *b_us,
                                  analytics_point_fn fn, void *arg);
int analytics_store_series_contacts(pl_db *db, const analytics_range *r,
                                    const char *gran, const char *tz,
                                    analytics_point_fn fn, void *arg);
int analytics_store_series_frt(pl_db *db, const analytics_range *r,
                               const char *kind, const char *gran,
                               const char *tz, analytics_point_fn fn,
                               void *arg);

// A tenant's time zone ("UTC" when unknown).
int analytics_store_time_zone(pl_db *db, const char *tenant_id, char tz[80]);

// Monthly usage rows of [start_month, end_month] ("YYYY-MM-01").
typedef void (*analytics_month_fn)(void *arg, PGresult *r, int row);
int analytics_store_monthly(pl_db *db, const char *tenant_id,
                            const char *start_month, const char *end_month,
                            analytics_month_fn fn, void *arg);

// Platform-wide sums over days [d0, d1) of every tenant.
int analytics_store_platform(pl_db *db, const char *d0, const char *d1,
                             int64_t start_us, int64_t end_us, int top,
                             analytics_sums *sums, int64_t *active,
                             int64_t *contacts,
                             Parley__Analytics__V1__DurationStats *bot,
                             Parley__Analytics__V1__DurationStats *human,
                             PGresult **top_rows);

// Events of a tenant, newest first, after the cursor (NULL: from the top).
int analytics_store_list_events(pl_db *db, const char *tenant_id,
                                int64_t start_us, int64_t end_us,
                                const char *type_exact, const char *type_prefix,
                                const char *conversation_id,
                                const char *cursor_at, const char *cursor_id,
                                int limit, PGresult **out);

// Builds an array literal from strings (malloc'd, caller frees).
char *analytics_array_literal(const char *const *items, size_t n);
