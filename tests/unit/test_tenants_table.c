// The tenants service without a database: the handler table against the
// proto (methods and the access comments = the permission matrix), the
// secret format, credential sealing and key rotation, validation, the
// Authenticate cache.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "tenants.h"

static void
test_table_matches_proto(void **state)
{
	char err[256] = "";
	(void)state;
	assert_int_equal(
	        pl_rpc_table_check(&tenants_rpc_service, err, sizeof(err)), 0);
	assert_int_equal(tenants_service_def.n_migrations,
	                 tenants_n_migrations);
	assert_int_equal(pl_migrate_lint(tenants_migrations,
	                                 tenants_n_migrations, err,
	                                 sizeof(err)),
	                 0);
}

// Reads "// access: ..." above each rpc in the proto and compares it with
// the table's access and scope: the matrix exists once, in the table, and
// the contract's comments say the same.
static void
test_permission_matrix(void **state)
{
	FILE *f = fopen(PARLEY_SOURCE_DIR
	                "/proto/parley/tenants/v1/tenants.proto",
	                "r");
	char line[512], access[256] = "";
	int checked = 0;

	(void)state;
	assert_non_null(f);
	while (fgets(line, sizeof(line), f) != NULL) {
		char *p = strstr(line, "// access: ");
		if (p != NULL) {
			snprintf(access, sizeof(access), "%s", p + 11);
			continue;
		}
		p = strstr(line, "rpc ");
		if (p == NULL || access[0] == '\0')
			continue;
		char name[64];
		assert_int_equal(sscanf(p + 4, "%63[A-Za-z]", name), 1);
		const pl_rpc_method *m = NULL;
		for (const pl_rpc_method *e = tenants_rpc_service.methods;
		     e->name; e++)
			if (strcmp(e->name, name) == 0)
				m = e;
		assert_non_null(m);
		pl_access want = PL_CALLER_PUBLIC;
		if (strncmp(access, "public", 6) == 0)
			want = PL_CALLER_PUBLIC;
		else if (strncmp(access, "service", 7) == 0)
			want = PL_CALLER_SERVICE;
		else if (strncmp(access, "platform_admin", 14) == 0)
			want = PL_PLATFORM_ADMIN;
		else if (strncmp(access, "viewer", 6) == 0)
			want = PL_ROLE_VIEWER;
		else if (strncmp(access, "agent", 5) == 0)
			want = PL_ROLE_AGENT;
		else if (strncmp(access, "admin", 5) == 0)
			want = PL_ROLE_ADMIN;
		else if (strncmp(access, "owner", 5) == 0)
			want = PL_ROLE_OWNER;
		else
			fail_msg("unknown access comment for %s: %s", name,
			         access);
		if (m->access != want)
			fail_msg("%s: table access %d, proto says %s", name,
			         m->access, access);
		char *sc = strstr(access, "scope ");
		if (sc != NULL) {
			char scope[64];
			assert_int_equal(sscanf(sc + 6, "%63[a-z:]", scope), 1);
			assert_non_null(m->scope);
			assert_string_equal(m->scope, scope);
		} else if (m->scope != NULL)
			fail_msg("%s: table has scope %s, proto none", name,
			         m->scope);
		access[0] = '\0';
		checked++;
	}
	fclose(f);
	assert_int_equal(checked, 29);
}

static void
test_secret_format(void **state)
{
	char s[TENANTS_SECRET_LEN + 1], pre[16], pre2[16];
	uint8_t h[TENANTS_HASH_LEN], h2[TENANTS_HASH_LEN];

	(void)state;
	tenants_secret_new(TENANTS_SECRET_API_KEY, s, pre, h);
	assert_int_equal(strlen(s), TENANTS_SECRET_LEN);
	assert_memory_equal(s, "pk_", 3);
	assert_memory_equal(s + 3, pre, TENANTS_PREFIX_LEN);
	assert_int_equal(tenants_secret_parse(s, pre2, h2),
	                 TENANTS_SECRET_API_KEY);
	assert_string_equal(pre, pre2);
	assert_memory_equal(h, h2, sizeof(h));
	tenants_secret_new(TENANTS_SECRET_SESSION, s, pre, h);
	assert_memory_equal(s, "st_", 3);
	assert_int_equal(tenants_secret_parse(s, pre2, h2),
	                 TENANTS_SECRET_SESSION);
	// Malformed: wrong kind, length, characters.
	s[0] = 'x';
	assert_int_equal(tenants_secret_parse(s, pre2, h2),
	                 TENANTS_SECRET_INVALID);
	s[0] = 's';
	s[20] = '!';
	assert_int_equal(tenants_secret_parse(s, pre2, h2),
	                 TENANTS_SECRET_INVALID);
	assert_int_equal(tenants_secret_parse("st_abc", pre2, h2),
	                 TENANTS_SECRET_INVALID);
	assert_int_equal(tenants_secret_parse("", pre2, h2),
	                 TENANTS_SECRET_INVALID);
	assert_int_equal(tenants_secret_parse(NULL, pre2, h2),
	                 TENANTS_SECRET_INVALID);
	// Two secrets differ.
	char t[TENANTS_SECRET_LEN + 1];
	tenants_secret_new(TENANTS_SECRET_SESSION, t, pre, h);
	tenants_secret_new(TENANTS_SECRET_SESSION, s, pre, h2);
	assert_string_not_equal(s, t);
}

