// Background workers: inbox processing (raw bodies -> messages and
// statuses), the bot's turn (billing, agent, reply queued), and delivery
// to the providers with retries and a per-channel send rate. Each thread
// owns its connection, HTTP client and arena; work is claimed in the
// database in batches (one statement per stage and batch, migration 005),
// so any number of threads and replicas share it; the calls of a batch
// (billing, agents, providers) run concurrently on a pool of call threads.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "pl/log.h"
#include "messaging.h"
#include "engage.h"

#define MAX_THREADS 32
#define RATE_SLOTS  128
#define SET_SLOTS   256

typedef struct rate_slot {
	char channel[40];
	double tokens;
	int64_t at_ns;
} rate_slot;

typedef struct set_slot {
	char tenant[40];
	int64_t window_ms;
	int64_t at_ns;
} set_slot;

typedef struct thr_arg {
	struct msg_workers *w;
	int kind; // 0 inbox, 1 reply, 2 delivery
} thr_arg;

typedef struct pool_thr {
	struct msg_workers *w;
	pthread_t th;
} pool_thr;

struct pool_job;

struct msg_workers {
	msg_service *s;
	thr_arg args[MAX_THREADS];
	pthread_t th[MAX_THREADS];
	int nth;
	volatile bool stop;
	pthread_mutex_t rmu;
	rate_slot rate[RATE_SLOTS];
	pthread_mutex_t smu; // the settings cache
	set_slot set[SET_SLOTS];
	// the call pool
	pthread_mutex_t pmu;
	pthread_cond_t pcv, pdone;
	struct pool_job *jobs;
	pool_thr pool[MAX_THREADS];
	int npool;
	// agents answered UNIMPLEMENTED to ReplyBatch (an older replica in a
	// rolling deploy): turns go one Reply each until then (ns)
	_Atomic int64_t batch_off_until;
	// the same for billing's ReserveUsageBatch
	_Atomic int64_t reserve_off_until;
};

void
messaging_kick(msg_service *s)
{
	pthread_mutex_lock(&s->mu);
	s->kick++;
	pthread_cond_broadcast(&s->cv);
	for (int k = 0; k < 3; k++) {
		s->kickk[k]++;
		pthread_cond_broadcast(&s->cvk[k]);
	}
	pthread_mutex_unlock(&s->mu);
}

void
messaging_kick_kind(msg_service *s, msg_work kind)
{
	pthread_mutex_lock(&s->mu);
	s->kickk[kind]++;
	s->unclaimed[kind]++;
	// One waiting worker is enough: it loops while it finds work. While
	// one is at work, the work waits for its next round (which it begins
	// at once: it saw the kick), so that rounds are larger and fewer:
	// every round costs its statements and commits whatever it holds
	// (bench_e2e at 500 msgs/s: 3.5 ms of CPU a message with three inbox
	// workers woken for every webhook, 2.6 with one). Another worker is
	// woken when the backlog is a quarter of a batch: one worker's
	// rounds in a row no longer keep up.
	if (s->busy[kind] == 0 ||
	    s->unclaimed[kind] >=
	            (uint64_t)(s->batch / 4 > 1 ? s->batch / 4 : 1))
		pthread_cond_signal(&s->cvk[kind]);
	pthread_mutex_unlock(&s->mu);
}

// The kind of worker the calling thread is (set by worker_main; -1 on other
// threads).
static __thread int tl_kind = -1;

// Outside calls a worker waits on within its round: the provider sends and
// the replies of LLM agents (asked alone). How long they took lately
// (nanoseconds, moving average of 1/8), per process.
enum { OUT_SEND = 0, OUT_LLM = 1 };
static _Atomic int64_t out_avg_ns[2];

// An outside wait that lasts longer than this (lately, on average) is not
// "at work" for the kick policy: webhooks that arrive meanwhile wake
// another worker instead of waiting for this round's end. A provider on
// the internet answers in hundreds of milliseconds and an LLM in seconds;
// the bench's provider on loopback in well under one.
#define OUTSIDE_SLOW_NS (5 * 1000000LL)

// Before an outside wait: true when the calling worker counts as waiting
// (not at work) until outside_end, and what came since its round began has
// woken another worker.
static bool
outside_begin(msg_service *s, int which)
{
	if (tl_kind < 0 || out_avg_ns[which] < OUTSIDE_SLOW_NS)
		return false;
	pthread_mutex_lock(&s->mu);
	s->busy[tl_kind]--;
	if (s->unclaimed[tl_kind] > 0)
		pthread_cond_signal(&s->cvk[tl_kind]);
	pthread_mutex_unlock(&s->mu);
	return true;
}

static void
outside_end(msg_service *s, int which, bool released, int64_t t0)
{
	int64_t avg = out_avg_ns[which];

	out_avg_ns[which] = avg + (pl_now_ns() - t0 - avg) / 8;
	if (!released)
		return;
	pthread_mutex_lock(&s->mu);
	s->busy[tl_kind]++;
	pthread_mutex_unlock(&s->mu);
}

// Sleeps until work of this kind is announced in this process or the poll
// interval passes (work queued by other replicas is found by polling).
static void
idle(msg_service *s, int kind, uint64_t seen)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_nsec += (long)(s->poll_ms % 1000) * 1000000L;
	ts.tv_sec += s->poll_ms / 1000 + ts.tv_nsec / 1000000000L;
	ts.tv_nsec %= 1000000000L;
	pthread_mutex_lock(&s->mu);
	while (s->kickk[kind] == seen && !s->workers->stop)
		if (pthread_cond_timedwait(&s->cvk[kind], &s->mu, &ts) != 0)
			break;
	pthread_mutex_unlock(&s->mu);
}

// ---------------------------------------------------------------------------
// Call pool: the agent, billing and provider calls of a batch run
// concurrently on PARLEY_MESSAGING_CALL_THREADS threads (each with its own
// HTTP client); the worker that submitted the batch takes items too and
// returns when all are done. Any number of workers submit at once.

typedef void (*pool_fn)(void *ctx, size_t i, pl_httpc *http);

typedef struct pool_job {
	pool_fn fn;
	void *ctx;
	size_t n, next, done;
	struct pool_job *link;
	bool linked; // on w->jobs, for the pool's threads to take
} pool_job;

static pool_job *
pool_pick(msg_workers *w)
{
	for (pool_job *j = w->jobs; j != NULL; j = j->link)
		if (j->next < j->n)
			return j;
	return NULL;
}

static void *
pool_main(void *arg)
{
	pool_thr *t = arg;
	msg_workers *w = t->w;
	pl_httpc *http = pl_httpc_open();

	pthread_setname_np(pthread_self(), "msg-pool");
	pthread_mutex_lock(&w->pmu);
	while (!w->stop) {
		pool_job *j = pool_pick(w);
		size_t i;
		if (j == NULL) {
			pthread_cond_wait(&w->pcv, &w->pmu);
			continue;
		}
		i = j->next++;
		pthread_mutex_unlock(&w->pmu);
		j->fn(j->ctx, i, http);
		pthread_mutex_lock(&w->pmu);
		if (++j->done == j->n)
			pthread_cond_broadcast(&w->pdone);
	}
	pthread_mutex_unlock(&w->pmu);
	if (http != NULL)
		pl_httpc_close(http);
	return NULL;
}

// Offers fn(ctx, i) for i in [0, n) to the pool's threads and returns at
// once, waking `wake` of them; pool_wait waits for them, running on the
// caller what no thread took yet. Without pool threads everything runs in
// pool_wait.
static void
pool_start(msg_workers *w, pool_job *j, pool_fn fn, void *ctx, size_t n,
           size_t wake)
{
	*j = (pool_job){ fn, ctx, n, 0, 0, NULL, false };
	if (w == NULL || w->npool == 0 || n == 0)
		return;
	pthread_mutex_lock(&w->pmu);
	j->link = w->jobs;
	w->jobs = j;
	j->linked = true;
	// One thread an item, not all of them: a job of one (the early
	// reservation) woke the eight threads of the pool to run on one.
	for (size_t k = 0; k < wake && k < (size_t)w->npool; k++)
		pthread_cond_signal(&w->pcv);
	pthread_mutex_unlock(&w->pmu);
}

static void
pool_wait(msg_workers *w, pool_job *j, pl_httpc *http)
{
	if (!j->linked) {
		for (; j->next < j->n; j->next++)
			j->fn(j->ctx, j->next, http);
		j->done = j->n;
		return;
	}
	pthread_mutex_lock(&w->pmu);
	while (j->next < j->n) {
		size_t i = j->next++;
		pthread_mutex_unlock(&w->pmu);
		j->fn(j->ctx, i, http);
		pthread_mutex_lock(&w->pmu);
		j->done++;
	}
	while (j->done < j->n)
		pthread_cond_wait(&w->pdone, &w->pmu);
	for (pool_job **pp = &w->jobs; *pp != NULL; pp = &(*pp)->link)
		if (*pp == j) {
			*pp = j->link;
			break;
		}
	j->linked = false;
	pthread_mutex_unlock(&w->pmu);
}

