// Web chat's long-polls at scale: the whole stack on this machine
// (tests/lib/stack), a webchat channel with a published retrieval agent,
// and N visitors at once, for each N of the list. Per N it prints:
//
// - the baseline, measured in the same run: each of the N visitors asking
//   once a second with wait_ms=0 (short polling, what a widget without
//   long-polls does; the gateway's widgets did worse before the thirty-
//   fifth session, polling in a loop past the second visitor). CPU ms a
//   second of every process and PostgreSQL;
// - N long-polls (wait_ms=25000) waiting at once on N connections: how
//   many were answered early (none should be), the same CPU ms a second,
//   and the ratio to the baseline's, each above the idle stack's; the
//   gateway's RSS and threads; PostgreSQL's busiest processes in that
//   window (over 5 ms a second), named by their titles (a backend's
//   title has its service's role);
// - messages posted one at a time, each to a session whose poll waits:
//   the time from the POST to that poll's answer (the visitor's own
//   message, as the widget shows it) and to the agent's reply being seen;
// - the other polls' answers at the end of their wait: their statuses and
//   how long they waited.
//
//   bench_webchat [waiting = 100,500,1000] [seconds per window = 10]
//                 [messages per N = 20]
//
// CPU times come from /proc in clock ticks (10 ms): a 10 s window reads
// each process to within about 1 ms a second. The stack's idle figure is
// taken once, before the first N.
//
// The gateway runs with 2,048 connections and 1,000 waiting (its defaults
// are 1,024 and 512: the waiting may take half the connections), so N is
// at most 1,000. Traffic stays on 127.0.0.1; every
// wait is bounded in time.
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "hload.h"
#include "pl/rpc.h"
#include "stack.h"

#define MAX_N    1000
#define WAIT_MS  25000
#define ANSWER   "We are open every day from 9am to 10pm."
#define QUESTION "what are your opening hours?"
#define ANS_MAX  (64 * 1024)

static stack S;
static char channel[64];

typedef struct visitor {
	char token[512];
	char cursor[64];
} visitor;

static visitor V[MAX_N];

// One raw long-poll: a connection that sent its GET (Connection: close)
// and whose answer the reader thread collects up to the close.
typedef struct waiter {
	int fd;
	int64_t t_sent, t_done;
	atomic_int done; // 1 once the answer (or an error) is complete
	int status;      // 0: no status line (connection error)
	char *buf;
	size_t len;
} waiter;

static waiter W[MAX_N];
// The reader polls W[0 .. n_waiters); it holds mu for a whole round. The
// main thread changes n_waiters under mu (set_waiters), and opens or
// closes the sockets only while n_waiters is 0.
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static int n_waiters;
static atomic_int reader_stop;
static atomic_int reader_yield; // the main thread waits for mu

static void
set_waiters(int n)
{
	atomic_store(&reader_yield, 1);
	pthread_mutex_lock(&mu);
	n_waiters = n;
	pthread_mutex_unlock(&mu);
	atomic_store(&reader_yield, 0);
}

// ---------------------------------------------------------------------------
// CPU and memory of the stack's processes

// Prints CPU ms a second of each process between a and b; returns the
// total.
static double
cpu_print(const char *what, const stack_cpu *a, const stack_cpu *b)
{
	double s = (double)(b->t - a->t) / 1e9, total = 0, d;

	printf("    %s, CPU ms a second:", what);
	for (int i = 0; i < S.n; i++) {
		d = (b->proc[i] - a->proc[i]) * 1e3 / s;
		printf(" %s %.1f,", S.procs[i].name, d);
		total += d;
	}
	d = (b->pg - a->pg) * 1e3 / s;
	total += d;
	printf(" postgres %.1f; total %.1f\n", d, total);
	return total;
}

// VmRSS (KiB) and Threads of a running process, from /proc.
static void
proc_status(pid_t pid, long *rss_kb, long *threads)
{
	char path[64], line[256];
	FILE *f;

	*rss_kb = *threads = -1;
	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	if ((f = fopen(path, "r")) == NULL)
		return;
	while (fgets(line, sizeof(line), f) != NULL) {
		if (strncmp(line, "VmRSS:", 6) == 0)
			*rss_kb = atol(line + 6);
		else if (strncmp(line, "Threads:", 8) == 0)
			*threads = atol(line + 8);
	}
	fclose(f);
}

