// Outbound webhooks to tenants: endpoints (URL, event types, a signing
// secret shown once), durable deliveries and their sender.
//
// Deliveries are written by the database in the transaction of the event
// itself (trigger messaging.webhooks_on_event on the outbox, migration
// 004): one per active endpoint of the tenant that wants the type. Sender
// threads claim a due delivery with FOR UPDATE SKIP LOCKED, push its
// next_attempt_at past the send budget (the lease: a sender that dies
// mid-request leaves it to be sent again after the lease, with the same
// id), and POST it signed the Standard Webhooks way:
//
//   webhook-id:        the delivery id (the same on every attempt/replay)
//   webhook-timestamp: Unix seconds of this attempt
//   webhook-signature: v1,<base64 HMAC-SHA256(key, "<id>.<ts>.<body>")>
//
// where key is the base64 after "whsec_" in the endpoint's secret and body
// is the stored payload's text, byte for byte the same on every attempt.
// A 2xx delivers it; anything else is retried with capped exponential
// back-off and jitter until retry_since_at + PARLEY_MESSAGING_WEBHOOK_MAX_AGE
// (24 h), then failed. An endpoint failing without a success for
// PARLEY_MESSAGING_WEBHOOK_DISABLE_AFTER is disabled (disabled_at, reason),
// its waiting deliveries failed, and the tenant told by the event
// webhook_endpoint.disabled.
//
// SSRF guard: only http(s), no credentials in the URL, and every address
// the host resolves to must be public, unless it falls in the operator's
// allow-list PARLEY_MESSAGING_WEBHOOK_ALLOW (comma-separated CIDRs; empty
// by default). Checked when an endpoint is written and again before every
// request, whose connection is pinned to the checked address
// (CURLOPT_RESOLVE) so a DNS answer that changes in between is not used.
// Redirects are not followed; proxies from the environment are ignored.
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>
#include <sodium.h>

#include "pl/id.h"
#include "pl/log.h"
#include "pl/seal.h"
#include "engage.h"

#define MAX_URL    2048
#define MAX_DESC   500
#define MAX_TYPES  32
#define SECRET_LEN 32 // random bytes of a secret

static const char SQL_ENDPOINT_JSON[] =
        "jsonb_strip_nulls(jsonb_build_object('id', e.id, 'url', e.url, "
        "'description', e.description, 'event_types', to_jsonb(e.event_types), "
        "'active', e.is_active, 'disabled_at', "
        "messaging.fmt_ts(e.disabled_at), "
        "'disabled_reason', e.disabled_reason, 'failing_since_at', "
        "messaging.fmt_ts(e.failing_since_at), 'created_at', "
        "messaging.fmt_ts(e.created_at), 'updated_at', "
        "messaging.fmt_ts(e.updated_at)))::text";

static const char SQL_DELIVERY_JSON[] =
        "jsonb_strip_nulls(jsonb_build_object('id', d.id, 'endpoint_id', "
        "d.endpoint_id, 'event_id', d.event_id, 'event_type', d.event_type, "
        "'status', d.status, 'attempts', d.attempts, 'last_http_status', "
        "d.last_http_status, 'last_error', d.last_error, 'last_latency_ms', "
        "d.last_latency_ms, 'next_attempt_at', CASE WHEN d.status IN "
        "('pending', 'retrying') THEN messaging.fmt_ts(d.next_attempt_at) "
        "END, 'delivered_at', messaging.fmt_ts(d.delivered_at), 'payload', "
        "d.payload, 'created_at', messaging.fmt_ts(d.created_at)))::text";

// ---------------------------------------------------------------------------
// Configuration (read from the environment once per use: cheap, and tests
// set it before starting the service).

static int64_t
env_ms(const char *name, int64_t def, int64_t lo, int64_t hi)
{
	const char *v = getenv(name);
	char *end;
	double x;

	if (v == NULL || v[0] == '\0')
		return def;
	x = strtod(v, &end);
	if (end == v)
		return def;
	if (strcmp(end, "ms") == 0)
		;
	else if (strcmp(end, "s") == 0 || *end == '\0')
		x *= 1000;
	else if (strcmp(end, "m") == 0)
		x *= 60000;
	else if (strcmp(end, "h") == 0)
		x *= 3600000;
	else if (strcmp(end, "d") == 0)
		x *= 86400000;
	else
		return def;
	if (x < (double)lo)
		return lo;
	if (x > (double)hi)
		return hi;
	return (int64_t)x;
}

#define DAY_MS (86400LL * 1000)

static int64_t
cfg_retry_base(void)
{
	return env_ms("PARLEY_MESSAGING_WEBHOOK_RETRY_BASE", 5000, 1, DAY_MS);
}
static int64_t
cfg_retry_max(void)
{
	return env_ms("PARLEY_MESSAGING_WEBHOOK_RETRY_MAX", 3600000, 1, DAY_MS);
}
static int64_t
cfg_max_age(void)
{
	return env_ms("PARLEY_MESSAGING_WEBHOOK_MAX_AGE", DAY_MS, 1,
	              30 * DAY_MS);
}
static int64_t
cfg_disable_after(void)
{
	return env_ms("PARLEY_MESSAGING_WEBHOOK_DISABLE_AFTER", 5 * DAY_MS, 1,
	              365 * DAY_MS);
}
static int64_t
cfg_timeout(void)
{
	return env_ms("PARLEY_MESSAGING_WEBHOOK_TIMEOUT", 10000, 100, 60000);
}

// ---------------------------------------------------------------------------
// Signing

char *
engage_webhook_sign(pl_arena *a, const char *secret, const char *id,
                    long long ts, const char *body, size_t len)
{
	unsigned char key[256], mac[crypto_auth_hmacsha256_BYTES];
	char tsb[32],
	        b64[sodium_base64_ENCODED_LEN(crypto_auth_hmacsha256_BYTES,
	                                      sodium_base64_VARIANT_ORIGINAL)];
	crypto_auth_hmacsha256_state st;
	size_t klen = 0;

	if (secret == NULL || strncmp(secret, "whsec_", 6) != 0 ||
	    sodium_base642bin(key, sizeof(key), secret + 6, strlen(secret + 6),
	                      NULL, &klen, NULL,
	                      sodium_base64_VARIANT_ORIGINAL) != 0 ||
	    klen == 0)
		return NULL;
	snprintf(tsb, sizeof(tsb), "%lld", ts);
	crypto_auth_hmacsha256_init(&st, key, klen);
	crypto_auth_hmacsha256_update(&st, (const unsigned char *)id,
	                              strlen(id));
	crypto_auth_hmacsha256_update(&st, (const unsigned char *)".", 1);
	crypto_auth_hmacsha256_update(&st, (const unsigned char *)tsb,
	                              strlen(tsb));
	crypto_auth_hmacsha256_update(&st, (const unsigned char *)".", 1);
	crypto_auth_hmacsha256_update(&st, (const unsigned char *)body, len);
	crypto_auth_hmacsha256_final(&st, mac);
	sodium_memzero(key, sizeof(key));
	sodium_memzero(&st, sizeof(st));
	sodium_bin2base64(b64, sizeof(b64), mac, sizeof(mac),
	                  sodium_base64_VARIANT_ORIGINAL);
	return pl_arena_printf(a, "v1,%s", b64);
}

