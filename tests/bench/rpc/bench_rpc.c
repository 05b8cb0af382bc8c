// bench_rpc: round-trip latency and calls/s of raw nng REQ/REP, Parley's RPC
// (envelope + dispatch + arena + handler table) and gRPC C++ unary echo, in
// one run, over ipc/unix sockets and tcp://127.0.0.1. Servers run in a child
// process; clients are threads of this one.
//
// usage: bench_rpc [--seconds S] [--payload N] [--workers W] [--grpc PATH]
//                  [--only nng|parley|grpc]
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/protocol/reqrep0/req.h>

#include "echo_service.h"
#include "pl/log.h"
#include "pl/ops.h"
#include "pl/rpc.h"
#include "stack.h"
#include "port.h"

#define SECRET "bench-secret-bench-secret"

static double seconds = 3.0;
static int payload = 64;
static int workers = 2;
static int conns = 0; // client connections per server (0: default)
static char *grpc_bin = NULL;
static const char *only = NULL;

typedef struct result {
	double calls_per_s;
	double p50_us, p99_us;
	long calls;
	long errors;
	double cpu_us; // CPU (user+sys) of client and server per call, us
} result;

// CPU time in microseconds: this process (every thread), its reaped
// children, or another process by /proc/<pid>/stat (utime + stime).
static double
cpu_self_us(int who)
{
	struct rusage ru;
	getrusage(who, &ru);
	return (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e6 +
	       ru.ru_utime.tv_usec + ru.ru_stime.tv_usec;
}

// A server process's CPU so far (tests/lib/stack.c reads /proc), 0 when
// it cannot be read.
static double
cpu_pid_us(pid_t pid)
{
	double s = stack_cpu_s(pid);

	return s < 0 ? 0 : s * 1e6;
}

static int
cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return x < y ? -1 : x > y;
}

// Servers (child process).

static volatile sig_atomic_t stop_flag;

static void
on_term(int sig)
{
	(void)sig;
	stop_flag = 1;
}

typedef struct raw_srv {
	nng_socket sock;
} raw_srv;

// Raw nng baseline: blocking receive and send on a context, one thread per
// context, echoing the bytes back.
static void *
raw_worker(void *arg)
{
	raw_srv *r = arg;
	nng_ctx ctx;
	nng_aio *aio;

	if (nng_ctx_open(&ctx, r->sock) != 0 || nng_aio_alloc(&aio, NULL, NULL))
		return NULL;
	for (;;) {
		nng_ctx_recv(ctx, aio);
		nng_aio_wait(aio);
		if (nng_aio_result(aio) != 0)
			break;
		nng_ctx_send(ctx, aio);
		nng_aio_wait(aio);
		if (nng_aio_result(aio) != 0) {
			nng_msg_free(nng_aio_get_msg(aio));
			if (nng_aio_result(aio) == NNG_ECLOSED)
				break;
		}
	}
	nng_aio_free(aio);
	return NULL;
}

static void
run_raw_server(const char *url, int threads)
{
	raw_srv r;
	pthread_t t[64];

	if (nng_rep0_open(&r.sock) != 0 || nng_listen(r.sock, url, NULL, 0)) {
		fprintf(stderr, "raw server: cannot listen on %s\n", url);
		exit(1);
	}
	for (int i = 0; i < threads; i++)
		pthread_create(&t[i], NULL, raw_worker, &r);
	while (!stop_flag)
		pause();
	nng_close(r.sock);
	for (int i = 0; i < threads; i++)
		pthread_join(t[i], NULL);
	exit(0);
}

static void
run_parley_server(const char *url)
{
	static const pl_rpc_service *const svcs[] = { &echo_service, NULL };
	pl_rpc_server *s;
	pl_rpc_server_config cfg = { 0 };

	cfg.name = "bench";
	cfg.listen = url;
	cfg.workers = workers;
	cfg.contexts = 64;
	cfg.secret = SECRET;
	if (pl_rpc_server_open(&s, &cfg, svcs) != PL_OK ||
	    pl_rpc_server_start(s) != PL_OK) {
		fprintf(stderr, "parley server: cannot start on %s\n", url);
		exit(1);
	}
	while (!stop_flag)
		pause();
	pl_rpc_server_close(s);
	exit(0);
}

static pid_t
spawn_server(const char *kind, const char *url, int threads)
{
	pid_t pid = fork();

	if (pid < 0) {
		perror("fork");
		exit(1);
	}
	if (pid == 0) {
		// nng is not fork-safe once used: the server is a fresh
		// process.
		char nthreads[16], nworkers[16];
		snprintf(nthreads, sizeof(nthreads), "%d", threads);
		snprintf(nworkers, sizeof(nworkers), "%d", workers);
		execl("/proc/self/exe", "bench_rpc", "--serve", kind, url,
		      nthreads, nworkers, (char *)NULL);
		_exit(127);
	}
	usleep(200 * 1000); // let it bind
	return pid;
}

