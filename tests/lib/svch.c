#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "parley/billing/v1/billing.pb-c.h"
#include "pl/log.h"
#include "svch.h"

static int seq;

// Worker state as the real process makes it.
static int
worker_init(void *arg, int idx, void **state)
{
	svch *h = arg;
	pl_worker *w = malloc(sizeof(*w));

	if (w == NULL || pl_worker_open(w, h->db_url) != PL_OK) {
		free(w);
		return PL_RESOURCE_EXHAUSTED;
	}
	w->idx = idx;
	*state = w;
	return PL_OK;
}

static void
worker_fini(void *arg, void *state)
{
	(void)arg;
	pl_worker_close(state);
	free(state);
}

int
svch_start(svch *h, pgh *pg, const pl_service_def *def, int workers,
           const char *const *env)
{
	return svch_start_at(h, pg, def, workers, env, NULL);
}

int
svch_start_at(svch *h, pgh *pg, const pl_service_def *def, int workers,
              const char *const *env, const char *listen)
{
	char both[256];
	char sql[512], db[64], role[64];
	char err[256];
	pl_service_cfg cfg;
	pl_rpc_server_config rc = { 0 };
	pl_rpc_client_config cc = { 0 };

	memset(h, 0, sizeof(*h));
	h->def = def;
	pl_arena_init(&h->arena, 0, 0);
	snprintf(db, sizeof(db), "%s_%d", def->schema, seq);
	snprintf(role, sizeof(role), "parley_%s", def->schema);
	snprintf(h->addr, sizeof(h->addr), "inproc://svch-%s-%d", def->name,
	         seq++);
	if (pgh_create_db(pg, db, h->admin_url, sizeof(h->admin_url)) != 0)
		return -1;
	snprintf(sql, sizeof(sql),
	         "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE "
	         "rolname = "
	         "'%s') THEN CREATE ROLE %s LOGIN NOSUPERUSER NOBYPASSRLS; END "
	         "IF; "
	         "END $$; GRANT CREATE, CONNECT ON DATABASE %s TO %s;",
	         role, role, db, role);
	if (pgh_exec_url(h->admin_url, sql) != 0)
		return -1;
	// Extensions need a superuser; the service's migrations only use them.
	if (pgh_exec_url(h->admin_url,
	                 "CREATE EXTENSION IF NOT EXISTS pg_trgm; "
	                 "CREATE EXTENSION IF NOT EXISTS pgcrypto;") != 0)
		return -1;
	if (pgh_url(pg, role, db, h->db_url, sizeof(h->db_url)) != 0)
		return -1;
	if (pl_service_migrate(def, h->db_url, err, sizeof(err)) < 0) {
		fprintf(stderr, "svch: migrations of %s failed: %s\n",
		        def->name, err);
		return -1;
	}
	for (int i = 0; env != NULL && env[i] != NULL; i++)
		putenv((char *)env[i]);
	if (def->cfg != NULL && pl_cfg_load(def->cfg, err, sizeof(err)) != 0) {
		fprintf(stderr, "svch: config: %s\n", err);
		return -1;
	}
	memset(&cfg, 0, sizeof(cfg));
	cfg.listen = h->addr;
	cfg.database_url = h->db_url;
	cfg.secret = SVCH_SECRET;
	cfg.workers = workers > 0 ? workers : 2;
	cfg.log_level = "warn";
	if (def->init != NULL && def->init(&cfg, &h->arg) != PL_OK) {
		fprintf(stderr, "svch: init of %s failed\n", def->name);
		return -1;
	}
	if (pl_worker_open(&h->w, h->db_url) != PL_OK)
		return -1;

	rc.name = def->name;
	rc.listen = h->addr;
	if (listen != NULL) {
		snprintf(both, sizeof(both), "%s,%s", h->addr, listen);
		rc.listen = both;
	}
	rc.workers = (int)cfg.workers;
	rc.secret = SVCH_SECRET;
	rc.arg = h->arg;
	rc.worker_arg = h;
	rc.worker_init = worker_init;
	rc.worker_fini = worker_fini;
	if (pl_rpc_server_open(&h->srv, &rc, def->services) != PL_OK ||
	    pl_rpc_server_start(h->srv) != PL_OK)
		return -1;
	cc.urls = h->addr;
	cc.secret = SVCH_SECRET;
	cc.service = "test";
	cc.timeout_ms = 30000;
	if (pl_rpc_client_open(&h->cli, &cc) != PL_OK)
		return -1;
	h->stats = pl_db_analyzer_start(h->db_url, def->schema, 0);
	return 0;
}

