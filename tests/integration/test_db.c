// pl_db against a real PostgreSQL: parameters, SQLSTATE mapping,
// transactions and their retries, reconnection, row-level security.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <jansson.h>

#include "pgh.h"
#include "pl/arena.h"
#include "pl/db.h"
#include "pl/log.h"
#include "pl/rpc.h"

#define TENANT_A "0190a3c4-0000-7000-8000-00000000000a"
#define TENANT_B "0190a3c4-0000-7000-8000-00000000000b"

typedef struct fixture {
	pgh h;
	bool up;
	char url[PGH_URL_MAX];     // database "dbtest" as postgres
	char app_url[PGH_URL_MAX]; // the same as the non-superuser app_rls
	char *log;                 // captured log lines
	size_t loglen;
	FILE *logf;
} fixture;

static int
group_setup(void **state)
{
	static fixture f;
	*state = &f;
	int rc = pgh_start(&f.h);
	if (rc == -2)
		return -1;
	if (rc != 0)
		return 0; // tests skip
	if (pgh_create_db(&f.h, "dbtest", f.url, sizeof(f.url)) != 0)
		return -1;
	if (pgh_url(&f.h, "app_rls", "dbtest", f.app_url, sizeof(f.app_url)) !=
	    0)
		return -1;
	if (pgh_exec_url(
	            f.url,
	            "CREATE TABLE kv (k text PRIMARY KEY, v text);"
	            "CREATE TABLE parents (id int PRIMARY KEY);"
	            "CREATE TABLE children (id int PRIMARY KEY,"
	            "  parent_id int NOT NULL REFERENCES parents (id),"
	            "  qty int CHECK (qty > 0), u uuid);"
	            "CREATE TABLE counters (id int PRIMARY KEY, n int);"
	            "INSERT INTO counters VALUES (1, 0);"
	            // Row-level security as services use it.
	            "CREATE ROLE app_rls LOGIN;"
	            "CREATE TABLE notes (tenant_id uuid NOT NULL, body text);"
	            "ALTER TABLE notes ENABLE ROW LEVEL SECURITY;"
	            "ALTER TABLE notes FORCE ROW LEVEL SECURITY;"
	            "CREATE POLICY tenant_isolation ON notes USING (tenant_id "
	            "= current_setting('parley.tenant_id', true)::uuid);"
	            "ALTER TABLE notes OWNER TO app_rls;"
	            "INSERT INTO notes VALUES ('" TENANT_A
	            "', 'a1'), ('" TENANT_A "', 'a2'), ('" TENANT_B "', 'b1');"
	            // The variant that tolerates a reused session's ''.
	            "CREATE TABLE notes2 (tenant_id uuid NOT NULL, body text);"
	            "ALTER TABLE notes2 ENABLE ROW LEVEL SECURITY;"
	            "ALTER TABLE notes2 FORCE ROW LEVEL SECURITY;"
	            "CREATE POLICY tenant_isolation ON notes2 USING (tenant_id "
	            "= NULLIF(current_setting('parley.tenant_id', true), "
	            "'')::uuid);"
	            "ALTER TABLE notes2 OWNER TO app_rls;"
	            "INSERT INTO notes2 SELECT * FROM notes;") != 0)
		return -1;
	f.up = true;
	return 0;
}

static int
group_teardown(void **state)
{
	fixture *f = *state;
	pgh_stop(&f->h);
	return 0;
}

static int
setup(void **state)
{
	fixture *f = *state;
	f->log = NULL;
	f->loglen = 0;
	f->logf = open_memstream(&f->log, &f->loglen);
	if (f->logf == NULL)
		return -1;
	pl_log_init("test_db", PL_LOG_DEBUG);
	pl_log_set_stream(f->logf);
	return 0;
}

static int
teardown(void **state)
{
	fixture *f = *state;
	pl_log_set_stream(NULL);
	fclose(f->logf);
	free(f->log);
	f->log = NULL;
	return 0;
}

static fixture *
need_pg(void **state)
{
	fixture *f = *state;
	if (!f->up)
		skip();
	return f;
}

// The captured log so far.
static const char *
logged(fixture *f)
{
	fflush(f->logf);
	return f->log != NULL ? f->log : "";
}

