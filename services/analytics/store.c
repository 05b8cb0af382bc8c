// Every SQL statement of the analytics service. Parameters only; array
// parameters are PostgreSQL array literals built here with every element
// quoted, so no input ever becomes SQL text.
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "analytics.h"
#include "pl/id.h"
#include "pl/log.h"

// A growable string for array literals.
typedef struct sbuf {
	char *p;
	size_t n, cap;
	bool oom;
	size_t count; // elements
} sbuf;

static void
sb_reserve(sbuf *b, size_t more)
{
	if (b->oom || b->n + more + 1 <= b->cap)
		return;
	size_t cap = b->cap ? b->cap : 4096;
	while (cap < b->n + more + 1)
		cap *= 2;
	char *np = realloc(b->p, cap);
	if (np == NULL) {
		b->oom = true;
		return;
	}
	b->p = np;
	b->cap = cap;
}

static void
sb_raw(sbuf *b, const char *s, size_t n)
{
	sb_reserve(b, n);
	if (b->oom)
		return;
	memcpy(b->p + b->n, s, n);
	b->n += n;
	b->p[b->n] = '\0';
}

// Appends one element: NULL is SQL NULL, anything else a quoted string.
static void
sb_elem(sbuf *b, const char *s)
{
	sb_raw(b, b->count++ == 0 ? "{" : ",", 1);
	if (s == NULL) {
		sb_raw(b, "NULL", 4);
		return;
	}
	size_t n = strlen(s);
	sb_reserve(b, 2 * n + 2);
	if (b->oom)
		return;
	b->p[b->n++] = '"';
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '"' || s[i] == '\\')
			b->p[b->n++] = '\\';
		b->p[b->n++] = s[i];
	}
	b->p[b->n++] = '"';
	b->p[b->n] = '\0';
}

// Closes the literal ("{}" when empty); NULL when out of memory.
static const char *
sb_done(sbuf *b)
{
	if (b->count == 0)
		sb_raw(b, "{", 1);
	sb_raw(b, "}", 1);
	return b->oom ? NULL : b->p;
}

static void
sb_free(sbuf *b)
{
	free(b->p);
	memset(b, 0, sizeof(*b));
}

static const char *
nz(const char *s)
{
	return s != NULL && s[0] != '\0' ? s : NULL;
}

// Months (days since epoch of the 1st, UTC) known to have a partition in
// this process. Cleared after retention runs.
static pthread_mutex_t months_mu = PTHREAD_MUTEX_INITIALIZER;
static int32_t months_known[512];
static size_t n_months_known;

static bool
month_known(int32_t m)
{
	bool found = false;
	pthread_mutex_lock(&months_mu);
	for (size_t i = 0; i < n_months_known && !found; i++)
		found = months_known[i] == m;
	pthread_mutex_unlock(&months_mu);
	return found;
}

static void
month_remember(int32_t m)
{
	pthread_mutex_lock(&months_mu);
	if (n_months_known < sizeof(months_known) / sizeof(months_known[0]))
		months_known[n_months_known++] = m;
	pthread_mutex_unlock(&months_mu);
}

void
analytics_store_forget_partitions(void)
{
	pthread_mutex_lock(&months_mu);
	n_months_known = 0;
	pthread_mutex_unlock(&months_mu);
}

// Track writes a batch with three statements in one transaction, taking
// its rows in binary (PostgreSQL's array and COPY wire formats: no text to
// build or parse, uuids as 16 bytes, times as integers):
//   1. the local day and hour of every (tenant, 15-minute UTC slot) of the
//      batch whose tenant has a time zone other than UTC;
//   2. the events: by COPY into their month's partition (copy_events);
//      when a key is already stored (a replay), the transaction is run
//      again with INSERT ... ON CONFLICT DO NOTHING, counting what was new
//      (insert_events);
//   3. what the new events add, grouped in C (intake.c): one row per
//      (tenant, day, metric, dimension), one row of counters per (tenant,
//      local hour), the distinct contacts per day, response times and one
//      monthly_usage row per (tenant, month).
// Time-zone offsets and their changes fall on whole quarter hours for
// every zone since 2000 (events before 2000 are refused), so every instant
// of a 15-minute UTC slot has the same local day and local hour.

#define OID_INT4        23
#define OID_INT8        20
#define OID_TEXT        25
#define OID_DATE        1082
#define OID_TIMESTAMPTZ 1184
#define OID_UUID        2950
#define OID_JSONB       3802

#define PG_EPOCH_DAYS 10957 // 2000-01-01 - 1970-01-01
#define PG_EPOCH_US   (946684800LL * 1000000)
#define SLOT_US       (900LL * 1000000)
#define DAY_US        (86400LL * 1000000)
#define HOUR_US       (3600LL * 1000000)

// A one-dimensional array in binary format.
typedef struct barr {
	char *p;
	size_t n, cap;
	int32_t count;
	bool hasnull, oom;
	uint32_t oid;
} barr;

static void
ba_reserve(barr *b, size_t more)
{
	if (b->oom || b->n + more <= b->cap)
		return;
	size_t cap = b->cap ? b->cap : 4096;
	while (cap < b->n + more)
		cap *= 2;
	char *np = realloc(b->p, cap);
	if (np == NULL) {
		b->oom = true;
		return;
	}
	b->p = np;
	b->cap = cap;
}

static void
put32(char *p, uint32_t v)
{
	p[0] = (char)(v >> 24);
	p[1] = (char)(v >> 16);
	p[2] = (char)(v >> 8);
	p[3] = (char)v;
}

static void
ba_init(barr *b, uint32_t oid)
{
	memset(b, 0, sizeof(*b));
	b->oid = oid;
	ba_reserve(b, 20);
	b->n = 20; // the header, written by ba_done
}

// Appends one element of len bytes (data NULL: SQL NULL). pre, when not
// 0, is a byte put before the data (jsonb's version).
static void
ba_put(barr *b, const void *data, size_t len, int pre)
{
	size_t total = len + (pre ? 1 : 0);
	ba_reserve(b, 4 + total);
	if (b->oom)
		return;
	b->count++;
	if (data == NULL) {
		put32(b->p + b->n, 0xffffffffu);
		b->n += 4;
		b->hasnull = true;
		return;
	}
	put32(b->p + b->n, (uint32_t)total);
	b->n += 4;
	if (pre)
		b->p[b->n++] = (char)pre;
	memcpy(b->p + b->n, data, len);
	b->n += len;
}

static void
ba_text(barr *b, const char *s)
{
	ba_put(b, s, s != NULL ? strlen(s) : 0, 0);
}

static void
ba_i32(barr *b, int32_t v)
{
	char t[4];
	put32(t, (uint32_t)v);
	ba_put(b, t, 4, 0);
}

static void
ba_i64(barr *b, int64_t v)
{
	char t[8];
	put32(t, (uint32_t)((uint64_t)v >> 32));
	put32(t + 4, (uint32_t)v);
	ba_put(b, t, 8, 0);
}

static void
ba_uuid(barr *b, const char *s)
{
	uint8_t u[16];
	if (s == NULL || s[0] == '\0' || !pl_uuid_parse(s, u))
		ba_put(b, NULL, 0, 0);
	else
		ba_put(b, u, 16, 0);
}

// Unix microseconds as timestamptz; days since 1970 as date.
static void
ba_ts(barr *b, int64_t us)
{
	ba_i64(b, us - PG_EPOCH_US);
}

static void
ba_date(barr *b, int32_t day)
{
	ba_i32(b, day - PG_EPOCH_DAYS);
}

// Writes the header; the array and its length, or NULL when out of memory.
static const char *
ba_done(barr *b, int *len)
{
	if (b->oom)
		return NULL;
	if (b->count == 0) {
		put32(b->p, 0);
		put32(b->p + 4, 0);
		put32(b->p + 8, b->oid);
		*len = 12;
		return b->p;
	}
	put32(b->p, 1);
	put32(b->p + 4, b->hasnull ? 1 : 0);
	put32(b->p + 8, b->oid);
	put32(b->p + 12, (uint32_t)b->count);
	put32(b->p + 16, 1);
	*len = (int)b->n;
	return b->p;
}

static void
ba_free(barr *b)
{
	free(b->p);
	memset(b, 0, sizeof(*b));
}

#define EXEC_MAX_ARRAYS 64

// Runs sql with every parameter a binary array (parameters only, like
// pl_db_exec; the arrays are values, never SQL text). Inside pl_db_tx.
static PGresult *
exec_arrays(pl_db *db, const char *sql, barr *a, int n, pl_call *call, int *rc)
{
	const char *v[EXEC_MAX_ARRAYS];
	int len[EXEC_MAX_ARRAYS], fmt[EXEC_MAX_ARRAYS];
	PGconn *conn;

	if (n > EXEC_MAX_ARRAYS) {
		*rc = pl_call_error(call, PL_INTERNAL, "too many arrays");
		return NULL;
	}
	for (int i = 0; i < n; i++) {
		fmt[i] = 1;
		if ((v[i] = ba_done(&a[i], &len[i])) == NULL) {
			*rc = pl_call_error(call, PL_RESOURCE_EXHAUSTED,
			                    "out of memory");
			return NULL;
		}
	}
	if ((conn = pl_db_conn(db)) == NULL) {
		*rc = pl_call_error(call, PL_UNAVAILABLE,
		                    "the database is unavailable");
		return NULL;
	}
	PGresult *r = PQexecParams(conn, sql, n, NULL, v, len, fmt, 0);
	*rc = pl_db_result_status(r);
	return r;
}

