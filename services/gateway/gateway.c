// The gateway's life: configuration, clients to every service, the HTTP
// server.
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "gateway.h"
#include "pl/log.h"

static pl_cfg_entry table[] = {
	{ "PARLEY_HTTP_PORT", PL_CFG_INT, "8080", 0, 65535, NULL,
	  "HTTP port (0: ephemeral)" },
	{ "PARLEY_HTTP_BIND", PL_CFG_STRING, "0.0.0.0", 0, 0, NULL,
	  "HTTP bind address" },
	{ "PARLEY_TENANTS_URL", PL_CFG_STRING, "tcp://127.0.0.1:7101", 0, 0,
	  NULL, "tenants RPC URLs (comma list; empty: off)" },
	{ "PARLEY_BILLING_URL", PL_CFG_STRING, "tcp://127.0.0.1:7102", 0, 0,
	  NULL, "billing RPC URLs (empty: off)" },
	{ "PARLEY_AGENTS_URL", PL_CFG_STRING, "tcp://127.0.0.1:7103", 0, 0,
	  NULL, "agents RPC URLs (empty: off)" },
	{ "PARLEY_MESSAGING_URL", PL_CFG_STRING, "tcp://127.0.0.1:7104", 0, 0,
	  NULL, "messaging RPC URLs (empty: off)" },
	{ "PARLEY_ANALYTICS_URL", PL_CFG_STRING, "tcp://127.0.0.1:7105", 0, 0,
	  NULL, "analytics RPC URLs (empty: off)" },
	{ "PARLEY_SERVICE_SECRET", PL_CFG_SECRET, NULL, 0, 0, NULL,
	  "shared service secret" },
	{ "PARLEY_PUBLIC_URL", PL_CFG_STRING, "http://localhost:8080", 0, 0,
	  NULL, "the gateway's public URL (OpenAPI servers)" },
	{ "PARLEY_MAX_BODY", PL_CFG_INT, "1048576", 1024, 64 * 1024 * 1024,
	  NULL, "largest request body in bytes (413 past it)" },
	{ "PARLEY_CORS_ORIGINS", PL_CFG_STRING, "", 0, 0, NULL,
	  "origins allowed by CORS: comma list, or *" },
	{ "PARLEY_API_KEY_RPS", PL_CFG_INT, "20", 1, 1000000, NULL,
	  "API-key requests per second when the key sets none (burst 2x)" },
	{ "PARLEY_HTTP_THREADS", PL_CFG_INT, "4", 1, 256, NULL,
	  "HTTP server threads" },
	{ "PARLEY_HTTP_TIMEOUT", PL_CFG_INT, "30", 1, 3600, NULL,
	  "idle connection timeout, seconds" },
	{ "PARLEY_HTTP_MAX_CONNS", PL_CFG_INT, "1024", 64, 65536, NULL,
	  "HTTP connections open at once (each a file descriptor and up to "
	  "32 KiB)" },
	{ "PARLEY_RPC_TIMEOUT", PL_CFG_DURATION, "10s", 100, 600000, NULL,
	  "budget of one RPC" },
	{ "PARLEY_WEBCHAT_POLL_MAX", PL_CFG_DURATION, "25s", 0, 25000, NULL,
	  "longest web-chat long-poll" },
	{ "PARLEY_WEBCHAT_MAX_WAITING", PL_CFG_INT, "512", 0, 32768, NULL,
	  "web-chat long-polls waiting at once (each holds a connection; at "
	  "most half of PARLEY_HTTP_MAX_CONNS)" },
	{ "PARLEY_AUTH_CACHE_TTL", PL_CFG_DURATION, "1000ms", 0, 1000, NULL,
	  "longest life of a cached Authenticate answer (0: no cache)" },
	{ "PARLEY_TRUSTED_PROXIES", PL_CFG_STRING, "", 0, 0, NULL,
	  "proxies whose X-Forwarded-For is believed: comma list of "
	  "addresses and address/bits ranges (empty: none)" },
	{ "PARLEY_LOG_LEVEL", PL_CFG_STRING, "info", 0, 0, NULL,
	  "debug, info, warn, error" },
	{ 0 },
};

