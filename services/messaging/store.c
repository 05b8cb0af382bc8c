// Every SQL statement of the messaging service. Tenant work runs in
// pl_db_tx with the tenant set for row-level security and an explicit
// tenant_id filter; the few cross-tenant statements (the workers' claims,
// web-chat session lookup by id) run with tenant "*" and say so.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <sodium.h>

#include "pl/id.h"
#include "pl/log.h"
#include "messaging.h"
#include "engage.h"

// Timestamps come as the raw timestamptz, which vts() puts in the API's
// form: messaging.fmt_ts's to_char cost PostgreSQL ~0.9 us a value, the
// plain text output ~0.25 us, and a list formats ~14 a row.
// The readers (contact_row, conv_row) take SQL NULL as "" (pl_db_text), so
// the columns come as they are: no coalesce or cast per row.
#define CONTACT_COLS                                                           \
	"k.id, k.channel_id, k.external_id, k.external_id_kind, k.phone, "     \
	"k.phone_raw, k.business_user_id, k.parent_user_id, k.name, "          \
	"k.language, k.profile::text, k.tags, "                                \
	"k.custom_fields::text, k.opted_out_at, k.created_at, k.updated_at"
#define CONTACT_NCOLS 16

#define CONV_COLS                                                              \
	"c.id, c.contact_id, c.channel_id, c.agent_id, c.status, c.owner, "    \
	"c.assigned_user_id, c.stage, c.intent_level, c.sentiment, "           \
	"c.handoff_reason, c.message_count, c.last_inbound_at, "               \
	"c.last_outbound_at, c.last_bot_message_at, "                          \
	"c.closed_at, c.created_at, c.updated_at"
#define CONV_NCOLS 18

#define MSG_COLS                                                               \
	"m.id, m.conversation_id, m.channel_id, m.direction, m.sender, "       \
	"coalesce(m.sender_user_id::text,''), m.type, m.text, m.media_url, "   \
	"m.media_mime_type, coalesce(m.provider_message_id,''), m.status, "    \
	"m.queued_at, m.sent_at, m.delivered_at, m.read_at, m.played_at, "     \
	"m.failed_at, m.error_code, m.error_text, m.provider_created_at, "     \
	"m.metadata::text, coalesce(m.agent_id::text,''), m.created_at"

// ---------------------------------------------------------------------------
// Helpers

typedef struct q1 {
	const char *sql;
	int n;
	const char *const *p;
	PGresult *res;
} q1;

static int
q1_fn(pl_db *db, void *arg)
{
	q1 *q = arg;

	PQclear(q->res);
	q->res = pl_db_exec(db, q->sql, q->n, q->p);
	return pl_db_result_status(q->res);
}

// One statement in a transaction for tenant; *res is the caller's to clear.
static int
tq(pl_db *db, const char *tenant, const char *sql, int n, const char *const *p,
   PGresult **res)
{
	q1 q = { sql, n, p, NULL };
	int rv = pl_db_tx(db, tenant, q1_fn, &q);

	*res = q.res;
	return rv;
}

static int
fail(pl_call *call, PGresult *r, int rv, const char *what)
{
	if (call == NULL) {
		if (r != NULL)
			pl_warn("could not %s: %s", what,
			        PQresultErrorMessage(r));
		return rv;
	}
	if (r != NULL && PQresultStatus(r) == PGRES_FATAL_ERROR)
		return pl_db_call_error(call, r, what);
	return pl_call_error(call, rv, "could not %s", what);
}

// The row readers below take results in either format (see
// pl_db_read_binary).
static char *
v(pl_arena *a, PGresult *r, int row, int col)
{
	return pl_db_text(a, r, row, col);
}

// A timestamptz column in the API's form (see pl_db_ts).
static char *
vts(pl_arena *a, PGresult *r, int row, int col)
{
	return pl_db_ts_at(a, r, row, col);
}

static Parley__Rpc__V1__Json *
jv(pl_arena *a, PGresult *r, int row, int col)
{
	Parley__Rpc__V1__Json *j = pl_arena_zalloc(a, sizeof(*j));

	if (j == NULL)
		return NULL;
	parley__rpc__v1__json__init(j);
	j->text = v(a, r, row, col);
	return j;
}

static int
en(const char *const *names, int n, PGresult *r, int row, int col)
{
	return msg_enum_from_name(names, n, PQgetvalue(r, row, col));
}

static msg_contact_pb *
contact_row(pl_arena *a, PGresult *r, int row, int c0)
{
	msg_contact_pb *k = pl_arena_zalloc(a, sizeof(*k));

	if (k == NULL)
		return NULL;
	parley__messaging__v1__contact__init(k);
	k->id = v(a, r, row, c0 + 0);
	k->channel_id = v(a, r, row, c0 + 1);
	k->external_id = v(a, r, row, c0 + 2);
	k->external_id_kind = en(ext_kind_names, 4, r, row, c0 + 3);
	k->phone = v(a, r, row, c0 + 4);
	k->phone_raw = v(a, r, row, c0 + 5);
	k->business_user_id = v(a, r, row, c0 + 6);
	k->parent_user_id = v(a, r, row, c0 + 7);
	k->name = v(a, r, row, c0 + 8);
	k->language = v(a, r, row, c0 + 9);
	k->profile = jv(a, r, row, c0 + 10);
	pl_db_text_array(a, r, row, c0 + 11, &k->tags, &k->n_tags);
	k->custom_fields = jv(a, r, row, c0 + 12);
	k->opted_out_at = vts(a, r, row, c0 + 13);
	k->created_at = vts(a, r, row, c0 + 14);
	k->updated_at = vts(a, r, row, c0 + 15);
	return k;
}

static msg_conv_pb *
conv_row(pl_arena *a, PGresult *r, int row, bool with_contact)
{
	msg_conv_pb *c = pl_arena_zalloc(a, sizeof(*c));

	if (c == NULL)
		return NULL;
	parley__messaging__v1__conversation__init(c);
	c->id = v(a, r, row, 0);
	c->contact_id = v(a, r, row, 1);
	c->channel_id = v(a, r, row, 2);
	c->agent_id = v(a, r, row, 3);
	c->status = en(conv_status_names, 4, r, row, 4);
	c->owner = en(conv_owner_names, 3, r, row, 5);
	c->assigned_user_id = v(a, r, row, 6);
	c->stage = en(conv_stage_names, 7, r, row, 7);
	c->intent_level = en(intent_level_names, 4, r, row, 8);
	c->sentiment = en(sentiment_names, 4, r, row, 9);
	c->handoff_reason = v(a, r, row, 10);
	c->message_count = pl_db_int(r, row, 11);
	c->last_inbound_at = vts(a, r, row, 12);
	c->last_outbound_at = vts(a, r, row, 13);
	c->last_bot_message_at = vts(a, r, row, 14);
	// The 24-hour customer-service window: last inbound + 24 h.
	c->window_expires_at = pl_db_ts_add(a, r, row, 12, 24 * 3600);
	c->closed_at = vts(a, r, row, 15);
	c->created_at = vts(a, r, row, 16);
	c->updated_at = vts(a, r, row, 17);
	if (with_contact)
		c->contact = contact_row(a, r, row, CONV_NCOLS);
	return c;
}

static msg_message_pb *
msg_row(pl_arena *a, PGresult *r, int row)
{
	msg_message_pb *m = pl_arena_zalloc(a, sizeof(*m));

	if (m == NULL)
		return NULL;
	parley__messaging__v1__message__init(m);
	m->id = v(a, r, row, 0);
	m->conversation_id = v(a, r, row, 1);
	m->channel_id = v(a, r, row, 2);
	m->direction = en(msg_direction_names, 3, r, row, 3);
	m->sender = en(msg_sender_names, 5, r, row, 4);
	m->sender_user_id = v(a, r, row, 5);
	m->type = en(msg_type_names, 12, r, row, 6);
	m->text = v(a, r, row, 7);
	m->media_url = v(a, r, row, 8);
	m->media_mime_type = v(a, r, row, 9);
	m->provider_message_id = v(a, r, row, 10);
	m->status = en(msg_status_names, 8, r, row, 11);
	m->queued_at = vts(a, r, row, 12);
	m->sent_at = vts(a, r, row, 13);
	m->delivered_at = vts(a, r, row, 14);
	m->read_at = vts(a, r, row, 15);
	m->played_at = vts(a, r, row, 16);
	m->failed_at = vts(a, r, row, 17);
	m->error_code = v(a, r, row, 18);
	m->error_text = v(a, r, row, 19);
	m->provider_created_at = vts(a, r, row, 20);
	m->metadata = jv(a, r, row, 21);
	m->agent_id = v(a, r, row, 22);
	m->created_at = vts(a, r, row, 23);
	return m;
}

static const char *
nz(const char *s)
{
	return (s != NULL && s[0] != '\0') ? s : NULL;
}

static int
exec_ok(pl_db *db, const char *sql, int n, const char *const *p, PGresult **out)
{
	PGresult *r = pl_db_exec(db, sql, n, p);
	int rv = pl_db_result_status(r);

	if (rv != PL_OK) {
		pl_warn("messaging sql failed: %s",
		        r ? PQresultErrorMessage(r) : "no connection");
	}
	if (out != NULL && rv == PL_OK)
		*out = r;
	else
		PQclear(r);
	return rv;
}

// A statement that is its own transaction (a batch function), tried again
// when the database aborts it for a deadlock or a serialization failure:
// nothing of it was committed.
static int
exec_batch(pl_db *db, const char *sql, int n, const char *const *p,
           PGresult **out)
{
	int rv = PL_ABORTED;

	for (int i = 0; i < 3 && rv == PL_ABORTED; i++)
		rv = exec_ok(db, sql, n, p, out);
	return rv;
}

static int
event(pl_db *db, const char *tenant, const char *type, const char *dims,
      const char *payload)
{
	static const char *const dests[] = { "analytics", NULL };
	pl_outbox_event ev = { 0 };

	ev.tenant_id = tenant;
	ev.type = type;
	ev.dimensions_json = dims;
	ev.payload_json = payload;
	return pl_outbox_add(db, MSG_SCHEMA, dests, &ev, NULL);
}

// JSON text built safely (values escaped by jansson); NULL on failure.
static char *
jpack(pl_arena *a, json_t *o)
{
	char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
	char *r = s ? pl_arena_strdup(a, s) : NULL;

	free(s);
	json_decref(o);
	return r;
}

// ---------------------------------------------------------------------------
// Inbox

int
messaging_store_inbox_add(pl_db *db, const char *tenant_id,
                          const char *channel_id, const char *channel_type,
                          const uint8_t *body, size_t len,
                          const char *source_ip, const char *senders_json,
                          char id_out[40], bool *duplicate)
{
	size_t b64len =
	        sodium_base64_encoded_len(len, sodium_base64_VARIANT_ORIGINAL);
	char *b64 = malloc(b64len), id[40];
	const char *p[7];
	PGresult *r = NULL;
	int rv;

	*duplicate = false;
	if (b64 == NULL)
		return PL_RESOURCE_EXHAUSTED;
	sodium_bin2base64(b64, b64len, body, len,
	                  sodium_base64_VARIANT_ORIGINAL);
	pl_uuid7_str(id);
	p[0] = tenant_id;
	p[1] = id;
	p[2] = channel_id;
	p[3] = channel_type;
	p[4] = b64;
	p[5] = source_ip ? source_ip : "";
	p[6] = senders_json ? senders_json : "[]";
	// One statement, its own transaction (the function sets the tenant):
	// one round trip, one commit.
	rv = exec_ok(db,
	             "SELECT o_id, o_duplicate FROM messaging.inbox_put($1, "
	             "$2, $3, $4, $5, $6, $7::jsonb)",
	             7, p, &r);
	free(b64);
	if (rv != PL_OK)
		return rv;
	snprintf(id_out, 40, "%s", PQgetvalue(r, 0, 0));
	*duplicate = strcmp(PQgetvalue(r, 0, 1), "t") == 0;
	PQclear(r);
	return PL_OK;
}

typedef struct inbox_claim {
	const char *p[1];
	pl_arena *a;
	msg_inbox_row *row;
	int got;
} inbox_claim;

