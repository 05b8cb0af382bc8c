// Every SQL statement of the agents service, with the conversions from
// rows to messages. Parameters only ($1..); tenant work runs inside
// pl_db_tx (row-level security) and every query also filters on tenant_id.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "store.h"

#define TS(x)                                                                  \
	"coalesce(to_char(" x " AT TIME ZONE 'UTC', "                          \
	"'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), '')"

// The configuration columns shared by agents and agent_versions, in the
// order agents_store_cfg_read expects (CFG_N columns).
#define CFG_COLS                                                               \
	"engine, llm_provider, llm_base_url, llm_model, llm_temperature, "     \
	"llm_max_tokens, llm_timeout_ms, llm_context_entries, "                \
	"llm_api_key_ct IS NOT NULL, system_prompt, greeting, "                \
	"fallback_message, array_to_json(knowledge_base_ids)::text, "          \
	"array_to_json(handoff_keywords)::text, "                              \
	"handoff_confidence_threshold, max_bot_turns, language, "              \
	"voice_provider, voice_id, voice_settings::text"
#define CFG_N 20

#define AGENT_COLS                                                             \
	"id, name, description, status, " CFG_COLS ", version, "               \
	"has_unpublished_changes, " TS("published_at") ", " TS(                \
	        "archived_at") ", " TS("created_at") ", " TS("updated_at")

#define VERSION_COLS                                                           \
	"id, agent_id, version, name, " CFG_COLS ", "                          \
	"coalesce(published_by_user_id::text, ''), " TS(                       \
	        "published_at") ", note"

#define KB_COLS                                                                \
	"b.id, b.name, b.description, b.language, (SELECT count(*) FROM "      \
	"agents.knowledge_entries e WHERE e.tenant_id = b.tenant_id AND "      \
	"e.knowledge_base_id = b.id), " TS("b.created_at") ", " TS(            \
	        "b.updated_at")

#define ENTRY_COLS                                                             \
	"e.id, e.knowledge_base_id, e.question, e.answer, "                    \
	"array_to_json(e.keywords)::text, e.intent, e.is_active, "             \
	"e.usage_count + coalesce((SELECT u.usage_count FROM "                 \
	"agents.knowledge_usage u WHERE u.tenant_id = e.tenant_id AND "        \
	"u.entry_id = e.id), 0), coalesce(e.external_id, ''), " TS(            \
	        "e.created_at") ", " TS("e.updated_at")
#define ENTRY_N 11

#define SESSION_COLS                                                           \
	"id, agent_id, session_key, channel_id, conversation_id, "             \
	"contact_id, website_domain, client_ip, message_count, "               \
	"context::text, status, " TS("started_at") ", " TS(                    \
	        "last_activity_at") ", " TS("ended_at")

#define MESSAGE_COLS                                                           \
	"id, session_id, role, content, audio_url, audio_duration_ms, "        \
	"tokens_in, tokens_out, latency_ms, model, engine, intent, "           \
	"confidence, " TS("created_at")

bool
agents_store_ok(const PGresult *r)
{
	return r != NULL && pl_db_result_status(r) == PL_OK;
}

char *
agents_store_str(pl_arena *a, const PGresult *r, int row, int col)
{
	if (PQgetisnull(r, row, col))
		return "";
	return pl_arena_strdup(a, PQgetvalue(r, row, col));
}

static bool
boolv(const PGresult *r, int row, int col)
{
	return PQgetvalue(r, row, col)[0] == 't';
}

static char **
json_strings(pl_arena *a, const char *text, size_t *n)
{
	json_t *arr = json_loads(text, 0, NULL);
	char **v = NULL;

	*n = 0;
	if (json_is_array(arr) && json_array_size(arr) > 0) {
		v = pl_arena_alloc(a, sizeof(*v) * json_array_size(arr));
		for (size_t i = 0; v != NULL && i < json_array_size(arr); i++) {
			const char *s =
			        json_string_value(json_array_get(arr, i));
			v[(*n)++] = pl_arena_strdup(a, s ? s : "");
		}
	}
	json_decref(arr);
	return v;
}

static Parley__Rpc__V1__Json *
jsonv(pl_arena *a, const char *text)
{
	Parley__Rpc__V1__Json *j;

	if (text == NULL || text[0] == '\0')
		return NULL;
	j = pl_arena_zalloc(a, sizeof(*j));
	if (j != NULL) {
		parley__rpc__v1__json__init(j);
		j->text = pl_arena_strdup(a, text);
	}
	return j;
}

int
agents_engine_from_text(const char *s)
{
	return strcmp(s, "openai_compatible") == 0 ? AG_ENGINE_OPENAI
	                                           : AG_ENGINE_RETRIEVAL;
}

const char *
agents_engine_text(int e)
{
	return e == AG_ENGINE_OPENAI ? "openai_compatible" : "retrieval";
}

void
agents_store_cfg_read(pl_arena *a, const PGresult *r, int row, int c,
                      agents_cfg *cfg)
{
	ag_llm *llm = pl_arena_zalloc(a, sizeof(*llm));
	ag_voice *voice = pl_arena_zalloc(a, sizeof(*voice));

	memset(cfg, 0, sizeof(*cfg));
	parley__agents__v1__llm_config__init(llm);
	parley__agents__v1__voice_settings__init(voice);
	cfg->engine = agents_engine_from_text(PQgetvalue(r, row, c));
	llm->provider = agents_store_str(a, r, row, c + 1);
	llm->base_url = agents_store_str(a, r, row, c + 2);
	llm->model = agents_store_str(a, r, row, c + 3);
	llm->temperature = atof(PQgetvalue(r, row, c + 4));
	llm->max_tokens = atoi(PQgetvalue(r, row, c + 5));
	llm->timeout_ms = atoi(PQgetvalue(r, row, c + 6));
	llm->context_entries = atoi(PQgetvalue(r, row, c + 7));
	llm->api_key_set = boolv(r, row, c + 8);
	cfg->llm = llm;
	cfg->system_prompt = agents_store_str(a, r, row, c + 9);
	cfg->greeting = agents_store_str(a, r, row, c + 10);
	cfg->fallback_message = agents_store_str(a, r, row, c + 11);
	cfg->kb_ids =
	        json_strings(a, PQgetvalue(r, row, c + 12), &cfg->n_kb_ids);
	cfg->keywords =
	        json_strings(a, PQgetvalue(r, row, c + 13), &cfg->n_keywords);
	cfg->threshold = atof(PQgetvalue(r, row, c + 14));
	cfg->max_bot_turns = atoi(PQgetvalue(r, row, c + 15));
	cfg->language = agents_store_str(a, r, row, c + 16);
	voice->provider = agents_store_str(a, r, row, c + 17);
	voice->voice_id = agents_store_str(a, r, row, c + 18);
	voice->settings = jsonv(a, strcmp(PQgetvalue(r, row, c + 19), "{}")
	                                   ? PQgetvalue(r, row, c + 19)
	                                   : "");
	cfg->voice = voice;
}

static const int agent_status_of[] = {
	PARLEY__AGENTS__V1__AGENT_STATUS__AGENT_STATUS_DRAFT,
	PARLEY__AGENTS__V1__AGENT_STATUS__AGENT_STATUS_PUBLISHED,
	PARLEY__AGENTS__V1__AGENT_STATUS__AGENT_STATUS_ARCHIVED,
};

static int
agent_status(const char *s)
{
	return strcmp(s, "published") == 0  ? agent_status_of[1]
	       : strcmp(s, "archived") == 0 ? agent_status_of[2]
	                                    : agent_status_of[0];
}

