// Authenticate over RPC (tcp loopback): its own PostgreSQL cluster, 10k
// valid API keys, 16 client threads for a few seconds; prints calls/s and
// p99, then checks that a key revoked behind the service's back (as by
// another replica) stops working within one second.
//
//	bench_tenants [seconds=5] [keys=10000] [threads=16] [workers=4]
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "svch.h"
#include "tenants.h"

#define M(x) "/parley.tenants.v1.Tenants/" x

static char (*keys)[TENANTS_SECRET_LEN + 1];
static int nkeys, seconds = 5;
static pl_rpc_client *cli;

typedef struct worker {
	pthread_t t;
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

static void *
run(void *arg)
{
	worker *w = arg;
	int64_t end = pl_now_ns() + (int64_t)seconds * 1000000000;
	pl_arena a;

	pl_arena_init(&a, 0, 0);
	while (pl_now_ns() < end) {
		int64_t t0 = pl_now_ns();
		if (auth(&a, keys[rand_r(&w->seed) % nkeys]) != 0)
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

static int
cmp64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return x < y ? -1 : x > y;
}

static int
sql(const char *url, const char *q, int n, const char *const *p)
{
	PGconn *c = PQconnectdb(url);
	PGresult *r = PQexecParams(c, q, n, NULL, p, NULL, NULL, 0);
	int ok = PQresultStatus(r) == PGRES_COMMAND_OK ||
	         PQresultStatus(r) == PGRES_TUPLES_OK;
	if (!ok)
		fprintf(stderr, "bench: %s\n", PQerrorMessage(c));
	PQclear(r);
	PQfinish(c);
	return ok ? 0 : -1;
}

int
main(int argc, char **argv)
{
	static pgh pg;
	static svch h;
	int nthreads = 16, workers = 4;
	pl_rpc_server *srv;
	pl_rpc_server_config rc = { 0 };
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
	if (pgh_start(&pg) != 0 ||
	    svch_start(&h, &pg, &tenants_service_def, 1, env) != 0) {
		fprintf(stderr, "bench: could not start PostgreSQL/service\n");
		return 1;
	}
	// A tenant through the RPC, then 10k keys straight into the table.
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
		*hp++ = i ? ',' : '\0';
		if (!i)
			hp--;
		sodium_bin2hex(hp, 65, hash, sizeof(hash));
		hp += 64;
	}
	strcpy(pp, "}");
	strcpy(hp, "}");
	const char *p[] = { so->tenant->id, pref, hex };
	if (sql(h.admin_url,
	        "INSERT INTO tenants.api_keys (tenant_id, id, name, prefix, "
	        "key_hash, scopes, role) SELECT $1, gen_random_uuid(), "
	        "'bench', "
	        "u.p, decode(u.h, 'hex'), '{messages:write}', 'admin' FROM "
	        "unnest($2::text[], $3::text[]) AS u(p, h)",
	        3, p) != 0)
		return 1;
	free(pref);
	free(hex);

	// The real server on tcp loopback.
	snprintf(addr, sizeof(addr), "tcp://127.0.0.1:%d",
	         20000 + getpid() % 20000);
	rc.name = "tenants";
	rc.listen = addr;
	rc.workers = workers;
	rc.secret = SVCH_SECRET;
	rc.arg = h.arg;
	rc.worker_arg = h.db_url;
	rc.worker_init = NULL;
	extern int bench_worker_init(void *, int, void **);
	extern void bench_worker_fini(void *, void *);
	rc.worker_init = bench_worker_init;
	rc.worker_fini = bench_worker_fini;
	if (pl_rpc_server_open(&srv, &rc, tenants_service_def.services) != 0 ||
	    pl_rpc_server_start(srv) != 0) {
		fprintf(stderr, "bench: could not listen on %s\n", addr);
		return 1;
	}
	cc.urls = addr;
	cc.secret = SVCH_SECRET;
	cc.service = "bench";
	cc.timeout_ms = 5000;
	pl_rpc_client_open(&cli, &cc);

	worker *w = calloc((size_t)nthreads, sizeof(*w));
	for (int i = 0; i < nthreads; i++) {
		w[i].seed = (unsigned)(i * 7919 + 1);
		pthread_create(&w[i].t, NULL, run, &w[i]);
	}
	size_t total = 0;
	int errors = 0;
	for (int i = 0; i < nthreads; i++) {
		pthread_join(w[i].t, NULL);
		total += w[i].n;
		errors += w[i].errors;
	}
	int64_t *all = malloc(total * sizeof(int64_t));
	size_t k = 0;
	for (int i = 0; i < nthreads; i++) {
		memcpy(all + k, w[i].lat, w[i].n * sizeof(int64_t));
		k += w[i].n;
		free(w[i].lat);
	}
	qsort(all, total, sizeof(int64_t), cmp64);
	printf("authenticate: %d keys, %d clients, %d workers, %ds\n", nkeys,
	       nthreads, workers, seconds);
	printf("calls/s: %.0f\n", (double)total / seconds);
	printf("p50: %.3f ms  p99: %.3f ms  max: %.3f ms  errors: %d\n",
	       all[total / 2] / 1e6, all[total * 99 / 100] / 1e6,
	       all[total - 1] / 1e6, errors);
	free(all);

	// Revocation behind the process's back (another replica's doing):
	// the cached answer must stop within one second.
	pl_arena a;
	pl_arena_init(&a, 0, 0);
	if (auth(&a, keys[0]) != 0)
		printf("revocation: key 0 did not authenticate before\n");
	char pre0[16];
	memcpy(pre0, keys[0] + 3, TENANTS_PREFIX_LEN);
	pre0[TENANTS_PREFIX_LEN] = '\0';
	const char *rp[] = { pre0 };
	sql(h.admin_url,
	    "UPDATE tenants.api_keys SET revoked_at = now() WHERE prefix = $1",
	    1, rp);
	int64_t t0 = pl_now_ns(), dt;
	while (auth(&a, keys[0]) == 0 && pl_now_ns() - t0 < 3000000000LL)
		pl_arena_reset(&a);
	dt = pl_now_ns() - t0;
	printf("revocation: refused after %.0f ms (%s)\n", dt / 1e6,
	       dt <= 1000000000LL ? "within 1 s" : "TOO LATE");
	pl_arena_fini(&a);

	pl_rpc_client_close(cli);
	pl_rpc_server_close(srv);
	svch_stop(&h);
	pgh_stop(&pg);
	free(keys);
	free(w);
	return 0;
}

int
bench_worker_init(void *arg, int idx, void **state)
{
	pl_worker *w = malloc(sizeof(*w));
	if (w == NULL || pl_worker_open(w, arg) != PL_OK) {
		free(w);
		return PL_RESOURCE_EXHAUSTED;
	}
	w->idx = idx;
	*state = w;
	return PL_OK;
}

void
bench_worker_fini(void *arg, void *state)
{
	(void)arg;
	pl_worker_close(state);
	free(state);
}
