// The ONE generic handler: route, authenticate, rate-limit, JSON -> input
// message (body, query, path), RPC with the caller's principal and the
// request id as trace id, output message -> JSON.
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "gateway.h"
#include "parley/tenants/v1/tenants.pb-c.h"
#include "pl/id.h"
#include "pl/json.h"
#include "pl/log.h"

#define ARENA_LIMIT (32u * 1024 * 1024)
#define TOKEN_MAX   512
#define IDEM_MAX    128

static const char allow_headers[] =
        "Authorization, Content-Type, Idempotency-Key, X-Request-Id";
static const char expose_headers[] = "X-Request-Id, Retry-After";

const char *
gw_param_get(const gw_ctx *x, const char *name)
{
	for (int i = 0; i < x->n_params; i++)
		if (strcmp(x->params[i].name, name) == 0)
			return x->params[i].value;
	return NULL;
}

void
gw_reply_json(gw_ctx *x, int status, const char *json, size_t len)
{
	pl_http_resp_set(x->resp, status, "application/json", json, len);
}

void
gw_reply_error(gw_ctx *x, int code, const char *message,
               Parley__Rpc__V1__FieldViolation *const *details,
               size_t n_details)
{
	size_t len;
	char *body = gw_error_json(code, message, details, n_details, &len);

	if (code == PL_UNAUTHENTICATED)
		pl_http_resp_header(x->resp, "WWW-Authenticate", "Bearer");
	if (body == NULL) {
		static const char oom[] = "{\"error\":{\"code\":\"INTERNAL\","
		                          "\"message\":\"out of memory\"}}";
		gw_reply_json(x, 500, oom, sizeof(oom) - 1);
		return;
	}
	gw_reply_json(x, gw_http_status(code), body, len);
	free(body);
}

// A request id from the client is kept when it is 1..64 characters of
// [A-Za-z0-9._:-]; anything else gets a new UUIDv7.
static void
request_id(gw_ctx *x)
{
	const char *h = pl_http_req_header(x->req, "X-Request-Id");
	size_t n = h ? strlen(h) : 0;
	bool ok = n > 0 && n < sizeof(x->rid);

	for (size_t i = 0; ok && i < n; i++)
		ok = isalnum((unsigned char)h[i]) || strchr("._:-", h[i]);
	if (ok)
		memcpy(x->rid, h, n + 1);
	else
		pl_uuid7_str(x->rid);
}

static bool
origin_allowed(const gw *g, const char *origin, bool any)
{
	if (origin == NULL || origin[0] == '\0')
		return false;
	if (any || g->cors_any)
		return true;
	for (char **o = g->cors; o != NULL && *o != NULL; o++)
		if (strcasecmp(*o, origin) == 0)
			return true;
	return false;
}

static void
cors(gw_ctx *x, bool any)
{
	const char *origin = pl_http_req_header(x->req, "Origin");

	if (!origin_allowed(x->g, origin, any))
		return;
	pl_http_resp_header(x->resp, "Access-Control-Allow-Origin", origin);
	pl_http_resp_header(x->resp, "Vary", "Origin");
	pl_http_resp_header(x->resp, "Access-Control-Expose-Headers",
	                    expose_headers);
}

// OPTIONS: a CORS preflight (or a plain question about the methods).
static void
preflight(gw_ctx *x)
{
	char allow[128] = "";
	size_t used = 0;
	bool known = false, any = false;

	for (size_t i = 0; i < gw_n_routes; i++) {
		const gw_route *r = &gw_routes[i];
		if (!gw_path_match(r->pattern, x->req->path, NULL, NULL, 0))
			continue;
		known = true;
		any = any || (r->flags & GW_ANY_ORIGIN);
		if (strstr(allow, r->method) == NULL) {
			int w = snprintf(allow + used, sizeof(allow) - used,
			                 "%s, ", r->method);
			if (w > 0 && (size_t)w < sizeof(allow) - used)
				used += (size_t)w;
		}
	}
	if (!known) {
		gw_reply_error(x, PL_NOT_FOUND, "no such route", NULL, 0);
		return;
	}
	snprintf(allow + used, sizeof(allow) - used, "OPTIONS");
	cors(x, any);
	pl_http_resp_header(x->resp, "Allow", allow);
	pl_http_resp_header(x->resp, "Access-Control-Allow-Methods", allow);
	pl_http_resp_header(x->resp, "Access-Control-Allow-Headers",
	                    allow_headers);
	pl_http_resp_header(x->resp, "Access-Control-Max-Age", "600");
	pl_http_resp_set(x->resp, 204, NULL, NULL, 0);
}

