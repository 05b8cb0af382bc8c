// Group commit of Reply (agents_reply_group, what the leader worker runs):
// replies of one session in one group keep their order, counts and bot
// turns; a group of two tenants keeps their sessions apart; the same
// message id twice in one group is answered once; a reply that fails does
// not fail the others, also when the whole group's transaction fails and
// its replies are answered one at a time. A group the replica remembers
// (agent and sessions) is written in one round trip, and what changed
// since (another writer in the session, a new version, new knowledge, an
// ended session, a replay) is answered again with two. And
// SearchKnowledge served from the retrieval index (built on its first call).
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <pthread.h>

#include "agents.h"
#include "pgh.h"
#include "pl/id.h"
#include "svch.h"

#define M(x) "/parley.agents.v1.Agents/" x
#define NMAX 8

static pgh pg;
static svch h;
static bool up;
static char ta[37], tb[37], user[37];
static pl_principal pa, pb, svc;

static int
setup(void **state)
{
	(void)state;
	int rc = pgh_start(&pg);
	if (rc == -2)
		return -1;
	if (rc == -1)
		return 0;
	if (svch_start(&h, &pg, &agents_service_def, 2, NULL) != 0)
		return -1;
	pl_uuid7_str(ta);
	pl_uuid7_str(user);
	pa = svch_user(ta, user, PARLEY__RPC__V1__ROLE__ROLE_ADMIN);
	pl_uuid7_str(tb);
	pb = svch_user(tb, user, PARLEY__RPC__V1__ROLE__ROLE_ADMIN);
	svc = svch_service();
	up = true;
	return 0;
}

static int
teardown(void **state)
{
	(void)state;
	if (up)
		svch_stop(&h);
	pgh_stop(&pg);
	return 0;
}

static ag_entry *
entry(const char *q, const char *a, const char *intent)
{
	ag_entry *e = pl_arena_zalloc(&h.arena, sizeof(*e));
	parley__agents__v1__knowledge_entry__init(e);
	e->question = (char *)q;
	e->answer = (char *)a;
	e->intent = (char *)intent;
	return e;
}

// A retrieval agent of p's tenant with a small FAQ (published when asked);
// its id.
static char *
make_agent_for(const pl_principal *p, bool publish, int max_bot_turns)
{
	Parley__Agents__V1__CreateAgentRequest ca =
	        PARLEY__AGENTS__V1__CREATE_AGENT_REQUEST__INIT;
	Parley__Agents__V1__CreateAgentResponse *car = NULL;
	Parley__Agents__V1__ImportKnowledgeRequest ik =
	        PARLEY__AGENTS__V1__IMPORT_KNOWLEDGE_REQUEST__INIT;
	Parley__Agents__V1__ImportKnowledgeResponse *ikr = NULL;
	Parley__Agents__V1__PublishAgentRequest pr =
	        PARLEY__AGENTS__V1__PUBLISH_AGENT_REQUEST__INIT;
	Parley__Agents__V1__PublishAgentResponse *prr = NULL;
	ag_entry *ents[2];

	ca.name = "Group bot";
	ca.max_bot_turns = max_bot_turns;
	assert_int_equal(
	        svch_call(
	                &h, M("CreateAgent"), p, &ca.base,
	                &parley__agents__v1__create_agent_response__descriptor,
	                (void **)&car, NULL),
	        PL_OK);
	ents[0] = entry("What are your opening hours?",
	                "We are open 9 to 18, Monday to Saturday.", "hours");
	ents[1] = entry("How much is shipping?",
	                "Shipping costs 5 EUR, free above 50 EUR.", "shipping");
	ik.agent_id = car->id;
	ik.entries = ents;
	ik.n_entries = 2;
	assert_int_equal(
	        svch_call(
	                &h, M("ImportKnowledge"), p, &ik.base,
	                &parley__agents__v1__import_knowledge_response__descriptor,
	                (void **)&ikr, NULL),
	        PL_OK);
	if (publish) {
		pr.id = car->id;
		assert_int_equal(
		        svch_call(
		                &h, M("PublishAgent"), p, &pr.base,
		                &parley__agents__v1__publish_agent_response__descriptor,
		                (void **)&prr, NULL),
		        PL_OK);
	}
	return car->id;
}

static char *
make_agent(bool publish, int max_bot_turns)
{
	return make_agent_for(&pa, publish, max_bot_turns);
}

// n replies as one group, each with its own call and arena.
typedef struct group {
	size_t n;
	pl_arena arena[NMAX];
	pl_call call[NMAX];
	ag_reply_req req[NMAX];
	ag_reply_resp resp[NMAX];
	int rv[NMAX];
} group;