static void
test_sqlstate_mapping(void **state)
{
	(void)state;
	static const struct {
		const char *st;
		int code;
	} cases[] = {
		{ "23505", PL_ALREADY_EXISTS },
		{ "23503", PL_FAILED_PRECONDITION },
		{ "23502", PL_INVALID_ARGUMENT },
		{ "23514", PL_INVALID_ARGUMENT },
		{ "22P02", PL_INVALID_ARGUMENT },
		{ "22001", PL_INVALID_ARGUMENT },
		{ "40001", PL_ABORTED },
		{ "40P01", PL_ABORTED },
		{ "57014", PL_DEADLINE_EXCEEDED },
		{ "08006", PL_UNAVAILABLE },
		{ "08001", PL_UNAVAILABLE },
		{ "57P01", PL_UNAVAILABLE },
		{ "57P03", PL_UNAVAILABLE },
		{ "42501", PL_PERMISSION_DENIED },
		{ "42601", PL_INTERNAL },
		{ "23P01", PL_INTERNAL },
		{ "XX000", PL_INTERNAL },
		{ "", PL_INTERNAL },
		{ "2350", PL_INTERNAL },
		{ "235055", PL_INTERNAL },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		assert_int_equal(pl_db_sqlstate_status(cases[i].st),
		                 cases[i].code);
	assert_int_equal(pl_db_sqlstate_status(NULL), PL_INTERNAL);
	assert_int_equal(pl_db_result_status(NULL), PL_UNAVAILABLE);
}

static void
test_exec_params_verbatim(void **state)
{
	fixture *f = need_pg(state);
	pl_db *db = pl_db_open(f->url);
	const char *evil[] = {
		"'; DROP TABLE kv; --",
		"$1 $$ $q$ \\x00 \\' \" ; /* */ --",
		"ünïcødé ✓",
		"",
	};
	for (size_t i = 0; i < sizeof(evil) / sizeof(evil[0]); i++) {
		char key[16];
		snprintf(key, sizeof(key), "k%zu", i);
		const char *p[2] = { key, evil[i] };
		assert_int_equal(
		        pl_db_command(db,
		                      "INSERT INTO kv (k, v) VALUES ($1, $2)",
		                      2, p),
		        PL_OK);
		PGresult *r = pl_db_exec(
		        db, "SELECT v, v IS NULL FROM kv WHERE k = $1", 1, p);
		assert_int_equal(pl_db_result_status(r), PL_OK);
		assert_int_equal(PQntuples(r), 1);
		assert_string_equal(PQgetvalue(r, 0, 0), evil[i]);
		assert_string_equal(PQgetvalue(r, 0, 1), "f");
		PQclear(r);
	}
	const char *p[2] = { "null", NULL };
	assert_int_equal(pl_db_command(db,
	                               "INSERT INTO kv (k, v) VALUES ($1, $2)",
	                               2, p),
	                 PL_OK);
	PGresult *r = pl_db_exec(db, "SELECT v FROM kv WHERE k = $1", 1, p);
	assert_int_equal(pl_db_result_status(r), PL_OK);
	assert_int_equal(PQntuples(r), 1);
	assert_true(PQgetisnull(r, 0, 0));
	PQclear(r);
	// The table survived its hostile values.
	r = pl_db_exec(db, "SELECT count(*) FROM kv", 0, NULL);
	assert_int_equal(pl_db_result_status(r), PL_OK);
	assert_string_equal(PQgetvalue(r, 0, 0), "5");
	PQclear(r);
	assert_true(pl_db_ping(db));
	assert_int_equal(pl_db_command(db, "DELETE FROM kv", 0, NULL), PL_OK);
	// Bad arguments are refused, not crashed on.
	assert_null(pl_db_exec(db, NULL, 0, NULL));
	assert_null(pl_db_exec(db, "SELECT $1", 1, NULL));
	pl_db_close(db);
	pl_db_close(NULL);
}

static void
test_status_from_real_errors(void **state)
{
	fixture *f = need_pg(state);
	pl_db *db = pl_db_open(f->url);
	assert_int_equal(
	        pl_db_command(db,
	                      "INSERT INTO parents VALUES (1) ON CONFLICT "
	                      "DO NOTHING",
	                      0, NULL),
	        PL_OK);
	const char *one[1] = { "1" };
	assert_int_equal(
	        pl_db_command(db, "INSERT INTO parents VALUES ($1)", 1, one),
	        PL_ALREADY_EXISTS);
	const char *fk[3] = { "10", "999", "1" };
	assert_int_equal(
	        pl_db_command(db,
	                      "INSERT INTO children (id, parent_id, qty) "
	                      "VALUES ($1, $2, $3)",
	                      3, fk),
	        PL_FAILED_PRECONDITION);
	const char *nn[2] = { "11", NULL };
	assert_int_equal(
	        pl_db_command(db,
	                      "INSERT INTO children (id, parent_id) VALUES "
	                      "($1, $2)",
	                      2, nn),
	        PL_INVALID_ARGUMENT);
	const char *ck[3] = { "12", "1", "-5" };
	assert_int_equal(
	        pl_db_command(db,
	                      "INSERT INTO children (id, parent_id, qty) "
	                      "VALUES ($1, $2, $3)",
	                      3, ck),
	        PL_INVALID_ARGUMENT);
	assert_int_equal(pl_db_command(db, "SELEKT 1", 0, NULL), PL_INTERNAL);
	assert_int_equal(
	        pl_db_command(db, "SET statement_timeout = 50", 0, NULL),
	        PL_OK);
	assert_int_equal(pl_db_command(db, "SELECT pg_sleep(2)", 0, NULL),
	                 PL_DEADLINE_EXCEEDED);
	assert_int_equal(pl_db_command(db, "RESET statement_timeout", 0, NULL),
	                 PL_OK);
	const char *bad[1] = { "not-a-uuid" };
	assert_int_equal(pl_db_command(db, "SELECT $1::uuid", 1, bad),
	                 PL_INVALID_ARGUMENT);
	assert_int_equal(pl_db_command(db, "SET ROLE app_rls", 0, NULL), PL_OK);
	assert_int_equal(pl_db_command(db, "SELECT * FROM kv", 0, NULL),
	                 PL_PERMISSION_DENIED);
	assert_int_equal(pl_db_command(db, "RESET ROLE", 0, NULL), PL_OK);
	pl_db_close(db);
}

static void
test_call_error(void **state)
{
	fixture *f = need_pg(state);
	pl_db *db = pl_db_open(f->url);
	pl_arena a;
	pl_arena_init(&a, 0, 0);
	pl_call call = { .arena = &a };

	const char *p[1] = { "dup" };
	assert_int_equal(
	        pl_db_command(db, "INSERT INTO kv (k) VALUES ($1)", 1, p),
	        PL_OK);
	PGresult *r = pl_db_exec(db, "INSERT INTO kv (k) VALUES ($1)", 1, p);
	assert_int_equal(pl_db_call_error(&call, r, "create channel"),
	                 PL_ALREADY_EXISTS);
	PQclear(r);
	assert_int_equal(call.code, PL_ALREADY_EXISTS);
	assert_string_equal(call.message, "could not create channel: already "
	                                  "exists");
	assert_non_null(strstr(logged(f), "23505"));
	assert_non_null(strstr(logged(f), "could not create channel"));

	// A secret given as a parameter never reaches the log, even when
	// PostgreSQL's message would quote it.
	const char *secret[2] = { "13", "sk_live_SECRET_VALUE" };
	r = pl_db_exec(
	        db,
	        "INSERT INTO children (id, parent_id, u) VALUES ($1, 1, $2)", 2,
	        secret);
	assert_int_equal(pl_db_call_error(&call, r, "store key"),
	                 PL_INVALID_ARGUMENT);
	PQclear(r);
	assert_string_equal(call.message, "could not store key: invalid value");
	assert_non_null(strstr(logged(f), "22P02"));
	assert_null(strstr(logged(f), "SECRET"));

	const char *fk[2] = { "14", "424242" };
	r = pl_db_exec(db,
	               "INSERT INTO children (id, parent_id) VALUES ($1, $2)",
	               2, fk);
	assert_int_equal(pl_db_call_error(&call, r, "add child"),
	                 PL_FAILED_PRECONDITION);
	PQclear(r);
	assert_null(strstr(logged(f), "424242")); // DETAIL quotes the key

	assert_int_equal(pl_db_call_error(&call, NULL, "list agents"),
	                 PL_UNAVAILABLE);
	assert_string_equal(call.message,
	                    "could not list agents: database unavailable");
	assert_int_equal(pl_db_call_error(NULL, NULL, "x"), PL_UNAVAILABLE);
	assert_int_equal(pl_db_command(db, "DELETE FROM kv", 0, NULL), PL_OK);
	pl_arena_fini(&a);
	pl_db_close(db);
}

typedef struct txarg {
	int calls;
	int fail_times; // return fail_code this many times first
	int fail_code;
	const char *key;
	bool saw_in_tx;
	char tenant[64];
} txarg;

static int
tx_insert(pl_db *db, void *arg)
{
	txarg *t = arg;
	t->calls++;
	t->saw_in_tx = pl_db_in_tx(db);
	PGresult *r = pl_db_exec(
	        db,
	        "SELECT coalesce(current_setting('parley.tenant_id', true), "
	        "'(null)')",
	        0, NULL);
	int rc = pl_db_result_status(r);
	if (rc == PL_OK)
		snprintf(t->tenant, sizeof(t->tenant), "%s",
		         PQgetvalue(r, 0, 0));
	PQclear(r);
	if (rc != PL_OK)
		return rc;
	const char *p[1] = { t->key };
	rc = pl_db_command(db, "INSERT INTO kv (k) VALUES ($1)", 1, p);
	if (rc != PL_OK)
		return rc;
	if (t->calls <= t->fail_times)
		return t->fail_code;
	return PL_OK;
}

static int
count_key(pl_db *db, const char *key)
{
	const char *p[1] = { key };
	PGresult *r =
	        pl_db_exec(db, "SELECT count(*) FROM kv WHERE k = $1", 1, p);
	assert_int_equal(pl_db_result_status(r), PL_OK);
	int n = atoi(PQgetvalue(r, 0, 0));
	PQclear(r);
	return n;
}

static void
test_tx_commit_and_rollback(void **state)
{
	fixture *f = need_pg(state);
	pl_db *db = pl_db_open(f->url);

	txarg t = { .key = "tx-commit" };
	assert_false(pl_db_in_tx(db));
	assert_int_equal(pl_db_tx(db, TENANT_A, tx_insert, &t), PL_OK);
	assert_false(pl_db_in_tx(db));
	assert_true(t.saw_in_tx);
	assert_int_equal(t.calls, 1);
	assert_string_equal(t.tenant, TENANT_A);
	assert_int_equal(count_key(db, "tx-commit"), 1);

	// The tenant setting is local to the transaction.
	t = (txarg){ .key = "tx-commit-2" };
	assert_int_equal(pl_db_tx(db, NULL, tx_insert, &t), PL_OK);
	assert_string_not_equal(t.tenant, TENANT_A);

	t = (txarg){ .key = "tx-rollback",
		     .fail_times = 99,
		     .fail_code = PL_NOT_FOUND };
	assert_int_equal(pl_db_tx(db, TENANT_A, tx_insert, &t), PL_NOT_FOUND);
	assert_int_equal(t.calls, 1);
	assert_int_equal(count_key(db, "tx-rollback"), 0);
	assert_false(pl_db_in_tx(db));

	// A statement failing inside fn rolls back; its status comes out.
	t = (txarg){ .key = "tx-commit" };
	assert_int_equal(pl_db_tx(db, NULL, tx_insert, &t), PL_ALREADY_EXISTS);
	assert_int_equal(t.calls, 1);
	assert_int_equal(pl_db_tx(db, NULL, NULL, NULL), PL_INVALID_ARGUMENT);
	assert_int_equal(pl_db_command(db, "DELETE FROM kv", 0, NULL), PL_OK);
	pl_db_close(db);
}

static int
tx_ignore_error(pl_db *db, void *arg)
{
	(void)arg;
	PQclear(pl_db_exec(db, "INSERT INTO kv (k) VALUES ('ignored')", 0,
	                   NULL));
	PQclear(pl_db_exec(db, "SELEKT", 0, NULL));
	return PL_OK;
}

static int
tx_nested(pl_db *db, void *arg)
{
	int *rc = arg;
	txarg t = { .key = "nested" };
	*rc = pl_db_tx(db, NULL, tx_insert, &t);
	return PL_OK;
}

static void
test_tx_misuse(void **state)
{
	fixture *f = need_pg(state);
	pl_db *db = pl_db_open(f->url);
	// fn returning OK after a failed statement cannot commit.
	assert_int_equal(pl_db_tx(db, NULL, tx_ignore_error, NULL),
	                 PL_INTERNAL);
	assert_int_equal(count_key(db, "ignored"), 0);
	int inner = -1;
	assert_int_equal(pl_db_tx(db, NULL, tx_nested, &inner), PL_OK);
	assert_int_equal(inner, PL_FAILED_PRECONDITION);
	assert_int_equal(count_key(db, "nested"), 0);
	pl_db_close(db);
}

static void
test_tx_retries_aborted(void **state)
{
	fixture *f = need_pg(state);
	pl_db *db = pl_db_open(f->url);
	txarg t = { .key = "retry-once",
		    .fail_times = 1,
		    .fail_code = PL_ABORTED };
	assert_int_equal(pl_db_tx(db, TENANT_B, tx_insert, &t), PL_OK);
	assert_int_equal(t.calls, 2);
	assert_int_equal(count_key(db, "retry-once"), 1);

	t = (txarg){ .key = "retry-always",
		     .fail_times = 99,
		     .fail_code = PL_ABORTED };
	assert_int_equal(pl_db_tx(db, TENANT_B, tx_insert, &t), PL_ABORTED);
	assert_int_equal(t.calls, 3);
	assert_int_equal(count_key(db, "retry-always"), 0);
	assert_int_equal(pl_db_command(db, "DELETE FROM kv", 0, NULL), PL_OK);
	pl_db_close(db);
}

typedef struct serarg {
	PGconn *other;
	int calls;
} serarg;

// Reads the counter under REPEATABLE READ; on the first attempt another
// session updates it before this one does, which PostgreSQL refuses with
// 40001.
static int
tx_increment(pl_db *db, void *arg)
{
	serarg *s = arg;
	s->calls++;
	int rc = pl_db_command(
	        db, "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ", 0, NULL);
	if (rc != PL_OK)
		return rc;
	PGresult *r =
	        pl_db_exec(db, "SELECT n FROM counters WHERE id = 1", 0, NULL);
	rc = pl_db_result_status(r);
	PQclear(r);
	if (rc != PL_OK)
		return rc;
	if (s->calls == 1) {
		PGresult *o =
		        PQexec(s->other,
		               "UPDATE counters SET n = n + 100 WHERE id = 1");
		assert_int_equal(PQresultStatus(o), PGRES_COMMAND_OK);
		PQclear(o);
	}
	r = pl_db_exec(db, "UPDATE counters SET n = n + 1 WHERE id = 1", 0,
	               NULL);
	rc = pl_db_result_status(r);
	if (s->calls == 1) {
		const char *st = PQresultErrorField(r, PG_DIAG_SQLSTATE);
		assert_non_null(st);
		assert_string_equal(st, "40001");
	}
	PQclear(r);
	return rc;
}

static void
test_tx_real_serialization_failure(void **state)
{
	fixture *f = need_pg(state);
	pl_db *db = pl_db_open(f->url);
	serarg s = { .other = PQconnectdb(f->url) };
	assert_int_equal(PQstatus(s.other), CONNECTION_OK);
	assert_int_equal(pl_db_command(db,
	                               "UPDATE counters SET n = 0 WHERE id = 1",
	                               0, NULL),
	                 PL_OK);
	assert_int_equal(pl_db_tx(db, NULL, tx_increment, &s), PL_OK);
	assert_int_equal(s.calls, 2);
	PGresult *r =
	        pl_db_exec(db, "SELECT n FROM counters WHERE id = 1", 0, NULL);
	assert_int_equal(pl_db_result_status(r), PL_OK);
	assert_string_equal(PQgetvalue(r, 0, 0), "101");
	PQclear(r);
	PQfinish(s.other);
	pl_db_close(db);
}

static void
test_reconnect_after_restart(void **state)
{
	fixture *f = need_pg(state);
	pl_db *db = pl_db_open(f->url);
	assert_true(pl_db_ping(db));
	PGconn *before = pl_db_conn(db);
	assert_non_null(before);
	assert_int_equal(pgh_restart(&f->h), 0);
	// The same handle carries on: the first statement finds the
	// connection gone, reconnects and is retried.
	PGresult *r = pl_db_exec(db, "SELECT 41 + 1", 0, NULL);
	assert_int_equal(pl_db_result_status(r), PL_OK);
	assert_string_equal(PQgetvalue(r, 0, 0), "42");
	PQclear(r);
	assert_non_null(strstr(logged(f), "connection lost"));

	assert_int_equal(pgh_restart(&f->h), 0);
	txarg t = { .key = "after-restart" };
	assert_int_equal(pl_db_tx(db, TENANT_A, tx_insert, &t), PL_OK);
	assert_int_equal(count_key(db, "after-restart"), 1);

	assert_int_equal(pgh_restart(&f->h), 0);
	assert_true(pl_db_ping(db));
	assert_int_equal(pl_db_command(db, "DELETE FROM kv", 0, NULL), PL_OK);
	pl_db_close(db);
}

static int
tx_killed_once(pl_db *db, void *arg)
{
	txarg *t = arg;
	if (t->calls == 0) {
		t->calls++;
		const char *p[1] = { t->key };
		int rc = pl_db_command(db, "INSERT INTO kv (k) VALUES ($1)", 1,
		                       p);
		if (rc != PL_OK)
			return rc;
		// The server ends this session mid-transaction.
		PGresult *r = pl_db_exec(
		        db, "SELECT pg_terminate_backend(pg_backend_pid())", 0,
		        NULL);
		rc = pl_db_result_status(r);
		PQclear(r);
		if (rc == PL_OK)
			return PL_INTERNAL; // the session should be gone
		// Inside the transaction nothing reconnects behind our back.
		if (pl_db_conn(db) != NULL)
			return PL_INTERNAL;
		return rc;
	}
	return tx_insert(db, arg);
}

static void
test_tx_connection_lost_retried_once(void **state)
{
	fixture *f = need_pg(state);
	pl_db *db = pl_db_open(f->url);
	txarg t = { .key = "lost-once" };
	assert_int_equal(pl_db_tx(db, TENANT_A, tx_killed_once, &t), PL_OK);
	assert_int_equal(t.calls, 2);
	assert_int_equal(count_key(db, "lost-once"), 1);
	assert_int_equal(pl_db_command(db, "DELETE FROM kv", 0, NULL), PL_OK);
	pl_db_close(db);
}

// pl_db_tx sends BEGIN and the tenant setting with the transaction's first
// statement (one round trip): every statement of fn is in one transaction,
// the first one included; fn using the connection itself finds the
// transaction begun; fn sending nothing commits nothing; a first statement
// that fails rolls back; a session ended between transactions is noticed
// at the first statement and the transaction retried on a new one.
typedef struct first_arg {
	int calls;
	int mode; // 0: two statements, 1: PQexec first, 2: none, 3: bad SQL
	char xid[2][32];
	char tenant[64];
	PGTransactionStatusType st;
} first_arg;

static int
tx_first(pl_db *db, void *arg)
{
	first_arg *t = arg;
	PGresult *r;
	int rc;

	t->calls++;
	if (t->mode == 2)
		return PL_OK;
	if (t->mode == 3) {
		r = pl_db_exec(db, "SELEKT 1", 0, NULL);
		rc = pl_db_result_status(r);
		PQclear(r);
		return rc;
	}
	if (t->mode == 1) {
		PGconn *c = pl_db_conn(db);
		if (c == NULL)
			return PL_UNAVAILABLE;
		t->st = PQtransactionStatus(c);
		r = PQexec(c,
		           "SELECT current_setting('parley.tenant_id', true)");
		rc = pl_db_result_status(r);
		if (rc == PL_OK)
			snprintf(t->tenant, sizeof(t->tenant), "%s",
			         PQgetvalue(r, 0, 0));
		PQclear(r);
		return rc;
	}
	for (int i = 0; i < 2; i++) {
		r = pl_db_exec(db,
		               "SELECT txid_current()::text, "
		               "current_setting('parley.tenant_id', true)",
		               0, NULL);
		if ((rc = pl_db_result_status(r)) != PL_OK) {
			PQclear(r);
			return rc;
		}
		snprintf(t->xid[i], sizeof(t->xid[i]), "%s",
		         PQgetvalue(r, 0, 0));
		if (i == 0)
			snprintf(t->tenant, sizeof(t->tenant), "%s",
			         PQgetvalue(r, 0, 1));
		PQclear(r);
	}
	return PL_OK;
}

static void
test_tx_begins_with_first_statement(void **state)
{
	fixture *f = need_pg(state);
	pl_db *db = pl_db_open(f->url);
	first_arg t = { 0 };

	assert_int_equal(pl_db_tx(db, TENANT_A, tx_first, &t), PL_OK);
	assert_string_equal(t.tenant, TENANT_A);
	assert_string_equal(t.xid[0], t.xid[1]);
	assert_true(t.xid[0][0] != '\0');

	t = (first_arg){ .mode = 1 };
	assert_int_equal(pl_db_tx(db, TENANT_B, tx_first, &t), PL_OK);
	assert_int_equal(t.st, PQTRANS_INTRANS);
	assert_string_equal(t.tenant, TENANT_B);

	t = (first_arg){ .mode = 2 };
	assert_int_equal(pl_db_tx(db, TENANT_A, tx_first, &t), PL_OK);
	assert_int_equal(t.calls, 1);
	assert_false(pl_db_in_tx(db));
	assert_int_equal(PQtransactionStatus(pl_db_conn(db)), PQTRANS_IDLE);

	t = (first_arg){ .mode = 3 };
	assert_int_equal(pl_db_tx(db, TENANT_A, tx_first, &t), PL_INTERNAL);
	assert_int_equal(PQtransactionStatus(pl_db_conn(db)), PQTRANS_IDLE);

	// Ended from another session between two transactions.
	PGresult *r = pl_db_exec(db, "SELECT pg_backend_pid()::text", 0, NULL);
	assert_int_equal(pl_db_result_status(r), PL_OK);
	const char *p[1] = { PQgetvalue(r, 0, 0) };
	pl_db *other = pl_db_open(f->url);
	PGresult *k =
	        pl_db_exec(other, "SELECT pg_terminate_backend($1::int)", 1, p);
	assert_int_equal(pl_db_result_status(k), PL_OK);
	PQclear(k);
	PQclear(r);
	pl_db_close(other);
	t = (first_arg){ 0 };
	assert_int_equal(pl_db_tx(db, TENANT_A, tx_first, &t), PL_OK);
	assert_int_equal(t.calls, 2);
	assert_string_equal(t.tenant, TENANT_A);
	assert_string_equal(t.xid[0], t.xid[1]);
	pl_db_close(db);
}

static void
test_unreachable(void **state)
{
	(void)state;
	// A port nothing listens on (the discard port, refused at once).
	pl_db *db = pl_db_open(
	        "postgresql://postgres@127.0.0.1:9/postgres?connect_timeout=2");
	assert_non_null(db);
	assert_null(pl_db_conn(db));
	assert_false(pl_db_ping(db));
	assert_null(pl_db_exec(db, "SELECT 1", 0, NULL));
	assert_int_equal(pl_db_command(db, "SELECT 1", 0, NULL),
	                 PL_UNAVAILABLE);
	txarg t = { .key = "never" };
	assert_int_equal(pl_db_tx(db, NULL, tx_insert, &t), PL_UNAVAILABLE);
	assert_int_equal(t.calls, 0);
	pl_db_close(db);
}

typedef struct rlsarg {
	const char *table;
	int rows;
	int other_tenant_rows;
	const char *tenant;
	int status;
} rlsarg;

static int
tx_read_notes(pl_db *db, void *arg)
{
	rlsarg *a = arg;
	char sql[128];
	// No tenant filter: the policy alone decides what is visible.
	snprintf(sql, sizeof(sql), "SELECT tenant_id FROM %s", a->table);
	PGresult *r = pl_db_exec(db, sql, 0, NULL);
	a->status = pl_db_result_status(r);
	if (a->status == PL_OK) {
		a->rows = PQntuples(r);
		a->other_tenant_rows = 0;
		for (int i = 0; i < a->rows; i++)
			if (a->tenant == NULL ||
			    strcmp(PQgetvalue(r, i, 0), a->tenant) != 0)
				a->other_tenant_rows++;
	}
	PQclear(r);
	return a->status;
}

static int
tx_read_inside(pl_db *db, void *arg)
{
	(void)arg;
	assert_null(pl_db_read(db, TENANT_A, "SELECT 1", 0, NULL));
	return PL_OK;
}

static void
test_row_level_security(void **state)
{
	fixture *f = need_pg(state);
	pl_db *db = pl_db_open(f->app_url);
	PGresult *r = pl_db_exec(
	        db,
	        "SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = "
	        "current_user",
	        0, NULL);
	assert_int_equal(pl_db_result_status(r), PL_OK);
	assert_string_equal(PQgetvalue(r, 0, 0), "f");
	PQclear(r);

	// A fresh session with no tenant sees nothing.
	rlsarg a = { .table = "notes" };
	assert_int_equal(pl_db_tx(db, NULL, tx_read_notes, &a), PL_OK);
	assert_int_equal(a.rows, 0);
	r = pl_db_exec(db, "SELECT count(*) FROM notes", 0, NULL);
	assert_int_equal(pl_db_result_status(r), PL_OK);
	assert_string_equal(PQgetvalue(r, 0, 0), "0");
	PQclear(r);

	a = (rlsarg){ .table = "notes", .tenant = TENANT_A };
	assert_int_equal(pl_db_tx(db, TENANT_A, tx_read_notes, &a), PL_OK);
	assert_int_equal(a.rows, 2);
	assert_int_equal(a.other_tenant_rows, 0);
	a = (rlsarg){ .table = "notes", .tenant = TENANT_B };
	assert_int_equal(pl_db_tx(db, TENANT_B, tx_read_notes, &a), PL_OK);
	assert_int_equal(a.rows, 1);
	assert_int_equal(a.other_tenant_rows, 0);

	// Once a session has had a tenant, the setting reads '' outside
	// transactions: a plain ::uuid cast fails (closed, nothing leaks);
	// NULLIF(..., '')::uuid sees no rows.
	a = (rlsarg){ .table = "notes" };
	assert_int_equal(pl_db_tx(db, NULL, tx_read_notes, &a),
	                 PL_INVALID_ARGUMENT);
	a = (rlsarg){ .table = "notes2", .rows = -1 };
	assert_int_equal(pl_db_tx(db, NULL, tx_read_notes, &a), PL_OK);
	assert_int_equal(a.rows, 0);
	a = (rlsarg){ .table = "notes2", .tenant = TENANT_A };
	assert_int_equal(pl_db_tx(db, TENANT_A, tx_read_notes, &a), PL_OK);
	assert_int_equal(a.rows, 2);
	assert_int_equal(a.other_tenant_rows, 0);
	pl_db_close(db);
}

// A role whose defaults are neither ISO nor UTC: pl_db's sessions output
// ISO (keeping the role's day/month order) and keep its time zone, and
// pl_db_ts gives what to_char gave in every zone, local mean time and
// daylight saving included.
static void
test_timestamps(void **state)
{
	static const char *const zones[] = {
		"America/St_Johns", "UTC",
		"Asia/Kathmandu",   "Pacific/Kiritimati",
		"Europe/Amsterdam", "America/New_York",
	};
	fixture *f = need_pg(state);
	char url[PGH_URL_MAX];
	pl_db *db;
	pl_arena a;
	PGresult *r;

	assert_int_equal(pgh_exec_url(f->url,
	                              "CREATE ROLE app_ts LOGIN;"
	                              "ALTER ROLE app_ts SET DateStyle = "
	                              "'SQL, DMY';"
	                              "ALTER ROLE app_ts SET TimeZone = "
	                              "'America/St_Johns'"),
	                 0);
	assert_int_equal(pgh_url(&f->h, "app_ts", "dbtest", url, sizeof(url)),
	                 0);
	db = pl_db_open(url);
	pl_arena_init(&a, 0, 0);
	r = pl_db_exec(db, "SHOW DateStyle", 0, NULL);
	assert_int_equal(pl_db_result_status(r), PL_OK);
	assert_string_equal(PQgetvalue(r, 0, 0), "ISO, DMY");
	PQclear(r);
	r = pl_db_exec(db, "SHOW TimeZone", 0, NULL);
	assert_int_equal(pl_db_result_status(r), PL_OK);
	assert_string_equal(PQgetvalue(r, 0, 0), "America/St_Johns");
	PQclear(r);
	for (size_t z = 0; z < sizeof(zones) / sizeof(zones[0]); z++) {
		const char *p[1] = { zones[z] };
		int n;

		r = pl_db_exec(db, "SELECT set_config('TimeZone', $1, false)",
		               1, p);
		assert_int_equal(pl_db_result_status(r), PL_OK);
		PQclear(r);
		r = pl_db_exec(
		        db,
		        "SELECT t, to_char(t AT TIME ZONE 'UTC', "
		        "'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') FROM "
		        "generate_series(timestamptz '1850-01-01 "
		        "00:00:00.000001+00', timestamptz '2100-01-01+00', "
		        "interval '3 days 7 hours 13 minutes 17.123457 "
		        "seconds') t UNION ALL SELECT NULL, NULL",
		        0, NULL);
		assert_int_equal(pl_db_result_status(r), PL_OK);
		n = PQntuples(r);
		assert_true(n > 20000);
		for (int i = 0; i < n; i++) {
			const char *got = pl_db_ts(&a, PQgetvalue(r, i, 0));
			if (strcmp(got, PQgetvalue(r, i, 1)) != 0)
				fail_msg("%s: \"%s\" gives \"%s\", want \"%s\"",
				         zones[z], PQgetvalue(r, i, 0), got,
				         PQgetvalue(r, i, 1));
		}
		PQclear(r);
		pl_arena_reset(&a);
	}
	pl_arena_fini(&a);
	pl_db_close(db);
}

// The tenant setting holds "*", a uuid or "": a malformed tenant id
// becomes "" (no tenant: the policies show nothing), so that the
// policies' bare cast never meets one.
static int
setting_fn(pl_db *db, void *arg)
{
	PGresult *r = pl_db_exec(
	        db, "SELECT current_setting('parley.tenant_id', true)", 0,
	        NULL);
	int rv = pl_db_result_status(r);

	if (rv == PL_OK)
		snprintf(arg, 64, "%s", PQgetvalue(r, 0, 0));
	PQclear(r);
	return rv;
}

static void
test_tenant_setting_checked(void **state)
{
	static const char *const cases[][2] = {
		{ TENANT_A, TENANT_A },
		{ "*", "*" },
		{ "zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz", "" },
		{ "not a tenant", "" },
		{ "", "" },
	};
	fixture *f = need_pg(state);
	pl_db *db = pl_db_open(f->app_url);

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char got[64] = "?";
		PGresult *r = pl_db_read(
		        db, cases[i][0],
		        "SELECT current_setting('parley.tenant_id', true)", 0,
		        NULL);
		assert_int_equal(pl_db_result_status(r), PL_OK);
		assert_string_equal(PQgetvalue(r, 0, 0), cases[i][1]);
		PQclear(r);
		if (cases[i][1][0] == '\0') {
			r = pl_db_read(db, cases[i][0],
			               "SELECT count(*) FROM notes2", 0, NULL);
			assert_int_equal(pl_db_result_status(r), PL_OK);
			assert_string_equal(PQgetvalue(r, 0, 0), "0");
			PQclear(r);
		}
		assert_int_equal(pl_db_tx(db, cases[i][0], setting_fn, got),
		                 PL_OK);
		assert_string_equal(got, cases[i][1]);
	}
	pl_db_close(db);
}

