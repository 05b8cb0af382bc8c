// The gateway's pure parts: the route table, path matching, error bodies,
// the token bucket, the authentication cache's TTL, and the OpenAPI
// document's agreement with the routes.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "gateway.h"
#include "parley/messaging/v1/messaging.pb-c.h"

static void
test_table_resolves(void **state)
{
	char err[256] = "";

	(void)state;
	assert_int_equal(gw_routes_init(err, sizeof(err)), 0);
	assert_string_equal(err, "");
	for (size_t i = 0; i < gw_n_routes; i++) {
		const gw_route *r = &gw_routes[i];
		assert_true(r->summary != NULL && r->summary[0] != '\0');
		assert_true(r->status == 200 || r->status == 201 ||
		            r->status == 202);
		if (r->svc == GW_LOCAL)
			continue;
		assert_non_null(r->in);
		assert_non_null(r->out);
		assert_non_null(r->full);
		assert_int_equal(r->full[0], '/');
		// Creates answer 201, sends 202 (DESIGN §9).
		if (strncmp(r->rpc, "Create", 6) == 0)
			assert_int_equal(r->status, 201);
		if (strcmp(r->rpc, "SendHumanReply") == 0 ||
		    strcmp(r->rpc, "SendMessage") == 0) {
			assert_int_equal(r->status, 202);
			assert_true(r->flags & GW_KEY);
		}
	}
}

// Every tenant- or admin-facing RPC of every service has a route; only the
// service-to-service methods have none.
static void
test_every_rpc_routed(void **state)
{
	static const char *const service_only[] = {
		"Authenticate",
		"ResolveChannel",
		"GetChannelSecrets",
		"DeliverEvents",
		"ReserveUsage",
		"ReleaseUsage",
		"ReserveUsageBatch",
		"Reply",
		"ReplyBatch",
		"SaveCheckpoint",
		"ImportCheckpoints",
		"GetImportSummary",
		"IngestInbound",
		"IngestStatus",
		"PollWebchatBatch",
		"CreateAction",
		"ImportContacts",
		"ImportConversations",
		"ImportOrders",
		"ImportCampaigns",
		"Track",
		NULL,
	};
	extern const ProtobufCServiceDescriptor
	        parley__tenants__v1__tenants__descriptor,
	        parley__billing__v1__billing__descriptor,
	        parley__agents__v1__agents__descriptor,
	        parley__messaging__v1__messaging__descriptor,
	        parley__analytics__v1__analytics__descriptor;
	const ProtobufCServiceDescriptor *sd[] = {
		&parley__tenants__v1__tenants__descriptor,
		&parley__billing__v1__billing__descriptor,
		&parley__agents__v1__agents__descriptor,
		&parley__messaging__v1__messaging__descriptor,
		&parley__analytics__v1__analytics__descriptor,
	};

	(void)state;
	assert_int_equal(gw_routes_init(NULL, 0), 0);
	for (size_t s = 0; s < 5; s++) {
		for (unsigned m = 0; m < sd[s]->n_methods; m++) {
			const char *name = sd[s]->methods[m].name;
			bool routed = false, skip = false;
			for (size_t i = 0; service_only[i]; i++)
				skip = skip ||
				       strcmp(service_only[i], name) == 0;
			for (size_t i = 0; i < gw_n_routes; i++)
				routed = routed ||
				         (gw_routes[i].svc == (int)s &&
				          strcmp(gw_routes[i].rpc, name) == 0);
			if (!routed && !skip)
				fail_msg("%s/%s has no route", sd[s]->name,
				         name);
		}
	}
}

