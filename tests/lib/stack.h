// The whole Parley stack as processes on loopback, for end-to-end tests and
// benchmarks: a PostgreSQL cluster (pgh) provisioned like production (one
// role per service, deploy/db/provision.sh), every service binary the build
// made, and the gateway, each on free ports with generated secrets; stopped
// with SIGTERM (and their exit codes checked) by stack_stop.
#ifndef STACK_H
#define STACK_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include <jansson.h>

#include "pgh.h"

#define STACK_MAX 8

typedef struct stack_proc {
	char name[32];
	pid_t pid;
	int rpc_port; // 0 for the gateway
	int ops_port; // the gateway: its HTTP port
	char log[256];
} stack_proc;

typedef struct stack {
	pgh pg;
	char admin_url[PGH_URL_MAX];
	char secret[64];
	char cred_key[64];
	stack_proc procs[STACK_MAX];
	int n;
	int http_port;
	char base_url[64]; // http://127.0.0.1:PORT
	char dir[128];     // logs
} stack;

// Starts everything whose binary exists under the build tree; env adds
// "NAME=value" settings (NULL-terminated list or NULL) to every process;
// they override the stack's defaults (PARLEY_LOG_LEVEL=warn, ...), not the
// per-process addresses.
// Returns 0, -1 when PostgreSQL or a binary is missing (skip), -2 when
// something failed to start (its log is printed).
int stack_start(stack *s, const char *const *env);

// Stops every process (SIGTERM, then waits); returns the number that did
// not exit 0. Stops PostgreSQL.
int stack_stop(stack *s);

// True when the named service runs in this stack.
bool stack_has(const stack *s, const char *name);

// The process entry of a service, or NULL.
stack_proc *stack_proc_of(stack *s, const char *name);

// Peak resident set size (VmHWM) of a running process in KiB, or -1.
long stack_peak_rss_kb(pid_t pid);

// CPU time (user + system) a running process has used so far, in seconds,
// or -1.
double stack_cpu_s(pid_t pid);

// CPU time used so far by each of the stack's processes, by its
// PostgreSQL and by the calling process (the load generator and fakes),
// in seconds, and when it was read (pl_now_ns): two of them give CPU per
// message, request or second.
typedef struct stack_cpu {
	double proc[STACK_MAX], pg, self;
	int64_t t;
} stack_cpu;

void stack_cpu_take(const stack *s, stack_cpu *c);

// One HTTP request to the gateway: path relative to base_url, optional
// bearer token, body (JSON or raw) and extra "Name: value" headers
// (NULL-terminated or NULL). *status gets the HTTP status; *out (malloc'd,
// NUL-terminated; may be NULL) the body. Returns 0 or -1 on transport
// failure.
int stack_http(stack *s, const char *method, const char *path,
               const char *bearer, const char *body, const char *const *headers,
               long *status, char **out);

// Same with a body of body_len bytes (need not be NUL-terminated or text).
int stack_http_n(stack *s, const char *method, const char *path,
                 const char *bearer, const char *body, size_t body_len,
                 const char *const *headers, long *status, char **out);

// stack_http that must answer want: its body parsed as JSON (an empty
// object when there is none or it is not JSON; the caller decrefs). Any
// other answer, or a transport failure, prints the request and the answer
// and exits 1: for benchmarks' setup, not for tests (which fail instead).
json_t *stack_must(stack *s, long want, const char *method, const char *path,
                   const char *bearer, const char *body);

// GETs path (with the bearer token) every 50 ms until it answers want or
// ms have passed; true when it did. For what an event makes true a little
// after the call that caused it (the subscription billing opens when it
// hears of a signup).
bool stack_wait_status(stack *s, const char *path, const char *bearer,
                       long want, int ms);

// A tenant for a benchmark: POST /v1/signup with body must answer 201; its
// session token is written to token (n bytes), and the tenant's
// subscription (which billing opens when it hears of the signup) must
// exist within 20 s. Any failure exits 1, as stack_must.
void stack_must_signup(stack *s, const char *body, char *token, size_t n);

// A published agent answering on channel_id: POST /v1/agents with
// agent_body, its knowledge POSTed with knowledge_body, published, and set
// as the channel's agent. Its id is written to agent (n bytes). Any
// failure exits 1, as stack_must.
void stack_must_agent(stack *s, const char *token, const char *channel_id,
                      const char *agent_body, const char *knowledge_body,
                      char *agent, size_t n);

// The string member k1 of j (with k2 non-NULL, k1's member k2), or "".
const char *stack_jstr(json_t *j, const char *k1, const char *k2);

// Closes the calling thread's keep-alive client now (it is also closed
// when the thread exits). The next stack_http opens a new one.
void stack_http_release(void);

#endif
