// Analytics bench: (a) Track intake over RPC in batches of 5,000 beside a
// raw COPY of the same rows into a same-shaped table; (b) Summary over 30
// days and TimeSeries by hour over 7 days, p95, on the data of (a) spread
// over 90 days and 100 tenants.
//   bench_analytics [--events N] [--queries Q] [--clients C] [--workers W]
// C client threads (default 4) send batches to W service workers (default
// 2). BENCH_EXPLAIN=1 logs the plans of statements over 20 ms
// (auto_explain, EXPLAIN ANALYZE) to /tmp/an_explain.log.
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "analytics.h"
#include "pl/id.h"
#include "svch.h"

#define BATCH   5000
#define TENANTS 100

static const char *types[] = { "message.received",     "message.received",
	                       "message.sent",         "message.sent",
	                       "message.status",       "agent.replied",
	                       "conversation.started", "conversation.closed",
	                       "lead.created",         "order.created" };
static const char *payloads[] = {
	"{\"message_id\":\"m\",\"type\":\"text\"}",
	"{\"message_id\":\"m\",\"type\":\"text\"}",
	"{\"sender\":\"bot\",\"response_ms\":850,\"type\":\"text\"}",
	"{\"sender\":\"human\",\"type\":\"text\"}",
	"{\"status\":\"delivered\"}",
	"{\"tokens_in\":120,\"tokens_out\":40,\"engine\":\"retrieval\","
	"\"model\":\"m1\",\"intent\":\"price\"}",
	"{}",
	"{\"handed_over\":false}",
	"{\"lead_id\":\"x\"}",
	"{\"total_minor\":1000,\"currency\":\"BRL\"}"
};

static char tenants[TENANTS][37], channels[TENANTS][37];
static int64_t now_us;
static svch h;
static long n_events;

typedef struct gen {
	Parley__Rpc__V1__Event ev[BATCH];
	Parley__Rpc__V1__Event *pev[BATCH];
	Parley__Rpc__V1__EventDimensions d[BATCH];
	Parley__Rpc__V1__Json j[BATCH];
	char id[BATCH][37], at[BATCH][32], contact[BATCH][37];
	char line[BATCH * 300];
} gen;

static void
fill(gen *g, long first, unsigned *seed)
{
	for (int i = 0; i < BATCH; i++) {
		long k = first + i;
		int t = (int)(k % TENANTS), ty = rand_r(seed) % 10;
		// Spread over 90 days, newest last.
		int64_t back =
		        (int64_t)((n_events - k) * (90.0 * 86400e6 / n_events));
		parley__rpc__v1__event__init(&g->ev[i]);
		parley__rpc__v1__event_dimensions__init(&g->d[i]);
		parley__rpc__v1__json__init(&g->j[i]);
		pl_uuid7_str(g->id[i]);
		analytics_time_format_ms(now_us - back - 60000000, g->at[i]);
		snprintf(g->contact[i], 37, "0190a000-0000-7000-8000-%012d",
		         rand_r(seed) % 5000);
		g->ev[i].id = g->id[i];
		g->ev[i].tenant_id = tenants[t];
		g->ev[i].type = (char *)types[ty];
		g->ev[i].occurred_at = g->at[i];
		g->ev[i].source = "bench";
		g->d[i].channel_id = channels[t];
		g->d[i].contact_id = g->contact[i];
		g->j[i].text = (char *)payloads[ty];
		g->ev[i].dimensions = &g->d[i];
		g->ev[i].payload = &g->j[i];
		g->pev[i] = &g->ev[i];
	}
}

static long next_batch;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static FILE *copyf;

static void *
sender(void *arg)
{
	gen *g = malloc(sizeof(*g));
	unsigned seed = (unsigned)(uintptr_t)arg;
	pl_arena a;
	pl_arena_init(&a, 0, 0);
	for (;;) {
		pthread_mutex_lock(&mu);
		long first = next_batch;
		next_batch += BATCH;
		pthread_mutex_unlock(&mu);
		if (first >= n_events)
			break;
		fill(g, first, &seed);
		// The same rows for the COPY that follows, built here and
		// written at once.
		size_t len = 0;
		for (int i = 0; i < BATCH; i++) {
			int w = snprintf(
			        g->line + len, sizeof(g->line) - len,
			        "%s\t%s\t%s\t%s\tbench\t%s\t\\N\t\\N\t\\N\t%"
			        "s\t\\N\t%s\t1\n",
			        g->ev[i].tenant_id, g->ev[i].occurred_at,
			        g->ev[i].id, g->ev[i].type, g->d[i].channel_id,
			        g->d[i].contact_id, g->j[i].text);
			if (w > 0 && (size_t)w < sizeof(g->line) - len)
				len += (size_t)w;
		}
		pthread_mutex_lock(&mu);
		fwrite(g->line, 1, len, copyf);
		pthread_mutex_unlock(&mu);
		Parley__Analytics__V1__TrackRequest in =
		        PARLEY__ANALYTICS__V1__TRACK_REQUEST__INIT;
		Parley__Analytics__V1__TrackResponse *out = NULL;
		pl_principal svc = svch_service();
		pl_rpc_opts o = { .principal = &svc, .timeout_ms = 60000 };
		in.events = g->pev;
		in.n_events = BATCH;
		int rc = pl_rpc_call(
		        h.cli, "/parley.analytics.v1.Analytics/Track", &in.base,
		        &parley__analytics__v1__track_response__descriptor,
		        (void **)&out, &a, &o, NULL);
		if (rc != PL_OK)
			fprintf(stderr, "track failed: %d\n", rc);
		pl_arena_reset(&a);
	}
	pl_arena_fini(&a);
	free(g);
	return NULL;
}

