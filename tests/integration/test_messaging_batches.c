// The message path's set-based batch functions against their item-by-item
// twins, on a real PostgreSQL: messaging.ingest_batch (019) must answer and
// write exactly what ingest_batch_items (005's loop) does. Each batch runs
// on tenant A through ingest_batch and on tenant B through
// ingest_batch_items, with the same items (the same new row ids: the keys
// are (tenant, id)); the answers and every row of both tenants (contacts,
// conversations, messages, events, early statuses, follow-ups) are then
// compared. The batches are random over a few senders (new and known
// contacts, names that change, business-scoped ids, closed conversations,
// duplicates, keywords, statuses) of one to eight items, so both the
// one-statement path (three messages or more) and its fallbacks run; the
// test counts which ran and requires both.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>
#include <libpq-fe.h>

#include "messaging.h"
#include "pl/id.h"
#include "pgh.h"
#include "svch.h"

#define TA  "0190c000-0000-7000-8000-0000000000a1"
#define TB  "0190c000-0000-7000-8000-0000000000b1"
#define CHA "0190c000-0000-7000-8000-0000000000a2"
#define CHB "0190c000-0000-7000-8000-0000000000b2"
#define AG  "0190c000-0000-7000-8000-0000000000a9"
// The seed contact's conversation, with outbound messages out0..out3.
#define SEED_CT "0190c000-0000-7000-8000-000000000c01"
#define SEED_CV "0190c000-0000-7000-8000-000000000c02"

#define SENDERS 12
#define ROUNDS  60

static pgh pg;
static svch h;
static PGconn *db;
static bool up;

static const char *const env[] = {
	"PARLEY_TENANTS_URL=inproc://batches-none",
	"PARLEY_BILLING_URL=inproc://batches-none",
	"PARLEY_SERVICE_SECRET=" SVCH_SECRET,
	NULL,
};

static bool
exec_ok(const char *sql)
{
	PGresult *r = PQexec(db, sql);
	bool ok = PQresultStatus(r) == PGRES_COMMAND_OK ||
	          PQresultStatus(r) == PGRES_TUPLES_OK;
	if (!ok)
		print_error("%s: %s", sql, PQerrorMessage(db));
	PQclear(r);
	return ok;
}

// One text value of a one-parameter query (malloc'd; NULL on error).
static char *
query1(const char *sql, const char *arg)
{
	PGresult *r =
	        PQexecParams(db, sql, arg ? 1 : 0, NULL, &arg, NULL, NULL, 0);
	char *v = NULL;
	if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
		v = strdup(PQgetisnull(r, 0, 0) ? "" : PQgetvalue(r, 0, 0));
	else
		print_error("%s: %s", sql, PQerrorMessage(db));
	PQclear(r);
	return v;
}

static const char seed_sql[] =
        "INSERT INTO messaging.contacts (tenant_id, id, channel_id, "
        "external_id, external_id_kind, name) VALUES ($1, '" SEED_CT
        "', $2, 'seed', 'phone', 'Seed');"
        "INSERT INTO messaging.conversations (tenant_id, id, contact_id, "
        "channel_id) VALUES ($1, '" SEED_CV "', '" SEED_CT "', $2);"
        "INSERT INTO messaging.messages (tenant_id, id, conversation_id, "
        "channel_id, direction, sender, type, text, provider_message_id, "
        "status, sent_at) SELECT $1, ('0190c000-0000-7000-8000-00000000d00' "
        "|| g)::uuid, '" SEED_CV "', $2, 'outbound', 'bot', 'text', 'hi', "
        "'out' || g, 'sent', now() FROM generate_series(0, 3) g;";

