// The reply engine's orchestration (issue 5): the latest published
// version, one reply at a time per session (an advisory lock on the
// session key held for the whole transaction), retrieval, the optional
// OpenAI-compatible call, handoff rules, lead capture, the record of the
// exchange, the agent.replied event, and billing's ai_tokens.
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "parley/billing/v1/billing.pb-c.h"
#include "pl/id.h"
#include "pl/json.h"
#include "pl/log.h"
#include "pl/wake.h"
#include "store.h"

// One reply: its call, and what compose() makes for the record.
typedef struct reply_tx {
	pl_call *call;
	agents_ctx *ctx;
	const ag_reply_req *in;
	ag_reply_resp *out;
	int64_t t0;
	char answer_id[PL_UUID_STRLEN + 1];
	char session_id[PL_UUID_STRLEN + 1];
	char user_id[PL_UUID_STRLEN + 1];
	char event_id[PL_UUID_STRLEN + 1];
	int turns;        // the session's bot turns after this reply
	json_t *cpatch;   // memory patch (last intent, contact name, language)
	json_t *lpatch;   // captured lead fields
	json_t *dims;     // the agent.replied event's dimensions
	json_t *payload;  // and payload
	char *reply_json; // the whole answer (only with a message_id), arena
} reply_tx;

static void
rec_clear(reply_tx *t)
{
	json_decref(t->cpatch);
	json_decref(t->lpatch);
	json_decref(t->dims);
	json_decref(t->payload);
	t->cpatch = t->lpatch = t->dims = t->payload = NULL;
}

int
agents_reply_check(pl_call *call, const ag_reply_req *in)
{
	size_t n = strlen(in->text);

	if (!pl_uuid_valid(in->tenant_id))
		return pl_call_violation(call, "tenant_id", "must be a UUID");
	if (!pl_uuid_valid(in->agent_id))
		return pl_call_violation(call, "agent_id", "must be a UUID");
	if (in->session_key[0] == '\0' || strlen(in->session_key) > 200)
		return pl_call_violation(call, "session_key",
		                         "must be 1 to 200 bytes");
	if (n == 0)
		return pl_call_violation(call, "text", "must not be empty");
	if (n > AG_MAX_TEXT)
		return pl_call_violation(
		        call, "text",
		        "must be shorter than 64 KB, got %zu bytes", n);
	if (!pl_utf8_valid(in->text, n))
		return pl_call_violation(call, "text", "must be valid UTF-8");
	if (strlen(in->message_id) > 200)
		return pl_call_violation(call, "message_id",
		                         "must be at most 200 bytes");
	if (in->n_history > AG_MAX_HISTORY)
		return pl_call_violation(call, "history",
		                         "must have at most %d turns",
		                         AG_MAX_HISTORY);
	for (size_t i = 0; i < in->n_history; i++) {
		if (strlen(in->history[i]->content) > AG_MAX_TEXT)
			return pl_call_violation(
			        call, "history",
			        "turn %zu must be shorter than 64 KB", i);
	}
	if (strlen(in->channel_id) > 200 || strlen(in->conversation_id) > 200 ||
	    strlen(in->website_domain) > 255 || strlen(in->client_ip) > 64)
		return pl_call_violation(call, "channel_id",
		                         "ids must be at most 200 bytes");
	return PL_OK;
}

// Calls the LLM; on success fills o and returns PL_OK, else returns a
// status with *err saying what failed (never a secret).
static int
llm_call(reply_tx *t, const agents_cfg *cfg, const uint8_t *ct, size_t ctlen,
         const char *kid, const agents_ctx_entry *ents, size_t n_ents,
         agents_llm_output *o, char **err)
{
	pl_arena *a = t->call->arena;
	agents_ctx *ctx = t->ctx;
	char *key = NULL, *url, *body, perr[160];
	const char *hdrs[3];
	pl_httpc_req req = { 0 };
	pl_httpc_resp resp = { 0 };
	agents_llm_input li = { 0 };
	size_t blen = strlen(cfg->llm->base_url), nh;
	int rv;
	int64_t timeout, left;

	if (ct != NULL) {
		if (!ctx->cred_key_set || strcmp(kid, ctx->cred_kid) != 0) {
			*err = pl_arena_printf(a,
			                       "the API key is sealed under "
			                       "key id \"%s\", which is not "
			                       "configured",
			                       kid);
			return PL_FAILED_PRECONDITION;
		}
		if (pl_unseal(a, ctx->cred_key, kid, ct, ctlen, &key) !=
		    PL_OK) {
			*err = "the API key could not be decrypted";
			return PL_DATA_LOSS;
		}
	}
	while (blen > 0 && cfg->llm->base_url[blen - 1] == '/')
		blen--;
	url = pl_arena_printf(a, "%.*s/chat/completions", (int)blen,
	                      cfg->llm->base_url);
	li.model = cfg->llm->model;
	li.temperature = cfg->llm->temperature;
	li.max_tokens = cfg->llm->max_tokens;
	li.system_prompt = cfg->system_prompt;
	li.language = cfg->language[0] ? cfg->language
	              : t->in->contact ? t->in->contact->language
	                               : "";
	li.entries = ents;
	li.n_entries = n_ents;
	nh = t->in->n_history > 20 ? 20 : t->in->n_history;
	li.history = t->in->history + (t->in->n_history - nh);
	li.n_history = nh;
	li.contact_name = t->in->contact ? t->in->contact->name : NULL;
	li.text = t->in->text;
	if ((body = agents_llm_request(&li)) == NULL) {
		*err = "could not build the request";
		return PL_INTERNAL;
	}
	nh = 0;
	hdrs[nh++] = "Content-Type: application/json";
	if (key != NULL && key[0] != '\0')
		hdrs[nh++] =
		        pl_arena_printf(a, "Authorization: Bearer %s", key);
	hdrs[nh] = NULL;
	timeout = cfg->llm->timeout_ms > 0 ? cfg->llm->timeout_ms
	                                   : ctx->llm_timeout_ms;
	left = pl_call_remaining_ms(t->call) - 250;
	if (left < timeout)
		timeout = left > 100 ? left : 100;
	req.method = "POST";
	req.url = url;
	req.headers = hdrs;
	req.body = body;
	req.body_len = strlen(body);
	req.connect_timeout_ms = 2000;
	req.timeout_ms = timeout;
	req.deadline_ms = timeout;
	req.max_response = (size_t)ctx->llm_max_response;
	req.attempts = 2;
	req.backoff_base_ms = 200;
	req.backoff_max_ms = 5000;
	rv = pl_httpc_do(pl_call_http(t->call), &req, &resp);
	free(body);
	if (rv == PL_DEADLINE_EXCEEDED) {
		*err = pl_arena_printf(a,
		                       "LLM provider timed out after %lld ms",
		                       (long long)timeout);
	} else if (rv == PL_RESOURCE_EXHAUSTED) {
		*err = pl_arena_printf(a, "LLM response larger than %lld bytes",
		                       (long long)ctx->llm_max_response);
	} else if (rv != PL_OK) {
		*err = "could not reach the LLM provider";
	} else if (resp.status == 429) {
		rv = PL_RESOURCE_EXHAUSTED;
		*err = pl_arena_printf(a,
		                       "LLM provider rate limited (HTTP 429, "
		                       "retry after %lld ms)",
		                       (long long)resp.retry_after_ms);
	} else if (resp.status < 200 || resp.status > 299) {
		rv = PL_UNAVAILABLE;
		*err = pl_arena_printf(a, "LLM provider answered HTTP %ld",
		                       resp.status);
	} else if ((rv = agents_llm_parse(a, resp.body, resp.len, o, perr,
	                                  sizeof(perr))) != PL_OK) {
		*err = pl_arena_printf(a, "bad LLM response: %s", perr);
	}
	pl_httpc_resp_fini(&resp);
	if (rv != PL_OK)
		pl_warn("LLM call for agent %s failed: %s", t->in->agent_id,
		        *err);
	return rv;
}

static int
replay(reply_tx *t, const char *json)
{
	ProtobufCMessage *m;
	char err[128];
	ag_reply_resp *r;

	if (pl_json_to_pb(json, strlen(json),
	                  &parley__agents__v1__reply_response__descriptor,
	                  t->call->arena, &m, err, sizeof(err)) != PL_OK)
		return pl_call_error(t->call, PL_INTERNAL,
		                     "could not replay the reply to message %s",
		                     t->in->message_id);
	r = (ag_reply_resp *)m;
	r->replayed = true;
	*t->out = *r;
	return PL_OK;
}

static const char *
reason_text(int r)
{
	switch (r) {
	case PARLEY__AGENTS__V1__HANDOFF_REASON__HANDOFF_REASON_KEYWORD:
		return "keyword";
	case PARLEY__AGENTS__V1__HANDOFF_REASON__HANDOFF_REASON_LOW_CONFIDENCE:
		return "low_confidence";
	case PARLEY__AGENTS__V1__HANDOFF_REASON__HANDOFF_REASON_MAX_TURNS:
		return "max_turns";
	case PARLEY__AGENTS__V1__HANDOFF_REASON__HANDOFF_REASON_TOOL:
		return "tool";
	case PARLEY__AGENTS__V1__HANDOFF_REASON__HANDOFF_REASON_NO_ANSWER:
		return "no_answer";
	default:
		return "";
	}
}

