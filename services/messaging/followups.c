// Follow-ups: per-tenant rules (optionally per agent or channel) that nudge
// a contact who has not answered the bot's last message after a delay, at
// most max_attempts times. Scheduling is done by the database (trigger
// messaging.followups_on_message, migration 004): a bot message (re)starts
// the conversation's chain, an inbound message or a person's reply cancels
// it. The scheduler here claims due rows with FOR UPDATE SKIP LOCKED (any
// number of threads and replicas) and, in the claim's transaction, queues
// the message with its delivery, marks the row sent and schedules the next
// attempt: a follow-up fires once, even when the process dies mid-way
// (rollback: the row is pending again and claimed by the next pass).
//
// Inside the 24-hour window the rule's text is sent; outside it (WhatsApp,
// Infobip) its approved template with parameters bound from the contact's
// fields; with neither usable the follow-up is skipped with the reason.
// Opted-out contacts get no follow-ups; a conversation a person owns or
// that was closed cancels them.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "pl/id.h"
#include "pl/log.h"
#include "engage.h"

#define MAX_NAME 200
#define MAX_TEXT 4096

static const char SQL_RULE_JSON[] =
        "jsonb_strip_nulls(jsonb_build_object('id', r.id, 'name', r.name, "
        "'agent_id', r.agent_id, 'channel_id', r.channel_id, "
        "'delay_minutes', r.delay_minutes, 'text', r.text, 'template_id', "
        "r.template_id, 'template_parameters', r.template_parameters, "
        "'max_attempts', r.max_attempts, 'active', r.is_active, "
        "'created_at', messaging.fmt_ts(r.created_at), 'updated_at', "
        "messaging.fmt_ts(r.updated_at)))::text";

// ---------------------------------------------------------------------------
// RPCs

typedef struct rule_in {
	const char *name, *agent_id, *channel_id, *text, *template_id;
	EG_M(ParameterBinding) * *params;
	size_t n_params;
	int delay, max_attempts;
	bool active;
	// which fields are set (update)
	bool s_name, s_agent, s_channel, s_delay, s_text, s_template, s_params,
	        s_max, s_active;
} rule_in;

static bool
inmask(char **m, size_t n, const char *f)
{
	for (size_t i = 0; i < n; i++)
		if (m[i] && strcmp(m[i], f) == 0)
			return true;
	return false;
}

static int
opt_uuid(pl_call *call, const char *field, const char *v)
{
	if (eg_nz(v) && !pl_uuid_valid(v))
		return pl_call_violation(call, field, "is not a valid id");
	return PL_OK;
}

// Field checks that need no database.
static int
check_in(pl_call *call, const rule_in *x, const char **bindings)
{
	int rv;

	if (x->s_name && (!eg_nz(x->name) || strlen(x->name) > MAX_NAME))
		return pl_call_violation(call, "name",
		                         "is required, at most %d characters",
		                         MAX_NAME);
	if ((rv = opt_uuid(call, "agent_id", x->agent_id)) != PL_OK ||
	    (rv = opt_uuid(call, "channel_id", x->channel_id)) != PL_OK ||
	    (rv = opt_uuid(call, "template_id", x->template_id)) != PL_OK)
		return rv;
	if (x->s_delay && (x->delay < 1 || x->delay > 43200))
		return pl_call_violation(call, "delay_minutes",
		                         "must be 1..43200 (30 days)");
	if (x->s_max && (x->max_attempts < 0 || x->max_attempts > 10))
		return pl_call_violation(call, "max_attempts",
		                         "must be 1..10 (0 means 1)");
	if (x->s_text && x->text && strlen(x->text) > MAX_TEXT)
		return pl_call_violation(
		        call, "text", "is longer than %d characters", MAX_TEXT);
	*bindings = NULL;
	if (x->s_params && (rv = eg_bindings_json(call, x->params, x->n_params,
	                                          bindings)) != PL_OK)
		return rv;
	return PL_OK;
}

