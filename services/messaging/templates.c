// Templates: per tenant and channel, {{n}} parameters counted and checked,
// a status set by people or the API, sent (approved only) through the core
// delivery path as WhatsApp's "type":"template" or Infobip's template API.
// Allowed outside the 24-hour window; marketing never to opted-out contacts.
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "pl/id.h"
#include "pl/log.h"
#include "engage.h"

static const char *const category_names[] = { "", "marketing", "utility",
	                                      "authentication" };
static const char *const tstatus_names[] = { "", "draft", "submitted",
	                                     "approved", "rejected" };

// ---------------------------------------------------------------------------
// Logic (no I/O)

int
engage_template_params(const char *text, char *err, size_t errlen)
{
	bool seen[EG_MAX_PARAMS + 1] = { false };
	int max = 0;

	for (const char *p = text; p && (p = strstr(p, "{{")) != NULL;) {
		const char *q = p + 2;
		long v = 0;
		if (!isdigit((unsigned char)*q)) {
			p = q;
			continue;
		}
		while (isdigit((unsigned char)*q) && v <= EG_MAX_PARAMS)
			v = v * 10 + (*q++ - '0');
		if (strncmp(q, "}}", 2) != 0) {
			p = q;
			continue;
		}
		if (v < 1 || v > EG_MAX_PARAMS) {
			snprintf(err, errlen,
			         "parameters are {{1}} to {{%d}}, not {{%ld}}",
			         EG_MAX_PARAMS, v);
			return -1;
		}
		seen[v] = true;
		if (v > max)
			max = (int)v;
		p = q + 2;
	}
	for (int i = 1; i <= max; i++)
		if (!seen[i]) {
			snprintf(err, errlen,
			         "parameter {{%d}} is missing (they must be "
			         "{{1}} to {{%d}} with none left out)",
			         i, max);
			return -1;
		}
	return max;
}

int
engage_template_check(const char *components, char *err, size_t errlen)
{
	json_t *o = json_loads(components, JSON_REJECT_DUPLICATES, NULL);
	json_t *body = json_object_get(o, "body");
	const char *text = json_string_value(json_object_get(body, "text"));
	int n;

	if (!json_is_object(o)) {
		snprintf(err, errlen, "must be a JSON object");
		json_decref(o);
		return -1;
	}
	if (text == NULL || text[0] == '\0' || strlen(text) > 1024) {
		snprintf(err, errlen, "needs body.text, 1 to 1024 characters");
		json_decref(o);
		return -1;
	}
	n = engage_template_params(text, err, errlen);
	json_decref(o);
	return n;
}

bool
engage_keyword_match(const char *text, const char *const *kw, size_t n)
{
	size_t len;

	if (text == NULL)
		return false;
	while (isspace((unsigned char)*text))
		text++;
	len = strlen(text);
	while (len > 0 && (isspace((unsigned char)text[len - 1]) ||
	                   text[len - 1] == '.' || text[len - 1] == '!'))
		len--;
	for (size_t i = 0; i < n; i++)
		if (kw[i] && strlen(kw[i]) == len && len > 0 &&
		    strncasecmp(text, kw[i], len) == 0)
			return true;
	return false;
}