static void
group_add_for(group *g, const char *tenant, const char *agent, const char *key,
              const char *text, const char *msg_id)
{
	size_t i = g->n++;

	pl_arena_init(&g->arena[i], 0, 0);
	memset(&g->call[i], 0, sizeof(g->call[i]));
	g->call[i].arena = &g->arena[i];
	g->call[i].principal = &svc;
	g->call[i].method = M("Reply");
	g->call[i].trace_id = "group-test";
	g->call[i].arg = h.arg;
	parley__agents__v1__reply_request__init(&g->req[i]);
	parley__agents__v1__reply_response__init(&g->resp[i]);
	g->req[i].tenant_id = (char *)tenant;
	g->req[i].agent_id = (char *)agent;
	g->req[i].session_key = (char *)key;
	g->req[i].text = (char *)text;
	g->req[i].message_id = (char *)(msg_id ? msg_id : "");
}

static void
group_add(group *g, const char *agent, const char *key, const char *text,
          const char *msg_id)
{
	group_add_for(g, ta, agent, key, text, msg_id);
}

// The last item added comes with one turn of history, as messaging sends
// a conversation's later messages (with none, a replica that remembers
// the agent names the session itself and the commit creates it: 013).
static void
said_before(group *g)
{
	static Parley__Agents__V1__HistoryTurn turn =
	        PARLEY__AGENTS__V1__HISTORY_TURN__INIT;
	static Parley__Agents__V1__HistoryTurn *turns[1] = { &turn };

	turn.role = PARLEY__AGENTS__V1__MESSAGE_ROLE__MESSAGE_ROLE_USER;
	turn.content = "hello";
	g->req[g->n - 1].history = turns;
	g->req[g->n - 1].n_history = 1;
}

static void
group_run(group *g)
{
	pl_call *calls[NMAX];
	const ag_reply_req *ins[NMAX];
	ag_reply_resp *outs[NMAX];
	pl_db *db = pl_db_open(h.db_url);

	for (size_t i = 0; i < g->n; i++) {
		calls[i] = &g->call[i];
		ins[i] = &g->req[i];
		outs[i] = &g->resp[i];
	}
	agents_reply_group(db, g->n, calls, ins, outs, g->rv, NULL);
	pl_db_close(db);
}

static void
group_fini(group *g)
{
	for (size_t i = 0; i < g->n; i++)
		pl_arena_fini(&g->arena[i]);
	g->n = 0;
}

static char *
scalar(const char *sql)
{
	static char buf[4096];
	PGconn *c = PQconnectdb(h.admin_url);
	PGresult *r = PQexec(c, sql);

	buf[0] = '\0';
	if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0)
		snprintf(buf, sizeof(buf), "%s", PQgetvalue(r, 0, 0));
	else if (PQresultStatus(r) != PGRES_TUPLES_OK)
		fprintf(stderr, "%s: %s\n", sql, PQerrorMessage(c));
	PQclear(r);
	PQfinish(c);
	return buf;
}

static long
count(const char *sql)
{
	return atol(scalar(sql));
}

// Three replies of one session in one group: one session, answered in
// order, counts and bot turns as if one after the other (the third hits
// max_bot_turns = 2).
static void
test_one_session(void **state)
{
	(void)state;
	if (!up)
		skip();
	char *agent = make_agent(true, 2);
	group g = { 0 };
	char sql[512];

	group_add(&g, agent, "g-one", "what are your opening hours?", NULL);
	group_add(&g, agent, "g-one", "how much is shipping?", NULL);
	group_add(&g, agent, "g-one", "opening hours on saturday?", NULL);
	group_run(&g);
	for (size_t i = 0; i < 3; i++)
		assert_int_equal(g.rv[i], PL_OK);
	assert_string_equal(g.resp[0].intent, "hours");
	assert_false(g.resp[0].handoff);
	assert_string_equal(g.resp[1].intent, "shipping");
	assert_false(g.resp[1].handoff);
	// Two bot turns before it: the rule hands off.
	assert_true(g.resp[2].handoff);
	assert_int_equal(
	        g.resp[2].handoff_reason,
	        PARLEY__AGENTS__V1__HANDOFF_REASON__HANDOFF_REASON_MAX_TURNS);
	assert_string_equal(g.resp[0].session_id, g.resp[1].session_id);
	assert_string_equal(g.resp[0].session_id, g.resp[2].session_id);
	snprintf(sql, sizeof(sql),
	         "SELECT message_count || '/' || bot_turns || '/' || "
	         "(context ->> 'last_intent') FROM agents.agent_sessions "
	         "WHERE id = '%s'",
	         g.resp[0].session_id);
	assert_string_equal(scalar(sql), "6/0/hours");
	// user, assistant, user, assistant...: in the order of the group.
	snprintf(sql, sizeof(sql),
	         "SELECT string_agg(role || ':' || left(content, 12), '|' "
	         "ORDER BY id) FROM agents.agent_messages WHERE session_id = "
	         "'%s'",
	         g.resp[0].session_id);
	assert_string_equal(scalar(sql),
	                    "user:what are you|assistant:We are open |"
	                    "user:how much is |assistant:Shipping cos|"
	                    "user:opening hour|assistant:We are open ");
	assert_int_equal(count("SELECT count(*) FROM agents.agent_sessions "
	                       "WHERE session_key = 'g-one'"),
	                 1);
	group_fini(&g);

	// The next group sees what the first one stored.
	group_add(&g, agent, "g-one", "shipping price", NULL);
	group_run(&g);
	assert_int_equal(g.rv[0], PL_OK);
	assert_false(g.resp[0].handoff); // turns were reset by the handoff
	snprintf(sql, sizeof(sql),
	         "SELECT message_count || '/' || bot_turns FROM "
	         "agents.agent_sessions WHERE id = '%s'",
	         g.resp[0].session_id);
	assert_string_equal(scalar(sql), "8/1");
	group_fini(&g);
	pl_arena_reset(&h.arena);
}

