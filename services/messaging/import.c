// The messaging side of the legacy import (issue 10): ImportContacts,
// ImportConversations, ImportOrders, ImportCampaigns and GetImportSummary.
// Every row carries its legacy id; messaging.import_map (003_import.sql)
// records which Parley row it became, so a second call (or a call repeated
// after the importer was killed) creates nothing and answers the same ids.
// Each call is one transaction: a batch is imported whole or not at all.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "pl/id.h"
#include "pl/log.h"
#include "messaging.h"

#define M(x) Parley__Messaging__V1__##x

#define IMP_MAX_ROWS   5000 // per call and list
#define IMP_MAX_LEGACY 200  // bytes of a legacy id

static const char *
s0(const char *s)
{
	return s != NULL ? s : "";
}

static const char *
nz(const char *s)
{
	return (s != NULL && s[0] != '\0') ? s : NULL;
}

static const char *
jtext(const Parley__Rpc__V1__Json *j)
{
	return (j != NULL && j->text != NULL && j->text[0] != '\0') ? j->text
	                                                            : NULL;
}

// Runs sql; PL_OK with *out (caller clears) or the call's error.
static int
q(pl_call *call, pl_db *db, const char *what, const char *sql, int n,
  const char *const *p, PGresult **out)
{
	PGresult *r = pl_db_exec(db, sql, n, p);
	int rv = pl_db_result_status(r);

	if (rv != PL_OK) {
		rv = pl_db_call_error(call, r, what);
		PQclear(r);
		return rv;
	}
	if (out != NULL)
		*out = r;
	else
		PQclear(r);
	return PL_OK;
}

static bool
legacy_ok(const char *s)
{
	return s != NULL && s[0] != '\0' && strlen(s) <= IMP_MAX_LEGACY;
}

static bool
json_ok(const char *s, bool want_object)
{
	json_error_t e;
	json_t *j;
	bool ok;

	if (s == NULL)
		return true;
	j = json_loads(s, JSON_DECODE_ANY, &e);
	ok = j != NULL && (!want_object || json_is_object(j));
	json_decref(j);
	return ok;
}

static bool
ts_ok(const char *s)
{
	// PostgreSQL parses the value; here only a size limit and a shape.
	return s == NULL || s[0] == '\0' ||
	       (strlen(s) <= 40 && s[0] >= '0' && s[0] <= '9');
}

static int
need_tenant(pl_call *call, const char *tenant, const char *channel,
            bool need_channel)
{
	if (!pl_uuid_valid(s0(tenant)))
		return pl_call_violation(call, "tenant_id", "must be a UUID");
	if (need_channel && !pl_uuid_valid(s0(channel)))
		return pl_call_violation(call, "channel_id", "must be a UUID");
	if (!pl_call_is_tenant(call, tenant) &&
	    call->principal->kind !=
	            PARLEY__RPC__V1__PRINCIPAL_KIND__PRINCIPAL_KIND_SERVICE)
		return pl_call_error(call, PL_NOT_FOUND, "tenant not found");
	return PL_OK;
}

static M(ImportedId) * imported(pl_arena *a, const char *legacy, const char *id,
                                bool created, bool merged)
{
	M(ImportedId) *x = pl_arena_zalloc(a, sizeof(*x));

	if (x == NULL)
		return NULL;
	parley__messaging__v1__imported_id__init(x);
	x->legacy_id = pl_arena_strdup(a, legacy);
	x->id = pl_arena_strdup(a, id);
	x->created = created;
	x->merged = merged;
	return x;
}

// The Parley id a legacy id became, or "" when none.
static int
map_get(pl_call *call, pl_db *db, const char *tenant, const char *kind,
        const char *legacy, char id[40])
{
	const char *p[3] = { tenant, kind, legacy };
	PGresult *r = NULL;
	int rv = q(call, db, "read the import map",
	           "SELECT id FROM messaging.import_map WHERE tenant_id = $1 "
	           "AND kind = $2 AND legacy_id = $3",
	           3, p, &r);

	if (rv != PL_OK)
		return rv;
	id[0] = '\0';
	if (PQntuples(r) == 1)
		snprintf(id, 40, "%s", PQgetvalue(r, 0, 0));
	PQclear(r);
	return PL_OK;
}

static int
map_put(pl_call *call, pl_db *db, const char *tenant, const char *kind,
        const char *legacy, const char *id, const char *raw,
        const char *details)
{
	const char *p[6] = { tenant, kind, legacy, id, raw, details };

	return q(call, db, "write the import map",
	         "INSERT INTO messaging.import_map (tenant_id, kind, "
	         "legacy_id, id, raw, details) VALUES ($1, $2, $3, $4, $5, "
	         "$6::jsonb)",
	         6, p, NULL);
}

// The Parley ids of n legacy ids of one kind in one statement: ids[i] is
// "" when legacy[i] is not in the map.
static int
map_get_many(pl_call *call, pl_db *db, const char *tenant, const char *kind,
             const char *const *legacy, size_t n, char (*ids)[40])
{
	json_t *arr = json_array();
	char *arr_s;
	PGresult *r = NULL;
	int rv;

	for (size_t i = 0; i < n; i++) {
		json_array_append_new(arr, json_string(legacy[i]));
		ids[i][0] = '\0';
	}
	arr_s = json_dumps(arr, JSON_COMPACT);
	json_decref(arr);
	if (arr_s == NULL || n == 0) {
		free(arr_s);
		return n == 0 ? PL_OK
		              : pl_call_error(call, PL_RESOURCE_EXHAUSTED,
		                              "batch too big");
	}
	{
		const char *p[3] = { tenant, kind, arr_s };
		rv = q(call, db, "read the import map",
		       "SELECT x.i - 1, im.id FROM jsonb_array_elements_text("
		       "$3::jsonb) WITH ORDINALITY AS x(l, i) JOIN "
		       "messaging.import_map im ON im.tenant_id = $1 AND "
		       "im.kind = $2 AND im.legacy_id = x.l",
		       3, p, &r);
	}
	free(arr_s);
	if (rv != PL_OK)
		return rv;
	for (int i = 0; i < PQntuples(r); i++) {
		long k = atol(PQgetvalue(r, i, 0));
		if (k >= 0 && (size_t)k < n)
			snprintf(ids[k], 40, "%s", PQgetvalue(r, i, 1));
	}
	PQclear(r);
	return PL_OK;
}

// ---------------------------------------------------------------------------
// Contacts

typedef struct contacts_tx {
	pl_call *call;
	const M(ImportContactsRequest) * in;
	M(ImportContactsResponse) * out;
} contacts_tx;

// The number in a legacy phone: Twilio-style "whatsapp:+..." and "tel:"
// prefixes dropped.
static const char *
phone_of(const char *raw)
{
	while (*raw == ' ')
		raw++;
	if (strncasecmp(raw, "whatsapp:", 9) == 0)
		return raw + 9;
	if (strncasecmp(raw, "tel:", 4) == 0)
		return raw + 4;
	return raw;
}

// The external id a contact is known by: the request's, or the phone's
// digits (WhatsApp's wa_id, what webhooks carry as "from").
static const char *
contact_external(pl_arena *a, const M(ImportContact) * c, const char *e164)
{
	if (nz(c->external_id))
		return c->external_id;
	if (e164[0])
		return pl_arena_strdup(a, e164 + 1);
	return NULL;
}

