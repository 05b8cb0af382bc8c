// Authenticate over RPC on tcp loopback (issue 3's target: 16 concurrent
// clients, 10k valid API keys, >= 10,000 calls/s and p99 <= 2 ms on 2
// cores, revocation seen within 1 s). Its own PostgreSQL cluster, the
// service through svch with the change feed's poller started (def->start),
// the keys written straight into the table. Each phase runs `rounds` times
// and prints every round and the median round (by calls/s):
//
//   health      Health/Check: the RPC runtime's own ceiling on this run
//   auth        Authenticate, keys picked uniformly, after one warm-up
//               pass over every key; in the middle of each round a key is
//               revoked behind the service's back (SQL, as another replica
//               would) and the time until it is refused is measured
//   auth-db     the same with the poller stopped, so the cache never
//               answers: the database path every call
//
//	bench_tenants [seconds=5] [keys=10000] [threads=16] [workers=4]
//	              [rounds=3] [conns=0: the client default]
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "parley/rpc/v1/health.pb-c.h"
#include "svch.h"
#include "tenants.h"

#define M(x) "/parley.tenants.v1.Tenants/" x

static char (*keys)[TENANTS_SECRET_LEN + 1];
static int nkeys, seconds = 5;
static pl_rpc_client *cli;
static const char *admin_url;

enum { PH_HEALTH, PH_AUTH, PH_AUTH_DB };
static const char *const phase_names[] = { "health", "auth", "auth-db" };

typedef struct worker {
	pthread_t t;
	int phase;
	int64_t *lat;
	size_t n, cap;
	int errors;
	unsigned seed;
} worker;

static int
auth(pl_arena *a, const char *key)
{
	Parley__Tenants__V1__AuthenticateRequest in =
	        PARLEY__TENANTS__V1__AUTHENTICATE_REQUEST__INIT;
	void *out;
	pl_rpc_opts o = { 0 };
	in.token = (char *)key;
	return pl_rpc_call(
	        cli, M("Authenticate"), &in.base,
	        &parley__tenants__v1__authenticate_response__descriptor, &out,
	        a, &o, NULL);
}

static int
health(pl_arena *a)
{
	Parley__Rpc__V1__HealthCheckRequest in =
	        PARLEY__RPC__V1__HEALTH_CHECK_REQUEST__INIT;
	void *out;
	pl_rpc_opts o = { 0 };
	return pl_rpc_call(cli, "/parley.rpc.v1.Health/Check", &in.base,
	                   &parley__rpc__v1__health_check_response__descriptor,
	                   &out, a, &o, NULL);
}

static void *
run(void *arg)
{
	worker *w = arg;
	int64_t end = pl_now_ns() + (int64_t)seconds * 1000000000;
	pl_arena a;

	pl_arena_init(&a, 0, 0);
	while (pl_now_ns() < end) {
		int64_t t0 = pl_now_ns();
		int rc;
		if (w->phase == PH_HEALTH)
			rc = health(&a);
		else // keys[0] is the monitor's, revoked mid-round
			rc = auth(&a, keys[1 + rand_r(&w->seed) % (nkeys - 1)]);
		if (rc != 0)
			w->errors++;
		pl_arena_reset(&a);
		if (w->n == w->cap) {
			w->cap = w->cap ? w->cap * 2 : 65536;
			w->lat = realloc(w->lat, w->cap * sizeof(int64_t));
		}
		w->lat[w->n++] = pl_now_ns() - t0;
	}
	pl_arena_fini(&a);
	return NULL;
}

typedef struct warm {
	int from, step, bad;
} warm;

static void *
warm_up(void *arg)
{
	warm *w = arg;
	pl_arena a;
	pl_arena_init(&a, 0, 0);
	for (int i = w->from; i < nkeys; i += w->step) {
		w->bad += auth(&a, keys[i]) != 0;
		pl_arena_reset(&a);
	}
	pl_arena_fini(&a);
	return NULL;
}

static int
cmp64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return x < y ? -1 : x > y;
}

static int
sql(const char *q, int n, const char *const *p)
{
	PGconn *c = PQconnectdb(admin_url);
	PGresult *r = PQexecParams(c, q, n, NULL, p, NULL, NULL, 0);
	int ok = PQresultStatus(r) == PGRES_COMMAND_OK ||
	         PQresultStatus(r) == PGRES_TUPLES_OK;
	if (!ok)
		fprintf(stderr, "bench: %s\n", PQerrorMessage(c));
	PQclear(r);
	PQfinish(c);
	return ok ? 0 : -1;
}

// Revokes keys[0] by SQL (the triggers log it) half-way through a round
// and measures how long until Authenticate refuses it.
typedef struct monitor {
	pthread_t t;
	double ms; // -1: never refused within 3 s
} monitor;

