// Leads: one per (tenant, contact), made by people or from what the agent
// captured; the stage shown is the contact's latest conversation's (view
// leads_v), never a column of the lead.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "pl/id.h"
#include "pl/log.h"
#include "engage.h"

static const char *const lstatus_names[] = { "",          "new",
	                                     "contacted", "qualified",
	                                     "converted", "lost" };
static const char *const stage_names[] = { "",          "new",      "engaged",
	                                   "qualified", "proposal", "won",
	                                   "lost" };

static int
check_text(pl_call *call, const char *field, const char *v, size_t max)
{
	if (v && strlen(v) > max)
		return pl_call_violation(call, field,
		                         "is longer than %zu characters", max);
	return PL_OK;
}

static int
check_lead(pl_call *call, const char *name, const char *email,
           const char *phone, const char *intent)
{
	int rv;

	if ((rv = check_text(call, "name", name, 256)) != PL_OK ||
	    (rv = check_text(call, "email", email, 320)) != PL_OK ||
	    (rv = check_text(call, "phone", phone, 32)) != PL_OK ||
	    (rv = check_text(call, "source_intent", intent, 128)) != PL_OK)
		return rv;
	if (eg_nz(email) && strchr(email, '@') == NULL)
		return pl_call_violation(call, "email",
		                         "is not an email address");
	return PL_OK;
}

static char *
lead_sql(pl_call *call, const char *cte)
{
	(void)call;
	return (char *)cte;
}

static int
lead_event(pl_db *db, const char *tenant, const char *type, const char *lead_id,
           const char *contact_id, const char *status)
{
	char *d = NULL, *p = NULL;
	json_t *dj = json_pack("{s:s}", "contact_id", contact_id);
	json_t *pj = json_pack("{s:s, s:s}", "lead_id", lead_id, "status",
	                       status ? status : "");
	int rv;

	d = json_dumps(dj, JSON_COMPACT);
	p = json_dumps(pj, JSON_COMPACT);
	rv = eg_event(db, tenant, type, d, p);
	free(d);
	free(p);
	json_decref(dj);
	json_decref(pj);
	return rv;
}

typedef struct lead_arg {
	const char *const *p;
	int n;
	const char *sql;
	const char *type;
	void **out;
	bool found;
} lead_arg;

static int
lead_fn(pl_call *call, pl_db *db, void *arg)
{
	lead_arg *x = arg;
	PGresult *r = NULL;
	json_t *o;
	int rv = eg_exec(call, db, x->sql, x->n, x->p, &r, "write the lead");

	if (rv != PL_OK)
		return rv;
	x->found = PQntuples(r) == 1;
	if (!x->found) {
		PQclear(r);
		return PL_OK;
	}
	{
		// Read back through the view (a statement of its own: the
		// write is not visible to its own statement's scans).
		const char *q[2] = { eg_tenant(call),
			             pl_arena_strdup(call->arena,
			                             PQgetvalue(r, 0, 0)) };
		PQclear(r);
		r = NULL;
		if ((rv = eg_exec(
		             call, db,
		             pl_arena_printf(call->arena,
		                             "SELECT %s FROM "
		                             "messaging.leads_v l WHERE "
		                             "l.tenant_id = $1 AND l.id = $2",
		                             EG_SQL_LEAD_JSON),
		             2, q, &r, "read the lead")) != PL_OK)
			return rv;
	}
	rv = eg_row_pb(call, r, &parley__messaging__v1__lead__descriptor,
	               x->out);
	o = json_loads(PQgetvalue(r, 0, 0), 0, NULL);
	if (rv == PL_OK)
		rv = lead_event(
		        db, eg_tenant(call), x->type,
		        json_string_value(json_object_get(o, "id")),
		        json_string_value(json_object_get(o, "contact_id")),
		        json_string_value(json_object_get(o, "status")));
	json_decref(o);
	PQclear(r);
	return rv;
}

