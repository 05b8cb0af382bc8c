// PostgreSQL access for one worker (see pl/db.h).
//
// Errors go to the log with their SQLSTATE and primary message; statement
// parameters never do, since they may carry secrets.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "pl/db.h"
#include "pl/id.h"
#include "pl/log.h"
#include "pl/rpc.h"

#define TX_ATTEMPTS 3

#define STMT_CACHE 64 // statements prepared per connection (see stmt_send)
#define STMT_SEEN  64 // texts pl_db_exec has seen once (direct-mapped)
#define NAMED_MAX  16 // names pl_db_set_prepared remembers per connection

typedef struct read_stmt {
	uint64_t hash;
	char *sql;
} read_stmt;

struct pl_db {
	char *url;
	PGconn *conn;
	bool in_tx;
	bool lost; // the connection went away inside the transaction
	// pl_db_tx's BEGIN and tenant setting, not sent yet: they go with
	// the transaction's first statement, in one round trip.
	bool begin_pending;
	const char *begin_tenant;
	uint64_t rng; // backoff jitter
	// Statements prepared on prep_conn as "pl_stmt_<i>" (stmt_send).
	const PGconn *prep_conn;
	read_stmt prep[STMT_CACHE];
	int n_prep;
	uint64_t seen[STMT_SEEN]; // hashes of texts pl_db_exec ran once
	// Names the caller prepared itself (pl_db_set_prepared), on
	// named_conn; static strings, compared by content.
	const PGconn *named_conn;
	const char *named[NAMED_MAX];
	int n_named;
};

static void
notice_to_log(void *arg, const char *message)
{
	(void)arg;
	size_t n = strlen(message);
	if (n > 0 && message[n - 1] == '\n')
		n--;
	pl_debug("postgres: %.*s", (int)n, message);
}

pl_db *
pl_db_open(const char *url)
{
	pl_db *db = calloc(1, sizeof(*db));
	if (db == NULL)
		return NULL;
	db->url = strdup(url != NULL ? url : "");
	if (db->url == NULL) {
		free(db);
		return NULL;
	}
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	db->rng = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec ^
	          (uint64_t)(uintptr_t)db;
	if (db->rng == 0)
		db->rng = 0x9e3779b97f4a7c15ull;
	return db;
}

// The statements stmt_send prepared (on prep_conn), forgotten.
static void
forget_stmts(pl_db *db)
{
	for (int i = 0; i < db->n_prep; i++)
		free(db->prep[i].sql);
	db->n_prep = 0;
	db->prep_conn = NULL;
}

static void
forget_prepared(pl_db *db)
{
	forget_stmts(db);
	db->n_named = 0;
	db->named_conn = NULL;
}

// Whether r says a prepared statement is not on the connection (26000).
static bool
stmt_missing(const PGresult *r)
{
	const char *st =
	        r != NULL ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;

	return st != NULL && strcmp(st, "26000") == 0;
}

void
pl_db_close(pl_db *db)
{
	if (db == NULL)
		return;
	if (db->conn != NULL)
		PQfinish(db->conn);
	forget_prepared(db);
	free(db->url);
	free(db);
}

static void
drop_conn(pl_db *db)
{
	if (db->conn != NULL) {
		PQfinish(db->conn);
		db->conn = NULL;
	}
	// A new connection may get the old one's address.
	forget_prepared(db);
}

// One line of libpq's (possibly multi-line) message, for the log.
static int
msglen(const char *m)
{
	size_t n = strcspn(m, "\n");
	return (int)n;
}

static PGconn *
connect_db(pl_db *db)
{
	PGconn *c = PQconnectdb(db->url);
	PGresult *r;

	if (c == NULL) {
		pl_error("could not connect to database: out of memory");
		return NULL;
	}
	if (PQstatus(c) != CONNECTION_OK) {
		const char *m = PQerrorMessage(c);
		pl_error("could not connect to database: %.*s", msglen(m), m);
		PQfinish(c);
		return NULL;
	}
	PQsetNoticeProcessor(c, notice_to_log, NULL);
	// Timestamps are read in the ISO form (pl_db_ts) whatever the
	// server's or the role's default. The day/month order (for input)
	// and the time zone stay as they were: ISO output carries the offset.
	r = PQexec(c, "SET DateStyle = 'ISO'");
	if (PQresultStatus(r) != PGRES_COMMAND_OK) {
		const char *m = PQresultErrorMessage(r);
		pl_error("could not set DateStyle: %.*s", msglen(m), m);
		PQclear(r);
		PQfinish(c);
		return NULL;
	}
	PQclear(r);
	return c;
}

static PGresult *read_pipeline(PGconn *c, int ncmd, uint64_t *ok_mask);
static uint64_t text_hash(const char *s);

// The tenant setting's value for tenant_id: itself when it is "*" or a
// uuid, else "" (which the policies read as no tenant: nothing visible).
// The policies cast a 36-character setting to uuid without a pattern
// check (a regular expression cost ~5 us a table a statement); this is
// what keeps a malformed id from reaching that cast as an error.
static const char *
tenant_value(const char *tenant_id)
{
	if (tenant_id == NULL || strcmp(tenant_id, "*") == 0 ||
	    pl_uuid_valid(tenant_id))
		return tenant_id;
	return "";
}

// The settings pl_db_tx and pl_db_read send before their statements.
static const char tx_tenant_sql[] =
        "SELECT set_config('" PL_DB_TENANT_SETTING "', $1, true)";
static const char read_plan_sql[] =
        "SELECT set_config('plan_cache_mode', 'force_generic_plan', true)";
static const char read_tenant_sql[] =
        "SELECT set_config('plan_cache_mode', 'force_generic_plan', true), "
        "set_config('" PL_DB_TENANT_SETTING "', $1, true)";

// One statement sent by stmt_send: prep_at is the pipeline index of its
// Prepare (-1: none was sent), to record by stmt_done.
typedef struct stmt_ref {
	uint64_t hash;
	int prep_at;
} stmt_ref;

// The slot sql (whose text_hash is h) is prepared under on c, or -1.
static int
stmt_slot(const pl_db *db, const PGconn *c, const char *sql, uint64_t h)
{
	if (db->prep_conn != c)
		return -1;
	for (int i = 0; i < db->n_prep; i++)
		if (db->prep[i].hash == h && strcmp(db->prep[i].sql, sql) == 0)
			return i;
	return -1;
}

