// The legacy import killed with SIGKILL at many points and run again: the
// final state must be exactly that of an uninterrupted run. The services
// run in this process (each its own database, reachable over TCP); the
// parley-import binary runs as a child, into one tenant per kill point,
// and a reference run into a tenant of its own.
//
// Kill points: deterministic ones (PARLEY_IMPORT_TEST_CRASH_AFTER_WRITES=n:
// the importer SIGKILLs itself right after its n-th write call was
// answered; between two writes the services hold the same state, so these
// cover every state a kill can leave), spread over set-up, contacts,
// conversations, orders, campaigns and checkpoints; a chain of two kills
// before the run that finishes; and kills after N ms of wall time (a read,
// a call in flight).
//
// Compared per tenant with the reference: every imported table (rows as
// JSON without Parley's ids, foreign keys as legacy ids, so two tenants
// compare), the channel, agent and plan, and the report's numbers. A
// difference prints the rows that differ.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <sodium.h>

#include "import.h"
#include "messaging.h"
#include "pgh.h"
#include "svch.h"
#include "port.h"

extern const pl_service_def tenants_service_def;
extern const pl_service_def billing_service_def;
extern const pl_service_def agents_service_def;
extern char **environ;

#define FIXDIR PARLEY_SOURCE_DIR "/tests/fixtures/legacy/"
#define BIN    PARLEY_BINARY_DIR "/services/import/parley-import"
#define CRED                                                                   \
	"PARLEY_CREDENTIALS_KEY=MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
#define BATCH "20"

static pgh pg;
static svch ht, hb, ha, hm;
static bool up;
static char env_buf[4][PGH_URL_MAX + 64];
static char legacy_url[PGH_URL_MAX];
static char tcp[4][64]; // tenants, billing, agents, messaging

#define NEED()                                                                 \
	do {                                                                   \
		if (!up)                                                       \
			skip();                                                \
	} while (0)

static int
start(svch *h, const pl_service_def *def, const char *const *env, int i)
{
	snprintf(tcp[i], sizeof(tcp[i]), "tcp://127.0.0.1:%d", test_port());
	return svch_start_at(h, &pg, def, 4, env, tcp[i]);
}

