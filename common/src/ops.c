// Ops endpoints and signal handling shared by every service process.
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "pl/log.h"
#include "pl/ops.h"

static void
ops_handler(const pl_http_req *req, pl_http_resp *resp, void *arg)
{
	pl_rpc_server *s = arg;

	if (strcmp(req->method, "GET") != 0 &&
	    strcmp(req->method, "HEAD") != 0) {
		pl_http_resp_header(resp, "Allow", "GET, HEAD");
		pl_http_resp_set(resp, 405, "text/plain",
		                 "method not allowed\n", 19);
		return;
	}
	if (strcmp(req->path, "/healthz") == 0) {
		pl_http_resp_set(resp, 200, "text/plain", "ok\n", 3);
	} else if (strcmp(req->path, "/readyz") == 0) {
		if (pl_rpc_server_ready(s))
			pl_http_resp_set(resp, 200, "text/plain", "ready\n", 6);
		else
			pl_http_resp_set(resp, 503, "text/plain", "not ready\n",
			                 10);
	} else if (strcmp(req->path, "/metrics") == 0) {
		char *m = pl_rpc_server_metrics(s);
		if (m == NULL) {
			pl_http_resp_set(resp, 500, "text/plain",
			                 "out of memory\n", 14);
			return;
		}
		pl_http_resp_set(resp, 200, "text/plain; version=0.0.4", m,
		                 strlen(m));
		free(m);
	} else {
		pl_http_resp_set(resp, 404, "text/plain", "not found\n", 10);
	}
}

int
pl_ops_start(pl_httpd **out, const char *bind, uint16_t port, pl_rpc_server *s)
{
	pl_httpd_config cfg = { 0 };

	cfg.bind = bind;
	cfg.port = port;
	cfg.threads = 1;
	cfg.max_body = 4096;
	cfg.timeout_s = 10;
	cfg.max_conns = 64;
	return pl_httpd_start(out, &cfg, ops_handler, s);
}

void
pl_signals_block(void)
{
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
}

int
pl_signals_wait(void)
{
	sigset_t set;
	int sig = 0;

	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	while (sigwait(&set, &sig) != 0)
		;
	pl_info("received signal %d, stopping", sig);
	return sig;
}
