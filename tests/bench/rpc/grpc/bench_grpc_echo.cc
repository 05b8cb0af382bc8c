// bench_grpc_echo: the gRPC C++ unary echo baseline for tests/bench/rpc.
//
//   bench_grpc_echo server ADDR [--model sync|callback]
//   bench_grpc_echo client ADDR --clients N --seconds S --payload BYTES
//                   [--warmup-ms W] [--channels per-thread|shared]
//
// ADDR is any gRPC target, e.g. unix:/tmp/echo.sock or 127.0.0.1:7000.
// The server prints "ready" once listening and runs until SIGTERM/SIGINT.
// The client prints one line:
//   grpc clients=N calls=C seconds=S calls_per_s=X p50_us=Y p99_us=Z
// Defaults are the fastest settings measured on the reference machine (see
// README.md); the other choices stay selectable so the comparison can be
// re-checked.

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <pthread.h>
#include <unistd.h>

#include <grpcpp/grpcpp.h>

#include "echo.grpc.pb.h"

namespace
{

using parley::bench::v1::Echo;
using parley::bench::v1::EchoReply;
using parley::bench::v1::EchoRequest;
using Clock = std::chrono::steady_clock; // gRPC deadlines: system_clock

// gRPC refuses messages above 4 MiB by default; stay well below it.
constexpr long max_payload = 4L * 1000 * 1000;
// How long the client waits for the server before giving up.
constexpr int connect_timeout_s = 10;
// Extra time past warmup + run after which a stuck client aborts.
constexpr int watchdog_slack_s = 10;

void
usage(void)
{
	fprintf(stderr,
	        "usage: bench_grpc_echo server ADDR [--model sync|callback]\n"
	        "       bench_grpc_echo client ADDR --clients N --seconds S "
	        "--payload BYTES\n"
	        "                       [--warmup-ms W] "
	        "[--channels per-thread|shared]\n");
}

// Parses a whole decimal integer in [lo, hi]; false on anything else.
bool
parse_long(const char *s, long lo, long hi, long *out)
{
	char *end;
	long v;

	if (s == nullptr || *s == '\0') {
		return false;
	}
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || *end != '\0' || v < lo || v > hi) {
		return false;
	}
	*out = v;
	return true;
}

// Parses a positive decimal number of seconds, at most one hour.
bool
parse_seconds(const char *s, double *out)
{
	char *end;
	double v;

	if (s == nullptr || *s == '\0') {
		return false;
	}
	errno = 0;
	v = strtod(s, &end);
	if (errno != 0 || *end != '\0' || !(v > 0.0) || v > 3600.0) {
		return false;
	}
	*out = v;
	return true;
}

// ---------------------------------------------------------------- server

class SyncEcho final : public Echo::Service
{
	grpc::Status Echo(grpc::ServerContext *, const EchoRequest *req,
	                  EchoReply *reply) override
	{
		reply->set_data(req->data());
		return grpc::Status::OK;
	}
};

class CallbackEcho final : public Echo::CallbackService
{
	grpc::ServerUnaryReactor *Echo(grpc::CallbackServerContext *ctx,
	                               const EchoRequest *req,
	                               EchoReply *reply) override
	{
		grpc::ServerUnaryReactor *r = ctx->DefaultReactor();

		reply->set_data(req->data());
		r->Finish(grpc::Status::OK);
		return r;
	}
};

