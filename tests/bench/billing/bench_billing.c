// bench_billing: ReserveUsage over RPC (tcp loopback) against its own
// PostgreSQL cluster, 16 client threads: (a) 1,000 distinct tenants, (b) one
// hot tenant with a daily limit. Prints calls/s, p50/p99 and the number of
// over-admissions (allowed answers beyond what the counters hold or beyond
// the limit; must be 0).
//
// usage: bench_billing [--seconds S] [--threads N] [--workers W]
//                      [--hot-limit L]
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "billing.h"
#include "pgh.h"
#include "pl/id.h"
#include "pl/log.h"

#define SECRET "bench-secret-bench-secret"
#define M(x)   "/parley.billing.v1.Billing/" x

static double seconds = 5.0;
static int threads = 16;
static int workers = 4;
static int64_t hot_limit = 5000;
static char db_url[PGH_URL_MAX];

static int
free_port(void)
{
	struct sockaddr_in a = { 0 };
	socklen_t n = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port;
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
	    getsockname(fd, (struct sockaddr *)&a, &n) != 0) {
		perror("free port");
		exit(1);
	}
	port = ntohs(a.sin_port);
	close(fd);
	return port;
}

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
static char (*tenants)[PL_UUID_STRLEN + 1];
static int n_tenants;
static atomic_bool stop;

typedef struct thr {
	int idx;
	long calls, allowed, refused, errors;
	int64_t *lat;
	size_t n_lat, cap_lat;
} thr;

