// Issue 9's end-to-end benchmark: the whole stack on this machine
// (tests/lib/stack), a built-in retrieval agent, signed WhatsApp webhooks
// posted through the gateway by a load generator at fixed rates, and a
// provider receiver on loopback that timestamps each reply. Prints, per
// rate: messages posted and answered, msgs/s sustained, p50/p99 from the
// POST to the provider receiving the reply; then each process's peak RSS;
// then GET /v1/conversations?limit=20 with an API key, req/s. Before and
// after the rates it prints the machine's speed (machine_speed), which
// moves from one run to the next on a VM.
//
// The webhooks and the GETs go through a minimal keep-alive client
// (tests/lib/hload), one connection per load thread, so that the load
// generator's own CPU, taken from the same cores as the stack's, stays
// small (stack_http's libcurl cost ~64 us per request); the setup uses
// stack_http.
//
//   bench_e2e [seconds per rate = 5] [rates = 200,500,1000,0 (0 = max)]
//             [load threads = 8] [warm = 0]
//
// warm > 0: that many more messages at 600/s before the rates, then
// VACUUM ANALYZE of the database: the tables past the statistics
// keeper's 10,000 rows (common/src/db_analyze.c) and autovacuum's first
// pass done, as in a deployment past its first days between two
// autovacuum passes (tests/bench/messaging says why it matters).
//
// Every message comes from its own sender, so a reply names its message
// ("to"): each is a new customer (contact, conversation, agent session).
// BENCH_E2E_SENDERS=N sends message i from sender i % N instead, returning
// customers with a history; a reply then goes to the sender's latest
// message, so keep N / rate above the latencies (fixed rates only: at
// "max" the backlog outlasts it). Traffic stays on 127.0.0.1; every loop
// is bounded in time.
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <libpq-fe.h>
#include <sodium.h>

#include "fake_provider.h"
#include "hload.h"
#include "pl/httpd.h"
#include "pl/rpc.h"
#include "stack.h"

#define MAX_MSGS (1 << 20)
#define PNID     "190000000001"
#define SECRET   "bench-app-secret"
#define ANSWER   "We are open every day from 9am to 10pm."

static stack S;
static int64_t *t_post, *t_recv; // ns, by message index
static atomic_int next_msg;
// BENCH_E2E_SENDERS=N: message i comes from sender i % N, whose message in
// flight is sending[i % N] (0: every message from its own sender).
static int senders;
static atomic_int *sending;
static atomic_int received;
static char channel_id[64];

// The provider: records when the reply to message i ("to": 34<9 digits>)
// arrives.
static void
provider(const pl_http_req *req, pl_http_resp *resp, void *arg)
{
	static atomic_int ids;
	char buf[96];
	long i = -1;
	json_t *j = req->body ? json_loads(req->body, 0, NULL) : NULL;
	const char *to = json_string_value(json_object_get(j, "to"));
	(void)arg;
	if (to != NULL && strlen(to) == 11) {
		long n = atol(to + 2);
		if (senders > 0)
			n = n >= 0 && n < senders ? atomic_load(&sending[n])
			                          : -1;
		if (n >= 0 && n < MAX_MSGS && t_recv[n] == 0) {
			t_recv[n] = pl_now_ns();
			atomic_fetch_add(&received, 1);
			i = n;
		}
	}
	json_decref(j);
	// The first reply to message i gets the provider id wamid.b-<i>
	// (BENCH_E2E_STAGES finds it by that); anything else a counter's, so
	// that no two sends share an id.
	if (i >= 0)
		snprintf(buf, sizeof(buf),
		         "{\"messages\":[{\"id\":\"wamid.b-%ld\"}]}", i);
	else
		snprintf(buf, sizeof(buf),
		         "{\"messages\":[{\"id\":\"wamid.c-%d\"}]}",
		         atomic_fetch_add(&ids, 1));
	pl_http_resp_set(resp, 200, "application/json", buf, strlen(buf));
}

// ---------------------------------------------------------------------------
// Load

// The threads' schedules interleave: at R msgs/s over n threads, thread
// i posts at start + i/R + k*n/R, so the stack sees one message every 1/R
// (each thread starting at the same instant sent bursts of n at once: at
// 5 msgs/s, 8 messages together every 1.6 s).
typedef struct load {
	double rate; // msgs/s for this thread; 0: as fast as it can
	int64_t start_ns, end_ns;
	long errors;
} load;

