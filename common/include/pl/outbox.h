// The transactional outbox (DESIGN §3). A service writes each event it must
// tell another service about into its own <schema>.outbox table, in the
// same transaction as the change, one row per destination. A relay thread
// claims due rows with FOR UPDATE SKIP LOCKED (so any number of replicas
// share the work), sends them in batches by RPC with the event id, marks
// them delivered, and backs off on failure. Receivers de-duplicate by id:
// delivery is at least once, counting is exactly once.
//
// The table, which every service's first migration creates (it is the
// service's own bookkeeping, not tenant data, so it has no RLS):
//
//   CREATE TABLE <schema>.outbox (
//     id              uuid        NOT NULL,   -- the event id (UUIDv7)
//     destination     text        NOT NULL,   -- "analytics", "billing", ...
//     tenant_id       uuid        NOT NULL,
//     type            text        NOT NULL,
//     occurred_at     timestamptz NOT NULL DEFAULT now(),
//     dimensions      jsonb       NOT NULL DEFAULT '{}',
//     payload         jsonb       NOT NULL DEFAULT '{}',
//     attempts        int         NOT NULL DEFAULT 0,
//     next_attempt_at timestamptz NOT NULL DEFAULT now(),
//     last_error      text,
//     delivered_at    timestamptz,
//     PRIMARY KEY (id, destination)
//   );
//   CREATE INDEX outbox_due ON <schema>.outbox (next_attempt_at)
//     WHERE delivered_at IS NULL;
#ifndef PL_OUTBOX_H
#define PL_OUTBOX_H

#include <stddef.h>

#include "pl/db.h"
#include "pl/rpc.h"

// The SQL above for schema, for migrations written by hand to copy.
#define PL_OUTBOX_MAX_BATCH 500

typedef struct pl_outbox_event {
	const char *tenant_id;
	const char *type;            // "message.received"
	const char *payload_json;    // a JSON object, or NULL for {}
	const char *dimensions_json; // {"channel_id":..,...} or NULL
	const char *occurred_at;     // RFC 3339, or NULL for now()
} pl_outbox_event;

// Adds ev once for each destination (NULL-terminated), with one new event
// id shared by all rows (written into id_out when not NULL, 37 bytes).
// Call it inside the transaction that makes the change. Returns a status.
int pl_outbox_add(pl_db *db, const char *schema, const char *const *dests,
                  const pl_outbox_event *ev, char *id_out);

typedef struct pl_outbox_route {
	const char *destination; // as written by pl_outbox_add
	pl_rpc_client *client;   // the consuming service
	const char *method;      // its DeliverEvents or Track method
} pl_outbox_route;

typedef struct pl_outbox_relay pl_outbox_relay;

typedef struct pl_outbox_relay_config {
	const char *database_url;
	const char *schema;
	const char *source;            // this service's name, Event.source
	const pl_outbox_route *routes; // ends with { NULL }
	int batch;                     // rows per RPC (0: 200)
	int64_t idle_ms;               // pause after a partial pass (0: 200)
	int64_t backoff_max_ms;        // (0: 60000)
	int64_t keep_s; // delivered rows kept this long (0: 7 days)
} pl_outbox_relay_config;

// Starts the relay thread. Returns a status.
int pl_outbox_relay_start(pl_outbox_relay **out,
                          const pl_outbox_relay_config *cfg);
// Stops it after the batch in hand; frees.
void pl_outbox_relay_stop(pl_outbox_relay *r);

// One relay pass for one destination, on the caller's connection: claims up
// to batch due rows, sends them, marks them. Returns the number delivered,
// or -1 when the send failed (rows rescheduled). A batch the consumer
// refuses as INVALID_ARGUMENT is sent again one event at a time: what it
// takes is delivered, what it refuses is rescheduled alone (an event it
// cannot take yet never holds back the others). Tests use it directly.
int pl_outbox_relay_once(pl_db *db, const pl_outbox_relay_config *cfg,
                         const pl_outbox_route *route, pl_arena *arena);

// Deletes rows delivered more than keep_s seconds ago, at most chunk per
// transaction, chunk after chunk until fewer are left or budget_ms has
// passed; rows not delivered stay. The relay runs it every minute. Each
// service's outbox has a BRIN index on occurred_at (the rows are appended
// in that order), so a chunk reads the old pages, not the table. Returns
// the rows deleted, or -1 on a database error.
int pl_outbox_prune(pl_db *db, const char *schema, int64_t keep_s, int chunk,
                    int64_t budget_ms);

#endif