ag_agent *
agents_store_agent_row(pl_arena *a, const PGresult *r, int row)
{
	ag_agent *ag = pl_arena_zalloc(a, sizeof(*ag));
	agents_cfg cfg;
	int c = 4 + CFG_N;

	parley__agents__v1__agent__init(ag);
	ag->id = agents_store_str(a, r, row, 0);
	ag->name = agents_store_str(a, r, row, 1);
	ag->description = agents_store_str(a, r, row, 2);
	ag->status = agent_status(PQgetvalue(r, row, 3));
	agents_store_cfg_read(a, r, row, 4, &cfg);
	ag->engine = cfg.engine;
	ag->llm = cfg.llm;
	ag->system_prompt = cfg.system_prompt;
	ag->greeting = cfg.greeting;
	ag->fallback_message = cfg.fallback_message;
	ag->knowledge_base_ids = cfg.kb_ids;
	ag->n_knowledge_base_ids = cfg.n_kb_ids;
	ag->handoff_keywords = cfg.keywords;
	ag->n_handoff_keywords = cfg.n_keywords;
	ag->handoff_confidence_threshold = cfg.threshold;
	ag->max_bot_turns = cfg.max_bot_turns;
	ag->language = cfg.language;
	ag->voice = cfg.voice;
	ag->version = atoi(PQgetvalue(r, row, c));
	ag->has_unpublished_changes = boolv(r, row, c + 1);
	ag->published_at = agents_store_str(a, r, row, c + 2);
	ag->archived_at = agents_store_str(a, r, row, c + 3);
	ag->created_at = agents_store_str(a, r, row, c + 4);
	ag->updated_at = agents_store_str(a, r, row, c + 5);
	return ag;
}

ag_version *
agents_store_version_row(pl_arena *a, const PGresult *r, int row)
{
	ag_version *v = pl_arena_zalloc(a, sizeof(*v));
	agents_cfg cfg;
	int c = 4 + CFG_N;

	parley__agents__v1__agent_version__init(v);
	v->id = agents_store_str(a, r, row, 0);
	v->agent_id = agents_store_str(a, r, row, 1);
	v->version = atoi(PQgetvalue(r, row, 2));
	v->name = agents_store_str(a, r, row, 3);
	agents_store_cfg_read(a, r, row, 4, &cfg);
	v->engine = cfg.engine;
	v->llm = cfg.llm;
	v->system_prompt = cfg.system_prompt;
	v->greeting = cfg.greeting;
	v->fallback_message = cfg.fallback_message;
	v->knowledge_base_ids = cfg.kb_ids;
	v->n_knowledge_base_ids = cfg.n_kb_ids;
	v->handoff_keywords = cfg.keywords;
	v->n_handoff_keywords = cfg.n_keywords;
	v->handoff_confidence_threshold = cfg.threshold;
	v->max_bot_turns = cfg.max_bot_turns;
	v->language = cfg.language;
	v->voice = cfg.voice;
	v->published_by_user_id = agents_store_str(a, r, row, c);
	v->published_at = agents_store_str(a, r, row, c + 1);
	v->note = agents_store_str(a, r, row, c + 2);
	return v;
}

ag_kb *
agents_store_kb_row(pl_arena *a, const PGresult *r, int row)
{
	ag_kb *kb = pl_arena_zalloc(a, sizeof(*kb));

	parley__agents__v1__knowledge_base__init(kb);
	kb->id = agents_store_str(a, r, row, 0);
	kb->name = agents_store_str(a, r, row, 1);
	kb->description = agents_store_str(a, r, row, 2);
	kb->language = agents_store_str(a, r, row, 3);
	kb->entry_count = atoll(PQgetvalue(r, row, 4));
	kb->created_at = agents_store_str(a, r, row, 5);
	kb->updated_at = agents_store_str(a, r, row, 6);
	return kb;
}

ag_entry *
agents_store_entry_row(pl_arena *a, const PGresult *r, int row)
{
	ag_entry *e = pl_arena_zalloc(a, sizeof(*e));

	parley__agents__v1__knowledge_entry__init(e);
	e->id = agents_store_str(a, r, row, 0);
	e->knowledge_base_id = agents_store_str(a, r, row, 1);
	e->question = agents_store_str(a, r, row, 2);
	e->answer = agents_store_str(a, r, row, 3);
	e->keywords = json_strings(a, PQgetvalue(r, row, 4), &e->n_keywords);
	e->intent = agents_store_str(a, r, row, 5);
	e->is_active = boolv(r, row, 6);
	e->usage_count = atoll(PQgetvalue(r, row, 7));
	e->external_id = agents_store_str(a, r, row, 8);
	e->created_at = agents_store_str(a, r, row, 9);
	e->updated_at = agents_store_str(a, r, row, 10);
	return e;
}

ag_session *
agents_store_session_row(pl_arena *a, const PGresult *r, int row)
{
	ag_session *s = pl_arena_zalloc(a, sizeof(*s));
	const char *st;

	parley__agents__v1__agent_session__init(s);
	s->id = agents_store_str(a, r, row, 0);
	s->agent_id = agents_store_str(a, r, row, 1);
	s->session_key = agents_store_str(a, r, row, 2);
	s->channel_id = agents_store_str(a, r, row, 3);
	s->conversation_id = agents_store_str(a, r, row, 4);
	s->contact_id = agents_store_str(a, r, row, 5);
	s->website_domain = agents_store_str(a, r, row, 6);
	s->client_ip = agents_store_str(a, r, row, 7);
	s->message_count = atoll(PQgetvalue(r, row, 8));
	s->context = jsonv(a, PQgetvalue(r, row, 9));
	st = PQgetvalue(r, row, 10);
	s->status =
	        strcmp(st, "ended") == 0
	                ? PARLEY__AGENTS__V1__SESSION_STATUS__SESSION_STATUS_ENDED
	        : strcmp(st, "expired") == 0
	                ? PARLEY__AGENTS__V1__SESSION_STATUS__SESSION_STATUS_EXPIRED
	                : PARLEY__AGENTS__V1__SESSION_STATUS__SESSION_STATUS_ACTIVE;
	s->started_at = agents_store_str(a, r, row, 11);
	s->last_activity_at = agents_store_str(a, r, row, 12);
	s->ended_at = agents_store_str(a, r, row, 13);
	return s;
}

ag_message *
agents_store_message_row(pl_arena *a, const PGresult *r, int row)
{
	ag_message *m = pl_arena_zalloc(a, sizeof(*m));
	const char *role = PQgetvalue(r, row, 2);

	parley__agents__v1__agent_message__init(m);
	m->id = agents_store_str(a, r, row, 0);
	m->session_id = agents_store_str(a, r, row, 1);
	m->role =
	        strcmp(role, "user") == 0
	                ? PARLEY__AGENTS__V1__MESSAGE_ROLE__MESSAGE_ROLE_USER
	        : strcmp(role, "assistant") == 0
	                ? PARLEY__AGENTS__V1__MESSAGE_ROLE__MESSAGE_ROLE_ASSISTANT
	        : strcmp(role, "tool") == 0
	                ? PARLEY__AGENTS__V1__MESSAGE_ROLE__MESSAGE_ROLE_TOOL
	                : PARLEY__AGENTS__V1__MESSAGE_ROLE__MESSAGE_ROLE_SYSTEM;
	m->content = agents_store_str(a, r, row, 3);
	m->audio_url = agents_store_str(a, r, row, 4);
	m->audio_duration_ms = atoi(PQgetvalue(r, row, 5));
	m->tokens_in = atoi(PQgetvalue(r, row, 6));
	m->tokens_out = atoi(PQgetvalue(r, row, 7));
	m->latency_ms = atoi(PQgetvalue(r, row, 8));
	m->model = agents_store_str(a, r, row, 9);
	m->engine = PQgetvalue(r, row, 10)[0]
	                    ? agents_engine_from_text(PQgetvalue(r, row, 10))
	                    : 0;
	m->intent = agents_store_str(a, r, row, 11);
	m->confidence = atof(PQgetvalue(r, row, 12));
	m->created_at = agents_store_str(a, r, row, 13);
	return m;
}

