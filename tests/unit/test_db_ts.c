// pl_db_ts: PostgreSQL's ISO timestamptz text as messaging.fmt_ts gives
// it, across offsets and calendar boundaries; what it leaves unchanged.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "pl/db.h"

static pl_arena A;

static int
setup(void **state)
{
	(void)state;
	pl_arena_init(&A, 0, 0);
	return 0;
}

static int
teardown(void **state)
{
	(void)state;
	pl_arena_fini(&A);
	return 0;
}

// pl_db_ts of pg, read from a buffer of exactly its size so that a read
// past the NUL is one past the allocation (ASan builds see it).
static void
check(const char *pg, const char *want)
{
	size_t n = strlen(pg) + 1;
	char *in = malloc(n);
	char *got;

	memcpy(in, pg, n);
	got = pl_db_ts(&A, in);
	assert_non_null(got);
	if (strcmp(got, want) != 0)
		fail_msg("pl_db_ts(\"%s\") = \"%s\", want \"%s\"", pg, got,
		         want);
	free(in);
	pl_arena_reset(&A);
}

static void
test_utc_fractions(void **state)
{
	(void)state;
	check("2026-11-23 21:50:45+00", "2026-11-23T21:50:45.000Z");
	check("2026-11-23 21:50:45.1+00", "2026-11-23T21:50:45.100Z");
	check("2026-11-23 21:50:45.12+00", "2026-11-23T21:50:45.120Z");
	check("2026-11-23 21:50:45.123+00", "2026-11-23T21:50:45.123Z");
	check("2026-11-23 21:50:45.1234+00", "2026-11-23T21:50:45.123Z");
	check("2026-11-23 21:50:45.12345+00", "2026-11-23T21:50:45.123Z");
	check("2026-11-23 21:50:45.123456+00", "2026-11-23T21:50:45.123Z");
	// Truncated, as to_char's MS, never rounded up.
	check("2026-11-23 23:59:59.999999+00", "2026-11-23T23:59:59.999Z");
	check("2026-11-23 21:50:45.000999+00", "2026-11-23T21:50:45.000Z");
	check("2026-11-23 21:50:45.05+00", "2026-11-23T21:50:45.050Z");
	check("0001-01-01 00:00:00+00", "0001-01-01T00:00:00.000Z");
	check("9999-12-31 23:59:59.999999+00", "9999-12-31T23:59:59.999Z");
}

static void
test_offsets(void **state)
{
	(void)state;
	check("2026-11-23 23:50:45+02", "2026-11-23T21:50:45.000Z");
	check("2026-11-23 16:20:45.5-05:30", "2026-11-23T21:50:45.500Z");
	check("2026-11-24 03:35:45.25+05:45", "2026-11-23T21:50:45.250Z");
	check("2026-11-23 21:50:45+00:00", "2026-11-23T21:50:45.000Z");
	check("2026-11-24 11:50:45.123456+14", "2026-11-23T21:50:45.123Z");
	check("2026-11-23 09:50:45-12", "2026-11-23T21:50:45.000Z");
	// Local mean time before 1900: offsets with seconds.
	check("1899-12-31 00:19:32+00:19:32", "1899-12-31T00:00:00.000Z");
	check("1850-06-01 12:00:00-04:56:02", "1850-06-01T16:56:02.000Z");
}

static void
test_rollover(void **state)
{
	(void)state;
	// Midnight, both ways.
	check("2026-11-23 22:30:00-02", "2026-11-24T00:30:00.000Z");
	check("2026-11-24 01:00:00.7+02", "2026-11-23T23:00:00.700Z");
	// Month ends of 30 and 31 days.
	check("2026-04-30 23:00:00-01:30", "2026-05-01T00:30:00.000Z");
	check("2026-05-01 00:10:00+00:30", "2026-04-30T23:40:00.000Z");
	check("2026-01-31 23:00:00-03", "2026-02-01T02:00:00.000Z");
	// Year, both ways.
	check("2026-12-31 23:59:59.999-00:01", "2027-01-01T00:00:59.999Z");
	check("2027-01-01 00:30:00+01", "2026-12-31T23:30:00.000Z");
	// Leap days: 2024 and 2000 have one, 2023 and 2100 do not.
	check("2024-03-01 01:30:00+05", "2024-02-29T20:30:00.000Z");
	check("2024-02-29 22:00:00-03", "2024-03-01T01:00:00.000Z");
	check("2023-03-01 01:30:00+05", "2023-02-28T20:30:00.000Z");
	check("2023-02-28 22:00:00-03", "2023-03-01T01:00:00.000Z");
	check("2000-02-29 23:00:00-02", "2000-03-01T01:00:00.000Z");
	check("2100-03-01 01:00:00+02", "2100-02-28T23:00:00.000Z");
	check("2100-02-28 23:00:00-02", "2100-03-01T01:00:00.000Z");
}

