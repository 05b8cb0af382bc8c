// The agents service's RPCs: one function per method, the handler table
// and the service definition.
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <sodium.h>

#include "pl/cfg.h"
#include "pl/id.h"
#include "pl/log.h"
#include "agents_migrations.h"
#include "store.h"

// ---------------------------------------------------------------------------
// Helpers

typedef int (*tx_fn)(pl_db *db, pl_call *call, const char *tenant,
                     const void *in, void *out);

typedef struct tx_arg {
	tx_fn fn;
	pl_call *call;
	const char *tenant;
	const void *in;
	void *out;
} tx_arg;

static int
tx_tramp(pl_db *db, void *arg)
{
	tx_arg *t = arg;
	return t->fn(db, t->call, t->tenant, t->in, t->out);
}

// Runs fn in a transaction for tenant (row-level security).
static int
run(pl_call *call, const char *tenant, tx_fn fn, const void *in, void *out)
{
	tx_arg t = { fn, call, tenant, in, out };
	int rv = pl_db_tx(pl_call_db(call), tenant, tx_tramp, &t);

	if (rv != PL_OK && call->code == PL_OK)
		return pl_call_error(call, rv,
		                     "could not complete the request");
	return rv;
}

// The caller's tenant; NULL (with the error set) when there is none.
static const char *
caller_tenant(pl_call *call)
{
	const char *t = call->principal->tenant_id;

	if (t == NULL || !pl_uuid_valid(t)) {
		pl_call_error(call, PL_PERMISSION_DENIED,
		              "the call has no tenant");
		return NULL;
	}
	return t;
}

static int
page_size(pl_call *call, const Parley__Rpc__V1__PageRequest *pg, int max,
          int *out)
{
	int n = pg ? pg->page_size : 0;

	if (n < 0)
		return pl_call_violation(call, "page.page_size",
		                         "must not be negative");
	*out = n == 0 ? (max > 200 ? 200 : 50) : n > max ? max : n;
	return PL_OK;
}

// The cursor in a page token ("" when none); NULL with the error set on a
// bad token.
static const char *
page_cursor(pl_call *call, const Parley__Rpc__V1__PageRequest *pg)
{
	char *c;

	if (pg == NULL || pg->page_token[0] == '\0')
		return "";
	if ((c = agents_token_decode(call->arena, pg->page_token)) == NULL) {
		pl_call_violation(call, "page.page_token", "is not valid");
		return NULL;
	}
	return c;
}

static bool
len_ok(const char *s, size_t max)
{
	return strlen(s) <= max && pl_utf8_valid(s, strlen(s));
}

static bool
in_mask(char *const *mask, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++) {
		if (strcmp(mask[i], name) == 0)
			return true;
	}
	return false;
}

static char *
json_of_strings(pl_arena *a, char *const *v, size_t n)
{
	json_t *arr = json_array();
	char *s, *r;

	for (size_t i = 0; i < n; i++)
		json_array_append_new(arr, json_string(v[i]));
	s = json_dumps(arr, JSON_COMPACT);
	json_decref(arr);
	r = pl_arena_strdup(a, s ? s : "[]");
	free(s);
	return r;
}

static int
not_found(pl_call *call, const char *what, const char *id)
{
	return pl_call_error(call, PL_NOT_FOUND, "%s %s not found", what, id);
}

// Checks an id field; a malformed one is NOT_FOUND too (it names nothing).
static int
check_id(pl_call *call, const char *field, const char *id)
{
	if (id[0] == '\0')
		return pl_call_violation(call, field, "is required");
	if (!pl_uuid_valid(id))
		return pl_call_violation(call, field, "must be a UUID");
	return PL_OK;
}

// ---------------------------------------------------------------------------
// Agent configuration

static int
check_cfg(pl_call *call, agents_cfg *c, const char *api_key)
{
	json_t *j;

	if (c->engine != AG_ENGINE_RETRIEVAL && c->engine != AG_ENGINE_OPENAI)
		return pl_call_violation(call, "engine", "is not known");
	if (!len_ok(c->llm->provider, AG_MAX_NAME))
		return pl_call_violation(call, "llm.provider", "is too long");
	if (!len_ok(c->llm->base_url, AG_MAX_URL) ||
	    (c->llm->base_url[0] &&
	     strncmp(c->llm->base_url, "http://", 7) != 0 &&
	     strncmp(c->llm->base_url, "https://", 8) != 0))
		return pl_call_violation(
		        call, "llm.base_url",
		        "must be an http(s) URL of at most 2048 bytes");
	if (!len_ok(c->llm->model, AG_MAX_NAME))
		return pl_call_violation(call, "llm.model", "is too long");
	if (api_key != NULL && strlen(api_key) > AG_MAX_KEY)
		return pl_call_violation(call, "llm.api_key", "is too long");
	if (!(c->llm->temperature >= 0 && c->llm->temperature <= 2))
		return pl_call_violation(call, "llm.temperature",
		                         "must be between 0 and 2");
	if (c->llm->max_tokens < 0 || c->llm->max_tokens > 100000)
		return pl_call_violation(call, "llm.max_tokens",
		                         "must be between 0 and 100000");
	if (c->llm->timeout_ms < 0 || c->llm->timeout_ms > 120000)
		return pl_call_violation(call, "llm.timeout_ms",
		                         "must be between 0 and 120000");
	if (c->llm->context_entries < 0 || c->llm->context_entries > 20)
		return pl_call_violation(call, "llm.context_entries",
		                         "must be between 0 and 20");
	if (c->engine == AG_ENGINE_OPENAI &&
	    (c->llm->base_url[0] == '\0' || c->llm->model[0] == '\0'))
		return pl_call_violation(call, "llm.base_url",
		                         "the openai_compatible engine needs a "
		                         "base URL and a model");
	if (!len_ok(c->system_prompt, AG_MAX_PROMPT))
		return pl_call_violation(call, "system_prompt",
		                         "must be at most 32 KB of UTF-8");
	if (!len_ok(c->greeting, AG_MAX_PROMPT))
		return pl_call_violation(call, "greeting",
		                         "must be at most 32 KB of UTF-8");
	if (!len_ok(c->fallback_message, AG_MAX_PROMPT))
		return pl_call_violation(call, "fallback_message",
		                         "must be at most 32 KB of UTF-8");
	if (c->n_kb_ids > AG_MAX_LIST)
		return pl_call_violation(call, "knowledge_base_ids",
		                         "must have at most %d ids",
		                         AG_MAX_LIST);
	for (size_t i = 0; i < c->n_kb_ids; i++) {
		if (!pl_uuid_valid(c->kb_ids[i]))
			return pl_call_violation(call, "knowledge_base_ids",
			                         "entry %zu is not a UUID", i);
	}
	if (c->n_keywords > AG_MAX_LIST)
		return pl_call_violation(call, "handoff_keywords",
		                         "must have at most %d keywords",
		                         AG_MAX_LIST);
	for (size_t i = 0; i < c->n_keywords; i++) {
		if (c->keywords[i][0] == '\0' || !len_ok(c->keywords[i], 100))
			return pl_call_violation(
			        call, "handoff_keywords",
			        "entry %zu must be 1 to 100 bytes", i);
	}
	if (!(c->threshold >= 0 && c->threshold <= 1))
		return pl_call_violation(call, "handoff_confidence_threshold",
		                         "must be between 0 and 1");
	if (c->max_bot_turns < 0 || c->max_bot_turns > 1000)
		return pl_call_violation(call, "max_bot_turns",
		                         "must be between 0 and 1000");
	if (!len_ok(c->language, 35))
		return pl_call_violation(call, "language", "is too long");
	if (!len_ok(c->voice->provider, AG_MAX_NAME) ||
	    !len_ok(c->voice->voice_id, AG_MAX_NAME))
		return pl_call_violation(call, "voice", "is too long");
	if (c->voice->settings && c->voice->settings->text[0]) {
		if (strlen(c->voice->settings->text) > AG_MAX_JSON)
			return pl_call_violation(call, "voice.settings",
			                         "is too long");
		j = json_loads(c->voice->settings->text, 0, NULL);
		if (!json_is_object(j)) {
			json_decref(j);
			return pl_call_violation(call, "voice.settings",
			                         "must be a JSON object");
		}
		json_decref(j);
	}
	return PL_OK;
}

static ag_llm *
llm_copy(pl_arena *a, const ag_llm *in)
{
	ag_llm *l = pl_arena_zalloc(a, sizeof(*l));

	parley__agents__v1__llm_config__init(l);
	if (in != NULL) {
		*l = *in;
		l->api_key = "";
	}
	return l;
}

static ag_voice *
voice_copy(pl_arena *a, const ag_voice *in)
{
	ag_voice *v = pl_arena_zalloc(a, sizeof(*v));

	parley__agents__v1__voice_settings__init(v);
	if (in != NULL)
		*v = *in;
	return v;
}

// Seals an API key; PL_OK with *ct NULL when key is empty.
static int
seal_key(pl_call *call, const char *key, uint8_t **ct, size_t *len)
{
	agents_ctx *ctx = call->arg;

	*ct = NULL;
	*len = 0;
	if (key == NULL || key[0] == '\0')
		return PL_OK;
	if (!ctx->cred_key_set)
		return pl_call_error(call, PL_FAILED_PRECONDITION,
		                     "could not store the API key: "
		                     "PARLEY_CREDENTIALS_KEY is "
		                     "not configured");
	if (pl_seal(ctx->cred_key, ctx->cred_kid, key, ct, len) != PL_OK)
		return pl_call_error(call, PL_INTERNAL,
		                     "could not encrypt the API key");
	return PL_OK;
}

static int
kbs_exist(pl_db *db, pl_call *call, const char *tenant, const agents_cfg *c)
{
	PGresult *r;
	int rv = PL_OK;

	if (c->n_kb_ids == 0)
		return PL_OK;
	r = agents_store_kbs_exist(
	        db, tenant,
	        json_of_strings(call->arena, c->kb_ids, c->n_kb_ids));
	if (!agents_store_ok(r))
		rv = pl_db_call_error(call, r, "check the knowledge bases");
	else if ((size_t)atoll(PQgetvalue(r, 0, 0)) != c->n_kb_ids)
		rv = pl_call_error(call, PL_NOT_FOUND,
		                   "knowledge base not found");
	PQclear(r);
	return rv;
}

typedef struct create_state {
	const Parley__Agents__V1__CreateAgentRequest *in;
	agents_cfg cfg;
	uint8_t *ct;
	size_t ctlen;
} create_state;

static int
create_agent_tx(pl_db *db, pl_call *call, const char *tenant, const void *inp,
                void *outp)
{
	create_state *st = (create_state *)inp;
	const Parley__Agents__V1__CreateAgentRequest *in = st->in;
	Parley__Agents__V1__CreateAgentResponse *out = outp;
	agents_ctx *ctx = call->arg;
	char id[PL_UUID_STRLEN + 1], kb[PL_UUID_STRLEN + 1];
	PGresult *r;
	int rv;

	if ((rv = kbs_exist(db, call, tenant, &st->cfg)) != PL_OK)
		return rv;
	pl_uuid7_str(id);
	if (st->cfg.n_kb_ids == 0) {
		pl_uuid7_str(kb);
		r = agents_store_kb_insert(
		        db, tenant, kb,
		        pl_arena_printf(call->arena, "%s knowledge", in->name),
		        "", st->cfg.language);
		if (!agents_store_ok(r)) {
			rv = pl_db_call_error(call, r,
			                      "create the knowledge base");
			PQclear(r);
			return rv;
		}
		PQclear(r);
		st->cfg.kb_ids = pl_arena_alloc(call->arena, sizeof(char *));
		st->cfg.kb_ids[0] = pl_arena_strdup(call->arena, kb);
		st->cfg.n_kb_ids = 1;
	}
	r = agents_store_agent_insert(db, call->arena, tenant, id, in->name,
	                              in->description, &st->cfg, st->ct,
	                              st->ctlen, ctx->cred_kid);
	if (!agents_store_ok(r)) {
		rv = pl_db_call_error(call, r, "create the agent");
		PQclear(r);
		return rv;
	}
	out->agent = agents_store_agent_row(call->arena, r, 0);
	out->id = out->agent->id;
	PQclear(r);
	return PL_OK;
}

static int
create_agent(pl_call *call, const void *inp, void *outp)
{
	const Parley__Agents__V1__CreateAgentRequest *in = inp;
	Parley__Agents__V1__CreateAgentResponse *out = outp;
	const char *tenant = caller_tenant(call);

	create_state st = { 0 };
	agents_cfg *c = &st.cfg;
	int rv;

	if (tenant == NULL)
		return call->code;
	if (in->name[0] == '\0' || !len_ok(in->name, AG_MAX_NAME))
		return pl_call_violation(call, "name",
		                         "must be 1 to 200 bytes of UTF-8");
	if (!len_ok(in->description, AG_MAX_SHORT))
		return pl_call_violation(call, "description", "is too long");
	c->llm = llm_copy(call->arena, in->llm);
	c->voice = voice_copy(call->arena, in->voice);
	c->engine = in->engine            ? (int)in->engine
	            : c->llm->base_url[0] ? AG_ENGINE_OPENAI
	                                  : AG_ENGINE_RETRIEVAL;
	c->system_prompt = in->system_prompt;
	c->greeting = in->greeting;
	c->language = in->language;
	c->fallback_message =
	        in->fallback_message[0]
	                ? in->fallback_message
	                : (char *)agents_default_fallback(in->language);
	c->kb_ids = in->knowledge_base_ids;
	c->n_kb_ids = in->n_knowledge_base_ids;
	c->keywords = in->handoff_keywords;
	c->n_keywords = in->n_handoff_keywords;
	if (c->n_keywords == 0) {
		c->keywords = (char **)agents_default_handoff_keywords;
		while (agents_default_handoff_keywords[c->n_keywords])
			c->n_keywords++;
	}
	c->threshold = in->handoff_confidence_threshold;
	c->max_bot_turns = in->max_bot_turns;
	if ((rv = check_cfg(call, c, in->llm ? in->llm->api_key : NULL)) !=
	    PL_OK)
		return rv;
	if ((rv = seal_key(call, in->llm ? in->llm->api_key : NULL, &st.ct,
	                   &st.ctlen)) != PL_OK)
		return rv;
	st.in = in;
	rv = run(call, tenant, create_agent_tx, &st, out);
	free(st.ct);
	return rv;
}

