// Campaigns: a template to an audience of contacts. Starting one writes its
// recipients (unique per contact); sender threads (any number, in any
// replica) claim pending recipients with SKIP LOCKED and, in one
// transaction per batch, create each message with its delivery and mark
// the recipient sent (messaging.campaign_send_batch): a recipient is
// enqueued exactly once even when a sender dies mid-batch. Billing is asked
// before (the campaigns feature, ReserveUsage(campaigns)) and during
// (ReserveUsage(messages) per batch, inside the batch's transaction); a
// refusal pauses the campaign with the reason.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "pl/id.h"
#include "pl/json.h"
#include "pl/log.h"
#include "engage.h"

#define BATCH 200

static const char *const cstatus_names[] = { "",        "draft",  "scheduled",
	                                     "running", "paused", "completed",
	                                     "canceled" };
static const char *const rstatus_names[] = {
	"",       "pending",           "sent",         "delivered", "read",
	"failed", "skipped_opted_out", "skipped_limit"
};

// ---------------------------------------------------------------------------
// Billing (its own client: GetEntitlements and batch reservations)

static struct {
	pthread_mutex_t mu;
	pl_rpc_client *billing;
	bool opened;
	pthread_t th[8];
	int nth;
	volatile bool stop;
	msg_service *s;
	// Each running campaign's claim cursor: the last recipient id taken
	// (messaging.campaign_send_batch's p_after); slot reuse by age.
	struct {
		char campaign[40], last[40];
		uint64_t used;
	} cur[64];
	uint64_t tick;
} g = { .mu = PTHREAD_MUTEX_INITIALIZER };

// The campaign's cursor into out ("" for none).
static void
cursor_get(const char *campaign, char out[40])
{
	out[0] = '\0';
	pthread_mutex_lock(&g.mu);
	for (size_t i = 0; i < sizeof(g.cur) / sizeof(g.cur[0]); i++)
		if (strcmp(g.cur[i].campaign, campaign) == 0) {
			memcpy(out, g.cur[i].last, 40);
			g.cur[i].used = ++g.tick;
			break;
		}
	pthread_mutex_unlock(&g.mu);
}

// Sets the campaign's cursor (last "" clears it).
static void
cursor_set(const char *campaign, const char *last)
{
	size_t n = sizeof(g.cur) / sizeof(g.cur[0]), k = 0;

	pthread_mutex_lock(&g.mu);
	for (size_t i = 0; i < n; i++) {
		if (strcmp(g.cur[i].campaign, campaign) == 0) {
			k = i;
			break;
		}
		if (g.cur[i].used < g.cur[k].used)
			k = i;
	}
	snprintf(g.cur[k].campaign, sizeof(g.cur[k].campaign), "%s",
	         last[0] ? campaign : "");
	snprintf(g.cur[k].last, sizeof(g.cur[k].last), "%s", last);
	g.cur[k].used = ++g.tick;
	pthread_mutex_unlock(&g.mu);
}

static pl_rpc_client *
billing(void)
{
	pthread_mutex_lock(&g.mu);
	if (!g.opened) {
		const char *url = getenv("PARLEY_BILLING_URL");
		const char *sec = getenv("PARLEY_SERVICE_SECRET");
		g.opened = true;
		if (url && url[0] && sec && sec[0]) {
			pl_rpc_client_config cc = { 0 };
			cc.urls = url;
			cc.secret = sec;
			cc.service = "messaging";
			if (pl_rpc_client_open(&g.billing, &cc) != PL_OK)
				g.billing = NULL;
		} else {
			pl_info("campaigns: billing checks are off (no "
			        "PARLEY_BILLING_URL or PARLEY_SERVICE_SECRET)");
		}
	}
	pthread_mutex_unlock(&g.mu);
	return g.billing;
}

// PL_OK, or PL_FAILED_PRECONDITION (no campaigns feature) /
// PL_RESOURCE_EXHAUSTED (limit) with why; PL_UNAVAILABLE: could not ask.
static int
billing_start_check(const char *tenant, const char *campaign, char *why,
                    size_t whylen)
{
	pl_rpc_client *b = billing();
	Parley__Billing__V1__GetEntitlementsRequest eq =
	        PARLEY__BILLING__V1__GET_ENTITLEMENTS_REQUEST__INIT;
	Parley__Billing__V1__GetEntitlementsResponse *e = NULL;
	Parley__Billing__V1__ReserveUsageRequest rq =
	        PARLEY__BILLING__V1__RESERVE_USAGE_REQUEST__INIT;
	pl_principal pr = PARLEY__RPC__V1__PRINCIPAL__INIT;
	pl_rpc_opts o = { 0 };
	pl_rpc_result res = { 0 };
	pl_arena a;
	char key[80];
	void *out = NULL;
	int rv;

	why[0] = '\0';
	if (b == NULL)
		return PL_OK;
	pl_arena_init(&a, 0, 1 << 20);
	pr.kind = PARLEY__RPC__V1__PRINCIPAL_KIND__PRINCIPAL_KIND_SERVICE;
	pr.tenant_id = (char *)tenant;
	pr.service = "messaging";
	o.principal = &pr;
	o.idempotent = true;
	rv = pl_rpc_call(
	        b, "/parley.billing.v1.Billing/GetEntitlements", &eq.base,
	        &parley__billing__v1__get_entitlements_response__descriptor,
	        (void **)&e, &a, &o, &res);
	if (rv == PL_OK &&
	    (!e->active || e->features == NULL || !e->features->campaigns)) {
		snprintf(why, whylen, "feature:campaigns");
		rv = PL_FAILED_PRECONDITION;
	} else if (rv == PL_OK) {
		snprintf(key, sizeof(key), "campaign-start:%s", campaign);
		rq.tenant_id = (char *)tenant;
		rq.metric = PARLEY__BILLING__V1__METRIC__METRIC_CAMPAIGNS;
		rq.amount = 1;
		rq.idempotency_key = key;
		o.principal = NULL;
		o.idempotent = false;
		o.idempotency_key = key;
		rv = pl_rpc_call(
		        b, "/parley.billing.v1.Billing/ReserveUsage", &rq.base,
		        &parley__billing__v1__reserve_usage_response__descriptor,
		        &out, &a, &o, &res);
		if (rv == PL_RESOURCE_EXHAUSTED)
			snprintf(why, whylen, "limit:%s",
			         res.message && res.message[0] ? res.message
			                                       : "campaigns");
	} else if (rv != PL_UNAVAILABLE && rv != PL_DEADLINE_EXCEEDED) {
		snprintf(why, whylen, "billing:%s", pl_status_name(rv));
		rv = PL_FAILED_PRECONDITION;
	}
	pl_arena_fini(&a);
	return rv;
}