// Secrets at rest (DESIGN §5): with PARLEY_CREDENTIALS_KEY set (the key
// tenants and agents seal credentials with), a secret is stored as
// "sealed:<key id>:<base64 of pl_seal's bytes>"; without it, as given (a
// warning at the first write). Both forms are read.
static struct {
	pthread_once_t once;
	bool have, bad;
	uint8_t key[32];
	char kid[64];
} sk = { .once = PTHREAD_ONCE_INIT };

static void
seal_key_load(void)
{
	const char *k = getenv("PARLEY_CREDENTIALS_KEY");
	const char *id = getenv("PARLEY_CREDENTIALS_KEY_ID");

	snprintf(sk.kid, sizeof(sk.kid), "%s", id && id[0] ? id : "k1");
	if (k == NULL || k[0] == '\0') {
		pl_warn("PARLEY_CREDENTIALS_KEY is not set: webhook secrets "
		        "are stored unsealed");
		return;
	}
	sk.have = pl_key_decode(k, sk.key);
	sk.bad = !sk.have;
	if (sk.bad)
		pl_error("PARLEY_CREDENTIALS_KEY must be base64 of 32 bytes: "
		         "webhook endpoints cannot be written");
}

// The stored form of a new secret, in the call's arena.
static int
secret_store(pl_call *call, const char *plain, const char **out)
{
	uint8_t *ct = NULL;
	size_t n = 0, b64;
	char *s;

	pthread_once(&sk.once, seal_key_load);
	if (sk.bad)
		return pl_call_error(call, PL_FAILED_PRECONDITION,
		                     "webhook secrets cannot be sealed: the "
		                     "service's key is misconfigured");
	if (!sk.have) {
		*out = plain;
		return PL_OK;
	}
	if (pl_seal(sk.key, sk.kid, plain, &ct, &n) != PL_OK)
		return pl_call_error(call, PL_INTERNAL, "could not seal");
	b64 = sodium_base64_ENCODED_LEN(n, sodium_base64_VARIANT_ORIGINAL);
	s = pl_arena_alloc(call->arena, strlen(sk.kid) + b64 + 9);
	if (s == NULL) {
		free(ct);
		return pl_call_error(call, PL_RESOURCE_EXHAUSTED, "no memory");
	}
	snprintf(s, strlen(sk.kid) + 9, "sealed:%s:", sk.kid);
	sodium_bin2base64(s + strlen(s), b64, ct, n,
	                  sodium_base64_VARIANT_ORIGINAL);
	free(ct);
	*out = s;
	return PL_OK;
}

// The secret in clear from its stored form (in a); NULL when it cannot be
// opened (another key id, no key, damaged).
static char *
secret_open(pl_arena *a, const char *stored)
{
	const char *kid, *b64;
	uint8_t *ct;
	size_t n = 0, len;
	char *plain = NULL;

	if (strncmp(stored, "sealed:", 7) != 0)
		return pl_arena_strdup(a, stored);
	pthread_once(&sk.once, seal_key_load);
	kid = stored + 7;
	if ((b64 = strchr(kid, ':')) == NULL || !sk.have ||
	    (size_t)(b64 - kid) != strlen(sk.kid) ||
	    strncmp(kid, sk.kid, strlen(sk.kid)) != 0)
		return NULL;
	b64++;
	len = strlen(b64);
	if ((ct = pl_arena_alloc(a, len)) == NULL ||
	    sodium_base642bin(ct, len, b64, len, NULL, &n, NULL,
	                      sodium_base64_VARIANT_ORIGINAL) != 0 ||
	    pl_unseal(a, sk.key, sk.kid, ct, n, &plain) != PL_OK)
		return NULL;
	return plain;
}

// A new "whsec_<base64 of 32 random bytes>" secret into out (64 bytes).
static void
new_secret(char out[64])
{
	unsigned char k[SECRET_LEN];

	randombytes_buf(k, sizeof(k));
	memcpy(out, "whsec_", 6);
	sodium_bin2base64(out + 6, 58, k, sizeof(k),
	                  sodium_base64_VARIANT_ORIGINAL);
	sodium_memzero(k, sizeof(k));
}

// ---------------------------------------------------------------------------
// SSRF guard

// An address family + 16 bytes (IPv4 in the first 4).
typedef struct addr {
	int fam;
	unsigned char b[16];
} addr;

static bool
prefix_match(const unsigned char *a, const unsigned char *net, int bits)
{
	int full = bits / 8, rest = bits % 8;

	if (memcmp(a, net, (size_t)full) != 0)
		return false;
	if (rest == 0)
		return true;
	return ((a[full] ^ net[full]) & (0xff << (8 - rest)) & 0xff) == 0;
}

// The operator's allow-list: does a fall in one of its CIDRs?
static bool
allowed(const addr *a)
{
	const char *v = getenv("PARLEY_MESSAGING_WEBHOOK_ALLOW");
	char buf[1024], *save = NULL, *tok;

	if (v == NULL || v[0] == '\0' || strlen(v) >= sizeof(buf))
		return false;
	snprintf(buf, sizeof(buf), "%s", v);
	for (tok = strtok_r(buf, ", ", &save); tok;
	     tok = strtok_r(NULL, ", ", &save)) {
		char *slash = strchr(tok, '/');
		unsigned char net[16];
		int fam, bits;
		if (slash)
			*slash = '\0';
		fam = strchr(tok, ':') ? AF_INET6 : AF_INET;
		if (fam != a->fam || inet_pton(fam, tok, net) != 1)
			continue;
		bits = slash ? atoi(slash + 1) : (fam == AF_INET ? 32 : 128);
		if (bits < 0 || bits > (fam == AF_INET ? 32 : 128))
			continue;
		if (prefix_match(a->b, net, bits))
			return true;
	}
	return false;
}

