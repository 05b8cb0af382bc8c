// The change feed behind the Authenticate cache: a thread per process
// reading tenants.auth_changes (written by triggers in the transaction of
// every change that can alter an answer) every interval, evicting what
// changed, and marking the cache fresh. When reads fail or hang the cache
// goes stale by itself after its stale_ms and the database answers.
//
// Rows are asked for by writing transaction id: xid >= the xmin of the
// previous read's snapshot. A transaction invisible to that snapshot had
// an id >= its xmin, so a row committed late (after a row with a higher
// seq) is still returned; rows returned twice are recognised by seq.
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pl/log.h"
#include "store.h"
#include "tenants.h"

// Rows per read; a longer backlog (a transaction holding xmin back for a
// long time while changes pile up) flushes the whole cache instead.
#define FEED_LIMIT 5000

// Feed rows are pruned after a day, at most once a minute per process.
#define PRUNE_EVERY_MS 60000

struct tenants_feed {
	pthread_t thread;
	pthread_mutex_t mtx;
	pthread_cond_t cv;
	bool stop;
	pl_db *db;
	tenants_cache *cache;
	int64_t interval_ms;
	tenants_feed_seen seen;
};

static int
cmp_seq(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return x < y ? -1 : x > y;
}

static void
change_of(PGresult *r, int i, tenants_change *ch)
{
	const char *kind = PQgetvalue(r, i, 3);

	memset(ch, 0, sizeof(*ch));
	// api_key and session: the credential; member: the user in the
	// tenant; user: the user everywhere; tenant: the whole tenant.
	if (strcmp(kind, "user") != 0)
		snprintf(ch->tenant_id, sizeof(ch->tenant_id), "%s",
		         PQgetvalue(r, i, 4));
	if (strcmp(kind, "member") == 0 || strcmp(kind, "user") == 0)
		snprintf(ch->user_id, sizeof(ch->user_id), "%s",
		         PQgetvalue(r, i, 5));
	if (strcmp(kind, "api_key") == 0 || strcmp(kind, "session") == 0)
		snprintf(ch->cred_id, sizeof(ch->cred_id), "%s",
		         PQgetvalue(r, i, 6));
	if (ch->tenant_id[0] == '\0' && ch->user_id[0] == '\0' &&
	    ch->cred_id[0] == '\0')
		pl_warn("auth feed: a %s change without ids evicts everything",
		        kind);
}

int
tenants_feed_poll(tenants_feed_seen *seen, pl_db *db, tenants_cache *c)
{
	char xmin[24];
	int64_t t0 = tenants_mono_ms();
	PGresult *r;
	tenants_change *ch = NULL;
	int64_t *nseq = NULL;
	uint64_t *nxid = NULL, nx;
	size_t nch = 0, nseen = 0;
	bool all;
	int rv, n;

	snprintf(xmin, sizeof(xmin), "%llu", (unsigned long long)seen->xmin);
	r = tenants_store_auth_changes(db, seen->xmin ? xmin : NULL,
	                               FEED_LIMIT);
	rv = pl_db_result_status(r);
	if (rv != PL_OK || PQntuples(r) < 1) {
		if (r != NULL)
			PQclear(r);
		return rv != PL_OK ? rv : PL_INTERNAL;
	}
	n = PQntuples(r);
	nx = strtoull(PQgetvalue(r, 0, 0), NULL, 10);
	ch = calloc((size_t)n, sizeof(*ch));
	nseq = malloc((size_t)n * sizeof(*nseq));
	nxid = malloc((size_t)n * sizeof(*nxid));
	// The first read cannot know what happened before it (entries may
	// have been stored from reads older than its snapshot): start empty.
	// A full page may hide more rows: start empty as well.
	all = seen->xmin == 0 || n >= FEED_LIMIT || ch == NULL ||
	      nseq == NULL || nxid == NULL;
	for (int i = 0; !all && i < n; i++) {
		if (PQgetisnull(r, i, 1))
			continue;
		int64_t seq = strtoll(PQgetvalue(r, i, 1), NULL, 10);
		uint64_t xid = strtoull(PQgetvalue(r, i, 2), NULL, 10);
		if (seen->n == 0 || bsearch(&seq, seen->seq, seen->n,
		                            sizeof(int64_t), cmp_seq) == NULL)
			change_of(r, i, &ch[nch++]);
		// Rows of transactions at or above the new xmin may be
		// returned again by the next read: remember them.
		if (xid >= nx) {
			nseq[nseen] = seq;
			nxid[nseen++] = xid;
		}
	}
	PQclear(r);
	if (all)
		tenants_cache_flush(c);
	else if (nch > 0)
		tenants_cache_apply(c, ch, nch);
	free(ch);
	free(seen->seq);
	free(seen->xid);
	seen->seq = nseq; // sorted: the rows came ordered by seq
	seen->xid = nxid;
	seen->n = all ? 0 : nseen;
	seen->cap = (size_t)n;
	seen->xmin = nx;
	// Everything committed before the read began is now applied.
	tenants_cache_fresh(c, t0);
	return PL_OK;
}