// One group, two tenants, the same session key in both: each tenant's
// sessions get their own replies and counts (the sessions are updated by
// (tenant, id) pairs).
static void
test_two_tenants(void **state)
{
	(void)state;
	if (!up)
		skip();
	char *aa = make_agent(true, 10), *ab = make_agent_for(&pb, true, 10);
	group g = { 0 };
	char sql[512];

	group_add(&g, aa, "mt-1", "what are your opening hours?", NULL);
	group_add_for(&g, tb, ab, "mt-1", "how much is shipping?", NULL);
	group_add(&g, aa, "mt-2", "how much is shipping?", NULL);
	group_add_for(&g, tb, ab, "mt-1", "opening hours on monday?", NULL);
	group_run(&g);
	for (size_t i = 0; i < 4; i++)
		assert_int_equal(g.rv[i], PL_OK);
	assert_string_equal(g.resp[0].intent, "hours");
	assert_string_equal(g.resp[1].intent, "shipping");
	assert_string_equal(g.resp[2].intent, "shipping");
	assert_string_equal(g.resp[3].intent, "hours");
	assert_string_not_equal(g.resp[0].session_id, g.resp[1].session_id);
	assert_string_equal(g.resp[1].session_id, g.resp[3].session_id);
	snprintf(sql, sizeof(sql),
	         "SELECT string_agg(CASE tenant_id WHEN '%s' THEN 'a' ELSE "
	         "'b' END || ':' || session_key || ':' || message_count || "
	         "':' || (context ->> 'last_intent'), ',' ORDER BY "
	         "tenant_id = '%s' DESC, session_key) FROM "
	         "agents.agent_sessions WHERE session_key LIKE 'mt-%%' AND "
	         "tenant_id IN ('%s', '%s')",
	         ta, ta, ta, tb);
	assert_string_equal(scalar(sql),
	                    "a:mt-1:2:hours,a:mt-2:2:shipping,b:mt-1:4:hours");
	group_fini(&g);
	pl_arena_reset(&h.arena);
}

// The same message id twice in one group (same session, and another
// session): answered once, stored once, the later ones replayed.
static void
test_same_key(void **state)
{
	(void)state;
	if (!up)
		skip();
	char *agent = make_agent(true, 0);
	group g = { 0 };

	group_add(&g, agent, "g-key", "what are your opening hours?", "gk-1");
	group_add(&g, agent, "g-key", "what are your opening hours?", "gk-1");
	group_add(&g, agent, "g-key-2", "what are your opening hours?", "gk-1");
	group_add(&g, agent, "g-key", "how much is shipping?", "gk-2");
	group_run(&g);
	for (size_t i = 0; i < 4; i++)
		assert_int_equal(g.rv[i], PL_OK);
	assert_false(g.resp[0].replayed);
	assert_true(g.resp[1].replayed);
	assert_true(g.resp[2].replayed);
	assert_false(g.resp[3].replayed);
	assert_string_equal(g.resp[1].reply_text, g.resp[0].reply_text);
	assert_string_equal(g.resp[2].session_id, g.resp[0].session_id);
	assert_string_equal(g.resp[3].intent, "shipping");
	assert_int_equal(count("SELECT count(*) FROM agents.agent_messages "
	                       "WHERE message_id = 'gk-1'"),
	                 1);
	assert_int_equal(count("SELECT message_count FROM "
	                       "agents.agent_sessions WHERE session_key = "
	                       "'g-key'"),
	                 4);
	// g-key-2 only replayed: its session may exist, with no message.
	assert_int_equal(count("SELECT coalesce(sum(message_count), 0) FROM "
	                       "agents.agent_sessions WHERE session_key = "
	                       "'g-key-2'"),
	                 0);
	group_fini(&g);

	// Again in a later group: replayed from the database.
	group_add(&g, agent, "g-key", "what are your opening hours?", "gk-1");
	group_run(&g);
	assert_int_equal(g.rv[0], PL_OK);
	assert_true(g.resp[0].replayed);
	assert_int_equal(count("SELECT count(*) FROM agents.agent_messages "
	                       "WHERE message_id = 'gk-1'"),
	                 1);
	group_fini(&g);
	pl_arena_reset(&h.arena);
}