static void
stop_server(pid_t pid)
{
	int st;
	kill(pid, SIGTERM);
	waitpid(pid, &st, 0);
}

// Clients.

typedef struct client_arg {
	const char *kind;
	const char *url;
	nng_socket sock;    // raw: shared socket
	pl_rpc_client *cli; // parley: shared client
	int64_t *lat;       // latencies, ns
	long cap, n;
	long errors;
	long n_all; // every call, warm-up included
	int64_t t_end;
	int64_t t_warm;
} client_arg;

static void *
client_main(void *arg)
{
	client_arg *c = arg;
	uint8_t *data = calloc(1, (size_t)payload);
	pl_arena a;
	nng_ctx ctx;
	nng_aio *aio = NULL;

	pl_arena_init(&a, 0, 0);
	if (strcmp(c->kind, "nng") == 0) {
		nng_ctx_open(&ctx, c->sock);
		nng_aio_alloc(&aio, NULL, NULL);
		nng_aio_set_timeout(aio, 5000);
	}
	for (;;) {
		int64_t t0 = pl_now_ns();
		int ok;
		if (t0 >= c->t_end)
			break;
		if (aio != NULL) {
			nng_msg *m;
			nng_msg_alloc(&m, (size_t)payload);
			memcpy(nng_msg_body(m), data, (size_t)payload);
			nng_aio_set_msg(aio, m);
			nng_ctx_send(ctx, aio);
			nng_aio_wait(aio);
			ok = nng_aio_result(aio) == 0;
			if (!ok) {
				nng_msg_free(m);
			} else {
				nng_ctx_recv(ctx, aio);
				nng_aio_wait(aio);
				ok = nng_aio_result(aio) == 0;
				if (ok)
					nng_msg_free(nng_aio_get_msg(aio));
			}
		} else {
			Parley__Test__V1__EchoRequest in =
			        PARLEY__TEST__V1__ECHO_REQUEST__INIT;
			Parley__Test__V1__EchoReply *out;
			in.data.data = data;
			in.data.len = (size_t)payload;
			ok = pl_rpc_call(
			             c->cli, ECHO_METHOD("Echo"), &in.base,
			             &parley__test__v1__echo_reply__descriptor,
			             (void **)&out, &a, NULL, NULL) == PL_OK &&
			     out->data.len == (size_t)payload;
			pl_arena_reset(&a);
		}
		if (!ok) {
			c->errors++;
			continue;
		}
		c->n_all++;
		if (t0 < c->t_warm)
			continue;
		if (c->n == c->cap) {
			c->cap = c->cap ? c->cap * 2 : 65536;
			c->lat = realloc(c->lat,
			                 (size_t)c->cap * sizeof(int64_t));
		}
		c->lat[c->n++] = pl_now_ns() - t0;
	}
	if (aio != NULL) {
		nng_aio_free(aio);
		nng_ctx_close(ctx);
	}
	pl_arena_fini(&a);
	free(data);
	return NULL;
}

static result
run_clients(const char *kind, const char *url, int nclients, pid_t srv)
{
	double cpu0 = cpu_self_us(RUSAGE_SELF) + cpu_pid_us(srv);
	long n_all = 0;
	client_arg c[64];
	pthread_t t[64];
	nng_socket sock;
	pl_rpc_client *cli = NULL;
	result r = { 0 };
	int64_t warm = 300 * 1000000LL;
	int64_t start;
	long total = 0;
	int64_t *all;

	if (strcmp(kind, "nng") == 0) {
		nng_req0_open(&sock);
		nng_socket_set_ms(sock, NNG_OPT_REQ_RESENDTIME,
		                  NNG_DURATION_INFINITE);
		if (nng_dial(sock, url, NULL, 0) != 0) {
			fprintf(stderr, "cannot dial %s\n", url);
			exit(1);
		}
	} else {
		pl_rpc_client_config cfg = { 0 };
		cfg.urls = url;
		cfg.secret = SECRET;
		cfg.service = "bench";
		cfg.conns = conns;
		if (pl_rpc_client_open(&cli, &cfg) != PL_OK) {
			fprintf(stderr, "cannot open client %s\n", url);
			exit(1);
		}
	}
	start = pl_now_ns();
	for (int i = 0; i < nclients; i++) {
		memset(&c[i], 0, sizeof(c[i]));
		c[i].kind = kind;
		c[i].url = url;
		c[i].sock = sock;
		c[i].cli = cli;
		c[i].t_warm = start + warm;
		c[i].t_end = start + warm + (int64_t)(seconds * 1e9);
		pthread_create(&t[i], NULL, client_main, &c[i]);
	}
	for (int i = 0; i < nclients; i++) {
		pthread_join(t[i], NULL);
		total += c[i].n;
		n_all += c[i].n_all;
		r.errors += c[i].errors;
	}
	if (n_all > 0)
		r.cpu_us = (cpu_self_us(RUSAGE_SELF) + cpu_pid_us(srv) - cpu0) /
		           (double)n_all;
	all = malloc((size_t)(total ? total : 1) * sizeof(int64_t));
	total = 0;
	for (int i = 0; i < nclients; i++) {
		memcpy(all + total, c[i].lat, (size_t)c[i].n * sizeof(int64_t));
		total += c[i].n;
		free(c[i].lat);
	}
	qsort(all, (size_t)total, sizeof(int64_t), cmp_i64);
	r.calls = total;
	r.calls_per_s = total / seconds;
	if (total > 0) {
		r.p50_us = all[total / 2] / 1e3;
		r.p99_us = all[(total * 99) / 100] / 1e3;
	}
	free(all);
	if (cli)
		pl_rpc_client_close(cli);
	else
		nng_close(sock);
	return r;
}