// Runs fn(ctx, i) for i in [0, n) on the pool and the calling thread; a
// single item on the calling thread alone.
static void
pool_run(msg_workers *w, pool_fn fn, void *ctx, size_t n, pl_httpc *http)
{
	pool_job j;

	if (n == 1) {
		fn(ctx, 0, http);
		return;
	}
	// The caller takes an item at once: a thread woken for it would find
	// nothing to do (at 500 msgs/s, one wake-up a round for nothing).
	pool_start(w, &j, fn, ctx, n, n - 1);
	pool_wait(w, &j, http);
}

// ---------------------------------------------------------------------------
// Inbox

// Cuts text at max bytes without splitting a UTF-8 sequence.
static void
cut_utf8(char *text, size_t max)
{
	size_t n = strlen(text);

	if (n <= max)
		return;
	while (max > 0 && ((unsigned char)text[max] & 0xc0) == 0x80)
		max--;
	text[max] = '\0';
}

// Billing's answer for the turns a round claims, asked on the call pool
// while the round's transaction commits, instead of after the commit.
// Asked only for what each turn reserves anyway, with the same key
// (reserve_key), and only for the claimed turns: each has nothing pending
// before it in its conversation, so a conversation's messages are still
// reserved in their order. (Until 2026-11-24 every new message of the
// round was asked before the claim; a later round of the same
// conversation on another worker could then reach billing first, and the
// last message under a daily limit was not the one refused:
// test_daily_quota under load.) Not for a tenant with a burst window: a
// burst reserves its head only. The turns use the answers that match
// their tenant and key; the rest reserve as before.
typedef struct early_reserve {
	pool_job job;
	msg_service *s;
	pl_arena arena; // the call's own: the worker's is in use meanwhile
	const char **tenants, **keys, **why;
	int *rv;
	size_t n;
	int call_rv;
	bool started;
} early_reserve;

// The batch: one transaction (opened as tenant "*") locks up to `batch` due
// rows (SKIP LOCKED: the locks are the lease, a crash rolls it all back and
// frees them), parses them, and ingests every item and marks the rows done
// in one statement. A batch that fails is retried row by row, and a row that
// fails alone goes to the leased path below (one transaction per item).
typedef struct inbox_batch {
	msg_service *s;
	pl_arena *a;
	int max;
	size_t nrows, nnew;
	msg_pending *pds; // claimed for their bot turn in this transaction
	size_t npd;
	early_reserve *early; // NULL: the turns reserve after the commit
} inbox_batch;

static bool burst_window_known(msg_service *s, const char *tenant, int64_t *ms);

static const char *reserve_key(const msg_pending *pd);

static void
early_fn(void *ctx, size_t i, pl_httpc *http)
{
	early_reserve *e = ctx;

	(void)i;
	(void)http;
	e->call_rv =
	        messaging_peers_reserve_batch(e->s->peers, e->tenants, e->keys,
	                                      e->n, &e->arena, e->rv, e->why);
}

// Starts the early reservation of the turns the round claimed (x->pds),
// once even when the transaction is tried again. A tenant whose burst
// window is not in the settings cache (it is read in a transaction of its
// own, and this one is open) reserves after the commit, as before, and
// fills the cache for the next rounds.
static void
early_start(inbox_batch *x)
{
	early_reserve *e = x->early;
	msg_workers *w = x->s->workers;
	int64_t win;
	size_t cap = x->npd < MSG_RESERVE_BATCH ? x->npd : MSG_RESERVE_BATCH;

	if (e == NULL || e->started)
		return;
	e->started = true;
	e->call_rv = PL_UNAVAILABLE; // until the call answers
	if (w == NULL || w->npool == 0 || cap == 0 ||
	    pl_now_ns() < w->reserve_off_until)
		return;
	e->tenants = pl_arena_alloc(&e->arena, cap * sizeof(char *));
	e->keys = pl_arena_alloc(&e->arena, cap * sizeof(char *));
	e->why = pl_arena_zalloc(&e->arena, cap * sizeof(char *));
	e->rv = pl_arena_zalloc(&e->arena, cap * sizeof(int));
	if (e->tenants == NULL || e->keys == NULL || e->why == NULL ||
	    e->rv == NULL)
		return;
	for (size_t i = 0; i < x->npd && e->n < cap; i++) {
		const msg_pending *pd = &x->pds[i];
		if (!burst_window_known(x->s, pd->tenant_id, &win) || win != 0)
			continue;
		e->tenants[e->n] = pl_arena_strdup(&e->arena, pd->tenant_id);
		e->keys[e->n] = pl_arena_strdup(&e->arena, reserve_key(pd));
		if (e->tenants[e->n] == NULL || e->keys[e->n] == NULL) {
			e->n = 0;
			return;
		}
		e->n++;
	}
	if (e->n > 0)
		pool_start(w, &e->job, early_fn, e, 1, 1);
}

// Waits for the early reservation, if one was started.
static void
early_wait(msg_service *s, early_reserve *e)
{
	if (e->n > 0) // the call was started (early_start)
		pool_wait(s->workers, &e->job, NULL);
}

// A claimed turn as ingest_batch answered it (out->claimed). False when
// the arena is full.
static bool
pending_from_ingest(pl_arena *a, const msg_ingest *in, const msg_ingested *out,
                    msg_pending *pd)
{
	memset(pd, 0, sizeof(*pd));
	snprintf(pd->tenant_id, sizeof(pd->tenant_id), "%s", in->tenant_id);
	snprintf(pd->message_id, sizeof(pd->message_id), "%s", out->message_id);
	snprintf(pd->conversation_id, sizeof(pd->conversation_id), "%s",
	         out->conversation_id);
	snprintf(pd->channel_id, sizeof(pd->channel_id), "%s", in->channel_id);
	snprintf(pd->contact_id, sizeof(pd->contact_id), "%s", out->contact_id);
	snprintf(pd->provider_message_id, sizeof(pd->provider_message_id), "%s",
	         in->item->provider_message_id);
	snprintf(pd->owner, sizeof(pd->owner), "bot");
	snprintf(pd->agent_id, sizeof(pd->agent_id), "%s", out->agent_id);
	snprintf(pd->contact_name, sizeof(pd->contact_name), "%s",
	         out->contact_name);
	snprintf(pd->contact_phone, sizeof(pd->contact_phone), "%s",
	         out->contact_phone);
	snprintf(pd->created_at, sizeof(pd->created_at), "%s", out->created_at);
	pd->text = pl_arena_strdup(a, in->item->text ? in->item->text : "");
	return pd->text != NULL;
}

static int
pending_order(const void *a, const void *b)
{
	// Ids are UUIDv7, monotonic in this process: arrival order.
	return strcmp(((const msg_pending *)a)->message_id,
	              ((const msg_pending *)b)->message_id);
}

