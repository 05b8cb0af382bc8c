// Analytics intake against a real PostgreSQL: the rollups, contacts and
// monthly usage grouped in C must equal what SQL computes from the raw
// events, for batches mixing new and replayed events, for concurrent
// overlapping batches, and for tenants in zones with half- and
// quarter-hour offsets.
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <libpq-fe.h>

#include "analytics.h"
#include "pl/id.h"
#include "svch.h"

static pgh pg;
static svch h;
static bool up;

#define M(x) "/parley.analytics.v1.Analytics/" x

static int
setup(void **state)
{
	(void)state;
	int rc = pgh_start(&pg);
	if (rc == -2)
		return -1;
	if (rc == -1)
		return 0;
	if (svch_start(&h, &pg, &analytics_service_def, 2, NULL) != 0)
		return -1;
	up = true;
	return 0;
}

static int
teardown(void **state)
{
	(void)state;
	if (up)
		svch_stop(&h);
	pgh_stop(&pg);
	return 0;
}

// One scalar from the database, as the superuser (sees every tenant).
static long
scalar(const char *sql)
{
	PGconn *c = PQconnectdb(h.admin_url);
	PGresult *r = PQexec(c, sql);
	long v = -1;
	if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
		v = atol(PQgetvalue(r, 0, 0));
	else
		fprintf(stderr, "%s: %s\n", sql, PQresultErrorMessage(r));
	PQclear(r);
	PQfinish(c);
	return v;
}