typedef struct rule_arg {
	rule_in in;
	const char *id, *bindings;
	bool create, found;
	void **out;
} rule_arg;

static int
read_rule(pl_call *call, pl_db *db, const char *id, void **out)
{
	const char *p[2] = { eg_tenant(call), id };
	PGresult *r = NULL;
	int rv = eg_exec(call, db,
	                 pl_arena_printf(call->arena,
	                                 "SELECT %s FROM "
	                                 "messaging.followup_rules r WHERE "
	                                 "r.tenant_id = $1 AND r.id = $2",
	                                 SQL_RULE_JSON),
	                 2, p, &r, "read the rule");

	if (rv != PL_OK)
		return rv;
	rv = eg_row_pb(call, r,
	               &parley__messaging__v1__followup_rule__descriptor, out);
	PQclear(r);
	if (rv == PL_NOT_FOUND)
		return pl_call_error(call, PL_NOT_FOUND,
		                     "follow-up rule not found");
	return rv;
}

static int
rule_fn(pl_call *call, pl_db *db, void *arg)
{
	rule_arg *x = arg;
	const char *tenant = eg_tenant(call);
	char delay[16], maxa[16];
	PGresult *r = NULL;
	int rv;

	if (eg_nz(x->in.template_id)) {
		// Another tenant's template is as missing as none.
		const char *p[2] = { tenant, x->in.template_id };
		if ((rv = eg_exec(call, db,
		                  "SELECT 1 FROM messaging.templates WHERE "
		                  "tenant_id = $1 AND id = $2",
		                  2, p, &r, "read the template")) != PL_OK)
			return rv;
		rv = PQntuples(r);
		PQclear(r);
		r = NULL;
		if (rv != 1)
			return pl_call_error(call, PL_NOT_FOUND,
			                     "template %s not found",
			                     x->in.template_id);
	}
	snprintf(delay, sizeof(delay), "%d", x->in.delay);
	snprintf(maxa, sizeof(maxa), "%d",
	         x->in.max_attempts > 0 ? x->in.max_attempts : 1);
	if (x->create) {
		const char *p[11] = { tenant,
			              x->id,
			              x->in.name,
			              eg_nz(x->in.agent_id),
			              eg_nz(x->in.channel_id),
			              delay,
			              x->in.text ? x->in.text : "",
			              eg_nz(x->in.template_id),
			              x->bindings ? x->bindings : "[]",
			              maxa,
			              x->in.active ? "t" : "f" };
		rv = eg_exec(call, db,
		             "INSERT INTO messaging.followup_rules (tenant_id, "
		             "id, name, agent_id, channel_id, delay_minutes, "
		             "text, template_id, template_parameters, "
		             "max_attempts, is_active) VALUES ($1, $2, $3, $4, "
		             "$5, $6::int, $7, $8, $9::jsonb, $10::int, "
		             "$11::boolean) RETURNING id",
		             11, p, &r, "create the rule");
	} else {
		const char *p[11] = {
			tenant,
			x->id,
			x->in.s_name ? x->in.name : NULL,
			x->in.s_agent ? (x->in.agent_id ? x->in.agent_id : "")
			              : NULL,
			x->in.s_channel
			        ? (x->in.channel_id ? x->in.channel_id : "")
			        : NULL,
			x->in.s_delay ? delay : NULL,
			x->in.s_text ? (x->in.text ? x->in.text : "") : NULL,
			x->in.s_template
			        ? (x->in.template_id ? x->in.template_id : "")
			        : NULL,
			x->in.s_params ? x->bindings : NULL,
			x->in.s_max ? maxa : NULL,
			x->in.s_active ? (x->in.active ? "t" : "f") : NULL
		};
		// "" clears agent, channel and template.
		rv = eg_exec(
		        call, db,
		        "UPDATE messaging.followup_rules SET name = "
		        "coalesce($3, name), agent_id = CASE WHEN $4::text IS "
		        "NULL THEN agent_id ELSE nullif($4, '')::uuid END, "
		        "channel_id = CASE WHEN $5::text IS NULL THEN "
		        "channel_id ELSE nullif($5, '')::uuid END, "
		        "delay_minutes = coalesce($6::int, delay_minutes), "
		        "text = coalesce($7, text), template_id = CASE WHEN "
		        "$8::text IS NULL THEN template_id ELSE nullif($8, "
		        "'')::uuid END, template_parameters = "
		        "coalesce($9::jsonb, template_parameters), "
		        "max_attempts = coalesce($10::int, max_attempts), "
		        "is_active = coalesce($11::boolean, is_active), "
		        "updated_at = now() WHERE tenant_id = $1 AND id = $2 "
		        "RETURNING id",
		        11, p, &r, "update the rule");
	}
	if (rv != PL_OK)
		return rv;
	x->found = PQntuples(r) == 1;
	PQclear(r);
	r = NULL;
	if (!x->found)
		return PL_OK;
	{
		// The whole rule must stay sendable: something to send, a
		// template of this tenant whose parameters the bindings fill,
		// on the rule's channel when it names one.
		const char *p[2] = { tenant, x->id };
		if ((rv = eg_exec(
		             call, db,
		             "SELECT r.text <> '' OR r.template_id IS NOT "
		             "NULL, "
		             "r.template_id IS NULL OR t.id IS NOT NULL, "
		             "t.id IS NULL OR t.parameter_count = "
		             "jsonb_array_length(r.template_parameters), "
		             "t.id IS NULL OR r.channel_id IS NULL OR "
		             "t.channel_id = r.channel_id, coalesce((SELECT "
		             "max((e->>'index')::int) FROM "
		             "jsonb_array_elements(r.template_parameters) e), "
		             "0) <= coalesce(t.parameter_count, 0), "
		             "r.is_active FROM messaging.followup_rules r "
		             "LEFT JOIN messaging.templates t ON t.tenant_id = "
		             "r.tenant_id AND t.id = r.template_id WHERE "
		             "r.tenant_id = $1 AND r.id = $2",
		             2, p, &r, "check the rule")) != PL_OK)
			return rv;
		if (PQgetvalue(r, 0, 0)[0] != 't')
			rv = pl_call_violation(
			        call, "text",
			        "give a text, a template or both");
		else if (PQgetvalue(r, 0, 1)[0] != 't')
			rv = pl_call_error(call, PL_NOT_FOUND,
			                   "template not found");
		else if (PQgetvalue(r, 0, 2)[0] != 't' ||
		         PQgetvalue(r, 0, 4)[0] != 't')
			rv = pl_call_violation(
			        call, "template_parameters",
			        "bind each of the template's parameters once");
		else if (PQgetvalue(r, 0, 3)[0] != 't')
			rv = pl_call_error(call, PL_FAILED_PRECONDITION,
			                   "the template belongs to another "
			                   "channel");
		if (rv == PL_OK && PQgetvalue(r, 0, 5)[0] != 't') {
			// An inactive rule sends nothing: its pending
			// follow-ups are canceled.
			rv = eg_exec(call, db,
			             "UPDATE messaging.followups SET status = "
			             "'canceled', reason = 'rule_inactive', "
			             "done_at = now() WHERE tenant_id = $1 AND "
			             "rule_id = $2 AND status = 'pending'",
			             2, p, NULL, "cancel the follow-ups");
		}
		PQclear(r);
		if (rv != PL_OK)
			return rv;
	}
	return read_rule(call, db, x->id, x->out);
}

