// Every SQL statement of the billing service (parameters only).
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "billing.h"
#include "pl/id.h"
#include "pl/log.h"

#define NARGS(...)                                                             \
	(int)(sizeof((const char *[]){ __VA_ARGS__ }) / sizeof(char *))
#define EXEC(db, sql, ...)                                                     \
	pl_db_exec(db, sql, NARGS(__VA_ARGS__),                                \
	           (const char *const[]){ __VA_ARGS__ })

#define TS(c)                                                                  \
	"coalesce(to_char(" c " AT TIME ZONE 'UTC', "                          \
	"'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), '')"
#define EP(c) "coalesce((extract(epoch FROM " c ") * 1000)::bigint, 0)"

typedef Parley__Billing__V1__SubscriptionChange billing_change;

// Results -------------------------------------------------------------------

static char *
scol(pl_arena *a, const PGresult *r, int row, int c)
{
	char *s = pl_arena_strdup(a, PQgetvalue(r, row, c));
	return s != NULL ? s : (char *)"";
}

static int64_t
icol(const PGresult *r, int row, int c)
{
	return strtoll(PQgetvalue(r, row, c), NULL, 10);
}

static bool
bcol(const PGresult *r, int row, int c)
{
	return PQgetvalue(r, row, c)[0] == 't';
}

static bool
nullcol(const PGresult *r, int row, int c)
{
	return PQgetisnull(r, row, c);
}

// Reports a failed result to the call (or the log when there is none) and
// clears it.
static int
fail(pl_call *call, PGresult *r, const char *what)
{
	int rc;

	if (call != NULL) {
		rc = pl_db_call_error(call, r, what);
	} else {
		rc = pl_db_result_status(r);
		pl_error("could not %s: %s", what,
		         r ? PQresultErrorMessage(r) : "no connection");
	}
	PQclear(r);
	return rc;
}

static bool
ok(const PGresult *r)
{
	return pl_db_result_status(r) == PL_OK;
}

static char *
i64s(pl_arena *a, int64_t v)
{
	return pl_arena_printf(a, "%" PRId64, v);
}

static char *
tss(pl_arena *a, int64_t ms)
{
	char buf[32];
	billing_format_time(ms, buf);
	return pl_arena_strdup(a, buf);
}

// Plans ---------------------------------------------------------------------

#define PLAN_COLS                                                              \
	"p.id, p.code, p.name, p.description, p.price_minor, p.currency, "     \
	"p.billing_interval, p.trial_days, p.is_public, p.is_default, "        \
	"p.archived, p.limit_messages_per_day, p.limit_messages_per_month, "   \
	"p.limit_campaigns_per_day, p.limit_campaigns_per_month, "             \
	"p.limit_agents, p.limit_seats, p.limit_knowledge_entries, "           \
	"p.limit_ai_tokens_per_month, p.feature_human_takeover, "              \
	"p.feature_campaigns, p.feature_api_access, p.feature_webhooks, "      \
	"p.feature_llm_agents, p.feature_analytics_export, "                   \
	"p.overage_messages_per_1000, p.overage_campaigns_per_1000, "          \
	"p.overage_ai_tokens_per_1000, " TS("p.created_at") ", " TS(           \
	        "p.updated_at")
#define PLAN_NCOLS 30

static billing_plan *
plan_from_row(pl_arena *a, const PGresult *r, int row, int c)
{
	billing_plan *p = pl_arena_zalloc(a, sizeof(*p));
	Parley__Billing__V1__Limits *l = pl_arena_zalloc(a, sizeof(*l));
	Parley__Billing__V1__Features *f = pl_arena_zalloc(a, sizeof(*f));

	if (p == NULL || l == NULL || f == NULL)
		return NULL;
	parley__billing__v1__plan__init(p);
	parley__billing__v1__limits__init(l);
	parley__billing__v1__features__init(f);
	p->id = scol(a, r, row, c + 0);
	p->code = scol(a, r, row, c + 1);
	p->name = scol(a, r, row, c + 2);
	p->description = scol(a, r, row, c + 3);
	p->price_minor = icol(r, row, c + 4);
	p->currency = scol(a, r, row, c + 5);
	p->interval = strcmp(PQgetvalue(r, row, c + 6), "year") == 0
	                      ? BILLING_BI(YEAR)
	                      : BILLING_BI(MONTH);
	p->trial_days = (int32_t)icol(r, row, c + 7);
	p->is_public = bcol(r, row, c + 8);
	p->is_default = bcol(r, row, c + 9);
	p->archived = bcol(r, row, c + 10);
	l->messages_per_day = icol(r, row, c + 11);
	l->messages_per_month = icol(r, row, c + 12);
	l->campaigns_per_day = icol(r, row, c + 13);
	l->campaigns_per_month = icol(r, row, c + 14);
	l->agents = icol(r, row, c + 15);
	l->seats = icol(r, row, c + 16);
	l->knowledge_entries = icol(r, row, c + 17);
	l->ai_tokens_per_month = icol(r, row, c + 18);
	f->human_takeover = bcol(r, row, c + 19);
	f->campaigns = bcol(r, row, c + 20);
	f->api_access = bcol(r, row, c + 21);
	f->webhooks = bcol(r, row, c + 22);
	f->llm_agents = bcol(r, row, c + 23);
	f->analytics_export = bcol(r, row, c + 24);
	p->limits = l;
	p->features = f;
	p->overage = pl_arena_zalloc(a, 3 * sizeof(*p->overage));
	for (int m = 1; m <= 3 && p->overage != NULL; m++) {
		Parley__Billing__V1__OveragePrice *o;
		if (nullcol(r, row, c + 24 + m))
			continue;
		o = pl_arena_zalloc(a, sizeof(*o));
		if (o == NULL)
			return NULL;
		parley__billing__v1__overage_price__init(o);
		o->metric = (Parley__Billing__V1__Metric)m;
		o->price_per_1000_minor = icol(r, row, c + 24 + m);
		p->overage[p->n_overage++] = o;
	}
	p->created_at = scol(a, r, row, c + 28);
	p->updated_at = scol(a, r, row, c + 29);
	return p;
}

// The overage price of metric m in p, or -1 when it is a hard cap.
static int64_t
plan_overage(const billing_plan *p, int m)
{
	for (size_t i = 0; i < p->n_overage; i++)
		if ((int)p->overage[i]->metric == m)
			return p->overage[i]->price_per_1000_minor;
	return -1;
}

static int64_t
plan_month_limit(const billing_plan *p, int m)
{
	switch (m) {
	case PARLEY__BILLING__V1__METRIC__METRIC_MESSAGES:
		return p->limits->messages_per_month;
	case PARLEY__BILLING__V1__METRIC__METRIC_CAMPAIGNS:
		return p->limits->campaigns_per_month;
	default:
		return p->limits->ai_tokens_per_month;
	}
}

// The plan's columns as text parameters [1..28] in PLAN_COLS order (id
// first, timestamps left out).
static void
plan_params(pl_arena *a, const billing_plan *p, const char *params[28])
{
	const Parley__Billing__V1__Limits *l = p->limits;
	const Parley__Billing__V1__Features *f = p->features;

	params[0] = p->id;
	params[1] = p->code;
	params[2] = p->name;
	params[3] = p->description;
	params[4] = i64s(a, p->price_minor);
	params[5] = p->currency;
	params[6] = p->interval == BILLING_BI(YEAR) ? "year" : "month";
	params[7] = i64s(a, p->trial_days);
	params[8] = p->is_public ? "t" : "f";
	params[9] = p->is_default ? "t" : "f";
	params[10] = p->archived ? "t" : "f";
	params[11] = i64s(a, l->messages_per_day);
	params[12] = i64s(a, l->messages_per_month);
	params[13] = i64s(a, l->campaigns_per_day);
	params[14] = i64s(a, l->campaigns_per_month);
	params[15] = i64s(a, l->agents);
	params[16] = i64s(a, l->seats);
	params[17] = i64s(a, l->knowledge_entries);
	params[18] = i64s(a, l->ai_tokens_per_month);
	params[19] = f->human_takeover ? "t" : "f";
	params[20] = f->campaigns ? "t" : "f";
	params[21] = f->api_access ? "t" : "f";
	params[22] = f->webhooks ? "t" : "f";
	params[23] = f->llm_agents ? "t" : "f";
	params[24] = f->analytics_export ? "t" : "f";
	for (int m = 1; m <= 3; m++) {
		int64_t o = plan_overage(p, m);
		params[24 + m] = o < 0 ? NULL : i64s(a, o);
	}
}

typedef struct plan_tx {
	pl_call *call;
	const Parley__Billing__V1__UpdatePlanRequest *upd;
	unsigned mask;
	billing_plan *plan; // in/out
} plan_tx;