// The round's bot turns, in arrival order: those ingest_batch claimed as
// it inserted them (what a new customer's first message needs came with
// it; the others' is read with reply_context), and the possible keywords
// reply_claim_ids claims when engage_on_inbound left them pending. A new
// message ingest_batch did not claim has a message pending before it in
// its conversation: the reply workers answer it after that one.
static int
inbox_claim(pl_db *db, inbox_batch *x, const msg_ingest *in,
            const msg_ingested *out, size_t k)
{
	const char **ts = pl_arena_zalloc(x->a, x->nnew * sizeof(*ts));
	const char **ids = pl_arena_zalloc(x->a, x->nnew * sizeof(*ids));
	const char **cts = pl_arena_zalloc(x->a, x->nnew * sizeof(*cts));
	const char **cids = pl_arena_zalloc(x->a, x->nnew * sizeof(*cids));
	msg_pending *kw = NULL, *cx = NULL;
	size_t m = 0, c = 0, nkw = 0, ncx = 0, nin = 0, seen = 0;
	int rv;

	if (ts == NULL || ids == NULL || cts == NULL || cids == NULL)
		return PL_RESOURCE_EXHAUSTED;
	for (size_t i = 0; i < k && seen < x->nnew; i++) {
		if (in[i].item->kind != MSG_ITEM_MESSAGE || out[i].duplicate)
			continue;
		seen++;
		if (out[i].message_id[0] == '\0')
			continue;
		if (out[i].context) {
			nin++;
		} else if (out[i].claimed) {
			cts[c] = in[i].tenant_id;
			cids[c++] = out[i].message_id;
		} else if (out[i].keyword) {
			ts[m] = in[i].tenant_id;
			ids[m++] = out[i].message_id;
		}
	}
	if ((rv = messaging_store_reply_claim_ids_tx(db, ts, ids, m,
	                                             x->s->lease_ms, 10, x->a,
	                                             &kw, &nkw)) != PL_OK ||
	    (rv = messaging_store_reply_context_tx(db, cts, cids, c, 10, x->a,
	                                           &cx, &ncx)) != PL_OK)
		return rv;
	if (nin + nkw + ncx == 0)
		return PL_OK;
	x->pds = pl_arena_zalloc(x->a, (nin + nkw + ncx) * sizeof(*x->pds));
	if (x->pds == NULL)
		return PL_RESOURCE_EXHAUSTED;
	for (size_t i = 0; i < k && x->npd < nin; i++)
		if (in[i].item->kind == MSG_ITEM_MESSAGE && !out[i].duplicate &&
		    out[i].context &&
		    !pending_from_ingest(x->a, &in[i], &out[i],
		                         &x->pds[x->npd++]))
			return PL_RESOURCE_EXHAUSTED;
	if (nkw > 0)
		memcpy(x->pds + x->npd, kw, nkw * sizeof(*kw));
	x->npd += nkw;
	if (ncx > 0)
		memcpy(x->pds + x->npd, cx, ncx * sizeof(*cx));
	x->npd += ncx;
	if (x->npd > 1)
		qsort(x->pds, x->npd, sizeof(*x->pds), pending_order);
	return PL_OK;
}

static int
inbox_batch_fn(pl_db *db, void *arg)
{
	inbox_batch *x = arg;
	msg_inbox_row *rows;
	msg_items *items;
	msg_ingest *in;
	msg_ingested *out;
	const char **errs;
	size_t total = 0, k = 0;
	int rv;

	x->nrows = x->nnew = 0;
	if ((rv = messaging_store_inbox_lock_batch(db, x->max, x->a, &rows,
	                                           &x->nrows)) != PL_OK)
		return rv;
	if (x->nrows == 0)
		return PL_OK;
	items = pl_arena_zalloc(x->a, x->nrows * sizeof(*items));
	errs = pl_arena_zalloc(x->a, x->nrows * sizeof(*errs));
	if (items == NULL || errs == NULL)
		return PL_RESOURCE_EXHAUSTED;
	for (size_t r = 0; r < x->nrows; r++) {
		char err[256] = "";
		if (messaging_parse_webhook(rows[r].channel_type, rows[r].body,
		                            rows[r].len, x->a, &items[r], err,
		                            sizeof(err)) != PL_OK) {
			errs[r] = pl_arena_strdup(x->a, err);
			items[r].n = 0;
		}
		total += items[r].n;
	}
	in = pl_arena_zalloc(x->a, (total + 1) * sizeof(*in));
	out = pl_arena_zalloc(x->a, (total + 1) * sizeof(*out));
	if (in == NULL || out == NULL)
		return PL_RESOURCE_EXHAUSTED;
	for (size_t r = 0; r < x->nrows; r++) {
		msg_channel ch;
		if (items[r].n == 0)
			continue;
		// Cached (channel cache); a miss asks tenants with the rows
		// locked.
		if (messaging_peers_channel(x->s->peers, rows[r].channel_id,
		                            rows[r].channel_type,
		                            rows[r].tenant_id, NULL,
		                            &ch) != PL_OK)
			ch.agent_id[0] = '\0';
		for (size_t i = 0; i < items[r].n; i++) {
			msg_item *it = &items[r].v[i];
			if (it->text != NULL)
				cut_utf8((char *)it->text, MSG_MAX_TEXT);
			in[k].tenant_id = rows[r].tenant_id;
			in[k].channel_id = rows[r].channel_id;
			in[k].channel_type = rows[r].channel_type;
			in[k].agent_id = pl_arena_strdup(x->a, ch.agent_id);
			in[k].item = it;
			in[k].reply_wanted = true;
			k++;
		}
	}
	if ((rv = messaging_store_ingest_batch_tx(db, in, k, rows, errs,
	                                          x->nrows, x->s->lease_ms,
	                                          x->a, out)) != PL_OK)
		return rv;
	for (size_t i = 0; i < k; i++)
		if (in[i].item->kind == MSG_ITEM_MESSAGE && !out[i].duplicate)
			x->nnew++;
	// The new messages' bot turns are taken here, in this transaction,
	// when nothing is ahead of them in their conversation: the worker
	// answers them next without a reply claim.
	x->pds = NULL;
	x->npd = 0;
	if (x->nnew > 0) {
		rv = inbox_claim(db, x, in, out, k);
		if (rv == PL_OK)
			early_start(x);
	}
	return rv;
}

static int inbox_leased(msg_service *s, pl_db *db, pl_arena *a);

static void reply_run(msg_service *s, pl_db *db, pl_httpc *http, pl_arena *a,
                      msg_pending *pds, size_t n, const early_reserve *e);

// After a batch committed: the turns it claimed are answered here; the
// reply workers are woken for the rest.
static void
inbox_after(msg_service *s, pl_db *db, pl_httpc *http, inbox_batch *x)
{
	if (x->nnew > x->npd)
		messaging_kick_kind(s, MSG_WORK_REPLY);
	if (x->npd == 0)
		return;
	reply_run(s, db, http, x->a, x->pds, x->npd, x->early);
	// A conversation's next message waited for these.
	if (x->nnew > x->npd)
		messaging_kick_kind(s, MSG_WORK_REPLY);
}

int
messaging_inbox_once(msg_service *s, pl_db *db, pl_httpc *http, pl_arena *a)
{
	early_reserve e = { .s = s };
	inbox_batch x = { s, a, (int)s->batch, 0, 0, NULL, 0, &e };
	size_t tries;
	int rv, done = 0;

	// Service-level: the inbox spans tenants (tenant "*"); the batch
	// statement works under each item's tenant.
	pl_arena_init(&e.arena, 0, 4 << 20);
	rv = pl_db_tx(db, "*", inbox_batch_fn, &x);
	early_wait(s, &e);
	if (rv == PL_OK)
		inbox_after(s, db, http, &x);
	pl_arena_fini(&e.arena);
	if (rv == PL_OK)
		return (int)x.nrows;
	pl_warn("an inbox batch of %zu rows failed (%s); retrying row by row",
	        x.nrows, pl_status_name(rv));
	tries = x.nrows > 0 ? x.nrows : 1;
	for (size_t i = 0; i < tries; i++) {
		inbox_batch one = { s, a, 1, 0, 0, NULL, 0, NULL };
		rv = pl_db_tx(db, "*", inbox_batch_fn, &one);
		if (rv == PL_OK && one.nrows == 0)
			break;
		if (rv == PL_OK) {
			done++;
			inbox_after(s, db, http, &one);
			continue;
		}
		pl_warn("inbox row failed in one transaction (%s); retrying "
		        "it item by item",
		        pl_status_name(rv));
		if (inbox_leased(s, db, a) < 0)
			return -rv;
		done++;
	}
	return done;
}

// The leased path: claim under a lease, one transaction per item.
static int
inbox_leased(msg_service *s, pl_db *db, pl_arena *a)
{
	msg_inbox_row row;
	msg_items items;
	msg_channel ch;
	char err[256] = "";
	int got, rv, done = 0;

	got = messaging_store_inbox_claim(db, s->lease_ms, a, &row);
	if (got <= 0)
		return got;
	rv = messaging_parse_webhook(row.channel_type, row.body, row.len, a,
	                             &items, err, sizeof(err));
	if (rv != PL_OK) {
		messaging_store_inbox_done(db, &row, err);
		return 1;
	}
	if (messaging_peers_channel(s->peers, row.channel_id, row.channel_type,
	                            row.tenant_id, NULL, &ch) != PL_OK)
		memset(&ch, 0, sizeof(ch));
	for (size_t i = 0; i < items.n; i++) {
		msg_item *it = &items.v[i];
		if (it->kind == MSG_ITEM_MESSAGE) {
			msg_ingest in = { row.tenant_id,
				          row.channel_id,
				          row.channel_type,
				          ch.agent_id,
				          it,
				          true };
			msg_message_pb *m;
			bool dup;
			if (it->text != NULL)
				cut_utf8((char *)it->text, MSG_MAX_TEXT);
			rv = messaging_store_ingest(db, &in, a, &m, &dup);
		} else {
			bool applied, deferred;
			rv = messaging_store_apply_status(
			        db, row.tenant_id, row.channel_id, it, a,
			        &applied, &deferred, NULL);
		}
		if (rv == PL_INVALID_ARGUMENT) {
			// The database refuses the item itself (a data
			// exception, a constraint): no later attempt can
			// store it, and leaving the row would hold back
			// every later body of its senders. The row keeps
			// the reason; the other items go on.
			pl_error("inbox row %s item %zu cannot be stored "
			         "(%s); left out",
			         row.id, i, pl_status_name(rv));
			if (err[0] == '\0')
				snprintf(err, sizeof(err),
				         "item %zu cannot be stored (%s)", i,
				         pl_status_name(rv));
			continue;
		}
		if (rv != PL_OK) {
			// Leave the row for a later attempt (its lease runs
			// out); what was stored is recognised as duplicate.
			pl_warn("could not process inbox row %s item %zu: %s",
			        row.id, i, pl_status_name(rv));
			return 1;
		}
		done++;
	}
	messaging_store_inbox_done(db, &row, err[0] != '\0' ? err : NULL);
	if (done > 0)
		messaging_kick_kind(s, MSG_WORK_REPLY);
	return 1;
}

