// Every SQL statement of the tenants service, with parameters only, and
// the conversion of its rows into the contract's messages. Statements on
// tenant tables run inside pl_db_tx (handlers.c), which sets the tenant for
// row-level security; each still names its tenant explicitly.
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "pl/id.h"
#include "pl/log.h"
#include "store.h"

#define TS(x)                                                                  \
	"coalesce(to_char(" x " AT TIME ZONE 'UTC', "                          \
	"'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), '')"

#define TENANT_COLS                                                            \
	"t.id, t.name, t.slug, t.status, t.time_zone, t.settings::text, " TS(  \
	        "t.suspended_at") ", coalesce(t.suspend_reason, ''), " TS("t." \
	                                                                  "cr" \
	                                                                  "ea" \
	                                                                  "te" \
	                                                                  "d_" \
	                                                                  "a"  \
	                                                                  "t") ", " TS("t.updated_at")

#define USER_COLS                                                              \
	"u.id, u.email, u.full_name, u.is_active, u.platform_admin, " TS(      \
	        "u.last_login_at") ", " TS("u.created_at") ", u.password_hash"

#define MEMBER_COLS                                                            \
	"u.id, u.email, u.full_name, m.role, u.is_active, " TS(                \
	        "u.last_login_at") ", " TS("m.created_at")

#define KEY_COLS                                                               \
	"k.id, k.name, k.prefix, array_to_string(k.scopes, ','), k.role, " TS( \
	        "k.expires_at") ", k.rate_limit_per_minute, "                  \
	                        "coalesce(k.created_by_user_id::text, "        \
	                        "''), " TS("k.created_at") ", " TS(            \
	                                "k.last_used_at") ", " TS("k.revoked_" \
	                                                          "at") ", "   \
	                                                                "enco" \
	                                                                "de("  \
	                                                                "k."   \
	                                                                "key_" \
	                                                                "hash" \
	                                                                ", "   \
	                                                                "'hex" \
	                                                                "')"

#define CHANNEL_COLS                                                                                                  \
	"c.id, c.type, c.name, c.status, coalesce(c.agent_id::text, ''), "                                            \
	"c.routing_key, coalesce(c.phone_number_id, ''), "                                                            \
	"coalesce(c.display_phone_number, ''), "                                                                      \
	"coalesce(c.sender_number, ''), coalesce(c.api_base_url, ''), "                                               \
	"array_to_json(c.allowed_origins)::text, c.send_rate_per_second, "                                            \
	"c.credentials IS NOT NULL, c.settings::text, " TS("c.disabled_at") ", coalesce(c.disabled_reason, ''), " TS( \
	        "c.created_at") ", " TS("c.updated_at") ", c.tenant_id, "                                             \
	                                                "coalesce(encode(c."                                          \
	                                                "credentials, "                                               \
	                                                "'base64'), ''), "                                            \
	                                                "coalesce(c."                                                 \
	                                                "credentials_key_id, "                                        \
	                                                "''), t.status"

#define AUDIT_COLS                                                             \
	"a.tenant_id, a.id, a.action, coalesce(a.actor_user_id::text, ''), "   \
	"coalesce(a.actor_api_key_id::text, ''), "                             \
	"coalesce(a.actor_service, ''), coalesce(a.resource_type, ''), "       \
	"coalesce(a.resource_id, ''), coalesce(a.source_ip, ''), "             \
	"coalesce(a.user_agent, ''), a.details::text, " TS("a.created_at")

// Runs one statement; on failure sets the call's error (what names the
// operation) and returns NULL with *rv set.
static PGresult *
run(pl_call *call, pl_db *db, const char *what, const char *sql, int n,
    const char *const *p, int *rv)
{
	PGresult *r = pl_db_exec(db, sql, n, p);
	int s = pl_db_result_status(r);

	if (s != PL_OK) {
		*rv = pl_db_call_error(call, r, what);
		if (r != NULL)
			PQclear(r);
		return NULL;
	}
	*rv = PL_OK;
	return r;
}

static char *
col(pl_call *call, const PGresult *r, int row, int c)
{
	if (PQgetisnull(r, row, c))
		return (char *)protobuf_c_empty_string;
	return pl_arena_strdup(call->arena, PQgetvalue(r, row, c));
}

static bool
colb(const PGresult *r, int row, int c)
{
	return PQgetvalue(r, row, c)[0] == 't';
}

static pb_json *
colj(pl_call *call, const PGresult *r, int row, int c)
{
	pb_json *j = pl_arena_alloc(call->arena, sizeof(*j));
	parley__rpc__v1__json__init(j);
	j->text = col(call, r, row, c);
	return j;
}

static int
status_of(const char *s)
{
	return strcmp(s, "suspended") == 0
	               ? PARLEY__TENANTS__V1__TENANT_STATUS__TENANT_STATUS_SUSPENDED
	               : PARLEY__TENANTS__V1__TENANT_STATUS__TENANT_STATUS_ACTIVE;
}

const char *const tenants_channel_type_names[] = { NULL, "whatsapp_cloud",
	                                           "infobip", "webchat" };

static int
channel_type_of(const char *s)
{
	for (int i = 1; i <= 3; i++)
		if (strcmp(s, tenants_channel_type_names[i]) == 0)
			return i;
	return 0;
}

// Splits "a,b,c" into an arena array.
static char **
split(pl_call *call, const char *s, size_t *n)
{
	size_t cnt = 0, i = 0;
	char *copy, *tok, *save = NULL;
	char **v;

	*n = 0;
	if (s == NULL || s[0] == '\0')
		return NULL;
	for (const char *p = s; *p; p++)
		cnt += *p == ',';
	cnt++;
	v = pl_arena_alloc(call->arena, cnt * sizeof(char *));
	copy = pl_arena_strdup(call->arena, s);
	if (v == NULL || copy == NULL)
		return NULL;
	for (tok = strtok_r(copy, ",", &save); tok && i < cnt;
	     tok = strtok_r(NULL, ",", &save))
		v[i++] = tok;
	*n = i;
	return v;
}

static pb_tenant *
tenant_row(pl_call *call, const PGresult *r, int i)
{
	pb_tenant *t = pl_arena_alloc(call->arena, sizeof(*t));
	parley__tenants__v1__tenant__init(t);
	t->id = col(call, r, i, 0);
	t->name = col(call, r, i, 1);
	t->slug = col(call, r, i, 2);
	t->status = status_of(PQgetvalue(r, i, 3));
	t->time_zone = col(call, r, i, 4);
	t->settings = colj(call, r, i, 5);
	t->suspended_at = col(call, r, i, 6);
	t->suspend_reason = col(call, r, i, 7);
	t->created_at = col(call, r, i, 8);
	t->updated_at = col(call, r, i, 9);
	return t;
}