static void
post_one(load *l, hload *c, int i)
{
	char body[1024], path[128], sig[96], hex[72], from[16];
	// The Content-Type stack_http_n adds to a body.
	const char *hdrs[3] = { "Content-Type: application/json", sig, NULL };
	long st = 0;
	int n;
	snprintf(from, sizeof(from), "34%09d", senders > 0 ? i % senders : i);
	n = snprintf(
	        body, sizeof(body),
	        "{\"object\":\"whatsapp_business_account\",\"entry\":[{\"id\":"
	        "\"1\",\"changes\":[{\"value\":{\"messaging_product\":"
	        "\"whatsapp\",\"metadata\":{\"display_phone_number\":"
	        "\"15550001111\",\"phone_number_id\":\"" PNID "\"},"
	        "\"contacts\":[{\"profile\":{\"name\":\"Bench\"},\"wa_id\":"
	        "\"%s\"}],\"messages\":[{\"from\":\"%s\",\"id\":"
	        "\"wamid.bench-%d\",\"timestamp\":\"%ld\",\"text\":{\"body\":"
	        "\"what are your opening hours?\"},\"type\":\"text\"}]},"
	        "\"field\":\"messages\"}]}]}",
	        from, from, i, (long)time(NULL));
	fake_provider_sign(SECRET, body, (size_t)n, hex);
	snprintf(sig, sizeof(sig), "X-Hub-Signature-256: %s", hex);
	snprintf(path, sizeof(path), "/v1/webhooks/whatsapp/%s", channel_id);
	t_post[i] = pl_now_ns();
	if (senders > 0)
		atomic_store(&sending[i % senders], i);
	if (c == NULL ||
	    hload_do(c, "POST", path, hdrs, body, (size_t)n, &st, NULL) != 0 ||
	    st != 200)
		l->errors++;
}

static void *
load_main(void *arg)
{
	load *l = arg;
	// NULL when it cannot connect: every message then counts as an
	// error.
	hload *c = hload_open(S.http_port);
	int64_t k = 0;
	while (pl_now_ns() < l->end_ns) {
		int i;
		if (l->rate > 0) {
			int64_t due =
			        l->start_ns + (int64_t)(k * 1e9 / l->rate);
			int64_t now = pl_now_ns();
			if (due > now)
				usleep((useconds_t)((due - now) / 1000));
		}
		if ((i = atomic_fetch_add(&next_msg, 1)) >= MAX_MSGS)
			break;
		post_one(l, c, i);
		k++;
	}
	hload_close(c);
	return NULL;
}

// CPU per message or request of each service, PostgreSQL and this process
// (the load generator and the provider) between a and b (n of them).
static void
cpu_print(const stack_cpu *a, const stack_cpu *b, long n, const char *per)
{
	double total = 0;

	if (n <= 0)
		return;
	printf("    CPU us per %s:", per);
	for (int i = 0; i < S.n; i++) {
		double d = (b->proc[i] - a->proc[i]) * 1e6 / (double)n;
		printf(" %s %.0f,", S.procs[i].name, d);
		total += d;
	}
	printf(" postgres %.0f, bench %.0f; total %.0f\n",
	       (b->pg - a->pg) * 1e6 / (double)n,
	       (b->self - a->self) * 1e6 / (double)n,
	       total + (b->pg - a->pg + b->self - a->self) * 1e6 / (double)n);
}

static int
cmp64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return x < y ? -1 : x > y;
}