// ---------------------------------------------------------------------------
// Agents

// $1 tenant, $2 id, $3 name, $4 description, then the configuration
// ($5 engine ... $24 voice_settings), $25 set the key, $26 key, $27 kid.
#define CFG_PARAMS 20

static void
cfg_params(pl_arena *a, const agents_cfg *c, const char **p)
{
	json_t *kb = json_array(), *kw = json_array();
	char *s;

	for (size_t i = 0; i < c->n_kb_ids; i++)
		json_array_append_new(kb, json_string(c->kb_ids[i]));
	for (size_t i = 0; i < c->n_keywords; i++)
		json_array_append_new(kw, json_string(c->keywords[i]));
	p[0] = agents_engine_text(c->engine);
	p[1] = c->llm->provider;
	p[2] = c->llm->base_url;
	p[3] = c->llm->model;
	p[4] = pl_arena_printf(a, "%.17g", c->llm->temperature);
	p[5] = pl_arena_printf(a, "%d", c->llm->max_tokens);
	p[6] = pl_arena_printf(a, "%d", c->llm->timeout_ms);
	p[7] = pl_arena_printf(a, "%d", c->llm->context_entries);
	p[8] = c->system_prompt;
	p[9] = c->greeting;
	p[10] = c->fallback_message;
	s = json_dumps(kb, JSON_COMPACT);
	p[11] = pl_arena_strdup(a, s);
	free(s);
	s = json_dumps(kw, JSON_COMPACT);
	p[12] = pl_arena_strdup(a, s);
	free(s);
	p[13] = pl_arena_printf(a, "%.17g", c->threshold);
	p[14] = pl_arena_printf(a, "%d", c->max_bot_turns);
	p[15] = c->language;
	p[16] = c->voice->provider;
	p[17] = c->voice->voice_id;
	p[18] = c->voice->settings && c->voice->settings->text[0]
	                ? c->voice->settings->text
	                : "{}";
	p[19] = NULL;
	json_decref(kb);
	json_decref(kw);
}

char *
agents_store_hex(pl_arena *a, const uint8_t *b, size_t n)
{
	char *s = pl_arena_alloc(a, 2 * n + 3);

	if (s == NULL)
		return NULL;
	s[0] = '\\';
	s[1] = 'x';
	for (size_t i = 0; i < n; i++)
		snprintf(s + 2 + 2 * i, 3, "%02x", b[i]);
	s[2 + 2 * n] = '\0';
	return s;
}

#define CFG_SET_VALUES                                                         \
	"$5, $6, $7, $8, $9::float8, $10::int, $11::int, $12::int, $13, "      \
	"$14, $15, ARRAY(SELECT jsonb_array_elements_text($16::jsonb))::"      \
	"uuid[], ARRAY(SELECT jsonb_array_elements_text($17::jsonb)), "        \
	"$18::float8, $19::int, $20, $21, $22, $23::jsonb"

PGresult *
agents_store_agent_insert(pl_db *db, pl_arena *a, const char *tenant,
                          const char *id, const char *name, const char *desc,
                          const agents_cfg *c, const uint8_t *key_ct,
                          size_t key_len, const char *kid)
{
	const char *p[25];

	p[0] = tenant;
	p[1] = id;
	p[2] = name;
	p[3] = desc;
	cfg_params(a, c, p + 4);
	p[23] = key_ct ? agents_store_hex(a, key_ct, key_len) : NULL;
	p[24] = key_ct ? kid : NULL;
	return pl_db_exec(
	        db,
	        "INSERT INTO agents.agents (tenant_id, id, name, description, "
	        "engine, llm_provider, llm_base_url, llm_model, "
	        "llm_temperature, "
	        "llm_max_tokens, llm_timeout_ms, llm_context_entries, "
	        "system_prompt, greeting, fallback_message, "
	        "knowledge_base_ids, "
	        "handoff_keywords, handoff_confidence_threshold, "
	        "max_bot_turns, "
	        "language, voice_provider, voice_id, voice_settings, "
	        "llm_api_key_ct, llm_api_key_kid) VALUES ($1, $2, $3, "
	        "$4, " CFG_SET_VALUES
	        ", $24::bytea, $25) RETURNING " AGENT_COLS,
	        25, p);
}

PGresult *
agents_store_agent_update(pl_db *db, pl_arena *a, const char *tenant,
                          const char *id, const char *name, const char *desc,
                          const agents_cfg *c, bool set_key,
                          const uint8_t *key_ct, size_t key_len,
                          const char *kid)
{
	const char *p[26];

	p[0] = tenant;
	p[1] = id;
	p[2] = name;
	p[3] = desc;
	cfg_params(a, c, p + 4);
	p[23] = key_ct ? agents_store_hex(a, key_ct, key_len) : NULL;
	p[24] = key_ct ? kid : NULL;
	p[25] = set_key ? "t" : "f";
	return pl_db_exec(
	        db,
	        "UPDATE agents.agents SET (name, description, engine, "
	        "llm_provider, llm_base_url, llm_model, llm_temperature, "
	        "llm_max_tokens, llm_timeout_ms, llm_context_entries, "
	        "system_prompt, greeting, fallback_message, "
	        "knowledge_base_ids, "
	        "handoff_keywords, handoff_confidence_threshold, "
	        "max_bot_turns, "
	        "language, voice_provider, voice_id, voice_settings) = ($3, "
	        "$4, " CFG_SET_VALUES "), "
	        "llm_api_key_ct = CASE WHEN $26::bool THEN $24::bytea ELSE "
	        "llm_api_key_ct END, llm_api_key_kid = CASE WHEN $26::bool "
	        "THEN "
	        "$25 ELSE llm_api_key_kid END, has_unpublished_changes = true, "
	        "updated_at = now() WHERE tenant_id = $1 AND id = $2 "
	        "RETURNING " AGENT_COLS,
	        26, p);
}

PGresult *
agents_store_agent_get(pl_db *db, const char *tenant, const char *id, bool lock)
{
	const char *p[] = { tenant, id };

	return pl_db_exec(db,
	                  lock ? "SELECT " AGENT_COLS
	                         " FROM agents.agents WHERE tenant_id "
	                         "= $1 AND id = $2 FOR UPDATE"
	                       : "SELECT " AGENT_COLS
	                         " FROM agents.agents WHERE tenant_id "
	                         "= $1 AND id = $2",
	                  2, p);
}

PGresult *
agents_store_agent_list(pl_db *db, const char *tenant, const char *status,
                        const char *after, int limit)
{
	char lim[16];
	const char *p[4] = { tenant, status, after, lim };

	snprintf(lim, sizeof(lim), "%d", limit);
	return pl_db_exec(db,
	                  "SELECT " AGENT_COLS
	                  " FROM agents.agents WHERE tenant_id = $1 "
	                  "AND (CASE WHEN $2::text IS NULL THEN status <> "
	                  "'archived' ELSE "
	                  "status = $2 END) AND ($3::uuid IS NULL OR id < "
	                  "$3::uuid) ORDER BY "
	                  "id DESC LIMIT $4::int",
	                  4, p);
}