static int
inbox_claim_fn(pl_db *db, void *arg)
{
	inbox_claim *x = arg;
	PGresult *r = NULL;
	int rv;

	x->got = 0;
	rv = exec_ok(
	        db,
	        "UPDATE messaging.inbox i SET lease_until = now() + $1::int * "
	        "interval '1 millisecond', attempts = attempts + 1 WHERE "
	        "(i.tenant_id, i.id) = (SELECT tenant_id, id FROM "
	        "messaging.inbox WHERE processed_at IS NULL AND (lease_until "
	        "IS NULL OR lease_until < now()) ORDER BY received_at LIMIT 1 "
	        "FOR UPDATE SKIP LOCKED) RETURNING i.tenant_id, i.id, "
	        "i.channel_id, i.channel_type, encode(i.body, 'base64')",
	        1, x->p, &r);
	if (rv != PL_OK)
		return rv;
	if (PQntuples(r) == 1) {
		const char *b64 = PQgetvalue(r, 0, 4);
		size_t cap = strlen(b64) + 1, bl = 0;
		msg_inbox_row *row = x->row;
		snprintf(row->tenant_id, 40, "%s", PQgetvalue(r, 0, 0));
		snprintf(row->id, 40, "%s", PQgetvalue(r, 0, 1));
		snprintf(row->channel_id, 40, "%s", PQgetvalue(r, 0, 2));
		row->channel_type = atoi(PQgetvalue(r, 0, 3));
		row->body = pl_arena_alloc(x->a, cap);
		if (row->body == NULL ||
		    sodium_base642bin(row->body, cap, b64, strlen(b64), "\n",
		                      &bl, NULL,
		                      sodium_base64_VARIANT_ORIGINAL) != 0) {
			PQclear(r);
			return PL_INTERNAL;
		}
		row->len = bl;
		x->got = 1;
	}
	PQclear(r);
	return PL_OK;
}

int
messaging_store_inbox_claim(pl_db *db, int64_t lease_ms, pl_arena *a,
                            msg_inbox_row *row)
{
	char lease[24];
	inbox_claim x = { { lease }, a, row, 0 };
	int rv;

	snprintf(lease, sizeof(lease), "%lld", (long long)lease_ms);
	// Service-level: claims across tenants (tenant "*").
	rv = pl_db_tx(db, "*", inbox_claim_fn, &x);
	return rv != PL_OK ? -rv : x.got;
}

int
messaging_store_inbox_done(pl_db *db, const msg_inbox_row *row,
                           const char *error)
{
	const char *p[3] = { row->tenant_id, row->id, error };
	PGresult *r = NULL;
	int rv = tq(db, row->tenant_id,
	            "UPDATE messaging.inbox SET processed_at = now(), "
	            "last_error = $3, lease_until = NULL WHERE tenant_id = $1 "
	            "AND id = $2",
	            3, p, &r);
	PQclear(r);
	return rv;
}

// Runs a prune function (013, 015) as tenant "*": its number of rows
// deleted, or an error status negated.
static int
prune(pl_db *db, const char *sql, int64_t keep_ms, int limit)
{
	char keep[24], lim[16];
	const char *p[2] = { keep, lim };
	PGresult *r = NULL;
	int rv, n = 0;

	snprintf(keep, sizeof(keep), "%lld", (long long)keep_ms);
	snprintf(lim, sizeof(lim), "%d", limit);
	rv = tq(db, "*", sql, 2, p, &r);
	if (rv == PL_OK && PQntuples(r) == 1)
		n = (int)strtol(PQgetvalue(r, 0, 0), NULL, 10);
	PQclear(r);
	return rv == PL_OK ? n : -rv;
}

// Deletes up to limit processed inbox rows received more than keep_ms ago
// (messaging.inbox_prune, 013). Rows still due, or held by a worker, stay.
int
messaging_store_inbox_prune(pl_db *db, int64_t keep_ms, int limit)
{
	return prune(db, "SELECT messaging.inbox_prune($1, $2)", keep_ms,
	             limit);
}

// Deletes up to limit pending statuses and up to limit finished webhook
// deliveries created more than keep_ms ago (messaging.retention_prune,
// 015).
int
messaging_store_retention_prune(pl_db *db, int64_t keep_ms, int limit)
{
	return prune(db, "SELECT messaging.retention_prune($1, $2)", keep_ms,
	             limit);
}

int
messaging_store_tx_tenant(pl_db *db, const char *tenant_id)
{
	const char *p[1] = { tenant_id };

	return exec_ok(db,
	               "SELECT set_config('" PL_DB_TENANT_SETTING "', $1, "
	               "true)",
	               1, p, NULL);
}

// ---------------------------------------------------------------------------
// The inbox worker's batch (migration 005)

int
messaging_store_inbox_lock_batch(pl_db *db, int max, pl_arena *a,
                                 msg_inbox_row **rows, size_t *n)
{
	char lim[16];
	const char *p[1] = { lim };
	PGresult *r = NULL;
	int rv, nt;

	*rows = NULL;
	*n = 0;
	snprintf(lim, sizeof(lim), "%d", max > 0 ? max : 1);
	// Service-level: the inbox spans tenants (the caller's transaction
	// runs with tenant "*"). The row locks are the lease: a crash rolls
	// the batch back and frees the rows.
	// A body whose sender has an earlier body held elsewhere waits
	// (migration 009): one conversation's messages in arrival order.
	rv = exec_ok(
	        db,
	        "SELECT tenant_id, id, channel_id, channel_type, body FROM "
	        "messaging.inbox_lock($1::int)",
	        1, p, &r);
	if (rv != PL_OK)
		return rv;
	nt = PQntuples(r);
	if (nt > 0)
		*rows = pl_arena_zalloc(a, (size_t)nt * sizeof(**rows));
	for (int i = 0; i < nt && *rows != NULL; i++) {
		msg_inbox_row *row = &(*rows)[*n];
		const char *b64 = PQgetvalue(r, i, 4);
		size_t cap = strlen(b64) + 1, bl = 0;
		snprintf(row->tenant_id, 40, "%s", PQgetvalue(r, i, 0));
		snprintf(row->id, 40, "%s", PQgetvalue(r, i, 1));
		snprintf(row->channel_id, 40, "%s", PQgetvalue(r, i, 2));
		row->channel_type = atoi(PQgetvalue(r, i, 3));
		row->body = pl_arena_alloc(a, cap);
		if (row->body == NULL ||
		    sodium_base642bin(row->body, cap, b64, strlen(b64), "\n",
		                      &bl, NULL,
		                      sodium_base64_VARIANT_ORIGINAL) != 0) {
			PQclear(r);
			return PL_INTERNAL;
		}
		row->len = bl;
		(*n)++;
	}
	PQclear(r);
	return nt > 0 && *rows == NULL ? PL_RESOURCE_EXHAUSTED : PL_OK;
}

// Sets key to a string (omitted when NULL or empty); false when the value
// is not valid UTF-8.
static bool
jput(json_t *o, const char *key, const char *val)
{
	json_t *s;

	if (val == NULL || val[0] == '\0')
		return true;
	if ((s = json_string(val)) == NULL)
		return false;
	json_object_set_new(o, key, s);
	return true;
}

// An embedded JSON object given as text (omitted when absent or not an
// object).
static void
jput_obj(json_t *o, const char *key, const char *text)
{
	json_t *v = text && text[0] ? json_loads(text, 0, NULL) : NULL;

	if (json_is_object(v))
		json_object_set_new(o, key, v);
	else
		json_decref(v);
}

// One item as messaging.ingest_batch takes it; NULL on bad input.
static json_t *
ingest_item_json(const msg_ingest *in)
{
	const msg_item *it = in->item;
	json_t *o = json_object();
	char id[40], num[16], phone[MSG_PHONE_MAX] = "";
	bool ok = o != NULL;

	ok = ok && jput(o, "t", in->tenant_id) &&
	     jput(o, "ch", in->channel_id) &&
	     jput(o, "pid", it->provider_message_id);
	if (ok && it->kind == MSG_ITEM_STATUS) {
		int st = it->status > 0 && it->status < 8 ? it->status : 0;
		pl_uuid7_str(id);
		ok = jput(o, "k", "s") && jput(o, "sid", id) &&
		     jput(o, "st", msg_status_names[st]) &&
		     jput(o, "at", it->at) && jput(o, "ec", it->error_code) &&
		     jput(o, "et", it->error_text);
	} else if (ok) {
		const char *kind =
		        ext_kind_names[it->external_id_kind > 0 &&
		                                       it->external_id_kind < 4
		                               ? it->external_id_kind
		                               : 1];
		const char *type =
		        msg_type_names[it->type > 0 && it->type < 12 ? it->type
		                                                     : 11];
		if (it->phone_raw != NULL)
			messaging_phone_normalize(it->phone_raw, phone);
		snprintf(num, sizeof(num), "%d", in->channel_type);
		ok = jput(o, "k", "m") && jput(o, "cht", num) &&
		     jput(o, "ag", in->agent_id) &&
		     jput(o, "ext", it->external_id) && jput(o, "kind", kind) &&
		     jput(o, "ph", phone) && jput(o, "phr", it->phone_raw) &&
		     jput(o, "bu", it->business_user_id) &&
		     jput(o, "pu", it->parent_user_id) &&
		     jput(o, "nm", it->contact_name) && jput(o, "ty", type) &&
		     jput(o, "tx", it->text) && jput(o, "mu", it->media_url) &&
		     jput(o, "mm", it->media_mime_type) &&
		     jput(o, "pc", it->provider_created_at);
		// New rows' ids, monotonic in this process: a batch keeps its
		// arrival order.
		pl_uuid7_str(id);
		ok = ok && jput(o, "mid", id);
		pl_uuid7_str(id);
		ok = ok && jput(o, "kid", id);
		pl_uuid7_str(id);
		ok = ok && jput(o, "vid", id);
		jput_obj(o, "pr", it->profile_json);
		jput_obj(o, "md", it->metadata_json);
		json_object_set_new(o, "rw", json_boolean(in->reply_wanted));
	}
	if (!ok ||
	    (it->kind == MSG_ITEM_STATUS && it->provider_message_id == NULL) ||
	    (it->kind == MSG_ITEM_MESSAGE && it->external_id == NULL)) {
		json_decref(o);
		return NULL;
	}
	return o;
}

static void
str_from(char *out, size_t len, json_t *o, const char *key)
{
	const char *s = json_string_value(json_object_get(o, key));

	snprintf(out, len, "%s", s ? s : "");
}

static void
uuid_from(char out[40], json_t *o, const char *key)
{
	str_from(out, 40, o, key);
}

int
messaging_store_ingest_batch_tx(pl_db *db, const msg_ingest *in, size_t n,
                                const msg_inbox_row *rows,
                                const char *const *errors, size_t nrows,
                                int64_t claim_lease_ms, pl_arena *a,
                                msg_ingested *out)
{
	json_t *p = json_object(), *items = json_array(), *inbox = json_array();
	json_t *res = NULL;
	char *text = NULL;
	const char *params[1];
	PGresult *r = NULL;
	size_t k = 0;
	int rv = PL_OK;

	(void)a;
	if (p == NULL || items == NULL || inbox == NULL) {
		json_decref(p);
		json_decref(items);
		json_decref(inbox);
		return PL_RESOURCE_EXHAUSTED;
	}
	json_object_set_new(p, "items", items);
	json_object_set_new(p, "inbox", inbox);
	if (claim_lease_ms > 0)
		json_object_set_new(p, "lease", json_integer(claim_lease_ms));
	for (size_t i = 0; i < n; i++) {
		json_t *o = ingest_item_json(&in[i]);
		memset(&out[i], 0, sizeof(out[i]));
		if (o == NULL) {
			rv = PL_INVALID_ARGUMENT;
			goto done;
		}
		json_array_append_new(items, o);
	}
	for (size_t i = 0; i < nrows; i++) {
		json_t *o = json_pack("{s:s, s:s}", "t", rows[i].tenant_id,
		                      "id", rows[i].id);
		if (o != NULL && errors != NULL && errors[i] != NULL)
			jput(o, "err", errors[i]);
		json_array_append_new(inbox, o);
	}
	text = json_dumps(p, JSON_COMPACT);
	if (text == NULL) {
		rv = PL_RESOURCE_EXHAUSTED;
		goto done;
	}
	params[0] = text;
	if ((rv = exec_ok(db, "SELECT messaging.ingest_batch($1::jsonb)::text",
	                  1, params, &r)) != PL_OK)
		goto done;
	res = json_loads(PQgetvalue(r, 0, 0), 0, NULL);
	PQclear(r);
	// One result per message item, in order.
	for (size_t i = 0; i < n; i++) {
		json_t *o;
		if (in[i].item->kind != MSG_ITEM_MESSAGE)
			continue;
		o = json_array_get(res, k++);
		if (o == NULL) {
			rv = PL_INTERNAL;
			goto done;
		}
		uuid_from(out[i].message_id, o, "mid");
		uuid_from(out[i].conversation_id, o, "cv");
		uuid_from(out[i].contact_id, o, "ct");
		out[i].duplicate = json_is_true(json_object_get(o, "dup"));
		out[i].keyword = json_is_true(json_object_get(o, "kw"));
		out[i].claimed = claim_lease_ms > 0 &&
		                 json_is_true(json_object_get(o, "cl"));
		if (out[i].claimed && json_is_true(json_object_get(o, "cx"))) {
			out[i].context = true;
			str_from(out[i].created_at, sizeof(out[i].created_at),
			         o, "at");
			uuid_from(out[i].agent_id, o, "ag");
			str_from(out[i].contact_name,
			         sizeof(out[i].contact_name), o, "nm");
			str_from(out[i].contact_phone,
			         sizeof(out[i].contact_phone), o, "ph");
		}
	}
	// Opt-out/opt-in keywords (engagement), in the same transaction and
	// under the message's tenant.
	for (size_t i = 0; i < n && rv == PL_OK; i++) {
		if (!out[i].keyword || out[i].duplicate)
			continue;
		rv = messaging_store_tx_tenant(db, in[i].tenant_id);
		if (rv == PL_OK)
			rv = engage_on_inbound(
			        db, in[i].tenant_id, out[i].contact_id,
			        out[i].conversation_id, in[i].channel_id,
			        out[i].message_id, in[i].item->text);
	}
done:
	free(text);
	json_decref(res);
	json_decref(p);
	return rv;
}