// Parses the bases' content versions ([[id, version], ...]).
static size_t
kb_versions(pl_arena *a, const char *text, char ***ids, int64_t **vers)
{
	json_t *j = json_loads(text, 0, NULL);
	size_t n = json_array_size(j), o = 0;

	*ids = pl_arena_alloc(a, sizeof(**ids) * (n + 1));
	*vers = pl_arena_alloc(a, sizeof(**vers) * (n + 1));
	for (size_t i = 0; *ids != NULL && *vers != NULL && i < n; i++) {
		json_t *e = json_array_get(j, i);
		const char *id = json_string_value(json_array_get(e, 0));

		if (id == NULL)
			continue;
		(*ids)[o] = pl_arena_strdup(a, id);
		(*vers)[o++] = json_integer_value(json_array_get(e, 1));
	}
	json_decref(j);
	return *ids != NULL && *vers != NULL ? o : 0;
}

agents_index *
agents_kb_index(agents_cache *c, pl_db *db, pl_call *call, const char *tenant,
                const char *kb, int64_t ver)
{
	agents_index *ix = agents_cache_get(c, tenant, kb, ver);
	PGresult *r;
	agents_ix_src *src;
	size_t n = 0;

	if (ix != NULL)
		return ix;
	agents_cache_build_lock(c);
	// Another worker may have built it while this one waited.
	if ((ix = agents_cache_get(c, tenant, kb, ver)) != NULL) {
		agents_cache_build_unlock(c);
		return ix;
	}
	r = agents_store_kb_entries(db, tenant, kb);
	if (!agents_store_ok(r)) {
		agents_cache_build_unlock(c);
		pl_db_call_error(call, r, "load the knowledge base");
		PQclear(r);
		return NULL;
	}
	src = malloc(sizeof(*src) * ((size_t)PQntuples(r) + 1));
	for (int i = 0; src != NULL && i < PQntuples(r); i++) {
		if (PQgetisnull(r, i, 1))
			continue;
		src[n++] = (agents_ix_src){
			PQgetvalue(r, i, 1), PQgetvalue(r, i, 2),
			PQgetvalue(r, i, 3), PQgetvalue(r, i, 4),
			PQgetvalue(r, i, 5), PQgetvalue(r, i, 6),
			PQgetvalue(r, i, 7),
		};
	}
	// The version read with the entries (one snapshot), which may be
	// newer than the one the reply saw.
	if (src != NULL)
		ix = agents_index_build(
		        src, n,
		        PQntuples(r) > 0 ? atoll(PQgetvalue(r, 0, 0)) : ver);
	free(src);
	PQclear(r);
	if (ix == NULL) {
		agents_cache_build_unlock(c);
		pl_call_error(call, PL_RESOURCE_EXHAUSTED,
		              "could not index knowledge base %s", kb);
		return NULL;
	}
	agents_cache_put(c, tenant, kb, ix);
	agents_cache_build_unlock(c);
	pl_info("indexed knowledge base %s of tenant %s: %zu entries, "
	        "version %lld",
	        kb, tenant, n, (long long)agents_index_version(ix));
	return ix;
}

static int
cmp_hit(const void *x, const void *y)
{
	const agents_ix_hit *a = x, *b = y;

	if (a->score != b->score)
		return a->score > b->score ? -1 : 1;
	return strcmp(a->id, b->id);
}

// Retrieval over the agent's bases: the best k entries (strings copied
// into the call's arena), best first. Returns a status (error set).
static int
retrieve(reply_tx *t, pl_db *db, const char *kbv, const char *norm, size_t k,
         agents_ix_hit **hits, size_t *n)
{
	pl_arena *a = t->call->arena;
	char **ids;
	int64_t *vers;
	size_t nkb = kb_versions(a, kbv, &ids, &vers), o = 0;
	agents_ix_hit *all = pl_arena_alloc(a, sizeof(*all) * (nkb * k + 1));

	*n = 0;
	*hits = all;
	if (all == NULL)
		return pl_call_error(t->call, PL_RESOURCE_EXHAUSTED,
		                     "out of memory");
	for (size_t i = 0; i < nkb; i++) {
		agents_index *ix =
		        agents_kb_index(t->ctx->cache, db, t->call,
		                        t->in->tenant_id, ids[i], vers[i]);
		size_t m;

		if (ix == NULL)
			return t->call->code != PL_OK ? t->call->code
			                              : PL_INTERNAL;
		m = agents_index_search(ix, a, norm, k, all + o);
		for (size_t j = 0; j < m; j++) {
			all[o + j].id = pl_arena_strdup(a, all[o + j].id);
			all[o + j].question =
			        pl_arena_strdup(a, all[o + j].question);
			all[o + j].answer =
			        pl_arena_strdup(a, all[o + j].answer);
			all[o + j].intent =
			        pl_arena_strdup(a, all[o + j].intent);
		}
		o += m;
		agents_index_release(ix);
	}
	if (nkb > 1)
		qsort(all, o, sizeof(*all), cmp_hit);
	*n = o < k ? o : k;
	return PL_OK;
}

