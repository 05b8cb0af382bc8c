// Web chat's waiting long-polls. Each waiting widget used to hold one of
// the gateway's few HTTP threads and one of messaging's database workers
// for up to 25 s (and past PARLEY_HTTP_THREADS / 2 of them the others
// answered at once, so their widgets polled in a loop). Now a poll whose
// first look finds nothing is parked: its HTTP answer is deferred (the
// connection waits, no thread does), and one thread asks messaging about
// every parked poll at once each tick, one PollWebchatBatch call of up to
// 256 polls, which is two statements in messaging whatever their number.
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gateway.h"
#include "parley/messaging/v1/messaging.pb-c.h"
#include "pl/json.h"
#include "pl/log.h"

#define TICK_MS     100 // how often the parked polls are looked at
#define BATCH_MAX   256 // polls a PollWebchatBatch call (messaging's bound)
#define ARENA_LIMIT (64u * 1024 * 1024)

typedef Parley__Messaging__V1__PollWebchatMessagesRequest poll_req;
typedef Parley__Messaging__V1__PollWebchatMessagesResponse poll_resp;

typedef struct parked {
	pl_http_deferred *d; // NULL once answered
	char *channel_id, *token, *cursor;
	int64_t deadline; // pl_now_ns
} parked;

struct gw_poller {
	gw *g;
	pthread_mutex_t mu;
	pthread_cond_t cv; // a poll was parked, or stop
	pthread_t thr;
	bool stop;
	parked *items; // parked, not yet taken by the thread
	size_t n;
	parked *work; // the thread's: being looked at
	size_t nw;
	size_t total; // parked, including those the thread holds
	size_t max;   // PARLEY_WEBCHAT_MAX_WAITING
	bool down;    // the last batch call failed (logged once)
};

static void
parked_free(parked *w)
{
	free(w->channel_id);
	free(w->token);
	free(w->cursor);
	w->channel_id = w->token = w->cursor = NULL;
}

// Answers w: an error (code != PL_OK), or result, or no messages and w's
// cursor (result NULL).
static void
answer(parked *w, int code, const char *message, const poll_resp *result)
{
	pl_http_resp *r = pl_http_deferred_resp(w->d);
	poll_resp empty =
	        PARLEY__MESSAGING__V1__POLL_WEBCHAT_MESSAGES_RESPONSE__INIT;
	char *json;
	size_t len;

	if (code == PL_OK) {
		if (result == NULL) {
			empty.cursor = w->cursor;
			result = &empty;
		}
		json = pl_json_dump_pb(&result->base, &len);
		if (json != NULL)
			pl_http_resp_take(r, 200, "application/json", json,
			                  len);
		else {
			code = PL_INTERNAL;
			message = "could not encode the answer";
		}
	}
	if (code != PL_OK) {
		gw_ctx x = { .resp = r };
		gw_reply_error(&x, code, message, NULL, 0);
	}
	pl_http_finish(w->d);
	w->d = NULL;
	parked_free(w);
}

// One PollWebchatBatch call over w[0..n): answers those messaging reports.
static void
ask(gw_poller *p, parked *w, size_t n)
{
	Parley__Messaging__V1__PollWebchatBatchRequest in =
	        PARLEY__MESSAGING__V1__POLL_WEBCHAT_BATCH_REQUEST__INIT;
	Parley__Messaging__V1__PollWebchatBatchResponse *out = NULL;
	poll_req reqs[BATCH_MAX], *preqs[BATCH_MAX];
	pl_rpc_opts opts = { .idempotent = true };
	pl_rpc_result res;
	pl_arena a;
	int rc;

	for (size_t i = 0; i < n; i++) {
		parley__messaging__v1__poll_webchat_messages_request__init(
		        &reqs[i]);
		reqs[i].channel_id = w[i].channel_id;
		reqs[i].session_token = w[i].token;
		reqs[i].cursor = w[i].cursor;
		preqs[i] = &reqs[i];
	}
	in.polls = preqs;
	in.n_polls = n;
	pl_arena_init(&a, 0, ARENA_LIMIT);
	rc = pl_rpc_call(
	        p->g->cli[GW_MESSAGING],
	        "/parley.messaging.v1.Messaging/PollWebchatBatch", &in.base,
	        &parley__messaging__v1__poll_webchat_batch_response__descriptor,
	        (void **)&out, &a, &opts, &res);
	if (rc != PL_OK) {
		// The polls wait on; at their deadline they are answered with
		// no messages, and the widget's next poll meets the error.
		if (!p->down)
			pl_warn("gateway: web-chat long-polls: messaging "
			        "answered %s",
			        pl_status_name(rc));
		p->down = true;
		pl_arena_fini(&a);
		return;
	}
	p->down = false;
	for (size_t i = 0; i < out->n_ready; i++) {
		const Parley__Messaging__V1__PollWebchatBatchResult *r =
		        out->ready[i];
		if (r->index < 0 || (size_t)r->index >= n ||
		    w[r->index].d == NULL)
			continue;
		if (r->code != PL_OK)
			answer(&w[r->index], r->code, r->message, NULL);
		else if (r->result != NULL)
			answer(&w[r->index], PL_OK, NULL, r->result);
	}
	pl_arena_fini(&a);
}

