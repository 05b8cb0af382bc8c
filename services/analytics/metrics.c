// The service's own logic, free of sockets and SQL: times, event checks,
// the mapping of an event to rollup increments, and the KPIs built from
// sums. The definitions here are the ones the README writes down.
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "analytics.h"
#include "pl/id.h"

static int64_t
days_from_civil(int64_t y, unsigned m, unsigned d)
{
	y -= m <= 2;
	const int64_t era = (y >= 0 ? y : y - 399) / 400;
	const unsigned yoe = (unsigned)(y - era * 400);
	const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
	const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + (int64_t)doe - 719468;
}

static int
digits(const char **p, int n)
{
	int v = 0;
	for (int i = 0; i < n; i++) {
		if (!isdigit((unsigned char)**p))
			return -1;
		v = v * 10 + (**p - '0');
		(*p)++;
	}
	return v;
}

bool
analytics_time_parse(const char *s, int64_t *us)
{
	static const int mdays[] = { 31, 29, 31, 30, 31, 30,
		                     31, 31, 30, 31, 30, 31 };
	const char *p = s;
	int y, mo, d, h, mi, sec, off = 0;
	int64_t frac = 0;

	if (s == NULL || strlen(s) > 40)
		return false;
	if ((y = digits(&p, 4)) < 0 || *p++ != '-' ||
	    (mo = digits(&p, 2)) < 0 || *p++ != '-' ||
	    (d = digits(&p, 2)) < 0 || (*p != 'T' && *p != 't' && *p != ' '))
		return false;
	p++;
	if ((h = digits(&p, 2)) < 0 || *p++ != ':' ||
	    (mi = digits(&p, 2)) < 0 || *p++ != ':' ||
	    (sec = digits(&p, 2)) < 0)
		return false;
	if (mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] || h > 23 ||
	    mi > 59 || sec > 60)
		return false;
	if (mo == 2 && d == 29 &&
	    !(y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)))
		return false;
	if (sec == 60)
		sec = 59; // a leap second is the second before
	if (*p == '.') {
		int n = 0;
		p++;
		if (!isdigit((unsigned char)*p))
			return false;
		while (isdigit((unsigned char)*p)) {
			if (n < 6) {
				frac = frac * 10 + (*p - '0');
				n++;
			}
			p++;
		}
		while (n++ < 6)
			frac *= 10;
	}
	if (*p == 'Z' || *p == 'z') {
		p++;
	} else if (*p == '+' || *p == '-') {
		int sign = *p++ == '-' ? -1 : 1, oh, om;
		if ((oh = digits(&p, 2)) < 0 || *p++ != ':' ||
		    (om = digits(&p, 2)) < 0 || oh > 23 || om > 59)
			return false;
		off = sign * (oh * 60 + om);
	} else {
		return false;
	}
	if (*p != '\0')
		return false;
	int64_t days = days_from_civil(y, (unsigned)mo, (unsigned)d);
	int64_t secs = days * 86400 + h * 3600 + mi * 60 + sec - off * 60;
	*us = secs * 1000000 + frac;
	return true;
}

static void
format_time(int64_t us, char *out, bool micro)
{
	int64_t secs = us >= 0 ? us / 1000000 : -((-us + 999999) / 1000000);
	int64_t rem = us - secs * 1000000;
	time_t t = (time_t)secs;
	struct tm tm;
	char buf[80];

	gmtime_r(&t, &tm);
	if (micro)
		snprintf(buf, sizeof(buf),
		         "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ",
		         tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
		         tm.tm_hour, tm.tm_min, tm.tm_sec, (int)rem);
	else
		snprintf(buf, sizeof(buf),
		         "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
		         tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
		         tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(rem / 1000));
	memcpy(out, buf, 31);
	out[31] = '\0';
}

void
analytics_time_format_us(int64_t us, char out[32])
{
	format_time(us, out, true);
}

void
analytics_time_format_ms(int64_t us, char out[32])
{
	format_time(us, out, false);
}

int64_t
analytics_now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int32_t
analytics_utc_month(int64_t us)
{
	time_t t = (time_t)(us / 1000000);
	struct tm tm;
	gmtime_r(&t, &tm);
	return (int32_t)days_from_civil(tm.tm_year + 1900,
	                                (unsigned)tm.tm_mon + 1, 1);
}