static bool
v4_blocked(const unsigned char *b)
{
	static const struct {
		unsigned char net[4];
		int bits;
	} bad[] = {
		{ { 0, 0, 0, 0 }, 8 },       // "this" network
		{ { 10, 0, 0, 0 }, 8 },      // private
		{ { 100, 64, 0, 0 }, 10 },   // carrier-grade NAT
		{ { 127, 0, 0, 0 }, 8 },     // loopback
		{ { 169, 254, 0, 0 }, 16 },  // link-local, cloud metadata
		{ { 172, 16, 0, 0 }, 12 },   // private
		{ { 192, 0, 0, 0 }, 24 },    // IETF protocol assignments
		{ { 192, 0, 2, 0 }, 24 },    // documentation
		{ { 192, 88, 99, 0 }, 24 },  // 6to4 relay
		{ { 192, 168, 0, 0 }, 16 },  // private
		{ { 198, 18, 0, 0 }, 15 },   // benchmarking
		{ { 198, 51, 100, 0 }, 24 }, // documentation
		{ { 203, 0, 113, 0 }, 24 },  // documentation
		{ { 224, 0, 0, 0 }, 4 },     // multicast
		{ { 240, 0, 0, 0 }, 4 },     // reserved, broadcast
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (prefix_match(b, bad[i].net, bad[i].bits))
			return true;
	return false;
}

static bool
blocked(const addr *a)
{
	static const unsigned char mapped[12] = { 0, 0, 0, 0, 0,    0,
		                                  0, 0, 0, 0, 0xff, 0xff };
	static const unsigned char nat64[12] = { 0x00, 0x64, 0xff, 0x9b };
	static const unsigned char zero[16] = { 0 };

	if (a->fam == AF_INET)
		return v4_blocked(a->b);
	// IPv4 inside IPv6 is judged as IPv4.
	if (memcmp(a->b, mapped, 12) == 0 || memcmp(a->b, nat64, 12) == 0)
		return v4_blocked(a->b + 12);
	if (memcmp(a->b, zero, 15) == 0 && (a->b[15] == 0 || a->b[15] == 1))
		return true;          // :: and ::1
	if ((a->b[0] & 0xfe) == 0xfc) // fc00::/7 unique local (incl.
		return true;          // fd00:ec2::254, the AWS metadata)
	if (a->b[0] == 0xfe && (a->b[1] & 0xc0) == 0x80)
		return true; // fe80::/10 link-local
	if (a->b[0] == 0xfe && (a->b[1] & 0xc0) == 0xc0)
		return true; // fec0::/10 site-local (deprecated)
	if (a->b[0] == 0xff)
		return true; // multicast
	if (a->b[0] == 0x20 && a->b[1] == 0x01 && a->b[2] == 0x0d &&
	    a->b[3] == 0xb8)
		return true; // 2001:db8::/32 documentation
	return false;
}

bool
engage_webhook_url_ok(const char *url, char *why, size_t whylen, char *pin,
                      size_t pinlen)
{
	CURLU *u = NULL;
	char *scheme = NULL, *host = NULL, *port = NULL, *user = NULL;
	char h[256];
	struct addrinfo hints, *res = NULL, *ai;
	bool ok = false;
	int n = 0;

	why[0] = '\0';
	if (pin)
		pin[0] = '\0';
	if (url == NULL || url[0] == '\0' || strlen(url) > MAX_URL) {
		snprintf(why, whylen, "is required, at most %d characters",
		         MAX_URL);
		return false;
	}
	for (const char *c = url; *c; c++)
		if ((unsigned char)*c <= 0x20 || *c == 0x7f) {
			snprintf(why, whylen,
			         "has spaces or control characters");
			return false;
		}
	u = curl_url();
	if (u == NULL || curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) !=
	            CURLUE_OK) {
		snprintf(why, whylen, "is not a valid URL");
		goto out_free;
	}
	if (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0) {
		snprintf(why, whylen, "must be http or https");
		goto out_free;
	}
	if (curl_url_get(u, CURLUPART_USER, &user, 0) == CURLUE_OK) {
		snprintf(why, whylen, "must not carry credentials");
		goto out_free;
	}
	// Brackets of an IPv6 literal off for the resolver.
	if (host[0] == '[') {
		size_t l = strlen(host);
		snprintf(h, sizeof(h), "%.*s", (int)(l > 2 ? l - 2 : 0),
		         host + 1);
	} else {
		snprintf(h, sizeof(h), "%s", host);
	}
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	if (getaddrinfo(h, port, &hints, &res) != 0 || res == NULL) {
		snprintf(why, whylen, "host \"%s\" could not be resolved", h);
		goto out_free;
	}
	ok = true;
	for (ai = res; ai && ok; ai = ai->ai_next) {
		addr a = { 0 };
		char txt[INET6_ADDRSTRLEN];
		if (ai->ai_family == AF_INET) {
			a.fam = AF_INET;
			memcpy(a.b,
			       &((struct sockaddr_in *)ai->ai_addr)->sin_addr,
			       4);
		} else if (ai->ai_family == AF_INET6) {
			a.fam = AF_INET6;
			memcpy(a.b,
			       &((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr,
			       16);
		} else {
			continue;
		}
		inet_ntop(a.fam, a.b, txt, sizeof(txt));
		if (blocked(&a) && !allowed(&a)) {
			snprintf(why, whylen,
			         "resolves to %s, a loopback, private, "
			         "link-local or reserved address",
			         txt);
			ok = false;
		} else if (n++ == 0 && pin != NULL) {
			// Pin the first checked address (an IPv6 one in
			// brackets, as CURLOPT_RESOLVE wants it).
			snprintf(pin, pinlen,
			         a.fam == AF_INET6 ? "%s:%s:[%s]" : "%s:%s:%s",
			         host, port, txt);
		}
	}
	if (ok && n == 0) {
		snprintf(why, whylen, "host \"%s\" has no usable address", h);
		ok = false;
	}
	freeaddrinfo(res);
out_free:
	curl_free(scheme);
	curl_free(host);
	curl_free(port);
	curl_free(user);
	curl_url_cleanup(u);
	return ok;
}

// ---------------------------------------------------------------------------
// RPCs

static bool
inmask(char **m, size_t n, const char *f)
{
	for (size_t i = 0; i < n; i++)
		if (m[i] && strcmp(m[i], f) == 0)
			return true;
	return false;
}

typedef struct ep_in {
	const char *url, *description;
	char **types;
	size_t n_types;
	bool active;
	bool s_url, s_desc, s_types, s_active;
} ep_in;

// The event types as a text[] literal ({"a","b"}) after checking them.
static int
types_lit(pl_call *call, char **t, size_t n, const char **out)
{
	if (n > MAX_TYPES)
		return pl_call_violation(call, "event_types",
		                         "at most %d types", MAX_TYPES);
	for (size_t i = 0; i < n; i++) {
		size_t l = t[i] ? strlen(t[i]) : 0;
		if (l == 0 || l > 64)
			return pl_call_violation(
			        call, "event_types",
			        "type %zu is empty or too long", i);
		for (size_t j = 0; j < l; j++)
			if (!((t[i][j] >= 'a' && t[i][j] <= 'z') ||
			      t[i][j] == '.' || t[i][j] == '_'))
				return pl_call_violation(
				        call, "event_types",
				        "\"%s\" is not an event type", t[i]);
	}
	if ((*out = pl_db_array(call->arena, (const char *const *)t, n)) ==
	    NULL)
		return pl_call_error(call, PL_RESOURCE_EXHAUSTED,
		                     "out of memory");
	return PL_OK;
}

static int
check_ep(pl_call *call, const ep_in *x, const char **types)
{
	char why[256];
	int rv;

	if (x->s_url &&
	    !engage_webhook_url_ok(x->url, why, sizeof(why), NULL, 0))
		return pl_call_violation(call, "url", "%s", why);
	if (x->s_desc && x->description && strlen(x->description) > MAX_DESC)
		return pl_call_violation(call, "description",
		                         "is longer than %d characters",
		                         MAX_DESC);
	*types = NULL;
	if (x->s_types &&
	    (rv = types_lit(call, x->types, x->n_types, types)) != PL_OK)
		return rv;
	return PL_OK;
}

typedef struct ep_arg {
	ep_in in;
	const char *id, *types, *secret;
	bool create, rotate, found;
	void **out;
} ep_arg;

static int
read_ep(pl_call *call, pl_db *db, const char *id, void **out)
{
	const char *p[2] = { eg_tenant(call), id };
	PGresult *r = NULL;
	int rv = eg_exec(call, db,
	                 pl_arena_printf(call->arena,
	                                 "SELECT %s FROM "
	                                 "messaging.webhook_endpoints e WHERE "
	                                 "e.tenant_id = $1 AND e.id = $2",
	                                 SQL_ENDPOINT_JSON),
	                 2, p, &r, "read the endpoint");

	if (rv != PL_OK)
		return rv;
	rv = eg_row_pb(call, r,
	               &parley__messaging__v1__webhook_endpoint__descriptor,
	               out);
	PQclear(r);
	if (rv == PL_NOT_FOUND)
		return pl_call_error(call, PL_NOT_FOUND, "endpoint not found");
	return rv;
}

static int
ep_fn(pl_call *call, pl_db *db, void *arg)
{
	ep_arg *x = arg;
	const char *tenant = eg_tenant(call);
	PGresult *r = NULL;
	int rv;

	if (x->types != NULL) {
		const char *p[1] = { x->types };
		if ((rv = eg_exec(call, db,
		                  "SELECT $1::text[] <@ "
		                  "messaging.webhook_event_types()",
		                  1, p, &r, "check the event types")) != PL_OK)
			return rv;
		rv = PQgetvalue(r, 0, 0)[0] == 't'
		             ? PL_OK
		             : pl_call_violation(call, "event_types",
		                                 "unknown event type (known: "
		                                 "message.received, "
		                                 "message.status, ...)");
		PQclear(r);
		r = NULL;
		if (rv != PL_OK)
			return rv;
	}
	if (x->create) {
		const char *p[6] = { tenant,
			             x->id,
			             x->in.url,
			             x->in.description ? x->in.description : "",
			             x->types ? x->types : "{}",
			             x->secret };
		rv = eg_exec(call, db,
		             "INSERT INTO messaging.webhook_endpoints "
		             "(tenant_id, id, url, description, event_types, "
		             "secret) VALUES ($1, $2, $3, $4, $5::text[], $6) "
		             "RETURNING id",
		             6, p, &r, "create the endpoint");
	} else if (x->rotate) {
		const char *p[3] = { tenant, x->id, x->secret };
		rv = eg_exec(call, db,
		             "UPDATE messaging.webhook_endpoints SET secret = "
		             "$3, updated_at = now() WHERE tenant_id = $1 AND "
		             "id = $2 RETURNING id",
		             3, p, &r, "rotate the secret");
	} else {
		const char *p[6] = {
			tenant,
			x->id,
			x->in.s_url ? x->in.url : NULL,
			x->in.s_desc
			        ? (x->in.description ? x->in.description : "")
			        : NULL,
			x->in.s_types ? x->types : NULL,
			x->in.s_active ? (x->in.active ? "t" : "f") : NULL
		};
		// Re-enabling clears the failure record.
		rv = eg_exec(call, db,
		             "UPDATE messaging.webhook_endpoints SET url = "
		             "coalesce($3, url), description = coalesce($4, "
		             "description), event_types = coalesce($5::text[], "
		             "event_types), disabled_at = CASE WHEN "
		             "$6::boolean THEN "
		             "NULL ELSE disabled_at END, disabled_reason = "
		             "CASE WHEN "
		             "$6::boolean THEN '' ELSE disabled_reason END, "
		             "failing_since_at = CASE WHEN $6::boolean THEN "
		             "NULL ELSE "
		             "failing_since_at END, is_active = "
		             "coalesce($6::boolean, "
		             "is_active), updated_at = now() WHERE tenant_id = "
		             "$1 AND "
		             "id = $2 RETURNING id",
		             6, p, &r, "update the endpoint");
	}
	if (rv != PL_OK)
		return rv;
	x->found = PQntuples(r) == 1;
	PQclear(r);
	if (!x->found)
		return PL_OK;
	return read_ep(call, db, x->id, x->out);
}

int
eg_create_webhook_endpoint(pl_call *call, const void *inp, void *outp)
{
	const EG_M(CreateWebhookEndpointRequest) *in = inp;
	EG_M(CreateWebhookEndpointResponse) *out = outp;
	ep_arg x = { 0 };
	char id[40], secret[64];
	int rv;

	x.in.url = in->url;
	x.in.description = in->description;
	x.in.types = in->event_types;
	x.in.n_types = in->n_event_types;
	x.in.s_url = x.in.s_desc = x.in.s_types = true;
	if ((rv = check_ep(call, &x.in, &x.types)) != PL_OK)
		return rv;
	pl_uuid7_str(id);
	new_secret(secret);
	x.id = id;
	if ((rv = secret_store(call, secret, &x.secret)) != PL_OK) {
		sodium_memzero(secret, sizeof(secret));
		return rv;
	}
	x.create = true;
	x.out = (void **)&out->endpoint;
	rv = eg_tx(call, eg_tenant(call), ep_fn, &x);
	if (rv == PL_OK) {
		out->id = out->endpoint->id;
		out->secret = pl_arena_strdup(call->arena, secret);
	}
	sodium_memzero(secret, sizeof(secret));
	return rv;
}

int
eg_update_webhook_endpoint(pl_call *call, const void *inp, void *outp)
{
	const EG_M(UpdateWebhookEndpointRequest) *in = inp;
	EG_M(UpdateWebhookEndpointResponse) *out = outp;
	static const char *const fields[] = { "url", "description",
		                              "event_types", "active" };
	bool all = in->n_update_mask == 0;
	ep_arg x = { 0 };
	int rv;

	if (!pl_uuid_valid(in->id))
		return pl_call_error(call, PL_NOT_FOUND, "endpoint not found");
	for (size_t i = 0; i < in->n_update_mask; i++) {
		bool ok = false;
		for (size_t f = 0; f < 4; f++)
			ok = ok || strcmp(in->update_mask[i], fields[f]) == 0;
		if (!ok)
			return pl_call_violation(call, "update_mask",
			                         "unknown field \"%s\"",
			                         in->update_mask[i]);
	}
	x.in.url = in->url;
	x.in.description = in->description;
	x.in.types = in->event_types;
	x.in.n_types = in->n_event_types;
	x.in.active = in->active;
	x.in.s_url = all ? eg_nz(in->url) != NULL
	                 : inmask(in->update_mask, in->n_update_mask, "url");
	x.in.s_desc =
	        all ? eg_nz(in->description) != NULL
	            : inmask(in->update_mask, in->n_update_mask, "description");
	x.in.s_types =
	        all ? in->n_event_types > 0
	            : inmask(in->update_mask, in->n_update_mask, "event_types");
	x.in.s_active =
	        all ? in->active
	            : inmask(in->update_mask, in->n_update_mask, "active");
	if ((rv = check_ep(call, &x.in, &x.types)) != PL_OK)
		return rv;
	if (x.in.s_types && x.types == NULL)
		x.types = "{}";
	x.id = in->id;
	x.out = (void **)&out->endpoint;
	if ((rv = eg_tx(call, eg_tenant(call), ep_fn, &x)) != PL_OK)
		return rv;
	return x.found ? PL_OK
	               : pl_call_error(call, PL_NOT_FOUND,
	                               "endpoint not found");
}

int
eg_rotate_webhook_secret(pl_call *call, const void *inp, void *outp)
{
	const EG_M(RotateWebhookSecretRequest) *in = inp;
	EG_M(RotateWebhookSecretResponse) *out = outp;
	ep_arg x = { 0 };
	char secret[64];
	int rv;

	if (!pl_uuid_valid(in->id))
		return pl_call_error(call, PL_NOT_FOUND, "endpoint not found");
	new_secret(secret);
	x.id = in->id;
	if ((rv = secret_store(call, secret, &x.secret)) != PL_OK) {
		sodium_memzero(secret, sizeof(secret));
		return rv;
	}
	x.rotate = true;
	x.out = (void **)&out->endpoint;
	rv = eg_tx(call, eg_tenant(call), ep_fn, &x);
	if (rv == PL_OK && !x.found)
		rv = pl_call_error(call, PL_NOT_FOUND, "endpoint not found");
	if (rv == PL_OK)
		out->secret = pl_arena_strdup(call->arena, secret);
	sodium_memzero(secret, sizeof(secret));
	return rv;
}

int
eg_get_webhook_endpoint(pl_call *call, const void *inp, void *outp)
{
	const EG_M(GetWebhookEndpointRequest) *in = inp;
	EG_M(GetWebhookEndpointResponse) *out = outp;
	const char *p[2] = { eg_tenant(call), in->id };

	if (!pl_uuid_valid(in->id))
		return pl_call_error(call, PL_NOT_FOUND, "endpoint not found");
	return eg_get(call, eg_tenant(call),
	              pl_arena_printf(call->arena,
	                              "SELECT %s FROM "
	                              "messaging.webhook_endpoints e WHERE "
	                              "e.tenant_id = $1 AND e.id = $2",
	                              SQL_ENDPOINT_JSON),
	              2, p,
	              &parley__messaging__v1__webhook_endpoint__descriptor,
	              (void **)&out->endpoint, "endpoint");
}

int
eg_list_webhook_endpoints(pl_call *call, const void *inp, void *outp)
{
	const EG_M(ListWebhookEndpointsRequest) *in = inp;
	EG_M(ListWebhookEndpointsResponse) *out = outp;
	char *after, lim[16];
	int size, rv;

	if ((rv = eg_page(call, in->page, &size, &after)) != PL_OK)
		return rv;
	snprintf(lim, sizeof(lim), "%d", size + 1);
	{
		const char *p[3] = { eg_tenant(call), after, lim };
		return eg_list(
		        call, eg_tenant(call),
		        pl_arena_printf(
		                call->arena,
		                "SELECT %s FROM "
		                "messaging.webhook_endpoints e WHERE "
		                "e.tenant_id = $1 AND ($2::uuid IS NULL "
		                "OR e.id < $2::uuid) ORDER BY e.id DESC "
		                "LIMIT $3",
		                SQL_ENDPOINT_JSON),
		        3, p, size,
		        &parley__messaging__v1__webhook_endpoint__descriptor,
		        (void ***)&out->endpoints, &out->n_endpoints,
		        &out->next_page_token);
	}
}

typedef struct del_arg {
	const char *const *p;
	bool found;
} del_arg;

static int
del_fn(pl_call *call, pl_db *db, void *arg)
{
	del_arg *x = arg;
	PGresult *r = NULL;
	int rv = eg_exec(call, db,
	                 "DELETE FROM messaging.webhook_endpoints WHERE "
	                 "tenant_id = $1 AND id = $2",
	                 2, x->p, &r, "delete the endpoint");

	if (rv == PL_OK)
		x->found = atoi(PQcmdTuples(r)) == 1;
	PQclear(r);
	return rv;
}

int
eg_delete_webhook_endpoint(pl_call *call, const void *inp, void *outp)
{
	const EG_M(DeleteWebhookEndpointRequest) *in = inp;
	const char *p[2] = { eg_tenant(call), in->id };
	del_arg x = { p, false };
	int rv;

	(void)outp;
	if (!pl_uuid_valid(in->id))
		return pl_call_error(call, PL_NOT_FOUND, "endpoint not found");
	if ((rv = eg_tx(call, eg_tenant(call), del_fn, &x)) != PL_OK)
		return rv;
	return x.found ? PL_OK
	               : pl_call_error(call, PL_NOT_FOUND,
	                               "endpoint not found");
}

static const char *const dstatus_names[] = { "", "pending", "delivered",
	                                     "retrying", "failed" };

typedef struct ld_arg {
	const char *const *p;
	bool found;
} ld_arg;

static int
ep_exists_fn(pl_call *call, pl_db *db, void *arg)
{
	ld_arg *x = arg;
	PGresult *r = NULL;
	int rv = eg_exec(call, db,
	                 "SELECT 1 FROM messaging.webhook_endpoints WHERE "
	                 "tenant_id = $1 AND id = $2",
	                 2, x->p, &r, "read the endpoint");

	if (rv == PL_OK)
		x->found = PQntuples(r) == 1;
	PQclear(r);
	return rv;
}

int
eg_list_webhook_deliveries(pl_call *call, const void *inp, void *outp)
{
	const EG_M(ListWebhookDeliveriesRequest) *in = inp;
	EG_M(ListWebhookDeliveriesResponse) *out = outp;
	char *after, lim[16];
	int size, rv;

	if ((rv = eg_need_uuid(call, "endpoint_id", in->endpoint_id)) !=
	            PL_OK ||
	    (rv = eg_page(call, in->page, &size, &after)) != PL_OK)
		return rv;
	if (in->status < 0 || in->status > 4)
		return pl_call_violation(call, "status",
		                         "is not a delivery status");
	if (in->event_type && strlen(in->event_type) > 64)
		return pl_call_violation(call, "event_type", "is too long");
	{
		const char *p[2] = { eg_tenant(call), in->endpoint_id };
		ld_arg x = { p, false };
		if ((rv = eg_tx(call, eg_tenant(call), ep_exists_fn, &x)) !=
		    PL_OK)
			return rv;
		if (!x.found)
			return pl_call_error(call, PL_NOT_FOUND,
			                     "endpoint not found");
	}
	snprintf(lim, sizeof(lim), "%d", size + 1);
	{
		const char *p[6] = {
			eg_tenant(call),
			in->endpoint_id,
			after,
			lim,
			in->status ? dstatus_names[in->status] : NULL,
			eg_nz(in->event_type),
		};
		return eg_list(
		        call, eg_tenant(call),
		        pl_arena_printf(
		                call->arena,
		                "SELECT %s FROM messaging.webhook_deliveries d "
		                "WHERE d.tenant_id = $1 AND d.endpoint_id = $2 "
		                "AND ($3::uuid IS NULL OR d.id < $3::uuid) AND "
		                "($5::text IS NULL OR d.status = $5) AND "
		                "($6::text IS NULL OR d.event_type = $6) ORDER "
		                "BY d.id DESC LIMIT $4",
		                SQL_DELIVERY_JSON),
		        6, p, size,
		        &parley__messaging__v1__webhook_delivery__descriptor,
		        (void ***)&out->deliveries, &out->n_deliveries,
		        &out->next_page_token);
	}
}

typedef struct rd_arg {
	const char *id;
	int state; // 0 ok, 1 not found, 2 endpoint inactive
	void **out;
} rd_arg;

static int
rd_fn(pl_call *call, pl_db *db, void *arg)
{
	rd_arg *x = arg;
	const char *p[2] = { eg_tenant(call), x->id };
	PGresult *r = NULL;
	int rv = eg_exec(call, db,
	                 "SELECT e.is_active FROM messaging.webhook_deliveries "
	                 "d JOIN messaging.webhook_endpoints e ON e.tenant_id "
	                 "= d.tenant_id AND e.id = d.endpoint_id WHERE "
	                 "d.tenant_id = $1 AND d.id = $2 FOR UPDATE OF d",
	                 2, p, &r, "read the delivery");

	if (rv != PL_OK)
		return rv;
	x->state = PQntuples(r) == 0               ? 1
	           : PQgetvalue(r, 0, 0)[0] != 't' ? 2
	                                           : 0;
	PQclear(r);
	r = NULL;
	if (x->state != 0)
		return PL_OK;
	// Again now, same id and body; a fresh retry budget.
	if ((rv = eg_exec(call, db,
	                  "UPDATE messaging.webhook_deliveries SET status = "
	                  "'pending', next_attempt_at = now(), retry_since_at "
	                  "= now() WHERE tenant_id = $1 AND id = $2",
	                  2, p, NULL, "queue the delivery")) != PL_OK)
		return rv;
	if ((rv = eg_exec(call, db,
	                  pl_arena_printf(call->arena,
	                                  "SELECT %s FROM "
	                                  "messaging.webhook_deliveries d "
	                                  "WHERE d.tenant_id = $1 AND d.id = "
	                                  "$2",
	                                  SQL_DELIVERY_JSON),
	                  2, p, &r, "read the delivery")) != PL_OK)
		return rv;
	rv = eg_row_pb(call, r,
	               &parley__messaging__v1__webhook_delivery__descriptor,
	               x->out);
	PQclear(r);
	return rv;
}

static void outhooks_kick(void);

int
eg_redeliver_webhook(pl_call *call, const void *inp, void *outp)
{
	const EG_M(RedeliverWebhookRequest) *in = inp;
	EG_M(RedeliverWebhookResponse) *out = outp;
	rd_arg x = { in->id, 0, (void **)&out->delivery };
	int rv;

	if (!pl_uuid_valid(in->id))
		return pl_call_error(call, PL_NOT_FOUND, "delivery not found");
	if ((rv = eg_tx(call, eg_tenant(call), rd_fn, &x)) != PL_OK)
		return rv;
	if (x.state == 1)
		return pl_call_error(call, PL_NOT_FOUND, "delivery not found");
	if (x.state == 2)
		return pl_call_error(call, PL_FAILED_PRECONDITION,
		                     "the endpoint is not active: enable it "
		                     "first");
	outhooks_kick();
	return PL_OK;
}

// ---------------------------------------------------------------------------
// The sender

typedef struct claim {
	char tenant[40], id[40], endpoint[40];
	char *url, *secret, *body; // malloc'd
	int attempts;
	bool active;
} claim;

typedef struct claim_arg {
	claim *c;
	int64_t lease_ms;
	int got;
} claim_arg;

static int
claim_fn(pl_db *db, void *arg)
{
	claim_arg *x = arg;
	char lease[24];
	const char *p[1] = { lease };
	PGresult *r = NULL;
	int rv;

	snprintf(lease, sizeof(lease), "%lld", (long long)x->lease_ms);
	rv = eg_exec(NULL, db,
	             "WITH c AS (SELECT tenant_id, id FROM "
	             "messaging.webhook_deliveries WHERE status IN "
	             "('pending', 'retrying') AND next_attempt_at <= now() "
	             "ORDER BY next_attempt_at LIMIT 1 FOR UPDATE SKIP "
	             "LOCKED) UPDATE messaging.webhook_deliveries d SET "
	             "attempts = d.attempts + 1, next_attempt_at = now() + "
	             "$1::bigint * interval '1 millisecond' FROM c, "
	             "messaging.webhook_endpoints e WHERE d.tenant_id = "
	             "c.tenant_id AND d.id = c.id AND e.tenant_id = "
	             "d.tenant_id AND e.id = d.endpoint_id RETURNING "
	             "d.tenant_id, d.id, d.endpoint_id, d.payload::text, "
	             "d.attempts, e.url, e.secret, e.is_active",
	             1, p, &r, "claim a webhook delivery");
	if (rv != PL_OK)
		return rv;
	x->got = PQntuples(r);
	if (x->got == 1) {
		claim *c = x->c;
		snprintf(c->tenant, sizeof(c->tenant), "%s",
		         PQgetvalue(r, 0, 0));
		snprintf(c->id, sizeof(c->id), "%s", PQgetvalue(r, 0, 1));
		snprintf(c->endpoint, sizeof(c->endpoint), "%s",
		         PQgetvalue(r, 0, 2));
		c->body = strdup(PQgetvalue(r, 0, 3));
		c->attempts = atoi(PQgetvalue(r, 0, 4));
		c->url = strdup(PQgetvalue(r, 0, 5));
		c->secret = strdup(PQgetvalue(r, 0, 6));
		c->active = PQgetvalue(r, 0, 7)[0] == 't';
		if (!c->body || !c->url || !c->secret)
			rv = PL_RESOURCE_EXHAUSTED;
	}
	PQclear(r);
	return rv;
}

typedef struct result_arg {
	const claim *c;
	bool ok;
	long status;
	const char *error;
	int latency_ms;
	int64_t backoff_ms;
} result_arg;

static int
result_fn(pl_db *db, void *arg)
{
	result_arg *x = arg;
	const claim *c = x->c;
	char st[16], lat[16], back[24], age[24], dis[24];
	PGresult *r = NULL;
	int rv;

	snprintf(st, sizeof(st), "%ld", x->status);
	snprintf(lat, sizeof(lat), "%d", x->latency_ms);
	snprintf(back, sizeof(back), "%lld", (long long)x->backoff_ms);
	snprintf(age, sizeof(age), "%lld", (long long)cfg_max_age());
	snprintf(dis, sizeof(dis), "%lld", (long long)cfg_disable_after());
	if (x->ok) {
		const char *p[5] = { c->tenant, c->id, st, lat, c->endpoint };
		return eg_exec(
		        NULL, db,
		        "WITH d AS (UPDATE messaging.webhook_deliveries SET "
		        "status = 'delivered', delivered_at = now(), "
		        "last_http_status = $3::int, last_error = '', "
		        "last_latency_ms = $4::int WHERE tenant_id = $1 AND id "
		        "= $2) UPDATE messaging.webhook_endpoints SET "
		        "failing_since_at = NULL WHERE tenant_id = $1 AND id = "
		        "$5 AND failing_since_at IS NOT NULL",
		        5, p, NULL, "record the delivery");
	}
	{
		const char *p[7] = { c->tenant, c->id, st, lat,
			             x->error,  back,  age };
		// Failed for good once the next try would pass the budget.
		if ((rv = eg_exec(
		             NULL, db,
		             "UPDATE messaging.webhook_deliveries SET "
		             "last_http_status = $3::int, last_latency_ms = "
		             "$4::int, last_error = $5, status = CASE WHEN "
		             "now() + $6::bigint * interval '1 millisecond' > "
		             "retry_since_at + $7::bigint * interval '1 "
		             "millisecond' THEN 'failed' ELSE 'retrying' END, "
		             "next_attempt_at = now() + $6::bigint * interval "
		             "'1 millisecond' WHERE tenant_id = $1 AND id = $2",
		             7, p, NULL, "record the failure")) != PL_OK)
			return rv;
	}
	{
		// The endpoint's failing run; past the limit it is disabled.
		const char *p[3] = { c->tenant, c->endpoint, dis };
		if ((rv = eg_exec(
		             NULL, db,
		             "UPDATE messaging.webhook_endpoints SET "
		             "failing_since_at = coalesce(failing_since_at, "
		             "now()), is_active = is_active AND NOT "
		             "(coalesce(failing_since_at, now()) + $3::bigint "
		             "* "
		             "interval '1 millisecond' <= now()), updated_at = "
		             "now() WHERE tenant_id = $1 AND id = $2 AND "
		             "is_active RETURNING is_active, url",
		             3, p, &r, "record the endpoint's failure")) !=
		    PL_OK)
			return rv;
	}
	if (PQntuples(r) == 1 && PQgetvalue(r, 0, 0)[0] != 't') {
		const char *p[3] = { c->tenant, c->endpoint,
			             "failing continuously" };
		json_t *dj = json_pack("{s:s}", "endpoint_id", c->endpoint);
		json_t *pj = json_pack("{s:s, s:s, s:s}", "endpoint_id",
		                       c->endpoint, "url", PQgetvalue(r, 0, 1),
		                       "reason", "failing continuously");
		char *d = json_dumps(dj, JSON_COMPACT);
		char *pp = json_dumps(pj, JSON_COMPACT);
		pl_info("webhook endpoint %s disabled: failing continuously",
		        c->endpoint);
		rv = eg_exec(
		        NULL, db,
		        "WITH e AS (UPDATE messaging.webhook_endpoints SET "
		        "disabled_at = now(), disabled_reason = $3 WHERE "
		        "tenant_id = $1 AND id = $2) UPDATE "
		        "messaging.webhook_deliveries SET status = "
		        "'failed', last_error = CASE WHEN last_error = '' "
		        "THEN 'endpoint disabled' ELSE last_error END "
		        "WHERE tenant_id = $1 AND endpoint_id = $2 AND "
		        "status IN ('pending', 'retrying')",
		        3, p, NULL, "disable the endpoint");
		if (rv == PL_OK)
			rv = eg_event(db, c->tenant,
			              "webhook_endpoint.disabled", d, pp);
		free(d);
		free(pp);
		json_decref(dj);
		json_decref(pj);
	}
	PQclear(r);
	return rv;
}

static size_t
discard(char *ptr, size_t size, size_t nmemb, void *ud)
{
	size_t *seen = ud;

	(void)ptr;
	*seen += size * nmemb;
	// An endpoint's answer is not read; a huge one is cut off.
	return *seen > 65536 ? 0 : size * nmemb;
}

// One POST; returns the HTTP status (0 when none) and fills err.
static long
post(const claim *c, const char *pin, pl_arena *a, char *err, size_t errlen)
{
	CURL *h = curl_easy_init();
	struct curl_slist *hd = NULL, *res = NULL;
	char *sig, line[320];
	long long ts = (long long)time(NULL);
	long status = 0;
	size_t seen = 0;
	CURLcode cc;

	err[0] = '\0';
	{
		char *plain = secret_open(a, c->secret);
		sig = plain ? engage_webhook_sign(a, plain, c->id, ts, c->body,
		                                  strlen(c->body))
		            : NULL;
		if (plain)
			sodium_memzero(plain, strlen(plain));
	}
	if (h == NULL || sig == NULL) {
		snprintf(err, errlen, "%s",
		         h ? "the endpoint's secret is unusable"
		           : "out of memory");
		curl_easy_cleanup(h);
		return 0;
	}
	hd = curl_slist_append(hd, "Content-Type: application/json");
	hd = curl_slist_append(hd, "User-Agent: Parley-Webhooks/1");
	snprintf(line, sizeof(line), "webhook-id: %s", c->id);
	hd = curl_slist_append(hd, line);
	snprintf(line, sizeof(line), "webhook-timestamp: %lld", ts);
	hd = curl_slist_append(hd, line);
	snprintf(line, sizeof(line), "webhook-signature: %s", sig);
	hd = curl_slist_append(hd, line);
	hd = curl_slist_append(hd, "Expect:");
	if (pin && pin[0])
		res = curl_slist_append(res, pin);
	curl_easy_setopt(h, CURLOPT_URL, c->url);
	curl_easy_setopt(h, CURLOPT_RESOLVE, res);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hd);
	curl_easy_setopt(h, CURLOPT_POST, 1L);
	curl_easy_setopt(h, CURLOPT_POSTFIELDS, c->body);
	curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE,
	                 (curl_off_t)strlen(c->body));
	curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(h, CURLOPT_NOPROXY, "*");
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)cfg_timeout());
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS,
	                 (long)(cfg_timeout() < 5000 ? cfg_timeout() : 5000));
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, discard);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &seen);
	cc = curl_easy_perform(h);
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
	if (cc != CURLE_OK && !(cc == CURLE_WRITE_ERROR && status > 0))
		snprintf(err, errlen, "%s", curl_easy_strerror(cc));
	else if (status < 200 || status > 299)
		snprintf(err, errlen, "HTTP %ld", status);
	curl_slist_free_all(hd);
	curl_slist_free_all(res);
	curl_easy_cleanup(h);
	return status;
}

