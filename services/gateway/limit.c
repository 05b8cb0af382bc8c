// Per-API-key rate limit: a token bucket per key id.
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "gateway.h"

int64_t
gw_bucket_take(gw_bucket *b, double rate, double burst, int64_t now_ns)
{
	double wait;

	if (rate <= 0)
		return 0;
	if (burst < 1)
		burst = 1;
	if (b->last_ns == 0) {
		b->tokens = burst;
	} else if (now_ns > b->last_ns) {
		b->tokens += (double)(now_ns - b->last_ns) / 1e9 * rate;
		if (b->tokens > burst)
			b->tokens = burst;
	}
	if (now_ns > b->last_ns || b->last_ns == 0)
		b->last_ns = now_ns;
	if (b->tokens >= 1) {
		b->tokens -= 1;
		return 0;
	}
	wait = (1 - b->tokens) / rate * 1000;
	return wait < 1 ? 1 : (int64_t)(wait + 0.999);
}

#define NBUCKETS 1024
#define MAX_KEYS 65536
#define IDLE_NS  (60 * 1000000000LL)

typedef struct entry {
	struct entry *next;
	gw_bucket b;
	char key[];
} entry;

struct gw_limiter {
	pthread_mutex_t mu;
	entry *tab[NBUCKETS];
	size_t n;
};

gw_limiter *
gw_limiter_open(void)
{
	gw_limiter *l = calloc(1, sizeof(*l));

	if (l != NULL)
		pthread_mutex_init(&l->mu, NULL);
	return l;
}

void
gw_limiter_close(gw_limiter *l)
{
	if (l == NULL)
		return;
	for (size_t i = 0; i < NBUCKETS; i++) {
		entry *e = l->tab[i];
		while (e != NULL) {
			entry *next = e->next;
			free(e);
			e = next;
		}
	}
	pthread_mutex_destroy(&l->mu);
	free(l);
}

static size_t
hash(const char *s)
{
	size_t h = 1469598103934665603ULL;
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ULL;
	return h;
}

// Drops buckets idle for a minute (they would be full again anyway).
static void
prune(gw_limiter *l, int64_t now_ns)
{
	for (size_t i = 0; i < NBUCKETS; i++) {
		entry **pp = &l->tab[i];
		while (*pp != NULL) {
			entry *e = *pp;
			if (now_ns - e->b.last_ns > IDLE_NS) {
				*pp = e->next;
				free(e);
				l->n--;
			} else {
				pp = &e->next;
			}
		}
	}
}

int64_t
gw_limiter_take(gw_limiter *l, const char *key, double rate, double burst,
                int64_t now_ns)
{
	size_t i = hash(key) % NBUCKETS;
	entry *e;
	int64_t rv;

	pthread_mutex_lock(&l->mu);
	for (e = l->tab[i]; e != NULL; e = e->next)
		if (strcmp(e->key, key) == 0)
			break;
	if (e == NULL) {
		size_t len = strlen(key);
		if (l->n >= MAX_KEYS)
			prune(l, now_ns);
		e = calloc(1, sizeof(*e) + len + 1);
		if (e == NULL) {
			pthread_mutex_unlock(&l->mu);
			return 0; // out of memory: do not refuse the caller
		}
		memcpy(e->key, key, len + 1);
		e->next = l->tab[i];
		l->tab[i] = e;
		l->n++;
	}
	rv = gw_bucket_take(&e->b, rate, burst, now_ns);
	pthread_mutex_unlock(&l->mu);
	return rv;
}

size_t
gw_limiter_size(gw_limiter *l)
{
	size_t n;

	pthread_mutex_lock(&l->mu);
	n = l->n;
	pthread_mutex_unlock(&l->mu);
	return n;
}