static const char *const known_types[] = { "tenant.created",
	                                   "tenant.updated",
	                                   "tenant.suspended",
	                                   "tenant.reactivated",
	                                   "member.added",
	                                   "member.removed",
	                                   "subscription.status_changed",
	                                   "subscription.plan_changed",
	                                   "subscription.grace_expired",
	                                   "invoice.issued",
	                                   "invoice.paid",
	                                   "usage.refused",
	                                   "message.received",
	                                   "message.sent",
	                                   "message.status",
	                                   "conversation.started",
	                                   "conversation.closed",
	                                   "conversation.reopened",
	                                   "conversation.handoff",
	                                   "conversation.handed_back",
	                                   "conversation.state_changed",
	                                   "limit.reached",
	                                   "lead.created",
	                                   "lead.updated",
	                                   "lead.converted",
	                                   "order.created",
	                                   "order.updated",
	                                   "action.pending",
	                                   "action.decided",
	                                   "campaign.started",
	                                   "campaign.paused",
	                                   "campaign.completed",
	                                   "webhook_endpoint.disabled",
	                                   "agent.replied",
	                                   "agent.published",
	                                   NULL };

bool
analytics_type_known(const char *type)
{
	if (type == NULL)
		return false;
	for (int i = 0; known_types[i] != NULL; i++)
		if (strcmp(known_types[i], type) == 0)
			return true;
	return false;
}

// Payload readers: absent or mistyped keys read as nothing.
static const char *
pstr(json_t *o, const char *k)
{
	json_t *v = o != NULL ? json_object_get(o, k) : NULL;
	return json_is_string(v) ? json_string_value(v) : NULL;
}

static bool
pint(json_t *o, const char *k, int64_t *out)
{
	json_t *v = o != NULL ? json_object_get(o, k) : NULL;
	if (json_is_integer(v)) {
		*out = json_integer_value(v);
		return true;
	}
	if (json_is_real(v) && json_real_value(v) >= -9e18 &&
	    json_real_value(v) <= 9e18) {
		*out = (int64_t)json_real_value(v);
		return true;
	}
	return false;
}

static bool
pbool(json_t *o, const char *k)
{
	json_t *v = o != NULL ? json_object_get(o, k) : NULL;
	return json_is_true(v);
}

static bool
is_currency(const char *c)
{
	return c != NULL && strlen(c) == 3 && isupper((unsigned char)c[0]) &&
	       isupper((unsigned char)c[1]) && isupper((unsigned char)c[2]);
}

typedef struct mapper {
	const Parley__Rpc__V1__EventDimensions *dims;
	analytics_emit_fn emit;
	void *arg;
} mapper;

static bool
has(const char *s)
{
	return s != NULL && s[0] != '\0';
}

// A metric as a total and for each filterable dimension the event has.
static void
emit_all(mapper *m, const char *metric, int64_t v)
{
	m->emit(m->arg, metric, "", "", v);
	if (m->dims == NULL)
		return;
	if (has(m->dims->channel_id))
		m->emit(m->arg, metric, "channel", m->dims->channel_id, v);
	if (has(m->dims->agent_id))
		m->emit(m->arg, metric, "agent", m->dims->agent_id, v);
	if (has(m->dims->campaign_id))
		m->emit(m->arg, metric, "campaign", m->dims->campaign_id, v);
}

// A label dimension (intent, engine...), cut to ANALYTICS_MAX_LABEL bytes
// on a character boundary.
static void
emit_label(mapper *m, const char *metric, const char *key, const char *label,
           int64_t v)
{
	char buf[ANALYTICS_MAX_LABEL + 1];
	size_t n;

	if (!has(label))
		return;
	n = strlen(label);
	if (n > ANALYTICS_MAX_LABEL) {
		n = ANALYTICS_MAX_LABEL;
		while (n > 0 && ((unsigned char)label[n] & 0xC0) == 0x80)
			n--;
	}
	memcpy(buf, label, n);
	buf[n] = '\0';
	m->emit(m->arg, metric, key, buf, v);
}