// "Bearer <token>" -> token, or NULL.
static const char *
bearer(gw_ctx *x)
{
	const char *h = pl_http_req_header(x->req, "Authorization");
	size_t n;

	if (h == NULL || strncasecmp(h, "Bearer ", 7) != 0)
		return NULL;
	h += 7;
	while (*h == ' ')
		h++;
	n = strlen(h);
	if (n == 0 || n > TOKEN_MAX)
		return NULL;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)h[i] <= ' ' || (unsigned char)h[i] >= 0x7f)
			return NULL;
	return h;
}

// Authenticates the caller; answers and returns false when it cannot.
static bool
authenticate(gw_ctx *x)
{
	gw *g = x->g;
	gw_auth_info info = { 0 };
	int64_t now = pl_now_ns();
	const char *tok = x->token;

	if (tok == NULL) {
		gw_reply_error(x, PL_UNAUTHENTICATED,
		               "missing or malformed Authorization: Bearer "
		               "header",
		               NULL, 0);
		return false;
	}
	if (!gw_auth_get(g->auth, tok, &x->arena, now, &info)) {
		Parley__Tenants__V1__AuthenticateRequest in =
		        PARLEY__TENANTS__V1__AUTHENTICATE_REQUEST__INIT;
		Parley__Tenants__V1__AuthenticateResponse *out = NULL;
		pl_rpc_result res;
		pl_rpc_opts opts = { .parent = &x->parent, .idempotent = true };
		int rc;

		if (g->cli[GW_TENANTS] == NULL) {
			gw_reply_error(x, PL_UNAVAILABLE,
			               "authentication is unavailable: the "
			               "tenants service is not configured",
			               NULL, 0);
			return false;
		}
		in.token = (char *)tok;
		in.source_ip = x->client_ip;
		rc = pl_rpc_call(
		        g->cli[GW_TENANTS],
		        "/parley.tenants.v1.Tenants/Authenticate", &in.base,
		        &parley__tenants__v1__authenticate_response__descriptor,
		        (void **)&out, &x->arena, &opts, &res);
		if (rc != PL_OK) {
			if (rc == PL_NOT_FOUND || rc == PL_PERMISSION_DENIED ||
			    rc == PL_INVALID_ARGUMENT)
				rc = PL_UNAUTHENTICATED;
			gw_reply_error(x, rc,
			               rc == PL_UNAUTHENTICATED
			                       ? "invalid or expired token"
			                       : res.message,
			               NULL, 0);
			return false;
		}
		if (out->principal == NULL) {
			gw_reply_error(x, PL_UNAUTHENTICATED,
			               "invalid or expired token", NULL, 0);
			return false;
		}
		info.principal = out->principal;
		info.tenant_status = (int)out->tenant_status;
		info.rate_limit_per_minute = out->rate_limit_per_minute;
		gw_auth_put(g->auth, tok, out->principal, info.tenant_status,
		            info.rate_limit_per_minute, out->cache_ttl_ms, now);
	}
	if (info.tenant_status ==
	    PARLEY__TENANTS__V1__TENANT_STATUS__TENANT_STATUS_SUSPENDED) {
		gw_reply_error(x, PL_PERMISSION_DENIED,
		               "the tenant is suspended", NULL, 0);
		return false;
	}
	x->principal = info.principal;
	pl_log_ctx_set(x->rid, info.principal->tenant_id);
	if (info.principal->kind ==
	    PARLEY__RPC__V1__PRINCIPAL_KIND__PRINCIPAL_KIND_API_KEY) {
		double rate = info.rate_limit_per_minute > 0
		                      ? info.rate_limit_per_minute / 60.0
		                      : (double)g->cfg.api_key_rps;
		const char *key = info.principal->api_key_id &&
		                                  info.principal->api_key_id[0]
		                          ? info.principal->api_key_id
		                          : tok;
		int64_t wait =
		        gw_limiter_take(g->lim, key, rate, 2 * rate, now);

		if (wait > 0) {
			char ra[32], msg[128];
			snprintf(ra, sizeof(ra), "%lld",
			         (long long)((wait + 999) / 1000));
			snprintf(msg, sizeof(msg),
			         "rate limit of %.4g requests per second "
			         "exceeded for this API key",
			         rate);
			pl_http_resp_header(x->resp, "Retry-After", ra);
			gw_reply_error(x, PL_RESOURCE_EXHAUSTED, msg, NULL, 0);
			return false;
		}
	}
	return true;
}

