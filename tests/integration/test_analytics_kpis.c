// Analytics against a real PostgreSQL through the RPC server: replays
// counted once, bad batches refused whole, time-zone day boundaries, late
// events, every KPI on a hand-made data set, tenant isolation, partitions
// made ahead and retention.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "analytics.h"
#include "pl/id.h"
#include "svch.h"

static pgh pg;
static svch h;
static bool up;

#define TA   "0190a000-0000-7000-8000-0000000000a1"
#define TB   "0190a000-0000-7000-8000-0000000000b1"
#define TS   "0190a000-0000-7000-8000-0000000000c1" // Sao Paulo
#define TU   "0190a000-0000-7000-8000-0000000000c2" // UTC
#define C1   "0190a000-0000-7000-8000-00000000c001"
#define C2   "0190a000-0000-7000-8000-00000000c002"
#define CAMP "0190a000-0000-7000-8000-00000000ca01"
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

// The day `days_ago` days before today at hh:mm UTC.
static void
at_utc(int days_ago, int hh, int mm, char out[32])
{
	int64_t day = 86400LL * 1000000;
	int64_t t = (analytics_now_us() / day - days_ago) * day +
	            ((int64_t)hh * 3600 + mm * 60) * 1000000;
	analytics_time_format_ms(t, out);
}

typedef struct evspec {
	const char *tenant, *type, *payload, *contact, *campaign;
	int days_ago, hh, mm;
} evspec;

static Parley__Rpc__V1__Event *
mk(const evspec *s, char *id_out)
{
	pl_arena *a = &h.arena;
	Parley__Rpc__V1__Event *e = pl_arena_zalloc(a, sizeof(*e));
	Parley__Rpc__V1__EventDimensions *d = pl_arena_zalloc(a, sizeof(*d));
	Parley__Rpc__V1__Json *j = pl_arena_zalloc(a, sizeof(*j));
	char id[37], when[32];
	parley__rpc__v1__event__init(e);
	parley__rpc__v1__event_dimensions__init(d);
	parley__rpc__v1__json__init(j);
	pl_uuid7_str(id);
	if (id_out)
		strcpy(id_out, id);
	at_utc(s->days_ago, s->hh, s->mm, when);
	e->id = pl_arena_strdup(a, id);
	e->tenant_id = (char *)s->tenant;
	e->type = (char *)s->type;
	e->occurred_at = pl_arena_strdup(a, when);
	e->source = "test";
	d->contact_id = (char *)(s->contact ? s->contact : "");
	d->campaign_id = (char *)(s->campaign ? s->campaign : "");
	j->text = (char *)(s->payload ? s->payload : "{}");
	e->dimensions = d;
	e->payload = j;
	return e;
}

static int
track(Parley__Rpc__V1__Event **ev, size_t n,
      Parley__Analytics__V1__TrackResponse **out, pl_rpc_result *res)
{
	Parley__Analytics__V1__TrackRequest in =
	        PARLEY__ANALYTICS__V1__TRACK_REQUEST__INIT;
	pl_principal svc = svch_service();
	in.events = ev;
	in.n_events = n;
	return svch_call(&h, M("Track"), &svc, &in.base,
	                 &parley__analytics__v1__track_response__descriptor,
	                 (void **)out, res);
}

static Parley__Analytics__V1__Kpis *
summary(const char *tenant, const char *start, const char *end)
{
	Parley__Analytics__V1__SummaryRequest in =
	        PARLEY__ANALYTICS__V1__SUMMARY_REQUEST__INIT;
	Parley__Analytics__V1__SummaryResponse *out = NULL;
	pl_principal p = svch_user(tenant, C1, 1);
	in.start_at = (char *)start;
	in.end_at = (char *)end;
	assert_int_equal(
	        svch_call(&h, M("Summary"), &p, &in.base,
	                  &parley__analytics__v1__summary_response__descriptor,
	                  (void **)&out, NULL),
	        PL_OK);
	return out->kpis;
}

