// Closing billing periods against a real PostgreSQL: the periodic job over
// several tenants (README "Invoice numbers"), CloseBillingPeriod for every
// tenant at once and who may call it, and what a close does to the
// subscription (README "Subscription lifecycle": canceled or canceled at
// period end -> expired, trialing -> active once the trial is over).
//
// Periods are placed with SQL as the superuser and closed at explicit
// times; nothing waits for the clock. Each test gets a database of its own
// (invoice numbers start at 1 and no other test's tenant is ever due).
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

#define DAY_MS (BILLING_DAY_S * 1000)

static pgh pg;
static svch h;

#include "billing_th.h"

static const char *const env[] = {
	"PARLEY_BILLING_GRACE_DAYS=3",
	"PARLEY_TENANTS_URL=inproc://billing-close-nobody-tenants",
	NULL,
};

// PostgreSQL once for the file.
static int
group_setup(void **state)
{
	(void)state;
	int rc = pgh_start(&pg);
	if (rc == -2)
		return -1;
	return 0; // rc == -1: no PostgreSQL, the tests skip
}

static int
group_teardown(void **state)
{
	(void)state;
	pgh_stop(&pg);
	return 0;
}

// A fresh billing database and service for each test.
static int
setup(void **state)
{
	(void)state;
	if (!pg.running)
		return 0;
	return svch_start(&h, &pg, &billing_service_def, 4, env) == 0 ? 0 : -1;
}

static int
teardown(void **state)
{
	(void)state;
	if (pg.running)
		svch_stop(&h);
	return 0;
}

// 00:00 UTC of a day, in Unix milliseconds.
static int64_t
day_ms(int y, int m, int d)
{
	return billing_days_from_civil(y, m, d) * DAY_MS;
}

// The end of the monthly period that starts on the anchor day.
static int64_t
month_after(int64_t anchor_ms)
{
	return billing_add_months(anchor_ms / 1000, 1) * 1000;
}

static int64_t
parse_ms(const char *s)
{
	int64_t ms = 0;
	assert_true(billing_parse_time(s, &ms));
	return ms;
}

// A monthly plan in USD, public.
static void
mk_plan(const char *code, int64_t price, int trial_days)
{
	Parley__Billing__V1__CreatePlanRequest in =
	        PARLEY__BILLING__V1__CREATE_PLAN_REQUEST__INIT;
	Parley__Billing__V1__CreatePlanResponse *out = NULL;
	pl_principal p = platform();

	in.code = (char *)code;
	in.name = (char *)code;
	in.price_minor = price;
	in.currency = "USD";
	in.interval = BILLING_BI(MONTH);
	in.trial_days = trial_days;
	in.is_public = true;
	assert_int_equal(
	        call(M("CreatePlan"), &p, &in,
	             &parley__billing__v1__create_plan_response__descriptor,
	             (void **)&out, NULL),
	        PL_OK);
	assert_int_equal(out->plan->trial_days, trial_days);
}

static void
new_tenant(char tid[PL_UUID_STRLEN + 1], const char *plan_code)
{
	assert_int_equal(svch_billing_tenant(&h, tid, plan_code), PL_OK);
}

// Moves the tenant's subscription as if it had started on anchor_ms (a
// day start): anchor day, start, and the first period [anchor, anchor + 1
// month). The trial end is left as it is.
static void
place(const char *tenant, int64_t anchor_ms)
{
	long long s = anchor_ms / 1000, e = month_after(anchor_ms) / 1000;
	sql_exec("UPDATE billing.subscriptions SET anchor_date = "
	         "(to_timestamp(%lld) AT TIME ZONE 'UTC')::date, started_at = "
	         "to_timestamp(%lld), current_period_start_at = "
	         "to_timestamp(%lld), current_period_end_at = "
	         "to_timestamp(%lld) "
	         "WHERE tenant_id = '%s'",
	         s, s, s, e, tenant);
	assert_int_equal(sql_int("SELECT count(*) FROM billing.subscriptions "
	                         "WHERE tenant_id = '%s' AND "
	                         "current_period_end_at = to_timestamp(%lld)",
	                         tenant, e),
	                 1);
}

static long long
n_invoices(const char *tenant)
{
	return sql_int("SELECT count(*) FROM billing.invoices WHERE tenant_id "
	               "= '%s'",
	               tenant);
}