static int
setup(void **state)
{
	char cmd[1024];

	(void)state;
	if (sodium_init() < 0)
		return -1;
	if (access(BIN, X_OK) != 0) {
		fprintf(stderr, "no %s: build parley-import first\n", BIN);
		return -1;
	}
	int rc = pgh_start(&pg);
	if (rc == -2)
		return -1;
	if (rc == -1)
		return 0;
	if (pgh_create_db(&pg, "legacy", legacy_url, sizeof(legacy_url)) != 0)
		return -1;
	snprintf(cmd, sizeof(cmd),
	         "psql -q -X -v ON_ERROR_STOP=1 -v contacts=30 -v messages=600 "
	         "-v orders=30 -v campaigns=3 -d '%s' -f %sschema.sql -f "
	         "%sgenerate.sql >/dev/null",
	         legacy_url, FIXDIR, FIXDIR);
	if (system(cmd) != 0)
		return -1;
	// A phone written another way (merged) with its own messages, and a
	// LangGraph thread of nobody.
	if (pgh_exec_url(legacy_url,
	                 "INSERT INTO contacts (phone_number, name, thread_id) "
	                 "VALUES ('+1 (555) 000-0004', 'Dup Four', "
	                 "'thread-dup-4');"
	                 "INSERT INTO messages (message_id, contact_id, "
	                 "direction, message_type, content_text, status, "
	                 "sent_at) SELECT 'wamid.dup-' || g, (SELECT id FROM "
	                 "contacts WHERE name = 'Dup Four'), 'incoming', "
	                 "'text', 'from the other number ' || g, 'received', "
	                 "timestamptz '2024-06-01' + g * interval '1 minute' "
	                 "FROM generate_series(1, 3) g;"
	                 "INSERT INTO checkpoints (thread_id, checkpoint_id, "
	                 "checkpoint) VALUES ('thread-nobody', 'c1', "
	                 "'{\"v\": 1}');") != 0)
		return -1;
	{
		static const char *const env[] = {
			"PARLEY_TENANTS_URL=", "PARLEY_ANALYTICS_URL=",
			"PARLEY_PAYMENT_WEBHOOK_SECRET=", NULL
		};
		if (start(&hb, &billing_service_def, env, 1) != 0)
			return -1;
	}
	snprintf(env_buf[0], sizeof(env_buf[0]), "PARLEY_BILLING_URL=%s",
	         hb.addr);
	{
		const char *const env[] = { CRED, env_buf[0],
			                    "PARLEY_ANALYTICS_URL=", NULL };
		if (start(&ha, &agents_service_def, env, 2) != 0)
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
		if (start(&ht, &tenants_service_def, env, 0) != 0)
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
		if (start(&hm, &messaging_service_def, env, 3) != 0)
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
	pgh_stop(&pg);
	return 0;
}

static double
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void
report_path(const char *slug, char *out, size_t len)
{
	snprintf(out, len, "/tmp/parley-import-kill-%d-%s.json", (int)getpid(),
	         slug);
}

// Runs parley-import into tenant slug. crash_after > 0: the importer kills
// itself after that many writes; kill_ms > 0: this test kills it after that
// many ms. Returns the exit code, or 128 + the signal that ended it.
static int
run_import(const char *slug, long crash_after, double kill_ms, double *took)
{
	char rep[256], ca[64], email[96];
	double t0 = now_ms();
	int status = 0;
	pid_t pid;

	report_path(slug, rep, sizeof(rep));
	snprintf(email, sizeof(email), "owner@%s.example", slug);
	snprintf(ca, sizeof(ca), "PARLEY_IMPORT_TEST_CRASH_AFTER_WRITES=%ld",
	         crash_after);
	// The child's environment, made before fork (the services' threads
	// may hold malloc's lock): this one's, the secret and the hook.
	size_t ne = 0;
	while (environ[ne] != NULL)
		ne++;
	char **envp = calloc(ne + 3, sizeof(char *));
	size_t k = 0;
	if (envp == NULL)
		return -1;
	for (size_t i = 0; i < ne; i++)
		if (strncmp(environ[i], "PARLEY_IMPORT_", 14) != 0 &&
		    strncmp(environ[i], "PARLEY_SERVICE_SECRET=", 22) != 0)
			envp[k++] = environ[i];
	envp[k++] = "PARLEY_SERVICE_SECRET=" SVCH_SECRET;
	if (crash_after > 0)
		envp[k++] = ca;
	envp[k] = NULL;
	pid = fork();
	if (pid < 0) {
		free(envp);
		return -1;
	}
	if (pid == 0) {
		const char *argv[] = {
			BIN,
			"legacy",
			"--source",
			legacy_url,
			"--tenant",
			slug,
			"--admin-email",
			email,
			"--admin-password",
			"Kill-import-pass-1",
			"--tenants-url",
			tcp[0],
			"--billing-url",
			tcp[1],
			"--agents-url",
			tcp[2],
			"--messaging-url",
			tcp[3],
			"--batch",
			BATCH,
			"--quiet",
			"--report",
			rep,
			NULL,
		};
		int fd = open("/dev/null", O_WRONLY);
		if (fd >= 0) {
			dup2(fd, STDOUT_FILENO);
			close(fd);
		}
		execve(BIN, (char *const *)argv, envp);
		_exit(127);
	}
	free(envp);
	if (kill_ms > 0) {
		while (waitpid(pid, &status, WNOHANG) == 0) {
			if (now_ms() - t0 >= kill_ms) {
				kill(pid, SIGKILL);
				waitpid(pid, &status, 0);
				break;
			}
			usleep(2000);
		}
	} else {
		waitpid(pid, &status, 0);
	}
	if (took)
		*took = now_ms() - t0;
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	return 128 + WTERMSIG(status);
}

static json_t *
load_report(const char *slug)
{
	char rep[256];
	json_error_t e;
	json_t *j;

	report_path(slug, rep, sizeof(rep));
	j = json_load_file(rep, 0, &e);
	if (j == NULL)
		fprintf(stderr, "report %s: %s\n", rep, e.text);
	unlink(rep);
	return j;
}

// ---------------------------------------------------------------------------
// The state of a tenant, as text that does not depend on Parley's ids.

// Each query takes the tenant id as $1 and yields one row per Parley row
// (one text column), in no particular order; the dump sorts them.
typedef struct dump_q {
	const char *table;
	int db; // 0 tenants, 1 billing, 2 agents, 3 messaging
	const char *sql;
} dump_q;

#define LID                                                                    \
	"WITH lid AS (SELECT kind, id, min(legacy_id COLLATE \"C\") AS l "     \
	"FROM messaging.import_map WHERE tenant_id = $1 GROUP BY kind, id) "

static const dump_q dumps[] = {
	{ "channels", 0,
	  "SELECT concat_ws('|', type, name, status, agent_id IS NOT NULL, "
	  "disabled_reason, length(phone_number_id)) FROM "
	  "tenants.channel_integrations WHERE tenant_id = $1" },
	{ "plan", 1,
	  "SELECT concat_ws('|', p.code, s.status) FROM billing.subscriptions "
	  "s JOIN billing.plans p ON p.id = s.plan_id WHERE s.tenant_id = $1" },
	{ "agents", 2,
	  "SELECT concat_ws('|', name, status) FROM agents.agents WHERE "
	  "tenant_id = $1" },
	{ "checkpoints", 2,
	  "SELECT (to_jsonb(c) - '{tenant_id,thread_id,session_id,created_at}'"
	  "::text[] || jsonb_build_object('session', session_id IS NOT "
	  "NULL))::text FROM agents.checkpoints c WHERE tenant_id = $1" },
	{ "checkpoint_blobs", 2,
	  "WITH t AS (SELECT DISTINCT thread_id, legacy_thread_id FROM "
	  "agents.checkpoints WHERE tenant_id = $1) SELECT (to_jsonb(b) - "
	  "'{tenant_id,thread_id}'::text[] || jsonb_build_object('thread', "
	  "coalesce(t.legacy_thread_id, b.thread_id)))::text FROM "
	  "agents.checkpoint_blobs b LEFT JOIN t ON t.thread_id = b.thread_id "
	  "WHERE b.tenant_id = $1" },
	{ "checkpoint_writes", 2,
	  "WITH t AS (SELECT DISTINCT thread_id, legacy_thread_id FROM "
	  "agents.checkpoints WHERE tenant_id = $1) SELECT (to_jsonb(w) - "
	  "'{tenant_id,thread_id}'::text[] || jsonb_build_object('thread', "
	  "coalesce(t.legacy_thread_id, w.thread_id)))::text FROM "
	  "agents.checkpoint_writes w LEFT JOIN t ON t.thread_id = w.thread_id "
	  "WHERE w.tenant_id = $1" },
	{ "contacts", 3,
	  LID "SELECT (to_jsonb(k) - '{tenant_id,id,channel_id,updated_at}'"
	      "::text[] - CASE WHEN l.l = 'system' THEN 'created_at' ELSE '' "
	      "END || jsonb_build_object('lid', l.l))::text FROM "
	      "messaging.contacts k LEFT JOIN lid l ON l.kind = 'contact' AND "
	      "l.id = k.id WHERE k.tenant_id = $1" },
	{ "conversations", 3,
	  LID
	  "SELECT (to_jsonb(c) - "
	  "'{tenant_id,id,contact_id,channel_id,agent_id,updated_at}'::text[]"
	  " || jsonb_build_object('lid', l.l, 'contact', k.l))::text FROM "
	  "messaging.conversations c LEFT JOIN lid l ON l.kind = "
	  "'conversation' AND l.id = c.id LEFT JOIN lid k ON k.kind = "
	  "'contact' AND k.id = c.contact_id WHERE c.tenant_id = $1" },
	{ "messages", 3,
	  LID
	  "SELECT (to_jsonb(m) - "
	  "'{tenant_id,id,conversation_id,channel_id,agent_id}'::text[] || "
	  "jsonb_build_object('lid', l.l, 'conv', c.l, 'agent', agent_id IS "
	  "NOT NULL))::text FROM messaging.messages m LEFT JOIN lid l ON "
	  "l.kind = 'message' AND l.id = m.id LEFT JOIN lid c ON c.kind = "
	  "'conversation' AND c.id = m.conversation_id WHERE m.tenant_id = "
	  "$1" },
	{ "orders", 3,
	  LID
	  "SELECT (to_jsonb(o) - "
	  "'{tenant_id,id,contact_id,conversation_id,message_id}'::text[] || "
	  "jsonb_build_object('lid', l.l, 'contact', k.l, 'conv', c.l, "
	  "'msg', m.l))::text FROM messaging.orders o LEFT JOIN lid l ON "
	  "l.kind = 'order' AND l.id = o.id LEFT JOIN lid k ON k.kind = "
	  "'contact' AND k.id = o.contact_id LEFT JOIN lid c ON c.kind = "
	  "'conversation' AND c.id = o.conversation_id LEFT JOIN lid m ON "
	  "m.kind = 'message' AND m.id = o.message_id WHERE o.tenant_id = "
	  "$1" },
	{ "order_items", 3,
	  LID
	  "SELECT (to_jsonb(i) - '{tenant_id,order_id}'::text[] || "
	  "jsonb_build_object('order', l.l))::text FROM messaging.order_items "
	  "i LEFT JOIN lid l ON l.kind = 'order' AND l.id = i.order_id WHERE "
	  "i.tenant_id = $1" },
	{ "templates", 3,
	  "SELECT (to_jsonb(t) - "
	  "'{tenant_id,id,channel_id,created_at,updated_at}'::text[])::text "
	  "FROM messaging.templates t WHERE tenant_id = $1" },
	{ "campaigns", 3,
	  LID
	  "SELECT (to_jsonb(c) - "
	  "'{tenant_id,id,channel_id,template_id,updated_at}'::text[] || "
	  "jsonb_build_object('lid', l.l, 'template', t.name))::text FROM "
	  "messaging.campaigns c LEFT JOIN lid l ON l.kind = 'campaign' AND "
	  "l.id = c.id LEFT JOIN messaging.templates t ON t.tenant_id = "
	  "c.tenant_id AND t.id = c.template_id WHERE c.tenant_id = $1" },
	{ "campaign_recipients", 3,
	  LID
	  "SELECT (to_jsonb(r) - "
	  "'{tenant_id,id,campaign_id,contact_id,updated_at}'::text[] || "
	  "jsonb_build_object('lid', l.l, 'campaign', c.l, 'contact', "
	  "k.l))::text FROM messaging.campaign_recipients r LEFT JOIN lid l "
	  "ON l.kind = 'recipient' AND l.id = r.id LEFT JOIN lid c ON c.kind "
	  "= 'campaign' AND c.id = r.campaign_id LEFT JOIN lid k ON k.kind = "
	  "'contact' AND k.id = r.contact_id WHERE r.tenant_id = $1" },
	{ "import_map", 3,
	  LID
	  "SELECT concat_ws('|', im.kind, im.legacy_id, im.raw, "
	  "im.details::text, l.l) FROM messaging.import_map im LEFT JOIN lid "
	  "l ON l.kind = im.kind AND l.id = im.id WHERE im.tenant_id = $1" },
};
#define N_DUMPS (sizeof(dumps) / sizeof(dumps[0]))

static const char *
db_url(int db)
{
	return db == 0   ? ht.admin_url
	       : db == 1 ? hb.admin_url
	       : db == 2 ? ha.admin_url
	                 : hm.admin_url;
}

// The rows of one query, sorted, one a line (malloc'd), or NULL.
static char *
dump_one(const dump_q *d, const char *tenant, long *rows)
{
	char sql[4096];
	const char *p[1] = { tenant };
	PGconn *c = PQconnectdb(db_url(d->db));
	PGresult *r;
	char *out = NULL;

	snprintf(sql, sizeof(sql),
	         "SELECT count(*), coalesce(string_agg(x, E'\\n' ORDER BY x "
	         "COLLATE \"C\"), '') FROM (%s) AS s(x)",
	         d->sql);
	r = PQexecParams(c, sql, 1, NULL, p, NULL, NULL, 0);
	if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) {
		*rows = atol(PQgetvalue(r, 0, 0));
		out = strdup(PQgetvalue(r, 0, 1));
	} else {
		fprintf(stderr, "dump %s: %s\n", d->table,
		        PQresultErrorMessage(r));
	}
	PQclear(r);
	PQfinish(c);
	return out;
}

