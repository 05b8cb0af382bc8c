// UUIDv7: layout bits, ordering, text round trip, what parse refuses.
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "pl/id.h"

static uint64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static unsigned
ctr(const uint8_t id[16])
{
	return (unsigned)(id[6] & 0x0f) << 8 | id[7];
}

static void
test_version_variant(void **state)
{
	(void)state;
	for (int i = 0; i < 1000; i++) {
		uint8_t id[16];
		pl_uuid7(id);
		assert_int_equal(id[6] >> 4, 7);
		assert_int_equal(id[8] >> 6, 2);
	}
}

static void
test_timestamp_close_to_now(void **state)
{
	uint8_t id[16];
	uint64_t before, after, ms;

	(void)state;
	before = now_ms();
	pl_uuid7(id);
	after = now_ms();
	ms = pl_uuid7_ms(id);
	// A burst elsewhere may have pushed the counter a few ms ahead.
	assert_true(ms + 5 >= before);
	assert_true(ms <= after + 1000);
}

static void
test_monotonic(void **state)
{
	enum { N = 100000 };
	uint8_t(*ids)[16] = malloc((size_t)N * 16);
	uint64_t start = now_ms();

	(void)state;
	assert_non_null(ids);
	for (int i = 0; i < N; i++)
		pl_uuid7(ids[i]);
	for (int i = 1; i < N; i++) {
		if (memcmp(ids[i - 1], ids[i], 16) >= 0)
			fail_msg("id %d is not after id %d", i, i - 1);
		// Within one millisecond the 12-bit counter counts up by one.
		if (pl_uuid7_ms(ids[i - 1]) == pl_uuid7_ms(ids[i]))
			assert_int_equal(ctr(ids[i]), ctr(ids[i - 1]) + 1);
		else
			assert_true(ctr(ids[i]) < 0x800);
	}
	// 100k ids can outrun 4096 per ms only briefly: the clock stays
	// within reach of real time.
	assert_true(pl_uuid7_ms(ids[N - 1]) <= now_ms() + 100);
	assert_true(pl_uuid7_ms(ids[0]) + 5 >= start);
	free(ids);
}

#define NTH 4
#define PER 20000

static void *
burst(void *arg)
{
	uint8_t(*ids)[16] = arg;

	for (int i = 0; i < PER; i++)
		pl_uuid7(ids[i]);
	return NULL;
}

static int
cmp16(const void *a, const void *b)
{
	return memcmp(a, b, 16);
}

static void
test_threads_unique_and_ordered(void **state)
{
	uint8_t(*ids)[16] = malloc((size_t)NTH * PER * 16);
	pthread_t th[NTH];

	(void)state;
	assert_non_null(ids);
	for (int t = 0; t < NTH; t++)
		assert_int_equal(
		        pthread_create(&th[t], NULL, burst, ids + t * PER), 0);
	for (int t = 0; t < NTH; t++)
		pthread_join(th[t], NULL);
	// Each thread's own ids are increasing.
	for (int t = 0; t < NTH; t++) {
		for (int i = 1; i < PER; i++)
			assert_true(memcmp(ids[t * PER + i - 1],
			                   ids[t * PER + i], 16) < 0);
	}
	// And none repeats across threads.
	qsort(ids, (size_t)NTH * PER, 16, cmp16);
	for (int i = 1; i < NTH * PER; i++)
		assert_true(memcmp(ids[i - 1], ids[i], 16) != 0);
	free(ids);
}

