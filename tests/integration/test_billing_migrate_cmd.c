// `parley-<svc> --migrate` (the Kubernetes migration Job, deploy/k8s): the
// real billing binary applies its migrations with nothing but a database
// URL, exits 0, is idempotent, and fails with a non-zero status when the
// database cannot be reached; without --migrate the service still refuses
// to start without its secret.
#include <setjmp.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <libpq-fe.h>

#include "billing_migrations.h"
#include "pgh.h"

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
	if (pgh_create_db(&f.h, "migcmd", f.url, sizeof(f.url)) != 0)
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

// Runs the billing binary with argv[1] = arg (or none) and exactly the
// environment env (NULL-terminated); returns its exit status, or -1 when it
// did not exit within 60 s (it is killed) or was killed by a signal.
static int
run_billing(const char *arg, char *const env[])
{
	char bin[512];
	char *argv[] = { bin, (char *)arg, NULL };
	pid_t pid;
	int st;

	snprintf(bin, sizeof(bin), "%s/services/billing/parley-billing",
	         PARLEY_BINARY_DIR);
	if (posix_spawn(&pid, bin, NULL, NULL, argv, env) != 0)
		return -1;
	for (int i = 0; i < 6000; i++) {
		pid_t r = waitpid(pid, &st, WNOHANG);
		if (r == pid)
			return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
		if (r < 0)
			return -1;
		struct timespec ts = { 0, 10 * 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
	kill(pid, SIGKILL);
	waitpid(pid, &st, 0);
	return -1;
}

static long
applied(const char *url)
{
	PGconn *c = PQconnectdb(url);
	long n = -1;

	if (PQstatus(c) == CONNECTION_OK) {
		PGresult *r = PQexec(
		        c, "SELECT count(*) FROM billing.schema_migrations");
		if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
			n = strtol(PQgetvalue(r, 0, 0), NULL, 10);
		PQclear(r);
	}
	PQfinish(c);
	return n;
}

static void
test_migrate_applies_and_exits(void **state)
{
	fixture *f = need_pg(state);
	char dbvar[PGH_URL_MAX + 32];
	// No PARLEY_SERVICE_SECRET and none of billing's own settings: the Job
	// holds only the database URL (the per-service name, as manifests set).
	snprintf(dbvar, sizeof(dbvar), "PARLEY_BILLING_DATABASE_URL=%s",
	         f->url);
	char *env[] = { dbvar, "PARLEY_OPS_PORT=0", NULL };

	assert_int_equal(applied(f->url), -1); // no schema yet
	assert_int_equal(run_billing("--migrate", env), 0);
	assert_int_equal(applied(f->url), (long)BILLING_N_MIGRATIONS);
	// Again: nothing to apply, still success, nothing duplicated.
	assert_int_equal(run_billing("--migrate", env), 0);
	assert_int_equal(applied(f->url), (long)BILLING_N_MIGRATIONS);
}

static void
test_migrate_fails_without_database(void **state)
{
	fixture *f = need_pg(state);
	char url[PGH_URL_MAX + 64];
	char none[] = "PARLEY_OPS_PORT=0";
	// Port 1: nothing listens there (a privileged port no test takes).
	snprintf(url, sizeof(url),
	         "PARLEY_DATABASE_URL=postgresql://postgres@127.0.0.1:1/x"
	         "?connect_timeout=2");
	char *env[] = { url, none, NULL };
	char *noenv[] = { none, NULL };

	(void)f;
	assert_int_not_equal(run_billing("--migrate", env), 0);
	// No URL at all: a configuration error, not a hang.
	assert_int_not_equal(run_billing("--migrate", noenv), 0);
}

static void
test_serving_still_needs_the_secret(void **state)
{
	fixture *f = need_pg(state);
	char dbvar[PGH_URL_MAX + 32];
	snprintf(dbvar, sizeof(dbvar), "PARLEY_DATABASE_URL=%s", f->url);
	char *env[] = { dbvar, "PARLEY_OPS_PORT=0", NULL };

	// Without --migrate the service refuses to start without its secret
	// (it exits at once instead of serving).
	assert_int_not_equal(run_billing(NULL, env), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_migrate_applies_and_exits),
		cmocka_unit_test(test_migrate_fails_without_database),
		cmocka_unit_test(test_serving_still_needs_the_secret),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
