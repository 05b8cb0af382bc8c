// Billing under concurrency, against a real PostgreSQL over RPC: the
// over-admission race (32 callers for the last 100 units, 20 times, one
// batch at a time and two at a time in turn; half the callers ask with
// ReserveUsage, half with one ReserveUsageBatch of their 8), one
// idempotency key raced by many callers, and invoice numbers under
// concurrent closes (no gaps, no duplicates).
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
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

#define THREADS 32
#define ROUNDS  20
#define PER_THR 8 // calls per thread per round: 256 tries for 100 units

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
	return svch_start(&h, &pg, &billing_service_def, 8, NULL) == 0 ? 0 : -1;
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

// A new tenant on plan_code (its tenant.created delivered).
static void
new_tenant(char tid[PL_UUID_STRLEN + 1], const char *plan_code)
{
	assert_int_equal(svch_billing_tenant(&h, tid, plan_code), PL_OK);
}

static void
create_plan(const char *code, int64_t day, int64_t month)
{
	Parley__Billing__V1__CreatePlanRequest in =
	        PARLEY__BILLING__V1__CREATE_PLAN_REQUEST__INIT;
	Parley__Billing__V1__Limits lim = PARLEY__BILLING__V1__LIMITS__INIT;
	Parley__Billing__V1__CreatePlanResponse *out = NULL;
	pl_principal svc = svch_service();

	in.code = (char *)code;
	in.name = (char *)code;
	in.price_minor = 1000;
	in.currency = "EUR";
	lim.messages_per_day = day;
	lim.messages_per_month = month;
	in.limits = &lim;
	assert_int_equal(
	        svch_call(
	                &h, M("CreatePlan"), &svc, &in.base,
	                &parley__billing__v1__create_plan_response__descriptor,
	                (void **)&out, NULL),
	        PL_OK);
}

typedef struct racer {
	const char *tenant;
	int idx, round;
	const char *fixed_key; // all racers use it when set
	int ok, refused, other;
	char reservation[PL_UUID_STRLEN + 1];
} racer;

// An odd racer of the over-admission race asks for its PER_THR units in
// one ReserveUsageBatch (queued together, one wake-up counting them), the
// others one ReserveUsage each: the batches race the single calls.
static void
race_batch(racer *r, pl_rpc_opts *o, pl_arena *a)
{
	Parley__Billing__V1__ReserveUsageBatchRequest in =
	        PARLEY__BILLING__V1__RESERVE_USAGE_BATCH_REQUEST__INIT;
	Parley__Billing__V1__ReserveUsageBatchResponse *out = NULL;
	Parley__Billing__V1__ReserveUsageRequest it[PER_THR], *p[PER_THR];
	char key[PER_THR][64];
	int rc;

	for (int i = 0; i < PER_THR; i++) {
		parley__billing__v1__reserve_usage_request__init(&it[i]);
		snprintf(key[i], sizeof(key[i]), "r%d-t%d-c%d", r->round,
		         r->idx, i);
		it[i].tenant_id = (char *)r->tenant;
		it[i].metric = PARLEY__BILLING__V1__METRIC__METRIC_MESSAGES;
		it[i].amount = 1;
		it[i].idempotency_key = key[i];
		p[i] = &it[i];
	}
	in.items = p;
	in.n_items = PER_THR;
	rc = pl_rpc_call(
	        h.cli, M("ReserveUsageBatch"), &in.base,
	        &parley__billing__v1__reserve_usage_batch_response__descriptor,
	        (void **)&out, a, o, NULL);
	if (rc != PL_OK || out->n_results != PER_THR) {
		r->other += PER_THR;
		return;
	}
	for (int i = 0; i < PER_THR; i++) {
		if (out->results[i]->code == PL_OK)
			r->ok++;
		else if (out->results[i]->code == PL_RESOURCE_EXHAUSTED)
			r->refused++;
		else
			r->other++;
	}
}

static void *
race_main(void *arg)
{
	racer *r = arg;
	pl_principal svc = svch_service();
	pl_rpc_opts o = { .principal = &svc };
	pl_arena a;
	pl_arena_init(&a, 0, 0);
	if (r->fixed_key == NULL && r->idx % 2 == 1) {
		race_batch(r, &o, &a);
		pl_arena_fini(&a);
		return NULL;
	}
	for (int i = 0; i < PER_THR; i++) {
		Parley__Billing__V1__ReserveUsageRequest in =
		        PARLEY__BILLING__V1__RESERVE_USAGE_REQUEST__INIT;
		Parley__Billing__V1__ReserveUsageResponse *out = NULL;
		char key[64];
		int rc;
		snprintf(key, sizeof(key), "r%d-t%d-c%d", r->round, r->idx, i);
		in.tenant_id = (char *)r->tenant;
		in.metric = PARLEY__BILLING__V1__METRIC__METRIC_MESSAGES;
		in.amount = 1;
		in.idempotency_key =
		        (char *)(r->fixed_key ? r->fixed_key : key);
		rc = pl_rpc_call(
		        h.cli, M("ReserveUsage"), &in.base,
		        &parley__billing__v1__reserve_usage_response__descriptor,
		        (void **)&out, &a, &o, NULL);
		if (rc == PL_OK) {
			r->ok++;
			snprintf(r->reservation, sizeof(r->reservation), "%s",
			         out->reservation_id);
		} else if (rc == PL_RESOURCE_EXHAUSTED) {
			r->refused++;
		} else {
			r->other++;
		}
		pl_arena_reset(&a);
	}
	pl_arena_fini(&a);
	return NULL;
}

