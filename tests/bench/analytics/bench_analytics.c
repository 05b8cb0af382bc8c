// Analytics bench (issue 8):
// (a) Track intake over RPC of N events (default 2,000,000) in batches of
//     5,000 beside a raw COPY of the same rows into a same-shaped table, in
//     the same run; with the CPU the service process and the PostgreSQL
//     server spent per event on each, and the statements that took the
//     server's time (pg_stat_statements);
// (b) Summary over 30 days and TimeSeries by hour over 7 days, p50/p95, on
//     M events (default 10,000,000) over 90 days for 100 tenants: the N
//     events of (a) plus M - N generated in SQL with the same ten shapes,
//     whose rollups are built in SQL (build_sql below). That SQL is first
//     checked against what the intake built for the events of (a): every
//     daily, hourly, contact and response-time row must match.
//   bench_analytics [--events N] [--query-events M] [--queries Q]
//                   [--clients C] [--workers W]
// C client threads (default 4) send batches to W service workers (default
// 2). BENCH_EXPLAIN=1 logs the plans of statements over 20 ms
// (auto_explain, EXPLAIN ANALYZE) to /tmp/an_explain.log.
#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/resource.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "analytics.h"
#include "pl/id.h"
#include "svch.h"

#define BATCH   5000
#define TENANTS 100