PGresult *
agents_store_publish(pl_db *db, const char *tenant, const char *agent,
                     const char *version_id, const char *user, const char *note)
{
	const char *p[] = { tenant, agent, version_id, user, note };

	return pl_db_exec(
	        db,
	        "WITH v AS (INSERT INTO agents.agent_versions (tenant_id, id, "
	        "agent_id, version, name, engine, llm_provider, llm_base_url, "
	        "llm_model, llm_temperature, llm_max_tokens, llm_timeout_ms, "
	        "llm_context_entries, llm_api_key_ct, llm_api_key_kid, "
	        "system_prompt, greeting, fallback_message, "
	        "knowledge_base_ids, "
	        "handoff_keywords, handoff_confidence_threshold, "
	        "max_bot_turns, "
	        "language, voice_provider, voice_id, voice_settings, "
	        "published_by_user_id, note) SELECT tenant_id, $3, id, version "
	        "+ "
	        "1, name, engine, llm_provider, llm_base_url, llm_model, "
	        "llm_temperature, llm_max_tokens, llm_timeout_ms, "
	        "llm_context_entries, llm_api_key_ct, llm_api_key_kid, "
	        "system_prompt, greeting, fallback_message, "
	        "knowledge_base_ids, "
	        "handoff_keywords, handoff_confidence_threshold, "
	        "max_bot_turns, "
	        "language, voice_provider, voice_id, voice_settings, $4::uuid, "
	        "$5 "
	        "FROM agents.agents WHERE tenant_id = $1 AND id = $2 RETURNING "
	        "version) UPDATE agents.agents a SET version = v.version, "
	        "status = "
	        "'published', has_unpublished_changes = false, published_at = "
	        "now(), updated_at = now() FROM v WHERE a.tenant_id = $1 AND "
	        "a.id "
	        "= $2 RETURNING a.version",
	        5, p);
}

PGresult *
agents_store_archive(pl_db *db, const char *tenant, const char *id)
{
	const char *p[] = { tenant, id };

	return pl_db_exec(
	        db,
	        "UPDATE agents.agents SET status = 'archived', archived_at = "
	        "coalesce(archived_at, now()), updated_at = now() WHERE "
	        "tenant_id "
	        "= $1 AND id = $2 RETURNING " AGENT_COLS,
	        2, p);
}

PGresult *
agents_store_version_get(pl_db *db, const char *tenant, const char *agent,
                         int version)
{
	char v[16];
	const char *p[] = { tenant, agent, v };

	snprintf(v, sizeof(v), "%d", version);
	return pl_db_exec(
	        db,
	        "SELECT " VERSION_COLS " FROM agents.agent_versions WHERE "
	        "tenant_id = $1 AND agent_id = $2 AND version = $3::int",
	        3, p);
}

PGresult *
agents_store_version_list(pl_db *db, const char *tenant, const char *agent,
                          int before, int limit)
{
	char b[16], l[16];
	const char *p[] = { tenant, agent, b, l };

	snprintf(b, sizeof(b), "%d", before);
	snprintf(l, sizeof(l), "%d", limit);
	return pl_db_exec(db,
	                  "SELECT " VERSION_COLS
	                  " FROM agents.agent_versions WHERE "
	                  "tenant_id = $1 AND agent_id = $2 AND version < "
	                  "$3::int ORDER BY "
	                  "version DESC LIMIT $4::int",
	                  4, p);
}

PGresult *
agents_store_kbs_exist(pl_db *db, const char *tenant, const char *ids_json)
{
	const char *p[] = { tenant, ids_json };

	return pl_db_exec(db,
	                  "SELECT count(*) FROM agents.knowledge_bases WHERE "
	                  "tenant_id = $1 "
	                  "AND id = ANY(ARRAY(SELECT "
	                  "jsonb_array_elements_text($2::jsonb))"
	                  "::uuid[])",
	                  2, p);
}

// ---------------------------------------------------------------------------
// Knowledge bases

PGresult *
agents_store_kb_insert(pl_db *db, const char *tenant, const char *id,
                       const char *name, const char *desc, const char *lang)
{
	const char *p[] = { tenant, id, name, desc, lang };

	return pl_db_exec(
	        db,
	        "WITH b AS (INSERT INTO agents.knowledge_bases (tenant_id, id, "
	        "name, description, language) VALUES ($1, $2, $3, $4, $5) "
	        "RETURNING *) SELECT b.id, b.name, b.description, b.language, "
	        "0, " TS("b.created_at") ", " TS("b.updated_at") " FROM b",
	        5, p);
}

PGresult *
agents_store_kb_attach(pl_db *db, const char *tenant, const char *agent,
                       const char *kb)
{
	const char *p[] = { tenant, agent, kb };

	return pl_db_exec(
	        db,
	        "UPDATE agents.agents SET knowledge_base_ids = "
	        "array_append(knowledge_base_ids, $3::uuid), "
	        "has_unpublished_changes = true, updated_at = now() WHERE "
	        "tenant_id = $1 AND id = $2 AND NOT $3::uuid = ANY("
	        "knowledge_base_ids) RETURNING id",
	        3, p);
}

PGresult *
agents_store_kb_get(pl_db *db, const char *tenant, const char *id)
{
	const char *p[] = { tenant, id };

	return pl_db_exec(db,
	                  "SELECT " KB_COLS
	                  " FROM agents.knowledge_bases b WHERE "
	                  "b.tenant_id = $1 AND b.id = $2",
	                  2, p);
}

PGresult *
agents_store_kb_update(pl_db *db, const char *tenant, const char *id,
                       const char *name, const char *desc, const char *lang)
{
	const char *p[] = { tenant, id, name, desc, lang };

	return pl_db_exec(
	        db,
	        "UPDATE agents.knowledge_bases SET name = coalesce($3, name), "
	        "description = coalesce($4, description), language = "
	        "coalesce($5, language), updated_at = now() WHERE tenant_id = "
	        "$1 "
	        "AND id = $2 RETURNING id",
	        5, p);
}

PGresult *
agents_store_kb_in_use(pl_db *db, const char *tenant, const char *id)
{
	const char *p[] = { tenant, id };

	return pl_db_exec(db,
	                  "SELECT a.id FROM agents.agents a JOIN "
	                  "agents.agent_versions v ON "
	                  "v.tenant_id = a.tenant_id AND v.agent_id = a.id AND "
	                  "v.version = "
	                  "a.version WHERE a.tenant_id = $1 AND a.status = "
	                  "'published' AND "
	                  "$2::uuid = ANY(v.knowledge_base_ids) LIMIT 1",
	                  2, p);
}

PGresult *
agents_store_kb_delete(pl_db *db, const char *tenant, const char *id)
{
	const char *p[] = { tenant, id };

	return pl_db_exec(
	        db,
	        "WITH d AS (UPDATE agents.agents SET knowledge_base_ids = "
	        "array_remove(knowledge_base_ids, $2::uuid), updated_at = "
	        "now() "
	        "WHERE tenant_id = $1 AND $2::uuid = ANY(knowledge_base_ids)) "
	        "DELETE FROM agents.knowledge_bases WHERE tenant_id = $1 AND "
	        "id = "
	        "$2 RETURNING id",
	        2, p);
}

PGresult *
agents_store_kb_list(pl_db *db, const char *tenant, const char *agent,
                     const char *after, int limit)
{
	char l[16];
	const char *p[] = { tenant, agent, after, l };

	snprintf(l, sizeof(l), "%d", limit);
	return pl_db_exec(
	        db,
	        "SELECT " KB_COLS " FROM agents.knowledge_bases b WHERE "
	        "b.tenant_id = $1 AND ($2::uuid IS NULL OR b.id = ANY((SELECT "
	        "knowledge_base_ids FROM agents.agents WHERE tenant_id = $1 "
	        "AND "
	        "id = $2::uuid))) AND ($3::uuid IS NULL OR b.id < $3::uuid) "
	        "ORDER "
	        "BY b.id DESC LIMIT $4::int",
	        4, p);
}

