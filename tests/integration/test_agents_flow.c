// The agents service against real PostgreSQL: agents and versions,
// knowledge, Reply (retrieval and the LLM path against a fake provider),
// sessions, checkpoints, cross-tenant isolation, bad input, concurrency.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <pthread.h>

#include "agents.h"
#include "fake_openai.h"
#include "pgh.h"
#include "pl/id.h"
#include "svch.h"

#define M(x) "/parley.agents.v1.Agents/" x

static pgh pg;
static svch h;
static fake_openai *fake;
static bool up;
static char ta[37], tb[37], user[37];
static pl_principal pa, pb, svc;

static const char *const env[] = {
	"PARLEY_CREDENTIALS_KEY=MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
	"PARLEY_LLM_TIMEOUT=1500ms",
	NULL,
};

static int
setup(void **state)
{
	(void)state;
	int rc = pgh_start(&pg);
	if (rc == -2)
		return -1;
	if (rc == -1)
		return 0;
	if (svch_start(&h, &pg, &agents_service_def, 4, env) != 0)
		return -1;
	if (fake_openai_start(&fake) != 0)
		return -1;
	pl_uuid7_str(ta);
	pl_uuid7_str(tb);
	pl_uuid7_str(user);
	pa = svch_user(ta, user, PARLEY__RPC__V1__ROLE__ROLE_ADMIN);
	pb = svch_user(tb, user, PARLEY__RPC__V1__ROLE__ROLE_ADMIN);
	svc = svch_service();
	up = true;
	return 0;
}

static int
teardown(void **state)
{
	(void)state;
	if (up) {
		fake_openai_stop(fake);
		svch_stop(&h);
	}
	pgh_stop(&pg);
	return 0;
}

static int
call(const char *m, const pl_principal *p, const void *in,
     const ProtobufCMessageDescriptor *d, void *out)
{
	pl_rpc_result res = { 0 };
	int rc = svch_call(&h, m, p, in, d, out, &res);
	if (rc != PL_OK && getenv("AGENTS_TEST_VERBOSE"))
		fprintf(stderr, "%s: %s %s\n", m, pl_status_name(rc),
		        res.message ? res.message : "");
	return rc;
}

static ag_entry *
entry(const char *q, const char *a, const char *kw, const char *intent)
{
	ag_entry *e = pl_arena_zalloc(&h.arena, sizeof(*e));
	parley__agents__v1__knowledge_entry__init(e);
	e->question = (char *)q;
	e->answer = (char *)a;
	e->intent = (char *)intent;
	if (kw) {
		e->keywords = pl_arena_alloc(&h.arena, sizeof(char *));
		e->keywords[0] = (char *)kw;
		e->n_keywords = 1;
	}
	return e;
}

// Creates a retrieval agent with a small FAQ for tenant p; returns its id.
static char *
make_agent(const pl_principal *p, bool publish, ag_llm *llm)
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
	ag_entry *ents[3];

	ca.name = "Shop bot";
	ca.llm = llm;
	assert_int_equal(
	        call(M("CreateAgent"), p, &ca,
	             &parley__agents__v1__create_agent_response__descriptor,
	             &car),
	        PL_OK);
	ents[0] = entry("What are your opening hours?",
	                "We are open 9 to 18, Monday to Saturday.", "schedule",
	                "hours");
	ents[1] = entry("How much is shipping?",
	                "Shipping costs 5 EUR, free above 50 EUR.", "delivery",
	                "shipping");
	ents[2] = entry("¿Aceptan pago con tarjeta?",
	                "Sí, aceptamos todas las tarjetas.", "pago", "payment");
	ik.agent_id = car->id;
	ik.entries = ents;
	ik.n_entries = 3;
	assert_int_equal(
	        call(M("ImportKnowledge"), p, &ik,
	             &parley__agents__v1__import_knowledge_response__descriptor,
	             &ikr),
	        PL_OK);
	assert_int_equal(ikr->created, 3);
	if (publish) {
		pr.id = car->id;
		assert_int_equal(
		        call(M("PublishAgent"), p, &pr,
		             &parley__agents__v1__publish_agent_response__descriptor,
		             &prr),
		        PL_OK);
		assert_int_equal(prr->version, 1);
	}
	return car->id;
}

static ag_reply_resp *
reply(const char *tenant, const char *agent, const char *key, const char *text,
      const char *msg_id, int *rc)
{
	ag_reply_req r = PARLEY__AGENTS__V1__REPLY_REQUEST__INIT;
	ag_reply_resp *out = NULL;

	r.tenant_id = (char *)tenant;
	r.agent_id = (char *)agent;
	r.session_key = (char *)key;
	r.text = (char *)text;
	r.message_id = (char *)(msg_id ? msg_id : "");
	*rc = call(M("Reply"), &svc, &r,
	           &parley__agents__v1__reply_response__descriptor, &out);
	return out;
}

static long
count(const char *sql)
{
	PGconn *c = PQconnectdb(h.admin_url);
	PGresult *r = PQexec(c, sql);
	long n = -1;
	if (PQresultStatus(r) == PGRES_TUPLES_OK)
		n = atol(PQgetvalue(r, 0, 0));
	else
		fprintf(stderr, "%s\n", PQerrorMessage(c));
	PQclear(r);
	PQfinish(c);
	return n;
}

