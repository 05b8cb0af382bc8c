// The billing service's RPC handlers, its handler table and its definition.
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>
#include <sodium.h>

#include "billing.h"
#include "pl/cfg.h"
#include "pl/id.h"
#include "pl/log.h"

#define MAX_KEY      200
#define MAX_CODE     64
#define MAX_NAME     200
#define MAX_DESC     2000
#define MAX_PRICE    1000000000000LL // 10^12 minor units
#define MAX_LIMIT    1000000000000LL
#define MAX_AMOUNT   1000000000LL
#define MAX_BODY     (256 * 1024)
#define MAX_HEADERS  100
#define MAX_EVENTS   PL_OUTBOX_MAX_BATCH
#define PAGE_DEFAULT 50
#define PAGE_MAX     200

typedef Parley__Billing__V1__ReserveUsageRequest reserve_in;
typedef Parley__Billing__V1__ReserveUsageResponse reserve_out;

static billing_state *
state(pl_call *call)
{
	return call->arg;
}

static bool
is_service(const pl_call *call)
{
	return call->principal->kind ==
	       PARLEY__RPC__V1__PRINCIPAL_KIND__PRINCIPAL_KIND_SERVICE;
}

static bool
is_platform(const pl_call *call)
{
	return is_service(call) ||
	       (call->principal->kind ==
	                PARLEY__RPC__V1__PRINCIPAL_KIND__PRINCIPAL_KIND_USER &&
	        call->principal->platform_admin);
}

// The caller's tenant (tenant-facing methods), or NULL after setting the
// call's error.
static const char *
caller_tenant(pl_call *call)
{
	const char *t = call->principal->tenant_id;
	if (t == NULL || !pl_uuid_valid(t)) {
		pl_call_error(call, PL_INVALID_ARGUMENT,
		              "the caller's tenant is not a valid id");
		return NULL;
	}
	return t;
}

static const char *
actor(const pl_call *call)
{
	const char *u = call->principal->user_id;
	return u != NULL ? u : "";
}

static int
page_size(pl_call *call, const Parley__Rpc__V1__PageRequest *p, int *size)
{
	*size = PAGE_DEFAULT;
	if (p == NULL)
		return PL_OK;
	if (p->page_size < 0)
		return pl_call_violation(call, "page.page_size",
		                         "must not be negative");
	if (p->page_size > 0)
		*size = p->page_size > PAGE_MAX ? PAGE_MAX : p->page_size;
	return PL_OK;
}

// Page tokens are the hex text of the last key seen.
static char *
token_encode(pl_arena *a, const char *s)
{
	size_t n = strlen(s);
	char *out = pl_arena_alloc(a, n * 2 + 1);
	for (size_t i = 0; out != NULL && i < n; i++)
		snprintf(out + 2 * i, 3, "%02x", (unsigned char)s[i]);
	if (out != NULL)
		out[n * 2] = '\0';
	return out;
}

static char *
token_decode(pl_arena *a, const char *tok)
{
	size_t n = strlen(tok);
	char *out;

	if (n % 2 != 0 || n > 512)
		return NULL;
	out = pl_arena_alloc(a, n / 2 + 1);
	for (size_t i = 0; out != NULL && i < n / 2; i++) {
		unsigned v;
		if (sscanf(tok + 2 * i, "%2x", &v) != 1 || v == 0 ||
		    !strchr("0123456789abcdefABCDEF", tok[2 * i]) ||
		    !strchr("0123456789abcdefABCDEF", tok[2 * i + 1]))
			return NULL;
		out[i] = (char)v;
	}
	if (out != NULL)
		out[n / 2] = '\0';
	return out;
}

static const char *
page_token(pl_call *call, const Parley__Rpc__V1__PageRequest *p)
{
	const char *t = p && p->page_token ? p->page_token : "";
	char *d;
	if (t[0] == '\0')
		return "";
	if ((d = token_decode(call->arena, t)) == NULL) {
		pl_call_violation(call, "page.page_token",
		                  "invalid page token");
		return NULL;
	}
	return d;
}

// Validation ----------------------------------------------------------------

static bool
code_valid(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > MAX_CODE)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		      (i > 0 && (c == '_' || c == '-'))))
			return false;
	}
	return true;
}

static bool
utf8_valid(const char *s)
{
	const unsigned char *p = (const unsigned char *)s;
	while (*p) {
		int n = *p < 0x80         ? 0
		        : (*p >> 5) == 6  ? 1
		        : (*p >> 4) == 14 ? 2
		        : (*p >> 3) == 30 ? 3
		                          : -1;
		if (n < 0)
			return false;
		p++;
		for (int i = 0; i < n; i++, p++)
			if ((*p & 0xc0) != 0x80)
				return false;
	}
	return true;
}

static int
check_text(pl_call *call, const char *field, const char *s, size_t max,
           bool required)
{
	size_t n = strlen(s);
	if (required && n == 0)
		return pl_call_violation(call, field, "must not be empty");
	if (n > max)
		return pl_call_violation(call, field,
		                         "must be at most %zu bytes", max);
	if (!utf8_valid(s))
		return pl_call_violation(call, field, "must be valid UTF-8");
	return PL_OK;
}

static int
check_limits(pl_call *call, const Parley__Billing__V1__Limits *l)
{
	const int64_t v[8] = { l->messages_per_day,
		               l->messages_per_month,
		               l->campaigns_per_day,
		               l->campaigns_per_month,
		               l->agents,
		               l->seats,
		               l->knowledge_entries,
		               l->ai_tokens_per_month };
	static const char *const names[8] = { "limits.messages_per_day",
		                              "limits.messages_per_month",
		                              "limits.campaigns_per_day",
		                              "limits.campaigns_per_month",
		                              "limits.agents",
		                              "limits.seats",
		                              "limits.knowledge_entries",
		                              "limits.ai_tokens_per_month" };

	for (int i = 0; i < 8; i++)
		if (v[i] < -1 || v[i] > MAX_LIMIT)
			return pl_call_violation(
			        call, names[i],
			        "must be -1 (unlimited) or 0..%lld",
			        (long long)MAX_LIMIT);
	return PL_OK;
}

static int
check_overage(pl_call *call, Parley__Billing__V1__OveragePrice **o, size_t n)
{
	unsigned seen = 0;
	if (n > 3)
		return pl_call_violation(call, "overage",
		                         "at most one per metric");
	for (size_t i = 0; i < n; i++) {
		int m = (int)o[i]->metric;
		if (billing_metric_name(m) == NULL)
			return pl_call_violation(call, "overage.metric",
			                         "unknown metric %d", m);
		if (seen & (1u << m))
			return pl_call_violation(call, "overage.metric",
			                         "metric %s given twice",
			                         billing_metric_name(m));
		seen |= 1u << m;
		if (o[i]->price_per_1000_minor < 0 ||
		    o[i]->price_per_1000_minor > MAX_PRICE)
			return pl_call_violation(
			        call, "overage.price_per_1000_minor",
			        "must be 0..%lld", (long long)MAX_PRICE);
	}
	return PL_OK;
}