static int64_t
backoff(int attempts)
{
	int64_t base = cfg_retry_base(), max = cfg_retry_max(), b = base;

	for (int i = 1; i < attempts && b < max; i++)
		b *= 2;
	if (b > max)
		b = max;
	// Jitter: between half and the whole step.
	return b / 2 + (int64_t)randombytes_uniform((uint32_t)(b / 2 + 1));
}

int
engage_outhooks_once(msg_service *s, pl_db *db, pl_arena *a)
{
	claim c = { 0 };
	claim_arg ca = { &c, cfg_timeout() + 30000, 0 };
	result_arg ra = { 0 };
	char err[256], pin[400];
	int64_t t0;
	int rv;

	(void)s;
	rv = pl_db_tx(db, "*", claim_fn, &ca);
	if (rv != PL_OK || ca.got == 0) {
		free(c.url);
		free(c.secret);
		free(c.body);
		return rv == PL_OK ? 0 : -1;
	}
	ra.c = &c;
	t0 = pl_now_ns();
	if (!c.active) {
		snprintf(err, sizeof(err), "endpoint is not active");
		ra.backoff_ms = 0;
		ra.error = err;
		// No budget left: an inactive endpoint's delivery fails at
		// once (Redeliver after enabling it sends it again).
		ra.backoff_ms = cfg_max_age() + 1;
	} else if (!engage_webhook_url_ok(c.url, err, sizeof(err), pin,
	                                  sizeof(pin))) {
		// The URL's host resolves somewhere it must not (now): the
		// request is not made.
		char *e = pl_arena_printf(a, "refused: url %s", err);
		snprintf(err, sizeof(err), "%s", e);
		ra.error = err;
		ra.backoff_ms = backoff(c.attempts);
	} else {
		ra.status = post(&c, pin, a, err, sizeof(err));
		ra.ok = ra.status >= 200 && ra.status <= 299 && err[0] == '\0';
		ra.error = err;
		ra.backoff_ms = backoff(c.attempts);
	}
	ra.latency_ms = (int)((pl_now_ns() - t0) / 1000000);
	rv = pl_db_tx(db, c.tenant, result_fn, &ra);
	if (rv != PL_OK)
		pl_warn("webhook delivery %s: could not record the attempt "
		        "(%s); it is sent again after its lease",
		        c.id, pl_status_name(rv));
	sodium_memzero(c.secret, strlen(c.secret));
	free(c.url);
	free(c.secret);
	free(c.body);
	return 1;
}

