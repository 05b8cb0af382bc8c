// The actions center (human in the loop): what an agent (or a service)
// proposes waits, pending, for a person. Approving executes it once (an
// order_confirmation creates or confirms the order and sends the
// confirmation); rejecting can tell the contact politely; an expired action
// never executes. Both decisions are idempotent: the row is locked and its
// status decides.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "pl/id.h"
#include "pl/log.h"
#include "engage.h"

static const char *const kind_names[] = { "", "order_confirmation", "refund",
	                                  "discount", "custom" };
static const char *const astatus_names[] = { "", "pending", "approved",
	                                     "rejected", "expired" };

int engage_order_create(pl_call *call, pl_db *db, const char *tenant,
                        const char *contact_id, const char *conversation_id,
                        const char *message_id, const char *currency,
                        const char *items, const char *address,
                        const char *notes, const char *status, char id_out[40]);
int engage_order_set_status(pl_call *call, pl_db *db, const char *tenant,
                            const char *id, const char *to, const char *reason,
                            bool notify);

static char *
action_sql(pl_call *call, const char *where)
{
	return pl_arena_printf(call->arena,
	                       "SELECT %s FROM messaging.actions a WHERE "
	                       "a.tenant_id = $1 AND %s",
	                       EG_SQL_ACTION_JSON, where);
}

static int
action_event(pl_db *db, const char *tenant, const char *type, const char *id,
             const char *kind, const char *status)
{
	json_t *pj = json_pack("{s:s, s:s, s:s}", "action_id", id, "kind", kind,
	                       "status", status);
	char *p = json_dumps(pj, JSON_COMPACT);
	int rv = eg_event(db, tenant, type, NULL, p);

	free(p);
	json_decref(pj);
	return rv;
}

// Inserts an action (the conversation's contact filled in) unless its
// dedupe key exists; in the caller's transaction. *created tells which.
static int
action_insert(pl_call *call, pl_db *db, const char *tenant, const char *kind,
              const char *conv, const char *summary, const char *payload,
              const char *agent, const char *user, const char *expires,
              const char *dedupe, char id_out[40], bool *created)
{
	const char *p[10];
	PGresult *r = NULL;
	int rv;

	pl_uuid7_str(id_out);
	p[0] = tenant;
	p[1] = id_out;
	p[2] = kind;
	p[3] = conv;
	p[4] = summary ? summary : "";
	p[5] = payload ? payload : "{}";
	p[6] = agent;
	p[7] = user;
	p[8] = expires;
	p[9] = dedupe;
	rv = eg_exec(
	        call, db,
	        "INSERT INTO messaging.actions (tenant_id, id, kind, "
	        "conversation_id, contact_id, summary, payload, "
	        "requested_by_agent_id, requested_by_user_id, expires_at, "
	        "dedupe_key) SELECT $1, $2, $3, c.id, c.contact_id, $5, "
	        "$6::jsonb, $7::uuid, $8::uuid, coalesce($9::timestamptz, "
	        "now() + interval '24 hours'), $10 FROM (SELECT $4::uuid) "
	        "g(cid) LEFT JOIN messaging.conversations c ON c.tenant_id "
	        "= $1 AND c.id = g.cid WHERE g.cid IS NULL OR c.id IS NOT "
	        "NULL ON CONFLICT (tenant_id, dedupe_key) DO NOTHING "
	        "RETURNING id",
	        10, p, &r, "create the action");
	if (rv != PL_OK)
		return rv;
	*created = PQntuples(r) == 1;
	PQclear(r);
	if (!*created && dedupe != NULL) {
		const char *q[2] = { tenant, dedupe };
		if ((rv = eg_exec(call, db,
		                  "SELECT id FROM messaging.actions WHERE "
		                  "tenant_id = $1 AND dedupe_key = $2",
		                  2, q, &r, "read the action")) != PL_OK)
			return rv;
		if (PQntuples(r) == 1)
			snprintf(id_out, 40, "%s", PQgetvalue(r, 0, 0));
		else
			id_out[0] = '\0';
		PQclear(r);
		return PL_OK;
	}
	if (!*created) {
		id_out[0] = '\0'; // the conversation is not the tenant's
		return PL_OK;
	}
	return action_event(db, tenant, "action.pending", id_out, kind,
	                    "pending");
}