static int
check_price(pl_call *call, int64_t price, int32_t trial)
{
	if (price < 0 || price > MAX_PRICE)
		return pl_call_violation(call, "price_minor", "must be 0..%lld",
		                         (long long)MAX_PRICE);
	if (trial < 0 || trial > 365)
		return pl_call_violation(call, "trial_days", "must be 0..365");
	return PL_OK;
}

// Plans ---------------------------------------------------------------------

static int
create_plan(pl_call *call, const void *vin, void *vout)
{
	const Parley__Billing__V1__CreatePlanRequest *in = vin;
	Parley__Billing__V1__CreatePlanResponse *out = vout;
	static Parley__Billing__V1__Limits nolim =
	        PARLEY__BILLING__V1__LIMITS__INIT;
	static Parley__Billing__V1__Features nofeat =
	        PARLEY__BILLING__V1__FEATURES__INIT;
	Parley__Billing__V1__CreatePlanRequest req = *in;
	billing_plan *p;
	int rc;

	if (!code_valid(in->code))
		return pl_call_violation(
		        call, "code", "must be 1-64 of a-z, 0-9, '_' and '-'");
	if ((rc = check_text(call, "name", in->name, MAX_NAME, true)) ||
	    (rc = check_text(call, "description", in->description, MAX_DESC,
	                     false)) ||
	    (rc = check_price(call, in->price_minor, in->trial_days)))
		return rc;
	if (!billing_currency_valid(in->currency))
		return pl_call_violation(call, "currency",
		                         "unknown currency \"%.8s\"",
		                         in->currency);
	if ((int)in->interval < 0 || (int)in->interval > 2)
		return pl_call_violation(call, "interval", "unknown interval");
	if (in->limits != NULL && (rc = check_limits(call, in->limits)))
		return rc;
	if ((rc = check_overage(call, in->overage, in->n_overage)))
		return rc;
	if (req.limits == NULL)
		req.limits = &nolim;
	if (req.features == NULL)
		req.features = &nofeat;
	if ((rc = billing_store_plan_create(call, pl_call_db(call), &req, &p)))
		return rc;
	out->id = p->id;
	out->plan = p;
	return PL_OK;
}

static int
update_plan(pl_call *call, const void *vin, void *vout)
{
	const Parley__Billing__V1__UpdatePlanRequest *in = vin;
	Parley__Billing__V1__UpdatePlanResponse *out = vout;
	static const struct {
		const char *name;
		unsigned bit;
	} fields[] = { { "name", BILLING_M_NAME },
		       { "description", BILLING_M_DESC },
		       { "price_minor", BILLING_M_PRICE },
		       { "trial_days", BILLING_M_TRIAL },
		       { "is_public", BILLING_M_PUBLIC },
		       { "is_default", BILLING_M_DEFAULT },
		       { "archived", BILLING_M_ARCHIVED },
		       { "limits", BILLING_M_LIMITS },
		       { "features", BILLING_M_FEATURES },
		       { "overage", BILLING_M_OVERAGE } };
	unsigned mask = 0;
	int rc;

	if (!pl_uuid_valid(in->id))
		return pl_call_violation(call, "id", "must be a plan id");
	for (size_t i = 0; i < in->n_update_mask; i++) {
		size_t j;
		for (j = 0; j < sizeof(fields) / sizeof(fields[0]); j++)
			if (strcmp(in->update_mask[i], fields[j].name) == 0)
				break;
		if (j == sizeof(fields) / sizeof(fields[0]))
			return pl_call_violation(call, "update_mask",
			                         "unknown field \"%.64s\"",
			                         in->update_mask[i]);
		mask |= fields[j].bit;
	}
	if (in->n_update_mask == 0) {
		mask |= in->name[0] ? BILLING_M_NAME : 0;
		mask |= in->description[0] ? BILLING_M_DESC : 0;
		mask |= in->price_minor ? BILLING_M_PRICE : 0;
		mask |= in->trial_days ? BILLING_M_TRIAL : 0;
		mask |= in->is_public ? BILLING_M_PUBLIC : 0;
		mask |= in->is_default ? BILLING_M_DEFAULT : 0;
		mask |= in->archived ? BILLING_M_ARCHIVED : 0;
		mask |= in->limits ? BILLING_M_LIMITS : 0;
		mask |= in->features ? BILLING_M_FEATURES : 0;
		mask |= in->n_overage ? BILLING_M_OVERAGE : 0;
	}
	if ((mask & BILLING_M_NAME) &&
	    (rc = check_text(call, "name", in->name, MAX_NAME, true)))
		return rc;
	if ((mask & BILLING_M_DESC) &&
	    (rc = check_text(call, "description", in->description, MAX_DESC,
	                     false)))
		return rc;
	if ((rc = check_price(call, in->price_minor, in->trial_days)))
		return rc;
	if (in->limits != NULL && (rc = check_limits(call, in->limits)))
		return rc;
	if ((rc = check_overage(call, in->overage, in->n_overage)))
		return rc;
	if ((rc = billing_store_plan_update(call, pl_call_db(call), in, mask,
	                                    &out->plan)) == PL_OK &&
	    (mask & (BILLING_M_LIMITS | BILLING_M_OVERAGE)))
		billing_leases_forget(&state(call)->batcher, NULL);
	return rc;
}

static int
list_plans(pl_call *call, const void *vin, void *vout)
{
	const Parley__Billing__V1__ListPlansRequest *in = vin;
	Parley__Billing__V1__ListPlansResponse *out = vout;
	bool admin = is_platform(call);
	const char *after;
	int size, rc;

	if ((rc = page_size(call, in->page, &size)))
		return rc;
	if ((after = page_token(call, in->page)) == NULL)
		return PL_INVALID_ARGUMENT;
	if ((rc = billing_store_plans_list(
	             call, pl_call_db(call), admin && in->include_internal,
	             admin && in->include_archived, after, size + 1,
	             &out->plans, &out->n_plans)))
		return rc;
	if (out->n_plans > (size_t)size) {
		out->n_plans = (size_t)size;
		out->next_page_token =
		        token_encode(call->arena, out->plans[size - 1]->code);
	}
	return PL_OK;
}

// Subscriptions -------------------------------------------------------------