// BENCH_E2E_STAGES: where the time of a phase's messages went, from the
// database's own clocks. A message's inbound row is written by the inbox
// round that ingests it, its reply by the reply_finish statement, each
// with created_at = the transaction's start, so each latency splits in
// three: POST to the round's start (gateway, HandleWebhook, the wait for
// an inbox worker), the round and the agent (ingest, claim, commit,
// billing, agents) up to reply_finish, and reply_finish with the send.
// Printed as means for the messages over 20 ms and for the others: one
// stage that grows means a stall there, all three growing means the
// cores were short (the twenty-ninth session's finding).
#define STAGES 3
static const char stages_sql[] =
        "SELECT x.n, (extract(epoch FROM i.created_at) * 1e6)::int8, "
        "(extract(epoch FROM o.created_at) * 1e6)::int8 "
        "FROM messaging.messages i "
        "CROSS JOIN LATERAL (SELECT substring(i.provider_message_id FROM "
        "'^wamid\\.bench-([0-9]{1,9})$')::int AS n) x "
        "JOIN messaging.messages o ON o.tenant_id = i.tenant_id AND "
        "o.channel_id = i.channel_id AND o.provider_message_id = "
        "'wamid.b-' || x.n "
        "WHERE i.direction = 'inbound' AND x.n BETWEEN $1::int AND $2::int";

static void
print_stages(int first, int last, int64_t wall_minus_mono)
{
	static const char *const names[STAGES] = { "POST to round",
		                                   "round + agent",
		                                   "reply + send" };
	char url[PGH_URL_MAX], a[16], b[16];
	const char *params[2] = { a, b };
	double sum[2][STAGES] = { { 0 } };
	int count[2] = { 0 };
	PGconn *c;
	PGresult *r;

	snprintf(a, sizeof(a), "%d", first);
	snprintf(b, sizeof(b), "%d", last - 1);
	if (pgh_url(&S.pg, "postgres", "parley", url, sizeof(url)) != 0)
		return;
	c = PQconnectdb(url);
	r = PQstatus(c) == CONNECTION_OK ? PQexecParams(c, stages_sql, 2, NULL,
	                                                params, NULL, NULL, 0)
	                                 : NULL;
	if (PQresultStatus(r) != PGRES_TUPLES_OK) {
		fprintf(stderr, "stages: %s", PQerrorMessage(c));
		goto out;
	}
	for (int k = 0; k < PQntuples(r); k++) {
		int i = atoi(PQgetvalue(r, k, 0));
		int64_t in = atoll(PQgetvalue(r, k, 1)),
		        out = atoll(PQgetvalue(r, k, 2)), post, recv;
		int slow;

		if (i < first || i >= last || t_recv[i] == 0)
			continue;
		post = (t_post[i] + wall_minus_mono) / 1000;
		recv = (t_recv[i] + wall_minus_mono) / 1000;
		slow = recv - post > 20000;
		sum[slow][0] += (double)(in - post);
		sum[slow][1] += (double)(out - in);
		sum[slow][2] += (double)(recv - out);
		count[slow]++;
	}
	for (int g = 0; g < 2; g++) {
		if (count[g] == 0)
			continue;
		fprintf(stderr, "stages, %5d messages %s 20 ms:", count[g],
		        g ? "over " : "up to");
		for (int k = 0; k < STAGES; k++)
			fprintf(stderr, " %s %5.1f ms%s", names[k],
			        sum[g][k] / count[g] / 1000.0,
			        k + 1 < STAGES ? "," : "\n");
	}
out:
	PQclear(r);
	PQfinish(c);
}