static pb_user *
user_row(pl_call *call, const PGresult *r, int i, char **hash)
{
	pb_user *u = pl_arena_alloc(call->arena, sizeof(*u));
	parley__tenants__v1__user__init(u);
	u->id = col(call, r, i, 0);
	u->email = col(call, r, i, 1);
	u->full_name = col(call, r, i, 2);
	u->is_active = colb(r, i, 3);
	u->platform_admin = colb(r, i, 4);
	u->last_login_at = col(call, r, i, 5);
	u->created_at = col(call, r, i, 6);
	if (hash != NULL)
		*hash = col(call, r, i, 7);
	return u;
}

static pb_member *
member_row(pl_call *call, const PGresult *r, int i)
{
	pb_member *m = pl_arena_alloc(call->arena, sizeof(*m));
	parley__tenants__v1__member__init(m);
	m->user_id = col(call, r, i, 0);
	m->email = col(call, r, i, 1);
	m->full_name = col(call, r, i, 2);
	m->role = tenants_role_parse(PQgetvalue(r, i, 3));
	m->is_active = colb(r, i, 4);
	m->last_login_at = col(call, r, i, 5);
	m->created_at = col(call, r, i, 6);
	return m;
}

static pb_api_key *
key_row(pl_call *call, const PGresult *r, int i, char **hash_hex)
{
	pb_api_key *k = pl_arena_alloc(call->arena, sizeof(*k));
	parley__tenants__v1__api_key__init(k);
	k->id = col(call, r, i, 0);
	k->name = col(call, r, i, 1);
	k->prefix = col(call, r, i, 2);
	k->scopes = split(call, PQgetvalue(r, i, 3), &k->n_scopes);
	k->role = tenants_role_parse(PQgetvalue(r, i, 4));
	k->expires_at = col(call, r, i, 5);
	k->rate_limit_per_minute = atoi(PQgetvalue(r, i, 6));
	k->created_by_user_id = col(call, r, i, 7);
	k->created_at = col(call, r, i, 8);
	k->last_used_at = col(call, r, i, 9);
	k->revoked_at = col(call, r, i, 10);
	if (hash_hex != NULL)
		*hash_hex = col(call, r, i, 11);
	return k;
}

static void
channel_row(pl_call *call, const PGresult *r, int i, tenants_channel_row *o)
{
	pb_channel *c = pl_arena_alloc(call->arena, sizeof(*c));
	json_t *arr;
	const char *b64;

	parley__tenants__v1__channel__init(c);
	memset(o, 0, sizeof(*o));
	c->id = col(call, r, i, 0);
	c->type = channel_type_of(PQgetvalue(r, i, 1));
	c->name = col(call, r, i, 2);
	c->status =
	        strcmp(PQgetvalue(r, i, 3), "disabled") == 0
	                ? PARLEY__TENANTS__V1__CHANNEL_STATUS__CHANNEL_STATUS_DISABLED
	                : PARLEY__TENANTS__V1__CHANNEL_STATUS__CHANNEL_STATUS_ACTIVE;
	c->agent_id = col(call, r, i, 4);
	c->routing_key = col(call, r, i, 5);
	c->phone_number_id = col(call, r, i, 6);
	c->display_phone_number = col(call, r, i, 7);
	c->sender_number = col(call, r, i, 8);
	c->api_base_url = col(call, r, i, 9);
	arr = json_loads(PQgetvalue(r, i, 10), 0, NULL);
	if (json_is_array(arr) && json_array_size(arr) > 0) {
		c->n_allowed_origins = json_array_size(arr);
		c->allowed_origins = pl_arena_alloc(
		        call->arena, c->n_allowed_origins * sizeof(char *));
		for (size_t k = 0; k < c->n_allowed_origins; k++)
			c->allowed_origins[k] = pl_arena_strdup(
			        call->arena,
			        json_string_value(json_array_get(arr, k))
			                ? json_string_value(
			                          json_array_get(arr, k))
			                : "");
	}
	json_decref(arr);
	c->send_rate_per_second = atoi(PQgetvalue(r, i, 11));
	c->credentials_set = colb(r, i, 12);
	c->settings = colj(call, r, i, 13);
	c->disabled_at = col(call, r, i, 14);
	c->disabled_reason = col(call, r, i, 15);
	c->created_at = col(call, r, i, 16);
	c->updated_at = col(call, r, i, 17);
	o->ch = c;
	o->tenant_id = col(call, r, i, 18);
	b64 = PQgetvalue(r, i, 19);
	if (b64[0] != '\0') {
		size_t cap = strlen(b64), n = 0;
		o->creds = pl_arena_alloc(call->arena, cap);
		if (o->creds != NULL &&
		    sodium_base642bin(o->creds, cap, b64, cap, "\n", &n, NULL,
		                      sodium_base64_VARIANT_ORIGINAL) == 0)
			o->creds_len = n;
	}
	o->key_id = col(call, r, i, 20);
	o->suspended = strcmp(PQgetvalue(r, i, 21), "suspended") == 0;
}

static pb_audit *
audit_row(pl_call *call, const PGresult *r, int i)
{
	pb_audit *a = pl_arena_alloc(call->arena, sizeof(*a));
	parley__tenants__v1__audit_entry__init(a);
	a->tenant_id = strcmp(PQgetvalue(r, i, 0), TENANTS_NIL_UUID) == 0
	                       ? (char *)protobuf_c_empty_string
	                       : col(call, r, i, 0);
	a->id = col(call, r, i, 1);
	a->action = col(call, r, i, 2);
	a->actor_user_id = col(call, r, i, 3);
	a->actor_api_key_id = col(call, r, i, 4);
	a->actor_service = col(call, r, i, 5);
	a->resource_type = col(call, r, i, 6);
	a->resource_id = col(call, r, i, 7);
	a->source_ip = col(call, r, i, 8);
	a->user_agent = col(call, r, i, 9);
	a->details = colj(call, r, i, 10);
	a->created_at = col(call, r, i, 11);
	return a;
}

// Hex text of bytes as bytea input ("\x..."), in the arena.
char *
tenants_store_bytea(pl_call *call, const uint8_t *b, size_t n)
{
	char *s = pl_arena_alloc(call->arena, 2 * n + 3);
	if (s == NULL)
		return NULL;
	s[0] = '\\';
	s[1] = 'x';
	sodium_bin2hex(s + 2, 2 * n + 1, b, n);
	return s;
}