static void
test_retrieval_reply(void **state)
{
	(void)state;
	if (!up)
		skip();
	char *agent = make_agent(&pa, true, NULL);
	int rc;
	ag_reply_resp *r;

	r = reply(ta, agent, "conv-1", "what time do you open? 🕘", "m1", &rc);
	assert_int_equal(rc, PL_OK);
	assert_string_equal(r->intent, "hours");
	assert_false(r->fallback);
	assert_false(r->handoff);
	assert_true(r->confidence > 0.3);
	assert_int_equal(r->agent_version, 1);

	// Spanish with and without accents.
	r = reply(ta, agent, "conv-1", "aceptan tarjeta de credito?", "m2",
	          &rc);
	assert_int_equal(rc, PL_OK);
	assert_string_equal(r->intent, "payment");

	// A retry with the same message id answers the same, computed once.
	r = reply(ta, agent, "conv-1", "what time do you open? 🕘", "m1", &rc);
	assert_int_equal(rc, PL_OK);
	assert_true(r->replayed);
	assert_string_equal(r->intent, "hours");
	assert_int_equal(count("SELECT count(*) FROM agents.agent_messages "
	                       "WHERE message_id = 'm1'"),
	                 1);

	// Nothing known: the fallback.
	r = reply(ta, agent, "conv-1", "zzqx blorf", NULL, &rc);
	assert_int_equal(rc, PL_OK);
	assert_true(r->fallback);
	assert_true(r->reply_text[0] != '\0');

	// A handoff keyword, and lead capture.
	r = reply(ta, agent, "conv-2",
	          "I want to talk to a HUMAN, my name is Ana Lopez, "
	          "ana@example.com +34 600 123 456",
	          NULL, &rc);
	assert_int_equal(rc, PL_OK);
	assert_true(r->handoff);
	assert_int_equal(
	        r->handoff_reason,
	        PARLEY__AGENTS__V1__HANDOFF_REASON__HANDOFF_REASON_KEYWORD);
	assert_non_null(r->captured);
	assert_string_equal(r->captured->email, "ana@example.com");
	assert_string_equal(r->captured->phone, "+34600123456");
	assert_string_equal(r->captured->name, "Ana Lopez");

	// The event went to the outbox.
	assert_true(count("SELECT count(*) FROM agents.outbox WHERE type = "
	                  "'agent.replied'") >= 4);
}

static void
test_reply_bad_input(void **state)
{
	(void)state;
	if (!up)
		skip();
	char *draft = make_agent(&pa, false, NULL);
	char *agent = make_agent(&pa, true, NULL);
	char unknown[37], *big;
	int rc;
	long before = count("SELECT count(*) FROM agents.agent_messages");

	pl_uuid7_str(unknown);
	reply(ta, agent, "bad-1", "", NULL, &rc);
	assert_int_equal(rc, PL_INVALID_ARGUMENT);
	big = calloc(1, 70000);
	memset(big, 'a', 69999);
	reply(ta, agent, "bad-1", big, NULL, &rc);
	free(big);
	assert_int_equal(rc, PL_INVALID_ARGUMENT);
	reply(ta, unknown, "bad-1", "hello", NULL, &rc);
	assert_int_equal(rc, PL_NOT_FOUND);
	reply(ta, draft, "bad-1", "hello", NULL, &rc);
	assert_int_equal(rc, PL_FAILED_PRECONDITION);
	// Another tenant's agent is not found.
	reply(tb, agent, "bad-1", "hello", NULL, &rc);
	assert_int_equal(rc, PL_NOT_FOUND);
	assert_int_equal(count("SELECT count(*) FROM agents.agent_messages"),
	                 before);
	assert_int_equal(count("SELECT count(*) FROM agents.agent_sessions "
	                       "WHERE session_key = 'bad-1'"),
	                 0);
}

