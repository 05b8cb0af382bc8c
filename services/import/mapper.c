// Legacy rows -> Parley's shapes. Pure: no sockets, no SQL.
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <jansson.h>

#include "import.h"

// Enum values of parley.messaging.v1 (kept as numbers here so the mapper
// reads as the README's table).
enum { DIR_IN = 1, DIR_OUT = 2 };
enum { SND_CONTACT = 1, SND_BOT = 2, SND_SYSTEM = 4 };

void
import_problem(imp_source *src, const char *fmt, ...)
{
	va_list ap;
	char *s = NULL;

	if (src->n_problems == src->cap_problems) {
		size_t cap = src->cap_problems ? src->cap_problems * 2 : 16;
		char **v = realloc(src->problems, cap * sizeof(*v));
		if (v == NULL)
			return;
		src->problems = v;
		src->cap_problems = cap;
	}
	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) < 0)
		s = NULL;
	va_end(ap);
	if (s != NULL)
		src->problems[src->n_problems++] = s;
}

bool
import_phone_e164(const char *raw, char out[IMP_PHONE_MAX])
{
	char d[IMP_PHONE_MAX];
	size_t n = 0;
	const char *p = raw;

	out[0] = '\0';
	if (raw == NULL)
		return false;
	while (isspace((unsigned char)*p))
		p++;
	// Twilio-style "whatsapp:+..." and "tel:" URIs.
	if (strncasecmp(p, "whatsapp:", 9) == 0)
		p += 9;
	else if (strncasecmp(p, "tel:", 4) == 0)
		p += 4;
	while (isspace((unsigned char)*p))
		p++;
	if (*p == '+')
		p++;
	else if (p[0] == '0' && p[1] == '0')
		p += 2;
	for (; *p != '\0'; p++) {
		if (isdigit((unsigned char)*p)) {
			if (n >= 15)
				return false;
			d[n++] = *p;
		} else if (strchr(" -().\t/", *p) == NULL) {
			return false;
		}
	}
	if (n < 8 || d[0] == '0')
		return false;
	out[0] = '+';
	memcpy(out + 1, d, n);
	out[n + 1] = '\0';
	return true;
}

int
import_map_direction(const char *s)
{
	if (s != NULL && strcasecmp(s, "incoming") == 0)
		return DIR_IN;
	if (s != NULL && strcasecmp(s, "outgoing") == 0)
		return DIR_OUT;
	return 0;
}

int
import_map_msg_type(const char *s)
{
	static const char *const names[] = {
		"",         "text",     "image",    "audio",
		"video",    "document", "location", "interactive",
		"template", "reaction", "sticker",
	};
	if (s == NULL || s[0] == '\0')
		return 1;
	if (strcasecmp(s, "voice") == 0 || strcasecmp(s, "ptt") == 0)
		return 3;
	if (strcasecmp(s, "button") == 0 || strcasecmp(s, "list") == 0)
		return 7;
	for (int i = 1; i < (int)(sizeof(names) / sizeof(names[0])); i++)
		if (strcasecmp(s, names[i]) == 0)
			return i;
	return 11; // unsupported; the legacy type stays in the report
}

int
import_map_msg_status(const char *s, int direction)
{
	static const char *const names[] = { "",       "received",  "queued",
		                             "sent",   "delivered", "read",
		                             "played", "failed" };
	if (s != NULL) {
		for (int i = 1; i < 8; i++)
			if (strcasecmp(s, names[i]) == 0)
				return i;
		if (strcasecmp(s, "pending") == 0)
			return 2;
		if (strcasecmp(s, "error") == 0)
			return 7;
	}
	// Unknown or missing: what the message must have been.
	return direction == DIR_IN ? 1 : 3;
}

int
import_map_order_status(const char *s)
{
	static const char *const names[] = { "",          "pending",
		                             "confirmed", "shipped",
		                             "delivered", "cancelled" };
	if (s == NULL || s[0] == '\0')
		return 1;
	for (int i = 1; i < 6; i++)
		if (strcasecmp(s, names[i]) == 0)
			return i;
	if (strcasecmp(s, "canceled") == 0)
		return 5;
	if (strcasecmp(s, "completed") == 0)
		return 4;
	return 0;
}