// ---------------------------------------------------------------------------
// Tenants

int
tenants_store_insert_tenant(pl_call *call, pl_db *db, const char *id,
                            const char *name, const char *slug, const char *tz,
                            bool *inserted)
{
	const char *p[] = { id, name, slug, tz };
	int rv;
	PGresult *r =
	        run(call, db, "create tenant",
	            "INSERT INTO tenants.tenants (id, name, slug, time_zone) "
	            "VALUES ($1, $2, $3, $4) ON CONFLICT (slug) DO NOTHING "
	            "RETURNING id",
	            4, p, &rv);
	if (r == NULL)
		return rv;
	*inserted = PQntuples(r) == 1;
	PQclear(r);
	return PL_OK;
}

int
tenants_store_get_tenant(pl_call *call, pl_db *db, const char *id,
                         bool for_update, pb_tenant **out)
{
	const char *p[] = { id };
	int rv;
	PGresult *r = run(
	        call, db, "get tenant",
	        for_update
	                ? "SELECT " TENANT_COLS
	                  " FROM tenants.tenants t WHERE t.id = $1 FOR UPDATE"
	                : "SELECT " TENANT_COLS
	                  " FROM tenants.tenants t WHERE t.id = $1",
	        1, p, &rv);
	if (r == NULL)
		return rv;
	if (PQntuples(r) == 0)
		rv = pl_call_error(call, PL_NOT_FOUND, "tenant %s not found",
		                   id);
	else if (out != NULL)
		*out = tenant_row(call, r, 0);
	PQclear(r);
	return rv;
}

int
tenants_store_update_tenant(pl_call *call, pl_db *db, const char *id,
                            const char *name, const char *tz,
                            const char *settings, pb_tenant **out)
{
	const char *p[] = { id, name, tz, settings };
	int rv;
	PGresult *r = run(
	        call, db, "update tenant",
	        "UPDATE tenants.tenants t SET name = coalesce($2, name), "
	        "time_zone = coalesce($3, time_zone), "
	        "settings = coalesce($4::jsonb, settings), updated_at = now() "
	        "WHERE t.id = $1 RETURNING " TENANT_COLS,
	        4, p, &rv);
	if (r == NULL)
		return rv;
	if (PQntuples(r) == 0)
		rv = pl_call_error(call, PL_NOT_FOUND, "tenant %s not found",
		                   id);
	else
		*out = tenant_row(call, r, 0);
	PQclear(r);
	return rv;
}

int
tenants_store_set_tenant_status(pl_call *call, pl_db *db, const char *id,
                                bool suspend, const char *reason,
                                pb_tenant **out, bool *changed)
{
	const char *p[] = { id, reason };
	int rv;
	PGresult *r;

	*changed = false;
	r = run(call, db, "change tenant status",
	        suspend ? "UPDATE tenants.tenants t SET status = 'suspended', "
	                  "suspended_at = now(), suspend_reason = $2, "
	                  "updated_at = now() WHERE t.id = $1 AND "
	                  "t.status = 'active' RETURNING t.id"
	                : "UPDATE tenants.tenants t SET status = 'active', "
	                  "suspended_at = NULL, suspend_reason = NULL, "
	                  "updated_at = now() WHERE t.id = $1 AND "
	                  "t.status = 'suspended' AND ($2::text IS NULL OR "
	                  "t.suspend_reason = $2) RETURNING t.id",
	        2, p, &rv);
	if (r == NULL)
		return rv;
	*changed = PQntuples(r) == 1;
	PQclear(r);
	return out != NULL ? tenants_store_get_tenant(call, db, id, false, out)
	                   : PL_OK;
}

int
tenants_store_list_tenants(pl_call *call, pl_db *db, const char *status,
                           const char *query, const char *after, int limit,
                           pb_tenant ***out, size_t *n)
{
	char lim[16];
	const char *p[] = { status, query, after, lim };
	int rv;
	PGresult *r;

	snprintf(lim, sizeof(lim), "%d", limit);
	r = run(call, db, "list tenants",
	        "SELECT " TENANT_COLS " FROM tenants.tenants t "
	        "WHERE ($1::text IS NULL OR t.status = $1) AND ($2::text IS "
	        "NULL "
	        "OR lower(t.name) LIKE $2 || '%' OR t.slug LIKE $2 || '%') "
	        "AND ($3::uuid IS NULL OR t.id < $3) ORDER BY t.id DESC LIMIT "
	        "$4",
	        4, p, &rv);
	if (r == NULL)
		return rv;
	*n = (size_t)PQntuples(r);
	*out = pl_arena_alloc(call->arena, (*n + 1) * sizeof(pb_tenant *));
	for (size_t i = 0; i < *n; i++)
		(*out)[i] = tenant_row(call, r, (int)i);
	PQclear(r);
	return PL_OK;
}

// ---------------------------------------------------------------------------
// Users and memberships

int
tenants_store_insert_user(pl_call *call, pl_db *db, const char *id,
                          const char *email, const char *hash,
                          const char *full_name, bool admin)
{
	const char *p[] = { id, email, hash, full_name, admin ? "t" : "f" };
	int rv;
	PGresult *r =
	        run(call, db, "create user",
	            "INSERT INTO tenants.users (id, email, password_hash, "
	            "full_name, platform_admin) VALUES ($1, $2, $3, $4, $5)",
	            5, p, &rv);
	if (r != NULL)
		PQclear(r);
	if (rv == PL_ALREADY_EXISTS)
		return pl_call_error(call, PL_ALREADY_EXISTS,
		                     "a user with this email already exists");
	return rv;
}

int
tenants_store_get_user(pl_call *call, pl_db *db, const char *id,
                       const char *email, pb_user **out, char **hash)
{
	const char *p[] = { id ? id : email };
	int rv;
	PGresult *r = run(call, db, "get user",
	                  id ? "SELECT " USER_COLS
	                       " FROM tenants.users u WHERE u.id = $1"
	                     : "SELECT " USER_COLS " FROM tenants.users u "
	                       "WHERE lower(u.email) = lower($1)",
	                  1, p, &rv);
	if (r == NULL)
		return rv;
	if (PQntuples(r) == 0)
		rv = PL_NOT_FOUND; // the caller words it
	else
		*out = user_row(call, r, 0, hash);
	PQclear(r);
	return rv;
}

