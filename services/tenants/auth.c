// The tenants service's own logic, free of sockets and SQL: secrets
// (tokens and API keys), channel credential encryption with key rotation,
// input validation, and the Authenticate cache.
#include <ctype.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pl/log.h"
#include "tenants.h"

// ---------------------------------------------------------------------------
// Secrets

static const char b32[] = "abcdefghijklmnopqrstuvwxyz234567";

void
tenants_secret_new(tenants_secret_kind kind, char *out, char *prefix,
                   uint8_t hash[TENANTS_HASH_LEN])
{
	uint8_t rnd[32], pre[TENANTS_PREFIX_LEN];

	randombytes_buf(pre, sizeof(pre));
	for (int i = 0; i < TENANTS_PREFIX_LEN; i++)
		prefix[i] = b32[pre[i] & 31];
	prefix[TENANTS_PREFIX_LEN] = '\0';
	randombytes_buf(rnd, sizeof(rnd));
	memcpy(out, kind == TENANTS_SECRET_SESSION ? "st_" : "pk_", 3);
	memcpy(out + 3, prefix, TENANTS_PREFIX_LEN);
	out[3 + TENANTS_PREFIX_LEN] = '_';
	sodium_bin2base64(out + 4 + TENANTS_PREFIX_LEN, TENANTS_BODY_LEN + 1,
	                  rnd, sizeof(rnd),
	                  sodium_base64_VARIANT_URLSAFE_NO_PADDING);
	sodium_memzero(rnd, sizeof(rnd));
	crypto_hash_sha256(hash, (const uint8_t *)out, TENANTS_SECRET_LEN);
}

static bool
is_b64url(int c)
{
	return isalnum(c) || c == '-' || c == '_';
}

tenants_secret_kind
tenants_secret_parse(const char *s, char *prefix,
                     uint8_t hash[TENANTS_HASH_LEN])
{
	tenants_secret_kind kind;

	if (s == NULL || strlen(s) != TENANTS_SECRET_LEN)
		return TENANTS_SECRET_INVALID;
	if (strncmp(s, "st_", 3) == 0)
		kind = TENANTS_SECRET_SESSION;
	else if (strncmp(s, "pk_", 3) == 0)
		kind = TENANTS_SECRET_API_KEY;
	else
		return TENANTS_SECRET_INVALID;
	for (int i = 0; i < TENANTS_PREFIX_LEN; i++)
		if (strchr(b32, s[3 + i]) == NULL || s[3 + i] == '\0')
			return TENANTS_SECRET_INVALID;
	if (s[3 + TENANTS_PREFIX_LEN] != '_')
		return TENANTS_SECRET_INVALID;
	for (int i = 4 + TENANTS_PREFIX_LEN; i < TENANTS_SECRET_LEN; i++)
		if (!is_b64url((unsigned char)s[i]))
			return TENANTS_SECRET_INVALID;
	memcpy(prefix, s + 3, TENANTS_PREFIX_LEN);
	prefix[TENANTS_PREFIX_LEN] = '\0';
	crypto_hash_sha256(hash, (const uint8_t *)s, TENANTS_SECRET_LEN);
	return kind;
}

// ---------------------------------------------------------------------------
// Credentials

