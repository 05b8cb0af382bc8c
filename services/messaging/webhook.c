// Provider adapters: WhatsApp Cloud's signed bodies (entry[].changes[].value
// with messages[] and statuses[]) and Infobip's results[] batches, turned
// into normalized items. No I/O here.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <jansson.h>
#include <sodium.h>

#include "messaging.h"

const char *const msg_status_names[8] = { "",       "received",  "queued",
	                                  "sent",   "delivered", "read",
	                                  "played", "failed" };
const char *const msg_type_names[12] = {
	"",         "text",     "image",    "audio",
	"video",    "document", "location", "interactive",
	"template", "reaction", "sticker",  "unsupported",
};
const char *const msg_direction_names[3] = { "", "inbound", "outbound" };
const char *const msg_sender_names[5] = { "", "contact", "bot", "human",
	                                  "system" };
const char *const conv_status_names[4] = { "", "open", "pending", "closed" };
const char *const conv_owner_names[3] = { "", "bot", "human" };
const char *const conv_stage_names[7] = { "",          "new",      "engaged",
	                                  "qualified", "proposal", "won",
	                                  "lost" };
const char *const intent_level_names[4] = { "", "low", "medium", "high" };
const char *const sentiment_names[4] = { "", "negative", "neutral",
	                                 "positive" };
const char *const ext_kind_names[4] = { "", "phone", "business_user_id",
	                                "webchat_session" };

int
msg_enum_from_name(const char *const *names, int n, const char *name)
{
	if (name == NULL)
		return 0;
	for (int i = 1; i < n; i++)
		if (strcmp(names[i], name) == 0)
			return i;
	return 0;
}

bool
messaging_status_advances(int cur, int next)
{
	if (next <= PARLEY__MESSAGING__V1__MESSAGE_STATUS__MESSAGE_STATUS_RECEIVED ||
	    next > PARLEY__MESSAGING__V1__MESSAGE_STATUS__MESSAGE_STATUS_FAILED)
		return false;
	if (cur == PARLEY__MESSAGING__V1__MESSAGE_STATUS__MESSAGE_STATUS_FAILED)
		return false;
	// A failure after the message reached the phone is not believable.
	if (next ==
	    PARLEY__MESSAGING__V1__MESSAGE_STATUS__MESSAGE_STATUS_FAILED)
		return cur <
		       PARLEY__MESSAGING__V1__MESSAGE_STATUS__MESSAGE_STATUS_DELIVERED;
	return next > cur;
}

bool
messaging_wa_signature_ok(const char *header, const char *secret,
                          const uint8_t *body, size_t len)
{
	unsigned char want[crypto_auth_hmacsha256_BYTES];
	unsigned char got[crypto_auth_hmacsha256_BYTES];
	crypto_auth_hmacsha256_state st;
	size_t bin_len = 0;

	if (header == NULL || secret == NULL || secret[0] == '\0')
		return false;
	if (strncmp(header, "sha256=", 7) != 0)
		return false;
	header += 7;
	if (strlen(header) != 2 * sizeof(got))
		return false;
	if (sodium_hex2bin(got, sizeof(got), header, strlen(header), NULL,
	                   &bin_len, NULL) != 0 ||
	    bin_len != sizeof(got))
		return false;
	crypto_auth_hmacsha256_init(&st, (const unsigned char *)secret,
	                            strlen(secret));
	crypto_auth_hmacsha256_update(&st, body, len);
	crypto_auth_hmacsha256_final(&st, want);
	return sodium_memcmp(want, got, sizeof(want)) == 0;
}

bool
messaging_basic_auth_ok(const char *header, const char *secret)
{
	unsigned char got[MSG_BASIC_MAX], hg[crypto_hash_sha256_BYTES],
	        hw[crypto_hash_sha256_BYTES];
	size_t n = 0, len;

	if (header == NULL || secret == NULL || secret[0] == '\0')
		return false;
	if (strncasecmp(header, "Basic ", 6) != 0)
		return false;
	header += 6;
	while (*header == ' ')
		header++;
	len = strlen(header);
	while (len > 0 && header[len - 1] == ' ')
		len--;
	if (len == 0 || len > 4 * ((sizeof(got) + 2) / 3))
		return false;
	if (sodium_base642bin(got, sizeof(got), header, len, NULL, &n, NULL,
	                      sodium_base64_VARIANT_ORIGINAL) != 0)
		return false;
	// Digests compared, so that neither length nor content shows in
	// the time taken.
	crypto_hash_sha256(hg, got, n);
	crypto_hash_sha256(hw, (const unsigned char *)secret, strlen(secret));
	sodium_memzero(got, sizeof(got));
	return sodium_memcmp(hg, hw, sizeof(hg)) == 0;
}