// One new legacy contact in one statement: merged into the contact of the
// same external id when there is one (its name kept unless empty, this
// row's custom fields appended to custom_fields.legacy_merged), made
// otherwise; then its map row. Answers the id and whether it was made.
static const char contact_sql[] =
        "WITH f AS (SELECT id FROM messaging.contacts WHERE tenant_id = $1 "
        "AND channel_id = $3 AND external_id = $4), "
        "u AS (UPDATE messaging.contacts k SET name = CASE WHEN k.name = '' "
        "THEN $9 ELSE k.name END, custom_fields = "
        "jsonb_set(k.custom_fields, '{legacy_merged}', "
        "coalesce(k.custom_fields->'legacy_merged', '[]'::jsonb) || "
        "jsonb_build_array(coalesce($10::jsonb, '{}'::jsonb))), updated_at = "
        "now() FROM f WHERE k.tenant_id = $1 AND k.id = f.id RETURNING k.id), "
        "i AS (INSERT INTO messaging.contacts (tenant_id, id, channel_id, "
        "external_id, external_id_kind, phone, phone_raw, business_user_id, "
        "name, custom_fields, created_at, updated_at, tags, opted_out_at) "
        "SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, coalesce($10::jsonb, "
        "'{}'), coalesce($11::timestamptz, now()), coalesce($12::timestamptz, "
        "$11::timestamptz, now()), ARRAY(SELECT "
        "jsonb_array_elements_text(coalesce($13::jsonb, '[]'))), "
        "$14::timestamptz WHERE NOT EXISTS (SELECT 1 FROM f) RETURNING id), "
        "t AS (SELECT id, false AS created FROM u UNION ALL SELECT id, true "
        "FROM i), "
        "m AS (INSERT INTO messaging.import_map (tenant_id, kind, legacy_id, "
        "id, raw) SELECT $1, 'contact', $15, id, $7 FROM t) "
        "SELECT id, created FROM t";

static int
contacts_fn(pl_db *db, void *arg)
{
	contacts_tx *t = arg;
	pl_call *call = t->call;
	pl_arena *a = call->arena;
	const char *tenant = t->in->tenant_id, *channel = t->in->channel_id;
	size_t n = t->in->n_contacts;
	const char **legacy = pl_arena_zalloc(a, sizeof(char *) * (n + 1));
	char(*ids)[40] = pl_arena_zalloc(a, sizeof(*ids) * (n + 1));
	int rv;

	t->out->n_ids = 0;
	t->out->created = t->out->existing = t->out->merged = 0;
	if (legacy == NULL || ids == NULL)
		return pl_call_error(call, PL_RESOURCE_EXHAUSTED,
		                     "batch too big");
	for (size_t i = 0; i < n; i++)
		legacy[i] = t->in->contacts[i]->legacy_id;
	if ((rv = map_get_many(call, db, tenant, "contact", legacy, n, ids)) !=
	    PL_OK)
		return rv;
	for (size_t i = 0; i < n; i++) {
		const M(ImportContact) *c = t->in->contacts[i];
		char id[40], e164[MSG_PHONE_MAX] = "", *tj = NULL;
		const char *ext, *kind;
		bool created;
		PGresult *r = NULL;

		if (ids[i][0]) {
			t->out->ids[t->out->n_ids++] =
			        imported(a, c->legacy_id, ids[i], false, false);
			t->out->existing++;
			continue;
		}
		if (nz(c->phone_raw))
			messaging_phone_normalize(phone_of(c->phone_raw), e164);
		ext = contact_external(a, c, e164);
		kind = e164[0] && !nz(c->external_id) ? "phone"
		                                      : "business_user_id";
		if (c->n_tags > 0) {
			json_t *tags = json_array();
			for (size_t k = 0; k < c->n_tags; k++)
				json_array_append_new(tags,
				                      json_string(c->tags[k]));
			tj = json_dumps(tags, JSON_COMPACT);
			json_decref(tags);
		}
		pl_uuid7_str(id);
		{
			const char *p[15] = {
				tenant,
				id,
				channel,
				ext,
				kind,
				e164[0] ? e164 : NULL,
				nz(c->phone_raw),
				strcmp(kind, "business_user_id") == 0 ? ext
				                                      : NULL,
				s0(c->name),
				jtext(c->custom_fields),
				nz(c->created_at),
				nz(c->updated_at),
				tj,
				nz(c->opted_out_at),
				c->legacy_id,
			};
			rv = q(call, db, "import the contact", contact_sql, 15,
			       p, &r);
		}
		free(tj);
		if (rv != PL_OK)
			return rv;
		if (PQntuples(r) != 1) {
			PQclear(r);
			return pl_call_error(call, PL_INTERNAL,
			                     "contact %s was not imported",
			                     c->legacy_id);
		}
		snprintf(id, sizeof(id), "%s", PQgetvalue(r, 0, 0));
		created = PQgetvalue(r, 0, 1)[0] == 't';
		PQclear(r);
		t->out->ids[t->out->n_ids++] =
		        imported(a, c->legacy_id, id, true, !created);
		if (created)
			t->out->created++;
		else
			t->out->merged++;
	}
	return PL_OK;
}

int
messaging_import_contacts(pl_call *call, const void *inp, void *outp)
{
	const M(ImportContactsRequest) *in = inp;
	M(ImportContactsResponse) *out = outp;
	contacts_tx t = { call, in, out };
	int rv;

	if ((rv = need_tenant(call, in->tenant_id, in->channel_id, true)) !=
	    PL_OK)
		return rv;
	if (in->n_contacts > IMP_MAX_ROWS)
		return pl_call_violation(call, "contacts",
		                         "at most %d per call", IMP_MAX_ROWS);
	for (size_t i = 0; i < in->n_contacts; i++) {
		const M(ImportContact) *c = in->contacts[i];
		char e164[MSG_PHONE_MAX];
		char *f = pl_arena_printf(call->arena, "contacts[%zu]", i);

		if (!legacy_ok(c->legacy_id))
			return pl_call_violation(
			        call,
			        pl_arena_printf(call->arena, "%s.legacy_id", f),
			        "must be 1 to %d bytes", IMP_MAX_LEGACY);
		if (!nz(c->external_id) &&
		    !messaging_phone_normalize(phone_of(s0(c->phone_raw)),
		                               e164))
			return pl_call_violation(
			        call,
			        pl_arena_printf(call->arena, "%s.phone_raw", f),
			        "is not a phone number (give external_id)");
		if (strlen(s0(c->external_id)) > 256 ||
		    strlen(s0(c->phone_raw)) > 256 ||
		    strlen(s0(c->name)) > 1024)
			return pl_call_violation(
			        call,
			        pl_arena_printf(call->arena, "%s.name", f),
			        "is too long");
		if (!json_ok(jtext(c->custom_fields), true))
			return pl_call_violation(
			        call,
			        pl_arena_printf(call->arena, "%s.custom_fields",
			                        f),
			        "must be a JSON object");
		if (!ts_ok(c->created_at) || !ts_ok(c->updated_at) ||
		    !ts_ok(c->opted_out_at))
			return pl_call_violation(
			        call,
			        pl_arena_printf(call->arena, "%s.created_at",
			                        f),
			        "must be an RFC 3339 time");
	}
	out->ids = pl_arena_zalloc(call->arena,
	                           sizeof(void *) * (in->n_contacts + 1));
	if (out->ids == NULL)
		return pl_call_error(call, PL_RESOURCE_EXHAUSTED,
		                     "batch too big");
	return pl_db_tx(pl_call_db(call), in->tenant_id, contacts_fn, &t);
}

// ---------------------------------------------------------------------------
// Conversations and their messages

static const char *const dir_names[] = { "", "inbound", "outbound" };
static const char *const sender_names[] = { "", "contact", "bot", "human",
	                                    "system" };
static const char *const type_names[] = {
	"",         "text",     "image",    "audio",
	"video",    "document", "location", "interactive",
	"template", "reaction", "sticker",  "unsupported",
};
static const char *const mstatus_names[] = { "",       "received",  "queued",
	                                     "sent",   "delivered", "read",
	                                     "played", "failed" };
static const char *const cstatus_names[] = { "", "open", "pending", "closed" };

#define IN_RANGE(v, arr) ((v) > 0 && (size_t)(v) < sizeof(arr) / sizeof(arr[0]))

typedef struct convs_tx {
	pl_call *call;
	const M(ImportConversationsRequest) * in;
	M(ImportConversationsResponse) * out;
	char (*conv_ids)[40];
} convs_tx;

