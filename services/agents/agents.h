// The agents service's internal header (issue 5): the service definition,
// the logic that needs no socket and no SQL (engine.c), the store
// (store.c), the reply orchestration (reply.c) and the handlers.
#ifndef AGENTS_H
#define AGENTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "parley/agents/v1/agents.pb-c.h"
#include "pl/arena.h"
#include "pl/seal.h"
#include "pl/db.h"
#include "pl/httpc.h"
#include "pl/migrate.h"
#include "pl/outbox.h"
#include "pl/rpc.h"
#include "pl/service.h"
#include "pl/utf8.h"

extern const pl_service_def agents_service_def;
extern const pl_rpc_service agents_rpc_service;
extern const pl_migration agents_migrations[];
extern const size_t agents_n_migrations;

// Short names for the generated types.
typedef Parley__Agents__V1__Agent ag_agent;
typedef Parley__Agents__V1__AgentVersion ag_version;
typedef Parley__Agents__V1__LlmConfig ag_llm;
typedef Parley__Agents__V1__VoiceSettings ag_voice;
typedef Parley__Agents__V1__KnowledgeBase ag_kb;
typedef Parley__Agents__V1__KnowledgeEntry ag_entry;
typedef Parley__Agents__V1__KnowledgeMatch ag_match;
typedef Parley__Agents__V1__AgentSession ag_session;
typedef Parley__Agents__V1__AgentMessage ag_message;
typedef Parley__Agents__V1__ReplyRequest ag_reply_req;
typedef Parley__Agents__V1__ReplyResponse ag_reply_resp;
typedef Parley__Agents__V1__CapturedLead ag_lead;
typedef Parley__Agents__V1__ProposedAction ag_action;
typedef Parley__Agents__V1__Checkpoint ag_checkpoint;
typedef Parley__Agents__V1__CheckpointBlob ag_blob;
typedef Parley__Agents__V1__CheckpointWrite ag_write;

#define AG_ENGINE_RETRIEVAL                                                    \
	PARLEY__AGENTS__V1__AGENT_ENGINE__AGENT_ENGINE_RETRIEVAL
#define AG_ENGINE_OPENAI                                                       \
	PARLEY__AGENTS__V1__AGENT_ENGINE__AGENT_ENGINE_OPENAI_COMPATIBLE

// Limits on input.
#define AG_MAX_TEXT    (64 * 1024 - 1) // Reply text, entry answers
#define AG_MAX_NAME    200
#define AG_MAX_SHORT   1000  // descriptions, questions, keywords...
#define AG_MAX_PROMPT  32768 // system prompt, greeting, fallback
#define AG_MAX_URL     2048
#define AG_MAX_KEY     4096 // an LLM API key
#define AG_MAX_LIST    64   // keywords, knowledge base ids
#define AG_MAX_IMPORT  5000
#define AG_MAX_HISTORY 50
#define AG_MAX_BATCH   64    // ReplyBatch items (the largest group)
#define AG_MAX_QUERY   4096  // SearchKnowledge
#define AG_MAX_JSON    65536 // voice settings, checkpoint json...

typedef struct agents_cache agents_cache;
typedef struct agents_replyq agents_replyq;

// The service's state (call->arg).
typedef struct agents_ctx {
	uint8_t cred_key[32];
	bool cred_key_set;
	char cred_kid[64];
	int64_t llm_timeout_ms;   // PARLEY_LLM_TIMEOUT
	int64_t llm_max_response; // PARLEY_LLM_MAX_RESPONSE
	double min_score;         // PARLEY_RETRIEVAL_MIN_SCORE_PCT / 100
	int64_t session_idle_ms;  // PARLEY_SESSION_INACTIVITY
	pl_rpc_client *billing;   // NULL: integration off
	pl_rpc_client *analytics; // NULL: events wait in the outbox
	pl_outbox_relay *relay;
	char *database_url;
	agents_cache *cache;   // retrieval indexes, shared by the workers
	agents_replyq *replyq; // group commit of replies (reply.c)
} agents_ctx;

