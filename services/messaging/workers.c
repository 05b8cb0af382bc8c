// Background workers: inbox processing (raw bodies -> messages and
// statuses), the bot's turn (billing, agent, reply queued), and delivery
// to the providers with retries and a per-channel send rate. Each thread
// owns its connection, HTTP client and arena; work is claimed in the
// database, so any number of threads and replicas share it.
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

typedef struct rate_slot {
	char channel[40];
	double tokens;
	int64_t at_ns;
} rate_slot;

typedef struct thr_arg {
	struct msg_workers *w;
	int kind; // 0 inbox, 1 reply, 2 delivery
} thr_arg;

struct msg_workers {
	msg_service *s;
	thr_arg args[MAX_THREADS];
	pthread_t th[MAX_THREADS];
	int nth;
	volatile bool stop;
	pthread_mutex_t rmu;
	rate_slot rate[RATE_SLOTS];
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
	// One waiting worker is enough: it loops while it finds work.
	pthread_cond_signal(&s->cvk[kind]);
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
// Inbox

// The fast path: one transaction per inbox row (see
// messaging_store_inbox_lock_next). A row whose transaction fails is handed
// to the leased path below, which retries it item by item after the lease.
typedef struct inbox_tx {
	msg_service *s;
	pl_arena *a;
	msg_inbox_row row;
	int got;
	int done;
} inbox_tx;

static int
inbox_tx_fn(pl_db *db, void *arg)
{
	inbox_tx *x = arg;
	msg_items items;
	msg_channel ch;
	char err[256] = "";
	int rv;

	x->done = 0;
	x->got = messaging_store_inbox_lock_next(db, x->a, &x->row);
	if (x->got <= 0)
		return x->got < 0 ? -x->got : PL_OK;
	if ((rv = messaging_store_tx_tenant(db, x->row.tenant_id)) != PL_OK)
		return rv;
	if (messaging_parse_webhook(x->row.channel_type, x->row.body,
	                            x->row.len, x->a, &items, err,
	                            sizeof(err)) != PL_OK)
		return messaging_store_inbox_done_tx(db, &x->row, err);
	// Cached (channel cache); a miss asks tenants with the row locked.
	if (messaging_peers_channel(x->s->peers, x->row.channel_id,
	                            x->row.channel_type, x->row.tenant_id, NULL,
	                            &ch) != PL_OK)
		memset(&ch, 0, sizeof(ch));
	for (size_t i = 0; i < items.n; i++) {
		msg_item *it = &items.v[i];
		if (it->kind == MSG_ITEM_MESSAGE) {
			msg_ingest in = { x->row.tenant_id,
				          x->row.channel_id,
				          x->row.channel_type,
				          ch.agent_id,
				          it,
				          true };
			msg_message_pb *m;
			bool dup;
			if (it->text && strlen(it->text) > MSG_MAX_TEXT)
				((char *)it->text)[MSG_MAX_TEXT] = '\0';
			rv = messaging_store_ingest_tx(db, &in, x->a, &m, &dup);
		} else {
			rv = messaging_store_apply_status_tx(
			        db, x->row.tenant_id, x->row.channel_id, it,
			        x->a);
		}
		if (rv != PL_OK)
			return rv;
		x->done++;
	}
	return messaging_store_inbox_done_tx(db, &x->row, NULL);
}

static int inbox_leased(msg_service *s, pl_db *db, pl_arena *a);

int
messaging_inbox_once(msg_service *s, pl_db *db, pl_arena *a)
{
	inbox_tx x;
	int rv;

	memset(&x, 0, sizeof(x));
	x.s = s;
	x.a = a;
	// Service-level: the inbox spans tenants (tenant "*"); the
	// transaction switches to the row's tenant before its work.
	rv = pl_db_tx(db, "*", inbox_tx_fn, &x);
	if (rv == PL_OK) {
		if (x.done > 0)
			messaging_kick_kind(s, MSG_WORK_REPLY);
		return x.got;
	}
	pl_warn("inbox row %s failed in one transaction (%s); retrying it "
	        "item by item",
	        x.got > 0 ? x.row.id : "?", pl_status_name(rv));
	return inbox_leased(s, db, a) < 0 ? -rv : 1;
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
			if (it->text && strlen(it->text) > MSG_MAX_TEXT)
				((char *)it->text)[MSG_MAX_TEXT] = '\0';
			rv = messaging_store_ingest(db, &in, a, &m, &dup);
		} else {
			bool applied, deferred;
			rv = messaging_store_apply_status(
			        db, row.tenant_id, row.channel_id, it, a,
			        &applied, &deferred, NULL);
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
	messaging_store_inbox_done(db, &row, NULL);
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

int
messaging_reply_once(msg_service *s, pl_db *db, pl_arena *a)
{
	msg_pending pd;
	msg_reply_result rr = { 0 };
	msg_channel ch = { 0 };
	char reply_id[40], why[256];
	int got, rv;

	memset(&pd, 0, sizeof(pd));
	got = messaging_store_reply_claim(db, s->lease_ms, a, &pd);
	if (got <= 0)
		return got;
	rr.outcome = "no_agent";
	// The quota first: a refused message is stored but never answered.
	rv = messaging_peers_reserve(s->peers, pd.tenant_id,
	                             pd.provider_message_id[0]
	                                     ? pd.provider_message_id
	                                     : pd.message_id,
	                             why, sizeof(why));
	if (rv == PL_RESOURCE_EXHAUSTED) {
		rr.outcome = "quota_exceeded";
		rr.limit_why = pl_arena_strdup(a, why[0] ? why : "messages");
		goto finish;
	}
	if (rv != PL_OK) {
		// Billing could not be asked, or has no subscription yet (a
		// tenant's first message can beat its trial): try again soon.
		pl_warn("could not reserve usage for message %s: %s",
		        pd.message_id, pl_status_name(rv));
		messaging_store_reply_retry_in(db, pd.tenant_id, pd.message_id,
		                               1000);
		return 1;
	}
	if (strcmp(pd.owner, "human") == 0) {
		rr.outcome = "human_owned";
		goto finish;
	}
	if (messaging_peers_channel(s->peers, pd.channel_id, 0, pd.tenant_id,
	                            NULL, &ch) == PL_OK &&
	    ch.agent_id[0] == '\0') {
		// A cached "no agent" may predate the agent's attachment: ask
		// tenants once more before leaving the customer unanswered.
		messaging_peers_forget(s->peers, pd.channel_id);
		if (messaging_peers_channel(s->peers, pd.channel_id, 0,
		                            pd.tenant_id, NULL, &ch) != PL_OK)
			ch.agent_id[0] = '\0';
	}
	if (ch.agent_id[0] != '\0')
		snprintf(pd.agent_id, sizeof(pd.agent_id), "%s", ch.agent_id);
	if (pd.agent_id[0] == '\0' || !messaging_peers_has_agents(s->peers) ||
	    pd.text == NULL || pd.text[0] == '\0') {
		rr.outcome = pd.agent_id[0] ? "no_reply" : "no_agent";
		goto finish;
	}
	{
		Parley__Agents__V1__ReplyRequest q =
		        PARLEY__AGENTS__V1__REPLY_REQUEST__INIT;
		Parley__Agents__V1__ReplyContact c =
		        PARLEY__AGENTS__V1__REPLY_CONTACT__INIT;
		Parley__Agents__V1__ReplyResponse *resp = NULL;
		q.tenant_id = pd.tenant_id;
		q.agent_id = pd.agent_id;
		q.session_key = pd.conversation_id;
		q.channel_id = pd.channel_id;
		q.channel_type = ch.type;
		q.conversation_id = pd.conversation_id;
		c.id = pd.contact_id;
		c.name = pd.contact_name;
		c.phone = pd.contact_phone;
		c.language = pd.contact_language;
		q.contact = &c;
		q.text = pd.text;
		q.message_id = pd.message_id;
		messaging_store_history(db, &pd, 10, a, &q.history,
		                        &q.n_history);
		rv = messaging_peers_reply(s->peers, &q, a, &resp);
		if (rv == PL_FAILED_PRECONDITION || rv == PL_NOT_FOUND) {
			rr.outcome = "no_agent";
			goto finish;
		}
		if (rv != PL_OK) {
			pl_warn("agent could not answer message %s: %s",
			        pd.message_id, pl_status_name(rv));
			return 1; // retried after the lease
		}
		rr.agent_id = pd.agent_id;
		rr.text = resp->reply_text && resp->reply_text[0]
		                  ? resp->reply_text
		                  : NULL;
		rr.handoff = resp->handoff;
		rr.handoff_reason = handoff_reason_name(resp->handoff_reason);
		rr.metadata_json = reply_metadata(a, resp);
		rr.outcome = rr.handoff ? "handoff"
		             : rr.text  ? "replied"
		                        : "no_reply";
	}
finish:
	rv = messaging_store_reply_finish(db, &pd, &rr, a, reply_id);
	if (rv != PL_OK)
		pl_warn("could not finish message %s: %s", pd.message_id,
		        pl_status_name(rv));
	else if (reply_id[0])
		messaging_kick_kind(s, MSG_WORK_DELIVERY);
	return 1;
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

static int
deliver_one(msg_service *s, pl_db *db, pl_httpc *http, pl_arena *a,
            msg_workers *w)
{
	msg_delivery d;
	msg_channel ch;
	msg_send snd = { 0 };
	const char *url, **headers, *pid, *code, *text;
	char *body;
	pl_httpc_req rq = { 0 };
	pl_httpc_resp rs;
	msg_send_verdict vd;
	int got, rv, rate;

	memset(&d, 0, sizeof(d));
	got = messaging_store_delivery_claim(db, s->send_timeout_ms + 30000, a,
	                                     &d);
	if (got <= 0)
		return got;
	rv = messaging_peers_channel(s->peers, d.channel_id, 0, d.tenant_id,
	                             NULL, &ch);
	if (rv == PL_NOT_FOUND) {
		messaging_store_delivery_failed(db, &d, "channel_not_found",
		                                "the channel no longer exists");
		return 1;
	}
	if (rv != PL_OK) {
		messaging_store_delivery_retry(
		        db, &d,
		        messaging_backoff_ms(d.attempts, s->retry_base_ms,
		                             s->retry_max_ms, -1),
		        "channel credentials unavailable");
		return 1;
	}
	if (ch.type ==
	    PARLEY__TENANTS__V1__CHANNEL_TYPE__CHANNEL_TYPE_WEBCHAT) {
		// Web chat: stored for the widget to poll; "sent" once stored.
		char pid_buf[48];
		snprintf(pid_buf, sizeof(pid_buf), "webchat:%s", d.message_id);
		messaging_store_delivery_sent(db, &d, pid_buf);
		return 1;
	}
	if (ch.status ==
	    PARLEY__TENANTS__V1__CHANNEL_STATUS__CHANNEL_STATUS_DISABLED) {
		messaging_store_delivery_failed(db, &d, "channel_disabled",
		                                "the channel is disabled");
		return 1;
	}
	rate = ch.send_rate > 0 ? ch.send_rate : (int)s->send_rate;
	if (w != NULL)
		rate_wait(w, d.channel_id, rate);
	snd.channel_type = ch.type;
	snd.api_base_url = ch.api_base_url;
	snd.phone_number_id = ch.phone_number_id;
	snd.sender_number = ch.sender_number;
	snd.access_token = ch.access_token;
	snd.to = d.to;
	snd.to_kind = d.to_kind;
	snd.type = d.type;
	snd.text = d.text;
	snd.media_url = d.media_url;
	if (engage_build_send(db, &d, &snd, a, &url, &headers, &body) !=
	    PL_OK) {
		messaging_store_delivery_failed(db, &d, "unsupported",
		                                "this channel cannot send it");
		return 1;
	}
	rq.method = "POST";
	rq.url = url;
	rq.headers = headers;
	rq.body = body;
	rq.body_len = strlen(body);
	rq.timeout_ms = s->send_timeout_ms;
	rq.connect_timeout_ms =
	        s->send_timeout_ms < 2000 ? s->send_timeout_ms : 2000;
	rq.attempts = 1; // retries are scheduled here, durably
	rv = pl_httpc_do(http, &rq, &rs);
	vd = messaging_classify_send(ch.type, rv == PL_OK ? rs.status : 0,
	                             rv == PL_OK ? rs.body : NULL, a, &pid,
	                             &code, &text);
	if (rv != PL_OK && rv != PL_DEADLINE_EXCEEDED && rv != PL_UNAVAILABLE) {
		vd = MSG_SEND_PERMANENT;
		code = "response_too_large";
		text = "the provider's answer was refused";
	}
	if (vd == MSG_SEND_OK) {
		messaging_store_delivery_sent(db, &d, pid);
	} else if (vd == MSG_SEND_RETRY && d.attempts < s->max_attempts) {
		int64_t ra = rv == PL_OK ? rs.retry_after_ms : -1;
		char *err = pl_arena_printf(a, "%s: %s", code,
		                            rv == PL_OK ? text : rs.error);
		messaging_store_delivery_retry(
		        db, &d,
		        messaging_backoff_ms(d.attempts, s->retry_base_ms,
		                             s->retry_max_ms, ra),
		        err);
	} else {
		if (rv != PL_OK)
			text = rs.error[0] ? pl_arena_strdup(a, rs.error)
			                   : text;
		messaging_store_delivery_failed(db, &d, code, text);
	}
	pl_httpc_resp_fini(&rs);
	return 1;
}

int
messaging_deliver_once(msg_service *s, pl_db *db, pl_httpc *http, pl_arena *a)
{
	return deliver_one(s, db, http, a, s->workers);
}

// ---------------------------------------------------------------------------
// Threads

static void *
worker_main(void *arg)
{
	thr_arg *ta = arg;
	msg_workers *w = ta->w;
	msg_service *s = w->s;
	pl_db *db = pl_db_open(s->database_url);
	pl_httpc *http = ta->kind == 2 ? pl_httpc_open() : NULL;
	pl_arena a;

	pl_arena_init(&a, 0, 64 << 20);
	while (!w->stop) {
		uint64_t seen;
		int n;
		pthread_mutex_lock(&s->mu);
		seen = s->kickk[ta->kind];
		pthread_mutex_unlock(&s->mu);
		pl_arena_reset(&a);
		if (ta->kind == 0)
			n = messaging_inbox_once(s, db, &a);
		else if (ta->kind == 1)
			n = messaging_reply_once(s, db, &a);
		else
			n = deliver_one(s, db, http, &a, w);
		if (n <= 0 && !w->stop)
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
	s->workers = w;
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
	pthread_mutex_destroy(&w->rmu);
	free(w);
	s->workers = NULL;
}