static const char zones_sql[] =
        "SELECT s.ti, s.slot, ((to_timestamp(s.slot * 900) AT TIME ZONE"
        "  z.time_zone)::date - date '1970-01-01'),"
        " (extract(epoch FROM date_trunc('hour', to_timestamp(s.slot * 900),"
        "  z.time_zone))::bigint / 900)"
        " FROM unnest($2::int[], $3::bigint[]) AS s(ti, slot)"
        " JOIN (SELECT t.ti, ts.time_zone"
        "  FROM unnest($1::uuid[]) WITH ORDINALITY AS t(tenant_id, ti)"
        "  JOIN analytics.tenant_settings ts ON ts.tenant_id = t.tenant_id"
        "  WHERE ts.time_zone <> 'UTC') z ON z.ti = s.ti";

static const char events_sql[] =
        "WITH ins AS ("
        " INSERT INTO analytics.events (tenant_id, occurred_at, id, type,"
        "  source, channel_id, agent_id, campaign_id, conversation_id,"
        "  contact_id, user_id, payload, version)"
        " SELECT * FROM unnest($1::uuid[], $2::timestamptz[], $3::uuid[],"
        "  $4::text[], $5::text[], $6::uuid[], $7::uuid[], $8::uuid[],"
        "  $9::uuid[], $10::uuid[], $11::uuid[], $12::jsonb[], $13::int[])"
        " ON CONFLICT DO NOTHING RETURNING 1"
        ") SELECT count(*) FROM ins";

// After a conflict: which rows of the batch this transaction wrote.
static const char mine_sql[] =
        "SELECT u.i FROM unnest($1::uuid[], $2::timestamptz[], $3::uuid[])"
        "  WITH ORDINALITY AS u(tenant_id, occurred_at, id, i)"
        " JOIN analytics.events e ON e.tenant_id = u.tenant_id"
        "  AND e.occurred_at = u.occurred_at AND e.id = u.id"
        " WHERE e.xmin::text::bigint"
        "  = pg_current_xact_id()::text::bigint % 4294967296";

static const char rollups_sql[] =
        "WITH roll AS ("
        " INSERT INTO analytics.daily_rollups AS r (tenant_id, dim_key,"
        "  dim_value, day, metric, value)"
        " SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[],"
        "  $4::date[], $5::text[], $6::bigint[])"
        " ON CONFLICT (tenant_id, dim_key, dim_value, day, metric)"
        " DO UPDATE SET value = r.value + EXCLUDED.value"
        "), dc AS ("
        " INSERT INTO analytics.daily_contacts (tenant_id, day, contact_id)"
        " SELECT * FROM unnest($7::uuid[], $8::date[], $9::uuid[])"
        " ON CONFLICT DO NOTHING"
        "), rt AS ("
        " INSERT INTO analytics.response_times (tenant_id, kind, "
        "occurred_at,"
        "  event_id, ms, channel_id, agent_id, campaign_id)"
        " SELECT * FROM unnest($10::uuid[], $11::text[], $12::timestamptz[],"
        "  $13::uuid[], $14::bigint[], $15::uuid[], $16::uuid[], $17::uuid[])"
        " ON CONFLICT DO NOTHING"
        "), hr AS ("
        " INSERT INTO analytics.hourly_rollups AS h (tenant_id, hour,"
        "  messages_in, messages_out, messages_out_bot, messages_out_human,"
        "  conversations_started, conversations_closed, handoffs,"
        "  bot_resolved, leads_created, leads_converted, orders,"
        "  campaign_sent, campaign_delivered, campaign_read,"
        "  campaign_failed, ai_replies, ai_tokens_in, ai_tokens_out,"
        "  quota_refusals)"
        " SELECT * FROM unnest($27::uuid[], $28::timestamptz[],"
        "  $29::bigint[], $30::bigint[], $31::bigint[], $32::bigint[],"
        "  $33::bigint[], $34::bigint[], $35::bigint[], $36::bigint[],"
        "  $37::bigint[], $38::bigint[], $39::bigint[], $40::bigint[],"
        "  $41::bigint[], $42::bigint[], $43::bigint[], $44::bigint[],"
        "  $45::bigint[], $46::bigint[], $47::bigint[])"
        " ON CONFLICT (tenant_id, hour) DO UPDATE SET"
        "  messages_in = h.messages_in + EXCLUDED.messages_in,"
        "  messages_out = h.messages_out + EXCLUDED.messages_out,"
        "  messages_out_bot = h.messages_out_bot + EXCLUDED.messages_out_bot,"
        "  messages_out_human = h.messages_out_human"
        "   + EXCLUDED.messages_out_human,"
        "  conversations_started = h.conversations_started"
        "   + EXCLUDED.conversations_started,"
        "  conversations_closed = h.conversations_closed"
        "   + EXCLUDED.conversations_closed,"
        "  handoffs = h.handoffs + EXCLUDED.handoffs,"
        "  bot_resolved = h.bot_resolved + EXCLUDED.bot_resolved,"
        "  leads_created = h.leads_created + EXCLUDED.leads_created,"
        "  leads_converted = h.leads_converted + EXCLUDED.leads_converted,"
        "  orders = h.orders + EXCLUDED.orders,"
        "  campaign_sent = h.campaign_sent + EXCLUDED.campaign_sent,"
        "  campaign_delivered = h.campaign_delivered"
        "   + EXCLUDED.campaign_delivered,"
        "  campaign_read = h.campaign_read + EXCLUDED.campaign_read,"
        "  campaign_failed = h.campaign_failed + EXCLUDED.campaign_failed,"
        "  ai_replies = h.ai_replies + EXCLUDED.ai_replies,"
        "  ai_tokens_in = h.ai_tokens_in + EXCLUDED.ai_tokens_in,"
        "  ai_tokens_out = h.ai_tokens_out + EXCLUDED.ai_tokens_out,"
        "  quota_refusals = h.quota_refusals + EXCLUDED.quota_refusals"
        ") INSERT INTO analytics.monthly_usage AS m (tenant_id, month,"
        "  messages_in, messages_out, conversations, ai_replies,"
        "  ai_tokens, campaign_sent, quota_refusals)"
        " SELECT u.tenant_id, u.month, u.mi, u.mo, u.cv, u.ar, u.tk, u.cs,"
        "  u.qr"
        " FROM unnest($18::uuid[], $19::date[], $20::bigint[], $21::bigint[],"
        "  $22::bigint[], $23::bigint[], $24::bigint[], $25::bigint[],"
        "  $26::bigint[]) AS u(tenant_id, month, mi, mo, cv, ar, tk, cs, qr)"
        " ORDER BY 1, 2"
        " ON CONFLICT (tenant_id, month) DO UPDATE SET"
        "  messages_in = m.messages_in + EXCLUDED.messages_in,"
        "  messages_out = m.messages_out + EXCLUDED.messages_out,"
        "  conversations = m.conversations + EXCLUDED.conversations,"
        "  ai_replies = m.ai_replies + EXCLUDED.ai_replies,"
        "  ai_tokens = m.ai_tokens + EXCLUDED.ai_tokens,"
        "  campaign_sent = m.campaign_sent + EXCLUDED.campaign_sent,"
        "  quota_refusals = m.quota_refusals + EXCLUDED.quota_refusals,"
        "  updated_at = now()";

// One event's place in the batch: its tenant and 15-minute slot.
typedef struct slot_key {
	uint8_t tenant[16];
	int64_t slot;
	size_t ev;
} slot_key;

typedef struct track_arg {
	analytics_event_pb **ev;
	json_t **payloads;
	const int64_t *us;
	size_t n;
	bool *skip; // not stored: duplicate, too old, or already there
	bool *old;  // before the retention window
	int accepted;
	int ignored; // before the retention window
	pl_call *call;
	// Per event: tenant index and local day. Per batch: the distinct
	// tenants (sorted) and (tenant, slot) pairs.
	int32_t *ti, *day, *hour_q;
	slot_key *keys;
	uint8_t (*tenants)[16];
	size_t n_tenants;
	size_t *sent; // events sent in statement 2, in order
	size_t n_sent;
	bool copy;     // statement 2 by COPY (false: INSERT ON CONFLICT)
	bool conflict; // the COPY met a stored key
	analytics_agg agg;
} track_arg;

static int
cmp_id(const void *a, const void *b, void *arg)
{
	analytics_event_pb **ev = arg;
	size_t i = *(const size_t *)a, j = *(const size_t *)b;
	int c = strcasecmp(ev[i]->id, ev[j]->id);
	return c != 0 ? c : (i < j ? -1 : i > j);
}

static int
cmp_slot(const void *a, const void *b)
{
	const slot_key *x = a, *y = b;
	int c = memcmp(x->tenant, y->tenant, 16);
	if (c != 0)
		return c;
	return x->slot < y->slot ? -1 : x->slot > y->slot;
}

