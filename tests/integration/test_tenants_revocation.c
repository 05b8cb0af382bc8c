// Authenticate's cache and its change feed against a real PostgreSQL, with
// the feed's poller running (def->start, which svch does not call): cached
// answers outlive a second, and every change that can alter an answer is
// seen within one second whether it comes through the RPC or straight to
// the database (as another replica or an operator would make it), also
// when its transaction commits after a later one, and also when the poller
// is stuck (the cache then stops answering and the database decides).
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <libpq-fe.h>

#include "pl/id.h"
#include "svch.h"
#include "tenants.h"

#define PW   "Correct-Horse-42"
#define M(x) "/parley.tenants.v1.Tenants/" x
#define Q(x) PARLEY__RPC__V1__ROLE__ROLE_##x

typedef struct fx {
	pgh pg;
	svch h;
	bool up;
} fx;

static const char *const env[] = {
	"PARLEY_TENANTS_PWHASH_OPSLIMIT=1",
	"PARLEY_TENANTS_PWHASH_MEMLIMIT=65536",
	NULL,
};

static int
setup(void **state)
{
	static fx f;
	int rc = pgh_start(&f.pg);
	if (rc == -2)
		return -1;
	if (rc == 0) {
		if (svch_start(&f.h, &f.pg, &tenants_service_def, 4, env) != 0)
			return -1;
		// The feed's poller: svch does not run def->start.
		if (tenants_service_def.start(f.h.arg) != PL_OK)
			return -1;
		f.up = true;
	}
	*state = &f;
	return 0;
}

static int
teardown(void **state)
{
	fx *f = *state;
	if (f->up) {
		tenants_service_def.stop(f->h.arg);
		svch_stop(&f->h);
	}
	pgh_stop(&f->pg);
	return 0;
}

static int
call(fx *f, const char *m, const pl_principal *p, const void *in,
     const ProtobufCMessageDescriptor *d, void *out)
{
	return svch_call(&f->h, m, p, in, d, out, NULL);
}

// Runs sql on conn (NULL: a new superuser connection); fails the test on
// an error.
static void
sql(fx *f, PGconn *conn, const char *q, const char *arg)
{
	PGconn *c = conn ? conn : PQconnectdb(f->h.admin_url);
	const char *p[] = { arg };
	PGresult *r = PQexecParams(c, q, arg ? 1 : 0, NULL, p, NULL, NULL, 0);
	if (PQresultStatus(r) != PGRES_COMMAND_OK &&
	    PQresultStatus(r) != PGRES_TUPLES_OK)
		fail_msg("%s: %s", q, PQerrorMessage(c));
	PQclear(r);
	if (conn == NULL)
		PQfinish(c);
}

typedef struct account {
	char tenant[37], user[37], token[128];
} account;

static void
signup(fx *f, const char *email, account *a)
{
	Parley__Tenants__V1__SignUpRequest in =
	        PARLEY__TENANTS__V1__SIGN_UP_REQUEST__INIT;
	Parley__Tenants__V1__SignUpResponse *out = NULL;

	in.tenant_name = (char *)email;
	in.email = (char *)email;
	in.password = PW;
	in.full_name = "Owner Person";
	assert_int_equal(
	        call(f, M("SignUp"), NULL, &in,
	             &parley__tenants__v1__sign_up_response__descriptor, &out),
	        0);
	snprintf(a->tenant, sizeof(a->tenant), "%s", out->tenant->id);
	snprintf(a->user, sizeof(a->user), "%s", out->user->id);
	snprintf(a->token, sizeof(a->token), "%s", out->token);
}

static void
new_key(fx *f, const account *a, char id[37], char key[128])
{
	Parley__Tenants__V1__CreateApiKeyRequest in =
	        PARLEY__TENANTS__V1__CREATE_API_KEY_REQUEST__INIT;
	Parley__Tenants__V1__CreateApiKeyResponse *out;
	char *scopes[] = { "messages:write" };
	pl_principal p = svch_user(a->tenant, a->user, Q(OWNER));

	in.name = "key";
	in.scopes = scopes;
	in.n_scopes = 1;
	assert_int_equal(
	        call(f, M("CreateApiKey"), &p, &in,
	             &parley__tenants__v1__create_api_key_response__descriptor,
	             &out),
	        0);
	snprintf(id, 37, "%s", out->id);
	snprintf(key, 128, "%s", out->key);
}