// ---------------------------------------------------------------------------
// The bot's turn

static const char *
handoff_reason_name(int r)
{
	static const char *const n[] = {
		"",          "keyword", "low_confidence",
		"max_turns", "tool",    "no_answer"
	};
	return r >= 0 && r < 6 ? n[r] : "";
}

static char *
reply_metadata(pl_arena *a, const Parley__Agents__V1__ReplyResponse *rr)
{
	json_t *o = json_object();
	json_t *bot = json_object();
	char *s, *r;

	json_object_set_new(bot, "intent",
	                    json_string(rr->intent ? rr->intent : ""));
	json_object_set_new(bot, "confidence", json_real(rr->confidence));
	// Leads and orders tables come with the engagement issue: until
	// then what the agent captured and proposed is kept here.
	if (rr->captured != NULL &&
	    ((rr->captured->name && rr->captured->name[0]) ||
	     (rr->captured->email && rr->captured->email[0]) ||
	     (rr->captured->phone && rr->captured->phone[0])))
		json_object_set_new(
		        bot, "captured_lead",
		        json_pack("{s:s, s:s, s:s}", "name",
		                  rr->captured->name ? rr->captured->name : "",
		                  "email",
		                  rr->captured->email ? rr->captured->email
		                                      : "",
		                  "phone",
		                  rr->captured->phone ? rr->captured->phone
		                                      : ""));
	if (rr->n_actions > 0) {
		json_t *arr = json_array();
		for (size_t i = 0; i < rr->n_actions; i++) {
			const Parley__Agents__V1__ProposedAction *pa =
			        rr->actions[i];
			json_t *payload = NULL;
			if (pa->payload && pa->payload->text &&
			    pa->payload->text[0])
				payload =
				        json_loads(pa->payload->text, 0, NULL);
			json_array_append_new(
			        arr,
			        json_pack("{s:s, s:s, s:o}", "kind",
			                  pa->kind ? pa->kind : "", "summary",
			                  pa->summary ? pa->summary : "",
			                  "payload",
			                  payload ? payload : json_object()));
		}
		json_object_set_new(bot, "proposed_actions", arr);
	}
	json_object_set_new(o, "bot", bot);
	s = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	r = s ? pl_arena_strdup(a, s) : NULL;
	free(s);
	return r;
}

// One message's turn (on a pool thread): quota, owner, agent. Its
// allocations go to the task's own arena.
typedef enum reply_next {
	REPLY_FINISH = 0, // rr is the outcome
	REPLY_SOON = 1,   // billing could not be asked: try again in a second
	REPLY_LEASE = 2,  // the agent could not answer: after the lease
	REPLY_LATER = 3,  // its burst window is still open (retried then)
	REPLY_AGENT = 4,  // q is the agent's request, not asked yet
} reply_next;

typedef struct reply_task {
	msg_service *s;
	msg_pending *pd;
	msg_reply_result rr;
	reply_next next;
	bool later; // set before the turn: not answered in this batch
	// REPLY_AGENT: the request, and whether it goes alone (Reply, not in
	// a ReplyBatch)
	Parley__Agents__V1__ReplyRequest q;
	Parley__Agents__V1__ReplyContact c;
	bool alone;
	// reserved: billing already answered the quota (ReserveUsageBatch)
	bool reserved;
	int reserve_rv;
	const char *reserve_why;
	// the burst answered with it (reply_burst_window_ms)
	char (*burst_ids)[40];
	size_t nburst;
	pl_arena arena;
} reply_task;

// A message's key with billing: the provider's id, or the message's when
// there is none or it is longer than billing takes.
static const char *
reserve_key(const msg_pending *pd)
{
	return pd->provider_message_id[0] &&
	                       strlen(pd->provider_message_id) <= MSG_MAX_KEY
	               ? pd->provider_message_id
	               : pd->message_id;
}

static void
reply_task_fn(void *ctx, size_t i, pl_httpc *http)
{
	reply_task *t = &((reply_task *)ctx)[i];
	msg_service *s = t->s;
	msg_pending *pd = t->pd;
	msg_reply_result *rr = &t->rr;
	pl_arena *a = &t->arena;
	msg_channel ch = { 0 };
	char why[256] = "";
	int rv;

	(void)http;
	memset(rr, 0, sizeof(*rr));
	t->next = REPLY_FINISH;
	rr->outcome = "no_agent";
	if (t->later) {
		t->next = REPLY_LATER;
		return;
	}
	// The quota first: a refused message is stored but never answered.
	// The key is the provider's id, or the message's when there is none
	// or it is longer than billing takes.
	if (t->reserved) {
		rv = t->reserve_rv;
		snprintf(why, sizeof(why), "%s", t->reserve_why);
	} else {
		rv = messaging_peers_reserve(s->peers, pd->tenant_id,
		                             reserve_key(pd), why, sizeof(why));
	}
	if (rv == PL_RESOURCE_EXHAUSTED) {
		rr->outcome = "quota_exceeded";
		rr->limit_why = pl_arena_strdup(a, why[0] ? why : "messages");
		return;
	}
	if (rv == PL_INVALID_ARGUMENT) {
		// Billing will never take this request: asking again every
		// second would hold the conversation back for ever.
		pl_error("billing refused the reservation for message %s: %s",
		         pd->message_id, why[0] ? why : pl_status_name(rv));
		rr->outcome = "billing_refused";
		return;
	}
	if (rv != PL_OK) {
		// Billing could not be asked, or has no subscription yet (a
		// tenant's first message can beat its trial): try again soon.
		pl_warn("could not reserve usage for message %s: %s",
		        pd->message_id, pl_status_name(rv));
		t->next = REPLY_SOON;
		return;
	}
	if (strcmp(pd->owner, "human") == 0) {
		rr->outcome = "human_owned";
		return;
	}
	if (messaging_peers_channel(s->peers, pd->channel_id, 0, pd->tenant_id,
	                            NULL, &ch) == PL_OK &&
	    ch.agent_id[0] == '\0') {
		// A cached "no agent" may predate the agent's attachment: ask
		// tenants once more before leaving the customer unanswered.
		messaging_peers_forget(s->peers, pd->channel_id);
		if (messaging_peers_channel(s->peers, pd->channel_id, 0,
		                            pd->tenant_id, NULL, &ch) != PL_OK)
			ch.agent_id[0] = '\0';
	}
	if (ch.agent_id[0] != '\0')
		snprintf(pd->agent_id, sizeof(pd->agent_id), "%s", ch.agent_id);
	if (pd->agent_id[0] == '\0' || !messaging_peers_has_agents(s->peers) ||
	    pd->text == NULL || pd->text[0] == '\0') {
		rr->outcome = pd->agent_id[0] ? "no_reply" : "no_agent";
		return;
	}
	{
		Parley__Agents__V1__ReplyRequest *q = &t->q;
		Parley__Agents__V1__ReplyContact *c = &t->c;
		parley__agents__v1__reply_request__init(q);
		parley__agents__v1__reply_contact__init(c);
		q->tenant_id = pd->tenant_id;
		q->agent_id = pd->agent_id;
		q->session_key = pd->conversation_id;
		q->channel_id = pd->channel_id;
		q->channel_type = ch.type;
		q->conversation_id = pd->conversation_id;
		c->id = pd->contact_id;
		c->name = pd->contact_name;
		c->phone = pd->contact_phone;
		c->language = pd->contact_language;
		q->contact = c;
		// agents.Reply takes texts up to MSG_MAX_TEXT: rows stored
		// longer before that limit are cut (arena copies).
		cut_utf8(pd->text, MSG_MAX_TEXT);
		for (size_t i = 0; i < pd->n_history; i++)
			if (pd->history[i]->content != NULL)
				cut_utf8(pd->history[i]->content, MSG_MAX_TEXT);
		q->text = pd->text;
		q->message_id = pd->message_id;
		q->history = pd->history;
		q->n_history = pd->n_history;
		t->next = REPLY_AGENT; // asked by reply_agents
	}
}

