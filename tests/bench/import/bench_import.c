// Legacy import benchmark: the generator's default sizes (1,000 contacts,
// 100,000 messages, 5,000 orders, 50 campaigns and their subscribers, the
// LangGraph tables) into the real services (in process, each its own
// database), timed per table. Target on 2 cores: <= 60 s in all.
// Prints per run: total, phases, rows/s per table, the CPU seconds of
// this process and of PostgreSQL, the RPCs made, and the load average;
// with PARLEY_BENCH_PGSS=1 also the statements that took the most time
// (pg_stat_statements).
//   build-rel/tests/bench/import/bench_import
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <dirent.h>
#include <sys/resource.h>

#include <libpq-fe.h>
#include <sodium.h>

#include "fake_provider.h"
#include "import.h"
#include "messaging.h"
#include "pgh.h"
#include "svch.h"

extern const pl_service_def tenants_service_def;
extern const pl_service_def billing_service_def;
extern const pl_service_def agents_service_def;

#define FIXDIR PARLEY_SOURCE_DIR "/tests/fixtures/legacy/"
#define CRED                                                                   \
	"PARLEY_CREDENTIALS_KEY=MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="

static pgh pg;
static svch ht, hb, ha, hm;
static fake_provider *fp;
static bool up;
static char env_buf[4][PGH_URL_MAX + 64];
static char legacy_url[PGH_URL_MAX];
static bool pgss;

// Loads schema.sql + generate.sql into a new database with psql.
static int
load_legacy(const char *db, const char *vars, char *url)
{
	char cmd[1024];

	if (pgh_create_db(&pg, db, url, PGH_URL_MAX) != 0)
		return -1;
	snprintf(cmd, sizeof(cmd),
	         "psql -q -X -v ON_ERROR_STOP=1 %s -d '%s' -f %sschema.sql -f "
	         "%sgenerate.sql >/dev/null",
	         vars, url, FIXDIR, FIXDIR);
	return system(cmd) == 0 ? 0 : -1;
}

static int
setup(void)
{
	if (sodium_init() < 0)
		return -1;
	int rc = pgh_start(&pg);
	if (rc == -2)
		return -1;
	if (rc == -1)
		return 0;
	if (fake_provider_start(&fp) != 0)
		return -1;
	// PARLEY_BENCH_PGSS=1: pg_stat_statements on, the statements that
	// took the most time printed after each run.
	if (pgss &&
	    (pgh_exec(&pg, "ALTER SYSTEM SET shared_preload_libraries = "
	                   "'pg_stat_statements'") != 0 ||
	     pgh_restart(&pg) != 0 ||
	     pgh_exec(&pg, "CREATE EXTENSION pg_stat_statements") != 0))
		return -1;
	// The generator's defaults: 1,000 contacts, 100,000 messages...
	if (load_legacy("legacy", "", legacy_url) != 0)
		return -1;
	{
		static const char *const env[] = {
			"PARLEY_TENANTS_URL=", "PARLEY_ANALYTICS_URL=",
			"PARLEY_PAYMENT_WEBHOOK_SECRET=", NULL
		};
		if (svch_start(&hb, &pg, &billing_service_def, 4, env) != 0)
			return -1;
	}
	snprintf(env_buf[0], sizeof(env_buf[0]), "PARLEY_BILLING_URL=%s",
	         hb.addr);
	{
		const char *const env[] = { CRED, env_buf[0],
			                    "PARLEY_ANALYTICS_URL=", NULL };
		if (svch_start(&ha, &pg, &agents_service_def, 4, env) != 0)
			return -1;
	}
	{
		const char *const env[] = {
			CRED,
			"PARLEY_CREDENTIALS_KEY_ID=k1",
			"PARLEY_TENANTS_PWHASH_OPSLIMIT=1",
			"PARLEY_TENANTS_PWHASH_MEMLIMIT=65536",
			"PARLEY_PLATFORM_ADMIN_EMAILS=root@example.com",
			"PARLEY_PUBLIC_URL=https://parley.example/",
			env_buf[0],
			"PARLEY_ANALYTICS_URL=",
			NULL,
		};
		if (svch_start(&ht, &pg, &tenants_service_def, 4, env) != 0)
			return -1;
		if (svch_start_jobs(&ht) != PL_OK)
			return -1;
	}
	snprintf(env_buf[1], sizeof(env_buf[1]), "PARLEY_TENANTS_URL=%s",
	         ht.addr);
	snprintf(env_buf[2], sizeof(env_buf[2]), "PARLEY_AGENTS_URL=%s",
	         ha.addr);
	{
		const char *const env[] = {
			env_buf[1],
			env_buf[0],
			env_buf[2],
			"PARLEY_ANALYTICS_URL=",
			"PARLEY_MESSAGING_CHANNEL_CACHE=0",
			NULL,
		};
		if (svch_start(&hm, &pg, &messaging_service_def, 4, env) != 0)
			return -1;
		if (svch_start_jobs(&hm) != PL_OK)
			return -1;
	}
	up = true;
	return 0;
}

