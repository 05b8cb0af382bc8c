// Messaging with its REAL peers: tenants, billing and agents each run with
// svch (own database in one pgh cluster, own role, migrations, RPC server on
// inproc://, background jobs), messaging calls them over RPC, and the fake
// WhatsApp provider on loopback receives the replies. The webhooks are the
// fixture of ../shared/fixtures/webhooks (read, never copied; the tests skip
// when it is absent) with the message id and text replaced, signed with the
// channel's app secret.
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
#include "messaging.h"
#include "pgh.h"
#include "pl/id.h"
#include "svch.h"

extern const pl_service_def tenants_service_def;
extern const pl_service_def billing_service_def;
extern const pl_service_def agents_service_def;

#define FIX PARLEY_WEBHOOK_FIXTURES
#define CRED                                                                   \
	"PARLEY_CREDENTIALS_KEY=MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
#define TOKEN_A "EAAG-token-of-tenant-a-0001"
#define TOKEN_B "EAAG-token-of-tenant-b-0002"
#define APP_A   "app-secret-of-tenant-a"
#define APP_B   "app-secret-of-tenant-b"
#define PNID_A  "1122334455667"
#define PNID_B  "2233445566778"
#define HOURS_A "We are open 9 to 18, Monday to Saturday."

// An answer longer than WhatsApp takes in one text (4,096 characters):
// 500 lines of "Item NNN, 7 EUR.\n" (17 bytes each, 8,500 in all).
static char *
catalogue(void)
{
	static char text[8600];
	if (text[0] == '\0')
		for (int i = 0; i < 500; i++)
			snprintf(text + (size_t)i * 17, 18,
			         "Item %03d, 7 EUR.\n", i);
	return text;
}

static pgh pg;
static svch ht, hb, ha, hm; // tenants, billing, agents, messaging
static fake_provider *fp;
static bool up;
static char env_buf[4][PGH_URL_MAX + 64];

// ---------------------------------------------------------------------------
// Set-up: billing, agents, tenants, messaging, in the order their URLs are
// needed. putenv is process-wide, so every service's list names every
// variable it reads.

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
		// The outbox relay takes tenant.created to billing.
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
			"PARLEY_MESSAGING_RETRY_BASE=50ms",
			"PARLEY_MESSAGING_SEND_TIMEOUT=2s",
			// Cached as deployed: a round asks billing for its
			// new messages while it commits them only for a
			// tenant whose settings are in the cache.
			"PARLEY_MESSAGING_CHANNEL_CACHE=60s",
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
	fake_provider_stop(fp);
	pgh_stop(&pg);
	return 0;
}

#define NEED()                                                                 \
	do {                                                                   \
		if (!up)                                                       \
			skip();                                                \
	} while (0)

#define FIXTURES()                                                             \
	do {                                                                   \
		if (access(FIX "whatsapp_cloud_inbound_text.json", R_OK) !=    \
		            0 ||                                               \
		    access(FIX "whatsapp_cloud_status_updates.json", R_OK) !=  \
		            0) {                                               \
			fprintf(stderr, "fixtures missing at %s: skipped\n",   \
			        FIX);                                          \
			skip();                                                \
		}                                                              \
	} while (0)

static int
call(svch *h, const char *m, const pl_principal *p, const void *in,
     const ProtobufCMessageDescriptor *d, void *out)
{
	pl_rpc_result res = { 0 };
	int rc = svch_call(h, m, p, in, d, out, &res);
	if (rc != PL_OK)
		fprintf(stderr, "%s: %s %s\n", m, pl_status_name(rc),
		        res.message ? res.message : "");
	return rc;
}

