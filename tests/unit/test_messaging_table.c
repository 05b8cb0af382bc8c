// The messaging handler table against the proto, and the service's pure
// logic: phones, signatures, webhook parsing, send building and answers,
// status ordering, back-off.
#include <setjmp.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>
#include <sodium.h>

#include "fake_provider.h"
#include "messaging.h"
#include "pl/utf8.h"

static void
test_table(void **state)
{
	char err[256];

	(void)state;
	assert_int_equal(
	        pl_rpc_table_check(&messaging_rpc_service, err, sizeof(err)),
	        0);
	assert_int_equal(messaging_service_def.n_migrations,
	                 messaging_n_migrations);
}

static void
test_phone(void **state)
{
	char out[MSG_PHONE_MAX], a[MSG_PHONE_MAX], b[MSG_PHONE_MAX];

	(void)state;
	assert_true(messaging_phone_normalize("+55 (11) 98765-4321", out));
	assert_string_equal(out, "+5511987654321");
	assert_true(messaging_phone_normalize("0055 11 98765 4321", out));
	assert_string_equal(out, "+5511987654321");
	assert_true(messaging_phone_normalize("972987654321", out));
	assert_string_equal(out, "+972987654321");
	assert_false(messaging_phone_normalize("12345", out));
	assert_false(messaging_phone_normalize("+1 555 abc 1234", out));
	assert_false(messaging_phone_normalize("1234567890123456", out));
	assert_int_equal(messaging_phone_variants("+5511987654321", a, b), 2);
	assert_string_equal(b, "+551187654321");
	assert_int_equal(messaging_phone_variants("+551187654321", a, b), 2);
	assert_string_equal(b, "+5511987654321");
	// Landlines (local numbers 2-5) have no ninth digit.
	assert_int_equal(messaging_phone_variants("+551132654321", a, b), 1);
	assert_int_equal(messaging_phone_variants("+34600000000", a, b), 1);
}

static void
test_signature(void **state)
{
	const char *body = "{\"object\":\"whatsapp_business_account\"}";
	unsigned char mac[32];
	char hex[65], hdr[80];

	(void)state;
	crypto_auth_hmacsha256_state st;
	crypto_auth_hmacsha256_init(&st, (const unsigned char *)"s3cret", 6);
	crypto_auth_hmacsha256_update(&st, (const unsigned char *)body,
	                              strlen(body));
	crypto_auth_hmacsha256_final(&st, mac);
	sodium_bin2hex(hex, sizeof(hex), mac, 32);
	snprintf(hdr, sizeof(hdr), "sha256=%s", hex);
	assert_true(messaging_wa_signature_ok(
	        hdr, "s3cret", (const uint8_t *)body, strlen(body)));
	assert_false(messaging_wa_signature_ok(
	        hdr, "other", (const uint8_t *)body, strlen(body)));
	assert_false(messaging_wa_signature_ok(
	        hdr, "s3cret", (const uint8_t *)body, strlen(body) - 1));
	assert_false(messaging_wa_signature_ok(
	        hex, "s3cret", (const uint8_t *)body, strlen(body)));
	assert_false(messaging_wa_signature_ok(
	        NULL, "s3cret", (const uint8_t *)body, strlen(body)));
	assert_false(messaging_wa_signature_ok(
	        "sha256=zz", "s3cret", (const uint8_t *)body, strlen(body)));
}