// pl_db_read_binary: the same values read from its binary results by
// pl_db_text, pl_db_ts_at and pl_db_int as from pl_db_read's text ones
// (the session in UTC, where PostgreSQL's text is what pl_db_text gives).
static void
test_read_binary(void **state)
{
	fixture *f = need_pg(state);
	pl_db *db = pl_db_open(f->url);
	const char *q =
	        "SELECT t, to_char(t AT TIME ZONE 'UTC', "
	        "'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), md5(t::text)::uuid, "
	        "(extract(epoch FROM t) * 1000)::bigint, "
	        "(extract(epoch FROM t) / 1000)::int, "
	        "(extract(day FROM t) * -100)::smallint, "
	        "extract(hour FROM t) > 11, 'tx ' || t::text, "
	        "to_char((t + interval '24 hours') AT TIME ZONE 'UTC', "
	        "'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') "
	        "FROM generate_series(timestamptz '1850-01-01 "
	        "00:00:00.000001+00', timestamptz '2100-01-01+00', "
	        "interval '3 days 7 hours 13 minutes 17.123457 seconds') t "
	        "UNION ALL SELECT timestamptz '2026-11-24 08:01:20.5+00', '', "
	        "'00000000-0000-0000-0000-000000000000', "
	        "-9223372036854775808, -2147483648, -32768, false, '', "
	        "'2026-11-25T08:01:20.500Z' "
	        "UNION ALL SELECT 'infinity', '', NULL, 9223372036854775807, "
	        "2147483647, 32767, NULL, NULL, '' "
	        "UNION ALL SELECT NULL, '', NULL, NULL, NULL, NULL, NULL, "
	        "NULL, "
	        "''";
	PGresult *rt, *rb;
	pl_arena a;
	int n;

	pl_arena_init(&a, 0, 0);
	PQclear(pl_db_exec(db, "SET TimeZone = 'UTC'", 0, NULL));
	rt = pl_db_read(db, NULL, q, 0, NULL);
	rb = pl_db_read_binary(db, NULL, q, 0, NULL);
	assert_int_equal(pl_db_result_status(rt), PL_OK);
	assert_int_equal(pl_db_result_status(rb), PL_OK);
	n = PQntuples(rt);
	assert_true(n > 20000);
	assert_int_equal(PQntuples(rb), n);
	assert_int_equal(PQfformat(rb, 0), 1);
	for (int i = 0; i < n; i++) {
		for (int c = 0; c < PQnfields(rt); c++) {
			const char *want = PQgetvalue(rt, i, c),
			           *got = pl_db_text(&a, rb, i, c);
			if (strcmp(got, want) != 0)
				fail_msg("row %d col %d: \"%s\", want \"%s\"",
				         i, c, got, want);
		}
		// The API's form, as to_char gives it (and as pl_db_ts gives
		// it from the text) where the row has it.
		const char *ts = pl_db_ts_at(&a, rb, i, 0);
		if (PQgetvalue(rt, i, 1)[0] != '\0' &&
		    strcmp(ts, PQgetvalue(rt, i, 1)) != 0)
			fail_msg("row %d: \"%s\", want \"%s\"", i, ts,
			         PQgetvalue(rt, i, 1));
		assert_string_equal(ts, pl_db_ts_at(&a, rt, i, 0));
		// pl_db_ts_add: the value + 24 h as PostgreSQL computes it.
		assert_string_equal(pl_db_ts_add(&a, rb, i, 0, 86400),
		                    PQgetvalue(rt, i, 8));
		assert_string_equal(pl_db_ts_add(&a, rt, i, 0, 86400),
		                    PQgetvalue(rt, i, 8));
		for (int c = 3; c <= 5; c++)
			assert_true(pl_db_int(rb, i, c) ==
			            strtoll(PQgetvalue(rt, i, c), NULL, 10));
		pl_arena_reset(&a);
	}
	assert_string_equal(pl_db_ts_at(&a, rb, n - 3, 0),
	                    "2026-11-24T08:01:20.500Z");
	assert_string_equal(pl_db_ts_at(&a, rb, n - 2, 0), "infinity");
	assert_string_equal(pl_db_ts_at(&a, rb, n - 1, 0), "");
	PQclear(rt);
	PQclear(rb);
	pl_arena_fini(&a);
	pl_db_close(db);
}