// Rows where the stored aggregates differ from the raw events.
static long
mismatches(void)
{
	long n = 0, last = 0;
#define CHECKED(what)                                                          \
	do {                                                                   \
		if (n != last)                                                 \
			fprintf(stderr, "mismatch: %s: %ld\n", what,           \
			        n - last);                                     \
		last = n;                                                      \
	} while (0)
	// Events per tenant-local day, and messages_in per channel.
	n += scalar("SELECT count(*) FROM ("
	            " SELECT e.tenant_id, (e.occurred_at AT TIME ZONE"
	            "  coalesce(s.time_zone, 'UTC'))::date AS day,"
	            "  count(*) AS n FROM analytics.events e"
	            " LEFT JOIN analytics.tenant_settings s USING (tenant_id)"
	            " GROUP BY 1, 2) a"
	            " FULL JOIN (SELECT tenant_id, day, value AS n"
	            "  FROM analytics.daily_rollups WHERE dim_key = ''"
	            "  AND metric = 'events') b USING (tenant_id, day)"
	            " WHERE a.n IS DISTINCT FROM b.n");
	CHECKED("events per day");
	n += scalar(
	        "SELECT count(*) FROM ("
	        " SELECT e.tenant_id, e.channel_id::text AS ch,"
	        "  (e.occurred_at AT TIME ZONE"
	        "  coalesce(s.time_zone, 'UTC'))::date AS day,"
	        "  count(*) AS n FROM analytics.events e"
	        " LEFT JOIN analytics.tenant_settings s USING (tenant_id)"
	        " WHERE e.type = 'message.received'"
	        "  AND e.channel_id IS NOT NULL GROUP BY 1, 2, 3) a"
	        " FULL JOIN (SELECT tenant_id, dim_value AS ch, day,"
	        "  value AS n FROM analytics.daily_rollups"
	        "  WHERE dim_key = 'channel' AND metric = 'messages_in') b"
	        " USING (tenant_id, ch, day) WHERE a.n IS DISTINCT FROM b.n");
	// Contacts per day, both ways.
	CHECKED("messages_in per channel and day");
	n += scalar("SELECT count(*) FROM ((SELECT DISTINCT e.tenant_id,"
	            "  (e.occurred_at AT TIME ZONE coalesce(s.time_zone,"
	            "  'UTC'))::date, e.contact_id FROM analytics.events e"
	            " LEFT JOIN analytics.tenant_settings s USING (tenant_id)"
	            " WHERE e.contact_id IS NOT NULL"
	            "  AND e.type IN ('message.received', 'message.sent')"
	            " EXCEPT SELECT tenant_id, day, contact_id"
	            "  FROM analytics.daily_contacts)"
	            " UNION ALL (SELECT tenant_id, day, contact_id"
	            "  FROM analytics.daily_contacts EXCEPT"
	            " SELECT DISTINCT e.tenant_id,"
	            "  (e.occurred_at AT TIME ZONE coalesce(s.time_zone,"
	            "  'UTC'))::date, e.contact_id FROM analytics.events e"
	            " LEFT JOIN analytics.tenant_settings s USING (tenant_id)"
	            " WHERE e.contact_id IS NOT NULL"
	            "  AND e.type IN ('message.received', 'message.sent'))) x");
	CHECKED("contacts per day");
	// Monthly usage: messages per local month, and the month's unique
	// contacts as MonthlyUsage counts them (from daily_contacts).
	n += scalar("SELECT count(*) FROM ("
	            " SELECT e.tenant_id, date_trunc('month', e.occurred_at"
	            "  AT TIME ZONE coalesce(s.time_zone, 'UTC'))::date AS "
	            "month,"
	            "  count(*) FILTER (WHERE type = 'message.received') AS mi,"
	            "  count(DISTINCT contact_id) FILTER (WHERE type IN"
	            "  ('message.received', 'message.sent')) AS uc"
	            " FROM analytics.events e"
	            " LEFT JOIN analytics.tenant_settings s USING (tenant_id)"
	            " GROUP BY 1, 2) a"
	            " FULL JOIN (SELECT tenant_id, month, messages_in AS mi,"
	            "  (SELECT count(DISTINCT c.contact_id)"
	            "   FROM analytics.daily_contacts c"
	            "   WHERE c.tenant_id = u.tenant_id AND c.day >= u.month"
	            "   AND c.day < (u.month + interval '1 month')::date) AS uc"
	            "  FROM analytics.monthly_usage u) b"
	            " USING (tenant_id, month)"
	            " WHERE a.mi IS DISTINCT FROM b.mi"
	            "  OR a.uc IS DISTINCT FROM b.uc");
	CHECKED("monthly usage");
	// Response times: one per message.sent with response_ms.
	n += labs(scalar("SELECT count(*) FROM analytics.events"
	                 " WHERE type = 'message.sent'"
	                 " AND payload ? 'response_ms'") -
	          scalar("SELECT count(*) FROM analytics.response_times"));
	CHECKED("response times");
	// Hourly counters per tenant-local hour.
	n += scalar("SELECT count(*) FROM ("
	            " SELECT e.tenant_id, date_trunc('hour', e.occurred_at,"
	            "  coalesce(s.time_zone, 'UTC')) AS hour,"
	            "  count(*) FILTER (WHERE type = 'message.received') AS mi,"
	            "  count(*) FILTER (WHERE type = 'message.sent'"
	            "   AND payload->>'sender' = 'bot') AS mob"
	            " FROM analytics.events e"
	            " LEFT JOIN analytics.tenant_settings s USING (tenant_id)"
	            " GROUP BY 1, 2 HAVING count(*) FILTER (WHERE type IN"
	            "  ('message.received', 'message.sent')) > 0) a"
	            " FULL JOIN (SELECT tenant_id, hour, messages_in AS mi,"
	            "  messages_out_bot AS mob FROM analytics.hourly_rollups) b"
	            " USING (tenant_id, hour)"
	            " WHERE a.mi IS DISTINCT FROM b.mi"
	            "  OR a.mob IS DISTINCT FROM b.mob");
	CHECKED("hourly counters");
#undef CHECKED
	return n;
}

typedef struct batch {
	size_t n;
	Parley__Rpc__V1__Event *ev[64];
} batch;

static const char *contacts[] = { "0190a000-0000-7000-8000-00000000c001",
	                          "0190a000-0000-7000-8000-00000000c002",
	                          "0190a000-0000-7000-8000-00000000c003" };
static const char *chan = "0190a000-0000-7000-8000-00000000ca11";