static int
teardown(void)
{
	if (up) {
		svch_stop(&hm);
		svch_stop(&ht);
		svch_stop(&ha);
		svch_stop(&hb);
	}
	if (fp)
		fake_provider_stop(fp);
	pgh_stop(&pg);
	return 0;
}

// CPU seconds (user + system) of this process: the importer and the four
// services, which run in it.
static double
cpu_self(void)
{
	struct rusage u;

	getrusage(RUSAGE_SELF, &u);
	return (double)u.ru_utime.tv_sec + (double)u.ru_utime.tv_usec / 1e6 +
	       (double)u.ru_stime.tv_sec + (double)u.ru_stime.tv_usec / 1e6;
}

// CPU seconds of the cluster: the postmaster and its children (the
// services' pooled connections live through a run; the importer's source
// connection is counted while it is open, so the read is under-counted).
static double
cpu_pg(void)
{
	char path[160], line[1024];
	long tck = sysconf(_SC_CLK_TCK);
	double sum = 0;
	pid_t pm = 0;
	FILE *f;
	DIR *d;
	struct dirent *e;

	snprintf(path, sizeof(path), "%s/data/postmaster.pid", pg.dir);
	if ((f = fopen(path, "r")) == NULL)
		return -1;
	if (fscanf(f, "%d", &pm) != 1)
		pm = 0;
	fclose(f);
	if (pm <= 0 || (d = opendir("/proc")) == NULL)
		return -1;
	while ((e = readdir(d)) != NULL) {
		char *p;
		int ppid;
		unsigned long ut, st;
		pid_t pid = (pid_t)strtol(e->d_name, &p, 10);
		if (*p != '\0' || pid <= 0)
			continue;
		snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
		if ((f = fopen(path, "r")) == NULL)
			continue;
		if (fgets(line, sizeof(line), f) != NULL &&
		    (p = strrchr(line, ')')) != NULL &&
		    sscanf(p + 2,
		           "%*c %d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu",
		           &ppid, &ut, &st) == 3 &&
		    (pid == pm || ppid == pm))
			sum += (double)(ut + st) / (double)tck;
		fclose(f);
	}
	closedir(d);
	return sum;
}

static void
pgss_reset(void)
{
	if (pgss)
		pgh_exec(&pg, "SELECT pg_stat_statements_reset()");
}

static void
pgss_print(void)
{
	PGconn *c;
	PGresult *r;

	if (!pgss)
		return;
	c = PQconnectdb(pg.url);
	r = PQexec(c, "SELECT d.datname, s.calls, s.total_exec_time, s.rows, "
	              "regexp_replace(left(s.query, 90), '\\s+', ' ', 'g') "
	              "FROM pg_stat_statements s JOIN pg_database d ON d.oid = "
	              "s.dbid ORDER BY s.total_exec_time DESC LIMIT 15");
	printf("  %-12s %7s %9s %9s  %s\n", "database", "calls", "total ms",
	       "rows", "statement");
	for (int i = 0;
	     PQresultStatus(r) == PGRES_TUPLES_OK && i < PQntuples(r); i++)
		printf("  %-12s %7s %9.0f %9s  %s\n", PQgetvalue(r, i, 0),
		       PQgetvalue(r, i, 1), atof(PQgetvalue(r, i, 2)),
		       PQgetvalue(r, i, 3), PQgetvalue(r, i, 4));
	PQclear(r);
	PQfinish(c);
}