static int
read_in(pl_call *call, pl_db *db, const char *tenant, const char *id,
        EG_M(Action) * *out)
{
	const char *p[2] = { tenant, id };
	PGresult *r = NULL;
	int rv = eg_exec(call, db, action_sql(call, "a.id = $2"), 2, p, &r,
	                 "read the action");

	if (rv != PL_OK)
		return rv;
	rv = eg_row_pb(call, r, &parley__messaging__v1__action__descriptor,
	               (void **)out);
	PQclear(r);
	if (rv == PL_NOT_FOUND)
		return pl_call_error(call, PL_NOT_FOUND, "action not found");
	return rv;
}

typedef struct create_arg {
	const EG_M(CreateActionRequest) * in;
	const char *payload;
	EG_M(Action) * out;
	bool created;
} create_arg;

static int
create_fn(pl_call *call, pl_db *db, void *arg)
{
	create_arg *x = arg;
	const EG_M(CreateActionRequest) *in = x->in;
	char id[40];
	int rv = action_insert(call, db, in->tenant_id, kind_names[in->kind],
	                       eg_nz(in->conversation_id), in->summary,
	                       x->payload, eg_nz(in->requested_by_agent_id),
	                       eg_nz(in->requested_by_user_id),
	                       eg_nz(in->expires_at), eg_nz(in->dedupe_key), id,
	                       &x->created);

	if (rv != PL_OK)
		return rv;
	if (id[0] == '\0')
		return pl_call_error(call, PL_NOT_FOUND,
		                     "conversation %s not found",
		                     in->conversation_id);
	return read_in(call, db, in->tenant_id, id, &x->out);
}

int
eg_create_action(pl_call *call, const void *inp, void *outp)
{
	const EG_M(CreateActionRequest) *in = inp;
	EG_M(CreateActionResponse) *out = outp;
	create_arg x = { in, NULL, NULL, false };
	int rv;

	if ((rv = eg_need_uuid(call, "tenant_id", in->tenant_id)) != PL_OK)
		return rv;
	if (in->kind < 1 || in->kind > 4)
		return pl_call_violation(call, "kind",
		                         "must be order_confirmation, refund, "
		                         "discount or custom");
	if (eg_nz(in->conversation_id) && !pl_uuid_valid(in->conversation_id))
		return pl_call_violation(call, "conversation_id",
		                         "is not a valid id");
	if ((eg_nz(in->requested_by_agent_id) &&
	     !pl_uuid_valid(in->requested_by_agent_id)) ||
	    (eg_nz(in->requested_by_user_id) &&
	     !pl_uuid_valid(in->requested_by_user_id)))
		return pl_call_violation(call, "requested_by_agent_id",
		                         "requesters must be valid ids");
	if ((in->summary && strlen(in->summary) > 1024) ||
	    (in->dedupe_key && strlen(in->dedupe_key) > 256))
		return pl_call_violation(call, "summary",
		                         "summary at most 1024 characters, "
		                         "dedupe_key 256");
	if (eg_nz(in->expires_at) && strlen(in->expires_at) > 40)
		return pl_call_violation(call, "expires_at",
		                         "is not an RFC 3339 time");
	if ((rv = eg_json_arg(call, "payload", in->payload, false, EG_MAX_JSON,
	                      "{}", &x.payload)) != PL_OK)
		return rv;
	if (in->kind == 1 && !eg_nz(in->conversation_id))
		return pl_call_violation(call, "conversation_id",
		                         "an order confirmation needs its "
		                         "conversation");
	if ((rv = eg_tx(call, in->tenant_id, create_fn, &x)) != PL_OK)
		return rv;
	out->action = x.out;
	out->id = x.out->id;
	return PL_OK;
}

int
eg_get_action(pl_call *call, const void *inp, void *outp)
{
	const EG_M(GetActionRequest) *in = inp;
	EG_M(GetActionResponse) *out = outp;
	const char *p[2] = { eg_tenant(call), in->id };

	if (!pl_uuid_valid(in->id))
		return pl_call_error(call, PL_NOT_FOUND, "action not found");
	return eg_get(call, eg_tenant(call), action_sql(call, "a.id = $2"), 2,
	              p, &parley__messaging__v1__action__descriptor,
	              (void **)&out->action, "action");
}