int
tenants_store_user_logged_in(pl_call *call, pl_db *db, const char *id,
                             bool make_admin)
{
	const char *p[] = { id, make_admin ? "t" : "f" };
	int rv;
	PGresult *r = run(call, db, "record login",
	                  "UPDATE tenants.users SET last_login_at = now(), "
	                  "platform_admin = platform_admin OR $2 WHERE id = $1",
	                  2, p, &rv);
	if (r != NULL)
		PQclear(r);
	return rv;
}

int
tenants_store_set_password(pl_call *call, pl_db *db, const char *id,
                           const char *hash)
{
	const char *p[] = { id, hash };
	int rv;
	PGresult *r = run(call, db, "change password",
	                  "UPDATE tenants.users SET password_hash = $2, "
	                  "updated_at = now() WHERE id = $1",
	                  2, p, &rv);
	if (r != NULL)
		PQclear(r);
	return rv;
}

int
tenants_store_insert_membership(pl_call *call, pl_db *db, const char *tenant_id,
                                const char *user_id, const char *role)
{
	const char *p[] = { tenant_id, user_id, role };
	int rv;
	PGresult *r = run(
	        call, db, "add member",
	        "INSERT INTO tenants.memberships (tenant_id, user_id, role) "
	        "VALUES ($1, $2, $3)",
	        3, p, &rv);
	if (r != NULL)
		PQclear(r);
	if (rv == PL_ALREADY_EXISTS)
		return pl_call_error(
		        call, PL_ALREADY_EXISTS,
		        "the user is already a member of this tenant");
	return rv;
}

// Every tenant of a user, oldest membership first (a cross-tenant read:
// run with the tenant "*").
int
tenants_store_memberships(pl_call *call, pl_db *db, const char *user_id,
                          pb_membership ***out, size_t *n)
{
	const char *p[] = { user_id };
	int rv;
	PGresult *r = run(
	        call, db, "list memberships",
	        "SELECT t.id, t.name, t.slug, m.role, " TS(
	                "m.created_at") ", t.status FROM tenants.memberships m "
	                                "JOIN tenants.tenants t "
	                                "ON t.id = m.tenant_id WHERE m.user_id "
	                                "= $1 "
	                                "ORDER BY m.created_at, t.id LIMIT "
	                                "1000",
	        1, p, &rv);
	if (r == NULL)
		return rv;
	*n = (size_t)PQntuples(r);
	*out = pl_arena_alloc(call->arena, (*n + 1) * sizeof(pb_membership *));
	for (size_t i = 0; i < *n; i++) {
		pb_membership *m = pl_arena_alloc(call->arena, sizeof(*m));
		parley__tenants__v1__membership__init(m);
		m->tenant_id = col(call, r, (int)i, 0);
		m->tenant_name = col(call, r, (int)i, 1);
		m->tenant_slug = col(call, r, (int)i, 2);
		m->role = tenants_role_parse(PQgetvalue(r, (int)i, 3));
		m->created_at = col(call, r, (int)i, 4);
		(*out)[i] = m;
	}
	PQclear(r);
	return PL_OK;
}

int
tenants_store_get_member(pl_call *call, pl_db *db, const char *tenant_id,
                         const char *user_id, pb_member **out)
{
	const char *p[] = { tenant_id, user_id };
	int rv;
	PGresult *r = run(call, db, "get member",
	                  "SELECT " MEMBER_COLS " FROM tenants.memberships m "
	                  "JOIN tenants.users u ON u.id = m.user_id "
	                  "WHERE m.tenant_id = $1 AND m.user_id = $2",
	                  2, p, &rv);
	if (r == NULL)
		return rv;
	if (PQntuples(r) == 0)
		rv = pl_call_error(call, PL_NOT_FOUND, "member %s not found",
		                   user_id);
	else if (out != NULL)
		*out = member_row(call, r, 0);
	PQclear(r);
	return rv;
}

int
tenants_store_count_owners(pl_call *call, pl_db *db, const char *tenant_id,
                           int *n)
{
	const char *p[] = { tenant_id };
	int rv;
	PGresult *r = run(call, db, "count owners",
	                  "SELECT count(*) FROM tenants.memberships "
	                  "WHERE tenant_id = $1 AND role = 'owner'",
	                  1, p, &rv);
	if (r == NULL)
		return rv;
	*n = atoi(PQgetvalue(r, 0, 0));
	PQclear(r);
	return PL_OK;
}

int
tenants_store_set_role(pl_call *call, pl_db *db, const char *tenant_id,
                       const char *user_id, const char *role)
{
	const char *p[] = { tenant_id, user_id, role };
	int rv;
	PGresult *r = run(
	        call, db, "set role",
	        "UPDATE tenants.memberships SET role = $3, updated_at = now() "
	        "WHERE tenant_id = $1 AND user_id = $2",
	        3, p, &rv);
	if (r != NULL)
		PQclear(r);
	return rv;
}

int
tenants_store_delete_member(pl_call *call, pl_db *db, const char *tenant_id,
                            const char *user_id)
{
	const char *p[] = { tenant_id, user_id };
	int rv;
	PGresult *r = run(call, db, "remove member",
	                  "DELETE FROM tenants.memberships "
	                  "WHERE tenant_id = $1 AND user_id = $2",
	                  2, p, &rv);
	if (r != NULL)
		PQclear(r);
	return rv;
}

int
tenants_store_list_members(pl_call *call, pl_db *db, const char *tenant_id,
                           const char *role, const char *after, int limit,
                           pb_member ***out, size_t *n)
{
	char lim[16];
	const char *p[] = { tenant_id, role, after, lim };
	int rv;
	PGresult *r;

	snprintf(lim, sizeof(lim), "%d", limit);
	r = run(call, db, "list members",
	        "SELECT " MEMBER_COLS " FROM tenants.memberships m "
	        "JOIN tenants.users u ON u.id = m.user_id WHERE m.tenant_id = "
	        "$1 "
	        "AND ($2::text IS NULL OR m.role = $2) AND ($3::uuid IS NULL "
	        "OR "
	        "m.user_id < $3) ORDER BY m.user_id DESC LIMIT $4",
	        4, p, &rv);
	if (r == NULL)
		return rv;
	*n = (size_t)PQntuples(r);
	*out = pl_arena_alloc(call->arena, (*n + 1) * sizeof(pb_member *));
	for (size_t i = 0; i < *n; i++)
		(*out)[i] = member_row(call, r, (int)i);
	PQclear(r);
	return PL_OK;
}

// ---------------------------------------------------------------------------
// Login throttling (platform-level table)