// The subscription row as text, to tell whether anything touched it.
static void
sub_row(const char *tenant, char *out, size_t len)
{
	sql_text(out, len,
	         "SELECT row_to_json(s)::text FROM billing.subscriptions s "
	         "WHERE tenant_id = '%s'",
	         tenant);
}

// The invoice numbers issued so far, in order ("1,2,3").
static void
numbers(char *out, size_t len)
{
	sql_text(out, len,
	         "SELECT coalesce(string_agg(number::text, ',' ORDER BY "
	         "number), '') FROM billing.invoices");
}

// One invoice of tenant for [start, end) with that total.
static void
assert_invoice(const char *tenant, int64_t start, int64_t end, long long total)
{
	assert_int_equal(sql_int("SELECT count(*) FROM billing.invoices WHERE "
	                         "tenant_id = '%s' AND period_start_at = "
	                         "to_timestamp(%lld) AND period_end_at = "
	                         "to_timestamp(%lld) AND total_minor = %lld",
	                         tenant, (long long)(start / 1000),
	                         (long long)(end / 1000), total),
	                 1);
}

// The subscription's current period is [start, end) and its status st.
static void
assert_period(const char *tenant, int64_t start, int64_t end, int st)
{
	billing_sub *s = sub_of(tenant);
	assert_int_equal(parse_ms(s->current_period_start_at), start);
	assert_int_equal(parse_ms(s->current_period_end_at), end);
	assert_int_equal(s->status, st);
}

static int
close_period(const pl_principal *p, const char *tenant, int64_t at_ms,
             Parley__Billing__V1__CloseBillingPeriodResponse **out,
             pl_rpc_result *res)
{
	Parley__Billing__V1__CloseBillingPeriodRequest in =
	        PARLEY__BILLING__V1__CLOSE_BILLING_PERIOD_REQUEST__INIT;
	char at[32];

	billing_format_time(at_ms, at);
	in.tenant_id = (char *)tenant;
	in.at = at;
	return call(
	        M("CloseBillingPeriod"), p, &in,
	        &parley__billing__v1__close_billing_period_response__descriptor,
	        (void **)out, res);
}

// ---------------------------------------------------------------------------

// billing_jobs_run_once closes the periods that ended at or before at_ms,
// one invoice each, numbered 1, 2, 3 without a gap; a period still running
// is left alone; a second run at the same time issues nothing.
static void
test_job_closes_ended_periods_once(void **state)
{
	char a[PL_UUID_STRLEN + 1], b[PL_UUID_STRLEN + 1];
	char c[PL_UUID_STRLEN + 1], d[PL_UUID_STRLEN + 1];
	char before[4096], after[4096], all0[16384], all1[16384], nums[64];
	const int64_t at = day_ms(2024, 2, 15);
	const int64_t a0 = day_ms(2024, 1, 10), b0 = day_ms(2024, 1, 5);
	const int64_t c0 = day_ms(2024, 1, 15), d0 = day_ms(2024, 1, 16);
	(void)state;
	NEED_PG();

	mk_plan("monthly", 1000, 0);
	new_tenant(a, "monthly");
	new_tenant(b, "monthly");
	new_tenant(c, "monthly");
	new_tenant(d, "monthly");
	place(a, a0); // [01-10, 02-10): ended
	place(b, b0); // [01-05, 02-05): ended
	place(c, c0); // [01-15, 02-15): ends at `at` exactly: ended
	place(d, d0); // [01-16, 02-16): still running at `at`
	assert_int_equal(month_after(c0), at);
	assert_true(month_after(d0) > at);
	assert_int_equal(sub_of(a)->status, BILLING_ST(ACTIVE));
	sub_row(d, before, sizeof(before));

	assert_int_equal(billing_jobs_run_once(h.w.db, h.arg, at), 3);
	assert_int_equal(n_invoices(a), 1);
	assert_int_equal(n_invoices(b), 1);
	assert_int_equal(n_invoices(c), 1);
	assert_int_equal(n_invoices(d), 0);
	numbers(nums, sizeof(nums));
	assert_string_equal(nums, "1,2,3");
	assert_int_equal(sql_int("SELECT last_number FROM "
	                         "billing.invoice_counter"),
	                 3);
	// Each invoice is the period that ended; the subscription is in the
	// next one.
	assert_invoice(a, a0, month_after(a0), 1000);
	assert_invoice(b, b0, month_after(b0), 1000);
	assert_invoice(c, c0, month_after(c0), 1000);
	assert_period(a, month_after(a0),
	              billing_add_months(a0 / 1000, 2) * 1000,
	              BILLING_ST(ACTIVE));
	assert_period(b, month_after(b0),
	              billing_add_months(b0 / 1000, 2) * 1000,
	              BILLING_ST(ACTIVE));
	assert_period(c, month_after(c0),
	              billing_add_months(c0 / 1000, 2) * 1000,
	              BILLING_ST(ACTIVE));
	// The running one: not a byte changed.
	sub_row(d, after, sizeof(after));
	assert_string_equal(after, before);
	assert_period(d, d0, month_after(d0), BILLING_ST(ACTIVE));

	// Again at the same time: nothing to close, nothing changes.
	sql_text(all0, sizeof(all0),
	         "SELECT string_agg(row_to_json(s)::text, ',' ORDER BY "
	         "tenant_id) FROM billing.subscriptions s");
	assert_int_equal(billing_jobs_run_once(h.w.db, h.arg, at), 0);
	sql_text(all1, sizeof(all1),
	         "SELECT string_agg(row_to_json(s)::text, ',' ORDER BY "
	         "tenant_id) FROM billing.subscriptions s");
	assert_string_equal(all1, all0);
	assert_int_equal(sql_int("SELECT count(*) FROM billing.invoices"), 3);
	assert_int_equal(sql_int("SELECT last_number FROM "
	                         "billing.invoice_counter"),
	                 3);
}