static void
test_replay_counted_once(void **state)
{
	(void)state;
	if (!up)
		skip();
	Parley__Rpc__V1__Event *ev[3];
	Parley__Analytics__V1__TrackResponse *out;
	char a[32], b[32];
	for (int i = 0; i < 3; i++)
		ev[i] = mk(&(evspec){ TB, "message.received", NULL, C1, NULL, 3,
		                      10, i },
		           NULL);
	assert_int_equal(track(ev, 3, &out, NULL), PL_OK);
	assert_int_equal(out->accepted, 3);
	assert_int_equal(track(ev, 3, &out, NULL), PL_OK);
	assert_int_equal(out->accepted, 0);
	assert_int_equal(out->duplicates, 3);
	// The same id twice in one batch counts once.
	Parley__Rpc__V1__Event *twice[2] = {
		mk(&(evspec){ TB, "message.received", NULL, C2, NULL, 3, 11,
		              0 },
		   NULL),
		NULL
	};
	twice[1] = twice[0];
	assert_int_equal(track(twice, 2, &out, NULL), PL_OK);
	assert_int_equal(out->accepted, 1);
	at_utc(4, 0, 0, a);
	at_utc(2, 0, 0, b);
	Parley__Analytics__V1__Kpis *k = summary(TB, a, b);
	assert_int_equal(k->messages_in, 4);
	assert_int_equal(k->unique_contacts, 2);
}

static void
test_bad_batch_refused_whole(void **state)
{
	(void)state;
	if (!up)
		skip();
	Parley__Rpc__V1__Event *ev[2];
	pl_rpc_result res;
	Parley__Analytics__V1__TrackResponse *out;
	char a[32], b[32];
	static char big[70000];

	ev[0] = mk(&(evspec){ TB, "message.received", NULL, C1, NULL, 5, 1, 0 },
	           NULL);
	ev[1] = mk(&(evspec){ TB, "message.exploded", NULL, C1, NULL, 5, 1, 0 },
	           NULL);
	assert_int_equal(track(ev, 2, &out, &res), PL_INVALID_ARGUMENT);
	assert_int_equal(res.n_details, 1);
	assert_string_equal(res.details[0]->field, "events[1].type");
	ev[1] = mk(&(evspec){ "", "message.received", NULL, C1, NULL, 5, 1, 0 },
	           NULL);
	assert_int_equal(track(ev, 2, &out, &res), PL_INVALID_ARGUMENT);
	assert_string_equal(res.details[0]->field, "events[1].tenant_id");
	ev[1] = mk(
	        &(evspec){ TB, "message.received", "[1]", C1, NULL, 5, 1, 0 },
	        NULL);
	assert_int_equal(track(ev, 2, &out, &res), PL_INVALID_ARGUMENT);
	assert_string_equal(res.details[0]->field, "events[1].payload");
	memset(big, ' ', sizeof(big) - 3);
	big[0] = '{';
	big[sizeof(big) - 2] = '}';
	ev[1] = mk(&(evspec){ TB, "message.received", big, C1, NULL, 5, 1, 0 },
	           NULL);
	assert_int_equal(track(ev, 2, &out, &res), PL_INVALID_ARGUMENT);
	assert_string_equal(res.details[0]->field, "events[1].payload");
	ev[1] = mk(
	        &(evspec){ TB, "message.received", NULL, C1, NULL, -1, 0, 0 },
	        NULL); // tomorrow: far in the future
	assert_int_equal(track(ev, 2, &out, &res), PL_INVALID_ARGUMENT);
	assert_string_equal(res.details[0]->field, "events[1].occurred_at");
	at_utc(6, 0, 0, a);
	at_utc(4, 0, 0, b);
	assert_int_equal(summary(TB, a, b)->messages_in, 0);
}

