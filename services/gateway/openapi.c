// The OpenAPI 3 document, generated from the route table and the protobuf
// descriptors: one operation per route, one schema per message.
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "gateway.h"

const char *
gw_enum_json_name(const ProtobufCEnumDescriptor *ed,
                  const ProtobufCEnumValue *v, char *buf, size_t size)
{
	size_t pre = 0, n, i;

	if (v->value == 0)
		return NULL;
	// The prefix is what every value shares up to an underscore
	// (CONVERSATION_OWNER_), UNSPECIFIED included.
	if (ed->n_values > 1) {
		const char *a = ed->values[0].name;
		pre = strlen(a);
		for (i = 1; i < ed->n_values; i++) {
			const char *b = ed->values[i].name;
			size_t k = 0;
			while (k < pre && a[k] == b[k])
				k++;
			pre = k;
		}
		while (pre > 0 && a[pre - 1] != '_')
			pre--;
	}
	n = strlen(v->name) - pre;
	if (n >= size)
		n = size - 1;
	for (i = 0; i < n; i++)
		buf[i] = (char)tolower((unsigned char)v->name[pre + i]);
	buf[n] = '\0';
	return buf;
}

static void add_schema(json_t *schemas, const ProtobufCMessageDescriptor *d);

static json_t *
ref(const ProtobufCMessageDescriptor *d)
{
	char buf[160];

	snprintf(buf, sizeof(buf), "#/components/schemas/%s", d->name);
	return json_pack("{s:s}", "$ref", buf);
}

static json_t *
field_schema(json_t *schemas, const ProtobufCFieldDescriptor *f)
{
	json_t *s;

	switch (f->type) {
	case PROTOBUF_C_TYPE_INT32:
	case PROTOBUF_C_TYPE_SINT32:
	case PROTOBUF_C_TYPE_SFIXED32:
		s = json_pack("{s:s,s:s}", "type", "integer", "format",
		              "int32");
		break;
	case PROTOBUF_C_TYPE_UINT32:
	case PROTOBUF_C_TYPE_FIXED32:
		s = json_pack("{s:s,s:s,s:i}", "type", "integer", "format",
		              "int32", "minimum", 0);
		break;
	case PROTOBUF_C_TYPE_INT64:
	case PROTOBUF_C_TYPE_SINT64:
	case PROTOBUF_C_TYPE_SFIXED64:
	case PROTOBUF_C_TYPE_UINT64:
	case PROTOBUF_C_TYPE_FIXED64:
		s = json_pack("{s:s,s:s}", "type", "integer", "format",
		              "int64");
		break;
	case PROTOBUF_C_TYPE_FLOAT:
	case PROTOBUF_C_TYPE_DOUBLE:
		s = json_pack("{s:s}", "type", "number");
		break;
	case PROTOBUF_C_TYPE_BOOL:
		s = json_pack("{s:s}", "type", "boolean");
		break;
	case PROTOBUF_C_TYPE_BYTES:
		s = json_pack("{s:s,s:s}", "type", "string", "format", "byte");
		break;
	case PROTOBUF_C_TYPE_ENUM: {
		const ProtobufCEnumDescriptor *ed = f->descriptor;
		json_t *vals = json_array();
		char buf[96];
		for (unsigned i = 0; i < ed->n_values; i++) {
			const char *n = gw_enum_json_name(ed, &ed->values[i],
			                                  buf, sizeof(buf));
			if (n != NULL)
				json_array_append_new(vals, json_string(n));
		}
		s = json_pack("{s:s,s:o}", "type", "string", "enum", vals);
		break;
	}
	case PROTOBUF_C_TYPE_MESSAGE: {
		const ProtobufCMessageDescriptor *md = f->descriptor;
		if (strcmp(md->name, "parley.rpc.v1.Json") == 0) {
			// Inlined JSON: any value.
			s = json_pack("{s:s}", "description",
			              "any JSON (usually an object)");
		} else {
			add_schema(schemas, md);
			s = ref(md);
		}
		break;
	}
	default:
		s = json_pack("{s:s}", "type", "string");
		break;
	}
	if (f->label == PROTOBUF_C_LABEL_REPEATED)
		s = json_pack("{s:s,s:o}", "type", "array", "items", s);
	return s;
}

