// ReserveUsage in batches (billing.reserve_batch, 003) against a real
// PostgreSQL: a batch must answer every item exactly as the same calls made
// one after another would be answered. Batches are made directly with
// billing_store_reserve_batch (so their content is known), and compared
// with the one-call path (billing_store_reserve, 002) on a twin tenant.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <libpq-fe.h>

#include "billing.h"
#include "pl/id.h"
#include "svch.h"

static pgh pg;
static svch h;

#include "billing_th.h"

static int
setup(void **state)
{
	(void)state;
	int rc = pgh_start(&pg);
	if (rc == -2)
		return -1;
	if (rc == -1)
		return 0;
	if (svch_start(&h, &pg, &billing_service_def, 4, NULL) != 0)
		return -1;
	// day 10 / month 1000 hard; day 1000 / month 10 with overage;
	// unlimited.
	return pgh_exec_url(
	               h.admin_url,
	               "INSERT INTO billing.plans (id, code, name, "
	               "price_minor, currency, billing_interval, "
	               "limit_messages_per_day, limit_messages_per_month, "
	               "limit_ai_tokens_per_month, overage_messages_per_1000) "
	               "VALUES (gen_random_uuid(), 'b-day10', 'b', 0, 'USD', "
	               "'month', 10, 1000, 50, NULL), (gen_random_uuid(), "
	               "'b-soft', 'b', 0, 'USD', 'month', 1000, 10, 50, 100), "
	               "(gen_random_uuid(), 'b-unl', 'b', 0, 'USD', 'month', "
	               "-1, -1, -1, NULL)") == 0
	               ? 0
	               : -1;
}

static int
teardown(void **state)
{
	(void)state;
	if (pg.running) {
		svch_stop(&h);
		pgh_stop(&pg);
	}
	return 0;
}

static long long
used(const char *tenant, const char *metric, const char *kind)
{
	char q[320];
	snprintf(q, sizeof(q),
	         "SELECT coalesce(sum(used), 0) FROM billing.usage_counters "
	         "WHERE tenant_id = '%s' AND metric = '%s' AND period_kind = "
	         "'%s'",
	         tenant, metric, kind);
	return sql_int("%s", q);
}

// A new tenant on plan_code (its tenant.created delivered).
static void
new_tenant(char tid[PL_UUID_STRLEN + 1], const char *plan_code)
{
	assert_int_equal(svch_billing_tenant(&h, tid, plan_code), PL_OK);
}

static void
item(billing_reserve_item *it, const char *tenant, const char *metric,
     int64_t amount, const char *key)
{
	memset(it, 0, sizeof(*it));
	it->tenant = tenant;
	it->metric = metric;
	it->amount = amount;
	it->key = key;
	it->rc = -1;
}

// Runs items[0..n) as one batch; returns how many fell back to one by one.
static int
batch(billing_reserve_item *items, size_t n)
{
	billing_reserve_item *p[BILLING_MAX_BATCH];
	for (size_t i = 0; i < n; i++)
		p[i] = &items[i];
	return billing_store_reserve_batch(h.w.db, p, n, false);
}

static void
expect(const billing_reserve_item *it, const char *outcome, int64_t rday,
       int64_t rmonth, bool replayed)
{
	assert_int_equal(it->rc, PL_OK);
	assert_string_equal(it->res.outcome, outcome);
	assert_int_equal(it->res.remaining_day, rday);
	assert_int_equal(it->res.remaining_month, rmonth);
	assert_int_equal(it->res.replayed, replayed);
}

