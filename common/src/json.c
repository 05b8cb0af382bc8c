// Protobuf <-> JSON driven by protobuf-c descriptors. Output walks a
// message's fields in tag order and builds a jansson object; input walks an
// object's keys, finds each field by its snake_case or lowerCamelCase name
// and builds the message in the caller's arena, naming the path of the first
// problem ("contacts[2].phone: expected a string").
#include <inttypes.h>
#include <math.h>
#include <float.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "pl/json.h"
#include "pl/status.h"
#include "pl/utf8.h"

// The message a field of which is inlined as the JSON value it holds.
#define JSON_MSG_NAME "parley.rpc.v1.Json"

// Longest enum value name we lower-case in place; longer names (none exist)
// are written as they are.
#define ENUM_NAME_MAX 128

// State of one pl_json_obj_to_pb call: where to allocate, where the error
// goes, and the path to the value being read.
typedef struct {
	pl_arena *arena;
	char *err;
	size_t errlen;
	size_t pathlen;
	char path[256];
} reader;

static const char *const type_names[] = {
	[PROTOBUF_C_TYPE_INT32] = "int32",
	[PROTOBUF_C_TYPE_SINT32] = "sint32",
	[PROTOBUF_C_TYPE_SFIXED32] = "sfixed32",
	[PROTOBUF_C_TYPE_INT64] = "int64",
	[PROTOBUF_C_TYPE_SINT64] = "sint64",
	[PROTOBUF_C_TYPE_SFIXED64] = "sfixed64",
	[PROTOBUF_C_TYPE_UINT32] = "uint32",
	[PROTOBUF_C_TYPE_FIXED32] = "fixed32",
	[PROTOBUF_C_TYPE_UINT64] = "uint64",
	[PROTOBUF_C_TYPE_FIXED64] = "fixed64",
	[PROTOBUF_C_TYPE_FLOAT] = "float",
	[PROTOBUF_C_TYPE_DOUBLE] = "double",
	[PROTOBUF_C_TYPE_BOOL] = "bool",
	[PROTOBUF_C_TYPE_ENUM] = "enum",
	[PROTOBUF_C_TYPE_STRING] = "string",
	[PROTOBUF_C_TYPE_BYTES] = "bytes",
	[PROTOBUF_C_TYPE_MESSAGE] = "message",
};

static char
ascii_lower(char c)
{
	return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

static char
ascii_upper(char c)
{
	return c >= 'a' && c <= 'z' ? (char)(c - 'a' + 'A') : c;
}

static bool
ascii_isupper(char c)
{
	return c >= 'A' && c <= 'Z';
}

static bool
ascii_islower_or_digit(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

static bool
ascii_caseeq(const char *a, const char *b)
{
	for (; *a != '\0' && *b != '\0'; a++, b++)
		if (ascii_lower(*a) != ascii_lower(*b))
			return false;
	return *a == *b;
}

static const void *
cmember(const ProtobufCMessage *m, unsigned off)
{
	return (const char *)m + off;
}

static void *
member(ProtobufCMessage *m, unsigned off)
{
	return (char *)m + off;
}

// Bytes one element of a repeated field of type t takes.
static size_t
elem_size(ProtobufCType t)
{
	switch (t) {
	case PROTOBUF_C_TYPE_INT32:
	case PROTOBUF_C_TYPE_SINT32:
	case PROTOBUF_C_TYPE_SFIXED32:
	case PROTOBUF_C_TYPE_UINT32:
	case PROTOBUF_C_TYPE_FIXED32:
		return sizeof(int32_t);
	case PROTOBUF_C_TYPE_INT64:
	case PROTOBUF_C_TYPE_SINT64:
	case PROTOBUF_C_TYPE_SFIXED64:
	case PROTOBUF_C_TYPE_UINT64:
	case PROTOBUF_C_TYPE_FIXED64:
		return sizeof(int64_t);
	case PROTOBUF_C_TYPE_FLOAT:
		return sizeof(float);
	case PROTOBUF_C_TYPE_DOUBLE:
		return sizeof(double);
	case PROTOBUF_C_TYPE_BOOL:
		return sizeof(protobuf_c_boolean);
	case PROTOBUF_C_TYPE_ENUM:
		return sizeof(int);
	case PROTOBUF_C_TYPE_STRING:
		return sizeof(char *);
	case PROTOBUF_C_TYPE_BYTES:
		return sizeof(ProtobufCBinaryData);
	case PROTOBUF_C_TYPE_MESSAGE:
		return sizeof(ProtobufCMessage *);
	}
	return 0;
}

// The `text` field when d is parley.rpc.v1.Json, else NULL.
static const ProtobufCFieldDescriptor *
json_text_field(const ProtobufCMessageDescriptor *d)
{
	const ProtobufCFieldDescriptor *f;

	if (strcmp(d->name, JSON_MSG_NAME) != 0)
		return NULL;
	f = protobuf_c_message_descriptor_get_field_by_name(d, "text");
	if (f == NULL || f->type != PROTOBUF_C_TYPE_STRING ||
	    f->label == PROTOBUF_C_LABEL_REPEATED ||
	    (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) != 0)
		return NULL;
	return f;
}

static bool
is_json_field(const ProtobufCFieldDescriptor *f)
{
	return f->type == PROTOBUF_C_TYPE_MESSAGE &&
	       json_text_field(f->descriptor) != NULL;
}

// If value name starts with the enum's name in UPPER_SNAKE and "_" (and
// something follows), the length of that prefix; else 0. "HTTPMode" gives
// "HTTP_MODE_", "ServingStatus" "SERVING_STATUS_".
static size_t
enum_prefix_len(const ProtobufCEnumDescriptor *ed, const char *name)
{
	const char *s = ed->short_name;
	size_t j = 0;

	for (size_t i = 0; s[i] != '\0'; i++) {
		if (i > 0 && ascii_isupper(s[i]) &&
		    (ascii_islower_or_digit(s[i - 1]) ||
		     (ascii_isupper(s[i - 1]) &&
		      ascii_islower_or_digit(s[i + 1])))) {
			if (name[j] != '_')
				return 0;
			j++;
		}
		if (name[j] != ascii_upper(s[i]))
			return 0;
		j++;
	}
	if (name[j] != '_' || name[j + 1] == '\0')
		return 0;
	return j + 1;
}

// The JSON name of an enum value: lower case, without the enum's prefix.
static const char *
enum_json_name(const ProtobufCEnumDescriptor *ed, const char *name, char *buf)
{
	size_t skip = enum_prefix_len(ed, name);
	size_t n = strlen(name + skip);

	if (n >= ENUM_NAME_MAX)
		return name;
	for (size_t i = 0; i < n; i++)
		buf[i] = ascii_lower(name[skip + i]);
	buf[n] = '\0';
	return buf;
}

// ---- protobuf -> JSON ----

static json_t *msg_to_json(const ProtobufCMessage *m, int depth);

static json_t *
real_to_json(double v)
{
	if (isnan(v))
		return json_string("NaN");
	if (isinf(v))
		return json_string(v > 0 ? "Infinity" : "-Infinity");
	return json_real(v);
}

static json_t *
enum_to_json(const ProtobufCEnumDescriptor *ed, int v)
{
	const ProtobufCEnumValue *ev;
	char buf[ENUM_NAME_MAX];

	// A number this build does not know (a newer peer) stays a number.
	ev = protobuf_c_enum_descriptor_get_value(ed, v);
	if (ev == NULL)
		return json_integer(v);
	return json_string(enum_json_name(ed, ev->name, buf));
}

static json_t *
bytes_to_json(const ProtobufCBinaryData *b)
{
	const int variant = sodium_base64_VARIANT_ORIGINAL;
	size_t n;
	char *buf;
	json_t *v;

	if (b->len == 0 || b->data == NULL)
		return json_string("");
	if (b->len > (SIZE_MAX - 8) / 4 * 3)
		return NULL;
	n = sodium_base64_ENCODED_LEN(b->len, variant);
	if ((buf = malloc(n)) == NULL)
		return NULL;
	sodium_bin2base64(buf, n, b->data, b->len, variant);
	v = json_string(buf);
	free(buf);
	return v;
}

// The value the text of a parley.rpc.v1.Json holds; null when there is no
// text or it is not JSON.
static json_t *
inline_json_text(const char *text)
{
	json_t *v = NULL;

	if (text != NULL)
		v = json_loads(text, JSON_DECODE_ANY, NULL);
	return v != NULL ? v : json_null();
}

// The text of Json message sub; NULL when sub is.
static const char *
json_text(const ProtobufCMessage *sub)
{
	if (sub == NULL)
		return NULL;
	return *(char *const *)cmember(
	        sub, json_text_field(sub->descriptor)->offset);
}

static json_t *
inline_json(const ProtobufCMessage *sub)
{
	return inline_json_text(json_text(sub));
}

// One value of field f stored at p; depth is the value's own nesting level
// should it be an object.
static json_t *
value_to_json(const ProtobufCFieldDescriptor *f, const void *p, int depth)
{
	uint64_t u;
	char buf[24];
	const char *s;
	const ProtobufCMessage *sub;

	switch (f->type) {
	case PROTOBUF_C_TYPE_INT32:
	case PROTOBUF_C_TYPE_SINT32:
	case PROTOBUF_C_TYPE_SFIXED32:
		return json_integer(*(const int32_t *)p);
	case PROTOBUF_C_TYPE_UINT32:
	case PROTOBUF_C_TYPE_FIXED32:
		return json_integer(*(const uint32_t *)p);
	case PROTOBUF_C_TYPE_INT64:
	case PROTOBUF_C_TYPE_SINT64:
	case PROTOBUF_C_TYPE_SFIXED64:
		return json_integer(*(const int64_t *)p);
	case PROTOBUF_C_TYPE_UINT64:
	case PROTOBUF_C_TYPE_FIXED64:
		// jansson's integers are signed 64-bit: the top half goes out
		// as a string of digits, which input accepts.
		u = *(const uint64_t *)p;
		if (u <= INT64_MAX)
			return json_integer((json_int_t)u);
		snprintf(buf, sizeof(buf), "%" PRIu64, u);
		return json_string(buf);
	case PROTOBUF_C_TYPE_FLOAT:
		return real_to_json(*(const float *)p);
	case PROTOBUF_C_TYPE_DOUBLE:
		return real_to_json(*(const double *)p);
	case PROTOBUF_C_TYPE_BOOL:
		return json_boolean(*(const protobuf_c_boolean *)p);
	case PROTOBUF_C_TYPE_ENUM:
		return enum_to_json(f->descriptor, *(const int *)p);
	case PROTOBUF_C_TYPE_STRING:
		s = *(char *const *)p;
		return json_string(s != NULL ? s : "");
	case PROTOBUF_C_TYPE_BYTES:
		return bytes_to_json(p);
	case PROTOBUF_C_TYPE_MESSAGE:
		sub = *(ProtobufCMessage *const *)p;
		if (is_json_field(f))
			return inline_json(sub);
		if (sub == NULL)
			return depth > PL_JSON_MAX_DEPTH ? NULL : json_object();
		return msg_to_json(sub, depth);
	}
	return NULL;
}

// Whether the value of type t at p differs from proto3's zero value (a
// message: always).
static bool
nonzero(ProtobufCType t, const void *p)
{
	switch (t) {
	case PROTOBUF_C_TYPE_INT32:
	case PROTOBUF_C_TYPE_SINT32:
	case PROTOBUF_C_TYPE_SFIXED32:
	case PROTOBUF_C_TYPE_UINT32:
	case PROTOBUF_C_TYPE_FIXED32:
		return *(const uint32_t *)p != 0;
	case PROTOBUF_C_TYPE_INT64:
	case PROTOBUF_C_TYPE_SINT64:
	case PROTOBUF_C_TYPE_SFIXED64:
	case PROTOBUF_C_TYPE_UINT64:
	case PROTOBUF_C_TYPE_FIXED64:
		return *(const uint64_t *)p != 0;
	case PROTOBUF_C_TYPE_FLOAT:
		return *(const float *)p != 0;
	case PROTOBUF_C_TYPE_DOUBLE:
		return *(const double *)p != 0;
	case PROTOBUF_C_TYPE_BOOL:
		return *(const protobuf_c_boolean *)p != 0;
	case PROTOBUF_C_TYPE_ENUM:
		return *(const int *)p != 0;
	case PROTOBUF_C_TYPE_STRING:
		return **(char *const *)p != '\0';
	case PROTOBUF_C_TYPE_BYTES:
		return ((const ProtobufCBinaryData *)p)->len > 0;
	case PROTOBUF_C_TYPE_MESSAGE:
		return true;
	}
	return false;
}

// Whether field f of m is sent: set, and for proto3 implicit presence
// different from its zero value.
static bool
is_present(const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f)
{
	const void *p = cmember(m, f->offset);
	const void *q = cmember(m, f->quantifier_offset);

	// A NULL pointer is never a value, whatever the label says.
	if ((f->type == PROTOBUF_C_TYPE_STRING ||
	     f->type == PROTOBUF_C_TYPE_MESSAGE) &&
	    f->label != PROTOBUF_C_LABEL_REPEATED && *(void *const *)p == NULL)
		return false;
	if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) != 0)
		return *(const uint32_t *)q == f->id;

	switch (f->label) {
	case PROTOBUF_C_LABEL_REQUIRED:
		return true;
	case PROTOBUF_C_LABEL_REPEATED:
		return *(const size_t *)q > 0;
	case PROTOBUF_C_LABEL_OPTIONAL:
		if (f->type == PROTOBUF_C_TYPE_MESSAGE)
			return true;
		if (f->type == PROTOBUF_C_TYPE_STRING)
			return *(char *const *)p != f->default_value;
		return *(const protobuf_c_boolean *)q;
	case PROTOBUF_C_LABEL_NONE:
		break;
	}

	return nonzero(f->type, p);
}

