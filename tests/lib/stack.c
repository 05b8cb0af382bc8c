// The whole stack as processes (see stack.h).
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sodium.h>

#include "pl/httpc.h"
#include "pl/rpc.h"
#include "pl/status.h"
#include "stack.h"
#include "port.h"

extern char **environ;

static const char *const order[] = { "tenants",   "billing",   "agents",
	                             "analytics", "messaging", NULL };

static void
binary_path(const char *name, char *out, size_t len)
{
	snprintf(out, len, "%s/services/%s/parley-%s", PARLEY_BINARY_DIR, name,
	         name);
}

// The admin URL with the service's role as its user.
static void
role_url(const stack *s, const char *svc, char *out, size_t len)
{
	char user[64];
	snprintf(user, sizeof(user), "parley_%s", svc);
	pgh_url(&s->pg, user, "parley", out, len);
}

static int
run_wait(char *const argv[])
{
	pid_t pid;
	int st;
	if (posix_spawn(&pid, argv[0], NULL, NULL, argv, environ) != 0)
		return -1;
	if (waitpid(pid, &st, 0) < 0)
		return -1;
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void
print_log(const char *path)
{
	char line[512];
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return;
	fprintf(stderr, "---- %s\n", path);
	while (fgets(line, sizeof(line), f) != NULL)
		fputs(line, stderr);
	fclose(f);
}

static int
spawn(stack *s, stack_proc *p, char **envp)
{
	char bin[512];
	char *argv[5];
	const char *run = bin;
	posix_spawn_file_actions_t fa;
	int rv;

	binary_path(p->name, bin, sizeof(bin));
	argv[0] = bin;
	argv[1] = NULL;
	// A test that dies (a crash, a CI job stopped) takes its services
	// with it: util-linux's setpriv sets the parent-death signal and then
	// runs the service in its place (same pid). The test's main thread
	// starts the stack, so the signal comes when the test process ends.
	if (access("/usr/bin/setpriv", X_OK) == 0) {
		argv[0] = "/usr/bin/setpriv";
		argv[1] = "--pdeathsig=TERM";
		argv[2] = "--";
		argv[3] = bin;
		argv[4] = NULL;
		run = argv[0];
	}
	snprintf(p->log, sizeof(p->log), "%s/%s.log", s->dir, p->name);
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_addopen(&fa, 1, p->log,
	                                 O_WRONLY | O_CREAT | O_APPEND, 0644);
	posix_spawn_file_actions_addopen(&fa, 2, p->log,
	                                 O_WRONLY | O_CREAT | O_APPEND, 0644);
	rv = posix_spawn(&p->pid, run, &fa, NULL, argv, envp);
	posix_spawn_file_actions_destroy(&fa);
	return rv == 0 ? 0 : -1;
}

// Waits until GET url answers 200 (up to 30 s) or the process dies.
static int
wait_ready(pid_t pid, const char *url)
{
	pl_httpc *c = pl_httpc_open();
	int rv = -1;

	for (int i = 0; i < 300 && c != NULL; i++) {
		pl_httpc_req req = { 0 };
		pl_httpc_resp resp;
		int st;
		req.method = "GET";
		req.url = url;
		req.timeout_ms = 1000;
		if (pl_httpc_do(c, &req, &resp) == PL_OK &&
		    resp.status == 200) {
			pl_httpc_resp_fini(&resp);
			rv = 0;
			break;
		}
		pl_httpc_resp_fini(&resp);
		if (waitpid(pid, &st, WNOHANG) == pid)
			break;
		usleep(100 * 1000);
	}
	pl_httpc_close(c);
	return rv;
}

bool
stack_has(const stack *s, const char *name)
{
	for (int i = 0; i < s->n; i++)
		if (strcmp(s->procs[i].name, name) == 0)
			return true;
	return false;
}

stack_proc *
stack_proc_of(stack *s, const char *name)
{
	for (int i = 0; i < s->n; i++)
		if (strcmp(s->procs[i].name, name) == 0)
			return &s->procs[i];
	return NULL;
}

int
stack_start(stack *s, const char *const *env)
{
	char bin[512], script[512], *argv[4], *envp[96];
	char buf[96][512];
	uint8_t key[32];
	int rc, ne = 0, base;

	memset(s, 0, sizeof(*s));
	if (sodium_init() < 0)
		return -2;
	for (int i = 0; order[i] != NULL; i++) {
		binary_path(order[i], bin, sizeof(bin));
		if (access(bin, X_OK) != 0) {
			fprintf(stderr, "stack: %s not built\n", bin);
			return -1;
		}
	}
	binary_path("gateway", bin, sizeof(bin));
	if (access(bin, X_OK) != 0) {
		fprintf(stderr, "stack: %s not built\n", bin);
		return -1;
	}
	if ((rc = pgh_start(&s->pg)) != 0)
		return rc;
	if (pgh_create_db(&s->pg, "parley", s->admin_url,
	                  sizeof(s->admin_url)) != 0)
		return -2;
	snprintf(script, sizeof(script), "%s/deploy/db/provision.sh",
	         PARLEY_SOURCE_DIR);
	argv[0] = "/bin/bash";
	argv[1] = script;
	argv[2] = s->admin_url;
	argv[3] = NULL;
	if (run_wait(argv) != 0) {
		fprintf(stderr, "stack: provisioning failed\n");
		return -2;
	}
	snprintf(s->dir, sizeof(s->dir), "%s", s->pg.dir);
	randombytes_buf(key, sizeof(key));
	sodium_bin2hex(s->secret, sizeof(s->secret), key, 16);
	randombytes_buf(key, sizeof(key));
	sodium_bin2base64(s->cred_key, sizeof(s->cred_key), key, sizeof(key),
	                  sodium_base64_VARIANT_ORIGINAL);

	// Ports first: every service learns every other's address.
	base = 0;
	for (int i = 0; order[i] != NULL; i++) {
		stack_proc *p = &s->procs[s->n++];
		snprintf(p->name, sizeof(p->name), "%s", order[i]);
		p->rpc_port = test_port();
		p->ops_port = test_port();
	}
	{
		stack_proc *g = &s->procs[s->n++];
		snprintf(g->name, sizeof(g->name), "gateway");
		g->ops_port = s->http_port = test_port();
		snprintf(s->base_url, sizeof(s->base_url),
		         "http://127.0.0.1:%d", s->http_port);
	}
#define ENV(...)                                                               \
	do {                                                                   \
		snprintf(buf[ne], sizeof(buf[ne]), __VA_ARGS__);               \
		envp[ne] = buf[ne];                                            \
		ne++;                                                          \
	} while (0)
	// The caller's settings first: getenv() takes the first match, so
	// they override the defaults below.
	for (int i = 0; env != NULL && env[i] != NULL && ne < 64; i++)
		ENV("%s", env[i]);
	ENV("PATH=/usr/bin:/bin");
	ENV("PARLEY_SERVICE_SECRET=%s", s->secret);
	ENV("PARLEY_CREDENTIALS_KEY=%s", s->cred_key);
	ENV("PARLEY_LOG_LEVEL=warn");
	ENV("PARLEY_WORKERS=2");
	ENV("PARLEY_OPS_BIND=127.0.0.1");
	ENV("PARLEY_PUBLIC_URL=%s", s->base_url);
	for (int i = 0; order[i] != NULL; i++) {
		char up[32];
		int k;
		for (k = 0; order[i][k]; k++)
			up[k] = (char)(order[i][k] - 'a' + 'A');
		up[k] = '\0';
		ENV("PARLEY_%s_URL=tcp://127.0.0.1:%d", up,
		    s->procs[i].rpc_port);
	}
	base = ne;
#undef ENV

	for (int i = 0; i < s->n; i++) {
		stack_proc *p = &s->procs[i];
		char url[128];
		int k = base;
		if (strcmp(p->name, "gateway") == 0) {
			snprintf(buf[k], sizeof(buf[k]), "PARLEY_HTTP_PORT=%d",
			         p->ops_port);
			envp[k] = buf[k];
			k++;
			snprintf(buf[k], sizeof(buf[k]),
			         "PARLEY_HTTP_BIND=127.0.0.1");
			envp[k] = buf[k];
			k++;
		} else {
			char db[PGH_URL_MAX];
			role_url(s, p->name, db, sizeof(db));
			snprintf(buf[k], sizeof(buf[k]),
			         "PARLEY_DATABASE_URL=%s", db);
			envp[k] = buf[k];
			k++;
			snprintf(buf[k], sizeof(buf[k]),
			         "PARLEY_LISTEN=tcp://127.0.0.1:%d",
			         p->rpc_port);
			envp[k] = buf[k];
			k++;
			snprintf(buf[k], sizeof(buf[k]), "PARLEY_OPS_PORT=%d",
			         p->ops_port);
			envp[k] = buf[k];
			k++;
		}
		envp[k] = NULL;
		if (spawn(s, p, envp) != 0) {
			fprintf(stderr, "stack: could not start %s\n", p->name);
			return -2;
		}
		// The gateway has no ops endpoints: its public OpenAPI
		// document answers once it serves HTTP.
		snprintf(url, sizeof(url), "http://127.0.0.1:%d/%s",
		         p->ops_port,
		         strcmp(p->name, "gateway") == 0 ? "v1/openapi.json"
		                                         : "readyz");
		if (wait_ready(p->pid, url) != 0) {
			fprintf(stderr, "stack: %s did not become ready\n",
			        p->name);
			print_log(p->log);
			return -2;
		}
	}
	return 0;
}

int
stack_stop(stack *s)
{
	int bad = 0;

	// The gateway first, then the services in reverse order.
	for (int i = s->n - 1; i >= 0; i--) {
		stack_proc *p = &s->procs[i];
		int st;
		if (p->pid <= 0)
			continue;
		kill(p->pid, SIGTERM);
		if (waitpid(p->pid, &st, 0) == p->pid &&
		    !(WIFEXITED(st) && WEXITSTATUS(st) == 0)) {
			fprintf(stderr, "stack: %s did not exit cleanly\n",
			        p->name);
			print_log(p->log);
			bad++;
		}
		p->pid = 0;
	}
	pgh_stop(&s->pg);
	return bad;
}

long
stack_peak_rss_kb(pid_t pid)
{
	char path[64], line[256];
	long kb = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	if ((f = fopen(path, "r")) == NULL)
		return -1;
	while (fgets(line, sizeof(line), f) != NULL)
		if (strncmp(line, "VmHWM:", 6) == 0)
			kb = atol(line + 6);
	fclose(f);
	return kb;
}

double
stack_cpu_s(pid_t pid)
{
	char path[64], buf[1024], *p;
	unsigned long ut, st;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	if ((f = fopen(path, "r")) == NULL)
		return -1;
	p = fgets(buf, sizeof(buf), f) ? strrchr(buf, ')') : NULL;
	fclose(f);
	// After "pid (comm)": state ppid pgrp session tty tpgid flags minflt
	// cminflt majflt cmajflt utime stime.
	if (p == NULL || sscanf(p + 1,
	                        " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u "
	                        "%lu %lu",
	                        &ut, &st) != 2)
		return -1;
	return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

void
stack_cpu_take(const stack *s, stack_cpu *c)
{
	for (int i = 0; i < s->n; i++)
		c->proc[i] = stack_cpu_s(s->procs[i].pid);
	c->pg = pgh_cpu_s(&s->pg);
	c->self = stack_cpu_s(getpid()); // read as the services' are
	c->t = pl_now_ns();
}

// One keep-alive client per calling thread, closed when the thread ends
// (or by stack_http_release).
static pthread_key_t http_key;
static pthread_once_t http_once = PTHREAD_ONCE_INIT;

static void
http_client_free(void *c)
{
	pl_httpc_close(c);
}

static void
http_key_init(void)
{
	pthread_key_create(&http_key, http_client_free);
}

json_t *
stack_must(stack *s, long want, const char *method, const char *path,
           const char *bearer, const char *body)
{
	long st = 0;
	char *out = NULL;
	json_t *j;

	if (stack_http(s, method, path, bearer, body, NULL, &st, &out) != 0 ||
	    st != want) {
		fprintf(stderr, "%s %s: HTTP %ld (want %ld): %.400s\n", method,
		        path, st, want, out ? out : "");
		exit(1);
	}
	j = out ? json_loads(out, 0, NULL) : NULL;
	free(out);
	return j ? j : json_object();
}

bool
stack_wait_status(stack *s, const char *path, const char *bearer, long want,
                  int ms)
{
	int64_t end = pl_now_ns() + (int64_t)ms * 1000000;

	for (;;) {
		long st = 0;
		char *out = NULL;
		stack_http(s, "GET", path, bearer, NULL, NULL, &st, &out);
		free(out);
		if (st == want)
			return true;
		if (pl_now_ns() >= end)
			return false;
		usleep(50000);
	}
}

void
stack_must_signup(stack *s, const char *body, char *token, size_t n)
{
	json_t *j = stack_must(s, 201, "POST", "/v1/signup", NULL, body);

	snprintf(token, n, "%s", stack_jstr(j, "token", NULL));
	json_decref(j);
	if (!stack_wait_status(s, "/v1/billing/subscription", token, 200,
	                       20000)) {
		fprintf(stderr, "the signup's subscription did not appear in "
		                "20 s\n");
		exit(1);
	}
}

void
stack_must_agent(stack *s, const char *token, const char *channel_id,
                 const char *agent_body, const char *knowledge_body,
                 char *agent, size_t n)
{
	char path[256], body[128];
	json_t *j = stack_must(s, 201, "POST", "/v1/agents", token, agent_body);

	snprintf(agent, n, "%s", stack_jstr(j, "id", NULL));
	json_decref(j);
	snprintf(path, sizeof(path), "/v1/agents/%s/knowledge", agent);
	json_decref(stack_must(s, 201, "POST", path, token, knowledge_body));
	snprintf(path, sizeof(path), "/v1/agents/%s/publish", agent);
	json_decref(stack_must(s, 200, "POST", path, token, NULL));
	snprintf(path, sizeof(path), "/v1/channels/%s", channel_id);
	snprintf(body, sizeof(body), "{\"agent_id\":\"%s\"}", agent);
	json_decref(stack_must(s, 200, "PATCH", path, token, body));
}

const char *
stack_jstr(json_t *j, const char *k1, const char *k2)
{
	j = json_object_get(j, k1);
	if (k2 != NULL)
		j = json_object_get(j, k2);
	return json_is_string(j) ? json_string_value(j) : "";
}

void
stack_http_release(void)
{
	pl_httpc *c;
	pthread_once(&http_once, http_key_init);
	if ((c = pthread_getspecific(http_key)) != NULL) {
		pthread_setspecific(http_key, NULL);
		pl_httpc_close(c);
	}
}

int
stack_http(stack *s, const char *method, const char *path, const char *bearer,
           const char *body, const char *const *headers, long *status,
           char **out)
{
	return stack_http_n(s, method, path, bearer, body,
	                    body ? strlen(body) : 0, headers, status, out);
}

int
stack_http_n(stack *s, const char *method, const char *path, const char *bearer,
             const char *body, size_t body_len, const char *const *headers,
             long *status, char **out)
{
	pl_httpc *c;
	pl_httpc_req req = { 0 };
	pl_httpc_resp resp;
	const char *hdrs[24];
	char auth[512], url[1024];
	int n = 0, rv;

	pthread_once(&http_once, http_key_init);
	if ((c = pthread_getspecific(http_key)) == NULL) {
		if ((c = pl_httpc_open()) == NULL)
			return -1;
		pthread_setspecific(http_key, c);
	}
	snprintf(url, sizeof(url), "%s%s", s->base_url, path);
	if (bearer != NULL) {
		snprintf(auth, sizeof(auth), "Authorization: Bearer %s",
		         bearer);
		hdrs[n++] = auth;
	}
	if (body != NULL)
		hdrs[n++] = "Content-Type: application/json";
	for (int i = 0; headers != NULL && headers[i] != NULL && n < 22; i++)
		hdrs[n++] = headers[i];
	hdrs[n] = NULL;
	req.method = method;
	req.url = url;
	req.headers = hdrs;
	req.body = body;
	req.body_len = body_len;
	req.timeout_ms = 30000;
	req.max_response = 16u << 20;
	rv = pl_httpc_do(c, &req, &resp);
	*status = resp.status;
	if (out != NULL) {
		*out = resp.body;
		resp.body = NULL;
	}
	pl_httpc_resp_fini(&resp);
	return rv == PL_OK ? 0 : -1;
}