static const char *const agent_mask_names[] = {
	"name",
	"description",
	"engine",
	"system_prompt",
	"greeting",
	"fallback_message",
	"llm",
	"llm.api_key",
	"knowledge_base_ids",
	"handoff_keywords",
	"handoff_confidence_threshold",
	"max_bot_turns",
	"language",
	"voice",
	NULL,
};

typedef struct update_state {
	const Parley__Agents__V1__UpdateAgentRequest *in;
	bool set_key;
	uint8_t *ct;
	size_t ctlen;
} update_state;

static bool
want(const Parley__Agents__V1__UpdateAgentRequest *in, const char *name,
     bool given)
{
	return in->n_update_mask
	               ? in_mask(in->update_mask, in->n_update_mask, name)
	               : given;
}

static int
update_agent_tx(pl_db *db, pl_call *call, const char *tenant, const void *inp,
                void *outp)
{
	const update_state *st = inp;
	const Parley__Agents__V1__UpdateAgentRequest *in = st->in;
	Parley__Agents__V1__UpdateAgentResponse *out = outp;
	agents_ctx *ctx = call->arg;
	pl_arena *a = call->arena;
	PGresult *r;
	ag_agent *ag;
	agents_cfg c;
	char *name, *desc;
	int rv;

	r = agents_store_agent_get(db, tenant, in->id, true);
	if (!agents_store_ok(r)) {
		rv = pl_db_call_error(call, r, "load the agent");
		PQclear(r);
		return rv;
	}
	if (PQntuples(r) == 0) {
		PQclear(r);
		return not_found(call, "agent", in->id);
	}
	ag = agents_store_agent_row(a, r, 0);
	PQclear(r);
	if (ag->status ==
	    PARLEY__AGENTS__V1__AGENT_STATUS__AGENT_STATUS_ARCHIVED)
		return pl_call_error(call, PL_FAILED_PRECONDITION,
		                     "agent %s is archived", in->id);
	name = ag->name;
	desc = ag->description;
	memset(&c, 0, sizeof(c));
	c.engine = ag->engine;
	c.llm = ag->llm;
	c.system_prompt = ag->system_prompt;
	c.greeting = ag->greeting;
	c.fallback_message = ag->fallback_message;
	c.kb_ids = ag->knowledge_base_ids;
	c.n_kb_ids = ag->n_knowledge_base_ids;
	c.keywords = ag->handoff_keywords;
	c.n_keywords = ag->n_handoff_keywords;
	c.threshold = ag->handoff_confidence_threshold;
	c.max_bot_turns = ag->max_bot_turns;
	c.language = ag->language;
	c.voice = ag->voice;
	if (want(in, "name", in->name[0]))
		name = in->name;
	if (want(in, "description", in->description[0]))
		desc = in->description;
	if (want(in, "engine", in->engine))
		c.engine = in->engine ? (int)in->engine : AG_ENGINE_RETRIEVAL;
	if (want(in, "system_prompt", in->system_prompt[0]))
		c.system_prompt = in->system_prompt;
	if (want(in, "greeting", in->greeting[0]))
		c.greeting = in->greeting;
	if (want(in, "fallback_message", in->fallback_message[0]))
		c.fallback_message = in->fallback_message;
	if (want(in, "llm", in->llm != NULL))
		c.llm = llm_copy(a, in->llm);
	if (want(in, "knowledge_base_ids", in->n_knowledge_base_ids)) {
		c.kb_ids = in->knowledge_base_ids;
		c.n_kb_ids = in->n_knowledge_base_ids;
	}
	if (want(in, "handoff_keywords", in->n_handoff_keywords)) {
		c.keywords = in->handoff_keywords;
		c.n_keywords = in->n_handoff_keywords;
	}
	if (want(in, "handoff_confidence_threshold",
	         in->handoff_confidence_threshold != 0))
		c.threshold = in->handoff_confidence_threshold;
	if (want(in, "max_bot_turns", in->max_bot_turns))
		c.max_bot_turns = in->max_bot_turns;
	if (want(in, "language", in->language[0]))
		c.language = in->language;
	if (want(in, "voice", in->voice != NULL))
		c.voice = voice_copy(a, in->voice);
	if (name[0] == '\0' || !len_ok(name, AG_MAX_NAME))
		return pl_call_violation(call, "name",
		                         "must be 1 to 200 bytes of UTF-8");
	if (!len_ok(desc, AG_MAX_SHORT))
		return pl_call_violation(call, "description", "is too long");
	if ((rv = check_cfg(call, &c, NULL)) != PL_OK)
		return rv;
	if ((rv = kbs_exist(db, call, tenant, &c)) != PL_OK)
		return rv;
	r = agents_store_agent_update(db, a, tenant, in->id, name, desc, &c,
	                              st->set_key, st->ct, st->ctlen,
	                              ctx->cred_kid);
	if (!agents_store_ok(r) || PQntuples(r) != 1) {
		rv = pl_db_call_error(call, r, "update the agent");
		PQclear(r);
		return rv;
	}
	out->agent = agents_store_agent_row(a, r, 0);
	PQclear(r);
	return PL_OK;
}

static int
update_agent(pl_call *call, const void *inp, void *outp)
{
	const Parley__Agents__V1__UpdateAgentRequest *in = inp;
	const char *tenant = caller_tenant(call);
	update_state st = { in, false, NULL, 0 };
	const char *key = in->llm ? in->llm->api_key : "";
	int rv;

	if (tenant == NULL)
		return call->code;
	if ((rv = check_id(call, "id", in->id)) != PL_OK)
		return rv;
	for (size_t i = 0; i < in->n_update_mask; i++) {
		bool ok = false;
		for (size_t k = 0; agent_mask_names[k] != NULL; k++)
			ok = ok || strcmp(agent_mask_names[k],
			                  in->update_mask[i]) == 0;
		if (!ok)
			return pl_call_violation(call, "update_mask",
			                         "unknown field \"%s\"",
			                         in->update_mask[i]);
	}
	if (strlen(key) > AG_MAX_KEY)
		return pl_call_violation(call, "llm.api_key", "is too long");
	st.set_key = in->n_update_mask
	                     ? in_mask(in->update_mask, in->n_update_mask,
	                               "llm.api_key")
	                     : key[0] != '\0';
	if (st.set_key &&
	    (rv = seal_key(call, key, &st.ct, &st.ctlen)) != PL_OK)
		return rv;
	rv = run(call, tenant, update_agent_tx, &st, outp);
	free(st.ct);
	return rv;
}

static int
get_agent_tx(pl_db *db, pl_call *call, const char *tenant, const void *inp,
             void *outp)
{
	const Parley__Agents__V1__GetAgentRequest *in = inp;
	Parley__Agents__V1__GetAgentResponse *out = outp;
	PGresult *r = agents_store_agent_get(db, tenant, in->id, false);
	int rv = PL_OK;

	if (!agents_store_ok(r))
		rv = pl_db_call_error(call, r, "load the agent");
	else if (PQntuples(r) == 0)
		rv = not_found(call, "agent", in->id);
	else
		out->agent = agents_store_agent_row(call->arena, r, 0);
	PQclear(r);
	return rv;
}

static int
get_agent(pl_call *call, const void *inp, void *outp)
{
	const Parley__Agents__V1__GetAgentRequest *in = inp;
	const char *tenant = caller_tenant(call);
	int rv;

	if (tenant == NULL)
		return call->code;
	if ((rv = check_id(call, "id", in->id)) != PL_OK)
		return rv;
	return run(call, tenant, get_agent_tx, in, outp);
}

typedef struct list_args {
	const void *in;
	const char *cursor;
	int limit;
} list_args;

static int
list_agents_tx(pl_db *db, pl_call *call, const char *tenant, const void *inp,
               void *outp)
{
	const list_args *la = inp;
	const Parley__Agents__V1__ListAgentsRequest *in = la->in;
	Parley__Agents__V1__ListAgentsResponse *out = outp;
	static const char *const st[] = { NULL, "draft", "published",
		                          "archived" };
	PGresult *r;
	int n;

	r = agents_store_agent_list(
	        db, tenant,
	        in->status >= 0 && in->status <= 3 ? st[in->status] : NULL,
	        la->cursor[0] ? la->cursor : NULL, la->limit + 1);
	if (!agents_store_ok(r)) {
		int rv = pl_db_call_error(call, r, "list the agents");
		PQclear(r);
		return rv;
	}
	n = PQntuples(r) > la->limit ? la->limit : PQntuples(r);
	out->agents = pl_arena_alloc(call->arena, sizeof(ag_agent *) * (n + 1));
	for (int i = 0; i < n; i++)
		out->agents[out->n_agents++] =
		        agents_store_agent_row(call->arena, r, i);
	if (PQntuples(r) > la->limit)
		out->next_page_token = agents_token_encode(
		        call->arena, out->agents[n - 1]->id);
	PQclear(r);
	return PL_OK;
}

static int
list_agents(pl_call *call, const void *inp, void *outp)
{
	const Parley__Agents__V1__ListAgentsRequest *in = inp;
	const char *tenant = caller_tenant(call);
	list_args la = { in, NULL, 0 };
	int rv;

	if (tenant == NULL)
		return call->code;
	if ((rv = page_size(call, in->page, 200, &la.limit)) != PL_OK)
		return rv;
	if ((la.cursor = page_cursor(call, in->page)) == NULL)
		return call->code;
	if (la.cursor[0] && !pl_uuid_valid(la.cursor))
		return pl_call_violation(call, "page.page_token",
		                         "is not valid");
	if (in->status < 0 || in->status > 3)
		return pl_call_violation(call, "status", "is not known");
	return run(call, tenant, list_agents_tx, &la, outp);
}

static int
publish_agent_tx(pl_db *db, pl_call *call, const char *tenant, const void *inp,
                 void *outp)
{
	const Parley__Agents__V1__PublishAgentRequest *in = inp;
	Parley__Agents__V1__PublishAgentResponse *out = outp;
	static const char *const dests[] = { "analytics", NULL };
	char vid[PL_UUID_STRLEN + 1];
	const char *user = call->principal->user_id;
	PGresult *r = agents_store_agent_get(db, tenant, in->id, true);
	int rv;
	pl_outbox_event ev = { 0 };

	if (!agents_store_ok(r)) {
		rv = pl_db_call_error(call, r, "load the agent");
		PQclear(r);
		return rv;
	}
	if (PQntuples(r) == 0) {
		PQclear(r);
		return not_found(call, "agent", in->id);
	}
	if (strcmp(PQgetvalue(r, 0, 3), "archived") == 0) {
		PQclear(r);
		return pl_call_error(call, PL_FAILED_PRECONDITION,
		                     "agent %s is archived", in->id);
	}
	PQclear(r);
	pl_uuid7_str(vid);
	r = agents_store_publish(db, tenant, in->id, vid,
	                         user && pl_uuid_valid(user) ? user : NULL,
	                         in->note);
	if (!agents_store_ok(r) || PQntuples(r) != 1) {
		rv = pl_db_call_error(call, r, "publish the agent");
		PQclear(r);
		return rv;
	}
	out->version = atoi(PQgetvalue(r, 0, 0));
	PQclear(r);
	r = agents_store_version_get(db, tenant, in->id, out->version);
	if (agents_store_ok(r) && PQntuples(r) == 1)
		out->agent_version =
		        agents_store_version_row(call->arena, r, 0);
	PQclear(r);
	r = agents_store_agent_get(db, tenant, in->id, false);
	if (agents_store_ok(r) && PQntuples(r) == 1)
		out->agent = agents_store_agent_row(call->arena, r, 0);
	PQclear(r);
	ev.tenant_id = tenant;
	ev.type = "agent.published";
	ev.payload_json =
	        pl_arena_printf(call->arena, "{\"version\":%d}", out->version);
	ev.dimensions_json =
	        pl_arena_printf(call->arena, "{\"agent_id\":\"%s\"}", in->id);
	if ((rv = pl_outbox_add(db, "agents", dests, &ev, NULL)) != PL_OK)
		return pl_call_error(call, rv, "could not record the event");
	return PL_OK;
}

static int
publish_agent(pl_call *call, const void *inp, void *outp)
{
	const Parley__Agents__V1__PublishAgentRequest *in = inp;
	const char *tenant = caller_tenant(call);
	int rv;

	if (tenant == NULL)
		return call->code;
	if ((rv = check_id(call, "id", in->id)) != PL_OK)
		return rv;
	if (!len_ok(in->note, AG_MAX_SHORT))
		return pl_call_violation(call, "note", "is too long");
	return run(call, tenant, publish_agent_tx, in, outp);
}

static int
archive_agent_tx(pl_db *db, pl_call *call, const char *tenant, const void *inp,
                 void *outp)
{
	const Parley__Agents__V1__ArchiveAgentRequest *in = inp;
	Parley__Agents__V1__ArchiveAgentResponse *out = outp;
	PGresult *r = agents_store_archive(db, tenant, in->id);
	int rv = PL_OK;

	if (!agents_store_ok(r))
		rv = pl_db_call_error(call, r, "archive the agent");
	else if (PQntuples(r) == 0)
		rv = not_found(call, "agent", in->id);
	else
		out->agent = agents_store_agent_row(call->arena, r, 0);
	PQclear(r);
	return rv;
}

