// Benchmark: a 50,000-recipient campaign with no rate limit to the fake
// provider (real PostgreSQL, the service's own sender threads and delivery
// workers). Prints the time to enqueue every recipient (campaign
// completed) and to deliver every message, and messages per second.
// Target on 2 cores: >= 1,000 messages/s.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "engage.h"
#include "fake_peers.h"
#include "fake_provider.h"
#include "pgh.h"
#include "pl/id.h"
#include "svch.h"

#define T1   "0190b000-0000-7000-8000-000000000001"
#define U1   "0190b000-0000-7000-8000-0000000000a1"
#define C_WA "0190b000-0000-7000-8000-0000000000c1"
#define M(x) Parley__Messaging__V1__##x
#define MS   "/parley.messaging.v1.Messaging/"

static pgh pg;
static svch h;
static fake_provider *fp;
static fake_peers *peers;

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
	"PARLEY_MESSAGING_DELIVERY_WORKERS=2",
	"PARLEY_MESSAGING_CHANNEL_CACHE=60s",
	"PARLEY_MESSAGING_CAMPAIGN_SENDERS=1",
	NULL,
};

static double
self_cpu_s(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

// One connection for the bench's own queries (a connection per poll cost
// the cluster a backend start each time, counted in its CPU).
static PGconn *bench_conn;

static long
sqlv(const char *sql)
{
	PGconn *c = bench_conn;
	if (c == NULL || PQstatus(c) != CONNECTION_OK) {
		PQfinish(c);
		c = bench_conn = PQconnectdb(h.admin_url);
	}
	PGresult *r = PQexec(c, sql);
	long v = -1;
	if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0)
		v = atol(PQgetvalue(r, 0, 0));
	else if (PQresultStatus(r) == PGRES_COMMAND_OK)
		v = 0;
	else
		fprintf(stderr, "sql: %s\n", PQerrorMessage(c));
	PQclear(r);
	return v;
}

