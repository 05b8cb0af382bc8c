// One function per RPC of parley.analytics.v1.Analytics, the handler table
// and the service definition.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "analytics.h"
#include "pl/id.h"
#include "pl/log.h"

#define A(x) Parley__Analytics__V1__##x
#define E(x) PARLEY__ANALYTICS__V1__##x

static const char *
tenant_of(pl_call *call)
{
	const char *t = call->principal->tenant_id;
	return t != NULL && t[0] != '\0' ? t : NULL;
}

static int
no_tenant(pl_call *call)
{
	return pl_call_error(call, PL_PERMISSION_DENIED,
	                     "the caller acts for no tenant");
}

// Track.

static int
track(pl_call *call, const void *inp, void *outp)
{
	const A(TrackRequest) *in = inp;
	A(TrackResponse) *out = outp;
	json_t **pl;
	int64_t *us, now = analytics_now_us();
	int rc = PL_OK, accepted = 0;
	size_t n = in->n_events, done = 0;

	if (n > ANALYTICS_MAX_BATCH)
		return pl_call_violation(call, "events",
		                         "at most %d events per batch, got %zu",
		                         ANALYTICS_MAX_BATCH, n);
	if (n == 0)
		return PL_OK;
	pl = calloc(n, sizeof(*pl));
	us = calloc(n, sizeof(*us));
	if (pl == NULL || us == NULL) {
		rc = pl_call_error(call, PL_RESOURCE_EXHAUSTED,
		                   "out of memory");
		goto out_free;
	}
	for (; done < n; done++) {
		const char *field;
		char msg[200], f[80];
		if (!analytics_event_check(in->events[done], now, &pl[done],
		                           &us[done], &field, msg,
		                           sizeof(msg))) {
			snprintf(f, sizeof(f), "events[%zu].%s", done, field);
			rc = pl_call_violation(call, f, "%s", msg);
			goto out_free;
		}
	}
	rc = analytics_store_track(pl_call_db(call), in->events, pl, us, n,
	                           &accepted, call);
	if (rc == PL_OK) {
		out->accepted = accepted;
		out->duplicates = (int32_t)n - accepted;
	}
out_free:
	for (size_t i = 0; pl != NULL && i < done; i++)
		json_decref(pl[i]);
	free(pl);
	free(us);
	return rc;
}

// Ranges and filters.

static int
parse_range(pl_call *call, const char *tenant, const char *start,
            const char *end, int max_days, const A(Filter) * f,
            analytics_range *r)
{
	memset(r, 0, sizeof(*r));
	r->tenant_id = tenant;
	if (start == NULL || start[0] == '\0')
		return pl_call_violation(call, "start_at", "is required");
	if (!analytics_time_parse(start, &r->start_us))
		return pl_call_violation(call, "start_at",
		                         "must be an RFC 3339 time");
	if (end == NULL || end[0] == '\0')
		return pl_call_violation(call, "end_at", "is required");
	if (!analytics_time_parse(end, &r->end_us))
		return pl_call_violation(call, "end_at",
		                         "must be an RFC 3339 time");
	if (r->end_us <= r->start_us)
		return pl_call_violation(call, "end_at",
		                         "must be after start_at");
	if (r->end_us - r->start_us > (int64_t)max_days * 86400 * 1000000)
		return pl_call_violation(call, "end_at",
		                         "the range may span at most %d days",
		                         max_days);
	if (f != NULL) {
		const char *ids[3] = { f->channel_id, f->agent_id,
			               f->campaign_id };
		const char *names[3] = { "filter.channel_id", "filter.agent_id",
			                 "filter.campaign_id" };
		for (int i = 0; i < 3; i++)
			if (ids[i] != NULL && ids[i][0] != '\0' &&
			    !pl_uuid_valid(ids[i]))
				return pl_call_violation(call, names[i],
				                         "must be a UUID");
		r->channel_id = f->channel_id;
		r->agent_id = f->agent_id;
		r->campaign_id = f->campaign_id;
	}
	return PL_OK;
}

static int
n_filters(const analytics_range *r, const char **key, const char **value)
{
	int n = 0;
	*key = "";
	*value = "";
	if (r->channel_id && r->channel_id[0]) {
		n++;
		*key = "channel";
		*value = r->channel_id;
	}
	if (r->agent_id && r->agent_id[0]) {
		n++;
		*key = "agent";
		*value = r->agent_id;
	}
	if (r->campaign_id && r->campaign_id[0]) {
		n++;
		*key = "campaign";
		*value = r->campaign_id;
	}
	return n;
}

// Sums of the totals over a range: whole days from rollups (when one
// filter at most), the partial days at the edges (or everything, when the
// rollups cannot serve) from raw events mapped as at intake.
typedef struct sums_arg {
	analytics_sums sums;
	analytics_sums_filter f;
} sums_arg;

static void
sums_row(void *arg, const char *dv, const char *metric, int64_t v)
{
	(void)dv;
	analytics_sums_add(arg, metric, v);
}

static void
sums_raw(void *arg, int64_t bucket, const char *type,
         const Parley__Rpc__V1__EventDimensions *d, json_t *payload)
{
	(void)bucket;
	analytics_map_event(type, d, payload, analytics_sums_emit, arg);
}

static int
range_sums(pl_db *db, const analytics_range *r, analytics_split *s,
           analytics_sums *sums)
{
	const char *fk, *fv;
	int nf = n_filters(r, &fk, &fv);
	analytics_sums_filter f = { sums, "", "" };
	int rc;

	if ((rc = analytics_store_split(db, r, s)) != PL_OK)
		return rc;
	if (s->has_days && nf <= 1) {
		rc = analytics_store_rollups(db, r->tenant_id, fk, fv, s->d0,
		                             s->d1, NULL, sums_row, sums);
		if (rc != PL_OK)
			return rc;
		return analytics_store_raw(db, r, r->start_us, s->t0_us,
		                           s->t1_us, r->end_us, NULL, NULL,
		                           NULL, sums_raw, &f);
	}
	return analytics_store_raw(db, r, r->start_us, r->end_us, 0, 0, NULL,
	                           NULL, NULL, sums_raw, &f);
}

typedef struct summary_arg {
	const analytics_range *r;
	analytics_split s;
	analytics_sums sums;
	int64_t contacts;
	A(DurationStats) bot, human;
} summary_arg;

