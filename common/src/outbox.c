// The transactional outbox and its relay (pl/outbox.h).
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "parley/rpc/v1/event.pb-c.h"
#include "pl/id.h"
#include "pl/json.h"
#include "pl/log.h"
#include "pl/outbox.h"

#define DEFAULT_BATCH   200
#define DEFAULT_IDLE_MS 200
#define DEFAULT_BACKOFF 60000
#define DEFAULT_KEEP_S  (7 * 86400)
// Pruning: every minute, chunks of PRUNE_CHUNK rows for up to PRUNE_BUDGET.
#define PRUNE_EVERY_NS  (60 * 1000000000LL)
#define PRUNE_CHUNK     1000
#define PRUNE_BUDGET_MS 250

static bool
schema_ok(const char *s)
{
	if (s == NULL || s[0] == '\0' || strlen(s) > 48)
		return false;
	for (const char *p = s; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || *p == '_' ||
		      (p > s && *p >= '0' && *p <= '9')))
			return false;
	return true;
}

int
pl_outbox_add(pl_db *db, const char *schema, const char *const *dests,
              const pl_outbox_event *ev, char *id_out)
{
	char id[PL_UUID_STRLEN + 1], sql[512];
	const char *params[7];
	int rv;

	if (!schema_ok(schema) || ev->tenant_id == NULL || ev->type == NULL)
		return PL_INVALID_ARGUMENT;
	pl_uuid7_str(id);
	if (id_out != NULL)
		memcpy(id_out, id, sizeof(id));
	snprintf(sql, sizeof(sql),
	         "INSERT INTO %s.outbox (id, destination, tenant_id, type, "
	         "occurred_at, dimensions, payload) VALUES ($1, $2, $3, $4, "
	         "coalesce($5::timestamptz, now()), coalesce($6::jsonb, '{}'), "
	         "coalesce($7::jsonb, '{}'))",
	         schema);
	for (size_t i = 0; dests != NULL && dests[i] != NULL; i++) {
		params[0] = id;
		params[1] = dests[i];
		params[2] = ev->tenant_id;
		params[3] = ev->type;
		params[4] = ev->occurred_at;
		params[5] = ev->dimensions_json;
		params[6] = ev->payload_json;
		if ((rv = pl_db_command(db, sql, 7, params)) != PL_OK)
			return rv;
	}
	return PL_OK;
}

struct pl_outbox_relay {
	pl_outbox_relay_config cfg;
	pthread_t thr;
	pthread_mutex_t mtx;
	pthread_cond_t cv;
	bool stop;
};

// Delivers rows [from, to) of the claimed rows of res (id, tenant, type,
// occurred, dims, payload); returns the RPC status.
static int
send_batch(const pl_outbox_relay_config *cfg, const pl_outbox_route *route,
           PGresult *res, int from, int to, pl_arena *a, char **err)
{
	int n = to - from;
	Parley__Rpc__V1__EventBatch b = PARLEY__RPC__V1__EVENT_BATCH__INIT;
	pl_rpc_result rr;
	pl_rpc_opts o = { 0 };
	char e[256];
	int rv;

	b.events = pl_arena_alloc(a, (size_t)n * sizeof(*b.events));
	if (b.events == NULL)
		return PL_RESOURCE_EXHAUSTED;
	for (int i = from; i < to; i++) {
		Parley__Rpc__V1__Event *ev = pl_arena_alloc(a, sizeof(*ev));
		Parley__Rpc__V1__Json *js = pl_arena_alloc(a, sizeof(*js));
		ProtobufCMessage *dims = NULL;
		if (ev == NULL || js == NULL)
			return PL_RESOURCE_EXHAUSTED;
		parley__rpc__v1__event__init(ev);
		parley__rpc__v1__json__init(js);
		ev->id = pl_arena_strdup(a, PQgetvalue(res, i, 0));
		ev->tenant_id = pl_arena_strdup(a, PQgetvalue(res, i, 1));
		ev->type = pl_arena_strdup(a, PQgetvalue(res, i, 2));
		ev->occurred_at = pl_arena_strdup(a, PQgetvalue(res, i, 3));
		ev->source = (char *)cfg->source;
		js->text = pl_arena_strdup(a, PQgetvalue(res, i, 5));
		ev->payload = js;
		// Unknown dimension keys are a producer's bug: drop them, keep
		// the event.
		if (pl_json_to_pb(
		            PQgetvalue(res, i, 4),
		            (size_t)PQgetlength(res, i, 4),
		            &parley__rpc__v1__event_dimensions__descriptor, a,
		            &dims, e, sizeof(e)) == PL_OK)
			ev->dimensions =
			        (Parley__Rpc__V1__EventDimensions *)dims;
		else
			pl_warn("outbox event %s: dimensions ignored: %s",
			        ev->id, e);
		b.events[b.n_events++] = ev;
	}
	o.idempotent = true; // receivers de-duplicate by event id
	o.timeout_ms = 10000;
	rv = pl_rpc_call(route->client, route->method, &b.base, NULL, NULL, a,
	                 &o, &rr);
	if (rv != PL_OK)
		*err = pl_arena_printf(a, "%s: %s", pl_status_name(rv),
		                       rr.message ? rr.message : "");
	return rv;
}