static int
get_subscription(pl_call *call, const void *vin, void *vout)
{
	Parley__Billing__V1__GetSubscriptionResponse *out = vout;
	const char *tenant = caller_tenant(call);
	int64_t anchor;
	int rc;

	(void)vin;
	if (tenant == NULL)
		return call->code;
	if ((rc = billing_store_sub_get(call, pl_call_db(call), tenant,
	                                &out->subscription, &out->plan,
	                                &anchor)))
		return rc;
	if (out->subscription == NULL)
		return pl_call_error(call, PL_NOT_FOUND,
		                     "tenant has no subscription");
	return PL_OK;
}

static int
list_history(pl_call *call, const void *vin, void *vout)
{
	const Parley__Billing__V1__ListSubscriptionHistoryRequest *in = vin;
	Parley__Billing__V1__ListSubscriptionHistoryResponse *out = vout;
	const char *tenant = caller_tenant(call), *before;
	int size, rc;

	if (tenant == NULL)
		return call->code;
	if ((rc = page_size(call, in->page, &size)))
		return rc;
	if ((before = page_token(call, in->page)) == NULL)
		return PL_INVALID_ARGUMENT;
	if (before[0] && !pl_uuid_valid(before))
		return pl_call_violation(call, "page.page_token",
		                         "invalid page token");
	if ((rc = billing_store_history(call, pl_call_db(call), tenant, before,
	                                size + 1, &out->changes,
	                                &out->n_changes)))
		return rc;
	if (out->n_changes > (size_t)size) {
		out->n_changes = (size_t)size;
		out->next_page_token =
		        token_encode(call->arena, out->changes[size - 1]->id);
	}
	return PL_OK;
}

static int
change_plan(pl_call *call, const void *vin, void *vout)
{
	const Parley__Billing__V1__ChangePlanRequest *in = vin;
	Parley__Billing__V1__ChangePlanResponse *out = vout;
	billing_change_req req = { 0 };
	int rc;

	if ((req.tenant = caller_tenant(call)) == NULL)
		return call->code;
	if (!code_valid(in->plan_code))
		return pl_call_violation(call, "plan_code", "unknown plan");
	req.plan_code = in->plan_code;
	req.actor = actor(call);
	req.dry_run = in->dry_run;
	req.may_internal = is_platform(call);
	req.now_ms = billing_now_ms();
	if ((rc = billing_store_change_plan(call, pl_call_db(call), state(call),
	                                    &req)))
		return rc;
	if (!req.dry_run)
		billing_leases_forget(&state(call)->batcher, req.tenant);
	out->subscription = req.sub;
	out->plan = req.plan;
	out->n_proration = req.n_lines;
	out->proration = pl_arena_zalloc(
	        call->arena, (req.n_lines + 1) * sizeof(*out->proration));
	for (size_t i = 0; out->proration != NULL && i < req.n_lines; i++)
		out->proration[i] = req.lines[i];
	out->proration_minor = req.proration;
	out->currency = pl_arena_strdup(call->arena, req.currency);
	return PL_OK;
}

static int
cancel_subscription(pl_call *call, const void *vin, void *vout)
{
	const Parley__Billing__V1__CancelSubscriptionRequest *in = vin;
	Parley__Billing__V1__CancelSubscriptionResponse *out = vout;
	const char *tenant = caller_tenant(call);
	int rc;

	if (tenant == NULL)
		return call->code;
	if ((rc = check_text(call, "reason", in->reason, 500, false)))
		return rc;
	rc = billing_store_cancel(call, pl_call_db(call), state(call), tenant,
	                          actor(call), in->at_period_end, in->reason,
	                          &out->subscription);
	// Leases were granted under the old subscription (README "Leases").
	if (rc == PL_OK)
		billing_leases_forget(&state(call)->batcher, tenant);
	return rc;
}

static int
resume_subscription(pl_call *call, const void *vin, void *vout)
{
	Parley__Billing__V1__ResumeSubscriptionResponse *out = vout;
	const char *tenant = caller_tenant(call);
	int rc;

	(void)vin;
	if (tenant == NULL)
		return call->code;
	if ((rc = billing_store_resume(call, pl_call_db(call), state(call),
	                               tenant, actor(call),
	                               &out->subscription)) == PL_OK)
		billing_leases_forget(&state(call)->batcher, tenant);
	return rc;
}

// Usage ---------------------------------------------------------------------

static Parley__Billing__V1__Period *
period(pl_arena *a, int64_t start_s, int64_t end_s)
{
	Parley__Billing__V1__Period *p = pl_arena_zalloc(a, sizeof(*p));
	char b[32];
	if (p == NULL)
		return NULL;
	parley__billing__v1__period__init(p);
	billing_format_time(start_s * 1000, b);
	p->start_at = pl_arena_strdup(a, b);
	billing_format_time(end_s * 1000, b);
	p->end_at = pl_arena_strdup(a, b);
	return p;
}

typedef struct usage_view {
	billing_sub *sub;
	billing_plan *plan;
	int64_t ms, ps, pe, ds;
	Parley__Billing__V1__UsageCounts *used;
} usage_view;

static int64_t
unleased(int64_t used, int64_t unused)
{
	return used > unused ? used - unused : 0;
}

// The subscription and its usage at at_ms.
static int
usage_at(pl_call *call, const char *tenant, int64_t at_ms, usage_view *v)
{
	int64_t anchor;
	int rc;

	if ((rc = billing_store_sub_get(call, pl_call_db(call), tenant, &v->sub,
	                                &v->plan, &anchor)))
		return rc;
	if (v->sub == NULL)
		return pl_call_error(call, PL_NOT_FOUND,
		                     "tenant has no subscription");
	v->ms = at_ms;
	v->ds = billing_day_start(at_ms / 1000);
	billing_month_period(anchor / 1000, at_ms / 1000, &v->ps, &v->pe);
	v->used = pl_arena_zalloc(call->arena, sizeof(*v->used));
	if (v->used == NULL)
		return PL_RESOURCE_EXHAUSTED;
	parley__billing__v1__usage_counts__init(v->used);
	if ((rc = billing_store_usage(call, pl_call_db(call), tenant, v->ds,
	                              v->ps, v->used)))
		return rc;
	// Units leased to this replica and not used are in the counters
	// (README "Leases"): they are not usage. Leases end with their day
	// and billing month, so only the current periods hold any.
	if (at_ms / 1000 - v->ds < 86400 &&
	    billing_now_ms() / 1000 - v->ds < 86400) {
		int64_t m = billing_leases_unused(&state(call)->batcher, tenant,
		                                  "messages");
		int64_t c = billing_leases_unused(&state(call)->batcher, tenant,
		                                  "campaigns");
		int64_t t = billing_leases_unused(&state(call)->batcher, tenant,
		                                  "ai_tokens");
		v->used->messages_per_day =
		        unleased(v->used->messages_per_day, m);
		v->used->messages_per_month =
		        unleased(v->used->messages_per_month, m);
		v->used->campaigns_per_day =
		        unleased(v->used->campaigns_per_day, c);
		v->used->campaigns_per_month =
		        unleased(v->used->campaigns_per_month, c);
		v->used->ai_tokens_per_month =
		        unleased(v->used->ai_tokens_per_month, t);
	}
	return PL_OK;
}