bool
import_decimal_minor(const char *s, int exp, int64_t *out)
{
	int64_t v = 0;
	int frac = -1;

	if (s == NULL || *s == '\0' || exp < 0 || exp > 4)
		return false;
	for (; *s; s++) {
		if (*s == '.') {
			if (frac >= 0)
				return false;
			frac = 0;
			continue;
		}
		if (!isdigit((unsigned char)*s))
			return false;
		if (frac >= 0 && ++frac > exp) {
			// Digits past the currency's precision must be zero.
			if (*s != '0')
				return false;
			continue;
		}
		if (v > (INT64_MAX - 9) / 10)
			return false;
		v = v * 10 + (*s - '0');
	}
	for (int i = frac < 0 ? 0 : frac; i < exp; i++) {
		if (v > INT64_MAX / 10)
			return false;
		v *= 10;
	}
	*out = v;
	return true;
}

static int
currency_exp(const char *c)
{
	static const char *const zero[] = { "JPY", "KRW", "CLP", "VND", "PYG",
		                            "ISK", "UGX", "XAF", "XOF" };
	for (size_t i = 0; i < sizeof(zero) / sizeof(zero[0]); i++)
		if (strcmp(c, zero[i]) == 0)
			return 0;
	return 2;
}

// A JSON number or numeric string as decimal text.
static bool
num_text(json_t *v, char *buf, size_t len)
{
	if (json_is_integer(v))
		snprintf(buf, len, "%lld", (long long)json_integer_value(v));
	else if (json_is_real(v))
		// 15 significant digits give back the decimal that was written
		// for any price with at most 15 digits.
		snprintf(buf, len, "%.15g", json_real_value(v));
	else if (json_is_string(v))
		snprintf(buf, len, "%s", json_string_value(v));
	else
		return false;
	return strchr(buf, 'e') == NULL && strchr(buf, 'E') == NULL;
}

int
import_map_order(pl_arena *a, const char *details, imp_order *o, char *err,
                 size_t errlen)
{
	json_error_t je;
	json_t *j, *items, *cur, *addr;
	int exp;

	o->n_items = 0;
	o->items = NULL;
	o->total_minor = 0;
	snprintf(o->currency, sizeof(o->currency), "USD");
	o->address = pl_arena_strdup(a, "{}");
	if (details == NULL) {
		snprintf(err, errlen, "orders row id=%s: order_details is NULL",
		         o->id);
		return -1;
	}
	j = json_loads(details, JSON_DECODE_ANY, &je);
	if (j == NULL) {
		snprintf(err, errlen,
		         "orders row id=%s: column order_details is not valid "
		         "JSON (%s at line %d, column %d)",
		         o->id, je.text, je.line, je.column);
		return -1;
	}
	if (!json_is_object(j)) {
		snprintf(err, errlen,
		         "orders row id=%s: column order_details is not a JSON "
		         "object",
		         o->id);
		json_decref(j);
		return -1;
	}
	cur = json_object_get(j, "currency");
	if (json_is_string(cur)) {
		const char *c = json_string_value(cur);
		if (strlen(c) != 3 || !isupper((unsigned char)c[0]) ||
		    !isupper((unsigned char)c[1]) ||
		    !isupper((unsigned char)c[2])) {
			snprintf(err, errlen,
			         "orders row id=%s: order_details.currency "
			         "\"%s\" is not an ISO 4217 code",
			         o->id, c);
			json_decref(j);
			return -1;
		}
		snprintf(o->currency, sizeof(o->currency), "%s", c);
	}
	exp = currency_exp(o->currency);
	addr = json_object_get(j, "address");
	if (addr != NULL && !json_is_null(addr)) {
		json_t *w = json_is_object(addr)
		                    ? json_incref(addr)
		                    : json_pack("{s:O}", "text", addr);
		char *s = json_dumps(w, JSON_COMPACT);
		o->address = pl_arena_strdup(a, s);
		free(s);
		json_decref(w);
	}
	items = json_object_get(j, "items");
	if (items != NULL && !json_is_array(items)) {
		snprintf(
		        err, errlen,
		        "orders row id=%s: order_details.items is not an array",
		        o->id);
		json_decref(j);
		return -1;
	}
	o->items = pl_arena_zalloc(a, sizeof(imp_item) *
	                                      (json_array_size(items) + 1));
	for (size_t i = 0; i < json_array_size(items); i++) {
		json_t *it = json_array_get(items, i);
		json_t *qty = json_object_get(it, "qty");
		json_t *sku = json_object_get(it, "sku");
		json_t *name = json_object_get(it, "name");
		char buf[64];
		imp_item *x = &o->items[o->n_items];

		if (qty == NULL)
			qty = json_object_get(it, "quantity");
		if (!json_is_object(it) ||
		    !num_text(json_object_get(it, "unit_price"), buf,
		              sizeof(buf)) ||
		    !import_decimal_minor(buf, exp, &x->unit_minor)) {
			snprintf(err, errlen,
			         "orders row id=%s: order_details.items[%zu]."
			         "unit_price is not a price in %s",
			         o->id, i, o->currency);
			json_decref(j);
			return -1;
		}
		x->qty = qty == NULL ? 1 : json_integer_value(qty);
		if ((qty != NULL && !json_is_integer(qty)) || x->qty < 1) {
			snprintf(err, errlen,
			         "orders row id=%s: "
			         "order_details.items[%zu].qty "
			         "is not a positive integer",
			         o->id, i);
			json_decref(j);
			return -1;
		}
		x->sku = pl_arena_strdup(
		        a, json_is_string(sku) ? json_string_value(sku) : "");
		x->name = pl_arena_strdup(
		        a, json_is_string(name) && json_string_length(name) > 0
		                   ? json_string_value(name)
		                   : (x->sku[0] ? x->sku : "item"));
		o->total_minor += x->qty * x->unit_minor;
		o->n_items++;
	}
	json_decref(j);
	return 0;
}