// ---------------------------------------------------------------------------
// Ingest of one message (IngestInbound, web chat, the inbox's leased path):
// the batch function with one item.

typedef struct ingest {
	const msg_ingest *in;
	pl_arena *a;
	msg_message_pb *msg;
	bool dup;
} ingest;

static int
ingest_fn(pl_db *db, void *arg)
{
	ingest *x = arg;
	msg_ingested o;
	PGresult *r = NULL;
	int rv;

	x->dup = false;
	x->msg = NULL;
	if ((rv = messaging_store_ingest_batch_tx(db, x->in, 1, NULL, NULL, 0,
	                                          0, x->a, &o)) != PL_OK)
		return rv;
	x->dup = o.duplicate;
	{
		const char *p[2] = { x->in->tenant_id, o.message_id };
		if ((rv = exec_ok(db,
		                  "SELECT " MSG_COLS
		                  " FROM messaging.messages m "
		                  "WHERE m.tenant_id = $1 AND m.id = $2",
		                  2, p, &r)) != PL_OK)
			return rv;
		if (PQntuples(r) == 1)
			x->msg = msg_row(x->a, r, 0);
		PQclear(r);
	}
	return x->msg != NULL ? PL_OK : PL_INTERNAL;
}

int
messaging_store_ingest(pl_db *db, const msg_ingest *in, pl_arena *a,
                       msg_message_pb **msg, bool *duplicate)
{
	ingest x = { in, a, NULL, false };
	int rv = pl_db_tx(db, in->tenant_id, ingest_fn, &x);

	*msg = x.msg;
	*duplicate = x.dup;
	return rv;
}

// ---------------------------------------------------------------------------
// Statuses

static const char *
status_col(int st)
{
	switch (st) {
	case 3:
		return "sent_at";
	case 4:
		return "delivered_at";
	case 5:
		return "read_at";
	case 6:
		return "played_at";
	case 7:
		return "failed_at";
	default:
		return NULL;
	}
}

// Applies one status to the message (tenant, id) whose current status is
// cur; called inside a transaction.
static int
apply_one(pl_db *db, const char *tenant, const char *id, int cur, int st,
          const char *at, const char *code, const char *text, bool *applied)
{
	char sql[512];
	const char *col = status_col(st);
	bool adv = messaging_status_advances(cur, st);
	const char *p[6] = {
		tenant,          id, msg_status_names[st], at, code ? code : "",
		text ? text : ""
	};
	int rv;

	*applied = adv;
	if (col == NULL)
		return PL_OK;
	if (!adv && (cur == 7 || st == 7))
		return PL_OK;
	// col is one of the fixed names above, never input.
	snprintf(sql, sizeof(sql),
	         "UPDATE messaging.messages SET status = CASE WHEN %s THEN $3 "
	         "ELSE status END, %s = coalesce(%s, coalesce($4::timestamptz, "
	         "now())), error_code = CASE WHEN $3 = 'failed' THEN $5 ELSE "
	         "error_code END, error_text = CASE WHEN $3 = 'failed' THEN $6 "
	         "ELSE error_text END WHERE tenant_id = $1 AND id = $2",
	         adv ? "true" : "false", col, col);
	rv = exec_ok(db, sql, 6, p, NULL);
	if (rv == PL_OK && adv) {
		char pay[256];
		snprintf(pay, sizeof(pay),
		         "{\"message_id\":\"%s\",\"status\":\"%s\","
		         "\"previous_status\":\"%s\"}",
		         id, msg_status_names[st], msg_status_names[cur]);
		rv = event(db, tenant, "message.status", NULL, pay);
	}
	return rv;
}

typedef struct status_x {
	const char *tenant, *channel;
	const msg_item *st;
	pl_arena *a;
	bool applied, deferred;
	msg_message_pb *msg;
} status_x;

static int
status_fn(pl_db *db, void *arg)
{
	status_x *x = arg;
	const char *p[3] = { x->tenant, x->channel,
		             x->st->provider_message_id };
	PGresult *r = NULL;
	int rv;

	x->applied = x->deferred = false;
	x->msg = NULL;
	if ((rv = exec_ok(db,
	                  "SELECT m.id, m.status FROM messaging.messages m "
	                  "WHERE m.tenant_id = $1 AND m.channel_id = $2 AND "
	                  "m.provider_message_id = $3 FOR UPDATE",
	                  3, p, &r)) != PL_OK)
		return rv;
	if (PQntuples(r) == 0) {
		char id[40];
		const char *q[8] = { x->tenant,
			             id,
			             x->channel,
			             x->st->provider_message_id,
			             msg_status_names[x->st->status],
			             nz(x->st->at),
			             x->st->error_code ? x->st->error_code : "",
			             x->st->error_text ? x->st->error_text
			                               : "" };
		PQclear(r);
		pl_uuid7_str(id);
		x->deferred = true;
		return exec_ok(
		        db,
		        "INSERT INTO messaging.pending_statuses "
		        "(tenant_id, id, channel_id, provider_message_id, "
		        "status, at, error_code, error_text) VALUES ($1, "
		        "$2, $3, $4, $5, coalesce($6::timestamptz, now()), "
		        "$7, $8)",
		        8, q, NULL);
	}
	{
		char id[40];
		int cur = msg_enum_from_name(msg_status_names, 8,
		                             PQgetvalue(r, 0, 1));
		snprintf(id, sizeof(id), "%s", PQgetvalue(r, 0, 0));
		PQclear(r);
		if ((rv = apply_one(db, x->tenant, id, cur, x->st->status,
		                    nz(x->st->at), x->st->error_code,
		                    x->st->error_text, &x->applied)) != PL_OK)
			return rv;
		{
			const char *q[2] = { x->tenant, id };
			if ((rv = exec_ok(db,
			                  "SELECT " MSG_COLS
			                  " FROM messaging.messages m WHERE "
			                  "m.tenant_id = $1 AND m.id = $2",
			                  2, q, &r)) != PL_OK)
				return rv;
			x->msg = msg_row(x->a, r, 0);
			PQclear(r);
		}
	}
	return PL_OK;
}

int
messaging_store_apply_status(pl_db *db, const char *tenant_id,
                             const char *channel_id, const msg_item *st,
                             pl_arena *a, bool *applied, bool *deferred,
                             msg_message_pb **msg)
{
	status_x x = { tenant_id, channel_id, st, a, false, false, NULL };
	int rv = pl_db_tx(db, tenant_id, status_fn, &x);

	*applied = x.applied;
	*deferred = x.deferred;
	if (msg)
		*msg = x.msg;
	return rv;
}

// ---------------------------------------------------------------------------
// Reply (phase B)

// Shortens a claimed message's lease so it is tried again in ms (a peer
// that could not be asked may answer in a moment; the whole lease would
// keep the customer waiting).
typedef struct retry_arg {
	const char *p[3];
} retry_arg;

static int
retry_fn(pl_db *db, void *arg)
{
	retry_arg *x = arg;
	return pl_db_command(
	        db,
	        "UPDATE messaging.messages SET reply_lease_until = "
	        "now() + $3::int * interval '1 millisecond' WHERE "
	        "tenant_id = $1 AND id = $2 AND reply_state = "
	        "'pending'",
	        3, x->p);
}

int
messaging_store_reply_retry_in(pl_db *db, const char *tenant_id,
                               const char *message_id, int64_t ms)
{
	char when[24];
	retry_arg x = { { tenant_id, message_id, when } };

	snprintf(when, sizeof(when), "%lld", (long long)ms);
	return pl_db_tx(db, tenant_id, retry_fn, &x);
}

// Queues an outbound message with its delivery; inside a transaction.
static int
queue_outbound(pl_db *db, const char *tenant, const char *conv,
               const char *channel, const char *sender, const char *user,
               const char *agent, const char *type, const char *text,
               const char *media_url, const char *mime, const char *meta,
               const char *idem, char id_out[40])
{
	char did[40];
	const char *p[13];
	int rv;

	pl_uuid7_str(id_out);
	pl_uuid7_str(did);
	p[0] = tenant;
	p[1] = id_out;
	p[2] = conv;
	p[3] = channel;
	p[4] = sender;
	p[5] = nz(user);
	p[6] = nz(agent);
	p[7] = type;
	p[8] = text ? text : "";
	p[9] = media_url ? media_url : "";
	p[10] = mime ? mime : "";
	p[11] = nz(meta);
	p[12] = nz(idem);
	if ((rv = exec_ok(
	             db,
	             "INSERT INTO messaging.messages (tenant_id, id, "
	             "conversation_id, channel_id, direction, sender, "
	             "sender_user_id, agent_id, type, text, media_url, "
	             "media_mime_type, status, queued_at, metadata, "
	             "idempotency_key) VALUES ($1, $2, $3, $4, 'outbound', "
	             "$5, $6, $7, $8, $9, $10, $11, 'queued', now(), "
	             "coalesce($12::jsonb, '{}'), $13)",
	             13, p, NULL)) != PL_OK)
		return rv;
	{
		const char *q[4] = { tenant, did, id_out, channel };
		if ((rv = exec_ok(
		             db,
		             "INSERT INTO messaging.deliveries (tenant_id, "
		             "id, message_id, channel_id) VALUES ($1, $2, "
		             "$3, $4)",
		             4, q, NULL)) != PL_OK)
			return rv;
	}
	{
		const char *q[3] = { tenant, conv, sender };
		rv = exec_ok(
		        db,
		        "UPDATE messaging.conversations SET message_count = "
		        "message_count + 1, last_activity_at = now(), "
		        "updated_at = now(), last_bot_message_at = CASE WHEN "
		        "$3 = 'bot' THEN now() ELSE last_bot_message_at END, "
		        "human_active_at = CASE WHEN $3 = 'human' THEN now() "
		        "ELSE human_active_at END WHERE tenant_id = $1 AND "
		        "id = $2",
		        3, q, NULL);
	}
	return rv;
}

// ---------------------------------------------------------------------------
// The bot's turn in batches (migration 005)

// The rows of reply_claim and reply_claim_ids as msg_pending (arena);
// clears r.
static int
pending_rows(PGresult *r, pl_arena *a, msg_pending **out, size_t *n)
{
	int nt;

	nt = PQntuples(r);
	if (nt > 0 &&
	    (*out = pl_arena_zalloc(a, (size_t)nt * sizeof(**out))) == NULL) {
		PQclear(r);
		return PL_RESOURCE_EXHAUSTED;
	}
	for (int i = 0; i < nt; i++) {
		msg_pending *pd = &(*out)[i];
		json_t *h, *t;
		size_t j;
		snprintf(pd->tenant_id, 40, "%s", PQgetvalue(r, i, 0));
		snprintf(pd->message_id, 40, "%s", PQgetvalue(r, i, 1));
		snprintf(pd->conversation_id, 40, "%s", PQgetvalue(r, i, 2));
		snprintf(pd->channel_id, 40, "%s", PQgetvalue(r, i, 3));
		snprintf(pd->provider_message_id, 256, "%s",
		         PQgetvalue(r, i, 4));
		pd->text = v(a, r, i, 5);
		snprintf(pd->created_at, 40, "%s", PQgetvalue(r, i, 6));
		snprintf(pd->owner, sizeof(pd->owner), "%s",
		         PQgetvalue(r, i, 7));
		snprintf(pd->agent_id, 40, "%s", PQgetvalue(r, i, 8));
		snprintf(pd->contact_id, 40, "%s", PQgetvalue(r, i, 9));
		snprintf(pd->contact_name, sizeof(pd->contact_name), "%s",
		         PQgetvalue(r, i, 10));
		snprintf(pd->contact_phone, sizeof(pd->contact_phone), "%s",
		         PQgetvalue(r, i, 11));
		snprintf(pd->contact_language, sizeof(pd->contact_language),
		         "%s", PQgetvalue(r, i, 12));
		h = json_loads(PQgetvalue(r, i, 13), 0, NULL);
		if (json_array_size(h) > 0)
			pd->history = pl_arena_zalloc(
			        a, json_array_size(h) * sizeof(*pd->history));
		json_array_foreach(h, j, t)
		{
			Parley__Agents__V1__HistoryTurn *ht;
			const char *dir =
			        json_string_value(json_array_get(t, 0));
			const char *tx =
			        json_string_value(json_array_get(t, 1));
			const char *at =
			        json_string_value(json_array_get(t, 2));
			if (pd->history == NULL ||
			    (ht = pl_arena_zalloc(a, sizeof(*ht))) == NULL)
				break;
			parley__agents__v1__history_turn__init(ht);
			ht->role =
			        dir && strcmp(dir, "inbound") == 0
			                ? PARLEY__AGENTS__V1__MESSAGE_ROLE__MESSAGE_ROLE_USER
			                : PARLEY__AGENTS__V1__MESSAGE_ROLE__MESSAGE_ROLE_ASSISTANT;
			ht->content = pl_arena_strdup(a, tx ? tx : "");
			ht->at = pl_arena_strdup(a, at ? at : "");
			pd->history[pd->n_history++] = ht;
		}
		json_decref(h);
	}
	*n = (size_t)nt;
	PQclear(r);
	return PL_OK;
}

