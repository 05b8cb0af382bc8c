// Messaging benchmark (issue 6): signed WhatsApp Cloud webhooks posted to
// the service (HandleWebhook over RPC on TCP), the whole path to the
// provider: inbox, contact/conversation/message, quota, the agent's reply,
// delivery. The peers are fast fakes on inproc:// (tenants: the channel and
// its secrets; billing: always allowed; agents: an instant retrieval-like
// answer), the provider a small HTTP server on loopback that stamps the
// arrival of each reply. PostgreSQL is a pgh cluster (fsync=off, as every
// pgh cluster; synchronous_commit on), and pgbench's ceiling for 1-row
// inserts with 8 clients is measured against the same cluster.
//
// Prints, each run repeated --repeat times (median reported):
//   sweep: inbound msgs/s sustained: offered rates from --sweep (ascending,
//         one run each, stopping at the first it does not keep up with);
//         a rate is kept up with when 99 % of the webhooks posted until
//         one second before the run's end were answered by its end and the
//         replies reaching the provider during the window (after its first
//         second) came at 95 % of the offered rate or more (the backlog
//         does not grow). Sustained is the replies per second that
//         reached the provider during the posting window at the highest
//         rate kept up with (after the first second).
//   max:  overload: replies per second reaching the provider while webhooks
//         are posted as fast as --senders threads can (thousands a second:
//         acknowledging them takes the CPU the replies need)
//   rate: at --rate msgs/s offered, p50/p99 from posting the webhook to the
//         provider receiving the reply, and the acknowledgement p50/p99
//   cost: per message answered, measured around each rate run (load does
//         not change them): PostgreSQL transactions (pg_stat_database
//         xact_commit + xact_rollback of the service's database), the CPU
//         time of every PostgreSQL process (/proc, utime + stime), and the
//         CPU time of this process (the service, its fake peers and the
//         provider: getrusage); then one run at --rate with
//         log_statement = all counts the statements (round trips) per
//         message in the server's log.
//   --warm N (default 14000; 0: none): before any of it, N more webhooks
//         at 1,000/s (N / 1,000 s) and then VACUUM ANALYZE, so that the
//         message, inbox, delivery and outbox tables start past the
//         statistics keeper's 10,000 rows (common/src/db_analyze.c) with
//         autovacuum's pass done, as in a deployment past its first days
//         between two autovacuum passes. With --warm 0 every run measures
//         a database in its first thousands of rows, whose tables the
//         keeper ANALYZEs each time they grow by half; with the warm-up
//         and no VACUUM, autovacuum's first pass (a minute after the
//         cluster starts) lands in the measured window. Each ANALYZE sends
//         every connection to plan its statements again. The overload
//         (max) runs come last: their backlog and rows would be in the
//         windows of the others.
//
// usage: bench_messaging [--seconds S] [--rate R] [--senders N]
//                        [--contacts C] [--repeat R] [--skip-max]
//                        [--warm N]
//                        [--sweep R1,R2,...] (default 600,800,1000,1200,1400;
//                        "" skips)
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>
#include <sodium.h>

#include "messaging.h"
#include "pgh.h"
#include "pl/httpd.h"
#include "pl/log.h"
#include "pl/rpc.h"
#include "fake_peers.h"
#include "fake_provider.h"
#include "svch.h"
#include "port.h"

#define T1     "0190a000-0000-7000-8000-000000000001"
#define C_WA   "0190a000-0000-7000-8000-0000000000c1"
#define AGENT  "0190a000-0000-7000-8000-0000000000e1"
#define APP    "bench-app-secret"
#define PNID   "1122334455667"
#define MAXMSG 400000

static double seconds = 5.0;
static int rate = 500;
static int senders = 8;
static int contacts = 2000;
static int repeat = 3;
static bool skip_max;
static int warm = 14000; // --warm: webhooks posted at 1,000/s first
static const char *sweep = "600,800,1000,1200,1400";

static pgh pg;
static svch hm;
static fake_peers *peers;
static pl_httpd *provider;
static char provider_url[64], listen_url[64];

static int64_t *sent_ns, *recv_ns, *ack_ns;
static atomic_int next_seq;
static atomic_int received;
static int run_base; // first seq of the current run

