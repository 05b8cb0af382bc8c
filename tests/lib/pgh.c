// A throw-away PostgreSQL cluster for tests (see pgh.h).
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "pgh.h"
#include "port.h"

extern char **environ;

#define DEFAULT_BINDIR "/usr/lib/postgresql/15/bin"
#define MAX_ARGS       24
#define START_TRIES    3

// The command line of one program run, as the cluster's owner.
typedef struct cmd {
	const char *argv[MAX_ARGS];
	int argc;
	char prog[256];
} cmd;

static void
cmd_init(cmd *c, const pgh *h, const char *prog)
{
	c->argc = 0;
	snprintf(c->prog, sizeof(c->prog), "%s/%s", h->bindir, prog);
	if (geteuid() == 0) {
		// PostgreSQL refuses to run as root.
		c->argv[c->argc++] = "/usr/sbin/runuser";
		c->argv[c->argc++] = "-u";
		c->argv[c->argc++] = "postgres";
		c->argv[c->argc++] = "--";
	}
	c->argv[c->argc++] = c->prog;
	c->argv[c->argc] = NULL;
}

static void
cmd_arg(cmd *c, const char *a)
{
	if (c->argc < MAX_ARGS - 1) {
		c->argv[c->argc++] = a;
		c->argv[c->argc] = NULL;
	}
}