static int
plan_write(pl_db *db, plan_tx *t, bool insert)
{
	const char *params[28];
	PGresult *r;

	plan_params(t->call->arena, t->plan, params);
	if (t->plan->is_default) {
		// Exactly one default: take the flag from the others first.
		r = EXEC(db,
		         "UPDATE billing.plans SET is_default = false, "
		         "updated_at = now() WHERE is_default AND id <> $1",
		         t->plan->id);
		if (!ok(r))
			return fail(t->call, r, "update the default plan");
		PQclear(r);
	}
	r = pl_db_exec(
	        db,
	        insert ? "INSERT INTO billing.plans (id, code, name, "
	                 "description, "
	                 "price_minor, currency, billing_interval, trial_days, "
	                 "is_public, is_default, archived, "
	                 "limit_messages_per_day, limit_messages_per_month, "
	                 "limit_campaigns_per_day, limit_campaigns_per_month, "
	                 "limit_agents, limit_seats, limit_knowledge_entries, "
	                 "limit_ai_tokens_per_month, feature_human_takeover, "
	                 "feature_campaigns, feature_api_access, "
	                 "feature_webhooks, "
	                 "feature_llm_agents, feature_analytics_export, "
	                 "overage_messages_per_1000, "
	                 "overage_campaigns_per_1000, "
	                 "overage_ai_tokens_per_1000) VALUES ($1, $2, $3, $4, "
	                 "$5, "
	                 "$6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, "
	                 "$17, "
	                 "$18, $19, $20, $21, $22, $23, $24, $25, $26, $27, "
	                 "$28)"
	               : "UPDATE billing.plans SET code = $2, name = $3, "
	                 "description = $4, price_minor = $5, currency = $6, "
	                 "billing_interval = $7, trial_days = $8, is_public = "
	                 "$9, "
	                 "is_default = $10, archived = $11, "
	                 "limit_messages_per_day = $12, "
	                 "limit_messages_per_month = $13, "
	                 "limit_campaigns_per_day = $14, "
	                 "limit_campaigns_per_month = $15, limit_agents = $16, "
	                 "limit_seats = $17, limit_knowledge_entries = $18, "
	                 "limit_ai_tokens_per_month = $19, "
	                 "feature_human_takeover = $20, feature_campaigns = "
	                 "$21, "
	                 "feature_api_access = $22, feature_webhooks = $23, "
	                 "feature_llm_agents = $24, feature_analytics_export = "
	                 "$25, "
	                 "overage_messages_per_1000 = $26, "
	                 "overage_campaigns_per_1000 = $27, "
	                 "overage_ai_tokens_per_1000 = $28, updated_at = now() "
	                 "WHERE id = $1",
	        28, params);
	if (!ok(r))
		return fail(t->call, r,
		            insert ? "create the plan" : "update the plan");
	PQclear(r);
	r = EXEC(db,
	         "SELECT " PLAN_COLS " FROM billing.plans p WHERE p.id = $1",
	         t->plan->id);
	if (!ok(r) || PQntuples(r) != 1)
		return fail(t->call, r, "read the plan");
	t->plan = plan_from_row(t->call->arena, r, 0, 0);
	PQclear(r);
	return t->plan ? PL_OK : PL_RESOURCE_EXHAUSTED;
}

static int
plan_create_fn(pl_db *db, void *arg)
{
	return plan_write(db, arg, true);
}

int
billing_store_plan_create(pl_call *call, pl_db *db,
                          const Parley__Billing__V1__CreatePlanRequest *in,
                          billing_plan **out)
{
	plan_tx t = { .call = call };
	billing_plan p;
	char id[PL_UUID_STRLEN + 1];
	int rc;

	parley__billing__v1__plan__init(&p);
	pl_uuid7_str(id);
	p.id = id;
	p.code = in->code;
	p.name = in->name;
	p.description = in->description;
	p.price_minor = in->price_minor;
	p.currency = in->currency;
	p.interval = in->interval == BILLING_BI(YEAR) ? BILLING_BI(YEAR)
	                                              : BILLING_BI(MONTH);
	p.trial_days = in->trial_days;
	p.is_public = in->is_public;
	p.is_default = in->is_default;
	p.limits = in->limits;
	p.features = in->features;
	p.n_overage = in->n_overage;
	p.overage = in->overage;
	t.plan = &p;
	if ((rc = pl_db_tx(db, NULL, plan_create_fn, &t)) != PL_OK)
		return rc;
	*out = t.plan;
	return PL_OK;
}

static int
plan_update_fn(pl_db *db, void *arg)
{
	plan_tx *t = arg;
	const Parley__Billing__V1__UpdatePlanRequest *in = t->upd;
	billing_plan *p;
	PGresult *r;

	r = EXEC(db,
	         "SELECT " PLAN_COLS " FROM billing.plans p WHERE p.id = $1 "
	         "FOR UPDATE",
	         in->id);
	if (!ok(r))
		return fail(t->call, r, "read the plan");
	if (PQntuples(r) == 0) {
		PQclear(r);
		return pl_call_error(t->call, PL_NOT_FOUND, "plan %s not found",
		                     in->id);
	}
	p = plan_from_row(t->call->arena, r, 0, 0);
	PQclear(r);
	if (p == NULL)
		return PL_RESOURCE_EXHAUSTED;
	if ((t->mask & BILLING_M_DEFAULT) && !in->is_default && p->is_default)
		return pl_call_error(
		        t->call, PL_FAILED_PRECONDITION,
		        "plan %s is the default: make another plan the default "
		        "instead",
		        p->code);
	if ((t->mask & BILLING_M_ARCHIVED) && in->archived &&
	    (p->is_default ||
	     ((t->mask & BILLING_M_DEFAULT) && in->is_default)))
		return pl_call_error(t->call, PL_FAILED_PRECONDITION,
		                     "the default plan cannot be archived");
	if (t->mask & BILLING_M_NAME)
		p->name = in->name;
	if (t->mask & BILLING_M_DESC)
		p->description = in->description;
	if (t->mask & BILLING_M_PRICE)
		p->price_minor = in->price_minor;
	if (t->mask & BILLING_M_TRIAL)
		p->trial_days = in->trial_days;
	if (t->mask & BILLING_M_PUBLIC)
		p->is_public = in->is_public;
	if (t->mask & BILLING_M_DEFAULT)
		p->is_default = in->is_default;
	if (t->mask & BILLING_M_ARCHIVED)
		p->archived = in->archived;
	if ((t->mask & BILLING_M_LIMITS) && in->limits != NULL)
		p->limits = in->limits;
	if ((t->mask & BILLING_M_FEATURES) && in->features != NULL)
		p->features = in->features;
	if (t->mask & BILLING_M_OVERAGE) {
		p->n_overage = in->n_overage;
		p->overage = in->overage;
	}
	if ((t->mask & BILLING_M_LIMITS) && in->limits == NULL) {
		static Parley__Billing__V1__Limits none =
		        PARLEY__BILLING__V1__LIMITS__INIT;
		p->limits = &none; // named and empty: every limit 0
	}
	if ((t->mask & BILLING_M_FEATURES) && in->features == NULL) {
		static Parley__Billing__V1__Features none =
		        PARLEY__BILLING__V1__FEATURES__INIT;
		p->features = &none;
	}
	t->plan = p;
	return plan_write(db, t, false);
}

int
billing_store_plan_update(pl_call *call, pl_db *db,
                          const Parley__Billing__V1__UpdatePlanRequest *in,
                          unsigned mask, billing_plan **out)
{
	plan_tx t = { .call = call, .upd = in, .mask = mask };
	int rc;

	if ((rc = pl_db_tx(db, NULL, plan_update_fn, &t)) != PL_OK)
		return rc;
	*out = t.plan;
	return PL_OK;
}

int
billing_store_plan_by_code(pl_call *call, pl_db *db, const char *code,
                           billing_plan **out)
{
	PGresult *r = EXEC(db,
	                   "SELECT " PLAN_COLS
	                   " FROM billing.plans p WHERE p.code = $1",
	                   code);

	*out = NULL;
	if (!ok(r))
		return fail(call, r, "read the plan");
	if (PQntuples(r) == 1)
		*out = plan_from_row(call->arena, r, 0, 0);
	PQclear(r);
	return PL_OK;
}

int
billing_store_plans_list(pl_call *call, pl_db *db, bool internal, bool archived,
                         const char *after_code, int limit, billing_plan ***out,
                         size_t *n)
{
	char *lim = i64s(call->arena, limit);
	PGresult *r = EXEC(
	        db,
	        "SELECT " PLAN_COLS " FROM billing.plans p "
	        "WHERE ($1 OR p.is_public) AND ($2 OR NOT p.archived) "
	        "AND p.code > $3 ORDER BY p.code LIMIT $4",
	        internal ? "t" : "f", archived ? "t" : "f", after_code, lim);

	if (!ok(r))
		return fail(call, r, "list plans");
	*n = 0;
	*out = pl_arena_zalloc(call->arena,
	                       (size_t)(PQntuples(r) + 1) * sizeof(**out));
	for (int i = 0; *out != NULL && i < PQntuples(r); i++)
		(*out)[(*n)++] = plan_from_row(call->arena, r, i, 0);
	PQclear(r);
	return *out ? PL_OK : PL_RESOURCE_EXHAUSTED;
}

// Subscriptions -------------------------------------------------------------

#define SUB_COLS                                                                                                                                                                                                           \
	"s.id, s.tenant_id, s.plan_id, p.code, s.status, " TS(                                                                                                                                                             \
	        "s.current_"                                                                                                                                                                                               \
	        "period_start_"                                                                                                                                                                                            \
	        "at") ", " TS("s.current_period_end_at") ", " TS("s.trial_"                                                                                                                                                \
	                                                         "end_at") ","                                                                                                                                             \
	                                                                   " "                                                                                                                                             \
	                                                                   "s"                                                                                                                                             \
	                                                                   "."                                                                                                                                             \
	                                                                   "c"                                                                                                                                             \
	                                                                   "a"                                                                                                                                             \
	                                                                   "n"                                                                                                                                             \
	                                                                   "c"                                                                                                                                             \
	                                                                   "e"                                                                                                                                             \
	                                                                   "l"                                                                                                                                             \
	                                                                   "_"                                                                                                                                             \
	                                                                   "a"                                                                                                                                             \
	                                                                   "t"                                                                                                                                             \
	                                                                   "_"                                                                                                                                             \
	                                                                   "p"                                                                                                                                             \
	                                                                   "e"                                                                                                                                             \
	                                                                   "r"                                                                                                                                             \
	                                                                   "i"                                                                                                                                             \
	                                                                   "o"                                                                                                                                             \
	                                                                   "d"                                                                                                                                             \
	                                                                   "_"                                                                                                                                             \
	                                                                   "e"                                                                                                                                             \
	                                                                   "n"                                                                                                                                             \
	                                                                   "d"                                                                                                                                             \
	                                                                   ","                                                                                                                                             \
	                                                                   " " TS("s.canceled_at") ", " TS(                                                                                                                \
	                                                                           "s.past_due_since_at") ", "                                                                                                             \
	                                                                                                  "s.provider_"                                                                                                    \
	                                                                                                  "customer_id,"                                                                                                   \
	                                                                                                  " s.provider_"                                                                                                   \
	                                                                                                  "subscription"                                                                                                   \
	                                                                                                  "_id, " TS(                                                                                                      \
	                                                                                                          "s"                                                                                                      \
	                                                                                                          "."                                                                                                      \
	                                                                                                          "s"                                                                                                      \
	                                                                                                          "t"                                                                                                      \
	                                                                                                          "a"                                                                                                      \
	                                                                                                          "r"                                                                                                      \
	                                                                                                          "t"                                                                                                      \
	                                                                                                          "e"                                                                                                      \
	                                                                                                          "d"                                                                                                      \
	                                                                                                          "_"                                                                                                      \
	                                                                                                          "a"                                                                                                      \
	                                                                                                          "t") ", " TS("s.created_at") ", " TS("s.updated_at") ", " EP("s.current_period_start_at") ", " EP("s."   \
	                                                                                                                                                                                                            "curr" \
	                                                                                                                                                                                                            "ent_" \
	                                                                                                                                                                                                            "peri" \
	                                                                                                                                                                                                            "od_"  \
	                                                                                                                                                                                                            "end_" \
	                                                                                                                                                                                                            "at") ", " EP("s.trial_end_at") ", " EP("s.anchor_date::timestamp AT TIME ZONE 'UTC'") ", " EP("s.canceled_at") ", s.period_plan_id"