void
svch_stop(svch *h)
{
	if (h->cli)
		pl_rpc_client_close(h->cli);
	if (h->srv)
		pl_rpc_server_close(h->srv);
	pl_db_analyzer_stop(h->stats);
	if (h->def && h->def->stop && h->jobs)
		h->def->stop(h->arg);
	if (h->def && h->def->fini)
		h->def->fini(h->arg);
	if (h->def && h->def->cfg)
		pl_cfg_free(h->def->cfg);
	pl_worker_close(&h->w);
	pl_arena_fini(&h->arena);
	memset(h, 0, sizeof(*h));
}

int
svch_start_jobs(svch *h)
{
	int rv = PL_OK;

	if (h->def->start != NULL && !h->jobs) {
		rv = h->def->start(h->arg);
		h->jobs = rv == PL_OK;
	}
	return rv;
}

pl_principal
svch_user(const char *tenant_id, const char *user_id, int role)
{
	pl_principal p = PARLEY__RPC__V1__PRINCIPAL__INIT;
	p.kind = PARLEY__RPC__V1__PRINCIPAL_KIND__PRINCIPAL_KIND_USER;
	p.tenant_id = (char *)tenant_id;
	p.user_id = (char *)user_id;
	p.role = (Parley__Rpc__V1__Role)role;
	return p;
}

pl_principal
svch_api_key(const char *tenant_id, char **scopes, size_t n)
{
	pl_principal p = PARLEY__RPC__V1__PRINCIPAL__INIT;
	p.kind = PARLEY__RPC__V1__PRINCIPAL_KIND__PRINCIPAL_KIND_API_KEY;
	p.tenant_id = (char *)tenant_id;
	p.scopes = scopes;
	p.n_scopes = n;
	return p;
}

pl_principal
svch_service(void)
{
	pl_principal p = PARLEY__RPC__V1__PRINCIPAL__INIT;
	p.kind = PARLEY__RPC__V1__PRINCIPAL_KIND__PRINCIPAL_KIND_SERVICE;
	return p;
}

int
svch_call(svch *h, const char *method, const pl_principal *p,
          const ProtobufCMessage *in,
          const ProtobufCMessageDescriptor *out_desc, void **out,
          pl_rpc_result *res)
{
	pl_rpc_opts o = { 0 };
	o.principal = p;
	return pl_rpc_call(h->cli, method, in, out_desc, out, &h->arena, &o,
	                   res);
}

int
svch_billing_tenant(svch *h, char tid[PL_UUID_STRLEN + 1],
                    const char *plan_code)
{
	Parley__Billing__V1__DeliverEventsRequest in =
	        PARLEY__BILLING__V1__DELIVER_EVENTS_REQUEST__INIT;
	Parley__Billing__V1__DeliverEventsResponse *out = NULL;
	Parley__Rpc__V1__Event ev = PARLEY__RPC__V1__EVENT__INIT,
	                       *evs[1] = { &ev };
	Parley__Rpc__V1__Json pay = PARLEY__RPC__V1__JSON__INIT;
	pl_principal svc = svch_service();
	char id[PL_UUID_STRLEN + 1], text[128];
	int rv;

	pl_uuid7_str(tid);
	pl_uuid7_str(id);
	snprintf(text, sizeof(text), "{\"plan_code\":\"%s\"}", plan_code);
	pay.text = text;
	ev.id = id;
	ev.tenant_id = tid;
	ev.type = "tenant.created";
	ev.payload = &pay;
	in.events = evs;
	in.n_events = 1;
	rv = svch_call(
	        h, "/parley.billing.v1.Billing/DeliverEvents", &svc, &in.base,
	        &parley__billing__v1__deliver_events_response__descriptor,
	        (void **)&out, NULL);
	if (rv == PL_OK && out->accepted != 1)
		rv = PL_INTERNAL;
	return rv;
}
