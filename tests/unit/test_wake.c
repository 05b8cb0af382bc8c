// pl_wake: wake-ups promised under a mutex and posted after it. A miniature
// of the leader/follower batchers (billing's reserve batches, agents' reply
// groups) with every item on its caller's stack: a post that reached an
// item after its caller returned would wake the next item on that stack
// early, before its answer is written, and the check below would see it.
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "pl/wake.h"

#define THREADS 8
#define CALLS   20000
#define MAXB    16

typedef struct item {
	struct item *next;
	pl_wake wake;
	bool done;
	long in, out;
} item;

typedef struct batcher {
	pthread_mutex_t mu;
	item *head, *tail;
	int running, max_running;
	long batches;
} batcher;

static atomic_long wrong, posted, taken;

static void
submit(batcher *b, item *it)
{
	pl_wake_init(&it->wake);
	it->done = false;
	it->next = NULL;
	pthread_mutex_lock(&b->mu);
	if (b->tail)
		b->tail->next = it;
	else
		b->head = it;
	b->tail = it;
	while (!it->done) {
		item *batch[MAXB];
		pl_wake *wake[MAXB + 1];
		size_t n = 0, nw = 0;

		if (b->running >= b->max_running || b->head == NULL) {
			pl_wake_wait(&it->wake, &b->mu);
			continue;
		}
		while (b->head != NULL && n < MAXB) {
			batch[n++] = b->head;
			b->head = b->head->next;
		}
		if (b->head == NULL)
			b->tail = NULL;
		b->running++;
		pthread_mutex_unlock(&b->mu);
		for (size_t i = 0; i < n; i++)
			batch[i]->out = batch[i]->in * 2 + 1;
		pthread_mutex_lock(&b->mu);
		b->running--;
		b->batches++;
		for (size_t i = 0; i < n; i++) {
			batch[i]->done = true;
			if (batch[i] != it) {
				pl_wake_promise(&batch[i]->wake);
				wake[nw++] = &batch[i]->wake;
			}
		}
		if (b->head != NULL && b->head != it) {
			pl_wake_promise(&b->head->wake);
			wake[nw++] = &b->head->wake;
		}
		atomic_fetch_add(&posted, (long)nw);
		pl_wake_post_unlocked(&b->mu, wake, nw);
	}
	pl_wake_fini(&it->wake, &b->mu);
}

static batcher B;

static void *
caller(void *arg)
{
	long base = (long)(intptr_t)arg * CALLS;

	for (long i = 0; i < CALLS; i++) {
		item it; // a new frame's worth of stack each call
		it.in = base + i;
		it.out = -1;
		submit(&B, &it);
		atomic_fetch_add(&taken, (long)it.wake.taken);
		if (it.out != it.in * 2 + 1)
			atomic_fetch_add(&wrong, 1);
	}
	return NULL;
}

static void
test_batched_on_the_stack(void **state)
{
	pthread_t th[THREADS];

	(void)state;
	pthread_mutex_init(&B.mu, NULL);
	B.max_running = 2;
	for (int i = 0; i < THREADS; i++)
		pthread_create(&th[i], NULL, caller, (void *)(intptr_t)i);
	for (int i = 0; i < THREADS; i++)
		pthread_join(th[i], NULL);
	// Every call answered before its caller went on, by some batch, and
	// every post taken by the item it was for, before its caller went on.
	assert_int_equal(atomic_load(&wrong), 0);
	assert_int_equal(atomic_load(&posted), atomic_load(&taken));
	assert_true(B.batches > 0 && B.batches <= (long)THREADS * CALLS);
	assert_null(B.head);
	assert_int_equal(B.running, 0);
	pthread_mutex_destroy(&B.mu);
}

// Posts made before the sleeper waits are kept, and fini takes the ones
// still owed.
static void
test_counts(void **state)
{
	pl_wake w;
	pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

	(void)state;
	pl_wake_init(&w);
	pthread_mutex_lock(&mu);
	pl_wake_promise(&w);
	pl_wake_promise(&w);
	pthread_mutex_unlock(&mu);
	pl_wake_post(&w);
	pl_wake_post(&w);
	pthread_mutex_lock(&mu);
	pl_wake_wait(&w, &mu); // returns at once: one post is there
	assert_int_equal(w.taken, 1);
	pl_wake_fini(&w, &mu); // takes the second, and lets mu go
	assert_int_equal(w.taken, 2);
	assert_int_equal(pthread_mutex_trylock(&mu), 0);
	pthread_mutex_unlock(&mu);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_batched_on_the_stack),
		cmocka_unit_test(test_counts),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