static bool
status_active(int s)
{
	return s == BILLING_ST(TRIALING) || s == BILLING_ST(ACTIVE) ||
	       s == BILLING_ST(PAST_DUE);
}

static int
get_entitlements(pl_call *call, const void *vin, void *vout)
{
	Parley__Billing__V1__GetEntitlementsResponse *out = vout;
	const char *tenant = caller_tenant(call);
	usage_view v;
	int rc;

	(void)vin;
	if (tenant == NULL)
		return call->code;
	if ((rc = usage_at(call, tenant, billing_now_ms(), &v)))
		return rc;
	out->plan_code = v.plan->code;
	out->status = v.sub->status;
	out->active = status_active(v.sub->status);
	out->features = v.plan->features;
	out->limits = v.plan->limits;
	out->used = v.used;
	out->period = period(call->arena, v.ps, v.pe);
	return PL_OK;
}

static int
get_usage(pl_call *call, const void *vin, void *vout)
{
	const Parley__Billing__V1__GetUsageRequest *in = vin;
	Parley__Billing__V1__GetUsageResponse *out = vout;
	const char *tenant = caller_tenant(call);
	usage_view v;
	int64_t at = billing_now_ms();
	int rc;

	if (tenant == NULL)
		return call->code;
	if (in->at[0] && !billing_parse_time(in->at, &at))
		return pl_call_violation(call, "at",
		                         "must be an RFC 3339 time");
	if ((rc = usage_at(call, tenant, at, &v)))
		return rc;
	out->plan = v.plan->code;
	out->plan_name = v.plan->name;
	out->status = v.sub->status;
	out->period = period(call->arena, v.ps, v.pe);
	out->day = period(call->arena, v.ds, v.ds + BILLING_DAY_S);
	out->limits = v.plan->limits;
	out->used = v.used;
	out->overage = pl_arena_zalloc(call->arena, sizeof(*out->overage));
	if (out->overage == NULL)
		return PL_RESOURCE_EXHAUSTED;
	parley__billing__v1__usage_counts__init(out->overage);
	for (size_t i = 0; i < v.plan->n_overage; i++) {
		const Parley__Billing__V1__Limits *l = v.plan->limits;
		switch (v.plan->overage[i]->metric) {
		case PARLEY__BILLING__V1__METRIC__METRIC_MESSAGES:
			if (l->messages_per_month >= 0 &&
			    v.used->messages_per_month > l->messages_per_month)
				out->overage->messages_per_month =
				        v.used->messages_per_month -
				        l->messages_per_month;
			break;
		case PARLEY__BILLING__V1__METRIC__METRIC_CAMPAIGNS:
			if (l->campaigns_per_month >= 0 &&
			    v.used->campaigns_per_month >
			            l->campaigns_per_month)
				out->overage->campaigns_per_month =
				        v.used->campaigns_per_month -
				        l->campaigns_per_month;
			break;
		case PARLEY__BILLING__V1__METRIC__METRIC_AI_TOKENS:
			if (l->ai_tokens_per_month >= 0 &&
			    v.used->ai_tokens_per_month >
			            l->ai_tokens_per_month)
				out->overage->ai_tokens_per_month =
				        v.used->ai_tokens_per_month -
				        l->ai_tokens_per_month;
			break;
		default:
			break;
		}
	}
	return PL_OK;
}

static const char *
remaining_text(pl_arena *a, int64_t v)
{
	return v < 0 ? "unlimited" : pl_arena_printf(a, "%" PRId64, v);
}

// ReserveUsage's checks: fills it, or sets the call's error.
static int
reserve_check(pl_call *call, const reserve_in *in, billing_reserve_item *it)
{
	const char *metric, *key = in->idempotency_key;
	int rc;

	if (!pl_uuid_valid(in->tenant_id))
		return pl_call_violation(call, "tenant_id",
		                         "must be a tenant id");
	if ((metric = billing_metric_name((int)in->metric)) == NULL)
		return pl_call_violation(call, "metric", "unknown metric");
	if (in->amount <= 0 || in->amount > MAX_AMOUNT)
		return pl_call_violation(call, "amount", "must be 1..%lld",
		                         (long long)MAX_AMOUNT);
	if (key[0] == '\0' && call->idempotency_key != NULL)
		key = call->idempotency_key;
	if ((rc = check_text(call, "idempotency_key", key, MAX_KEY, true)))
		return rc;
	memset(it, 0, sizeof(*it));
	it->tenant = in->tenant_id;
	it->metric = metric;
	it->key = key;
	it->amount = in->amount;
	return PL_OK;
}

// A decided reservation as ReserveUsage answers it.
static int
reserve_answer(pl_call *call, const reserve_in *in,
               const billing_reserve_item *it, reserve_out *out)
{
	const billing_reserve_result *r = &it->res;

	if (it->rc)
		return pl_call_error(call, it->rc, "could not reserve usage");
	if (strcmp(r->outcome, "ok") == 0) {
		out->reservation_id =
		        pl_arena_strdup(call->arena, r->reservation_id);
		out->remaining_day = r->remaining_day;
		out->remaining_month = r->remaining_month;
		out->overage = r->overage;
		out->replayed = r->replayed;
		return PL_OK;
	}
	if (strcmp(r->outcome, "exhausted") == 0) {
		// What remains, for callers, in the reply's details (as a
		// quota failure's: the subject and its figure); the message
		// says the same for people.
		pl_call_violation(call, "limit", "%s", r->refusal);
		pl_call_violation(call, "remaining_day", "%" PRId64,
		                  r->remaining_day);
		pl_call_violation(call, "remaining_month", "%" PRId64,
		                  r->remaining_month);
		return pl_call_error(
		        call, PL_RESOURCE_EXHAUSTED,
		        "could not reserve %" PRId64 " %s: limit %s reached "
		        "(remaining today: %s, remaining this month: %s)%s",
		        in->amount, it->metric, r->refusal,
		        remaining_text(call->arena, r->remaining_day),
		        remaining_text(call->arena, r->remaining_month),
		        r->replayed ? " [replayed]" : "");
	}
	if (strcmp(r->outcome, "conflict") == 0)
		return pl_call_error(call, PL_ALREADY_EXISTS,
		                     "idempotency key was already used for "
		                     "another reservation");
	if (strcmp(r->outcome, "no_subscription") == 0)
		return pl_call_error(
		        call, PL_FAILED_PRECONDITION,
		        "could not reserve usage: tenant has no subscription");
	return pl_call_error(call, PL_FAILED_PRECONDITION,
	                     "could not reserve usage: the subscription is %s",
	                     r->refusal);
}

