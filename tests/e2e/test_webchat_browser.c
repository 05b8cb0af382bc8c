// The web-chat widget in a real browser (issue 9): the whole stack
// (tests/lib/stack), a webchat channel with a published retrieval agent,
// and headless Chromium driven through chromedriver's WebDriver HTTP API
// (pl_httpc; no websocket needed): open /chat/{channel_id}, type a
// question, see the knowledge base's answer appear. Skipped with a message
// when chromium or chromedriver is not installed (Debian packages
// `chromium` and `chromium-driver`).
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "pl/httpc.h"
#include "pl/status.h"
#include "stack.h"
#include "port.h"

#define CHROMIUM     "/usr/bin/chromium"
#define CHROMEDRIVER "/usr/bin/chromedriver"
#define QUESTION     "What time do you open?"
#define ANSWER       "We open every day at 11am and close at 11pm."
#define WAIT_MS      90000 // browser-side waits (a loaded machine is slow)

static stack S;
static bool up;
static pid_t driver_pid;
static int driver_port;
static char profile[256];
static char driver_log[512];
static pl_httpc *wdc;
static bool wd_quiet;          // no error lines while waiting for the driver
static char open_session[128]; // deleted by teardown when a test failed

static long
now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

// ---------------------------------------------------------------------------
// HTTP: the gateway (stack_http) and chromedriver (pl_httpc)

static json_t *
must(long want, const char *method, const char *path, const char *token,
     const char *body)
{
	long st = 0;
	char *out = NULL;
	json_t *j;
	if (stack_http(&S, method, path, token, body, NULL, &st, &out) != 0 ||
	    st != want) {
		char msg[768];
		snprintf(msg, sizeof(msg), "%s %s: HTTP %ld, want %ld: %.500s",
		         method, path, st, want, out ? out : "");
		free(out);
		fail_msg("%s", msg);
	}
	j = out ? json_loads(out, 0, NULL) : NULL;
	free(out);
	return j ? j : json_object();
}

// One WebDriver command; answers the "value" member (decref) or NULL with
// the error printed.
static json_t *
wd(const char *method, const char *path, const char *body)
{
	char url[512];
	const char *hdrs[] = { "Content-Type: application/json", NULL };
	pl_httpc_req req = { 0 };
	pl_httpc_resp resp;
	json_t *j = NULL, *v = NULL;
	int rv;

	snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", driver_port, path);
	req.method = method;
	req.url = url;
	req.headers = hdrs;
	req.body = body;
	req.body_len = body ? strlen(body) : 0;
	req.timeout_ms = 180000;
	req.max_response = 8u << 20;
	rv = pl_httpc_do(wdc, &req, &resp);
	if (rv == PL_OK && resp.body != NULL)
		j = json_loads(resp.body, 0, NULL);
	if ((rv != PL_OK || resp.status != 200 || j == NULL) && !wd_quiet) {
		fprintf(stderr, "webdriver %s %s: %s HTTP %ld %.400s\n", method,
		        path, rv == PL_OK ? "" : resp.error, resp.status,
		        resp.body ? resp.body : "");
	} else if (rv == PL_OK && resp.status == 200 && j != NULL) {
		v = json_incref(json_object_get(j, "value"));
	}
	json_decref(j);
	pl_httpc_resp_fini(&resp);
	return v;
}

// Runs a script in the page; answers its value (decref) or NULL.
static json_t *
script(const char *sid, const char *js, const char *arg)
{
	char path[256];
	json_t *b =
	        json_pack("{s:s,s:[s]}", "script", js, "args", arg ? arg : "");
	char *body = json_dumps(b, JSON_COMPACT);
	json_t *v;
	snprintf(path, sizeof(path), "/session/%s/execute/sync", sid);
	v = wd("POST", path, body);
	free(body);
	json_decref(b);
	return v;
}

// The WebDriver element reference of a CSS selector (first member of the
// answer, whatever the W3C key), or false.
static bool
element(const char *sid, const char *css, char *out, size_t len)
{
	char path[256];
	json_t *b =
	        json_pack("{s:s,s:s}", "using", "css selector", "value", css);
	char *body = json_dumps(b, JSON_COMPACT);
	json_t *v;
	const char *key;
	json_t *val;
	bool ok = false;
	snprintf(path, sizeof(path), "/session/%s/element", sid);
	v = wd("POST", path, body);
	free(body);
	json_decref(b);
	json_object_foreach(v, key, val)
	{
		if (json_is_string(val)) {
			snprintf(out, len, "%s", json_string_value(val));
			ok = true;
			break;
		}
	}
	json_decref(v);
	return ok;
}

// ---------------------------------------------------------------------------
// chromedriver