// pl_db_text_array: the elements of text[] values, from text and binary
// results alike, as array_to_json lists them (NULL elements left out).
static void
test_text_array(void **state)
{
	fixture *f = need_pg(state);
	pl_db *db = pl_db_open(f->url);
	const char *q =
	        "SELECT x, array_to_json(array_remove(x, NULL))::text FROM "
	        "(VALUES ('{}'::text[]), ('{a}'), ('{NULL}'), ('{\"NULL\"}'), "
	        "(ARRAY['b c', 'd\"e', 'f\\g', '', ',', '{x}', 'caf\u00e9', "
	        "' lead', NULL, 'null']), ('[0:1]={p,q}'), (NULL), "
	        "(ARRAY['x']::varchar[]::text[])) v(x)";
	PGresult *r[2];
	pl_arena a;

	pl_arena_init(&a, 0, 0);
	r[0] = pl_db_read(db, NULL, q, 0, NULL);
	r[1] = pl_db_read_binary(db, NULL, q, 0, NULL);
	for (int k = 0; k < 2; k++) {
		assert_int_equal(pl_db_result_status(r[k]), PL_OK);
		assert_int_equal(PQntuples(r[k]), 8);
		for (int i = 0; i < 8; i++) {
			json_t *want = json_loads(PQgetvalue(r[0], i, 1),
			                          JSON_DECODE_ANY, NULL);
			char **got;
			size_t n;
			assert_int_equal(
			        pl_db_text_array(&a, r[k], i, 0, &got, &n), 0);
			assert_int_equal(n, want ? json_array_size(want) : 0);
			for (size_t j = 0; j < n; j++)
				assert_string_equal(
				        got[j],
				        json_string_value(
				                json_array_get(want, j)));
			json_decref(want);
		}
	}
	// Not a text[]: refused, nothing given.
	{
		char **got;
		size_t n = 5;
		PGresult *b = pl_db_read_binary(db, NULL, "SELECT '{1}'::int[]",
		                                0, NULL);
		assert_int_equal(pl_db_text_array(&a, b, 0, 0, &got, &n), -1);
		assert_null(got);
		assert_int_equal(n, 0);
		PQclear(b);
	}
	PQclear(r[0]);
	PQclear(r[1]);
	pl_arena_fini(&a);
	pl_db_close(db);
}