static void *
revoke_mid_round(void *arg)
{
	monitor *m = arg;
	pl_arena a;
	char pre[16];
	const char *p[] = { pre };

	pl_arena_init(&a, 0, 0);
	usleep((useconds_t)seconds * 500000);
	memcpy(pre, keys[0] + 3, TENANTS_PREFIX_LEN);
	pre[TENANTS_PREFIX_LEN] = '\0';
	sql("UPDATE tenants.api_keys SET revoked_at = NULL WHERE prefix = $1",
	    1, p);
	// Valid again (rounds after the first), and cached again.
	int64_t t0 = pl_now_ns();
	while (auth(&a, keys[0]) != 0 && pl_now_ns() - t0 < 3000000000LL) {
		pl_arena_reset(&a);
		usleep(1000);
	}
	pl_arena_reset(&a);
	auth(&a, keys[0]);
	pl_arena_reset(&a);
	sql("UPDATE tenants.api_keys SET revoked_at = now() WHERE prefix = $1",
	    1, p);
	t0 = pl_now_ns();
	m->ms = -1;
	while (pl_now_ns() - t0 < 3000000000LL) {
		if (auth(&a, keys[0]) == PL_UNAUTHENTICATED) {
			m->ms = (double)(pl_now_ns() - t0) / 1e6;
			break;
		}
		pl_arena_reset(&a);
		usleep(1000);
	}
	pl_arena_fini(&a);
	return NULL;
}

typedef struct result {
	double rate, p50, p99, max, revoke_ms;
	int errors;
} result;

static result
round_run(int phase, int nthreads)
{
	worker *w = calloc((size_t)nthreads, sizeof(*w));
	monitor mon = { .ms = -2 };
	result res = { 0 };
	size_t total = 0, k = 0;

	if (phase == PH_AUTH)
		pthread_create(&mon.t, NULL, revoke_mid_round, &mon);
	for (int i = 0; i < nthreads; i++) {
		w[i].phase = phase;
		w[i].seed = (unsigned)(i * 7919 + 1 + rand());
		pthread_create(&w[i].t, NULL, run, &w[i]);
	}
	for (int i = 0; i < nthreads; i++) {
		pthread_join(w[i].t, NULL);
		total += w[i].n;
		res.errors += w[i].errors;
	}
	if (phase == PH_AUTH)
		pthread_join(mon.t, NULL);
	int64_t *all = malloc((total ? total : 1) * sizeof(int64_t));
	for (int i = 0; i < nthreads; i++) {
		memcpy(all + k, w[i].lat, w[i].n * sizeof(int64_t));
		k += w[i].n;
		free(w[i].lat);
	}
	free(w);
	qsort(all, total, sizeof(int64_t), cmp64);
	if (total > 0) {
		res.rate = (double)total / seconds;
		res.p50 = all[total / 2] / 1e6;
		res.p99 = all[total * 99 / 100] / 1e6;
		res.max = all[total - 1] / 1e6;
	}
	res.revoke_ms = mon.ms;
	free(all);
	return res;
}

static int
cmp_rate(const void *a, const void *b)
{
	double x = ((const result *)a)->rate, y = ((const result *)b)->rate;
	return x < y ? -1 : x > y;
}

static void
print(const char *what, const result *r)
{
	printf("  %-8s %8.0f calls/s  p50 %6.3f ms  p99 %6.3f ms  max "
	       "%7.3f ms  errors %d",
	       what, r->rate, r->p50, r->p99, r->max, r->errors);
	if (r->revoke_ms >= 0)
		printf("  revoked-by-SQL refused after %.0f ms", r->revoke_ms);
	else if (r->revoke_ms == -1)
		printf("  revoked-by-SQL NOT refused within 3 s");
	printf("\n");
}

static void
phase(int ph, int rounds, int nthreads)
{
	result *r = calloc((size_t)rounds, sizeof(*r));
	char name[32];

	printf("%s:\n", phase_names[ph]);
	for (int i = 0; i < rounds; i++) {
		r[i] = round_run(ph, nthreads);
		snprintf(name, sizeof(name), "round %d", i + 1);
		print(name, &r[i]);
		fflush(stdout);
	}
	qsort(r, (size_t)rounds, sizeof(*r), cmp_rate);
	print("median", &r[rounds / 2]);
	free(r);
}