PGresult *
agents_store_agent_kbs(pl_db *db, const char *tenant, const char *agent)
{
	const char *p[] = { tenant, agent };

	return pl_db_exec(
	        db,
	        "SELECT array_to_json(knowledge_base_ids)::text, language FROM "
	        "agents.agents WHERE tenant_id = $1 AND id = $2",
	        2, p);
}

// ---------------------------------------------------------------------------
// Knowledge entries

// Entries of one ImportKnowledge call in one statement (no external_id
// twice among them: ON CONFLICT cannot touch a row twice in a statement). $3: a
// JSON array of {id, q, a, k (keywords), i, act, ext, qn, kn, an}. Rows
// (position from 1, the entry's id, created), in input order: a new entry has
// the id given, one matched by external_id keeps its own.
PGresult *
agents_store_entries_upsert(pl_db *db, const char *tenant, const char *kb,
                            const char *items_json)
{
	const char *p[] = { tenant, kb, items_json };

	return pl_db_exec(
	        db,
	        "WITH x AS MATERIALIZED (SELECT * FROM ROWS FROM "
	        "(jsonb_to_recordset($3::jsonb) AS (id uuid, q text, a text, "
	        "k jsonb, i text, act boolean, ext text, qn text, kn text, "
	        "an text)) WITH ORDINALITY AS x(id, q, a, k, i, act, ext, qn, "
	        "kn, an, o)), "
	        "ins AS (INSERT INTO agents.knowledge_entries AS e (tenant_id, "
	        "id, knowledge_base_id, question, answer, keywords, intent, "
	        "is_active, external_id, question_norm, keywords_norm, "
	        "answer_norm) SELECT $1, x.id, $2, x.q, x.a, "
	        "ARRAY(SELECT jsonb_array_elements_text(x.k)), x.i, x.act, "
	        "x.ext, x.qn, x.kn, x.an FROM x ORDER BY x.o "
	        "ON CONFLICT (tenant_id, knowledge_base_id, external_id) "
	        "WHERE external_id IS NOT NULL DO UPDATE SET "
	        "question = EXCLUDED.question, answer = EXCLUDED.answer, "
	        "keywords = EXCLUDED.keywords, intent = EXCLUDED.intent, "
	        "is_active = EXCLUDED.is_active, "
	        "question_norm = EXCLUDED.question_norm, "
	        "keywords_norm = EXCLUDED.keywords_norm, "
	        "answer_norm = EXCLUDED.answer_norm, updated_at = now() "
	        "RETURNING e.id, e.external_id, (e.xmax = 0) AS created) "
	        "SELECT x.o, ins.id, ins.created FROM ins JOIN x "
	        "ON ins.id = x.id WHERE ins.created "
	        "UNION ALL "
	        "SELECT x.o, ins.id, ins.created FROM ins JOIN x "
	        "ON ins.external_id = x.ext WHERE NOT ins.created "
	        "ORDER BY 1",
	        3, p);
}

PGresult *
agents_store_entries_replace(pl_db *db, const char *tenant, const char *kb,
                             const char *keep_ext_json)
{
	const char *p[] = { tenant, kb, keep_ext_json };

	return pl_db_exec(
	        db,
	        "DELETE FROM agents.knowledge_entries WHERE tenant_id = $1 AND "
	        "knowledge_base_id = $2 AND (external_id IS NULL OR NOT "
	        "external_id = ANY(ARRAY(SELECT jsonb_array_elements_text("
	        "$3::jsonb))))",
	        3, p);
}

PGresult *
agents_store_entry_list(pl_db *db, const char *tenant, const char *kb_json,
                        const char *intent, bool inactive, const char *after,
                        bool ascending, int limit)
{
	char l[16];
	const char *p[] = { tenant, kb_json, intent, inactive ? "t" : "f",
		            after,  l };

	snprintf(l, sizeof(l), "%d", limit);
	return pl_db_exec(db,
	                  ascending ? "SELECT " ENTRY_COLS
	                              " FROM agents.knowledge_entries e WHERE "
	                              "e.tenant_id = $1 AND "
	                              "e.knowledge_base_id = ANY(ARRAY(SELECT "
	                              "jsonb_array_elements_text($2::jsonb))::"
	                              "uuid[]) AND ($3::text "
	                              "IS NULL OR e.intent = $3) AND ($4::bool "
	                              "OR e.is_active) AND "
	                              "($5::uuid IS NULL OR e.id > $5::uuid) "
	                              "ORDER BY e.id LIMIT "
	                              "$6::int"
	                            : "SELECT " ENTRY_COLS
	                              " FROM agents.knowledge_entries e WHERE "
	                              "e.tenant_id = $1 AND "
	                              "e.knowledge_base_id = ANY(ARRAY(SELECT "
	                              "jsonb_array_elements_text($2::jsonb))::"
	                              "uuid[]) AND ($3::text "
	                              "IS NULL OR e.intent = $3) AND ($4::bool "
	                              "OR e.is_active) AND "
	                              "($5::uuid IS NULL OR e.id < $5::uuid) "
	                              "ORDER BY e.id DESC "
	                              "LIMIT $6::int",
	                  6, p);
}

PGresult *
agents_store_entry_get(pl_db *db, const char *tenant, const char *id)
{
	const char *p[] = { tenant, id };

	return pl_db_exec(db,
	                  "SELECT " ENTRY_COLS
	                  " FROM agents.knowledge_entries e WHERE "
	                  "e.tenant_id = $1 AND e.id = $2 FOR UPDATE",
	                  2, p);
}

PGresult *
agents_store_entry_update(pl_db *db, const char *const p[11])
{
	// $1 tenant, $2 id, $3 question, $4 answer, $5 keywords JSON, $6
	// intent, $7 is_active, $8 external_id ('' clears), $9..$11 norms.
	return pl_db_exec(
	        db,
	        "UPDATE agents.knowledge_entries e SET question = $3, answer = "
	        "$4, "
	        "keywords = ARRAY(SELECT "
	        "jsonb_array_elements_text($5::jsonb)), "
	        "intent = $6, is_active = $7::bool, external_id = nullif($8, "
	        "''), "
	        "question_norm = $9, keywords_norm = $10, answer_norm = $11, "
	        "updated_at = now() WHERE e.tenant_id = $1 AND e.id = $2 "
	        "RETURNING " ENTRY_COLS,
	        11, p);
}

PGresult *
agents_store_entry_delete(pl_db *db, const char *tenant, const char *id)
{
	const char *p[] = { tenant, id };

	return pl_db_exec(db,
	                  "DELETE FROM agents.knowledge_entries WHERE "
	                  "tenant_id = $1 AND id "
	                  "= $2 RETURNING id",
	                  2, p);
}

// The content versions of the tenant's bases among ids_json: (id,
// content_version) rows.
PGresult *
agents_store_kb_versions(pl_db *db, const char *tenant, const char *ids_json)
{
	const char *p[] = { tenant, ids_json };

	return pl_db_exec(db,
	                  "SELECT id, content_version FROM "
	                  "agents.knowledge_bases WHERE tenant_id = $1 AND id "
	                  "= ANY(ARRAY(SELECT "
	                  "jsonb_array_elements_text($2::jsonb))::uuid[])",
	                  2, p);
}