int
eg_list_actions(pl_call *call, const void *inp, void *outp)
{
	const EG_M(ListActionsRequest) *in = inp;
	EG_M(ListActionsResponse) *out = outp;
	char *after, lim[16];
	int size, rv;

	if ((rv = eg_page(call, in->page, &size, &after)) != PL_OK)
		return rv;
	if (in->status < 0 || in->status > 4 || in->kind < 0 || in->kind > 4)
		return pl_call_violation(call, "status",
		                         "is not an action status or kind");
	if (eg_nz(in->conversation_id) && !pl_uuid_valid(in->conversation_id))
		return pl_call_violation(call, "conversation_id",
		                         "is not a valid id");
	snprintf(lim, sizeof(lim), "%d", size + 1);
	{
		const char *p[6] = {
			eg_tenant(call),
			after,
			lim,
			in->status ? astatus_names[in->status] : NULL,
			in->kind ? kind_names[in->kind] : NULL,
			eg_nz(in->conversation_id),
		};
		// The status filter reads pending-but-past-expiry as expired.
		return eg_list(
		        call, eg_tenant(call),
		        action_sql(call,
		                   "($2::uuid IS NULL OR a.id < $2::uuid) AND "
		                   "($4::text IS NULL OR (CASE WHEN a.status = "
		                   "'pending' AND a.expires_at <= now() THEN "
		                   "'expired' ELSE a.status END) = $4) AND "
		                   "($5::text IS NULL OR a.kind = $5) AND "
		                   "($6::uuid IS NULL OR a.conversation_id = "
		                   "$6::uuid) ORDER BY a.id DESC LIMIT $3"),
		        6, p, size, &parley__messaging__v1__action__descriptor,
		        (void ***)&out->actions, &out->n_actions,
		        &out->next_page_token);
	}
}

// ---------------------------------------------------------------------------
// Decisions

typedef struct decide_arg {
	const char *id, *note;
	bool approve, notify;
	EG_M(Action) * out;
	int state; // 0 done, 1 missing, 2 wrong state (message in why)
	char why[160];
} decide_arg;

// Executes an approved order confirmation: confirms the order named in
// the payload, or creates it confirmed; either way the contact is sent
// the confirmation. Writes the result JSON.
static int
execute_order(pl_call *call, pl_db *db, const char *tenant, PGresult *a,
              char **result)
{
	json_t *pay = json_loads(PQgetvalue(a, 0, 3), 0, NULL);
	const char *order_id =
	        json_string_value(json_object_get(pay, "order_id"));
	const char *currency =
	        json_string_value(json_object_get(pay, "currency"));
	json_t *items = json_object_get(pay, "items"), *addr;
	char id[40], *itxt = NULL, *atxt = NULL;
	int rv;

	if (order_id == NULL) {
		json_t *norm = json_array();
		size_t i;
		json_t *it;
		json_array_foreach(items, i, it)
		{
			const char *nm =
			        json_string_value(json_object_get(it, "name"));
			const char *sku =
			        json_string_value(json_object_get(it, "sku"));
			json_int_t q = json_integer_value(
			        json_object_get(it, "quantity"));
			json_int_t up = json_integer_value(
			        json_object_get(it, "unit_price_minor"));
			json_array_append_new(
			        norm, json_pack("{s:i, s:s, s:s, s:I, s:I}",
			                        "position", (int)i, "sku",
			                        sku ? sku : "", "name",
			                        nm ? nm : "", "quantity", q,
			                        "unit_price_minor", up));
		}
		if (json_array_size(norm) == 0 || currency == NULL ||
		    PQgetisnull(a, 0, 4)) {
			json_decref(norm);
			json_decref(pay);
			return pl_call_error(call, PL_FAILED_PRECONDITION,
			                     "the proposed order has no items, "
			                     "currency or conversation");
		}
		itxt = json_dumps(norm, JSON_COMPACT);
		json_decref(norm);
		addr = json_object_get(pay, "address");
		atxt = json_is_object(addr) ? json_dumps(addr, JSON_COMPACT)
		                            : NULL;
		rv = engage_order_create(call, db, tenant, PQgetvalue(a, 0, 5),
		                         PQgetvalue(a, 0, 4), NULL, currency,
		                         itxt, atxt, "", "pending", id);
		free(itxt);
		free(atxt);
	} else {
		snprintf(id, sizeof(id), "%s", order_id);
		rv = pl_uuid_valid(id)
		             ? PL_OK
		             : pl_call_error(call, PL_FAILED_PRECONDITION,
		                             "the payload's order_id is "
		                             "not an id");
	}
	json_decref(pay);
	if (rv != PL_OK)
		return rv;
	if ((rv = engage_order_set_status(call, db, tenant, id, "confirmed",
	                                  "approved", true)) != PL_OK)
		return rv;
	*result = pl_arena_printf(call->arena, "{\"order_id\":\"%s\"}", id);
	return PL_OK;
}