static void
tenant_of(const char *slug, char out[40])
{
	char sql[256];
	PGconn *c = PQconnectdb(ht.admin_url);
	PGresult *r;

	snprintf(sql, sizeof(sql),
	         "SELECT id FROM tenants.tenants WHERE slug = '%s'", slug);
	r = PQexec(c, sql);
	out[0] = '\0';
	if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
		snprintf(out, 40, "%s", PQgetvalue(r, 0, 0));
	PQclear(r);
	PQfinish(c);
}

// Prints up to 5 lines of a that are not in b (both sorted the same way).
static void
print_missing(const char *table, const char *what, const char *a, const char *b)
{
	int shown = 0;
	const char *p = a;

	while (*p && shown < 5) {
		const char *e = strchr(p, '\n');
		size_t n = e ? (size_t)(e - p) : strlen(p);
		const char *q = b;
		bool found = false;
		while (*q && !found) {
			const char *f = strchr(q, '\n');
			size_t m = f ? (size_t)(f - q) : strlen(q);
			found = m == n && memcmp(p, q, n) == 0;
			q = f ? f + 1 : q + m;
		}
		if (!found) {
			fprintf(stderr, "  %s %s: %.*s\n", table, what,
			        (int)(n > 400 ? 400 : n), p);
			shown++;
		}
		p = e ? e + 1 : p + n;
	}
}

