// Counter leases (README "Leases", migration 005).
//
// A (tenant, metric) pair that this replica sees at least lease_min_rate
// times a second is given a lease: a share of its day and month units,
// taken from the counters by billing.lease_grant under their row locks (at
// most an eighth of what is left of each limited period). Calls are then
// admitted against the lease in memory and only their reservation rows are
// written, many per statement (billing.reserve_leased), before they are
// answered. A lease is used until it runs short or its deadline (the TTL,
// the day's or the billing month's end, whichever comes first, less a
// margin); then it is retired, and returned (billing.lease_return: its
// unused units go back to the counters) once no running batch holds it.
// The keeper thread retires expired leases and returns them; the periodic
// job reaps the leases of replicas that died (lease_reap).
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "billing.h"
#include "pl/db.h"
#include "pl/id.h"
#include "pl/log.h"
#include "pl/rpc.h"

#define NBUCKETS        4096
#define MAX_SLOTS       65536
#define SECOND_NS       1000000000LL
#define MARGIN_NS       (SECOND_NS / 4)  // a lease's last 250 ms are not used
#define REFUSED_NS      SECOND_NS        // no new ask for a second after a "no"
#define IDLE_NS         (10 * SECOND_NS) // an idle pair is forgotten
#define LEASE_IDLE_NS   (2 * SECOND_NS)  // an idle pair's lease goes back
#define KEEPER_NS       (SECOND_NS / 5)
#define MAX_LEASE_UNIT  ((int64_t)1 << 40)
#define MIN_LEASE_CALLS 64 // a lease is asked for this many calls at least

typedef struct billing_lease_slot {
	struct billing_lease_slot *next;
	char tenant[40];
	char metric[16];
	billing_lease *cur;
	int64_t win_start, last, no_lease_until;
	int64_t win_units, prev_units;
	int win_calls, prev_calls;
	int busy; // items of running batches waiting on this pair
} lease_slot;

static size_t
bucket_of(const char *tenant, const char *metric)
{
	uint32_t h = 2166136261u;
	for (const char *p = tenant; *p; p++)
		h = (h ^ (unsigned char)*p) * 16777619u;
	for (const char *p = metric; *p; p++)
		h = (h ^ (unsigned char)*p) * 16777619u;
	return h % NBUCKETS;
}

// The slot of (tenant, metric), made when missing; NULL when the table is
// full (the call is then decided exactly). Under mtx.
static lease_slot *
slot_get(billing_batcher *b, const char *tenant, const char *metric)
{
	size_t h = bucket_of(tenant, metric);
	lease_slot *s;

	for (s = b->buckets[h]; s != NULL; s = s->next)
		if (strcmp(s->tenant, tenant) == 0 &&
		    strcmp(s->metric, metric) == 0)
			return s;
	if (b->nslots >= MAX_SLOTS || strlen(tenant) >= sizeof(s->tenant) ||
	    strlen(metric) >= sizeof(s->metric) ||
	    (s = calloc(1, sizeof(*s))) == NULL)
		return NULL;
	strcpy(s->tenant, tenant);
	strcpy(s->metric, metric);
	s->next = b->buckets[h];
	b->buckets[h] = s;
	b->nslots++;
	return s;
}

// Counts a call in the pair's one-second windows.
static void
slot_count(lease_slot *s, int64_t now, int64_t amount)
{
	if (now - s->win_start >= SECOND_NS) {
		bool adjacent = now - s->win_start < 2 * SECOND_NS;
		s->prev_calls = adjacent ? s->win_calls : 0;
		s->prev_units = adjacent ? s->win_units : 0;
		s->win_start = now;
		s->win_calls = 0;
		s->win_units = 0;
	}
	s->win_calls++;
	if (s->win_units < MAX_LEASE_UNIT)
		s->win_units += amount;
	s->last = now;
}

static bool
slot_eligible(const billing_batcher *b, const lease_slot *s, int64_t now)
{
	return now >= s->no_lease_until && (s->win_calls >= b->lease_min_rate ||
	                                    s->prev_calls >= b->lease_min_rate);
}

