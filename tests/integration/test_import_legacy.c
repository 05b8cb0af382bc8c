// The legacy import end to end: a legacy database made by
// tests/fixtures/legacy at small sizes, the real tenants, billing, agents
// and messaging services (each its own database), and import_run called in
// process. Checks counts and checksums, a second run importing nothing,
// merged phones, the dry run, bad input, and that an imported contact's
// next WhatsApp message lands in its imported conversation and is answered.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
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
	char body[1024], sig[80], hex[65], sql[768];
	unsigned char mac[32];
	crypto_auth_hmacsha256_state st;
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
	         "c.contact_id WHERE k.phone = '+15550000004'");
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
	crypto_auth_hmacsha256_init(&st, (const unsigned char *)APPSEC,
	                            strlen(APPSEC));
	crypto_auth_hmacsha256_update(&st, (const unsigned char *)body,
	                              strlen(body));
	crypto_auth_hmacsha256_final(&st, mac);
	sodium_bin2hex(hex, sizeof(hex), mac, 32);
	snprintf(sig, sizeof(sig), "sha256=%s", hex);
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
	         "c.contact_id WHERE k.phone = '+15550000004'");
	assert_int_equal(scalar(hm.admin_url, sql), 1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_full_import),
		cmocka_unit_test(test_second_run_imports_nothing),
		cmocka_unit_test(test_dry_run_writes_nothing),
		cmocka_unit_test(test_bad_input),
		cmocka_unit_test(test_imported_contact_writes_again),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