void
analytics_map_event(const char *type,
                    const Parley__Rpc__V1__EventDimensions *dims, json_t *p,
                    analytics_emit_fn emit, void *arg)
{
	mapper m = { dims, emit, arg };
	const char *s;
	int64_t v;
	char name[64];

	emit(arg, "events", "", "", 1);
	if (strcmp(type, "message.received") == 0) {
		emit_all(&m, "messages_in", 1);
	} else if (strcmp(type, "message.sent") == 0) {
		emit_all(&m, "messages_out", 1);
		s = pstr(p, "sender");
		if (s != NULL && strcmp(s, "bot") == 0) {
			emit_all(&m, "messages_out_bot", 1);
		} else if (s != NULL && strcmp(s, "human") == 0) {
			emit_all(&m, "messages_out_human", 1);
			if (dims != NULL && has(dims->user_id))
				emit(arg, "messages_out_human", "user",
				     dims->user_id, 1);
		}
	} else if (strcmp(type, "message.status") == 0) {
		s = pstr(p, "status");
		if (dims == NULL || !has(dims->campaign_id) || s == NULL)
			return;
		if (strcmp(s, "sent") == 0)
			emit_all(&m, "campaign_sent", 1);
		else if (strcmp(s, "delivered") == 0)
			emit_all(&m, "campaign_delivered", 1);
		else if (strcmp(s, "read") == 0)
			emit_all(&m, "campaign_read", 1);
		else if (strcmp(s, "failed") == 0)
			emit_all(&m, "campaign_failed", 1);
	} else if (strcmp(type, "conversation.started") == 0) {
		emit_all(&m, "conversations_started", 1);
	} else if (strcmp(type, "conversation.closed") == 0) {
		emit_all(&m, "conversations_closed", 1);
		if (pbool(p, "handed_over"))
			emit_all(&m, "closed_handed_over", 1);
		else
			emit_all(&m, "bot_resolved", 1);
	} else if (strcmp(type, "conversation.handoff") == 0) {
		emit_all(&m, "handoffs", 1);
		emit_label(&m, "handoffs", "handoff_reason", pstr(p, "reason"),
		           1);
		if (dims != NULL && has(dims->user_id))
			emit(arg, "handoffs", "user", dims->user_id, 1);
	} else if (strcmp(type, "lead.created") == 0) {
		emit_all(&m, "leads_created", 1);
	} else if (strcmp(type, "lead.converted") == 0) {
		emit_all(&m, "leads_converted", 1);
		s = pstr(p, "currency");
		if (is_currency(s) && pint(p, "value_minor", &v) && v > 0) {
			snprintf(name, sizeof(name),
			         "conversion_value_minor:%s", s);
			emit_all(&m, name, v);
		}
	} else if (strcmp(type, "order.created") == 0) {
		emit_all(&m, "orders", 1);
		s = pstr(p, "currency");
		if (is_currency(s) && pint(p, "total_minor", &v) && v > 0) {
			snprintf(name, sizeof(name), "revenue_minor:%s", s);
			emit_all(&m, name, v);
		}
	} else if (strcmp(type, "agent.replied") == 0) {
		const char *engine = pstr(p, "engine"),
		           *model = pstr(p, "model");
		emit_all(&m, "ai_replies", 1);
		emit_label(&m, "ai_replies", "intent", pstr(p, "intent"), 1);
		emit_label(&m, "ai_replies", "engine", engine, 1);
		emit_label(&m, "ai_replies", "model", model, 1);
		if (pint(p, "tokens_in", &v) && v > 0) {
			emit_all(&m, "ai_tokens_in", v);
			emit_label(&m, "ai_tokens_in", "engine", engine, v);
			emit_label(&m, "ai_tokens_in", "model", model, v);
		}
		if (pint(p, "tokens_out", &v) && v > 0) {
			emit_all(&m, "ai_tokens_out", v);
			emit_label(&m, "ai_tokens_out", "engine", engine, v);
			emit_label(&m, "ai_tokens_out", "model", model, v);
		}
	} else if (strcmp(type, "usage.refused") == 0) {
		emit_all(&m, "quota_refusals", 1);
		emit_label(&m, "quota_refusals", "quota_metric",
		           pstr(p, "metric"), 1);
	}
}

bool
analytics_response_time(const char *type, json_t *payload, const char **kind,
                        int64_t *ms)
{
	const char *s;

	if (strcmp(type, "message.sent") != 0 ||
	    !pint(payload, "response_ms", ms) || *ms < 0)
		return false;
	s = pstr(payload, "sender");
	if (s == NULL || (strcmp(s, "bot") != 0 && strcmp(s, "human") != 0))
		return false;
	*kind = strcmp(s, "bot") == 0 ? "bot" : "human";
	return true;
}