// Learns time zones first so that the batch's own events use them.
static int
learn_tenants(pl_db *db, track_arg *t)
{
	for (size_t i = 0; i < t->n; i++) {
		analytics_event_pb *e = t->ev[i];
		char at[32];
		if (t->skip[i] || (strcmp(e->type, "tenant.created") != 0 &&
		                   strcmp(e->type, "tenant.updated") != 0))
			continue;
		json_t *tz = json_object_get(t->payloads[i], "time_zone");
		json_t *nm = json_object_get(t->payloads[i], "name");
		const char *p[4];
		analytics_time_format_us(t->us[i], at);
		p[0] = e->tenant_id;
		p[1] = json_is_string(nm) ? json_string_value(nm) : "";
		p[2] = json_is_string(tz) ? json_string_value(tz) : "";
		p[3] = at;
		PGresult *r = pl_db_exec(
		        db,
		        "SELECT analytics.learn_tenant($1, left($2, 200),"
		        " left($3, 64), $4)",
		        4, p);
		int rc = pl_db_result_status(r);
		if (rc != PL_OK) {
			rc = pl_db_call_error(t->call, r,
			                      "learn tenant settings");
			PQclear(r);
			return rc;
		}
		PQclear(r);
	}
	return PL_OK;
}

// The months of the batch that have no partition known to this process,
// each once (at most 64).
static int
missing_months(track_arg *t, int32_t *months, size_t *n)
{
	*n = 0;
	for (size_t i = 0; i < t->n; i++) {
		int32_t m = analytics_utc_month(t->us[i]);
		size_t k;
		if (month_known(m))
			continue;
		for (k = 0; k < *n && months[k] != m; k++)
			;
		if (k < *n)
			continue;
		if (*n == 64)
			return pl_call_error(
			        t->call, PL_INVALID_ARGUMENT,
			        "a batch may span at most 64 months");
		months[(*n)++] = m;
	}
	return PL_OK;
}

typedef struct month_arg {
	int32_t month;
	bool ok;
	pl_call *call;
} month_arg;

static int
ensure_tx(pl_db *db, void *arg)
{
	month_arg *m = arg;
	char day[16], ts[32];
	analytics_time_format_us((int64_t)m->month * DAY_US, ts);
	snprintf(day, sizeof(day), "%.10s", ts);
	const char *p[1] = { day };
	PGresult *r = pl_db_exec(
	        db, "SELECT analytics.ensure_partition($1::date)", 1, p);
	int rc = pl_db_result_status(r);
	if (rc != PL_OK)
		rc = pl_db_call_error(m->call, r, "create a partition");
	else
		m->ok = strcmp(PQgetvalue(r, 0, 0), "t") == 0;
	PQclear(r);
	return rc;
}

// Makes sure every month of the batch has a partition, each in its own
// short transaction (two batches making two months in one transaction each
// could deadlock on the parent); events of months before the retention
// window are marked old.
static int
ensure_months(pl_db *db, track_arg *t)
{
	int32_t months[64];
	size_t n;
	int rc;

	t->ignored = 0;
	for (size_t i = 0; i < t->n; i++)
		t->old[i] = false;
	if ((rc = missing_months(t, months, &n)) != PL_OK || n == 0)
		return rc;
	for (size_t k = 0; k < n; k++) {
		// A service-level operation: partitions are not tenant data.
		month_arg m = { months[k], false, t->call };
		if ((rc = pl_db_tx(db, "*", ensure_tx, &m)) != PL_OK)
			return rc;
		if (m.ok)
			continue;
		for (size_t i = 0; i < t->n; i++)
			if (analytics_utc_month(t->us[i]) == months[k]) {
				t->old[i] = true;
				t->ignored++;
			}
	}
	return PL_OK;
}

// Tenant indexes and (tenant, slot) pairs of the events not skipped.
static void
index_tenants(track_arg *t, size_t *n_keys)
{
	size_t n = 0;
	for (size_t i = 0; i < t->n; i++) {
		if (t->skip[i])
			continue;
		// Checked as a UUID by analytics_event_check.
		pl_uuid_parse(t->ev[i]->tenant_id, t->keys[n].tenant);
		t->keys[n].slot = t->us[i] / SLOT_US;
		t->keys[n].ev = i;
		n++;
	}
	qsort(t->keys, n, sizeof(*t->keys), cmp_slot);
	t->n_tenants = 0;
	for (size_t k = 0; k < n; k++) {
		if (t->n_tenants == 0 || memcmp(t->tenants[t->n_tenants - 1],
		                                t->keys[k].tenant, 16) != 0)
			memcpy(t->tenants[t->n_tenants++], t->keys[k].tenant,
			       16);
		size_t e = t->keys[k].ev;
		t->ti[e] = (int32_t)t->n_tenants - 1;
		t->day[e] = (int32_t)(t->us[e] / DAY_US);
		t->hour_q[e] = (int32_t)(t->us[e] / HOUR_US * 4);
	}
	*n_keys = n;
}

// Statement 1: local days of tenants that are not on UTC.
static int
local_days(pl_db *db, track_arg *t, size_t n_keys)
{
	barr a[3];
	int rc;

	ba_init(&a[0], OID_UUID);
	ba_init(&a[1], OID_INT4);
	ba_init(&a[2], OID_INT8);
	for (size_t i = 0; i < t->n_tenants; i++)
		ba_put(&a[0], t->tenants[i], 16, 0);
	for (size_t k = 0; k < n_keys; k++) {
		if (k > 0 && cmp_slot(&t->keys[k - 1], &t->keys[k]) == 0)
			continue;
		ba_i32(&a[1], t->ti[t->keys[k].ev] + 1); // ordinality
		ba_i64(&a[2], t->keys[k].slot);
	}
	PGresult *r = exec_arrays(db, zones_sql, a, 3, t->call, &rc);
	if (r != NULL && rc != PL_OK)
		rc = pl_db_call_error(t->call, r, "read time zones");
	if (rc == PL_OK) {
		// keys are in (tenant index, slot) order: binary search.
		for (int row = 0; row < PQntuples(r); row++) {
			int32_t ti = atoi(PQgetvalue(r, row, 0)) - 1;
			int64_t slot = strtoll(PQgetvalue(r, row, 1), NULL, 10);
			int32_t day = atoi(PQgetvalue(r, row, 2));
			int32_t hq = atoi(PQgetvalue(r, row, 3));
			size_t lo = 0, hi = n_keys;
			while (lo < hi) {
				size_t mid = lo + (hi - lo) / 2;
				int32_t mt = t->ti[t->keys[mid].ev];
				if (mt < ti ||
				    (mt == ti && t->keys[mid].slot < slot))
					lo = mid + 1;
				else
					hi = mid;
			}
			for (; lo < n_keys && t->ti[t->keys[lo].ev] == ti &&
			       t->keys[lo].slot == slot;
			     lo++) {
				t->day[t->keys[lo].ev] = day;
				t->hour_q[t->keys[lo].ev] = hq;
			}
		}
	}
	PQclear(r);
	for (int i = 0; i < 3; i++)
		ba_free(&a[i]);
	return rc;
}

// Statement 2: the events; marks those that were already there as skipped.
static int
insert_events(pl_db *db, track_arg *t)
{
	barr a[13];
	static const uint32_t oids[13] = { OID_UUID, OID_TIMESTAMPTZ, OID_UUID,
		                           OID_TEXT, OID_TEXT,        OID_UUID,
		                           OID_UUID, OID_UUID,        OID_UUID,
		                           OID_UUID, OID_UUID,        OID_JSONB,
		                           OID_INT4 };
	int rc;

	for (int i = 0; i < 13; i++)
		ba_init(&a[i], oids[i]);
	t->n_sent = 0;
	for (size_t i = 0; i < t->n; i++) {
		analytics_event_pb *e = t->ev[i];
		const Parley__Rpc__V1__EventDimensions *d = e->dimensions;
		const char *pl;
		if (t->skip[i])
			continue;
		t->sent[t->n_sent++] = i;
		ba_put(&a[0], t->tenants[t->ti[i]], 16, 0);
		ba_ts(&a[1], t->us[i]);
		ba_uuid(&a[2], e->id);
		ba_text(&a[3], e->type);
		ba_text(&a[4], e->source != NULL ? e->source : "");
		ba_uuid(&a[5], d ? d->channel_id : NULL);
		ba_uuid(&a[6], d ? d->agent_id : NULL);
		ba_uuid(&a[7], d ? d->campaign_id : NULL);
		ba_uuid(&a[8], d ? d->conversation_id : NULL);
		ba_uuid(&a[9], d ? d->contact_id : NULL);
		ba_uuid(&a[10], d ? d->user_id : NULL);
		pl = e->payload != NULL && nz(e->payload->text)
		             ? e->payload->text
		             : "{}";
		ba_put(&a[11], pl, strlen(pl), 1); // jsonb version 1
		ba_i32(&a[12], e->version > 0 ? e->version : 1);
	}
	t->accepted = 0;
	if (t->n_sent == 0) {
		rc = PL_OK;
		goto out;
	}
	PGresult *r = exec_arrays(db, events_sql, a, 13, t->call, &rc);
	if (r != NULL && rc != PL_OK)
		rc = pl_db_call_error(t->call, r, "store events");
	if (rc == PL_OK)
		t->accepted = atoi(PQgetvalue(r, 0, 0));
	PQclear(r);
	if (rc != PL_OK || (size_t)t->accepted == t->n_sent)
		goto out;
	// Some were there already (replays): find the rows this
	// transaction wrote; the others add nothing.
	r = exec_arrays(db, mine_sql, a, 3, t->call, &rc);
	if (r != NULL && rc != PL_OK)
		rc = pl_db_call_error(t->call, r, "find the new events");
	if (rc == PL_OK) {
		bool *mine = calloc(t->n_sent, sizeof(bool));
		if (mine == NULL) {
			rc = pl_call_error(t->call, PL_RESOURCE_EXHAUSTED,
			                   "out of memory");
		} else {
			for (int row = 0; row < PQntuples(r); row++) {
				long k = atol(PQgetvalue(r, row, 0)) - 1;
				if (k >= 0 && (size_t)k < t->n_sent)
					mine[k] = true;
			}
			for (size_t k = 0; k < t->n_sent; k++)
				if (!mine[k])
					t->skip[t->sent[k]] = true;
			free(mine);
		}
	}
	PQclear(r);
out:
	for (int i = 0; i < 13; i++)
		ba_free(&a[i]);
	return rc;
}