static int
decide_fn(pl_call *call, pl_db *db, void *arg)
{
	decide_arg *x = arg;
	const char *tenant = eg_tenant(call);
	const char *p[2] = { tenant, x->id };
	const char *want = x->approve ? "approved" : "rejected";
	char *result = "{}";
	PGresult *r = NULL;
	int rv;

	// The row lock makes a second decision wait and then see the first.
	if ((rv = eg_exec(call, db,
	                  "SELECT status, expires_at <= now(), kind, "
	                  "payload::text, conversation_id, contact_id, "
	                  "(SELECT channel_id FROM messaging.conversations c "
	                  "WHERE c.tenant_id = a.tenant_id AND c.id = "
	                  "a.conversation_id) FROM messaging.actions a WHERE "
	                  "tenant_id = $1 AND id = $2 FOR UPDATE",
	                  2, p, &r, "read the action")) != PL_OK)
		return rv;
	if (PQntuples(r) == 0) {
		PQclear(r);
		x->state = 1;
		return PL_OK;
	}
	if (strcmp(PQgetvalue(r, 0, 0), want) == 0) {
		PQclear(r); // decided the same way before: answered as it is
		return read_in(call, db, tenant, x->id, &x->out);
	}
	if (strcmp(PQgetvalue(r, 0, 0), "pending") != 0 ||
	    PQgetvalue(r, 0, 1)[0] == 't') {
		bool expired = strcmp(PQgetvalue(r, 0, 0), "expired") == 0 ||
		               (strcmp(PQgetvalue(r, 0, 0), "pending") == 0 &&
		                PQgetvalue(r, 0, 1)[0] == 't');
		snprintf(x->why, sizeof(x->why), "the action is %s",
		         expired ? "expired" : PQgetvalue(r, 0, 0));
		PQclear(r);
		x->state = 2;
		if (expired) // written now, so lists and counts agree
			return eg_exec(
			        call, db,
			        "UPDATE messaging.actions SET status = "
			        "'expired' WHERE tenant_id = $1 AND id = $2 "
			        "AND status = 'pending'",
			        2, p, NULL, "expire the action");
		return PL_OK;
	}
	if (x->approve &&
	    strcmp(PQgetvalue(r, 0, 2), "order_confirmation") == 0)
		rv = execute_order(call, db, tenant, r, &result);
	if (rv == PL_OK && !x->approve && x->notify && !PQgetisnull(r, 0, 6)) {
		PGresult *s = NULL;
		char mid[40];
		if ((rv = eg_exec(
		             call, db,
		             "SELECT coalesce(nullif((SELECT "
		             "action_rejected_reply FROM messaging.settings "
		             "WHERE tenant_id = $1), ''), 'Sorry, we could "
		             "not go ahead with that request. A member of "
		             "our team will be in touch.')",
		             1, p, &s, "read the settings")) == PL_OK) {
			rv = eg_queue(db, tenant, PQgetvalue(r, 0, 4),
			              PQgetvalue(r, 0, 6), "text",
			              PQgetvalue(s, 0, 0), NULL, NULL, mid);
			PQclear(s);
		}
	}
	if (rv == PL_OK) {
		const char *q[6] = { tenant,
			             x->id,
			             want,
			             eg_nz(call->principal->user_id),
			             x->note ? x->note : "",
			             result };
		rv = eg_exec(
		        call, db,
		        "UPDATE messaging.actions SET status = $3, "
		        "decided_by_user_id = $4::uuid, decided_at = now(), "
		        "decision_note = $5, result = $6::jsonb WHERE "
		        "tenant_id = $1 AND id = $2",
		        6, q, NULL, "decide the action");
	}
	if (rv == PL_OK)
		rv = action_event(db, tenant, "action.decided", x->id,
		                  PQgetvalue(r, 0, 2), want);
	PQclear(r);
	if (rv != PL_OK)
		return rv;
	return read_in(call, db, tenant, x->id, &x->out);
}