// The answer to t's text with configuration cfg (version `version` of the
// agent), for session session_id with bot_turns bot turns so far:
// retrieval, the LLM when configured, the handoff rules, lead capture;
// fills t->out and the record (ids, memory patches, the event). Returns a
// status (the call's error set).
static int
compose(reply_tx *t, pl_db *db, const agents_cfg *cfg, const uint8_t *ct,
        size_t ctlen, const char *kid, const char *kbv, int version,
        const char *session_id, int bot_turns)
{
	pl_call *call = t->call;
	pl_arena *a = call->arena;
	const ag_reply_req *in = t->in;
	ag_reply_resp *out = t->out;
	const char *kw, *fallback;
	size_t nres = 0;
	int rv, k;
	agents_found_lead lead;
	agents_ctx_entry *ents = NULL;
	agents_ix_hit *hits = NULL;
	double best = 0;
	char *llm_err = NULL, *norm;

	// Reset what an earlier attempt may have set.
	parley__agents__v1__reply_response__init(out);
	rec_clear(t);
	t->reply_json = NULL;
	snprintf(t->session_id, sizeof(t->session_id), "%s", session_id);

	// Retrieval: always, since it is also the LLM's context and fallback.
	norm = agents_text_normalize(a, in->text);
	k = cfg->llm->context_entries > 0 ? cfg->llm->context_entries : 5;
	if (cfg->engine != AG_ENGINE_OPENAI)
		k = 1;
	if ((rv = retrieve(t, db, kbv, norm, (size_t)k, &hits, &nres)) != PL_OK)
		return rv;
	if (nres > 0)
		best = hits[0].score;
	fallback = cfg->fallback_message[0]
	                   ? cfg->fallback_message
	                   : agents_default_fallback(cfg->language);
	out->engine = AG_ENGINE_RETRIEVAL;
	out->confidence = best;
	if (nres > 0 && best >= t->ctx->min_score) {
		out->reply_text = (char *)hits[0].answer;
		out->intent = (char *)hits[0].intent;
		out->knowledge_entry_id = (char *)hits[0].id;
	} else {
		out->reply_text = (char *)fallback;
		out->fallback = true;
	}

	agents_lead_find(a, in->text, &lead);
	kw = agents_handoff_keyword(a, norm, cfg->keywords, cfg->n_keywords);

	if (cfg->engine == AG_ENGINE_OPENAI && kw == NULL) {
		agents_llm_output o;

		ents = pl_arena_zalloc(a, sizeof(*ents) * (nres + 1));
		for (size_t i = 0; ents != NULL && i < nres; i++) {
			ents[i].question = hits[i].question;
			ents[i].answer = hits[i].answer;
		}
		if (llm_call(t, cfg, ct, ctlen, kid, ents, ents ? nres : 0, &o,
		             &llm_err) == PL_OK) {
			out->model = o.model ? o.model : cfg->llm->model;
			out->tokens_in = o.tokens_in;
			out->tokens_out = o.tokens_out;
			if (o.content != NULL) {
				out->reply_text = o.content;
				out->engine = AG_ENGINE_OPENAI;
				out->fallback = false;
				out->knowledge_entry_id = "";
				out->confidence = best > 0.8 ? best : 0.8;
			} else {
				llm_err = pl_arena_printf(
				        a, "LLM answered no text%s%s",
				        o.ignored_tools ? "; unknown tools: "
				                        : "",
				        o.ignored_tools ? o.ignored_tools : "");
			}
			if (o.handoff) {
				out->handoff = true;
				out->handoff_reason =
				        PARLEY__AGENTS__V1__HANDOFF_REASON__HANDOFF_REASON_TOOL;
				out->handoff_detail = o.handoff_reason
				                              ? o.handoff_reason
				                              : "";
			}
			if (o.lead != NULL) {
				if (o.lead->name[0])
					lead.name = o.lead->name;
				if (o.lead->email[0])
					lead.email = o.lead->email;
				if (o.lead->phone[0])
					lead.phone = o.lead->phone;
				out->captured = o.lead;
			}
			out->actions = o.actions;
			out->n_actions = o.n_actions;
		}
		if (llm_err != NULL)
			out->error = llm_err;
	}

	// Handoff rules, first match wins.
	if (kw != NULL) {
		out->handoff = true;
		out->handoff_reason =
		        PARLEY__AGENTS__V1__HANDOFF_REASON__HANDOFF_REASON_KEYWORD;
		out->handoff_detail = (char *)kw;
		out->reply_text = (char *)fallback;
		out->fallback = true;
		out->intent = "handoff";
		out->knowledge_entry_id = "";
	} else if (out->handoff) {
		// the LLM's handoff_to_human
	} else if (cfg->threshold > 0 && out->engine == AG_ENGINE_RETRIEVAL &&
	           best < cfg->threshold) {
		out->handoff = true;
		out->handoff_reason =
		        PARLEY__AGENTS__V1__HANDOFF_REASON__HANDOFF_REASON_LOW_CONFIDENCE;
		out->handoff_detail = pl_arena_printf(a,
		                                      "confidence %.2f below "
		                                      "%.2f",
		                                      best, cfg->threshold);
	} else if (cfg->max_bot_turns > 0 && bot_turns >= cfg->max_bot_turns) {
		out->handoff = true;
		out->handoff_reason =
		        PARLEY__AGENTS__V1__HANDOFF_REASON__HANDOFF_REASON_MAX_TURNS;
		out->handoff_detail =
		        pl_arena_printf(a, "%d bot turns", bot_turns);
	} else if (out->reply_text[0] == '\0') {
		out->handoff = true;
		out->handoff_reason =
		        PARLEY__AGENTS__V1__HANDOFF_REASON__HANDOFF_REASON_NO_ANSWER;
	}

	if (lead.name || lead.email || lead.phone) {
		ag_lead *l = out->captured;
		if (l == NULL) {
			l = pl_arena_zalloc(a, sizeof(*l));
			parley__agents__v1__captured_lead__init(l);
			out->captured = l;
		}
		if (lead.name)
			l->name = lead.name;
		if (lead.email)
			l->email = lead.email;
		if (lead.phone)
			l->phone = lead.phone;
	}
	out->session_id = pl_arena_strdup(a, session_id);
	out->agent_version = version;
	out->latency_ms = (int32_t)((pl_now_ns() - t->t0) / 1000000);
	t->turns = out->handoff ? 0 : bot_turns + 1;

	// Memory: last intent, contact name and language, captured fields.
	t->cpatch = json_object();
	if (out->intent[0])
		json_object_set_new(t->cpatch, "last_intent",
		                    json_string(out->intent));
	if (in->contact && in->contact->name[0])
		json_object_set_new(t->cpatch, "contact_name",
		                    json_string(in->contact->name));
	if (in->contact && in->contact->language[0])
		json_object_set_new(t->cpatch, "language",
		                    json_string(in->contact->language));
	t->lpatch = json_object();
	if (out->captured && out->captured->name[0])
		json_object_set_new(t->lpatch, "name",
		                    json_string(out->captured->name));
	if (out->captured && out->captured->email[0])
		json_object_set_new(t->lpatch, "email",
		                    json_string(out->captured->email));
	if (out->captured && out->captured->phone[0])
		json_object_set_new(t->lpatch, "phone",
		                    json_string(out->captured->phone));

	t->payload = json_pack(
	        "{s:i, s:i, s:i, s:s, s:s, s:s, s:f, s:b, s:s, s:b, s:i}",
	        "tokens_in", out->tokens_in, "tokens_out", out->tokens_out,
	        "latency_ms", out->latency_ms, "engine",
	        agents_engine_text(out->engine), "model", out->model, "intent",
	        out->intent, "confidence", out->confidence, "handoff",
	        out->handoff, "handoff_reason",
	        reason_text(out->handoff_reason), "fallback", out->fallback,
	        "version", version);
	if (t->payload != NULL && out->error[0])
		json_object_set_new(t->payload, "llm_error",
		                    json_string(out->error));
	t->dims = json_pack("{s:s}", "agent_id", in->agent_id);
	if (t->dims != NULL && in->channel_id[0])
		json_object_set_new(t->dims, "channel_id",
		                    json_string(in->channel_id));
	if (t->dims != NULL && in->conversation_id[0])
		json_object_set_new(t->dims, "conversation_id",
		                    json_string(in->conversation_id));
	if (t->dims != NULL && in->contact && in->contact->id[0])
		json_object_set_new(t->dims, "contact_id",
		                    json_string(in->contact->id));
	if (t->cpatch == NULL || t->lpatch == NULL || t->payload == NULL ||
	    t->dims == NULL)
		return pl_call_error(call, PL_RESOURCE_EXHAUSTED,
		                     "out of memory");
	// The whole answer is kept only for replays, which need a message_id.
	if (in->message_id[0]) {
		char *j = pl_json_dump_pb(&out->base, NULL);

		t->reply_json = j ? pl_arena_strdup(a, j) : NULL;
		free(j);
		if (t->reply_json == NULL)
			return pl_call_error(call, PL_RESOURCE_EXHAUSTED,
			                     "out of memory");
	}
	// Ids in the order of the exchange: a session's messages sort by id.
	pl_uuid7_str(t->user_id);
	pl_uuid7_str(t->answer_id);
	pl_uuid7_str(t->event_id);
	return PL_OK;
}

static char *
dump_keep(pl_arena *a, const json_t *j)
{
	char *s = json_dumps(j, JSON_COMPACT), *r;

	if (s == NULL)
		return NULL;
	r = pl_arena_strdup(a, s);
	free(s);
	return r;
}

// ---------------------------------------------------------------------------
// One reply alone (LLM agents, and every reply when groups are off): its
// own transaction, opened by agents_store_reply_open and committed by
// agents_store_reply_commit (two round trips in all, pipelined with BEGIN
// and COMMIT); not pl_db_tx, which would add three more.
static int
reply_fn(pl_db *db, reply_tx *t)
{
	pl_call *call = t->call;
	pl_arena *a = call->arena;
	const ag_reply_req *in = t->in;
	ag_reply_resp *out = t->out;
	const char *tenant = in->tenant_id;
	PGresult *r = NULL;
	agents_cfg cfg;
	char session_id[PL_UUID_STRLEN + 1];
	char idle[32], *kbv, *kid;
	const char *p[27], *bp[11];
	const uint8_t *ct = NULL;
	size_t ctlen = 0;
	int bot_turns, rv, version;

	parley__agents__v1__reply_response__init(out);
	snprintf(idle, sizeof(idle), "%lld",
	         (long long)t->ctx->session_idle_ms);
	pl_uuid7_str(session_id);
	bp[0] = tenant;
	bp[1] = in->agent_id;
	bp[2] = in->session_key;
	bp[3] = in->message_id[0] ? in->message_id : NULL;
	bp[4] = idle;
	bp[5] = session_id;
	bp[6] = in->channel_id;
	bp[7] = in->conversation_id;
	bp[8] = in->contact ? in->contact->id : "";
	bp[9] = in->website_domain;
	bp[10] = in->client_ip;
	// BEGIN and step one in one round trip; the transaction stays open
	// (with the session lock) until step two and COMMIT, also one round
	// trip. agents_reply ends it on every other way out.
	r = agents_store_reply_open(db, bp);
	if (r == NULL) {
		rv = pl_call_error(call, PL_UNAVAILABLE,
		                   "could not reach the database");
		goto out_clear;
	}
	if (!agents_store_ok(r)) {
		rv = pl_db_call_error(call, r, "load the agent");
		goto out_clear;
	}
	if (PQntuples(r) == 0) {
		rv = pl_call_error(call, PL_NOT_FOUND, "agent %s not found",
		                   in->agent_id);
		goto out_clear;
	}
	if (strcmp(PQgetvalue(r, 0, 0), "archived") == 0) {
		rv = pl_call_error(call, PL_FAILED_PRECONDITION,
		                   "agent %s is archived", in->agent_id);
		goto out_clear;
	}
	if (PQgetisnull(r, 0, 2) || PQntuples(r) != 2) {
		rv = pl_call_error(call, PL_FAILED_PRECONDITION,
		                   "agent %s has no published version",
		                   in->agent_id);
		goto out_clear;
	}
	if (!PQgetisnull(r, 1, 26)) {
		rv = replay(t, PQgetvalue(r, 1, 26));
		goto out_clear;
	}
	version = atoi(PQgetvalue(r, 0, 1));
	agents_store_cfg_read(a, r, 0, 3, &cfg);
	ct = agents_store_bytea(a, r, 0, 23, &ctlen);
	kid = agents_store_str(a, r, 0, 24);
	kbv = agents_store_str(a, r, 0, 25);
	snprintf(session_id, sizeof(session_id), "%s", PQgetvalue(r, 1, 27));
	bot_turns = atoi(PQgetvalue(r, 1, 28));
	if ((rv = compose(t, db, &cfg, ct, ctlen, kid, kbv, version, session_id,
	                  bot_turns)) != PL_OK)
		goto out_clear;
	{
		char ti[16], to[16], lat[16], conf[32], turns[16], touch[32];
		int64_t tm = t->ctx->session_idle_ms / 10;

		snprintf(touch, sizeof(touch), "%lld",
		         (long long)(tm < 60000 ? tm : 60000));
		snprintf(ti, sizeof(ti), "%d", out->tokens_in);
		snprintf(to, sizeof(to), "%d", out->tokens_out);
		snprintf(lat, sizeof(lat), "%d", out->latency_ms);
		snprintf(conf, sizeof(conf), "%.6f", out->confidence);
		snprintf(turns, sizeof(turns), "%d", t->turns);
		p[0] = tenant;
		p[1] = t->session_id;
		p[2] = t->user_id;
		p[3] = in->text;
		p[4] = t->answer_id;
		p[5] = out->reply_text;
		p[6] = ti;
		p[7] = to;
		p[8] = lat;
		p[9] = out->model;
		p[10] = agents_engine_text(out->engine);
		p[11] = out->intent;
		p[12] = conf;
		p[13] = in->message_id[0] ? in->message_id : NULL;
		p[14] = t->reply_json;
		p[15] = out->error;
		p[16] = out->knowledge_entry_id[0] ? out->knowledge_entry_id
		                                   : NULL;
		p[17] = turns;
		p[18] = dump_keep(a, t->cpatch);
		p[19] = dump_keep(a, t->lpatch);
		p[20] = in->agent_id;
		// The agent.replied event for analytics (the outbox row
		// pl_outbox_add would write), in the same statement.
		p[21] = t->event_id;
		p[22] = "analytics";
		p[23] = "agent.replied";
		p[24] = dump_keep(a, t->dims);
		p[25] = dump_keep(a, t->payload);
		p[26] = touch;
		if (!agents_store_reply_in_tx(db)) {
			rv = pl_call_error(call, PL_UNAVAILABLE,
			                   "the database connection was lost");
			goto out_clear;
		}
		PQclear(r);
		if ((rv = agents_store_reply_commit(db, p, &r)) != PL_OK) {
			if (r != NULL)
				rv = pl_db_call_error(call, r,
				                      "record the reply");
			else
				rv = pl_call_error(
				        call, rv, "could not record the reply");
			goto out_clear;
		}
	}
	rv = PL_OK;
out_clear:
	PQclear(r);
	rec_clear(t);
	return rv;
}