int
eg_create_followup_rule(pl_call *call, const void *inp, void *outp)
{
	const EG_M(CreateFollowupRuleRequest) *in = inp;
	EG_M(CreateFollowupRuleResponse) *out = outp;
	rule_arg x = { 0 };
	char id[40];
	int rv;

	x.in.name = in->name;
	x.in.agent_id = in->agent_id;
	x.in.channel_id = in->channel_id;
	x.in.text = in->text;
	x.in.template_id = in->template_id;
	x.in.params = in->template_parameters;
	x.in.n_params = in->n_template_parameters;
	x.in.delay = in->delay_minutes;
	x.in.max_attempts = in->max_attempts;
	// Absent, a new rule is active.
	x.in.active =
	        in->active_given_case !=
	                PARLEY__MESSAGING__V1__CREATE_FOLLOWUP_RULE_REQUEST__ACTIVE_GIVEN_ACTIVE ||
	        in->active;
	x.in.s_name = x.in.s_agent = x.in.s_channel = x.in.s_delay =
	        x.in.s_text = x.in.s_template = x.in.s_params = x.in.s_max =
	                x.in.s_active = true;
	if ((rv = check_in(call, &x.in, &x.bindings)) != PL_OK)
		return rv;
	pl_uuid7_str(id);
	x.id = id;
	x.create = true;
	x.out = (void **)&out->rule;
	if ((rv = eg_tx(call, eg_tenant(call), rule_fn, &x)) != PL_OK)
		return rv;
	out->id = out->rule->id;
	return PL_OK;
}