int
eg_create_lead(pl_call *call, const void *inp, void *outp)
{
	const EG_M(CreateLeadRequest) *in = inp;
	EG_M(CreateLeadResponse) *out = outp;
	const char *extra;
	char id[40];
	lead_arg x = { 0 };
	int rv;

	if ((rv = eg_need_uuid(call, "contact_id", in->contact_id)) != PL_OK ||
	    (rv = check_lead(call, in->name, in->email, in->phone,
	                     in->source_intent)) != PL_OK ||
	    (rv = eg_json_arg(call, "extra", in->extra, false, EG_MAX_JSON,
	                      "{}", &extra)) != PL_OK)
		return rv;
	if (in->status < 0 || in->status > 5)
		return pl_call_violation(call, "status",
		                         "is not a lead status");
	pl_uuid7_str(id);
	// p2 outlives the block: x keeps a pointer to it until eg_tx returns.
	const char *p2[9];
	{
		const char *p[8] = { eg_tenant(call),
			             id,
			             in->contact_id,
			             in->name ? in->name : "",
			             in->email ? in->email : "",
			             in->phone ? in->phone : "",
			             lstatus_names[in->status ? in->status : 1],
			             extra };
		memcpy(p2, p, sizeof(p));
		p2[8] = in->source_intent ? in->source_intent : "";
		x.p = p2;
		x.n = 9;
		// The contact must be the caller's (else NOT_FOUND, as a
		// missing one).
		x.sql = lead_sql(
		        call,
		        "INSERT INTO messaging.leads (tenant_id, id, "
		        "contact_id, "
		        "name, email, phone, status, extra, source_intent, "
		        "converted_at) SELECT $1, $2, k.id, $4, $5, $6, $7, "
		        "$8::jsonb, $9, CASE WHEN $7 = 'converted' THEN now() "
		        "END FROM messaging.contacts k WHERE k.tenant_id = $1 "
		        "AND k.id = $3 RETURNING id");
		x.type = "lead.created";
		x.out = (void **)&out->lead;
	}
	if ((rv = eg_tx(call, eg_tenant(call), lead_fn, &x)) != PL_OK)
		return rv;
	if (!x.found)
		return pl_call_error(call, PL_NOT_FOUND, "contact %s not found",
		                     in->contact_id);
	out->id = out->lead->id;
	return PL_OK;
}

static bool
has(char **mask, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (mask[i] && strcmp(mask[i], name) == 0)
			return true;
	return false;
}

