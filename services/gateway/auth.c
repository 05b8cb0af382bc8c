// The cache of tenants.Authenticate answers. Tenants' rule: a revoked key
// or ended session stops working everywhere within one second, so an entry
// lives min(the answer's cache_ttl_ms, the configured TTL, 1000 ms) and an
// answer with cache_ttl_ms 0 is not kept. Entries are keyed by a keyed
// BLAKE2b hash of the token (the token itself is never kept); the principal
// is stored packed and unpacked into each request's arena.
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "gateway.h"

#define NSTRIPES 16

typedef struct slot {
	uint8_t key[32];
	int64_t expires_ns; // 0: empty
	uint8_t *pb;
	size_t pb_len;
	int tenant_status;
	int rpm;
} slot;

struct gw_auth {
	pthread_mutex_t mu[NSTRIPES];
	slot *slots;
	size_t n;
	int64_t ttl_ms;
	uint8_t hkey[crypto_generichash_KEYBYTES];
};

gw_auth *
gw_auth_open(size_t slots, int64_t ttl_ms)
{
	gw_auth *a;

	if (sodium_init() < 0)
		return NULL;
	if ((a = calloc(1, sizeof(*a))) == NULL)
		return NULL;
	a->n = slots ? slots : 4096;
	if ((a->slots = calloc(a->n, sizeof(slot))) == NULL) {
		free(a);
		return NULL;
	}
	if (ttl_ms > GW_AUTH_MAX_TTL_MS)
		ttl_ms = GW_AUTH_MAX_TTL_MS;
	a->ttl_ms = ttl_ms < 0 ? 0 : ttl_ms;
	randombytes_buf(a->hkey, sizeof(a->hkey));
	for (int i = 0; i < NSTRIPES; i++)
		pthread_mutex_init(&a->mu[i], NULL);
	return a;
}

void
gw_auth_close(gw_auth *a)
{
	if (a == NULL)
		return;
	for (size_t i = 0; i < a->n; i++)
		free(a->slots[i].pb);
	for (int i = 0; i < NSTRIPES; i++)
		pthread_mutex_destroy(&a->mu[i]);
	free(a->slots);
	free(a);
}

static size_t
locate(gw_auth *a, const char *token, uint8_t key[32])
{
	uint64_t h;

	crypto_generichash(key, 32, (const uint8_t *)token, strlen(token),
	                   a->hkey, sizeof(a->hkey));
	memcpy(&h, key, sizeof(h));
	return (size_t)(h % a->n);
}

bool
gw_auth_get(gw_auth *a, const char *token, pl_arena *arena, int64_t now_ns,
            gw_auth_info *out)
{
	uint8_t key[32];
	size_t i;
	pthread_mutex_t *mu;
	uint8_t *copy = NULL;
	size_t len = 0;
	bool hit = false;

	if (a == NULL || a->ttl_ms == 0)
		return false;
	i = locate(a, token, key);
	mu = &a->mu[i % NSTRIPES];
	pthread_mutex_lock(mu);
	slot *s = &a->slots[i];
	if (s->expires_ns > now_ns && sodium_memcmp(s->key, key, 32) == 0) {
		len = s->pb_len;
		copy = pl_arena_alloc(arena, len ? len : 1);
		if (copy != NULL) {
			memcpy(copy, s->pb, len);
			out->tenant_status = s->tenant_status;
			out->rate_limit_per_minute = s->rpm;
			hit = true;
		}
	}
	pthread_mutex_unlock(mu);
	if (!hit)
		return false;
	out->principal = parley__rpc__v1__principal__unpack(pl_arena_pb(arena),
	                                                    len, copy);
	return out->principal != NULL;
}

void
gw_auth_put(gw_auth *a, const char *token, const pl_principal *p,
            int tenant_status, int rate_limit_per_minute, int cache_ttl_ms,
            int64_t now_ns)
{
	uint8_t key[32], *pb;
	size_t i, len;
	int64_t ttl;
	pthread_mutex_t *mu;

	if (a == NULL || p == NULL || cache_ttl_ms <= 0 || a->ttl_ms == 0)
		return;
	ttl = cache_ttl_ms < a->ttl_ms ? cache_ttl_ms : a->ttl_ms;
	len = parley__rpc__v1__principal__get_packed_size(p);
	if ((pb = malloc(len ? len : 1)) == NULL)
		return;
	parley__rpc__v1__principal__pack(p, pb);
	i = locate(a, token, key);
	mu = &a->mu[i % NSTRIPES];
	pthread_mutex_lock(mu);
	slot *s = &a->slots[i];
	free(s->pb);
	memcpy(s->key, key, 32);
	s->pb = pb;
	s->pb_len = len;
	s->tenant_status = tenant_status;
	s->rpm = rate_limit_per_minute;
	s->expires_ns = now_ns + ttl * 1000000;
	pthread_mutex_unlock(mu);
}
