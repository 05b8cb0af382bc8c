// Unit tests for the protobuf <-> JSON transcoder (common/src/json.c).
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "parley/rpc/v1/envelope.pb-c.h"
#include "parley/rpc/v1/health.pb-c.h"
#include "parley/rpc/v1/types.pb-c.h"
#include "parley/test/v1/jsontest.pb-c.h"
#include "pl/json.h"
#include "pl/status.h"

typedef Parley__Test__V1__JsonTest JsonTest;
typedef Parley__Test__V1__Contact Contact;
typedef Parley__Rpc__V1__Json Json;

#define JT_DESC (&parley__test__v1__json_test__descriptor)

static int
setup(void **state)
{
	pl_arena *a = malloc(sizeof(*a));

	if (a == NULL)
		return -1;
	pl_arena_init(a, 0, 0);
	*state = a;
	return 0;
}

static int
teardown(void **state)
{
	pl_arena_fini(*state);
	free(*state);
	return 0;
}

static ProtobufCMessage *
parse_ok(pl_arena *a, const ProtobufCMessageDescriptor *d, const char *text)
{
	char err[256] = "";
	ProtobufCMessage *m = NULL;
	int rc;

	rc = pl_json_to_pb(text, strlen(text), d, a, &m, err, sizeof(err));
	if (rc != PL_OK)
		print_error("%s: %s\n", text, err);
	assert_int_equal(rc, PL_OK);
	assert_non_null(m);
	assert_ptr_equal(m->descriptor, d);
	return m;
}

static void
parse_fails(pl_arena *a, const ProtobufCMessageDescriptor *d, const char *text,
            int code, const char *want)
{
	char err[256] = "";
	ProtobufCMessage *m = (ProtobufCMessage *)1;
	int rc;

	rc = pl_json_to_pb(text, strlen(text), d, a, &m, err, sizeof(err));
	if (rc != code || strcmp(err, want) != 0)
		print_error("%s: got %d \"%s\"\n", text, rc, err);
	assert_int_equal(rc, code);
	assert_string_equal(err, want);
	assert_null(m);
}

// The message as JSON text with sorted keys, for exact comparison.
static char *
sorted_json(const ProtobufCMessage *m)
{
	json_t *v = pl_json_from_pb(m);
	char *s;

	assert_non_null(v);
	s = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(v);
	assert_non_null(s);
	return s;
}

static void
expect_json(const ProtobufCMessage *m, const char *want)
{
	char *s = sorted_json(m);

	if (strcmp(s, want) != 0)
		print_error("got  %s\nwant %s\n", s, want);
	assert_string_equal(s, want);
	free(s);
}

static void
expect_same_wire(const ProtobufCMessage *x, const ProtobufCMessage *y)
{
	size_t nx = protobuf_c_message_get_packed_size(x);
	size_t ny = protobuf_c_message_get_packed_size(y);
	uint8_t *bx, *by;

	assert_int_equal(nx, ny);
	bx = malloc(nx + 1);
	by = malloc(ny + 1);
	assert_non_null(bx);
	assert_non_null(by);
	protobuf_c_message_pack(x, bx);
	protobuf_c_message_pack(y, by);
	assert_memory_equal(bx, by, nx);
	free(bx);
	free(by);
}

// How often pl_json_dump_wire gave up on a packed message (the caller then
// unpacks): proto2's required fields only, in these tests.
static int wire_fallbacks;

// pl_json_dump_wire on m's packed bytes writes what pl_json_dump_pb(m)
// wrote (text; NULL when that failed).
static void
expect_wire_is_dump(const ProtobufCMessage *m, const char *text)
{
	size_t n = protobuf_c_message_get_packed_size(m), len = 0;
	uint8_t *buf = malloc(n + 1);
	char *w;

	assert_non_null(buf);
	protobuf_c_message_pack(m, buf);
	w = pl_json_dump_wire(m->descriptor, buf, n, &len);
	free(buf);
	if (text == NULL) {
		assert_null(w);
		return;
	}
	if (w == NULL) {
		wire_fallbacks++;
		return;
	}
	if (strcmp(w, text) != 0)
		print_error("wire %s\ndump %s\n", w, text);
	assert_string_equal(w, text);
	assert_int_equal(len, strlen(text));
	free(w);
}

// pl_json_dump_pb writes what json_dumps(pl_json_from_pb(m), JSON_COMPACT)
// writes, byte for byte (NULL when the tree cannot be built).
static void
expect_dump_is_tree(const ProtobufCMessage *m)
{
	json_t *v = pl_json_from_pb(m);
	char *tree = v != NULL ? json_dumps(v, JSON_COMPACT) : NULL;
	size_t len = 0;
	char *text = pl_json_dump_pb(m, &len);

	json_decref(v);
	expect_wire_is_dump(m, text);
	if (tree == NULL) {
		assert_null(text);
		return;
	}
	assert_non_null(text);
	if (strcmp(text, tree) != 0)
		print_error("dump %s\ntree %s\n", text, tree);
	assert_string_equal(text, tree);
	assert_int_equal(len, strlen(tree));
	free(tree);
	free(text);
}

// pb -> JSON text -> pb.
static ProtobufCMessage *
round_trip(pl_arena *a, const ProtobufCMessage *m)
{
	size_t len = 0;
	char *text;
	char err[256] = "";
	ProtobufCMessage *out = NULL;
	int rc;

	expect_dump_is_tree(m);
	text = pl_json_dump_pb(m, &len);
	assert_non_null(text);
	assert_int_equal(len, strlen(text));
	rc = pl_json_to_pb(text, len, m->descriptor, a, &out, err, sizeof(err));
	if (rc != PL_OK)
		print_error("%s: %s\n", text, err);
	free(text);
	assert_int_equal(rc, PL_OK);
	return out;
}

// A message with every field kind set, built in the arena.
static JsonTest *
full_message(pl_arena *a)
{
	static const uint8_t raw[] = { 0, 1, 2, 0xfb, 0xff };
	JsonTest *m = pl_arena_alloc(a, sizeof(*m));
	Contact *c = pl_arena_alloc(a, sizeof(*c));
	Contact *c2 = pl_arena_alloc(a, sizeof(*c2));
	Json *meta = pl_arena_alloc(a, sizeof(*meta));
	Json **rmeta = pl_arena_alloc(a, 2 * sizeof(*rmeta));
	Contact **rc = pl_arena_alloc(a, 2 * sizeof(*rc));
	static int32_t ri32[] = { 0, 1, -1, INT32_MIN, INT32_MAX };
	static int64_t ri64[] = { INT64_MIN, 0, INT64_MAX };
	static uint32_t ru32[] = { 0, UINT32_MAX };
	static uint64_t ru64[] = { 0, 1, UINT64_MAX };
	static int32_t rs32[] = { -3, 3 };
	static uint64_t rf64[] = { 1ULL << 63 };
	static float rflt[] = { 0.5f, -1.25f, 0.0f };
	static double rdbl[] = { 1e300, -2.5e-300, 0.1 };
	static protobuf_c_boolean rbool[] = { 1, 0, 1 };
	static char *rstr[] = { "", "two", "\xe2\x82\xac" };
	static ProtobufCBinaryData rbytes[] = { { 0, NULL },
		                                { 3, (uint8_t *)"abc" } };
	static Parley__Test__V1__ConversationOwner rowner[] = {
		PARLEY__TEST__V1__CONVERSATION_OWNER__CONVERSATION_OWNER_UNSPECIFIED,
		PARLEY__TEST__V1__CONVERSATION_OWNER__CONVERSATION_OWNER_HUMAN_AGENT,
	};
	static Parley__Test__V1__JsonTest__Status rstatus[] = {
		PARLEY__TEST__V1__JSON_TEST__STATUS__STATUS_ACTIVE,
	};
	static char *tags[] = { "a", "b" };

	assert_non_null(m);
	parley__test__v1__json_test__init(m);
	m->f_int32 = -5;
	m->f_int64 = 9007199254740993LL;
	m->f_uint32 = 4000000000U;
	m->f_uint64 = UINT64_MAX;
	m->f_sint32 = -7;
	m->f_sint64 = INT64_MIN;
	m->f_fixed32 = 7;
	m->f_fixed64 = 8;
	m->f_sfixed32 = -9;
	m->f_sfixed64 = -10;
	m->f_float = 1.5f;
	m->f_double = 0.25;
	m->f_bool = 1;
	m->f_string = "h\xc3\xa9llo \"q\"";
	m->f_bytes.len = sizeof(raw);
	m->f_bytes.data = (uint8_t *)raw;
	m->owner = PARLEY__TEST__V1__CONVERSATION_OWNER__CONVERSATION_OWNER_BOT;
	m->status = PARLEY__TEST__V1__JSON_TEST__STATUS__STATUS_PAUSED_BY_USER;
	m->http_mode = PARLEY__TEST__V1__HTTPMODE__HTTP_MODE_TLS;
	m->level = PARLEY__TEST__V1__LEVEL__HIGH;

	parley__test__v1__contact__init(c);
	c->name = "Ann";
	c->n_tags = 2;
	c->tags = tags;
	m->contact = c;
	m->display_name = "D";

	m->n_r_int32 = 5;
	m->r_int32 = ri32;
	m->n_r_int64 = 3;
	m->r_int64 = ri64;
	m->n_r_uint32 = 2;
	m->r_uint32 = ru32;
	m->n_r_uint64 = 3;
	m->r_uint64 = ru64;
	m->n_r_sint32 = 2;
	m->r_sint32 = rs32;
	m->n_r_fixed64 = 1;
	m->r_fixed64 = rf64;
	m->n_r_float = 3;
	m->r_float = rflt;
	m->n_r_double = 3;
	m->r_double = rdbl;
	m->n_r_bool = 3;
	m->r_bool = rbool;
	m->n_r_string = 3;
	m->r_string = rstr;
	m->n_r_bytes = 2;
	m->r_bytes = rbytes;
	m->n_r_owner = 2;
	m->r_owner = rowner;
	m->n_r_status = 1;
	m->r_status = rstatus;

	parley__test__v1__contact__init(c2);
	c2->age = 30;
	c2->referrer = c;
	rc[0] = c2;
	rc[1] = c;
	m->n_r_contact = 2;
	m->r_contact = rc;

	m->choice_case = PARLEY__TEST__V1__JSON_TEST__CHOICE_CHOICE_NUM;
	m->choice_num = 42;

	parley__rpc__v1__json__init(meta);
	meta->text = "{\"k\": [1, 2], \"a\": null}";
	m->meta = meta;
	rmeta[0] = pl_arena_alloc(a, sizeof(Json));
	rmeta[1] = pl_arena_alloc(a, sizeof(Json));
	parley__rpc__v1__json__init(rmeta[0]);
	parley__rpc__v1__json__init(rmeta[1]);
	rmeta[0]->text = "\"s\"";
	rmeta[1]->text = "3.5";
	m->n_r_meta = 2;
	m->r_meta = rmeta;
	return m;
}