static int
decide(pl_call *call, const char *id, const char *note, bool approve,
       bool notify, EG_M(Action) * *out)
{
	decide_arg x = { id, note, approve, notify, NULL, 0, "" };
	int rv;

	if (!pl_uuid_valid(id))
		return pl_call_error(call, PL_NOT_FOUND, "action not found");
	if (note && strlen(note) > 1024)
		return pl_call_violation(call, approve ? "note" : "reason",
		                         "is longer than 1024 characters");
	if ((rv = eg_tx(call, eg_tenant(call), decide_fn, &x)) != PL_OK)
		return rv;
	if (x.state == 1)
		return pl_call_error(call, PL_NOT_FOUND, "action not found");
	if (x.state == 2)
		return pl_call_error(call, PL_FAILED_PRECONDITION, "%s", x.why);
	messaging_kick(eg_svc(call));
	*out = x.out;
	return PL_OK;
}

int
eg_approve_action(pl_call *call, const void *inp, void *outp)
{
	const EG_M(ApproveActionRequest) *in = inp;
	EG_M(ApproveActionResponse) *out = outp;

	return decide(call, in->id, in->note, true, false, &out->action);
}

int
eg_reject_action(pl_call *call, const void *inp, void *outp)
{
	const EG_M(RejectActionRequest) *in = inp;
	EG_M(RejectActionResponse) *out = outp;

	return decide(call, in->id, in->reason, false, in->notify_contact,
	              &out->action);
}

// ---------------------------------------------------------------------------
// The agent's turn (hook)

int engage_lead_capture(pl_db *db, const char *tenant, const char *contact_id,
                        const char *name, const char *email, const char *phone,
                        const char *intent);

int
engage_on_reply(pl_db *db, const char *tenant_id, const char *contact_id,
                const char *conversation_id, const char *message_id,
                const char *agent_id, const char *metadata_json)
{
	json_t *o, *bot, *lead, *acts, *a;
	size_t i;
	int rv = PL_OK;

	if (metadata_json == NULL || metadata_json[0] == '\0')
		return PL_OK;
	o = json_loads(metadata_json, 0, NULL);
	bot = json_object_get(o, "bot");
	lead = json_object_get(bot, "captured_lead");
	acts = json_object_get(bot, "proposed_actions");
	if (json_is_object(lead))
		rv = engage_lead_capture(
		        db, tenant_id, contact_id,
		        json_string_value(json_object_get(lead, "name")),
		        json_string_value(json_object_get(lead, "email")),
		        json_string_value(json_object_get(lead, "phone")),
		        json_string_value(json_object_get(bot, "intent")));
	json_array_foreach(acts, i, a)
	{
		const char *kind =
		        json_string_value(json_object_get(a, "kind"));
		const char *k = "custom";
		char *pay, *key, id[40], keybuf[64];
		bool created;
		if (rv != PL_OK)
			break;
		for (int j = 1; j < 5 && kind; j++)
			if (strcmp(kind, kind_names[j]) == 0)
				k = kind_names[j];
		{
			json_t *pl = json_object_get(a, "payload");
			pay = json_is_object(pl) ? json_dumps(pl, JSON_COMPACT)
			                         : NULL;
		}
		snprintf(keybuf, sizeof(keybuf), "%s:%zu", message_id, i);
		key = keybuf;
		rv = action_insert(
		        NULL, db, tenant_id, k, conversation_id,
		        json_string_value(json_object_get(a, "summary")),
		        pay ? pay : "{}",
		        agent_id && agent_id[0] ? agent_id : NULL, NULL, NULL,
		        key, id, &created);
		free(pay);
	}
	json_decref(o);
	return rv;
}
