// Messaging engagement, part 2, against a real PostgreSQL and loopback
// receivers: follow-up rules (scheduled by a bot message, fired once each
// even with two schedulers at once or a scheduler that dies holding a row,
// at most K times, cancelled by a reply, a template outside the 24 h
// window, skipped for opted-out contacts) and outbound webhooks (Standard
// Webhooks signatures checked here with an HMAC of the test's own, retries
// with the same webhook-id, redelivery, the retry budget, disabling an
// endpoint that keeps failing, SSRF refusals when writing and when
// sending); cross-tenant NOT_FOUND and bad input on each new RPC.
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <sodium.h>

#include "engage.h"
#include "fake_peers.h"
#include "fake_provider.h"
#include "pl/httpd.h"
#include "pl/id.h"
#include "pgh.h"
#include "svch.h"

#define T1   "0190b000-0000-7000-8000-000000000011"
#define T2   "0190b000-0000-7000-8000-000000000012"
#define U1   "0190b000-0000-7000-8000-0000000000a1"
#define C_WA "0190b000-0000-7000-8000-0000000000c2"
#define AG   "0190b000-0000-7000-8000-0000000000d1"
#define M(x) Parley__Messaging__V1__##x
#define MS   "/parley.messaging.v1.Messaging/"

static pgh pg;
static svch h;
static fake_provider *fp;
static fake_peers *peers;
static bool up;

// ---------------------------------------------------------------------------
// Fake tenants (one WhatsApp channel of T1).

static int
peer_handler(pl_call *call, const void *inp, void *outp)
{
	const char *m = strrchr(call->method, '/') + 1;

	(void)inp;
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
		return PL_OK;
	}
	return pl_call_error(call, PL_UNIMPLEMENTED, "fake peer: %s", m);
}

static int
start_peers(void)
{
	static const ProtobufCServiceDescriptor *const d[] = {
		&parley__tenants__v1__tenants__descriptor,
	};

	return fake_peers_start(&peers, "inproc://followups-peers", 2,
	                        peer_handler, d, 1);
}

// ---------------------------------------------------------------------------
// A webhook receiver on loopback: records each request's headers and body
// and answers the scripted statuses in order (then 200).

#define RX_MAX 64

typedef struct rx_req {
	char id[128], ts[32], sig[256], *body;
} rx_req;

static struct {
	pthread_mutex_t mu;
	pl_httpd *d;
	rx_req req[RX_MAX];
	int n;
	int script[16], nscript, used;
	char url[128];
} rx = { .mu = PTHREAD_MUTEX_INITIALIZER };

static void
rx_handler(const pl_http_req *req, pl_http_resp *resp, void *arg)
{
	const char *id = pl_http_req_header(req, "webhook-id");
	const char *ts = pl_http_req_header(req, "webhook-timestamp");
	const char *sig = pl_http_req_header(req, "webhook-signature");
	int status = 200;

	(void)arg;
	pthread_mutex_lock(&rx.mu);
	if (rx.n < RX_MAX) {
		rx_req *r = &rx.req[rx.n++];
		snprintf(r->id, sizeof(r->id), "%s", id ? id : "");
		snprintf(r->ts, sizeof(r->ts), "%s", ts ? ts : "");
		snprintf(r->sig, sizeof(r->sig), "%s", sig ? sig : "");
		r->body = strndup(req->body ? req->body : "", req->body_len);
	}
	if (rx.used < rx.nscript)
		status = rx.script[rx.used++];
	pthread_mutex_unlock(&rx.mu);
	pl_http_resp_set(resp, status, "text/plain", "ok", 2);
}

static void
rx_reset(const int *script, int n)
{
	pthread_mutex_lock(&rx.mu);
	for (int i = 0; i < rx.n; i++)
		free(rx.req[i].body);
	rx.n = 0;
	rx.used = 0;
	rx.nscript = n;
	for (int i = 0; i < n; i++)
		rx.script[i] = script[i];
	pthread_mutex_unlock(&rx.mu);
}

// The Standard Webhooks check, written here from the spec (not calling the
// service's signing code): the base64 key after "whsec_", HMAC-SHA256 over
// "<webhook-id>.<webhook-timestamp>.<body>", base64, "v1," in front; the
// header may carry several space-separated signatures.
static bool
verify(const char *secret, const rx_req *r)
{
	unsigned char key[128], mac[crypto_auth_hmacsha256_BYTES];
	char want[128], *msg, *hdr, *save = NULL, *tok;
	size_t klen = 0, mlen;
	bool ok = false;

	if (strncmp(secret, "whsec_", 6) != 0 ||
	    sodium_base642bin(key, sizeof(key), secret + 6, strlen(secret + 6),
	                      NULL, &klen, NULL,
	                      sodium_base64_VARIANT_ORIGINAL) != 0)
		return false;
	mlen = strlen(r->id) + strlen(r->ts) + strlen(r->body) + 3;
	msg = malloc(mlen);
	snprintf(msg, mlen, "%s.%s.%s", r->id, r->ts, r->body);
	{
		crypto_auth_hmacsha256_state st;
		crypto_auth_hmacsha256_init(&st, key, klen);
		crypto_auth_hmacsha256_update(&st, (unsigned char *)msg,
		                              strlen(msg));
		crypto_auth_hmacsha256_final(&st, mac);
	}
	free(msg);
	memcpy(want, "v1,", 3);
	sodium_bin2base64(want + 3, sizeof(want) - 3, mac, sizeof(mac),
	                  sodium_base64_VARIANT_ORIGINAL);
	hdr = strdup(r->sig);
	for (tok = strtok_r(hdr, " ", &save); tok && !ok;
	     tok = strtok_r(NULL, " ", &save))
		ok = strcmp(tok, want) == 0;
	free(hdr);
	return ok;
}

// ---------------------------------------------------------------------------