// Strings as jansson writes and refuses them: escapes, control bytes,
// multi-byte UTF-8 kept as it is, and every kind of invalid UTF-8 failing
// the whole dump.
static void
test_dump_strings(void **state)
{
	static const char *const texts[] = {
		"",
		"plain",
		"quote \" back \\ slash /",
		"\b\f\n\r\t",
		"\x01\x02\x1f\x7f",
		"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x8d\x95",
		"\xf4\x8f\xbf\xbf",
		"\xef\xbf\xbf",
		"\xc2\x80",
		"\xe2\x80\xa8 \xe2\x80\xa9",
		// invalid: continuation first, overlong 2/3/4-byte, surrogate,
		// past U+10FFFF, truncated, bad lead bytes.
		"\x80",
		"\xc0\x80",
		"\xc1\xbf",
		"\xe0\x80\x80",
		"\xf0\x80\x80\x80",
		"\xed\xa0\x80",
		"\xf4\x90\x80\x80",
		"\xe2\x82",
		"a\xf5\x80\x80\x80",
		"\xff",
	};
	(void)state;
	for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
		Parley__Test__V1__JsonTest m =
		        PARLEY__TEST__V1__JSON_TEST__INIT;
		char *r[2] = { (char *)texts[i], "x" };

		m.f_string = (char *)texts[i];
		expect_dump_is_tree(&m.base);
		m.f_string = "";
		m.r_string = r;
		m.n_r_string = 2;
		expect_dump_is_tree(&m.base);
	}
	// Each kind of byte at every place of strings of up to 40 bytes:
	// the dump reads plain text eight bytes at a time, and whatever a
	// word's or the tail's bytes are, it writes what jansson writes.
	static const char *const odd[] = { "\"",       "\\",   "\n",
		                           "\x01",     "\x1f", "\x7f",
		                           "\xc3\xa9", "\xff", " " };
	for (size_t len = 0; len <= 40; len++)
		for (size_t at = 0; at < len; at++)
			for (size_t k = 0; k < sizeof(odd) / sizeof(odd[0]);
			     k++) {
				Parley__Test__V1__JsonTest m =
				        PARLEY__TEST__V1__JSON_TEST__INIT;
				char buf[64];
				size_t n = strlen(odd[k]);
				memset(buf, 'a', len);
				memcpy(buf + at, odd[k], n);
				buf[at + n > len ? at + n : len] = '\0';
				m.f_string = buf;
				expect_dump_is_tree(&m.base);
			}
}

// The text of a Json field comes out as jansson writes the value it holds,
// byte for byte, whether the dump copies it (the usual compact case) or
// parses it: key order kept, a repeated key once, reals and big integers
// in jansson's form, escapes resolved, anything that is not one JSON value
// null.
static void
test_dump_json_texts(void **state)
{
	static const char *const texts[] = {
		"{}",
		"[]",
		" { } ",
		"[ ]",
		"null",
		"true",
		"false",
		"0",
		"-1",
		"123456789012345678",
		"-123456789012345678",
		"1234567890123456789",
		"9223372036854775808",
		"-0",
		"01",
		"1.0",
		"0.1",
		"1e2",
		"2E-3",
		"\"\"",
		"\"plain\"",
		"{\"name\": \"Customer 12\"}",
		"{\"z\": 1, \"a\": [true, {\"b\": \"c\"}], \"m\": null}",
		"{\"k\": [1, 2], \"a\": null}",
		" {\n\t\"a\" :\r[ 1 ,2 , [ ] , { } ] } \n",
		"{\"a\": 1, \"a\": 2}",
		"{\"a\": 1, \"b\": {\"a\": 2}}",
		"{\"caf\xc3\xa9\": \"\xf0\x9f\x8d\x95\", \"u\": "
		"\"\xe2\x80\xa8\"}",
		"\"\x7f\"",
		"\"esc \\\" \\\\ \\/ \\n \\u00e9 \\ud83c\\udf55\"",
		"\"\\u0000\"",
		"\"tab\there\"",
		"\"\xc3\"",
		"\"\xed\xa0\x80\"",
		"[1, 2.5, \"x\", -7, 0]",
		"[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]",
		"{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{"
		"\"a\":{"
		"\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":1}}}}}}"
		"}}"
		"}}}}}}}}}",
		"truex",
		"nul",
		"[1,]",
		"{\"a\":1,}",
		"{\"a\" 1}",
		"{1: 2}",
		"[1] 2",
		"\"open",
		"{\"a\": [1, 2}",
		"",
		"   ",
		"+1",
		".5",
		"-",
		"[-]",
		"{\"k00\":0,\"k01\":1,\"k02\":2,\"k03\":3,\"k04\":4,\"k05\":5,"
		"\"k06\":6,\"k07\":7,\"k08\":8,\"k09\":9,\"k10\":10,\"k11\":11,"
		"\"k12\":12,\"k13\":13,\"k14\":14,\"k15\":15,\"k16\":16,"
		"\"k17\":17,\"k18\":18,\"k19\":19,\"k20\":20,\"k21\":21,"
		"\"k22\":22,\"k23\":23,\"k24\":24,\"k25\":25,\"k26\":26,"
		"\"k27\":27,\"k28\":28,\"k29\":29,\"k30\":30,\"k31\":31,"
		"\"k32\":32,\"k00\":33}",
	};
	(void)state;
	for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
		JsonTest m = PARLEY__TEST__V1__JSON_TEST__INIT;
		Json meta = PARLEY__RPC__V1__JSON__INIT, other;
		Json *r[2] = { &meta, &other };

		meta.text = (char *)texts[i];
		m.meta = &meta;
		expect_dump_is_tree(&m.base);
		// In a repeated field, after a value: a text given up on
		// part way leaves nothing of itself behind.
		other = meta;
		other.text = "{\"x\": [1, 2]}";
		m.meta = NULL;
		m.r_meta = r;
		m.n_r_meta = 2;
		expect_dump_is_tree(&m.base);
		r[0] = &other;
		r[1] = &meta;
		expect_dump_is_tree(&m.base);
	}
}

static void
test_known_message(void **state)
{
	JsonTest *m = full_message(*state);

	expect_json(
	        &m->base,
	        "{\"choice_num\":42,"
	        "\"contact\":{\"name\":\"Ann\",\"tags\":[\"a\",\"b\"]},"
	        "\"display_name\":\"D\","
	        "\"f_bool\":true,"
	        "\"f_bytes\":\"AAEC+/8=\","
	        "\"f_double\":0.25,"
	        "\"f_fixed32\":7,"
	        "\"f_fixed64\":8,"
	        "\"f_float\":1.5,"
	        "\"f_int32\":-5,"
	        "\"f_int64\":9007199254740993,"
	        "\"f_sfixed32\":-9,"
	        "\"f_sfixed64\":-10,"
	        "\"f_sint32\":-7,"
	        "\"f_sint64\":-9223372036854775808,"
	        "\"f_string\":\"h\xc3\xa9llo \\\"q\\\"\","
	        "\"f_uint32\":4000000000,"
	        "\"f_uint64\":\"18446744073709551615\","
	        "\"http_mode\":\"tls\","
	        "\"level\":\"high\","
	        "\"meta\":{\"a\":null,\"k\":[1,2]},"
	        "\"owner\":\"bot\","
	        "\"r_bool\":[true,false,true],"
	        "\"r_bytes\":[\"\",\"YWJj\"],"
	        "\"r_contact\":[{\"age\":30,\"referrer\":{\"name\":\"Ann\","
	        "\"tags\":[\"a\",\"b\"]}},{\"name\":\"Ann\",\"tags\":[\"a\","
	        "\"b\"]}],"
	        "\"r_double\":[1.0000000000000001e300,-2.5e-300,"
	        "0.10000000000000001],"
	        "\"r_fixed64\":[\"9223372036854775808\"],"
	        "\"r_float\":[0.5,-1.25,0.0],"
	        "\"r_int32\":[0,1,-1,-2147483648,2147483647],"
	        "\"r_int64\":[-9223372036854775808,0,9223372036854775807],"
	        "\"r_meta\":[\"s\",3.5],"
	        "\"r_owner\":[\"unspecified\",\"human_agent\"],"
	        "\"r_sint32\":[-3,3],"
	        "\"r_status\":[\"active\"],"
	        "\"r_string\":[\"\",\"two\",\"\xe2\x82\xac\"],"
	        "\"r_uint32\":[0,4294967295],"
	        "\"r_uint64\":[0,1,\"18446744073709551615\"],"
	        "\"status\":\"paused_by_user\"}");
}