static int
archive_agent(pl_call *call, const void *inp, void *outp)
{
	const Parley__Agents__V1__ArchiveAgentRequest *in = inp;
	const char *tenant = caller_tenant(call);
	int rv;

	if (tenant == NULL)
		return call->code;
	if ((rv = check_id(call, "id", in->id)) != PL_OK)
		return rv;
	return run(call, tenant, archive_agent_tx, in, outp);
}

static int
list_versions_tx(pl_db *db, pl_call *call, const char *tenant, const void *inp,
                 void *outp)
{
	const list_args *la = inp;
	const Parley__Agents__V1__ListVersionsRequest *in = la->in;
	Parley__Agents__V1__ListVersionsResponse *out = outp;
	PGresult *r = agents_store_agent_get(db, tenant, in->agent_id, false);
	int n, rv;

	if (!agents_store_ok(r) || PQntuples(r) == 0) {
		rv = agents_store_ok(r)
		             ? not_found(call, "agent", in->agent_id)
		             : pl_db_call_error(call, r, "load the agent");
		PQclear(r);
		return rv;
	}
	PQclear(r);
	r = agents_store_version_list(
	        db, tenant, in->agent_id,
	        la->cursor[0] ? atoi(la->cursor) : 2147483647, la->limit + 1);
	if (!agents_store_ok(r)) {
		rv = pl_db_call_error(call, r, "list the versions");
		PQclear(r);
		return rv;
	}
	n = PQntuples(r) > la->limit ? la->limit : PQntuples(r);
	out->versions =
	        pl_arena_alloc(call->arena, sizeof(ag_version *) * (n + 1));
	for (int i = 0; i < n; i++)
		out->versions[out->n_versions++] =
		        agents_store_version_row(call->arena, r, i);
	if (PQntuples(r) > la->limit)
		out->next_page_token = agents_token_encode(
		        call->arena,
		        pl_arena_printf(call->arena, "%d",
		                        out->versions[n - 1]->version));
	PQclear(r);
	return PL_OK;
}

static int
list_versions(pl_call *call, const void *inp, void *outp)
{
	const Parley__Agents__V1__ListVersionsRequest *in = inp;
	const char *tenant = caller_tenant(call);
	list_args la = { in, NULL, 0 };
	int rv;

	if (tenant == NULL)
		return call->code;
	if ((rv = check_id(call, "agent_id", in->agent_id)) != PL_OK)
		return rv;
	if ((rv = page_size(call, in->page, 200, &la.limit)) != PL_OK)
		return rv;
	if ((la.cursor = page_cursor(call, in->page)) == NULL)
		return call->code;
	if (la.cursor[0] && atoi(la.cursor) <= 0)
		return pl_call_violation(call, "page.page_token",
		                         "is not valid");
	return run(call, tenant, list_versions_tx, &la, outp);
}

// ---------------------------------------------------------------------------
// Knowledge bases

static int
load_kb(pl_db *db, pl_call *call, const char *tenant, const char *id,
        ag_kb **kb)
{
	PGresult *r = agents_store_kb_get(db, tenant, id);
	int rv = PL_OK;

	if (!agents_store_ok(r))
		rv = pl_db_call_error(call, r, "load the knowledge base");
	else if (PQntuples(r) == 0)
		rv = not_found(call, "knowledge base", id);
	else
		*kb = agents_store_kb_row(call->arena, r, 0);
	PQclear(r);
	return rv;
}

static int
create_kb_tx(pl_db *db, pl_call *call, const char *tenant, const void *inp,
             void *outp)
{
	const Parley__Agents__V1__CreateKnowledgeBaseRequest *in = inp;
	Parley__Agents__V1__CreateKnowledgeBaseResponse *out = outp;
	char id[PL_UUID_STRLEN + 1];
	PGresult *r;
	int rv;

	if (in->agent_id[0]) {
		r = agents_store_agent_get(db, tenant, in->agent_id, true);
		rv = !agents_store_ok(r)
		             ? pl_db_call_error(call, r, "load the agent")
		     : PQntuples(r) == 0
		             ? not_found(call, "agent", in->agent_id)
		             : PL_OK;
		PQclear(r);
		if (rv != PL_OK)
			return rv;
	}
	pl_uuid7_str(id);
	r = agents_store_kb_insert(db, tenant, id, in->name, in->description,
	                           in->language);
	if (!agents_store_ok(r)) {
		rv = pl_db_call_error(call, r, "create the knowledge base");
		PQclear(r);
		return rv;
	}
	out->knowledge_base = agents_store_kb_row(call->arena, r, 0);
	out->id = out->knowledge_base->id;
	PQclear(r);
	if (in->agent_id[0]) {
		r = agents_store_kb_attach(db, tenant, in->agent_id, id);
		rv = agents_store_ok(r)
		             ? PL_OK
		             : pl_db_call_error(call, r, "attach the base");
		PQclear(r);
		return rv;
	}
	return PL_OK;
}

static int
create_kb(pl_call *call, const void *inp, void *outp)
{
	const Parley__Agents__V1__CreateKnowledgeBaseRequest *in = inp;
	const char *tenant = caller_tenant(call);

	if (tenant == NULL)
		return call->code;
	if (in->name[0] == '\0' || !len_ok(in->name, AG_MAX_NAME))
		return pl_call_violation(call, "name",
		                         "must be 1 to 200 bytes of UTF-8");
	if (!len_ok(in->description, AG_MAX_SHORT))
		return pl_call_violation(call, "description", "is too long");
	if (!len_ok(in->language, 35))
		return pl_call_violation(call, "language", "is too long");
	if (in->agent_id[0] && !pl_uuid_valid(in->agent_id))
		return pl_call_violation(call, "agent_id", "must be a UUID");
	return run(call, tenant, create_kb_tx, in, outp);
}

static int
update_kb_tx(pl_db *db, pl_call *call, const char *tenant, const void *inp,
             void *outp)
{
	const Parley__Agents__V1__UpdateKnowledgeBaseRequest *in = inp;
	Parley__Agents__V1__UpdateKnowledgeBaseResponse *out = outp;
	bool m = in->n_update_mask > 0;
	const char *name =
	        (m ? in_mask(in->update_mask, in->n_update_mask, "name")
	           : in->name[0])
	                ? in->name
	                : NULL;
	const char *desc =
	        (m ? in_mask(in->update_mask, in->n_update_mask, "description")
	           : in->description[0])
	                ? in->description
	                : NULL;
	const char *lang =
	        (m ? in_mask(in->update_mask, in->n_update_mask, "language")
	           : in->language[0])
	                ? in->language
	                : NULL;
	PGresult *r;
	int rv;

	if (name != NULL && name[0] == '\0')
		return pl_call_violation(call, "name", "must not be empty");
	r = agents_store_kb_update(db, tenant, in->id, name, desc, lang);
	rv = !agents_store_ok(r) ? pl_db_call_error(call, r, "update the base")
	     : PQntuples(r) == 0 ? not_found(call, "knowledge base", in->id)
	                         : PL_OK;
	PQclear(r);
	if (rv != PL_OK)
		return rv;
	return load_kb(db, call, tenant, in->id, &out->knowledge_base);
}

static int
update_kb(pl_call *call, const void *inp, void *outp)
{
	const Parley__Agents__V1__UpdateKnowledgeBaseRequest *in = inp;
	const char *tenant = caller_tenant(call);
	int rv;

	if (tenant == NULL)
		return call->code;
	if ((rv = check_id(call, "id", in->id)) != PL_OK)
		return rv;
	for (size_t i = 0; i < in->n_update_mask; i++) {
		if (strcmp(in->update_mask[i], "name") &&
		    strcmp(in->update_mask[i], "description") &&
		    strcmp(in->update_mask[i], "language"))
			return pl_call_violation(call, "update_mask",
			                         "unknown field \"%s\"",
			                         in->update_mask[i]);
	}
	if (!len_ok(in->name, AG_MAX_NAME))
		return pl_call_violation(call, "name", "is too long");
	if (!len_ok(in->description, AG_MAX_SHORT))
		return pl_call_violation(call, "description", "is too long");
	if (!len_ok(in->language, 35))
		return pl_call_violation(call, "language", "is too long");
	return run(call, tenant, update_kb_tx, in, outp);
}

static int
delete_kb_tx(pl_db *db, pl_call *call, const char *tenant, const void *inp,
             void *outp)
{
	const Parley__Agents__V1__DeleteKnowledgeBaseRequest *in = inp;
	PGresult *r;
	ag_kb *kb;
	int rv;

	(void)outp;
	if ((rv = load_kb(db, call, tenant, in->id, &kb)) != PL_OK)
		return rv;
	r = agents_store_kb_in_use(db, tenant, in->id);
	rv = !agents_store_ok(r) ? pl_db_call_error(call, r, "check the base")
	     : PQntuples(r) > 0  ? pl_call_error(call, PL_FAILED_PRECONDITION,
	                                         "knowledge base %s is used by "
	                                          "the published agent %s",
	                                         in->id, PQgetvalue(r, 0, 0))
	                         : PL_OK;
	PQclear(r);
	if (rv != PL_OK)
		return rv;
	r = agents_store_kb_delete(db, tenant, in->id);
	rv = agents_store_ok(r) ? PL_OK
	                        : pl_db_call_error(call, r, "delete the base");
	PQclear(r);
	return rv;
}

static int
delete_kb(pl_call *call, const void *inp, void *outp)
{
	const Parley__Agents__V1__DeleteKnowledgeBaseRequest *in = inp;
	const char *tenant = caller_tenant(call);
	int rv;

	if (tenant == NULL)
		return call->code;
	if ((rv = check_id(call, "id", in->id)) != PL_OK)
		return rv;
	return run(call, tenant, delete_kb_tx, in, outp);
}

static int
list_kbs_tx(pl_db *db, pl_call *call, const char *tenant, const void *inp,
            void *outp)
{
	const list_args *la = inp;
	const Parley__Agents__V1__ListKnowledgeBasesRequest *in = la->in;
	Parley__Agents__V1__ListKnowledgeBasesResponse *out = outp;
	PGresult *r;
	int n, rv;

	if (in->agent_id[0]) {
		r = agents_store_agent_get(db, tenant, in->agent_id, false);
		rv = !agents_store_ok(r)
		             ? pl_db_call_error(call, r, "load the agent")
		     : PQntuples(r) == 0
		             ? not_found(call, "agent", in->agent_id)
		             : PL_OK;
		PQclear(r);
		if (rv != PL_OK)
			return rv;
	}
	r = agents_store_kb_list(
	        db, tenant, in->agent_id[0] ? in->agent_id : NULL,
	        la->cursor[0] ? la->cursor : NULL, la->limit + 1);
	if (!agents_store_ok(r)) {
		rv = pl_db_call_error(call, r, "list the bases");
		PQclear(r);
		return rv;
	}
	n = PQntuples(r) > la->limit ? la->limit : PQntuples(r);
	out->knowledge_bases =
	        pl_arena_alloc(call->arena, sizeof(ag_kb *) * (n + 1));
	for (int i = 0; i < n; i++)
		out->knowledge_bases[out->n_knowledge_bases++] =
		        agents_store_kb_row(call->arena, r, i);
	if (PQntuples(r) > la->limit)
		out->next_page_token = agents_token_encode(
		        call->arena, out->knowledge_bases[n - 1]->id);
	PQclear(r);
	return PL_OK;
}

static int
list_kbs(pl_call *call, const void *inp, void *outp)
{
	const Parley__Agents__V1__ListKnowledgeBasesRequest *in = inp;
	const char *tenant = caller_tenant(call);
	list_args la = { in, NULL, 0 };
	int rv;

	if (tenant == NULL)
		return call->code;
	if (in->agent_id[0] && !pl_uuid_valid(in->agent_id))
		return pl_call_violation(call, "agent_id", "must be a UUID");
	if ((rv = page_size(call, in->page, 200, &la.limit)) != PL_OK)
		return rv;
	if ((la.cursor = page_cursor(call, in->page)) == NULL)
		return call->code;
	if (la.cursor[0] && !pl_uuid_valid(la.cursor))
		return pl_call_violation(call, "page.page_token",
		                         "is not valid");
	return run(call, tenant, list_kbs_tx, &la, outp);
}

// ---------------------------------------------------------------------------
// Knowledge entries

static char *
keywords_norm(pl_arena *a, char *const *kw, size_t n, const char *intent)
{
	size_t len = strlen(intent) + 2;
	char *s, *p;

	for (size_t i = 0; i < n; i++)
		len += strlen(kw[i]) + 1;
	if ((s = pl_arena_alloc(a, len)) == NULL)
		return "";
	p = s;
	for (size_t i = 0; i < n; i++)
		p += sprintf(p, "%s ", kw[i]);
	for (const char *q = intent; *q; q++)
		*p++ = (*q == '_' || *q == '-' || *q == '.') ? ' ' : *q;
	*p = '\0';
	return agents_text_normalize(a, s);
}