static json_t *
repeated_to_json(const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f,
                 int depth)
{
	size_t n = *(const size_t *)cmember(m, f->quantifier_offset);
	const char *elems = *(char *const *)cmember(m, f->offset);
	size_t sz = elem_size(f->type);
	json_t *a, *v;

	if (depth > PL_JSON_MAX_DEPTH || elems == NULL)
		return NULL;
	if ((a = json_array()) == NULL)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		v = value_to_json(f, elems + i * sz, depth + 1);
		if (v == NULL || json_array_append_new(a, v) != 0) {
			json_decref(a);
			return NULL;
		}
	}
	return a;
}

// The object for m, which sits at nesting level depth (the root is 1).
static json_t *
msg_to_json(const ProtobufCMessage *m, int depth)
{
	const ProtobufCMessageDescriptor *d = m->descriptor;
	json_t *obj, *v;

	if (depth > PL_JSON_MAX_DEPTH || d == NULL)
		return NULL;
	if ((obj = json_object()) == NULL)
		return NULL;
	for (unsigned i = 0; i < d->n_fields; i++) {
		const ProtobufCFieldDescriptor *f = &d->fields[i];

		if (!is_present(m, f))
			continue;
		if (f->label == PROTOBUF_C_LABEL_REPEATED)
			v = repeated_to_json(m, f, depth + 1);
		else
			v = value_to_json(f, cmember(m, f->offset), depth + 1);
		if (v == NULL || json_object_set_new_nocheck(obj, f->name, v)) {
			json_decref(obj);
			return NULL;
		}
	}
	return obj;
}

json_t *
pl_json_from_pb(const ProtobufCMessage *m)
{
	if (m == NULL)
		return NULL;
	return msg_to_json(m, 1);
}

// ---- protobuf -> JSON text, without the tree ----
//
// pl_json_dump_pb writes the text straight into one buffer: the same bytes
// json_dumps(pl_json_from_pb(m), JSON_COMPACT) gives (a unit test holds the
// two to it), without an object, a string copy and a hash entry per field
// (building and dumping the tree was most of the gateway's CPU on a list
// of twenty conversations). Reals and the values of parley.rpc.v1.Json
// fields, rare, still go through jansson so that their text is exactly
// jansson's.

typedef struct wbuf {
	char *p;
	size_t len, cap;
	bool bad; // out of memory, or a value that cannot be written
} wbuf;

