// pl_migrate_lint: the additive policy over migration files.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "pl/migrate.h"

#define INIT                                                                   \
	"CREATE TABLE contacts (\n"                                            \
	"    tenant_id uuid NOT NULL,\n"                                       \
	"    contact_id uuid NOT NULL,\n"                                      \
	"    phone text,\n"                                                    \
	"    \"Email\" text,\n"                                                \
	"    CONSTRAINT contacts_pk PRIMARY KEY (tenant_id, contact_id),\n"    \
	"    UNIQUE (tenant_id, phone)\n"                                      \
	");\n"

static char errbuf[512];

// Lints files given as name, sql, name, sql, ..., NULL.
static int
lint(const char *first, ...)
{
	pl_migration m[8];
	size_t n = 0;
	va_list ap;
	va_start(ap, first);
	for (const char *name = first; name != NULL && n < 8;
	     name = va_arg(ap, const char *)) {
		char *sql = va_arg(ap, char *);
		m[n].name = (char *)name;
		m[n].sql = sql;
		m[n].len = strlen(sql);
		n++;
	}
	va_end(ap);
	errbuf[0] = '\0';
	return pl_migrate_lint(m, n, errbuf, sizeof(errbuf));
}

static void
expect_violation(int rc, const char *want)
{
	assert_int_not_equal(rc, 0);
	assert_string_equal(errbuf, want);
}

static void
test_drop_column(void **state)
{
	(void)state;
	int rc = lint("001_init.sql", INIT, "002_x.sql",
	              "-- tidy up\n"
	              "ALTER TABLE contacts\n"
	              "    DROP COLUMN phone;\n",
	              NULL);
	expect_violation(rc,
	                 "002_x.sql:3: drops column contacts.phone created in "
	                 "001_init.sql");
	// COLUMN is optional; IF EXISTS and a quoted name.
	rc = lint(
	        "001_init.sql", INIT, "002_x.sql",
	        "ALTER TABLE IF EXISTS ONLY contacts DROP IF EXISTS \"Email\" "
	        "CASCADE;",
	        NULL);
	expect_violation(rc,
	                 "002_x.sql:1: drops column contacts.Email created in "
	                 "001_init.sql");
}

static void
test_drop_table(void **state)
{
	(void)state;
	int rc = lint("001_init.sql", INIT, "002_x.sql",
	              "DROP TABLE IF EXISTS scratch, contacts CASCADE;", NULL);
	expect_violation(
	        rc,
	        "002_x.sql:1: drops table contacts created in 001_init.sql");
	rc = lint("001_init.sql", INIT, "002_x.sql", "drop table CONTACTS",
	          NULL);
	expect_violation(
	        rc,
	        "002_x.sql:1: drops table contacts created in 001_init.sql");
}

static void
test_rename(void **state)
{
	(void)state;
	int rc = lint("001_init.sql", INIT, "002_x.sql",
	              "ALTER TABLE contacts RENAME TO people;", NULL);
	expect_violation(
	        rc,
	        "002_x.sql:1: renames table contacts created in 001_init.sql");
	rc = lint("001_init.sql", INIT, "002_x.sql",
	          "ALTER TABLE contacts RENAME COLUMN phone TO msisdn;", NULL);
	expect_violation(
	        rc, "002_x.sql:1: renames column contacts.phone created in "
	            "001_init.sql");
	rc = lint("001_init.sql", INIT, "002_x.sql",
	          "ALTER TABLE contacts RENAME phone TO msisdn;", NULL);
	assert_int_not_equal(rc, 0);
	assert_non_null(strstr(errbuf, "renames column contacts.phone"));
	rc = lint("001_init.sql", INIT, "002_x.sql",
	          "ALTER TABLE contacts SET SCHEMA archive;", NULL);
	expect_violation(
	        rc,
	        "002_x.sql:1: moves table contacts created in 001_init.sql to "
	        "another schema");
}

static void
test_change_type(void **state)
{
	(void)state;
	int rc = lint(
	        "001_init.sql", INIT, "002_x.sql",
	        "ALTER TABLE contacts ALTER COLUMN phone TYPE varchar(20);",
	        NULL);
	expect_violation(
	        rc, "002_x.sql:1: changes the type of column contacts.phone "
	            "created in 001_init.sql");
	rc = lint("001_init.sql", INIT, "002_x.sql",
	          "\n\nALTER TABLE contacts ALTER phone SET DATA TYPE bytea "
	          "USING phone::bytea;",
	          NULL);
	expect_violation(
	        rc, "002_x.sql:3: changes the type of column contacts.phone "
	            "created in 001_init.sql");
}

