// Outbound requests to the providers and the reading of their answers:
// WhatsApp Cloud (DESIGN §9) and Infobip's WhatsApp text API. No I/O here.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <sodium.h>

#include "messaging.h"
#include "pl/utf8.h"

static char *
dump_free(json_t *o, pl_arena *a)
{
	char *s = json_dumps(o, JSON_COMPACT);
	char *r = s ? pl_arena_strdup(a, s) : NULL;

	free(s);
	json_decref(o);
	return r;
}

// How many UTF-16 code units the character at s (n bytes left) counts, its
// length in bytes in *k: WhatsApp's limits are in characters, and one past
// U+FFFF counts two in the stricter reading. A byte that is not UTF-8
// counts one.
static size_t
units_of(const char *s, size_t n, size_t *k)
{
	*k = pl_utf8_seq(s, n);
	if (*k == 0)
		*k = 1;
	return *k == 4 ? 2 : 1;
}

// s cut to at most max characters (UTF-16 code units): a text body or a
// caption longer than the provider takes is refused whole (400), and the
// customer would get nothing. Cut at the last line's end in the last
// tenth if there is one, else at the last space there, else between
// characters, and ended with "…". The stored message keeps the whole
// text.
const char *
messaging_fit_text(const char *s, size_t max, pl_arena *a)
{
	size_t n = strlen(s), units = 0, i, k, cut, nl = 0, sp = 0;

	for (i = 0; i < n && units <= max; i += k)
		units += units_of(s + i, n - i, &k);
	if (units <= max)
		return s;
	// The longest prefix of max - 1 units leaves room for the "…".
	units = 0;
	for (i = 0; i < n; i += k) {
		size_t u = units_of(s + i, n - i, &k);
		if (units + u > max - 1)
			break;
		units += u;
		if (s[i] == '\n')
			nl = i;
		else if (s[i] == ' ')
			sp = i;
	}
	cut = i;
	if (nl > 0 && nl >= cut - cut / 10)
		cut = nl;
	else if (sp > 0 && sp >= cut - cut / 10)
		cut = sp;
	while (cut > 0 && (s[cut - 1] == ' ' || s[cut - 1] == '\n'))
		cut--;
	return pl_arena_printf(a, "%.*s\u2026", (int)cut, s);
}

static const char *
wa_media_key(int type)
{
	switch (type) {
	case 2:
		return "image";
	case 3:
		return "audio";
	case 4:
		return "video";
	case 5:
		return "document";
	case 10:
		return "sticker";
	default:
		return NULL;
	}
}

int
messaging_build_send(const msg_send *s, pl_arena *a, const char **url,
                     const char ***headers, char **body)
{
	const char **h = pl_arena_zalloc(a, 4 * sizeof(*h));
	const char *mk = wa_media_key(s->type);
	// A WhatsApp Cloud media message carries the text as its caption;
	// every other send as its text body. Either is cut to its limit.
	bool media =
	        s->channel_type ==
	                PARLEY__TENANTS__V1__CHANNEL_TYPE__CHANNEL_TYPE_WHATSAPP_CLOUD &&
	        mk != NULL && s->media_url && s->media_url[0];
	const char *text = messaging_fit_text(
	        s->text ? s->text : "",
	        media ? MSG_WA_MAX_CAPTION : MSG_WA_MAX_TEXT, a);
	json_t *o;
	const char *base = s->api_base_url ? s->api_base_url : "";
	size_t bl = strlen(base);

	if (h == NULL || text == NULL)
		return PL_RESOURCE_EXHAUSTED;
	while (bl > 0 && base[bl - 1] == '/')
		bl--;
	h[1] = "Content-Type: application/json";
	if (s->channel_type ==
	    PARLEY__TENANTS__V1__CHANNEL_TYPE__CHANNEL_TYPE_WHATSAPP_CLOUD) {
		*url = pl_arena_printf(a, "%.*s/%s/messages", (int)bl, base,
		                       s->phone_number_id);
		h[0] = pl_arena_printf(a, "Authorization: Bearer %s",
		                       s->access_token);
		o = json_pack("{s:s, s:s}", "messaging_product", "whatsapp",
		              "recipient_type", "individual");
		// A contact known only by its business-scoped user id is
		// addressed with "recipient" (Meta's BSUID rollout).
		json_object_set_new(
		        o,
		        s->to_kind == PARLEY__MESSAGING__V1__EXTERNAL_ID_KIND__EXTERNAL_ID_KIND_BUSINESS_USER_ID
		                ? "recipient"
		                : "to",
		        json_string(s->to));
		if (media) {
			json_t *m = json_pack("{s:s}", "link", s->media_url);
			if (s->text && s->text[0] && s->type != 3 &&
			    s->type != 10)
				json_object_set_new(m, "caption",
				                    json_string(text));
			json_object_set_new(o, "type", json_string(mk));
			json_object_set_new(o, mk, m);
		} else {
			json_object_set_new(o, "type", json_string("text"));
			json_object_set_new(o, "text",
			                    json_pack("{s:s}", "body", text));
		}
	} else if (s->channel_type ==
	           PARLEY__TENANTS__V1__CHANNEL_TYPE__CHANNEL_TYPE_INFOBIP) {
		*url = pl_arena_printf(a, "%.*s/whatsapp/1/message/text",
		                       (int)bl, base);
		h[0] = pl_arena_printf(a, "Authorization: App %s",
		                       s->access_token);
		o = json_pack("{s:s, s:s, s:{s:s}}", "from",
		              s->sender_number ? s->sender_number : "", "to",
		              s->to, "content", "text", text);
	} else {
		return PL_INVALID_ARGUMENT;
	}
	if (o == NULL)
		return PL_INVALID_ARGUMENT;
	*headers = h;
	*body = dump_free(o, a);
	return *body ? PL_OK : PL_RESOURCE_EXHAUSTED;
}

