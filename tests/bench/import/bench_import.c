// Legacy import benchmark: the generator's default sizes (1,000 contacts,
// 100,000 messages, 5,000 orders, 50 campaigns and their subscribers, the
// LangGraph tables) into the real services (in process, each its own
// database), timed per table. Target on 2 cores: <= 60 s in all.
//   build-rel/tests/bench/import/bench_import
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

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
			"PARLEY_MESSAGING_POLL=20ms",
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

int
main(void)
{
	imp_opts o = { 0 };
	imp_report r;
	char err[1024] = "";
	FILE *devnull = fopen("/dev/null", "w");
	int rc;

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
	o.out = devnull;
	rc = import_run(&o, &r, err, sizeof(err));
	printf("first run: exit %d%s%s, %.1f s in all (target <= 60 s)\n", rc,
	       err[0] ? ": " : "", err, r.seconds);
	printf("%-20s %9s %9s %8s %10s\n", "table", "rows", "created",
	       "seconds", "rows/s");
	for (int i = 0; i < IMP_TABLES; i++)
		printf("%-20s %9lld %9lld %8.2f %10.0f\n", r.t[i].name,
		       (long long)r.t[i].parley, (long long)r.t[i].created,
		       r.t[i].seconds,
		       r.t[i].seconds > 0
		               ? (double)r.t[i].created / r.t[i].seconds
		               : 0);
	for (size_t i = 0; i < r.n_mismatches; i++)
		printf("mismatch: %s\n", r.mismatches[i]);
	import_report_fini(&r);
	rc = import_run(&o, &r, err, sizeof(err));
	printf("second run (imports nothing): exit %d, %.1f s\n", rc,
	       r.seconds);
	import_report_fini(&r);
	fclose(devnull);
	teardown();
	return rc;
}