// The tenant's entries among ids_json (ENTRY_COLS, any order).
PGresult *
agents_store_entries_by_id(pl_db *db, const char *tenant, const char *ids_json)
{
	const char *p[] = { tenant, ids_json };

	return pl_db_exec(db,
	                  "SELECT " ENTRY_COLS
	                  " FROM agents.knowledge_entries e WHERE e.tenant_id "
	                  "= $1 AND e.id = ANY(ARRAY(SELECT "
	                  "jsonb_array_elements_text($2::jsonb))::uuid[])",
	                  2, p);
}

// ---------------------------------------------------------------------------
// Reply

#define REPLY_BEGIN_SQL                                                        \
	"SELECT * FROM agents.reply_begin($1, $2, $3, $4, $5, $6, $7, $8, "    \
	"$9, $10, $11)"
#define REPLY_FINISH_SQL                                                       \
	"SELECT agents.reply_finish($1, $2, $3, $4, $5, $6, $7, $8, $9, "      \
	"$10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, "    \
	"$23, $24, $25, $26, $27)"
#define BEGIN_BATCH_SQL                                                        \
	"SELECT * FROM agents.reply_begin_batch($1, $2, $3, $4, $5, $6, $7, "  \
	"$8, $9, $10, $11)"
#define COMMIT_BATCH_SQL                                                       \
	"SELECT * FROM agents.reply_commit_batch($1::json, $2::json, "         \
	"$3::json, $4, $5)"

// Sends sql (n parameters p) into c's pipeline: as the prepared statement
// `name` when named (prepared already: pl_db_prepare before the pipeline),
// else unnamed.
static bool
send_stmt(PGconn *c, const char *name, const char *sql, int n,
          const char *const *p)
{
	if (name != NULL)
		return PQsendQueryPrepared(c, name, n, p, NULL, NULL, 0) == 1;
	return PQsendQueryParams(c, sql, n, NULL, p, NULL, NULL, 0) == 1;
}

// Runs s1 then s2 in one round trip (libpq pipeline mode) on the worker's
// connection, each as the prepared statement name1 / name2 when not NULL
// (see send_stmt): *r1 and *r2 get their results (NULL when none came;
// s2's is PGRES_PIPELINE_ABORTED when s1 failed). Returns PL_OK when both
// results arrived, else UNAVAILABLE (the connection is left out of
// pipeline mode when it can be).
static int
pipe2(pl_db *db, const char *name1, const char *s1, int n1,
      const char *const *p1, const char *name2, const char *s2, int n2,
      const char *const *p2, PGresult **r1, PGresult **r2)
{
	PGconn *c = pl_db_conn(db);
	PGresult **out[2] = { r1, r2 }, *res;
	int rv = PL_OK;

	*r1 = *r2 = NULL;
	if (c == NULL)
		return PL_UNAVAILABLE;
	// Prepared before the pipeline starts (a round trip once per
	// connection; inside a transaction only what is prepared already:
	// the rest goes unnamed).
	if (name1 != NULL && !pl_db_prepare(db, name1, s1, n1))
		name1 = NULL;
	if (name2 != NULL && !pl_db_prepare(db, name2, s2, n2))
		name2 = NULL;
	if (!PQenterPipelineMode(c))
		return PL_UNAVAILABLE;
	if (!send_stmt(c, name1, s1, n1, p1) ||
	    !send_stmt(c, name2, s2, n2, p2) || !PQpipelineSync(c))
		rv = PL_UNAVAILABLE;
	for (int q = 0; rv == PL_OK && q < 2; q++) {
		// Each statement's results end with a NULL.
		while ((res = PQgetResult(c)) != NULL) {
			if (*out[q] == NULL)
				*out[q] = res;
			else
				PQclear(res);
		}
		if (*out[q] == NULL)
			rv = PL_UNAVAILABLE;
	}
	// The sync point.
	while (rv == PL_OK && (res = PQgetResult(c)) != NULL) {
		ExecStatusType st = PQresultStatus(res);

		PQclear(res);
		if (st == PGRES_PIPELINE_SYNC)
			break;
		if (st == PGRES_FATAL_ERROR && PQstatus(c) == CONNECTION_BAD) {
			rv = PL_UNAVAILABLE;
			break;
		}
	}
	if (!PQexitPipelineMode(c))
		rv = PL_UNAVAILABLE;
	pl_db_forget_if_gone(db, name1, *r1);
	pl_db_forget_if_gone(db, name2, *r2);
	return rv;
}

// BEGIN and step one of a reply in one round trip: the reply's
// transaction stays open on the connection (agents_store_reply_end ends
// it). Returns reply_begin's result, NULL when the connection failed.
PGresult *
agents_store_reply_open(pl_db *db, const char *const p[11])
{
	PGresult *rb = NULL, *r = NULL;
	PGconn *c = pl_db_conn(db);

	// Step two runs inside the transaction: prepared now, while idle.
	if (c != NULL)
		pl_db_prepare(db, "agents_reply_finish", REPLY_FINISH_SQL, 27);
	pipe2(db, NULL, "BEGIN", 0, NULL, "agents_reply_begin", REPLY_BEGIN_SQL,
	      11, p, &rb, &r);
	if (!agents_store_ok(rb)) {
		PQclear(r);
		r = NULL;
	}
	PQclear(rb);
	return r;
}

// Step two and COMMIT in one round trip. Returns a status (the commit's,
// or the first failure's with its result in *err for pl_db_call_error).
int
agents_store_reply_commit(pl_db *db, const char *const p[27], PGresult **err)
{
	PGresult *rf = NULL, *rc = NULL;
	int rv;

	*err = NULL;
	rv = pipe2(db, "agents_reply_finish", REPLY_FINISH_SQL, 27, p, NULL,
	           "COMMIT", 0, NULL, &rf, &rc);
	if (rv == PL_OK && !agents_store_ok(rf)) {
		*err = rf;
		rf = NULL;
		rv = pl_db_result_status(*err);
	} else if (rv == PL_OK && !agents_store_ok(rc)) {
		*err = rc;
		rc = NULL;
		rv = pl_db_result_status(*err);
	} else if (rv == PL_OK && strcmp(PQcmdStatus(rc), "COMMIT") != 0) {
		rv = PL_ABORTED; // COMMIT of a failed transaction rolls back
	}
	PQclear(rf);
	PQclear(rc);
	return rv;
}

// BEGIN and step one of a group of replies (agents.reply_begin_batch:
// p[0..9] its arrays, p[10] the inactivity limit in ms) in one round
// trip; the transaction stays open. NULL when the connection failed.
PGresult *
agents_store_reply_group_open(pl_db *db, const char *const p[11])
{
	PGresult *rb = NULL, *r = NULL;
	PGconn *c = pl_db_conn(db);

	// Step two runs inside the transaction: prepared now, while idle.
	if (c != NULL)
		pl_db_prepare(db, "agents_reply_commit_batch", COMMIT_BATCH_SQL,
		              5);
	pipe2(db, NULL, "BEGIN", 0, NULL, "agents_reply_begin_batch",
	      BEGIN_BATCH_SQL, 11, p, &rb, &r);
	if (!agents_store_ok(rb)) {
		PQclear(r);
		r = NULL;
	}
	PQclear(rb);
	return r;
}

