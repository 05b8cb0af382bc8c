// libFuzzer target for what WhatsApp Cloud and Infobip send us
// (services/messaging/webhook.c, provider.c): webhook bodies and the answers
// to our sends. The first byte picks the channel type and, for answers, the
// HTTP status; the rest is the body.
//
// Beyond "no crash, no leak", every item the parser keeps must be one the
// database takes as it is: ids and senders present, statuses in range, text
// valid UTF-8 (no NUL inside), metadata that is JSON, and times that
// PostgreSQL reads as timestamptz (a bad field must not fail its whole body
// in SQL: see test_bad_provider_times). A send's answer is either a
// provider id, or an error code and text. A text cut to a provider's limit
// (messaging_fit_text) fits it, is a prefix of the text and a whole
// number of characters.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "messaging.h"
#include "pl/log.h"
#include "pl/utf8.h"
#include "fake_provider.h"
#include "fuzz_check.h"

#define ARENA_LIMIT (8u << 20)

static int
num(const char *s, int n)
{
	int v = 0;
	for (int i = 0; i < n; i++) {
		need(s[i] >= '0' && s[i] <= '9', "time digit");
		v = v * 10 + (s[i] - '0');
	}
	return v;
}

// "YYYY-MM-DDTHH:MM:SS[.f{1,9}](Z|+HH:MM|-HH:MM)", years 1970..9999, a
// real day of the month: what the adapters promise to hand to SQL.
static void
time_ok(const char *s, const char *what)
{
	static const int mdays[12] = { 31, 29, 31, 30, 31, 30,
		                       31, 31, 30, 31, 30, 31 };
	size_t n, i = 19;
	int y, mo, d;

	if (s == NULL)
		return;
	n = strlen(s);
	need(n >= 20 && s[4] == '-' && s[7] == '-' && s[10] == 'T' &&
	             s[13] == ':' && s[16] == ':',
	     what);
	y = num(s, 4);
	mo = num(s + 5, 2);
	d = num(s + 8, 2);
	need(y >= 1970 && y <= 9999 && mo >= 1 && mo <= 12 && d >= 1 &&
	             d <= mdays[mo - 1],
	     what);
	need(mo != 2 || d < 29 ||
	             (y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)),
	     what);
	need(num(s + 11, 2) <= 23 && num(s + 14, 2) <= 59 &&
	             num(s + 17, 2) <= 59,
	     what);
	if (s[i] == '.') {
		size_t f = ++i;
		while (s[i] >= '0' && s[i] <= '9')
			i++;
		need(i > f && i - f <= 9, what);
	}
	if (strcmp(s + i, "Z") == 0)
		return;
	need(n - i == 6 && (s[i] == '+' || s[i] == '-') && s[i + 3] == ':',
	     what);
	need(num(s + i + 1, 2) <= 14 && num(s + i + 4, 2) <= 59, what);
}

// An id, sender or user id: 1..MSG_MAX_ID bytes of UTF-8 (or, when
// optional, none at all).
static void
id_ok(const char *s, bool optional, const char *what)
{
	if (s == NULL) {
		need(optional, what);
		return;
	}
	need(s[0] != '\0' && strlen(s) <= MSG_MAX_ID, what);
	text_ok(s, what);
}

static void
webhook(int type, const uint8_t *body, size_t len)
{
	char err[256] = "";
	msg_items items;
	pl_arena a;
	int rv;

	pl_arena_init(&a, 0, ARENA_LIMIT);
	rv = messaging_parse_webhook(type, body, len, &a, &items, err,
	                             sizeof(err));
	need(rv == PL_OK || rv == PL_INVALID_ARGUMENT ||
	             rv == PL_RESOURCE_EXHAUSTED,
	     "parse status");
	if (rv != PL_OK) {
		need(rv == PL_RESOURCE_EXHAUSTED || err[0] != '\0',
		     "a refusal says why");
		pl_arena_fini(&a);
		return;
	}
	for (size_t i = 0; i < items.n; i++) {
		const msg_item *it = &items.v[i];
		id_ok(it->provider_message_id, false,
		      "an item has a provider id of 1..MSG_MAX_ID bytes");
		text_ok(it->routing_key, "routing key is UTF-8");
		text_ok(it->error_code, "error code is UTF-8");
		text_ok(it->error_text, "error text is UTF-8");
		json_ok(it->metadata_json, "metadata is JSON");
		if (it->kind == MSG_ITEM_STATUS) {
			need(it->status >= 3 && it->status <= 7,
			     "a status item's status is sent..failed");
			time_ok(it->at, "status time");
			continue;
		}
		need(it->kind == MSG_ITEM_MESSAGE, "item kind");
		id_ok(it->external_id, false,
		      "a message has a sender of 1..MSG_MAX_ID bytes");
		id_ok(it->business_user_id, true,
		      "a business-scoped id is 1..MSG_MAX_ID bytes or none");
		id_ok(it->parent_user_id, true,
		      "a parent user id is 1..MSG_MAX_ID bytes or none");
		need(it->external_id_kind >= 1 && it->external_id_kind <= 2,
		     "sender kind");
		need(it->type >= 1 && it->type <= 11, "message type");
		text_ok(it->contact_name, "name is UTF-8");
		text_ok(it->text, "text is UTF-8");
		text_ok(it->media_url, "media URL is UTF-8");
		text_ok(it->media_mime_type, "MIME type is UTF-8");
		json_ok(it->profile_json, "profile is JSON");
		time_ok(it->provider_created_at, "provider time");
	}
	pl_arena_fini(&a);
}