int
main(int argc, char **argv)
{
	static pgh pg;
	static svch h;
	int nthreads = 16, workers = 4, rounds = 3, conns = 0;
	pl_rpc_client_config cc = { 0 };
	char addr[64], prefix[16];
	uint8_t hash[TENANTS_HASH_LEN];
	const char *const env[] = { "PARLEY_TENANTS_PWHASH_OPSLIMIT=1",
		                    "PARLEY_TENANTS_PWHASH_MEMLIMIT=65536",
		                    NULL };

	if (argc > 1)
		seconds = atoi(argv[1]);
	nkeys = argc > 2 ? atoi(argv[2]) : 10000;
	if (argc > 3)
		nthreads = atoi(argv[3]);
	if (argc > 4)
		workers = atoi(argv[4]);
	if (argc > 5)
		rounds = atoi(argv[5]);
	if (argc > 6)
		conns = atoi(argv[6]);
	if (seconds < 1 || nkeys < 2 || nthreads < 1 || workers < 1 ||
	    rounds < 1 || conns < 0) {
		fprintf(stderr, "usage: bench_tenants [seconds] [keys>=2] "
		                "[threads] [workers] [rounds] [conns]\n");
		return 2;
	}
	snprintf(addr, sizeof(addr), "tcp://127.0.0.1:%d",
	         20000 + getpid() % 20000);
	if (pgh_start(&pg) != 0 ||
	    svch_start_at(&h, &pg, &tenants_service_def, workers, env, addr) !=
	            0 ||
	    tenants_service_def.start(h.arg) != PL_OK) {
		fprintf(stderr, "bench: could not start PostgreSQL/service\n");
		return 1;
	}
	admin_url = h.admin_url;
	// A tenant through the RPC, then the keys straight into the table.
	Parley__Tenants__V1__SignUpRequest su =
	        PARLEY__TENANTS__V1__SIGN_UP_REQUEST__INIT;
	Parley__Tenants__V1__SignUpResponse *so;
	su.tenant_name = "Bench";
	su.email = "bench@example.com";
	su.password = "Bench-Password-1";
	su.full_name = "Bench";
	if (svch_call(&h, M("SignUp"), NULL, &su.base,
	              &parley__tenants__v1__sign_up_response__descriptor,
	              (void **)&so, NULL) != 0)
		return 1;
	keys = calloc((size_t)nkeys, sizeof(*keys));
	size_t cap = (size_t)nkeys * 80 + 16;
	char *pref = malloc(cap), *hex = malloc(cap);
	char *pp = pref, *hp = hex;
	*pp++ = '{';
	*hp++ = '{';
	for (int i = 0; i < nkeys; i++) {
		tenants_secret_new(TENANTS_SECRET_API_KEY, keys[i], prefix,
		                   hash);
		pp += sprintf(pp, "%s%s", i ? "," : "", prefix);
		if (i)
			*hp++ = ',';
		sodium_bin2hex(hp, 65, hash, sizeof(hash));
		hp += 64;
	}
	strcpy(pp, "}");
	strcpy(hp, "}");
	const char *p[] = { so->tenant->id, pref, hex };
	if (sql("INSERT INTO tenants.api_keys (tenant_id, id, name, prefix, "
	        "key_hash, scopes, role) SELECT $1, gen_random_uuid(), "
	        "'bench', u.p, decode(u.h, 'hex'), '{messages:write}', "
	        "'admin' FROM unnest($2::text[], $3::text[]) AS u(p, h)",
	        3, p) != 0)
		return 1;
	free(pref);
	free(hex);

	cc.urls = addr;
	cc.secret = SVCH_SECRET;
	cc.service = "bench";
	cc.timeout_ms = 5000;
	cc.conns = conns;
	if (pl_rpc_client_open(&cli, &cc) != PL_OK) {
		fprintf(stderr, "bench: no client for %s\n", addr);
		return 1;
	}
	printf("%d keys, %d clients, %d workers, %d conns, %d x %ds rounds, "
	       "%s\n",
	       nkeys, nthreads, workers, conns ? conns : 64, rounds, seconds,
	       addr);

	phase(PH_HEALTH, rounds, nthreads);
	// Warm-up: every key once (all clients in parallel), so rounds
	// measure the steady state.
	{
		int64_t t0 = pl_now_ns();
		pthread_t *t = calloc((size_t)nthreads, sizeof(*t));
		warm *wa = calloc((size_t)nthreads, sizeof(*wa));
		int bad = 0;
		for (int i = 0; i < nthreads; i++) {
			wa[i] = (warm){ i, nthreads, 0 };
			pthread_create(&t[i], NULL, warm_up, &wa[i]);
		}
		for (int i = 0; i < nthreads; i++) {
			pthread_join(t[i], NULL);
			bad += wa[i].bad;
		}
		free(t);
		free(wa);
		printf("warm-up: %d keys in %.0f ms (%d failed), cache %zu "
		       "entries\n",
		       nkeys, (pl_now_ns() - t0) / 1e6, bad,
		       tenants_cache_size(((tenants_state *)h.arg)->cache));
	}
	phase(PH_AUTH, rounds, nthreads);
	// The poller stopped: the cache goes stale at once, every call asks
	// the database (the pre-feed behaviour, ~all misses).
	tenants_service_def.stop(h.arg);
	phase(PH_AUTH_DB, rounds, nthreads);

	pl_rpc_client_close(cli);
	svch_stop(&h);
	pgh_stop(&pg);
	free(keys);
	return 0;
}