// The agent's answer to a turn (rv: its status, resp when PL_OK) as the
// turn's outcome.
static void
reply_outcome(reply_task *t, int rv, const char *why,
              Parley__Agents__V1__ReplyResponse *resp)
{
	msg_pending *pd = t->pd;
	msg_reply_result *rr = &t->rr;
	pl_arena *a = &t->arena;

	t->next = REPLY_FINISH;
	if (rv == PL_FAILED_PRECONDITION || rv == PL_NOT_FOUND) {
		rr->outcome = "no_agent";
		return;
	}
	if (rv == PL_INVALID_ARGUMENT) {
		// The agent will never take this turn: asking again after
		// every lease would hold the conversation's later messages
		// back for ever.
		pl_error("agent refused message %s: %s %s", pd->message_id,
		         pl_status_name(rv), why ? why : "");
		rr->outcome = "agent_refused";
		return;
	}
	if (rv != PL_OK || resp == NULL) {
		pl_warn("agent could not answer message %s: %s %s",
		        pd->message_id, pl_status_name(rv), why ? why : "");
		t->next = REPLY_LEASE; // retried after the lease
		return;
	}
	rr->agent_id = pl_arena_strdup(a, pd->agent_id);
	rr->text = resp->reply_text && resp->reply_text[0] ? resp->reply_text
	                                                   : NULL;
	rr->handoff = resp->handoff;
	rr->handoff_reason = handoff_reason_name(resp->handoff_reason);
	rr->metadata_json = reply_metadata(a, resp);
	rr->outcome = rr->handoff ? "handoff"
	              : rr->text  ? "replied"
	                          : "no_reply";
}

// The quota of the turns of a batch: ReserveUsageBatch calls of up to
// MSG_RESERVE_BATCH. True when every turn has its answer; the turns of a
// call that failed are reserved one by one by reply_task_fn (and every
// turn for a minute when billing answers UNIMPLEMENTED).
static bool
reply_reserve(msg_service *s, pl_arena *a, reply_task *t, size_t n)
{
	const char **tenants = pl_arena_alloc(a, (n ? n : 1) * sizeof(char *));
	const char **keys = pl_arena_alloc(a, (n ? n : 1) * sizeof(char *));
	const char **why = pl_arena_alloc(a, (n ? n : 1) * sizeof(char *));
	size_t *k = pl_arena_alloc(a, (n ? n : 1) * sizeof(*k));
	int *rv = pl_arena_alloc(a, (n ? n : 1) * sizeof(*rv));
	bool all = true;

	if (tenants == NULL || keys == NULL || why == NULL || k == NULL ||
	    rv == NULL ||
	    (s->workers != NULL && pl_now_ns() < s->workers->reserve_off_until))
		return false;
	for (size_t i = 0; i < n;) {
		size_t m = 0;
		int r;
		for (; i < n && m < MSG_RESERVE_BATCH; i++) {
			if (t[i].later || t[i].reserved)
				continue;
			tenants[m] = t[i].pd->tenant_id;
			keys[m] = reserve_key(t[i].pd);
			k[m++] = i;
		}
		if (m == 0)
			break;
		r = messaging_peers_reserve_batch(s->peers, tenants, keys, m, a,
		                                  rv, why);
		if (r != PL_OK) {
			if (r == PL_UNIMPLEMENTED && s->workers != NULL)
				s->workers->reserve_off_until =
				        pl_now_ns() + 60 * 1000000000LL;
			all = false;
			continue;
		}
		for (size_t j = 0; j < m; j++) {
			t[k[j]].reserved = true;
			t[k[j]].reserve_rv = rv[j];
			t[k[j]].reserve_why = why[j];
		}
	}
	return all;
}

// The early reservation's answers (early_start) for the turns they match
// by tenant and key.
static void
early_apply(const early_reserve *e, reply_task *t, size_t n)
{
	if (e == NULL || e->n == 0 || e->call_rv != PL_OK)
		return;
	for (size_t i = 0; i < n; i++) {
		const char *key = reserve_key(t[i].pd);
		if (t[i].later)
			continue;
		for (size_t j = 0; j < e->n; j++)
			if (strcmp(e->keys[j], key) == 0 &&
			    strcmp(e->tenants[j], t[i].pd->tenant_id) == 0) {
				t[i].reserved = true;
				t[i].reserve_rv = e->rv[j];
				t[i].reserve_why = e->why[j] ? e->why[j] : "";
				break;
			}
	}
}

// A turn asked alone (on a pool thread): agents.Reply.
static void
reply_alone_fn(void *ctx, size_t i, pl_httpc *http)
{
	reply_task *t = &((reply_task *)ctx)[i];
	Parley__Agents__V1__ReplyResponse *resp = NULL;
	int rv;

	(void)http;
	if (t->next != REPLY_AGENT || !t->alone)
		return;
	rv = messaging_peers_reply(t->s->peers, &t->q, &t->arena, &resp);
	reply_outcome(t, rv, NULL, resp);
}

// Sends one ReplyBatch for the turns k[0..n) (agents answers them as one
// group: one transaction instead of one a turn); those it cannot take
// (an LLM agent's, or all when the call as a whole fails) are marked to go
// alone.
static void
reply_batch_send(msg_service *s, pl_arena *a, reply_task *t, size_t *k,
                 size_t n)
{
	Parley__Agents__V1__ReplyBatchRequest req =
	        PARLEY__AGENTS__V1__REPLY_BATCH_REQUEST__INIT;
	Parley__Agents__V1__ReplyBatchResponse *resp = NULL;
	Parley__Agents__V1__ReplyRequest **items;
	int rv;

	// A round of one too: a retrieval agent answers it in the call, an
	// LLM agent's comes back alone (and only that one is asked while
	// this worker counts as waiting outside).
	if ((items = pl_arena_alloc(a, n * sizeof(*items))) == NULL) {
		for (size_t i = 0; i < n; i++)
			t[k[i]].alone = true;
		return;
	}
	for (size_t i = 0; i < n; i++)
		items[i] = &t[k[i]].q;
	req.items = items;
	req.n_items = n;
	rv = messaging_peers_reply_batch(s->peers, &req, a, &resp);
	if (rv != PL_OK || resp->n_results != n) {
		// Each turn gets its own verdict from Reply.
		if (rv == PL_UNIMPLEMENTED && s->workers != NULL)
			s->workers->batch_off_until =
			        pl_now_ns() + 60 * 1000000000LL;
		for (size_t i = 0; i < n; i++)
			t[k[i]].alone = true;
		return;
	}
	for (size_t i = 0; i < n; i++) {
		const Parley__Agents__V1__ReplyBatchResult *r =
		        resp->results[i];
		reply_task *x = &t[k[i]];
		if (r->code == PL_OK && r->alone)
			x->alone = true;
		else
			reply_outcome(x, r->code, r->message, r->reply);
	}
}

// The agent's turns of a batch: ReplyBatch calls of up to
// MSG_REPLY_BATCH turns and REPLY_BATCH_BYTES (one turn over that goes
// alone), then one Reply each, concurrently on the pool, for what they
// left (LLM agents) or could not send.
#define REPLY_BATCH_BYTES (1u << 20)

static void
reply_agents(msg_service *s, pl_arena *a, reply_task *t, size_t n)
{
	size_t *k = pl_arena_alloc(a, (n ? n : 1) * sizeof(*k));
	size_t m = 0, bytes = 0, nalone = 0;
	bool batch = k != NULL && (s->workers == NULL ||
	                           pl_now_ns() >= s->workers->batch_off_until);

	for (size_t i = 0; i < n; i++) {
		size_t sz;
		if (t[i].next != REPLY_AGENT)
			continue;
		sz = protobuf_c_message_get_packed_size(&t[i].q.base);
		if (!batch || sz > REPLY_BATCH_BYTES) {
			t[i].alone = true;
			continue;
		}
		if (m == MSG_REPLY_BATCH || bytes + sz > REPLY_BATCH_BYTES) {
			reply_batch_send(s, a, t, k, m);
			m = bytes = 0;
		}
		k[m++] = i;
		bytes += sz;
	}
	if (m > 0)
		reply_batch_send(s, a, t, k, m);
	for (size_t i = 0; i < n; i++)
		nalone += t[i].next == REPLY_AGENT && t[i].alone;
	if (nalone > 0) {
		int64_t t0 = pl_now_ns();
		bool out = outside_begin(s, OUT_LLM);
		pool_run(s->workers, reply_alone_fn, t, n, NULL);
		outside_end(s, OUT_LLM, out, t0);
	}
}