// Room for n more bytes and the final NUL; false (and the buffer marked
// bad) when there is none.
static bool
wb_room(wbuf *b, size_t n)
{
	size_t cap;
	char *q;

	if (b->bad)
		return false;
	if (b->cap - b->len > n)
		return true;
	// A page of twenty conversations is ~30 KB: start where a small
	// answer fits and double, so a large one costs few copies.
	cap = b->cap ? b->cap : 4096;
	while (cap - b->len <= n) {
		if (cap > SIZE_MAX / 2) {
			b->bad = true;
			return false;
		}
		cap *= 2;
	}
	if ((q = realloc(b->p, cap)) == NULL) {
		b->bad = true;
		return false;
	}
	b->p = q;
	b->cap = cap;
	return true;
}

// The common case (room left) inline; the buffer is NUL-terminated once,
// at the end.
static inline void
wb_put(wbuf *b, const char *s, size_t n)
{
	if (b->cap - b->len > n || wb_room(b, n)) {
		memcpy(b->p + b->len, s, n);
		b->len += n;
	}
}

static inline void
wb_putc(wbuf *b, char c)
{
	if (b->cap - b->len > 1 || wb_room(b, 1))
		b->p[b->len++] = c;
}

// A JSON string, escaped as jansson escapes; invalid UTF-8 fails the dump
// (jansson's json_string refuses it). Runs of bytes that need no escape are
// copied whole; only bytes >= 0x80 are checked one sequence at a time.
// Whether any of w's 8 bytes needs a look: a control character, '"',
// '\\' or a byte >= 0x80 (the bit tricks of "Bit Twiddling Hacks": a byte
// under n, a zero byte after an xor).
static inline bool
word_special(uint64_t w)
{
	const uint64_t ones = 0x0101010101010101ull,
	               high = 0x8080808080808080ull;
	uint64_t q = w ^ (ones * '"'), bs = w ^ (ones * '\\');

	return ((((w - ones * 0x20) & ~w) | ((q - ones) & ~q) |
	         ((bs - ones) & ~bs) | w) &
	        high) != 0;
}

static void
wb_string_n(wbuf *b, const char *str, size_t len)
{
	const unsigned char *s = (const unsigned char *)str, *run = s,
	                    *end = s + len;

	wb_putc(b, '"');
	while (s < end) {
		unsigned char c;
		const char *esc;
		char u[8];
		size_t n;

		// Eight plain bytes at a time, then one at a time.
		while (end - s >= 8) {
			uint64_t w;
			memcpy(&w, s, 8);
			if (word_special(w))
				break;
			s += 8;
		}
		if (s == end)
			break;
		c = *s;
		if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
			s++;
			continue;
		}
		if (c >= 0x80) {
			// A sequence cut by the end fails the check.
			n = (size_t)(end - s);
			if ((n = pl_utf8_seq((const char *)s, n < 4 ? n : 4)) ==
			    0) {
				b->bad = true;
				return;
			}
			s += n;
			continue;
		}
		wb_put(b, (const char *)run, (size_t)(s - run));
		switch (c) {
		case '\0':
			// A C string ends there; jansson's strings hold none.
			b->bad = true;
			return;
		case '"':
			esc = "\\\"";
			break;
		case '\\':
			esc = "\\\\";
			break;
		case '\b':
			esc = "\\b";
			break;
		case '\f':
			esc = "\\f";
			break;
		case '\n':
			esc = "\\n";
			break;
		case '\r':
			esc = "\\r";
			break;
		case '\t':
			esc = "\\t";
			break;
		default:
			snprintf(u, sizeof(u), "\\u%04X", (unsigned)c);
			esc = u;
		}
		wb_put(b, esc, strlen(esc));
		run = ++s;
	}
	wb_put(b, (const char *)run, (size_t)(s - run));
	wb_putc(b, '"');
}

static void
wb_string(wbuf *b, const char *s)
{
	wb_string_n(b, s, strlen(s));
}

static void
wb_int(wbuf *b, long long v)
{
	char buf[24], *e = buf + sizeof(buf), *p = e;
	unsigned long long u =
	        v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;

	do {
		*--p = (char)('0' + u % 10);
		u /= 10;
	} while (u != 0);
	if (v < 0)
		*--p = '-';
	wb_put(b, p, (size_t)(e - p));
}

// A jansson value written as jansson writes it (consumes v).
static void
wb_jansson(wbuf *b, json_t *v)
{
	char *t;

	if (v == NULL) {
		b->bad = true;
		return;
	}
	t = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
	json_decref(v);
	if (t == NULL) {
		b->bad = true;
		return;
	}
	wb_put(b, t, strlen(t));
	free(t);
}

// ---- the text of a parley.rpc.v1.Json field, copied compactly ----
//
// Most such texts are small objects PostgreSQL wrote (jsonb's text: ", "
// and ": " between items, no duplicate keys, no escapes), and parsing each
// into a jansson tree only to write it back was a tenth of the gateway's
// CPU on a list of conversations. json_min copies a text without its
// whitespace when the result is certainly what jansson would write; for
// anything jansson might write differently (an escape, a real number, an
// integer it cannot hold, a repeated key, deep nesting) or might refuse,
// it gives up and the caller takes jansson's way.

#define MIN_DEPTH 16 // deeper: jansson's way
#define MIN_KEYS  32 // an object with more keys: jansson's way

typedef struct mini {
	const unsigned char *s;
	wbuf *b;
} mini;

static void
min_ws(mini *m)
{
	while (*m->s == ' ' || *m->s == '\t' || *m->s == '\n' || *m->s == '\r')
		m->s++;
}

// A string with no escape and no control byte, valid UTF-8: jansson writes
// it back byte for byte. Its bytes without the quotes in *at, *n.
static bool
min_string(mini *m, const unsigned char **at, size_t *n)
{
	const unsigned char *p = m->s + 1;
	size_t k;

	for (;;) {
		if (*p == '"')
			break;
		if (*p < 0x20 || *p == '\\')
			return false; // NUL (the end) included
		if (*p < 0x80) {
			p++;
		} else if ((k = pl_utf8_seq((const char *)p, 4)) == 0) {
			return false;
		} else {
			p += k;
		}
	}
	*at = m->s + 1;
	*n = (size_t)(p - m->s - 1);
	wb_put(m->b, (const char *)m->s, *n + 2);
	m->s = p + 1;
	return true;
}

// An integer as jansson writes it back: no sign on zero, no leading zero,
// no fraction or exponent (a real), at most 18 digits (a json_int_t).
static bool
min_number(mini *m)
{
	const unsigned char *p = m->s;
	size_t digits = 0;

	if (*p == '-')
		p++;
	if (*p == '0') {
		if (p != m->s || (p[1] >= '0' && p[1] <= '9'))
			return false; // "-0", "01"
		digits = 1;
	} else {
		while (p[digits] >= '0' && p[digits] <= '9')
			digits++;
	}
	if (digits == 0 || digits > 18 || p[digits] == '.' ||
	    p[digits] == 'e' || p[digits] == 'E')
		return false;
	p += digits;
	wb_put(m->b, (const char *)m->s, (size_t)(p - m->s));
	m->s = p;
	return true;
}

static bool
min_word(mini *m, const char *w)
{
	size_t n = strlen(w);

	if (strncmp((const char *)m->s, w, n) != 0)
		return false;
	wb_put(m->b, w, n);
	m->s += n;
	return true;
}

static bool min_value(mini *m, int depth);

// An object's key n and its ':', after keys[0..n-1].
static bool
min_key(mini *m, const unsigned char **key, size_t *klen, int n)
{
	if (n == MIN_KEYS || *m->s != '"' || !min_string(m, &key[n], &klen[n]))
		return false;
	// jansson keeps one value per key: a repeated key would be written
	// once.
	for (int i = 0; i < n; i++)
		if (klen[i] == klen[n] && memcmp(key[i], key[n], klen[n]) == 0)
			return false;
	min_ws(m);
	if (*m->s != ':')
		return false;
	m->s++;
	wb_putc(m->b, ':');
	min_ws(m);
	return true;
}

