#include "port.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

#include <sodium.h>

#define PORT_TRIES 64
#define PORT_KEPT  256

// The ports handed out lately: a test (the stack, say) takes several
// before its servers bind any, and two random picks can be equal.
static pthread_mutex_t given_mtx = PTHREAD_MUTEX_INITIALIZER;
static int given[PORT_KEPT];
static unsigned n_given;

// Whether port was handed out lately; if not, records it as handed out.
static bool
port_take(int port)
{
	bool seen = false;

	pthread_mutex_lock(&given_mtx);
	for (unsigned i = 0; i < PORT_KEPT && i < n_given && !seen; i++)
		seen = given[i] == port;
	if (!seen)
		given[n_given++ % PORT_KEPT] = port;
	pthread_mutex_unlock(&given_mtx);
	return !seen;
}

// Whether nothing listens on or is bound to 127.0.0.1:port now.
static bool
port_free(int port)
{
	struct sockaddr_in a = { 0 };
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	bool ok;

	if (fd < 0)
		return false;
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	a.sin_port = htons((uint16_t)port);
	ok = bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
	close(fd);
	return ok;
}

// The kernel's ephemeral range (32768..60999 when it cannot be read).
static void
ephemeral_range(int *lo, int *hi)
{
	FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");

	*lo = 32768;
	*hi = 60999;
	if (f == NULL)
		return;
	if (fscanf(f, "%d %d", lo, hi) != 2 || *lo < 1024 || *hi < *lo ||
	    *hi > 65535) {
		*lo = 32768;
		*hi = 60999;
	}
	fclose(f);
}

int
test_port(void)
{
	int lo, hi, from, to;

	ephemeral_range(&lo, &hi);
	// The larger of the spans outside the ephemeral range, from 10000
	// up (the well-known servers a machine runs live lower).
	if (lo - 10000 >= 65536 - (hi + 1)) {
		from = 10000;
		to = lo;
	} else {
		from = hi + 1;
		to = 65536;
	}
	if (to - from < 1000) { // no room outside it: inside it, then
		from = lo;
		to = hi + 1;
	}
	if (sodium_init() < 0)
		return -1;
	for (int i = 0; i < PORT_TRIES; i++) {
		int port =
		        from + (int)randombytes_uniform((uint32_t)(to - from));
		if (port_free(port) && port_take(port))
			return port;
	}
	return -1;
}