int
import_map_template(pl_arena *a, const char *tmpl, imp_campaign *c, char *err,
                    size_t errlen)
{
	size_t len = tmpl ? strlen(tmpl) : 0, o = 0;
	char *body = pl_arena_alloc(a, len * 2 + 16);
	const char *p = tmpl;

	c->n_params = 0;
	if (tmpl == NULL || body == NULL) {
		snprintf(err, errlen,
		         "campaigns row id=%s: message_template is empty",
		         c->id);
		return -1;
	}
	while (*p) {
		const char *end;
		char word[64];
		size_t wl;
		int idx = -1;

		if (p[0] != '{' || p[1] != '{' ||
		    (end = strstr(p + 2, "}}")) == NULL) {
			body[o++] = *p++;
			continue;
		}
		{
			const char *w = p + 2;
			while (w < end && isspace((unsigned char)*w))
				w++;
			wl = (size_t)(end - w);
			while (wl > 0 && isspace((unsigned char)w[wl - 1]))
				wl--;
			if (wl == 0 || wl >= sizeof(word) - 16) {
				body[o++] = *p++;
				continue;
			}
			memcpy(word, w, wl);
			word[wl] = '\0';
		}
		for (int i = 0; i < c->n_params; i++) {
			const char *f = c->params[i].field;
			if (strcmp(f, word) == 0 ||
			    (strncmp(f, "custom_fields.", 14) == 0 &&
			     strcmp(f + 14, word) == 0))
				idx = i;
		}
		if (idx < 0) {
			if (c->n_params == 16) {
				snprintf(err, errlen,
				         "campaigns row id=%s: more than 16 "
				         "placeholders in message_template",
				         c->id);
				return -1;
			}
			idx = c->n_params++;
			if (strcmp(word, "name") == 0 ||
			    strcmp(word, "phone") == 0)
				snprintf(c->params[idx].field,
				         sizeof(c->params[idx].field), "%s",
				         word);
			else
				snprintf(c->params[idx].field,
				         sizeof(c->params[idx].field),
				         "custom_fields.%.40s", word);
		}
		o += (size_t)sprintf(body + o, "{{%d}}", idx + 1);
		p = end + 2;
	}
	body[o] = '\0';
	c->body = body;
	snprintf(c->tname, sizeof(c->tname), "legacy_campaign_%s", c->id);
	return 0;
}

