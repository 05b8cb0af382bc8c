// The life of a service process, the same for every service (STYLE: "main.c
// — config, database, listen, wait for a signal, stop cleanly"): read the
// common configuration and the service's own, apply the service's embedded
// migrations, start the RPC server (a database connection and an HTTP client
// per worker) and the ops endpoints, run background jobs, wait for SIGTERM,
// stop accepting, finish in-flight calls, exit 0.
#ifndef PL_SERVICE_H
#define PL_SERVICE_H

#include <stdbool.h>
#include <stddef.h>

#include "pl/cfg.h"
#include "pl/db.h"
#include "pl/httpc.h"
#include "pl/migrate.h"
#include "pl/rpc.h"

// What each worker thread owns; call->worker points at it.
typedef struct pl_worker {
	int idx;
	pl_db *db;
	pl_httpc *http;
} pl_worker;

static inline pl_db *
pl_call_db(const pl_call *call)
{
	return ((pl_worker *)call->worker)->db;
}

static inline pl_httpc *
pl_call_http(const pl_call *call)
{
	return ((pl_worker *)call->worker)->http;
}

// The configuration every service reads (PARLEY_*).
typedef struct pl_service_cfg {
	char *listen;       // PARLEY_LISTEN
	int64_t ops_port;   // PARLEY_OPS_PORT (0: off)
	char *ops_bind;     // PARLEY_OPS_BIND
	char *database_url; // PARLEY_<SVC>_DATABASE_URL or PARLEY_DATABASE_URL
	char *secret;       // PARLEY_SERVICE_SECRET
	int64_t workers;    // PARLEY_WORKERS
	char *log_level;    // PARLEY_LOG_LEVEL
	char *tls_cert;     // PARLEY_TLS_CERT (for tls+tcp:// listeners)
	char *tls_key;      // PARLEY_TLS_KEY
} pl_service_cfg;

typedef struct pl_service_def {
	const char *name;   // "billing"
	const char *schema; // its PostgreSQL schema
	const pl_rpc_service *const *services;
	const pl_migration *migrations;
	size_t n_migrations;
	const char *default_listen; // "tcp://127.0.0.1:7103"
	int default_ops_port;
	const pl_cfg_entry *cfg; // the service's own table, or NULL
	// After config and migrations, before serving: e.g. clients to other
	// services. Returns 0 or a status that stops start-up.
	int (*init)(const pl_service_cfg *cfg, void **arg);
	// Background jobs (relays, schedulers) started after the server and
	// stopped before it; may be NULL.
	int (*start)(void *arg);
	void (*stop)(void *arg);
	void (*fini)(void *arg);
} pl_service_def;

// Runs the service until SIGTERM or SIGINT; returns the process exit code.
int pl_service_main(int argc, char **argv, const pl_service_def *def);

// Applies def's migrations to url once (what start-up does; tests use it).
// Returns the number applied or -1 with err set.
int pl_service_migrate(const pl_service_def *def, const char *url, char *err,
                       size_t errlen);

// Worker state for tests that dispatch without a socket.
int pl_worker_open(pl_worker *w, const char *database_url);
void pl_worker_close(pl_worker *w);

#endif
