// The RPC runtime over inproc://, ipc:// and tcp://127.0.0.1: round trips,
// deadlines, access rules, bad input, concurrency, stop and restart.
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "echo_service.h"
#include "parley/rpc/v1/health.pb-c.h"
#include "pl/log.h"
#include "pl/rpc.h"
#include "port.h"

#define SECRET "test-secret-0123456789"

typedef struct fixture {
	char url[128];
	pl_rpc_server *srv;
	pl_rpc_client *cli;
	pl_arena arena;
} fixture;

static const pl_rpc_service *const services[] = { &echo_service, NULL };

static void
make_url(char *buf, size_t n, const char *kind)
{
	static int seq;
	if (strcmp(kind, "inproc") == 0)
		snprintf(buf, n, "inproc://rpc-test-%d", seq++);
	else if (strcmp(kind, "ipc") == 0)
		snprintf(buf, n, "ipc:///tmp/parley-rpc-test-%d-%d.sock",
		         (int)getpid(), seq++);
	else if (strcmp(kind, "tls") == 0)
		snprintf(buf, n, "tls+tcp://127.0.0.1:%d", test_port());
	else
		snprintf(buf, n, "tcp://127.0.0.1:%d", test_port());
}

// A self-signed certificate and its key in one PEM file, for tls+tcp://.
static char tls_pem[128];

static bool
make_tls_pem(void)
{
	char cmd[2048];
	int n = snprintf(tls_pem, sizeof(tls_pem),
	                 "/tmp/parley-rpc-test-%d.pem", (int)getpid());

	if (n < 0 || (size_t)n >= sizeof(tls_pem))
		return false;
	n = snprintf(
	        cmd, sizeof(cmd),
	        "openssl req -x509 -newkey ec -pkeyopt "
	        "ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=127.0.0.1 "
	        "-keyout %s.key -out %s.crt >/dev/null 2>&1 && "
	        "cat %s.crt %s.key > %s && rm -f %s.crt %s.key",
	        tls_pem, tls_pem, tls_pem, tls_pem, tls_pem, tls_pem, tls_pem);
	return n > 0 && (size_t)n < sizeof(cmd) && system(cmd) == 0;
}

static pl_rpc_server *
start_server(const char *url, int workers)
{
	pl_rpc_server *s;
	pl_rpc_server_config cfg = { 0 };

	cfg.name = "echo";
	cfg.listen = url;
	cfg.workers = workers;
	cfg.secret = SECRET;
	cfg.max_msg = 64 * 1024;
	if (strncmp(url, "tls+", 4) == 0)
		cfg.tls_cert = cfg.tls_key = tls_pem;
	assert_int_equal(pl_rpc_server_open(&s, &cfg, services), PL_OK);
	assert_int_equal(pl_rpc_server_start(s), PL_OK);
	return s;
}

static pl_rpc_client *
open_client(const char *url, const char *secret)
{
	pl_rpc_client *c;
	pl_rpc_client_config cfg = { 0 };

	cfg.urls = url;
	cfg.secret = secret;
	cfg.service = "test";
	cfg.timeout_ms = 3000;
	assert_int_equal(pl_rpc_client_open(&c, &cfg), PL_OK);
	return c;
}

static int
setup_kind(void **state, const char *kind)
{
	fixture *f = calloc(1, sizeof(*f));
	make_url(f->url, sizeof(f->url), kind);
	f->srv = start_server(f->url, 4);
	f->cli = open_client(f->url, SECRET);
	pl_arena_init(&f->arena, 0, 0);
	*state = f;
	return 0;
}

static int
setup_inproc(void **state)
{
	return setup_kind(state, "inproc");
}

static int
setup_ipc(void **state)
{
	return setup_kind(state, "ipc");
}

static int
setup_tcp(void **state)
{
	return setup_kind(state, "tcp");
}

// TCP through nng's own I/O, as TLS, ipc and abstract streams are served.
static bool direct_off;

static int
setup_tcp_nng(void **state)
{
	direct_off = true;
	pl_rpc_set_direct_io(false);
	return setup_kind(state, "tcp");
}

static int
setup_tls(void **state)
{
	return setup_kind(state, "tls");
}

static int
teardown(void **state)
{
	fixture *f = *state;
	pl_rpc_client_close(f->cli);
	pl_rpc_server_close(f->srv);
	pl_arena_fini(&f->arena);
	free(f);
	direct_off = false;
	pl_rpc_set_direct_io(true);
	return 0;
}