int
tenants_store_count_failures(pl_call *call, pl_db *db, const char *email,
                             const char *source, int64_t window_ms, int *n)
{
	char w[32];
	const char *p[] = { email, source, w };
	int rv;
	PGresult *r;

	snprintf(w, sizeof(w), "%lld", (long long)window_ms);
	r = run(call, db, "check login throttling",
	        "SELECT count(*) FROM tenants.login_failures WHERE email = "
	        "lower($1) AND source = $2 AND failed_at > now() - "
	        "make_interval(secs => $3::bigint / 1000.0)",
	        3, p, &rv);
	if (r == NULL)
		return rv;
	*n = atoi(PQgetvalue(r, 0, 0));
	PQclear(r);
	return PL_OK;
}

int
tenants_store_add_failure(pl_call *call, pl_db *db, const char *email,
                          const char *source)
{
	const char *p[] = { email, source };
	int rv;
	PGresult *r = run(call, db, "record failed login",
	                  "INSERT INTO tenants.login_failures (email, source) "
	                  "VALUES (lower($1), $2)",
	                  2, p, &rv);
	if (r != NULL)
		PQclear(r);
	return rv;
}

int
tenants_store_clear_failures(pl_call *call, pl_db *db, const char *email,
                             const char *source)
{
	const char *p[] = { email, source };
	int rv;
	// Old rows of anyone go too, so the table stays small.
	PGresult *r =
	        run(call, db, "clear failed logins",
	            "DELETE FROM tenants.login_failures WHERE (email = "
	            "lower($1) AND "
	            "source = $2) OR failed_at < now() - interval '1 day'",
	            2, p, &rv);
	if (r != NULL)
		PQclear(r);
	return rv;
}

// ---------------------------------------------------------------------------
// Sessions

int
tenants_store_insert_session(pl_call *call, pl_db *db, const char *tenant_id,
                             const char *id, const char *user_id,
                             const char *prefix,
                             const uint8_t hash[TENANTS_HASH_LEN],
                             int64_t ttl_ms, const char *ip, const char *ua,
                             char **expires_at)
{
	char ttl[32];
	const char *p[] = { tenant_id,
		            id,
		            user_id,
		            prefix,
		            tenants_store_bytea(call, hash, TENANTS_HASH_LEN),
		            ttl,
		            ip,
		            ua };
	int rv;
	PGresult *r;

	snprintf(ttl, sizeof(ttl), "%lld", (long long)ttl_ms);
	r = run(call, db, "create session",
	        "INSERT INTO tenants.sessions (tenant_id, id, user_id, prefix, "
	        "token_hash, expires_at, source_ip, user_agent) VALUES ($1, "
	        "$2, "
	        "$3, $4, $5, now() + make_interval(secs => $6::bigint / "
	        "1000.0), "
	        "nullif($7, ''), nullif($8, '')) RETURNING " TS("expires_at"),
	        8, p, &rv);
	if (r == NULL)
		return rv;
	*expires_at = col(call, r, 0, 0);
	PQclear(r);
	return PL_OK;
}

int
tenants_store_find_session(pl_call *call, pl_db *db, const char *tenant_id,
                           const char *user_id, const char *prefix,
                           const uint8_t hash[TENANTS_HASH_LEN], char **id)
{
	const char *p[] = { tenant_id, user_id, prefix };
	int rv;
	PGresult *r = run(
	        call, db, "find session",
	        "SELECT id, encode(token_hash, 'hex') FROM tenants.sessions "
	        "WHERE tenant_id = $1 AND user_id = $2 AND prefix = $3 AND "
	        "revoked_at IS NULL",
	        3, p, &rv);
	if (r == NULL)
		return rv;
	rv = PL_NOT_FOUND;
	for (int i = 0; i < PQntuples(r); i++) {
		uint8_t h[TENANTS_HASH_LEN];
		size_t n = 0;
		if (sodium_hex2bin(h, sizeof(h), PQgetvalue(r, i, 1),
		                   strlen(PQgetvalue(r, i, 1)), NULL, &n,
		                   NULL) == 0 &&
		    n == sizeof(h) &&
		    sodium_memcmp(h, hash, TENANTS_HASH_LEN) == 0) {
			*id = col(call, r, i, 0);
			rv = PL_OK;
		}
	}
	PQclear(r);
	return rv;
}

// Revokes sessions of a user: one (id), or all but keep_id (NULL: all),
// in every tenant when tenant_id is NULL (a cross-tenant write: run with
// the tenant "*"). Returns the count in *n.
int
tenants_store_revoke_sessions(pl_call *call, pl_db *db, const char *tenant_id,
                              const char *user_id, const char *id,
                              const char *keep_id, int *n)
{
	const char *p[] = { tenant_id, user_id, id, keep_id };
	int rv;
	PGresult *r =
	        run(call, db, "end sessions",
	            "UPDATE tenants.sessions SET revoked_at = now() WHERE "
	            "($1::uuid IS NULL OR tenant_id = $1) AND user_id = $2 AND "
	            "revoked_at IS NULL AND ($3::uuid IS NULL OR id = $3) AND "
	            "($4::uuid IS NULL OR id <> $4)",
	            4, p, &rv);
	if (r == NULL)
		return rv;
	if (n != NULL)
		*n = atoi(PQcmdTuples(r));
	PQclear(r);
	return PL_OK;
}

// ---------------------------------------------------------------------------
// API keys

int
tenants_store_insert_key(pl_call *call, pl_db *db, const char *tenant_id,
                         const char *id, const char *name, const char *prefix,
                         const uint8_t hash[TENANTS_HASH_LEN],
                         const char *scopes_json, const char *role,
                         const char *expires_at, int32_t rate,
                         const char *created_by, pb_api_key **out)
{
	char rl[16];
	const char *p[] = { tenant_id,
		            id,
		            name,
		            prefix,
		            tenants_store_bytea(call, hash, TENANTS_HASH_LEN),
		            scopes_json,
		            role,
		            expires_at,
		            rl,
		            created_by };
	int rv;
	PGresult *r;

	snprintf(rl, sizeof(rl), "%d", (int)rate);
	r = run(call, db, "create API key",
	        "INSERT INTO tenants.api_keys AS k (tenant_id, id, name, "
	        "prefix, "
	        "key_hash, scopes, role, expires_at, rate_limit_per_minute, "
	        "created_by_user_id) VALUES ($1, $2, $3, $4, $5, ARRAY(SELECT "
	        "jsonb_array_elements_text($6::jsonb)), $7, $8, $9, $10) "
	        "RETURNING " KEY_COLS,
	        10, p, &rv);
	if (r == NULL)
		return rv;
	*out = key_row(call, r, 0, NULL);
	PQclear(r);
	return PL_OK;
}