// ---------------------------------------------------------------------------
// engine.c: text, handoff, leads, secrets, the LLM wire format.

// Search normalisation: lower case, Latin accents folded (á -> a, ñ -> n),
// punctuation, symbols and emoji turned into spaces, spaces collapsed. Other
// letters (Greek, CJK...) are kept as they are. Result in arena.
char *agents_text_normalize(pl_arena *a, const char *s);

// The content words of a normalised text (stop words in English and
// Spanish dropped, duplicates dropped, at most 32) joined with " or " for
// websearch_to_tsquery; "" when none. In arena.
char *agents_text_terms(pl_arena *a, const char *norm);

// True for an English or Spanish stop word (w[0..n), normalised).
bool agents_stop_word(const char *w, size_t n);

// When the normalised text contains one of the keywords as whole words
// (keywords normalised the same way), returns that keyword; else NULL.
const char *agents_handoff_keyword(pl_arena *a, const char *norm,
                                   char *const *keywords, size_t n);

// The default handoff keywords (NULL-terminated).
extern const char *const agents_default_handoff_keywords[];

// The fallback message for a language ("es..." Spanish, else English).
const char *agents_default_fallback(const char *language);

typedef struct agents_found_lead {
	char *name; // NULL when none found
	char *email;
	char *phone; // E.164 when it had a +, else the digits
} agents_found_lead;

// Finds an email, a phone number and a name ("my name is X", "me llamo X",
// "soy X", "I'm X") in the contact's text. Strings in arena.
void agents_lead_find(pl_arena *a, const char *text, agents_found_lead *out);

// Secrets at rest: pl/seal.h (pl_seal, pl_unseal, pl_key_decode).

// One knowledge entry offered to the LLM as context.
typedef struct agents_ctx_entry {
	const char *question;
	const char *answer;
} agents_ctx_entry;

typedef struct agents_llm_input {
	const char *model;
	double temperature;
	int max_tokens;
	const char *system_prompt;
	const char *language;
	const agents_ctx_entry *entries;
	size_t n_entries;
	Parley__Agents__V1__HistoryTurn *const *history;
	size_t n_history;
	const char *contact_name;
	const char *text;
} agents_llm_input;

// The chat/completions request body (malloc'd JSON text).
char *agents_llm_request(const agents_llm_input *in);

typedef struct agents_llm_output {
	char *content; // NULL when the model sent none
	bool handoff;
	char *handoff_reason;
	ag_lead *lead;       // capture_lead's arguments, or NULL
	ag_action **actions; // create_order -> "order_confirmation"
	size_t n_actions;
	char *model;
	int tokens_in, tokens_out;
	char *ignored_tools; // names of unknown tools, comma-separated
} agents_llm_output;

// The most tokens one answer is counted for (usage beyond it is taken as
// this).
#define AGENTS_MAX_TOKENS 10000000

// Parses a chat/completions answer into out (strings in arena). Returns
// PL_OK, or PL_INTERNAL with err saying what was wrong. Token counts are
// within 0..AGENTS_MAX_TOKENS.
int agents_llm_parse(pl_arena *a, const char *body, size_t len,
                     agents_llm_output *out, char *err, size_t errlen);

// Page tokens: base64url of a cursor text; decode returns NULL on garbage.
char *agents_token_encode(pl_arena *a, const char *cursor);
char *agents_token_decode(pl_arena *a, const char *token);

// ---------------------------------------------------------------------------
// index.c: the retrieval index of one knowledge base and the cache of them.

typedef struct agents_index agents_index;

// One active entry, as the index is built from it (copied).
typedef struct agents_ix_src {
	const char *id, *question, *answer, *intent;
	const char *question_norm, *keywords_norm, *answer_norm;
} agents_ix_src;

// A match: pointers into the index (valid while a reference is held).
typedef struct agents_ix_hit {
	const char *id, *question, *answer, *intent;
	double score; // 0..1
} agents_ix_hit;

// Builds an index (one reference) of n entries at content version
// version; NULL when out of memory.
agents_index *agents_index_build(const agents_ix_src *src, size_t n,
                                 int64_t version);