static int
call_echo(pl_rpc_client *c, pl_arena *a, const char *method,
          Parley__Test__V1__EchoRequest *in, const pl_rpc_opts *o,
          Parley__Test__V1__EchoReply **out, pl_rpc_result *res)
{
	return pl_rpc_call(c, method, &in->base,
	                   &parley__test__v1__echo_reply__descriptor,
	                   (void **)out, a, o, res);
}

static void
test_round_trip(void **state)
{
	fixture *f = *state;
	Parley__Test__V1__EchoRequest in = PARLEY__TEST__V1__ECHO_REQUEST__INIT;
	Parley__Test__V1__EchoReply *out;
	pl_rpc_result res;
	pl_principal p = PARLEY__RPC__V1__PRINCIPAL__INIT;
	pl_rpc_opts o = { 0 };
	uint8_t bytes[300];

	for (size_t i = 0; i < sizeof(bytes); i++)
		bytes[i] = (uint8_t)i;
	in.text = "hola, ¿qué tal? 👋";
	in.data.data = bytes;
	in.data.len = sizeof(bytes);
	p.kind = PARLEY__RPC__V1__PRINCIPAL_KIND__PRINCIPAL_KIND_USER;
	p.tenant_id = "0192b0c4-0000-7000-8000-000000000001";
	o.principal = &p;
	o.idempotency_key = "key-1";
	assert_int_equal(call_echo(f->cli, &f->arena, ECHO_METHOD("Echo"), &in,
	                           &o, &out, &res),
	                 PL_OK);
	assert_int_equal(res.code, PL_OK);
	assert_non_null(out);
	assert_string_equal(out->text, in.text);
	assert_int_equal(out->data.len, sizeof(bytes));
	assert_memory_equal(out->data.data, bytes, sizeof(bytes));
	assert_string_equal(out->tenant_id, p.tenant_id);
	assert_string_equal(out->idempotency_key, "key-1");
	// The handler saw the client's deadline (3 s default), less transit.
	assert_true(out->remaining_ms > 2000 && out->remaining_ms <= 3000);
}

static void
test_health(void **state)
{
	fixture *f = *state;
	Parley__Rpc__V1__HealthCheckRequest in =
	        PARLEY__RPC__V1__HEALTH_CHECK_REQUEST__INIT;
	Parley__Rpc__V1__HealthCheckResponse *out;

	assert_int_equal(
	        pl_rpc_call(f->cli, "/parley.rpc.v1.Health/Check", &in.base,
	                    &parley__rpc__v1__health_check_response__descriptor,
	                    (void **)&out, &f->arena, NULL, NULL),
	        PL_OK);
	assert_string_equal(out->service, "echo");
	assert_int_equal(
	        out->status,
	        PARLEY__RPC__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING_STATUS_SERVING);
}

static void
test_errors_carry_status_and_details(void **state)
{
	fixture *f = *state;
	Parley__Test__V1__EchoRequest in = PARLEY__TEST__V1__ECHO_REQUEST__INIT;
	Parley__Test__V1__EchoReply *out;
	pl_rpc_result res;

	in.text = "boom";
	in.fail_code = PL_NOT_FOUND;
	assert_int_equal(call_echo(f->cli, &f->arena, ECHO_METHOD("Fail"), &in,
	                           NULL, &out, &res),
	                 PL_NOT_FOUND);
	assert_null(out);
	assert_string_equal(res.message, "failed as asked: boom");

	in.fail_code = PL_INVALID_ARGUMENT;
	assert_int_equal(call_echo(f->cli, &f->arena, ECHO_METHOD("Fail"), &in,
	                           NULL, &out, &res),
	                 PL_INVALID_ARGUMENT);
	assert_int_equal(res.n_details, 1);
	assert_string_equal(res.details[0]->field, "text");
	assert_string_equal(res.details[0]->description,
	                    "must not be \"boom\"");
}

static void
test_unknown_method(void **state)
{
	fixture *f = *state;
	Parley__Test__V1__EchoRequest in = PARLEY__TEST__V1__ECHO_REQUEST__INIT;
	Parley__Test__V1__EchoReply *out;
	pl_rpc_result res;

	assert_int_equal(call_echo(f->cli, &f->arena,
	                           "/parley.test.v1.Echo/Nope", &in, NULL, &out,
	                           &res),
	                 PL_UNIMPLEMENTED);
	assert_non_null(strstr(res.message, "unknown method"));
	assert_int_equal(
	        call_echo(f->cli, &f->arena, "", &in, NULL, &out, &res),
	        PL_UNIMPLEMENTED);
}

