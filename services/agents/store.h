// The agents service's SQL (store.c): each function runs one statement and
// returns its result (caller PQclear()s it; check with agents_store_ok) or
// its status; the *_row functions turn a result row into a message in the
// arena.
#ifndef AGENTS_STORE_H
#define AGENTS_STORE_H

#include "agents.h"

// An agent's configuration, as in Agent and AgentVersion.
typedef struct agents_cfg {
	int engine;
	ag_llm *llm;
	char *system_prompt;
	char *greeting;
	char *fallback_message;
	char **kb_ids;
	size_t n_kb_ids;
	char **keywords;
	size_t n_keywords;
	double threshold;
	int max_bot_turns;
	char *language;
	ag_voice *voice;
} agents_cfg;

bool agents_store_ok(const PGresult *r);
char *agents_store_str(pl_arena *a, const PGresult *r, int row, int col);
int agents_engine_from_text(const char *s);
const char *agents_engine_text(int engine);

// Reads the 20 configuration columns starting at column c.
void agents_store_cfg_read(pl_arena *a, const PGresult *r, int row, int c,
                           agents_cfg *cfg);

ag_agent *agents_store_agent_row(pl_arena *a, const PGresult *r, int row);
ag_version *agents_store_version_row(pl_arena *a, const PGresult *r, int row);
ag_kb *agents_store_kb_row(pl_arena *a, const PGresult *r, int row);
ag_entry *agents_store_entry_row(pl_arena *a, const PGresult *r, int row);
ag_session *agents_store_session_row(pl_arena *a, const PGresult *r, int row);
ag_message *agents_store_message_row(pl_arena *a, const PGresult *r, int row);

PGresult *agents_store_agent_insert(pl_db *db, pl_arena *a, const char *tenant,
                                    const char *id, const char *name,
                                    const char *desc, const agents_cfg *c,
                                    const uint8_t *key_ct, size_t key_len,
                                    const char *kid);
PGresult *agents_store_agent_update(pl_db *db, pl_arena *a, const char *tenant,
                                    const char *id, const char *name,
                                    const char *desc, const agents_cfg *c,
                                    bool set_key, const uint8_t *key_ct,
                                    size_t key_len, const char *kid);
PGresult *agents_store_agent_get(pl_db *db, const char *tenant, const char *id,
                                 bool lock);
PGresult *agents_store_agent_list(pl_db *db, const char *tenant,
                                  const char *status, const char *after,
                                  int limit);
PGresult *agents_store_publish(pl_db *db, const char *tenant, const char *agent,
                               const char *version_id, const char *user,
                               const char *note);
PGresult *agents_store_archive(pl_db *db, const char *tenant, const char *id);
PGresult *agents_store_version_get(pl_db *db, const char *tenant,
                                   const char *agent, int version);
PGresult *agents_store_version_list(pl_db *db, const char *tenant,
                                    const char *agent, int before, int limit);
PGresult *agents_store_kbs_exist(pl_db *db, const char *tenant,
                                 const char *ids_json);

PGresult *agents_store_kb_insert(pl_db *db, const char *tenant, const char *id,
                                 const char *name, const char *desc,
                                 const char *lang);
PGresult *agents_store_kb_attach(pl_db *db, const char *tenant,
                                 const char *agent, const char *kb);
PGresult *agents_store_kb_get(pl_db *db, const char *tenant, const char *id);
PGresult *agents_store_kb_update(pl_db *db, const char *tenant, const char *id,
                                 const char *name, const char *desc,
                                 const char *lang);
PGresult *agents_store_kb_in_use(pl_db *db, const char *tenant, const char *id);
PGresult *agents_store_kb_delete(pl_db *db, const char *tenant, const char *id);
PGresult *agents_store_kb_list(pl_db *db, const char *tenant, const char *agent,
                               const char *after, int limit);
PGresult *agents_store_agent_kbs(pl_db *db, const char *tenant,
                                 const char *agent);

PGresult *agents_store_entries_upsert(pl_db *db, const char *tenant,
                                      const char *kb, const char *items_json);
PGresult *agents_store_entries_replace(pl_db *db, const char *tenant,
                                       const char *kb,
                                       const char *keep_ext_json);
PGresult *agents_store_entry_list(pl_db *db, const char *tenant,
                                  const char *kb_json, const char *intent,
                                  bool inactive, const char *after,
                                  bool ascending, int limit);
PGresult *agents_store_entry_get(pl_db *db, const char *tenant, const char *id);
PGresult *agents_store_entry_update(pl_db *db, const char *const p[11]);
PGresult *agents_store_entry_delete(pl_db *db, const char *tenant,
                                    const char *id);
PGresult *agents_store_kb_versions(pl_db *db, const char *tenant,
                                   const char *ids_json);
PGresult *agents_store_entries_by_id(pl_db *db, const char *tenant,
                                     const char *ids_json);

PGresult *agents_store_reply_open(pl_db *db, const char *const p[11]);
int agents_store_reply_commit(pl_db *db, const char *const p[27],
                              PGresult **err);
void agents_store_reply_end(pl_db *db);
PGresult *agents_store_reply_group_open(pl_db *db, const char *const p[11]);
bool agents_store_reply_in_tx(pl_db *db);
int agents_store_reply_commit_batch(pl_db *db, const char *const p[5],
                                    bool in_tx, PGresult **res);
PGresult *agents_store_kb_entries(pl_db *db, const char *tenant,
                                  const char *kb);

PGresult *agents_store_session_get(pl_db *db, const char *tenant,
                                   const char *id, const char *key);
PGresult *agents_store_session_list(pl_db *db, const char *tenant,
                                    const char *agent, const char *status,
                                    const char *channel, const char *after_at,
                                    const char *after_id, int limit);
PGresult *agents_store_session_end(pl_db *db, const char *tenant,
                                   const char *id);
PGresult *agents_store_message_list(pl_db *db, const char *tenant,
                                    const char *session, const char *after,
                                    int limit);

PGresult *agents_store_checkpoint_insert(pl_db *db, const char *const p[10]);
PGresult *agents_store_blob_insert(pl_db *db, const char *const p[7]);
PGresult *agents_store_write_insert(pl_db *db, const char *const p[10]);
PGresult *agents_store_checkpoint_latest(pl_db *db, const char *tenant,
                                         const char *thread, const char *ns);
PGresult *agents_store_checkpoint_blobs(pl_db *db, const char *tenant,
                                        const char *thread, const char *ns,
                                        const char *state);
PGresult *agents_store_checkpoint_writes(pl_db *db, const char *tenant,
                                         const char *thread, const char *ns,
                                         const char *id);
PGresult *agents_store_import_summary(pl_db *db, const char *tenant);
// Is table one whose rows agents_store_import_rows lists?
bool agents_store_import_table_known(const char *table);
// A page of a checkpoint table's rows: key (primary key columns joined by
// U+001F) and SHA-256 hex of the text the row adds to the table's checksum,
// keys after `after` (bytewise), at most limit. NULL for an unknown table.
PGresult *agents_store_import_rows(pl_db *db, const char *tenant,
                                   const char *table, const char *after,
                                   int limit);

// bytea helpers: lower-case "\x.." text for a parameter, and the bytes of
// a bytea column (text format) into the arena.
char *agents_store_hex(pl_arena *a, const uint8_t *b, size_t n);
uint8_t *agents_store_bytea(pl_arena *a, const PGresult *r, int row, int col,
                            size_t *len);

#endif