void
tenants_feed_seen_free(tenants_feed_seen *seen)
{
	free(seen->seq);
	free(seen->xid);
	memset(seen, 0, sizeof(*seen));
}

static void *
feed_main(void *arg)
{
	tenants_feed *f = arg;
	int64_t last_prune = tenants_mono_ms();
	bool failing = false;

	pthread_setname_np(pthread_self(), "tenants-feed");
	pthread_mutex_lock(&f->mtx);
	while (!f->stop) {
		pthread_mutex_unlock(&f->mtx);
		int64_t t0 = tenants_mono_ms();
		int rv = tenants_feed_poll(&f->seen, f->db, f->cache);
		if (rv != PL_OK && !failing) {
			pl_warn("auth feed: cannot read tenants.auth_changes "
			        "(%s); Authenticate asks the database until "
			        "it can",
			        pl_status_name(rv));
			failing = true;
		} else if (rv == PL_OK && failing) {
			pl_info("auth feed: reading again");
			failing = false;
		}
		if (rv == PL_OK && t0 - last_prune >= PRUNE_EVERY_MS) {
			if (tenants_store_prune_auth_changes(f->db) != PL_OK)
				pl_warn("auth feed: could not prune old rows");
			last_prune = t0;
		}
		struct timespec ts;
		int64_t until = t0 + f->interval_ms;
		int64_t left = until - tenants_mono_ms();
		if (left < 1)
			left = 1;
		ts = pl_timespec_in(CLOCK_MONOTONIC, left * 1000000);
		pthread_mutex_lock(&f->mtx);
		while (!f->stop && pthread_cond_timedwait(&f->cv, &f->mtx,
		                                          &ts) != ETIMEDOUT)
			;
	}
	pthread_mutex_unlock(&f->mtx);
	return NULL;
}

int
tenants_feed_start(tenants_feed **out, const char *database_url,
                   tenants_cache *cache, int64_t interval_ms)
{
	tenants_feed *f = calloc(1, sizeof(*f));
	pthread_condattr_t ca;

	*out = NULL;
	if (f == NULL || (f->db = pl_db_open(database_url)) == NULL) {
		free(f);
		return PL_RESOURCE_EXHAUSTED;
	}
	f->cache = cache;
	f->interval_ms = interval_ms > 0 ? interval_ms : 200;
	pthread_mutex_init(&f->mtx, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&f->cv, &ca);
	pthread_condattr_destroy(&ca);
	if (pthread_create(&f->thread, NULL, feed_main, f) != 0) {
		pthread_cond_destroy(&f->cv);
		pthread_mutex_destroy(&f->mtx);
		pl_db_close(f->db);
		free(f);
		return PL_RESOURCE_EXHAUSTED;
	}
	*out = f;
	return PL_OK;
}

void
tenants_feed_stop(tenants_feed *f)
{
	if (f == NULL)
		return;
	pthread_mutex_lock(&f->mtx);
	f->stop = true;
	pthread_cond_signal(&f->cv);
	pthread_mutex_unlock(&f->mtx);
	pthread_join(f->thread, NULL);
	// No one keeps the cache fresh any more: it stops answering now.
	tenants_cache_fresh(f->cache, INT64_MIN / 2);
	pthread_cond_destroy(&f->cv);
	pthread_mutex_destroy(&f->mtx);
	pl_db_close(f->db);
	tenants_feed_seen_free(&f->seen);
	free(f);
}