// gRPC through the C++ helper program.

static bool
grpc_available(void)
{
	return grpc_bin != NULL && access(grpc_bin, X_OK) == 0;
}

static result
run_grpc(const char *addr, int nclients)
{
	result r = { 0 };
	int pfd[2];
	pid_t srv;
	char cmd[1024], line[512], ready[64] = { 0 };
	FILE *p;
	double cpu0 = cpu_self_us(RUSAGE_CHILDREN);

	if (pipe(pfd) != 0)
		exit(1);
	srv = fork();
	if (srv == 0) {
		dup2(pfd[1], 1);
		close(pfd[0]);
		execl(grpc_bin, grpc_bin, "server", addr, (char *)NULL);
		_exit(127);
	}
	close(pfd[1]);
	if (read(pfd[0], ready, sizeof(ready) - 1) <= 0) {
		fprintf(stderr, "grpc server did not start\n");
		r.errors = 1;
		goto out;
	}
	snprintf(cmd, sizeof(cmd),
	         "%s client %s --clients %d --seconds %g --payload %d "
	         "--warmup-ms 300",
	         grpc_bin, addr, nclients, seconds, payload);
	if ((p = popen(cmd, "r")) == NULL)
		goto out;
	while (fgets(line, sizeof(line), p) != NULL) {
		char *s;
		if ((s = strstr(line, "calls_per_s=")) != NULL)
			r.calls_per_s = atof(s + 12);
		if ((s = strstr(line, "p50_us=")) != NULL)
			r.p50_us = atof(s + 7);
		if ((s = strstr(line, "p99_us=")) != NULL)
			r.p99_us = atof(s + 7);
		if ((s = strstr(line, " calls=")) != NULL)
			r.calls = atol(s + 7);
	}
	pclose(p);
out:
	close(pfd[0]);
	kill(srv, SIGTERM);
	waitpid(srv, NULL, 0);
	// Client and server processes, reaped: their start and the warm-up
	// are in it too, so the figure is an estimate from calls/s.
	if (r.calls_per_s > 0)
		r.cpu_us = (cpu_self_us(RUSAGE_CHILDREN) - cpu0) /
		           (r.calls_per_s * (seconds + 0.3));
	return r;
}

static void
print_row(const char *transport, const char *impl, int n, result r)
{
	printf("%-5s %-7s %7d %12.0f %9.1f %9.1f %10.1f %8ld\n", transport,
	       impl, n, r.calls_per_s, r.p50_us, r.p99_us, r.cpu_us, r.errors);
	fflush(stdout);
}

static bool
want(const char *impl)
{
	return only == NULL || strcmp(only, impl) == 0;
}

