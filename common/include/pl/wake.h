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
// (pl_wake_promise) and posts after the unlock (pl_wake_post); the sleeper,
// before its pl_wake goes away, takes every wake-up it was promised
// (pl_wake_fini), so that no post reaches memory that is gone.
#ifndef PL_WAKE_H
#define PL_WAKE_H

#include <semaphore.h>

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

// Sleeps until a post; call without the mutex.
void pl_wake_wait(pl_wake *w);

// Takes the wake-ups still owed and frees w. promised: read under the mutex
// once nothing can promise w another (the sleeper's item is out of every
// queue and group); call without the mutex.
void pl_wake_fini(pl_wake *w, unsigned promised);

#endif