// A query value as the JSON a field of type f expects; NULL when the value
// is not valid UTF-8.
static json_t *
query_value(const ProtobufCFieldDescriptor *f, const char *v)
{
	if (f->label == PROTOBUF_C_LABEL_REPEATED) {
		json_t *arr = json_array();
		const char *p = v;
		while (*p != '\0') {
			size_t n = strcspn(p, ",");
			json_t *s = json_stringn(p, n);
			if (s == NULL) {
				json_decref(arr);
				return NULL;
			}
			json_array_append_new(arr, s);
			p += n;
			if (*p == ',')
				p++;
		}
		return arr;
	}
	switch (f->type) {
	case PROTOBUF_C_TYPE_BOOL:
		if (strcmp(v, "true") == 0 || strcmp(v, "1") == 0 ||
		    v[0] == '\0')
			return json_true();
		if (strcmp(v, "false") == 0 || strcmp(v, "0") == 0)
			return json_false();
		break;
	case PROTOBUF_C_TYPE_FLOAT:
	case PROTOBUF_C_TYPE_DOUBLE: {
		char *end;
		double d = strtod(v, &end);
		if (end != v && *end == '\0' && isfinite(d))
			return json_real(d);
		break;
	}
	default:
		break;
	}
	// Strings, enums and integers (the transcoder reads integers from
	// strings and names the field when they are not).
	return json_string(v);
}

static bool
queryable(const ProtobufCFieldDescriptor *f)
{
	if (f->type == PROTOBUF_C_TYPE_MESSAGE ||
	    f->type == PROTOBUF_C_TYPE_BYTES)
		return false;
	return f->label != PROTOBUF_C_LABEL_REPEATED ||
	       f->type == PROTOBUF_C_TYPE_STRING;
}

static int
set_query(gw_ctx *x, json_t *obj, json_t *into, const char *qname,
          const ProtobufCFieldDescriptor *f)
{
	const char *v = pl_http_req_query(x->req, qname);
	json_t *j;
	char msg[160];

	(void)obj;
	if (v == NULL)
		return PL_OK;
	if ((j = query_value(f, v)) == NULL) {
		snprintf(msg, sizeof(msg),
		         "query parameter %.64s: not valid UTF-8", qname);
		gw_reply_error(x, PL_INVALID_ARGUMENT, msg, NULL, 0);
		return PL_INVALID_ARGUMENT;
	}
	json_object_set_new(into, f->name, j);
	return PL_OK;
}

static json_t *
child(json_t *obj, const char *name)
{
	json_t *c = json_object_get(obj, name);

	if (!json_is_object(c)) {
		c = json_object();
		json_object_set_new(obj, name, c);
	}
	return c;
}