#define FAIL(f, ...)                                                           \
	do {                                                                   \
		*field = (f);                                                  \
		snprintf(msg, msglen, __VA_ARGS__);                            \
		return false;                                                  \
	} while (0)

bool
analytics_event_check(const analytics_event_pb *e, int64_t now_us,
                      json_t **payload, int64_t *us, const char **field,
                      char *msg, size_t msglen)
{
	const Parley__Rpc__V1__EventDimensions *d = e->dimensions;
	const char *text;
	size_t len;
	json_error_t jerr;

	*payload = NULL;
	if (!has(e->id))
		FAIL("id", "is required");
	if (!pl_uuid_valid(e->id))
		FAIL("id", "must be a UUID");
	if (!has(e->tenant_id))
		FAIL("tenant_id", "is required");
	if (!pl_uuid_valid(e->tenant_id))
		FAIL("tenant_id", "must be a UUID");
	if (!has(e->type))
		FAIL("type", "is required");
	if (!analytics_type_known(e->type))
		FAIL("type", "unknown event type (see proto/README.md)");
	if (!has(e->occurred_at))
		FAIL("occurred_at", "is required");
	if (!analytics_time_parse(e->occurred_at, us))
		FAIL("occurred_at", "must be an RFC 3339 time");
	if (*us > now_us + ANALYTICS_FUTURE_US)
		FAIL("occurred_at", "is more than 5 minutes in the future");
	if (*us < 946684800LL * 1000000) // 2000-01-01
		FAIL("occurred_at", "is before 2000-01-01");
	if (e->source != NULL && strlen(e->source) > 64)
		FAIL("source", "is longer than 64 bytes");
	if (e->version < 0)
		FAIL("version", "must not be negative");
	if (d != NULL) {
		const struct {
			const char *f, *v;
		} ids[] = {
			{ "dimensions.channel_id", d->channel_id },
			{ "dimensions.agent_id", d->agent_id },
			{ "dimensions.campaign_id", d->campaign_id },
			{ "dimensions.conversation_id", d->conversation_id },
			{ "dimensions.contact_id", d->contact_id },
			{ "dimensions.user_id", d->user_id },
		};
		for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++)
			if (has(ids[i].v) && !pl_uuid_valid(ids[i].v))
				FAIL(ids[i].f, "must be a UUID");
	}
	text = e->payload != NULL && e->payload->text != NULL ? e->payload->text
	                                                      : "";
	len = strlen(text);
	if (len > ANALYTICS_MAX_PAYLOAD)
		FAIL("payload", "is larger than 64 KB (%zu bytes)", len);
	if (len == 0) {
		*payload = json_object();
		if (*payload == NULL)
			FAIL("payload", "could not be allocated");
		return true;
	}
	*payload = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
	if (*payload == NULL)
		FAIL("payload", "is not valid JSON: %s", jerr.text);
	if (!json_is_object(*payload)) {
		json_decref(*payload);
		*payload = NULL;
		FAIL("payload", "must be a JSON object");
	}
	return true;
}

