// Messaging engagement against a real PostgreSQL, the fake provider and
// small fake tenants/billing peers: templates (fill, send as WhatsApp
// "type":"template"), campaigns (exactly once with opt-outs skipped, two
// senders at once, a sender that dies mid-batch, billing limit → paused),
// opt-out keywords, leads with the conversation's stage, orders (totals,
// transitions), actions (approve twice → executed once, reject, expire),
// cross-tenant NOT_FOUND and bad input.
#include <pthread.h>
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

#include "engage.h"
#include "fake_peers.h"
#include "fake_provider.h"
#include "pl/id.h"
#include "pgh.h"
#include "svch.h"

#define T1   "0190b000-0000-7000-8000-000000000001"
#define T2   "0190b000-0000-7000-8000-000000000002"
#define U1   "0190b000-0000-7000-8000-0000000000a1"
#define C_WA "0190b000-0000-7000-8000-0000000000c1"
#define M(x) Parley__Messaging__V1__##x
#define MS   "/parley.messaging.v1.Messaging/"

static pgh pg;
static svch h;
static fake_provider *fp;
static fake_peers *peers;
static bool up;
static volatile bool billing_refuse;
static volatile int reserved;

// ---------------------------------------------------------------------------
// Fake peers: tenants (one WhatsApp channel of T1), billing.

static int
peer_handler(pl_call *call, const void *inp, void *outp)
{
	const char *m = strrchr(call->method, '/') + 1;

	if (strcmp(m, "ResolveChannel") == 0 ||
	    strcmp(m, "GetChannelSecrets") == 0) {
		Parley__Tenants__V1__Channel *ch =
		        pl_arena_zalloc(call->arena, sizeof(*ch));
		parley__tenants__v1__channel__init(ch);
		ch->id = C_WA;
		ch->type = 1;
		ch->status =
		        PARLEY__TENANTS__V1__CHANNEL_STATUS__CHANNEL_STATUS_ACTIVE;
		ch->api_base_url = (char *)fake_provider_url(fp);
		ch->phone_number_id = "1122334455667";
		if (m[0] == 'R') {
			Parley__Tenants__V1__ResolveChannelResponse *o = outp;
			o->tenant_id = T1;
			o->channel = ch;
		} else {
			Parley__Tenants__V1__GetChannelSecretsResponse *o =
			        outp;
			o->channel = ch;
			o->access_token = "tok";
			o->app_secret = "s";
		}
		(void)inp;
		return PL_OK;
	}
	if (strcmp(m, "GetEntitlements") == 0) {
		Parley__Billing__V1__GetEntitlementsResponse *o = outp;
		Parley__Billing__V1__Features *f =
		        pl_arena_zalloc(call->arena, sizeof(*f));
		parley__billing__v1__features__init(f);
		f->campaigns = true;
		o->active = true;
		o->features = f;
		return PL_OK;
	}
	if (strcmp(m, "ReserveUsage") == 0) {
		const Parley__Billing__V1__ReserveUsageRequest *in = inp;
		if (billing_refuse &&
		    in->metric == PARLEY__BILLING__V1__METRIC__METRIC_MESSAGES)
			return pl_call_error(call, PL_RESOURCE_EXHAUSTED,
			                     "messages_per_day");
		if (in->metric == PARLEY__BILLING__V1__METRIC__METRIC_MESSAGES)
			__sync_fetch_and_add(&reserved, (int)in->amount);
		return PL_OK;
	}
	return pl_call_error(call, PL_UNIMPLEMENTED, "fake peer: %s", m);
}

static int
start_peers(void)
{
	static const ProtobufCServiceDescriptor *const d[] = {
		&parley__tenants__v1__tenants__descriptor,
		&parley__billing__v1__billing__descriptor,
	};

	return fake_peers_start(&peers, "inproc://engage-peers", 4,
	                        peer_handler, d, 2);
}

static const char *const env[] = {
	"PARLEY_TENANTS_URL=inproc://engage-peers",
	"PARLEY_BILLING_URL=inproc://engage-peers",
	"PARLEY_SERVICE_SECRET=" SVCH_SECRET,
	"PARLEY_MESSAGING_POLL=20ms",
	"PARLEY_MESSAGING_SEND_RATE=100000",
	"PARLEY_MESSAGING_DELIVERY_WORKERS=4",
	"PARLEY_MESSAGING_CHANNEL_CACHE=10s",
	"PARLEY_MESSAGING_CAMPAIGN_SENDERS=0", // the tests drive the senders
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
	for (int i = 0; env[i]; i++)
		putenv((char *)env[i]);
	if (fake_provider_start(&fp) != 0 || start_peers() != 0)
		return -1;
	if (svch_start(&h, &pg, &messaging_service_def, 4, env) != 0)
		return -1;
	if (messaging_service_def.start(h.arg) != PL_OK)
		return -1;
	up = true;
	return 0;
}

static int
teardown(void **state)
{
	(void)state;
	if (up)
		svch_stop(&h);
	fake_peers_stop(peers);
	fake_provider_stop(fp);
	pgh_stop(&pg);
	return 0;
}

#define NEED()                                                                 \
	do {                                                                   \
		if (!up)                                                       \
			skip();                                                \
	} while (0)

static long
sqlv(const char *sql, char *out, size_t outlen)
{
	PGconn *c = PQconnectdb(h.admin_url);
	PGresult *r = PQexec(c, sql);
	long v = -1;
	if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0) {
		v = atol(PQgetvalue(r, 0, 0));
		if (out)
			snprintf(out, outlen, "%s", PQgetvalue(r, 0, 0));
	} else if (PQresultStatus(r) == PGRES_COMMAND_OK) {
		v = 0;
	} else {
		fprintf(stderr, "sql: %s\n", PQerrorMessage(c));
	}
	PQclear(r);
	PQfinish(c);
	return v;
}