// An object (at '{') or an array (at '['): members or elements, with the
// whitespace between them dropped.
static bool
min_container(mini *m, int depth)
{
	const unsigned char *key[MIN_KEYS];
	size_t klen[MIN_KEYS];
	bool object = *m->s == '{';
	unsigned char close = object ? '}' : ']';

	wb_putc(m->b, (char)*m->s++);
	min_ws(m);
	for (int n = 0; n > 0 || *m->s != close; n++) {
		if ((object && !min_key(m, key, klen, n)) ||
		    !min_value(m, depth + 1))
			return false;
		min_ws(m);
		if (*m->s == close)
			break;
		if (*m->s != ',')
			return false;
		m->s++;
		wb_putc(m->b, ',');
		min_ws(m);
	}
	m->s++;
	wb_putc(m->b, (char)close);
	return true;
}

static bool
min_value(mini *m, int depth)
{
	const unsigned char *at;
	size_t n;
	unsigned char c = *m->s;

	if (depth > MIN_DEPTH)
		return false;
	if (c == '{' || c == '[')
		return min_container(m, depth);
	if (c == '"')
		return min_string(m, &at, &n);
	if (c == '-' || (c >= '0' && c <= '9'))
		return min_number(m);
	// A word must end where the grammar says ("truex" is jansson's to
	// refuse): the caller checks what follows.
	return min_word(m, "true") || min_word(m, "false") ||
	       min_word(m, "null");
}

// Json text (NULL: none), compact, as jansson would write the value it
// holds.
static void
wb_json_text(wbuf *b, const char *text)
{
	size_t mark = b->len;
	mini m;

	if (text != NULL && !b->bad) {
		m.s = (const unsigned char *)text;
		m.b = b;
		min_ws(&m);
		if (min_value(&m, 1)) {
			min_ws(&m);
			if (*m.s == '\0' && !b->bad)
				return;
		}
		if (b->bad)
			return;
		b->len = mark; // jansson's way from the start
	}
	wb_jansson(b, inline_json_text(text));
}

// A member's key and ':', after a ',' unless it is the first. A field's
// name is a .proto identifier ([A-Za-z_][A-Za-z0-9_]*, protoc checks it):
// nothing in it to escape.
static void
wb_key(wbuf *b, bool *first, const char *name)
{
	if (!*first)
		wb_putc(b, ',');
	*first = false;
	wb_putc(b, '"');
	wb_put(b, name, strlen(name));
	wb_put(b, "\":", 2);
}

static void dump_msg(wbuf *b, const ProtobufCMessage *m, int depth);

static void
dump_value(wbuf *b, const ProtobufCFieldDescriptor *f, const void *p, int depth)
{
	const ProtobufCEnumValue *ev;
	const ProtobufCMessage *sub;
	char buf[ENUM_NAME_MAX];
	const char *s;
	uint64_t u;

	switch (f->type) {
	case PROTOBUF_C_TYPE_INT32:
	case PROTOBUF_C_TYPE_SINT32:
	case PROTOBUF_C_TYPE_SFIXED32:
		wb_int(b, *(const int32_t *)p);
		return;
	case PROTOBUF_C_TYPE_UINT32:
	case PROTOBUF_C_TYPE_FIXED32:
		wb_int(b, *(const uint32_t *)p);
		return;
	case PROTOBUF_C_TYPE_INT64:
	case PROTOBUF_C_TYPE_SINT64:
	case PROTOBUF_C_TYPE_SFIXED64:
		wb_int(b, (long long)*(const int64_t *)p);
		return;
	case PROTOBUF_C_TYPE_UINT64:
	case PROTOBUF_C_TYPE_FIXED64:
		u = *(const uint64_t *)p;
		if (u <= INT64_MAX) {
			wb_int(b, (long long)u);
		} else {
			snprintf(buf, sizeof(buf), "%" PRIu64, u);
			wb_string(b, buf);
		}
		return;
	case PROTOBUF_C_TYPE_FLOAT:
		wb_jansson(b, real_to_json(*(const float *)p));
		return;
	case PROTOBUF_C_TYPE_DOUBLE:
		wb_jansson(b, real_to_json(*(const double *)p));
		return;
	case PROTOBUF_C_TYPE_BOOL:
		s = *(const protobuf_c_boolean *)p ? "true" : "false";
		wb_put(b, s, strlen(s));
		return;
	case PROTOBUF_C_TYPE_ENUM:
		ev = protobuf_c_enum_descriptor_get_value(f->descriptor,
		                                          *(const int *)p);
		if (ev == NULL)
			wb_int(b, *(const int *)p);
		else
			wb_string(b,
			          enum_json_name(f->descriptor, ev->name, buf));
		return;
	case PROTOBUF_C_TYPE_STRING:
		s = *(char *const *)p;
		wb_string(b, s != NULL ? s : "");
		return;
	case PROTOBUF_C_TYPE_BYTES:
		wb_jansson(b, bytes_to_json(p));
		return;
	case PROTOBUF_C_TYPE_MESSAGE:
		sub = *(ProtobufCMessage *const *)p;
		if (is_json_field(f))
			wb_json_text(b, json_text(sub));
		else if (sub != NULL)
			dump_msg(b, sub, depth);
		else if (depth > PL_JSON_MAX_DEPTH)
			b->bad = true;
		else
			wb_put(b, "{}", 2);
		return;
	}
	b->bad = true;
}

static void
dump_msg(wbuf *b, const ProtobufCMessage *m, int depth)
{
	const ProtobufCMessageDescriptor *d = m->descriptor;
	bool first = true;

	if (depth > PL_JSON_MAX_DEPTH || d == NULL) {
		b->bad = true;
		return;
	}
	wb_putc(b, '{');
	for (unsigned i = 0; i < d->n_fields && !b->bad; i++) {
		const ProtobufCFieldDescriptor *f = &d->fields[i];

		if (!is_present(m, f))
			continue;
		wb_key(b, &first, f->name);
		if (f->label == PROTOBUF_C_LABEL_REPEATED) {
			size_t n = *(const size_t *)cmember(
			        m, f->quantifier_offset);
			const char *elems =
			        *(char *const *)cmember(m, f->offset);
			size_t sz = elem_size(f->type);

			if (depth + 1 > PL_JSON_MAX_DEPTH || elems == NULL) {
				b->bad = true;
				return;
			}
			wb_putc(b, '[');
			for (size_t k = 0; k < n && !b->bad; k++) {
				if (k > 0)
					wb_putc(b, ',');
				dump_value(b, f, elems + k * sz, depth + 2);
			}
			wb_putc(b, ']');
		} else {
			dump_value(b, f, cmember(m, f->offset), depth + 1);
		}
	}
	wb_putc(b, '}');
}

char *
pl_json_dump_pb(const ProtobufCMessage *m, size_t *len)
{
	wbuf b = { 0 };

	if (m == NULL)
		return NULL;
	dump_msg(&b, m, 1);
	if (b.bad || b.p == NULL) {
		free(b.p);
		return NULL;
	}
	b.p[b.len] = '\0'; // every put leaves room for it
	if (len != NULL)
		*len = b.len;
	return b.p;
}

// ---- protobuf wire form -> JSON text ----
//
// pl_json_dump_wire writes the same text as pl_json_dump_pb would for the
// message the bytes unpack to, reading the wire form as it goes: no
// unpacked copy (an allocation per string and per message, which was about
// a sixth of the gateway's CPU on a page of twenty conversations). It takes
// only the form protobuf-c's pack writes: fields in descriptor order, each
// once (a repeated field's elements together), one member of a oneof. For
// anything else (a repeated singular field, which unpack would merge or
// override; a group; a bad length; a NUL in a string, which unpack's C
// string would cut; a required field; nesting past the limit; text that
// cannot be written) it gives up, and the caller unpacks and dumps: the
// same answer, the slow way.

typedef struct wire {
	const uint8_t *p, *end;
} wire;

// A varint of at most max bytes (10 for a value, 5 for a tag or a length:
// unpack refuses longer ones).
static bool
wire_varint_max(wire *w, int max, uint64_t *v)
{
	uint64_t x = 0;

	for (int i = 0; i < max && w->p < w->end; i++) {
		uint8_t c = *w->p++;
		// The tenth byte holds bit 63 only.
		if (i == 9 && c > 1)
			return false;
		x |= (uint64_t)(c & 0x7f) << (7 * i);
		if (c < 0x80) {
			*v = x;
			return true;
		}
	}
	return false;
}