int
eg_update_followup_rule(pl_call *call, const void *inp, void *outp)
{
	const EG_M(UpdateFollowupRuleRequest) *in = inp;
	EG_M(UpdateFollowupRuleResponse) *out = outp;
	static const char *const fields[] = {
		"name",  "agent_id",    "channel_id",          "delay_minutes",
		"text",  "template_id", "template_parameters", "max_attempts",
		"active"
	};
	bool all = in->n_update_mask == 0;
	char **m = in->update_mask;
	size_t n = in->n_update_mask;
	rule_arg x = { 0 };
	int rv;

	if (!pl_uuid_valid(in->id))
		return pl_call_error(call, PL_NOT_FOUND,
		                     "follow-up rule not found");
	for (size_t i = 0; i < n; i++) {
		bool ok = false;
		for (size_t f = 0; f < sizeof(fields) / sizeof(fields[0]); f++)
			ok = ok || strcmp(m[i], fields[f]) == 0;
		if (!ok)
			return pl_call_violation(call, "update_mask",
			                         "unknown field \"%s\"", m[i]);
	}
	x.in.name = in->name;
	x.in.agent_id = in->agent_id;
	x.in.channel_id = in->channel_id;
	x.in.text = in->text;
	x.in.template_id = in->template_id;
	x.in.params = in->template_parameters;
	x.in.n_params = in->n_template_parameters;
	x.in.delay = in->delay_minutes;
	x.in.max_attempts = in->max_attempts;
	x.in.active = in->active;
	// Without a mask: the fields given; "active" only turns a rule on.
	x.in.s_name = all ? eg_nz(in->name) != NULL : inmask(m, n, "name");
	x.in.s_agent =
	        all ? eg_nz(in->agent_id) != NULL : inmask(m, n, "agent_id");
	x.in.s_channel = all ? eg_nz(in->channel_id) != NULL
	                     : inmask(m, n, "channel_id");
	x.in.s_delay =
	        all ? in->delay_minutes != 0 : inmask(m, n, "delay_minutes");
	x.in.s_text = all ? eg_nz(in->text) != NULL : inmask(m, n, "text");
	x.in.s_template = all ? eg_nz(in->template_id) != NULL
	                      : inmask(m, n, "template_id");
	x.in.s_params = all ? in->n_template_parameters > 0
	                    : inmask(m, n, "template_parameters");
	x.in.s_max = all ? in->max_attempts != 0 : inmask(m, n, "max_attempts");
	x.in.s_active = all ? in->active : inmask(m, n, "active");
	if ((rv = check_in(call, &x.in, &x.bindings)) != PL_OK)
		return rv;
	if (x.in.s_params && x.bindings == NULL)
		x.bindings = "[]";
	x.id = in->id;
	x.out = (void **)&out->rule;
	if ((rv = eg_tx(call, eg_tenant(call), rule_fn, &x)) != PL_OK)
		return rv;
	if (!x.found)
		return pl_call_error(call, PL_NOT_FOUND,
		                     "follow-up rule not found");
	return PL_OK;
}

