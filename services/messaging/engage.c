// Messaging settings per tenant (opt-out/opt-in keywords and replies, the
// texts of confirmations) and the inbound hook that applies the keywords.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "pl/log.h"
#include "engage.h"

static const char *const default_opt_out[] = { "STOP", "UNSUBSCRIBE", "BAJA" };

static const char SETTINGS_JSON[] =
        "SELECT jsonb_strip_nulls(jsonb_build_object('opt_out_keywords', "
        "s.opt_out_keywords, 'opt_out_reply', s.opt_out_reply, "
        "'opt_in_keywords', s.opt_in_keywords, 'opt_in_reply', "
        "s.opt_in_reply, 'auto_handback_minutes', s.auto_handback_minutes, "
        "'reply_burst_window_ms', s.reply_burst_window_ms, "
        "'action_rejected_reply', s.action_rejected_reply, "
        "'order_confirmed_reply', s.order_confirmed_reply, 'updated_at', "
        "messaging.fmt_ts(s.updated_at)))::text FROM (SELECT * FROM "
        "messaging.settings WHERE tenant_id = $1 UNION ALL SELECT $1, "
        "'{}', '', '{}', '', 0, 0, '', '', NULL WHERE NOT EXISTS (SELECT 1 "
        "FROM messaging.settings WHERE tenant_id = $1)) s";

int
eg_get_settings(pl_call *call, const void *inp, void *outp)
{
	EG_M(GetMessagingSettingsResponse) *out = outp;
	const char *p[1] = { eg_tenant(call) };

	(void)inp;
	return eg_get(call, eg_tenant(call), SETTINGS_JSON, 1, p,
	              &parley__messaging__v1__messaging_settings__descriptor,
	              (void **)&out->settings, "settings");
}

static int
keywords(pl_call *call, const char *field, char **kw, size_t n,
         const char **out)
{
	json_t *arr = json_array();
	char *s;

	if (n > 20) {
		json_decref(arr);
		return pl_call_violation(call, field, "at most 20 keywords");
	}
	for (size_t i = 0; i < n; i++) {
		char up[65];
		size_t l = kw[i] ? strlen(kw[i]) : 0;
		if (l == 0 || l > 64) {
			json_decref(arr);
			return pl_call_violation(
			        call, field, "keywords are 1 to 64 characters");
		}
		for (size_t j = 0; j <= l; j++)
			up[j] = (kw[i][j] >= 'a' && kw[i][j] <= 'z')
			                ? (char)(kw[i][j] - 32)
			                : kw[i][j];
		json_array_append_new(arr, json_string(up));
	}
	s = json_dumps(arr, JSON_COMPACT);
	json_decref(arr);
	*out = pl_arena_strdup(call->arena, s ? s : "[]");
	free(s);
	return PL_OK;
}

