// JSON-lines logging: every line parses, the message is escaped, the
// level filter and the thread's context apply, threads never interleave.
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <jansson.h>

#include "pl/log.h"
#include "pl/utf8.h"

typedef struct capture {
	FILE *f;
	json_t *lines; // array of parsed lines
} capture;

static int
setup(void **state)
{
	capture *c = calloc(1, sizeof(*c));

	if (c == NULL)
		return -1;
	c->f = tmpfile();
	if (c->f == NULL) {
		free(c);
		return -1;
	}
	pl_log_init("testsvc", PL_LOG_DEBUG);
	pl_log_ctx_set(NULL, NULL);
	pl_log_set_stream(c->f);
	*state = c;
	return 0;
}

static int
teardown(void **state)
{
	capture *c = *state;

	pl_log_set_stream(NULL);
	pl_log_ctx_set(NULL, NULL);
	fclose(c->f);
	json_decref(c->lines);
	free(c);
	return 0;
}

// Reads back everything logged so far; every line must be one JSON
// object ending in a newline.
static json_t *
read_lines(capture *c)
{
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;

	json_decref(c->lines);
	c->lines = json_array();
	fflush(c->f);
	rewind(c->f);
	while ((n = getline(&line, &cap, c->f)) > 0) {
		json_error_t jerr;
		assert_int_equal(line[n - 1], '\n');
		json_t *o = json_loadb(line, (size_t)n, 0, &jerr);
		if (o == NULL)
			fail_msg("bad JSON line: %s (%s)", line, jerr.text);
		assert_true(json_is_object(o));
		json_array_append_new(c->lines, o);
	}
	free(line);
	return c->lines;
}

static const char *
field(json_t *o, const char *key)
{
	return json_string_value(json_object_get(o, key));
}

static void
test_basic_line(void **state)
{
	capture *c = *state;
	json_t *lines, *o;

	pl_info("hello %s %d", "world", 42);
	lines = read_lines(c);
	assert_int_equal(json_array_size(lines), 1);
	o = json_array_get(lines, 0);
	assert_string_equal(field(o, "level"), "info");
	assert_string_equal(field(o, "service"), "testsvc");
	assert_string_equal(field(o, "msg"), "hello world 42");
	assert_null(json_object_get(o, "request_id"));
	assert_null(json_object_get(o, "tenant_id"));

	// ts: RFC 3339 UTC with milliseconds, close to now.
	const char *ts = field(o, "ts");
	assert_non_null(ts);
	assert_int_equal(strlen(ts), 24);
	struct tm tm = { 0 };
	char *end = strptime(ts, "%Y-%m-%dT%H:%M:%S", &tm);
	assert_non_null(end);
	assert_int_equal(end[0], '.');
	for (int i = 1; i <= 3; i++)
		assert_true(end[i] >= '0' && end[i] <= '9');
	assert_string_equal(end + 4, "Z");
	time_t t = timegm(&tm);
	assert_true(llabs((long long)(time(NULL) - t)) <= 2);
}

static void
test_levels(void **state)
{
	capture *c = *state;
	json_t *lines;

	pl_debug("d");
	pl_info("i");
	pl_warn("w");
	pl_error("e");
	lines = read_lines(c);
	assert_int_equal(json_array_size(lines), 4);
	assert_string_equal(field(json_array_get(lines, 0), "level"), "debug");
	assert_string_equal(field(json_array_get(lines, 1), "level"), "info");
	assert_string_equal(field(json_array_get(lines, 2), "level"), "warn");
	assert_string_equal(field(json_array_get(lines, 3), "level"), "error");

	pl_log_init("testsvc", PL_LOG_WARN);
	pl_debug("dropped");
	pl_info("dropped");
	pl_warn("kept w");
	pl_error("kept e");
	lines = read_lines(c);
	assert_int_equal(json_array_size(lines), 6);
	assert_string_equal(field(json_array_get(lines, 4), "msg"), "kept w");
	assert_string_equal(field(json_array_get(lines, 5), "msg"), "kept e");

	pl_log_init("testsvc", PL_LOG_ERROR);
	pl_warn("dropped");
	assert_int_equal(json_array_size(read_lines(c)), 6);
}