// A column moved to a domain over its own type: allowed; anything near it
// is not.
static void
test_retype_to_own_domain(void **state)
{
	(void)state;
	assert_int_equal(
	        lint("001_init.sql", INIT, "002_x.sql",
	             "CREATE DOMAIN app.phone_e164 AS text CHECK (VALUE ~ "
	             "'^[+][0-9]+$');\n"
	             "ALTER TABLE contacts ALTER COLUMN phone TYPE "
	             "app.phone_e164;\n"
	             "ALTER TABLE contacts ALTER \"Email\" SET DATA TYPE "
	             "phone_e164;",
	             NULL),
	        0);
	// Declared in an earlier file, without AS.
	assert_int_equal(lint("001_init.sql",
	                      INIT "CREATE DOMAIN phone_e164 text;",
	                      "002_x.sql",
	                      "ALTER TABLE contacts ALTER phone TYPE "
	                      "phone_e164;",
	                      NULL),
	                 0);
	static const char *const bad[] = {
		// another base type
		"CREATE DOMAIN d AS varchar; "
		"ALTER TABLE contacts ALTER COLUMN phone TYPE d;",
		// a base type the lint does not compare
		"CREATE DOMAIN d AS varchar(20); "
		"ALTER TABLE contacts ALTER COLUMN phone TYPE d;",
		// USING rewrites the values
		"CREATE DOMAIN d AS text; "
		"ALTER TABLE contacts ALTER COLUMN phone TYPE d USING "
		"lower(phone);",
		// an array of the domain, another collation
		"CREATE DOMAIN d AS text; "
		"ALTER TABLE contacts ALTER COLUMN phone TYPE d[];",
		"CREATE DOMAIN d AS text; "
		"ALTER TABLE contacts ALTER COLUMN phone TYPE d COLLATE \"C\";",
		// no such domain, or one of another schema
		"ALTER TABLE contacts ALTER COLUMN phone TYPE d;",
		"CREATE DOMAIN a.d AS text; "
		"ALTER TABLE contacts ALTER COLUMN phone TYPE b.d;",
		// a domain over uuid for a text column
		"CREATE DOMAIN d AS uuid; "
		"ALTER TABLE contacts ALTER COLUMN phone TYPE d;",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int rc = lint("001_init.sql", INIT, "002_x.sql", bad[i], NULL);
		expect_violation(rc, "002_x.sql:1: changes the type of column "
		                     "contacts.phone created in 001_init.sql");
	}
	// A column whose type is more than one word is never compared.
	expect_violation(
	        lint("001_init.sql",
	             "CREATE TABLE t (tenant_id uuid, at timestamp with time "
	             "zone);",
	             "002_x.sql",
	             "CREATE DOMAIN d AS timestamp; ALTER TABLE t ALTER at "
	             "TYPE "
	             "d;",
	             NULL),
	        "002_x.sql:1: changes the type of column t.at created in "
	        "001_init.sql");
}

static void
test_set_not_null(void **state)
{
	(void)state;
	int rc = lint("001_init.sql", INIT, "002_x.sql",
	              "ALTER TABLE contacts ALTER COLUMN phone SET NOT NULL;",
	              NULL);
	expect_violation(
	        rc,
	        "002_x.sql:1: sets NOT NULL on column contacts.phone created "
	        "in 001_init.sql");
}

static void
test_add_not_null_without_default(void **state)
{
	(void)state;
	int rc = lint("001_init.sql", INIT, "002_x.sql",
	              "ALTER TABLE contacts ADD COLUMN name text NOT NULL;",
	              NULL);
	expect_violation(
	        rc, "002_x.sql:1: adds NOT NULL column contacts.name without a "
	            "default to table contacts created in 001_init.sql");
	// Without the COLUMN keyword, after an allowed action.
	rc = lint("001_init.sql", INIT, "002_x.sql",
	          "ALTER TABLE contacts ADD COLUMN a int,\n"
	          "  ADD b int NOT NULL CHECK (b > 0);",
	          NULL);
	expect_violation(
	        rc, "002_x.sql:2: adds NOT NULL column contacts.b without a "
	            "default to table contacts created in 001_init.sql");
}