// The settings cache's slot of a tenant.
static set_slot *
settings_slot(msg_workers *w, const char *tenant)
{
	unsigned h = 5381;

	for (const char *c = tenant; *c; c++)
		h = h * 33 + (unsigned char)*c;
	return &w->set[h % SET_SLOTS];
}

// The tenant's reply_burst_window_ms if the settings cache holds it, fresh.
static bool
burst_window_known(msg_service *s, const char *tenant, int64_t *ms)
{
	msg_workers *w = s->workers;
	set_slot *slot;
	bool known;

	if (w == NULL || s->cache_ms <= 0)
		return false;
	slot = settings_slot(w, tenant);
	pthread_mutex_lock(&w->smu);
	known = strcmp(slot->tenant, tenant) == 0 &&
	        pl_now_ns() - slot->at_ns < s->cache_ms * 1000000;
	if (known)
		*ms = slot->window_ms;
	pthread_mutex_unlock(&w->smu);
	return known;
}

// The tenant's reply_burst_window_ms, kept for PARLEY_MESSAGING_CHANNEL_CACHE
// (0: asked every time).
static int64_t
burst_window(msg_service *s, pl_db *db, const char *tenant)
{
	msg_workers *w = s->workers;
	int64_t now = pl_now_ns(), ms = 0;
	set_slot *slot;

	if (w == NULL)
		return messaging_store_burst_window(db, tenant, &ms) == PL_OK
		               ? ms
		               : 0;
	if (burst_window_known(s, tenant, &ms))
		return ms;
	if (messaging_store_burst_window(db, tenant, &ms) != PL_OK)
		return 0; // answered alone rather than not at all
	slot = settings_slot(w, tenant);
	pthread_mutex_lock(&w->smu);
	snprintf(slot->tenant, sizeof(slot->tenant), "%s", tenant);
	slot->window_ms = ms;
	slot->at_ns = now;
	pthread_mutex_unlock(&w->smu);
	return ms;
}

// Milliseconds since a message's created_at ("YYYY-MM-DDTHH:MM:SS.mmmZ").
static int64_t
age_ms(const char *created_at)
{
	struct tm tm = { 0 };
	int ms = 0;
	struct timespec now;

	if (sscanf(created_at, "%d-%d-%dT%d:%d:%d.%dZ", &tm.tm_year, &tm.tm_mon,
	           &tm.tm_mday, &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &ms) < 6)
		return INT64_MAX; // unreadable: as if the window had passed
	tm.tm_year -= 1900;
	tm.tm_mon -= 1;
	clock_gettime(CLOCK_REALTIME, &now);
	return ((int64_t)now.tv_sec - (int64_t)timegm(&tm)) * 1000 +
	       now.tv_nsec / 1000000 - ms;
}

// A tenant with a burst window: a message younger than the window waits
// for it to close (retried then); an older one is answered together with
// the messages that came within the window after it (their texts joined
// by new lines, one agent call, one reply; they are marked done with the
// outcome "merged").
static void
burst_prepare(msg_service *s, pl_db *db, pl_arena *a, reply_task *t)
{
	msg_pending *pd = t->pd;
	int64_t win = burst_window(s, db, pd->tenant_id), age;
	char *texts[50];
	size_t n = 0, len;

	if (win <= 0)
		return;
	age = age_ms(pd->created_at);
	if (age < win) {
		messaging_store_reply_retry_in(db, pd->tenant_id,
		                               pd->message_id, win - age + 1);
		t->later = true;
		return;
	}
	t->burst_ids = pl_arena_zalloc(a, 50 * sizeof(*t->burst_ids));
	if (t->burst_ids == NULL ||
	    messaging_store_reply_burst(db, pd, win, a, t->burst_ids, texts, 50,
	                                &n) != PL_OK ||
	    n == 0)
		return;
	len = strlen(pd->text ? pd->text : "") + 1;
	for (size_t i = 0; i < n; i++)
		len += strlen(texts[i]) + 1;
	{
		char *joined = pl_arena_alloc(a, len), *p;
		if (joined == NULL)
			return;
		p = joined + sprintf(joined, "%s", pd->text ? pd->text : "");
		for (size_t i = 0; i < n; i++)
			p += sprintf(p, "%s%s", p == joined ? "" : "\n",
			             texts[i]);
		cut_utf8(joined, MSG_MAX_TEXT);
		pd->text = joined;
	}
	t->nburst = n;
}

static int deliver_claimed(msg_service *s, pl_db *db, pl_httpc *http,
                           pl_arena *a, msg_delivery *ds, size_t n);

// The bot's turns of claimed messages: run concurrently on the call pool,
// finished in one statement that also claims their replies' deliveries for
// this worker, which sends them at once (no delivery claim, no hand-over to
// a delivery worker). Without an HTTP client the replies are queued for the
// delivery workers.
static void
reply_run(msg_service *s, pl_db *db, pl_httpc *http, pl_arena *a,
          msg_pending *pds, size_t n, const early_reserve *e)
{
	msg_pending **fin_pd;
	msg_reply_result *fin_rr;
	msg_delivery *claimed = NULL;
	reply_task *tasks;
	char(*reply_ids)[40];
	size_t m = 0, nd = 0, nb = 0;
	bool queued = false;
	int rv;

	if ((tasks = calloc(n, sizeof(*tasks))) == NULL)
		return; // the leases run out
	for (size_t i = 0; i < n; i++) {
		tasks[i].s = s;
		tasks[i].pd = &pds[i];
		pl_arena_init(&tasks[i].arena, 0, 16 << 20);
		burst_prepare(s, db, a, &tasks[i]);
		nb += tasks[i].nburst;
	}
	// Room for every turn and the bursts' messages, finished with their
	// head.
	fin_pd = pl_arena_zalloc(a, (n + nb) * sizeof(*fin_pd));
	fin_rr = pl_arena_zalloc(a, (n + nb) * sizeof(*fin_rr));
	reply_ids = pl_arena_zalloc(a, (n + nb) * sizeof(*reply_ids));
	if (http != NULL)
		claimed = pl_arena_zalloc(a, (n + nb) * sizeof(*claimed));
	if (fin_pd == NULL || fin_rr == NULL || reply_ids == NULL ||
	    (http != NULL && claimed == NULL)) {
		for (size_t i = 0; i < n; i++)
			pl_arena_fini(&tasks[i].arena);
		free(tasks);
		return; // the leases run out
	}
	// Billing answered every turn's quota in one call (or early, while
	// the round committed): the rest of a turn before the agent is in
	// memory (the channel is cached), no need for the pool's threads.
	early_apply(e, tasks, n);
	if (reply_reserve(s, a, tasks, n)) {
		for (size_t i = 0; i < n; i++)
			reply_task_fn(tasks, i, NULL);
	} else {
		pool_run(s->workers, reply_task_fn, tasks, n, NULL);
	}
	reply_agents(s, a, tasks, n);
	for (size_t i = 0; i < n; i++) {
		if (tasks[i].next == REPLY_SOON)
			messaging_store_reply_retry_in(db, pds[i].tenant_id,
			                               pds[i].message_id, 1000);
		if (tasks[i].next != REPLY_FINISH)
			continue;
		fin_pd[m] = &pds[i];
		fin_rr[m] = tasks[i].rr;
		m++;
		for (size_t k = 0; k < tasks[i].nburst; k++) {
			msg_pending *b = pl_arena_alloc(a, sizeof(*b));
			if (b == NULL)
				break;
			*b = pds[i];
			snprintf(b->message_id, sizeof(b->message_id), "%s",
			         tasks[i].burst_ids[k]);
			b->text = NULL;
			memset(&fin_rr[m], 0, sizeof(fin_rr[m]));
			fin_rr[m].outcome = "merged";
			fin_pd[m++] = b;
		}
	}
	if (m > 0) {
		// The deliveries' lease: the send's budget, as delivery_claim.
		rv = messaging_store_reply_finish_batch(
		        db, fin_pd, fin_rr, m, s->send_timeout_ms + 30000, a,
		        reply_ids, claimed);
		if (rv != PL_OK)
			pl_warn("could not finish %zu bot turns: %s (retried "
			        "after the lease)",
			        m, pl_status_name(rv));
		for (size_t i = 0; i < m && rv == PL_OK; i++) {
			if (reply_ids[i][0] == '\0')
				continue;
			if (claimed != NULL && claimed[i].id[0] != '\0')
				claimed[nd++] = claimed[i]; // i >= nd
			else
				queued = true;
		}
	}
	if (nd > 0)
		deliver_claimed(s, db, http, a, claimed, nd);
	for (size_t i = 0; i < n; i++)
		pl_arena_fini(&tasks[i].arena);
	free(tasks);
	if (queued)
		messaging_kick_kind(s, MSG_WORK_DELIVERY);
}