// Replies that cannot be answered fail alone.
static void
test_failing_items(void **state)
{
	(void)state;
	if (!up)
		skip();
	char *agent = make_agent(true, 0);
	char *draft = make_agent(false, 0);
	char unknown[37];
	group g = { 0 };

	pl_uuid7_str(unknown);
	group_add(&g, agent, "g-fail-1", "what are your opening hours?", NULL);
	group_add(&g, unknown, "g-fail-2", "hours?", NULL);
	group_add(&g, draft, "g-fail-3", "hours?", NULL);
	group_add(&g, agent, "g-fail-4", "how much is shipping?", NULL);
	group_run(&g);
	assert_int_equal(g.rv[0], PL_OK);
	assert_int_equal(g.rv[1], PL_NOT_FOUND);
	assert_int_equal(g.rv[2], PL_FAILED_PRECONDITION);
	assert_int_equal(g.rv[3], PL_OK);
	assert_string_equal(g.resp[3].intent, "shipping");
	assert_int_equal(count("SELECT count(*) FROM agents.agent_messages m "
	                       "JOIN agents.agent_sessions s ON s.id = "
	                       "m.session_id WHERE s.session_key LIKE "
	                       "'g-fail-%'"),
	                 4);
	group_fini(&g);
	pl_arena_reset(&h.arena);
}

typedef struct runner {
	group *g;
	pthread_t th;
} runner;

static void *
run_thread(void *arg)
{
	group_run(((runner *)arg)->g);
	return NULL;
}

// The whole group's transaction fails: another transaction (say, another
// replica) commits an answer to one of its message ids while the group is
// writing. The group rolls back and its replies are answered one at a
// time: the others are recorded once, the raced one replays the answer
// that won.
static void
test_group_fails(void **state)
{
	(void)state;
	if (!up)
		skip();
	char *agent = make_agent(true, 0);
	group g = { 0 };
	runner rn = { &g, 0 };
	PGconn *c = PQconnectdb(h.admin_url);
	char sql[1024], sess[37], msg[37];
	PGresult *r;
	int waited = 0;

	pl_uuid7_str(sess);
	pl_uuid7_str(msg);
	snprintf(sql, sizeof(sql),
	         "BEGIN; INSERT INTO agents.agent_sessions (tenant_id, id, "
	         "agent_id, session_key) VALUES ('%s', '%s', '%s', "
	         "'elsewhere'); INSERT INTO agents.agent_messages (tenant_id, "
	         "id, session_id, role, content, message_id, reply) VALUES "
	         "('%s', '%s', '%s', 'assistant', 'from elsewhere', 'race-1', "
	         "'{\"reply_text\": \"from elsewhere\"}')",
	         ta, sess, agent, ta, msg, sess);
	r = PQexec(c, sql);
	assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
	PQclear(r);

	group_add(&g, agent, "g-race-1", "what are your opening hours?", NULL);
	group_add(&g, agent, "g-race-2", "how much is shipping?", "race-1");
	group_add(&g, agent, "g-race-3", "how much is shipping?", NULL);
	pthread_create(&rn.th, NULL, run_thread, &rn);
	// Until the group waits on the uncommitted answer (its insert
	// into the unique index of message ids).
	while (waited < 3000 &&
	       count("SELECT count(*) FROM pg_stat_activity WHERE "
	             "wait_event_type = 'Lock' AND query LIKE "
	             "'%reply_commit_batch%'") == 0) {
		usleep(10000);
		waited += 10;
	}
	assert_true(waited < 3000);
	r = PQexec(c, "COMMIT");
	assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
	PQclear(r);
	PQfinish(c);
	pthread_join(rn.th, NULL);

	for (size_t i = 0; i < 3; i++)
		assert_int_equal(g.rv[i], PL_OK);
	assert_false(g.resp[0].replayed);
	assert_string_equal(g.resp[0].intent, "hours");
	assert_true(g.resp[1].replayed);
	assert_string_equal(g.resp[1].reply_text, "from elsewhere");
	assert_false(g.resp[2].replayed);
	assert_string_equal(g.resp[2].intent, "shipping");
	// Each recorded once (the failed group left nothing).
	assert_int_equal(count("SELECT count(*) FROM agents.agent_messages m "
	                       "JOIN agents.agent_sessions s ON s.id = "
	                       "m.session_id WHERE s.session_key IN "
	                       "('g-race-1', 'g-race-3')"),
	                 4);
	assert_int_equal(count("SELECT count(*) FROM agents.agent_messages "
	                       "WHERE message_id = 'race-1'"),
	                 1);
	// Two events: the replay and the rolled-back group made none.
	snprintf(sql, sizeof(sql),
	         "SELECT count(*) FROM agents.outbox WHERE type = "
	         "'agent.replied' AND dimensions ->> 'agent_id' = '%s'",
	         agent);
	assert_int_equal(count(sql), 2);
	group_fini(&g);
	pl_arena_reset(&h.arena);
}

static agents_replyq_stats
stats(void)
{
	agents_replyq_stats st;

	agents_replyq_stats_get(((agents_ctx *)h.arg)->replyq, &st);
	return st;
}

