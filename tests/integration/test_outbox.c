// The outbox and its relay against a real PostgreSQL: events written in a
// transaction are delivered once the transaction commits, never when it
// rolls back; a consumer that is down delays delivery without losing
// anything; two relays at once deliver every event, none twice per pass.
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "echo_service.h"
#include "pgh.h"
#include "pl/db.h"
#include "pl/log.h"
#include "pl/outbox.h"
#include "pl/rpc.h"

#define SECRET "outbox-test-secret-0123"

static const char *const dests[] = { "echo", NULL };

typedef struct fx {
	pgh pg;
	char url[PGH_URL_MAX];
	pl_rpc_server *srv;
	pl_rpc_client *cli;
	pl_db *db;
	pl_arena arena;
	pl_outbox_route routes[2];
	pl_outbox_relay_config cfg;
} fx;

static int
setup(void **state)
{
	static fx f;
	static const pl_rpc_service *const svcs[] = { &echo_service, NULL };
	pl_rpc_server_config sc = { 0 };
	pl_rpc_client_config cc = { 0 };
	int rc;

	memset(&f, 0, sizeof(f));
	*state = &f;
	pl_log_init("test", PL_LOG_ERROR);
	rc = pgh_start(&f.pg);
	if (rc == -2)
		return -1;
	if (rc == -1)
		return 0;
	if (pgh_create_db(&f.pg, "outbox_test", f.url, sizeof(f.url)) != 0)
		return -1;
	if (pgh_exec_url(
	            f.url,
	            "CREATE SCHEMA svc; CREATE TABLE svc.outbox ("
	            " id uuid NOT NULL, destination text NOT NULL,"
	            " tenant_id uuid NOT NULL, type text NOT NULL,"
	            " occurred_at timestamptz NOT NULL DEFAULT now(),"
	            " dimensions jsonb NOT NULL DEFAULT '{}',"
	            " payload jsonb NOT NULL DEFAULT '{}',"
	            " attempts int NOT NULL DEFAULT 0,"
	            " next_attempt_at timestamptz NOT NULL DEFAULT now(),"
	            " last_error text, delivered_at timestamptz,"
	            " PRIMARY KEY (id, destination));"
	            "CREATE INDEX outbox_due ON svc.outbox (next_attempt_at)"
	            " WHERE delivered_at IS NULL;"
	            "CREATE INDEX outbox_occurred ON svc.outbox USING brin"
	            " (occurred_at) WITH (autosummarize = on);") != 0)
		return -1;
	sc.name = "echo";
	sc.listen = "inproc://outbox-consumer";
	sc.secret = SECRET;
	sc.workers = 2;
	if (pl_rpc_server_open(&f.srv, &sc, svcs) != PL_OK ||
	    pl_rpc_server_start(f.srv) != PL_OK)
		return -1;
	cc.urls = "inproc://outbox-consumer";
	cc.secret = SECRET;
	cc.service = "svc";
	if (pl_rpc_client_open(&f.cli, &cc) != PL_OK)
		return -1;
	f.db = pl_db_open(f.url);
	pl_arena_init(&f.arena, 0, 0);
	f.routes[0].destination = "echo";
	f.routes[0].client = f.cli;
	f.routes[0].method = "/parley.test.v1.Echo/DeliverEvents";
	f.cfg.database_url = f.url;
	f.cfg.schema = "svc";
	f.cfg.source = "svc";
	f.cfg.routes = f.routes;
	f.cfg.batch = 50;
	f.cfg.idle_ms = 20;
	f.cfg.backoff_max_ms = 1;
	return 0;
}

static int
teardown(void **state)
{
	fx *f = *state;
	if (f->db)
		pl_db_close(f->db);
	pl_rpc_client_close(f->cli);
	pl_rpc_server_close(f->srv);
	pl_arena_fini(&f->arena);
	pgh_stop(&f->pg);
	return 0;
}