static void
test_deadline(void **state)
{
	fixture *f = *state;
	Parley__Test__V1__EchoRequest in = PARLEY__TEST__V1__ECHO_REQUEST__INIT;
	Parley__Test__V1__EchoReply *out;
	pl_rpc_result res;
	pl_rpc_opts o = { 0 };

	in.sleep_ms = 300;
	o.timeout_ms = 50;
	assert_int_equal(call_echo(f->cli, &f->arena, ECHO_METHOD("Sleep"), &in,
	                           &o, &out, &res),
	                 PL_DEADLINE_EXCEEDED);
	// The server is still fine afterwards.
	in.sleep_ms = 0;
	assert_int_equal(call_echo(f->cli, &f->arena, ECHO_METHOD("Sleep"), &in,
	                           NULL, &out, &res),
	                 PL_OK);
}

static void
test_deadline_propagates(void **state)
{
	fixture *f = *state;
	Parley__Test__V1__EchoRequest in = PARLEY__TEST__V1__ECHO_REQUEST__INIT;
	Parley__Test__V1__EchoReply *out;
	pl_call parent;
	pl_rpc_opts o = { 0 };

	memset(&parent, 0, sizeof(parent));
	parent.trace_id = "trace-1";
	parent.deadline = pl_now_ns() + 400 * 1000000LL;
	o.parent = &parent;
	o.timeout_ms = 10000;
	assert_int_equal(call_echo(f->cli, &f->arena, ECHO_METHOD("Echo"), &in,
	                           &o, &out, NULL),
	                 PL_OK);
	assert_true(out->remaining_ms <= 400 && out->remaining_ms > 200);

	parent.deadline = pl_now_ns() - 1;
	assert_int_equal(call_echo(f->cli, &f->arena, ECHO_METHOD("Echo"), &in,
	                           &o, &out, NULL),
	                 PL_DEADLINE_EXCEEDED);
}

static void
test_access_rules(void **state)
{
	fixture *f = *state;
	Parley__Test__V1__EchoRequest in = PARLEY__TEST__V1__ECHO_REQUEST__INIT;
	Parley__Test__V1__EchoReply *out;
	pl_rpc_result res;
	pl_principal user = PARLEY__RPC__V1__PRINCIPAL__INIT;
	pl_principal key = PARLEY__RPC__V1__PRINCIPAL__INIT;
	char *scopes[] = { "conversations:read", "agents:write" };
	pl_rpc_opts o = { 0 };

	user.kind = PARLEY__RPC__V1__PRINCIPAL_KIND__PRINCIPAL_KIND_USER;
	user.tenant_id = "t1";
	user.role = PARLEY__RPC__V1__ROLE__ROLE_VIEWER;
	o.principal = &user;

	// A viewer may not write; an agent may.
	assert_int_equal(call_echo(f->cli, &f->arena, ECHO_METHOD("AgentWrite"),
	                           &in, &o, &out, &res),
	                 PL_PERMISSION_DENIED);
	user.role = PARLEY__RPC__V1__ROLE__ROLE_AGENT;
	assert_int_equal(call_echo(f->cli, &f->arena, ECHO_METHOD("AgentWrite"),
	                           &in, &o, &out, &res),
	                 PL_OK);
	// A user without a tenant cannot call a tenant method.
	user.tenant_id = "";
	assert_int_equal(call_echo(f->cli, &f->arena, ECHO_METHOD("AgentWrite"),
	                           &in, &o, &out, &res),
	                 PL_PERMISSION_DENIED);

	// Platform admin only.
	user.tenant_id = "t1";
	assert_int_equal(call_echo(f->cli, &f->arena, ECHO_METHOD("AdminOnly"),
	                           &in, &o, &out, &res),
	                 PL_PERMISSION_DENIED);
	user.platform_admin = true;
	assert_int_equal(call_echo(f->cli, &f->arena, ECHO_METHOD("AdminOnly"),
	                           &in, &o, &out, &res),
	                 PL_OK);

	// Service only, and with an idempotency key.
	assert_int_equal(call_echo(f->cli, &f->arena,
	                           ECHO_METHOD("ServiceOnly"), &in, &o, &out,
	                           &res),
	                 PL_PERMISSION_DENIED);
	assert_int_equal(call_echo(f->cli, &f->arena,
	                           ECHO_METHOD("ServiceOnly"), &in, NULL, &out,
	                           &res),
	                 PL_INVALID_ARGUMENT);
	o.principal = NULL;
	o.idempotency_key = "k";
	assert_int_equal(call_echo(f->cli, &f->arena,
	                           ECHO_METHOD("ServiceOnly"), &in, &o, &out,
	                           &res),
	                 PL_OK);

	// API keys need the method's scope.
	key.kind = PARLEY__RPC__V1__PRINCIPAL_KIND__PRINCIPAL_KIND_API_KEY;
	key.tenant_id = "t1";
	key.scopes = scopes;
	key.n_scopes = 1;
	o.principal = &key;
	assert_int_equal(call_echo(f->cli, &f->arena, ECHO_METHOD("AgentWrite"),
	                           &in, &o, &out, &res),
	                 PL_PERMISSION_DENIED);
	assert_non_null(strstr(res.message, "agents:write"));
	key.n_scopes = 2;
	// ...and a role ceiling that reaches the method's role.
	key.role = PARLEY__RPC__V1__ROLE__ROLE_VIEWER;
	assert_int_equal(call_echo(f->cli, &f->arena, ECHO_METHOD("AgentWrite"),
	                           &in, &o, &out, &res),
	                 PL_PERMISSION_DENIED);
	key.role = PARLEY__RPC__V1__ROLE__ROLE_AGENT;
	assert_int_equal(call_echo(f->cli, &f->arena, ECHO_METHOD("AgentWrite"),
	                           &in, &o, &out, &res),
	                 PL_OK);
	// Nobody at all.
	key.kind = PARLEY__RPC__V1__PRINCIPAL_KIND__PRINCIPAL_KIND_UNSPECIFIED;
	assert_int_equal(call_echo(f->cli, &f->arena, ECHO_METHOD("AgentWrite"),
	                           &in, &o, &out, &res),
	                 PL_UNAUTHENTICATED);
}