static bool
wire_varint(wire *w, uint64_t *v)
{
	return wire_varint_max(w, 10, v);
}

static bool
wire_fixed(wire *w, size_t n, uint64_t *v)
{
	uint64_t x = 0;

	if ((size_t)(w->end - w->p) < n)
		return false;
	for (size_t i = 0; i < n; i++)
		x |= (uint64_t)w->p[i] << (8 * i);
	w->p += n;
	*v = x;
	return true;
}

// A length-delimited value: its bytes in *v.
static bool
wire_bytes(wire *w, wire *v)
{
	uint64_t n;

	if (!wire_varint_max(w, 5, &n) || n > (uint64_t)(w->end - w->p))
		return false;
	v->p = w->p;
	v->end = w->p + n;
	w->p += n;
	return true;
}

// Steps over a value of wire type wt (an unknown field).
static bool
wire_skip(wire *w, unsigned wt)
{
	uint64_t x;
	wire v;

	switch (wt) {
	case 0:
		return wire_varint(w, &x);
	case 1:
		return wire_fixed(w, 8, &x);
	case 2:
		return wire_bytes(w, &v);
	case 5:
		return wire_fixed(w, 4, &x);
	}
	return false; // groups (3, 4) and the reserved types
}

// The wire type of a value of type t.
static unsigned
wire_type(ProtobufCType t)
{
	switch (t) {
	case PROTOBUF_C_TYPE_FIXED64:
	case PROTOBUF_C_TYPE_SFIXED64:
	case PROTOBUF_C_TYPE_DOUBLE:
		return 1;
	case PROTOBUF_C_TYPE_FIXED32:
	case PROTOBUF_C_TYPE_SFIXED32:
	case PROTOBUF_C_TYPE_FLOAT:
		return 5;
	case PROTOBUF_C_TYPE_STRING:
	case PROTOBUF_C_TYPE_BYTES:
	case PROTOBUF_C_TYPE_MESSAGE:
		return 2;
	default:
		return 0;
	}
}

// One scalar of field f (not a string, bytes or message) read into its C
// form, as unpack would store it.
typedef union scalar {
	int32_t i32;
	uint32_t u32;
	int64_t i64;
	uint64_t u64;
	float f;
	double d;
	protobuf_c_boolean b;
	int e;
} scalar;

static bool
wire_scalar(wire *w, ProtobufCType t, scalar *v)
{
	uint64_t x;
	uint32_t u;

	if (!(wire_type(t) == 0   ? wire_varint(w, &x)
	      : wire_type(t) == 1 ? wire_fixed(w, 8, &x)
	                          : wire_fixed(w, 4, &x)))
		return false;
	memset(v, 0, sizeof(*v));
	switch (t) {
	case PROTOBUF_C_TYPE_INT32:
	case PROTOBUF_C_TYPE_UINT32:
	case PROTOBUF_C_TYPE_FIXED32:
	case PROTOBUF_C_TYPE_SFIXED32:
		v->u32 = (uint32_t)x;
		break;
	case PROTOBUF_C_TYPE_SINT32:
		u = (uint32_t)x;
		v->i32 = (int32_t)((u >> 1) ^ (0u - (u & 1)));
		break;
	case PROTOBUF_C_TYPE_SINT64:
		v->i64 = (int64_t)((x >> 1) ^ (0ull - (x & 1)));
		break;
	case PROTOBUF_C_TYPE_FLOAT:
		u = (uint32_t)x;
		memcpy(&v->f, &u, sizeof(u));
		break;
	case PROTOBUF_C_TYPE_DOUBLE:
		memcpy(&v->d, &x, sizeof(x));
		break;
	case PROTOBUF_C_TYPE_BOOL:
		v->b = x != 0;
		break;
	case PROTOBUF_C_TYPE_ENUM:
		v->e = (int)(int32_t)x;
		break;
	default: // the 64-bit integers
		v->u64 = x;
	}
	return true;
}

static bool dump_wire_msg(wbuf *b, const ProtobufCMessageDescriptor *d, wire w,
                          int depth);

// The text field of a parley.rpc.v1.Json in wire form, copied into buf
// (NUL-terminated) or NULL when it has none; false for any other form.
static bool
wire_json_text(const ProtobufCFieldDescriptor *f, wire w, char **text)
{
	const ProtobufCFieldDescriptor *tf = json_text_field(f->descriptor);
	wire v = { NULL, NULL };
	uint64_t tag;
	bool seen = false;

	while (w.p < w.end) {
		if (!wire_varint_max(&w, 5, &tag) || (tag >> 3) == 0)
			return false;
		if ((tag >> 3) != tf->id) {
			if (!wire_skip(&w, (unsigned)(tag & 7)))
				return false;
			continue;
		}
		if ((tag & 7) != 2 || seen || !wire_bytes(&w, &v))
			return false;
		seen = true;
	}
	*text = NULL;
	if (!seen)
		return true; // "" after unpack: written as null, as then
	if (memchr(v.p, 0, (size_t)(v.end - v.p)) != NULL ||
	    (*text = malloc((size_t)(v.end - v.p) + 1)) == NULL)
		return false;
	memcpy(*text, v.p, (size_t)(v.end - v.p));
	(*text)[v.end - v.p] = '\0';
	return true;
}

// One value of field f at w (its wire type checked); depth as dump_value.
static bool
dump_wire_value(wbuf *b, const ProtobufCFieldDescriptor *f, wire *w, int depth)
{
	wire v;
	scalar x;

	switch (f->type) {
	case PROTOBUF_C_TYPE_STRING:
		// A NUL fails the string (see wb_string_n).
		if (!wire_bytes(w, &v))
			return false;
		wb_string_n(b, (const char *)v.p, (size_t)(v.end - v.p));
		return !b->bad;
	case PROTOBUF_C_TYPE_BYTES: {
		ProtobufCBinaryData bd;
		if (!wire_bytes(w, &v))
			return false;
		bd.len = (size_t)(v.end - v.p);
		bd.data = (uint8_t *)(uintptr_t)v.p;
		dump_value(b, f, &bd, depth);
		return !b->bad;
	}
	case PROTOBUF_C_TYPE_MESSAGE:
		if (!wire_bytes(w, &v))
			return false;
		if (is_json_field(f)) {
			char *text = NULL;
			if (!wire_json_text(f, v, &text))
				return false;
			// "" when the Json had no text: as unpack leaves it.
			wb_json_text(b, text != NULL ? text : "");
			free(text);
			return !b->bad;
		}
		return dump_wire_msg(b, f->descriptor, v, depth);
	default:
		if (!wire_scalar(w, f->type, &x))
			return false;
		dump_value(b, f, &x, depth);
		return !b->bad;
	}
}

// Field number id of d: pack writes fields in descriptor order, so the
// ones after the last are looked at before the binary search.
static const ProtobufCFieldDescriptor *
next_field(const ProtobufCMessageDescriptor *d, long last, uint32_t id)
{
	unsigned k = last < 0 ? 0 : (unsigned)last;

	for (unsigned stop = k + 4; k < d->n_fields && k < stop; k++)
		if (d->fields[k].id == id)
			return &d->fields[k];
	return protobuf_c_message_descriptor_get_field(d, id);
}

// Whether a field with the same oneof as f came before it.
static bool
oneof_taken(const ProtobufCMessageDescriptor *d, const uint8_t *seen,
            const ProtobufCFieldDescriptor *f)
{
	for (unsigned i = 0; i < d->n_fields; i++)
		if (seen[i] && &d->fields[i] != f &&
		    (d->fields[i].flags & PROTOBUF_C_FIELD_FLAG_ONEOF) != 0 &&
		    d->fields[i].quantifier_offset == f->quantifier_offset)
			return true;
	return false;
}