static void
admin_exec(const char *sql)
{
	PGconn *c = PQconnectdb(h.admin_url);
	PGresult *r = PQexec(c, sql);

	if (PQresultStatus(r) != PGRES_COMMAND_OK)
		fprintf(stderr, "%s: %s\n", sql, PQerrorMessage(c));
	assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
	PQclear(r);
	PQfinish(c);
}

// One reply in a group; checks it was answered in one round trip (fast)
// or again with two (redone). Every reply but a session's first comes
// with history, as messaging sends them.
static void
one_reply(group *g, const char *agent, const char *key, const char *text,
          const char *msg_id, bool fast, bool redone)
{
	agents_replyq_stats a = stats(), b;
	char sql[512];
	const char *n;

	snprintf(sql, sizeof(sql),
	         "SELECT count(*) FROM agents.agent_sessions WHERE tenant_id "
	         "= '%s' AND session_key = '%s'",
	         ta, key);
	n = scalar(sql);
	group_add(g, agent, key, text, msg_id);
	if (strcmp(n, "0") != 0)
		said_before(g);
	group_run(g);
	b = stats();
	assert_int_equal(g->rv[0], PL_OK);
	assert_int_equal(b.fast - a.fast, fast ? 1 : 0);
	assert_int_equal(b.redone - a.redone, redone ? 1 : 0);
}

static char *
session_state(const char *key)
{
	char sql[512];

	snprintf(sql, sizeof(sql),
	         "SELECT string_agg(message_count || '/' || bot_turns || '/' "
	         "|| status, ',' ORDER BY started_at) FROM "
	         "agents.agent_sessions WHERE tenant_id = '%s' AND "
	         "session_key = '%s'",
	         ta, key);
	return scalar(sql);
}

