// Path matching and route lookup.
#include <stdio.h>
#include <string.h>

#include "gateway.h"

bool
gw_path_match(const char *pattern, const char *path, gw_param *params, int *n,
              int max)
{
	const char *p = pattern, *s = path;
	int k = 0;

	while (*p != '\0') {
		if (*p == '{') {
			const char *pe = strchr(p, '}');
			size_t len = strcspn(s, "/"), nlen;

			if (pe == NULL || len == 0 || len > 256)
				return false;
			if (params != NULL) {
				if (k >= max)
					return false;
				nlen = (size_t)(pe - p - 1);
				if (nlen >= sizeof(params[k].name))
					return false;
				memcpy(params[k].name, p + 1, nlen);
				params[k].name[nlen] = '\0';
				memcpy(params[k].value, s, len);
				params[k].value[len] = '\0';
			}
			k++;
			p = pe + 1;
			s += len;
			continue;
		}
		if (*p != *s)
			return false;
		p++;
		s++;
	}
	if (*s != '\0')
		return false;
	if (n != NULL)
		*n = k;
	return true;
}

const gw_route *
gw_route_find(const char *method, const char *path, gw_param *params, int *n,
              char *allow, size_t allowlen)
{
	const char *m = strcmp(method, "HEAD") == 0 ? "GET" : method;
	size_t used = 0;

	if (allow != NULL && allowlen > 0)
		allow[0] = '\0';
	for (size_t i = 0; i < gw_n_routes; i++) {
		const gw_route *r = &gw_routes[i];

		if (!gw_path_match(r->pattern, path, NULL, NULL, 0))
			continue;
		if (strcmp(r->method, m) == 0) {
			if (!gw_path_match(r->pattern, path, params, n,
			                   GW_MAX_PARAMS))
				continue;
			return r;
		}
		if (allow != NULL && strstr(allow, r->method) == NULL) {
			int w = snprintf(allow + used, allowlen - used, "%s%s",
			                 used ? ", " : "", r->method);
			if (w > 0 && (size_t)w < allowlen - used)
				used += (size_t)w;
		}
	}
	return NULL;
}