// The planner's row count of table (pg_class.reltuples; -1: never
// analyzed).
static double
reltuples(pl_db *db, const char *table)
{
	const char *p[1] = { table };
	PGresult *r = pl_db_exec(
	        db, "SELECT reltuples FROM pg_class WHERE oid = $1::regclass",
	        1, p);
	double n;

	assert_int_equal(pl_db_result_status(r), PL_OK);
	n = atof(PQgetvalue(r, 0, 0));
	PQclear(r);
	return n;
}

// Waits up to 20 s for table's planner count to reach at least min.
static double
reltuples_at_least(pl_db *db, const char *table, double min)
{
	double n = reltuples(db, table);

	for (int i = 0; i < 200 && n < min; i++) {
		struct timespec ts = { 0, 100 * 1000000L };
		nanosleep(&ts, NULL);
		n = reltuples(db, table);
	}
	return n;
}

// The statistics keeper analyzes a table that fills faster than
// autovacuum looks, and leaves one the planner already counts at 10,000
// rows or more to autovacuum (off for these tables, so only the keeper
// can move their counts).
static void
test_analyzer(void **state)
{
	fixture *f = need_pg(state);
	pl_db_analyzer *k;
	pl_db *db = pl_db_open(f->url);

	assert_non_null(db);
	assert_int_equal(pgh_exec_url(f->url,
	                              "CREATE SCHEMA keeper;"
	                              "CREATE TABLE keeper.small (id int) WITH "
	                              "(autovacuum_enabled = false);"
	                              "CREATE TABLE keeper.big (id int) WITH "
	                              "(autovacuum_enabled = false);"),
	                 0);
	k = pl_db_analyzer_start(f->url, "keeper", 100);
	assert_non_null(k);
	assert_int_equal(pgh_exec_url(f->url, "INSERT INTO keeper.small SELECT "
	                                      "generate_series(1, 500);"
	                                      "INSERT INTO keeper.big SELECT "
	                                      "generate_series(1, 20000);"),
	                 0);
	assert_true(reltuples_at_least(db, "keeper.small", 500) == 500);
	assert_true(reltuples_at_least(db, "keeper.big", 20000) == 20000);
	// Both drift by more than half now; only the small one is analyzed.
	// The keeper takes the larger table first in a round, so once the
	// small one's count moved, a round has passed over the big one.
	assert_int_equal(pgh_exec_url(f->url, "INSERT INTO keeper.big SELECT "
	                                      "generate_series(1, 40000);"
	                                      "INSERT INTO keeper.small SELECT "
	                                      "generate_series(1, 1000);"),
	                 0);
	assert_true(reltuples_at_least(db, "keeper.small", 1500) == 1500);
	// With a statistics target of 10: 11 histogram bounds for the 1,000
	// distinct values of its 1,500 rows, where the default target (100)
	// makes up to 101.
	{
		PGresult *r = pl_db_exec(
		        db,
		        "SELECT cardinality(histogram_bounds::text::int[]) "
		        "FROM pg_stats WHERE schemaname = 'keeper' AND "
		        "tablename = 'small' AND attname = 'id'",
		        0, NULL);
		assert_int_equal(pl_db_result_status(r), PL_OK);
		assert_int_equal(PQntuples(r), 1);
		assert_string_equal(PQgetvalue(r, 0, 0), "11");
		PQclear(r);
	}
	{
		struct timespec ts = { 0, 300 * 1000000L };
		nanosleep(&ts, NULL);
	}
	assert_true(reltuples(db, "keeper.big") == 20000);
	pl_db_analyzer_stop(k);
	pl_db_close(db);
}