// agents.reply_commit_batch (p: items, sessions and agents as JSON (agents
// NULL: step two of a group), then the touch and idle intervals in ms):
// with in_tx in the open transaction, COMMIT in the same round trip;
// without, the statement alone (its own transaction). Returns a status;
// on PL_OK *res holds the function's rows, else the failing result (or
// NULL when the connection failed).
int
agents_store_reply_commit_batch(pl_db *db, const char *const p[5], bool in_tx,
                                PGresult **res)
{
	static const char sql[] = COMMIT_BATCH_SQL;
	static const char name[] = "agents_reply_commit_batch";
	PGresult *rc = NULL;
	PGconn *c;
	int rv;

	*res = NULL;
	if (!in_tx) {
		if ((c = pl_db_conn(db)) == NULL)
			return PL_UNAVAILABLE;
		*res = pl_db_prepare(db, name, sql, 5)
		               ? PQexecPrepared(c, name, 5, p, NULL, NULL, 0)
		               : PQexecParams(c, sql, 5, NULL, p, NULL, NULL,
		                              0);
		if (*res == NULL)
			return PL_UNAVAILABLE;
		pl_db_forget_if_gone(db, name, *res);
		return agents_store_ok(*res) ? PL_OK
		                             : pl_db_result_status(*res);
	}
	rv = pipe2(db, name, sql, 5, p, NULL, "COMMIT", 0, NULL, res, &rc);
	if (rv == PL_OK && !agents_store_ok(*res)) {
		rv = pl_db_result_status(*res);
	} else if (rv == PL_OK && !agents_store_ok(rc)) {
		PQclear(*res);
		*res = rc;
		rc = NULL;
		rv = pl_db_result_status(*res);
	} else if (rv == PL_OK && strcmp(PQcmdStatus(rc), "COMMIT") != 0) {
		rv = PL_ABORTED; // COMMIT of a failed transaction rolls back
	}
	PQclear(rc);
	return rv;
}

// Ends whatever transaction the reply left open (ROLLBACK); a no-op
// when there is none.
void
agents_store_reply_end(pl_db *db)
{
	PGconn *c = pl_db_conn(db);

	if (c != NULL && PQtransactionStatus(c) != PQTRANS_IDLE &&
	    PQtransactionStatus(c) != PQTRANS_UNKNOWN)
		PQclear(PQexec(c, "ROLLBACK"));
}

// True while the reply's transaction is open and healthy.
bool
agents_store_reply_in_tx(pl_db *db)
{
	PGconn *c = pl_db_conn(db);

	return c != NULL && PQtransactionStatus(c) == PQTRANS_INTRANS;
}

// The base's content version and its active entries in one statement (one
// snapshot): row 0 may have NULL entry columns when the base is empty; no
// row when the base does not exist.
PGresult *
agents_store_kb_entries(pl_db *db, const char *tenant, const char *kb)
{
	const char *p[] = { tenant, kb };

	return pl_db_exec(
	        db,
	        "SELECT b.content_version, e.id, e.question, e.answer, "
	        "e.intent, e.question_norm, e.keywords_norm, e.answer_norm "
	        "FROM agents.knowledge_bases b LEFT JOIN "
	        "agents.knowledge_entries e ON e.tenant_id = b.tenant_id AND "
	        "e.knowledge_base_id = b.id AND e.is_active WHERE "
	        "b.tenant_id = $1 AND b.id = $2 ORDER BY e.id",
	        2, p);
}

// ---------------------------------------------------------------------------
// Sessions

PGresult *
agents_store_session_get(pl_db *db, const char *tenant, const char *id,
                         const char *key)
{
	const char *p[] = { tenant, id, key };

	return pl_db_exec(
	        db,
	        "SELECT " SESSION_COLS " FROM agents.agent_sessions WHERE "
	        "tenant_id = $1 AND (($2::uuid IS NOT NULL AND id = $2::uuid) "
	        "OR "
	        "($2::uuid IS NULL AND session_key = $3)) ORDER BY status = "
	        "'active' DESC, started_at DESC LIMIT 1",
	        3, p);
}

PGresult *
agents_store_session_list(pl_db *db, const char *tenant, const char *agent,
                          const char *status, const char *channel,
                          const char *after_at, const char *after_id, int limit)
{
	char l[16];
	const char *p[] = { tenant,   agent,    status, channel,
		            after_at, after_id, l };

	snprintf(l, sizeof(l), "%d", limit);
	return pl_db_exec(
	        db,
	        "SELECT " SESSION_COLS
	        ", (extract(epoch FROM last_activity_at) * "
	        "1000000)::bigint FROM agents.agent_sessions WHERE tenant_id = "
	        "$1 "
	        "AND ($2::uuid IS NULL OR agent_id = $2::uuid) AND ($3::text "
	        "IS "
	        "NULL OR status = $3) AND ($4::text IS NULL OR channel_id = "
	        "$4) "
	        "AND ($5::bigint IS NULL OR (last_activity_at, id) < "
	        "(to_timestamp($5::bigint / 1000000.0), $6::uuid)) ORDER BY "
	        "last_activity_at DESC, id DESC LIMIT $7::int",
	        7, p);
}

PGresult *
agents_store_session_end(pl_db *db, const char *tenant, const char *id)
{
	const char *p[] = { tenant, id };

	return pl_db_exec(
	        db,
	        "UPDATE agents.agent_sessions SET status = CASE WHEN status = "
	        "'active' THEN 'ended' ELSE status END, ended_at = "
	        "coalesce(ended_at, now()) WHERE tenant_id = $1 AND id = $2 "
	        "RETURNING " SESSION_COLS,
	        2, p);
}

PGresult *
agents_store_message_list(pl_db *db, const char *tenant, const char *session,
                          const char *after, int limit)
{
	char l[16];
	const char *p[] = { tenant, session, after, l };

	snprintf(l, sizeof(l), "%d", limit);
	return pl_db_exec(db,
	                  "SELECT " MESSAGE_COLS
	                  " FROM agents.agent_messages WHERE "
	                  "tenant_id = $1 AND session_id = $2 AND ($3::uuid IS "
	                  "NULL OR id > "
	                  "$3::uuid) ORDER BY id LIMIT $4::int",
	                  4, p);
}

// ---------------------------------------------------------------------------
// Checkpoints

PGresult *
agents_store_checkpoint_insert(pl_db *db, const char *const p[10])
{
	// $1 tenant, $2 thread, $3 ns, $4 id, $5 parent, $6 type, $7 state,
	// $8 metadata, $9 session, $10 legacy thread.
	return pl_db_exec(
	        db,
	        "INSERT INTO agents.checkpoints (tenant_id, thread_id, "
	        "checkpoint_ns, checkpoint_id, parent_checkpoint_id, type, "
	        "state, "
	        "metadata, session_id, legacy_thread_id) VALUES ($1, $2, $3, "
	        "$4, "
	        "nullif($5, ''), nullif($6, ''), $7::jsonb, $8::jsonb, "
	        "nullif($9, '')::uuid, nullif($10, '')) ON CONFLICT DO NOTHING "
	        "RETURNING 1",
	        10, p);
}

PGresult *
agents_store_blob_insert(pl_db *db, const char *const p[7])
{
	// $1 tenant, $2 thread, $3 ns, $4 channel, $5 version, $6 type,
	// $7 blob (hex bytea or NULL).
	return pl_db_exec(
	        db,
	        "INSERT INTO agents.checkpoint_blobs (tenant_id, thread_id, "
	        "checkpoint_ns, channel, version, type, blob) VALUES ($1, $2, "
	        "$3, "
	        "$4, $5, $6, $7::bytea) ON CONFLICT DO NOTHING RETURNING 1",
	        7, p);
}

PGresult *
agents_store_write_insert(pl_db *db, const char *const p[10])
{
	// $1 tenant, $2 thread, $3 ns, $4 checkpoint, $5 task, $6 idx,
	// $7 channel, $8 type, $9 blob (hex), $10 task_path.
	return pl_db_exec(
	        db,
	        "INSERT INTO agents.checkpoint_writes (tenant_id, thread_id, "
	        "checkpoint_ns, checkpoint_id, task_id, idx, channel, type, "
	        "blob, "
	        "task_path) VALUES ($1, $2, $3, $4, $5, $6::int, $7, "
	        "nullif($8, "
	        "''), $9::bytea, $10) ON CONFLICT DO NOTHING RETURNING 1",
	        10, p);
}