int
messaging_store_reply_claim_batch(pl_db *db, int max, int64_t lease_ms,
                                  int history, pl_arena *a, msg_pending **out,
                                  size_t *n)
{
	char lim[16], lease[24], hist[16];
	const char *p[3] = { lim, lease, hist };
	PGresult *r = NULL;
	int rv;

	*out = NULL;
	*n = 0;
	snprintf(lim, sizeof(lim), "%d", max > 0 ? max : 1);
	snprintf(lease, sizeof(lease), "%lld", (long long)lease_ms);
	snprintf(hist, sizeof(hist), "%d", history);
	// One statement, its own transaction (service level: the queue
	// spans tenants; the function says so).
	rv = exec_batch(db,
	                "SELECT * FROM messaging.reply_claim($1::int, $2::int, "
	                "$3::int)",
	                3, p, &r);
	if (rv != PL_OK)
		return rv;
	return pending_rows(r, a, out, n);
}

// The turns of k messages (tenants[i], ids[i]) by sql, whose parameters
// are the two id arrays, then history, then lease_ms when lease_ms >= 0.
static int
pending_of_ids(pl_db *db, const char *sql, const char *const *tenants,
               const char *const *ids, size_t k, int64_t lease_ms, int history,
               pl_arena *a, msg_pending **out, size_t *n)
{
	char lease[24], hist[16];
	const char *p[4];
	PGresult *r = NULL;
	int rv;

	*out = NULL;
	*n = 0;
	if (k == 0)
		return PL_OK;
	// The ids are ours: uuids.
	for (size_t i = 0; i < k; i++)
		if (strlen(tenants[i]) != 36 || strlen(ids[i]) != 36)
			return PL_INTERNAL;
	p[0] = pl_db_array(a, tenants, k);
	p[1] = pl_db_array(a, ids, k);
	if (p[0] == NULL || p[1] == NULL)
		return PL_RESOURCE_EXHAUSTED;
	snprintf(hist, sizeof(hist), "%d", history);
	snprintf(lease, sizeof(lease), "%lld", (long long)lease_ms);
	p[2] = hist;
	p[3] = lease;
	// In the caller's transaction (the inbox batch's): a claim commits
	// with the messages it claims.
	if ((rv = exec_ok(db, sql, lease_ms >= 0 ? 4 : 3, p, &r)) != PL_OK)
		return rv;
	return pending_rows(r, a, out, n);
}

int
messaging_store_reply_claim_ids_tx(pl_db *db, const char *const *tenants,
                                   const char *const *ids, size_t k,
                                   int64_t lease_ms, int history, pl_arena *a,
                                   msg_pending **out, size_t *n)
{
	return pending_of_ids(db,
	                      "SELECT * FROM messaging.reply_claim_ids("
	                      "$1::uuid[], $2::uuid[], $4::int, $3::int)",
	                      tenants, ids, k, lease_ms, history, a, out, n);
}

int
messaging_store_reply_context_tx(pl_db *db, const char *const *tenants,
                                 const char *const *ids, size_t k, int history,
                                 pl_arena *a, msg_pending **out, size_t *n)
{
	return pending_of_ids(
	        db,
	        "SELECT * FROM messaging.reply_context($1::uuid[], "
	        "$2::uuid[], $3::int)",
	        tenants, ids, k, -1, history, a, out, n);
}

// ---------------------------------------------------------------------------
// Settings the core uses (migration 010)

typedef struct burst_x {
	const char *p[4];
	pl_arena *a;
	int64_t window_ms;
	char (*ids)[40];
	char **texts;
	size_t max, n;
} burst_x;

static int
burst_window_fn(pl_db *db, void *arg)
{
	burst_x *x = arg;
	PGresult *r = NULL;
	int rv = exec_ok(db,
	                 "SELECT coalesce((SELECT reply_burst_window_ms FROM "
	                 "messaging.settings WHERE tenant_id = $1), 0)",
	                 1, x->p, &r);
	if (rv == PL_OK) {
		x->window_ms = atoll(PQgetvalue(r, 0, 0));
		PQclear(r);
	}
	return rv;
}

int
messaging_store_burst_window(pl_db *db, const char *tenant_id,
                             int64_t *window_ms)
{
	burst_x x = {
		{ tenant_id, NULL, NULL, NULL }, NULL, 0, NULL, NULL, 0, 0
	};
	int rv = pl_db_tx(db, tenant_id, burst_window_fn, &x);

	*window_ms = rv == PL_OK ? x.window_ms : 0;
	return rv;
}

static int
burst_fn(pl_db *db, void *arg)
{
	burst_x *x = arg;
	PGresult *r = NULL;
	int rv = exec_ok(db,
	                 "SELECT id, text FROM messaging.reply_burst($1, $2, "
	                 "$3, $4::int)",
	                 4, x->p, &r);
	if (rv != PL_OK)
		return rv;
	x->n = 0;
	for (int i = 0; i < PQntuples(r) && x->n < x->max; i++) {
		snprintf(x->ids[x->n], 40, "%s", PQgetvalue(r, i, 0));
		x->texts[x->n] = v(x->a, r, i, 1);
		x->n++;
	}
	PQclear(r);
	return PL_OK;
}

int
messaging_store_reply_burst(pl_db *db, const msg_pending *head,
                            int64_t window_ms, pl_arena *a, char (*ids)[40],
                            char **texts, size_t max, size_t *n)
{
	char w[24];
	burst_x x = { { head->tenant_id, head->conversation_id,
		        head->message_id, w },
		      a,
		      window_ms,
		      ids,
		      texts,
		      max,
		      0 };
	int rv;

	snprintf(w, sizeof(w), "%lld", (long long)window_ms);
	rv = pl_db_tx(db, head->tenant_id, burst_fn, &x);
	*n = rv == PL_OK ? x.n : 0;
	return rv;
}

int
messaging_store_handback_due(pl_db *db, int max, int *n)
{
	char lim[16];
	const char *p[1] = { lim };
	PGresult *r = NULL;
	int rv;

	snprintf(lim, sizeof(lim), "%d", max > 0 ? max : 1);
	// One statement, its own transaction (service level: the function
	// says so).
	rv = exec_batch(db, "SELECT messaging.handback_due($1::int)", 1, p, &r);
	*n = 0;
	if (rv == PL_OK) {
		*n = atoi(PQgetvalue(r, 0, 0));
		PQclear(r);
	}
	return rv;
}

// True when engage_on_reply has something to do with this metadata.
static bool
reply_needs_engage(const char *meta)
{
	return meta != NULL && (strstr(meta, "\"captured_lead\"") != NULL ||
	                        strstr(meta, "\"proposed_actions\"") != NULL);
}

typedef struct reply_batch {
	msg_pending *const *pd;
	const msg_reply_result *rr;
	size_t n;
	const char *json;
	char (*reply_ids)[40];
	char (*delivery_ids)[40];
	msg_delivery *claimed; // NULL: queued for the delivery workers
	pl_arena *a;
} reply_batch;

// The delivery reply_finish inserted claimed for item i (its result o
// carries the recipient), in the shape delivery_claim returns.
static void
claimed_delivery(reply_batch *x, size_t i, json_t *o)
{
	msg_delivery *d = &x->claimed[i];
	const char *ext = json_string_value(json_object_get(o, "ext"));
	const char *ek = json_string_value(json_object_get(o, "ek"));

	memset(d, 0, sizeof(*d));
	if (x->reply_ids[i][0] == '\0' || ext == NULL)
		return;
	snprintf(d->tenant_id, 40, "%s", x->pd[i]->tenant_id);
	snprintf(d->id, 40, "%s", x->delivery_ids[i]);
	snprintf(d->message_id, 40, "%s", x->reply_ids[i]);
	snprintf(d->channel_id, 40, "%s", x->pd[i]->channel_id);
	snprintf(d->conversation_id, 40, "%s", x->pd[i]->conversation_id);
	d->attempts = 1;
	d->type = msg_enum_from_name(msg_type_names, 12, "text");
	d->text = pl_arena_strdup(x->a, x->rr[i].text ? x->rr[i].text : "");
	d->media_url = NULL;
	snprintf(d->to, sizeof(d->to), "%s", ext);
	d->to_kind = msg_enum_from_name(ext_kind_names, 4, ek ? ek : "");
}

static int
reply_batch_fn(pl_db *db, void *arg)
{
	reply_batch *x = arg;
	const char *p[1] = { x->json };
	PGresult *r = NULL;
	json_t *res;
	int rv;

	// In pl_db_tx (engagement hooks) a deadlock is retried by the whole
	// transaction; alone, by exec_batch.
	rv = pl_db_in_tx(db) ? exec_ok(db,
	                               "SELECT "
	                               "messaging.reply_finish($1::jsonb)::"
	                               "text",
	                               1, p, &r)
	                     : exec_batch(db,
	                                  "SELECT "
	                                  "messaging.reply_finish($1::jsonb)::"
	                                  "text",
	                                  1, p, &r);
	if (rv != PL_OK)
		return rv;
	res = json_loads(PQgetvalue(r, 0, 0), 0, NULL);
	PQclear(r);
	for (size_t i = 0; i < x->n && rv == PL_OK; i++) {
		json_t *o = json_array_get(res, i);
		const char *rid = json_string_value(json_object_get(o, "rid"));
		snprintf(x->reply_ids[i], 40, "%s", rid ? rid : "");
		if (x->claimed != NULL)
			claimed_delivery(x, i, o);
		// Leads and proposed actions (engagement), for the turns
		// finished here, under the message's tenant.
		if (!json_is_true(json_object_get(o, "done")) ||
		    !reply_needs_engage(x->rr[i].metadata_json))
			continue;
		rv = messaging_store_tx_tenant(db, x->pd[i]->tenant_id);
		if (rv == PL_OK)
			rv = engage_on_reply(
			        db, x->pd[i]->tenant_id, x->pd[i]->contact_id,
			        x->pd[i]->conversation_id, x->pd[i]->message_id,
			        x->rr[i].agent_id, x->rr[i].metadata_json);
	}
	json_decref(res);
	return rv;
}

int
messaging_store_reply_finish_batch(pl_db *db, msg_pending *const *pd,
                                   const msg_reply_result *rr, size_t n,
                                   int64_t lease_ms, pl_arena *a,
                                   char (*reply_ids)[40],
                                   struct msg_delivery *claimed)
{
	json_t *arr = json_array();
	char(*dids)[40] = pl_arena_zalloc(a, (n ? n : 1) * sizeof(*dids));
	reply_batch x = { pd, rr, n, NULL, reply_ids, dids, claimed, a };
	char lease[24];
	bool engage = false, ok = arr != NULL;
	char *text;
	int rv;