static int
check_entry(pl_call *call, const ag_entry *e, const char *prefix)
{
	pl_arena *a = call->arena;

	if (e->question[0] == '\0' || !len_ok(e->question, AG_MAX_SHORT))
		return pl_call_violation(
		        call, pl_arena_printf(a, "%squestion", prefix),
		        "must be 1 to 1000 bytes of UTF-8");
	if (e->answer[0] == '\0' || !len_ok(e->answer, AG_MAX_TEXT))
		return pl_call_violation(call,
		                         pl_arena_printf(a, "%sanswer", prefix),
		                         "must be 1 byte to 64 KB of UTF-8");
	if (e->n_keywords > AG_MAX_LIST)
		return pl_call_violation(
		        call, pl_arena_printf(a, "%skeywords", prefix),
		        "must have at most %d keywords", AG_MAX_LIST);
	for (size_t i = 0; i < e->n_keywords; i++) {
		if (!len_ok(e->keywords[i], 100))
			return pl_call_violation(
			        call, pl_arena_printf(a, "%skeywords", prefix),
			        "keyword %zu is longer than 100 bytes", i);
	}
	if (!len_ok(e->intent, 100))
		return pl_call_violation(call,
		                         pl_arena_printf(a, "%sintent", prefix),
		                         "is too long");
	if (!len_ok(e->external_id, 200))
		return pl_call_violation(
		        call, pl_arena_printf(a, "%sexternal_id", prefix),
		        "is too long");
	return PL_OK;
}

// Resolves ImportKnowledge's target base: the given one, or the agent's
// first, made when it has none.
static int
import_target(pl_db *db, pl_call *call, const char *tenant,
              const Parley__Agents__V1__ImportKnowledgeRequest *in, char **kb)
{
	PGresult *r;
	ag_kb *b = NULL;
	size_t n;
	char **ids;
	int rv;

	if (in->knowledge_base_id[0]) {
		if ((rv = load_kb(db, call, tenant, in->knowledge_base_id,
		                  &b)) != PL_OK)
			return rv;
		*kb = b->id;
		return PL_OK;
	}
	r = agents_store_agent_kbs(db, tenant, in->agent_id);
	if (!agents_store_ok(r) || PQntuples(r) == 0) {
		rv = agents_store_ok(r)
		             ? not_found(call, "agent", in->agent_id)
		             : pl_db_call_error(call, r, "load the agent");
		PQclear(r);
		return rv;
	}
	{
		json_t *j = json_loads(PQgetvalue(r, 0, 0), 0, NULL);
		n = json_array_size(j);
		ids = NULL;
		if (n > 0)
			*kb = pl_arena_strdup(
			        call->arena,
			        json_string_value(json_array_get(j, 0)));
		json_decref(j);
	}
	(void)ids;
	if (n > 0) {
		PQclear(r);
		return PL_OK;
	}
	{
		char id[PL_UUID_STRLEN + 1];
		char *lang = agents_store_str(call->arena, r, 0, 1);

		PQclear(r);
		pl_uuid7_str(id);
		r = agents_store_kb_insert(db, tenant, id, "knowledge", "",
		                           lang);
		rv = agents_store_ok(r)
		             ? PL_OK
		             : pl_db_call_error(call, r, "create the base");
		PQclear(r);
		if (rv != PL_OK)
			return rv;
		r = agents_store_kb_attach(db, tenant, in->agent_id, id);
		rv = agents_store_ok(r)
		             ? PL_OK
		             : pl_db_call_error(call, r, "attach the base");
		PQclear(r);
		*kb = pl_arena_strdup(call->arena, id);
		return rv;
	}
}

static int
cmp_str_ptr(const void *x, const void *y)
{
	return strcmp(*(const char *const *)x, *(const char *const *)y);
}

// Whether an external_id appears twice among the call's entries.
static bool
ext_repeats(pl_arena *a, const Parley__Agents__V1__ImportKnowledgeRequest *in)
{
	const char **ext =
	        pl_arena_alloc(a, sizeof(*ext) * (in->n_entries + 1));
	size_t n = 0;

	if (ext == NULL)
		return true; // the loop needs no more memory
	for (size_t i = 0; i < in->n_entries; i++)
		if (in->entries[i]->external_id[0])
			ext[n++] = in->entries[i]->external_id;
	qsort(ext, n, sizeof(*ext), cmp_str_ptr);
	for (size_t i = 1; i < n; i++)
		if (strcmp(ext[i - 1], ext[i]) == 0)
			return true;
	return false;
}

// Entries [from, from + n) of an ImportKnowledge call written by one
// statement (agents_store_entries_upsert): 10,000 entries took ~4.5 s one
// statement each (bench_agents' setup).
static int
import_set(pl_db *db, pl_call *call, const char *tenant, const char *kb,
           const Parley__Agents__V1__ImportKnowledgeRequest *in, size_t from,
           size_t n, Parley__Agents__V1__ImportKnowledgeResponse *out)
{
	pl_arena *a = call->arena;
	json_t *items = json_array();
	char *text;
	PGresult *r;
	bool ok = items != NULL;
	int rv;

	for (size_t i = from; ok && i < from + n; i++) {
		const ag_entry *e = in->entries[i];
		const char *qn = agents_text_normalize(a, e->question),
		           *an = agents_text_normalize(a, e->answer),
		           *kn = keywords_norm(a, e->keywords, e->n_keywords,
		                               e->intent);
		char id[PL_UUID_STRLEN + 1];
		json_t *k = json_array(), *o;

		pl_uuid7_str(id);
		for (size_t j = 0; k != NULL && j < e->n_keywords; j++)
			json_array_append_new(k, json_string(e->keywords[j]));
		// json_pack takes k ("o") and drops what it built on failure.
		o = json_pack(
		        "{s:s, s:s, s:s, s:o, s:s, s:b, s:s?, s:s, s:s, "
		        "s:s}",
		        "id", id, "q", e->question, "a", e->answer, "k", k, "i",
		        e->intent, "act", !in->keep_inactive || e->is_active,
		        "ext", e->external_id[0] ? e->external_id : NULL, "qn",
		        qn ? qn : "", "kn", kn ? kn : "", "an", an ? an : "");
		ok = o != NULL && json_array_append_new(items, o) == 0;
	}
	text = ok ? json_dumps(items, JSON_COMPACT) : NULL;
	json_decref(items);
	if (text == NULL)
		return pl_call_error(call, PL_RESOURCE_EXHAUSTED,
		                     "out of memory");
	r = agents_store_entries_upsert(db, tenant, kb, text);
	free(text);
	if (!agents_store_ok(r) || (size_t)PQntuples(r) != n) {
		rv = agents_store_ok(r)
		             ? pl_call_error(call, PL_INTERNAL,
		                             "import wrote %d of %zu entries",
		                             PQntuples(r), n)
		             : pl_db_call_error(call, r, "import the entries");
		PQclear(r);
		return rv;
	}
	for (int row = 0; row < PQntuples(r); row++) {
		out->entry_ids[out->n_entry_ids++] =
		        agents_store_str(a, r, row, 1);
		if (PQgetvalue(r, row, 2)[0] == 't')
			out->created++;
		else
			out->updated++;
	}
	PQclear(r);
	return PL_OK;
}

static int
import_tx(pl_db *db, pl_call *call, const char *tenant, const void *inp,
          void *outp)
{
	const Parley__Agents__V1__ImportKnowledgeRequest *in = inp;
	Parley__Agents__V1__ImportKnowledgeResponse *out = outp;
	pl_arena *a = call->arena;
	char *kb = NULL;
	PGresult *r;
	int rv;

	out->created = out->updated = out->deleted = 0;
	out->n_entry_ids = 0;
	if ((rv = import_target(db, call, tenant, in, &kb)) != PL_OK)
		return rv;
	out->knowledge_base_id = kb;
	if (in->replace) {
		json_t *keep = json_array();
		char *s;

		for (size_t i = 0; i < in->n_entries; i++) {
			if (in->entries[i]->external_id[0])
				json_array_append_new(
				        keep,
				        json_string(
				                in->entries[i]->external_id));
		}
		s = json_dumps(keep, JSON_COMPACT);
		json_decref(keep);
		r = agents_store_entries_replace(db, tenant, kb, s);
		free(s);
		if (!agents_store_ok(r)) {
			rv = pl_db_call_error(call, r, "replace the entries");
			PQclear(r);
			return rv;
		}
		out->deleted = atoi(PQcmdTuples(r));
		PQclear(r);
	}
	out->entry_ids =
	        pl_arena_alloc(a, sizeof(char *) * (in->n_entries + 1));
	if (out->entry_ids == NULL)
		return pl_call_error(call, PL_RESOURCE_EXHAUSTED,
		                     "out of memory");
	if (!ext_repeats(a, in))
		return import_set(db, call, tenant, kb, in, 0, in->n_entries,
		                  out);
	// An external_id twice: entry after entry, so that the later one
	// updates what the earlier wrote (as separate calls would).
	for (size_t i = 0; i < in->n_entries; i++)
		if ((rv = import_set(db, call, tenant, kb, in, i, 1, out)) !=
		    PL_OK)
			return rv;
	return PL_OK;
}

static int
import_knowledge(pl_call *call, const void *inp, void *outp)
{
	const Parley__Agents__V1__ImportKnowledgeRequest *in = inp;
	const char *tenant = caller_tenant(call);
	int rv;

	if (tenant == NULL)
		return call->code;
	if (in->knowledge_base_id[0] == '\0' && in->agent_id[0] == '\0')
		return pl_call_violation(
		        call, "knowledge_base_id",
		        "knowledge_base_id or agent_id is required");
	if (in->knowledge_base_id[0] &&
	    (rv = check_id(call, "knowledge_base_id", in->knowledge_base_id)) !=
	            PL_OK)
		return rv;
	if (in->agent_id[0] &&
	    (rv = check_id(call, "agent_id", in->agent_id)) != PL_OK)
		return rv;
	if (in->n_entries == 0)
		return pl_call_violation(call, "entries", "must not be empty");
	if (in->n_entries > AG_MAX_IMPORT)
		return pl_call_violation(
		        call, "entries",
		        "must have at most %d entries per call", AG_MAX_IMPORT);
	for (size_t i = 0; i < in->n_entries; i++) {
		char *pre = pl_arena_printf(call->arena, "entries[%zu].", i);
		if ((rv = check_entry(call, in->entries[i], pre)) != PL_OK)
			return rv;
	}
	return run(call, tenant, import_tx, in, outp);
}

typedef struct entries_args {
	const char *kb_json;
	const char *intent;
	bool inactive;
	const char *cursor;
	bool asc;
	int limit;
	const char *agent_id;
	const char *kb_id;
} entries_args;

static int
list_entries(pl_db *db, pl_call *call, const char *tenant, entries_args *ea,
             ag_entry ***entries, size_t *n_entries, char **next)
{
	PGresult *r;
	int n, rv;

	if (ea->kb_id != NULL && ea->kb_id[0]) {
		ag_kb *kb;
		if ((rv = load_kb(db, call, tenant, ea->kb_id, &kb)) != PL_OK)
			return rv;
		ea->kb_json =
		        pl_arena_printf(call->arena, "[\"%s\"]", ea->kb_id);
	} else {
		r = agents_store_agent_kbs(db, tenant, ea->agent_id);
		if (!agents_store_ok(r) || PQntuples(r) == 0) {
			rv = agents_store_ok(r)
			             ? not_found(call, "agent", ea->agent_id)
			             : pl_db_call_error(call, r,
			                                "load the agent");
			PQclear(r);
			return rv;
		}
		ea->kb_json = agents_store_str(call->arena, r, 0, 0);
		PQclear(r);
	}
	r = agents_store_entry_list(
	        db, tenant, ea->kb_json, ea->intent, ea->inactive,
	        ea->cursor[0] ? ea->cursor : NULL, ea->asc, ea->limit + 1);
	if (!agents_store_ok(r)) {
		rv = pl_db_call_error(call, r, "list the entries");
		PQclear(r);
		return rv;
	}
	n = PQntuples(r) > ea->limit ? ea->limit : PQntuples(r);
	*entries = pl_arena_alloc(call->arena, sizeof(ag_entry *) * (n + 1));
	for (int i = 0; i < n; i++)
		(*entries)[(*n_entries)++] =
		        agents_store_entry_row(call->arena, r, i);
	if (PQntuples(r) > ea->limit)
		*next = agents_token_encode(call->arena, (*entries)[n - 1]->id);
	PQclear(r);
	return PL_OK;
}

static int
list_knowledge_tx(pl_db *db, pl_call *call, const char *tenant, const void *inp,
                  void *outp)
{
	Parley__Agents__V1__ListKnowledgeResponse *out = outp;
	entries_args ea = *(const entries_args *)inp;

	return list_entries(db, call, tenant, &ea, &out->entries,
	                    &out->n_entries, &out->next_page_token);
}

static int
list_knowledge(pl_call *call, const void *inp, void *outp)
{
	const Parley__Agents__V1__ListKnowledgeRequest *in = inp;
	const char *tenant = caller_tenant(call);
	entries_args ea = { 0 };
	int rv;

	if (tenant == NULL)
		return call->code;
	if (in->knowledge_base_id[0] == '\0' && in->agent_id[0] == '\0')
		return pl_call_violation(
		        call, "knowledge_base_id",
		        "knowledge_base_id or agent_id is required");
	if (in->knowledge_base_id[0] &&
	    (rv = check_id(call, "knowledge_base_id", in->knowledge_base_id)) !=
	            PL_OK)
		return rv;
	if (in->agent_id[0] &&
	    (rv = check_id(call, "agent_id", in->agent_id)) != PL_OK)
		return rv;
	if ((rv = page_size(call, in->page, 200, &ea.limit)) != PL_OK)
		return rv;
	if ((ea.cursor = page_cursor(call, in->page)) == NULL)
		return call->code;
	if (ea.cursor[0] && !pl_uuid_valid(ea.cursor))
		return pl_call_violation(call, "page.page_token",
		                         "is not valid");
	if (!len_ok(in->intent, 100))
		return pl_call_violation(call, "intent", "is too long");
	ea.intent = in->intent[0] ? in->intent : NULL;
	ea.inactive = in->include_inactive;
	ea.kb_id = in->knowledge_base_id;
	ea.agent_id = in->agent_id;
	return run(call, tenant, list_knowledge_tx, &ea, outp);
}