int
engage_build_template(const msg_send *s, const char *name, const char *language,
                      const char *const *params, size_t n, pl_arena *a,
                      const char **url, const char ***headers, char **body)
{
	const char **h = pl_arena_zalloc(a, 3 * sizeof(*h));
	const char *base = s->api_base_url ? s->api_base_url : "";
	size_t bl = strlen(base);
	json_t *o, *ps = json_array();
	char *txt;

	if (h == NULL || ps == NULL) {
		json_decref(ps);
		return PL_RESOURCE_EXHAUSTED;
	}
	while (bl > 0 && base[bl - 1] == '/')
		bl--;
	h[1] = "Content-Type: application/json";
	if (s->channel_type ==
	    PARLEY__TENANTS__V1__CHANNEL_TYPE__CHANNEL_TYPE_WHATSAPP_CLOUD) {
		json_t *comps = json_array();
		for (size_t i = 0; i < n; i++)
			json_array_append_new(ps, json_pack("{s:s, s:s}",
			                                    "type", "text",
			                                    "text", params[i]));
		if (n > 0)
			json_array_append_new(
			        comps, json_pack("{s:s, s:o}", "type", "body",
			                         "parameters", ps));
		else
			json_decref(ps);
		*url = pl_arena_printf(a, "%.*s/%s/messages", (int)bl, base,
		                       s->phone_number_id);
		h[0] = pl_arena_printf(a, "Authorization: Bearer %s",
		                       s->access_token);
		o = json_pack("{s:s, s:s, s:s, s:{s:s, s:{s:s}, s:o}}",
		              "messaging_product", "whatsapp", "recipient_type",
		              "individual", "type", "template", "template",
		              "name", name, "language", "code", language,
		              "components", comps);
		if (o != NULL)
			json_object_set_new(
			        o,
			        s->to_kind == EG_E(EXTERNAL_ID_KIND__EXTERNAL_ID_KIND_BUSINESS_USER_ID)
			                ? "recipient"
			                : "to",
			        json_string(s->to));
	} else if (s->channel_type ==
	           PARLEY__TENANTS__V1__CHANNEL_TYPE__CHANNEL_TYPE_INFOBIP) {
		for (size_t i = 0; i < n; i++)
			json_array_append_new(ps, json_string(params[i]));
		*url = pl_arena_printf(a, "%.*s/whatsapp/1/message/template",
		                       (int)bl, base);
		h[0] = pl_arena_printf(a, "Authorization: App %s",
		                       s->access_token);
		o = json_pack("{s:[{s:s, s:s, s:{s:s, s:{s:{s:o}}, s:s}}]}",
		              "messages", "from",
		              s->sender_number ? s->sender_number : "", "to",
		              s->to, "content", "templateName", name,
		              "templateData", "body", "placeholders", ps,
		              "language", language);
	} else {
		json_decref(ps);
		return PL_INVALID_ARGUMENT;
	}
	if (o == NULL)
		return PL_INVALID_ARGUMENT;
	txt = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	*body = txt ? pl_arena_strdup(a, txt) : NULL;
	free(txt);
	*headers = h;
	return *body ? PL_OK : PL_RESOURCE_EXHAUSTED;
}

// ---------------------------------------------------------------------------
// The delivery worker's hook

int
engage_build_send(pl_db *db, const msg_delivery *d, const msg_send *s,
                  pl_arena *a, const char **url, const char ***headers,
                  char **body)
{
	const char *p[2] = { d->tenant_id, d->message_id };
	PGresult *r;
	json_t *t, *ps;
	const char **vals;
	size_t n;
	int rv;

	if (d->type != EG_E(MESSAGE_TYPE__MESSAGE_TYPE_TEMPLATE))
		return messaging_build_send(s, a, url, headers, body);
	// One statement (the function sets the tenant for its transaction).
	r = pl_db_exec(db, "SELECT messaging.template_spec($1, $2)", 2, p);
	if (pl_db_result_status(r) != PL_OK || PQntuples(r) != 1 ||
	    PQgetisnull(r, 0, 0)) {
		PQclear(r);
		return PL_INVALID_ARGUMENT;
	}
	t = json_loads(PQgetvalue(r, 0, 0), 0, NULL);
	PQclear(r);
	ps = json_object_get(t, "parameters");
	n = json_array_size(ps);
	vals = pl_arena_zalloc(a, (n + 1) * sizeof(*vals));
	for (size_t i = 0; vals && i < n; i++) {
		const char *v = json_string_value(json_array_get(ps, i));
		vals[i] = pl_arena_strdup(a, v ? v : "");
	}
	if (vals == NULL || !json_is_string(json_object_get(t, "name")) ||
	    !json_is_string(json_object_get(t, "language"))) {
		json_decref(t);
		return PL_INVALID_ARGUMENT;
	}
	rv = engage_build_template(
	        s, json_string_value(json_object_get(t, "name")),
	        json_string_value(json_object_get(t, "language")), vals, n, a,
	        url, headers, body);
	json_decref(t);
	return rv;
}

// ---------------------------------------------------------------------------
// RPCs

static const char SEL[] = "SELECT %s FROM messaging.templates t WHERE "
                          "t.tenant_id = $1 AND t.id = $2";

static int
check_fields(pl_call *call, const char *name, const char *language, bool need)
{
	if ((need || name) && (!eg_nz(name) || strlen(name) > 512))
		return pl_call_violation(call, "name",
		                         "must be 1 to 512 characters");
	if ((need || language) && (!eg_nz(language) || strlen(language) > 16))
		return pl_call_violation(
		        call, "language",
		        "must be 1 to 16 characters (\"en_US\")");
	return PL_OK;
}