static void
run_rate(const char *what, double rate, int seconds, int threads)
{
	pthread_t th[64];
	load l[64];
	int first = atomic_load(&next_msg), last, n, got = 0;
	int64_t start = pl_now_ns(),
	        end = start + (int64_t)seconds * 1000000000, last_recv = 0,
	        drain;
	int64_t *lat;
	long errors = 0;
	stack_cpu c0, c1;

	stack_cpu_take(&S, &c0);
	for (int i = 0; i < threads; i++) {
		l[i].rate = rate / threads;
		l[i].start_ns =
		        rate > 0 ? start + (int64_t)(i * 1e9 / rate) : start;
		l[i].end_ns = end;
		l[i].errors = 0;
		pthread_create(&th[i], NULL, load_main, &l[i]);
	}
	for (int i = 0; i < threads; i++) {
		pthread_join(th[i], NULL);
		errors += l[i].errors;
	}
	last = atomic_load(&next_msg);
	if (last > MAX_MSGS)
		last = MAX_MSGS;
	n = last - first;
	// Drain: up to 30 s for the replies still in flight.
	drain = pl_now_ns() + 30LL * 1000000000;
	while (pl_now_ns() < drain) {
		got = 0;
		for (int i = first; i < last; i++)
			got += t_recv[i] != 0;
		if (got >= n - errors)
			break;
		usleep(50000);
	}
	stack_cpu_take(&S, &c1);
	lat = calloc((size_t)n + 1, sizeof(*lat));
	got = 0;
	for (int i = first; i < last; i++)
		if (t_recv[i] != 0) {
			lat[got++] = t_recv[i] - t_post[i];
			if (t_recv[i] > last_recv)
				last_recv = t_recv[i];
		}
	if (getenv("BENCH_E2E_SLOW") != NULL) {
		// Diagnosis: per 100 ms of posting, the messages over 20 ms,
		// and when posting began (to find the seconds in server logs).
		int win[1000] = { 0 }, tot[1000] = { 0 };
		struct timespec wall;
		int64_t began;
		time_t sec;
		char stamp[32];

		clock_gettime(CLOCK_REALTIME, &wall);
		began = wall.tv_sec * 1000000000LL + wall.tv_nsec -
		        (pl_now_ns() - start);
		sec = (time_t)(began / 1000000000);
		strftime(stamp, sizeof(stamp), "%H:%M:%S", gmtime(&sec));
		fprintf(stderr, "slow: posting began at %s.%03d UTC\n", stamp,
		        (int)(began / 1000000 % 1000));
		for (int i = first; i < last; i++) {
			int64_t w = (t_post[i] - start) / 100000000;
			if (t_recv[i] == 0 || w < 0 || w >= 1000)
				continue;
			tot[w]++;
			win[w] += t_recv[i] - t_post[i] > 20000000;
		}
		for (int w = 0; w < 1000; w++)
			if (win[w] > 0)
				fprintf(stderr, "slow %d.%d s: %d of %d\n",
				        w / 10, w % 10, win[w], tot[w]);
	}
	if (getenv("BENCH_E2E_STAGES") != NULL) {
		struct timespec wall;

		clock_gettime(CLOCK_REALTIME, &wall);
		print_stages(first, last,
		             wall.tv_sec * 1000000000LL + wall.tv_nsec -
		                     pl_now_ns());
	}
	qsort(lat, (size_t)got, sizeof(*lat), cmp64);
	{
		char label[16];
		snprintf(label, sizeof(label), "%.0f", rate);
		printf("%s %-5s: posted %6d (%.0f/s, %ld errors), answered "
		       "%6d, sustained %7.0f msgs/s, p50 %7.1f ms, p99 %7.1f "
		       "ms\n",
		       what, rate > 0 ? label : "max", n, n / (double)seconds,
		       errors, got,
		       got > 0 ? got / ((last_recv - start) / 1e9) : 0.0,
		       got ? lat[got / 2] / 1e6 : 0.0,
		       got ? lat[(int)(got * 0.99)] / 1e6 : 0.0);
		cpu_print(&c0, &c1, got, "message");
	}
	fflush(stdout);
	free(lat);
}

// ---------------------------------------------------------------------------
// GET /v1/conversations?limit=20 with an API key

typedef struct reader {
	const char *key;
	int64_t end_ns;
	long ok, bad;
} reader;

// The machine's speed, measured in the same run. The same build's figures
// move with the VM's cores from one run to the next (the 500/s p99 doubles
// with 10 % more CPU a message), so each run says what it ran on:
// - compute: SHA-256 of 1 KiB on one thread, ns each (the cores' speed);
// - wake-up: two threads on two different cores passing a byte back and
//   forth through pipes, us a round trip (two cross-core wake-ups, the
//   cost every request between two processes pays twice).
typedef struct {
	int in, out, n;
	int cpu;
} bounce;

static void *
bounce_main(void *arg)
{
	bounce *b = arg;
	char c;

	if (b->cpu >= 0) {
		cpu_set_t set;
		CPU_ZERO(&set);
		CPU_SET(b->cpu, &set);
		pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
	}
	for (int i = 0; i < b->n; i++)
		if (read(b->in, &c, 1) != 1 || write(b->out, &c, 1) != 1)
			break;
	return NULL;
}