static int
billing_reserve(const char *tenant, const char *key, int n, char *why,
                size_t whylen)
{
	pl_rpc_client *b = billing();
	Parley__Billing__V1__ReserveUsageRequest rq =
	        PARLEY__BILLING__V1__RESERVE_USAGE_REQUEST__INIT;
	pl_rpc_opts o = { 0 };
	pl_rpc_result res = { 0 };
	void *out = NULL;
	pl_arena a;
	int rv;

	why[0] = '\0';
	if (b == NULL || n <= 0)
		return PL_OK;
	pl_arena_init(&a, 0, 1 << 20);
	rq.tenant_id = (char *)tenant;
	rq.metric = PARLEY__BILLING__V1__METRIC__METRIC_MESSAGES;
	rq.amount = n;
	rq.idempotency_key = (char *)key;
	o.idempotency_key = key;
	rv = pl_rpc_call(
	        b, "/parley.billing.v1.Billing/ReserveUsage", &rq.base,
	        &parley__billing__v1__reserve_usage_response__descriptor, &out,
	        &a, &o, &res);
	if (rv == PL_RESOURCE_EXHAUSTED)
		snprintf(why, whylen, "limit:%s",
		         res.message && res.message[0] ? res.message
		                                       : "messages");
	pl_arena_fini(&a);
	return rv;
}

// ---------------------------------------------------------------------------
// Sender

typedef struct batch_arg {
	const char *tenant, *campaign;
	const char *after; // the cursor, or NULL: from the start
	char last[40];     // the last recipient id claimed
	int limit, sent, skipped;
	char why[200];
	bool refused;
} batch_arg;

static int
batch_fn(pl_db *db, void *arg)
{
	batch_arg *x = arg;
	char lim[16], key[120];
	const char *p[4] = { x->tenant, x->campaign, lim, x->after };
	PGresult *r = NULL;
	int rv;

	snprintf(lim, sizeof(lim), "%d", x->limit);
	rv = eg_exec(NULL, db,
	             "SELECT o_sent, o_skipped, coalesce(o_last::text, '') "
	             "FROM messaging.campaign_send_batch($1, $2, $3::int, "
	             "$4::uuid)",
	             4, p, &r, "send a campaign batch");
	if (rv != PL_OK)
		return rv;
	x->sent = atoi(PQgetvalue(r, 0, 0));
	x->skipped = atoi(PQgetvalue(r, 0, 1));
	snprintf(x->last, sizeof(x->last), "%s", PQgetvalue(r, 0, 2));
	{
		// This batch's reservation key (a retry of the call reuses it).
		char bid[40];
		pl_uuid7_str(bid);
		snprintf(key, sizeof(key), "campaign:%s:%s", x->campaign, bid);
	}
	PQclear(r);
	if (x->sent > 0) {
		// The messages of this batch, reserved before it commits; a
		// refusal rolls the batch back (recipients stay pending).
		rv = billing_reserve(x->tenant, key, x->sent, x->why,
		                     sizeof(x->why));
		if (rv == PL_RESOURCE_EXHAUSTED) {
			x->refused = true;
			return PL_RESOURCE_EXHAUSTED;
		}
		if (rv != PL_OK)
			return PL_UNAVAILABLE;
	}
	return PL_OK;
}

static int
set_status_fn(pl_db *db, void *arg)
{
	const char *const *p = arg;

	return eg_exec(
	        NULL, db,
	        "UPDATE messaging.campaigns SET status = $3, "
	        "pause_reason = $4, started_at = CASE WHEN $3 = "
	        "'running' THEN coalesce(started_at, now()) ELSE "
	        "started_at END, updated_at = now() WHERE tenant_id = $1 "
	        "AND id = $2 AND status IN ('running', 'scheduled')",
	        4, p, NULL, "change the campaign");
}

static void
pause_for(pl_db *db, const char *tenant, const char *id, const char *why)
{
	const char *p[4] = { tenant, id, "paused", why };

	pl_info("campaign %s paused: %s", id, why);
	pl_db_tx(db, tenant, set_status_fn, (void *)p);
}

static int
complete_fn(pl_db *db, void *arg)
{
	const char *const *p = arg;
	PGresult *r = NULL;
	int rv = eg_exec(NULL, db,
	                 "UPDATE messaging.campaigns c SET status = "
	                 "'completed', completed_at = now(), updated_at = "
	                 "now() WHERE tenant_id = $1 AND id = $2 AND status = "
	                 "'running' AND NOT EXISTS (SELECT 1 FROM "
	                 "messaging.campaign_recipients r WHERE r.tenant_id = "
	                 "$1 AND r.campaign_id = $2 AND r.status = 'pending') "
	                 "RETURNING id",
	                 2, p, &r, "complete the campaign");

	if (rv == PL_OK && PQntuples(r) == 1) {
		json_t *pj = json_pack("{s:s}", "campaign_id", p[1]);
		char *pay = json_dumps(pj, JSON_COMPACT);
		rv = eg_event(db, p[0], "campaign.completed", NULL, pay);
		free(pay);
		json_decref(pj);
	}
	PQclear(r);
	return rv;
}

typedef struct scan_arg {
	PGresult *r;
	const char *sql;
} scan_arg;

static int
scan_fn(pl_db *db, void *arg)
{
	scan_arg *x = arg;

	return eg_exec(NULL, db, x->sql, 0, NULL, &x->r, "scan campaigns");
}

