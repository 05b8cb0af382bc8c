// Configuration from the environment, one table per program (Redis
// config.c's static_configs is the model). A bad or missing value stops
// start-up with one line naming the variable.
#ifndef PL_CFG_H
#define PL_CFG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum pl_cfg_type {
	PL_CFG_STRING,
	PL_CFG_INT,      // int64 with min/max
	PL_CFG_BOOL,     // true/false/1/0/yes/no
	PL_CFG_DURATION, // milliseconds; accepts "250ms", "2s", "5m", "1h", or
	                 // a bare number of ms
	PL_CFG_SECRET,   // a string never shown, not even in errors
} pl_cfg_type;

typedef struct pl_cfg_entry {
	const char *env; // e.g. "PARLEY_DATABASE_URL"
	pl_cfg_type type;
	const char *def;  // default as text; NULL = required
	int64_t min, max; // bounds for INT/DURATION (both 0 = unbounded)
	void *dst;        // char ** for STRING/SECRET, int64_t * for INT
	                  // and DURATION, bool * for BOOL
	const char *help; // one line for --help and errors
} pl_cfg_entry;

// Reads every entry (the table ends with an entry whose env is NULL). On
// the first bad value writes one line into err ("PARLEY_X: must be between
// 1 and 64, got \"0\"") and returns -1; 0 on success. Strings are
// heap-copied; pl_cfg_free releases them.
int pl_cfg_load(const pl_cfg_entry *table, char *err, size_t errlen);

// Frees strings that pl_cfg_load allocated.
void pl_cfg_free(const pl_cfg_entry *table);

// Parses a duration as PL_CFG_DURATION does; false on error.
bool pl_cfg_parse_duration(const char *s, int64_t *ms);

#endif