static int
key_decode(tenants_key *k, const char *id, size_t idlen, const char *b64,
           size_t b64len, char *err, size_t errlen)
{
	size_t n = 0;

	if (idlen == 0 || idlen > TENANTS_KEY_ID_MAX) {
		snprintf(err, errlen, "key id must have 1 to %d characters",
		         TENANTS_KEY_ID_MAX);
		return -1;
	}
	for (size_t i = 0; i < idlen; i++)
		if (!isalnum((unsigned char)id[i]) && id[i] != '-' &&
		    id[i] != '_') {
			snprintf(err, errlen,
			         "key id may hold only letters, digits, - and "
			         "_");
			return -1;
		}
	memcpy(k->id, id, idlen);
	k->id[idlen] = '\0';
	if (sodium_base642bin(k->key, sizeof(k->key), b64, b64len, " \n", &n,
	                      NULL, sodium_base64_VARIANT_ORIGINAL) != 0 ||
	    n != sizeof(k->key)) {
		if (sodium_base642bin(
		            k->key, sizeof(k->key), b64, b64len, " \n", &n,
		            NULL,
		            sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 ||
		    n != sizeof(k->key)) {
			snprintf(
			        err, errlen,
			        "key \"%s\" must be base64 of exactly 32 bytes",
			        k->id);
			return -1;
		}
	}
	return 0;
}

int
tenants_keyring_load(tenants_keyring *kr, const char *key_b64,
                     const char *key_id, const char *old_keys, char *err,
                     size_t errlen)
{
	const char *p, *comma, *colon;

	memset(kr, 0, sizeof(*kr));
	if (key_b64 == NULL || key_b64[0] == '\0') {
		if (old_keys != NULL && old_keys[0] != '\0') {
			snprintf(err, errlen,
			         "old keys given without a current key");
			return -1;
		}
		return 0;
	}
	if (key_id == NULL)
		key_id = "";
	if (key_decode(&kr->keys[0], key_id, strlen(key_id), key_b64,
	               strlen(key_b64), err, errlen) != 0)
		goto out_wipe;
	kr->n = 1;
	for (p = old_keys; p != NULL && *p != '\0';
	     p = comma ? comma + 1 : NULL) {
		comma = strchr(p, ',');
		size_t len = comma ? (size_t)(comma - p) : strlen(p);
		if (len == 0)
			continue;
		colon = memchr(p, ':', len);
		if (colon == NULL) {
			snprintf(err, errlen, "old keys must be id:base64");
			goto out_wipe;
		}
		if (kr->n == TENANTS_MAX_KEYS) {
			snprintf(err, errlen, "at most %d keys",
			         TENANTS_MAX_KEYS);
			goto out_wipe;
		}
		if (key_decode(&kr->keys[kr->n], p, (size_t)(colon - p),
		               colon + 1, len - (size_t)(colon - p) - 1, err,
		               errlen) != 0)
			goto out_wipe;
		for (int i = 0; i < kr->n; i++)
			if (strcmp(kr->keys[i].id, kr->keys[kr->n].id) == 0) {
				snprintf(err, errlen,
				         "key id \"%s\" given twice",
				         kr->keys[i].id);
				goto out_wipe;
			}
		kr->n++;
	}
	return 0;
out_wipe:
	tenants_keyring_wipe(kr);
	return -1;
}

void
tenants_keyring_wipe(tenants_keyring *kr)
{
	sodium_memzero(kr, sizeof(*kr));
}

static size_t
make_ad(char *ad, size_t cap, const char *tenant_id, const char *channel_id)
{
	int n = snprintf(ad, cap, "%s:%s", tenant_id, channel_id);
	return n < 0 ? 0 : (size_t)n < cap ? (size_t)n : cap - 1;
}

int
tenants_seal(const tenants_keyring *kr, const char *tenant_id,
             const char *channel_id, const uint8_t *plain, size_t len,
             uint8_t **out, size_t *out_len)
{
	enum { NB = crypto_aead_xchacha20poly1305_ietf_NPUBBYTES };
	char ad[96];
	size_t adlen = make_ad(ad, sizeof(ad), tenant_id, channel_id);
	unsigned long long clen;
	uint8_t *buf;

	if (kr->n == 0)
		return PL_FAILED_PRECONDITION;
	buf = malloc(NB + len + crypto_aead_xchacha20poly1305_ietf_ABYTES);
	if (buf == NULL)
		return PL_RESOURCE_EXHAUSTED;
	randombytes_buf(buf, NB);
	crypto_aead_xchacha20poly1305_ietf_encrypt(buf + NB, &clen, plain, len,
	                                           (const uint8_t *)ad, adlen,
	                                           NULL, buf, kr->keys[0].key);
	*out = buf;
	*out_len = NB + (size_t)clen;
	return PL_OK;
}

int
tenants_open(const tenants_keyring *kr, const char *key_id,
             const char *tenant_id, const char *channel_id,
             const uint8_t *sealed, size_t len, uint8_t **out, size_t *out_len)
{
	enum { NB = crypto_aead_xchacha20poly1305_ietf_NPUBBYTES };
	const tenants_key *k = NULL;
	char ad[96];
	size_t adlen = make_ad(ad, sizeof(ad), tenant_id, channel_id);
	unsigned long long plen;
	uint8_t *buf;

	for (int i = 0; i < kr->n; i++)
		if (key_id != NULL && strcmp(kr->keys[i].id, key_id) == 0)
			k = &kr->keys[i];
	if (k == NULL)
		return PL_NOT_FOUND;
	if (len < NB + crypto_aead_xchacha20poly1305_ietf_ABYTES)
		return PL_DATA_LOSS;
	buf = malloc(len + 1);
	if (buf == NULL)
		return PL_RESOURCE_EXHAUSTED;
	if (crypto_aead_xchacha20poly1305_ietf_decrypt(
	            buf, &plen, NULL, sealed + NB, len - NB,
	            (const uint8_t *)ad, adlen, sealed, k->key) != 0) {
		free(buf);
		return PL_DATA_LOSS;
	}
	buf[plen] = '\0';
	*out = buf;
	*out_len = (size_t)plen;
	return PL_OK;
}

// ---------------------------------------------------------------------------
// Passwords

int
tenants_password_hash(const tenants_state *st, const char *pw,
                      char out[crypto_pwhash_STRBYTES])
{
	if (crypto_pwhash_str_alg(out, pw, strlen(pw), st->pw_ops, st->pw_mem,
	                          crypto_pwhash_ALG_ARGON2ID13) != 0)
		return PL_RESOURCE_EXHAUSTED;
	return PL_OK;
}

bool
tenants_password_verify(const char *hash, const char *pw)
{
	return crypto_pwhash_str_verify(hash, pw, strlen(pw)) == 0;
}

// ---------------------------------------------------------------------------
// Validation

// Valid UTF-8 without control characters; counts code points into *chars.
static bool
utf8_ok(const char *s, size_t *chars)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t n = 0;

	while (*p) {
		uint32_t cp;
		int len;
		if (*p < 0x80) {
			if (*p < 0x20 || *p == 0x7f)
				return false;
			p++;
			n++;
			continue;
		}
		if ((*p & 0xe0) == 0xc0) {
			cp = *p & 0x1f;
			len = 1;
		} else if ((*p & 0xf0) == 0xe0) {
			cp = *p & 0x0f;
			len = 2;
		} else if ((*p & 0xf8) == 0xf0) {
			cp = *p & 0x07;
			len = 3;
		} else
			return false;
		p++;
		for (int i = 0; i < len; i++, p++) {
			if ((*p & 0xc0) != 0x80)
				return false;
			cp = (cp << 6) | (*p & 0x3f);
		}
		if ((len == 1 && cp < 0x80) || (len == 2 && cp < 0x800) ||
		    (len == 3 && cp < 0x10000) || cp > 0x10ffff ||
		    (cp >= 0xd800 && cp <= 0xdfff) || (cp >= 0x80 && cp < 0xa0))
			return false;
		n++;
	}
	*chars = n;
	return true;
}

