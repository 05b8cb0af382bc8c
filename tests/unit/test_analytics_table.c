// The analytics handler table against its proto, and the service's own
// logic: times, event checks, the event -> rollup mapping, KPI formulas.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "analytics.h"

static void
test_table_matches_proto(void **state)
{
	char err[256];
	(void)state;
	assert_int_equal(
	        pl_rpc_table_check(&analytics_rpc_service, err, sizeof(err)),
	        0);
	assert_int_equal(analytics_service_def.n_migrations,
	                 analytics_n_migrations);
}

static void
test_time_parse(void **state)
{
	int64_t us;
	char out[32];
	(void)state;
	assert_true(analytics_time_parse("2026-11-22T13:20:00.123Z", &us));
	analytics_time_format_ms(us, out);
	assert_string_equal(out, "2026-11-22T13:20:00.123Z");
	assert_true(analytics_time_parse("2026-11-22T10:20:00-03:00", &us));
	analytics_time_format_us(us, out);
	assert_string_equal(out, "2026-11-22T13:20:00.000000Z");
	assert_true(analytics_time_parse("2024-02-29T00:00:00Z", &us));
	assert_false(analytics_time_parse("2025-02-29T00:00:00Z", &us));
	assert_false(analytics_time_parse("2026-13-01T00:00:00Z", &us));
	assert_false(analytics_time_parse("2026-11-22 13:20", &us));
	assert_false(analytics_time_parse("2026-11-22T13:20:00", &us));
	assert_false(analytics_time_parse("", &us));
	assert_true(analytics_time_parse("1970-01-01T00:00:00Z", &us));
	assert_int_equal(us, 0);
}

typedef struct rec {
	int n;
	char rows[64][128];
	int64_t v[64];
} rec;

static void
record(void *arg, const char *m, const char *k, const char *dv, int64_t v)
{
	rec *r = arg;
	if (r->n < 64) {
		snprintf(r->rows[r->n], 128, "%s/%s/%s", m, k, dv);
		r->v[r->n++] = v;
	}
}

static int64_t
find(const rec *r, const char *row)
{
	for (int i = 0; i < r->n; i++)
		if (strcmp(r->rows[i], row) == 0)
			return r->v[i];
	return -1;
}

#define CH "0190a000-0000-7000-8000-000000000001"

static void
test_map_events(void **state)
{
	Parley__Rpc__V1__EventDimensions d =
	        PARLEY__RPC__V1__EVENT_DIMENSIONS__INIT;
	rec r = { 0 };
	json_t *p;
	const char *kind;
	int64_t ms;
	(void)state;

	d.channel_id = CH;
	p = json_loads("{\"sender\":\"bot\",\"response_ms\":420}", 0, NULL);
	analytics_map_event("message.sent", &d, p, record, &r);
	assert_int_equal(find(&r, "messages_out//"), 1);
	assert_int_equal(find(&r, "messages_out/channel/" CH), 1);
	assert_int_equal(find(&r, "messages_out_bot//"), 1);
	assert_int_equal(find(&r, "messages_out_human//"), -1);
	assert_int_equal(find(&r, "events//"), 1);
	assert_true(analytics_response_time("message.sent", p, &kind, &ms));
	assert_string_equal(kind, "bot");
	assert_int_equal(ms, 420);
	json_decref(p);

	memset(&r, 0, sizeof(r));
	p = json_loads("{\"tokens_in\":10,\"tokens_out\":20,\"engine\":"
	               "\"retrieval\",\"model\":\"m1\",\"intent\":\"price\"}",
	               0, NULL);
	analytics_map_event("agent.replied", NULL, p, record, &r);
	assert_int_equal(find(&r, "ai_replies//"), 1);
	assert_int_equal(find(&r, "ai_replies/intent/price"), 1);
	assert_int_equal(find(&r, "ai_tokens_in//"), 10);
	assert_int_equal(find(&r, "ai_tokens_out/model/m1"), 20);
	json_decref(p);

	memset(&r, 0, sizeof(r));
	p = json_loads("{\"total_minor\":1250,\"currency\":\"BRL\"}", 0, NULL);
	analytics_map_event("order.created", NULL, p, record, &r);
	assert_int_equal(find(&r, "orders//"), 1);
	assert_int_equal(find(&r, "revenue_minor:BRL//"), 1250);
	json_decref(p);

	// A campaign status counts only with a campaign.
	memset(&r, 0, sizeof(r));
	p = json_loads("{\"status\":\"delivered\"}", 0, NULL);
	analytics_map_event("message.status", &d, p, record, &r);
	assert_int_equal(find(&r, "campaign_delivered//"), -1);
	d.campaign_id = CH;
	analytics_map_event("message.status", &d, p, record, &r);
	assert_int_equal(find(&r, "campaign_delivered//"), 1);
	assert_int_equal(find(&r, "campaign_delivered/campaign/" CH), 1);
	json_decref(p);
}

