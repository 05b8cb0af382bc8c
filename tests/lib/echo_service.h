// The test Echo service (tests/proto/parley/test/v1/echo.proto) with its
// handler table, for RPC runtime tests and benchmarks.
#ifndef PARLEY_TEST_ECHO_SERVICE_H
#define PARLEY_TEST_ECHO_SERVICE_H

#include "parley/test/v1/echo.pb-c.h"
#include "pl/rpc.h"

extern const pl_rpc_service echo_service;

#define ECHO_METHOD(m) "/parley.test.v1.Echo/" m

#endif