const char *
tenants_check_text(const char *v, size_t max, bool required)
{
	size_t chars = 0, len = v ? strlen(v) : 0;

	if (len == 0)
		return required ? "is required" : NULL;
	if (len > max * 4)
		return "is too long";
	if (!utf8_ok(v, &chars))
		return "must be valid UTF-8 without control characters";
	if (chars > max)
		return "is too long";
	if (isspace((unsigned char)v[0]) || isspace((unsigned char)v[len - 1]))
		return "must not start or end with spaces";
	return NULL;
}

const char *
tenants_check_email(const char *v)
{
	size_t len = v ? strlen(v) : 0;
	const char *at;

	if (len == 0)
		return "is required";
	if (len > 254)
		return "is too long (254 characters at most)";
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)v[i];
		if (c <= 0x20 || c >= 0x7f || strchr("\"(),:;<>[\\]", c))
			return "is not a valid email address";
	}
	at = strchr(v, '@');
	if (at == NULL || at == v || strchr(at + 1, '@') != NULL || at - v > 64)
		return "is not a valid email address";
	at++;
	if (strchr(at, '.') == NULL || at[0] == '.' || at[0] == '-' ||
	    v[len - 1] == '.' || strstr(at, "..") != NULL)
		return "is not a valid email address";
	return NULL;
}