// A scalar from SQL on a service's database as the superuser.
static long
sqlv(const svch *h, const char *sql, char *out, size_t outlen)
{
	PGconn *c = PQconnectdb(h->admin_url);
	PGresult *r = PQexec(c, sql);
	long v = -1;
	if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0) {
		v = atol(PQgetvalue(r, 0, 0));
		if (out)
			snprintf(out, outlen, "%s", PQgetvalue(r, 0, 0));
	} else if (PQresultStatus(r) != PGRES_TUPLES_OK) {
		fprintf(stderr, "sql: %s\n", PQerrorMessage(c));
	}
	PQclear(r);
	PQfinish(c);
	return v;
}

static long
wait_for(const svch *h, const char *sql, long want, int ms)
{
	long v = -1;
	for (int i = 0; i < ms / 20; i++) {
		if ((v = sqlv(h, sql, NULL, 0)) == want)
			break;
		usleep(20000);
	}
	return v;
}

static char *
slurp(const char *path)
{
	FILE *f = fopen(path, "rb");
	char *b;
	long n;
	if (f == NULL)
		return NULL;
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	b = malloc((size_t)n + 1);
	if (b == NULL || fread(b, 1, (size_t)n, f) != (size_t)n) {
		free(b);
		fclose(f);
		return NULL;
	}
	b[n] = '\0';
	fclose(f);
	return b;
}

// entry[0].changes[0]
static json_t *
change_of(json_t *body)
{
	return json_array_get(
	        json_object_get(
	                json_array_get(json_object_get(body, "entry"), 0),
	                "changes"),
	        0);
}

// The inbound fixture with its message id, text and phone_number_id set.
static char *
inbound(const char *id, const char *text, const char *pnid)
{
	char *raw = slurp(FIX "whatsapp_cloud_inbound_text.json");
	json_t *root, *val, *m;
	char *s;

	if (raw == NULL)
		return NULL;
	root = json_loads(raw, 0, NULL);
	free(raw);
	val = json_object_get(change_of(root), "value");
	m = json_array_get(json_object_get(val, "messages"), 0);
	json_object_set_new(m, "id", json_string(id));
	json_object_set_new(json_object_get(m, "text"), "body",
	                    json_string(text));
	json_object_set_new(json_object_get(val, "metadata"), "phone_number_id",
	                    json_string(pnid));
	s = json_dumps(root, JSON_COMPACT);
	json_decref(root);
	return s;
}

// The status fixture `which` ("sent", "delivered", "read") for pid.
static char *
status_body(const char *which, const char *pid, const char *pnid)
{
	char *raw = slurp(FIX "whatsapp_cloud_status_updates.json");
	json_t *root, *b, *val, *st;
	char *s;

	if (raw == NULL)
		return NULL;
	root = json_loads(raw, 0, NULL);
	free(raw);
	b = json_object_get(root, which);
	val = json_object_get(change_of(b), "value");
	st = json_array_get(json_object_get(val, "statuses"), 0);
	json_object_set_new(st, "id", json_string(pid));
	json_object_set_new(json_object_get(val, "metadata"), "phone_number_id",
	                    json_string(pnid));
	s = json_dumps(b, JSON_COMPACT);
	json_decref(root);
	return s;
}

// HandleWebhook signed with secret (X-Hub-Signature-256 over the bytes).
static int
webhook(const char *channel, const char *body, const char *secret)
{
	Parley__Messaging__V1__HandleWebhookRequest rq =
	        PARLEY__MESSAGING__V1__HANDLE_WEBHOOK_REQUEST__INIT;
	Parley__Messaging__V1__HttpHeader hd =
	        PARLEY__MESSAGING__V1__HTTP_HEADER__INIT;
	Parley__Messaging__V1__HttpHeader *hs[1] = { &hd };
	Parley__Messaging__V1__HandleWebhookResponse *out = NULL;
	char sig[72];
	pl_principal svc = svch_service();

	fake_provider_sign(secret, body, strlen(body), sig);
	rq.channel_id = (char *)channel;
	rq.channel_type = 1;
	rq.body.data = (uint8_t *)body;
	rq.body.len = strlen(body);
	hd.name = "X-Hub-Signature-256";
	hd.value = sig;
	rq.headers = hs;
	rq.n_headers = 1;
	return call(&hm, "/parley.messaging.v1.Messaging/HandleWebhook", &svc,
	            &rq.base,
	            &parley__messaging__v1__handle_webhook_response__descriptor,
	            (void **)&out);
}

