// The test Echo service (tests/proto/parley/test/v1/echo.proto) with its
// handler table, for RPC runtime tests and benchmarks.
#ifndef PARLEY_TEST_ECHO_SERVICE_H
#define PARLEY_TEST_ECHO_SERVICE_H

#include "parley/test/v1/echo.pb-c.h"
#include "pl/rpc.h"

extern const pl_rpc_service echo_service;

// What DeliverEvents received (under echo_events_mtx): distinct event ids,
// deliveries in all, and a switch that makes it fail with UNAVAILABLE.
#include <pthread.h>
#include <stdbool.h>
#define ECHO_MAX_EVENTS 4096
extern pthread_mutex_t echo_events_mtx;
extern char echo_event_ids[ECHO_MAX_EVENTS][40];
extern char echo_event_types[ECHO_MAX_EVENTS][64];
extern int echo_events_distinct;
extern int echo_events_delivered;
extern bool echo_events_fail;

#define ECHO_METHOD(m) "/parley.test.v1.Echo/" m

#endif