// One new legacy conversation in one statement: the conversation the
// contact already has open (a message came in through a webhook before the
// import; at most one is open per contact) unless this one is closed, a
// new one otherwise; then its map row.
static const char conversation_sql[] =
        "WITH f AS (SELECT id FROM messaging.conversations WHERE tenant_id = "
        "$1 AND contact_id = $3 AND status <> 'closed' AND $6 <> 'closed'), "
        "i AS (INSERT INTO messaging.conversations (tenant_id, id, "
        "contact_id, channel_id, agent_id, status, owner, created_at, "
        "last_activity_at, closed_at) SELECT $1, $2, $3, $4, $5, $6, $7, "
        "coalesce($8::timestamptz, now()), coalesce($8::timestamptz, now()), "
        "$9::timestamptz WHERE NOT EXISTS (SELECT 1 FROM f) RETURNING id), "
        "t AS (SELECT id, false AS created FROM f UNION ALL SELECT id, true "
        "FROM i), "
        "m AS (INSERT INTO messaging.import_map (tenant_id, kind, legacy_id, "
        "id) SELECT $1, 'conversation', $10, id FROM t) "
        "SELECT id, created FROM t";

// The conversation of c: known (id already set from the map) or imported.
static int
conv_upsert(convs_tx *t, pl_db *db, const M(ImportConversation) * c,
            char id[40], bool *created)
{
	pl_call *call = t->call;
	const char *p[10];
	PGresult *r = NULL;
	int rv;

	*created = false;
	if (id[0])
		return PL_OK;
	pl_uuid7_str(id);
	p[0] = t->in->tenant_id;
	p[1] = id;
	p[2] = c->contact_id;
	p[3] = t->in->channel_id;
	p[4] = nz(c->agent_id);
	p[5] = IN_RANGE(c->status, cstatus_names) ? cstatus_names[c->status]
	                                          : "open";
	p[6] = c->owner == 2 ? "human" : "bot";
	p[7] = nz(c->created_at);
	p[8] = strcmp(p[5], "closed") == 0
	               ? (nz(c->closed_at) ? c->closed_at : "now")
	               : NULL;
	p[9] = c->legacy_id;
	if ((rv = q(call, db, "import the conversation", conversation_sql, 10,
	            p, &r)) != PL_OK)
		return rv;
	if (PQntuples(r) != 1) {
		PQclear(r);
		return pl_call_error(call, PL_INTERNAL,
		                     "conversation %s was not imported",
		                     c->legacy_id);
	}
	snprintf(id, 40, "%s", PQgetvalue(r, 0, 0));
	*created = PQgetvalue(r, 0, 1)[0] == 't';
	PQclear(r);
	return PL_OK;
}

// The messages of a batch, in one statement ($1 tenant, $2 the rows as a
// JSON array, $3 channel). Answers legacy id, Parley id, created.
static const char messages_sql[] =
        "WITH x AS (SELECT * FROM jsonb_to_recordset($2::jsonb) AS x(i int, "
        "legacy_id text, nid uuid, conv uuid, direction text, sender text, "
        "type text, text text, media_url text, mime text, status text, pid "
        "text, pat timestamptz, cat timestamptz, metadata text, agent uuid, "
        "reply text)), "
        "m AS (INSERT INTO messaging.import_map (tenant_id, kind, legacy_id, "
        "id) SELECT $1, 'message', legacy_id, nid FROM x ON CONFLICT DO "
        "NOTHING RETURNING legacy_id, id), "
        "ins AS (INSERT INTO messaging.messages (tenant_id, id, "
        "conversation_id, channel_id, direction, sender, agent_id, type, "
        "text, media_url, media_mime_type, provider_message_id, status, "
        "sent_at, provider_created_at, metadata, reply_state, created_at) "
        "SELECT $1, x.nid, x.conv, $3, x.direction, x.sender, x.agent, "
        "x.type, x.text, x.media_url, x.mime, x.pid, x.status, CASE WHEN "
        "x.direction = 'outbound' AND x.status IN ('sent', 'delivered', "
        "'read', 'played') THEN x.pat END, x.pat, coalesce(x.metadata::jsonb, "
        "'{}'), x.reply, coalesce(x.cat, x.pat, now()) FROM x JOIN m ON "
        "m.legacy_id = x.legacy_id AND m.id = x.nid RETURNING "
        "conversation_id, direction, sender, coalesce(provider_created_at, "
        "created_at) AS at), "
        "s AS (SELECT conversation_id, count(*) AS n, max(at) FILTER (WHERE "
        "direction = 'inbound') AS li, max(at) FILTER (WHERE direction = "
        "'outbound') AS lo, max(at) FILTER (WHERE sender = 'bot') AS lb, "
        "max(at) AS la FROM ins GROUP BY conversation_id), "
        "u AS (UPDATE messaging.conversations c SET message_count = "
        "c.message_count + s.n, last_inbound_at = greatest(c.last_inbound_at, "
        "s.li), last_outbound_at = greatest(c.last_outbound_at, s.lo), "
        "last_bot_message_at = greatest(c.last_bot_message_at, s.lb), "
        "last_activity_at = greatest(c.last_activity_at, c.created_at, s.la), "
        "closed_at = CASE WHEN c.status = 'closed' THEN "
        "greatest(c.last_activity_at, c.created_at, s.la) END, updated_at = "
        "now() FROM s WHERE c.tenant_id = $1 AND c.id = s.conversation_id) "
        "SELECT x.legacy_id, coalesce(m.id, im.id), coalesce(m.id = x.nid, "
        "false) FROM x LEFT JOIN m ON m.legacy_id = x.legacy_id LEFT JOIN "
        "messaging.import_map im ON m.id IS NULL AND im.tenant_id = $1 AND "
        "im.kind = 'message' AND im.legacy_id = x.legacy_id ORDER BY x.i";

static int
convs_fn(pl_db *db, void *arg)
{
	convs_tx *t = arg;
	pl_call *call = t->call;
	pl_arena *a = call->arena;
	const char *tenant = t->in->tenant_id;
	json_t *rows = json_array();
	char *rows_s = NULL;
	PGresult *r = NULL;
	int rv = PL_OK;

	t->out->n_conversations = t->out->n_messages = 0;
	t->out->messages_created = t->out->messages_existing = 0;
	{
		size_t n = t->in->n_conversations;
		const char **legacy =
		        pl_arena_zalloc(a, sizeof(char *) * (n + 1));
		if (legacy == NULL)
			return pl_call_error(call, PL_RESOURCE_EXHAUSTED,
			                     "batch too big");
		for (size_t i = 0; i < n; i++)
			legacy[i] = t->in->conversations[i]->legacy_id;
		if ((rv = map_get_many(call, db, tenant, "conversation", legacy,
		                       n, t->conv_ids)) != PL_OK)
			return rv;
	}
	for (size_t i = 0; i < t->in->n_conversations; i++) {
		const M(ImportConversation) *c = t->in->conversations[i];
		bool created;

		if ((rv = conv_upsert(t, db, c, t->conv_ids[i], &created)) !=
		    PL_OK)
			goto out;
		t->out->conversations[t->out->n_conversations++] = imported(
		        a, c->legacy_id, t->conv_ids[i], created, false);
		for (size_t k = 0; k < c->n_messages; k++) {
			const M(ImportMessage) *m = c->messages[k];
			char nid[40];
			json_t *o;

			pl_uuid7_str(nid);
			o = json_pack(
			        "{s:I, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, "
			        "s:s, s:s, s:s*, s:s*, s:s*, s:s*, s:s*, s:s*}",
			        "i", (json_int_t)json_array_size(rows),
			        "legacy_id", m->legacy_id, "nid", nid, "conv",
			        t->conv_ids[i], "direction",
			        dir_names[m->direction], "sender",
			        sender_names[m->sender], "type",
			        type_names[m->type], "text", s0(m->text),
			        "media_url", s0(m->media_url), "mime",
			        s0(m->media_mime_type), "status",
			        mstatus_names[m->status], "pid",
			        nz(m->provider_message_id), "pat",
			        nz(m->provider_created_at), "cat",
			        nz(m->created_at), "metadata",
			        jtext(m->metadata), "agent",
			        m->sender == 2 ? nz(c->agent_id) : NULL,
			        "reply", m->direction == 1 ? "done" : "none");
			if (o == NULL) {
				rv = pl_call_violation(
				        call, "messages.text",
				        "must be valid UTF-8 (message %s)",
				        m->legacy_id);
				goto out;
			}
			json_array_append_new(rows, o);
		}
	}
	rows_s = json_dumps(rows, JSON_COMPACT);
	if (rows_s == NULL) {
		rv = pl_call_error(call, PL_RESOURCE_EXHAUSTED,
		                   "batch too big");
		goto out;
	}
	{
		// One statement: the map rows first (a legacy id already there
		// inserts nothing), the messages whose map row this statement
		// made, the conversations' counters and times advanced by
		// exactly those messages (a batch repeated after a crash adds
		// nothing twice), and every legacy id's Parley id in request
		// order.
		const char *p[3] = { tenant, rows_s, t->in->channel_id };
		if ((rv = q(call, db, "import the messages", messages_sql, 3, p,
		            &r)) != PL_OK)
			goto out;
		for (int i = 0; i < PQntuples(r); i++) {
			bool created = PQgetvalue(r, i, 2)[0] == 't';
			t->out->messages[t->out->n_messages++] =
			        imported(a, PQgetvalue(r, i, 0),
			                 PQgetvalue(r, i, 1), created, false);
			if (created)
				t->out->messages_created++;
			else
				t->out->messages_existing++;
		}
		PQclear(r);
		r = NULL;
	}
out:
	PQclear(r);
	json_decref(rows);
	free(rows_s);
	return rv;
}

