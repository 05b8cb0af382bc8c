// ReserveUsage in batches (issue 4's benchmark; README "ReserveUsage").
//
// The calls that arrive while a batch runs are gathered and decided by the
// next batch with one call of billing.reserve_batch (003): one round trip
// and one commit for all of them. There is no thread of its own: the first
// call that finds no batch running leads one on its worker's connection,
// and hands the lead to the first call still queued when it is done.
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "billing.h"
#include "pl/db.h"
#include "pl/id.h"
#include "pl/log.h"

// Array literals ------------------------------------------------------------

void
billing_sb_put(billing_sbuf *b, const char *s, size_t n)
{
	if (b->oom)
		return;
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 256;
		char *p;
		while (cap < b->len + n + 1)
			cap *= 2;
		if ((p = realloc(b->p, cap)) == NULL) {
			b->oom = true;
			return;
		}
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

void
billing_sb_str(billing_sbuf *b, const char *s)
{
	billing_sb_put(b, s, strlen(s));
}

void
billing_sb_elem(billing_sbuf *b, const char *s)
{
	billing_sb_put(b, "\"", 1);
	for (const char *p = s; *p; p++) {
		size_t run = strcspn(p, "\"\\");
		billing_sb_put(b, p, run);
		p += run;
		if (*p == '\0')
			break;
		billing_sb_put(b, "\\", 1);
		billing_sb_put(b, p, 1);
	}
	billing_sb_put(b, "\"", 1);
}

void
billing_sb_int(billing_sbuf *b, int64_t v)
{
	char num[24];
	snprintf(num, sizeof(num), "%" PRId64, v);
	billing_sb_str(b, num);
}

// The batch -----------------------------------------------------------------

#define BATCH_SQL                                                              \
	"SELECT ord, outcome, reservation_id, remaining_day, "                 \
	"remaining_month, "                                                    \
	"overage, replayed, refusal, day_limit, month_limit FROM "             \
	"billing.reserve_batch($1::uuid[], $2::text[], $3::bigint[], "         \
	"$4::text[], $5::uuid[], $6::int[], $7)"

enum { A_TENANT, A_METRIC, A_AMOUNT, A_KEY, A_ID, A_DUP, A_N };

static void
one_by_one(pl_db *db, billing_reserve_item *const *items, size_t n, bool emit)
{
	for (size_t i = 0; i < n; i++) {
		billing_reserve_item *it = items[i];
		it->rc = billing_store_reserve(db, it->tenant, it->metric,
		                               it->amount, it->key, emit,
		                               &it->res);
	}
}

int
billing_store_reserve_batch(pl_db *db, billing_reserve_item *const *items,
                            size_t n, bool emit)
{
	int dup[BILLING_MAX_BATCH];
	char ids[BILLING_MAX_BATCH][PL_UUID_STRLEN + 1];
	billing_sbuf a[A_N];
	const char *params[A_N + 1];
	PGresult *r = NULL;
	int rc = PL_INTERNAL;

	if (n == 0)
		return 0;
	if (n > BILLING_MAX_BATCH) {
		one_by_one(db, items, n, emit);
		return (int)n;
	}
	// The first earlier item with the same (tenant, key), 1-based (0:
	// none): answered as a replay of it.
	for (size_t i = 0; i < n; i++) {
		dup[i] = 0;
		for (size_t j = 0; j < i && dup[i] == 0; j++)
			if (strcmp(items[j]->key, items[i]->key) == 0 &&
			    strcmp(items[j]->tenant, items[i]->tenant) == 0)
				dup[i] = (int)j + 1;
	}
	memset(a, 0, sizeof(a));
	for (int k = 0; k < A_N; k++)
		billing_sb_put(&a[k], "{", 1);
	for (size_t i = 0; i < n; i++) {
		const char *sep = i ? "," : "";
		for (int k = 0; k < A_N; k++)
			billing_sb_str(&a[k], sep);
		pl_uuid7_str(ids[i]);
		billing_sb_elem(&a[A_TENANT], items[i]->tenant);
		billing_sb_elem(&a[A_METRIC], items[i]->metric);
		billing_sb_int(&a[A_AMOUNT], items[i]->amount);
		billing_sb_elem(&a[A_KEY], items[i]->key);
		billing_sb_str(&a[A_ID], ids[i]);
		billing_sb_int(&a[A_DUP], dup[i]);
	}
	for (int k = 0; k < A_N; k++) {
		billing_sb_put(&a[k], "}", 1);
		params[k] = a[k].p;
		if (a[k].oom)
			goto out_oom;
	}
	params[A_N] = emit ? "t" : "f";

	// A key taken concurrently (23505), a deadlock or a serialization
	// failure rolled everything back: run it again (it then replays).
	for (int attempt = 0; attempt < 3; attempt++) {
		PQclear(r);
		r = billing_exec_prepared(db, "billing_reserve_batch",
		                          BATCH_SQL, A_N + 1, params);
		rc = pl_db_result_status(r);
		if (rc != PL_ALREADY_EXISTS && rc != PL_ABORTED)
			break;
	}
	if (rc == PL_OK && PQntuples(r) == (int)n) {
		bool seen[BILLING_MAX_BATCH] = { false };
		bool ok = true;
		for (int row = 0; row < (int)n; row++) {
			long o = strtol(PQgetvalue(r, row, 0), NULL, 10);
			if (o < 1 || o > (long)n || seen[o - 1]) {
				ok = false;
				break;
			}
			seen[o - 1] = true;
			billing_reserve_row(r, row, 1, &items[o - 1]->res);
			items[o - 1]->rc = PL_OK;
		}
		if (ok) {
			PQclear(r);
			for (int k = 0; k < A_N; k++)
				free(a[k].p);
			return 0;
		}
		rc = PL_INTERNAL;
	}
	if (rc == PL_UNAVAILABLE) {
		// No database: every item fails alike (one by one would only
		// wait for the connection n times).
		pl_error("could not reserve usage: %s",
		         r ? PQresultErrorMessage(r) : "no connection");
		PQclear(r);
		for (int k = 0; k < A_N; k++)
			free(a[k].p);
		for (size_t i = 0; i < n; i++)
			items[i]->rc = rc;
		return 0;
	}
	pl_warn("reserve batch of %zu refused (%s): deciding them one by one",
	        n, r ? PQresultErrorMessage(r) : pl_status_name(rc));
	PQclear(r);
	for (int k = 0; k < A_N; k++)
		free(a[k].p);
	one_by_one(db, items, n, emit);
	return (int)n;

out_oom:
	for (int k = 0; k < A_N; k++)
		free(a[k].p);
	for (size_t i = 0; i < n; i++)
		items[i]->rc = PL_RESOURCE_EXHAUSTED;
	return 0;
}

// The batcher ---------------------------------------------------------------

void
billing_batcher_init(billing_batcher *b, int max_batch, int max_running,
                     bool emit)
{
	memset(b, 0, sizeof(*b));
	pthread_mutex_init(&b->mtx, NULL);
	b->max_batch = max_batch < 1                   ? 1
	               : max_batch > BILLING_MAX_BATCH ? BILLING_MAX_BATCH
	                                               : max_batch;
	b->max_running = max_running < 1 ? 1 : max_running;
	b->emit = emit;
}

void
billing_batcher_fini(billing_batcher *b)
{
	billing_leases_fini(b);
	pthread_mutex_destroy(&b->mtx);
}

int
billing_reserve(billing_batcher *b, pl_db *db, billing_reserve_item *it)
{
	billing_reserve_n(b, db, &it, 1);
	return it->rc;
}

static bool
all_done(billing_reserve_item *const *items, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!items[i]->done)
			return false;
	return true;
}