static void
machine_speed(const char *when)
{
	unsigned char buf[1024], h[crypto_hash_sha256_BYTES];
	int ab[2] = { -1, -1 }, ba[2] = { -1, -1 }, n = 20000, done = 0;
	long hashes = 0;
	int64_t t0, t1;
	double wake_us = -1;
	bounce echo;
	pthread_t th;
	char c = 'x';
	bool ok;

	memset(buf, 7, sizeof(buf));
	t0 = pl_now_ns();
	do {
		for (int i = 0; i < 1000; i++)
			crypto_hash_sha256(h, buf, sizeof(buf));
		buf[0] = h[0];
		hashes += 1000;
		t1 = pl_now_ns();
	} while (t1 - t0 < 300000000);
	ok = sysconf(_SC_NPROCESSORS_ONLN) >= 2 && pipe(ab) == 0;
	if (ok && pipe(ba) != 0) {
		close(ab[0]);
		close(ab[1]);
		ok = false;
	}
	echo = (bounce){ ab[0], ba[1], n, 1 };
	if (ok && pthread_create(&th, NULL, bounce_main, &echo) == 0) {
		cpu_set_t set, old;
		int64_t w0;
		// This thread on core 0 (the load threads it starts later
		// get its old mask back), the echo on core 1.
		pthread_getaffinity_np(pthread_self(), sizeof(old), &old);
		CPU_ZERO(&set);
		CPU_SET(0, &set);
		pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
		w0 = pl_now_ns();
		for (; done < n; done++)
			if (write(ab[1], &c, 1) != 1 || read(ba[0], &c, 1) != 1)
				break;
		if (done == n)
			wake_us = (double)(pl_now_ns() - w0) / 1e3 / n;
		pthread_setaffinity_np(pthread_self(), sizeof(old), &old);
		close(ab[1]); // an echo still reading sees the end
		ab[1] = -1;
		pthread_join(th, NULL);
	}
	if (ok) {
		close(ab[0]);
		if (ab[1] >= 0)
			close(ab[1]);
		close(ba[0]);
		close(ba[1]);
	}
	printf("machine %s: compute %.0f ns a SHA-256 of 1 KiB, ", when,
	       (t1 - t0) / (double)hashes);
	if (wake_us >= 0)
		printf("wake-up %.1f us a round trip between two cores\n",
		       wake_us);
	else
		printf("wake-up not measured (one core, or no pipe)\n");
}

static void *
reader_main(void *arg)
{
	reader *r = arg;
	hload *c = hload_open(S.http_port);
	char auth[320];
	const char *hdrs[2] = { auth, NULL };

	snprintf(auth, sizeof(auth), "Authorization: Bearer %s", r->key);
	while (pl_now_ns() < r->end_ns) {
		long st = 0;
		char *out = NULL;
		if (c != NULL &&
		    hload_do(c, "GET", "/v1/conversations?limit=20", hdrs, NULL,
		             0, &st, &out) == 0 &&
		    st == 200)
			r->ok++;
		else
			r->bad++;
		free(out);
	}
	hload_close(c);
	return NULL;
}