static const char *const types[] = {
	"message.received",     "message.received",    "message.sent",
	"message.sent",         "message.status",      "agent.replied",
	"conversation.started", "conversation.closed", "lead.created",
	"order.created"
};
static const char *const payloads[] = {
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
static char *tenant_ptrs[TENANTS], *channel_ptrs[TENANTS];
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

// CPU seconds of this process (the client threads and the service, which
// runs in it).
static double
self_cpu_s(void)
{
	struct rusage u;
	getrusage(RUSAGE_SELF, &u);
	return (double)u.ru_utime.tv_sec + (double)u.ru_utime.tv_usec / 1e6 +
	       (double)u.ru_stime.tv_sec + (double)u.ru_stime.tv_usec / 1e6;
}

// CPU seconds of the PostgreSQL server: the postmaster, its children that
// have exited (reaped: cutime, cstime) and those alive (the backends).
static double
server_cpu_s(long pm)
{
	double ticks = 0, hz = (double)sysconf(_SC_CLK_TCK);
	DIR *d = opendir("/proc");
	struct dirent *de;
	if (d == NULL || pm <= 0)
		return 0;
	while ((de = readdir(d)) != NULL) {
		char path[300], buf[1024];
		long pid = atol(de->d_name);
		if (pid <= 0)
			continue;
		snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
		FILE *f = fopen(path, "r");
		if (f == NULL)
			continue;
		size_t n = fread(buf, 1, sizeof(buf) - 1, f);
		fclose(f);
		buf[n] = '\0';
		// Fields after the command's closing parenthesis: state ppid
		// ... utime(14) stime(15) cutime(16) cstime(17).
		char *q = strrchr(buf, ')');
		long ppid;
		unsigned long long ut, st;
		long long cut, cst;
		if (q == NULL ||
		    sscanf(q + 2,
		           "%*c %ld %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu "
		           "%llu %lld %lld",
		           &ppid, &ut, &st, &cut, &cst) != 5)
			continue;
		if (pid == pm)
			ticks += (double)(ut + st) + (double)(cut + cst);
		else if (ppid == pm)
			ticks += (double)(ut + st);
	}
	closedir(d);
	return ticks / hz;
}

static long
postmaster_pid(const pgh *pg)
{
	char path[200];
	long pid = 0;
	snprintf(path, sizeof(path), "%s/data/postmaster.pid", pg->dir);
	FILE *f = fopen(path, "r");
	if (f != NULL) {
		if (fscanf(f, "%ld", &pid) != 1)
			pid = 0;
		fclose(f);
	}
	return pid;
}

static PGresult *
q(PGconn *c, const char *sql)
{
	PGresult *r = PQexec(c, sql);
	if (PQresultStatus(r) != PGRES_COMMAND_OK &&
	    PQresultStatus(r) != PGRES_TUPLES_OK) {
		fprintf(stderr, "bench SQL failed: %s\n%.300s\n",
		        PQresultErrorMessage(r), sql);
		exit(1);
	}
	return r;
}

static void
qx(PGconn *c, const char *sql)
{
	PQclear(q(c, sql));
}

// The statements that took the server's time since the last reset.
static void
top_statements(PGconn *su, long per)
{
	PGresult *r = q(su, "SELECT calls, total_exec_time, rows,"
	                    " regexp_replace(left(query, 70), '\\s+', ' ', 'g')"
	                    " FROM pg_stat_statements WHERE calls > 0"
	                    " ORDER BY total_exec_time DESC LIMIT 7");
	printf("    server time by statement (pg_stat_statements):\n");
	for (int i = 0; i < PQntuples(r); i++)
		printf("      %8s calls %9.0f ms %6.2f us/event  %s\n",
		       PQgetvalue(r, i, 0), atof(PQgetvalue(r, i, 1)),
		       atof(PQgetvalue(r, i, 1)) * 1000.0 / (double)per,
		       PQgetvalue(r, i, 3));
	PQclear(r);
}

// The rollups of the events whose source is src, built in SQL into temp
// tables r_daily, r_hourly, r_contacts, r_rt. A mirror of
// analytics_map_event for the ten shapes this bench sends (tenants on UTC,
// no campaign, no user): checked against the intake by the caller. The
// events are first counted per (tenant, hour, shape) in r_g, so the
// mapping runs on groups, not on every event.
static const char build_sql[] =
        "DROP TABLE IF EXISTS r_g, r_daily, r_hourly, r_contacts, r_rt;"
        "CREATE TEMP TABLE r_g AS"
        " SELECT tenant_id, date_trunc('hour', occurred_at) AS hour, type,"
        "  channel_id, payload, count(*)::bigint AS n"
        " FROM analytics.events WHERE source = $1 GROUP BY 1, 2, 3, 4, 5;"
        "CREATE TEMP TABLE r_daily AS"
        " SELECT e.tenant_id, d.dk, d.dv,"
        "  (e.hour AT TIME ZONE 'UTC')::date AS day, m.metric,"
        "  sum(m.v * e.n)::bigint AS value"
        " FROM r_g e"
        " CROSS JOIN LATERAL (SELECT * FROM unnest("
        "  CASE e.type"
        "   WHEN 'message.received' THEN '{events,messages_in}'::text[]"
        "   WHEN 'message.sent' THEN ARRAY['events', 'messages_out',"
        "    'messages_out_' || (e.payload->>'sender')]"
        "   WHEN 'agent.replied' THEN"
        "    '{events,ai_replies,ai_tokens_in,ai_tokens_out}'"
        "   WHEN 'conversation.started' THEN '{events,conversations_started}'"
        "   WHEN 'conversation.closed' THEN ARRAY['events',"
        "    'conversations_closed', CASE WHEN (e.payload->>'handed_over')"
        "    ::boolean THEN 'closed_handed_over' ELSE 'bot_resolved' END]"
        "   WHEN 'lead.created' THEN '{events,leads_created}'"
        "   WHEN 'order.created' THEN ARRAY['events', 'orders',"
        "    'revenue_minor:' || (e.payload->>'currency')]"
        "   ELSE '{events}' END,"
        "  CASE e.type"
        "   WHEN 'message.received' THEN '{1,1}'::bigint[]"
        "   WHEN 'message.sent' THEN '{1,1,1}'"
        "   WHEN 'agent.replied' THEN ARRAY[1, 1,"
        "    (e.payload->>'tokens_in')::bigint,"
        "    (e.payload->>'tokens_out')::bigint]"
        "   WHEN 'conversation.started' THEN '{1,1}'"
        "   WHEN 'conversation.closed' THEN '{1,1,1}'"
        "   WHEN 'lead.created' THEN '{1,1}'"
        "   WHEN 'order.created' THEN ARRAY[1, 1,"
        "    (e.payload->>'total_minor')::bigint]"
        "   ELSE '{1}' END) AS u(metric, v)) m"
        " CROSS JOIN LATERAL ("
        "  SELECT '' AS dk, '' AS dv"
        "  UNION ALL SELECT 'channel', e.channel_id::text"
        "   WHERE e.channel_id IS NOT NULL AND m.metric <> 'events'"
        "  UNION ALL SELECT 'intent', e.payload->>'intent'"
        "   WHERE m.metric = 'ai_replies'"
        "  UNION ALL SELECT k, e.payload->>k"
        "   FROM unnest('{engine,model}'::text[]) k"
        "   WHERE m.metric IN ('ai_replies', 'ai_tokens_in',"
        "    'ai_tokens_out')) d"
        " GROUP BY 1, 2, 3, 4, 5;"
        "CREATE TEMP TABLE r_hourly AS"
        " SELECT tenant_id, hour,"
        "  coalesce(sum(n) FILTER (WHERE type = 'message.received'), 0)"
        "   ::bigint AS messages_in,"
        "  coalesce(sum(n) FILTER (WHERE type = 'message.sent'), 0)::bigint"
        "   AS messages_out,"
        "  coalesce(sum(n) FILTER (WHERE type = 'message.sent'"
        "   AND payload->>'sender' = 'bot'), 0)::bigint AS messages_out_bot,"
        "  coalesce(sum(n) FILTER (WHERE type = 'message.sent'"
        "   AND payload->>'sender' = 'human'), 0)::bigint"
        "   AS messages_out_human,"
        "  coalesce(sum(n) FILTER (WHERE type = 'conversation.started'), 0)"
        "   ::bigint AS conversations_started,"
        "  coalesce(sum(n) FILTER (WHERE type = 'conversation.closed'), 0)"
        "   ::bigint AS conversations_closed,"
        "  0::bigint AS handoffs,"
        "  coalesce(sum(n) FILTER (WHERE type = 'conversation.closed'"
        "   AND NOT (payload->>'handed_over')::boolean), 0)::bigint"
        "   AS bot_resolved,"
        "  coalesce(sum(n) FILTER (WHERE type = 'lead.created'), 0)::bigint"
        "   AS leads_created,"
        "  0::bigint AS leads_converted,"
        "  coalesce(sum(n) FILTER (WHERE type = 'order.created'), 0)::bigint"
        "   AS orders,"
        "  0::bigint AS campaign_sent, 0::bigint AS campaign_delivered,"
        "  0::bigint AS campaign_read, 0::bigint AS campaign_failed,"
        "  coalesce(sum(n) FILTER (WHERE type = 'agent.replied'), 0)"
        "   ::bigint AS ai_replies,"
        "  coalesce(sum(n * (payload->>'tokens_in')::bigint)"
        "   FILTER (WHERE type = 'agent.replied'), 0)::bigint"
        "   AS ai_tokens_in,"
        "  coalesce(sum(n * (payload->>'tokens_out')::bigint)"
        "   FILTER (WHERE type = 'agent.replied'), 0)::bigint"
        "   AS ai_tokens_out,"
        "  0::bigint AS quota_refusals"
        " FROM r_g WHERE type <> 'message.status' GROUP BY 1, 2;"
        "CREATE TEMP TABLE r_contacts AS"
        " SELECT DISTINCT tenant_id, (occurred_at AT TIME ZONE 'UTC')::date"
        "  AS day, contact_id FROM analytics.events"
        " WHERE source = $1 AND contact_id IS NOT NULL"
        "  AND type IN ('message.received', 'message.sent');"
        "CREATE TEMP TABLE r_rt AS"
        " SELECT tenant_id, payload->>'sender' AS kind, occurred_at,"
        "  id AS event_id, (payload->>'response_ms')::bigint AS ms,"
        "  channel_id, agent_id, campaign_id FROM analytics.events"
        " WHERE source = $1 AND type = 'message.sent'"
        "  AND payload->>'sender' IN ('bot', 'human')"
        "  AND (payload->>'response_ms')::bigint >= 0;";

// Runs build_sql for events of source src (the statements one by one:
// PQexecParams takes one statement).
static void
build_rollups(PGconn *c, const char *src)
{
	char *sql = strdup(build_sql), *save = NULL;
	const char *p[1] = { src };
	for (char *st = strtok_r(sql, ";", &save); st != NULL;
	     st = strtok_r(NULL, ";", &save)) {
		int np = strstr(st, "$1") != NULL ? 1 : 0;
		PGresult *r = PQexecParams(c, st, np, NULL, p, NULL, NULL, 0);
		if (PQresultStatus(r) != PGRES_COMMAND_OK) {
			fprintf(stderr, "build: %s\n", PQresultErrorMessage(r));
			exit(1);
		}
		PQclear(r);
	}
	free(sql);
}

// Rows that differ between the SQL-built rollups and the service's
// tables, both ways.
static long
rollup_differences(PGconn *c)
{
	PGresult *r = q(
	        c,
	        "SELECT"
	        " (SELECT count(*) FROM (SELECT * FROM r_daily EXCEPT ALL"
	        "  SELECT tenant_id, dim_key, dim_value, day, metric, value"
	        "  FROM analytics.daily_rollups) x)"
	        " + (SELECT count(*) FROM (SELECT tenant_id, dim_key,"
	        "  dim_value, day, metric, value FROM analytics.daily_rollups"
	        "  EXCEPT ALL SELECT * FROM r_daily) x)"
	        " + (SELECT count(*) FROM (SELECT * FROM r_hourly EXCEPT ALL"
	        "  SELECT * FROM analytics.hourly_rollups) x)"
	        " + (SELECT count(*) FROM (SELECT * FROM"
	        "  analytics.hourly_rollups EXCEPT ALL"
	        "  SELECT * FROM r_hourly) x)"
	        " + (SELECT count(*) FROM (SELECT * FROM r_contacts EXCEPT ALL"
	        "  SELECT * FROM analytics.daily_contacts) x)"
	        " + (SELECT count(*) FROM (SELECT * FROM"
	        "  analytics.daily_contacts EXCEPT ALL"
	        "  SELECT * FROM r_contacts) x)"
	        " + (SELECT count(*) FROM (SELECT * FROM r_rt EXCEPT ALL"
	        "  SELECT * FROM analytics.response_times) x)"
	        " + (SELECT count(*) FROM (SELECT * FROM"
	        "  analytics.response_times EXCEPT ALL SELECT * FROM r_rt) x),"
	        " (SELECT count(*) FROM r_daily) + (SELECT count(*) FROM"
	        "  r_hourly) + (SELECT count(*) FROM r_contacts)"
	        "  + (SELECT count(*) FROM r_rt)");
	long d = atol(PQgetvalue(r, 0, 0));
	printf("    SQL rollup builder against the intake's rollups of (a):"
	       " %s rows, %ld differ%s\n",
	       PQgetvalue(r, 0, 1), d, d == 0 ? "" : "  <-- MISMATCH");
	PQclear(r);
	return d;
}

// Generates M events in SQL: the bench's ten shapes, tenant and channel
// g % 100, contact and shape from a hash of g, spread over the 90 days
// before now like the RPC events, source 'bench-sql'. Each month is
// streamed by COPY TO STDOUT (binary) from one connection into COPY FROM
// STDIN of its partition on another: no row-by-row INSERT.
static void
generate_events(PGconn *c, const char *url, long m)
{
	char now[32];
	analytics_time_format_us(now_us, now);
	char *tl = analytics_array_literal((const char *const *)tenant_ptrs,
	                                   TENANTS);
	char *cl = analytics_array_literal((const char *const *)channel_ptrs,
	                                   TENANTS);
	char *ty = analytics_array_literal(types, 10);
	char *pl = analytics_array_literal(payloads, 10);
	PGconn *src = PQconnectdb(url);
	PGresult *parts =
	        q(c, "SELECT name, month FROM analytics.event_partitions");
	for (int pi = 0; pi < PQntuples(parts); pi++) {
		// Bench-only SQL: the literals are the bench's own constants
		// and the partition's name and month from the catalog.
		size_t cap = strlen(tl) + strlen(cl) + strlen(ty) + strlen(pl) +
		             2048;
		char *sql = malloc(cap);
		snprintf(
		        sql, cap,
		        "COPY (SELECT tenant_id, occurred_at, id, type, source,"
		        " channel_id, contact_id, payload FROM (SELECT"
		        " ('%s'::uuid[])[1 + g %% 100] AS tenant_id,"
		        " '%s'::timestamptz - make_interval(secs => (%ld - g)"
		        "  * (90 * 86400.0 / %ld)) - interval '60 s' AS "
		        "occurred_at,"
		        " gen_random_uuid() AS id, ('%s'::text[])[1 + k] AS "
		        "type,"
		        " 'bench-sql'::text AS source,"
		        " ('%s'::uuid[])[1 + g %% 100] AS channel_id,"
		        " ('0190a000-0000-7000-8000-' || lpad((abs(hashint8(g "
		        "* 31"
		        "  + 7)) %% 5000)::text, 12, '0'))::uuid AS contact_id,"
		        " ('%s'::jsonb[])[1 + k] AS payload"
		        " FROM generate_series(0, %ld) g,"
		        "  LATERAL (SELECT (abs(hashint8(g)) %% 10)::int AS k) "
		        "s) x"
		        " WHERE occurred_at >= '%s'::date AT TIME ZONE 'UTC'"
		        " AND occurred_at < ('%s'::date + interval '1 month')"
		        "  AT TIME ZONE 'UTC') TO STDOUT (FORMAT binary)",
		        tl, now, m, m, ty, cl, pl, m - 1,
		        PQgetvalue(parts, pi, 1), PQgetvalue(parts, pi, 1));
		PGresult *r = PQexec(src, sql);
		free(sql);
		if (PQresultStatus(r) != PGRES_COPY_OUT) {
			fprintf(stderr, "generate: %s\n",
			        PQresultErrorMessage(r));
			exit(1);
		}
		PQclear(r);
		char in[200];
		snprintf(in, sizeof(in),
		         "COPY analytics.%s (tenant_id, occurred_at, id, type,"
		         " source, channel_id, contact_id, payload) FROM STDIN"
		         " (FORMAT binary)",
		         PQgetvalue(parts, pi, 0));
		r = PQexec(c, in);
		if (PQresultStatus(r) != PGRES_COPY_IN) {
			fprintf(stderr, "generate: %s\n",
			        PQresultErrorMessage(r));
			exit(1);
		}
		PQclear(r);
		char *buf;
		int len;
		while ((len = PQgetCopyData(src, &buf, 0)) > 0) {
			PQputCopyData(c, buf, len);
			PQfreemem(buf);
		}
		while ((r = PQgetResult(src)) != NULL) {
			if (PQresultStatus(r) != PGRES_COMMAND_OK)
				fprintf(stderr, "generate: %s\n",
				        PQresultErrorMessage(r));
			PQclear(r);
		}
		PQputCopyEnd(c, NULL);
		while ((r = PQgetResult(c)) != NULL) {
			if (PQresultStatus(r) != PGRES_COMMAND_OK) {
				fprintf(stderr, "generate: %s\n",
				        PQresultErrorMessage(r));
				exit(1);
			}
			PQclear(r);
		}
	}
	PQclear(parts);
	PQfinish(src);
	free(tl);
	free(cl);
	free(ty);
	free(pl);
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

// (b): Summary over 30 days or TimeSeries by hour over 7 days for tenant
// q % 100, ending q % 30 days ago at a UTC midnight.
static void
run_queries(int queries, long total)
{
	double *lat = calloc((size_t)queries, sizeof(double));
	int64_t day = 86400LL * 1000000;
	for (int kind = 0; kind < 2; kind++) {
		int failed = 0;
		for (int qi = 0; qi < queries; qi++) {
			char a[32], b[32];
			pl_principal p = svch_user(tenants[qi % TENANTS],
			                           channels[0], 1);
			int64_t end = (now_us / day - (qi % 30)) * day;
			analytics_time_format_ms(
			        end - (kind == 0 ? 30 : 7) * day, a);
			analytics_time_format_ms(end, b);
			double s = now_s();
			int rc;
			void *out = NULL;
			if (kind == 0) {
				Parley__Analytics__V1__SummaryRequest in =
				        PARLEY__ANALYTICS__V1__SUMMARY_REQUEST__INIT;
				in.start_at = a;
				in.end_at = b;
				rc = svch_call(
				        &h,
				        "/parley.analytics.v1.Analytics/"
				        "Summary",
				        &p, &in.base,
				        &parley__analytics__v1__summary_response__descriptor,
				        &out, NULL);
				Parley__Analytics__V1__SummaryResponse *o = out;
				if (rc == PL_OK && (o->kpis == NULL ||
				                    o->kpis->messages_in == 0))
					failed++; // every tenant has messages
			} else {
				Parley__Analytics__V1__TimeSeriesRequest in =
				        PARLEY__ANALYTICS__V1__TIME_SERIES_REQUEST__INIT;
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
				Parley__Analytics__V1__TimeSeriesResponse *o =
				        out;
				if (rc == PL_OK && o->n_points != 7 * 24)
					failed++;
			}
			lat[qi] = (now_s() - s) * 1000;
			if (rc != PL_OK)
				failed++;
			pl_arena_reset(&h.arena);
		}
		qsort(lat, (size_t)queries, sizeof(double), cmpd);
		printf("(b) %s: p50 %.2f ms, p95 %.2f ms over %d calls (%ld "
		       "events, %d tenants, 90 days; target %s)%s\n",
		       kind == 0 ? "Summary 30 days" : "TimeSeries hour 7 days",
		       lat[queries / 2], lat[queries * 95 / 100], queries,
		       total, TENANTS, kind == 0 ? "<= 20 ms" : "<= 50 ms",
		       failed ? "  <-- SOME CALLS FAILED" : "");
		if (failed)
			printf("    %d calls failed or answered nothing\n",
			       failed);
	}
	free(lat);
}

static void
loadavg(const char *when)
{
	double l[3];
	if (getloadavg(l, 3) == 3)
		printf("    load average %s: %.2f %.2f %.2f\n", when, l[0],
		       l[1], l[2]);
}

int
main(int argc, char **argv)
{
	static pgh pg;
	int queries = 200, clients = 4, workers = 2;
	long query_events = 10000000;
	n_events = 2000000;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--events") == 0 && i + 1 < argc)
			n_events = atol(argv[++i]);
		else if (strcmp(argv[i], "--query-events") == 0 && i + 1 < argc)
			query_events = atol(argv[++i]);
		else if (strcmp(argv[i], "--queries") == 0 && i + 1 < argc)
			queries = atoi(argv[++i]);
		else if (strcmp(argv[i], "--clients") == 0 && i + 1 < argc)
			clients = atoi(argv[++i]);
		else if (strcmp(argv[i], "--workers") == 0 && i + 1 < argc)
			workers = atoi(argv[++i]);
		else {
			fprintf(stderr,
			        "usage: bench_analytics [--events N] "
			        "[--query-events M] [--queries Q] [--clients C]"
			        " [--workers W]\n");
			return 2;
		}
	}
	setvbuf(stdout, NULL, _IOLBF, 0); // figures as they come
	n_events = (n_events + BATCH - 1) / BATCH * BATCH;
	if (n_events < BATCH || queries < 1 || clients < 1 || clients > 32 ||
	    workers < 1 || workers > 32) {
		fprintf(stderr,
		        "--events >= %d, --queries >= 1, --clients and"
		        " --workers 1..32\n",
		        BATCH);
		return 2;
	}
	if (query_events < n_events)
		query_events = n_events;
	if (pgh_start(&pg) != 0) {
		fprintf(stderr, "no PostgreSQL\n");
		return 1;
	}
	// The same server for the RPC intake and the COPY: room for the
	// indexes of a few million events, no commit waits, no checkpoint
	// storm in the middle of a run; pg_stat_statements to see where the
	// server's time goes.
	pgh_exec(&pg, "ALTER SYSTEM SET shared_buffers = '1GB'");
	pgh_exec(&pg, "ALTER SYSTEM SET max_wal_size = '16GB'");
	pgh_exec(&pg, "ALTER SYSTEM SET checkpoint_timeout = '30min'");
	pgh_exec(&pg, "ALTER SYSTEM SET shared_preload_libraries ="
	              " 'pg_stat_statements'");
	if (getenv("BENCH_EXPLAIN") != NULL)
		pgh_exec(&pg, "ALTER SYSTEM SET session_preload_libraries ="
		              " 'auto_explain'");
	if (pgh_restart(&pg) != 0) {
		fprintf(stderr, "could not restart PostgreSQL\n");
		return 1;
	}
	pgh_exec(&pg, "ALTER SYSTEM SET synchronous_commit = off");
	if (getenv("BENCH_EXPLAIN") != NULL) {
		pgh_exec(&pg,
		         "ALTER SYSTEM SET auto_explain.log_min_duration = 20");
		pgh_exec(&pg, "ALTER SYSTEM SET auto_explain.log_analyze = on");
	}
	pgh_exec(&pg, "SELECT pg_reload_conf()");
	pgh_exec(&pg, "CREATE EXTENSION pg_stat_statements");
	PGconn *su = PQconnectdb(pg.url);
	if (PQstatus(su) != CONNECTION_OK) {
		fprintf(stderr, "%s", PQerrorMessage(su));
		return 1;
	}
	long pm = postmaster_pid(&pg);
	if (svch_start(&h, &pg, &analytics_service_def, workers, NULL) != 0)
		return 1;
	now_us = analytics_now_us();
	for (int t = 0; t < TENANTS; t++) {
		pl_uuid7_str(tenants[t]);
		pl_uuid7_str(channels[t]);
		tenant_ptrs[t] = tenants[t];
		channel_ptrs[t] = channels[t];
	}
	copyf = tmpfile();
	printf("analytics bench: (a) %ld events over RPC, (b) queries on %ld "
	       "events\n",
	       n_events, query_events);
	loadavg("at start");

	// (a) intake over RPC.
	qx(su, "SELECT pg_stat_statements_reset()");
	double cpu0 = self_cpu_s(), srv0 = server_cpu_s(pm), t0 = now_s();
	pthread_t th[32];
	for (int i = 0; i < clients; i++)
		pthread_create(&th[i], NULL, sender,
		               (void *)(uintptr_t)(i + 1));
	for (int i = 0; i < clients; i++)
		pthread_join(th[i], NULL);
	double rpc_s = now_s() - t0, rpc_srv = server_cpu_s(pm) - srv0,
	       rpc_cpu = self_cpu_s() - cpu0;
	loadavg("after the RPC intake");

	// The same rows by COPY into a same-shaped (partitioned, same key)
	// table.
	PGconn *c = PQconnectdb(h.db_url);
	qx(c, "CREATE TABLE analytics.events_copy (LIKE analytics.events"
	      " INCLUDING DEFAULTS) PARTITION BY RANGE (occurred_at);"
	      " ALTER TABLE analytics.events_copy ADD PRIMARY KEY"
	      " (tenant_id, occurred_at, id)");
	PGresult *r =
	        q(c, "SELECT name, month FROM analytics.event_partitions");
	for (int i = 0; i < PQntuples(r); i++) {
		char sql[512];
		snprintf(sql, sizeof(sql),
		         "CREATE TABLE analytics.c_%s PARTITION OF "
		         "analytics.events_copy"
		         " FOR VALUES FROM ('%s') TO (('%s'::date + interval "
		         "'1 month'))",
		         PQgetvalue(r, i, 0), PQgetvalue(r, i, 1),
		         PQgetvalue(r, i, 1));
		qx(c, sql);
	}
	PQclear(r);
	rewind(copyf);
	srv0 = server_cpu_s(pm);
	t0 = now_s();
	r = PQexec(c, "COPY analytics.events_copy (tenant_id, occurred_at, id,"
	              " type, source, channel_id, agent_id, campaign_id,"
	              " conversation_id, contact_id, user_id, payload, version)"
	              " FROM STDIN");
	PQclear(r);
	char buf[65536];
	size_t n;
	while ((n = fread(buf, 1, sizeof(buf), copyf)) > 0)
		PQputCopyData(c, buf, (int)n);
	PQputCopyEnd(c, NULL);
	r = PQgetResult(c);
	if (PQresultStatus(r) != PGRES_COMMAND_OK)
		fprintf(stderr, "copy: %s\n", PQresultErrorMessage(r));
	PQclear(r);
	double copy_s = now_s() - t0, copy_srv = server_cpu_s(pm) - srv0;
	qx(c, "SET parley.tenant_id = '*'");
	r = q(c, "SELECT count(*) FROM analytics.events");
	printf("events stored: %s of %ld\n", PQgetvalue(r, 0, 0), n_events);
	PQclear(r);
	printf("(a) intake over RPC: %ld events in %.2f s = %.0f events/s"
	       " (batches of %d, %d clients, %d workers)\n",
	       n_events, rpc_s, n_events / rpc_s, BATCH, clients, workers);
	printf("    raw COPY:        %ld rows in %.2f s = %.0f rows/s\n",
	       n_events, copy_s, n_events / copy_s);
	printf("    ratio RPC/COPY:  %.2f (targets: >= 50000 events/s, >= "
	       "0.25)\n",
	       copy_s / rpc_s);
	printf("    CPU per event: RPC intake: server %.1f us + bench process"
	       " (clients and service) %.1f us; COPY: server %.1f us\n",
	       rpc_srv * 1e6 / (double)n_events,
	       rpc_cpu * 1e6 / (double)n_events,
	       copy_srv * 1e6 / (double)n_events);
	printf("    ratio of server CPU, COPY/RPC: %.2f\n",
	       rpc_srv > 0 ? copy_srv / rpc_srv : 0.0);
	top_statements(su, n_events);
	r = q(c, "SELECT (SELECT count(*) FROM analytics.daily_rollups),"
	         " (SELECT count(*) FROM analytics.hourly_rollups),"
	         " (SELECT count(*) FROM analytics.daily_contacts),"
	         " (SELECT count(*) FROM analytics.monthly_contacts),"
	         " (SELECT count(*) FROM analytics.response_times),"
	         " (SELECT count(*) FROM analytics.monthly_usage)");
	printf("    rows kept per event: daily_rollups %.3f, hourly_rollups "
	       "%.3f, daily_contacts %.3f, monthly_contacts %.3f, "
	       "response_times %.3f, monthly_usage %.4f\n",
	       atof(PQgetvalue(r, 0, 0)) / (double)n_events,
	       atof(PQgetvalue(r, 0, 1)) / (double)n_events,
	       atof(PQgetvalue(r, 0, 2)) / (double)n_events,
	       atof(PQgetvalue(r, 0, 3)) / (double)n_events,
	       atof(PQgetvalue(r, 0, 4)) / (double)n_events,
	       atof(PQgetvalue(r, 0, 5)) / (double)n_events);
	PQclear(r);
	loadavg("after the COPY");
	qx(c, "DROP TABLE analytics.events_copy");

	// (b) the SQL rollup builder, checked on the events of (a), then
	// the events up to M.
	qx(c, "SET work_mem = '256MB'");
	t0 = now_s();
	build_rollups(c, "bench");
	long diff = rollup_differences(c);
	printf("    (checked in %.1f s)\n", now_s() - t0);
	if (query_events > n_events) {
		t0 = now_s();
		generate_events(c, h.db_url, query_events - n_events);
		double gen_s = now_s() - t0;
		t0 = now_s();
		build_rollups(c, "bench-sql");
		qx(c,
		   "INSERT INTO analytics.daily_rollups AS r"
		   " SELECT * FROM r_daily"
		   " ON CONFLICT (tenant_id, dim_key, dim_value, day, metric)"
		   " DO UPDATE SET value = r.value + EXCLUDED.value");
		{
			char sql[4096];
			size_t len = (size_t)snprintf(
			        sql, sizeof(sql),
			        "INSERT INTO analytics.hourly_rollups AS r"
			        " SELECT * FROM r_hourly"
			        " ON CONFLICT (tenant_id, hour) DO UPDATE "
			        "SET ");
			for (int k = 0; k < ANALYTICS_HOURLY_N; k++)
				len += (size_t)snprintf(
				        sql + len, sizeof(sql) - len,
				        "%s%s = r.%s + EXCLUDED.%s",
				        k ? ", " : "",
				        analytics_hourly_metrics[k],
				        analytics_hourly_metrics[k],
				        analytics_hourly_metrics[k]);
			qx(c, sql);
		}
		qx(c, "INSERT INTO analytics.daily_contacts SELECT * FROM"
		      " r_contacts ON CONFLICT DO NOTHING");
		qx(c, "INSERT INTO analytics.response_times SELECT * FROM r_rt"
		      " ON CONFLICT DO NOTHING");
		printf("    generated %ld events in SQL in %.1f s, their "
		       "rollups in %.1f s\n",
		       query_events - n_events, gen_s, now_s() - t0);
	}
	// As autovacuum leaves history a few minutes after it is written:
	// statistics, and the rollups' pages marked all-visible (index-only
	// scans).
	qx(c, "ANALYZE analytics.events");
	qx(c, "VACUUM (ANALYZE) analytics.daily_rollups,"
	      " analytics.hourly_rollups, analytics.daily_contacts,"
	      " analytics.response_times");
	r = q(c, "SELECT count(*) FROM analytics.events");
	long total = atol(PQgetvalue(r, 0, 0));
	PQclear(r);
	PQfinish(c);
	loadavg("before the queries");
	qx(su, "SELECT pg_stat_statements_reset()");
	run_queries(queries, total);
	{
		PGresult *tq = q(
		        su, "SELECT calls, mean_exec_time,"
		            " regexp_replace(left(query, 70), '\\s+', ' ', 'g')"
		            " FROM pg_stat_statements WHERE calls > 0"
		            " ORDER BY total_exec_time DESC LIMIT 6");
		printf("    server time per statement of (b):\n");
		for (int i = 0; i < PQntuples(tq); i++)
			printf("      %6s calls, mean %7.3f ms  %s\n",
			       PQgetvalue(tq, i, 0), atof(PQgetvalue(tq, i, 1)),
			       PQgetvalue(tq, i, 2));
		PQclear(tq);
	}
	loadavg("at the end");
	PQfinish(su);
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
	return diff == 0 ? 0 : 1;
}