int
engage_campaigns_once(msg_service *s, pl_db *db, pl_arena *a)
{
	scan_arg sc = { NULL, NULL };
	int handled = 0;

	(void)a;
	// Due scheduled campaigns, then running ones (service-level scans
	// across tenants: tenant "*").
	sc.sql = "SELECT tenant_id, id FROM messaging.campaigns WHERE status "
	         "= 'scheduled' AND scheduled_at <= now() ORDER BY "
	         "scheduled_at LIMIT 20";
	if (pl_db_tx(db, "*", scan_fn, &sc) == PL_OK) {
		for (int i = 0; i < PQntuples(sc.r); i++) {
			const char *t = PQgetvalue(sc.r, i, 0);
			const char *id = PQgetvalue(sc.r, i, 1);
			char why[200];
			int rv = billing_start_check(t, id, why, sizeof(why));
			const char *p[4] = { t, id, "running", "" };
			if (rv == PL_UNAVAILABLE || rv == PL_DEADLINE_EXCEEDED)
				continue;
			if (rv != PL_OK) {
				p[2] = "paused";
				p[3] = why;
			}
			pl_db_tx(db, t, set_status_fn, (void *)p);
		}
	}
	PQclear(sc.r);
	sc.r = NULL;
	sc.sql = "SELECT tenant_id, id, send_rate_per_second FROM "
	         "messaging.campaigns WHERE status = 'running' ORDER BY "
	         "updated_at LIMIT 20";
	if (pl_db_tx(db, "*", scan_fn, &sc) != PL_OK) {
		PQclear(sc.r);
		return 0;
	}
	for (int i = 0; i < PQntuples(sc.r); i++) {
		batch_arg x = { 0 };
		int rate = atoi(PQgetvalue(sc.r, i, 2)), rv;
		int64_t t0 = pl_now_ns();
		char after[40];
		x.tenant = PQgetvalue(sc.r, i, 0);
		x.campaign = PQgetvalue(sc.r, i, 1);
		x.limit = rate > 0 && rate < BATCH ? rate : BATCH;
		cursor_get(x.campaign, after);
		x.after = after[0] ? after : NULL;
		rv = pl_db_tx(db, x.tenant, batch_fn, &x);
		if (x.refused) {
			cursor_set(x.campaign, "");
			pause_for(db, x.tenant, x.campaign, x.why);
			continue;
		}
		if (rv != PL_OK) {
			cursor_set(x.campaign, "");
			continue;
		}
		handled += x.sent + x.skipped;
		if (x.sent > 0)
			messaging_kick(s);
		if (x.last[0] != '\0') {
			cursor_set(x.campaign, x.last);
		} else if (x.after != NULL) {
			// Nothing after the cursor: go back to the start (rows
			// a dead sender held, rows another sender skipped)
			// before calling the campaign done.
			cursor_set(x.campaign, "");
			handled++;
			continue;
		}
		if (x.sent == 0 && x.skipped == 0) {
			const char *p[2] = { x.tenant, x.campaign };
			pl_db_tx(db, x.tenant, complete_fn, (void *)p);
		} else if (rate > 0) {
			// Keep to the campaign's rate: x.limit per second.
			int64_t want = (int64_t)1000000000 *
			               (x.sent + x.skipped) / rate;
			int64_t spent = pl_now_ns() - t0;
			if (want > spent && !g.stop)
				usleep((useconds_t)((want - spent) / 1000));
		}
	}
	PQclear(sc.r);
	return handled;
}

static void *
sender_main(void *arg)
{
	msg_service *s = arg;
	pl_db *db = pl_db_open(s->database_url);
	pl_arena a;

	pthread_setname_np(pthread_self(), "msg-campaign");
	pl_arena_init(&a, 0, 1 << 20);
	while (!g.stop) {
		int n;
		pl_arena_reset(&a);
		n = engage_campaigns_once(s, db, &a);
		if (n <= 0 && !g.stop)
			usleep((useconds_t)(s->poll_ms > 0 ? s->poll_ms : 200) *
			       1000);
	}
	pl_arena_fini(&a);
	pl_db_close(db);
	return NULL;
}

int
engage_start(msg_service *s)
{
	const char *n = getenv("PARLEY_MESSAGING_CAMPAIGN_SENDERS");
	int want = n ? atoi(n) : 1;

	if (want < 0 || want > 8)
		want = 1;
	g.stop = false;
	g.s = s;
	g.nth = 0;
	for (int i = 0; i < want; i++)
		if (pthread_create(&g.th[g.nth], NULL, sender_main, s) == 0)
			g.nth++;
	// Follow-up scheduler and webhook senders (followups.c, outhooks.c).
	if (engage_followups_start(s) != PL_OK ||
	    engage_outhooks_start(s) != PL_OK)
		return PL_INVALID_ARGUMENT;
	return PL_OK;
}

void
engage_stop(msg_service *s)
{
	(void)s;
	engage_followups_stop();
	engage_outhooks_stop();
	g.stop = true;
	for (int i = 0; i < g.nth; i++)
		pthread_join(g.th[i], NULL);
	g.nth = 0;
	pthread_mutex_lock(&g.mu);
	if (g.billing)
		pl_rpc_client_close(g.billing);
	g.billing = NULL;
	g.opened = false;
	pthread_mutex_unlock(&g.mu);
}

// ---------------------------------------------------------------------------
// RPCs

static char *
camp_sql(pl_call *call, const char *where)
{
	return pl_arena_printf(call->arena,
	                       "SELECT %s FROM messaging.campaigns c WHERE "
	                       "c.tenant_id = $1 AND %s",
	                       EG_SQL_CAMPAIGN_JSON, where);
}

// Bindings and audience as stored JSON; violations named.
int
eg_bindings_json(pl_call *call, EG_M(ParameterBinding) * *b, size_t n,
                 const char **out)
{
	json_t *arr = json_array();
	char *s;

	if (n > EG_MAX_PARAMS) {
		json_decref(arr);
		return pl_call_violation(call, "parameters",
		                         "at most %d bindings", EG_MAX_PARAMS);
	}
	for (size_t i = 0; i < n; i++) {
		const char *f = b[i]->contact_field ? b[i]->contact_field : "";
		for (size_t j = 0; j < i; j++)
			if (b[j]->index == b[i]->index) {
				json_decref(arr);
				return pl_call_violation(
				        call, "parameters",
				        "index %d is bound twice", b[i]->index);
			}
		if (b[i]->index < 1 || b[i]->index > EG_MAX_PARAMS ||
		    (f[0] && strcmp(f, "name") && strcmp(f, "phone") &&
		     strcmp(f, "external_id") &&
		     strncmp(f, "custom_fields.", 14)) ||
		    (b[i]->value && strlen(b[i]->value) > EG_MAX_PARAM_LEN) ||
		    (b[i]->fallback &&
		     strlen(b[i]->fallback) > EG_MAX_PARAM_LEN)) {
			json_decref(arr);
			return pl_call_violation(
			        call, "parameters",
			        "binding %zu: index 1..%d, contact_field name, "
			        "phone, external_id or custom_fields.<key>",
			        i, EG_MAX_PARAMS);
		}
		json_array_append_new(arr, pl_json_from_pb(&b[i]->base));
	}
	s = json_dumps(arr, JSON_COMPACT);
	json_decref(arr);
	*out = pl_arena_strdup(call->arena, s);
	free(s);
	return PL_OK;
}