static int
export_tx(pl_db *db, pl_call *call, const char *tenant, const void *inp,
          void *outp)
{
	Parley__Agents__V1__ExportKnowledgeResponse *out = outp;
	entries_args ea = *(const entries_args *)inp;
	int rv;

	if ((rv = load_kb(db, call, tenant, ea.kb_id, &out->knowledge_base)) !=
	    PL_OK)
		return rv;
	return list_entries(db, call, tenant, &ea, &out->entries,
	                    &out->n_entries, &out->next_page_token);
}

static int
export_knowledge(pl_call *call, const void *inp, void *outp)
{
	const Parley__Agents__V1__ExportKnowledgeRequest *in = inp;
	const char *tenant = caller_tenant(call);
	entries_args ea = { 0 };
	int rv;

	if (tenant == NULL)
		return call->code;
	if ((rv = check_id(call, "knowledge_base_id", in->knowledge_base_id)) !=
	    PL_OK)
		return rv;
	if ((rv = page_size(call, in->page, 1000, &ea.limit)) != PL_OK)
		return rv;
	if ((ea.cursor = page_cursor(call, in->page)) == NULL)
		return call->code;
	if (ea.cursor[0] && !pl_uuid_valid(ea.cursor))
		return pl_call_violation(call, "page.page_token",
		                         "is not valid");
	ea.inactive = true;
	ea.asc = true;
	ea.kb_id = in->knowledge_base_id;
	return run(call, tenant, export_tx, &ea, outp);
}

static const char *const entry_mask_names[] = { "question",  "answer",
	                                        "keywords",  "intent",
	                                        "is_active", "external_id",
	                                        NULL };

static int
update_entry_tx(pl_db *db, pl_call *call, const char *tenant, const void *inp,
                void *outp)
{
	const Parley__Agents__V1__UpdateEntryRequest *in = inp;
	Parley__Agents__V1__UpdateEntryResponse *out = outp;
	pl_arena *a = call->arena;
	PGresult *r = agents_store_entry_get(db, tenant, in->id);
	ag_entry *e;
	const char *p[11];
	bool m = in->n_update_mask > 0;
	int rv;

	if (!agents_store_ok(r) || PQntuples(r) == 0) {
		rv = agents_store_ok(r)
		             ? not_found(call, "entry", in->id)
		             : pl_db_call_error(call, r, "load the entry");
		PQclear(r);
		return rv;
	}
	e = agents_store_entry_row(a, r, 0);
	PQclear(r);
#define WANT(n, given)                                                         \
	(m ? in_mask(in->update_mask, in->n_update_mask, n) : (given))
	if (WANT("question", in->question[0]))
		e->question = in->question;
	if (WANT("answer", in->answer[0]))
		e->answer = in->answer;
	if (WANT("keywords", in->n_keywords)) {
		e->keywords = in->keywords;
		e->n_keywords = in->n_keywords;
	}
	if (WANT("intent", in->intent[0]))
		e->intent = in->intent;
	if (WANT("is_active", in->is_active))
		e->is_active = in->is_active;
	if (WANT("external_id", in->external_id[0]))
		e->external_id = in->external_id;
#undef WANT
	if ((rv = check_entry(call, e, "")) != PL_OK)
		return rv;
	p[0] = tenant;
	p[1] = in->id;
	p[2] = e->question;
	p[3] = e->answer;
	p[4] = json_of_strings(a, e->keywords, e->n_keywords);
	p[5] = e->intent;
	p[6] = e->is_active ? "t" : "f";
	p[7] = e->external_id;
	p[8] = agents_text_normalize(a, e->question);
	p[9] = keywords_norm(a, e->keywords, e->n_keywords, e->intent);
	p[10] = agents_text_normalize(a, e->answer);
	r = agents_store_entry_update(db, p);
	if (!agents_store_ok(r) || PQntuples(r) != 1) {
		rv = pl_db_call_error(call, r, "update the entry");
		PQclear(r);
		return rv;
	}
	out->entry = agents_store_entry_row(a, r, 0);
	PQclear(r);
	return PL_OK;
}

static int
update_entry(pl_call *call, const void *inp, void *outp)
{
	const Parley__Agents__V1__UpdateEntryRequest *in = inp;
	const char *tenant = caller_tenant(call);
	int rv;

	if (tenant == NULL)
		return call->code;
	if ((rv = check_id(call, "id", in->id)) != PL_OK)
		return rv;
	for (size_t i = 0; i < in->n_update_mask; i++) {
		bool ok = false;
		for (size_t k = 0; entry_mask_names[k] != NULL; k++)
			ok = ok || strcmp(entry_mask_names[k],
			                  in->update_mask[i]) == 0;
		if (!ok)
			return pl_call_violation(call, "update_mask",
			                         "unknown field \"%s\"",
			                         in->update_mask[i]);
	}
	return run(call, tenant, update_entry_tx, in, outp);
}

static int
delete_entry_tx(pl_db *db, pl_call *call, const char *tenant, const void *inp,
                void *outp)
{
	const Parley__Agents__V1__DeleteEntryRequest *in = inp;
	PGresult *r = agents_store_entry_delete(db, tenant, in->id);
	int rv = !agents_store_ok(r)
	                 ? pl_db_call_error(call, r, "delete the entry")
	         : PQntuples(r) == 0 ? not_found(call, "entry", in->id)
	                             : PL_OK;

	(void)outp;
	PQclear(r);
	return rv;
}

static int
delete_entry(pl_call *call, const void *inp, void *outp)
{
	const Parley__Agents__V1__DeleteEntryRequest *in = inp;
	const char *tenant = caller_tenant(call);
	int rv;

	if (tenant == NULL)
		return call->code;
	if ((rv = check_id(call, "id", in->id)) != PL_OK)
		return rv;
	return run(call, tenant, delete_entry_tx, in, outp);
}

static int
cmp_ix_hit(const void *x, const void *y)
{
	const agents_ix_hit *a = x, *b = y;

	if (a->score != b->score)
		return a->score > b->score ? -1 : 1;
	return strcmp(a->id, b->id);
}

// SearchKnowledge from the in-memory retrieval indexes, Reply's ranking,
// each at its base's current content version (built now when this process
// has none yet, or only an older one): the best `limit` entries at or
// above min_score, then their rows by id. A status (the call's error set).
static int
search_index(pl_db *db, pl_call *call, const char *tenant, const char *kbj,
             const char *norm, int limit, double min_score,
             Parley__Agents__V1__SearchKnowledgeResponse *out)
{
	agents_ctx *ctx = call->arg;
	pl_arena *a = call->arena;
	PGresult *r = agents_store_kb_versions(db, tenant, kbj);
	agents_ix_hit *hits;
	size_t nkb, n = 0;
	json_t *ids;
	char *idj;
	int rv;

	if (!agents_store_ok(r)) {
		rv = pl_db_call_error(call, r, "search the knowledge base");
		PQclear(r);
		return rv;
	}
	nkb = (size_t)PQntuples(r);
	hits = pl_arena_alloc(a, sizeof(*hits) * (nkb * (size_t)limit + 1));
	out->matches =
	        pl_arena_alloc(a, sizeof(ag_match *) * ((size_t)limit + 1));
	if (hits == NULL || out->matches == NULL) {
		PQclear(r);
		return pl_call_error(call, PL_RESOURCE_EXHAUSTED,
		                     "out of memory");
	}
	for (size_t i = 0; i < nkb; i++) {
		agents_index *ix = agents_kb_index(
		        ctx->cache, db, call, tenant, PQgetvalue(r, (int)i, 0),
		        atoll(PQgetvalue(r, (int)i, 1)));
		size_t m, w;

		if (ix == NULL) {
			PQclear(r);
			return call->code;
		}
		m = agents_index_search(ix, a, norm, (size_t)limit, hits + n);
		// Keep those at or above min_score (ids copied: the index
		// goes with its reference).
		w = n;
		for (size_t j = 0; j < m; j++) {
			agents_ix_hit hit = hits[n + j];

			if (hit.score < min_score)
				continue;
			hit.id = pl_arena_strdup(a, hit.id);
			hits[w++] = hit;
		}
		n = w;
		agents_index_release(ix);
	}
	PQclear(r);
	qsort(hits, n, sizeof(*hits), cmp_ix_hit);
	if (n > (size_t)limit)
		n = (size_t)limit;
	if (n == 0)
		return PL_OK;
	ids = json_array();
	for (size_t i = 0; i < n; i++)
		json_array_append_new(ids, json_string(hits[i].id));
	idj = json_dumps(ids, JSON_COMPACT);
	json_decref(ids);
	r = agents_store_entries_by_id(db, tenant, idj ? idj : "[]");
	free(idj);
	if (!agents_store_ok(r)) {
		rv = pl_db_call_error(call, r, "search the knowledge base");
		PQclear(r);
		return rv;
	}
	// In the index's order; an entry deleted since is left out.
	for (size_t i = 0; i < n; i++) {
		for (int row = 0; row < PQntuples(r); row++) {
			ag_match *m;

			if (strcmp(PQgetvalue(r, row, 0), hits[i].id) != 0)
				continue;
			if ((m = pl_arena_zalloc(a, sizeof(*m))) == NULL)
				break;
			parley__agents__v1__knowledge_match__init(m);
			m->entry = agents_store_entry_row(a, r, row);
			m->score = hits[i].score;
			out->matches[out->n_matches++] = m;
			break;
		}
	}
	PQclear(r);
	return PL_OK;
}

static int
search_tx(pl_db *db, pl_call *call, const char *tenant, const void *inp,
          void *outp)
{
	const Parley__Agents__V1__SearchKnowledgeRequest *in = inp;
	Parley__Agents__V1__SearchKnowledgeResponse *out = outp;
	pl_arena *a = call->arena;
	char *kbj, *norm;
	PGresult *r;
	int rv;

	if (in->agent_id[0]) {
		r = agents_store_agent_kbs(db, tenant, in->agent_id);
		if (!agents_store_ok(r) || PQntuples(r) == 0) {
			rv = agents_store_ok(r)
			             ? not_found(call, "agent", in->agent_id)
			             : pl_db_call_error(call, r,
			                                "load the agent");
			PQclear(r);
			return rv;
		}
		kbj = agents_store_str(a, r, 0, 0);
		PQclear(r);
	} else {
		kbj = json_of_strings(a, in->knowledge_base_ids,
		                      in->n_knowledge_base_ids);
		r = agents_store_kbs_exist(db, tenant, kbj);
		rv = !agents_store_ok(r)
		             ? pl_db_call_error(call, r, "check the bases")
		     : (size_t)atoll(PQgetvalue(r, 0, 0)) !=
		                     in->n_knowledge_base_ids
		             ? pl_call_error(call, PL_NOT_FOUND,
		                             "knowledge base not found")
		             : PL_OK;
		PQclear(r);
		if (rv != PL_OK)
			return rv;
	}
	norm = agents_text_normalize(a, in->query);
	return search_index(db, call, tenant, kbj, norm,
	                    in->limit > 0 ? in->limit : 5, in->min_score, out);
}

static int
search_knowledge(pl_call *call, const void *inp, void *outp)
{
	const Parley__Agents__V1__SearchKnowledgeRequest *in = inp;
	const char *tenant = caller_tenant(call);
	int rv;

	if (tenant == NULL)
		return call->code;
	if (in->query[0] == '\0' || !len_ok(in->query, AG_MAX_QUERY))
		return pl_call_violation(call, "query",
		                         "must be 1 byte to 4 KB of UTF-8");
	if (in->agent_id[0] == '\0' && in->n_knowledge_base_ids == 0)
		return pl_call_violation(
		        call, "agent_id",
		        "agent_id or knowledge_base_ids is required");
	if (in->agent_id[0] &&
	    (rv = check_id(call, "agent_id", in->agent_id)) != PL_OK)
		return rv;
	if (in->n_knowledge_base_ids > AG_MAX_LIST)
		return pl_call_violation(call, "knowledge_base_ids",
		                         "must have at most %d ids",
		                         AG_MAX_LIST);
	for (size_t i = 0; i < in->n_knowledge_base_ids; i++) {
		if (!pl_uuid_valid(in->knowledge_base_ids[i]))
			return pl_call_violation(call, "knowledge_base_ids",
			                         "entry %zu is not a UUID", i);
	}
	if (in->limit < 0 || in->limit > 50)
		return pl_call_violation(call, "limit",
		                         "must be between 0 and 50");
	if (!(in->min_score >= 0 && in->min_score <= 1))
		return pl_call_violation(call, "min_score",
		                         "must be between 0 and 1");
	return run(call, tenant, search_tx, in, outp);
}

// ---------------------------------------------------------------------------
// Reply

static int
reply(pl_call *call, const void *inp, void *outp)
{
	const ag_reply_req *in = inp;
	int rv;

	if ((rv = agents_reply_check(call, in)) != PL_OK)
		return rv;
	if (!pl_call_is_tenant(call, in->tenant_id) &&
	    call->principal->tenant_id != NULL &&
	    call->principal->tenant_id[0] != '\0')
		return pl_call_error(call, PL_NOT_FOUND, "agent %s not found",
		                     in->agent_id);
	return agents_reply(call, in, outp);
}