// The same key twice (and a third time with another amount) in one batch:
// counted once; the second is a replay of the first, the third a conflict;
// a later call replays the stored answer.
static void
test_same_key_twice(void **state)
{
	billing_reserve_item it[4], again;
	char t[PL_UUID_STRLEN + 1];
	(void)state;
	NEED_PG();

	new_tenant(t, "b-day10");
	item(&it[0], t, "messages", 3, "k1");
	item(&it[1], t, "messages", 3, "k1");
	item(&it[2], t, "messages", 4, "k1");
	item(&it[3], t, "messages", 2, "k2");
	assert_int_equal(batch(it, 4), 0);
	expect(&it[0], "ok", 7, 997, false);
	expect(&it[1], "ok", 7, 997, true);
	assert_string_equal(it[1].res.reservation_id, it[0].res.reservation_id);
	assert_int_equal(it[2].rc, PL_OK);
	assert_string_equal(it[2].res.outcome, "conflict");
	expect(&it[3], "ok", 5, 995, false);
	assert_int_equal(used(t, "messages", "day"), 5);
	assert_int_equal(used(t, "messages", "month"), 5);

	// Retried in a later batch: stored answers, nothing counted again.
	item(&it[0], t, "messages", 2, "k2");
	item(&it[1], t, "messages", 3, "k1");
	assert_int_equal(batch(it, 2), 0);
	expect(&it[0], "ok", 5, 995, true);
	expect(&it[1], "ok", 7, 997, true);
	item(&again, t, "messages", 3, "k1");
	assert_int_equal(billing_store_reserve(h.w.db, t, "messages", 3, "k1",
	                                       false, &again.res),
	                 PL_OK);
	assert_true(again.res.replayed);
	assert_string_equal(again.res.reservation_id, it[1].res.reservation_id);
	assert_int_equal(used(t, "messages", "day"), 5);
}

// A hot tenant reaching its day limit inside a batch: admitted in order;
// a refused item does not stop a smaller later one that still fits; the
// refusals are stored and replayed as refusals.
static void
test_limit_inside_batch(void **state)
{
	billing_reserve_item it[6];
	char t[PL_UUID_STRLEN + 1];
	(void)state;
	NEED_PG();

	new_tenant(t, "b-day10");
	item(&it[0], t, "messages", 4, "a");
	item(&it[1], t, "messages", 4, "b");
	item(&it[2], t, "messages", 4, "c");
	item(&it[3], t, "messages", 2, "d");
	item(&it[4], t, "messages", 1, "e");
	item(&it[5], t, "messages", 4, "c"); // c again: refused again
	assert_int_equal(batch(it, 6), 0);
	expect(&it[0], "ok", 6, 996, false);
	expect(&it[1], "ok", 2, 992, false);
	expect(&it[2], "exhausted", 2, 992, false);
	assert_string_equal(it[2].res.refusal, "messages_per_day");
	expect(&it[3], "ok", 0, 990, false);
	expect(&it[4], "exhausted", 0, 990, false);
	expect(&it[5], "exhausted", 2, 992, true);
	assert_int_equal(used(t, "messages", "day"), 10);
	assert_int_equal(used(t, "messages", "month"), 10);

	// Full: everything refused, nothing counted.
	item(&it[0], t, "messages", 1, "f");
	item(&it[1], t, "messages", 1, "g");
	assert_int_equal(batch(it, 2), 0);
	expect(&it[0], "exhausted", 0, 990, false);
	expect(&it[1], "exhausted", 0, 990, false);
	assert_int_equal(used(t, "messages", "day"), 10);
	assert_int_equal(
	        sql_int("SELECT count(*) FROM billing.usage_reservations "
	                "WHERE NOT allowed AND idempotency_key IN ('c', 'e', "
	                "'f', 'g')"),
	        4);
}