// pl_db_array: quotes, backslashes, commas, braces and NULL round-trip
// through PostgreSQL's array input.
static void
test_array_literal(void **state)
{
	fixture *f = need_pg(state);
	pl_db *db = pl_db_open(f->app_url);
	const char *items[] = { "a\"b\\c", "x,y {z}", NULL, "" };
	pl_arena a;
	const char *p[1];
	PGresult *r;

	pl_arena_init(&a, 0, 0);
	p[0] = pl_db_array(&a, items, 4);
	assert_non_null(p[0]);
	r = pl_db_exec(db,
	               "SELECT array_length($1::text[], 1), ($1::text[])[1], "
	               "($1::text[])[2], ($1::text[])[3] IS NULL, "
	               "($1::text[])[4]",
	               1, p);
	assert_int_equal(pl_db_result_status(r), PL_OK);
	assert_string_equal(PQgetvalue(r, 0, 0), "4");
	assert_string_equal(PQgetvalue(r, 0, 1), "a\"b\\c");
	assert_string_equal(PQgetvalue(r, 0, 2), "x,y {z}");
	assert_string_equal(PQgetvalue(r, 0, 3), "t");
	assert_string_equal(PQgetvalue(r, 0, 4), "");
	PQclear(r);
	p[0] = pl_db_array(&a, items, 0);
	r = pl_db_exec(db, "SELECT cardinality($1::text[])", 1, p);
	assert_int_equal(pl_db_result_status(r), PL_OK);
	assert_string_equal(PQgetvalue(r, 0, 0), "0");
	PQclear(r);
	pl_arena_fini(&a);
	pl_db_close(db);
}