// The bot's turn for a batch: claim up to `batch` pending messages (one
// statement), run their turns and send their replies (reply_run).
int
messaging_reply_once(msg_service *s, pl_db *db, pl_httpc *http, pl_arena *a)
{
	msg_pending *pds;
	size_t n = 0;
	int rv;

	rv = messaging_store_reply_claim_batch(db, (int)s->batch, s->lease_ms,
	                                       10, a, &pds, &n);
	if (rv != PL_OK)
		return -rv;
	if (n == 0)
		return 0;
	reply_run(s, db, http, a, pds, n, NULL);
	return (int)n;
}

// ---------------------------------------------------------------------------
// Delivery

// Waits for a send token of the channel (token bucket, per process).
static void
rate_wait(msg_workers *w, const char *channel, int rate)
{
	for (;;) {
		int64_t now = pl_now_ns(), wait_ns = 0;
		rate_slot *slot = NULL, *old = &w->rate[0];
		pthread_mutex_lock(&w->rmu);
		for (int i = 0; i < RATE_SLOTS; i++) {
			if (strcmp(w->rate[i].channel, channel) == 0) {
				slot = &w->rate[i];
				break;
			}
			if (w->rate[i].at_ns < old->at_ns)
				old = &w->rate[i];
		}
		if (slot == NULL) {
			slot = old;
			snprintf(slot->channel, sizeof(slot->channel), "%s",
			         channel);
			slot->tokens = rate;
			slot->at_ns = now;
		}
		slot->tokens += (double)(now - slot->at_ns) * rate / 1e9;
		if (slot->tokens > rate)
			slot->tokens = rate;
		slot->at_ns = now;
		if (slot->tokens >= 1.0) {
			slot->tokens -= 1.0;
			pthread_mutex_unlock(&w->rmu);
			return;
		}
		wait_ns = (int64_t)((1.0 - slot->tokens) * 1e9 / rate) + 1;
		pthread_mutex_unlock(&w->rmu);
		usleep((useconds_t)(wait_ns / 1000));
	}
}

// One send (on a pool thread), its result in the task's arena. Deliveries
// of one conversation in a batch are chained and sent in order by one
// thread.
typedef struct del_task {
	msg_service *s;
	msg_workers *w;
	msg_delivery *d;
	msg_channel ch;
	const char *url, **headers;
	char *body;
	msg_delivery_result res;
	bool send; // needs the provider
	int chain; // next task of the same conversation, or -1
	bool head; // first of its conversation in the batch
	pl_arena arena;
} del_task;

static void
send_one(del_task *t, pl_httpc *http)
{
	msg_service *s = t->s;
	msg_delivery *d = t->d;
	pl_arena *a = &t->arena;
	pl_httpc_req rq = { 0 };
	pl_httpc_resp rs;
	const char *pid = NULL, *code = NULL, *text = NULL;
	msg_send_verdict vd;
	int rv, rate;

	rate = t->ch.send_rate > 0 ? t->ch.send_rate : (int)s->send_rate;
	if (t->w != NULL)
		rate_wait(t->w, d->channel_id, rate);
	rq.method = "POST";
	rq.url = t->url;
	rq.headers = t->headers;
	rq.body = t->body;
	rq.body_len = strlen(t->body);
	rq.timeout_ms = s->send_timeout_ms;
	rq.connect_timeout_ms =
	        s->send_timeout_ms < 2000 ? s->send_timeout_ms : 2000;
	rq.attempts = 1; // retries are scheduled here, durably
	rv = pl_httpc_do(http, &rq, &rs);
	vd = messaging_classify_send(t->ch.type, rv == PL_OK ? rs.status : 0,
	                             rv == PL_OK ? rs.body : NULL, a, &pid,
	                             &code, &text);
	if (rv != PL_OK && rv != PL_DEADLINE_EXCEEDED && rv != PL_UNAVAILABLE) {
		vd = MSG_SEND_PERMANENT;
		code = "response_too_large";
		text = "the provider's answer was refused";
	}
	memset(&t->res, 0, sizeof(t->res));
	if (vd == MSG_SEND_OK) {
		t->res.kind = MSG_DELIVERY_SENT;
		t->res.provider_id = pid;
	} else if (vd == MSG_SEND_RETRY && d->attempts < s->max_attempts) {
		int64_t ra = rv == PL_OK ? rs.retry_after_ms : -1;
		t->res.kind = MSG_DELIVERY_RETRY;
		t->res.delay_ms = messaging_backoff_ms(
		        d->attempts, s->retry_base_ms, s->retry_max_ms, ra);
		t->res.text = pl_arena_printf(a, "%s: %s", code ? code : "",
		                              rv == PL_OK ? (text ? text : "")
		                                          : rs.error);
	} else {
		if (rv != PL_OK)
			text = rs.error[0] ? pl_arena_strdup(a, rs.error)
			                   : text;
		t->res.kind = MSG_DELIVERY_FAILED;
		t->res.code = code;
		t->res.text = text;
	}
	pl_httpc_resp_fini(&rs);
}

typedef struct del_batch {
	del_task *tasks;
	int *heads;
} del_batch;

static void
del_chain_fn(void *ctx, size_t i, pl_httpc *http)
{
	del_batch *b = ctx;

	for (int k = b->heads[i]; k >= 0; k = b->tasks[k].chain)
		send_one(&b->tasks[k], http);
}

// Decides what needs no provider call (channel gone, credentials
// unavailable, web chat, disabled) and builds the request of the rest; on
// the worker's thread (a template costs a statement on its connection).
static void
del_prepare(del_task *t, pl_db *db, pl_arena *a)
{
	msg_service *s = t->s;
	msg_delivery *d = t->d;
	msg_send snd = { 0 };
	int rv;

	memset(&t->res, 0, sizeof(t->res));
	t->send = false;
	rv = messaging_peers_channel(s->peers, d->channel_id, 0, d->tenant_id,
	                             NULL, &t->ch);
	if (rv == PL_NOT_FOUND) {
		t->res.kind = MSG_DELIVERY_FAILED;
		t->res.code = "channel_not_found";
		t->res.text = "the channel no longer exists";
		return;
	}
	if (rv != PL_OK) {
		t->res.kind = MSG_DELIVERY_RETRY;
		t->res.delay_ms = messaging_backoff_ms(
		        d->attempts, s->retry_base_ms, s->retry_max_ms, -1);
		t->res.text = "channel credentials unavailable";
		return;
	}
	if (t->ch.type ==
	    PARLEY__TENANTS__V1__CHANNEL_TYPE__CHANNEL_TYPE_WEBCHAT) {
		// Web chat: stored for the widget to poll; "sent" once stored.
		t->res.kind = MSG_DELIVERY_SENT;
		t->res.provider_id =
		        pl_arena_printf(a, "webchat:%s", d->message_id);
		return;
	}
	if (t->ch.status ==
	    PARLEY__TENANTS__V1__CHANNEL_STATUS__CHANNEL_STATUS_DISABLED) {
		t->res.kind = MSG_DELIVERY_FAILED;
		t->res.code = "channel_disabled";
		t->res.text = "the channel is disabled";
		return;
	}
	snd.channel_type = t->ch.type;
	snd.api_base_url = t->ch.api_base_url;
	snd.phone_number_id = t->ch.phone_number_id;
	snd.sender_number = t->ch.sender_number;
	snd.access_token = t->ch.access_token;
	snd.to = d->to;
	snd.to_kind = d->to_kind;
	snd.type = d->type;
	snd.text = d->text;
	snd.media_url = d->media_url;
	if (engage_build_send(db, d, &snd, a, &t->url, &t->headers, &t->body) !=
	    PL_OK) {
		t->res.kind = MSG_DELIVERY_FAILED;
		t->res.code = "unsupported";
		t->res.text = "this channel cannot send it";
		return;
	}
	t->send = true;
}

// A batch: claim up to `batch` due deliveries (one statement), send them
// concurrently on the call pool (one conversation's in order), record the
// results in one statement.
int
messaging_deliver_once(msg_service *s, pl_db *db, pl_httpc *http, pl_arena *a)
{
	msg_delivery *ds;
	size_t n = 0;
	int rv;

	rv = messaging_store_delivery_claim_batch(
	        db, (int)s->batch, s->send_timeout_ms + 30000, a, &ds, &n);
	if (rv != PL_OK)
		return -rv;
	if (n == 0)
		return 0;
	return deliver_claimed(s, db, http, a, ds, n);
}