int
tenants_store_list_keys(pl_call *call, pl_db *db, const char *tenant_id,
                        bool revoked, const char *after, int limit,
                        pb_api_key ***out, size_t *n)
{
	char lim[16];
	const char *p[] = { tenant_id, revoked ? "t" : "f", after, lim };
	int rv;
	PGresult *r;

	snprintf(lim, sizeof(lim), "%d", limit);
	r = run(call, db, "list API keys",
	        "SELECT " KEY_COLS " FROM tenants.api_keys k WHERE "
	        "k.tenant_id = $1 AND ($2 OR k.revoked_at IS NULL) AND "
	        "($3::uuid IS NULL OR k.id < $3) ORDER BY k.id DESC LIMIT $4",
	        4, p, &rv);
	if (r == NULL)
		return rv;
	*n = (size_t)PQntuples(r);
	*out = pl_arena_alloc(call->arena, (*n + 1) * sizeof(pb_api_key *));
	for (size_t i = 0; i < *n; i++)
		(*out)[i] = key_row(call, r, (int)i, NULL);
	PQclear(r);
	return PL_OK;
}

int
tenants_store_revoke_key(pl_call *call, pl_db *db, const char *tenant_id,
                         const char *id, pb_api_key **out,
                         uint8_t hash[TENANTS_HASH_LEN], bool *changed)
{
	const char *p[] = { tenant_id, id };
	int rv;
	char *hex = NULL;
	size_t n = 0;
	PGresult *r = run(
	        call, db, "revoke API key",
	        "WITH old AS (SELECT revoked_at FROM tenants.api_keys WHERE "
	        "tenant_id = $1 AND id = $2 FOR UPDATE) UPDATE "
	        "tenants.api_keys k SET revoked_at = coalesce(k.revoked_at, "
	        "now()) FROM old WHERE k.tenant_id = $1 AND k.id = $2 "
	        "RETURNING " KEY_COLS ", old.revoked_at IS NULL",
	        2, p, &rv);
	if (r == NULL)
		return rv;
	if (PQntuples(r) == 0) {
		PQclear(r);
		return pl_call_error(call, PL_NOT_FOUND, "API key %s not found",
		                     id);
	}
	*out = key_row(call, r, 0, &hex);
	*changed = colb(r, 0, 12);
	sodium_hex2bin(hash, TENANTS_HASH_LEN, hex, strlen(hex), NULL, &n,
	               NULL);
	PQclear(r);
	return PL_OK;
}

// Authenticate's lookup (one round trip; see auth_lookup in 001_init.sql).
PGresult *
tenants_store_auth_lookup(pl_db *db, bool session, const char *prefix)
{
	const char *p[] = { session ? "session" : "api_key", prefix };
	return pl_db_exec(
	        db,
	        "SELECT id, tenant_id, coalesce(user_id::text, ''), role, "
	        "array_to_string(scopes, ','), encode(hash, 'hex'), "
	        "coalesce((extract(epoch FROM expires_at) * 1000)::bigint, "
	        "0), " TS("expires_at") ", revoked, expired, tenant_status, "
	                                "platform_admin, user_active, "
	                                "rate_limit, last_used_stale "
	                                "FROM tenants.auth_lookup($1, $2)",
	        2, p);
}

// Marks a credential used (at most once a minute, decided by the lookup).
int
tenants_store_touch(pl_db *db, bool session, const char *tenant_id,
                    const char *id)
{
	const char *p[] = { session ? "session" : "api_key", tenant_id, id };
	return pl_db_command(db, "SELECT tenants.auth_touch($1, $2, $3)", 3, p);
}

// The change feed (migrations/002): rows written by transactions whose id
// is >= xmin (NULL: none, the first read), ordered by seq, each with the
// statement snapshot's xmin (one row of NULLs but it when none matched).
// Platform-level, no RLS: read across tenants by design.
PGresult *
tenants_store_auth_changes(pl_db *db, const char *xmin, int limit)
{
	char lim[16];
	snprintf(lim, sizeof(lim), "%d", limit);
	const char *p[] = { xmin, lim };
	return pl_db_exec(
	        db,
	        "SELECT s.xmin::text, c.seq, c.xid::text, c.kind, "
	        "coalesce(c.tenant_id::text, ''), "
	        "coalesce(c.user_id::text, ''), coalesce(c.cred_id::text, '') "
	        "FROM (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin) "
	        "s "
	        "LEFT JOIN (SELECT * FROM tenants.auth_changes "
	        "WHERE xid >= $1::xid8 ORDER BY seq LIMIT $2::int) c ON true "
	        "ORDER BY c.seq NULLS FIRST",
	        2, p);
}

// Forgets feed rows older than a day (every poller has long read them).
int
tenants_store_prune_auth_changes(pl_db *db)
{
	return pl_db_command(db,
	                     "DELETE FROM tenants.auth_changes "
	                     "WHERE changed_at < now() - interval '1 day'",
	                     0, NULL);
}

// ---------------------------------------------------------------------------
// Channels

int
tenants_store_insert_channel(pl_call *call, pl_db *db,
                             const tenants_channel_input *in, pb_channel **out)
{
	const char *p[] = { in->tenant_id,
		            in->id,
		            in->type,
		            in->name,
		            in->agent_id,
		            in->routing_key,
		            in->phone_number_id,
		            in->display_phone_number,
		            in->sender_number,
		            in->api_base_url,
		            in->origins_json,
		            in->send_rate,
		            in->settings,
		            in->creds,
		            in->key_id };
	int rv;
	PGresult *r = run(
	        call, db, "create channel",
	        "INSERT INTO tenants.channel_integrations (tenant_id, id, "
	        "type, "
	        "name, agent_id, routing_key, phone_number_id, "
	        "display_phone_number, sender_number, api_base_url, "
	        "allowed_origins, send_rate_per_second, settings, credentials, "
	        "credentials_key_id) VALUES ($1, $2, $3, $4, nullif($5, "
	        "'')::uuid, $6, nullif($7, ''), nullif($8, ''), nullif($9, "
	        "''), nullif($10, ''), ARRAY(SELECT "
	        "jsonb_array_elements_text($11::jsonb)), $12, "
	        "coalesce($13::jsonb, '{}'), $14, $15)",
	        15, p, &rv);
	if (r != NULL)
		PQclear(r);
	if (rv == PL_ALREADY_EXISTS)
		return pl_call_error(
		        call, PL_ALREADY_EXISTS,
		        "a %s channel with this routing key already exists",
		        in->type);
	if (rv != PL_OK)
		return rv;
	tenants_channel_row row;
	rv = tenants_store_get_channel(call, db, in->tenant_id, in->id, false,
	                               &row);
	*out = row.ch;
	return rv;
}