// ---------------------------------------------------------------------------
// A tenant made through the real services: sign-up (tenants; billing starts
// its trial from tenant.created), a published retrieval agent with a small
// FAQ (agents), a WhatsApp Cloud channel pointing at the fake provider with
// the agent attached (tenants).

typedef struct tenant {
	char id[40], user[40], agent[40], channel[40];
} tenant;

static void
make_tenant(tenant *t, const char *name, const char *email,
            const char *plan_code, const char *pnid, const char *token,
            const char *app_secret)
{
	pl_principal owner;

	{
		Parley__Tenants__V1__SignUpRequest in =
		        PARLEY__TENANTS__V1__SIGN_UP_REQUEST__INIT;
		Parley__Tenants__V1__SignUpResponse *out = NULL;
		in.tenant_name = (char *)name;
		in.email = (char *)email;
		in.password = "Correct-horse-battery-9";
		in.full_name = "Owner";
		in.plan_code = (char *)plan_code;
		assert_int_equal(
		        call(&ht, "/parley.tenants.v1.Tenants/SignUp", NULL,
		             &in,
		             &parley__tenants__v1__sign_up_response__descriptor,
		             (void **)&out),
		        PL_OK);
		snprintf(t->id, sizeof(t->id), "%s", out->tenant->id);
		snprintf(t->user, sizeof(t->user), "%s", out->user->id);
	}
	owner = svch_user(t->id, t->user, PARLEY__RPC__V1__ROLE__ROLE_OWNER);
	{
		// billing learns of the tenant through tenants' outbox.
		Parley__Billing__V1__GetSubscriptionRequest in =
		        PARLEY__BILLING__V1__GET_SUBSCRIPTION_REQUEST__INIT;
		Parley__Billing__V1__GetSubscriptionResponse *out = NULL;
		pl_rpc_result res = { 0 };
		int rc = PL_NOT_FOUND;
		for (int i = 0; i < 500 && rc != PL_OK; i++) {
			rc = svch_call(
			        &hb,
			        "/parley.billing.v1.Billing/GetSubscription",
			        &owner, &in.base,
			        &parley__billing__v1__get_subscription_response__descriptor,
			        (void **)&out, &res);
			if (rc != PL_OK)
				usleep(20000);
		}
		assert_int_equal(rc, PL_OK);
		assert_string_equal(out->subscription->plan_code,
		                    plan_code[0] ? plan_code : "starter");
	}
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
		Parley__Agents__V1__KnowledgeEntry e[3],
		        *ents[3] = { &e[0], &e[1], &e[2] };
		ca.name = "Shop bot";
		assert_int_equal(
		        call(&ha, "/parley.agents.v1.Agents/CreateAgent",
		             &owner, &ca,
		             &parley__agents__v1__create_agent_response__descriptor,
		             (void **)&car),
		        PL_OK);
		snprintf(t->agent, sizeof(t->agent), "%s", car->id);
		for (int i = 0; i < 3; i++)
			parley__agents__v1__knowledge_entry__init(&e[i]);
		e[0].question = "What are your opening hours?";
		e[0].answer = HOURS_A;
		e[0].intent = "hours";
		e[1].question = "How much is shipping?";
		e[1].answer = "Shipping costs 5 EUR, free above 50 EUR.";
		e[1].intent = "shipping";
		e[2].question = "What is in the catalogue?";
		e[2].answer = catalogue();
		e[2].intent = "catalogue";
		ik.agent_id = t->agent;
		ik.entries = ents;
		ik.n_entries = 3;
		assert_int_equal(
		        call(&ha, "/parley.agents.v1.Agents/ImportKnowledge",
		             &owner, &ik,
		             &parley__agents__v1__import_knowledge_response__descriptor,
		             (void **)&ikr),
		        PL_OK);
		pr.id = t->agent;
		assert_int_equal(
		        call(&ha, "/parley.agents.v1.Agents/PublishAgent",
		             &owner, &pr,
		             &parley__agents__v1__publish_agent_response__descriptor,
		             (void **)&prr),
		        PL_OK);
	}
	{
		Parley__Tenants__V1__CreateChannelRequest in =
		        PARLEY__TENANTS__V1__CREATE_CHANNEL_REQUEST__INIT;
		Parley__Tenants__V1__CreateChannelResponse *out = NULL;
		in.type =
		        PARLEY__TENANTS__V1__CHANNEL_TYPE__CHANNEL_TYPE_WHATSAPP_CLOUD;
		in.name = "Main line";
		in.phone_number_id = (char *)pnid;
		in.access_token = (char *)token;
		in.app_secret = (char *)app_secret;
		in.verify_token = "verify-token-0001";
		in.api_base_url = (char *)fake_provider_url(fp);
		in.agent_id = t->agent;
		assert_int_equal(
		        call(&ht, "/parley.tenants.v1.Tenants/CreateChannel",
		             &owner, &in,
		             &parley__tenants__v1__create_channel_response__descriptor,
		             (void **)&out),
		        PL_OK);
		snprintf(t->channel, sizeof(t->channel), "%s", out->id);
	}
}