static void
test_round_trip_full(void **state)
{
	JsonTest *m = full_message(*state);
	JsonTest *b = (JsonTest *)round_trip(*state, &m->base);

	assert_non_null(b);
	assert_int_equal(b->f_int32, m->f_int32);
	assert_true(b->f_int64 == m->f_int64);
	assert_int_equal(b->f_uint32, m->f_uint32);
	assert_true(b->f_uint64 == m->f_uint64);
	assert_int_equal(b->f_sint32, m->f_sint32);
	assert_true(b->f_sint64 == m->f_sint64);
	assert_int_equal(b->f_fixed32, m->f_fixed32);
	assert_true(b->f_fixed64 == m->f_fixed64);
	assert_int_equal(b->f_sfixed32, m->f_sfixed32);
	assert_true(b->f_sfixed64 == m->f_sfixed64);
	assert_true(b->f_float == m->f_float);
	assert_true(b->f_double == m->f_double);
	assert_int_equal(b->f_bool, 1);
	assert_string_equal(b->f_string, m->f_string);
	assert_int_equal(b->f_bytes.len, m->f_bytes.len);
	assert_memory_equal(b->f_bytes.data, m->f_bytes.data, m->f_bytes.len);
	assert_int_equal(b->owner, m->owner);
	assert_int_equal(b->status, m->status);
	assert_int_equal(b->http_mode, m->http_mode);
	assert_int_equal(b->level, m->level);
	assert_non_null(b->contact);
	assert_string_equal(b->contact->name, "Ann");
	assert_string_equal(b->contact->phone, "");
	assert_int_equal(b->contact->n_tags, 2);
	assert_string_equal(b->contact->tags[1], "b");
	assert_null(b->contact->referrer);
	assert_string_equal(b->display_name, "D");

	assert_int_equal(b->n_r_int32, m->n_r_int32);
	assert_memory_equal(b->r_int32, m->r_int32,
	                    m->n_r_int32 * sizeof(int32_t));
	assert_int_equal(b->n_r_int64, m->n_r_int64);
	assert_memory_equal(b->r_int64, m->r_int64,
	                    m->n_r_int64 * sizeof(int64_t));
	assert_int_equal(b->n_r_uint32, m->n_r_uint32);
	assert_memory_equal(b->r_uint32, m->r_uint32,
	                    m->n_r_uint32 * sizeof(uint32_t));
	assert_int_equal(b->n_r_uint64, m->n_r_uint64);
	assert_memory_equal(b->r_uint64, m->r_uint64,
	                    m->n_r_uint64 * sizeof(uint64_t));
	assert_int_equal(b->n_r_sint32, 2);
	assert_int_equal(b->r_sint32[0], -3);
	assert_int_equal(b->n_r_fixed64, 1);
	assert_true(b->r_fixed64[0] == 1ULL << 63);
	assert_int_equal(b->n_r_float, 3);
	assert_memory_equal(b->r_float, m->r_float, 3 * sizeof(float));
	assert_int_equal(b->n_r_double, 3);
	assert_memory_equal(b->r_double, m->r_double, 3 * sizeof(double));
	assert_int_equal(b->n_r_bool, 3);
	assert_int_equal(b->r_bool[0], 1);
	assert_int_equal(b->r_bool[1], 0);
	assert_int_equal(b->n_r_string, 3);
	assert_string_equal(b->r_string[0], "");
	assert_string_equal(b->r_string[2], "\xe2\x82\xac");
	assert_int_equal(b->n_r_bytes, 2);
	assert_int_equal(b->r_bytes[0].len, 0);
	assert_int_equal(b->r_bytes[1].len, 3);
	assert_memory_equal(b->r_bytes[1].data, "abc", 3);
	assert_int_equal(b->n_r_owner, 2);
	assert_int_equal(b->r_owner[0], 0);
	assert_int_equal(b->r_owner[1], m->r_owner[1]);
	assert_int_equal(b->n_r_status, 1);
	assert_int_equal(b->r_status[0], m->r_status[0]);
	assert_int_equal(b->n_r_contact, 2);
	assert_int_equal(b->r_contact[0]->age, 30);
	assert_string_equal(b->r_contact[0]->referrer->name, "Ann");
	assert_string_equal(b->r_contact[1]->tags[0], "a");

	assert_int_equal(b->choice_case, m->choice_case);
	assert_true(b->choice_num == 42);
	assert_non_null(b->meta);
	// Written back compactly, keys in their original order.
	assert_string_equal(b->meta->text, "{\"k\":[1,2],\"a\":null}");
	assert_int_equal(b->n_r_meta, 2);
	assert_string_equal(b->r_meta[0]->text, "\"s\"");
	assert_string_equal(b->r_meta[1]->text, "3.5");
	assert_null(b->child);

	// Everything else too: JSON of both is the same.
	char *x = sorted_json(&m->base), *y = sorted_json(&b->base);
	assert_string_equal(x, y);
	free(x);
	free(y);
}

static void
test_round_trip_oneof(void **state)
{
	pl_arena *a = *state;
	JsonTest m = PARLEY__TEST__V1__JSON_TEST__INIT;
	Contact c = PARLEY__TEST__V1__CONTACT__INIT;
	JsonTest *b;

	// A oneof member is sent even at its zero value.
	m.choice_case = PARLEY__TEST__V1__JSON_TEST__CHOICE_CHOICE_TEXT;
	m.choice_text = "";
	expect_json(&m.base, "{\"choice_text\":\"\"}");
	b = (JsonTest *)round_trip(a, &m.base);
	assert_int_equal(b->choice_case, m.choice_case);
	assert_string_equal(b->choice_text, "");

	m.choice_case = PARLEY__TEST__V1__JSON_TEST__CHOICE_CHOICE_OWNER;
	m.choice_owner = 0;
	expect_json(&m.base, "{\"choice_owner\":\"unspecified\"}");
	b = (JsonTest *)round_trip(a, &m.base);
	assert_int_equal(b->choice_case, m.choice_case);
	assert_int_equal(b->choice_owner, 0);

	m.choice_case = PARLEY__TEST__V1__JSON_TEST__CHOICE_CHOICE_CONTACT;
	c.phone = "+33";
	m.choice_contact = &c;
	expect_json(&m.base, "{\"choice_contact\":{\"phone\":\"+33\"}}");
	b = (JsonTest *)round_trip(a, &m.base);
	assert_int_equal(b->choice_case, m.choice_case);
	assert_string_equal(b->choice_contact->phone, "+33");
	expect_same_wire(&m.base, &b->base);

	b = (JsonTest *)parse_ok(a, JT_DESC, "{\"choice_num\":\"-12\"}");
	assert_int_equal(b->choice_case,
	                 PARLEY__TEST__V1__JSON_TEST__CHOICE_CHOICE_NUM);
	assert_true(b->choice_num == -12);

	// null leaves the oneof unset, so another member may follow.
	b = (JsonTest *)parse_ok(a, JT_DESC,
	                         "{\"choice_text\":null,\"choice_num\":1}");
	assert_int_equal(b->choice_case,
	                 PARLEY__TEST__V1__JSON_TEST__CHOICE_CHOICE_NUM);
}

static void
test_empty(void **state)
{
	pl_arena *a = *state;
	JsonTest m = PARLEY__TEST__V1__JSON_TEST__INIT;
	Contact c = PARLEY__TEST__V1__CONTACT__INIT;
	Parley__Rpc__V1__HealthCheckRequest h =
	        PARLEY__RPC__V1__HEALTH_CHECK_REQUEST__INIT;
	size_t len = 99;
	char *s;
	JsonTest *b;

	s = pl_json_dump_pb(&m.base, &len);
	assert_string_equal(s, "{}");
	assert_int_equal(len, 2);
	free(s);
	expect_json(&c.base, "{}");
	expect_json(&h.base, "{}");

	// An empty sub-message is still sent: it is set.
	m.contact = &c;
	expect_json(&m.base, "{\"contact\":{}}");

	b = (JsonTest *)parse_ok(a, JT_DESC, "{}");
	assert_int_equal(b->f_int32, 0);
	assert_string_equal(b->f_string, "");
	assert_null(b->contact);
	assert_int_equal(b->n_r_int32, 0);
	assert_int_equal(b->choice_case, 0);
	parse_ok(a, &parley__rpc__v1__health_check_request__descriptor, "{}");
	parse_ok(a, JT_DESC, " \n{ }\t");
}