static void
test_path_match(void **state)
{
	gw_param p[GW_MAX_PARAMS];
	int n = -1;

	(void)state;
	assert_true(gw_path_match("/v1/agents/{id}/knowledge",
	                          "/v1/agents/abc-1/knowledge", p, &n,
	                          GW_MAX_PARAMS));
	assert_int_equal(n, 1);
	assert_string_equal(p[0].name, "id");
	assert_string_equal(p[0].value, "abc-1");
	assert_false(gw_path_match("/v1/agents/{id}/knowledge",
	                           "/v1/agents//knowledge", p, &n, 4));
	assert_false(
	        gw_path_match("/v1/agents/{id}", "/v1/agents/a/b", p, &n, 4));
	assert_false(gw_path_match("/v1/agents", "/v1/agents/", p, &n, 4));
	assert_false(gw_path_match("/v1/agents", "/v1/agent", p, &n, 4));
	assert_true(gw_path_match("/v1/agents", "/v1/agents", p, &n, 4));
	assert_int_equal(n, 0);
	// Too long a segment.
	char longp[400] = "/v1/agents/";
	memset(longp + 11, 'a', 300);
	assert_false(gw_path_match("/v1/agents/{id}", longp, p, &n, 4));
}

static void
test_route_find(void **state)
{
	gw_param p[GW_MAX_PARAMS];
	char allow[96];
	int n;
	const gw_route *r;

	(void)state;
	assert_int_equal(gw_routes_init(NULL, 0), 0);
	r = gw_route_find("POST", "/v1/signup", p, &n, allow, sizeof(allow));
	assert_non_null(r);
	assert_string_equal(r->rpc, "SignUp");
	assert_true(r->flags & GW_PUBLIC);
	r = gw_route_find("PATCH", "/v1/channels/c1", p, &n, allow,
	                  sizeof(allow));
	assert_non_null(r);
	assert_string_equal(r->rpc, "UpdateChannel");
	assert_string_equal(p[0].value, "c1");
	r = gw_route_find("POST", "/v1/conversations/x/messages", p, &n, allow,
	                  sizeof(allow));
	assert_string_equal(r->rpc, "SendHumanReply");
	r = gw_route_find("GET", "/v1/conversations/x/messages", p, &n, allow,
	                  sizeof(allow));
	assert_string_equal(r->rpc, "ListMessages");
	r = gw_route_find("HEAD", "/v1/conversations", p, &n, allow,
	                  sizeof(allow));
	assert_string_equal(r->rpc, "ListConversations");
	// Known path, wrong method: 405 with Allow.
	r = gw_route_find("DELETE", "/v1/channels/c1", p, &n, allow,
	                  sizeof(allow));
	assert_null(r);
	assert_string_equal(allow, "GET, PATCH");
	// Unknown path: 404.
	r = gw_route_find("GET", "/v1/nope", p, &n, allow, sizeof(allow));
	assert_null(r);
	assert_string_equal(allow, "");
	// Path parameters fill the bound fields.
	char f[64];
	r = gw_route_find("POST", "/v1/agents/a1/knowledge", p, &n, allow,
	                  sizeof(allow));
	assert_string_equal(gw_route_field(r, "id", f, sizeof(f)), "agent_id");
	r = gw_route_find("GET", "/v1/agents/a1", p, &n, allow, sizeof(allow));
	assert_string_equal(gw_route_field(r, "id", f, sizeof(f)), "id");
}