int
messaging_import_conversations(pl_call *call, const void *inp, void *outp)
{
	const M(ImportConversationsRequest) *in = inp;
	M(ImportConversationsResponse) *out = outp;
	convs_tx t = { call, in, out, NULL };
	size_t total = 0;
	int rv;

	if ((rv = need_tenant(call, in->tenant_id, in->channel_id, true)) !=
	    PL_OK)
		return rv;
	if (in->n_conversations > IMP_MAX_ROWS)
		return pl_call_violation(call, "conversations",
		                         "at most %d per call", IMP_MAX_ROWS);
	for (size_t i = 0; i < in->n_conversations; i++) {
		const M(ImportConversation) *c = in->conversations[i];
		char *f = pl_arena_printf(call->arena, "conversations[%zu]", i);

		if (!legacy_ok(c->legacy_id))
			return pl_call_violation(
			        call,
			        pl_arena_printf(call->arena, "%s.legacy_id", f),
			        "must be 1 to %d bytes", IMP_MAX_LEGACY);
		if (!pl_uuid_valid(s0(c->contact_id)))
			return pl_call_violation(
			        call,
			        pl_arena_printf(call->arena, "%s.contact_id",
			                        f),
			        "must be a UUID");
		if (nz(c->agent_id) && !pl_uuid_valid(c->agent_id))
			return pl_call_violation(
			        call,
			        pl_arena_printf(call->arena, "%s.agent_id", f),
			        "must be a UUID");
		if (!ts_ok(c->created_at) || !ts_ok(c->closed_at))
			return pl_call_violation(
			        call,
			        pl_arena_printf(call->arena, "%s.created_at",
			                        f),
			        "must be an RFC 3339 time");
		total += c->n_messages;
		for (size_t k = 0; k < c->n_messages; k++) {
			const M(ImportMessage) *m = c->messages[k];
			char *g = pl_arena_printf(call->arena,
			                          "%s.messages[%zu]", f, k);
			if (!legacy_ok(m->legacy_id))
				return pl_call_violation(
				        call,
				        pl_arena_printf(call->arena,
				                        "%s.legacy_id", g),
				        "must be 1 to %d bytes",
				        IMP_MAX_LEGACY);
			if (!IN_RANGE(m->direction, dir_names) ||
			    !IN_RANGE(m->sender, sender_names) ||
			    !IN_RANGE(m->type, type_names) ||
			    !IN_RANGE(m->status, mstatus_names))
				return pl_call_violation(
				        call,
				        pl_arena_printf(call->arena, "%s.type",
				                        g),
				        "direction, sender, type and status "
				        "are "
				        "required");
			// 64 KiB as before: history is kept whole (turns
			// handed to agents are cut to MSG_MAX_TEXT).
			if (strlen(s0(m->text)) > 64 * 1024 ||
			    strlen(s0(m->media_url)) > 4096 ||
			    strlen(s0(m->provider_message_id)) > 256)
				return pl_call_violation(
				        call,
				        pl_arena_printf(call->arena, "%s.text",
				                        g),
				        "is too long");
			if (!json_ok(jtext(m->metadata), true))
				return pl_call_violation(
				        call,
				        pl_arena_printf(call->arena,
				                        "%s.metadata", g),
				        "must be a JSON object");
			if (!ts_ok(m->provider_created_at) ||
			    !ts_ok(m->created_at))
				return pl_call_violation(
				        call,
				        pl_arena_printf(
				                call->arena,
				                "%s.provider_created_at", g),
				        "must be an RFC 3339 time");
		}
	}
	if (total > IMP_MAX_ROWS)
		return pl_call_violation(call, "conversations.messages",
		                         "at most %d per call", IMP_MAX_ROWS);
	out->conversations = pl_arena_zalloc(
	        call->arena, sizeof(void *) * (in->n_conversations + 1));
	out->messages =
	        pl_arena_zalloc(call->arena, sizeof(void *) * (total + 1));
	t.conv_ids = pl_arena_zalloc(
	        call->arena, sizeof(*t.conv_ids) * (in->n_conversations + 1));
	if (out->conversations == NULL || out->messages == NULL ||
	    t.conv_ids == NULL)
		return pl_call_error(call, PL_RESOURCE_EXHAUSTED,
		                     "batch too big");
	return pl_db_tx(pl_call_db(call), in->tenant_id, convs_fn, &t);
}

// ---------------------------------------------------------------------------
// Orders

static const char *const ostatus_names[] = { "",          "pending",
	                                     "confirmed", "shipped",
	                                     "delivered", "cancelled" };

typedef struct orders_tx {
	pl_call *call;
	const M(ImportOrdersRequest) * in;
	M(ImportOrdersResponse) * out;
} orders_tx;

// The orders of a batch in one statement ($1 tenant, $2 the rows as a JSON
// array with their items): map rows, orders and items for the legacy ids not
// in the map yet; answers legacy id, Parley id, created in request order.
static const char orders_sql[] =
        "WITH x AS (SELECT * FROM jsonb_to_recordset($2::jsonb) AS x(i int, "
        "legacy_id text, nid uuid, contact uuid, conv uuid, msg uuid, status "
        "text, currency text, address text, notes text, cat timestamptz, uat "
        "timestamptz, items jsonb, details text)), "
        "m AS (INSERT INTO messaging.import_map (tenant_id, kind, legacy_id, "
        "id, details) SELECT $1, 'order', legacy_id, nid, details::jsonb FROM "
        "x ON "
        "CONFLICT DO NOTHING RETURNING legacy_id, id), "
        "n AS (SELECT x.* FROM x JOIN m ON m.legacy_id = x.legacy_id AND m.id "
        "= x.nid), "
        "o AS (INSERT INTO messaging.orders (tenant_id, id, contact_id, "
        "conversation_id, message_id, status, currency, address, notes, "
        "confirmed_at, shipped_at, delivered_at, cancelled_at, created_at, "
        "updated_at) SELECT $1, nid, contact, conv, msg, status, currency, "
        "coalesce(address::jsonb, '{}'), coalesce(notes, ''), CASE WHEN status "
        "IN "
        "('confirmed', 'shipped', 'delivered') THEN coalesce(uat, now()) END, "
        "CASE WHEN status IN ('shipped', 'delivered') THEN coalesce(uat, "
        "now()) END, CASE WHEN status = 'delivered' THEN coalesce(uat, now()) "
        "END, CASE WHEN status = 'cancelled' THEN coalesce(uat, now()) END, "
        "coalesce(cat, now()), coalesce(uat, cat, now()) FROM n), "
        "it AS (INSERT INTO messaging.order_items (tenant_id, order_id, "
        "position, sku, name, quantity, unit_price_minor) SELECT $1, n.nid, "
        "e.pos, coalesce(e.v->>'sku', ''), e.v->>'name', "
        "(e.v->>'qty')::bigint, "
        "(e.v->>'price')::bigint FROM n, jsonb_array_elements(n.items) WITH "
        "ORDINALITY AS e(v, pos)) "
        "SELECT x.legacy_id, coalesce(m.id, im.id), coalesce(m.id = x.nid, "
        "false) FROM x LEFT JOIN m ON m.legacy_id = x.legacy_id LEFT JOIN "
        "messaging.import_map im ON m.id IS NULL AND im.tenant_id = $1 AND "
        "im.kind = 'order' AND im.legacy_id = x.legacy_id ORDER BY x.i";

