// The statistics keeper (see pl/db.h): ANALYZE of the tables whose size
// has drifted from what the planner believes.
//
// Autovacuum looks at a database once a minute (autovacuum_naptime) and
// analyzes a table after 10% of it has changed. A table that grows from
// nothing to 10,000 rows inside that minute (a campaign's audience, an
// import, a fresh install's first burst) keeps statistics that say "empty",
// and the plans made from them walk a tenant's rows where a primary-key
// probe was meant. The keeper compares each table's live row count with
// pg_class.reltuples (what the planner uses) every second and analyzes the
// ones that differ by 100 rows and by half or more; a table in a steady
// state is never touched, a growing one about log1.5(size/100) times. Both
// figures were measured: with 1,000 rows and every 2 s, the 20,000-
// recipient campaign bench ran at 694-1,010 msgs/s (1.7-2.5 ms of
// PostgreSQL CPU a message); with 100 rows and every second at 1,134-1,147
// (1.5 ms).
//
// A table the planner already counts at MAX_ROWS or more is left to
// autovacuum: its statistics say "large" whatever it grows to, so plans do
// not change, and an ANALYZE there costs tens of milliseconds of one core
// at once (30,000 sampled rows), a burst every replica's callers queue
// behind. bench_agents' reply table grows to ~130,000 rows: without the
// cap the keeper analyzed it about six times past 10,000 rows, and the
// paced runs' p99 and max were the worse for it (README of the agents
// service).
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pl/db.h"
#include "pl/log.h"
#include "pl/rpc.h"

#define MIN_DRIFT    100   // rows: below this, any plan is cheap
#define MAX_TABLES   16    // per round
#define MAX_ROWS     10000 // planner's count from which autovacuum alone keeps it
#define STATS_TARGET "10" // the keeper's ANALYZE: see round_once

struct pl_db_analyzer {
	pl_db *db;
	char *schema;
	int interval_ms;
	bool stop;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	pthread_t thr;
};

// Tables of the schema whose live rows differ from the planner's count by
// MIN_DRIFT and by half of it, and that the planner counts below MAX_ROWS.
// Names come quoted from the catalog.
static const char drift_sql[] =
        "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "JOIN pg_stat_user_tables s ON s.relid = c.oid "
        "WHERE n.nspname = $1 AND c.relkind = 'r' AND "
        "abs(s.n_live_tup - greatest(c.reltuples, 0)) >= "
        "greatest($2::float8, 0.5 * greatest(c.reltuples, 0)) "
        "AND c.reltuples < $4::float8 "
        "ORDER BY s.n_live_tup DESC LIMIT $3";

static void
round_once(pl_db_analyzer *a)
{
	char drift[16], limit[16], rows[16];
	const char *p[4] = { a->schema, drift, limit, rows };
	const char *lp[1] = { a->schema };
	PGresult *r, *l;

	snprintf(drift, sizeof(drift), "%d", MIN_DRIFT);
	snprintf(limit, sizeof(limit), "%d", MAX_TABLES);
	snprintf(rows, sizeof(rows), "%d", MAX_ROWS);
	r = pl_db_exec(a->db, drift_sql, 4, p);
	if (r == NULL || PQresultStatus(r) != PGRES_TUPLES_OK ||
	    PQntuples(r) == 0) {
		PQclear(r);
		return;
	}
	// One replica at a time; the lock goes with the session if it dies.
	l = pl_db_exec(a->db,
	               "SELECT pg_try_advisory_lock(hashtext('parley.analyze.' "
	               "|| $1))",
	               1, lp);
	if (l == NULL || PQresultStatus(l) != PGRES_TUPLES_OK ||
	    strcmp(PQgetvalue(l, 0, 0), "t") != 0) {
		PQclear(l);
		PQclear(r);
		return;
	}
	PQclear(l);
	// A table another ANALYZE or a VACUUM holds is left for next time.
	pl_db_command(a->db, "SET lock_timeout = '200ms'", 0, NULL);
	// What the keeper is for is the row count (reltuples) of a young
	// table; autovacuum's ANALYZE, once a tenth of the table changed, makes
	// the full statistics. A target of 10 samples 3,000 rows instead of
	// 30,000 and builds 10-bucket histograms: ANALYZE of the messaging
	// bench's 8,500 messages took 47-53 ms at the default (100) and
	// 14 ms at 10, the outbox 19 and 7.5 ms. Columns given their own
	// target (ALTER COLUMN ... SET STATISTICS) keep it.
	pl_db_command(a->db, "SET default_statistics_target = " STATS_TARGET, 0,
	              NULL);
	for (int i = 0; i < PQntuples(r); i++) {
		char sql[160];
		const char *name = PQgetvalue(r, i, 0);
		int64_t t0 = pl_now_ns();
		snprintf(sql, sizeof(sql), "ANALYZE %s", name);
		if (strlen(name) >= sizeof(sql) - 9)
			continue;
		if (pl_db_command(a->db, sql, 0, NULL) == PL_OK)
			pl_debug("analyzed %s in %.1f ms", name,
			         (double)(pl_now_ns() - t0) / 1e6);
	}
	pl_db_command(a->db, "RESET lock_timeout", 0, NULL);
	pl_db_command(a->db, "RESET default_statistics_target", 0, NULL);
	pl_db_command(a->db,
	              "SELECT pg_advisory_unlock(hashtext('parley.analyze.' "
	              "|| $1))",
	              1, lp);
	PQclear(r);
}

static void *
analyzer_main(void *arg)
{
	pl_db_analyzer *a = arg;

	pthread_setname_np(pthread_self(), "db-analyzer");
	pthread_mutex_lock(&a->mu);
	while (!a->stop) {
		struct timespec ts = pl_timespec_in(
		        CLOCK_REALTIME, (int64_t)a->interval_ms * 1000000);
		pthread_cond_timedwait(&a->cv, &a->mu, &ts);
		if (a->stop)
			break;
		pthread_mutex_unlock(&a->mu);
		round_once(a);
		pthread_mutex_lock(&a->mu);
	}
	pthread_mutex_unlock(&a->mu);
	return NULL;
}

pl_db_analyzer *
pl_db_analyzer_start(const char *url, const char *schema, int interval_ms)
{
	pl_db_analyzer *a = calloc(1, sizeof(*a));

	if (a == NULL)
		return NULL;
	a->interval_ms = interval_ms > 0 ? interval_ms : 1000;
	a->db = pl_db_open(url);
	a->schema = strdup(schema);
	pthread_mutex_init(&a->mu, NULL);
	pthread_cond_init(&a->cv, NULL);
	if (a->db == NULL || a->schema == NULL ||
	    pthread_create(&a->thr, NULL, analyzer_main, a) != 0) {
		pl_db_close(a->db);
		free(a->schema);
		pthread_cond_destroy(&a->cv);
		pthread_mutex_destroy(&a->mu);
		free(a);
		return NULL;
	}
	return a;
}

void
pl_db_analyzer_stop(pl_db_analyzer *a)
{
	if (a == NULL)
		return;
	pthread_mutex_lock(&a->mu);
	a->stop = true;
	pthread_cond_signal(&a->cv);
	pthread_mutex_unlock(&a->mu);
	pthread_join(a->thr, NULL);
	pl_db_close(a->db);
	free(a->schema);
	pthread_cond_destroy(&a->cv);
	pthread_mutex_destroy(&a->mu);
	free(a);
}