static void
test_error_json(void **state)
{
	Parley__Rpc__V1__FieldViolation fv =
	        PARLEY__RPC__V1__FIELD_VIOLATION__INIT;
	Parley__Rpc__V1__FieldViolation *d[1] = { &fv };
	size_t len;
	char *s;

	(void)state;
	fv.field = "email";
	fv.description = "not an email";
	s = gw_error_json(PL_INVALID_ARGUMENT, "email: not an email", d, 1,
	                  &len);
	assert_string_equal(
	        s, "{\"error\":{\"code\":\"INVALID_ARGUMENT\",\"message\":"
	           "\"email: not an email\",\"details\":[{\"field\":\"email\","
	           "\"description\":\"not an email\"}]}}");
	assert_int_equal(len, strlen(s));
	free(s);
	// Invalid UTF-8 in a message never loses the error.
	s = gw_error_json(PL_NOT_FOUND, "bad \xff", NULL, 0, &len);
	assert_non_null(s);
	assert_non_null(strstr(s, "\"NOT_FOUND\""));
	free(s);
	assert_int_equal(gw_http_status(PL_NOT_FOUND), 404);
	assert_int_equal(gw_http_status(PL_PERMISSION_DENIED), 403);
	assert_int_equal(gw_http_status(PL_UNAUTHENTICATED), 401);
	assert_int_equal(gw_http_status(PL_UNIMPLEMENTED), 501);
	assert_int_equal(gw_http_status(PL_RESOURCE_EXHAUSTED), 429);
	assert_int_equal(gw_http_status(PL_ALREADY_EXISTS), 409);
	assert_int_equal(gw_http_status(PL_INVALID_ARGUMENT), 400);
	assert_int_equal(gw_http_status(PL_UNAVAILABLE), 503);
}

static void
test_bucket(void **state)
{
	gw_bucket b = { 0 };
	int64_t t = 1000000000LL, ok = 0;

	(void)state;
	// rate 10/s, burst 20: 20 at once, then the 21st waits 100 ms.
	for (int i = 0; i < 25; i++)
		ok += gw_bucket_take(&b, 10, 20, t) == 0;
	assert_int_equal(ok, 20);
	assert_int_equal(gw_bucket_take(&b, 10, 20, t), 100);
	// 100 ms later one more.
	t += 100000000LL;
	assert_int_equal(gw_bucket_take(&b, 10, 20, t), 0);
	assert_true(gw_bucket_take(&b, 10, 20, t) > 0);
	// A long pause refills only up to the burst.
	t += 60 * 1000000000LL;
	ok = 0;
	for (int i = 0; i < 30; i++)
		ok += gw_bucket_take(&b, 10, 20, t) == 0;
	assert_int_equal(ok, 20);
	// Slow rates: 0.5/s -> 2 s wait.
	gw_bucket s = { 0 };
	assert_int_equal(gw_bucket_take(&s, 0.5, 1, t), 0);
	assert_int_equal(gw_bucket_take(&s, 0.5, 1, t), 2000);
}

static void
test_limiter(void **state)
{
	gw_limiter *l = gw_limiter_open();
	int64_t t = 1000000000LL;

	(void)state;
	assert_int_equal(gw_limiter_take(l, "k1", 1, 2, t), 0);
	assert_int_equal(gw_limiter_take(l, "k1", 1, 2, t), 0);
	assert_true(gw_limiter_take(l, "k1", 1, 2, t) > 0);
	// Another key has its own bucket.
	assert_int_equal(gw_limiter_take(l, "k2", 1, 2, t), 0);
	assert_int_equal(gw_limiter_size(l), 2);
	gw_limiter_close(l);
}