static void
test_versions_and_cross_tenant(void **state)
{
	(void)state;
	if (!up)
		skip();
	char *agent = make_agent(&pa, true, NULL);
	Parley__Agents__V1__UpdateAgentRequest ua =
	        PARLEY__AGENTS__V1__UPDATE_AGENT_REQUEST__INIT;
	Parley__Agents__V1__UpdateAgentResponse *uar = NULL;
	Parley__Agents__V1__PublishAgentRequest pr =
	        PARLEY__AGENTS__V1__PUBLISH_AGENT_REQUEST__INIT;
	Parley__Agents__V1__PublishAgentResponse *prr = NULL;
	Parley__Agents__V1__ListVersionsRequest lv =
	        PARLEY__AGENTS__V1__LIST_VERSIONS_REQUEST__INIT;
	Parley__Agents__V1__ListVersionsResponse *lvr = NULL;
	Parley__Agents__V1__GetAgentRequest ga =
	        PARLEY__AGENTS__V1__GET_AGENT_REQUEST__INIT;
	Parley__Agents__V1__GetAgentResponse *gar = NULL;
	Parley__Agents__V1__ArchiveAgentRequest aa =
	        PARLEY__AGENTS__V1__ARCHIVE_AGENT_REQUEST__INIT;
	Parley__Agents__V1__ArchiveAgentResponse *aar = NULL;
	ag_reply_resp *r;
	int rc;

	ua.id = agent;
	ua.fallback_message = "Version two fallback";
	assert_int_equal(
	        call(M("UpdateAgent"), &pa, &ua,
	             &parley__agents__v1__update_agent_response__descriptor,
	             &uar),
	        PL_OK);
	assert_true(uar->agent->has_unpublished_changes);
	// Replies still use version 1.
	r = reply(ta, agent, "ver-1", "qqqq wwww", NULL, &rc);
	assert_int_equal(rc, PL_OK);
	assert_int_equal(r->agent_version, 1);
	assert_string_not_equal(r->reply_text, "Version two fallback");
	pr.id = agent;
	assert_int_equal(
	        call(M("PublishAgent"), &pa, &pr,
	             &parley__agents__v1__publish_agent_response__descriptor,
	             &prr),
	        PL_OK);
	assert_int_equal(prr->version, 2);
	r = reply(ta, agent, "ver-1", "qqqq wwww", NULL, &rc);
	assert_int_equal(r->agent_version, 2);
	assert_string_equal(r->reply_text, "Version two fallback");
	lv.agent_id = agent;
	assert_int_equal(
	        call(M("ListVersions"), &pa, &lv,
	             &parley__agents__v1__list_versions_response__descriptor,
	             &lvr),
	        PL_OK);
	assert_int_equal(lvr->n_versions, 2);
	assert_int_equal(lvr->versions[0]->version, 2);

	// Tenant B sees none of it.
	ga.id = agent;
	assert_int_equal(
	        call(M("GetAgent"), &pb, &ga,
	             &parley__agents__v1__get_agent_response__descriptor, &gar),
	        PL_NOT_FOUND);
	ua.id = agent;
	assert_int_equal(
	        call(M("UpdateAgent"), &pb, &ua,
	             &parley__agents__v1__update_agent_response__descriptor,
	             &uar),
	        PL_NOT_FOUND);
	assert_int_equal(
	        call(M("PublishAgent"), &pb, &pr,
	             &parley__agents__v1__publish_agent_response__descriptor,
	             &prr),
	        PL_NOT_FOUND);
	assert_int_equal(
	        call(M("ListVersions"), &pb, &lv,
	             &parley__agents__v1__list_versions_response__descriptor,
	             &lvr),
	        PL_NOT_FOUND);
	aa.id = agent;
	assert_int_equal(
	        call(M("ArchiveAgent"), &pb, &aa,
	             &parley__agents__v1__archive_agent_response__descriptor,
	             &aar),
	        PL_NOT_FOUND);
	{
		Parley__Agents__V1__ListKnowledgeRequest lk =
		        PARLEY__AGENTS__V1__LIST_KNOWLEDGE_REQUEST__INIT;
		Parley__Agents__V1__ListKnowledgeResponse *lkr = NULL;
		Parley__Agents__V1__SearchKnowledgeRequest sk =
		        PARLEY__AGENTS__V1__SEARCH_KNOWLEDGE_REQUEST__INIT;
		Parley__Agents__V1__SearchKnowledgeResponse *skr = NULL;
		Parley__Agents__V1__UpdateEntryRequest ue =
		        PARLEY__AGENTS__V1__UPDATE_ENTRY_REQUEST__INIT;
		Parley__Agents__V1__UpdateEntryResponse *uer = NULL;
		Parley__Agents__V1__DeleteEntryRequest de =
		        PARLEY__AGENTS__V1__DELETE_ENTRY_REQUEST__INIT;
		Parley__Agents__V1__DeleteEntryResponse *der = NULL;
		Parley__Agents__V1__ExportKnowledgeRequest ek =
		        PARLEY__AGENTS__V1__EXPORT_KNOWLEDGE_REQUEST__INIT;
		Parley__Agents__V1__ExportKnowledgeResponse *ekr = NULL;
		Parley__Agents__V1__DeleteKnowledgeBaseRequest dk =
		        PARLEY__AGENTS__V1__DELETE_KNOWLEDGE_BASE_REQUEST__INIT;
		Parley__Agents__V1__DeleteKnowledgeBaseResponse *dkr = NULL;

		lk.agent_id = agent;
		assert_int_equal(
		        call(M("ListKnowledge"), &pa, &lk,
		             &parley__agents__v1__list_knowledge_response__descriptor,
		             &lkr),
		        PL_OK);
		assert_int_equal(lkr->n_entries, 3);
		ue.id = lkr->entries[0]->id;
		de.id = ue.id;
		ek.knowledge_base_id = lkr->entries[0]->knowledge_base_id;
		dk.id = ek.knowledge_base_id;
		assert_int_equal(
		        call(M("ListKnowledge"), &pb, &lk,
		             &parley__agents__v1__list_knowledge_response__descriptor,
		             &lkr),
		        PL_NOT_FOUND);
		sk.agent_id = agent;
		sk.query = "shipping";
		assert_int_equal(
		        call(M("SearchKnowledge"), &pa, &sk,
		             &parley__agents__v1__search_knowledge_response__descriptor,
		             &skr),
		        PL_OK);
		assert_true(skr->n_matches >= 1);
		assert_string_equal(skr->matches[0]->entry->intent, "shipping");
		assert_int_equal(
		        call(M("SearchKnowledge"), &pb, &sk,
		             &parley__agents__v1__search_knowledge_response__descriptor,
		             &skr),
		        PL_NOT_FOUND);
		ue.answer = "changed";
		assert_int_equal(
		        call(M("UpdateEntry"), &pb, &ue,
		             &parley__agents__v1__update_entry_response__descriptor,
		             &uer),
		        PL_NOT_FOUND);
		assert_int_equal(
		        call(M("UpdateEntry"), &pa, &ue,
		             &parley__agents__v1__update_entry_response__descriptor,
		             &uer),
		        PL_OK);
		assert_string_equal(uer->entry->answer, "changed");
		assert_int_equal(
		        call(M("ExportKnowledge"), &pb, &ek,
		             &parley__agents__v1__export_knowledge_response__descriptor,
		             &ekr),
		        PL_NOT_FOUND);
		assert_int_equal(
		        call(M("ExportKnowledge"), &pa, &ek,
		             &parley__agents__v1__export_knowledge_response__descriptor,
		             &ekr),
		        PL_OK);
		assert_int_equal(ekr->n_entries, 3);
		assert_int_equal(
		        call(M("DeleteKnowledgeBase"), &pb, &dk,
		             &parley__agents__v1__delete_knowledge_base_response__descriptor,
		             &dkr),
		        PL_NOT_FOUND);
		assert_int_equal(
		        call(M("DeleteKnowledgeBase"), &pa, &dk,
		             &parley__agents__v1__delete_knowledge_base_response__descriptor,
		             &dkr),
		        PL_FAILED_PRECONDITION);
		assert_int_equal(
		        call(M("DeleteEntry"), &pb, &de,
		             &parley__agents__v1__delete_entry_response__descriptor,
		             &der),
		        PL_NOT_FOUND);
		assert_int_equal(
		        call(M("DeleteEntry"), &pa, &de,
		             &parley__agents__v1__delete_entry_response__descriptor,
		             &der),
		        PL_OK);
	}
	// Sessions.
	{
		Parley__Agents__V1__GetSessionRequest gs =
		        PARLEY__AGENTS__V1__GET_SESSION_REQUEST__INIT;
		Parley__Agents__V1__GetSessionResponse *gsr = NULL;
		Parley__Agents__V1__ListSessionMessagesRequest lm =
		        PARLEY__AGENTS__V1__LIST_SESSION_MESSAGES_REQUEST__INIT;
		Parley__Agents__V1__ListSessionMessagesResponse *lmr = NULL;
		Parley__Agents__V1__EndSessionRequest es =
		        PARLEY__AGENTS__V1__END_SESSION_REQUEST__INIT;
		Parley__Agents__V1__EndSessionResponse *esr = NULL;
		Parley__Agents__V1__ListSessionsRequest ls =
		        PARLEY__AGENTS__V1__LIST_SESSIONS_REQUEST__INIT;
		Parley__Agents__V1__ListSessionsResponse *lsr = NULL;

		gs.session_key = "ver-1";
		assert_int_equal(
		        call(M("GetSession"), &pa, &gs,
		             &parley__agents__v1__get_session_response__descriptor,
		             &gsr),
		        PL_OK);
		assert_int_equal(gsr->session->message_count, 4);
		gs.session_key = "";
		gs.id = gsr->session->id;
		lm.session_id = gs.id;
		es.id = gs.id;
		assert_int_equal(
		        call(M("GetSession"), &pb, &gs,
		             &parley__agents__v1__get_session_response__descriptor,
		             &gsr),
		        PL_NOT_FOUND);
		assert_int_equal(
		        call(M("ListSessionMessages"), &pa, &lm,
		             &parley__agents__v1__list_session_messages_response__descriptor,
		             &lmr),
		        PL_OK);
		assert_int_equal(lmr->n_messages, 4);
		assert_int_equal(
		        lmr->messages[0]->role,
		        PARLEY__AGENTS__V1__MESSAGE_ROLE__MESSAGE_ROLE_USER);
		assert_int_equal(
		        call(M("ListSessionMessages"), &pb, &lm,
		             &parley__agents__v1__list_session_messages_response__descriptor,
		             &lmr),
		        PL_NOT_FOUND);
		assert_int_equal(
		        call(M("EndSession"), &pb, &es,
		             &parley__agents__v1__end_session_response__descriptor,
		             &esr),
		        PL_NOT_FOUND);
		assert_int_equal(
		        call(M("EndSession"), &pa, &es,
		             &parley__agents__v1__end_session_response__descriptor,
		             &esr),
		        PL_OK);
		assert_int_equal(
		        esr->session->status,
		        PARLEY__AGENTS__V1__SESSION_STATUS__SESSION_STATUS_ENDED);
		ls.page = NULL;
		assert_int_equal(
		        call(M("ListSessions"), &pa, &ls,
		             &parley__agents__v1__list_sessions_response__descriptor,
		             &lsr),
		        PL_OK);
		assert_true(lsr->n_sessions >= 1);
		assert_int_equal(
		        call(M("ListSessions"), &pb, &ls,
		             &parley__agents__v1__list_sessions_response__descriptor,
		             &lsr),
		        PL_OK);
		assert_int_equal(lsr->n_sessions, 0);
	}
	aa.id = agent;
	assert_int_equal(
	        call(M("ArchiveAgent"), &pa, &aa,
	             &parley__agents__v1__archive_agent_response__descriptor,
	             &aar),
	        PL_OK);
	reply(ta, agent, "ver-2", "hello", NULL, &rc);
	assert_int_equal(rc, PL_FAILED_PRECONDITION);
	pl_arena_reset(&h.arena);
}

