// Secrets at rest (DESIGN §5): XChaCha20-Poly1305 under a service key of 32
// bytes, the key id as associated data (a sealed value opened with another
// key id fails). Sealed bytes are the 24-byte nonce, then the ciphertext
// with its tag.
#ifndef PL_SEAL_H
#define PL_SEAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pl/arena.h"

// Seals plain into *out (malloc'd, caller frees). PL_OK or PL_INTERNAL.
int pl_seal(const uint8_t key[32], const char *kid, const char *plain,
            uint8_t **out, size_t *out_len);

// Opens what pl_seal made into *plain (NUL-terminated, in a). PL_DATA_LOSS
// when it was not sealed with this key and key id.
int pl_unseal(pl_arena *a, const uint8_t key[32], const char *kid,
              const uint8_t *ct, size_t len, char **plain);

// A key given as standard base64 of 32 bytes.
bool pl_key_decode(const char *b64, uint8_t key[32]);

#endif
