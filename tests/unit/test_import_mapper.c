// The import's pure mapping: phones, enums, money, templates, recency.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "import.h"

static void
test_phones(void **state)
{
	char out[IMP_PHONE_MAX];

	(void)state;
	assert_true(import_phone_e164("+15550000004", out));
	assert_string_equal(out, "+15550000004");
	assert_true(import_phone_e164("15550000004", out));
	assert_string_equal(out, "+15550000004");
	assert_true(import_phone_e164("+1 (555) 000-0004", out));
	assert_string_equal(out, "+15550000004");
	assert_true(import_phone_e164("00 1555 000 0004", out));
	assert_string_equal(out, "+15550000004");
	assert_true(import_phone_e164("whatsapp:+5511900000003", out));
	assert_string_equal(out, "+5511900000003");
	assert_true(import_phone_e164("+44 7700 000002", out));
	assert_string_equal(out, "+447700000002");
	assert_false(import_phone_e164("12345", out));
	assert_false(import_phone_e164("call me", out));
	assert_false(import_phone_e164("+1234567890123456", out));
	assert_false(import_phone_e164(NULL, out));
}

static void
test_enums(void **state)
{
	(void)state;
	assert_int_equal(import_map_direction("incoming"), 1);
	assert_int_equal(import_map_direction("outgoing"), 2);
	assert_int_equal(import_map_direction("sideways"), 0);
	assert_int_equal(import_map_msg_type("text"), 1);
	assert_int_equal(import_map_msg_type("image"), 2);
	assert_int_equal(import_map_msg_type("audio"), 3);
	assert_int_equal(import_map_msg_type("voice"), 3);
	assert_int_equal(import_map_msg_type(NULL), 1);
	assert_int_equal(import_map_msg_type("hologram"), 11);
	assert_int_equal(import_map_msg_status("read", 2), 5);
	assert_int_equal(import_map_msg_status("failed", 1), 7);
	assert_int_equal(import_map_msg_status(NULL, 1), 1);
	assert_int_equal(import_map_msg_status("weird", 2), 3);
	assert_int_equal(import_map_order_status("cancelled"), 5);
	assert_int_equal(import_map_order_status("canceled"), 5);
	assert_int_equal(import_map_order_status("lost"), 0);
}

static void
test_money(void **state)
{
	int64_t v;

	(void)state;
	assert_true(import_decimal_minor("6.25", 2, &v));
	assert_int_equal(v, 625);
	assert_true(import_decimal_minor("2.5", 2, &v));
	assert_int_equal(v, 250);
	assert_true(import_decimal_minor("7", 2, &v));
	assert_int_equal(v, 700);
	assert_true(import_decimal_minor("1.230", 2, &v));
	assert_int_equal(v, 123);
	assert_false(import_decimal_minor("1.234", 2, &v));
	assert_false(import_decimal_minor("-1", 2, &v));
	assert_false(import_decimal_minor("1.2.3", 2, &v));
	assert_false(import_decimal_minor("99999999999999999999", 2, &v));
	assert_true(import_decimal_minor("500", 0, &v));
	assert_int_equal(v, 500);
}

static void
test_orders(void **state)
{
	pl_arena a;
	imp_order o = { 0 };
	char err[256];

	(void)state;
	pl_arena_init(&a, 0, 0);
	o.id = "7";
	assert_int_equal(
	        import_map_order(&a,
	                         "{\"items\": [{\"sku\": \"SKU-7\", \"name\": "
	                         "\"Item 7\", \"qty\": 2, \"unit_price\": "
	                         "13.75}, {\"sku\": \"SKU-1\", \"qty\": 1, "
	                         "\"unit_price\": 2.50}], \"currency\": "
	                         "\"USD\", \"address\": \"Street 7\"}",
	                         &o, err, sizeof(err)),
	        0);
	assert_int_equal(o.n_items, 2);
	assert_int_equal(o.items[0].unit_minor, 1375);
	assert_int_equal(o.items[0].qty, 2);
	assert_string_equal(o.items[1].name, "SKU-1");
	assert_int_equal(o.total_minor, 2 * 1375 + 250);
	assert_string_equal(o.currency, "USD");
	assert_string_equal(o.address, "{\"text\":\"Street 7\"}");
	assert_int_equal(
	        import_map_order(&a, "{\"items\": [", &o, err, sizeof(err)),
	        -1);
	assert_non_null(strstr(err, "orders row id=7"));
	assert_non_null(strstr(err, "not valid JSON"));
	assert_int_equal(import_map_order(&a,
	                                  "{\"items\": [{\"qty\": 0, "
	                                  "\"unit_price\": 1}]}",
	                                  &o, err, sizeof(err)),
	                 -1);
	assert_int_equal(import_map_order(&a, "{\"currency\": \"usd\"}", &o,
	                                  err, sizeof(err)),
	                 -1);
	pl_arena_fini(&a);
}

static void
test_templates(void **state)
{
	pl_arena a;
	imp_campaign c = { 0 };
	char err[256];

	(void)state;
	pl_arena_init(&a, 0, 0);
	c.id = "3";
	assert_int_equal(import_map_template(&a,
	                                     "Hello {{name}}, offer #3 is "
	                                     "waiting, {{ name }}! {{city}}",
	                                     &c, err, sizeof(err)),
	                 0);
	assert_string_equal(c.body,
	                    "Hello {{1}}, offer #3 is waiting, {{1}}! {{2}}");
	assert_int_equal(c.n_params, 2);
	assert_string_equal(c.params[0].field, "name");
	assert_string_equal(c.params[1].field, "custom_fields.city");
	assert_string_equal(c.tname, "legacy_campaign_3");
	assert_int_equal(import_map_template(&a, NULL, &c, err, sizeof(err)),
	                 -1);
	pl_arena_fini(&a);
}

static void
test_recency(void **state)
{
	int64_t now = 1735689600; // 2025-01-01

	(void)state;
	assert_int_equal(
	        import_conv_status("2024-01-01T00:00:00.000000Z", 0, now), 1);
	assert_int_equal(
	        import_conv_status("2024-01-01T00:00:00.000000Z", 30, now), 3);
	assert_int_equal(
	        import_conv_status("2024-12-25T00:00:00.000000Z", 30, now), 1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_phones),
		cmocka_unit_test(test_enums),
		cmocka_unit_test(test_money),
		cmocka_unit_test(test_orders),
		cmocka_unit_test(test_templates),
		cmocka_unit_test(test_recency),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