static int
reserve_usage(pl_call *call, const void *vin, void *vout)
{
	billing_reserve_item it;
	int rc;

	if ((rc = reserve_check(call, vin, &it)))
		return rc;
	billing_reserve(&state(call)->batcher, pl_call_db(call), &it);
	return reserve_answer(call, vin, &it, vout);
}

// ReserveUsageBatch: every item checked and answered as ReserveUsage would
// (its own status), the valid ones queued together so that one batch
// decides them when they fit.
static int
reserve_usage_batch(pl_call *call, const void *vin, void *vout)
{
	const Parley__Billing__V1__ReserveUsageBatchRequest *in = vin;
	Parley__Billing__V1__ReserveUsageBatchResponse *out = vout;
	Parley__Billing__V1__ReserveUsageBatchResult *res, **resp;
	size_t n = in->n_items, m = 0;
	pl_arena *a = call->arena;
	billing_reserve_item *its, **ptrs;
	pl_call *calls;
	size_t *idx;

	if (n == 0 || n > BILLING_MAX_BATCH)
		return pl_call_violation(call, "items",
		                         "must have 1 to %d items, got %zu",
		                         BILLING_MAX_BATCH, n);
	res = pl_arena_zalloc(a, n * sizeof(*res));
	resp = pl_arena_zalloc(a, n * sizeof(*resp));
	its = pl_arena_zalloc(a, n * sizeof(*its));
	ptrs = pl_arena_zalloc(a, n * sizeof(*ptrs));
	calls = pl_arena_zalloc(a, n * sizeof(*calls));
	idx = pl_arena_zalloc(a, n * sizeof(*idx));
	if (res == NULL || resp == NULL || its == NULL || ptrs == NULL ||
	    calls == NULL || idx == NULL)
		return pl_call_error(call, PL_RESOURCE_EXHAUSTED,
		                     "out of memory");
	for (size_t i = 0; i < n; i++) {
		int rc;

		parley__billing__v1__reserve_usage_batch_result__init(&res[i]);
		resp[i] = &res[i];
		pl_call_item(&calls[i], call); // its key is its own
		if ((rc = reserve_check(&calls[i], in->items[i], &its[i]))) {
			res[i].code = rc;
			res[i].message = calls[i].message;
			continue;
		}
		ptrs[m] = &its[i];
		idx[m++] = i;
	}
	billing_reserve_n(&state(call)->batcher, pl_call_db(call), ptrs, m);
	for (size_t k = 0; k < m; k++) {
		size_t i = idx[k];
		reserve_out *o = pl_arena_zalloc(a, sizeof(*o));
		int rc;

		if (o == NULL)
			return pl_call_error(call, PL_RESOURCE_EXHAUSTED,
			                     "out of memory");
		parley__billing__v1__reserve_usage_response__init(o);
		if ((rc = reserve_answer(&calls[i], in->items[i], &its[i],
		                         o))) {
			res[i].code = rc;
			res[i].message = calls[i].message;
		} else {
			res[i].reservation = o;
		}
	}
	out->results = resp;
	out->n_results = n;
	return PL_OK;
}

static int
release_usage(pl_call *call, const void *vin, void *vout)
{
	const Parley__Billing__V1__ReleaseUsageRequest *in = vin;
	Parley__Billing__V1__ReleaseUsageResponse *out = vout;
	bool found;
	int rc;

	if (!pl_uuid_valid(in->tenant_id))
		return pl_call_violation(call, "tenant_id",
		                         "must be a tenant id");
	if ((rc = check_text(call, "idempotency_key", in->idempotency_key,
	                     MAX_KEY, true)))
		return rc;
	if (in->amount < 0 || in->amount > MAX_AMOUNT)
		return pl_call_violation(call, "amount", "must be 0..%lld",
		                         (long long)MAX_AMOUNT);
	if ((rc = billing_store_release(pl_call_db(call), in->tenant_id,
	                                in->idempotency_key, in->amount, &found,
	                                &out->released, &out->remaining)))
		return pl_call_error(call, rc, "could not release usage");
	if (!found)
		return pl_call_error(
		        call, PL_NOT_FOUND,
		        "no reservation with that idempotency key");
	return PL_OK;
}

// Invoices ------------------------------------------------------------------

static int
close_period(pl_call *call, const void *vin, void *vout)
{
	const Parley__Billing__V1__CloseBillingPeriodRequest *in = vin;
	Parley__Billing__V1__CloseBillingPeriodResponse *out = vout;
	billing_state *st = state(call);
	int64_t at = billing_now_ms();
	size_t cap = 0;
	int rc;

	if (in->at[0] && !billing_parse_time(in->at, &at))
		return pl_call_violation(call, "at",
		                         "must be an RFC 3339 time");
	if (in->tenant_id[0] && !pl_uuid_valid(in->tenant_id))
		return pl_call_violation(call, "tenant_id",
		                         "must be a tenant id");
	// What this replica leased goes back first: a period closed early
	// (at in the future) must not bill units leased and not used.
	billing_leases_flush(&st->batcher, pl_call_db(call),
	                     in->tenant_id[0] ? in->tenant_id : NULL);
	if (in->tenant_id[0]) {
		rc = billing_store_close(call, pl_call_db(call), st,
		                         in->tenant_id, at, &out->invoices,
		                         &out->n_invoices, &cap);
		if (rc)
			return rc;
	} else {
		// Every due subscription: the list comes 1,000 at a time, and a
		// subscription several periods behind is due again once its
		// first is closed. One tenant's failure does not stop the
		// others (as the periodic job); the call then fails naming
		// the first, after the rest and the grace sweep (the invoices
		// issued are committed: ListInvoices shows them). A round
		// with a failure is the last, so a close that keeps failing
		// cannot loop.
		const char *first = NULL;
		size_t failed = 0;
		int first_rc = PL_OK, done;
		do {
			done = billing_close_round(call, pl_call_db(call), st,
			                           at, &out->invoices,
			                           &out->n_invoices, &cap,
			                           &failed, &first_rc, &first);
			if (done < 0)
				return call->code;
		} while (failed == 0 && done > 0);
		if (billing_store_grace_sweep(pl_call_db(call), st, at) < 0)
			return pl_call_error(
			        call, PL_INTERNAL,
			        "could not sweep past-due subscriptions");
		if (failed > 0)
			return pl_call_error(call, first_rc,
			                     "could not close %zu due "
			                     "subscription(s); the first, %s",
			                     failed, first ? first : "");
	}
	out->closed = (int32_t)out->n_invoices;
	return PL_OK;
}