// Tenants and metrics mixed in one batch (the fast path when everything
// fits, the item-by-item path otherwise), with a tenant that has no
// subscription and one whose subscription is canceled: each is answered as
// alone.
static void
test_mixed_tenants(void **state)
{
	billing_reserve_item it[9];
	char a[PL_UUID_STRLEN + 1], b[PL_UUID_STRLEN + 1];
	char soft[PL_UUID_STRLEN + 1], none[PL_UUID_STRLEN + 1];
	char gone[PL_UUID_STRLEN + 1], q[200];
	(void)state;
	NEED_PG();

	new_tenant(a, "b-day10");
	new_tenant(b, "b-day10");
	new_tenant(soft, "b-soft");
	new_tenant(gone, "b-day10");
	pl_uuid7_str(none);
	snprintf(q, sizeof(q),
	         "UPDATE billing.subscriptions SET status = 'canceled' WHERE "
	         "tenant_id = '%s'",
	         gone);
	assert_int_equal(pgh_exec_url(h.admin_url, q), 0);

	// Everything fits: the fast path; running sums per group.
	item(&it[0], a, "messages", 3, "m1");
	item(&it[1], b, "messages", 5, "m1");
	item(&it[2], a, "ai_tokens", 20, "t1");
	item(&it[3], soft, "messages", 6, "s1");
	item(&it[4], a, "messages", 4, "m2");
	item(&it[5], soft, "messages", 6, "s2");
	item(&it[6], a, "ai_tokens", 30, "t2");
	assert_int_equal(batch(it, 7), 0);
	expect(&it[0], "ok", 7, 997, false);
	expect(&it[1], "ok", 5, 995, false);
	expect(&it[2], "ok", -1, 30, false);
	expect(&it[3], "ok", 994, 4, false);
	assert_int_equal(it[3].res.overage, 0);
	expect(&it[4], "ok", 3, 993, false);
	expect(&it[5], "ok", 988, 0, false);
	assert_int_equal(it[5].res.overage, 2);
	expect(&it[6], "ok", -1, 0, false);
	assert_int_equal(used(a, "messages", "day"), 7);
	assert_int_equal(used(a, "ai_tokens", "day"), 0);
	assert_int_equal(used(a, "ai_tokens", "month"), 50);
	assert_int_equal(used(soft, "messages", "month"), 12);

	// Not everything fits, and two tenants cannot reserve at all.
	item(&it[0], a, "messages", 2, "m3");
	item(&it[1], none, "messages", 1, "n1");
	item(&it[2], b, "messages", 6, "m2");
	item(&it[3], a, "messages", 2, "m4");
	item(&it[4], gone, "messages", 1, "g1");
	item(&it[5], b, "messages", 5, "m3");
	item(&it[6], a, "ai_tokens", 1, "t3");
	item(&it[7], soft, "messages", 1000, "s3");
	item(&it[8], a, "messages", 1, "m1"); // stored in the batch above
	assert_int_equal(batch(it, 9), 0);
	expect(&it[0], "ok", 1, 991, false);
	assert_string_equal(it[1].res.outcome, "no_subscription");
	expect(&it[2], "exhausted", 5, 995, false);
	expect(&it[3], "exhausted", 1, 991, false);
	assert_string_equal(it[4].res.outcome, "inactive");
	assert_string_equal(it[4].res.refusal, "canceled");
	expect(&it[5], "ok", 0, 990, false);
	expect(&it[6], "exhausted", -1, 0, false);
	assert_string_equal(it[6].res.refusal, "ai_tokens_per_month");
	expect(&it[7], "exhausted", 988, 0, false); // day 1000 - 12 = 988
	assert_int_equal(it[8].rc, PL_OK);
	assert_string_equal(it[8].res.outcome, "conflict"); // m1 was 3
	assert_int_equal(used(a, "messages", "day"), 9);
	assert_int_equal(used(b, "messages", "day"), 10);
	snprintf(q, sizeof(q),
	         "SELECT count(*) FROM billing.usage_reservations WHERE "
	         "tenant_id IN ('%s', '%s')",
	         none, gone);
	assert_int_equal(sql_int("%s", q), 0);
}