static void
answer(int type, long http, const uint8_t *body, size_t len)
{
	char *text = malloc(len + 1);
	const char *id, *code, *msg;
	msg_send_verdict v;
	pl_arena a;

	need(text != NULL, "memory");
	memcpy(text, body, len);
	text[len] = '\0';
	pl_arena_init(&a, 0, ARENA_LIMIT);
	v = messaging_classify_send(type, http, text, &a, &id, &code, &msg);
	if (v == MSG_SEND_OK) {
		need(http >= 200 && http < 300, "sent only on 2xx");
		need(id != NULL && id[0] != '\0', "a send has an id");
		text_ok(id, "provider id is UTF-8");
	} else {
		need(v == MSG_SEND_RETRY || v == MSG_SEND_PERMANENT, "verdict");
		need(code != NULL && code[0] != '\0' && msg != NULL,
		     "a failure has a code and a text");
		need(http != 0 && http != 429 && http < 500
		             ? true
		             : v == MSG_SEND_RETRY,
		     "no answer, 429 and 5xx are retried");
		text_ok(code, "error code is UTF-8");
		text_ok(msg, "error text is UTF-8");
	}
	pl_arena_fini(&a);
	free(text);
}

static void
fit(const uint8_t *body, size_t len)
{
	static const char ell[] = "\u2026";
	size_t max = len > 0 ? 2 + body[0] % 64 : 2, n, m;
	char *text = malloc(len + 1);
	const char *r;
	pl_arena a;

	need(text != NULL, "memory");
	if (len > 0) {
		memcpy(text, body + 1, len - 1);
		text[len - 1] = '\0';
	} else {
		text[0] = '\0';
	}
	n = strlen(text);
	pl_arena_init(&a, 0, ARENA_LIMIT);
	r = messaging_fit_text(text, max, &a);
	need(r != NULL, "a text comes back");
	m = strlen(r);
	if (r != text && pl_utf8_valid(text, n)) {
		need(fake_provider_text_units(r, m) <= max, "a cut text fits");
		need(m >= sizeof(ell) - 1 &&
		             strcmp(r + m - (sizeof(ell) - 1), ell) == 0,
		     "a cut text ends with an ellipsis");
		need(strncmp(r, text, m - (sizeof(ell) - 1)) == 0,
		     "a cut text is a prefix of the text");
		text_ok(r, "a cut text is whole characters");
	} else if (r == text) {
		need(!pl_utf8_valid(text, n) ||
		             fake_provider_text_units(text, n) <= max,
		     "a text left whole fits");
	}
	pl_arena_fini(&a);
	free(text);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const long statuses[8] = {
		0, 200, 201, 400, 401, 429, 500, 503
	};
	int type;

	static bool logging;

	if (!logging) {
		pl_log_init("fuzz", PL_LOG_ERROR);
		logging = true;
	}
	if (size == 0)
		return 0;
	// Bit 0: WhatsApp Cloud (1) or Infobip (2); bit 1: a webhook body or
	// a send's answer; bits 2..4: the answer's HTTP status; bit 5: a text
	// to cut to a limit instead (the next byte sets the limit).
	type = (data[0] & 1) ? 2 : 1;
	if (data[0] & 0x20)
		fit(data + 1, size - 1);
	else if (data[0] & 2)
		answer(type, statuses[(data[0] >> 2) & 7], data + 1, size - 1);
	else
		webhook(type, data + 1, size - 1);
	return 0;
}