PGresult *
agents_store_checkpoint_latest(pl_db *db, const char *tenant,
                               const char *thread, const char *ns)
{
	const char *p[] = { tenant, thread, ns };

	return pl_db_exec(
	        db,
	        "SELECT thread_id, checkpoint_ns, checkpoint_id, "
	        "coalesce(parent_checkpoint_id, ''), coalesce(type, ''), "
	        "state::text, metadata::text, coalesce(session_id::text, ''), "
	        "coalesce(legacy_thread_id, ''), " TS(
	                "created_at") " FROM agents.checkpoints WHERE "
	                              "tenant_id = $1 AND thread_id = $2 "
	                              "AND checkpoint_ns = $3 ORDER BY "
	                              "checkpoint_id DESC LIMIT 1",
	        3, p);
}

// The blobs the checkpoint's channel_versions name (LangGraph's layout:
// metadata-free state {"channel_versions": {channel: version}}), else every
// blob of the thread.
PGresult *
agents_store_checkpoint_blobs(pl_db *db, const char *tenant, const char *thread,
                              const char *ns, const char *state)
{
	const char *p[] = { tenant, thread, ns, state };

	return pl_db_exec(db,
	                  "SELECT channel, version, type, blob FROM "
	                  "agents.checkpoint_blobs "
	                  "b WHERE tenant_id = $1 AND thread_id = $2 AND "
	                  "checkpoint_ns = $3 "
	                  "AND (jsonb_typeof($4::jsonb -> 'channel_versions') "
	                  "IS DISTINCT "
	                  "FROM 'object' OR ($4::jsonb -> 'channel_versions' "
	                  "->> b.channel) "
	                  "= b.version) ORDER BY channel, version",
	                  4, p);
}

PGresult *
agents_store_checkpoint_writes(pl_db *db, const char *tenant,
                               const char *thread, const char *ns,
                               const char *id)
{
	const char *p[] = { tenant, thread, ns, id };

	return pl_db_exec(
	        db,
	        "SELECT task_id, idx, channel, coalesce(type, ''), blob, "
	        "task_path FROM agents.checkpoint_writes WHERE tenant_id = $1 "
	        "AND "
	        "thread_id = $2 AND checkpoint_ns = $3 AND checkpoint_id = $4 "
	        "ORDER BY task_id, idx",
	        4, p);
}

// Counts and SHA-256 checksums of the checkpoint tables of a tenant. What
// is hashed (the service README repeats it): every row in primary-key
// order, its columns as text joined by U+001F and rows ended by U+001E;
// bytea as lower-case hex, NULL as the empty string. The row listing
// (agents_store_import_rows) hashes the same text per row: both statements
// are made of the per-table pieces below, so they cannot drift apart.

// Per table: the row's text, its primary key in checksum order, and the key
// as one text (columns joined by U+001F) for the row listing.
#define CP_ROW                                                                 \
	"concat_ws(E'\\x1f', thread_id, checkpoint_ns, checkpoint_id, "        \
	"coalesce(parent_checkpoint_id, ''), coalesce(type, ''), "             \
	"state::text, "                                                        \
	"metadata::text)"
#define CP_ORDER "thread_id, checkpoint_ns, checkpoint_id"
#define CP_KEY   "concat_ws(E'\\x1f', " CP_ORDER ")"

#define BLOB_ROW                                                               \
	"concat_ws(E'\\x1f', thread_id, checkpoint_ns, channel, version, "     \
	"type, coalesce(encode(blob, 'hex'), ''))"
#define BLOB_ORDER "thread_id, checkpoint_ns, channel, version"
#define BLOB_KEY   "concat_ws(E'\\x1f', " BLOB_ORDER ")"

#define WRITE_ROW                                                              \
	"concat_ws(E'\\x1f', thread_id, checkpoint_ns, checkpoint_id, "        \
	"task_id, idx::text, channel, coalesce(type, ''), encode(blob, "       \
	"'hex'), task_path)"
#define WRITE_ORDER "thread_id, checkpoint_ns, checkpoint_id, task_id, idx"
#define WRITE_KEY                                                              \
	"concat_ws(E'\\x1f', thread_id, checkpoint_ns, checkpoint_id, "        \
	"task_id, idx::text)"

#define TABLE_SUM(name, row, order)                                            \
	"SELECT '" name "', count(*), encode(sha256(convert_to(coalesce("      \
	"string_agg(" row ", E'\\x1e' ORDER BY " order                         \
	"), ''), 'UTF8')), 'hex') FROM agents." name " WHERE tenant_id = $1"
// A page of rows: key and SHA-256 of the row's text, keys after $2
// (bytewise), at most $3.
#define TABLE_ROWS(name, row, key)                                             \
	"SELECT " key ", encode(sha256(convert_to(" row                        \
	", 'UTF8')), 'hex') FROM agents." name " WHERE tenant_id = $1 AND "    \
	"(" key ") COLLATE \"C\" > $2 ORDER BY (" key                          \
	") COLLATE \"C\" LIMIT $3"

#define CP_SUM    TABLE_SUM("checkpoints", CP_ROW, CP_ORDER)
#define BLOB_SUM  TABLE_SUM("checkpoint_blobs", BLOB_ROW, BLOB_ORDER)
#define WRITE_SUM TABLE_SUM("checkpoint_writes", WRITE_ROW, WRITE_ORDER)

static const char summary_sql[] =
        CP_SUM " UNION ALL " BLOB_SUM " UNION ALL " WRITE_SUM;

static const struct {
	const char *table;
	const char *sql;
} rows_sql[] = {
	{ "checkpoints", TABLE_ROWS("checkpoints", CP_ROW, CP_KEY) },
	{ "checkpoint_blobs",
	  TABLE_ROWS("checkpoint_blobs", BLOB_ROW, BLOB_KEY) },
	{ "checkpoint_writes",
	  TABLE_ROWS("checkpoint_writes", WRITE_ROW, WRITE_KEY) },
};

PGresult *
agents_store_import_summary(pl_db *db, const char *tenant)
{
	const char *p[] = { tenant };

	return pl_db_exec(db, summary_sql, 1, p);
}

bool
agents_store_import_table_known(const char *table)
{
	for (size_t i = 0; i < sizeof(rows_sql) / sizeof(rows_sql[0]); i++)
		if (strcmp(rows_sql[i].table, table) == 0)
			return true;
	return false;
}

PGresult *
agents_store_import_rows(pl_db *db, const char *tenant, const char *table,
                         const char *after, int limit)
{
	char lim[16];
	const char *p[] = { tenant, after, lim };

	snprintf(lim, sizeof(lim), "%d", limit);
	for (size_t i = 0; i < sizeof(rows_sql) / sizeof(rows_sql[0]); i++)
		if (strcmp(rows_sql[i].table, table) == 0)
			return pl_db_exec(db, rows_sql[i].sql, 3, p);
	return NULL;
}

uint8_t *
agents_store_bytea(pl_arena *a, const PGresult *r, int row, int col,
                   size_t *len)
{
	size_t n;
	unsigned char *raw, *out;

	*len = 0;
	if (PQgetisnull(r, row, col))
		return NULL;
	raw = PQunescapeBytea((const unsigned char *)PQgetvalue(r, row, col),
	                      &n);
	if (raw == NULL)
		return NULL;
	out = pl_arena_alloc(a, n + 1);
	if (out != NULL) {
		memcpy(out, raw, n);
		*len = n;
	}
	PQfreemem(raw);
	return out;
}