static void
reserve_tokens(reply_tx *t)
{
	Parley__Billing__V1__ReserveUsageRequest req =
	        PARLEY__BILLING__V1__RESERVE_USAGE_REQUEST__INIT;
	pl_rpc_opts o = { 0 };
	pl_rpc_result res = { 0 };
	void *out = NULL;
	int64_t n = (int64_t)t->out->tokens_in + t->out->tokens_out;

	if (t->ctx->billing == NULL || n <= 0 || t->out->replayed)
		return;
	req.tenant_id = (char *)t->in->tenant_id;
	req.metric = PARLEY__BILLING__V1__METRIC__METRIC_AI_TOKENS;
	req.amount = n;
	req.idempotency_key = pl_arena_printf(t->call->arena, "agents-reply-%s",
	                                      t->answer_id);
	o.parent = t->call;
	o.idempotency_key = req.idempotency_key;
	if (pl_rpc_call(
	            t->ctx->billing, "/parley.billing.v1.Billing/ReserveUsage",
	            &req.base,
	            &parley__billing__v1__reserve_usage_response__descriptor,
	            &out, t->call->arena, &o, &res) != PL_OK)
		pl_warn("could not reserve %lld ai_tokens for tenant %s: %s %s",
		        (long long)n, t->in->tenant_id,
		        pl_status_name(res.code),
		        res.message ? res.message : "");
}

// A reply alone, its transaction ended on every way out.
static int
reply_alone(pl_db *db, reply_tx *t)
{
	int rv = reply_fn(db, t);

	agents_store_reply_end(db); // ROLLBACK unless committed
	if (rv != PL_OK && t->call->code == PL_OK)
		return pl_call_error(t->call, rv, "could not reply");
	return rv;
}

// ---------------------------------------------------------------------------
// Groups (group commit). The replies waiting together are answered in one
// transaction by one worker: BEGIN + agents.reply_begin_batch (one round
// trip: agents, locks, replays, sessions for all), the engine for each in
// arrival order, then agents.reply_finish_batch + COMMIT (one round trip:
// every row of every reply). Each caller is answered after that COMMIT.

#define GROUP_MAX 64

#define MEM_AGENT_BUCKETS   256
#define MEM_AGENTS_MAX      1024
#define MEM_SESSION_BUCKETS 4096

enum { IT_QUEUED, IT_TAKEN, IT_DONE };

typedef struct group_item {
	reply_tx t;
	int rv;
	bool alone;              // an LLM agent: answered alone by its caller
	int state;               // IT_*, under the queue's mutex
	int64_t done_ns;         // when its group was answered
	pl_wake wake;            // posted when done, or when to lead
	struct group_item *next; // queue
	int arow, srow, rrow;    // rows of the begin result (-1: none)
	int dup_of;              // an earlier item with the same message id
	bool composed;           // in the finish
	struct agent_mem *am;    // one round trip: the agent remembered
	char sid[PL_UUID_STRLEN + 1]; // and the session: its id,
	int bot_turns;                // bot turns
	long long mc;                 // and message count
	bool fresh; // a session named here, created by the commit (013)
} group_item;

// ---------------------------------------------------------------------------
// One round trip. A group's first round trip (reply_begin_batch) tells
// the replica what it needs to answer again in the same sessions: the
// agent's published configuration ('a' row) and, per session key, the
// active session, its bot turns and its message count. The replica
// remembers them; a group whose every reply is remembered is composed
// from memory and written by agents.reply_commit_batch alone (one
// statement, its own transaction), which checks under the session locks
// that all of it still holds (migration 006). What no longer holds (a
// new version, a knowledge change, another reply in the session, from
// this replica or another, a session ended or expired, a replay) is
// forgotten and answered again by the two round trips. A reply with no
// history (a conversation's first) of a remembered agent goes the same
// way in a session named here, which the commit creates unless one of
// its key is active by then (migration 013).

// A retrieval agent's 'a' row, shared by the groups using it.
typedef struct agent_mem {
	struct agent_mem *next;
	int refs; // the table's and each group's, under the queue's cmu
	char tenant[PL_UUID_STRLEN + 1], agent[PL_UUID_STRLEN + 1];
	PGresult *row; // reply_begin_batch's columns, row 0
	int version;
	long long kn, ks; // knowledge bases, sum of their content versions
} agent_mem;

typedef struct sess_mem {
	struct sess_mem *next;
	char tenant[PL_UUID_STRLEN + 1], id[PL_UUID_STRLEN + 1];
	int bot_turns;
	long long mc;
	char key[]; // the session key
} sess_mem;

struct agents_replyq {
	pthread_mutex_t mu;
	group_item *head, *tail;
	int running; // groups being answered
	int max;     // most replies per group; 0: off
	int at_once; // groups answered at once (while one waits for
	             // PostgreSQL, another runs the engine)
	agents_replyq_stats st;
	// The replica's memory (see "One round trip"), under cmu.
	pthread_mutex_t cmu;
	size_t cap; // sessions remembered at most; 0: off
	size_t nagents, nsessions;
	struct agent_mem *agents[MEM_AGENT_BUCKETS];
	struct sess_mem *sessions[MEM_SESSION_BUCKETS];
};

static uint32_t
mem_hash(const char *tenant, const char *key)
{
	uint32_t h = 2166136261u;

	for (const char *p = tenant; *p; p++)
		h = (h ^ (uint8_t)*p) * 16777619u;
	h = (h ^ '/') * 16777619u;
	for (const char *p = key; *p; p++)
		h = (h ^ (uint8_t)*p) * 16777619u;
	return h;
}

static void
agent_unref_locked(agent_mem *m)
{
	if (m != NULL && --m->refs == 0) {
		PQclear(m->row);
		free(m);
	}
}

// Forgets everything (cmu held).
static void
mem_flush(agents_replyq *q)
{
	for (size_t b = 0; b < MEM_AGENT_BUCKETS; b++) {
		for (agent_mem *m = q->agents[b], *n; m != NULL; m = n) {
			n = m->next;
			agent_unref_locked(m);
		}
		q->agents[b] = NULL;
	}
	for (size_t b = 0; b < MEM_SESSION_BUCKETS; b++) {
		for (sess_mem *m = q->sessions[b], *n; m != NULL; m = n) {
			n = m->next;
			free(m);
		}
		q->sessions[b] = NULL;
	}
	q->nagents = q->nsessions = 0;
}

static agent_mem **
agent_slot(agents_replyq *q, const char *tenant, const char *agent)
{
	agent_mem **p = &q->agents[mem_hash(tenant, agent) % MEM_AGENT_BUCKETS];

	while (*p != NULL && (strcmp((*p)->agent, agent) != 0 ||
	                      strcmp((*p)->tenant, tenant) != 0))
		p = &(*p)->next;
	return p;
}

static sess_mem **
sess_slot(agents_replyq *q, const char *tenant, const char *key)
{
	sess_mem **p =
	        &q->sessions[mem_hash(tenant, key) % MEM_SESSION_BUCKETS];

	while (*p != NULL && (strcmp((*p)->key, key) != 0 ||
	                      strcmp((*p)->tenant, tenant) != 0))
		p = &(*p)->next;
	return p;
}