static long
wait_for(const char *sql, long want, int seconds)
{
	long v = -1;
	for (int i = 0; i < seconds * 20; i++) {
		v = sqlv(sql, NULL, 0);
		if (v == want)
			break;
		usleep(50000);
	}
	return v;
}

static int
call_as(const char *tenant, int role, const char *method,
        const ProtobufCMessage *in, const ProtobufCMessageDescriptor *od,
        void **out, const char *key)
{
	pl_principal p = svch_user(tenant, U1, role);
	pl_rpc_opts o = { 0 };
	char full[128];
	o.principal = &p;
	o.idempotency_key = key;
	snprintf(full, sizeof(full), MS "%s", method);
	return pl_rpc_call(h.cli, full, in, od, out, &h.arena, &o, NULL);
}

#define ADMIN PARLEY__RPC__V1__ROLE__ROLE_ADMIN

// A contact of T1 with an open conversation, made by SQL (tests only).
static void
mk_contact(const char *id, const char *name, bool opted_out, char *conv)
{
	char sql[1024];
	snprintf(sql, sizeof(sql),
	         "INSERT INTO messaging.contacts (tenant_id, id, channel_id, "
	         "external_id, external_id_kind, phone, name, opted_out_at) "
	         "VALUES ('%s', '%s', '%s', '%s', 'phone', '+%s', '%s', %s)",
	         T1, id, C_WA, id, id, name, opted_out ? "now()" : "NULL");
	assert_int_equal(sqlv(sql, NULL, 0), 0);
	if (conv) {
		char cid[40];
		pl_uuid7_str(cid);
		snprintf(sql, sizeof(sql),
		         "INSERT INTO messaging.conversations (tenant_id, id, "
		         "contact_id, channel_id, last_inbound_at) VALUES "
		         "('%s', "
		         "'%s', '%s', '%s', now())",
		         T1, cid, id, C_WA);
		assert_int_equal(sqlv(sql, NULL, 0), 0);
		strcpy(conv, cid);
	}
}

static char tpl_id[40];

static void
mk_template(const char *cat, const char *text, char *id_out)
{
	M(CreateTemplateRequest)
	rq = PARLEY__MESSAGING__V1__CREATE_TEMPLATE_REQUEST__INIT;
	M(CreateTemplateResponse) *r = NULL;
	M(SetTemplateStatusRequest)
	sq = PARLEY__MESSAGING__V1__SET_TEMPLATE_STATUS_REQUEST__INIT;
	M(SetTemplateStatusResponse) *sr = NULL;
	Parley__Rpc__V1__Json comp = PARLEY__RPC__V1__JSON__INIT;
	char name[64], body[512];
	static int n;
	snprintf(name, sizeof(name), "tpl_%d", ++n);
	snprintf(body, sizeof(body), "{\"body\":{\"text\":\"%s\"}}", text);
	comp.text = body;
	rq.channel_id = C_WA;
	rq.name = name;
	rq.language = "en_US";
	rq.category = strcmp(cat, "marketing") == 0 ? 1 : 2;
	rq.components = &comp;
	assert_int_equal(
	        call_as(T1, ADMIN, "CreateTemplate", &rq.base,
	                &parley__messaging__v1__create_template_response__descriptor,
	                (void **)&r, NULL),
	        PL_OK);
	assert_int_equal(r->template_->status, 1); // draft
	sq.id = r->id;
	sq.status = 3;
	assert_int_equal(
	        call_as(T1, ADMIN, "SetTemplateStatus", &sq.base,
	                &parley__messaging__v1__set_template_status_response__descriptor,
	                (void **)&sr, NULL),
	        PL_OK);
	assert_int_equal(sr->template_->status, 3);
	strcpy(id_out, r->id);
}

// ---------------------------------------------------------------------------