static int
list_invoices(pl_call *call, const void *vin, void *vout)
{
	const Parley__Billing__V1__ListInvoicesRequest *in = vin;
	Parley__Billing__V1__ListInvoicesResponse *out = vout;
	static const char *const statuses[] = { "", "open", "paid", "void",
		                                "uncollectible" };
	const char *tenant = caller_tenant(call), *tok;
	int64_t before = INT64_MAX;
	int size, rc;

	if (tenant == NULL)
		return call->code;
	if ((int)in->status < 0 || (int)in->status > 4)
		return pl_call_violation(call, "status", "unknown status");
	if ((rc = page_size(call, in->page, &size)))
		return rc;
	if ((tok = page_token(call, in->page)) == NULL)
		return PL_INVALID_ARGUMENT;
	if (tok[0]) {
		char *end;
		before = strtoll(tok, &end, 10);
		if (*end != '\0' || before <= 0)
			return pl_call_violation(call, "page.page_token",
			                         "invalid page token");
	}
	if ((rc = billing_store_invoices_list(
	             call, pl_call_db(call), tenant, statuses[in->status],
	             before, size + 1, &out->invoices, &out->n_invoices)))
		return rc;
	if (out->n_invoices > (size_t)size) {
		out->n_invoices = (size_t)size;
		out->next_page_token = token_encode(
		        call->arena,
		        pl_arena_printf(call->arena, "%" PRId64,
		                        out->invoices[size - 1]->number));
	}
	return PL_OK;
}

static int
get_invoice(pl_call *call, const void *vin, void *vout)
{
	const Parley__Billing__V1__GetInvoiceRequest *in = vin;
	Parley__Billing__V1__GetInvoiceResponse *out = vout;
	const char *tenant = caller_tenant(call);
	int rc;

	if (tenant == NULL)
		return call->code;
	if (!pl_uuid_valid(in->id))
		return pl_call_violation(call, "id", "must be an invoice id");
	if ((rc = billing_store_invoice_get(call, pl_call_db(call), tenant,
	                                    in->id, &out->invoice)))
		return rc;
	if (out->invoice == NULL)
		return pl_call_error(call, PL_NOT_FOUND, "invoice %s not found",
		                     in->id);
	return PL_OK;
}

// Webhooks and events -------------------------------------------------------

static const char *
json_str(json_t *o, const char *k, size_t max)
{
	json_t *v = json_object_get(o, k);
	if (!json_is_string(v) || json_string_length(v) > max)
		return NULL;
	return json_string_value(v);
}

// A provider's object id (Stripe's "cus_...", "sub_..."): letters, digits,
// '_' and '-', 1 to 255 of them; anything else (an expanded object, a
// null) is not taken.
static const char *
provider_id(json_t *o, const char *k)
{
	const char *v = json_str(o, k, 255);

	if (v == NULL || v[0] == '\0')
		return NULL;
	for (const char *c = v; *c != '\0'; c++)
		if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
		      (*c >= '0' && *c <= '9') || *c == '_' || *c == '-'))
			return NULL;
	return v;
}

static int
payment_webhook(pl_call *call, const void *vin, void *vout)
{
	const Parley__Billing__V1__HandlePaymentWebhookRequest *in = vin;
	Parley__Billing__V1__HandlePaymentWebhookResponse *out = vout;
	billing_state *st = state(call);
	const char *header = NULL;
	billing_sig_result sr;
	billing_payment ev = { 0 };
	json_t *root, *obj, *meta;
	json_error_t jerr;
	char *body;
	int rc;

	if (st->webhook_secret[0] == '\0')
		return pl_call_error(call, PL_FAILED_PRECONDITION,
		                     "payment webhooks are not configured");
	if (in->body.len > MAX_BODY)
		return pl_call_violation(call, "body", "larger than %d bytes",
		                         MAX_BODY);
	if (in->n_headers > MAX_HEADERS)
		return pl_call_violation(call, "headers",
		                         "more than %d headers", MAX_HEADERS);
	for (size_t i = 0; i < in->n_headers; i++)
		if (strcasecmp(in->headers[i]->name, "Stripe-Signature") == 0)
			header = in->headers[i]->value;
	// Verified from the raw bytes before anything is parsed.
	sr = billing_sig_verify(header, in->body.data, in->body.len,
	                        st->webhook_secret, billing_now_ms() / 1000,
	                        BILLING_SIG_TOLERANCE_S);
	switch (sr) {
	case BILLING_SIG_OK:
		break;
	case BILLING_SIG_MISSING:
		return pl_call_error(call, PL_UNAUTHENTICATED,
		                     "payment webhook is not signed");
	case BILLING_SIG_MALFORMED:
		return pl_call_error(
		        call, PL_UNAUTHENTICATED,
		        "payment webhook signature header is malformed");
	case BILLING_SIG_STALE:
		return pl_call_error(
		        call, PL_UNAUTHENTICATED,
		        "payment webhook timestamp is outside the tolerance");
	default:
		return pl_call_error(
		        call, PL_UNAUTHENTICATED,
		        "payment webhook signature does not match");
	}
	body = pl_arena_strndup(call->arena, (const char *)in->body.data,
	                        in->body.len);
	if (body == NULL)
		return PL_RESOURCE_EXHAUSTED;
	root = json_loadb(body, in->body.len, JSON_REJECT_DUPLICATES, &jerr);
	if (!json_is_object(root)) {
		json_decref(root);
		return pl_call_violation(call, "body", "must be a JSON object");
	}
	ev.event_id = json_str(root, "id", 255);
	ev.type = json_str(root, "type", 100);
	if (ev.event_id == NULL || ev.event_id[0] == '\0' || ev.type == NULL) {
		json_decref(root);
		return pl_call_violation(call, "body",
		                         "needs string fields id and type");
	}
	obj = json_object_get(json_object_get(root, "data"), "object");
	meta = json_object_get(obj, "metadata");
	ev.tenant_id = json_str(meta, "parley_tenant_id", 64);
	ev.invoice_id = json_str(meta, "parley_invoice_id", 64);
	ev.provider_invoice_id = json_str(obj, "id", 255);
	ev.provider_customer_id = provider_id(obj, "customer");
	ev.provider_subscription_id = provider_id(obj, "subscription");
	if (ev.tenant_id != NULL && !pl_uuid_valid(ev.tenant_id))
		ev.tenant_id = NULL;
	if (ev.invoice_id != NULL && !pl_uuid_valid(ev.invoice_id))
		ev.invoice_id = NULL;
	ev.payload = body;
	{
		billing_sig sig;
		billing_sig_parse(header, &sig);
		ev.signed_at = sig.t;
	}
	rc = billing_store_payment_event(call, pl_call_db(call), st, &ev);
	if (rc == PL_OK) {
		out->event_id = pl_arena_strdup(call->arena, ev.event_id);
		out->event_type = pl_arena_strdup(call->arena, ev.type);
		out->duplicate = ev.duplicate;
		out->applied = ev.applied;
	}
	json_decref(root);
	return rc;
}

