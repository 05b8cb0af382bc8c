// The per-batch grouping of intake.c: rollup rows merged per (tenant, day,
// metric, dimension) and sorted in write order, contacts de-duplicated per
// day and per month, monthly usage summed per (tenant, month), month
// arithmetic.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "analytics.h"

// Days since 1970-01-01 of a date.
#define D_2024_02_29 19782
#define D_2024_02_01 19754
#define D_2024_03_01 19783
#define D_2023_12_31 19722
#define D_2023_12_01 19692

static void
test_month_of_day(void **state)
{
	(void)state;
	assert_int_equal(analytics_month_of_day(D_2024_02_29), D_2024_02_01);
	assert_int_equal(analytics_month_of_day(D_2024_03_01), D_2024_03_01);
	assert_int_equal(analytics_month_of_day(D_2023_12_31), D_2023_12_01);
	assert_int_equal(analytics_month_of_day(0), 0);
}

static const analytics_roll *
find(const analytics_agg *a, int32_t tenant, int32_t day, const char *metric,
     const char *dk, const char *dv)
{
	for (size_t i = 0; i < a->n_rolls; i++) {
		const analytics_roll *r = &a->rolls[i];
		if (r->tenant == tenant && r->day == day &&
		    strcmp(r->metric, metric) == 0 && strcmp(r->dk, dk) == 0 &&
		    strcmp(r->dv, dv) == 0)
			return r;
	}
	return NULL;
}

// The start of hour h of day d in quarter hours since the epoch (UTC).
#define H(d, h) ((d)*96 + (h)*4)

// The count of metric in the hour, or -1 when the hour has no row.
static int64_t
hour_count(const analytics_agg *a, int32_t tenant, int32_t hour_q,
           const char *metric)
{
	int col = analytics_hourly_index(metric);
	assert_true(col >= 0);
	for (size_t i = 0; i < a->n_hours; i++) {
		const analytics_hour *h = &a->hours[i];
		if (h->tenant == tenant && h->hour_q == hour_q)
			return h->c[col];
	}
	return -1;
}