#define SUB_NCOLS 22

// What the store needs besides the proto fields.
typedef struct sub_times {
	int64_t start, end, trial_end, anchor, canceled; // ms; 0 = none
	char *period_plan_id;
} sub_times;

static billing_sub *
sub_from_row(pl_arena *a, const PGresult *r, int row, int c, sub_times *tm)
{
	billing_sub *s = pl_arena_zalloc(a, sizeof(*s));

	if (s == NULL)
		return NULL;
	parley__billing__v1__subscription__init(s);
	s->id = scol(a, r, row, c + 0);
	s->tenant_id = scol(a, r, row, c + 1);
	s->plan_id = scol(a, r, row, c + 2);
	s->plan_code = scol(a, r, row, c + 3);
	s->status =
	        (Parley__Billing__V1__SubscriptionStatus)billing_status_parse(
	                PQgetvalue(r, row, c + 4));
	s->current_period_start_at = scol(a, r, row, c + 5);
	s->current_period_end_at = scol(a, r, row, c + 6);
	s->trial_end_at = scol(a, r, row, c + 7);
	s->cancel_at_period_end = bcol(r, row, c + 8);
	s->canceled_at = scol(a, r, row, c + 9);
	s->past_due_since_at = scol(a, r, row, c + 10);
	s->provider_customer_id = scol(a, r, row, c + 11);
	s->provider_subscription_id = scol(a, r, row, c + 12);
	s->started_at = scol(a, r, row, c + 13);
	s->created_at = scol(a, r, row, c + 14);
	s->updated_at = scol(a, r, row, c + 15);
	if (tm != NULL) {
		tm->start = icol(r, row, c + 16);
		tm->end = icol(r, row, c + 17);
		tm->trial_end = icol(r, row, c + 18);
		tm->anchor = icol(r, row, c + 19);
		tm->canceled = icol(r, row, c + 20);
		tm->period_plan_id = scol(a, r, row, c + 21);
	}
	return s;
}

typedef struct sub_tx {
	pl_call *call;
	pl_arena *arena;
	billing_state *st;
	const char *tenant;
	billing_sub *sub;
	billing_plan *plan;
	sub_times tm;
} sub_tx;

// Reads the tenant's subscription and current plan (FOR UPDATE when lock).
static int
sub_read(pl_db *db, sub_tx *t, bool lock)
{
	PGresult *r = EXEC(
	        db,
	        lock ? "SELECT " SUB_COLS ", " PLAN_COLS
	               " FROM billing.subscriptions s JOIN billing.plans p ON "
	               "p.id = s.plan_id WHERE s.tenant_id = $1 FOR UPDATE OF s"
	             : "SELECT " SUB_COLS ", " PLAN_COLS
	               " FROM billing.subscriptions s JOIN billing.plans p ON "
	               "p.id = s.plan_id WHERE s.tenant_id = $1",
	        t->tenant);

	t->sub = NULL;
	t->plan = NULL;
	if (!ok(r))
		return fail(t->call, r, "read the subscription");
	if (PQntuples(r) == 1) {
		t->sub = sub_from_row(t->arena, r, 0, 0, &t->tm);
		t->plan = plan_from_row(t->arena, r, 0, SUB_NCOLS);
	}
	PQclear(r);
	return PL_OK;
}

static int
sub_get_fn(pl_db *db, void *arg)
{
	return sub_read(db, arg, false);
}

int
billing_store_sub_get(pl_call *call, pl_db *db, const char *tenant,
                      billing_sub **sub, billing_plan **plan,
                      int64_t *anchor_ms)
{
	sub_tx t = { .call = call, .arena = call->arena, .tenant = tenant };
	int rc;

	if ((rc = pl_db_tx(db, tenant, sub_get_fn, &t)) != PL_OK)
		return rc;
	*sub = t.sub;
	*plan = t.plan;
	*anchor_ms = t.tm.anchor;
	return PL_OK;
}

typedef struct usage_tx {
	pl_call *call;
	const char *tenant;
	int64_t day, month;
	Parley__Billing__V1__UsageCounts *used;
} usage_tx;

static int
usage_fn(pl_db *db, void *arg)
{
	usage_tx *t = arg;
	PGresult *r = EXEC(
	        db,
	        "SELECT metric, period_kind, used FROM billing.usage_counters "
	        "WHERE tenant_id = $1 AND ((period_kind = 'day' AND "
	        "period_start = to_timestamp($2)) OR (period_kind = 'month' "
	        "AND "
	        "period_start = to_timestamp($3)))",
	        t->tenant, i64s(t->call->arena, t->day),
	        i64s(t->call->arena, t->month));

	if (!ok(r))
		return fail(t->call, r, "read usage");
	for (int i = 0; i < PQntuples(r); i++) {
		const char *m = PQgetvalue(r, i, 0);
		bool day = strcmp(PQgetvalue(r, i, 1), "day") == 0;
		int64_t v = icol(r, i, 2);
		if (strcmp(m, "messages") == 0) {
			if (day)
				t->used->messages_per_day = v;
			else
				t->used->messages_per_month = v;
		} else if (strcmp(m, "campaigns") == 0) {
			if (day)
				t->used->campaigns_per_day = v;
			else
				t->used->campaigns_per_month = v;
		} else if (!day) {
			t->used->ai_tokens_per_month = v;
		}
	}
	PQclear(r);
	return PL_OK;
}

int
billing_store_usage(pl_call *call, pl_db *db, const char *tenant,
                    int64_t day_start, int64_t month_start,
                    Parley__Billing__V1__UsageCounts *used)
{
	usage_tx t = { call, tenant, day_start, month_start, used };
	return pl_db_tx(db, tenant, usage_fn, &t);
}

// Reservation ---------------------------------------------------------------

void
billing_reserve_row(const PGresult *r, int row, int col,
                    billing_reserve_result *out)
{
	memset(out, 0, sizeof(*out));
	snprintf(out->outcome, sizeof(out->outcome), "%s",
	         PQgetvalue(r, row, col));
	snprintf(out->reservation_id, sizeof(out->reservation_id), "%s",
	         PQgetvalue(r, row, col + 1));
	out->remaining_day = icol(r, row, col + 2);
	out->remaining_month = icol(r, row, col + 3);
	out->overage = icol(r, row, col + 4);
	out->replayed = bcol(r, row, col + 5);
	snprintf(out->refusal, sizeof(out->refusal), "%s",
	         PQgetvalue(r, row, col + 6));
	out->day_limit = icol(r, row, col + 7);
	out->month_limit = icol(r, row, col + 8);
}

// Runs the statement `name` (sql) prepared on db's connection: the hot path
// skips parsing and planning its outer statement on every call. A statement
// is prepared the first time it meets a connection (pl_db records which
// names its present connection has; a worker's pl_db moves between RPC
// threads, so the record cannot be per thread: it was, and about one batch
// in two paid a second round trip and a logged "already exists" error); a
// connection that lost it (a reconnect at the same address) answers 26000
// and gets it again. Inside a transaction, or when preparing fails, it is
// run unprepared.
PGresult *
billing_exec_prepared(pl_db *db, const char *name, const char *sql, int n,
                      const char *const *params)
{
	PGconn *c;
	PGresult *r;

	if (pl_db_in_tx(db) || (c = pl_db_conn(db)) == NULL)
		return pl_db_exec(db, sql, n, params);
	for (int attempt = 0; attempt < 2; attempt++) {
		if (!pl_db_prepare(db, name, sql, n))
			return pl_db_exec(db, sql, n, params);
		r = PQexecPrepared(c, name, n, params, NULL, NULL, 0);
		if (PQstatus(c) != CONNECTION_OK) {
			// Lost: let pl_db_exec reconnect and retry it.
			PQclear(r);
			pl_db_set_prepared(db, name, false);
			return pl_db_exec(db, sql, n, params);
		}
		if (!pl_db_forget_if_gone(db, name, r))
			return r;
		PQclear(r);
	}
	return pl_db_exec(db, sql, n, params);
}

#define RESERVE_SQL                                                            \
	"SELECT outcome, reservation_id, remaining_day, remaining_month, "     \
	"overage, replayed, refusal, day_limit, month_limit FROM "             \
	"billing.reserve_usage($1, $2, $3, $4, $5, $6)"