static tenant ta;

// Posts a signed inbound text to tenant A's channel and waits until the
// provider has received n requests in all.
static void
post_a(const char *id, const char *text, int n)
{
	char *b = inbound(id, text, PNID_A);

	assert_non_null(b);
	assert_int_equal(webhook(ta.channel, b, APP_A), PL_OK);
	free(b);
	assert_int_equal(fake_provider_wait(fp, n, 15000), n);
}

// Sign-up to read receipt: the fixture webhook → contact, conversation,
// message → billing reservation → agents' retrieval answer → the fake
// provider gets the Graph API call with the channel's token → sent,
// delivered, read from status webhooks.
static void
test_journey(void **state)
{
	char *b, path[256], auth[256], *req = NULL, pid[128] = "", sql[512];
	json_t *j;
	int base;

	(void)state;
	NEED();
	FIXTURES();
	make_tenant(&ta, "Pizza Uno", "owner@uno.example", "", PNID_A, TOKEN_A,
	            APP_A);
	base = fake_provider_count(fp);
	b = inbound("wamid.real-1", "what are your opening hours", PNID_A);
	assert_non_null(b);
	assert_int_equal(webhook(ta.channel, b, APP_A), PL_OK);
	free(b);
	// A wrong signature is refused before anything is stored.
	b = inbound("wamid.real-x", "forged", PNID_A);
	assert_int_equal(webhook(ta.channel, b, "not-the-secret"),
	                 PL_UNAUTHENTICATED);
	free(b);

	assert_int_equal(fake_provider_wait(fp, base + 1, 15000), base + 1);
	assert_true(fake_provider_request(fp, base, path, sizeof(path), auth,
	                                  sizeof(auth), &req));
	assert_string_equal(path, "/" PNID_A "/messages");
	assert_string_equal(auth, "Bearer " TOKEN_A);
	j = json_loads(req, 0, NULL);
	assert_non_null(j);
	assert_string_equal(
	        json_string_value(json_object_get(j, "messaging_product")),
	        "whatsapp");
	assert_string_equal(json_string_value(json_object_get(j, "to")),
	                    "972987654321");
	assert_string_equal(json_string_value(json_object_get(j, "type")),
	                    "text");
	assert_string_equal(json_string_value(json_object_get(
	                            json_object_get(j, "text"), "body")),
	                    HOURS_A);
	json_decref(j);
	free(req);

	assert_int_equal(wait_for(&hm,
	                          "SELECT count(*) FROM messaging.messages "
	                          "WHERE direction = 'outbound' AND status = "
	                          "'sent' AND sender = 'bot'",
	                          1, 8000),
	                 1);
	sqlv(&hm,
	     "SELECT provider_message_id FROM messaging.messages WHERE "
	     "direction = 'outbound'",
	     pid, sizeof(pid));
	assert_true(strncmp(pid, "wamid.fake-", 11) == 0);
	assert_int_equal(sqlv(&hm,
	                      "SELECT count(*) FROM messaging.messages WHERE "
	                      "provider_message_id = 'wamid.real-x'",
	                      NULL, 0),
	                 0);
	// The agent's side: one session, the message and the answer.
	assert_true(sqlv(&ha, "SELECT count(*) FROM agents.agent_messages",
	                 NULL, 0) >= 2);
	// billing counted the answered message.
	snprintf(sql, sizeof(sql),
	         "SELECT count(*) FROM billing.usage_reservations WHERE "
	         "tenant_id = '%s' AND idempotency_key = 'wamid.real-1'",
	         ta.id);
	assert_int_equal(sqlv(&hb, sql, NULL, 0), 1);

	static const char *const steps[] = { "sent", "delivered", "read" };
	for (int i = 0; i < 3; i++) {
		b = status_body(steps[i], pid, PNID_A);
		assert_non_null(b);
		assert_int_equal(webhook(ta.channel, b, APP_A), PL_OK);
		free(b);
		snprintf(sql, sizeof(sql),
		         "SELECT count(*) FROM messaging.messages WHERE "
		         "provider_message_id = '%s' AND status = '%s'",
		         pid, steps[i]);
		assert_int_equal(wait_for(&hm, sql, 1, 8000), 1);
	}
	snprintf(sql, sizeof(sql),
	         "SELECT count(*) FROM messaging.messages WHERE "
	         "provider_message_id = '%s' AND delivered_at IS NOT NULL AND "
	         "read_at IS NOT NULL",
	         pid);
	assert_int_equal(sqlv(&hm, sql, NULL, 0), 1);
	assert_int_equal(fake_provider_count(fp), base + 1);

	// A text of 64 KB: stored, cut to what agents.Reply takes, answered
	// (before 2026-11-23 agents refused it and the message was asked
	// again after every lease, its conversation stuck behind it).
	{
		char *big = malloc(65537);
		assert_non_null(big);
		memset(big, 'a', 65536);
		big[65536] = '\0';
		post_a("wamid.real-big", big, base + 2);
		free(big);
		assert_int_equal(
		        sqlv(&hm,
		             "SELECT count(*) FROM messaging.messages WHERE "
		             "provider_message_id = 'wamid.real-big' AND "
		             "reply_outcome IN ('replied', 'handoff', "
		             "'no_reply') "
		             "AND length(text) = 65535",
		             NULL, 0),
		        1);
	}
	// A provider id longer than billing's idempotency keys: reserved
	// under the message's own id, answered (billing refused it before,
	// and the message was asked again every second, for ever).
	{
		char id[300];
		memset(id, 'x', 230);
		memcpy(id, "wamid.", 6);
		id[230] = '\0';
		post_a(id, "what are your opening hours", base + 3);
		snprintf(
		        sql, sizeof(sql),
		        "SELECT count(*) FROM billing.usage_reservations WHERE "
		        "tenant_id = '%s' AND length(idempotency_key) = 36",
		        ta.id);
		assert_int_equal(sqlv(&hb, sql, NULL, 0), 1);
	}
	// An answer over WhatsApp's 4,096 characters: the text sent is cut
	// to fit at a line's end and ends with "…" (the fake provider, as
	// WhatsApp, refuses a longer one with 400 and the customer would get
	// nothing); the stored message keeps the whole answer.
	{
		const char *body;
		size_t n;
		post_a("wamid.real-long", "what is in the catalogue", base + 4);
		assert_true(fake_provider_request(fp, base + 3, path,
		                                  sizeof(path), auth,
		                                  sizeof(auth), &req));
		j = json_loads(req, 0, NULL);
		body = json_string_value(
		        json_object_get(json_object_get(j, "text"), "body"));
		assert_non_null(body);
		n = strlen(body);
		// 240 lines whole (4,080 bytes less the last newline), "…".
		assert_int_equal(n, 4079 + 3);
		assert_string_equal(body + n - 19, "Item 239, 7 EUR.\u2026");
		json_decref(j);
		free(req);
		assert_int_equal(
		        wait_for(
		                &hm,
		                "SELECT count(*) FROM messaging.messages WHERE "
		                "direction = 'outbound' AND status = 'sent' "
		                "AND "
		                "length(text) >= 8499",
		                1, 8000),
		        1);
	}
}

