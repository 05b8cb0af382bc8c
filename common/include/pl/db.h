// PostgreSQL access for one worker: a connection that reconnects after the
// server restarts, parameterised queries only, transactions that set the
// tenant for row-level security, SQLSTATE -> status.
#ifndef PL_DB_H
#define PL_DB_H

#include <stdbool.h>

#include <libpq-fe.h>

#include "pl/arena.h"
#include "pl/status.h"

typedef struct pl_call pl_call;
typedef struct pl_db pl_db;

// The setting row-level security policies read:
//   current_setting('parley.tenant_id', true)
#define PL_DB_TENANT_SETTING "parley.tenant_id"

// Makes a handle for url (libpq conninfo or URI). Connects lazily; never
// returns NULL except when out of memory. Not thread-safe: one per worker.
pl_db *pl_db_open(const char *url);
void pl_db_close(pl_db *db);

// The live connection, reconnecting if it was lost; NULL when the server
// cannot be reached (the error is logged). Inside pl_db_tx, the
// transaction is begun on it first (see pl_db_tx).
PGconn *pl_db_conn(pl_db *db);

// For statements a caller prepares itself (PQprepare on pl_db_conn's
// connection): whether name (a string that outlives db, e.g. a literal)
// is recorded as prepared on the present connection, and recording it so
// (true) or not (false). The record is per connection and is emptied when
// the connection is replaced; at most 16 names are kept (more are simply
// not remembered). Keep it here, not per thread: an RPC worker's pl_db is
// used by whichever thread took the worker.
bool pl_db_is_prepared(pl_db *db, const char *name);
void pl_db_set_prepared(pl_db *db, const char *name, bool prepared);

// Prepares sql as name on the present connection unless the record says
// it is (one round trip, once per connection) and records it; true when
// it is prepared. Only on an idle connection (not inside a transaction or
// a pipeline: a PREPARE that failed there would abort it), else false
// and nothing is sent: run the statement unnamed then.
bool pl_db_prepare(pl_db *db, const char *name, const char *sql, int nparams);

// True when r is the error of a prepared statement the connection does not
// have (26000: the record lost sight of it, e.g. a reconnect at the same
// address); name is then recorded as not prepared, so that pl_db_prepare
// prepares it again. False for any other result (NULL, or name NULL).
bool pl_db_forget_if_gone(pl_db *db, const char *name, const PGresult *r);

// True when a trivial query succeeds.
bool pl_db_ping(pl_db *db);

// Runs sql with text parameters (NULL entries are SQL NULL). Outside a
// transaction, a connection lost before or during the statement is
// re-established and the statement retried once. Returns the result (caller
// PQclear()s it) or NULL when no connection could be had. Check it with
// pl_db_result_status().
PGresult *pl_db_exec(pl_db *db, const char *sql, int nparams,
                     const char *const *params);

// One statement as tenant_id (NULL: no tenant setting) in ONE round trip,
// for reads on the hot paths: the tenant setting and the statement go
// together in libpq's pipeline mode (one implicit transaction up to the
// sync, so the setting is local to the statement), and the statement is
// prepared the first time this connection runs its text (up to 32 texts
// per connection; the others run unprepared) and runs with a generic
// plan, so PostgreSQL parses and plans it once. Write the statement so
// that a generic plan is right (no "$n IS NULL OR ..." filters: build the
// text from the filters given). Not inside pl_db_tx. A connection lost is
// re-established and the statement retried once. Returns what pl_db_exec
// returns.
PGresult *pl_db_read(pl_db *db, const char *tenant_id, const char *sql,
                     int nparams, const char *const *params);

// pl_db_read with the statement's results in binary (each column in its
// type's binary form): read them with pl_db_text, pl_db_ts_at and
// pl_db_int, which take either format. Spares PostgreSQL its text output
// of uuids and timestamps (and the caller their parsing) on reads that
// return many rows.
PGresult *pl_db_read_binary(pl_db *db, const char *tenant_id, const char *sql,
                            int nparams, const char *const *params);

// A value of r in its text form, whatever the result's format: as
// PostgreSQL's text output gives it for text, varchar, json, uuid, int2/4/
// 8, bool ("t"/"f") and timestamptz (in UTC, DateStyle ISO); "" for SQL
// NULL. Another type in binary is an error (logged, ""). In the arena;
// NULL when out of memory.
char *pl_db_text(pl_arena *a, const PGresult *r, int row, int col);

// A timestamptz value of r as pl_db_ts gives it, whatever the format (a
// binary value outside the years 1-9999 that is not infinity: "" and an
// error logged).
char *pl_db_ts_at(pl_arena *a, const PGresult *r, int row, int col);