static int
summary_tx(pl_db *db, void *arg)
{
	summary_arg *a = arg;
	const char *fk, *fv;
	int rc;

	analytics_sums_fini(&a->sums);
	if ((rc = range_sums(db, a->r, &a->s, &a->sums)) != PL_OK)
		return rc;
	if ((rc = analytics_store_unique_contacts(
	             db, a->r, &a->s,
	             a->s.has_days && n_filters(a->r, &fk, &fv) == 0,
	             &a->contacts)) != PL_OK)
		return rc;
	return analytics_store_frt_both(db, a->r, &a->bot, &a->human);
}

static A(DurationStats) * dup_stats(pl_arena *arena, const A(DurationStats) * s)
{
	A(DurationStats) *d = pl_arena_alloc(arena, sizeof(*d));
	if (d != NULL) {
		parley__analytics__v1__duration_stats__init(d);
		d->count = s->count;
		d->median_ms = s->median_ms;
		d->p90_ms = s->p90_ms;
	}
	return d;
}

static int
summary(pl_call *call, const void *inp, void *outp)
{
	const A(SummaryRequest) *in = inp;
	A(SummaryResponse) *out = outp;
	const char *tenant = tenant_of(call);
	analytics_range r;
	summary_arg a;
	int rc;

	if (tenant == NULL)
		return no_tenant(call);
	if ((rc = parse_range(call, tenant, in->start_at, in->end_at,
	                      ANALYTICS_MAX_RANGE_DAYS, in->filter, &r)) !=
	    PL_OK)
		return rc;
	memset(&a, 0, sizeof(a));
	a.r = &r;
	parley__analytics__v1__duration_stats__init(&a.bot);
	parley__analytics__v1__duration_stats__init(&a.human);
	rc = pl_db_tx(pl_call_db(call), tenant, summary_tx, &a);
	if (rc != PL_OK) {
		analytics_sums_fini(&a.sums);
		return call->code
		               ? rc
		               : pl_call_error(call, rc,
		                               "could not compute the summary");
	}
	out->kpis = pl_arena_alloc(call->arena, sizeof(*out->kpis));
	if (out->kpis == NULL) {
		analytics_sums_fini(&a.sums);
		return pl_call_error(call, PL_RESOURCE_EXHAUSTED,
		                     "out of memory");
	}
	parley__analytics__v1__kpis__init(out->kpis);
	analytics_kpis_fill(out->kpis, &a.sums, call->arena);
	out->kpis->unique_contacts = a.contacts;
	out->kpis->first_response_bot = dup_stats(call->arena, &a.bot);
	out->kpis->first_response_human = dup_stats(call->arena, &a.human);
	out->time_zone = pl_arena_strdup(call->arena, a.s.tz);
	analytics_sums_fini(&a.sums);
	return PL_OK;
}

// Funnel.

typedef struct funnel_arg {
	const analytics_range *r;
	analytics_split s;
	analytics_sums sums;
} funnel_arg;

static int
funnel_tx(pl_db *db, void *arg)
{
	funnel_arg *a = arg;
	analytics_sums_fini(&a->sums);
	return range_sums(db, a->r, &a->s, &a->sums);
}

static int
funnel(pl_call *call, const void *inp, void *outp)
{
	const A(FunnelRequest) *in = inp;
	A(FunnelResponse) *out = outp;
	const char *tenant = tenant_of(call);
	static const char *const names[4] = { "conversation", "lead",
		                              "converted", "order" };
	static const char *const metrics[4] = { "conversations_started",
		                                "leads_created",
		                                "leads_converted", "orders" };
	analytics_range r;
	funnel_arg a;
	int rc;

	if (tenant == NULL)
		return no_tenant(call);
	if ((rc = parse_range(call, tenant, in->start_at, in->end_at,
	                      ANALYTICS_MAX_RANGE_DAYS, in->filter, &r)) !=
	    PL_OK)
		return rc;
	memset(&a, 0, sizeof(a));
	a.r = &r;
	rc = pl_db_tx(pl_call_db(call), tenant, funnel_tx, &a);
	if (rc != PL_OK) {
		analytics_sums_fini(&a.sums);
		return call->code
		               ? rc
		               : pl_call_error(call, rc,
		                               "could not compute the funnel");
	}
	out->steps = pl_arena_alloc(call->arena, 4 * sizeof(*out->steps));
	if (out->steps == NULL) {
		analytics_sums_fini(&a.sums);
		return pl_call_error(call, PL_RESOURCE_EXHAUSTED,
		                     "out of memory");
	}
	int64_t prev = 0;
	for (int i = 0; i < 4; i++) {
		A(FunnelStep) *st = pl_arena_alloc(call->arena, sizeof(*st));
		if (st == NULL) {
			analytics_sums_fini(&a.sums);
			return pl_call_error(call, PL_RESOURCE_EXHAUSTED,
			                     "out of memory");
		}
		parley__analytics__v1__funnel_step__init(st);
		st->name = (char *)names[i];
		st->count = analytics_sums_get(&a.sums, metrics[i]);
		st->rate = i == 0     ? 1.0
		           : prev > 0 ? (double)st->count / (double)prev
		                      : 0.0;
		prev = st->count;
		out->steps[out->n_steps++] = st;
	}
	analytics_sums_fini(&a.sums);
	return PL_OK;
}

// TimeSeries.

static const char *
metric_event_type(int m)
{
	switch (m) {
	case E(METRIC__METRIC_MESSAGES_IN):
		return "message.received";
	case E(METRIC__METRIC_MESSAGES_OUT):
	case E(METRIC__METRIC_MESSAGES_OUT_BOT):
	case E(METRIC__METRIC_MESSAGES_OUT_HUMAN):
		return "message.sent";
	case E(METRIC__METRIC_CONVERSATIONS_STARTED):
		return "conversation.started";
	case E(METRIC__METRIC_CONVERSATIONS_CLOSED):
	case E(METRIC__METRIC_BOT_RESOLVED):
		return "conversation.closed";
	case E(METRIC__METRIC_HANDOFFS):
		return "conversation.handoff";
	case E(METRIC__METRIC_LEADS_CREATED):
		return "lead.created";
	case E(METRIC__METRIC_LEADS_CONVERTED):
	case E(METRIC__METRIC_CONVERSION_VALUE_MINOR):
		return "lead.converted";
	case E(METRIC__METRIC_ORDERS):
	case E(METRIC__METRIC_REVENUE_MINOR):
		return "order.created";
	case E(METRIC__METRIC_CAMPAIGN_SENT):
	case E(METRIC__METRIC_CAMPAIGN_DELIVERED):
	case E(METRIC__METRIC_CAMPAIGN_READ):
	case E(METRIC__METRIC_CAMPAIGN_FAILED):
		return "message.status";
	case E(METRIC__METRIC_AI_REPLIES):
	case E(METRIC__METRIC_AI_TOKENS):
		return "agent.replied";
	case E(METRIC__METRIC_QUOTA_REFUSALS):
		return "usage.refused";
	default:
		return NULL;
	}
}