// CloseBillingPeriod with no tenant_id: platform administrators and
// services only (PL_PLATFORM_ADMIN); it closes every ended period and
// sweeps past-due subscriptions beyond grace. Refused callers change
// nothing.
static void
test_close_all_over_rpc(void **state)
{
	Parley__Billing__V1__CloseBillingPeriodResponse *out = NULL;
	pl_rpc_result res;
	char e1[PL_UUID_STRLEN + 1], e2[PL_UUID_STRLEN + 1];
	char n1[PL_UUID_STRLEN + 1], pd[PL_UUID_STRLEN + 1], nums[64];
	char *scopes[2] = { "billing:read", "billing:write" };
	const int64_t at = day_ms(2024, 2, 15), later = day_ms(2024, 3, 12);
	const int64_t e10 = day_ms(2024, 1, 10), e20 = day_ms(2024, 1, 5);
	const int64_t n10 = day_ms(2024, 1, 16), pd0 = day_ms(2024, 2, 14);
	pl_principal admin = platform(), svc = svch_service();
	pl_principal denied[4], anon = PARLEY__RPC__V1__PRINCIPAL__INIT;
	bool seen1 = false, seen2 = false;
	(void)state;
	NEED_PG();

	mk_plan("monthly", 1000, 0);
	new_tenant(e1, "monthly");
	new_tenant(e2, "monthly");
	new_tenant(n1, "monthly");
	new_tenant(pd, "monthly");
	place(e1, e10); // [01-10, 02-10): ended at `at`
	place(e2, e20); // [01-05, 02-05): ended
	place(n1, n10); // [01-16, 02-16): running at `at`, ended `later`
	place(pd, pd0); // [02-14, 03-14): running at both times
	// pd's payment failed 5 days before `at`; grace is 3 days.
	sql_exec("UPDATE billing.subscriptions SET status = 'past_due', "
	         "past_due_since_at = to_timestamp(%lld) WHERE tenant_id = "
	         "'%s'",
	         (long long)(day_ms(2024, 2, 10) / 1000), pd);

	// Tenant users whatever their role, API keys, users of no tenant who
	// are not platform administrators: PERMISSION_DENIED; no principal:
	// UNAUTHENTICATED. Nothing is closed or swept.
	denied[0] = owner(e1);
	denied[1] = svch_user(e1, "0190aaaa-0000-7000-8000-000000000003", 3);
	denied[2] = svch_api_key(e1, scopes, 2);
	denied[3] = svch_user("", "0190aaaa-0000-7000-8000-000000000004", 4);
	for (int i = 0; i < 4; i++) {
		assert_int_equal(close_period(&denied[i], "", at, &out, &res),
		                 PL_PERMISSION_DENIED);
		assert_non_null(strstr(res.message, "platform administrators"));
	}
	assert_int_equal(close_period(&anon, "", at, &out, &res),
	                 PL_UNAUTHENTICATED);
	assert_int_equal(sql_int("SELECT count(*) FROM billing.invoices"), 0);
	assert_int_equal(sql_int("SELECT count(*) FROM billing.subscriptions "
	                         "WHERE grace_expired_at IS NOT NULL"),
	                 0);
	assert_period(e1, e10, month_after(e10), BILLING_ST(ACTIVE));

	// A platform administrator: the two ended periods, and the sweep.
	assert_int_equal(close_period(&admin, "", at, &out, NULL), PL_OK);
	assert_int_equal(out->closed, 2);
	assert_int_equal(out->n_invoices, 2);
	for (size_t i = 0; i < out->n_invoices; i++) {
		billing_invoice *v = out->invoices[i];
		int64_t s = strcmp(v->tenant_id, e1) == 0 ? e10 : e20;
		if (strcmp(v->tenant_id, e1) == 0)
			seen1 = true;
		else if (strcmp(v->tenant_id, e2) == 0)
			seen2 = true;
		else
			fail_msg("invoice for tenant %s", v->tenant_id);
		assert_int_equal(parse_ms(v->period_start_at), s);
		assert_int_equal(parse_ms(v->period_end_at), month_after(s));
		assert_int_equal(v->total_minor, 1000);
	}
	assert_true(seen1 && seen2);
	numbers(nums, sizeof(nums));
	assert_string_equal(nums, "1,2");
	assert_int_equal(n_invoices(n1), 0);
	assert_int_equal(n_invoices(pd), 0);
	assert_period(n1, n10, month_after(n10), BILLING_ST(ACTIVE));
	assert_period(e1, month_after(e10),
	              billing_add_months(e10 / 1000, 2) * 1000,
	              BILLING_ST(ACTIVE));
	assert_int_equal(sql_int("SELECT count(*) FROM billing.subscriptions "
	                         "WHERE grace_expired_at IS NOT NULL AND "
	                         "tenant_id = '%s'",
	                         pd),
	                 1);
	assert_int_equal(sql_int("SELECT count(*) FROM billing.outbox WHERE "
	                         "type = 'subscription.grace_expired' AND "
	                         "destination = 'tenants' AND tenant_id = "
	                         "'%s'",
	                         pd),
	                 1);

	// The same time again: nothing left.
	assert_int_equal(close_period(&admin, "", at, &out, NULL), PL_OK);
	assert_int_equal(out->closed, 0);
	assert_int_equal(out->n_invoices, 0);

	// A service may call it too: at `later` the next periods of e1 and
	// e2 and n1's first have ended; pd's has not. Numbers go on.
	assert_int_equal(close_period(&svc, "", later, &out, NULL), PL_OK);
	assert_int_equal(out->closed, 3);
	numbers(nums, sizeof(nums));
	assert_string_equal(nums, "1,2,3,4,5");
	assert_int_equal(n_invoices(e1), 2);
	assert_int_equal(n_invoices(e2), 2);
	assert_int_equal(n_invoices(n1), 1);
	assert_int_equal(n_invoices(pd), 0);
	assert_invoice(n1, n10, month_after(n10), 1000);
	assert_int_equal(sql_int("SELECT count(*) FROM billing.outbox WHERE "
	                         "type = 'subscription.grace_expired'"),
	                 1);
}