// PostgreSQL's processes (the postmaster and its children) and their CPU, to
// name the busiest in a window: which service's backend (its role is in
// the process title) or which background process did the work.
#define PG_PROCS 128

typedef struct pg_snap {
	int n;
	pid_t pid[PG_PROCS];
	double cpu[PG_PROCS];
} pg_snap;

static void
pg_add(pid_t pid, double cpu_s, void *arg)
{
	pg_snap *p = arg;
	if (p->n < PG_PROCS) {
		p->pid[p->n] = pid;
		p->cpu[p->n++] = cpu_s;
	}
}

static void
pg_take(pg_snap *p)
{
	p->n = 0;
	pgh_each_proc(&S.pg, pg_add, p);
}

// Prints the PostgreSQL processes that used over 5 ms a second between a
// and b (taken s seconds apart), busiest first, with their titles.
static void
pg_print(const pg_snap *a, const pg_snap *b, double s)
{
	int order[PG_PROCS], m = 0;
	double d[PG_PROCS];

	for (int i = 0; i < b->n; i++) {
		double before = 0;
		for (int k = 0; k < a->n; k++)
			if (a->pid[k] == b->pid[i])
				before = a->cpu[k];
		d[i] = (b->cpu[i] - before) * 1e3 / s;
		if (d[i] > 5)
			order[m++] = i;
	}
	for (int x = 1; x < m; x++)
		for (int y = x; y > 0 && d[order[y]] > d[order[y - 1]]; y--) {
			int t = order[y];
			order[y] = order[y - 1];
			order[y - 1] = t;
		}
	for (int x = 0; x < m && x < 4; x++) {
		char path[64], title[160] = "";
		FILE *f;
		size_t len = 0;
		snprintf(path, sizeof(path), "/proc/%d/cmdline",
		         (int)b->pid[order[x]]);
		if ((f = fopen(path, "r")) != NULL) {
			len = fread(title, 1, sizeof(title) - 1, f);
			fclose(f);
		}
		title[len] = '\0';
		printf("      postgres process %d: %.1f ms a second (%s)\n",
		       (int)b->pid[order[x]], d[order[x]], title);
	}
}

// ---------------------------------------------------------------------------
// Raw long-polls

// Connects to the gateway and sends visitor v's long-poll; the socket is
// left non-blocking for the reader. Returns 0 or -1.
static int
waiter_open(waiter *w, const visitor *v)
{
	struct sockaddr_in a = { 0 };
	char req[1024];
	int n, fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	memset(w, 0, sizeof(*w));
	w->fd = -1;
	if (fd < 0)
		return -1;
	a.sin_family = AF_INET;
	a.sin_port = htons((uint16_t)S.http_port);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	n = snprintf(req, sizeof(req),
	             "GET /v1/webchat/%s/messages?after=%s&wait_ms=%d "
	             "HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Webchat-Session: "
	             "%s\r\nConnection: close\r\n\r\n",
	             channel, v->cursor, WAIT_MS, v->token);
	if (n < 0 || (size_t)n >= sizeof(req) ||
	    connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
	    write(fd, req, (size_t)n) != n ||
	    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) != 0) {
		close(fd);
		return -1;
	}
	w->fd = fd;
	w->t_sent = pl_now_ns();
	return 0;
}

static void
waiter_finish(waiter *w)
{
	int major, minor, st;

	w->t_done = pl_now_ns();
	if (w->buf != NULL &&
	    sscanf(w->buf, "HTTP/%d.%d %d", &major, &minor, &st) == 3)
		w->status = st;
	atomic_store(&w->done, 1);
}