static int
setup(void **state)
{
	(void)state;
	int rc = pgh_start(&pg);
	if (rc == -2)
		return -1;
	if (rc == -1)
		return 0;
	if (svch_start(&h, &pg, &messaging_service_def, 2, env) != 0)
		return -1;
	// As the superuser, to count the functions a transaction ran
	// (track_functions), then as the service's role: row-level security
	// applies as in the service.
	db = PQconnectdb(h.admin_url);
	if (PQstatus(db) != CONNECTION_OK ||
	    !exec_ok("SET track_functions = 'pl'") ||
	    !exec_ok("SET ROLE parley_messaging") ||
	    !exec_ok("SELECT set_config('parley.tenant_id', '*', false)"))
		return -1;
	for (int i = 0; i < 2; i++) {
		char sql[sizeof(seed_sql) + 512], *p = sql;
		const char *t = i == 0 ? TA : TB, *ch = i == 0 ? CHA : CHB;
		// Parameters do not reach a multi-statement string: spliced
		// (constants of this file).
		for (const char *s = seed_sql; *s; s++) {
			if (s[0] == '$' && (s[1] == '1' || s[1] == '2')) {
				p += sprintf(p, "'%s'", s[1] == '1' ? t : ch);
				s++;
			} else {
				*p++ = *s;
			}
		}
		*p = '\0';
		if (!exec_ok(sql))
			return -1;
	}
	up = true;
	return 0;
}

static int
teardown(void **state)
{
	(void)state;
	if (db != NULL)
		PQfinish(db);
	if (up)
		svch_stop(&h);
	if (pg.running)
		pgh_stop(&pg);
	return 0;
}

// Every row of one tenant that the batch functions write, as text without
// the tenant, the channel and the times taken from now().
static const char dump_sql[] =
        "SELECT concat_ws(E'\\n',"
        " (SELECT string_agg(format('k %s|%s|%s|%s|%s|%s|%s|%s|%s', id, "
        "   external_id, external_id_kind, phone, phone_raw, "
        "   business_user_id, parent_user_id, name, profile), E'\\n' "
        "   ORDER BY id) FROM messaging.contacts WHERE tenant_id = $1),"
        " (SELECT string_agg(format('c %s|%s|%s|%s|%s|%s|%s|%s', id, "
        "   contact_id, agent_id, status, owner, message_count, "
        "   last_inbound_at IS NULL, last_activity_at IS NULL), E'\\n' "
        "   ORDER BY id) FROM messaging.conversations WHERE tenant_id = $1),"
        " (SELECT string_agg(format('m %s|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|"
        "%s|%s|%s|%s', id, conversation_id, direction, sender, type, text, "
        "   media_url, media_mime_type, provider_message_id, status, "
        "   provider_created_at, metadata, reply_state, delivered_at IS "
        "   NULL, read_at IS NULL, failed_at IS NULL), E'\\n' ORDER BY id) "
        "   FROM messaging.messages WHERE tenant_id = $1),"
        " (SELECT string_agg(e, E'\\n' ORDER BY e) FROM (SELECT "
        "   format('e %s|%s|%s', type, dimensions - 'channel_id', payload) "
        "   AS e FROM messaging.outbox WHERE tenant_id = $1) x),"
        " (SELECT string_agg(format('p %s|%s|%s|%s', id, "
        "   provider_message_id, status, error_code), E'\\n' ORDER BY id) "
        "   FROM messaging.pending_statuses WHERE tenant_id = $1),"
        " (SELECT string_agg(format('f %s|%s|%s', conversation_id, status, "
        "   reason), E'\\n' ORDER BY conversation_id, status) "
        "   FROM messaging.followups WHERE tenant_id = $1))";

// ---------------------------------------------------------------------------
// Random batches (a fixed seed: the same batches every run).

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static unsigned
rnd(unsigned n)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (unsigned)(rng % n);
}

static int next_pid;

static const char *const names[] = { "", "Ana", "Ana María", "Bruno" };
static const char *const texts[] = {
	"hello",
	"  Stop! ",
	"BAJA.",
	"quiero una pizza",
	"",
	"alta",
	"status?",
	"a text longer than sixty-four characters, which is never "
	"taken for a keyword whatever it says: STOP",
};
static const char *const statuses[] = { "sent", "delivered", "read", "failed" };

