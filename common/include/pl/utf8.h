// UTF-8 as RFC 3629 has it: no overlong forms, no surrogates, nothing past
// U+10FFFF.
#ifndef PL_UTF8_H
#define PL_UTF8_H

#include <stdbool.h>
#include <stddef.h>

// The length (1-4) of the valid UTF-8 sequence at s, reading at most n
// bytes (n > 0), or 0 when the bytes there are not one.
size_t pl_utf8_seq(const char *s, size_t n);

// True when the n bytes at s are valid UTF-8 (NUL bytes included).
bool pl_utf8_valid(const char *s, size_t n);

#endif