// The agent remembered, with a reference the caller drops with
// agent_unref; NULL when not remembered.
static agent_mem *
agent_get(agents_replyq *q, const char *tenant, const char *agent)
{
	agent_mem *m;

	pthread_mutex_lock(&q->cmu);
	if ((m = *agent_slot(q, tenant, agent)) != NULL)
		m->refs++;
	pthread_mutex_unlock(&q->cmu);
	return m;
}

static void
agent_unref(agents_replyq *q, agent_mem *m)
{
	pthread_mutex_lock(&q->cmu);
	agent_unref_locked(m);
	pthread_mutex_unlock(&q->cmu);
}

static void
agent_forget(agents_replyq *q, const char *tenant, const char *agent)
{
	agent_mem **p, *m;

	pthread_mutex_lock(&q->cmu);
	if ((m = *(p = agent_slot(q, tenant, agent))) != NULL) {
		*p = m->next;
		q->nagents--;
		agent_unref_locked(m);
	}
	pthread_mutex_unlock(&q->cmu);
}

// Remembers row `row` of a reply_begin_batch result as the agent's
// (a retrieval agent that answers), unless it is remembered as it is.
static void
agent_put(agents_replyq *q, pl_arena *a, const char *tenant, const char *agent,
          const PGresult *r, int row)
{
	agent_mem *m, **p;
	int version = atoi(PQgetvalue(r, row, 3));
	char **ids;
	int64_t *vers;
	size_t nkb = kb_versions(a, PQgetvalue(r, row, 27), &ids, &vers);
	long long ks = 0;
	bool ok;

	for (size_t i = 0; i < nkb; i++)
		ks += vers[i];
	pthread_mutex_lock(&q->cmu);
	m = q->cap > 0 ? *agent_slot(q, tenant, agent) : NULL;
	ok = q->cap > 0 && (m == NULL || m->version != version ||
	                    m->kn != (long long)nkb || m->ks != ks);
	pthread_mutex_unlock(&q->cmu);
	if (!ok || (m = calloc(1, sizeof(*m))) == NULL)
		return;
	m->refs = 1;
	snprintf(m->tenant, sizeof(m->tenant), "%s", tenant);
	snprintf(m->agent, sizeof(m->agent), "%s", agent);
	m->version = version;
	m->kn = (long long)nkb;
	m->ks = ks;
	// A one-row copy: the columns' names and types, then row's values.
	m->row = PQcopyResult(r, PG_COPYRES_ATTRS);
	for (int c = 0; ok && m->row != NULL && c < PQnfields(r); c++)
		ok = PQsetvalue(
		        m->row, 0, c,
		        PQgetisnull(r, row, c) ? NULL : PQgetvalue(r, row, c),
		        PQgetisnull(r, row, c) ? -1 : PQgetlength(r, row, c));
	if (!ok || m->row == NULL) {
		PQclear(m->row);
		free(m);
		return;
	}
	pthread_mutex_lock(&q->cmu);
	if (q->nagents >= MEM_AGENTS_MAX)
		mem_flush(q);
	if (q->cap > 0) {
		agent_mem *old = *(p = agent_slot(q, tenant, agent));

		if (old != NULL) {
			*p = old->next;
			q->nagents--;
			agent_unref_locked(old);
		}
		p = &q->agents[mem_hash(tenant, agent) % MEM_AGENT_BUCKETS];
		m->next = *p;
		*p = m;
		q->nagents++;
		m = NULL;
	}
	pthread_mutex_unlock(&q->cmu);
	if (m != NULL) {
		PQclear(m->row);
		free(m);
	}
}

// The session remembered for (tenant, key) into g; false when none.
static bool
sess_get(agents_replyq *q, const char *tenant, const char *key, group_item *g)
{
	sess_mem *m;

	pthread_mutex_lock(&q->cmu);
	if ((m = *sess_slot(q, tenant, key)) != NULL) {
		memcpy(g->sid, m->id, sizeof(g->sid));
		g->bot_turns = m->bot_turns;
		g->mc = m->mc;
	}
	pthread_mutex_unlock(&q->cmu);
	return m != NULL;
}

static void
sess_forget(agents_replyq *q, const char *tenant, const char *key)
{
	sess_mem **p, *m;

	pthread_mutex_lock(&q->cmu);
	if ((m = *(p = sess_slot(q, tenant, key))) != NULL) {
		*p = m->next;
		q->nsessions--;
		free(m);
	}
	pthread_mutex_unlock(&q->cmu);
}

// Remembers a session after a reply of this replica committed in it (its
// message count then mc); an older count of the same session is kept
// out (two groups committing in either order).
static void
sess_put(agents_replyq *q, const char *tenant, const char *key, const char *id,
         int bot_turns, long long mc)
{
	size_t kl = strlen(key);
	sess_mem **p, *m;

	pthread_mutex_lock(&q->cmu);
	if (q->cap == 0) {
		pthread_mutex_unlock(&q->cmu);
		return;
	}
	if ((m = *(p = sess_slot(q, tenant, key))) != NULL) {
		if (strcmp(m->id, id) != 0 || m->mc < mc) {
			snprintf(m->id, sizeof(m->id), "%s", id);
			m->bot_turns = bot_turns;
			m->mc = mc;
		}
		pthread_mutex_unlock(&q->cmu);
		return;
	}
	if (q->nsessions >= q->cap)
		mem_flush(q);
	if ((m = malloc(sizeof(*m) + kl + 1)) != NULL) {
		snprintf(m->tenant, sizeof(m->tenant), "%s", tenant);
		snprintf(m->id, sizeof(m->id), "%s", id);
		m->bot_turns = bot_turns;
		m->mc = mc;
		memcpy(m->key, key, kl + 1);
		p = &q->sessions[mem_hash(tenant, key) % MEM_SESSION_BUCKETS];
		m->next = *p;
		*p = m;
		q->nsessions++;
	}
	pthread_mutex_unlock(&q->cmu);
}

agents_replyq *
agents_replyq_new(int max_group, int at_once, size_t sessions)
{
	agents_replyq *q = calloc(1, sizeof(*q));

	if (q == NULL)
		return NULL;
	pthread_mutex_init(&q->mu, NULL);
	pthread_mutex_init(&q->cmu, NULL);
	q->max = max_group;
	q->at_once = at_once > 0 ? at_once : 1;
	q->cap = sessions;
	return q;
}

void
agents_replyq_free(agents_replyq *q)
{
	if (q == NULL)
		return;
	pthread_mutex_lock(&q->cmu);
	mem_flush(q);
	pthread_mutex_unlock(&q->cmu);
	pthread_mutex_destroy(&q->cmu);
	pthread_mutex_destroy(&q->mu);
	free(q);
}

void
agents_replyq_set_memory(agents_replyq *q, size_t sessions)
{
	pthread_mutex_lock(&q->cmu);
	mem_flush(q);
	q->cap = sessions;
	pthread_mutex_unlock(&q->cmu);
}

void
agents_replyq_set(agents_replyq *q, int max_group, int at_once)
{
	pthread_mutex_lock(&q->mu);
	q->max = max_group;
	q->at_once = at_once > 0 ? at_once : 1;
	pthread_mutex_unlock(&q->mu);
}

void
agents_replyq_stats_get(agents_replyq *q, agents_replyq_stats *st)
{
	pthread_mutex_lock(&q->mu);
	*st = q->st;
	pthread_mutex_unlock(&q->mu);
}

static void
item_fail(group_item *it, int code, const char *fmt, const char *arg)
{
	it->rv = pl_call_error(it->t.call, code, fmt, arg);
}

// The field f of item i of a group (the order of reply_begin_batch's
// arrays).
static const char *
begin_field(group_item *g, int f)
{
	const ag_reply_req *in = g->t.in;

	switch (f) {
	case 0:
		return in->tenant_id;
	case 1:
		return in->agent_id;
	case 2:
		return in->session_key;
	case 3:
		return in->message_id[0] ? in->message_id : NULL;
	case 4:
		return g->t.session_id;
	case 5:
		return in->channel_id;
	case 6:
		return in->conversation_id;
	case 7:
		return in->contact ? in->contact->id : "";
	case 8:
		return in->website_domain;
	default:
		return in->client_ip;
	}
}

// Sends BEGIN + reply_begin_batch (ten arrays, one element per item);
// returns its result or NULL (the connection failed: the transaction
// state is left to the caller).
static PGresult *
group_begin(pl_db *db, group_item **it, size_t n, int64_t idle_ms)
{
	pl_arena *a = it[0]->t.call->arena; // the leader's: lives past this
	const char **v = pl_arena_alloc(a, sizeof(*v) * (n + 1));
	char idle[32];
	const char *p[11];

	for (size_t i = 0; i < n; i++)
		pl_uuid7_str(it[i]->t.session_id); // a new session's id
	for (int f = 0; f < 10; f++) {
		for (size_t i = 0; v != NULL && i < n; i++)
			v[i] = begin_field(it[i], f);
		if (v == NULL || (p[f] = pl_db_array(a, v, n)) == NULL)
			return NULL;
	}
	snprintf(idle, sizeof(idle), "%lld", (long long)idle_ms);
	p[10] = idle;
	return agents_store_reply_group_open(db, p);
}