static int
audience_json(pl_call *call, const EG_M(Audience) * au, const char **out)
{
	json_t *o;
	char *s;

	*out = "{}";
	if (au == NULL)
		return PL_OK;
	if (au->n_tags > 50 || au->n_contact_ids > 10000)
		return pl_call_violation(
		        call, "audience",
		        "at most 50 tags and 10000 contact ids");
	for (size_t i = 0; i < au->n_contact_ids; i++)
		if (!pl_uuid_valid(au->contact_ids[i]))
			return pl_call_violation(call, "audience.contact_ids",
			                         "item %zu is not an id", i);
	for (size_t i = 0; i < au->n_tags; i++)
		if (!eg_nz(au->tags[i]) || strlen(au->tags[i]) > 64)
			return pl_call_violation(call, "audience.tags",
			                         "tags are 1 to 64 characters");
	if (au->custom_fields && eg_nz(au->custom_fields->text)) {
		const char *cf;
		int rv = eg_json_arg(call, "audience.custom_fields",
		                     au->custom_fields, false, 4096, NULL, &cf);
		if (rv != PL_OK)
			return rv;
	}
	o = pl_json_from_pb(&au->base);
	s = o ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	*out = s ? pl_arena_strdup(call->arena, s) : "{}";
	free(s);
	return PL_OK;
}

typedef struct cc_arg {
	const char *const *p;
	int n;
	const char *sql;
	EG_M(Campaign) * out;
	int state; // 0 ok, 1 not found, 2 precondition (why)
	char why[160];
	int max_index; // of the bindings given
} cc_arg;

// Checks the template for (tenant, channel); state 1/2 when not fit.
static int
check_template(pl_call *call, pl_db *db, const char *tenant,
               const char *template_id, const char *channel_id,
               size_t n_bindings, cc_arg *x)
{
	const char *p[2] = { tenant, template_id };
	PGresult *r = NULL;
	int rv =
	        eg_exec(call, db,
	                "SELECT channel_id::text, parameter_count, status FROM "
	                "messaging.templates WHERE tenant_id = $1 AND id = $2",
	                2, p, &r, "read the template");

	if (rv != PL_OK)
		return rv;
	if (PQntuples(r) == 0) {
		x->state = 1;
		snprintf(x->why, sizeof(x->why), "template %s not found",
		         template_id);
	} else if (channel_id && strcmp(PQgetvalue(r, 0, 0), channel_id)) {
		x->state = 2;
		snprintf(x->why, sizeof(x->why),
		         "the template belongs to another channel");
	} else if ((size_t)atoi(PQgetvalue(r, 0, 1)) != n_bindings ||
	           x->max_index > atoi(PQgetvalue(r, 0, 1))) {
		x->state = 3;
		snprintf(x->why, sizeof(x->why),
		         "the template takes %s parameters, %zu bindings given",
		         PQgetvalue(r, 0, 1), n_bindings);
	}
	PQclear(r);
	return PL_OK;
}

typedef struct create_arg {
	const EG_M(CreateCampaignRequest) * in;
	cc_arg cc;
} create_arg;

static int
create_fn(pl_call *call, pl_db *db, void *arg)
{
	create_arg *x = arg;
	PGresult *r = NULL;
	int rv = check_template(call, db, eg_tenant(call), x->in->template_id,
	                        x->in->channel_id, x->in->n_parameters, &x->cc);

	if (rv != PL_OK || x->cc.state != 0)
		return rv;
	if ((rv = eg_exec(call, db, x->cc.sql, x->cc.n, x->cc.p, &r,
	                  "create the campaign")) != PL_OK)
		return rv;
	rv = eg_row_pb(call, r, &parley__messaging__v1__campaign__descriptor,
	               (void **)&x->cc.out);
	PQclear(r);
	return rv;
}

static int
check_rate(pl_call *call, int rate)
{
	if (rate < 0 || rate > 10000)
		return pl_call_violation(call, "send_rate_per_second",
		                         "must be 0 (the channel's) to 10000");
	return PL_OK;
}

int
eg_create_campaign(pl_call *call, const void *inp, void *outp)
{
	const EG_M(CreateCampaignRequest) *in = inp;
	EG_M(CreateCampaignResponse) *out = outp;
	create_arg x = { in, { 0 } };
	const char *bind, *aud, *p[10];
	char id[40], rate[16];
	int rv;

	if (!eg_nz(in->name) || strlen(in->name) > 256)
		return pl_call_violation(call, "name",
		                         "must be 1 to 256 characters");
	if ((rv = eg_need_uuid(call, "channel_id", in->channel_id)) != PL_OK ||
	    (rv = eg_need_uuid(call, "template_id", in->template_id)) !=
	            PL_OK ||
	    (rv = check_rate(call, in->send_rate_per_second)) != PL_OK ||
	    (rv = eg_bindings_json(call, in->parameters, in->n_parameters,
	                           &bind)) != PL_OK ||
	    (rv = audience_json(call, in->audience, &aud)) != PL_OK)
		return rv;
	if (eg_nz(in->scheduled_at) && strlen(in->scheduled_at) > 40)
		return pl_call_violation(call, "scheduled_at",
		                         "is not an RFC 3339 time");
	pl_uuid7_str(id);
	snprintf(rate, sizeof(rate), "%d", in->send_rate_per_second);
	p[0] = eg_tenant(call);
	p[1] = id;
	p[2] = in->name;
	p[3] = in->channel_id;
	p[4] = in->template_id;
	p[5] = bind;
	p[6] = aud;
	p[7] = rate;
	p[8] = eg_nz(in->scheduled_at);
	p[9] = eg_nz(call->principal->user_id);
	x.cc.p = p;
	x.cc.n = 10;
	for (size_t i = 0; i < in->n_parameters; i++)
		if (in->parameters[i]->index > x.cc.max_index)
			x.cc.max_index = in->parameters[i]->index;
	x.cc.sql = pl_arena_printf(
	        call->arena,
	        "WITH c AS (INSERT INTO messaging.campaigns (tenant_id, id, "
	        "name, channel_id, template_id, parameters, audience, "
	        "send_rate_per_second, scheduled_at, status, "
	        "created_by_user_id) VALUES ($1, $2, $3, $4, $5, $6::jsonb, "
	        "$7::jsonb, $8::int, $9::timestamptz, CASE WHEN $9 IS NULL "
	        "THEN 'draft' ELSE 'scheduled' END, $10::uuid) RETURNING *) "
	        "SELECT %s FROM c",
	        EG_SQL_CAMPAIGN_JSON);
	if ((rv = eg_tx(call, eg_tenant(call), create_fn, &x)) != PL_OK)
		return rv;
	if (x.cc.state == 1)
		return pl_call_error(call, PL_NOT_FOUND, "%s", x.cc.why);
	if (x.cc.state == 2)
		return pl_call_error(call, PL_FAILED_PRECONDITION, "%s",
		                     x.cc.why);
	if (x.cc.state == 3)
		return pl_call_violation(call, "parameters", "%s", x.cc.why);
	out->campaign = x.cc.out;
	out->id = x.cc.out->id;
	return PL_OK;
}

