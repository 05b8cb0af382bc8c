// libFuzzer target for the gateway's routing of a request line
// (services/gateway/router.c): the first byte picks the method, the rest is
// the path as MHD hands it over.
//
// Contracts besides "no crash": a route found is one of the method's (HEAD
// finds GET's), its path parameters are 1..256 bytes without '/', each
// names an input field, and putting them back into the pattern gives the
// path again; a path known only under other methods lists those methods,
// each a known one, once.
//
// The same bytes are also an X-Forwarded-For header behind trusted proxies
// and a PARLEY_TRUSTED_PROXIES list (services/gateway/proxy.c): the client
// found is the peer or an address in its canonical form; a list parses to
// at most GW_MAX_PROXIES ranges of 0..128 bits, or fails with a reason.
#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway.h"
#include "fuzz_check.h"

// The pattern with params[0..n) in its "{...}" places, into out.
static void
rebuild(const char *pattern, const gw_param *params, int n, char *out,
        size_t cap)
{
	size_t len = 0;
	int k = 0;

	for (const char *p = pattern; *p != '\0' && len + 1 < cap;) {
		if (*p == '{') {
			const char *pe = strchr(p, '}');
			need(pe != NULL && k < n,
			     "pattern and parameters agree");
			len += (size_t)snprintf(out + len, cap - len, "%s",
			                        params[k++].value);
			p = pe + 1;
			continue;
		}
		out[len++] = *p++;
	}
	out[len < cap ? len : cap - 1] = '\0';
	need(k == n, "every parameter has its place");
}

// The client's address and the proxies' list (see the top).
static void
forwarded(const char *text)
{
	static gw_net *nets;
	static size_t n_nets;
	gw_net *got;
	size_t n;
	char ip[46], again[46], err[160] = "";
	unsigned char a[16];

	if (nets == NULL)
		need(gw_proxies_parse("10.0.0.0/8, fd00::/8", &nets, &n_nets,
		                      err, sizeof(err)) == 0,
		     "the fixed list parses");
	gw_client_ip(nets, n_nets, "10.0.0.5", text, ip, sizeof(ip));
	if (strcmp(ip, "10.0.0.5") != 0) {
		bool v4 = inet_pton(AF_INET, ip, a) == 1;
		need(v4 || inet_pton(AF_INET6, ip, a) == 1,
		     "the client is an address");
		inet_ntop(v4 ? AF_INET : AF_INET6, a, again, sizeof(again));
		need(strcmp(again, ip) == 0, "the address is canonical");
	}
	if (gw_proxies_parse(text, &got, &n, err, sizeof(err)) == 0) {
		need(n <= GW_MAX_PROXIES && (n == 0) == (got == NULL),
		     "a list of at most 64 ranges");
		for (size_t i = 0; i < n; i++)
			need(got[i].bits >= 0 && got[i].bits <= 128,
			     "a range's bits");
		free(got);
	} else {
		need(got == NULL && n == 0 && err[0] != '\0',
		     "a bad list says why");
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const methods[8] = { "GET",     "POST", "PATCH",
		                                "DELETE",  "HEAD", "PUT",
		                                "OPTIONS", "get" };
	static bool ready;
	const char *method;
	const gw_route *r;
	gw_param params[GW_MAX_PARAMS];
	char *path, allow[128], again[4096], buf[128];
	int n = 0;

	if (!ready) {
		need(gw_routes_init(NULL, 0) == 0, "routes resolve");
		ready = true;
	}
	if (size == 0 || size > 2048 || memchr(data + 1, '\0', size - 1))
		return 0;
	method = methods[data[0] & 7];
	path = malloc(size);
	need(path != NULL, "memory");
	memcpy(path, data + 1, size - 1);
	path[size - 1] = '\0';

	r = gw_route_find(method, path, params, &n, allow, sizeof(allow));
	if (r != NULL) {
		need(strcmp(r->method,
		            strcmp(method, "HEAD") == 0 ? "GET" : method) == 0,
		     "the route is the method's");
		need(n >= 0 && n <= GW_MAX_PARAMS, "parameter count");
		for (int i = 0; i < n; i++) {
			size_t len = strlen(params[i].value);
			need(len >= 1 && len <= 256 &&
			             strchr(params[i].value, '/') == NULL,
			     "a parameter is one non-empty segment");
			need(gw_route_field(r, params[i].name, buf,
			                    sizeof(buf)) != NULL,
			     "a parameter names an input field");
		}
		rebuild(r->pattern, params, n, again, sizeof(again));
		need(strcmp(again, path) == 0, "the parameters give the path");
	} else if (allow[0] != '\0') {
		static const char *const known[4] = { "GET", "POST", "PATCH",
			                              "DELETE" };
		for (int i = 0; i < 4; i++) {
			const char *at = strstr(allow, known[i]);
			need(at == NULL || strstr(at + 1, known[i]) == NULL,
			     "a method is listed once");
		}
		for (char *tok = strtok(allow, ", "); tok != NULL;
		     tok = strtok(NULL, ", ")) {
			bool ok = false;
			for (int i = 0; i < 4; i++)
				ok = ok || strcmp(tok, known[i]) == 0;
			need(ok, "allow lists known methods");
		}
	}
	forwarded(path);
	free(path);
	return 0;
}