static void
test_event_check(void **state)
{
	Parley__Rpc__V1__Event e = PARLEY__RPC__V1__EVENT__INIT;
	Parley__Rpc__V1__Json j = PARLEY__RPC__V1__JSON__INIT;
	json_t *p;
	int64_t us, now = analytics_now_us();
	const char *field;
	char msg[200], when[32];
	(void)state;

	e.id = "0190a000-0000-7000-8000-00000000000a";
	e.tenant_id = "0190a000-0000-7000-8000-00000000000b";
	e.type = "message.received";
	analytics_time_format_ms(now, when);
	e.occurred_at = when;
	assert_true(analytics_event_check(&e, now, &p, &us, &field, msg,
	                                  sizeof(msg)));
	json_decref(p);
	e.type = "message.exploded";
	assert_false(analytics_event_check(&e, now, &p, &us, &field, msg,
	                                   sizeof(msg)));
	assert_string_equal(field, "type");
	e.type = "message.received";
	analytics_time_format_ms(now + 6 * 60 * 1000000LL, when);
	assert_false(analytics_event_check(&e, now, &p, &us, &field, msg,
	                                   sizeof(msg)));
	assert_string_equal(field, "occurred_at");
	analytics_time_format_ms(now, when);
	j.text = "[1,2]";
	e.payload = &j;
	assert_false(analytics_event_check(&e, now, &p, &us, &field, msg,
	                                   sizeof(msg)));
	assert_string_equal(field, "payload");
	e.tenant_id = "";
	j.text = "{}";
	assert_false(analytics_event_check(&e, now, &p, &us, &field, msg,
	                                   sizeof(msg)));
	assert_string_equal(field, "tenant_id");
}

static void
test_kpi_formulas(void **state)
{
	analytics_sums s = { 0 };
	Parley__Analytics__V1__Kpis k = PARLEY__ANALYTICS__V1__KPIS__INIT;
	pl_arena a;
	(void)state;
	pl_arena_init(&a, 0, 0);
	analytics_sums_add(&s, "bot_resolved", 3);
	analytics_sums_add(&s, "closed_handed_over", 1);
	analytics_sums_add(&s, "leads_created", 4);
	analytics_sums_add(&s, "leads_converted", 1);
	analytics_sums_add(&s, "campaign_sent", 10);
	analytics_sums_add(&s, "campaign_failed", 10);
	analytics_sums_add(&s, "revenue_minor:BRL", 700);
	analytics_sums_add(&s, "revenue_minor:BRL", 300);
	analytics_kpis_fill(&k, &s, &a);
	assert_true(k.bot_resolved_share > 0.749 &&
	            k.bot_resolved_share < 0.751);
	assert_true(k.conversion_rate > 0.249 && k.conversion_rate < 0.251);
	assert_true(k.campaign_failure_rate > 0.499 &&
	            k.campaign_failure_rate < 0.501);
	assert_int_equal(k.n_revenue, 1);
	assert_string_equal(k.revenue[0]->currency, "BRL");
	assert_int_equal(k.revenue[0]->amount_minor, 1000);
	analytics_sums_fini(&s);
	pl_arena_fini(&a);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_table_matches_proto),
		cmocka_unit_test(test_time_parse),
		cmocka_unit_test(test_map_events),
		cmocka_unit_test(test_event_check),
		cmocka_unit_test(test_kpi_formulas),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