int
tenants_store_update_channel(pl_call *call, pl_db *db,
                             const tenants_channel_input *in)
{
	const char *p[] = { in->tenant_id,
		            in->id,
		            in->name,
		            in->agent_id,
		            in->routing_key,
		            in->phone_number_id,
		            in->display_phone_number,
		            in->sender_number,
		            in->api_base_url,
		            in->origins_json,
		            in->send_rate,
		            in->settings,
		            in->creds,
		            in->key_id };
	int rv;
	PGresult *r = run(
	        call, db, "update channel",
	        "UPDATE tenants.channel_integrations SET name = $3, agent_id = "
	        "nullif($4, '')::uuid, routing_key = $5, phone_number_id = "
	        "nullif($6, ''), display_phone_number = nullif($7, ''), "
	        "sender_number = nullif($8, ''), api_base_url = nullif($9, "
	        "''), "
	        "allowed_origins = ARRAY(SELECT "
	        "jsonb_array_elements_text($10::jsonb)), send_rate_per_second "
	        "= $11, settings = coalesce($12::jsonb, '{}'), credentials = "
	        "$13, credentials_key_id = $14, updated_at = now() WHERE "
	        "tenant_id = $1 AND id = $2",
	        14, p, &rv);
	if (r != NULL)
		PQclear(r);
	if (rv == PL_ALREADY_EXISTS)
		return pl_call_error(
		        call, PL_ALREADY_EXISTS,
		        "a channel with this routing key already exists");
	return rv;
}

int
tenants_store_get_channel(pl_call *call, pl_db *db, const char *tenant_id,
                          const char *id, bool for_update,
                          tenants_channel_row *out)
{
	const char *p[] = { tenant_id, id };
	int rv;
	PGresult *r = run(
	        call, db, "get channel",
	        for_update ? "SELECT " CHANNEL_COLS
	                     " FROM tenants.channel_integrations c JOIN "
	                     "tenants.tenants t ON t.id = c.tenant_id WHERE "
	                     "c.tenant_id = $1 AND c.id = $2 FOR UPDATE OF c"
	                   : "SELECT " CHANNEL_COLS
	                     " FROM tenants.channel_integrations c JOIN "
	                     "tenants.tenants t ON t.id = c.tenant_id WHERE "
	                     "c.tenant_id = $1 AND c.id = $2",
	        2, p, &rv);
	if (r == NULL)
		return rv;
	if (PQntuples(r) == 0)
		rv = pl_call_error(call, PL_NOT_FOUND, "channel %s not found",
		                   id);
	else
		channel_row(call, r, 0, out);
	PQclear(r);
	return rv;
}

// ResolveChannel: by id, or by type and routing key, across tenants (run
// with the tenant "*": a webhook does not know its tenant yet).
int
tenants_store_resolve_channel(pl_call *call, pl_db *db, const char *id,
                              const char *type, const char *routing_key,
                              tenants_channel_row *out)
{
	const char *p[] = { id, type, routing_key };
	int rv;
	PGresult *r =
	        run(call, db, "resolve channel",
	            id ? "SELECT " CHANNEL_COLS
	                 " FROM tenants.channel_integrations c JOIN "
	                 "tenants.tenants t "
	                 "ON t.id = c.tenant_id WHERE c.id = $1 AND $2::text "
	                 "IS NULL "
	                 "AND $3::text IS NULL"
	               : "SELECT " CHANNEL_COLS
	                 " FROM tenants.channel_integrations c JOIN "
	                 "tenants.tenants t "
	                 "ON t.id = c.tenant_id WHERE $1::uuid IS NULL AND "
	                 "c.type = $2 AND c.routing_key = $3",
	            3, p, &rv);
	if (r == NULL)
		return rv;
	if (PQntuples(r) == 0)
		rv = pl_call_error(call, PL_NOT_FOUND, "channel not found");
	else
		channel_row(call, r, 0, out);
	PQclear(r);
	return rv;
}

int
tenants_store_list_channels(pl_call *call, pl_db *db, const char *tenant_id,
                            const char *type, const char *status,
                            const char *agent_id, const char *after, int limit,
                            tenants_channel_row **out, size_t *n)
{
	char lim[16];
	const char *p[] = { tenant_id, type, status, agent_id, after, lim };
	int rv;
	PGresult *r;

	snprintf(lim, sizeof(lim), "%d", limit);
	r = run(call, db, "list channels",
	        "SELECT " CHANNEL_COLS
	        " FROM tenants.channel_integrations c JOIN "
	        "tenants.tenants t ON t.id = c.tenant_id WHERE c.tenant_id = "
	        "$1 "
	        "AND ($2::text IS NULL OR c.type = $2) AND ($3::text IS NULL "
	        "OR "
	        "c.status = $3) AND ($4::uuid IS NULL OR c.agent_id = $4) AND "
	        "($5::uuid IS NULL OR c.id < $5) ORDER BY c.id DESC LIMIT $6",
	        6, p, &rv);
	if (r == NULL)
		return rv;
	*n = (size_t)PQntuples(r);
	*out = pl_arena_alloc(call->arena,
	                      (*n + 1) * sizeof(tenants_channel_row));
	for (size_t i = 0; i < *n; i++)
		channel_row(call, r, (int)i, &(*out)[i]);
	PQclear(r);
	return PL_OK;
}

int
tenants_store_set_channel_status(pl_call *call, pl_db *db,
                                 const char *tenant_id, const char *id,
                                 bool disable, const char *reason)
{
	const char *p[] = { tenant_id, id, reason };
	int rv;
	PGresult *r = run(
	        call, db, "change channel status",
	        disable ? "UPDATE tenants.channel_integrations SET status = "
	                  "'disabled', disabled_at = coalesce(disabled_at, "
	                  "now()), "
	                  "disabled_reason = nullif($3, ''), updated_at = "
	                  "now() "
	                  "WHERE tenant_id = $1 AND id = $2"
	                : "UPDATE tenants.channel_integrations SET status = "
	                  "'active', disabled_at = NULL, disabled_reason = "
	                  "NULL, "
	                  "updated_at = now() WHERE tenant_id = $1 AND id = $2 "
	                  "AND $3::text IS NULL",
	        3, p, &rv);
	if (r == NULL)
		return rv;
	if (atoi(PQcmdTuples(r)) == 0)
		rv = pl_call_error(call, PL_NOT_FOUND, "channel %s not found",
		                   id);
	PQclear(r);
	return rv;
}