static void
test_wrong_secret(void **state)
{
	fixture *f = *state;
	Parley__Test__V1__EchoRequest in = PARLEY__TEST__V1__ECHO_REQUEST__INIT;
	Parley__Test__V1__EchoReply *out;
	pl_rpc_result res;
	pl_rpc_client *bad = open_client(f->url, "not-the-secret");

	assert_int_equal(call_echo(bad, &f->arena, ECHO_METHOD("Echo"), &in,
	                           NULL, &out, &res),
	                 PL_UNAUTHENTICATED);
	assert_null(out);
	pl_rpc_client_close(bad);
}

// Sends raw bytes as one frame and decodes the reply.
static Parley__Rpc__V1__Response *
raw_call(const char *url, const void *data, size_t len, pl_arena *a)
{
	uint8_t *reply;
	size_t n;
	Parley__Rpc__V1__Response *r;

	assert_int_equal(pl_rpc_raw_exchange(url, data, len, 3000, &reply, &n),
	                 PL_OK);
	r = parley__rpc__v1__response__unpack(pl_arena_pb(a), n, reply);
	free(reply);
	return r;
}

static void
test_garbage_bytes(void **state)
{
	fixture *f = *state;
	uint8_t junk[512];
	Parley__Rpc__V1__Response *r;

	for (size_t i = 0; i < sizeof(junk); i++)
		junk[i] = (uint8_t)(i * 131 + 7);
	r = raw_call(f->url, junk, sizeof(junk), &f->arena);
	assert_non_null(r);
	assert_int_equal(r->code, PL_INVALID_ARGUMENT);
	r = raw_call(f->url, "", 0, &f->arena);
	assert_non_null(r);
	// An empty envelope decodes, but it carries no secret.
	assert_int_equal(r->code, PL_UNAUTHENTICATED);
}

static void
test_bad_payload(void **state)
{
	fixture *f = *state;
	Parley__Rpc__V1__Request req = PARLEY__RPC__V1__REQUEST__INIT;
	Parley__Rpc__V1__Response *r;
	uint8_t bad[] = { 0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f };
	uint8_t buf[256];
	size_t n;

	req.method = ECHO_METHOD("Echo");
	req.service_secret.data = (uint8_t *)SECRET;
	req.service_secret.len = strlen(SECRET);
	req.payload.data = bad;
	req.payload.len = sizeof(bad);
	n = parley__rpc__v1__request__pack(&req, buf);
	r = raw_call(f->url, buf, n, &f->arena);
	assert_non_null(r);
	assert_int_equal(r->code, PL_INVALID_ARGUMENT);
	assert_non_null(strstr(r->message, "could not decode"));
}

