// The agents handler table against the proto, and the engine's logic:
// normalisation, terms, handoff keywords, lead capture, secrets, the LLM
// wire format, page tokens.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "agents.h"

static void
test_table(void **state)
{
	char err[256] = "";
	(void)state;
	assert_int_equal(
	        pl_rpc_table_check(&agents_rpc_service, err, sizeof(err)), 0);
	assert_int_equal(agents_service_def.n_migrations, agents_n_migrations);
}

static void
test_normalize(void **state)
{
	pl_arena a;
	(void)state;
	pl_arena_init(&a, 0, 0);
	assert_string_equal(agents_text_normalize(
	                            &a, "¿Cuánto cuesta el ENVÍO? 🚚🙂"),
	                    "cuanto cuesta el envio");
	assert_string_equal(agents_text_normalize(&a, "  Ñandú,   año!! "),
	                    "nandu ano");
	assert_string_equal(agents_text_terms(&a, "what is the price of envio"),
	                    "price or envio");
	assert_string_equal(agents_text_terms(&a, "the a of"), "");
	assert_true(pl_utf8_valid("año", 4));
	assert_false(pl_utf8_valid("\xc3(", 2));
	assert_false(pl_utf8_valid("\xe2\x82", 2));
	pl_arena_fini(&a);
}

static void
test_handoff_and_leads(void **state)
{
	pl_arena a;
	agents_found_lead l;
	char *kw[] = { "human", "real person" };
	(void)state;
	pl_arena_init(&a, 0, 0);
	assert_string_equal(
	        agents_handoff_keyword(&a, "i want a human now", kw, 2),
	        "human");
	assert_string_equal(
	        agents_handoff_keyword(&a, "a real person please", kw, 2),
	        "real person");
	assert_null(agents_handoff_keyword(&a, "humanity is great", kw, 2));
	agents_lead_find(&a,
	                 "Hola, me llamo José Pérez, mi correo es "
	                 "Jose.P@Example.es y mi tel (55) 1234-5678",
	                 &l);
	assert_string_equal(l.name, "José Pérez");
	assert_string_equal(l.email, "jose.p@example.es");
	assert_string_equal(l.phone, "5512345678");
	agents_lead_find(&a, "I want 2 pizzas", &l);
	assert_null(l.name);
	assert_null(l.email);
	assert_null(l.phone);
	pl_arena_fini(&a);
}

static void
test_secret(void **state)
{
	pl_arena a;
	uint8_t key[32], *ct;
	size_t n;
	char *plain;
	(void)state;
	pl_arena_init(&a, 0, 0);
	assert_true(pl_key_decode(
	        "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=", key));
	assert_false(pl_key_decode("c2hvcnQ=", key));
	assert_int_equal(pl_seal(key, "k1", "sk-123", &ct, &n), PL_OK);
	assert_int_equal(pl_unseal(&a, key, "k1", ct, n, &plain), PL_OK);
	assert_string_equal(plain, "sk-123");
	assert_int_equal(pl_unseal(&a, key, "k2", ct, n, &plain), PL_DATA_LOSS);
	ct[n - 1] ^= 1;
	assert_int_equal(pl_unseal(&a, key, "k1", ct, n, &plain), PL_DATA_LOSS);
	free(ct);
	pl_arena_fini(&a);
}

static void
test_llm_format(void **state)
{
	pl_arena a;
	agents_llm_input in = { 0 };
	agents_llm_output out;
	agents_ctx_entry e = { "Q1", "A1" };
	char err[128], *body;
	const char *ok = "{\"model\":\"m\",\"choices\":[{\"message\":{"
	                 "\"content\":null,\"tool_calls\":[{\"function\":{"
	                 "\"name\":\"capture_lead\",\"arguments\":"
	                 "\"{\\\"email\\\":\\\"a@b.co\\\",\\\"city\\\":"
	                 "\\\"Lima\\\"}\"}}]}}],\"usage\":{\"prompt_tokens\":"
	                 "3,\"completion_tokens\":4}}";
	(void)state;
	pl_arena_init(&a, 0, 0);
	in.model = "m";
	in.system_prompt = "Be nice";
	in.entries = &e;
	in.n_entries = 1;
	in.text = "hi \"there\"";
	body = agents_llm_request(&in);
	assert_non_null(strstr(body, "capture_lead"));
	assert_non_null(strstr(body, "Q: Q1\\nA: A1"));
	assert_non_null(strstr(body, "hi \\\"there\\\""));
	free(body);
	assert_int_equal(
	        agents_llm_parse(&a, ok, strlen(ok), &out, err, sizeof(err)),
	        PL_OK);
	assert_null(out.content);
	assert_string_equal(out.lead->email, "a@b.co");
	assert_non_null(strstr(out.lead->extra->text, "Lima"));
	assert_int_equal(out.tokens_in, 3);
	{
		// Usage counts out of range: never negative, never past
		// AGENTS_MAX_TOKENS.
		const char *u =
		        "{\"choices\":[{\"message\":{\"content\":\"x\"}}],"
		        "\"usage\":{\"prompt_tokens\":-1000,"
		        "\"completion_tokens\":99999999999}}";
		assert_int_equal(agents_llm_parse(&a, u, strlen(u), &out, err,
		                                  sizeof(err)),
		                 PL_OK);
		assert_int_equal(out.tokens_in, 0);
		assert_int_equal(out.tokens_out, AGENTS_MAX_TOKENS);
	}
	assert_int_equal(agents_llm_parse(&a, "{\"choices\":[", 12, &out, err,
	                                  sizeof(err)),
	                 PL_INTERNAL);
	assert_int_equal(agents_llm_parse(&a, "{\"choices\":[]}", 14, &out, err,
	                                  sizeof(err)),
	                 PL_INTERNAL);
	assert_string_equal(
	        agents_token_decode(&a, agents_token_encode(&a, "12|abc")),
	        "12|abc");
	assert_null(agents_token_decode(&a, "!!!"));
	pl_arena_fini(&a);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_table),
		cmocka_unit_test(test_normalize),
		cmocka_unit_test(test_handoff_and_leads),
		cmocka_unit_test(test_secret),
		cmocka_unit_test(test_llm_format),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