// Compares tenant slug with the reference, table by table; prints the
// tables and rows that differ. Returns the number of tables that differ.
static int
compare_state(const char *ref_slug, const char *slug)
{
	char ta[40], tb[40];
	int bad = 0;

	tenant_of(ref_slug, ta);
	tenant_of(slug, tb);
	if (!ta[0] || !tb[0]) {
		fprintf(stderr, "no tenant %s or %s\n", ref_slug, slug);
		return 1;
	}
	for (size_t i = 0; i < N_DUMPS; i++) {
		long na = -1, nb = -1;
		char *a = dump_one(&dumps[i], ta, &na);
		char *b = dump_one(&dumps[i], tb, &nb);
		if (a == NULL || b == NULL || strcmp(a, b) != 0) {
			fprintf(stderr,
			        "%s: %s differs from the uninterrupted run "
			        "(%ld rows vs %ld)\n",
			        dumps[i].table, slug, nb, na);
			if (a && b) {
				print_missing(dumps[i].table,
				              "only in the "
				              "reference",
				              a, b);
				print_missing(dumps[i].table,
				              "only after "
				              "resuming",
				              b, a);
			}
			bad++;
		} else if (na == 0 &&
		           strcmp(dumps[i].table, "import_map") == 0) {
			fprintf(stderr, "%s: nothing imported\n", slug);
			bad++;
		}
		free(a);
		free(b);
	}
	return bad;
}