static void
test_auth_cache(void **state)
{
	gw_auth *a = gw_auth_open(64, 1000);
	pl_principal p = PARLEY__RPC__V1__PRINCIPAL__INIT;
	char *scopes[] = { "conversations:read" };
	gw_auth_info info;
	pl_arena arena;
	int64_t t = 5000000000LL;

	(void)state;
	pl_arena_init(&arena, 0, 0);
	p.kind = PARLEY__RPC__V1__PRINCIPAL_KIND__PRINCIPAL_KIND_API_KEY;
	p.tenant_id = "t1";
	p.api_key_id = "k1";
	p.scopes = scopes;
	p.n_scopes = 1;
	assert_false(gw_auth_get(a, "tok", &arena, t, &info));
	// An answer allowed 5 s is still kept at most 1 s.
	gw_auth_put(a, "tok", &p, 1, 60, 5000, t);
	assert_true(gw_auth_get(a, "tok", &arena, t + 999000000LL, &info));
	assert_string_equal(info.principal->tenant_id, "t1");
	assert_string_equal(info.principal->scopes[0], "conversations:read");
	assert_int_equal(info.rate_limit_per_minute, 60);
	assert_false(gw_auth_get(a, "tok", &arena, t + 1000000000LL, &info));
	assert_false(gw_auth_get(a, "other", &arena, t, &info));
	// The answer's own shorter TTL wins; 0 is not cached.
	gw_auth_put(a, "tok2", &p, 1, 0, 200, t);
	assert_true(gw_auth_get(a, "tok2", &arena, t + 199000000LL, &info));
	assert_false(gw_auth_get(a, "tok2", &arena, t + 200000000LL, &info));
	gw_auth_put(a, "tok3", &p, 1, 0, 0, t);
	assert_false(gw_auth_get(a, "tok3", &arena, t, &info));
	gw_auth_close(a);
	// A cache configured with TTL 0 keeps nothing.
	a = gw_auth_open(64, 0);
	gw_auth_put(a, "tok", &p, 1, 0, 1000, t);
	assert_false(gw_auth_get(a, "tok", &arena, t, &info));
	gw_auth_close(a);
	pl_arena_fini(&arena);
}

static void
test_enum_names(void **state)
{
	const ProtobufCEnumDescriptor *ed =
	        &parley__messaging__v1__conversation_owner__descriptor;
	char buf[64];

	(void)state;
	assert_null(gw_enum_json_name(ed, &ed->values[0], buf, sizeof(buf)));
	for (unsigned i = 0; i < ed->n_values; i++)
		if (ed->values[i].value ==
		    PARLEY__MESSAGING__V1__CONVERSATION_OWNER__CONVERSATION_OWNER_BOT)
			assert_string_equal(gw_enum_json_name(ed,
			                                      &ed->values[i],
			                                      buf, sizeof(buf)),
			                    "bot");
}

// Every route is in the document, and every operation of the document is a
// route the gateway serves (the path with its parameters filled in finds
// exactly that route).
static void
test_openapi_consistent(void **state)
{
	json_t *doc = gw_openapi("http://localhost:8080"), *paths, *item, *op;
	const char *path, *method;
	size_t ops = 0;

	(void)state;
	assert_non_null(doc);
	assert_string_equal(json_string_value(json_object_get(doc, "openapi")),
	                    "3.0.3");
	paths = json_object_get(doc, "paths");
	for (size_t i = 0; i < gw_n_routes; i++) {
		char m[8];
		size_t k;
		for (k = 0; gw_routes[i].method[k]; k++)
			m[k] = (char)(gw_routes[i].method[k] | 0x20);
		m[k] = '\0';
		item = json_object_get(paths, gw_routes[i].pattern);
		if (item == NULL || json_object_get(item, m) == NULL)
			fail_msg("%s %s missing from the document",
			         gw_routes[i].method, gw_routes[i].pattern);
	}
	json_object_foreach(paths, path, item)
	{
		json_object_foreach(item, method, op)
		{
			char url[512], M[8], allow[96];
			size_t k = 0, u = 0;
			gw_param p[GW_MAX_PARAMS];
			int n;
			const gw_route *r;

			for (const char *s = path; *s && u < sizeof(url) - 8;) {
				if (*s == '{') {
					memcpy(url + u, "x1", 2);
					u += 2;
					s = strchr(s, '}') + 1;
				} else {
					url[u++] = *s++;
				}
			}
			url[u] = '\0';
			for (k = 0; method[k]; k++)
				M[k] = (char)(method[k] & ~0x20);
			M[k] = '\0';
			r = gw_route_find(M, url, p, &n, allow, sizeof(allow));
			if (r == NULL || strcmp(r->pattern, path) != 0)
				fail_msg("%s %s is documented but not served",
				         M, path);
			// Schemas are there for every referenced message.
			if (r->out != NULL && r->hooks != &gw_hooks_wa_verify) {
				json_t *sc = json_object_get(
				        json_object_get(
				                json_object_get(doc,
				                                "components"),
				                "schemas"),
				        r->out->name);
				assert_non_null(sc);
			}
			ops++;
		}
	}
	assert_int_equal(ops, gw_n_routes);
	// Public routes need no bearer.
	op = json_object_get(json_object_get(paths, "/v1/signup"), "post");
	assert_int_equal(json_array_size(json_object_get(op, "security")), 0);
	json_decref(doc);
}