static void
test_parse(void **state)
{
	const char *wa =
	        "{\"object\":\"whatsapp_business_account\",\"entry\":[{"
	        "\"changes\":"
	        "[{\"value\":{\"metadata\":{\"phone_number_id\":\"111\"},"
	        "\"contacts\":[{\"profile\":{\"name\":\"Ana\"},\"wa_id\":\"5511"
	        "987654321\",\"user_id\":\"US.1\"}],\"messages\":[{\"from\":"
	        "\"5511987654321\",\"id\":\"wamid.A\",\"timestamp\":"
	        "\"1697043223"
	        "\",\"type\":\"text\",\"text\":{\"body\":\"hi\"}},{\"from\":"
	        "\"5511987654321\",\"id\":\"wamid.B\",\"type\":\"image\","
	        "\"image\":{\"mime_type\":\"image/jpeg\",\"caption\":\"c\"}}],"
	        "\"statuses\":[{\"id\":\"wamid.X\",\"status\":\"failed\","
	        "\"timestamp\":\"1689380458\",\"errors\":[{\"code\":130472,"
	        "\"title\":\"t\",\"error_data\":{\"details\":\"d\"}}]}]}}]},"
	        "{\"changes\":[{\"value\":{\"messages\":[{\"from_user_id\":"
	        "\"US.9\",\"id\":\"wamid.C\",\"type\":\"text\",\"text\":{"
	        "\"body\""
	        ":\"x\"}}]}}]}]}";
	const char *ib =
	        "{\"results\":[{\"from\":\"385919998888\",\"to\":\"1234\","
	        "\"messageId\":\"m1\",\"receivedAt\":\"2019-07-19T11:23:26.998+"
	        "0000\",\"message\":{\"type\":\"TEXT\",\"text\":\"a\"},"
	        "\"contact\":{\"name\":\"F\"}},{\"messageId\":\"m2\","
	        "\"status\":"
	        "{\"groupName\":\"DELIVERED\"},\"doneAt\":\"2019-07-19T11:23:"
	        "27."
	        "000+0000\"}]}";
	char err[256];
	msg_items it;
	pl_arena a;

	(void)state;
	pl_arena_init(&a, 0, 0);
	assert_int_equal(messaging_parse_webhook(1, (const uint8_t *)wa,
	                                         strlen(wa), &a, &it, err,
	                                         sizeof(err)),
	                 PL_OK);
	assert_int_equal(it.n, 4);
	assert_int_equal(it.v[0].kind, MSG_ITEM_MESSAGE);
	assert_string_equal(it.v[0].provider_message_id, "wamid.A");
	assert_string_equal(it.v[0].text, "hi");
	assert_string_equal(it.v[0].contact_name, "Ana");
	assert_string_equal(it.v[0].business_user_id, "US.1");
	assert_string_equal(it.v[0].provider_created_at,
	                    "2023-10-11T16:53:43.000Z");
	assert_int_equal(it.v[1].type, 2);
	assert_string_equal(it.v[1].text, "c");
	assert_string_equal(it.v[1].media_mime_type, "image/jpeg");
	assert_int_equal(it.v[2].kind, MSG_ITEM_STATUS);
	assert_int_equal(it.v[2].status, 7);
	assert_string_equal(it.v[2].error_code, "130472");
	assert_string_equal(it.v[2].error_text, "d");
	assert_int_equal(it.v[3].external_id_kind, 2);
	assert_string_equal(it.v[3].external_id, "US.9");

	assert_int_equal(messaging_parse_webhook(2, (const uint8_t *)ib,
	                                         strlen(ib), &a, &it, err,
	                                         sizeof(err)),
	                 PL_OK);
	assert_int_equal(it.n, 2);
	assert_string_equal(it.v[0].external_id, "385919998888");
	assert_string_equal(it.v[0].provider_created_at,
	                    "2019-07-19T11:23:26.998+00:00");
	assert_int_equal(it.v[1].kind, MSG_ITEM_STATUS);
	assert_int_equal(it.v[1].status, 4);

	// Provider times: normalised, or NULL when they are not times.
	{
		static const struct {
			const char *in, *out;
		} t[] = {
			{ "2019-07-19T11:23:26Z", "2019-07-19T11:23:26Z" },
			{ "2019-07-19 11:23:26.5", "2019-07-19T11:23:26.5Z" },
			{ "2020-02-29T00:00:00-0530",
			  "2020-02-29T00:00:00-05:30" },
			{ "2019-07-19T11:23:26.1+05:45",
			  "2019-07-19T11:23:26.1+05:45" },
			{ "2019-02-29T00:00:00Z", NULL },
			{ "2019-13-01T00:00:00Z", NULL },
			{ "2019-07-19T24:00:00Z", NULL },
			{ "2019-07-19T11:23:26.Z", NULL },
			{ "2019-07-19T11:23:26+0000x", NULL },
			{ "2019-07-19T11:23:26+1500", NULL },
			{ "1969-12-31T23:59:59Z", NULL },
			{ "99999-01-01T00:00:00Z", NULL },
			{ "yesterday", NULL },
		};
		for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
			char *b = pl_arena_printf(
			        &a,
			        "{\"results\":[{\"from\":\"1\",\"messageId\":"
			        "\"m\",\"receivedAt\":\"%s\"}]}",
			        t[i].in);
			assert_int_equal(
			        messaging_parse_webhook(2, (const uint8_t *)b,
			                                strlen(b), &a, &it, err,
			                                sizeof(err)),
			        PL_OK);
			assert_int_equal(it.n, 1);
			if (t[i].out == NULL)
				assert_null(it.v[0].provider_created_at);
			else
				assert_string_equal(it.v[0].provider_created_at,
				                    t[i].out);
		}
		static const char *const wa_bad[] = {
			"0", "-5",           "1e9",
			"",  "253402300800", "9223372036854775807"
		};
		for (size_t i = 0; i < sizeof(wa_bad) / sizeof(wa_bad[0]);
		     i++) {
			char *b = pl_arena_printf(
			        &a,
			        "{\"entry\":[{\"changes\":[{\"value\":{"
			        "\"messages\":[{\"from\":\"1\",\"id\":\"w\","
			        "\"timestamp\":\"%s\"}]}}]}]}",
			        wa_bad[i]);
			assert_int_equal(
			        messaging_parse_webhook(1, (const uint8_t *)b,
			                                strlen(b), &a, &it, err,
			                                sizeof(err)),
			        PL_OK);
			assert_int_equal(it.n, 1);
			assert_null(it.v[0].provider_created_at);
		}
	}
	// Empty ids and senders count as none.
	{
		const char *b = "{\"results\":[{\"from\":\"\",\"messageId\":"
		                "\"m\"},{\"from\":\"1\",\"messageId\":\"\"}]}";
		assert_int_equal(messaging_parse_webhook(2, (const uint8_t *)b,
		                                         strlen(b), &a, &it,
		                                         err, sizeof(err)),
		                 PL_OK);
		assert_int_equal(it.n, 0);
		// Ids longer than MSG_MAX_ID are none too.
		char *lb = pl_arena_printf(&a,
		                           "{\"results\":[{\"from\":\"1\","
		                           "\"messageId\":\"%0*d\"}]}",
		                           MSG_MAX_ID + 1, 7);
		assert_int_equal(messaging_parse_webhook(2, (const uint8_t *)lb,
		                                         strlen(lb), &a, &it,
		                                         err, sizeof(err)),
		                 PL_OK);
		assert_int_equal(it.n, 0);
	}

	assert_int_equal(messaging_parse_webhook(1, (const uint8_t *)"{", 1, &a,
	                                         &it, err, sizeof(err)),
	                 PL_INVALID_ARGUMENT);
	assert_non_null(strstr(err, "not JSON"));
	assert_int_equal(messaging_parse_webhook(1, (const uint8_t *)"[]", 2,
	                                         &a, &it, err, sizeof(err)),
	                 PL_INVALID_ARGUMENT);
	assert_int_equal(messaging_parse_webhook(1, (const uint8_t *)"{}", 2,
	                                         &a, &it, err, sizeof(err)),
	                 PL_INVALID_ARGUMENT);
	assert_int_equal(messaging_parse_webhook(2, (const uint8_t *)"", 0, &a,
	                                         &it, err, sizeof(err)),
	                 PL_INVALID_ARGUMENT);
	pl_arena_fini(&a);
}