// One round trip for a new key: billing.reserve_usage (002_fast_reserve.sql)
// decides and stores the answer. A key already used makes it fail with a
// unique violation that changed nothing; the stored answer is then read with
// billing.reserve_replay. If that finds no row (the key's row was pruned in
// between), reserving is tried once more.
int
billing_store_reserve(pl_db *db, const char *tenant, const char *metric,
                      int64_t amount, const char *key, bool emit,
                      billing_reserve_result *out)
{
	char id[PL_UUID_STRLEN + 1], amt[24];
	PGresult *r;
	int rc;

	snprintf(amt, sizeof(amt), "%" PRId64, amount);
	for (int attempt = 0; attempt < 2; attempt++) {
		pl_uuid7_str(id);
		r = billing_exec_prepared(
		        db, "billing_reserve", RESERVE_SQL, 6,
		        (const char *const[]){ tenant, metric, amt, key, id,
		                               emit ? "t" : "f" });
		rc = pl_db_result_status(r);
		if (rc == PL_ALREADY_EXISTS) {
			PQclear(r);
			r = EXEC(db,
			         "SELECT outcome, reservation_id, "
			         "remaining_day, remaining_month, overage, "
			         "replayed, refusal, day_limit, month_limit "
			         "FROM billing.reserve_replay($1, $2, $3, $4)",
			         tenant, metric, amt, key);
			rc = pl_db_result_status(r);
			if (rc == PL_OK && PQntuples(r) == 1 &&
			    strcmp(PQgetvalue(r, 0, 0), "not_found") == 0) {
				PQclear(r);
				continue;
			}
		}
		if (rc != PL_OK || PQntuples(r) != 1) {
			pl_error("could not reserve usage: %s",
			         r ? PQresultErrorMessage(r) : "no connection");
			PQclear(r);
			return rc != PL_OK ? rc : PL_INTERNAL;
		}
		billing_reserve_row(r, 0, 0, out);
		PQclear(r);
		return PL_OK;
	}
	pl_error("could not reserve usage: key %s neither new nor stored", key);
	return PL_ABORTED;
}

int
billing_store_release(pl_db *db, const char *tenant, const char *key,
                      int64_t amount, bool *found, int64_t *released,
                      int64_t *remaining)
{
	char amt[24];
	PGresult *r;
	int rc;

	snprintf(amt, sizeof(amt), "%" PRId64, amount);
	r = EXEC(db,
	         "SELECT outcome, released, remaining FROM "
	         "billing.release_usage($1, $2, $3)",
	         tenant, key, amt);
	if ((rc = pl_db_result_status(r)) != PL_OK || PQntuples(r) != 1) {
		pl_error("could not release usage: %s",
		         r ? PQresultErrorMessage(r) : "no connection");
		PQclear(r);
		return rc != PL_OK ? rc : PL_INTERNAL;
	}
	*found = strcmp(PQgetvalue(r, 0, 0), "ok") == 0;
	*released = icol(r, 0, 1);
	*remaining = icol(r, 0, 2);
	PQclear(r);
	return PL_OK;
}

// History and events --------------------------------------------------------

static int
history_add(pl_call *call, pl_db *db, pl_arena *a, const char *tenant,
            const char *sub_id, const char *from_plan, const char *to_plan,
            const char *from_status, const char *to_status, const char *reason,
            const char *actor)
{
	char id[PL_UUID_STRLEN + 1];
	PGresult *r;

	(void)a;
	pl_uuid7_str(id);
	r = EXEC(
	        db,
	        "INSERT INTO billing.subscription_changes (tenant_id, id, "
	        "subscription_id, from_plan_code, to_plan_code, from_status, "
	        "to_status, reason, actor_user_id) VALUES ($1, $2, $3, $4, $5, "
	        "$6, $7, $8, $9)",
	        tenant, id, sub_id, from_plan, to_plan, from_status, to_status,
	        reason, actor ? actor : "");
	if (!ok(r))
		return fail(call, r, "record the subscription change");
	PQclear(r);
	return PL_OK;
}

// Writes an event to the outbox for dests (nothing when none configured).
static int
emit(pl_db *db, const char *const *dests, const char *tenant, const char *type,
     json_t *payload)
{
	char *text;
	pl_outbox_event ev = { 0 };
	int rc;

	if (dests == NULL || dests[0] == NULL) {
		json_decref(payload);
		return PL_OK;
	}
	text = json_dumps(payload, JSON_COMPACT);
	json_decref(payload);
	if (text == NULL)
		return PL_RESOURCE_EXHAUSTED;
	ev.tenant_id = tenant;
	ev.type = type;
	ev.payload_json = text;
	rc = pl_outbox_add(db, "billing", dests, &ev, NULL);
	free(text);
	return rc;
}

static int
status_event(pl_db *db, billing_state *st, const char *tenant, const char *plan,
             const char *status, const char *prev, const char *reason)
{
	return emit(db, st->dest_tenants, tenant, "subscription.status_changed",
	            json_pack("{s:s, s:s, s:s, s:s}", "plan_code", plan,
	                      "status", status, "previous_status", prev,
	                      "reason", reason));
}

// Change plan ---------------------------------------------------------------

typedef struct change_tx {
	sub_tx s;
	billing_change_req *req;
} change_tx;

static billing_line *
proration_line(pl_arena *a, const char *desc, int64_t amount, int64_t from,
               int64_t to)
{
	billing_line *l = pl_arena_zalloc(a, sizeof(*l));
	if (l == NULL)
		return NULL;
	parley__billing__v1__invoice_line__init(l);
	l->kind = BILLING_LK(PRORATION);
	l->description = (char *)desc;
	l->quantity = 1;
	l->unit_price_minor = amount;
	l->amount_minor = amount;
	l->period_start_at = tss(a, from);
	l->period_end_at = tss(a, to);
	return l;
}

static int
change_fn(pl_db *db, void *arg)
{
	change_tx *t = arg;
	billing_change_req *req = t->req;
	pl_call *call = t->s.call;
	pl_arena *a = call->arena;
	billing_plan *np, *op;
	const char *from_status;
	int64_t now = req->now_ms, bill_from, left, total;
	int64_t credit = 0, charge = 0;
	bool in_trial;
	int rc;
	PGresult *r;

	req->n_lines = 0;
	req->proration = 0;
	if ((rc = sub_read(db, &t->s, true)) != PL_OK)
		return rc;
	if (t->s.sub == NULL)
		return pl_call_error(call, PL_NOT_FOUND,
		                     "tenant has no subscription");
	if (t->s.sub->status == BILLING_ST(CANCELED) ||
	    t->s.sub->status == BILLING_ST(EXPIRED))
		return pl_call_error(
		        call, PL_FAILED_PRECONDITION,
		        "could not change plan: the subscription is %s",
		        billing_status_name(t->s.sub->status));
	op = t->s.plan;
	if ((rc = billing_store_plan_by_code(call, db, req->plan_code, &np)) !=
	    PL_OK)
		return rc;
	if (np == NULL || (!np->is_public && !req->may_internal))
		return pl_call_violation(call, "plan_code", "unknown plan %s",
		                         req->plan_code);
	if (np->archived)
		return pl_call_error(call, PL_FAILED_PRECONDITION,
		                     "plan %s is archived", np->code);
	if (strcmp(np->id, op->id) == 0)
		return pl_call_error(call, PL_FAILED_PRECONDITION,
		                     "the subscription is already on plan %s",
		                     np->code);

	in_trial = t->s.tm.trial_end > now;
	bill_from = now;
	if (t->s.tm.trial_end > bill_from)
		bill_from = t->s.tm.trial_end;
	total = (t->s.tm.end - t->s.tm.start) / 1000;
	left = bill_from < t->s.tm.end ? (t->s.tm.end - bill_from) / 1000 : 0;
	if (left > total)
		left = total;
	if (!in_trial && left > 0 && total > 0) {
		credit = billing_prorate(
		        billing_period_fee(op->price_minor, op->interval), left,
		        total);
		charge = billing_prorate(
		        billing_period_fee(np->price_minor, np->interval), left,
		        total);
		if (credit < 0 || charge < 0)
			return pl_call_error(call, PL_INVALID_ARGUMENT,
			                     "proration out of range");
		if ((credit != 0 || charge != 0) &&
		    strcmp(op->currency, np->currency) != 0)
			return pl_call_error(call, PL_FAILED_PRECONDITION,
			                     "could not change from %s to %s "
			                     "mid-period: the "
			                     "currencies differ (%s, %s)",
			                     op->code, np->code, op->currency,
			                     np->currency);
	}
	snprintf(req->currency, sizeof(req->currency), "%s",
	         credit || charge ? op->currency : np->currency);
	if (credit != 0)
		req->lines[req->n_lines++] = proration_line(
		        a, pl_arena_printf(a, "Unused time on %s", op->name),
		        -credit, bill_from, t->s.tm.end);
	if (charge != 0)
		req->lines[req->n_lines++] = proration_line(
		        a, pl_arena_printf(a, "Remaining time on %s", np->name),
		        charge, bill_from, t->s.tm.end);
	req->proration = charge - credit;
	req->plan = np;
	if (req->dry_run) {
		req->sub = t->s.sub;
		return PL_OK;
	}

	r = EXEC(db,
	         "UPDATE billing.subscriptions SET plan_id = $2, "
	         "period_plan_id = CASE WHEN $3 THEN $2::uuid ELSE "
	         "period_plan_id "
	         "END, updated_at = now() WHERE tenant_id = $1",
	         req->tenant, np->id, in_trial ? "t" : "f");
	if (!ok(r))
		return fail(call, r, "change the plan");
	PQclear(r);
	for (size_t i = 0; i < req->n_lines; i++) {
		billing_line *l = req->lines[i];
		char id[PL_UUID_STRLEN + 1];
		pl_uuid7_str(id);
		l->id = pl_arena_strdup(a, id);
		r = EXEC(db,
		         "INSERT INTO billing.invoice_lines (tenant_id, id, "
		         "subscription_id, kind, description, quantity, "
		         "unit_price_minor, amount_minor, currency, "
		         "period_start_at, period_end_at) VALUES ($1, $2, $3, "
		         "'proration', $4, 1, $5, $5, $6, $7, $8)",
		         req->tenant, l->id, t->s.sub->id, l->description,
		         i64s(a, l->amount_minor), op->currency,
		         l->period_start_at, l->period_end_at);
		if (!ok(r))
			return fail(call, r, "record the proration");
		PQclear(r);
	}
	from_status = billing_status_name(t->s.sub->status);
	if ((rc = history_add(call, db, a, req->tenant, t->s.sub->id, op->code,
	                      np->code, from_status, from_status,
	                      "plan_changed", req->actor)) != PL_OK)
		return rc;
	if ((rc = emit(db, t->s.st->dest_analytics, req->tenant,
	               "subscription.plan_changed",
	               json_pack("{s:s, s:s, s:I, s:s}", "plan_code", np->code,
	                         "previous_plan_code", op->code,
	                         "proration_minor", (json_int_t)req->proration,
	                         "currency", req->currency))) != PL_OK)
		return rc;
	if ((rc = sub_read(db, &t->s, false)) != PL_OK)
		return rc;
	req->sub = t->s.sub;
	return PL_OK;
}

