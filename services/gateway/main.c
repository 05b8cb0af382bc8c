// parley-gateway: configuration, clients, HTTP, wait for SIGTERM, stop
// cleanly (in-flight requests finish).
#include <stdio.h>
#include <string.h>

#include "gateway.h"
#include "pl/log.h"
#include "pl/ops.h"

int
main(int argc, char **argv)
{
	gw_config cfg = { 0 };
	const pl_cfg_entry *t = gw_config_table(&cfg);
	char err[256];
	gw *g;
	int lvl, sig;

	if (argc > 1 &&
	    (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
		printf("parley-gateway: Parley's HTTP API. Configuration:\n");
		for (; t->env != NULL; t++)
			printf("  %-26s %s (default: %s)\n", t->env, t->help,
			       t->def ? t->def : "required");
		return 0;
	}
	pl_log_init("gateway", PL_LOG_INFO);
	if (pl_cfg_load(t, err, sizeof(err)) != 0) {
		pl_error("%s", err);
		return 2;
	}
	if ((lvl = pl_log_level_parse(cfg.log_level)) >= 0)
		pl_log_init("gateway", (pl_log_level)lvl);
	pl_signals_block();
	if (gw_open(&g, &cfg) != 0) {
		pl_cfg_free(t);
		return 1;
	}
	if (gw_start(g) != 0) {
		gw_close(g);
		pl_cfg_free(t);
		return 1;
	}
	pl_info("gateway listening on %s:%u", cfg.bind, gw_port(g));
	sig = pl_signals_wait();
	pl_info("gateway stopping on signal %d", sig);
	gw_stop(g);
	gw_close(g);
	pl_cfg_free(t);
	return 0;
}