// CloseBillingPeriod for every tenant closes every period that ended, a
// subscription several periods behind included, and one tenant whose close
// fails does not stop the others: the call fails naming it, the others'
// invoices are issued, and a later call closes it once it can be.
static void
test_close_all_catches_up_and_survives_a_failure(void **state)
{
	Parley__Billing__V1__CloseBillingPeriodResponse *out = NULL;
	pl_rpc_result res;
	char a[PL_UUID_STRLEN + 1], b[PL_UUID_STRLEN + 1];
	char c[PL_UUID_STRLEN + 1], nums[64];
	const int64_t at = day_ms(2024, 2, 15);
	pl_principal admin = platform();
	(void)state;
	NEED_PG();

	mk_plan("monthly", 1000, 0);
	new_tenant(a, "monthly");
	new_tenant(b, "monthly");
	new_tenant(c, "monthly");
	place(a, day_ms(2023, 11, 1)); // three periods ended by `at`
	place(b, day_ms(2024, 1, 10)); // one
	place(c, day_ms(2024, 1, 5));  // one, whose invoice cannot be written
	sql_exec("CREATE FUNCTION public.refuse_invoice() RETURNS trigger "
	         "LANGUAGE plpgsql AS $$ BEGIN IF NEW.tenant_id = '%s' THEN "
	         "RAISE EXCEPTION 'invoice refused for the test'; END IF; "
	         "RETURN NEW; END $$;"
	         "CREATE TRIGGER refuse_invoice BEFORE INSERT ON "
	         "billing.invoices FOR EACH ROW EXECUTE FUNCTION "
	         "public.refuse_invoice()",
	         c);

	assert_int_not_equal(close_period(&admin, "", at, &out, &res), PL_OK);
	assert_non_null(strstr(res.message, "could not close 1 due"));
	assert_non_null(strstr(res.message, c));
	assert_int_equal(n_invoices(a), 3);
	assert_int_equal(n_invoices(b), 1);
	assert_int_equal(n_invoices(c), 0);
	assert_invoice(a, day_ms(2023, 11, 1), day_ms(2023, 12, 1), 1000);
	assert_invoice(a, day_ms(2023, 12, 1), day_ms(2024, 1, 1), 1000);
	assert_invoice(a, day_ms(2024, 1, 1), day_ms(2024, 2, 1), 1000);
	assert_period(a, day_ms(2024, 2, 1), day_ms(2024, 3, 1),
	              BILLING_ST(ACTIVE));
	assert_period(c, day_ms(2024, 1, 5), day_ms(2024, 2, 5),
	              BILLING_ST(ACTIVE));

	sql_exec("DROP TRIGGER refuse_invoice ON billing.invoices");
	assert_int_equal(close_period(&admin, "", at, &out, NULL), PL_OK);
	assert_int_equal(out->closed, 1);
	assert_string_equal(out->invoices[0]->tenant_id, c);
	numbers(nums, sizeof(nums));
	assert_string_equal(nums, "1,2,3,4,5");
	assert_int_equal(close_period(&admin, "", at, &out, NULL), PL_OK);
	assert_int_equal(out->closed, 0);
}