// ---------------------------------------------------------------------------
// Fake peers

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
		ch->api_base_url = provider_url;
		ch->phone_number_id = PNID;
		ch->agent_id = AGENT;
		ch->send_rate_per_second = 100000;
		if (m[0] == 'R') {
			Parley__Tenants__V1__ResolveChannelResponse *o = outp;
			o->tenant_id = T1;
			o->channel = ch;
		} else {
			Parley__Tenants__V1__GetChannelSecretsResponse *o =
			        outp;
			o->channel = ch;
			o->access_token = "bench-token";
			o->app_secret = APP;
			o->verify_token = "v";
		}
		return PL_OK;
	}
	if (strcmp(m, "ReserveUsage") == 0)
		return PL_OK;
	if (strcmp(m, "Reply") == 0) {
		const Parley__Agents__V1__ReplyRequest *in = inp;
		Parley__Agents__V1__ReplyResponse *o = outp;
		o->reply_text =
		        pl_arena_printf(call->arena, "echo: %s", in->text);
		o->intent = "bench";
		o->confidence = 0.9;
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

	return fake_peers_start(&peers, "inproc://bench-peers", 4, peer_handler,
	                        d, 3);
}

// ---------------------------------------------------------------------------
// The provider: stamps each reply's arrival by the sequence number in its
// text ("echo: m<seq> ...").

static void
provider_handler(const pl_http_req *req, pl_http_resp *resp, void *arg)
{
	const char *p = req->body ? strstr(req->body, "echo: m") : NULL;
	char out[96];
	int seq;

	(void)arg;
	if (p != NULL) {
		seq = atoi(p + 7);
		if (seq >= 0 && seq < MAXMSG && recv_ns[seq] == 0) {
			recv_ns[seq] = pl_now_ns();
			atomic_fetch_add(&received, 1);
		}
	} else {
		seq = -1;
	}
	snprintf(out, sizeof(out), "{\"messages\":[{\"id\":\"wamid.r-%d\"}]}",
	         seq);
	pl_http_resp_set(resp, 200, "application/json", out, strlen(out));
}

// ---------------------------------------------------------------------------
// Senders

static char *
body_for(int seq, size_t *len)
{
	char *b = malloc(1024);
	int n = snprintf(
	        b, 1024,
	        "{\"object\":\"whatsapp_business_account\",\"entry\":[{\"id\":"
	        "\"1\",\"changes\":[{\"value\":{\"messaging_product\":"
	        "\"whatsapp\",\"metadata\":{\"display_phone_number\":"
	        "\"972123456789\",\"phone_number_id\":\"" PNID
	        "\"},\"contacts\":[{\"profile\":{\"name\":\"Bench %d\"},"
	        "\"wa_id\":\"3460%07d\"}],\"messages\":[{\"from\":"
	        "\"3460%07d\",\"id\":\"wamid.bench-%d\",\"timestamp\":"
	        "\"1697043223\",\"text\":{\"body\":\"m%d what are your "
	        "opening hours\"},\"type\":\"text\"}]},\"field\":"
	        "\"messages\"}]}]}",
	        seq % contacts, seq % contacts, seq % contacts, seq, seq);
	*len = (size_t)n;
	return b;
}

typedef struct sender {
	pthread_t th;
	int idx;
	int64_t start_ns, end_ns;
	double per_sender_rate; // 0: as fast as possible
	int errors;
} sender;