// Appends sql (whose text_hash is h) to the pipeline on c: by the name it
// was prepared under on this connection, else prepared now (when keep and
// the cache has room) and run by that name, else unnamed. A statement
// prepared once is parsed, analysed and (with a generic plan) planned once
// per connection, not at every call: that was a tenth of PostgreSQL's CPU
// on the message path.
static bool
stmt_send_fmt(pl_db *db, PGconn *c, const char *sql, uint64_t h, int nparams,
              const char *const *params, bool keep, stmt_ref *ref, int *ncmd,
              int fmt)
{
	char name[32] = "";
	int slot;

	ref->hash = h;
	ref->prep_at = -1;
	if (db->prep_conn != c) {
		// Another connection's statements (the names callers
		// prepared themselves are kept: named_index checks those).
		forget_stmts(db);
		db->prep_conn = c;
	}
	slot = stmt_slot(db, c, sql, h);
	if (slot >= 0) {
		snprintf(name, sizeof(name), "pl_stmt_%d", slot);
	} else if (keep && db->n_prep < STMT_CACHE) {
		// Its slot is taken now, so that a second new statement in
		// the same pipeline gets another name; stmt_done gives it
		// back if the Prepare failed.
		slot = db->n_prep;
		if ((db->prep[slot].sql = strdup(sql)) != NULL) {
			db->prep[slot].hash = ref->hash;
			db->n_prep++;
			snprintf(name, sizeof(name), "pl_stmt_%d", slot);
			if (PQsendPrepare(c, name, sql, nparams, NULL) != 1) {
				free(db->prep[--db->n_prep].sql);
				return false;
			}
			ref->prep_at = (*ncmd)++;
		}
	}
	(*ncmd)++;
	return (name[0] != '\0'
	                ? PQsendQueryPrepared(c, name, nparams, params, NULL,
	                                      NULL, fmt)
	                : PQsendQueryParams(c, sql, nparams, NULL, params, NULL,
	                                    NULL, fmt)) == 1;
}

// stmt_send_fmt with the results in text.
static bool
stmt_send(pl_db *db, PGconn *c, const char *sql, uint64_t h, int nparams,
          const char *const *params, bool keep, stmt_ref *ref, int *ncmd)
{
	return stmt_send_fmt(db, c, sql, h, nparams, params, keep, ref, ncmd,
	                     0);
}

// True (and the connection dropped) when r says a statement this cache
// prepared is gone from the server (26000: something ran DEALLOCATE or
// DISCARD): the record no longer matches, so the next call starts on a new
// connection; inside a transaction, that is a lost one.
static bool
stmt_gone(pl_db *db, const PGresult *r)
{
	if (!stmt_missing(r))
		return false;
	pl_warn("a prepared statement is gone from the connection; "
	        "reconnecting");
	drop_conn(db);
	if (db->in_tx)
		db->lost = true;
	return true;
}

// Whether pl_db_exec keeps sql prepared: a query or a data change (not a
// utility statement, which gains nothing and some of which must not run
// in a pipeline) run before on this pl_db. A text run once (setup,
// migrations) is never prepared.
static bool
exec_keep(pl_db *db, const char *sql, uint64_t h)
{
	static const char *const kinds[] = { "SELECT", "WITH", "INSERT",
		                             "UPDATE", "DELETE" };
	uint64_t *slot = &db->seen[h % STMT_SEEN];
	bool dml = false;

	while (*sql == ' ' || *sql == '\n' || *sql == '\t' || *sql == '(')
		sql++;
	for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]) && !dml; i++)
		dml = strncasecmp(sql, kinds[i], strlen(kinds[i])) == 0;
	if (!dml)
		return false;
	if (*slot == h)
		return true;
	*slot = h;
	return false;
}

// After the pipeline: a Prepare that did not succeed leaves the cache (the
// slots it took are the last, taken by this pipeline in order).
static void
stmt_done(pl_db *db, const stmt_ref *refs, int n, uint64_t ok_mask)
{
	for (int i = n - 1; i >= 0; i--) {
		if (refs[i].prep_at < 0 ||
		    (ok_mask >> refs[i].prep_at & 1) != 0)
			continue;
		db->n_prep--;
		free(db->prep[db->n_prep].sql);
		db->prep[db->n_prep].sql = NULL;
	}
}

// The live connection (pl_db_conn without sending a pending BEGIN).
static PGconn *
live_conn(pl_db *db)
{
	if (db->conn != NULL && PQstatus(db->conn) == CONNECTION_OK)
		return db->conn;
	if (db->in_tx) {
		// A new connection would run the rest of the transaction's
		// statements outside it: report the loss instead.
		db->lost = true;
		drop_conn(db);
		return NULL;
	}
	if (db->conn != NULL)
		pl_warn("database connection lost; reconnecting");
	drop_conn(db);
	db->conn = connect_db(db);
	return db->conn;
}

// Sends the BEGIN and the tenant setting that pl_db_tx left pending, in
// one pipeline with sql when it is given (then its result is returned:
// the first that failed, else sql's), else alone (then an empty
// successful result is returned). NULL when the connection broke (it is
// dropped and the transaction marked lost).
static PGresult *
send_begin(pl_db *db, PGconn *c, const char *sql, uint64_t h, int nparams,
           const char *const *params)
{
	const char *p[1] = { db->begin_tenant };
	bool t = db->begin_tenant != NULL, ok;
	int ncmd = 0, nref = 0;
	stmt_ref refs[2];
	uint64_t done = 0;
	PGresult *r = NULL;

	db->begin_pending = false;
	ok = PQenterPipelineMode(c) == 1;
	if (ok) {
		ok = PQsendQueryParams(c, "BEGIN", 0, NULL, NULL, NULL, NULL,
		                       0) == 1;
		ncmd++;
	}
	if (ok && t)
		ok = stmt_send(db, c, tx_tenant_sql, text_hash(tx_tenant_sql),
		               1, p, true, &refs[nref++], &ncmd);
	if (ok && sql != NULL)
		ok = stmt_send(db, c, sql, h, nparams, params,
		               exec_keep(db, sql, h), &refs[nref++], &ncmd);
	if (ok)
		ok = PQpipelineSync(c) == 1;
	if (ok) {
		r = read_pipeline(c, ncmd, &done);
		stmt_done(db, refs, nref, done);
		if (stmt_gone(db, r)) {
			PQclear(r);
			return NULL;
		}
	}
	if (r == NULL) {
		const char *m = PQerrorMessage(c);
		pl_warn("database connection lost beginning a transaction: "
		        "%.*s",
		        msglen(m), m);
		drop_conn(db);
		db->lost = true;
		return NULL;
	}
	if (PQtransactionStatus(c) == PQTRANS_IDLE) {
		// BEGIN itself failed: nothing may run outside the
		// transaction.
		pl_error("could not begin transaction; dropping the "
		         "connection");
		PQclear(r);
		drop_conn(db);
		db->lost = true;
		return NULL;
	}
	if (sql == NULL && pl_db_result_status(r) == PL_OK) {
		PQclear(r);
		r = PQmakeEmptyPGresult(c, PGRES_COMMAND_OK);
	}
	return r;
}