static void
test_columns_added_later_are_released_too(void **state)
{
	(void)state;
	int rc = lint("001_init.sql", INIT, "002_add.sql",
	              "ALTER TABLE contacts ADD COLUMN name text;", "003_x.sql",
	              "ALTER TABLE contacts DROP COLUMN name;", NULL);
	expect_violation(rc,
	                 "003_x.sql:1: drops column contacts.name created in "
	                 "002_add.sql");
}

static void
test_schema_qualified(void **state)
{
	(void)state;
	const char *init = "CREATE SCHEMA IF NOT EXISTS messaging;\n"
	                   "CREATE TABLE IF NOT EXISTS messaging.contacts "
	                   "(contact_id uuid PRIMARY KEY, phone text);\n";
	int rc =
	        lint("001_init.sql", init, "002_x.sql",
	             "ALTER TABLE messaging.contacts DROP COLUMN phone;", NULL);
	expect_violation(rc,
	                 "002_x.sql:1: drops column contacts.phone created in "
	                 "001_init.sql");
	// Unqualified in one file, qualified in the other.
	rc = lint("001_init.sql", INIT, "002_x.sql",
	          "ALTER TABLE messaging.contacts DROP COLUMN phone;", NULL);
	assert_int_not_equal(rc, 0);
	rc = lint("001_init.sql", init, "002_x.sql",
	          "DROP TABLE \"messaging\".\"contacts\";", NULL);
	expect_violation(
	        rc,
	        "002_x.sql:1: drops table contacts created in 001_init.sql");
	// Another schema's table of the same name is not ours.
	rc = lint("001_init.sql", init, "002_x.sql",
	          "DROP TABLE billing.contacts;", NULL);
	assert_int_equal(rc, 0);
	rc = lint("001_init.sql", init, "002_x.sql",
	          "DROP SCHEMA messaging CASCADE;", NULL);
	expect_violation(
	        rc,
	        "002_x.sql:1: drops schema messaging holding table contacts "
	        "created in 001_init.sql");
}

static void
test_same_file_changes_allowed(void **state)
{
	(void)state;
	int rc = lint(
	        "001_init.sql", INIT, "002_new.sql",
	        "CREATE TABLE notes (note_id uuid PRIMARY KEY, body text, x "
	        "int);\n"
	        "ALTER TABLE notes RENAME COLUMN body TO text_body;\n"
	        "ALTER TABLE notes ALTER COLUMN text_body TYPE varchar(100);\n"
	        "ALTER TABLE notes ALTER COLUMN text_body SET NOT NULL;\n"
	        "ALTER TABLE notes DROP COLUMN x;\n"
	        "ALTER TABLE notes ADD COLUMN y int NOT NULL;\n"
	        "ALTER TABLE contacts ADD COLUMN nick text;\n"
	        "ALTER TABLE contacts ALTER COLUMN nick TYPE varchar(10);\n"
	        "ALTER TABLE contacts RENAME COLUMN nick TO nickname;\n"
	        "ALTER TABLE contacts DROP COLUMN nickname;\n"
	        "ALTER TABLE notes RENAME TO memos;\n"
	        "DROP TABLE memos;\n",
	        NULL);
	assert_int_equal(rc, 0);
	// Everything within the first file.
	rc = lint("001_init.sql",
	          INIT "ALTER TABLE contacts DROP COLUMN phone;\n"
	               "DROP TABLE contacts;\n",
	          NULL);
	assert_int_equal(rc, 0);
}

static void
test_additive_changes_allowed(void **state)
{
	(void)state;
	int rc = lint(
	        "001_init.sql", INIT, "002_more.sql",
	        "ALTER TABLE contacts ADD COLUMN name text;\n"
	        "ALTER TABLE contacts ADD COLUMN IF NOT EXISTS score int NOT "
	        "NULL DEFAULT 0;\n"
	        "ALTER TABLE contacts ADD COLUMN created_at timestamptz NOT "
	        "NULL DEFAULT now();\n"
	        "ALTER TABLE contacts ADD COLUMN seq bigint GENERATED ALWAYS "
	        "AS IDENTITY NOT NULL;\n"
	        "ALTER TABLE contacts ADD COLUMN checked text CHECK (checked "
	        "IS NOT NULL OR phone IS NULL);\n"
	        "CREATE INDEX contacts_phone_idx ON contacts (tenant_id, "
	        "phone);\n"
	        "CREATE UNIQUE INDEX IF NOT EXISTS c_idx ON contacts (phone);\n"
	        "ALTER TABLE contacts ALTER COLUMN phone DROP NOT NULL;\n"
	        "ALTER TABLE contacts ALTER COLUMN phone SET DEFAULT '';\n"
	        "ALTER TABLE contacts ADD CONSTRAINT phone_len CHECK "
	        "(length(phone) < 40) NOT VALID;\n"
	        "ALTER TABLE contacts DROP CONSTRAINT phone_len;\n"
	        "ALTER TABLE contacts RENAME CONSTRAINT contacts_pk TO pk;\n"
	        "ALTER TABLE contacts ENABLE ROW LEVEL SECURITY;\n"
	        "DROP INDEX contacts_phone_idx;\n"
	        "DROP TABLE IF EXISTS never_created;\n",
	        NULL);
	if (rc != 0)
		fail_msg("unexpected violation: %s", errbuf);
}