// A timestamptz value of r plus seconds (>= 0), in the API's form, whatever
// the format: what pl_db_ts gives for the value PostgreSQL would compute
// with "+ interval 'N seconds'", without that expression on every row. ""
// for SQL NULL, infinity or a value it cannot read.
char *pl_db_ts_add(pl_arena *a, const PGresult *r, int row, int col,
                   int64_t seconds);

// An int2/int4/int8 value of r, whatever the format; 0 for SQL NULL.
int64_t pl_db_int(const PGresult *r, int row, int col);

// A one-dimensional text[] (or varchar[]) value of r, whatever the
// format: *n elements in *out (NULL elements left out; SQL NULL or {} is
// none). In the arena. -1 (and none) when the value is not such an array
// or memory ran out.
int pl_db_text_array(pl_arena *a, const PGresult *r, int row, int col,
                     char ***out, size_t *n);

// A PostgreSQL array literal of n strings for a text[] or uuid[]
// parameter: every element quoted, '"' and '\\' escaped, NULL items as
// NULL elements. In the arena; NULL when out of memory.
char *pl_db_array(pl_arena *a, const char *const *items, size_t n);

// A timestamptz as PostgreSQL's ISO text output gives it (the DateStyle
// every pl_db connection sets), "YYYY-MM-DD HH:MM:SS[.f{1,6}]{+|-}HH[:MM
// [:SS]]" in whatever the session's time zone, as UTC
// "YYYY-MM-DDTHH:MM:SS.mmmZ", milliseconds truncated: what to_char(t AT
// TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') gives, without its
// CPU in PostgreSQL. "" (SQL NULL) stays "". Anything else (BC, a year
// not of 4 digits before or after the shift to UTC, infinity, garbage) is
// copied unchanged. In the arena; NULL when out of memory.
char *pl_db_ts(pl_arena *a, const char *pg);

// Like pl_db_exec, returning only the status: for statements whose result
// is not needed.
int pl_db_command(pl_db *db, const char *sql, int nparams,
                  const char *const *params);

// PL_OK for a successful result, else the status that fits its SQLSTATE
// (UNAVAILABLE for NULL).
int pl_db_result_status(const PGresult *r);

// SQLSTATE -> status: 23505 ALREADY_EXISTS, 23503 FAILED_PRECONDITION,
// 23502/23514/22xxx INVALID_ARGUMENT, 40001/40P01 ABORTED, 57014
// DEADLINE_EXCEEDED, 08xxx/57P0x UNAVAILABLE, 42501 PERMISSION_DENIED,
// anything else INTERNAL.
int pl_db_sqlstate_status(const char *sqlstate);

// Logs the result's error (SQLSTATE, message) and sets the call's error
// with a client-safe message: "could not <what>: already exists" etc.
// Returns the status.
int pl_db_call_error(pl_call *call, const PGresult *r, const char *what);

typedef int (*pl_db_tx_fn)(pl_db *db, void *arg);

// Runs fn inside BEGIN ... COMMIT with the tenant setting made local to the
// transaction (tenant_id NULL: no tenant). fn returns PL_OK to commit, or a
// status to roll back and return. Serialization failures and deadlocks
// (ABORTED from fn or from COMMIT) are retried up to 3 attempts in all; a
// lost connection is retried once. Returns fn's status or the database's.
// BEGIN and the tenant setting are not sent on their own: they go with
// fn's first pl_db_exec in one round trip (libpq pipeline mode), or when
// fn first asks pl_db_conn for the connection; fn sending nothing commits
// nothing. tenant_id must stay valid until pl_db_tx returns.
int pl_db_tx(pl_db *db, const char *tenant_id, pl_db_tx_fn fn, void *arg);

// True while inside pl_db_tx.
bool pl_db_in_tx(const pl_db *db);

// The statistics keeper: a thread with its own connection that, every
// interval_ms (<= 0: 1 s), ANALYZEs the tables of schema whose live row
// count differs from the planner's (pg_class.reltuples) by 100 rows and by
// half, so plans follow a table that fills faster than autovacuum's
// minute; a table the planner counts at 10,000 rows or more is left to
// autovacuum. One replica at a time (advisory lock). NULL when out of
// memory.
typedef struct pl_db_analyzer pl_db_analyzer;
pl_db_analyzer *pl_db_analyzer_start(const char *url, const char *schema,
                                     int interval_ms);
void pl_db_analyzer_stop(pl_db_analyzer *a);

#endif
