// pl_service_main: the process around a service's handler tables.
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pl/httpd.h"
#include "pl/log.h"
#include "pl/ops.h"
#include "pl/service.h"

typedef struct svc_state {
	const pl_service_def *def;
	pl_service_cfg cfg;
	void *arg;
} svc_state;

int
pl_worker_open(pl_worker *w, const char *database_url)
{
	memset(w, 0, sizeof(*w));
	w->db = pl_db_open(database_url);
	w->http = pl_httpc_open();
	if (w->db == NULL || w->http == NULL) {
		pl_worker_close(w);
		return PL_RESOURCE_EXHAUSTED;
	}
	return PL_OK;
}

void
pl_worker_close(pl_worker *w)
{
	if (w->db)
		pl_db_close(w->db);
	if (w->http)
		pl_httpc_close(w->http);
	w->db = NULL;
	w->http = NULL;
}

static int
worker_init(void *arg, int idx, void **state)
{
	svc_state *st = arg;
	pl_worker *w = malloc(sizeof(*w));

	if (w == NULL)
		return PL_RESOURCE_EXHAUSTED;
	if (pl_worker_open(w, st->cfg.database_url) != PL_OK) {
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

static bool
ready(void *arg, void *state, bool *db_ok, bool *mig_ok)
{
	svc_state *st = arg;
	pl_worker *w = state;
	pl_db *db = w ? w->db : pl_db_open(st->cfg.database_url);
	char err[256];
	PGconn *conn;

	*db_ok = false;
	*mig_ok = false;
	if (db == NULL)
		return false;
	if ((conn = pl_db_conn(db)) != NULL && pl_db_ping(db)) {
		*db_ok = true;
		*mig_ok = pl_migrate_status(
		                  conn, st->def->schema, st->def->migrations,
		                  st->def->n_migrations, err, sizeof(err)) == 0;
	}
	if (w == NULL)
		pl_db_close(db);
	return *db_ok && *mig_ok;
}

int
pl_service_migrate(const pl_service_def *def, const char *url, char *err,
                   size_t errlen)
{
	pl_db *db = pl_db_open(url);
	PGconn *conn;
	int n;

	if (db == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	if ((conn = pl_db_conn(db)) == NULL) {
		snprintf(err, errlen, "could not connect to the database");
		pl_db_close(db);
		return -1;
	}
	n = pl_migrate_apply(conn, def->schema, def->migrations,
	                     def->n_migrations, err, errlen);
	pl_db_close(db);
	return n;
}

int
pl_service_main(int argc, char **argv, const pl_service_def *def)
{
	svc_state st;
	char err[512], dbvar[96], deflisten[128], defops[16];
	char *own_db = NULL;
	pl_rpc_server *srv = NULL;
	pl_httpd *ops = NULL;
	pl_db_analyzer *stats = NULL;
	pl_rpc_server_config rc = { 0 };
	int rv = 1, lvl, n;
	const char *url;
	// "--migrate": apply this service's migrations and exit (the
	// Kubernetes migration Job); needs only the database URL.
	bool migrate_only = argc > 1 && strcmp(argv[1], "--migrate") == 0;

	memset(&st, 0, sizeof(st));
	st.def = def;
	snprintf(deflisten, sizeof(deflisten), "%s", def->default_listen);
	snprintf(defops, sizeof(defops), "%d", def->default_ops_port);
	n = snprintf(dbvar, sizeof(dbvar), "PARLEY_%s_DATABASE_URL", def->name);
	for (int i = 0; i < n; i++)
		dbvar[i] = (char)toupper((unsigned char)dbvar[i]);
	const pl_cfg_entry common[] = {
		{ "PARLEY_LISTEN", PL_CFG_STRING, deflisten, 0, 0,
		  &st.cfg.listen, "nng URLs to listen on, comma-separated" },
		{ "PARLEY_OPS_PORT", PL_CFG_INT, defops, 0, 65535,
		  &st.cfg.ops_port,
		  "port of /healthz /readyz /metrics (0: off)" },
		{ "PARLEY_OPS_BIND", PL_CFG_STRING, "0.0.0.0", 0, 0,
		  &st.cfg.ops_bind, "address of the ops endpoints" },
		{ "PARLEY_DATABASE_URL", PL_CFG_SECRET, "", 0, 0,
		  &st.cfg.database_url, "libpq URL of the database" },
		{ dbvar, PL_CFG_SECRET, "", 0, 0, &own_db,
		  "this service's own database URL (wins)" },
		{ "PARLEY_SERVICE_SECRET", PL_CFG_SECRET,
		  migrate_only ? "" : NULL, 0, 0, &st.cfg.secret,
		  "shared secret between Parley services" },
		{ "PARLEY_WORKERS", PL_CFG_INT, "4", 1, 256, &st.cfg.workers,
		  "worker threads, each with a database connection" },
		{ "PARLEY_LOG_LEVEL", PL_CFG_STRING, "info", 0, 0,
		  &st.cfg.log_level, "debug, info, warn or error" },
		{ "PARLEY_TLS_CERT", PL_CFG_STRING, "", 0, 0, &st.cfg.tls_cert,
		  "PEM certificate+key file for tls+tcp:// listeners" },
		{ "PARLEY_TLS_KEY", PL_CFG_STRING, "", 0, 0, &st.cfg.tls_key,
		  "unused when the certificate file holds the key" },
		{ NULL, 0, NULL, 0, 0, NULL, NULL },
	};

	pl_signals_block();
	pl_log_init(def->name, PL_LOG_INFO);
	if (pl_cfg_load(common, err, sizeof(err)) != 0 ||
	    (!migrate_only && def->cfg != NULL &&
	     pl_cfg_load(def->cfg, err, sizeof(err)) != 0)) {
		fprintf(stderr, "parley-%s: %s\n", def->name, err);
		goto out_cfg;
	}
	if ((lvl = pl_log_level_parse(st.cfg.log_level)) < 0) {
		fprintf(stderr,
		        "parley-%s: PARLEY_LOG_LEVEL: must be debug, "
		        "info, warn or error\n",
		        def->name);
		goto out_cfg;
	}
	pl_log_init(def->name, (pl_log_level)lvl);
	if (!migrate_only && strlen(st.cfg.secret) < 16) {
		fprintf(stderr,
		        "parley-%s: PARLEY_SERVICE_SECRET: must be at "
		        "least 16 characters\n",
		        def->name);
		goto out_cfg;
	}
	if (own_db != NULL && own_db[0] != '\0') {
		free(st.cfg.database_url);
		st.cfg.database_url = own_db;
		own_db = NULL;
	}
	url = st.cfg.database_url;
	if (url == NULL || url[0] == '\0') {
		fprintf(stderr,
		        "parley-%s: %s or PARLEY_DATABASE_URL: required "
		        "but not set\n",
		        def->name, dbvar);
		goto out_cfg;
	}

	if ((n = pl_service_migrate(def, url, err, sizeof(err))) < 0) {
		pl_error("could not apply migrations: %s", err);
		goto out_cfg;
	}
	if (migrate_only) {
		pl_info("schema %s: %d migration(s) applied, %zu known",
		        def->schema, n, def->n_migrations);
		rv = 0;
		goto out_cfg;
	}
	if (def->init != NULL && def->init(&st.cfg, &st.arg) != PL_OK) {
		pl_error("could not initialise the service");
		goto out_cfg;
	}

	rc.name = def->name;
	rc.listen = st.cfg.listen;
	rc.workers = (int)st.cfg.workers;
	rc.secret = st.cfg.secret;
	rc.tls_cert = st.cfg.tls_cert[0] ? st.cfg.tls_cert : NULL;
	rc.tls_key = st.cfg.tls_key[0] ? st.cfg.tls_key : NULL;
	rc.worker_init = worker_init;
	rc.worker_fini = worker_fini;
	rc.ready = ready;
	rc.worker_arg = &st;
	rc.arg = st.arg;
	if (pl_rpc_server_open(&srv, &rc, def->services) != PL_OK ||
	    pl_rpc_server_start(srv) != PL_OK) {
		pl_error("could not start the RPC server");
		goto out_srv;
	}
	if (st.cfg.ops_port > 0 &&
	    pl_ops_start(&ops, st.cfg.ops_bind, (uint16_t)st.cfg.ops_port,
	                 srv) != 0) {
		pl_error("could not serve ops endpoints on port %d",
		         (int)st.cfg.ops_port);
		goto out_srv;
	}
	if (def->start != NULL && def->start(st.arg) != PL_OK) {
		pl_error("could not start background jobs");
		goto out_srv;
	}
	// Plans that follow fast-growing tables (pl/db.h).
	if ((stats = pl_db_analyzer_start(url, def->schema, 0)) == NULL)
		pl_warn("could not start the statistics keeper");
	pl_info("parley-%s ready", def->name);
	pl_signals_wait();
	pl_db_analyzer_stop(stats);
	if (def->stop != NULL)
		def->stop(st.arg);
	rv = 0;

out_srv:
	pl_rpc_server_close(srv);
	if (ops != NULL)
		pl_httpd_stop(ops);
	if (def->fini != NULL)
		def->fini(st.arg);
out_cfg:
	if (def->cfg != NULL && !migrate_only)
		pl_cfg_free(def->cfg);
	pl_cfg_free(common);
	return rv;
}
