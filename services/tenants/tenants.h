// The tenants service's internal header: the service definition, the logic
// in auth.c (secrets, credentials, validation, the Authenticate cache) and
// the store in store.c (every SQL statement).
#ifndef TENANTS_H
#define TENANTS_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sodium.h>

#include "parley/tenants/v1/tenants.pb-c.h"
#include "pl/migrate.h"
#include "pl/outbox.h"
#include "pl/service.h"

extern const pl_service_def tenants_service_def;
extern const pl_rpc_service tenants_rpc_service;
extern const pl_migration tenants_migrations[];
extern const size_t tenants_n_migrations;

// The number of files in migrations/ (the definition needs a constant;
// test_tenants_table checks it against tenants_n_migrations).
#include "tenants_migrations.h" // TENANTS_N_MIGRATIONS

// The nil uuid: the tenant of platform-level audit entries.
#define TENANTS_NIL_UUID "00000000-0000-0000-0000-000000000000"

// ---------------------------------------------------------------------------
// Secrets: session tokens and API keys (auth.c)
//
// A secret is "<kind>_<prefix>_<body>": kind "st" (session) or "pk" (API
// key), prefix 8 lower-case base32 characters (40 random bits, not secret,
// finds the row), body 32 random bytes in unpadded base64url (43 chars).
// Only SHA-256 of the whole string is stored.

#define TENANTS_PREFIX_LEN 8
#define TENANTS_BODY_LEN   43
#define TENANTS_SECRET_LEN (3 + TENANTS_PREFIX_LEN + 1 + TENANTS_BODY_LEN)
#define TENANTS_HASH_LEN   crypto_hash_sha256_BYTES

typedef enum tenants_secret_kind {
	TENANTS_SECRET_INVALID = 0,
	TENANTS_SECRET_SESSION,
	TENANTS_SECRET_API_KEY,
} tenants_secret_kind;

// Makes a new secret of kind into out (TENANTS_SECRET_LEN + 1 bytes), its
// prefix into prefix (TENANTS_PREFIX_LEN + 1) and its SHA-256 into hash.
void tenants_secret_new(tenants_secret_kind kind, char *out, char *prefix,
                        uint8_t hash[TENANTS_HASH_LEN]);

// Parses s: its kind (INVALID when malformed), prefix and SHA-256.
tenants_secret_kind tenants_secret_parse(const char *s, char *prefix,
                                         uint8_t hash[TENANTS_HASH_LEN]);

// ---------------------------------------------------------------------------
// Channel credentials: XChaCha20-Poly1305 under a key ring (auth.c)

#define TENANTS_KEY_ID_MAX 32
#define TENANTS_MAX_KEYS   16

typedef struct tenants_key {
	char id[TENANTS_KEY_ID_MAX + 1];
	uint8_t key[crypto_aead_xchacha20poly1305_ietf_KEYBYTES];
} tenants_key;

typedef struct tenants_keyring {
	tenants_key keys[TENANTS_MAX_KEYS]; // [0] is the current key
	int n;                              // 0: no key configured
} tenants_keyring;

// Loads the current key (base64 of 32 bytes) with its id, and old keys
// given as "id:base64,id:base64". An empty current key leaves the ring
// empty. Returns 0, or -1 with err naming what is wrong.
int tenants_keyring_load(tenants_keyring *kr, const char *key_b64,
                         const char *key_id, const char *old_keys, char *err,
                         size_t errlen);

// Wipes the ring's keys.
void tenants_keyring_wipe(tenants_keyring *kr);

// Encrypts plain (len bytes) under the current key with associated data
// "<tenant_id>:<channel_id>"; the result (nonce then ciphertext) is
// malloc'd into *out. Returns PL_OK, FAILED_PRECONDITION without a key.
int tenants_seal(const tenants_keyring *kr, const char *tenant_id,
                 const char *channel_id, const uint8_t *plain, size_t len,
                 uint8_t **out, size_t *out_len);

// Decrypts what tenants_seal made under key key_id; the plaintext is
// malloc'd and NUL-terminated. Returns PL_OK, NOT_FOUND for an unknown key
// id, DATA_LOSS when authentication fails.
int tenants_open(const tenants_keyring *kr, const char *key_id,
                 const char *tenant_id, const char *channel_id,
                 const uint8_t *sealed, size_t len, uint8_t **out,
                 size_t *out_len);

// ---------------------------------------------------------------------------
// Validation (auth.c). Each returns NULL when v is fine, else the reason.

const char *tenants_check_text(const char *v, size_t max, bool required);
const char *tenants_check_email(const char *v);
const char *tenants_check_password(const char *v);
const char *tenants_check_slug(const char *v);
const char *tenants_check_timestamp(const char *v);
const char *tenants_check_url(const char *v);
const char *tenants_check_digits(const char *v, size_t min, size_t max);

// Derives a slug from name into out (64 bytes): lower-case ASCII letters
// and digits, other runs become '-', at most 50 characters; "tenant" when
// nothing is left. Always a valid slug.
void tenants_slug_from_name(const char *name, char out[64]);

// True when scope is one of proto/README.md's API-key scopes.
bool tenants_scope_known(const char *scope);

// Role names of the proto's Role (1..4); NULL for anything else.
const char *tenants_role_name(int role);
int tenants_role_parse(const char *s);