static void *
sender_main(void *arg)
{
	sender *s = arg;
	pl_rpc_client_config cc = { 0 };
	pl_rpc_client *cli = NULL;
	pl_arena a;
	int64_t next = s->start_ns;

	cc.urls = listen_url;
	cc.secret = SVCH_SECRET;
	cc.service = "bench";
	cc.timeout_ms = 10000;
	if (pl_rpc_client_open(&cli, &cc) != PL_OK)
		return NULL;
	pl_arena_init(&a, 0, 0);
	for (;;) {
		Parley__Messaging__V1__HandleWebhookRequest rq =
		        PARLEY__MESSAGING__V1__HANDLE_WEBHOOK_REQUEST__INIT;
		Parley__Messaging__V1__HttpHeader hd =
		        PARLEY__MESSAGING__V1__HTTP_HEADER__INIT;
		Parley__Messaging__V1__HttpHeader *hs[1] = { &hd };
		void *out;
		pl_rpc_opts o = { 0 };
		char sig[80];
		size_t len;
		int64_t t = pl_now_ns(), t0;
		int seq, rv;
		char *body;

		if (t >= s->end_ns)
			break;
		if (s->per_sender_rate > 0) {
			if (t < next) {
				struct timespec ts = { 0, (long)(next - t) };
				nanosleep(&ts, NULL);
			}
			next += (int64_t)(1e9 / s->per_sender_rate);
		}
		seq = atomic_fetch_add(&next_seq, 1);
		if (seq >= MAXMSG)
			break;
		body = body_for(seq, &len);
		fake_provider_sign(APP, body, len, sig);
		rq.channel_id = C_WA;
		rq.channel_type = 1;
		rq.body.data = (uint8_t *)body;
		rq.body.len = len;
		hd.name = "X-Hub-Signature-256";
		hd.value = sig;
		rq.headers = hs;
		rq.n_headers = 1;
		pl_arena_reset(&a);
		t0 = pl_now_ns();
		sent_ns[seq] = t0;
		rv = pl_rpc_call(
		        cli, "/parley.messaging.v1.Messaging/HandleWebhook",
		        &rq.base,
		        &parley__messaging__v1__handle_webhook_response__descriptor,
		        &out, &a, &o, NULL);
		ack_ns[seq] = pl_now_ns() - t0;
		if (rv != PL_OK) {
			s->errors++;
			ack_ns[seq] = -1;
		}
		free(body);
	}
	pl_arena_fini(&a);
	pl_rpc_client_close(cli);
	return NULL;
}

static int
cmp64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return x < y ? -1 : x > y;
}

static double
pct(int64_t *v, int n, double p)
{
	if (n == 0)
		return 0;
	int i = (int)(p * (n - 1) + 0.5);
	return (double)v[i] / 1e6;
}

typedef struct result {
	double offered, sustained;
	double p50, p99, ack50, ack99;
	int sent, answered, errors;
	double kept; // of the webhooks posted until end - 1 s, answered by end
} result;

// One run: offered rate r msgs/s (0: as fast as possible) for `seconds`,
// then waits up to 30 s for the replies.
static result
run(double r)
{
	result res = { 0 };
	sender *ss = calloc((size_t)senders, sizeof(*ss));
	int64_t start = pl_now_ns() + 50000000, end;
	int first = atomic_load(&next_seq), last, got_in_window = 0;
	int64_t *lat, *ack;
	int nl = 0, na = 0;

	run_base = first;
	end = start + (int64_t)(seconds * 1e9);
	for (int i = 0; i < senders; i++) {
		ss[i].idx = i;
		ss[i].start_ns = start + (r > 0 ? (int64_t)(i * 1e9 / r) : 0);
		ss[i].end_ns = end;
		ss[i].per_sender_rate = r > 0 ? r / senders : 0;
		pthread_create(&ss[i].th, NULL, sender_main, &ss[i]);
	}
	for (int i = 0; i < senders; i++) {
		pthread_join(ss[i].th, NULL);
		res.errors += ss[i].errors;
	}
	last = atomic_load(&next_seq);
	if (last > MAXMSG)
		last = MAXMSG;
	// Drain: every reply, or 30 s.
	for (int i = 0; i < 3000; i++) {
		int n = 0;
		for (int s = first; s < last; s++)
			n += recv_ns[s] != 0;
		if (n >= last - first - res.errors)
			break;
		usleep(10000);
	}
	lat = calloc((size_t)(last - first + 1), sizeof(int64_t));
	ack = calloc((size_t)(last - first + 1), sizeof(int64_t));
	for (int s = first; s < last; s++) {
		if (recv_ns[s] != 0) {
			lat[nl++] = recv_ns[s] - sent_ns[s];
			if (recv_ns[s] <= end)
				got_in_window++;
		}
		if (ack_ns[s] >= 0)
			ack[na++] = ack_ns[s];
	}
	qsort(lat, (size_t)nl, sizeof(int64_t), cmp64);
	qsort(ack, (size_t)na, sizeof(int64_t), cmp64);
	res.sent = last - first;
	res.answered = nl;
	res.offered = res.sent / seconds;
	// Replies that reached the provider during the posting window, per
	// second, after the first second (warm-up).
	{
		int in = 0;
		int64_t w0 = start + 1000000000;
		for (int s = first; s < last; s++)
			if (recv_ns[s] >= w0 && recv_ns[s] <= end)
				in++;
		res.sustained = in / (seconds - 1.0);
	}
	(void)got_in_window;
	{
		int posted = 0, in = 0;
		for (int s = first; s < last; s++) {
			if (sent_ns[s] == 0 || sent_ns[s] >= end - 1000000000)
				continue;
			posted++;
			in += recv_ns[s] != 0 && recv_ns[s] <= end;
		}
		res.kept = posted > 0 ? (double)in / posted : 0;
	}
	res.p50 = pct(lat, nl, 0.50);
	res.p99 = pct(lat, nl, 0.99);
	res.ack50 = pct(ack, na, 0.50);
	res.ack99 = pct(ack, na, 0.99);
	free(lat);
	free(ack);
	free(ss);
	return res;
}