static int64_t
day_series(const char *tenant, const char *start, const char *end, int metric,
           int64_t *vals, size_t max)
{
	Parley__Analytics__V1__TimeSeriesRequest in =
	        PARLEY__ANALYTICS__V1__TIME_SERIES_REQUEST__INIT;
	Parley__Analytics__V1__TimeSeriesResponse *out = NULL;
	pl_principal p = svch_user(tenant, C1, 1);
	in.metric = metric;
	in.granularity = PARLEY__ANALYTICS__V1__GRANULARITY__GRANULARITY_DAY;
	in.start_at = (char *)start;
	in.end_at = (char *)end;
	assert_int_equal(
	        svch_call(
	                &h, M("TimeSeries"), &p, &in.base,
	                &parley__analytics__v1__time_series_response__descriptor,
	                (void **)&out, NULL),
	        PL_OK);
	for (size_t i = 0; i < out->n_points && i < max; i++)
		vals[i] = out->points[i]->value;
	return (int64_t)out->n_points;
}

static void
test_time_zone_days_and_late_events(void **state)
{
	(void)state;
	if (!up)
		skip();
	Parley__Rpc__V1__Event *ev[4];
	Parley__Analytics__V1__TrackResponse *out;
	char a[32], b[32];
	int64_t v[8];

	ev[0] = mk(
	        &(evspec){
	                TS, "tenant.created",
	                "{\"name\":\"SP\",\"time_zone\":\"America/Sao_Paulo\"}",
	                NULL, NULL, 20, 0, 0 },
	        NULL);
	ev[1] = mk(&(evspec){ TU, "tenant.created",
	                      "{\"name\":\"U\",\"time_zone\":\"UTC\"}", NULL,
	                      NULL, 20, 0, 0 },
	           NULL);
	// 02:30 UTC = 23:30 of the day before in Sao Paulo (UTC-3).
	ev[2] = mk(
	        &(evspec){ TS, "message.received", NULL, C1, NULL, 10, 2, 30 },
	        NULL);
	ev[3] = mk(
	        &(evspec){ TU, "message.received", NULL, C1, NULL, 10, 2, 30 },
	        NULL);
	assert_int_equal(track(ev, 4, &out, NULL), PL_OK);
	assert_int_equal(out->accepted, 4);
	// Three UTC days: D-1, D, D+1 (D = 10 days ago).
	at_utc(11, 0, 0, a);
	at_utc(8, 0, 0, b);
	memset(v, 0, sizeof(v));
	int64_t n = day_series(
	        TU, a, b, PARLEY__ANALYTICS__V1__METRIC__METRIC_MESSAGES_IN, v,
	        8);
	assert_int_equal(n, 3);
	assert_int_equal(v[0], 0);
	assert_int_equal(v[1], 1);
	// Sao Paulo: buckets start at local midnights (03:00 UTC); the
	// first is the one of D-2 (range starts at 21:00 of D-2 local).
	memset(v, 0, sizeof(v));
	n = day_series(TS, a, b,
	               PARLEY__ANALYTICS__V1__METRIC__METRIC_MESSAGES_IN, v, 8);
	assert_int_equal(n, 4);
	assert_int_equal(v[0], 0);
	assert_int_equal(v[1], 1); // local D-1
	assert_int_equal(v[2], 0);
	// A late event for D-1 local arrives now: it moves that day.
	ev[0] = mk(
	        &(evspec){ TS, "message.received", NULL, C2, NULL, 10, 1, 0 },
	        NULL);
	assert_int_equal(track(ev, 1, &out, NULL), PL_OK);
	memset(v, 0, sizeof(v));
	day_series(TS, a, b, PARLEY__ANALYTICS__V1__METRIC__METRIC_MESSAGES_IN,
	           v, 8);
	assert_int_equal(v[1], 2);
	// Summary over local day D-1 exactly (rollups only) and over a
	// range with partial days (rollups + raw edges) agree.
	char s0[32], s1[32];
	at_utc(11, 3, 0, s0);
	at_utc(10, 3, 0, s1);
	assert_int_equal(summary(TS, s0, s1)->messages_in, 2);
	assert_int_equal(summary(TS, a, b)->messages_in, 2);
	at_utc(10, 1, 30, s0);
	assert_int_equal(summary(TS, s0, b)->messages_in, 1);
}