static ag_llm *
llm_cfg(void)
{
	ag_llm *l = pl_arena_zalloc(&h.arena, sizeof(*l));
	parley__agents__v1__llm_config__init(l);
	l->base_url = (char *)fake_openai_url(fake);
	l->model = "fake-model";
	l->api_key = "sk-test-secret";
	return l;
}

static char *
read_fixture(const char *name)
{
	char path[512];
	FILE *f;
	char *buf;
	long n;

	snprintf(path, sizeof(path), "%s/fixtures/webhooks/%s",
	         PARLEY_SHARED_DIR, name);
	if ((f = fopen(path, "rb")) == NULL)
		return NULL;
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	rewind(f);
	buf = calloc(1, (size_t)n + 1);
	n = (long)fread(buf, 1, (size_t)n, f);
	buf[n] = '\0';
	fclose(f);
	return buf;
}

static void
test_llm_paths(void **state)
{
	(void)state;
	if (!up)
		skip();
	char *agent = make_agent(&pa, true, llm_cfg());
	ag_reply_resp *r;
	int rc;
	char *body, *auth, *fx;

	// A plain answer; the key is sent, context and tools too.
	body = fake_openai_text_body("Hello from the LLM", 40, 7);
	fake_openai_push(fake, 200, body, NULL, 0);
	free(body);
	r = reply(ta, agent, "llm-1", "how much is shipping?", NULL, &rc);
	assert_int_equal(rc, PL_OK);
	assert_string_equal(r->reply_text, "Hello from the LLM");
	assert_int_equal(r->engine, AG_ENGINE_OPENAI);
	assert_int_equal(r->tokens_in, 40);
	assert_int_equal(r->tokens_out, 7);
	auth = fake_openai_last_auth(fake);
	assert_string_equal(auth, "Bearer sk-test-secret");
	free(auth);
	body = fake_openai_last_body(fake);
	assert_non_null(strstr(body, "handoff_to_human"));
	assert_non_null(strstr(body, "Shipping costs 5 EUR"));
	free(body);

	// The fixture: content null with tool calls.
	if ((fx = read_fixture(
	             "openai_chat_completion_tool_calls_response.json")) ==
	    NULL) {
		fprintf(stderr,
		        "skipping the fixture case: %s/fixtures not "
		        "found\n",
		        PARLEY_SHARED_DIR);
	} else {
		fake_openai_push(fake, 200, fx, NULL, 0);
		free(fx);
		r = reply(ta, agent, "llm-1", "how much is shipping?", NULL,
		          &rc);
		assert_int_equal(rc, PL_OK);
		assert_string_equal(r->intent, "shipping");
		assert_int_equal(r->engine, AG_ENGINE_RETRIEVAL);
		assert_non_null(strstr(r->error, "get_current_weather"));
		assert_int_equal(r->tokens_in, 82);
	}

	// Tool calls we know.
	fake_openai_push(
	        fake, 200,
	        "{\"model\":\"m\",\"choices\":[{\"message\":{\"content\":"
	        "\"Sure\","
	        "\"tool_calls\":[{\"type\":\"function\",\"function\":{\"name\":"
	        "\"create_order\",\"arguments\":\"{\\\"items\\\":[{\\\"sku\\\":"
	        "\\\"A1\\\",\\\"quantity\\\":2}]}\"}},{\"type\":\"function\","
	        "\"function\":{\"name\":\"handoff_to_human\",\"arguments\":"
	        "\"{\\\"reason\\\":\\\"wants a discount\\\"}\"}}]}}],\"usage\":"
	        "{\"prompt_tokens\":5,\"completion_tokens\":3}}",
	        NULL, 0);
	r = reply(ta, agent, "llm-2", "two of A1 please", NULL, &rc);
	assert_int_equal(rc, PL_OK);
	assert_string_equal(r->reply_text, "Sure");
	assert_true(r->handoff);
	assert_int_equal(
	        r->handoff_reason,
	        PARLEY__AGENTS__V1__HANDOFF_REASON__HANDOFF_REASON_TOOL);
	assert_int_equal(r->n_actions, 1);
	assert_string_equal(r->actions[0]->kind, "order_confirmation");

	// 429 with Retry-After, then an answer: retried.
	body = fake_openai_text_body("after the retry", 1, 1);
	fake_openai_push(fake, 429, "{}", "0", 0);
	fake_openai_push(fake, 200, body, NULL, 0);
	free(body);
	r = reply(ta, agent, "llm-3", "how much is shipping?", NULL, &rc);
	assert_int_equal(rc, PL_OK);
	assert_string_equal(r->reply_text, "after the retry");

	// Failures: the customer still gets the retrieval answer, recorded.
	fake_openai_push(fake, 429, "{}", "30", 0);
	r = reply(ta, agent, "llm-4", "how much is shipping?", NULL, &rc);
	assert_int_equal(rc, PL_OK);
	assert_string_equal(r->intent, "shipping");
	assert_non_null(strstr(r->error, "429"));

	fake_openai_push(fake, 500, "oops", NULL, 0);
	fake_openai_push(fake, 500, "oops", NULL, 0);
	r = reply(ta, agent, "llm-4", "how much is shipping?", NULL, &rc);
	assert_int_equal(rc, PL_OK);
	assert_string_equal(r->intent, "shipping");
	assert_non_null(strstr(r->error, "500"));

	fake_openai_push(fake, 200, "{\"choices\": [", NULL, 0);
	r = reply(ta, agent, "llm-4", "zzqx blorf", NULL, &rc);
	assert_int_equal(rc, PL_OK);
	assert_true(r->fallback);
	assert_non_null(strstr(r->error, "malformed"));

	fake_openai_push_big(fake, 10 << 20);
	r = reply(ta, agent, "llm-4", "how much is shipping?", NULL, &rc);
	assert_int_equal(rc, PL_OK);
	assert_string_equal(r->intent, "shipping");
	assert_non_null(strstr(r->error, "larger"));

	fake_openai_push(fake, 200, "{}", NULL, 3000);
	r = reply(ta, agent, "llm-4", "how much is shipping?", NULL, &rc);
	assert_int_equal(rc, PL_OK);
	assert_string_equal(r->intent, "shipping");
	assert_non_null(strstr(r->error, "timed out"));

	assert_true(count("SELECT count(*) FROM agents.agent_messages WHERE "
	                  "error <> ''") >= 5);
	// The key is stored sealed, never in clear.
	assert_int_equal(count("SELECT count(*) FROM agents.agents WHERE "
	                       "position('sk-test-secret'::bytea in "
	                       "llm_api_key_ct) > 0"),
	                 0);
	pl_arena_reset(&h.arena);
}