static void
test_oversized(void **state)
{
	fixture *f = *state;
	Parley__Test__V1__EchoRequest in = PARLEY__TEST__V1__ECHO_REQUEST__INIT;
	Parley__Test__V1__EchoReply *out;
	pl_rpc_result res;
	size_t n = 100 * 1024; // limit is 64 KiB
	uint8_t *big = calloc(1, n);

	in.data.data = big;
	in.data.len = n;
	assert_int_equal(call_echo(f->cli, &f->arena, ECHO_METHOD("Echo"), &in,
	                           NULL, &out, &res),
	                 PL_INVALID_ARGUMENT);
	assert_non_null(strstr(res.message, "exceeds the limit"));
	free(big);
}

typedef struct conc {
	pl_rpc_client *cli;
	int ok;
} conc;

static void *
conc_main(void *arg)
{
	conc *c = arg;
	pl_arena a;
	char text[64];

	pl_arena_init(&a, 0, 0);
	for (int i = 0; i < 200; i++) {
		Parley__Test__V1__EchoRequest in =
		        PARLEY__TEST__V1__ECHO_REQUEST__INIT;
		Parley__Test__V1__EchoReply *out;
		snprintf(text, sizeof(text), "%p-%d", (void *)c, i);
		in.text = text;
		if (call_echo(c->cli, &a, ECHO_METHOD("Echo"), &in, NULL, &out,
		              NULL) == PL_OK &&
		    strcmp(out->text, text) == 0)
			c->ok++;
		pl_arena_reset(&a);
	}
	pl_arena_fini(&a);
	return NULL;
}

static void
test_concurrent_clients(void **state)
{
	fixture *f = *state;
	pthread_t t[16];
	conc c[16];

	for (int i = 0; i < 16; i++) {
		c[i].cli = f->cli; // one shared client, 16 threads
		c[i].ok = 0;
		pthread_create(&t[i], NULL, conc_main, &c[i]);
	}
	for (int i = 0; i < 16; i++) {
		pthread_join(t[i], NULL);
		assert_int_equal(c[i].ok, 200);
	}
}

typedef struct slow {
	pl_rpc_client *cli;
	int rv;
} slow;

static void *
slow_main(void *arg)
{
	slow *s = arg;
	pl_arena a;
	Parley__Test__V1__EchoRequest in = PARLEY__TEST__V1__ECHO_REQUEST__INIT;
	Parley__Test__V1__EchoReply *out;

	pl_arena_init(&a, 0, 0);
	in.sleep_ms = 300;
	in.text = "slow";
	s->rv = call_echo(s->cli, &a, ECHO_METHOD("Sleep"), &in, NULL, &out,
	                  NULL);
	pl_arena_fini(&a);
	return NULL;
}

static void
test_stop_with_calls_in_flight(void **state)
{
	fixture *f = *state;
	pthread_t t[4];
	slow s[4];

	for (int i = 0; i < 4; i++) {
		s[i].cli = f->cli;
		pthread_create(&t[i], NULL, slow_main, &s[i]);
	}
	// Stop once all four are inside the handler (connections are dialed
	// on demand, so that can take a while under a sanitizer).
	for (int i = 0; i < 500 && pl_rpc_server_in_flight(f->srv) < 4; i++)
		usleep(10 * 1000);
	assert_int_equal(pl_rpc_server_in_flight(f->srv), 4);
	pl_rpc_server_stop(f->srv);
	for (int i = 0; i < 4; i++) {
		pthread_join(t[i], NULL);
		assert_int_equal(s[i].rv, PL_OK);
	}
}

static void
test_peer_restart(void **state)
{
	fixture *f = *state;
	Parley__Test__V1__EchoRequest in = PARLEY__TEST__V1__ECHO_REQUEST__INIT;
	Parley__Test__V1__EchoReply *out;
	pl_rpc_opts o = { 0 };

	in.text = "before";
	assert_int_equal(call_echo(f->cli, &f->arena, ECHO_METHOD("Echo"), &in,
	                           NULL, &out, NULL),
	                 PL_OK);
	pl_rpc_server_close(f->srv);
	f->srv = NULL;
	// With nobody listening a call fails cleanly.
	o.timeout_ms = 200;
	assert_int_equal(call_echo(f->cli, &f->arena, ECHO_METHOD("Echo"), &in,
	                           &o, &out, NULL),
	                 PL_UNAVAILABLE);
	f->srv = start_server(f->url, 2);
	in.text = "after";
	o.timeout_ms = 3000; // the client redials in the background
	assert_int_equal(call_echo(f->cli, &f->arena, ECHO_METHOD("Echo"), &in,
	                           &o, &out, NULL),
	                 PL_OK);
	assert_string_equal(out->text, "after");
}