	snprintf(lease, sizeof(lease), "%lld", (long long)lease_ms);
	for (size_t i = 0; i < n && ok; i++) {
		json_t *o = json_object();
		char rid[40], *did = dids ? dids[i] : NULL;
		reply_ids[i][0] = '\0';
		if (claimed != NULL)
			memset(&claimed[i], 0, sizeof(claimed[i]));
		if (did == NULL) {
			json_decref(o);
			ok = false;
			break;
		}
		pl_uuid7_str(rid);
		pl_uuid7_str(did);
		ok = o != NULL && jput(o, "t", pd[i]->tenant_id) &&
		     jput(o, "mid", pd[i]->message_id) &&
		     jput(o, "cv", pd[i]->conversation_id) &&
		     jput(o, "ch", pd[i]->channel_id) &&
		     jput(o, "ct", pd[i]->contact_id) &&
		     jput(o, "outcome", rr[i].outcome) &&
		     jput(o, "text", rr[i].text) &&
		     jput(o, "agent", rr[i].agent_id) &&
		     jput(o, "reason", rr[i].handoff_reason) &&
		     jput(o, "limit", rr[i].limit_why) && jput(o, "rid", rid) &&
		     jput(o, "did", did) &&
		     (claimed == NULL || jput(o, "lease", lease));
		if (o != NULL) {
			json_object_set_new(o, "handoff",
			                    json_boolean(rr[i].handoff));
			jput_obj(o, "meta", rr[i].metadata_json);
			json_array_append_new(arr, o);
		}
		engage = engage || reply_needs_engage(rr[i].metadata_json);
	}
	text = ok ? json_dumps(arr, JSON_COMPACT) : NULL;
	json_decref(arr);
	if (text == NULL)
		return ok ? PL_RESOURCE_EXHAUSTED : PL_INVALID_ARGUMENT;
	x.json = text;
	if (engage) {
		// The engagement hooks run in the same transaction.
		rv = pl_db_tx(db, "*", reply_batch_fn, &x);
	} else {
		// One statement, its own transaction: one round trip, one
		// commit for the whole batch.
		rv = reply_batch_fn(db, &x);
	}
	free(text);
	return rv;
}

// ---------------------------------------------------------------------------
// Deliveries in batches (migration 005)

int
messaging_store_delivery_claim_batch(pl_db *db, int max, int64_t lease_ms,
                                     pl_arena *a, msg_delivery **out, size_t *n)
{
	char lim[16], lease[24];
	const char *p[2] = { lim, lease };
	PGresult *r = NULL;
	int rv, nt;

	*out = NULL;
	*n = 0;
	snprintf(lim, sizeof(lim), "%d", max > 0 ? max : 1);
	snprintf(lease, sizeof(lease), "%lld", (long long)lease_ms);
	// One statement, its own transaction (service level: the queue spans
	// tenants). The claim pushes next_attempt_at past the send's budget:
	// a lease, so a replica that dies mid-send is retried later.
	rv = exec_batch(
	        db,
	        "SELECT tenant_id, id, message_id, channel_id, attempts, "
	        "conversation_id, type, text, media_url, external_id, "
	        "external_id_kind FROM messaging.delivery_claim($1::int, "
	        "$2::int)",
	        2, p, &r);
	if (rv != PL_OK)
		return rv;
	nt = PQntuples(r);
	if (nt > 0 &&
	    (*out = pl_arena_zalloc(a, (size_t)nt * sizeof(**out))) == NULL) {
		PQclear(r);
		return PL_RESOURCE_EXHAUSTED;
	}
	for (int i = 0; i < nt; i++) {
		msg_delivery *d = &(*out)[i];
		snprintf(d->tenant_id, 40, "%s", PQgetvalue(r, i, 0));
		snprintf(d->id, 40, "%s", PQgetvalue(r, i, 1));
		snprintf(d->message_id, 40, "%s", PQgetvalue(r, i, 2));
		snprintf(d->channel_id, 40, "%s", PQgetvalue(r, i, 3));
		d->attempts = atoi(PQgetvalue(r, i, 4));
		snprintf(d->conversation_id, 40, "%s", PQgetvalue(r, i, 5));
		d->type = en(msg_type_names, 12, r, i, 6);
		d->text = v(a, r, i, 7);
		d->media_url = v(a, r, i, 8);
		snprintf(d->to, sizeof(d->to), "%s", PQgetvalue(r, i, 9));
		d->to_kind = en(ext_kind_names, 4, r, i, 10);
	}
	*n = (size_t)nt;
	PQclear(r);
	return PL_OK;
}

int
messaging_store_delivery_done_batch(pl_db *db, const msg_delivery *d,
                                    const msg_delivery_result *res, size_t n)
{
	static const char *const kinds[] = { "sent", "retry", "failed" };
	json_t *arr = json_array();
	bool ok = arr != NULL;
	const char *p[1];
	char *text;
	int rv;

	for (size_t i = 0; i < n && ok; i++) {
		json_t *o = json_object();
		char ms[24];
		int k = res[i].kind >= 0 && res[i].kind < 3 ? res[i].kind : 2;
		snprintf(ms, sizeof(ms), "%lld", (long long)res[i].delay_ms);
		ok = o != NULL && jput(o, "t", d[i].tenant_id) &&
		     jput(o, "did", d[i].id) &&
		     jput(o, "mid", d[i].message_id) &&
		     jput(o, "cv", d[i].conversation_id) &&
		     jput(o, "ch", d[i].channel_id) && jput(o, "r", kinds[k]) &&
		     jput(o, "pid", res[i].provider_id) && jput(o, "ms", ms) &&
		     jput(o, "code", res[i].code);
		// The provider's text may be any bytes: keep what is UTF-8.
		if (ok && !jput(o, "text", res[i].text))
			jput(o, "text", "(the provider's text is not UTF-8)");
		if (o != NULL)
			json_array_append_new(arr, o);
	}
	text = ok ? json_dumps(arr, JSON_COMPACT) : NULL;
	json_decref(arr);
	if (text == NULL)
		return PL_RESOURCE_EXHAUSTED;
	p[0] = text;
	// One statement, its own transaction.
	rv = exec_batch(db, "SELECT messaging.delivery_done($1::jsonb)", 1, p,
	                NULL);
	free(text);
	return rv;
}

// ---------------------------------------------------------------------------
// Reads for handlers

#define CONV_FROM                                                              \
	" FROM messaging.conversations c JOIN messaging.contacts k ON "        \
	"k.tenant_id = c.tenant_id AND k.id = c.contact_id "

static int
get_conv_in(pl_db *db, pl_arena *a, const char *tenant, const char *id,
            msg_conv_pb **out)
{
	const char *p[2] = { tenant, id };
	PGresult *r = NULL;
	int rv = exec_ok(db,
	                 "SELECT " CONV_COLS ", " CONTACT_COLS CONV_FROM
	                 "WHERE c.tenant_id = $1 AND c.id = $2",
	                 2, p, &r);

	if (rv != PL_OK)
		return rv;
	*out = PQntuples(r) == 1 ? conv_row(a, r, 0, true) : NULL;
	PQclear(r);
	return *out ? PL_OK : PL_NOT_FOUND;
}

static int
get_msg_in(pl_db *db, pl_arena *a, const char *tenant, const char *id,
           msg_message_pb **out)
{
	const char *p[2] = { tenant, id };
	PGresult *r = NULL;
	int rv = exec_ok(db,
	                 "SELECT " MSG_COLS " FROM messaging.messages m WHERE "
	                 "m.tenant_id = $1 AND m.id = $2",
	                 2, p, &r);

	if (rv != PL_OK)
		return rv;
	*out = PQntuples(r) == 1 ? msg_row(a, r, 0) : NULL;
	PQclear(r);
	return *out ? PL_OK : PL_NOT_FOUND;
}

typedef struct get_x {
	const char *tenant, *id;
	pl_arena *a;
	void *out;
	int kind; // 0 conv, 1 msg, 2 contact
} get_x;

static int
get_fn(pl_db *db, void *arg)
{
	get_x *x = arg;

	if (x->kind == 0)
		return get_conv_in(db, x->a, x->tenant, x->id,
		                   (msg_conv_pb **)&x->out);
	if (x->kind == 1)
		return get_msg_in(db, x->a, x->tenant, x->id,
		                  (msg_message_pb **)&x->out);
	{
		const char *p[2] = { x->tenant, x->id };
		PGresult *r = NULL;
		int rv = exec_ok(db,
		                 "SELECT " CONTACT_COLS
		                 " FROM messaging.contacts "
		                 "k WHERE k.tenant_id = $1 AND k.id = $2",
		                 2, p, &r);
		if (rv != PL_OK)
			return rv;
		x->out = PQntuples(r) == 1 ? contact_row(x->a, r, 0, 0) : NULL;
		PQclear(r);
		return x->out ? PL_OK : PL_NOT_FOUND;
	}
}

static int
get_any(pl_call *call, pl_db *db, const char *tenant, const char *id, int kind,
        void **out, const char *what)
{
	get_x x = { tenant, id, call->arena, NULL, kind };
	int rv;

	if (!pl_uuid_valid(id))
		return pl_call_error(call, PL_NOT_FOUND, "%s %s not found",
		                     what, id);
	rv = pl_db_tx(db, tenant, get_fn, &x);
	if (rv == PL_NOT_FOUND)
		return pl_call_error(call, rv, "%s %s not found", what, id);
	if (rv != PL_OK)
		return pl_call_error(call, rv, "could not read %s", what);
	*out = x.out;
	return PL_OK;
}

int
messaging_store_get_conversation(pl_call *call, pl_db *db,
                                 const char *tenant_id, const char *id,
                                 msg_conv_pb **out)
{
	return get_any(call, db, tenant_id, id, 0, (void **)out,
	               "conversation");
}

int
messaging_store_get_message(pl_call *call, pl_db *db, const char *tenant_id,
                            const char *id, msg_message_pb **out)
{
	return get_any(call, db, tenant_id, id, 1, (void **)out, "message");
}

int
messaging_store_get_contact(pl_call *call, pl_db *db, const char *tenant_id,
                            const char *id, msg_contact_pb **out)
{
	return get_any(call, db, tenant_id, id, 2, (void **)out, "contact");
}

// ---------------------------------------------------------------------------
// Outbound from people and the API

typedef struct send_x {
	pl_call *call;
	const msg_outbound *o;
	msg_message_pb *msg;
	msg_conv_pb *conv;
} send_x;

static int
send_fn(pl_db *db, void *arg)
{
	send_x *x = arg;
	const msg_outbound *o = x->o;
	pl_call *call = x->call;
	PGresult *r = NULL;
	char id[40], channel[40], owner[8], status[8];
	bool window_ok, webchat;
	int rv;

	if (o->idempotency_key != NULL) {
		const char *p[2] = { o->tenant_id, o->idempotency_key };
		if ((rv = exec_ok(db,
		                  "SELECT m.id FROM messaging.messages m WHERE "
		                  "m.tenant_id = $1 AND m.idempotency_key = $2",
		                  2, p, &r)) != PL_OK)
			return rv;
		if (PQntuples(r) == 1) {
			snprintf(id, sizeof(id), "%s", PQgetvalue(r, 0, 0));
			PQclear(r);
			goto answer;
		}
		PQclear(r);
	}
	{
		const char *p[2] = { o->tenant_id, o->conversation_id };
		if ((rv = exec_ok(
		             db,
		             "SELECT c.channel_id, c.owner, c.status, "
		             "coalesce(c.last_inbound_at > now() - interval "
		             "'24 hours', false), k.external_id_kind = "
		             "'webchat_session' FROM "
		             "messaging.conversations c JOIN "
		             "messaging.contacts k ON k.tenant_id = "
		             "c.tenant_id AND k.id = c.contact_id WHERE "
		             "c.tenant_id = $1 AND c.id = $2 FOR UPDATE OF c",
		             2, p, &r)) != PL_OK)
			return rv;
		if (PQntuples(r) != 1) {
			PQclear(r);
			return pl_call_error(call, PL_NOT_FOUND,
			                     "conversation %s not found",
			                     o->conversation_id);
		}
		snprintf(channel, sizeof(channel), "%s", PQgetvalue(r, 0, 0));
		snprintf(owner, sizeof(owner), "%s", PQgetvalue(r, 0, 1));
		snprintf(status, sizeof(status), "%s", PQgetvalue(r, 0, 2));
		window_ok = PQgetvalue(r, 0, 3)[0] == 't';
		webchat = PQgetvalue(r, 0, 4)[0] == 't';
		PQclear(r);
	}
	if (strcmp(status, "closed") == 0)
		return pl_call_error(
		        call, PL_FAILED_PRECONDITION,
		        "conversation %s is closed: reopen it first",
		        o->conversation_id);
	if (o->check_window && !webchat && !window_ok)
		return pl_call_error(
		        call, PL_FAILED_PRECONDITION,
		        "the contact's last message is older than 24 hours: a "
		        "free-form message cannot be sent, a template is "
		        "needed");
	if (o->take_over && strcmp(owner, "bot") == 0) {
		const char *p[3] = { o->tenant_id, o->conversation_id,
			             nz(o->user_id) };
		if ((rv = exec_ok(
		             db,
		             "UPDATE messaging.conversations SET owner = "
		             "'human', assigned_user_id = $3, status = "
		             "'open', updated_at = now(), human_active_at = "
		             "now() WHERE tenant_id = $1 AND id = $2",
		             3, p, NULL)) != PL_OK)
			return rv;
		if ((rv = event(
		             db, o->tenant_id, "conversation.handoff", NULL,
		             "{\"reason\":\"human_reply\",\"by\":\"user\"}")) !=
		    PL_OK)
			return rv;
	}
	if ((rv = queue_outbound(db, o->tenant_id, o->conversation_id, channel,
	                         o->sender, o->user_id, NULL,
	                         msg_type_names[o->type], o->text, o->media_url,
	                         o->media_mime_type, o->metadata_json,
	                         o->idempotency_key, id)) != PL_OK)
		return rv;
answer:
	if ((rv = get_msg_in(db, call->arena, o->tenant_id, id, &x->msg)) !=
	    PL_OK)
		return rv;
	return get_conv_in(db, call->arena, o->tenant_id,
	                   x->msg->conversation_id, &x->conv);
}

