// The gateway's HTTP throughput: keep-alive libcurl clients on threads
// against (a) a route answered by the gateway alone (404 from the router)
// and (b) GET /v1/billing/usage with a bearer token: auth cache + one RPC to
// an in-process fake billing over inproc://. Prints req/s and p50/p99.
//
//	bench_gateway [clients=8] [seconds=3] [http_threads=2]
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "gateway.h"
#include "parley/billing/v1/billing.pb-c.h"
#include "parley/tenants/v1/tenants.pb-c.h"
#include "pl/log.h"

#define SECRET  "bench-secret-0123456789abcdef"
#define MAX_LAT 4000000

static int
f_auth(pl_call *call, const void *vin, void *vout)
{
	Parley__Tenants__V1__AuthenticateResponse *out = vout;
	pl_principal *p = pl_arena_alloc(call->arena, sizeof(*p));

	(void)vin;
	parley__rpc__v1__principal__init(p);
	p->kind = PARLEY__RPC__V1__PRINCIPAL_KIND__PRINCIPAL_KIND_USER;
	p->role = PARLEY__RPC__V1__ROLE__ROLE_OWNER;
	p->tenant_id = "t1";
	p->user_id = "u1";
	out->principal = p;
	out->tenant_status =
	        PARLEY__TENANTS__V1__TENANT_STATUS__TENANT_STATUS_ACTIVE;
	out->cache_ttl_ms = 1000;
	return PL_OK;
}

static int
f_usage(pl_call *call, const void *vin, void *vout)
{
	Parley__Billing__V1__GetUsageResponse *out = vout;

	(void)call;
	(void)vin;
	out->plan = "starter";
	return PL_OK;
}

static int
f_none(pl_call *call, const void *in, void *out)
{
	(void)in;
	(void)out;
	return pl_call_error(call, PL_UNIMPLEMENTED, "not here");
}

static pl_rpc_server *
fake(const ProtobufCServiceDescriptor *sd, const char *url, const char *name,
     pl_rpc_handler h, pl_rpc_method **tab, pl_rpc_service *svc)
{
	pl_rpc_server *s;
	const pl_rpc_service *list[2] = { svc, NULL };
	pl_rpc_server_config sc = {
		.name = "fake", .listen = url, .workers = 2, .secret = SECRET
	};

	*tab = calloc(sd->n_methods + 1, sizeof(pl_rpc_method));
	for (unsigned m = 0; m < sd->n_methods; m++) {
		(*tab)[m].name = sd->methods[m].name;
		(*tab)[m].handler =
		        strcmp(sd->methods[m].name, name) == 0 ? h : f_none;
		(*tab)[m].access = PL_CALLER_PUBLIC;
	}
	svc->desc = sd;
	svc->methods = *tab;
	if (pl_rpc_server_open(&s, &sc, list) != 0 ||
	    pl_rpc_server_start(s) != 0) {
		fprintf(stderr, "cannot start fake %s\n", sd->name);
		exit(1);
	}
	return s;
}

typedef struct worker {
	pthread_t t;
	const char *url;
	int64_t until;
	long n, errors;
	uint32_t *lat_us; // per request
} worker;

static size_t
sink(char *p, size_t sz, size_t n, void *arg)
{
	(void)p;
	(void)arg;
	return sz * n;
}

static void *
run(void *arg)
{
	worker *w = arg;
	CURL *c = curl_easy_init();
	struct curl_slist *h =
	        curl_slist_append(NULL, "Authorization: Bearer tok");

	curl_easy_setopt(c, CURLOPT_URL, w->url);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, sink);
	curl_easy_setopt(c, CURLOPT_TCP_NODELAY, 1L);
	while (pl_now_ns() < w->until && w->n < MAX_LAT) {
		int64_t t0 = pl_now_ns();
		long st = 0;
		if (curl_easy_perform(c) != CURLE_OK)
			w->errors++;
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &st);
		if (st != 200 && st != 404)
			w->errors++;
		w->lat_us[w->n++] = (uint32_t)((pl_now_ns() - t0) / 1000);
	}
	curl_slist_free_all(h);
	curl_easy_cleanup(c);
	return NULL;
}

