// What one Track batch adds to the rollups, grouped in C: one row per
// (tenant, local day, metric, dimension), one row of counters per (tenant,
// local hour), the distinct contacts per day, and the monthly usage
// counters per (tenant, month). store.c
// sends the result to PostgreSQL as a few arrays in one statement. Free of
// SQL and sockets.
#include <stdlib.h>
#include <string.h>

#include "analytics.h"

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

int32_t
analytics_month_of_day(int32_t day)
{
	// civil_from_days, keeping only year and month.
	int64_t z = (int64_t)day + 719468;
	const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
	const unsigned doe = (unsigned)(z - era * 146097);
	const unsigned yoe =
	        (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	const int64_t y = (int64_t)yoe + era * 400;
	const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	const unsigned mp = (5 * doy + 2) / 153;
	const unsigned m = mp < 10 ? mp + 3 : mp - 9;
	return (int32_t)days_from_civil(y + (m <= 2), m, 1);
}

void
analytics_agg_init(analytics_agg *a)
{
	memset(a, 0, sizeof(*a));
	pl_arena_init(&a->arena, 0, 0);
}

void
analytics_agg_reset(analytics_agg *a)
{
	pl_arena_reset(&a->arena);
	a->n_rolls = 0;
	a->n_dc = 0;
	a->n_months = 0;
	a->n_hours = 0;
	if (a->slots != NULL)
		memset(a->slots, 0, a->n_slots * sizeof(*a->slots));
	if (a->hslots != NULL)
		memset(a->hslots, 0, a->n_hslots * sizeof(*a->hslots));
	a->oom = false;
}

void
analytics_agg_fini(analytics_agg *a)
{
	pl_arena_fini(&a->arena);
	free(a->rolls);
	free(a->slots);
	free(a->dc);
	free(a->months);
	free(a->hours);
	free(a->hslots);
	memset(a, 0, sizeof(*a));
}

static uint64_t
hash_str(uint64_t h, const char *s)
{
	for (; *s != '\0'; s++) {
		h ^= (unsigned char)*s;
		h *= 0x100000001b3ULL;
	}
	h ^= 0xff; // separator
	h *= 0x100000001b3ULL;
	return h;
}

static uint64_t
roll_hash(int32_t tenant, int32_t day, const char *metric, const char *dk,
          const char *dv)
{
	uint64_t h = 0xcbf29ce484222325ULL;
	h ^= (uint64_t)(uint32_t)tenant | (uint64_t)(uint32_t)day << 32;
	h *= 0x100000001b3ULL;
	h = hash_str(h, metric);
	h = hash_str(h, dk);
	return hash_str(h, dv);
}

static bool
grow(void **p, size_t *cap, size_t need, size_t size)
{
	if (need <= *cap)
		return true;
	size_t c = *cap ? *cap * 2 : 256;
	while (c < need)
		c *= 2;
	void *np = realloc(*p, c * size);
	if (np == NULL)
		return false;
	*p = np;
	*cap = c;
	return true;
}

// Rebuilds the hash index over rolls with twice the slots.
static bool
rehash(analytics_agg *a)
{
	size_t n = a->n_slots ? a->n_slots * 2 : 1024;
	uint32_t *s = calloc(n, sizeof(*s));
	if (s == NULL)
		return false;
	for (size_t i = 0; i < a->n_rolls; i++) {
		const analytics_roll *r = &a->rolls[i];
		size_t k =
		        roll_hash(r->tenant, r->day, r->metric, r->dk, r->dv) &
		        (n - 1);
		while (s[k] != 0)
			k = (k + 1) & (n - 1);
		s[k] = (uint32_t)i + 1;
	}
	free(a->slots);
	a->slots = s;
	a->n_slots = n;
	return true;
}

const char *const analytics_hourly_metrics[ANALYTICS_HOURLY_N] = {
	"messages_in",
	"messages_out",
	"messages_out_bot",
	"messages_out_human",
	"conversations_started",
	"conversations_closed",
	"handoffs",
	"bot_resolved",
	"leads_created",
	"leads_converted",
	"orders",
	"campaign_sent",
	"campaign_delivered",
	"campaign_read",
	"campaign_failed",
	"ai_replies",
	"ai_tokens_in",
	"ai_tokens_out",
	"quota_refusals",
};

int
analytics_hourly_index(const char *metric)
{
	for (int i = 0; i < ANALYTICS_HOURLY_N; i++)
		if (strcmp(metric, analytics_hourly_metrics[i]) == 0)
			return i;
	return -1;
}

static uint64_t
hour_hash(int32_t tenant, int32_t hour_q)
{
	uint64_t h = 0xcbf29ce484222325ULL;
	h ^= (uint64_t)(uint32_t)tenant | (uint64_t)(uint32_t)hour_q << 32;
	h *= 0x100000001b3ULL;
	return h ^ (h >> 29);
}

static bool
rehash_hours(analytics_agg *a)
{
	size_t n = a->n_hslots ? a->n_hslots * 2 : 256;
	uint32_t *s = calloc(n, sizeof(*s));
	if (s == NULL)
		return false;
	for (size_t i = 0; i < a->n_hours; i++) {
		const analytics_hour *r = &a->hours[i];
		size_t k = hour_hash(r->tenant, r->hour_q) & (n - 1);
		while (s[k] != 0)
			k = (k + 1) & (n - 1);
		s[k] = (uint32_t)i + 1;
	}
	free(a->hslots);
	a->hslots = s;
	a->n_hslots = n;
	return true;
}

// Adds v to column col of the current tenant's current hour.
static void
add_hour(analytics_agg *a, int col, int64_t v)
{
	if (a->oom)
		return;
	if (a->n_hours * 2 >= a->n_hslots && !rehash_hours(a)) {
		a->oom = true;
		return;
	}
	size_t mask = a->n_hslots - 1;
	size_t k = hour_hash(a->cur_tenant, a->cur_hour_q) & mask;
	while (a->hslots[k] != 0) {
		analytics_hour *r = &a->hours[a->hslots[k] - 1];
		if (r->tenant == a->cur_tenant && r->hour_q == a->cur_hour_q) {
			r->c[col] += v;
			return;
		}
		k = (k + 1) & mask;
	}
	if (!grow((void **)&a->hours, &a->cap_hours, a->n_hours + 1,
	          sizeof(*a->hours))) {
		a->oom = true;
		return;
	}
	analytics_hour *r = &a->hours[a->n_hours];
	memset(r, 0, sizeof(*r));
	r->tenant = a->cur_tenant;
	r->hour_q = a->cur_hour_q;
	r->c[col] = v;
	a->hslots[k] = (uint32_t)++a->n_hours;
}

// Adds v to the row of (metric, dk, dv) on the current tenant and day;
// returns the row's copy of metric (NULL when out of memory).
static const char *
add_roll(analytics_agg *a, const char *metric, const char *dk, const char *dv,
         int64_t v)
{
	if (a->oom)
		return NULL;
	if (a->n_rolls * 2 >= a->n_slots && !rehash(a)) {
		a->oom = true;
		return NULL;
	}
	size_t mask = a->n_slots - 1;
	size_t k = roll_hash(a->cur_tenant, a->cur_day, metric, dk, dv) & mask;
	while (a->slots[k] != 0) {
		analytics_roll *r = &a->rolls[a->slots[k] - 1];
		if (r->tenant == a->cur_tenant && r->day == a->cur_day &&
		    strcmp(r->metric, metric) == 0 && strcmp(r->dk, dk) == 0 &&
		    strcmp(r->dv, dv) == 0) {
			r->v += v;
			return r->metric;
		}
		k = (k + 1) & mask;
	}
	if (!grow((void **)&a->rolls, &a->cap_rolls, a->n_rolls + 1,
	          sizeof(*a->rolls))) {
		a->oom = true;
		return NULL;
	}
	analytics_roll *r = &a->rolls[a->n_rolls];
	r->tenant = a->cur_tenant;
	r->day = a->cur_day;
	r->metric = pl_arena_strdup(&a->arena, metric);
	r->dk = pl_arena_strdup(&a->arena, dk);
	r->dv = pl_arena_strdup(&a->arena, dv);
	r->v = v;
	if (r->metric == NULL || r->dk == NULL || r->dv == NULL) {
		a->oom = true;
		return NULL;
	}
	a->slots[k] = (uint32_t)++a->n_rolls;
	return r->metric;
}

// The monthly_usage counter a total feeds, or -1.
static int
month_counter(const char *metric)
{
	static const char *const names[] = {
		"messages_in",   "messages_out",   "conversations_started",
		"ai_replies",    "ai_tokens_in",   "ai_tokens_out",
		"campaign_sent", "quota_refusals",
	};
	static const int col[] = {
		ANALYTICS_MU_MESSAGES_IN,   ANALYTICS_MU_MESSAGES_OUT,
		ANALYTICS_MU_CONVERSATIONS, ANALYTICS_MU_AI_REPLIES,
		ANALYTICS_MU_AI_TOKENS,     ANALYTICS_MU_AI_TOKENS,
		ANALYTICS_MU_CAMPAIGN_SENT, ANALYTICS_MU_QUOTA_REFUSALS
	};
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (strcmp(metric, names[i]) == 0)
			return col[i];
	return -1;
}

static void
emit(void *arg, const char *metric, const char *dk, const char *dv, int64_t v)
{
	analytics_agg *a = arg;
	add_roll(a, metric, dk, dv, v);
	if (dk[0] == '\0') {
		int col = analytics_hourly_index(metric);
		if (col >= 0)
			add_hour(a, col, v);
	}
	if (dk[0] == '\0' && a->n_months > 0) {
		int c = month_counter(metric);
		if (c >= 0)
			a->months[a->n_months - 1].c[c] += v;
	}
}

void
analytics_agg_event(analytics_agg *a, int32_t tenant, int32_t day,
                    int32_t hour_q, const char *type,
                    const Parley__Rpc__V1__EventDimensions *dims,
                    json_t *payload, const uint8_t *contact)
{
	int32_t month = analytics_month_of_day(day);

	if (a->oom)
		return;
	if (!grow((void **)&a->months, &a->cap_months, a->n_months + 1,
	          sizeof(*a->months))) {
		a->oom = true;
		return;
	}
	memset(&a->months[a->n_months], 0, sizeof(a->months[0]));
	a->months[a->n_months].tenant = tenant;
	a->months[a->n_months].month = month;
	a->n_months++;
	if (contact != NULL && (strcmp(type, "message.received") == 0 ||
	                        strcmp(type, "message.sent") == 0)) {
		if (!grow((void **)&a->dc, &a->cap_dc, a->n_dc + 1,
		          sizeof(*a->dc))) {
			a->oom = true;
			return;
		}
		a->dc[a->n_dc].tenant = tenant;
		a->dc[a->n_dc].day = day;
		memcpy(a->dc[a->n_dc++].contact, contact, 16);
	}
	a->cur_tenant = tenant;
	a->cur_day = day;
	a->cur_hour_q = hour_q;
	analytics_map_event(type, dims, payload, emit, a);
}

// Rollup rows in the order they are written, the same in every batch so
// that concurrent batches lock rows in one order.
static int
cmp_roll(const void *x, const void *y)
{
	const analytics_roll *a = x, *b = y;
	int c;
	if (a->tenant != b->tenant)
		return a->tenant < b->tenant ? -1 : 1;
	if ((c = strcmp(a->dk, b->dk)) != 0)
		return c;
	if ((c = strcmp(a->dv, b->dv)) != 0)
		return c;
	if (a->day != b->day)
		return a->day < b->day ? -1 : 1;
	return strcmp(a->metric, b->metric);
}

static int
cmp_hour(const void *x, const void *y)
{
	const analytics_hour *a = x, *b = y;
	if (a->tenant != b->tenant)
		return a->tenant < b->tenant ? -1 : 1;
	return a->hour_q < b->hour_q ? -1 : a->hour_q > b->hour_q;
}

static int
cmp_contact(const void *x, const void *y)
{
	const analytics_contact *a = x, *b = y;
	if (a->tenant != b->tenant)
		return a->tenant < b->tenant ? -1 : 1;
	if (a->day != b->day)
		return a->day < b->day ? -1 : 1;
	return memcmp(a->contact, b->contact, 16);
}

static int
cmp_month(const void *x, const void *y)
{
	const analytics_month *a = x, *b = y;
	if (a->tenant != b->tenant)
		return a->tenant < b->tenant ? -1 : 1;
	return a->month < b->month ? -1 : a->month > b->month;
}

static size_t
unique_contacts(analytics_contact *c, size_t n)
{
	size_t k = 0;
	if (n == 0)
		return 0;
	qsort(c, n, sizeof(*c), cmp_contact);
	for (size_t i = 1; i < n; i++)
		if (cmp_contact(&c[k], &c[i]) != 0)
			c[++k] = c[i];
	return k + 1;
}

bool
analytics_agg_finish(analytics_agg *a)
{
	if (a->oom)
		return false;
	// qsort must not get NULL, even with nothing to sort.
	if (a->n_rolls > 0)
		qsort(a->rolls, a->n_rolls, sizeof(*a->rolls), cmp_roll);
	if (a->n_hours > 0)
		qsort(a->hours, a->n_hours, sizeof(*a->hours), cmp_hour);
	a->n_dc = unique_contacts(a->dc, a->n_dc);
	if (a->n_months > 0) {
		size_t k = 0;
		qsort(a->months, a->n_months, sizeof(*a->months), cmp_month);
		for (size_t i = 1; i < a->n_months; i++) {
			if (cmp_month(&a->months[k], &a->months[i]) == 0) {
				for (int c = 0; c < ANALYTICS_MU_N; c++)
					a->months[k].c[c] += a->months[i].c[c];
			} else {
				a->months[++k] = a->months[i];
			}
		}
		a->n_months = k + 1;
	}
	// The hash indexes no longer match the sorted rows.
	if (a->slots != NULL)
		memset(a->slots, 0, a->n_slots * sizeof(*a->slots));
	if (a->hslots != NULL)
		memset(a->hslots, 0, a->n_hslots * sizeof(*a->hslots));
	return true;
}
