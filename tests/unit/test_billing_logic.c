// Unit tests of billing's pure logic: the handler table against the proto,
// periods across month ends and leap years, proration and overage
// arithmetic, times, and payment webhook signatures.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "billing.h"

static int64_t
day(int y, int m, int d)
{
	return billing_days_from_civil(y, m, d) * BILLING_DAY_S;
}

static void
test_table(void **state)
{
	char err[256];
	(void)state;
	for (const pl_rpc_service *const *s = billing_service_def.services;
	     *s != NULL; s++)
		assert_int_equal(pl_rpc_table_check(*s, err, sizeof(err)), 0);
	assert_int_equal(billing_n_migrations, BILLING_N_MIGRATIONS);
	assert_int_equal(pl_migrate_lint(billing_migrations,
	                                 billing_n_migrations, err,
	                                 sizeof(err)),
	                 0);
}

static void
test_civil(void **state)
{
	int y, m, d;
	(void)state;
	assert_int_equal(billing_days_from_civil(1970, 1, 1), 0);
	assert_int_equal(billing_days_from_civil(2000, 3, 1), 11017);
	for (int64_t n = -800000; n < 800000; n += 37) {
		billing_civil_from_days(n, &y, &m, &d);
		assert_int_equal(billing_days_from_civil(y, m, d), n);
	}
	assert_int_equal(billing_month_days(2024, 2), 29);
	assert_int_equal(billing_month_days(2023, 2), 28);
	assert_int_equal(billing_month_days(1900, 2), 28);
	assert_int_equal(billing_month_days(2000, 2), 29);
	assert_int_equal(billing_day_start(day(2024, 5, 1) + 3600),
	                 day(2024, 5, 1));
	assert_int_equal(billing_day_start(-1), -BILLING_DAY_S);
}

static void
test_add_months(void **state)
{
	int64_t a = day(2024, 1, 31);
	(void)state;
	assert_int_equal(billing_add_months(a, 1), day(2024, 2, 29));
	assert_int_equal(billing_add_months(a, 2), day(2024, 3, 31));
	assert_int_equal(billing_add_months(a, 3), day(2024, 4, 30));
	assert_int_equal(billing_add_months(a, 13), day(2025, 2, 28));
	assert_int_equal(billing_add_months(a, -2), day(2023, 11, 30));
	assert_int_equal(billing_add_months(day(2023, 12, 15), 1),
	                 day(2024, 1, 15));
	assert_int_equal(billing_add_months(day(2024, 2, 29), 12),
	                 day(2025, 2, 28));
	assert_int_equal(billing_add_months(day(2024, 2, 29), 48),
	                 day(2028, 2, 29));
}

static void
test_month_period(void **state)
{
	int64_t s, e, a = day(2024, 1, 31);
	(void)state;
	billing_month_period(a, day(2024, 2, 15), &s, &e);
	assert_int_equal(s, day(2024, 1, 31));
	assert_int_equal(e, day(2024, 2, 29));
	billing_month_period(a, day(2024, 2, 29), &s, &e);
	assert_int_equal(s, day(2024, 2, 29));
	assert_int_equal(e, day(2024, 3, 31));
	billing_month_period(a, day(2024, 3, 31) - 1, &s, &e);
	assert_int_equal(s, day(2024, 2, 29));
	billing_month_period(a, day(2024, 3, 31), &s, &e);
	assert_int_equal(s, day(2024, 3, 31));
	assert_int_equal(e, day(2024, 4, 30));
	// Year end, and a non-leap February.
	billing_month_period(day(2022, 12, 31), day(2023, 2, 28) + 5, &s, &e);
	assert_int_equal(s, day(2023, 2, 28));
	assert_int_equal(e, day(2023, 3, 31));
	billing_month_period(day(2023, 12, 31), day(2024, 1, 1), &s, &e);
	assert_int_equal(s, day(2023, 12, 31));
	assert_int_equal(e, day(2024, 1, 31));
	// Every instant lies in exactly its period, and periods tile time.
	for (int ad = 1; ad <= 31; ad++) {
		int64_t anchor = day(2023, 1, ad), prev_e = anchor;
		for (int k = 0; k < 30; k++) {
			billing_month_period(anchor, prev_e, &s, &e);
			assert_int_equal(s, prev_e);
			assert_true(e > s);
			billing_month_period(anchor, e - 1, &s, &e);
			assert_int_equal(s, prev_e);
			prev_e = e;
		}
	}
}