// Event i of tenant: received/sent messages every `step` minutes from
// `from_us`, with contacts, a channel and some response times.
static Parley__Rpc__V1__Event *
mk(pl_arena *a, const char *tenant, int64_t at_us, int i)
{
	Parley__Rpc__V1__Event *e = pl_arena_zalloc(a, sizeof(*e));
	Parley__Rpc__V1__EventDimensions *d = pl_arena_zalloc(a, sizeof(*d));
	Parley__Rpc__V1__Json *j = pl_arena_zalloc(a, sizeof(*j));
	char id[37], when[32];
	parley__rpc__v1__event__init(e);
	parley__rpc__v1__event_dimensions__init(d);
	parley__rpc__v1__json__init(j);
	pl_uuid7_str(id);
	analytics_time_format_ms(at_us, when);
	e->id = pl_arena_strdup(a, id);
	e->tenant_id = (char *)tenant;
	e->type = i % 3 == 2 ? "message.sent" : "message.received";
	e->occurred_at = pl_arena_strdup(a, when);
	e->source = "test";
	d->contact_id = (char *)contacts[i % 3 == 1         ? 1
	                                 : (i / 3) % 3 == 0 ? 0
	                                                    : 2];
	d->channel_id = (char *)chan;
	j->text =
	        i % 3 == 2 ? "{\"sender\":\"bot\",\"response_ms\":120}" : "{}";
	e->dimensions = d;
	e->payload = j;
	return e;
}

static Parley__Rpc__V1__Event *
mk_tenant(pl_arena *a, const char *tenant, const char *zone, int64_t at_us)
{
	Parley__Rpc__V1__Event *e = mk(a, tenant, at_us, 0);
	e->type = "tenant.created";
	e->payload->text = pl_arena_printf(
	        a, "{\"name\":\"t\",\"time_zone\":\"%s\"}", zone);
	e->dimensions->contact_id = "";
	return e;
}

static int
track(pl_arena *a, Parley__Rpc__V1__Event **ev, size_t n, int *accepted)
{
	Parley__Analytics__V1__TrackRequest in =
	        PARLEY__ANALYTICS__V1__TRACK_REQUEST__INIT;
	Parley__Analytics__V1__TrackResponse *out = NULL;
	pl_principal svc = svch_service();
	pl_rpc_opts o = { .principal = &svc, .timeout_ms = 30000 };
	in.events = ev;
	in.n_events = n;
	int rc = pl_rpc_call(h.cli, M("Track"), &in.base,
	                     &parley__analytics__v1__track_response__descriptor,
	                     (void **)&out, a, &o, NULL);
	if (rc == PL_OK && accepted != NULL)
		*accepted = out->accepted;
	return rc;
}

static void
test_mixed_replay(void **state)
{
	(void)state;
	if (!up)
		skip();
	static batch b;
	char tenant[37];
	int acc = -1;
	int64_t t0 = analytics_now_us() - 2LL * 86400 * 1000000;
	pl_uuid7_str(tenant);
	b.n = 0;
	for (int i = 0; i < 40; i++)
		b.ev[b.n++] = mk(&h.arena, tenant,
		                 t0 + (int64_t)i * 37 * 60 * 1000000, i);
	assert_int_equal(track(&h.arena, b.ev, 20, &acc), PL_OK);
	assert_int_equal(acc, 20);
	// Events 10..39: 10 replayed, 20 new, and one new id twice.
	b.ev[40] = b.ev[30];
	assert_int_equal(track(&h.arena, b.ev + 10, 31, &acc), PL_OK);
	assert_int_equal(acc, 20);
	assert_int_equal(scalar("SELECT count(*) FROM analytics.events"), 40);
	assert_int_equal(mismatches(), 0);
	pl_arena_reset(&h.arena);
}