static int
cmpd(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double
median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof(double), cmpd);
	return v[n / 2];
}

// ---------------------------------------------------------------------------
// Per-message costs

// Transactions of the service's database so far (committed + rolled back).
// Backends report their counters when idle (at most 1 s late): callers
// wait for the system to be idle first.
static long long
db_xacts(void)
{
	PGconn *c = PQconnectdb(pg.url);
	long long n = -1;

	if (PQstatus(c) == CONNECTION_OK) {
		PGresult *r = PQexec(c, "SELECT xact_commit + xact_rollback "
		                        "FROM pg_stat_database WHERE datname = "
		                        "'messaging_0'");
		if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
			n = atoll(PQgetvalue(r, 0, 0));
		PQclear(r);
	}
	PQfinish(c);
	return n;
}

static double
pg_cpu_s(void)
{
	return pgh_cpu_s(&pg);
}

static double
self_cpu_s(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

// The batch functions of migrations 005, 008 and 009 (track_functions =
// pl): calls and total time of each (inbox_add and the claims: replicas of
// earlier builds and what the fast path leaves).
#define NFN 9
static const char *const fn_names[NFN] = { "inbox_put",       "inbox_add",
	                                   "inbox_lock",      "ingest_batch",
	                                   "reply_claim_ids", "reply_claim",
	                                   "reply_finish",    "delivery_claim",
	                                   "delivery_done" };

typedef struct cost_snap {
	long long xacts;
	double pg_cpu, self_cpu;
	int answered;
	double fn_ms[NFN];
	long long fn_calls[NFN];
} cost_snap;

static void
fn_stats(cost_snap *c)
{
	char url[PGH_URL_MAX];
	PGconn *k;

	memset(c->fn_ms, 0, sizeof(c->fn_ms));
	memset(c->fn_calls, 0, sizeof(c->fn_calls));
	if (pgh_url(&pg, "postgres", "messaging_0", url, sizeof(url)) != 0)
		return;
	k = PQconnectdb(url);
	if (PQstatus(k) == CONNECTION_OK) {
		PGresult *r = PQexec(k, "SELECT funcname, calls, total_time "
		                        "FROM pg_stat_user_functions WHERE "
		                        "schemaname = 'messaging'");
		for (int i = 0;
		     PQresultStatus(r) == PGRES_TUPLES_OK && i < PQntuples(r);
		     i++)
			for (int f = 0; f < NFN; f++)
				if (strcmp(PQgetvalue(r, i, 0), fn_names[f]) ==
				    0) {
					c->fn_calls[f] =
					        atoll(PQgetvalue(r, i, 1));
					c->fn_ms[f] = atof(PQgetvalue(r, i, 2));
				}
		PQclear(r);
	}
	PQfinish(k);
}

// Waits until no reply has arrived for 1.5 s (the work posted so far is
// done, up to 60 s), then reads the counters.
static cost_snap
cost_now(void)
{
	cost_snap c;
	int last = -1;

	for (int quiet = 0, i = 0; quiet < 15 && i < 600; i++) {
		int n = atomic_load(&received);
		quiet = n == last ? quiet + 1 : 0;
		last = n;
		usleep(100000);
	}
	usleep(1200000); // idle backends report their counters
	c.answered = atomic_load(&received);
	c.xacts = db_xacts();
	c.pg_cpu = pg_cpu_s();
	c.self_cpu = self_cpu_s();
	fn_stats(&c);
	return c;
}

// Lines of the server's log so far that are statements (log_statement =
// all: "statement: ..." for simple queries, "execute ..." for extended
// ones).
static long
log_statements(void)
{
	char path[160], line[512];
	long n = 0;
	FILE *f;

	snprintf(path, sizeof(path), "%s/server.log", pg.dir);
	if ((f = fopen(path, "r")) == NULL)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (strstr(line, "LOG:  statement: ") ||
		    strstr(line, "LOG:  execute "))
			n++;
	fclose(f);
	return n;
}

// ---------------------------------------------------------------------------
// pgbench: 1-row inserts, 8 clients, against the same cluster.

static double
pgbench_tps(void)
{
	char cmd[1024], line[512];
	double tps = -1;
	FILE *f;

	if (pgh_exec(&pg, "DROP DATABASE IF EXISTS pgb") != 0 ||
	    pgh_exec(&pg, "CREATE DATABASE pgb") != 0)
		return -1;
	{
		char url[PGH_URL_MAX];
		snprintf(url, sizeof(url),
		         "postgresql://postgres@127.0.0.1:%d/pgb", pg.port);
		if (pgh_exec_url(url,
		                 "CREATE TABLE ins (id bigserial PRIMARY KEY, "
		                 "v int, at timestamptz DEFAULT now())") != 0)
			return -1;
	}
	// As root, pgbench runs as the postgres user (as the cluster does).
	snprintf(cmd, sizeof(cmd),
	         "echo 'INSERT INTO ins (v) VALUES (1);' > %s/ins.sql && "
	         "chmod 644 %s/ins.sql && %s"
	         "/usr/lib/postgresql/15/bin/pgbench -n -c 8 -j 2 -T %d -f "
	         "%s/ins.sql -h 127.0.0.1 -p %d -U postgres pgb 2>&1",
	         pg.dir, pg.dir,
	         getuid() == 0 ? "/usr/sbin/runuser -u postgres -- " : "",
	         (int)seconds, pg.dir, pg.port);
	f = popen(cmd, "r");
	if (f == NULL)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (strncmp(line, "tps = ", 6) == 0)
			tps = atof(line + 6);
	pclose(f);
	return tps;
}

// ---------------------------------------------------------------------------

// --warm: the pass autovacuum would make (VACUUM, then ANALYZE) over the
// service's database, done now.
static void
vacuum_analyze(void)
{
	char url[PGH_URL_MAX];

	if (pgh_url(&pg, "postgres", "messaging_0", url, sizeof(url)) != 0 ||
	    pgh_exec_url(url, "VACUUM ANALYZE") != 0)
		fprintf(stderr, "VACUUM ANALYZE failed\n");
}

int
main(int argc, char **argv)
{
	static const char *env[] = {
		"PARLEY_TENANTS_URL=inproc://bench-peers",
		"PARLEY_BILLING_URL=inproc://bench-peers",
		"PARLEY_AGENTS_URL=inproc://bench-peers",
		"PARLEY_ANALYTICS_URL=",
		"PARLEY_MESSAGING_SEND_RATE=100000",
		NULL,
	};
	pl_httpd_config hc = { 0 };
	double tps[16], sus[16], p50[16], p99[16], a50[16], a99[16], ceiling;
	double kept_rate = -1, kept_sus = -1;
	double cx[16], cpg[16], cself[16], stmts = -1;
	double fms[NFN][16], fcalls[NFN][16];
	int errors = 0;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc)
			seconds = atof(argv[++i]);
		else if (strcmp(argv[i], "--rate") == 0 && i + 1 < argc)
			rate = atoi(argv[++i]);
		else if (strcmp(argv[i], "--senders") == 0 && i + 1 < argc)
			senders = atoi(argv[++i]);
		else if (strcmp(argv[i], "--contacts") == 0 && i + 1 < argc)
			contacts = atoi(argv[++i]);
		else if (strcmp(argv[i], "--repeat") == 0 && i + 1 < argc)
			repeat = atoi(argv[++i]);
		else if (strcmp(argv[i], "--skip-max") == 0)
			skip_max = true;
		else if (strcmp(argv[i], "--warm") == 0 && i + 1 < argc)
			warm = atoi(argv[++i]);
		else if (strcmp(argv[i], "--sweep") == 0 && i + 1 < argc)
			sweep = argv[++i];
		else {
			fprintf(stderr,
			        "usage: %s [--seconds S] [--rate R] "
			        "[--senders N] [--contacts C] [--repeat R] "
			        "[--skip-max] [--warm N] [--sweep R1,R2,...]\n",
			        argv[0]);
			return 2;
		}
	}
	if (seconds < 2)
		seconds = 2;
	if (repeat < 1 || repeat > 15)
		repeat = 3;
	if (warm < 0 || warm > MAXMSG / 4)
		warm = 0;
	if (sodium_init() < 0)
		return 1;
	pl_log_init("bench", PL_LOG_WARN);
	sent_ns = calloc(MAXMSG, sizeof(int64_t));
	recv_ns = calloc(MAXMSG, sizeof(int64_t));
	ack_ns = calloc(MAXMSG, sizeof(int64_t));
	if (pgh_start(&pg) != 0) {
		fprintf(stderr, "no PostgreSQL\n");
		return 1;
	}
	hc.bind = "127.0.0.1";
	hc.threads = 2;
	if (pl_httpd_start(&provider, &hc, provider_handler, NULL) != 0)
		return 1;
	snprintf(provider_url, sizeof(provider_url), "http://127.0.0.1:%u",
	         pl_httpd_port(provider));
	if (start_peers() != 0)
		return 1;
	snprintf(listen_url, sizeof(listen_url), "tcp://127.0.0.1:%d",
	         test_port());
	if (svch_start_at(&hm, &pg, &messaging_service_def, 4, env,
	                  listen_url) != 0 ||
	    svch_start_jobs(&hm) != PL_OK) {
		fprintf(stderr, "messaging did not start\n");
		return 1;
	}
	fprintf(stderr, "cluster %s (database messaging_0)\n", pg.url);
	// Time spent in each batch function (pg_stat_user_functions).
	if (pgh_exec(&pg, "ALTER SYSTEM SET track_functions = 'pl'") != 0 ||
	    pgh_exec(&pg, "SELECT pg_reload_conf()") != 0)
		fprintf(stderr, "track_functions not set\n");
	printf("messaging bench: %.0f s runs, %d senders, %d contacts, "
	       "repeat %d, warm %d; PostgreSQL: pgh cluster (fsync=off, "
	       "synchronous_commit=on)\n",
	       seconds, senders, contacts, repeat, warm);
	// Warm-up: caches, connections.
	{
		double s = seconds;
		seconds = 2;
		run(100);
		// --warm: a database past its first days (see the usage).
		if (warm > 0) {
			seconds = warm / 1000.0 < 2 ? 2 : warm / 1000.0;
			run(1000);
			vacuum_analyze();
		}
		seconds = s;
	}
	// Sustained: the highest offered rate the service keeps up with.
	for (const char *q = sweep; q != NULL && *q != '\0';) {
		double sr = atof(q);
		result r;
		bool kept;
		const char *comma = strchr(q, ',');
		q = comma ? comma + 1 : NULL;
		if (sr <= 0)
			continue;
		r = run(sr);
		errors += r.errors;
		kept = r.kept >= 0.99 && r.sustained >= 0.95 * r.offered;
		printf("  sweep %5.0f/s: offered %.0f/s, %.0f replies/s in the "
		       "window, %.1f %% answered within 1 s of the end, p50 "
		       "%.1f ms p99 %.1f ms%s\n",
		       sr, r.offered, r.sustained, 100 * r.kept, r.p50, r.p99,
		       kept ? "" : " (not kept up with)");
		fflush(stdout);
		if (!kept)
			break;
		kept_rate = sr;
		kept_sus = r.sustained;
	}
	for (int i = 0; i < repeat; i++) {
		cost_snap c0 = cost_now(), c1;
		result r = run(rate);
		c1 = cost_now();
		// Per reply that reached the provider in the window
		// (cost_now waits until replies stop arriving).
		int na = c1.answered - c0.answered;
		cx[i] = na > 0 ? (double)(c1.xacts - c0.xacts) / na : -1;
		cpg[i] = na > 0 ? (c1.pg_cpu - c0.pg_cpu) * 1e3 / na : -1;
		cself[i] = na > 0 ? (c1.self_cpu - c0.self_cpu) * 1e3 / na : -1;
		for (int f = 0; f < NFN; f++) {
			fms[f][i] =
			        na > 0 ? (c1.fn_ms[f] - c0.fn_ms[f]) / na : -1;
			fcalls[f][i] = na > 0 ? (double)(c1.fn_calls[f] -
			                                 c0.fn_calls[f]) /
			                                na
			                      : -1;
		}
		printf("  cost run %d: per message answered: %.2f "
		       "transactions, "
		       "PostgreSQL CPU %.3f ms, service+fakes CPU %.3f ms\n",
		       i + 1, cx[i], cpg[i], cself[i]);
		p50[i] = r.p50;
		p99[i] = r.p99;
		a50[i] = r.ack50;
		a99[i] = r.ack99;
		errors += r.errors;
		printf("  rate run %d: offered %.0f/s, answered %d/%d, "
		       "webhook->provider p50 %.1f ms p99 %.1f ms, ack p50 "
		       "%.2f ms p99 %.2f ms\n",
		       i + 1, r.offered, r.answered, r.sent, r.p50, r.p99,
		       r.ack50, r.ack99);
		fflush(stdout);
	}
	// Statements per message: one run with every statement logged.
	if (pgh_exec(&pg, "ALTER SYSTEM SET log_statement = 'all'") == 0 &&
	    pgh_exec(&pg, "SELECT pg_reload_conf()") == 0) {
		long l0, l1;
		result r;
		usleep(500000);
		l0 = log_statements();
		r = run(rate);
		usleep(1200000);
		l1 = log_statements();
		pgh_exec(&pg, "ALTER SYSTEM RESET log_statement");
		pgh_exec(&pg, "SELECT pg_reload_conf()");
		if (l0 >= 0 && l1 >= 0 && r.answered > 0)
			stmts = (double)(l1 - l0) / r.answered;
		printf("  statements run: %ld statements for %d messages "
		       "answered\n",
		       l1 - l0, r.answered);
	}
	// Overload last: its backlog and the rows it leaves would be in the
	// windows above.
	for (int i = 0; i < repeat && !skip_max; i++) {
		result r = run(0);
		sus[i] = r.sustained;
		errors += r.errors;
		printf("  max  run %d: offered %.0f/s, overload %.0f msgs/s, "
		       "answered %d/%d, p50 %.1f ms p99 %.1f ms, ack p99 %.2f "
		       "ms\n",
		       i + 1, r.offered, r.sustained, r.answered, r.sent, r.p50,
		       r.p99, r.ack99);
		fflush(stdout);
	}
	for (int i = 0; i < repeat; i++) {
		tps[i] = pgbench_tps();
		printf("  pgbench run %d: %.0f inserts/s (1-row, 8 clients)\n",
		       i + 1, tps[i]);
		fflush(stdout);
	}
	ceiling = median(tps, repeat);
	printf("\nRESULT (median of %d)\n", repeat);
	if (kept_rate > 0)
		printf("  inbound sustained:          %8.0f msgs/s   (target "
		       ">= 1000; the highest swept rate kept up with: "
		       "%.0f/s)\n",
		       kept_sus, kept_rate);
	else if (sweep[0] != '\0')
		printf("  inbound sustained:          none of the swept rates "
		       "was kept up with (target >= 1000)\n");
	if (!skip_max)
		printf("  overload (posting as fast as possible): %.0f msgs/s "
		       "answered meanwhile\n",
		       median(sus, repeat));
	printf("  at %4d msgs/s: p50          %8.1f ms\n", rate,
	       median(p50, repeat));
	printf("  at %4d msgs/s: p99          %8.1f ms       (target <= "
	       "20)\n",
	       rate, median(p99, repeat));
	printf("  HandleWebhook ack p50/p99:  %8.2f / %.2f ms (target p99 "
	       "<= 10)\n",
	       median(a50, repeat), median(a99, repeat));
	printf("  pgbench 1-row inserts:      %8.0f tx/s (8 clients, same "
	       "cluster)\n",
	       ceiling);
	printf("  per message answered (at %d msgs/s, whole path incl. idle "
	       "polling):\n",
	       rate);
	printf("    SQL statements (round trips): %6.2f\n", stmts);
	printf("    transactions (commits):       %6.2f\n", median(cx, repeat));
	printf("    PostgreSQL CPU:               %6.3f ms\n",
	       median(cpg, repeat));
	printf("    service + fakes CPU:          %6.3f ms (this process)\n",
	       median(cself, repeat));
	printf("  per message, by batch function (calls, ms inside "
	       "PostgreSQL):\n");
	for (int f = 0; f < NFN; f++)
		printf("    %-15s %6.3f calls %7.3f ms\n", fn_names[f],
		       median(fcalls[f], repeat), median(fms[f], repeat));
	printf("  webhook errors: %d\n", errors);
	svch_stop(&hm);
	fake_peers_stop(peers);
	pl_httpd_stop(provider);
	pgh_stop(&pg);
	free(sent_ns);
	free(recv_ns);
	free(ack_ns);
	return 0;
}
