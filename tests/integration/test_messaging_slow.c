// A worker waiting on a slow provider does not hold new webhooks back
// (messaging README, Configuration: the kick policy's outside waits). While
// an inbox worker is in a round, a stored webhook wakes no other worker
// unless a quarter of a batch waits; but once the provider's sends have
// lately been slow, a worker waiting on one does not count as at work, and
// the next webhook is ingested and answered by another worker at once. The
// service runs here with a 5 s poll, so only a kick can wake a worker in
// time: without that rule the second message waits for the slow send's
// end (its reply is sent after the first's), which the test sees in the
// order of the two replies' statuses. Its own fake peers and bodies (the
// WhatsApp Cloud format), no fixtures. The two senders write to two
// channels with a fake provider each: a fake provider's thread sleeping on
// the slow answer would hold every connection it serves, which a real
// provider does not.
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

#include "fake_peers.h"
#include "fake_provider.h"
#include "messaging.h"
#include "pgh.h"
#include "svch.h"

#define T1      "0190b000-0000-7000-8000-000000000001"
#define C_WA    "0190b000-0000-7000-8000-0000000000c1"
#define C_WA2   "0190b000-0000-7000-8000-0000000000c2"
#define AGENT   "0190b000-0000-7000-8000-0000000000e1"
#define SECRET  "slow-app-secret"
#define SLOW_MS 1500

static pgh pg;
static svch h;
static fake_provider *fp, *fp2; // C_WA's (slow), C_WA2's
static fake_peers *peers;
static bool up;

// Tenants: one WhatsApp channel; billing: everything allowed; agents: the
// text echoed.
static int
peer_handler(pl_call *call, const void *inp, void *outp)
{
	const char *m = strrchr(call->method, '/') + 1;

	if (strcmp(m, "ResolveChannel") == 0 ||
	    strcmp(m, "GetChannelSecrets") == 0) {
		const char *id =
		        m[0] == 'R'
		                ? ((const Parley__Tenants__V1__ResolveChannelRequest
		                            *)inp)
		                          ->channel_id
		                : ((const Parley__Tenants__V1__GetChannelSecretsRequest
		                            *)inp)
		                          ->channel_id;
		bool two = strcmp(id, C_WA2) == 0;
		Parley__Tenants__V1__Channel *ch =
		        pl_arena_zalloc(call->arena, sizeof(*ch));
		if (!two && strcmp(id, C_WA) != 0)
			return pl_call_error(call, PL_NOT_FOUND, "no channel");
		parley__tenants__v1__channel__init(ch);
		ch->id = two ? C_WA2 : C_WA;
		ch->type = 1;
		ch->status =
		        PARLEY__TENANTS__V1__CHANNEL_STATUS__CHANNEL_STATUS_ACTIVE;
		ch->api_base_url = (char *)fake_provider_url(two ? fp2 : fp);
		ch->phone_number_id = two ? "5566778800" : "5566778899";
		ch->agent_id = AGENT;
		if (m[0] == 'R') {
			Parley__Tenants__V1__ResolveChannelResponse *o = outp;
			o->tenant_id = T1;
			o->channel = ch;
		} else {
			Parley__Tenants__V1__GetChannelSecretsResponse *o =
			        outp;
			o->channel = ch;
			o->access_token = "tok-slow";
			o->app_secret = SECRET;
		}
		return PL_OK;
	}
	if (strcmp(m, "ReserveUsageBatch") == 0) {
		const Parley__Billing__V1__ReserveUsageBatchRequest *in = inp;
		Parley__Billing__V1__ReserveUsageBatchResponse *o = outp;
		o->results = pl_arena_zalloc(call->arena,
		                             in->n_items * sizeof(*o->results));
		o->n_results = in->n_items;
		for (size_t i = 0; i < in->n_items; i++) {
			o->results[i] = pl_arena_zalloc(call->arena,
			                                sizeof(**o->results));
			parley__billing__v1__reserve_usage_batch_result__init(
			        o->results[i]);
		}
		return PL_OK;
	}
	if (strcmp(m, "ReplyBatch") == 0) {
		const Parley__Agents__V1__ReplyBatchRequest *in = inp;
		Parley__Agents__V1__ReplyBatchResponse *o = outp;
		o->results = pl_arena_zalloc(call->arena,
		                             in->n_items * sizeof(*o->results));
		o->n_results = in->n_items;
		for (size_t i = 0; i < in->n_items; i++) {
			Parley__Agents__V1__ReplyBatchResult *r =
			        pl_arena_zalloc(call->arena, sizeof(*r));
			parley__agents__v1__reply_batch_result__init(r);
			r->reply =
			        pl_arena_zalloc(call->arena, sizeof(*r->reply));
			parley__agents__v1__reply_response__init(r->reply);
			r->reply->reply_text = pl_arena_printf(
			        call->arena, "echo: %s", in->items[i]->text);
			o->results[i] = r;
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
		&parley__billing__v1__billing__descriptor,
		&parley__agents__v1__agents__descriptor,
	};

	return fake_peers_start(&peers, "inproc://slow-peers", 4, peer_handler,
	                        d, 3);
}

static const char *const env[] = {
	"PARLEY_TENANTS_URL=inproc://slow-peers",
	"PARLEY_BILLING_URL=inproc://slow-peers",
	"PARLEY_AGENTS_URL=inproc://slow-peers",
	// Only a kick wakes a worker within the test's time.
	"PARLEY_MESSAGING_POLL=5s",
	"PARLEY_MESSAGING_SEND_TIMEOUT=10s",
	"PARLEY_MESSAGING_INBOX_KEEP=0",
	NULL,
};

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
	if (fake_provider_start(&fp) != 0 || fake_provider_start(&fp2) != 0 ||
	    start_peers() != 0)
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
	if (fp)
		fake_provider_stop(fp);
	if (fp2)
		fake_provider_stop(fp2);
	pgh_stop(&pg);
	return 0;
}