// What to ask for: twice the units of the busier window over the TTL, so
// that a lease usually lasts until it expires. The database grants less
// when the pair is closer to a limit.
static int64_t
slot_want(const billing_batcher *b, const lease_slot *s, int64_t amount)
{
	int64_t rate =
	        s->win_units > s->prev_units ? s->win_units : s->prev_units;
	int64_t want;

	if (rate > MAX_LEASE_UNIT / 64)
		return MAX_LEASE_UNIT;
	want = rate * 2 * b->lease_ttl_ms / 1000;
	if (want < MIN_LEASE_CALLS * amount)
		want = MIN_LEASE_CALLS * amount;
	return want > MAX_LEASE_UNIT ? MAX_LEASE_UNIT : want;
}

static void
retire(billing_batcher *b, lease_slot *s)
{
	billing_lease *l = s->cur;

	if (l == NULL)
		return;
	s->cur = NULL;
	l->next = b->retired;
	b->retired = l;
}

// Retires l if it is still some slot's current lease. Under mtx.
static void
retire_lease(billing_batcher *b, billing_lease *l)
{
	lease_slot *s;

	for (s = b->buckets[bucket_of(l->tenant, l->metric)]; s != NULL;
	     s = s->next)
		if (s->cur == l) {
			retire(b, s);
			return;
		}
}

static int64_t
left_of(int64_t limit, int64_t used_at_grant, int64_t unused)
{
	int64_t r;
	if (limit < 0 || used_at_grant < 0)
		return -1;
	r = limit - (used_at_grant - unused);
	return r < 0 ? 0 : r;
}

// Admits it under l. Under mtx.
static void
take(billing_lease *l, billing_reserve_item *it)
{
	billing_reserve_result *r = &it->res;

	l->left -= it->amount;
	l->inflight++;
	it->lease = l;
	memset(r, 0, sizeof(*r));
	snprintf(r->outcome, sizeof(r->outcome), "ok");
	pl_uuid7_str(r->reservation_id);
	r->remaining_day = left_of(l->day_limit, l->day_used, l->left);
	r->remaining_month = left_of(l->month_limit, l->month_used, l->left);
	r->day_limit = l->day_used < 0 ? -1 : l->day_limit;
	r->month_limit = l->month_limit;
}

static bool
usable(const billing_lease *l, const billing_reserve_item *it, int64_t now)
{
	return l != NULL && now < l->deadline && l->left >= it->amount;
}

// Array literals (billing_sbuf, reserve.c) ----------------------------------

// Starts element i of an array literal ("{" or ",").
static void
lb_sep(billing_sbuf *b, size_t i)
{
	billing_sb_str(b, i == 0 ? "{" : ",");
}

static void
lbs_free(billing_sbuf *a, int n)
{
	for (int k = 0; k < n; k++)
		free(a[k].p);
}

// Closes n literals into params; false when one ran out of memory.
static bool
lbs_close(billing_sbuf *a, int n, const char **params)
{
	bool ok = true;
	for (int k = 0; k < n; k++) {
		if (a[k].len == 0)
			billing_sb_str(&a[k], "{");
		billing_sb_str(&a[k], "}");
		params[k] = a[k].p;
		ok = ok && !a[k].oom;
	}
	return ok;
}

static int64_t
icol(const PGresult *r, int row, int col)
{
	return PQgetisnull(r, row, col)
	               ? -1
	               : strtoll(PQgetvalue(r, row, col), NULL, 10);
}

// Returning ---------------------------------------------------------------

#define RETURN_SQL                                                             \
	"SELECT billing.lease_return($1::uuid[], $2::uuid[], $3::bigint[])"

