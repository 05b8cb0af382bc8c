// Counter leases (services/billing/README.md "Leases", migration 005)
// against a real PostgreSQL: calls admitted under leases are counted
// exactly once leases are returned, GetUsage does not show leased units as
// used, replays under a lease, a second replica racing the first for a
// limit (never over it), a replica that dies holding a lease (the reaper
// counts what its reservations used), a plan change reaching the next
// call, and ReleaseUsage of a leased reservation.
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <libpq-fe.h>

#include "billing.h"
#include "pl/db.h"
#include "pl/id.h"
#include "svch.h"

#define THREADS 16
#define PER_THR 40

static pgh pg;
static svch h;

#include "billing_th.h"

static billing_batcher *
svc_batcher(void)
{
	return &((billing_state *)h.arg)->batcher;
}

static int
setup(void **state)
{
	(void)state;
	int rc = pgh_start(&pg);
	if (rc == -2)
		return -1;
	if (rc == -1)
		return 0;
	if (svch_start(&h, &pg, &billing_service_def, 8,
	               (const char *const[]){ "PARLEY_BILLING_LEASE_TTL=10s",
	                                      "PARLEY_BILLING_LEASE_MIN_RATE=1",
	                                      NULL }) != 0)
		return -1;
	return svc_batcher()->lease_ttl_ms == 10000 ? 0 : -1;
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
counter(const char *tenant, const char *kind)
{
	return sql_int("SELECT coalesce(sum(used), 0) FROM "
	               "billing.usage_counters WHERE tenant_id = '%s' AND "
	               "period_kind = '%s'",
	               tenant, kind);
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
	in.is_public = true;
	lim.messages_per_day = day;
	lim.messages_per_month = month;
	lim.ai_tokens_per_month = -1;
	in.limits = &lim;
	assert_int_equal(
	        svch_call(
	                &h, M("CreatePlan"), &svc, &in.base,
	                &parley__billing__v1__create_plan_response__descriptor,
	                (void **)&out, NULL),
	        PL_OK);
}

static int
reserve(const char *tenant, const char *key, int64_t amount,
        Parley__Billing__V1__ReserveUsageResponse **out)
{
	Parley__Billing__V1__ReserveUsageRequest in =
	        PARLEY__BILLING__V1__RESERVE_USAGE_REQUEST__INIT;
	pl_principal svc = svch_service();

	in.tenant_id = (char *)tenant;
	in.metric = PARLEY__BILLING__V1__METRIC__METRIC_MESSAGES;
	in.amount = amount;
	in.idempotency_key = (char *)key;
	return svch_call(
	        &h, M("ReserveUsage"), &svc, &in.base,
	        &parley__billing__v1__reserve_usage_response__descriptor,
	        (void **)out, NULL);
}

static void
usage_used(const char *tenant, int64_t *day, int64_t *month)
{
	Parley__Billing__V1__GetUsageRequest in =
	        PARLEY__BILLING__V1__GET_USAGE_REQUEST__INIT;
	Parley__Billing__V1__GetUsageResponse *out = NULL;
	pl_principal p =
	        svch_user(tenant, "0190aaaa-0000-7000-8000-000000000001", 1);

	assert_int_equal(
	        svch_call(&h, M("GetUsage"), &p, &in.base,
	                  &parley__billing__v1__get_usage_response__descriptor,
	                  (void **)&out, NULL),
	        PL_OK);
	*day = out->used->messages_per_day;
	*month = out->used->messages_per_month;
}

static uint64_t
leased_count(billing_batcher *b)
{
	uint64_t n;
	pthread_mutex_lock(&b->mtx);
	n = b->leased;
	pthread_mutex_unlock(&b->mtx);
	return n;
}

// Racers: through the service (b NULL: RPC) or through a batcher of their
// own (a second replica on the same database).
typedef struct racer {
	const char *tenant;
	const char *prefix;
	billing_batcher *b;
	int idx, n;
	int ok, refused, other;
} racer;

static void *
race_main(void *arg)
{
	racer *r = arg;
	pl_principal svc = svch_service();
	pl_rpc_opts o = { .principal = &svc };
	pl_db *db = r->b ? pl_db_open(h.db_url) : NULL;
	pl_arena a;

	pl_arena_init(&a, 0, 0);
	for (int i = 0; i < r->n; i++) {
		char key[64];
		int rc;
		snprintf(key, sizeof(key), "%s-%d-%d", r->prefix, r->idx, i);
		if (r->b != NULL) {
			billing_reserve_item it = { 0 };
			it.tenant = r->tenant;
			it.metric = "messages";
			it.key = key;
			it.amount = 1;
			rc = billing_reserve(r->b, db, &it);
			if (rc == PL_OK && strcmp(it.res.outcome, "ok") == 0)
				r->ok++;
			else if (rc == PL_OK &&
			         strcmp(it.res.outcome, "exhausted") == 0)
				r->refused++;
			else
				r->other++;
			continue;
		}
		Parley__Billing__V1__ReserveUsageRequest in =
		        PARLEY__BILLING__V1__RESERVE_USAGE_REQUEST__INIT;
		Parley__Billing__V1__ReserveUsageResponse *out = NULL;
		in.tenant_id = (char *)r->tenant;
		in.metric = PARLEY__BILLING__V1__METRIC__METRIC_MESSAGES;
		in.amount = 1;
		in.idempotency_key = key;
		rc = pl_rpc_call(
		        h.cli, M("ReserveUsage"), &in.base,
		        &parley__billing__v1__reserve_usage_response__descriptor,
		        (void **)&out, &a, &o, NULL);
		if (rc == PL_OK)
			r->ok++;
		else if (rc == PL_RESOURCE_EXHAUSTED)
			r->refused++;
		else
			r->other++;
		pl_arena_reset(&a);
	}
	pl_arena_fini(&a);
	if (db != NULL)
		pl_db_close(db);
	return NULL;
}

static void
race(racer *rs, int n, int *ok, int *refused)
{
	pthread_t th[2 * THREADS];
	*ok = *refused = 0;
	for (int i = 0; i < n; i++)
		assert_int_equal(
		        pthread_create(&th[i], NULL, race_main, &rs[i]), 0);
	for (int i = 0; i < n; i++) {
		pthread_join(th[i], NULL);
		assert_int_equal(rs[i].other, 0);
		*ok += rs[i].ok;
		*refused += rs[i].refused;
	}
}

static void
flush(billing_batcher *b)
{
	pl_db *db = pl_db_open(h.db_url);
	billing_leases_flush(b, db, NULL);
	pl_db_close(db);
}

static void
test_leased_counted_exactly(void **state)
{
	char t[PL_UUID_STRLEN + 1];
	racer rs[THREADS];
	int ok, refused;
	int64_t day, month;
	uint64_t l0;

	(void)state;
	if (!pg.running)
		skip();
	create_plan("lease-big", 1000000, 10000000);
	new_tenant(t, "lease-big");
	l0 = leased_count(svc_batcher());
	memset(rs, 0, sizeof(rs));
	for (int i = 0; i < THREADS; i++)
		rs[i] = (racer){
			.tenant = t, .prefix = "a", .idx = i, .n = PER_THR
		};
	race(rs, THREADS, &ok, &refused);
	assert_int_equal(ok, THREADS * PER_THR);
	assert_int_equal(refused, 0);
	// Most calls went under leases: the pair was busy from the start.
	assert_true(leased_count(svc_batcher()) - l0 >
	            (uint64_t)(THREADS * PER_THR / 2));
	// Leases are out: the counters hold more than was used, GetUsage
	// shows what was used.
	usage_used(t, &day, &month);
	assert_int_equal(day, THREADS * PER_THR);
	assert_int_equal(month, THREADS * PER_THR);
	assert_true(counter(t, "day") >= THREADS * PER_THR);
	assert_true(sql_int("SELECT count(*) FROM billing.usage_leases WHERE "
	                    "tenant_id = '%s'",
	                    t) >= 1);
	// Every reservation row is there, with its lease and periods.
	assert_int_equal(sql_int("SELECT count(*) FROM "
	                         "billing.usage_reservations WHERE tenant_id "
	                         "= '%s' AND allowed AND day_start IS NOT "
	                         "NULL AND month_start IS NOT NULL",
	                         t),
	                 THREADS * PER_THR);
	// Returned, the counters are exact.
	flush(svc_batcher());
	assert_int_equal(counter(t, "day"), THREADS * PER_THR);
	assert_int_equal(counter(t, "month"), THREADS * PER_THR);
	assert_int_equal(sql_int("SELECT count(*) FROM billing.usage_leases "
	                         "WHERE tenant_id = '%s'",
	                         t),
	                 0);
}

static void
test_leased_replay_and_release(void **state)
{
	char t[PL_UUID_STRLEN + 1], id[PL_UUID_STRLEN + 1];
	Parley__Billing__V1__ReserveUsageResponse *out = NULL;
	Parley__Billing__V1__ReleaseUsageRequest rel =
	        PARLEY__BILLING__V1__RELEASE_USAGE_REQUEST__INIT;
	Parley__Billing__V1__ReleaseUsageResponse *rout = NULL;
	pl_principal svc = svch_service();
	uint64_t l0;
	char key[32];

	(void)state;
	if (!pg.running)
		skip();
	new_tenant(t, "lease-big");
	// Busy enough for a lease (min rate 1), then one key under it.
	for (int i = 0; i < 5; i++) {
		snprintf(key, sizeof(key), "warm-%d", i);
		assert_int_equal(reserve(t, key, 1, &out), PL_OK);
	}
	l0 = leased_count(svc_batcher());
	assert_int_equal(reserve(t, "k", 7, &out), PL_OK);
	assert_int_equal(leased_count(svc_batcher()), l0 + 1);
	assert_false(out->replayed);
	snprintf(id, sizeof(id), "%s", out->reservation_id);
	// The retry is a replay with the same reservation, counted once.
	assert_int_equal(reserve(t, "k", 7, &out), PL_OK);
	assert_true(out->replayed);
	assert_string_equal(out->reservation_id, id);
	// Another amount with the key: ALREADY_EXISTS.
	assert_int_equal(reserve(t, "k", 8, &out), PL_ALREADY_EXISTS);
	// Released while its lease is out: given back once.
	rel.tenant_id = t;
	rel.idempotency_key = "k";
	rel.amount = 0;
	assert_int_equal(
	        svch_call(
	                &h, M("ReleaseUsage"), &svc, &rel.base,
	                &parley__billing__v1__release_usage_response__descriptor,
	                (void **)&rout, NULL),
	        PL_OK);
	assert_int_equal(rout->released, 7);
	flush(svc_batcher());
	assert_int_equal(counter(t, "day"), 5);
	assert_int_equal(counter(t, "month"), 5);
}

// Two replicas (the service and a batcher of the test's own on the same
// database) race for a day limit: never more than the limit, and the
// counters agree with the answers once both returned their leases.
static void
test_two_replicas_limit(void **state)
{
	char t[PL_UUID_STRLEN + 1];
	billing_batcher b2;
	racer rs[2 * THREADS];
	int ok, refused;

	(void)state;
	if (!pg.running)
		skip();
	create_plan("lease-2000", 2000, 1000000);
	new_tenant(t, "lease-2000");
	billing_batcher_init(&b2, 64, 2, false);
	assert_int_equal(billing_leases_init(&b2, h.db_url, 10000, 1), PL_OK);
	memset(rs, 0, sizeof(rs));
	for (int i = 0; i < 2 * THREADS; i++)
		rs[i] = (racer){ .tenant = t,
			         .prefix = "two",
			         .b = i % 2 ? &b2 : NULL,
			         .idx = i,
			         .n = 2 * PER_THR };
	race(rs, 2 * THREADS, &ok, &refused);
	assert_true(ok <= 2000);
	assert_int_equal(ok + refused, 2 * THREADS * 2 * PER_THR);
	// Both replicas admitted under leases.
	assert_true(b2.leased > 0);
	flush(svc_batcher());
	flush(&b2);
	assert_int_equal(counter(t, "day"), ok);
	assert_int_equal(counter(t, "month"), ok);
	assert_int_equal(sql_int("SELECT count(*) FROM "
	                         "billing.usage_reservations WHERE tenant_id "
	                         "= '%s' AND allowed",
	                         t),
	                 ok);
	// With the leases back, what is left is admitted to the unit.
	if (ok < 2000) {
		racer r = { .tenant = t, .prefix = "rest", .n = 2000 - ok };
		race(&r, 1, &ok, &refused);
		assert_int_equal(refused, 0);
	}
	billing_leases_fini(&b2);
	billing_batcher_fini(&b2);
	assert_int_equal(counter(t, "day"), 2000);
}

// A replica that dies with a lease out: its reservations stay, and the
// reaper gives back exactly what they did not use.
static void
test_reap_dead_replica(void **state)
{
	char t[PL_UUID_STRLEN + 1], lease[PL_UUID_STRLEN + 1];
	char sql[1024];
	PGconn *c;
	PGresult *r;

	(void)state;
	if (!pg.running)
		skip();
	new_tenant(t, "lease-big");
	pl_uuid7_str(lease);
	c = PQconnectdb(h.db_url);
	assert_int_equal(PQstatus(c), CONNECTION_OK);
	// Granted for 1 s, 100 units.
	snprintf(sql, sizeof(sql),
	         "SELECT units FROM billing.lease_grant('{%s}', '{messages}', "
	         "'{100}', '{%s}', 'dead:1', 1000)",
	         t, lease);
	r = PQexec(c, sql);
	assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
	assert_string_equal(PQgetvalue(r, 0, 0), "100");
	PQclear(r);
	assert_int_equal(counter(t, "day"), 100);
	// Three calls written under it (amounts 1, 2, 3).
	snprintf(sql, sizeof(sql),
	         "SELECT count(*) FILTER (WHERE NOT gone) FROM "
	         "billing.reserve_leased('{%s,%s,%s}', "
	         "'{messages,messages,messages}', '{1,2,3}', '{d1,d2,d3}', "
	         "ARRAY[gen_random_uuid(), gen_random_uuid(), "
	         "gen_random_uuid()], '{%s,%s,%s}', '{1,1,1}', '{1,1,1}')",
	         t, t, t, lease, lease, lease);
	r = PQexec(c, sql);
	assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
	assert_string_equal(PQgetvalue(r, 0, 0), "3");
	PQclear(r);
	usleep(1200000);
	// Expired: nothing more is written under it.
	snprintf(sql, sizeof(sql),
	         "SELECT count(*) FILTER (WHERE gone) FROM "
	         "billing.reserve_leased('{%s}', '{messages}', '{1}', '{d4}', "
	         "ARRAY[gen_random_uuid()], '{%s}', '{1}', '{1}')",
	         t, lease);
	r = PQexec(c, sql);
	assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
	assert_string_equal(PQgetvalue(r, 0, 0), "1");
	PQclear(r);
	// A grace the lease is within: not reaped yet.
	snprintf(sql, sizeof(sql), "SELECT billing.lease_reap('%s', 60000)", t);
	r = PQexec(c, sql);
	assert_string_equal(PQgetvalue(r, 0, 0), "0");
	PQclear(r);
	snprintf(sql, sizeof(sql), "SELECT billing.lease_reap('%s', 0)", t);
	r = PQexec(c, sql);
	assert_string_equal(PQgetvalue(r, 0, 0), "1");
	PQclear(r);
	assert_int_equal(counter(t, "day"), 6);
	assert_int_equal(counter(t, "month"), 6);
	// Returning it now (the replica came back) changes nothing.
	snprintf(sql, sizeof(sql),
	         "SELECT billing.lease_return('{%s}', '{%s}', '{94}')", t,
	         lease);
	r = PQexec(c, sql);
	assert_string_equal(PQgetvalue(r, 0, 0), "0");
	PQclear(r);
	assert_int_equal(counter(t, "day"), 6);
	PQfinish(c);
}

// A plan change reaches the next call: leases granted under the old
// limits are retired by ChangePlan.
static void
test_plan_change_retires_leases(void **state)
{
	char t[PL_UUID_STRLEN + 1];
	Parley__Billing__V1__ReserveUsageResponse *out = NULL;
	Parley__Billing__V1__ChangePlanRequest in =
	        PARLEY__BILLING__V1__CHANGE_PLAN_REQUEST__INIT;
	Parley__Billing__V1__ChangePlanResponse *cout = NULL;
	char key[32];
	int ok = 0, refused = 0;

	(void)state;
	if (!pg.running)
		skip();
	create_plan("lease-small", 40, 1000000);
	new_tenant(t, "lease-big");
	for (int i = 0; i < 30; i++) {
		snprintf(key, sizeof(key), "before-%d", i);
		assert_int_equal(reserve(t, key, 1, &out), PL_OK);
	}
	assert_true(sql_int("SELECT count(*) FROM billing.usage_leases WHERE "
	                    "tenant_id = '%s'",
	                    t) >= 1);
	in.plan_code = "lease-small";
	pl_principal admin =
	        svch_user(t, "0190aaaa-0000-7000-8000-000000000001", 4);
	assert_int_equal(
	        svch_call(
	                &h, M("ChangePlan"), &admin, &in.base,
	                &parley__billing__v1__change_plan_response__descriptor,
	                (void **)&cout, NULL),
	        PL_OK);
	for (int i = 0; i < 30; i++) {
		int rc;
		snprintf(key, sizeof(key), "after-%d", i);
		rc = reserve(t, key, 1, &out);
		if (rc == PL_OK)
			ok++;
		else if (rc == PL_RESOURCE_EXHAUSTED)
			refused++;
	}
	assert_int_equal(ok, 10);
	assert_int_equal(refused, 20);
	flush(svc_batcher());
	assert_int_equal(counter(t, "day"), 40);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_leased_counted_exactly),
		cmocka_unit_test(test_leased_replay_and_release),
		cmocka_unit_test(test_two_replicas_limit),
		cmocka_unit_test(test_reap_dead_replica),
		cmocka_unit_test(test_plan_change_retires_leases),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