agents_index *agents_index_ref(agents_index *ix);
void agents_index_release(agents_index *ix);
int64_t agents_index_version(const agents_index *ix);
size_t agents_index_size(const agents_index *ix);

// The best k entries for the normalised query (agents_text_normalize),
// best first (ties by id), into out; returns how many. Scratch memory from
// a; the index is only read (any number of threads at once).
size_t agents_index_search(const agents_index *ix, pl_arena *a,
                           const char *qnorm, size_t k, agents_ix_hit *out);

// At most max indexes, least recently used evicted.
agents_cache *agents_cache_new(size_t max);
void agents_cache_free(agents_cache *c);

// A reference to the cached index of (tenant, kb) at content version
// version or newer, or NULL.
agents_index *agents_cache_get(agents_cache *c, const char *tenant,
                               const char *kb, int64_t version);

// Caches ix (taking its own reference) unless a newer one is there.
void agents_cache_put(agents_cache *c, const char *tenant, const char *kb,
                      agents_index *ix);

// Held around a build, so that workers missing together build once.
void agents_cache_build_lock(agents_cache *c);
void agents_cache_build_unlock(agents_cache *c);

// How many indexes were installed (builds), for tests.
long agents_cache_builds(agents_cache *c);

// A reference to the index of base kb of tenant at content version ver or
// newer: from c, else built from the base's entries read on db (one
// statement) and cached. NULL with call's error set on failure. Reply and
// SearchKnowledge rank with it, so both give the same scores.
agents_index *agents_kb_index(agents_cache *c, pl_db *db, pl_call *call,
                              const char *tenant, const char *kb, int64_t ver);

// ---------------------------------------------------------------------------
// reply.c

// The Reply RPC's work, after input checks.
int agents_reply(pl_call *call, const ag_reply_req *in, ag_reply_resp *out);

// Checks a Reply request; PL_OK or a violation set on call.
int agents_reply_check(pl_call *call, const ag_reply_req *in);

// Group commit: the replies waiting together in one process are answered
// by one of their workers (the leader) in one transaction. max_group is
// the most replies in one group; 0 answers each reply alone with the
// two-round-trip path of migration 002 (agents.reply_begin/finish).
// at_once groups are answered at the same time (each on its leader's
// connection). sessions: how many sessions the replica remembers to
// answer a group in one round trip (0: always two; see reply.c).
agents_replyq *agents_replyq_new(int max_group, int at_once, size_t sessions);
void agents_replyq_free(agents_replyq *q);
// Changes both for the next replies (bench, tests).
void agents_replyq_set(agents_replyq *q, int max_group, int at_once);
// Forgets what is remembered and remembers up to sessions from now on.
void agents_replyq_set_memory(agents_replyq *q, size_t sessions);

// Group statistics since start: groups run, replies in them, largest
// group, groups that failed and were retried one reply at a time,
// replies written in one round trip, and those answered again with two
// because what was remembered no longer held.
typedef struct agents_replyq_stats {
	long groups, replies, largest, split, fast, redone;
	// Where a grouped reply's time goes (sums, ns): queued until a leader
	// takes it, its group being answered (per group), and from its group's
	// end until its own thread runs again (per follower woken).
	int64_t queued_ns, group_ns, woken_ns;
	long woken;
} agents_replyq_stats;
void agents_replyq_stats_get(agents_replyq *q, agents_replyq_stats *st);

// Answers n replies as one group on db (what the leader does), in order:
// each call's status in rv[i] (PL_OK or the error set on calls[i]). A
// reply whose agent uses an LLM is answered alone afterwards, or, with
// alone not NULL, not at all: alone[i] says so (its caller asks Reply).
// ReplyBatch runs it (the batch is the group, outside the queue); tests
// too.
void agents_reply_group(pl_db *db, size_t n, pl_call *const *calls,
                        const ag_reply_req *const *ins,
                        ag_reply_resp *const *outs, int *rv, bool *alone);

#endif