// The connections and waiting long-polls fitted to the open-file limit.
static void
test_conn_budget(void **state)
{
	int64_t conns, waiting;
	(void)state;

	// The defaults fit: nothing changes.
	conns = 1024, waiting = 512;
	assert_int_equal(gw_conn_budget(&conns, &waiting, 20000), 0);
	assert_int_equal(conns, 1024);
	assert_int_equal(waiting, 512);
	// 0 connections means the default.
	conns = 0, waiting = 100;
	assert_int_equal(gw_conn_budget(&conns, &waiting, 20000), 0);
	assert_int_equal(conns, 1024);
	// More waiting than half the connections: the rest are kept for the
	// API and the webhooks.
	conns = 1024, waiting = 1000;
	assert_int_equal(gw_conn_budget(&conns, &waiting, 20000), 2);
	assert_int_equal(waiting, 512);
	// More connections than the open files allow.
	conns = 4096, waiting = 1000;
	assert_int_equal(gw_conn_budget(&conns, &waiting, 1024), 3);
	assert_int_equal(conns, 1024 - GW_FD_RESERVE);
	assert_int_equal(waiting, (1024 - GW_FD_RESERVE) / 2);
	// A tiny limit still leaves 64; none waiting stays none.
	conns = 1024, waiting = 0;
	assert_int_equal(gw_conn_budget(&conns, &waiting, 100), 1);
	assert_int_equal(conns, 64);
	assert_int_equal(waiting, 0);
}

// PARLEY_TRUSTED_PROXIES: the list's forms and its mistakes.
static void
test_proxies_parse(void **state)
{
	gw_net *nets;
	size_t n;
	char err[160];
	char big[64 * 12 + 16] = "";

	(void)state;
	assert_int_equal(gw_proxies_parse("", &nets, &n, err, sizeof(err)), 0);
	assert_null(nets);
	assert_int_equal(n, 0);
	assert_int_equal(gw_proxies_parse(NULL, &nets, &n, err, sizeof(err)),
	                 0);
	assert_int_equal(n, 0);
	assert_int_equal(gw_proxies_parse(" 10.0.0.0/8 ,192.168.1.7,, "
	                                  "fd00::/8,::1,10.1.2.3/0",
	                                  &nets, &n, err, sizeof(err)),
	                 0);
	assert_int_equal(n, 5);
	assert_int_equal(nets[0].bits, 96 + 8);
	assert_int_equal(nets[1].bits, 128);
	assert_int_equal(nets[2].bits, 8);
	assert_int_equal(nets[3].bits, 128);
	assert_int_equal(nets[4].bits, 96); // every IPv4 address
	free(nets);
	static const char *const bad[] = {
		"10.0.0.0/33", "fd00::/129", "10.0.0.0/",   "10.0.0.0/-1",
		"10.0.0.0/8x", "10.0.0/8",   "example.com", "10.0.0.0/8/8",
		"1.2.3.4 5",   "::1/1000",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		assert_int_equal(
		        gw_proxies_parse(bad[i], &nets, &n, err, sizeof(err)),
		        -1);
		assert_non_null(strstr(err, "not an address"));
		assert_null(nets);
	}
	for (int i = 0; i < GW_MAX_PROXIES + 1; i++)
		strcat(big, "10.0.0.1,");
	assert_int_equal(gw_proxies_parse(big, &nets, &n, err, sizeof(err)),
	                 -1);
	assert_non_null(strstr(err, "more than"));
}