#define K1 "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=" // 32 bytes
#define K2 "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=" // 32 bytes

static void
test_seal_open_rotate(void **state)
{
	tenants_keyring old, cur;
	char err[128];
	uint8_t *sealed, *plain;
	size_t n, pn;
	const char *msg = "{\"access_token\":\"EAAG-secret\"}";
	const char *t = "0190f0f0-0000-7000-8000-000000000001";
	const char *c = "0190f0f0-0000-7000-8000-000000000002";

	(void)state;
	assert_int_equal(
	        tenants_keyring_load(&old, K1, "k1", "", err, sizeof(err)), 0);
	assert_int_equal(tenants_seal(&old, t, c, (const uint8_t *)msg,
	                              strlen(msg), &sealed, &n),
	                 PL_OK);
	assert_null(memmem(sealed, n, "EAAG", 4));
	assert_int_equal(tenants_open(&old, "k1", t, c, sealed, n, &plain, &pn),
	                 PL_OK);
	assert_string_equal((char *)plain, msg);
	free(plain);
	// Another channel's associated data does not open it.
	assert_int_equal(tenants_open(&old, "k1", t, t, sealed, n, &plain, &pn),
	                 PL_DATA_LOSS);
	// A flipped byte does not open.
	sealed[n - 1] ^= 1;
	assert_int_equal(tenants_open(&old, "k1", t, c, sealed, n, &plain, &pn),
	                 PL_DATA_LOSS);
	sealed[n - 1] ^= 1;
	// Rotation: the new ring's current key is k2, k1 still decrypts.
	assert_int_equal(tenants_keyring_load(&cur, K2, "k2", "k1:" K1, err,
	                                      sizeof(err)),
	                 0);
	assert_int_equal(cur.n, 2);
	assert_int_equal(tenants_open(&cur, "k1", t, c, sealed, n, &plain, &pn),
	                 PL_OK);
	free(plain);
	free(sealed);
	assert_int_equal(tenants_seal(&cur, t, c, (const uint8_t *)msg,
	                              strlen(msg), &sealed, &n),
	                 PL_OK);
	assert_int_equal(tenants_open(&cur, "k2", t, c, sealed, n, &plain, &pn),
	                 PL_OK);
	free(plain);
	// The old ring does not know k2.
	assert_int_equal(tenants_open(&old, "k2", t, c, sealed, n, &plain, &pn),
	                 PL_NOT_FOUND);
	free(sealed);
	// Bad configurations.
	assert_int_equal(tenants_keyring_load(&cur, "c2hvcnQ=", "k", "", err,
	                                      sizeof(err)),
	                 -1);
	assert_int_equal(tenants_keyring_load(&cur, K1, "k1", "k1:" K2, err,
	                                      sizeof(err)),
	                 -1);
	assert_int_equal(tenants_keyring_load(&cur, K1, "k1", "nocolon", err,
	                                      sizeof(err)),
	                 -1);
	assert_int_equal(
	        tenants_keyring_load(&cur, "", "k1", "", err, sizeof(err)), 0);
	assert_int_equal(cur.n, 0);
	assert_int_equal(
	        tenants_seal(&cur, t, c, (const uint8_t *)"x", 1, &sealed, &n),
	        PL_FAILED_PRECONDITION);
	tenants_keyring_wipe(&old);
}