int
billing_store_change_plan(pl_call *call, pl_db *db, billing_state *st,
                          billing_change_req *req)
{
	change_tx t = { .s = { .call = call,
		               .arena = call->arena,
		               .st = st,
		               .tenant = req->tenant },
		        .req = req };
	return pl_db_tx(db, req->tenant, change_fn, &t);
}

// Cancel and resume ---------------------------------------------------------

typedef struct cancel_tx {
	sub_tx s;
	const char *actor, *reason;
	bool at_end, resume;
} cancel_tx;

static int
cancel_fn(pl_db *db, void *arg)
{
	cancel_tx *t = arg;
	pl_call *call = t->s.call;
	const char *prev, *next, *why;
	PGresult *r;
	int rc;

	if ((rc = sub_read(db, &t->s, true)) != PL_OK)
		return rc;
	if (t->s.sub == NULL)
		return pl_call_error(call, PL_NOT_FOUND,
		                     "tenant has no subscription");
	prev = billing_status_name(t->s.sub->status);
	if (t->s.sub->status == BILLING_ST(CANCELED) ||
	    t->s.sub->status == BILLING_ST(EXPIRED))
		return pl_call_error(call, PL_FAILED_PRECONDITION,
		                     "the subscription is already %s", prev);
	if (t->resume) {
		if (!t->s.sub->cancel_at_period_end)
			return pl_call_error(
			        call, PL_FAILED_PRECONDITION,
			        "the subscription is not set to cancel");
		r = EXEC(db,
		         "UPDATE billing.subscriptions SET "
		         "cancel_at_period_end = "
		         "false, updated_at = now() WHERE tenant_id = $1",
		         t->s.tenant);
		next = prev;
		why = "resumed";
	} else if (t->at_end) {
		if (t->s.sub->cancel_at_period_end)
			return PL_OK; // already scheduled: same answer
		r = EXEC(db,
		         "UPDATE billing.subscriptions SET "
		         "cancel_at_period_end = "
		         "true, updated_at = now() WHERE tenant_id = $1",
		         t->s.tenant);
		next = prev;
		why = "cancel_scheduled";
	} else {
		r = EXEC(
		        db,
		        "UPDATE billing.subscriptions SET status = 'canceled', "
		        "canceled_at = now(), updated_at = now() WHERE "
		        "tenant_id = "
		        "$1",
		        t->s.tenant);
		next = "canceled";
		why = "canceled";
	}
	if (!ok(r))
		return fail(call, r, "update the subscription");
	PQclear(r);
	if ((rc = history_add(call, db, call->arena, t->s.tenant, t->s.sub->id,
	                      t->s.plan->code, t->s.plan->code, prev, next,
	                      t->reason && t->reason[0] ? t->reason : why,
	                      t->actor)) != PL_OK)
		return rc;
	if (strcmp(prev, next) != 0 &&
	    (rc = status_event(db, t->s.st, t->s.tenant, t->s.plan->code, next,
	                       prev, why)) != PL_OK)
		return rc;
	return sub_read(db, &t->s, false);
}

int
billing_store_cancel(pl_call *call, pl_db *db, billing_state *st,
                     const char *tenant, const char *actor, bool at_period_end,
                     const char *reason, billing_sub **out)
{
	cancel_tx t = { .s = { .call = call,
		               .arena = call->arena,
		               .st = st,
		               .tenant = tenant },
		        .actor = actor,
		        .reason = reason,
		        .at_end = at_period_end };
	int rc = pl_db_tx(db, tenant, cancel_fn, &t);
	*out = t.s.sub;
	return rc;
}

int
billing_store_resume(pl_call *call, pl_db *db, billing_state *st,
                     const char *tenant, const char *actor, billing_sub **out)
{
	cancel_tx t = { .s = { .call = call,
		               .arena = call->arena,
		               .st = st,
		               .tenant = tenant },
		        .actor = actor,
		        .resume = true };
	int rc = pl_db_tx(db, tenant, cancel_fn, &t);
	*out = t.s.sub;
	return rc;
}

// History -------------------------------------------------------------------

typedef struct hist_tx {
	pl_call *call;
	const char *tenant, *before;
	int limit;
	billing_change **out;
	size_t n;
} hist_tx;

static int
hist_fn(pl_db *db, void *arg)
{
	hist_tx *t = arg;
	pl_arena *a = t->call->arena;
	PGresult *r = EXEC(
	        db,
	        "SELECT id, subscription_id, from_plan_code, to_plan_code, "
	        "from_status, to_status, reason, actor_user_id, " TS(
	                "created_at") " FROM billing.subscription_changes "
	                              "WHERE tenant_id = $1 AND "
	                              "($2 = '' OR id < $2::uuid) ORDER BY id "
	                              "DESC LIMIT $3",
	        t->tenant, t->before, i64s(a, t->limit));

	if (!ok(r))
		return fail(t->call, r, "list the subscription history");
	t->n = 0;
	t->out = pl_arena_zalloc(a,
	                         (size_t)(PQntuples(r) + 1) * sizeof(*t->out));
	for (int i = 0; t->out != NULL && i < PQntuples(r); i++) {
		billing_change *c = pl_arena_zalloc(a, sizeof(*c));
		if (c == NULL)
			break;
		parley__billing__v1__subscription_change__init(c);
		c->id = scol(a, r, i, 0);
		c->subscription_id = scol(a, r, i, 1);
		c->from_plan_code = scol(a, r, i, 2);
		c->to_plan_code = scol(a, r, i, 3);
		c->from_status = (Parley__Billing__V1__SubscriptionStatus)
		        billing_status_parse(PQgetvalue(r, i, 4));
		c->to_status = (Parley__Billing__V1__SubscriptionStatus)
		        billing_status_parse(PQgetvalue(r, i, 5));
		if ((int)c->from_status < 0)
			c->from_status = 0;
		if ((int)c->to_status < 0)
			c->to_status = 0;
		c->reason = scol(a, r, i, 6);
		c->actor_user_id = scol(a, r, i, 7);
		c->created_at = scol(a, r, i, 8);
		t->out[t->n++] = c;
	}
	PQclear(r);
	return PL_OK;
}

int
billing_store_history(pl_call *call, pl_db *db, const char *tenant,
                      const char *before_id, int limit,
                      Parley__Billing__V1__SubscriptionChange ***out, size_t *n)
{
	hist_tx t = { call, tenant, before_id, limit, NULL, 0 };
	int rc = pl_db_tx(db, tenant, hist_fn, &t);
	*out = t.out;
	*n = t.n;
	return rc;
}

// Invoices ------------------------------------------------------------------

#define INV_COLS                                                                                           \
	"i.id, i.number, i.tenant_id, i.subscription_id, i.status, "                                       \
	"i.currency, i.subtotal_minor, i.total_minor, " TS(                                                \
	        "i.period_start_"                                                                          \
	        "at") ", " TS("i."                                                                         \
	                      "per"                                                                        \
	                      "iod"                                                                        \
	                      "_en"                                                                        \
	                      "d_"                                                                         \
	                      "at") ", " TS("i.issued_at") ", " TS("i.due_at") ", " TS("i.paid_at") ", "   \
	                                                                                            "i."   \
	                                                                                            "prov" \
	                                                                                            "ider" \
	                                                                                            "_inv" \
	                                                                                            "oice" \
	                                                                                            "_id," \
	                                                                                            " " TS("i.created_at")

static int
inv_status(const char *s)
{
	if (strcmp(s, "open") == 0)
		return BILLING_IV(OPEN);
	if (strcmp(s, "paid") == 0)
		return BILLING_IV(PAID);
	if (strcmp(s, "void") == 0)
		return BILLING_IV(VOID);
	return BILLING_IV(UNCOLLECTIBLE);
}

static billing_invoice *
inv_from_row(pl_arena *a, const PGresult *r, int row)
{
	billing_invoice *v = pl_arena_zalloc(a, sizeof(*v));
	if (v == NULL)
		return NULL;
	parley__billing__v1__invoice__init(v);
	v->id = scol(a, r, row, 0);
	v->number = icol(r, row, 1);
	v->tenant_id = scol(a, r, row, 2);
	v->subscription_id = scol(a, r, row, 3);
	v->status = (Parley__Billing__V1__InvoiceStatus)inv_status(
	        PQgetvalue(r, row, 4));
	v->currency = scol(a, r, row, 5);
	v->subtotal_minor = icol(r, row, 6);
	v->total_minor = icol(r, row, 7);
	v->period_start_at = scol(a, r, row, 8);
	v->period_end_at = scol(a, r, row, 9);
	v->issued_at = scol(a, r, row, 10);
	v->due_at = scol(a, r, row, 11);
	v->paid_at = scol(a, r, row, 12);
	v->provider_invoice_id = scol(a, r, row, 13);
	v->created_at = scol(a, r, row, 14);
	return v;
}

