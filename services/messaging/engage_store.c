// The engagement part's SQL helpers: statements run in a transaction for
// the tenant whose rows are JSON objects shaped like the proto messages
// (pl_json turns them into protobuf), so every read has one shape written
// once, below, next to its table.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "pl/id.h"
#include "pl/json.h"
#include "pl/log.h"
#include "engage.h"

// Rows as the proto's JSON (empty values stripped).
const char EG_SQL_TEMPLATE_JSON[] =
        "jsonb_strip_nulls(jsonb_build_object('id', t.id, 'channel_id', "
        "t.channel_id, 'name', t.name, 'language', t.language, 'category', "
        "t.category, 'components', t.components, 'status', t.status, "
        "'status_reason', t.status_reason, 'parameter_count', "
        "t.parameter_count, 'provider_template_id', t.provider_template_id, "
        "'created_at', messaging.fmt_ts(t.created_at), 'updated_at', "
        "messaging.fmt_ts(t.updated_at)))::text";

const char EG_SQL_CAMPAIGN_JSON[] =
        "jsonb_strip_nulls(jsonb_build_object('id', c.id, 'name', c.name, "
        "'channel_id', c.channel_id, 'template_id', c.template_id, "
        "'parameters', c.parameters, 'audience', c.audience, 'status', "
        "c.status, 'scheduled_at', messaging.fmt_ts(c.scheduled_at), "
        "'send_rate_per_second', c.send_rate_per_second, 'pause_reason', "
        "c.pause_reason, 'counters', messaging.campaign_counters(c.tenant_id, "
        "c.id), 'started_at', messaging.fmt_ts(c.started_at), "
        "'completed_at', messaging.fmt_ts(c.completed_at), 'canceled_at', "
        "messaging.fmt_ts(c.canceled_at), 'created_by_user_id', "
        "c.created_by_user_id, 'created_at', messaging.fmt_ts(c.created_at), "
        "'updated_at', messaging.fmt_ts(c.updated_at)))::text";

const char EG_SQL_LEAD_JSON[] =
        "jsonb_strip_nulls(jsonb_build_object('id', l.id, 'contact_id', "
        "l.contact_id, 'conversation_id', l.conversation_id, 'name', l.name, "
        "'email', l.email, 'phone', l.phone, 'status', l.status, "
        "'source_intent', l.source_intent, 'stage', l.stage, "
        "'converted_at', messaging.fmt_ts(l.converted_at), "
        "'conversion_value_minor', l.conversion_value_minor, 'currency', "
        "l.currency, 'extra', l.extra, 'created_at', "
        "messaging.fmt_ts(l.created_at), 'updated_at', "
        "messaging.fmt_ts(l.updated_at)))::text";

const char EG_SQL_ORDER_JSON[] =
        "jsonb_strip_nulls(jsonb_build_object('id', o.id, 'contact_id', "
        "o.contact_id, 'conversation_id', o.conversation_id, 'message_id', "
        "o.message_id, 'status', o.status, 'currency', o.currency, 'items', "
        "(SELECT coalesce(jsonb_agg(jsonb_build_object('sku', i.sku, 'name', "
        "i.name, 'quantity', i.quantity, 'unit_price_minor', "
        "i.unit_price_minor, 'total_minor', i.quantity * i.unit_price_minor) "
        "ORDER BY i.position), '[]') FROM messaging.order_items i WHERE "
        "i.tenant_id = o.tenant_id AND i.order_id = o.id), 'total_minor', "
        "(SELECT coalesce(sum(i.quantity * i.unit_price_minor), 0) FROM "
        "messaging.order_items i WHERE i.tenant_id = o.tenant_id AND "
        "i.order_id = o.id), 'address', o.address, 'notes', o.notes, "
        "'status_reason', o.status_reason, 'confirmed_at', "
        "messaging.fmt_ts(o.confirmed_at), 'shipped_at', "
        "messaging.fmt_ts(o.shipped_at), 'delivered_at', "
        "messaging.fmt_ts(o.delivered_at), 'cancelled_at', "
        "messaging.fmt_ts(o.cancelled_at), 'created_at', "
        "messaging.fmt_ts(o.created_at), 'updated_at', "
        "messaging.fmt_ts(o.updated_at)))::text";