static int
usage_used(const char *tenant, int64_t *day, int64_t *month)
{
	Parley__Billing__V1__GetUsageRequest in =
	        PARLEY__BILLING__V1__GET_USAGE_REQUEST__INIT;
	Parley__Billing__V1__GetUsageResponse *out = NULL;
	pl_principal p =
	        svch_user(tenant, "0190aaaa-0000-7000-8000-000000000001", 1);
	int rc = svch_call(&h, M("GetUsage"), &p, &in.base,
	                   &parley__billing__v1__get_usage_response__descriptor,
	                   (void **)&out, NULL);
	if (rc == PL_OK) {
		*day = out->used->messages_per_day;
		*month = out->used->messages_per_month;
	}
	return rc;
}

// ROUNDS rounds of THREADS racers for the last 100 units of a fresh tenant
// on plan, whose day limit (by_month false) or month limit (true) is 1,000
// and the other 100 times that: exactly 100 allowed, and both counters at
// 1,000 after (a call the month refuses leaves the day as it was).
static void
race_rounds(const char *plan, bool by_month)
{
	for (int round = 0; round < ROUNDS; round++) {
		char t[PL_UUID_STRLEN + 1];
		Parley__Billing__V1__ReserveUsageRequest in =
		        PARLEY__BILLING__V1__RESERVE_USAGE_REQUEST__INIT;
		Parley__Billing__V1__ReserveUsageResponse *out = NULL;
		pl_principal svc = svch_service();
		racer rs[THREADS];
		pthread_t th[THREADS];
		int ok = 0, refused = 0, other = 0;
		int64_t day = -1, month = -1;

		billing_batcher *b = &((billing_state *)h.arg)->batcher;
		uint64_t b0, i0, b1, i1;
		int was;

		// Odd rounds: two batches at once (PARLEY_BILLING_RESERVE_
		// PARALLEL=2), whose leaders must wait, not lead empty
		// batches, while their own items are decided by the other.
		pthread_mutex_lock(&b->mtx);
		was = b->max_running;
		b->max_running = round % 2 ? 2 : 1;
		b0 = b->batches;
		i0 = b->items;
		pthread_mutex_unlock(&b->mtx);
		pl_arena_reset(&h.arena);
		new_tenant(t, plan);
		// Leave exactly 100 units.
		in.tenant_id = t;
		in.metric = PARLEY__BILLING__V1__METRIC__METRIC_MESSAGES;
		in.amount = 900;
		in.idempotency_key = "prefill";
		assert_int_equal(
		        svch_call(
		                &h, M("ReserveUsage"), &svc, &in.base,
		                &parley__billing__v1__reserve_usage_response__descriptor,
		                (void **)&out, NULL),
		        PL_OK);
		assert_int_equal(by_month ? out->remaining_month
		                          : out->remaining_day,
		                 100);
		memset(rs, 0, sizeof(rs));
		for (int i = 0; i < THREADS; i++) {
			rs[i].tenant = t;
			rs[i].idx = i;
			rs[i].round = round;
			assert_int_equal(
			        pthread_create(&th[i], NULL, race_main, &rs[i]),
			        0);
		}
		for (int i = 0; i < THREADS; i++) {
			pthread_join(th[i], NULL);
			ok += rs[i].ok;
			refused += rs[i].refused;
			other += rs[i].other;
		}
		assert_int_equal(other, 0);
		assert_int_equal(ok, 100);
		assert_int_equal(refused, THREADS * PER_THR - 100);
		assert_int_equal(usage_used(t, &day, &month), PL_OK);
		assert_int_equal(day, 1000);
		assert_int_equal(month, 1000);
		pthread_mutex_lock(&b->mtx);
		b1 = b->batches;
		i1 = b->items;
		b->max_running = was;
		pthread_mutex_unlock(&b->mtx);
		// Every batch decided at least one item.
		assert_true(b1 - b0 <= i1 - i0);
	}
}

static void
test_over_admission_race(void **state)
{
	(void)state;
	if (!pg.running)
		skip();
	create_plan("race-1000", 1000, 100000);
	race_rounds("race-1000", false);
}

// The same race against the month limit, the day's far away: the day's
// counter is incremented with the month's or not at all.
static void
test_over_admission_race_month(void **state)
{
	(void)state;
	if (!pg.running)
		skip();
	create_plan("race-month-1000", 100000, 1000);
	race_rounds("race-month-1000", true);
}