const char *
analytics_metric_name(int metric)
{
	switch (metric) {
	case PARLEY__ANALYTICS__V1__METRIC__METRIC_MESSAGES_IN:
		return "messages_in";
	case PARLEY__ANALYTICS__V1__METRIC__METRIC_MESSAGES_OUT:
		return "messages_out";
	case PARLEY__ANALYTICS__V1__METRIC__METRIC_MESSAGES_OUT_BOT:
		return "messages_out_bot";
	case PARLEY__ANALYTICS__V1__METRIC__METRIC_MESSAGES_OUT_HUMAN:
		return "messages_out_human";
	case PARLEY__ANALYTICS__V1__METRIC__METRIC_CONVERSATIONS_STARTED:
		return "conversations_started";
	case PARLEY__ANALYTICS__V1__METRIC__METRIC_CONVERSATIONS_CLOSED:
		return "conversations_closed";
	case PARLEY__ANALYTICS__V1__METRIC__METRIC_HANDOFFS:
		return "handoffs";
	case PARLEY__ANALYTICS__V1__METRIC__METRIC_BOT_RESOLVED:
		return "bot_resolved";
	case PARLEY__ANALYTICS__V1__METRIC__METRIC_LEADS_CREATED:
		return "leads_created";
	case PARLEY__ANALYTICS__V1__METRIC__METRIC_LEADS_CONVERTED:
		return "leads_converted";
	case PARLEY__ANALYTICS__V1__METRIC__METRIC_CONVERSION_VALUE_MINOR:
		return "conversion_value_minor";
	case PARLEY__ANALYTICS__V1__METRIC__METRIC_ORDERS:
		return "orders";
	case PARLEY__ANALYTICS__V1__METRIC__METRIC_REVENUE_MINOR:
		return "revenue_minor";
	case PARLEY__ANALYTICS__V1__METRIC__METRIC_CAMPAIGN_SENT:
		return "campaign_sent";
	case PARLEY__ANALYTICS__V1__METRIC__METRIC_CAMPAIGN_DELIVERED:
		return "campaign_delivered";
	case PARLEY__ANALYTICS__V1__METRIC__METRIC_CAMPAIGN_READ:
		return "campaign_read";
	case PARLEY__ANALYTICS__V1__METRIC__METRIC_CAMPAIGN_FAILED:
		return "campaign_failed";
	case PARLEY__ANALYTICS__V1__METRIC__METRIC_AI_REPLIES:
		return "ai_replies";
	case PARLEY__ANALYTICS__V1__METRIC__METRIC_AI_TOKENS:
		return "ai_tokens";
	case PARLEY__ANALYTICS__V1__METRIC__METRIC_QUOTA_REFUSALS:
		return "quota_refusals";
	default:
		return NULL;
	}
}

const char *
analytics_dimension_key(int dim)
{
	switch (dim) {
	case PARLEY__ANALYTICS__V1__DIMENSION__DIMENSION_CHANNEL:
		return "channel";
	case PARLEY__ANALYTICS__V1__DIMENSION__DIMENSION_AGENT:
		return "agent";
	case PARLEY__ANALYTICS__V1__DIMENSION__DIMENSION_CAMPAIGN:
		return "campaign";
	case PARLEY__ANALYTICS__V1__DIMENSION__DIMENSION_INTENT:
		return "intent";
	case PARLEY__ANALYTICS__V1__DIMENSION__DIMENSION_ENGINE:
		return "engine";
	case PARLEY__ANALYTICS__V1__DIMENSION__DIMENSION_MODEL:
		return "model";
	case PARLEY__ANALYTICS__V1__DIMENSION__DIMENSION_HANDOFF_REASON:
		return "handoff_reason";
	case PARLEY__ANALYTICS__V1__DIMENSION__DIMENSION_USER:
		return "user";
	default:
		return NULL;
	}
}

int
analytics_dimension_default_metric(int dim)
{
	switch (dim) {
	case PARLEY__ANALYTICS__V1__DIMENSION__DIMENSION_CHANNEL:
		return PARLEY__ANALYTICS__V1__METRIC__METRIC_MESSAGES_IN;
	case PARLEY__ANALYTICS__V1__DIMENSION__DIMENSION_CAMPAIGN:
		return PARLEY__ANALYTICS__V1__METRIC__METRIC_CAMPAIGN_SENT;
	case PARLEY__ANALYTICS__V1__DIMENSION__DIMENSION_HANDOFF_REASON:
		return PARLEY__ANALYTICS__V1__METRIC__METRIC_HANDOFFS;
	case PARLEY__ANALYTICS__V1__DIMENSION__DIMENSION_USER:
		return PARLEY__ANALYTICS__V1__METRIC__METRIC_MESSAGES_OUT_HUMAN;
	default: // agent, intent, engine, model
		return PARLEY__ANALYTICS__V1__METRIC__METRIC_AI_REPLIES;
	}
}

void
analytics_sums_add(analytics_sums *s, const char *name, int64_t v)
{
	for (size_t i = 0; i < s->n; i++)
		if (strcmp(s->names[i], name) == 0) {
			s->values[i] += v;
			return;
		}
	if (s->n == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 32;
		char **nn = realloc(s->names, cap * sizeof(*nn));
		if (nn == NULL)
			return;
		s->names = nn;
		int64_t *nv = realloc(s->values, cap * sizeof(*nv));
		if (nv == NULL)
			return;
		s->values = nv;
		s->cap = cap;
	}
	s->names[s->n] = strdup(name);
	if (s->names[s->n] == NULL)
		return;
	s->values[s->n++] = v;
}