int
run_server(const std::string &addr, const std::string &model)
{
	std::unique_ptr<grpc::Service> svc;
	std::unique_ptr<grpc::Server> server;
	grpc::ServerBuilder b;
	sigset_t stop;
	int port = 0;
	int sig;

	if (model == "callback") {
		svc = std::make_unique<CallbackEcho>();
	} else if (model == "sync") {
		svc = std::make_unique<SyncEcho>();
	} else {
		fprintf(stderr, "bench_grpc_echo: unknown --model '%s'\n",
		        model.c_str());
		return 2;
	}

	// Block the stop signals before gRPC starts its threads, so that they
	// all inherit the mask and only sigwait() below ever sees them.
	sigemptyset(&stop);
	sigaddset(&stop, SIGTERM);
	sigaddset(&stop, SIGINT);
	if (pthread_sigmask(SIG_BLOCK, &stop, nullptr) != 0) {
		fprintf(stderr, "bench_grpc_echo: pthread_sigmask failed\n");
		return 1;
	}

	b.AddListeningPort(addr, grpc::InsecureServerCredentials(), &port);
	b.RegisterService(svc.get());
	server = b.BuildAndStart();
	if (server == nullptr || port == 0) {
		fprintf(stderr, "bench_grpc_echo: cannot listen on '%s'\n",
		        addr.c_str());
		return 1;
	}
	printf("ready\n");
	fflush(stdout);

	for (;;) {
		if (sigwait(&stop, &sig) == 0) {
			break;
		}
	}
	// Calls still running after a second are cancelled.
	server->Shutdown(std::chrono::system_clock::now() +
	                 std::chrono::seconds(1));
	server->Wait();
	return 0;
}

// ---------------------------------------------------------------- client

struct client_opts {
	std::string addr;
	long clients = 0;
	double seconds = 0.0;
	long payload = -1;
	long warmup_ms = 500;
	bool shared = false;
};

struct worker {
	std::shared_ptr<grpc::Channel> chan;
	std::vector<uint64_t> lat_ns; // measured round trips
	std::string err;              // empty unless a call failed
};

// Runs blocking echo calls until `end`; keeps the round trips that both
// start at or after `start` and finish by `end`.
void
work(worker *w, long payload, Clock::time_point start, Clock::time_point end)
{
	std::unique_ptr<Echo::Stub> stub = Echo::NewStub(w->chan);
	EchoRequest req;
	EchoReply reply;

	req.set_data(std::string(static_cast<size_t>(payload), 'x'));
	for (;;) {
		grpc::ClientContext ctx;
		Clock::time_point t0 = Clock::now();
		grpc::Status st = stub->Echo(&ctx, req, &reply);
		Clock::time_point t1 = Clock::now();

		if (!st.ok()) {
			w->err = "call failed: " + st.error_message();
			return;
		}
		if (reply.data() != req.data()) {
			w->err = "reply differs from request";
			return;
		}
		if (t1 > end) {
			return;
		}
		if (t0 >= start) {
			w->lat_ns.push_back(static_cast<uint64_t>(
			        std::chrono::duration_cast<
			                std::chrono::nanoseconds>(t1 - t0)
			                .count()));
		}
	}
}

// Nearest-rank percentile of sorted values, in microseconds.
double
percentile_us(const std::vector<uint64_t> &v, double p)
{
	size_t rank = static_cast<size_t>(p * static_cast<double>(v.size()));

	if (static_cast<double>(rank) < p * static_cast<double>(v.size())) {
		rank++;
	}
	if (rank == 0) {
		rank = 1;
	}
	return static_cast<double>(v[rank - 1]) / 1000.0;
}

bool
parse_client(int argc, char **argv, client_opts *o)
{
	for (int i = 0; i < argc; i++) {
		const char *k = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : nullptr;
		bool ok;

		if (strcmp(k, "--clients") == 0) {
			ok = parse_long(v, 1, 4096, &o->clients);
		} else if (strcmp(k, "--seconds") == 0) {
			ok = parse_seconds(v, &o->seconds);
		} else if (strcmp(k, "--payload") == 0) {
			ok = parse_long(v, 0, max_payload, &o->payload);
		} else if (strcmp(k, "--warmup-ms") == 0) {
			ok = parse_long(v, 0, 600000, &o->warmup_ms);
		} else if (strcmp(k, "--channels") == 0) {
			ok = v != nullptr && (strcmp(v, "shared") == 0 ||
			                      strcmp(v, "per-thread") == 0);
			if (ok) {
				o->shared = strcmp(v, "shared") == 0;
			}
		} else {
			fprintf(stderr,
			        "bench_grpc_echo: unknown option '%s'\n", k);
			return false;
		}
		if (!ok) {
			fprintf(stderr,
			        "bench_grpc_echo: bad or missing value for "
			        "%s\n",
			        k);
			return false;
		}
		i++;
	}
	if (o->clients == 0 || o->seconds == 0.0 || o->payload < 0) {
		fprintf(stderr, "bench_grpc_echo: --clients, --seconds and "
		                "--payload are required\n");
		return false;
	}
	return true;
}