// A text's length as the providers count it (the fake provider's rule).
static size_t
units16(const char *s)
{
	return fake_provider_text_units(s, strlen(s));
}

// The length, as the providers count it, of the text the request built for
// s carries at body[outer][inner].
static size_t
sent_units(const msg_send *s, pl_arena *a, const char *outer, const char *inner)
{
	const char *url, **h;
	char *body;
	const char *text;
	json_t *j;
	size_t n;

	assert_int_equal(messaging_build_send(s, a, &url, &h, &body), PL_OK);
	j = json_loads(body, 0, NULL);
	text = json_string_value(
	        json_object_get(json_object_get(j, outer), inner));
	assert_non_null(text);
	n = units16(text);
	json_decref(j);
	return n;
}

static bool
ends_with(const char *s, const char *tail)
{
	size_t n = strlen(s), m = strlen(tail);
	return n >= m && strcmp(s + n - m, tail) == 0;
}

// WhatsApp refuses a text body over 4,096 characters and a caption over
// 1,024 (400: the customer gets nothing): longer texts are cut to fit.
static void
test_fit_text(void **state)
{
	pl_arena a;
	char *t = malloc(20001);
	const char *r;
	msg_send s = { 0 };

	(void)state;
	pl_arena_init(&a, 0, 0);
	// Words of 9 letters and a space: cut at a space, then "…".
	for (int i = 0; i < 5000; i++)
		t[i] = i % 10 == 9 ? ' ' : 'a';
	t[5000] = '\0';
	r = messaging_fit_text(t, 4096, &a);
	assert_true(units16(r) <= 4096);
	assert_true(ends_with(r, "aaaaaaaaa\u2026"));
	assert_true(units16(r) >= 4096 - 410);
	// Exactly the limit: the same text.
	t[4096] = '\0';
	assert_ptr_equal(messaging_fit_text(t, 4096, &a), t);
	// One word with no space: cut between characters, at the limit.
	memset(t, 'b', 4097);
	t[4097] = '\0';
	r = messaging_fit_text(t, 4096, &a);
	assert_int_equal(units16(r), 4096);
	assert_int_equal(strlen(r), 4095 + 3);
	// Characters past U+FFFF count two; never cut inside one.
	t[0] = '\0';
	for (int i = 0; i < 2100; i++)
		strcat(t, "\xf0\x9f\x98\x80");
	r = messaging_fit_text(t, 4096, &a);
	assert_true(units16(r) <= 4096);
	assert_int_equal((strlen(r) - 3) % 4, 0);
	assert_true(pl_utf8_valid(r, strlen(r)));
	// Through the WhatsApp request: text body and caption.
	s.channel_type = 1;
	s.api_base_url = "http://x";
	s.phone_number_id = "1";
	s.access_token = "tok";
	s.to = "5511987654321";
	s.to_kind = 1;
	s.type = 1;
	s.text = t;
	assert_true(sent_units(&s, &a, "text", "body") <= 4096);
	s.type = 2;
	s.media_url = "https://x/a.jpg";
	assert_true(sent_units(&s, &a, "image", "caption") <= 1024);
	// Infobip's text.
	s.channel_type = 2;
	s.type = 1;
	s.sender_number = "1234";
	assert_true(sent_units(&s, &a, "content", "text") <= 4096);
	free(t);
	pl_arena_fini(&a);
}