static const char *
jstr(json_t *o, const char *k, pl_arena *a)
{
	json_t *v = json_object_get(o, k);

	if (json_is_string(v))
		return pl_arena_strdup(a, json_string_value(v));
	if (json_is_integer(v))
		return pl_arena_printf(a, "%lld",
		                       (long long)json_integer_value(v));
	return NULL;
}

msg_send_verdict
messaging_classify_send(int channel_type, long http, const char *body,
                        pl_arena *a, const char **provider_id,
                        const char **err_code, const char **err_text)
{
	json_t *root = body ? json_loads(body, 0, NULL) : NULL;
	msg_send_verdict v;
	bool wa =
	        channel_type ==
	        PARLEY__TENANTS__V1__CHANNEL_TYPE__CHANNEL_TYPE_WHATSAPP_CLOUD;

	*provider_id = NULL;
	*err_code = NULL;
	*err_text = NULL;
	if (http >= 200 && http < 300) {
		if (wa)
			*provider_id = jstr(
			        json_array_get(
			                json_object_get(root, "messages"), 0),
			        "id", a);
		else {
			json_t *m = json_array_get(
			        json_object_get(root, "messages"), 0);
			*provider_id = jstr(m ? m : root, "messageId", a);
		}
		if (*provider_id == NULL || (*provider_id)[0] == '\0') {
			// Sent, but no id to follow: a provider bug; retrying
			// could send twice, so it is failed with a clear
			// reason.
			*err_code = "no_provider_id";
			*err_text = "the provider accepted the message without "
			            "an id";
			v = MSG_SEND_PERMANENT;
		} else {
			v = MSG_SEND_OK;
		}
		goto out;
	}
	if (wa) {
		json_t *e = json_object_get(root, "error");
		*err_code = jstr(e, "code", a);
		*err_text =
		        jstr(json_object_get(e, "error_data"), "details", a);
		if (*err_text == NULL)
			*err_text = jstr(e, "message", a);
	} else {
		json_t *e =
		        json_object_get(json_object_get(root, "requestError"),
		                        "serviceException");
		*err_code = jstr(e, "messageId", a);
		*err_text = jstr(e, "text", a);
	}
	// An empty code ("messageId": "") is none: the delivery's failure
	// must say something.
	if (*err_code == NULL || (*err_code)[0] == '\0')
		*err_code = pl_arena_printf(a, "http_%ld", http);
	if (*err_text == NULL)
		*err_text = http == 0 ? "no answer from the provider"
		                      : pl_arena_printf(a, "HTTP %ld", http);
	// Throughput limits (130429, pair rate 131056) are retried whatever
	// the HTTP status says.
	if (http == 0 || http == 429 || http >= 500 ||
	    strcmp(*err_code, "130429") == 0 ||
	    strcmp(*err_code, "131056") == 0)
		v = MSG_SEND_RETRY;
	else
		v = MSG_SEND_PERMANENT;
out:
	json_decref(root);
	return v;
}

int64_t
messaging_backoff_ms(int n, int64_t base, int64_t cap, int64_t retry_after_ms)
{
	int64_t ceil = base;
	int64_t d;

	for (int i = 1; i < n && ceil < cap; i++)
		ceil *= 2;
	if (ceil > cap)
		ceil = cap;
	// Full jitter over [ceil/2, ceil] keeps retries spread but not
	// immediate.
	d = ceil / 2 + (int64_t)randombytes_uniform((uint32_t)(ceil / 2 + 1));
	if (retry_after_ms > d)
		d = retry_after_ms;
	if (d > cap && retry_after_ms <= cap)
		d = cap;
	return d;
}