PGconn *
pl_db_conn(pl_db *db)
{
	PGconn *c = live_conn(db);
	PGresult *r;

	if (c == NULL || !db->begin_pending)
		return c;
	// The caller runs its own statements on the connection: they must
	// find the transaction begun.
	r = send_begin(db, c, NULL, 0, 0, NULL);
	if (pl_db_result_status(r) != PL_OK) {
		// The tenant setting failed inside the transaction: the
		// caller's statements would only fail after it.
		if (r != NULL) {
			pl_error("could not begin transaction: %s",
			         pl_status_name(pl_db_result_status(r)));
			drop_conn(db);
			db->lost = true;
		}
		PQclear(r);
		return NULL;
	}
	PQclear(r);
	return db->conn;
}

// The index of name among the names prepared on c, or -1 (and the record
// emptied when it was another connection's).
static int
named_index(pl_db *db, const PGconn *c, const char *name)
{
	if (db->named_conn != c) {
		db->n_named = 0;
		db->named_conn = c;
	}
	for (int i = 0; i < db->n_named; i++)
		if (strcmp(db->named[i], name) == 0)
			return i;
	return -1;
}

bool
pl_db_is_prepared(pl_db *db, const char *name)
{
	return db->conn != NULL && named_index(db, db->conn, name) >= 0;
}

void
pl_db_set_prepared(pl_db *db, const char *name, bool prepared)
{
	int i;

	if (db->conn == NULL)
		return;
	i = named_index(db, db->conn, name);
	if (prepared && i < 0 && db->n_named < NAMED_MAX)
		db->named[db->n_named++] = name;
	else if (!prepared && i >= 0)
		db->named[i] = db->named[--db->n_named];
}

bool
pl_db_prepare(pl_db *db, const char *name, const char *sql, int nparams)
{
	PGconn *c = db->conn;
	PGresult *r;
	const char *st;
	bool ok;

	if (c == NULL)
		return false;
	if (pl_db_is_prepared(db, name))
		return true;
	// A PREPARE that failed inside a transaction would abort it.
	if (PQtransactionStatus(c) != PQTRANS_IDLE ||
	    PQpipelineStatus(c) != PQ_PIPELINE_OFF)
		return false;
	r = PQprepare(c, name, sql, nparams, NULL);
	st = r != NULL ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
	// 42P05: prepared already (a record that lost the name).
	ok = PQresultStatus(r) == PGRES_COMMAND_OK ||
	     (st != NULL && strcmp(st, "42P05") == 0);
	PQclear(r);
	if (ok)
		pl_db_set_prepared(db, name, true);
	return ok;
}

bool
pl_db_forget_if_gone(pl_db *db, const char *name, const PGresult *r)
{
	if (name == NULL || !stmt_missing(r))
		return false;
	pl_db_set_prepared(db, name, false);
	return true;
}

bool
pl_db_in_tx(const pl_db *db)
{
	return db->in_tx;
}

// sql alone in a pipeline, by its prepared name (prepared first if it is
// not yet). NULL when the connection failed (the caller drops it).
static PGresult *
exec_piped(pl_db *db, PGconn *c, const char *sql, uint64_t h, int nparams,
           const char *const *params)
{
	stmt_ref ref;
	uint64_t done = 0;
	int ncmd = 0;
	PGresult *r;

	if (PQenterPipelineMode(c) != 1 ||
	    !stmt_send(db, c, sql, h, nparams, params, true, &ref, &ncmd) ||
	    PQpipelineSync(c) != 1)
		return NULL;
	r = read_pipeline(c, ncmd, &done);
	stmt_done(db, &ref, 1, done);
	return r;
}

PGresult *
pl_db_exec(pl_db *db, const char *sql, int nparams, const char *const *params)
{
	if (sql == NULL || nparams < 0 || (nparams > 0 && params == NULL)) {
		pl_error("pl_db_exec: bad arguments");
		return NULL;
	}
	uint64_t h = text_hash(sql); // once: every lookup below uses it
	for (int attempt = 0;; attempt++) {
		PGconn *c = live_conn(db);
		if (c == NULL)
			return NULL;
		if (db->begin_pending) // only ever inside pl_db_tx
			return send_begin(db, c, sql, h, nparams, params);
		bool piped =
		        exec_keep(db, sql, h) || stmt_slot(db, c, sql, h) >= 0;
		PGresult *r = piped ? exec_piped(db, c, sql, h, nparams, params)
		                    : PQexecParams(c, sql, nparams, NULL,
		                                   params, NULL, NULL, 0);
		if (piped && stmt_gone(db, r)) {
			PQclear(r);
			if (db->in_tx || attempt > 0)
				return NULL;
			continue;
		}
		if (PQstatus(c) == CONNECTION_OK && r != NULL)
			return r;
		if (PQstatus(c) == CONNECTION_OK && !piped) {
			// NULL with a live connection: libpq ran out of memory.
			pl_error("could not run statement: %s",
			         "out of memory");
			return NULL;
		}
		const char *m = r != NULL ? PQresultErrorMessage(r) : "";
		if (*m == '\0')
			m = PQerrorMessage(c);
		pl_warn("database connection lost during statement%s: %.*s",
		        db->in_tx || attempt > 0 ? "" : "; reconnecting",
		        msglen(m), m);
		PQclear(r);
		drop_conn(db);
		if (db->in_tx) {
			db->lost = true;
			return NULL;
		}
		if (attempt > 0)
			return NULL;
	}
}

