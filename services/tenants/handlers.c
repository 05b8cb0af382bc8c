// The tenants service's RPCs: one function per method, THE handler table
// (who may call what: the one place the permission matrix lives; README
// repeats it), and the service definition with its configuration.
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "pl/id.h"
#include "pl/log.h"
#include "store.h"

#define Q(x) PARLEY__RPC__V1__PRINCIPAL_KIND__PRINCIPAL_KIND_##x

typedef Parley__Rpc__V1__Principal pb_principal;

// ---------------------------------------------------------------------------
// Small helpers

static tenants_state *
state(const pl_call *call)
{
	return call->arg;
}

static const char *
opt(const char *s)
{
	return s != NULL && s[0] != '\0' ? s : NULL;
}

static const char *
caller_tenant(const pl_call *call)
{
	return opt(call->principal->tenant_id);
}

// JSON text of j in the arena; j is released.
static char *
jdump(pl_call *call, json_t *j)
{
	char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
	char *r = pl_arena_strdup(call->arena, s ? s : "{}");
	free(s);
	json_decref(j);
	return r;
}

// Records an audit row in the current transaction, the actor from the
// call's principal.
static int
audit(pl_call *call, pl_db *db, const char *tenant_id, const char *action,
      const char *rtype, const char *rid, const char *details)
{
	const pl_principal *p = call->principal;
	tenants_audit a = { 0 };

	a.tenant_id = tenant_id;
	a.action = action;
	a.actor_user_id =
	        p->kind == Q(USER) || p->kind == Q(API_KEY) ? p->user_id : NULL;
	a.actor_api_key_id =
	        p->kind == Q(API_KEY) && pl_uuid_valid(p->api_key_id)
	                ? p->api_key_id
	                : NULL;
	a.actor_service = p->kind == Q(SERVICE) ? p->service : NULL;
	if (a.actor_user_id != NULL && !pl_uuid_valid(a.actor_user_id))
		a.actor_user_id = NULL;
	a.resource_type = rtype;
	a.resource_id = rid;
	a.details_json = details;
	int rv = tenants_store_audit(db, &a);
	if (rv != PL_OK)
		return pl_call_error(call, rv, "could not write the audit log");
	return PL_OK;
}

static const char *const to_analytics[] = { "analytics", NULL };
static const char *const to_billing_too[] = { "billing", "analytics", NULL };

static int
emit(pl_call *call, pl_db *db, const char *const *dests, const char *tenant,
     const char *type, const char *payload, const char *user_id)
{
	pl_outbox_event ev = { 0 };
	char *dims = NULL;

	if (user_id != NULL && pl_uuid_valid(user_id))
		dims = jdump(call, json_pack("{s:s}", "user_id", user_id));
	ev.tenant_id = tenant;
	ev.type = type;
	ev.payload_json = payload;
	ev.dimensions_json = dims;
	int rv = pl_outbox_add(db, "tenants", dests, &ev, NULL);
	if (rv != PL_OK)
		return pl_call_error(call, rv, "could not queue event %s",
		                     type);
	return PL_OK;
}

