// Migrations: loading a directory, applying under the advisory lock,
// checksums, readiness status.
#include <dirent.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "pgh.h"
#include "pl/migrate.h"

typedef struct fixture {
	pgh h;
	bool up;
	char url[PGH_URL_MAX];
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
		return 0; // the database tests skip
	if (pgh_create_db(&f.h, "migtest", f.url, sizeof(f.url)) != 0)
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

static fixture *
need_pg(void **state)
{
	fixture *f = *state;
	if (!f->up)
		skip();
	return f;
}

static void
quiet(void *arg, const char *msg)
{
	(void)arg;
	(void)msg;
}

static PGconn *
db_connect(fixture *f)
{
	PGconn *c = PQconnectdb(f->url);
	assert_int_equal(PQstatus(c), CONNECTION_OK);
	PQsetNoticeProcessor(c, quiet, NULL);
	return c;
}

// The first value of a query, as an int.
static int
query_int(PGconn *c, const char *sql)
{
	PGresult *r = PQexec(c, sql);
	if (PQresultStatus(r) != PGRES_TUPLES_OK)
		fail_msg("%s: %s", sql, PQerrorMessage(c));
	int v = atoi(PQgetvalue(r, 0, 0));
	PQclear(r);
	return v;
}

// A temp directory of migration files.
typedef struct tdir {
	char path[64];
} tdir;

static void
tdir_make(tdir *d)
{
	snprintf(d->path, sizeof(d->path), "/tmp/pl_mig.XXXXXX");
	assert_non_null(mkdtemp(d->path));
}

static void
tdir_put(tdir *d, const char *name, const char *content)
{
	char p[256];
	snprintf(p, sizeof(p), "%s/%s", d->path, name);
	FILE *f = fopen(p, "w");
	assert_non_null(f);
	fputs(content, f);
	fclose(f);
}

static void
tdir_remove(tdir *d)
{
	DIR *dir = opendir(d->path);
	if (dir == NULL)
		return;
	struct dirent *de;
	while ((de = readdir(dir)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 ||
		    strcmp(de->d_name, "..") == 0)
			continue;
		char p[512];
		snprintf(p, sizeof(p), "%s/%s", d->path, de->d_name);
		unlink(p);
	}
	closedir(dir);
	rmdir(d->path);
}

// Loads a directory that must fail; returns its error.
static const char *
load_fails(tdir *d)
{
	static char err[512];
	pl_migration *m = (pl_migration *)1;
	size_t n = 99;
	err[0] = '\0';
	assert_int_equal(pl_migrate_load_dir(d->path, &m, &n, err, sizeof(err)),
	                 -1);
	assert_null(m);
	assert_int_equal(n, 0);
	assert_string_not_equal(err, "");
	return err;
}

static void
test_load_dir(void **state)
{
	(void)state;
	tdir d;
	tdir_make(&d);
	tdir_put(&d, "002_more.sql", "ALTER TABLE t ADD COLUMN y int;\n");
	tdir_put(&d, "001_init.sql", "CREATE TABLE t (x int);\n");
	tdir_put(&d, "README.md", "not a migration\n");
	tdir_put(&d, ".001_init.sql.swp", "editor junk");
	pl_migration *m;
	size_t n;
	char err[256];
	assert_int_equal(pl_migrate_load_dir(d.path, &m, &n, err, sizeof(err)),
	                 0);
	assert_int_equal(n, 2);
	assert_string_equal(m[0].name, "001_init.sql");
	assert_string_equal(m[0].sql, "CREATE TABLE t (x int);\n");
	assert_int_equal(m[0].len, strlen(m[0].sql));
	assert_string_equal(m[1].name, "002_more.sql");
	pl_migrate_free(m, n);
	tdir_remove(&d);

	// No files at all is fine.
	tdir_make(&d);
	assert_int_equal(pl_migrate_load_dir(d.path, &m, &n, err, sizeof(err)),
	                 0);
	assert_int_equal(n, 0);
	pl_migrate_free(m, n);
	tdir_remove(&d);
	pl_migrate_free(NULL, 0);
}

static void
test_load_dir_refuses(void **state)
{
	(void)state;
	tdir d;

	tdir_make(&d);
	tdir_put(&d, "001_init.sql", "SELECT 1;");
	tdir_put(&d, "003_later.sql", "SELECT 3;");
	assert_string_equal(
	        load_fails(&d),
	        "migration 002 is missing (next file is 003_later.sql)");
	tdir_remove(&d);

	tdir_make(&d);
	tdir_put(&d, "002_second.sql", "SELECT 2;");
	assert_non_null(strstr(load_fails(&d), "migration 001 is missing"));
	tdir_remove(&d);

	tdir_make(&d);
	tdir_put(&d, "001_init.sql", "SELECT 1;");
	tdir_put(&d, "002_a.sql", "SELECT 2;");
	tdir_put(&d, "002_b.sql", "SELECT 2;");
	assert_string_equal(
	        load_fails(&d),
	        "duplicate migration number 002: 002_a.sql and 002_b.sql");
	tdir_remove(&d);

	static const char *const bad[] = { "1_init.sql",       "0001_init.sql",
		                           "001-init.sql",     "001_Init.sql",
		                           "001_.sql",         "000_zero.sql",
		                           "001_in it.sql",    "abc_init.sql",
		                           "001_init.SQL.sql", NULL };
	for (int i = 0; bad[i] != NULL; i++) {
		tdir_make(&d);
		tdir_put(&d, bad[i], "SELECT 1;");
		const char *err = load_fails(&d);
		if (strstr(err, "bad migration file name") == NULL ||
		    strstr(err, bad[i]) == NULL)
			fail_msg("%s: unexpected error: %s", bad[i], err);
		tdir_remove(&d);
	}

	tdir_make(&d);
	char p[128];
	snprintf(p, sizeof(p), "%s/001_dir.sql", d.path);
	assert_int_equal(mkdir(p, 0700), 0);
	assert_non_null(strstr(load_fails(&d), "not a regular file"));
	rmdir(p);
	tdir_remove(&d);

	tdir_make(&d);
	snprintf(p, sizeof(p), "%s/001_nul.sql", d.path);
	FILE *f = fopen(p, "w");
	assert_non_null(f);
	fwrite("SELECT 1;\0DROP", 1, 14, f);
	fclose(f);
	assert_non_null(strstr(load_fails(&d), "NUL"));
	tdir_remove(&d);

	strcpy(d.path, "/nonexistent/pl_mig");
	assert_non_null(strstr(load_fails(&d), "could not open"));
	pl_migration *m;
	size_t n;
	char err[64];
	assert_int_equal(pl_migrate_load_dir(NULL, &m, &n, err, sizeof(err)),
	                 -1);
}

#define MIG(name, sql)                                                         \
	{                                                                      \
		(char *)(name), (char *)(sql), sizeof(sql) - 1                 \
	}

static pl_migration three[] = {
	MIG("001_init.sql",
	    "CREATE TABLE items (item_id int PRIMARY KEY, label text);\n"
	    "CREATE TABLE log (entry text NOT NULL);\n"
	    "INSERT INTO log VALUES ('001');\n"),
	MIG("002_more.sql", "ALTER TABLE items ADD COLUMN note text;\n"
	                    "INSERT INTO log VALUES ('002');\n"),
	// Slow, so concurrent runs really overlap.
	MIG("003_slow.sql", "SELECT pg_sleep(0.3);\n"
	                    "INSERT INTO log VALUES ('003');\n"),
};

static void
test_apply_twice(void **state)
{
	fixture *f = need_pg(state);
	PGconn *c = db_connect(f);
	char err[512] = "";
	int rc = pl_migrate_apply(c, "svc_twice", three, 3, err, sizeof(err));
	if (rc != 3)
		fail_msg("apply: %d %s", rc, err);
	assert_int_equal(
	        pl_migrate_apply(c, "svc_twice", three, 3, err, sizeof(err)),
	        0);
	// Unqualified names went into the service's schema.
	assert_int_equal(query_int(c, "SELECT count(*) FROM svc_twice.log"), 3);
	assert_int_equal(
	        query_int(c, "SELECT count(*) FROM svc_twice.schema_migrations "
	                     "WHERE length(checksum) = 64 AND applied_at <= "
	                     "now()"),
	        3);
	assert_int_equal(query_int(c, "SELECT count(*) FROM "
	                              "information_schema.tables WHERE "
	                              "table_schema = 'public'"),
	                 0);
	assert_int_equal(
	        pl_migrate_status(c, "svc_twice", three, 3, err, sizeof(err)),
	        0);
	// Older code on a newer schema: fewer files than applied is fine.
	assert_int_equal(
	        pl_migrate_apply(c, "svc_twice", three, 2, err, sizeof(err)),
	        0);
	assert_int_equal(
	        pl_migrate_status(c, "svc_twice", three, 2, err, sizeof(err)),
	        0);
	PQfinish(c);
}

static void
test_changed_file_refused(void **state)
{
	fixture *f = need_pg(state);
	PGconn *c = db_connect(f);
	char err[512] = "";
	assert_int_equal(
	        pl_migrate_apply(c, "svc_changed", three, 2, err, sizeof(err)),
	        2);
	pl_migration changed[3];
	memcpy(changed, three, sizeof(changed));
	changed[1] = (pl_migration)MIG(
	        "002_more.sql",
	        "ALTER TABLE items ADD COLUMN note varchar(10);\n"
	        "INSERT INTO log VALUES ('002');\n");
	assert_int_equal(pl_migrate_apply(c, "svc_changed", changed, 3, err,
	                                  sizeof(err)),
	                 -1);
	assert_non_null(strstr(err, "002_more.sql"));
	assert_non_null(strstr(err, "changed"));
	// Nothing after it was applied.
	assert_int_equal(query_int(c, "SELECT count(*) FROM svc_changed.log"),
	                 2);
	assert_int_equal(pl_migrate_status(c, "svc_changed", changed, 3, err,
	                                   sizeof(err)),
	                 -1);
	assert_non_null(strstr(err, "002_more.sql"));

	// A file renamed under the same number is refused too.
	changed[1] = three[1];
	changed[1].name = "002_renamed.sql";
	assert_int_equal(pl_migrate_apply(c, "svc_changed", changed, 3, err,
	                                  sizeof(err)),
	                 -1);
	assert_non_null(strstr(err, "002_renamed.sql"));
	// The lock was released: the original files still apply.
	assert_int_equal(
	        pl_migrate_apply(c, "svc_changed", three, 3, err, sizeof(err)),
	        1);
	assert_int_equal(query_int(c, "SELECT count(*) FROM pg_locks WHERE "
	                              "locktype = 'advisory'"),
	                 0);
	PQfinish(c);
}

static void
test_failed_file_rolls_back(void **state)
{
	fixture *f = need_pg(state);
	PGconn *c = db_connect(f);
	char err[512] = "";
	pl_migration m[2] = {
		MIG("001_init.sql", "CREATE TABLE a (x int);"),
		MIG("002_broken.sql", "CREATE TABLE b (x int);\nSELEKT 1;"),
	};
	assert_int_equal(
	        pl_migrate_apply(c, "svc_broken", m, 2, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "could not apply 002_broken.sql"));
	assert_non_null(strstr(err, "syntax error"));
	assert_int_equal(query_int(c, "SELECT count(*) FROM "
	                              "svc_broken.schema_migrations"),
	                 1);
	assert_int_equal(query_int(c, "SELECT count(*) FROM "
	                              "information_schema.tables WHERE "
	                              "table_schema = 'svc_broken' AND "
	                              "table_name = 'b'"),
	                 0);
	assert_int_equal(
	        pl_migrate_status(c, "svc_broken", m, 2, err, sizeof(err)), 1);
	// A file may not end the transaction it runs in.
	pl_migration commit[1] = { MIG("001_commit.sql",
		                       "CREATE TABLE c (x int);\nCOMMIT;") };
	assert_int_equal(
	        pl_migrate_apply(c, "svc_commit", commit, 1, err, sizeof(err)),
	        -1);
	assert_string_equal(
	        err,
	        "001_commit.sql:2: commit: migrations run in a transaction of "
	        "their own; remove transaction control");
	assert_int_equal(query_int(c, "SELECT count(*) FROM pg_namespace WHERE "
	                              "nspname = 'svc_commit'"),
	                 0);
	// Savepoints and BEGIN inside a function body are fine.
	pl_migration body[1] = { MIG(
		"001_body.sql",
		"CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$\n"
		"BEGIN RETURN 1; END $$;\n"
		"SAVEPOINT s; ROLLBACK TO SAVEPOINT s; RELEASE SAVEPOINT s;\n"
		"DO $$ BEGIN PERFORM f(); END $$;\n"
		"CREATE FUNCTION g() RETURNS int LANGUAGE sql\n"
		"BEGIN ATOMIC SELECT 1; SELECT 2; END;\n"
		"SELECT g();") };
	assert_int_equal(
	        pl_migrate_apply(c, "svc_body", body, 1, err, sizeof(err)), 1);
	assert_int_equal(PQtransactionStatus(c), PQTRANS_IDLE);
	PQfinish(c);
}

static void
test_status(void **state)
{
	fixture *f = need_pg(state);
	PGconn *c = db_connect(f);
	char err[512] = "";
	// No schema yet: everything pending.
	assert_int_equal(
	        pl_migrate_status(c, "svc_status", three, 3, err, sizeof(err)),
	        1);
	assert_non_null(strstr(err, "001_init.sql"));
	assert_int_equal(
	        pl_migrate_status(c, "svc_status", NULL, 0, err, sizeof(err)),
	        0);
	assert_int_equal(
	        pl_migrate_apply(c, "svc_status", three, 1, err, sizeof(err)),
	        1);
	assert_int_equal(
	        pl_migrate_status(c, "svc_status", three, 3, err, sizeof(err)),
	        1);
	assert_non_null(strstr(err, "002_more.sql"));
	assert_int_equal(
	        pl_migrate_apply(c, "svc_status", three, 3, err, sizeof(err)),
	        2);
	assert_int_equal(
	        pl_migrate_status(c, "svc_status", three, 3, err, sizeof(err)),
	        0);
	pl_migration changed[3];
	memcpy(changed, three, sizeof(changed));
	changed[0] = (pl_migration)MIG("001_init.sql", "SELECT 'other';");
	assert_int_equal(pl_migrate_status(c, "svc_status", changed, 3, err,
	                                   sizeof(err)),
	                 -1);
	assert_non_null(strstr(err, "001_init.sql"));
	PQfinish(c);
}

static void
test_bad_arguments(void **state)
{
	fixture *f = need_pg(state);
	PGconn *c = db_connect(f);
	char err[512];
	static const char *const bad[] = { "",
		                           "Svc",
		                           "1svc",
		                           "svc-x",
		                           "svc; DROP SCHEMA public",
		                           "\"svc\"",
		                           "a_schema_name_that_is_far_too_long_"
		                           "for_postgresql_to_keep_whole_x",
		                           NULL };
	for (int i = 0; bad[i] != NULL; i++) {
		err[0] = '\0';
		assert_int_equal(
		        pl_migrate_apply(c, bad[i], three, 3, err, sizeof(err)),
		        -1);
		assert_non_null(strstr(err, "bad schema name"));
		assert_int_equal(pl_migrate_status(c, bad[i], three, 3, err,
		                                   sizeof(err)),
		                 -1);
	}
	assert_int_equal(pl_migrate_apply(c, NULL, three, 3, err, sizeof(err)),
	                 -1);
	assert_int_equal(
	        pl_migrate_apply(NULL, "svc_x", three, 3, err, sizeof(err)),
	        -1);
	assert_int_equal(
	        pl_migrate_apply(c, "svc_x", NULL, 3, err, sizeof(err)), -1);
	// Out of order files are refused before anything runs.
	pl_migration swapped[2] = { three[1], three[0] };
	assert_int_equal(
	        pl_migrate_apply(c, "svc_x", swapped, 2, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "out of place"));
	assert_int_equal(query_int(c, "SELECT count(*) FROM pg_namespace WHERE "
	                              "nspname = 'svc_x'"),
	                 0);
	// Inside a transaction the session lock would outlive a rollback.
	PQclear(PQexec(c, "BEGIN"));
	assert_int_equal(
	        pl_migrate_apply(c, "svc_x", three, 3, err, sizeof(err)), -1);
	PQclear(PQexec(c, "ROLLBACK"));
	PQfinish(c);
}

typedef struct racer {
	const char *url;
	pthread_barrier_t *go;
	int applied;
	char err[512];
} racer;

static void *
race(void *arg)
{
	racer *r = arg;
	PGconn *c = PQconnectdb(r->url);
	PQsetNoticeProcessor(c, quiet, NULL);
	pthread_barrier_wait(r->go);
	r->applied = pl_migrate_apply(c, "svc_race", three, 3, r->err,
	                              sizeof(r->err));
	PQfinish(c);
	return NULL;
}

static void
test_concurrent_apply(void **state)
{
	fixture *f = need_pg(state);
	pthread_barrier_t go;
	pthread_t t[2];
	racer r[2];
	assert_int_equal(pthread_barrier_init(&go, NULL, 2), 0);
	for (int i = 0; i < 2; i++) {
		r[i] = (racer){ .url = f->url, .go = &go, .applied = -2 };
		assert_int_equal(pthread_create(&t[i], NULL, race, &r[i]), 0);
	}
	for (int i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	pthread_barrier_destroy(&go);
	for (int i = 0; i < 2; i++)
		if (r[i].applied < 0)
			fail_msg("racer %d: %s", i, r[i].err);
	assert_int_equal(r[0].applied + r[1].applied, 3);
	PGconn *c = db_connect(f);
	assert_int_equal(query_int(c, "SELECT count(*) FROM svc_race.log"), 3);
	assert_int_equal(query_int(c, "SELECT count(DISTINCT entry) FROM "
	                              "svc_race.log"),
	                 3);
	assert_int_equal(query_int(c, "SELECT count(*) FROM "
	                              "svc_race.schema_migrations"),
	                 3);
	PQfinish(c);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_load_dir),
		cmocka_unit_test(test_load_dir_refuses),
		cmocka_unit_test(test_apply_twice),
		cmocka_unit_test(test_changed_file_refused),
		cmocka_unit_test(test_failed_file_rolls_back),
		cmocka_unit_test(test_status),
		cmocka_unit_test(test_bad_arguments),
		cmocka_unit_test(test_concurrent_apply),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