// The rollup names behind a metric (money needs its currency).
static int
metric_names(pl_call *call, int metric, const char *currency, char names[2][64],
             size_t *n, const char *field)
{
	const char *base = analytics_metric_name(metric);

	*n = 0;
	if (base == NULL)
		return pl_call_violation(call, field, "unknown metric");
	if (metric == E(METRIC__METRIC_AI_TOKENS)) {
		snprintf(names[0], 64, "ai_tokens_in");
		snprintf(names[1], 64, "ai_tokens_out");
		*n = 2;
		return PL_OK;
	}
	if (metric == E(METRIC__METRIC_REVENUE_MINOR) ||
	    metric == E(METRIC__METRIC_CONVERSION_VALUE_MINOR)) {
		if (currency == NULL || strlen(currency) != 3 ||
		    currency[0] < 'A' || currency[0] > 'Z' ||
		    currency[1] < 'A' || currency[1] > 'Z' ||
		    currency[2] < 'A' || currency[2] > 'Z')
			return pl_call_violation(
			        call, "currency",
			        "a money metric needs an ISO 4217 currency");
		snprintf(names[0], 64, "%s:%s", base, currency);
		*n = 1;
		return PL_OK;
	}
	snprintf(names[0], 64, "%s", base);
	*n = 1;
	return PL_OK;
}

typedef struct series_arg {
	const analytics_range *r;
	int metric;
	const char *gran;
	char names[2][64];
	size_t n_names;
	char *names_literal;
	char *types_literal;
	int64_t *buckets;
	int64_t *values;
	size_t n;
	pl_arena *arena;
	analytics_split s;
	const char *dim_key;   // TopN: group key
	analytics_sums groups; // TopN results
} series_arg;

static void
series_add(void *arg, int64_t bucket, int64_t v)
{
	series_arg *a = arg;
	size_t lo = 0, hi = a->n;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (a->buckets[mid] < bucket)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo < a->n && a->buckets[lo] == bucket)
		a->values[lo] += v;
}

typedef struct series_emit_arg {
	series_arg *a;
	int64_t bucket;
} series_emit_arg;

static bool
wanted(series_arg *a, const char *metric)
{
	for (size_t i = 0; i < a->n_names; i++)
		if (strcmp(a->names[i], metric) == 0)
			return true;
	return false;
}

static void
series_emit(void *arg, const char *metric, const char *dk, const char *dv,
            int64_t v)
{
	series_emit_arg *e = arg;
	(void)dv;
	if (dk[0] == '\0' && wanted(e->a, metric))
		series_add(e->a, e->bucket, v);
}

static void
series_raw(void *arg, int64_t bucket, const char *type,
           const Parley__Rpc__V1__EventDimensions *d, json_t *payload)
{
	series_emit_arg e = { arg, bucket };
	analytics_map_event(type, d, payload, series_emit, &e);
}

static int
series_tx(pl_db *db, void *arg)
{
	series_arg *a = arg;
	const char *fk, *fv;
	int nf = n_filters(a->r, &fk, &fv), rc;

	if ((rc = analytics_store_split(db, a->r, &a->s)) != PL_OK ||
	    (rc = analytics_store_buckets(db, a->r, a->gran, a->s.tz,
	                                  &a->buckets, &a->n, a->arena)) !=
	            PL_OK)
		return rc;
	a->values = pl_arena_zalloc(a->arena, (a->n + 1) * sizeof(int64_t));
	if (a->values == NULL)
		return PL_RESOURCE_EXHAUSTED;
	if (a->metric == E(METRIC__METRIC_UNIQUE_CONTACTS))
		return analytics_store_series_contacts(db, a->r, a->gran,
		                                       a->s.tz, series_add, a);
	if (a->metric == E(METRIC__METRIC_FIRST_RESPONSE_BOT_MS) ||
	    a->metric == E(METRIC__METRIC_FIRST_RESPONSE_HUMAN_MS))
		return analytics_store_series_frt(
		        db, a->r,
		        a->metric == E(METRIC__METRIC_FIRST_RESPONSE_BOT_MS)
		                ? "bot"
		                : "human",
		        a->gran, a->s.tz, series_add, a);
	if (strcmp(a->gran, "hour") == 0 && nf == 0) {
		// Whole hours from hourly_rollups when every rollup name of
		// the metric is kept by hour (money is not), the edges raw.
		int cols[2];
		size_t k;
		int64_t ha, hb;
		for (k = 0; k < a->n_names; k++)
			if ((cols[k] = analytics_hourly_index(a->names[k])) < 0)
				break;
		if (a->n_names > 0 && k == a->n_names) {
			rc = analytics_store_series_hourly(
			        db, a->r, a->s.tz, cols, a->n_names, &ha, &hb,
			        series_add, a);
			if (rc != PL_OK)
				return rc;
			return analytics_store_raw(db, a->r, a->r->start_us, ha,
			                           hb, a->r->end_us,
			                           a->types_literal, a->gran,
			                           a->s.tz, series_raw, a);
		}
	}
	if (strcmp(a->gran, "hour") != 0 && a->s.has_days && nf <= 1) {
		rc = analytics_store_series_rollups(
		        db, a->r->tenant_id, fk, fv, a->s.d0, a->s.d1,
		        a->names_literal, a->gran, a->s.tz, series_add, a);
		if (rc != PL_OK)
			return rc;
		return analytics_store_raw(db, a->r, a->r->start_us, a->s.t0_us,
		                           a->s.t1_us, a->r->end_us,
		                           a->types_literal, a->gran, a->s.tz,
		                           series_raw, a);
	}
	return analytics_store_raw(db, a->r, a->r->start_us, a->r->end_us, 0, 0,
	                           a->types_literal, a->gran, a->s.tz,
	                           series_raw, a);
}

static const char *
gran_name(int g)
{
	switch (g) {
	case E(GRANULARITY__GRANULARITY_HOUR):
		return "hour";
	case E(GRANULARITY__GRANULARITY_DAY):
		return "day";
	case E(GRANULARITY__GRANULARITY_WEEK):
		return "week";
	case E(GRANULARITY__GRANULARITY_MONTH):
		return "month";
	default:
		return NULL;
	}
}