// How many recorded changes of the tenant went from -> to for reason.
static long long
changes(const char *tenant, const char *from, const char *to,
        const char *reason)
{
	return sql_int("SELECT count(*) FROM billing.subscription_changes "
	               "WHERE tenant_id = '%s' AND from_status = '%s' AND "
	               "to_status = '%s' AND reason = '%s'",
	               tenant, from, to, reason);
}

// How many subscription.status_changed events to tenants say to/prev.
static long long
status_events(const char *tenant, const char *to, const char *prev,
              const char *reason)
{
	return sql_int("SELECT count(*) FROM billing.outbox WHERE tenant_id = "
	               "'%s' AND destination = 'tenants' AND type = "
	               "'subscription.status_changed' AND payload->>'status' = "
	               "'%s' AND payload->>'previous_status' = '%s' AND "
	               "payload->>'reason' = '%s'",
	               tenant, to, prev, reason);
}

static void
cancel(const char *tenant, bool at_period_end)
{
	Parley__Billing__V1__CancelSubscriptionRequest in =
	        PARLEY__BILLING__V1__CANCEL_SUBSCRIPTION_REQUEST__INIT;
	Parley__Billing__V1__CancelSubscriptionResponse *out = NULL;
	pl_principal o = owner(tenant);

	in.at_period_end = at_period_end;
	assert_int_equal(
	        call(M("CancelSubscription"), &o, &in,
	             &parley__billing__v1__cancel_subscription_response__descriptor,
	             (void **)&out, NULL),
	        PL_OK);
	assert_int_equal(out->subscription->cancel_at_period_end,
	                 at_period_end);
}

// Closes the tenant's period at its end (platform admin) and returns the
// one invoice; *fee: its plan fee line.
static billing_invoice *
close_one(const char *tenant, int64_t at_ms, int64_t *fee)
{
	Parley__Billing__V1__CloseBillingPeriodResponse *out = NULL;
	pl_principal admin = platform();
	billing_invoice *v;

	assert_int_equal(close_period(&admin, tenant, at_ms, &out, NULL),
	                 PL_OK);
	assert_int_equal(out->closed, 1);
	v = out->invoices[0];
	*fee = -1;
	for (size_t i = 0; i < v->n_lines; i++)
		if (v->lines[i]->kind == BILLING_LK(PLAN_FEE)) {
			assert_int_equal(*fee, -1); // one fee line
			*fee = v->lines[i]->amount_minor;
		}
	assert_true(*fee >= 0);
	return v;
}