static bool
dump_wire_msg(wbuf *b, const ProtobufCMessageDescriptor *d, wire w, int depth)
{
	const ProtobufCFieldDescriptor *f, *open = NULL;
	uint8_t seen_small[64], *seen = seen_small;
	bool first = true, ok = false;
	long last = -1;
	uint64_t tag;

	if (depth > PL_JSON_MAX_DEPTH || d == NULL)
		return false;
	// Unpack fails on a missing required field: proto2's, not ours.
	for (unsigned i = 0; i < d->n_fields; i++)
		if (d->fields[i].label == PROTOBUF_C_LABEL_REQUIRED)
			return false;
	if (d->n_fields > sizeof(seen_small) &&
	    (seen = calloc(d->n_fields, 1)) == NULL)
		return false;
	if (d->n_fields <= sizeof(seen_small))
		memset(seen, 0, d->n_fields);
	wb_putc(b, '{');
	while (w.p < w.end && !b->bad) {
		unsigned wt;
		long idx;

		if (!wire_varint_max(&w, 5, &tag) || (tag >> 3) == 0)
			goto out;
		wt = (unsigned)(tag & 7);
		f = next_field(d, last, (uint32_t)(tag >> 3));
		if (f == NULL) {
			// Unknown: unpack keeps it aside, the dump leaves it.
			if (!wire_skip(&w, wt))
				goto out;
			continue;
		}
		idx = (long)(f - d->fields);
		if (f != open && open != NULL) {
			wb_putc(b, ']');
			open = NULL;
		}
		if (idx < last ||
		    (idx == last && f->label != PROTOBUF_C_LABEL_REPEATED) ||
		    ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) != 0 &&
		     oneof_taken(d, seen, f)))
			goto out;
		last = idx;
		seen[idx] = 1;
		if (f->label == PROTOBUF_C_LABEL_REPEATED) {
			// Packed: one run of scalars; else one element a tag.
			bool packed = wt == 2 && wire_type(f->type) != 2;
			wire run;
			if (!packed && wt != wire_type(f->type))
				goto out;
			if (packed) {
				if (!wire_bytes(&w, &run) || run.p == run.end)
					goto out;
			} else {
				run = w;
			}
			if (open == f) {
				wb_putc(b, ',');
			} else {
				wb_key(b, &first, f->name);
				wb_putc(b, '[');
				open = f;
			}
			if (depth + 1 > PL_JSON_MAX_DEPTH)
				goto out;
			if (!packed) {
				if (!dump_wire_value(b, f, &w, depth + 2))
					goto out;
				continue;
			}
			for (bool one = true; run.p < run.end; one = false) {
				if (!one)
					wb_putc(b, ',');
				if (!dump_wire_value(b, f, &run, depth + 2))
					goto out;
			}
			continue;
		}
		if (wt != wire_type(f->type))
			goto out;
		if (f->label == PROTOBUF_C_LABEL_NONE &&
		    (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) == 0 &&
		    f->type != PROTOBUF_C_TYPE_MESSAGE) {
			// proto3's zero values are left out: look first.
			wire peek = w, v;
			scalar x;
			if (wire_type(f->type) == 2) {
				if (!wire_bytes(&peek, &v))
					goto out;
				if (v.p == v.end) {
					w = peek;
					continue;
				}
			} else {
				if (!wire_scalar(&peek, f->type, &x))
					goto out;
				if (!nonzero(f->type, &x)) {
					w = peek;
					continue;
				}
			}
		}
		wb_key(b, &first, f->name);
		if (!dump_wire_value(b, f, &w, depth + 1))
			goto out;
	}
	if (open != NULL)
		wb_putc(b, ']');
	wb_putc(b, '}');
	ok = !b->bad && w.p == w.end;
out:
	if (seen != seen_small)
		free(seen);
	return ok;
}

char *
pl_json_dump_wire(const ProtobufCMessageDescriptor *d, const uint8_t *data,
                  size_t len, size_t *out_len)
{
	wbuf b = { 0 };
	wire w = { data, data + len };

	if (d == NULL || (data == NULL && len > 0))
		return NULL;
	if (!dump_wire_msg(&b, d, w, 1) || b.p == NULL) {
		free(b.p);
		return NULL;
	}
	b.p[b.len] = '\0'; // every put leaves room for it
	if (out_len != NULL)
		*out_len = b.len;
	return b.p;
}

// ---- JSON -> protobuf ----

static int __attribute__((format(printf, 3, 4)))
fail(reader *r, int status, const char *fmt, ...)
{
	va_list ap;
	int n = 0;

	if (r->err == NULL || r->errlen == 0)
		return status;
	if (r->pathlen > 0)
		n = snprintf(r->err, r->errlen, "%s: ", r->path);
	if (n < 0 || (size_t)n >= r->errlen)
		return status;
	va_start(ap, fmt);
	vsnprintf(r->err + n, r->errlen - (size_t)n, fmt, ap);
	va_end(ap);
	return status;
}

static int
too_large(reader *r)
{
	return fail(r, PL_RESOURCE_EXHAUSTED,
	            "could not build the message: request too large");
}

static void *
alloc(reader *r, size_t n)
{
	return pl_arena_alloc(r->arena, n > 0 ? n : 1);
}

// Appends a path element, "name" or "[i]"; returns the length to go back
// to. A path too long for the buffer is cut short.
static size_t
path_push(reader *r, const char *name, size_t index)
{
	size_t old = r->pathlen;
	size_t room = sizeof(r->path) - old;
	int n;

	if (name != NULL)
		n = snprintf(r->path + old, room, "%s%s", old > 0 ? "." : "",
		             name);
	else
		n = snprintf(r->path + old, room, "[%zu]", index);
	if (n < 0 || (size_t)n >= room)
		r->pathlen = sizeof(r->path) - 1;
	else
		r->pathlen = old + (size_t)n;
	return old;
}

static void
path_pop(reader *r, size_t old)
{
	r->pathlen = old;
	r->path[old] = '\0';
}

// Whether key is the lowerCamelCase form of snake_case name.
static bool
camel_eq(const char *name, const char *key)
{
	bool up = false;

	for (; *name != '\0'; name++) {
		if (*name == '_') {
			up = true;
			continue;
		}
		if (*key++ != (up ? ascii_upper(*name) : *name))
			return false;
		up = false;
	}
	return *key == '\0';
}

static const ProtobufCFieldDescriptor *
find_field(const ProtobufCMessageDescriptor *d, const char *key)
{
	const ProtobufCFieldDescriptor *f;

	f = protobuf_c_message_descriptor_get_field_by_name(d, key);
	if (f != NULL)
		return f;
	for (unsigned i = 0; i < d->n_fields; i++)
		if (camel_eq(d->fields[i].name, key))
			return &d->fields[i];
	return NULL;
}

// Nesting levels of containers in v, counting v itself; stops looking
// below limit levels (returns at most limit + 1).
static int
nesting(json_t *v, int limit)
{
	int max = 0, n;
	size_t i;
	const char *key;
	json_t *child;

	if (!json_is_object(v) && !json_is_array(v))
		return 0;
	if (limit <= 0)
		return 1;
	if (json_is_array(v)) {
		json_array_foreach(v, i, child)
		{
			if ((n = nesting(child, limit - 1)) > max)
				max = n;
			if (max >= limit)
				break;
		}
	} else {
		json_object_foreach(v, key, child)
		{
			if ((n = nesting(child, limit - 1)) > max)
				max = n;
			if (max >= limit)
				break;
		}
	}
	return max + 1;
}

static int
too_deep(reader *r)
{
	return fail(r, PL_INVALID_ARGUMENT, "nesting deeper than %d levels",
	            PL_JSON_MAX_DEPTH);
}

// Reads an integer from a JSON integer, an integral real or a string of
// decimal digits, as a sign and a magnitude.
static int
get_integer(reader *r, json_t *v, const char *type, bool *neg, uint64_t *mag)
{
	if (json_is_integer(v)) {
		json_int_t i = json_integer_value(v);

		*neg = i < 0;
		*mag = i < 0 ? (uint64_t)0 - (uint64_t)i : (uint64_t)i;
		return PL_OK;
	}
	if (json_is_real(v)) {
		double x = json_real_value(v);

		if (!isfinite(x) || x != floor(x))
			return fail(r, PL_INVALID_ARGUMENT,
			            "expected an integer");
		if (fabs(x) >= 18446744073709551616.0)
			goto range;
		*neg = x < 0;
		*mag = (uint64_t)fabs(x);
		return PL_OK;
	}
	if (json_is_string(v)) {
		const char *s = json_string_value(v);
		size_t len = json_string_length(v), i = 0;
		uint64_t m = 0;

		*neg = len > 0 && s[0] == '-';
		i = *neg ? 1 : 0;
		if (i == len)
			return fail(r, PL_INVALID_ARGUMENT,
			            "expected an integer");
		for (; i < len; i++) {
			unsigned dig = (unsigned char)s[i] - '0';

			if (dig > 9)
				return fail(r, PL_INVALID_ARGUMENT,
				            "expected an integer");
			if (m > (UINT64_MAX - dig) / 10)
				goto range;
			m = m * 10 + dig;
		}
		*mag = m;
		return PL_OK;
	}
	return fail(r, PL_INVALID_ARGUMENT, "expected an integer");
range:
	return fail(r, PL_INVALID_ARGUMENT, "value out of range for %s", type);
}