static void *
client_main(void *arg)
{
	thr *t = arg;
	pl_principal svc = PARLEY__RPC__V1__PRINCIPAL__INIT;
	pl_rpc_opts o = { .principal = &svc };
	pl_arena a;
	unsigned seed = (unsigned)t->idx * 7919u + 1;

	svc.kind = PARLEY__RPC__V1__PRINCIPAL_KIND__PRINCIPAL_KIND_SERVICE;
	pl_arena_init(&a, 0, 0);
	while (!atomic_load(&stop)) {
		Parley__Billing__V1__ReserveUsageRequest in =
		        PARLEY__BILLING__V1__RESERVE_USAGE_REQUEST__INIT;
		Parley__Billing__V1__ReserveUsageResponse *out = NULL;
		char key[64];
		int64_t t0 = pl_now_ns();
		int rc;
		snprintf(key, sizeof(key), "b-%d-%ld", t->idx, t->calls);
		in.tenant_id = tenants[rand_r(&seed) % n_tenants];
		in.metric = PARLEY__BILLING__V1__METRIC__METRIC_MESSAGES;
		in.amount = 1;
		in.idempotency_key = key;
		rc = pl_rpc_call(
		        cli, M("ReserveUsage"), &in.base,
		        &parley__billing__v1__reserve_usage_response__descriptor,
		        (void **)&out, &a, &o, NULL);
		t->calls++;
		if (rc == PL_OK)
			t->allowed++;
		else if (rc == PL_RESOURCE_EXHAUSTED)
			t->refused++;
		else
			t->errors++;
		if (t->n_lat == t->cap_lat) {
			t->cap_lat = t->cap_lat ? t->cap_lat * 2 : 4096;
			t->lat = realloc(t->lat, t->cap_lat * sizeof(*t->lat));
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

// Runs the clients for `seconds`; returns allowed answers.
static long
run(const char *label)
{
	pthread_t th[256];
	thr ts[256];
	long calls = 0, allowed = 0, refused = 0, errors = 0;
	int64_t *all;
	size_t n = 0;
	int64_t t0;
	double el;

	memset(ts, 0, sizeof(ts));
	atomic_store(&stop, false);
	t0 = pl_now_ns();
	for (int i = 0; i < threads; i++) {
		ts[i].idx = i;
		pthread_create(&th[i], NULL, client_main, &ts[i]);
	}
	usleep((useconds_t)(seconds * 1e6));
	atomic_store(&stop, true);
	for (int i = 0; i < threads; i++) {
		pthread_join(th[i], NULL);
		calls += ts[i].calls;
		allowed += ts[i].allowed;
		refused += ts[i].refused;
		errors += ts[i].errors;
		n += ts[i].n_lat;
	}
	el = (double)(pl_now_ns() - t0) / 1e9;
	all = malloc((n + 1) * sizeof(*all));
	n = 0;
	for (int i = 0; i < threads; i++) {
		memcpy(all + n, ts[i].lat, ts[i].n_lat * sizeof(*all));
		n += ts[i].n_lat;
		free(ts[i].lat);
	}
	qsort(all, n, sizeof(*all), cmp_i64);
	printf("%-22s %9.0f calls/s  p50 %6.0f us  p99 %6.0f us  "
	       "(%ld calls: %ld allowed, %ld refused, %ld errors)\n",
	       label, (double)calls / el, n ? all[n / 2] / 1e3 : 0.0,
	       n ? all[n * 99 / 100] / 1e3 : 0.0, calls, allowed, refused,
	       errors);
	free(all);
	return allowed;
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
	for (int i = 0; i < n; i += 250) {
		Parley__Billing__V1__DeliverEventsRequest in =
		        PARLEY__BILLING__V1__DELIVER_EVENTS_REQUEST__INIT;
		Parley__Billing__V1__DeliverEventsResponse *out = NULL;
		Parley__Rpc__V1__Event ev[250], *evs[250];
		Parley__Rpc__V1__Json pay = PARLEY__RPC__V1__JSON__INIT;
		char ids[250][PL_UUID_STRLEN + 1];
		int k = 0;
		pay.text = payload;
		for (; k < 250 && i + k < n; k++) {
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

int
main(int argc, char **argv)
{
	pgh pg;
	char admin_url[PGH_URL_MAX], listen[64], err[256];
	char sql[512], q[256];
	pl_rpc_server *srv;
	pl_rpc_server_config rc = { 0 };
	pl_rpc_client_config cc = { 0 };
	void *arg = NULL;
	pl_service_cfg cfg = { 0 };
	long allowed;
	long long counted, overs = 0;

	for (int i = 1; i + 1 < argc; i += 2) {
		if (strcmp(argv[i], "--seconds") == 0)
			seconds = atof(argv[i + 1]);
		else if (strcmp(argv[i], "--threads") == 0)
			threads = atoi(argv[i + 1]);
		else if (strcmp(argv[i], "--workers") == 0)
			workers = atoi(argv[i + 1]);
		else if (strcmp(argv[i], "--hot-limit") == 0)
			hot_limit = atoll(argv[i + 1]);
	}
	if (threads < 1 || threads > 256)
		threads = 16;
	pl_log_init("bench", PL_LOG_WARN);
	if (pgh_start(&pg) != 0) {
		fprintf(stderr, "bench_billing: no PostgreSQL\n");
		return 1;
	}
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

	snprintf(listen, sizeof(listen), "tcp://127.0.0.1:%d", free_port());
	cfg.database_url = db_url;
	cfg.secret = SECRET;
	if (pl_cfg_load(billing_service_def.cfg, err, sizeof(err)) != 0 ||
	    billing_service_def.init(&cfg, &arg) != PL_OK) {
		fprintf(stderr, "bench_billing: init failed\n");
		return 1;
	}
	rc.name = "billing";
	rc.listen = listen;
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
	cc.urls = listen;
	cc.secret = SECRET;
	cc.service = "bench";
	if (pl_rpc_client_open(&cli, &cc) != PL_OK)
		return 1;
	printf("bench_billing: %d client threads, %d server workers, %.1f s "
	       "per run, tcp loopback, %ld cores online\n",
	       threads, workers, seconds, sysconf(_SC_NPROCESSORS_ONLN));

	// (a) 1,000 distinct tenants.
	make_tenants(1000, "bench");
	allowed = run("(a) 1,000 tenants");
	counted = sql_int(admin_url, "SELECT coalesce(sum(used), 0) FROM "
	                             "billing.usage_counters WHERE "
	                             "period_kind = 'day'");
	if (counted != allowed)
		overs += counted > allowed ? counted - allowed : 0;
	printf("    counters %lld = allowed %ld: %s\n", counted, allowed,
	       counted == allowed ? "ok" : "MISMATCH");

	// (b) one hot tenant with a daily limit.
	free(tenants);
	make_tenants(1, "hot");
	allowed = run("(b) one hot tenant");
	snprintf(q, sizeof(q),
	         "SELECT coalesce(sum(used), 0) FROM billing.usage_counters "
	         "WHERE "
	         "tenant_id = '%s' AND period_kind = 'day'",
	         tenants[0]);
	counted = sql_int(admin_url, q);
	if (counted != allowed)
		overs += counted > allowed ? counted - allowed
		                           : allowed - counted;
	if (counted > hot_limit)
		overs += counted - hot_limit;
	printf("    counter %lld, allowed %ld, limit %lld\n", counted, allowed,
	       (long long)hot_limit);
	printf("over-admissions: %lld\n", overs);

	free(tenants);
	pl_rpc_client_close(cli);
	pl_rpc_server_close(srv);
	billing_service_def.stop(arg);
	billing_service_def.fini(arg);
	pl_cfg_free(billing_service_def.cfg);
	pgh_stop(&pg);
	return overs == 0 ? 0 : 2;
}