int
eg_get_campaign(pl_call *call, const void *inp, void *outp)
{
	const EG_M(GetCampaignRequest) *in = inp;
	EG_M(GetCampaignResponse) *out = outp;
	const char *p[2] = { eg_tenant(call), in->id };

	if (!pl_uuid_valid(in->id))
		return pl_call_error(call, PL_NOT_FOUND, "campaign not found");
	return eg_get(call, eg_tenant(call), camp_sql(call, "c.id = $2"), 2, p,
	              &parley__messaging__v1__campaign__descriptor,
	              (void **)&out->campaign, "campaign");
}

int
eg_list_campaigns(pl_call *call, const void *inp, void *outp)
{
	const EG_M(ListCampaignsRequest) *in = inp;
	EG_M(ListCampaignsResponse) *out = outp;
	char *after, lim[16];
	int size, rv;

	if ((rv = eg_page(call, in->page, &size, &after)) != PL_OK)
		return rv;
	if (in->status < 0 || in->status > 6)
		return pl_call_violation(call, "status",
		                         "is not a campaign status");
	if (eg_nz(in->channel_id) && !pl_uuid_valid(in->channel_id))
		return pl_call_violation(call, "channel_id",
		                         "is not a valid id");
	snprintf(lim, sizeof(lim), "%d", size + 1);
	{
		const char *p[5] = { eg_tenant(call), after, lim,
			             in->status ? cstatus_names[in->status]
			                        : NULL,
			             eg_nz(in->channel_id) };
		return eg_list(
		        call, eg_tenant(call),
		        camp_sql(call,
		                 "($2::uuid IS NULL OR c.id < $2::uuid) "
		                 "AND ($4::text IS NULL OR c.status = $4) "
		                 "AND ($5::uuid IS NULL OR c.channel_id = "
		                 "$5::uuid) ORDER BY c.id DESC LIMIT $3"),
		        5, p, size,
		        &parley__messaging__v1__campaign__descriptor,
		        (void ***)&out->campaigns, &out->n_campaigns,
		        &out->next_page_token);
	}
}

static bool
inmask(char **m, size_t n, const char *f)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(m[i], f) == 0)
			return true;
	return false;
}

typedef struct upd_arg {
	const EG_M(UpdateCampaignRequest) * in;
	const char *p[8];
	cc_arg cc;
} upd_arg;

static int
upd_fn(pl_call *call, pl_db *db, void *arg)
{
	upd_arg *x = arg;
	const char *q[2] = { eg_tenant(call), x->in->id };
	PGresult *r = NULL;
	char *tpl = NULL;
	int rv, nb;

	if ((rv = eg_exec(
	             call, db,
	             "SELECT status, template_id::text, channel_id::text, "
	             "jsonb_array_length(parameters) FROM "
	             "messaging.campaigns WHERE tenant_id = $1 AND id = $2 "
	             "FOR UPDATE",
	             2, q, &r, "read the campaign")) != PL_OK)
		return rv;
	if (PQntuples(r) == 0) {
		PQclear(r);
		x->cc.state = 1;
		snprintf(x->cc.why, sizeof(x->cc.why), "campaign not found");
		return PL_OK;
	}
	if (strcmp(PQgetvalue(r, 0, 0), "draft") &&
	    strcmp(PQgetvalue(r, 0, 0), "scheduled") &&
	    strcmp(PQgetvalue(r, 0, 0), "paused")) {
		snprintf(x->cc.why, sizeof(x->cc.why),
		         "a %s campaign does not change", PQgetvalue(r, 0, 0));
		x->cc.state = 2;
		PQclear(r);
		return PL_OK;
	}
	if (x->p[6] != NULL && strcmp(PQgetvalue(r, 0, 0), "paused") == 0) {
		snprintf(
		        x->cc.why, sizeof(x->cc.why),
		        "the audience only changes before the campaign starts");
		x->cc.state = 2;
		PQclear(r);
		return PL_OK;
	}
	tpl = pl_arena_strdup(call->arena,
	                      x->p[3] ? x->p[3] : PQgetvalue(r, 0, 1));
	nb = x->p[5] ? (int)x->in->n_parameters : atoi(PQgetvalue(r, 0, 3));
	rv = check_template(call, db, eg_tenant(call), tpl,
	                    pl_arena_strdup(call->arena, PQgetvalue(r, 0, 2)),
	                    (size_t)nb, &x->cc);
	PQclear(r);
	if (rv != PL_OK || x->cc.state != 0)
		return rv;
	if ((rv = eg_exec(
	             call, db,
	             pl_arena_printf(
	                     call->arena,
	                     "WITH c AS (UPDATE messaging.campaigns SET name = "
	                     "coalesce($3, name), template_id = "
	                     "coalesce($4::uuid, "
	                     "template_id), send_rate_per_second = "
	                     "coalesce($5::int, send_rate_per_second), "
	                     "parameters = coalesce($6::jsonb, parameters), "
	                     "audience = coalesce($7::jsonb, audience), "
	                     "updated_at = now() WHERE tenant_id = $1 AND id = "
	                     "$2 RETURNING *) SELECT %s FROM c",
	                     EG_SQL_CAMPAIGN_JSON),
	             7, x->p, &r, "update the campaign")) != PL_OK)
		return rv;
	rv = eg_row_pb(call, r, &parley__messaging__v1__campaign__descriptor,
	               (void **)&x->cc.out);
	PQclear(r);
	return rv;
}