// The report's numbers that must not depend on how the import got there.
static int
compare_reports(json_t *ref, json_t *got, const char *slug)
{
	static const char *const same[] = { "merged_contacts",
		                            "messages_without_contact",
		                            "threads_without_contact",
		                            "problems",
		                            "statuses",
		                            "mismatches",
		                            "ok" };
	static const char *const fields[] = { "legacy", "expected", "parley" };
	const char *name;
	json_t *t;
	int bad = 0;

	for (size_t i = 0; i < sizeof(same) / sizeof(same[0]); i++)
		if (!json_equal(json_object_get(ref, same[i]),
		                json_object_get(got, same[i]))) {
			char *a = json_dumps(json_object_get(ref, same[i]), 0);
			char *b = json_dumps(json_object_get(got, same[i]), 0);
			fprintf(stderr, "report %s: %s is %.300s, not %.300s\n",
			        slug, same[i], b ? b : "?", a ? a : "?");
			free(a);
			free(b);
			bad++;
		}
	json_object_foreach(json_object_get(ref, "tables"), name, t)
	{
		json_t *u =
		        json_object_get(json_object_get(got, "tables"), name);
		json_int_t created =
		        json_integer_value(json_object_get(u, "created"));
		json_int_t existing =
		        json_integer_value(json_object_get(u, "existing"));
		for (size_t k = 0; k < 3; k++)
			if (!json_equal(json_object_get(t, fields[k]),
			                json_object_get(u, fields[k]))) {
				fprintf(stderr, "report %s: %s.%s differs\n",
				        slug, name, fields[k]);
				bad++;
			}
		// Within one run: what it made plus what it found covers
		// every row, and the checksums agree.
		if (created + existing < json_integer_value(json_object_get(
		                                 t, "expected")) &&
		    strcmp(name, "conversations") != 0) {
			fprintf(stderr,
			        "report %s: %s created %lld + existing %lld "
			        "< expected\n",
			        slug, name, (long long)created,
			        (long long)existing);
			bad++;
		}
		if (!json_equal(json_object_get(u, "sha256_legacy"),
		                json_object_get(u, "sha256_parley"))) {
			fprintf(stderr, "report %s: %s checksums differ\n",
			        slug, name);
			bad++;
		}
		// Tables keyed by legacy ids hash the same in every tenant
		// (the agents' tables hold conversation ids).
		if (strncmp(name, "checkpoint", 10) != 0 &&
		    !json_equal(json_object_get(t, "sha256_parley"),
		                json_object_get(u, "sha256_parley"))) {
			fprintf(stderr,
			        "report %s: %s sha256 differs from "
			        "the uninterrupted run\n",
			        slug, name);
			bad++;
		}
	}
	return bad;
}