static void
test_replicas(void **state)
{
	fixture *f = *state;
	char u1[128], u2[128], both[300];
	pl_rpc_server *s1, *s2;
	pl_rpc_client *c;
	pl_rpc_opts o = { 0 };

	(void)f;
	make_url(u1, sizeof(u1), "tcp");
	make_url(u2, sizeof(u2), "tcp");
	snprintf(both, sizeof(both), "%s,%s", u1, u2);
	s1 = start_server(u1, 1);
	s2 = start_server(u2, 1);
	c = open_client(both, SECRET);
	for (int i = 0; i < 50; i++) {
		Parley__Test__V1__EchoRequest in =
		        PARLEY__TEST__V1__ECHO_REQUEST__INIT;
		Parley__Test__V1__EchoReply *out;
		assert_int_equal(call_echo(c, &f->arena, ECHO_METHOD("Echo"),
		                           &in, NULL, &out, NULL),
		                 PL_OK);
	}
	// Both replicas served some of the calls.
	{
		char *m1 = pl_rpc_server_metrics(s1);
		char *m2 = pl_rpc_server_metrics(s2);
		assert_non_null(strstr(m1, "Echo/Echo\",code=\"OK\"}"));
		assert_non_null(strstr(m2, "Echo/Echo\",code=\"OK\"}"));
		free(m1);
		free(m2);
	}
	// One replica dies: idempotent calls still succeed on the other.
	pl_rpc_server_close(s1);
	o.idempotent = true;
	for (int i = 0; i < 20; i++) {
		Parley__Test__V1__EchoRequest in =
		        PARLEY__TEST__V1__ECHO_REQUEST__INIT;
		Parley__Test__V1__EchoReply *out;
		assert_int_equal(call_echo(c, &f->arena, ECHO_METHOD("Echo"),
		                           &in, &o, &out, NULL),
		                 PL_OK);
	}
	pl_rpc_client_close(c);
	pl_rpc_server_close(s2);
}

static void
test_metrics_text(void **state)
{
	fixture *f = *state;
	Parley__Test__V1__EchoRequest in = PARLEY__TEST__V1__ECHO_REQUEST__INIT;
	Parley__Test__V1__EchoReply *out;
	char *m;

	call_echo(f->cli, &f->arena, ECHO_METHOD("Echo"), &in, NULL, &out,
	          NULL);
	in.fail_code = PL_NOT_FOUND;
	call_echo(f->cli, &f->arena, ECHO_METHOD("Fail"), &in, NULL, &out,
	          NULL);
	m = pl_rpc_server_metrics(f->srv);
	assert_non_null(strstr(m, "parley_rpc_requests_total{service=\"echo\","
	                          "method=\"/parley.test."
	                          "v1.Echo/Fail\",code=\"NOT_FOUND\"} 1"));
	assert_non_null(strstr(m, "parley_rpc_latency_seconds_bucket{service="
	                          "\"echo\",method=\"/parley.test.v1.Echo/"
	                          "Echo\",le=\"+Inf\"}"));
	free(m);
}

static int
dummy(pl_call *c, const void *in, void *out)
{
	(void)c;
	(void)in;
	(void)out;
	return PL_OK;
}