static void
check_client(const gw_net *nets, size_t n, const char *peer, const char *xff,
             const char *want)
{
	char out[46];

	gw_client_ip(nets, n, peer, xff, out, sizeof(out));
	assert_string_equal(out, want);
}

// The client behind the trusted proxies: the rightmost entry that is not
// one of them; nothing the client wrote left of it counts.
static void
test_client_ip(void **state)
{
	gw_net *nets;
	size_t n;
	char err[160];
	char many[64 * 11 + 32] = "";

	(void)state;
	// No trusted proxies: the header is never read.
	check_client(NULL, 0, "10.0.0.5", "203.0.113.9", "10.0.0.5");
	assert_int_equal(gw_proxies_parse("10.0.0.0/8, fd00::/8", &nets, &n,
	                                  err, sizeof(err)),
	                 0);
	// An untrusted peer's header is ignored (anyone can send one).
	check_client(nets, n, "198.51.100.1", "203.0.113.9", "198.51.100.1");
	// A trusted peer without the header: the peer.
	check_client(nets, n, "10.0.0.5", NULL, "10.0.0.5");
	check_client(nets, n, "10.0.0.5", "", "10.0.0.5");
	// The proxy appended the address it saw.
	check_client(nets, n, "10.0.0.5", "203.0.113.9", "203.0.113.9");
	// A client's forged entries sit left of it and are not believed.
	check_client(nets, n, "10.0.0.5", "1.1.1.1, 10.9.9.9, 203.0.113.9",
	             "203.0.113.9");
	// A chain of trusted proxies is walked past.
	check_client(nets, n, "10.0.0.5", "203.0.113.9,10.1.1.1 , 10.2.2.2",
	             "203.0.113.9");
	// Only proxies: the leftmost of them.
	check_client(nets, n, "10.0.0.5", "10.3.3.3, 10.2.2.2", "10.3.3.3");
	// Garbage stops the walk at the last address read.
	check_client(nets, n, "10.0.0.5", "nonsense", "10.0.0.5");
	check_client(nets, n, "10.0.0.5", "203.0.113.9:443, 10.2.2.2",
	             "10.2.2.2");
	check_client(nets, n, "10.0.0.5", ",", "10.0.0.5");
	check_client(nets, n, "10.0.0.5", "unknown,203.0.113.9", "203.0.113.9");
	// IPv6, written canonically; a mapped IPv4 peer matches a v4 range.
	check_client(nets, n, "fd00::1", "2001:DB8:0:0::7", "2001:db8::7");
	check_client(nets, n, "::ffff:10.0.0.5", "203.0.113.9", "203.0.113.9");
	check_client(nets, n, "10.0.0.5", "::ffff:203.0.113.9", "203.0.113.9");
	// At most GW_MAX_HOPS entries are read.
	for (int i = 0; i < GW_MAX_HOPS + 8; i++)
		strcat(many, i == 0 ? "203.0.113.9" : ",10.0.0.1");
	check_client(nets, n, "10.0.0.5", many, "10.0.0.1");
	// An entry too long for an address is not one.
	check_client(nets, n, "10.0.0.5",
	             "203.0.113.9, "
	             "0000000000000000000000000000000000000000000000000000001",
	             "10.0.0.5");
	free(nets);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_table_resolves),
		cmocka_unit_test(test_every_rpc_routed),
		cmocka_unit_test(test_path_match),
		cmocka_unit_test(test_route_find),
		cmocka_unit_test(test_error_json),
		cmocka_unit_test(test_bucket),
		cmocka_unit_test(test_limiter),
		cmocka_unit_test(test_auth_cache),
		cmocka_unit_test(test_enum_names),
		cmocka_unit_test(test_openapi_consistent),
		cmocka_unit_test(test_conn_budget),
		cmocka_unit_test(test_proxies_parse),
		cmocka_unit_test(test_client_ip),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
