// bench_billing: ReserveUsage over RPC (tcp loopback) against its own
// PostgreSQL cluster, 16 client threads: (a) 1,000 distinct tenants, (b) one
// hot tenant with a daily limit. Prints calls/s, p50/p99 and the number of
// over-admissions (allowed answers beyond what the counters hold or beyond
// the limit; must be 0).
//
// Every ReserveUsage figure is printed twice: batched (the service's
// default: concurrent calls decided together by billing.reserve_batch, 003)
// and one by one (PARLEY_BILLING_RESERVE_BATCH=1: billing.reserve_usage of
// 002, the baseline), measured in the same run. Beside them, two ceilings
// measured in the same process on the same machine:
//   health  Health/Check over the same RPC client and server (no database):
//           what the RPC runtime alone can do; and again on connections
//           made with direct I/O off (nng's poller reads every byte: the
//           runtime before 2026-11-23), the baseline of the direct socket
//           reads (common/src/rpc_wire.c);
//   sql     the service's batcher and store (billing_reserve, the same SQL)
//           called from N threads with one connection each, no RPC.
// Each run also prints CPU per call, which does not depend on the load of
// the machine: of this process (clients + service, getrusage) and of the
// PostgreSQL cluster (its processes' /proc times), and the mean batch size.
// Every measurement runs --repeat times (default 3) and the median is
// printed; (b) uses a fresh hot tenant for every run. Each (a) run of the
// store starts with a lead-in of --lead seconds (default 2) whose calls
// are not in its figures: the replica's counter leases and call-rate
// windows in steady state, as in a running deployment, not starting from
// none after the other modes' runs (the lead-in's own calls/s is printed
// beside it: the cold start). Its allowed calls count in the check of the
// counters.
//
// usage: bench_billing [--seconds S] [--threads N] [--workers W]
//                      [--hot-limit L] [--repeat R] [--hold S]
//                      [--batch B] [--parallel P] [--lead S]
//   --hold S  keeps the cluster up S seconds after the runs and prints its
//             URL (for EXPLAIN, pgbench or perf by hand).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "billing.h"
#include "parley/rpc/v1/health.pb-c.h"
#include "pgh.h"
#include "pl/db.h"
#include "pl/id.h"
#include "pl/log.h"
#include "port.h"

#define SECRET "bench-secret-bench-secret"
#define M(x)   "/parley.billing.v1.Billing/" x

static double seconds = 5.0;
static int threads = 16;
static int workers = 16;
static int batch = 64;
static int parallel = 2; // PARLEY_BILLING_RESERVE_PARALLEL's default
static billing_state *svc_state;
static const pgh *pg_h;     // the cluster, for pg_cpu()
static pl_db *sql_dbs[256]; // MODE_SQL's connections, kept warm across runs
static int64_t hot_limit = 5000;
static int repeat = 3;
static int hold;
static double lead = 2.0; // s of each (a) run not counted: steady state
static char db_url[PGH_URL_MAX];

