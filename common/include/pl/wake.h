// Waking a sleeping thread from another after the unlock of the mutex that
// guards what the sleeper waits for (the leader/follower groups of billing's
// reserve batches and agents' reply groups).
//
// A condition variable signalled with the mutex held wakes the sleeper only
// for it to block on that mutex again until the signaller unlocks: two
// sleeps and two wake-ups a follower. Signalled after the unlock, the
// sleeper may have seen its state change already (a spurious or earlier
// wake-up), returned and reused the memory of its condition variable. A
// pl_wake counts the wake-ups promised: the waker promises under the mutex
// (pl_wake_promise) and posts after the unlock (pl_wake_post, or
// pl_wake_post_unlocked for several); the sleeper waits as on a condition
// variable (pl_wake_wait) and, before its pl_wake goes away, takes every
// wake-up it was promised (pl_wake_fini), so that no post reaches memory that
// is gone.
#ifndef PL_WAKE_H
#define PL_WAKE_H

#include <pthread.h>
#include <semaphore.h>
#include <stddef.h>

typedef struct pl_wake {
	sem_t sem;
	unsigned promised; // under the mutex of the state waited for
	unsigned taken;    // the sleeper's own
} pl_wake;

void pl_wake_init(pl_wake *w);

// Under the mutex: w will be posted once more.
static inline void
pl_wake_promise(pl_wake *w)
{
	w->promised++;
}

// After the unlock: one promised wake-up.
void pl_wake_post(pl_wake *w);

// Called with mu held: lets mu go, sleeps until a post, takes mu again.
void pl_wake_wait(pl_wake *w, pthread_mutex_t *mu);

// Called with mu held, each of ws[0..n) promised under it: lets mu go, posts
// each once, takes mu again.
void pl_wake_post_unlocked(pthread_mutex_t *mu, pl_wake *const *ws, size_t n);

// Called with mu held, once nothing can promise w another (the sleeper's item
// is out of every queue and group): lets mu go, takes the wake-ups still owed
// and frees w.
void pl_wake_fini(pl_wake *w, pthread_mutex_t *mu);

#endif