// Channels whose credentials are under another key than key_id, locked
// (run with the tenant "*": rotation is a platform job).
int
tenants_store_stale_channels(pl_call *call, pl_db *db, const char *key_id,
                             int limit, tenants_channel_row **out, size_t *n)
{
	char lim[16];
	const char *p[] = { key_id, lim };
	int rv;
	PGresult *r;

	snprintf(lim, sizeof(lim), "%d", limit);
	r = run(call, db, "find channels to rotate",
	        "SELECT " CHANNEL_COLS
	        " FROM tenants.channel_integrations c JOIN "
	        "tenants.tenants t ON t.id = c.tenant_id WHERE c.credentials "
	        "IS "
	        "NOT NULL AND c.credentials_key_id <> $1 ORDER BY c.tenant_id, "
	        "c.id "
	        "LIMIT $2 FOR UPDATE OF c SKIP LOCKED",
	        2, p, &rv);
	if (r == NULL)
		return rv;
	*n = (size_t)PQntuples(r);
	*out = pl_arena_alloc(call->arena,
	                      (*n + 1) * sizeof(tenants_channel_row));
	for (size_t i = 0; i < *n; i++)
		channel_row(call, r, (int)i, &(*out)[i]);
	PQclear(r);
	return PL_OK;
}

int
tenants_store_set_credentials(pl_call *call, pl_db *db, const char *tenant_id,
                              const char *id, const char *creds,
                              const char *key_id)
{
	const char *p[] = { tenant_id, id, creds, key_id };
	int rv;
	PGresult *r =
	        run(call, db, "re-encrypt credentials",
	            "UPDATE tenants.channel_integrations SET credentials = $3, "
	            "credentials_key_id = $4 WHERE tenant_id = $1 AND id = $2",
	            4, p, &rv);
	if (r != NULL)
		PQclear(r);
	return rv;
}

int
tenants_store_count_stale(pl_call *call, pl_db *db, const char *key_id,
                          int64_t *n)
{
	const char *p[] = { key_id };
	int rv;
	PGresult *r =
	        run(call, db, "count channels to rotate",
	            "SELECT count(*) FROM tenants.channel_integrations WHERE "
	            "credentials IS NOT NULL AND credentials_key_id <> $1",
	            1, p, &rv);
	if (r == NULL)
		return rv;
	*n = atoll(PQgetvalue(r, 0, 0));
	PQclear(r);
	return PL_OK;
}

// ---------------------------------------------------------------------------
// Audit log

int
tenants_store_audit(pl_db *db, const tenants_audit *a)
{
	char id[PL_UUID_STRLEN + 1];
	const char *p[11];

	pl_uuid7_str(id);
	p[0] = a->tenant_id ? a->tenant_id : TENANTS_NIL_UUID;
	p[1] = id;
	p[2] = a->action;
	p[3] = a->actor_user_id && a->actor_user_id[0] ? a->actor_user_id
	                                               : NULL;
	p[4] = a->actor_api_key_id && a->actor_api_key_id[0]
	               ? a->actor_api_key_id
	               : NULL;
	p[5] = a->actor_service && a->actor_service[0] ? a->actor_service
	                                               : NULL;
	p[6] = a->resource_type;
	p[7] = a->resource_id;
	p[8] = a->source_ip && a->source_ip[0] ? a->source_ip : NULL;
	p[9] = a->user_agent && a->user_agent[0] ? a->user_agent : NULL;
	p[10] = a->details_json;
	return pl_db_command(
	        db,
	        "INSERT INTO tenants.audit_log (tenant_id, id, action, "
	        "actor_user_id, actor_api_key_id, actor_service, "
	        "resource_type, "
	        "resource_id, source_ip, user_agent, details) VALUES ($1, $2, "
	        "$3, "
	        "$4, $5, $6, $7, $8, $9, $10, coalesce($11::jsonb, '{}'))",
	        11, p);
}

int
tenants_store_list_audit(pl_call *call, pl_db *db, const char *tenant_id,
                         const char *action, const char *action_prefix,
                         const char *actor, const char *rtype, const char *rid,
                         const char *start, const char *end, const char *after,
                         int limit, pb_audit ***out, size_t *n)
{
	char lim[16];
	const char *p[] = { tenant_id, action, action_prefix, actor, rtype,
		            rid,       start,  end,           after, lim };
	int rv;
	PGresult *r;

	snprintf(lim, sizeof(lim), "%d", limit);
	r = run(call, db, "list audit log",
	        "SELECT " AUDIT_COLS " FROM tenants.audit_log a WHERE "
	        "a.tenant_id = $1 AND ($2::text IS NULL OR a.action = $2) AND "
	        "($3::text IS NULL OR a.action LIKE $3 || '%') AND ($4::uuid "
	        "IS "
	        "NULL OR a.actor_user_id = $4) AND ($5::text IS NULL OR "
	        "a.resource_type = $5) AND ($6::text IS NULL OR a.resource_id "
	        "= "
	        "$6) AND ($7::timestamptz IS NULL OR a.created_at >= $7) AND "
	        "($8::timestamptz IS NULL OR a.created_at < $8) AND ($9::uuid "
	        "IS "
	        "NULL OR a.id < $9) ORDER BY a.id DESC LIMIT $10",
	        10, p, &rv);
	if (r == NULL)
		return rv;
	*n = (size_t)PQntuples(r);
	*out = pl_arena_alloc(call->arena, (*n + 1) * sizeof(pb_audit *));
	for (size_t i = 0; i < *n; i++)
		(*out)[i] = audit_row(call, r, (int)i);
	PQclear(r);
	return PL_OK;
}

// ---------------------------------------------------------------------------
// Events received

int
tenants_store_event_seen(pl_call *call, pl_db *db, const char *tenant_id,
                         const char *id, const char *type, bool *fresh)
{
	const char *p[] = { tenant_id, id, type };
	int rv;
	PGresult *r = run(
	        call, db, "record event",
	        "INSERT INTO tenants.processed_events (tenant_id, id, type) "
	        "VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING id",
	        3, p, &rv);
	if (r == NULL)
		return rv;
	*fresh = PQntuples(r) == 1;
	PQclear(r);
	return PL_OK;
}

int
tenants_store_check_time_zone(pl_db *db, const char *tz)
{
	const char *p[] = { tz };
	return pl_db_command(db, "SELECT now() AT TIME ZONE $1", 1, p);
}