static int
worker_init(void *arg, int idx, void **state)
{
	pl_worker *w = malloc(sizeof(*w));
	(void)arg;
	if (w == NULL || pl_worker_open(w, db_url) != PL_OK) {
		free(w);
		return PL_RESOURCE_EXHAUSTED;
	}
	w->idx = idx;
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

static pl_rpc_client *cli;
static char listen_url[64];
static char (*tenants)[PL_UUID_STRLEN + 1];
static int n_tenants;
static atomic_bool stop;
static atomic_bool counting; // false during a run's lead-in
static int run_seq;          // in every key: each run's keys are new

enum mode { MODE_RESERVE, MODE_HEALTH, MODE_SQL };

// CPU seconds of the PostgreSQL cluster (pgh_cpu_s).
static double
pg_cpu(void)
{
	return pgh_cpu_s(pg_h);
}

static double
self_cpu(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static void
batch_counts(uint64_t *batches, uint64_t *items)
{
	billing_batcher *b = &svc_state->batcher;
	pthread_mutex_lock(&b->mtx);
	*batches = b->batches;
	*items = b->items;
	pthread_mutex_unlock(&b->mtx);
}

// Calls admitted under leases, leases granted, asks refused, returned.
static void
lease_counts(uint64_t v[4])
{
	billing_batcher *b = &svc_state->batcher;
	pthread_mutex_lock(&b->mtx);
	v[0] = b->leased;
	v[1] = b->grants;
	v[2] = b->grants_refused;
	v[3] = b->returns;
	pthread_mutex_unlock(&b->mtx);
}

// Gives every lease back, so that the counters hold only what was used.
static void
flush_leases(void)
{
	pl_db *db = pl_db_open(db_url);
	billing_leases_flush(&svc_state->batcher, db, NULL);
	pl_db_close(db);
}

typedef struct thr {
	int idx;
	enum mode mode;
	long calls, allowed, refused, errors;
	long lead_calls, lead_allowed; // in the lead-in, not in the figures
	int64_t *lat;
	size_t n_lat, cap_lat;
} thr;

// One call of the run's kind; returns its status.
static int
one_call(thr *t, pl_arena *a, pl_db *db, unsigned *seed)
{
	pl_principal svc = PARLEY__RPC__V1__PRINCIPAL__INIT;
	pl_rpc_opts o = { .principal = &svc };
	const char *tenant = tenants[rand_r(seed) % (unsigned)n_tenants];
	char key[64];

	svc.kind = PARLEY__RPC__V1__PRINCIPAL_KIND__PRINCIPAL_KIND_SERVICE;
	snprintf(key, sizeof(key), "b-%d-%d-%ld", run_seq, t->idx,
	         t->calls + t->lead_calls);
	if (t->mode == MODE_HEALTH) {
		Parley__Rpc__V1__HealthCheckRequest in =
		        PARLEY__RPC__V1__HEALTH_CHECK_REQUEST__INIT;
		Parley__Rpc__V1__HealthCheckResponse *out = NULL;
		return pl_rpc_call(
		        cli, "/parley.rpc.v1.Health/Check", &in.base,
		        &parley__rpc__v1__health_check_response__descriptor,
		        (void **)&out, a, &o, NULL);
	}
	if (t->mode == MODE_SQL) {
		billing_reserve_item it = { 0 };
		it.tenant = tenant;
		it.metric = "messages";
		it.amount = 1;
		it.key = key;
		int rc = billing_reserve(&svc_state->batcher, db, &it);
		if (rc != PL_OK)
			return rc;
		if (strcmp(it.res.outcome, "ok") == 0)
			return PL_OK;
		return strcmp(it.res.outcome, "exhausted") == 0
		               ? PL_RESOURCE_EXHAUSTED
		               : PL_INTERNAL;
	}
	Parley__Billing__V1__ReserveUsageRequest in =
	        PARLEY__BILLING__V1__RESERVE_USAGE_REQUEST__INIT;
	Parley__Billing__V1__ReserveUsageResponse *out = NULL;
	in.tenant_id = (char *)tenant;
	in.metric = PARLEY__BILLING__V1__METRIC__METRIC_MESSAGES;
	in.amount = 1;
	in.idempotency_key = key;
	return pl_rpc_call(
	        cli, M("ReserveUsage"), &in.base,
	        &parley__billing__v1__reserve_usage_response__descriptor,
	        (void **)&out, a, &o, NULL);
}

static void *
client_main(void *arg)
{
	thr *t = arg;
	pl_arena a;
	pl_db *db = NULL;
	unsigned seed = (unsigned)t->idx * 7919u + 1;

	if (t->mode == MODE_SQL) {
		if (sql_dbs[t->idx] == NULL)
			sql_dbs[t->idx] = pl_db_open(db_url);
		if ((db = sql_dbs[t->idx]) == NULL)
			return NULL;
	}
	pl_arena_init(&a, 0, 0);
	while (!atomic_load(&stop)) {
		int64_t t0 = pl_now_ns();
		int rc = one_call(t, &a, db, &seed);
		if (!atomic_load(&counting)) {
			t->lead_calls++;
			t->lead_allowed += rc == PL_OK;
			pl_arena_reset(&a);
			continue;
		}
		t->calls++;
		if (rc == PL_OK)
			t->allowed++;
		else if (rc == PL_RESOURCE_EXHAUSTED)
			t->refused++;
		else
			t->errors++;
		if (t->n_lat == t->cap_lat) {
			size_t cap = t->cap_lat ? t->cap_lat * 2 : 4096;
			int64_t *l = realloc(t->lat, cap * sizeof(*l));
			if (l == NULL)
				break;
			t->lat = l;
			t->cap_lat = cap;
		}
		t->lat[t->n_lat++] = pl_now_ns() - t0;
		pl_arena_reset(&a);
	}
	pl_arena_fini(&a);
	return NULL;
}

static int
cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return x < y ? -1 : x > y;
}

typedef struct result {
	double rate, p50_us, p99_us;
	double self_us, pg_us, per_batch; // per call; items per batch
	long calls, allowed, refused, errors;
	long lead_allowed; // allowed in the lead-in (for the counters' check)
} result;

// Runs n clients of one kind for `lead_s` not counted (the replica's
// leases and rate windows in steady state, not starting), then `seconds`.
static result
run(const char *label, enum mode mode, int n_thr, double lead_s)
{
	pthread_t th[256];
	thr ts[256];
	result res = { 0 };
	int64_t *all;
	size_t n = 0;
	int64_t t0;
	double el, c_self, c_pg;
	uint64_t b0, i0, b1, i1, l0[4], l1[4];

	long lead_calls = 0;

	memset(ts, 0, sizeof(ts));
	run_seq++;
	atomic_store(&stop, false);
	atomic_store(&counting, lead_s <= 0);
	for (int i = 0; i < n_thr; i++) {
		ts[i].idx = i;
		ts[i].mode = mode;
		pthread_create(&th[i], NULL, client_main, &ts[i]);
	}
	if (lead_s > 0)
		usleep((useconds_t)(lead_s * 1e6));
	batch_counts(&b0, &i0);
	lease_counts(l0);
	c_self = self_cpu();
	c_pg = pg_cpu();
	t0 = pl_now_ns();
	atomic_store(&counting, true);
	usleep((useconds_t)(seconds * 1e6));
	atomic_store(&stop, true);
	for (int i = 0; i < n_thr; i++) {
		pthread_join(th[i], NULL);
		res.calls += ts[i].calls;
		res.allowed += ts[i].allowed;
		res.refused += ts[i].refused;
		res.errors += ts[i].errors;
		res.lead_allowed += ts[i].lead_allowed;
		lead_calls += ts[i].lead_calls;
		n += ts[i].n_lat;
	}
	el = (double)(pl_now_ns() - t0) / 1e9;
	usleep(200000); // let the backends' times reach /proc
	c_self = self_cpu() - c_self;
	c_pg = pg_cpu() - c_pg;
	batch_counts(&b1, &i1);
	lease_counts(l1);
	all = malloc((n + 1) * sizeof(*all));
	n = 0;
	for (int i = 0; i < n_thr; i++) {
		memcpy(all + n, ts[i].lat, ts[i].n_lat * sizeof(*all));
		n += ts[i].n_lat;
		free(ts[i].lat);
	}
	qsort(all, n, sizeof(*all), cmp_i64);
	res.rate = (double)res.calls / el;
	res.p50_us = n ? (double)all[n / 2] / 1e3 : 0.0;
	res.p99_us = n ? (double)all[n * 99 / 100] / 1e3 : 0.0;
	if (res.calls > 0) {
		res.self_us = c_self * 1e6 / (double)res.calls;
		res.pg_us = c_pg * 1e6 / (double)res.calls;
	}
	res.per_batch = b1 > b0 ? (double)(i1 - i0) / (double)(b1 - b0) : 0.0;
	printf("  %-26s %8.0f calls/s  p50 %6.0f us  p99 %6.0f us  "
	       "(%ld calls: %ld ok, %ld refused, %ld errors)\n"
	       "  %-26s cpu/call: this process %4.0f us, postgres %4.0f us; "
	       "%.1f calls per batch\n",
	       label, res.rate, res.p50_us, res.p99_us, res.calls, res.allowed,
	       res.refused, res.errors, "", res.self_us, res.pg_us,
	       res.per_batch);
	if (lead_s > 0)
		printf("  %-26s after a lead-in of %.1f s not counted (%.0f "
		       "calls/s)\n",
		       "", lead_s, (double)lead_calls / lead_s);
	if (l1[0] > l0[0] || l1[1] > l0[1] || l1[2] > l0[2])
		printf("  %-26s leases: %" PRIu64 " calls admitted under them "
		       "(%.0f %%), %" PRIu64 " granted, %" PRIu64
		       " refused, %" PRIu64 " returned\n",
		       "", l1[0] - l0[0],
		       res.calls ? 100.0 * (double)(l1[0] - l0[0]) /
		                           (double)res.calls
		                 : 0.0,
		       l1[1] - l0[1], l1[2] - l0[2], l1[3] - l0[3]);
	fflush(stdout);
	free(all);
	return res;
}

static int
cmp_res(const void *a, const void *b)
{
	double x = ((const result *)a)->rate, y = ((const result *)b)->rate;
	return x < y ? -1 : x > y;
}

// The run with the median rate of n.
static result
median(result *r, int n)
{
	qsort(r, (size_t)n, sizeof(*r), cmp_res);
	return r[n / 2];
}

static long long
sql_int(const char *url, const char *sql)
{
	PGconn *c = PQconnectdb(url);
	PGresult *r = PQexec(c, sql);
	long long v = -1;
	if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
		v = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
	else
		fprintf(stderr, "%s\n", PQerrorMessage(c));
	PQclear(r);
	PQfinish(c);
	return v;
}

static void
make_tenants(int n, const char *plan)
{
	pl_principal svc = PARLEY__RPC__V1__PRINCIPAL__INIT;
	pl_rpc_opts o = { .principal = &svc };
	pl_arena a;
	char payload[96];

	svc.kind = PARLEY__RPC__V1__PRINCIPAL_KIND__PRINCIPAL_KIND_SERVICE;
	snprintf(payload, sizeof(payload), "{\"plan_code\":\"%s\"}", plan);
	pl_arena_init(&a, 0, 0);
	tenants = calloc((size_t)n, sizeof(*tenants));
	n_tenants = n;
	for (int i = 0; i < n; i += 100) {
		Parley__Billing__V1__DeliverEventsRequest in =
		        PARLEY__BILLING__V1__DELIVER_EVENTS_REQUEST__INIT;
		Parley__Billing__V1__DeliverEventsResponse *out = NULL;
		Parley__Rpc__V1__Event ev[100], *evs[100];
		Parley__Rpc__V1__Json pay = PARLEY__RPC__V1__JSON__INIT;
		char ids[100][PL_UUID_STRLEN + 1];
		int k = 0;
		pay.text = payload;
		for (; k < 100 && i + k < n; k++) {
			parley__rpc__v1__event__init(&ev[k]);
			pl_uuid7_str(tenants[i + k]);
			pl_uuid7_str(ids[k]);
			ev[k].id = ids[k];
			ev[k].tenant_id = tenants[i + k];
			ev[k].type = "tenant.created";
			ev[k].payload = &pay;
			evs[k] = &ev[k];
		}
		in.events = evs;
		in.n_events = (size_t)k;
		if (pl_rpc_call(
		            cli, M("DeliverEvents"), &in.base,
		            &parley__billing__v1__deliver_events_response__descriptor,
		            (void **)&out, &a, &o, NULL) != PL_OK ||
		    out->accepted != k) {
			fprintf(stderr, "could not create tenants\n");
			exit(1);
		}
		pl_arena_reset(&a);
	}
	pl_arena_fini(&a);
}

// Health over a second client whose connections (and the server's ends of
// them) are made with direct I/O off.
static result
health_nng(int threads)
{
	pl_rpc_client_config cc = { 0 };
	pl_rpc_client *direct = cli;
	result r = { 0 };

	cc.urls = listen_url;
	cc.secret = SECRET;
	cc.service = "bench";
	cc.timeout_ms = 60000;
	pl_rpc_set_direct_io(false);
	if (pl_rpc_client_open(&cli, &cc) == PL_OK) {
		r = run("health, nng I/O", MODE_HEALTH, threads, 0);
		pl_rpc_client_close(cli);
	}
	cli = direct;
	pl_rpc_set_direct_io(true);
	return r;
}

int
main(int argc, char **argv)
{
	pgh pg;
	char admin_url[PGH_URL_MAX], err[256];
	char sql[512], q[256];
	pl_rpc_server *srv;
	pl_rpc_server_config rc = { 0 };
	pl_rpc_client_config cc = { 0 };
	void *arg = NULL;
	pl_service_cfg cfg = { 0 };
	long long counted, month, overs = 0;
	bool mismatch = false;

	for (int i = 1; i + 1 < argc; i += 2) {
		if (strcmp(argv[i], "--seconds") == 0)
			seconds = atof(argv[i + 1]);
		else if (strcmp(argv[i], "--threads") == 0)
			threads = atoi(argv[i + 1]);
		else if (strcmp(argv[i], "--workers") == 0)
			workers = atoi(argv[i + 1]);
		else if (strcmp(argv[i], "--hot-limit") == 0)
			hot_limit = atoll(argv[i + 1]);
		else if (strcmp(argv[i], "--repeat") == 0)
			repeat = atoi(argv[i + 1]);
		else if (strcmp(argv[i], "--hold") == 0)
			hold = atoi(argv[i + 1]);
		else if (strcmp(argv[i], "--batch") == 0)
			batch = atoi(argv[i + 1]);
		else if (strcmp(argv[i], "--parallel") == 0)
			parallel = atoi(argv[i + 1]);
		else if (strcmp(argv[i], "--lead") == 0)
			lead = atof(argv[i + 1]);
	}
	if (batch < 2 || batch > BILLING_MAX_BATCH)
		batch = 64;
	if (parallel < 1 || parallel > 64)
		parallel = 2;
	if (threads < 1 || threads > 256)
		threads = 16;
	if (workers < 1 || workers > 256)
		workers = 16;
	if (repeat < 1 || repeat > 16)
		repeat = 3;
	pl_log_init("bench", PL_LOG_WARN);
	if (pgh_start(&pg) != 0) {
		fprintf(stderr, "bench_billing: no PostgreSQL\n");
		return 1;
	}
	pg_h = &pg;
	if (pgh_create_db(&pg, "billing_bench", admin_url, sizeof(admin_url)) ||
	    pgh_exec_url(
	            admin_url,
	            "CREATE ROLE parley_billing LOGIN NOSUPERUSER NOBYPASSRLS; "
	            "GRANT CREATE, CONNECT ON DATABASE billing_bench TO "
	            "parley_billing; CREATE EXTENSION IF NOT EXISTS "
	            "pgcrypto;") ||
	    pgh_url(&pg, "parley_billing", "billing_bench", db_url,
	            sizeof(db_url)) ||
	    pl_service_migrate(&billing_service_def, db_url, err, sizeof(err)) <
	            0) {
		fprintf(stderr, "bench_billing: setup failed: %s\n", err);
		pgh_stop(&pg);
		return 1;
	}
	snprintf(
	        sql, sizeof(sql),
	        "INSERT INTO billing.plans (id, code, name, price_minor, "
	        "currency, "
	        "billing_interval, limit_messages_per_day, "
	        "limit_messages_per_month) VALUES "
	        "(gen_random_uuid(), 'bench', 'bench', 0, 'USD', 'month', "
	        "1000000000, 1000000000), (gen_random_uuid(), 'hot', 'hot', 0, "
	        "'USD', 'month', %lld, 1000000000)",
	        (long long)hot_limit);
	pgh_exec_url(admin_url, sql);

	snprintf(listen_url, sizeof(listen_url), "tcp://127.0.0.1:%d",
	         test_port());
	cfg.database_url = db_url;
	cfg.secret = SECRET;
	if (pl_cfg_load(billing_service_def.cfg, err, sizeof(err)) != 0 ||
	    billing_service_def.init(&cfg, &arg) != PL_OK) {
		fprintf(stderr, "bench_billing: init failed\n");
		return 1;
	}
	svc_state = arg;
	svc_state->batcher.max_running = parallel;
	rc.name = "billing";
	rc.listen = listen_url;
	rc.workers = workers;
	rc.secret = SECRET;
	rc.arg = arg;
	rc.worker_init = worker_init;
	rc.worker_fini = worker_fini;
	if (pl_rpc_server_open(&srv, &rc, billing_service_def.services) ||
	    pl_rpc_server_start(srv)) {
		fprintf(stderr, "bench_billing: could not start the server\n");
		return 1;
	}
	cc.urls = listen_url;
	cc.secret = SECRET;
	cc.service = "bench";
	cc.timeout_ms = 60000; // a loaded machine: setup must not time out
	if (pl_rpc_client_open(&cli, &cc) != PL_OK)
		return 1;
	printf("bench_billing: %d client threads, %d server workers, %.1f s "
	       "per run, tcp loopback, %ld cores online; batches of up to %d, "
	       "%d at a time\n",
	       threads, workers, seconds, sysconf(_SC_NPROCESSORS_ONLN), batch,
	       parallel);

	// (a) 1,000 distinct tenants.
	make_tenants(1000, "bench");
	{
		result h[16], hn[16], r[16], o[16], d[16], m;
		long total = 0;
		printf("(a) 1,000 tenants\n");
		// Warm-up (not in the medians): every connection compiles the
		// functions and plans their statements once (tens of ms of
		// PostgreSQL CPU each); a batch leader's connection changes
		// from batch to batch, so run until there were several
		// batches per worker.
		for (int k = 0; k < 8; k++) {
			uint64_t b0, i0, b1, i1;
			batch_counts(&b0, &i0);
			svc_state->batcher.max_batch = batch;
			total +=
			        run("warm-up batched", MODE_RESERVE, threads, 0)
			                .allowed;
			total += run("warm-up SQL", MODE_SQL, threads, 0)
			                 .allowed;
			batch_counts(&b1, &i1);
			if (b1 - b0 >= (uint64_t)(4 * (workers + threads)))
				break;
		}
		svc_state->batcher.max_batch = 1;
		total += run("warm-up one by one", MODE_RESERVE, threads, 0)
		                 .allowed;
		for (int k = 0; k < repeat; k++) {
			h[k] = run("health (RPC runtime)", MODE_HEALTH, threads,
			           0);
			hn[k] = health_nng(threads);
			svc_state->batcher.max_batch = batch;
			r[k] = run("ReserveUsage batched", MODE_RESERVE,
			           threads, lead);
			svc_state->batcher.max_batch = 1;
			o[k] = run("ReserveUsage one by one", MODE_RESERVE,
			           threads, lead);
			svc_state->batcher.max_batch = batch;
			d[k] = run("reserve SQL batched, no RPC", MODE_SQL,
			           threads, lead);
			total += r[k].allowed + o[k].allowed + d[k].allowed +
			         r[k].lead_allowed + o[k].lead_allowed +
			         d[k].lead_allowed;
		}
		m = median(h, repeat);
		printf("  median health              %8.0f calls/s  cpu/call "
		       "%.0f us\n",
		       m.rate, m.self_us);
		{
			result n = median(hn, repeat);
			printf("  median health, nng I/O     %8.0f calls/s  "
			       "cpu/call %.0f us (direct: %.2fx the calls/s, "
			       "%.2fx the CPU a call)\n",
			       n.rate, n.self_us, m.rate / n.rate,
			       m.self_us / n.self_us);
		}
		m = median(d, repeat);
		printf("  median reserve SQL         %8.0f calls/s  postgres "
		       "%.0f us/call\n",
		       m.rate, m.pg_us);
		m = median(o, repeat);
		printf("  median one by one (002)    %8.0f calls/s  p50 %.0f "
		       "us  "
		       "p99 %.0f us  cpu/call %.0f + postgres %.0f us\n",
		       m.rate, m.p50_us, m.p99_us, m.self_us, m.pg_us);
		m = median(r, repeat);
		printf("  median ReserveUsage        %8.0f calls/s  p50 %.0f "
		       "us  "
		       "p99 %.0f us  cpu/call %.0f + postgres %.0f us  "
		       "%.1f per batch  target 10000\n",
		       m.rate, m.p50_us, m.p99_us, m.self_us, m.pg_us,
		       m.per_batch);
		flush_leases();
		counted =
		        sql_int(admin_url, "SELECT coalesce(sum(used), 0) FROM "
		                           "billing.usage_counters WHERE "
		                           "period_kind = 'day'");
		month = sql_int(admin_url, "SELECT coalesce(sum(used), 0) FROM "
		                           "billing.usage_counters WHERE "
		                           "period_kind = 'month'");
		if (counted > total)
			overs += counted - total;
		printf("  counters day %lld month %lld = allowed %ld: %s\n",
		       counted, month, total,
		       counted == total && month == total ? "ok" : "MISMATCH");
		if (counted != total || month != total) {
			// Where the difference is: lease rows left (units
			// granted and never given back), or reservations.
			mismatch = true;
			printf("    leases left in the database: %lld rows, "
			       "%lld units; granted reservations stored: "
			       "%lld\n",
			       sql_int(admin_url, "SELECT count(*) FROM "
			                          "billing.usage_leases"),
			       sql_int(admin_url,
			               "SELECT coalesce(sum(units), 0) FROM "
			               "billing.usage_leases"),
			       sql_int(admin_url,
			               "SELECT coalesce(sum(amount - "
			               "released), 0) FROM "
			               "billing.usage_reservations WHERE "
			               "allowed"));
		}
	}

	// (b) one hot tenant with a daily limit: a fresh one for every run.
	{
		result r[16], o[16], m;
		printf("(b) one hot tenant, day limit %lld\n",
		       (long long)hot_limit);
		for (int k = 0; k < 2 * repeat; k++) {
			result x;
			long long c;
			free(tenants);
			make_tenants(1, "hot");
			if (k % 2 == 0) {
				svc_state->batcher.max_batch = batch;
				x = r[k / 2] = run("ReserveUsage batched",
				                   MODE_RESERVE, threads, 0);
			} else {
				svc_state->batcher.max_batch = 1;
				x = o[k / 2] = run("ReserveUsage one by one",
				                   MODE_RESERVE, threads, 0);
				svc_state->batcher.max_batch = batch;
			}
			flush_leases();
			snprintf(
			        q, sizeof(q),
			        "SELECT coalesce(sum(used), 0) FROM "
			        "billing.usage_counters WHERE tenant_id = '%s' "
			        "AND period_kind = 'day'",
			        tenants[0]);
			c = sql_int(admin_url, q);
			if (c > x.allowed)
				overs += c - x.allowed;
			if (c > hot_limit)
				overs += c - hot_limit;
			if (x.allowed > hot_limit)
				overs += x.allowed - hot_limit;
			if (c != x.allowed)
				mismatch = true;
			printf("    counter %lld, allowed %ld, limit %lld\n", c,
			       x.allowed, (long long)hot_limit);
		}
		m = median(o, repeat);
		printf("  median one by one (002)    %8.0f calls/s  p50 %.0f "
		       "us  "
		       "p99 %.0f us  cpu/call %.0f + postgres %.0f us\n",
		       m.rate, m.p50_us, m.p99_us, m.self_us, m.pg_us);
		m = median(r, repeat);
		printf("  median ReserveUsage        %8.0f calls/s  p50 %.0f "
		       "us  "
		       "p99 %.0f us  cpu/call %.0f + postgres %.0f us  "
		       "%.1f per batch  target 3000\n",
		       m.rate, m.p50_us, m.p99_us, m.self_us, m.pg_us,
		       m.per_batch);
	}
	printf("over-admissions: %lld%s\n", overs,
	       mismatch ? " (counters and answers disagree)" : "");
	if (hold > 0) {
		printf("holding the cluster %d s: admin %s service %s\n", hold,
		       admin_url, db_url);
		fflush(stdout);
		sleep((unsigned)hold);
	}

	for (int i = 0; i < 256; i++)
		if (sql_dbs[i] != NULL)
			pl_db_close(sql_dbs[i]);
	free(tenants);
	pl_rpc_client_close(cli);
	pl_rpc_server_close(srv);
	billing_service_def.stop(arg);
	billing_service_def.fini(arg);
	pl_cfg_free(billing_service_def.cfg);
	pgh_stop(&pg);
	return overs == 0 && !mismatch ? 0 : 2;
}
