// UUIDv7 (RFC 9562): 48-bit Unix milliseconds, then random bits, with a
// counter in rand_a so ids made in one millisecond by one process still
// sort in creation order.
#ifndef PL_ID_H
#define PL_ID_H

#include <stdbool.h>
#include <stdint.h>

#define PL_UUID_STRLEN 36

// Fills 16 bytes with a new UUIDv7. Thread-safe.
void pl_uuid7(uint8_t out[16]);

// Writes the canonical lower-case text form and a NUL (37 bytes).
void pl_uuid_format(const uint8_t id[16], char out[PL_UUID_STRLEN + 1]);

// New UUIDv7 as text into out (37 bytes).
void pl_uuid7_str(char out[PL_UUID_STRLEN + 1]);

// Parses canonical text (either case); false when s is not a UUID.
bool pl_uuid_parse(const char *s, uint8_t out[16]);

// True when s is a syntactically valid UUID in canonical form.
bool pl_uuid_valid(const char *s);

// The Unix milliseconds stored in a UUIDv7.
uint64_t pl_uuid7_ms(const uint8_t id[16]);

#endif