static struct {
	pthread_t th[8];
	int nth;
	volatile bool stop;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	uint64_t kick;
} og = { .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER };

static void
outhooks_kick(void)
{
	pthread_mutex_lock(&og.mu);
	og.kick++;
	pthread_cond_broadcast(&og.cv);
	pthread_mutex_unlock(&og.mu);
}

static void *
oh_main(void *arg)
{
	msg_service *s = arg;
	pl_db *db = pl_db_open(s->database_url);
	pl_arena a;
	int64_t poll = s->poll_ms > 0 ? s->poll_ms : 200;

	pthread_setname_np(pthread_self(), "msg-webhooks");
	pl_arena_init(&a, 0, 1 << 20);
	while (!og.stop) {
		uint64_t seen;
		pthread_mutex_lock(&og.mu);
		seen = og.kick;
		pthread_mutex_unlock(&og.mu);
		pl_arena_reset(&a);
		if (engage_outhooks_once(s, db, &a) <= 0 && !og.stop) {
			struct timespec ts;
			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_nsec += (long)(poll % 1000) * 1000000L;
			ts.tv_sec += poll / 1000 + ts.tv_nsec / 1000000000L;
			ts.tv_nsec %= 1000000000L;
			pthread_mutex_lock(&og.mu);
			while (og.kick == seen && !og.stop)
				if (pthread_cond_timedwait(&og.cv, &og.mu,
				                           &ts) != 0)
					break;
			pthread_mutex_unlock(&og.mu);
		}
	}
	pl_arena_fini(&a);
	pl_db_close(db);
	return NULL;
}

int
engage_outhooks_start(msg_service *s)
{
	const char *n = getenv("PARLEY_MESSAGING_WEBHOOK_WORKERS");
	int want = n && n[0] ? atoi(n) : 2;

	if (want < 0 || want > 8) {
		pl_error("PARLEY_MESSAGING_WEBHOOK_WORKERS must be 0..8");
		return PL_INVALID_ARGUMENT;
	}
	og.stop = false;
	og.nth = 0;
	for (int i = 0; i < want; i++)
		if (pthread_create(&og.th[og.nth], NULL, oh_main, s) == 0)
			og.nth++;
	return PL_OK;
}

void
engage_outhooks_stop(void)
{
	pthread_mutex_lock(&og.mu);
	og.stop = true;
	pthread_cond_broadcast(&og.cv);
	pthread_mutex_unlock(&og.mu);
	for (int i = 0; i < og.nth; i++)
		pthread_join(og.th[i], NULL);
	og.nth = 0;
}
