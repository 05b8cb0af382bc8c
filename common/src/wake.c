#include <errno.h>

#include "pl/wake.h"

void
pl_wake_init(pl_wake *w)
{
	sem_init(&w->sem, 0, 0);
	w->promised = 0;
	w->taken = 0;
}

void
pl_wake_post(pl_wake *w)
{
	// glibc's sem_post touches the semaphore with one atomic add and then
	// at most a futex wake-up of its address, which is harmless once the
	// sleeper has taken the post and gone (POSIX allows destroying a
	// semaphore as soon as no thread is blocked on it).
	sem_post(&w->sem);
}

static void
wake_take(pl_wake *w)
{
	while (sem_wait(&w->sem) != 0 && errno == EINTR)
		;
	w->taken++;
}

void
pl_wake_wait(pl_wake *w, pthread_mutex_t *mu)
{
	pthread_mutex_unlock(mu);
	wake_take(w);
	pthread_mutex_lock(mu);
}

void
pl_wake_post_unlocked(pthread_mutex_t *mu, pl_wake *const *ws, size_t n)
{
	pthread_mutex_unlock(mu);
	for (size_t i = 0; i < n; i++)
		pl_wake_post(ws[i]);
	pthread_mutex_lock(mu);
}

void
pl_wake_fini(pl_wake *w, pthread_mutex_t *mu)
{
	unsigned promised = w->promised;

	pthread_mutex_unlock(mu);
	while (w->taken < promised)
		wake_take(w);
	sem_destroy(&w->sem);
}