static int
orders_fn(pl_db *db, void *arg)
{
	orders_tx *t = arg;
	pl_call *call = t->call;
	json_t *rows = json_array();
	char *rows_s = NULL;
	PGresult *r = NULL;
	int rv = PL_OK;

	t->out->n_ids = 0;
	t->out->created = t->out->existing = 0;
	for (size_t i = 0; i < t->in->n_orders; i++) {
		const M(ImportOrder) *o = t->in->orders[i];
		json_t *items = json_array(), *row;
		char nid[40];

		for (size_t k = 0; k < o->n_items; k++) {
			const M(OrderItem) *it = o->items[k];
			json_array_append_new(
			        items,
			        json_pack("{s:s, s:s, s:I, s:I}", "sku",
			                  s0(it->sku), "name", it->name, "qty",
			                  (json_int_t)it->quantity, "price",
			                  (json_int_t)it->unit_price_minor));
		}
		pl_uuid7_str(nid);
		row = json_pack(
		        "{s:I, s:s, s:s, s:s, s:s*, s:s*, s:s, s:s, s:s*, "
		        "s:s, s:s*, s:s*, s:o, s:s*}",
		        "i", (json_int_t)i, "legacy_id", o->legacy_id, "nid",
		        nid, "contact", o->contact_id, "conv",
		        nz(o->conversation_id), "msg", nz(o->message_id),
		        "status", ostatus_names[o->status], "currency",
		        o->currency, "address", jtext(o->address), "notes",
		        s0(o->notes), "cat", nz(o->created_at), "uat",
		        nz(o->updated_at), "items", items, "details",
		        jtext(o->legacy_details));
		if (row == NULL) {
			rv = pl_call_violation(
			        call,
			        pl_arena_printf(call->arena, "orders[%zu]", i),
			        "must be valid UTF-8 text");
			goto out;
		}
		json_array_append_new(rows, row);
	}
	rows_s = json_dumps(rows, JSON_COMPACT);
	if (rows_s == NULL) {
		rv = pl_call_error(call, PL_RESOURCE_EXHAUSTED,
		                   "batch too big");
		goto out;
	}
	{
		const char *p[2] = { t->in->tenant_id, rows_s };
		if ((rv = q(call, db, "import the orders", orders_sql, 2, p,
		            &r)) != PL_OK)
			goto out;
	}
	for (int i = 0; i < PQntuples(r); i++) {
		bool created = PQgetvalue(r, i, 2)[0] == 't';
		t->out->ids[t->out->n_ids++] =
		        imported(call->arena, PQgetvalue(r, i, 0),
		                 PQgetvalue(r, i, 1), created, false);
		if (created)
			t->out->created++;
		else
			t->out->existing++;
	}
out:
	PQclear(r);
	json_decref(rows);
	free(rows_s);
	return rv;
}

int
messaging_import_orders(pl_call *call, const void *inp, void *outp)
{
	const M(ImportOrdersRequest) *in = inp;
	M(ImportOrdersResponse) *out = outp;
	orders_tx t = { call, in, out };
	int rv;

	if ((rv = need_tenant(call, in->tenant_id, NULL, false)) != PL_OK)
		return rv;
	if (in->n_orders > IMP_MAX_ROWS)
		return pl_call_violation(call, "orders", "at most %d per call",
		                         IMP_MAX_ROWS);
	for (size_t i = 0; i < in->n_orders; i++) {
		const M(ImportOrder) *o = in->orders[i];
		char *f = pl_arena_printf(call->arena, "orders[%zu]", i);

		if (!legacy_ok(o->legacy_id))
			return pl_call_violation(
			        call,
			        pl_arena_printf(call->arena, "%s.legacy_id", f),
			        "must be 1 to %d bytes", IMP_MAX_LEGACY);
		if (!pl_uuid_valid(s0(o->contact_id)) ||
		    (nz(o->conversation_id) &&
		     !pl_uuid_valid(o->conversation_id)) ||
		    (nz(o->message_id) && !pl_uuid_valid(o->message_id)))
			return pl_call_violation(
			        call,
			        pl_arena_printf(call->arena, "%s.contact_id",
			                        f),
			        "contact_id (and conversation_id, message_id "
			        "when given) must be UUIDs");
		if (!IN_RANGE(o->status, ostatus_names))
			return pl_call_violation(
			        call,
			        pl_arena_printf(call->arena, "%s.status", f),
			        "is required");
		if (strlen(s0(o->currency)) != 3 || o->currency[0] < 'A' ||
		    o->currency[0] > 'Z')
			return pl_call_violation(
			        call,
			        pl_arena_printf(call->arena, "%s.currency", f),
			        "must be an ISO 4217 code");
		if (o->n_items > 1000)
			return pl_call_violation(
			        call,
			        pl_arena_printf(call->arena, "%s.items", f),
			        "at most 1000 items");
		for (size_t k = 0; k < o->n_items; k++) {
			const M(OrderItem) *it = o->items[k];
			if (!nz(it->name) || strlen(it->name) > 1024 ||
			    strlen(s0(it->sku)) > 256 || it->quantity < 1 ||
			    it->quantity > 1000000 ||
			    it->unit_price_minor < 0 ||
			    it->unit_price_minor > 1000000000000LL)
				return pl_call_violation(
				        call,
				        pl_arena_printf(call->arena,
				                        "%s.items[%zu]", f, k),
				        "needs a name, 1..1000000 units and a "
				        "price of 0..10^12 minor units");
		}
		if (!json_ok(jtext(o->address), false) ||
		    !json_ok(jtext(o->legacy_details), false))
			return pl_call_violation(
			        call,
			        pl_arena_printf(call->arena, "%s.address", f),
			        "must be JSON");
		if (!ts_ok(o->created_at) || !ts_ok(o->updated_at))
			return pl_call_violation(
			        call,
			        pl_arena_printf(call->arena, "%s.created_at",
			                        f),
			        "must be an RFC 3339 time");
	}
	out->ids = pl_arena_zalloc(call->arena,
	                           sizeof(void *) * (in->n_orders + 1));
	if (out->ids == NULL)
		return pl_call_error(call, PL_RESOURCE_EXHAUSTED,
		                     "batch too big");
	return pl_db_tx(pl_call_db(call), in->tenant_id, orders_fn, &t);
}

// ---------------------------------------------------------------------------
// Campaigns, their templates and recipients

static const char *const cpstatus_names[] = { "",        "draft",  "scheduled",
	                                      "running", "paused", "completed",
	                                      "canceled" };
static const char *const cat_names[] = { "", "marketing", "utility",
	                                 "authentication" };
static const char *const rstatus_names[] = {
	"",       "pending",           "sent",          "delivered", "read",
	"failed", "skipped_opted_out", "skipped_limit",
};

typedef struct campaigns_tx {
	pl_call *call;
	const M(ImportCampaignsRequest) * in;
	M(ImportCampaignsResponse) * out;
} campaigns_tx;

static char *
params_json(const M(ImportCampaign) * c)
{
	json_t *arr = json_array();
	char *s;

	for (size_t i = 0; i < c->n_parameters; i++) {
		const M(ParameterBinding) *b = c->parameters[i];
		json_array_append_new(
		        arr, json_pack("{s:i, s:s, s:s, s:s, s:s}", "index",
		                       b->index, "name", s0(b->name),
		                       "contact_field", s0(b->contact_field),
		                       "value", s0(b->value), "fallback",
		                       s0(b->fallback)));
	}
	s = json_dumps(arr, JSON_COMPACT);
	json_decref(arr);
	return s;
}

