// The fuzz targets' contract checks: a broken contract aborts (libFuzzer
// then keeps the input as a crash) after saying which.
#ifndef PARLEY_FUZZ_CHECK_H
#define PARLEY_FUZZ_CHECK_H

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "pl/utf8.h"

static inline void
need(bool ok, const char *what)
{
	if (!ok) {
		fprintf(stderr, "contract broken: %s\n", what);
		abort();
	}
}

// NULL, or valid UTF-8.
static inline void
text_ok(const char *s, const char *what)
{
	if (s != NULL)
		need(pl_utf8_valid(s, strlen(s)), what);
}

// NULL, or JSON text.
static inline void
json_ok(const char *s, const char *what)
{
	json_t *j;

	if (s == NULL)
		return;
	j = json_loads(s, JSON_DECODE_ANY, NULL);
	need(j != NULL, what);
	json_decref(j);
}

#endif
