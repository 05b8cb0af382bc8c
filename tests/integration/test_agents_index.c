// The in-process retrieval index against real PostgreSQL: built once per
// knowledge base, rebuilt when the base's content_version moves (entry
// import, update, delete, a change made by another replica straight in
// the database), not rebuilt by replies (usage counts do not move it).
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "agents.h"
#include "pgh.h"
#include "pl/id.h"
#include "svch.h"

#define M(x) "/parley.agents.v1.Agents/" x

static pgh pg;
static svch h;
static char tenant[37], user[37], agent[37];
static pl_principal admin, svc;

static int
call(const char *m, const pl_principal *p, const void *in,
     const ProtobufCMessageDescriptor *d, void *out)
{
	return svch_call(&h, m, p, in, d, out, NULL);
}

static ag_reply_resp *
reply(const char *text)
{
	ag_reply_req r = PARLEY__AGENTS__V1__REPLY_REQUEST__INIT;
	ag_reply_resp *out = NULL;

	r.tenant_id = tenant;
	r.agent_id = agent;
	r.session_key = "index-test";
	r.text = (char *)text;
	assert_int_equal(call(M("Reply"), &svc, &r,
	                      &parley__agents__v1__reply_response__descriptor,
	                      &out),
	                 PL_OK);
	return out;
}

// One value from the database, as the superuser.
static char *
scalar(const char *sql, char *buf, size_t n)
{
	PGconn *c = PQconnectdb(h.admin_url);
	PGresult *r = PQexec(c, sql);

	buf[0] = '\0';
	if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
		snprintf(buf, n, "%s", PQgetvalue(r, 0, 0));
	else if (PQresultStatus(r) != PGRES_COMMAND_OK)
		fprintf(stderr, "%s: %s\n", sql, PQerrorMessage(c));
	PQclear(r);
	PQfinish(c);
	return buf;
}

static void
import(const char *q, const char *a, const char *intent, bool replace)
{
	Parley__Agents__V1__ImportKnowledgeRequest ik =
	        PARLEY__AGENTS__V1__IMPORT_KNOWLEDGE_REQUEST__INIT;
	Parley__Agents__V1__ImportKnowledgeResponse *ikr = NULL;
	ag_entry e, *ep = &e;

	parley__agents__v1__knowledge_entry__init(&e);
	e.question = (char *)q;
	e.answer = (char *)a;
	e.intent = (char *)intent;
	ik.agent_id = agent;
	ik.entries = &ep;
	ik.n_entries = 1;
	ik.replace = replace;
	assert_int_equal(
	        call(M("ImportKnowledge"), &admin, &ik,
	             &parley__agents__v1__import_knowledge_response__descriptor,
	             &ikr),
	        PL_OK);
}