// Returns the retired leases no batch holds any more, 256 per statement.
// A lease that could not be returned (no database) is dropped: the job's
// reaper gives its unused units back after it expired, counting them from
// its reservations.
static void
return_ready(billing_batcher *b, pl_db *db)
{
	for (;;) {
		billing_lease *l, **pp, *list = NULL;
		size_t n = 0;
		billing_sbuf a[3] = { { 0 } };
		const char *params[3];
		PGresult *r;
		int rc;

		pthread_mutex_lock(&b->mtx);
		for (pp = &b->retired; (l = *pp) != NULL && n < 256;) {
			if (l->inflight > 0) {
				pp = &l->next;
				continue;
			}
			*pp = l->next;
			l->next = list;
			list = l;
			n++;
		}
		if (n > 0)
			b->returning++;
		pthread_mutex_unlock(&b->mtx);
		if (n == 0)
			return;
		n = 0;
		for (l = list; l != NULL; l = l->next, n++) {
			lb_sep(&a[0], n);
			billing_sb_elem(&a[0], l->tenant);
			lb_sep(&a[1], n);
			billing_sb_elem(&a[1], l->id);
			lb_sep(&a[2], n);
			billing_sb_int(&a[2], l->left);
		}
		if (lbs_close(a, 3, params)) {
			r = pl_db_exec(db, RETURN_SQL, 3, params);
			if ((rc = pl_db_result_status(r)) != PL_OK)
				pl_warn("could not return %zu usage leases "
				        "(%s): "
				        "the reaper will",
				        n,
				        r ? PQresultErrorMessage(r)
				          : pl_status_name(rc));
			PQclear(r);
		}
		lbs_free(a, 3);
		pthread_mutex_lock(&b->mtx);
		b->returns += n;
		if (--b->returning == 0)
			pthread_cond_broadcast(&b->returned_cv);
		pthread_mutex_unlock(&b->mtx);
		while (list != NULL) {
			l = list->next;
			free(list);
			list = l;
		}
	}
}

// The keeper --------------------------------------------------------------

static void *
keeper_main(void *arg)
{
	billing_batcher *b = arg;
	pl_db *db = pl_db_open(b->database_url);
	bool stop = false;

	pthread_setname_np(pthread_self(), "lease-keeper");
	while (!stop) {
		struct timespec ts;
		int64_t now = pl_now_ns();

		pthread_mutex_lock(&b->mtx);
		stop = b->keeper_stop;
		for (size_t h = 0; h < NBUCKETS; h++) {
			lease_slot **pp = &b->buckets[h], *s;
			while ((s = *pp) != NULL) {
				// Expired, or idle: what an idle pair holds
				// is better back in the counters, where
				// other replicas and GetUsage see it.
				if (s->cur != NULL &&
				    (stop || now >= s->cur->deadline ||
				     now - s->last >= LEASE_IDLE_NS))
					retire(b, s);
				if (s->cur == NULL && s->busy == 0 &&
				    (stop || now - s->last >= IDLE_NS)) {
					*pp = s->next;
					free(s);
					b->nslots--;
					continue;
				}
				pp = &s->next;
			}
		}
		pthread_mutex_unlock(&b->mtx);
		if (db != NULL)
			return_ready(b, db);
		if (stop)
			break;
		pthread_mutex_lock(&b->mtx);
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += KEEPER_NS;
		if (ts.tv_nsec >= SECOND_NS) {
			ts.tv_sec++;
			ts.tv_nsec -= SECOND_NS;
		}
		while (!b->keeper_stop &&
		       pthread_cond_timedwait(&b->keeper_cv, &b->mtx, &ts) !=
		               ETIMEDOUT)
			;
		pthread_mutex_unlock(&b->mtx);
	}
	if (db != NULL)
		pl_db_close(db);
	return NULL;
}

int
billing_leases_init(billing_batcher *b, const char *database_url,
                    int64_t ttl_ms, int min_rate)
{
	char host[64] = "";

	b->lease_ttl_ms = ttl_ms < 0 ? 0 : ttl_ms;
	b->lease_min_rate = min_rate < 1 ? 1 : min_rate;
	if (b->lease_ttl_ms == 0)
		return PL_OK;
	if ((b->buckets = calloc(NBUCKETS, sizeof(*b->buckets))) == NULL ||
	    (b->database_url = strdup(database_url)) == NULL) {
		free(b->buckets);
		b->buckets = NULL;
		b->lease_ttl_ms = 0;
		return PL_RESOURCE_EXHAUSTED;
	}
	gethostname(host, sizeof(host) - 1);
	snprintf(b->owner, sizeof(b->owner), "%s:%ld", host, (long)getpid());
	pthread_cond_init(&b->keeper_cv, NULL);
	pthread_cond_init(&b->returned_cv, NULL);
	return PL_OK;
}