// Authenticate's status; the answer's role into *role when OK.
static int
auth(fx *f, const char *token, int *role)
{
	Parley__Tenants__V1__AuthenticateRequest in =
	        PARLEY__TENANTS__V1__AUTHENTICATE_REQUEST__INIT;
	Parley__Tenants__V1__AuthenticateResponse *out = NULL;
	in.token = (char *)token;
	pl_arena_reset(&f->h.arena);
	int rc = call(f, M("Authenticate"), NULL, &in,
	              &parley__tenants__v1__authenticate_response__descriptor,
	              &out);
	if (rc == 0) {
		if (role != NULL)
			*role = (int)out->principal->role;
		// Callers may keep the answer only for what is left of the
		// second.
		assert_true(out->cache_ttl_ms > 0 && out->cache_ttl_ms <= 200);
	}
	return rc;
}

static tenants_state *
st(fx *f)
{
	return f->h.arg;
}

// Waits (at most 3 s) until token's answer is not OK with role want_role
// (0: any role) and returns the milliseconds it took.
static int64_t
until_changed(fx *f, const char *token, int want_code, int64_t t0)
{
	int64_t dt;
	int rc;
	do {
		rc = auth(f, token, NULL);
		dt = (pl_now_ns() - t0) / 1000000;
		if (rc == want_code)
			return dt;
		usleep(5000);
	} while (dt < 3000);
	fail_msg("still answered %d after %lld ms", rc, (long long)dt);
	return dt;
}

// Warms the cache with token and checks that the cache answers it.
static void
cached(fx *f, const char *token)
{
	// The cache stores an answer only while the feed is fresh; on a loaded
	// machine (ASan, CI) a poll can be late, so ask again for a while.
	for (int i = 0; i < 300; i++) {
		assert_int_equal(auth(f, token, NULL), 0);
		if (tenants_cache_usable(st(f)->cache) &&
		    tenants_cache_size(st(f)->cache) > 0)
			break;
		usleep(10000);
	}
	assert_true(tenants_cache_usable(st(f)->cache));
	assert_true(tenants_cache_size(st(f)->cache) > 0);
}

// Cached answers live longer than a second, and it is the feed that ends
// them: a change made with the triggers off (session_replication_role) is
// not seen; the same change logged in the feed is seen within a second.
static void
test_cache_outlives_a_second(void **state)
{
	fx *f = *state;
	account a;
	char id[37], key[128];
	PGconn *c;

	if (!f->up)
		skip();
	signup(f, "long@example.com", &a);
	new_key(f, &a, id, key);
	cached(f, key);
	c = PQconnectdb(f->h.admin_url);
	sql(f, c, "SET session_replication_role = replica", NULL);
	sql(f, c,
	    "UPDATE tenants.api_keys SET revoked_at = now() WHERE id = $1", id);
	usleep(1500 * 1000);
	// Still answered from the cache, 1.5 s on: only the feed evicts.
	assert_int_equal(auth(f, key, NULL), 0);
	int64_t t0 = pl_now_ns();
	sql(f, c,
	    "INSERT INTO tenants.auth_changes (kind, tenant_id, cred_id) "
	    "SELECT 'api_key', tenant_id, id FROM tenants.api_keys "
	    "WHERE id = $1",
	    id);
	int64_t ms = until_changed(f, key, PL_UNAUTHENTICATED, t0);
	print_message("logged change seen after %lld ms\n", (long long)ms);
	assert_true(ms <= 1000);
	PQfinish(c);
}

// RevokeApiKey through the RPC: refused at once here (local eviction),
// and everywhere else within a second through the feed.
static void
test_revoke_through_rpc(void **state)
{
	fx *f = *state;
	account a;
	char id[37], key[128];

	if (!f->up)
		skip();
	signup(f, "rpc@example.com", &a);
	new_key(f, &a, id, key);
	cached(f, key);
	Parley__Tenants__V1__RevokeApiKeyRequest in =
	        PARLEY__TENANTS__V1__REVOKE_API_KEY_REQUEST__INIT;
	Parley__Tenants__V1__RevokeApiKeyResponse *out;
	pl_principal p = svch_user(a.tenant, a.user, Q(OWNER));
	in.id = id;
	int64_t t0 = pl_now_ns();
	assert_int_equal(
	        call(f, M("RevokeApiKey"), &p, &in,
	             &parley__tenants__v1__revoke_api_key_response__descriptor,
	             &out),
	        0);
	assert_int_equal(auth(f, key, NULL), PL_UNAUTHENTICATED);
	assert_true((pl_now_ns() - t0) / 1000000 <= 1000);
}

