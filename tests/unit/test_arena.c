// The request arena: alignment, reuse after reset, the limit, oversized
// blocks, string helpers and protobuf-c unpacking through it.
#include <setjmp.h>
#include <stdalign.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "parley/rpc/v1/envelope.pb-c.h"
#include "pl/arena.h"

#define ALIGN alignof(max_align_t)

static int
setup(void **state)
{
	pl_arena *a = malloc(sizeof(*a));

	if (a == NULL)
		return -1;
	pl_arena_init(a, 1024, 0);
	*state = a;
	return 0;
}

static int
teardown(void **state)
{
	pl_arena *a = *state;

	pl_arena_fini(a);
	free(a);
	return 0;
}

static void
test_init_defaults(void **state)
{
	pl_arena a;

	(void)state;
	pl_arena_init(&a, 0, 0);
	assert_int_equal(a.blksize, 16 * 1024);
	assert_null(a.head);
	assert_int_equal(a.size, 0);
	assert_ptr_equal(a.pb.allocator_data, &a);
	assert_ptr_equal(pl_arena_pb(&a), &a.pb);
	pl_arena_fini(&a);
	// Fini of an arena that never allocated, then init again.
	pl_arena_init(&a, 100, 0);
	assert_int_equal(a.blksize % ALIGN, 0);
	assert_non_null(pl_arena_alloc(&a, 10));
	pl_arena_fini(&a);
}

static void
test_alignment_and_no_overlap(void **state)
{
	pl_arena *a = *state;
	unsigned char *p[300];
	size_t n[300];

	for (int i = 0; i < 300; i++) {
		n[i] = (size_t)(i * 7) % 301; // includes 0 and sizes > 1024/4
		p[i] = pl_arena_alloc(a, n[i]);
		assert_non_null(p[i]);
		assert_int_equal((uintptr_t)p[i] % ALIGN, 0);
		memset(p[i], i & 0xff, n[i]);
	}
	for (int i = 0; i < 300; i++) {
		for (size_t j = 0; j < n[i]; j++)
			assert_int_equal(p[i][j], i & 0xff);
	}
	// Zero-size requests still give distinct pointers.
	assert_ptr_not_equal(pl_arena_alloc(a, 0), pl_arena_alloc(a, 0));
}

static void
test_zalloc(void **state)
{
	pl_arena *a = *state;
	unsigned char *p;

	// Dirty the block, then reset so zalloc reuses that memory.
	p = pl_arena_alloc(a, 200);
	memset(p, 0xaa, 200);
	pl_arena_reset(a);
	p = pl_arena_zalloc(a, 200);
	assert_non_null(p);
	for (int i = 0; i < 200; i++)
		assert_int_equal(p[i], 0);
}

static void
test_reset_reuses_first_block(void **state)
{
	pl_arena *a = *state;
	void *first, *again;

	first = pl_arena_alloc(a, 64);
	assert_non_null(first);
	// Spill into several more blocks, ordinary and oversized.
	for (int i = 0; i < 100; i++)
		assert_non_null(pl_arena_alloc(a, 200));
	assert_non_null(pl_arena_alloc(a, 10000));
	assert_true(a->size >= 64 + 100 * 200 + 10000);

	pl_arena_reset(a);
	assert_int_equal(a->size, 0);
	assert_non_null(a->head);
	again = pl_arena_alloc(a, 64);
	assert_ptr_equal(again, first);
	// The kept block is whole again: 1024 bytes fit in it in a row.
	char *prev = again;
	for (int i = 0; i < 1024 / 64 - 1; i++) {
		char *p = pl_arena_alloc(a, 64);
		assert_ptr_equal(p, prev + 64);
		prev = p;
	}
	// Reset many times: no growth, no leak (LeakSanitizer checks).
	for (int r = 0; r < 50; r++) {
		for (int i = 0; i < 20; i++)
			assert_non_null(pl_arena_alloc(a, 300));
		pl_arena_reset(a);
		assert_ptr_equal(pl_arena_alloc(a, 1), first);
	}
}

static void
test_big_blocks(void **state)
{
	pl_arena *a = *state;
	char *small1, *big, *small2;

	small1 = pl_arena_alloc(a, 100);
	big = pl_arena_alloc(a, 5000);
	small2 = pl_arena_alloc(a, 100);
	assert_non_null(small1);
	assert_non_null(big);
	assert_int_equal((uintptr_t)big % ALIGN, 0);
	memset(big, 'x', 5000);
	// The big request got its own block; the head kept filling.
	assert_ptr_equal(small2, small1 + 112);

	// A big request before any block exists.
	pl_arena b;
	pl_arena_init(&b, 1024, 0);
	big = pl_arena_alloc(&b, 4096);
	assert_non_null(big);
	memset(big, 'y', 4096);
	assert_non_null(pl_arena_alloc(&b, 10));
	pl_arena_reset(&b);
	assert_non_null(pl_arena_alloc(&b, 10));
	pl_arena_fini(&b);
}

static void
test_limit(void **state)
{
	pl_arena a;

	(void)state;
	pl_arena_init(&a, 256, 1000);
	assert_non_null(pl_arena_alloc(&a, 600));
	assert_null(pl_arena_alloc(&a, 401));
	assert_non_null(pl_arena_alloc(&a, 400));
	assert_null(pl_arena_alloc(&a, 1));
	assert_null(pl_arena_zalloc(&a, 1));
	assert_null(pl_arena_strdup(&a, "x"));
	assert_null(pl_arena_printf(&a, "%d", 1));
	assert_int_equal(a.size, 1000);
	pl_arena_reset(&a);
	assert_non_null(pl_arena_alloc(&a, 1000));
	pl_arena_reset(&a);
	assert_null(pl_arena_alloc(&a, 1001));
	assert_null(pl_arena_alloc(&a, SIZE_MAX));
	pl_arena_fini(&a);
}