bool
pl_db_ping(pl_db *db)
{
	PGresult *r = pl_db_exec(db, "SELECT 1", 0, NULL);
	bool ok = pl_db_result_status(r) == PL_OK;
	PQclear(r);
	return ok;
}

int
pl_db_command(pl_db *db, const char *sql, int nparams,
              const char *const *params)
{
	PGresult *r = pl_db_exec(db, sql, nparams, params);
	int rc = pl_db_result_status(r);
	if (rc != PL_OK && r != NULL) {
		const char *st = PQresultErrorField(r, PG_DIAG_SQLSTATE);
		const char *m = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
		// Expected failures (constraints, data, conflicts) are the
		// caller's to report; anything else is a bug worth a warning.
		// Class 22 messages quote the input, which may be a secret.
		bool expected = st != NULL && (strncmp(st, "23", 2) == 0 ||
		                               strncmp(st, "22", 2) == 0 ||
		                               strncmp(st, "40", 2) == 0);
		pl_logf(expected ? PL_LOG_DEBUG : PL_LOG_WARN,
		        "statement failed: SQLSTATE %s: %s",
		        st != NULL ? st : "none",
		        st != NULL && strncmp(st, "22", 2) == 0
		                ? "(data error)"
		                : (m != NULL ? m : ""));
	}
	PQclear(r);
	return rc;
}

int
pl_db_sqlstate_status(const char *s)
{
	if (s == NULL || strlen(s) != 5)
		return PL_INTERNAL;
	if (strcmp(s, "23505") == 0)
		return PL_ALREADY_EXISTS;
	if (strcmp(s, "23503") == 0)
		return PL_FAILED_PRECONDITION;
	if (strcmp(s, "23502") == 0 || strcmp(s, "23514") == 0 ||
	    strncmp(s, "22", 2) == 0)
		return PL_INVALID_ARGUMENT;
	if (strcmp(s, "40001") == 0 || strcmp(s, "40P01") == 0)
		return PL_ABORTED;
	if (strcmp(s, "57014") == 0)
		return PL_DEADLINE_EXCEEDED;
	if (strncmp(s, "08", 2) == 0 || strncmp(s, "57P0", 4) == 0)
		return PL_UNAVAILABLE;
	if (strcmp(s, "42501") == 0)
		return PL_PERMISSION_DENIED;
	return PL_INTERNAL;
}

int
pl_db_result_status(const PGresult *r)
{
	if (r == NULL)
		return PL_UNAVAILABLE;
	switch (PQresultStatus(r)) {
	case PGRES_COMMAND_OK:
	case PGRES_TUPLES_OK:
	case PGRES_SINGLE_TUPLE:
	case PGRES_EMPTY_QUERY:
	case PGRES_COPY_IN:
	case PGRES_COPY_OUT:
	case PGRES_COPY_BOTH:
		return PL_OK;
	default:
		return pl_db_sqlstate_status(
		        PQresultErrorField(r, PG_DIAG_SQLSTATE));
	}
}

static const char *
client_reason(int code, const char *sqlstate)
{
	switch (code) {
	case PL_ALREADY_EXISTS:
		return "already exists";
	case PL_FAILED_PRECONDITION:
		return "a related record is missing or still in use";
	case PL_INVALID_ARGUMENT:
		if (sqlstate != NULL && strcmp(sqlstate, "23502") == 0)
			return "a required value is missing";
		return "invalid value";
	case PL_ABORTED:
		return "conflict with a concurrent change, try again";
	case PL_DEADLINE_EXCEEDED:
		return "timed out";
	case PL_UNAVAILABLE:
		return "database unavailable";
	case PL_PERMISSION_DENIED:
		return "permission denied";
	default:
		return "internal error";
	}
}

int
pl_db_call_error(pl_call *call, const PGresult *r, const char *what)
{
	int code = pl_db_result_status(r);
	if (code == PL_OK) {
		// A caller bug: reporting success as a failure.
		pl_error("pl_db_call_error called for a successful result "
		         "(%s)",
		         what != NULL ? what : "?");
		code = PL_INTERNAL;
	}
	if (what == NULL)
		what = "complete the request";
	const char *st = NULL;
	if (r == NULL) {
		pl_logf(PL_LOG_ERROR, "could not %s: no database connection",
		        what);
	} else {
		st = PQresultErrorField(r, PG_DIAG_SQLSTATE);
		const char *m = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
		const char *tbl = PQresultErrorField(r, PG_DIAG_TABLE_NAME);
		const char *col = PQresultErrorField(r, PG_DIAG_COLUMN_NAME);
		const char *con =
		        PQresultErrorField(r, PG_DIAG_CONSTRAINT_NAME);
		// Data exceptions (class 22) quote the offending input in
		// their message, and input may be a secret: leave it out.
		if (st != NULL && strncmp(st, "22", 2) == 0)
			m = "(data exception; message withheld)";
		if (m == NULL)
			m = PQresultErrorMessage(r);
		pl_logf(code == PL_INTERNAL || code == PL_UNAVAILABLE
		                ? PL_LOG_ERROR
		                : PL_LOG_WARN,
		        "could not %s: SQLSTATE %s: %.*s%s%s%s%s%s%s", what,
		        st != NULL ? st : "none", msglen(m), m,
		        tbl != NULL ? " table=" : "", tbl != NULL ? tbl : "",
		        col != NULL ? " column=" : "", col != NULL ? col : "",
		        con != NULL ? " constraint=" : "",
		        con != NULL ? con : "");
	}
	if (call == NULL)
		return code;
	return pl_call_error(call, code, "could not %s: %s", what,
	                     client_reason(code, st));
}

// xorshift64: enough to spread retries of colliding transactions.
static uint64_t
next_rand(pl_db *db)
{
	uint64_t x = db->rng;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	db->rng = x;
	return x;
}