static int
time_series(pl_call *call, const void *inp, void *outp)
{
	const A(TimeSeriesRequest) *in = inp;
	A(TimeSeriesResponse) *out = outp;
	const char *tenant = tenant_of(call);
	analytics_range r;
	series_arg a;
	int rc;

	if (tenant == NULL)
		return no_tenant(call);
	memset(&a, 0, sizeof(a));
	a.metric = in->metric;
	a.arena = call->arena;
	a.r = &r;
	if ((a.gran = gran_name(in->granularity)) == NULL)
		return pl_call_violation(call, "granularity",
		                         "must be hour, day, week or month");
	if ((rc = parse_range(call, tenant, in->start_at, in->end_at,
	                      strcmp(a.gran, "hour") == 0
	                              ? ANALYTICS_MAX_HOUR_DAYS
	                              : ANALYTICS_MAX_RANGE_DAYS,
	                      in->filter, &r)) != PL_OK)
		return rc;
	if (in->metric != E(METRIC__METRIC_UNIQUE_CONTACTS) &&
	    in->metric != E(METRIC__METRIC_FIRST_RESPONSE_BOT_MS) &&
	    in->metric != E(METRIC__METRIC_FIRST_RESPONSE_HUMAN_MS)) {
		const char *ptrs[2] = { a.names[0], a.names[1] };
		const char *type = metric_event_type(in->metric);
		if ((rc = metric_names(call, in->metric, in->currency, a.names,
		                       &a.n_names, "metric")) != PL_OK)
			return rc;
		a.names_literal = analytics_array_literal(ptrs, a.n_names);
		a.types_literal = analytics_array_literal(&type, 1);
		if (a.names_literal == NULL || a.types_literal == NULL) {
			rc = pl_call_error(call, PL_RESOURCE_EXHAUSTED,
			                   "out of memory");
			goto out_free;
		}
	}
	rc = pl_db_tx(pl_call_db(call), tenant, series_tx, &a);
	if (rc != PL_OK) {
		if (!call->code)
			pl_call_error(call, rc, "could not compute the series");
		goto out_free;
	}
	out->points =
	        pl_arena_alloc(call->arena, (a.n + 1) * sizeof(*out->points));
	if (out->points == NULL) {
		rc = pl_call_error(call, PL_RESOURCE_EXHAUSTED,
		                   "out of memory");
		goto out_free;
	}
	for (size_t i = 0; i < a.n; i++) {
		A(Point) *p = pl_arena_alloc(call->arena, sizeof(*p));
		char ts[32];
		if (p == NULL) {
			rc = pl_call_error(call, PL_RESOURCE_EXHAUSTED,
			                   "out of memory");
			goto out_free;
		}
		parley__analytics__v1__point__init(p);
		analytics_time_format_ms(a.buckets[i], ts);
		p->start_at = pl_arena_strdup(call->arena, ts);
		p->value = a.values[i];
		out->points[out->n_points++] = p;
	}
	out->time_zone = pl_arena_strdup(call->arena, a.s.tz);
out_free:
	free(a.names_literal);
	free(a.types_literal);
	return rc;
}

// TopN.

static void
top_row(void *arg, const char *dv, const char *metric, int64_t v)
{
	(void)metric;
	analytics_sums_add(&((series_arg *)arg)->groups, dv, v);
}

static void
top_emit(void *arg, const char *metric, const char *dk, const char *dv,
         int64_t v)
{
	series_arg *a = arg;
	if (strcmp(dk, a->dim_key) == 0 && wanted(a, metric))
		analytics_sums_add(&a->groups, dv, v);
}

static void
top_raw(void *arg, int64_t bucket, const char *type,
        const Parley__Rpc__V1__EventDimensions *d, json_t *payload)
{
	(void)bucket;
	analytics_map_event(type, d, payload, top_emit, arg);
}

static int
top_tx(pl_db *db, void *arg)
{
	series_arg *a = arg;
	const char *fk, *fv;
	int rc;

	analytics_sums_fini(&a->groups);
	if ((rc = analytics_store_split(db, a->r, &a->s)) != PL_OK)
		return rc;
	if (a->s.has_days && n_filters(a->r, &fk, &fv) == 0) {
		rc = analytics_store_rollups(db, a->r->tenant_id, a->dim_key,
		                             NULL, a->s.d0, a->s.d1,
		                             a->names_literal, top_row, a);
		if (rc != PL_OK)
			return rc;
		return analytics_store_raw(
		        db, a->r, a->r->start_us, a->s.t0_us, a->s.t1_us,
		        a->r->end_us, a->types_literal, NULL, NULL, top_raw, a);
	}
	return analytics_store_raw(db, a->r, a->r->start_us, a->r->end_us, 0, 0,
	                           a->types_literal, NULL, NULL, top_raw, a);
}

