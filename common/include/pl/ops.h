// What every service process does besides its RPCs: /healthz, /readyz and
// Prometheus /metrics over HTTP for Kubernetes, and waiting for the signal
// that stops it.
#ifndef PL_OPS_H
#define PL_OPS_H

#include <stdint.h>

#include "pl/httpd.h"
#include "pl/rpc.h"

// Serves the ops endpoints of s on bind:port (port 0: ephemeral). /healthz
// answers 200 while the process runs, /readyz 200 when the server is ready
// (database reachable, migrations applied) and 503 otherwise, /metrics the
// server's counters and histograms. Returns 0 or -1.
int pl_ops_start(pl_httpd **out, const char *bind, uint16_t port,
                 pl_rpc_server *s);

// Blocks SIGTERM, SIGINT and SIGPIPE in the calling thread (call it in main
// before starting threads, so every thread inherits the mask).
void pl_signals_block(void);

// Waits for SIGTERM or SIGINT (blocked by pl_signals_block) and returns it.
int pl_signals_wait(void);

#endif