int
eg_update_campaign(pl_call *call, const void *inp, void *outp)
{
	const EG_M(UpdateCampaignRequest) *in = inp;
	EG_M(UpdateCampaignResponse) *out = outp;
	upd_arg x = { in, { 0 }, { 0 } };
	bool all = in->n_update_mask == 0;
	char rate[16];
	int rv;

	if (!pl_uuid_valid(in->id))
		return pl_call_error(call, PL_NOT_FOUND, "campaign not found");
	x.p[0] = eg_tenant(call);
	x.p[1] = in->id;
	for (size_t i = 0; i < in->n_update_mask; i++) {
		const char *m = in->update_mask[i];
		if (strcmp(m, "name") && strcmp(m, "template_id") &&
		    strcmp(m, "send_rate_per_second") &&
		    strcmp(m, "parameters") && strcmp(m, "audience"))
			return pl_call_violation(call, "update_mask",
			                         "unknown field \"%s\"", m);
	}
	if (all ? eg_nz(in->name) != NULL
	        : inmask(in->update_mask, in->n_update_mask, "name")) {
		if (!eg_nz(in->name) || strlen(in->name) > 256)
			return pl_call_violation(call, "name",
			                         "must be 1 to 256 characters");
		x.p[2] = in->name;
	}
	if (all ? eg_nz(in->template_id) != NULL
	        : inmask(in->update_mask, in->n_update_mask, "template_id")) {
		if ((rv = eg_need_uuid(call, "template_id", in->template_id)) !=
		    PL_OK)
			return rv;
		x.p[3] = in->template_id;
	}
	if (all ? in->send_rate_per_second != 0
	        : inmask(in->update_mask, in->n_update_mask,
	                 "send_rate_per_second")) {
		if ((rv = check_rate(call, in->send_rate_per_second)) != PL_OK)
			return rv;
		snprintf(rate, sizeof(rate), "%d", in->send_rate_per_second);
		x.p[4] = rate;
	}
	for (size_t i = 0; i < in->n_parameters; i++)
		if (in->parameters[i]->index > x.cc.max_index)
			x.cc.max_index = in->parameters[i]->index;
	if (all ? in->n_parameters > 0
	        : inmask(in->update_mask, in->n_update_mask, "parameters"))
		if ((rv = eg_bindings_json(call, in->parameters,
		                           in->n_parameters, &x.p[5])) != PL_OK)
			return rv;
	if (all ? in->audience != NULL
	        : inmask(in->update_mask, in->n_update_mask, "audience"))
		if ((rv = audience_json(call, in->audience, &x.p[6])) != PL_OK)
			return rv;
	if ((rv = eg_tx(call, eg_tenant(call), upd_fn, &x)) != PL_OK)
		return rv;
	if (x.cc.state == 1)
		return pl_call_error(call, PL_NOT_FOUND, "%s", x.cc.why);
	if (x.cc.state == 2)
		return pl_call_error(call, PL_FAILED_PRECONDITION, "%s",
		                     x.cc.why);
	if (x.cc.state == 3)
		return pl_call_violation(call, "parameters", "%s", x.cc.why);
	out->campaign = x.cc.out;
	return PL_OK;
}

// A status change: allowed from the listed statuses; extra SQL runs first
// (the audience written at start). state 1 missing, 2 wrong status.
typedef struct chg_arg {
	const char *id, *to, *reason, *scheduled;
	const char *from[4];
	bool materialize;
	EG_M(Campaign) * out;
	int state;
	char cur[16];
} chg_arg;

static int
chg_fn(pl_call *call, pl_db *db, void *arg)
{
	chg_arg *x = arg;
	const char *tenant = eg_tenant(call);
	const char *p[5] = { tenant, x->id, x->to, x->reason, x->scheduled };
	PGresult *r = NULL;
	bool ok = false;
	int rv;

	if ((rv = eg_exec(call, db,
	                  "SELECT status FROM messaging.campaigns WHERE "
	                  "tenant_id = $1 AND id = $2 FOR UPDATE",
	                  2, p, &r, "read the campaign")) != PL_OK)
		return rv;
	if (PQntuples(r) == 0) {
		PQclear(r);
		x->state = 1;
		return PL_OK;
	}
	snprintf(x->cur, sizeof(x->cur), "%s", PQgetvalue(r, 0, 0));
	PQclear(r);
	for (int i = 0; i < 4 && x->from[i]; i++)
		ok = ok || strcmp(x->from[i], x->cur) == 0;
	if (strcmp(x->cur, x->to) == 0 && !x->scheduled) {
		// Asked again: answered as it is.
		if ((rv = eg_exec(call, db, camp_sql(call, "c.id = $2"), 2, p,
		                  &r, "read the campaign")) != PL_OK)
			return rv;
		rv = eg_row_pb(call, r,
		               &parley__messaging__v1__campaign__descriptor,
		               (void **)&x->out);
		PQclear(r);
		return rv;
	}
	if (!ok) {
		x->state = 2;
		return PL_OK;
	}
	if (x->materialize) {
		// The audience, once: contacts of the channel matching every
		// criterion; opted-out ones are skipped for marketing.
		if ((rv = eg_exec(
		             call, db,
		             "INSERT INTO messaging.campaign_recipients "
		             "(tenant_id, id, campaign_id, contact_id, status) "
		             "SELECT $1, messaging.uuid7(), c.id, k.id, CASE "
		             "WHEN "
		             "t.category = 'marketing' AND k.opted_out_at IS "
		             "NOT "
		             "NULL THEN 'skipped_opted_out' ELSE 'pending' END "
		             "FROM messaging.campaigns c JOIN "
		             "messaging.templates t "
		             "ON t.tenant_id = c.tenant_id AND t.id = "
		             "c.template_id JOIN messaging.contacts k ON "
		             "k.tenant_id = c.tenant_id AND k.channel_id = "
		             "c.channel_id WHERE c.tenant_id = $1 AND c.id = "
		             "$2 "
		             "AND (coalesce(jsonb_array_length(c.audience->"
		             "'tags'), 0) = 0 OR k.tags && ARRAY(SELECT "
		             "jsonb_array_elements_text(c.audience->'tags'))) "
		             "AND "
		             "(c.audience->'custom_fields' IS NULL OR "
		             "k.custom_fields @> "
		             "(c.audience->'custom_fields')) "
		             "AND (coalesce(jsonb_array_length(c.audience->"
		             "'contact_ids'), 0) = 0 OR k.id::text IN (SELECT "
		             "jsonb_array_elements_text(c.audience->"
		             "'contact_ids'))) ORDER BY k.id ON CONFLICT "
		             "(tenant_id, campaign_id, contact_id) DO NOTHING",
		             2, p, NULL, "write the recipients")) != PL_OK)
			return rv;
	}
	if ((rv = eg_exec(
	             call, db,
	             "UPDATE messaging.campaigns SET status = $3, pause_reason "
	             "= CASE WHEN $3 = 'paused' THEN coalesce($4, '') ELSE '' "
	             "END, scheduled_at = coalesce($5::timestamptz, "
	             "scheduled_at), started_at = CASE WHEN $3 = 'running' "
	             "THEN "
	             "coalesce(started_at, now()) ELSE started_at END, "
	             "canceled_at = CASE WHEN $3 = 'canceled' THEN now() ELSE "
	             "canceled_at END, updated_at = now() WHERE tenant_id = $1 "
	             "AND id = $2",
	             5, p, NULL, "change the campaign")) != PL_OK)
		return rv;
	if ((rv = eg_exec(call, db, camp_sql(call, "c.id = $2"), 2, p, &r,
	                  "read the campaign")) != PL_OK)
		return rv;
	rv = eg_row_pb(call, r, &parley__messaging__v1__campaign__descriptor,
	               (void **)&x->out);
	PQclear(r);
	return rv;
}