static int
top_n(pl_call *call, const void *inp, void *outp)
{
	const A(TopNRequest) *in = inp;
	A(TopNResponse) *out = outp;
	const char *tenant = tenant_of(call);
	analytics_range r;
	series_arg a;
	int rc, metric, limit;

	if (tenant == NULL)
		return no_tenant(call);
	memset(&a, 0, sizeof(a));
	a.r = &r;
	if ((a.dim_key = analytics_dimension_key(in->dimension)) == NULL)
		return pl_call_violation(call, "dimension", "is required");
	if (in->limit < 0 || in->limit > 100)
		return pl_call_violation(call, "limit",
		                         "must be between 0 and 100");
	limit = in->limit == 0 ? 10 : in->limit;
	metric = in->metric != E(METRIC__METRIC_UNSPECIFIED)
	                 ? (int)in->metric
	                 : analytics_dimension_default_metric(in->dimension);
	if ((rc = parse_range(call, tenant, in->start_at, in->end_at,
	                      ANALYTICS_MAX_RANGE_DAYS, in->filter, &r)) !=
	    PL_OK)
		return rc;
	if (metric == E(METRIC__METRIC_REVENUE_MINOR) ||
	    metric == E(METRIC__METRIC_CONVERSION_VALUE_MINOR))
		return pl_call_violation(
		        call, "metric",
		        "money metrics cannot rank a dimension");
	if ((rc = metric_names(call, metric, NULL, a.names, &a.n_names,
	                       "metric")) != PL_OK)
		return rc;
	{
		const char *ptrs[2] = { a.names[0], a.names[1] };
		const char *type = metric_event_type(metric);
		a.names_literal = analytics_array_literal(ptrs, a.n_names);
		a.types_literal = analytics_array_literal(&type, 1);
	}
	if (a.names_literal == NULL || a.types_literal == NULL) {
		rc = pl_call_error(call, PL_RESOURCE_EXHAUSTED,
		                   "out of memory");
		goto out_free;
	}
	rc = pl_db_tx(pl_call_db(call), tenant, top_tx, &a);
	if (rc != PL_OK) {
		if (!call->code)
			pl_call_error(call, rc, "could not rank");
		goto out_free;
	}
	out->items = pl_arena_alloc(call->arena,
	                            ((size_t)limit + 1) * sizeof(*out->items));
	if (out->items == NULL) {
		rc = pl_call_error(call, PL_RESOURCE_EXHAUSTED,
		                   "out of memory");
		goto out_free;
	}
	// Selection of the top `limit` (ties: smaller key first).
	bool *taken = calloc(a.groups.n + 1, sizeof(bool));
	if (taken == NULL) {
		rc = pl_call_error(call, PL_RESOURCE_EXHAUSTED,
		                   "out of memory");
		goto out_free;
	}
	for (int k = 0; k < limit; k++) {
		ssize_t best = -1;
		for (size_t i = 0; i < a.groups.n; i++) {
			if (taken[i] || a.groups.values[i] == 0)
				continue;
			if (best < 0 ||
			    a.groups.values[i] > a.groups.values[best] ||
			    (a.groups.values[i] == a.groups.values[best] &&
			     strcmp(a.groups.names[i], a.groups.names[best]) <
			             0))
				best = (ssize_t)i;
		}
		if (best < 0)
			break;
		taken[best] = true;
		A(TopItem) *it = pl_arena_alloc(call->arena, sizeof(*it));
		if (it == NULL)
			break;
		parley__analytics__v1__top_item__init(it);
		it->key = pl_arena_strdup(call->arena, a.groups.names[best]);
		it->value = a.groups.values[best];
		out->items[out->n_items++] = it;
	}
	for (size_t i = 0; i < a.groups.n; i++)
		if (!taken[i])
			out->other += a.groups.values[i];
	free(taken);
out_free:
	analytics_sums_fini(&a.groups);
	free(a.names_literal);
	free(a.types_literal);
	return rc;
}

// MonthlyUsage.

static bool
parse_month(const char *s, int *y, int *m)
{
	if (s == NULL || strlen(s) != 7 || s[4] != '-' ||
	    sscanf(s, "%4d-%2d", y, m) != 2)
		return false;
	return *y >= 2000 && *y <= 9999 && *m >= 1 && *m <= 12;
}

typedef struct monthly_arg {
	const char *tenant;
	char start[16], end[16];
	A(MonthlyUsageResponse) * out;
	pl_arena *arena;
	bool oom;
} monthly_arg;

static void
month_row(void *arg, PGresult *r, int row)
{
	monthly_arg *a = arg;
	A(MonthUsage) *u = pl_arena_alloc(a->arena, sizeof(*u));
	if (u == NULL) {
		a->oom = true;
		return;
	}
	parley__analytics__v1__month_usage__init(u);
	u->month = pl_arena_strdup(a->arena, PQgetvalue(r, row, 0));
	u->messages_in = strtoll(PQgetvalue(r, row, 1), NULL, 10);
	u->messages_out = strtoll(PQgetvalue(r, row, 2), NULL, 10);
	u->conversations = strtoll(PQgetvalue(r, row, 3), NULL, 10);
	u->unique_contacts = strtoll(PQgetvalue(r, row, 4), NULL, 10);
	u->ai_replies = strtoll(PQgetvalue(r, row, 5), NULL, 10);
	u->ai_tokens = strtoll(PQgetvalue(r, row, 6), NULL, 10);
	u->campaign_sent = strtoll(PQgetvalue(r, row, 7), NULL, 10);
	u->quota_refusals = strtoll(PQgetvalue(r, row, 8), NULL, 10);
	a->out->months[a->out->n_months++] = u;
}

static int
monthly_tx(pl_db *db, void *arg)
{
	monthly_arg *a = arg;
	a->out->n_months = 0;
	return analytics_store_monthly(db, a->tenant, a->start, a->end,
	                               month_row, a);
}

static int
monthly_usage(pl_call *call, const void *inp, void *outp)
{
	const A(MonthlyUsageRequest) *in = inp;
	A(MonthlyUsageResponse) *out = outp;
	const char *tenant = tenant_of(call);
	monthly_arg a = { 0 };
	int ey, em, sy, sm, rc;

	if (tenant == NULL)
		return no_tenant(call);
	if (in->end_month != NULL && in->end_month[0] != '\0') {
		if (!parse_month(in->end_month, &ey, &em))
			return pl_call_violation(
			        call, "end_month",
			        "must be a month like \"2026-11\"");
	} else {
		time_t t = time(NULL);
		struct tm tm;
		gmtime_r(&t, &tm);
		ey = tm.tm_year + 1900;
		em = tm.tm_mon + 1;
	}
	if (in->start_month != NULL && in->start_month[0] != '\0') {
		if (!parse_month(in->start_month, &sy, &sm))
			return pl_call_violation(
			        call, "start_month",
			        "must be a month like \"2026-01\"");
	} else {
		sy = ey;
		sm = em - 11;
		while (sm < 1) {
			sm += 12;
			sy--;
		}
	}
	int span = (ey * 12 + em) - (sy * 12 + sm) + 1;
	if (span < 1)
		return pl_call_violation(call, "start_month",
		                         "must not be after end_month");
	if (span > 36)
		return pl_call_violation(call, "start_month",
		                         "at most 36 months at once");
	snprintf(a.start, sizeof(a.start), "%04d-%02d-01", sy, sm);
	snprintf(a.end, sizeof(a.end), "%04d-%02d-01", ey, em);
	a.tenant = tenant;
	a.out = out;
	a.arena = call->arena;
	out->months = pl_arena_alloc(call->arena,
	                             (size_t)span * sizeof(*out->months));
	if (out->months == NULL)
		return pl_call_error(call, PL_RESOURCE_EXHAUSTED,
		                     "out of memory");
	rc = pl_db_tx(pl_call_db(call), tenant, monthly_tx, &a);
	if (rc == PL_OK && a.oom)
		return pl_call_error(call, PL_RESOURCE_EXHAUSTED,
		                     "out of memory");
	if (rc != PL_OK && !call->code)
		return pl_call_error(call, rc, "could not read monthly usage");
	return rc;
}