static void
test_enum_names(void **state)
{
	pl_arena *a = *state;
	JsonTest m = PARLEY__TEST__V1__JSON_TEST__INIT;
	Parley__Rpc__V1__HealthCheckResponse h =
	        PARLEY__RPC__V1__HEALTH_CHECK_RESPONSE__INIT;
	Parley__Rpc__V1__Response resp = PARLEY__RPC__V1__RESPONSE__INIT;
	Parley__Rpc__V1__Principal p = PARLEY__RPC__V1__PRINCIPAL__INIT;
	JsonTest *b;

	m.owner =
	        PARLEY__TEST__V1__CONVERSATION_OWNER__CONVERSATION_OWNER_HUMAN_AGENT;
	m.http_mode = PARLEY__TEST__V1__HTTPMODE__HTTP_MODE_PLAIN;
	m.level = PARLEY__TEST__V1__LEVEL__LOW;
	m.status = PARLEY__TEST__V1__JSON_TEST__STATUS__STATUS_ACTIVE;
	expect_json(&m.base,
	            "{\"http_mode\":\"plain\",\"level\":\"low\","
	            "\"owner\":\"human_agent\",\"status\":\"active\"}");

	h.status =
	        PARLEY__RPC__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING_STATUS_SERVING;
	expect_json(&h.base, "{\"status\":\"serving\"}");
	h.status =
	        PARLEY__RPC__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING_STATUS_NOT_SERVING;
	expect_json(&h.base, "{\"status\":\"not_serving\"}");

	// Code has no prefix: its names are only lower-cased.
	resp.code = PARLEY__RPC__V1__CODE__INVALID_ARGUMENT;
	expect_json(&resp.base, "{\"code\":\"invalid_argument\"}");
	p.kind = PARLEY__RPC__V1__PRINCIPAL_KIND__PRINCIPAL_KIND_API_KEY;
	p.role = PARLEY__RPC__V1__ROLE__ROLE_ADMIN;
	expect_json(&p.base, "{\"kind\":\"api_key\",\"role\":\"admin\"}");

	// A number this build does not know stays a number.
	m.owner = 7;
	m.http_mode = 0;
	m.level = 0;
	m.status = 0;
	expect_json(&m.base, "{\"owner\":7}");

	// Input: the short name in any case, the full name, or the number.
	b = (JsonTest *)parse_ok(
	        a, JT_DESC,
	        "{\"owner\":\"bot\",\"status\":\"PAUSED_BY_USER\","
	        "\"http_mode\":\"HTTP_MODE_TLS\",\"level\":2}");
	assert_int_equal(
	        b->owner,
	        PARLEY__TEST__V1__CONVERSATION_OWNER__CONVERSATION_OWNER_BOT);
	assert_int_equal(
	        b->status,
	        PARLEY__TEST__V1__JSON_TEST__STATUS__STATUS_PAUSED_BY_USER);
	assert_int_equal(b->http_mode,
	                 PARLEY__TEST__V1__HTTPMODE__HTTP_MODE_TLS);
	assert_int_equal(b->level, PARLEY__TEST__V1__LEVEL__HIGH);
	b = (JsonTest *)parse_ok(
	        a, JT_DESC,
	        "{\"owner\":\"unspecified\",\"level\":\"LOW\","
	        "\"r_owner\":[\"human_agent\",1,\"CONVERSATION_OWNER_BOT\"]}");
	assert_int_equal(b->owner, 0);
	assert_int_equal(b->level, PARLEY__TEST__V1__LEVEL__LOW);
	assert_int_equal(b->n_r_owner, 3);
	assert_int_equal(b->r_owner[0], 2);
	assert_int_equal(b->r_owner[1], 1);
	assert_int_equal(b->r_owner[2], 1);
	parse_ok(a, &parley__rpc__v1__health_check_response__descriptor,
	         "{\"status\":\"not_serving\"}");

	parse_fails(a, JT_DESC, "{\"owner\":\"robot\"}", PL_INVALID_ARGUMENT,
	            "owner: unknown value \"robot\" for enum ConversationOwner "
	            "(expected one of: unspecified, bot, human_agent)");
	parse_fails(a, JT_DESC, "{\"r_owner\":[\"bot\",9]}",
	            PL_INVALID_ARGUMENT,
	            "r_owner[1]: unknown value 9 for enum ConversationOwner "
	            "(expected one of: unspecified, bot, human_agent)");
	parse_fails(a, JT_DESC, "{\"level\":true}", PL_INVALID_ARGUMENT,
	            "level: expected an enum name or number");
	// The prefix alone is not a name.
	parse_fails(a, JT_DESC, "{\"http_mode\":\"mode_tls\"}",
	            PL_INVALID_ARGUMENT,
	            "http_mode: unknown value \"mode_tls\" for enum HTTPMode "
	            "(expected one of: unspecified, plain, tls)");
}

static void
test_camel_case(void **state)
{
	JsonTest *b = (JsonTest *)parse_ok(
	        *state, JT_DESC,
	        "{\"fInt32\":5,\"displayName\":\"x\",\"rOwner\":[\"bot\"],"
	        "\"httpMode\":\"tls\",\"choiceText\":\"t\","
	        "\"contact\":{\"name\":\"n\"},\"rContact\":[{\"age\":1}],"
	        "\"fUint64\":\"7\",\"f_bool\":true}");

	assert_int_equal(b->f_int32, 5);
	assert_string_equal(b->display_name, "x");
	assert_int_equal(b->n_r_owner, 1);
	assert_int_equal(b->http_mode,
	                 PARLEY__TEST__V1__HTTPMODE__HTTP_MODE_TLS);
	assert_int_equal(b->choice_case,
	                 PARLEY__TEST__V1__JSON_TEST__CHOICE_CHOICE_TEXT);
	assert_string_equal(b->choice_text, "t");
	assert_string_equal(b->contact->name, "n");
	assert_int_equal(b->r_contact[0]->age, 1);
	assert_true(b->f_uint64 == 7);
	assert_int_equal(b->f_bool, 1);

	// Output stays snake_case.
	expect_json(
	        &b->base,
	        "{\"choice_text\":\"t\",\"contact\":{\"name\":\"n\"},"
	        "\"display_name\":\"x\",\"f_bool\":true,\"f_int32\":5,"
	        "\"f_uint64\":7,\"http_mode\":\"tls\",\"r_contact\":[{\"age\":"
	        "1}],\"r_owner\":[\"bot\"]}");

	// Only the exact lowerCamelCase spelling.
	parse_fails(*state, JT_DESC, "{\"FInt32\":1}", PL_INVALID_ARGUMENT,
	            "FInt32: unknown field");
	parse_fails(*state, JT_DESC, "{\"fint32\":1}", PL_INVALID_ARGUMENT,
	            "fint32: unknown field");
	parse_fails(*state, JT_DESC, "{\"f_int32\":1,\"fInt32\":2}",
	            PL_INVALID_ARGUMENT,
	            "fInt32: field \"f_int32\" given twice");
}

static void
test_scalars(void **state)
{
	pl_arena *a = *state;
	JsonTest *b;

	b = (JsonTest *)parse_ok(
	        a, JT_DESC,
	        "{\"f_int32\":2147483647,\"f_sint32\":-2147483648,"
	        "\"f_uint32\":4294967295,\"f_fixed32\":\"4294967295\","
	        "\"f_int64\":\"-9223372036854775808\","
	        "\"f_sfixed64\":9223372036854775807,"
	        "\"f_uint64\":\"18446744073709551615\","
	        "\"f_fixed64\":\"007\",\"f_sfixed32\":1e3,"
	        "\"f_float\":-0.5,\"f_double\":3,\"f_bool\":false}");
	assert_int_equal(b->f_int32, INT32_MAX);
	assert_int_equal(b->f_sint32, INT32_MIN);
	assert_int_equal(b->f_uint32, UINT32_MAX);
	assert_int_equal(b->f_fixed32, UINT32_MAX);
	assert_true(b->f_int64 == INT64_MIN);
	assert_true(b->f_sfixed64 == INT64_MAX);
	assert_true(b->f_uint64 == UINT64_MAX);
	assert_true(b->f_fixed64 == 7);
	assert_int_equal(b->f_sfixed32, 1000);
	assert_true(b->f_float == -0.5f);
	assert_true(b->f_double == 3.0);
	assert_int_equal(b->f_bool, 0);

	// Special floating-point values travel as strings.
	b = (JsonTest *)parse_ok(
	        a, JT_DESC,
	        "{\"f_double\":\"NaN\",\"f_float\":\"-Infinity\","
	        "\"r_double\":[\"Infinity\",1]}");
	assert_true(isnan(b->f_double));
	assert_true(isinf(b->f_float) && b->f_float < 0);
	assert_true(isinf(b->r_double[0]));
	expect_json(&b->base, "{\"f_double\":\"NaN\",\"f_float\":\"-Infinity\","
	                      "\"r_double\":[\"Infinity\",1.0]}");

	// null is the default value.
	b = (JsonTest *)parse_ok(
	        a, JT_DESC,
	        "{\"f_int32\":null,\"f_string\":null,\"contact\":null,"
	        "\"owner\":null,\"f_bytes\":null,\"r_int32\":null,"
	        "\"r_contact\":null}");
	assert_int_equal(b->f_int32, 0);
	assert_string_equal(b->f_string, "");
	assert_null(b->contact);
	assert_int_equal(b->owner, 0);
	assert_int_equal(b->f_bytes.len, 0);
	assert_int_equal(b->n_r_int32, 0);
	expect_json(&b->base, "{}");
}

static void
test_bytes(void **state)
{
	pl_arena *a = *state;
	static const uint8_t want[] = { 0, 1, 2, 0xfb, 0xff };
	const char *forms[] = { "AAEC+/8=", "AAEC+/8", "AAEC-_8=", "AAEC-_8" };
	JsonTest *b;
	char text[64];

	for (size_t i = 0; i < sizeof(forms) / sizeof(forms[0]); i++) {
		snprintf(text, sizeof(text), "{\"f_bytes\":\"%s\"}", forms[i]);
		b = (JsonTest *)parse_ok(a, JT_DESC, text);
		assert_int_equal(b->f_bytes.len, sizeof(want));
		assert_memory_equal(b->f_bytes.data, want, sizeof(want));
		expect_json(&b->base, "{\"f_bytes\":\"AAEC+/8=\"}");
	}
	b = (JsonTest *)parse_ok(
	        a, JT_DESC,
	        "{\"f_bytes\":\"\",\"r_bytes\":[\"\",\"YQ==\",\"YWI\"]}");
	assert_int_equal(b->f_bytes.len, 0);
	assert_int_equal(b->n_r_bytes, 3);
	assert_int_equal(b->r_bytes[1].len, 1);
	assert_memory_equal(b->r_bytes[2].data, "ab", 2);

	parse_fails(a, JT_DESC, "{\"f_bytes\":\"!!!!\"}", PL_INVALID_ARGUMENT,
	            "f_bytes: invalid base64");
	parse_fails(a, JT_DESC, "{\"f_bytes\":\"A\"}", PL_INVALID_ARGUMENT,
	            "f_bytes: invalid base64");
	parse_fails(a, JT_DESC, "{\"f_bytes\":\"AA==AA==\"}",
	            PL_INVALID_ARGUMENT, "f_bytes: invalid base64");
	parse_fails(a, JT_DESC, "{\"f_bytes\":\"+_8=\"}", PL_INVALID_ARGUMENT,
	            "f_bytes: invalid base64");
	parse_fails(a, JT_DESC, "{\"f_bytes\":\"YW Jj\"}", PL_INVALID_ARGUMENT,
	            "f_bytes: invalid base64");
	parse_fails(a, JT_DESC, "{\"r_bytes\":[\"YQ==\",5]}",
	            PL_INVALID_ARGUMENT,
	            "r_bytes[1]: expected a base64 string");
}