// The replica's memory: a session answered before is answered in one
// round trip; every change made elsewhere is seen.
static void
test_memory(void **state)
{
	(void)state;
	if (!up)
		skip();
	char *agent = make_agent(true, 3);
	group g = { 0 };
	char sql[512], first[37];
	ag_entry *ents[1];
	Parley__Agents__V1__ImportKnowledgeRequest ik =
	        PARLEY__AGENTS__V1__IMPORT_KNOWLEDGE_REQUEST__INIT;
	Parley__Agents__V1__ImportKnowledgeResponse *ikr = NULL;
	Parley__Agents__V1__PublishAgentRequest pr =
	        PARLEY__AGENTS__V1__PUBLISH_AGENT_REQUEST__INIT;
	Parley__Agents__V1__PublishAgentResponse *prr = NULL;

	// First reply: two round trips; then one.
	one_reply(&g, agent, "mem-1", "what are your opening hours?", NULL,
	          false, false);
	snprintf(first, sizeof(first), "%s", g.resp[0].session_id);
	group_fini(&g);
	one_reply(&g, agent, "mem-1", "how much is shipping?", NULL, true,
	          false);
	assert_string_equal(g.resp[0].intent, "shipping");
	assert_string_equal(g.resp[0].session_id, first);
	assert_string_equal(session_state("mem-1"), "4/2/active");
	group_fini(&g);

	// Another replica answered in the session: seen, answered again
	// with the session's turns (3 before it: max_bot_turns hands off).
	snprintf(sql, sizeof(sql),
	         "UPDATE agents.agent_sessions SET message_count = "
	         "message_count + 2, bot_turns = 3 WHERE tenant_id = '%s' AND "
	         "session_key = 'mem-1'",
	         ta);
	admin_exec(sql);
	one_reply(&g, agent, "mem-1", "how much is shipping?", NULL, false,
	          true);
	assert_true(g.resp[0].handoff);
	assert_string_equal(session_state("mem-1"), "8/0/active");
	group_fini(&g);
	one_reply(&g, agent, "mem-1", "how much is shipping?", NULL, true,
	          false);
	assert_false(g.resp[0].handoff);
	assert_string_equal(session_state("mem-1"), "10/1/active");
	group_fini(&g);

	// A replay of a message answered from memory.
	one_reply(&g, agent, "mem-1", "what are your opening hours?", "mem-m1",
	          true, false);
	assert_false(g.resp[0].replayed);
	group_fini(&g);
	one_reply(&g, agent, "mem-1", "what are your opening hours?", "mem-m1",
	          false, true);
	assert_true(g.resp[0].replayed);
	assert_int_equal(count("SELECT count(*) FROM agents.agent_messages "
	                       "WHERE message_id = 'mem-m1'"),
	                 1);
	assert_string_equal(session_state("mem-1"), "12/2/active");
	group_fini(&g);
	// The replay made the replica forget the session: two round trips.
	one_reply(&g, agent, "mem-1", "how much is shipping?", NULL, false,
	          false);
	assert_false(g.resp[0].handoff);
	assert_string_equal(session_state("mem-1"), "14/3/active");
	group_fini(&g);

	// New knowledge: the next reply uses it (and hands off: 3 turns).
	ents[0] = entry("Do you deliver on Sundays?",
	                "Yes, Sunday deliveries until 14:00.", "sunday");
	ik.agent_id = agent;
	ik.entries = ents;
	ik.n_entries = 1;
	assert_int_equal(
	        svch_call(
	                &h, M("ImportKnowledge"), &pa, &ik.base,
	                &parley__agents__v1__import_knowledge_response__descriptor,
	                (void **)&ikr, NULL),
	        PL_OK);
	one_reply(&g, agent, "mem-1", "do you deliver on sundays?", NULL, false,
	          true);
	assert_string_equal(g.resp[0].intent, "sunday");
	assert_true(g.resp[0].handoff);
	assert_int_equal(g.resp[0].agent_version, 1);
	assert_string_equal(session_state("mem-1"), "16/0/active");
	group_fini(&g);

	// A new published version.
	pr.id = agent;
	assert_int_equal(
	        svch_call(
	                &h, M("PublishAgent"), &pa, &pr.base,
	                &parley__agents__v1__publish_agent_response__descriptor,
	                (void **)&prr, NULL),
	        PL_OK);
	one_reply(&g, agent, "mem-1", "how much is shipping?", NULL, false,
	          true);
	assert_int_equal(g.resp[0].agent_version, 2);
	group_fini(&g);
	one_reply(&g, agent, "mem-1", "how much is shipping?", NULL, true,
	          false);
	assert_int_equal(g.resp[0].agent_version, 2);
	assert_string_equal(g.resp[0].session_id, first);
	assert_string_equal(session_state("mem-1"), "20/2/active");
	group_fini(&g);

	// The session ended elsewhere: a new one.
	snprintf(sql, sizeof(sql),
	         "UPDATE agents.agent_sessions SET status = 'ended', ended_at "
	         "= now() WHERE tenant_id = '%s' AND session_key = 'mem-1'",
	         ta);
	admin_exec(sql);
	one_reply(&g, agent, "mem-1", "how much is shipping?", NULL, false,
	          true);
	assert_string_not_equal(g.resp[0].session_id, first);
	assert_string_equal(session_state("mem-1"), "20/2/ended,2/1/active");
	group_fini(&g);

	// Two replies of a remembered session in one group: the second
	// continues from the first.
	{
		agents_replyq_stats a = stats(), b;

		group_add(&g, agent, "mem-1", "how much is shipping?", NULL);
		group_add(&g, agent, "mem-1", "opening hours?", NULL);
		group_run(&g);
		b = stats();
		assert_int_equal(g.rv[0], PL_OK);
		assert_int_equal(g.rv[1], PL_OK);
		assert_int_equal(b.fast - a.fast, 2);
		assert_string_equal(g.resp[1].intent, "hours");
		assert_string_equal(session_state("mem-1"),
		                    "20/2/ended,6/3/active");
		group_fini(&g);
	}

	// Memory off: every group takes two round trips.
	agents_replyq_set_memory(((agents_ctx *)h.arg)->replyq, 0);
	one_reply(&g, agent, "mem-1", "how much is shipping?", NULL, false,
	          false);
	assert_true(g.resp[0].handoff);
	assert_string_equal(session_state("mem-1"), "20/2/ended,8/0/active");
	group_fini(&g);
	agents_replyq_set_memory(((agents_ctx *)h.arg)->replyq, 4096);
	pl_arena_reset(&h.arena);
}

// A session's row, the columns a reply writes (not its id or times).
static char *
session_row(const char *key)
{
	char sql[768];

	snprintf(sql, sizeof(sql),
	         "SELECT string_agg(concat_ws('|', agent_id, message_count, "
	         "bot_turns, status, context::text, channel_id, "
	         "conversation_id, contact_id, website_domain, client_ip), "
	         "',') FROM agents.agent_sessions WHERE tenant_id = '%s' AND "
	         "session_key = '%s'",
	         ta, key);
	return strdup(scalar(sql));
}