static void
test_level_parse(void **state)
{
	(void)state;
	assert_int_equal(pl_log_level_parse("debug"), PL_LOG_DEBUG);
	assert_int_equal(pl_log_level_parse("info"), PL_LOG_INFO);
	assert_int_equal(pl_log_level_parse("warn"), PL_LOG_WARN);
	assert_int_equal(pl_log_level_parse("error"), PL_LOG_ERROR);
	assert_int_equal(pl_log_level_parse("INFO"), PL_LOG_INFO);
	assert_int_equal(pl_log_level_parse("verbose"), -1);
	assert_int_equal(pl_log_level_parse(""), -1);
	assert_int_equal(pl_log_level_parse("info "), -1);
	assert_int_equal(pl_log_level_parse(NULL), -1);
}

static void
test_escaping(void **state)
{
	capture *c = *state;
	json_t *lines;

	pl_info("q\"b\\s/n\nt\tr\rc\x01\x1f d\x7f");
	// Invalid UTF-8: a stray byte, a cut sequence, an overlong '/', a
	// surrogate; then valid 2, 3 and 4 byte characters.
	pl_info("a\xff"
	        "b\xe2\x82"
	        "c\xc0\xaf"
	        "d\xed\xa0\x80"
	        "e"
	        "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80");
	pl_info("%s", "\xf4\x90\x80\x80 end\xe2");
	lines = read_lines(c);
	assert_int_equal(json_array_size(lines), 3);
	assert_string_equal(field(json_array_get(lines, 0), "msg"),
	                    "q\"b\\s/n\nt\tr\rc\x01\x1f d\x7f");
	assert_string_equal(field(json_array_get(lines, 1), "msg"),
	                    "a\xef\xbf\xbd"
	                    "b\xef\xbf\xbd\xef\xbf\xbd"
	                    "c\xef\xbf\xbd\xef\xbf\xbd"
	                    "d\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"
	                    "e\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80");
	assert_string_equal(field(json_array_get(lines, 2), "msg"),
	                    "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"
	                    " end\xef\xbf\xbd");
}

static void
test_raw_control_chars_escaped(void **state)
{
	capture *c = *state;
	char buf[256];
	size_t n;

	pl_info("x\ny\x02");
	fflush(c->f);
	rewind(c->f);
	n = fread(buf, 1, sizeof(buf) - 1, c->f);
	buf[n] = '\0';
	// Exactly one newline, at the end; control bytes spelled out.
	assert_ptr_equal(strchr(buf, '\n'), buf + n - 1);
	assert_non_null(strstr(buf, "\"msg\":\"x\\ny\\u0002\"}"));
}

static void
test_long_message(void **state)
{
	capture *c = *state;
	char *big = malloc(10001);
	json_t *lines;

	assert_non_null(big);
	memset(big, 'z', 10000);
	big[10000] = '\0';
	big[5000] = '"';
	pl_warn("<%s>", big);
	lines = read_lines(c);
	assert_int_equal(json_array_size(lines), 1);
	const char *m = field(json_array_get(lines, 0), "msg");
	assert_int_equal(strlen(m), 10002);
	assert_int_equal(m[0], '<');
	assert_int_equal(m[5001], '"');
	assert_int_equal(m[10001], '>');
	free(big);
}

static void
test_context(void **state)
{
	capture *c = *state;
	json_t *lines, *o;

	pl_log_ctx_set("req-1", "tenant-\"x\"");
	pl_info("with both");
	pl_log_ctx_set("req-2", NULL);
	pl_info("with request");
	pl_log_ctx_set(NULL, NULL);
	pl_info("with none");
	pl_log_init("svc \"quoted\"", PL_LOG_DEBUG);
	pl_info("service escaped");
	lines = read_lines(c);
	assert_int_equal(json_array_size(lines), 4);
	o = json_array_get(lines, 0);
	assert_string_equal(field(o, "request_id"), "req-1");
	assert_string_equal(field(o, "tenant_id"), "tenant-\"x\"");
	o = json_array_get(lines, 1);
	assert_string_equal(field(o, "request_id"), "req-2");
	assert_null(json_object_get(o, "tenant_id"));
	o = json_array_get(lines, 2);
	assert_null(json_object_get(o, "request_id"));
	assert_null(json_object_get(o, "tenant_id"));
	o = json_array_get(lines, 3);
	assert_string_equal(field(o, "service"), "svc \"quoted\"");
}