static void
test_templates(void **state)
{
	(void)state;
	NEED();
	char c1[40], conv[40], id2[40];
	M(CreateTemplateRequest)
	bad = PARLEY__MESSAGING__V1__CREATE_TEMPLATE_REQUEST__INIT;
	Parley__Rpc__V1__Json comp = PARLEY__RPC__V1__JSON__INIT;
	M(SendMessageRequest)
	sq = PARLEY__MESSAGING__V1__SEND_MESSAGE_REQUEST__INIT;
	M(SendMessageResponse) *sr = NULL;
	M(GetTemplateRequest)
	gq = PARLEY__MESSAGING__V1__GET_TEMPLATE_REQUEST__INIT;
	void *out = NULL;
	char *params[3] = { "Ann", "42", "x" };
	char pth[128], auth[128], *body = NULL;
	int n0;

	char err[128];
	assert_int_equal(engage_template_params("Hi {{1}}, {{2}} and {{1}}",
	                                        err, sizeof(err)),
	                 2);
	assert_int_equal(engage_template_params("Hi {{2}}", err, sizeof(err)),
	                 -1);
	assert_int_equal(
	        engage_template_params("no params {{x}}", err, sizeof(err)), 0);

	mk_template("utility", "Hi {{1}}, your code is {{2}}", tpl_id);
	// Missing body / a gap in the parameters: INVALID_ARGUMENT.
	bad.channel_id = C_WA;
	bad.name = "bad";
	bad.language = "en";
	bad.category = 2;
	comp.text = "{\"body\":{\"text\":\"Hi {{2}}\"}}";
	bad.components = &comp;
	assert_int_equal(
	        call_as(T1, ADMIN, "CreateTemplate", &bad.base,
	                &parley__messaging__v1__create_template_response__descriptor,
	                &out, NULL),
	        PL_INVALID_ARGUMENT);
	bad.components = NULL;
	assert_int_equal(
	        call_as(T1, ADMIN, "CreateTemplate", &bad.base,
	                &parley__messaging__v1__create_template_response__descriptor,
	                &out, NULL),
	        PL_INVALID_ARGUMENT);
	// Another tenant: NOT_FOUND.
	gq.id = tpl_id;
	assert_int_equal(
	        call_as(T2, ADMIN, "GetTemplate", &gq.base,
	                &parley__messaging__v1__get_template_response__descriptor,
	                &out, NULL),
	        PL_NOT_FOUND);

	// Outside the window (no inbound for 2 days) a template is sent.
	pl_uuid7_str(c1);
	mk_contact(c1, "Ann", false, conv);
	char sql[256];
	snprintf(sql, sizeof(sql),
	         "UPDATE messaging.conversations SET last_inbound_at = now() - "
	         "interval '2 days' WHERE id = '%s'",
	         conv);
	sqlv(sql, NULL, 0);
	sq.conversation_id = conv;
	sq.template_id = tpl_id;
	sq.template_parameters = params;
	sq.n_template_parameters = 1; // missing
	assert_int_equal(
	        call_as(T1, ADMIN, "SendMessage", &sq.base,
	                &parley__messaging__v1__send_message_response__descriptor,
	                &out, "k-t1"),
	        PL_INVALID_ARGUMENT);
	sq.n_template_parameters = 3; // extra
	assert_int_equal(
	        call_as(T1, ADMIN, "SendMessage", &sq.base,
	                &parley__messaging__v1__send_message_response__descriptor,
	                &out, "k-t2"),
	        PL_INVALID_ARGUMENT);
	n0 = fake_provider_count(fp);
	sq.n_template_parameters = 2;
	assert_int_equal(
	        call_as(T1, ADMIN, "SendMessage", &sq.base,
	                &parley__messaging__v1__send_message_response__descriptor,
	                (void **)&sr, "k-t3"),
	        PL_OK);
	assert_string_equal(sr->message->text, "Hi Ann, your code is 42");
	assert_true(fake_provider_wait(fp, n0 + 1, 5000) >= n0 + 1);
	assert_true(fake_provider_request(fp, n0, pth, sizeof(pth), auth,
	                                  sizeof(auth), &body));
	assert_non_null(strstr(body, "\"type\":\"template\""));
	assert_non_null(strstr(body, "\"text\":\"Ann\""));
	free(body);

	// Marketing never to an opted-out contact.
	mk_template("marketing", "Sale {{1}}", id2);
	snprintf(sql, sizeof(sql),
	         "UPDATE messaging.contacts SET opted_out_at = now() WHERE id "
	         "= '%s'",
	         c1);
	sqlv(sql, NULL, 0);
	sq.template_id = id2;
	sq.n_template_parameters = 1;
	assert_int_equal(
	        call_as(T1, ADMIN, "SendMessage", &sq.base,
	                &parley__messaging__v1__send_message_response__descriptor,
	                &out, "k-t4"),
	        PL_FAILED_PRECONDITION);
}

// ---------------------------------------------------------------------------
// Campaigns

static char camp_id[40];

static void *
sender_thread(void *arg)
{
	pl_db *db = pl_db_open(h.db_url);
	pl_arena a;
	int idle = 0;
	(void)arg;
	pl_arena_init(&a, 0, 1 << 20);
	while (idle < 3) {
		pl_arena_reset(&a);
		if (engage_campaigns_once(h.arg, db, &a) == 0)
			idle++;
		else
			idle = 0;
	}
	pl_arena_fini(&a);
	pl_db_close(db);
	return NULL;
}