int
eg_create_template(pl_call *call, const void *inp, void *outp)
{
	const EG_M(CreateTemplateRequest) *in = inp;
	EG_M(CreateTemplateResponse) *out = outp;
	const char *comp;
	char err[160], id[40], cnt[16];
	int rv, n;

	if ((rv = eg_need_uuid(call, "channel_id", in->channel_id)) != PL_OK ||
	    (rv = check_fields(call, in->name, in->language, true)) != PL_OK)
		return rv;
	if (in->category < 1 || in->category > 3)
		return pl_call_violation(
		        call, "category",
		        "must be marketing, utility or authentication");
	if (in->status < 0 || in->status > 4)
		return pl_call_violation(call, "status", "is not a status");
	if ((rv = eg_json_arg(call, "components", in->components, false,
	                      EG_MAX_COMPONENTS, NULL, &comp)) != PL_OK)
		return rv;
	if (comp == NULL)
		return pl_call_violation(call, "components", "is required");
	if ((n = engage_template_check(comp, err, sizeof(err))) < 0)
		return pl_call_violation(call, "components", "%s", err);
	pl_uuid7_str(id);
	snprintf(cnt, sizeof(cnt), "%d", n);
	{
		const char *p[8] = { eg_tenant(call),
			             id,
			             in->channel_id,
			             in->name,
			             in->language,
			             category_names[in->category],
			             comp,
			             cnt };
		const char *p2[9];
		memcpy(p2, p, sizeof(p));
		p2[8] = tstatus_names[in->status ? in->status : 1];
		rv = eg_get(
		        call, eg_tenant(call),
		        pl_arena_printf(
		                call->arena,
		                "WITH t AS (INSERT INTO messaging.templates "
		                "(tenant_id, id, channel_id, name, language, "
		                "category, components, parameter_count, "
		                "status) VALUES ($1, $2, $3, $4, $5, $6, "
		                "$7::jsonb, $8::int, $9) RETURNING *) "
		                "SELECT %s FROM t",
		                EG_SQL_TEMPLATE_JSON),
		        9, p2, &parley__messaging__v1__template__descriptor,
		        (void **)&out->template_, "template");
	}
	if (rv == PL_OK)
		out->id = out->template_->id;
	return rv;
}

static bool
masked(char **mask, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (mask[i] && strcmp(mask[i], name) == 0)
			return true;
	return false;
}

int
eg_update_template(pl_call *call, const void *inp, void *outp)
{
	const EG_M(UpdateTemplateRequest) *in = inp;
	EG_M(UpdateTemplateResponse) *out = outp;
	bool all = in->n_update_mask == 0;
	const char *name = NULL, *lang = NULL, *cat = NULL, *comp = NULL;
	char err[160], cnt[16] = "";
	int rv;

	if ((rv = eg_need_uuid(call, "id", in->id)) != PL_OK)
		return rv;
	for (size_t i = 0; i < in->n_update_mask; i++)
		if (!masked((char *[]){ "name", "language", "category",
		                        "components" },
		            4, in->update_mask[i]))
			return pl_call_violation(call, "update_mask",
			                         "unknown field \"%s\"",
			                         in->update_mask[i]);
	if (all ? eg_nz(in->name) != NULL
	        : masked(in->update_mask, in->n_update_mask, "name"))
		name = in->name ? in->name : "";
	if (all ? eg_nz(in->language) != NULL
	        : masked(in->update_mask, in->n_update_mask, "language"))
		lang = in->language ? in->language : "";
	if ((rv = check_fields(call, name, lang, false)) != PL_OK)
		return rv;
	if (all ? in->category != 0
	        : masked(in->update_mask, in->n_update_mask, "category")) {
		if (in->category < 1 || in->category > 3)
			return pl_call_violation(
			        call, "category",
			        "must be marketing, utility or authentication");
		cat = category_names[in->category];
	}
	if (all ? (in->components && eg_nz(in->components->text))
	        : masked(in->update_mask, in->n_update_mask, "components")) {
		int n;
		if ((rv = eg_json_arg(call, "components", in->components, false,
		                      EG_MAX_COMPONENTS, NULL, &comp)) != PL_OK)
			return rv;
		if (comp == NULL)
			return pl_call_violation(call, "components",
			                         "is required");
		if ((n = engage_template_check(comp, err, sizeof(err))) < 0)
			return pl_call_violation(call, "components", "%s", err);
		snprintf(cnt, sizeof(cnt), "%d", n);
	}
	{
		// Editing what is sent makes an approved template a draft
		// again (it needs approving anew).
		const char *p[7] = {
			eg_tenant(call),    in->id, name, lang, cat, comp,
			cnt[0] ? cnt : NULL
		};
		return eg_get(
		        call, eg_tenant(call),
		        pl_arena_printf(
		                call->arena,
		                "WITH t AS (UPDATE messaging.templates SET "
		                "name = coalesce($3, name), language = "
		                "coalesce($4, language), category = "
		                "coalesce($5, category), components = "
		                "coalesce($6::jsonb, components), "
		                "parameter_count = coalesce($7::int, "
		                "parameter_count), status = CASE WHEN $6 IS "
		                "NOT "
		                "NULL OR $5 IS NOT NULL OR $4 IS NOT NULL OR "
		                "$3 "
		                "IS NOT NULL THEN 'draft' ELSE status END, "
		                "updated_at = now() WHERE tenant_id = $1 AND "
		                "id "
		                "= $2 RETURNING *) SELECT %s FROM t",
		                EG_SQL_TEMPLATE_JSON),
		        7, p, &parley__messaging__v1__template__descriptor,
		        (void **)&out->template_, "template");
	}
}