// Sends n claimed deliveries concurrently on the call pool (one
// conversation's in order) and records the results in one statement.
static int
deliver_claimed(msg_service *s, pl_db *db, pl_httpc *http, pl_arena *a,
                msg_delivery *ds, size_t n)
{
	msg_workers *w = s->workers;
	msg_delivery_result *res;
	del_task *tasks;
	del_batch b;
	size_t nh = 0;
	int64_t t0;
	bool out;
	int rv;

	tasks = calloc(n, sizeof(*tasks));
	b.heads = pl_arena_zalloc(a, n * sizeof(*b.heads));
	res = pl_arena_zalloc(a, n * sizeof(*res));
	if (tasks == NULL || b.heads == NULL || res == NULL) {
		free(tasks);
		return -PL_RESOURCE_EXHAUSTED; // the leases run out
	}
	b.tasks = tasks;
	for (size_t i = 0; i < n; i++) {
		del_task *t = &tasks[i];
		t->s = s;
		t->w = w;
		t->d = &ds[i];
		t->chain = -1;
		pl_arena_init(&t->arena, 0, 16 << 20);
		// Requests are built here, into the worker's arena.
		del_prepare(t, db, a);
		if (!t->send)
			continue;
		// The claim returns oldest first: chain each conversation's
		// sends behind its first one.
		t->head = true;
		for (size_t j = i; j-- > 0;) {
			if (!tasks[j].send ||
			    strcmp(tasks[j].d->conversation_id,
			           t->d->conversation_id) != 0)
				continue;
			tasks[j].chain = (int)i;
			t->head = false;
			break;
		}
		if (t->head)
			b.heads[nh++] = (int)i;
	}
	t0 = pl_now_ns();
	out = outside_begin(s, OUT_SEND);
	pool_run(w, del_chain_fn, &b, nh, http);
	outside_end(s, OUT_SEND, out, t0);
	for (size_t i = 0; i < n; i++)
		res[i] = tasks[i].res;
	rv = messaging_store_delivery_done_batch(db, ds, res, n);
	if (rv != PL_OK)
		pl_warn("could not record %zu deliveries: %s (sent again after "
		        "the lease)",
		        n, pl_status_name(rv));
	for (size_t i = 0; i < n; i++)
		pl_arena_fini(&tasks[i].arena);
	free(tasks);
	return (int)n;
}

// ---------------------------------------------------------------------------
// Threads

// Processed inbox bodies older than PARLEY_MESSAGING_INBOX_KEEP go, in
// chunks, for at most PRUNE_BUDGET_NS every PRUNE_EVERY_NS: deleting ~1,000
// rows takes tens of ms, so a worker keeps up with thousands of webhooks a
// second while never holding its batch back for long.
#define PRUNE_EVERY_NS  (10 * 1000000000LL)
#define PRUNE_BUDGET_NS (250 * 1000000LL)
#define PRUNE_CHUNK     1000

// Runs fn chunk after chunk while chunks come back full and the pass's
// budget (from t0) lasts; logs what went under the name what.
static void
prune_rounds(msg_service *s, pl_db *db, int64_t t0,
             int (*fn)(pl_db *, int64_t, int), const char *what)
{
	long total = 0;
	int n;

	do {
		n = fn(db, s->inbox_keep_ms, PRUNE_CHUNK);
		if (n > 0)
			total += n;
	} while (n >= PRUNE_CHUNK && pl_now_ns() - t0 < PRUNE_BUDGET_NS);
	if (n < 0)
		pl_warn("could not prune %s: %s", what, pl_status_name(-n));
	else if (total > 0)
		pl_info("%ld %s older than %lld ms deleted", total, what,
		        (long long)s->inbox_keep_ms);
}

static void
inbox_prune(msg_service *s, pl_db *db)
{
	int64_t t0 = pl_now_ns();

	prune_rounds(s, db, t0, messaging_store_inbox_prune,
	             "processed inbox bodies");
	// Then, in what is left of the budget, statuses that never found
	// their message and finished webhook deliveries (015: up to a chunk
	// of each a round).
	prune_rounds(s, db, t0, messaging_store_retention_prune,
	             "pending statuses and finished webhook deliveries");
}

static void *
worker_main(void *arg)
{
	thr_arg *ta = arg;
	msg_workers *w = ta->w;
	msg_service *s = w->s;
	pl_db *db = pl_db_open(s->database_url);
	pl_httpc *http = pl_httpc_open(); // every kind sends replies
	pl_arena a;
	static const char *const names[] = { "msg-inbox", "msg-reply",
		                             "msg-deliver" };

	tl_kind = ta->kind;
	pthread_setname_np(pthread_self(), names[ta->kind]);

	pl_arena_init(&a, 0, 64 << 20);
	while (!w->stop) {
		uint64_t seen;
		int n;
		bool prune = false;
		pthread_mutex_lock(&s->mu);
		seen = s->kickk[ta->kind];
		s->busy[ta->kind]++;
		s->unclaimed[ta->kind] = 0; // this round takes them
		if (ta->kind == 0 && s->inbox_keep_ms > 0 &&
		    pl_now_ns() - s->inbox_pruned_ns >= PRUNE_EVERY_NS) {
			s->inbox_pruned_ns = pl_now_ns(); // one worker prunes
			prune = true;
		}
		pthread_mutex_unlock(&s->mu);
		if (prune)
			inbox_prune(s, db);
		pl_arena_reset(&a);
		if (ta->kind == 0)
			n = messaging_inbox_once(s, db, http, &a);
		else if (ta->kind == 1)
			n = messaging_reply_once(s, db, http, &a);
		else
			n = messaging_deliver_once(s, db, http, &a);
		pthread_mutex_lock(&s->mu);
		s->busy[ta->kind]--;
		pthread_mutex_unlock(&s->mu);
		// An inbox round that took less than a batch took every body
		// that was due; what came since kicked (kickk moved past
		// seen), and idle returns at once for that. So the next poll
		// waits for a kick instead of asking a database that has
		// nothing (at 500 msgs/s, 30 % of the inbox statements found
		// nothing). Bodies held back behind another worker's are
		// taken by that worker: it saw their kick.
		if (!w->stop && (n <= 0 || (ta->kind == 0 && n < s->batch)))
			idle(s, ta->kind, seen);
	}
	pl_arena_fini(&a);
	if (http)
		pl_httpc_close(http);
	pl_db_close(db);
	return NULL;
}

int
messaging_workers_start(msg_service *s)
{
	msg_workers *w = calloc(1, sizeof(*w));
	int kinds[3] = { (int)s->inbox_workers, (int)s->reply_workers,
		         (int)s->delivery_workers };

	if (w == NULL)
		return PL_RESOURCE_EXHAUSTED;
	w->s = s;
	pthread_mutex_init(&w->rmu, NULL);
	pthread_mutex_init(&w->smu, NULL);
	pthread_mutex_init(&w->pmu, NULL);
	pthread_cond_init(&w->pcv, NULL);
	pthread_cond_init(&w->pdone, NULL);
	s->workers = w;
	for (int i = 0; i < (int)s->call_threads && i < MAX_THREADS; i++) {
		w->pool[w->npool].w = w;
		if (pthread_create(&w->pool[w->npool].th, NULL, pool_main,
		                   &w->pool[w->npool]) != 0)
			break;
		w->npool++;
	}
	for (int k = 0; k < 3; k++)
		for (int i = 0; i < kinds[k] && w->nth < MAX_THREADS; i++) {
			w->args[w->nth].w = w;
			w->args[w->nth].kind = k;
			if (pthread_create(&w->th[w->nth], NULL, worker_main,
			                   &w->args[w->nth]) != 0)
				break;
			w->nth++;
		}
	return engage_start(s); // campaign senders (engagement)
}

void
messaging_workers_stop(msg_service *s)
{
	msg_workers *w = s->workers;

	if (w == NULL)
		return;
	engage_stop(s); // campaign senders (engagement)
	w->stop = true;
	messaging_kick(s);
	for (int i = 0; i < w->nth; i++)
		pthread_join(w->th[i], NULL);
	pthread_mutex_lock(&w->pmu);
	pthread_cond_broadcast(&w->pcv);
	pthread_mutex_unlock(&w->pmu);
	for (int i = 0; i < w->npool; i++)
		pthread_join(w->pool[i].th, NULL);
	pthread_cond_destroy(&w->pcv);
	pthread_cond_destroy(&w->pdone);
	pthread_mutex_destroy(&w->pmu);
	pthread_mutex_destroy(&w->rmu);
	pthread_mutex_destroy(&w->smu);
	free(w);
	s->workers = NULL;
}