// One item for tenant t/ch; ids[3] the new rows' ids, shared by A and B.
static json_t *
item(const char *t, const char *ch, unsigned kind, unsigned a, unsigned b,
     unsigned c, const char *pid, char ids[3][PL_UUID_STRLEN + 1])
{
	char ext[32], bu[32];
	json_t *o;

	if (kind == 1) {
		o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "k", "s", "t",
		              t, "ch", ch, "pid", pid, "sid", ids[0], "st",
		              statuses[a % 4]);
		if (a % 4 == 3)
			json_object_set_new(o, "ec", json_string("131047"));
		if (b % 2)
			json_object_set_new(
			        o, "at", json_string("2026-11-20T10:00:00Z"));
		return o;
	}
	// Sender a: external id "54911000a"; b picks the shape: 0-3 plain,
	// 4 with its business-scoped id, 5 a new external id reaching the
	// same business-scoped id.
	snprintf(ext, sizeof(ext), b == 5 ? "alt%u" : "54911000%u", a);
	snprintf(bu, sizeof(bu), "BU%u", a);
	o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, "
	              "s:s, s:s, s:b}",
	              "k", "m", "t", t, "ch", ch, "pid", pid, "cht", "1", "ag",
	              c % 3 == 0 ? "" : AG, "ext", ext, "kind",
	              b == 5 ? "business_user_id" : "phone", "ty",
	              texts[c % 8][0] ? "text" : "image", "mid", ids[0], "kid",
	              ids[1], "vid", ids[2], "rw", c % 5 != 0);
	if (b >= 4)
		json_object_set_new(o, "bu", json_string(bu));
	if (b != 5) {
		json_object_set_new(o, "ph", json_string(ext));
		json_object_set_new(o, "phr", json_string(ext));
	}
	if (names[c % 4][0]) {
		json_object_set_new(o, "nm", json_string(names[c % 4]));
		json_object_set_new(o, "pr",
		                    json_pack("{s:s}", "name", names[c % 4]));
	}
	if (c % 7 == 1)
		json_object_set_new(o, "pu", json_string("PU"));
	if (texts[c % 8][0])
		json_object_set_new(o, "tx", json_string(texts[c % 8]));
	else
		json_object_set_new(o, "mu",
		                    json_string("https://example.com/x.jpg"));
	if (c % 4 == 2)
		json_object_set_new(o, "md", json_pack("{s:i}", "n", c));
	json_object_set_new(o, "pc", json_string("2026-11-20T09:59:00Z"));
	return o;
}

