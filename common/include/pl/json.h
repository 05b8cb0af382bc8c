// Protobuf <-> JSON, driven by protobuf-c descriptors (the gateway's REST
// API uses it for every call).
//
// Mapping: field names are the proto's snake_case names (lowerCamelCase is
// accepted on input); enums are the lower-case value name without the enum's
// prefix (ConversationOwner CONVERSATION_OWNER_BOT -> "bot"), the zero
// *_UNSPECIFIED value is omitted; int64/uint64 are JSON numbers (strings
// accepted on input); bytes are base64; a parley.rpc.v1.Json field is
// inlined as the JSON it holds; repeated -> arrays; proto3 default values are
// omitted on output (empty repeated fields too, as proto3 JSON does);
// uint64 values past 2^63-1 and NaN/Infinity are written as strings; unknown
// input fields are an error (INVALID_ARGUMENT naming the field).
#ifndef PL_JSON_H
#define PL_JSON_H

#include <stddef.h>

#include <jansson.h>
#include <protobuf-c/protobuf-c.h>

#include "pl/arena.h"

// Nesting deeper than this is refused.
#define PL_JSON_MAX_DEPTH 32

// New JSON object for m (caller json_decref()s it); NULL on failure.
json_t *pl_json_from_pb(const ProtobufCMessage *m);

// Compact JSON text for m (malloc'd, caller frees); NULL on failure.
char *pl_json_dump_pb(const ProtobufCMessage *m, size_t *len);

// The same text for the message of type d whose wire form is data[0..len),
// without unpacking it, when the bytes are in the form protobuf-c's pack
// writes (fields in descriptor order, each once). NULL when they are not,
// or for anything pl_json_dump_pb would fail on: the caller then unpacks
// and calls pl_json_dump_pb (which gives the answer, or the failure).
char *pl_json_dump_wire(const ProtobufCMessageDescriptor *d,
                        const uint8_t *data, size_t len, size_t *out_len);

// Parses text into a new message of type d allocated in arena. Returns
// PL_OK, or PL_INVALID_ARGUMENT with err naming the field and the problem
// ("contact.phone: expected a string"), PL_RESOURCE_EXHAUSTED past the
// arena's limit, PL_INTERNAL without an arena or output pointer.
int pl_json_to_pb(const char *text, size_t len,
                  const ProtobufCMessageDescriptor *d, pl_arena *arena,
                  ProtobufCMessage **out, char *err, size_t errlen);

// Same from a parsed object.
int pl_json_obj_to_pb(json_t *obj, const ProtobufCMessageDescriptor *d,
                      pl_arena *arena, ProtobufCMessage **out, char *err,
                      size_t errlen);

#endif