// The rule (README): 10 to 256 characters, valid UTF-8, and not all of one
// class (lower case, upper case, digits, others).
const char *
tenants_check_password(const char *v)
{
	size_t chars = 0, len = v ? strlen(v) : 0;
	int lower = 0, upper = 0, digit = 0, other = 0;

	if (len == 0)
		return "is required";
	if (len > 1024 || !utf8_ok(v, &chars))
		return "must be valid UTF-8 of at most 256 characters";
	if (chars < 10)
		return "must have at least 10 characters";
	if (chars > 256)
		return "must be valid UTF-8 of at most 256 characters";
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)v[i];
		if (c >= 'a' && c <= 'z')
			lower = 1;
		else if (c >= 'A' && c <= 'Z')
			upper = 1;
		else if (c >= '0' && c <= '9')
			digit = 1;
		else
			other = 1;
	}
	if (lower + upper + digit + other < 2)
		return "must mix at least two of: lower case, upper case, "
		       "digits, other characters";
	return NULL;
}

const char *
tenants_check_slug(const char *v)
{
	size_t len = v ? strlen(v) : 0;

	if (len < 3 || len > 63)
		return "must have 3 to 63 characters";
	for (size_t i = 0; i < len; i++)
		if (!((v[i] >= 'a' && v[i] <= 'z') ||
		      (v[i] >= '0' && v[i] <= '9') || v[i] == '-'))
			return "may hold only a-z, 0-9 and -";
	if (v[0] == '-' || v[len - 1] == '-')
		return "must not start or end with -";
	return NULL;
}

static bool
ndigits(const char *s, int n)
{
	for (int i = 0; i < n; i++)
		if (!isdigit((unsigned char)s[i]))
			return false;
	return true;
}

// RFC 3339: YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM|-HH:MM).
const char *
tenants_check_timestamp(const char *v)
{
	const char *p = v;

	if (v == NULL || strlen(v) > 40)
		return "must be an RFC 3339 time";
	if (!ndigits(p, 4) || p[4] != '-' || !ndigits(p + 5, 2) ||
	    p[7] != '-' || !ndigits(p + 8, 2) ||
	    (p[10] != 'T' && p[10] != 't' && p[10] != ' ') ||
	    !ndigits(p + 11, 2) || p[13] != ':' || !ndigits(p + 14, 2) ||
	    p[16] != ':' || !ndigits(p + 17, 2))
		return "must be an RFC 3339 time";
	int mon = atoi(p + 5), day = atoi(p + 8), hh = atoi(p + 11),
	    mm = atoi(p + 14), ss = atoi(p + 17);
	if (mon < 1 || mon > 12 || day < 1 || day > 31 || hh > 23 || mm > 59 ||
	    ss > 60)
		return "must be an RFC 3339 time";
	p += 19;
	if (*p == '.') {
		p++;
		if (!isdigit((unsigned char)*p))
			return "must be an RFC 3339 time";
		while (isdigit((unsigned char)*p))
			p++;
	}
	if ((*p == 'Z' || *p == 'z') && p[1] == '\0')
		return NULL;
	if ((*p == '+' || *p == '-') && ndigits(p + 1, 2) && p[3] == ':' &&
	    ndigits(p + 4, 2) && p[6] == '\0')
		return NULL;
	return "must be an RFC 3339 time";
}

const char *
tenants_check_url(const char *v)
{
	size_t len = v ? strlen(v) : 0;

	if (len == 0)
		return "is required";
	if (len > 2048)
		return "is too long (2048 characters at most)";
	if (strncmp(v, "https://", 8) != 0 && strncmp(v, "http://", 7) != 0)
		return "must be an http:// or https:// URL";
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)v[i] <= 0x20 || (unsigned char)v[i] >= 0x7f)
			return "must be an http:// or https:// URL";
	return NULL;
}

const char *
tenants_check_digits(const char *v, size_t min, size_t max)
{
	size_t len = v ? strlen(v) : 0;

	if (len == 0)
		return "is required";
	if (len < min || len > max)
		return "has the wrong length";
	for (size_t i = 0; i < len; i++)
		if (!isdigit((unsigned char)v[i]))
			return "may hold only digits";
	return NULL;
}