static json_t *ref_report;
static long ref_writes;
static double ref_ms;

static void
test_reference_run(void **state)
{
	(void)state;
	NEED();
	assert_int_equal(run_import("ref", 0, 0, &ref_ms), 0);
	ref_report = load_report("ref");
	assert_non_null(ref_report);
	assert_true(json_is_true(json_object_get(ref_report, "ok")));
	ref_writes = (long)json_integer_value(
	        json_object_get(ref_report, "rpc_writes"));
	// 6 set-up writes, then at least contacts, a few conversation
	// batches, orders, campaigns and checkpoints.
	assert_true(ref_writes > 15);
	{
		char *ph = json_dumps(json_object_get(ref_report, "phases"),
		                      JSON_COMPACT | JSON_REAL_PRECISION(3));
		fprintf(stderr, "reference run: %.0f ms, %ld writes, %s\n",
		        ref_ms, ref_writes, ph ? ph : "");
		free(ph);
	}
}

// Kills at each point in chain (writes; negative: -ms of wall time), then
// runs to the end; the result must equal the reference.
static void
kill_and_resume(const char *slug, const long *chain, size_t n)
{
	json_t *got;
	int rc;

	for (size_t i = 0; i < n; i++) {
		rc = chain[i] > 0
		             ? run_import(slug, chain[i], 0, NULL)
		             : run_import(slug, 0, (double)-chain[i], NULL);
		// Killed (or, for a timed kill, possibly done already).
		if (rc != 128 + SIGKILL && !(chain[i] < 0 && rc == 0)) {
			fprintf(stderr, "%s: run %zu ended with %d\n", slug, i,
			        rc);
			fail();
		}
		{
			char rep[256];
			report_path(slug, rep, sizeof(rep));
			unlink(rep);
		}
	}
	rc = run_import(slug, 0, 0, NULL);
	assert_int_equal(rc, 0);
	got = load_report(slug);
	assert_non_null(got);
	assert_int_equal(compare_reports(ref_report, got, slug), 0);
	json_decref(got);
	assert_int_equal(compare_state("ref", slug), 0);
}