// Reads every open waiter's answer up to its close.
static void *
reader_main(void *arg)
{
	static struct pollfd pf[MAX_N];
	static int idx[MAX_N];
	(void)arg;

	while (!atomic_load(&reader_stop)) {
		int m = 0;
		if (atomic_load(&reader_yield)) {
			usleep(1000);
			continue;
		}
		pthread_mutex_lock(&mu);
		for (int i = 0; i < n_waiters; i++)
			if (W[i].fd >= 0 && !atomic_load(&W[i].done)) {
				pf[m] = (struct pollfd){ W[i].fd, POLLIN, 0 };
				idx[m++] = i;
			}
		if (m == 0 || poll(pf, (nfds_t)m, 50) <= 0) {
			pthread_mutex_unlock(&mu);
			usleep(m == 0 ? 10000 : 0);
			continue;
		}
		for (int k = 0; k < m; k++) {
			waiter *w = &W[idx[k]];
			char tmp[8192];
			ssize_t r;

			if (pf[k].revents == 0)
				continue;
			while ((r = read(w->fd, tmp, sizeof(tmp))) > 0) {
				char *nb;
				if (w->len + (size_t)r + 1 > ANS_MAX)
					break;
				nb = realloc(w->buf, w->len + (size_t)r + 1);
				if (nb == NULL)
					break;
				w->buf = nb;
				memcpy(w->buf + w->len, tmp, (size_t)r);
				w->len += (size_t)r;
				w->buf[w->len] = '\0';
			}
			// The close, an error, or an answer past ANS_MAX.
			if (r >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
				waiter_finish(w);
		}
		pthread_mutex_unlock(&mu);
	}
	return NULL;
}

// The JSON body of a waiter's answer (after the header block), or NULL.
static json_t *
waiter_json(const waiter *w)
{
	const char *b = w->buf ? strstr(w->buf, "\r\n\r\n") : NULL;
	return b ? json_loads(b + 4, 0, NULL) : NULL;
}

// ---------------------------------------------------------------------------
// Short polls: the baseline

typedef struct shorts {
	int first, step, n; // visitors first, first+step, ... below n
	int64_t start_ns, end_ns;
	long ok, bad;
} shorts;

// Each visitor once a second, visitor v at start + v/n s + k s.
static void *
shorts_main(void *arg)
{
	shorts *s = arg;
	hload *c = hload_open(S.http_port);

	for (int64_t k = 0;; k++)
		for (int v = s->first; v < s->n; v += s->step) {
			char path[256], hdr[600];
			const char *hdrs[2] = { hdr, NULL };
			int64_t due = s->start_ns + k * 1000000000 +
			              (int64_t)v * 1000000000 / s->n,
			        now = pl_now_ns();
			long st = 0;

			if (due >= s->end_ns)
				goto out;
			if (due > now)
				usleep((useconds_t)((due - now) / 1000));
			snprintf(path, sizeof(path),
			         "/v1/webchat/%s/messages?after=%s&wait_ms=0",
			         channel, V[v].cursor);
			snprintf(hdr, sizeof(hdr), "X-Webchat-Session: %s",
			         V[v].token);
			if (c != NULL &&
			    hload_do(c, "GET", path, hdrs, NULL, 0, &st,
			             NULL) == 0 &&
			    st == 200)
				s->ok++;
			else
				s->bad++;
		}
out:
	hload_close(c);
	return NULL;
}

static double
run_shorts(int n, int seconds, double idle)
{
	enum { T = 4 };
	pthread_t th[T];
	shorts s[T];
	long ok = 0, bad = 0;
	int64_t start = pl_now_ns() + 100000000;
	stack_cpu a, b;
	char what[128];
	double total;

	for (int t = 0; t < T; t++) {
		s[t] = (shorts){
			t, T, n, start, start + (int64_t)seconds * 1000000000,
			0, 0
		};
		pthread_create(&th[t], NULL, shorts_main, &s[t]);
	}
	usleep(100000);
	stack_cpu_take(&S, &a);
	for (int t = 0; t < T; t++) {
		pthread_join(th[t], NULL);
		ok += s[t].ok;
		bad += s[t].bad;
	}
	stack_cpu_take(&S, &b);
	snprintf(what, sizeof(what),
	         "short polls, each visitor once a second (%ld answered 200, "
	         "%ld not)",
	         ok, bad);
	total = cpu_print(what, &a, &b);
	printf("      above idle: %.1f ms a second, %.0f us a poll\n",
	       total - idle,
	       ok + bad > 0
	               ? (total - idle) * seconds * 1e3 / (double)(ok + bad)
	               : 0.0);
	return total;
}

// ---------------------------------------------------------------------------
// Messages to waiting sessions

static int
cmp64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return x < y ? -1 : x > y;
}

// The latest message id in a poll's JSON answer into cursor; true when the
// agent's answer is among its messages.
static bool
take_answer(json_t *j, char *cursor, size_t cap)
{
	json_t *msgs = json_object_get(j, "messages"), *m;
	bool seen = false;
	size_t i;

	if (json_is_string(json_object_get(j, "cursor")))
		snprintf(cursor, cap, "%s", stack_jstr(j, "cursor", NULL));
	json_array_foreach(msgs, i, m)
	{
		const char *t = stack_jstr(m, "text", NULL);
		if (strstr(t, ANSWER) != NULL)
			seen = true;
	}
	return seen;
}