int
eg_update_settings(pl_call *call, const void *inp, void *outp)
{
	const EG_M(UpdateMessagingSettingsRequest) *in = inp;
	EG_M(UpdateMessagingSettingsResponse) *out = outp;
	static const char *const names[] = {
		"opt_out_keywords",      "opt_out_reply",
		"opt_in_keywords",       "opt_in_reply",
		"auto_handback_minutes", "reply_burst_window_ms",
		"action_rejected_reply", "order_confirmed_reply"
	};
	const EG_M(MessagingSettings) *st = in->settings;
	const char *p[10] = { eg_tenant(call) };
	char n1[16], n2[16];
	int rv;

	if (st == NULL)
		return pl_call_violation(call, "settings", "is required");
	for (size_t i = 0; i < in->n_update_mask; i++) {
		bool ok = false;
		for (int f = 0; f < 8; f++)
			ok = ok || strcmp(in->update_mask[i], names[f]) == 0;
		if (!ok)
			return pl_call_violation(call, "update_mask",
			                         "unknown field \"%s\"",
			                         in->update_mask[i]);
	}
	for (int f = 0; f < 8; f++) {
		bool set = in->n_update_mask == 0;
		for (size_t i = 0; i < in->n_update_mask; i++)
			set = set || strcmp(in->update_mask[i], names[f]) == 0;
		if (!set)
			continue;
		switch (f) {
		case 0:
			rv = keywords(call, "settings.opt_out_keywords",
			              st->opt_out_keywords,
			              st->n_opt_out_keywords, &p[1]);
			break;
		case 2:
			rv = keywords(call, "settings.opt_in_keywords",
			              st->opt_in_keywords,
			              st->n_opt_in_keywords, &p[3]);
			break;
		case 4:
			if (st->auto_handback_minutes < 0 ||
			    st->auto_handback_minutes > 10080)
				return pl_call_violation(
				        call, "settings.auto_handback_minutes",
				        "must be 0 to 10080");
			snprintf(n1, sizeof(n1), "%d",
			         st->auto_handback_minutes);
			p[5] = n1;
			rv = PL_OK;
			break;
		case 5:
			if (st->reply_burst_window_ms < 0 ||
			    st->reply_burst_window_ms > 60000)
				return pl_call_violation(
				        call, "settings.reply_burst_window_ms",
				        "must be 0 to 60000");
			snprintf(n2, sizeof(n2), "%d",
			         st->reply_burst_window_ms);
			p[6] = n2;
			rv = PL_OK;
			break;
		default: {
			const char *v = f == 1   ? st->opt_out_reply
			                : f == 3 ? st->opt_in_reply
			                : f == 6 ? st->action_rejected_reply
			                         : st->order_confirmed_reply;
			if (v && strlen(v) > MSG_MAX_SEND_TEXT)
				return pl_call_violation(
				        call, names[f],
				        "is longer than 4096 characters");
			p[f == 1   ? 2
			  : f == 3 ? 4
			  : f == 6 ? 7
			           : 8] = v ? v : "";
			rv = PL_OK;
		}
		}
		if (rv != PL_OK)
			return rv;
	}
	{
		EG_M(GetMessagingSettingsResponse)
		g = PARLEY__MESSAGING__V1__GET_MESSAGING_SETTINGS_RESPONSE__INIT;
		rv = eg_get(
		        call, eg_tenant(call),
		        "WITH w AS (INSERT INTO messaging.settings AS s "
		        "(tenant_id, opt_out_keywords, opt_out_reply, "
		        "opt_in_keywords, opt_in_reply, auto_handback_minutes, "
		        "reply_burst_window_ms, action_rejected_reply, "
		        "order_confirmed_reply) VALUES ($1, "
		        "coalesce(ARRAY(SELECT "
		        "jsonb_array_elements_text($2::jsonb)), '{}'), "
		        "coalesce($3, ''), coalesce(ARRAY(SELECT "
		        "jsonb_array_elements_text($4::jsonb)), '{}'), "
		        "coalesce($5, ''), coalesce($6::int, 0), "
		        "coalesce($7::int, "
		        "0), coalesce($8, ''), coalesce($9, '')) ON CONFLICT "
		        "(tenant_id) DO UPDATE SET opt_out_keywords = CASE "
		        "WHEN $2 "
		        "IS NULL THEN s.opt_out_keywords ELSE "
		        "EXCLUDED.opt_out_keywords END, opt_out_reply = "
		        "coalesce($3, s.opt_out_reply), opt_in_keywords = CASE "
		        "WHEN $4 IS NULL THEN s.opt_in_keywords ELSE "
		        "EXCLUDED.opt_in_keywords END, opt_in_reply = "
		        "coalesce($5, "
		        "s.opt_in_reply), auto_handback_minutes = "
		        "coalesce($6::int, "
		        "s.auto_handback_minutes), reply_burst_window_ms = "
		        "coalesce($7::int, s.reply_burst_window_ms), "
		        "action_rejected_reply = coalesce($8, "
		        "s.action_rejected_reply), order_confirmed_reply = "
		        "coalesce($9, s.order_confirmed_reply), updated_at = "
		        "now() "
		        "RETURNING 1) SELECT '{}'::text FROM w",
		        9, p,
		        &parley__messaging__v1__messaging_settings__descriptor,
		        (void **)&out->settings, "settings");
		if (rv != PL_OK)
			return rv;
		if ((rv = eg_get_settings(call, NULL, &g)) != PL_OK)
			return rv;
		out->settings = g.settings;
	}
	return PL_OK;
}

// ---------------------------------------------------------------------------
// The inbound hook (inside the message's transaction)