// An action's status reads "expired" as soon as its time passed, whether
// or not anything wrote it yet.
const char EG_SQL_ACTION_JSON[] =
        "jsonb_strip_nulls(jsonb_build_object('id', a.id, 'kind', a.kind, "
        "'status', CASE WHEN a.status = 'pending' AND a.expires_at <= now() "
        "THEN 'expired' ELSE a.status END, 'conversation_id', "
        "a.conversation_id, 'contact_id', a.contact_id, 'summary', "
        "a.summary, 'payload', a.payload, 'requested_by_agent_id', "
        "a.requested_by_agent_id, 'requested_by_user_id', "
        "a.requested_by_user_id, 'decided_by_user_id', a.decided_by_user_id, "
        "'decided_at', messaging.fmt_ts(a.decided_at), 'decision_note', "
        "a.decision_note, 'result', a.result, 'expires_at', "
        "messaging.fmt_ts(a.expires_at), 'created_at', "
        "messaging.fmt_ts(a.created_at)))::text";

// ---------------------------------------------------------------------------

typedef struct tx_call {
	pl_call *call;
	eg_fn fn;
	void *arg;
} tx_call;

static int
tx_fn(pl_db *db, void *arg)
{
	tx_call *t = arg;

	return t->fn(t->call, db, t->arg);
}

int
eg_tx(pl_call *call, const char *tenant, eg_fn fn, void *arg)
{
	tx_call t = { call, fn, arg };
	int rv = pl_db_tx(pl_call_db(call), tenant, tx_fn, &t);

	if (rv != PL_OK && call->code == PL_OK)
		return pl_call_error(call, rv, "the database could not do it");
	return rv;
}

int
eg_exec(pl_call *call, pl_db *db, const char *sql, int n, const char *const *p,
        PGresult **out, const char *what)
{
	PGresult *r = pl_db_exec(db, sql, n, p);
	int rv = pl_db_result_status(r);

	if (rv != PL_OK) {
		if (call != NULL && r != NULL)
			pl_db_call_error(call, r, what);
		else if (call != NULL)
			pl_call_error(call, rv, "could not %s", what);
		else
			pl_warn("could not %s: %s", what,
			        r ? PQresultErrorMessage(r) : "no connection");
		PQclear(r);
		return rv;
	}
	if (out != NULL)
		*out = r;
	else
		PQclear(r);
	return PL_OK;
}

static int
to_pb(pl_call *call, const char *text, const ProtobufCMessageDescriptor *d,
      void **out)
{
	char err[256];
	int rv = pl_json_to_pb(text, strlen(text), d, call->arena,
	                       (ProtobufCMessage **)out, err, sizeof(err));

	if (rv != PL_OK) {
		pl_error("engage: row does not fit %s: %s", d->name, err);
		return pl_call_error(call, PL_INTERNAL,
		                     "could not read the stored row");
	}
	return PL_OK;
}

int
eg_row_pb(pl_call *call, PGresult *r, const ProtobufCMessageDescriptor *d,
          void **out)
{
	if (PQntuples(r) < 1)
		return PL_NOT_FOUND;
	return to_pb(call, PQgetvalue(r, 0, 0), d, out);
}

typedef struct q_arg {
	const char *sql;
	int n;
	const char *const *p;
	PGresult *res;
	const char *what;
} q_arg;

static int
q_fn(pl_call *call, pl_db *db, void *arg)
{
	q_arg *q = arg;

	PQclear(q->res);
	q->res = NULL;
	return eg_exec(call, db, q->sql, q->n, q->p, &q->res, q->what);
}

int
eg_get(pl_call *call, const char *tenant, const char *sql, int n,
       const char *const *p, const ProtobufCMessageDescriptor *d, void **out,
       const char *what)
{
	q_arg q = { sql, n, p, NULL, what };
	int rv = eg_tx(call, tenant, q_fn, &q);

	if (rv == PL_OK) {
		if (PQntuples(q.res) < 1)
			rv = pl_call_error(call, PL_NOT_FOUND, "%s not found",
			                   what);
		else
			rv = to_pb(call, PQgetvalue(q.res, 0, 0), d, out);
	}
	PQclear(q.res);
	return rv;
}

int
eg_list(pl_call *call, const char *tenant, const char *sql, int n,
        const char *const *p, int limit, const ProtobufCMessageDescriptor *d,
        void ***out, size_t *nout, char **next)
{
	q_arg q = { sql, n, p, NULL, "list" };
	int rv = eg_tx(call, tenant, q_fn, &q);
	int rows;

	*out = NULL;
	*nout = 0;
	*next = NULL;
	if (rv != PL_OK) {
		PQclear(q.res);
		return rv;
	}
	rows = PQntuples(q.res);
	if (rows > limit)
		rows = limit;
	*out = pl_arena_zalloc(call->arena,
	                       sizeof(void *) * (size_t)(rows + 1));
	for (int i = 0; i < rows && rv == PL_OK; i++)
		rv = to_pb(call, PQgetvalue(q.res, i, 0), d, &(*out)[i]);
	*nout = (size_t)rows;
	if (rv == PL_OK && PQntuples(q.res) > limit && rows > 0) {
		json_t *o = json_loads(PQgetvalue(q.res, rows - 1, 0), 0, NULL);
		const char *id = json_string_value(json_object_get(o, "id"));
		*next = id ? messaging_cursor_encode(call->arena, id) : NULL;
		json_decref(o);
	}
	PQclear(q.res);
	return rv;
}