// Billing counts each message once, however it is asked: messaging
// reserves a round's new messages while the round commits, and a turn
// claimed later (behind an earlier message of its conversation) asks
// again, which billing answers as a replay. A duplicate webhook counts
// once; an opt-out keyword, which ends its turn without one, not at all.
static void
test_reservations_exact(void **state)
{
	static const char *const ids[] = { "wamid.exact-1", "wamid.exact-2",
		                           "wamid.exact-1", "wamid.exact-3" };
	static const char *const texts[] = { "how much is shipping?",
		                             "what are your opening hours?",
		                             "how much is shipping?", "STOP" };
	char sql[512];
	int base;

	(void)state;
	NEED();
	FIXTURES();
	base = fake_provider_count(fp);
	for (int i = 0; i < 4; i++) {
		char *b = inbound(ids[i], texts[i], PNID_A);
		assert_non_null(b);
		assert_int_equal(webhook(ta.channel, b, APP_A), PL_OK);
		free(b);
	}
	assert_int_equal(wait_for(&hm,
	                          "SELECT count(*) FROM messaging.messages "
	                          "WHERE provider_message_id LIKE "
	                          "'wamid.exact-%' AND reply_state = 'done'",
	                          3, 20000),
	                 3);
	// Two answers and the opt-out's confirmation.
	assert_int_equal(fake_provider_wait(fp, base + 3, 10000), base + 3);
	assert_int_equal(sqlv(&hm,
	                      "SELECT count(*) FROM messaging.messages WHERE "
	                      "provider_message_id = 'wamid.exact-3' AND "
	                      "reply_outcome = 'opt_out'",
	                      NULL, 0),
	                 1);
	snprintf(sql, sizeof(sql),
	         "SELECT count(*) FROM billing.usage_reservations WHERE "
	         "tenant_id = '%s' AND idempotency_key IN ('wamid.exact-1', "
	         "'wamid.exact-2')",
	         ta.id);
	assert_int_equal(sqlv(&hb, sql, NULL, 0), 2);
	snprintf(sql, sizeof(sql),
	         "SELECT count(*) FROM billing.usage_reservations WHERE "
	         "tenant_id = '%s' AND idempotency_key = 'wamid.exact-3'",
	         ta.id);
	assert_int_equal(sqlv(&hb, sql, NULL, 0), 0);
}