static void
test_validation(void **state)
{
	char big[300];
	char slug[64];

	(void)state;
	assert_null(tenants_check_email("a.b@example.com"));
	assert_non_null(tenants_check_email("nope"));
	assert_non_null(tenants_check_email("a@b"));
	assert_non_null(tenants_check_email("a@@b.com"));
	assert_non_null(tenants_check_email("a b@c.com"));
	assert_non_null(tenants_check_email(""));
	assert_null(tenants_check_password("correct horse 1"));
	assert_non_null(tenants_check_password("short1A"));
	assert_non_null(tenants_check_password("aaaaaaaaaaaaaa"));
	assert_non_null(tenants_check_password("\xff\xfe invalid 123"));
	assert_null(tenants_check_text("Café Olé ☕", 200, true));
	assert_non_null(tenants_check_text("", 200, true));
	assert_null(tenants_check_text("", 200, false));
	assert_non_null(tenants_check_text("bad \xc3\x28", 200, true));
	assert_non_null(tenants_check_text("over\xc0\xaflong", 200, true));
	assert_non_null(tenants_check_text("tab\there", 200, true));
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	assert_non_null(tenants_check_text(big, 200, true));
	assert_null(tenants_check_text("Robert'); DROP TABLE x;--", 200, true));
	assert_null(tenants_check_slug("acme-co"));
	assert_non_null(tenants_check_slug("-acme"));
	assert_non_null(tenants_check_slug("Acme"));
	assert_non_null(tenants_check_slug("ab"));
	tenants_slug_from_name("  Acme, Inc. — Café! ", slug);
	assert_string_equal(slug, "acme-inc-caf");
	tenants_slug_from_name("☕", slug);
	assert_string_equal(slug, "tenant");
	tenants_slug_from_name("A", slug);
	assert_string_equal(slug, "tenant-a");
	assert_null(tenants_check_slug(slug));
	assert_null(tenants_check_timestamp("2026-11-22T13:20:00.123Z"));
	assert_null(tenants_check_timestamp("2026-11-22T13:20:00+02:00"));
	assert_non_null(tenants_check_timestamp("2026-13-22T13:20:00Z"));
	assert_non_null(tenants_check_timestamp("tomorrow"));
	assert_null(tenants_check_url("https://graph.facebook.com/v21.0"));
	assert_non_null(tenants_check_url("ftp://x"));
	assert_null(tenants_check_digits("123456", 1, 32));
	assert_non_null(tenants_check_digits("12a", 1, 32));
	assert_true(tenants_scope_known("messages:write"));
	assert_false(tenants_scope_known("root:all"));
	assert_int_equal(tenants_role_parse("owner"), 4);
	assert_int_equal(tenants_role_parse("god"), 0);
	assert_null(tenants_role_name(9));
}

static void
test_cache_expiry(void **state)
{
	tenants_cache *c = tenants_cache_new(1000, 100, 800);
	tenants_principal p = { .kind = 3, .role = 2 }, q;
	uint8_t h[TENANTS_HASH_LEN] = { 1, 2, 3 };
	uint8_t h2[TENANTS_HASH_LEN] = { 9 };

	(void)state;
	snprintf(p.tenant_id, sizeof(p.tenant_id), "t1");
	snprintf(p.user_id, sizeof(p.user_id), "u1");
	tenants_cache_fresh(c, tenants_mono_ms());
	tenants_cache_put(c, h, &p, 0, tenants_cache_gen(c));
	assert_true(tenants_cache_get(c, h, &q));
	assert_int_equal(q.role, 2);
	assert_false(tenants_cache_get(c, h2, &q));
	usleep(150 * 1000);
	tenants_cache_fresh(c, tenants_mono_ms());
	assert_false(tenants_cache_get(c, h, &q)); // expired after the TTL
	tenants_cache_put(c, h, &p, 0, tenants_cache_gen(c));
	tenants_cache_drop_tenant(c, "t1", "u1");
	assert_false(tenants_cache_get(c, h, &q));
	tenants_cache_put(c, h, &p, 0, tenants_cache_gen(c));
	tenants_cache_drop(c, h);
	assert_false(tenants_cache_get(c, h, &q));
	// Never past the credential's own expiry.
	tenants_cache_put(c, h, &p, 1, tenants_cache_gen(c));
	assert_false(tenants_cache_get(c, h, &q));
	tenants_cache_free(c);
	// The TTL is capped at an hour whatever is asked.
	c = tenants_cache_new(10, INT64_C(1) << 40, 800);
	tenants_cache_put(c, h, &p, 0, tenants_cache_gen(c));
	assert_int_equal(tenants_cache_size(c), 1);
	tenants_cache_free(c);
}