static int
inv_lines(pl_call *call, pl_db *db, pl_arena *a, const char *tenant,
          billing_invoice *v)
{
	PGresult *r = EXEC(
	        db,
	        "SELECT id, kind, description, metric, quantity, "
	        "unit_price_minor, amount_minor, " TS(
	                "period_start_"
	                "at") ", " TS("period_end_at") " FROM "
	                                               "billing.invoice_lines "
	                                               "WHERE "
	                                               "tenant_id = $1 AND "
	                                               "invoice_id = $2 ORDER "
	                                               "BY id",
	        tenant, v->id);

	if (!ok(r))
		return fail(call, r, "read invoice lines");
	v->lines = pl_arena_zalloc(a, (size_t)(PQntuples(r) + 1) *
	                                      sizeof(*v->lines));
	for (int i = 0; v->lines != NULL && i < PQntuples(r); i++) {
		billing_line *l = pl_arena_zalloc(a, sizeof(*l));
		const char *k = PQgetvalue(r, i, 1);
		int m;
		if (l == NULL)
			break;
		parley__billing__v1__invoice_line__init(l);
		l->id = scol(a, r, i, 0);
		l->kind = strcmp(k, "plan_fee") == 0    ? BILLING_LK(PLAN_FEE)
		          : strcmp(k, "proration") == 0 ? BILLING_LK(PRORATION)
		                                        : BILLING_LK(OVERAGE);
		l->description = scol(a, r, i, 2);
		m = billing_metric_parse(PQgetvalue(r, i, 3));
		l->metric = m > 0 ? (Parley__Billing__V1__Metric)m : 0;
		l->quantity = icol(r, i, 4);
		l->unit_price_minor = icol(r, i, 5);
		l->amount_minor = icol(r, i, 6);
		l->period_start_at = scol(a, r, i, 7);
		l->period_end_at = scol(a, r, i, 8);
		v->lines[v->n_lines++] = l;
	}
	PQclear(r);
	return PL_OK;
}

typedef struct inv_tx {
	pl_call *call;
	const char *tenant, *status, *id;
	int64_t before;
	int limit;
	billing_invoice **list;
	size_t n;
	billing_invoice *one;
} inv_tx;

static int
inv_list_fn(pl_db *db, void *arg)
{
	inv_tx *t = arg;
	pl_arena *a = t->call->arena;
	PGresult *r = EXEC(
	        db,
	        "SELECT " INV_COLS
	        " FROM billing.invoices i WHERE i.tenant_id = "
	        "$1 AND ($2 = '' OR i.status = $2) AND i.number < $3 ORDER BY "
	        "i.number DESC LIMIT $4",
	        t->tenant, t->status, i64s(a, t->before), i64s(a, t->limit));

	if (!ok(r))
		return fail(t->call, r, "list invoices");
	t->n = 0;
	t->list = pl_arena_zalloc(a, (size_t)(PQntuples(r) + 1) *
	                                     sizeof(*t->list));
	for (int i = 0; t->list != NULL && i < PQntuples(r); i++)
		t->list[t->n++] = inv_from_row(a, r, i);
	PQclear(r);
	return PL_OK;
}

int
billing_store_invoices_list(pl_call *call, pl_db *db, const char *tenant,
                            const char *status, int64_t before_number,
                            int limit, billing_invoice ***out, size_t *n)
{
	inv_tx t = { .call = call,
		     .tenant = tenant,
		     .status = status,
		     .before = before_number,
		     .limit = limit };
	int rc = pl_db_tx(db, tenant, inv_list_fn, &t);
	*out = t.list;
	*n = t.n;
	return rc;
}

static int
inv_get_fn(pl_db *db, void *arg)
{
	inv_tx *t = arg;
	PGresult *r = EXEC(db,
	                   "SELECT " INV_COLS
	                   " FROM billing.invoices i WHERE i.tenant_id = "
	                   "$1 AND i.id = $2",
	                   t->tenant, t->id);

	t->one = NULL;
	if (!ok(r))
		return fail(t->call, r, "read the invoice");
	if (PQntuples(r) == 1)
		t->one = inv_from_row(t->call->arena, r, 0);
	PQclear(r);
	if (t->one == NULL)
		return PL_OK;
	return inv_lines(t->call, db, t->call->arena, t->tenant, t->one);
}

int
billing_store_invoice_get(pl_call *call, pl_db *db, const char *tenant,
                          const char *id, billing_invoice **out)
{
	inv_tx t = { .call = call, .tenant = tenant, .id = id };
	int rc = pl_db_tx(db, tenant, inv_get_fn, &t);
	*out = t.one;
	return rc;
}

// Closing periods -----------------------------------------------------------

typedef struct close_tx {
	sub_tx s;
	int64_t at;
	billing_invoice ***out;
	size_t *n, *cap;
	size_t n0;
} close_tx;

static int
push_invoice(close_tx *t, billing_invoice *v)
{
	if (*t->n == *t->cap) {
		size_t nc = *t->cap ? *t->cap * 2 : 8;
		billing_invoice **p =
		        pl_arena_alloc(t->s.arena, nc * sizeof(*p));
		if (p == NULL)
			return PL_RESOURCE_EXHAUSTED;
		if (*t->n)
			memcpy(p, *t->out, *t->n * sizeof(*p));
		*t->out = p;
		*t->cap = nc;
	}
	(*t->out)[(*t->n)++] = v;
	return PL_OK;
}

static int
add_line(pl_call *call, pl_db *db, pl_arena *a, const char *tenant,
         const char *sub_id, const char *inv_id, const char *kind,
         const char *desc, const char *metric, int64_t qty, int64_t unit,
         int64_t amount, const char *cur, int64_t from, int64_t to)
{
	char id[PL_UUID_STRLEN + 1];
	PGresult *r;

	pl_uuid7_str(id);
	r = EXEC(
	        db,
	        "INSERT INTO billing.invoice_lines (tenant_id, id, invoice_id, "
	        "subscription_id, kind, description, metric, quantity, "
	        "unit_price_minor, amount_minor, currency, period_start_at, "
	        "period_end_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, "
	        "$10, "
	        "$11, $12, $13)",
	        tenant, id, inv_id, sub_id, kind, desc, metric, i64s(a, qty),
	        i64s(a, unit), i64s(a, amount), cur, tss(a, from), tss(a, to));
	if (!ok(r))
		return fail(call, r, "add an invoice line");
	PQclear(r);
	return PL_OK;
}