void
tenants_slug_from_name(const char *name, char out[64])
{
	size_t n = 0;
	bool dash = false;

	for (const char *p = name; p && *p && n < 50; p++) {
		unsigned char c = (unsigned char)*p;
		if (isalnum(c) && c < 0x80) {
			if (dash && n > 0)
				out[n++] = '-';
			dash = false;
			if (n < 50)
				out[n++] = (char)tolower(c);
		} else
			dash = true;
	}
	while (n > 0 && out[n - 1] == '-')
		n--;
	out[n] = '\0';
	if (n < 3) {
		if (n == 0)
			snprintf(out, 64, "tenant");
		else {
			char tmp[8];
			memcpy(tmp, out, n + 1);
			snprintf(out, 64, "tenant-%s", tmp);
		}
	}
}

static const char *const known_scopes[] = {
	"tenant:read",        "tenant:write",
	"members:read",       "audit:read",
	"channels:read",      "channels:write",
	"agents:read",        "agents:write",
	"conversations:read", "conversations:write",
	"messages:write",     "contacts:read",
	"contacts:write",     "settings:read",
	"settings:write",     "templates:read",
	"templates:write",    "campaigns:read",
	"campaigns:write",    "followups:read",
	"followups:write",    "leads:read",
	"leads:write",        "orders:read",
	"orders:write",       "actions:read",
	"actions:write",      "webhooks:read",
	"webhooks:write",     "analytics:read",
	"billing:read",       NULL
};

bool
tenants_scope_known(const char *scope)
{
	for (int i = 0; scope != NULL && known_scopes[i] != NULL; i++)
		if (strcmp(scope, known_scopes[i]) == 0)
			return true;
	return false;
}

static const char *const role_names[] = { NULL, "viewer", "agent", "admin",
	                                  "owner" };

const char *
tenants_role_name(int role)
{
	return role >= 1 && role <= 4 ? role_names[role] : NULL;
}

int
tenants_role_parse(const char *s)
{
	for (int i = 1; s != NULL && i <= 4; i++)
		if (strcmp(s, role_names[i]) == 0)
			return i;
	return 0;
}

// The Authenticate cache: open hashing in shards, each with its own mutex
// (a lookup holds it for one bucket walk and a copy, so 16 concurrent
// callers rarely meet). Entries live long (the TTL, minutes) because the
// change feed evicts what changed; they are answered only while the feed
// was read completely within stale_ms (README).

#define SHARDS 64

typedef struct centry {
	uint8_t hash[TENANTS_HASH_LEN];
	int64_t until_ms;                     // monotonic
	uint64_t fp_tenant, fp_user, fp_cred; // fingerprints for eviction
	tenants_principal p;
	struct centry *next;
} centry;

typedef struct shard {
	pthread_mutex_t mtx;
	centry **buckets;
	size_t mask; // nbuckets - 1 (a power of two)
	size_t n;
	char pad[64]; // keeps neighbouring shards' locks off one cache line
} shard;

struct tenants_cache {
	shard shards[SHARDS];
	size_t max_per_shard;
	int64_t ttl_ms;
	int64_t stale_ms;
	_Atomic int64_t fresh_ms; // the feed was complete as of (monotonic)
	_Atomic uint64_t gen;     // bumped before every eviction
};

int64_t
tenants_mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t
wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

// FNV-1a; 0 stands for "" (matches nothing but a wildcard).
static uint64_t
fp(const char *s)
{
	uint64_t h = 1469598103934665603ULL;
	if (s == NULL || *s == '\0')
		return 0;
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ULL;
	return h | 1;
}

tenants_cache *
tenants_cache_new(size_t max_entries, int64_t ttl_ms, int64_t stale_ms)
{
	tenants_cache *c = calloc(1, sizeof(*c));
	size_t nb = 16;

	if (c == NULL)
		return NULL;
	c->ttl_ms = ttl_ms > TENANTS_CACHE_TTL_MAX ? TENANTS_CACHE_TTL_MAX
	            : ttl_ms < 0                   ? 0
	                                           : ttl_ms;
	c->stale_ms = stale_ms > 1000 ? 1000 : stale_ms < 0 ? 0 : stale_ms;
	c->max_per_shard = max_entries / SHARDS + 1;
	while (nb < c->max_per_shard && nb < 65536)
		nb *= 2;
	atomic_init(&c->fresh_ms, INT64_MIN / 2);
	atomic_init(&c->gen, 1);
	for (int i = 0; i < SHARDS; i++) {
		shard *s = &c->shards[i];
		pthread_mutex_init(&s->mtx, NULL);
		s->mask = nb - 1;
		s->buckets = calloc(nb, sizeof(centry *));
		if (s->buckets == NULL) {
			tenants_cache_free(c);
			return NULL;
		}
	}
	return c;
}