int
engage_on_inbound(pl_db *db, const char *tenant_id, const char *contact_id,
                  const char *conversation_id, const char *channel_id,
                  const char *message_id, const char *text)
{
	const char *p[2] = { tenant_id, NULL };
	PGresult *r = NULL;
	char **out_kw = NULL, **in_kw = NULL, mid[40];
	size_t n_out = 0, n_in = 0;
	json_t *jo = NULL, *ji = NULL;
	bool opt_out, opt_in;
	const char *reply;
	int rv;

	(void)contact_id;
	if (text == NULL || text[0] == '\0' || strlen(text) > 64)
		return PL_OK; // keywords are whole, short messages
	if ((rv = eg_exec(NULL, db,
	                  "SELECT array_to_json(opt_out_keywords)::text, "
	                  "array_to_json(opt_in_keywords)::text, "
	                  "opt_out_reply, opt_in_reply FROM messaging.settings "
	                  "WHERE tenant_id = $1",
	                  1, p, &r, "read the settings")) != PL_OK)
		return rv;
	if (PQntuples(r) == 1) {
		jo = json_loads(PQgetvalue(r, 0, 0), 0, NULL);
		ji = json_loads(PQgetvalue(r, 0, 1), 0, NULL);
	}
	n_out = json_array_size(jo);
	n_in = json_array_size(ji);
	out_kw = calloc(n_out + 1, sizeof(char *));
	in_kw = calloc(n_in + 1, sizeof(char *));
	for (size_t i = 0; out_kw && i < n_out; i++)
		out_kw[i] = (char *)json_string_value(json_array_get(jo, i));
	for (size_t i = 0; in_kw && i < n_in; i++)
		in_kw[i] = (char *)json_string_value(json_array_get(ji, i));
	opt_out = n_out > 0 ? engage_keyword_match(
	                              text, (const char *const *)out_kw, n_out)
	                    : engage_keyword_match(text, default_opt_out, 3);
	opt_in = !opt_out && n_in > 0 &&
	         engage_keyword_match(text, (const char *const *)in_kw, n_in);
	reply = NULL;
	if (opt_out)
		reply = PQntuples(r) == 1 && PQgetvalue(r, 0, 2)[0]
		                ? PQgetvalue(r, 0, 2)
		                : "You have been unsubscribed and will not "
		                  "receive marketing messages. Reply START to "
		                  "subscribe again.";
	else if (opt_in)
		reply = PQntuples(r) == 1 && PQgetvalue(r, 0, 3)[0]
		                ? PQgetvalue(r, 0, 3)
		                : "You are subscribed again.";
	rv = PL_OK;
	if (opt_out || opt_in) {
		const char *q[4] = { tenant_id, conversation_id, message_id,
			             opt_out ? "t" : "f" };
		rv = eg_exec(
		        NULL, db,
		        "WITH k AS (UPDATE messaging.contacts SET opted_out_at "
		        "= "
		        "CASE WHEN $4 THEN coalesce(opted_out_at, now()) END, "
		        "updated_at = now() WHERE tenant_id = $1 AND id = "
		        "(SELECT "
		        "contact_id FROM messaging.conversations WHERE "
		        "tenant_id "
		        "= $1 AND id = $2)) UPDATE messaging.messages SET "
		        "reply_state = 'done', reply_outcome = 'opt_out' WHERE "
		        "tenant_id = $1 AND id = $3",
		        4, q, NULL, "apply the opt-out keyword");
		if (rv == PL_OK)
			rv = eg_queue(db, tenant_id, conversation_id,
			              channel_id, "text", reply, NULL, NULL,
			              mid);
		if (rv == PL_OK) {
			json_t *pj =
			        json_pack("{s:s, s:s}", "conversation_id",
			                  conversation_id, "keyword", text);
			char *pay = json_dumps(pj, JSON_COMPACT);
			rv = eg_event(db, tenant_id,
			              opt_out ? "contact.opted_out"
			                      : "contact.opted_in",
			              NULL, pay);
			free(pay);
			json_decref(pj);
		}
	}
	free(out_kw);
	free(in_kw);
	json_decref(jo);
	json_decref(ji);
	PQclear(r);
	return rv;
}