// ReplyBatch: the items that pass Reply's checks are answered as one group
// on this worker's connection (the batch is the group: it does not wait in
// the queue of single Replies). Each item gets its own status; an LLM
// agent's item is returned `alone`, unanswered, for its caller to ask
// Reply (its HTTP call must not hold the group's transaction).
static int
reply_batch(pl_call *call, const void *inp, void *outp)
{
	const Parley__Agents__V1__ReplyBatchRequest *in = inp;
	Parley__Agents__V1__ReplyBatchResponse *out = outp;
	size_t n = in->n_items, m = 0;
	pl_arena *a = call->arena;
	Parley__Agents__V1__ReplyBatchResult *res, **resp;
	pl_call *calls, **cp;
	const ag_reply_req **ins;
	ag_reply_resp **outs;
	size_t *idx;
	int *rv;
	bool *alone;

	if (n == 0 || n > AG_MAX_BATCH)
		return pl_call_violation(call, "items",
		                         "must have 1 to %d items, got %zu",
		                         AG_MAX_BATCH, n);
	res = pl_arena_zalloc(a, n * sizeof(*res));
	resp = pl_arena_zalloc(a, n * sizeof(*resp));
	calls = pl_arena_zalloc(a, n * sizeof(*calls));
	cp = pl_arena_zalloc(a, n * sizeof(*cp));
	ins = pl_arena_zalloc(a, n * sizeof(*ins));
	outs = pl_arena_zalloc(a, n * sizeof(*outs));
	idx = pl_arena_zalloc(a, n * sizeof(*idx));
	rv = pl_arena_zalloc(a, n * sizeof(*rv));
	alone = pl_arena_zalloc(a, n * sizeof(*alone));
	if (res == NULL || resp == NULL || calls == NULL || cp == NULL ||
	    ins == NULL || outs == NULL || idx == NULL || rv == NULL ||
	    alone == NULL)
		return pl_call_error(call, PL_RESOURCE_EXHAUSTED,
		                     "out of memory");
	for (size_t i = 0; i < n; i++) {
		const ag_reply_req *item = in->items[i];
		int r;

		parley__agents__v1__reply_batch_result__init(&res[i]);
		resp[i] = &res[i];
		pl_call_item(&calls[i], call);
		r = agents_reply_check(&calls[i], item);
		if (r == PL_OK && !pl_call_is_tenant(call, item->tenant_id) &&
		    call->principal->tenant_id != NULL &&
		    call->principal->tenant_id[0] != '\0')
			r = pl_call_error(&calls[i], PL_NOT_FOUND,
			                  "agent %s not found", item->agent_id);
		if (r != PL_OK) {
			res[i].code = r;
			res[i].message = calls[i].message;
			continue;
		}
		if ((outs[m] = pl_arena_zalloc(a, sizeof(**outs))) == NULL)
			return pl_call_error(call, PL_RESOURCE_EXHAUSTED,
			                     "out of memory");
		parley__agents__v1__reply_response__init(outs[m]);
		cp[m] = &calls[i];
		ins[m] = item;
		idx[m++] = i;
	}
	if (m > 0)
		agents_reply_group(pl_call_db(call), m, cp, ins, outs, rv,
		                   alone);
	for (size_t k = 0; k < m; k++) {
		Parley__Agents__V1__ReplyBatchResult *r = &res[idx[k]];

		if (rv[k] != PL_OK) {
			r->code = rv[k];
			r->message = cp[k]->message
			                     ? cp[k]->message
			                     : (char *)pl_status_name(rv[k]);
		} else if (alone[k]) {
			r->alone = true;
		} else {
			r->reply = outs[k];
		}
	}
	out->results = resp;
	out->n_results = n;
	return PL_OK;
}

// ---------------------------------------------------------------------------
// Sessions

static int
get_session_tx(pl_db *db, pl_call *call, const char *tenant, const void *inp,
               void *outp)
{
	const Parley__Agents__V1__GetSessionRequest *in = inp;
	Parley__Agents__V1__GetSessionResponse *out = outp;
	PGresult *r = agents_store_session_get(
	        db, tenant, in->id[0] ? in->id : NULL, in->session_key);
	int rv = !agents_store_ok(r)
	                 ? pl_db_call_error(call, r, "load the session")
	         : PQntuples(r) == 0
	                 ? not_found(call, "session",
	                             in->id[0] ? in->id : in->session_key)
	                 : PL_OK;

	if (rv == PL_OK)
		out->session = agents_store_session_row(call->arena, r, 0);
	PQclear(r);
	return rv;
}

static int
get_session(pl_call *call, const void *inp, void *outp)
{
	const Parley__Agents__V1__GetSessionRequest *in = inp;
	const char *tenant = caller_tenant(call);
	int rv;

	if (tenant == NULL)
		return call->code;
	if (in->id[0] && (rv = check_id(call, "id", in->id)) != PL_OK)
		return rv;
	if (in->id[0] == '\0' &&
	    (in->session_key[0] == '\0' || strlen(in->session_key) > 200))
		return pl_call_violation(call, "id",
		                         "id or session_key is required");
	return run(call, tenant, get_session_tx, in, outp);
}

typedef struct sessions_args {
	const Parley__Agents__V1__ListSessionsRequest *in;
	char *after_at, *after_id;
	int limit;
} sessions_args;

static int
list_sessions_tx(pl_db *db, pl_call *call, const char *tenant, const void *inp,
                 void *outp)
{
	const sessions_args *sa = inp;
	Parley__Agents__V1__ListSessionsResponse *out = outp;
	static const char *const st[] = { NULL, "active", "ended", "expired" };
	PGresult *r;
	int n, rv;

	r = agents_store_session_list(
	        db, tenant, sa->in->agent_id[0] ? sa->in->agent_id : NULL,
	        st[sa->in->status],
	        sa->in->channel_id[0] ? sa->in->channel_id : NULL, sa->after_at,
	        sa->after_id, sa->limit + 1);
	if (!agents_store_ok(r)) {
		rv = pl_db_call_error(call, r, "list the sessions");
		PQclear(r);
		return rv;
	}
	n = PQntuples(r) > sa->limit ? sa->limit : PQntuples(r);
	out->sessions =
	        pl_arena_alloc(call->arena, sizeof(ag_session *) * (n + 1));
	for (int i = 0; i < n; i++)
		out->sessions[out->n_sessions++] =
		        agents_store_session_row(call->arena, r, i);
	if (PQntuples(r) > sa->limit)
		out->next_page_token = agents_token_encode(
		        call->arena, pl_arena_printf(call->arena, "%s|%s",
		                                     PQgetvalue(r, n - 1, 14),
		                                     out->sessions[n - 1]->id));
	PQclear(r);
	return PL_OK;
}

static int
list_sessions(pl_call *call, const void *inp, void *outp)
{
	const Parley__Agents__V1__ListSessionsRequest *in = inp;
	const char *tenant = caller_tenant(call);
	sessions_args sa = { in, NULL, NULL, 0 };
	const char *cur;
	int rv;

	if (tenant == NULL)
		return call->code;
	if (in->agent_id[0] && !pl_uuid_valid(in->agent_id))
		return pl_call_violation(call, "agent_id", "must be a UUID");
	if (in->status < 0 || in->status > 3)
		return pl_call_violation(call, "status", "is not known");
	if (strlen(in->channel_id) > 200)
		return pl_call_violation(call, "channel_id", "is too long");
	if ((rv = page_size(call, in->page, 200, &sa.limit)) != PL_OK)
		return rv;
	if ((cur = page_cursor(call, in->page)) == NULL)
		return call->code;
	if (cur[0]) {
		const char *bar = strchr(cur, '|');
		if (bar == NULL || !pl_uuid_valid(bar + 1) || bar == cur)
			return pl_call_violation(call, "page.page_token",
			                         "is not valid");
		for (const char *q = cur; q < bar; q++) {
			if (*q < '0' || *q > '9')
				return pl_call_violation(call,
				                         "page.page_token",
				                         "is not valid");
		}
		sa.after_at =
		        pl_arena_strndup(call->arena, cur, (size_t)(bar - cur));
		sa.after_id = pl_arena_strdup(call->arena, bar + 1);
	}
	return run(call, tenant, list_sessions_tx, &sa, outp);
}

static int
end_session_tx(pl_db *db, pl_call *call, const char *tenant, const void *inp,
               void *outp)
{
	const Parley__Agents__V1__EndSessionRequest *in = inp;
	Parley__Agents__V1__EndSessionResponse *out = outp;
	PGresult *r = agents_store_session_end(db, tenant, in->id);
	int rv = !agents_store_ok(r)
	                 ? pl_db_call_error(call, r, "end the session")
	         : PQntuples(r) == 0 ? not_found(call, "session", in->id)
	                             : PL_OK;

	if (rv == PL_OK)
		out->session = agents_store_session_row(call->arena, r, 0);
	PQclear(r);
	return rv;
}

static int
end_session(pl_call *call, const void *inp, void *outp)
{
	const Parley__Agents__V1__EndSessionRequest *in = inp;
	const char *tenant = caller_tenant(call);
	int rv;

	if (tenant == NULL)
		return call->code;
	if ((rv = check_id(call, "id", in->id)) != PL_OK)
		return rv;
	return run(call, tenant, end_session_tx, in, outp);
}

static int
list_messages_tx(pl_db *db, pl_call *call, const char *tenant, const void *inp,
                 void *outp)
{
	const list_args *la = inp;
	const Parley__Agents__V1__ListSessionMessagesRequest *in = la->in;
	Parley__Agents__V1__ListSessionMessagesResponse *out = outp;
	PGresult *r = agents_store_session_get(db, tenant, in->session_id, "");
	int n, rv;

	if (!agents_store_ok(r) || PQntuples(r) == 0) {
		rv = agents_store_ok(r)
		             ? not_found(call, "session", in->session_id)
		             : pl_db_call_error(call, r, "load the session");
		PQclear(r);
		return rv;
	}
	PQclear(r);
	r = agents_store_message_list(db, tenant, in->session_id,
	                              la->cursor[0] ? la->cursor : NULL,
	                              la->limit + 1);
	if (!agents_store_ok(r)) {
		rv = pl_db_call_error(call, r, "list the messages");
		PQclear(r);
		return rv;
	}
	n = PQntuples(r) > la->limit ? la->limit : PQntuples(r);
	out->messages =
	        pl_arena_alloc(call->arena, sizeof(ag_message *) * (n + 1));
	for (int i = 0; i < n; i++)
		out->messages[out->n_messages++] =
		        agents_store_message_row(call->arena, r, i);
	if (PQntuples(r) > la->limit)
		out->next_page_token = agents_token_encode(
		        call->arena, out->messages[n - 1]->id);
	PQclear(r);
	return PL_OK;
}

static int
list_session_messages(pl_call *call, const void *inp, void *outp)
{
	const Parley__Agents__V1__ListSessionMessagesRequest *in = inp;
	const char *tenant = caller_tenant(call);
	list_args la = { in, NULL, 0 };
	int rv;

	if (tenant == NULL)
		return call->code;
	if ((rv = check_id(call, "session_id", in->session_id)) != PL_OK)
		return rv;
	if ((rv = page_size(call, in->page, 200, &la.limit)) != PL_OK)
		return rv;
	if ((la.cursor = page_cursor(call, in->page)) == NULL)
		return call->code;
	if (la.cursor[0] && !pl_uuid_valid(la.cursor))
		return pl_call_violation(call, "page.page_token",
		                         "is not valid");
	return run(call, tenant, list_messages_tx, &la, outp);
}

// ---------------------------------------------------------------------------
// Checkpoints

static int
check_json_field(pl_call *call, const char *field,
                 const Parley__Rpc__V1__Json *j, size_t max)
{
	json_t *v;

	if (j == NULL || j->text[0] == '\0')
		return PL_OK;
	if (strlen(j->text) > max)
		return pl_call_violation(call, field, "is too long");
	v = json_loads(j->text, 0, NULL);
	if (!json_is_object(v)) {
		json_decref(v);
		return pl_call_violation(call, field, "must be a JSON object");
	}
	json_decref(v);
	return PL_OK;
}

static int
check_checkpoint(pl_call *call, const ag_checkpoint *c, const char *pre)
{
	pl_arena *a = call->arena;
	int rv;

	if (c->thread_id[0] == '\0' || !len_ok(c->thread_id, 200))
		return pl_call_violation(call,
		                         pl_arena_printf(a, "%sthread_id", pre),
		                         "must be 1 to 200 bytes");
	if (c->checkpoint_id[0] == '\0' || !len_ok(c->checkpoint_id, 200))
		return pl_call_violation(
		        call, pl_arena_printf(a, "%scheckpoint_id", pre),
		        "must be 1 to 200 bytes");
	if (!len_ok(c->checkpoint_ns, 200) ||
	    !len_ok(c->parent_checkpoint_id, 200) || !len_ok(c->type, 100) ||
	    !len_ok(c->legacy_thread_id, 200))
		return pl_call_violation(
		        call, pl_arena_printf(a, "%scheckpoint_ns", pre),
		        "is too long");
	if (c->session_id[0] && !pl_uuid_valid(c->session_id))
		return pl_call_violation(
		        call, pl_arena_printf(a, "%ssession_id", pre),
		        "must be a UUID");
	if ((rv = check_json_field(call, pl_arena_printf(a, "%sstate", pre),
	                           c->state, 4 << 20)) != PL_OK)
		return rv;
	return check_json_field(call, pl_arena_printf(a, "%smetadata", pre),
	                        c->metadata, 1 << 20);
}

static int
check_blob(pl_call *call, const ag_blob *b, const char *pre)
{
	if (b->thread_id[0] == '\0' || !len_ok(b->thread_id, 200) ||
	    !len_ok(b->checkpoint_ns, 200) || b->channel[0] == '\0' ||
	    !len_ok(b->channel, 200) || !len_ok(b->version, 200) ||
	    b->type[0] == '\0' || !len_ok(b->type, 100))
		return pl_call_violation(
		        call, pl_arena_printf(call->arena, "%sthread_id", pre),
		        "thread_id, channel and type are required (at most 200 "
		        "bytes)");
	return PL_OK;
}