int
eg_get_template(pl_call *call, const void *inp, void *outp)
{
	const EG_M(GetTemplateRequest) *in = inp;
	EG_M(GetTemplateResponse) *out = outp;
	const char *p[2] = { eg_tenant(call), in->id };

	if (!pl_uuid_valid(in->id))
		return pl_call_error(call, PL_NOT_FOUND, "template not found");
	return eg_get(call, eg_tenant(call),
	              pl_arena_printf(call->arena, SEL, EG_SQL_TEMPLATE_JSON),
	              2, p, &parley__messaging__v1__template__descriptor,
	              (void **)&out->template_, "template");
}

int
eg_list_templates(pl_call *call, const void *inp, void *outp)
{
	const EG_M(ListTemplatesRequest) *in = inp;
	EG_M(ListTemplatesResponse) *out = outp;
	char *after, lim[16];
	int size, rv;

	if ((rv = eg_page(call, in->page, &size, &after)) != PL_OK)
		return rv;
	if (eg_nz(in->channel_id) && !pl_uuid_valid(in->channel_id))
		return pl_call_violation(call, "channel_id",
		                         "is not a valid id");
	if (in->status < 0 || in->status > 4 || in->category < 0 ||
	    in->category > 3)
		return pl_call_violation(call, "status",
		                         "is not a status or category");
	snprintf(lim, sizeof(lim), "%d", size + 1);
	{
		const char *p[7] = {
			eg_tenant(call),
			after,
			lim,
			eg_nz(in->channel_id),
			in->status ? tstatus_names[in->status] : NULL,
			in->category ? category_names[in->category] : NULL,
			eg_nz(in->name)
		};
		return eg_list(
		        call, eg_tenant(call),
		        pl_arena_printf(
		                call->arena,
		                "SELECT %s FROM messaging.templates t WHERE "
		                "t.tenant_id = $1 AND ($2::uuid IS NULL OR "
		                "t.id "
		                "< $2::uuid) AND ($4::uuid IS NULL OR "
		                "t.channel_id = $4::uuid) AND ($5::text IS "
		                "NULL "
		                "OR t.status = $5) AND ($6::text IS NULL OR "
		                "t.category = $6) AND ($7::text IS NULL OR "
		                "t.name = $7) ORDER BY t.id DESC LIMIT $3",
		                EG_SQL_TEMPLATE_JSON),
		        7, p, size,
		        &parley__messaging__v1__template__descriptor,
		        (void ***)&out->templates, &out->n_templates,
		        &out->next_page_token);
	}
}

typedef struct del_arg {
	const char *id;
	bool found, busy;
} del_arg;