static void
test_campaign_exactly_once(void **state)
{
	(void)state;
	NEED();
	const int N = 10000, OPTED = 250;
	char sql[2048], tpl[40];
	M(CreateCampaignRequest)
	cq = PARLEY__MESSAGING__V1__CREATE_CAMPAIGN_REQUEST__INIT;
	M(CreateCampaignResponse) *cr = NULL;
	M(StartCampaignRequest)
	st = PARLEY__MESSAGING__V1__START_CAMPAIGN_REQUEST__INIT;
	M(GetCampaignStatsRequest)
	gs = PARLEY__MESSAGING__V1__GET_CAMPAIGN_STATS_REQUEST__INIT;
	M(GetCampaignStatsResponse) *sr = NULL;
	M(ParameterBinding) b = PARLEY__MESSAGING__V1__PARAMETER_BINDING__INIT;
	M(ParameterBinding) * bs[1] = { &b };
	M(Audience) au = PARLEY__MESSAGING__V1__AUDIENCE__INIT;
	char *tags[1] = { "promo" };
	void *out = NULL;
	pthread_t th[2];
	PGconn *dead;
	PGresult *r;
	int n0 = fake_provider_count(fp);

	mk_template("marketing", "Hello {{1}}!", tpl);
	// 10,000 contacts tagged promo (250 opted out) and 100 others.
	snprintf(sql, sizeof(sql),
	         "INSERT INTO messaging.contacts (tenant_id, id, channel_id, "
	         "external_id, external_id_kind, name, tags, opted_out_at) "
	         "SELECT '%s', gen_random_uuid(), '%s', 'c' || g, 'phone', "
	         "'n' || g, CASE WHEN g <= %d THEN '{promo}'::text[] ELSE "
	         "'{}' END, CASE WHEN g <= %d THEN now() END FROM "
	         "generate_series(1, %d) g",
	         T1, C_WA, N, OPTED, N + 100);
	assert_int_equal(sqlv(sql, NULL, 0), 0);
	cq.name = "spring";
	cq.channel_id = C_WA;
	cq.template_id = tpl;
	b.index = 1;
	b.contact_field = "name";
	cq.parameters = bs;
	cq.n_parameters = 1;
	au.tags = tags;
	au.n_tags = 1;
	cq.audience = &au;
	assert_int_equal(
	        call_as(T1, ADMIN, "CreateCampaign", &cq.base,
	                &parley__messaging__v1__create_campaign_response__descriptor,
	                (void **)&cr, NULL),
	        PL_OK);
	strcpy(camp_id, cr->id);
	// Bad input: a binding index the template does not have.
	b.index = 2;
	assert_int_equal(
	        call_as(T1, ADMIN, "CreateCampaign", &cq.base,
	                &parley__messaging__v1__create_campaign_response__descriptor,
	                &out, NULL),
	        PL_INVALID_ARGUMENT);
	b.index = 1;
	st.id = camp_id;
	assert_int_equal(
	        call_as(T2, ADMIN, "StartCampaign", &st.base,
	                &parley__messaging__v1__start_campaign_response__descriptor,
	                &out, NULL),
	        PL_NOT_FOUND);
	assert_int_equal(
	        call_as(T1, ADMIN, "StartCampaign", &st.base,
	                &parley__messaging__v1__start_campaign_response__descriptor,
	                &out, NULL),
	        PL_OK);

	// A sender that dies mid-batch: its claimed rows come back.
	dead = PQconnectdb(h.db_url);
	r = PQexec(dead, "BEGIN");
	PQclear(r);
	snprintf(sql, sizeof(sql),
	         "SELECT o_sent FROM messaging.campaign_send_batch('%s', '%s', "
	         "500)",
	         T1, camp_id);
	r = PQexec(dead, sql);
	assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
	assert_true(atoi(PQgetvalue(r, 0, 0)) > 0);
	PQclear(r);
	// Two senders at once while it holds its rows, then it dies.
	pthread_create(&th[0], NULL, sender_thread, NULL);
	pthread_create(&th[1], NULL, sender_thread, NULL);
	usleep(300000);
	PQfinish(dead); // no COMMIT: as after kill -9
	pthread_join(th[0], NULL);
	pthread_join(th[1], NULL);
	{
		pthread_t t3;
		pthread_create(&t3, NULL, sender_thread, NULL);
		pthread_join(t3, NULL);
	}

	snprintf(sql, sizeof(sql),
	         "SELECT count(*) FROM messaging.messages WHERE "
	         "metadata->>'campaign_id' = '%s'",
	         camp_id);
	assert_int_equal(sqlv(sql, NULL, 0), N - OPTED);
	snprintf(
	        sql, sizeof(sql),
	        "SELECT count(DISTINCT c.contact_id) FROM messaging.messages m "
	        "JOIN messaging.conversations c ON c.id = m.conversation_id "
	        "WHERE m.metadata->>'campaign_id' = '%s'",
	        camp_id);
	assert_int_equal(sqlv(sql, NULL, 0), N - OPTED);
	snprintf(
	        sql, sizeof(sql),
	        "SELECT status = 'completed' FROM messaging.campaigns WHERE id "
	        "= '%s'",
	        camp_id);
	{
		char v[8];
		sqlv(sql, v, sizeof(v));
		assert_string_equal(v, "t");
	}
	// Every message reaches the provider once: each has its own
	// provider id (the fake numbers its answers; it records only the
	// first 1,024 requests, so the count comes from the ids).
	snprintf(sql, sizeof(sql),
	         "SELECT count(DISTINCT provider_message_id) FROM "
	         "messaging.messages WHERE metadata->>'campaign_id' = '%s' AND "
	         "status = 'sent'",
	         camp_id);
	assert_int_equal(wait_for(sql, N - OPTED, 50), N - OPTED);
	(void)n0;
	assert_int_equal(reserved, N - OPTED);
	// Statuses flow back: 10 delivered, 5 read, 3 failed.
	snprintf(sql, sizeof(sql),
	         "UPDATE messaging.messages m SET status = s.st FROM (SELECT "
	         "id, CASE WHEN row_number() OVER (ORDER BY id) <= 10 THEN "
	         "'delivered' WHEN row_number() OVER (ORDER BY id) <= 15 THEN "
	         "'read' ELSE 'failed' END AS st FROM messaging.messages WHERE "
	         "metadata->>'campaign_id' = '%s' ORDER BY id LIMIT 18) s "
	         "WHERE m.id = s.id",
	         camp_id);
	assert_int_equal(sqlv(sql, NULL, 0), 0);
	gs.id = camp_id;
	assert_int_equal(
	        call_as(T1, ADMIN, "GetCampaignStats", &gs.base,
	                &parley__messaging__v1__get_campaign_stats_response__descriptor,
	                (void **)&sr, NULL),
	        PL_OK);
	assert_int_equal(sr->counters->recipients, N);
	assert_int_equal(sr->counters->skipped_opted_out, OPTED);
	assert_int_equal(sr->counters->pending, 0);
	assert_int_equal(sr->counters->sent, N - OPTED - 3);
	assert_int_equal(sr->counters->delivered, 15);
	assert_int_equal(sr->counters->read, 5);
	assert_int_equal(sr->counters->failed, 3);
	assert_int_equal(sr->status, 5); // completed
}