static int
check_write(pl_call *call, const ag_write *w, const char *pre)
{
	if (w->thread_id[0] == '\0' || !len_ok(w->thread_id, 200) ||
	    !len_ok(w->checkpoint_ns, 200) || w->checkpoint_id[0] == '\0' ||
	    !len_ok(w->checkpoint_id, 200) || w->task_id[0] == '\0' ||
	    !len_ok(w->task_id, 200) || !len_ok(w->channel, 200) ||
	    !len_ok(w->type, 100) || !len_ok(w->task_path, 1000))
		return pl_call_violation(
		        call, pl_arena_printf(call->arena, "%sthread_id", pre),
		        "thread_id, checkpoint_id and task_id are required");
	return PL_OK;
}

typedef struct cp_batch {
	const char *tenant;
	ag_checkpoint *const *cps;
	size_t n_cps;
	ag_blob *const *blobs;
	size_t n_blobs;
	ag_write *const *writes;
	size_t n_writes;
	int created[3], skipped;
} cp_batch;

static int
save_batch(pl_db *db, pl_call *call, cp_batch *b)
{
	pl_arena *a = call->arena;
	PGresult *r;
	int rv;

	for (size_t i = 0; i < b->n_cps; i++) {
		const ag_checkpoint *c = b->cps[i];
		const char *p[10] = {
			b->tenant,
			c->thread_id,
			c->checkpoint_ns,
			c->checkpoint_id,
			c->parent_checkpoint_id,
			c->type,
			c->state && c->state->text[0] ? c->state->text : "{}",
			c->metadata && c->metadata->text[0] ? c->metadata->text
			                                    : "{}",
			c->session_id,
			c->legacy_thread_id
		};

		r = agents_store_checkpoint_insert(db, p);
		if (!agents_store_ok(r)) {
			rv = pl_db_call_error(call, r, "save the checkpoint");
			PQclear(r);
			return rv;
		}
		if (PQntuples(r) == 1)
			b->created[0]++;
		else
			b->skipped++;
		PQclear(r);
	}
	for (size_t i = 0; i < b->n_blobs; i++) {
		const ag_blob *x = b->blobs[i];
		bool null = x->data.len == 0 && strcmp(x->type, "empty") == 0;
		const char *p[7] = { b->tenant,
			             x->thread_id,
			             x->checkpoint_ns,
			             x->channel,
			             x->version,
			             x->type,
			             null ? NULL
			                  : agents_store_hex(a, x->data.data,
			                                     x->data.len) };

		r = agents_store_blob_insert(db, p);
		if (!agents_store_ok(r)) {
			rv = pl_db_call_error(call, r, "save the blob");
			PQclear(r);
			return rv;
		}
		if (PQntuples(r) == 1)
			b->created[1]++;
		else
			b->skipped++;
		PQclear(r);
	}
	for (size_t i = 0; i < b->n_writes; i++) {
		const ag_write *w = b->writes[i];
		const char *p[10] = {
			b->tenant,
			w->thread_id,
			w->checkpoint_ns,
			w->checkpoint_id,
			w->task_id,
			pl_arena_printf(a, "%d", w->idx),
			w->channel,
			w->type,
			agents_store_hex(a, w->data.data, w->data.len),
			w->task_path
		};

		r = agents_store_write_insert(db, p);
		if (!agents_store_ok(r)) {
			rv = pl_db_call_error(call, r, "save the write");
			PQclear(r);
			return rv;
		}
		if (PQntuples(r) == 1)
			b->created[2]++;
		else
			b->skipped++;
		PQclear(r);
	}
	return PL_OK;
}

static int
batch_tx(pl_db *db, pl_call *call, const char *tenant, const void *inp,
         void *outp)
{
	cp_batch *b = (cp_batch *)inp;

	(void)tenant;
	(void)outp;
	memset(b->created, 0, sizeof(b->created));
	b->skipped = 0;
	return save_batch(db, call, b);
}

static int
check_batch(pl_call *call, cp_batch *b)
{
	int rv;

	for (size_t i = 0; i < b->n_cps; i++) {
		if ((rv = check_checkpoint(call, b->cps[i],
		                           pl_arena_printf(call->arena,
		                                           "checkpoints[%zu].",
		                                           i))) != PL_OK)
			return rv;
	}
	for (size_t i = 0; i < b->n_blobs; i++) {
		if ((rv = check_blob(call, b->blobs[i],
		                     pl_arena_printf(call->arena, "blobs[%zu].",
		                                     i))) != PL_OK)
			return rv;
	}
	for (size_t i = 0; i < b->n_writes; i++) {
		if ((rv = check_write(call, b->writes[i],
		                      pl_arena_printf(call->arena,
		                                      "writes[%zu].", i))) !=
		    PL_OK)
			return rv;
	}
	return PL_OK;
}

static int
service_tenant(pl_call *call, const char *tenant)
{
	if (!pl_uuid_valid(tenant))
		return pl_call_violation(call, "tenant_id", "must be a UUID");
	return PL_OK;
}

static int
save_checkpoint(pl_call *call, const void *inp, void *outp)
{
	const Parley__Agents__V1__SaveCheckpointRequest *in = inp;
	Parley__Agents__V1__SaveCheckpointResponse *out = outp;
	cp_batch b = { 0 };
	int rv;

	if ((rv = service_tenant(call, in->tenant_id)) != PL_OK)
		return rv;
	if (in->checkpoint == NULL)
		return pl_call_violation(call, "checkpoint", "is required");
	b.tenant = in->tenant_id;
	b.cps = &in->checkpoint;
	b.n_cps = 1;
	b.blobs = in->blobs;
	b.n_blobs = in->n_blobs;
	b.writes = in->writes;
	b.n_writes = in->n_writes;
	if ((rv = check_batch(call, &b)) != PL_OK)
		return rv;
	for (size_t i = 0; i < in->n_blobs; i++) {
		if (strcmp(in->blobs[i]->thread_id, in->checkpoint->thread_id))
			return pl_call_violation(
			        call,
			        pl_arena_printf(call->arena,
			                        "blobs[%zu].thread_id", i),
			        "must be the checkpoint's thread");
	}
	if ((rv = run(call, in->tenant_id, batch_tx, &b, NULL)) != PL_OK)
		return rv;
	out->created = b.created[0] == 1;
	return PL_OK;
}

static int
latest_tx(pl_db *db, pl_call *call, const char *tenant, const void *inp,
          void *outp)
{
	const Parley__Agents__V1__GetLatestCheckpointRequest *in = inp;
	Parley__Agents__V1__GetLatestCheckpointResponse *out = outp;
	pl_arena *a = call->arena;
	PGresult *r = agents_store_checkpoint_latest(db, tenant, in->thread_id,
	                                             in->checkpoint_ns);
	ag_checkpoint *c;
	int rv, n;

	if (!agents_store_ok(r) || PQntuples(r) == 0) {
		rv = agents_store_ok(r)
		             ? not_found(call, "checkpoint thread",
		                         in->thread_id)
		             : pl_db_call_error(call, r, "load the checkpoint");
		PQclear(r);
		return rv;
	}
	c = pl_arena_zalloc(a, sizeof(*c));
	parley__agents__v1__checkpoint__init(c);
	c->thread_id = agents_store_str(a, r, 0, 0);
	c->checkpoint_ns = agents_store_str(a, r, 0, 1);
	c->checkpoint_id = agents_store_str(a, r, 0, 2);
	c->parent_checkpoint_id = agents_store_str(a, r, 0, 3);
	c->type = agents_store_str(a, r, 0, 4);
	c->state = pl_arena_zalloc(a, sizeof(*c->state));
	c->metadata = pl_arena_zalloc(a, sizeof(*c->metadata));
	parley__rpc__v1__json__init(c->state);
	parley__rpc__v1__json__init(c->metadata);
	c->state->text = agents_store_str(a, r, 0, 5);
	c->metadata->text = agents_store_str(a, r, 0, 6);
	c->session_id = agents_store_str(a, r, 0, 7);
	c->legacy_thread_id = agents_store_str(a, r, 0, 8);
	c->created_at = agents_store_str(a, r, 0, 9);
	out->checkpoint = c;
	PQclear(r);
	if (!in->include_blobs)
		return PL_OK;
	r = agents_store_checkpoint_blobs(db, tenant, c->thread_id,
	                                  c->checkpoint_ns, c->state->text);
	if (!agents_store_ok(r)) {
		rv = pl_db_call_error(call, r, "load the blobs");
		PQclear(r);
		return rv;
	}
	n = PQntuples(r);
	out->blobs = pl_arena_alloc(a, sizeof(ag_blob *) * (n + 1));
	for (int i = 0; i < n; i++) {
		ag_blob *b = pl_arena_zalloc(a, sizeof(*b));
		parley__agents__v1__checkpoint_blob__init(b);
		b->thread_id = c->thread_id;
		b->checkpoint_ns = c->checkpoint_ns;
		b->channel = agents_store_str(a, r, i, 0);
		b->version = agents_store_str(a, r, i, 1);
		b->type = agents_store_str(a, r, i, 2);
		b->data.data = agents_store_bytea(a, r, i, 3, &b->data.len);
		out->blobs[out->n_blobs++] = b;
	}
	PQclear(r);
	r = agents_store_checkpoint_writes(db, tenant, c->thread_id,
	                                   c->checkpoint_ns, c->checkpoint_id);
	if (!agents_store_ok(r)) {
		rv = pl_db_call_error(call, r, "load the writes");
		PQclear(r);
		return rv;
	}
	n = PQntuples(r);
	out->writes = pl_arena_alloc(a, sizeof(ag_write *) * (n + 1));
	for (int i = 0; i < n; i++) {
		ag_write *w = pl_arena_zalloc(a, sizeof(*w));
		parley__agents__v1__checkpoint_write__init(w);
		w->thread_id = c->thread_id;
		w->checkpoint_ns = c->checkpoint_ns;
		w->checkpoint_id = c->checkpoint_id;
		w->task_id = agents_store_str(a, r, i, 0);
		w->idx = atoi(PQgetvalue(r, i, 1));
		w->channel = agents_store_str(a, r, i, 2);
		w->type = agents_store_str(a, r, i, 3);
		w->data.data = agents_store_bytea(a, r, i, 4, &w->data.len);
		w->task_path = agents_store_str(a, r, i, 5);
		out->writes[out->n_writes++] = w;
	}
	PQclear(r);
	return PL_OK;
}

static int
get_latest_checkpoint(pl_call *call, const void *inp, void *outp)
{
	const Parley__Agents__V1__GetLatestCheckpointRequest *in = inp;
	const char *tenant = caller_tenant(call);

	if (tenant == NULL)
		return call->code;
	if (in->thread_id[0] == '\0' || strlen(in->thread_id) > 200)
		return pl_call_violation(call, "thread_id",
		                         "must be 1 to 200 bytes");
	if (strlen(in->checkpoint_ns) > 200)
		return pl_call_violation(call, "checkpoint_ns", "is too long");
	return run(call, tenant, latest_tx, in, outp);
}

static int
import_checkpoints(pl_call *call, const void *inp, void *outp)
{
	const Parley__Agents__V1__ImportCheckpointsRequest *in = inp;
	Parley__Agents__V1__ImportCheckpointsResponse *out = outp;
	cp_batch b = { 0 };
	int rv;

	if ((rv = service_tenant(call, in->tenant_id)) != PL_OK)
		return rv;
	if (in->agent_id[0] && !pl_uuid_valid(in->agent_id))
		return pl_call_violation(call, "agent_id", "must be a UUID");
	b.tenant = in->tenant_id;
	b.cps = in->checkpoints;
	b.n_cps = in->n_checkpoints;
	b.blobs = in->blobs;
	b.n_blobs = in->n_blobs;
	b.writes = in->writes;
	b.n_writes = in->n_writes;
	if ((rv = check_batch(call, &b)) != PL_OK)
		return rv;
	if ((rv = run(call, in->tenant_id, batch_tx, &b, NULL)) != PL_OK)
		return rv;
	out->checkpoints_created = b.created[0];
	out->blobs_created = b.created[1];
	out->writes_created = b.created[2];
	out->skipped = b.skipped;
	return PL_OK;
}

#define ROWS_DEFAULT   1000
#define ROWS_MAX       5000
#define ROWS_AFTER_MAX 2048 // bytes: five key columns of at most 200

// A page of a checkpoint table's rows (the import names the rows behind a
// checksum that differs).
static int
rows_tx(pl_db *db, pl_call *call, const char *tenant,
        const Parley__Agents__V1__GetImportSummaryRequest *in,
        Parley__Agents__V1__GetImportSummaryResponse *out)
{
	pl_arena *a = call->arena;
	int limit = in->rows_limit == 0         ? ROWS_DEFAULT
	            : in->rows_limit > ROWS_MAX ? ROWS_MAX
	                                        : in->rows_limit;
	PGresult *r = agents_store_import_rows(db, tenant, in->rows_of_table,
	                                       in->rows_after, limit);
	int n, rv;

	if (!agents_store_ok(r)) {
		rv = pl_db_call_error(call, r, "list the imported rows");
		PQclear(r);
		return rv;
	}
	n = PQntuples(r);
	out->rows = pl_arena_alloc(a, sizeof(void *) * (n + 1));
	for (int i = 0; i < n; i++) {
		Parley__Agents__V1__RowDigest *d =
		        pl_arena_zalloc(a, sizeof(*d));

		parley__agents__v1__row_digest__init(d);
		d->key = agents_store_str(a, r, i, 0);
		d->sha256 = agents_store_str(a, r, i, 1);
		out->rows[out->n_rows++] = d;
	}
	// A full page may have a next one; a short page is the last.
	if (n == limit)
		out->rows_next = out->rows[n - 1]->key;
	PQclear(r);
	return PL_OK;
}