static void
reset_consumer(void)
{
	pthread_mutex_lock(&echo_events_mtx);
	echo_events_distinct = 0;
	echo_events_delivered = 0;
	echo_events_fail = false;
	pthread_mutex_unlock(&echo_events_mtx);
}

static int
distinct(void)
{
	int n;
	pthread_mutex_lock(&echo_events_mtx);
	n = echo_events_distinct;
	pthread_mutex_unlock(&echo_events_mtx);
	return n;
}

typedef struct add_arg {
	int n;
	int rv; // what fn returns: PL_OK commits
	char last_id[40];
} add_arg;

static int
add_events(pl_db *db, void *argp)
{
	add_arg *a = argp;
	pl_outbox_event ev = { 0 };

	ev.tenant_id = "0192b0c4-0000-7000-8000-0000000000aa";
	ev.type = "message.received";
	ev.payload_json = "{\"text\":\"hola ñ 👋\"}";
	ev.dimensions_json =
	        "{\"channel_id\":\"c1\",\"conversation_id\":\"v1\"}";
	for (int i = 0; i < a->n; i++)
		if (pl_outbox_add(db, "svc", dests, &ev, a->last_id) != PL_OK)
			return PL_INTERNAL;
	return a->rv;
}

static long
count(fx *f, const char *where)
{
	char sql[256];
	PGresult *r;
	long n;

	snprintf(sql, sizeof(sql), "SELECT count(*) FROM svc.outbox WHERE %s",
	         where);
	r = pl_db_exec(f->db, sql, 0, NULL);
	assert_int_equal(pl_db_result_status(r), PL_OK);
	n = atol(PQgetvalue(r, 0, 0));
	PQclear(r);
	return n;
}

static void
test_commit_delivers_rollback_does_not(void **state)
{
	fx *f = *state;
	add_arg a = { 5, PL_OK, "" };
	add_arg b = { 3, PL_ABORTED + 100, "" }; // a failure: rolled back

	if (!f->pg.running)
		skip();
	pgh_exec_url(f->url, "TRUNCATE svc.outbox");
	reset_consumer();
	assert_int_equal(pl_db_tx(f->db, NULL, add_events, &a), PL_OK);
	assert_int_not_equal(pl_db_tx(f->db, NULL, add_events, &b), PL_OK);
	assert_int_equal(count(f, "true"), 5);
	assert_int_equal(
	        pl_outbox_relay_once(f->db, &f->cfg, &f->routes[0], &f->arena),
	        5);
	assert_int_equal(distinct(), 5);
	assert_int_equal(count(f, "delivered_at IS NOT NULL"), 5);
	// Nothing more to do.
	assert_int_equal(
	        pl_outbox_relay_once(f->db, &f->cfg, &f->routes[0], &f->arena),
	        0);
	pthread_mutex_lock(&echo_events_mtx);
	assert_string_equal(echo_event_types[0], "message.received");
	pthread_mutex_unlock(&echo_events_mtx);
}

static void
test_consumer_down_then_up(void **state)
{
	fx *f = *state;
	add_arg a = { 7, PL_OK, "" };

	if (!f->pg.running)
		skip();
	pgh_exec_url(f->url, "TRUNCATE svc.outbox");
	reset_consumer();
	assert_int_equal(pl_db_tx(f->db, NULL, add_events, &a), PL_OK);
	echo_events_fail = true;
	assert_int_equal(
	        pl_outbox_relay_once(f->db, &f->cfg, &f->routes[0], &f->arena),
	        -1);
	assert_int_equal(count(f, "delivered_at IS NULL AND attempts = 1 AND "
	                          "last_error LIKE 'UNAVAILABLE%'"),
	                 7);
	pthread_mutex_lock(&echo_events_mtx);
	echo_events_fail = false;
	pthread_mutex_unlock(&echo_events_mtx);
	// The back-off is capped at 1 ms here; wait it out.
	usleep(50 * 1000);
	assert_int_equal(
	        pl_outbox_relay_once(f->db, &f->cfg, &f->routes[0], &f->arena),
	        7);
	assert_int_equal(distinct(), 7);
}