static void
test_campaign_limit_pauses(void **state)
{
	(void)state;
	NEED();
	char tpl[40], c[40], sql[256];
	M(CreateCampaignRequest)
	cq = PARLEY__MESSAGING__V1__CREATE_CAMPAIGN_REQUEST__INIT;
	M(CreateCampaignResponse) *cr = NULL;
	M(StartCampaignRequest)
	st = PARLEY__MESSAGING__V1__START_CAMPAIGN_REQUEST__INIT;
	M(ResumeCampaignRequest)
	rs = PARLEY__MESSAGING__V1__RESUME_CAMPAIGN_REQUEST__INIT;
	M(GetCampaignRequest)
	gq = PARLEY__MESSAGING__V1__GET_CAMPAIGN_REQUEST__INIT;
	M(GetCampaignResponse) *gr = NULL;
	M(Audience) au = PARLEY__MESSAGING__V1__AUDIENCE__INIT;
	char *ids[3];
	char cid[3][40];
	void *out = NULL;

	mk_template("utility", "Reminder", tpl);
	for (int i = 0; i < 3; i++) {
		pl_uuid7_str(cid[i]);
		mk_contact(cid[i], "x", false, NULL);
		ids[i] = cid[i];
	}
	au.contact_ids = ids;
	au.n_contact_ids = 3;
	cq.name = "limited";
	cq.channel_id = C_WA;
	cq.template_id = tpl;
	cq.audience = &au;
	assert_int_equal(
	        call_as(T1, ADMIN, "CreateCampaign", &cq.base,
	                &parley__messaging__v1__create_campaign_response__descriptor,
	                (void **)&cr, NULL),
	        PL_OK);
	strcpy(c, cr->id);
	st.id = c;
	assert_int_equal(
	        call_as(T1, ADMIN, "StartCampaign", &st.base,
	                &parley__messaging__v1__start_campaign_response__descriptor,
	                &out, NULL),
	        PL_OK);
	billing_refuse = true;
	sender_thread(NULL);
	gq.id = c;
	assert_int_equal(
	        call_as(T1, ADMIN, "GetCampaign", &gq.base,
	                &parley__messaging__v1__get_campaign_response__descriptor,
	                (void **)&gr, NULL),
	        PL_OK);
	assert_int_equal(gr->campaign->status, 4); // paused
	assert_non_null(strstr(gr->campaign->pause_reason, "limit:"));
	assert_int_equal(gr->campaign->counters->pending, 3);
	billing_refuse = false;
	rs.id = c;
	assert_int_equal(
	        call_as(T1, ADMIN, "ResumeCampaign", &rs.base,
	                &parley__messaging__v1__resume_campaign_response__descriptor,
	                &out, NULL),
	        PL_OK);
	sender_thread(NULL);
	snprintf(sql, sizeof(sql),
	         "SELECT count(*) FROM messaging.campaign_recipients WHERE "
	         "campaign_id = '%s' AND status = 'sent'",
	         c);
	assert_int_equal(sqlv(sql, NULL, 0), 3);
}

// ---------------------------------------------------------------------------
// Opt-out keyword, leads

// The campaign's send rate holds batch after batch: at 2 a second, one
// sender round claims 2 recipients and then waits out the second. A lower
// bound on time only: a slow machine cannot make it fail.
static void
test_campaign_rate(void **state)
{
	(void)state;
	NEED();
	char tpl[40], c[40], sql[256];
	M(CreateCampaignRequest)
	cq = PARLEY__MESSAGING__V1__CREATE_CAMPAIGN_REQUEST__INIT;
	M(CreateCampaignResponse) *cr = NULL;
	M(StartCampaignRequest)
	st = PARLEY__MESSAGING__V1__START_CAMPAIGN_REQUEST__INIT;
	M(Audience) au = PARLEY__MESSAGING__V1__AUDIENCE__INIT;
	char *ids[4];
	char cid[4][40];
	void *out = NULL;
	pl_db *db;
	pl_arena a;
	int64_t t0;

	mk_template("utility", "Paced", tpl);
	for (int i = 0; i < 4; i++) {
		pl_uuid7_str(cid[i]);
		mk_contact(cid[i], "x", false, NULL);
		ids[i] = cid[i];
	}
	au.contact_ids = ids;
	au.n_contact_ids = 4;
	cq.name = "paced";
	cq.channel_id = C_WA;
	cq.template_id = tpl;
	cq.audience = &au;
	cq.send_rate_per_second = 2;
	assert_int_equal(
	        call_as(T1, ADMIN, "CreateCampaign", &cq.base,
	                &parley__messaging__v1__create_campaign_response__descriptor,
	                (void **)&cr, NULL),
	        PL_OK);
	strcpy(c, cr->id);
	st.id = c;
	assert_int_equal(
	        call_as(T1, ADMIN, "StartCampaign", &st.base,
	                &parley__messaging__v1__start_campaign_response__descriptor,
	                &out, NULL),
	        PL_OK);
	snprintf(sql, sizeof(sql),
	         "SELECT count(*) FROM messaging.campaign_recipients WHERE "
	         "campaign_id = '%s' AND status = 'sent'",
	         c);
	db = pl_db_open(h.db_url);
	pl_arena_init(&a, 0, 1 << 20);
	for (int round = 1; round <= 2; round++) {
		t0 = pl_now_ns();
		assert_int_equal(engage_campaigns_once(h.arg, db, &a), 2);
		assert_true(pl_now_ns() - t0 >= 900000000LL);
		assert_int_equal(sqlv(sql, NULL, 0), 2 * round);
		pl_arena_reset(&a);
	}
	pl_arena_fini(&a);
	pl_db_close(db);
}

static int
ingest(Parley__Messaging__V1__IngestInboundRequest *in, void **out)
{
	return svch_call(
	        &h, MS "IngestInbound", NULL, &in->base,
	        &parley__messaging__v1__ingest_inbound_response__descriptor,
	        out, NULL);
}