// Marks the rows ids (a uuid[] literal) delivered.
static int
mark_delivered(pl_db *db, const pl_outbox_relay_config *cfg,
               const pl_outbox_route *route, const char *ids)
{
	char sql[512];
	const char *p[2] = { route->destination, ids };

	snprintf(sql, sizeof(sql),
	         "UPDATE %s.outbox SET delivered_at = now(), attempts = "
	         "attempts + 1, last_error = NULL WHERE destination = $1 AND "
	         "id = ANY($2::uuid[])",
	         cfg->schema);
	return pl_db_command(db, sql, 2, p);
}

// Reschedules the rows ids (a uuid[] literal) with capped exponential
// back-off and jitter, per row, keeping err.
static int
mark_failed(pl_db *db, const pl_outbox_relay_config *cfg,
            const pl_outbox_route *route, const char *ids, const char *err)
{
	char sql[1024], backoff[32];
	const char *p[4] = { route->destination, ids, err, backoff };

	snprintf(backoff, sizeof(backoff), "%lld",
	         (long long)(cfg->backoff_max_ms > 0 ? cfg->backoff_max_ms
	                                             : DEFAULT_BACKOFF));
	snprintf(sql, sizeof(sql),
	         "UPDATE %s.outbox SET attempts = attempts + 1, last_error = "
	         "left($3, 500), next_attempt_at = now() + make_interval(secs "
	         "=> least($4::bigint, (250 * power(2, least(attempts, 20)))"
	         "::bigint) * (0.5 + random() / 2) / 1000.0) "
	         "WHERE destination = $1 AND id = ANY($2::uuid[])",
	         cfg->schema);
	return pl_db_command(db, sql, 4, p);
}

// The ids of rows [from, from + k) of res as a uuid[] literal.
static char *
row_ids(PGresult *res, int from, int k, pl_arena *a)
{
	const char **v = pl_arena_alloc(a, (size_t)k * sizeof(*v));

	if (v == NULL)
		return NULL;
	for (int j = 0; j < k; j++)
		v[j] = PQgetvalue(res, from + j, 0);
	return pl_db_array(a, v, (size_t)k);
}

// The consumer refused the batch (INVALID_ARGUMENT: one of its events,
// say an event type it does not know yet, or a time it will not take).
// Each event is sent alone, so that what it cannot take is retried later
// without holding back the rest; returns how many were delivered, -1 when
// none was (all rescheduled), -2 when a row could not be marked.
static int
relay_one_by_one(pl_db *db, const pl_outbox_relay_config *cfg,
                 const pl_outbox_route *route, PGresult *res, pl_arena *a)
{
	int n = PQntuples(res), nok = 0;
	const char **ok = pl_arena_alloc(a, (size_t)n * sizeof(*ok));
	char *ids;

	if (ok == NULL)
		return -2;
	for (int i = 0; i < n; i++) {
		const char *id = PQgetvalue(res, i, 0);
		char *err = NULL;
		int rv = send_batch(cfg, route, res, i, i + 1, a, &err);
		int left = rv == PL_INVALID_ARGUMENT ? 1 : n - i;

		if (rv == PL_OK) {
			ok[nok++] = id;
			continue;
		}
		// Refused: this one is rescheduled. Anything else (the
		// consumer went away): this one and the rest, at once.
		if ((ids = row_ids(res, i, left, a)) == NULL ||
		    mark_failed(db, cfg, route, ids, err ? err : "failed") !=
		            PL_OK)
			return -2;
		pl_warn("outbox: %s could not take event %s (%s)%s",
		        route->destination, id, err ? err : "failed",
		        rv == PL_INVALID_ARGUMENT
		                ? ": retried later, the others go on"
		                : "");
		if (rv != PL_INVALID_ARGUMENT)
			break;
	}
	if (nok == 0)
		return -1;
	if ((ids = pl_db_array(a, ok, (size_t)nok)) == NULL ||
	    mark_delivered(db, cfg, route, ids) != PL_OK)
		return -2;
	return nok;
}

