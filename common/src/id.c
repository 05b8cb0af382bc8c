// UUIDv7 (RFC 9562 §5.7) with method 1 of §6.2: a 12-bit counter in rand_a,
// seeded at random each new millisecond, keeps one process's ids in
// creation order. When it runs out the timestamp moves on by 1 ms.
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "pl/id.h"

static pthread_once_t sodium_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t gen_mtx = PTHREAD_MUTEX_INITIALIZER;
static uint64_t gen_ms;  // under gen_mtx
static unsigned gen_ctr; // under gen_mtx

// Random bytes are drawn 512 at a time per thread: randombytes_buf is a
// getrandom(2) call each time, and the gateway makes an id (the request's)
// for every request. A fork makes the child draw anew (its pool would
// repeat the parent's).
#define POOL 512

static _Thread_local uint8_t pool[POOL];
static _Thread_local size_t pool_left;
static _Thread_local unsigned pool_gen;
static _Atomic unsigned fork_gen = 1;

static void
forked(void)
{
	fork_gen++;
}

static void
sodium_start(void)
{
	if (sodium_init() < 0) {
		// Without a random source no id is safe to hand out.
		fputs("could not initialise libsodium\n", stderr);
		abort();
	}
	pthread_atfork(NULL, NULL, forked);
}

static void
random_bytes(uint8_t *out, size_t n)
{
	if (pool_gen != fork_gen || pool_left < n) {
		randombytes_buf(pool, sizeof(pool));
		pool_left = sizeof(pool);
		pool_gen = fork_gen;
	}
	// Each byte is used once: the pool is read front to back.
	memcpy(out, pool + sizeof(pool) - pool_left, n);
	pool_left -= n;
}

static uint64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

void
pl_uuid7(uint8_t out[16])
{
	uint8_t rnd[10];
	uint64_t ms, now;
	unsigned ctr;

	pthread_once(&sodium_once, sodium_start);
	random_bytes(rnd, sizeof(rnd));
	now = now_ms() & 0xffffffffffffULL;

	pthread_mutex_lock(&gen_mtx);
	if (now > gen_ms) {
		gen_ms = now;
		// Top bit clear: at least 2048 more ids fit in this ms.
		gen_ctr = ((unsigned)rnd[8] << 8 | rnd[9]) & 0x7ff;
	} else if (++gen_ctr > 0xfff) {
		// Same ms (or the clock went back): stay ahead of the last id.
		gen_ms++;
		gen_ctr = 0;
	}
	ms = gen_ms;
	ctr = gen_ctr;
	pthread_mutex_unlock(&gen_mtx);

	for (int i = 0; i < 6; i++)
		out[i] = (uint8_t)(ms >> (40 - 8 * i));
	out[6] = (uint8_t)(0x70 | (ctr >> 8));
	out[7] = (uint8_t)(ctr & 0xff);
	out[8] = (uint8_t)(0x80 | (rnd[0] & 0x3f));
	memcpy(out + 9, rnd + 1, 7);
}

void
pl_uuid_format(const uint8_t id[16], char out[PL_UUID_STRLEN + 1])
{
	static const char hex[] = "0123456789abcdef";
	char *p = out;

	for (int i = 0; i < 16; i++) {
		if (i == 4 || i == 6 || i == 8 || i == 10)
			*p++ = '-';
		*p++ = hex[id[i] >> 4];
		*p++ = hex[id[i] & 0xf];
	}
	*p = '\0';
}

void
pl_uuid7_str(char out[PL_UUID_STRLEN + 1])
{
	uint8_t id[16];

	pl_uuid7(id);
	pl_uuid_format(id, out);
}

static int
hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

bool
pl_uuid_parse(const char *s, uint8_t out[16])
{
	uint8_t id[16];
	int n = 0;

	if (s == NULL)
		return false;
	for (int i = 0; i < PL_UUID_STRLEN;) {
		if (i == 8 || i == 13 || i == 18 || i == 23) {
			if (s[i] != '-')
				return false;
			i++;
			continue;
		}
		// s[i] is not NUL here, so reading s[i + 1] stays in bounds.
		int hi = hexval(s[i]);
		if (hi < 0)
			return false;
		int lo = hexval(s[i + 1]);
		if (lo < 0)
			return false;
		id[n++] = (uint8_t)(hi << 4 | lo);
		i += 2;
	}
	if (s[PL_UUID_STRLEN] != '\0')
		return false;
	if (out != NULL)
		memcpy(out, id, sizeof(id));
	return true;
}

bool
pl_uuid_valid(const char *s)
{
	return pl_uuid_parse(s, NULL);
}

uint64_t
pl_uuid7_ms(const uint8_t id[16])
{
	uint64_t ms = 0;

	for (int i = 0; i < 6; i++)
		ms = ms << 8 | id[i];
	return ms;
}