static void
test_money(void **state)
{
	(void)state;
	assert_int_equal(billing_prorate(1900, 15, 30), 950);
	assert_int_equal(billing_prorate(1, 1, 2), 1); // half up
	assert_int_equal(billing_prorate(1, 1, 3), 0);
	assert_int_equal(billing_prorate(2, 1, 3), 1);
	assert_int_equal(billing_prorate(INT64_MAX, 1, 1), INT64_MAX);
	assert_int_equal(billing_prorate(INT64_MAX, 2592000, 2592000),
	                 INT64_MAX);
	assert_int_equal(billing_prorate(-1, 1, 2), -1);
	assert_int_equal(billing_prorate(5, 3, 2), -1);
	assert_int_equal(billing_prorate(5, 1, 0), -1);
	assert_int_equal(billing_overage_charge(1500, 500), 750);
	assert_int_equal(billing_overage_charge(1, 500), 1); // 0.5 up
	assert_int_equal(billing_overage_charge(1, 499), 0);
	assert_int_equal(billing_overage_charge(INT64_MAX, INT64_MAX), -1);
	assert_int_equal(billing_overage_charge(-1, 1), -1);
	assert_int_equal(billing_period_fee(1200, BILLING_BI(YEAR)), 100);
	assert_int_equal(billing_period_fee(1206, BILLING_BI(YEAR)), 101);
	assert_int_equal(billing_period_fee(1200, BILLING_BI(MONTH)), 1200);
	assert_true(billing_currency_valid("USD"));
	assert_true(billing_currency_valid("BRL"));
	assert_false(billing_currency_valid("usd"));
	assert_false(billing_currency_valid("XXX"));
	assert_false(billing_currency_valid("USDD"));
	assert_false(billing_currency_valid(""));
	assert_int_equal(billing_metric_parse("ai_tokens"), 3);
	assert_int_equal(billing_metric_parse("nope"), -1);
	assert_null(billing_metric_name(0));
	assert_null(billing_metric_name(4));
}

static void
test_time(void **state)
{
	int64_t ms;
	char b[32];
	(void)state;
	assert_true(billing_parse_time("2024-02-29T12:30:00.123Z", &ms));
	billing_format_time(ms, b);
	assert_string_equal(b, "2024-02-29T12:30:00.123Z");
	assert_true(billing_parse_time("2024-03-01T01:00:00+02:00", &ms));
	billing_format_time(ms, b);
	assert_string_equal(b, "2024-02-29T23:00:00.000Z");
	assert_true(billing_parse_time("1969-12-31T23:59:59.5Z", &ms));
	assert_int_equal(ms, -500);
	billing_format_time(-500, b);
	assert_string_equal(b, "1969-12-31T23:59:59.500Z");
	assert_false(billing_parse_time("2023-02-29T00:00:00Z", &ms));
	assert_false(billing_parse_time("2024-01-01 00:00:00Z", &ms));
	assert_false(billing_parse_time("2024-01-01T00:00:00", &ms));
	assert_false(billing_parse_time("2024-01-01T24:00:00Z", &ms));
	assert_false(billing_parse_time("", &ms));
	assert_false(billing_parse_time("2024-01-01T00:00:00Zjunk", &ms));
}

static void
test_sig(void **state)
{
	const char *secret = "whsec_test";
	const uint8_t *body = (const uint8_t *)"{\"id\":\"evt_1\"}";
	size_t len = strlen((const char *)body);
	char h[96], h2[200];
	billing_sig s;
	(void)state;

	billing_sig_sign(secret, 1700000000, body, len, h);
	assert_int_equal(billing_sig_parse(h, &s), BILLING_SIG_OK);
	assert_int_equal(s.t, 1700000000);
	assert_int_equal(s.n_v1, 1);
	assert_int_equal(
	        billing_sig_verify(h, body, len, secret, 1700000000, 300),
	        BILLING_SIG_OK);
	assert_int_equal(
	        billing_sig_verify(h, body, len, secret, 1700000000 + 300, 300),
	        BILLING_SIG_OK);
	assert_int_equal(
	        billing_sig_verify(h, body, len, secret, 1700000000 + 301, 300),
	        BILLING_SIG_STALE);
	assert_int_equal(
	        billing_sig_verify(h, body, len, secret, 1700000000 - 301, 300),
	        BILLING_SIG_STALE);
	assert_int_equal(
	        billing_sig_verify(h, body, len, "other", 1700000000, 300),
	        BILLING_SIG_MISMATCH);
	assert_int_equal(
	        billing_sig_verify(h, body, len - 1, secret, 1700000000, 300),
	        BILLING_SIG_MISMATCH);
	assert_int_equal(billing_sig_verify(NULL, body, len, secret, 0, 300),
	                 BILLING_SIG_MISSING);
	assert_int_equal(billing_sig_verify("", body, len, secret, 0, 300),
	                 BILLING_SIG_MISSING);
	// Several v1 (rotation) and unknown schemes.
	snprintf(h2, sizeof(h2), "t=1700000000,v0=abc,v1=%064d,%s", 0,
	         strstr(h, "v1="));
	assert_int_equal(
	        billing_sig_verify(h2, body, len, secret, 1700000000, 300),
	        BILLING_SIG_OK);
	assert_int_equal(billing_sig_parse("t=1", &s), BILLING_SIG_MALFORMED);
	assert_int_equal(billing_sig_parse("v1=00", &s), BILLING_SIG_MALFORMED);
	assert_int_equal(
	        billing_sig_parse("t=x,v1="
	                          "0000000000000000000000"
	                          "000000000000000000000000000000000000"
	                          "000000",
	                          &s),
	        BILLING_SIG_MALFORMED);
	assert_int_equal(billing_sig_parse("garbage", &s),
	                 BILLING_SIG_MALFORMED);
	snprintf(h2, sizeof(h2), "t=1700000000,v1=%.63sg",
	         strstr(h, "v1=") + 3);
	assert_int_equal(billing_sig_parse(h2, &s), BILLING_SIG_MALFORMED);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_table),
		cmocka_unit_test(test_civil),
		cmocka_unit_test(test_add_months),
		cmocka_unit_test(test_month_period),
		cmocka_unit_test(test_money),
		cmocka_unit_test(test_time),
		cmocka_unit_test(test_sig),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