void
billing_leases_fini(billing_batcher *b)
{
	if (b->buckets == NULL)
		return;
	pthread_mutex_lock(&b->mtx);
	b->keeper_stop = true;
	pthread_cond_signal(&b->keeper_cv);
	pthread_mutex_unlock(&b->mtx);
	if (b->keeper_on)
		pthread_join(b->keeper, NULL);
	// Without a keeper (or a database) what is left is dropped: the
	// reaper returns it.
	for (size_t h = 0; h < NBUCKETS; h++) {
		lease_slot *s = b->buckets[h], *next;
		for (; s != NULL; s = next) {
			next = s->next;
			free(s->cur);
			free(s);
		}
	}
	while (b->retired != NULL) {
		billing_lease *l = b->retired->next;
		free(b->retired);
		b->retired = l;
	}
	pthread_cond_destroy(&b->keeper_cv);
	pthread_cond_destroy(&b->returned_cv);
	free(b->buckets);
	free(b->database_url);
	b->buckets = NULL;
	b->lease_ttl_ms = 0;
}

void
billing_leases_forget(billing_batcher *b, const char *tenant)
{
	if (b->buckets == NULL)
		return;
	pthread_mutex_lock(&b->mtx);
	for (size_t h = 0; h < NBUCKETS; h++)
		for (lease_slot *s = b->buckets[h]; s != NULL; s = s->next)
			if (tenant == NULL || strcmp(s->tenant, tenant) == 0) {
				retire(b, s);
				s->no_lease_until = 0;
			}
	pthread_cond_signal(&b->keeper_cv);
	pthread_mutex_unlock(&b->mtx);
}

int64_t
billing_leases_unused(billing_batcher *b, const char *tenant,
                      const char *metric)
{
	int64_t n = 0;

	if (b->buckets == NULL)
		return 0;
	pthread_mutex_lock(&b->mtx);
	for (lease_slot *s = b->buckets[bucket_of(tenant, metric)]; s != NULL;
	     s = s->next)
		if (s->cur != NULL && strcmp(s->tenant, tenant) == 0 &&
		    strcmp(s->metric, metric) == 0)
			n += s->cur->left;
	for (billing_lease *l = b->retired; l != NULL; l = l->next)
		if (strcmp(l->tenant, tenant) == 0 &&
		    strcmp(l->metric, metric) == 0)
			n += l->left;
	pthread_mutex_unlock(&b->mtx);
	return n;
}

void
billing_leases_flush(billing_batcher *b, pl_db *db, const char *tenant)
{
	if (b->buckets == NULL)
		return;
	billing_leases_forget(b, tenant);
	return_ready(b, db);
	// A lease the keeper took off the retired list just before is
	// being returned by it: wait for that statement's end (it holds no
	// lock this thread holds). A lease a running batch still writes
	// under is returned after that batch, as before.
	pthread_mutex_lock(&b->mtx);
	while (b->returning > 0)
		pthread_cond_wait(&b->returned_cv, &b->mtx);
	pthread_mutex_unlock(&b->mtx);
}

// Granting ----------------------------------------------------------------

#define GRANT_SQL                                                              \
	"SELECT ord, lease_id, units, day_limit, month_limit, day_used, "      \
	"month_used, expires_in_ms FROM billing.lease_grant($1::uuid[], "      \
	"$2::text[], $3::bigint[], $4::uuid[], $5, $6)"