// Runs c with stdin from /dev/null and output appended to log; returns the
// exit status, or -1 when it could not be run.
static int
run_cmd(const cmd *c, const char *log)
{
	posix_spawn_file_actions_t fa;
	pid_t pid;
	int rc;

	if (posix_spawn_file_actions_init(&fa) != 0)
		return -1;
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_addopen(&fa, 1, log,
	                                 O_WRONLY | O_CREAT | O_APPEND, 0644);
	posix_spawn_file_actions_adddup2(&fa, 1, 2);
	rc = posix_spawn(&pid, c->argv[0], &fa, NULL, (char *const *)c->argv,
	                 environ);
	posix_spawn_file_actions_destroy(&fa);
	if (rc != 0) {
		fprintf(stderr, "pgh: could not run %s: %s\n", c->argv[0],
		        strerror(rc));
		return -1;
	}
	int st;
	while (waitpid(pid, &st, 0) < 0) {
		if (errno != EINTR)
			return -1;
	}
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void
print_log(const char *path)
{
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return;
	// The tail is what explains a failure.
	if (fseek(f, 0, SEEK_END) == 0) {
		long n = ftell(f);
		if (n > 8192)
			fseek(f, n - 8192, SEEK_SET);
		else
			fseek(f, 0, SEEK_SET);
	}
	char buf[1024];
	size_t n;
	fprintf(stderr, "pgh: ---- %s ----\n", path);
	while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
		fwrite(buf, 1, n, stderr);
	fprintf(stderr, "pgh: ----\n");
	fclose(f);
}

static void
path_in(const pgh *h, const char *name, char *out, size_t len)
{
	snprintf(out, len, "%s/%s", h->dir, name);
}

#define VALGRIND          "/usr/bin/valgrind"
#define CALLGRIND_WRAPPER "postgres.callgrind" // in the cluster's dir

// With PGH_CALLGRIND set: writes DIR/postgres.callgrind, which runs the
// server and every process it forks under callgrind (each writes
// DIR/cg.PID when it exits), into out, and returns true. Instructions are
// counted, not timed: a backend's count for the same statements on the
// same data is the same whatever else the machine is doing.
static bool
callgrind_wrapper(const pgh *h, char *out, size_t len)
{
	const char *on = getenv("PGH_CALLGRIND");
	FILE *f;

	if (on == NULL || on[0] == '\0' || strcmp(on, "0") == 0)
		return false;
	if (access(VALGRIND, X_OK) != 0) {
		fprintf(stderr,
		        "pgh: PGH_CALLGRIND needs %s (Debian's "
		        "valgrind); starting the server without it\n",
		        VALGRIND);
		return false;
	}
	path_in(h, CALLGRIND_WRAPPER, out, len);
	if ((f = fopen(out, "w")) == NULL)
		return false;
	fprintf(f,
	        "#!/bin/sh\nexec %s --tool=callgrind --trace-children=yes "
	        "--callgrind-out-file=%s/cg.%%p %s/postgres \"$@\"\n",
	        VALGRIND, h->dir, h->bindir);
	if (fclose(f) != 0 || chmod(out, 0755) != 0)
		return false;
	return true;
}

static int
pg_ctl(const pgh *h, const char *action, const char *mode)
{
	char data[128], log[128], cmdlog[128], opts[768], wrap[128];
	const char *extra = getenv("PGH_OPTS");
	path_in(h, "data", data, sizeof(data));
	path_in(h, "server.log", log, sizeof(log));
	path_in(h, "cmd.log", cmdlog, sizeof(cmdlog));
	// h->dir comes from mkdtemp: no characters the shell that pg_ctl
	// passes -o through would interpret.
	// fsync=off: a throw-away cluster. wal_init_zero=off goes with it:
	// zero-filling a new WAL segment only makes sense before fsyncs, and
	// a young cluster (no checkpoint yet to recycle segments) creates
	// every segment it fills; with zeroing, each creation writes 16 MB
	// while holding the WAL write lock, and every commit waited 20-40 ms
	// about every 2 s at 500 msgs/s (bench_e2e; a running server reuses
	// the segments its checkpoints free instead).
	snprintf(opts, sizeof(opts),
	         "-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off "
	         "-c wal_init_zero=off -c max_connections=200 "
	         "-c shared_buffers=32MB %.400s",
	         h->port, h->dir, extra ? extra : "");
	cmd c;
	cmd_init(&c, h, "pg_ctl");
	cmd_arg(&c, "-D");
	cmd_arg(&c, data);
	cmd_arg(&c, "-w");
	if (strcmp(action, "stop") != 0) {
		cmd_arg(&c, "-l");
		cmd_arg(&c, log);
		cmd_arg(&c, "-o");
		cmd_arg(&c, opts);
		if (callgrind_wrapper(h, wrap, sizeof(wrap))) {
			cmd_arg(&c, "-p");
			cmd_arg(&c, wrap);
			cmd_arg(&c, "-t");
			cmd_arg(&c, "300");
		}
	}
	if (mode != NULL) {
		cmd_arg(&c, "-m");
		cmd_arg(&c, mode);
	}
	cmd_arg(&c, action);
	return run_cmd(&c, cmdlog);
}

static void
remove_dir(const char *dir)
{
	if (dir[0] == '\0' || strncmp(dir, "/tmp/pgh.", 9) != 0)
		return;
	cmd c = { .argv = { "/bin/rm", "-rf", "--", dir, NULL }, .argc = 4 };
	run_cmd(&c, "/dev/null");
}

// The watchdog: a child that waits on a socket. A byte means pgh_stop() ran;
// end-of-file means the test process died, so it stops the cluster and
// removes the directory itself. Only async-signal-safe calls after fork.
static void
start_watchdog(pgh *h)
{
	cmd stop, rm;
	char data[128];
	int fds[2];

	path_in(h, "data", data, sizeof(data));
	cmd_init(&stop, h, "pg_ctl");
	cmd_arg(&stop, "-D");
	cmd_arg(&stop, data);
	cmd_arg(&stop, "-m");
	cmd_arg(&stop, "immediate");
	cmd_arg(&stop, "stop");
	rm = (cmd){ .argv = { "/bin/rm", "-rf", "--", h->dir, NULL } };

	// A socket rather than a pipe: writing to a dead watchdog must not
	// raise SIGPIPE in the test (send with MSG_NOSIGNAL).
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0)
		return;
	pid_t pid = fork();
	if (pid < 0) {
		close(fds[0]);
		close(fds[1]);
		return;
	}
	if (pid == 0) {
		// Leave the process group so a ^C to the test spares us.
		setpgid(0, 0);
		signal(SIGINT, SIG_IGN);
		signal(SIGTERM, SIG_IGN);
		signal(SIGHUP, SIG_IGN);
		int devnull = open("/dev/null", O_RDWR);
		if (devnull >= 0) {
			dup2(devnull, 0);
			dup2(devnull, 1);
			dup2(devnull, 2);
		}
		for (int fd = 3; fd < 1024; fd++)
			if (fd != fds[0])
				close(fd);
		char b;
		ssize_t r;
		do
			r = read(fds[0], &b, 1);
		while (r < 0 && errno == EINTR);
		if (r == 1)
			_exit(0);
		// An initdb, pg_ctl start or restart we were running may
		// still start the server after the first stop: stop again a
		// little later.
		const cmd *todo[3] = { &stop, &stop, &rm };
		for (int k = 0; k < 3; k++) {
			if (k == 1)
				sleep(2);
			pid_t p = fork();
			if (p == 0) {
				execve(todo[k]->argv[0],
				       (char *const *)todo[k]->argv, environ);
				_exit(127);
			}
			if (p > 0)
				while (waitpid(p, NULL, 0) < 0 &&
				       errno == EINTR)
					;
		}
		_exit(0);
	}
	close(fds[0]);
	h->watchdog = pid;
	h->watch_fd = fds[1];
}