// Paging: page_size 0 -> 50, capped at 200, negative refused; the token is
// the last id seen, base64url.
static int
page_in(pl_call *call, const Parley__Rpc__V1__PageRequest *pg, int *limit,
        const char **after)
{
	*limit = 50;
	*after = NULL;
	if (pg == NULL)
		return PL_OK;
	if (pg->page_size < 0)
		return pl_call_violation(call, "page.page_size",
		                         "must not be negative");
	if (pg->page_size > 0)
		*limit = pg->page_size > 200 ? 200 : pg->page_size;
	if (opt(pg->page_token)) {
		char buf[64];
		size_t n = 0;
		if (strlen(pg->page_token) > 64 ||
		    sodium_base642bin(
		            (uint8_t *)buf, sizeof(buf) - 1, pg->page_token,
		            strlen(pg->page_token), NULL, &n, NULL,
		            sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0)
			return pl_call_violation(call, "page.page_token",
			                         "is not a valid page token");
		buf[n] = '\0';
		if (!pl_uuid_valid(buf))
			return pl_call_violation(call, "page.page_token",
			                         "is not a valid page token");
		*after = pl_arena_strdup(call->arena, buf);
	}
	return PL_OK;
}

static char *
page_out(pl_call *call, size_t n, int limit, const char *last)
{
	char buf[64];
	if (n < (size_t)limit || last == NULL)
		return (char *)protobuf_c_empty_string;
	sodium_bin2base64(buf, sizeof(buf), (const uint8_t *)last, strlen(last),
	                  sodium_base64_VARIANT_URLSAFE_NO_PADDING);
	return pl_arena_strdup(call->arena, buf);
}

static int
check_field(pl_call *call, const char *field, const char *why)
{
	if (why == NULL)
		return PL_OK;
	return pl_call_violation(call, field, "%s", why);
}

static int
check_id(pl_call *call, const char *field, const char *v)
{
	if (v == NULL || v[0] == '\0')
		return pl_call_violation(call, field, "is required");
	if (!pl_uuid_valid(v))
		return pl_call_violation(call, field, "must be a UUID");
	return PL_OK;
}

// Escapes LIKE's metacharacters so input matches literally.
static char *
like_escape(pl_call *call, const char *s, bool lower)
{
	size_t n = strlen(s);
	char *out = pl_arena_alloc(call->arena, 2 * n + 1), *o = out;
	for (; *s; s++) {
		if (*s == '%' || *s == '_' || *s == '\\')
			*o++ = '\\';
		*o++ = lower && *s >= 'A' && *s <= 'Z' ? (char)(*s + 32) : *s;
	}
	*o = '\0';
	return out;
}

static bool
is_admin_email(const tenants_state *st, const char *email)
{
	const char *p = st->admin_emails;
	size_t n = strlen(email);

	while (p != NULL && *p) {
		const char *c = strchr(p, ',');
		size_t len = c ? (size_t)(c - p) : strlen(p);
		if (len == n && strncasecmp(p, email, n) == 0)
			return true;
		p = c ? c + 1 : NULL;
	}
	return false;
}

// ---------------------------------------------------------------------------
// SignUp

typedef struct signup_ctx {
	pl_call *call;
	const Parley__Tenants__V1__SignUpRequest *in;
	Parley__Tenants__V1__SignUpResponse *out;
	const char *hash;
	char *token;
	const char *prefix;
	const uint8_t *thash;
	bool admin;
} signup_ctx;

// Runs with the tenant "*": a new tenant and a new user are platform-level
// rows until they exist, and the slug must be unique across tenants.
static int
signup_tx(pl_db *db, void *arg)
{
	signup_ctx *c = arg;
	pl_call *call = c->call;
	const Parley__Tenants__V1__SignUpRequest *in = c->in;
	char tid[37], uid[37], sid[37], slug[80], base[64];
	bool ok = false;
	int rv;
	char *exp;

	pl_uuid7_str(tid);
	pl_uuid7_str(uid);
	pl_uuid7_str(sid);
	const char *tz = opt(in->time_zone) ? in->time_zone : "UTC";
	if (opt(in->tenant_slug)) {
		if ((rv = tenants_store_insert_tenant(
		             call, db, tid, in->tenant_name, in->tenant_slug,
		             tz, &ok)) != PL_OK)
			return rv;
		if (!ok)
			return pl_call_error(call, PL_ALREADY_EXISTS,
			                     "tenant_slug \"%s\" is taken",
			                     in->tenant_slug);
		snprintf(slug, sizeof(slug), "%s", in->tenant_slug);
	} else {
		tenants_slug_from_name(in->tenant_name, base);
		for (int i = 1; !ok && i <= 8; i++) {
			if (i == 1)
				snprintf(slug, sizeof(slug), "%s", base);
			else if (i <= 4)
				snprintf(slug, sizeof(slug), "%s-%d", base, i);
			else
				snprintf(slug, sizeof(slug), "%s-%08x", base,
				         randombytes_random());
			if ((rv = tenants_store_insert_tenant(
			             call, db, tid, in->tenant_name, slug, tz,
			             &ok)) != PL_OK)
				return rv;
		}
		if (!ok)
			return pl_call_error(
			        call, PL_ABORTED,
			        "could not find a free slug; retry");
	}
	if ((rv = tenants_store_insert_user(call, db, uid, in->email, c->hash,
	                                    in->full_name, c->admin)) !=
	            PL_OK ||
	    (rv = tenants_store_insert_membership(call, db, tid, uid,
	                                          "owner")) != PL_OK ||
	    (rv = tenants_store_insert_session(
	             call, db, tid, sid, uid, c->prefix, c->thash,
	             state(call)->session_ttl_ms, in->source_ip, in->user_agent,
	             &exp)) != PL_OK)
		return rv;
	tenants_audit a = { .tenant_id = tid,
		            .action = "tenant.signed_up",
		            .actor_user_id = uid,
		            .resource_type = "tenant",
		            .resource_id = tid,
		            .source_ip = in->source_ip,
		            .user_agent = in->user_agent,
		            .details_json = jdump(
		                    call, json_pack("{s:s,s:s}", "slug", slug,
		                                    "email", in->email)) };
	if ((rv = tenants_store_audit(db, &a)) != PL_OK)
		return pl_call_error(call, rv, "could not write the audit log");
	if ((rv = emit(
	             call, db, to_billing_too, tid, "tenant.created",
	             jdump(call,
	                   json_pack("{s:s,s:s,s:s,s:s,s:s}", "name",
	                             in->tenant_name, "slug", slug, "time_zone",
	                             tz, "owner_user_id", uid, "plan_code",
	                             in->plan_code ? in->plan_code : "")),
	             uid)) != PL_OK)
		return rv;
	if ((rv = tenants_store_get_tenant(call, db, tid, false,
	                                   &c->out->tenant)) != PL_OK)
		return rv;
	if ((rv = tenants_store_get_user(call, db, uid, NULL, &c->out->user,
	                                 NULL)) != PL_OK)
		return pl_call_error(call, rv, "could not read the new user");
	c->out->expires_at = exp;
	return PL_OK;
}

static int
signup(pl_call *call, const void *vin, void *vout)
{
	const Parley__Tenants__V1__SignUpRequest *in = vin;
	tenants_state *st = state(call);
	signup_ctx c = { .call = call, .in = in, .out = vout };
	char hash[crypto_pwhash_STRBYTES];
	char token[TENANTS_SECRET_LEN + 1], prefix[16];
	uint8_t th[TENANTS_HASH_LEN];
	int rv = PL_OK;

	rv |= check_field(call, "tenant_name",
	                  tenants_check_text(in->tenant_name, 200, true));
	rv |= check_field(call, "email", tenants_check_email(in->email));
	rv |= check_field(call, "password",
	                  tenants_check_password(in->password));
	rv |= check_field(call, "full_name",
	                  tenants_check_text(in->full_name, 200, true));
	if (opt(in->tenant_slug))
		rv |= check_field(call, "tenant_slug",
		                  tenants_check_slug(in->tenant_slug));
	rv |= check_field(call, "time_zone",
	                  tenants_check_text(in->time_zone, 64, false));
	rv |= check_field(call, "plan_code",
	                  tenants_check_text(in->plan_code, 64, false));
	rv |= check_field(call, "source_ip",
	                  tenants_check_text(in->source_ip, 64, false));
	rv |= check_field(call, "user_agent",
	                  tenants_check_text(in->user_agent, 512, false));
	if (rv != PL_OK)
		return PL_INVALID_ARGUMENT;
	if (opt(in->time_zone) &&
	    tenants_store_check_time_zone(pl_call_db(call), in->time_zone) !=
	            PL_OK)
		return pl_call_violation(call, "time_zone",
		                         "is not a known time zone");
	if (tenants_password_hash(st, in->password, hash) != PL_OK)
		return pl_call_error(call, PL_RESOURCE_EXHAUSTED,
		                     "could not hash the password");
	tenants_secret_new(TENANTS_SECRET_SESSION, token, prefix, th);
	c.hash = hash;
	c.prefix = prefix;
	c.thash = th;
	c.admin = is_admin_email(st, in->email);
	rv = pl_db_tx(pl_call_db(call), "*", signup_tx, &c);
	sodium_memzero(hash, sizeof(hash));
	if (rv == PL_OK) {
		c.out->token = pl_arena_strdup(call->arena, token);
		pl_info("tenant %s signed up", c.out->tenant->id);
	}
	sodium_memzero(token, sizeof(token));
	return rv;
}

// ---------------------------------------------------------------------------
// Login

typedef struct login_ctx {
	pl_call *call;
	const Parley__Tenants__V1__LoginRequest *in;
	Parley__Tenants__V1__LoginResponse *out;
	pb_user *user;
	const char *prefix;
	const uint8_t *thash;
} login_ctx;

// Runs with the tenant "*": a user's memberships span tenants.
static int
login_tx(pl_db *db, void *arg)
{
	login_ctx *c = arg;
	pl_call *call = c->call;
	tenants_state *st = state(call);
	pb_membership **ms;
	pb_membership *m = NULL;
	pb_tenant *t;
	size_t n;
	char sid[37], *exp;
	int rv;

	if ((rv = tenants_store_memberships(call, db, c->user->id, &ms, &n)) !=
	    PL_OK)
		return rv;
	for (size_t i = 0; i < n && m == NULL; i++)
		if (!opt(c->in->tenant_id) ||
		    strcmp(ms[i]->tenant_id, c->in->tenant_id) == 0)
			m = ms[i];
	if (m == NULL)
		return pl_call_error(
		        call,
		        opt(c->in->tenant_id) ? PL_NOT_FOUND
		                              : PL_FAILED_PRECONDITION,
		        opt(c->in->tenant_id)
		                ? "tenant %s not found among the user's "
		                  "memberships"
		                : "the user belongs to no tenant%s",
		        opt(c->in->tenant_id) ? c->in->tenant_id : "");
	if ((rv = tenants_store_get_tenant(call, db, m->tenant_id, false,
	                                   &t)) != PL_OK)
		return rv;
	if (t->status ==
	    PARLEY__TENANTS__V1__TENANT_STATUS__TENANT_STATUS_SUSPENDED)
		return pl_call_error(call, PL_PERMISSION_DENIED,
		                     "tenant %s is suspended; contact support",
		                     t->slug);
	pl_uuid7_str(sid);
	if ((rv = tenants_store_insert_session(
	             call, db, m->tenant_id, sid, c->user->id, c->prefix,
	             c->thash, st->session_ttl_ms, c->in->source_ip,
	             c->in->user_agent, &exp)) != PL_OK ||
	    (rv = tenants_store_user_logged_in(
	             call, db, c->user->id,
	             is_admin_email(st, c->user->email))) != PL_OK ||
	    (rv = tenants_store_clear_failures(call, db, c->in->email,
	                                       c->in->source_ip)) != PL_OK)
		return rv;
	tenants_audit a = { .tenant_id = m->tenant_id,
		            .action = "login.succeeded",
		            .actor_user_id = c->user->id,
		            .resource_type = "session",
		            .resource_id = sid,
		            .source_ip = c->in->source_ip,
		            .user_agent = c->in->user_agent };
	if ((rv = tenants_store_audit(db, &a)) != PL_OK)
		return pl_call_error(call, rv, "could not write the audit log");
	c->out->tenant_id = m->tenant_id;
	c->out->user_id = c->user->id;
	c->out->role = m->role;
	c->out->expires_at = exp;
	c->out->memberships = ms;
	c->out->n_memberships = n;
	return PL_OK;
}

static int
login_failed_tx(pl_db *db, void *arg)
{
	login_ctx *c = arg;
	int rv;

	if ((rv = tenants_store_add_failure(c->call, db, c->in->email,
	                                    c->in->source_ip)) != PL_OK)
		return rv;
	tenants_audit a = { .tenant_id = NULL,
		            .action = "login.failed",
		            .actor_user_id = c->user ? c->user->id : NULL,
		            .resource_type = "user",
		            .resource_id = c->user ? c->user->id : NULL,
		            .source_ip = c->in->source_ip,
		            .user_agent = c->in->user_agent,
		            .details_json =
		                    jdump(c->call, json_pack("{s:s}", "email",
		                                             c->in->email)) };
	return tenants_store_audit(db, &a);
}

static int
login(pl_call *call, const void *vin, void *vout)
{
	const Parley__Tenants__V1__LoginRequest *in = vin;
	tenants_state *st = state(call);
	login_ctx c = { .call = call, .in = in, .out = vout };
	char *hash = NULL, token[TENANTS_SECRET_LEN + 1], prefix[16];
	uint8_t th[TENANTS_HASH_LEN];
	int rv = PL_OK, failures = 0;
	bool ok;

	rv |= check_field(call, "email", tenants_check_email(in->email));
	if (!opt(in->password))
		rv |= pl_call_violation(call, "password", "is required");
	else if (strlen(in->password) > 1024)
		rv |= pl_call_violation(call, "password", "is too long");
	if (opt(in->tenant_id) && !pl_uuid_valid(in->tenant_id))
		rv |= pl_call_violation(call, "tenant_id", "must be a UUID");
	rv |= check_field(call, "source_ip",
	                  tenants_check_text(in->source_ip, 64, false));
	rv |= check_field(call, "user_agent",
	                  tenants_check_text(in->user_agent, 512, false));
	if (rv != PL_OK)
		return PL_INVALID_ARGUMENT;
	if ((rv = tenants_store_count_failures(
	             call, pl_call_db(call), in->email, in->source_ip,
	             st->login_window_ms, &failures)) != PL_OK)
		return rv;
	if (failures >= st->login_max_failures)
		return pl_call_error(call, PL_RESOURCE_EXHAUSTED,
		                     "too many failed logins; try again later");
	rv = tenants_store_get_user(call, pl_call_db(call), NULL, in->email,
	                            &c.user, &hash);
	if (rv != PL_OK && rv != PL_NOT_FOUND)
		return rv;
	// Unknown emails are verified against a dummy hash of the same cost,
	// so both failures take the same time and get the same answer.
	ok = tenants_password_verify(rv == PL_OK ? hash : st->dummy_hash,
	                             in->password);
	if (rv != PL_OK || !ok || !c.user->is_active) {
		if (rv != PL_OK)
			c.user = NULL;
		if (pl_db_tx(pl_call_db(call), TENANTS_NIL_UUID,
		             login_failed_tx, &c) != PL_OK)
			pl_warn("could not record a failed login");
		pl_info("login failed");
		return pl_call_error(call, PL_UNAUTHENTICATED,
		                     "invalid email or password");
	}
	tenants_secret_new(TENANTS_SECRET_SESSION, token, prefix, th);
	c.prefix = prefix;
	c.thash = th;
	rv = pl_db_tx(pl_call_db(call), "*", login_tx, &c);
	if (rv == PL_OK)
		c.out->token = pl_arena_strdup(call->arena, token);
	sodium_memzero(token, sizeof(token));
	return rv;
}

// ---------------------------------------------------------------------------
// Logout, Authenticate, GetMe, ChangePassword

typedef struct sess_ctx {
	pl_call *call;
	const char *prefix;
	const uint8_t *hash;
	bool all;
	int ended;
} sess_ctx;

static int
logout_tx(pl_db *db, void *arg)
{
	sess_ctx *c = arg;
	const pl_principal *p = c->call->principal;
	char *id;
	int rv;

	if (c->all) // every tenant of the user (run with the tenant "*")
		return tenants_store_revoke_sessions(
		        c->call, db, NULL, p->user_id, NULL, NULL, &c->ended);
	rv = tenants_store_find_session(c->call, db, p->tenant_id, p->user_id,
	                                c->prefix, c->hash, &id);
	if (rv == PL_NOT_FOUND)
		return pl_call_error(c->call, PL_NOT_FOUND,
		                     "session not found");
	if (rv != PL_OK)
		return rv;
	return tenants_store_revoke_sessions(c->call, db, p->tenant_id,
	                                     p->user_id, id, NULL, &c->ended);
}

static int
logout(pl_call *call, const void *vin, void *vout)
{
	const Parley__Tenants__V1__LogoutRequest *in = vin;
	Parley__Tenants__V1__LogoutResponse *out = vout;
	const pl_principal *p = call->principal;
	char prefix[16];
	uint8_t h[TENANTS_HASH_LEN];
	sess_ctx c = { .call = call, .all = in->all_sessions };
	int rv;

	if (!pl_uuid_valid(p->user_id) || !pl_uuid_valid(p->tenant_id))
		return pl_call_error(call, PL_FAILED_PRECONDITION,
		                     "Logout needs a user's principal");
	if (!in->all_sessions) {
		if (!opt(in->token))
			return pl_call_violation(call, "token", "is required");
		if (tenants_secret_parse(in->token, prefix, h) !=
		    TENANTS_SECRET_SESSION)
			return pl_call_violation(call, "token",
			                         "is not a session token");
		c.prefix = prefix;
		c.hash = h;
	}
	rv = pl_db_tx(pl_call_db(call), in->all_sessions ? "*" : p->tenant_id,
	              logout_tx, &c);
	if (rv != PL_OK)
		return rv;
	if (in->all_sessions)
		tenants_cache_drop_tenant(state(call)->cache, p->tenant_id,
		                          p->user_id);
	else
		tenants_cache_drop(state(call)->cache, h);
	out->ended = c.ended;
	return PL_OK;
}

static int
auth_answer(pl_call *call, const tenants_principal *tp,
            Parley__Tenants__V1__AuthenticateResponse *out)
{
	pb_principal *pr = pl_arena_alloc(call->arena, sizeof(*pr));

	if (tp->suspended)
		return pl_call_error(
		        call, PL_PERMISSION_DENIED,
		        "tenant %s is suspended; its calls are refused",
		        tp->tenant_id);
	parley__rpc__v1__principal__init(pr);
	pr->kind = tp->kind;
	pr->tenant_id = pl_arena_strdup(call->arena, tp->tenant_id);
	pr->user_id = pl_arena_strdup(call->arena, tp->user_id);
	pr->api_key_id = pl_arena_strdup(call->arena, tp->api_key_id);
	pr->role = tp->role;
	pr->platform_admin = tp->platform_admin;
	pr->service = (char *)protobuf_c_empty_string;
	if (tp->scopes[0] != '\0') {
		size_t cnt = 1;
		for (const char *s = tp->scopes; *s; s++)
			cnt += *s == ',';
		pr->scopes = pl_arena_alloc(call->arena, cnt * sizeof(char *));
		char *copy = pl_arena_strdup(call->arena, tp->scopes), *save;
		for (char *t = strtok_r(copy, ",", &save); t;
		     t = strtok_r(NULL, ",", &save))
			pr->scopes[pr->n_scopes++] = t;
	}
	out->principal = pr;
	out->tenant_status =
	        PARLEY__TENANTS__V1__TENANT_STATUS__TENANT_STATUS_ACTIVE;
	out->expires_at = pl_arena_strdup(call->arena, tp->expires_at);
	out->rate_limit_per_minute = tp->rate_limit;
	out->cache_ttl_ms = state(call)->caller_ttl_ms;
	return PL_OK;
}

// The hot path: the cache (keyed by SHA-256 of the secret, kept current by
// the change feed, bypassed when the feed is late), else one round trip to
// auth_lookup and a constant-time hash compare. Failures are not cached.
static int
authenticate(pl_call *call, const void *vin, void *vout)
{
	const Parley__Tenants__V1__AuthenticateRequest *in = vin;
	tenants_state *st = state(call);
	tenants_principal tp;
	tenants_secret_kind kind;
	char prefix[16];
	uint8_t h[TENANTS_HASH_LEN], sh[TENANTS_HASH_LEN];
	PGresult *r;
	uint64_t gen;
	int row = -1, rv;

	kind = tenants_secret_parse(in->token, prefix, h);
	if (kind == TENANTS_SECRET_INVALID)
		return pl_call_error(call, PL_UNAUTHENTICATED,
		                     "invalid or expired credentials");
	if (tenants_cache_get(st->cache, h, &tp))
		return auth_answer(call, &tp, vout);
	gen = tenants_cache_gen(st->cache); // before the read (auth.c)
	r = tenants_store_auth_lookup(pl_call_db(call),
	                              kind == TENANTS_SECRET_SESSION, prefix);
	rv = pl_db_result_status(r);
	if (rv != PL_OK) {
		rv = pl_db_call_error(call, r, "authenticate");
		if (r != NULL)
			PQclear(r);
		return rv;
	}
	for (int i = 0; i < PQntuples(r); i++) {
		size_t n = 0;
		if (sodium_hex2bin(sh, sizeof(sh), PQgetvalue(r, i, 5),
		                   strlen(PQgetvalue(r, i, 5)), NULL, &n,
		                   NULL) == 0 &&
		    n == sizeof(sh) && sodium_memcmp(sh, h, sizeof(sh)) == 0)
			row = i;
	}
	if (row < 0 || PQgetvalue(r, row, 8)[0] == 't' ||
	    PQgetvalue(r, row, 9)[0] == 't' ||
	    PQgetvalue(r, row, 12)[0] != 't') {
		PQclear(r);
		return pl_call_error(call, PL_UNAUTHENTICATED,
		                     "invalid or expired credentials");
	}
	memset(&tp, 0, sizeof(tp));
	tp.kind = kind == TENANTS_SECRET_SESSION ? Q(USER) : Q(API_KEY);
	snprintf(tp.tenant_id, sizeof(tp.tenant_id), "%s",
	         PQgetvalue(r, row, 1));
	snprintf(tp.user_id, sizeof(tp.user_id), "%s", PQgetvalue(r, row, 2));
	if (kind == TENANTS_SECRET_API_KEY)
		snprintf(tp.api_key_id, sizeof(tp.api_key_id), "%s",
		         PQgetvalue(r, row, 0));
	snprintf(tp.cred_id, sizeof(tp.cred_id), "%s", PQgetvalue(r, row, 0));
	tp.role = tenants_role_parse(PQgetvalue(r, row, 3));
	snprintf(tp.scopes, sizeof(tp.scopes), "%s", PQgetvalue(r, row, 4));
	snprintf(tp.expires_at, sizeof(tp.expires_at), "%s",
	         PQgetvalue(r, row, 7));
	tp.suspended = strcmp(PQgetvalue(r, row, 10), "suspended") == 0;
	tp.platform_admin = PQgetvalue(r, row, 11)[0] == 't';
	tp.rate_limit = atoi(PQgetvalue(r, row, 13));
	tenants_cache_put(st->cache, h, &tp, atoll(PQgetvalue(r, row, 6)), gen);
	if (PQgetvalue(r, row, 14)[0] == 't' &&
	    tenants_store_touch(pl_call_db(call),
	                        kind == TENANTS_SECRET_SESSION, tp.tenant_id,
	                        PQgetvalue(r, row, 0)) != PL_OK)
		pl_warn("could not record the last use of a credential");
	PQclear(r);
	return auth_answer(call, &tp, vout);
}

typedef struct me_ctx {
	pl_call *call;
	Parley__Tenants__V1__GetMeResponse *out;
} me_ctx;

// Runs with the tenant "*": the caller's memberships span tenants.
static int
me_tx(pl_db *db, void *arg)
{
	me_ctx *c = arg;
	const pl_principal *p = c->call->principal;
	int rv;

	if ((rv = tenants_store_get_tenant(c->call, db, p->tenant_id, false,
	                                   &c->out->tenant)) != PL_OK)
		return rv;
	if ((rv = tenants_store_memberships(c->call, db, p->user_id,
	                                    &c->out->memberships,
	                                    &c->out->n_memberships)) != PL_OK)
		return rv;
	for (size_t i = 0; i < c->out->n_memberships; i++)
		if (strcmp(c->out->memberships[i]->tenant_id, p->tenant_id) ==
		    0)
			c->out->role = c->out->memberships[i]->role;
	if (c->out->role == 0)
		return pl_call_error(c->call, PL_NOT_FOUND, "member not found");
	return PL_OK;
}

static int
get_me(pl_call *call, const void *vin, void *vout)
{
	Parley__Tenants__V1__GetMeResponse *out = vout;
	const pl_principal *p = call->principal;
	me_ctx c = { call, out };
	int rv;

	(void)vin;
	if (!pl_uuid_valid(p->user_id) || !pl_uuid_valid(p->tenant_id))
		return pl_call_error(call, PL_NOT_FOUND, "user not found");
	rv = tenants_store_get_user(call, pl_call_db(call), p->user_id, NULL,
	                            &out->user, NULL);
	if (rv == PL_NOT_FOUND)
		return pl_call_error(call, rv, "user not found");
	if (rv != PL_OK)
		return rv;
	return pl_db_tx(pl_call_db(call), "*", me_tx, &c);
}

typedef struct pw_ctx {
	pl_call *call;
	const char *hash;
	bool end;
	int ended;
} pw_ctx;

// Runs with the tenant "*" when ending sessions: they span tenants.
static int
pw_tx(pl_db *db, void *arg)
{
	pw_ctx *c = arg;
	const pl_principal *p = c->call->principal;
	int rv;

	if ((rv = tenants_store_set_password(c->call, db, p->user_id,
	                                     c->hash)) != PL_OK)
		return rv;
	if (c->end && (rv = tenants_store_revoke_sessions(
	                       c->call, db, NULL, p->user_id, NULL, NULL,
	                       &c->ended)) != PL_OK)
		return rv;
	return audit(c->call, db, p->tenant_id, "user.password_changed", "user",
	             p->user_id, NULL);
}

static int
change_password(pl_call *call, const void *vin, void *vout)
{
	const Parley__Tenants__V1__ChangePasswordRequest *in = vin;
	const pl_principal *p = call->principal;
	pb_user *u;
	char *old, hash[crypto_pwhash_STRBYTES];
	int rv;

	(void)vout;
	if (!pl_uuid_valid(p->user_id))
		return pl_call_error(call, PL_NOT_FOUND, "user not found");
	if (!opt(in->current_password) || strlen(in->current_password) > 1024)
		return pl_call_violation(call, "current_password",
		                         "is required");
	if (check_field(call, "new_password",
	                tenants_check_password(in->new_password)) != PL_OK)
		return PL_INVALID_ARGUMENT;
	rv = tenants_store_get_user(call, pl_call_db(call), p->user_id, NULL,
	                            &u, &old);
	if (rv == PL_NOT_FOUND)
		return pl_call_error(call, rv, "user not found");
	if (rv != PL_OK)
		return rv;
	if (!tenants_password_verify(old, in->current_password))
		return pl_call_error(call, PL_UNAUTHENTICATED,
		                     "the current password is wrong");
	if (tenants_password_hash(state(call), in->new_password, hash) != PL_OK)
		return pl_call_error(call, PL_RESOURCE_EXHAUSTED,
		                     "could not hash the password");
	pw_ctx c = { call, hash, in->end_other_sessions, 0 };
	rv = pl_db_tx(pl_call_db(call), "*", pw_tx, &c);
	sodium_memzero(hash, sizeof(hash));
	if (rv == PL_OK && in->end_other_sessions)
		tenants_cache_drop_tenant(state(call)->cache, p->tenant_id,
		                          p->user_id);
	return rv;
}

// ---------------------------------------------------------------------------
// API keys

typedef struct key_ctx {
	pl_call *call;
	const void *in;
	void *out;
	const char *a, *b, *c; // per handler
	const uint8_t *hash;
	uint8_t old[TENANTS_HASH_LEN];
	int limit;
} key_ctx;

static int
create_key_tx(pl_db *db, void *arg)
{
	key_ctx *c = arg;
	const Parley__Tenants__V1__CreateApiKeyRequest *in = c->in;
	Parley__Tenants__V1__CreateApiKeyResponse *out = c->out;
	const pl_principal *p = c->call->principal;
	char id[37];
	int rv;

	pl_uuid7_str(id);
	rv = tenants_store_insert_key(
	        c->call, db, p->tenant_id, id, in->name, c->a, c->hash, c->b,
	        c->c, opt(in->expires_at), in->rate_limit_per_minute,
	        pl_uuid_valid(p->user_id) ? p->user_id : NULL, &out->api_key);
	if (rv != PL_OK)
		return rv;
	out->id = out->api_key->id;
	return audit(c->call, db, p->tenant_id, "api_key.created", "api_key",
	             id,
	             jdump(c->call, json_pack("{s:s,s:s,s:s}", "name", in->name,
	                                      "prefix", c->a, "role", c->c)));
}

static int
create_api_key(pl_call *call, const void *vin, void *vout)
{
	const Parley__Tenants__V1__CreateApiKeyRequest *in = vin;
	Parley__Tenants__V1__CreateApiKeyResponse *out = vout;
	const pl_principal *p = call->principal;
	char key[TENANTS_SECRET_LEN + 1], prefix[16];
	uint8_t h[TENANTS_HASH_LEN];
	int rv = PL_OK, ceiling;
	json_t *sc = json_array();

	rv |= check_field(call, "name",
	                  tenants_check_text(in->name, 100, true));
	if (in->n_scopes == 0)
		rv |= pl_call_violation(call, "scopes",
		                        "at least one is required");
	if (in->n_scopes > 40)
		rv |= pl_call_violation(call, "scopes", "at most 40");
	for (size_t i = 0; i < in->n_scopes && i <= 40; i++) {
		if (!tenants_scope_known(in->scopes[i])) {
			char f[32];
			snprintf(f, sizeof(f), "scopes[%zu]", i);
			rv |= pl_call_violation(call, f,
			                        "is not a known scope");
		} else
			json_array_append_new(sc, json_string(in->scopes[i]));
	}
	ceiling = p->kind == Q(USER) ? (int)p->role : 4;
	if ((int)in->role < 0 || (int)in->role > 4)
		rv |= pl_call_violation(call, "role", "is not a known role");
	else if ((int)in->role > ceiling)
		rv |= pl_call_violation(call, "role",
		                        "may not be above the creator's role");
	if (opt(in->expires_at))
		rv |= check_field(call, "expires_at",
		                  tenants_check_timestamp(in->expires_at));
	if (in->rate_limit_per_minute < 0 ||
	    in->rate_limit_per_minute > 1000000)
		rv |= pl_call_violation(call, "rate_limit_per_minute",
		                        "must be between 0 and 1000000");
	if (rv != PL_OK) {
		json_decref(sc);
		return PL_INVALID_ARGUMENT;
	}
	tenants_secret_new(TENANTS_SECRET_API_KEY, key, prefix, h);
	key_ctx c = { .call = call,
		      .in = in,
		      .out = out,
		      .a = prefix,
		      .b = jdump(call, sc),
		      .c = tenants_role_name(in->role ? (int)in->role
		                                      : ceiling),
		      .hash = h };
	rv = pl_db_tx(pl_call_db(call), p->tenant_id, create_key_tx, &c);
	if (rv == PL_OK)
		out->key = pl_arena_strdup(call->arena, key);
	sodium_memzero(key, sizeof(key));
	return rv;
}

static int
list_keys_tx(pl_db *db, void *arg)
{
	key_ctx *c = arg;
	const Parley__Tenants__V1__ListApiKeysRequest *in = c->in;
	Parley__Tenants__V1__ListApiKeysResponse *out = c->out;
	int rv;

	rv = tenants_store_list_keys(c->call, db, c->call->principal->tenant_id,
	                             in->include_revoked, c->a, c->limit,
	                             &out->api_keys, &out->n_api_keys);
	if (rv == PL_OK)
		out->next_page_token = page_out(
		        c->call, out->n_api_keys, c->limit,
		        out->n_api_keys ? out->api_keys[out->n_api_keys - 1]->id
		                        : NULL);
	return rv;
}

static int
list_api_keys(pl_call *call, const void *vin, void *vout)
{
	const Parley__Tenants__V1__ListApiKeysRequest *in = vin;
	key_ctx c = { .call = call, .in = in, .out = vout };

	if (page_in(call, in->page, &c.limit, &c.a) != PL_OK)
		return PL_INVALID_ARGUMENT;
	return pl_db_tx(pl_call_db(call), call->principal->tenant_id,
	                list_keys_tx, &c);
}

static int
revoke_key_tx(pl_db *db, void *arg)
{
	key_ctx *c = arg;
	Parley__Tenants__V1__RevokeApiKeyResponse *out = c->out;
	const char *tid = c->call->principal->tenant_id;
	bool changed;
	int rv;

	rv = tenants_store_revoke_key(c->call, db, tid, c->a, &out->api_key,
	                              c->old, &changed);
	if (rv != PL_OK || !changed)
		return rv;
	return audit(c->call, db, tid, "api_key.revoked", "api_key", c->a,
	             NULL);
}

static int
revoke_api_key(pl_call *call, const void *vin, void *vout)
{
	const Parley__Tenants__V1__RevokeApiKeyRequest *in = vin;
	key_ctx c = { .call = call, .in = in, .out = vout, .a = in->id };
	int rv;

	if (check_id(call, "id", in->id) != PL_OK)
		return PL_INVALID_ARGUMENT;
	rv = pl_db_tx(pl_call_db(call), call->principal->tenant_id,
	              revoke_key_tx, &c);
	if (rv == PL_OK)
		tenants_cache_drop(state(call)->cache, c.old);
	return rv;
}

// ---------------------------------------------------------------------------
// Members

typedef struct mem_ctx {
	pl_call *call;
	const void *in;
	void *out;
	pb_user *user;    // AddMember: existing user, or NULL
	const char *hash; // AddMember: new user's password hash
	const char *after;
	int limit;
	const char *old_role;
} mem_ctx;

static int
add_member_tx(pl_db *db, void *arg)
{
	mem_ctx *c = arg;
	const Parley__Tenants__V1__AddMemberRequest *in = c->in;
	Parley__Tenants__V1__AddMemberResponse *out = c->out;
	const char *tid = c->call->principal->tenant_id, *role;
	char uid[37];
	int rv;

	role = tenants_role_name(in->role);
	if (c->user != NULL)
		snprintf(uid, sizeof(uid), "%s", c->user->id);
	else {
		pl_uuid7_str(uid);
		if ((rv = tenants_store_insert_user(c->call, db, uid, in->email,
		                                    c->hash, in->full_name,
		                                    false)) != PL_OK)
			return rv;
		out->user_created = true;
	}
	if ((rv = tenants_store_insert_membership(c->call, db, tid, uid,
	                                          role)) != PL_OK ||
	    (rv = audit(c->call, db, tid, "member.added", "membership", uid,
	                jdump(c->call, json_pack("{s:s}", "role", role)))) !=
	            PL_OK ||
	    (rv = emit(c->call, db, to_analytics, tid, "member.added",
	               jdump(c->call, json_pack("{s:s}", "role", role)),
	               uid)) != PL_OK)
		return rv;
	return tenants_store_get_member(c->call, db, tid, uid, &out->member);
}

static int
add_member(pl_call *call, const void *vin, void *vout)
{
	const Parley__Tenants__V1__AddMemberRequest *in = vin;
	mem_ctx c = { .call = call, .in = in, .out = vout };
	char hash[crypto_pwhash_STRBYTES];
	int rv = PL_OK;

	rv |= check_field(call, "email", tenants_check_email(in->email));
	if (tenants_role_name(in->role) == NULL)
		rv |= pl_call_violation(
		        call, "role", "must be owner, admin, agent or viewer");
	if (rv != PL_OK)
		return PL_INVALID_ARGUMENT;
	rv = tenants_store_get_user(call, pl_call_db(call), NULL, in->email,
	                            &c.user, NULL);
	if (rv != PL_OK && rv != PL_NOT_FOUND)
		return rv;
	if (rv == PL_NOT_FOUND) {
		c.user = NULL;
		rv = PL_OK;
		rv |= check_field(call, "full_name",
		                  tenants_check_text(in->full_name, 200, true));
		rv |= check_field(call, "password",
		                  tenants_check_password(in->password));
		if (rv != PL_OK)
			return PL_INVALID_ARGUMENT;
		if (tenants_password_hash(state(call), in->password, hash) !=
		    PL_OK)
			return pl_call_error(call, PL_RESOURCE_EXHAUSTED,
			                     "could not hash the password");
		c.hash = hash;
	}
	rv = pl_db_tx(pl_call_db(call), call->principal->tenant_id,
	              add_member_tx, &c);
	sodium_memzero(hash, sizeof(hash));
	return rv;
}

// Changes (role != NULL) or removes a membership; the tenant row is locked
// so concurrent changes cannot both remove the last owner.
static int
change_member_tx(pl_db *db, void *arg)
{
	mem_ctx *c = arg;
	const char *tid = c->call->principal->tenant_id;
	const char *uid = c->after;
	const char *role = c->old_role;
	pb_member *m;
	int owners = 0, rv;

	if ((rv = tenants_store_get_tenant(c->call, db, tid, true, NULL)) !=
	            PL_OK ||
	    (rv = tenants_store_get_member(c->call, db, tid, uid, &m)) != PL_OK)
		return rv;
	if (m->role == PARLEY__RPC__V1__ROLE__ROLE_OWNER &&
	    (role == NULL || strcmp(role, "owner") != 0)) {
		if ((rv = tenants_store_count_owners(c->call, db, tid,
		                                     &owners)) != PL_OK)
			return rv;
		if (owners <= 1)
			return pl_call_error(c->call, PL_FAILED_PRECONDITION,
			                     "the last owner cannot be %s",
			                     role ? "demoted" : "removed");
	}
	if (role == NULL) {
		if ((rv = tenants_store_delete_member(c->call, db, tid, uid)) !=
		            PL_OK ||
		    (rv = emit(c->call, db, to_analytics, tid, "member.removed",
		               jdump(c->call,
		                     json_pack("{s:s}", "role",
		                               tenants_role_name(m->role))),
		               uid)) != PL_OK)
			return rv;
		return audit(c->call, db, tid, "member.removed", "membership",
		             uid, NULL);
	}
	if ((rv = tenants_store_set_role(c->call, db, tid, uid, role)) !=
	            PL_OK ||
	    (rv = audit(c->call, db, tid, "member.role_changed", "membership",
	                uid,
	                jdump(c->call, json_pack("{s:s,s:s}", "from",
	                                         tenants_role_name(m->role),
	                                         "to", role)))) != PL_OK)
		return rv;
	return tenants_store_get_member(
	        c->call, db, tid, uid,
	        &((Parley__Tenants__V1__SetRoleResponse *)c->out)->member);
}

static int
set_role(pl_call *call, const void *vin, void *vout)
{
	const Parley__Tenants__V1__SetRoleRequest *in = vin;
	mem_ctx c = { .call = call,
		      .in = in,
		      .out = vout,
		      .after = in->user_id,
		      .old_role = tenants_role_name(in->role) };
	int rv = PL_OK;

	rv |= check_id(call, "user_id", in->user_id);
	if (c.old_role == NULL)
		rv |= pl_call_violation(
		        call, "role", "must be owner, admin, agent or viewer");
	if (rv != PL_OK)
		return PL_INVALID_ARGUMENT;
	rv = pl_db_tx(pl_call_db(call), call->principal->tenant_id,
	              change_member_tx, &c);
	if (rv == PL_OK)
		tenants_cache_drop_tenant(state(call)->cache,
		                          call->principal->tenant_id,
		                          in->user_id);
	return rv;
}

static int
remove_member(pl_call *call, const void *vin, void *vout)
{
	const Parley__Tenants__V1__RemoveMemberRequest *in = vin;
	mem_ctx c = {
		.call = call, .in = in, .out = vout, .after = in->user_id
	};
	int rv;

	if (check_id(call, "user_id", in->user_id) != PL_OK)
		return PL_INVALID_ARGUMENT;
	rv = pl_db_tx(pl_call_db(call), call->principal->tenant_id,
	              change_member_tx, &c);
	if (rv == PL_OK)
		tenants_cache_drop_tenant(state(call)->cache,
		                          call->principal->tenant_id,
		                          in->user_id);
	return rv;
}

static int
list_members_tx(pl_db *db, void *arg)
{
	mem_ctx *c = arg;
	const Parley__Tenants__V1__ListMembersRequest *in = c->in;
	Parley__Tenants__V1__ListMembersResponse *out = c->out;
	int rv = tenants_store_list_members(
	        c->call, db, c->call->principal->tenant_id,
	        in->role ? tenants_role_name(in->role) : NULL, c->after,
	        c->limit, &out->members, &out->n_members);
	if (rv == PL_OK)
		out->next_page_token = page_out(
		        c->call, out->n_members, c->limit,
		        out->n_members
		                ? out->members[out->n_members - 1]->user_id
		                : NULL);
	return rv;
}

static int
list_members(pl_call *call, const void *vin, void *vout)
{
	const Parley__Tenants__V1__ListMembersRequest *in = vin;
	mem_ctx c = { .call = call, .in = in, .out = vout };

	if (in->role != 0 && tenants_role_name(in->role) == NULL)
		return pl_call_violation(call, "role", "is not a known role");
	if (page_in(call, in->page, &c.limit, &c.after) != PL_OK)
		return PL_INVALID_ARGUMENT;
	return pl_db_tx(pl_call_db(call), call->principal->tenant_id,
	                list_members_tx, &c);
}

// ---------------------------------------------------------------------------
// Channels

// A channel's editable fields, as a create or an update leaves them.
typedef struct draft {
	int type;
	const char *name, *agent_id, *phone_number_id, *display_phone_number;
	const char *sender_number, *api_base_url, *settings;
	char **origins;
	size_t n_origins;
	int32_t send_rate;
	const char *access_token, *app_secret, *verify_token;
} draft;

#define META_GRAPH_URL "https://graph.facebook.com/v21.0"

static int
draft_check(pl_call *call, draft *d)
{
	int rv = PL_OK;

	rv |= check_field(call, "name", tenants_check_text(d->name, 200, true));
	if (opt(d->agent_id) && !pl_uuid_valid(d->agent_id))
		rv |= pl_call_violation(call, "agent_id", "must be a UUID");
	if (d->send_rate < 0 || d->send_rate > 1000)
		rv |= pl_call_violation(call, "send_rate_per_second",
		                        "must be between 0 and 1000");
	if (opt(d->settings)) {
		json_t *j = strlen(d->settings) <= 65536
		                    ? json_loads(d->settings, 0, NULL)
		                    : NULL;
		if (!json_is_object(j))
			rv |= pl_call_violation(
			        call, "settings",
			        "must be a JSON object of at most 64 KiB");
		json_decref(j);
	}
	if (d->n_origins > 50)
		rv |= pl_call_violation(call, "allowed_origins", "at most 50");
	for (size_t i = 0; i < d->n_origins && i <= 50; i++) {
		const char *why = tenants_check_url(d->origins[i]);
		if (why == NULL && strlen(d->origins[i]) > 255)
			why = "is too long";
		if (why != NULL) {
			char f[40];
			snprintf(f, sizeof(f), "allowed_origins[%zu]", i);
			rv |= pl_call_violation(call, f, "%s", why);
		}
	}
	rv |= check_field(
	        call, "display_phone_number",
	        tenants_check_text(d->display_phone_number, 32, false));
	rv |= check_field(call, "access_token",
	                  tenants_check_text(d->access_token, 4096, false));
	rv |= check_field(call, "app_secret",
	                  tenants_check_text(d->app_secret, 4096, false));
	rv |= check_field(call, "verify_token",
	                  tenants_check_text(d->verify_token, 4096, false));
	switch (d->type) {
	case PARLEY__TENANTS__V1__CHANNEL_TYPE__CHANNEL_TYPE_WHATSAPP_CLOUD:
		if (!opt(d->api_base_url))
			d->api_base_url = META_GRAPH_URL;
		rv |= check_field(
		        call, "phone_number_id",
		        tenants_check_digits(d->phone_number_id, 1, 32));
		rv |= check_field(call, "api_base_url",
		                  tenants_check_url(d->api_base_url));
		if (!opt(d->access_token))
			rv |= pl_call_violation(
			        call, "access_token",
			        "is required for whatsapp_cloud");
		if (!opt(d->app_secret))
			rv |= pl_call_violation(
			        call, "app_secret",
			        "is required for whatsapp_cloud");
		if (!opt(d->verify_token))
			rv |= pl_call_violation(
			        call, "verify_token",
			        "is required for whatsapp_cloud");
		if (opt(d->sender_number))
			rv |= pl_call_violation(call, "sender_number",
			                        "is for infobip channels");
		break;
	case PARLEY__TENANTS__V1__CHANNEL_TYPE__CHANNEL_TYPE_INFOBIP:
		rv |= check_field(
		        call, "sender_number",
		        tenants_check_digits(d->sender_number, 5, 20));
		rv |= check_field(call, "api_base_url",
		                  tenants_check_url(d->api_base_url));
		if (!opt(d->access_token))
			rv |= pl_call_violation(call, "access_token",
			                        "is required for infobip");
		if (opt(d->phone_number_id))
			rv |= pl_call_violation(
			        call, "phone_number_id",
			        "is for whatsapp_cloud channels");
		break;
	case PARLEY__TENANTS__V1__CHANNEL_TYPE__CHANNEL_TYPE_WEBCHAT:
		if (opt(d->phone_number_id) || opt(d->sender_number) ||
		    opt(d->access_token) || opt(d->app_secret) ||
		    opt(d->verify_token))
			rv |= pl_call_violation(
			        call, "type",
			        "webchat channels take no provider numbers or "
			        "credentials");
		break;
	default:
		rv |= pl_call_violation(
		        call, "type",
		        "must be whatsapp_cloud, infobip or webchat");
	}
	return rv ? PL_INVALID_ARGUMENT : PL_OK;
}

static char *
origins_json(pl_call *call, char **v, size_t n)
{
	json_t *a = json_array();
	for (size_t i = 0; i < n; i++)
		json_array_append_new(a, json_string(v[i]));
	return jdump(call, a);
}

// Seals the draft's secrets for (tenant, channel) into bytea text; NULL
// (and PL_OK) when there are none.
static int
seal_draft(pl_call *call, const draft *d, const char *tid, const char *cid,
           const char **creds, const char **key_id)
{
	tenants_state *st = state(call);
	json_t *j;
	char *plain;
	uint8_t *sealed;
	size_t n;
	int rv;

	*creds = NULL;
	*key_id = NULL;
	if (!opt(d->access_token) && !opt(d->app_secret) &&
	    !opt(d->verify_token))
		return PL_OK;
	if (st->keys.n == 0)
		return pl_call_error(
		        call, PL_FAILED_PRECONDITION,
		        "channel credentials need PARLEY_CREDENTIALS_KEY to be "
		        "configured");
	j = json_object();
	if (opt(d->access_token))
		json_object_set_new(j, "access_token",
		                    json_string(d->access_token));
	if (opt(d->app_secret))
		json_object_set_new(j, "app_secret",
		                    json_string(d->app_secret));
	if (opt(d->verify_token))
		json_object_set_new(j, "verify_token",
		                    json_string(d->verify_token));
	plain = json_dumps(j, JSON_COMPACT);
	json_decref(j);
	if (plain == NULL)
		return pl_call_error(call, PL_INTERNAL,
		                     "could not seal credentials");
	rv = tenants_seal(&st->keys, tid, cid, (uint8_t *)plain, strlen(plain),
	                  &sealed, &n);
	sodium_memzero(plain, strlen(plain));
	free(plain);
	if (rv != PL_OK)
		return pl_call_error(call, rv, "could not seal credentials");
	*creds = tenants_store_bytea(call, sealed, n);
	*key_id = st->keys.keys[0].id;
	free(sealed);
	return PL_OK;
}

// Opens a stored channel's secrets into d (strings in the arena).
static int
open_row(pl_call *call, const tenants_channel_row *row, draft *d)
{
	uint8_t *plain;
	size_t n;
	json_t *j;
	int rv;

	if (row->creds == NULL)
		return PL_OK;
	rv = tenants_open(&state(call)->keys, row->key_id, row->tenant_id,
	                  row->ch->id, row->creds, row->creds_len, &plain, &n);
	if (rv != PL_OK) {
		pl_error(
		        "could not open the credentials of channel %s (key %s)",
		        row->ch->id, row->key_id);
		return pl_call_error(
		        call, PL_INTERNAL,
		        "could not decrypt the channel's credentials");
	}
	j = json_loadb((const char *)plain, n, 0, NULL);
	sodium_memzero(plain, n);
	free(plain);
	d->access_token = pl_arena_strdup(
	        call->arena,
	        json_string_value(json_object_get(j, "access_token")));
	d->app_secret = pl_arena_strdup(
	        call->arena,
	        json_string_value(json_object_get(j, "app_secret")));
	d->verify_token = pl_arena_strdup(
	        call->arena,
	        json_string_value(json_object_get(j, "verify_token")));
	json_decref(j);
	return PL_OK;
}

// Fills the URLs that depend on the public address.
static void
decorate(pl_call *call, pb_channel *c)
{
	const char *base = state(call)->public_url;

	switch (c->type) {
	case PARLEY__TENANTS__V1__CHANNEL_TYPE__CHANNEL_TYPE_WHATSAPP_CLOUD:
		c->webhook_url = pl_arena_printf(
		        call->arena, "%s/v1/webhooks/whatsapp/%s", base, c->id);
		break;
	case PARLEY__TENANTS__V1__CHANNEL_TYPE__CHANNEL_TYPE_INFOBIP:
		c->webhook_url = pl_arena_printf(
		        call->arena, "%s/v1/webhooks/infobip/%s", base, c->id);
		break;
	case PARLEY__TENANTS__V1__CHANNEL_TYPE__CHANNEL_TYPE_WEBCHAT:
		c->widget_url =
		        pl_arena_printf(call->arena, "%s/chat/%s", base, c->id);
		break;
	default:
		break;
	}
}

static void
draft_input(pl_call *call, const draft *d, const char *tid, const char *cid,
            tenants_channel_input *ci)
{
	memset(ci, 0, sizeof(*ci));
	ci->tenant_id = tid;
	ci->id = cid;
	ci->type = tenants_channel_type_names[d->type];
	ci->name = d->name;
	ci->agent_id = d->agent_id ? d->agent_id : "";
	ci->routing_key = d->type == 1   ? d->phone_number_id
	                  : d->type == 2 ? d->sender_number
	                                 : cid;
	ci->phone_number_id = d->phone_number_id ? d->phone_number_id : "";
	ci->display_phone_number =
	        d->display_phone_number ? d->display_phone_number : "";
	ci->sender_number = d->sender_number ? d->sender_number : "";
	ci->api_base_url = d->api_base_url ? d->api_base_url : "";
	ci->origins_json = origins_json(call, d->origins, d->n_origins);
	ci->send_rate = pl_arena_printf(call->arena, "%d", (int)d->send_rate);
	ci->settings = opt(d->settings);
}

typedef struct chan_ctx {
	pl_call *call;
	const void *in;
	void *out;
	draft d;
	const char *id;
	const char *after;
	int limit;
	const char *fields;
} chan_ctx;

static int
create_channel_tx(pl_db *db, void *arg)
{
	chan_ctx *c = arg;
	Parley__Tenants__V1__CreateChannelResponse *out = c->out;
	const char *tid = c->call->principal->tenant_id;
	tenants_channel_input ci;
	int rv;

	draft_input(c->call, &c->d, tid, c->id, &ci);
	if ((rv = seal_draft(c->call, &c->d, tid, c->id, &ci.creds,
	                     &ci.key_id)) != PL_OK ||
	    (rv = tenants_store_insert_channel(c->call, db, &ci,
	                                       &out->channel)) != PL_OK)
		return rv;
	decorate(c->call, out->channel);
	out->id = out->channel->id;
	out->webhook_url = out->channel->webhook_url;
	return audit(c->call, db, tid, "channel.created", "channel", c->id,
	             jdump(c->call, json_pack("{s:s,s:s}", "type", ci.type,
	                                      "routing_key", ci.routing_key)));
}

static int
create_channel(pl_call *call, const void *vin, void *vout)
{
	const Parley__Tenants__V1__CreateChannelRequest *in = vin;
	chan_ctx c = { .call = call, .in = in, .out = vout };
	char id[37];

	c.d.type = in->type;
	c.d.name = in->name;
	c.d.agent_id = opt(in->agent_id);
	c.d.phone_number_id = opt(in->phone_number_id);
	c.d.display_phone_number = opt(in->display_phone_number);
	c.d.sender_number = opt(in->sender_number);
	c.d.api_base_url = opt(in->api_base_url);
	c.d.settings = in->settings ? opt(in->settings->text) : NULL;
	c.d.origins = in->allowed_origins;
	c.d.n_origins = in->n_allowed_origins;
	c.d.send_rate = in->send_rate_per_second;
	c.d.access_token = opt(in->access_token);
	c.d.app_secret = opt(in->app_secret);
	c.d.verify_token = opt(in->verify_token);
	if (draft_check(call, &c.d) != PL_OK)
		return PL_INVALID_ARGUMENT;
	pl_uuid7_str(id);
	c.id = id;
	return pl_db_tx(pl_call_db(call), call->principal->tenant_id,
	                create_channel_tx, &c);
}

static const char *const channel_fields[] = { "name",
	                                      "agent_id",
	                                      "phone_number_id",
	                                      "access_token",
	                                      "app_secret",
	                                      "verify_token",
	                                      "api_base_url",
	                                      "display_phone_number",
	                                      "sender_number",
	                                      "allowed_origins",
	                                      "send_rate_per_second",
	                                      "settings",
	                                      NULL };

static bool
masked(const Parley__Tenants__V1__UpdateChannelRequest *in, const char *f,
       bool set)
{
	if (in->n_update_mask == 0)
		return set;
	for (size_t i = 0; i < in->n_update_mask; i++)
		if (strcmp(in->update_mask[i], f) == 0)
			return true;
	return false;
}

static int
update_channel_tx(pl_db *db, void *arg)
{
	chan_ctx *c = arg;
	const Parley__Tenants__V1__UpdateChannelRequest *in = c->in;
	Parley__Tenants__V1__UpdateChannelResponse *out = c->out;
	const char *tid = c->call->principal->tenant_id;
	tenants_channel_row row;
	tenants_channel_input ci;
	draft *d = &c->d;
	json_t *changed = json_array();
	int rv;

	if ((rv = tenants_store_get_channel(c->call, db, tid, in->id, true,
	                                    &row)) != PL_OK ||
	    (rv = open_row(c->call, &row, d)) != PL_OK) {
		json_decref(changed);
		return rv;
	}
	d->type = row.ch->type;
	d->name = row.ch->name;
	d->agent_id = opt(row.ch->agent_id);
	d->phone_number_id = opt(row.ch->phone_number_id);
	d->display_phone_number = opt(row.ch->display_phone_number);
	d->sender_number = opt(row.ch->sender_number);
	d->api_base_url = opt(row.ch->api_base_url);
	d->settings = row.ch->settings ? opt(row.ch->settings->text) : NULL;
	d->origins = row.ch->allowed_origins;
	d->n_origins = row.ch->n_allowed_origins;
	d->send_rate = row.ch->send_rate_per_second;
#define APPLY(f, set, assign)                                                  \
	if (masked(in, f, set)) {                                              \
		assign;                                                        \
		json_array_append_new(changed, json_string(f));                \
	}
	APPLY("name", opt(in->name) != NULL, d->name = in->name);
	APPLY("agent_id", opt(in->agent_id) != NULL,
	      d->agent_id = opt(in->agent_id));
	APPLY("phone_number_id", opt(in->phone_number_id) != NULL,
	      d->phone_number_id = opt(in->phone_number_id));
	APPLY("access_token", opt(in->access_token) != NULL,
	      d->access_token = opt(in->access_token));
	APPLY("app_secret", opt(in->app_secret) != NULL,
	      d->app_secret = opt(in->app_secret));
	APPLY("verify_token", opt(in->verify_token) != NULL,
	      d->verify_token = opt(in->verify_token));
	APPLY("api_base_url", opt(in->api_base_url) != NULL,
	      d->api_base_url = opt(in->api_base_url));
	APPLY("display_phone_number", opt(in->display_phone_number) != NULL,
	      d->display_phone_number = opt(in->display_phone_number));
	APPLY("sender_number", opt(in->sender_number) != NULL,
	      d->sender_number = opt(in->sender_number));
	APPLY("allowed_origins", in->n_allowed_origins > 0, {
		d->origins = in->allowed_origins;
		d->n_origins = in->n_allowed_origins;
	});
	APPLY("send_rate_per_second", in->send_rate_per_second != 0,
	      d->send_rate = in->send_rate_per_second);
	APPLY("settings", in->settings && opt(in->settings->text),
	      d->settings = in->settings ? opt(in->settings->text) : NULL);
#undef APPLY
	if (draft_check(c->call, d) != PL_OK) {
		json_decref(changed);
		return PL_INVALID_ARGUMENT;
	}
	draft_input(c->call, d, tid, in->id, &ci);
	if ((rv = seal_draft(c->call, d, tid, in->id, &ci.creds, &ci.key_id)) !=
	            PL_OK ||
	    (rv = tenants_store_update_channel(c->call, db, &ci)) != PL_OK ||
	    (rv = audit(c->call, db, tid, "channel.updated", "channel", in->id,
	                jdump(c->call,
	                      json_pack("{s:o}", "fields", changed)))) != PL_OK)
		return rv;
	if ((rv = tenants_store_get_channel(c->call, db, tid, in->id, false,
	                                    &row)) != PL_OK)
		return rv;
	decorate(c->call, row.ch);
	out->channel = row.ch;
	return PL_OK;
}

static int
update_channel(pl_call *call, const void *vin, void *vout)
{
	const Parley__Tenants__V1__UpdateChannelRequest *in = vin;
	chan_ctx c = { .call = call, .in = in, .out = vout };

	if (check_id(call, "id", in->id) != PL_OK)
		return PL_INVALID_ARGUMENT;
	for (size_t i = 0; i < in->n_update_mask; i++) {
		bool ok = false;
		for (int k = 0; channel_fields[k] && !ok; k++)
			ok = strcmp(in->update_mask[i], channel_fields[k]) == 0;
		if (!ok)
			return pl_call_violation(call, "update_mask",
			                         "unknown field \"%.64s\"",
			                         in->update_mask[i]);
	}
	return pl_db_tx(pl_call_db(call), call->principal->tenant_id,
	                update_channel_tx, &c);
}

static int
list_channels_tx(pl_db *db, void *arg)
{
	chan_ctx *c = arg;
	const Parley__Tenants__V1__ListChannelsRequest *in = c->in;
	Parley__Tenants__V1__ListChannelsResponse *out = c->out;
	tenants_channel_row *rows;
	size_t n;
	int rv = tenants_store_list_channels(
	        c->call, db, c->call->principal->tenant_id,
	        in->type ? tenants_channel_type_names[in->type] : NULL,
	        in->status == PARLEY__TENANTS__V1__CHANNEL_STATUS__CHANNEL_STATUS_ACTIVE
	                ? "active"
	        : in->status ? "disabled"
	                     : NULL,
	        opt(in->agent_id), c->after, c->limit, &rows, &n);
	if (rv != PL_OK)
		return rv;
	out->channels =
	        pl_arena_alloc(c->call->arena, (n + 1) * sizeof(pb_channel *));
	out->n_channels = n;
	for (size_t i = 0; i < n; i++) {
		decorate(c->call, rows[i].ch);
		out->channels[i] = rows[i].ch;
	}
	out->next_page_token =
	        page_out(c->call, n, c->limit, n ? rows[n - 1].ch->id : NULL);
	return PL_OK;
}

static int
list_channels(pl_call *call, const void *vin, void *vout)
{
	const Parley__Tenants__V1__ListChannelsRequest *in = vin;
	chan_ctx c = { .call = call, .in = in, .out = vout };

	if ((int)in->type < 0 || (int)in->type > 3)
		return pl_call_violation(call, "type", "is not a channel type");
	if ((int)in->status < 0 || (int)in->status > 2)
		return pl_call_violation(call, "status",
		                         "is not a channel status");
	if (opt(in->agent_id) && !pl_uuid_valid(in->agent_id))
		return pl_call_violation(call, "agent_id", "must be a UUID");
	if (page_in(call, in->page, &c.limit, &c.after) != PL_OK)
		return PL_INVALID_ARGUMENT;
	return pl_db_tx(pl_call_db(call), call->principal->tenant_id,
	                list_channels_tx, &c);
}

// GetChannel, DisableChannel, EnableChannel: fields (0 get, 1 disable,
// 2 enable) says which.
static int
channel_state_tx(pl_db *db, void *arg)
{
	chan_ctx *c = arg;
	const char *tid = c->call->principal->tenant_id;
	tenants_channel_row row;
	int rv;

	if (c->limit != 0) {
		bool dis = c->limit == 1;
		if ((rv = tenants_store_set_channel_status(
		             c->call, db, tid, c->id, dis,
		             dis ? c->after : NULL)) != PL_OK ||
		    (rv = audit(c->call, db, tid,
		                dis ? "channel.disabled" : "channel.enabled",
		                "channel", c->id,
		                dis && opt(c->after)
		                        ? jdump(c->call,
		                                json_pack("{s:s}", "reason",
		                                          c->after))
		                        : NULL)) != PL_OK)
			return rv;
	}
	if ((rv = tenants_store_get_channel(c->call, db, tid, c->id, false,
	                                    &row)) != PL_OK)
		return rv;
	decorate(c->call, row.ch);
	// Get, Disable and Enable answers all hold just the channel.
	((Parley__Tenants__V1__GetChannelResponse *)c->out)->channel = row.ch;
	return PL_OK;
}

static int
channel_state(pl_call *call, const char *id, const char *reason, int op,
              void *out)
{
	chan_ctx c = {
		.call = call, .out = out, .id = id, .after = reason, .limit = op
	};

	if (check_id(call, "id", id) != PL_OK)
		return PL_INVALID_ARGUMENT;
	if (check_field(call, "reason",
	                tenants_check_text(reason, 200, false)) != PL_OK)
		return PL_INVALID_ARGUMENT;
	return pl_db_tx(pl_call_db(call), call->principal->tenant_id,
	                channel_state_tx, &c);
}

static int
get_channel(pl_call *call, const void *vin, void *vout)
{
	const Parley__Tenants__V1__GetChannelRequest *in = vin;
	return channel_state(call, in->id, NULL, 0, vout);
}

static int
disable_channel(pl_call *call, const void *vin, void *vout)
{
	const Parley__Tenants__V1__DisableChannelRequest *in = vin;
	return channel_state(call, in->id, in->reason, 1, vout);
}

static int
enable_channel(pl_call *call, const void *vin, void *vout)
{
	const Parley__Tenants__V1__EnableChannelRequest *in = vin;
	return channel_state(call, in->id, NULL, 2, vout);
}

static int
resolve_tx(pl_db *db, void *arg)
{
	chan_ctx *c = arg;
	const Parley__Tenants__V1__ResolveChannelRequest *in = c->in;
	Parley__Tenants__V1__ResolveChannelResponse *out = c->out;
	tenants_channel_row row;
	int rv = tenants_store_resolve_channel(
	        c->call, db, opt(in->channel_id),
	        opt(in->channel_id) ? NULL
	                            : tenants_channel_type_names[in->type],
	        opt(in->channel_id) ? NULL : in->routing_key, &row);
	if (rv != PL_OK)
		return rv;
	decorate(c->call, row.ch);
	out->tenant_id = row.tenant_id;
	out->tenant_status =
	        row.suspended
	                ? PARLEY__TENANTS__V1__TENANT_STATUS__TENANT_STATUS_SUSPENDED
	                : PARLEY__TENANTS__V1__TENANT_STATUS__TENANT_STATUS_ACTIVE;
	out->channel = row.ch;
	return PL_OK;
}

static int
resolve_channel(pl_call *call, const void *vin, void *vout)
{
	const Parley__Tenants__V1__ResolveChannelRequest *in = vin;
	chan_ctx c = { .call = call, .in = in, .out = vout };

	if (opt(in->channel_id)) {
		if (!pl_uuid_valid(in->channel_id))
			return pl_call_violation(call, "channel_id",
			                         "must be a UUID");
	} else {
		if ((int)in->type < 1 || (int)in->type > 3)
			return pl_call_violation(
			        call, "type", "is required with routing_key");
		if (check_field(call, "routing_key",
		                tenants_check_text(in->routing_key, 64,
		                                   true)) != PL_OK)
			return PL_INVALID_ARGUMENT;
	}
	// Across tenants ("*"): a webhook does not know its tenant yet.
	return pl_db_tx(pl_call_db(call), "*", resolve_tx, &c);
}

static int
secrets_tx(pl_db *db, void *arg)
{
	chan_ctx *c = arg;
	const Parley__Tenants__V1__GetChannelSecretsRequest *in = c->in;
	Parley__Tenants__V1__GetChannelSecretsResponse *out = c->out;
	tenants_channel_row row;
	draft d = { 0 };
	int rv;

	if ((rv = tenants_store_get_channel(c->call, db, in->tenant_id,
	                                    in->channel_id, false, &row)) !=
	            PL_OK ||
	    (rv = open_row(c->call, &row, &d)) != PL_OK)
		return rv;
	decorate(c->call, row.ch);
	out->channel = row.ch;
	out->access_token = d.access_token ? (char *)d.access_token : "";
	out->app_secret = d.app_secret ? (char *)d.app_secret : "";
	out->verify_token = d.verify_token ? (char *)d.verify_token : "";
	out->cache_ttl_ms = 60000;
	return PL_OK;
}

static int
get_channel_secrets(pl_call *call, const void *vin, void *vout)
{
	const Parley__Tenants__V1__GetChannelSecretsRequest *in = vin;
	chan_ctx c = { .call = call, .in = in, .out = vout };
	int rv = PL_OK;

	rv |= check_id(call, "tenant_id", in->tenant_id);
	rv |= check_id(call, "channel_id", in->channel_id);
	if (rv != PL_OK)
		return PL_INVALID_ARGUMENT;
	return pl_db_tx(pl_call_db(call), in->tenant_id, secrets_tx, &c);
}

typedef struct rot_ctx {
	pl_call *call;
	int batch;
	int64_t rotated;
	int64_t remaining;
} rot_ctx;

// Runs with the tenant "*": rotation is a platform job over every tenant.
static int
rotate_tx(pl_db *db, void *arg)
{
	rot_ctx *c = arg;
	tenants_state *st = state(c->call);
	tenants_channel_row *rows;
	size_t n;
	int rv;

	if ((rv = tenants_store_stale_channels(c->call, db, st->keys.keys[0].id,
	                                       c->batch, &rows, &n)) != PL_OK)
		return rv;
	for (size_t i = 0; i < n; i++) {
		draft d = { 0 };
		const char *creds, *kid;
		if ((rv = open_row(c->call, &rows[i], &d)) != PL_OK ||
		    (rv = seal_draft(c->call, &d, rows[i].tenant_id,
		                     rows[i].ch->id, &creds, &kid)) != PL_OK ||
		    (rv = tenants_store_set_credentials(
		             c->call, db, rows[i].tenant_id, rows[i].ch->id,
		             creds, kid)) != PL_OK)
			return rv;
		c->rotated++;
	}
	return tenants_store_count_stale(c->call, db, st->keys.keys[0].id,
	                                 &c->remaining);
}

static int
rotate_channel_keys(pl_call *call, const void *vin, void *vout)
{
	const Parley__Tenants__V1__RotateChannelKeysRequest *in = vin;
	Parley__Tenants__V1__RotateChannelKeysResponse *out = vout;
	tenants_state *st = state(call);
	rot_ctx c = { .call = call, .batch = in->batch_size };
	int rv;

	if (in->batch_size < 0)
		return pl_call_violation(call, "batch_size",
		                         "must not be negative");
	if (st->keys.n == 0)
		return pl_call_error(call, PL_FAILED_PRECONDITION,
		                     "no credentials key is configured");
	if (c.batch == 0 || c.batch > 500)
		c.batch = in->batch_size == 0 ? 200 : 500;
	do {
		int64_t before = c.rotated;
		rv = pl_db_tx(pl_call_db(call), "*", rotate_tx, &c);
		if (rv != PL_OK || c.rotated == before)
			break;
	} while (in->batch_size == 0 && c.remaining > 0);
	if (rv != PL_OK)
		return rv;
	pl_info("re-encrypted %lld channel credentials under key %s",
	        (long long)c.rotated, st->keys.keys[0].id);
	out->key_id = st->keys.keys[0].id;
	out->rotated = c.rotated;
	out->remaining = c.remaining;
	return PL_OK;
}

// ---------------------------------------------------------------------------
// Tenants

typedef struct ten_ctx {
	pl_call *call;
	const void *in;
	void *out;
	const char *id;
	const char *a, *b, *c;
	const char *after;
	int limit;
	bool changed;
} ten_ctx;

static int
get_tenant_tx(pl_db *db, void *arg)
{
	ten_ctx *c = arg;
	return tenants_store_get_tenant(
	        c->call, db, c->id, false,
	        &((Parley__Tenants__V1__GetTenantResponse *)c->out)->tenant);
}

static int
get_tenant(pl_call *call, const void *vin, void *vout)
{
	const Parley__Tenants__V1__GetTenantRequest *in = vin;
	const pl_principal *p = call->principal;
	ten_ctx c = { .call = call, .out = vout };
	bool any = p->kind == Q(SERVICE) ||
	           (p->kind == Q(USER) && p->platform_admin);

	c.id = opt(in->id) ? in->id : caller_tenant(call);
	if (c.id == NULL)
		return pl_call_violation(call, "id", "is required");
	if (!pl_uuid_valid(c.id))
		return pl_call_violation(call, "id", "must be a UUID");
	if (!any && (caller_tenant(call) == NULL ||
	             strcmp(c.id, caller_tenant(call)) != 0))
		return pl_call_error(call, PL_NOT_FOUND, "tenant %s not found",
		                     c.id);
	return pl_db_tx(pl_call_db(call), c.id, get_tenant_tx, &c);
}

static int
update_tenant_tx(pl_db *db, void *arg)
{
	ten_ctx *c = arg;
	int rv;

	if ((rv = tenants_store_update_tenant(
	             c->call, db, c->id, c->a, c->b, c->c,
	             &((Parley__Tenants__V1__UpdateTenantResponse *)c->out)
	                      ->tenant)) != PL_OK ||
	    (rv = audit(c->call, db, c->id, "tenant.updated", "tenant", c->id,
	                NULL)) != PL_OK)
		return rv;
	pb_tenant *t =
	        ((Parley__Tenants__V1__UpdateTenantResponse *)c->out)->tenant;
	return emit(c->call, db, to_analytics, c->id, "tenant.updated",
	            jdump(c->call, json_pack("{s:s,s:s}", "name", t->name,
	                                     "time_zone", t->time_zone)),
	            NULL);
}

static int
update_tenant(pl_call *call, const void *vin, void *vout)
{
	const Parley__Tenants__V1__UpdateTenantRequest *in = vin;
	ten_ctx c = { .call = call,
		      .in = in,
		      .out = vout,
		      .id = call->principal->tenant_id };
	int rv = PL_OK;
	bool m_name = in->n_update_mask == 0 ? opt(in->name) != NULL : false,
	     m_tz = in->n_update_mask == 0 ? opt(in->time_zone) != NULL : false,
	     m_set = in->n_update_mask == 0
	                     ? in->settings && opt(in->settings->text)
	                     : false;

	for (size_t i = 0; i < in->n_update_mask; i++) {
		if (strcmp(in->update_mask[i], "name") == 0)
			m_name = true;
		else if (strcmp(in->update_mask[i], "time_zone") == 0)
			m_tz = true;
		else if (strcmp(in->update_mask[i], "settings") == 0)
			m_set = true;
		else
			return pl_call_violation(call, "update_mask",
			                         "unknown field \"%.64s\"",
			                         in->update_mask[i]);
	}
	if (m_name)
		rv |= check_field(call, "name",
		                  tenants_check_text(in->name, 200, true));
	if (m_tz)
		rv |= check_field(call, "time_zone",
		                  tenants_check_text(in->time_zone, 64, true));
	if (m_set) {
		const char *s = in->settings && opt(in->settings->text)
		                        ? in->settings->text
		                        : "{}";
		json_t *j = strlen(s) <= 65536 ? json_loads(s, 0, NULL) : NULL;
		if (!json_is_object(j))
			rv |= pl_call_violation(
			        call, "settings",
			        "must be a JSON object of at most 64 KiB");
		json_decref(j);
		c.c = s;
	}
	if (rv != PL_OK)
		return PL_INVALID_ARGUMENT;
	if (m_tz && tenants_store_check_time_zone(pl_call_db(call),
	                                          in->time_zone) != PL_OK)
		return pl_call_violation(call, "time_zone",
		                         "is not a known time zone");
	c.a = m_name ? in->name : NULL;
	c.b = m_tz ? in->time_zone : NULL;
	return pl_db_tx(pl_call_db(call), c.id, update_tenant_tx, &c);
}

static int
list_tenants_tx(pl_db *db, void *arg)
{
	ten_ctx *c = arg;
	Parley__Tenants__V1__ListTenantsResponse *out = c->out;
	int rv = tenants_store_list_tenants(c->call, db, c->a, c->b, c->after,
	                                    c->limit, &out->tenants,
	                                    &out->n_tenants);
	if (rv == PL_OK)
		out->next_page_token = page_out(
		        c->call, out->n_tenants, c->limit,
		        out->n_tenants ? out->tenants[out->n_tenants - 1]->id
		                       : NULL);
	return rv;
}

static int
list_tenants(pl_call *call, const void *vin, void *vout)
{
	const Parley__Tenants__V1__ListTenantsRequest *in = vin;
	ten_ctx c = { .call = call, .in = in, .out = vout };

	if ((int)in->status < 0 || (int)in->status > 2)
		return pl_call_violation(call, "status",
		                         "is not a tenant status");
	if (check_field(call, "query",
	                tenants_check_text(in->query, 200, false)) != PL_OK)
		return PL_INVALID_ARGUMENT;
	if (page_in(call, in->page, &c.limit, &c.after) != PL_OK)
		return PL_INVALID_ARGUMENT;
	c.a = in->status == 1 ? "active" : in->status == 2 ? "suspended" : NULL;
	c.b = opt(in->query) ? like_escape(call, in->query, true) : NULL;
	// Across tenants ("*"): the platform administrator's view.
	return pl_db_tx(pl_call_db(call), "*", list_tenants_tx, &c);
}

// Suspends (c->a = reason) or reactivates (c->a NULL) tenant c->id.
static int
tenant_status_tx(pl_db *db, void *arg)
{
	ten_ctx *c = arg;
	pb_tenant *t;
	bool sus = c->a != NULL;
	int rv;

	if ((rv = tenants_store_set_tenant_status(c->call, db, c->id, sus,
	                                          sus ? c->a : c->b, &t,
	                                          &c->changed)) != PL_OK)
		return rv;
	if (c->out != NULL)
		((Parley__Tenants__V1__SuspendTenantResponse *)c->out)->tenant =
		        t;
	if (!c->changed)
		return PL_OK;
	if ((rv = audit(c->call, db, c->id,
	                sus ? "tenant.suspended" : "tenant.reactivated",
	                "tenant", c->id,
	                sus ? jdump(c->call, json_pack("{s:s}", "reason", c->a))
	                    : NULL)) != PL_OK)
		return rv;
	return emit(c->call, db, to_analytics, c->id,
	            sus ? "tenant.suspended" : "tenant.reactivated",
	            sus ? jdump(c->call, json_pack("{s:s}", "reason", c->a))
	                : NULL,
	            NULL);
}

static int
tenant_status(pl_call *call, const char *id, const char *reason, void *out)
{
	ten_ctx c = { .call = call, .out = out, .id = id, .a = reason };
	int rv;

	if (check_id(call, "id", id) != PL_OK)
		return PL_INVALID_ARGUMENT;
	rv = pl_db_tx(pl_call_db(call), id, tenant_status_tx, &c);
	if (rv == PL_OK && c.changed)
		tenants_cache_drop_tenant(state(call)->cache, id, NULL);
	return rv;
}

static int
suspend_tenant(pl_call *call, const void *vin, void *vout)
{
	const Parley__Tenants__V1__SuspendTenantRequest *in = vin;
	if (check_field(call, "reason",
	                tenants_check_text(in->reason, 200, false)) != PL_OK)
		return PL_INVALID_ARGUMENT;
	return tenant_status(call, in->id,
	                     opt(in->reason) ? in->reason : "admin", vout);
}

static int
reactivate_tenant(pl_call *call, const void *vin, void *vout)
{
	const Parley__Tenants__V1__ReactivateTenantRequest *in = vin;
	return tenant_status(call, in->id, NULL, vout);
}

static int
list_audit_tx(pl_db *db, void *arg)
{
	ten_ctx *c = arg;
	const Parley__Tenants__V1__ListAuditLogRequest *in = c->in;
	Parley__Tenants__V1__ListAuditLogResponse *out = c->out;
	int rv = tenants_store_list_audit(
	        c->call, db, c->id, c->a, c->b, opt(in->actor_user_id),
	        opt(in->resource_type), opt(in->resource_id), opt(in->start_at),
	        opt(in->end_at), c->after, c->limit, &out->entries,
	        &out->n_entries);
	if (rv == PL_OK)
		out->next_page_token = page_out(
		        c->call, out->n_entries, c->limit,
		        out->n_entries ? out->entries[out->n_entries - 1]->id
		                       : NULL);
	return rv;
}

static int
list_audit_log(pl_call *call, const void *vin, void *vout)
{
	const Parley__Tenants__V1__ListAuditLogRequest *in = vin;
	ten_ctx c = { .call = call,
		      .in = in,
		      .out = vout,
		      .id = call->principal->tenant_id };
	int rv = PL_OK;

	rv |= check_field(call, "action",
	                  tenants_check_text(in->action, 100, false));
	if (opt(in->actor_user_id) && !pl_uuid_valid(in->actor_user_id))
		rv |= pl_call_violation(call, "actor_user_id",
		                        "must be a UUID");
	rv |= check_field(call, "resource_type",
	                  tenants_check_text(in->resource_type, 100, false));
	rv |= check_field(call, "resource_id",
	                  tenants_check_text(in->resource_id, 100, false));
	if (opt(in->start_at))
		rv |= check_field(call, "start_at",
		                  tenants_check_timestamp(in->start_at));
	if (opt(in->end_at))
		rv |= check_field(call, "end_at",
		                  tenants_check_timestamp(in->end_at));
	if (rv != PL_OK || page_in(call, in->page, &c.limit, &c.after) != PL_OK)
		return PL_INVALID_ARGUMENT;
	if (opt(in->action)) {
		size_t n = strlen(in->action);
		if (in->action[n - 1] == '.')
			c.b = like_escape(call, in->action, false);
		else
			c.a = in->action;
	}
	return pl_db_tx(pl_call_db(call), c.id, list_audit_tx, &c);
}

// ---------------------------------------------------------------------------
// DeliverEvents

typedef struct ev_ctx {
	pl_call *call;
	const Parley__Tenants__V1__DeliverEventsRequest *in;
	Parley__Tenants__V1__DeliverEventsResponse *out;
	char **touched; // tenants whose status changed
	size_t n_touched;
} ev_ctx;

static bool
is_type(const char *t, const char *a)
{
	return strcmp(t, a) == 0;
}

// What a status_changed event says the status is now ("" when unknown).
static const char *
payload_status(pl_call *call, const Parley__Rpc__V1__Event *e)
{
	json_t *j;
	const char *s;
	char *r;

	if (e->payload == NULL || !opt(e->payload->text))
		return "";
	j = json_loads(e->payload->text, 0, NULL);
	s = json_string_value(json_object_get(j, "status"));
	r = pl_arena_strdup(call->arena, s ? s : "");
	json_decref(j);
	return r;
}

// Runs with the tenant "*": one batch holds events of many tenants.
static int
events_tx(pl_db *db, void *arg)
{
	ev_ctx *c = arg;
	int rv;

	c->out->accepted = c->out->duplicates = c->out->ignored = 0;
	c->n_touched = 0;
	for (size_t i = 0; i < c->in->n_events; i++) {
		const Parley__Rpc__V1__Event *e = c->in->events[i];
		bool fresh, suspend, reactivate;
		ten_ctx t = { .call = c->call, .id = e->tenant_id };

		if ((rv = tenants_store_event_seen(c->call, db, e->tenant_id,
		                                   e->id, e->type, &fresh)) !=
		    PL_OK)
			return rv;
		if (!fresh) {
			c->out->duplicates++;
			continue;
		}
		suspend = is_type(e->type, "subscription.grace_expired") ||
		          is_type(e->type, "subscription.past_due_expired");
		reactivate = is_type(e->type, "subscription.status_changed") &&
		             strcmp(payload_status(c->call, e), "active") == 0;
		if (!suspend && !reactivate) {
			c->out->ignored++;
			continue;
		}
		t.a = suspend ? "billing" : NULL;
		t.b = suspend ? NULL : "billing"; // only what billing suspended
		if ((rv = tenant_status_tx(db, &t)) == PL_NOT_FOUND) {
			c->out->ignored++; // a tenant this service never had
			continue;
		}
		if (rv != PL_OK)
			return rv;
		if (t.changed)
			c->touched[c->n_touched++] = e->tenant_id;
		c->out->accepted++;
	}
	return PL_OK;
}

static int
deliver_events(pl_call *call, const void *vin, void *vout)
{
	const Parley__Tenants__V1__DeliverEventsRequest *in = vin;
	ev_ctx c = { .call = call, .in = in, .out = vout };
	int rv;

	if (in->n_events > PL_OUTBOX_MAX_BATCH)
		return pl_call_violation(call, "events", "at most %d per batch",
		                         PL_OUTBOX_MAX_BATCH);
	for (size_t i = 0; i < in->n_events; i++) {
		const Parley__Rpc__V1__Event *e = in->events[i];
		char f[48];
		if (!pl_uuid_valid(e->id)) {
			snprintf(f, sizeof(f), "events[%zu].id", i);
			return pl_call_violation(call, f, "must be a UUID");
		}
		if (!pl_uuid_valid(e->tenant_id)) {
			snprintf(f, sizeof(f), "events[%zu].tenant_id", i);
			return pl_call_violation(call, f, "must be a UUID");
		}
		if (tenants_check_text(e->type, 100, true) != NULL) {
			snprintf(f, sizeof(f), "events[%zu].type", i);
			return pl_call_violation(
			        call, f,
			        "is required (at most 100 characters)");
		}
	}
	c.touched = pl_arena_alloc(call->arena,
	                           (in->n_events + 1) * sizeof(char *));
	rv = pl_db_tx(pl_call_db(call), "*", events_tx, &c);
	for (size_t i = 0; rv == PL_OK && i < c.n_touched; i++)
		tenants_cache_drop_tenant(state(call)->cache, c.touched[i],
		                          NULL);
	return rv;
}

// ---------------------------------------------------------------------------
// THE handler table: who may call what (proto/README.md "Who may call
// what"). This is the permission matrix; the runtime enforces it before
// any handler runs, and tests/unit/test_tenants_table.c checks it against
// the proto's access comments.

static const pl_rpc_method tenants_methods[] = {
	{ "SignUp", signup, PL_CALLER_PUBLIC, NULL, 0 },
	{ "Login", login, PL_CALLER_PUBLIC, NULL, 0 },
	{ "Logout", logout, PL_ROLE_VIEWER, NULL, 0 },
	{ "Authenticate", authenticate, PL_CALLER_SERVICE, NULL, 0 },
	{ "GetMe", get_me, PL_ROLE_VIEWER, NULL, 0 },
	{ "ChangePassword", change_password, PL_ROLE_VIEWER, NULL, 0 },
	{ "CreateApiKey", create_api_key, PL_ROLE_ADMIN, NULL, 0 },
	{ "ListApiKeys", list_api_keys, PL_ROLE_ADMIN, NULL, 0 },
	{ "RevokeApiKey", revoke_api_key, PL_ROLE_ADMIN, NULL, 0 },
	{ "AddMember", add_member, PL_ROLE_OWNER, NULL, 0 },
	{ "SetRole", set_role, PL_ROLE_OWNER, NULL, 0 },
	{ "RemoveMember", remove_member, PL_ROLE_OWNER, NULL, 0 },
	{ "ListMembers", list_members, PL_ROLE_VIEWER, "members:read", 0 },
	{ "CreateChannel", create_channel, PL_ROLE_ADMIN, "channels:write", 0 },
	{ "UpdateChannel", update_channel, PL_ROLE_ADMIN, "channels:write", 0 },
	{ "ListChannels", list_channels, PL_ROLE_VIEWER, "channels:read", 0 },
	{ "GetChannel", get_channel, PL_ROLE_VIEWER, "channels:read", 0 },
	{ "DisableChannel", disable_channel, PL_ROLE_ADMIN, "channels:write",
	  0 },
	{ "EnableChannel", enable_channel, PL_ROLE_ADMIN, "channels:write", 0 },
	{ "ResolveChannel", resolve_channel, PL_CALLER_SERVICE, NULL, 0 },
	{ "GetChannelSecrets", get_channel_secrets, PL_CALLER_SERVICE, NULL,
	  0 },
	{ "RotateChannelKeys", rotate_channel_keys, PL_PLATFORM_ADMIN, NULL,
	  0 },
	{ "GetTenant", get_tenant, PL_ROLE_VIEWER, "tenant:read", 0 },
	{ "UpdateTenant", update_tenant, PL_ROLE_ADMIN, "tenant:write", 0 },
	{ "ListTenants", list_tenants, PL_PLATFORM_ADMIN, NULL, 0 },
	{ "SuspendTenant", suspend_tenant, PL_PLATFORM_ADMIN, NULL, 0 },
	{ "ReactivateTenant", reactivate_tenant, PL_PLATFORM_ADMIN, NULL, 0 },
	{ "ListAuditLog", list_audit_log, PL_ROLE_ADMIN, "audit:read", 0 },
	{ "DeliverEvents", deliver_events, PL_CALLER_SERVICE, NULL, 0 },
	{ NULL, NULL, 0, NULL, 0 },
};

const pl_rpc_service tenants_rpc_service = {
	&parley__tenants__v1__tenants__descriptor,
	tenants_methods,
};

static const pl_rpc_service *const tenants_services[] = {
	&tenants_rpc_service,
	NULL,
};

// ---------------------------------------------------------------------------
// Configuration and life cycle

static char *cfg_key, *cfg_key_id, *cfg_old_keys, *cfg_public_url;
static char *cfg_billing_url, *cfg_analytics_url, *cfg_admins;
static int64_t cfg_session_ttl, cfg_cache_ttl, cfg_pw_ops, cfg_pw_mem;
static int64_t cfg_cache_stale, cfg_poll;
static int64_t cfg_max_failures, cfg_window, cfg_cache_max;

static const pl_cfg_entry tenants_cfg[] = {
	{ "PARLEY_CREDENTIALS_KEY", PL_CFG_SECRET, "", 0, 0, &cfg_key,
	  "base64 of the 32-byte key sealing channel credentials" },
	{ "PARLEY_CREDENTIALS_KEY_ID", PL_CFG_STRING, "k1", 0, 0, &cfg_key_id,
	  "id of PARLEY_CREDENTIALS_KEY, stored with what it seals" },
	{ "PARLEY_CREDENTIALS_OLD_KEYS", PL_CFG_SECRET, "", 0, 0, &cfg_old_keys,
	  "older keys that still decrypt: id:base64,id:base64" },
	{ "PARLEY_PUBLIC_URL", PL_CFG_STRING, "http://localhost:8080", 0, 0,
	  &cfg_public_url,
	  "the gateway's public URL (webhook and widget URLs)" },
	{ "PARLEY_BILLING_URL", PL_CFG_STRING, "", 0, 0, &cfg_billing_url,
	  "billing's RPC address for tenant.created (empty: off)" },
	{ "PARLEY_ANALYTICS_URL", PL_CFG_STRING, "", 0, 0, &cfg_analytics_url,
	  "analytics' RPC address for events (empty: off)" },
	{ "PARLEY_PLATFORM_ADMIN_EMAILS", PL_CFG_STRING, "", 0, 0, &cfg_admins,
	  "emails of platform administrators, comma-separated" },
	{ "PARLEY_TENANTS_SESSION_TTL", PL_CFG_DURATION, "168h", 60000,
	  INT64_C(31536000000), &cfg_session_ttl,
	  "lifetime of a login session" },
	{ "PARLEY_TENANTS_AUTH_CACHE_TTL", PL_CFG_DURATION, "5m", 0,
	  TENANTS_CACHE_TTL_MAX, &cfg_cache_ttl,
	  "how long this process keeps an Authenticate answer (0: no cache)" },
	{ "PARLEY_TENANTS_AUTH_CACHE_STALE", PL_CFG_DURATION, "800ms", 0, 1000,
	  &cfg_cache_stale,
	  "the cache answers only while the change feed was read within this "
	  "(0: no cache); callers may keep answers 1s minus this" },
	{ "PARLEY_TENANTS_AUTH_POLL", PL_CFG_DURATION, "200ms", 10, 1000,
	  &cfg_poll,
	  "how often the change feed is read (less than the STALE bound)" },
	{ "PARLEY_TENANTS_AUTH_CACHE_MAX", PL_CFG_INT, "200000", 0, 10000000,
	  &cfg_cache_max, "entries of the Authenticate cache" },
	{ "PARLEY_TENANTS_PWHASH_OPSLIMIT", PL_CFG_INT, "2", 1, 20, &cfg_pw_ops,
	  "argon2id passes" },
	{ "PARLEY_TENANTS_PWHASH_MEMLIMIT", PL_CFG_INT, "67108864", 8192,
	  INT64_C(4294967296), &cfg_pw_mem, "argon2id memory in bytes" },
	{ "PARLEY_TENANTS_LOGIN_MAX_FAILURES", PL_CFG_INT, "5", 1, 1000,
	  &cfg_max_failures,
	  "failed logins per (email, source) in the window" },
	{ "PARLEY_TENANTS_LOGIN_WINDOW", PL_CFG_DURATION, "15m", 1000,
	  INT64_C(86400000), &cfg_window, "login throttling window" },
	{ NULL, 0, NULL, 0, 0, NULL, NULL },
};

static void tenants_fini(void *arg);

static int
tenants_init(const pl_service_cfg *cfg, void **arg)
{
	tenants_state *st = calloc(1, sizeof(*st));
	char err[256], pw[33];
	uint8_t rnd[16];

	if (st == NULL)
		return PL_RESOURCE_EXHAUSTED;
	*arg = st;
	if (tenants_keyring_load(&st->keys, cfg_key, cfg_key_id, cfg_old_keys,
	                         err, sizeof(err)) != 0) {
		pl_error("PARLEY_CREDENTIALS_KEY: %s", err);
		goto out_fail;
	}
	if (st->keys.n == 0)
		pl_warn("PARLEY_CREDENTIALS_KEY is not set: channels with "
		        "credentials cannot be created");
	st->public_url = strdup(cfg_public_url);
	st->admin_emails = strdup(cfg_admins);
	st->database_url = strdup(cfg->database_url ? cfg->database_url : "");
	if (st->public_url == NULL || st->admin_emails == NULL ||
	    st->database_url == NULL)
		goto out_fail;
	size_t ul = strlen(st->public_url);
	while (ul > 0 && st->public_url[ul - 1] == '/')
		st->public_url[--ul] = '\0';
	st->pw_ops = (unsigned long long)cfg_pw_ops;
	st->pw_mem = (size_t)cfg_pw_mem;
	st->session_ttl_ms = cfg_session_ttl;
	st->cache_ttl_ms = cfg_cache_ttl;
	st->cache_stale_ms = cfg_cache_stale;
	st->poll_ms = cfg_poll;
	st->caller_ttl_ms = (int32_t)(1000 - cfg_cache_stale);
	if (cfg_cache_stale > 0 && cfg_poll >= cfg_cache_stale) {
		pl_error("PARLEY_TENANTS_AUTH_POLL (%lld ms) must be below "
		         "PARLEY_TENANTS_AUTH_CACHE_STALE (%lld ms)",
		         (long long)cfg_poll, (long long)cfg_cache_stale);
		goto out_fail;
	}
	st->login_max_failures = cfg_max_failures;
	st->login_window_ms = cfg_window;
	st->cache = tenants_cache_new((size_t)cfg_cache_max, cfg_cache_ttl,
	                              cfg_cache_stale);
	if (st->cache == NULL)
		goto out_fail;
	// The dummy hash that unknown emails are verified against: same
	// parameters as real ones, so both take the same time.
	randombytes_buf(rnd, sizeof(rnd));
	sodium_bin2hex(pw, sizeof(pw), rnd, sizeof(rnd));
	if (tenants_password_hash(st, pw, st->dummy_hash) != PL_OK)
		goto out_fail;
	pl_rpc_client_config cc = { .secret = cfg->secret,
		                    .service = "tenants" };
	if (cfg_billing_url[0] != '\0') {
		cc.urls = cfg_billing_url;
		if (pl_rpc_client_open(&st->billing, &cc) != PL_OK)
			goto out_fail;
	} else
		pl_info("PARLEY_BILLING_URL is not set: tenant.created waits "
		        "in the outbox");
	if (cfg_analytics_url[0] != '\0') {
		cc.urls = cfg_analytics_url;
		if (pl_rpc_client_open(&st->analytics, &cc) != PL_OK)
			goto out_fail;
	} else
		pl_info("PARLEY_ANALYTICS_URL is not set: events wait in the "
		        "outbox");
	return PL_OK;
out_fail:
	tenants_fini(st);
	*arg = NULL;
	return PL_INVALID_ARGUMENT;
}

static pl_outbox_route routes[3];

static int
tenants_start(void *arg)
{
	tenants_state *st = arg;
	int n = 0, rv;

	// The Authenticate cache's change feed (feed.c), its own connection.
	if (st->feed == NULL && st->cache_ttl_ms > 0 &&
	    st->cache_stale_ms > 0 &&
	    (rv = tenants_feed_start(&st->feed, st->database_url, st->cache,
	                             st->poll_ms)) != PL_OK)
		return rv;
	if (st->billing != NULL)
		routes[n++] = (pl_outbox_route){
			"billing", st->billing,
			"/parley.billing.v1.Billing/DeliverEvents"
		};
	if (st->analytics != NULL)
		routes[n++] = (pl_outbox_route){
			"analytics", st->analytics,
			"/parley.analytics.v1.Analytics/Track"
		};
	routes[n] = (pl_outbox_route){ NULL, NULL, NULL };
	if (n == 0)
		return PL_OK;
	pl_outbox_relay_config rc = { .database_url = st->database_url,
		                      .schema = "tenants",
		                      .source = "tenants",
		                      .routes = routes };
	return pl_outbox_relay_start(&st->relay, &rc);
}

static void
tenants_stop(void *arg)
{
	tenants_state *st = arg;
	if (st != NULL && st->relay != NULL) {
		pl_outbox_relay_stop(st->relay);
		st->relay = NULL;
	}
	if (st != NULL && st->feed != NULL) {
		tenants_feed_stop(st->feed);
		st->feed = NULL;
	}
}

static void
tenants_fini(void *arg)
{
	tenants_state *st = arg;
	if (st == NULL)
		return;
	tenants_stop(st);
	if (st->billing)
		pl_rpc_client_close(st->billing);
	if (st->analytics)
		pl_rpc_client_close(st->analytics);
	tenants_cache_free(st->cache);
	tenants_keyring_wipe(&st->keys);
	free(st->public_url);
	free(st->admin_emails);
	free(st->database_url);
	free(st);
}

const pl_service_def tenants_service_def = {
	.name = "tenants",
	.schema = "tenants",
	.services = tenants_services,
	.migrations = tenants_migrations,
	// A constant here (tenants_n_migrations is not one in C);
	// test_tenants_table checks the two agree.
	.n_migrations = TENANTS_N_MIGRATIONS,
	.default_listen = "tcp://127.0.0.1:7101",
	.default_ops_port = 9101,
	.cfg = tenants_cfg,
	.init = tenants_init,
	.start = tenants_start,
	.stop = tenants_stop,
	.fini = tenants_fini,
};