const pl_cfg_entry *
gw_config_table(gw_config *c)
{
	void *dst[] = {
		&c->port,
		&c->bind,
		&c->urls[GW_TENANTS],
		&c->urls[GW_BILLING],
		&c->urls[GW_AGENTS],
		&c->urls[GW_MESSAGING],
		&c->urls[GW_ANALYTICS],
		&c->secret,
		&c->public_url,
		&c->max_body,
		&c->cors_origins,
		&c->api_key_rps,
		&c->threads,
		&c->timeout_s,
		&c->max_conns,
		&c->rpc_timeout,
		&c->poll_max,
		&c->max_waiting,
		&c->auth_ttl,
		&c->trusted_proxies,
		&c->log_level,
	};
	for (size_t i = 0; i < sizeof(dst) / sizeof(dst[0]); i++)
		table[i].dst = dst[i];
	return table;
}

static int
parse_cors(gw *g)
{
	const char *s = g->cfg.cors_origins ? g->cfg.cors_origins : "";
	size_t n = 1, k = 0;

	for (const char *p = s; *p; p++)
		n += *p == ',';
	if ((g->cors = calloc(n + 1, sizeof(char *))) == NULL)
		return -1;
	while (*s != '\0') {
		size_t len = strcspn(s, ",");
		const char *b = s, *e = s + len;
		while (b < e && *b == ' ')
			b++;
		while (e > b && e[-1] == ' ')
			e--;
		if (e - b == 1 && *b == '*')
			g->cors_any = true;
		else if (e > b &&
		         (g->cors[k++] = strndup(b, (size_t)(e - b))) == NULL)
			return -1;
		s += len;
		if (*s == ',')
			s++;
	}
	return 0;
}

int
gw_conn_budget(int64_t *max_conns, int64_t *max_waiting, uint64_t fd_limit)
{
	int changed = 0;
	uint64_t room = fd_limit > GW_FD_RESERVE ? fd_limit - GW_FD_RESERVE : 0;

	if (*max_conns <= 0)
		*max_conns = 1024;
	if ((uint64_t)*max_conns > room) {
		*max_conns = room > 64 ? (int64_t)room : 64;
		changed |= 1;
	}
	if (*max_waiting > *max_conns / 2) {
		*max_waiting = *max_conns / 2;
		changed |= 2;
	}
	return changed;
}

// Raises the soft limit on open files toward what max_conns needs (up to
// the hard limit), then fits max_conns and max_waiting to it.
static void
fit_connections(gw_config *c)
{
	struct rlimit rl;
	int64_t conns = c->max_conns, waiting = c->max_waiting;
	uint64_t need;
	int changed;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		rl.rlim_cur = rl.rlim_max = 1024;
	need = (uint64_t)(conns > 0 ? conns : 1024) + GW_FD_RESERVE;
	if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need) {
		rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > need
		                      ? need
		                      : rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) != 0 &&
		    getrlimit(RLIMIT_NOFILE, &rl) != 0)
			rl.rlim_cur = 1024;
	}
	changed = gw_conn_budget(&c->max_conns, &c->max_waiting,
	                         rl.rlim_cur == RLIM_INFINITY
	                                 ? UINT64_MAX
	                                 : (uint64_t)rl.rlim_cur);
	if (changed & 1)
		pl_warn("gateway: PARLEY_HTTP_MAX_CONNS %lld is more than the "
		        "open-file limit (%llu) allows: %lld connections",
		        (long long)conns, (unsigned long long)rl.rlim_cur,
		        (long long)c->max_conns);
	if (changed & 2)
		pl_warn("gateway: PARLEY_WEBCHAT_MAX_WAITING %lld is over "
		        "half of the %lld connections: %lld wait at once, so "
		        "the API and the providers' webhooks keep the rest",
		        (long long)waiting, (long long)c->max_conns,
		        (long long)c->max_waiting);
}