// One batch over three months: one COPY per month's partition (one of
// them made on demand); then the same batch again with one new event:
// only that one counts.
static void
test_batch_spans_months(void **state)
{
	(void)state;
	if (!up)
		skip();
	static batch b;
	char tenant[37];
	int acc = -1;
	int64_t day = 86400LL * 1000000, now = analytics_now_us();
	long before = scalar("SELECT count(*) FROM analytics.events");
	pl_uuid7_str(tenant);
	b.n = 0;
	for (int i = 0; i < 30; i++)
		b.ev[b.n++] =
		        mk(&h.arena, tenant,
		           now - (i % 3) * 40 * day - (i + 1) * 60000000LL, i);
	assert_int_equal(track(&h.arena, b.ev, 30, &acc), PL_OK);
	assert_int_equal(acc, 30);
	assert_true(scalar("SELECT count(DISTINCT analytics.month_of("
	                   "occurred_at)) FROM analytics.events") >= 3);
	b.ev[b.n++] = mk(&h.arena, tenant, now - 81 * day, 30);
	assert_int_equal(track(&h.arena, b.ev, 31, &acc), PL_OK);
	assert_int_equal(acc, 1);
	assert_int_equal(
	        scalar("SELECT count(*) FROM analytics.events") - before, 31);
	assert_int_equal(mismatches(), 0);
	pl_arena_reset(&h.arena);
}

// Four threads send the same 2,000 events in overlapping batches, in
// different orders, at once: each event counts once.
typedef struct racer {
	Parley__Rpc__V1__Event **all;
	int which;
	int failed;
} racer;

static void *
race(void *arg)
{
	racer *r = arg;
	pl_arena a;
	pl_arena_init(&a, 0, 0);
	for (int k = 0; k < 4; k++) {
		// Batches of 500 at 0, 250, 750, 1250: they overlap.
		int part = (k + r->which) % 4;
		int from = part == 0 ? 0 : part * 500 - 250;
		if (track(&a, r->all + from, 500, NULL) != PL_OK)
			r->failed++;
		pl_arena_reset(&a);
	}
	// The tail the windows miss.
	if (track(&a, r->all + 1750, 250, NULL) != PL_OK)
		r->failed++;
	pl_arena_fini(&a);
	return NULL;
}

static void
test_concurrent_overlap(void **state)
{
	(void)state;
	if (!up)
		skip();
	static Parley__Rpc__V1__Event *all[2000];
	char tenants[4][37];
	int64_t t0 = analytics_now_us() - 3LL * 86400 * 1000000;
	long before = scalar("SELECT count(*) FROM analytics.events");
	for (int t = 0; t < 4; t++)
		pl_uuid7_str(tenants[t]);
	for (int i = 0; i < 2000; i++)
		all[i] = mk(&h.arena, tenants[i % 4],
		            t0 + (int64_t)i * 2 * 60 * 1000000, i);
	pthread_t th[4];
	racer r[4];
	for (int i = 0; i < 4; i++) {
		r[i] = (racer){ all, i, 0 };
		pthread_create(&th[i], NULL, race, &r[i]);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		assert_int_equal(r[i].failed, 0);
	}
	assert_int_equal(
	        scalar("SELECT count(*) FROM analytics.events") - before, 2000);
	assert_int_equal(mismatches(), 0);
	pl_arena_reset(&h.arena);
}