static void
test_comments_and_strings_ignored(void **state)
{
	(void)state;
	int rc = lint(
	        "001_init.sql", INIT, "002_x.sql",
	        "-- DROP TABLE contacts;\n"
	        "/* ALTER TABLE contacts DROP COLUMN phone;\n"
	        "   /* nested: drop table contacts; */ still a comment; */\n"
	        "COMMENT ON TABLE contacts IS 'never drop table contacts; "
	        "it''s ours';\n"
	        "INSERT INTO contacts (phone) VALUES (E'\\'; drop table "
	        "contacts; --');\n"
	        "CREATE FUNCTION f() RETURNS void LANGUAGE sql AS $fn$\n"
	        "    DROP TABLE contacts;\n"
	        "$fn$;\n"
	        "DO $$ BEGIN PERFORM 1; END $$;\n"
	        "SELECT 1 AS \"drop table contacts\";\n",
	        NULL);
	if (rc != 0)
		fail_msg("unexpected violation: %s", errbuf);
	// Line numbers count the lines of comments and strings.
	rc = lint("001_init.sql", INIT, "002_x.sql",
	          "/* one\n two */ SELECT 'a\nb';\n"
	          "DROP TABLE contacts;",
	          NULL);
	expect_violation(
	        rc,
	        "002_x.sql:4: drops table contacts created in 001_init.sql");
}

static void
test_bad_input(void **state)
{
	(void)state;
	int rc = lint("001_init.sql", "SELECT 'unterminated", NULL);
	assert_int_not_equal(rc, 0);
	assert_string_equal(errbuf, "001_init.sql:1: unterminated string");
	rc = lint("001_init.sql", "SELECT 1;\n/* open", NULL);
	assert_int_not_equal(rc, 0);
	assert_string_equal(errbuf, "001_init.sql:2: unterminated comment");
	rc = lint("001_init.sql", "SELECT $x$ body", NULL);
	assert_int_not_equal(rc, 0);
	assert_non_null(strstr(errbuf, "unterminated dollar-quoted"));
	assert_int_not_equal(pl_migrate_lint(NULL, 2, errbuf, sizeof(errbuf)),
	                     0);
	assert_int_equal(pl_migrate_lint(NULL, 0, errbuf, sizeof(errbuf)), 0);
	// Odd but harmless statements.
	rc = lint("001_init.sql",
	          "ALTER TABLE;\nDROP TABLE;\n;;\nCREATE "
	          "TABLE\n;ALTER TABLE x RENAME",
	          NULL);
	assert_int_equal(rc, 0);
	// A tiny error buffer is never overrun.
	pl_migration m[2] = { { "001_a.sql", INIT, strlen(INIT) },
		              { "002_b.sql", "DROP TABLE contacts;", 20 } };
	char small[8];
	assert_int_not_equal(pl_migrate_lint(m, 2, small, sizeof(small)), 0);
	assert_string_equal(small, "002_b.s");
	assert_int_not_equal(pl_migrate_lint(m, 2, NULL, 0), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_drop_column),
		cmocka_unit_test(test_drop_table),
		cmocka_unit_test(test_rename),
		cmocka_unit_test(test_change_type),
		cmocka_unit_test(test_retype_to_own_domain),
		cmocka_unit_test(test_set_not_null),
		cmocka_unit_test(test_add_not_null_without_default),
		cmocka_unit_test(test_columns_added_later_are_released_too),
		cmocka_unit_test(test_schema_qualified),
		cmocka_unit_test(test_same_file_changes_allowed),
		cmocka_unit_test(test_additive_changes_allowed),
		cmocka_unit_test(test_comments_and_strings_ignored),
		cmocka_unit_test(test_bad_input),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