static int
get_signed(reader *r, json_t *v, const char *type, int64_t min, int64_t max,
           int64_t *out)
{
	bool neg;
	uint64_t mag, lim;
	int rc;

	if ((rc = get_integer(r, v, type, &neg, &mag)) != PL_OK)
		return rc;
	if (neg) {
		lim = (uint64_t)(-(min + 1)) + 1;
		if (mag > lim)
			goto range;
		*out = mag == lim ? min : -(int64_t)mag;
	} else {
		if (mag > (uint64_t)max)
			goto range;
		*out = (int64_t)mag;
	}
	return PL_OK;
range:
	return fail(r, PL_INVALID_ARGUMENT, "value out of range for %s", type);
}

static int
get_unsigned(reader *r, json_t *v, const char *type, uint64_t max,
             uint64_t *out)
{
	bool neg;
	uint64_t mag;
	int rc;

	if ((rc = get_integer(r, v, type, &neg, &mag)) != PL_OK)
		return rc;
	if ((neg && mag != 0) || mag > max)
		return fail(r, PL_INVALID_ARGUMENT, "value out of range for %s",
		            type);
	*out = mag;
	return PL_OK;
}

static int
get_double(reader *r, json_t *v, double *out)
{
	const char *s;

	if (json_is_number(v)) {
		*out = json_number_value(v);
		return PL_OK;
	}
	if (json_is_string(v)) {
		s = json_string_value(v);
		if (strcmp(s, "NaN") == 0) {
			*out = NAN;
			return PL_OK;
		}
		if (strcmp(s, "Infinity") == 0) {
			*out = INFINITY;
			return PL_OK;
		}
		if (strcmp(s, "-Infinity") == 0) {
			*out = -INFINITY;
			return PL_OK;
		}
	}
	return fail(r, PL_INVALID_ARGUMENT, "expected a number");
}

// The enum's JSON names, for an error message: "bot, human_agent".
static void
enum_names(const ProtobufCEnumDescriptor *ed, char *out, size_t size)
{
	char buf[ENUM_NAME_MAX];
	size_t len = 0;
	int n;

	out[0] = '\0';
	for (unsigned i = 0; i < ed->n_values && len < size; i++) {
		n = snprintf(out + len, size - len, "%s%s", i > 0 ? ", " : "",
		             enum_json_name(ed, ed->values[i].name, buf));
		if (n < 0)
			break;
		len += (size_t)n;
	}
}

static int
get_enum(reader *r, json_t *v, const ProtobufCEnumDescriptor *ed, int *out)
{
	const ProtobufCEnumValue *ev = NULL;
	char buf[ENUM_NAME_MAX], names[160];
	const char *s;

	if (json_is_integer(v)) {
		json_int_t i = json_integer_value(v);

		if (i >= INT32_MIN && i <= INT32_MAX)
			ev = protobuf_c_enum_descriptor_get_value(ed, (int)i);
		if (ev == NULL) {
			enum_names(ed, names, sizeof(names));
			return fail(r, PL_INVALID_ARGUMENT,
			            "unknown value %" JSON_INTEGER_FORMAT
			            " for enum %s (expected one of: %s)",
			            i, ed->short_name, names);
		}
		*out = ev->value;
		return PL_OK;
	}
	if (!json_is_string(v))
		return fail(r, PL_INVALID_ARGUMENT,
		            "expected an enum name or number");
	s = json_string_value(v);
	ev = protobuf_c_enum_descriptor_get_value_by_name(ed, s);
	for (unsigned i = 0; ev == NULL && i < ed->n_values; i++) {
		const char *name = ed->values[i].name;

		if (ascii_caseeq(s, enum_json_name(ed, name, buf)) ||
		    ascii_caseeq(s, name))
			ev = &ed->values[i];
	}
	if (ev == NULL) {
		enum_names(ed, names, sizeof(names));
		return fail(
		        r, PL_INVALID_ARGUMENT,
		        "unknown value \"%.64s\" for enum %s (expected one of: "
		        "%s)",
		        s, ed->short_name, names);
	}
	*out = ev->value;
	return PL_OK;
}

static int
get_string(reader *r, json_t *v, char **out)
{
	const char *s;
	size_t len;

	if (!json_is_string(v))
		return fail(r, PL_INVALID_ARGUMENT, "expected a string");
	s = json_string_value(v);
	len = json_string_length(v);
	// Protobuf-c strings end at the first NUL: refuse rather than cut.
	if (memchr(s, '\0', len) != NULL)
		return fail(r, PL_INVALID_ARGUMENT,
		            "string contains a NUL character");
	if ((*out = pl_arena_strndup(r->arena, s, len)) == NULL)
		return too_large(r);
	return PL_OK;
}

// Standard base64, padded or not; the URL-safe alphabet too.
static int
get_bytes(reader *r, json_t *v, ProtobufCBinaryData *out)
{
	const char *s;
	size_t len, max, n;
	int variant;
	unsigned char *buf;

	if (!json_is_string(v))
		return fail(r, PL_INVALID_ARGUMENT, "expected a base64 string");
	s = json_string_value(v);
	len = json_string_length(v);
	if (len == 0) {
		out->len = 0;
		out->data = NULL;
		return PL_OK;
	}
	if (memchr(s, '-', len) != NULL || memchr(s, '_', len) != NULL)
		variant = len % 4 == 0
		                  ? sodium_base64_VARIANT_URLSAFE
		                  : sodium_base64_VARIANT_URLSAFE_NO_PADDING;
	else
		variant = len % 4 == 0
		                  ? sodium_base64_VARIANT_ORIGINAL
		                  : sodium_base64_VARIANT_ORIGINAL_NO_PADDING;
	max = len / 4 * 3 + 3;
	if ((buf = alloc(r, max)) == NULL)
		return too_large(r);
	if (sodium_base642bin(buf, max, s, len, NULL, &n, NULL, variant) != 0)
		return fail(r, PL_INVALID_ARGUMENT, "invalid base64");
	out->len = n;
	out->data = buf;
	return PL_OK;
}

static int obj_to_msg(reader *r, json_t *obj,
                      const ProtobufCMessageDescriptor *d, int depth,
                      ProtobufCMessage **out);

// Any JSON value, written compactly into a new parley.rpc.v1.Json.
static int
get_json(reader *r, json_t *v, const ProtobufCMessageDescriptor *d, int depth,
         ProtobufCMessage **out)
{
	const ProtobufCFieldDescriptor *tf = json_text_field(d);
	int allowed = PL_JSON_MAX_DEPTH - (depth - 1);
	ProtobufCMessage *m;
	char *text, *copy;

	if (nesting(v, allowed) > allowed)
		return too_deep(r);
	text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
	if (text == NULL)
		return fail(r, PL_INTERNAL, "could not write the JSON value");
	copy = pl_arena_strdup(r->arena, text);
	free(text);
	if (copy == NULL || (m = alloc(r, d->sizeof_message)) == NULL)
		return too_large(r);
	protobuf_c_message_init(d, m);
	*(char **)member(m, tf->offset) = copy;
	*out = m;
	return PL_OK;
}

