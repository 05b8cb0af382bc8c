// Billing against a real PostgreSQL through the RPC client: every RPC, bad
// input, cross-tenant isolation, proration, invoices, payment webhooks.
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
#include "pl/id.h"
#include "svch.h"

#define SECRET "whsec_integration_secret"

static pgh pg;
static svch h;

#include "billing_th.h"

static const char *const env[] = {
	"PARLEY_PAYMENT_WEBHOOK_SECRET=" SECRET,
	"PARLEY_BILLING_GRACE_DAYS=3",
	"PARLEY_ANALYTICS_URL=inproc://billing-test-nobody-analytics",
	"PARLEY_TENANTS_URL=inproc://billing-test-nobody-tenants",
	NULL,
};

static int
setup(void **state)
{
	(void)state;
	int rc = pgh_start(&pg);
	if (rc == -2)
		return -1;
	if (rc == -1)
		return 0;
	if (svch_start(&h, &pg, &billing_service_def, 4, env) != 0)
		return -1;
	return 0;
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

// A new tenant with a subscription on plan_code (NULL: the default) made
// through DeliverEvents(tenant.created).
static void
new_tenant(char tid[PL_UUID_STRLEN + 1], const char *plan_code)
{
	Parley__Billing__V1__DeliverEventsRequest in =
	        PARLEY__BILLING__V1__DELIVER_EVENTS_REQUEST__INIT;
	Parley__Billing__V1__DeliverEventsResponse *out = NULL;
	Parley__Rpc__V1__Event ev = PARLEY__RPC__V1__EVENT__INIT;
	Parley__Rpc__V1__Event *evs[1] = { &ev };
	Parley__Rpc__V1__Json pay = PARLEY__RPC__V1__JSON__INIT;
	pl_principal svc = svch_service();
	char id[PL_UUID_STRLEN + 1], text[128];

	pl_uuid7_str(tid);
	pl_uuid7_str(id);
	ev.id = id;
	ev.tenant_id = tid;
	ev.type = "tenant.created";
	snprintf(text, sizeof(text), "{\"name\":\"t\",\"plan_code\":\"%s\"}",
	         plan_code ? plan_code : "");
	pay.text = text;
	ev.payload = &pay;
	in.n_events = 1;
	in.events = evs;
	assert_int_equal(
	        call(M("DeliverEvents"), &svc, &in,
	             &parley__billing__v1__deliver_events_response__descriptor,
	             (void **)&out, NULL),
	        PL_OK);
	assert_int_equal(out->accepted, 1);
}

static int
reserve(const char *tenant, int metric, int64_t amount, const char *key,
        Parley__Billing__V1__ReserveUsageResponse **out, pl_rpc_result *res)
{
	Parley__Billing__V1__ReserveUsageRequest in =
	        PARLEY__BILLING__V1__RESERVE_USAGE_REQUEST__INIT;
	pl_principal svc = svch_service();
	Parley__Billing__V1__ReserveUsageResponse *o = NULL;
	in.tenant_id = (char *)tenant;
	in.metric = (Parley__Billing__V1__Metric)metric;
	in.amount = amount;
	in.idempotency_key = (char *)key;
	return call(M("ReserveUsage"), &svc, &in,
	            &parley__billing__v1__reserve_usage_response__descriptor,
	            (void **)(out ? out : &o), res);
}

static Parley__Billing__V1__GetUsageResponse *
usage(const char *tenant)
{
	Parley__Billing__V1__GetUsageRequest in =
	        PARLEY__BILLING__V1__GET_USAGE_REQUEST__INIT;
	Parley__Billing__V1__GetUsageResponse *out = NULL;
	pl_principal p = viewer(tenant);
	assert_int_equal(
	        call(M("GetUsage"), &p, &in,
	             &parley__billing__v1__get_usage_response__descriptor,
	             (void **)&out, NULL),
	        PL_OK);
	return out;
}

static void
create_plan(const char *code, int64_t price, int64_t day, int64_t month,
            int64_t overage_msgs)
{
	Parley__Billing__V1__CreatePlanRequest in =
	        PARLEY__BILLING__V1__CREATE_PLAN_REQUEST__INIT;
	Parley__Billing__V1__Limits lim = PARLEY__BILLING__V1__LIMITS__INIT;
	Parley__Billing__V1__OveragePrice op =
	        PARLEY__BILLING__V1__OVERAGE_PRICE__INIT;
	Parley__Billing__V1__OveragePrice *ops[1] = { &op };
	Parley__Billing__V1__CreatePlanResponse *out = NULL;
	pl_principal p = platform();

	in.code = (char *)code;
	in.name = (char *)code;
	in.price_minor = price;
	in.currency = "USD";
	in.interval = BILLING_BI(MONTH);
	in.is_public = true;
	lim.messages_per_day = day;
	lim.messages_per_month = month;
	lim.campaigns_per_day = -1;
	lim.campaigns_per_month = -1;
	lim.ai_tokens_per_month = 1000;
	in.limits = &lim;
	if (overage_msgs >= 0) {
		op.metric = PARLEY__BILLING__V1__METRIC__METRIC_MESSAGES;
		op.price_per_1000_minor = overage_msgs;
		in.overage = ops;
		in.n_overage = 1;
	}
	assert_int_equal(
	        call(M("CreatePlan"), &p, &in,
	             &parley__billing__v1__create_plan_response__descriptor,
	             (void **)&out, NULL),
	        PL_OK);
	assert_string_equal(out->plan->code, code);
	assert_true(pl_uuid_valid(out->id));
}

// ---------------------------------------------------------------------------

static void
test_plans(void **state)
{
	Parley__Billing__V1__ListPlansRequest in =
	        PARLEY__BILLING__V1__LIST_PLANS_REQUEST__INIT;
	Parley__Billing__V1__ListPlansResponse *out = NULL;
	Parley__Rpc__V1__PageRequest page = PARLEY__RPC__V1__PAGE_REQUEST__INIT;
	Parley__Billing__V1__CreatePlanRequest cin =
	        PARLEY__BILLING__V1__CREATE_PLAN_REQUEST__INIT;
	Parley__Billing__V1__UpdatePlanRequest uin =
	        PARLEY__BILLING__V1__UPDATE_PLAN_REQUEST__INIT;
	Parley__Billing__V1__UpdatePlanResponse *uout = NULL;
	pl_principal admin = platform(), v;
	char tenant[PL_UUID_STRLEN + 1], *mask[1];
	pl_rpc_result res;
	bool seen_unlimited = false;
	long long nplans;
	(void)state;
	NEED_PG();

	new_tenant(tenant, NULL);
	v = viewer(tenant);
	// Tenants see public plans only, even when asking for more.
	in.include_internal = true;
	assert_int_equal(
	        call(M("ListPlans"), &v, &in,
	             &parley__billing__v1__list_plans_response__descriptor,
	             (void **)&out, NULL),
	        PL_OK);
	for (size_t i = 0; i < out->n_plans; i++) {
		assert_true(out->plans[i]->is_public);
		if (strcmp(out->plans[i]->code, "starter") == 0) {
			assert_true(out->plans[i]->is_default);
			assert_int_equal(out->plans[i]->price_minor, 1900);
			assert_string_equal(out->plans[i]->currency, "USD");
		}
	}
	// A service (acting for the platform) sees internal ones, paged.
	page.page_size = 2;
	in.page = &page;
	pl_principal svc = svch_service();
	svc.tenant_id = tenant;
	for (int pages = 0; pages < 10; pages++) {
		assert_int_equal(
		        call(M("ListPlans"), &svc, &in,
		             &parley__billing__v1__list_plans_response__descriptor,
		             (void **)&out, NULL),
		        PL_OK);
		assert_true(out->n_plans <= 2);
		for (size_t i = 0; i < out->n_plans; i++)
			if (strcmp(out->plans[i]->code, "unlimited") == 0) {
				seen_unlimited = true;
				assert_false(out->plans[i]->is_public);
				assert_int_equal(
				        out->plans[i]->limits->messages_per_day,
				        -1);
				assert_true(
				        out->plans[i]->features->llm_agents);
			}
		if (out->next_page_token[0] == '\0')
			break;
		page.page_token = out->next_page_token;
	}
	assert_true(seen_unlimited);
	page.page_token = "zz";
	assert_int_equal(
	        call(M("ListPlans"), &svc, &in,
	             &parley__billing__v1__list_plans_response__descriptor,
	             (void **)&out, &res),
	        PL_INVALID_ARGUMENT);

	// CreatePlan: only platform admins; bad input stores nothing.
	nplans = sql_int("SELECT count(*) FROM billing.plans");
	cin.code = "pro-2";
	cin.name = "Pro 2";
	cin.currency = "USD";
	Parley__Billing__V1__CreatePlanResponse *cout = NULL;
	pl_principal o = owner(tenant);
	assert_int_equal(
	        call(M("CreatePlan"), &o, &cin,
	             &parley__billing__v1__create_plan_response__descriptor,
	             (void **)&cout, &res),
	        PL_PERMISSION_DENIED);
	cin.currency = "XYZ";
	assert_int_equal(
	        call(M("CreatePlan"), &admin, &cin,
	             &parley__billing__v1__create_plan_response__descriptor,
	             (void **)&cout, &res),
	        PL_INVALID_ARGUMENT);
	assert_string_equal(res.details[0]->field, "currency");
	cin.currency = "USD";
	cin.price_minor = -1;
	assert_int_equal(
	        call(M("CreatePlan"), &admin, &cin,
	             &parley__billing__v1__create_plan_response__descriptor,
	             (void **)&cout, &res),
	        PL_INVALID_ARGUMENT);
	cin.price_minor = INT64_MAX;
	assert_int_equal(
	        call(M("CreatePlan"), &admin, &cin,
	             &parley__billing__v1__create_plan_response__descriptor,
	             (void **)&cout, &res),
	        PL_INVALID_ARGUMENT);
	cin.price_minor = 100;
	cin.code = "Bad Code";
	assert_int_equal(
	        call(M("CreatePlan"), &admin, &cin,
	             &parley__billing__v1__create_plan_response__descriptor,
	             (void **)&cout, &res),
	        PL_INVALID_ARGUMENT);
	cin.code = "starter";
	assert_int_equal(
	        call(M("CreatePlan"), &admin, &cin,
	             &parley__billing__v1__create_plan_response__descriptor,
	             (void **)&cout, &res),
	        PL_ALREADY_EXISTS);
	assert_int_equal(sql_int("SELECT count(*) FROM billing.plans"), nplans);
	cin.code = "pro-2";
	cin.is_default = true;
	assert_int_equal(
	        call(M("CreatePlan"), &admin, &cin,
	             &parley__billing__v1__create_plan_response__descriptor,
	             (void **)&cout, &res),
	        PL_OK);
	assert_true(cout->plan->is_default);
	assert_int_equal(sql_int("SELECT count(*) FROM billing.plans WHERE "
	                         "is_default"),
	                 1);

	// UpdatePlan with a mask; the default moves back to starter.
	uin.id = cout->id;
	mask[0] = "name";
	uin.update_mask = mask;
	uin.n_update_mask = 1;
	uin.name = "Pro Two";
	uin.price_minor = 777; // not in the mask: unchanged
	assert_int_equal(
	        call(M("UpdatePlan"), &admin, &uin,
	             &parley__billing__v1__update_plan_response__descriptor,
	             (void **)&uout, NULL),
	        PL_OK);
	assert_string_equal(uout->plan->name, "Pro Two");
	assert_int_equal(uout->plan->price_minor, 100);
	mask[0] = "is_default";
	uin.is_default = false;
	assert_int_equal(
	        call(M("UpdatePlan"), &admin, &uin,
	             &parley__billing__v1__update_plan_response__descriptor,
	             (void **)&uout, &res),
	        PL_FAILED_PRECONDITION);
	mask[0] = "bogus";
	assert_int_equal(
	        call(M("UpdatePlan"), &admin, &uin,
	             &parley__billing__v1__update_plan_response__descriptor,
	             (void **)&uout, &res),
	        PL_INVALID_ARGUMENT);
	uin.id = "01900000-0000-7000-8000-000000000002"; // starter
	mask[0] = "is_default";
	uin.is_default = true;
	assert_int_equal(
	        call(M("UpdatePlan"), &admin, &uin,
	             &parley__billing__v1__update_plan_response__descriptor,
	             (void **)&uout, NULL),
	        PL_OK);
	assert_int_equal(sql_int("SELECT count(*) FROM billing.plans WHERE "
	                         "is_default AND code = 'starter'"),
	                 1);
	uin.id = "01900000-0000-7000-8000-0000000000ee";
	assert_int_equal(
	        call(M("UpdatePlan"), &admin, &uin,
	             &parley__billing__v1__update_plan_response__descriptor,
	             (void **)&uout, &res),
	        PL_NOT_FOUND);
}

static void
test_subscription_lifecycle(void **state)
{
	Parley__Billing__V1__GetSubscriptionRequest gin =
	        PARLEY__BILLING__V1__GET_SUBSCRIPTION_REQUEST__INIT;
	Parley__Billing__V1__GetSubscriptionResponse *gout = NULL;
	Parley__Billing__V1__CancelSubscriptionRequest cin =
	        PARLEY__BILLING__V1__CANCEL_SUBSCRIPTION_REQUEST__INIT;
	Parley__Billing__V1__CancelSubscriptionResponse *cout = NULL;
	Parley__Billing__V1__ResumeSubscriptionRequest rin =
	        PARLEY__BILLING__V1__RESUME_SUBSCRIPTION_REQUEST__INIT;
	Parley__Billing__V1__ResumeSubscriptionResponse *rout = NULL;
	Parley__Billing__V1__ListSubscriptionHistoryRequest hin =
	        PARLEY__BILLING__V1__LIST_SUBSCRIPTION_HISTORY_REQUEST__INIT;
	Parley__Billing__V1__ListSubscriptionHistoryResponse *hout = NULL;
	Parley__Billing__V1__GetEntitlementsRequest ein =
	        PARLEY__BILLING__V1__GET_ENTITLEMENTS_REQUEST__INIT;
	Parley__Billing__V1__GetEntitlementsResponse *eout = NULL;
	char t[PL_UUID_STRLEN + 1], other[PL_UUID_STRLEN + 1];
	pl_principal o, v;
	pl_rpc_result res;
	(void)state;
	NEED_PG();

	new_tenant(t, NULL);
	o = owner(t);
	v = viewer(t);
	assert_int_equal(
	        call(M("GetSubscription"), &v, &gin,
	             &parley__billing__v1__get_subscription_response__descriptor,
	             (void **)&gout, NULL),
	        PL_OK);
	assert_string_equal(gout->subscription->tenant_id, t);
	assert_string_equal(gout->subscription->plan_code, "starter");
	assert_int_equal(gout->subscription->status, BILLING_ST(TRIALING));
	assert_true(gout->subscription->trial_end_at[0] != '\0');
	assert_string_equal(gout->plan->code, "starter");

	assert_int_equal(
	        call(M("GetEntitlements"), &v, &ein,
	             &parley__billing__v1__get_entitlements_response__descriptor,
	             (void **)&eout, NULL),
	        PL_OK);
	assert_string_equal(eout->plan_code, "starter");
	assert_true(eout->active);
	assert_true(eout->features->human_takeover);
	assert_false(eout->features->campaigns);
	assert_int_equal(eout->limits->messages_per_day, 1000);
	assert_int_equal(eout->used->messages_per_day, 0);
	assert_string_equal(eout->period->start_at,
	                    gout->subscription->current_period_start_at);

	// A tenant with no subscription.
	pl_uuid7_str(other);
	pl_principal ov = viewer(other);
	assert_int_equal(
	        call(M("GetSubscription"), &ov, &gin,
	             &parley__billing__v1__get_subscription_response__descriptor,
	             (void **)&gout, &res),
	        PL_NOT_FOUND);
	// Viewers may not cancel.
	assert_int_equal(
	        call(M("CancelSubscription"), &v, &cin,
	             &parley__billing__v1__cancel_subscription_response__descriptor,
	             (void **)&cout, &res),
	        PL_PERMISSION_DENIED);

	cin.at_period_end = true;
	assert_int_equal(
	        call(M("CancelSubscription"), &o, &cin,
	             &parley__billing__v1__cancel_subscription_response__descriptor,
	             (void **)&cout, NULL),
	        PL_OK);
	assert_true(cout->subscription->cancel_at_period_end);
	assert_int_equal(cout->subscription->status, BILLING_ST(TRIALING));
	assert_int_equal(
	        call(M("ResumeSubscription"), &o, &rin,
	             &parley__billing__v1__resume_subscription_response__descriptor,
	             (void **)&rout, NULL),
	        PL_OK);
	assert_false(rout->subscription->cancel_at_period_end);
	assert_int_equal(
	        call(M("ResumeSubscription"), &o, &rin,
	             &parley__billing__v1__resume_subscription_response__descriptor,
	             (void **)&rout, &res),
	        PL_FAILED_PRECONDITION);
	cin.at_period_end = false;
	cin.reason = "closing the shop";
	assert_int_equal(
	        call(M("CancelSubscription"), &o, &cin,
	             &parley__billing__v1__cancel_subscription_response__descriptor,
	             (void **)&cout, NULL),
	        PL_OK);
	assert_int_equal(cout->subscription->status, BILLING_ST(CANCELED));
	assert_true(cout->subscription->canceled_at[0] != '\0');
	assert_int_equal(
	        call(M("CancelSubscription"), &o, &cin,
	             &parley__billing__v1__cancel_subscription_response__descriptor,
	             (void **)&cout, &res),
	        PL_FAILED_PRECONDITION);
	// Metered usage is refused once canceled, and stores nothing.
	assert_int_equal(reserve(t, 1, 1, "after-cancel", NULL, &res),
	                 PL_FAILED_PRECONDITION);
	assert_int_equal(
	        call(M("GetEntitlements"), &v, &ein,
	             &parley__billing__v1__get_entitlements_response__descriptor,
	             (void **)&eout, NULL),
	        PL_OK);
	assert_false(eout->active);

	// History, newest first, paged.
	Parley__Rpc__V1__PageRequest page = PARLEY__RPC__V1__PAGE_REQUEST__INIT;
	page.page_size = 3;
	hin.page = &page;
	assert_int_equal(
	        call(M("ListSubscriptionHistory"), &o, &hin,
	             &parley__billing__v1__list_subscription_history_response__descriptor,
	             (void **)&hout, NULL),
	        PL_OK);
	assert_int_equal(hout->n_changes, 3);
	assert_string_equal(hout->changes[0]->reason, "closing the shop");
	assert_int_equal(hout->changes[0]->to_status, BILLING_ST(CANCELED));
	assert_string_equal(hout->changes[1]->reason, "resumed");
	assert_string_equal(hout->changes[2]->reason, "cancel_scheduled");
	page.page_token = hout->next_page_token;
	assert_int_equal(
	        call(M("ListSubscriptionHistory"), &o, &hin,
	             &parley__billing__v1__list_subscription_history_response__descriptor,
	             (void **)&hout, NULL),
	        PL_OK);
	assert_int_equal(hout->n_changes, 1);
	assert_string_equal(hout->changes[0]->reason, "trial_started");
	assert_string_equal(hout->next_page_token, "");
	// Another tenant's owner sees none of it.
	pl_principal oo = owner(other);
	page.page_token = "";
	assert_int_equal(
	        call(M("ListSubscriptionHistory"), &oo, &hin,
	             &parley__billing__v1__list_subscription_history_response__descriptor,
	             (void **)&hout, NULL),
	        PL_OK);
	assert_int_equal(hout->n_changes, 0);
}

// A refusal's details: the limit reached and what remains of the day and
// the month, in that order.
static void
assert_refusal_details(const pl_rpc_result *res, const char *limit,
                       const char *day, const char *month)
{
	static const char *const fields[3] = { "limit", "remaining_day",
		                               "remaining_month" };
	const char *want[3] = { limit, day, month };

	assert_int_equal(res->n_details, 3);
	for (int i = 0; i < 3; i++) {
		assert_string_equal(res->details[i]->field, fields[i]);
		assert_string_equal(res->details[i]->description, want[i]);
	}
}

static void
test_reserve_basics(void **state)
{
	Parley__Billing__V1__ReserveUsageResponse *r = NULL, *r2 = NULL;
	Parley__Billing__V1__GetUsageResponse *u;
	Parley__Billing__V1__ReleaseUsageRequest rin =
	        PARLEY__BILLING__V1__RELEASE_USAGE_REQUEST__INIT;
	Parley__Billing__V1__ReleaseUsageResponse *rout = NULL;
	pl_rpc_result res;
	char t[PL_UUID_STRLEN + 1], t2[PL_UUID_STRLEN + 1];
	pl_principal svc = svch_service();
	long long before;
	(void)state;
	NEED_PG();

	new_tenant(t, NULL); // starter: 1000/day, 10000/month
	new_tenant(t2, NULL);
	assert_int_equal(reserve(t, 1, 10, "m-1", &r, NULL), PL_OK);
	assert_int_equal(r->remaining_day, 990);
	assert_int_equal(r->remaining_month, 9990);
	assert_false(r->replayed);
	// The same key: counted once, same answer.
	for (int i = 0; i < 5; i++) {
		assert_int_equal(reserve(t, 1, 10, "m-1", &r2, NULL), PL_OK);
		assert_true(r2->replayed);
		assert_string_equal(r2->reservation_id, r->reservation_id);
		assert_int_equal(r2->remaining_day, 990);
	}
	// The same key with another amount is refused.
	assert_int_equal(reserve(t, 1, 11, "m-1", NULL, &res),
	                 PL_ALREADY_EXISTS);
	u = usage(t);
	assert_int_equal(u->used->messages_per_day, 10);
	assert_int_equal(u->used->messages_per_month, 10);
	assert_string_equal(u->plan, "starter");
	assert_int_equal(u->limits->messages_per_day, 1000);
	// ai_tokens has only a monthly limit.
	assert_int_equal(reserve(t, 3, 500, "tok-1", &r, NULL), PL_OK);
	assert_int_equal(r->remaining_day, -1);
	assert_int_equal(r->remaining_month, 1000000 - 500);

	// Refusal names the limit and what remains; stores the answer.
	assert_int_equal(reserve(t, 1, 991, "big", NULL, &res),
	                 PL_RESOURCE_EXHAUSTED);
	assert_non_null(strstr(res.message, "messages_per_day"));
	assert_non_null(strstr(res.message, "remaining today: 990"));
	assert_non_null(strstr(res.message, "remaining this month: 9990"));
	assert_refusal_details(&res, "messages_per_day", "990", "9990");
	assert_int_equal(usage(t)->used->messages_per_day, 10);

	// Release by key, idempotent once everything is back.
	rin.tenant_id = t;
	rin.idempotency_key = "m-1";
	rin.amount = 4;
	assert_int_equal(
	        call(M("ReleaseUsage"), &svc, &rin,
	             &parley__billing__v1__release_usage_response__descriptor,
	             (void **)&rout, NULL),
	        PL_OK);
	assert_int_equal(rout->released, 4);
	assert_int_equal(rout->remaining, 6);
	rin.amount = 0;
	assert_int_equal(
	        call(M("ReleaseUsage"), &svc, &rin,
	             &parley__billing__v1__release_usage_response__descriptor,
	             (void **)&rout, NULL),
	        PL_OK);
	assert_int_equal(rout->released, 6);
	assert_int_equal(
	        call(M("ReleaseUsage"), &svc, &rin,
	             &parley__billing__v1__release_usage_response__descriptor,
	             (void **)&rout, NULL),
	        PL_OK);
	assert_int_equal(rout->released, 0);
	u = usage(t);
	assert_int_equal(u->used->messages_per_day, 0);
	assert_int_equal(u->used->messages_per_month, 0);
	// The refused key stays refused, answered the same way, even now
	// that there is room.
	assert_int_equal(reserve(t, 1, 991, "big", NULL, &res),
	                 PL_RESOURCE_EXHAUSTED);
	assert_non_null(strstr(res.message, "remaining today: 990"));
	assert_refusal_details(&res, "messages_per_day", "990", "9990");
	assert_int_equal(usage(t)->used->messages_per_day, 0);

	// Cross-tenant: t2 cannot release t's key; t's usage is not t2's.
	rin.tenant_id = t2;
	assert_int_equal(
	        call(M("ReleaseUsage"), &svc, &rin,
	             &parley__billing__v1__release_usage_response__descriptor,
	             (void **)&rout, &res),
	        PL_NOT_FOUND);
	assert_int_equal(usage(t2)->used->ai_tokens_per_month, 0);
	assert_int_equal(reserve(t2, 1, 10, "m-1", &r, NULL), PL_OK);
	assert_false(r->replayed);

	// Bad input: nothing changes.
	before = sql_int("SELECT coalesce(sum(used), 0) + count(*) FROM "
	                 "billing.usage_counters");
	long long nres =
	        sql_int("SELECT count(*) FROM billing.usage_reservations");
	assert_int_equal(reserve(t, 1, -5, "neg", NULL, &res),
	                 PL_INVALID_ARGUMENT);
	assert_string_equal(res.details[0]->field, "amount");
	assert_int_equal(reserve(t, 1, 0, "zero", NULL, &res),
	                 PL_INVALID_ARGUMENT);
	assert_int_equal(reserve(t, 1, INT64_MAX, "huge", NULL, &res),
	                 PL_INVALID_ARGUMENT);
	assert_int_equal(reserve(t, 1, 1000000001, "huge2", NULL, &res),
	                 PL_INVALID_ARGUMENT);
	assert_int_equal(reserve(t, 9, 1, "metric", NULL, &res),
	                 PL_INVALID_ARGUMENT);
	assert_string_equal(res.details[0]->field, "metric");
	assert_int_equal(reserve(t, 0, 1, "metric0", NULL, &res),
	                 PL_INVALID_ARGUMENT);
	assert_int_equal(reserve("not-a-uuid", 1, 1, "x", NULL, &res),
	                 PL_INVALID_ARGUMENT);
	assert_int_equal(reserve(t, 1, 1, "", NULL, &res), PL_INVALID_ARGUMENT);
	char longkey[300];
	memset(longkey, 'k', sizeof(longkey) - 1);
	longkey[sizeof(longkey) - 1] = '\0';
	assert_int_equal(reserve(t, 1, 1, longkey, NULL, &res),
	                 PL_INVALID_ARGUMENT);
	assert_int_equal(
	        sql_int("SELECT coalesce(sum(used), 0) + count(*) FROM "
	                "billing.usage_counters"),
	        before);
	assert_int_equal(
	        sql_int("SELECT count(*) FROM billing.usage_reservations"),
	        nres);
	// Only services may reserve.
	{
		Parley__Billing__V1__ReserveUsageRequest in =
		        PARLEY__BILLING__V1__RESERVE_USAGE_REQUEST__INIT;
		Parley__Billing__V1__ReserveUsageResponse *o = NULL;
		pl_principal ow = owner(t);
		in.tenant_id = t;
		in.metric = 1;
		in.amount = 1;
		in.idempotency_key = "user";
		assert_int_equal(
		        call(M("ReserveUsage"), &ow, &in,
		             &parley__billing__v1__reserve_usage_response__descriptor,
		             (void **)&o, &res),
		        PL_PERMISSION_DENIED);
	}
	// No subscription: refused, nothing stored, retry works later.
	char nosub[PL_UUID_STRLEN + 1];
	pl_uuid7_str(nosub);
	assert_int_equal(reserve(nosub, 1, 1, "early", NULL, &res),
	                 PL_FAILED_PRECONDITION);
	assert_int_equal(
	        sql_int("SELECT count(*) FROM billing.usage_reservations"),
	        nres);
}

// The replay paths of the one-round-trip reservation (002): a used key is
// answered from its stored row whatever happened since (a restart of the
// database, which also drops the prepared statement; a canceled
// subscription), another metric or amount on it is ALREADY_EXISTS, and a
// replay never counts again.
// ReserveUsageBatch: each item answered as ReserveUsage would answer it,
// the valid ones decided together.
static void
test_reserve_batch(void **state)
{
	Parley__Billing__V1__ReserveUsageBatchRequest in =
	        PARLEY__BILLING__V1__RESERVE_USAGE_BATCH_REQUEST__INIT;
	Parley__Billing__V1__ReserveUsageBatchResponse *out = NULL;
	Parley__Billing__V1__ReserveUsageRequest it[6],
	        *items[BILLING_MAX_BATCH + 1];
	Parley__Billing__V1__ReserveUsageBatchResult **r;
	Parley__Billing__V1__ReserveUsageResponse *one = NULL;
	char t[PL_UUID_STRLEN + 1], t2[PL_UUID_STRLEN + 1];
	pl_principal svc = svch_service(), own;
	const struct {
		const char *tenant, *key;
		int64_t amount;
	} want[6] = {
		{ t, "b-1", 10 }, { t, "b-2", 5 },  { "nope", "b-3", 1 },
		{ t, "", 1 },     { t2, "b-1", 1 }, { t, "b-big", 990 },
	};
	(void)state;
	NEED_PG();

	new_tenant(t, NULL); // starter: 1000/day, 10000/month
	new_tenant(t2, NULL);
	for (int i = 0; i < 6; i++) {
		parley__billing__v1__reserve_usage_request__init(&it[i]);
		it[i].tenant_id = (char *)want[i].tenant;
		it[i].metric = PARLEY__BILLING__V1__METRIC__METRIC_MESSAGES;
		it[i].amount = want[i].amount;
		it[i].idempotency_key = (char *)want[i].key;
		items[i] = &it[i];
	}
	in.items = items;
	in.n_items = 6;
	for (int round = 0; round < 2; round++) {
		assert_int_equal(
		        call(M("ReserveUsageBatch"), &svc, &in,
		             &parley__billing__v1__reserve_usage_batch_response__descriptor,
		             (void **)&out, NULL),
		        PL_OK);
		assert_int_equal(out->n_results, 6);
		r = out->results;
		assert_int_equal(r[0]->code, PL_OK);
		assert_non_null(r[0]->reservation);
		assert_int_equal(r[0]->reservation->replayed, round == 1);
		assert_int_equal(r[1]->code, PL_OK);
		assert_int_equal(r[2]->code, PL_INVALID_ARGUMENT);
		assert_null(r[2]->reservation);
		assert_non_null(strstr(r[2]->message, "tenant_id"));
		assert_int_equal(r[3]->code, PL_INVALID_ARGUMENT);
		assert_non_null(strstr(r[3]->message, "idempotency_key"));
		// Another tenant's key is its own.
		assert_int_equal(r[4]->code, PL_OK);
		assert_int_equal(r[4]->reservation->replayed, round == 1);
		// 10 + 5 taken before it in the same batch: 985 remain.
		assert_int_equal(r[5]->code, PL_RESOURCE_EXHAUSTED);
		assert_non_null(strstr(r[5]->message, "remaining today: 985"));
	}
	assert_int_equal(usage(t)->used->messages_per_day, 15);
	assert_int_equal(usage(t2)->used->messages_per_day, 1);
	// A key of the batch is the same reservation for ReserveUsage.
	assert_int_equal(reserve(t, 1, 10, "b-1", &one, NULL), PL_OK);
	assert_true(one->replayed);
	assert_int_equal(usage(t)->used->messages_per_day, 15);

	// No items, too many, or a tenant's user: refused as a whole.
	in.n_items = 0;
	assert_int_equal(
	        call(M("ReserveUsageBatch"), &svc, &in,
	             &parley__billing__v1__reserve_usage_batch_response__descriptor,
	             (void **)&out, NULL),
	        PL_INVALID_ARGUMENT);
	for (size_t i = 0; i <= BILLING_MAX_BATCH; i++)
		items[i] = &it[0];
	in.n_items = BILLING_MAX_BATCH + 1;
	assert_int_equal(
	        call(M("ReserveUsageBatch"), &svc, &in,
	             &parley__billing__v1__reserve_usage_batch_response__descriptor,
	             (void **)&out, NULL),
	        PL_INVALID_ARGUMENT);
	own = viewer(t);
	in.n_items = 1;
	assert_int_equal(
	        call(M("ReserveUsageBatch"), &own, &in,
	             &parley__billing__v1__reserve_usage_batch_response__descriptor,
	             (void **)&out, NULL),
	        PL_PERMISSION_DENIED);
	assert_int_equal(usage(t)->used->messages_per_day, 15);
}

static void
test_reserve_replays_and_restart(void **state)
{
	Parley__Billing__V1__ReserveUsageResponse *r = NULL, *r2 = NULL;
	Parley__Billing__V1__CancelSubscriptionRequest cin =
	        PARLEY__BILLING__V1__CANCEL_SUBSCRIPTION_REQUEST__INIT;
	Parley__Billing__V1__CancelSubscriptionResponse *cout = NULL;
	pl_rpc_result res;
	char t[PL_UUID_STRLEN + 1], q[256];
	pl_principal o;
	(void)state;
	NEED_PG();

	create_plan("replays", 0, 100, 1000, -1);
	new_tenant(t, "replays");
	assert_int_equal(reserve(t, 1, 5, "a", &r, NULL), PL_OK);
	assert_false(r->replayed);
	assert_int_equal(r->remaining_day, 95);
	assert_int_equal(reserve(t, 1, 5, "a", &r2, NULL), PL_OK);
	assert_true(r2->replayed);
	assert_string_equal(r2->reservation_id, r->reservation_id);
	assert_int_equal(r2->remaining_day, 95);
	assert_int_equal(reserve(t, 1, 6, "a", NULL, &res), PL_ALREADY_EXISTS);
	assert_int_equal(reserve(t, 2, 5, "a", NULL, &res), PL_ALREADY_EXISTS);
	// Refused by the committed counters (no lock taken): stored as a
	// refusal and answered the same way later.
	assert_int_equal(reserve(t, 1, 96, "big", NULL, &res),
	                 PL_RESOURCE_EXHAUSTED);
	assert_non_null(strstr(res.message, "remaining today: 95"));

	// The server restarts: every connection and prepared statement is
	// gone. New keys and replays keep working (more calls than workers,
	// so every worker meets its new connection).
	assert_int_equal(pgh_restart(&pg), 0);
	for (int i = 0; i < 8; i++) {
		char k[16];
		snprintf(k, sizeof(k), "r-%d", i);
		int rc = reserve(t, 1, 1, k, NULL, &res);
		if (rc == PL_UNAVAILABLE) // a lost connection may fail once
			rc = reserve(t, 1, 1, k, NULL, &res);
		assert_int_equal(rc, PL_OK);
	}
	for (int i = 0; i < 8; i++) {
		char k[16];
		snprintf(k, sizeof(k), "r-%d", i);
		assert_int_equal(reserve(t, 1, 1, k, &r2, NULL), PL_OK);
		assert_true(r2->replayed);
	}
	assert_int_equal(reserve(t, 1, 5, "a", &r2, NULL), PL_OK);
	assert_true(r2->replayed);

	// Canceled now: new keys are refused and store nothing; a used key
	// keeps its stored answer.
	o = owner(t);
	assert_int_equal(
	        call(M("CancelSubscription"), &o, &cin,
	             &parley__billing__v1__cancel_subscription_response__descriptor,
	             (void **)&cout, NULL),
	        PL_OK);
	assert_int_equal(reserve(t, 1, 1, "late", NULL, &res),
	                 PL_FAILED_PRECONDITION);
	assert_int_equal(reserve(t, 1, 5, "a", &r2, NULL), PL_OK);
	assert_true(r2->replayed);
	assert_int_equal(reserve(t, 1, 96, "big", NULL, &res),
	                 PL_RESOURCE_EXHAUSTED);

	// The eight calls took a counter lease (billing README, "Leases"):
	// its unused units stay in the counters until it is returned, by
	// the keeper within ~200 ms of the cancel retiring it. Read the
	// counters after that (under load they were read first: 16 = 13 +
	// the lease's 3 unused units).
	snprintf(q, sizeof(q),
	         "SELECT count(*) FROM billing.usage_leases WHERE tenant_id = "
	         "'%s'",
	         t);
	for (int i = 0; i < 100 && sql_int("%s", q) > 0; i++)
		usleep(50000);
	assert_int_equal(sql_int("%s", q), 0);
	snprintf(q, sizeof(q),
	         "SELECT used FROM billing.usage_counters WHERE tenant_id = "
	         "'%s' AND period_kind = 'day'",
	         t);
	assert_int_equal(sql_int("%s", q), 5 + 8);
	snprintf(q, sizeof(q),
	         "SELECT used FROM billing.usage_counters WHERE tenant_id = "
	         "'%s' AND period_kind = 'month'",
	         t);
	assert_int_equal(sql_int("%s", q), 5 + 8);
	snprintf(q, sizeof(q),
	         "SELECT count(*) FROM billing.usage_reservations WHERE "
	         "tenant_id = '%s'",
	         t);
	assert_int_equal(sql_int("%s", q), 1 + 1 + 8);
}

static void
test_month_refusal_leaves_no_day_increment(void **state)
{
	Parley__Billing__V1__ReserveUsageResponse *r = NULL;
	Parley__Billing__V1__GetUsageResponse *u;
	pl_rpc_result res;
	char t[PL_UUID_STRLEN + 1];
	(void)state;
	NEED_PG();

	create_plan("month-cap", 0, 1000, 50, -1);
	new_tenant(t, "month-cap");
	assert_int_equal(reserve(t, 1, 50, "a", &r, NULL), PL_OK);
	assert_int_equal(r->remaining_month, 0);
	assert_int_equal(reserve(t, 1, 1, "b", NULL, &res),
	                 PL_RESOURCE_EXHAUSTED);
	assert_non_null(strstr(res.message, "messages_per_month"));
	assert_non_null(strstr(res.message, "remaining today: 950"));
	u = usage(t);
	assert_int_equal(u->used->messages_per_day, 50);
	assert_int_equal(u->used->messages_per_month, 50);
}

// Proration, overage and invoices.
static void
test_change_plan_and_invoice(void **state)
{
	Parley__Billing__V1__ChangePlanRequest in =
	        PARLEY__BILLING__V1__CHANGE_PLAN_REQUEST__INIT;
	Parley__Billing__V1__ChangePlanResponse *out = NULL, *dry = NULL;
	Parley__Billing__V1__CloseBillingPeriodRequest cin =
	        PARLEY__BILLING__V1__CLOSE_BILLING_PERIOD_REQUEST__INIT;
	Parley__Billing__V1__CloseBillingPeriodResponse *cout = NULL;
	Parley__Billing__V1__ListInvoicesRequest lin =
	        PARLEY__BILLING__V1__LIST_INVOICES_REQUEST__INIT;
	Parley__Billing__V1__ListInvoicesResponse *lout = NULL;
	Parley__Billing__V1__GetInvoiceRequest gin =
	        PARLEY__BILLING__V1__GET_INVOICE_REQUEST__INIT;
	Parley__Billing__V1__GetInvoiceResponse *gout = NULL;
	Parley__Billing__V1__ReserveUsageResponse *r = NULL;
	pl_rpc_result res;
	pl_principal o, admin = platform(), v;
	char t[PL_UUID_STRLEN + 1], t2[PL_UUID_STRLEN + 1], at[32];
	int64_t s_ms, e_ms, from_ms, left, total, credit, charge;
	int64_t plan_fee = 0, prorations = 0, overage = 0;
	(void)state;
	NEED_PG();

	create_plan("metered", 9900, -1, 1000, 500);
	new_tenant(t, "metered");
	new_tenant(t2, NULL);
	o = owner(t);
	v = viewer(t);

	// Unknown plan, internal plan: refused, nothing changes.
	in.plan_code = "no-such-plan";
	assert_int_equal(
	        call(M("ChangePlan"), &o, &in,
	             &parley__billing__v1__change_plan_response__descriptor,
	             (void **)&out, &res),
	        PL_INVALID_ARGUMENT);
	in.plan_code = "unlimited";
	assert_int_equal(
	        call(M("ChangePlan"), &o, &in,
	             &parley__billing__v1__change_plan_response__descriptor,
	             (void **)&out, &res),
	        PL_INVALID_ARGUMENT);
	in.plan_code = "metered";
	assert_int_equal(
	        call(M("ChangePlan"), &o, &in,
	             &parley__billing__v1__change_plan_response__descriptor,
	             (void **)&out, &res),
	        PL_FAILED_PRECONDITION);
	in.plan_code = "business";
	assert_int_equal(
	        call(M("ChangePlan"), &v, &in,
	             &parley__billing__v1__change_plan_response__descriptor,
	             (void **)&out, &res),
	        PL_PERMISSION_DENIED);

	// Usage past the soft monthly limit is allowed and billed.
	assert_int_equal(reserve(t, 1, 1500, "bulk", &r, NULL), PL_OK);
	assert_int_equal(r->overage, 500);
	assert_int_equal(usage(t)->overage->messages_per_month, 500);

	in.dry_run = true;
	assert_int_equal(
	        call(M("ChangePlan"), &o, &in,
	             &parley__billing__v1__change_plan_response__descriptor,
	             (void **)&dry, NULL),
	        PL_OK);
	assert_int_equal(dry->n_proration, 2);
	assert_true(billing_parse_time(
	        dry->subscription->current_period_start_at, &s_ms));
	assert_true(billing_parse_time(dry->subscription->current_period_end_at,
	                               &e_ms));
	assert_true(billing_parse_time(dry->proration[0]->period_start_at,
	                               &from_ms));
	left = (e_ms - from_ms) / 1000;
	total = (e_ms - s_ms) / 1000;
	credit = billing_prorate(9900, left, total);
	charge = billing_prorate(29900, left, total);
	assert_int_equal(dry->proration[0]->amount_minor, -credit);
	assert_int_equal(dry->proration[1]->amount_minor, charge);
	assert_int_equal(dry->proration_minor, charge - credit);
	assert_string_equal(dry->currency, "USD");
	assert_string_equal(dry->subscription->plan_code, "metered");

	in.dry_run = false;
	assert_int_equal(
	        call(M("ChangePlan"), &o, &in,
	             &parley__billing__v1__change_plan_response__descriptor,
	             (void **)&out, NULL),
	        PL_OK);
	assert_string_equal(out->subscription->plan_code, "business");
	assert_int_equal(out->n_proration, 2);
	// Within a second of the dry run: the same amounts or one second
	// less of the period.
	assert_true(labs(out->proration_minor - dry->proration_minor) <= 1);
	assert_int_equal(sql_int("SELECT count(*) FROM billing.invoice_lines "
	                         "WHERE invoice_id IS NULL AND kind = "
	                         "'proration'"),
	                 2);

	// Close the period (40 days ahead) twice: one invoice.
	billing_format_time(billing_now_ms() + 40LL * 86400000, at);
	cin.tenant_id = t;
	cin.at = at;
	assert_int_equal(
	        call(M("CloseBillingPeriod"), &o, &cin,
	             &parley__billing__v1__close_billing_period_response__descriptor,
	             (void **)&cout, &res),
	        PL_PERMISSION_DENIED);
	assert_int_equal(
	        call(M("CloseBillingPeriod"), &admin, &cin,
	             &parley__billing__v1__close_billing_period_response__descriptor,
	             (void **)&cout, NULL),
	        PL_OK);
	assert_int_equal(cout->closed, 1);
	billing_invoice *inv = cout->invoices[0];
	for (size_t i = 0; i < inv->n_lines; i++) {
		billing_line *l = inv->lines[i];
		if (l->kind == BILLING_LK(PLAN_FEE))
			plan_fee += l->amount_minor;
		else if (l->kind == BILLING_LK(PRORATION))
			prorations += l->amount_minor;
		else {
			overage += l->amount_minor;
		}
	}
	assert_int_equal(plan_fee, 9900); // the plan the period started on
	assert_int_equal(prorations, out->proration_minor);
	// Overage is priced by the plan in force at close: business's
	// monthly limit covers the 1,500 messages.
	assert_int_equal(overage, 0);
	assert_int_equal(inv->total_minor, 9900 + out->proration_minor);
	assert_int_equal(inv->status, BILLING_IV(OPEN));
	assert_string_equal(inv->currency, "USD");
	assert_int_equal(
	        call(M("CloseBillingPeriod"), &admin, &cin,
	             &parley__billing__v1__close_billing_period_response__descriptor,
	             (void **)&cout, NULL),
	        PL_OK);
	assert_int_equal(cout->closed, 0);

	// A tenant that stays on the metered plan pays its overage: 500
	// messages over at 500 per 1,000 = 250.
	char t3[PL_UUID_STRLEN + 1];
	new_tenant(t3, "metered");
	assert_int_equal(reserve(t3, 1, 1500, "bulk", &r, NULL), PL_OK);
	cin.tenant_id = t3;
	assert_int_equal(
	        call(M("CloseBillingPeriod"), &admin, &cin,
	             &parley__billing__v1__close_billing_period_response__descriptor,
	             (void **)&cout, NULL),
	        PL_OK);
	assert_int_equal(cout->closed, 1);
	overage = 0;
	for (size_t i = 0; i < cout->invoices[0]->n_lines; i++) {
		billing_line *l = cout->invoices[0]->lines[i];
		if (l->kind != BILLING_LK(OVERAGE))
			continue;
		assert_int_equal(l->metric, 1);
		assert_int_equal(l->quantity, 500);
		assert_int_equal(l->unit_price_minor, 500);
		overage += l->amount_minor;
	}
	assert_int_equal(overage, 250);
	assert_int_equal(cout->invoices[0]->total_minor, 9900 + 250);
	cin.tenant_id = t;
	cin.at = "yesterday";
	assert_int_equal(
	        call(M("CloseBillingPeriod"), &admin, &cin,
	             &parley__billing__v1__close_billing_period_response__descriptor,
	             (void **)&cout, &res),
	        PL_INVALID_ARGUMENT);

	// The period moved on.
	Parley__Billing__V1__GetSubscriptionRequest sin =
	        PARLEY__BILLING__V1__GET_SUBSCRIPTION_REQUEST__INIT;
	Parley__Billing__V1__GetSubscriptionResponse *sout = NULL;
	assert_int_equal(
	        call(M("GetSubscription"), &v, &sin,
	             &parley__billing__v1__get_subscription_response__descriptor,
	             (void **)&sout, NULL),
	        PL_OK);
	assert_string_equal(sout->subscription->current_period_start_at,
	                    inv->period_end_at);

	// ListInvoices / GetInvoice, and isolation.
	pl_principal ad =
	        svch_user(t, "0190aaaa-0000-7000-8000-000000000003", 3);
	assert_int_equal(
	        call(M("ListInvoices"), &ad, &lin,
	             &parley__billing__v1__list_invoices_response__descriptor,
	             (void **)&lout, NULL),
	        PL_OK);
	assert_int_equal(lout->n_invoices, 1);
	assert_string_equal(lout->invoices[0]->id, inv->id);
	assert_int_equal(lout->invoices[0]->n_lines, 0);
	lin.status = BILLING_IV(PAID);
	assert_int_equal(
	        call(M("ListInvoices"), &ad, &lin,
	             &parley__billing__v1__list_invoices_response__descriptor,
	             (void **)&lout, NULL),
	        PL_OK);
	assert_int_equal(lout->n_invoices, 0);
	assert_int_equal(
	        call(M("ListInvoices"), &v, &lin,
	             &parley__billing__v1__list_invoices_response__descriptor,
	             (void **)&lout, &res),
	        PL_PERMISSION_DENIED);
	gin.id = inv->id;
	assert_int_equal(
	        call(M("GetInvoice"), &ad, &gin,
	             &parley__billing__v1__get_invoice_response__descriptor,
	             (void **)&gout, NULL),
	        PL_OK);
	assert_int_equal(gout->invoice->n_lines, inv->n_lines);
	assert_int_equal(gout->invoice->number, inv->number);
	pl_principal other_admin =
	        svch_user(t2, "0190aaaa-0000-7000-8000-000000000004", 3);
	assert_int_equal(
	        call(M("GetInvoice"), &other_admin, &gin,
	             &parley__billing__v1__get_invoice_response__descriptor,
	             (void **)&gout, &res),
	        PL_NOT_FOUND);
	assert_int_equal(
	        call(M("ListInvoices"), &other_admin, &lin,
	             &parley__billing__v1__list_invoices_response__descriptor,
	             (void **)&lout, NULL),
	        PL_OK);
	assert_int_equal(lout->n_invoices, 0);
	gin.id = "garbage";
	assert_int_equal(
	        call(M("GetInvoice"), &ad, &gin,
	             &parley__billing__v1__get_invoice_response__descriptor,
	             (void **)&gout, &res),
	        PL_INVALID_ARGUMENT);
}

// Payment webhooks.
static int
webhook(const char *body, const char *sig,
        Parley__Billing__V1__HandlePaymentWebhookResponse **out,
        pl_rpc_result *res)
{
	Parley__Billing__V1__HandlePaymentWebhookRequest in =
	        PARLEY__BILLING__V1__HANDLE_PAYMENT_WEBHOOK_REQUEST__INIT;
	Parley__Billing__V1__HttpHeader hd[2] = {
		PARLEY__BILLING__V1__HTTP_HEADER__INIT,
		PARLEY__BILLING__V1__HTTP_HEADER__INIT
	};
	Parley__Billing__V1__HttpHeader *hs[2] = { &hd[0], &hd[1] };
	pl_principal svc = svch_service();

	in.body.data = (uint8_t *)body;
	in.body.len = strlen(body);
	hd[0].name = "Content-Type";
	hd[0].value = "application/json";
	hd[1].name = "stripe-signature";
	hd[1].value = (char *)sig;
	in.headers = hs;
	in.n_headers = sig ? 2 : 1;
	return call(
	        M("HandlePaymentWebhook"), &svc, &in,
	        &parley__billing__v1__handle_payment_webhook_response__descriptor,
	        (void **)out, res);
}

static int
sub_status(const char *t)
{
	return sub_of(t)->status;
}

// The provider's customer and subscription ids GetSubscription shows.
static void
sub_provider_ids(const char *t, const char *cus, const char *sub)
{
	billing_sub *s = sub_of(t);
	assert_string_equal(s->provider_customer_id, cus);
	assert_string_equal(s->provider_subscription_id, sub);
}

// body signed with the service's secret now, posted.
static int
signed_webhook(const char *body,
               Parley__Billing__V1__HandlePaymentWebhookResponse **out)
{
	char sig[96];

	billing_sig_sign(SECRET, billing_now_ms() / 1000, (const uint8_t *)body,
	                 strlen(body), sig);
	return webhook(body, sig, out, NULL);
}

static void
test_webhooks(void **state)
{
	Parley__Billing__V1__HandlePaymentWebhookResponse *out = NULL;
	pl_rpc_result res;
	char t[PL_UUID_STRLEN + 1], body[512], sig[96], bad[96];
	int64_t now = billing_now_ms() / 1000;
	long long events;
	(void)state;
	NEED_PG();

	create_plan("paid", 1000, -1, -1, -1);
	new_tenant(t, "paid");
	assert_int_equal(sub_status(t), BILLING_ST(ACTIVE));
	snprintf(body, sizeof(body),
	         "{\"id\":\"evt_fail_1\",\"type\":\"invoice.payment_failed\","
	         "\"data\":{\"object\":{\"id\":\"in_1\",\"metadata\":"
	         "{\"parley_tenant_id\":\"%s\"}}}}",
	         t);
	events = sql_int("SELECT count(*) FROM billing.payment_events");

	// Unsigned, badly signed, stale, signed for another body.
	assert_int_equal(webhook(body, NULL, &out, &res), PL_UNAUTHENTICATED);
	billing_sig_sign("wrong-secret", now, (const uint8_t *)body,
	                 strlen(body), bad);
	assert_int_equal(webhook(body, bad, &out, &res), PL_UNAUTHENTICATED);
	assert_int_equal(webhook(body, "t=1,v1=zz", &out, &res),
	                 PL_UNAUTHENTICATED);
	billing_sig_sign(SECRET, now - 301, (const uint8_t *)body, strlen(body),
	                 bad);
	assert_int_equal(webhook(body, bad, &out, &res), PL_UNAUTHENTICATED);
	assert_non_null(strstr(res.message, "tolerance"));
	billing_sig_sign(SECRET, now, (const uint8_t *)"{}", 2, bad);
	assert_int_equal(webhook(body, bad, &out, &res), PL_UNAUTHENTICATED);
	assert_int_equal(sql_int("SELECT count(*) FROM billing.payment_events"),
	                 events);
	assert_int_equal(sub_status(t), BILLING_ST(ACTIVE));
	// Signed but not JSON: refused after verification.
	billing_sig_sign(SECRET, now, (const uint8_t *)"nope", 4, bad);
	assert_int_equal(webhook("nope", bad, &out, &res), PL_INVALID_ARGUMENT);

	// Payment failed -> past_due.
	billing_sig_sign(SECRET, now, (const uint8_t *)body, strlen(body), sig);
	assert_int_equal(webhook(body, sig, &out, NULL), PL_OK);
	assert_string_equal(out->event_id, "evt_fail_1");
	assert_false(out->duplicate);
	assert_true(out->applied);
	assert_int_equal(sub_status(t), BILLING_ST(PAST_DUE));
	// Replayed: nothing changes.
	long long changes = sql_int("SELECT count(*) FROM "
	                            "billing.subscription_changes");
	assert_int_equal(webhook(body, sig, &out, NULL), PL_OK);
	assert_true(out->duplicate);
	assert_false(out->applied);
	assert_int_equal(sql_int("SELECT count(*) FROM "
	                         "billing.subscription_changes"),
	                 changes);

	// Grace: not yet at 2 days, expired at 4 (grace is 3 days).
	assert_int_equal(
	        billing_store_grace_sweep(h.w.db, h.arg,
	                                  billing_now_ms() + 2LL * 86400000),
	        0);
	assert_int_equal(
	        billing_store_grace_sweep(h.w.db, h.arg,
	                                  billing_now_ms() + 4LL * 86400000),
	        1);
	assert_int_equal(
	        billing_store_grace_sweep(h.w.db, h.arg,
	                                  billing_now_ms() + 5LL * 86400000),
	        0);
	char q[256];
	snprintf(q, sizeof(q),
	         "SELECT count(*) FROM billing.outbox WHERE type = "
	         "'subscription.grace_expired' AND destination = 'tenants' AND "
	         "tenant_id = '%s'",
	         t);
	assert_int_equal(sql_int("%s", q), 1);

	// Close a period, then pay its invoice: invoice paid, back to active.
	Parley__Billing__V1__CloseBillingPeriodRequest cin =
	        PARLEY__BILLING__V1__CLOSE_BILLING_PERIOD_REQUEST__INIT;
	Parley__Billing__V1__CloseBillingPeriodResponse *cout = NULL;
	pl_principal admin = platform();
	char at[32];
	billing_format_time(billing_now_ms() + 40LL * 86400000, at);
	cin.tenant_id = t;
	cin.at = at;
	assert_int_equal(
	        call(M("CloseBillingPeriod"), &admin, &cin,
	             &parley__billing__v1__close_billing_period_response__descriptor,
	             (void **)&cout, NULL),
	        PL_OK);
	assert_int_equal(cout->closed, 1);
	assert_int_equal(cout->invoices[0]->total_minor, 1000);
	sub_provider_ids(t, "", "");
	snprintf(body, sizeof(body),
	         "{\"id\":\"evt_paid_1\",\"type\":\"invoice.paid\",\"data\":"
	         "{\"object\":{\"id\":\"in_2\",\"customer\":\"cus_Nf1\","
	         "\"subscription\":\"sub_1Mx-9\",\"metadata\":{\"parley_tenant_"
	         "id\":"
	         "\"%s\",\"parley_invoice_id\":\"%s\"}}}}",
	         t, cout->invoices[0]->id);
	assert_int_equal(signed_webhook(body, &out), PL_OK);
	assert_true(out->applied);
	assert_int_equal(sub_status(t), BILLING_ST(ACTIVE));
	snprintf(q, sizeof(q),
	         "SELECT count(*) FROM billing.invoices WHERE tenant_id = '%s' "
	         "AND "
	         "status = 'paid' AND provider_invoice_id = 'in_2'",
	         t);
	assert_int_equal(sql_int("%s", q), 1);
	sub_provider_ids(t, "cus_Nf1", "sub_1Mx-9");
	// Ids that are not plain ids (an expanded object, spaces, too long)
	// are not taken; one given alone replaces only itself.
	snprintf(body, sizeof(body),
	         "{\"id\":\"evt_fail_2\",\"type\":\"invoice.payment_failed\","
	         "\"data\":{\"object\":{\"id\":\"in_3\",\"customer\":{\"id\":"
	         "\"cus_X\"},\"subscription\":\"sub 1; DROP\",\"metadata\":"
	         "{\"parley_tenant_id\":\"%s\"}}}}",
	         t);
	assert_int_equal(signed_webhook(body, &out), PL_OK);
	assert_int_equal(sub_status(t), BILLING_ST(PAST_DUE));
	sub_provider_ids(t, "cus_Nf1", "sub_1Mx-9");
	snprintf(body, sizeof(body),
	         "{\"id\":\"evt_paid_2\",\"type\":\"invoice.paid\",\"data\":"
	         "{\"object\":{\"id\":\"in_3\",\"customer\":\"cus_Nf2\","
	         "\"metadata\":{\"parley_tenant_id\":\"%s\"}}}}",
	         t);
	assert_int_equal(signed_webhook(body, &out), PL_OK);
	assert_int_equal(sub_status(t), BILLING_ST(ACTIVE));
	sub_provider_ids(t, "cus_Nf2", "sub_1Mx-9");
	// An unknown event type is recorded and changes nothing.
	snprintf(body, sizeof(body),
	         "{\"id\":\"evt_other\",\"type\":\"customer.created\"}");
	assert_int_equal(signed_webhook(body, &out), PL_OK);
	assert_false(out->applied);
	assert_false(out->duplicate);
}

static void
test_deliver_events(void **state)
{
	Parley__Billing__V1__DeliverEventsRequest in =
	        PARLEY__BILLING__V1__DELIVER_EVENTS_REQUEST__INIT;
	Parley__Billing__V1__DeliverEventsResponse *out = NULL;
	Parley__Rpc__V1__Event ev[3] = { PARLEY__RPC__V1__EVENT__INIT,
		                         PARLEY__RPC__V1__EVENT__INIT,
		                         PARLEY__RPC__V1__EVENT__INIT };
	Parley__Rpc__V1__Event *evs[3] = { &ev[0], &ev[1], &ev[2] };
	pl_principal svc = svch_service(), o;
	pl_rpc_result res;
	char ids[3][PL_UUID_STRLEN + 1], t[PL_UUID_STRLEN + 1];
	long long subs;
	(void)state;
	NEED_PG();

	pl_uuid7_str(t);
	for (int i = 0; i < 3; i++) {
		pl_uuid7_str(ids[i]);
		ev[i].id = ids[i];
		ev[i].tenant_id = t;
	}
	ev[0].type = "tenant.created";
	ev[1].type = "member.added";
	ev[2].type = "tenant.created";
	ev[2].id = "bad";
	in.events = evs;
	in.n_events = 3;
	subs = sql_int("SELECT count(*) FROM billing.subscriptions");
	// A bad event refuses the whole batch, naming it.
	assert_int_equal(
	        call(M("DeliverEvents"), &svc, &in,
	             &parley__billing__v1__deliver_events_response__descriptor,
	             (void **)&out, &res),
	        PL_INVALID_ARGUMENT);
	assert_string_equal(res.details[0]->field, "events[2].id");
	assert_int_equal(sql_int("SELECT count(*) FROM billing.subscriptions"),
	                 subs);
	o = owner(t);
	assert_int_equal(
	        call(M("DeliverEvents"), &o, &in,
	             &parley__billing__v1__deliver_events_response__descriptor,
	             (void **)&out, &res),
	        PL_PERMISSION_DENIED);
	in.n_events = 2;
	for (int round = 0; round < 2; round++) {
		assert_int_equal(
		        call(M("DeliverEvents"), &svc, &in,
		             &parley__billing__v1__deliver_events_response__descriptor,
		             (void **)&out, NULL),
		        PL_OK);
		if (round == 0) {
			assert_int_equal(out->accepted, 1);
			assert_int_equal(out->ignored, 1);
			assert_int_equal(out->duplicates, 0);
		} else {
			assert_int_equal(out->duplicates, 2);
			assert_int_equal(out->accepted, 0);
		}
	}
	assert_int_equal(sql_int("SELECT count(*) FROM billing.subscriptions"),
	                 subs + 1);
	assert_int_equal(sub_status(t), BILLING_ST(TRIALING));
	// A second tenant.created (new event id) for the same tenant keeps the
	// subscription as it is.
	pl_uuid7_str(ids[0]);
	in.n_events = 1;
	assert_int_equal(
	        call(M("DeliverEvents"), &svc, &in,
	             &parley__billing__v1__deliver_events_response__descriptor,
	             (void **)&out, NULL),
	        PL_OK);
	assert_int_equal(sql_int("SELECT count(*) FROM billing.subscriptions"),
	                 subs + 1);
}

// The C period module and the SQL function agree.
static void
test_periods_agree_with_sql(void **state)
{
	PGconn *c;
	(void)state;
	NEED_PG();

	c = PQconnectdb(h.admin_url);
	assert_int_equal(PQstatus(c), CONNECTION_OK);
	for (int ad = 1; ad <= 31; ad += 2) {
		int64_t anchor =
		        billing_days_from_civil(2023, 12, ad) * BILLING_DAY_S;
		for (int64_t t = anchor; t < anchor + 800 * BILLING_DAY_S;
		     t += 3 * BILLING_DAY_S + 7919) {
			char a[32], at[32], q[512];
			int64_t s, e, ss, se;
			PGresult *r;
			billing_format_time(anchor * 1000, a);
			billing_format_time(t * 1000, at);
			snprintf(q, sizeof(q),
			         "SELECT extract(epoch FROM "
			         "period_start)::bigint, "
			         "extract(epoch FROM period_end)::bigint, "
			         "extract(epoch FROM billing.month_start("
			         "'%.10s'::date, '%s'))::bigint FROM "
			         "billing.month_period('%.10s'::date, '%s')",
			         a, at, a, at);
			r = PQexec(c, q);
			assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
			ss = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
			se = strtoll(PQgetvalue(r, 0, 1), NULL, 10);
			// ReserveUsage's inlined expression (002) agrees too.
			assert_int_equal(strtoll(PQgetvalue(r, 0, 2), NULL, 10),
			                 ss);
			PQclear(r);
			billing_month_period(anchor, t, &s, &e);
			assert_int_equal(s, ss);
			assert_int_equal(e, se);
		}
	}
	PQfinish(c);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_plans),
		cmocka_unit_test(test_subscription_lifecycle),
		cmocka_unit_test(test_reserve_basics),
		cmocka_unit_test(test_reserve_batch),
		cmocka_unit_test(test_month_refusal_leaves_no_day_increment),
		cmocka_unit_test(test_reserve_replays_and_restart),
		cmocka_unit_test(test_change_plan_and_invoice),
		cmocka_unit_test(test_webhooks),
		cmocka_unit_test(test_deliver_events),
		cmocka_unit_test(test_periods_agree_with_sql),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