static void
test_opt_out_and_leads(void **state)
{
	(void)state;
	NEED();
	M(IngestInboundRequest)
	in = PARLEY__MESSAGING__V1__INGEST_INBOUND_REQUEST__INIT;
	M(IngestInboundResponse) *ir = NULL;
	M(CreateLeadRequest)
	lq = PARLEY__MESSAGING__V1__CREATE_LEAD_REQUEST__INIT;
	M(CreateLeadResponse) *lr = NULL;
	M(UpdateLeadRequest)
	uq = PARLEY__MESSAGING__V1__UPDATE_LEAD_REQUEST__INIT;
	M(UpdateLeadResponse) *ur = NULL;
	M(GetLeadRequest) gq = PARLEY__MESSAGING__V1__GET_LEAD_REQUEST__INIT;
	void *out = NULL;
	char sql[256], v[64];
	char *mask[1] = { "status" };

	in.tenant_id = T1;
	in.channel_id = C_WA;
	in.external_id = "5511900000001";
	in.phone_raw = "5511900000001";
	in.provider_message_id = "wamid.stop-1";
	in.text = " stop ";
	assert_int_equal(ingest(&in, (void **)&ir), PL_OK);
	snprintf(sql, sizeof(sql),
	         "SELECT opted_out_at IS NOT NULL FROM messaging.contacts "
	         "WHERE id = '%s'",
	         ir->message->conversation_id[0] ? ir->conversation->contact_id
	                                         : "");
	sqlv(sql, v, sizeof(v));
	assert_string_equal(v, "t");
	snprintf(sql, sizeof(sql),
	         "SELECT count(*) FROM messaging.messages WHERE "
	         "conversation_id = '%s' AND direction = 'outbound' AND text "
	         "LIKE '%%unsubscribed%%'",
	         ir->conversation->id);
	assert_int_equal(sqlv(sql, NULL, 0), 1);
	snprintf(sql, sizeof(sql),
	         "SELECT reply_outcome FROM messaging.messages WHERE id = '%s'",
	         ir->message->id);
	sqlv(sql, v, sizeof(v));
	assert_string_equal(v, "opt_out");

	// A lead shows its conversation's stage.
	lq.contact_id = ir->conversation->contact_id;
	lq.name = "Bea";
	lq.email = "bea@example.com";
	assert_int_equal(
	        call_as(T1, ADMIN, "CreateLead", &lq.base,
	                &parley__messaging__v1__create_lead_response__descriptor,
	                (void **)&lr, NULL),
	        PL_OK);
	assert_int_equal(lr->lead->stage, 1); // new
	assert_string_equal(lr->lead->conversation_id, ir->conversation->id);
	assert_int_equal(
	        call_as(T1, ADMIN, "CreateLead", &lq.base,
	                &parley__messaging__v1__create_lead_response__descriptor,
	                &out, NULL),
	        PL_ALREADY_EXISTS);
	snprintf(sql, sizeof(sql),
	         "UPDATE messaging.conversations SET stage = 'qualified' WHERE "
	         "id = '%s'",
	         ir->conversation->id);
	sqlv(sql, NULL, 0);
	uq.id = lr->id;
	uq.update_mask = mask;
	uq.n_update_mask = 1;
	uq.status = 4;
	assert_int_equal(
	        call_as(T1, ADMIN, "UpdateLead", &uq.base,
	                &parley__messaging__v1__update_lead_response__descriptor,
	                (void **)&ur, NULL),
	        PL_OK);
	assert_int_equal(ur->lead->stage, 3);
	assert_int_equal(ur->lead->status, 4);
	assert_true(ur->lead->converted_at[0] != '\0');
	gq.id = lr->id;
	assert_int_equal(
	        call_as(T2, ADMIN, "GetLead", &gq.base,
	                &parley__messaging__v1__get_lead_response__descriptor,
	                &out, NULL),
	        PL_NOT_FOUND);
	lq.email = "not-an-email";
	assert_int_equal(
	        call_as(T1, ADMIN, "CreateLead", &lq.base,
	                &parley__messaging__v1__create_lead_response__descriptor,
	                &out, NULL),
	        PL_INVALID_ARGUMENT);

	// What the agent captured becomes the lead (hook on the bot's turn).
	{
		char c2[40], conv2[40], mid[40];
		pl_uuid7_str(c2);
		mk_contact(c2, "Cy", false, conv2);
		pl_uuid7_str(mid);
		pl_db *db = pl_db_open(h.db_url);
		struct {
			const char *c, *v, *m;
		} a = { c2, conv2, mid };
		(void)a;
		PGresult *r = pl_db_exec(db, "BEGIN", 0, NULL);
		PQclear(r);
		r = pl_db_exec(db,
		               "SELECT set_config('parley.tenant_id', '" T1
		               "', true)",
		               0, NULL);
		PQclear(r);
		assert_int_equal(
		        engage_on_reply(
		                db, T1, c2, conv2, mid, NULL,
		                "{\"bot\":{\"intent\":\"buy\",\"captured_"
		                "lead\":"
		                "{\"name\":\"Cy\",\"email\":\"cy@x.io\","
		                "\"phone\":\"\"},"
		                "\"proposed_actions\":[{\"kind\":\"order_"
		                "confirmation\","
		                "\"summary\":\"2 "
		                "pizzas\",\"payload\":{\"currency\":\"EUR\","
		                "\"items\":[{\"name\":\"Pizza\",\"quantity\":2,"
		                "\"unit_price_minor\":900}]}}]}}"),
		        PL_OK);
		r = pl_db_exec(db, "COMMIT", 0, NULL);
		PQclear(r);
		pl_db_close(db);
		snprintf(sql, sizeof(sql),
		         "SELECT email || ':' || source_intent FROM "
		         "messaging.leads "
		         "WHERE contact_id = '%s'",
		         c2);
		sqlv(sql, v, sizeof(v));
		assert_string_equal(v, "cy@x.io:buy");
		snprintf(sql, sizeof(sql),
		         "SELECT count(*) FROM messaging.actions WHERE "
		         "conversation_id = '%s' AND status = 'pending' AND "
		         "kind = "
		         "'order_confirmation'",
		         conv2);
		assert_int_equal(sqlv(sql, NULL, 0), 1);
	}

	// A sender's id as long as a webhook takes it (256 bytes), not one
	// byte more (IngestInbound allowed 128 before 2026-11-23).
	{
		char id[258];
		memset(id, '7', 257);
		id[257] = '\0';
		in.external_id = id;
		in.phone_raw = NULL;
		in.provider_message_id = "wamid.long-sender";
		in.text = "hello";
		assert_int_equal(ingest(&in, &out), PL_INVALID_ARGUMENT);
		id[256] = '\0';
		assert_int_equal(ingest(&in, (void **)&ir), PL_OK);
		snprintf(sql, sizeof(sql),
		         "SELECT length(external_id) FROM messaging.contacts "
		         "WHERE id = '%s'",
		         ir->conversation->contact_id);
		sqlv(sql, v, sizeof(v));
		assert_string_equal(v, "256");
	}
}