// PlatformSummary.

typedef struct platform_arg {
	char d0[16], d1[16];
	int64_t start_us, end_us;
	int top;
	analytics_sums sums;
	int64_t active, contacts;
	A(DurationStats) bot, human;
	PGresult *top_rows;
} platform_arg;

static int
platform_tx(pl_db *db, void *arg)
{
	platform_arg *a = arg;
	analytics_sums_fini(&a->sums);
	PQclear(a->top_rows);
	a->top_rows = NULL;
	return analytics_store_platform(
	        db, a->d0, a->d1, a->start_us, a->end_us, a->top, &a->sums,
	        &a->active, &a->contacts, &a->bot, &a->human, &a->top_rows);
}

static void
utc_date(int64_t us, char out[16], bool ceil_day)
{
	int64_t day = 86400LL * 1000000;
	int64_t d = us / day;
	if (ceil_day && us % day != 0)
		d++;
	char ts[32];
	analytics_time_format_us(d * day, ts);
	snprintf(out, 16, "%.10s", ts);
}

static int
platform_summary(pl_call *call, const void *inp, void *outp)
{
	const A(PlatformSummaryRequest) *in = inp;
	A(PlatformSummaryResponse) *out = outp;
	analytics_range r;
	platform_arg a;
	int rc;

	memset(&a, 0, sizeof(a));
	if ((rc = parse_range(call, "", in->start_at, in->end_at,
	                      ANALYTICS_MAX_RANGE_DAYS, NULL, &r)) != PL_OK)
		return rc;
	if (in->top_tenants < 0 || in->top_tenants > 100)
		return pl_call_violation(call, "top_tenants",
		                         "must be between 0 and 100");
	a.top = in->top_tenants ? in->top_tenants : 10;
	a.start_us = r.start_us;
	a.end_us = r.end_us;
	utc_date(r.start_us, a.d0, false);
	utc_date(r.end_us, a.d1, true);
	parley__analytics__v1__duration_stats__init(&a.bot);
	parley__analytics__v1__duration_stats__init(&a.human);
	// Platform-wide: every tenant's rows, hence tenant "*".
	rc = pl_db_tx(pl_call_db(call), "*", platform_tx, &a);
	if (rc != PL_OK) {
		analytics_sums_fini(&a.sums);
		PQclear(a.top_rows);
		return call->code ? rc
		                  : pl_call_error(call, rc,
		                                  "could not compute the "
		                                  "platform summary");
	}
	out->kpis = pl_arena_alloc(call->arena, sizeof(*out->kpis));
	int n = PQntuples(a.top_rows);
	out->top_tenants = pl_arena_alloc(
	        call->arena, (size_t)(n + 1) * sizeof(*out->top_tenants));
	if (out->kpis == NULL || out->top_tenants == NULL) {
		rc = pl_call_error(call, PL_RESOURCE_EXHAUSTED,
		                   "out of memory");
		goto out_free;
	}
	parley__analytics__v1__kpis__init(out->kpis);
	analytics_kpis_fill(out->kpis, &a.sums, call->arena);
	out->kpis->unique_contacts = a.contacts;
	out->kpis->first_response_bot = dup_stats(call->arena, &a.bot);
	out->kpis->first_response_human = dup_stats(call->arena, &a.human);
	out->active_tenants = a.active;
	out->events = analytics_sums_get(&a.sums, "events");
	for (int i = 0; i < n; i++) {
		A(TenantTotals) *t = pl_arena_alloc(call->arena, sizeof(*t));
		if (t == NULL)
			break;
		parley__analytics__v1__tenant_totals__init(t);
		t->tenant_id = pl_arena_strdup(call->arena,
		                               PQgetvalue(a.top_rows, i, 0));
		t->messages_in =
		        strtoll(PQgetvalue(a.top_rows, i, 1), NULL, 10);
		t->messages_out =
		        strtoll(PQgetvalue(a.top_rows, i, 2), NULL, 10);
		t->conversations_started =
		        strtoll(PQgetvalue(a.top_rows, i, 3), NULL, 10);
		t->ai_tokens = strtoll(PQgetvalue(a.top_rows, i, 4), NULL, 10);
		out->top_tenants[out->n_top_tenants++] = t;
	}
out_free:
	analytics_sums_fini(&a.sums);
	PQclear(a.top_rows);
	return rc;
}

// Retention.

static int
get_retention(pl_call *call, const void *inp, void *outp)
{
	A(GetRetentionResponse) *out = outp;
	int months = 0;
	(void)inp;
	int rc = analytics_store_get_retention(pl_call_db(call), &months,
	                                       &out->partitions,
	                                       &out->n_partitions, call->arena);
	if (rc != PL_OK)
		return pl_call_error(call, rc, "could not read the retention");
	out->months = months;
	return PL_OK;
}

static int
set_retention(pl_call *call, const void *inp, void *outp)
{
	const A(SetRetentionRequest) *in = inp;
	A(SetRetentionResponse) *out = outp;
	if (in->months < 0 || in->months > 1200)
		return pl_call_violation(
		        call, "months",
		        "must be 0 (keep all) or between 1 and 1200");
	int rc = analytics_store_set_retention(pl_call_db(call), in->months);
	if (rc != PL_OK)
		return pl_call_error(call, rc, "could not set the retention");
	out->months = in->months;
	return PL_OK;
}

static int
apply_retention(pl_call *call, const void *inp, void *outp)
{
	const A(ApplyRetentionRequest) *in = inp;
	A(ApplyRetentionResponse) *out = outp;
	analytics_state *st = call->arg;
	int rc;

	if (!in->dry_run) {
		rc = analytics_store_partitions_ahead(
		        pl_call_db(call),
		        st != NULL ? (int)st->months_ahead : 2, &out->created,
		        &out->n_created, call->arena);
		if (rc != PL_OK)
			return pl_call_error(call, rc,
			                     "could not create partitions");
	}
	rc = analytics_store_apply_retention(pl_call_db(call), in->dry_run,
	                                     &out->detached, &out->n_detached,
	                                     call->arena);
	if (rc != PL_OK)
		return pl_call_error(call, rc, "could not apply the retention");
	return PL_OK;
}

// ListEvents.

static const char hexd[] = "0123456789abcdef";