static int
change(pl_call *call, chg_arg *x, EG_M(Campaign) * *out)
{
	int rv;

	if (!pl_uuid_valid(x->id))
		return pl_call_error(call, PL_NOT_FOUND, "campaign not found");
	if ((rv = eg_tx(call, eg_tenant(call), chg_fn, x)) != PL_OK)
		return rv;
	if (x->state == 1)
		return pl_call_error(call, PL_NOT_FOUND, "campaign not found");
	if (x->state == 2) {
		return pl_call_error(call, PL_FAILED_PRECONDITION,
		                     "a %s campaign cannot become %s", x->cur,
		                     x->to);
	}
	*out = x->out;
	messaging_kick(eg_svc(call));
	return PL_OK;
}

int
eg_schedule_campaign(pl_call *call, const void *inp, void *outp)
{
	const EG_M(ScheduleCampaignRequest) *in = inp;
	EG_M(ScheduleCampaignResponse) *out = outp;
	chg_arg x = { in->id,
		      "scheduled",
		      NULL,
		      in->scheduled_at,
		      { "draft", "scheduled", NULL, NULL },
		      true,
		      NULL,
		      0,
		      "" };

	if (!eg_nz(in->scheduled_at) || strlen(in->scheduled_at) > 40)
		return pl_call_violation(call, "scheduled_at",
		                         "is required (RFC 3339)");
	return change(call, &x, &out->campaign);
}

int
eg_start_campaign(pl_call *call, const void *inp, void *outp)
{
	const EG_M(StartCampaignRequest) *in = inp;
	EG_M(StartCampaignResponse) *out = outp;
	chg_arg x = { in->id,
		      "running",
		      NULL,
		      NULL,
		      { "draft", "scheduled", NULL, NULL },
		      true,
		      NULL,
		      0,
		      "" };
	char why[200];
	int rv;

	if (!pl_uuid_valid(in->id))
		return pl_call_error(call, PL_NOT_FOUND, "campaign not found");
	{
		// Exists and is the caller's before billing is asked.
		EG_M(GetCampaignRequest)
		g1 = PARLEY__MESSAGING__V1__GET_CAMPAIGN_REQUEST__INIT;
		EG_M(GetCampaignResponse)
		g2 = PARLEY__MESSAGING__V1__GET_CAMPAIGN_RESPONSE__INIT;
		g1.id = in->id;
		if ((rv = eg_get_campaign(call, &g1, &g2)) != PL_OK)
			return rv;
		if (g2.campaign->status ==
		    EG_E(CAMPAIGN_STATUS__CAMPAIGN_STATUS_RUNNING)) {
			out->campaign = g2.campaign;
			return PL_OK;
		}
	}
	rv = billing_start_check(eg_tenant(call), in->id, why, sizeof(why));
	if (rv == PL_FAILED_PRECONDITION)
		return pl_call_error(call, rv,
		                     "the plan does not include campaigns (%s)",
		                     why);
	if (rv == PL_RESOURCE_EXHAUSTED)
		return pl_call_error(call, rv, "campaign limit reached (%s)",
		                     why);
	if (rv != PL_OK)
		return pl_call_error(call, PL_UNAVAILABLE,
		                     "billing could not be asked");
	return change(call, &x, &out->campaign);
}

int
eg_pause_campaign(pl_call *call, const void *inp, void *outp)
{
	const EG_M(PauseCampaignRequest) *in = inp;
	EG_M(PauseCampaignResponse) *out = outp;
	chg_arg x = { in->id,
		      "paused",
		      in->reason ? in->reason : "",
		      NULL,
		      { "running", "scheduled", "paused", NULL },
		      false,
		      NULL,
		      0,
		      "" };

	if (in->reason && strlen(in->reason) > 512)
		return pl_call_violation(call, "reason",
		                         "is longer than 512 characters");
	return change(call, &x, &out->campaign);
}

int
eg_resume_campaign(pl_call *call, const void *inp, void *outp)
{
	const EG_M(ResumeCampaignRequest) *in = inp;
	EG_M(ResumeCampaignResponse) *out = outp;
	chg_arg x = {
		in->id, "running", NULL, NULL, { "paused", NULL, NULL, NULL },
		false,  NULL,      0,    ""
	};

	return change(call, &x, &out->campaign);
}

int
eg_cancel_campaign(pl_call *call, const void *inp, void *outp)
{
	const EG_M(CancelCampaignRequest) *in = inp;
	EG_M(CancelCampaignResponse) *out = outp;
	chg_arg x = { in->id,
		      "canceled",
		      NULL,
		      NULL,
		      { "draft", "scheduled", "running", "paused" },
		      false,
		      NULL,
		      0,
		      "" };

	return change(call, &x, &out->campaign);
}

typedef struct delc_arg {
	const char *id;
	int state;
} delc_arg;