static void
backoff(pl_db *db, int attempt)
{
	// 5-25 ms, doubled per attempt.
	long ms = (long)(5 + next_rand(db) % 21) << (attempt - 1);
	struct timespec ts = { .tv_sec = ms / 1000,
		               .tv_nsec = (ms % 1000) * 1000000L };
	while (nanosleep(&ts, &ts) != 0)
		;
}

static void
rollback(pl_db *db)
{
	if (db->conn == NULL || PQstatus(db->conn) != CONNECTION_OK)
		return;
	if (PQtransactionStatus(db->conn) == PQTRANS_IDLE)
		return;
	PGresult *r = PQexec(db->conn, "ROLLBACK");
	if (pl_db_result_status(r) != PL_OK) {
		// The session's state is unknown: start afresh next time.
		pl_error("could not roll back; dropping the connection");
		drop_conn(db);
	}
	PQclear(r);
}

// One attempt. *lost_in is set when the connection went away before
// COMMIT was sent (so nothing was committed and a retry is safe).
static int
tx_once(pl_db *db, const char *tenant_id, pl_db_tx_fn fn, void *arg,
        bool *lost_in)
{
	int rc;

	*lost_in = false;
	db->lost = false;
	// Connected (again, after a loss) before the transaction starts;
	// BEGIN and the tenant setting go with its first statement.
	if (live_conn(db) == NULL)
		return PL_UNAVAILABLE;
	db->in_tx = true;
	db->begin_pending = true;
	db->begin_tenant = tenant_value(tenant_id);
	rc = fn(db, arg);
	if (rc != PL_OK)
		goto out_rollback;
	if (db->begin_pending) {
		// Nothing was sent: nothing to commit.
		db->begin_pending = false;
		db->in_tx = false;
		return PL_OK;
	}
	if (db->conn == NULL || PQstatus(db->conn) != CONNECTION_OK) {
		db->lost = true;
		rc = PL_UNAVAILABLE;
		goto out_rollback;
	}
	if (PQtransactionStatus(db->conn) == PQTRANS_INERROR) {
		// fn ignored a failed statement; COMMIT would roll back.
		pl_error("transaction failed but its function returned OK");
		rc = PL_INTERNAL;
		goto out_rollback;
	}
	PGresult *r = PQexec(db->conn, "COMMIT");
	rc = pl_db_result_status(r);
	if (rc == PL_OK && strcmp(PQcmdStatus(r), "COMMIT") != 0)
		rc = PL_INTERNAL;
	if (rc != PL_OK) {
		const char *st =
		        r != NULL ? PQresultErrorField(r, PG_DIAG_SQLSTATE)
		                  : NULL;
		pl_error("could not commit transaction: SQLSTATE %s",
		         st != NULL ? st : "none");
	}
	PQclear(r);
	if (PQstatus(db->conn) != CONNECTION_OK) {
		// Whether COMMIT took effect is unknown: never retry it.
		drop_conn(db);
		db->in_tx = false;
		return PL_UNAVAILABLE;
	}
	if (rc != PL_OK)
		goto out_rollback;
	db->in_tx = false;
	return PL_OK;

out_rollback:
	db->begin_pending = false;
	if (db->lost || db->conn == NULL ||
	    PQstatus(db->conn) != CONNECTION_OK) {
		drop_conn(db);
		*lost_in = true;
	} else {
		rollback(db);
	}
	db->in_tx = false;
	db->lost = false;
	return rc;
}

int
pl_db_tx(pl_db *db, const char *tenant_id, pl_db_tx_fn fn, void *arg)
{
	if (fn == NULL)
		return PL_INVALID_ARGUMENT;
	if (db->in_tx) {
		pl_error("pl_db_tx: nested transactions are not supported");
		return PL_FAILED_PRECONDITION;
	}
	bool reconnected = false;
	int attempt = 1;
	for (;;) {
		bool lost;
		int rc = tx_once(db, tenant_id, fn, arg, &lost);
		if (rc == PL_OK)
			return PL_OK;
		if (lost && !reconnected) {
			reconnected = true;
			pl_warn("connection lost in transaction; retrying it");
			continue;
		}
		if (lost)
			return PL_UNAVAILABLE;
		if (rc != PL_ABORTED || attempt >= TX_ATTEMPTS)
			return rc;
		pl_info("transaction aborted (attempt %d of %d); retrying",
		        attempt, TX_ATTEMPTS);
		backoff(db, attempt);
		attempt++;
	}
}

char *
pl_db_array(pl_arena *a, const char *const *items, size_t n)
{
	size_t cap = 3;
	char *s, *p;

	for (size_t i = 0; i < n; i++)
		cap += items[i] != NULL ? 2 * strlen(items[i]) + 3 : 5;
	if ((s = p = pl_arena_alloc(a, cap)) == NULL)
		return NULL;
	*p++ = '{';
	for (size_t i = 0; i < n; i++) {
		if (i > 0)
			*p++ = ',';
		if (items[i] == NULL) {
			memcpy(p, "NULL", 4);
			p += 4;
			continue;
		}
		*p++ = '"';
		for (const char *c = items[i]; *c != '\0'; c++) {
			if (*c == '"' || *c == '\\')
				*p++ = '\\';
			*p++ = *c;
		}
		*p++ = '"';
	}
	*p++ = '}';
	*p = '\0';
	return s;
}

// Howard Hinnant's days_from_civil and civil_from_days: days since
// 1970-01-01 in the proleptic Gregorian calendar, as PostgreSQL counts.
static int64_t
days_from_civil(int64_t y, int m, int d)
{
	int64_t era, yoe, doy;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = y - era * 400;
	doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
	return era * 146097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719468;
}

static void
civil_from_days(int64_t z, int64_t *y, int *m, int *d)
{
	int64_t era, doe, yoe, doy, mp;

	z += 719468;
	era = (z >= 0 ? z : z - 146096) / 146097;
	doe = z - era * 146097;
	yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	mp = (5 * doy + 2) / 153;
	*d = (int)(doy - (153 * mp + 2) / 5 + 1);
	*m = (int)(mp < 10 ? mp + 3 : mp - 9);
	*y = yoe + era * 400 + (*m <= 2);
}