static void
test_table_check(void **state)
{
	char err[256];
	const pl_rpc_method missing[] = { { "Echo", dummy, 0, NULL, 0 },
		                          { NULL, NULL, 0, NULL, 0 } };
	const pl_rpc_method extra[] = { { "Echo", dummy, 0, NULL, 0 },
		                        { "Sleep", dummy, 0, NULL, 0 },
		                        { "Fail", dummy, 0, NULL, 0 },
		                        { "AdminOnly", dummy, 0, NULL, 0 },
		                        { "ServiceOnly", dummy, 0, NULL, 0 },
		                        { "AgentWrite", dummy, 0, NULL, 0 },
		                        { "DeliverEvents", dummy, 0, NULL, 0 },
		                        { "Bogus", dummy, 0, NULL, 0 },
		                        { NULL, NULL, 0, NULL, 0 } };
	const pl_rpc_method nohandler[] = { { "Echo", NULL, 0, NULL, 0 },
		                            { NULL, NULL, 0, NULL, 0 } };
	pl_rpc_service svc = { &parley__test__v1__echo__descriptor, missing };
	const pl_rpc_service *list[] = { &svc, NULL };
	pl_rpc_server *s;
	pl_rpc_server_config cfg = { 0 };

	(void)state;
	assert_int_equal(pl_rpc_table_check(&echo_service, err, sizeof(err)),
	                 0);
	assert_int_not_equal(pl_rpc_table_check(&svc, err, sizeof(err)), 0);
	assert_non_null(strstr(err, "has no handler"));
	svc.methods = extra;
	assert_int_not_equal(pl_rpc_table_check(&svc, err, sizeof(err)), 0);
	assert_non_null(strstr(err, "Bogus"));
	svc.methods = nohandler;
	assert_int_not_equal(pl_rpc_table_check(&svc, err, sizeof(err)), 0);
	// The server refuses a table that disagrees with its proto.
	cfg.secret = SECRET;
	cfg.listen = "inproc://never";
	assert_int_equal(pl_rpc_server_open(&s, &cfg, list),
	                 PL_INVALID_ARGUMENT);
}

static void
test_dispatch_without_socket(void **state)
{
	pl_rpc_server *s;
	pl_rpc_server_config cfg = { 0 };
	pl_arena a;
	Parley__Rpc__V1__Request req = PARLEY__RPC__V1__REQUEST__INIT;
	Parley__Test__V1__EchoRequest in = PARLEY__TEST__V1__ECHO_REQUEST__INIT;
	Parley__Rpc__V1__Response *r;
	uint8_t payload[64], buf[256], *reply;
	size_t n, rlen;

	(void)state;
	cfg.secret = SECRET;
	cfg.listen = "inproc://unused";
	assert_int_equal(pl_rpc_server_open(&s, &cfg, services), PL_OK);
	pl_arena_init(&a, 0, 0);
	in.text = "direct";
	req.payload.len = parley__test__v1__echo_request__pack(&in, payload);
	req.payload.data = payload;
	req.method = ECHO_METHOD("Echo");
	req.request_id = 42;
	req.service_secret.data = (uint8_t *)SECRET;
	req.service_secret.len = strlen(SECRET);
	n = parley__rpc__v1__request__pack(&req, buf);
	assert_int_equal(
	        pl_rpc_server_dispatch(s, NULL, &a, buf, n, &reply, &rlen),
	        PL_OK);
	r = parley__rpc__v1__response__unpack(NULL, rlen, reply);
	assert_non_null(r);
	assert_int_equal(r->request_id, 42);
	assert_true(r->payload.len > 0);
	parley__rpc__v1__response__free_unpacked(r, NULL);
	free(reply);
	pl_arena_fini(&a);
	pl_rpc_server_close(s);
}

// Plain TCP connections are read on their sockets by the runtime; TLS
// (whose socket carries records, not frames), ipc, abstract and TCP with
// direct I/O off go through nng. Both ends of a TLS call are this runtime,
// so a wrong choice would not fail a call: the metric tells.
static void
test_direct_io(void **state)
{
	fixture *f = *state;
	Parley__Test__V1__EchoRequest in = PARLEY__TEST__V1__ECHO_REQUEST__INIT;
	Parley__Test__V1__EchoReply *out;
	const char *p;
	char *m;
	int n = -1;
	bool want = strncmp(f->url, "tcp://", 6) == 0 && !direct_off;

	in.text = "direct";
	assert_int_equal(call_echo(f->cli, &f->arena, ECHO_METHOD("Echo"), &in,
	                           NULL, &out, NULL),
	                 PL_OK);
	assert_string_equal(out->text, "direct");
	m = pl_rpc_server_metrics(f->srv);
	p = strstr(m, "parley_rpc_connections_direct{service=\"echo\"} ");
	assert_non_null(p);
	n = atoi(strchr(p, '}') + 2);
	free(m);
	if (want)
		assert_true(n >= 1);
	else
		assert_int_equal(n, 0);
}

