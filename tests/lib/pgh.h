// A throw-away PostgreSQL 15 cluster for tests.
//
// pgh_start() runs initdb in a fresh directory under /tmp (as the postgres
// OS user when the test runs as root), starts the server on a free TCP port
// of 127.0.0.1 and fills h->url. A watchdog process stops the cluster and
// removes the directory if the test process dies without pgh_stop().
//
// Diagnosis: PGH_OPTS adds server options (e.g. "-c
// log_min_duration_statement=20"); PGH_KEEP=1 keeps the directory (its
// server.log) after pgh_stop(); PGH_CALLGRIND=1 runs the server under
// valgrind's callgrind (each of its processes writes DIR/cg.PID when it
// exits: instructions counted, see tests/bench/README.md).
//
// Typical use, with cmocka:
//
//	static int
//	setup(void **state)
//	{
//		static pgh h;
//		int rc = pgh_start(&h);
//		if (rc == -2)
//			return -1;         // PostgreSQL is there but broken:
// fail 		*state = &h;               // rc == -1: tests call
// skip() return 0;
//	}
//	static int teardown(void **state) { pgh_stop(*state); return 0; }
//	static void test_x(void **state)
//	{
//		pgh *h = *state;
//		if (!h->running)
//			skip();
//		...
//	}
#ifndef PGH_H
#define PGH_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define PGH_URL_MAX 256

typedef struct pgh {
	bool running;
	int port;
	char dir[64];          // the temp dir: data/, the socket, logs
	char url[PGH_URL_MAX]; // the superuser's URL (see pgh_url)
	char bindir[200];      // where initdb and pg_ctl were found
	pid_t watchdog;        // stops the cluster if we die; 0 when none
	int watch_fd;          // our end of the watchdog's socket
} pgh;

// Starts a cluster. Returns 0; -1 when the PostgreSQL binaries (or, as
// root, the postgres user) are missing, so tests should be skipped (a line
// says why on stderr); -2 when they are there but the cluster could not be
// started (its log is printed). The directory holding the binaries may be
// given in PGH_BINDIR (default /usr/lib/postgresql/15/bin).
int pgh_start(pgh *h);

// Restarts the server (pg_ctl restart -m fast): existing connections are
// cut. Returns 0 or -1.
int pgh_restart(pgh *h);

// Stops the server and removes its directory. Safe on a handle that was
// never started or is already stopped.
void pgh_stop(pgh *h);

// Creates database name ([a-z_][a-z0-9_]*) and writes its URL into
// url_out (PGH_URL_MAX bytes is enough). Returns 0 or -1.
int pgh_create_db(pgh *h, const char *name, char *url_out, size_t url_len);

// Runs sql (may hold several statements) in the postgres database as the
// superuser. Returns 0, or -1 after printing the error on stderr.
int pgh_exec(pgh *h, const char *sql);

// Like pgh_exec for any connection URL.
int pgh_exec_url(const char *url, const char *sql);

// The URL of database db as role user on h's server, through its Unix
// socket (postgresql://user@/db?host=DIR&port=N; no password: the cluster
// trusts local connections).
int pgh_url(const pgh *h, const char *user, const char *db, char *url_out,
            size_t url_len);

// CPU seconds (user + system) used so far by the cluster: the postmaster
// and its children (backends, background workers). -1 if unknown.
double pgh_cpu_s(const pgh *h);

// Calls fn for the postmaster and each of its children with the CPU
// seconds (user + system) each has used so far (the postmaster's with its
// children that have exited). Returns 0, or -1 if the cluster's processes
// cannot be found.
int pgh_each_proc(const pgh *h, void (*fn)(pid_t pid, double cpu_s, void *arg),
                  void *arg);

// Whether the server was started under callgrind (PGH_CALLGRIND).
bool pgh_callgrind(const pgh *h);

#endif
