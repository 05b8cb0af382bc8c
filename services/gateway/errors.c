// Errors as DESIGN §9 says: {"error":{"code","message","details":[...]}}.
#include <stdlib.h>
#include <string.h>

#include "gateway.h"

int
gw_http_status(int code)
{
	return pl_status_http(code);
}

char *
gw_error_json(int code, const char *message,
              Parley__Rpc__V1__FieldViolation *const *details, size_t n_details,
              size_t *len)
{
	json_t *root, *err, *arr;
	char *text;

	err = json_object();
	json_object_set_new(err, "code", json_string(pl_status_name(code)));
	// jansson refuses invalid UTF-8: never lose the error over it.
	json_t *msg = json_string(message ? message : "");
	if (msg == NULL)
		msg = json_string("(message not valid UTF-8)");
	json_object_set_new(err, "message", msg);
	arr = json_array();
	for (size_t i = 0; details != NULL && i < n_details; i++) {
		json_t *d = json_object();
		json_t *f =
		        json_string(details[i]->field ? details[i]->field : "");
		json_t *s = json_string(
		        details[i]->description ? details[i]->description : "");
		json_object_set_new(d, "field", f ? f : json_string(""));
		json_object_set_new(d, "description", s ? s : json_string(""));
		json_array_append_new(arr, d);
	}
	json_object_set_new(err, "details", arr);
	root = json_object();
	json_object_set_new(root, "error", err);
	text = json_dumps(root, JSON_COMPACT);
	json_decref(root);
	if (len != NULL)
		*len = text ? strlen(text) : 0;
	return text;
}