// The fast path of statement 2: the events by COPY (binary) straight into
// their month's partition, which writes pages of rows at once where INSERT
// writes row by row with a speculative insertion each. COPY FROM is refused
// on a table with row-level security; the partitions have none of their
// own (the parent's policies apply to queries through the parent, which is
// the only way queries read them). Track is a service-level operation (tenant
// "*") and every row keeps its own tenant_id. A key already stored (a
// replay) fails the COPY with 23505: *conflict is set and the caller runs
// the batch again through insert_events, which skips what is there.

// A growable byte buffer for COPY's binary format.
typedef struct cbuf {
	char *p;
	size_t n, cap;
	bool oom;
} cbuf;

static void
cb_raw(cbuf *b, const void *d, size_t len)
{
	if (b->oom)
		return;
	if (b->n + len > b->cap) {
		size_t cap = b->cap ? b->cap : 65536;
		while (cap < b->n + len)
			cap *= 2;
		char *np = realloc(b->p, cap);
		if (np == NULL) {
			b->oom = true;
			return;
		}
		b->p = np;
		b->cap = cap;
	}
	memcpy(b->p + b->n, d, len);
	b->n += len;
}

static void
cb_i16(cbuf *b, int16_t v)
{
	char t[2] = { (char)((uint16_t)v >> 8), (char)v };
	cb_raw(b, t, 2);
}

static void
cb_i32(cbuf *b, int32_t v)
{
	char t[4];
	put32(t, (uint32_t)v);
	cb_raw(b, t, 4);
}

// One field: its length, then its bytes (data NULL: SQL NULL).
static void
cb_field(cbuf *b, const void *data, size_t len)
{
	if (data == NULL) {
		cb_i32(b, -1);
		return;
	}
	cb_i32(b, (int32_t)len);
	cb_raw(b, data, len);
}

static void
cb_uuid(cbuf *b, const char *s)
{
	uint8_t u[16];
	if (s == NULL || s[0] == '\0' || !pl_uuid_parse(s, u))
		cb_field(b, NULL, 0);
	else
		cb_field(b, u, 16);
}

static void
cb_i64(cbuf *b, int64_t v)
{
	char t[8];
	put32(t, (uint32_t)((uint64_t)v >> 32));
	put32(t + 4, (uint32_t)v);
	cb_field(b, t, 8);
}

static int
cmp_month_ev(const void *a, const void *b, void *arg)
{
	const int64_t *us = arg;
	size_t i = *(const size_t *)a, j = *(const size_t *)b;
	int32_t x = analytics_utc_month(us[i]), y = analytics_utc_month(us[j]);
	if (x != y)
		return x < y ? -1 : 1;
	return i < j ? -1 : i > j;
}

// COPYs rows [from, to) of t->sent (all of one UTC month) into its
// partition.
static int
copy_month(PGconn *conn, track_arg *t, size_t from, size_t to, cbuf *b,
           bool *conflict)
{
	static const char sig[11] = { 'P',  'G',    'C',  'O',  'P', 'Y',
		                      '\n', '\377', '\r', '\n', '\0' };
	char sql[256], month[32];
	int rc;

	b->n = 0;
	b->oom = false;
	cb_raw(b, sig, sizeof(sig));
	cb_i32(b, 0); // flags
	cb_i32(b, 0); // header extension
	for (size_t k = from; k < to; k++) {
		size_t i = t->sent[k];
		analytics_event_pb *e = t->ev[i];
		const Parley__Rpc__V1__EventDimensions *d = e->dimensions;
		const char *pl = e->payload != NULL && nz(e->payload->text)
		                         ? e->payload->text
		                         : "{}";
		const char *src = e->source != NULL ? e->source : "";
		size_t pn = strlen(pl);
		cb_i16(b, 13);
		cb_field(b, t->tenants[t->ti[i]], 16);
		cb_i64(b, t->us[i] - PG_EPOCH_US);
		cb_uuid(b, e->id);
		cb_field(b, e->type, strlen(e->type));
		cb_field(b, src, strlen(src));
		cb_uuid(b, d ? d->channel_id : NULL);
		cb_uuid(b, d ? d->agent_id : NULL);
		cb_uuid(b, d ? d->campaign_id : NULL);
		cb_uuid(b, d ? d->conversation_id : NULL);
		cb_uuid(b, d ? d->contact_id : NULL);
		cb_uuid(b, d ? d->user_id : NULL);
		cb_i32(b, (int32_t)pn + 1); // jsonb: version 1, then the text
		cb_raw(b, "\1", 1);
		cb_raw(b, pl, pn);
		cb_i32(b, 4);
		cb_i32(b, e->version > 0 ? e->version : 1);
	}
	cb_i16(b, -1);
	if (b->oom)
		return pl_call_error(t->call, PL_RESOURCE_EXHAUSTED,
		                     "out of memory");
	// The partition's name comes from the month's digits, never from
	// input: events_pYYYYMM, as ensure_partition names it.
	analytics_time_format_us(
	        (int64_t)analytics_utc_month(t->us[t->sent[from]]) * DAY_US,
	        month);
	snprintf(sql, sizeof(sql),
	         "COPY analytics.events_p%.4s%.2s (tenant_id, occurred_at, id,"
	         " type, source, channel_id, agent_id, campaign_id,"
	         " conversation_id, contact_id, user_id, payload, version)"
	         " FROM STDIN (FORMAT binary)",
	         month, month + 5);
	PGresult *r = PQexec(conn, sql);
	if (PQresultStatus(r) != PGRES_COPY_IN) {
		rc = pl_db_call_error(t->call, r, "store events");
		PQclear(r);
		return rc != PL_OK ? rc : PL_INTERNAL;
	}
	PQclear(r);
	if (PQputCopyData(conn, b->p, (int)b->n) != 1 ||
	    PQputCopyEnd(conn, NULL) != 1)
		return pl_call_error(t->call, PL_UNAVAILABLE,
		                     "the database is unavailable");
	rc = PL_OK;
	while ((r = PQgetResult(conn)) != NULL) {
		if (rc == PL_OK && PQresultStatus(r) != PGRES_COMMAND_OK) {
			const char *st =
			        PQresultErrorField(r, PG_DIAG_SQLSTATE);
			if (st != NULL && strcmp(st, "23505") == 0) {
				*conflict = true;
				rc = PL_ALREADY_EXISTS;
			} else {
				rc = pl_db_call_error(t->call, r,
				                      "store events");
			}
		}
		PQclear(r);
	}
	return rc;
}

static int
copy_events(pl_db *db, track_arg *t, bool *conflict)
{
	PGconn *conn;
	cbuf b = { 0 };
	int rc = PL_OK;

	t->n_sent = 0;
	t->accepted = 0;
	for (size_t i = 0; i < t->n; i++)
		if (!t->skip[i])
			t->sent[t->n_sent++] = i;
	if (t->n_sent == 0)
		return PL_OK;
	if ((conn = pl_db_conn(db)) == NULL)
		return pl_call_error(t->call, PL_UNAVAILABLE,
		                     "the database is unavailable");
	qsort_r(t->sent, t->n_sent, sizeof(*t->sent), cmp_month_ev,
	        (void *)t->us);
	for (size_t k = 0; rc == PL_OK && k < t->n_sent;) {
		int32_t m = analytics_utc_month(t->us[t->sent[k]]);
		size_t e = k + 1;
		while (e < t->n_sent &&
		       analytics_utc_month(t->us[t->sent[e]]) == m)
			e++;
		rc = copy_month(conn, t, k, e, &b, conflict);
		k = e;
	}
	free(b.p);
	if (rc == PL_OK)
		t->accepted = (int)t->n_sent;
	return rc;
}