// Query parameters fill the input's fields by name: scalars and enums
// (?status=open), repeated strings (?ids=a,b), one level of nested
// messages (?filter.channel_id=), and the page (?page_size= or ?limit=,
// ?page_token=).
static int
query_fields(gw_ctx *x, json_t *obj)
{
	const ProtobufCMessageDescriptor *d = x->route->in;
	bool has_limit = protobuf_c_message_descriptor_get_field_by_name(
	                         d, "limit") != NULL;

	for (unsigned i = 0; i < d->n_fields; i++) {
		const ProtobufCFieldDescriptor *f = &d->fields[i];
		char qn[128];

		if (f->type != PROTOBUF_C_TYPE_MESSAGE) {
			if (queryable(f) &&
			    set_query(x, obj, obj, f->name, f) != PL_OK)
				return PL_INVALID_ARGUMENT;
			continue;
		}
		if (f->label == PROTOBUF_C_LABEL_REPEATED)
			continue;
		const ProtobufCMessageDescriptor *sd = f->descriptor;
		if (strcmp(sd->name, "parley.rpc.v1.PageRequest") == 0) {
			const char *ps = pl_http_req_query(x->req, "page_size");
			const char *lim =
			        has_limit ? NULL
			                  : pl_http_req_query(x->req, "limit");
			const char *pt =
			        pl_http_req_query(x->req, "page_token");
			if (ps == NULL)
				ps = lim;
			if (ps != NULL) {
				json_t *s = json_string(ps);
				if (s == NULL)
					goto bad;
				json_object_set_new(child(obj, f->name),
				                    "page_size", s);
			}
			if (pt != NULL) {
				json_t *s = json_string(pt);
				if (s == NULL)
					goto bad;
				json_object_set_new(child(obj, f->name),
				                    "page_token", s);
			}
			continue;
		}
		if (strcmp(sd->name, "parley.rpc.v1.Json") == 0)
			continue;
		for (unsigned k = 0; k < sd->n_fields; k++) {
			const ProtobufCFieldDescriptor *sf = &sd->fields[k];
			if (!queryable(sf))
				continue;
			snprintf(qn, sizeof(qn), "%s.%s", f->name, sf->name);
			if (pl_http_req_query(x->req, qn) == NULL)
				continue;
			if (set_query(x, obj, child(obj, f->name), qn, sf) !=
			    PL_OK)
				return PL_INVALID_ARGUMENT;
		}
	}
	return PL_OK;
bad:
	gw_reply_error(x, PL_INVALID_ARGUMENT,
	               "query parameter: not valid UTF-8", NULL, 0);
	return PL_INVALID_ARGUMENT;
}

// PATCH: update_mask from the body's keys (proto/README.md: "the gateway
// fills the mask from the keys of a PATCH body"), path-bound fields aside.
static void
fill_mask(gw_ctx *x, json_t *obj)
{
	const char *k;
	json_t *v, *mask;

	if (json_object_get(obj, "update_mask") != NULL ||
	    json_object_get(obj, "updateMask") != NULL)
		return;
	mask = json_array();
	json_object_foreach(obj, k, v)
	{
		char field[64];
		bool bound = false;

		(void)v;
		for (int i = 0; i < x->n_params; i++)
			if (strcmp(gw_route_field(x->route, x->params[i].name,
			                          field, sizeof(field)),
			           k) == 0)
				bound = true;
		if (!bound)
			json_array_append_new(mask, json_string(k));
	}
	json_object_set_new(obj, "update_mask", mask);
}

// Reports a transcoder error ("contact.phone: expected a string") with the
// field named.
static void
reply_json_error(gw_ctx *x, int code, const char *err)
{
	Parley__Rpc__V1__FieldViolation fv =
	        PARLEY__RPC__V1__FIELD_VIOLATION__INIT;
	Parley__Rpc__V1__FieldViolation *d[1] = { &fv };
	const char *sep = strstr(err, ": ");
	char field[128];

	if (code != PL_INVALID_ARGUMENT || sep == NULL ||
	    (size_t)(sep - err) >= sizeof(field)) {
		gw_reply_error(x, code, err, NULL, 0);
		return;
	}
	memcpy(field, err, (size_t)(sep - err));
	field[sep - err] = '\0';
	fv.field = field;
	fv.description = (char *)(sep + 2);
	gw_reply_error(x, code, err, d, 1);
}

