// Status codes: names both ways, HTTP mapping, retry policy.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "pl/status.h"

static void
test_names_round_trip(void **state)
{
	(void)state;
	for (int i = 0; i < PL_STATUS_COUNT; i++) {
		const char *n = pl_status_name(i);
		assert_non_null(n);
		assert_int_equal(pl_status_from_name(n), i);
	}
	assert_string_equal(pl_status_name(PL_OK), "OK");
	assert_string_equal(pl_status_name(PL_NOT_FOUND), "NOT_FOUND");
	assert_string_equal(pl_status_name(PL_UNAUTHENTICATED),
	                    "UNAUTHENTICATED");
	assert_string_equal(pl_status_name(PL_FAILED_PRECONDITION),
	                    "FAILED_PRECONDITION");
}

static void
test_name_out_of_range(void **state)
{
	(void)state;
	assert_string_equal(pl_status_name(-1), "UNKNOWN");
	assert_string_equal(pl_status_name(PL_STATUS_COUNT), "UNKNOWN");
	assert_string_equal(pl_status_name(1000), "UNKNOWN");
}

static void
test_from_name_rejects(void **state)
{
	(void)state;
	assert_int_equal(pl_status_from_name(NULL), -1);
	assert_int_equal(pl_status_from_name(""), -1);
	assert_int_equal(pl_status_from_name("not_found"), -1);
	assert_int_equal(pl_status_from_name("NOT_FOUND "), -1);
	assert_int_equal(pl_status_from_name("BOGUS"), -1);
}

static void
test_http(void **state)
{
	static const struct {
		int code, http;
	} want[] = {
		{ PL_OK, 200 },
		{ PL_CANCELLED, 499 },
		{ PL_UNKNOWN, 500 },
		{ PL_INVALID_ARGUMENT, 400 },
		{ PL_DEADLINE_EXCEEDED, 504 },
		{ PL_NOT_FOUND, 404 },
		{ PL_ALREADY_EXISTS, 409 },
		{ PL_PERMISSION_DENIED, 403 },
		{ PL_RESOURCE_EXHAUSTED, 429 },
		{ PL_FAILED_PRECONDITION, 400 },
		{ PL_ABORTED, 409 },
		{ PL_OUT_OF_RANGE, 400 },
		{ PL_UNIMPLEMENTED, 501 },
		{ PL_INTERNAL, 500 },
		{ PL_UNAVAILABLE, 503 },
		{ PL_DATA_LOSS, 500 },
		{ PL_UNAUTHENTICATED, 401 },
	};
	(void)state;
	assert_int_equal(sizeof(want) / sizeof(want[0]), PL_STATUS_COUNT);
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
		assert_int_equal(pl_status_http(want[i].code), want[i].http);
	assert_int_equal(pl_status_http(-1), 500);
	assert_int_equal(pl_status_http(99), 500);
	for (int i = 0; i < PL_STATUS_COUNT; i++)
		assert_int_not_equal(pl_status_http(i), 412);
}

static void
test_retryable(void **state)
{
	(void)state;
	for (int i = -2; i < PL_STATUS_COUNT + 2; i++)
		assert_int_equal(pl_status_is_retryable(i),
		                 i == PL_UNAVAILABLE);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_names_round_trip),
		cmocka_unit_test(test_name_out_of_range),
		cmocka_unit_test(test_from_name_rejects),
		cmocka_unit_test(test_http),
		cmocka_unit_test(test_retryable),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
