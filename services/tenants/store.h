// The tenants service's store (store.c): every SQL statement. Functions
// taking a call set its error on failure (so handlers just return the
// status) and allocate what they return in the call's arena.
#ifndef TENANTS_STORE_H
#define TENANTS_STORE_H

#include "tenants.h"

typedef Parley__Rpc__V1__Json pb_json;
typedef Parley__Tenants__V1__Tenant pb_tenant;
typedef Parley__Tenants__V1__User pb_user;
typedef Parley__Tenants__V1__Member pb_member;
typedef Parley__Tenants__V1__Membership pb_membership;
typedef Parley__Tenants__V1__ApiKey pb_api_key;
typedef Parley__Tenants__V1__Channel pb_channel;
typedef Parley__Tenants__V1__AuditEntry pb_audit;

// "whatsapp_cloud", "infobip", "webchat" by ChannelType (1..3).
extern const char *const tenants_channel_type_names[];

// A channel as stored: the message, its tenant, the sealed credentials.
typedef struct tenants_channel_row {
	pb_channel *ch;
	char *tenant_id;
	uint8_t *creds; // NULL when none
	size_t creds_len;
	char *key_id;
	bool suspended; // its tenant's status
} tenants_channel_row;

// A channel's columns as text parameters.
typedef struct tenants_channel_input {
	const char *tenant_id, *id, *type, *name, *agent_id, *routing_key;
	const char *phone_number_id, *display_phone_number, *sender_number;
	const char *api_base_url, *origins_json, *send_rate, *settings;
	const char *creds, *key_id; // bytea hex text and key id, or NULL
} tenants_channel_input;

typedef struct tenants_audit {
	const char *tenant_id; // NULL: platform-level
	const char *action;
	const char *actor_user_id, *actor_api_key_id, *actor_service;
	const char *resource_type, *resource_id;
	const char *source_ip, *user_agent;
	const char *details_json;
} tenants_audit;

char *tenants_store_bytea(pl_call *call, const uint8_t *b, size_t n);

int tenants_store_insert_tenant(pl_call *call, pl_db *db, const char *id,
                                const char *name, const char *slug,
                                const char *tz, bool *inserted);
int tenants_store_get_tenant(pl_call *call, pl_db *db, const char *id,
                             bool for_update, pb_tenant **out);
int tenants_store_update_tenant(pl_call *call, pl_db *db, const char *id,
                                const char *name, const char *tz,
                                const char *settings, pb_tenant **out);
int tenants_store_set_tenant_status(pl_call *call, pl_db *db, const char *id,
                                    bool suspend, const char *reason,
                                    pb_tenant **out, bool *changed);
int tenants_store_list_tenants(pl_call *call, pl_db *db, const char *status,
                               const char *query, const char *after, int limit,
                               pb_tenant ***out, size_t *n);

int tenants_store_insert_user(pl_call *call, pl_db *db, const char *id,
                              const char *email, const char *hash,
                              const char *full_name, bool admin);
// By id, or by email (case-insensitive) when id is NULL. NOT_FOUND is
// returned without setting the call's error.
int tenants_store_get_user(pl_call *call, pl_db *db, const char *id,
                           const char *email, pb_user **out, char **hash);
int tenants_store_user_logged_in(pl_call *call, pl_db *db, const char *id,
                                 bool make_admin);
int tenants_store_set_password(pl_call *call, pl_db *db, const char *id,
                               const char *hash);
int tenants_store_insert_membership(pl_call *call, pl_db *db,
                                    const char *tenant_id, const char *user_id,
                                    const char *role);
int tenants_store_memberships(pl_call *call, pl_db *db, const char *user_id,
                              pb_membership ***out, size_t *n);
int tenants_store_get_member(pl_call *call, pl_db *db, const char *tenant_id,
                             const char *user_id, pb_member **out);
int tenants_store_count_owners(pl_call *call, pl_db *db, const char *tenant_id,
                               int *n);
int tenants_store_set_role(pl_call *call, pl_db *db, const char *tenant_id,
                           const char *user_id, const char *role);
int tenants_store_delete_member(pl_call *call, pl_db *db, const char *tenant_id,
                                const char *user_id);
int tenants_store_list_members(pl_call *call, pl_db *db, const char *tenant_id,
                               const char *role, const char *after, int limit,
                               pb_member ***out, size_t *n);

int tenants_store_count_failures(pl_call *call, pl_db *db, const char *email,
                                 const char *source, int64_t window_ms, int *n);
int tenants_store_add_failure(pl_call *call, pl_db *db, const char *email,
                              const char *source);
