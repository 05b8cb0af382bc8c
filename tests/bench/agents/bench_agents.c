// Reply with the retrieval engine over a 10,000-entry knowledge base, 16
// concurrent clients over tcp loopback, on its own PostgreSQL cluster.
//   bench_agents [seconds=10] [clients=16] [workers=16] [runs=3]
//                [rate=2000]
// Prints, in one process:
//   engine  the in-process index alone: build time over the 10,000 entries
//           and the latency of one search (single thread, 20,000 queries)
//   cold    the first Reply (it builds the index)
//   alone   the baseline, in the same run: Reply with groups off
//           (PARLEY_REPLY_GROUP=0: one transaction, two round trips each)
//   group1  Reply with group commit (PARLEY_REPLY_GROUP=64), one group
//           at a time (PARLEY_REPLY_GROUPS_AT_ONCE=1)
//   group2  the same, two groups at a time (the default): a group whose
//           agent and sessions the replica remembers is written in one
//           round trip (PARLEY_REPLY_MEMORY, migration 006)
//   nomem   group2 with that memory off (PARLEY_REPLY_MEMORY=0: two round
//           trips a group), the baseline for it
//   health  Health/Check over the same clients and server right after
//           each Reply run: the RPC runtime's ceiling on this machine now
// each `runs` times, then the median run; per mode the CPU per reply of
// PostgreSQL's processes and of this process (server and clients), the
// groups (replies per group = replies per commit), and the reply
// functions' times and table counters. Then the same clients paced at
// `rate` replies/s in all (0: skip): latency at the target load, not at
// saturation; each paced run first runs 1 s at that rate that is not
// counted (the clients' connections, the replica's memory of the
// sessions: steady state, not start-up). Last, grouped replies with fsync and
// synchronous_commit on (the cluster runs with fsync off otherwise, as every
// test cluster does), closed loop and paced.
#include <dirent.h>
#include <pthread.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "agents.h"
#include "parley/rpc/v1/health.pb-c.h"
#include "pgh.h"
#include "pl/id.h"
#include "svch.h"
#include "port.h"

#define M(x) "/parley.agents.v1.Agents/" x
#define NENT 10000
#define CHUNK                                                                  \
	1000 // entries per ImportKnowledge (each call within the deadline)

static const char *words[] = {
	"red",   "blue",  "green", "shirt",  "shoe", "bag",    "lamp",  "chair",
	"table", "phone", "cable", "watch",  "ring", "coat",   "hat",   "sock",
	"desk",  "bed",   "sofa",  "rug",    "mug",  "plate",  "knife", "spoon",
	"pan",   "pot",   "oven",  "fridge", "bike", "helmet", "tent",  "boot",
	"glove", "scarf", "belt",  "wallet", "pen",  "book",   "card",  "toy"
};
static const char *verbs[] = { "price of", "warranty for", "colors of",
	                       "size of",  "delivery of",  "return of",
	                       "stock of", "material of" };
#define NW (sizeof(words) / sizeof(words[0]))
#define NV (sizeof(verbs) / sizeof(verbs[0]))

static char tenant[37], agent[37], addr[64];
static svch h;
static volatile int stop_flag;
static int seconds = 10, nclients = 16, nworkers = 16, nruns = 3;
static pgh pg;
static int mode; // 0 Reply, 1 Health
// Offered load of a paced run (replies/s over all clients; 0: closed
// loop, each client sends its next call when the last one is answered).
static double pace;
// Paced runs: calls due in the first PACE_WARM_NS are not counted.
#define PACE_WARM_NS 1000000000LL
static double target_rate = 2000; // the paced runs' offered load

typedef struct cli {
	int id;
	long n, errors;
	int64_t *lat, *at; // each call's latency, and its start in the run
	size_t cap;
} cli;

// Slow calls (over the 5 ms target) are counted per window of the run, to
// tell a tail made by stalls (a few windows holding most slow calls) from one
// made by queueing (slow calls spread over every window).
#define SLOW_NS   5000000LL
#define WINDOW_NS 100000000LL
static int64_t run_start;