// The consumer refuses a batch because of one event it cannot take (an
// event type it does not know yet, as in a rolling upgrade): the others
// are delivered, that one is rescheduled alone, and it goes once the
// consumer takes it.
static void
test_refused_event_holds_nothing_back(void **state)
{
	fx *f = *state;
	add_arg a = { 5, PL_OK, "" };
	pl_outbox_event ev = { 0 };
	char poison[40];

	if (!f->pg.running)
		skip();
	pgh_exec_url(f->url, "TRUNCATE svc.outbox");
	reset_consumer();
	assert_int_equal(pl_db_tx(f->db, NULL, add_events, &a), PL_OK);
	ev.tenant_id = "0192b0c4-0000-7000-8000-0000000000aa";
	ev.type = "test.poison";
	assert_int_equal(pl_outbox_add(f->db, "svc", dests, &ev, poison),
	                 PL_OK);
	assert_int_equal(
	        pl_outbox_relay_once(f->db, &f->cfg, &f->routes[0], &f->arena),
	        5);
	assert_int_equal(distinct(), 5);
	assert_int_equal(count(f, "delivered_at IS NOT NULL"), 5);
	assert_int_equal(count(f, "delivered_at IS NULL AND type = "
	                          "'test.poison' AND attempts = 1 AND "
	                          "last_error LIKE 'INVALID_ARGUMENT%'"),
	                 1);
	// Refused alone: nothing delivered, rescheduled again.
	usleep(50 * 1000);
	assert_int_equal(
	        pl_outbox_relay_once(f->db, &f->cfg, &f->routes[0], &f->arena),
	        -1);
	assert_int_equal(count(f, "delivered_at IS NULL AND attempts = 2"), 1);
	// The consumer learns the type: delivered.
	pgh_exec_url(f->url, "UPDATE svc.outbox SET type = 'test.known' "
	                     "WHERE type = 'test.poison'");
	usleep(50 * 1000);
	assert_int_equal(
	        pl_outbox_relay_once(f->db, &f->cfg, &f->routes[0], &f->arena),
	        1);
	assert_int_equal(distinct(), 6);
}

static void
test_two_relays_share_the_work(void **state)
{
	fx *f = *state;
	add_arg a = { 400, PL_OK, "" };
	pl_outbox_relay *r1, *r2;

	if (!f->pg.running)
		skip();
	pgh_exec_url(f->url, "TRUNCATE svc.outbox");
	reset_consumer();
	assert_int_equal(pl_db_tx(f->db, NULL, add_events, &a), PL_OK);
	assert_int_equal(pl_outbox_relay_start(&r1, &f->cfg), PL_OK);
	assert_int_equal(pl_outbox_relay_start(&r2, &f->cfg), PL_OK);
	for (int i = 0; i < 500 && count(f, "delivered_at IS NULL") > 0; i++)
		usleep(10 * 1000);
	pl_outbox_relay_stop(r1);
	pl_outbox_relay_stop(r2);
	assert_int_equal(count(f, "delivered_at IS NULL"), 0);
	assert_int_equal(distinct(), 400);
	// SKIP LOCKED: no event was sent by both relays.
	assert_int_equal(echo_events_delivered, 400);
}

static void
test_bad_input(void **state)
{
	fx *f = *state;
	pl_outbox_event ev = { 0 };

	if (!f->pg.running)
		skip();
	ev.type = "x.y";
	// No tenant, or a schema that is not a plain identifier: refused.
	assert_int_equal(pl_outbox_add(f->db, "svc", dests, &ev, NULL),
	                 PL_INVALID_ARGUMENT);
	ev.tenant_id = "0192b0c4-0000-7000-8000-0000000000aa";
	assert_int_equal(
	        pl_outbox_add(f->db, "svc; DROP TABLE x", dests, &ev, NULL),
	        PL_INVALID_ARGUMENT);
	// A payload that is not JSON is refused by the database.
	ev.payload_json = "{not json";
	assert_int_equal(pl_outbox_add(f->db, "svc", dests, &ev, NULL),
	                 PL_INVALID_ARGUMENT);
}