// Issues the invoice of the current period [start, end) and moves the
// subscription to the next one. The subscription row is locked.
static int
close_one(pl_db *db, close_tx *t)
{
	pl_call *call = t->s.call;
	pl_arena *a = t->s.arena;
	billing_sub *sub = t->s.sub;
	billing_plan *cur = t->s.plan, *pp = NULL;
	sub_times *tm = &t->s.tm;
	const char *tenant = t->s.tenant;
	char inv_id[PL_UUID_STRLEN + 1];
	int64_t fee, from, to, total = 0, number, next_s, next_e;
	const char *prev = billing_status_name(sub->status), *next = prev;
	const char *why = NULL;
	bool expire = false;
	PGresult *r;
	int rc;

	r = EXEC(db,
	         "SELECT " PLAN_COLS " FROM billing.plans p WHERE p.id = $1",
	         tm->period_plan_id);
	if (!ok(r) || PQntuples(r) != 1)
		return fail(call, r, "read the period's plan");
	pp = plan_from_row(a, r, 0, 0);
	PQclear(r);
	if (pp == NULL)
		return PL_RESOURCE_EXHAUSTED;

	r = EXEC(db, "UPDATE billing.invoice_counter SET last_number = "
	             "last_number + 1 "
	             "WHERE id = 1 RETURNING last_number");
	if (!ok(r) || PQntuples(r) != 1)
		return fail(call, r, "number the invoice");
	number = icol(r, 0, 0);
	PQclear(r);
	pl_uuid7_str(inv_id);
	r = EXEC(
	        db,
	        "INSERT INTO billing.invoices (tenant_id, id, number, "
	        "subscription_id, status, currency, subtotal_minor, "
	        "total_minor, "
	        "period_start_at, period_end_at, issued_at, due_at) VALUES "
	        "($1, "
	        "$2, $3, $4, 'open', $5, 0, 0, $6, $7, now(), now() + interval "
	        "'14 days')",
	        tenant, inv_id, i64s(a, number), sub->id, pp->currency,
	        tss(a, tm->start), tss(a, tm->end));
	if (!ok(r))
		return fail(call, r, "issue the invoice");
	PQclear(r);

	// The plan fee for the part of the period not in trial and not after
	// an immediate cancellation.
	from = tm->start > tm->trial_end ? tm->start : tm->trial_end;
	to = tm->canceled && tm->canceled < tm->end ? tm->canceled : tm->end;
	fee = billing_period_fee(pp->price_minor, pp->interval);
	if (to > from)
		fee = billing_prorate(fee, (to - from) / 1000,
		                      (tm->end - tm->start) / 1000);
	else
		fee = 0;
	if ((rc = add_line(call, db, a, tenant, sub->id, inv_id, "plan_fee",
	                   pl_arena_printf(a, "%s plan", pp->name), "", 1, fee,
	                   fee, pp->currency, tm->start, tm->end)) != PL_OK)
		return rc;
	total += fee;

	// Prorations waiting for this invoice.
	r = EXEC(db,
	         "UPDATE billing.invoice_lines SET invoice_id = $3 WHERE "
	         "tenant_id "
	         "= $1 AND subscription_id = $2 AND invoice_id IS NULL "
	         "RETURNING "
	         "amount_minor",
	         tenant, sub->id, inv_id);
	if (!ok(r))
		return fail(call, r, "attach prorations");
	for (int i = 0; i < PQntuples(r); i++)
		total += icol(r, i, 0);
	PQclear(r);

	// Overage on soft monthly limits, at the current plan's prices.
	for (int m = 1; m <= 3; m++) {
		int64_t price = plan_overage(cur, m),
		        lim = plan_month_limit(cur, m);
		int64_t used, over, amount;
		if (price < 0 || lim < 0)
			continue;
		r = EXEC(db,
		         "SELECT used FROM billing.usage_counters WHERE "
		         "tenant_id = "
		         "$1 AND metric = $2 AND period_kind = 'month' AND "
		         "period_start = $3",
		         tenant, billing_metric_name(m), tss(a, tm->start));
		if (!ok(r))
			return fail(call, r, "read usage");
		used = PQntuples(r) == 1 ? icol(r, 0, 0) : 0;
		PQclear(r);
		over = used - lim;
		if (over <= 0)
			continue;
		amount = billing_overage_charge(over, price);
		if (amount < 0)
			return pl_call_error(call, PL_INTERNAL,
			                     "overage out of range");
		if ((rc = add_line(
		             call, db, a, tenant, sub->id, inv_id, "overage",
		             pl_arena_printf(a, "%s over the monthly limit",
		                             billing_metric_name(m)),
		             billing_metric_name(m), over, price, amount,
		             pp->currency, tm->start, tm->end)) != PL_OK)
			return rc;
		total += amount;
	}

	r = EXEC(db,
	         "UPDATE billing.invoices SET subtotal_minor = $3, total_minor "
	         "= $3, "
	         "status = CASE WHEN $3::bigint <= 0 THEN 'paid' ELSE 'open' "
	         "END, "
	         "paid_at = CASE WHEN $3::bigint <= 0 THEN now() END WHERE "
	         "tenant_id = $1 AND id = $2",
	         tenant, inv_id, i64s(a, total));
	if (!ok(r))
		return fail(call, r, "total the invoice");
	PQclear(r);
	if ((rc = emit(db, t->s.st->dest_analytics, tenant, "invoice.issued",
	               json_pack("{s:s, s:I, s:I, s:s}", "invoice_id", inv_id,
	                         "number", (json_int_t)number, "total_minor",
	                         (json_int_t)total, "currency",
	                         pp->currency))) != PL_OK)
		return rc;

	// The next period, and what ends with this one.
	billing_month_period(tm->anchor / 1000, tm->end / 1000, &next_s,
	                     &next_e);
	if (sub->status == BILLING_ST(CANCELED) || sub->cancel_at_period_end) {
		expire = true;
		next = "expired";
		why = "period_ended_canceled";
	} else if (sub->status == BILLING_ST(TRIALING) &&
	           tm->trial_end <= next_s * 1000) {
		next = "active";
		why = "trial_ended";
	}
	r = EXEC(
	        db,
	        "UPDATE billing.subscriptions SET current_period_start_at = "
	        "to_timestamp($2), current_period_end_at = to_timestamp($3), "
	        "period_plan_id = plan_id, status = $4, canceled_at = "
	        "coalesce(canceled_at, CASE WHEN $5 THEN current_period_end_at "
	        "END), updated_at = now() WHERE tenant_id = $1",
	        tenant, i64s(a, next_s), i64s(a, next_e), next,
	        expire ? "t" : "f");
	if (!ok(r))
		return fail(call, r, "advance the subscription");
	PQclear(r);
	if (why != NULL) {
		if ((rc = history_add(call, db, a, tenant, sub->id, cur->code,
		                      cur->code, prev, next, why, NULL)) !=
		    PL_OK)
			return rc;
		if ((rc = status_event(db, t->s.st, tenant, cur->code, next,
		                       prev, why)) != PL_OK)
			return rc;
	}
	r = EXEC(db,
	         "SELECT " INV_COLS
	         " FROM billing.invoices i WHERE i.tenant_id = "
	         "$1 AND i.id = $2",
	         tenant, inv_id);
	if (!ok(r) || PQntuples(r) != 1)
		return fail(call, r, "read the invoice");
	billing_invoice *v = inv_from_row(a, r, 0);
	PQclear(r);
	if (v == NULL)
		return PL_RESOURCE_EXHAUSTED;
	if ((rc = inv_lines(call, db, a, tenant, v)) != PL_OK)
		return rc;
	return push_invoice(t, v);
}

static int
close_fn(pl_db *db, void *arg)
{
	close_tx *t = arg;
	int rc;

	*t->n = t->n0; // a retried transaction starts over
	for (int i = 0; i < 24; i++) {
		if ((rc = sub_read(db, &t->s, true)) != PL_OK)
			return rc;
		if (t->s.sub == NULL ||
		    t->s.sub->status == BILLING_ST(EXPIRED) ||
		    t->s.tm.end > t->at)
			return PL_OK;
		if ((rc = close_one(db, t)) != PL_OK)
			return rc;
	}
	return PL_OK;
}

int
billing_store_reap_leases(pl_db *db, const char *tenant, int64_t grace_ms)
{
	char grace[24];
	PGresult *r;
	int n;

	snprintf(grace, sizeof(grace), "%" PRId64, grace_ms);
	r = EXEC(db, "SELECT billing.lease_reap($1, $2)", tenant, grace);
	if (!ok(r) || PQntuples(r) != 1) {
		pl_warn("could not reap usage leases: %s",
		        r ? PQresultErrorMessage(r) : "no connection");
		PQclear(r);
		return -1;
	}
	n = atoi(PQgetvalue(r, 0, 0));
	PQclear(r);
	if (n > 0)
		pl_info("reaped %d usage leases not returned by their replica",
		        n);
	return n;
}

int
billing_store_close(pl_call *call, pl_db *db, billing_state *st,
                    const char *tenant, int64_t at_ms, billing_invoice ***out,
                    size_t *n, size_t *cap)
{
	close_tx t = { .s = { .call = call,
		              .arena = call->arena,
		              .st = st,
		              .tenant = tenant },
		       .at = at_ms,
		       .out = out,
		       .n = n,
		       .cap = cap,
		       .n0 = *n };
	// A dead replica's leases of the period hold units its reservations
	// did not use: they must not be billed as overage.
	billing_store_reap_leases(db, tenant, 0);
	return pl_db_tx(db, tenant, close_fn, &t);
}

typedef struct due_tx {
	pl_arena *a;
	int64_t at;
	char **list;
	size_t n;
} due_tx;

static int
due_fn(pl_db *db, void *arg)
{
	due_tx *t = arg;
	PGresult *r = EXEC(
	        db,
	        "SELECT tenant_id FROM billing.subscriptions WHERE "
	        "current_period_end_at <= $1 AND status <> 'expired' ORDER BY "
	        "current_period_end_at LIMIT 1000",
	        tss(t->a, t->at));

	if (!ok(r))
		return fail(NULL, r, "list due subscriptions");
	t->n = 0;
	t->list = pl_arena_zalloc(t->a,
	                          (size_t)(PQntuples(r) + 1) * sizeof(char *));
	for (int i = 0; t->list != NULL && i < PQntuples(r); i++)
		t->list[t->n++] = scol(t->a, r, i, 0);
	PQclear(r);
	return PL_OK;
}

int
billing_store_due_tenants(pl_db *db, pl_arena *a, int64_t at_ms, char ***out,
                          size_t *n)
{
	due_tx t = { a, at_ms, NULL, 0 };
	// Service-level: finding due subscriptions crosses tenants ("*").
	int rc = pl_db_tx(db, "*", due_fn, &t);
	*out = t.list;
	*n = t.n;
	return rc;
}

typedef struct grace_tx {
	billing_state *st;
	pl_arena *a;
	int64_t at;
	int n;
} grace_tx;

static int
grace_fn(pl_db *db, void *arg)
{
	grace_tx *t = arg;
	PGresult *r = EXEC(
	        db,
	        "UPDATE billing.subscriptions SET grace_expired_at = now(), "
	        "updated_at = now() WHERE status = 'past_due' AND "
	        "grace_expired_at IS NULL AND past_due_since_at <= "
	        "$1::timestamptz "
	        "- make_interval(days => $2::int) RETURNING tenant_id, " TS(
	                "past_due_since_at"),
	        tss(t->a, t->at), i64s(t->a, t->st->grace_days));
	int rc = PL_OK;

	if (!ok(r))
		return fail(NULL, r, "sweep past-due subscriptions");
	t->n = PQntuples(r);
	for (int i = 0; i < PQntuples(r) && rc == PL_OK; i++)
		rc = emit(db, t->st->dest_tenants, PQgetvalue(r, i, 0),
		          "subscription.grace_expired",
		          json_pack("{s:s}", "past_due_since_at",
		                    PQgetvalue(r, i, 1)));
	PQclear(r);
	return rc;
}

int
billing_store_grace_sweep(pl_db *db, billing_state *st, int64_t at_ms)
{
	pl_arena a;
	grace_tx t = { st, &a, at_ms, 0 };
	int rc;

	pl_arena_init(&a, 0, 0);
	// Service-level: the sweep crosses tenants ("*").
	rc = pl_db_tx(db, "*", grace_fn, &t);
	pl_arena_fini(&a);
	return rc == PL_OK ? t.n : -1;
}

static int
prune_fn(pl_db *db, void *arg)
{
	char days[24];
	PGresult *r;

	snprintf(days, sizeof(days), "%" PRId64, *(int64_t *)arg);
	r = EXEC(db,
	         "DELETE FROM billing.usage_reservations WHERE created_at < "
	         "now() - "
	         "make_interval(days => $1::int)",
	         days);
	if (!ok(r))
		return fail(NULL, r, "prune reservations");
	*(int64_t *)arg = strtoll(PQcmdTuples(r), NULL, 10);
	PQclear(r);
	return PL_OK;
}

int
billing_store_prune_reservations(pl_db *db, int64_t ttl_days)
{
	int64_t v = ttl_days;
	// Service-level: retention crosses tenants ("*").
	if (pl_db_tx(db, "*", prune_fn, &v) != PL_OK)
		return -1;
	return (int)v;
}