// Zones with half- and quarter-hour offsets and DST, learned in the same
// batch as the events, events every 7 minutes over three days; then
// TimeSeries by hour through the hourly rollups against raw scans.
static void
test_zones_match_raw(void **state)
{
	(void)state;
	if (!up)
		skip();
	static const char *zones[] = { "Asia/Kathmandu", "Australia/Lord_Howe",
		                       "America/Sao_Paulo", "Asia/Kolkata",
		                       "Pacific/Chatham" };
	static Parley__Rpc__V1__Event *ev[3200];
	char tenants[5][37];
	int64_t t0 = analytics_now_us() - 4LL * 86400 * 1000000;
	size_t n = 0;
	for (int t = 0; t < 5; t++) {
		pl_uuid7_str(tenants[t]);
		ev[n++] =
		        mk_tenant(&h.arena, tenants[t], zones[t], t0 - 1000000);
	}
	for (int i = 0; n < 3100; i++)
		ev[n++] = mk(&h.arena, tenants[i % 5],
		             t0 + (int64_t)i * 7 * 60 * 1000000 / 5, i / 5);
	for (size_t k = 0; k < n; k += 1000)
		assert_int_equal(track(&h.arena, ev + k,
		                       n - k < 1000 ? n - k : 1000, NULL),
		                 PL_OK);
	assert_int_equal(scalar("SELECT count(DISTINCT time_zone)"
	                        " FROM analytics.tenant_settings"),
	                 5);
	assert_int_equal(mismatches(), 0);
	// TimeSeries by hour from a mid-hour start: hourly rollups for
	// whole hours and raw edges must give what the raw scan alone gives
	// (a channel filter forces it), in every zone, and again when the
	// hourly rollups only serve hours after a later hourly_from.
	for (int t = 0; t < 5; t++) {
		int64_t a = t0 + 37LL * 60 * 1000000 + 7000000,
		        b = t0 + 2LL * 86400 * 1000000 + 13LL * 60 * 1000000;
		int64_t v[3][60];
		size_t np[3];
		long want = 0;
		for (int mode = 0; mode < 3; mode++) {
			if (mode == 2) {
				char sql[200], at[32];
				analytics_time_format_us(
				        t0 + 86400LL * 1000000 + 1800000000LL,
				        at);
				snprintf(sql, sizeof(sql),
				         "UPDATE analytics.rollup_epochs SET"
				         " hourly_from = '%s' RETURNING 1",
				         at);
				assert_int_equal(scalar(sql), 1);
			}
			Parley__Analytics__V1__TimeSeriesRequest in =
			        PARLEY__ANALYTICS__V1__TIME_SERIES_REQUEST__INIT;
			Parley__Analytics__V1__Filter f =
			        PARLEY__ANALYTICS__V1__FILTER__INIT;
			Parley__Analytics__V1__TimeSeriesResponse *out = NULL;
			char sa[32], sb[32];
			analytics_time_format_ms(a, sa);
			analytics_time_format_ms(b, sb);
			in.start_at = sa;
			in.end_at = sb;
			in.metric =
			        PARLEY__ANALYTICS__V1__METRIC__METRIC_MESSAGES_IN;
			in.granularity =
			        PARLEY__ANALYTICS__V1__GRANULARITY__GRANULARITY_HOUR;
			if (mode == 1) {
				f.channel_id = (char *)chan;
				in.filter = &f;
			}
			pl_principal p = svch_user(tenants[t], chan, 1);
			assert_int_equal(
			        svch_call(
			                &h, M("TimeSeries"), &p, &in.base,
			                &parley__analytics__v1__time_series_response__descriptor,
			                (void **)&out, NULL),
			        PL_OK);
			np[mode] = out->n_points;
			assert_true(np[mode] >= 48 && np[mode] <= 50);
			long sum = 0;
			for (size_t i = 0; i < out->n_points; i++) {
				v[mode][i] = out->points[i]->value;
				sum += out->points[i]->value;
			}
			if (mode == 0) {
				char sql[400];
				snprintf(sql, sizeof(sql),
				         "SELECT count(*) FROM analytics.events"
				         " WHERE tenant_id = '%s' AND type ="
				         " 'message.received' AND occurred_at"
				         " >= '%s' AND occurred_at < '%s'",
				         tenants[t], sa, sb);
				want = scalar(sql);
				assert_true(want > 100);
			}
			assert_int_equal(sum, want);
		}
		assert_int_equal(np[0], np[1]);
		assert_int_equal(np[0], np[2]);
		assert_memory_equal(v[0], v[1], np[0] * sizeof(int64_t));
		assert_memory_equal(v[0], v[2], np[0] * sizeof(int64_t));
		assert_int_equal(
		        scalar("UPDATE analytics.rollup_epochs SET"
		               " hourly_from = '-infinity' RETURNING 1"),
		        1);
	}
	pl_arena_reset(&h.arena);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_mixed_replay),
		cmocka_unit_test(test_batch_spans_months),
		cmocka_unit_test(test_concurrent_overlap),
		cmocka_unit_test(test_zones_match_raw),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