// Reads n digits at *s into *out, advancing *s; false at anything else
// (the terminating NUL included, so nothing past it is read).
static bool
digits(const char **s, int n, int *out)
{
	int x = 0;

	for (int i = 0; i < n; i++) {
		if ((*s)[i] < '0' || (*s)[i] > '9')
			return false;
		x = x * 10 + ((*s)[i] - '0');
	}
	*s += n;
	*out = x;
	return true;
}

static bool
lit(const char **s, char c)
{
	if (**s != c)
		return false;
	(*s)++;
	return true;
}

static void
put(char *p, int x, int n)
{
	while (n-- > 0) {
		p[n] = (char)('0' + x % 10);
		x /= 10;
	}
}

// Two digits of x (0..99).
static inline void
put2(char *p, int x)
{
	static const char tab[] = "00010203040506070809101112131415161718192021"
	                          "22232425262728293031323334353637383940414243"
	                          "44454647484950515253545556575859606162636465"
	                          "66676869707172737475767778798081828384858687"
	                          "888990919293949596979899";

	memcpy(p, tab + 2 * x, 2);
}

// Writes UTC second t (since 1970) and ms as YYYY-MM-DDTHH:MM:SS.mmmZ;
// false when the year is not 4 digits. The date part of the last day
// written is kept per thread: a page's timestamps mostly share a few days.
static bool
ts_put(int64_t t, int ms, char out[25])
{
	static _Thread_local int64_t last_days = INT64_MIN;
	static _Thread_local char last_date[10];
	int64_t days = (t >= 0 ? t : t - 86399) / 86400, y;
	int sod = (int)(t - days * 86400), m, d;

	if (days != last_days) {
		civil_from_days(days, &y, &m, &d);
		if (y < 1 || y > 9999)
			return false;
		put(last_date, (int)y, 4);
		last_date[4] = '-';
		put2(last_date + 5, m);
		last_date[7] = '-';
		put2(last_date + 8, d);
		last_days = days;
	}
	memcpy(out, last_date, 10);
	out[10] = 'T';
	put2(out + 11, sod / 3600);
	out[13] = ':';
	put2(out + 14, sod / 60 % 60);
	out[16] = ':';
	put2(out + 17, sod % 60);
	out[19] = '.';
	out[20] = (char)('0' + ms / 100);
	put2(out + 21, ms % 100);
	out[23] = 'Z';
	out[24] = '\0';
	return true;
}

// PostgreSQL's ISO text of a timestamptz as UTC second *t (since 1970)
// and milliseconds *ms (truncated); false when pg is not in the form it
// knows.
static bool
ts_parse(const char *pg, int64_t *t, int *ms_out)
{
	static const int mdays[12] = { 31, 29, 31, 30, 31, 30,
		                       31, 31, 30, 31, 30, 31 };
	const char *s = pg;
	int y, mo, d, h, mi, sec, ms = 0, sign, oh, om = 0, os = 0, n = 0;

	if (!digits(&s, 4, &y) || !lit(&s, '-') || !digits(&s, 2, &mo) ||
	    !lit(&s, '-') || !digits(&s, 2, &d) || !lit(&s, ' ') ||
	    !digits(&s, 2, &h) || !lit(&s, ':') || !digits(&s, 2, &mi) ||
	    !lit(&s, ':') || !digits(&s, 2, &sec))
		return false;
	if (lit(&s, '.')) {
		// Milliseconds truncated, as to_char's MS does.
		for (; *s >= '0' && *s <= '9'; s++, n++)
			if (n < 3)
				ms = ms * 10 + (*s - '0');
		if (n < 1 || n > 6)
			return false;
		for (; n < 3; n++)
			ms *= 10;
	}
	if (*s != '+' && *s != '-')
		return false;
	sign = *s++ == '-' ? -1 : 1;
	if (!digits(&s, 2, &oh))
		return false;
	if (lit(&s, ':')) {
		if (!digits(&s, 2, &om))
			return false;
		if (lit(&s, ':') && !digits(&s, 2, &os))
			return false;
	}
	// Nothing after the offset: " BC" is refused here.
	if (*s != '\0' || mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] ||
	    h > 23 || mi > 59 || sec > 59 || om > 59 || os > 59)
		return false;
	if (mo == 2 && d == 29 &&
	    (y % 4 != 0 || (y % 100 == 0 && y % 400 != 0)))
		return false;
	// Local time minus the offset is UTC, whatever day, month or year
	// boundary that crosses.
	*t = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec -
	     sign * (oh * 3600 + om * 60 + os);
	*ms_out = ms;
	return true;
}

// pl_db_ts's conversion into out; false when pg is not in the form it
// knows.
static bool
ts_iso(const char *pg, char out[25])
{
	int64_t t;
	int ms;

	return ts_parse(pg, &t, &ms) && ts_put(t, ms, out);
}

char *
pl_db_ts(pl_arena *a, const char *pg)
{
	char out[25];

	return pl_arena_strdup(a, ts_iso(pg, out) ? out : pg);
}

// FNV-1a of a statement's text: pl_db_read's cache key (the text is
// compared too).
static uint64_t
text_hash(const char *s)
{
	uint64_t h = 0xcbf29ce484222325ull;

	for (; *s != '\0'; s++) {
		h ^= (unsigned char)*s;
		h *= 0x100000001b3ull;
	}
	return h;
}

// Reads one pipeline's ncmd (at most 64) results and its sync. Returns
// the first failed command's result, else the last command's (the
// caller's statement); NULL when the connection broke. Bit k of *ok_mask
// is set when command k succeeded.
static PGresult *
read_pipeline(PGconn *c, int ncmd, uint64_t *ok_mask)
{
	PGresult *out = NULL, *r;
	bool failed = false, broken = false;

	*ok_mask = 0;
	for (int k = 0; k < ncmd && !broken; k++) {
		r = PQgetResult(c);
		if (r == NULL) {
			broken = true;
			break;
		}
		ExecStatusType st = PQresultStatus(r);
		if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)
			*ok_mask |= 1ull << k;
		if (!failed && (st == PGRES_FATAL_ERROR || k == ncmd - 1)) {
			PQclear(out);
			out = r;
			failed = st == PGRES_FATAL_ERROR;
		} else {
			PQclear(r);
		}
		// The command's end.
		while ((r = PQgetResult(c)) != NULL) {
			if (PQresultStatus(r) == PGRES_PIPELINE_SYNC) {
				// An error ended the pipeline early.
				PQclear(r);
				goto synced;
			}
			PQclear(r);
		}
	}
	if (!broken) {
		r = PQgetResult(c);
		if (r == NULL || PQresultStatus(r) != PGRES_PIPELINE_SYNC)
			broken = true;
		PQclear(r);
	}