// A signed WhatsApp Cloud body with one text message from `from`, posted
// through HandleWebhook to channel C_WA, or C_WA2 when two.
static int
post(bool two, const char *id, const char *text, const char *from)
{
	Parley__Messaging__V1__HandleWebhookRequest rq =
	        PARLEY__MESSAGING__V1__HANDLE_WEBHOOK_REQUEST__INIT;
	Parley__Messaging__V1__HttpHeader hd =
	        PARLEY__MESSAGING__V1__HTTP_HEADER__INIT;
	Parley__Messaging__V1__HttpHeader *hs[1] = { &hd };
	Parley__Messaging__V1__HandleWebhookResponse *out = NULL;
	char sig[72], *body;
	pl_rpc_opts o = { 0 };
	pl_arena a;
	json_t *root;
	int rv;

	root = json_pack(
	        "{s:s, s:[{s:s, s:[{s:s, s:{s:s, s:{s:s, s:s}, "
	        "s:[{s:{s:s}, s:s}], s:[{s:s, s:s, s:s, s:{s:s}, s:s}]}}]}]}",
	        "object", "whatsapp_business_account", "entry", "id", "1",
	        "changes", "field", "messages", "value", "messaging_product",
	        "whatsapp", "metadata", "display_phone_number", "15550001111",
	        "phone_number_id", two ? "5566778800" : "5566778899",
	        "contacts", "profile", "name", "Slow Test", "wa_id", from,
	        "messages", "from", from, "id", id, "timestamp", "1732400000",
	        "text", "body", text, "type", "text");
	body = json_dumps(root, JSON_COMPACT);
	json_decref(root);
	if (body == NULL)
		return PL_INTERNAL;
	fake_provider_sign(SECRET, body, strlen(body), sig);
	pl_arena_init(&a, 0, 0);
	rq.channel_id = two ? C_WA2 : C_WA;
	rq.channel_type = 1;
	rq.body.data = (uint8_t *)body;
	rq.body.len = strlen(body);
	hd.name = "x-hub-signature-256";
	hd.value = sig;
	rq.headers = hs;
	rq.n_headers = 1;
	rv = pl_rpc_call(
	        h.cli, "/parley.messaging.v1.Messaging/HandleWebhook", &rq.base,
	        &parley__messaging__v1__handle_webhook_response__descriptor,
	        (void **)&out, &a, &o, NULL);
	pl_arena_fini(&a);
	free(body);
	return rv;
}

// The status of the reply whose text is `text` ("" when there is none).
static void
reply_status(const char *text, char out[32])
{
	PGconn *c = PQconnectdb(h.admin_url);
	const char *p[1] = { text };
	PGresult *r =
	        PQexecParams(c,
	                     "SELECT status FROM messaging.messages WHERE "
	                     "direction = 'outbound' AND text = $1",
	                     1, NULL, p, NULL, NULL, 0);
	out[0] = '\0';
	if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
		snprintf(out, 32, "%s", PQgetvalue(r, 0, 0));
	PQclear(r);
	PQfinish(c);
}

static void
wait_status(const char *text, const char *want)
{
	char got[32] = "";
	for (int i = 0; i < 1500 && strcmp(got, want) != 0; i++) {
		reply_status(text, got);
		if (strcmp(got, want) != 0)
			usleep(20000);
	}
	assert_string_equal(got, want);
}

static void
test_slow_send_holds_nothing_back(void **state)
{
	fp_reply slow = { 200, NULL, 0, 0, NULL };
	char st[32];
	int base;

	(void)state;
	if (!up)
		skip();
	// Two slow sends teach the service that its provider is slow (the
	// moving average passes 5 ms).
	slow.delay_ms = 200;
	slow.match = "warm one";
	fake_provider_script(fp, &slow);
	slow.match = "warm two";
	fake_provider_script(fp, &slow);
	assert_int_equal(
	        post(false, "wamid.slow-w1", "warm one", "5511900000001"),
	        PL_OK);
	wait_status("echo: warm one", "sent");
	assert_int_equal(
	        post(false, "wamid.slow-w2", "warm two", "5511900000002"),
	        PL_OK);
	wait_status("echo: warm two", "sent");

	// A's send takes SLOW_MS; B, from another sender to the other
	// channel, comes while a worker waits on it.
	slow.delay_ms = SLOW_MS;
	slow.match = "slow a";
	fake_provider_script(fp, &slow);
	base = fake_provider_count(fp);
	assert_int_equal(post(false, "wamid.slow-a", "slow a", "5511900000003"),
	                 PL_OK);
	assert_int_equal(fake_provider_wait(fp, base + 1, 30000), base + 1);
	assert_int_equal(post(true, "wamid.slow-b", "quick b", "5511900000004"),
	                 PL_OK);
	// B's reply was sent while A's send was still waiting on the
	// provider: answered by another worker, not after A's round.
	wait_status("echo: quick b", "sent");
	reply_status("echo: slow a", st);
	assert_string_not_equal(st, "sent");
	wait_status("echo: slow a", "sent");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_slow_send_holds_nothing_back),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