static int
summary_tx(pl_db *db, pl_call *call, const char *tenant, const void *inp,
           void *outp)
{
	Parley__Agents__V1__GetImportSummaryResponse *out = outp;
	pl_arena *a = call->arena;
	const Parley__Agents__V1__GetImportSummaryRequest *in = inp;
	PGresult *r;
	int n, rv;

	if (in->rows_of_table[0] != '\0')
		return rows_tx(db, call, tenant, in, out);
	r = agents_store_import_summary(db, tenant);
	if (!agents_store_ok(r)) {
		rv = pl_db_call_error(call, r, "summarise the import");
		PQclear(r);
		return rv;
	}
	n = PQntuples(r);
	out->counts = pl_arena_alloc(a, sizeof(void *) * (n + 1));
	out->checksums = pl_arena_alloc(a, sizeof(void *) * (n + 1));
	for (int i = 0; i < n; i++) {
		Parley__Agents__V1__TableCount *c =
		        pl_arena_zalloc(a, sizeof(*c));
		Parley__Agents__V1__TableChecksum *s =
		        pl_arena_zalloc(a, sizeof(*s));

		parley__agents__v1__table_count__init(c);
		parley__agents__v1__table_checksum__init(s);
		c->table = agents_store_str(a, r, i, 0);
		c->count = atoll(PQgetvalue(r, i, 1));
		s->table = c->table;
		s->rows = c->count;
		s->sha256 = agents_store_str(a, r, i, 2);
		out->counts[out->n_counts++] = c;
		out->checksums[out->n_checksums++] = s;
	}
	PQclear(r);
	return PL_OK;
}

static int
get_import_summary(pl_call *call, const void *inp, void *outp)
{
	const Parley__Agents__V1__GetImportSummaryRequest *in = inp;
	int rv;

	if ((rv = service_tenant(call, in->tenant_id)) != PL_OK)
		return rv;
	if (in->rows_of_table[0] == '\0') {
		if (in->rows_after[0] != '\0' || in->rows_limit != 0)
			return pl_call_violation(call, "rows_of_table",
			                         "is required with rows_after "
			                         "and rows_limit");
	} else {
		if (!agents_store_import_table_known(in->rows_of_table))
			return pl_call_violation(call, "rows_of_table",
			                         "must be checkpoints, "
			                         "checkpoint_blobs or "
			                         "checkpoint_writes");
		if (strlen(in->rows_after) > ROWS_AFTER_MAX)
			return pl_call_violation(call, "rows_after",
			                         "at most %d bytes",
			                         ROWS_AFTER_MAX);
		if (in->rows_limit < 0)
			return pl_call_violation(call, "rows_limit",
			                         "must not be negative");
	}
	return run(call, in->tenant_id, summary_tx, in, outp);
}

// ---------------------------------------------------------------------------
// The table and the service

static const pl_rpc_method agents_methods[] = {
	{ "CreateAgent", create_agent, PL_ROLE_ADMIN, "agents:write", 0 },
	{ "UpdateAgent", update_agent, PL_ROLE_ADMIN, "agents:write", 0 },
	{ "GetAgent", get_agent, PL_ROLE_VIEWER, "agents:read", 0 },
	{ "ListAgents", list_agents, PL_ROLE_VIEWER, "agents:read", 0 },
	{ "PublishAgent", publish_agent, PL_ROLE_ADMIN, "agents:write", 0 },
	{ "ArchiveAgent", archive_agent, PL_ROLE_ADMIN, "agents:write", 0 },
	{ "ListVersions", list_versions, PL_ROLE_VIEWER, "agents:read", 0 },
	{ "CreateKnowledgeBase", create_kb, PL_ROLE_ADMIN, "agents:write", 0 },
	{ "UpdateKnowledgeBase", update_kb, PL_ROLE_ADMIN, "agents:write", 0 },
	{ "DeleteKnowledgeBase", delete_kb, PL_ROLE_ADMIN, "agents:write", 0 },
	{ "ListKnowledgeBases", list_kbs, PL_ROLE_VIEWER, "agents:read", 0 },
	{ "ImportKnowledge", import_knowledge, PL_ROLE_ADMIN, "agents:write",
	  0 },
	{ "ListKnowledge", list_knowledge, PL_ROLE_VIEWER, "agents:read", 0 },
	{ "ExportKnowledge", export_knowledge, PL_ROLE_ADMIN, "agents:read",
	  0 },
	{ "UpdateEntry", update_entry, PL_ROLE_ADMIN, "agents:write", 0 },
	{ "DeleteEntry", delete_entry, PL_ROLE_ADMIN, "agents:write", 0 },
	{ "SearchKnowledge", search_knowledge, PL_ROLE_VIEWER, "agents:read",
	  0 },
	{ "Reply", reply, PL_CALLER_SERVICE, NULL, 0 },
	{ "ReplyBatch", reply_batch, PL_CALLER_SERVICE, NULL, 0 },
	{ "GetSession", get_session, PL_ROLE_VIEWER, "agents:read", 0 },
	{ "ListSessions", list_sessions, PL_ROLE_VIEWER, "agents:read", 0 },
	{ "EndSession", end_session, PL_ROLE_AGENT, "agents:write", 0 },
	{ "ListSessionMessages", list_session_messages, PL_ROLE_VIEWER,
	  "agents:read", 0 },
	{ "SaveCheckpoint", save_checkpoint, PL_CALLER_SERVICE, NULL, 0 },
	{ "GetLatestCheckpoint", get_latest_checkpoint, PL_ROLE_ADMIN,
	  "agents:read", 0 },
	{ "ImportCheckpoints", import_checkpoints, PL_CALLER_SERVICE, NULL, 0 },
	{ "GetImportSummary", get_import_summary, PL_CALLER_SERVICE, NULL, 0 },
	{ NULL, NULL, 0, NULL, 0 },
};

const pl_rpc_service agents_rpc_service = {
	&parley__agents__v1__agents__descriptor,
	agents_methods,
};

static const pl_rpc_service *const agents_services[] = {
	&agents_rpc_service,
	NULL,
};

// The service's own configuration (read by the runner before init).
static char *cfg_cred_key, *cfg_cred_kid, *cfg_billing_url, *cfg_analytics_url;
static int64_t cfg_llm_timeout, cfg_llm_max, cfg_min_score, cfg_idle;
static int64_t cfg_index_kbs, cfg_reply_group, cfg_reply_at_once,
        cfg_reply_memory;

static const pl_cfg_entry agents_cfg_table[] = {
	{ "PARLEY_CREDENTIALS_KEY", PL_CFG_SECRET, "", 0, 0, &cfg_cred_key,
	  "base64 of 32 bytes: the key sealing LLM API keys" },
	{ "PARLEY_CREDENTIALS_KEY_ID", PL_CFG_STRING, "k1", 0, 0, &cfg_cred_kid,
	  "the id of PARLEY_CREDENTIALS_KEY, stored with each sealed key" },
	{ "PARLEY_LLM_TIMEOUT", PL_CFG_DURATION, "20s", 100, 600000,
	  &cfg_llm_timeout, "total time for one LLM call (connect is 2 s)" },
	{ "PARLEY_LLM_MAX_RESPONSE", PL_CFG_INT, "1048576", 1024, 67108864,
	  &cfg_llm_max, "largest LLM response accepted, in bytes" },
	{ "PARLEY_RETRIEVAL_MIN_SCORE_PCT", PL_CFG_INT, "30", 1, 100,
	  &cfg_min_score, "retrieval answers only above this score (%)" },
	{ "PARLEY_RETRIEVAL_INDEXES", PL_CFG_INT, "256", 1, 100000,
	  &cfg_index_kbs,
	  "knowledge-base indexes kept in memory (least recently used go)" },
	{ "PARLEY_REPLY_GROUP", PL_CFG_INT, "64", 0, 64, &cfg_reply_group,
	  "most replies answered together in one transaction (group "
	  "commit); 0: each alone" },
	{ "PARLEY_REPLY_GROUPS_AT_ONCE", PL_CFG_INT, "2", 1, 16,
	  &cfg_reply_at_once,
	  "groups of replies answered at the same time per process" },
	{ "PARLEY_REPLY_MEMORY", PL_CFG_INT, "4096", 0, 1000000,
	  &cfg_reply_memory,
	  "sessions remembered to answer a group in one round trip; 0: "
	  "always two" },
	{ "PARLEY_SESSION_INACTIVITY", PL_CFG_DURATION, "24h", 1000,
	  31536000000, &cfg_idle, "a session expires after this idle time" },
	{ "PARLEY_BILLING_URL", PL_CFG_STRING, "", 0, 0, &cfg_billing_url,
	  "billing's RPC URL (ai_tokens); empty: off" },
	{ "PARLEY_ANALYTICS_URL", PL_CFG_STRING, "", 0, 0, &cfg_analytics_url,
	  "analytics' RPC URL (events); empty: events wait in the outbox" },
	{ NULL, 0, NULL, 0, 0, NULL, NULL },
};

static pl_outbox_route agents_routes[2];

static int
agents_init(const pl_service_cfg *cfg, void **arg)
{
	agents_ctx *ctx = calloc(1, sizeof(*ctx));
	pl_rpc_client_config cc = { 0 };

	if (ctx == NULL)
		return PL_INTERNAL;
	if (cfg_cred_key != NULL && cfg_cred_key[0] != '\0') {
		if (!pl_key_decode(cfg_cred_key, ctx->cred_key)) {
			pl_error("PARLEY_CREDENTIALS_KEY: must be base64 of 32 "
			         "bytes");
			free(ctx);
			return PL_INVALID_ARGUMENT;
		}
		ctx->cred_key_set = true;
	} else {
		pl_info("PARLEY_CREDENTIALS_KEY is not set: LLM API keys "
		        "cannot "
		        "be stored");
	}
	snprintf(ctx->cred_kid, sizeof(ctx->cred_kid), "%s",
	         cfg_cred_kid ? cfg_cred_kid : "k1");
	ctx->llm_timeout_ms = cfg_llm_timeout > 0 ? cfg_llm_timeout : 20000;
	ctx->llm_max_response = cfg_llm_max > 0 ? cfg_llm_max : 1 << 20;
	ctx->min_score = (cfg_min_score > 0 ? cfg_min_score : 30) / 100.0;
	ctx->session_idle_ms = cfg_idle > 0 ? cfg_idle : 86400000;
	ctx->database_url = strdup(cfg->database_url);
	ctx->cache = agents_cache_new(
	        (size_t)(cfg_index_kbs > 0 ? cfg_index_kbs : 256));
	ctx->replyq =
	        agents_replyq_new((int)cfg_reply_group, (int)cfg_reply_at_once,
	                          (size_t)cfg_reply_memory);
	if (ctx->database_url == NULL || ctx->cache == NULL ||
	    ctx->replyq == NULL) {
		agents_replyq_free(ctx->replyq);
		agents_cache_free(ctx->cache);
		free(ctx->database_url);
		free(ctx);
		return PL_INTERNAL;
	}
	cc.secret = cfg->secret;
	cc.service = "agents";
	if (cfg_billing_url != NULL && cfg_billing_url[0] != '\0') {
		cc.urls = cfg_billing_url;
		if (pl_rpc_client_open(&ctx->billing, &cc) != PL_OK)
			ctx->billing = NULL;
	}
	if (ctx->billing == NULL)
		pl_info("PARLEY_BILLING_URL is not set: ai_tokens are not "
		        "reserved");
	if (cfg_analytics_url != NULL && cfg_analytics_url[0] != '\0') {
		cc.urls = cfg_analytics_url;
		if (pl_rpc_client_open(&ctx->analytics, &cc) != PL_OK)
			ctx->analytics = NULL;
	}
	if (ctx->analytics == NULL)
		pl_info("PARLEY_ANALYTICS_URL is not set: events wait in the "
		        "outbox");
	*arg = ctx;
	return PL_OK;
}

static int
agents_start(void *arg)
{
	agents_ctx *ctx = arg;
	pl_outbox_relay_config rc = { 0 };

	if (ctx->analytics == NULL)
		return PL_OK;
	agents_routes[0].destination = "analytics";
	agents_routes[0].client = ctx->analytics;
	agents_routes[0].method = "/parley.analytics.v1.Analytics/Track";
	rc.database_url = ctx->database_url;
	rc.schema = "agents";
	rc.source = "agents";
	rc.routes = agents_routes;
	return pl_outbox_relay_start(&ctx->relay, &rc);
}

static void
agents_stop(void *arg)
{
	agents_ctx *ctx = arg;

	if (ctx->relay != NULL) {
		pl_outbox_relay_stop(ctx->relay);
		ctx->relay = NULL;
	}
}

static void
agents_fini(void *arg)
{
	agents_ctx *ctx = arg;

	if (ctx == NULL)
		return;
	agents_stop(ctx);
	if (ctx->billing)
		pl_rpc_client_close(ctx->billing);
	if (ctx->analytics)
		pl_rpc_client_close(ctx->analytics);
	free(ctx->database_url);
	agents_cache_free(ctx->cache);
	agents_replyq_free(ctx->replyq);
	sodium_memzero(ctx->cred_key, sizeof(ctx->cred_key));
	free(ctx);
}

const pl_service_def agents_service_def = {
	.name = "agents",
	.schema = "agents",
	.services = agents_services,
	.migrations = agents_migrations,
	.n_migrations = AGENTS_N_MIGRATIONS,
	.default_listen = "tcp://127.0.0.1:7103",
	.default_ops_port = 9103,
	.cfg = agents_cfg_table,
	.init = agents_init,
	.start = agents_start,
	.stop = agents_stop,
	.fini = agents_fini,
};
