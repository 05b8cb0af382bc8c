// Runtime internals shared by the RPC server and client files.
#ifndef PL_RPC_INTERNAL_H
#define PL_RPC_INTERNAL_H

#include <stdatomic.h>
#include <stdint.h>

#include "pl/rpc.h"

#define PL_VERSION "0.1.0"

// Latency buckets, in microseconds, of the per-method histograms.
#define PL_RPC_NBUCKETS 15

typedef struct pl_rpc_metrics {
	_Atomic uint64_t count[PL_STATUS_COUNT];
	_Atomic uint64_t bucket[PL_RPC_NBUCKETS];
	_Atomic uint64_t sum_us;
} pl_rpc_metrics;

void pl_rpc_metrics_observe(pl_rpc_metrics *m, int code, int64_t ns);

// Checks the call's principal against a method's access rule; sets the
// call's error and returns it when refused.
int pl_rpc_check_access(pl_call *call, const pl_rpc_method *m);

#endif