int
eg_event(pl_db *db, const char *tenant, const char *type, const char *dims_json,
         const char *payload_json)
{
	static const char *const dests[] = { "analytics", NULL };
	pl_outbox_event ev = { 0 };

	ev.tenant_id = tenant;
	ev.type = type;
	ev.dimensions_json = dims_json;
	ev.payload_json = payload_json;
	return pl_outbox_add(db, MSG_SCHEMA, dests, &ev, NULL);
}

int
eg_queue(pl_db *db, const char *tenant, const char *conversation_id,
         const char *channel_id, const char *type, const char *text,
         const char *metadata_json, const char *user_id, char id_out[40])
{
	char did[40];
	const char *p[9];
	int rv;

	pl_uuid7_str(id_out);
	pl_uuid7_str(did);
	p[0] = tenant;
	p[1] = id_out;
	p[2] = conversation_id;
	p[3] = channel_id;
	p[4] = type;
	p[5] = text ? text : "";
	p[6] = metadata_json;
	p[7] = did;
	p[8] = (user_id && user_id[0]) ? user_id : NULL;
	// One statement: the message, its delivery, the conversation's times.
	rv = eg_exec(
	        NULL, db,
	        "WITH m AS (INSERT INTO messaging.messages (tenant_id, id, "
	        "conversation_id, channel_id, direction, sender, "
	        "sender_user_id, type, text, status, queued_at, metadata) "
	        "VALUES ($1, $2, $3, $4, 'outbound', 'system', $9, $5, $6, "
	        "'queued', now(), coalesce($7::jsonb, '{}')) RETURNING id), "
	        "d AS (INSERT INTO messaging.deliveries (tenant_id, id, "
	        "message_id, channel_id) SELECT $1, $8, id, $4 FROM m) "
	        "UPDATE messaging.conversations SET message_count = "
	        "message_count + 1, last_activity_at = now(), updated_at = "
	        "now() WHERE tenant_id = $1 AND id = $3",
	        9, p, NULL, "queue a message");
	return rv;
}

// ---------------------------------------------------------------------------
// Handler helpers

const char *
eg_tenant(const pl_call *call)
{
	return call->principal->tenant_id ? call->principal->tenant_id : "";
}

const char *
eg_nz(const char *s)
{
	return (s != NULL && s[0] != '\0') ? s : NULL;
}

msg_service *
eg_svc(pl_call *call)
{
	return call->arg;
}

int
eg_need_uuid(pl_call *call, const char *field, const char *v)
{
	if (v == NULL || v[0] == '\0')
		return pl_call_violation(call, field, "is required");
	if (!pl_uuid_valid(v))
		return pl_call_violation(call, field, "is not a valid id");
	return PL_OK;
}

int
eg_page(pl_call *call, const Parley__Rpc__V1__PageRequest *pg, int *size,
        char **after)
{
	*size = 50;
	*after = NULL;
	if (pg == NULL)
		return PL_OK;
	if (pg->page_size < 0)
		return pl_call_violation(call, "page.page_size",
		                         "must not be negative");
	if (pg->page_size > 0)
		*size = pg->page_size > 200 ? 200 : pg->page_size;
	if (eg_nz(pg->page_token)) {
		*after = messaging_cursor_decode(call->arena, pg->page_token);
		if (*after == NULL || !pl_uuid_valid(*after))
			return pl_call_violation(call, "page.page_token",
			                         "is not a valid page token");
	}
	return PL_OK;
}

int
eg_json_arg(pl_call *call, const char *field, const Parley__Rpc__V1__Json *j,
            bool array, size_t max, const char *def, const char **out)
{
	json_t *v;
	bool ok;

	*out = def;
	if (j == NULL || !eg_nz(j->text))
		return PL_OK;
	if (strlen(j->text) > max)
		return pl_call_violation(call, field,
		                         "is larger than %zu bytes", max);
	v = json_loads(j->text, JSON_REJECT_DUPLICATES, NULL);
	ok = array ? json_is_array(v) : json_is_object(v);
	json_decref(v);
	if (!ok)
		return pl_call_violation(call, field, "must be a JSON %s",
		                         array ? "array" : "object");
	*out = j->text;
	return PL_OK;
}