// Looks at w[0..*n): answers what has news or is due, keeps the rest
// (compacted); returns how many were answered.
static size_t
look(gw_poller *p, parked *w, size_t *n)
{
	size_t k = 0, answered = 0;
	int64_t now;

	if (p->g->cli[GW_MESSAGING] != NULL)
		for (size_t i = 0; i < *n; i += BATCH_MAX)
			ask(p, w + i, *n - i < BATCH_MAX ? *n - i : BATCH_MAX);
	now = pl_now_ns();
	for (size_t i = 0; i < *n; i++) {
		if (w[i].d != NULL && now >= w[i].deadline)
			answer(&w[i], PL_OK, NULL, NULL);
		if (w[i].d == NULL)
			answered++;
		else
			w[k++] = w[i];
	}
	*n = k;
	return answered;
}

static void *
poller_main(void *arg)
{
	gw_poller *p = arg;

	pthread_setname_np(pthread_self(), "gw-poller");
	pthread_mutex_lock(&p->mu);
	while (!p->stop) {
		struct timespec ts;

		if (p->total == 0) {
			pthread_cond_wait(&p->cv, &p->mu);
			continue;
		}
		ts = pl_timespec_in(CLOCK_MONOTONIC, TICK_MS * 1000000LL);
		pthread_cond_timedwait(&p->cv, &p->mu, &ts);
		if (p->stop)
			break;
		// Take what was parked since the last look, then look at all
		// of it without the lock (parking goes on meanwhile).
		memcpy(p->work + p->nw, p->items, p->n * sizeof(*p->work));
		p->nw += p->n;
		p->n = 0;
		pthread_mutex_unlock(&p->mu);
		size_t answered = look(p, p->work, &p->nw);
		pthread_mutex_lock(&p->mu);
		p->total -= answered;
	}
	// Stopping: every poll is answered, with no messages.
	for (size_t i = 0; i < p->n; i++)
		answer(&p->items[i], PL_OK, NULL, NULL);
	p->n = 0;
	for (size_t i = 0; i < p->nw; i++)
		answer(&p->work[i], PL_OK, NULL, NULL);
	p->nw = 0;
	p->total = 0;
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

int
gw_poller_open(gw_poller **out, gw *g)
{
	gw_poller *p = calloc(1, sizeof(*p));
	pthread_condattr_t ca;

	*out = NULL;
	if (p == NULL)
		return -1;
	p->g = g;
	p->max = g->cfg.max_waiting > 0 ? (size_t)g->cfg.max_waiting : 0;
	p->items = calloc(p->max ? p->max : 1, sizeof(*p->items));
	p->work = calloc(p->max ? p->max : 1, sizeof(*p->work));
	if (p->items == NULL || p->work == NULL) {
		free(p->items);
		free(p->work);
		free(p);
		return -1;
	}
	pthread_mutex_init(&p->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&p->cv, &ca);
	pthread_condattr_destroy(&ca);
	if (pthread_create(&p->thr, NULL, poller_main, p) != 0) {
		pl_error("gateway: cannot start the long-poll thread");
		pthread_cond_destroy(&p->cv);
		pthread_mutex_destroy(&p->mu);
		free(p->items);
		free(p->work);
		free(p);
		return -1;
	}
	*out = p;
	return 0;
}

bool
gw_poller_park(gw_poller *p, gw_ctx *x, const char *channel_id,
               const char *token, const char *cursor)
{
	parked w = { 0 };
	bool ok = false;

	if (p == NULL || x->poll_wait_ms <= 0)
		return false;
	w.channel_id = strdup(channel_id ? channel_id : "");
	w.token = strdup(token ? token : "");
	w.cursor = strdup(cursor ? cursor : "");
	w.deadline = pl_now_ns() + x->poll_wait_ms * 1000000;
	if (w.channel_id == NULL || w.token == NULL || w.cursor == NULL) {
		parked_free(&w);
		return false;
	}
	pthread_mutex_lock(&p->mu);
	if (!p->stop && p->total < p->max &&
	    (w.d = pl_http_defer(x->req, x->resp)) != NULL) {
		p->items[p->n++] = w;
		// Only an idle thread is woken: a busy one looks at the next
		// tick (each park waking it would be one call a park).
		if (p->total++ == 0)
			pthread_cond_signal(&p->cv);
		ok = true;
	}
	pthread_mutex_unlock(&p->mu);
	if (!ok)
		parked_free(&w);
	return ok;
}

size_t
gw_poller_waiting(gw_poller *p)
{
	size_t n;

	if (p == NULL)
		return 0;
	pthread_mutex_lock(&p->mu);
	n = p->total;
	pthread_mutex_unlock(&p->mu);
	return n;
}

void
gw_poller_close(gw_poller *p)
{
	if (p == NULL)
		return;
	pthread_mutex_lock(&p->mu);
	p->stop = true;
	pthread_cond_signal(&p->cv);
	pthread_mutex_unlock(&p->mu);
	pthread_join(p->thr, NULL);
	pthread_cond_destroy(&p->cv);
	pthread_mutex_destroy(&p->mu);
	free(p->items);
	free(p->work);
	free(p);
}
