// Status codes: names, HTTP mapping, retry policy.
#include <string.h>

#include "pl/status.h"

static const char *const names[PL_STATUS_COUNT] = {
	[PL_OK] = "OK",
	[PL_CANCELLED] = "CANCELLED",
	[PL_UNKNOWN] = "UNKNOWN",
	[PL_INVALID_ARGUMENT] = "INVALID_ARGUMENT",
	[PL_DEADLINE_EXCEEDED] = "DEADLINE_EXCEEDED",
	[PL_NOT_FOUND] = "NOT_FOUND",
	[PL_ALREADY_EXISTS] = "ALREADY_EXISTS",
	[PL_PERMISSION_DENIED] = "PERMISSION_DENIED",
	[PL_RESOURCE_EXHAUSTED] = "RESOURCE_EXHAUSTED",
	[PL_FAILED_PRECONDITION] = "FAILED_PRECONDITION",
	[PL_ABORTED] = "ABORTED",
	[PL_OUT_OF_RANGE] = "OUT_OF_RANGE",
	[PL_UNIMPLEMENTED] = "UNIMPLEMENTED",
	[PL_INTERNAL] = "INTERNAL",
	[PL_UNAVAILABLE] = "UNAVAILABLE",
	[PL_DATA_LOSS] = "DATA_LOSS",
	[PL_UNAUTHENTICATED] = "UNAUTHENTICATED",
};

// 409 for conflicts (ALREADY_EXISTS, ABORTED); 412 is not used. 499 is
// the de facto "client closed request" that gRPC gateways use.
static const short http_codes[PL_STATUS_COUNT] = {
	[PL_OK] = 200,
	[PL_CANCELLED] = 499,
	[PL_UNKNOWN] = 500,
	[PL_INVALID_ARGUMENT] = 400,
	[PL_DEADLINE_EXCEEDED] = 504,
	[PL_NOT_FOUND] = 404,
	[PL_ALREADY_EXISTS] = 409,
	[PL_PERMISSION_DENIED] = 403,
	[PL_RESOURCE_EXHAUSTED] = 429,
	[PL_FAILED_PRECONDITION] = 400,
	[PL_ABORTED] = 409,
	[PL_OUT_OF_RANGE] = 400,
	[PL_UNIMPLEMENTED] = 501,
	[PL_INTERNAL] = 500,
	[PL_UNAVAILABLE] = 503,
	[PL_DATA_LOSS] = 500,
	[PL_UNAUTHENTICATED] = 401,
};

const char *
pl_status_name(int code)
{
	if (code < 0 || code >= PL_STATUS_COUNT)
		return "UNKNOWN";
	return names[code];
}

int
pl_status_from_name(const char *name)
{
	if (name == NULL)
		return -1;
	for (int i = 0; i < PL_STATUS_COUNT; i++) {
		if (strcmp(names[i], name) == 0)
			return i;
	}
	return -1;
}

int
pl_status_http(int code)
{
	if (code < 0 || code >= PL_STATUS_COUNT)
		return 500;
	return http_codes[code];
}

bool
pl_status_is_retryable(int code)
{
	return code == PL_UNAVAILABLE;
}