typedef struct conc {
	const char *agent;
	int i;
	int rc;
} conc;

// ReplyBatch: one status per item, the retrieval items answered as one
// group, an LLM agent's item left for Reply, bad items refused alone.
static void
test_reply_batch(void **state)
{
	(void)state;
	if (!up)
		skip();
	char *agent = make_agent(&pa, true, NULL);
	char *draft = make_agent(&pa, false, NULL);
	char *llm = make_agent(&pa, true, llm_cfg());
	ag_reply_req it[7], *items[AG_MAX_BATCH + 1];
	const struct {
		const char *tenant, *agent, *key, *text, *mid;
	} in[7] = {
		{ ta, agent, "batch-1", "what time do you open?", "bm1" },
		{ ta, agent, "batch-2", "how much is shipping?", "bm2" },
		{ ta, agent, "batch-3", "", "bm-empty" },
		{ tb, agent, "batch-4", "hello", "bm-other" },
		{ ta, draft, "batch-5", "hello", "bm-draft" },
		{ ta, llm, "batch-6", "hello", "bm-llm" },
		{ ta, agent, "batch-1", "how much is shipping?", "bm3" },
	};
	Parley__Agents__V1__ReplyBatchRequest rq =
	        PARLEY__AGENTS__V1__REPLY_BATCH_REQUEST__INIT;
	Parley__Agents__V1__ReplyBatchResponse *out = NULL;
	Parley__Agents__V1__ReplyBatchResult **r;
	long before = count("SELECT count(*) FROM agents.agent_messages");

	for (size_t i = 0; i < 7; i++) {
		parley__agents__v1__reply_request__init(&it[i]);
		it[i].tenant_id = (char *)in[i].tenant;
		it[i].agent_id = (char *)in[i].agent;
		it[i].session_key = (char *)in[i].key;
		it[i].text = (char *)in[i].text;
		it[i].message_id = (char *)in[i].mid;
		items[i] = &it[i];
	}
	rq.items = items;
	rq.n_items = 7;
	for (int round = 0; round < 2; round++) {
		out = NULL;
		assert_int_equal(
		        call(M("ReplyBatch"), &svc, &rq,
		             &parley__agents__v1__reply_batch_response__descriptor,
		             &out),
		        PL_OK);
		assert_int_equal(out->n_results, 7);
		r = out->results;
		assert_int_equal(r[0]->code, PL_OK);
		assert_non_null(r[0]->reply);
		assert_string_equal(r[0]->reply->intent, "hours");
		assert_int_equal(r[1]->code, PL_OK);
		assert_string_equal(r[1]->reply->intent, "shipping");
		assert_int_equal(r[2]->code, PL_INVALID_ARGUMENT);
		assert_null(r[2]->reply);
		assert_int_equal(r[3]->code, PL_NOT_FOUND);
		assert_int_equal(r[4]->code, PL_FAILED_PRECONDITION);
		assert_int_equal(r[5]->code, PL_OK);
		assert_true(r[5]->alone);
		assert_null(r[5]->reply);
		assert_int_equal(r[6]->code, PL_OK);
		assert_string_equal(r[6]->reply->intent, "shipping");
		// Two turns of one session in one batch: the second continues
		// the first's session.
		assert_string_equal(r[6]->reply->session_id,
		                    r[0]->reply->session_id);
		// The second time every answer is a replay.
		assert_int_equal(r[0]->reply->replayed, round == 1);
		assert_int_equal(r[6]->reply->replayed, round == 1);
	}
	// Three answers, each once (user and assistant rows); nothing for the
	// refused items or the LLM's.
	assert_int_equal(count("SELECT count(*) FROM agents.agent_messages"),
	                 before + 6);
	assert_int_equal(count("SELECT count(*) FROM agents.agent_sessions "
	                       "WHERE session_key IN ('batch-3', 'batch-4', "
	                       "'batch-5', 'batch-6')"),
	                 0);

	// No items, or more than a group holds: refused as a whole.
	rq.n_items = 0;
	assert_int_equal(
	        call(M("ReplyBatch"), &svc, &rq,
	             &parley__agents__v1__reply_batch_response__descriptor,
	             &out),
	        PL_INVALID_ARGUMENT);
	for (size_t i = 0; i <= AG_MAX_BATCH; i++)
		items[i] = &it[0];
	rq.n_items = AG_MAX_BATCH + 1;
	assert_int_equal(
	        call(M("ReplyBatch"), &svc, &rq,
	             &parley__agents__v1__reply_batch_response__descriptor,
	             &out),
	        PL_INVALID_ARGUMENT);
	// A tenant's user may not call it.
	rq.n_items = 1;
	assert_int_equal(
	        call(M("ReplyBatch"), &pa, &rq,
	             &parley__agents__v1__reply_batch_response__descriptor,
	             &out),
	        PL_PERMISSION_DENIED);
}