// The answer without the tenant and channel: comparable across tenants.
static char *
answer_norm(const char *text)
{
	json_t *a = json_loads(text, 0, NULL), *o;
	size_t i;
	char *s;

	if (a == NULL)
		return strdup("(not JSON)");
	json_array_foreach(a, i, o)
	{
		json_object_del(o, "t");
		json_object_del(o, "ch");
	}
	s = json_dumps(a, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(a);
	return s;
}

static int fast_batches, loop_batches;

// The calls of ingest_batch_items this session has made (PostgreSQL 15
// keeps a session's counts unflushed across transactions: compared before
// and after).
static long
loop_calls(void)
{
	char *n = query1("SELECT coalesce(sum(calls), 0) FROM "
	                 "pg_stat_xact_user_functions WHERE schemaname = "
	                 "'messaging' AND funcname = 'ingest_batch_items'",
	                 NULL);
	long v = n != NULL ? strtol(n, NULL, 10) : -1;
	free(n);
	return v;
}

// Runs items through fn on one tenant in a transaction; *loop: whether
// ingest_batch_items ran in it.
static char *
run(const char *fn, json_t *items, bool *loop)
{
	json_t *p = json_pack("{s:O, s:[]}", "items", items, "inbox");
	char *body = json_dumps(p, JSON_COMPACT), *ans = NULL;
	char sql[128];
	long before;

	json_decref(p);
	snprintf(sql, sizeof(sql), "SELECT messaging.%s($1::jsonb)::text", fn);
	if (!exec_ok("BEGIN"))
		goto out;
	before = loop_calls();
	ans = query1(sql, body);
	*loop = loop_calls() != before;
	if (!exec_ok(ans ? "COMMIT" : "ROLLBACK")) {
		free(ans);
		ans = NULL;
	}
out:
	free(body);
	return ans;
}

static void
test_ingest_batch_matches_items(void **state)
{
	(void)state;
	if (!up)
		skip();
	for (int round = 0; round < ROUNDS; round++) {
		json_t *ia = json_array(), *ib = json_array();
		unsigned n = 1 + rnd(8);
		bool loop_a, loop_b;
		char *aa, *ab, *na, *nb, *da, *db_;

		// Between batches, now and then, a conversation closes: the
		// sender's next message opens a new one.
		if (rnd(5) == 0) {
			char sql[256];
			snprintf(
			        sql, sizeof(sql),
			        "UPDATE messaging.conversations c SET status = "
			        "'closed' FROM messaging.contacts k WHERE "
			        "k.tenant_id = c.tenant_id AND k.id = "
			        "c.contact_id AND k.external_id = '54911000%u'",
			        rnd(SENDERS));
			assert_true(exec_ok(sql));
		}
		for (unsigned i = 0; i < n; i++) {
			char ids[3][PL_UUID_STRLEN + 1], pid[32];
			unsigned kind = rnd(4) == 0 ? 1 : 0;
			unsigned a = rnd(SENDERS), b = rnd(6), c = rnd(1000);

			for (int j = 0; j < 3; j++)
				pl_uuid7_str(ids[j]);
			if (kind == 1)
				snprintf(pid, sizeof(pid),
				         rnd(3) ? "out%u" : "unknown%u",
				         rnd(4));
			else if (next_pid > 0 && rnd(6) == 0)
				// A duplicate of an earlier message.
				snprintf(pid, sizeof(pid), "wamid.%d",
				         (int)rnd((unsigned)next_pid));
			else
				snprintf(pid, sizeof(pid), "wamid.%d",
				         next_pid++);
			json_array_append_new(
			        ia, item(TA, CHA, kind, a, b, c, pid, ids));
			json_array_append_new(
			        ib, item(TB, CHB, kind, a, b, c, pid, ids));
		}
		aa = run("ingest_batch", ia, &loop_a);
		ab = run("ingest_batch_items", ib, &loop_b);
		assert_non_null(aa);
		assert_non_null(ab);
		if (loop_a)
			loop_batches++;
		else
			fast_batches++;
		na = answer_norm(aa);
		nb = answer_norm(ab);
		if (strcmp(na, nb) != 0)
			print_error("round %d\nitems %s\nset:  %s\nloop: %s\n",
			            round, json_dumps(ia, JSON_COMPACT), na,
			            nb);
		assert_string_equal(na, nb);
		da = query1(dump_sql, TA);
		db_ = query1(dump_sql, TB);
		assert_non_null(da);
		assert_non_null(db_);
		if (strcmp(da, db_) != 0)
			print_error("round %d\nitems %s\n", round,
			            json_dumps(ia, JSON_COMPACT));
		assert_string_equal(da, db_);
		free(aa);
		free(ab);
		free(na);
		free(nb);
		free(da);
		free(db_);
		json_decref(ia);
		json_decref(ib);
	}
	print_message("%d batches in one statement, %d item by item\n",
	              fast_batches, loop_batches);
	assert_true(fast_batches >= 10);
	assert_true(loop_batches >= 5);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ingest_batch_matches_items),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