static void
test_send(void **state)
{
	msg_send s = { 0 };
	const char *url, **h, *pid, *code, *text;
	char *body;
	pl_arena a;

	(void)state;
	pl_arena_init(&a, 0, 0);
	s.channel_type = 1;
	s.api_base_url = "http://x/v21.0/";
	s.phone_number_id = "111";
	s.access_token = "tok";
	s.to = "5511987654321";
	s.to_kind = 1;
	s.type = 1;
	s.text = "hello \"you\"";
	assert_int_equal(messaging_build_send(&s, &a, &url, &h, &body), PL_OK);
	assert_string_equal(url, "http://x/v21.0/111/messages");
	assert_string_equal(h[0], "Authorization: Bearer tok");
	assert_string_equal(body,
	                    "{\"messaging_product\":\"whatsapp\","
	                    "\"recipient_type\":\"individual\",\"to\":"
	                    "\"5511987654321\",\"type\":\"text\",\"text\":{"
	                    "\"body\":\"hello \\\"you\\\"\"}}");
	s.channel_type = 2;
	s.sender_number = "1234";
	assert_int_equal(messaging_build_send(&s, &a, &url, &h, &body), PL_OK);
	assert_string_equal(url, "http://x/v21.0/whatsapp/1/message/text");
	assert_string_equal(h[0], "Authorization: App tok");

	assert_int_equal(messaging_classify_send(1, 200,
	                                         "{\"messages\":[{\"id\":"
	                                         "\"wamid.1\"}]}",
	                                         &a, &pid, &code, &text),
	                 MSG_SEND_OK);
	assert_string_equal(pid, "wamid.1");
	assert_int_equal(
	        messaging_classify_send(1, 429, "{}", &a, &pid, &code, &text),
	        MSG_SEND_RETRY);
	assert_int_equal(
	        messaging_classify_send(1, 503, NULL, &a, &pid, &code, &text),
	        MSG_SEND_RETRY);
	assert_int_equal(
	        messaging_classify_send(1, 0, NULL, &a, &pid, &code, &text),
	        MSG_SEND_RETRY);
	assert_int_equal(messaging_classify_send(1, 400,
	                                         "{\"error\":{\"code\":130429,"
	                                         "\"message\":\"rate\"}}",
	                                         &a, &pid, &code, &text),
	                 MSG_SEND_RETRY);
	assert_int_equal(messaging_classify_send(1, 400,
	                                         "{\"error\":{\"code\":131047,"
	                                         "\"message\":\"Re-engagement "
	                                         "message\"}}",
	                                         &a, &pid, &code, &text),
	                 MSG_SEND_PERMANENT);
	assert_string_equal(code, "131047");
	assert_string_equal(text, "Re-engagement message");
	assert_int_equal(messaging_classify_send(2, 200,
	                                         "{\"messageId\":\"ib1\"}", &a,
	                                         &pid, &code, &text),
	                 MSG_SEND_OK);
	assert_string_equal(pid, "ib1");
	// An empty error code is none (found by fuzz_messaging_provider).
	assert_int_equal(messaging_classify_send(
	                         2, 400,
	                         "{\"requestError\":{\"serviceException\":{"
	                         "\"messageId\":\"\"}}}",
	                         &a, &pid, &code, &text),
	                 MSG_SEND_PERMANENT);
	assert_string_equal(code, "http_400");
	assert_string_equal(text, "HTTP 400");
	pl_arena_fini(&a);
}