static void
test_format_parse_round_trip(void **state)
{
	char s[PL_UUID_STRLEN + 1];
	uint8_t id[16], back[16];

	(void)state;
	for (int i = 0; i < 100; i++) {
		pl_uuid7(id);
		pl_uuid_format(id, s);
		assert_int_equal(strlen(s), PL_UUID_STRLEN);
		assert_true(pl_uuid_valid(s));
		assert_true(pl_uuid_parse(s, back));
		assert_memory_equal(id, back, 16);
	}

	static const uint8_t known[16] = { 0x01, 0x90, 0xb3, 0xc4, 0x5d, 0x6e,
		                           0x7a, 0xbc, 0x8d, 0xef, 0x01, 0x23,
		                           0x45, 0x67, 0x89, 0xab };
	pl_uuid_format(known, s);
	assert_string_equal(s, "0190b3c4-5d6e-7abc-8def-0123456789ab");
	assert_int_equal(pl_uuid7_ms(known), 0x0190b3c45d6eULL);

	// Either case parses; output is lower case.
	assert_true(
	        pl_uuid_parse("0190B3C4-5D6E-7ABC-8DEF-0123456789AB", back));
	assert_memory_equal(known, back, 16);

	pl_uuid7_str(s);
	assert_true(pl_uuid_valid(s));
	assert_int_equal(s[14], '7');
	for (int i = 0; i < PL_UUID_STRLEN; i++)
		assert_true(s[i] == '-' || (s[i] >= '0' && s[i] <= '9') ||
		            (s[i] >= 'a' && s[i] <= 'f'));
}

static void
test_invalid_refused(void **state)
{
	static const char *bad[] = {
		"",
		"0190b3c4",
		"0190b3c4-5d6e-7abc-8def-0123456789a",   // short
		"0190b3c4-5d6e-7abc-8def-0123456789abc", // long
		"0190b3c4-5d6e-7abc-8def-0123456789ab ",
		" 0190b3c4-5d6e-7abc-8def-0123456789ab",
		"0190b3c45d6e7abc8def0123456789ab", // no dashes
		"0190b3c4-5d6e-7abc-8def0-123456789ab",
		"0190b3c4_5d6e-7abc-8def-0123456789ab",
		"0190b3g4-5d6e-7abc-8def-0123456789ab",
		"{0190b3c4-5d6e-7abc-8def-0123456789ab}",
		"0190b3c4-5d6e-7abc-8def-0123456789-b",
		"urn:uuid:0190b3c4-5d6e-7abc-8def-0123",
	};
	uint8_t out[16];

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memset(out, 0x5a, sizeof(out));
		if (pl_uuid_parse(bad[i], out))
			fail_msg("parsed \"%s\"", bad[i]);
		assert_false(pl_uuid_valid(bad[i]));
		// Nothing written on failure.
		for (int j = 0; j < 16; j++)
			assert_int_equal(out[j], 0x5a);
	}
	assert_false(pl_uuid_parse(NULL, out));
	assert_false(pl_uuid_valid(NULL));

	// A short string in an exactly sized buffer: no read past it
	// (AddressSanitizer would catch one).
	char *s = malloc(10);
	assert_non_null(s);
	memcpy(s, "0190b3c4-", 10);
	assert_false(pl_uuid_valid(s));
	free(s);
}

// Random bits are drawn ahead per thread: a child process must not hand
// out the ones its parent will (the random tail of the next ids would be
// equal).
static void
test_fork_draws_anew(void **state)
{
	uint8_t a[16], b[16];
	int fd[2], st;
	pid_t pid;

	(void)state;
	pl_uuid7(a); // the pool is filled
	assert_int_equal(pipe(fd), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		pl_uuid7(b);
		_exit(write(fd[1], b, 16) == 16 ? 0 : 1);
	}
	close(fd[1]);
	pl_uuid7(a);
	assert_int_equal(read(fd[0], b, 16), 16);
	close(fd[0]);
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	assert_memory_not_equal(a + 9, b + 9, 7);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_version_variant),
		cmocka_unit_test(test_timestamp_close_to_now),
		cmocka_unit_test(test_monotonic),
		cmocka_unit_test(test_threads_unique_and_ordered),
		cmocka_unit_test(test_format_parse_round_trip),
		cmocka_unit_test(test_invalid_refused),
		cmocka_unit_test(test_fork_draws_anew),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