static const char *
str(json_t *o, const char *k, pl_arena *a)
{
	json_t *v = json_object_get(o, k);

	if (json_is_string(v))
		return pl_arena_strdup(a, json_string_value(v));
	if (json_is_integer(v))
		return pl_arena_printf(a, "%lld",
		                       (long long)json_integer_value(v));
	return NULL;
}

static char *
dump(json_t *o, pl_arena *a)
{
	char *s = json_dumps(o, JSON_COMPACT);
	char *r;

	if (s == NULL)
		return NULL;
	r = pl_arena_strdup(a, s);
	free(s);
	return r;
}

// The last second PostgreSQL's timestamptz and our RFC 3339 texts share:
// 9999-12-31T23:59:59Z.
#define MAX_UNIX 253402300799LL

// Unix seconds (as text) -> RFC 3339; NULL when it is not a time of the
// years 1970..9999 (the item then takes the time it arrived: one bad field
// must not fail the whole body).
static const char *
unix_ts(const char *s, pl_arena *a)
{
	char *end;
	long long v;
	time_t t;
	struct tm tm;
	char buf[40];

	if (s == NULL || *s == '\0')
		return NULL;
	v = strtoll(s, &end, 10);
	if (*end != '\0' || v <= 0 || v > MAX_UNIX)
		return NULL;
	t = (time_t)v;
	if (gmtime_r(&t, &tm) == NULL ||
	    strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S.000Z", &tm) == 0)
		return NULL;
	return pl_arena_strdup(a, buf);
}

static int
days_in(int y, int m)
{
	static const int d[12] = { 31, 28, 31, 30, 31, 30,
		                   31, 31, 30, 31, 30, 31 };
	bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
	return m == 2 && leap ? 29 : d[m - 1];
}

// The n decimal digits at s as a number; -1 when one is not a digit.
static int
digits(const char *s, int n)
{
	int v = 0;
	for (int i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	return v;
}

// An ISO 8601 time as providers write it ("2019-07-19T11:23:26.998+0000",
// "...Z", "...+00:00", no zone: UTC) -> RFC 3339 ("...+00:00"); NULL when
// it is not a real time of the years 1970..9999, so that the item takes
// the time it arrived instead of failing its whole body in SQL.
static const char *
iso_ts(const char *s, pl_arena *a)
{
	int y, mo, d, h, mi, se, oh = 0, om = 0;
	size_t i = 19, f, n;
	const char *o;

	if (s == NULL || strlen(s) < 19 || s[4] != '-' || s[7] != '-' ||
	    (s[10] != 'T' && s[10] != ' ') || s[13] != ':' || s[16] != ':')
		return NULL;
	y = digits(s, 4);
	mo = digits(s + 5, 2);
	d = digits(s + 8, 2);
	h = digits(s + 11, 2);
	mi = digits(s + 14, 2);
	se = digits(s + 17, 2);
	if (y < 1970 || mo < 1 || mo > 12 || d < 1 || d > days_in(y, mo) ||
	    h < 0 || h > 23 || mi < 0 || mi > 59 || se < 0 || se > 59)
		return NULL;
	if (s[i] == '.') {
		for (f = ++i; s[i] >= '0' && s[i] <= '9'; i++)
			;
		if (i == f || i - f > 9)
			return NULL;
	}
	o = s + i;
	n = strlen(o);
	if (n == 0 || (n == 1 && o[0] == 'Z'))
		return pl_arena_printf(a, "%.10sT%.*sZ", s, (int)(i - 11),
		                       s + 11);
	if (o[0] != '+' && o[0] != '-')
		return NULL;
	if (n == 5) {
		oh = digits(o + 1, 2);
		om = digits(o + 3, 2);
	} else if (n == 6 && o[3] == ':') {
		oh = digits(o + 1, 2);
		om = digits(o + 4, 2);
	} else {
		return NULL;
	}
	if (oh < 0 || oh > 14 || om < 0 || om > 59)
		return NULL;
	return pl_arena_printf(a, "%.10sT%.*s%c%02d:%02d", s, (int)(i - 11),
	                       s + 11, o[0], oh, om);
}

// An id or sender worth storing: present, not empty, and no longer than
// MSG_MAX_ID (they are keys of unique indexes: an absurd one would fail
// its body in SQL).
static bool
given(const char *s)
{
	return s != NULL && s[0] != '\0' && strlen(s) <= MSG_MAX_ID;
}

static int
push(msg_items *out, size_t *cap, pl_arena *a, msg_item **it)
{
	if (out->n == *cap) {
		size_t nc = *cap ? *cap * 2 : 8;
		msg_item *v = pl_arena_zalloc(a, nc * sizeof(*v));
		if (v == NULL)
			return PL_RESOURCE_EXHAUSTED;
		if (out->n)
			memcpy(v, out->v, out->n * sizeof(*v));
		out->v = v;
		*cap = nc;
	}
	*it = &out->v[out->n++];
	memset(*it, 0, sizeof(**it));
	return PL_OK;
}

static int
wa_type(const char *t)
{
	static const struct {
		const char *n;
		int v;
	} m[] = {
		{ "text", 1 },     { "image", 2 },       { "audio", 3 },
		{ "voice", 3 },    { "video", 4 },       { "document", 5 },
		{ "location", 6 }, { "interactive", 7 }, { "button", 7 },
		{ "template", 8 }, { "reaction", 9 },    { "sticker", 10 },
	};
	for (size_t i = 0; t != NULL && i < sizeof(m) / sizeof(m[0]); i++)
		if (strcmp(m[i].n, t) == 0)
			return m[i].v;
	return PARLEY__MESSAGING__V1__MESSAGE_TYPE__MESSAGE_TYPE_UNSUPPORTED;
}

static int
wa_message(json_t *m, json_t *contacts, const char *routing, pl_arena *a,
           msg_items *out, size_t *cap)
{
	msg_item *it;
	const char *from = str(m, "from", a);
	const char *from_uid = str(m, "from_user_id", a);
	const char *type = str(m, "type", a);
	json_t *c = NULL, *body;
	size_t i;
	int rv;

	if ((rv = push(out, cap, a, &it)) != PL_OK)
		return rv;
	it->kind = MSG_ITEM_MESSAGE;
	it->routing_key = routing;
	it->provider_message_id = str(m, "id", a);
	// The contact entry that matches the sender, else the only one.
	json_array_foreach(contacts, i, body)
	{
		const char *w = str(body, "wa_id", a);
		const char *u = str(body, "user_id", a);
		if ((from && w && strcmp(w, from) == 0) ||
		    (from_uid && u && strcmp(u, from_uid) == 0)) {
			c = body;
			break;
		}
	}
	if (c == NULL && json_array_size(contacts) == 1)
		c = json_array_get(contacts, 0);
	if (c != NULL) {
		it->business_user_id = str(c, "user_id", a);
		it->parent_user_id = str(c, "parent_user_id", a);
		if (json_is_object(json_object_get(c, "profile"))) {
			it->contact_name =
			        str(json_object_get(c, "profile"), "name", a);
			it->profile_json =
			        dump(json_object_get(c, "profile"), a);
		}
		if (from == NULL)
			from = str(c, "wa_id", a);
	}
	if (!given(it->business_user_id))
		it->business_user_id = given(from_uid) ? from_uid : NULL;
	if (!given(it->parent_user_id))
		it->parent_user_id = NULL;
	if (given(from)) {
		it->external_id = from;
		it->external_id_kind =
		        PARLEY__MESSAGING__V1__EXTERNAL_ID_KIND__EXTERNAL_ID_KIND_PHONE;
		it->phone_raw = from;
	} else if (given(it->business_user_id)) {
		it->external_id = it->business_user_id;
		it->external_id_kind =
		        PARLEY__MESSAGING__V1__EXTERNAL_ID_KIND__EXTERNAL_ID_KIND_BUSINESS_USER_ID;
	}
	it->type = wa_type(type);
	it->provider_created_at = unix_ts(str(m, "timestamp", a), a);
	body = type ? json_object_get(m, type) : NULL;
	if (it->type == PARLEY__MESSAGING__V1__MESSAGE_TYPE__MESSAGE_TYPE_TEXT)
		it->text = str(body, "body", a);
	else if (json_is_object(body)) {
		it->text = str(body, "caption", a);
		it->media_url = str(body, "link", a);
		it->media_mime_type = str(body, "mime_type", a);
		if (it->type == 7 &&
		    json_is_object(json_object_get(body, "button_reply")))
			it->text = str(json_object_get(body, "button_reply"),
			               "title", a);
		if (it->type == 7 && json_object_get(body, "text") != NULL)
			it->text = str(body, "text", a);
		if (it->type == 9)
			it->text = str(body, "emoji", a);
	}
	it->metadata_json = dump(m, a);
	if (!given(it->provider_message_id) || !given(it->external_id)) {
		out->n--; // no id or no sender: nothing to store
		return PL_OK;
	}
	return PL_OK;
}

static int
wa_status_code(const char *s)
{
	int v = msg_enum_from_name(msg_status_names, 8, s);
	return v >= 3 ? v : 0;
}

static int
wa_status(json_t *s, const char *routing, pl_arena *a, msg_items *out,
          size_t *cap)
{
	msg_item *it;
	json_t *e;
	int rv;

	if ((rv = push(out, cap, a, &it)) != PL_OK)
		return rv;
	it->kind = MSG_ITEM_STATUS;
	it->routing_key = routing;
	it->provider_message_id = str(s, "id", a);
	it->status = wa_status_code(str(s, "status", a));
	it->at = unix_ts(str(s, "timestamp", a), a);
	e = json_array_get(json_object_get(s, "errors"), 0);
	if (json_is_object(e)) {
		const char *d =
		        str(json_object_get(e, "error_data"), "details", a);
		it->error_code = str(e, "code", a);
		it->error_text = d ? d : str(e, "message", a);
		if (it->error_text == NULL)
			it->error_text = str(e, "title", a);
	}
	it->metadata_json = dump(s, a);
	if (!given(it->provider_message_id) || it->status == 0)
		out->n--;
	return PL_OK;
}

static int
parse_wa(json_t *root, pl_arena *a, msg_items *out, char *err, size_t errlen)
{
	json_t *entries = json_object_get(root, "entry"), *e, *ch;
	size_t i, j, k, cap = 0;
	int rv;

	if (!json_is_array(entries)) {
		snprintf(err, errlen, "body has no \"entry\" array");
		return PL_INVALID_ARGUMENT;
	}
	json_array_foreach(entries, i, e)
	{
		json_t *changes = json_object_get(e, "changes");
		json_array_foreach(changes, j, ch)
		{
			json_t *v = json_object_get(ch, "value"), *x;
			json_t *contacts = json_object_get(v, "contacts");
			const char *routing =
			        str(json_object_get(v, "metadata"),
			            "phone_number_id", a);
			if (!json_is_object(v))
				continue;
			json_array_foreach(json_object_get(v, "messages"), k, x)
			{
				if ((rv = wa_message(x, contacts, routing, a,
				                     out, &cap)) != PL_OK)
					return rv;
			}
			json_array_foreach(json_object_get(v, "statuses"), k, x)
			{
				if ((rv = wa_status(x, routing, a, out,
				                    &cap)) != PL_OK)
					return rv;
			}
		}
	}
	return PL_OK;
}

static int
ib_type(const char *t)
{
	static const char *const n[] = { "",         "TEXT",       "IMAGE",
		                         "AUDIO",    "VIDEO",      "DOCUMENT",
		                         "LOCATION", "INTERACTIVE" };
	for (int i = 1; t != NULL && i < 8; i++)
		if (strcmp(n[i], t) == 0)
			return i;
	if (t != NULL && strncmp(t, "INTERACTIVE", 11) == 0)
		return 7;
	if (t != NULL && strcmp(t, "STICKER") == 0)
		return 10;
	return PARLEY__MESSAGING__V1__MESSAGE_TYPE__MESSAGE_TYPE_UNSUPPORTED;
}

static int
parse_ib(json_t *root, pl_arena *a, msg_items *out, char *err, size_t errlen)
{
	json_t *results = json_object_get(root, "results"), *r;
	size_t i, cap = 0;
	int rv;

	if (!json_is_array(results)) {
		snprintf(err, errlen, "body has no \"results\" array");
		return PL_INVALID_ARGUMENT;
	}
	json_array_foreach(results, i, r)
	{
		msg_item *it;
		json_t *st = json_object_get(r, "status");
		if (!json_is_object(r))
			continue;
		if ((rv = push(out, &cap, a, &it)) != PL_OK)
			return rv;
		it->provider_message_id = str(r, "messageId", a);
		it->metadata_json = dump(r, a);
		if (json_is_object(st) || json_object_get(r, "seenAt")) {
			// A delivery report or a seen report.
			const char *g = str(st, "groupName", a);
			it->kind = MSG_ITEM_STATUS;
			it->routing_key = str(r, "from", a);
			if (json_object_get(r, "seenAt")) {
				it->status = 5;
				it->at = iso_ts(str(r, "seenAt", a), a);
			} else {
				it->at = iso_ts(str(r, "doneAt", a), a);
				if (g && strcmp(g, "DELIVERED") == 0)
					it->status = 4;
				else if (g && strcmp(g, "PENDING") == 0)
					it->status = 3;
				else if (g &&
				         (strcmp(g, "UNDELIVERABLE") == 0 ||
				          strcmp(g, "REJECTED") == 0 ||
				          strcmp(g, "EXPIRED") == 0)) {
					json_t *e = json_object_get(r, "error");
					it->status = 7;
					it->error_code = str(e, "id", a);
					it->error_text =
					        str(e, "description", a);
					if (it->error_text == NULL)
						it->error_text = str(
						        st, "description", a);
				}
			}
			if (!given(it->provider_message_id) || it->status == 0)
				out->n--;
			continue;
		}
		it->kind = MSG_ITEM_MESSAGE;
		it->routing_key = str(r, "to", a);
		it->external_id = str(r, "from", a);
		it->external_id_kind =
		        PARLEY__MESSAGING__V1__EXTERNAL_ID_KIND__EXTERNAL_ID_KIND_PHONE;
		it->phone_raw = it->external_id;
		it->contact_name =
		        str(json_object_get(r, "contact"), "name", a);
		it->provider_created_at = iso_ts(str(r, "receivedAt", a), a);
		{
			json_t *m = json_object_get(r, "message");
			it->type = ib_type(str(m, "type", a));
			it->text = str(m, "text", a);
			if (it->text == NULL)
				it->text = str(m, "caption", a);
			it->media_url = str(m, "url", a);
		}
		if (!given(it->provider_message_id) || !given(it->external_id))
			out->n--;
	}
	return PL_OK;
}

int
messaging_parse_webhook(int channel_type, const uint8_t *body, size_t len,
                        pl_arena *a, msg_items *out, char *err, size_t errlen)
{
	json_error_t je;
	json_t *root;
	int rv;

	out->v = NULL;
	out->n = 0;
	if (len == 0) {
		snprintf(err, errlen, "body is empty");
		return PL_INVALID_ARGUMENT;
	}
	root = json_loadb((const char *)body, len, JSON_REJECT_DUPLICATES, &je);
	if (root == NULL) {
		snprintf(err, errlen, "body is not JSON: %s at %d:%d", je.text,
		         je.line, je.column);
		return PL_INVALID_ARGUMENT;
	}
	if (!json_is_object(root)) {
		snprintf(err, errlen, "body is not a JSON object");
		rv = PL_INVALID_ARGUMENT;
	} else if (
	        channel_type ==
	        PARLEY__TENANTS__V1__CHANNEL_TYPE__CHANNEL_TYPE_WHATSAPP_CLOUD) {
		rv = parse_wa(root, a, out, err, errlen);
	} else if (channel_type ==
	           PARLEY__TENANTS__V1__CHANNEL_TYPE__CHANNEL_TYPE_INFOBIP) {
		rv = parse_ib(root, a, out, err, errlen);
	} else {
		snprintf(err, errlen, "channel type %d takes no webhooks",
		         channel_type);
		rv = PL_INVALID_ARGUMENT;
	}
	json_decref(root);
	return rv;
}