static void
test_errors(void **state)
{
	pl_arena *a = *state;
	const int E = PL_INVALID_ARGUMENT;

	parse_fails(a, JT_DESC, "{\"contact\":{\"nickname\":\"x\"}}", E,
	            "contact.nickname: unknown field");
	parse_fails(a, JT_DESC, "{\"r_contact\":[{},{\"zz\":1}]}", E,
	            "r_contact[1].zz: unknown field");
	parse_fails(a, JT_DESC, "{\"contact\":{\"phone\":5}}", E,
	            "contact.phone: expected a string");
	parse_fails(a, JT_DESC, "{\"contact\":[]}", E,
	            "contact: expected an object");
	parse_fails(a, JT_DESC, "{\"r_contact\":[null]}", E,
	            "r_contact[0]: expected an object");
	parse_fails(a, JT_DESC, "{\"r_contact\":[{\"age\":\"x\"}]}", E,
	            "r_contact[0].age: expected an integer");
	parse_fails(a, JT_DESC, "{\"r_int32\":{}}", E,
	            "r_int32: expected an array");
	parse_fails(a, JT_DESC, "{\"r_int32\":5}", E,
	            "r_int32: expected an array");
	parse_fails(a, JT_DESC, "{\"f_bool\":\"true\"}", E,
	            "f_bool: expected a boolean");
	parse_fails(a, JT_DESC, "{\"f_bool\":1}", E,
	            "f_bool: expected a boolean");
	parse_fails(a, JT_DESC, "{\"f_double\":\"1.5\"}", E,
	            "f_double: expected a number");
	parse_fails(a, JT_DESC, "{\"f_double\":[]}", E,
	            "f_double: expected a number");
	parse_fails(a, JT_DESC, "{\"f_int32\":1.5}", E,
	            "f_int32: expected an integer");
	parse_fails(a, JT_DESC, "{\"f_int32\":\"12a\"}", E,
	            "f_int32: expected an integer");
	parse_fails(a, JT_DESC, "{\"f_int64\":\" 12\"}", E,
	            "f_int64: expected an integer");
	parse_fails(a, JT_DESC, "{\"f_int64\":\"-\"}", E,
	            "f_int64: expected an integer");
	parse_fails(a, JT_DESC, "{\"f_int64\":\"+1\"}", E,
	            "f_int64: expected an integer");
	parse_fails(a, JT_DESC, "{\"f_int64\":true}", E,
	            "f_int64: expected an integer");

	// Ranges.
	parse_fails(a, JT_DESC, "{\"f_int32\":2147483648}", E,
	            "f_int32: value out of range for int32");
	parse_fails(a, JT_DESC, "{\"f_sint32\":-2147483649}", E,
	            "f_sint32: value out of range for sint32");
	parse_fails(a, JT_DESC, "{\"f_uint32\":-1}", E,
	            "f_uint32: value out of range for uint32");
	parse_fails(a, JT_DESC, "{\"f_fixed32\":4294967296}", E,
	            "f_fixed32: value out of range for fixed32");
	parse_fails(a, JT_DESC, "{\"f_int64\":\"9223372036854775808\"}", E,
	            "f_int64: value out of range for int64");
	parse_fails(a, JT_DESC, "{\"f_int64\":\"-9223372036854775809\"}", E,
	            "f_int64: value out of range for int64");
	parse_fails(a, JT_DESC, "{\"f_uint64\":\"18446744073709551616\"}", E,
	            "f_uint64: value out of range for uint64");
	parse_fails(a, JT_DESC, "{\"f_uint64\":\"-1\"}", E,
	            "f_uint64: value out of range for uint64");
	parse_fails(a, JT_DESC, "{\"f_int64\":1e19}", E,
	            "f_int64: value out of range for int64");
	parse_fails(a, JT_DESC, "{\"f_uint64\":1e20}", E,
	            "f_uint64: value out of range for uint64");
	parse_fails(a, JT_DESC, "{\"r_int32\":[1,2,3000000000]}", E,
	            "r_int32[2]: value out of range for int32");
	parse_fails(a, JT_DESC, "{\"f_float\":1e39}", E,
	            "f_float: value out of range for float");

	// Oneof.
	parse_fails(a, JT_DESC, "{\"choice_text\":\"a\",\"choice_num\":1}", E,
	            "choice_num: another field of the same oneof is set");

	// The document itself.
	parse_fails(a, JT_DESC, "[1,2]", E, "expected a JSON object");
	parse_fails(a, JT_DESC, "\"x\"", E, "expected a JSON object");
	parse_fails(a, JT_DESC, "null", E, "expected a JSON object");
	parse_fails(
	        a, JT_DESC, "{\"f_int32\":", E,
	        "invalid JSON at line 1, column 11: unexpected token near end "
	        "of file");
	parse_fails(
	        a, JT_DESC, "", E,
	        "invalid JSON at line 1, column 0: unexpected token near end "
	        "of file");
	parse_fails(
	        a, JT_DESC, "{\"f_int32\":1,\"f_int32\":2}", E,
	        "invalid JSON at line 1, column 22: duplicate object key near "
	        "'\"f_int32\"'");
	parse_fails(
	        a, JT_DESC, "{\"f_string\":\"\xff\"}", E,
	        "invalid JSON at line 1, column 13: unable to decode byte 0xff "
	        "near '\"'");
	parse_fails(a, JT_DESC, "{\"f_string\":\"a\\u0000b\"}", E,
	            "invalid JSON at line 1, column 22: \\u0000 is not allowed "
	            "without JSON_ALLOW_NUL near '\"a\\u0000b\"'");
}

static void
test_error_buffer(void **state)
{
	pl_arena *a = *state;
	const char *text = "{\"contact\":{\"nickname\":\"x\"}}";
	char err[8];
	ProtobufCMessage *m = NULL;

	// A short buffer gets a cut, terminated message; none is fine too.
	assert_int_equal(pl_json_to_pb(text, strlen(text), JT_DESC, a, &m, err,
	                               sizeof(err)),
	                 PL_INVALID_ARGUMENT);
	assert_string_equal(err, "contact");
	assert_int_equal(
	        pl_json_to_pb(text, strlen(text), JT_DESC, a, &m, NULL, 0),
	        PL_INVALID_ARGUMENT);
	assert_null(m);
	assert_int_equal(pl_json_to_pb("{}", 2, JT_DESC, a, NULL, NULL, 0),
	                 PL_INTERNAL);
}

static void
test_obj_to_pb(void **state)
{
	pl_arena *a = *state;
	char err[256];
	ProtobufCMessage *m = NULL;
	json_t *obj = json_object();
	JsonTest *b;

	json_object_set_new(obj, "f_string", json_stringn("ok", 2));
	json_object_set_new(obj, "fInt64", json_integer(-3));
	assert_int_equal(
	        pl_json_obj_to_pb(obj, JT_DESC, a, &m, err, sizeof(err)),
	        PL_OK);
	b = (JsonTest *)m;
	assert_string_equal(b->f_string, "ok");
	assert_true(b->f_int64 == -3);

	// A string with a NUL inside would be cut by protobuf-c: refused.
	json_object_set_new(obj, "f_string", json_stringn("a\0b", 3));
	assert_int_equal(
	        pl_json_obj_to_pb(obj, JT_DESC, a, &m, err, sizeof(err)),
	        PL_INVALID_ARGUMENT);
	assert_string_equal(err, "f_string: string contains a NUL character");
	assert_null(m);
	json_decref(obj);

	obj = json_array();
	assert_int_equal(
	        pl_json_obj_to_pb(obj, JT_DESC, a, &m, err, sizeof(err)),
	        PL_INVALID_ARGUMENT);
	assert_string_equal(err, "expected a JSON object");
	json_decref(obj);
	assert_int_equal(
	        pl_json_obj_to_pb(NULL, JT_DESC, a, &m, err, sizeof(err)),
	        PL_INVALID_ARGUMENT);
}