// Statement 3: what the new events add.
static int
write_rollups(pl_db *db, track_arg *t)
{
	analytics_agg *g = &t->agg;
	// The arrays, in parameter order: daily rollups (6), daily
	// contacts (3), response times (8), monthly usage (2 + 7), hourly
	// rollups (2 + the counters).
	enum { NA = 28 + ANALYTICS_HOURLY_N };
	barr a[NA];
	static const uint32_t oids[28] = {
		OID_UUID, OID_TEXT,        OID_TEXT,       OID_DATE, OID_TEXT,
		OID_INT8, OID_UUID,        OID_DATE,       OID_UUID, OID_UUID,
		OID_TEXT, OID_TIMESTAMPTZ, OID_UUID,       OID_INT8, OID_UUID,
		OID_UUID, OID_UUID,        OID_UUID,       OID_DATE, OID_INT8,
		OID_INT8, OID_INT8,        OID_INT8,       OID_INT8, OID_INT8,
		OID_INT8, OID_UUID,        OID_TIMESTAMPTZ
	};
	int rc = PL_OK;

	analytics_agg_reset(g);
	for (int i = 0; i < NA; i++)
		ba_init(&a[i], i < 28 ? oids[i] : OID_INT8);
	for (size_t i = 0; i < t->n; i++) {
		analytics_event_pb *e = t->ev[i];
		const Parley__Rpc__V1__EventDimensions *d = e->dimensions;
		uint8_t contact[16];
		const char *kind;
		int64_t ms;
		if (t->skip[i])
			continue;
		bool has_contact = d != NULL && nz(d->contact_id) &&
		                   pl_uuid_parse(d->contact_id, contact);
		analytics_agg_event(g, t->ti[i], t->day[i], t->hour_q[i],
		                    e->type, d, t->payloads[i],
		                    has_contact ? contact : NULL);
		if (analytics_response_time(e->type, t->payloads[i], &kind,
		                            &ms)) {
			ba_put(&a[9], t->tenants[t->ti[i]], 16, 0);
			ba_text(&a[10], kind);
			ba_ts(&a[11], t->us[i]);
			ba_uuid(&a[12], e->id);
			ba_i64(&a[13], ms);
			ba_uuid(&a[14], d ? d->channel_id : NULL);
			ba_uuid(&a[15], d ? d->agent_id : NULL);
			ba_uuid(&a[16], d ? d->campaign_id : NULL);
		}
	}
	if (!analytics_agg_finish(g)) {
		rc = pl_call_error(t->call, PL_RESOURCE_EXHAUSTED,
		                   "out of memory");
		goto out;
	}
	if (g->n_months == 0)
		goto out; // nothing new
	for (size_t k = 0; k < g->n_rolls; k++) {
		const analytics_roll *r = &g->rolls[k];
		ba_put(&a[0], t->tenants[r->tenant], 16, 0);
		ba_text(&a[1], r->dk);
		ba_text(&a[2], r->dv);
		ba_date(&a[3], r->day);
		ba_text(&a[4], r->metric);
		ba_i64(&a[5], r->v);
	}
	for (size_t k = 0; k < g->n_dc; k++) {
		ba_put(&a[6], t->tenants[g->dc[k].tenant], 16, 0);
		ba_date(&a[7], g->dc[k].day);
		ba_put(&a[8], g->dc[k].contact, 16, 0);
	}
	for (size_t k = 0; k < g->n_months; k++) {
		ba_put(&a[17], t->tenants[g->months[k].tenant], 16, 0);
		ba_date(&a[18], g->months[k].month);
		for (int c = 0; c < ANALYTICS_MU_N; c++)
			ba_i64(&a[19 + c], g->months[k].c[c]);
	}
	for (size_t k = 0; k < g->n_hours; k++) {
		const analytics_hour *h = &g->hours[k];
		ba_put(&a[26], t->tenants[h->tenant], 16, 0);
		ba_ts(&a[27], (int64_t)h->hour_q * SLOT_US);
		for (int c = 0; c < ANALYTICS_HOURLY_N; c++)
			ba_i64(&a[28 + c], h->c[c]);
	}
	PGresult *r = exec_arrays(db, rollups_sql, a, NA, t->call, &rc);
	if (r != NULL && rc != PL_OK)
		rc = pl_db_call_error(t->call, r, "update the rollups");
	PQclear(r);
out:
	for (int i = 0; i < NA; i++)
		ba_free(&a[i]);
	return rc;
}

static int
track_tx(pl_db *db, void *arg)
{
	track_arg *t = arg;
	size_t n_keys;
	int rc;

	for (size_t i = 0; i < t->n; i++)
		t->skip[i] = t->old[i];
	// In-batch duplicates: the first of each id counts.
	{
		size_t *ord = malloc(t->n * sizeof(*ord));
		if (ord == NULL)
			return pl_call_error(t->call, PL_RESOURCE_EXHAUSTED,
			                     "out of memory");
		for (size_t i = 0; i < t->n; i++)
			ord[i] = i;
		qsort_r(ord, t->n, sizeof(*ord), cmp_id, t->ev);
		for (size_t i = 1; i < t->n; i++)
			if (strcasecmp(t->ev[ord[i]]->id,
			               t->ev[ord[i - 1]]->id) == 0)
				t->skip[ord[i]] = true;
		free(ord);
	}
	t->accepted = 0;
	if ((rc = learn_tenants(db, t)) != PL_OK)
		return rc;
	index_tenants(t, &n_keys);
	if (n_keys == 0)
		return PL_OK;
	if ((rc = local_days(db, t, n_keys)) != PL_OK)
		return rc;
	rc = t->copy ? copy_events(db, t, &t->conflict) : insert_events(db, t);
	if (rc != PL_OK)
		return rc;
	if (t->accepted == 0)
		return PL_OK;
	return write_rollups(db, t);
}

int
analytics_store_track(pl_db *db, analytics_event_pb **ev, json_t **payloads,
                      const int64_t *us, size_t n, int *accepted, pl_call *call)
{
	track_arg t = { 0 };
	size_t m = n ? n : 1;
	int rc;

	t.ev = ev;
	t.payloads = payloads;
	t.us = us;
	t.n = n;
	t.call = call;
	t.skip = calloc(m, sizeof(bool));
	t.old = calloc(m, sizeof(bool));
	t.ti = calloc(m, sizeof(int32_t));
	t.day = calloc(m, sizeof(int32_t));
	t.hour_q = calloc(m, sizeof(int32_t));
	t.keys = calloc(m, sizeof(slot_key));
	t.tenants = calloc(m, 16);
	t.sent = calloc(m, sizeof(size_t));
	analytics_agg_init(&t.agg);
	if (t.skip == NULL || t.old == NULL || t.ti == NULL || t.day == NULL ||
	    t.hour_q == NULL || t.keys == NULL || t.tenants == NULL ||
	    t.sent == NULL) {
		rc = pl_call_error(call, PL_RESOURCE_EXHAUSTED,
		                   "out of memory");
		goto out;
	}
	// Missing partitions are made first, in their own short
	// transactions, so the DDL's locks are not held while the batch is
	// written. A batch carries many tenants: the service-level tenant
	// "*" (the rows still each carry their own tenant_id).
	rc = ensure_months(db, &t);
	if (rc == PL_OK) {
		t.copy = true;
		rc = pl_db_tx(db, "*", track_tx, &t);
	}
	if (rc != PL_OK && (t.conflict || rc == PL_ABORTED)) {
		// Replays (or deadlocks between batches sharing events): the
		// slower path that skips what is stored.
		t.copy = false;
		t.conflict = false;
		if (call != NULL) { // what the first attempt may have set
			call->code = 0;
			call->message = NULL;
		}
		rc = pl_db_tx(db, "*", track_tx, &t);
	}
	if (rc == PL_OK) {
		for (size_t i = 0; i < n; i++)
			if (!t.old[i])
				month_remember(analytics_utc_month(us[i]));
		*accepted = t.accepted;
	} else {
		// A partition another replica detached: look again next time.
		analytics_store_forget_partitions();
	}
out:
	analytics_agg_fini(&t.agg);
	free(t.skip);
	free(t.old);
	free(t.ti);
	free(t.day);
	free(t.hour_q);
	free(t.keys);
	free(t.tenants);
	free(t.sent);
	return rc;
}

static int
text_list(PGresult *r, char ***out, size_t *n, pl_arena *arena)
{
	int rows = PQntuples(r);
	*n = 0;
	*out = NULL;
	if (rows == 0)
		return PL_OK;
	*out = pl_arena_alloc(arena, (size_t)rows * sizeof(char *));
	if (*out == NULL)
		return PL_RESOURCE_EXHAUSTED;
	for (int i = 0; i < rows; i++)
		(*out)[(*n)++] = pl_arena_strdup(arena, PQgetvalue(r, i, 0));
	return PL_OK;
}

typedef struct list_arg {
	const char *sql;
	int np;
	const char *const *p;
	char ***out;
	size_t *n;
	pl_arena *arena;
} list_arg;

static int
list_tx(pl_db *db, void *arg)
{
	list_arg *a = arg;
	PGresult *r = pl_db_exec(db, a->sql, a->np, a->p);
	int rc = pl_db_result_status(r);
	if (rc == PL_OK && a->out != NULL)
		rc = text_list(r, a->out, a->n, a->arena);
	else if (rc != PL_OK)
		pl_error("analytics: %s", PQresultErrorMessage(r));
	PQclear(r);
	return rc;
}

// Service-level maintenance runs as tenant "*": it spans every tenant.
static int
run_list(pl_db *db, const char *sql, int np, const char *const *p, char ***out,
         size_t *n, pl_arena *arena)
{
	list_arg a = { sql, np, p, out, n, arena };
	return pl_db_tx(db, "*", list_tx, &a);
}

int
analytics_store_partitions_ahead(pl_db *db, int months_ahead, char ***created,
                                 size_t *n_created, pl_arena *arena)
{
	char ahead[16];
	const char *p[1] = { ahead };
	snprintf(ahead, sizeof(ahead), "%d", months_ahead);
	return run_list(
	        db, "SELECT * FROM analytics.ensure_partitions(now(), $1::int)",
	        1, p, created, n_created, arena);
}

int
analytics_store_apply_retention(pl_db *db, bool dry_run, char ***detached,
                                size_t *n, pl_arena *arena)
{
	const char *p[1] = { dry_run ? "true" : "false" };
	int rc = run_list(
	        db,
	        "SELECT * FROM analytics.apply_retention(now(), $1::boolean)",
	        1, p, detached, n, arena);
	if (rc == PL_OK && !dry_run && *n > 0)
		analytics_store_forget_partitions();
	return rc;
}