// Reads one value of field f into p; depth is the value's nesting level
// should it be a container.
static int
value_from_json(reader *r, const ProtobufCFieldDescriptor *f, json_t *v,
                void *p, int depth)
{
	const char *type = type_names[f->type];
	int64_t i = 0;
	uint64_t u = 0;
	double x;
	int rc;

	switch (f->type) {
	case PROTOBUF_C_TYPE_INT32:
	case PROTOBUF_C_TYPE_SINT32:
	case PROTOBUF_C_TYPE_SFIXED32:
		if ((rc = get_signed(r, v, type, INT32_MIN, INT32_MAX, &i)))
			return rc;
		*(int32_t *)p = (int32_t)i;
		return PL_OK;
	case PROTOBUF_C_TYPE_INT64:
	case PROTOBUF_C_TYPE_SINT64:
	case PROTOBUF_C_TYPE_SFIXED64:
		if ((rc = get_signed(r, v, type, INT64_MIN, INT64_MAX, &i)))
			return rc;
		*(int64_t *)p = i;
		return PL_OK;
	case PROTOBUF_C_TYPE_UINT32:
	case PROTOBUF_C_TYPE_FIXED32:
		if ((rc = get_unsigned(r, v, type, UINT32_MAX, &u)))
			return rc;
		*(uint32_t *)p = (uint32_t)u;
		return PL_OK;
	case PROTOBUF_C_TYPE_UINT64:
	case PROTOBUF_C_TYPE_FIXED64:
		if ((rc = get_unsigned(r, v, type, UINT64_MAX, &u)))
			return rc;
		*(uint64_t *)p = u;
		return PL_OK;
	case PROTOBUF_C_TYPE_FLOAT:
		if ((rc = get_double(r, v, &x)))
			return rc;
		if (isfinite(x) && fabs(x) > FLT_MAX)
			return fail(r, PL_INVALID_ARGUMENT,
			            "value out of range for float");
		*(float *)p = (float)x;
		return PL_OK;
	case PROTOBUF_C_TYPE_DOUBLE:
		return get_double(r, v, p);
	case PROTOBUF_C_TYPE_BOOL:
		if (!json_is_boolean(v))
			return fail(r, PL_INVALID_ARGUMENT,
			            "expected a boolean");
		*(protobuf_c_boolean *)p = json_is_true(v);
		return PL_OK;
	case PROTOBUF_C_TYPE_ENUM:
		return get_enum(r, v, f->descriptor, p);
	case PROTOBUF_C_TYPE_STRING:
		return get_string(r, v, p);
	case PROTOBUF_C_TYPE_BYTES:
		return get_bytes(r, v, p);
	case PROTOBUF_C_TYPE_MESSAGE:
		if (is_json_field(f))
			return get_json(r, v, f->descriptor, depth, p);
		if (!json_is_object(v))
			return fail(r, PL_INVALID_ARGUMENT,
			            "expected an object");
		return obj_to_msg(r, v, f->descriptor, depth, p);
	}
	return fail(r, PL_INTERNAL, "field of unknown type %d", (int)f->type);
}

static int
repeated_from_json(reader *r, ProtobufCMessage *m,
                   const ProtobufCFieldDescriptor *f, json_t *v, int depth)
{
	size_t n, sz = elem_size(f->type), old;
	char *elems = NULL;
	int rc;

	if (json_is_null(v))
		return PL_OK;
	if (!json_is_array(v))
		return fail(r, PL_INVALID_ARGUMENT, "expected an array");
	if (depth > PL_JSON_MAX_DEPTH)
		return too_deep(r);
	n = json_array_size(v);
	if (n > 0) {
		if (n > SIZE_MAX / sz || (elems = alloc(r, n * sz)) == NULL)
			return too_large(r);
		memset(elems, 0, n * sz);
	}
	for (size_t i = 0; i < n; i++) {
		old = path_push(r, NULL, i);
		rc = value_from_json(r, f, json_array_get(v, i), elems + i * sz,
		                     depth + 1);
		if (rc != PL_OK)
			return rc;
		path_pop(r, old);
	}
	*(size_t *)member(m, f->quantifier_offset) = n;
	*(void **)member(m, f->offset) = elems;
	return PL_OK;
}

static int
field_from_json(reader *r, ProtobufCMessage *m,
                const ProtobufCFieldDescriptor *f, json_t *v, int depth)
{
	uint32_t *which;
	int rc;

	if (f->label == PROTOBUF_C_LABEL_REPEATED)
		return repeated_from_json(r, m, f, v, depth);
	// null is the default value, except for an inlined JSON value.
	if (json_is_null(v) && !is_json_field(f))
		return PL_OK;
	if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) != 0) {
		which = member(m, f->quantifier_offset);
		if (*which != 0)
			return fail(r, PL_INVALID_ARGUMENT,
			            "another field of the same oneof is set");
		rc = value_from_json(r, f, v, member(m, f->offset), depth);
		if (rc == PL_OK)
			*which = f->id;
		return rc;
	}
	rc = value_from_json(r, f, v, member(m, f->offset), depth);
	if (rc == PL_OK && f->label == PROTOBUF_C_LABEL_OPTIONAL &&
	    f->type != PROTOBUF_C_TYPE_MESSAGE &&
	    f->type != PROTOBUF_C_TYPE_STRING)
		*(protobuf_c_boolean *)member(m, f->quantifier_offset) = 1;
	return rc;
}

// A new message of type d from obj, which sits at nesting level depth.
static int
obj_to_msg(reader *r, json_t *obj, const ProtobufCMessageDescriptor *d,
           int depth, ProtobufCMessage **out)
{
	ProtobufCMessage *m;
	unsigned char *seen = NULL;
	const ProtobufCFieldDescriptor *f;
	const char *key;
	size_t keylen, old;
	json_t *v;
	int rc;

	if (depth > PL_JSON_MAX_DEPTH)
		return too_deep(r);
	if ((m = alloc(r, d->sizeof_message)) == NULL)
		return too_large(r);
	protobuf_c_message_init(d, m);
	if (d->n_fields > 0) {
		if ((seen = alloc(r, d->n_fields)) == NULL)
			return too_large(r);
		memset(seen, 0, d->n_fields);
	}
	json_object_keylen_foreach(obj, key, keylen, v)
	{
		old = path_push(r, key, 0);
		f = strlen(key) == keylen ? find_field(d, key) : NULL;
		if (f == NULL)
			return fail(r, PL_INVALID_ARGUMENT, "unknown field");
		// Both spellings of one name in a single object.
		if (seen[f - d->fields])
			return fail(r, PL_INVALID_ARGUMENT,
			            "field \"%s\" given twice", f->name);
		seen[f - d->fields] = 1;
		if ((rc = field_from_json(r, m, f, v, depth + 1)) != PL_OK)
			return rc;
		path_pop(r, old);
	}
	for (unsigned i = 0; i < d->n_fields; i++) {
		f = &d->fields[i];
		if (f->label == PROTOBUF_C_LABEL_REQUIRED && !seen[i]) {
			old = path_push(r, f->name, 0);
			return fail(r, PL_INVALID_ARGUMENT,
			            "missing required field");
		}
	}
	*out = m;
	return PL_OK;
}

int
pl_json_obj_to_pb(json_t *obj, const ProtobufCMessageDescriptor *d,
                  pl_arena *arena, ProtobufCMessage **out, char *err,
                  size_t errlen)
{
	reader r = { .arena = arena, .err = err, .errlen = errlen };

	if (err != NULL && errlen > 0)
		err[0] = '\0';
	if (out != NULL)
		*out = NULL;
	if (d == NULL || arena == NULL || out == NULL)
		return fail(&r, PL_INTERNAL, "no message type or arena given");
	if (!json_is_object(obj))
		return fail(&r, PL_INVALID_ARGUMENT, "expected a JSON object");
	return obj_to_msg(&r, obj, d, 1, out);
}

int
pl_json_to_pb(const char *text, size_t len, const ProtobufCMessageDescriptor *d,
              pl_arena *arena, ProtobufCMessage **out, char *err, size_t errlen)
{
	json_error_t je;
	json_t *root;
	int rc;

	if (out != NULL)
		*out = NULL;
	root = json_loadb(text != NULL ? text : "", text != NULL ? len : 0,
	                  JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &je);
	if (root == NULL) {
		if (err != NULL && errlen > 0)
			snprintf(err, errlen,
			         "invalid JSON at line %d, column %d: %s",
			         je.line, je.column, je.text);
		return PL_INVALID_ARGUMENT;
	}
	rc = pl_json_obj_to_pb(root, d, arena, out, err, errlen);
	json_decref(root);
	return rc;
}