int
eg_update_lead(pl_call *call, const void *inp, void *outp)
{
	const EG_M(UpdateLeadRequest) *in = inp;
	EG_M(UpdateLeadResponse) *out = outp;
	static const char *const fields[] = {
		"name",     "email",         "phone",
		"status",   "source_intent", "conversion_value_minor",
		"currency", "extra"
	};
	bool all = in->n_update_mask == 0, set[8];
	const char *extra = NULL, *p[11];
	char val[24];
	lead_arg x = { 0 };
	int rv;

	if (!pl_uuid_valid(in->id))
		return pl_call_error(call, PL_NOT_FOUND, "lead not found");
	for (size_t i = 0; i < in->n_update_mask; i++) {
		bool ok = false;
		for (int f = 0; f < 8; f++)
			ok = ok || strcmp(in->update_mask[i], fields[f]) == 0;
		if (!ok)
			return pl_call_violation(call, "update_mask",
			                         "unknown field \"%s\"",
			                         in->update_mask[i]);
	}
	set[0] = all ? eg_nz(in->name) != NULL
	             : has(in->update_mask, in->n_update_mask, "name");
	set[1] = all ? eg_nz(in->email) != NULL
	             : has(in->update_mask, in->n_update_mask, "email");
	set[2] = all ? eg_nz(in->phone) != NULL
	             : has(in->update_mask, in->n_update_mask, "phone");
	set[3] = all ? in->status != 0
	             : has(in->update_mask, in->n_update_mask, "status");
	set[4] = all ? eg_nz(in->source_intent) != NULL
	             : has(in->update_mask, in->n_update_mask, "source_intent");
	set[5] = all ? in->conversion_value_minor != 0
	             : has(in->update_mask, in->n_update_mask,
	                   "conversion_value_minor");
	set[6] = all ? eg_nz(in->currency) != NULL
	             : has(in->update_mask, in->n_update_mask, "currency");
	set[7] = all ? (in->extra && eg_nz(in->extra->text))
	             : has(in->update_mask, in->n_update_mask, "extra");
	if ((rv = check_lead(call, in->name, in->email, in->phone,
	                     in->source_intent)) != PL_OK)
		return rv;
	if (set[3] && (in->status < 1 || in->status > 5))
		return pl_call_violation(call, "status",
		                         "is not a lead status");
	if (in->conversion_value_minor < 0)
		return pl_call_violation(call, "conversion_value_minor",
		                         "must not be negative");
	if (set[6] && eg_nz(in->currency) &&
	    (strlen(in->currency) != 3 || in->currency[0] < 'A' ||
	     in->currency[0] > 'Z'))
		return pl_call_violation(call, "currency",
		                         "must be an ISO 4217 code (\"EUR\")");
	if (set[7] && (rv = eg_json_arg(call, "extra", in->extra, false,
	                                EG_MAX_JSON, "{}", &extra)) != PL_OK)
		return rv;
	snprintf(val, sizeof(val), "%lld",
	         (long long)in->conversion_value_minor);
	p[0] = eg_tenant(call);
	p[1] = in->id;
	p[2] = set[0] ? (in->name ? in->name : "") : NULL;
	p[3] = set[1] ? (in->email ? in->email : "") : NULL;
	p[4] = set[2] ? (in->phone ? in->phone : "") : NULL;
	p[5] = set[3] ? lstatus_names[in->status] : NULL;
	p[6] = set[4] ? (in->source_intent ? in->source_intent : "") : NULL;
	p[7] = set[5] ? val : NULL;
	p[8] = set[6] ? (in->currency ? in->currency : "") : NULL;
	p[9] = set[7] ? extra : NULL;
	x.p = p;
	x.n = 10;
	x.sql = lead_sql(
	        call,
	        "UPDATE messaging.leads SET name = coalesce($3, name), email = "
	        "coalesce($4, email), phone = coalesce($5, phone), "
	        "converted_at = CASE WHEN $6 = 'converted' AND status <> "
	        "'converted' THEN now() WHEN $6 IS NOT NULL AND $6 <> "
	        "'converted' THEN NULL ELSE converted_at END, status = "
	        "coalesce($6, status), source_intent = coalesce($7, "
	        "source_intent), conversion_value_minor = coalesce($8::bigint, "
	        "conversion_value_minor), currency = coalesce($9, currency), "
	        "extra = coalesce($10::jsonb, extra), updated_at = now() WHERE "
	        "tenant_id = $1 AND id = $2 RETURNING id");
	x.type = "lead.updated";
	x.out = (void **)&out->lead;
	if ((rv = eg_tx(call, eg_tenant(call), lead_fn, &x)) != PL_OK)
		return rv;
	if (!x.found)
		return pl_call_error(call, PL_NOT_FOUND, "lead not found");
	return PL_OK;
}

int
eg_get_lead(pl_call *call, const void *inp, void *outp)
{
	const EG_M(GetLeadRequest) *in = inp;
	EG_M(GetLeadResponse) *out = outp;
	const char *p[2] = { eg_tenant(call), in->id };

	if (!pl_uuid_valid(in->id))
		return pl_call_error(call, PL_NOT_FOUND, "lead not found");
	return eg_get(call, eg_tenant(call),
	              pl_arena_printf(call->arena,
	                              "SELECT %s FROM messaging.leads_v l "
	                              "WHERE l.tenant_id = $1 AND l.id = $2",
	                              EG_SQL_LEAD_JSON),
	              2, p, &parley__messaging__v1__lead__descriptor,
	              (void **)&out->lead, "lead");
}