// Merges src's keys into *dst (later replies win, as `||` in order).
static void
merge_into(json_t **dst, const json_t *src)
{
	if (*dst == NULL)
		*dst = json_object();
	if (*dst != NULL && src != NULL)
		json_object_update(*dst, (json_t *)src);
}

// The commit's JSON documents for the composed items: items, sessions
// (with the message count each was seen with) and, with agents != NULL,
// the agents remembered (one round trip). False when out of memory.
static bool
group_finish_docs(group_item **it, size_t n, char **items, char **sessions,
                  char **agents)
{
	json_t *ji = json_array(), *js = json_array();
	json_t *ja = agents != NULL ? json_array() : NULL;
	bool ok = ji && js && (agents == NULL || ja);

	*items = *sessions = NULL;
	if (agents != NULL)
		*agents = NULL;
	for (size_t i = 0; ok && i < n; i++) {
		reply_tx *t = &it[i]->t;
		ag_reply_resp *o = t->out;
		json_t *cx = NULL, *cp = NULL;
		int added = 0, turns = 0;
		bool first = true, first_agent = true;

		if (!it[i]->composed)
			continue;
		json_array_append_new(
		        ji,
		        json_pack(
		                "{s:s, s:s, s:s, s:s?, s:s, s:s, s:s, s:s, "
		                "s:i, s:i, s:i, s:s, s:s, s:s, s:f, s:s?, "
		                "s:s?, s:s, s:s, s:O, s:O}",
		                "t", t->in->tenant_id, "s", t->session_id, "a",
		                t->in->agent_id, "e",
		                o->knowledge_entry_id[0] ? o->knowledge_entry_id
		                                         : NULL,
		                "um", t->user_id, "ut", t->in->text, "am",
		                t->answer_id, "at", o->reply_text, "ti",
		                o->tokens_in, "to", o->tokens_out, "lat",
		                o->latency_ms, "mo", o->model, "en",
		                agents_engine_text(o->engine), "in", o->intent,
		                "cf", o->confidence, "m",
		                t->in->message_id[0] ? t->in->message_id : NULL,
		                "r", t->reply_json, "er", o->error, "ev",
		                t->event_id, "dm", t->dims, "pl", t->payload));
		// One row per session, at its first reply in the group: the
		// counts of all its replies, the last one's turns, the
		// patches merged in order; one per agent.
		for (size_t j = 0; j < i; j++) {
			if (!it[j]->composed || strcmp(it[j]->t.in->tenant_id,
			                               t->in->tenant_id) != 0)
				continue;
			if (strcmp(it[j]->t.session_id, t->session_id) == 0)
				first = false;
			if (strcmp(it[j]->t.in->agent_id, t->in->agent_id) == 0)
				first_agent = false;
		}
		if (first) {
			for (size_t j = i; j < n; j++) {
				reply_tx *s = &it[j]->t;

				if (!it[j]->composed ||
				    strcmp(s->session_id, t->session_id) != 0 ||
				    strcmp(s->in->tenant_id,
				           t->in->tenant_id) != 0)
					continue;
				added += 2;
				turns = s->turns;
				merge_into(&cx, s->cpatch);
				merge_into(&cp, s->lpatch);
			}
			json_t *w = json_pack(
			        "{s:s, s:s, s:s, s:I, s:i, s:i, s:s, s:o?, "
			        "s:o?}",
			        "t", t->in->tenant_id, "id", t->session_id, "k",
			        t->in->session_key, "mc", (json_int_t)it[i]->mc,
			        "n", added, "bt", turns, "a", t->in->agent_id,
			        "cx", cx, "cp", cp);
			// A session the commit creates: what
			// reply_begin_batch would have written in it.
			if (w != NULL && it[i]->fresh)
				json_object_update_new(
				        w,
				        json_pack("{s:b, s:s, s:s, s:s, s:s, "
				                  "s:s}",
				                  "nw", 1, "ch",
				                  begin_field(it[i], 5), "cv",
				                  begin_field(it[i], 6), "ct",
				                  begin_field(it[i], 7), "d",
				                  begin_field(it[i], 8), "ip",
				                  begin_field(it[i], 9)));
			json_array_append_new(js, w);
		}
		if (ja != NULL && first_agent && it[i]->am != NULL)
			json_array_append_new(
			        ja, json_pack("{s:s, s:s, s:i, s:I, s:I}", "t",
			                      t->in->tenant_id, "a",
			                      t->in->agent_id, "v",
			                      it[i]->am->version, "kn",
			                      (json_int_t)it[i]->am->kn, "ks",
			                      (json_int_t)it[i]->am->ks));
	}
	if (ok) {
		*items = json_dumps(ji, JSON_COMPACT);
		*sessions = json_dumps(js, JSON_COMPACT);
		ok = *items && *sessions;
		if (agents != NULL)
			ok = ok && (*agents = json_dumps(ja, JSON_COMPACT));
	}
	json_decref(ji);
	json_decref(js);
	json_decref(ja);
	return ok;
}

// After a commit: remembers the sessions written ('w' rows of
// reply_commit_batch) with the turns of their last reply in the group.
static void
group_remember(agents_replyq *q, group_item **it, size_t n, const PGresult *r)
{
	for (int row = 0; q != NULL && row < PQntuples(r); row++) {
		const char *sid = PQgetvalue(r, row, 2);
		long long mc = atoll(PQgetvalue(r, row, 3));
		group_item *last = NULL;

		if (PQgetvalue(r, row, 0)[0] != 'w')
			continue;
		for (size_t i = 0; i < n; i++) {
			if (it[i]->composed &&
			    strcmp(it[i]->t.session_id, sid) == 0)
				last = it[i];
		}
		if (last != NULL)
			sess_put(q, last->t.in->tenant_id,
			         last->t.in->session_key, sid, last->t.turns,
			         mc);
	}
}

// reply_commit_batch's intervals: last_activity_at moves at most every
// tenth of the inactivity (capped at a minute); sessions idle longer
// than the inactivity are not answered from memory.
static void
commit_params(const agents_ctx *ctx, char touch[32], char idle[32])
{
	int64_t tm = ctx->session_idle_ms / 10;

	snprintf(touch, 32, "%lld", (long long)(tm < 60000 ? tm : 60000));
	snprintf(idle, 32, "%lld", (long long)ctx->session_idle_ms);
}

static int
group_row_item(const PGresult *r, int row, size_t n)
{
	int i = atoi(PQgetvalue(r, row, 1));

	return i >= 0 && (size_t)i < n ? i : -1;
}

// Resets what a try at answering set on an item.
static void
item_reset(group_item *g)
{
	g->arow = g->srow = g->rrow = g->dup_of = -1;
	g->composed = false;
	g->fresh = false;
	g->alone = false;
	g->rv = PL_OK;
	g->t.call->code = PL_OK;
	g->t.call->message = NULL;
	g->t.call->n_violations = 0;
}