static void
test_json_inline(void **state)
{
	pl_arena *a = *state;
	JsonTest m = PARLEY__TEST__V1__JSON_TEST__INIT;
	Json meta = PARLEY__RPC__V1__JSON__INIT;
	Json *rm[3];
	Json r0 = PARLEY__RPC__V1__JSON__INIT, r1 = PARLEY__RPC__V1__JSON__INIT;
	JsonTest *b;

	// Output: the value the text holds, whatever its kind.
	meta.text = "{\"z\": 1, \"a\": [true, {\"b\": \"c\"}]}";
	m.meta = &meta;
	expect_json(&m.base, "{\"meta\":{\"a\":[true,{\"b\":\"c\"}],\"z\":1}}");
	meta.text = "  \"just a string\" ";
	expect_json(&m.base, "{\"meta\":\"just a string\"}");
	meta.text = "12";
	expect_json(&m.base, "{\"meta\":12}");
	// Text that is not JSON, or no text at all, is null.
	meta.text = "{not json";
	expect_json(&m.base, "{\"meta\":null}");
	meta.text = "";
	expect_json(&m.base, "{\"meta\":null}");
	meta.text = "[1] 2";
	expect_json(&m.base, "{\"meta\":null}");
	r0.text = "false";
	r1.text = "{}";
	rm[0] = &r0;
	rm[1] = &r1;
	rm[2] = &meta;
	m.r_meta = rm;
	m.n_r_meta = 3;
	m.meta = NULL;
	expect_json(&m.base, "{\"r_meta\":[false,{},null]}");

	// Input: any value, written back compactly in its own key order.
	b = (JsonTest *)parse_ok(
	        a, JT_DESC,
	        "{\"meta\":{ \"z\" : [1, 2.5, \"x\"],\"a\":{\"n\":null}},"
	        "\"r_meta\":[1,\"s\",null,[],{}]}");
	assert_string_equal(b->meta->text,
	                    "{\"z\":[1,2.5,\"x\"],\"a\":{\"n\":null}}");
	assert_int_equal(b->n_r_meta, 5);
	assert_string_equal(b->r_meta[0]->text, "1");
	assert_string_equal(b->r_meta[1]->text, "\"s\"");
	assert_string_equal(b->r_meta[2]->text, "null");
	assert_string_equal(b->r_meta[3]->text, "[]");
	assert_string_equal(b->r_meta[4]->text, "{}");

	// For a JSON field null is a value like any other.
	b = (JsonTest *)parse_ok(a, JT_DESC, "{\"meta\":null}");
	assert_non_null(b->meta);
	assert_string_equal(b->meta->text, "null");
	expect_json(&b->base, "{\"meta\":null}");
	b = (JsonTest *)parse_ok(a, JT_DESC,
	                         "{\"meta\":\"caf\\u00e9 \\\"q\\\"\"}");
	assert_string_equal(b->meta->text, "\"caf\xc3\xa9 \\\"q\\\"\"");

	// The message itself, not as a field, is an ordinary object.
	expect_json(&meta.base, "{\"text\":\"[1] 2\"}");
	parse_ok(a, &parley__rpc__v1__json__descriptor, "{\"text\":\"5\"}");
}

static void
test_output_errors(void **state)
{
	JsonTest m = PARLEY__TEST__V1__JSON_TEST__INIT;
	Contact c = PARLEY__TEST__V1__CONTACT__INIT;

	(void)state;
	assert_null(pl_json_from_pb(NULL));
	assert_null(pl_json_dump_pb(NULL, NULL));
	// A string that is not UTF-8 cannot be JSON: refused, not mangled.
	c.name = "caf\xe9";
	m.contact = &c;
	assert_null(pl_json_from_pb(&m.base));
	assert_null(pl_json_dump_pb(&m.base, NULL));
	// A count with no array behind it.
	m.contact = NULL;
	m.n_r_int32 = 2;
	assert_null(pl_json_from_pb(&m.base));
	m.n_r_int32 = 0;
	expect_json(&m.base, "{}");
}

// {"child":{"child":...}} with n objects in all.
static char *
nested_children(int n)
{
	size_t len = (size_t)n * 12 + 4;
	char *s = malloc(len), *p = s;

	assert_non_null(s);
	for (int i = 1; i < n; i++)
		p += sprintf(p, "{\"child\":");
	*p++ = '{';
	for (int i = 0; i < n; i++)
		*p++ = '}';
	*p = '\0';
	return s;
}

static void
test_depth(void **state)
{
	pl_arena *a = *state;
	char *s;
	char buf[512];
	JsonTest *b, *tail;
	int n;

	s = nested_children(PL_JSON_MAX_DEPTH);
	b = (JsonTest *)parse_ok(a, JT_DESC, s);
	free(s);
	for (n = 1, tail = b; tail->child != NULL; tail = tail->child)
		n++;
	assert_int_equal(n, PL_JSON_MAX_DEPTH);
	// What came in at the limit goes out.
	s = pl_json_dump_pb(&b->base, NULL);
	assert_non_null(s);
	free(s);

	s = nested_children(PL_JSON_MAX_DEPTH + 1);
	{
		char err[1024];
		ProtobufCMessage *m = NULL;

		assert_int_equal(pl_json_to_pb(s, strlen(s), JT_DESC, a, &m,
		                               err, sizeof(err)),
		                 PL_INVALID_ARGUMENT);
		assert_null(m);
		assert_non_null(strstr(err, "child.child.child"));
		assert_non_null(strstr(err, ": nesting deeper than 32 levels"));
	}
	free(s);

	// One level more on output is refused too.
	JsonTest top = PARLEY__TEST__V1__JSON_TEST__INIT;
	top.child = b;
	assert_null(pl_json_from_pb(&top.base));
	assert_null(pl_json_dump_pb(&top.base, NULL));

	// Arrays count as levels, and so does an inlined value.
	n = snprintf(buf, sizeof(buf), "{\"meta\":");
	for (int i = 0; i < PL_JSON_MAX_DEPTH - 1; i++)
		n += snprintf(buf + n, sizeof(buf) - (size_t)n, "[");
	for (int i = 0; i < PL_JSON_MAX_DEPTH - 1; i++)
		n += snprintf(buf + n, sizeof(buf) - (size_t)n, "]");
	snprintf(buf + n, sizeof(buf) - (size_t)n, "}");
	b = (JsonTest *)parse_ok(a, JT_DESC, buf);
	assert_int_equal(strlen(b->meta->text), 2 * (PL_JSON_MAX_DEPTH - 1));

	n = snprintf(buf, sizeof(buf), "{\"meta\":");
	for (int i = 0; i < PL_JSON_MAX_DEPTH; i++)
		n += snprintf(buf + n, sizeof(buf) - (size_t)n, "[");
	for (int i = 0; i < PL_JSON_MAX_DEPTH; i++)
		n += snprintf(buf + n, sizeof(buf) - (size_t)n, "]");
	snprintf(buf + n, sizeof(buf) - (size_t)n, "}");
	parse_fails(a, JT_DESC, buf, PL_INVALID_ARGUMENT,
	            "meta: nesting deeper than 32 levels");

	// 29 objects {"child": then {"r_contact":[{"referrer":{}}]}: 33
	// levels.
	s = nested_children(PL_JSON_MAX_DEPTH - 2);
	{
		size_t len = strlen(s) + 64;
		char *t = malloc(len);
		size_t open = strlen(s) - (PL_JSON_MAX_DEPTH - 2);

		assert_non_null(t);
		snprintf(t, len, "%.*s{\"r_contact\":[{\"referrer\":{}}]}%s",
		         (int)(open - 1), s, s + open + 1);
		parse_fails(
		        a, JT_DESC, t, PL_INVALID_ARGUMENT,
		        "child.child.child.child.child.child.child.child.child."
		        "child.child.child.child.child.child.child.child.child."
		        "child.child.child.child.child.child.child.child.child."
		        "child.child.r_contact[0].referrer: nesting deeper "
		        "than "
		        "32 levels");
		free(t);
	}
	free(s);
}

static void
test_large_arrays(void **state)
{
	pl_arena *a = *state;
	enum { N = 100000, NC = 5000 };
	JsonTest m = PARLEY__TEST__V1__JSON_TEST__INIT;
	int64_t *v = malloc(N * sizeof(*v));
	Contact *cs = malloc(NC * sizeof(*cs));
	Contact **cp = malloc(NC * sizeof(*cp));
	char(*names)[16] = malloc(NC * sizeof(*names));
	JsonTest *b;

	assert_non_null(v);
	assert_non_null(cs);
	assert_non_null(cp);
	assert_non_null(names);
	for (int i = 0; i < N; i++)
		v[i] = (int64_t)i * 1000003 - 50000000000LL;
	for (int i = 0; i < NC; i++) {
		parley__test__v1__contact__init(&cs[i]);
		snprintf(names[i], sizeof(names[i]), "c%d", i);
		cs[i].name = names[i];
		cs[i].age = i;
		cp[i] = &cs[i];
	}
	m.n_r_int64 = N;
	m.r_int64 = v;
	m.n_r_contact = NC;
	m.r_contact = cp;

	b = (JsonTest *)round_trip(a, &m.base);
	assert_int_equal(b->n_r_int64, N);
	assert_memory_equal(b->r_int64, v, N * sizeof(*v));
	assert_int_equal(b->n_r_contact, NC);
	for (int i = 0; i < NC; i++) {
		assert_string_equal(b->r_contact[i]->name, names[i]);
		assert_int_equal(b->r_contact[i]->age, i);
	}
	expect_same_wire(&m.base, &b->base);
	free(v);
	free(cs);
	free(cp);
	free(names);
}

static void
test_arena_limit(void **state)
{
	pl_arena small;
	char err[256];
	ProtobufCMessage *m = NULL;
	char *text;
	size_t len = 0;
	JsonTest big = PARLEY__TEST__V1__JSON_TEST__INIT;
	int32_t *v = calloc(20000, sizeof(*v));

	(void)state;
	assert_non_null(v);
	big.n_r_int32 = 20000;
	big.r_int32 = v;
	text = pl_json_dump_pb(&big.base, &len);
	assert_non_null(text);

	pl_arena_init(&small, 4096, 16 * 1024);
	assert_int_equal(
	        pl_json_to_pb(text, len, JT_DESC, &small, &m, err, sizeof(err)),
	        PL_RESOURCE_EXHAUSTED);
	assert_null(m);
	assert_string_equal(
	        err, "r_int32: could not build the message: request too large");
	pl_arena_reset(&small);
	assert_int_equal(pl_json_to_pb("{\"f_int32\":1}", 13, JT_DESC, &small,
	                               &m, err, sizeof(err)),
	                 PL_OK);
	pl_arena_fini(&small);
	free(text);
	free(v);
}

