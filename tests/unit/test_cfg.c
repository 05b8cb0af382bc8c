// Configuration tables read from the environment.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "pl/cfg.h"

static const char *const vars[] = {
	"PLT_URL",     "PLT_PORT",   "PLT_DEBUG",
	"PLT_TIMEOUT", "PLT_SECRET", "PLT_NAME",
};

static int
clean_env(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
		unsetenv(vars[i]);
	return 0;
}

static char *url, *secret, *name;
static int64_t port, timeout;
static bool debug;

static const pl_cfg_entry table[] = {
	{ "PLT_URL", PL_CFG_STRING, NULL, 0, 0, &url, "database URL" },
	{ "PLT_PORT", PL_CFG_INT, "8080", 1, 65535, &port, "listen port" },
	{ "PLT_DEBUG", PL_CFG_BOOL, "false", 0, 0, &debug, "debug mode" },
	{ "PLT_TIMEOUT", PL_CFG_DURATION, "2s", 10, 60000, &timeout,
	  "call timeout" },
	{ "PLT_SECRET", PL_CFG_SECRET, NULL, 0, 0, &secret, "shared secret" },
	{ "PLT_NAME", PL_CFG_STRING, "parley", 0, 0, &name, NULL },
	{ NULL },
};

static void
set_required(void)
{
	setenv("PLT_URL", "postgres://localhost/parley", 1);
	setenv("PLT_SECRET", "hunter2-topsecret", 1);
}

static void
test_defaults(void **state)
{
	char err[256];

	(void)state;
	set_required();
	assert_int_equal(pl_cfg_load(table, err, sizeof(err)), 0);
	assert_string_equal(err, "");
	assert_string_equal(url, "postgres://localhost/parley");
	assert_string_equal(secret, "hunter2-topsecret");
	assert_string_equal(name, "parley");
	assert_int_equal(port, 8080);
	assert_false(debug);
	assert_int_equal(timeout, 2000);
	pl_cfg_free(table);
	assert_null(url);
	assert_null(secret);
	assert_null(name);
	pl_cfg_free(table); // twice is harmless
}

static void
test_values_from_env(void **state)
{
	char err[256];

	(void)state;
	set_required();
	setenv("PLT_PORT", "65535", 1);
	setenv("PLT_DEBUG", "YES", 1);
	setenv("PLT_TIMEOUT", "1m", 1);
	setenv("PLT_NAME", "billing", 1);
	assert_int_equal(pl_cfg_load(table, err, sizeof(err)), 0);
	assert_int_equal(port, 65535);
	assert_true(debug);
	assert_int_equal(timeout, 60000);
	assert_string_equal(name, "billing");
	pl_cfg_free(table);

	// Empty counts as unset: the default applies.
	setenv("PLT_PORT", "", 1);
	assert_int_equal(pl_cfg_load(table, err, sizeof(err)), 0);
	assert_int_equal(port, 8080);
	pl_cfg_free(table);
}

static void
test_required_missing(void **state)
{
	char err[256];

	(void)state;
	setenv("PLT_SECRET", "s3cr3t-value", 1);
	url = (char *)"stale";
	assert_int_equal(pl_cfg_load(table, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "PLT_URL"));
	assert_non_null(strstr(err, "required"));
	assert_null(strchr(err, '\n'));
	// Nothing left allocated or dangling after a failure.
	assert_null(url);
	assert_null(secret);
	assert_null(name);

	setenv("PLT_URL", "", 1);
	assert_int_equal(pl_cfg_load(table, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "PLT_URL: must not be empty"));
}

static void
test_int_bounds(void **state)
{
	static const char *bad[] = { "0",
		                     "65536",
		                     "-1",
		                     "abc",
		                     "12x",
		                     " 80",
		                     "99999999999999999999999" };
	char err[256];

	(void)state;
	set_required();
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		setenv("PLT_PORT", bad[i], 1);
		assert_int_equal(pl_cfg_load(table, err, sizeof(err)), -1);
		assert_true(strncmp(err, "PLT_PORT: ", 10) == 0);
		assert_non_null(strstr(err, bad[i]));
		assert_null(url);
	}
	setenv("PLT_PORT", "0", 1);
	pl_cfg_load(table, err, sizeof(err));
	assert_string_equal(err,
	                    "PLT_PORT: must be between 1 and 65535, got \"0\"");
	setenv("PLT_PORT", "1", 1);
	assert_int_equal(pl_cfg_load(table, err, sizeof(err)), 0);
	assert_int_equal(port, 1);
	pl_cfg_free(table);

	// Unbounded when min and max are both 0.
	int64_t v;
	const pl_cfg_entry t2[] = {
		{ "PLT_PORT", PL_CFG_INT, NULL, 0, 0, &v, NULL },
		{ NULL },
	};
	setenv("PLT_PORT", "-9223372036854775808", 1);
	assert_int_equal(pl_cfg_load(t2, err, sizeof(err)), 0);
	assert_true(v == INT64_MIN);
}

static void
test_bools(void **state)
{
	static const struct {
		const char *s;
		bool v;
	} ok[] = {
		{ "true", true }, { "TRUE", true },   { "1", true },
		{ "yes", true },  { "false", false }, { "0", false },
		{ "no", false },  { "No", false },
	};
	static const char *bad[] = { "maybe", "2", "y", "truee", " true" };
	char err[256];

	(void)state;
	set_required();
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		setenv("PLT_DEBUG", ok[i].s, 1);
		assert_int_equal(pl_cfg_load(table, err, sizeof(err)), 0);
		assert_int_equal(debug, ok[i].v);
		pl_cfg_free(table);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		setenv("PLT_DEBUG", bad[i], 1);
		assert_int_equal(pl_cfg_load(table, err, sizeof(err)), -1);
		assert_true(strncmp(err, "PLT_DEBUG: ", 11) == 0);
	}
}