int
eg_list_leads(pl_call *call, const void *inp, void *outp)
{
	const EG_M(ListLeadsRequest) *in = inp;
	EG_M(ListLeadsResponse) *out = outp;
	char *after, lim[16];
	int size, rv;

	if ((rv = eg_page(call, in->page, &size, &after)) != PL_OK)
		return rv;
	if (in->status < 0 || in->status > 5)
		return pl_call_violation(call, "status",
		                         "is not a lead status");
	if (in->stage < 0 || in->stage > 6)
		return pl_call_violation(call, "stage", "is not a stage");
	if (eg_nz(in->contact_id) && !pl_uuid_valid(in->contact_id))
		return pl_call_violation(call, "contact_id",
		                         "is not a valid id");
	snprintf(lim, sizeof(lim), "%d", size + 1);
	{
		const char *p[6] = {
			eg_tenant(call),
			after,
			lim,
			in->status ? lstatus_names[in->status] : NULL,
			in->stage ? stage_names[in->stage] : NULL,
			eg_nz(in->contact_id),
		};
		return eg_list(
		        call, eg_tenant(call),
		        pl_arena_printf(
		                call->arena,
		                "SELECT %s FROM messaging.leads_v l WHERE "
		                "l.tenant_id = $1 AND ($2::uuid IS NULL "
		                "OR l.id < $2::uuid) AND ($4::text IS "
		                "NULL OR l.status = $4) AND ($5::text IS "
		                "NULL OR l.stage = $5) AND ($6::uuid IS "
		                "NULL OR l.contact_id = $6::uuid) ORDER "
		                "BY l.id DESC LIMIT $3",
		                EG_SQL_LEAD_JSON),
		        6, p, size, &parley__messaging__v1__lead__descriptor,
		        (void ***)&out->leads, &out->n_leads,
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
	int rv = eg_exec(call, db,
	                 "DELETE FROM messaging.leads WHERE tenant_id = $1 AND "
	                 "id = $2",
	                 2, x->p, &r, "delete the lead");

	if (rv == PL_OK)
		x->found = atoi(PQcmdTuples(r)) == 1;
	PQclear(r);
	return rv;
}

int
eg_delete_lead(pl_call *call, const void *inp, void *outp)
{
	const EG_M(DeleteLeadRequest) *in = inp;
	const char *p[2] = { eg_tenant(call), in->id };
	del_arg x = { p, false };
	int rv;

	(void)outp;
	if (!pl_uuid_valid(in->id))
		return pl_call_error(call, PL_NOT_FOUND, "lead not found");
	if ((rv = eg_tx(call, eg_tenant(call), del_fn, &x)) != PL_OK)
		return rv;
	return x.found ? PL_OK
	               : pl_call_error(call, PL_NOT_FOUND, "lead not found");
}

// ---------------------------------------------------------------------------
// From the agent's turn (inside its transaction).

int
engage_lead_capture(pl_db *db, const char *tenant, const char *contact_id,
                    const char *name, const char *email, const char *phone,
                    const char *intent)
{
	char id[40];
	const char *p[7];
	PGresult *r = NULL;
	int rv;

	pl_uuid7_str(id);
	p[0] = tenant;
	p[1] = id;
	p[2] = contact_id;
	p[3] = name ? name : "";
	p[4] = email ? email : "";
	p[5] = phone ? phone : "";
	p[6] = intent ? intent : "";
	// Captured fields fill the lead; empty ones leave what it has.
	rv = eg_exec(NULL, db,
	             "INSERT INTO messaging.leads AS l (tenant_id, id, "
	             "contact_id, name, email, phone, source_intent) VALUES "
	             "($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (tenant_id, "
	             "contact_id) DO UPDATE SET name = coalesce(nullif("
	             "EXCLUDED.name, ''), l.name), email = coalesce(nullif("
	             "EXCLUDED.email, ''), l.email), phone = coalesce(nullif("
	             "EXCLUDED.phone, ''), l.phone), source_intent = CASE WHEN "
	             "l.source_intent = '' THEN EXCLUDED.source_intent ELSE "
	             "l.source_intent END, updated_at = now() RETURNING id, "
	             "(xmax = 0), status",
	             7, p, &r, "record the captured lead");
	if (rv != PL_OK)
		return rv;
	rv = lead_event(db, tenant,
	                PQgetvalue(r, 0, 1)[0] == 't' ? "lead.created"
	                                              : "lead.updated",
	                PQgetvalue(r, 0, 0), contact_id, PQgetvalue(r, 0, 2));
	PQclear(r);
	return rv;
}
