// Fake peer services for a service under test: one RPC server standing in
// for whole services (tenants, billing, agents...), every method of each
// answered by one handler, which tells them apart by call->method.
#ifndef FAKE_PEERS_H
#define FAKE_PEERS_H

#include <stddef.h>

#include <protobuf-c/protobuf-c.h>

#include "pl/rpc.h"

typedef struct fake_peers fake_peers;

// Starts the server on listen with workers threads and the tests' service
// secret (SVCH_SECRET), for the services descs[0..n) (at most 8), public
// access. Returns 0 or -1.
int fake_peers_start(fake_peers **out, const char *listen, int workers,
                     pl_rpc_handler handler,
                     const ProtobufCServiceDescriptor *const *descs, size_t n);

// Closes the server and frees it; NULL does nothing.
void fake_peers_stop(fake_peers *p);

#endif