static int
cmp(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

static void
measure(const char *label, const char *url, int clients, int secs)
{
	worker *ws = calloc((size_t)clients, sizeof(*ws));
	int64_t t0 = pl_now_ns();
	long total = 0, errors = 0;
	uint32_t *all;
	size_t k = 0;
	double el;

	for (int i = 0; i < clients; i++) {
		ws[i].url = url;
		ws[i].until = t0 + (int64_t)secs * 1000000000LL;
		ws[i].lat_us = malloc(MAX_LAT * sizeof(uint32_t));
		pthread_create(&ws[i].t, NULL, run, &ws[i]);
	}
	for (int i = 0; i < clients; i++) {
		pthread_join(ws[i].t, NULL);
		total += ws[i].n;
		errors += ws[i].errors;
	}
	el = (double)(pl_now_ns() - t0) / 1e9;
	all = malloc((size_t)total * sizeof(uint32_t) + 1);
	for (int i = 0; i < clients; i++) {
		memcpy(all + k, ws[i].lat_us,
		       (size_t)ws[i].n * sizeof(uint32_t));
		k += (size_t)ws[i].n;
		free(ws[i].lat_us);
	}
	qsort(all, k, sizeof(uint32_t), cmp);
	printf("%-44s %9.0f req/s  p50 %6.3f ms  p99 %6.3f ms  (%ld "
	       "requests, %ld errors, %d clients)\n",
	       label, (double)total / el, k ? all[k / 2] / 1000.0 : 0,
	       k ? all[k * 99 / 100] / 1000.0 : 0, total, errors, clients);
	free(all);
	free(ws);
}

int
main(int argc, char **argv)
{
	int clients = argc > 1 ? atoi(argv[1]) : 8;
	int secs = argc > 2 ? atoi(argv[2]) : 3;
	int threads = argc > 3 ? atoi(argv[3]) : 2;
	pl_rpc_method *t1, *t2;
	pl_rpc_service s1, s2;
	pl_rpc_server *a, *b;
	gw_config cfg = { 0 };
	gw *g;
	char url[128];

	pl_log_init("bench-gateway", PL_LOG_ERROR);
	curl_global_init(CURL_GLOBAL_DEFAULT);
	a = fake(&parley__tenants__v1__tenants__descriptor,
	         "inproc://bench-tenants", "Authenticate", f_auth, &t1, &s1);
	b = fake(&parley__billing__v1__billing__descriptor,
	         "inproc://bench-billing", "GetUsage", f_usage, &t2, &s2);
	cfg.bind = "127.0.0.1";
	cfg.secret = SECRET;
	cfg.urls[GW_TENANTS] = "inproc://bench-tenants";
	cfg.urls[GW_BILLING] = "inproc://bench-billing";
	cfg.max_body = 1 << 20;
	cfg.threads = threads;
	cfg.timeout_s = 30;
	cfg.rpc_timeout = 5000;
	cfg.auth_ttl = 1000;
	cfg.api_key_rps = 20;
	if (gw_open(&g, &cfg) != 0 || gw_start(g) != 0)
		return 1;
	printf("gateway: %d HTTP threads; clients: %d keep-alive libcurl "
	       "threads; %d s each\n",
	       threads, clients, secs);
	snprintf(url, sizeof(url), "http://127.0.0.1:%u/v1/nothing",
	         gw_port(g));
	measure("GET /v1/nothing (router 404, no RPC)", url, clients, secs);
	snprintf(url, sizeof(url), "http://127.0.0.1:%u/v1/billing/usage",
	         gw_port(g));
	measure("GET /v1/billing/usage (auth cache + 1 RPC)", url, clients,
	        secs);
	gw_close(g);
	pl_rpc_server_close(a);
	pl_rpc_server_close(b);
	free(t1);
	free(t2);
	curl_global_cleanup();
	return 0;
}
