// The legacy import end to end: a legacy database made by
// tests/fixtures/legacy at small sizes, the real tenants, billing, agents
// and messaging services (each its own database), and import_run called in
// process. Checks counts and checksums, a second run importing nothing,
// merged phones, rows changed after an import named in the next run's
// report, the dry run, bad input, and that an imported contact's next
// WhatsApp message lands in its imported conversation and is answered.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
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
#define PNID   "4455660001"
#define APPSEC "legacy-app-secret"

static pgh pg;
static svch ht, hb, ha, hm;
static fake_provider *fp;
static bool up;
static char env_buf[4][PGH_URL_MAX + 64];
static char legacy_url[PGH_URL_MAX];

#define NEED()                                                                 \
	do {                                                                   \
		if (!up)                                                       \
			skip();                                                \
	} while (0)

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
setup(void **state)
{
	(void)state;
	if (sodium_init() < 0)
		return -1;
	int rc = pgh_start(&pg);
	if (rc == -2)
		return -1;
	if (rc == -1)
		return 0;
	if (fake_provider_start(&fp) != 0)
		return -1;
	if (load_legacy("legacy",
	                "-v contacts=50 -v messages=2000 -v orders=60 "
	                "-v campaigns=4",
	                legacy_url) != 0)
		return -1;
	// Two more ways to write numbers of existing contacts: merged.
	if (pgh_exec_url(legacy_url,
	                 "INSERT INTO contacts (phone_number, name, thread_id) "
	                 "VALUES ('+1 (555) 000-0004', 'Dup Four', "
	                 "'thread-dup-4'), ('00 1555 000 0008', NULL, NULL);"
	                 "INSERT INTO messages (message_id, contact_id, "
	                 "direction, message_type, content_text, status, "
	                 "sent_at) SELECT 'wamid.dup-' || g, (SELECT id FROM "
	                 "contacts WHERE name = 'Dup Four'), 'incoming', "
	                 "'text', 'from the other number ' || g, 'received', "
	                 "now() - interval '1 hour' FROM generate_series(1, "
	                 "3) g;"
	                 "INSERT INTO checkpoints (thread_id, checkpoint_id, "
	                 "checkpoint) VALUES ('thread-nobody', 'c1', "
	                 "'{\"v\": 1}');") != 0)
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
teardown(void **state)
{
	(void)state;
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

static imp_opts
opts(const char *slug, const char *source)
{
	static FILE *devnull;
	imp_opts o = { 0 };

	if (devnull == NULL)
		devnull = fopen("/dev/null", "w");
	o.source_url = source;
	o.tenant_slug = slug;
	o.admin_email = "owner@legacy.example";
	o.admin_password = "Legacy-import-pass-1";
	o.tenants_url = ht.addr;
	o.billing_url = hb.addr;
	o.agents_url = ha.addr;
	o.messaging_url = hm.addr;
	o.secret = SVCH_SECRET;
	o.wa_phone_number_id = PNID;
	o.wa_access_token = "legacy-token";
	o.wa_app_secret = APPSEC;
	o.wa_verify_token = "legacy-verify";
	o.wa_api_base_url = fake_provider_url(fp);
	o.batch = 300;
	o.quiet = true;
	o.out = devnull;
	return o;
}

static char tenant_id[40], channel_id[40];

static long long
scalar(const char *url, const char *sql)
{
	PGconn *c = PQconnectdb(url);
	PGresult *r = PQexec(c, sql);
	long long v = -1;

	if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
		v = atoll(PQgetvalue(r, 0, 0));
	else
		fprintf(stderr, "scalar: %s\n", PQresultErrorMessage(r));
	PQclear(r);
	PQfinish(c);
	return v;
}

static void
test_full_import(void **state)
{
	imp_opts o;
	imp_report r;
	char err[1024] = "";
	const char *rep = "/tmp/parley-import-test-report.json";
	int rc;

	(void)state;
	NEED();
	o = opts("legacy-shop", legacy_url);
	o.report_path = rep;
	rc = import_run(&o, &r, err, sizeof(err));
	if (rc != 0)
		fprintf(stderr, "import: %s\n", err);
	for (size_t i = 0; i < r.n_mismatches; i++)
		fprintf(stderr, "mismatch: %s\n", r.mismatches[i]);
	assert_int_equal(rc, 0);
	assert_string_equal(err, "");
	snprintf(tenant_id, sizeof(tenant_id), "%s", r.tenant_id);
	snprintf(channel_id, sizeof(channel_id), "%s", r.channel_id);
	assert_true(r.tenant_created);
	// 52 legacy contacts + the system contact for the orphans.
	assert_int_equal(r.t[IMP_T_CONTACTS].source, 52);
	assert_int_equal(r.t[IMP_T_CONTACTS].parley, 53);
	assert_int_equal(r.t[IMP_T_MESSAGES].parley, 2003);
	assert_int_equal(r.t[IMP_T_MESSAGES].created, 2003);
	assert_int_equal(r.t[IMP_T_ORDERS].parley, 60);
	assert_int_equal(r.t[IMP_T_CAMPAIGNS].parley, 4);
	assert_true(r.t[IMP_T_RECIPIENTS].parley > 0);
	assert_true(r.t[IMP_T_CHECKPOINTS].parley > 100);
	for (int i = 0; i < IMP_TABLES; i++) {
		assert_int_equal(r.t[i].parley, r.t[i].expected);
		assert_string_equal(r.t[i].sha_source, r.t[i].sha_parley);
	}
	import_report_fini(&r);
	// The JSON report names the merges and the orphan thread.
	{
		FILE *f = fopen(rep, "r");
		char buf[1 << 16];
		size_t n;
		assert_non_null(f);
		n = fread(buf, 1, sizeof(buf) - 1, f);
		buf[n] = '\0';
		fclose(f);
		assert_non_null(strstr(buf, "\"merged_contacts\""));
		assert_non_null(strstr(buf, "+1 (555) 000-0004"));
		assert_non_null(strstr(buf, "00 1555 000 0008"));
		assert_non_null(strstr(buf, "thread-nobody"));
		unlink(rep);
	}
	// Merged: one contact, one conversation holding both histories.
	{
		char sql[512];
		snprintf(
		        sql, sizeof(sql),
		        "SELECT count(*) FROM messaging.contacts WHERE phone = "
		        "'+15550000004' AND tenant_id = '%s'",
		        tenant_id);
		assert_int_equal(scalar(hm.admin_url, sql), 1);
		snprintf(sql, sizeof(sql),
		         "SELECT count(*) FROM messaging.messages m JOIN "
		         "messaging.conversations c ON c.tenant_id = "
		         "m.tenant_id "
		         "AND c.id = m.conversation_id JOIN messaging.contacts "
		         "k "
		         "ON k.tenant_id = c.tenant_id AND k.id = c.contact_id "
		         "WHERE k.phone = '+15550000004' AND m.text LIKE 'from "
		         "the other number%%'");
		assert_int_equal(scalar(hm.admin_url, sql), 3);
		// Order totals in minor units: item 1 of order 1 is 2 x 6.25,
		// plus 1 x 2.50 = 1500 cents.
		snprintf(sql, sizeof(sql),
		         "SELECT sum(i.quantity * i.unit_price_minor) FROM "
		         "messaging.order_items i JOIN messaging.import_map im "
		         "ON im.tenant_id = i.tenant_id AND im.id = i.order_id "
		         "AND im.kind = 'order' WHERE im.legacy_id = '1'");
		assert_int_equal(scalar(hm.admin_url, sql), 1500);
	}
}

static void
test_second_run_imports_nothing(void **state)
{
	imp_opts o;
	imp_report r;
	char err[1024] = "";

	(void)state;
	NEED();
	o = opts("legacy-shop", legacy_url);
	assert_int_equal(import_run(&o, &r, err, sizeof(err)), 0);
	assert_false(r.tenant_created);
	assert_int_equal(r.n_mismatches, 0);
	for (int i = 0; i < IMP_TABLES; i++) {
		assert_int_equal(r.t[i].created, 0);
		assert_int_equal(r.t[i].parley, r.t[i].expected);
	}
	assert_int_equal(r.t[IMP_T_MESSAGES].existing, 2003);
	import_report_fini(&r);
}

// GetImportSummary's row listing (rows_of_table) of messaging and agents:
// pages in key order that cover the table, the page size capped, bad input
// refused.
static int
msg_rows(const char *table, const char *after, int limit,
         Parley__Messaging__V1__GetImportSummaryResponse **out)
{
	Parley__Messaging__V1__GetImportSummaryRequest in =
	        PARLEY__MESSAGING__V1__GET_IMPORT_SUMMARY_REQUEST__INIT;
	pl_principal svc = svch_service();

	in.tenant_id = tenant_id;
	in.rows_of_table = (char *)table;
	in.rows_after = (char *)after;
	in.rows_limit = limit;
	return svch_call(
	        &hm, "/parley.messaging.v1.Messaging/GetImportSummary", &svc,
	        &in.base,
	        &parley__messaging__v1__get_import_summary_response__descriptor,
	        (void **)out, NULL);
}

static int
ag_rows(const char *table, const char *after, int limit,
        Parley__Agents__V1__GetImportSummaryResponse **out)
{
	Parley__Agents__V1__GetImportSummaryRequest in =
	        PARLEY__AGENTS__V1__GET_IMPORT_SUMMARY_REQUEST__INIT;
	pl_principal svc = svch_service();

	in.tenant_id = tenant_id;
	in.rows_of_table = (char *)table;
	in.rows_after = (char *)after;
	in.rows_limit = limit;
	return svch_call(
	        &ha, "/parley.agents.v1.Agents/GetImportSummary", &svc,
	        &in.base,
	        &parley__agents__v1__get_import_summary_response__descriptor,
	        (void **)out, NULL);
}

static void
test_row_listing(void **state)
{
	Parley__Messaging__V1__GetImportSummaryResponse *mo = NULL;
	Parley__Agents__V1__GetImportSummaryResponse *ao = NULL;
	char after[1024] = "", last[1024] = "", sql[256], big[300];
	size_t total = 0;

	(void)state;
	NEED();
	assert_true(tenant_id[0] != '\0');
	// messages, 7 a page at first, then 500: every row once, in order.
	assert_int_equal(msg_rows("messages", "", 7, &mo), PL_OK);
	assert_int_equal(mo->n_rows, 7);
	assert_int_equal(mo->n_counts, 0);
	assert_string_equal(mo->rows_next, mo->rows[6]->key);
	for (;;) {
		assert_int_equal(msg_rows("messages", after, 500, &mo), PL_OK);
		for (size_t i = 0; i < mo->n_rows; i++) {
			assert_true(strcmp(mo->rows[i]->key, last) > 0);
			assert_int_equal(strlen(mo->rows[i]->sha256), 64);
			snprintf(last, sizeof(last), "%s", mo->rows[i]->key);
		}
		total += mo->n_rows;
		if (mo->rows_next[0] == '\0')
			break;
		snprintf(after, sizeof(after), "%s", mo->rows_next);
	}
	assert_int_equal(total, 2003);
	// A page past the cap is 5000 rows at most: here all of them.
	assert_int_equal(msg_rows("messages", "", 100000, &mo), PL_OK);
	assert_int_equal(mo->n_rows, 2003);
	assert_string_equal(mo->rows_next, "");
	// Bad input.
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	assert_int_equal(msg_rows("users", "", 0, &mo), PL_INVALID_ARGUMENT);
	assert_int_equal(msg_rows("checkpoints", "", 0, &mo),
	                 PL_INVALID_ARGUMENT);
	assert_int_equal(msg_rows("", "7", 0, &mo), PL_INVALID_ARGUMENT);
	assert_int_equal(msg_rows("", "", 10, &mo), PL_INVALID_ARGUMENT);
	assert_int_equal(msg_rows("orders", "", -1, &mo), PL_INVALID_ARGUMENT);
	assert_int_equal(msg_rows("orders", big, 0, &mo), PL_INVALID_ARGUMENT);
	// The summary itself is unchanged.
	assert_int_equal(msg_rows("", "", 0, &mo), PL_OK);
	assert_true(mo->n_checksums >= 6);
	assert_int_equal(mo->n_rows, 0);

	// agents: the checkpoints 50 a page.
	after[0] = last[0] = '\0';
	total = 0;
	for (;;) {
		assert_int_equal(ag_rows("checkpoints", after, 50, &ao), PL_OK);
		for (size_t i = 0; i < ao->n_rows; i++) {
			assert_true(strcmp(ao->rows[i]->key, last) > 0);
			assert_non_null(strchr(ao->rows[i]->key, '\x1f'));
			snprintf(last, sizeof(last), "%s", ao->rows[i]->key);
		}
		total += ao->n_rows;
		if (ao->rows_next[0] == '\0')
			break;
		snprintf(after, sizeof(after), "%s", ao->rows_next);
	}
	snprintf(sql, sizeof(sql),
	         "SELECT count(*) FROM agents.checkpoints WHERE tenant_id = "
	         "'%s'",
	         tenant_id);
	assert_int_equal(total, scalar(ha.admin_url, sql));
	assert_int_equal(ag_rows("checkpoint_writes", "", 0, &ao), PL_OK);
	assert_true(ao->n_rows > 0);
	assert_int_equal(ag_rows("messages", "", 0, &ao), PL_INVALID_ARGUMENT);
	assert_int_equal(ag_rows("", "a", 0, &ao), PL_INVALID_ARGUMENT);
	assert_int_equal(ag_rows("checkpoints", "", -5, &ao),
	                 PL_INVALID_ARGUMENT);
	pl_arena_reset(&hm.arena);
	pl_arena_reset(&ha.arena);
}

// One value of a one-row, one-column query into out ("" when none).
static void
text_of(const char *url, const char *sql, char *out, size_t len)
{
	PGconn *c = PQconnectdb(url);
	PGresult *r = PQexec(c, sql);

	out[0] = '\0';
	if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
		snprintf(out, len, "%s", PQgetvalue(r, 0, 0));
	else
		fprintf(stderr, "text_of: %s\n", PQresultErrorMessage(r));
	PQclear(r);
	PQfinish(c);
}

static const imp_bad_row *
find_bad(const imp_report *r, const char *table, const char *legacy)
{
	for (size_t i = 0; i < r->n_bad_rows; i++)
		if (strcmp(r->bad_rows[i].table, table) == 0 &&
		    strcmp(r->bad_rows[i].legacy_id, legacy) == 0)
			return &r->bad_rows[i];
	return NULL;
}

static bool
json_names(json_t *rows, const char *table, const char *legacy,
           const char *problem)
{
	size_t i;
	json_t *x;

	json_array_foreach(rows, i, x)
	{
		const char *t = json_string_value(json_object_get(x, "table"));
		const char *l =
		        json_string_value(json_object_get(x, "legacy_id"));
		const char *p =
		        json_string_value(json_object_get(x, "problem"));
		if (t && l && p && strcmp(t, table) == 0 &&
		    strcmp(l, legacy) == 0 && strcmp(p, problem) == 0)
			return true;
	}
	return false;
}

// Rows changed behind the importer's back after a good import: the next
// run's check fails and the report names exactly those rows, with what is
// wrong with each (issue 10: "a report that names the rows").
static void
test_mismatch_names_rows(void **state)
{
	static const struct {
		const char *table, *problem;
	} want[] = {
		{ "messages", IMP_DIFFERS }, // text changed
		{ "messages", IMP_EXTRA },   // a map row Parley made up
		{ "orders", IMP_DIFFERS },   // an item deleted
		{ "campaign_recipients", IMP_MISSING }, // the row deleted
		{ "checkpoints", IMP_DIFFERS },         // metadata changed
	};
	char ids[5][256], sql[1024], tenant[40], line[2048];
	const char *rep = "/tmp/parley-import-test-mismatch.json";
	const char *txt = "/tmp/parley-import-test-mismatch.txt";
	imp_opts o;
	imp_report r;
	char err[1024] = "";
	FILE *out;
	json_t *j;
	json_error_t je;

	(void)state;
	NEED();
	o = opts("tamper-shop", legacy_url);
	o.admin_email = "owner@tamper.example";
	// no credentials: a placeholder channel (legacy-shop has the number)
	o.wa_phone_number_id = o.wa_access_token = o.wa_app_secret = "";
	o.wa_verify_token = o.wa_api_base_url = "";
	assert_int_equal(import_run(&o, &r, err, sizeof(err)), 0);
	snprintf(tenant, sizeof(tenant), "%s", r.tenant_id);
	import_report_fini(&r);

	// A message whose text changes.
	snprintf(ids[0], sizeof(ids[0]), "7");
	snprintf(sql, sizeof(sql),
	         "UPDATE messaging.messages m SET text = 'tampered' FROM "
	         "messaging.import_map im WHERE im.tenant_id = '%s' AND "
	         "im.kind = 'message' AND im.legacy_id = '7' AND m.tenant_id "
	         "= im.tenant_id AND m.id = im.id",
	         tenant);
	assert_int_equal(pgh_exec_url(hm.admin_url, sql), 0);
	// A map row no legacy row has, on an imported message.
	snprintf(ids[1], sizeof(ids[1]), "zz-not-legacy");
	snprintf(sql, sizeof(sql),
	         "INSERT INTO messaging.import_map (tenant_id, kind, "
	         "legacy_id, id) SELECT tenant_id, kind, 'zz-not-legacy', id "
	         "FROM messaging.import_map WHERE tenant_id = '%s' AND kind = "
	         "'message' AND legacy_id = '8'",
	         tenant);
	assert_int_equal(pgh_exec_url(hm.admin_url, sql), 0);
	// Order 1's first item deleted (its total changes too).
	snprintf(ids[2], sizeof(ids[2]), "1");
	snprintf(sql, sizeof(sql),
	         "DELETE FROM messaging.order_items i USING "
	         "messaging.import_map im WHERE im.tenant_id = '%s' AND "
	         "im.kind = 'order' AND im.legacy_id = '1' AND i.tenant_id = "
	         "im.tenant_id AND i.order_id = im.id AND i.position = (SELECT "
	         "min(position) FROM messaging.order_items WHERE tenant_id = "
	         "im.tenant_id AND order_id = im.id)",
	         tenant);
	assert_int_equal(pgh_exec_url(hm.admin_url, sql), 0);
	// A recipient deleted (one that no merged subscriber shares); its map
	// row stays, so the rerun does not make it again.
	snprintf(sql, sizeof(sql),
	         "SELECT im.legacy_id FROM messaging.import_map im WHERE "
	         "im.tenant_id = '%s' AND im.kind = 'recipient' AND (SELECT "
	         "count(*) FROM messaging.import_map x WHERE x.tenant_id = "
	         "im.tenant_id AND x.kind = 'recipient' AND x.id = im.id) = 1 "
	         "ORDER BY im.legacy_id COLLATE \"C\" LIMIT 1",
	         tenant);
	text_of(hm.admin_url, sql, ids[3], sizeof(ids[3]));
	assert_true(ids[3][0] != '\0');
	snprintf(sql, sizeof(sql),
	         "DELETE FROM messaging.campaign_recipients r USING "
	         "messaging.import_map im WHERE im.tenant_id = '%s' AND "
	         "im.kind = 'recipient' AND im.legacy_id = '%s' AND "
	         "r.tenant_id = im.tenant_id AND r.id = im.id",
	         tenant, ids[3]);
	assert_int_equal(pgh_exec_url(hm.admin_url, sql), 0);
	// A checkpoint's metadata changed; the report names it by its legacy
	// thread, namespace and id.
	snprintf(sql, sizeof(sql),
	         "SELECT legacy_thread_id || '/' || checkpoint_ns || '/' || "
	         "checkpoint_id FROM agents.checkpoints WHERE tenant_id = '%s' "
	         "AND legacy_thread_id LIKE 'thread-%%' ORDER BY thread_id, "
	         "checkpoint_id LIMIT 1",
	         tenant);
	text_of(ha.admin_url, sql, ids[4], sizeof(ids[4]));
	assert_true(ids[4][0] != '\0');
	snprintf(sql, sizeof(sql),
	         "UPDATE agents.checkpoints SET metadata = '{\"tampered\": "
	         "true}' WHERE tenant_id = '%s' AND legacy_thread_id || '/' || "
	         "checkpoint_ns || '/' || checkpoint_id = '%s'",
	         tenant, ids[4]);
	assert_int_equal(pgh_exec_url(ha.admin_url, sql), 0);

	// The check again: a second run.
	out = fopen(txt, "w");
	assert_non_null(out);
	o.out = out;
	o.report_path = rep;
	err[0] = '\0';
	assert_int_equal(import_run(&o, &r, err, sizeof(err)), 2);
	fclose(out);
	for (size_t i = 0; i < r.n_bad_rows; i++)
		fprintf(stderr, "named: %s %s: %s\n", r.bad_rows[i].table,
		        r.bad_rows[i].legacy_id, r.bad_rows[i].problem);
	assert_int_equal(r.bad_rows_total, 5);
	assert_int_equal(r.n_bad_rows, 5);
	for (size_t i = 0; i < 5; i++) {
		const imp_bad_row *b = find_bad(&r, want[i].table, ids[i]);
		assert_non_null(b);
		assert_string_equal(b->problem, want[i].problem);
	}
	assert_int_equal(r.t[IMP_T_MESSAGES].rows_differ, 2);
	assert_int_equal(r.t[IMP_T_ORDERS].rows_differ, 1);
	assert_int_equal(r.t[IMP_T_RECIPIENTS].rows_differ, 1);
	assert_int_equal(r.t[IMP_T_CHECKPOINTS].rows_differ, 1);
	// Tables whose checksums match are not listed.
	assert_int_equal(r.t[IMP_T_CONTACTS].rows_differ, -1);
	assert_int_equal(r.t[IMP_T_BLOBS].rows_differ, -1);
	import_report_fini(&r);

	// The JSON report names the same rows.
	j = json_load_file(rep, 0, &je);
	assert_non_null(j);
	assert_false(json_is_true(json_object_get(j, "ok")));
	assert_int_equal(
	        json_integer_value(json_object_get(j, "mismatched_rows_total")),
	        5);
	assert_int_equal(json_array_size(json_object_get(j, "mismatched_rows")),
	                 5);
	for (size_t i = 0; i < 5; i++)
		assert_true(json_names(json_object_get(j, "mismatched_rows"),
		                       want[i].table, ids[i], want[i].problem));
	assert_int_equal(json_integer_value(json_object_get(
	                         json_object_get(json_object_get(j, "tables"),
	                                         "messages"),
	                         "mismatched_rows")),
	                 2);
	json_decref(j);
	unlink(rep);

	// And the terminal's report, one MISMATCH line per row.
	out = fopen(txt, "r");
	assert_non_null(out);
	{
		int found = 0;
		char wantl[5][2048];
		for (size_t i = 0; i < 5; i++)
			snprintf(wantl[i], sizeof(wantl[i]),
			         "MISMATCH: %s row %s: %s\n", want[i].table,
			         ids[i], want[i].problem);
		while (fgets(line, sizeof(line), out) != NULL)
			for (size_t i = 0; i < 5; i++)
				if (strcmp(line, wantl[i]) == 0)
					found++;
		assert_int_equal(found, 5);
	}
	fclose(out);
	unlink(txt);
}

static void
test_dry_run_writes_nothing(void **state)
{
	imp_opts o;
	imp_report r;
	char err[1024] = "";
	long long before =
	        scalar(hm.admin_url, "SELECT count(*) FROM messaging.messages");

	(void)state;
	NEED();
	o = opts("dry-shop", legacy_url);
	o.dry_run = true;
	assert_int_equal(import_run(&o, &r, err, sizeof(err)), 0);
	assert_true(r.dry_run);
	assert_int_equal(r.t[IMP_T_MESSAGES].expected, 2003);
	assert_int_equal(r.t[IMP_T_MESSAGES].parley, -1);
	assert_string_equal(r.tenant_id, "");
	import_report_fini(&r);
	assert_int_equal(scalar(ht.admin_url, "SELECT count(*) FROM "
	                                      "tenants.tenants WHERE slug = "
	                                      "'dry-shop'"),
	                 0);
	assert_int_equal(
	        scalar(hm.admin_url, "SELECT count(*) FROM messaging.messages"),
	        before);
}

static void
test_bad_input(void **state)
{
	imp_opts o;
	imp_report r;
	char err[1024] = "", url[PGH_URL_MAX];

	(void)state;
	NEED();
	o = opts("bad-shop", "postgresql://nobody@127.0.0.1:1/none");
	assert_int_equal(import_run(&o, &r, err, sizeof(err)), 1);
	assert_non_null(strstr(err, "could not connect to the source"));
	import_report_fini(&r);

	assert_int_equal(load_legacy("legacy_nocol",
	                             "-v contacts=5 -v messages=20 -v orders=3 "
	                             "-v campaigns=1",
	                             url),
	                 0);
	assert_int_equal(pgh_exec_url(url, "ALTER TABLE orders DROP COLUMN "
	                                   "order_details"),
	                 0);
	o = opts("bad-shop", url);
	err[0] = '\0';
	assert_int_equal(import_run(&o, &r, err, sizeof(err)), 1);
	assert_non_null(strstr(err, "\"orders\" has no column "
	                            "\"order_details\""));
	import_report_fini(&r);

	// jsonb kept as text, with one row that is not JSON.
	assert_int_equal(load_legacy("legacy_badjson",
	                             "-v contacts=5 -v messages=20 -v orders=3 "
	                             "-v campaigns=1",
	                             url),
	                 0);
	assert_int_equal(
	        pgh_exec_url(url, "ALTER TABLE orders ALTER COLUMN "
	                          "order_details TYPE text; UPDATE orders SET "
	                          "order_details = '{\"items\": [' WHERE id = "
	                          "2"),
	        0);
	o = opts("bad-shop", url);
	err[0] = '\0';
	assert_int_equal(import_run(&o, &r, err, sizeof(err)), 1);
	assert_non_null(strstr(err, "orders row id=2"));
	assert_non_null(strstr(err, "not valid JSON"));
	import_report_fini(&r);
	// Nothing half-written: the tenant was never made.
	assert_int_equal(scalar(ht.admin_url, "SELECT count(*) FROM "
	                                      "tenants.tenants WHERE slug = "
	                                      "'bad-shop'"),
	                 0);
}

// The imported contact writes again: the message joins its imported
// conversation and the default bot answers.
static void
test_imported_contact_writes_again(void **state)
{
	char body[1024], sig[72], sql[768];
	Parley__Messaging__V1__HandleWebhookRequest rq =
	        PARLEY__MESSAGING__V1__HANDLE_WEBHOOK_REQUEST__INIT;
	Parley__Messaging__V1__HttpHeader hd =
	        PARLEY__MESSAGING__V1__HTTP_HEADER__INIT;
	Parley__Messaging__V1__HttpHeader *hs[1] = { &hd };
	Parley__Messaging__V1__HandleWebhookResponse *out = NULL;
	pl_principal svc = svch_service();
	long long conv_before, n;

	(void)state;
	NEED();
	assert_true(tenant_id[0] != '\0');
	snprintf(sql, sizeof(sql),
	         "SELECT count(*) FROM messaging.conversations c JOIN "
	         "messaging.contacts k ON k.tenant_id = c.tenant_id AND k.id = "
	         "c.contact_id WHERE k.phone = '+15550000004' AND "
	         "c.tenant_id = '%s'",
	         tenant_id);
	conv_before = scalar(hm.admin_url, sql);
	assert_int_equal(conv_before, 1);
	snprintf(
	        body, sizeof(body),
	        "{\"object\":\"whatsapp_business_account\",\"entry\":[{\"id\":"
	        "\"1\",\"changes\":[{\"field\":\"messages\",\"value\":{"
	        "\"messaging_product\":\"whatsapp\",\"metadata\":{"
	        "\"display_phone_number\":\"1\",\"phone_number_id\":\"%s\"},"
	        "\"contacts\":[{\"profile\":{\"name\":\"Four\"},\"wa_id\":"
	        "\"15550000004\"}],\"messages\":[{\"from\":\"15550000004\","
	        "\"id\":\"wamid.after-import-1\",\"timestamp\":\"1700000000\","
	        "\"type\":\"text\",\"text\":{\"body\":\"hello again\"}}]}}]}]}",
	        PNID);
	fake_provider_sign(APPSEC, body, strlen(body), sig);
	rq.channel_id = channel_id;
	rq.channel_type = 1;
	rq.body.data = (uint8_t *)body;
	rq.body.len = strlen(body);
	hd.name = "X-Hub-Signature-256";
	hd.value = sig;
	rq.headers = hs;
	rq.n_headers = 1;
	assert_int_equal(
	        svch_call(
	                &hm, "/parley.messaging.v1.Messaging/HandleWebhook",
	                &svc, &rq.base,
	                &parley__messaging__v1__handle_webhook_response__descriptor,
	                (void **)&out, NULL),
	        PL_OK);
	// The message lands in the imported conversation, and a bot reply
	// follows it there.
	snprintf(sql, sizeof(sql),
	         "SELECT count(*) FROM messaging.messages m JOIN "
	         "messaging.import_map im ON im.tenant_id = m.tenant_id AND "
	         "im.kind = 'conversation' AND im.id = m.conversation_id WHERE "
	         "m.sender = 'bot' AND m.created_at > now() - interval '5 "
	         "minutes' AND m.conversation_id = (SELECT conversation_id "
	         "FROM messaging.messages WHERE provider_message_id = "
	         "'wamid.after-import-1')");
	n = 0;
	for (int i = 0; i < 300 && n < 1; i++) {
		n = scalar(hm.admin_url, sql);
		if (n < 1)
			usleep(50000);
	}
	assert_int_equal(n, 1);
	snprintf(sql, sizeof(sql),
	         "SELECT count(*) FROM messaging.conversations c JOIN "
	         "messaging.contacts k ON k.tenant_id = c.tenant_id AND k.id = "
	         "c.contact_id WHERE k.phone = '+15550000004' AND "
	         "c.tenant_id = '%s'",
	         tenant_id);
	assert_int_equal(scalar(hm.admin_url, sql), 1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_full_import),
		cmocka_unit_test(test_second_run_imports_nothing),
		cmocka_unit_test(test_row_listing),
		cmocka_unit_test(test_mismatch_names_rows),
		cmocka_unit_test(test_dry_run_writes_nothing),
		cmocka_unit_test(test_bad_input),
		cmocka_unit_test(test_imported_contact_writes_again),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