int
analytics_store_get_retention(pl_db *db, int *months, char ***parts, size_t *n,
                              pl_arena *arena)
{
	PGresult *r = pl_db_exec(db, "SELECT months FROM analytics.retention",
	                         0, NULL);
	int rc = pl_db_result_status(r);
	if (rc == PL_OK && PQntuples(r) == 1)
		*months = atoi(PQgetvalue(r, 0, 0));
	PQclear(r);
	if (rc != PL_OK)
		return rc;
	return run_list(db,
	                "SELECT to_char(month, 'YYYY-MM') FROM "
	                "analytics.event_partitions"
	                " ORDER BY month",
	                0, NULL, parts, n, arena);
}

int
analytics_store_set_retention(pl_db *db, int months)
{
	char m[16];
	const char *p[1] = { m };
	snprintf(m, sizeof(m), "%d", months);
	return pl_db_command(db,
	                     "UPDATE analytics.retention SET months = $1::int, "
	                     "updated_at = now()",
	                     1, p);
}

// Queries.

char *
analytics_array_literal(const char *const *items, size_t n)
{
	sbuf b = { 0 };
	for (size_t i = 0; i < n; i++)
		sb_elem(&b, items[i]);
	if (sb_done(&b) == NULL) {
		sb_free(&b);
		return NULL;
	}
	return b.p;
}

static int
failed(PGresult *r, const char *what)
{
	int rc = pl_db_result_status(r);
	if (rc != PL_OK)
		pl_error("could not %s: %s", what,
		         r != NULL ? PQresultErrorMessage(r) : "no connection");
	return rc;
}

static const char *
ts_param(int64_t us, char buf[32])
{
	analytics_time_format_us(us, buf);
	return buf;
}

int
analytics_store_time_zone(pl_db *db, const char *tenant_id, char tz[80])
{
	const char *p[1] = { tenant_id };
	PGresult *r = pl_db_exec(db,
	                         "SELECT coalesce((SELECT time_zone FROM "
	                         "analytics.tenant_settings"
	                         " WHERE tenant_id = $1::uuid), 'UTC')",
	                         1, p);
	int rc = failed(r, "read the time zone");
	if (rc == PL_OK)
		snprintf(tz, 80, "%s", PQgetvalue(r, 0, 0));
	PQclear(r);
	return rc;
}

int
analytics_store_split(pl_db *db, const analytics_range *rg, analytics_split *s)
{
	char a[32], b[32];
	const char *p[3] = { rg->tenant_id, ts_param(rg->start_us, a),
		             ts_param(rg->end_us, b) };
	PGresult *r = pl_db_exec(
	        db,
	        "SELECT tz, d0, d1, d0 < d1,"
	        " to_char(d0::timestamp AT TIME ZONE tz AT TIME ZONE 'UTC',"
	        "  'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),"
	        " to_char(d1::timestamp AT TIME ZONE tz AT TIME ZONE 'UTC',"
	        "  'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
	        " FROM (SELECT tz, CASE WHEN (s AT TIME ZONE tz)::time = "
	        "'00:00'"
	        "   THEN (s AT TIME ZONE tz)::date"
	        "   ELSE (s AT TIME ZONE tz)::date + 1 END AS d0,"
	        "  (e AT TIME ZONE tz)::date AS d1"
	        "  FROM (SELECT coalesce((SELECT time_zone"
	        "    FROM analytics.tenant_settings WHERE tenant_id = "
	        "$1::uuid),"
	        "    'UTC') AS tz, $2::timestamptz AS s, $3::timestamptz AS e) "
	        "x) y",
	        3, p);
	int rc = failed(r, "split a range into days");
	if (rc == PL_OK) {
		snprintf(s->tz, sizeof(s->tz), "%s", PQgetvalue(r, 0, 0));
		snprintf(s->d0, sizeof(s->d0), "%s", PQgetvalue(r, 0, 1));
		snprintf(s->d1, sizeof(s->d1), "%s", PQgetvalue(r, 0, 2));
		s->has_days = strcmp(PQgetvalue(r, 0, 3), "t") == 0;
		if (!analytics_time_parse(PQgetvalue(r, 0, 4), &s->t0_us) ||
		    !analytics_time_parse(PQgetvalue(r, 0, 5), &s->t1_us))
			rc = PL_INTERNAL;
		if (!s->has_days) {
			s->t0_us = s->t1_us = rg->end_us;
			snprintf(s->d1, sizeof(s->d1), "%s", s->d0);
		}
	}
	PQclear(r);
	return rc;
}

static const char *
opt(const char *s)
{
	return s != NULL && s[0] != '\0' ? s : NULL;
}

int
analytics_store_raw(pl_db *db, const analytics_range *rg, int64_t a0,
                    int64_t b0, int64_t a1, int64_t b1,
                    const char *types_literal, const char *gran, const char *tz,
                    analytics_raw_fn fn, void *arg)
{
	char t[4][32];
	const char *p[11] = { rg->tenant_id,          ts_param(a0, t[0]),
		              ts_param(b0, t[1]),     ts_param(a1, t[2]),
		              ts_param(b1, t[3]),     opt(rg->channel_id),
		              opt(rg->agent_id),      opt(rg->campaign_id),
		              types_literal,          gran,
		              tz != NULL ? tz : "UTC" };
	if (a0 >= b0 && a1 >= b1)
		return PL_OK;
	PGresult *r = pl_db_exec(
	        db,
	        "SELECT type, payload::text, coalesce(channel_id::text, ''),"
	        " coalesce(agent_id::text, ''), coalesce(campaign_id::text, "
	        "''),"
	        " coalesce(user_id::text, ''),"
	        " CASE WHEN $10::text IS NULL THEN 0 ELSE (extract(epoch FROM"
	        "  date_trunc($10::text, occurred_at, $11::text)) * "
	        "1000000)::bigint"
	        " END"
	        " FROM analytics.events WHERE tenant_id = $1::uuid"
	        " AND ((occurred_at >= $2::timestamptz AND occurred_at < "
	        "$3::timestamptz)"
	        "  OR (occurred_at >= $4::timestamptz AND occurred_at < "
	        "$5::timestamptz))"
	        " AND ($6::uuid IS NULL OR channel_id = $6::uuid)"
	        " AND ($7::uuid IS NULL OR agent_id = $7::uuid)"
	        " AND ($8::uuid IS NULL OR campaign_id = $8::uuid)"
	        " AND ($9::text[] IS NULL OR type = ANY($9::text[]))",
	        11, p);
	int rc = failed(r, "scan raw events");
	if (rc == PL_OK) {
		int n = PQntuples(r);
		for (int i = 0; i < n; i++) {
			Parley__Rpc__V1__EventDimensions d =
			        PARLEY__RPC__V1__EVENT_DIMENSIONS__INIT;
			json_t *pl = json_loads(PQgetvalue(r, i, 1), 0, NULL);
			d.channel_id = PQgetvalue(r, i, 2);
			d.agent_id = PQgetvalue(r, i, 3);
			d.campaign_id = PQgetvalue(r, i, 4);
			d.user_id = PQgetvalue(r, i, 5);
			fn(arg, strtoll(PQgetvalue(r, i, 6), NULL, 10),
			   PQgetvalue(r, i, 0), &d, pl);
			json_decref(pl);
		}
	}
	PQclear(r);
	return rc;
}

int
analytics_store_rollups(pl_db *db, const char *tenant_id, const char *dim_key,
                        const char *dim_value, const char *d0, const char *d1,
                        const char *metrics_literal, analytics_row_fn fn,
                        void *arg)
{
	const char *p[6] = { tenant_id, dim_key, dim_value,
		             d0,        d1,      metrics_literal };
	PGresult *r = pl_db_exec(
	        db,
	        "SELECT dim_value, metric, sum(value)::bigint"
	        " FROM analytics.daily_rollups WHERE tenant_id = $1::uuid"
	        " AND dim_key = $2 AND ($3::text IS NULL OR dim_value = $3)"
	        " AND day >= $4::date AND day < $5::date"
	        " AND ($6::text[] IS NULL OR metric = ANY($6::text[]))"
	        " GROUP BY 1, 2",
	        6, p);
	int rc = failed(r, "read rollups");
	if (rc == PL_OK)
		for (int i = 0; i < PQntuples(r); i++)
			fn(arg, PQgetvalue(r, i, 0), PQgetvalue(r, i, 1),
			   strtoll(PQgetvalue(r, i, 2), NULL, 10));
	PQclear(r);
	return rc;
}

#define FILTER_SQL(c, a, k)                                                    \
	" AND ($" #c "::uuid IS NULL OR channel_id = $" #c "::uuid)"           \
	" AND ($" #a "::uuid IS NULL OR agent_id = $" #a "::uuid)"             \
	" AND ($" #k "::uuid IS NULL OR campaign_id = $" #k "::uuid)"