static void *
conc_reply(void *arg)
{
	conc *c = arg;
	ag_reply_req r = PARLEY__AGENTS__V1__REPLY_REQUEST__INIT;
	ag_reply_resp *o = NULL;
	pl_arena a;
	pl_rpc_opts op = { 0 };
	char mid[32];

	pl_arena_init(&a, 0, 0);
	snprintf(mid, sizeof(mid), "conc-%d", c->i % 2);
	r.tenant_id = ta;
	r.agent_id = (char *)c->agent;
	r.session_key = "conc-session";
	r.text = "what are your opening hours";
	r.message_id = mid;
	op.principal = &svc;
	c->rc = pl_rpc_call(h.cli, M("Reply"), &r.base,
	                    &parley__agents__v1__reply_response__descriptor,
	                    (void **)&o, &a, &op, NULL);
	pl_arena_fini(&a);
	return NULL;
}

static void
test_session_concurrency(void **state)
{
	(void)state;
	if (!up)
		skip();
	char *agent = make_agent(&pa, true, NULL);
	pthread_t th[8];
	conc c[8];
	agents_replyq *q = ((agents_ctx *)h.arg)->replyq;
	agents_replyq_stats s0, s1;

	assert_non_null(q); // groups are on by default
	agents_replyq_stats_get(q, &s0);
	for (int i = 0; i < 8; i++) {
		c[i].agent = agent;
		c[i].i = i;
		pthread_create(&th[i], NULL, conc_reply, &c[i]);
	}
	for (int i = 0; i < 8; i++) {
		pthread_join(th[i], NULL);
		assert_int_equal(c[i].rc, PL_OK);
	}
	// The eight went through the reply groups, and the groups' clocks ran:
	// every group took time, and every follower woken counts its wake-up.
	agents_replyq_stats_get(q, &s1);
	assert_int_equal(s1.replies - s0.replies, 8);
	assert_true(s1.groups > s0.groups);
	assert_true(s1.group_ns - s0.group_ns > 0);
	assert_true(s1.queued_ns >= s0.queued_ns);
	assert_true(s1.woken - s0.woken <= 8 - (s1.groups - s0.groups));
	assert_true(s1.woken_ns >= s0.woken_ns);
	// Two distinct messages, each answered once, in one session.
	assert_int_equal(count("SELECT count(*) FROM agents.agent_messages m "
	                       "JOIN agents.agent_sessions s ON s.id = "
	                       "m.session_id WHERE s.session_key = "
	                       "'conc-session' AND m.role = 'assistant'"),
	                 2);
	assert_int_equal(count("SELECT count(*) FROM agents.agent_sessions "
	                       "WHERE session_key = 'conc-session'"),
	                 1);
	// Answers alternate user/assistant in id order: never interleaved.
	assert_int_equal(count("SELECT count(*) FROM (SELECT role, lag(role) "
	                       "OVER (ORDER BY m.id) AS prev FROM "
	                       "agents.agent_messages m JOIN "
	                       "agents.agent_sessions s ON s.id = m.session_id "
	                       "WHERE s.session_key = 'conc-session') x WHERE "
	                       "role = prev"),
	                 0);
	pl_arena_reset(&h.arena);
}