// The input message from the JSON body, query and path.
static int
build_input(gw_ctx *x, ProtobufCMessage **in)
{
	const gw_route *r = x->route;
	json_t *obj;
	json_error_t jerr;
	char err[256];
	int rc;

	if (x->req->body != NULL && x->req->body_len > 0) {
		obj = json_loadb(x->req->body, x->req->body_len,
		                 JSON_REJECT_DUPLICATES, &jerr);
		if (obj == NULL) {
			snprintf(err, sizeof(err),
			         "malformed JSON at line %d column %d: %s",
			         jerr.line, jerr.column, jerr.text);
			gw_reply_error(x, PL_INVALID_ARGUMENT, err, NULL, 0);
			return PL_INVALID_ARGUMENT;
		}
		if (!json_is_object(obj)) {
			json_decref(obj);
			gw_reply_error(x, PL_INVALID_ARGUMENT,
			               "the body must be a JSON object", NULL,
			               0);
			return PL_INVALID_ARGUMENT;
		}
	} else {
		obj = json_object();
	}
	if (r->flags & GW_MASK)
		fill_mask(x, obj);
	if ((rc = query_fields(x, obj)) != PL_OK)
		goto out;
	for (int i = 0; i < x->n_params; i++) {
		char field[64];
		json_t *s = json_string(x->params[i].value);
		if (s == NULL) {
			gw_reply_error(x, PL_INVALID_ARGUMENT,
			               "path parameter not valid UTF-8", NULL,
			               0);
			rc = PL_INVALID_ARGUMENT;
			goto out;
		}
		json_object_set_new(obj,
		                    gw_route_field(r, x->params[i].name, field,
		                                   sizeof(field)),
		                    s);
	}
	if (r->hooks != NULL && r->hooks->pre != NULL &&
	    (rc = r->hooks->pre(x, obj)) != PL_OK)
		goto out;
	rc = pl_json_obj_to_pb(obj, r->in, &x->arena, in, err, sizeof(err));
	if (rc != PL_OK)
		reply_json_error(x, rc, err);
out:
	json_decref(obj);
	return rc;
}

static void
call(gw_ctx *x)
{
	const gw_route *r = x->route;
	ProtobufCMessage *in = NULL;
	void *out = NULL;
	const uint8_t *wire = NULL;
	size_t wire_len = 0;
	pl_rpc_result res;
	pl_rpc_opts opts = { 0 };
	const char *idem = pl_http_req_header(x->req, "Idempotency-Key");
	char key[PL_UUID_STRLEN + 1];
	int rc;

	if (idem != NULL && (idem[0] == '\0' || strlen(idem) > IDEM_MAX)) {
		gw_reply_error(x, PL_INVALID_ARGUMENT,
		               "Idempotency-Key must be 1..128 characters",
		               NULL, 0);
		return;
	}
	if (idem == NULL && (r->flags & GW_KEY)) {
		pl_uuid7_str(key);
		idem = key;
	}
	if (r->flags & GW_RAW)
		rc = r->hooks->raw(x, &in);
	else
		rc = build_input(x, &in);
	if (rc != PL_OK)
		return;
	if (x->g->cli[r->svc] == NULL) {
		char msg[128];
		snprintf(msg, sizeof(msg), "the %s service is not configured",
		         gw_svc_name(r->svc));
		gw_reply_error(x, PL_UNAVAILABLE, msg, NULL, 0);
		return;
	}
	opts.principal = x->principal;
	opts.parent = &x->parent;
	opts.idempotency_key = idem;
	opts.timeout_ms = x->rpc_timeout_ms;
	opts.idempotent = strcmp(r->method, "GET") == 0;
	// An answer the gateway only writes out is read from its wire form
	// (pl_json_dump_wire): no unpacked copy.
	if (r->hooks != NULL && r->hooks->answer != NULL)
		rc = pl_rpc_call(x->g->cli[r->svc], r->full, in, r->out, &out,
		                 &x->arena, &opts, &res);
	else
		rc = pl_rpc_call_raw(x->g->cli[r->svc], r->full, in, &wire,
		                     &wire_len, &x->arena, &opts, &res);
	if (rc != PL_OK) {
		if (rc >= PL_INTERNAL && rc != PL_UNAUTHENTICATED)
			pl_warn("%s %s: %s answered %s", r->method, r->pattern,
			        gw_svc_name(r->svc), pl_status_name(rc));
		gw_reply_error(x, rc, res.message, res.details, res.n_details);
		return;
	}
	if (r->hooks != NULL && r->hooks->answer != NULL &&
	    r->hooks->answer(x, out))
		return;
	{
		size_t len;
		char *json = out != NULL ? pl_json_dump_pb(out, &len)
		                         : pl_json_dump_wire(r->out, wire,
		                                             wire_len, &len);
		// Bytes not in pack's form: unpacked, as before.
		if (json == NULL && out == NULL) {
			out = protobuf_c_message_unpack(
			        r->out, pl_arena_pb(&x->arena), wire_len, wire);
			if (out == NULL) {
				pl_warn("%s %s: undecodable answer from %s",
				        r->method, r->pattern,
				        gw_svc_name(r->svc));
				gw_reply_error(x, PL_INTERNAL,
				               "undecodable answer", NULL, 0);
				return;
			}
			json = pl_json_dump_pb(out, &len);
		}
		if (json == NULL) {
			gw_reply_error(x, PL_INTERNAL,
			               "could not encode the answer", NULL, 0);
			return;
		}
		pl_http_resp_take(x->resp, r->status, "application/json", json,
		                  len);
	}
}