int
analytics_store_unique_contacts(pl_db *db, const analytics_range *rg,
                                const analytics_split *s, bool use_days,
                                int64_t *out)
{
	char t[4][32];
	int64_t t0 = use_days ? s->t0_us : rg->end_us;
	int64_t t1 = use_days ? s->t1_us : rg->end_us;
	const char *p[10] = { rg->tenant_id,
		              use_days ? s->d0 : "1970-01-01",
		              use_days ? s->d1 : "1970-01-01",
		              ts_param(rg->start_us, t[0]),
		              ts_param(t0, t[1]),
		              ts_param(t1, t[2]),
		              ts_param(rg->end_us, t[3]),
		              opt(rg->channel_id),
		              opt(rg->agent_id),
		              opt(rg->campaign_id) };
	PGresult *r = pl_db_exec(
	        db,
	        "SELECT count(DISTINCT c) FROM ("
	        " SELECT contact_id AS c FROM analytics.daily_contacts"
	        " WHERE tenant_id = $1::uuid AND day >= $2::date AND day < "
	        "$3::date"
	        " UNION ALL"
	        " SELECT contact_id FROM analytics.events WHERE tenant_id = "
	        "$1::uuid"
	        " AND ((occurred_at >= $4::timestamptz AND occurred_at < "
	        "$5::timestamptz)"
	        "  OR (occurred_at >= $6::timestamptz AND occurred_at < "
	        "$7::timestamptz))"
	        " AND contact_id IS NOT NULL"
	        " AND type IN ('message.received', 'message.sent')" FILTER_SQL(
	                8, 9, 10) ") x",
	        10, p);
	int rc = failed(r, "count unique contacts");
	if (rc == PL_OK)
		*out = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
	PQclear(r);
	return rc;
}

int
analytics_store_frt_both(pl_db *db, const analytics_range *rg,
                         Parley__Analytics__V1__DurationStats *bot,
                         Parley__Analytics__V1__DurationStats *human)
{
	char t[2][32];
	const char *p[6] = { rg->tenant_id,
		             ts_param(rg->start_us, t[0]),
		             ts_param(rg->end_us, t[1]),
		             opt(rg->channel_id),
		             opt(rg->agent_id),
		             opt(rg->campaign_id) };
	PGresult *r = pl_db_exec(
	        db,
	        "SELECT kind, count(*),"
	        " percentile_disc(0.5) WITHIN GROUP (ORDER BY ms),"
	        " percentile_disc(0.9) WITHIN GROUP (ORDER BY ms)"
	        " FROM analytics.response_times WHERE tenant_id = $1::uuid"
	        " AND occurred_at >= $2::timestamptz"
	        " AND occurred_at < $3::timestamptz" FILTER_SQL(
	                4, 5, 6) " GROUP BY 1",
	        6, p);
	int rc = failed(r, "compute response times");
	bot->count = bot->median_ms = bot->p90_ms = 0;
	human->count = human->median_ms = human->p90_ms = 0;
	if (rc == PL_OK)
		for (int i = 0; i < PQntuples(r); i++) {
			Parley__Analytics__V1__DurationStats *d =
			        strcmp(PQgetvalue(r, i, 0), "bot") == 0 ? bot
			                                                : human;
			d->count = strtoll(PQgetvalue(r, i, 1), NULL, 10);
			d->median_ms = strtoll(PQgetvalue(r, i, 2), NULL, 10);
			d->p90_ms = strtoll(PQgetvalue(r, i, 3), NULL, 10);
		}
	PQclear(r);
	return rc;
}

int
analytics_store_buckets(pl_db *db, const analytics_range *rg, const char *gran,
                        const char *tz, int64_t **out, size_t *n,
                        pl_arena *arena)
{
	char t[2][32];
	const char *p[4] = { ts_param(rg->start_us, t[0]),
		             ts_param(rg->end_us, t[1]), tz, gran };
	PGresult *r;

	if (strcmp(gran, "hour") == 0)
		r = pl_db_exec(
		        db,
		        "SELECT (extract(epoch FROM b) * 1000000)::bigint"
		        " FROM generate_series(date_trunc('hour', "
		        "$1::timestamptz,"
		        "  $3::text), $2::timestamptz - interval '1 "
		        "microsecond',"
		        "  interval '1 hour') b WHERE $4::text = 'hour'",
		        4, p);
	else
		r = pl_db_exec(
		        db,
		        "SELECT (extract(epoch FROM (b AT TIME ZONE $3::text))"
		        "  * 1000000)::bigint"
		        " FROM generate_series(date_trunc($4::text, "
		        "$1::timestamptz"
		        "  AT TIME ZONE $3::text), ($2::timestamptz AT TIME "
		        "ZONE"
		        "  $3::text) - interval '1 microsecond',"
		        "  ('1 ' || $4::text)::interval) b",
		        4, p);
	int rc = failed(r, "make buckets");
	if (rc == PL_OK) {
		int rows = PQntuples(r);
		*n = 0;
		*out = pl_arena_alloc(arena,
		                      (size_t)(rows + 1) * sizeof(int64_t));
		if (*out == NULL)
			rc = PL_RESOURCE_EXHAUSTED;
		for (int i = 0; rc == PL_OK && i < rows; i++)
			(*out)[(*n)++] = strtoll(PQgetvalue(r, i, 0), NULL, 10);
	}
	PQclear(r);
	return rc;
}

static int
points(PGresult *r, const char *what, analytics_point_fn fn, void *arg)
{
	int rc = failed(r, what);
	if (rc == PL_OK)
		for (int i = 0; i < PQntuples(r); i++)
			fn(arg, strtoll(PQgetvalue(r, i, 0), NULL, 10),
			   strtoll(PQgetvalue(r, i, 1), NULL, 10));
	PQclear(r);
	return rc;
}

int
analytics_store_series_rollups(pl_db *db, const char *tenant_id,
                               const char *dim_key, const char *dim_value,
                               const char *d0, const char *d1,
                               const char *metrics_literal, const char *gran,
                               const char *tz, analytics_point_fn fn, void *arg)
{
	const char *p[8] = { tenant_id, dim_key,         dim_value, d0,
		             d1,        metrics_literal, gran,      tz };
	return points(
	        pl_db_exec(db,
	                   "SELECT (extract(epoch FROM (date_trunc($7::text,"
	                   "  day::timestamp) AT TIME ZONE $8::text)) * "
	                   "1000000)::bigint,"
	                   " sum(value)::bigint FROM analytics.daily_rollups"
	                   " WHERE tenant_id = $1::uuid AND dim_key = $2"
	                   " AND dim_value = $3 AND day >= $4::date AND day < "
	                   "$5::date"
	                   " AND metric = ANY($6::text[]) GROUP BY 1",
	                   8, p),
	        "read rollups by bucket", fn, arg);
}

int
analytics_store_series_hourly(pl_db *db, const analytics_range *rg,
                              const char *tz, const int *cols, size_t n_cols,
                              int64_t *a_us, int64_t *b_us,
                              analytics_point_fn fn, void *arg)
{
	char t[2][32], sql[1024], expr[256];
	size_t len = 0;
	const char *p[4] = { rg->tenant_id, ts_param(rg->start_us, t[0]),
		             ts_param(rg->end_us, t[1]), tz };

	// The column names come from analytics_hourly_metrics, never from
	// input.
	expr[0] = '\0';
	for (size_t i = 0; i < n_cols; i++) {
		if (cols[i] < 0 || cols[i] >= ANALYTICS_HOURLY_N)
			return PL_INTERNAL;
		int w = snprintf(expr + len, sizeof(expr) - len, "%s%s",
		                 i ? " + " : "",
		                 analytics_hourly_metrics[cols[i]]);
		if (w < 0 || (size_t)w >= sizeof(expr) - len)
			return PL_INTERNAL;
		len += (size_t)w;
	}
	if (n_cols == 0)
		return PL_INTERNAL;
	snprintf(sql, sizeof(sql),
	         "WITH k AS (SELECT CASE WHEN date_trunc('hour', x, $4::text)"
	         "  = x THEN x ELSE date_trunc('hour', x, $4::text)"
	         "  + interval '1 hour' END AS a,"
	         "  date_trunc('hour', $3::timestamptz, $4::text) AS b"
	         " FROM (SELECT greatest($2::timestamptz, (SELECT hourly_from"
	         "  FROM analytics.rollup_epochs)) AS x) s)"
	         " SELECT 0, (extract(epoch FROM a) * 1000000)::bigint,"
	         "  (extract(epoch FROM b) * 1000000)::bigint FROM k"
	         " UNION ALL"
	         " SELECT 1, (extract(epoch FROM h.hour) * 1000000)::bigint,"
	         "  (%s)::bigint"
	         " FROM analytics.hourly_rollups h, k WHERE h.tenant_id ="
	         "  $1::uuid AND h.hour >= k.a AND h.hour < k.b",
	         expr);
	PGresult *r = pl_db_exec(db, sql, 4, p);
	int rc = failed(r, "read hourly rollups");
	*a_us = *b_us = rg->end_us;
	if (rc == PL_OK) {
		for (int i = 0; i < PQntuples(r); i++) {
			int64_t x = strtoll(PQgetvalue(r, i, 1), NULL, 10),
			        y = strtoll(PQgetvalue(r, i, 2), NULL, 10);
			if (strcmp(PQgetvalue(r, i, 0), "0") == 0) {
				*a_us = x;
				*b_us = y;
			} else {
				fn(arg, x, y);
			}
		}
		if (*a_us >= *b_us) // no whole hour: all raw
			*a_us = *b_us = rg->end_us;
	}
	PQclear(r);
	return rc;
}