// An item the database refuses makes the batch fail as a whole; the items
// are then decided one by one, and only that item fails.
static void
test_error_in_one_item(void **state)
{
	billing_reserve_item it[4];
	char a[PL_UUID_STRLEN + 1], big[PL_UUID_STRLEN + 1], q[320];
	(void)state;
	NEED_PG();

	new_tenant(a, "b-day10");
	new_tenant(big, "b-unl");
	// A counter so close to the top of bigint that adding overflows.
	snprintf(q, sizeof(q),
	         "INSERT INTO billing.usage_counters (tenant_id, metric, "
	         "period_kind, period_start, used) VALUES ('%s', 'messages', "
	         "'day', date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME "
	         "ZONE 'UTC', 9223372036854775000)",
	         big);
	assert_int_equal(pgh_exec_url(h.admin_url, q), 0);

	item(&it[0], a, "messages", 1, "e1");
	item(&it[1], big, "messages", 1000, "e2");
	item(&it[2], a, "messages", 2, "e3");
	item(&it[3], "not-a-tenant-id", "messages", 1, "e4");
	assert_int_equal(batch(it, 4), 4);
	expect(&it[0], "ok", 9, 999, false);
	assert_int_equal(it[1].rc, PL_INVALID_ARGUMENT);
	expect(&it[2], "ok", 7, 997, false);
	assert_int_equal(it[3].rc, PL_INVALID_ARGUMENT);
	assert_int_equal(used(a, "messages", "day"), 3);
	snprintf(q, sizeof(q),
	         "SELECT count(*) FROM billing.usage_reservations WHERE "
	         "tenant_id = '%s'",
	         big);
	assert_int_equal(sql_int("%s", q), 0);
}

// Random sequences (repeated keys, two metrics, amounts around the limits)
// cut into random batches give, item for item, the answers the one-call
// path gives on a twin tenant.
static void
test_batches_equal_sequential(void **state)
{
	enum { N = 120 };
	static billing_reserve_item seq[N], bat[N];
	static char keys[N][16];
	char tb[PL_UUID_STRLEN + 1], ts[PL_UUID_STRLEN + 1];
	unsigned seed = 12345;
	(void)state;
	NEED_PG();

	for (int round = 0; round < 3; round++) {
		const char *plan = round == 1 ? "b-soft" : "b-day10";
		new_tenant(tb, plan);
		new_tenant(ts, plan);
		for (int i = 0; i < N; i++) {
			const char *m = rand_r(&seed) % 4 == 0 ? "ai_tokens"
			                                       : "messages";
			int64_t amt = 1 + rand_r(&seed) % 4;
			snprintf(keys[i], sizeof(keys[i]), "r%d-%u", round,
			         rand_r(&seed) % (N / 2));
			item(&bat[i], tb, m, amt, keys[i]);
			item(&seq[i], ts, m, amt, keys[i]);
			seq[i].rc = billing_store_reserve(h.w.db, ts, m, amt,
			                                  keys[i], false,
			                                  &seq[i].res);
		}
		for (int i = 0; i < N;) {
			int n = 1 + (int)(rand_r(&seed) % 24);
			if (n > N - i)
				n = N - i;
			assert_int_equal(batch(&bat[i], (size_t)n), 0);
			i += n;
		}
		for (int i = 0; i < N; i++) {
			assert_int_equal(bat[i].rc, seq[i].rc);
			assert_string_equal(bat[i].res.outcome,
			                    seq[i].res.outcome);
			if (strcmp(seq[i].res.outcome, "conflict") == 0)
				continue;
			assert_int_equal(bat[i].res.remaining_day,
			                 seq[i].res.remaining_day);
			assert_int_equal(bat[i].res.remaining_month,
			                 seq[i].res.remaining_month);
			assert_int_equal(bat[i].res.overage,
			                 seq[i].res.overage);
			assert_int_equal(bat[i].res.replayed,
			                 seq[i].res.replayed);
			assert_string_equal(bat[i].res.refusal,
			                    seq[i].res.refusal);
		}
		assert_int_equal(used(tb, "messages", "day"),
		                 used(ts, "messages", "day"));
		assert_int_equal(used(tb, "messages", "month"),
		                 used(ts, "messages", "month"));
		assert_int_equal(used(tb, "ai_tokens", "month"),
		                 used(ts, "ai_tokens", "month"));
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_same_key_twice),
		cmocka_unit_test(test_limit_inside_batch),
		cmocka_unit_test(test_mixed_tenants),
		cmocka_unit_test(test_error_in_one_item),
		cmocka_unit_test(test_batches_equal_sequential),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