static void
entry_free(centry *e)
{
	sodium_memzero(e, sizeof(*e));
	free(e);
}

void
tenants_cache_free(tenants_cache *c)
{
	if (c == NULL)
		return;
	for (int i = 0; i < SHARDS; i++) {
		shard *s = &c->shards[i];
		for (size_t b = 0; s->buckets && b <= s->mask; b++)
			for (centry *e = s->buckets[b], *nx; e; e = nx) {
				nx = e->next;
				entry_free(e);
			}
		free(s->buckets);
		pthread_mutex_destroy(&s->mtx);
	}
	free(c);
}

static shard *
shard_of(tenants_cache *c, const uint8_t *hash, size_t *bucket)
{
	uint64_t h;
	memcpy(&h, hash, sizeof(h)); // SHA-256: every bit is as good
	shard *s = &c->shards[h % SHARDS];
	*bucket = (size_t)(h / SHARDS) & s->mask;
	return s;
}

bool
tenants_cache_usable(tenants_cache *c)
{
	return c->ttl_ms > 0 && c->stale_ms > 0 &&
	       tenants_mono_ms() - atomic_load(&c->fresh_ms) <= c->stale_ms;
}

bool
tenants_cache_get(tenants_cache *c, const uint8_t hash[TENANTS_HASH_LEN],
                  tenants_principal *p)
{
	size_t b;
	shard *s = shard_of(c, hash, &b);
	int64_t now = tenants_mono_ms();
	bool hit = false;

	if (c->ttl_ms == 0 || c->stale_ms == 0 ||
	    now - atomic_load(&c->fresh_ms) > c->stale_ms)
		return false; // the feed is late: the database answers
	pthread_mutex_lock(&s->mtx);
	for (centry *e = s->buckets[b]; e; e = e->next)
		if (sodium_memcmp(e->hash, hash, TENANTS_HASH_LEN) == 0) {
			if (e->until_ms > now) {
				*p = e->p;
				hit = true;
			}
			break;
		}
	pthread_mutex_unlock(&s->mtx);
	return hit;
}

uint64_t
tenants_cache_gen(tenants_cache *c)
{
	return atomic_load(&c->gen);
}

// Removes expired entries of the shard; called with its lock held.
static void
shard_sweep(shard *s, int64_t now)
{
	for (size_t b = 0; b <= s->mask; b++)
		for (centry **pp = &s->buckets[b]; *pp;) {
			centry *e = *pp;
			if (e->until_ms <= now) {
				*pp = e->next;
				entry_free(e);
				s->n--;
			} else
				pp = &e->next;
		}
}

void
tenants_cache_put(tenants_cache *c, const uint8_t hash[TENANTS_HASH_LEN],
                  const tenants_principal *p, int64_t expires_ms, uint64_t gen)
{
	size_t b;
	shard *s = shard_of(c, hash, &b);
	int64_t now = tenants_mono_ms();
	int64_t until = now + c->ttl_ms;
	centry *e;

	if (c->ttl_ms == 0 || c->stale_ms == 0)
		return;
	if (expires_ms > 0) {
		int64_t left = expires_ms - wall_ms();
		if (left <= 0)
			return;
		if (now + left < until)
			until = now + left;
	}
	pthread_mutex_lock(&s->mtx);
	// An eviction ran since the caller read the database: what it read
	// may be what was just evicted. Evictions bump gen before taking the
	// shard locks, so checking under the lock closes the race.
	if (atomic_load(&c->gen) != gen) {
		pthread_mutex_unlock(&s->mtx);
		return;
	}
	for (e = s->buckets[b]; e; e = e->next)
		if (memcmp(e->hash, hash, TENANTS_HASH_LEN) == 0)
			break;
	if (e == NULL) {
		if (s->n >= c->max_per_shard)
			shard_sweep(s, now);
		if (s->n >= c->max_per_shard && s->buckets[b] != NULL) {
			centry *old = s->buckets[b]; // full: replace one
			s->buckets[b] = old->next;
			entry_free(old);
			s->n--;
		}
		if (s->n >= c->max_per_shard ||
		    (e = malloc(sizeof(*e))) == NULL) {
			pthread_mutex_unlock(&s->mtx);
			return;
		}
		memcpy(e->hash, hash, TENANTS_HASH_LEN);
		e->next = s->buckets[b];
		s->buckets[b] = e;
		s->n++;
	}
	e->p = *p;
	e->fp_tenant = fp(p->tenant_id);
	e->fp_user = fp(p->user_id);
	e->fp_cred = fp(p->cred_id);
	e->until_ms = until;
	pthread_mutex_unlock(&s->mtx);
}

