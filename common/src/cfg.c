// Configuration from the environment, read through a table.
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "pl/cfg.h"

#define SHOWMAX 64 // bytes of a bad value echoed in an error

static void seterr(char *err, size_t errlen, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

static void
seterr(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err == NULL || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	// One line, whatever the value held.
	for (char *p = err; *p != '\0'; p++) {
		if ((unsigned char)*p < 0x20)
			*p = '?';
	}
}

// A printable, bounded copy of a value for an error message.
static void
shown(char out[SHOWMAX + 4], const char *v)
{
	size_t n = strlen(v);

	if (n > SHOWMAX) {
		memcpy(out, v, SHOWMAX);
		memcpy(out + SHOWMAX, "...", 4);
	} else {
		memcpy(out, v, n + 1);
	}
}

static bool
parse_int(const char *s, int64_t *out)
{
	char *end;
	long long v;

	if (s == NULL || *s == '\0' || *s == ' ' || *s == '\t')
		return false;
	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno != 0 || *end != '\0')
		return false;
	*out = v;
	return true;
}

static bool
parse_bool(const char *s, bool *out)
{
	static const char *const yes[] = { "true", "1", "yes" };
	static const char *const no[] = { "false", "0", "no" };

	for (size_t i = 0; i < 3; i++) {
		if (strcasecmp(s, yes[i]) == 0) {
			*out = true;
			return true;
		}
		if (strcasecmp(s, no[i]) == 0) {
			*out = false;
			return true;
		}
	}
	return false;
}

bool
pl_cfg_parse_duration(const char *s, int64_t *ms)
{
	int64_t v = 0, mul;

	if (s == NULL || *s < '0' || *s > '9')
		return false;
	while (*s >= '0' && *s <= '9') {
		int d = *s++ - '0';
		if (v > (INT64_MAX - d) / 10)
			return false;
		v = v * 10 + d;
	}
	if (*s == '\0' || strcmp(s, "ms") == 0)
		mul = 1;
	else if (strcmp(s, "s") == 0)
		mul = 1000;
	else if (strcmp(s, "m") == 0)
		mul = 60 * 1000;
	else if (strcmp(s, "h") == 0)
		mul = 60 * 60 * 1000;
	else
		return false;
	if (v > INT64_MAX / mul)
		return false;
	if (ms != NULL)
		*ms = v * mul;
	return true;
}

static bool
bounded(const pl_cfg_entry *e)
{
	return e->min != 0 || e->max != 0;
}

// Reads one entry from its text; on error fills err and returns -1.
static int
load_one(const pl_cfg_entry *e, const char *v, bool isdef, char *err,
         size_t errlen)
{
	const char *from = isdef ? " (default)" : "";
	char show[SHOWMAX + 4] = "";
	int64_t n;

	// Only non-secret values are ever echoed.
	if (e->type != PL_CFG_SECRET)
		shown(show, v);

	switch (e->type) {
	case PL_CFG_STRING:
	case PL_CFG_SECRET: {
		char *s = strdup(v);
		if (s == NULL) {
			seterr(err, errlen, "%s: out of memory", e->env);
			return -1;
		}
		*(char **)e->dst = s;
		return 0;
	}
	case PL_CFG_BOOL:
		if (!parse_bool(v, e->dst)) {
			seterr(err, errlen,
			       "%s: must be true, false, yes, no, 1 or 0, "
			       "got \"%s\"%s",
			       e->env, show, from);
			return -1;
		}
		return 0;
	case PL_CFG_INT:
		if (!parse_int(v, &n)) {
			seterr(err, errlen,
			       "%s: must be an integer, got \"%s\"%s", e->env,
			       show, from);
			return -1;
		}
		break;
	case PL_CFG_DURATION:
		if (!pl_cfg_parse_duration(v, &n)) {
			seterr(err, errlen,
			       "%s: must be a duration such as 250ms, 2s, 5m "
			       "or "
			       "1h, got \"%s\"%s",
			       e->env, show, from);
			return -1;
		}
		break;
	default:
		seterr(err, errlen, "%s: unknown configuration type %d", e->env,
		       (int)e->type);
		return -1;
	}
	if (bounded(e) && (n < e->min || n > e->max)) {
		if (e->type == PL_CFG_DURATION)
			seterr(err, errlen,
			       "%s: must be between %lldms and %lldms, "
			       "got \"%s\"%s",
			       e->env, (long long)e->min, (long long)e->max,
			       show, from);
		else
			seterr(err, errlen,
			       "%s: must be between %lld and %lld, got "
			       "\"%s\"%s",
			       e->env, (long long)e->min, (long long)e->max,
			       show, from);
		return -1;
	}
	*(int64_t *)e->dst = n;
	return 0;
}

int
pl_cfg_load(const pl_cfg_entry *table, char *err, size_t errlen)
{
	const pl_cfg_entry *e;

	if (err != NULL && errlen > 0)
		err[0] = '\0';
	if (table == NULL) {
		seterr(err, errlen, "no configuration table");
		return -1;
	}
	// Check the table and clear string slots first, so that after a
	// failure every string slot is NULL and pl_cfg_free stays safe.
	for (e = table; e->env != NULL; e++) {
		if (e->dst == NULL) {
			seterr(err, errlen, "%s: no destination in table",
			       e->env);
			return -1;
		}
		if (e->type == PL_CFG_STRING || e->type == PL_CFG_SECRET)
			*(char **)e->dst = NULL;
	}
	for (e = table; e->env != NULL; e++) {
		const char *v = getenv(e->env);
		bool isdef = false;
		const char *help = e->help != NULL ? e->help : "";
		const char *lp = e->help != NULL ? " (" : "";
		const char *rp = e->help != NULL ? ")" : "";

		// Empty counts as unset: compose files often pass VAR= .
		if (v == NULL || v[0] == '\0') {
			if (e->def == NULL) {
				if (v == NULL)
					seterr(err, errlen,
					       "%s: required but not set%s%s%s",
					       e->env, lp, help, rp);
				else
					seterr(err, errlen,
					       "%s: must not be empty%s%s%s",
					       e->env, lp, help, rp);
				goto out_free;
			}
			v = e->def;
			isdef = true;
		}
		if (load_one(e, v, isdef, err, errlen) != 0)
			goto out_free;
	}
	return 0;

out_free:
	pl_cfg_free(table);
	return -1;
}

void
pl_cfg_free(const pl_cfg_entry *table)
{
	if (table == NULL)
		return;
	for (const pl_cfg_entry *e = table; e->env != NULL; e++) {
		if ((e->type == PL_CFG_STRING || e->type == PL_CFG_SECRET) &&
		    e->dst != NULL) {
			char **p = e->dst;
			free(*p);
			*p = NULL;
		}
	}
}