// A plan of 5 messages a day: the 6th inbound message is stored, never
// answered, and limit.reached is recorded.
static void
test_daily_quota(void **state)
{
	Parley__Billing__V1__CreatePlanRequest in =
	        PARLEY__BILLING__V1__CREATE_PLAN_REQUEST__INIT;
	Parley__Billing__V1__Limits lim = PARLEY__BILLING__V1__LIMITS__INIT;
	Parley__Billing__V1__Features feat =
	        PARLEY__BILLING__V1__FEATURES__INIT;
	Parley__Billing__V1__CreatePlanResponse *out = NULL;
	pl_principal admin = PARLEY__RPC__V1__PRINCIPAL__INIT;
	char admin_id[40], sql[512];
	tenant tb;
	int base;

	(void)state;
	NEED();
	FIXTURES();
	pl_uuid7_str(admin_id);
	admin.kind = PARLEY__RPC__V1__PRINCIPAL_KIND__PRINCIPAL_KIND_USER;
	admin.user_id = admin_id;
	admin.platform_admin = true;
	in.code = "five-a-day";
	in.name = "Five a day";
	in.currency = "USD";
	in.interval =
	        PARLEY__BILLING__V1__BILLING_INTERVAL__BILLING_INTERVAL_MONTH;
	in.trial_days = 14;
	in.is_public = true;
	lim.messages_per_day = 5;
	lim.messages_per_month = 1000;
	lim.campaigns_per_day = 0;
	lim.campaigns_per_month = 0;
	lim.agents = 1;
	lim.seats = 1;
	lim.knowledge_entries = 100;
	lim.ai_tokens_per_month = 0;
	feat.human_takeover = true;
	in.limits = &lim;
	in.features = &feat;
	assert_int_equal(
	        call(&hb, "/parley.billing.v1.Billing/CreatePlan", &admin, &in,
	             &parley__billing__v1__create_plan_response__descriptor,
	             (void **)&out),
	        PL_OK);
	make_tenant(&tb, "Tiny Shop", "owner@tiny.example", "five-a-day",
	            PNID_B, TOKEN_B, APP_B);

	base = fake_provider_count(fp);
	for (int i = 1; i <= 6; i++) {
		char id[32], *b;
		snprintf(id, sizeof(id), "wamid.quota-%d", i);
		b = inbound(id, "how much is shipping?", PNID_B);
		assert_int_equal(webhook(tb.channel, b, APP_B), PL_OK);
		free(b);
	}
	snprintf(sql, sizeof(sql),
	         "SELECT count(*) FROM messaging.messages WHERE tenant_id = "
	         "'%s' AND direction = 'inbound' AND reply_state = 'done'",
	         tb.id);
	assert_int_equal(wait_for(&hm, sql, 6, 20000), 6);
	assert_int_equal(fake_provider_wait(fp, base + 5, 10000), base + 5);
	snprintf(sql, sizeof(sql),
	         "SELECT count(*) FROM messaging.messages WHERE tenant_id = "
	         "'%s' AND direction = 'outbound' AND status = 'sent'",
	         tb.id);
	assert_int_equal(wait_for(&hm, sql, 5, 8000), 5);
	// The 6th (in arrival order: one conversation, answered in order).
	assert_int_equal(sqlv(&hm,
	                      "SELECT count(*) FROM messaging.messages WHERE "
	                      "provider_message_id = 'wamid.quota-6' AND "
	                      "reply_outcome = 'quota_exceeded'",
	                      NULL, 0),
	                 1);
	snprintf(sql, sizeof(sql),
	         "SELECT count(*) FROM messaging.outbox WHERE tenant_id = '%s' "
	         "AND type = 'limit.reached'",
	         tb.id);
	assert_int_equal(sqlv(&hm, sql, NULL, 0), 1);
	usleep(300000);
	assert_int_equal(fake_provider_count(fp), base + 5);
	for (int i = 0; i < 5; i++) {
		char path[256], auth[256];
		assert_true(fake_provider_request(fp, base + i, path,
		                                  sizeof(path), auth,
		                                  sizeof(auth), NULL));
		assert_string_equal(path, "/" PNID_B "/messages");
		assert_string_equal(auth, "Bearer " TOKEN_B);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_journey),
		cmocka_unit_test(test_reservations_exact),
		cmocka_unit_test(test_daily_quota),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