// Changes made straight in the database, as another replica (or an
// operator) makes them: the triggers log them and the poller evicts.
static void
test_changes_behind_the_back(void **state)
{
	fx *f = *state;
	account a, b;
	char id[37], key[128], id2[37], key2[128];
	int role = 0;
	int64_t t0, ms;

	if (!f->up)
		skip();
	signup(f, "sql@example.com", &a);
	new_key(f, &a, id, key);

	// An API key revoked.
	cached(f, key);
	t0 = pl_now_ns();
	sql(f, NULL,
	    "UPDATE tenants.api_keys SET revoked_at = now() WHERE id = $1", id);
	ms = until_changed(f, key, PL_UNAUTHENTICATED, t0);
	print_message("key revoked by SQL: refused after %lld ms\n",
	              (long long)ms);
	assert_true(ms <= 1000);

	// A session ended.
	cached(f, a.token);
	t0 = pl_now_ns();
	sql(f, NULL,
	    "UPDATE tenants.sessions SET revoked_at = now() "
	    "WHERE user_id = $1",
	    a.user);
	ms = until_changed(f, a.token, PL_UNAUTHENTICATED, t0);
	assert_true(ms <= 1000);

	// A role changed: the answer changes within a second.
	signup(f, "role@example.com", &b);
	assert_int_equal(auth(f, b.token, &role), 0);
	assert_int_equal(role, Q(OWNER));
	sql(f, NULL,
	    "UPDATE tenants.memberships SET role = 'viewer' "
	    "WHERE user_id = $1",
	    b.user);
	t0 = pl_now_ns();
	do {
		assert_int_equal(auth(f, b.token, &role), 0);
		ms = (pl_now_ns() - t0) / 1000000;
		usleep(5000);
	} while (role != Q(VIEWER) && ms < 3000);
	assert_int_equal(role, Q(VIEWER));
	assert_true(ms <= 1000);

	// A user deactivated.
	t0 = pl_now_ns();
	sql(f, NULL, "UPDATE tenants.users SET is_active = false WHERE id = $1",
	    b.user);
	ms = until_changed(f, b.token, PL_UNAUTHENTICATED, t0);
	assert_true(ms <= 1000);

	// A tenant suspended: every key of it refused.
	new_key(f, &b, id2, key2);
	cached(f, key2);
	t0 = pl_now_ns();
	sql(f, NULL,
	    "UPDATE tenants.tenants SET status = 'suspended' WHERE id = $1",
	    b.tenant);
	ms = until_changed(f, key2, PL_PERMISSION_DENIED, t0);
	assert_true(ms <= 1000);
	// ...and accepted again once reactivated.
	sql(f, NULL,
	    "UPDATE tenants.tenants SET status = 'active' WHERE id = $1",
	    b.tenant);
	t0 = pl_now_ns();
	ms = until_changed(f, key2, 0, t0);
	assert_true(ms <= 1000);

	// A session expired by an update (expiry itself bounds entries).
	account c;
	signup(f, "gone@example.com", &c);
	cached(f, c.token);
	t0 = pl_now_ns();
	sql(f, NULL,
	    "UPDATE tenants.sessions SET expires_at = now() - interval '1 s' "
	    "WHERE user_id = $1",
	    c.user);
	ms = until_changed(f, c.token, PL_UNAUTHENTICATED, t0);
	assert_true(ms <= 1000);

	// A member removed: their sessions go with the membership.
	account d;
	signup(f, "removed@example.com", &d);
	cached(f, d.token);
	t0 = pl_now_ns();
	sql(f, NULL, "DELETE FROM tenants.memberships WHERE user_id = $1",
	    d.user);
	ms = until_changed(f, d.token, PL_UNAUTHENTICATED, t0);
	assert_true(ms <= 1000);
}