static void
add_schema(json_t *schemas, const ProtobufCMessageDescriptor *d)
{
	json_t *props, *schema;

	if (json_object_get(schemas, d->name) != NULL)
		return;
	props = json_object();
	schema = json_pack("{s:s,s:o}", "type", "object", "properties", props);
	// Set before recursing, so self-references end.
	json_object_set_new(schemas, d->name, schema);
	for (unsigned i = 0; i < d->n_fields; i++)
		json_object_set_new(props, d->fields[i].name,
		                    field_schema(schemas, &d->fields[i]));
}

static json_t *
param(const char *name, const char *in, json_t *schema, bool required)
{
	return json_pack("{s:s,s:s,s:b,s:o}", "name", name, "in", in,
	                 "required", required, "schema", schema);
}

static void
query_params(json_t *schemas, json_t *params, const gw_route *r)
{
	const ProtobufCMessageDescriptor *d = r->in;

	for (unsigned i = 0; i < d->n_fields; i++) {
		const ProtobufCFieldDescriptor *f = &d->fields[i];
		char buf[128];
		bool bound = false;

		for (const char *p = r->pattern; (p = strchr(p, '{')); p++) {
			char name[32], field[64];
			size_t n = strcspn(p + 1, "}");
			snprintf(name, sizeof(name), "%.*s", (int)n, p + 1);
			if (strcmp(gw_route_field(r, name, field,
			                          sizeof(field)),
			           f->name) == 0)
				bound = true;
		}
		if (bound)
			continue;
		if (f->type != PROTOBUF_C_TYPE_MESSAGE) {
			if (f->type == PROTOBUF_C_TYPE_BYTES ||
			    (f->label == PROTOBUF_C_LABEL_REPEATED &&
			     f->type != PROTOBUF_C_TYPE_STRING))
				continue;
			json_array_append_new(
			        params, param(f->name, "query",
			                      field_schema(schemas, f), false));
			continue;
		}
		if (f->label == PROTOBUF_C_LABEL_REPEATED)
			continue;
		if (strcmp(((const ProtobufCMessageDescriptor *)f->descriptor)
		                   ->name,
		           "parley.rpc.v1.PageRequest") == 0) {
			json_array_append_new(
			        params,
			        param("page_size", "query",
			              json_pack("{s:s}", "type", "integer"),
			              false));
			json_array_append_new(
			        params,
			        param("page_token", "query",
			              json_pack("{s:s}", "type", "string"),
			              false));
			continue;
		}
		const ProtobufCMessageDescriptor *sd = f->descriptor;
		if (strcmp(sd->name, "parley.rpc.v1.Json") == 0)
			continue;
		for (unsigned k = 0; k < sd->n_fields; k++) {
			const ProtobufCFieldDescriptor *sf = &sd->fields[k];
			if (sf->type == PROTOBUF_C_TYPE_MESSAGE ||
			    sf->type == PROTOBUF_C_TYPE_BYTES)
				continue;
			snprintf(buf, sizeof(buf), "%s.%s", f->name, sf->name);
			json_array_append_new(params,
			                      param(buf, "query",
			                            field_schema(schemas, sf),
			                            false));
		}
	}
}