// pl_db_read: the tenant setting and the statement in one round trip,
// the setting local to it, the statement prepared once per connection and
// again on a new connection, errors reported without poisoning the cache.
static void
test_read_pipelined(void **state)
{
	fixture *f = need_pg(state);
	pl_db *db = pl_db_open(f->app_url);
	const char *q = "SELECT count(*), current_setting('plan_cache_mode') "
	                "FROM notes2 WHERE $1::int > 0";
	const char *one[1] = { "1" };
	PGresult *r;

	for (int i = 0; i < 3; i++) {
		r = pl_db_read(db, TENANT_A, q, 1, one);
		assert_int_equal(pl_db_result_status(r), PL_OK);
		assert_string_equal(PQgetvalue(r, 0, 0), "2");
		assert_string_equal(PQgetvalue(r, 0, 1), "force_generic_plan");
		PQclear(r);
		r = pl_db_read(db, TENANT_B, q, 1, one);
		assert_int_equal(pl_db_result_status(r), PL_OK);
		assert_string_equal(PQgetvalue(r, 0, 0), "1");
		PQclear(r);
	}
	// The settings ended with the statement.
	r = pl_db_exec(db,
	               "SELECT coalesce(current_setting('parley.tenant_id', "
	               "true), ''), current_setting('plan_cache_mode'), "
	               "(SELECT count(*) FROM pg_prepared_statements)",
	               0, NULL);
	assert_int_equal(pl_db_result_status(r), PL_OK);
	assert_string_equal(PQgetvalue(r, 0, 0), "");
	assert_string_equal(PQgetvalue(r, 0, 1), "auto");
	// Prepared once: the statement and the settings.
	assert_string_equal(PQgetvalue(r, 0, 2), "2");
	PQclear(r);
	// No tenant: nothing visible.
	r = pl_db_read(db, NULL, q, 1, one);
	assert_int_equal(pl_db_result_status(r), PL_OK);
	assert_string_equal(PQgetvalue(r, 0, 0), "0");
	PQclear(r);
	// A statement that does not parse, and one that fails running: their
	// errors; the connection and the cache go on.
	r = pl_db_read(db, TENANT_A, "SELEKT 1", 0, NULL);
	assert_int_equal(pl_db_result_status(r), PL_INTERNAL);
	PQclear(r);
	r = pl_db_read(db, TENANT_A, "SELECT 1 / $1::int", 1,
	               (const char *[]){ "0" });
	assert_int_not_equal(pl_db_result_status(r), PL_OK);
	PQclear(r);
	r = pl_db_read(db, TENANT_A, "SELECT $1::uuid", 1,
	               (const char *[]){ "not-a-uuid" });
	assert_int_equal(pl_db_result_status(r), PL_INVALID_ARGUMENT);
	PQclear(r);
	r = pl_db_read(db, TENANT_A, q, 1, one);
	assert_int_equal(pl_db_result_status(r), PL_OK);
	assert_string_equal(PQgetvalue(r, 0, 0), "2");
	PQclear(r);
	// A new connection (this one closed under it) prepares again.
	r = pl_db_exec(db, "SELECT pg_terminate_backend(pg_backend_pid())", 0,
	               NULL);
	PQclear(r);
	r = pl_db_read(db, TENANT_A, q, 1, one);
	assert_int_equal(pl_db_result_status(r), PL_OK);
	assert_string_equal(PQgetvalue(r, 0, 0), "2");
	PQclear(r);
	// Inside a transaction it refuses (the tenant would be the
	// transaction's).
	assert_int_equal(pl_db_tx(db, TENANT_A, tx_read_inside, NULL), PL_OK);
	pl_db_close(db);
}

static int
tx_exec_twice(pl_db *db, void *arg)
{
	PGresult *r;

	(void)arg;
	for (int i = 0; i < 2; i++) {
		r = pl_db_exec(db, "SELECT count(*) FROM notes2", 0, NULL);
		if (pl_db_result_status(r) != PL_OK ||
		    strcmp(PQgetvalue(r, 0, 0), "2") != 0) {
			PQclear(r);
			return PL_INTERNAL;
		}
		PQclear(r);
	}
	return PL_OK;
}

// The number of statements prepared on db's connection.
static int
n_prepared(pl_db *db)
{
	PGresult *r = PQexec(pl_db_conn(db),
	                     "SELECT count(*) FROM pg_prepared_statements");
	int n = atoi(PQgetvalue(r, 0, 0));

	PQclear(r);
	return n;
}