// Answers items it[0..n) as one group on db. Sets each item's rv, or
// alone (an LLM agent, to be answered alone by its caller).
// Returns false when the group failed as a whole (the database's error,
// a lost connection): nothing of it was recorded and the items are to be
// answered one at a time.
static bool
group_try(pl_db *db, group_item **it, size_t n, PGresult **err)
{
	agents_ctx *ctx = it[0]->t.ctx;
	PGresult *r;
	size_t ncomposed = 0;
	bool ok = false;

	*err = NULL;
	for (size_t i = 0; i < n; i++) {
		item_reset(it[i]);
		it[i]->am = NULL;
		it[i]->mc = 0;
	}
	r = group_begin(db, it, n, ctx->session_idle_ms);
	if (r == NULL || !agents_store_ok(r)) {
		*err = r;
		return false;
	}
	for (int row = 0; row < PQntuples(r); row++) {
		const char *kind = PQgetvalue(r, row, 0);
		int i = group_row_item(r, row, n);

		if (i < 0)
			continue;
		if (kind[0] == 'r')
			it[i]->rrow = row;
		else if (kind[0] == 's')
			it[i]->srow = row;
		else if (kind[0] == 'a') {
			// Every item of this (tenant, agent).
			for (size_t j = (size_t)i; j < n; j++) {
				if (strcmp(it[j]->t.in->tenant_id,
				           it[i]->t.in->tenant_id) == 0 &&
				    strcmp(it[j]->t.in->agent_id,
				           it[i]->t.in->agent_id) == 0)
					it[j]->arow = row;
			}
		}
	}
	for (size_t i = 0; i < n; i++) {
		group_item *g = it[i];
		reply_tx *t = &g->t;
		pl_arena *a = t->call->arena;
		int arow = g->arow, bot_turns;
		agents_cfg cfg;
		const uint8_t *ct;
		size_t ctlen = 0;

		if (g->rrow >= 0) {
			g->rv = replay(t, PQgetvalue(r, g->rrow, 28));
			continue;
		}
		if (g->srow < 0) {
			// The agent cannot answer here: say why, or leave it
			// to the single path (LLM agents).
			if (arow < 0)
				item_fail(g, PL_NOT_FOUND, "agent %s not found",
				          t->in->agent_id);
			else if (strcmp(PQgetvalue(r, arow, 2), "archived") ==
			         0)
				item_fail(g, PL_FAILED_PRECONDITION,
				          "agent %s is archived",
				          t->in->agent_id);
			else if (PQgetisnull(r, arow, 4))
				item_fail(g, PL_FAILED_PRECONDITION,
				          "agent %s has no published version",
				          t->in->agent_id);
			else
				g->alone = true;
			continue;
		}
		// The same message id earlier in this group: answered once,
		// this one replays it after the commit.
		for (size_t j = 0; t->in->message_id[0] && j < i; j++) {
			if (it[j]->srow >= 0 && it[j]->dup_of < 0 &&
			    strcmp(it[j]->t.in->message_id,
			           t->in->message_id) == 0 &&
			    strcmp(it[j]->t.in->tenant_id, t->in->tenant_id) ==
			            0) {
				g->dup_of = (int)j;
				break;
			}
		}
		if (g->dup_of >= 0 || arow < 0) {
			if (arow < 0)
				item_fail(g, PL_INTERNAL, "agent %s vanished",
				          t->in->agent_id);
			continue;
		}
		// Bot turns: the session's, or after its earlier replies in
		// this group.
		bot_turns = atoi(PQgetvalue(r, g->srow, 30));
		for (size_t j = 0; j < i; j++) {
			if (it[j]->composed &&
			    strcmp(it[j]->t.session_id,
			           PQgetvalue(r, g->srow, 29)) == 0)
				bot_turns = it[j]->t.turns;
		}
		agents_store_cfg_read(a, r, arow, 5, &cfg);
		ct = agents_store_bytea(a, r, arow, 25, &ctlen);
		g->rv = compose(t, db, &cfg, ct, ctlen,
		                agents_store_str(a, r, arow, 26),
		                agents_store_str(a, r, arow, 27),
		                atoi(PQgetvalue(r, arow, 3)),
		                PQgetvalue(r, g->srow, 29), bot_turns);
		if (g->rv == PL_OK) {
			g->composed = true;
			ncomposed++;
			if (ctx->replyq != NULL)
				agent_put(ctx->replyq, a, t->in->tenant_id,
				          t->in->agent_id, r, arow);
		}
	}
	PQclear(r);
	r = NULL;
	if (ncomposed == 0) {
		agents_store_reply_end(db);
		ok = true;
	} else {
		char *items = NULL, *sessions = NULL;
		char touch[32], idle[32];
		const char *p[5];

		commit_params(ctx, touch, idle);
		if (!agents_store_reply_in_tx(db)) {
			ok = false;
		} else if (group_finish_docs(it, n, &items, &sessions, NULL)) {
			p[0] = items;
			p[1] = sessions;
			p[2] = NULL;
			p[3] = touch;
			p[4] = idle;
			ok = agents_store_reply_commit_batch(db, p, true,
			                                     err) == PL_OK;
			if (ok) {
				group_remember(ctx->replyq, it, n, *err);
				PQclear(*err);
				*err = NULL;
			}
		}
		free(items);
		free(sessions);
	}
	for (size_t i = 0; i < n; i++)
		rec_clear(&it[i]->t);
	if (!ok)
		return false;
	// The same message id twice: the later ones replay the first.
	for (size_t i = 0; i < n; i++) {
		group_item *g = it[i], *f;

		if (g->dup_of < 0)
			continue;
		f = it[g->dup_of];
		if (f->rv != PL_OK)
			g->rv = pl_call_error(g->t.call, f->t.call->code, "%s",
			                      f->t.call->message
			                              ? f->t.call->message
			                              : "could not reply");
		else
			g->rv = replay(&g->t, f->t.reply_json);
	}
	return true;
}

// A group, and when it fails as a whole (a database error, which rolls
// back every reply of it), each of its replies alone: one failing reply
// never fails the others. Returns true when the group was split.
static bool
group_run(pl_db *db, group_item **it, size_t n)
{
	PGresult *err = NULL;

	if (group_try(db, it, n, &err)) {
		PQclear(err);
		return false;
	}
	agents_store_reply_end(db); // ROLLBACK
	if (n == 1) {
		group_item *g = it[0];

		// An error the reply set itself (compose) is kept.
		if (g->rv == PL_OK || g->composed)
			g->rv = err != NULL
			                ? pl_db_call_error(g->t.call, err,
			                                   "record the reply")
			                : pl_call_error(g->t.call,
			                                PL_UNAVAILABLE,
			                                "could not reach the "
			                                "database");
		PQclear(err);
		return false;
	}
	pl_warn("a group of %zu replies failed (%s): answering them one at a "
	        "time",
	        n,
	        err != NULL
	                ? PQresultErrorField(err, PG_DIAG_SQLSTATE)
	                          ? PQresultErrorField(err, PG_DIAG_SQLSTATE)
	                          : "?"
	                : "connection lost");
	PQclear(err);
	for (size_t i = 0; i < n; i++)
		group_run(db, &it[i], 1);
	return true;
}

// Whether a and b are replies in one session: same tenant and key.
static bool
same_key(const group_item *a, const group_item *b)
{
	return strcmp(a->t.in->session_key, b->t.in->session_key) == 0 &&
	       strcmp(a->t.in->tenant_id, b->t.in->tenant_id) == 0;
}

// Whether another item of it[0..n) than i has i's tenant and session key.
static bool
key_twice(group_item **it, size_t n, size_t i)
{
	for (size_t j = 0; j < n; j++) {
		if (j != i && same_key(it[j], it[i]))
			return true;
	}
	return false;
}

static bool
in_fast(group_item *const *f, size_t nf, const group_item *g)
{
	for (size_t i = 0; i < nf; i++) {
		if (f[i] == g)
			return true;
	}
	return false;
}

// One round trip (see above): answers the items of it[0..n) whose agent
// and session this replica remembers, and puts the others, and those
// whose memory no longer held, in rest[0..*nrest) in their order.
static void
group_fast(pl_db *db, group_item **it, size_t n, group_item **rest,
           size_t *nrest)
{
	agents_ctx *ctx = it[0]->t.ctx;
	agents_replyq *q = ctx->replyq;
	group_item **f = calloc(n + 1, sizeof(*f));
	char *items = NULL, *sessions = NULL, *agents = NULL;
	char touch[32], idle[32];
	const char *p[5];
	PGresult *r = NULL;
	size_t nf = 0, ncomposed = 0, nw = 0, nredo = 0;
	bool cached;

	*nrest = 0;
	pthread_mutex_lock(&q->cmu);
	cached = q->cap > 0;
	pthread_mutex_unlock(&q->cmu);
	for (size_t i = 0; i < n; i++) {
		group_item *g = it[i];
		const ag_reply_req *in = g->t.in;
		bool dup = false;

		item_reset(g);
		g->am = NULL;
		g->composed = false;
		// A message id twice in a group: the two round trips
		// answer it once and replay it.
		for (size_t j = 0; in->message_id[0] && j < i; j++)
			dup = dup || (strcmp(it[j]->t.in->message_id,
			                     in->message_id) == 0 &&
			              strcmp(it[j]->t.in->tenant_id,
			                     in->tenant_id) == 0);
		if (f == NULL || !cached || dup ||
		    (g->am = agent_get(q, in->tenant_id, in->agent_id)) ==
		            NULL ||
		    sess_get(q, in->tenant_id, in->session_key, g))
			continue;
		if (in->n_history == 0 && !key_twice(it, n, i)) {
			// Nothing said before in the conversation: its
			// session most likely does not exist yet. Named here,
			// created by the commit unless one of the key is
			// active by then (that item comes back 's').
			pl_uuid7_str(g->sid);
			g->bot_turns = 0;
			g->mc = 0;
			g->fresh = true;
			continue;
		}
		agent_unref(q, g->am);
		g->am = NULL;
	}
	// A session's replies stay together, in order: when one of them
	// cannot be answered from memory, none is.
	for (size_t i = 0; i < n; i++) {
		group_item *g = it[i];

		for (size_t j = 0; g->am != NULL && j < n; j++) {
			if (it[j]->am == NULL && same_key(it[j], g)) {
				agent_unref(q, g->am);
				g->am = NULL;
			}
		}
	}
	for (size_t i = 0; i < n; i++) {
		if (it[i]->am != NULL)
			f[nf++] = it[i];
		else
			rest[(*nrest)++] = it[i];
	}
	if (nf == 0) {
		free(f);
		return;
	}
	for (size_t i = 0; i < nf; i++) {
		group_item *g = f[i];
		const PGresult *ar = g->am->row;
		pl_arena *a = g->t.call->arena;
		int bot_turns = g->bot_turns;
		agents_cfg cfg;
		const uint8_t *ct;
		size_t ctlen = 0;

		for (size_t j = 0; j < i; j++) {
			if (f[j]->composed &&
			    strcmp(f[j]->t.session_id, g->sid) == 0 &&
			    strcmp(f[j]->t.in->tenant_id, g->t.in->tenant_id) ==
			            0)
				bot_turns = f[j]->t.turns;
		}
		agents_store_cfg_read(a, ar, 0, 5, &cfg);
		ct = agents_store_bytea(a, ar, 0, 25, &ctlen);
		g->rv = compose(&g->t, db, &cfg, ct, ctlen,
		                agents_store_str(a, ar, 0, 26),
		                agents_store_str(a, ar, 0, 27), g->am->version,
		                g->sid, bot_turns);
		if (g->rv == PL_OK) {
			g->composed = true;
			ncomposed++;
		}
	}
	commit_params(ctx, touch, idle);
	if (ncomposed > 0 &&
	    group_finish_docs(f, nf, &items, &sessions, &agents)) {
		p[0] = items;
		p[1] = sessions;
		p[2] = agents;
		p[3] = touch;
		p[4] = idle;
		if (agents_store_reply_commit_batch(db, p, false, &r) !=
		    PL_OK) {
			// Nothing was written: every composed item is answered
			// again by the two round trips, which report errors.
			PQclear(r);
			r = NULL;
			for (size_t i = 0; i < nf; i++) {
				if (f[i]->composed) {
					sess_forget(q, f[i]->t.in->tenant_id,
					            f[i]->t.in->session_key);
					f[i]->composed = false;
					f[i]->rv = -1;
				}
			}
		}
	} else if (ncomposed > 0) {
		for (size_t i = 0; i < nf; i++) {
			if (f[i]->composed)
				f[i]->rv = pl_call_error(f[i]->t.call,
				                         PL_RESOURCE_EXHAUSTED,
				                         "out of memory");
		}
	}
	free(items);
	free(sessions);
	free(agents);
	if (r != NULL) {
		// Items not written: forget what did not hold, answer again.
		for (int row = 0; row < PQntuples(r); row++) {
			const char *kind = PQgetvalue(r, row, 0);
			int i = kind[0] == 'w' ? -1 : group_row_item(r, row, n);
			size_t k = 0;

			if (i < 0)
				continue;
			// The i-th composed item (the items document's order).
			for (size_t j = 0; j < nf; j++) {
				if (f[j]->composed && k++ == (size_t)i) {
					group_item *g = f[j];

					sess_forget(q, g->t.in->tenant_id,
					            g->t.in->session_key);
					if (kind[0] == 'a')
						agent_forget(q,
						             g->t.in->tenant_id,
						             g->t.in->agent_id);
					g->rv = -1;
					break;
				}
			}
		}
		for (size_t j = 0; j < nf; j++) {
			if (f[j]->composed && f[j]->rv == -1)
				f[j]->composed = false;
		}
		group_remember(q, f, nf, r);
		PQclear(r);
	}
	for (size_t i = 0; i < nf; i++) {
		group_item *g = f[i];

		agent_unref(q, g->am);
		g->am = NULL;
		rec_clear(&g->t);
		if (g->rv == -1)
			nredo++;
		else if (g->rv == PL_OK)
			nw++;
	}
	// The rest in arrival order (a session's replies stay in order).
	if (nredo > 0) {
		*nrest = 0;
		for (size_t i = 0; i < n; i++) {
			if (it[i]->rv == -1 || !in_fast(f, nf, it[i])) {
				item_reset(it[i]);
				rest[(*nrest)++] = it[i];
			}
		}
	}
	pthread_mutex_lock(&q->mu);
	q->st.fast += (long)nw;
	q->st.redone += (long)nredo;
	pthread_mutex_unlock(&q->mu);
	free(f);
}