// ---------------------------------------------------------------------------
// The Authenticate cache (auth.c): per process, keyed by SHA-256 of the
// presented secret. Entries live long (ttl_ms, minutes) because the change
// feed (feed.c) evicts what changed; the cache answers only while the feed
// was read completely within stale_ms (<= 1000), so a revoked key, a role
// change or a suspension is seen everywhere within a second even when the
// feed is stuck (then the database answers).

#define TENANTS_CACHE_TTL_MAX INT64_C(3600000)

typedef struct tenants_principal {
	int kind; // PrincipalKind
	char tenant_id[37];
	char user_id[37];
	char api_key_id[37];
	char cred_id[37]; // the session's or API key's id
	int role;
	char scopes[512]; // comma-separated
	bool platform_admin;
	bool suspended;
	char expires_at[40];
	int32_t rate_limit;
} tenants_principal;

// What a change-feed row evicts: every entry whose tenant, user and
// credential equal the non-empty fields ("" matches anything; all empty
// evicts everything).
typedef struct tenants_change {
	char tenant_id[37];
	char user_id[37];
	char cred_id[37];
} tenants_change;

typedef struct tenants_cache tenants_cache;

int64_t tenants_mono_ms(void);

tenants_cache *tenants_cache_new(size_t max_entries, int64_t ttl_ms,
                                 int64_t stale_ms);
void tenants_cache_free(tenants_cache *c);
// Copies the entry for hash into *p when present, unexpired, and the feed
// is fresh (read within stale_ms).
bool tenants_cache_get(tenants_cache *c, const uint8_t hash[TENANTS_HASH_LEN],
                       tenants_principal *p);
// True when get may answer at all (the feed is fresh).
bool tenants_cache_usable(tenants_cache *c);
// The eviction generation: read it before the database lookup and pass it
// to put, which stores nothing when an eviction ran in between.
uint64_t tenants_cache_gen(tenants_cache *c);
// Stores p for at most the cache's ttl and never past expires_ms (Unix ms;
// 0: none).
void tenants_cache_put(tenants_cache *c, const uint8_t hash[TENANTS_HASH_LEN],
                       const tenants_principal *p, int64_t expires_ms,
                       uint64_t gen);
void tenants_cache_drop(tenants_cache *c, const uint8_t hash[TENANTS_HASH_LEN]);
// Drops every entry of a tenant (suspension), or of a user in it when
// user_id is not NULL.
void tenants_cache_drop_tenant(tenants_cache *c, const char *tenant_id,
                               const char *user_id);
// Evicts what n changes name (one pass); returns the entries dropped.
size_t tenants_cache_apply(tenants_cache *c, const tenants_change *ch,
                           size_t n);
void tenants_cache_flush(tenants_cache *c);
// The feed has been applied completely up to a read that started at
// as_of_ms (tenants_mono_ms()).
void tenants_cache_fresh(tenants_cache *c, int64_t as_of_ms);
size_t tenants_cache_size(tenants_cache *c);

// ---------------------------------------------------------------------------
// The change feed's poller (feed.c): a thread with its own database
// connection reading tenants.auth_changes every interval_ms, evicting what
// changed and marking the cache fresh.

typedef struct tenants_feed tenants_feed;

int tenants_feed_start(tenants_feed **out, const char *database_url,
                       tenants_cache *cache, int64_t interval_ms);
void tenants_feed_stop(tenants_feed *f);

// The poller's bookkeeping, separate from the thread so tests can drive
// it: the xmin of the last snapshot read and the rows already applied that
// a later read may return again.
typedef struct tenants_feed_seen {
	uint64_t xmin; // 0: nothing read yet
	int64_t *seq;  // sorted
	uint64_t *xid;
	size_t n, cap;
} tenants_feed_seen;

// One read of the feed through db: evicts what is new and marks the cache
// fresh. Returns PL_OK or the database's status (the cache then goes stale
// by itself).
int tenants_feed_poll(tenants_feed_seen *seen, pl_db *db, tenants_cache *c);
void tenants_feed_seen_free(tenants_feed_seen *seen);

// ---------------------------------------------------------------------------
// The service's state (call->arg)

typedef struct tenants_state {
	tenants_keyring keys;
	tenants_cache *cache;
	char *public_url;
	char *admin_emails; // comma-separated, lower case
	char dummy_hash[crypto_pwhash_STRBYTES];
	unsigned long long pw_ops;
	size_t pw_mem;
	int64_t session_ttl_ms;
	int64_t cache_ttl_ms;   // entries' lifetime in this process
	int64_t cache_stale_ms; // the feed's allowed lag
	int64_t poll_ms;        // the feed's polling interval
	int32_t caller_ttl_ms;  // Authenticate's cache_ttl_ms: 1000 - stale
	tenants_feed *feed;
	int64_t login_max_failures;
	int64_t login_window_ms;
	char *database_url;
	pl_rpc_client *billing;
	pl_rpc_client *analytics;
	pl_outbox_relay *relay;
} tenants_state;

// Password hashing with the state's argon2id parameters.
int tenants_password_hash(const tenants_state *st, const char *pw,
                          char out[crypto_pwhash_STRBYTES]);
bool tenants_password_verify(const char *hash, const char *pw);

#endif