static int
start_driver(void)
{
	char port[32], *argv[4];
	posix_spawn_file_actions_t fa;
	extern char **environ;
	long end;

	driver_port = test_port();
	snprintf(port, sizeof(port), "--port=%d", driver_port);
	snprintf(driver_log, sizeof(driver_log), "%s/chromedriver.log", S.dir);
	argv[0] = CHROMEDRIVER;
	argv[1] = port;
	argv[2] = NULL;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_addopen(&fa, 1, driver_log,
	                                 O_WRONLY | O_CREAT | O_APPEND, 0644);
	posix_spawn_file_actions_addopen(&fa, 2, driver_log,
	                                 O_WRONLY | O_CREAT | O_APPEND, 0644);
	if (posix_spawn(&driver_pid, CHROMEDRIVER, &fa, NULL, argv, environ) !=
	    0)
		driver_pid = 0;
	posix_spawn_file_actions_destroy(&fa);
	if (driver_pid == 0)
		return -1;
	end = now_ms() + 30000;
	wd_quiet = true;
	while (now_ms() < end) {
		json_t *v = wd("GET", "/status", NULL);
		bool ready = json_is_true(json_object_get(v, "ready"));
		json_decref(v);
		if (ready) {
			wd_quiet = false;
			return 0;
		}
		usleep(100 * 1000);
	}
	wd_quiet = false;
	return -1;
}

static void
stop_driver(void)
{
	int st;
	if (driver_pid > 0) {
		kill(driver_pid, SIGTERM);
		waitpid(driver_pid, &st, 0);
		driver_pid = 0;
	}
	if (profile[0] != '\0') {
		char cmd[300];
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", profile);
		if (system(cmd) != 0)
			fprintf(stderr, "could not remove %s\n", profile);
		profile[0] = '\0';
	}
}

// ---------------------------------------------------------------------------

static int
setup(void **state)
{
	const char *env[] = { "PARLEY_TENANTS_PWHASH_OPSLIMIT=1",
		              "PARLEY_TENANTS_PWHASH_MEMLIMIT=65536",
		              "PARLEY_MESSAGING_POLL=20ms",
		              "PARLEY_WEBCHAT_POLL_MAX=5s", NULL };
	int rc;
	(void)state;
	if (access(CHROMIUM, X_OK) != 0 || access(CHROMEDRIVER, X_OK) != 0) {
		fprintf(stderr,
		        "webchat browser test: %s or %s not installed "
		        "(apt-get install chromium chromium-driver): "
		        "skipped\n",
		        CHROMIUM, CHROMEDRIVER);
		return 0;
	}
	rc = stack_start(&S, env);
	if (rc == -1) {
		fprintf(stderr, "webchat browser test: PostgreSQL or a service "
		                "binary is missing: skipped\n");
		return 0;
	}
	if (rc != 0)
		return -1;
	up = true;
	if ((wdc = pl_httpc_open()) == NULL || start_driver() != 0) {
		fprintf(stderr,
		        "webchat browser test: chromedriver did not "
		        "start (log: %s)\n",
		        driver_log);
		return -1;
	}
	return 0;
}

static int
teardown(void **state)
{
	int bad = 0;
	(void)state;
	if (open_session[0] != '\0') {
		char path[200];
		snprintf(path, sizeof(path), "/session/%s", open_session);
		json_decref(wd("DELETE", path, NULL));
	}
	stop_driver();
	if (wdc != NULL)
		pl_httpc_close(wdc);
	if (up)
		bad = stack_stop(&S);
	stack_http_release();
	return bad == 0 ? 0 : -1;
}