static int
deliver_events(pl_call *call, const void *vin, void *vout)
{
	const Parley__Billing__V1__DeliverEventsRequest *in = vin;
	Parley__Billing__V1__DeliverEventsResponse *out = vout;
	billing_delivered *evs;
	int rc = PL_OK, acc, dup, ign;

	if (in->n_events > MAX_EVENTS)
		return pl_call_violation(call, "events", "more than %d events",
		                         MAX_EVENTS);
	if (in->n_events == 0)
		return PL_OK;
	evs = pl_arena_zalloc(call->arena, in->n_events * sizeof(*evs));
	if (evs == NULL)
		return PL_RESOURCE_EXHAUSTED;
	for (size_t i = 0; i < in->n_events && rc == PL_OK; i++) {
		const Parley__Rpc__V1__Event *e = in->events[i];
		char f[48];
		if (!pl_uuid_valid(e->id)) {
			snprintf(f, sizeof(f), "events[%zu].id", i);
			return pl_call_violation(call, f, "must be a UUID");
		}
		if (!pl_uuid_valid(e->tenant_id)) {
			snprintf(f, sizeof(f), "events[%zu].tenant_id", i);
			return pl_call_violation(call, f, "must be a UUID");
		}
		if (e->type[0] == '\0' || strlen(e->type) > 100) {
			snprintf(f, sizeof(f), "events[%zu].type", i);
			return pl_call_violation(call, f,
			                         "must be 1-100 bytes");
		}
		evs[i].id = e->id;
		evs[i].tenant_id = e->tenant_id;
		evs[i].type = e->type;
		if (strcmp(e->type, "tenant.created") == 0 &&
		    e->payload != NULL && e->payload->text[0] != '\0') {
			json_t *p = json_loads(e->payload->text, 0, NULL);
			const char *code;
			if (!json_is_object(p)) {
				json_decref(p);
				snprintf(f, sizeof(f), "events[%zu].payload",
				         i);
				return pl_call_violation(
				        call, f, "must be a JSON object");
			}
			code = json_str(p, "plan_code", MAX_CODE);
			if (code != NULL && code[0] != '\0')
				evs[i].plan_code =
				        pl_arena_strdup(call->arena, code);
			json_decref(p);
		}
	}
	if ((rc = billing_store_deliver(call, pl_call_db(call), state(call),
	                                evs, in->n_events, &acc, &dup, &ign)))
		return rc;
	out->accepted = acc;
	out->duplicates = dup;
	out->ignored = ign;
	return PL_OK;
}

// The table -----------------------------------------------------------------

static const pl_rpc_method billing_methods[] = {
	{ "CreatePlan", create_plan, PL_PLATFORM_ADMIN, NULL, 0 },
	{ "UpdatePlan", update_plan, PL_PLATFORM_ADMIN, NULL, 0 },
	{ "ListPlans", list_plans, PL_ROLE_VIEWER, "billing:read", 0 },
	{ "GetSubscription", get_subscription, PL_ROLE_VIEWER, "billing:read",
	  0 },
	{ "ListSubscriptionHistory", list_history, PL_ROLE_OWNER,
	  "billing:read", 0 },
	{ "ChangePlan", change_plan, PL_ROLE_OWNER, NULL, 0 },
	{ "CancelSubscription", cancel_subscription, PL_ROLE_OWNER, NULL, 0 },
	{ "ResumeSubscription", resume_subscription, PL_ROLE_OWNER, NULL, 0 },
	{ "GetEntitlements", get_entitlements, PL_ROLE_VIEWER, "billing:read",
	  0 },
	{ "ReserveUsage", reserve_usage, PL_CALLER_SERVICE, NULL, 0 },
	{ "ReserveUsageBatch", reserve_usage_batch, PL_CALLER_SERVICE, NULL,
	  0 },
	{ "ReleaseUsage", release_usage, PL_CALLER_SERVICE, NULL, 0 },
	{ "GetUsage", get_usage, PL_ROLE_VIEWER, "billing:read", 0 },
	{ "CloseBillingPeriod", close_period, PL_PLATFORM_ADMIN, NULL, 0 },
	{ "ListInvoices", list_invoices, PL_ROLE_ADMIN, "billing:read", 0 },
	{ "GetInvoice", get_invoice, PL_ROLE_ADMIN, "billing:read", 0 },
	{ "HandlePaymentWebhook", payment_webhook, PL_CALLER_SERVICE, NULL, 0 },
	{ "DeliverEvents", deliver_events, PL_CALLER_SERVICE, NULL, 0 },
	{ NULL, NULL, 0, NULL, 0 },
};

static const pl_rpc_service billing_service = {
	&parley__billing__v1__billing__descriptor,
	billing_methods,
};

static const pl_rpc_service *const billing_services[] = { &billing_service,
	                                                  NULL };

// Configuration -------------------------------------------------------------

static char *cfg_webhook_secret;
static int64_t cfg_grace_days;
static int64_t cfg_job_interval;
static int64_t cfg_ttl_days;
static char *cfg_analytics_url;
static char *cfg_tenants_url;
static int64_t cfg_reserve_batch;
static int64_t cfg_reserve_parallel;
static int64_t cfg_lease_ttl;
static int64_t cfg_lease_min_rate;