// n rows of the echo destination that occurred `occurred` ago and were
// delivered `delivered` ago (NULL: not delivered).
static void
add_aged(fx *f, int n, const char *occurred, const char *delivered)
{
	char sql[512];

	snprintf(sql, sizeof(sql),
	         "INSERT INTO svc.outbox (id, destination, tenant_id, type, "
	         "occurred_at, delivered_at) SELECT gen_random_uuid(), 'echo', "
	         "'0192b0c4-0000-7000-8000-0000000000aa', 'x.y', now() - "
	         "interval '%s', %s%s%s FROM generate_series(1, %d)",
	         occurred, delivered ? "now() - interval '" : "NULL",
	         delivered ? delivered : "", delivered ? "'" : "", n);
	assert_int_equal(pl_db_command(f->db, sql, 0, NULL), PL_OK);
}

static void
test_prune(void **state)
{
	fx *f = *state;

	if (!f->pg.running)
		skip();
	assert_int_equal(
	        pl_db_command(f->db, "DELETE FROM svc.outbox", 0, NULL), PL_OK);
	add_aged(f, 25, "8 days", "8 days"); // old and delivered: go
	add_aged(f, 5, "8 days", NULL);      // never delivered: stay
	add_aged(f, 4, "1 day", "1 day");    // delivered recently: stay
	add_aged(f, 3, "8 days", "1 hour");  // delivered late: stay
	// Chunks of 10: 10, 10, then 5 (fewer than a chunk: done).
	assert_int_equal(pl_outbox_prune(f->db, "svc", 7 * 86400, 10, 60000),
	                 25);
	assert_int_equal(count(f, "true"), 12);
	assert_int_equal(count(f, "delivered_at IS NULL"), 5);
	assert_int_equal(count(f, "delivered_at > now() - interval '2 days'"),
	                 7);
	// Nothing old left: nothing more goes.
	assert_int_equal(pl_outbox_prune(f->db, "svc", 7 * 86400, 10, 60000),
	                 0);
	// The time budget ends a pass after its chunk: the rest waits for
	// the next pass.
	add_aged(f, 25, "9 days", "9 days");
	assert_int_equal(pl_outbox_prune(f->db, "svc", 7 * 86400, 10, 0), 10);
	assert_int_equal(count(f, "true"), 27);
	// A shorter keep reaches the rows delivered a day ago.
	assert_int_equal(pl_outbox_prune(f->db, "svc", 3600 * 2, 100, 60000),
	                 15 + 4);
	assert_int_equal(count(f, "true"), 8);
	// Not a schema name, or nonsense limits: refused, nothing deleted.
	assert_int_equal(
	        pl_outbox_prune(f->db, "svc; DROP TABLE x", 1, 10, 1000), -1);
	assert_int_equal(pl_outbox_prune(f->db, "svc", 1, 0, 1000), -1);
	assert_int_equal(pl_outbox_prune(f->db, "svc", -1, 10, 1000), -1);
	assert_int_equal(count(f, "true"), 8);
	assert_int_equal(
	        pl_db_command(f->db, "DELETE FROM svc.outbox", 0, NULL), PL_OK);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_commit_delivers_rollback_does_not),
		cmocka_unit_test(test_consumer_down_then_up),
		cmocka_unit_test(test_refused_event_holds_nothing_back),
		cmocka_unit_test(test_two_relays_share_the_work),
		cmocka_unit_test(test_bad_input),
		cmocka_unit_test(test_prune),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