int
eg_get_followup_rule(pl_call *call, const void *inp, void *outp)
{
	const EG_M(GetFollowupRuleRequest) *in = inp;
	EG_M(GetFollowupRuleResponse) *out = outp;
	const char *p[2] = { eg_tenant(call), in->id };

	if (!pl_uuid_valid(in->id))
		return pl_call_error(call, PL_NOT_FOUND,
		                     "follow-up rule not found");
	return eg_get(call, eg_tenant(call),
	              pl_arena_printf(call->arena,
	                              "SELECT %s FROM messaging.followup_rules "
	                              "r WHERE r.tenant_id = $1 AND r.id = $2",
	                              SQL_RULE_JSON),
	              2, p, &parley__messaging__v1__followup_rule__descriptor,
	              (void **)&out->rule, "follow-up rule");
}

int
eg_list_followup_rules(pl_call *call, const void *inp, void *outp)
{
	const EG_M(ListFollowupRulesRequest) *in = inp;
	EG_M(ListFollowupRulesResponse) *out = outp;
	char *after, lim[16];
	int size, rv;

	if ((rv = eg_page(call, in->page, &size, &after)) != PL_OK ||
	    (rv = opt_uuid(call, "agent_id", in->agent_id)) != PL_OK ||
	    (rv = opt_uuid(call, "channel_id", in->channel_id)) != PL_OK)
		return rv;
	snprintf(lim, sizeof(lim), "%d", size + 1);
	{
		const char *p[5] = { eg_tenant(call), after, lim,
			             eg_nz(in->agent_id),
			             eg_nz(in->channel_id) };
		return eg_list(
		        call, eg_tenant(call),
		        pl_arena_printf(
		                call->arena,
		                "SELECT %s FROM messaging.followup_rules "
		                "r WHERE r.tenant_id = $1 AND ($2::uuid "
		                "IS NULL OR r.id < $2::uuid) AND "
		                "($4::uuid IS NULL OR r.agent_id = "
		                "$4::uuid) AND ($5::uuid IS NULL OR "
		                "r.channel_id = $5::uuid) ORDER BY r.id "
		                "DESC LIMIT $3",
		                SQL_RULE_JSON),
		        5, p, size,
		        &parley__messaging__v1__followup_rule__descriptor,
		        (void ***)&out->rules, &out->n_rules,
		        &out->next_page_token);
	}
}

typedef struct del_arg {
	const char *const *p;
	bool found;
} del_arg;

static int
del_fn(pl_call *call, pl_db *db, void *arg)
{
	del_arg *x = arg;
	PGresult *r = NULL;
	// Its follow-ups go with it (ON DELETE CASCADE): pending ones are
	// never sent.
	int rv = eg_exec(call, db,
	                 "DELETE FROM messaging.followup_rules WHERE tenant_id "
	                 "= $1 AND id = $2",
	                 2, x->p, &r, "delete the rule");

	if (rv == PL_OK)
		x->found = atoi(PQcmdTuples(r)) == 1;
	PQclear(r);
	return rv;
}

int
eg_delete_followup_rule(pl_call *call, const void *inp, void *outp)
{
	const EG_M(DeleteFollowupRuleRequest) *in = inp;
	const char *p[2] = { eg_tenant(call), in->id };
	del_arg x = { p, false };
	int rv;

	(void)outp;
	if (!pl_uuid_valid(in->id))
		return pl_call_error(call, PL_NOT_FOUND,
		                     "follow-up rule not found");
	if ((rv = eg_tx(call, eg_tenant(call), del_fn, &x)) != PL_OK)
		return rv;
	return x.found ? PL_OK
	               : pl_call_error(call, PL_NOT_FOUND,
	                               "follow-up rule not found");
}

// ---------------------------------------------------------------------------
// The scheduler

typedef struct fu_arg {
	int got;     // a due row was claimed
	bool queued; // a message was queued
} fu_arg;