static void
test_widget_answers_from_knowledge(void **state)
{
	char token[256], channel[64], agent[64], path[512], body[1024];
	char sid[128], eid[256], *caps;
	json_t *j, *v, *outs = NULL;
	long end;
	bool seen = false;
	(void)state;
	if (!up)
		skip();

	// A tenant with a webchat channel and a published retrieval agent.
	j = must(
	        201, "POST", "/v1/signup", NULL,
	        "{\"tenant_name\":\"Browser Pizza\",\"email\":"
	        "\"owner@browser.e2e.test\",\"password\":\"Browser-pass-2024\","
	        "\"full_name\":\"Browser Owner\"}");
	snprintf(token, sizeof(token), "%s", stack_jstr(j, "token", NULL));
	json_decref(j);
	stack_wait_status(&S, "/v1/billing/subscription", token, 200, WAIT_MS);
	j = must(201, "POST", "/v1/channels", token,
	         "{\"type\":\"webchat\",\"name\":\"Website\"}");
	snprintf(channel, sizeof(channel), "%s", stack_jstr(j, "id", NULL));
	json_decref(j);
	j = must(201, "POST", "/v1/agents", token,
	         "{\"name\":\"Web bot\",\"fallback_message\":\"Sorry, I do "
	         "not know.\"}");
	snprintf(agent, sizeof(agent), "%s", stack_jstr(j, "id", NULL));
	json_decref(j);
	snprintf(path, sizeof(path), "/v1/agents/%s/knowledge", agent);
	json_decref(must(
	        201, "POST", path, token,
	        "{\"entries\":[{\"question\":\"What are your opening "
	        "hours?\",\"answer\":\"" ANSWER "\",\"keywords\":[\"open\","
	        "\"hours\",\"time\"]},{\"question\":\"Do you have vegan "
	        "pizza?\",\"answer\":\"Yes, three vegan pizzas.\","
	        "\"keywords\":[\"vegan\"]}]}"));
	snprintf(path, sizeof(path), "/v1/agents/%s/publish", agent);
	json_decref(must(200, "POST", path, token, NULL));
	snprintf(path, sizeof(path), "/v1/channels/%s", channel);
	snprintf(body, sizeof(body), "{\"agent_id\":\"%s\"}", agent);
	json_decref(must(200, "PATCH", path, token, body));

	// The browser: a fresh profile, the flags of the env notes.
	snprintf(profile, sizeof(profile), "/tmp/parley-chromium-XXXXXX");
	assert_non_null(mkdtemp(profile));
	{
		char ud[300];
		snprintf(ud, sizeof(ud), "--user-data-dir=%s", profile);
		j = json_pack("{s:{s:{s:s,s:{s:s,s:[s,s,s,s,s,s,s,s,s,s]}}}}",
		              "capabilities", "alwaysMatch", "browserName",
		              "chrome", "goog:chromeOptions", "binary",
		              CHROMIUM, "args", "--headless", "--no-sandbox",
		              "--disable-gpu", "--disable-quic",
		              "--no-first-run",
		              "--disable-background-networking",
		              "--disable-component-update", "--disable-sync",
		              "--disable-dev-shm-usage", ud);
		caps = json_dumps(j, JSON_COMPACT);
		json_decref(j);
	}
	v = wd("POST", "/session", caps);
	free(caps);
	if (v == NULL)
		fail_msg("chromedriver could not start Chromium (log: %s)",
		         driver_log);
	snprintf(sid, sizeof(sid), "%s", stack_jstr(v, "sessionId", NULL));
	json_decref(v);
	assert_true(sid[0] != '\0');
	snprintf(open_session, sizeof(open_session), "%s", sid);

	snprintf(path, sizeof(path), "/session/%s/url", sid);
	snprintf(body, sizeof(body), "{\"url\":\"%s/chat/%s\"}", S.base_url,
	         channel);
	json_decref(wd("POST", path, body));

	// The widget has started its session once it stored the token.
	end = now_ms() + WAIT_MS;
	for (;;) {
		v = script(sid,
		           "return localStorage.getItem('parley.webchat.' + "
		           "arguments[0]);",
		           channel);
		bool ready = json_is_string(v) && json_string_length(v) > 0;
		json_decref(v);
		if (ready)
			break;
		if (now_ms() > end) {
			v = script(sid, "return document.body.innerText;", "");
			fail_msg("the widget never started a web-chat session; "
			         "page text: %.400s",
			         json_is_string(v) ? json_string_value(v) : "");
		}
		usleep(100 * 1000);
	}

	// Type the question and send it, as a person would.
	assert_true(element(sid, "#text", eid, sizeof(eid)));
	snprintf(path, sizeof(path), "/session/%s/element/%s/value", sid, eid);
	json_decref(wd("POST", path, "{\"text\":\"" QUESTION "\"}"));
	assert_true(element(sid, "#send", eid, sizeof(eid)));
	snprintf(path, sizeof(path), "/session/%s/element/%s/click", sid, eid);
	json_decref(wd("POST", path, "{}"));

	// The answer appears in the log.
	end = now_ms() + WAIT_MS;
	while (!seen && now_ms() < end) {
		size_t i;
		json_t *m;
		json_decref(outs);
		outs = script(sid,
		              "return Array.from(document.querySelectorAll("
		              "'#log .msg')).map(function (e) { return "
		              "e.className + ': ' + e.textContent; });",
		              "");
		json_array_foreach(outs, i, m) if (json_is_string(m) &&
		                                   strcmp(json_string_value(m),
		                                          "msg out: " ANSWER) ==
		                                           0) seen = true;
		if (!seen)
			usleep(100 * 1000);
	}
	{
		char *txt = outs ? json_dumps(outs, JSON_COMPACT) : NULL;
		bool asked = txt && strstr(txt, "msg in: " QUESTION);
		char msg[1024];
		snprintf(msg, sizeof(msg), "%.900s", txt ? txt : "(nothing)");
		free(txt);
		json_decref(outs);
		snprintf(path, sizeof(path), "/session/%s", sid);
		json_decref(wd("DELETE", path, NULL));
		open_session[0] = '\0';
		if (!asked)
			fail_msg("the question is not in the chat log: %s",
			         msg);
		if (!seen)
			fail_msg("the knowledge-base answer did not appear "
			         "within %d ms; the chat log: %s",
			         WAIT_MS, msg);
	}

	// The same conversation over REST.
	j = must(200, "GET", "/v1/conversations", token, NULL);
	assert_int_equal(json_array_size(json_object_get(j, "conversations")),
	                 1);
	json_decref(j);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_widget_answers_from_knowledge),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