// A proto2-style message built by hand (protoc-c 1.4 has no proto3
// `optional`): a required field, an optional scalar with has_ and an
// optional string with a default.
typedef struct {
	ProtobufCMessage base;
	int32_t id;
	protobuf_c_boolean has_count;
	int32_t count;
	char *label;
} Legacy;

static char legacy_label_default[] = "none";

static const ProtobufCFieldDescriptor legacy_fields[] = {
	{ "id", 1, PROTOBUF_C_LABEL_REQUIRED, PROTOBUF_C_TYPE_INT32, 0,
	  offsetof(Legacy, id), NULL, NULL, 0, 0, NULL, NULL },
	{ "count", 2, PROTOBUF_C_LABEL_OPTIONAL, PROTOBUF_C_TYPE_INT32,
	  offsetof(Legacy, has_count), offsetof(Legacy, count), NULL, NULL, 0,
	  0, NULL, NULL },
	{ "label", 3, PROTOBUF_C_LABEL_OPTIONAL, PROTOBUF_C_TYPE_STRING, 0,
	  offsetof(Legacy, label), NULL, legacy_label_default, 0, 0, NULL,
	  NULL },
};
static const unsigned legacy_by_name[] = { 1, 0, 2 };
static const ProtobufCIntRange legacy_ranges[] = { { 1, 0 }, { 0, 3 } };

static void legacy_init(ProtobufCMessage *msg);

static const ProtobufCMessageDescriptor legacy_descriptor = {
	PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC,
	"test.Legacy",
	"Legacy",
	"Test__Legacy",
	"test",
	sizeof(Legacy),
	3,
	legacy_fields,
	legacy_by_name,
	1,
	legacy_ranges,
	legacy_init,
	NULL,
	NULL,
	NULL
};

static void
legacy_init(ProtobufCMessage *msg)
{
	Legacy *m = (Legacy *)msg;

	memset(m, 0, sizeof(*m));
	m->base.descriptor = &legacy_descriptor;
	m->label = legacy_label_default;
}

static void
test_proto2_labels(void **state)
{
	pl_arena *a = *state;
	Legacy *b;
	Legacy m;

	legacy_init(&m.base);
	// Required fields go out even at zero; unset optionals do not.
	expect_json(&m.base, "{\"id\":0}");
	m.has_count = 1;
	m.label = "x";
	expect_json(&m.base, "{\"count\":0,\"id\":0,\"label\":\"x\"}");

	b = (Legacy *)parse_ok(a, &legacy_descriptor, "{\"id\":4}");
	assert_int_equal(b->id, 4);
	assert_int_equal(b->has_count, 0);
	assert_ptr_equal(b->label, legacy_label_default);
	b = (Legacy *)parse_ok(a, &legacy_descriptor,
	                       "{\"id\":4,\"count\":0,\"label\":\"\"}");
	assert_int_equal(b->has_count, 1);
	assert_string_equal(b->label, "");
	expect_json(&b->base, "{\"count\":0,\"id\":4,\"label\":\"\"}");
	b = (Legacy *)parse_ok(a, &legacy_descriptor,
	                       "{\"id\":1,\"count\":null}");
	assert_int_equal(b->has_count, 0);
	parse_fails(a, &legacy_descriptor, "{\"count\":1}", PL_INVALID_ARGUMENT,
	            "id: missing required field");
}

static void
test_real_protos(void **state)
{
	pl_arena *a = *state;
	Parley__Rpc__V1__Request *rq;
	Parley__Rpc__V1__HealthCheckResponse *h;

	rq = (Parley__Rpc__V1__Request *)parse_ok(
	        a, &parley__rpc__v1__request__descriptor,
	        "{\"method\":\"/x/Y\",\"requestId\":\"12345678901234567890\","
	        "\"timeout_ms\":250,\"principal\":{\"kind\":\"user\","
	        "\"tenantId\":\"t1\",\"role\":\"agent\",\"scopes\":[\"a\"],"
	        "\"platform_admin\":true},\"payload\":\"AQID\"}");
	assert_string_equal(rq->method, "/x/Y");
	assert_true(rq->request_id == 12345678901234567890ULL);
	assert_int_equal(rq->timeout_ms, 250);
	assert_int_equal(rq->principal->kind,
	                 PARLEY__RPC__V1__PRINCIPAL_KIND__PRINCIPAL_KIND_USER);
	assert_string_equal(rq->principal->tenant_id, "t1");
	assert_int_equal(rq->principal->role,
	                 PARLEY__RPC__V1__ROLE__ROLE_AGENT);
	assert_int_equal(rq->principal->platform_admin, 1);
	assert_int_equal(rq->payload.len, 3);
	expect_json(
	        &rq->base,
	        "{\"method\":\"/x/Y\",\"payload\":\"AQID\",\"principal\":"
	        "{\"kind\":\"user\",\"platform_admin\":true,\"role\":\"agent\","
	        "\"scopes\":[\"a\"],\"tenant_id\":\"t1\"},\"request_id\":"
	        "\"12345678901234567890\",\"timeout_ms\":250}");

	h = (Parley__Rpc__V1__HealthCheckResponse *)parse_ok(
	        a, &parley__rpc__v1__health_check_response__descriptor,
	        "{\"status\":\"SERVING_STATUS_SERVING\",\"uptimeS\":5,"
	        "\"database_ok\":true}");
	assert_int_equal(
	        h->status,
	        PARLEY__RPC__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING_STATUS_SERVING);
	expect_json(
	        &h->base,
	        "{\"database_ok\":true,\"status\":\"serving\",\"uptime_s\":5}");
}