static const pl_cfg_entry billing_cfg[] = {
	{ "PARLEY_PAYMENT_WEBHOOK_SECRET", PL_CFG_SECRET, "", 0, 0,
	  &cfg_webhook_secret,
	  "signing secret of payment webhooks (empty: refused)" },
	{ "PARLEY_BILLING_GRACE_DAYS", PL_CFG_INT, "7", 0, 365, &cfg_grace_days,
	  "days past due before tenants is told to suspend" },
	{ "PARLEY_BILLING_JOB_INTERVAL", PL_CFG_DURATION, "60s", 1000, 86400000,
	  &cfg_job_interval, "how often periods are closed and grace checked" },
	{ "PARLEY_BILLING_RESERVATION_TTL_DAYS", PL_CFG_INT, "35", 1, 3650,
	  &cfg_ttl_days, "days an idempotency key is remembered" },
	{ "PARLEY_ANALYTICS_URL", PL_CFG_STRING, "", 0, 0, &cfg_analytics_url,
	  "analytics service (empty: no events to it)" },
	{ "PARLEY_TENANTS_URL", PL_CFG_STRING, "", 0, 0, &cfg_tenants_url,
	  "tenants service (empty: no events to it)" },
	{ "PARLEY_BILLING_RESERVE_BATCH", PL_CFG_INT, "64", 1,
	  BILLING_MAX_BATCH, &cfg_reserve_batch,
	  "most ReserveUsage calls decided by one statement (1: one each)" },
	{ "PARLEY_BILLING_RESERVE_PARALLEL", PL_CFG_INT, "2", 1, 64,
	  &cfg_reserve_parallel,
	  "ReserveUsage batches run at once by one replica" },
	{ "PARLEY_BILLING_LEASE_TTL", PL_CFG_DURATION, "10s", 0, 60000,
	  &cfg_lease_ttl,
	  "longest a replica admits against a counter lease (0: no leases)" },
	{ "PARLEY_BILLING_LEASE_MIN_RATE", PL_CFG_INT, "4", 1, 1000000,
	  &cfg_lease_min_rate,
	  "ReserveUsage calls a second of one tenant and metric before it "
	  "gets leases" },
	{ NULL, 0, NULL, 0, 0, NULL, NULL },
};

static int
open_client(pl_rpc_client **out, const char *url, const pl_service_cfg *cfg)
{
	pl_rpc_client_config cc = { 0 };
	cc.urls = url;
	cc.secret = cfg->secret;
	cc.service = "billing";
	return pl_rpc_client_open(out, &cc);
}

static int
billing_init(const pl_service_cfg *cfg, void **arg)
{
	billing_state *st = calloc(1, sizeof(*st));
	size_t nt = 0;

	if (st == NULL)
		return PL_RESOURCE_EXHAUSTED;
	if (billing_n_migrations != BILLING_N_MIGRATIONS) {
		pl_error("BILLING_N_MIGRATIONS is %d but %zu migrations are "
		         "embedded",
		         BILLING_N_MIGRATIONS, billing_n_migrations);
		free(st);
		return PL_INTERNAL;
	}
	st->database_url = strdup(cfg->database_url);
	st->webhook_secret =
	        strdup(cfg_webhook_secret ? cfg_webhook_secret : "");
	st->grace_days = cfg_grace_days;
	st->job_interval_ms = cfg_job_interval;
	st->reservation_ttl_days = cfg_ttl_days;
	if (st->database_url == NULL || st->webhook_secret == NULL)
		goto out_fail;
	if (cfg_analytics_url && cfg_analytics_url[0]) {
		if (open_client(&st->analytics, cfg_analytics_url, cfg) !=
		    PL_OK)
			goto out_fail;
		st->dest_analytics[0] = "analytics";
		st->dest_tenants[nt++] = "analytics";
		st->emit_analytics = true;
	} else {
		pl_info("PARLEY_ANALYTICS_URL not set: no events to analytics");
	}
	if (cfg_tenants_url && cfg_tenants_url[0]) {
		if (open_client(&st->tenants, cfg_tenants_url, cfg) != PL_OK)
			goto out_fail;
		st->dest_tenants[nt++] = "tenants";
	} else {
		pl_info("PARLEY_TENANTS_URL not set: no events to tenants");
	}
	billing_batcher_init(&st->batcher, (int)cfg_reserve_batch,
	                     (int)cfg_reserve_parallel, st->emit_analytics);
	if (billing_leases_init(&st->batcher, st->database_url, cfg_lease_ttl,
	                        (int)cfg_lease_min_rate) != PL_OK)
		goto out_fail;
	if (st->webhook_secret[0] == '\0')
		pl_info("PARLEY_PAYMENT_WEBHOOK_SECRET not set: payment "
		        "webhooks refused");
	*arg = st;
	return PL_OK;

out_fail:
	if (st->analytics)
		pl_rpc_client_close(st->analytics);
	if (st->tenants)
		pl_rpc_client_close(st->tenants);
	free(st->database_url);
	free(st->webhook_secret);
	free(st);
	return PL_UNAVAILABLE;
}

static int
billing_start(void *arg)
{
	billing_state *st = arg;
	static pl_outbox_route routes[3];
	pl_outbox_relay_config rc = { 0 };
	int n = 0;

	if (st->analytics != NULL)
		routes[n++] = (pl_outbox_route){
			"analytics", st->analytics,
			"/parley.analytics.v1.Analytics/Track"
		};
	if (st->tenants != NULL)
		routes[n++] = (pl_outbox_route){
			"tenants", st->tenants,
			"/parley.tenants.v1.Tenants/DeliverEvents"
		};
	routes[n] = (pl_outbox_route){ NULL, NULL, NULL };
	if (n > 0) {
		rc.database_url = st->database_url;
		rc.schema = "billing";
		rc.source = "billing";
		rc.routes = routes;
		if (pl_outbox_relay_start(&st->relay, &rc) != PL_OK)
			return PL_UNAVAILABLE;
	}
	return billing_jobs_start(st);
}

static void
billing_stop(void *arg)
{
	billing_state *st = arg;
	if (st == NULL)
		return;
	billing_jobs_stop(st);
	if (st->relay != NULL)
		pl_outbox_relay_stop(st->relay);
	st->relay = NULL;
}

static void
billing_fini(void *arg)
{
	billing_state *st = arg;
	if (st == NULL)
		return;
	billing_stop(st);
	if (st->analytics)
		pl_rpc_client_close(st->analytics);
	if (st->tenants)
		pl_rpc_client_close(st->tenants);
	billing_batcher_fini(&st->batcher);
	sodium_memzero(st->webhook_secret, strlen(st->webhook_secret));
	free(st->webhook_secret);
	free(st->database_url);
	free(st);
}

const pl_service_def billing_service_def = {
	.name = "billing",
	.schema = "billing",
	.services = billing_services,
	.migrations = billing_migrations,
	// A constant is needed here; billing_init and a unit test check it
	// against the generated billing_n_migrations.
	.n_migrations = BILLING_N_MIGRATIONS,
	.default_listen = "tcp://127.0.0.1:7102",
	.default_ops_port = 9102,
	.cfg = billing_cfg,
	.init = billing_init,
	.start = billing_start,
	.stop = billing_stop,
	.fini = billing_fini,
};