static void
test_invalidation(void **state)
{
	agents_ctx *ctx;
	ag_reply_resp *r;
	long builds;
	char v1[32], v2[32], id[64], sql[256];

	(void)state;
	if (pgh_start(&pg) == -1)
		skip();
	assert_int_equal(svch_start(&h, &pg, &agents_service_def, 2, NULL), 0);
	ctx = h.arg;
	pl_uuid7_str(tenant);
	pl_uuid7_str(user);
	admin = svch_user(tenant, user, PARLEY__RPC__V1__ROLE__ROLE_ADMIN);
	svc = svch_service();
	{
		Parley__Agents__V1__CreateAgentRequest ca =
		        PARLEY__AGENTS__V1__CREATE_AGENT_REQUEST__INIT;
		Parley__Agents__V1__CreateAgentResponse *car = NULL;
		Parley__Agents__V1__PublishAgentRequest pr =
		        PARLEY__AGENTS__V1__PUBLISH_AGENT_REQUEST__INIT;
		Parley__Agents__V1__PublishAgentResponse *prr = NULL;

		ca.name = "index";
		assert_int_equal(
		        call(M("CreateAgent"), &admin, &ca,
		             &parley__agents__v1__create_agent_response__descriptor,
		             &car),
		        PL_OK);
		snprintf(agent, sizeof(agent), "%s", car->id);
		import("What are your opening hours?", "Nine to six.", "hours",
		       false);
		import("How much is shipping?", "Five euros.", "shipping",
		       false);
		pr.id = agent;
		assert_int_equal(
		        call(M("PublishAgent"), &admin, &pr,
		             &parley__agents__v1__publish_agent_response__descriptor,
		             &prr),
		        PL_OK);
	}

	// First reply builds the index; more replies reuse it, and their
	// usage counts do not move the version.
	builds = agents_cache_builds(ctx->cache);
	r = reply("opening hours?");
	assert_string_equal(r->reply_text, "Nine to six.");
	assert_int_equal(agents_cache_builds(ctx->cache), builds + 1);
	scalar("SELECT content_version FROM agents.knowledge_bases", v1,
	       sizeof(v1));
	for (int i = 0; i < 5; i++)
		assert_string_equal(reply("shipping cost")->intent, "shipping");
	assert_int_equal(agents_cache_builds(ctx->cache), builds + 1);
	scalar("SELECT content_version FROM agents.knowledge_bases", v2,
	       sizeof(v2));
	assert_string_equal(v1, v2);
	scalar("SELECT sum(usage_count) FROM agents.knowledge_usage", id,
	       sizeof(id));
	assert_string_equal(id, "6");
	{
		Parley__Agents__V1__ListKnowledgeRequest lk =
		        PARLEY__AGENTS__V1__LIST_KNOWLEDGE_REQUEST__INIT;
		Parley__Agents__V1__ListKnowledgeResponse *lkr = NULL;
		int64_t total = 0;

		lk.agent_id = agent;
		assert_int_equal(
		        call(M("ListKnowledge"), &admin, &lk,
		             &parley__agents__v1__list_knowledge_response__descriptor,
		             &lkr),
		        PL_OK);
		for (size_t i = 0; i < lkr->n_entries; i++) {
			if (strcmp(lkr->entries[i]->intent, "shipping") == 0)
				assert_int_equal(lkr->entries[i]->usage_count,
				                 5);
			total += lkr->entries[i]->usage_count;
		}
		assert_int_equal(total, 6);
	}

	// UpdateEntry: the next reply has the new answer.
	scalar("SELECT id FROM agents.knowledge_entries WHERE intent = "
	       "'hours'",
	       id, sizeof(id));
	{
		Parley__Agents__V1__UpdateEntryRequest ue =
		        PARLEY__AGENTS__V1__UPDATE_ENTRY_REQUEST__INIT;
		Parley__Agents__V1__UpdateEntryResponse *uer = NULL;

		ue.id = id;
		ue.answer = "Ten to seven now.";
		assert_int_equal(
		        call(M("UpdateEntry"), &admin, &ue,
		             &parley__agents__v1__update_entry_response__descriptor,
		             &uer),
		        PL_OK);
	}
	assert_string_equal(reply("opening hours?")->reply_text,
	                    "Ten to seven now.");
	assert_int_equal(agents_cache_builds(ctx->cache), builds + 2);

	// Another replica's change, straight in the database (the trigger
	// bumps the version in the same transaction).
	snprintf(sql, sizeof(sql),
	         "UPDATE agents.knowledge_entries SET answer = 'Eleven to "
	         "eight.' WHERE id = '%s' RETURNING 1",
	         id);
	scalar(sql, v1, sizeof(v1));
	assert_string_equal(reply("opening hours?")->reply_text,
	                    "Eleven to eight.");

	// Deactivated, then deleted: no longer answered.
	snprintf(sql, sizeof(sql),
	         "UPDATE agents.knowledge_entries SET is_active = false WHERE "
	         "id = '%s' RETURNING 1",
	         id);
	scalar(sql, v1, sizeof(v1));
	r = reply("opening hours?");
	assert_string_not_equal(r->intent, "hours");
	{
		Parley__Agents__V1__DeleteEntryRequest de =
		        PARLEY__AGENTS__V1__DELETE_ENTRY_REQUEST__INIT;
		Parley__Agents__V1__DeleteEntryResponse *der = NULL;

		de.id = id;
		assert_int_equal(
		        call(M("DeleteEntry"), &admin, &de,
		             &parley__agents__v1__delete_entry_response__descriptor,
		             &der),
		        PL_OK);
	}
	r = reply("opening hours?");
	assert_true(r->fallback);

	// Import: the new entry answers at once; a replacing import drops
	// the others.
	import("Do you sell gift cards?", "Yes, from 10 EUR.", "gift_cards",
	       false);
	assert_string_equal(reply("gift cards?")->intent, "gift_cards");
	import("Is there a warranty?", "Two years.", "warranty", true);
	assert_string_equal(reply("warranty please")->intent, "warranty");
	assert_true(reply("gift cards?")->fallback);
	builds = agents_cache_builds(ctx->cache);
	assert_string_equal(reply("warranty")->intent, "warranty");
	assert_int_equal(agents_cache_builds(ctx->cache), builds);

	pl_arena_reset(&h.arena);
	svch_stop(&h);
	pgh_stop(&pg);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_invalidation),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