int
main(int argc, char **argv)
{
	int seconds = argc > 1 ? atoi(argv[1]) : 5;
	const char *rates = argc > 2 ? argv[2] : "200,500,1000,0";
	int threads = argc > 3 ? atoi(argv[3]) : 8;
	int warm = argc > 4 ? atoi(argv[4]) : 0;
	// BENCH_E2E_ENV="NAME=value ...": more settings for every service
	// (a diagnosis: e.g. PARLEY_MESSAGING_INBOX_WORKERS=1), after these.
	const char *env[8 + 16 + 1] = {
		"PARLEY_PLATFORM_ADMIN_EMAILS=admin@bench.test",
		"PARLEY_TENANTS_PWHASH_OPSLIMIT=1",
		"PARLEY_TENANTS_PWHASH_MEMLIMIT=65536",
		"PARLEY_API_KEY_RPS=1000000",
		"PARLEY_MESSAGING_SEND_RATE=100000",
		"PARLEY_LOG_LEVEL=error",
		// As docker-compose.yml and deploy/k8s run them (the
		// stack's tests use 2).
		"PARLEY_WORKERS=4",
	};
	char *extra = getenv("BENCH_E2E_ENV") ? strdup(getenv("BENCH_E2E_ENV"))
	                                      : NULL,
	     *esave = NULL;
	pl_httpd *prov = NULL;
	pl_httpd_config pc = { 0 };
	char token[256], admin[256], agent[64], body[1024], key[256], *list,
	        *save = NULL, *r;
	json_t *j;
	const char *sv = getenv("BENCH_E2E_SENDERS");
	int rc;

	if (threads < 1 || threads > 64 || seconds < 1 || warm < 0 ||
	    warm > MAX_MSGS / 4) {
		fprintf(stderr, "usage: bench_e2e [seconds] [rates] [threads] "
		                "[warm]\n");
		return 2;
	}
	if (sodium_init() < 0)
		return 1;
	if (sv != NULL && sv[0] != '\0') {
		senders = atoi(sv);
		if (senders < 1 || senders > MAX_MSGS) {
			fprintf(stderr, "BENCH_E2E_SENDERS: 1..%d\n", MAX_MSGS);
			return 2;
		}
		sending = calloc((size_t)senders, sizeof(*sending));
	}
	t_post = calloc(MAX_MSGS, sizeof(*t_post));
	t_recv = calloc(MAX_MSGS, sizeof(*t_recv));
	if (t_post == NULL || t_recv == NULL ||
	    (senders > 0 && sending == NULL)) {
		fprintf(stderr, "bench_e2e: out of memory\n");
		return 1;
	}
	pc.bind = "127.0.0.1";
	pc.threads = 4;
	if (pl_httpd_start(&prov, &pc, provider, NULL) != 0)
		return 1;
	for (char *e = extra ? strtok_r(extra, " ", &esave) : NULL; e != NULL;
	     e = strtok_r(NULL, " ", &esave)) {
		size_t ne = 0;
		while (env[ne] != NULL)
			ne++;
		if (ne >= 8 + 16) {
			fprintf(stderr, "BENCH_E2E_ENV: at most 16 settings\n");
			return 2;
		}
		env[ne] = e;
	}
	if ((rc = stack_start(&S, env)) != 0) {
		fprintf(stderr, "stack_start: %d\n", rc);
		return 1;
	}

	// A platform admin makes an unlimited public plan; the tenant takes it.
	j = stack_must(
	        &S, 201, "POST", "/v1/signup", NULL,
	        "{\"tenant_name\":\"Bench Ops\",\"email\":\"admin@bench.test\","
	        "\"password\":\"Bench-pass-2024\",\"full_name\":\"Ops\"}");
	snprintf(admin, sizeof(admin), "%s", stack_jstr(j, "token", NULL));
	json_decref(j);
	json_decref(stack_must(
	        &S, 201, "POST", "/v1/admin/plans", admin,
	        "{\"code\":\"bench\",\"name\":\"Bench\",\"currency\":"
	        "\"USD\",\"interval\":\"month\",\"is_public\":true,"
	        "\"limits\":{\"messages_per_day\":-1,"
	        "\"messages_per_month\":-1,\"campaigns_per_day\":-1,"
	        "\"campaigns_per_month\":-1,\"agents\":-1,\"seats\":-1,"
	        "\"knowledge_entries\":-1,\"ai_tokens_per_month\":-1},"
	        "\"features\":{\"api_access\":true}}"));
	stack_must_signup(
	        &S,
	        "{\"tenant_name\":\"Bench "
	        "Pizza\",\"email\":\"owner@bench.test\","
	        "\"password\":\"Bench-pass-2024\",\"full_name\":\"Owner\"}",
	        token, sizeof(token));
	json_decref(stack_must(&S, 200, "POST",
	                       "/v1/billing/subscription/change-plan", token,
	                       "{\"plan_code\":\"bench\"}"));
	snprintf(body, sizeof(body),
	         "{\"type\":\"whatsapp_cloud\",\"name\":\"Bench\","
	         "\"phone_number_id\":\"" PNID "\",\"access_token\":\"tok\","
	         "\"app_secret\":\"" SECRET "\",\"verify_token\":\"v\","
	         "\"api_base_url\":\"http://127.0.0.1:%u\","
	         "\"send_rate_per_second\":1000}",
	         pl_httpd_port(prov));
	j = stack_must(&S, 201, "POST", "/v1/channels", token, body);
	snprintf(channel_id, sizeof(channel_id), "%s",
	         stack_jstr(j, "id", NULL));
	json_decref(j);
	stack_must_agent(&S, token, channel_id, "{\"name\":\"Bench bot\"}",
	                 "{\"entries\":[{\"question\":\"What are your opening "
	                 "hours?\",\"answer\":\"" ANSWER "\",\"keywords\":"
	                 "[\"hours\",\"open\"]},{\"question\":\"Do you "
	                 "deliver?\",\"answer\":\"Yes.\",\"keywords\":"
	                 "[\"deliver\"]}]}",
	                 agent, sizeof(agent));

	printf("bench_e2e: %d s per rate, %d load threads, warm %d, stack at "
	       "%s\n",
	       seconds, threads, warm, S.base_url);
	machine_speed("before");
	// Warm-up, not in the figures: every service's workers open their
	// database connections and PostgreSQL plans their functions on
	// first use (tens of ms each), which a running deployment has done.
	run_rate("warm-up (not measured)", 100, 3, threads);
	if (warm > 0) {
		char url[PGH_URL_MAX];
		run_rate("warm-up (not measured)", 600,
		         warm / 600 > 1 ? warm / 600 : 1, threads);
		if (pgh_url(&S.pg, "postgres", "parley", url, sizeof(url)) !=
		            0 ||
		    pgh_exec_url(url, "VACUUM ANALYZE") != 0)
			fprintf(stderr, "VACUUM ANALYZE failed\n");
	}
	list = strdup(rates);
	for (r = strtok_r(list, ",", &save); r != NULL;
	     r = strtok_r(NULL, ",", &save)) {
		// After the VACUUM ANALYZE every connection plans its
		// statements again at first use, each at once (in a running
		// deployment autovacuum analyzes a table at a time, minutes
		// apart): a second at the first rate takes that out of its
		// figures.
		if (warm > 0 && r == list && atof(r) > 0)
			run_rate("lead-in (not measured)", atof(r), 1, threads);
		run_rate("rate", atof(r), seconds, threads);
	}
	free(list);

	printf("peak RSS (VmHWM):\n");
	for (int i = 0; i < S.n; i++)
		printf("  %-10s %6ld KiB\n", S.procs[i].name,
		       stack_peak_rss_kb(S.procs[i].pid));

	// What the stack costs doing nothing (pollers, relays, the statistics
	// keeper): the floor under every figure above and below.
	{
		stack_cpu c0, c1;
		stack_cpu_take(&S, &c0);
		sleep(2);
		stack_cpu_take(&S, &c1);
		printf("idle, 2 s:\n");
		cpu_print(&c0, &c1, 2000, "ms idle");
	}
	// After the rates and their backlog, before the GETs.
	machine_speed("after");

	j = stack_must(
	        &S, 201, "POST", "/v1/api-keys", token,
	        "{\"name\":\"bench\",\"scopes\":[\"conversations:read\"]}");
	snprintf(key, sizeof(key), "%s", stack_jstr(j, "key", NULL));
	json_decref(j);
	{
		pthread_t th[64];
		reader rd[64];
		long ok = 0, bad = 0;
		int64_t start;
		stack_cpu c0, c1;

		stack_cpu_take(&S, &c0);
		start = pl_now_ns();
		for (int i = 0; i < threads; i++) {
			rd[i].key = key;
			rd[i].end_ns = start + (int64_t)seconds * 1000000000;
			rd[i].ok = rd[i].bad = 0;
			pthread_create(&th[i], NULL, reader_main, &rd[i]);
		}
		for (int i = 0; i < threads; i++) {
			pthread_join(th[i], NULL);
			ok += rd[i].ok;
			bad += rd[i].bad;
		}
		printf("GET /v1/conversations?limit=20 (API key, %d clients): "
		       "%.0f req/s, %ld non-200\n",
		       threads, ok / ((pl_now_ns() - start) / 1e9), bad);
		stack_cpu_take(&S, &c1);
		cpu_print(&c0, &c1, ok + bad, "request");
	}
	stack_http_release();
	rc = stack_stop(&S);
	pl_httpd_stop(prov);
	free(t_post);
	free(t_recv);
	free(sending);
	free(extra);
	return rc == 0 ? 0 : 1;
}