static void
test_overflow(void **state)
{
	pl_arena *a = *state;

	assert_null(pl_arena_alloc(a, SIZE_MAX));
	assert_null(pl_arena_alloc(a, SIZE_MAX - 1));
	assert_null(pl_arena_alloc(a, SIZE_MAX - ALIGN));
	// Rounds up fine but cannot carry a block header.
	assert_null(pl_arena_alloc(a, SIZE_MAX - ALIGN - 4));
	assert_null(pl_arena_zalloc(a, SIZE_MAX - 3));
	assert_null(pl_arena_strndup(a, "abc", SIZE_MAX));
	// Still usable afterwards.
	assert_non_null(pl_arena_alloc(a, 8));
}

static void
test_strings(void **state)
{
	pl_arena *a = *state;
	char *s;

	s = pl_arena_strdup(a, "hello");
	assert_string_equal(s, "hello");
	assert_null(pl_arena_strdup(a, NULL));
	s = pl_arena_strdup(a, "");
	assert_string_equal(s, "");

	s = pl_arena_strndup(a, "hello, world", 5);
	assert_string_equal(s, "hello");
	assert_null(pl_arena_strndup(a, NULL, 3));
	// Exactly n bytes, even past an embedded NUL.
	s = pl_arena_strndup(a, "ab\0cd", 5);
	assert_memory_equal(s, "ab\0cd\0", 6);

	s = pl_arena_printf(a, "%s-%d-%05.1f", "x", 42, 3.14);
	assert_string_equal(s, "x-42-003.1");
	s = pl_arena_printf(a, "%s", "");
	assert_string_equal(s, "");

	// Longer than a block.
	s = pl_arena_printf(a, "%0*d", 5000, 7);
	assert_int_equal(strlen(s), 5000);
	assert_int_equal(s[4999], '7');
	assert_int_equal(s[0], '0');
}

static void
test_protobuf_allocator(void **state)
{
	pl_arena *a = *state;
	Parley__Rpc__V1__Request req = PARLEY__RPC__V1__REQUEST__INIT;
	Parley__Rpc__V1__Principal pr = PARLEY__RPC__V1__PRINCIPAL__INIT;
	char *scopes[] = { "messages:read", "messages:write" };
	uint8_t payload[300];
	uint8_t *buf;
	size_t len;

	for (size_t i = 0; i < sizeof(payload); i++)
		payload[i] = (uint8_t)i;
	pr.kind = PARLEY__RPC__V1__PRINCIPAL_KIND__PRINCIPAL_KIND_API_KEY;
	pr.tenant_id = "0190b3c4-0000-7000-8000-000000000001";
	pr.n_scopes = 2;
	pr.scopes = scopes;
	req.method = "/parley.billing.v1.Billing/ReserveUsage";
	req.request_id = 77;
	req.timeout_ms = 1500;
	req.principal = &pr;
	req.payload.data = payload;
	req.payload.len = sizeof(payload);

	len = parley__rpc__v1__request__get_packed_size(&req);
	buf = malloc(len);
	assert_non_null(buf);
	assert_int_equal(parley__rpc__v1__request__pack(&req, buf), len);

	Parley__Rpc__V1__Request *got =
	        parley__rpc__v1__request__unpack(pl_arena_pb(a), len, buf);
	assert_non_null(got);
	assert_true(a->size > 0);
	assert_string_equal(got->method, req.method);
	assert_int_equal(got->request_id, 77);
	assert_int_equal(got->timeout_ms, 1500);
	assert_non_null(got->principal);
	assert_int_equal(got->principal->kind, pr.kind);
	assert_string_equal(got->principal->tenant_id, pr.tenant_id);
	assert_int_equal(got->principal->n_scopes, 2);
	assert_string_equal(got->principal->scopes[1], "messages:write");
	assert_int_equal(got->payload.len, sizeof(payload));
	assert_memory_equal(got->payload.data, payload, sizeof(payload));

	// Past the limit the unpack fails cleanly.
	pl_arena small;
	pl_arena_init(&small, 0, 64);
	assert_null(parley__rpc__v1__request__unpack(pl_arena_pb(&small), len,
	                                             buf));
	pl_arena_fini(&small);

	// Garbage bytes fail cleanly too.
	uint8_t junk[] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x0a, 0x80 };
	assert_null(parley__rpc__v1__request__unpack(pl_arena_pb(a),
	                                             sizeof(junk), junk));
	free(buf);
	// Nothing unpacked above is freed by hand: teardown's fini does it.
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_init_defaults),
		cmocka_unit_test_setup_teardown(test_alignment_and_no_overlap,
		                                setup, teardown),
		cmocka_unit_test_setup_teardown(test_zalloc, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reset_reuses_first_block,
		                                setup, teardown),
		cmocka_unit_test_setup_teardown(test_big_blocks, setup,
		                                teardown),
		cmocka_unit_test(test_limit),
		cmocka_unit_test_setup_teardown(test_overflow, setup, teardown),
		cmocka_unit_test_setup_teardown(test_strings, setup, teardown),
		cmocka_unit_test_setup_teardown(test_protobuf_allocator, setup,
		                                teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