// Against the C library's calendar: a spread of instants from year 1 to
// 9999, each written in some offset as PostgreSQL would.
static void
test_against_gmtime(void **state)
{
	// Seconds from 1970 to 0001-01-01 and to 10000-01-01.
	const int64_t lo = -62135596800LL, hi = 253402300800LL;
	uint64_t x = 88172645463325252ull;

	(void)state;
	for (int i = 0; i < 200000; i++) {
		char pg[96], want[96];
		struct tm tm;
		time_t t, l;
		int off, us;

		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		t = (time_t)(lo + 86400 +
		             (int64_t)(x % (uint64_t)(hi - lo - 2 * 86400)));
		off = (int)((x >> 40) % (2 * 57600 + 1)) - 57600;
		us = (int)((x >> 20) % 1000000);
		l = t + off;
		assert_non_null(gmtime_r(&l, &tm));
		snprintf(pg, sizeof(pg),
		         "%04d-%02d-%02d %02d:%02d:%02d.%06d%c%02d:%02d:%02d",
		         tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
		         tm.tm_hour, tm.tm_min, tm.tm_sec, us,
		         off < 0 ? '-' : '+', abs(off) / 3600,
		         abs(off) / 60 % 60, abs(off) % 60);
		assert_non_null(gmtime_r(&t, &tm));
		snprintf(want, sizeof(want),
		         "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
		         tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
		         tm.tm_hour, tm.tm_min, tm.tm_sec, us / 1000);
		check(pg, want);
	}
}

static void
test_null_stays_empty(void **state)
{
	(void)state;
	check("", "");
}

static void
test_unknown_unchanged(void **state)
{
	static const char *const same[] = {
		"garbage",
		"infinity",
		"-infinity",
		"2026-11-23 21:50:45+00 BC",
		"0044-03-15 12:00:00+00 BC",
		"10000-01-01 00:00:00+00",
		"999-01-01 00:00:00+00",
		"2026-11-23T21:50:45.123Z",
		"2026-11-23T21:50:45.123456",
		"2026-11-23 21:50:45",
		"2026-11-23 21:50:45.123456",
		"2026-11-23 21:50:45.1234567+00",
		"2026-11-23 21:50:45.+00",
		"2026-11-23 21:50:45 +00",
		"2026-11-23 21:50:45+0",
		"2026-11-23 21:50:45+000",
		"2026-11-23 21:50:45+00:",
		"2026-11-23 21:50:45+00:3",
		"2026-11-23 21:50:45+00:30:",
		"2026-11-23 21:50:45+00:30:1",
		"2026-11-23 21:50:45+00:30:15:00",
		"2026-11-23 21:50:45+00x",
		"2026-00-23 21:50:45+00",
		"2026-13-23 21:50:45+00",
		"2026-11-00 21:50:45+00",
		"2026-11-31 21:50:45+00",
		"2023-02-29 21:50:45+00",
		"2100-02-29 21:50:45+00",
		"2026-11-23 24:00:00+00",
		"2026-11-23 21:60:45+00",
		"2026-11-23 21:50:60+00",
		"2026-11-23 21:50:45+00:60",
		"2026-11-23 21:50:45\xff+00",
		"2026/11/23 21:50:45+00",
		"2O26-11-23 21:50:45+00",
		"23/11/2026 21:50:45.123456 UTC",
		// The shift to UTC leaves the 4-digit years.
		"9999-12-31 23:00:00-02",
		"0001-01-01 00:30:00+01",
	};

	(void)state;
	for (size_t i = 0; i < sizeof(same) / sizeof(same[0]); i++)
		check(same[i], same[i]);
}

// Every prefix of a whole value: unchanged, but for the two that are
// values themselves.
static void
test_truncated(void **state)
{
	static const char full[] = "2024-02-29 23:59:59.123456-05:30:15";
	char pre[sizeof(full)];

	(void)state;
	for (size_t n = 0; n < sizeof(full); n++) {
		memcpy(pre, full, n);
		pre[n] = '\0';
		if (n == strlen("2024-02-29 23:59:59.123456-05"))
			check(pre, "2024-03-01T04:59:59.123Z");
		else if (n == strlen("2024-02-29 23:59:59.123456-05:30"))
			check(pre, "2024-03-01T05:29:59.123Z");
		else if (n == sizeof(full) - 1)
			check(pre, "2024-03-01T05:30:14.123Z");
		else
			check(pre, pre);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_utc_fractions),
		cmocka_unit_test(test_offsets),
		cmocka_unit_test(test_rollover),
		cmocka_unit_test(test_against_gmtime),
		cmocka_unit_test(test_null_stays_empty),
		cmocka_unit_test(test_unknown_unchanged),
		cmocka_unit_test(test_truncated),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