#define NTHREADS 8
#define NLINES   1000

static void *
writer(void *arg)
{
	int id = (int)(intptr_t)arg;
	char req[32];

	snprintf(req, sizeof(req), "req-%d", id);
	pl_log_ctx_set(req, "tenant");
	for (int i = 0; i < NLINES; i++)
		pl_info("thread %d line %d %s", id, i,
		        "padding padding padding padding padding padding");
	pl_log_ctx_set(NULL, NULL);
	return NULL;
}

static void
test_threads_never_interleave(void **state)
{
	capture *c = *state;
	pthread_t th[NTHREADS];
	int next[NTHREADS] = { 0 };
	json_t *lines;

	for (int i = 0; i < NTHREADS; i++)
		assert_int_equal(pthread_create(&th[i], NULL, writer,
		                                (void *)(intptr_t)i),
		                 0);
	for (int i = 0; i < NTHREADS; i++)
		pthread_join(th[i], NULL);
	// The main thread's context is untouched by the others.
	pl_info("main");

	lines = read_lines(c);
	assert_int_equal(json_array_size(lines), NTHREADS * NLINES + 1);
	for (size_t k = 0; k < NTHREADS * NLINES; k++) {
		json_t *o = json_array_get(lines, k);
		int id, ln;
		char req[32];

		assert_int_equal(
		        sscanf(field(o, "msg"), "thread %d line %d", &id, &ln),
		        2);
		assert_true(id >= 0 && id < NTHREADS);
		assert_int_equal(ln, next[id]);
		next[id]++;
		snprintf(req, sizeof(req), "req-%d", id);
		assert_string_equal(field(o, "request_id"), req);
	}
	for (int i = 0; i < NTHREADS; i++)
		assert_int_equal(next[i], NLINES);
	assert_null(json_object_get(json_array_get(lines, NTHREADS * NLINES),
	                            "request_id"));
}

// pl_utf8_seq / pl_utf8_valid, which the log's and the JSON writer's
// escaping rely on.
static void
test_utf8(void **state)
{
	(void)state;
	assert_int_equal(pl_utf8_seq("a", 1), 1);
	assert_int_equal(pl_utf8_seq("\xc3\xb1", 2), 2);         // ñ
	assert_int_equal(pl_utf8_seq("\xe2\x82\xac", 3), 3);     // €
	assert_int_equal(pl_utf8_seq("\xf0\x9f\x9a\x9a", 4), 4); // 🚚
	assert_int_equal(pl_utf8_seq("\xf0\x9f\x9a\x9a", 3), 0); // cut
	assert_int_equal(pl_utf8_seq("\xc0\xaf", 2), 0);         // overlong
	assert_int_equal(pl_utf8_seq("\xe0\x80\xaf", 3), 0);     // overlong
	assert_int_equal(pl_utf8_seq("\xed\xa0\x80", 3), 0);     // surrogate
	assert_int_equal(pl_utf8_seq("\xf4\x90\x80\x80", 4), 0); // > U+10FFFF
	assert_int_equal(pl_utf8_seq("\x80", 1), 0);
	assert_true(pl_utf8_valid("", 0));
	assert_true(pl_utf8_valid("a\0b", 3));
	assert_true(pl_utf8_valid("a\xc3\xb1o \xf0\x9f\x99\x82", 9));
	assert_false(pl_utf8_valid("ab\xc3", 3));
	assert_false(pl_utf8_valid("\xff", 1));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_basic_line, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(test_levels, setup, teardown),
		cmocka_unit_test(test_level_parse),
		cmocka_unit_test(test_utf8),
		cmocka_unit_test_setup_teardown(test_escaping, setup, teardown),
		cmocka_unit_test_setup_teardown(test_raw_control_chars_escaped,
		                                setup, teardown),
		cmocka_unit_test_setup_teardown(test_long_message, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(test_context, setup, teardown),
		cmocka_unit_test_setup_teardown(test_threads_never_interleave,
		                                setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