// ---------------------------------------------------------------------------
// Orders, actions

static void
test_orders(void **state)
{
	(void)state;
	NEED();
	char c[40], conv[40];
	M(OrderItem)
	i1 = PARLEY__MESSAGING__V1__ORDER_ITEM__INIT,
	i2 = PARLEY__MESSAGING__V1__ORDER_ITEM__INIT;
	M(OrderItem) * items[2] = { &i1, &i2 };
	M(CreateOrderRequest)
	oq = PARLEY__MESSAGING__V1__CREATE_ORDER_REQUEST__INIT;
	M(CreateOrderResponse) *orr = NULL;
	M(UpdateOrderStatusRequest)
	sq = PARLEY__MESSAGING__V1__UPDATE_ORDER_STATUS_REQUEST__INIT;
	M(UpdateOrderStatusResponse) *sr = NULL;
	void *out = NULL;

	pl_uuid7_str(c);
	mk_contact(c, "Dan", false, conv);
	i1.name = "Pizza";
	i1.quantity = 2;
	i1.unit_price_minor = 1250;
	i1.total_minor = 1; // ignored
	i2.name = "Soda";
	i2.sku = "S1";
	i2.quantity = 3;
	i2.unit_price_minor = 200;
	oq.contact_id = c;
	oq.currency = "EUR";
	oq.items = items;
	oq.n_items = 2;
	assert_int_equal(
	        call_as(T1, ADMIN, "CreateOrder", &oq.base,
	                &parley__messaging__v1__create_order_response__descriptor,
	                (void **)&orr, NULL),
	        PL_OK);
	assert_int_equal(orr->order->total_minor, 3100);
	assert_int_equal(orr->order->items[0]->total_minor, 2500);
	assert_string_equal(orr->order->conversation_id, conv);
	i1.quantity = 0;
	assert_int_equal(
	        call_as(T1, ADMIN, "CreateOrder", &oq.base,
	                &parley__messaging__v1__create_order_response__descriptor,
	                &out, NULL),
	        PL_INVALID_ARGUMENT);
	i1.quantity = 2;
	oq.currency = "eur";
	assert_int_equal(
	        call_as(T1, ADMIN, "CreateOrder", &oq.base,
	                &parley__messaging__v1__create_order_response__descriptor,
	                &out, NULL),
	        PL_INVALID_ARGUMENT);
	oq.currency = "EUR";
	assert_int_equal(
	        call_as(T2, ADMIN, "CreateOrder", &oq.base,
	                &parley__messaging__v1__create_order_response__descriptor,
	                &out, NULL),
	        PL_NOT_FOUND);
	sq.id = orr->id;
	sq.status = 3; // pending -> shipped: refused
	assert_int_equal(
	        call_as(T1, ADMIN, "UpdateOrderStatus", &sq.base,
	                &parley__messaging__v1__update_order_status_response__descriptor,
	                &out, NULL),
	        PL_FAILED_PRECONDITION);
	sq.status = 2;
	sq.notify_contact = true;
	assert_int_equal(
	        call_as(T1, ADMIN, "UpdateOrderStatus", &sq.base,
	                &parley__messaging__v1__update_order_status_response__descriptor,
	                (void **)&sr, NULL),
	        PL_OK);
	assert_int_equal(sr->order->status, 2);
	assert_true(sr->order->confirmed_at[0] != '\0');
	sq.status = 3;
	assert_int_equal(
	        call_as(T1, ADMIN, "UpdateOrderStatus", &sq.base,
	                &parley__messaging__v1__update_order_status_response__descriptor,
	                &out, NULL),
	        PL_OK);
	sq.status = 5; // shipped -> cancelled: refused
	assert_int_equal(
	        call_as(T1, ADMIN, "UpdateOrderStatus", &sq.base,
	                &parley__messaging__v1__update_order_status_response__descriptor,
	                &out, NULL),
	        PL_FAILED_PRECONDITION);
	sq.status = 4;
	assert_int_equal(
	        call_as(T1, ADMIN, "UpdateOrderStatus", &sq.base,
	                &parley__messaging__v1__update_order_status_response__descriptor,
	                (void **)&sr, NULL),
	        PL_OK);
	assert_int_equal(sr->order->status, 4);
	assert_true(engage_order_transition_ok("pending", "cancelled"));
	assert_true(engage_order_transition_ok("confirmed", "cancelled"));
	assert_false(engage_order_transition_ok("delivered", "pending"));
}