static char *
token_encode(pl_arena *arena, const char *at, const char *id)
{
	char raw[128];
	int n = snprintf(raw, sizeof(raw), "%s|%s", at, id);
	char *out = pl_arena_alloc(arena, (size_t)n * 2 + 1);
	if (out == NULL)
		return NULL;
	for (int i = 0; i < n; i++) {
		out[2 * i] = hexd[(unsigned char)raw[i] >> 4];
		out[2 * i + 1] = hexd[(unsigned char)raw[i] & 15];
	}
	out[2 * n] = '\0';
	return out;
}

static bool
token_decode(const char *tok, char at[40], char id[40])
{
	char raw[100];
	size_t n = strlen(tok);
	if (n % 2 != 0 || n / 2 >= sizeof(raw))
		return false;
	for (size_t i = 0; i < n / 2; i++) {
		const char *h = strchr(hexd, tok[2 * i]);
		const char *l = strchr(hexd, tok[2 * i + 1]);
		if (h == NULL || l == NULL || *h == '\0' || *l == '\0')
			return false;
		raw[i] = (char)((h - hexd) << 4 | (l - hexd));
	}
	raw[n / 2] = '\0';
	char *bar = strchr(raw, '|');
	int64_t us;
	if (bar == NULL)
		return false;
	*bar = '\0';
	if (strlen(raw) >= 40 || !analytics_time_parse(raw, &us) ||
	    !pl_uuid_valid(bar + 1))
		return false;
	memcpy(at, raw, strlen(raw) + 1);
	memcpy(id, bar + 1, PL_UUID_STRLEN + 1);
	return true;
}

typedef struct list_events_arg {
	const char *tenant;
	int64_t start_us, end_us;
	const char *exact, *prefix, *conv, *cat, *cid;
	int limit;
	PGresult *r;
} list_events_arg;

static int
list_events_tx(pl_db *db, void *arg)
{
	list_events_arg *a = arg;
	PQclear(a->r);
	a->r = NULL;
	return analytics_store_list_events(
	        db, a->tenant, a->start_us, a->end_us, a->exact, a->prefix,
	        a->conv, a->cat, a->cid, a->limit + 1, &a->r);
}

static int
list_events(pl_call *call, const void *inp, void *outp)
{
	const A(ListEventsRequest) *in = inp;
	A(ListEventsResponse) *out = outp;
	list_events_arg a = { 0 };
	char cat[40], cid[40];
	int rc, size = 50;

	if ((a.tenant = tenant_of(call)) == NULL)
		return no_tenant(call);
	if (in->page != NULL) {
		if (in->page->page_size < 0)
			return pl_call_violation(call, "page.page_size",
			                         "must not be negative");
		if (in->page->page_size > 0)
			size = in->page->page_size > 200 ? 200
			                                 : in->page->page_size;
		if (in->page->page_token != NULL &&
		    in->page->page_token[0] != '\0') {
			if (!token_decode(in->page->page_token, cat, cid))
				return pl_call_violation(
				        call, "page.page_token",
				        "is not a valid page token");
			a.cat = cat;
			a.cid = cid;
		}
	}
	a.limit = size;
	a.start_us = 946684800LL * 1000000;
	a.end_us = analytics_now_us() + 86400LL * 1000000;
	if (in->start_at && in->start_at[0] &&
	    !analytics_time_parse(in->start_at, &a.start_us))
		return pl_call_violation(call, "start_at",
		                         "must be an RFC 3339 time");
	if (in->end_at && in->end_at[0] &&
	    !analytics_time_parse(in->end_at, &a.end_us))
		return pl_call_violation(call, "end_at",
		                         "must be an RFC 3339 time");
	if (in->type != NULL && in->type[0] != '\0') {
		size_t n = strlen(in->type);
		if (n > 64)
			return pl_call_violation(call, "type", "is too long");
		if (in->type[n - 1] == '.')
			a.prefix = in->type;
		else
			a.exact = in->type;
	}
	if (in->conversation_id != NULL && in->conversation_id[0] != '\0') {
		if (!pl_uuid_valid(in->conversation_id))
			return pl_call_violation(call, "conversation_id",
			                         "must be a UUID");
		a.conv = in->conversation_id;
	}
	rc = pl_db_tx(pl_call_db(call), a.tenant, list_events_tx, &a);
	if (rc != PL_OK) {
		PQclear(a.r);
		return pl_call_error(call, rc, "could not list events");
	}
	int n = PQntuples(a.r);
	int k = n > size ? size : n;
	out->events = pl_arena_alloc(call->arena,
	                             (size_t)(k + 1) * sizeof(*out->events));
	if (out->events == NULL) {
		PQclear(a.r);
		return pl_call_error(call, PL_RESOURCE_EXHAUSTED,
		                     "out of memory");
	}
	for (int i = 0; i < k; i++) {
		pl_arena *ar = call->arena;
		Parley__Rpc__V1__Event *e = pl_arena_alloc(ar, sizeof(*e));
		Parley__Rpc__V1__EventDimensions *d =
		        pl_arena_alloc(ar, sizeof(*d));
		Parley__Rpc__V1__Json *j = pl_arena_alloc(ar, sizeof(*j));
		int64_t us;
		char ts[32];
		if (e == NULL || d == NULL || j == NULL)
			break;
		parley__rpc__v1__event__init(e);
		parley__rpc__v1__event_dimensions__init(d);
		parley__rpc__v1__json__init(j);
		e->id = pl_arena_strdup(ar, PQgetvalue(a.r, i, 0));
		e->tenant_id = pl_arena_strdup(ar, PQgetvalue(a.r, i, 1));
		e->type = pl_arena_strdup(ar, PQgetvalue(a.r, i, 2));
		if (analytics_time_parse(PQgetvalue(a.r, i, 3), &us)) {
			analytics_time_format_ms(us, ts);
			e->occurred_at = pl_arena_strdup(ar, ts);
		}
		e->source = pl_arena_strdup(ar, PQgetvalue(a.r, i, 4));
		d->channel_id = pl_arena_strdup(ar, PQgetvalue(a.r, i, 5));
		d->agent_id = pl_arena_strdup(ar, PQgetvalue(a.r, i, 6));
		d->campaign_id = pl_arena_strdup(ar, PQgetvalue(a.r, i, 7));
		d->conversation_id = pl_arena_strdup(ar, PQgetvalue(a.r, i, 8));
		d->contact_id = pl_arena_strdup(ar, PQgetvalue(a.r, i, 9));
		d->user_id = pl_arena_strdup(ar, PQgetvalue(a.r, i, 10));
		j->text = pl_arena_strdup(ar, PQgetvalue(a.r, i, 11));
		e->version = atoi(PQgetvalue(a.r, i, 12));
		e->dimensions = d;
		e->payload = j;
		out->events[out->n_events++] = e;
	}
	if (n > size && k > 0)
		out->next_page_token =
		        token_encode(call->arena, PQgetvalue(a.r, k - 1, 3),
		                     PQgetvalue(a.r, k - 1, 0));
	PQclear(a.r);
	return PL_OK;
}

