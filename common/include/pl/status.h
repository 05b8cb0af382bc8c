// Status codes with gRPC's numbering and meanings, shared by every module.
#ifndef PL_STATUS_H
#define PL_STATUS_H

#include <stdbool.h>

typedef enum pl_status {
	PL_OK = 0,
	PL_CANCELLED = 1,
	PL_UNKNOWN = 2,
	PL_INVALID_ARGUMENT = 3,
	PL_DEADLINE_EXCEEDED = 4,
	PL_NOT_FOUND = 5,
	PL_ALREADY_EXISTS = 6,
	PL_PERMISSION_DENIED = 7,
	PL_RESOURCE_EXHAUSTED = 8,
	PL_FAILED_PRECONDITION = 9,
	PL_ABORTED = 10,
	PL_OUT_OF_RANGE = 11,
	PL_UNIMPLEMENTED = 12,
	PL_INTERNAL = 13,
	PL_UNAVAILABLE = 14,
	PL_DATA_LOSS = 15,
	PL_UNAUTHENTICATED = 16,
} pl_status;

#define PL_STATUS_COUNT 17

// Returns the gRPC name of a code ("NOT_FOUND"), or "UNKNOWN" when out of
// range. The string is static.
const char *pl_status_name(int code);

// Parses a gRPC name back to its code; returns -1 when it is none.
int pl_status_from_name(const char *name);

// Returns the HTTP status that fits a code (NOT_FOUND -> 404, ...).
int pl_status_http(int code);

// True for codes a client may retry without knowing whether the server
// acted: UNAVAILABLE, and DEADLINE_EXCEEDED/ABORTED/RESOURCE_EXHAUSTED are not
// (the call may have run). Only UNAVAILABLE qualifies.
bool pl_status_is_retryable(int code);

#endif