// Payment events ------------------------------------------------------------

typedef struct pay_tx {
	sub_tx s;
	billing_payment *ev;
} pay_tx;

static int
pay_fn(pl_db *db, void *arg)
{
	pay_tx *t = arg;
	billing_payment *ev = t->ev;
	pl_call *call = t->s.call;
	pl_arena *a = call->arena;
	const char *prev, *next = NULL, *why = NULL;
	bool paid;
	PGresult *r;
	int rc;

	ev->duplicate = false;
	ev->applied = false;
	r = EXEC(db,
	         "INSERT INTO billing.payment_events (event_id, type, "
	         "tenant_id, signed_at, payload) VALUES ($1, $2, $3, "
	         "to_timestamp($4), $5) ON CONFLICT (event_id) DO NOTHING",
	         ev->event_id, ev->type, ev->tenant_id, i64s(a, ev->signed_at),
	         ev->payload);
	if (!ok(r))
		return fail(call, r, "record the payment event");
	ev->duplicate = strcmp(PQcmdTuples(r), "0") == 0;
	PQclear(r);
	if (ev->duplicate || ev->tenant_id == NULL)
		return PL_OK;
	paid = strcmp(ev->type, "invoice.paid") == 0 ||
	       strcmp(ev->type, "invoice.payment_succeeded") == 0;
	if (!paid && strcmp(ev->type, "invoice.payment_failed") != 0)
		return PL_OK;
	if ((rc = sub_read(db, &t->s, true)) != PL_OK)
		return rc;
	if (t->s.sub == NULL)
		return PL_OK;
	// The provider's customer and subscription the invoice names: kept
	// on the subscription (GetSubscription shows them) once its event
	// is verified; an event without them keeps what was there.
	if (ev->provider_customer_id != NULL ||
	    ev->provider_subscription_id != NULL) {
		r = EXEC(
		        db,
		        "UPDATE billing.subscriptions SET provider_customer_id "
		        "= coalesce($2, provider_customer_id), "
		        "provider_subscription_id = coalesce($3, "
		        "provider_subscription_id), updated_at = now() WHERE "
		        "tenant_id = $1 AND (provider_customer_id, "
		        "provider_subscription_id) IS DISTINCT FROM "
		        "(coalesce($2, provider_customer_id), coalesce($3, "
		        "provider_subscription_id))",
		        ev->tenant_id, ev->provider_customer_id,
		        ev->provider_subscription_id);
		if (!ok(r))
			return fail(call, r, "record the provider's ids");
		PQclear(r);
	}
	prev = billing_status_name(t->s.sub->status);
	if (paid && ev->invoice_id != NULL) {
		r = EXEC(db,
		         "UPDATE billing.invoices SET status = 'paid', paid_at "
		         "= now(), "
		         "provider_invoice_id = $3 WHERE tenant_id = $1 AND id "
		         "= $2 "
		         "AND status = 'open' RETURNING number, total_minor, "
		         "currency",
		         ev->tenant_id, ev->invoice_id,
		         ev->provider_invoice_id ? ev->provider_invoice_id
		                                 : "");
		if (!ok(r))
			return fail(call, r, "mark the invoice paid");
		if (PQntuples(r) == 1) {
			ev->applied = true;
			rc = emit(db, t->s.st->dest_analytics, ev->tenant_id,
			          "invoice.paid",
			          json_pack("{s:s, s:I, s:I, s:s}",
			                    "invoice_id", ev->invoice_id,
			                    "number", (json_int_t)icol(r, 0, 0),
			                    "total_minor",
			                    (json_int_t)icol(r, 0, 1),
			                    "currency", PQgetvalue(r, 0, 2)));
			if (rc != PL_OK) {
				PQclear(r);
				return rc;
			}
		}
		PQclear(r);
	}
	if (paid && t->s.sub->status == BILLING_ST(PAST_DUE)) {
		next = "active";
		why = "payment_succeeded";
		r = EXEC(db,
		         "UPDATE billing.subscriptions SET status = 'active', "
		         "past_due_since_at = NULL, grace_expired_at = NULL, "
		         "updated_at = now() WHERE tenant_id = $1",
		         ev->tenant_id);
	} else if (!paid && (t->s.sub->status == BILLING_ST(ACTIVE) ||
	                     t->s.sub->status == BILLING_ST(TRIALING))) {
		next = "past_due";
		why = "payment_failed";
		r = EXEC(
		        db,
		        "UPDATE billing.subscriptions SET status = 'past_due', "
		        "past_due_since_at = now(), updated_at = now() WHERE "
		        "tenant_id = $1",
		        ev->tenant_id);
	} else {
		r = NULL;
	}
	if (next != NULL) {
		if (!ok(r))
			return fail(call, r, "update the subscription");
		PQclear(r);
		ev->applied = true;
		if ((rc = history_add(call, db, a, ev->tenant_id, t->s.sub->id,
		                      t->s.plan->code, t->s.plan->code, prev,
		                      next, why, NULL)) != PL_OK)
			return rc;
		if ((rc = status_event(db, t->s.st, ev->tenant_id,
		                       t->s.plan->code, next, prev, why)) !=
		    PL_OK)
			return rc;
	}
	if (ev->applied) {
		r = EXEC(db,
		         "UPDATE billing.payment_events SET applied = true "
		         "WHERE "
		         "event_id = $1",
		         ev->event_id);
		if (!ok(r))
			return fail(call, r, "record the payment event");
		PQclear(r);
	}
	return PL_OK;
}

int
billing_store_payment_event(pl_call *call, pl_db *db, billing_state *st,
                            billing_payment *ev)
{
	pay_tx t = { .s = { .call = call,
		            .arena = call->arena,
		            .st = st,
		            .tenant = ev->tenant_id },
		     .ev = ev };
	// An event naming no tenant is only recorded (payment_events has no
	// RLS); otherwise the work runs as that tenant.
	return pl_db_tx(db, ev->tenant_id, pay_fn, &t);
}

// Consumed events -----------------------------------------------------------

typedef struct deliver_tx {
	pl_call *call;
	billing_state *st;
	const billing_delivered *evs;
	size_t n;
	int accepted, dups, ignored;
} deliver_tx;

static int
deliver_fn(pl_db *db, void *arg)
{
	deliver_tx *t = arg;
	PGresult *r;
	int rc;

	t->accepted = t->dups = t->ignored = 0;
	for (size_t i = 0; i < t->n; i++) {
		const billing_delivered *e = &t->evs[i];
		char id[PL_UUID_STRLEN + 1], hid[PL_UUID_STRLEN + 1];

		r = EXEC(db,
		         "INSERT INTO billing.processed_events (event_id, "
		         "tenant_id, "
		         "type) VALUES ($1, $2, $3) ON CONFLICT (event_id) DO "
		         "NOTHING",
		         e->id, e->tenant_id, e->type);
		if (!ok(r))
			return fail(t->call, r, "record the event");
		if (strcmp(PQcmdTuples(r), "0") == 0) {
			PQclear(r);
			t->dups++;
			continue;
		}
		PQclear(r);
		if (strcmp(e->type, "tenant.created") != 0) {
			t->ignored++;
			continue;
		}
		t->accepted++;
		pl_uuid7_str(id);
		// The plan named by the event when it exists and is open to
		// new subscriptions, else the default plan.
		r = EXEC(
		        db,
		        "INSERT INTO billing.subscriptions (tenant_id, id, "
		        "plan_id, "
		        "period_plan_id, status, anchor_date, "
		        "current_period_start_at, "
		        "current_period_end_at, trial_end_at, started_at) "
		        "SELECT $1, $2, p.id, p.id, CASE WHEN p.trial_days > 0 "
		        "THEN "
		        "'trialing' ELSE 'active' END, (now() AT TIME ZONE "
		        "'UTC')::date, mp.period_start, mp.period_end, CASE "
		        "WHEN "
		        "p.trial_days > 0 THEN now() + make_interval(days => "
		        "p.trial_days) END, now() FROM billing.plans p, "
		        "billing.month_period((now() AT TIME ZONE "
		        "'UTC')::date, now()) "
		        "mp WHERE p.id = coalesce((SELECT id FROM "
		        "billing.plans WHERE "
		        "code = $3 AND NOT archived), (SELECT id FROM "
		        "billing.plans "
		        "WHERE is_default)) ON CONFLICT (tenant_id) DO NOTHING "
		        "RETURNING status, (SELECT code FROM billing.plans "
		        "WHERE id = "
		        "plan_id)",
		        e->tenant_id, id, e->plan_code ? e->plan_code : "");
		if (!ok(r))
			return fail(t->call, r, "start the subscription");
		if (PQntuples(r) == 0) {
			PQclear(r);
			continue; // already subscribed, or no default plan
		}
		const char *status = PQgetvalue(r, 0, 0);
		const char *code = PQgetvalue(r, 0, 1);
		(void)hid;
		rc = history_add(t->call, db, t->call->arena, e->tenant_id, id,
		                 "", code, "", status,
		                 strcmp(status, "trialing") == 0
		                         ? "trial_started"
		                         : "started",
		                 NULL);
		if (rc == PL_OK)
			rc = status_event(db, t->st, e->tenant_id, code, status,
			                  "", "tenant_created");
		PQclear(r);
		if (rc != PL_OK)
			return rc;
	}
	return PL_OK;
}

int
billing_store_deliver(pl_call *call, pl_db *db, billing_state *st,
                      const billing_delivered *evs, size_t n, int *accepted,
                      int *dups, int *ignored)
{
	deliver_tx t = { call, st, evs, n, 0, 0, 0 };
	// Service-level: one batch holds many tenants' events ("*").
	int rc = pl_db_tx(db, "*", deliver_fn, &t);
	*accepted = t.accepted;
	*dups = t.dups;
	*ignored = t.ignored;
	return rc;
}
