// The retrieval index (services/agents/index.c): exact and misspelt
// matches, accents and emoji, ties, empty input, top-k order, and the
// cache's versions and eviction.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "agents.h"

static const struct {
	const char *id, *q, *a, *kw, *intent;
} faq[] = {
	{ "01", "What are your opening hours?", "9 to 18.", "schedule hours",
	  "hours" },
	{ "02", "How much does shipping cost?", "5 EUR.", "delivery price",
	  "shipping_cost" },
	{ "03", "How can I track my order?", "Use the link.",
	  "tracking package", "tracking" },
	{ "04", "¿Cuánto cuesta el envío?", "5 EUR.", "envio precio",
	  "costo_envio" },
	{ "05", "Is there a warranty?", "Two years.", "guarantee warranty",
	  "warranty" },
	{ "06", "Do you have vegan products?", "Yes.", "vegan plant", "vegan" },
};
#define NF (sizeof(faq) / sizeof(faq[0]))

static agents_index *
build(pl_arena *a, int64_t version)
{
	agents_ix_src src[NF];

	for (size_t i = 0; i < NF; i++) {
		src[i].id = faq[i].id;
		src[i].question = faq[i].q;
		src[i].answer = faq[i].a;
		src[i].intent = faq[i].intent;
		src[i].question_norm = agents_text_normalize(a, faq[i].q);
		src[i].keywords_norm = agents_text_normalize(
		        a,
		        pl_arena_printf(a, "%s %s", faq[i].kw, faq[i].intent));
		src[i].answer_norm = agents_text_normalize(a, faq[i].a);
	}
	return agents_index_build(src, NF, version);
}

static const char *
best(agents_index *ix, pl_arena *a, const char *text, double *score)
{
	agents_ix_hit h;

	if (agents_index_search(ix, a, agents_text_normalize(a, text), 1, &h) !=
	    1)
		return NULL;
	*score = h.score;
	return h.intent;
}

static void
test_matches(void **state)
{
	pl_arena a;
	agents_index *ix;
	double s = 0;
	const char *cases[][2] = {
		{ "what are your opening hours", "hours" },
		{ "wat r ur opening hours??", "hours" },
		{ "what time do you open? 🕘", "hours" },
		{ "how much is shiping 📦", "shipping_cost" },
		{ "track my ordr pls 🙏", "tracking" },
		{ "cuánto cuesta el envio 🚚", "costo_envio" },
		{ "CUANTO CUESTA EL ENVÍO", "costo_envio" },
		{ "is there a waranty", "warranty" },
		{ "beganos? vegan products", "vegan" },
	};

	(void)state;
	pl_arena_init(&a, 0, 0);
	ix = build(&a, 7);
	assert_non_null(ix);
	assert_int_equal(agents_index_size(ix), NF);
	assert_int_equal(agents_index_version(ix), 7);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *got = best(ix, &a, cases[i][0], &s);
		if (got == NULL || strcmp(got, cases[i][1]) != 0)
			fail_msg("\"%s\" -> %s, wanted %s", cases[i][0],
			         got ? got : "(none)", cases[i][1]);
		assert_true(s >= 0.30 && s <= 1.0);
	}
	// An exact question scores higher than a misspelt one.
	{
		double exact = 0, typo = 0;
		best(ix, &a, "Is there a warranty?", &exact);
		best(ix, &a, "is there a waranty", &typo);
		assert_true(exact > typo);
	}
	agents_index_release(ix);
	pl_arena_fini(&a);
}

static void
test_no_match(void **state)
{
	pl_arena a;
	agents_index *ix;
	agents_ix_hit h[4];
	double s = 1;
	const char *got;

	(void)state;
	pl_arena_init(&a, 0, 0);
	ix = build(&a, 1);
	// Nothing but stop words, nothing at all, unknown words.
	assert_int_equal(agents_index_search(ix, &a, "", 1, h), 0);
	assert_int_equal(agents_index_search(ix, &a, "hola que tal y", 1, h),
	                 0);
	got = best(ix, &a, "xylophone zebra quantum", &s);
	assert_true(got == NULL || s < 0.30);
	// k = 0 and k larger than the matches.
	assert_int_equal(agents_index_search(ix, &a, "shipping", 0, h), 0);
	size_t n = agents_index_search(ix, &a, "shipping cost envio", 4, h);
	assert_true(n >= 2 && n <= 4);
	for (size_t i = 1; i < n; i++)
		assert_true(h[i - 1].score >= h[i].score);
	agents_index_release(ix);
	pl_arena_fini(&a);
}

static void
test_empty_and_ties(void **state)
{
	pl_arena a;
	agents_index *ix = agents_index_build(NULL, 0, 3);
	agents_ix_src src[2];
	agents_ix_hit h[2];

	(void)state;
	pl_arena_init(&a, 0, 0);
	assert_non_null(ix);
	assert_int_equal(agents_index_search(ix, &a, "anything", 1, h), 0);
	agents_index_release(ix);
	// Two identical entries: the smaller id first.
	for (int i = 0; i < 2; i++) {
		src[i] = (agents_ix_src){ i ? "b" : "c",   "same question",
			                  "answer",        "x",
			                  "same question", "",
			                  "answer" };
	}
	ix = agents_index_build(src, 2, 1);
	assert_int_equal(agents_index_search(ix, &a, "same question", 2, h), 2);
	assert_string_equal(h[0].id, "b");
	assert_string_equal(h[1].id, "c");
	assert_true(h[0].score == h[1].score);
	agents_index_release(ix);
	pl_arena_fini(&a);
}

static void
test_cache(void **state)
{
	pl_arena a;
	agents_cache *c = agents_cache_new(2);
	agents_index *v1, *v2, *got;

	(void)state;
	pl_arena_init(&a, 0, 0);
	v1 = build(&a, 1);
	v2 = build(&a, 2);
	assert_null(agents_cache_get(c, "t", "kb", 1));
	agents_cache_put(c, "t", "kb", v1);
	got = agents_cache_get(c, "t", "kb", 1);
	assert_ptr_equal(got, v1);
	agents_index_release(got);
	// A moved version misses until a newer index is put.
	assert_null(agents_cache_get(c, "t", "kb", 2));
	agents_cache_put(c, "t", "kb", v2);
	got = agents_cache_get(c, "t", "kb", 1); // newer is fine
	assert_ptr_equal(got, v2);
	agents_index_release(got);
	// An older index never replaces a newer one.
	agents_cache_put(c, "t", "kb", v1);
	got = agents_cache_get(c, "t", "kb", 2);
	assert_ptr_equal(got, v2);
	agents_index_release(got);
	// Another tenant's base is another key; the cache holds 2.
	assert_null(agents_cache_get(c, "u", "kb", 1));
	agents_cache_put(c, "u", "kb", v1);
	agents_cache_put(c, "w", "kb", v1); // evicts the least recently used
	assert_null(agents_cache_get(c, "t", "kb", 0));
	got = agents_cache_get(c, "w", "kb", 0);
	assert_ptr_equal(got, v1);
	agents_index_release(got);
	assert_true(agents_cache_builds(c) >= 4);
	agents_index_release(v1);
	agents_index_release(v2);
	agents_cache_free(c);
	pl_arena_fini(&a);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_matches),
		cmocka_unit_test(test_no_match),
		cmocka_unit_test(test_empty_and_ties),
		cmocka_unit_test(test_cache),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