// Posts one message to each of `messages` waiting sessions, in turn, and
// prints how long each took to reach its poll and the agent's reply to
// reach the visitor. Marks those waiters in `used`.
static void
run_messages(hload *c, int n, int messages, int phase, bool *used)
{
	int64_t *notice = calloc((size_t)messages, sizeof(int64_t)),
	        *reply = calloc((size_t)messages, sizeof(int64_t));
	int got_notice = 0, got_reply = 0, failed = 0;

	for (int m = 0; m < messages && notice && reply; m++) {
		int k = (int)((int64_t)m * n / messages);
		char path[256], hdr[600], body[160];
		const char *hdrs[3] = { hdr, "Content-Type: application/json",
			                NULL };
		int64_t t0, end;
		long st = 0;
		bool seen = false;
		json_t *j;

		used[k] = true;
		snprintf(path, sizeof(path), "/v1/webchat/%s/messages",
		         channel);
		snprintf(hdr, sizeof(hdr), "X-Webchat-Session: %s", V[k].token);
		snprintf(body, sizeof(body),
		         "{\"text\":\"" QUESTION "\",\"client_message_id\":"
		         "\"bench-%d-%d\"}",
		         phase, m);
		// At no fixed phase of the gateway's 100 ms look: the reply
		// before was seen by a poll that look answered.
		usleep((useconds_t)(m * 7919 % 200) * 1000);
		t0 = pl_now_ns();
		if (hload_do(c, "POST", path, hdrs, body, strlen(body), &st,
		             NULL) != 0 ||
		    st != 202) {
			failed++;
			continue;
		}
		end = t0 + 10LL * 1000000000;
		while (!atomic_load(&W[k].done) && pl_now_ns() < end)
			usleep(200);
		if (!atomic_load(&W[k].done) || W[k].status != 200) {
			failed++;
			continue;
		}
		notice[got_notice++] = W[k].t_done - t0;
		j = waiter_json(&W[k]);
		seen = take_answer(j, V[k].cursor, sizeof(V[k].cursor));
		json_decref(j);
		// The agent's reply, when it was not in the first answer: the
		// widget polls again from the new cursor.
		while (!seen && pl_now_ns() < end) {
			char *out = NULL;
			snprintf(
			        path, sizeof(path),
			        "/v1/webchat/%s/messages?after=%s&wait_ms=5000",
			        channel, V[k].cursor);
			hdrs[1] = NULL;
			if (hload_do(c, "GET", path, hdrs, NULL, 0, &st,
			             &out) != 0 ||
			    st != 200) {
				free(out);
				break;
			}
			j = json_loads(out, 0, NULL);
			free(out);
			seen = take_answer(j, V[k].cursor, sizeof(V[k].cursor));
			json_decref(j);
		}
		if (seen)
			reply[got_reply++] = pl_now_ns() - t0;
		else
			failed++;
	}
	qsort(notice, (size_t)got_notice, sizeof(int64_t), cmp64);
	qsort(reply, (size_t)got_reply, sizeof(int64_t), cmp64);
	printf("    %d messages, each to a waiting session (%d failed): its "
	       "poll answered p50 %.0f ms, max %.0f ms; the agent's reply "
	       "seen p50 %.0f ms, max %.0f ms\n",
	       messages, failed,
	       got_notice ? notice[got_notice / 2] / 1e6 : 0.0,
	       got_notice ? notice[got_notice - 1] / 1e6 : 0.0,
	       got_reply ? reply[got_reply / 2] / 1e6 : 0.0,
	       got_reply ? reply[got_reply - 1] / 1e6 : 0.0);
	free(notice);
	free(reply);
}