synced:
	if (broken || PQexitPipelineMode(c) != 1 ||
	    PQstatus(c) != CONNECTION_OK) {
		PQclear(out);
		return NULL;
	}
	return out;
}

static PGresult *
db_read(pl_db *db, const char *tenant_id, const char *sql, int nparams,
        const char *const *params, int fmt)
{
	if (sql == NULL || nparams < 0 || (nparams > 0 && params == NULL)) {
		pl_error("pl_db_read: bad arguments");
		return NULL;
	}
	if (db->in_tx) {
		pl_error("pl_db_read: not inside a transaction");
		return NULL;
	}
	uint64_t h = text_hash(sql);
	for (int attempt = 0; attempt < 2; attempt++) {
		PGconn *c = live_conn(db);
		const char *p[1] = { tenant_value(tenant_id) };
		bool t = tenant_id != NULL, ok;
		stmt_ref refs[2];
		uint64_t done = 0;
		int ncmd = 0;
		PGresult *r;

		if (c == NULL)
			return NULL;
		if (PQenterPipelineMode(c) != 1) {
			pl_error("pl_db_read: could not enter pipeline mode");
			return NULL;
		}
		// One implicit transaction up to the sync: the local settings
		// hold for the statement and end with it. A generic plan: the
		// statement is planned once per connection, not per call
		// (with a LIMIT parameter PostgreSQL would otherwise keep
		// planning it again, its custom plans looking cheaper).
		const char *set = t ? read_tenant_sql : read_plan_sql;
		ok = stmt_send(db, c, set, text_hash(set), t ? 1 : 0,
		               t ? p : NULL, true, &refs[0], &ncmd);
		if (ok)
			ok = stmt_send_fmt(db, c, sql, h, nparams, params, true,
			                   &refs[1], &ncmd, fmt);
		if (ok)
			ok = PQpipelineSync(c) == 1;
		r = ok ? read_pipeline(c, ncmd, &done) : NULL;
		if (r != NULL) {
			stmt_done(db, refs, 2, done);
			if (!stmt_gone(db, r))
				return r;
			PQclear(r);
			continue;
		}
		const char *m = PQerrorMessage(c);
		pl_warn("database connection lost during statement%s: %.*s",
		        attempt > 0 ? "" : "; reconnecting", msglen(m), m);
		drop_conn(db);
	}
	return NULL;
}

PGresult *
pl_db_read(pl_db *db, const char *tenant_id, const char *sql, int nparams,
           const char *const *params)
{
	return db_read(db, tenant_id, sql, nparams, params, 0);
}

PGresult *
pl_db_read_binary(pl_db *db, const char *tenant_id, const char *sql,
                  int nparams, const char *const *params)
{
	return db_read(db, tenant_id, sql, nparams, params, 1);
}

// ---------------------------------------------------------------------------
// Values of a result in either format

// The binary forms read here (PostgreSQL's *_send functions): big-endian
// integers, a uuid's 16 bytes, a timestamptz as int64 microseconds since
// 2000-01-01 00:00 UTC, a bool's one byte.
#define BOOLOID        16
#define INT8OID        20
#define INT2OID        21
#define INT4OID        23
#define TIMESTAMPTZOID 1184
#define UUIDOID        2950
#define PG_EPOCH_S     946684800 // 2000-01-01 in Unix seconds

static int64_t
be_int(const unsigned char *p, int len)
{
	uint64_t u = 0;

	for (int i = 0; i < len; i++)
		u = u << 8 | p[i];
	if (len == 2)
		return (int16_t)u;
	if (len == 4)
		return (int32_t)u;
	return (int64_t)u;
}

// Microseconds since PostgreSQL's epoch as a Unix second and the
// microseconds into it (floored, so that times before 1970 work).
static void
ts_split(int64_t us, int64_t *sec, int *usec)
{
	int64_t s = us / 1000000, r = us % 1000000;

	if (r < 0) {
		s--;
		r += 1000000;
	}
	*sec = s + PG_EPOCH_S;
	*usec = (int)r;
}

// A binary timestamptz as PostgreSQL's own text gives it in UTC with
// DateStyle ISO ("2026-11-24 08:01:20.707123+00"), or infinity; false
// when the year is not of 4 digits (what ts_put refuses).
static bool
ts_pgtext(int64_t us, char out[40])
{
	char iso[25];
	int64_t sec;
	int usec;

	if (us == INT64_MAX || us == INT64_MIN) {
		strcpy(out, us > 0 ? "infinity" : "-infinity");
		return true;
	}
	ts_split(us, &sec, &usec);
	if (!ts_put(sec, 0, iso))
		return false;
	iso[10] = ' ';
	iso[19] = '\0';
	if (usec == 0) {
		snprintf(out, 40, "%s+00", iso);
	} else {
		// PostgreSQL drops the fraction's trailing zeros.
		int digits = 6;
		for (; usec % 10 == 0; usec /= 10)
			digits--;
		snprintf(out, 40, "%s.%0*d+00", iso, digits, usec);
	}
	return true;
}

char *
pl_db_text(pl_arena *a, const PGresult *r, int row, int col)
{
	const unsigned char *p = (const unsigned char *)PQgetvalue(r, row, col);
	int len = PQgetlength(r, row, col);
	Oid type = PQftype(r, col);
	char buf[40];

	if (PQgetisnull(r, row, col))
		return pl_arena_strdup(a, "");
	if (PQfformat(r, col) == 0)
		return pl_arena_strndup(a, (const char *)p, (size_t)len);
	switch (type) {
	case UUIDOID:
		if (len != 16)
			break;
		pl_uuid_format(p, buf);
		return pl_arena_strndup(a, buf, PL_UUID_STRLEN);
	case INT2OID:
	case INT4OID:
	case INT8OID:
		if (len != 2 && len != 4 && len != 8)
			break;
		snprintf(buf, sizeof(buf), "%lld", (long long)be_int(p, len));
		return pl_arena_strdup(a, buf);
	case BOOLOID:
		return pl_arena_strdup(a, len == 1 && p[0] ? "t" : "f");
	case TIMESTAMPTZOID:
		if (len != 8 || !ts_pgtext(be_int(p, 8), buf))
			break;
		return pl_arena_strdup(a, buf);
	default:
		// text, varchar, json: the bytes are the text.
		if (type != 25 && type != 1043 && type != 114)
			break;
		return pl_arena_strndup(a, (const char *)p, (size_t)len);
	}
	pl_error("pl_db_text: column %d: binary value of type %u not read", col,
	         (unsigned)type);
	return pl_arena_strdup(a, "");
}