int
main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 50000;
	pl_principal p = svch_user(T1, U1, PARLEY__RPC__V1__ROLE__ROLE_ADMIN);
	pl_rpc_opts o = { 0 };
	M(CreateTemplateRequest)
	tq = PARLEY__MESSAGING__V1__CREATE_TEMPLATE_REQUEST__INIT;
	M(CreateTemplateResponse) *tr = NULL;
	M(SetTemplateStatusRequest)
	sq = PARLEY__MESSAGING__V1__SET_TEMPLATE_STATUS_REQUEST__INIT;
	M(CreateCampaignRequest)
	cq = PARLEY__MESSAGING__V1__CREATE_CAMPAIGN_REQUEST__INIT;
	M(CreateCampaignResponse) *cr = NULL;
	M(StartCampaignRequest)
	st = PARLEY__MESSAGING__V1__START_CAMPAIGN_REQUEST__INIT;
	M(ParameterBinding) b = PARLEY__MESSAGING__V1__PARAMETER_BINDING__INIT;
	M(ParameterBinding) * bs[1] = { &b };
	Parley__Rpc__V1__Json comp = PARLEY__RPC__V1__JSON__INIT;
	void *out = NULL;
	char sql[1024], sent_sql[512];
	int64_t t0, t_enq = 0;
	double pg0, self0;

	setvbuf(stdout, NULL, _IONBF, 0);
	if (pgh_start(&pg) != 0) {
		fprintf(stderr, "bench_campaigns: no PostgreSQL\n");
		return 1;
	}
	// The settings above unless the environment gives its own (to try
	// others: PARLEY_MESSAGING_DELIVERY_WORKERS=4 bench_campaigns).
	for (int i = 0; env[i]; i++) {
		char name[64];
		size_t n = strcspn(env[i], "=");
		snprintf(name, sizeof(name), "%.*s", (int)n, env[i]);
		if (getenv(name) == NULL)
			putenv((char *)env[i]);
	}
	putenv("PARLEY_LOG_LEVEL=warn");
	if (fake_provider_start(&fp) != 0 || start_peers() != 0 ||
	    svch_start(&h, &pg, &messaging_service_def, 2, NULL) != 0 ||
	    messaging_service_def.start(h.arg) != PL_OK) {
		fprintf(stderr, "bench_campaigns: could not start\n");
		return 1;
	}
	o.principal = &p;
	comp.text = "{\"body\":{\"text\":\"Hello {{1}}, spring sale!\"}}";
	tq.channel_id = C_WA;
	tq.name = "bench";
	tq.language = "en_US";
	tq.category = 1;
	tq.components = &comp;
	if (pl_rpc_call(
	            h.cli, MS "CreateTemplate", &tq.base,
	            &parley__messaging__v1__create_template_response__descriptor,
	            (void **)&tr, &h.arena, &o, NULL) != PL_OK)
		return 1;
	sq.id = tr->id;
	sq.status = 3;
	pl_rpc_call(
	        h.cli, MS "SetTemplateStatus", &sq.base,
	        &parley__messaging__v1__set_template_status_response__descriptor,
	        &out, &h.arena, &o, NULL);
	snprintf(sql, sizeof(sql),
	         "INSERT INTO messaging.contacts (tenant_id, id, channel_id, "
	         "external_id, external_id_kind, name) SELECT '%s', "
	         "gen_random_uuid(), '%s', (5511900000000 + g)::text, 'phone', "
	         "'n' || g FROM generate_series(1, %d) g",
	         T1, C_WA, n);
	sqlv(sql);
	cq.name = "bench";
	cq.channel_id = C_WA;
	cq.template_id = tr->id;
	b.index = 1;
	b.contact_field = "name";
	cq.parameters = bs;
	cq.n_parameters = 1;
	if (pl_rpc_call(
	            h.cli, MS "CreateCampaign", &cq.base,
	            &parley__messaging__v1__create_campaign_response__descriptor,
	            (void **)&cr, &h.arena, &o, NULL) != PL_OK)
		return 1;
	st.id = cr->id;
	t0 = pl_now_ns();
	if (pl_rpc_call(
	            h.cli, MS "StartCampaign", &st.base,
	            &parley__messaging__v1__start_campaign_response__descriptor,
	            &out, &h.arena, &o, NULL) != PL_OK)
		return 1;
	printf("recipients written at start: %.2f s\n",
	       (double)(pl_now_ns() - t0) / 1e9);
	snprintf(sql, sizeof(sql),
	         "SELECT (status = 'completed')::int FROM messaging.campaigns "
	         "WHERE id = '%s'",
	         cr->id);
	{
		char q2[512];
		snprintf(q2, sizeof(q2),
		         "SELECT count(*) FROM messaging.messages WHERE "
		         "metadata->>'campaign_id' = '%s' AND status = 'sent'",
		         cr->id);
		strcpy(sent_sql, q2);
	}
	pg0 = pgh_cpu_s(&pg);
	self0 = self_cpu_s();
	for (;;) {
		// The provider's count (polling the messages table would cost
		// the run a scan of it every tick).
		int got = fake_provider_count(fp);
		if (t_enq == 0 && sqlv(sql) == 1)
			t_enq = pl_now_ns();
		if (got >= n || pl_now_ns() - t0 > 600 * 1000000000LL)
			break;
		usleep(20000);
		if (getenv("BENCH_VERBOSE"))
			fprintf(stderr, "%.1f s: %d delivered\n",
			        (double)(pl_now_ns() - t0) / 1e9, got);
	}
	{
		double secs = (double)(pl_now_ns() - t0) / 1e9;
		double pg1 = pgh_cpu_s(&pg), self1 = self_cpu_s();
		int got = fake_provider_count(fp), sent = -1;
		// Every message recorded as sent (the last results land a
		// moment after the provider's answers).
		for (int i = 0; i < 200 && sent < n; i++) {
			sent = (int)sqlv(sent_sql);
			if (sent < n)
				usleep(50000);
		}
		printf("campaign: %d recipients, enqueued in %.2f s, %d "
		       "delivered "
		       "to the provider in %.2f s: %.0f messages/s (target >= "
		       "1000)\n",
		       n, t_enq ? (double)(t_enq - t0) / 1e9 : -1.0, got, secs,
		       got / secs);
		printf("per message: PostgreSQL CPU %.3f ms, service + fakes "
		       "CPU %.3f ms (this process); %d recorded as sent\n",
		       got > 0 ? (pg1 - pg0) * 1e3 / got : -1.0,
		       got > 0 ? (self1 - self0) * 1e3 / got : -1.0, sent);
	}
	svch_stop(&h);
	fake_peers_stop(peers);
	fake_provider_stop(fp);
	PQfinish(bench_conn);
	pgh_stop(&pg);
	return 0;
}