// Migration 013: a conversation's first reply (no history) in one round
// trip when the replica remembers the agent; the commit creates the
// session it named, the same row the two round trips make; a wrong guess
// (the key's session exists) is answered again with two.
static void
test_new_session(void **state)
{
	(void)state;
	if (!up)
		skip();
	char *agent = make_agent(true, 3);
	group g = { 0 };
	char sql[512], *two, *one;

	// The agent's first reply: two round trips (nothing remembered).
	one_reply(&g, agent, "new-0", "what are your opening hours?", NULL,
	          false, false);
	group_fini(&g);
	// A new key: one round trip, the session made by the commit.
	one_reply(&g, agent, "new-1", "what are your opening hours?", NULL,
	          true, false);
	assert_string_equal(g.resp[0].intent, "hours");
	assert_string_equal(session_state("new-1"), "2/1/active");
	group_fini(&g);
	two = session_row("new-0");
	one = session_row("new-1");
	assert_string_equal(one, two);
	free(two);
	free(one);
	// Remembered since: the next reply in it is one round trip too.
	one_reply(&g, agent, "new-1", "how much is shipping?", NULL, true,
	          false);
	assert_string_equal(session_state("new-1"), "4/2/active");
	group_fini(&g);

	// A wrong guess: the key has an active session this replica does
	// not remember. Refused by the commit, answered in that session.
	snprintf(sql, sizeof(sql),
	         "INSERT INTO agents.agent_sessions (tenant_id, id, agent_id, "
	         "session_key, message_count) VALUES ('%s', "
	         "'0191d3a0-0000-7000-8000-000000000013', '%s', 'new-2', 6)",
	         ta, agent);
	admin_exec(sql);
	{
		agents_replyq_stats a = stats(), b;

		group_add(&g, agent, "new-2", "how much is shipping?", NULL);
		group_run(&g);
		b = stats();
		assert_int_equal(g.rv[0], PL_OK);
		assert_int_equal(b.fast - a.fast, 0);
		assert_int_equal(b.redone - a.redone, 1);
		assert_string_equal(g.resp[0].session_id,
		                    "0191d3a0-0000-7000-8000-000000000013");
		assert_string_equal(session_state("new-2"), "8/1/active");
		group_fini(&g);
	}

	// Two first replies of one key in a group: two round trips, one
	// session.
	{
		agents_replyq_stats a = stats(), b;

		group_add(&g, agent, "new-3", "how much is shipping?", NULL);
		group_add(&g, agent, "new-3", "opening hours?", NULL);
		group_run(&g);
		b = stats();
		assert_int_equal(g.rv[0], PL_OK);
		assert_int_equal(g.rv[1], PL_OK);
		assert_int_equal(b.fast - a.fast, 0);
		assert_string_equal(session_state("new-3"), "4/2/active");
		group_fini(&g);
	}
	pl_arena_reset(&h.arena);
}

static Parley__Agents__V1__SearchKnowledgeResponse *
search(const char *agent, const char *q, int limit, double min_score)
{
	Parley__Agents__V1__SearchKnowledgeRequest sk =
	        PARLEY__AGENTS__V1__SEARCH_KNOWLEDGE_REQUEST__INIT;
	Parley__Agents__V1__SearchKnowledgeResponse *skr = NULL;

	sk.agent_id = (char *)agent;
	sk.query = (char *)q;
	sk.limit = limit;
	sk.min_score = min_score;
	assert_int_equal(
	        svch_call(
	                &h, M("SearchKnowledge"), &pa, &sk.base,
	                &parley__agents__v1__search_knowledge_response__descriptor,
	                (void **)&skr, NULL),
	        PL_OK);
	return skr;
}

// SearchKnowledge ranks with Reply's index from its first call (it builds
// the index when this process has none): the same entry and score as
// Reply's confidence, before any Reply; an entry changed since moves the
// base's version and the next search sees it without a Reply.
static void
test_search_index(void **state)
{
	(void)state;
	if (!up)
		skip();
	char *agent = make_agent(true, 0);
	Parley__Agents__V1__SearchKnowledgeResponse *skr;
	ag_reply_req r = PARLEY__AGENTS__V1__REPLY_REQUEST__INIT;
	ag_reply_resp *o = NULL;
	Parley__Agents__V1__UpdateEntryRequest ue =
	        PARLEY__AGENTS__V1__UPDATE_ENTRY_REQUEST__INIT;
	Parley__Agents__V1__UpdateEntryResponse *uer = NULL;
	char *mask[] = { "answer" }, entry_id[40];
	double first_score;
	long builds = agents_cache_builds(((agents_ctx *)h.arg)->cache);

	skr = search(agent, "how much is shipping", 5, 0);
	assert_true(skr->n_matches >= 1);
	assert_string_equal(skr->matches[0]->entry->intent, "shipping");
	first_score = skr->matches[0]->score;
	snprintf(entry_id, sizeof(entry_id), "%s", skr->matches[0]->entry->id);
	assert_true(agents_cache_builds(((agents_ctx *)h.arg)->cache) > builds);

	r.tenant_id = ta;
	r.agent_id = agent;
	r.session_key = "g-search";
	r.text = "how much is shipping";
	assert_int_equal(
	        svch_call(&h, M("Reply"), &svc, &r.base,
	                  &parley__agents__v1__reply_response__descriptor,
	                  (void **)&o, NULL),
	        PL_OK);
	assert_string_equal(o->intent, "shipping");

	skr = search(agent, "how much is shipping", 5, 0);
	assert_true(skr->n_matches >= 1);
	assert_string_equal(skr->matches[0]->entry->intent, "shipping");
	assert_string_equal(skr->matches[0]->entry->id, o->knowledge_entry_id);
	// The index's score: Reply's confidence, before and after it.
	assert_true(skr->matches[0]->score == o->confidence);
	assert_true(first_score == o->confidence);
	// Whole entries, as the SQL path gives them.
	assert_string_equal(skr->matches[0]->entry->answer,
	                    "Shipping costs 5 EUR, free above 50 EUR.");
	assert_true(skr->matches[0]->entry->usage_count >= 1);
	// limit and min_score.
	skr = search(agent, "shipping hours", 1, 0);
	assert_int_equal(skr->n_matches, 1);
	skr = search(agent, "how much is shipping", 5, 0.99);
	assert_int_equal(skr->n_matches, 0);
	// A changed answer: the version moves, the next search rebuilds.
	ue.id = entry_id;
	ue.answer = "Shipping is free this week.";
	ue.n_update_mask = 1;
	ue.update_mask = mask;
	assert_int_equal(
	        svch_call(
	                &h, M("UpdateEntry"), &pa, &ue.base,
	                &parley__agents__v1__update_entry_response__descriptor,
	                (void **)&uer, NULL),
	        PL_OK);
	builds = agents_cache_builds(((agents_ctx *)h.arg)->cache);
	skr = search(agent, "how much is shipping", 5, 0);
	assert_true(skr->n_matches >= 1);
	assert_string_equal(skr->matches[0]->entry->id, entry_id);
	assert_string_equal(skr->matches[0]->entry->answer,
	                    "Shipping is free this week.");
	assert_true(agents_cache_builds(((agents_ctx *)h.arg)->cache) > builds);
	pl_arena_reset(&h.arena);
}