// Rows a pass claims: the configured batch, or the default when it is
// unset or out of range.
static int
batch_rows(const pl_outbox_relay_config *cfg)
{
	return cfg->batch > 0 && cfg->batch <= PL_OUTBOX_MAX_BATCH
	               ? cfg->batch
	               : DEFAULT_BATCH;
}

int
pl_outbox_relay_once(pl_db *db, const pl_outbox_relay_config *cfg,
                     const pl_outbox_route *route, pl_arena *a)
{
	char sql[1024], batch[16];
	const char *p[2];
	PGresult *res = NULL;
	char *ids, *err = NULL;
	int n, rv, delivered = -1;

	if (!schema_ok(cfg->schema))
		return -1;
	snprintf(batch, sizeof(batch), "%d", batch_rows(cfg));
	if (pl_db_command(db, "BEGIN", 0, NULL) != PL_OK)
		return -1;
	snprintf(sql, sizeof(sql),
	         "WITH due AS (SELECT id, destination FROM %s.outbox "
	         "WHERE destination = $1 AND delivered_at IS NULL AND "
	         "next_attempt_at <= now() ORDER BY next_attempt_at, id LIMIT "
	         "$2 "
	         "FOR UPDATE SKIP LOCKED) "
	         "SELECT o.id, o.tenant_id, o.type, "
	         "to_char(o.occurred_at AT TIME ZONE 'UTC', "
	         "'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), o.dimensions::text, "
	         "o.payload::text FROM %s.outbox o JOIN due USING (id, "
	         "destination) "
	         "ORDER BY o.id",
	         cfg->schema, cfg->schema);
	p[0] = route->destination;
	p[1] = batch;
	res = pl_db_exec(db, sql, 2, p);
	if (pl_db_result_status(res) != PL_OK)
		goto out_rollback;
	if ((n = PQntuples(res)) == 0) {
		delivered = 0;
		goto out_rollback;
	}
	if ((ids = row_ids(res, 0, n, a)) == NULL)
		goto out_rollback;

	rv = send_batch(cfg, route, res, 0, n, a, &err);
	if (rv == PL_OK) {
		if (mark_delivered(db, cfg, route, ids) != PL_OK)
			goto out_rollback;
		delivered = n;
	} else if (rv == PL_INVALID_ARGUMENT && n > 1) {
		if ((delivered = relay_one_by_one(db, cfg, route, res, a)) ==
		    -2) {
			delivered = -1;
			goto out_rollback;
		}
	} else {
		if (mark_failed(db, cfg, route, ids, err ? err : "failed") !=
		    PL_OK)
			goto out_rollback;
		pl_warn("outbox: could not deliver %d event(s) to %s: %s", n,
		        route->destination, err ? err : "failed");
	}
	PQclear(res);
	res = NULL;
	if (pl_db_command(db, "COMMIT", 0, NULL) != PL_OK)
		return -1;
	return delivered;

out_rollback:
	if (res != NULL)
		PQclear(res);
	pl_db_command(db, "ROLLBACK", 0, NULL);
	return delivered;
}

int
pl_outbox_prune(pl_db *db, const char *schema, int64_t keep_s, int chunk,
                int64_t budget_ms)
{
	char sql[512], keep[24], lim[16];
	const char *p[2] = { keep, lim };
	int64_t end = pl_now_ns() + budget_ms * 1000000;
	int total = 0;

	if (!schema_ok(schema) || keep_s < 0 || chunk < 1)
		return -1;
	snprintf(keep, sizeof(keep), "%lld", (long long)keep_s);
	snprintf(lim, sizeof(lim), "%d", chunk);
	// Both times are older than the cut-off: occurred_at finds the pages
	// (BRIN), delivered_at decides. An event's occurred_at is its
	// producer's and precedes its delivery. No sequential scan: that
	// would read every row kept to find the few old ones.
	snprintf(sql, sizeof(sql),
	         "DELETE FROM %s.outbox o USING (SELECT x.id, x.destination "
	         "FROM %s.outbox x WHERE x.occurred_at < now() - $1 * "
	         "interval '1 second' AND x.delivered_at < now() - $1 * "
	         "interval '1 second' LIMIT $2 FOR UPDATE SKIP LOCKED) d "
	         "WHERE o.id = d.id AND o.destination = d.destination",
	         schema, schema);
	for (;;) {
		PGresult *r = NULL;
		int n;

		if (pl_db_command(db, "BEGIN", 0, NULL) != PL_OK)
			return -1;
		if (pl_db_command(db, "SET LOCAL enable_seqscan = off", 0,
		                  NULL) != PL_OK ||
		    (r = pl_db_exec(db, sql, 2, p)) == NULL ||
		    pl_db_result_status(r) != PL_OK) {
			if (r != NULL)
				pl_warn("outbox prune in %s: %s", schema,
				        PQresultErrorMessage(r));
			PQclear(r);
			pl_db_command(db, "ROLLBACK", 0, NULL);
			return -1;
		}
		n = atoi(PQcmdTuples(r));
		PQclear(r);
		if (pl_db_command(db, "COMMIT", 0, NULL) != PL_OK)
			return -1;
		total += n;
		if (n < chunk || pl_now_ns() >= end)
			return total;
	}
}