static const pl_rpc_method analytics_methods[] = {
	{ "Track", track, PL_CALLER_SERVICE, NULL, 0 },
	{ "Summary", summary, PL_ROLE_VIEWER, "analytics:read", 0 },
	{ "TimeSeries", time_series, PL_ROLE_VIEWER, "analytics:read", 0 },
	{ "TopN", top_n, PL_ROLE_VIEWER, "analytics:read", 0 },
	{ "Funnel", funnel, PL_ROLE_VIEWER, "analytics:read", 0 },
	{ "MonthlyUsage", monthly_usage, PL_ROLE_VIEWER, "analytics:read", 0 },
	{ "ListEvents", list_events, PL_ROLE_ADMIN, "analytics:read", 0 },
	{ "PlatformSummary", platform_summary, PL_PLATFORM_ADMIN, NULL, 0 },
	{ "GetRetention", get_retention, PL_PLATFORM_ADMIN, NULL, 0 },
	{ "SetRetention", set_retention, PL_PLATFORM_ADMIN, NULL, 0 },
	{ "ApplyRetention", apply_retention, PL_PLATFORM_ADMIN, NULL, 0 },
	{ NULL, NULL, 0, NULL, 0 },
};

const pl_rpc_service analytics_rpc_service = {
	&parley__analytics__v1__analytics__descriptor,
	analytics_methods,
};

static const pl_rpc_service *const analytics_services[] = {
	&analytics_rpc_service,
	NULL,
};

// Configuration and the periodic job.

static int64_t cfg_job_interval_ms;
static int64_t cfg_months_ahead;

static const pl_cfg_entry analytics_cfg[] = {
	{ "PARLEY_ANALYTICS_JOB_INTERVAL", PL_CFG_DURATION, "1h", 1000,
	  86400000, &cfg_job_interval_ms,
	  "how often partitions are made ahead and retention applied" },
	{ "PARLEY_ANALYTICS_PARTITIONS_AHEAD", PL_CFG_INT, "2", 1, 24,
	  &cfg_months_ahead, "monthly partitions made beyond this month" },
	{ NULL, 0, NULL, 0, 0, NULL, NULL },
};

// Runs both maintenance steps once on db; used by the job and tests.
int analytics_maintain(pl_db *db, int months_ahead);

int
analytics_maintain(pl_db *db, int months_ahead)
{
	pl_arena arena;
	char **list;
	size_t n;
	int rc;

	pl_arena_init(&arena, 0, 0);
	rc = analytics_store_partitions_ahead(db, months_ahead, &list, &n,
	                                      &arena);
	for (size_t i = 0; rc == PL_OK && i < n; i++)
		pl_info("created the events partition of %s", list[i]);
	if (rc == PL_OK)
		rc = analytics_store_apply_retention(db, false, &list, &n,
		                                     &arena);
	for (size_t i = 0; rc == PL_OK && i < n; i++)
		pl_info("detached and dropped the events partition of %s",
		        list[i]);
	if (rc != PL_OK)
		pl_warn("analytics maintenance failed: %s", pl_status_name(rc));
	pl_arena_fini(&arena);
	return rc;
}

static void *
job_main(void *arg)
{
	analytics_state *st = arg;
	pl_db *db = pl_db_open(st->database_url);

	pthread_setname_np(pthread_self(), "analytics-job");
	pthread_mutex_lock(&st->mu);
	while (!st->stopping) {
		pthread_mutex_unlock(&st->mu);
		analytics_maintain(db, (int)st->months_ahead);
		pthread_mutex_lock(&st->mu);
		struct timespec ts = pl_timespec_in(
		        CLOCK_REALTIME, (int64_t)st->job_interval_ms * 1000000);
		while (!st->stopping &&
		       pthread_cond_timedwait(&st->cv, &st->mu, &ts) == 0)
			;
	}
	pthread_mutex_unlock(&st->mu);
	pl_db_close(db);
	return NULL;
}

static int
analytics_init(const pl_service_cfg *cfg, void **arg)
{
	analytics_state *st = calloc(1, sizeof(*st));
	if (st == NULL)
		return PL_RESOURCE_EXHAUSTED;
	st->database_url = strdup(cfg->database_url ? cfg->database_url : "");
	if (st->database_url == NULL) {
		free(st);
		return PL_RESOURCE_EXHAUSTED;
	}
	st->job_interval_ms =
	        cfg_job_interval_ms > 0 ? cfg_job_interval_ms : 3600000;
	st->months_ahead = cfg_months_ahead > 0 ? cfg_months_ahead : 2;
	pthread_mutex_init(&st->mu, NULL);
	pthread_cond_init(&st->cv, NULL);
	*arg = st;
	return PL_OK;
}

static int
analytics_start(void *arg)
{
	analytics_state *st = arg;
	st->stopping = false;
	if (pthread_create(&st->job, NULL, job_main, st) != 0)
		return PL_INTERNAL;
	st->job_running = true;
	return PL_OK;
}

static void
analytics_stop(void *arg)
{
	analytics_state *st = arg;
	if (st == NULL || !st->job_running)
		return;
	pthread_mutex_lock(&st->mu);
	st->stopping = true;
	pthread_cond_broadcast(&st->cv);
	pthread_mutex_unlock(&st->mu);
	pthread_join(st->job, NULL);
	st->job_running = false;
}

static void
analytics_fini(void *arg)
{
	analytics_state *st = arg;
	if (st == NULL)
		return;
	analytics_stop(st);
	pthread_mutex_destroy(&st->mu);
	pthread_cond_destroy(&st->cv);
	free(st->database_url);
	free(st);
}

const pl_service_def analytics_service_def = {
	.name = "analytics",
	.schema = "analytics",
	.services = analytics_services,
	.migrations = analytics_migrations,
	// The number of files in migrations/ (a constant is needed here;
	// unit_analytics_table checks it equals analytics_n_migrations).
	.n_migrations = ANALYTICS_N_MIGRATIONS,
	.default_listen = "tcp://127.0.0.1:7105",
	.default_ops_port = 9105,
	.cfg = analytics_cfg,
	.init = analytics_init,
	.start = analytics_start,
	.stop = analytics_stop,
	.fini = analytics_fini,
};