// N long-polls at once: CPU while they wait, messages to some, then the
// rest answered at the end of their wait.
static void
run_waiting(hload *c, int n, int seconds, int messages, int phase, double idle,
            double shorts_total)
{
	bool used[MAX_N] = { false };
	int opened = 0, early = 0, codes[6] = { 0 }, nw = 0;
	int64_t *waits = calloc((size_t)n, sizeof(int64_t)), end;
	pid_t gw = stack_proc_of(&S, "gateway")->pid;
	long rss, threads;
	stack_cpu a, b;
	static pg_snap pa, pb;
	char what[128];
	double total;

	for (int i = 0; i < n; i++)
		opened += waiter_open(&W[i], &V[i]) == 0;
	set_waiters(n);
	usleep(1500000); // each asked once and parked
	pg_take(&pa);
	stack_cpu_take(&S, &a);
	sleep((unsigned)seconds);
	stack_cpu_take(&S, &b);
	pg_take(&pb);
	for (int i = 0; i < n; i++)
		early += atomic_load(&W[i].done);
	proc_status(gw, &rss, &threads);
	snprintf(what, sizeof(what),
	         "long polls, %d of %d waiting (%d answered early)", opened, n,
	         early);
	total = cpu_print(what, &a, &b);
	printf("      above idle: %.1f ms a second, %.1f us a second a "
	       "waiting poll; long / short polls %.2f (above idle %.2f)\n",
	       total - idle, n ? (total - idle) * 1e3 / n : 0.0,
	       shorts_total > 0 ? total / shorts_total : 0.0,
	       shorts_total - idle > 0 ? (total - idle) / (shorts_total - idle)
	                               : 0.0);
	printf("      gateway: RSS %.1f MiB, %ld threads\n", rss / 1024.0,
	       threads);
	pg_print(&pa, &pb, (double)(b.t - a.t) / 1e9);
	if (messages > n)
		messages = n;
	run_messages(c, n, messages, phase, used);

	// The others answer at the end of their wait (25 s after sending).
	end = pl_now_ns() + (WAIT_MS + 10000) * 1000000LL;
	for (int i = 0; i < n; i++)
		while (W[i].fd >= 0 && !atomic_load(&W[i].done) &&
		       pl_now_ns() < end)
			usleep(20000);
	for (int i = 0; i < n; i++) {
		waiter *w = &W[i];
		if (used[i] || w->fd < 0)
			continue;
		if (!atomic_load(&w->done))
			codes[0]++;
		else {
			int cl = w->status / 100;
			codes[cl >= 1 && cl <= 5 ? cl : 0]++;
			if (w->status == 200 && waits)
				waits[nw++] = w->t_done - w->t_sent;
		}
	}
	qsort(waits, (size_t)nw, sizeof(int64_t), cmp64);
	printf("    the other %d polls: %d answered 200 after min %.2f s, "
	       "median %.2f s, max %.2f s; %d 4xx, %d 5xx, %d unanswered or "
	       "cut\n",
	       n - messages, codes[2], nw ? waits[0] / 1e9 : 0.0,
	       nw ? waits[nw / 2] / 1e9 : 0.0, nw ? waits[nw - 1] / 1e9 : 0.0,
	       codes[4], codes[5], codes[0] + codes[1] + codes[3]);
	set_waiters(0);
	for (int i = 0; i < n; i++) {
		if (W[i].fd >= 0)
			close(W[i].fd);
		W[i].fd = -1;
		free(W[i].buf);
		W[i].buf = NULL;
	}
	free(waits);
	fflush(stdout);
}