static void
load_avg(char *out, size_t len)
{
	double l[3] = { -1, -1, -1 };

	if (getloadavg(l, 3) < 0)
		snprintf(out, len, "?");
	else
		snprintf(out, len, "%.2f %.2f %.2f", l[0], l[1], l[2]);
}

static void
print_run(const char *what, int rc, const char *err, const imp_report *r,
          double cpu_s, double cpu_p)
{
	char la[64];

	load_avg(la, sizeof(la));
	printf("%s: exit %d%s%s, %.1f s in all (target <= 60 s); load "
	       "average now %s\n",
	       what, rc, err[0] ? ": " : "", err, r->seconds, la);
	printf("  phases: read %.2f s, map %.2f s, set-up %.2f s, write %.2f "
	       "s, verify %.2f s\n",
	       r->read_s, r->map_s, r->setup_s, r->write_s, r->verify_s);
	printf("  CPU: importer + services %.1f s, PostgreSQL %.1f s "
	       "(wall %.1f s); %ld RPCs, %ld of them writes\n",
	       cpu_s, cpu_p, r->seconds, r->rpc_calls, r->rpc_writes);
	printf("  %-20s %9s %9s %9s %8s %10s\n", "table", "rows", "created",
	       "existing", "seconds", "rows/s");
	for (int i = 0; i < IMP_TABLES; i++)
		printf("  %-20s %9lld %9lld %9lld %8.2f %10.0f\n", r->t[i].name,
		       (long long)r->t[i].parley, (long long)r->t[i].created,
		       (long long)r->t[i].existing, r->t[i].seconds,
		       r->t[i].seconds > 0
		               ? (double)(r->t[i].created + r->t[i].existing) /
		                         r->t[i].seconds
		               : 0);
	for (size_t i = 0; i < r->n_mismatches; i++)
		printf("  mismatch: %s\n", r->mismatches[i]);
	fflush(stdout);
}

int
main(void)
{
	imp_opts o = { 0 };
	imp_report r;
	char err[1024] = "", la[64];
	FILE *devnull = fopen("/dev/null", "w");
	double c0, p0;
	int rc, rc1;

	setvbuf(stdout, NULL, _IOLBF, 0);
	pgss = getenv("PARLEY_BENCH_PGSS") != NULL &&
	       strcmp(getenv("PARLEY_BENCH_PGSS"), "1") == 0;
	load_avg(la, sizeof(la));
	printf("bench_import: load average at start %s\n", la);
	if (setup() != 0 || !up) {
		fprintf(stderr, "bench_import: could not set up\n");
		teardown();
		return 1;
	}
	o.source_url = legacy_url;
	o.tenant_slug = "bench-shop";
	o.admin_email = "owner@bench.example";
	o.admin_password = "Bench-import-pass-1";
	o.tenants_url = ht.addr;
	o.billing_url = hb.addr;
	o.agents_url = ha.addr;
	o.messaging_url = hm.addr;
	o.secret = SVCH_SECRET;
	o.batch = 1000;
	o.quiet = true;
	o.out = devnull;
	pgss_reset();
	c0 = cpu_self();
	p0 = cpu_pg();
	rc1 = import_run(&o, &r, err, sizeof(err));
	print_run("first run", rc1, err, &r, cpu_self() - c0, cpu_pg() - p0);
	pgss_print();
	import_report_fini(&r);
	err[0] = '\0';
	pgss_reset();
	c0 = cpu_self();
	p0 = cpu_pg();
	rc = import_run(&o, &r, err, sizeof(err));
	print_run("second run (imports nothing)", rc, err, &r, cpu_self() - c0,
	          cpu_pg() - p0);
	pgss_print();
	import_report_fini(&r);
	fclose(devnull);
	teardown();
	return rc1 != 0 ? rc1 : rc;
}
