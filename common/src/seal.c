// Secrets at rest (see pl/seal.h).
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "pl/seal.h"
#include "pl/status.h"

#define NB crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
#define AB crypto_aead_xchacha20poly1305_ietf_ABYTES

int
pl_seal(const uint8_t key[32], const char *kid, const char *plain,
        uint8_t **out, size_t *out_len)
{
	size_t n = strlen(plain);
	uint8_t *buf = malloc(NB + n + AB);
	unsigned long long clen;

	if (buf == NULL)
		return PL_INTERNAL;
	randombytes_buf(buf, NB);
	crypto_aead_xchacha20poly1305_ietf_encrypt(
	        buf + NB, &clen, (const unsigned char *)plain, n,
	        (const unsigned char *)kid, strlen(kid), NULL, buf, key);
	*out = buf;
	*out_len = NB + (size_t)clen;
	return PL_OK;
}

int
pl_unseal(pl_arena *a, const uint8_t key[32], const char *kid,
          const uint8_t *ct, size_t len, char **plain)
{
	unsigned long long n;
	unsigned char *buf;

	if (len < NB + AB)
		return PL_DATA_LOSS;
	if ((buf = pl_arena_alloc(a, len + 1)) == NULL)
		return PL_INTERNAL;
	if (crypto_aead_xchacha20poly1305_ietf_decrypt(
	            buf, &n, NULL, ct + NB, len - NB,
	            (const unsigned char *)kid, strlen(kid), ct, key) != 0)
		return PL_DATA_LOSS;
	buf[n] = '\0';
	*plain = (char *)buf;
	return PL_OK;
}

bool
pl_key_decode(const char *b64, uint8_t key[32])
{
	size_t n = 0;

	if (b64 == NULL ||
	    sodium_base642bin(key, 32, b64, strlen(b64), NULL, &n, NULL,
	                      sodium_base64_VARIANT_ORIGINAL) != 0)
		return false;
	return n == 32;
}