#define TRANSPORT_TESTS(setup)                                                 \
	cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),     \
	        cmocka_unit_test_setup_teardown(test_health, setup, teardown), \
	        cmocka_unit_test_setup_teardown(                               \
	                test_errors_carry_status_and_details, setup,           \
	                teardown),                                             \
	        cmocka_unit_test_setup_teardown(test_unknown_method, setup,    \
	                                        teardown),                     \
	        cmocka_unit_test_setup_teardown(test_deadline, setup,          \
	                                        teardown),                     \
	        cmocka_unit_test_setup_teardown(test_deadline_propagates,      \
	                                        setup, teardown),              \
	        cmocka_unit_test_setup_teardown(test_access_rules, setup,      \
	                                        teardown),                     \
	        cmocka_unit_test_setup_teardown(test_wrong_secret, setup,      \
	                                        teardown),                     \
	        cmocka_unit_test_setup_teardown(test_garbage_bytes, setup,     \
	                                        teardown),                     \
	        cmocka_unit_test_setup_teardown(test_bad_payload, setup,       \
	                                        teardown),                     \
	        cmocka_unit_test_setup_teardown(test_oversized, setup,         \
	                                        teardown),                     \
	        cmocka_unit_test_setup_teardown(test_concurrent_clients,       \
	                                        setup, teardown),              \
	        cmocka_unit_test_setup_teardown(                               \
	                test_stop_with_calls_in_flight, setup, teardown),      \
	        cmocka_unit_test_setup_teardown(test_peer_restart, setup,      \
	                                        teardown),                     \
	        cmocka_unit_test_setup_teardown(test_metrics_text, setup,      \
	                                        teardown),                     \
	        cmocka_unit_test_setup_teardown(test_direct_io, setup,         \
	                                        teardown)

// A batch item's call state: its own errors, the batch's arena and
// principal, no idempotency key; an item's error leaves the batch's alone.
static void
test_call_item(void **state)
{
	pl_arena a;
	pl_principal p = { 0 };
	pl_call call = { 0 }, item;

	(void)state;
	pl_arena_init(&a, 0, 0);
	call.arena = &a;
	call.principal = &p;
	call.idempotency_key = "batch-key";
	call.deadline = 42;
	pl_call_violation(&call, "x", "batch's own");
	pl_call_item(&item, &call);
	assert_ptr_equal(item.arena, &a);
	assert_ptr_equal(item.principal, &p);
	assert_int_equal(item.deadline, 42);
	assert_null(item.idempotency_key);
	assert_int_equal(item.code, PL_OK);
	assert_null(item.message);
	assert_int_equal(item.n_violations, 0);
	assert_int_equal(pl_call_violation(&item, "items", "bad item %d", 3),
	                 PL_INVALID_ARGUMENT);
	assert_string_equal(item.message, "items: bad item 3");
	assert_int_equal(item.n_violations, 1);
	assert_int_equal(call.n_violations, 1);
	assert_string_equal(call.violations[0]->field, "x");
	assert_int_equal(call.code, PL_INVALID_ARGUMENT);
	pl_arena_fini(&a);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		TRANSPORT_TESTS(setup_inproc),
		TRANSPORT_TESTS(setup_ipc),
		TRANSPORT_TESTS(setup_tcp),
		TRANSPORT_TESTS(setup_tcp_nng),
		cmocka_unit_test_setup_teardown(test_replicas, setup_inproc,
		                                teardown),
		cmocka_unit_test(test_table_check),
		cmocka_unit_test(test_dispatch_without_socket),
		cmocka_unit_test(test_call_item),
	};
	// Over TLS: calls work, and no connection is read on its socket
	// (test_direct_io). A runtime that read both ends directly would
	// still pass the calls: the two ends would skip TLS alike.
	const struct CMUnitTest tls_tests[] = {
		cmocka_unit_test_setup_teardown(test_round_trip, setup_tls,
		                                teardown),
		cmocka_unit_test_setup_teardown(test_health, setup_tls,
		                                teardown),
		cmocka_unit_test_setup_teardown(test_direct_io, setup_tls,
		                                teardown),
		cmocka_unit_test_setup_teardown(test_concurrent_clients,
		                                setup_tls, teardown),
		cmocka_unit_test_setup_teardown(test_stop_with_calls_in_flight,
		                                setup_tls, teardown),
	};
	int rv;

	pl_log_init("test", PL_LOG_WARN);
	rv = cmocka_run_group_tests(tests, NULL, NULL);
	if (!make_tls_pem()) {
		fprintf(stderr, "test_rpc: no openssl to make a certificate: "
		                "the tls+tcp:// tests are skipped\n");
		return rv;
	}
	rv |= cmocka_run_group_tests_name("tls", tls_tests, NULL, NULL);
	unlink(tls_pem);
	return rv;
}