// A transaction that took its feed row (seq) before another but commits
// after it: a poller following seq alone would skip it for good.
static void
test_late_commit(void **state)
{
	fx *f = *state;
	account a;
	char id1[37], key1[128], id2[37], key2[128];
	PGconn *c1;

	if (!f->up)
		skip();
	signup(f, "late@example.com", &a);
	new_key(f, &a, id1, key1);
	new_key(f, &a, id2, key2);
	cached(f, key1);
	cached(f, key2);
	c1 = PQconnectdb(f->h.admin_url);
	sql(f, c1, "BEGIN", NULL);
	sql(f, c1,
	    "UPDATE tenants.api_keys SET revoked_at = now() WHERE id = $1",
	    id1); // the lower seq, not committed yet
	int64_t t0 = pl_now_ns();
	sql(f, NULL,
	    "UPDATE tenants.api_keys SET revoked_at = now() WHERE id = $1",
	    id2); // the higher seq, committed first
	assert_true(until_changed(f, key2, PL_UNAUTHENTICATED, t0) <= 1000);
	usleep(600 * 1000); // several reads past the higher seq
	assert_int_equal(auth(f, key1, NULL), 0);
	t0 = pl_now_ns();
	sql(f, c1, "COMMIT", NULL);
	int64_t ms = until_changed(f, key1, PL_UNAUTHENTICATED, t0);
	print_message("late commit seen after %lld ms\n", (long long)ms);
	assert_true(ms <= 1000);
	PQfinish(c1);
}

// The poller stuck (its read waits on a lock) and a change it cannot see
// (made with the triggers off): the cache stops answering after its stale
// bound and the database refuses the key within a second.
static void
test_stuck_poller(void **state)
{
	fx *f = *state;
	account a;
	char id[37], key[128];
	PGconn *lock, *c;

	if (!f->up)
		skip();
	signup(f, "stuck@example.com", &a);
	new_key(f, &a, id, key);
	cached(f, key);
	lock = PQconnectdb(f->h.admin_url);
	sql(f, lock, "BEGIN", NULL);
	sql(f, lock, "LOCK TABLE tenants.auth_changes IN ACCESS EXCLUSIVE MODE",
	    NULL);
	c = PQconnectdb(f->h.admin_url);
	sql(f, c, "SET session_replication_role = replica", NULL);
	int64_t t0 = pl_now_ns();
	sql(f, c,
	    "UPDATE tenants.api_keys SET revoked_at = now() WHERE id = $1", id);
	int64_t ms = until_changed(f, key, PL_UNAUTHENTICATED, t0);
	print_message("stuck poller: refused after %lld ms\n", (long long)ms);
	assert_true(ms <= 1000);
	assert_false(tenants_cache_usable(st(f)->cache));
	sql(f, lock, "ROLLBACK", NULL);
	// The poller reads again and the cache answers again.
	char id2[37], key2[128];
	new_key(f, &a, id2, key2);
	t0 = pl_now_ns();
	while (!tenants_cache_usable(st(f)->cache) &&
	       pl_now_ns() - t0 < 3000000000LL)
		usleep(10000);
	assert_true(tenants_cache_usable(st(f)->cache));
	PQfinish(c);
	PQfinish(lock);
}

// Unknown and malformed credentials are never cached.
static void
test_failures_not_cached(void **state)
{
	fx *f = *state;
	char tok[TENANTS_SECRET_LEN + 1], prefix[16];
	uint8_t h[TENANTS_HASH_LEN];

	if (!f->up)
		skip();
	tenants_cache_flush(st(f)->cache);
	for (int i = 0; i < 20; i++) {
		tenants_secret_new(TENANTS_SECRET_API_KEY, tok, prefix, h);
		assert_int_equal(auth(f, tok, NULL), PL_UNAUTHENTICATED);
	}
	assert_int_equal(auth(f, "pk_garbage", NULL), PL_UNAUTHENTICATED);
	assert_int_equal(tenants_cache_size(st(f)->cache), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cache_outlives_a_second),
		cmocka_unit_test(test_revoke_through_rpc),
		cmocka_unit_test(test_changes_behind_the_back),
		cmocka_unit_test(test_late_commit),
		cmocka_unit_test(test_stuck_poller),
		cmocka_unit_test(test_failures_not_cached),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