static void
test_grouping(void **state)
{
	(void)state;
	analytics_agg a;
	Parley__Rpc__V1__EventDimensions d =
	        PARLEY__RPC__V1__EVENT_DIMENSIONS__INIT;
	uint8_t c1[16] = { 1 }, c2[16] = { 2 };
	json_t *bot =
	        json_pack("{s:s, s:i}", "sender", "bot", "response_ms", 10);
	json_t *order =
	        json_pack("{s:i, s:s}", "total_minor", 250, "currency", "BRL");

	d.channel_id = "0190a000-0000-7000-8000-00000000ca11";
	analytics_agg_init(&a);
	for (int round = 0; round < 2; round++) {
		analytics_agg_reset(&a);
		// Tenant 1: three messages in on one day (two contacts, one
		// twice), one the next day; tenant 0: a bot reply and two
		// orders, one of them next month.
		analytics_agg_event(&a, 1, D_2024_02_29, H(D_2024_02_29, 10),
		                    "message.received", &d, NULL, c1);
		analytics_agg_event(&a, 1, D_2024_02_29, H(D_2024_02_29, 10),
		                    "message.received", &d, NULL, c1);
		analytics_agg_event(&a, 1, D_2024_02_29, H(D_2024_02_29, 11),
		                    "message.received", &d, NULL, c2);
		analytics_agg_event(&a, 1, D_2024_03_01, H(D_2024_03_01, 0),
		                    "message.received", &d, NULL, c1);
		analytics_agg_event(&a, 0, D_2024_02_29, H(D_2024_02_29, 10),
		                    "message.sent", NULL, bot, c2);
		analytics_agg_event(&a, 0, D_2024_02_29, H(D_2024_02_29, 23),
		                    "order.created", NULL, order, NULL);
		analytics_agg_event(&a, 0, D_2024_03_01, H(D_2024_03_01, 1),
		                    "order.created", NULL, order, NULL);
		assert_true(analytics_agg_finish(&a));

		const analytics_roll *r =
		        find(&a, 1, D_2024_02_29, "messages_in", "", "");
		assert_non_null(r);
		assert_int_equal(r->v, 3);
		r = find(&a, 1, D_2024_02_29, "messages_in", "channel",
		         d.channel_id);
		assert_non_null(r);
		assert_int_equal(r->v, 3);
		r = find(&a, 1, D_2024_03_01, "messages_in", "", "");
		assert_non_null(r);
		assert_int_equal(r->v, 1);
		r = find(&a, 0, D_2024_02_29, "revenue_minor:BRL", "", "");
		assert_non_null(r);
		assert_int_equal(r->v, 250);
		r = find(&a, 0, D_2024_02_29, "messages_out_bot", "", "");
		assert_non_null(r);
		assert_int_equal(r->v, 1);
		// Every key once, in (tenant, dk, dv, day, metric) order.
		for (size_t i = 1; i < a.n_rolls; i++) {
			const analytics_roll *p = &a.rolls[i - 1],
			                     *q = &a.rolls[i];
			int c = p->tenant != q->tenant
			                ? (p->tenant < q->tenant ? -1 : 1)
			                : strcmp(p->dk, q->dk);
			if (c == 0)
				c = strcmp(p->dv, q->dv);
			if (c == 0)
				c = p->day != q->day
				            ? (p->day < q->day ? -1 : 1)
				            : strcmp(p->metric, q->metric);
			assert_true(c < 0);
		}
		// Contacts: tenant 1 has c1, c2 on Feb 29 and c1 on Mar 1;
		// tenant 0 has c2.
		assert_int_equal(a.n_dc, 4);
		assert_int_equal(a.dc[0].tenant, 0);
		// Monthly usage: (0, Feb), (0, Mar), (1, Feb), (1, Mar).
		assert_int_equal(a.n_months, 4);
		assert_int_equal(a.months[0].tenant, 0);
		assert_int_equal(a.months[0].month, D_2024_02_01);
		assert_int_equal(a.months[0].c[ANALYTICS_MU_MESSAGES_OUT], 1);
		assert_int_equal(a.months[2].tenant, 1);
		assert_int_equal(a.months[2].c[ANALYTICS_MU_MESSAGES_IN], 3);
		assert_int_equal(a.months[3].month, D_2024_03_01);
		assert_int_equal(a.months[3].c[ANALYTICS_MU_MESSAGES_IN], 1);
		// Hourly totals: tenant 1 messages_in 2 at 10:00 and 1 at
		// 11:00 on Feb 29, 1 at 00:00 on Mar 1; tenant 0 one bot
		// reply at 10:00 and orders at 23:00 and 01:00 (money is not
		// kept by hour).
		assert_int_equal(
		        hour_count(&a, 1, H(D_2024_02_29, 10), "messages_in"),
		        2);
		assert_int_equal(
		        hour_count(&a, 1, H(D_2024_02_29, 11), "messages_in"),
		        1);
		assert_int_equal(
		        hour_count(&a, 1, H(D_2024_03_01, 0), "messages_in"),
		        1);
		assert_int_equal(
		        hour_count(&a, 1, H(D_2024_02_29, 12), "messages_in"),
		        -1);
		assert_int_equal(hour_count(&a, 0, H(D_2024_02_29, 10),
		                            "messages_out_bot"),
		                 1);
		assert_int_equal(
		        hour_count(&a, 0, H(D_2024_02_29, 10), "messages_in"),
		        0);
		assert_int_equal(
		        hour_count(&a, 0, H(D_2024_02_29, 23), "orders"), 1);
		assert_int_equal(
		        hour_count(&a, 0, H(D_2024_03_01, 1), "orders"), 1);
		assert_int_equal(analytics_hourly_index("revenue_minor:BRL"),
		                 -1);
		assert_int_equal(analytics_hourly_index("events"), -1);
		// One row per (tenant, hour), in (tenant, hour) order.
		assert_int_equal(a.n_hours, 3 + 3);
		for (size_t i = 1; i < a.n_hours; i++) {
			const analytics_hour *p = &a.hours[i - 1],
			                     *q = &a.hours[i];
			assert_true(p->tenant < q->tenant ||
			            (p->tenant == q->tenant &&
			             p->hour_q < q->hour_q));
		}
	}
	analytics_agg_fini(&a);
	json_decref(bot);
	json_decref(order);
}

// Many distinct keys: the hash index grows and nothing is lost.
static void
test_many_keys(void **state)
{
	(void)state;
	analytics_agg a;
	analytics_agg_init(&a);
	for (int i = 0; i < 20000; i++)
		analytics_agg_event(&a, i % 50, 19000 + (i / 50) % 300,
		                    (19000 + (i / 50) % 300) * 96 + (i % 7) * 4,
		                    "lead.created", NULL, NULL, NULL);
	assert_true(analytics_agg_finish(&a));
	// events + leads_created per (tenant, day): 50 x 300 keys each.
	assert_int_equal(a.n_rolls, 2 * 50 * 300);
	int64_t sum = 0;
	for (size_t i = 0; i < a.n_rolls; i++)
		sum += a.rolls[i].v;
	assert_int_equal(sum, 2 * 20000);
	// Hourly counters: leads_created sums to the events, one row per
	// (tenant, hour).
	sum = 0;
	int col = analytics_hourly_index("leads_created");
	for (size_t i = 0; i < a.n_hours; i++)
		sum += a.hours[i].c[col];
	assert_int_equal(sum, 20000);
	for (size_t i = 1; i < a.n_hours; i++)
		assert_true(a.hours[i - 1].tenant < a.hours[i].tenant ||
		            (a.hours[i - 1].tenant == a.hours[i].tenant &&
		             a.hours[i - 1].hour_q < a.hours[i].hour_q));
	analytics_agg_fini(&a);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_month_of_day),
		cmocka_unit_test(test_grouping),
		cmocka_unit_test(test_many_keys),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