static int
mk_action(const char *conv, const char *expires, char *id_out)
{
	M(CreateActionRequest)
	aq = PARLEY__MESSAGING__V1__CREATE_ACTION_REQUEST__INIT;
	M(CreateActionResponse) *ar = NULL;
	Parley__Rpc__V1__Json pay = PARLEY__RPC__V1__JSON__INIT;
	int rv;
	pay.text = "{\"currency\":\"EUR\",\"items\":[{\"name\":\"Pizza\","
	           "\"quantity\":2,\"unit_price_minor\":900}]}";
	aq.tenant_id = T1;
	aq.kind = 1;
	aq.conversation_id = (char *)conv;
	aq.summary = "2 pizzas";
	aq.payload = &pay;
	aq.expires_at = (char *)expires;
	rv = svch_call(
	        &h, MS "CreateAction", NULL, &aq.base,
	        &parley__messaging__v1__create_action_response__descriptor,
	        (void **)&ar, NULL);
	if (rv == PL_OK)
		strcpy(id_out, ar->id);
	return rv;
}

static void
test_actions(void **state)
{
	(void)state;
	NEED();
	char c[40], conv[40], a1[40], a2[40], a3[40], sql[256], v[64];
	M(ApproveActionRequest)
	ap = PARLEY__MESSAGING__V1__APPROVE_ACTION_REQUEST__INIT;
	M(ApproveActionResponse) *ar = NULL, *ar2 = NULL;
	M(RejectActionRequest)
	rj = PARLEY__MESSAGING__V1__REJECT_ACTION_REQUEST__INIT;
	M(RejectActionResponse) *rr = NULL;
	void *out = NULL;

	pl_uuid7_str(c);
	mk_contact(c, "Eve", false, conv);
	assert_int_equal(mk_action(conv, NULL, a1), PL_OK);
	ap.id = a1;
	assert_int_equal(
	        call_as(T2, ADMIN, "ApproveAction", &ap.base,
	                &parley__messaging__v1__approve_action_response__descriptor,
	                &out, NULL),
	        PL_NOT_FOUND);
	assert_int_equal(
	        call_as(T1, ADMIN, "ApproveAction", &ap.base,
	                &parley__messaging__v1__approve_action_response__descriptor,
	                (void **)&ar, NULL),
	        PL_OK);
	assert_int_equal(ar->action->status, 2);
	assert_non_null(strstr(ar->action->result->text, "order_id"));
	assert_int_equal(
	        call_as(T1, ADMIN, "ApproveAction", &ap.base,
	                &parley__messaging__v1__approve_action_response__descriptor,
	                (void **)&ar2, NULL),
	        PL_OK);
	assert_string_equal(ar2->action->result->text,
	                    ar->action->result->text);
	snprintf(
	        sql, sizeof(sql),
	        "SELECT count(*) FROM messaging.orders WHERE conversation_id = "
	        "'%s' AND status = 'confirmed'",
	        conv);
	assert_int_equal(sqlv(sql, NULL, 0), 1); // executed once
	snprintf(
	        sql, sizeof(sql),
	        "SELECT count(*) FROM messaging.messages WHERE conversation_id "
	        "= '%s' AND text LIKE '%%confirmed. Total: 18.00 EUR%%'",
	        conv);
	assert_int_equal(sqlv(sql, NULL, 0), 1);
	rj.id = a1; // approved: cannot be rejected
	assert_int_equal(
	        call_as(T1, ADMIN, "RejectAction", &rj.base,
	                &parley__messaging__v1__reject_action_response__descriptor,
	                &out, NULL),
	        PL_FAILED_PRECONDITION);

	assert_int_equal(mk_action(conv, NULL, a2), PL_OK);
	rj.id = a2;
	rj.notify_contact = true;
	rj.reason = "out of stock";
	assert_int_equal(
	        call_as(T1, ADMIN, "RejectAction", &rj.base,
	                &parley__messaging__v1__reject_action_response__descriptor,
	                (void **)&rr, NULL),
	        PL_OK);
	assert_int_equal(rr->action->status, 3);
	assert_int_equal(
	        call_as(T1, ADMIN, "RejectAction", &rj.base,
	                &parley__messaging__v1__reject_action_response__descriptor,
	                (void **)&rr, NULL),
	        PL_OK); // idempotent
	snprintf(
	        sql, sizeof(sql),
	        "SELECT count(*) FROM messaging.messages WHERE conversation_id "
	        "= '%s' AND text LIKE 'Sorry%%'",
	        conv);
	assert_int_equal(sqlv(sql, NULL, 0), 1);

	assert_int_equal(mk_action(conv, "2000-01-01T00:00:00Z", a3), PL_OK);
	ap.id = a3;
	assert_int_equal(
	        call_as(T1, ADMIN, "ApproveAction", &ap.base,
	                &parley__messaging__v1__approve_action_response__descriptor,
	                &out, NULL),
	        PL_FAILED_PRECONDITION);
	snprintf(sql, sizeof(sql),
	         "SELECT status FROM messaging.actions WHERE id = '%s'", a3);
	sqlv(sql, v, sizeof(v));
	assert_string_equal(v, "expired");
	snprintf(
	        sql, sizeof(sql),
	        "SELECT count(*) FROM messaging.orders WHERE conversation_id = "
	        "'%s'",
	        conv);
	assert_int_equal(sqlv(sql, NULL, 0), 1); // the expired one never ran
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_templates),
		cmocka_unit_test(test_campaign_exactly_once),
		cmocka_unit_test(test_campaign_limit_pauses),
		cmocka_unit_test(test_campaign_rate),
		cmocka_unit_test(test_opt_out_and_leads),
		cmocka_unit_test(test_orders),
		cmocka_unit_test(test_actions),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