static void
test_durations(void **state)
{
	static const struct {
		const char *s;
		int64_t ms;
	} ok[] = {
		{ "250ms", 250 },  { "2s", 2000 },   { "5m", 300000 },
		{ "1h", 3600000 }, { "1500", 1500 }, { "0", 0 },
		{ "0s", 0 },       { "007ms", 7 },
	};
	static const char *bad[] = {
		"",
		"ms",
		"-5s",
		"5 s",
		"5S",
		"1d",
		"1.5s",
		"5sec",
		"s5",
		"99999999999999999999",
		"9223372036854775807h",
		" 5",
		"5ms ",
	};
	int64_t ms;
	char err[256];

	(void)state;
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		ms = -1;
		assert_true(pl_cfg_parse_duration(ok[i].s, &ms));
		assert_int_equal(ms, ok[i].ms);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (pl_cfg_parse_duration(bad[i], &ms))
			fail_msg("accepted \"%s\"", bad[i]);
	}
	assert_false(pl_cfg_parse_duration(NULL, &ms));
	assert_true(pl_cfg_parse_duration("9223372036854775807", &ms));
	assert_true(ms == INT64_MAX);

	// Through the table, with its bounds (10ms .. 1m).
	set_required();
	setenv("PLT_TIMEOUT", "250ms", 1);
	assert_int_equal(pl_cfg_load(table, err, sizeof(err)), 0);
	assert_int_equal(timeout, 250);
	pl_cfg_free(table);
	setenv("PLT_TIMEOUT", "2m", 1);
	assert_int_equal(pl_cfg_load(table, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "PLT_TIMEOUT: must be between"));
	setenv("PLT_TIMEOUT", "soon", 1);
	assert_int_equal(pl_cfg_load(table, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "PLT_TIMEOUT: must be a duration"));
}

static void
test_secret_never_echoed(void **state)
{
	char *s;
	char err[256];

	(void)state;
	setenv("PLT_URL", "postgres://x", 1);
	setenv("PLT_SECRET", "", 1);
	assert_int_equal(pl_cfg_load(table, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "PLT_SECRET: must not be empty"));

	// A secret that is set appears in no error, even when a later entry
	// fails, and is freed again.
	setenv("PLT_SECRET", "hunter2-topsecret", 1);
	setenv("PLT_TIMEOUT", "later", 1);
	assert_int_equal(pl_cfg_load(table, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "PLT_TIMEOUT"));
	assert_null(strstr(err, "hunter2"));
	assert_null(secret);

	// Loaded before a missing entry: freed, never shown.
	const pl_cfg_entry t2[] = {
		{ "PLT_SECRET", PL_CFG_SECRET, NULL, 0, 0, &s, NULL },
		{ "PLT_URL", PL_CFG_STRING, NULL, 0, 0, &url, NULL },
		{ NULL },
	};
	unsetenv("PLT_URL");
	assert_int_equal(pl_cfg_load(t2, err, sizeof(err)), -1);
	assert_null(strstr(err, "hunter2"));
	assert_non_null(strstr(err, "PLT_URL"));
	assert_null(s);
}

static void
test_error_is_one_line_and_bounded(void **state)
{
	char err[64];
	char big[400];

	(void)state;
	set_required();
	memset(big, '9', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	big[3] = '\n';
	setenv("PLT_PORT", big, 1);
	assert_int_equal(pl_cfg_load(table, err, sizeof(err)), -1);
	assert_true(strlen(err) < sizeof(err));
	assert_null(strchr(err, '\n'));
	assert_true(strncmp(err, "PLT_PORT: ", 10) == 0);
	// A NULL or empty buffer is tolerated.
	assert_int_equal(pl_cfg_load(table, NULL, 0), -1);
	assert_int_equal(pl_cfg_load(table, err, 0), -1);
}

static void
test_bad_tables(void **state)
{
	char err[128];
	const pl_cfg_entry nodst[] = {
		{ "PLT_URL", PL_CFG_STRING, "x", 0, 0, NULL, NULL },
		{ NULL },
	};
	int64_t v;
	const pl_cfg_entry baddef[] = {
		{ "PLT_PORT", PL_CFG_INT, "eighty", 0, 0, &v, NULL },
		{ NULL },
	};
	const pl_cfg_entry empty[] = { { NULL } };

	(void)state;
	assert_int_equal(pl_cfg_load(NULL, err, sizeof(err)), -1);
	assert_int_equal(pl_cfg_load(nodst, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "PLT_URL"));
	assert_int_equal(pl_cfg_load(baddef, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "(default)"));
	assert_int_equal(pl_cfg_load(empty, err, sizeof(err)), 0);
	pl_cfg_free(NULL);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_defaults, clean_env,
		                                clean_env),
		cmocka_unit_test_setup_teardown(test_values_from_env, clean_env,
		                                clean_env),
		cmocka_unit_test_setup_teardown(test_required_missing,
		                                clean_env, clean_env),
		cmocka_unit_test_setup_teardown(test_int_bounds, clean_env,
		                                clean_env),
		cmocka_unit_test_setup_teardown(test_bools, clean_env,
		                                clean_env),
		cmocka_unit_test_setup_teardown(test_durations, clean_env,
		                                clean_env),
		cmocka_unit_test_setup_teardown(test_secret_never_echoed,
		                                clean_env, clean_env),
		cmocka_unit_test_setup_teardown(
		        test_error_is_one_line_and_bounded, clean_env,
		        clean_env),
		cmocka_unit_test_setup_teardown(test_bad_tables, clean_env,
		                                clean_env),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