int
messaging_store_send(pl_call *call, pl_db *db, const msg_outbound *o,
                     msg_message_pb **msg, msg_conv_pb **conv)
{
	send_x x = { call, o, NULL, NULL };
	int rv;

	if (!pl_uuid_valid(o->conversation_id))
		return pl_call_error(call, PL_NOT_FOUND,
		                     "conversation %s not found",
		                     o->conversation_id);
	rv = pl_db_tx(pl_call_db(call), o->tenant_id, send_fn, &x);
	(void)db;
	if (rv != PL_OK) {
		if (call->code == PL_OK)
			return pl_call_error(call, rv,
			                     "could not queue the message");
		return rv;
	}
	*msg = x.msg;
	*conv = x.conv;
	return PL_OK;
}

// ---------------------------------------------------------------------------
// Conversation state

typedef struct chg_x {
	pl_call *call;
	const char *tenant, *id;
	const msg_conv_change *c;
	msg_conv_pb *out;
} chg_x;

static int
chg_fn(pl_db *db, void *arg)
{
	chg_x *x = arg;
	const msg_conv_change *c = x->c;
	pl_call *call = x->call;
	msg_conv_pb *before;
	char *dims, *pay = NULL;
	const char *type = NULL;
	int rv;

	if ((rv = get_conv_in(db, call->arena, x->tenant, x->id, &before)) !=
	    PL_OK) {
		if (rv == PL_NOT_FOUND)
			return pl_call_error(
			        call, rv, "conversation %s not found", x->id);
		return rv;
	}
	{
		const char *p[2] = { x->tenant, x->id };
		if ((rv = exec_ok(db,
		                  "SELECT 1 FROM messaging.conversations WHERE "
		                  "tenant_id = $1 AND id = $2 FOR UPDATE",
		                  2, p, NULL)) != PL_OK)
			return rv;
	}
	dims = jpack(call->arena,
	             json_pack("{s:s, s:s, s:s}", "channel_id",
	                       before->channel_id, "conversation_id", x->id,
	                       "contact_id", before->contact_id));
	if (strcmp(c->op, "takeover") == 0 || strcmp(c->op, "handback") == 0) {
		bool take = c->op[0] == 't';
		const char *p[3] = { x->tenant, x->id,
			             take ? c->user_id : NULL };
		if (before->status == 3)
			return pl_call_error(call, PL_FAILED_PRECONDITION,
			                     "conversation %s is closed",
			                     x->id);
		rv = exec_ok(
		        db,
		        take ? "UPDATE messaging.conversations SET owner = "
		               "'human', assigned_user_id = $3, status = "
		               "'open', updated_at = now(), human_active_at = "
		               "now() WHERE tenant_id = $1 AND id = $2"
		             : "UPDATE messaging.conversations SET owner = "
		               "'bot', assigned_user_id = $3, status = 'open', "
		               "handoff_reason = '', updated_at = now() WHERE "
		               "tenant_id = $1 AND id = $2 AND $3::uuid IS "
		               "NULL",
		        3, p, NULL);
		type = take ? "conversation.handoff"
		            : "conversation.handed_back";
		pay = take ? "{\"reason\":\"takeover\",\"by\":\"user\"}" : "{}";
	} else if (strcmp(c->op, "state") == 0) {
		const char *p[5] = { x->tenant, x->id, c->stage,
			             c->intent_level, c->sentiment };
		rv = exec_ok(
		        db,
		        "UPDATE messaging.conversations SET stage = "
		        "coalesce($3, stage), intent_level = coalesce($4, "
		        "intent_level), sentiment = coalesce($5, sentiment), "
		        "updated_at = now() WHERE tenant_id = $1 AND id = $2",
		        5, p, NULL);
		type = "conversation.state_changed";
		pay = jpack(
		        call->arena,
		        json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "stage",
		                  c->stage ? c->stage
		                           : conv_stage_names[before->stage],
		                  "intent_level",
		                  c->intent_level
		                          ? c->intent_level
		                          : intent_level_names
		                                    [before->intent_level],
		                  "sentiment",
		                  c->sentiment
		                          ? c->sentiment
		                          : sentiment_names[before->sentiment],
		                  "previous_stage",
		                  conv_stage_names[before->stage],
		                  "previous_intent_level",
		                  intent_level_names[before->intent_level],
		                  "previous_sentiment",
		                  sentiment_names[before->sentiment]));
	} else if (strcmp(c->op, "close") == 0) {
		const char *p[2] = { x->tenant, x->id };
		if (before->status == 3)
			goto answer; // closing twice changes nothing
		rv = exec_ok(db,
		             "UPDATE messaging.conversations SET status = "
		             "'closed', closed_at = now(), updated_at = now() "
		             "WHERE tenant_id = $1 AND id = $2",
		             2, p, NULL);
		// The bot's turns still pending in it end here (outcome
		// closed): answering into a closed conversation, or handing
		// it over (which reopens it), could meet the contact's next
		// open conversation. reply_finish locks the conversation
		// before it reads a message's state, so it sees them done.
		if (rv == PL_OK)
			rv = exec_ok(
			        db,
			        "UPDATE messaging.messages SET reply_state "
			        "= 'done', reply_outcome = 'closed', "
			        "reply_lease_until = NULL WHERE tenant_id = "
			        "$1 AND conversation_id = $2 AND "
			        "reply_state = 'pending'",
			        2, p, NULL);
		type = "conversation.closed";
		pay = before->owner == 2 || before->assigned_user_id[0]
		              ? "{\"handed_over\":true}"
		              : "{\"handed_over\":false}";
	} else {
		const char *p[2] = { x->tenant, x->id };
		PGresult *r = NULL;
		if (before->status != 3)
			goto answer;
		rv = exec_ok(
		        db,
		        "SELECT 1 FROM messaging.conversations WHERE "
		        "tenant_id = $1 AND contact_id = (SELECT contact_id "
		        "FROM messaging.conversations WHERE tenant_id = $1 "
		        "AND id = $2) AND status <> 'closed'",
		        2, p, &r);
		if (rv != PL_OK)
			return rv;
		if (PQntuples(r) > 0) {
			PQclear(r);
			return pl_call_error(call, PL_FAILED_PRECONDITION,
			                     "the contact has another open "
			                     "conversation: close it first");
		}
		PQclear(r);
		rv = exec_ok(
		        db,
		        "UPDATE messaging.conversations SET status = 'open', "
		        "closed_at = NULL, updated_at = now() WHERE "
		        "tenant_id = $1 AND id = $2",
		        2, p, NULL);
		type = "conversation.reopened";
		pay = "{}";
	}
	if (rv != PL_OK)
		return rv;
	if (type != NULL &&
	    (rv = event(db, x->tenant, type, dims, pay)) != PL_OK)
		return rv;
answer:
	return get_conv_in(db, call->arena, x->tenant, x->id, &x->out);
}

int
messaging_store_conv_change(pl_call *call, pl_db *db, const char *tenant_id,
                            const char *id, const msg_conv_change *c,
                            msg_conv_pb **out)
{
	chg_x x = { call, tenant_id, id, c, NULL };
	int rv;

	if (!pl_uuid_valid(id))
		return pl_call_error(call, PL_NOT_FOUND,
		                     "conversation %s not found", id);
	rv = pl_db_tx(db, tenant_id, chg_fn, &x);
	if (rv != PL_OK) {
		if (call->code == PL_OK)
			return pl_call_error(call, rv,
			                     "could not change conversation %s",
			                     id);
		return rv;
	}
	*out = x.out;
	return PL_OK;
}

// ---------------------------------------------------------------------------
// Lists