static void
test_checkpoints(void **state)
{
	(void)state;
	if (!up)
		skip();
	Parley__Agents__V1__ImportCheckpointsRequest ic =
	        PARLEY__AGENTS__V1__IMPORT_CHECKPOINTS_REQUEST__INIT;
	Parley__Agents__V1__ImportCheckpointsResponse *icr = NULL;
	Parley__Agents__V1__GetLatestCheckpointRequest gl =
	        PARLEY__AGENTS__V1__GET_LATEST_CHECKPOINT_REQUEST__INIT;
	Parley__Agents__V1__GetLatestCheckpointResponse *glr = NULL;
	Parley__Agents__V1__GetImportSummaryRequest gs =
	        PARLEY__AGENTS__V1__GET_IMPORT_SUMMARY_REQUEST__INIT;
	Parley__Agents__V1__GetImportSummaryResponse *gsr = NULL;
	ag_checkpoint c1 = PARLEY__AGENTS__V1__CHECKPOINT__INIT, c2 = c1;
	ag_checkpoint *cps[] = { &c1, &c2 };
	ag_blob b1 = PARLEY__AGENTS__V1__CHECKPOINT_BLOB__INIT, b2 = b1;
	ag_blob *blobs[] = { &b1, &b2 };
	ag_write w1 = PARLEY__AGENTS__V1__CHECKPOINT_WRITE__INIT;
	ag_write *writes[] = { &w1 };
	Parley__Rpc__V1__Json st = PARLEY__RPC__V1__JSON__INIT;
	uint8_t raw[256];

	for (int i = 0; i < 256; i++)
		raw[i] = (uint8_t)i;
	st.text = "{\"channel_versions\":{\"messages\":\"2\"}}";
	c1.thread_id = "thread-1";
	c1.checkpoint_id = "1ef0001";
	c2.thread_id = "thread-1";
	c2.checkpoint_id = "1ef0002";
	c2.parent_checkpoint_id = "1ef0001";
	c2.state = &st;
	b1.thread_id = "thread-1";
	b1.channel = "messages";
	b1.version = "2";
	b1.type = "msgpack";
	b1.data.data = raw;
	b1.data.len = sizeof(raw);
	b2.thread_id = "thread-1";
	b2.channel = "old";
	b2.version = "1";
	b2.type = "empty";
	w1.thread_id = "thread-1";
	w1.checkpoint_id = "1ef0002";
	w1.task_id = "task";
	w1.channel = "messages";
	w1.type = "msgpack";
	w1.data.data = raw + 10;
	w1.data.len = 5;
	ic.tenant_id = ta;
	ic.checkpoints = cps;
	ic.n_checkpoints = 2;
	ic.blobs = blobs;
	ic.n_blobs = 2;
	ic.writes = writes;
	ic.n_writes = 1;
	assert_int_equal(
	        call(M("ImportCheckpoints"), &svc, &ic,
	             &parley__agents__v1__import_checkpoints_response__descriptor,
	             &icr),
	        PL_OK);
	assert_int_equal(icr->checkpoints_created, 2);
	assert_int_equal(icr->blobs_created, 2);
	assert_int_equal(icr->writes_created, 1);
	assert_int_equal(
	        call(M("ImportCheckpoints"), &svc, &ic,
	             &parley__agents__v1__import_checkpoints_response__descriptor,
	             &icr),
	        PL_OK);
	assert_int_equal(icr->skipped, 5);
	gl.thread_id = "thread-1";
	gl.include_blobs = true;
	assert_int_equal(
	        call(M("GetLatestCheckpoint"), &pa, &gl,
	             &parley__agents__v1__get_latest_checkpoint_response__descriptor,
	             &glr),
	        PL_OK);
	assert_string_equal(glr->checkpoint->checkpoint_id, "1ef0002");
	assert_int_equal(glr->n_blobs, 1);
	assert_int_equal(glr->blobs[0]->data.len, 256);
	assert_memory_equal(glr->blobs[0]->data.data, raw, 256);
	assert_int_equal(glr->n_writes, 1);
	assert_memory_equal(glr->writes[0]->data.data, raw + 10, 5);
	assert_int_equal(
	        call(M("GetLatestCheckpoint"), &pb, &gl,
	             &parley__agents__v1__get_latest_checkpoint_response__descriptor,
	             &glr),
	        PL_NOT_FOUND);
	gs.tenant_id = ta;
	assert_int_equal(
	        call(M("GetImportSummary"), &svc, &gs,
	             &parley__agents__v1__get_import_summary_response__descriptor,
	             &gsr),
	        PL_OK);
	assert_int_equal(gsr->n_counts, 3);
	assert_int_equal(gsr->counts[0]->count, 2);
	assert_int_equal(strlen(gsr->checksums[0]->sha256), 64);
	// Bad input stores nothing.
	c1.thread_id = "";
	assert_int_equal(
	        call(M("ImportCheckpoints"), &svc, &ic,
	             &parley__agents__v1__import_checkpoints_response__descriptor,
	             &icr),
	        PL_INVALID_ARGUMENT);
	pl_arena_reset(&h.arena);
}