// Asks for one lease per slot of slots[0..n) and installs what is granted.
static void
grant(billing_batcher *b, pl_db *db, lease_slot **slots, int64_t *want,
      size_t n)
{
	char ids[BILLING_MAX_BATCH][PL_UUID_STRLEN + 1];
	char ttl[24];
	billing_sbuf a[4] = { { 0 } };
	const char *params[6];
	PGresult *r = NULL;
	int64_t sent = pl_now_ns();
	bool ok;

	for (size_t i = 0; i < n; i++) {
		pl_uuid7_str(ids[i]);
		lb_sep(&a[0], i);
		billing_sb_elem(&a[0], slots[i]->tenant);
		lb_sep(&a[1], i);
		billing_sb_elem(&a[1], slots[i]->metric);
		lb_sep(&a[2], i);
		billing_sb_int(&a[2], want[i]);
		lb_sep(&a[3], i);
		billing_sb_elem(&a[3], ids[i]);
	}
	snprintf(ttl, sizeof(ttl), "%" PRId64, b->lease_ttl_ms);
	ok = lbs_close(a, 4, params);
	params[4] = b->owner;
	params[5] = ttl;
	if (ok)
		r = billing_exec_prepared(db, "billing_lease_grant", GRANT_SQL,
		                          6, params);
	lbs_free(a, 4);
	pthread_mutex_lock(&b->mtx);
	if (!ok || pl_db_result_status(r) != PL_OK || PQntuples(r) != (int)n) {
		if (ok)
			pl_warn("could not lease usage: %s",
			        r ? PQresultErrorMessage(r) : "no connection");
		for (size_t i = 0; i < n; i++)
			slots[i]->no_lease_until = sent + REFUSED_NS;
		b->grants_refused += n;
		pthread_mutex_unlock(&b->mtx);
		PQclear(r);
		return;
	}
	for (int row = 0; row < (int)n; row++) {
		long o = strtol(PQgetvalue(r, row, 0), NULL, 10);
		lease_slot *s;
		billing_lease *l;
		int64_t units = icol(r, row, 2), ms = icol(r, row, 7);

		if (o < 1 || o > (long)n)
			continue;
		s = slots[o - 1];
		if (PQgetisnull(r, row, 1) || units < 1 || ms <= 0 ||
		    (l = calloc(1, sizeof(*l))) == NULL) {
			s->no_lease_until = sent + REFUSED_NS;
			b->grants_refused++;
			continue;
		}
		snprintf(l->tenant, sizeof(l->tenant), "%s", s->tenant);
		snprintf(l->id, sizeof(l->id), "%s", PQgetvalue(r, row, 1));
		snprintf(l->metric, sizeof(l->metric), "%s", s->metric);
		l->units = l->left = units;
		l->day_limit = icol(r, row, 3);
		l->month_limit = icol(r, row, 4);
		l->day_used = icol(r, row, 5);
		l->month_used = icol(r, row, 6);
		// The database counted from its now(), which was after
		// `sent`: this deadline is never later than the lease's.
		l->deadline = sent + ms * 1000000 - MARGIN_NS;
		retire(b, s); // one granted meanwhile to another batch
		s->cur = l;
		if (l->deadline <= sent)
			retire(b, s);
		b->grants++;
	}
	if (!b->keeper_on && b->database_url != NULL) {
		b->keeper_stop = false;
		b->keeper_on =
		        pthread_create(&b->keeper, NULL, keeper_main, b) == 0;
	}
	pthread_mutex_unlock(&b->mtx);
	PQclear(r);
}

// Writing -----------------------------------------------------------------

#define LEASED_SQL                                                             \
	"SELECT ord, gone FROM billing.reserve_leased($1::uuid[], "            \
	"$2::text[], "                                                         \
	"$3::bigint[], $4::text[], $5::uuid[], $6::uuid[], $7::bigint[], "     \
	"$8::bigint[])"

// Writes the answers of items[0..n) admitted under leases; sets written[i]
// and gone[i] (the lease is gone or expired in the database). False when
// the statement failed as a whole.
static bool
write_leased(pl_db *db, billing_reserve_item *const *items, size_t n,
             bool *written, bool *gone)
{
	billing_sbuf a[8] = { { 0 } };
	const char *params[8];
	PGresult *r = NULL;
	bool ok;

	for (size_t i = 0; i < n; i++) {
		const billing_reserve_item *it = items[i];
		for (int k = 0; k < 8; k++)
			lb_sep(&a[k], i);
		billing_sb_elem(&a[0], it->tenant);
		billing_sb_elem(&a[1], it->metric);
		billing_sb_int(&a[2], it->amount);
		billing_sb_elem(&a[3], it->key);
		billing_sb_elem(&a[4], it->res.reservation_id);
		billing_sb_elem(&a[5], it->lease->id);
		billing_sb_int(&a[6], it->res.remaining_day);
		billing_sb_int(&a[7], it->res.remaining_month);
		written[i] = gone[i] = false;
	}
	ok = lbs_close(a, 8, params);
	if (ok)
		r = billing_exec_prepared(db, "billing_reserve_leased",
		                          LEASED_SQL, 8, params);
	lbs_free(a, 8);
	if (!ok || pl_db_result_status(r) != PL_OK) {
		if (ok)
			pl_warn("could not write %zu leased reservations: %s",
			        n,
			        r ? PQresultErrorMessage(r) : "no connection");
		PQclear(r);
		return false;
	}
	for (int row = 0; row < PQntuples(r); row++) {
		long o = strtol(PQgetvalue(r, row, 0), NULL, 10);
		if (o < 1 || o > (long)n)
			continue;
		if (strcmp(PQgetvalue(r, row, 1), "t") == 0)
			gone[o - 1] = true;
		else
			written[o - 1] = true;
	}
	PQclear(r);
	return true;
}