static int
delete_fn(pl_call *call, pl_db *db, void *arg)
{
	del_arg *x = arg;
	const char *p[2] = { eg_tenant(call), x->id };
	PGresult *r = NULL;
	int rv;

	rv = eg_exec(call, db,
	             "SELECT EXISTS (SELECT 1 FROM messaging.campaigns WHERE "
	             "tenant_id = $1 AND template_id = $2), EXISTS (SELECT 1 "
	             "FROM messaging.campaigns WHERE tenant_id = $1 AND "
	             "template_id = $2 AND status IN ('draft', 'scheduled', "
	             "'running', 'paused'))",
	             2, p, &r, "check the template's campaigns");
	if (rv != PL_OK)
		return rv;
	x->busy = PQgetvalue(r, 0, 1)[0] == 't';
	if (PQgetvalue(r, 0, 0)[0] == 't' && !x->busy) {
		PQclear(r);
		x->busy = true; // finished campaigns still name it
		return PL_OK;
	}
	PQclear(r);
	if (x->busy)
		return PL_OK;
	rv = eg_exec(call, db,
	             "DELETE FROM messaging.templates WHERE tenant_id = $1 AND "
	             "id = $2",
	             2, p, &r, "delete the template");
	if (rv == PL_OK)
		x->found = atoi(PQcmdTuples(r)) == 1;
	PQclear(r);
	return rv;
}

int
eg_delete_template(pl_call *call, const void *inp, void *outp)
{
	const EG_M(DeleteTemplateRequest) *in = inp;
	del_arg x = { in->id, false, false };
	int rv;

	(void)outp;
	if (!pl_uuid_valid(in->id))
		return pl_call_error(call, PL_NOT_FOUND, "template not found");
	if ((rv = eg_tx(call, eg_tenant(call), delete_fn, &x)) != PL_OK)
		return rv;
	if (x.busy)
		return pl_call_error(call, PL_FAILED_PRECONDITION,
		                     "template %s is used by a campaign",
		                     in->id);
	if (!x.found)
		return pl_call_error(call, PL_NOT_FOUND, "template not found");
	return PL_OK;
}

int
eg_set_template_status(pl_call *call, const void *inp, void *outp)
{
	const EG_M(SetTemplateStatusRequest) *in = inp;
	EG_M(SetTemplateStatusResponse) *out = outp;

	if (!pl_uuid_valid(in->id))
		return pl_call_error(call, PL_NOT_FOUND, "template not found");
	if (in->status < 1 || in->status > 4)
		return pl_call_violation(
		        call, "status",
		        "must be draft, submitted, approved or rejected");
	if ((in->reason && strlen(in->reason) > 1024) ||
	    (in->provider_template_id &&
	     strlen(in->provider_template_id) > 256))
		return pl_call_violation(call, "reason",
		                         "is longer than 1024 characters");
	{
		const char *p[5] = { eg_tenant(call), in->id,
			             tstatus_names[in->status],
			             in->reason ? in->reason : "",
			             eg_nz(in->provider_template_id) };
		return eg_get(
		        call, eg_tenant(call),
		        pl_arena_printf(
		                call->arena,
		                "WITH t AS (UPDATE messaging.templates SET "
		                "status = $3, status_reason = $4, "
		                "provider_template_id = coalesce($5, "
		                "provider_template_id), updated_at = now() "
		                "WHERE "
		                "tenant_id = $1 AND id = $2 RETURNING *) "
		                "SELECT "
		                "%s FROM t",
		                EG_SQL_TEMPLATE_JSON),
		        5, p, &parley__messaging__v1__template__descriptor,
		        (void **)&out->template_, "template");
	}
}

// ---------------------------------------------------------------------------
// SendMessage with a template

typedef struct send_arg {
	const EG_M(SendMessageRequest) * in;
	const char *conv;
	char msg_id[40];
	char conv_id[40];
} send_arg;