static void *
relay_main(void *arg)
{
	pl_outbox_relay *r = arg;
	pl_db *db = pl_db_open(r->cfg.database_url);
	pl_arena a;
	int64_t idle = r->cfg.idle_ms > 0 ? r->cfg.idle_ms : DEFAULT_IDLE_MS;
	int64_t last_gc = 0;
	int full = batch_rows(&r->cfg);

	pthread_setname_np(pthread_self(), "outbox-relay");
	pl_arena_init(&a, 0, 64u << 20);
	for (;;) {
		bool busy = false;
		struct timespec ts;

		pthread_mutex_lock(&r->mtx);
		if (r->stop) {
			pthread_mutex_unlock(&r->mtx);
			break;
		}
		pthread_mutex_unlock(&r->mtx);
		for (const pl_outbox_route *rt = r->cfg.routes;
		     rt->destination != NULL; rt++) {
			int n = pl_outbox_relay_once(db, &r->cfg, rt, &a);
			pl_arena_reset(&a);
			// Only a full batch says more is waiting. After a
			// partial one the relay waits too: a steady stream of
			// events goes in a few large batches (a claim, a send
			// and a mark each, ~0.5 ms of the database a batch
			// whatever it holds) rather than one per few events.
			if (n >= full)
				busy = true;
		}
		if (pl_now_ns() - last_gc > PRUNE_EVERY_NS) {
			// Delivered rows are kept (a week by default) for
			// inspection, then deleted a chunk at a time.
			pl_outbox_prune(db, r->cfg.schema,
			                r->cfg.keep_s > 0 ? r->cfg.keep_s
			                                  : DEFAULT_KEEP_S,
			                PRUNE_CHUNK, PRUNE_BUDGET_MS);
			last_gc = pl_now_ns();
		}
		if (busy)
			continue;
		ts = pl_timespec_in(CLOCK_REALTIME, idle * 1000000);
		pthread_mutex_lock(&r->mtx);
		if (!r->stop)
			pthread_cond_timedwait(&r->cv, &r->mtx, &ts);
		pthread_mutex_unlock(&r->mtx);
	}
	pl_arena_fini(&a);
	pl_db_close(db);
	return NULL;
}

int
pl_outbox_relay_start(pl_outbox_relay **out, const pl_outbox_relay_config *cfg)
{
	pl_outbox_relay *r;

	*out = NULL;
	if (!schema_ok(cfg->schema) || cfg->routes == NULL ||
	    cfg->database_url == NULL)
		return PL_INVALID_ARGUMENT;
	if ((r = calloc(1, sizeof(*r))) == NULL)
		return PL_RESOURCE_EXHAUSTED;
	r->cfg = *cfg;
	pthread_mutex_init(&r->mtx, NULL);
	pthread_cond_init(&r->cv, NULL);
	if (pthread_create(&r->thr, NULL, relay_main, r) != 0) {
		pthread_mutex_destroy(&r->mtx);
		pthread_cond_destroy(&r->cv);
		free(r);
		return PL_RESOURCE_EXHAUSTED;
	}
	*out = r;
	return PL_OK;
}

void
pl_outbox_relay_stop(pl_outbox_relay *r)
{
	if (r == NULL)
		return;
	pthread_mutex_lock(&r->mtx);
	r->stop = true;
	pthread_cond_signal(&r->cv);
	pthread_mutex_unlock(&r->mtx);
	pthread_join(r->thr, NULL);
	pthread_mutex_destroy(&r->mtx);
	pthread_cond_destroy(&r->cv);
	free(r);
}