// The leader's part ---------------------------------------------------------

void
billing_leases_run(billing_batcher *b, pl_db *db,
                   billing_reserve_item *const *items, size_t n,
                   billing_reserve_item **exact, size_t *nexact)
{
	billing_reserve_item *leased[BILLING_MAX_BATCH];
	billing_reserve_item *waiting[BILLING_MAX_BATCH];
	lease_slot *groups[BILLING_MAX_BATCH];
	int64_t want[BILLING_MAX_BATCH];
	bool written[BILLING_MAX_BATCH], gone[BILLING_MAX_BATCH];
	size_t nl = 0, nw = 0, ng = 0, ne = 0;
	int64_t now = pl_now_ns();

	pthread_mutex_lock(&b->mtx);
	for (size_t i = 0; i < n; i++) {
		billing_reserve_item *it = items[i];
		lease_slot *s;
		bool dup = false;

		it->lease = NULL;
		it->slot = NULL;
		// The same (tenant, key) twice in a batch: 003 answers the
		// second as a retry of the first.
		for (size_t j = 0; j < i && !dup; j++)
			dup = strcmp(items[j]->key, it->key) == 0 &&
			      strcmp(items[j]->tenant, it->tenant) == 0;
		if (dup || (s = slot_get(b, it->tenant, it->metric)) == NULL) {
			exact[ne++] = it;
			continue;
		}
		slot_count(s, now, it->amount);
		if (usable(s->cur, it, now)) {
			take(s->cur, it);
			leased[nl++] = it;
			continue;
		}
		retire(b, s);
		if (!slot_eligible(b, s, now)) {
			exact[ne++] = it;
			continue;
		}
		it->slot = s;
		s->busy++;
		waiting[nw++] = it;
		for (size_t g = 0; g <= ng; g++) {
			if (g == ng) {
				groups[ng] = s;
				want[ng++] = slot_want(b, s, it->amount);
			}
			if (groups[g] == s)
				break;
		}
	}
	pthread_mutex_unlock(&b->mtx);

	if (ng > 0) {
		grant(b, db, groups, want, ng);
		now = pl_now_ns();
		pthread_mutex_lock(&b->mtx);
		for (size_t i = 0; i < nw; i++) {
			billing_reserve_item *it = waiting[i];
			lease_slot *s = it->slot;
			if (usable(s->cur, it, now)) {
				take(s->cur, it);
				leased[nl++] = it;
			} else {
				if (s->cur != NULL)
					retire(b, s);
				exact[ne++] = it;
			}
			s->busy--;
			it->slot = NULL;
		}
		pthread_mutex_unlock(&b->mtx);
	}

	// What was retired with units left goes back to the counters before
	// anything is decided against them.
	if (ne > 0)
		return_ready(b, db);

	if (nl > 0) {
		bool ok = write_leased(db, leased, nl, written, gone);
		pthread_mutex_lock(&b->mtx);
		for (size_t i = 0; i < nl; i++) {
			billing_reserve_item *it = leased[i];
			billing_lease *l = it->lease;
			if (ok && written[i]) {
				it->rc = PL_OK;
				b->leased++;
			} else {
				// A used key is replayed by 003; an item
				// whose lease is gone (reaped) or that failed
				// is decided against the counters, and the
				// lease is not used again.
				l->left += it->amount;
				exact[ne++] = it;
				if (!ok || gone[i])
					retire_lease(b, l);
			}
			l->inflight--;
			it->lease = NULL;
		}
		pthread_mutex_unlock(&b->mtx);
		return_ready(b, db);
	}
	*nexact = ne;
}