static int
delc_fn(pl_call *call, pl_db *db, void *arg)
{
	delc_arg *x = arg;
	const char *p[2] = { eg_tenant(call), x->id };
	PGresult *r = NULL;
	int rv;

	if ((rv = eg_exec(call, db,
	                  "SELECT status FROM messaging.campaigns WHERE "
	                  "tenant_id = $1 AND id = $2 FOR UPDATE",
	                  2, p, &r, "read the campaign")) != PL_OK)
		return rv;
	x->state = PQntuples(r) == 0 ? 1
	           : (strcmp(PQgetvalue(r, 0, 0), "draft") == 0 ||
	              strcmp(PQgetvalue(r, 0, 0), "completed") == 0 ||
	              strcmp(PQgetvalue(r, 0, 0), "canceled") == 0)
	                   ? 0
	                   : 2;
	PQclear(r);
	if (x->state != 0)
		return PL_OK;
	if ((rv = eg_exec(call, db,
	                  "DELETE FROM messaging.campaign_recipients WHERE "
	                  "tenant_id = $1 AND campaign_id = $2",
	                  2, p, NULL, "delete the recipients")) != PL_OK)
		return rv;
	return eg_exec(call, db,
	               "DELETE FROM messaging.campaigns WHERE tenant_id = $1 "
	               "AND id = $2",
	               2, p, NULL, "delete the campaign");
}

int
eg_delete_campaign(pl_call *call, const void *inp, void *outp)
{
	const EG_M(DeleteCampaignRequest) *in = inp;
	delc_arg x = { in->id, 0 };
	int rv;

	(void)outp;
	if (!pl_uuid_valid(in->id))
		return pl_call_error(call, PL_NOT_FOUND, "campaign not found");
	if ((rv = eg_tx(call, eg_tenant(call), delc_fn, &x)) != PL_OK)
		return rv;
	if (x.state == 1)
		return pl_call_error(call, PL_NOT_FOUND, "campaign not found");
	if (x.state == 2)
		return pl_call_error(call, PL_FAILED_PRECONDITION,
		                     "only draft, completed or canceled "
		                     "campaigns are deleted");
	return PL_OK;
}

int
eg_get_campaign_stats(pl_call *call, const void *inp, void *outp)
{
	const EG_M(GetCampaignStatsRequest) *in = inp;
	EG_M(GetCampaignStatsResponse) *out = outp;
	EG_M(GetCampaignRequest)
	g1 = PARLEY__MESSAGING__V1__GET_CAMPAIGN_REQUEST__INIT;
	EG_M(GetCampaignResponse)
	g2 = PARLEY__MESSAGING__V1__GET_CAMPAIGN_RESPONSE__INIT;
	const EG_M(CampaignCounters) * c;
	int rv;

	g1.id = in->id;
	if ((rv = eg_get_campaign(call, &g1, &g2)) != PL_OK)
		return rv;
	c = g2.campaign->counters;
	out->counters = g2.campaign->counters;
	out->status = g2.campaign->status;
	out->started_at = g2.campaign->started_at;
	out->completed_at = g2.campaign->completed_at;
	if (c != NULL) {
		if (c->sent > 0) {
			out->delivery_rate = (double)c->delivered / c->sent;
			out->read_rate = (double)c->read / c->sent;
		}
		if (c->sent + c->failed > 0)
			out->failure_rate = (double)c->failed /
			                    (double)(c->sent + c->failed);
	}
	{
		const char *p[2] = { eg_tenant(call), in->id };
		EG_M(CampaignCounters) *tmp = NULL;
		// Messages per second over the last minute (sent_at).
		rv = eg_get(
		        call, eg_tenant(call),
		        "SELECT jsonb_build_object('sent', count(*))::text "
		        "FROM messaging.campaign_recipients WHERE tenant_id = "
		        "$1 AND campaign_id = $2 AND sent_at > now() - "
		        "interval '1 minute'",
		        2, p,
		        &parley__messaging__v1__campaign_counters__descriptor,
		        (void **)&tmp, "campaign");
		if (rv == PL_OK && tmp)
			out->messages_per_second = (int32_t)(tmp->sent / 60);
	}
	return rv;
}

int
eg_list_campaign_recipients(pl_call *call, const void *inp, void *outp)
{
	const EG_M(ListCampaignRecipientsRequest) *in = inp;
	EG_M(ListCampaignRecipientsResponse) *out = outp;
	EG_M(GetCampaignRequest)
	g1 = PARLEY__MESSAGING__V1__GET_CAMPAIGN_REQUEST__INIT;
	EG_M(GetCampaignResponse)
	g2 = PARLEY__MESSAGING__V1__GET_CAMPAIGN_RESPONSE__INIT;
	char *after, lim[16];
	int size, rv;

	if ((rv = eg_page(call, in->page, &size, &after)) != PL_OK)
		return rv;
	if (in->status < 0 || in->status > 7)
		return pl_call_violation(call, "status",
		                         "is not a recipient status");
	g1.id = in->campaign_id;
	if ((rv = eg_get_campaign(call, &g1, &g2)) != PL_OK)
		return rv;
	snprintf(lim, sizeof(lim), "%d", size + 1);
	{
		const char *p[5] = { eg_tenant(call), in->campaign_id, after,
			             lim,
			             in->status ? rstatus_names[in->status]
			                        : NULL };
		return eg_list(
		        call, eg_tenant(call),
		        "SELECT jsonb_strip_nulls(jsonb_build_object('id', "
		        "r.id, "
		        "'campaign_id', r.campaign_id, 'contact_id', "
		        "r.contact_id, 'status', r.status, 'message_id', "
		        "r.message_id, 'error_code', r.error_code, "
		        "'error_text', "
		        "r.error_text, 'opted_in_at', "
		        "messaging.fmt_ts(r.opted_in_at), 'opted_out_at', "
		        "messaging.fmt_ts(r.opted_out_at), 'sent_at', "
		        "messaging.fmt_ts(r.sent_at), 'updated_at', "
		        "messaging.fmt_ts(r.updated_at)))::text FROM "
		        "messaging.campaign_recipients_v r WHERE r.tenant_id = "
		        "$1 "
		        "AND r.campaign_id = $2 AND ($3::uuid IS NULL OR r.id "
		        "> "
		        "$3::uuid) AND ($5::text IS NULL OR r.status = $5) "
		        "ORDER "
		        "BY r.id LIMIT $4",
		        5, p, size,
		        &parley__messaging__v1__campaign_recipient__descriptor,
		        (void ***)&out->recipients, &out->n_recipients,
		        &out->next_page_token);
	}
}