int
gw_open(gw **out, const gw_config *cfg)
{
	char err[256];
	gw *g;
	json_t *doc;

	*out = NULL;
	if (gw_routes_init(err, sizeof(err)) != 0) {
		pl_error("gateway: bad route table: %s", err);
		return -1;
	}
	if ((g = calloc(1, sizeof(*g))) == NULL)
		return -1;
	g->cfg = *cfg;
	if (g->cfg.max_body <= 0)
		g->cfg.max_body = 1024 * 1024;
	if (g->cfg.api_key_rps <= 0)
		g->cfg.api_key_rps = 20;
	if (g->cfg.threads <= 0)
		g->cfg.threads = 4;
	if (g->cfg.poll_max < 0 || g->cfg.poll_max > 25000)
		g->cfg.poll_max = 25000;
	fit_connections(&g->cfg);
	if (gw_proxies_parse(cfg->trusted_proxies, &g->proxies, &g->n_proxies,
	                     err, sizeof(err)) != 0) {
		pl_error("gateway: PARLEY_TRUSTED_PROXIES: %s", err);
		free(g);
		return -1;
	}
	for (int i = 0; i < GW_NSVC; i++) {
		pl_rpc_client_config cc = {
			.urls = cfg->urls[i],
			.secret = cfg->secret,
			.service = "gateway",
			.timeout_ms = cfg->rpc_timeout,
		};
		if (cfg->urls[i] == NULL || cfg->urls[i][0] == '\0') {
			pl_info("gateway: %s is not configured: its routes "
			        "answer 503",
			        gw_svc_name(i));
			continue;
		}
		if (pl_rpc_client_open(&g->cli[i], &cc) != 0) {
			pl_error("gateway: cannot open a client to %s",
			         gw_svc_name(i));
			gw_close(g);
			return -1;
		}
	}
	g->auth = gw_auth_open(8192, cfg->auth_ttl);
	g->lim = gw_limiter_open();
	doc = gw_openapi(cfg->public_url);
	if (doc != NULL) {
		g->openapi = json_dumps(doc, JSON_COMPACT);
		json_decref(doc);
	}
	if (g->auth == NULL || g->lim == NULL || g->openapi == NULL ||
	    parse_cors(g) != 0) {
		pl_error("gateway: out of memory");
		gw_close(g);
		return -1;
	}
	g->openapi_len = strlen(g->openapi);
	*out = g;
	return 0;
}

int
gw_start(gw *g)
{
	pl_httpd_config hc = {
		.bind = g->cfg.bind,
		.port = (uint16_t)g->cfg.port,
		.threads = (int)g->cfg.threads,
		.max_body = (size_t)g->cfg.max_body,
		.handle_too_large = true,
		.timeout_s = (int)g->cfg.timeout_s,
		.max_conns = (unsigned)g->cfg.max_conns,
		.deferrable = true,
	};

	if (gw_poller_open(&g->poller, g) != 0)
		return -1;
	if (pl_httpd_start(&g->httpd, &hc, gw_handle, g) != 0) {
		gw_poller_close(g->poller);
		g->poller = NULL;
		return -1;
	}
	return 0;
}

uint16_t
gw_port(const gw *g)
{
	return pl_httpd_port(g->httpd);
}

void
gw_stop(gw *g)
{
	// The waiting long-polls are answered first: the HTTP server must not
	// stop with a deferred answer outstanding.
	if (g != NULL && g->poller != NULL) {
		gw_poller_close(g->poller);
		g->poller = NULL;
	}
	if (g != NULL && g->httpd != NULL) {
		pl_httpd_stop(g->httpd);
		g->httpd = NULL;
	}
}

void
gw_close(gw *g)
{
	if (g == NULL)
		return;
	gw_stop(g);
	for (int i = 0; i < GW_NSVC; i++)
		if (g->cli[i] != NULL)
			pl_rpc_client_close(g->cli[i]);
	gw_auth_close(g->auth);
	gw_limiter_close(g->lim);
	for (char **o = g->cors; o != NULL && *o != NULL; o++)
		free(*o);
	free(g->cors);
	free(g->proxies);
	free(g->openapi);
	free(g);
}