static double
now_s(void)
{
	return (double)pl_now_ns() / 1e9;
}

static int
cmpd(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

int
main(int argc, char **argv)
{
	static pgh pg;
	int queries = 200, clients = 4, workers = 2;
	n_events = 200000;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--events") == 0 && i + 1 < argc)
			n_events = atol(argv[++i]);
		else if (strcmp(argv[i], "--queries") == 0 && i + 1 < argc)
			queries = atoi(argv[++i]);
		else if (strcmp(argv[i], "--clients") == 0 && i + 1 < argc)
			clients = atoi(argv[++i]);
		else if (strcmp(argv[i], "--workers") == 0 && i + 1 < argc)
			workers = atoi(argv[++i]);
	}
	n_events = (n_events + BATCH - 1) / BATCH * BATCH;
	if (pgh_start(&pg) != 0) {
		fprintf(stderr, "no PostgreSQL\n");
		return 1;
	}
	// The same server for the RPC intake and the COPY: room for the
	// indexes of a few million events, no commit waits, no checkpoint
	// storm in the middle of a run.
	pgh_exec(&pg, "ALTER SYSTEM SET shared_buffers = '512MB'");
	pgh_exec(&pg, "ALTER SYSTEM SET max_wal_size = '8GB'");
	pgh_exec(&pg, "ALTER SYSTEM SET checkpoint_timeout = '30min'");
	if (pgh_restart(&pg) != 0) {
		fprintf(stderr, "could not restart PostgreSQL\n");
		return 1;
	}
	pgh_exec(&pg, "ALTER SYSTEM SET synchronous_commit = off");
	if (getenv("BENCH_EXPLAIN") != NULL) {
		pgh_exec(&pg, "ALTER SYSTEM SET session_preload_libraries ="
		              " 'auto_explain'");
		pgh_exec(&pg, "SELECT pg_reload_conf()");
		pgh_exec(&pg,
		         "ALTER SYSTEM SET auto_explain.log_min_duration = 20");
		pgh_exec(&pg, "ALTER SYSTEM SET auto_explain.log_analyze = on");
	}
	pgh_exec(&pg, "SELECT pg_reload_conf()");
	if (clients < 1 || clients > 32 || workers < 1 || workers > 32) {
		fprintf(stderr, "--clients and --workers: 1..32\n");
		return 1;
	}
	if (svch_start(&h, &pg, &analytics_service_def, workers, NULL) != 0)
		return 1;
	now_us = analytics_now_us();
	for (int t = 0; t < TENANTS; t++) {
		pl_uuid7_str(tenants[t]);
		pl_uuid7_str(channels[t]);
	}
	copyf = tmpfile();

	// (a) intake over RPC.
	double t0 = now_s();
	pthread_t th[32];
	for (int i = 0; i < clients; i++)
		pthread_create(&th[i], NULL, sender,
		               (void *)(uintptr_t)(i + 1));
	for (int i = 0; i < clients; i++)
		pthread_join(th[i], NULL);
	double rpc_s = now_s() - t0;

	// The same rows by COPY into a same-shaped (partitioned, same key)
	// table.
	PGconn *c = PQconnectdb(h.db_url);
	PQclear(PQexec(
	        c, "CREATE TABLE analytics.events_copy (LIKE analytics.events"
	           " INCLUDING DEFAULTS) PARTITION BY RANGE (occurred_at);"
	           " ALTER TABLE analytics.events_copy ADD PRIMARY KEY"
	           " (tenant_id, occurred_at, id)"));
	PGresult *r =
	        PQexec(c, "SELECT name, month FROM analytics.event_partitions");
	for (int i = 0; i < PQntuples(r); i++) {
		char sql[512];
		snprintf(sql, sizeof(sql),
		         "CREATE TABLE analytics.c_%s PARTITION OF "
		         "analytics.events_copy"
		         " FOR VALUES FROM ('%s') TO (('%s'::date + interval "
		         "'1 month'))",
		         PQgetvalue(r, i, 0), PQgetvalue(r, i, 1),
		         PQgetvalue(r, i, 1));
		PQclear(PQexec(c, sql));
	}
	PQclear(r);
	rewind(copyf);
	t0 = now_s();
	PQclear(PQexec(
	        c, "COPY analytics.events_copy (tenant_id, occurred_at, id,"
	           " type, source, channel_id, agent_id, campaign_id,"
	           " conversation_id, contact_id, user_id, payload, version)"
	           " FROM STDIN"));
	char buf[65536];
	size_t n;
	while ((n = fread(buf, 1, sizeof(buf), copyf)) > 0)
		PQputCopyData(c, buf, (int)n);
	PQputCopyEnd(c, NULL);
	r = PQgetResult(c);
	if (PQresultStatus(r) != PGRES_COMMAND_OK)
		fprintf(stderr, "copy: %s\n", PQresultErrorMessage(r));
	PQclear(r);
	double copy_s = now_s() - t0;
	PQclear(PQexec(c, "SET parley.tenant_id = '*'"));
	r = PQexec(c, "SELECT 0, count(*) FROM analytics.events");
	printf("events stored: %s of %ld\n", PQgetvalue(r, 0, 1), n_events);
	PQclear(r);
	printf("(a) intake over RPC: %ld events in %.2f s = %.0f events/s"
	       " (batches of %d, %d clients, %d workers)\n",
	       n_events, rpc_s, n_events / rpc_s, BATCH, clients, workers);
	printf("    raw COPY:        %ld rows in %.2f s = %.0f rows/s\n",
	       n_events, copy_s, n_events / copy_s);
	printf("    ratio RPC/COPY:  %.2f (targets: >= 50000 events/s, >= "
	       "0.25)\n",
	       copy_s / rpc_s);
	PQclear(PQexec(c,
	               "ANALYZE analytics.events, analytics.daily_rollups,"
	               " analytics.daily_contacts, analytics.response_times"));
	PQfinish(c);

	// (b) queries.
	double *lat = calloc((size_t)queries, sizeof(double));
	int64_t day = 86400LL * 1000000;
	for (int kind = 0; kind < 2; kind++) {
		for (int q = 0; q < queries; q++) {
			char a[32], b[32];
			pl_principal p =
			        svch_user(tenants[q % TENANTS], channels[0], 1);
			int64_t end = (now_us / day - (q % 30)) * day;
			analytics_time_format_ms(
			        end - (kind == 0 ? 30 : 7) * day, a);
			analytics_time_format_ms(end, b);
			double s = now_s();
			int rc;
			if (kind == 0) {
				Parley__Analytics__V1__SummaryRequest in =
				        PARLEY__ANALYTICS__V1__SUMMARY_REQUEST__INIT;
				void *out;
				in.start_at = a;
				in.end_at = b;
				rc = svch_call(
				        &h,
				        "/parley.analytics.v1.Analytics/"
				        "Summary",
				        &p, &in.base,
				        &parley__analytics__v1__summary_response__descriptor,
				        &out, NULL);
			} else {
				Parley__Analytics__V1__TimeSeriesRequest in =
				        PARLEY__ANALYTICS__V1__TIME_SERIES_REQUEST__INIT;
				void *out;
				in.start_at = a;
				in.end_at = b;
				in.metric =
				        PARLEY__ANALYTICS__V1__METRIC__METRIC_MESSAGES_IN;
				in.granularity =
				        PARLEY__ANALYTICS__V1__GRANULARITY__GRANULARITY_HOUR;
				rc = svch_call(
				        &h,
				        "/parley.analytics.v1.Analytics/"
				        "TimeSeries",
				        &p, &in.base,
				        &parley__analytics__v1__time_series_response__descriptor,
				        &out, NULL);
			}
			lat[q] = (now_s() - s) * 1000;
			if (rc != PL_OK)
				fprintf(stderr, "query failed: %d\n", rc);
			pl_arena_reset(&h.arena);
		}
		qsort(lat, (size_t)queries, sizeof(double), cmpd);
		printf("(b) %s: p50 %.2f ms, p95 %.2f ms over %d calls (%ld "
		       "events,"
		       " %d tenants, 90 days; target %s)\n",
		       kind == 0 ? "Summary 30 days" : "TimeSeries hour 7 days",
		       lat[queries / 2], lat[queries * 95 / 100], queries,
		       n_events, TENANTS, kind == 0 ? "<= 20 ms" : "<= 50 ms");
	}
	free(lat);
	fclose(copyf);
	svch_stop(&h);
	if (getenv("BENCH_EXPLAIN") != NULL) {
		char cmd[200];
		snprintf(cmd, sizeof(cmd),
		         "cp %s/server.log /tmp/an_explain.log", pg.dir);
		if (system(cmd) != 0)
			fprintf(stderr, "could not copy the server log\n");
	}
	pgh_stop(&pg);
	return 0;
}