// ---- pl_json_dump_wire ----

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t
rnd(void)
{
	// xorshift64: the same messages on every run.
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

static bool
coin(void)
{
	return rnd() & 1;
}

static char *
rnd_string(pl_arena *a)
{
	static const char *const parts[] = { "a",
		                             "Zz",
		                             " ",
		                             "\"",
		                             "\\",
		                             "\n",
		                             "\x01",
		                             "\xc3\xa9",
		                             "\xe2\x82\xac",
		                             "\xf0\x9f\x98\x80",
		                             "0123456789" };
	size_t n = rnd() % 8;
	char *s = pl_arena_alloc(a, n * 10 + 1);

	assert_non_null(s);
	s[0] = '\0';
	for (size_t i = 0; i < n; i++)
		strcat(s, parts[rnd() % (sizeof(parts) / sizeof(parts[0]))]);
	return s;
}

static int64_t
rnd_int(void)
{
	static const int64_t edge[] = { 0,         1,         -1,
		                        INT32_MIN, INT32_MAX, INT64_MIN,
		                        INT64_MAX, 300 };
	return coin() ? edge[rnd() % 8] : (int64_t)rnd();
}

static Contact *
rnd_contact(pl_arena *a, int depth)
{
	Contact *c = pl_arena_alloc(a, sizeof(*c));

	assert_non_null(c);
	parley__test__v1__contact__init(c);
	if (coin())
		c->name = rnd_string(a);
	if (coin())
		c->age = (int32_t)rnd_int();
	if (coin()) {
		c->n_tags = rnd() % 4;
		c->tags = pl_arena_alloc(a, (c->n_tags + 1) * sizeof(char *));
		for (size_t i = 0; i < c->n_tags; i++)
			c->tags[i] = rnd_string(a);
	}
	if (depth < 3 && coin())
		c->referrer = rnd_contact(a, depth + 1);
	return c;
}

static Json *
rnd_json(pl_arena *a)
{
	static const char *const texts[] = { "{\"a\": 1, \"b\": [true, null]}",
		                             "\"s\"",
		                             "3.25",
		                             "[]",
		                             "not json",
		                             "",
		                             "{\"a\":1,\"a\":2}" };
	Json *j = pl_arena_alloc(a, sizeof(*j));

	assert_non_null(j);
	parley__rpc__v1__json__init(j);
	if (coin())
		j->text = (char *)texts[rnd() % 7];
	return j;
}

// A message with each field set or not at random, values at the edges.
static JsonTest *
rnd_message(pl_arena *a, int depth)
{
	JsonTest *m = pl_arena_alloc(a, sizeof(*m));
	size_t n;

	assert_non_null(m);
	parley__test__v1__json_test__init(m);
	m->f_int32 = coin() ? (int32_t)rnd_int() : 0;
	m->f_int64 = coin() ? rnd_int() : 0;
	m->f_uint32 = coin() ? (uint32_t)rnd() : 0;
	m->f_uint64 = coin() ? rnd() : 0;
	m->f_sint32 = coin() ? (int32_t)rnd_int() : 0;
	m->f_sint64 = coin() ? rnd_int() : 0;
	m->f_fixed32 = coin() ? (uint32_t)rnd() : 0;
	m->f_fixed64 = coin() ? rnd() : 0;
	m->f_sfixed32 = coin() ? (int32_t)rnd_int() : 0;
	m->f_sfixed64 = coin() ? rnd_int() : 0;
	m->f_float = coin() ? (float)(int32_t)rnd() / 64.0f : 0;
	m->f_double = coin() ? (double)(int64_t)rnd() / 1024.0 : 0;
	m->f_bool = coin();
	if (coin())
		m->f_string = rnd_string(a);
	if (coin()) {
		m->f_bytes.data = (uint8_t *)rnd_string(a);
		m->f_bytes.len = strlen((char *)m->f_bytes.data);
	}
	m->owner = (Parley__Test__V1__ConversationOwner)(rnd() % 4);
	m->status = (Parley__Test__V1__JsonTest__Status)(rnd() % 3);
	if (coin())
		m->contact = rnd_contact(a, 1);
	if (coin())
		m->display_name = rnd_string(a);
	if (coin()) {
		n = rnd() % 4;
		m->r_int32 = pl_arena_alloc(a, (n + 1) * sizeof(int32_t));
		for (size_t i = 0; i < n; i++)
			m->r_int32[i] = (int32_t)rnd_int();
		m->n_r_int32 = n;
	}
	if (coin()) {
		n = rnd() % 4;
		m->r_uint64 = pl_arena_alloc(a, (n + 1) * sizeof(uint64_t));
		for (size_t i = 0; i < n; i++)
			m->r_uint64[i] = rnd();
		m->n_r_uint64 = n;
	}
	if (coin()) {
		n = rnd() % 4;
		m->r_sint32 = pl_arena_alloc(a, (n + 1) * sizeof(int32_t));
		for (size_t i = 0; i < n; i++)
			m->r_sint32[i] = (int32_t)rnd_int();
		m->n_r_sint32 = n;
	}
	if (coin()) {
		n = rnd() % 3;
		m->r_double = pl_arena_alloc(a, (n + 1) * sizeof(double));
		for (size_t i = 0; i < n; i++)
			m->r_double[i] = (double)(int64_t)rnd() / 8.0;
		m->n_r_double = n;
	}
	if (coin()) {
		n = rnd() % 3;
		m->r_bool = pl_arena_alloc(a, (n + 1) * sizeof(*m->r_bool));
		for (size_t i = 0; i < n; i++)
			m->r_bool[i] = coin();
		m->n_r_bool = n;
	}
	if (coin()) {
		n = rnd() % 4;
		m->r_string = pl_arena_alloc(a, (n + 1) * sizeof(char *));
		for (size_t i = 0; i < n; i++)
			m->r_string[i] = rnd_string(a);
		m->n_r_string = n;
	}
	if (coin()) {
		n = rnd() % 3;
		m->r_owner = pl_arena_alloc(a, (n + 1) * sizeof(*m->r_owner));
		for (size_t i = 0; i < n; i++)
			m->r_owner[i] =
			        (Parley__Test__V1__ConversationOwner)(rnd() %
			                                              4);
		m->n_r_owner = n;
	}
	if (coin()) {
		n = rnd() % 3;
		m->r_contact = pl_arena_alloc(a, (n + 1) * sizeof(Contact *));
		for (size_t i = 0; i < n; i++)
			m->r_contact[i] = rnd_contact(a, 1);
		m->n_r_contact = n;
	}
	switch (rnd() % 5) {
	case 1:
		m->choice_case =
		        PARLEY__TEST__V1__JSON_TEST__CHOICE_CHOICE_TEXT;
		m->choice_text = coin() ? rnd_string(a) : "";
		break;
	case 2:
		m->choice_case = PARLEY__TEST__V1__JSON_TEST__CHOICE_CHOICE_NUM;
		m->choice_num = coin() ? rnd_int() : 0;
		break;
	case 3:
		m->choice_case =
		        PARLEY__TEST__V1__JSON_TEST__CHOICE_CHOICE_CONTACT;
		m->choice_contact = rnd_contact(a, 1);
		break;
	case 4:
		m->choice_case =
		        PARLEY__TEST__V1__JSON_TEST__CHOICE_CHOICE_OWNER;
		m->choice_owner =
		        PARLEY__TEST__V1__CONVERSATION_OWNER__CONVERSATION_OWNER_UNSPECIFIED;
		break;
	}
	if (coin())
		m->meta = rnd_json(a);
	if (coin()) {
		n = rnd() % 3;
		m->r_meta = pl_arena_alloc(a, (n + 1) * sizeof(Json *));
		for (size_t i = 0; i < n; i++)
			m->r_meta[i] = rnd_json(a);
		m->n_r_meta = n;
	}
	if (depth < 3 && coin())
		m->child = rnd_message(a, depth + 1);
	return m;
}

// Random messages of every field kind: the wire path writes what the dump
// of the unpacked message writes, and never gives up on pack's output.
static void
test_dump_wire_random(void **state)
{
	pl_arena *a = *state;
	int before = wire_fallbacks;

	for (int i = 0; i < 3000; i++) {
		expect_dump_is_tree(&rnd_message(a, 1)->base);
		if (i % 100 == 99)
			pl_arena_reset(a);
	}
	assert_int_equal(wire_fallbacks, before);
}

// The dump of what unpack makes of bytes (NULL when it refuses them).
static char *
unpacked_dump(pl_arena *a, const uint8_t *b, size_t n)
{
	ProtobufCMessage *m =
	        protobuf_c_message_unpack(JT_DESC, pl_arena_pb(a), n, b);

	return m != NULL ? pl_json_dump_pb(m, NULL) : NULL;
}

// Bytes pack would not write: the wire path gives up (the caller unpacks),
// or, where it reads them, writes what unpack and dump give.
static void
test_dump_wire_odd(void **state)
{
	pl_arena *a = *state;
	static const struct {
		const char *what;
		size_t n;
		const uint8_t b[16];
		bool gives_up;
	} cases[] = {
		// f_int32 twice: unpack keeps the last.
		{ "repeated singular", 4, { 0x08, 0x01, 0x08, 0x02 }, true },
		// f_uint32 (3) before f_int32 (1).
		{ "out of order", 4, { 0x18, 0x01, 0x08, 0x02 }, true },
		// f_string "a\0b": unpack's C string stops at the NUL.
		{ "NUL in a string", 5, { 0x72, 0x03, 'a', 0, 'b' }, true },
		// choice_text then choice_num: unpack keeps the last.
		{ "two oneof members",
		  7,
		  { 0x92, 0x03, 0x01, 'x', 0x98, 0x03, 0x07 },
		  true },
		// a group (wire type 3) under an unknown number.
		{ "group", 2, { 0xfb, 0x07 }, true },
		{ "truncated varint", 2, { 0x08, 0x80 }, true },
		{ "length past the end", 3, { 0x72, 0x05, 'a' }, true },
		{ "wrong wire type", 5, { 0x0d, 0x01, 0, 0, 0 }, true },
		// r_int32 (30) unpacked, two elements, an unknown field (99)
		// between them: one array.
		{ "unpacked repeated around an unknown",
		  9,
		  { 0xf0, 0x01, 0x05, 0x98, 0x06, 0x01, 0xf0, 0x01, 0x06 },
		  false },
		// r_int32 packed in two runs.
		{ "packed in two runs",
		  9,
		  { 0xf2, 0x01, 0x02, 0x01, 0x02, 0xf2, 0x01, 0x01, 0x03 },
		  false },
		{ "empty packed run", 3, { 0xf2, 0x01, 0x00 }, true },
		// Tags and lengths over 5 bytes: unpack refuses them (found
		// by fuzz_json).
		{ "tag of 6 bytes",
		  7,
		  { 0x88, 0x80, 0x80, 0x80, 0x80, 0x00, 0x01 },
		  true },
		{ "length of 6 bytes",
		  8,
		  { 0x72, 0x81, 0x80, 0x80, 0x80, 0x80, 0x00, 'a' },
		  true },
		// f_int32 = 0 written out: left out, as after unpack.
		{ "explicit zero", 4, { 0x08, 0x00, 0x10, 0x05 }, false },
		// meta (60) holding no text: null, as after unpack.
		{ "empty Json", 3, { 0xe2, 0x03, 0x00 }, false },
		// choice_num = 0: a oneof member is written even at zero.
		{ "oneof zero", 3, { 0x98, 0x03, 0x00 }, false },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *w = pl_json_dump_wire(JT_DESC, cases[i].b, cases[i].n,
		                            NULL);
		char *d = unpacked_dump(a, cases[i].b, cases[i].n);

		if (cases[i].gives_up) {
			if (w != NULL)
				print_error("%s: %s\n", cases[i].what, w);
			assert_null(w);
		} else {
			if (w == NULL || d == NULL || strcmp(w, d) != 0)
				print_error("%s: wire %s dump %s\n",
				            cases[i].what, w ? w : "NULL",
				            d ? d : "NULL");
			assert_non_null(w);
			assert_non_null(d);
			assert_string_equal(w, d);
		}
		free(w);
		free(d);
	}
	// An empty message; a NULL descriptor.
	{
		size_t len = 9;
		char *w = pl_json_dump_wire(JT_DESC, NULL, 0, &len);
		assert_string_equal(w, "{}");
		assert_int_equal(len, 2);
		free(w);
		assert_null(pl_json_dump_wire(NULL, NULL, 0, NULL));
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_known_message, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(test_round_trip_full, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(test_round_trip_oneof, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(test_empty, setup, teardown),
		cmocka_unit_test_setup_teardown(test_enum_names, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(test_camel_case, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(test_scalars, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bytes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_errors, setup, teardown),
		cmocka_unit_test_setup_teardown(test_error_buffer, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(test_obj_to_pb, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(test_json_inline, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(test_output_errors, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(test_depth, setup, teardown),
		cmocka_unit_test_setup_teardown(test_large_arrays, setup,
		                                teardown),
		cmocka_unit_test(test_arena_limit),
		cmocka_unit_test(test_dump_strings),
		cmocka_unit_test(test_dump_json_texts),
		cmocka_unit_test_setup_teardown(test_proto2_labels, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(test_real_protos, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(test_dump_wire_random, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(test_dump_wire_odd, setup,
		                                teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