static void
question(unsigned *seed, int i, char *buf, size_t n)
{
	snprintf(buf, n, "what is the %s the %s %s model %d", verbs[i % NV],
	         words[(i / NV) % NW], words[(i / (NV * NW)) % NW], i % 97);
	(void)seed;
}

static void *
client(void *arg)
{
	cli *c = arg;
	pl_rpc_client *rc = NULL;
	pl_rpc_client_config cc = { 0 };
	pl_principal svc = svch_service();
	pl_arena a;
	unsigned seed = (unsigned)c->id * 7919u;
	long k = 0;

	cc.urls = addr;
	cc.secret = SVCH_SECRET;
	cc.service = "bench";
	cc.timeout_ms = 10000;
	if (pl_rpc_client_open(&rc, &cc) != PL_OK)
		return NULL;
	pl_arena_init(&a, 0, 0);
	// Paced: client c sends its k-th call at start + (c + k * nclients) /
	// pace seconds, and its latency counts from that time, so a call
	// that waits for the client's previous one counts the wait too (no
	// coordinated omission).
	int64_t start = pl_now_ns(),
	        step = pace > 0 ? (int64_t)(1e9 * nclients / pace) : 0,
	        due = start + (pace > 0 ? (int64_t)(1e9 * c->id / pace) : 0);
	while (!stop_flag) {
		ag_reply_req r = PARLEY__AGENTS__V1__REPLY_REQUEST__INIT;
		ag_reply_resp *o = NULL;
		pl_rpc_opts op = { 0 };
		char q[160], key[48];
		int64_t t0;

		question(&seed, rand_r(&seed) % NENT, q, sizeof(q));
		snprintf(key, sizeof(key), "bench-%d-%ld", c->id, (k++) % 50);
		r.tenant_id = tenant;
		r.agent_id = agent;
		r.session_key = key;
		r.text = q;
		op.principal = &svc;
		t0 = pl_now_ns();
		if (step > 0) {
			while (t0 < due && !stop_flag) {
				int64_t d = due - t0;
				struct timespec ts = { d / 1000000000,
					               d % 1000000000 };
				nanosleep(&ts, NULL);
				t0 = pl_now_ns();
			}
			if (stop_flag)
				break;
			t0 = due;
			due += step;
		}
		pl_rpc_result res = { 0 };
		int st;
		if (mode == 1) {
			Parley__Rpc__V1__HealthCheckRequest hin =
			        PARLEY__RPC__V1__HEALTH_CHECK_REQUEST__INIT;
			Parley__Rpc__V1__HealthCheckResponse *hout = NULL;
			st = pl_rpc_call(
			        rc, "/parley.rpc.v1.Health/Check", &hin.base,
			        &parley__rpc__v1__health_check_response__descriptor,
			        (void **)&hout, &a, &op, &res);
		} else {
			st = pl_rpc_call(
			        rc, M("Reply"), &r.base,
			        &parley__agents__v1__reply_response__descriptor,
			        (void **)&o, &a, &op, &res);
		}
		if (st != PL_OK) {
			if (c->errors++ == 0)
				fprintf(stderr, "reply: %s %s\n",
				        pl_status_name(res.code), res.message);
		}
		if (c->n == (long)c->cap) {
			c->cap = c->cap ? c->cap * 2 : 4096;
			c->lat = realloc(c->lat, c->cap * sizeof(int64_t));
			c->at = realloc(c->at, c->cap * sizeof(int64_t));
		}
		if (step > 0 && t0 < start + PACE_WARM_NS) {
			pl_arena_reset(&a);
			continue;
		}
		c->at[c->n] = t0 - run_start;
		c->lat[c->n++] = pl_now_ns() - t0;
		pl_arena_reset(&a);
	}
	pl_arena_fini(&a);
	pl_rpc_client_close(rc);
	return NULL;
}

static int
cmp64(const void *x, const void *y)
{
	int64_t a = *(const int64_t *)x, b = *(const int64_t *)y;
	return a < b ? -1 : a > b;
}