static int64_t
parse_ts(const char *s)
{
	struct tm tm = { 0 };

	if (s == NULL ||
	    sscanf(s, "%d-%d-%dT%d:%d:%d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
	           &tm.tm_hour, &tm.tm_min, &tm.tm_sec) != 6)
		return 0;
	tm.tm_year -= 1900;
	tm.tm_mon -= 1;
	return (int64_t)timegm(&tm);
}

int
import_conv_status(const char *last_at, int64_t close_idle_days, int64_t now)
{
	if (close_idle_days <= 0)
		return 1; // open: the contact's next message continues it
	if (now - parse_ts(last_at) > close_idle_days * 86400)
		return 3;
	return 1;
}

// Legacy integer ids -> index, by binary search over rows sorted by id.
static long
idnum(const char *s)
{
	return s ? strtol(s, NULL, 10) : -1;
}

#define FIND(fn, type, arr, n)                                                 \
	static int fn(const imp_source *src, const char *id)                   \
	{                                                                      \
		long k = idnum(id);                                            \
		size_t lo = 0, hi = src->n;                                    \
		if (id == NULL)                                                \
			return -1;                                             \
		while (lo < hi) {                                              \
			size_t mid = (lo + hi) / 2;                            \
			long v = idnum(src->arr[mid].id);                      \
			if (v == k)                                            \
				return (int)mid;                               \
			if (v < k)                                             \
				lo = mid + 1;                                  \
			else                                                   \
				hi = mid;                                      \
		}                                                              \
		return -1;                                                     \
	}
FIND(find_contact, imp_contact, contacts, n_contacts)
FIND(find_message, imp_message, messages, n_messages)
FIND(find_campaign, imp_campaign, campaigns, n_campaigns)

static const imp_source *sort_src;

static int
by_phone(const void *a, const void *b)
{
	const imp_contact *x = &sort_src->contacts[*(const size_t *)a];
	const imp_contact *y = &sort_src->contacts[*(const size_t *)b];
	int c = strcmp(x->e164, y->e164);

	if (c != 0)
		return c;
	return *(const size_t *)a < *(const size_t *)b ? -1 : 1;
}

static int
group_of(imp_source *src, int canon)
{
	imp_group *g;

	if (canon >= 0 && src->contacts[canon].group >= 0)
		return src->contacts[canon].group;
	if (canon < 0 && src->system_group >= 0)
		return src->system_group;
	g = realloc(src->groups, sizeof(*g) * (src->n_groups + 1));
	if (g == NULL)
		return -1;
	src->groups = g;
	g = &src->groups[src->n_groups];
	memset(g, 0, sizeof(*g));
	g->contact = canon;
	if (canon >= 0) {
		snprintf(g->legacy, sizeof(g->legacy), "contact:%.55s",
		         src->contacts[canon].id);
		src->contacts[canon].group = (int)src->n_groups;
	} else {
		snprintf(g->legacy, sizeof(g->legacy), "contact:%.55s",
		         IMP_SYSTEM_CONTACT);
		src->system_group = (int)src->n_groups;
	}
	return (int)src->n_groups++;
}

static int
group_add(imp_group *g, size_t msg)
{
	if (g->n_msgs == g->cap) {
		size_t cap = g->cap ? g->cap * 2 : 16;
		size_t *v = realloc(g->msgs, cap * sizeof(*v));
		if (v == NULL)
			return -1;
		g->msgs = v;
		g->cap = cap;
	}
	g->msgs[g->n_msgs++] = msg;
	return 0;
}

static bool
json_object_text(const char *s)
{
	json_error_t e;
	json_t *j = json_loads(s, JSON_DECODE_ANY, &e);
	bool ok = json_is_object(j);

	json_decref(j);
	return ok;
}

static int
thread_group(imp_source *src, const char *thread)
{
	// Contacts are few (the legacy system's upper estimate is 1,000): a
	// linear scan per row is fine.
	if (thread == NULL)
		return -1;
	for (size_t i = 0; i < src->n_contacts; i++) {
		const imp_contact *c = &src->contacts[i];
		if (c->thread_id && strcmp(c->thread_id, thread) == 0)
			return src->contacts[c->canon].group;
	}
	return -1;
}