// The recipients of one campaign in one statement ($1 tenant, $2 the rows as
// a JSON array, $3 campaign). Two legacy subscribers merged into one
// contact are one recipient: the first (in request order) makes the row,
// the other maps to it. Answers legacy id, Parley id, created, merged.
static const char recipients_sql[] =
        "WITH x AS (SELECT * FROM jsonb_to_recordset($2::jsonb) AS x(i int, "
        "legacy_id text, nid uuid, contact uuid, status text, oin "
        "timestamptz, oout timestamptz)), "
        "todo AS (SELECT x.* FROM x WHERE NOT EXISTS (SELECT 1 FROM "
        "messaging.import_map im WHERE im.tenant_id = $1 AND im.kind = "
        "'recipient' AND im.legacy_id = x.legacy_id)), "
        "ins AS (INSERT INTO messaging.campaign_recipients (tenant_id, id, "
        "campaign_id, contact_id, status, opted_in_at, opted_out_at) SELECT "
        "DISTINCT ON (contact) $1::uuid, nid, $3::uuid, contact, status, oin, "
        "oout FROM todo ORDER BY contact, i ON CONFLICT (tenant_id, "
        "campaign_id, contact_id) DO NOTHING RETURNING id, contact_id), "
        "t AS (SELECT todo.i, todo.legacy_id, coalesce(ins.id, cr.id) AS id, "
        "coalesce(ins.id = todo.nid, false) AS created FROM todo LEFT JOIN "
        "ins ON ins.contact_id = todo.contact LEFT JOIN "
        "messaging.campaign_recipients cr ON ins.id IS NULL AND cr.tenant_id "
        "= $1 AND cr.campaign_id = $3 AND cr.contact_id = todo.contact), "
        "mp AS (INSERT INTO messaging.import_map (tenant_id, kind, legacy_id, "
        "id) SELECT DISTINCT ON (legacy_id) $1::uuid, 'recipient', legacy_id, "
        "id FROM t ORDER BY legacy_id, i ON CONFLICT DO NOTHING) "
        "SELECT x.legacy_id, coalesce(t.id, im.id), coalesce(t.created, "
        "false), t.id IS NOT NULL AND NOT t.created FROM x LEFT JOIN t ON t.i "
        "= x.i LEFT JOIN messaging.import_map im ON t.i IS NULL AND "
        "im.tenant_id = $1 AND im.kind = 'recipient' AND im.legacy_id = "
        "x.legacy_id ORDER BY x.i";

static int
recipients(campaigns_tx *t, pl_db *db, const M(ImportCampaign) * c,
           const char *campaign_id)
{
	pl_call *call = t->call;
	json_t *rows = json_array();
	char *rows_s = NULL;
	PGresult *r = NULL;
	int rv = PL_OK;

	if (c->n_recipients == 0)
		goto out;
	for (size_t k = 0; k < c->n_recipients; k++) {
		const M(ImportRecipient) *x = c->recipients[k];
		char nid[40];

		pl_uuid7_str(nid);
		json_array_append_new(
		        rows,
		        json_pack("{s:I, s:s, s:s, s:s, s:s, s:s*, s:s*}", "i",
		                  (json_int_t)k, "legacy_id", x->legacy_id,
		                  "nid", nid, "contact", x->contact_id,
		                  "status", rstatus_names[x->status], "oin",
		                  nz(x->opted_in_at), "oout",
		                  nz(x->opted_out_at)));
	}
	rows_s = json_dumps(rows, JSON_COMPACT);
	if (rows_s == NULL || json_array_size(rows) != c->n_recipients) {
		rv = pl_call_violation(call, "recipients",
		                       "must be valid UTF-8 text");
		goto out;
	}
	{
		const char *p[3] = { t->in->tenant_id, rows_s, campaign_id };
		if ((rv = q(call, db, "import the recipients", recipients_sql,
		            3, p, &r)) != PL_OK)
			goto out;
	}
	for (int i = 0; i < PQntuples(r); i++)
		t->out->recipients[t->out->n_recipients++] = imported(
		        call->arena, PQgetvalue(r, i, 0), PQgetvalue(r, i, 1),
		        PQgetvalue(r, i, 2)[0] == 't',
		        PQgetvalue(r, i, 3)[0] == 't');
out:
	PQclear(r);
	json_decref(rows);
	free(rows_s);
	return rv;
}

static int
campaigns_fn(pl_db *db, void *arg)
{
	campaigns_tx *t = arg;
	pl_call *call = t->call;
	const char *tenant = t->in->tenant_id;
	int rv;

	t->out->n_campaigns = t->out->n_recipients = 0;
	t->out->created = t->out->existing = 0;
	for (size_t i = 0; i < t->in->n_campaigns; i++) {
		const M(ImportCampaign) *c = t->in->campaigns[i];
		char id[40], tpl[40];
		bool created = false;

		if ((rv = map_get(call, db, tenant, "campaign", c->legacy_id,
		                  id)) != PL_OK)
			return rv;
		if (!id[0]) {
			char *pj = params_json(c);
			PGresult *r = NULL;
			const char *p[7] = { tenant,
				             tpl,
				             t->in->channel_id,
				             c->template_name,
				             c->template_language,
				             cat_names[c->template_category],
				             jtext(c->template_components) };
			pl_uuid7_str(tpl);
			rv = q(call, db, "import the template",
			       "WITH i AS (INSERT INTO messaging.templates "
			       "(tenant_id, id, channel_id, name, language, "
			       "category, components, parameter_count, status) "
			       "VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, "
			       "(SELECT count(DISTINCT m[1]) FROM "
			       "regexp_matches($7::jsonb::text, "
			       "'\\{\\{([0-9]+)\\}\\}', 'g') AS m), 'draft') "
			       "ON "
			       "CONFLICT (tenant_id, channel_id, name, "
			       "language) "
			       "DO NOTHING RETURNING id) SELECT id FROM i "
			       "UNION "
			       "ALL SELECT id FROM messaging.templates WHERE "
			       "tenant_id = $1 AND channel_id = $3 AND name = "
			       "$4 "
			       "AND language = $5 LIMIT 1",
			       7, p, &r);
			if (rv != PL_OK) {
				free(pj);
				return rv;
			}
			snprintf(tpl, sizeof(tpl), "%s", PQgetvalue(r, 0, 0));
			PQclear(r);
			pl_uuid7_str(id);
			{
				const char *u[8] = {
					tenant,
					id,
					c->name,
					t->in->channel_id,
					tpl,
					pj,
					cpstatus_names[c->status],
					nz(c->created_at),
				};
				rv = q(call, db, "import the campaign",
				       "INSERT INTO messaging.campaigns "
				       "(tenant_id, id, name, channel_id, "
				       "template_id, parameters, status, "
				       "pause_reason, completed_at, "
				       "created_at, "
				       "updated_at) VALUES ($1, $2, $3, $4, "
				       "$5, "
				       "$6::jsonb, $7, CASE WHEN $7 = 'paused' "
				       "THEN 'imported from the legacy system' "
				       "ELSE '' END, CASE WHEN $7 = "
				       "'completed' "
				       "THEN coalesce($8::timestamptz, now()) "
				       "END, coalesce($8::timestamptz, now()), "
				       "now())",
				       8, u, NULL);
			}
			free(pj);
			if (rv != PL_OK)
				return rv;
			if ((rv = map_put(call, db, tenant, "campaign",
			                  c->legacy_id, id, NULL, NULL)) !=
			    PL_OK)
				return rv;
			created = true;
			t->out->created++;
		} else {
			t->out->existing++;
		}
		t->out->campaigns[t->out->n_campaigns++] =
		        imported(call->arena, c->legacy_id, id, created, false);
		if ((rv = recipients(t, db, c, id)) != PL_OK)
			return rv;
	}
	return PL_OK;
}