int
analytics_store_series_contacts(pl_db *db, const analytics_range *rg,
                                const char *gran, const char *tz,
                                analytics_point_fn fn, void *arg)
{
	char t[2][32];
	const char *p[7] = { rg->tenant_id,
		             ts_param(rg->start_us, t[0]),
		             ts_param(rg->end_us, t[1]),
		             opt(rg->channel_id),
		             opt(rg->agent_id),
		             opt(rg->campaign_id),
		             gran };
	const char *q[8] = { p[0], p[1], p[2], p[3], p[4], p[5], p[6], tz };
	return points(
	        pl_db_exec(db,
	                   "SELECT (extract(epoch FROM date_trunc($7::text,"
	                   "  occurred_at, $8::text)) * 1000000)::bigint,"
	                   " count(DISTINCT contact_id) FROM analytics.events"
	                   " WHERE tenant_id = $1::uuid"
	                   " AND occurred_at >= $2::timestamptz"
	                   " AND occurred_at < $3::timestamptz"
	                   " AND contact_id IS NOT NULL"
	                   " AND type IN ('message.received', "
	                   "'message.sent')" FILTER_SQL(4, 5, 6) " GROUP BY 1",
	                   8, q),
	        "count contacts by bucket", fn, arg);
}

int
analytics_store_series_frt(pl_db *db, const analytics_range *rg,
                           const char *kind, const char *gran, const char *tz,
                           analytics_point_fn fn, void *arg)
{
	char t[2][32];
	const char *p[9] = { rg->tenant_id,
		             ts_param(rg->start_us, t[0]),
		             ts_param(rg->end_us, t[1]),
		             opt(rg->channel_id),
		             opt(rg->agent_id),
		             opt(rg->campaign_id),
		             gran,
		             tz,
		             kind };
	return points(
	        pl_db_exec(db,
	                   "SELECT (extract(epoch FROM date_trunc($7::text,"
	                   "  occurred_at, $8::text)) * 1000000)::bigint,"
	                   " percentile_disc(0.5) WITHIN GROUP (ORDER BY ms)"
	                   " FROM analytics.response_times"
	                   " WHERE tenant_id = $1::uuid AND kind = $9"
	                   " AND occurred_at >= $2::timestamptz"
	                   " AND occurred_at < $3::timestamptz" FILTER_SQL(
	                           4, 5, 6) " GROUP BY 1",
	                   9, p),
	        "compute response times by bucket", fn, arg);
}

int
analytics_store_monthly(pl_db *db, const char *tenant_id,
                        const char *start_month, const char *end_month,
                        analytics_month_fn fn, void *arg)
{
	const char *p[3] = { tenant_id, start_month, end_month };
	PGresult *r = pl_db_exec(
	        db,
	        "SELECT to_char(m, 'YYYY-MM'), coalesce(u.messages_in, 0),"
	        " coalesce(u.messages_out, 0), coalesce(u.conversations, 0),"
	        " (SELECT count(DISTINCT c.contact_id)"
	        "  FROM analytics.daily_contacts c WHERE c.tenant_id = $1::uuid"
	        "  AND c.day >= m::date"
	        "  AND c.day < (m + interval '1 month')::date),"
	        " coalesce(u.ai_replies, 0),"
	        " coalesce(u.ai_tokens, 0), coalesce(u.campaign_sent, 0),"
	        " coalesce(u.quota_refusals, 0)"
	        " FROM generate_series($2::date, $3::date, interval '1 month') "
	        "m"
	        " LEFT JOIN analytics.monthly_usage u ON u.tenant_id = $1::uuid"
	        "  AND u.month = m::date ORDER BY m",
	        3, p);
	int rc = failed(r, "read monthly usage");
	if (rc == PL_OK)
		for (int i = 0; i < PQntuples(r); i++)
			fn(arg, r, i);
	PQclear(r);
	return rc;
}

int
analytics_store_platform(pl_db *db, const char *d0, const char *d1,
                         int64_t start_us, int64_t end_us, int top,
                         analytics_sums *sums, int64_t *active,
                         int64_t *contacts,
                         Parley__Analytics__V1__DurationStats *bot,
                         Parley__Analytics__V1__DurationStats *human,
                         PGresult **top_rows)
{
	char t[2][32], lim[16];
	const char *p[2] = { d0, d1 };
	PGresult *r;
	int rc;

	r = pl_db_exec(
	        db,
	        "SELECT metric, sum(value)::bigint, count(DISTINCT tenant_id)"
	        " FROM analytics.daily_rollups WHERE dim_key = ''"
	        " AND day >= $1::date AND day < $2::date GROUP BY 1",
	        2, p);
	rc = failed(r, "sum platform rollups");
	if (rc == PL_OK)
		for (int i = 0; i < PQntuples(r); i++) {
			analytics_sums_add(
			        sums, PQgetvalue(r, i, 0),
			        strtoll(PQgetvalue(r, i, 1), NULL, 10));
			if (strcmp(PQgetvalue(r, i, 0), "events") == 0)
				*active =
				        strtoll(PQgetvalue(r, i, 2), NULL, 10);
		}
	PQclear(r);
	if (rc != PL_OK)
		return rc;
	r = pl_db_exec(
	        db,
	        "SELECT count(*) FROM (SELECT DISTINCT tenant_id, contact_id"
	        " FROM analytics.daily_contacts WHERE day >= $1::date"
	        " AND day < $2::date) x",
	        2, p);
	rc = failed(r, "count platform contacts");
	if (rc == PL_OK)
		*contacts = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
	PQclear(r);
	if (rc != PL_OK)
		return rc;
	const char *q[2] = { ts_param(start_us, t[0]), ts_param(end_us, t[1]) };
	r = pl_db_exec(db,
	               "SELECT kind, count(*),"
	               " percentile_disc(0.5) WITHIN GROUP (ORDER BY ms),"
	               " percentile_disc(0.9) WITHIN GROUP (ORDER BY ms)"
	               " FROM analytics.response_times WHERE occurred_at >= "
	               "$1::timestamptz"
	               " AND occurred_at < $2::timestamptz GROUP BY 1",
	               2, q);
	rc = failed(r, "compute platform response times");
	if (rc == PL_OK)
		for (int i = 0; i < PQntuples(r); i++) {
			Parley__Analytics__V1__DurationStats *d =
			        strcmp(PQgetvalue(r, i, 0), "bot") == 0 ? bot
			                                                : human;
			d->count = strtoll(PQgetvalue(r, i, 1), NULL, 10);
			d->median_ms = strtoll(PQgetvalue(r, i, 2), NULL, 10);
			d->p90_ms = strtoll(PQgetvalue(r, i, 3), NULL, 10);
		}
	PQclear(r);
	if (rc != PL_OK)
		return rc;
	snprintf(lim, sizeof(lim), "%d", top);
	const char *s[3] = { d0, d1, lim };
	r = pl_db_exec(
	        db,
	        "SELECT tenant_id,"
	        " coalesce(sum(value) FILTER (WHERE metric = 'messages_in'), "
	        "0),"
	        " coalesce(sum(value) FILTER (WHERE metric = 'messages_out'), "
	        "0),"
	        " coalesce(sum(value) FILTER (WHERE metric = "
	        "'conversations_started'), 0),"
	        " coalesce(sum(value) FILTER (WHERE metric IN ('ai_tokens_in',"
	        "  'ai_tokens_out')), 0)"
	        " FROM analytics.daily_rollups WHERE dim_key = ''"
	        " AND day >= $1::date AND day < $2::date"
	        " AND metric IN ('messages_in', 'messages_out',"
	        "  'conversations_started', 'ai_tokens_in', 'ai_tokens_out')"
	        " GROUP BY 1 ORDER BY 2 + 3 DESC, 1 LIMIT $3::int",
	        3, s);
	rc = failed(r, "rank tenants");
	if (rc == PL_OK)
		*top_rows = r;
	else
		PQclear(r);
	return rc;
}

int
analytics_store_list_events(pl_db *db, const char *tenant_id, int64_t start_us,
                            int64_t end_us, const char *type_exact,
                            const char *type_prefix,
                            const char *conversation_id, const char *cursor_at,
                            const char *cursor_id, int limit, PGresult **out)
{
	char t[2][32], lim[16];
	const char *p[9];
	snprintf(lim, sizeof(lim), "%d", limit);
	p[0] = tenant_id;
	p[1] = ts_param(start_us, t[0]);
	p[2] = ts_param(end_us, t[1]);
	p[3] = type_exact;
	p[4] = type_prefix;
	p[5] = conversation_id;
	p[6] = cursor_at;
	p[7] = cursor_id;
	p[8] = lim;
	PGresult *r = pl_db_exec(
	        db,
	        "SELECT id, tenant_id, type,"
	        " to_char(occurred_at AT TIME ZONE 'UTC',"
	        "  'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),"
	        " source, coalesce(channel_id::text, ''),"
	        " coalesce(agent_id::text, ''), coalesce(campaign_id::text, "
	        "''),"
	        " coalesce(conversation_id::text, ''),"
	        " coalesce(contact_id::text, ''), coalesce(user_id::text, ''),"
	        " payload::text, version"
	        " FROM analytics.events WHERE tenant_id = $1::uuid"
	        " AND occurred_at >= $2::timestamptz AND occurred_at < "
	        "$3::timestamptz"
	        " AND ($4::text IS NULL OR type = $4)"
	        " AND ($5::text IS NULL OR starts_with(type, $5))"
	        " AND ($6::uuid IS NULL OR conversation_id = $6::uuid)"
	        " AND ($7::timestamptz IS NULL OR (occurred_at, id) <"
	        "  ($7::timestamptz, $8::uuid))"
	        " ORDER BY occurred_at DESC, id DESC LIMIT $9::int",
	        9, p);
	int rc = failed(r, "list events");
	if (rc == PL_OK)
		*out = r;
	else
		PQclear(r);
	return rc;
}