int tenants_store_clear_failures(pl_call *call, pl_db *db, const char *email,
                                 const char *source);

int tenants_store_insert_session(pl_call *call, pl_db *db,
                                 const char *tenant_id, const char *id,
                                 const char *user_id, const char *prefix,
                                 const uint8_t hash[TENANTS_HASH_LEN],
                                 int64_t ttl_ms, const char *ip, const char *ua,
                                 char **expires_at);
int tenants_store_find_session(pl_call *call, pl_db *db, const char *tenant_id,
                               const char *user_id, const char *prefix,
                               const uint8_t hash[TENANTS_HASH_LEN], char **id);
int tenants_store_revoke_sessions(pl_call *call, pl_db *db,
                                  const char *tenant_id, const char *user_id,
                                  const char *id, const char *keep_id, int *n);

int tenants_store_insert_key(pl_call *call, pl_db *db, const char *tenant_id,
                             const char *id, const char *name,
                             const char *prefix,
                             const uint8_t hash[TENANTS_HASH_LEN],
                             const char *scopes_json, const char *role,
                             const char *expires_at, int32_t rate,
                             const char *created_by, pb_api_key **out);
int tenants_store_list_keys(pl_call *call, pl_db *db, const char *tenant_id,
                            bool revoked, const char *after, int limit,
                            pb_api_key ***out, size_t *n);
int tenants_store_revoke_key(pl_call *call, pl_db *db, const char *tenant_id,
                             const char *id, pb_api_key **out,
                             uint8_t hash[TENANTS_HASH_LEN], bool *changed);

// Columns: 0 id, 1 tenant_id, 2 user_id, 3 role, 4 scopes, 5 hash (hex),
// 6 expires (Unix ms, 0 none), 7 expires_at, 8 revoked, 9 expired,
// 10 tenant_status, 11 platform_admin, 12 user_active, 13 rate_limit,
// 14 last_used_stale. The caller PQclear()s.
PGresult *tenants_store_auth_lookup(pl_db *db, bool session,
                                    const char *prefix);
// Columns: 0 the snapshot's xmin (every row), 1 seq, 2 xid, 3 kind,
// 4 tenant_id, 5 user_id, 6 cred_id ('' for NULL); when no row matched,
// one row with only column 0 (1 is NULL). The caller PQclear()s.
PGresult *tenants_store_auth_changes(pl_db *db, const char *xmin, int limit);
int tenants_store_prune_auth_changes(pl_db *db);
int tenants_store_touch(pl_db *db, bool session, const char *tenant_id,
                        const char *id);

int tenants_store_insert_channel(pl_call *call, pl_db *db,
                                 const tenants_channel_input *in,
                                 pb_channel **out);
int tenants_store_update_channel(pl_call *call, pl_db *db,
                                 const tenants_channel_input *in);
int tenants_store_get_channel(pl_call *call, pl_db *db, const char *tenant_id,
                              const char *id, bool for_update,
                              tenants_channel_row *out);
int tenants_store_resolve_channel(pl_call *call, pl_db *db, const char *id,
                                  const char *type, const char *routing_key,
                                  tenants_channel_row *out);
int tenants_store_list_channels(pl_call *call, pl_db *db, const char *tenant_id,
                                const char *type, const char *status,
                                const char *agent_id, const char *after,
                                int limit, tenants_channel_row **out,
                                size_t *n);
int tenants_store_set_channel_status(pl_call *call, pl_db *db,
                                     const char *tenant_id, const char *id,
                                     bool disable, const char *reason);
int tenants_store_stale_channels(pl_call *call, pl_db *db, const char *key_id,
                                 int limit, tenants_channel_row **out,
                                 size_t *n);
int tenants_store_set_credentials(pl_call *call, pl_db *db,
                                  const char *tenant_id, const char *id,
                                  const char *creds, const char *key_id);
int tenants_store_count_stale(pl_call *call, pl_db *db, const char *key_id,
                              int64_t *n);

int tenants_store_audit(pl_db *db, const tenants_audit *a);
int tenants_store_list_audit(pl_call *call, pl_db *db, const char *tenant_id,
                             const char *action, const char *action_prefix,
                             const char *actor, const char *rtype,
                             const char *rid, const char *start,
                             const char *end, const char *after, int limit,
                             pb_audit ***out, size_t *n);

int tenants_store_event_seen(pl_call *call, pl_db *db, const char *tenant_id,
                             const char *id, const char *type, bool *fresh);
int tenants_store_check_time_zone(pl_db *db, const char *tz);

#endif