static void
stop_watchdog(pgh *h)
{
	if (h->watchdog <= 0)
		return;
	ssize_t r;
	do
		r = send(h->watch_fd, "x", 1, MSG_NOSIGNAL);
	while (r < 0 && errno == EINTR);
	close(h->watch_fd);
	while (waitpid(h->watchdog, NULL, 0) < 0 && errno == EINTR)
		;
	h->watchdog = 0;
	h->watch_fd = -1;
}

int
pgh_start(pgh *h)
{
	memset(h, 0, sizeof(*h));
	h->watch_fd = -1;
	const char *bindir = getenv("PGH_BINDIR");
	if (bindir == NULL || *bindir == '\0')
		bindir = DEFAULT_BINDIR;
	snprintf(h->bindir, sizeof(h->bindir), "%s", bindir);

	char initdb[256], pgctl[256];
	snprintf(initdb, sizeof(initdb), "%s/initdb", h->bindir);
	snprintf(pgctl, sizeof(pgctl), "%s/pg_ctl", h->bindir);
	if (access(initdb, X_OK) != 0 || access(pgctl, X_OK) != 0) {
		fprintf(stderr,
		        "pgh: PostgreSQL binaries not found in %s "
		        "(set PGH_BINDIR); skipping\n",
		        h->bindir);
		return -1;
	}
	struct passwd *pw = NULL;
	if (geteuid() == 0) {
		pw = getpwnam("postgres");
		if (pw == NULL || access("/usr/sbin/runuser", X_OK) != 0) {
			fprintf(stderr, "pgh: running as root without a "
			                "postgres user or runuser; skipping\n");
			return -1;
		}
	}

	snprintf(h->dir, sizeof(h->dir), "/tmp/pgh.XXXXXX");
	if (mkdtemp(h->dir) == NULL) {
		fprintf(stderr, "pgh: could not make a temp dir: %s\n",
		        strerror(errno));
		h->dir[0] = '\0';
		return -2;
	}
	if (pw != NULL && chown(h->dir, pw->pw_uid, pw->pw_gid) != 0) {
		fprintf(stderr, "pgh: could not chown %s: %s\n", h->dir,
		        strerror(errno));
		goto out_remove;
	}
	// From here on, a test killed mid-way leaves nothing behind.
	start_watchdog(h);

	char data[128], cmdlog[128], log[128];
	path_in(h, "data", data, sizeof(data));
	path_in(h, "cmd.log", cmdlog, sizeof(cmdlog));
	path_in(h, "server.log", log, sizeof(log));
	cmd c;
	cmd_init(&c, h, "initdb");
	cmd_arg(&c, "-D");
	cmd_arg(&c, data);
	cmd_arg(&c, "--auth=trust");
	cmd_arg(&c, "-U");
	cmd_arg(&c, "postgres");
	cmd_arg(&c, "--no-sync");
	cmd_arg(&c, "-E");
	cmd_arg(&c, "UTF8");
	cmd_arg(&c, "--locale=C.UTF-8");
	if (run_cmd(&c, cmdlog) != 0) {
		fprintf(stderr, "pgh: initdb failed\n");
		print_log(cmdlog);
		goto out_remove;
	}

	int started = -1;
	for (int i = 0; i < START_TRIES && started != 0; i++) {
		// Another test may take the port between our probe and the
		// server's bind: try again with a new one.
		h->port = test_port();
		if (h->port < 0)
			continue;
		started = pg_ctl(h, "start", NULL);
	}
	if (started != 0) {
		fprintf(stderr, "pgh: could not start the server\n");
		print_log(cmdlog);
		print_log(log);
		goto out_remove;
	}
	h->running = true;
	if (pgh_url(h, "postgres", "postgres", h->url, sizeof(h->url)) != 0) {
		pgh_stop(h);
		return -2;
	}
	return 0;

out_remove:
	stop_watchdog(h);
	remove_dir(h->dir);
	h->dir[0] = '\0';
	return -2;
}