static void
test_kill_in_setup(void **state)
{
	// After CreateChannel, before DisableChannel: the placeholder
	// channel must end disabled all the same.
	static const long a[] = { 5 };

	(void)state;
	NEED();
	assert_non_null(ref_report);
	kill_and_resume("kill-channel", a, 1);
}

static void
test_kill_while_writing(void **state)
{
	char slug[32];

	(void)state;
	NEED();
	assert_non_null(ref_report);
	// The first contacts batch, then spread over the rest: conversations
	// and messages, orders beside campaigns, checkpoints; the last write.
	const long points[] = { 7, 8 + (ref_writes - 8) / 4,
		                8 + 2 * (ref_writes - 8) / 3, ref_writes - 1 };
	for (size_t i = 0; i < sizeof(points) / sizeof(points[0]); i++) {
		snprintf(slug, sizeof(slug), "kill-w%ld", points[i]);
		kill_and_resume(slug, &points[i], 1);
	}
}

static void
test_kill_twice(void **state)
{
	long chain[2];

	(void)state;
	NEED();
	assert_non_null(ref_report);
	// Killed right after SignUp, resumed and killed again among the
	// messages, then finished.
	chain[0] = 1;
	chain[1] = 5 + (ref_writes - 5) / 2;
	kill_and_resume("kill-twice", chain, 2);
}

static void
test_kill_after_ms(void **state)
{
	long chain[1];

	(void)state;
	NEED();
	assert_non_null(ref_report);
	// Wherever the importer is after a third and two thirds of the
	// reference's time (reading, a call in flight, between calls).
	chain[0] = -(long)(ref_ms / 3);
	kill_and_resume("kill-ms1", chain, 1);
	chain[0] = -(long)(2 * ref_ms / 3);
	kill_and_resume("kill-ms2", chain, 1);
}

static void
test_rerun_imports_nothing(void **state)
{
	json_t *got, *t;
	const char *name;

	(void)state;
	NEED();
	assert_non_null(ref_report);
	assert_int_equal(run_import("kill-twice", 0, 0, NULL), 0);
	got = load_report("kill-twice");
	assert_non_null(got);
	json_object_foreach(json_object_get(got, "tables"), name, t)
	{
		if (json_integer_value(json_object_get(t, "created")) != 0)
			fprintf(stderr, "%s: created %lld on a rerun\n", name,
			        (long long)json_integer_value(
			                json_object_get(t, "created")));
		assert_int_equal(
		        json_integer_value(json_object_get(t, "created")), 0);
	}
	json_decref(got);
	assert_int_equal(compare_state("ref", "kill-twice"), 0);
	json_decref(ref_report);
	ref_report = NULL;
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_reference_run),
		cmocka_unit_test(test_kill_in_setup),
		cmocka_unit_test(test_kill_while_writing),
		cmocka_unit_test(test_kill_twice),
		cmocka_unit_test(test_kill_after_ms),
		cmocka_unit_test(test_rerun_imports_nothing),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