int
import_map_all(imp_source *src, int64_t close_idle_days, int64_t now, char *err,
               size_t errlen)
{
	size_t *ix = NULL;

	src->system_group = -1;
	// Contacts: E.164, then merges (same number -> the lowest id wins).
	for (size_t i = 0; i < src->n_contacts; i++) {
		imp_contact *c = &src->contacts[i];
		c->canon = (int)i;
		c->group = -1;
		if (!import_phone_e164(c->phone, c->e164))
			import_problem(
			        src,
			        "contacts row id=%s: phone \"%s\" is not "
			        "a phone number; imported with external "
			        "id legacy:%s",
			        c->id, c->phone ? c->phone : "", c->id);
	}
	ix = malloc(sizeof(*ix) * (src->n_contacts + 1));
	if (ix == NULL)
		goto oom;
	for (size_t i = 0; i < src->n_contacts; i++)
		ix[i] = i;
	sort_src = src;
	qsort(ix, src->n_contacts, sizeof(*ix), by_phone);
	for (size_t k = 1; k < src->n_contacts; k++) {
		imp_contact *prev = &src->contacts[ix[k - 1]];
		imp_contact *c = &src->contacts[ix[k]];
		if (c->e164[0] && strcmp(c->e164, prev->e164) == 0) {
			imp_merge *m;
			c->canon = prev->canon;
			m = realloc(src->merges,
			            sizeof(*m) * (src->n_merges + 1));
			if (m == NULL)
				goto oom;
			src->merges = m;
			m[src->n_merges].from = (int)ix[k];
			m[src->n_merges].into = c->canon;
			src->n_merges++;
		}
	}
	free(ix);
	ix = NULL;

	// Messages: enums, checks, one conversation per (merged) contact.
	for (size_t i = 0; i < src->n_messages; i++) {
		imp_message *m = &src->messages[i];
		int k = find_contact(src, m->contact_id), g;

		m->dir = import_map_direction(m->direction);
		if (m->dir == 0) {
			snprintf(err, errlen,
			         "messages row id=%s: direction \"%s\" is "
			         "neither "
			         "incoming nor outgoing",
			         m->id, m->direction ? m->direction : "NULL");
			return -1;
		}
		if (m->metadata != NULL && !json_object_text(m->metadata)) {
			snprintf(err, errlen,
			         "messages row id=%s: column metadata is not a "
			         "valid JSON object",
			         m->id);
			return -1;
		}
		m->mtype = import_map_msg_type(m->type);
		m->mstatus = import_map_msg_status(m->status, m->dir);
		m->sender = k < 0 ? SND_SYSTEM
		                  : (m->dir == DIR_IN ? SND_CONTACT : SND_BOT);
		if (k < 0) {
			src->orphans++;
			if (m->contact_id != NULL)
				import_problem(src,
				               "messages row id=%s: contact %s "
				               "does not exist; kept on the "
				               "system contact",
				               m->id, m->contact_id);
		}
		g = group_of(src, k < 0 ? -1 : src->contacts[k].canon);
		if (g < 0 || group_add(&src->groups[g], i) != 0)
			goto oom;
		m->group = g;
		{
			const char *at =
			        m->sent_at ? m->sent_at : m->created_at;
			if (at && strcmp(at, src->groups[g].last_at) > 0)
				snprintf(src->groups[g].last_at,
				         sizeof(src->groups[g].last_at), "%s",
				         at);
		}
	}
	// A contact with a LangGraph thread gets its conversation too (the
	// session its checkpoints belong to).
	for (size_t i = 0; i < src->n_contacts; i++)
		if (src->contacts[i].thread_id != NULL &&
		    group_of(src, src->contacts[i].canon) < 0)
			goto oom;
	for (size_t i = 0; i < src->n_groups; i++) {
		imp_group *g = &src->groups[i];
		if (g->contact >= 0 && g->last_at[0] == '\0')
			snprintf(g->last_at, sizeof(g->last_at), "%s",
			         src->contacts[g->contact].updated_at
			                 ? src->contacts[g->contact].updated_at
			                 : "");
		g->status =
		        import_conv_status(g->last_at, close_idle_days, now);
	}

	// Orders.
	for (size_t i = 0; i < src->n_orders; i++) {
		imp_order *o = &src->orders[i];
		int k = find_contact(src, o->contact_id);

		o->ostatus = import_map_order_status(o->status);
		if (o->ostatus == 0) {
			snprintf(err, errlen,
			         "orders row id=%s: status \"%s\" is unknown",
			         o->id, o->status);
			return -1;
		}
		if (import_map_order(&src->arena, o->details, o, err, errlen) !=
		    0)
			return -1;
		if (k < 0) {
			import_problem(
			        src,
			        "orders row id=%s: no contact; kept on the "
			        "system contact",
			        o->id);
			if (group_of(src, -1) < 0)
				goto oom;
			o->contact = -1;
		} else {
			o->contact = src->contacts[k].canon;
		}
		o->message = find_message(src, o->message_id);
		if (o->message_id != NULL && o->message < 0)
			import_problem(src,
			               "orders row id=%s: message %s does not "
			               "exist; imported without it",
			               o->id, o->message_id);
	}

	// Campaigns and subscribers.
	for (size_t i = 0; i < src->n_campaigns; i++) {
		imp_campaign *c = &src->campaigns[i];
		if (import_map_template(&src->arena, c->tmpl, c, err, errlen) !=
		    0)
			return -1;
		// Active campaigns are paused (a person resumes them in
		// Parley); finished ones completed. Nothing is sent on import.
		c->cstatus = c->is_active && c->is_active[0] == 't' ? 4 : 5;
		if (c->name == NULL)
			c->name = pl_arena_printf(&src->arena, "Campaign %s",
			                          c->id);
	}
	for (size_t i = 0; i < src->n_subs; i++) {
		imp_sub *s = &src->subs[i];
		int k = find_contact(src, s->contact_id);

		s->campaign = find_campaign(src, s->campaign_id);
		s->contact = k < 0 ? -1 : src->contacts[k].canon;
		s->rstatus =
		        s->status && strcasecmp(s->status, "unsubscribed") == 0
		                ? 6
		                : 1;
		if (s->campaign < 0 || s->contact < 0) {
			snprintf(err, errlen,
			         "campaign_subscribers row id=%s: campaign %s "
			         "or "
			         "contact %s does not exist",
			         s->id,
			         s->campaign_id ? s->campaign_id : "NULL",
			         s->contact_id ? s->contact_id : "NULL");
			return -1;
		}
	}

	// Checkpoints: the thread's contact's conversation, or kept as is.
	for (size_t i = 0; i < src->n_ckpts; i++) {
		imp_ckpt *c = &src->ckpts[i];
		if (!json_object_text(c->state) ||
		    (c->metadata && !json_object_text(c->metadata))) {
			snprintf(err, errlen,
			         "checkpoints row thread_id=%s "
			         "checkpoint_id=%s: "
			         "checkpoint or metadata is not a JSON object",
			         c->thread_id, c->id);
			return -1;
		}
		c->group = thread_group(src, c->thread_id);
		if (c->group < 0) {
			bool seen = false;
			for (size_t k = 0; k < src->n_orphan_threads && !seen;
			     k++)
				seen = strcmp(src->orphan_threads[k],
				              c->thread_id) == 0;
			if (!seen) {
				char **v = realloc(
				        src->orphan_threads,
				        sizeof(*v) *
				                (src->n_orphan_threads + 1));
				if (v == NULL)
					goto oom;
				src->orphan_threads = v;
				v[src->n_orphan_threads++] =
				        (char *)c->thread_id;
			}
		}
	}
	for (size_t i = 0; i < src->n_blobs; i++)
		src->blobs[i].group =
		        thread_group(src, src->blobs[i].thread_id);
	for (size_t i = 0; i < src->n_writes; i++)
		src->writes[i].group =
		        thread_group(src, src->writes[i].thread_id);
	return 0;
oom:
	free(ix);
	snprintf(err, errlen, "out of memory mapping the source");
	return -1;
}