static const char *const env[] = {
	"PARLEY_TENANTS_URL=inproc://followups-peers",
	"PARLEY_SERVICE_SECRET=" SVCH_SECRET,
	"PARLEY_MESSAGING_POLL=20ms",
	"PARLEY_MESSAGING_SEND_RATE=100000",
	"PARLEY_MESSAGING_DELIVERY_WORKERS=2",
	"PARLEY_MESSAGING_CAMPAIGN_SENDERS=0",
	// The tests drive the follow-up scheduler and the webhook sender.
	"PARLEY_MESSAGING_FOLLOWUP_WORKERS=0",
	"PARLEY_MESSAGING_WEBHOOK_WORKERS=0",
	"PARLEY_MESSAGING_WEBHOOK_RETRY_BASE=1ms",
	"PARLEY_MESSAGING_WEBHOOK_RETRY_MAX=5ms",
	"PARLEY_MESSAGING_WEBHOOK_TIMEOUT=3s",
	// Webhook secrets sealed at rest (a test key: 32 bytes of 0x01).
	"PARLEY_CREDENTIALS_KEY=AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=",
	"PARLEY_CREDENTIALS_KEY_ID=test1",
	NULL,
};

static int
setup(void **state)
{
	pl_httpd_config hc = { 0 };

	(void)state;
	int rc = pgh_start(&pg);
	if (rc == -2)
		return -1;
	if (rc == -1)
		return 0;
	for (int i = 0; env[i]; i++)
		putenv((char *)env[i]);
	// The receiver is on loopback: the operator's allow-list lets
	// exactly 127.0.0.1 through (and nothing else of 127/8).
	setenv("PARLEY_MESSAGING_WEBHOOK_ALLOW", "127.0.0.1/32", 1);
	hc.bind = "127.0.0.1";
	if (pl_httpd_start(&rx.d, &hc, rx_handler, NULL) != 0)
		return -1;
	snprintf(rx.url, sizeof(rx.url), "http://127.0.0.1:%u/hook",
	         pl_httpd_port(rx.d));
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
	if (rx.d)
		pl_httpd_stop(rx.d);
	rx_reset(NULL, 0);
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
sqlf(const char *fmt, ...)
{
	char sql[4096];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(sql, sizeof(sql), fmt, ap);
	va_end(ap);
	return sqlv(sql, NULL, 0);
}

static int
call_as(const char *tenant, const char *method, const ProtobufCMessage *in,
        const ProtobufCMessageDescriptor *od, void **out)
{
	pl_principal p =
	        svch_user(tenant, U1, PARLEY__RPC__V1__ROLE__ROLE_ADMIN);
	pl_rpc_opts o = { 0 };
	char full[128];
	o.principal = &p;
	snprintf(full, sizeof(full), MS "%s", method);
	return pl_rpc_call(h.cli, full, in, od, out, &h.arena, &o, NULL);
}

// A contact of T1 with an open conversation whose last inbound message was
// `ago` ago (SQL interval), made by SQL (tests only).
static void
mk_conv(const char *name, const char *ago, bool opted_out, char conv[40])
{
	char k[40];
	pl_uuid7_str(k);
	pl_uuid7_str(conv);
	assert_int_equal(
	        sqlf("INSERT INTO messaging.contacts (tenant_id, id, "
	             "channel_id, external_id, external_id_kind, phone, name, "
	             "opted_out_at) VALUES ('%s', '%s', '%s', '%s', 'phone', "
	             "'+%s', '%s', %s)",
	             T1, k, C_WA, k, k, name, opted_out ? "now()" : "NULL"),
	        0);
	assert_int_equal(sqlf("INSERT INTO messaging.conversations (tenant_id, "
	                      "id, contact_id, channel_id, last_inbound_at) "
	                      "VALUES ('%s', '%s', '%s', '%s', now() - "
	                      "interval '%s')",
	                      T1, conv, k, C_WA, ago),
	                 0);
}

#define MSG_INSERT                                                             \
	"INSERT INTO messaging.messages (tenant_id, id, conversation_id, "     \
	"channel_id, direction, sender, agent_id, type, text, status) VALUES "

// The VALUES row of a message in conv, with a new id: "contact"
// (inbound), else outbound from sender ("bot", "human").
static void
msg_row(char *out, size_t len, const char *conv, const char *sender,
        char id[40])
{
	bool in = strcmp(sender, "contact") == 0;
	pl_uuid7_str(id);
	snprintf(out, len,
	         "('%s', '%s', '%s', '%s', '%s', '%s', %s, 'text', 'hi', '%s')",
	         T1, id, conv, C_WA, in ? "inbound" : "outbound", sender,
	         in ? "NULL" : "'" AG "'", in ? "received" : "sent");
}

// A message in conv by SQL: "bot" (outbound) or "contact" (inbound).
static void
mk_msg(const char *conv, const char *sender)
{
	char id[40], row[512];
	msg_row(row, sizeof(row), conv, sender, id);
	assert_int_equal(sqlf(MSG_INSERT "%s", row), 0);
}

static void
mk_template(const char *text, char id_out[40])
{
	M(CreateTemplateRequest)
	rq = PARLEY__MESSAGING__V1__CREATE_TEMPLATE_REQUEST__INIT;
	M(CreateTemplateResponse) *r = NULL;
	M(SetTemplateStatusRequest)
	sq = PARLEY__MESSAGING__V1__SET_TEMPLATE_STATUS_REQUEST__INIT;
	void *out = NULL;
	Parley__Rpc__V1__Json comp = PARLEY__RPC__V1__JSON__INIT;
	char body[512];
	snprintf(body, sizeof(body), "{\"body\":{\"text\":\"%s\"}}", text);
	comp.text = body;
	rq.channel_id = C_WA;
	rq.name = "nudge";
	rq.language = "en_US";
	rq.category = 2; // utility
	rq.components = &comp;
	assert_int_equal(
	        call_as(T1, "CreateTemplate", &rq.base,
	                &parley__messaging__v1__create_template_response__descriptor,
	                (void **)&r),
	        PL_OK);
	sq.id = r->id;
	sq.status = 3; // approved
	assert_int_equal(
	        call_as(T1, "SetTemplateStatus", &sq.base,
	                &parley__messaging__v1__set_template_status_response__descriptor,
	                &out),
	        PL_OK);
	strcpy(id_out, r->id);
}

static int
fu_once(void)
{
	pl_db *db = pl_db_open(h.db_url);
	pl_arena a;
	int n;
	pl_arena_init(&a, 0, 1 << 20);
	n = engage_followups_once(h.arg, db, &a, 1000);
	pl_arena_fini(&a);
	pl_db_close(db);
	return n;
}

static void *
fu_thread(void *arg)
{
	(void)arg;
	return (void *)(intptr_t)fu_once();
}

#define DUE(conv)                                                              \
	sqlf("UPDATE messaging.followups SET due_at = now() - interval '1 s' " \
	     "WHERE conversation_id = '%s' AND status = 'pending'",            \
	     conv)

static long
followups_sent(const char *conv)
{
	char sql[256];
	snprintf(sql, sizeof(sql),
	         "SELECT count(*) FROM messaging.messages WHERE "
	         "conversation_id = '%.36s' AND metadata ? 'followup'",
	         conv);
	return sqlv(sql, NULL, 0);
}

static void
test_followups(void **state)
{
	(void)state;
	NEED();
	M(CreateFollowupRuleRequest)
	cq = PARLEY__MESSAGING__V1__CREATE_FOLLOWUP_RULE_REQUEST__INIT;
	M(CreateFollowupRuleResponse) *cr = NULL;
	M(GetFollowupRuleRequest)
	gq = PARLEY__MESSAGING__V1__GET_FOLLOWUP_RULE_REQUEST__INIT;
	M(UpdateFollowupRuleRequest)
	uq = PARLEY__MESSAGING__V1__UPDATE_FOLLOWUP_RULE_REQUEST__INIT;
	M(DeleteFollowupRuleRequest)
	dq = PARLEY__MESSAGING__V1__DELETE_FOLLOWUP_RULE_REQUEST__INIT;
	M(ListFollowupRulesRequest)
	lq = PARLEY__MESSAGING__V1__LIST_FOLLOWUP_RULES_REQUEST__INIT;
	M(ListFollowupRulesResponse) *lr = NULL;
	M(ParameterBinding) b = PARLEY__MESSAGING__V1__PARAMETER_BINDING__INIT;
	M(ParameterBinding) * bs[1] = { &b };
	const ProtobufCMessageDescriptor *cd =
	        &parley__messaging__v1__create_followup_rule_response__descriptor;
	char tpl[40], rule[40], c1[40], c2[40], c3[40], c4[40], c5[40];
	char v[512];
	void *out = NULL;

	mk_template("Hi {{1}}, still interested?", tpl);

	// Bad input.
	cq.name = "nudge";
	cq.delay_minutes = 0;
	cq.text = "Still there?";
	// "active" not given: the rule is active (checked below).
	assert_int_equal(call_as(T1, "CreateFollowupRule", &cq.base, cd, &out),
	                 PL_INVALID_ARGUMENT);
	cq.delay_minutes = 5;
	cq.max_attempts = 11;
	assert_int_equal(call_as(T1, "CreateFollowupRule", &cq.base, cd, &out),
	                 PL_INVALID_ARGUMENT);
	cq.max_attempts = 2;
	cq.name = "";
	assert_int_equal(call_as(T1, "CreateFollowupRule", &cq.base, cd, &out),
	                 PL_INVALID_ARGUMENT);
	cq.name = "nudge";
	cq.text = "";
	assert_int_equal(call_as(T1, "CreateFollowupRule", &cq.base, cd, &out),
	                 PL_INVALID_ARGUMENT); // nothing to send
	cq.text = "Still there?";
	cq.channel_id = "not-a-uuid";
	assert_int_equal(call_as(T1, "CreateFollowupRule", &cq.base, cd, &out),
	                 PL_INVALID_ARGUMENT);
	cq.channel_id = C_WA;
	cq.template_id = tpl;
	assert_int_equal(call_as(T1, "CreateFollowupRule", &cq.base, cd, &out),
	                 PL_INVALID_ARGUMENT); // the template's {{1}} unbound
	// Another tenant's template is NOT_FOUND.
	b.index = 1;
	b.contact_field = "name";
	cq.template_parameters = bs;
	cq.n_template_parameters = 1;
	assert_int_equal(call_as(T2, "CreateFollowupRule", &cq.base, cd, &out),
	                 PL_NOT_FOUND);
	assert_int_equal(
	        call_as(T1, "CreateFollowupRule", &cq.base, cd, (void **)&cr),
	        PL_OK);
	strcpy(rule, cr->id);
	assert_int_equal(cr->rule->delay_minutes, 5);
	assert_int_equal(cr->rule->max_attempts, 2);
	assert_true(cr->rule->active);
	// A less specific rule (any channel) loses to the channel's.
	cq.channel_id = "";
	cq.name = "generic";
	cq.text = "generic";
	cq.template_id = "";
	cq.n_template_parameters = 0;
	assert_int_equal(call_as(T1, "CreateFollowupRule", &cq.base, cd, &out),
	                 PL_OK);
	// "active": false given on create: the rule starts inactive.
	{
		M(CreateFollowupRuleResponse) *off = NULL;
		M(CreateFollowupRuleRequest) oq = cq;
		oq.name = "off";
		oq.active_given_case =
		        PARLEY__MESSAGING__V1__CREATE_FOLLOWUP_RULE_REQUEST__ACTIVE_GIVEN_ACTIVE;
		oq.active = false;
		assert_int_equal(call_as(T1, "CreateFollowupRule", &oq.base, cd,
		                         (void **)&off),
		                 PL_OK);
		assert_false(off->rule->active);
		dq.id = off->id;
		assert_int_equal(
		        call_as(T1, "DeleteFollowupRule", &dq.base,
		                &parley__messaging__v1__delete_followup_rule_response__descriptor,
		                &out),
		        PL_OK);
	}

	// Cross-tenant: every RPC that takes an id.
	gq.id = rule;
	assert_int_equal(
	        call_as(T2, "GetFollowupRule", &gq.base,
	                &parley__messaging__v1__get_followup_rule_response__descriptor,
	                &out),
	        PL_NOT_FOUND);
	uq.id = rule;
	uq.name = "stolen";
	assert_int_equal(
	        call_as(T2, "UpdateFollowupRule", &uq.base,
	                &parley__messaging__v1__update_followup_rule_response__descriptor,
	                &out),
	        PL_NOT_FOUND);
	dq.id = rule;
	assert_int_equal(
	        call_as(T2, "DeleteFollowupRule", &dq.base,
	                &parley__messaging__v1__delete_followup_rule_response__descriptor,
	                &out),
	        PL_NOT_FOUND);
	assert_int_equal(
	        call_as(T2, "ListFollowupRules", &lq.base,
	                &parley__messaging__v1__list_followup_rules_response__descriptor,
	                (void **)&lr),
	        PL_OK);
	assert_int_equal(lr->n_rules, 0);
	lq.channel_id = C_WA;
	assert_int_equal(
	        call_as(T1, "ListFollowupRules", &lq.base,
	                &parley__messaging__v1__list_followup_rules_response__descriptor,
	                (void **)&lr),
	        PL_OK);
	assert_int_equal(lr->n_rules, 1);
	char *mask[1] = { "delay_minutes" };
	uq.update_mask = mask;
	uq.n_update_mask = 1;
	uq.delay_minutes = 0;
	assert_int_equal(
	        call_as(T1, "UpdateFollowupRule", &uq.base,
	                &parley__messaging__v1__update_followup_rule_response__descriptor,
	                &out),
	        PL_INVALID_ARGUMENT);
	char *badmask[1] = { "nope" };
	uq.update_mask = badmask;
	assert_int_equal(
	        call_as(T1, "UpdateFollowupRule", &uq.base,
	                &parley__messaging__v1__update_followup_rule_response__descriptor,
	                &out),
	        PL_INVALID_ARGUMENT);

	// 1. A bot message schedules the follow-up, the rule's delay later.
	mk_conv("Ana", "1 minute", false, c1);
	mk_msg(c1, "bot");
	snprintf(v, sizeof(v),
	         "SELECT count(*) FROM messaging.followups WHERE "
	         "conversation_id = '%s' AND status = 'pending' AND rule_id = "
	         "'%s' AND due_at BETWEEN now() + interval '4 min' AND now() + "
	         "interval '6 min'",
	         c1, rule);
	assert_int_equal(sqlv(v, NULL, 0), 1);
	assert_int_equal(fu_once(), 0); // not due yet
	assert_int_equal(DUE(c1), 0);
	assert_int_equal(fu_once(), 1);
	assert_int_equal(followups_sent(c1), 1);
	assert_int_equal(fu_once(), 0); // the 2nd attempt waits its delay
	assert_int_equal(DUE(c1), 0);
	assert_int_equal(fu_once(), 1);
	assert_int_equal(followups_sent(c1), 2);
	assert_int_equal(DUE(c1), 0);
	assert_int_equal(fu_once(), 0); // at most 2
	assert_int_equal(followups_sent(c1), 2);
	snprintf(v, sizeof(v),
	         "SELECT string_agg(type || ':' || text, '|' ORDER BY id) FROM "
	         "messaging.messages WHERE conversation_id = '%s' AND metadata "
	         "? 'followup'",
	         c1);
	sqlv(v, v, sizeof(v));
	assert_string_equal(v, "text:Still there?|text:Still there?");

	// 2. A reply cancels it; nothing is sent.
	mk_conv("Bea", "1 minute", false, c2);
	mk_msg(c2, "bot");
	mk_msg(c2, "contact");
	snprintf(
	        v, sizeof(v),
	        "SELECT status || ':' || reason FROM messaging.followups WHERE "
	        "conversation_id = '%s'",
	        c2);
	sqlv(v, v, sizeof(v));
	assert_string_equal(v, "canceled:replied");
	sqlf("UPDATE messaging.followups SET due_at = now() - interval '1 s' "
	     "WHERE conversation_id = '%s'",
	     c2);
	assert_int_equal(fu_once(), 0);
	assert_int_equal(followups_sent(c2), 0);

	// 3. Outside the 24 h window: the template, bound to the contact.
	mk_conv("Caro", "2 days", false, c3);
	mk_msg(c3, "bot");
	assert_int_equal(DUE(c3), 0);
	assert_int_equal(fu_once(), 1);
	snprintf(v, sizeof(v),
	         "SELECT type || ':' || text || ':' || "
	         "(metadata->'template'->>'name') FROM messaging.messages "
	         "WHERE conversation_id = '%s' AND metadata ? 'followup'",
	         c3);
	sqlv(v, v, sizeof(v));
	assert_string_equal(v, "template:Hi Caro, still interested?:nudge");

	// 4. An opted-out contact is skipped.
	mk_conv("Dan", "1 minute", true, c4);
	mk_msg(c4, "bot");
	assert_int_equal(DUE(c4), 0);
	assert_int_equal(fu_once(), 1);
	assert_int_equal(followups_sent(c4), 0);
	snprintf(
	        v, sizeof(v),
	        "SELECT status || ':' || reason FROM messaging.followups WHERE "
	        "conversation_id = '%s'",
	        c4);
	sqlv(v, v, sizeof(v));
	assert_string_equal(v, "skipped:opted_out");

	// 5. A scheduler that dies holding a due row: the others skip it,
	// it comes back after the rollback and is sent once.
	mk_conv("Eva", "1 minute", false, c5);
	mk_msg(c5, "bot");
	assert_int_equal(DUE(c5), 0);
	{
		PGconn *dead = PQconnectdb(h.admin_url);
		PGresult *r = PQexec(dead, "BEGIN");
		PQclear(r);
		snprintf(v, sizeof(v),
		         "SELECT id FROM messaging.followups WHERE "
		         "conversation_id = '%s' AND status = 'pending' FOR "
		         "UPDATE",
		         c5);
		r = PQexec(dead, v);
		assert_int_equal(PQntuples(r), 1);
		PQclear(r);
		assert_int_equal(fu_once(), 0);
		PQfinish(dead); // no COMMIT: as after kill -9
	}
	assert_int_equal(fu_once(), 1);
	assert_int_equal(followups_sent(c5), 1);

	// 6. Two schedulers at once over 60 due follow-ups: each once.
	{
		char convs[60][40];
		pthread_t th[2];
		void *r0, *r1;
		for (int i = 0; i < 60; i++) {
			mk_conv("Many", "1 minute", false, convs[i]);
			mk_msg(convs[i], "bot");
		}
		sqlf("UPDATE messaging.followups SET due_at = now() - "
		     "interval '1 s' WHERE status = 'pending' AND attempt = 1");
		pthread_create(&th[0], NULL, fu_thread, NULL);
		pthread_create(&th[1], NULL, fu_thread, NULL);
		pthread_join(th[0], &r0);
		pthread_join(th[1], &r1);
		assert_int_equal((int)(intptr_t)r0 + (int)(intptr_t)r1, 60);
		for (int i = 0; i < 60; i++)
			assert_int_equal(followups_sent(convs[i]), 1);
	}
	// They reach the provider (the core's delivery workers).
	assert_true(fake_provider_wait(fp, 64, 20000) >= 64);

	// 7. Deactivating the rule cancels its pending follow-ups; deleting
	// it removes them.
	{
		char *am[1] = { "active" };
		M(UpdateFollowupRuleResponse) *ur = NULL;
		uq.update_mask = am;
		uq.n_update_mask = 1;
		uq.active = false;
		assert_int_equal(
		        call_as(T1, "UpdateFollowupRule", &uq.base,
		                &parley__messaging__v1__update_followup_rule_response__descriptor,
		                (void **)&ur),
		        PL_OK);
		assert_false(ur->rule->active);
		snprintf(v, sizeof(v),
		         "SELECT count(*) FROM messaging.followups WHERE "
		         "rule_id "
		         "= '%s' AND status = 'pending'",
		         rule);
		assert_int_equal(sqlv(v, NULL, 0), 0);
		assert_int_equal(
		        call_as(T1, "DeleteFollowupRule", &dq.base,
		                &parley__messaging__v1__delete_followup_rule_response__descriptor,
		                &out),
		        PL_OK);
		assert_int_equal(
		        call_as(T1, "GetFollowupRule", &gq.base,
		                &parley__messaging__v1__get_followup_rule_response__descriptor,
		                &out),
		        PL_NOT_FOUND);
	}
}

// Several messages of one conversation in one statement: the follow-up
// trigger runs once a statement (migration 026) and must leave what one
// call a row, in the rows' order, left.
static void
mk_msgs(const char *conv, const char *first, const char *second,
        char second_id[40])
{
	char id[2][40], row[2][512];
	msg_row(row[0], sizeof(row[0]), conv, first, id[0]);
	msg_row(row[1], sizeof(row[1]), conv, second, id[1]);
	assert_int_equal(sqlf(MSG_INSERT "%s, %s", row[0], row[1]), 0);
	strcpy(second_id, id[1]);
}

static long
fu_count(const char *conv, const char *status, const char *reason)
{
	char sql[512];
	snprintf(sql, sizeof(sql),
	         "SELECT count(*) FROM messaging.followups WHERE "
	         "conversation_id = '%.36s' AND status = '%s'%s%s%s",
	         conv, status, reason ? " AND reason = '" : "",
	         reason ? reason : "", reason ? "'" : "");
	return sqlv(sql, NULL, 0);
}

static void
test_followups_one_statement(void **state)
{
	(void)state;
	NEED();
	char conv[40], rule[40], bot[40], anchor[256];

	pl_uuid7_str(rule);
	assert_int_equal(
	        sqlf("INSERT INTO messaging.followup_rules (tenant_id, "
	             "id, name, delay_minutes, text) VALUES ('%s', "
	             "'%s', 'one statement', 30, 'Still there?')",
	             T1, rule),
	        0);
	mk_conv("Stmt", "1 minute", false, conv);

	// The bot's message starts a chain, the customer's answer after it
	// cancels it: nothing pending, one canceled as replied.
	mk_msgs(conv, "bot", "contact", bot);
	assert_int_equal(fu_count(conv, "pending", NULL), 0);
	assert_int_equal(fu_count(conv, "canceled", "replied"), 1);

	// The other way round: the chain follows the bot's message.
	mk_msgs(conv, "contact", "bot", bot);
	assert_int_equal(fu_count(conv, "pending", NULL), 1);
	assert_int_equal(fu_count(conv, "canceled", NULL), 1);
	snprintf(anchor, sizeof(anchor),
	         "SELECT anchor_message_id FROM messaging.followups WHERE "
	         "conversation_id = '%s' AND status = 'pending'",
	         conv);
	sqlv(anchor, anchor, sizeof(anchor));
	assert_string_equal(anchor, bot);

	// A person's reply and then the bot's: the person cancels the chain,
	// the bot starts a new one.
	mk_msgs(conv, "human", "bot", bot);
	assert_int_equal(fu_count(conv, "canceled", "human"), 1);
	assert_int_equal(fu_count(conv, "pending", NULL), 1);

	// With no active rule (the tenant's are switched off): the answer
	// cancels the chain and the bot's message after it starts none; then,
	// with nothing pending, nothing is written at all.
	assert_int_equal(sqlf("UPDATE messaging.followup_rules SET is_active = "
	                      "false WHERE tenant_id = '%s'",
	                      T1),
	                 0);
	mk_msgs(conv, "contact", "bot", bot);
	assert_int_equal(fu_count(conv, "canceled", "replied"), 2);
	assert_int_equal(fu_count(conv, "pending", NULL), 0);
	long before = sqlv("SELECT count(*) FROM messaging.followups", NULL, 0);
	mk_msgs(conv, "bot", "contact", bot);
	assert_int_equal(
	        sqlv("SELECT count(*) FROM messaging.followups", NULL, 0),
	        before);
}

// ---------------------------------------------------------------------------
// Webhooks

static int
oh_once(void)
{
	pl_db *db = pl_db_open(h.db_url);
	pl_arena a;
	int n;
	pl_arena_init(&a, 0, 1 << 20);
	n = engage_outhooks_once(h.arg, db, &a);
	pl_arena_fini(&a);
	pl_db_close(db);
	return n;
}

// Runs the sender until nothing is due for a while.
static void
oh_drain(void)
{
	for (int idle = 0; idle < 20;) {
		if (oh_once() <= 0) {
			idle++;
			usleep(10000);
		} else {
			idle = 0;
		}
	}
}

static void
mk_lead(const char *tenant, int expect)
{
	char conv[40], k[128];
	M(CreateLeadRequest)
	lq = PARLEY__MESSAGING__V1__CREATE_LEAD_REQUEST__INIT;
	void *out = NULL;
	mk_conv("Lead", "1 minute", false, conv);
	snprintf(k, sizeof(k),
	         "SELECT contact_id FROM messaging.conversations WHERE id = "
	         "'%s'",
	         conv);
	sqlv(k, k, sizeof(k));
	lq.contact_id = k;
	lq.name = "Lead";
	assert_int_equal(
	        call_as(tenant, "CreateLead", &lq.base,
	                &parley__messaging__v1__create_lead_response__descriptor,
	                &out),
	        expect);
}

static void
test_webhooks(void **state)
{
	(void)state;
	NEED();
	M(CreateWebhookEndpointRequest)
	cq = PARLEY__MESSAGING__V1__CREATE_WEBHOOK_ENDPOINT_REQUEST__INIT;
	M(CreateWebhookEndpointResponse) *cr = NULL;
	M(GetWebhookEndpointRequest)
	gq = PARLEY__MESSAGING__V1__GET_WEBHOOK_ENDPOINT_REQUEST__INIT;
	M(GetWebhookEndpointResponse) *gr = NULL;
	M(UpdateWebhookEndpointRequest)
	uq = PARLEY__MESSAGING__V1__UPDATE_WEBHOOK_ENDPOINT_REQUEST__INIT;
	M(RotateWebhookSecretRequest)
	rq = PARLEY__MESSAGING__V1__ROTATE_WEBHOOK_SECRET_REQUEST__INIT;
	M(RotateWebhookSecretResponse) *rr = NULL;
	M(ListWebhookDeliveriesRequest)
	lq = PARLEY__MESSAGING__V1__LIST_WEBHOOK_DELIVERIES_REQUEST__INIT;
	M(ListWebhookDeliveriesResponse) *lr = NULL;
	M(RedeliverWebhookRequest)
	dq = PARLEY__MESSAGING__V1__REDELIVER_WEBHOOK_REQUEST__INIT;
	M(RedeliverWebhookResponse) *dr = NULL;
	M(DeleteWebhookEndpointRequest)
	xq = PARLEY__MESSAGING__V1__DELETE_WEBHOOK_ENDPOINT_REQUEST__INIT;
	const ProtobufCMessageDescriptor *cd =
	        &parley__messaging__v1__create_webhook_endpoint_response__descriptor;
	char secret[128], ep[40], did[128], why[256], pin[400];
	char *types[2] = { "lead.created", "order.created" };
	char *bad_types[1] = { "lead.exploded" };
	void *out = NULL;

	// SSRF refusals when writing the endpoint: loopback (not in the
	// allow-list), private, link-local/metadata, IPv6 loopback and
	// unique-local, IPv4-mapped loopback, credentials, other schemes,
	// a name that does not resolve, garbage.
	static const char *const bad[] = {
		"http://127.0.0.2:9/h",
		"http://10.1.2.3/h",
		"http://172.16.0.1/h",
		"http://192.168.1.1/h",
		"http://169.254.169.254/latest/meta-data",
		"http://100.64.0.1/h",
		"http://0.0.0.0/h",
		"http://[::1]/h",
		"http://[fd00:ec2::254]/h",
		"http://[fe80::1]/h",
		"http://[::ffff:127.0.0.2]/h",
		"http://user:pw@127.0.0.1/h",
		"ftp://127.0.0.1/h",
		"file:///etc/passwd",
		"gopher://127.0.0.1/",
		"http://no-such-host.invalid/h",
		"not a url",
		"",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		cq.url = (char *)bad[i];
		if (call_as(T1, "CreateWebhookEndpoint", &cq.base, cd, &out) !=
		    PL_INVALID_ARGUMENT)
			fail_msg("url %s was not refused", bad[i]);
	}
	// Public addresses pass the guard (literals: no DNS needed).
	assert_true(engage_webhook_url_ok("https://93.184.216.34/h", why,
	                                  sizeof(why), pin, sizeof(pin)));
	assert_string_equal(pin, "93.184.216.34:443:93.184.216.34");
	assert_true(engage_webhook_url_ok("http://[2606:2800:220:1::1]:8080/",
	                                  why, sizeof(why), NULL, 0));
	cq.url = rx.url;
	cq.event_types = bad_types;
	cq.n_event_types = 1;
	assert_int_equal(
	        call_as(T1, "CreateWebhookEndpoint", &cq.base, cd, &out),
	        PL_INVALID_ARGUMENT);
	cq.event_types = types;
	cq.n_event_types = 2;
	assert_int_equal(call_as(T1, "CreateWebhookEndpoint", &cq.base, cd,
	                         (void **)&cr),
	                 PL_OK);
	assert_true(strncmp(cr->secret, "whsec_", 6) == 0);
	snprintf(secret, sizeof(secret), "%s", cr->secret);
	snprintf(ep, sizeof(ep), "%s", cr->id);
	assert_true(cr->endpoint->active);
	// Stored sealed: neither the secret nor its key in the row.
	{
		char q[200], v[400];
		snprintf(q, sizeof(q),
		         "SELECT secret FROM messaging.webhook_endpoints "
		         "WHERE id = '%s'",
		         ep);
		sqlv(q, v, sizeof(v));
		assert_true(strncmp(v, "sealed:test1:", 13) == 0);
		assert_null(strstr(v, secret + 6));
	}
	assert_int_equal(cr->endpoint->n_event_types, 2);

	// Cross-tenant: every RPC that takes an id.
	gq.id = ep;
	assert_int_equal(
	        call_as(T2, "GetWebhookEndpoint", &gq.base,
	                &parley__messaging__v1__get_webhook_endpoint_response__descriptor,
	                &out),
	        PL_NOT_FOUND);
	uq.id = ep;
	uq.description = "mine now";
	assert_int_equal(
	        call_as(T2, "UpdateWebhookEndpoint", &uq.base,
	                &parley__messaging__v1__update_webhook_endpoint_response__descriptor,
	                &out),
	        PL_NOT_FOUND);
	rq.id = ep;
	assert_int_equal(
	        call_as(T2, "RotateWebhookSecret", &rq.base,
	                &parley__messaging__v1__rotate_webhook_secret_response__descriptor,
	                &out),
	        PL_NOT_FOUND);
	lq.endpoint_id = ep;
	assert_int_equal(
	        call_as(T2, "ListWebhookDeliveries", &lq.base,
	                &parley__messaging__v1__list_webhook_deliveries_response__descriptor,
	                &out),
	        PL_NOT_FOUND);
	xq.id = ep;
	assert_int_equal(
	        call_as(T2, "DeleteWebhookEndpoint", &xq.base,
	                &parley__messaging__v1__delete_webhook_endpoint_response__descriptor,
	                &out),
	        PL_NOT_FOUND);
	// Bad input on update and list.
	uq.url = "http://10.0.0.1/";
	assert_int_equal(
	        call_as(T1, "UpdateWebhookEndpoint", &uq.base,
	                &parley__messaging__v1__update_webhook_endpoint_response__descriptor,
	                &out),
	        PL_INVALID_ARGUMENT);
	uq.url = NULL;
	lq.endpoint_id = "x";
	assert_int_equal(
	        call_as(T1, "ListWebhookDeliveries", &lq.base,
	                &parley__messaging__v1__list_webhook_deliveries_response__descriptor,
	                &out),
	        PL_INVALID_ARGUMENT);
	lq.endpoint_id = ep;
	lq.status = 9;
	assert_int_equal(
	        call_as(T1, "ListWebhookDeliveries", &lq.base,
	                &parley__messaging__v1__list_webhook_deliveries_response__descriptor,
	                &out),
	        PL_INVALID_ARGUMENT);
	lq.status = 0;

	// An event: a lead → one delivery; the receiver fails twice, then
	// takes it. Every attempt has the same id and body and a valid
	// signature (checked with the test's own HMAC).
	{
		int script[2] = { 500, 503 };
		rx_reset(script, 2);
	}
	mk_lead(T1, PL_OK);
	mk_lead(T2, PL_NOT_FOUND); // no such contact for T2: no event
	oh_drain();
	pthread_mutex_lock(&rx.mu);
	assert_int_equal(rx.n, 3);
	for (int i = 0; i < 3; i++) {
		assert_string_equal(rx.req[i].id, rx.req[0].id);
		assert_string_equal(rx.req[i].body, rx.req[0].body);
		assert_true(verify(secret, &rx.req[i]));
		assert_true(llabs(atoll(rx.req[i].ts) - (long long)time(NULL)) <
		            300);
	}
	// The check can fail: a wrong secret, a changed body.
	assert_false(
	        verify("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
	               &rx.req[0]));
	{
		rx_req t = rx.req[0];
		t.body = "{}";
		assert_false(verify(secret, &t));
	}
	{
		json_t *o = json_loads(rx.req[0].body, 0, NULL);
		assert_non_null(o);
		assert_string_equal(
		        json_string_value(json_object_get(o, "type")),
		        "lead.created");
		assert_string_equal(
		        json_string_value(json_object_get(o, "tenant_id")), T1);
		assert_non_null(
		        json_object_get(json_object_get(o, "data"), "lead_id"));
		json_decref(o);
	}
	snprintf(did, sizeof(did), "%s", rx.req[0].id);
	pthread_mutex_unlock(&rx.mu);
	assert_int_equal(
	        call_as(T1, "ListWebhookDeliveries", &lq.base,
	                &parley__messaging__v1__list_webhook_deliveries_response__descriptor,
	                (void **)&lr),
	        PL_OK);
	assert_int_equal(lr->n_deliveries, 1);
	assert_string_equal(lr->deliveries[0]->id, did);
	assert_int_equal(lr->deliveries[0]->status, 2); // delivered
	assert_int_equal(lr->deliveries[0]->attempts, 3);
	assert_int_equal(lr->deliveries[0]->last_http_status, 200);
	assert_string_equal(lr->deliveries[0]->event_type, "lead.created");

	// Replay on request: same id, signed again; another tenant cannot.
	dq.id = did;
	assert_int_equal(
	        call_as(T2, "RedeliverWebhook", &dq.base,
	                &parley__messaging__v1__redeliver_webhook_response__descriptor,
	                &out),
	        PL_NOT_FOUND);
	assert_int_equal(
	        call_as(T1, "RedeliverWebhook", &dq.base,
	                &parley__messaging__v1__redeliver_webhook_response__descriptor,
	                (void **)&dr),
	        PL_OK);
	assert_int_equal(dr->delivery->status, 1); // pending
	oh_drain();
	pthread_mutex_lock(&rx.mu);
	assert_int_equal(rx.n, 4);
	assert_string_equal(rx.req[3].id, did);
	assert_true(verify(secret, &rx.req[3]));
	pthread_mutex_unlock(&rx.mu);

	// A rotated secret signs from then on.
	assert_int_equal(
	        call_as(T1, "RotateWebhookSecret", &rq.base,
	                &parley__messaging__v1__rotate_webhook_secret_response__descriptor,
	                (void **)&rr),
	        PL_OK);
	assert_string_not_equal(rr->secret, secret);
	assert_int_equal(
	        call_as(T1, "RedeliverWebhook", &dq.base,
	                &parley__messaging__v1__redeliver_webhook_response__descriptor,
	                &out),
	        PL_OK);
	oh_drain();
	pthread_mutex_lock(&rx.mu);
	assert_int_equal(rx.n, 5);
	assert_true(verify(rr->secret, &rx.req[4]));
	assert_false(verify(secret, &rx.req[4]));
	pthread_mutex_unlock(&rx.mu);
	snprintf(secret, sizeof(secret), "%s", rr->secret);

	// SSRF when sending: the allow-list no longer lets the receiver in →
	// no request is made, the attempt records the refusal.
	rx_reset(NULL, 0);
	setenv("PARLEY_MESSAGING_WEBHOOK_ALLOW", "", 1);
	mk_lead(T1, PL_OK);
	assert_int_equal(oh_once(), 1);
	setenv("PARLEY_MESSAGING_WEBHOOK_ALLOW", "127.0.0.1/32", 1);
	pthread_mutex_lock(&rx.mu);
	assert_int_equal(rx.n, 0);
	pthread_mutex_unlock(&rx.mu);
	{
		char v[256];
		snprintf(
		        v, sizeof(v),
		        "SELECT status || ':' || last_error FROM "
		        "messaging.webhook_deliveries WHERE endpoint_id = '%s' "
		        "ORDER BY id DESC LIMIT 1",
		        ep);
		sqlv(v, v, sizeof(v));
		assert_true(strncmp(v,
		                    "retrying:refused: url resolves to "
		                    "127.0.0.1",
		                    34) == 0);
	}
	oh_drain(); // allowed again: delivered
	pthread_mutex_lock(&rx.mu);
	assert_int_equal(rx.n, 1);
	assert_true(verify(secret, &rx.req[0]));
	pthread_mutex_unlock(&rx.mu);

	// The retry budget: with 1 ms left, a failure is final.
	{
		int script[1] = { 500 };
		char v[256];
		rx_reset(script, 1);
		setenv("PARLEY_MESSAGING_WEBHOOK_MAX_AGE", "1ms", 1);
		mk_lead(T1, PL_OK);
		oh_drain();
		setenv("PARLEY_MESSAGING_WEBHOOK_MAX_AGE", "24h", 1);
		snprintf(v, sizeof(v),
		         "SELECT status FROM messaging.webhook_deliveries "
		         "WHERE endpoint_id = '%s' ORDER BY id DESC LIMIT 1",
		         ep);
		sqlv(v, v, sizeof(v));
		assert_string_equal(v, "failed");
		pthread_mutex_lock(&rx.mu);
		assert_int_equal(rx.n, 1);
		pthread_mutex_unlock(&rx.mu);
	}

	// An endpoint failing for longer than DISABLE_AFTER is disabled, its
	// waiting deliveries failed, and the tenant told (event + fields).
	{
		int script[3] = { 500, 500, 500 };
		char v[256];
		rx_reset(script, 3);
		setenv("PARLEY_MESSAGING_WEBHOOK_DISABLE_AFTER", "1ms", 1);
		mk_lead(T1, PL_OK);
		oh_drain();
		usleep(5000);
		mk_lead(T1, PL_OK);
		oh_drain();
		setenv("PARLEY_MESSAGING_WEBHOOK_DISABLE_AFTER", "5d", 1);
		assert_int_equal(
		        call_as(T1, "GetWebhookEndpoint", &gq.base,
		                &parley__messaging__v1__get_webhook_endpoint_response__descriptor,
		                (void **)&gr),
		        PL_OK);
		assert_false(gr->endpoint->active);
		assert_non_null(gr->endpoint->disabled_at);
		assert_string_equal(gr->endpoint->disabled_reason,
		                    "failing continuously");
		snprintf(v, sizeof(v),
		         "SELECT count(*) FROM messaging.webhook_deliveries "
		         "WHERE endpoint_id = '%s' AND status IN ('pending', "
		         "'retrying')",
		         ep);
		assert_int_equal(sqlv(v, NULL, 0), 0);
		assert_int_equal(sqlv("SELECT count(*) FROM messaging.outbox "
		                      "WHERE type = "
		                      "'webhook_endpoint.disabled'",
		                      NULL, 0),
		                 1);
		// A disabled endpoint gets no new deliveries and cannot
		// replay until enabled again.
		mk_lead(T1, PL_OK);
		snprintf(v, sizeof(v),
		         "SELECT count(*) FROM messaging.webhook_deliveries "
		         "WHERE endpoint_id = '%s' AND status = 'pending'",
		         ep);
		assert_int_equal(sqlv(v, NULL, 0), 0);
		assert_int_equal(
		        call_as(T1, "RedeliverWebhook", &dq.base,
		                &parley__messaging__v1__redeliver_webhook_response__descriptor,
		                &out),
		        PL_FAILED_PRECONDITION);
		char *am[1] = { "active" };
		M(UpdateWebhookEndpointResponse) *ur = NULL;
		uq.update_mask = am;
		uq.n_update_mask = 1;
		uq.active = true;
		assert_int_equal(
		        call_as(T1, "UpdateWebhookEndpoint", &uq.base,
		                &parley__messaging__v1__update_webhook_endpoint_response__descriptor,
		                (void **)&ur),
		        PL_OK);
		assert_true(ur->endpoint->active);
		assert_string_equal(ur->endpoint->disabled_at, "");
	}
	// Types not subscribed make no delivery (a follow-up rule event
	// would be "followup.sent": not in this endpoint's list).
	assert_int_equal(sqlv("SELECT count(*) FROM "
	                      "messaging.webhook_deliveries WHERE event_type "
	                      "<> 'lead.created'",
	                      NULL, 0),
	                 0);
	assert_int_equal(
	        call_as(T1, "DeleteWebhookEndpoint", &xq.base,
	                &parley__messaging__v1__delete_webhook_endpoint_response__descriptor,
	                &out),
	        PL_OK);
	assert_int_equal(
	        call_as(T1, "GetWebhookEndpoint", &gq.base,
	                &parley__messaging__v1__get_webhook_endpoint_response__descriptor,
	                &out),
	        PL_NOT_FOUND);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_followups),
		cmocka_unit_test(test_followups_one_statement),
		cmocka_unit_test(test_webhooks),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