// A binary timestamptz of r as Unix second *t and milliseconds *ms; false
// for another type, infinity or a malformed value.
static bool
ts_binary(const PGresult *r, int row, int col, int64_t *t, int *ms)
{
	int64_t us;
	int usec;

	if (PQftype(r, col) != TIMESTAMPTZOID || PQgetlength(r, row, col) != 8)
		return false;
	us = be_int((const unsigned char *)PQgetvalue(r, row, col), 8);
	if (us == INT64_MAX || us == INT64_MIN)
		return false;
	ts_split(us, t, &usec);
	*ms = usec / 1000;
	return true;
}

char *
pl_db_ts_at(pl_arena *a, const PGresult *r, int row, int col)
{
	char out[25];
	int64_t t;
	int ms;

	if (PQgetisnull(r, row, col))
		return pl_arena_strdup(a, "");
	if (PQfformat(r, col) == 0)
		return pl_db_ts(a, PQgetvalue(r, row, col));
	if (ts_binary(r, row, col, &t, &ms) && ts_put(t, ms, out))
		return pl_arena_strndup(a, out, 24);
	return pl_db_text(a, r, row, col);
}

char *
pl_db_ts_add(pl_arena *a, const PGresult *r, int row, int col, int64_t seconds)
{
	char out[25];
	int64_t t;
	int ms;

	if (PQgetisnull(r, row, col))
		return pl_arena_strdup(a, "");
	if (!(PQfformat(r, col) == 0
	              ? ts_parse(PQgetvalue(r, row, col), &t, &ms)
	              : ts_binary(r, row, col, &t, &ms)) ||
	    t > INT64_MAX - seconds || !ts_put(t + seconds, ms, out))
		return pl_arena_strdup(a, "");
	return pl_arena_strndup(a, out, 24);
}

int64_t
pl_db_int(const PGresult *r, int row, int col)
{
	int len = PQgetlength(r, row, col);

	if (PQgetisnull(r, row, col))
		return 0;
	if (PQfformat(r, col) == 0)
		return strtoll(PQgetvalue(r, row, col), NULL, 10);
	if (len == 2 || len == 4 || len == 8)
		return be_int((const unsigned char *)PQgetvalue(r, row, col),
		              len);
	return 0;
}

// A text[] value's elements from the binary form (array_send): ndim,
// has-nulls, element type, (length, lower bound) per dimension, then each
// element as a length (-1: NULL) and its bytes.
static bool
array_bin(pl_arena *a, const unsigned char *p, size_t len, char ***out,
          size_t *n)
{
	size_t off = 12, count;
	int64_t ndim;

	if (len < 12 || (ndim = be_int(p, 4)) < 0 || ndim > 1 ||
	    (be_int(p + 8, 4) != 25 && be_int(p + 8, 4) != 1043))
		return false;
	if (ndim == 0)
		return len == 12;
	if (len < 20 || (count = (size_t)be_int(p + 12, 4)) > len / 4)
		return false;
	off = 20;
	if ((*out = pl_arena_alloc(a, (count + 1) * sizeof(char *))) == NULL)
		return false;
	for (size_t i = 0; i < count; i++) {
		int64_t el;
		if (len - off < 4)
			return false;
		el = be_int(p + off, 4);
		off += 4;
		if (el < 0) // NULL: left out
			continue;
		if ((size_t)el > len - off)
			return false;
		(*out)[(*n)++] =
		        pl_arena_strndup(a, (const char *)p + off, (size_t)el);
		off += (size_t)el;
	}
	return off == len;
}

// The same from the text form: {a,"b c","d\\"e",NULL}, possibly after
// "[lo:hi]=" bounds.
static bool
array_text(pl_arena *a, const char *s, char ***out, size_t *n)
{
	size_t cap = 1;
	char *buf;

	if (*s == '[' && (s = strchr(s, '=')) != NULL)
		s++;
	if (s == NULL || *s++ != '{')
		return false;
	for (const char *q = s; *q; q++)
		cap += *q == ',';
	if ((*out = pl_arena_alloc(a, (cap + 1) * sizeof(char *))) == NULL ||
	    (buf = pl_arena_alloc(a, strlen(s) + 1)) == NULL)
		return false;
	if (*s == '}')
		return s[1] == '\0';
	for (;;) {
		char *e = buf;
		bool quoted = *s == '"';
		if (quoted) {
			for (s++; *s != '"'; s++) {
				if (*s == '\\')
					s++;
				if (*s == '\0')
					return false;
				*e++ = *s;
			}
			s++;
		} else {
			for (; *s != ',' && *s != '}' && *s != '\0'; s++)
				*e++ = *s;
		}
		*e++ = '\0';
		if (quoted || strcasecmp(buf, "NULL") != 0)
			(*out)[(*n)++] = buf;
		buf = e;
		if (*s == '}')
			return s[1] == '\0';
		if (*s++ != ',' || *n > cap)
			return false;
	}
}

int
pl_db_text_array(pl_arena *a, const PGresult *r, int row, int col, char ***out,
                 size_t *n)
{
	bool ok;

	*out = NULL;
	*n = 0;
	if (PQgetisnull(r, row, col))
		return 0;
	if (PQfformat(r, col) == 0)
		ok = array_text(a, PQgetvalue(r, row, col), out, n);
	else
		ok = array_bin(a,
		               (const unsigned char *)PQgetvalue(r, row, col),
		               (size_t)PQgetlength(r, row, col), out, n);
	if (!ok) {
		pl_error("pl_db_text_array: column %d is not a text[] value",
		         col);
		*out = NULL;
		*n = 0;
		return -1;
	}
	return 0;
}