char *
messaging_cursor_encode(pl_arena *a, const char *s)
{
	size_t n = strlen(s);
	size_t cap = sodium_base64_encoded_len(
	        n, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
	char *out = pl_arena_alloc(a, cap);

	if (out != NULL)
		sodium_bin2base64(out, cap, (const unsigned char *)s, n,
		                  sodium_base64_VARIANT_URLSAFE_NO_PADDING);
	return out;
}

char *
messaging_cursor_decode(pl_arena *a, const char *tok)
{
	size_t n = strlen(tok), bl = 0;
	char *out;

	if (n == 0 || n > 512)
		return NULL;
	out = pl_arena_alloc(a, n + 1);
	if (out == NULL ||
	    sodium_base642bin((unsigned char *)out, n, tok, n, NULL, &bl, NULL,
	                      sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0)
		return NULL;
	out[bl] = '\0';
	return out;
}

// Appends " AND <cond with $n>" for a filter given, its value the next
// parameter.
static void
sql_filter(char *sql, size_t cap, size_t *len, const char **p, int *np,
           const char *value, const char *cond)
{
	int k;

	if (value == NULL || *len >= cap)
		return;
	p[(*np)++] = value;
	k = snprintf(sql + *len, cap - *len, cond, *np);
	*len += k > 0 ? (size_t)k : 0;
}

// The time of a conversations page token: the text of last_activity_at
// as the row gave it, offset and microseconds included. Tokens made before
// held UTC without an offset (to_char's YYYY-MM-DD"T"HH24:MI:SS.US),
// which ::timestamptz would read in the session's time zone: they get
// "+00".
static char *
cursor_ts(pl_arena *a, const char *s, size_t n)
{
	bool offset = n > 10 && (memchr(s + 10, '+', n - 10) != NULL ||
	                         memchr(s + 10, '-', n - 10) != NULL);

	return offset ? pl_arena_strndup(a, s, n)
	              : pl_arena_printf(a, "%.*s+00", (int)n, s);
}

int
messaging_store_list_conversations(pl_call *call, pl_db *db,
                                   const char *tenant_id,
                                   const msg_conv_filter *f, const char *after,
                                   int limit, msg_conv_pb ***out, size_t *n,
                                   char **next)
{
	char lim[16], *ts = NULL, *id = NULL, sql[4096];
	const char *p[14];
	PGresult *r = NULL;
	size_t len;
	int rv, rows, np = 1;

	if (after != NULL) {
		char *bar = strchr(after, '|');
		if (bar == NULL || !pl_uuid_valid(bar + 1))
			return pl_call_violation(call, "page.page_token",
			                         "is not a valid page token");
		ts = cursor_ts(call->arena, after, (size_t)(bar - after));
		id = bar + 1;
	}
	snprintf(lim, sizeof(lim), "%d", limit + 1);
	// The text names only the filters given, so that one plan (the
	// statement is prepared per connection) fits every call of that
	// shape: the tenant's conversations in the order of the index
	// (tenant, last_activity_at, id), the page's rows and no more.
	p[0] = tenant_id;
	len = (size_t)snprintf(sql, sizeof(sql),
	                       "SELECT " CONV_COLS ", " CONTACT_COLS
	                       ", c.last_activity_at" CONV_FROM
	                       "WHERE c.tenant_id = $1");
	sql_filter(sql, sizeof(sql), &len, p, &np, f->status,
	           " AND c.status = $%d::text");
	sql_filter(sql, sizeof(sql), &len, p, &np, f->owner,
	           " AND c.owner = $%d::text");
	sql_filter(sql, sizeof(sql), &len, p, &np, f->assigned,
	           " AND c.assigned_user_id = $%d::uuid");
	sql_filter(sql, sizeof(sql), &len, p, &np, f->stage,
	           " AND c.stage = $%d::text");
	sql_filter(sql, sizeof(sql), &len, p, &np, f->channel,
	           " AND c.channel_id = $%d::uuid");
	sql_filter(sql, sizeof(sql), &len, p, &np, f->contact,
	           " AND c.contact_id = $%d::uuid");
	sql_filter(sql, sizeof(sql), &len, p, &np, f->agent,
	           " AND c.agent_id = $%d::uuid");
	sql_filter(sql, sizeof(sql), &len, p, &np, f->intent,
	           " AND c.intent_level = $%d::text");
	sql_filter(sql, sizeof(sql), &len, p, &np, f->sentiment,
	           " AND c.sentiment = $%d::text");
	if (f->unassigned && len < sizeof(sql))
		len += (size_t)snprintf(sql + len, sizeof(sql) - len,
		                        " AND c.assigned_user_id IS NULL");
	if (ts != NULL) {
		sql_filter(sql, sizeof(sql), &len, p, &np, ts,
		           " AND (c.last_activity_at, c.id) < "
		           "($%d::timestamptz, ");
		sql_filter(sql, sizeof(sql), &len, p, &np, id, "$%d::uuid)");
	}
	sql_filter(sql, sizeof(sql), &len, p, &np, lim,
	           " ORDER BY c.last_activity_at DESC, c.id DESC LIMIT "
	           "$%d::int");
	if (len >= sizeof(sql))
		return pl_call_error(call, PL_INTERNAL,
		                     "could not list conversations");
	// In binary: a page is 21 rows of 11 timestamps and 7 uuids each.
	r = pl_db_read_binary(db, tenant_id, sql, np, p);
	if ((rv = pl_db_result_status(r)) != PL_OK) {
		rv = fail(call, r, rv, "list conversations");
		PQclear(r);
		return rv;
	}
	rows = PQntuples(r);
	*n = 0;
	*next = NULL;
	*out = pl_arena_zalloc(call->arena, (size_t)(rows + 1) * sizeof(**out));
	for (int i = 0; i < rows && i < limit; i++)
		(*out)[(*n)++] = conv_row(call->arena, r, i, true);
	if (rows > limit) {
		int last = limit - 1;
		*next = messaging_cursor_encode(
		        call->arena,
		        pl_arena_printf(call->arena, "%s|%s",
		                        v(call->arena, r, last,
		                          CONV_NCOLS + CONTACT_NCOLS),
		                        v(call->arena, r, last, 0)));
	}
	PQclear(r);
	return PL_OK;
}

int
messaging_store_list_messages(pl_call *call, pl_db *db, const char *tenant_id,
                              const char *conv_id, bool newest_first,
                              const char *after, int limit,
                              msg_message_pb ***out, size_t *n, char **next)
{
	char lim[16];
	const char *p[4] = { tenant_id, conv_id, after != NULL ? after : lim,
		             lim };
	PGresult *r = NULL;
	msg_conv_pb *conv;
	int rv, rows;
	// One text per direction and cursor (see pl_db_read): each has one
	// plan, the conversation's messages in the order of
	// messages_by_conversation.
	static const char *const texts[2][2] = {
		{ "SELECT " MSG_COLS " FROM messaging.messages m WHERE "
		  "m.tenant_id = $1 AND m.conversation_id = $2 ORDER BY m.id "
		  "LIMIT $3::int",
		  "SELECT " MSG_COLS " FROM messaging.messages m WHERE "
		  "m.tenant_id = $1 AND m.conversation_id = $2 AND m.id > "
		  "$3::uuid ORDER BY m.id LIMIT $4::int" },
		{ "SELECT " MSG_COLS " FROM messaging.messages m WHERE "
		  "m.tenant_id = $1 AND m.conversation_id = $2 ORDER BY m.id "
		  "DESC LIMIT $3::int",
		  "SELECT " MSG_COLS " FROM messaging.messages m WHERE "
		  "m.tenant_id = $1 AND m.conversation_id = $2 AND m.id < "
		  "$3::uuid ORDER BY m.id DESC LIMIT $4::int" },
	};

	if (after != NULL && !pl_uuid_valid(after))
		return pl_call_violation(call, "page.page_token",
		                         "is not a valid page token");
	if ((rv = messaging_store_get_conversation(call, db, tenant_id, conv_id,
	                                           &conv)) != PL_OK)
		return rv;
	snprintf(lim, sizeof(lim), "%d", limit + 1);
	r = pl_db_read(db, tenant_id, texts[newest_first][after != NULL],
	               after != NULL ? 4 : 3, p);
	if ((rv = pl_db_result_status(r)) != PL_OK) {
		rv = fail(call, r, rv, "list messages");
		PQclear(r);
		return rv;
	}
	rows = PQntuples(r);
	*n = 0;
	*next = NULL;
	*out = pl_arena_zalloc(call->arena, (size_t)(rows + 1) * sizeof(**out));
	for (int i = 0; i < rows && i < limit; i++)
		(*out)[(*n)++] = msg_row(call->arena, r, i);
	if (rows > limit)
		*next = messaging_cursor_encode(call->arena,
		                                PQgetvalue(r, limit - 1, 0));
	PQclear(r);
	return PL_OK;
}

int
messaging_store_list_contacts(pl_call *call, pl_db *db, const char *tenant_id,
                              const msg_contact_filter *f, const char *after,
                              int limit, msg_contact_pb ***out, size_t *n,
                              char **next)
{
	char lim[16], sql[4096];
	const char *p[9];
	PGresult *r = NULL;
	size_t len;
	int rv, rows, np = 1;

	if (after != NULL && !pl_uuid_valid(after))
		return pl_call_violation(call, "page.page_token",
		                         "is not a valid page token");
	snprintf(lim, sizeof(lim), "%d", limit + 1);
	// As ListConversations: the text names only the filters given.
	p[0] = tenant_id;
	len = (size_t)snprintf(sql, sizeof(sql),
	                       "SELECT " CONTACT_COLS
	                       " FROM messaging.contacts k WHERE k.tenant_id = "
	                       "$1");
	sql_filter(sql, sizeof(sql), &len, p, &np, f->channel,
	           " AND k.channel_id = $%d::uuid");
	sql_filter(sql, sizeof(sql), &len, p, &np, f->tag,
	           " AND $%d::text = ANY (k.tags)");
	if (f->phone_a != NULL) {
		sql_filter(sql, sizeof(sql), &len, p, &np, f->phone_a,
		           " AND k.phone IN ($%d::text, ");
		sql_filter(sql, sizeof(sql), &len, p, &np,
		           f->phone_b ? f->phone_b : f->phone_a, "$%d::text)");
	}
	sql_filter(sql, sizeof(sql), &len, p, &np, f->query,
	           " AND (strpos(lower(k.name), lower($%1$d::text)) > 0 OR "
	           "strpos(coalesce(k.phone, ''), $%1$d::text) > 0 OR "
	           "strpos(k.external_id, $%1$d::text) > 0)");
	sql_filter(sql, sizeof(sql), &len, p, &np,
	           f->opt_out == 1   ? "in"
	           : f->opt_out == 2 ? "out"
	                             : NULL,
	           " AND ($%d::text = 'in') = (k.opted_out_at IS NULL)");
	sql_filter(sql, sizeof(sql), &len, p, &np, after,
	           " AND k.id < $%d::uuid");
	sql_filter(sql, sizeof(sql), &len, p, &np, lim,
	           " ORDER BY k.id DESC LIMIT $%d::int");
	if (len >= sizeof(sql))
		return pl_call_error(call, PL_INTERNAL,
		                     "could not list contacts");
	r = pl_db_read(db, tenant_id, sql, np, p);
	if ((rv = pl_db_result_status(r)) != PL_OK) {
		rv = fail(call, r, rv, "list contacts");
		PQclear(r);
		return rv;
	}
	rows = PQntuples(r);
	*n = 0;
	*next = NULL;
	*out = pl_arena_zalloc(call->arena, (size_t)(rows + 1) * sizeof(**out));
	for (int i = 0; i < rows && i < limit; i++)
		(*out)[(*n)++] = contact_row(call->arena, r, i, 0);
	if (rows > limit)
		*next = messaging_cursor_encode(call->arena,
		                                PQgetvalue(r, limit - 1, 0));
	PQclear(r);
	return PL_OK;
}

// ---------------------------------------------------------------------------
// Contacts

typedef struct contact_x {
	pl_call *call;
	const char *tenant, *id;
	const msg_contact_in *c;
	msg_contact_pb *out;
} contact_x;

static int
contact_read(pl_db *db, contact_x *x, const char *id)
{
	get_x g = { x->tenant, id, x->call->arena, NULL, 2 };
	int rv = get_fn(db, &g);

	x->out = g.out;
	return rv;
}

static int
create_contact_fn(pl_db *db, void *arg)
{
	contact_x *x = arg;
	const msg_contact_in *c = x->c;
	char id[40];
	const char *p[10];
	int rv;

	pl_uuid7_str(id);
	p[0] = x->tenant;
	p[1] = id;
	p[2] = c->channel_id;
	p[3] = c->external_id;
	p[4] = c->kind;
	p[5] = c->phone;
	p[6] = c->phone_raw;
	p[7] = c->name ? c->name : "";
	p[8] = c->language ? c->language : "";
	p[9] = c->tags_literal ? c->tags_literal : "{}";
	{
		const char *q[11];
		memcpy(q, p, sizeof(p));
		q[10] = c->custom_fields ? c->custom_fields : "{}";
		if ((rv = exec_ok(
		             db,
		             "INSERT INTO messaging.contacts (tenant_id, id, "
		             "channel_id, external_id, external_id_kind, "
		             "phone, phone_raw, name, language, tags, "
		             "custom_fields) VALUES ($1, $2, $3, $4, $5, $6, "
		             "$7, $8, $9, $10::text[], $11::jsonb) ON CONFLICT "
		             "DO NOTHING RETURNING id",
		             11, q, NULL)) != PL_OK)
			return rv;
	}
	rv = contact_read(db, x, id);
	if (rv == PL_NOT_FOUND)
		return pl_call_error(
		        x->call, PL_ALREADY_EXISTS,
		        "a contact with this address already exists "
		        "on the channel");
	return rv;
}

int
messaging_store_create_contact(pl_call *call, pl_db *db, const char *tenant_id,
                               const msg_contact_in *c, msg_contact_pb **out)
{
	contact_x x = { call, tenant_id, NULL, c, NULL };
	int rv = pl_db_tx(db, tenant_id, create_contact_fn, &x);

	if (rv != PL_OK)
		return call->code
		               ? rv
		               : pl_call_error(call, rv,
		                               "could not create the contact");
	*out = x.out;
	return PL_OK;
}

static int
update_contact_fn(pl_db *db, void *arg)
{
	contact_x *x = arg;
	const msg_contact_in *c = x->c;
	const char *p[8] = {
		x->tenant,
		x->id,
		c->set_name ? (c->name ? c->name : "") : NULL,
		c->set_language ? (c->language ? c->language : "") : NULL,
		c->tags_literal,
		c->custom_fields,
		c->opted_out < 0 ? NULL : (c->opted_out ? "1" : "0"),
		NULL
	};
	PGresult *r = NULL;
	int rv;

	if ((rv = exec_ok(db,
	                  "UPDATE messaging.contacts SET name = coalesce($3, "
	                  "name), language = coalesce($4, language), tags = "
	                  "coalesce($5::text[], tags), custom_fields = "
	                  "coalesce($6::jsonb, custom_fields), opted_out_at = "
	                  "CASE $7::text WHEN '1' THEN coalesce(opted_out_at, "
	                  "now()) WHEN '0' THEN NULL ELSE opted_out_at END, "
	                  "updated_at = now() WHERE tenant_id = $1 AND id = $2 "
	                  "RETURNING id",
	                  7, p, &r)) != PL_OK)
		return rv;
	rv = PQntuples(r) == 1 ? PL_OK : PL_NOT_FOUND;
	PQclear(r);
	if (rv != PL_OK)
		return pl_call_error(x->call, rv, "contact %s not found",
		                     x->id);
	return contact_read(db, x, x->id);
}

int
messaging_store_update_contact(pl_call *call, pl_db *db, const char *tenant_id,
                               const char *id, const msg_contact_in *c,
                               msg_contact_pb **out)
{
	contact_x x = { call, tenant_id, id, c, NULL };
	int rv;

	if (!pl_uuid_valid(id))
		return pl_call_error(call, PL_NOT_FOUND, "contact %s not found",
		                     id);
	rv = pl_db_tx(db, tenant_id, update_contact_fn, &x);
	if (rv != PL_OK)
		return call->code
		               ? rv
		               : pl_call_error(call, rv,
		                               "could not update the contact");
	*out = x.out;
	return PL_OK;
}

// ---------------------------------------------------------------------------
// Web chat

typedef struct wc_x {
	pl_call *call;
	const char *tenant, *channel, *agent, *name, *domain, *ip;
	char *sid, *token, *expires;
	msg_conv_pb *conv;
} wc_x;

static int
wc_start_fn(pl_db *db, void *arg)
{
	wc_x *x = arg;
	char contact[40], conv[40];
	unsigned char secret[32], hash[32];
	char hex[65];
	PGresult *r = NULL;
	int rv;

	pl_uuid7_str(x->sid);
	pl_uuid7_str(contact);
	pl_uuid7_str(conv);
	randombytes_buf(secret, sizeof(secret));
	sodium_bin2hex(hex, sizeof(hex), secret, sizeof(secret));
	crypto_hash_sha256(hash, (unsigned char *)hex, 64);
	x->token = pl_arena_printf(x->call->arena, "%s.%s", x->sid, hex);
	{
		const char *p[5] = { x->tenant, contact, x->channel, x->sid,
			             x->name ? x->name : "" };
		if ((rv = exec_ok(
		             db,
		             "INSERT INTO messaging.contacts (tenant_id, id, "
		             "channel_id, external_id, external_id_kind, name) "
		             "VALUES ($1, $2, $3, $4, 'webchat_session', $5)",
		             5, p, NULL)) != PL_OK)
			return rv;
	}
	{
		const char *p[5] = { x->tenant, conv, contact, x->channel,
			             nz(x->agent) };
		if ((rv = exec_ok(
		             db,
		             "INSERT INTO messaging.conversations (tenant_id, "
		             "id, contact_id, channel_id, agent_id) VALUES "
		             "($1, $2, $3, $4, $5)",
		             5, p, NULL)) != PL_OK)
			return rv;
	}
	{
		char hhex[65];
		const char *p[7] = {
			x->tenant,         x->sid, x->channel,
			contact,           hhex,   x->domain ? x->domain : "",
			x->ip ? x->ip : ""
		};
		sodium_bin2hex(hhex, sizeof(hhex), hash, sizeof(hash));
		if ((rv = exec_ok(
		             db,
		             "INSERT INTO messaging.webchat_sessions "
		             "(tenant_id, id, channel_id, contact_id, "
		             "token_hash, website_domain, client_ip, "
		             "expires_at) VALUES ($1, $2, $3, $4, "
		             "decode($5, 'hex'), $6, $7, now() + interval '24 "
		             "hours') RETURNING messaging.fmt_ts(expires_at)",
		             7, p, &r)) != PL_OK)
			return rv;
		x->expires = v(x->call->arena, r, 0, 0);
		PQclear(r);
	}
	return get_conv_in(db, x->call->arena, x->tenant, conv, &x->conv);
}

int
messaging_store_webchat_start(pl_call *call, pl_db *db, const char *tenant_id,
                              const char *channel_id, const char *agent_id,
                              const char *visitor_name, const char *domain,
                              const char *ip, char session_id[40], char **token,
                              msg_conv_pb **conv, char **expires)
{
	wc_x x = { call, tenant_id,  channel_id, agent_id, visitor_name, domain,
		   ip,   session_id, NULL,       NULL,     NULL };
	int rv = pl_db_tx(db, tenant_id, wc_start_fn, &x);

	if (rv != PL_OK)
		return pl_call_error(call, rv,
		                     "could not start the web-chat session");
	*token = x.token;
	*conv = x.conv;
	*expires = x.expires;
	return PL_OK;
}

// A session token's id (sid) and the hash of its secret; false when it is
// not "<session id>.<64-character secret>".
static bool
wc_token_split(const char *token, char sid[40], unsigned char hash[32])
{
	const char *dot = token ? strchr(token, '.') : NULL;

	if (dot == NULL || dot - token != 36 || strlen(dot + 1) != 64)
		return false;
	memcpy(sid, token, 36);
	sid[36] = '\0';
	if (!pl_uuid_valid(sid))
		return false;
	crypto_hash_sha256(hash, (const unsigned char *)dot + 1, 64);
	return true;
}

// Row i of (tenant_id, contact_id, channel_id, token_hash, live) matches
// the token's hash (in constant time) and the channel, and has not expired.
static bool
wc_session_row_ok(const PGresult *r, int i, const unsigned char hash[32],
                  const char *channel_id)
{
	size_t hl = 0;
	unsigned char *stored = PQunescapeBytea(
	        (const unsigned char *)PQgetvalue(r, i, 3), &hl);
	bool ok = stored != NULL && hl == 32 &&
	          sodium_memcmp(stored, hash, 32) == 0 &&
	          strcmp(PQgetvalue(r, i, 2), channel_id) == 0 &&
	          PQgetvalue(r, i, 4)[0] == 't';

	PQfreemem(stored);
	return ok;
}

int
messaging_store_webchat_session(pl_call *call, pl_db *db,
                                const char *channel_id, const char *token,
                                char tenant_id[40], char contact_id[40],
                                char session_id[40])
{
	unsigned char hash[32];
	char sid[40];
	const char *p[1] = { sid };
	PGresult *r = NULL;
	bool ok = false;
	int rv;

	if (!wc_token_split(token, sid, hash))
		return pl_call_error(call, PL_UNAUTHENTICATED,
		                     "the web-chat session token is not valid");
	// Service-level: the widget names only its session (tenant "*").
	rv = tq(db, "*",
	        "SELECT tenant_id, contact_id, channel_id, token_hash, "
	        "expires_at > now() FROM messaging.webchat_sessions WHERE id = "
	        "$1",
	        1, p, &r);
	if (rv != PL_OK) {
		rv = fail(call, r, rv, "read the web-chat session");
		PQclear(r);
		return rv;
	}
	if (PQntuples(r) == 1) {
		ok = wc_session_row_ok(r, 0, hash, channel_id);
		snprintf(tenant_id, 40, "%s", PQgetvalue(r, 0, 0));
		snprintf(contact_id, 40, "%s", PQgetvalue(r, 0, 1));
		snprintf(session_id, 40, "%s", sid);
	}
	PQclear(r);
	if (!ok)
		return pl_call_error(
		        call, PL_UNAUTHENTICATED,
		        "the web-chat session token is not valid or "
		        "has expired");
	return PL_OK;
}

// The session SELECT of messaging_store_webchat_session, for many ids.
static const char wc_sessions_sql[] =
        "SELECT tenant_id, contact_id, channel_id, token_hash, "
        "expires_at > now(), id FROM messaging.webchat_sessions WHERE id = "
        "ANY($1::uuid[])";

// A poll's session id and its index in the request, sorted by id so that
// each session row finds its polls by binary search (matching rows to
// polls by comparing every pair was 256 x 256 string compares a call).
typedef struct wc_sid {
	const char *sid;
	size_t i;
} wc_sid;

static int
wc_sid_cmp(const void *a, const void *b)
{
	return strcmp(((const wc_sid *)a)->sid, ((const wc_sid *)b)->sid);
}

// Which of the (tenant, contact, cursor) triples have a message after the
// cursor: the EXISTS of messaging_store_webchat_poll's query, set-based.
static const char wc_ready_sql[] =
        "SELECT x.i - 1 FROM unnest($1::uuid[], $2::uuid[], $3::uuid[]) "
        "WITH ORDINALITY AS x(t, ct, cur, i) WHERE EXISTS (SELECT 1 FROM "
        "messaging.messages m JOIN messaging.conversations c ON "
        "c.tenant_id = m.tenant_id AND c.id = m.conversation_id WHERE "
        "m.tenant_id = x.t AND c.contact_id = x.ct AND (x.cur IS NULL OR "
        "m.id > x.cur))";

int
messaging_store_webchat_ready(pl_call *call, pl_db *db, msg_wc_wait *w,
                              size_t n)
{
	const char **sids, **ts, **cts, **curs;
	unsigned char(*hash)[32];
	size_t *map; // k -> i
	wc_sid *by_sid;
	const char *p[3];
	size_t k = 0, nsid = 0;
	PGresult *r = NULL;
	int rv;

	if (n == 0)
		return PL_OK;
	sids = pl_arena_zalloc(call->arena, n * sizeof(*sids));
	hash = pl_arena_zalloc(call->arena, n * sizeof(*hash));
	ts = pl_arena_zalloc(call->arena, n * sizeof(*ts));
	cts = pl_arena_zalloc(call->arena, n * sizeof(*cts));
	curs = pl_arena_zalloc(call->arena, n * sizeof(*curs));
	map = pl_arena_zalloc(call->arena, n * sizeof(*map));
	by_sid = pl_arena_zalloc(call->arena, n * sizeof(*by_sid));
	if (sids == NULL || hash == NULL || ts == NULL || cts == NULL ||
	    curs == NULL || map == NULL || by_sid == NULL)
		return pl_call_error(call, PL_RESOURCE_EXHAUSTED,
		                     "out of memory");
	for (size_t i = 0; i < n; i++) {
		char *sid = pl_arena_zalloc(call->arena, 40);
		w[i].ready = false;
		w[i].code = PL_UNAUTHENTICATED;
		if (sid != NULL && wc_token_split(w[i].token, sid, hash[i]))
			sids[i] = sid;
	}
	// Service-level, as messaging_store_webchat_session: each row is then
	// checked against its own token's hash and channel.
	p[0] = pl_db_array(call->arena, sids, n);
	if (p[0] == NULL)
		return pl_call_error(call, PL_RESOURCE_EXHAUSTED,
		                     "out of memory");
	if ((rv = tq(db, "*", wc_sessions_sql, 1, p, &r)) != PL_OK) {
		rv = fail(call, r, rv, "read the web-chat sessions");
		PQclear(r);
		return rv;
	}
	for (size_t i = 0; i < n; i++)
		if (sids[i] != NULL)
			by_sid[nsid++] = (wc_sid){ sids[i], i };
	qsort(by_sid, nsid, sizeof(*by_sid), wc_sid_cmp);
	for (int row = 0; row < PQntuples(r); row++) {
		const char *id = PQgetvalue(r, row, 5);
		size_t lo = 0, hi = nsid;
		// The first poll of this session, then each one after it (a
		// session polled twice is two polls).
		while (lo < hi) {
			size_t mid = lo + (hi - lo) / 2;
			if (strcmp(by_sid[mid].sid, id) < 0)
				lo = mid + 1;
			else
				hi = mid;
		}
		for (; lo < nsid && strcmp(by_sid[lo].sid, id) == 0; lo++) {
			size_t i = by_sid[lo].i;
			if (!wc_session_row_ok(r, row, hash[i],
			                       w[i].channel_id))
				continue;
			snprintf(w[i].tenant_id, 40, "%s",
			         PQgetvalue(r, row, 0));
			snprintf(w[i].contact_id, 40, "%s",
			         PQgetvalue(r, row, 1));
			w[i].code = PL_OK;
		}
	}
	PQclear(r);
	r = NULL;
	for (size_t i = 0; i < n; i++) {
		const char *c = nz(w[i].cursor);
		if (w[i].code != PL_OK)
			continue;
		if (c != NULL && !pl_uuid_valid(c)) {
			w[i].code = PL_INVALID_ARGUMENT;
			continue;
		}
		ts[k] = w[i].tenant_id;
		cts[k] = w[i].contact_id;
		curs[k] = c;
		map[k++] = i;
	}
	if (k == 0)
		return PL_OK;
	p[0] = pl_db_array(call->arena, ts, k);
	p[1] = pl_db_array(call->arena, cts, k);
	p[2] = pl_db_array(call->arena, curs, k);
	if (p[0] == NULL || p[1] == NULL || p[2] == NULL)
		return pl_call_error(call, PL_RESOURCE_EXHAUSTED,
		                     "out of memory");
	if ((rv = tq(db, "*", wc_ready_sql, 3, p, &r)) != PL_OK) {
		rv = fail(call, r, rv, "poll the web-chat sessions");
		PQclear(r);
		return rv;
	}
	for (int row = 0; row < PQntuples(r); row++) {
		long j = strtol(PQgetvalue(r, row, 0), NULL, 10);
		if (j >= 0 && (size_t)j < k)
			w[map[j]].ready = true;
	}
	PQclear(r);
	return PL_OK;
}

int
messaging_store_webchat_poll(pl_call *call, pl_db *db, const char *tenant_id,
                             const char *contact_id, const char *cursor,
                             int limit, msg_message_pb ***out, size_t *n)
{
	char lim[16];
	const char *p[4] = { tenant_id, contact_id, nz(cursor), lim };
	PGresult *r = NULL;
	int rv, rows;

	if (p[2] != NULL && !pl_uuid_valid(p[2]))
		return pl_call_violation(call, "cursor",
		                         "is not a valid cursor");
	snprintf(lim, sizeof(lim), "%d", limit);
	rv = tq(db, tenant_id,
	        "SELECT " MSG_COLS " FROM messaging.messages m JOIN "
	        "messaging.conversations c ON c.tenant_id = m.tenant_id AND "
	        "c.id = m.conversation_id WHERE m.tenant_id = $1 AND "
	        "c.contact_id = $2 AND ($3::uuid IS NULL OR m.id > $3) ORDER "
	        "BY "
	        "m.id LIMIT $4::int",
	        4, p, &r);
	if (rv != PL_OK) {
		rv = fail(call, r, rv, "poll messages");
		PQclear(r);
		return rv;
	}
	rows = PQntuples(r);
	*n = 0;
	*out = pl_arena_zalloc(call->arena, (size_t)(rows + 1) * sizeof(**out));
	for (int i = 0; i < rows; i++)
		(*out)[(*n)++] = msg_row(call->arena, r, i);
	PQclear(r);
	return PL_OK;
}