void
billing_reserve_n(billing_batcher *b, pl_db *db,
                  billing_reserve_item *const *items, size_t n)
{
	billing_reserve_item *batch[BILLING_MAX_BATCH];
	billing_reserve_item *exact[BILLING_MAX_BATCH], **ex;
	pl_wake self; // every item's: the caller sleeps once for all
	size_t ne;

	if (n == 0)
		return;
	if (b->max_batch <= 1) {
		for (size_t i = 0; i < n; i++) {
			billing_reserve_item *it = items[i];
			it->rc = billing_store_reserve(
			        db, it->tenant, it->metric, it->amount, it->key,
			        b->emit, &it->res);
		}
		return;
	}
	pl_wake_init(&self);
	for (size_t i = 0; i < n; i++) {
		items[i]->wake = &self;
		items[i]->done = false;
		items[i]->next = i + 1 < n ? items[i + 1] : NULL;
	}
	pthread_mutex_lock(&b->mtx);
	if (b->tail)
		b->tail->next = items[0];
	else
		b->head = items[0];
	b->tail = items[n - 1];
	while (!all_done(items, n)) {
		pl_wake *wake[BILLING_MAX_BATCH + 1];
		size_t m = 0, nw = 0;
		int fell;
		// Wait while enough batches run, or while the queue is
		// empty: then our items are in batches other workers run,
		// which wake us when they are decided.
		if (b->running >= b->max_running || b->head == NULL) {
			pl_wake_wait(&self, &b->mtx);
			continue;
		}
		// Lead: take what is queued, in order.
		while (b->head != NULL && m < (size_t)b->max_batch) {
			batch[m++] = b->head;
			b->head = b->head->next;
		}
		if (b->head == NULL)
			b->tail = NULL;
		b->running++;
		pthread_mutex_unlock(&b->mtx);

		// A batch of one costs PostgreSQL more than the one-call
		// function of 002 (425 against 306 us of CPU with one client:
		// bench_billing --threads 1): a lone call takes that path.
		// Under leases first (lease.c); what they do not admit is
		// decided against the counters.
		ne = m;
		ex = batch;
		if (b->lease_ttl_ms > 0) {
			billing_leases_run(b, db, batch, m, exact, &ne);
			ex = exact;
		}
		fell = 0;
		if (ne == 1) {
			billing_reserve_item *x = ex[0];
			x->rc = billing_store_reserve(db, x->tenant, x->metric,
			                              x->amount, x->key,
			                              b->emit, &x->res);
		} else if (ne > 1) {
			fell = billing_store_reserve_batch(db, ex, ne, b->emit);
		}

		pthread_mutex_lock(&b->mtx);
		b->running--;
		b->batches++;
		b->items += m;
		b->fallbacks += (uint64_t)fell;
		// The first call still queued leads the next batch: woken
		// first, so that batch starts while the followers wake.
		if (b->head != NULL && b->head->wake != &self) {
			pl_wake_promise(b->head->wake);
			wake[nw++] = b->head->wake;
		}
		// One wake-up per item of another caller (a caller of several
		// takes one per item: its wake counts them).
		for (size_t i = 0; i < m; i++) {
			batch[i]->done = true;
			if (batch[i]->wake != &self) {
				pl_wake_promise(batch[i]->wake);
				wake[nw++] = batch[i]->wake;
			}
		}
		// Woken after the unlock: a follower runs at once instead of
		// waking only to wait for the mutex.
		pl_wake_post_unlocked(&b->mtx, wake, nw);
	}
	// Done: out of the queue and every batch, nothing promises more.
	pl_wake_fini(&self, &b->mtx);
}