// Ends the row with a status other than sent.
static int
finish(pl_db *db, const char *tenant, const char *id, const char *status,
       const char *reason)
{
	const char *p[4] = { tenant, id, status, reason };

	return eg_exec(NULL, db,
	               "UPDATE messaging.followups SET status = $3, reason = "
	               "$4, done_at = now() WHERE tenant_id = $1 AND id = $2",
	               4, p, NULL, "end the follow-up");
}

// Columns of the due row's read (below).
enum {
	F_TENANT,
	F_ID,
	F_RULE,
	F_CONV,
	F_ATTEMPT,
	F_ACTIVE,
	F_DELAY,
	F_TEXT,
	F_TEMPLATE,
	F_MAX,
	F_CSTATUS,
	F_OWNER,
	F_CHANNEL,
	F_WINDOW,
	F_OPTED_OUT,
	F_REPLIED,
	F_TSTATUS,
	F_TCHANNEL_OK,
	F_TNAME,
	F_TLANG,
	F_RENDERED,
	F_PARAMS,
	F_PARAMS_OK,
};

static int
fu_fn(pl_db *db, void *arg)
{
	fu_arg *x = arg;
	PGresult *r = NULL;
	const char *tenant, *id, *reason = NULL;
	char mid[40], next[40];
	bool window, use_template = false;
	int rv;

	x->got = 0;
	x->queued = false;
	// Service-level claim across tenants (tenant "*"); the row lock is
	// the lease: a crash rolls everything below back.
	rv = eg_exec(NULL, db,
	             "SELECT f.tenant_id, f.id, f.rule_id, f.conversation_id, "
	             "f.attempt, r.is_active, r.delay_minutes, r.text, "
	             "r.template_id, r.max_attempts, cv.status, cv.owner, "
	             "cv.channel_id, k.external_id_kind = 'webchat_session' OR "
	             "coalesce(cv.last_inbound_at > now() - interval '24 "
	             "hours', false), k.opted_out_at IS NOT NULL, "
	             "coalesce(cv.last_inbound_at > am.created_at, false), "
	             "t.status, t.id IS NOT NULL AND t.channel_id = "
	             "cv.channel_id, t.name, t.language, "
	             "messaging.render_params(t.components->'body'->>'text', "
	             "b.params), to_jsonb(b.params)::text, "
	             "coalesce(array_length(b.params, 1), 0) = "
	             "coalesce(t.parameter_count, 0) FROM messaging.followups "
	             "f JOIN messaging.followup_rules r ON r.tenant_id = "
	             "f.tenant_id AND r.id = f.rule_id JOIN "
	             "messaging.conversations cv ON cv.tenant_id = f.tenant_id "
	             "AND cv.id = f.conversation_id JOIN messaging.contacts k "
	             "ON k.tenant_id = f.tenant_id AND k.id = cv.contact_id "
	             "LEFT JOIN messaging.messages am ON am.tenant_id = "
	             "f.tenant_id AND am.id = f.anchor_message_id LEFT JOIN "
	             "messaging.templates t ON t.tenant_id = f.tenant_id AND "
	             "t.id = r.template_id CROSS JOIN LATERAL (SELECT "
	             "messaging.bind_params(r.template_parameters, k.name, "
	             "coalesce(k.phone, ''), k.external_id, k.custom_fields) "
	             "AS params) b WHERE f.status = 'pending' AND f.due_at <= "
	             "now() ORDER BY f.due_at LIMIT 1 FOR UPDATE OF f SKIP "
	             "LOCKED",
	             0, NULL, &r, "claim a due follow-up");
	if (rv != PL_OK)
		return rv;
	if (PQntuples(r) == 0) {
		PQclear(r);
		return PL_OK;
	}
	x->got = 1;
	tenant = PQgetvalue(r, 0, F_TENANT);
	id = PQgetvalue(r, 0, F_ID);
	if ((rv = messaging_store_tx_tenant(db, tenant)) != PL_OK)
		goto out_clear;
	window = PQgetvalue(r, 0, F_WINDOW)[0] == 't';
	if (PQgetvalue(r, 0, F_ACTIVE)[0] != 't')
		reason = "rule_inactive";
	else if (PQgetvalue(r, 0, F_REPLIED)[0] == 't')
		reason = "replied";
	else if (strcmp(PQgetvalue(r, 0, F_CSTATUS), "closed") == 0)
		reason = "closed";
	else if (strcmp(PQgetvalue(r, 0, F_OWNER), "human") == 0)
		reason = "human_owned";
	if (reason != NULL) {
		rv = finish(db, tenant, id, "canceled", reason);
		goto out_clear;
	}
	if (PQgetvalue(r, 0, F_OPTED_OUT)[0] == 't') {
		rv = finish(db, tenant, id, "skipped", "opted_out");
		goto out_clear;
	}
	if (!window || PQgetvalue(r, 0, F_TEXT)[0] == '\0') {
		// Outside the window only an approved template may go.
		if (PQgetisnull(r, 0, F_TEMPLATE))
			reason = window ? "no_text" : "outside_window";
		else if (strcmp(PQgetvalue(r, 0, F_TSTATUS), "approved") != 0)
			reason = "template_not_approved";
		else if (PQgetvalue(r, 0, F_TCHANNEL_OK)[0] != 't')
			reason = "template_channel";
		else if (PQgetvalue(r, 0, F_PARAMS_OK)[0] != 't')
			reason = "template_parameters";
		else
			use_template = true;
		if (reason != NULL) {
			rv = finish(db, tenant, id, "skipped", reason);
			goto out_clear;
		}
	}
	{
		json_t *meta =
		        json_pack("{s:{s:s, s:i}}", "followup", "rule_id",
		                  PQgetvalue(r, 0, F_RULE), "attempt",
		                  atoi(PQgetvalue(r, 0, F_ATTEMPT)));
		char *mj;
		if (use_template) {
			json_t *ps =
			        json_loads(PQgetvalue(r, 0, F_PARAMS), 0, NULL);
			json_object_set_new(
			        meta, "template",
			        json_pack("{s:s, s:s, s:s, s:o}", "id",
			                  PQgetvalue(r, 0, F_TEMPLATE), "name",
			                  PQgetvalue(r, 0, F_TNAME), "language",
			                  PQgetvalue(r, 0, F_TLANG),
			                  "parameters",
			                  ps ? ps : json_array()));
		}
		mj = json_dumps(meta, JSON_COMPACT);
		json_decref(meta);
		rv = eg_queue(db, tenant, PQgetvalue(r, 0, F_CONV),
		              PQgetvalue(r, 0, F_CHANNEL),
		              use_template ? "template" : "text",
		              use_template ? PQgetvalue(r, 0, F_RENDERED)
		                           : PQgetvalue(r, 0, F_TEXT),
		              mj, NULL, mid);
		free(mj);
		if (rv != PL_OK)
			goto out_clear;
	}
	{
		const char *p[3] = { tenant, id, mid };
		if ((rv = eg_exec(NULL, db,
		                  "UPDATE messaging.followups SET status = "
		                  "'sent', message_id = $3, done_at = now() "
		                  "WHERE tenant_id = $1 AND id = $2",
		                  3, p, NULL, "mark the follow-up sent")) !=
		    PL_OK)
			goto out_clear;
	}
	if (atoi(PQgetvalue(r, 0, F_ATTEMPT)) < atoi(PQgetvalue(r, 0, F_MAX))) {
		// The next attempt, the rule's delay after this one.
		const char *p[3] = { tenant, id, next };
		pl_uuid7_str(next);
		if ((rv = eg_exec(
		             NULL, db,
		             "INSERT INTO messaging.followups (tenant_id, id, "
		             "rule_id, conversation_id, anchor_message_id, "
		             "attempt, due_at) SELECT tenant_id, $3, rule_id, "
		             "conversation_id, anchor_message_id, attempt + 1, "
		             "now() + make_interval(mins => (SELECT "
		             "delay_minutes FROM messaging.followup_rules r "
		             "WHERE r.tenant_id = f.tenant_id AND r.id = "
		             "f.rule_id)) FROM messaging.followups f WHERE "
		             "tenant_id = $1 AND id = $2",
		             3, p, NULL, "schedule the next follow-up")) !=
		    PL_OK)
			goto out_clear;
	}
	{
		json_t *dj = json_pack("{s:s, s:s}", "conversation_id",
		                       PQgetvalue(r, 0, F_CONV), "channel_id",
		                       PQgetvalue(r, 0, F_CHANNEL));
		json_t *pj = json_pack(
		        "{s:s, s:s, s:i, s:s}", "followup_id", id, "rule_id",
		        PQgetvalue(r, 0, F_RULE), "attempt",
		        atoi(PQgetvalue(r, 0, F_ATTEMPT)), "message_id", mid);
		char *d = json_dumps(dj, JSON_COMPACT);
		char *pp = json_dumps(pj, JSON_COMPACT);
		rv = eg_event(db, tenant, "followup.sent", d, pp);
		free(d);
		free(pp);
		json_decref(dj);
		json_decref(pj);
	}
	x->queued = rv == PL_OK;
out_clear:
	PQclear(r);
	return rv;
}