int
messaging_import_campaigns(pl_call *call, const void *inp, void *outp)
{
	const M(ImportCampaignsRequest) *in = inp;
	M(ImportCampaignsResponse) *out = outp;
	campaigns_tx t = { call, in, out };
	size_t total = 0;
	int rv;

	if ((rv = need_tenant(call, in->tenant_id, in->channel_id, true)) !=
	    PL_OK)
		return rv;
	if (in->n_campaigns > IMP_MAX_ROWS)
		return pl_call_violation(call, "campaigns",
		                         "at most %d per call", IMP_MAX_ROWS);
	for (size_t i = 0; i < in->n_campaigns; i++) {
		const M(ImportCampaign) *c = in->campaigns[i];
		char *f = pl_arena_printf(call->arena, "campaigns[%zu]", i);

		if (!legacy_ok(c->legacy_id))
			return pl_call_violation(
			        call,
			        pl_arena_printf(call->arena, "%s.legacy_id", f),
			        "must be 1 to %d bytes", IMP_MAX_LEGACY);
		if (!nz(c->name) || strlen(c->name) > 512 ||
		    !nz(c->template_name) || strlen(c->template_name) > 512 ||
		    !nz(c->template_language) ||
		    strlen(c->template_language) > 35)
			return pl_call_violation(
			        call,
			        pl_arena_printf(call->arena, "%s.name", f),
			        "name, template_name and template_language are "
			        "required");
		if (!IN_RANGE(c->status, cpstatus_names) ||
		    !IN_RANGE(c->template_category, cat_names))
			return pl_call_violation(
			        call,
			        pl_arena_printf(call->arena, "%s.status", f),
			        "status and template_category are required");
		if (jtext(c->template_components) == NULL ||
		    !json_ok(jtext(c->template_components), false))
			return pl_call_violation(
			        call,
			        pl_arena_printf(call->arena,
			                        "%s.template_components", f),
			        "must be JSON");
		if (!ts_ok(c->created_at))
			return pl_call_violation(
			        call,
			        pl_arena_printf(call->arena, "%s.created_at",
			                        f),
			        "must be an RFC 3339 time");
		total += c->n_recipients;
		for (size_t k = 0; k < c->n_recipients; k++) {
			const M(ImportRecipient) *x = c->recipients[k];
			if (!legacy_ok(x->legacy_id) ||
			    !pl_uuid_valid(s0(x->contact_id)) ||
			    !IN_RANGE(x->status, rstatus_names) ||
			    !ts_ok(x->opted_in_at) || !ts_ok(x->opted_out_at))
				return pl_call_violation(
				        call,
				        pl_arena_printf(call->arena,
				                        "%s.recipients[%zu]", f,
				                        k),
				        "needs a legacy_id, a contact_id and a "
				        "status");
		}
	}
	if (total > IMP_MAX_ROWS)
		return pl_call_violation(call, "campaigns.recipients",
		                         "at most %d per call", IMP_MAX_ROWS);
	out->campaigns = pl_arena_zalloc(
	        call->arena, sizeof(void *) * (in->n_campaigns + 1));
	out->recipients =
	        pl_arena_zalloc(call->arena, sizeof(void *) * (total + 1));
	if (out->campaigns == NULL || out->recipients == NULL)
		return pl_call_error(call, PL_RESOURCE_EXHAUSTED,
		                     "batch too big");
	return pl_db_tx(pl_call_db(call), in->tenant_id, campaigns_fn, &t);
}

// ---------------------------------------------------------------------------
// Summary: counts per table (and status) and a SHA-256 per table over the
// imported rows in legacy-id order (bytewise), fields joined by U+001F and
// rows by U+001E. What each row contributes is in services/import/README.md;
// the importer computes the same over the legacy rows. On a difference it
// asks for the rows of a table (rows_of_table): each row's legacy id and the
// SHA-256 of the same text. Both statements are made of the per-table
// pieces below, so a row's digest and its table's checksum cannot drift.

#define TS(x)                                                                  \
	"coalesce(to_char((" x ") AT TIME ZONE 'UTC', "                        \
	"'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), '')"
#define KEY "im.legacy_id COLLATE \"C\""
#define IM                                                                     \
	"WITH im AS (SELECT kind, legacy_id, id, raw FROM "                    \
	"messaging.import_map WHERE tenant_id = $1) "

// Per table: the row's text (fields joined by U+001F) and the rows (FROM and
// WHERE, over im).

// contacts: legacy id, E.164 phone, raw phone
#define CONTACTS_ROW                                                           \
	"concat_ws(E'\\x1f', im.legacy_id, coalesce(k.phone, ''), "            \
	"coalesce(im.raw, ''))"
#define CONTACTS_FROM                                                          \
	"im JOIN messaging.contacts k ON k.tenant_id = $1 AND k.id = im.id "   \
	"WHERE im.kind = 'contact'"

// conversations: legacy id, status, message count
#define CONVERSATIONS_ROW                                                      \
	"concat_ws(E'\\x1f', im.legacy_id, c.status, c.message_count::text)"
#define CONVERSATIONS_FROM                                                     \
	"im JOIN messaging.conversations c ON c.tenant_id = $1 AND c.id = "    \
	"im.id WHERE im.kind = 'conversation'"

// messages: legacy id, provider id, direction, type, status, text, media
// URL, provider time, metadata
#define MESSAGES_ROW                                                           \
	"concat_ws(E'\\x1f', im.legacy_id, coalesce(m.provider_message_id, "   \
	"''), m.direction, m.type, m.status, m.text, m.media_url, " TS(        \
	        "m.provider_created_at") ", m.metadata::text)"
#define MESSAGES_FROM                                                          \
	"im JOIN messaging.messages m ON m.tenant_id = $1 AND m.id = im.id "   \
	"WHERE im.kind = 'message'"

// orders: legacy id, status, currency, total, items
#define ORDERS_ROW                                                             \
	"concat_ws(E'\\x1f', im.legacy_id, o.status, o.currency, (SELECT "     \
	"coalesce(sum(i.quantity * i.unit_price_minor), 0)::text FROM "        \
	"messaging.order_items i WHERE i.tenant_id = $1 AND i.order_id = "     \
	"o.id), (SELECT coalesce(string_agg(concat_ws(':', i.sku, "            \
	"i.quantity, i.unit_price_minor), ';' ORDER BY i.position), '') FROM " \
	"messaging.order_items i WHERE i.tenant_id = $1 AND i.order_id = "     \
	"o.id))"
#define ORDERS_FROM                                                            \
	"im JOIN messaging.orders o ON o.tenant_id = $1 AND o.id = im.id "     \
	"WHERE im.kind = 'order'"

// campaigns: legacy id, name, status, the template's body
#define CAMPAIGNS_ROW                                                          \
	"concat_ws(E'\\x1f', im.legacy_id, c.name, c.status, "                 \
	"coalesce(t.components->0->>'text', ''))"
#define CAMPAIGNS_FROM                                                         \
	"im JOIN messaging.campaigns c ON c.tenant_id = $1 AND c.id = im.id "  \
	"JOIN messaging.templates t ON t.tenant_id = $1 AND t.id = "           \
	"c.template_id WHERE im.kind = 'campaign'"
// (the per-status count does not need the template)
#define CAMPAIGNS_ONLY_FROM                                                    \
	"im JOIN messaging.campaigns c ON c.tenant_id = $1 AND c.id = im.id "  \
	"WHERE im.kind = 'campaign'"

// campaign_recipients: legacy id, status, opted out or not
#define RECIPIENTS_ROW                                                         \
	"concat_ws(E'\\x1f', im.legacy_id, r.status, CASE WHEN "               \
	"r.opted_out_at IS NULL THEN 'in' ELSE 'out' END)"
#define RECIPIENTS_FROM                                                        \
	"im JOIN messaging.campaign_recipients r ON r.tenant_id = $1 AND "     \
	"r.id = im.id WHERE im.kind = 'recipient'"

// A table's count and checksum; a table's count per status.
#define TABLE_SUM(name, row, from)                                             \
	"SELECT '" name "' AS t, '' AS s, count(*) AS n, "                     \
	"encode(sha256(convert_to(coalesce(string_agg(" row                    \
	", E'\\x1e' ORDER BY " KEY                                             \
	"), ''), 'UTF8')), 'hex') AS sha FROM " from
#define STATUS_SUM(name, col, from)                                            \
	"SELECT '" name "', " col ", count(*), '' FROM " from " GROUP BY " col
// A page of a table's rows: legacy id and the SHA-256 of its text, after
// $2 in bytewise order, at most $3.
#define TABLE_ROWS(row, from)                                                  \
	IM "SELECT im.legacy_id, encode(sha256(convert_to(" row                \
	   ", 'UTF8')), 'hex') FROM " from " AND " KEY " > $2 ORDER BY " KEY   \
	   " LIMIT $3"