static int
send_fn(pl_call *call, pl_db *db, void *arg)
{
	send_arg *x = arg;
	const EG_M(SendMessageRequest) *in = x->in;
	const char *tenant = eg_tenant(call);
	PGresult *r = NULL;
	json_t *meta, *ps;
	char *mj;
	int rv, n;

	if (call->idempotency_key) {
		const char *p[2] = { tenant, call->idempotency_key };
		if ((rv = eg_exec(call, db,
		                  "SELECT id, conversation_id FROM "
		                  "messaging.messages WHERE tenant_id = $1 AND "
		                  "idempotency_key = $2",
		                  2, p, &r, "read the message")) != PL_OK)
			return rv;
		if (PQntuples(r) == 1) {
			snprintf(x->msg_id, 40, "%s", PQgetvalue(r, 0, 0));
			snprintf(x->conv_id, 40, "%s", PQgetvalue(r, 0, 1));
			PQclear(r);
			return PL_OK;
		}
		PQclear(r);
	}
	{
		// The conversation (given, or the contact's open one) with
		// its contact, and the template.
		const char *p[4] = { tenant, eg_nz(x->conv),
			             eg_nz(in->contact_id), in->template_id };
		if ((rv = eg_exec(
		             call, db,
		             "SELECT cv.id, k.channel_id, k.opted_out_at IS "
		             "NOT "
		             "NULL, t.id IS NOT NULL, t.status, t.category, "
		             "t.parameter_count, t.name, t.language, "
		             "coalesce(t.components->'body'->>'text', ''), "
		             "t.channel_id = k.channel_id, k.id FROM "
		             "messaging.contacts k LEFT JOIN "
		             "messaging.conversations cv ON cv.tenant_id = "
		             "k.tenant_id AND cv.contact_id = k.id AND "
		             "($2::uuid IS NOT NULL AND cv.id = $2::uuid OR "
		             "$2::uuid IS NULL AND cv.status <> 'closed') LEFT "
		             "JOIN messaging.templates t ON t.tenant_id = $1 "
		             "AND "
		             "t.id = $4::uuid WHERE k.tenant_id = $1 AND "
		             "($3::uuid "
		             "IS NOT NULL AND k.id = $3::uuid OR $2::uuid IS "
		             "NOT "
		             "NULL AND k.id = (SELECT contact_id FROM "
		             "messaging.conversations WHERE tenant_id = $1 AND "
		             "id "
		             "= $2::uuid)) ORDER BY cv.created_at DESC NULLS "
		             "LAST "
		             "LIMIT 1",
		             4, p, &r, "read the conversation")) != PL_OK)
			return rv;
	}
	if (PQntuples(r) != 1 ||
	    (x->conv && strcmp(PQgetvalue(r, 0, 0), x->conv) != 0)) {
		PQclear(r);
		return pl_call_error(call, PL_NOT_FOUND, "%s not found",
		                     x->conv ? "conversation" : "contact");
	}
	if (PQgetvalue(r, 0, 3)[0] != 't') {
		PQclear(r);
		return pl_call_error(call, PL_NOT_FOUND,
		                     "template %s not found", in->template_id);
	}
	if (strcmp(PQgetvalue(r, 0, 4), "approved") != 0 ||
	    PQgetvalue(r, 0, 10)[0] != 't') {
		rv = pl_call_error(call, PL_FAILED_PRECONDITION,
		                   strcmp(PQgetvalue(r, 0, 4), "approved")
		                           ? "template %s is not approved"
		                           : "template %s belongs to another "
		                             "channel",
		                   in->template_id);
		PQclear(r);
		return rv;
	}
	n = atoi(PQgetvalue(r, 0, 6));
	if ((size_t)n != in->n_template_parameters) {
		rv = pl_call_violation(
		        call, "template_parameters",
		        "the template takes %d parameter%s, %zu given (%s)", n,
		        n == 1 ? "" : "s", in->n_template_parameters,
		        (size_t)n > in->n_template_parameters ? "missing"
		                                              : "extra");
		PQclear(r);
		return rv;
	}
	if (strcmp(PQgetvalue(r, 0, 5), "marketing") == 0 &&
	    PQgetvalue(r, 0, 2)[0] == 't') {
		PQclear(r);
		return pl_call_error(call, PL_FAILED_PRECONDITION,
		                     "the contact opted out of marketing "
		                     "messages");
	}
	if (PQgetisnull(r, 0, 0)) {
		// No open conversation: a template may start one.
		const char *p[4] = { tenant, NULL, PQgetvalue(r, 0, 11),
			             PQgetvalue(r, 0, 1) };
		pl_uuid7_str(x->conv_id);
		p[1] = x->conv_id;
		if ((rv = eg_exec(call, db,
		                  "INSERT INTO messaging.conversations "
		                  "(tenant_id, id, contact_id, channel_id) "
		                  "VALUES ($1, $2, $3, $4)",
		                  4, p, NULL, "open a conversation")) !=
		    PL_OK) {
			PQclear(r);
			return rv;
		}
	} else {
		snprintf(x->conv_id, 40, "%s", PQgetvalue(r, 0, 0));
	}
	meta = json_pack("{s:{s:s, s:s, s:s}}", "template", "id",
	                 in->template_id, "name", PQgetvalue(r, 0, 7),
	                 "language", PQgetvalue(r, 0, 8));
	ps = json_array();
	for (size_t i = 0; i < in->n_template_parameters; i++)
		json_array_append_new(ps,
		                      json_string(in->template_parameters[i]));
	json_object_set_new(json_object_get(meta, "template"), "parameters",
	                    ps);
	mj = json_dumps(meta, JSON_COMPACT);
	json_decref(meta);
	{
		const char *p[9] = { tenant,
			             NULL,
			             x->conv_id,
			             PQgetvalue(r, 0, 1),
			             PQgetvalue(r, 0, 9),
			             mj,
			             NULL,
			             eg_nz(call->principal->user_id),
			             call->idempotency_key };
		char did[40], *params_lit;
		// The rendered text, the parameters as a text[] literal.
		json_t *arr = json_array();
		for (size_t i = 0; i < in->n_template_parameters; i++)
			json_array_append_new(
			        arr, json_string(in->template_parameters[i]));
		params_lit = json_dumps(arr, JSON_COMPACT);
		json_decref(arr);
		pl_uuid7_str(x->msg_id);
		pl_uuid7_str(did);
		p[1] = x->msg_id;
		p[6] = params_lit;
		{
			const char *q[10];
			memcpy(q, p, sizeof(p));
			q[9] = did;
			rv = eg_exec(
			        call, db,
			        "WITH m AS (INSERT INTO messaging.messages "
			        "(tenant_id, id, conversation_id, channel_id, "
			        "direction, sender, sender_user_id, type, "
			        "text, "
			        "status, queued_at, metadata, idempotency_key) "
			        "VALUES ($1, $2, $3, $4, 'outbound', 'system', "
			        "$8, 'template', messaging.render_params($5, "
			        "ARRAY(SELECT "
			        "jsonb_array_elements_text($7::jsonb)"
			        ")), 'queued', now(), $6::jsonb, $9) RETURNING "
			        "id), d AS (INSERT INTO messaging.deliveries "
			        "(tenant_id, id, message_id, channel_id) "
			        "SELECT "
			        "$1, $10, id, $4 FROM m) UPDATE "
			        "messaging.conversations SET message_count = "
			        "message_count + 1, last_activity_at = now(), "
			        "updated_at = now() WHERE tenant_id = $1 AND "
			        "id "
			        "= $3",
			        10, q, NULL, "queue the template");
		}
		free(params_lit);
	}
	free(mj);
	PQclear(r);
	return rv;
}