static int
worker_init(void *arg, int idx, void **state)
{
	pl_worker *w = malloc(sizeof(*w));
	(void)idx;
	if (w == NULL || pl_worker_open(w, arg) != PL_OK) {
		free(w);
		return PL_RESOURCE_EXHAUSTED;
	}
	*state = w;
	return PL_OK;
}

static void
worker_fini(void *arg, void *state)
{
	(void)arg;
	pl_worker_close(state);
	free(state);
}

typedef struct run_result {
	double rate, p50, p99, max;
	long errors, n;
	double pg_ms, self_ms; // CPU per operation
	double per_group;      // replies per group (per commit)
	long slow, slow_windows, windows, worst_window; // see SLOW_NS
	// Inside the server, means in ms: queued per reply, answering per
	// group, waking per follower (agents_replyq_stats).
	double queued_ms, group_ms, woken_ms;
} run_result;

// CPU time (ms) of the cluster's processes (the service's connections
// stay open during a run).
static double
pg_cpu_ms(void)
{
	return pgh_cpu_s(&pg) * 1e3;
}

static double
self_cpu_ms(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e3 +
	       (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e3;
}

static int
cmp_run(const void *x, const void *y)
{
	const run_result *a = x, *b = y;
	return a->rate < b->rate ? -1 : a->rate > b->rate;
}

// One timed run of nclients clients in the current mode.
static run_result
run_clients(void)
{
	pthread_t th[64];
	cli cs[64];
	int64_t *all;
	size_t total = 0, at = 0;
	run_result rr = { 0 };

	agents_replyq_stats g0, g1;
	double pg0, self0;

	memset(cs, 0, sizeof(cs));
	stop_flag = 0;
	run_start = pl_now_ns();
	for (int i = 0; i < nclients; i++) {
		cs[i].id = i;
		pthread_create(&th[i], NULL, client, &cs[i]);
	}
	if (pace > 0) {
		struct timespec ts = { PACE_WARM_NS / 1000000000,
			               PACE_WARM_NS % 1000000000 };
		nanosleep(&ts, NULL);
	}
	pg0 = pg_cpu_ms();
	self0 = self_cpu_ms();
	agents_replyq_stats_get(((agents_ctx *)h.arg)->replyq, &g0);
	sleep((unsigned)seconds);
	stop_flag = 1;
	for (int i = 0; i < nclients; i++) {
		pthread_join(th[i], NULL);
		total += (size_t)cs[i].n;
		rr.errors += cs[i].errors;
	}
	rr.n = (long)total;
	if (total > 0) {
		rr.pg_ms = (pg_cpu_ms() - pg0) / (double)total;
		rr.self_ms = (self_cpu_ms() - self0) / (double)total;
	}
	agents_replyq_stats_get(((agents_ctx *)h.arg)->replyq, &g1);
	if (g1.groups > g0.groups) {
		rr.per_group = (double)(g1.replies - g0.replies) /
		               (double)(g1.groups - g0.groups);
		rr.queued_ms = (double)(g1.queued_ns - g0.queued_ns) / 1e6 /
		               (double)(g1.replies - g0.replies);
		rr.group_ms = (double)(g1.group_ns - g0.group_ns) / 1e6 /
		              (double)(g1.groups - g0.groups);
	}
	if (g1.woken > g0.woken)
		rr.woken_ms = (double)(g1.woken_ns - g0.woken_ns) / 1e6 /
		              (double)(g1.woken - g0.woken);
	all = malloc((total + 1) * sizeof(int64_t));
	{
		// Windows from the first counted call's start to the end.
		long nwin = (long)((pl_now_ns() - run_start) / WINDOW_NS) + 1;
		long *slow = calloc((size_t)nwin, sizeof(long));
		int64_t first = INT64_MAX;

		for (int i = 0; slow != NULL && i < nclients; i++)
			for (long j = 0; j < cs[i].n; j++) {
				long w = (long)(cs[i].at[j] / WINDOW_NS);
				if (cs[i].at[j] < first)
					first = cs[i].at[j];
				if (cs[i].lat[j] > SLOW_NS && w >= 0 &&
				    w < nwin) {
					slow[w]++;
					rr.slow++;
				}
			}
		for (long w = first == INT64_MAX || slow == NULL
		                      ? nwin
		                      : first / WINDOW_NS;
		     w < nwin; w++) {
			rr.windows++;
			rr.slow_windows += slow[w] > 0;
			if (slow[w] > rr.worst_window)
				rr.worst_window = slow[w];
			// BENCH_AGENTS_STALLS=1: when a paced run's windows
			// held their slow calls (UTC, to match PostgreSQL's
			// log).
			if (pace > 0 && slow[w] >= 10 &&
			    getenv("BENCH_AGENTS_STALLS") != NULL) {
				struct timespec ts;
				struct tm tm;
				clock_gettime(CLOCK_REALTIME, &ts);
				ts.tv_sec -= (time_t)((pl_now_ns() - run_start -
				                       w * WINDOW_NS) /
				                      1000000000);
				gmtime_r(&ts.tv_sec, &tm);
				fprintf(stderr,
				        "        stall: %ld calls over 5 ms in "
				        "the window from %02d:%02d:%02d\n",
				        slow[w], tm.tm_hour, tm.tm_min,
				        tm.tm_sec);
			}
		}
		free(slow);
	}
	for (int i = 0; i < nclients; i++) {
		memcpy(all + at, cs[i].lat, (size_t)cs[i].n * sizeof(int64_t));
		at += (size_t)cs[i].n;
		free(cs[i].lat);
		free(cs[i].at);
	}
	qsort(all, total, sizeof(int64_t), cmp64);
	if (total > 0) {
		rr.rate = (double)total / seconds;
		rr.p50 = all[total / 2] / 1e6;
		rr.p99 = all[(size_t)(total * 0.99)] / 1e6;
		rr.max = all[total - 1] / 1e6;
	}
	free(all);
	return rr;
}

// The index alone, in this process: build over the same entries, then
// single-threaded searches of the bench's questions.
static void
engine_bench(void)
{
	agents_ix_src *src = calloc(NENT, sizeof(*src));
	char(*qs)[160] = calloc(NENT, 160);
	int64_t *lat = calloc(20000, sizeof(int64_t)), t0, build;
	pl_arena a;
	agents_index *ix;
	unsigned seed = 42;
	long hits = 0;

	pl_arena_init(&a, 0, 0);
	for (int i = 0; i < NENT; i++) {
		question(&seed, i, qs[i], 160);
		src[i].id = pl_arena_printf(&a, "%08d", i);
		src[i].question = qs[i];
		src[i].answer = "Here is what we know about it.";
		src[i].intent = "product_info";
		src[i].question_norm = agents_text_normalize(&a, qs[i]);
		src[i].keywords_norm = "product info";
		src[i].answer_norm = agents_text_normalize(&a, src[i].answer);
	}
	t0 = pl_now_ns();
	ix = agents_index_build(src, NENT, 1);
	build = pl_now_ns() - t0;
	for (int i = 0; ix != NULL && i < 20000; i++) {
		pl_arena q;
		agents_ix_hit hit;
		char text[160];
		int n = rand_r(&seed) % NENT;

		question(&seed, n, text, sizeof(text));
		pl_arena_init(&q, 0, 0);
		t0 = pl_now_ns();
		if (agents_index_search(ix, &q, agents_text_normalize(&q, text),
		                        1, &hit) == 1 &&
		    strcmp(hit.id, src[n].id) == 0)
			hits++;
		lat[i] = pl_now_ns() - t0;
		pl_arena_fini(&q);
	}
	qsort(lat, 20000, sizeof(int64_t), cmp64);
	printf("engine: build %.1f ms for %d entries; search (normalise + "
	       "score) p50 %.1f us  p99 %.1f us  max %.1f us; exact entry "
	       "first %ld/20000\n",
	       build / 1e6, NENT, lat[10000] / 1e3, lat[19800] / 1e3,
	       lat[19999] / 1e3, hits);
	agents_index_release(ix);
	pl_arena_fini(&a);
	free(src);
	free(qs);
	free(lat);
}

// Where the database's time goes: the reply functions' mean time per call
// (pg_stat_user_functions, track_functions = all) and the tables' row
// counters since the previous call. Differences of two snapshots, not
// pg_stat_reset(): a reset zeroes n_live_tup, which the service's statistics
// keeper (common/src/db_analyze.c) then reads as every small table having
// lost its rows, and it ANALYZEs them all at the start of the next mode,
// which sends every connection to plan its statements again (a stall of
// tens of ms in the paced runs' windows).
#define SNAP_MAX 32
typedef struct snap_row {
	char name[64];
	double a, b, c; // calls, total ms, self ms; or ins, upd, hot upd
} snap_row;
static snap_row snap_fn[SNAP_MAX], snap_tb[SNAP_MAX];

// The row of snap named name (added when new); NULL when full.
static snap_row *
snap_find(snap_row *snap, const char *name)
{
	for (int i = 0; i < SNAP_MAX; i++) {
		if (strcmp(snap[i].name, name) == 0)
			return &snap[i];
		if (snap[i].name[0] == '\0') {
			snprintf(snap[i].name, sizeof(snap[i].name), "%s",
			         name);
			return &snap[i];
		}
	}
	return NULL;
}

static void
db_times(const char *what)
{
	PGconn *c = PQconnectdb(h.admin_url);
	PGresult *r = PQexec(c, "SELECT p.funcname, p.calls, p.total_time, "
	                        "p.self_time FROM pg_stat_user_functions p "
	                        "WHERE p.schemaname = 'agents' ORDER BY 1");

	if (PQresultStatus(r) == PGRES_TUPLES_OK) {
		printf("%s db:", what);
		for (int i = 0; i < PQntuples(r); i++) {
			snap_row *o = snap_find(snap_fn, PQgetvalue(r, i, 0));
			double n = atof(PQgetvalue(r, i, 1)),
			       t = atof(PQgetvalue(r, i, 2)),
			       st = atof(PQgetvalue(r, i, 3)), dn;
			if (o == NULL)
				continue;
			dn = n - o->a;
			printf("  %s %.0f calls, %.1f us/call (self %.1f)",
			       o->name, dn,
			       dn > 0 ? (t - o->b) * 1000 / dn : 0.0,
			       dn > 0 ? (st - o->c) * 1000 / dn : 0.0);
			o->a = n;
			o->b = t;
			o->c = st;
		}
		printf("\n");
	}
	PQclear(r);
	r = PQexec(c, "SELECT relname, n_tup_ins, n_tup_upd, n_tup_hot_upd, "
	              "n_dead_tup FROM pg_stat_user_tables WHERE schemaname = "
	              "'agents' ORDER BY 1");
	if (PQresultStatus(r) == PGRES_TUPLES_OK) {
		printf("%s tables (inserted/updated/HOT/dead):", what);
		for (int i = 0; i < PQntuples(r); i++) {
			snap_row *o = snap_find(snap_tb, PQgetvalue(r, i, 0));
			double ins = atof(PQgetvalue(r, i, 1)),
			       upd = atof(PQgetvalue(r, i, 2)),
			       hot = atof(PQgetvalue(r, i, 3));
			if (o == NULL)
				continue;
			if (ins - o->a + upd - o->b > 0)
				printf("  %s %.0f/%.0f/%.0f/%s", o->name,
				       ins - o->a, upd - o->b, hot - o->c,
				       PQgetvalue(r, i, 4));
			o->a = ins;
			o->b = upd;
			o->c = hot;
		}
		printf("\n");
	}
	PQclear(r);
	PQfinish(c);
}

// The first Reply after start: it builds the base's index.
static void
cold_reply(void)
{
	pl_rpc_client *rc = NULL;
	pl_rpc_client_config cc = { 0 };
	pl_principal svc = svch_service();
	ag_reply_req r = PARLEY__AGENTS__V1__REPLY_REQUEST__INIT;
	ag_reply_resp *o = NULL;
	pl_rpc_opts op = { 0 };
	pl_arena a;
	int64_t t0;

	cc.urls = addr;
	cc.secret = SVCH_SECRET;
	cc.service = "bench";
	cc.timeout_ms = 10000;
	if (pl_rpc_client_open(&rc, &cc) != PL_OK)
		return;
	pl_arena_init(&a, 0, 0);
	r.tenant_id = tenant;
	r.agent_id = agent;
	r.session_key = "cold";
	r.text = "what is the price of the red shirt";
	op.principal = &svc;
	t0 = pl_now_ns();
	if (pl_rpc_call(rc, M("Reply"), &r.base,
	                &parley__agents__v1__reply_response__descriptor,
	                (void **)&o, &a, &op, NULL) == PL_OK)
		printf("cold: first Reply (loads and indexes the base) %.1f "
		       "ms\n",
		       (pl_now_ns() - t0) / 1e6);
	pl_arena_fini(&a);
	pl_rpc_client_close(rc);
}

static void
print_run(int i, const char *what, const run_result *r)
{
	printf("run %d: %-6s %6.0f/s  errors %ld  p50 %6.2f ms  p99 %7.2f ms  "
	       "max %7.2f ms | cpu/op: postgres %.3f ms, this process %.3f "
	       "ms",
	       i, what, r->rate, r->errors, r->p50, r->p99, r->max, r->pg_ms,
	       r->self_ms);
	if (r->per_group > 0)
		printf(" | %.1f replies per group (per commit)", r->per_group);
	printf("\n");
	if (r->per_group > 0)
		printf("        in the server: queued %.2f ms a reply, a group "
		       "answered in %.2f ms, a follower running %.3f ms after "
		       "(means)\n",
		       r->queued_ms, r->group_ms, r->woken_ms);
	if (r->n > 0)
		printf("        over 5 ms: %ld calls (%.2f %%) in %ld of %ld "
		       "windows of 100 ms, at most %ld in one\n",
		       r->slow, 100.0 * (double)r->slow / (double)r->n,
		       r->slow_windows, r->windows, r->worst_window);
}

int
main(int argc, char **argv)
{
	pl_rpc_server *srv = NULL;
	pl_rpc_server_config rc = { 0 };
	pl_principal p;
	char user[37];

	if (argc > 1)
		seconds = atoi(argv[1]);
	if (argc > 2)
		nclients = atoi(argv[2]);
	if (argc > 3)
		nworkers = atoi(argv[3]);
	if (argc > 4)
		nruns = atoi(argv[4]);
	if (argc > 5)
		target_rate = atof(argv[5]);
	if (nclients < 1 || nclients > 64)
		nclients = 16;
	if (pgh_start(&pg) != 0) {
		fprintf(stderr, "bench_agents: no PostgreSQL\n");
		return 1;
	}
	pgh_exec(&pg, "ALTER SYSTEM SET synchronous_commit = off");
	pgh_exec(&pg, "ALTER SYSTEM SET track_functions = 'all'");
	if (getenv("BENCH_AGENTS_EXPLAIN") != NULL) {
		// Diagnostics: the plans of the reply functions' statements
		// slower than 1 ms, in the server log (copied at the end).
		char path[128];
		FILE *f;

		snprintf(path, sizeof(path), "%s/data/postgresql.conf", pg.dir);
		if ((f = fopen(path, "a")) != NULL) {
			fputs("session_preload_libraries = 'auto_explain'\n"
			      "auto_explain.log_min_duration = '1ms'\n"
			      "auto_explain.log_analyze = on\n"
			      "auto_explain.log_nested_statements = on\n",
			      f);
			fclose(f);
		}
	}
	pgh_exec(&pg, "SELECT pg_reload_conf()");
	if (svch_start(&h, &pg, &agents_service_def, 2, NULL) != 0)
		return 1;
	pl_uuid7_str(tenant);
	pl_uuid7_str(user);
	p = svch_user(tenant, user, PARLEY__RPC__V1__ROLE__ROLE_ADMIN);
	{
		int64_t t_import;
		Parley__Agents__V1__CreateAgentRequest ca =
		        PARLEY__AGENTS__V1__CREATE_AGENT_REQUEST__INIT;
		Parley__Agents__V1__CreateAgentResponse *car = NULL;
		Parley__Agents__V1__PublishAgentRequest pr =
		        PARLEY__AGENTS__V1__PUBLISH_AGENT_REQUEST__INIT;
		Parley__Agents__V1__PublishAgentResponse *prr = NULL;

		ca.name = "bench";
		if (svch_call(
		            &h, M("CreateAgent"), &p, &ca.base,
		            &parley__agents__v1__create_agent_response__descriptor,
		            (void **)&car, NULL) != PL_OK)
			return 1;
		snprintf(agent, sizeof(agent), "%s", car->id);
		t_import = pl_now_ns();
		for (int b = 0; b < NENT / CHUNK; b++) {
			Parley__Agents__V1__ImportKnowledgeRequest ik =
			        PARLEY__AGENTS__V1__IMPORT_KNOWLEDGE_REQUEST__INIT;
			Parley__Agents__V1__ImportKnowledgeResponse *ikr = NULL;
			ag_entry *e = calloc(CHUNK, sizeof(*e));
			ag_entry **ep = calloc(CHUNK, sizeof(*ep));
			char(*qs)[160] = calloc(CHUNK, 160);
			unsigned seed = 1;
			pl_rpc_result res = { 0 };

			for (int i = 0; i < CHUNK; i++) {
				parley__agents__v1__knowledge_entry__init(
				        &e[i]);
				question(&seed, b * CHUNK + i, qs[i], 160);
				e[i].question = qs[i];
				e[i].answer = "Here is what we know about it.";
				e[i].intent = "product_info";
				ep[i] = &e[i];
			}
			ik.agent_id = agent;
			ik.entries = ep;
			ik.n_entries = CHUNK;
			if (svch_call(
			            &h, M("ImportKnowledge"), &p, &ik.base,
			            &parley__agents__v1__import_knowledge_response__descriptor,
			            (void **)&ikr, &res) != PL_OK) {
				fprintf(stderr, "import: %s\n", res.message);
				return 1;
			}
			free(e);
			free(ep);
			free(qs);
			pl_arena_reset(&h.arena);
		}
		printf("setup: ImportKnowledge of %d entries (%d a call) in "
		       "%.0f ms\n",
		       NENT, CHUNK, (double)(pl_now_ns() - t_import) / 1e6);
		pr.id = agent;
		if (svch_call(
		            &h, M("PublishAgent"), &p, &pr.base,
		            &parley__agents__v1__publish_agent_response__descriptor,
		            (void **)&prr, NULL) != PL_OK)
			return 1;
	}
	pgh_exec_url(h.admin_url, "ANALYZE");
	engine_bench();
	snprintf(addr, sizeof(addr), "tcp://127.0.0.1:%d", test_port());
	rc.name = "agents";
	rc.listen = addr;
	rc.workers = nworkers;
	rc.secret = SVCH_SECRET;
	rc.arg = h.arg;
	rc.worker_arg = h.db_url;
	rc.worker_init = worker_init;
	rc.worker_fini = worker_fini;
	if (pl_rpc_server_open(&srv, &rc, agents_service_def.services) !=
	            PL_OK ||
	    pl_rpc_server_start(srv) != PL_OK) {
		fprintf(stderr, "bench_agents: cannot listen on %s\n", addr);
		return 1;
	}
	cold_reply();
	{
		run_result r1[16], r2[16], r3[16], ar[16], hr[16], dr, pr, npr,
		        dpr;
		agents_replyq *q = ((agents_ctx *)h.arg)->replyq;
		agents_replyq_stats st;

		if (nruns < 1 || nruns > 16)
			nruns = 3;
		printf("agents Reply (retrieval, %d entries): %d clients, %d "
		       "workers, %d s x %d runs over %s\n",
		       NENT, nclients, nworkers, seconds, nruns, addr);
		for (int i = 0; i < nruns; i++) {
			mode = 0;
			agents_replyq_set(q, 0, 1);
			db_times("setup");
			ar[i] = run_clients();
			db_times("alone");
			agents_replyq_set(q, 64, 1);
			r1[i] = run_clients();
			db_times("group1");
			agents_replyq_set(q, 64, 2);
			r2[i] = run_clients();
			db_times("group2");
			agents_replyq_set_memory(q, 0);
			r3[i] = run_clients();
			db_times("nomem");
			agents_replyq_set_memory(q, 4096);
			mode = 1;
			hr[i] = run_clients();
			print_run(i + 1, "alone", &ar[i]);
			print_run(i + 1, "group1", &r1[i]);
			print_run(i + 1, "group2", &r2[i]);
			print_run(i + 1, "nomem", &r3[i]);
			print_run(i + 1, "health", &hr[i]);
		}
		agents_replyq_stats_get(q, &st);
		printf("groups: %ld groups, %ld replies, largest %ld, %ld "
		       "split after a failure; %ld replies written in one "
		       "round trip, %ld answered again with two\n",
		       st.groups, st.replies, st.largest, st.split, st.fast,
		       st.redone);
		qsort(ar, (size_t)nruns, sizeof(ar[0]), cmp_run);
		qsort(r1, (size_t)nruns, sizeof(r1[0]), cmp_run);
		qsort(r2, (size_t)nruns, sizeof(r2[0]), cmp_run);
		qsort(r3, (size_t)nruns, sizeof(r3[0]), cmp_run);
		qsort(hr, (size_t)nruns, sizeof(hr[0]), cmp_run);
		printf("median (runs sorted by rate; the middle one):\n");
		print_run(0, "alone", &ar[nruns / 2]);
		print_run(0, "group1", &r1[nruns / 2]);
		print_run(0, "group2", &r2[nruns / 2]);
		print_run(0, "nomem", &r3[nruns / 2]);
		print_run(0, "health", &hr[nruns / 2]);
		// Latency at the target load: the same 16 clients, paced.
		if (target_rate > 0) {
			mode = 0;
			agents_replyq_set(q, 64, 2);
			pace = target_rate;
			db_times("health");
			pr = run_clients();
			db_times("paced");
			agents_replyq_set_memory(q, 0);
			npr = run_clients();
			agents_replyq_set_memory(q, 4096);
			pace = 0;
			print_run(0, "paced", &pr);
			print_run(0, "pnomem", &npr);
		}
		// Durable: every commit flushed to disk before its replies
		// are answered.
		pgh_exec(&pg, "ALTER SYSTEM SET fsync = on");
		pgh_exec(&pg, "ALTER SYSTEM SET synchronous_commit = on");
		pgh_exec(&pg, "SELECT pg_reload_conf()");
		sleep(1);
		mode = 0;
		agents_replyq_set(q, 64, 2);
		dr = run_clients();
		print_run(0, "fsync", &dr);
		printf("durable (fsync on, synchronous_commit on): reply "
		       "%.0f/s p99 %.2f ms, %.1f replies per commit\n",
		       dr.rate, dr.p99, dr.per_group);
		if (target_rate > 0) {
			pace = target_rate;
			dpr = run_clients();
			pace = 0;
			print_run(0, "fpaced", &dpr);
			printf("at %.0f replies/s offered (%d clients, paced): "
			       "p50 %.2f ms p99 %.2f ms (fsync off; memory "
			       "off: p50 %.2f ms p99 %.2f ms), p50 %.2f ms p99 "
			       "%.2f ms (fsync on); target p99 5 ms\n",
			       target_rate, nclients, pr.p50, pr.p99, npr.p50,
			       npr.p99, dpr.p50, dpr.p99);
		}
	}
	pl_rpc_server_close(srv);
	if (getenv("BENCH_AGENTS_EXPLAIN") != NULL) {
		char cmd[256];

		snprintf(cmd, sizeof(cmd),
		         "cp %s/server.log /tmp/bench_agents_server.log",
		         pg.dir);
		if (system(cmd) == 0)
			printf("server log: /tmp/bench_agents_server.log\n");
	}
	svch_stop(&h);
	pgh_stop(&pg);
	return 0;
}