int
main(int argc, char **argv)
{
	static const int counts[] = { 1, 4, 16 };
	result res[2][3][3]; // transport, impl (nng, parley, grpc), clients
	const char *tnames[2] = { "ipc", "tcp" };
	char self[1024];
	ssize_t n;

	if (argc == 6 && strcmp(argv[1], "--serve") == 0) {
		signal(SIGTERM, on_term);
		workers = atoi(argv[5]);
		if (strcmp(argv[2], "nng") == 0)
			run_raw_server(argv[3], atoi(argv[4]));
		else
			run_parley_server(argv[3]);
		return 0;
	}
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc)
			seconds = atof(argv[++i]);
		else if (strcmp(argv[i], "--payload") == 0 && i + 1 < argc)
			payload = atoi(argv[++i]);
		else if (strcmp(argv[i], "--workers") == 0 && i + 1 < argc)
			workers = atoi(argv[++i]);
		else if (strcmp(argv[i], "--conns") == 0 && i + 1 < argc)
			conns = atoi(argv[++i]);
		else if (strcmp(argv[i], "--grpc") == 0 && i + 1 < argc)
			grpc_bin = argv[++i];
		else if (strcmp(argv[i], "--only") == 0 && i + 1 < argc)
			only = argv[++i];
		else {
			fprintf(stderr,
			        "usage: %s [--seconds S] [--payload N] "
			        "[--workers W] [--grpc PATH] "
			        "[--only nng|parley|grpc]\n",
			        argv[0]);
			return 2;
		}
	}
	if (seconds <= 0 || payload < 0 || workers < 1 || workers > 64)
		return 2;
	if (grpc_bin == NULL) {
		// By default the helper sits beside this program's build dir.
		n = readlink("/proc/self/exe", self, sizeof(self) - 64);
		if (n > 0) {
			self[n] = '\0';
			char *slash = strrchr(self, '/');
			if (slash) {
				strcpy(slash, "/grpc/bench_grpc_echo");
				grpc_bin = strdup(self);
			}
		}
	}
	signal(SIGPIPE, SIG_IGN);
	pl_log_init("bench", PL_LOG_WARN);
	memset(res, 0, sizeof(res));

	printf("payload %d bytes, %.1f s per point (after 0.3 s warm-up), "
	       "Parley server workers %d, %ld cores\n",
	       payload, seconds, workers, sysconf(_SC_NPROCESSORS_ONLN));
	printf("%-5s %-7s %7s %12s %9s %9s %10s %8s\n", "trans", "impl",
	       "clients", "calls/s", "p50_us", "p99_us", "cpu_us/call",
	       "errors");
	for (int t = 0; t < 2; t++) {
		for (int k = 0; k < 3; k++) {
			const char *impl = k == 0   ? "nng"
			                   : k == 1 ? "parley"
			                            : "grpc";
			char url[256];
			pid_t pid = 0;
			if (!want(impl))
				continue;
			if (k == 2 && !grpc_available()) {
				printf("%-5s %-7s skipped: gRPC baseline not "
				       "built (needs libgrpc++-dev, "
				       "protobuf-compiler-grpc)\n",
				       tnames[t], impl);
				continue;
			}
			if (t == 0)
				snprintf(url, sizeof(url),
				         k == 2 ? "unix:/tmp/"
				                  "parley-bench-%d-%d.sock"
				                : "ipc:///tmp/"
				                  "parley-bench-%d-%d.sock",
				         (int)getpid(), k);
			else
				snprintf(url, sizeof(url),
				         k == 2 ? "127.0.0.1:%d"
				                : "tcp://127.0.0.1:%d",
				         test_port());
			if (k < 2)
				pid = spawn_server(impl, url, 16);
			for (int c = 0; c < 3; c++) {
				res[t][k][c] =
				        k == 2 ? run_grpc(url, counts[c])
				               : run_clients(impl, url,
				                             counts[c], pid);
				print_row(tnames[t], impl, counts[c],
				          res[t][k][c]);
			}
			if (pid)
				stop_server(pid);
		}
	}

	printf("\nratios (Parley / baseline):\n");
	for (int t = 0; t < 2; t++) {
		result *nn = res[t][0], *pa = res[t][1], *gr = res[t][2];
		if (nn[0].p50_us > 0 && pa[0].p50_us > 0)
			printf("%s  p50 latency, 1 client:  parley/nng  = %.2f "
			       "(target <= 1.3 over ipc)\n",
			       tnames[t], pa[0].p50_us / nn[0].p50_us);
		if (gr[0].p50_us > 0 && pa[0].p50_us > 0)
			printf("%s  p50 latency, 1 client:  parley/grpc = "
			       "%.2f\n",
			       tnames[t], pa[0].p50_us / gr[0].p50_us);
		for (int c = 0; c < 3; c++) {
			if (nn[c].calls_per_s > 0 && pa[c].calls_per_s > 0)
				printf("%s  calls/s, %2d clients:   parley/nng "
				       " "
				       "= %.2f\n",
				       tnames[t], counts[c],
				       pa[c].calls_per_s / nn[c].calls_per_s);
			if (gr[c].calls_per_s > 0 && pa[c].calls_per_s > 0)
				printf("%s  calls/s, %2d clients:   "
				       "parley/grpc "
				       "= %.2f%s\n",
				       tnames[t], counts[c],
				       pa[c].calls_per_s / gr[c].calls_per_s,
				       c == 2 && t == 1
				               ? " (target >= 1.0 over tcp)"
				               : "");
		}
		if (gr[2].cpu_us > 0 && pa[2].cpu_us > 0)
			printf("%s  CPU per call, 16 clients: parley/grpc = "
			       "%.2f "
			       "(less load-sensitive than calls/s)\n",
			       tnames[t], pa[2].cpu_us / gr[2].cpu_us);
	}
	return 0;
}