void
tenants_cache_drop(tenants_cache *c, const uint8_t hash[TENANTS_HASH_LEN])
{
	size_t b;
	shard *s = shard_of(c, hash, &b);

	atomic_fetch_add(&c->gen, 1);
	pthread_mutex_lock(&s->mtx);
	for (centry **pp = &s->buckets[b]; *pp; pp = &(*pp)->next)
		if (memcmp((*pp)->hash, hash, TENANTS_HASH_LEN) == 0) {
			centry *e = *pp;
			*pp = e->next;
			entry_free(e);
			s->n--;
			break;
		}
	pthread_mutex_unlock(&s->mtx);
}

typedef struct match {
	uint64_t t, u, k; // 0: any
	const tenants_change *ch;
} match;

static bool
matches(const centry *e, const match *m)
{
	if ((m->t && m->t != e->fp_tenant) || (m->u && m->u != e->fp_user) ||
	    (m->k && m->k != e->fp_cred))
		return false;
	return (!m->t || strcmp(m->ch->tenant_id, e->p.tenant_id) == 0) &&
	       (!m->u || strcmp(m->ch->user_id, e->p.user_id) == 0) &&
	       (!m->k || strcmp(m->ch->cred_id, e->p.cred_id) == 0);
}

size_t
tenants_cache_apply(tenants_cache *c, const tenants_change *ch, size_t n)
{
	match *m = calloc(n ? n : 1, sizeof(*m));
	size_t dropped = 0;
	bool all = m == NULL; // out of memory: evicting everything is safe

	for (size_t i = 0; m != NULL && i < n; i++) {
		m[i] = (match){ fp(ch[i].tenant_id), fp(ch[i].user_id),
			        fp(ch[i].cred_id), &ch[i] };
		if (!m[i].t && !m[i].u && !m[i].k)
			all = true;
	}
	atomic_fetch_add(&c->gen, 1);
	for (int i = 0; i < SHARDS; i++) {
		shard *s = &c->shards[i];
		pthread_mutex_lock(&s->mtx);
		for (size_t b = 0; s->n > 0 && b <= s->mask; b++)
			for (centry **pp = &s->buckets[b]; *pp;) {
				centry *e = *pp;
				bool hit = all;
				for (size_t j = 0; !hit && j < n; j++)
					hit = matches(e, &m[j]);
				if (hit) {
					*pp = e->next;
					entry_free(e);
					s->n--;
					dropped++;
				} else
					pp = &e->next;
			}
		pthread_mutex_unlock(&s->mtx);
	}
	free(m);
	return dropped;
}

void
tenants_cache_flush(tenants_cache *c)
{
	tenants_change all = { "", "", "" };
	tenants_cache_apply(c, &all, 1);
}

void
tenants_cache_drop_tenant(tenants_cache *c, const char *tenant_id,
                          const char *user_id)
{
	tenants_change ch = { "", "", "" };
	snprintf(ch.tenant_id, sizeof(ch.tenant_id), "%s", tenant_id);
	if (user_id != NULL)
		snprintf(ch.user_id, sizeof(ch.user_id), "%s", user_id);
	if (ch.tenant_id[0] == '\0') // never a flush by mistake
		return;
	tenants_cache_apply(c, &ch, 1);
}

void
tenants_cache_fresh(tenants_cache *c, int64_t as_of_ms)
{
	atomic_store(&c->fresh_ms, as_of_ms);
}

size_t
tenants_cache_size(tenants_cache *c)
{
	size_t n = 0;
	for (int i = 0; i < SHARDS; i++) {
		pthread_mutex_lock(&c->shards[i].mtx);
		n += c->shards[i].n;
		pthread_mutex_unlock(&c->shards[i].mtx);
	}
	return n;
}