int64_t
analytics_sums_get(const analytics_sums *s, const char *name)
{
	for (size_t i = 0; i < s->n; i++)
		if (strcmp(s->names[i], name) == 0)
			return s->values[i];
	return 0;
}

void
analytics_sums_fini(analytics_sums *s)
{
	for (size_t i = 0; i < s->n; i++)
		free(s->names[i]);
	free(s->names);
	free(s->values);
	memset(s, 0, sizeof(*s));
}

void
analytics_sums_emit(void *arg, const char *metric, const char *dim_key,
                    const char *dim_value, int64_t value)
{
	analytics_sums_filter *f = arg;

	if (strcmp(dim_key, f->dim_key) != 0 ||
	    strcmp(dim_value, f->dim_value) != 0)
		return;
	analytics_sums_add(f->sums, metric, value);
}

static double
ratio(int64_t a, int64_t b)
{
	return b > 0 ? (double)a / (double)b : 0.0;
}

static void
money(const analytics_sums *s, const char *prefix, size_t *n,
      Parley__Analytics__V1__MoneyTotal ***out, pl_arena *arena)
{
	size_t plen = strlen(prefix), k = 0;

	for (size_t i = 0; i < s->n; i++)
		if (strncmp(s->names[i], prefix, plen) == 0)
			k++;
	*n = 0;
	*out = NULL;
	if (k == 0)
		return;
	*out = pl_arena_alloc(arena, k * sizeof(**out));
	if (*out == NULL)
		return;
	for (size_t i = 0; i < s->n; i++) {
		if (strncmp(s->names[i], prefix, plen) != 0)
			continue;
		Parley__Analytics__V1__MoneyTotal *m =
		        pl_arena_alloc(arena, sizeof(*m));
		if (m == NULL)
			return;
		parley__analytics__v1__money_total__init(m);
		m->currency = pl_arena_strdup(arena, s->names[i] + plen);
		m->amount_minor = s->values[i];
		(*out)[(*n)++] = m;
	}
}

void
analytics_kpis_fill(analytics_kpis_pb *k, const analytics_sums *s,
                    pl_arena *arena)
{
	k->messages_in = analytics_sums_get(s, "messages_in");
	k->messages_out = analytics_sums_get(s, "messages_out");
	k->messages_out_bot = analytics_sums_get(s, "messages_out_bot");
	k->messages_out_human = analytics_sums_get(s, "messages_out_human");
	k->conversations_started =
	        analytics_sums_get(s, "conversations_started");
	k->conversations_closed = analytics_sums_get(s, "conversations_closed");
	k->bot_resolved = analytics_sums_get(s, "bot_resolved");
	k->handed_over = analytics_sums_get(s, "closed_handed_over");
	k->bot_resolved_share =
	        ratio(k->bot_resolved, k->bot_resolved + k->handed_over);
	k->leads_created = analytics_sums_get(s, "leads_created");
	k->leads_converted = analytics_sums_get(s, "leads_converted");
	k->conversion_rate = ratio(k->leads_converted, k->leads_created);
	money(s, "conversion_value_minor:", &k->n_conversion_value,
	      &k->conversion_value, arena);
	k->orders = analytics_sums_get(s, "orders");
	money(s, "revenue_minor:", &k->n_revenue, &k->revenue, arena);
	k->campaign_sent = analytics_sums_get(s, "campaign_sent");
	k->campaign_delivered = analytics_sums_get(s, "campaign_delivered");
	k->campaign_read = analytics_sums_get(s, "campaign_read");
	k->campaign_failed = analytics_sums_get(s, "campaign_failed");
	k->campaign_delivery_rate =
	        ratio(k->campaign_delivered, k->campaign_sent);
	k->campaign_read_rate = ratio(k->campaign_read, k->campaign_sent);
	k->campaign_failure_rate = ratio(k->campaign_failed,
	                                 k->campaign_sent + k->campaign_failed);
	k->ai_replies = analytics_sums_get(s, "ai_replies");
	k->ai_tokens_in = analytics_sums_get(s, "ai_tokens_in");
	k->ai_tokens_out = analytics_sums_get(s, "ai_tokens_out");
	k->quota_refusals = analytics_sums_get(s, "quota_refusals");
}