int
main(int argc, char **argv)
{
	const char *list = argc > 1 ? argv[1] : "100,500,1000";
	int seconds = argc > 2 ? atoi(argv[2]) : 10;
	int messages = argc > 3 ? atoi(argv[3]) : 20;
	const char *env[] = { "PARLEY_TENANTS_PWHASH_OPSLIMIT=1",
		              "PARLEY_TENANTS_PWHASH_MEMLIMIT=65536",
		              "PARLEY_LOG_LEVEL=error",
		              "PARLEY_HTTP_MAX_CONNS=2048",
		              "PARLEY_WEBCHAT_MAX_WAITING=1000",
		              // As docker-compose.yml and deploy/k8s run them.
		              "PARLEY_WORKERS=4", NULL };
	int ns[16], nn = 0, max_n = 0, phase = 0, rc;
	char token[256], agent[64], path[256], *dup, *save = NULL;
	struct rlimit rl;
	pthread_t reader;
	stack_cpu a, b;
	hload *c;
	json_t *j;
	double idle;

	dup = strdup(list);
	for (char *t = strtok_r(dup, ",", &save); t != NULL && nn < 16;
	     t = strtok_r(NULL, ",", &save)) {
		ns[nn] = atoi(t);
		if (ns[nn] < 1 || ns[nn] > MAX_N) {
			fprintf(stderr, "bench_webchat: each N in 1..%d\n",
			        MAX_N);
			return 2;
		}
		if (ns[nn] > max_n)
			max_n = ns[nn];
		nn++;
	}
	free(dup);
	if (nn == 0 || seconds < 1 || seconds > 15 || messages < 0) {
		fprintf(stderr,
		        "usage: bench_webchat [N,N,...] [seconds 1..15] "
		        "[messages]\n");
		return 2;
	}
	// N sockets here, and as many in the gateway (its own limit is its
	// process's).
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	if ((rc = stack_start(&S, env)) != 0) {
		fprintf(stderr, "stack_start: %d\n", rc);
		return 1;
	}

	// A tenant with a webchat channel and a published retrieval agent.
	stack_must_signup(
	        &S,
	        "{\"tenant_name\":\"Bench Chat\",\"email\":"
	        "\"owner@webchat.bench.test\",\"password\":\"Bench-pass-2024\","
	        "\"full_name\":\"Owner\"}",
	        token, sizeof(token));
	j = stack_must(&S, 201, "POST", "/v1/channels", token,
	               "{\"type\":\"webchat\",\"name\":\"Website\"}");
	snprintf(channel, sizeof(channel), "%s", stack_jstr(j, "id", NULL));
	json_decref(j);
	stack_must_agent(&S, token, channel, "{\"name\":\"Web bot\"}",
	                 "{\"entries\":[{\"question\":\"What are your opening "
	                 "hours?\",\"answer\":\"" ANSWER "\",\"keywords\":"
	                 "[\"hours\",\"open\"]}]}",
	                 agent, sizeof(agent));

	// The visitors' sessions, through the keep-alive client.
	c = hload_open(S.http_port);
	snprintf(path, sizeof(path), "/v1/webchat/%s/sessions", channel);
	for (int i = 0; i < max_n; i++) {
		const char *hdrs[2] = { "Content-Type: application/json",
			                NULL };
		long st = 0;
		char *out = NULL;
		if (c == NULL ||
		    hload_do(c, "POST", path, hdrs, "{}", 2, &st, &out) != 0 ||
		    st != 201) {
			fprintf(stderr, "session %d: HTTP %ld: %.300s\n", i, st,
			        out ? out : "");
			return 1;
		}
		j = json_loads(out, 0, NULL);
		free(out);
		snprintf(V[i].token, sizeof(V[i].token), "%s",
		         stack_jstr(j, "session_token", NULL));
		snprintf(V[i].cursor, sizeof(V[i].cursor), "%s",
		         stack_jstr(j, "cursor", NULL));
		json_decref(j);
	}

	// Statistics for the tables the sessions filled, as a deployment past
	// its first minutes has them. PostgreSQL's share still moves from run
	// to run (the gateway README, Web chat).
	{
		char url[PGH_URL_MAX];
		if (pgh_url(&S.pg, "postgres", "parley", url, sizeof(url)) !=
		            0 ||
		    pgh_exec_url(url, "VACUUM ANALYZE") != 0)
			fprintf(stderr, "VACUUM ANALYZE failed\n");
	}
	printf("bench_webchat: %d s windows, %d messages per N, stack at %s, "
	       "%d sessions\n",
	       seconds, messages, S.base_url, max_n);
	pthread_create(&reader, NULL, reader_main, NULL);
	sleep(1);
	stack_cpu_take(&S, &a);
	sleep((unsigned)seconds);
	stack_cpu_take(&S, &b);
	printf("idle:\n");
	idle = cpu_print("nothing asked", &a, &b);
	for (int p = 0; p < nn; p++) {
		double sh;
		printf("N = %d:\n", ns[p]);
		sh = run_shorts(ns[p], seconds, idle);
		run_waiting(c, ns[p], seconds, messages, phase++, idle, sh);
	}
	atomic_store(&reader_stop, 1);
	pthread_join(reader, NULL);
	printf("peak RSS (VmHWM):\n");
	for (int i = 0; i < S.n; i++)
		printf("  %-10s %6ld KiB\n", S.procs[i].name,
		       stack_peak_rss_kb(S.procs[i].pid));
	hload_close(c);
	stack_http_release();
	rc = stack_stop(&S);
	return rc == 0 ? 0 : 1;
}