void
gw_handle(const pl_http_req *req, pl_http_resp *resp, void *arg)
{
	gw_ctx x = { .g = arg, .req = req, .resp = resp };
	char allow[96];
	const gw_route *r;

	pl_arena_init(&x.arena, 0, ARENA_LIMIT);
	request_id(&x);
	x.parent.trace_id = x.rid;
	x.parent.arena = &x.arena;
	pl_log_ctx_set(x.rid, NULL);
	pl_http_resp_header(resp, "X-Request-Id", x.rid);
	gw_client_ip(x.g->proxies, x.g->n_proxies, req->remote_ip,
	             pl_http_req_header(req, "X-Forwarded-For"), x.client_ip,
	             sizeof(x.client_ip));

	if (strcmp(req->method, "OPTIONS") == 0) {
		preflight(&x);
		goto out;
	}
	// The liveness probe (Kubernetes, the local runner): not part of the
	// API, so not in the route table or the OpenAPI document.
	if (strcmp(req->path, "/healthz") == 0 &&
	    (strcmp(req->method, "GET") == 0 ||
	     strcmp(req->method, "HEAD") == 0)) {
		pl_http_resp_set(resp, 200, "text/plain", "ok\n", 3);
		goto out;
	}
	r = gw_route_find(req->method, req->path, x.params, &x.n_params, allow,
	                  sizeof(allow));
	if (r == NULL) {
		cors(&x, false);
		if (allow[0] != '\0') {
			char msg[160];
			snprintf(msg, sizeof(msg),
			         "method %.16s not allowed here; allowed: %s",
			         req->method, allow);
			strncat(allow, ", OPTIONS",
			        sizeof(allow) - strlen(allow) - 1);
			pl_http_resp_header(resp, "Allow", allow);
			gw_reply_error(&x, PL_UNIMPLEMENTED, msg, NULL, 0);
			resp->status = 405;
		} else {
			gw_reply_error(&x, PL_NOT_FOUND, "no such route", NULL,
			               0);
		}
		goto out;
	}
	x.route = r;
	cors(&x, (r->flags & GW_ANY_ORIGIN) != 0);
	if (req->too_large || req->body_len > (size_t)x.g->cfg.max_body) {
		gw_reply_error(&x, PL_INVALID_ARGUMENT,
		               "request body too large", NULL, 0);
		resp->status = 413;
		goto out;
	}
	x.token = bearer(&x);
	if (!(r->flags & GW_PUBLIC) && !authenticate(&x))
		goto out;
	if (r->hooks != NULL && r->hooks->serve != NULL)
		r->hooks->serve(&x);
	else
		call(&x);
out:
	pl_log_ctx_set(NULL, NULL);
	pl_arena_fini(&x.arena);
}