// pl_db_exec prepares a query it runs a second time (not a utility
// statement, not a text run once), runs it by name after, inside a
// transaction too; a statement that fails does not poison the cache, and
// statements the server lost (DEALLOCATE ALL) mean a new connection, not
// failures from then on.
static void
test_exec_prepared(void **state)
{
	fixture *f = need_pg(state);
	pl_db *db = pl_db_open(f->app_url);
	const char *q = "SELECT count(*) FROM notes2 WHERE $1::int > 0";
	const char *one[1] = { "1" };
	PGresult *r;

	assert_int_equal(pl_db_command(db, "SET work_mem = '8MB'", 0, NULL),
	                 PL_OK);
	assert_int_equal(pl_db_command(db, "SET work_mem = '8MB'", 0, NULL),
	                 PL_OK);
	assert_int_equal(n_prepared(db), 0); // utility statements
	for (int i = 0; i < 4; i++) {
		r = pl_db_exec(db, q, 1, one);
		assert_int_equal(pl_db_result_status(r), PL_OK);
		assert_string_equal(PQgetvalue(r, 0, 0), "0"); // no tenant
		PQclear(r);
		assert_int_equal(n_prepared(db), i == 0 ? 0 : 1);
	}
	// Fails to prepare, twice: an error each time, nothing kept.
	for (int i = 0; i < 2; i++) {
		r = pl_db_exec(db, "SELECT nosuchcolumn FROM notes2", 0, NULL);
		assert_int_not_equal(pl_db_result_status(r), PL_OK);
		PQclear(r);
	}
	// Fails running, by name: the error, and the name still works.
	for (int i = 0; i < 3; i++) {
		r = pl_db_exec(db, "SELECT 1 / $1::int", 1,
		               (const char *[]){ i == 1 ? "0" : "1" });
		assert_int_equal(pl_db_result_status(r) == PL_OK, i != 1);
		PQclear(r);
	}
	assert_int_equal(n_prepared(db), 2);
	assert_int_equal(pl_db_tx(db, TENANT_A, tx_exec_twice, NULL), PL_OK);
	assert_int_equal(pl_db_tx(db, TENANT_A, tx_exec_twice, NULL), PL_OK);
	// The server forgets them all: one call reconnects, then all is well.
	PQclear(PQexec(pl_db_conn(db), "DEALLOCATE ALL"));
	r = pl_db_exec(db, q, 1, one);
	assert_int_equal(pl_db_result_status(r), PL_OK);
	assert_string_equal(PQgetvalue(r, 0, 0), "0"); // no tenant
	PQclear(r);
	PQclear(PQexec(pl_db_conn(db), "DEALLOCATE ALL"));
	assert_int_equal(pl_db_tx(db, TENANT_A, tx_exec_twice, NULL), PL_OK);
	r = pl_db_read(db, TENANT_A, q, 1, one);
	assert_int_equal(pl_db_result_status(r), PL_OK);
	PQclear(r);
	PQclear(PQexec(pl_db_conn(db), "DEALLOCATE ALL"));
	r = pl_db_read(db, TENANT_A, q, 1, one);
	assert_int_equal(pl_db_result_status(r), PL_OK);
	assert_string_equal(PQgetvalue(r, 0, 0), "2");
	PQclear(r);
	pl_db_close(db);
}

// pl_db_is_prepared / pl_db_set_prepared: a record per handle's
// connection, not per thread (two handles used by one thread each keep
// their own), bounded, and emptied when the connection is replaced.
static void
test_prepared_record(void **state)
{
	fixture *f = need_pg(state);
	pl_db *a = pl_db_open(f->app_url), *b = pl_db_open(f->app_url);
	static const char *const names[] = {
		"n0", "n1",  "n2",  "n3",  "n4",  "n5",  "n6",  "n7",  "n8",
		"n9", "n10", "n11", "n12", "n13", "n14", "n15", "n16",
	};
	PGresult *r;

	assert_false(pl_db_is_prepared(a, "s")); // no connection yet
	assert_non_null(pl_db_conn(a));
	assert_non_null(pl_db_conn(b));
	assert_false(pl_db_is_prepared(a, "s"));
	pl_db_set_prepared(a, "s", true);
	assert_true(pl_db_is_prepared(a, "s"));
	assert_false(pl_db_is_prepared(b, "s"));
	pl_db_set_prepared(b, "s", true);
	pl_db_set_prepared(a, "s", false);
	assert_false(pl_db_is_prepared(a, "s"));
	assert_true(pl_db_is_prepared(b, "s"));
	// Sixteen names are kept; the seventeenth is not remembered.
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		pl_db_set_prepared(a, names[i], true);
	for (size_t i = 0; i < 16; i++)
		assert_true(pl_db_is_prepared(a, names[i]));
	assert_false(pl_db_is_prepared(a, "n16"));
	// A new connection has prepared nothing.
	r = pl_db_exec(a, "SELECT pg_terminate_backend(pg_backend_pid())", 0,
	               NULL);
	PQclear(r);
	assert_int_equal(pl_db_command(a, "SELECT 1", 0, NULL), PL_OK);
	assert_false(pl_db_is_prepared(a, "n0"));
	assert_true(pl_db_is_prepared(b, "s"));
	// pl_db_prepare: only on an idle connection; then the name runs.
	assert_int_equal(pl_db_command(a, "BEGIN", 0, NULL), PL_OK);
	assert_false(pl_db_prepare(a, "q", "SELECT $1::int + 1", 1));
	assert_false(pl_db_is_prepared(a, "q"));
	assert_int_equal(pl_db_command(a, "ROLLBACK", 0, NULL), PL_OK);
	assert_true(pl_db_prepare(a, "q", "SELECT $1::int + 1", 1));
	assert_true(pl_db_is_prepared(a, "q"));
	r = PQexecPrepared(pl_db_conn(a), "q", 1, (const char *[]){ "41" },
	                   NULL, NULL, 0);
	assert_int_equal(pl_db_result_status(r), PL_OK);
	assert_string_equal(PQgetvalue(r, 0, 0), "42");
	PQclear(r);
	// Inside a transaction, what is prepared already stays usable.
	assert_int_equal(pl_db_command(a, "BEGIN", 0, NULL), PL_OK);
	assert_true(pl_db_prepare(a, "q", "SELECT $1::int + 1", 1));
	assert_int_equal(pl_db_command(a, "ROLLBACK", 0, NULL), PL_OK);
	// A name the connection lost (26000) is forgotten, prepared again.
	assert_int_equal(pl_db_command(a, "DEALLOCATE q", 0, NULL), PL_OK);
	r = PQexecPrepared(pl_db_conn(a), "q", 1, (const char *[]){ "1" }, NULL,
	                   NULL, 0);
	assert_false(pl_db_forget_if_gone(a, NULL, r));
	assert_true(pl_db_is_prepared(a, "q"));
	assert_true(pl_db_forget_if_gone(a, "q", r));
	assert_false(pl_db_is_prepared(a, "q"));
	PQclear(r);
	r = pl_db_exec(a, "SELECT 1", 0, NULL);
	assert_false(pl_db_forget_if_gone(a, "q", r));
	PQclear(r);
	assert_true(pl_db_prepare(a, "q", "SELECT $1::int + 1", 1));
	pl_db_close(a);
	pl_db_close(b);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sqlstate_mapping),
		cmocka_unit_test_setup_teardown(test_exec_prepared, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(test_read_pipelined, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(test_prepared_record, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(test_array_literal, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(test_timestamps, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(test_tenant_setting_checked,
		                                setup, teardown),
		cmocka_unit_test_setup_teardown(test_read_binary, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(test_text_array, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(test_exec_params_verbatim,
		                                setup, teardown),
		cmocka_unit_test_setup_teardown(test_status_from_real_errors,
		                                setup, teardown),
		cmocka_unit_test_setup_teardown(test_call_error, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(test_tx_commit_and_rollback,
		                                setup, teardown),
		cmocka_unit_test_setup_teardown(test_tx_misuse, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(test_tx_retries_aborted, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(
		        test_tx_real_serialization_failure, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reconnect_after_restart,
		                                setup, teardown),
		cmocka_unit_test_setup_teardown(
		        test_tx_connection_lost_retried_once, setup, teardown),
		cmocka_unit_test_setup_teardown(
		        test_tx_begins_with_first_statement, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unreachable, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(test_row_level_security, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(test_analyzer, setup, teardown),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