int
engage_followups_once(msg_service *s, pl_db *db, pl_arena *a, int max)
{
	int handled = 0;

	(void)a;
	while (handled < max) {
		fu_arg x = { 0, false };
		int rv = pl_db_tx(db, "*", fu_fn, &x);
		if (rv != PL_OK) {
			pl_warn("follow-ups: could not send a due follow-up: "
			        "%s",
			        pl_status_name(rv));
			return handled > 0 ? handled : -1;
		}
		if (!x.got)
			break;
		handled++;
		if (x.queued && s != NULL)
			messaging_kick_kind(s, MSG_WORK_DELIVERY);
	}
	return handled;
}

static struct {
	pthread_t th[4];
	int nth;
	volatile bool stop;
} fg;

static void *
fu_main(void *arg)
{
	msg_service *s = arg;
	pl_db *db = pl_db_open(s->database_url);
	pl_arena a;
	int64_t poll = s->poll_ms > 0 ? s->poll_ms : 200;

	pthread_setname_np(pthread_self(), "msg-followups");
	// Follow-ups are due in minutes: a poll of at least a second is
	// plenty, unless the service polls slower.
	if (poll < 1000)
		poll = 1000;
	pl_arena_init(&a, 0, 1 << 20);
	while (!fg.stop) {
		int n, nb = 0;
		pl_arena_reset(&a);
		n = engage_followups_once(s, db, &a, 100);
		// Conversations whose person went quiet for the tenant's
		// auto_handback_minutes go back to the bot (migration 010).
		if (messaging_store_handback_due(db, 100, &nb) == PL_OK &&
		    nb > 0)
			pl_info("handed %d conversation(s) back to the bot "
			        "after "
			        "a person's inactivity",
			        nb);
		for (int64_t t = 0; n < 100 && t < poll && !fg.stop; t += 50)
			usleep(50000);
	}
	pl_arena_fini(&a);
	pl_db_close(db);
	return NULL;
}

int
engage_followups_start(msg_service *s)
{
	const char *n = getenv("PARLEY_MESSAGING_FOLLOWUP_WORKERS");
	int want = n && n[0] ? atoi(n) : 1;

	if (want < 0 || want > 4) {
		pl_error("PARLEY_MESSAGING_FOLLOWUP_WORKERS must be 0..4");
		return PL_INVALID_ARGUMENT;
	}
	fg.stop = false;
	fg.nth = 0;
	for (int i = 0; i < want; i++)
		if (pthread_create(&fg.th[fg.nth], NULL, fu_main, s) == 0)
			fg.nth++;
	return PL_OK;
}

void
engage_followups_stop(void)
{
	fg.stop = true;
	for (int i = 0; i < fg.nth; i++)
		pthread_join(fg.th[i], NULL);
	fg.nth = 0;
}