#define UNION        " UNION ALL "
#define CONTACTS_SUM TABLE_SUM("contacts", CONTACTS_ROW, CONTACTS_FROM)
#define CONVERSATIONS_SUM                                                      \
	TABLE_SUM("conversations", CONVERSATIONS_ROW, CONVERSATIONS_FROM)
#define MESSAGES_SUM                                                           \
	TABLE_SUM("messages", MESSAGES_ROW, MESSAGES_FROM)                     \
	UNION STATUS_SUM("messages", "m.status", MESSAGES_FROM)
#define ORDERS_SUM                                                             \
	TABLE_SUM("orders", ORDERS_ROW, ORDERS_FROM)                           \
	UNION STATUS_SUM("orders", "o.status", ORDERS_FROM)
#define CAMPAIGNS_SUM                                                          \
	TABLE_SUM("campaigns", CAMPAIGNS_ROW, CAMPAIGNS_FROM)                  \
	UNION STATUS_SUM("campaigns", "c.status", CAMPAIGNS_ONLY_FROM)
#define RECIPIENTS_SUM                                                         \
	TABLE_SUM("campaign_recipients", RECIPIENTS_ROW, RECIPIENTS_FROM)      \
	UNION STATUS_SUM("campaign_recipients", "r.status", RECIPIENTS_FROM)

static const char summary_sql[] = IM CONTACTS_SUM UNION CONVERSATIONS_SUM UNION
        MESSAGES_SUM UNION ORDERS_SUM UNION CAMPAIGNS_SUM UNION RECIPIENTS_SUM
        " ORDER BY 1, 2";

static const struct {
	const char *table;
	const char *sql;
} rows_sql[] = {
	{ "contacts", TABLE_ROWS(CONTACTS_ROW, CONTACTS_FROM) },
	{ "conversations", TABLE_ROWS(CONVERSATIONS_ROW, CONVERSATIONS_FROM) },
	{ "messages", TABLE_ROWS(MESSAGES_ROW, MESSAGES_FROM) },
	{ "orders", TABLE_ROWS(ORDERS_ROW, ORDERS_FROM) },
	{ "campaigns", TABLE_ROWS(CAMPAIGNS_ROW, CAMPAIGNS_FROM) },
	{ "campaign_recipients", TABLE_ROWS(RECIPIENTS_ROW, RECIPIENTS_FROM) },
};

#define ROWS_DEFAULT 1000
#define ROWS_MAX     5000

typedef struct summary_tx {
	pl_call *call;
	const M(GetImportSummaryRequest) * in;
	M(GetImportSummaryResponse) * out;
	const char *rows_sql; // a page of rows instead of the summary
	int limit;
} summary_tx;

static int
rows_fn(pl_db *db, summary_tx *t)
{
	pl_call *call = t->call;
	pl_arena *a = call->arena;
	char lim[16];
	const char *p[3] = { t->in->tenant_id, s0(t->in->rows_after), lim };
	PGresult *r = NULL;
	int n, rv;

	snprintf(lim, sizeof(lim), "%d", t->limit);
	if ((rv = q(call, db, "list the imported rows", t->rows_sql, 3, p,
	            &r)) != PL_OK)
		return rv;
	n = PQntuples(r);
	t->out->rows = pl_arena_zalloc(a, sizeof(void *) * (n + 1));
	if (t->out->rows == NULL) {
		PQclear(r);
		return pl_call_error(call, PL_RESOURCE_EXHAUSTED, "too big");
	}
	for (int i = 0; i < n; i++) {
		M(RowDigest) *d = pl_arena_zalloc(a, sizeof(*d));
		if (d == NULL) {
			PQclear(r);
			return pl_call_error(call, PL_RESOURCE_EXHAUSTED,
			                     "too big");
		}
		parley__messaging__v1__row_digest__init(d);
		d->key = pl_arena_strdup(a, PQgetvalue(r, i, 0));
		d->sha256 = pl_arena_strdup(a, PQgetvalue(r, i, 1));
		t->out->rows[t->out->n_rows++] = d;
	}
	// A full page may have a next one; a short page is the last.
	if (n == t->limit)
		t->out->rows_next = t->out->rows[n - 1]->key;
	PQclear(r);
	return PL_OK;
}

static int
summary_fn(pl_db *db, void *arg)
{
	summary_tx *t = arg;
	pl_call *call = t->call;
	pl_arena *a = call->arena;
	const char *p[1] = { t->in->tenant_id };
	PGresult *r = NULL;
	int n, rv;

	if (t->rows_sql != NULL)
		return rows_fn(db, t);
	// Right after a bulk import the tables have no statistics yet (the
	// autovacuum daemon has not come by): without them the summary's
	// joins over 100,000 messages got plans that ran past the call's
	// deadline. A sample per table costs well under a second.
	if ((rv = q(call, db, "analyse the imported tables",
	            "ANALYZE messaging.import_map, messaging.contacts, "
	            "messaging.conversations, messaging.messages, "
	            "messaging.orders, messaging.order_items, "
	            "messaging.campaigns, messaging.campaign_recipients",
	            0, NULL, NULL)) != PL_OK)
		return rv;
	if ((rv = q(call, db, "summarise the import", summary_sql, 1, p, &r)) !=
	    PL_OK)
		return rv;
	n = PQntuples(r);
	t->out->counts = pl_arena_zalloc(a, sizeof(void *) * (n + 1));
	t->out->checksums = pl_arena_zalloc(a, sizeof(void *) * (n + 1));
	if (t->out->counts == NULL || t->out->checksums == NULL) {
		PQclear(r);
		return pl_call_error(call, PL_RESOURCE_EXHAUSTED, "too big");
	}
	for (int i = 0; i < n; i++) {
		M(TableCount) *c = pl_arena_zalloc(a, sizeof(*c));
		parley__messaging__v1__table_count__init(c);
		c->table = pl_arena_strdup(a, PQgetvalue(r, i, 0));
		c->status = pl_arena_strdup(a, PQgetvalue(r, i, 1));
		c->count = atoll(PQgetvalue(r, i, 2));
		t->out->counts[t->out->n_counts++] = c;
		if (c->status[0] == '\0') {
			M(TableChecksum) *s = pl_arena_zalloc(a, sizeof(*s));
			parley__messaging__v1__table_checksum__init(s);
			s->table = c->table;
			s->rows = c->count;
			s->sha256 = pl_arena_strdup(a, PQgetvalue(r, i, 3));
			t->out->checksums[t->out->n_checksums++] = s;
		}
	}
	PQclear(r);
	return PL_OK;
}

int
messaging_import_summary(pl_call *call, const void *inp, void *outp)
{
	const M(GetImportSummaryRequest) *in = inp;
	summary_tx t = { call, in, outp, NULL, 0 };
	const char *table = s0(in->rows_of_table);
	int rv;

	if ((rv = need_tenant(call, in->tenant_id, NULL, false)) != PL_OK)
		return rv;
	if (table[0] == '\0') {
		if (s0(in->rows_after)[0] != '\0' || in->rows_limit != 0)
			return pl_call_violation(call, "rows_of_table",
			                         "is required with rows_after "
			                         "and rows_limit");
	} else {
		for (size_t i = 0; i < sizeof(rows_sql) / sizeof(rows_sql[0]);
		     i++)
			if (strcmp(rows_sql[i].table, table) == 0)
				t.rows_sql = rows_sql[i].sql;
		if (t.rows_sql == NULL)
			return pl_call_violation(
			        call, "rows_of_table",
			        "must be contacts, conversations, messages, "
			        "orders, campaigns or campaign_recipients");
		if (strlen(s0(in->rows_after)) > IMP_MAX_LEGACY)
			return pl_call_violation(call, "rows_after",
			                         "at most %d bytes",
			                         IMP_MAX_LEGACY);
		if (in->rows_limit < 0)
			return pl_call_violation(call, "rows_limit",
			                         "must not be negative");
		t.limit = in->rows_limit == 0         ? ROWS_DEFAULT
		          : in->rows_limit > ROWS_MAX ? ROWS_MAX
		                                      : in->rows_limit;
	}
	return pl_db_tx(pl_call_db(call), in->tenant_id, summary_fn, &t);
}