// A group: what memory answers in one round trip, the rest with two.
// Returns true when the rest was split (see group_run).
static bool
group_answer(pl_db *db, group_item **it, size_t n)
{
	group_item **rest = NULL;
	size_t nrest = 0;
	bool split;

	if (it[0]->t.ctx->replyq == NULL ||
	    (rest = calloc(n + 1, sizeof(*rest))) == NULL)
		return group_run(db, it, n);
	group_fast(db, it, n, rest, &nrest);
	split = nrest > 0 && group_run(db, rest, nrest);
	free(rest);
	return split;
}

static void
item_init(group_item *g, pl_call *call, const ag_reply_req *in,
          ag_reply_resp *out)
{
	memset(g, 0, sizeof(*g));
	g->t.call = call;
	g->t.ctx = call->arg;
	g->t.in = in;
	g->t.out = out;
	g->t.t0 = pl_now_ns();
}

void
agents_reply_group(pl_db *db, size_t n, pl_call *const *calls,
                   const ag_reply_req *const *ins, ag_reply_resp *const *outs,
                   int *rv, bool *alone)
{
	group_item *g = calloc(n + 1, sizeof(*g));
	group_item **p = calloc(n + 1, sizeof(*p));

	if (g == NULL || p == NULL) {
		for (size_t i = 0; i < n; i++)
			rv[i] = pl_call_error(calls[i], PL_RESOURCE_EXHAUSTED,
			                      "out of memory");
		free(g);
		free(p);
		return;
	}
	for (size_t i = 0; i < n; i++) {
		item_init(&g[i], calls[i], ins[i], outs[i]);
		p[i] = &g[i];
	}
	group_answer(db, p, n);
	for (size_t i = 0; i < n; i++) {
		if (alone != NULL)
			alone[i] = g[i].alone;
		if (g[i].alone && alone != NULL) {
			rv[i] = PL_OK; // not answered: its caller asks Reply
			continue;
		}
		rv[i] = g[i].alone ? reply_alone(db, &g[i].t) : g[i].rv;
		if (rv[i] == PL_OK)
			reserve_tokens(&g[i].t);
	}
	free(g);
	free(p);
}

// Leader and followers: a reply joins the queue; when fewer than
// PARLEY_REPLY_GROUPS_AT_ONCE groups are being answered, the worker of the
// reply at the queue's head takes the queue (up to the group size) and answers
// it on its own connection; the others sleep until their reply is done (each on
// its own pl_wake, posted after the mutex is let go: one wake-up per reply).
int
agents_reply(pl_call *call, const ag_reply_req *in, ag_reply_resp *out)
{
	agents_ctx *ctx = call->arg;
	agents_replyq *q = ctx->replyq;
	group_item self;
	int rv;

	item_init(&self, call, in, out);
	if (q == NULL) {
		rv = reply_alone(pl_call_db(call), &self.t);
		goto done;
	}
	pthread_mutex_lock(&q->mu);
	if (q->max <= 0) {
		pthread_mutex_unlock(&q->mu);
		rv = reply_alone(pl_call_db(call), &self.t);
		goto done;
	}
	pl_wake_init(&self.wake);
	self.state = IT_QUEUED;
	if (q->tail != NULL)
		q->tail->next = &self;
	else
		q->head = &self;
	q->tail = &self;
	while (self.state != IT_DONE) {
		group_item *g[GROUP_MAX], *lead = NULL;
		pl_wake *wake[GROUP_MAX + 1];
		size_t n = 0, max, nw = 0;
		int64_t t0, t1;
		bool split;

		if (self.state != IT_QUEUED || q->head != &self ||
		    q->running >= q->at_once) {
			pl_wake_wait(&self.wake, &q->mu);
			if (self.state == IT_DONE) {
				q->st.woken_ns += pl_now_ns() - self.done_ns;
				q->st.woken++;
			}
			continue;
		}
		max = q->max > 0 && q->max < GROUP_MAX ? (size_t)q->max
		                                       : GROUP_MAX;
		t0 = pl_now_ns();
		while (q->head != NULL && n < max) {
			g[n] = q->head;
			q->head = q->head->next;
			g[n]->next = NULL;
			q->st.queued_ns += t0 - g[n]->t.t0;
			g[n++]->state = IT_TAKEN;
		}
		if (q->head == NULL)
			q->tail = NULL;
		q->running++;
		// More waiting and room for another group: its head leads.
		// Every wake-up is promised under the mutex and posted after
		// it (pl/wake.h): the woken runs at once instead of waiting
		// for the mutex.
		if (q->head != NULL && q->running < q->at_once) {
			lead = q->head;
			pl_wake_promise(&lead->wake);
		}
		pthread_mutex_unlock(&q->mu);
		if (lead != NULL)
			pl_wake_post(&lead->wake);
		split = group_answer(pl_call_db(call), g, n);
		pthread_mutex_lock(&q->mu);
		t1 = pl_now_ns();
		q->st.group_ns += t1 - t0;
		for (size_t i = 0; i < n; i++) {
			g[i]->state = IT_DONE;
			g[i]->done_ns = t1;
			if (g[i] != &self) {
				pl_wake_promise(&g[i]->wake);
				wake[nw++] = &g[i]->wake;
			}
		}
		q->st.groups++;
		q->st.replies += (long)n;
		if ((long)n > q->st.largest)
			q->st.largest = (long)n;
		if (split)
			q->st.split++;
		q->running--;
		if (q->head != NULL) {
			pl_wake_promise(&q->head->wake);
			wake[nw++] = &q->head->wake;
		}
		pl_wake_post_unlocked(&q->mu, wake, nw);
	}
	// Done: out of the queue and its group, nothing promises more.
	pl_wake_fini(&self.wake, &q->mu);
	rv = self.alone ? reply_alone(pl_call_db(call), &self.t) : self.rv;
done:
	if (rv != PL_OK) {
		if (call->code == PL_OK)
			return pl_call_error(call, rv, "could not reply");
		return rv;
	}
	reserve_tokens(&self.t);
	return PL_OK;
}