// What a close does to the subscription (store.c, close_one): canceled now
// or at period end -> expired (and stays so: no more invoices); trialing
// -> active when the trial ended at or before the period's end, whether
// the plan is paid or free; still trialing when the trial runs on into
// the next period. The plan fee counts only the part after the trial.
static void
test_lifecycle_at_close(void **state)
{
	char ce[PL_UUID_STRLEN + 1], cn[PL_UUID_STRLEN + 1];
	char tr[PL_UUID_STRLEN + 1], tb[PL_UUID_STRLEN + 1];
	char tl[PL_UUID_STRLEN + 1], tf[PL_UUID_STRLEN + 1];
	char tc[PL_UUID_STRLEN + 1];
	Parley__Billing__V1__CloseBillingPeriodResponse *out = NULL;
	pl_principal admin = platform();
	billing_sub *s;
	billing_invoice *v;
	int64_t start, end, end2, trial, fee;
	char old_end[32];
	(void)state;
	NEED_PG();

	mk_plan("monthly", 1000, 0);
	mk_plan("trial-paid", 1000, 14);
	mk_plan("trial-free", 0, 14);
	new_tenant(ce, "monthly");    // cancel at period end
	new_tenant(cn, "monthly");    // cancel now
	new_tenant(tr, "trial-paid"); // trial ends 10 days into the period
	new_tenant(tb, "trial-paid"); // trial ends with the period
	new_tenant(tl, "trial-paid"); // trial ends 5 days into the next one
	new_tenant(tf, "trial-free"); // free plan, 14-day trial
	new_tenant(tc, "trial-paid"); // trial ended, canceled at period end
	// The periods are the real ones (today to a month later); the trial
	// ends are put on whole seconds so that the fees are exact.
	sql_exec("UPDATE billing.subscriptions SET trial_end_at = "
	         "current_period_start_at + interval '10 days' WHERE tenant_id "
	         "IN ('%s', '%s')",
	         tr, tc);
	sql_exec("UPDATE billing.subscriptions SET trial_end_at = "
	         "current_period_end_at WHERE tenant_id = '%s'",
	         tb);
	sql_exec("UPDATE billing.subscriptions SET trial_end_at = "
	         "current_period_end_at + interval '5 days' WHERE tenant_id = "
	         "'%s'",
	         tl);
	cancel(ce, true);
	cancel(tc, true);
	cancel(cn, false);
	assert_int_equal(sub_of(ce)->status, BILLING_ST(ACTIVE));
	assert_int_equal(sub_of(cn)->status, BILLING_ST(CANCELED));
	assert_int_equal(sub_of(tc)->status, BILLING_ST(TRIALING));
	assert_int_equal(sub_of(tf)->status, BILLING_ST(TRIALING));

	// Canceled at period end: the last period is billed in full, then
	// expired, canceled_at = the period's end; tenants are told.
	s = sub_of(ce);
	snprintf(old_end, sizeof(old_end), "%s", s->current_period_end_at);
	end = parse_ms(s->current_period_end_at);
	v = close_one(ce, end, &fee);
	assert_int_equal(fee, 1000);
	s = sub_of(ce);
	assert_int_equal(s->status, BILLING_ST(EXPIRED));
	assert_string_equal(s->canceled_at, old_end);
	assert_int_equal(
	        changes(ce, "active", "expired", "period_ended_canceled"), 1);
	assert_int_equal(
	        status_events(ce, "expired", "active", "period_ended_canceled"),
	        1);

	// Canceled now: expired at the close too.
	end = parse_ms(sub_of(cn)->current_period_end_at);
	close_one(cn, end, &fee);
	assert_int_equal(sub_of(cn)->status, BILLING_ST(EXPIRED));
	assert_int_equal(
	        changes(cn, "canceled", "expired", "period_ended_canceled"), 1);
	assert_int_equal(status_events(cn, "expired", "canceled",
	                               "period_ended_canceled"),
	                 1);

	// Trialing, trial ended within the period: active; the fee is the
	// part of the period after the trial.
	s = sub_of(tr);
	start = parse_ms(s->current_period_start_at);
	end = parse_ms(s->current_period_end_at);
	trial = parse_ms(s->trial_end_at);
	assert_int_equal(trial, start + 10 * DAY_MS);
	v = close_one(tr, end, &fee);
	assert_int_equal(sub_of(tr)->status, BILLING_ST(ACTIVE));
	assert_int_equal(fee, billing_prorate(1000, (end - trial) / 1000,
	                                      (end - start) / 1000));
	assert_true(fee > 0 && fee < 1000);
	assert_int_equal(v->total_minor, fee);
	assert_int_equal(changes(tr, "trialing", "active", "trial_ended"), 1);
	assert_int_equal(status_events(tr, "active", "trialing", "trial_ended"),
	                 1);

	// The trial ends exactly when the period does: active, nothing to pay
	// (the invoice of 0 is issued paid).
	s = sub_of(tb);
	end = parse_ms(s->current_period_end_at);
	assert_int_equal(parse_ms(s->trial_end_at), end);
	v = close_one(tb, end, &fee);
	assert_int_equal(sub_of(tb)->status, BILLING_ST(ACTIVE));
	assert_int_equal(fee, 0);
	assert_int_equal(v->total_minor, 0);
	assert_int_equal(v->status, BILLING_IV(PAID));
	assert_int_equal(changes(tb, "trialing", "active", "trial_ended"), 1);

	// A free plan is no different: active once its trial is over.
	end = parse_ms(sub_of(tf)->current_period_end_at);
	assert_true(parse_ms(sub_of(tf)->trial_end_at) < end);
	v = close_one(tf, end, &fee);
	assert_int_equal(sub_of(tf)->status, BILLING_ST(ACTIVE));
	assert_int_equal(v->total_minor, 0);
	assert_int_equal(changes(tf, "trialing", "active", "trial_ended"), 1);

	// A trial running into the next period: still trialing after the
	// first close (no fee); active at the next, billed from its end.
	s = sub_of(tl);
	end = parse_ms(s->current_period_end_at);
	trial = parse_ms(s->trial_end_at);
	assert_int_equal(trial, end + 5 * DAY_MS);
	close_one(tl, end, &fee);
	assert_int_equal(fee, 0);
	s = sub_of(tl);
	assert_int_equal(s->status, BILLING_ST(TRIALING));
	assert_int_equal(changes(tl, "trialing", "active", "trial_ended"), 0);
	end2 = parse_ms(s->current_period_end_at);
	assert_int_equal(parse_ms(s->current_period_start_at), end);
	close_one(tl, end2, &fee);
	assert_int_equal(sub_of(tl)->status, BILLING_ST(ACTIVE));
	assert_int_equal(fee, billing_prorate(1000, (end2 - trial) / 1000,
	                                      (end2 - end) / 1000));
	assert_int_equal(changes(tl, "trialing", "active", "trial_ended"), 1);

	// Trial over but canceled at period end: expired, not active.
	end = parse_ms(sub_of(tc)->current_period_end_at);
	close_one(tc, end, &fee);
	assert_int_equal(sub_of(tc)->status, BILLING_ST(EXPIRED));
	assert_int_equal(
	        changes(tc, "trialing", "expired", "period_ended_canceled"), 1);
	assert_int_equal(changes(tc, "trialing", "active", "trial_ended"), 0);

	// Expired stays expired: later closes issue nothing for them, by
	// tenant or for every tenant.
	end2 = parse_ms(sub_of(tr)->current_period_end_at);
	assert_int_equal(
	        close_period(&admin, ce, end2 + 40 * DAY_MS, &out, NULL),
	        PL_OK);
	assert_int_equal(out->closed, 0);
	assert_int_equal(close_period(&admin, "", end2, &out, NULL), PL_OK);
	for (size_t i = 0; i < out->n_invoices; i++) {
		assert_string_not_equal(out->invoices[i]->tenant_id, ce);
		assert_string_not_equal(out->invoices[i]->tenant_id, cn);
		assert_string_not_equal(out->invoices[i]->tenant_id, tc);
	}
	assert_int_equal(n_invoices(ce), 1);
	assert_int_equal(n_invoices(cn), 1);
	assert_int_equal(n_invoices(tc), 1);
	assert_int_equal(sub_of(ce)->status, BILLING_ST(EXPIRED));
	assert_int_equal(sub_of(cn)->status, BILLING_ST(EXPIRED));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(
		        test_job_closes_ended_periods_once, setup, teardown),
		cmocka_unit_test_setup_teardown(
		        test_close_all_catches_up_and_survives_a_failure, setup,
		        teardown),
		cmocka_unit_test_setup_teardown(test_close_all_over_rpc, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(test_lifecycle_at_close, setup,
		                                teardown),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