// The cache answers only while the feed is fresh (stale_ms).
static void
test_cache_staleness(void **state)
{
	tenants_cache *c = tenants_cache_new(1000, 60000, 100);
	tenants_principal p = { .kind = 3, .role = 2 }, q;
	uint8_t h[TENANTS_HASH_LEN] = { 4 };

	(void)state;
	snprintf(p.tenant_id, sizeof(p.tenant_id), "t1");
	tenants_cache_put(c, h, &p, 0, tenants_cache_gen(c));
	assert_int_equal(tenants_cache_size(c), 1);
	assert_false(tenants_cache_usable(c)); // never read the feed
	assert_false(tenants_cache_get(c, h, &q));
	tenants_cache_fresh(c, tenants_mono_ms());
	assert_true(tenants_cache_get(c, h, &q));
	usleep(150 * 1000); // the feed is late: the database answers
	assert_false(tenants_cache_usable(c));
	assert_false(tenants_cache_get(c, h, &q));
	tenants_cache_fresh(c, tenants_mono_ms());
	assert_true(tenants_cache_get(c, h, &q));
	tenants_cache_free(c);
	// stale_ms 0 turns the cache off.
	c = tenants_cache_new(1000, 60000, 0);
	tenants_cache_fresh(c, tenants_mono_ms());
	tenants_cache_put(c, h, &p, 0, tenants_cache_gen(c));
	assert_false(tenants_cache_get(c, h, &q));
	tenants_cache_free(c);
}

static void
put3(tenants_cache *c, uint8_t tag, const char *t, const char *u, const char *k)
{
	tenants_principal p = { .kind = 3, .role = 1 };
	uint8_t h[TENANTS_HASH_LEN] = { tag, 0x5a, tag };
	snprintf(p.tenant_id, sizeof(p.tenant_id), "%s", t);
	snprintf(p.user_id, sizeof(p.user_id), "%s", u);
	snprintf(p.cred_id, sizeof(p.cred_id), "%s", k);
	tenants_cache_put(c, h, &p, 0, tenants_cache_gen(c));
}

static bool
has(tenants_cache *c, uint8_t tag)
{
	tenants_principal q;
	uint8_t h[TENANTS_HASH_LEN] = { tag, 0x5a, tag };
	return tenants_cache_get(c, h, &q);
}

// Feed rows evict exactly what they name; a put whose read started before
// an eviction stores nothing (the read may be what was evicted).
static void
test_cache_apply(void **state)
{
	tenants_cache *c = tenants_cache_new(100000, 60000, 1000);
	tenants_change ch[2];
	uint64_t gen;

	(void)state;
	tenants_cache_fresh(c, tenants_mono_ms());
	put3(c, 1, "tA", "u1", "k1");
	put3(c, 2, "tA", "u1", "s2");
	put3(c, 3, "tA", "u2", "s3");
	put3(c, 4, "tB", "u1", "s4");
	put3(c, 5, "tB", "u3", "k5");
	assert_int_equal(tenants_cache_size(c), 5);
	memset(ch, 0, sizeof(ch));
	snprintf(ch[0].tenant_id, 37, "tA"); // a credential
	snprintf(ch[0].cred_id, 37, "s2");
	assert_int_equal(tenants_cache_apply(c, ch, 1), 1);
	assert_false(has(c, 2));
	assert_true(has(c, 1) && has(c, 3) && has(c, 4) && has(c, 5));
	memset(ch, 0, sizeof(ch));
	snprintf(ch[0].user_id, 37, "u1");   // a user, every tenant
	snprintf(ch[1].tenant_id, 37, "tZ"); // another tenant: nothing
	assert_int_equal(tenants_cache_apply(c, ch, 2), 2);
	assert_false(has(c, 1) || has(c, 4));
	assert_true(has(c, 3) && has(c, 5));
	memset(ch, 0, sizeof(ch));
	snprintf(ch[0].tenant_id, 37, "tB"); // a tenant
	assert_int_equal(tenants_cache_apply(c, ch, 1), 1);
	assert_false(has(c, 5));
	assert_true(has(c, 3));
	// The race: read before an eviction, stored after it.
	gen = tenants_cache_gen(c);
	tenants_cache_apply(c, ch, 1);
	tenants_principal p = { .kind = 3 };
	uint8_t h[TENANTS_HASH_LEN] = { 77 };
	tenants_cache_put(c, h, &p, 0, gen);
	assert_false(tenants_cache_get(c, h, &p));
	tenants_cache_flush(c);
	assert_int_equal(tenants_cache_size(c), 0);
	tenants_cache_free(c);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_table_matches_proto),
		cmocka_unit_test(test_permission_matrix),
		cmocka_unit_test(test_secret_format),
		cmocka_unit_test(test_seal_open_rotate),
		cmocka_unit_test(test_validation),
		cmocka_unit_test(test_cache_expiry),
		cmocka_unit_test(test_cache_staleness),
		cmocka_unit_test(test_cache_apply),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
