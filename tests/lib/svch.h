// A service under test: a fresh database owned by the service's own role
// (not a superuser, so row-level security applies), its migrations applied,
// its real RPC server on inproc:// with worker state, and a client.
//
//	static pgh pg;  svch h;
//	pgh_start(&pg);
//	svch_start(&h, &pg, &billing_service_def);
//	pl_rpc_call(h.cli, "/parley.billing.v1.Billing/GetUsage", ...);
//	svch_stop(&h);  pgh_stop(&pg);
#ifndef SVCH_H
#define SVCH_H

#include "pgh.h"
#include "pl/id.h"
#include "pl/rpc.h"
#include "pl/service.h"

#define SVCH_SECRET "test-service-secret-0123456789"

typedef struct svch {
	const pl_service_def *def;
	char db_url[PGH_URL_MAX];    // as the service's role
	char admin_url[PGH_URL_MAX]; // same db, superuser
	char addr[96];               // inproc://...
	pl_rpc_server *srv;
	pl_rpc_client *cli;
	pl_arena arena;        // for the test's calls; reset as you like
	void *arg;             // what def->init made
	pl_worker w;           // a worker of the test's own, for direct SQL
	bool jobs;             // def->start ran
	pl_db_analyzer *stats; // as pl_service_main runs it
} svch;

// Creates database <schema>_<n> and role parley_<schema> (LOGIN, CREATE on
// the database, no superuser), applies the migrations as that role, runs
// def->init with a config pointing at it, starts the server (workers
// threads; 0: 2) and a client. env is set before init (NULL-terminated
// "NAME=value" list or NULL) for the service's own config. Returns 0 or -1.
int svch_start(svch *h, pgh *pg, const pl_service_def *def, int workers,
               const char *const *env);

// Like svch_start, listening on listen (e.g. "tcp://127.0.0.1:7201") as
// well as inproc, for benchmarks that call over a real transport.
int svch_start_at(svch *h, pgh *pg, const pl_service_def *def, int workers,
                  const char *const *env, const char *listen);

// Starts the service's background jobs (def->start: relays, schedulers)
// as the real process does; svch_stop stops them. Returns a status.
int svch_start_jobs(svch *h);

// Stops everything and frees; the database stays until the cluster goes.
void svch_stop(svch *h);

// Principals for calls.
pl_principal svch_user(const char *tenant_id, const char *user_id, int role);
pl_principal svch_api_key(const char *tenant_id, char **scopes, size_t n);
pl_principal svch_service(void);

// Calls method on the service under test with principal p (NULL: the
// service itself), returning the status; *out in h->arena.
int svch_call(svch *h, const char *method, const pl_principal *p,
              const ProtobufCMessage *in,
              const ProtobufCMessageDescriptor *out_desc, void **out,
              pl_rpc_result *res);

// For a billing service under test: a new tenant id in tid and its
// tenant.created event (subscribed to plan_code) delivered through
// DeliverEvents. PL_OK when the event was accepted, else a status.
int svch_billing_tenant(svch *h, char tid[PL_UUID_STRLEN + 1],
                        const char *plan_code);

#endif