int
pgh_restart(pgh *h)
{
	if (!h->running)
		return -1;
	if (pg_ctl(h, "restart", "fast") != 0) {
		char cmdlog[128], log[128];
		path_in(h, "cmd.log", cmdlog, sizeof(cmdlog));
		path_in(h, "server.log", log, sizeof(log));
		fprintf(stderr, "pgh: restart failed\n");
		print_log(cmdlog);
		print_log(log);
		return -1;
	}
	return 0;
}

void
pgh_stop(pgh *h)
{
	if (h == NULL)
		return;
	if (h->running) {
		if (pg_ctl(h, "stop", "fast") != 0)
			pg_ctl(h, "stop", "immediate");
		h->running = false;
	}
	if (h->dir[0] != '\0' && getenv("PGH_KEEP") != NULL)
		fprintf(stderr, "pgh: kept %s (PGH_KEEP)\n", h->dir);
	else if (h->dir[0] != '\0') {
		remove_dir(h->dir);
		h->dir[0] = '\0';
	}
	stop_watchdog(h);
}

static void
quiet(void *arg, const char *msg)
{
	(void)arg;
	(void)msg;
}

int
pgh_exec_url(const char *url, const char *sql)
{
	PGconn *c = PQconnectdb(url);
	if (PQstatus(c) != CONNECTION_OK) {
		fprintf(stderr, "pgh: could not connect to %s: %s", url,
		        PQerrorMessage(c));
		PQfinish(c);
		return -1;
	}
	PQsetNoticeProcessor(c, quiet, NULL);
	PGresult *r = PQexec(c, sql);
	int rc = 0;
	ExecStatusType st = PQresultStatus(r);
	if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK &&
	    st != PGRES_EMPTY_QUERY) {
		fprintf(stderr, "pgh: statement failed: %s\n%s\n",
		        PQerrorMessage(c), sql);
		rc = -1;
	}
	PQclear(r);
	PQfinish(c);
	return rc;
}

int
pgh_exec(pgh *h, const char *sql)
{
	if (!h->running)
		return -1;
	return pgh_exec_url(h->url, sql);
}