static void
test_kpis_known_answers(void **state)
{
	(void)state;
	if (!up)
		skip();
	const evspec set[] = {
		{ TA, "message.received", NULL, C1, NULL, 7, 9, 0 },
		{ TA, "message.received", NULL, C1, NULL, 7, 9, 1 },
		{ TA, "message.received", NULL, C2, NULL, 7, 9, 2 },
		{ TA, "message.sent",
		  "{\"sender\":\"bot\",\"response_ms\":100}", C1, NULL, 7, 9,
		  3 },
		{ TA, "message.sent",
		  "{\"sender\":\"bot\",\"response_ms\":300}", C2, NULL, 7, 9,
		  4 },
		{ TA, "message.sent",
		  "{\"sender\":\"bot\",\"response_ms\":200}", C2, NULL, 7, 9,
		  4 },
		{ TA, "message.sent",
		  "{\"sender\":\"human\",\"response_ms\":5000}", C1, NULL, 7, 9,
		  5 },
		{ TA, "conversation.started", NULL, C1, NULL, 7, 9, 0 },
		{ TA, "conversation.started", NULL, C2, NULL, 7, 9, 0 },
		{ TA, "conversation.closed", "{\"handed_over\":false}", C2,
		  NULL, 7, 10, 0 },
		{ TA, "conversation.closed", "{\"handed_over\":true}", C1, NULL,
		  7, 10, 0 },
		{ TA, "conversation.handoff", "{\"reason\":\"asked\"}", C1,
		  NULL, 7, 9, 6 },
		{ TA, "lead.created", NULL, C1, NULL, 7, 9, 7 },
		{ TA, "lead.created", NULL, C2, NULL, 7, 9, 7 },
		{ TA, "lead.converted",
		  "{\"value_minor\":5000,\"currency\":\"BRL\"}", C1, NULL, 7, 9,
		  8 },
		{ TA, "order.created",
		  "{\"total_minor\":12000,\"currency\":\"BRL\"}", C1, NULL, 7,
		  9, 9 },
		{ TA, "message.status", "{\"status\":\"sent\"}", NULL, CAMP, 7,
		  9, 0 },
		{ TA, "message.status", "{\"status\":\"sent\"}", NULL, CAMP, 7,
		  9, 0 },
		{ TA, "message.status", "{\"status\":\"delivered\"}", NULL,
		  CAMP, 7, 9, 1 },
		{ TA, "message.status", "{\"status\":\"read\"}", NULL, CAMP, 7,
		  9, 2 },
		{ TA, "message.status", "{\"status\":\"failed\"}", NULL, CAMP,
		  7, 9, 2 },
		{ TA, "agent.replied",
		  "{\"tokens_in\":10,\"tokens_out\":20,\"engine\":"
		  "\"retrieval\","
		  "\"model\":\"m1\",\"intent\":\"price\"}",
		  NULL, NULL, 7, 9, 3 },
		{ TA, "agent.replied",
		  "{\"tokens_in\":5,\"tokens_out\":5,\"engine\":\"retrieval\","
		  "\"model\":\"m1\",\"intent\":\"hours\"}",
		  NULL, NULL, 7, 9, 3 },
		{ TA, "agent.replied",
		  "{\"tokens_in\":1,\"tokens_out\":1,\"intent\":\"price\"}",
		  NULL, NULL, 7, 9, 3 },
		{ TA, "usage.refused", "{\"metric\":\"messages\"}", NULL, NULL,
		  7, 9, 3 },
	};
	size_t n = sizeof(set) / sizeof(set[0]);
	Parley__Rpc__V1__Event *ev[32];
	Parley__Analytics__V1__TrackResponse *out;
	char a[32], b[32], c[32];
	for (size_t i = 0; i < n; i++)
		ev[i] = mk(&set[i], NULL);
	assert_int_equal(track(ev, n, &out, NULL), PL_OK);
	assert_int_equal(out->accepted, (int)n);

	at_utc(7, 0, 0, a);
	at_utc(6, 0, 0, b);
	at_utc(7, 9, 30, c); // partial: raw on both sides
	for (int pass = 0; pass < 2; pass++) {
		Parley__Analytics__V1__Kpis *k =
		        pass == 0 ? summary(TA, a, b) : summary(TA, c, b);
		if (pass == 1) {
			// Only the closes at 10:00 are after 09:30.
			assert_int_equal(k->messages_in, 0);
			assert_int_equal(k->conversations_closed, 2);
			continue;
		}
		assert_int_equal(k->messages_in, 3);
		assert_int_equal(k->messages_out, 4);
		assert_int_equal(k->messages_out_bot, 3);
		assert_int_equal(k->messages_out_human, 1);
		assert_int_equal(k->conversations_started, 2);
		assert_int_equal(k->conversations_closed, 2);
		assert_int_equal(k->unique_contacts, 2);
		assert_int_equal(k->bot_resolved, 1);
		assert_int_equal(k->handed_over, 1);
		assert_true(k->bot_resolved_share > 0.49 &&
		            k->bot_resolved_share < 0.51);
		assert_int_equal(k->first_response_bot->count, 3);
		assert_int_equal(k->first_response_bot->median_ms, 200);
		assert_int_equal(k->first_response_bot->p90_ms, 300);
		assert_int_equal(k->first_response_human->median_ms, 5000);
		assert_int_equal(k->leads_created, 2);
		assert_int_equal(k->leads_converted, 1);
		assert_true(k->conversion_rate > 0.49 &&
		            k->conversion_rate < 0.51);
		assert_int_equal(k->n_conversion_value, 1);
		assert_int_equal(k->conversion_value[0]->amount_minor, 5000);
		assert_int_equal(k->orders, 1);
		assert_int_equal(k->revenue[0]->amount_minor, 12000);
		assert_string_equal(k->revenue[0]->currency, "BRL");
		assert_int_equal(k->campaign_sent, 2);
		assert_int_equal(k->campaign_delivered, 1);
		assert_int_equal(k->campaign_read, 1);
		assert_int_equal(k->campaign_failed, 1);
		assert_true(k->campaign_failure_rate > 0.33 &&
		            k->campaign_failure_rate < 0.34);
		assert_int_equal(k->ai_replies, 3);
		assert_int_equal(k->ai_tokens_in, 16);
		assert_int_equal(k->ai_tokens_out, 26);
		assert_int_equal(k->quota_refusals, 1);
	}
	// TopN intents and the funnel.
	{
		Parley__Analytics__V1__TopNRequest in =
		        PARLEY__ANALYTICS__V1__TOP_NREQUEST__INIT;
		Parley__Analytics__V1__TopNResponse *o = NULL;
		pl_principal p = svch_user(TA, C1, 1);
		in.dimension =
		        PARLEY__ANALYTICS__V1__DIMENSION__DIMENSION_INTENT;
		in.start_at = a;
		in.end_at = b;
		in.limit = 1;
		assert_int_equal(
		        svch_call(
		                &h, M("TopN"), &p, &in.base,
		                &parley__analytics__v1__top_nresponse__descriptor,
		                (void **)&o, NULL),
		        PL_OK);
		assert_int_equal(o->n_items, 1);
		assert_string_equal(o->items[0]->key, "price");
		assert_int_equal(o->items[0]->value, 2);
		assert_int_equal(o->other, 1);
	}
	{
		Parley__Analytics__V1__FunnelRequest in =
		        PARLEY__ANALYTICS__V1__FUNNEL_REQUEST__INIT;
		Parley__Analytics__V1__FunnelResponse *o = NULL;
		pl_principal p = svch_user(TA, C1, 1);
		in.start_at = a;
		in.end_at = b;
		assert_int_equal(
		        svch_call(
		                &h, M("Funnel"), &p, &in.base,
		                &parley__analytics__v1__funnel_response__descriptor,
		                (void **)&o, NULL),
		        PL_OK);
		assert_int_equal(o->n_steps, 4);
		assert_int_equal(o->steps[0]->count, 2);
		assert_int_equal(o->steps[1]->count, 2);
		assert_int_equal(o->steps[2]->count, 1);
		assert_int_equal(o->steps[3]->count, 1);
		assert_true(o->steps[2]->rate > 0.49 &&
		            o->steps[2]->rate < 0.51);
	}
	// Isolation: tenant B's principal sees none of A's numbers.
	Parley__Analytics__V1__Kpis *kb = summary(TB, a, b);
	assert_int_equal(kb->orders, 0);
	assert_int_equal(kb->ai_replies, 0);
	{
		Parley__Analytics__V1__ListEventsRequest in =
		        PARLEY__ANALYTICS__V1__LIST_EVENTS_REQUEST__INIT;
		Parley__Analytics__V1__ListEventsResponse *o = NULL;
		pl_principal p = svch_user(TB, C1, 3);
		in.type = "order.";
		assert_int_equal(
		        svch_call(
		                &h, M("ListEvents"), &p, &in.base,
		                &parley__analytics__v1__list_events_response__descriptor,
		                (void **)&o, NULL),
		        PL_OK);
		assert_int_equal(o->n_events, 0);
		p = svch_user(TA, C1, 3);
		assert_int_equal(
		        svch_call(
		                &h, M("ListEvents"), &p, &in.base,
		                &parley__analytics__v1__list_events_response__descriptor,
		                (void **)&o, NULL),
		        PL_OK);
		assert_int_equal(o->n_events, 1);
	}
	// Platform summary: admin only.
	{
		Parley__Analytics__V1__PlatformSummaryRequest in =
		        PARLEY__ANALYTICS__V1__PLATFORM_SUMMARY_REQUEST__INIT;
		Parley__Analytics__V1__PlatformSummaryResponse *o = NULL;
		pl_principal p = svch_user(TA, C1, 4);
		in.start_at = a;
		in.end_at = b;
		assert_int_equal(
		        svch_call(
		                &h, M("PlatformSummary"), &p, &in.base,
		                &parley__analytics__v1__platform_summary_response__descriptor,
		                (void **)&o, NULL),
		        PL_PERMISSION_DENIED);
		p.platform_admin = true;
		p.tenant_id = "";
		assert_int_equal(
		        svch_call(
		                &h, M("PlatformSummary"), &p, &in.base,
		                &parley__analytics__v1__platform_summary_response__descriptor,
		                (void **)&o, NULL),
		        PL_OK);
		assert_int_equal(o->kpis->orders, 1);
		assert_true(o->active_tenants >= 1);
	}
}