std::shared_ptr<grpc::Channel>
make_channel(const std::string &addr, bool own_connection)
{
	grpc::ChannelArguments args;

	// Channels with identical arguments share one connection through
	// the global subchannel pool; a local pool gives each its own.
	// The nng side never retries; gRPC's retry machinery costs a few
	// per cent per call even when unused, so turn it off.
	args.SetInt(GRPC_ARG_ENABLE_RETRIES, 0);
	if (own_connection) {
		args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
	}
	return grpc::CreateCustomChannel(
	        addr, grpc::InsecureChannelCredentials(), args);
}

int
run_client(const client_opts &o)
{
	std::vector<worker> ws(static_cast<size_t>(o.clients));
	std::vector<std::thread> ts;
	std::vector<uint64_t> all;
	std::mutex mu;
	std::condition_variable cv;
	long done = 0;
	std::chrono::seconds connect(connect_timeout_s);

	for (size_t i = 0; i < ws.size(); i++) {
		if (o.shared && i > 0) {
			ws[i].chan = ws[0].chan;
			continue;
		}
		ws[i].chan = make_channel(o.addr, !o.shared);
		if (!ws[i].chan->WaitForConnected(
		            std::chrono::system_clock::now() + connect)) {
			fprintf(stderr,
			        "bench_grpc_echo: cannot connect to '%s'\n",
			        o.addr.c_str());
			return 1;
		}
	}

	auto warm = std::chrono::milliseconds(o.warmup_ms);
	auto run = std::chrono::duration_cast<Clock::duration>(
	        std::chrono::duration<double>(o.seconds));
	auto start = Clock::now() + warm;
	auto end = start + run;

	for (auto &w : ws) {
		w.lat_ns.reserve(1 << 16);
		ts.emplace_back([&, wp = &w] {
			work(wp, o.payload, start, end);
			std::lock_guard<std::mutex> lk(mu);
			done++;
			cv.notify_one();
		});
	}
	{
		std::unique_lock<std::mutex> lk(mu);
		auto limit = end + std::chrono::seconds(watchdog_slack_s);

		if (!cv.wait_until(lk, limit,
		                   [&] { return done == o.clients; })) {
			fprintf(stderr,
			        "bench_grpc_echo: calls stuck for %d s "
			        "after the run; giving up\n",
			        watchdog_slack_s);
			fflush(stderr);
			_exit(1);
		}
	}
	for (auto &t : ts) {
		t.join();
	}

	for (auto &w : ws) {
		if (!w.err.empty()) {
			fprintf(stderr, "bench_grpc_echo: %s\n", w.err.c_str());
			return 1;
		}
		all.insert(all.end(), w.lat_ns.begin(), w.lat_ns.end());
	}
	if (all.empty()) {
		fprintf(stderr, "bench_grpc_echo: no call completed in the "
		                "measured window\n");
		return 1;
	}
	std::sort(all.begin(), all.end());
	printf("grpc clients=%ld calls=%zu seconds=%g calls_per_s=%.1f "
	       "p50_us=%.1f p99_us=%.1f\n",
	       o.clients, all.size(), o.seconds,
	       static_cast<double>(all.size()) / o.seconds,
	       percentile_us(all, 0.50), percentile_us(all, 0.99));
	fflush(stdout);
	return 0;
}

} // namespace

int
main(int argc, char **argv)
{
	if (argc < 3) {
		usage();
		return 2;
	}
	std::string mode = argv[1];
	std::string addr = argv[2];

	if (mode == "server") {
		std::string model = "sync";

		if (argc == 5 && strcmp(argv[3], "--model") == 0) {
			model = argv[4];
		} else if (argc != 3) {
			usage();
			return 2;
		}
		return run_server(addr, model);
	}
	if (mode == "client") {
		client_opts o;

		o.addr = addr;
		if (!parse_client(argc - 3, argv + 3, &o)) {
			usage();
			return 2;
		}
		return run_client(o);
	}
	usage();
	return 2;
}