static Parley__Agents__V1__ImportKnowledgeResponse *
import(const char *agent, ag_entry **e, size_t n, bool replace)
{
	Parley__Agents__V1__ImportKnowledgeRequest ik =
	        PARLEY__AGENTS__V1__IMPORT_KNOWLEDGE_REQUEST__INIT;
	Parley__Agents__V1__ImportKnowledgeResponse *ikr = NULL;

	ik.agent_id = (char *)agent;
	ik.entries = e;
	ik.n_entries = n;
	ik.replace = replace;
	assert_int_equal(
	        call(M("ImportKnowledge"), &pa, &ik,
	             &parley__agents__v1__import_knowledge_response__descriptor,
	             &ikr),
	        PL_OK);
	assert_int_equal(ikr->n_entry_ids, n);
	return ikr;
}

static ag_entry *
ext_entry(const char *ext, const char *q, const char *a)
{
	ag_entry *e = entry(q, a, NULL, "");

	e->external_id = (char *)ext;
	return e;
}

// ImportKnowledge writes a call's entries with one statement: ids come
// back in the entries' order, an external_id already in the base updates
// that entry (its id kept), a call naming one external_id twice is written
// entry after entry (the later wins), and replace deletes the rest.
static void
test_import_upsert(void **state)
{
	(void)state;
	if (!up)
		skip();
	char *agent = make_agent(&pa, false, NULL), ida[40], idb[40], sql[256];
	ag_entry *e[3];
	Parley__Agents__V1__ImportKnowledgeResponse *r;

	e[0] = ext_entry("a", "Do you deliver on Sundays?", "No.");
	e[1] = ext_entry("b", "Can I pay cash?", "Yes.");
	e[2] = ext_entry("", "Where are you?", "Main street 1.");
	r = import(agent, e, 3, false);
	assert_int_equal(r->created, 3);
	assert_int_equal(r->updated, 0);
	snprintf(ida, sizeof(ida), "%s", r->entry_ids[0]);
	snprintf(idb, sizeof(idb), "%s", r->entry_ids[1]);
	assert_string_not_equal(ida, idb);
	assert_string_not_equal(idb, r->entry_ids[2]);

	e[0] = ext_entry("b", "Can I pay cash?", "Only up to 50 EUR.");
	e[1] = ext_entry("d", "Do you sell gift cards?", "Yes, in store.");
	e[2] = ext_entry("a", "Do you deliver on Sundays?", "No.");
	r = import(agent, e, 3, false);
	assert_int_equal(r->created, 1);
	assert_int_equal(r->updated, 2);
	assert_string_equal(r->entry_ids[0], idb);
	assert_string_equal(r->entry_ids[2], ida);
	assert_string_not_equal(r->entry_ids[1], ida);
	snprintf(
	        sql, sizeof(sql),
	        "SELECT count(*) FROM agents.knowledge_entries WHERE id = '%s' "
	        "AND answer = 'Only up to 50 EUR.'",
	        idb);
	assert_int_equal(count(sql), 1);

	e[0] = ext_entry("e", "Is there parking?", "Yes.");
	e[1] = ext_entry("e", "Is there parking?", "Yes, 20 places.");
	r = import(agent, e, 2, false);
	assert_int_equal(r->created, 1);
	assert_int_equal(r->updated, 1);
	assert_string_equal(r->entry_ids[0], r->entry_ids[1]);
	snprintf(
	        sql, sizeof(sql),
	        "SELECT count(*) FROM agents.knowledge_entries WHERE id = '%s' "
	        "AND answer = 'Yes, 20 places.'",
	        r->entry_ids[0]);
	assert_int_equal(count(sql), 1);

	// make_agent's three, a, b, the one without an id, d, e: all but a.
	e[0] = ext_entry("a", "Do you deliver on Sundays?", "Yes, now.");
	r = import(agent, e, 1, true);
	assert_int_equal(r->deleted, 7);
	assert_int_equal(r->updated, 1);
	assert_string_equal(r->entry_ids[0], ida);
	snprintf(sql, sizeof(sql),
	         "SELECT count(*) FROM agents.knowledge_entries e JOIN "
	         "agents.agents g ON e.knowledge_base_id = ANY "
	         "(g.knowledge_base_ids) WHERE g.id = '%s'",
	         agent);
	assert_int_equal(count(sql), 1);
	pl_arena_reset(&h.arena);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_retrieval_reply),
		cmocka_unit_test(test_reply_bad_input),
		cmocka_unit_test(test_versions_and_cross_tenant),
		cmocka_unit_test(test_llm_paths),
		cmocka_unit_test(test_reply_batch),
		cmocka_unit_test(test_session_concurrency),
		cmocka_unit_test(test_checkpoints),
		cmocka_unit_test(test_import_upsert),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
