// The tenants service against a real PostgreSQL, through the RPC client:
// a full journey over every RPC (with cross-tenant NOT_FOUND, revocation,
// suspension, rotation and a log capture proving no secret is logged),
// login throttling, concurrent sign-ups, bad input.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>

#include <cmocka.h>
#include <libpq-fe.h>

#include "pl/id.h"
#include "pl/log.h"
#include "svch.h"
#include "tenants.h"

#define K1 "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
#define K2 "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA="
#define PW "Correct-Horse-42"

typedef struct fx {
	pgh pg;
	svch h;
	bool up;
} fx;

static const char *const env[] = {
	"PARLEY_CREDENTIALS_KEY=" K1,
	"PARLEY_CREDENTIALS_KEY_ID=k1",
	"PARLEY_TENANTS_PWHASH_OPSLIMIT=1",
	"PARLEY_TENANTS_PWHASH_MEMLIMIT=65536",
	"PARLEY_PLATFORM_ADMIN_EMAILS=root@example.com",
	"PARLEY_PUBLIC_URL=https://parley.example/",
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
		// The Authenticate cache's change feed (svch does not start
		// it); test_tenants_revocation covers it in depth.
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

#define M(x) "/parley.tenants.v1.Tenants/" x

static int
call(fx *f, const char *m, const pl_principal *p, const void *in,
     const ProtobufCMessageDescriptor *d, void *out, pl_rpc_result *res)
{
	return svch_call(&f->h, m, p, in, d, out, res);
}

static long
count(fx *f, const char *sql)
{
	PGconn *c = PQconnectdb(f->h.admin_url);
	PGresult *r = PQexec(c, sql);
	long n = PQresultStatus(r) == PGRES_TUPLES_OK
	                 ? atol(PQgetvalue(r, 0, 0))
	                 : -1;
	PQclear(r);
	PQfinish(c);
	return n;
}

typedef struct acct {
	char tenant[37], user[37], token[128], email[64];
} acct;

static void
signup(fx *f, const char *name, const char *email, acct *a)
{
	Parley__Tenants__V1__SignUpRequest in =
	        PARLEY__TENANTS__V1__SIGN_UP_REQUEST__INIT;
	Parley__Tenants__V1__SignUpResponse *out = NULL;
	pl_rpc_result res;

	in.tenant_name = (char *)name;
	in.email = (char *)email;
	in.password = PW;
	in.full_name = "Owner Person";
	in.source_ip = "10.0.0.1";
	int rc = call(f, M("SignUp"), NULL, &in,
	              &parley__tenants__v1__sign_up_response__descriptor, &out,
	              &res);
	if (rc != 0)
		fail_msg("SignUp: %d %s", rc, res.message);
	snprintf(a->tenant, sizeof(a->tenant), "%s", out->tenant->id);
	snprintf(a->user, sizeof(a->user), "%s", out->user->id);
	snprintf(a->token, sizeof(a->token), "%s", out->token);
	snprintf(a->email, sizeof(a->email), "%s", email);
	assert_int_equal(strncmp(out->token, "st_", 3), 0);
}

static int
authenticate(fx *f, const char *token, pl_principal **p)
{
	Parley__Tenants__V1__AuthenticateRequest in =
	        PARLEY__TENANTS__V1__AUTHENTICATE_REQUEST__INIT;
	Parley__Tenants__V1__AuthenticateResponse *out = NULL;
	in.token = (char *)token;
	int rc = call(f, M("Authenticate"), NULL, &in,
	              &parley__tenants__v1__authenticate_response__descriptor,
	              &out, NULL);
	if (rc == 0 && p != NULL)
		*p = out->principal;
	return rc;
}

static int
login(fx *f, const char *email, const char *pw, const char *ip,
      pl_rpc_result *res)
{
	Parley__Tenants__V1__LoginRequest in =
	        PARLEY__TENANTS__V1__LOGIN_REQUEST__INIT;
	Parley__Tenants__V1__LoginResponse *out = NULL;
	in.email = (char *)email;
	in.password = (char *)pw;
	in.source_ip = (char *)ip;
	return call(f, M("Login"), NULL, &in,
	            &parley__tenants__v1__login_response__descriptor, &out,
	            res);
}

// Secrets seen during the journey, to look for in the logs.
static char seen[32][160];
static int n_seen;

static void
remember(const char *s)
{
	if (n_seen < 32)
		snprintf(seen[n_seen++], sizeof(seen[0]), "%s", s);
}

static void
test_journey(void **state)
{
	fx *f = *state;
	acct a, b;
	pl_rpc_result res;
	pl_principal *p = NULL;
	char logbuf[1 << 20];
	FILE *logf;

	if (!f->up)
		skip();
	logf = tmpfile();
	pl_log_init("tenants", PL_LOG_DEBUG);
	pl_log_set_stream(logf);
	remember(PW);

	signup(f, "Acme Café", "Alice@Example.com", &a);
	signup(f, "Acme Café", "bob@example.com", &b);
	remember(a.token);
	remember(b.token);
	assert_string_not_equal(a.tenant, b.tenant);

	pl_principal oa = svch_user(a.tenant, a.user, 4);
	pl_principal ob = svch_user(b.tenant, b.user, 4);

	// Authenticate a session token.
	assert_int_equal(authenticate(f, a.token, &p), 0);
	assert_int_equal(p->kind,
	                 PARLEY__RPC__V1__PRINCIPAL_KIND__PRINCIPAL_KIND_USER);
	assert_string_equal(p->tenant_id, a.tenant);
	assert_int_equal(p->role, 4);
	assert_int_equal(authenticate(f, "st_garbage", NULL),
	                 PL_UNAUTHENTICATED);

	// Login: email case-insensitive; unknown email and wrong password
	// answer alike.
	pl_rpc_result r1, r2;
	assert_int_equal(login(f, "alice@example.com", PW, "10.0.0.2", &res),
	                 0);
	assert_int_equal(login(f, "alice@example.com", "Wrong-Pass-123",
	                       "10.0.0.2", &r1),
	                 PL_UNAUTHENTICATED);
	assert_int_equal(login(f, "nobody@example.com", "Wrong-Pass-123",
	                       "10.0.0.2", &r2),
	                 PL_UNAUTHENTICATED);
	assert_string_equal(r1.message, r2.message);

	// GetMe.
	{
		Parley__Tenants__V1__GetMeRequest in =
		        PARLEY__TENANTS__V1__GET_ME_REQUEST__INIT;
		Parley__Tenants__V1__GetMeResponse *out;
		if (call(f, M("GetMe"), &oa, &in,
		         &parley__tenants__v1__get_me_response__descriptor,
		         &out, &res) != 0)
			fail_msg("GetMe: %s", res.message);
		assert_string_equal(out->user->email, "Alice@Example.com");
		assert_int_equal(out->n_memberships, 1);
		assert_int_equal(out->role, 4);
	}

	// API keys: create, authenticate, list, cross-tenant, revoke.
	char key_id[37], key[128];
	{
		Parley__Tenants__V1__CreateApiKeyRequest in =
		        PARLEY__TENANTS__V1__CREATE_API_KEY_REQUEST__INIT;
		Parley__Tenants__V1__CreateApiKeyResponse *out;
		char *scopes[] = { "messages:write", "channels:read" };
		in.name = "ci key";
		in.scopes = scopes;
		in.n_scopes = 2;
		assert_int_equal(
		        call(f, M("CreateApiKey"), &oa, &in,
		             &parley__tenants__v1__create_api_key_response__descriptor,
		             &out, &res),
		        0);
		snprintf(key_id, sizeof(key_id), "%s", out->id);
		snprintf(key, sizeof(key), "%s", out->key);
		remember(key);
		assert_int_equal(strncmp(key, "pk_", 3), 0);
		assert_int_equal(out->api_key->role, 4);
		char *bad[] = { "root:all" };
		in.scopes = bad;
		in.n_scopes = 1;
		assert_int_equal(
		        call(f, M("CreateApiKey"), &oa, &in,
		             &parley__tenants__v1__create_api_key_response__descriptor,
		             &out, &res),
		        PL_INVALID_ARGUMENT);
		assert_string_equal(res.details[0]->field, "scopes[0]");
	}
	assert_int_equal(authenticate(f, key, &p), 0);
	assert_int_equal(
	        p->kind,
	        PARLEY__RPC__V1__PRINCIPAL_KIND__PRINCIPAL_KIND_API_KEY);
	assert_int_equal(p->n_scopes, 2);
	assert_string_equal(p->api_key_id, key_id);
	{
		Parley__Tenants__V1__ListApiKeysRequest in =
		        PARLEY__TENANTS__V1__LIST_API_KEYS_REQUEST__INIT;
		Parley__Tenants__V1__ListApiKeysResponse *out;
		assert_int_equal(
		        call(f, M("ListApiKeys"), &oa, &in,
		             &parley__tenants__v1__list_api_keys_response__descriptor,
		             &out, NULL),
		        0);
		assert_int_equal(out->n_api_keys, 1);
		assert_int_equal(
		        call(f, M("ListApiKeys"), &ob, &in,
		             &parley__tenants__v1__list_api_keys_response__descriptor,
		             &out, NULL),
		        0);
		assert_int_equal(out->n_api_keys, 0);
	}
	{
		Parley__Tenants__V1__RevokeApiKeyRequest in =
		        PARLEY__TENANTS__V1__REVOKE_API_KEY_REQUEST__INIT;
		Parley__Tenants__V1__RevokeApiKeyResponse *out;
		in.id = key_id;
		assert_int_equal(
		        call(f, M("RevokeApiKey"), &ob, &in,
		             &parley__tenants__v1__revoke_api_key_response__descriptor,
		             &out, NULL),
		        PL_NOT_FOUND);
		assert_int_equal(authenticate(f, key, NULL), 0);
		assert_int_equal(
		        call(f, M("RevokeApiKey"), &oa, &in,
		             &parley__tenants__v1__revoke_api_key_response__descriptor,
		             &out, NULL),
		        0);
		assert_string_not_equal(out->api_key->revoked_at, "");
		assert_int_equal(authenticate(f, key, NULL),
		                 PL_UNAUTHENTICATED);
	}

	// Members.
	char carol[37];
	{
		Parley__Tenants__V1__AddMemberRequest in =
		        PARLEY__TENANTS__V1__ADD_MEMBER_REQUEST__INIT;
		Parley__Tenants__V1__AddMemberResponse *out;
		in.email = "carol@example.com";
		in.role = 2;
		in.full_name = "Carol";
		in.password = "Carol-Pass-123";
		remember(in.password);
		assert_int_equal(
		        call(f, M("AddMember"), &oa, &in,
		             &parley__tenants__v1__add_member_response__descriptor,
		             &out, &res),
		        0);
		assert_true(out->user_created);
		snprintf(carol, sizeof(carol), "%s", out->member->user_id);
		assert_int_equal(
		        call(f, M("AddMember"), &oa, &in,
		             &parley__tenants__v1__add_member_response__descriptor,
		             &out, &res),
		        PL_ALREADY_EXISTS);
		in.role = 9;
		assert_int_equal(
		        call(f, M("AddMember"), &oa, &in,
		             &parley__tenants__v1__add_member_response__descriptor,
		             &out, &res),
		        PL_INVALID_ARGUMENT);
		assert_string_equal(res.details[0]->field, "role");
	}
	{
		Parley__Tenants__V1__SetRoleRequest in =
		        PARLEY__TENANTS__V1__SET_ROLE_REQUEST__INIT;
		Parley__Tenants__V1__SetRoleResponse *out;
		in.user_id = carol;
		in.role = 3;
		assert_int_equal(
		        call(f, M("SetRole"), &ob, &in,
		             &parley__tenants__v1__set_role_response__descriptor,
		             &out, NULL),
		        PL_NOT_FOUND);
		assert_int_equal(
		        call(f, M("SetRole"), &oa, &in,
		             &parley__tenants__v1__set_role_response__descriptor,
		             &out, NULL),
		        0);
		assert_int_equal(out->member->role, 3);
		in.user_id = a.user;
		in.role = 1;
		assert_int_equal(
		        call(f, M("SetRole"), &oa, &in,
		             &parley__tenants__v1__set_role_response__descriptor,
		             &out, &res),
		        PL_FAILED_PRECONDITION);
	}
	{
		Parley__Tenants__V1__RemoveMemberRequest in =
		        PARLEY__TENANTS__V1__REMOVE_MEMBER_REQUEST__INIT;
		Parley__Tenants__V1__RemoveMemberResponse *out;
		in.user_id = a.user;
		assert_int_equal(
		        call(f, M("RemoveMember"), &oa, &in,
		             &parley__tenants__v1__remove_member_response__descriptor,
		             &out, NULL),
		        PL_FAILED_PRECONDITION);
		in.user_id = carol;
		assert_int_equal(
		        call(f, M("RemoveMember"), &ob, &in,
		             &parley__tenants__v1__remove_member_response__descriptor,
		             &out, NULL),
		        PL_NOT_FOUND);
	}
	{
		Parley__Tenants__V1__ListMembersRequest in =
		        PARLEY__TENANTS__V1__LIST_MEMBERS_REQUEST__INIT;
		Parley__Tenants__V1__ListMembersResponse *out;
		assert_int_equal(
		        call(f, M("ListMembers"), &oa, &in,
		             &parley__tenants__v1__list_members_response__descriptor,
		             &out, NULL),
		        0);
		assert_int_equal(out->n_members, 2);
	}
	{
		Parley__Tenants__V1__RemoveMemberRequest in =
		        PARLEY__TENANTS__V1__REMOVE_MEMBER_REQUEST__INIT;
		Parley__Tenants__V1__RemoveMemberResponse *out;
		in.user_id = carol;
		assert_int_equal(
		        call(f, M("RemoveMember"), &oa, &in,
		             &parley__tenants__v1__remove_member_response__descriptor,
		             &out, NULL),
		        0);
	}

	// Channels.
	char wa[37], web[37];
	{
		Parley__Tenants__V1__CreateChannelRequest in =
		        PARLEY__TENANTS__V1__CREATE_CHANNEL_REQUEST__INIT;
		Parley__Tenants__V1__CreateChannelResponse *out;
		in.type = 1;
		in.name = "Main line";
		in.phone_number_id = "1234567890";
		in.access_token = "EAAG-access-token-secret-value";
		in.app_secret = "app-secret-value-0001";
		in.verify_token = "verify-token-value-0001";
		remember(in.access_token);
		remember(in.app_secret);
		remember(in.verify_token);
		assert_int_equal(
		        call(f, M("CreateChannel"), &oa, &in,
		             &parley__tenants__v1__create_channel_response__descriptor,
		             &out, &res),
		        0);
		snprintf(wa, sizeof(wa), "%s", out->id);
		assert_true(out->channel->credentials_set);
		assert_string_equal(out->channel->routing_key, "1234567890");
		char want[128];
		snprintf(want, sizeof(want),
		         "https://parley.example/v1/webhooks/whatsapp/%s", wa);
		assert_string_equal(out->webhook_url, want);
		// Same routing key in another tenant.
		assert_int_equal(
		        call(f, M("CreateChannel"), &ob, &in,
		             &parley__tenants__v1__create_channel_response__descriptor,
		             &out, &res),
		        PL_ALREADY_EXISTS);
		// Missing credentials.
		in.phone_number_id = "555";
		in.app_secret = "";
		assert_int_equal(
		        call(f, M("CreateChannel"), &oa, &in,
		             &parley__tenants__v1__create_channel_response__descriptor,
		             &out, &res),
		        PL_INVALID_ARGUMENT);
		assert_string_equal(res.details[0]->field, "app_secret");
		Parley__Tenants__V1__CreateChannelRequest w =
		        PARLEY__TENANTS__V1__CREATE_CHANNEL_REQUEST__INIT;
		w.type = 3;
		w.name = "Website";
		assert_int_equal(
		        call(f, M("CreateChannel"), &oa, &w,
		             &parley__tenants__v1__create_channel_response__descriptor,
		             &out, &res),
		        0);
		snprintf(web, sizeof(web), "%s", out->id);
		assert_false(out->channel->credentials_set);
		assert_string_not_equal(out->channel->widget_url, "");
	}
	{
		Parley__Tenants__V1__UpdateChannelRequest in =
		        PARLEY__TENANTS__V1__UPDATE_CHANNEL_REQUEST__INIT;
		Parley__Tenants__V1__UpdateChannelResponse *out;
		in.id = wa;
		in.agent_id = "0190f0f0-0000-7000-8000-00000000aaaa";
		assert_int_equal(
		        call(f, M("UpdateChannel"), &ob, &in,
		             &parley__tenants__v1__update_channel_response__descriptor,
		             &out, NULL),
		        PL_NOT_FOUND);
		assert_int_equal(
		        call(f, M("UpdateChannel"), &oa, &in,
		             &parley__tenants__v1__update_channel_response__descriptor,
		             &out, &res),
		        0);
		assert_string_equal(out->channel->agent_id, in.agent_id);
		assert_true(out->channel->credentials_set);
		char *mask[] = { "bogus" };
		in.update_mask = mask;
		in.n_update_mask = 1;
		assert_int_equal(
		        call(f, M("UpdateChannel"), &oa, &in,
		             &parley__tenants__v1__update_channel_response__descriptor,
		             &out, &res),
		        PL_INVALID_ARGUMENT);
	}
	{
		Parley__Tenants__V1__GetChannelRequest in =
		        PARLEY__TENANTS__V1__GET_CHANNEL_REQUEST__INIT;
		Parley__Tenants__V1__GetChannelResponse *out;
		in.id = wa;
		assert_int_equal(
		        call(f, M("GetChannel"), &ob, &in,
		             &parley__tenants__v1__get_channel_response__descriptor,
		             &out, NULL),
		        PL_NOT_FOUND);
		assert_int_equal(
		        call(f, M("GetChannel"), &oa, &in,
		             &parley__tenants__v1__get_channel_response__descriptor,
		             &out, NULL),
		        0);
		Parley__Tenants__V1__DisableChannelRequest d =
		        PARLEY__TENANTS__V1__DISABLE_CHANNEL_REQUEST__INIT;
		d.id = wa;
		d.reason = "maintenance";
		assert_int_equal(
		        call(f, M("DisableChannel"), &ob, &d,
		             &parley__tenants__v1__disable_channel_response__descriptor,
		             &out, NULL),
		        PL_NOT_FOUND);
		assert_int_equal(
		        call(f, M("DisableChannel"), &oa, &d,
		             &parley__tenants__v1__disable_channel_response__descriptor,
		             &out, NULL),
		        0);
		assert_int_equal(out->channel->status, 2);
		Parley__Tenants__V1__EnableChannelRequest e =
		        PARLEY__TENANTS__V1__ENABLE_CHANNEL_REQUEST__INIT;
		e.id = wa;
		assert_int_equal(
		        call(f, M("EnableChannel"), &ob, &e,
		             &parley__tenants__v1__enable_channel_response__descriptor,
		             &out, NULL),
		        PL_NOT_FOUND);
		assert_int_equal(
		        call(f, M("EnableChannel"), &oa, &e,
		             &parley__tenants__v1__enable_channel_response__descriptor,
		             &out, NULL),
		        0);
		assert_int_equal(out->channel->status, 1);
	}
	{
		Parley__Tenants__V1__ListChannelsRequest in =
		        PARLEY__TENANTS__V1__LIST_CHANNELS_REQUEST__INIT;
		Parley__Tenants__V1__ListChannelsResponse *out;
		assert_int_equal(
		        call(f, M("ListChannels"), &oa, &in,
		             &parley__tenants__v1__list_channels_response__descriptor,
		             &out, NULL),
		        0);
		assert_int_equal(out->n_channels, 2);
		assert_int_equal(
		        call(f, M("ListChannels"), &ob, &in,
		             &parley__tenants__v1__list_channels_response__descriptor,
		             &out, NULL),
		        0);
		assert_int_equal(out->n_channels, 0);
	}
	{
		Parley__Tenants__V1__ResolveChannelRequest in =
		        PARLEY__TENANTS__V1__RESOLVE_CHANNEL_REQUEST__INIT;
		Parley__Tenants__V1__ResolveChannelResponse *out;
		in.type = 1;
		in.routing_key = "1234567890";
		assert_int_equal(
		        call(f, M("ResolveChannel"), NULL, &in,
		             &parley__tenants__v1__resolve_channel_response__descriptor,
		             &out, NULL),
		        0);
		assert_string_equal(out->tenant_id, a.tenant);
		assert_string_equal(out->channel->id, wa);
		// A tenant's user may not call it.
		assert_int_equal(
		        call(f, M("ResolveChannel"), &oa, &in,
		             &parley__tenants__v1__resolve_channel_response__descriptor,
		             &out, NULL),
		        PL_PERMISSION_DENIED);
	}
	{
		Parley__Tenants__V1__GetChannelSecretsRequest in =
		        PARLEY__TENANTS__V1__GET_CHANNEL_SECRETS_REQUEST__INIT;
		Parley__Tenants__V1__GetChannelSecretsResponse *out;
		in.tenant_id = b.tenant;
		in.channel_id = wa;
		assert_int_equal(
		        call(f, M("GetChannelSecrets"), NULL, &in,
		             &parley__tenants__v1__get_channel_secrets_response__descriptor,
		             &out, NULL),
		        PL_NOT_FOUND);
		in.tenant_id = a.tenant;
		assert_int_equal(
		        call(f, M("GetChannelSecrets"), NULL, &in,
		             &parley__tenants__v1__get_channel_secrets_response__descriptor,
		             &out, NULL),
		        0);
		assert_string_equal(out->access_token,
		                    "EAAG-access-token-secret-value");
		assert_string_equal(out->app_secret, "app-secret-value-0001");
	}
	// Stored encrypted.
	assert_int_equal(
	        count(f, "SELECT count(*) FROM tenants.channel_integrations "
	                 "WHERE position('EAAG'::bytea IN credentials) > 0"),
	        0);

	// Rotation: k2 becomes current, k1 still decrypts; the job moves
	// every channel to k2.
	{
		tenants_state *st = f->h.arg;
		char err[128];
		assert_int_equal(tenants_keyring_load(&st->keys, K2, "k2",
		                                      "k1:" K1, err,
		                                      sizeof(err)),
		                 0);
		pl_principal admin = svch_user(a.tenant, a.user, 4);
		admin.platform_admin = true;
		Parley__Tenants__V1__RotateChannelKeysRequest in =
		        PARLEY__TENANTS__V1__ROTATE_CHANNEL_KEYS_REQUEST__INIT;
		Parley__Tenants__V1__RotateChannelKeysResponse *out;
		assert_int_equal(
		        call(f, M("RotateChannelKeys"), &oa, &in,
		             &parley__tenants__v1__rotate_channel_keys_response__descriptor,
		             &out, NULL),
		        PL_PERMISSION_DENIED);
		assert_int_equal(
		        call(f, M("RotateChannelKeys"), &admin, &in,
		             &parley__tenants__v1__rotate_channel_keys_response__descriptor,
		             &out, NULL),
		        0);
		assert_int_equal(out->rotated, 1);
		assert_int_equal(out->remaining, 0);
		assert_string_equal(out->key_id, "k2");
		assert_int_equal(count(f, "SELECT count(*) FROM "
		                          "tenants.channel_integrations WHERE "
		                          "credentials_key_id = 'k2'"),
		                 1);
		// Without k1 the rotated row still opens.
		assert_int_equal(tenants_keyring_load(&st->keys, K2, "k2", "",
		                                      err, sizeof(err)),
		                 0);
		Parley__Tenants__V1__GetChannelSecretsRequest g =
		        PARLEY__TENANTS__V1__GET_CHANNEL_SECRETS_REQUEST__INIT;
		Parley__Tenants__V1__GetChannelSecretsResponse *go;
		g.tenant_id = a.tenant;
		g.channel_id = wa;
		assert_int_equal(
		        call(f, M("GetChannelSecrets"), NULL, &g,
		             &parley__tenants__v1__get_channel_secrets_response__descriptor,
		             &go, NULL),
		        0);
		assert_string_equal(go->verify_token,
		                    "verify-token-value-0001");
	}

	// Tenants.
	{
		Parley__Tenants__V1__GetTenantRequest in =
		        PARLEY__TENANTS__V1__GET_TENANT_REQUEST__INIT;
		Parley__Tenants__V1__GetTenantResponse *out;
		assert_int_equal(
		        call(f, M("GetTenant"), &oa, &in,
		             &parley__tenants__v1__get_tenant_response__descriptor,
		             &out, NULL),
		        0);
		assert_string_equal(out->tenant->slug, "acme-caf");
		in.id = b.tenant;
		assert_int_equal(
		        call(f, M("GetTenant"), &oa, &in,
		             &parley__tenants__v1__get_tenant_response__descriptor,
		             &out, NULL),
		        PL_NOT_FOUND);
		Parley__Tenants__V1__UpdateTenantRequest u =
		        PARLEY__TENANTS__V1__UPDATE_TENANT_REQUEST__INIT;
		Parley__Tenants__V1__UpdateTenantResponse *uo;
		u.name = "Acme Renamed";
		u.time_zone = "Europe/Madrid";
		assert_int_equal(
		        call(f, M("UpdateTenant"), &oa, &u,
		             &parley__tenants__v1__update_tenant_response__descriptor,
		             &uo, NULL),
		        0);
		assert_string_equal(uo->tenant->time_zone, "Europe/Madrid");
		u.time_zone = "Mars/Olympus";
		assert_int_equal(
		        call(f, M("UpdateTenant"), &oa, &u,
		             &parley__tenants__v1__update_tenant_response__descriptor,
		             &uo, &res),
		        PL_INVALID_ARGUMENT);
		assert_string_equal(res.details[0]->field, "time_zone");
	}
	{
		pl_principal admin = svch_user(a.tenant, a.user, 4);
		admin.platform_admin = true;
		Parley__Tenants__V1__ListTenantsRequest in =
		        PARLEY__TENANTS__V1__LIST_TENANTS_REQUEST__INIT;
		Parley__Tenants__V1__ListTenantsResponse *out;
		in.query = "ACME";
		assert_int_equal(
		        call(f, M("ListTenants"), &admin, &in,
		             &parley__tenants__v1__list_tenants_response__descriptor,
		             &out, NULL),
		        0);
		assert_int_equal(out->n_tenants, 2);
		assert_int_equal(
		        call(f, M("ListTenants"), &oa, &in,
		             &parley__tenants__v1__list_tenants_response__descriptor,
		             &out, NULL),
		        PL_PERMISSION_DENIED);
		Parley__Tenants__V1__SuspendTenantRequest s =
		        PARLEY__TENANTS__V1__SUSPEND_TENANT_REQUEST__INIT;
		Parley__Tenants__V1__SuspendTenantResponse *so;
		s.id = a.tenant;
		s.reason = "abuse";
		assert_int_equal(
		        call(f, M("SuspendTenant"), &admin, &s,
		             &parley__tenants__v1__suspend_tenant_response__descriptor,
		             &so, NULL),
		        0);
		assert_int_equal(so->tenant->status, 2);
		pl_rpc_result ar;
		Parley__Tenants__V1__AuthenticateRequest ai =
		        PARLEY__TENANTS__V1__AUTHENTICATE_REQUEST__INIT;
		Parley__Tenants__V1__AuthenticateResponse *ao;
		ai.token = a.token;
		assert_int_equal(
		        call(f, M("Authenticate"), NULL, &ai,
		             &parley__tenants__v1__authenticate_response__descriptor,
		             &ao, &ar),
		        PL_PERMISSION_DENIED);
		assert_non_null(strstr(ar.message, "suspended"));
		Parley__Tenants__V1__ReactivateTenantRequest r =
		        PARLEY__TENANTS__V1__REACTIVATE_TENANT_REQUEST__INIT;
		r.id = a.tenant;
		assert_int_equal(
		        call(f, M("ReactivateTenant"), &admin, &r,
		             &parley__tenants__v1__reactivate_tenant_response__descriptor,
		             &so, NULL),
		        0);
		assert_int_equal(so->tenant->status, 1);
		assert_int_equal(authenticate(f, a.token, NULL), 0);
	}

	// DeliverEvents: billing's grace expiry suspends, a replay is a
	// duplicate, active again reactivates.
	{
		Parley__Rpc__V1__Event e1 = PARLEY__RPC__V1__EVENT__INIT,
		                       e2 = PARLEY__RPC__V1__EVENT__INIT;
		Parley__Rpc__V1__Json pj = PARLEY__RPC__V1__JSON__INIT;
		Parley__Rpc__V1__Event *evs[2] = { &e1, &e2 };
		char id1[37], id2[37];
		pl_uuid7_str(id1);
		pl_uuid7_str(id2);
		e1.id = id1;
		e1.tenant_id = b.tenant;
		e1.type = "subscription.grace_expired";
		Parley__Tenants__V1__DeliverEventsRequest in =
		        PARLEY__TENANTS__V1__DELIVER_EVENTS_REQUEST__INIT;
		Parley__Tenants__V1__DeliverEventsResponse *out;
		in.events = evs;
		in.n_events = 1;
		assert_int_equal(
		        call(f, M("DeliverEvents"), NULL, &in,
		             &parley__tenants__v1__deliver_events_response__descriptor,
		             &out, NULL),
		        0);
		assert_int_equal(out->accepted, 1);
		assert_int_equal(authenticate(f, b.token, NULL),
		                 PL_PERMISSION_DENIED);
		e2.id = id2;
		e2.tenant_id = b.tenant;
		e2.type = "subscription.status_changed";
		pj.text = "{\"status\":\"active\"}";
		e2.payload = &pj;
		in.n_events = 2;
		assert_int_equal(
		        call(f, M("DeliverEvents"), NULL, &in,
		             &parley__tenants__v1__deliver_events_response__descriptor,
		             &out, NULL),
		        0);
		assert_int_equal(out->duplicates, 1);
		assert_int_equal(out->accepted, 1);
		assert_int_equal(authenticate(f, b.token, NULL), 0);
	}

	// Audit log.
	{
		Parley__Tenants__V1__ListAuditLogRequest in =
		        PARLEY__TENANTS__V1__LIST_AUDIT_LOG_REQUEST__INIT;
		Parley__Tenants__V1__ListAuditLogResponse *out;
		Parley__Rpc__V1__PageRequest pg =
		        PARLEY__RPC__V1__PAGE_REQUEST__INIT;
		pg.page_size = 200;
		in.page = &pg;
		assert_int_equal(
		        call(f, M("ListAuditLog"), &oa, &in,
		             &parley__tenants__v1__list_audit_log_response__descriptor,
		             &out, NULL),
		        0);
		const char *want[] = { "tenant.signed_up",
			               "login.succeeded",
			               "api_key.created",
			               "api_key.revoked",
			               "member.added",
			               "member.role_changed",
			               "member.removed",
			               "channel.created",
			               "channel.updated",
			               "channel.disabled",
			               "tenant.suspended",
			               "tenant.reactivated",
			               NULL };
		for (int w = 0; want[w]; w++) {
			bool found = false;
			for (size_t i = 0; i < out->n_entries; i++)
				found |= strcmp(out->entries[i]->action,
				                want[w]) == 0;
			if (!found)
				fail_msg("audit action %s missing", want[w]);
		}
		in.action = "member.";
		assert_int_equal(
		        call(f, M("ListAuditLog"), &oa, &in,
		             &parley__tenants__v1__list_audit_log_response__descriptor,
		             &out, NULL),
		        0);
		assert_int_equal(out->n_entries, 3);
	}
	assert_true(count(f, "SELECT count(*) FROM tenants.audit_log WHERE "
	                     "action = 'login.failed'") >= 2);
	assert_int_equal(count(f, "SELECT count(*) FROM tenants.outbox WHERE "
	                          "type = 'tenant.created'"),
	                 4); // two tenants, billing and analytics each

	// ChangePassword, then Logout.
	{
		Parley__Tenants__V1__ChangePasswordRequest in =
		        PARLEY__TENANTS__V1__CHANGE_PASSWORD_REQUEST__INIT;
		Parley__Tenants__V1__ChangePasswordResponse *out;
		in.current_password = "Wrong-Pass-123";
		in.new_password = "New-Password-77";
		remember(in.new_password);
		assert_int_equal(
		        call(f, M("ChangePassword"), &ob, &in,
		             &parley__tenants__v1__change_password_response__descriptor,
		             &out, NULL),
		        PL_UNAUTHENTICATED);
		in.current_password = PW;
		assert_int_equal(
		        call(f, M("ChangePassword"), &ob, &in,
		             &parley__tenants__v1__change_password_response__descriptor,
		             &out, NULL),
		        0);
		assert_int_equal(login(f, "bob@example.com", "New-Password-77",
		                       "10.0.0.9", &res),
		                 0);
	}
	{
		Parley__Tenants__V1__LogoutRequest in =
		        PARLEY__TENANTS__V1__LOGOUT_REQUEST__INIT;
		Parley__Tenants__V1__LogoutResponse *out;
		in.token = a.token;
		assert_int_equal(
		        call(f, M("Logout"), &ob, &in,
		             &parley__tenants__v1__logout_response__descriptor,
		             &out, NULL),
		        PL_NOT_FOUND);
		assert_int_equal(
		        call(f, M("Logout"), &oa, &in,
		             &parley__tenants__v1__logout_response__descriptor,
		             &out, NULL),
		        0);
		assert_int_equal(out->ended, 1);
		assert_int_equal(authenticate(f, a.token, NULL),
		                 PL_UNAUTHENTICATED);
	}

	// No secret in the logs.
	pl_log_set_stream(NULL);
	fflush(logf);
	rewind(logf);
	size_t n = fread(logbuf, 1, sizeof(logbuf) - 1, logf);
	logbuf[n] = '\0';
	fclose(logf);
	assert_true(n > 0);
	for (int i = 0; i < n_seen; i++)
		if (strstr(logbuf, seen[i]) != NULL)
			fail_msg("secret #%d appears in the log", i);
}

static void
test_throttling(void **state)
{
	fx *f = *state;
	acct a;
	pl_rpc_result res;

	if (!f->up)
		skip();
	signup(f, "Throttle Co", "t@example.com", &a);
	for (int i = 0; i < 5; i++)
		assert_int_equal(login(f, "t@example.com", "Wrong-Pass-123",
		                       "10.9.9.9", &res),
		                 PL_UNAUTHENTICATED);
	// The sixth try is refused even with the right password...
	assert_int_equal(login(f, "t@example.com", PW, "10.9.9.9", &res),
	                 PL_RESOURCE_EXHAUSTED);
	// ...from that source only.
	assert_int_equal(login(f, "T@example.com", PW, "10.9.9.8", &res), 0);
	assert_int_equal(count(f, "SELECT count(*) FROM tenants.login_failures "
	                          "WHERE email = 't@example.com'"),
	                 5);
}

typedef struct race {
	fx *f;
	int rc;
	char name[32];
} race;

static void *
race_signup(void *arg)
{
	race *r = arg;
	pl_arena a;
	Parley__Tenants__V1__SignUpRequest in =
	        PARLEY__TENANTS__V1__SIGN_UP_REQUEST__INIT;
	void *out;
	pl_rpc_opts o = { 0 };

	pl_arena_init(&a, 0, 0);
	in.tenant_name = r->name;
	in.email = "same@example.com";
	in.password = PW;
	in.full_name = "Racer";
	r->rc = pl_rpc_call(r->f->h.cli, M("SignUp"), &in.base,
	                    &parley__tenants__v1__sign_up_response__descriptor,
	                    &out, &a, &o, NULL);
	pl_arena_fini(&a);
	return NULL;
}

static void
test_concurrent_signup(void **state)
{
	fx *f = *state;
	race r[2] = { { f, -1, "Racer One" }, { f, -1, "Racer Two" } };
	pthread_t t[2];

	if (!f->up)
		skip();
	for (int i = 0; i < 2; i++)
		pthread_create(&t[i], NULL, race_signup, &r[i]);
	for (int i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	assert_true((r[0].rc == 0 && r[1].rc == PL_ALREADY_EXISTS) ||
	            (r[1].rc == 0 && r[0].rc == PL_ALREADY_EXISTS));
	assert_int_equal(count(f, "SELECT count(*) FROM tenants.users WHERE "
	                          "lower(email) = 'same@example.com'"),
	                 1);
	assert_int_equal(count(f, "SELECT count(*) FROM tenants.tenants WHERE "
	                          "name LIKE 'Racer%'"),
	                 1);
}

static void
test_bad_input(void **state)
{
	fx *f = *state;
	pl_rpc_result res;
	char *huge = malloc(10 * 1024 * 1024 + 1);
	long before;

	if (!f->up)
		skip();
	memset(huge, 'n', 10 * 1024 * 1024);
	huge[10 * 1024 * 1024] = '\0';
	struct {
		const char *name, *email, *pw, *field;
	} cases[] = {
		{ "", "x1@example.com", PW, "tenant_name" },
		{ "Bad \xc3\x28 UTF", "x2@example.com", PW, "tenant_name" },
		{ "Ok", "not-an-email", PW, "email" },
		{ "Ok", "x3@example.com", "short1", "password" },
		{ "Ok", "x4@example.com", "alllowercaseletters", "password" },
	};
	before = count(f, "SELECT count(*) FROM tenants.tenants");
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		Parley__Tenants__V1__SignUpRequest in =
		        PARLEY__TENANTS__V1__SIGN_UP_REQUEST__INIT;
		void *out;
		in.tenant_name = (char *)cases[i].name;
		in.email = (char *)cases[i].email;
		in.password = (char *)cases[i].pw;
		in.full_name = "Name";
		assert_int_equal(
		        call(f, M("SignUp"), NULL, &in,
		             &parley__tenants__v1__sign_up_response__descriptor,
		             &out, &res),
		        PL_INVALID_ARGUMENT);
		assert_true(res.n_details >= 1);
		assert_string_equal(res.details[0]->field, cases[i].field);
	}
	// 10 MB name: refused whole (by size at the envelope or the field).
	{
		Parley__Tenants__V1__SignUpRequest in =
		        PARLEY__TENANTS__V1__SIGN_UP_REQUEST__INIT;
		void *out;
		in.tenant_name = huge;
		in.email = "x5@example.com";
		in.password = PW;
		in.full_name = "Name";
		assert_int_equal(
		        call(f, M("SignUp"), NULL, &in,
		             &parley__tenants__v1__sign_up_response__descriptor,
		             &out, &res),
		        PL_INVALID_ARGUMENT);
		huge[5000] = '\0';
		assert_int_equal(
		        call(f, M("SignUp"), NULL, &in,
		             &parley__tenants__v1__sign_up_response__descriptor,
		             &out, &res),
		        PL_INVALID_ARGUMENT);
		assert_string_equal(res.details[0]->field, "tenant_name");
	}
	free(huge);
	assert_int_equal(count(f, "SELECT count(*) FROM tenants.tenants"),
	                 before);
	// SQL metacharacters are stored verbatim.
	{
		Parley__Tenants__V1__SignUpRequest in =
		        PARLEY__TENANTS__V1__SIGN_UP_REQUEST__INIT;
		Parley__Tenants__V1__SignUpResponse *out;
		in.tenant_name = "Robert'); DROP TABLE tenants.users;-- %_\\";
		in.email = "o'brien@example.com";
		in.password = PW;
		in.full_name = "O'Brien \"Bobby\"";
		assert_int_equal(
		        call(f, M("SignUp"), NULL, &in,
		             &parley__tenants__v1__sign_up_response__descriptor,
		             &out, &res),
		        0);
		assert_string_equal(out->tenant->name, in.tenant_name);
		assert_string_equal(out->user->full_name, in.full_name);
		assert_true(count(f, "SELECT count(*) FROM tenants.users") > 0);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_journey),
		cmocka_unit_test(test_throttling),
		cmocka_unit_test(test_concurrent_signup),
		cmocka_unit_test(test_bad_input),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