static void
test_partitions_and_retention(void **state)
{
	(void)state;
	if (!up)
		skip();
	Parley__Analytics__V1__GetRetentionRequest gin =
	        PARLEY__ANALYTICS__V1__GET_RETENTION_REQUEST__INIT;
	Parley__Analytics__V1__GetRetentionResponse *g = NULL;
	pl_principal adm = svch_user("", C1, 0);
	Parley__Rpc__V1__Event *ev[1];
	Parley__Analytics__V1__TrackResponse *out;
	char a[32], b[32], month[8], cur[8], ahead[8];
	adm.platform_admin = true;

	// This month and the next two exist from the start.
	at_utc(0, 0, 0, a);
	snprintf(cur, sizeof(cur), "%.7s", a);
	assert_int_equal(
	        svch_call(
	                &h, M("GetRetention"), &adm, &gin.base,
	                &parley__analytics__v1__get_retention_response__descriptor,
	                (void **)&g, NULL),
	        PL_OK);
	assert_int_equal(g->months, 0);
	assert_true(g->n_partitions >= 3);
	assert_string_equal(g->partitions[g->n_partitions - 3], cur);
	snprintf(ahead, sizeof(ahead), "%s",
	         g->partitions[g->n_partitions - 1]);

	// An event 200 days ago makes its month on demand.
	ev[0] = mk(
	        &(evspec){ TA, "message.received", NULL, C1, NULL, 200, 12, 0 },
	        NULL);
	assert_int_equal(track(ev, 1, &out, NULL), PL_OK);
	assert_int_equal(out->accepted, 1);
	at_utc(200, 12, 0, a);
	snprintf(month, sizeof(month), "%.7s", a);

	Parley__Analytics__V1__SetRetentionRequest sin =
	        PARLEY__ANALYTICS__V1__SET_RETENTION_REQUEST__INIT;
	Parley__Analytics__V1__SetRetentionResponse *so = NULL;
	sin.months = -1;
	assert_int_equal(
	        svch_call(
	                &h, M("SetRetention"), &adm, &sin.base,
	                &parley__analytics__v1__set_retention_response__descriptor,
	                (void **)&so, NULL),
	        PL_INVALID_ARGUMENT);
	sin.months = 3;
	assert_int_equal(
	        svch_call(
	                &h, M("SetRetention"), &adm, &sin.base,
	                &parley__analytics__v1__set_retention_response__descriptor,
	                (void **)&so, NULL),
	        PL_OK);
	Parley__Analytics__V1__ApplyRetentionRequest ain =
	        PARLEY__ANALYTICS__V1__APPLY_RETENTION_REQUEST__INIT;
	Parley__Analytics__V1__ApplyRetentionResponse *ao = NULL;
	ain.dry_run = true;
	assert_int_equal(
	        svch_call(
	                &h, M("ApplyRetention"), &adm, &ain.base,
	                &parley__analytics__v1__apply_retention_response__descriptor,
	                (void **)&ao, NULL),
	        PL_OK);
	assert_int_equal(ao->n_detached, 1);
	assert_string_equal(ao->detached[0], month);
	ain.dry_run = false;
	assert_int_equal(
	        svch_call(
	                &h, M("ApplyRetention"), &adm, &ain.base,
	                &parley__analytics__v1__apply_retention_response__descriptor,
	                (void **)&ao, NULL),
	        PL_OK);
	assert_int_equal(ao->n_detached, 1);
	assert_int_equal(
	        svch_call(
	                &h, M("GetRetention"), &adm, &gin.base,
	                &parley__analytics__v1__get_retention_response__descriptor,
	                (void **)&g, NULL),
	        PL_OK);
	for (size_t i = 0; i < g->n_partitions; i++)
		assert_string_not_equal(g->partitions[i], month);
	assert_string_equal(g->partitions[g->n_partitions - 1], ahead);
	// The raw month is gone; its whole-day rollups stay.
	at_utc(200, 0, 0, a);
	at_utc(199, 0, 0, b);
	assert_int_equal(summary(TA, a, b)->messages_in, 1);
	// A late event for that month is ignored, not an error.
	ev[0] = mk(
	        &(evspec){ TA, "message.received", NULL, C1, NULL, 200, 13, 0 },
	        NULL);
	assert_int_equal(track(ev, 1, &out, NULL), PL_OK);
	assert_int_equal(out->accepted, 0);
	// Recent data untouched.
	at_utc(7, 0, 0, a);
	at_utc(6, 0, 0, b);
	assert_int_equal(summary(TA, a, b)->messages_in, 3);
	// Viewers may not touch retention.
	pl_principal v = svch_user(TA, C1, 4);
	assert_int_equal(
	        svch_call(
	                &h, M("GetRetention"), &v, &gin.base,
	                &parley__analytics__v1__get_retention_response__descriptor,
	                (void **)&g, NULL),
	        PL_PERMISSION_DENIED);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_replay_counted_once),
		cmocka_unit_test(test_bad_batch_refused_whole),
		cmocka_unit_test(test_time_zone_days_and_late_events),
		cmocka_unit_test(test_kpis_known_answers),
		cmocka_unit_test(test_partitions_and_retention),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