int
engage_send_template(pl_call *call, const void *inp, void *outp)
{
	const EG_M(SendMessageRequest) *in = inp;
	EG_M(SendMessageResponse) *out = outp;
	send_arg x = { in, eg_nz(in->conversation_id), "", "" };
	int rv;

	if (x.conv == NULL && !eg_nz(in->contact_id))
		return pl_call_violation(call, "conversation_id",
		                         "give conversation_id or contact_id");
	if ((x.conv && !pl_uuid_valid(x.conv)) ||
	    (!x.conv && !pl_uuid_valid(in->contact_id)))
		return pl_call_error(call, PL_NOT_FOUND, "%s not found",
		                     x.conv ? "conversation" : "contact");
	if ((rv = eg_need_uuid(call, "template_id", in->template_id)) != PL_OK)
		return rv;
	if (in->n_template_parameters > EG_MAX_PARAMS)
		return pl_call_violation(call, "template_parameters",
		                         "at most %d parameters",
		                         EG_MAX_PARAMS);
	for (size_t i = 0; i < in->n_template_parameters; i++)
		if (in->template_parameters[i] == NULL ||
		    in->template_parameters[i][0] == '\0' ||
		    strlen(in->template_parameters[i]) > EG_MAX_PARAM_LEN)
			return pl_call_violation(
			        call, "template_parameters",
			        "parameter %zu must be 1 to %d characters",
			        i + 1, EG_MAX_PARAM_LEN);
	if ((rv = eg_tx(call, eg_tenant(call), send_fn, &x)) != PL_OK)
		return rv;
	messaging_kick(eg_svc(call));
	if ((rv = messaging_store_get_message(call, pl_call_db(call),
	                                      eg_tenant(call), x.msg_id,
	                                      &out->message)) != PL_OK)
		return rv;
	return messaging_store_get_conversation(call, pl_call_db(call),
	                                        eg_tenant(call), x.conv_id,
	                                        &out->conversation);
}