static void
test_status_order(void **state)
{
	(void)state;
	assert_true(messaging_status_advances(2, 3));
	assert_true(messaging_status_advances(3, 5));
	assert_false(messaging_status_advances(5, 4)); // late delivered
	assert_true(messaging_status_advances(5, 6));
	assert_false(messaging_status_advances(7, 5)); // failed is terminal
	assert_true(messaging_status_advances(3, 7));
	assert_false(messaging_status_advances(5, 7));
	assert_false(messaging_status_advances(3, 1));
}

static void
test_backoff(void **state)
{
	(void)state;
	for (int i = 0; i < 100; i++) {
		int64_t d1 = messaging_backoff_ms(1, 100, 1000, -1);
		int64_t d5 = messaging_backoff_ms(5, 100, 1000, -1);
		int64_t d20 = messaging_backoff_ms(20, 100, 1000, -1);
		assert_true(d1 >= 50 && d1 <= 100);
		assert_true(d5 >= 500 && d5 <= 1000);
		assert_true(d20 >= 500 && d20 <= 1000);
		assert_true(messaging_backoff_ms(1, 100, 1000, 3000) == 3000);
	}
}

// Infobip's BASIC webhook credentials against a channel's app_secret.
static void
test_basic_auth(void **state)
{
	char big[1200];

	(void)state;
	// base64("user:pass")
	assert_true(messaging_basic_auth_ok("Basic dXNlcjpwYXNz", "user:pass"));
	assert_true(
	        messaging_basic_auth_ok("basic   dXNlcjpwYXNz  ", "user:pass"));
	assert_false(messaging_basic_auth_ok("Basic dXNlcjpwYXNz", "user:pas"));
	assert_false(
	        messaging_basic_auth_ok("Basic dXNlcjpwYXNz", "user:pass "));
	assert_false(
	        messaging_basic_auth_ok("Bearer dXNlcjpwYXNz", "user:pass"));
	assert_false(messaging_basic_auth_ok("dXNlcjpwYXNz", "user:pass"));
	assert_false(messaging_basic_auth_ok("Basic ", "user:pass"));
	assert_false(messaging_basic_auth_ok("Basic !!!!", "user:pass"));
	assert_false(messaging_basic_auth_ok(NULL, "user:pass"));
	assert_false(messaging_basic_auth_ok("Basic dXNlcjpwYXNz", ""));
	assert_false(messaging_basic_auth_ok("Basic dXNlcjpwYXNz", NULL));
	// Longer than any credentials it keeps: refused, not cut.
	memcpy(big, "Basic ", 6);
	memset(big + 6, 'A', sizeof(big) - 7);
	big[sizeof(big) - 1] = '\0';
	assert_false(messaging_basic_auth_ok(big, "user:pass"));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_table),
		cmocka_unit_test(test_phone),
		cmocka_unit_test(test_signature),
		cmocka_unit_test(test_basic_auth),
		cmocka_unit_test(test_parse),
		cmocka_unit_test(test_send),
		cmocka_unit_test(test_fit_text),
		cmocka_unit_test(test_status_order),
		cmocka_unit_test(test_backoff),
	};
	if (sodium_init() < 0)
		return 1;
	return cmocka_run_group_tests(tests, NULL, NULL);
}