// One key raced by 32 callers: counted once, every answer the same.
static void
test_same_key_race(void **state)
{
	char t[PL_UUID_STRLEN + 1];
	racer rs[THREADS];
	pthread_t th[THREADS];
	int64_t day = -1, month = -1;
	int ok = 0;
	(void)state;
	if (!pg.running)
		skip();
	pl_arena_reset(&h.arena);
	create_plan("race-key", 1000, 100000);
	new_tenant(t, "race-key");
	memset(rs, 0, sizeof(rs));
	for (int i = 0; i < THREADS; i++) {
		rs[i].tenant = t;
		rs[i].idx = i;
		rs[i].fixed_key = "one-key";
		assert_int_equal(
		        pthread_create(&th[i], NULL, race_main, &rs[i]), 0);
	}
	for (int i = 0; i < THREADS; i++) {
		pthread_join(th[i], NULL);
		ok += rs[i].ok;
		assert_int_equal(rs[i].other, 0);
		assert_string_equal(rs[i].reservation, rs[0].reservation);
	}
	assert_int_equal(ok, THREADS * PER_THR);
	assert_int_equal(usage_used(t, &day, &month), PL_OK);
	assert_int_equal(day, 1);
	assert_int_equal(month, 1);
}

typedef struct closer {
	char (*tenants)[PL_UUID_STRLEN + 1];
	int n, idx, errors, issued;
	char at[32];
} closer;

static void *
close_main(void *arg)
{
	closer *c = arg;
	pl_principal svc = svch_service();
	pl_rpc_opts o = { .principal = &svc };
	pl_arena a;

	pl_arena_init(&a, 0, 0);
	for (int k = 0; k < c->n; k++) {
		// Each closer walks the tenants from its own offset.
		int i = (k + c->idx * 3) % c->n;
		Parley__Billing__V1__CloseBillingPeriodRequest in =
		        PARLEY__BILLING__V1__CLOSE_BILLING_PERIOD_REQUEST__INIT;
		Parley__Billing__V1__CloseBillingPeriodResponse *out = NULL;
		in.tenant_id = c->tenants[i];
		in.at = c->at;
		if (pl_rpc_call(
		            h.cli, M("CloseBillingPeriod"), &in.base,
		            &parley__billing__v1__close_billing_period_response__descriptor,
		            (void **)&out, &a, &o, NULL) != PL_OK)
			c->errors++;
		else
			c->issued += out->closed;
		pl_arena_reset(&a);
	}
	pl_arena_fini(&a);
	return NULL;
}

static void
test_invoice_numbers_concurrent_closes(void **state)
{
	enum { TENANTS = 24, CLOSERS = 8 };
	char tenants[TENANTS][PL_UUID_STRLEN + 1];
	closer cs[CLOSERS];
	pthread_t th[CLOSERS];
	int issued = 0;
	long long n;
	(void)state;
	if (!pg.running)
		skip();
	pl_arena_reset(&h.arena);
	create_plan("invoiced", -1, -1);
	for (int i = 0; i < TENANTS; i++)
		new_tenant(tenants[i], "invoiced");
	memset(cs, 0, sizeof(cs));
	for (int i = 0; i < CLOSERS; i++) {
		cs[i].tenants = tenants;
		cs[i].n = TENANTS;
		cs[i].idx = i;
		// 70 days ahead: two periods per tenant.
		billing_format_time(billing_now_ms() + 70LL * 86400000,
		                    cs[i].at);
		assert_int_equal(
		        pthread_create(&th[i], NULL, close_main, &cs[i]), 0);
	}
	for (int i = 0; i < CLOSERS; i++) {
		pthread_join(th[i], NULL);
		assert_int_equal(cs[i].errors, 0);
		issued += cs[i].issued;
	}
	n = sql_int("SELECT count(*) FROM billing.invoices");
	assert_true(n >= TENANTS * 2);
	assert_int_equal(issued, n);
	// Gap-free and unique across the platform: 1..n.
	assert_int_equal(sql_int("SELECT count(DISTINCT number) FROM "
	                         "billing.invoices"),
	                 n);
	assert_int_equal(sql_int("SELECT min(number) FROM billing.invoices"),
	                 1);
	assert_int_equal(sql_int("SELECT max(number) FROM billing.invoices"),
	                 n);
	assert_int_equal(sql_int("SELECT last_number FROM "
	                         "billing.invoice_counter"),
	                 n);
	// One invoice per tenant and period.
	assert_int_equal(sql_int("SELECT count(*) FROM (SELECT tenant_id, "
	                         "period_start_at FROM billing.invoices GROUP "
	                         "BY 1, 2 HAVING count(*) > 1) d"),
	                 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_over_admission_race),
		cmocka_unit_test(test_over_admission_race_month),
		cmocka_unit_test(test_same_key_race),
		cmocka_unit_test(test_invoice_numbers_concurrent_closes),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