static int
valid_name(const char *s)
{
	if (s == NULL || !((*s >= 'a' && *s <= 'z') || *s == '_'))
		return 0;
	size_t n = 0;
	for (; s[n] != '\0'; n++)
		if (!((s[n] >= 'a' && s[n] <= 'z') ||
		      (s[n] >= '0' && s[n] <= '9') || s[n] == '_'))
			return 0;
	return n <= 63;
}

int
pgh_url(const pgh *h, const char *user, const char *db, char *url_out,
        size_t url_len)
{
	if (!valid_name(user) || !valid_name(db))
		return -1;
	// Through the cluster's Unix socket in h->dir: on one machine it
	// costs PostgreSQL and its clients less than loopback TCP (no TCP
	// stack on either side: bench_e2e's GET, ~15 us of PostgreSQL's CPU a
	// request). The server listens on 127.0.0.1 too, for tools that
	// want a port.
	int n = snprintf(url_out, url_len,
	                 "postgresql://%s@/%s?host=%s&port=%d", user, db,
	                 h->dir, h->port);
	return n > 0 && (size_t)n < url_len ? 0 : -1;
}

int
pgh_create_db(pgh *h, const char *name, char *url_out, size_t url_len)
{
	if (!valid_name(name)) {
		fprintf(stderr, "pgh: bad database name\n");
		return -1;
	}
	char sql[100];
	// The name is checked above, so it needs no quoting.
	snprintf(sql, sizeof(sql), "CREATE DATABASE %s", name);
	if (pgh_exec(h, sql) != 0)
		return -1;
	return pgh_url(h, "postgres", name, url_out, url_len);
}

int
pgh_each_proc(const pgh *h, void (*fn)(pid_t pid, double cpu_s, void *arg),
              void *arg)
{
	char path[160], buf[1024];
	long pm = -1;
	double ticks = (double)sysconf(_SC_CLK_TCK);
	DIR *d;
	struct dirent *e;
	FILE *f;

	snprintf(path, sizeof(path), "%s/data/postmaster.pid", h->dir);
	if ((f = fopen(path, "r")) == NULL)
		return -1;
	if (fscanf(f, "%ld", &pm) != 1)
		pm = -1;
	fclose(f);
	if (pm <= 0 || (d = opendir("/proc")) == NULL)
		return -1;
	while ((e = readdir(d)) != NULL) {
		long pid = atol(e->d_name), ppid;
		unsigned long ut, st;
		long cut, cst;
		char *p;
		if (pid <= 0)
			continue;
		snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
		if ((f = fopen(path, "r")) == NULL)
			continue;
		p = fgets(buf, sizeof(buf), f) ? strrchr(buf, ')') : NULL;
		fclose(f);
		// after "pid (comm)": state ppid pgrp session tty tpgid flags
		// minflt cminflt majflt cmajflt utime stime cutime cstime
		if (p == NULL ||
		    sscanf(p + 2,
		           "%*c %ld %*d %*d %*d %*d %*u %*u %*u %*u %*u "
		           "%lu %lu %ld %ld",
		           &ppid, &ut, &st, &cut, &cst) != 5)
			continue;
		// The postmaster's own, with its children that have exited.
		if (pid == pm)
			fn((pid_t)pid,
			   (double)(ut + st + (unsigned long)cut +
			            (unsigned long)cst) /
			           ticks,
			   arg);
		else if (ppid == pm)
			fn((pid_t)pid, (double)(ut + st) / ticks, arg);
	}
	closedir(d);
	return 0;
}

static void
add_cpu(pid_t pid, double cpu_s, void *arg)
{
	(void)pid;
	*(double *)arg += cpu_s;
}

double
pgh_cpu_s(const pgh *h)
{
	double total = 0;
	return pgh_each_proc(h, add_cpu, &total) == 0 ? total : -1;
}

bool
pgh_callgrind(const pgh *h)
{
	char wrap[128];
	path_in(h, CALLGRIND_WRAPPER, wrap, sizeof(wrap));
	return h->running && access(wrap, X_OK) == 0;
}