// A base's content_version moves once per statement that changes its
// entries (migration 011's statement triggers), not once per entry, and
// not for an update that changes nothing the index reads.
static long
kb_version(const char *kb)
{
	char sql[160];

	snprintf(sql, sizeof(sql),
	         "SELECT content_version FROM agents.knowledge_bases WHERE id "
	         "= '%s'",
	         kb);
	return count(sql);
}

static void
kb_exec(const char *fmt, const char *kb)
{
	char sql[1024];

	snprintf(sql, sizeof(sql), fmt, kb, kb);
	assert_true(count(sql) >= 0);
}

static void
test_content_version(void **state)
{
	(void)state;
	if (!up)
		skip();
	char *agent = make_agent(false, 0), kb[40], sql[200];
	long v;

	snprintf(sql, sizeof(sql),
	         "SELECT knowledge_base_ids[1] FROM agents.agents WHERE id = "
	         "'%s'",
	         agent);
	snprintf(kb, sizeof(kb), "%s", scalar(sql));
	assert_int_equal(strlen(kb), 36);
	v = kb_version(kb);
	// Two entries in one statement: one step.
	kb_exec("WITH i AS (INSERT INTO agents.knowledge_entries (tenant_id, "
	        "id, knowledge_base_id, question, answer, question_norm) "
	        "SELECT b.tenant_id, gen_random_uuid(), b.id, 'q' || g, 'a', "
	        "'q' || g FROM agents.knowledge_bases b, generate_series(1, 2) "
	        "g WHERE b.id = '%s' RETURNING 1) SELECT count(*) FROM i",
	        kb);
	assert_int_equal(kb_version(kb), v + 1);
	// An update that changes nothing the index reads: none.
	kb_exec("WITH u AS (UPDATE agents.knowledge_entries SET updated_at = "
	        "now() WHERE knowledge_base_id = '%s' RETURNING 1) SELECT "
	        "count(*) FROM u",
	        kb);
	assert_int_equal(kb_version(kb), v + 1);
	// Two answers changed in one statement: one step.
	kb_exec("WITH u AS (UPDATE agents.knowledge_entries SET answer = "
	        "answer || '!' WHERE knowledge_base_id = '%s' AND question "
	        "LIKE 'q_' RETURNING 1) SELECT count(*) FROM u",
	        kb);
	assert_int_equal(kb_version(kb), v + 2);
	// Deleted: one step.
	kb_exec("WITH d AS (DELETE FROM agents.knowledge_entries WHERE "
	        "knowledge_base_id = '%s' AND question LIKE 'q_' RETURNING 1) "
	        "SELECT count(*) FROM d",
	        kb);
	assert_int_equal(kb_version(kb), v + 3);
	// Several statements in one transaction: one step for all.
	kb_exec("BEGIN; INSERT INTO agents.knowledge_entries (tenant_id, id, "
	        "knowledge_base_id, question, answer, question_norm) SELECT "
	        "tenant_id, gen_random_uuid(), id, 'x', 'a', 'x' FROM "
	        "agents.knowledge_bases WHERE id = '%s'; UPDATE "
	        "agents.knowledge_entries SET answer = 'b' WHERE "
	        "knowledge_base_id = '%s'; COMMIT; SELECT 1",
	        kb);
	assert_int_equal(kb_version(kb), v + 4);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_one_session),
		cmocka_unit_test(test_two_tenants),
		cmocka_unit_test(test_same_key),
		cmocka_unit_test(test_failing_items),
		cmocka_unit_test(test_group_fails),
		cmocka_unit_test(test_memory),
		cmocka_unit_test(test_new_session),
		cmocka_unit_test(test_search_index),
		cmocka_unit_test(test_content_version),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