static json_t *
operation(json_t *schemas, const gw_route *r)
{
	json_t *op = json_object(), *params = json_array(), *resps;
	char status[8], id[96];

	snprintf(id, sizeof(id), "%s%s", r->rpc ? r->rpc : "Gateway",
	         r->svc == GW_LOCAL
	                 ? (r->pattern[1] == 'c' ? "ChatPage" : "OpenApi")
	                 : "");
	// Operation ids must be unique: the same RPC behind two routes gets
	// the method and the route's position.
	for (size_t i = 0; &gw_routes[i] != r; i++)
		if (gw_routes[i].rpc && r->rpc &&
		    strcmp(gw_routes[i].rpc, r->rpc) == 0) {
			snprintf(id + strlen(id), sizeof(id) - strlen(id),
			         "_%zu", (size_t)(r - gw_routes));
			break;
		}
	json_object_set_new(op, "operationId", json_string(id));
	json_object_set_new(op, "summary", json_string(r->summary));
	json_object_set_new(op, "tags",
	                    json_pack("[s]", r->svc == GW_LOCAL
	                                             ? "gateway"
	                                             : gw_svc_name(r->svc)));
	for (const char *p = r->pattern; (p = strchr(p, '{')); p++) {
		char name[32];
		size_t n = strcspn(p + 1, "}");
		snprintf(name, sizeof(name), "%.*s", (int)n, p + 1);
		json_array_append_new(
		        params,
		        param(name, "path",
		              json_pack("{s:s}", "type", "string"), true));
	}
	if (r->in != NULL && strcmp(r->method, "GET") == 0 &&
	    !(r->flags & GW_RAW))
		query_params(schemas, params, r);
	json_object_set_new(op, "parameters", params);
	if (r->in != NULL && strcmp(r->method, "GET") != 0 &&
	    strcmp(r->method, "DELETE") != 0) {
		json_t *content;
		if (r->flags & GW_RAW) {
			content = json_pack(
			        "{s:{s:{s:s,s:s}}}", "application/octet-stream",
			        "schema", "type", "string", "format", "binary");
		} else {
			add_schema(schemas, r->in);
			content = json_pack("{s:{s:o}}", "application/json",
			                    "schema", ref(r->in));
		}
		json_object_set_new(op, "requestBody",
		                    json_pack("{s:b,s:o}", "required", false,
		                              "content", content));
	}
	resps = json_object();
	snprintf(status, sizeof(status), "%d", r->status);
	if (r->out != NULL && r->hooks != &gw_hooks_wa_verify) {
		add_schema(schemas, r->out);
		json_object_set_new(resps, status,
		                    json_pack("{s:s,s:{s:{s:o}}}",
		                              "description", "OK", "content",
		                              "application/json", "schema",
		                              ref(r->out)));
	} else {
		const char *type = r->hooks == &gw_hooks_chat_page ? "text/html"
		                   : r->hooks == &gw_hooks_openapi
		                           ? "application/json"
		                           : "text/plain";
		json_object_set_new(
		        resps, status,
		        json_pack("{s:s,s:{s:{s:{s:s}}}}", "description", "OK",
		                  "content", type, "schema", "type", "string"));
	}
	json_object_set_new(resps, "default",
	                    json_pack("{s:s,s:{s:{s:{s:s}}}}", "description",
	                              "An error (DESIGN §9)", "content",
	                              "application/json", "schema", "$ref",
	                              "#/components/schemas/Error"));
	json_object_set_new(op, "responses", resps);
	if (r->flags & GW_PUBLIC)
		json_object_set_new(op, "security", json_array());
	return op;
}

json_t *
gw_openapi(const char *server_url)
{
	json_t *doc, *paths, *schemas;

	if (gw_routes_init(NULL, 0) != 0)
		return NULL;
	paths = json_object();
	schemas = json_object();
	json_object_set_new(
	        schemas, "Error",
	        json_pack("{s:s,s:{s:{s:s,s:{s:{s:s},s:{s:s},s:{s:s,s:{s:s,s:"
	                  "{s:{s:s},s:{s:s}}}}}}}}",
	                  "type", "object", "properties", "error", "type",
	                  "object", "properties", "code", "type", "string",
	                  "message", "type", "string", "details", "type",
	                  "array", "items", "type", "object", "properties",
	                  "field", "type", "string", "description", "type",
	                  "string"));
	for (size_t i = 0; i < gw_n_routes; i++) {
		const gw_route *r = &gw_routes[i];
		json_t *item = json_object_get(paths, r->pattern);
		char m[8];
		size_t k;

		if (item == NULL) {
			item = json_object();
			json_object_set_new(paths, r->pattern, item);
		}
		for (k = 0; r->method[k] && k < sizeof(m) - 1; k++)
			m[k] = (char)tolower((unsigned char)r->method[k]);
		m[k] = '\0';
		json_object_set_new(item, m, operation(schemas, r));
	}
	doc = json_pack("{s:s,s:{s:s,s:s,s:s},s:o,s:{s:o,s:{s:{s:s,s:s}}},"
	                "s:[{s:[]}]}",
	                "openapi", "3.0.3", "info", "title", "Parley REST API",
	                "version", "1", "description",
	                "Generated by the gateway from its route table and "
	                "the protobuf contracts.",
	                "paths", paths, "components", "schemas", schemas,
	                "securitySchemes", "bearer", "type", "http", "scheme",
	                "bearer", "security", "bearer");
	if (doc != NULL && server_url != NULL && server_url[0] != '\0')
		json_object_set_new(doc, "servers",
		                    json_pack("[{s:s}]", "url", server_url));
	return doc;
}
