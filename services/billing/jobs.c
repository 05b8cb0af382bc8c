// The periodic job: close ended billing periods, tell tenants about
// subscriptions past due beyond the grace period, forget old reservations.
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "billing.h"
#include "pl/log.h"

struct billing_jobs {
	billing_state *st;
	pthread_t thr;
	pthread_mutex_t mtx;
	pthread_cond_t cv;
	bool stop;
};

int
billing_close_round(pl_call *call, pl_db *db, billing_state *st, int64_t at_ms,
                    billing_invoice ***inv, size_t *n_inv, size_t *cap,
                    size_t *failed, int *first_rc, const char **first)
{
	char **tenants;
	size_t n;
	int rc, done = 0;

	if ((rc = billing_store_due_tenants(db, call->arena, at_ms, &tenants,
	                                    &n)) != PL_OK) {
		pl_call_error(call, rc, "could not list due subscriptions");
		return -1;
	}
	for (size_t i = 0; i < n; i++) {
		rc = billing_store_close(call, db, st, tenants[i], at_ms, inv,
		                         n_inv, cap);
		if (rc == PL_OK) {
			done++;
			continue;
		}
		// One tenant's failure must not stop the others.
		pl_warn("could not close the billing period of tenant %s: %s",
		        tenants[i], call->message ? call->message : "");
		if ((*failed)++ == 0) {
			*first_rc = rc;
			*first = pl_arena_printf(
			        call->arena, "%s: %s", tenants[i],
			        call->message ? call->message : "");
		}
		call->code = PL_OK;
		call->message = NULL;
		call->n_violations = 0;
	}
	return done;
}

int
billing_jobs_run_once(pl_db *db, billing_state *st, int64_t at_ms)
{
	static const pl_principal none = PARLEY__RPC__V1__PRINCIPAL__INIT;
	pl_arena a;
	pl_call call;
	size_t issued = 0, cap = 0, failed = 0;
	billing_invoice **inv = NULL;
	const char *first = NULL;
	int rv = 0, first_rc = PL_OK;

	pl_arena_init(&a, 0, 0);
	memset(&call, 0, sizeof(call));
	call.arena = &a;
	call.principal = &none;
	call.method = "billing.jobs";
	call.trace_id = "";
	call.arg = st;
	// Leases of replicas that died (README "Leases"); the live ones
	// return theirs before they expire.
	if (billing_store_reap_leases(db, NULL, 5000) < 0)
		rv = -1;
	if (billing_close_round(&call, db, st, at_ms, &inv, &issued, &cap,
	                        &failed, &first_rc, &first) < 0) {
		rv = -1;
		goto out_fini;
	}
	if (failed > 0)
		rv = -1;
	if (billing_store_grace_sweep(db, st, at_ms) < 0)
		rv = -1;
	if (billing_store_prune_reservations(db, st->reservation_ttl_days) < 0)
		rv = -1;
	if (rv == 0)
		rv = (int)issued;
out_fini:
	pl_arena_fini(&a);
	return rv;
}

static void *
jobs_main(void *arg)
{
	struct billing_jobs *j = arg;
	pl_db *db = pl_db_open(j->st->database_url);

	pthread_setname_np(pthread_self(), "billing-jobs");
	pthread_mutex_lock(&j->mtx);
	while (!j->stop) {
		struct timespec ts;
		pthread_mutex_unlock(&j->mtx);
		if (db != NULL)
			billing_jobs_run_once(db, j->st, billing_now_ms());
		pthread_mutex_lock(&j->mtx);
		ts = pl_timespec_in(CLOCK_REALTIME,
		                    (int64_t)j->st->job_interval_ms * 1000000);
		while (!j->stop && pthread_cond_timedwait(&j->cv, &j->mtx,
		                                          &ts) != ETIMEDOUT)
			;
	}
	pthread_mutex_unlock(&j->mtx);
	if (db != NULL)
		pl_db_close(db);
	return NULL;
}

int
billing_jobs_start(billing_state *st)
{
	struct billing_jobs *j = calloc(1, sizeof(*j));

	if (j == NULL)
		return PL_RESOURCE_EXHAUSTED;
	j->st = st;
	pthread_mutex_init(&j->mtx, NULL);
	pthread_cond_init(&j->cv, NULL);
	if (pthread_create(&j->thr, NULL, jobs_main, j) != 0) {
		pthread_mutex_destroy(&j->mtx);
		pthread_cond_destroy(&j->cv);
		free(j);
		return PL_RESOURCE_EXHAUSTED;
	}
	st->jobs = j;
	return PL_OK;
}

void
billing_jobs_stop(billing_state *st)
{
	struct billing_jobs *j = st->jobs;

	if (j == NULL)
		return;
	pthread_mutex_lock(&j->mtx);
	j->stop = true;
	pthread_cond_signal(&j->cv);
	pthread_mutex_unlock(&j->mtx);
	pthread_join(j->thr, NULL);
	pthread_mutex_destroy(&j->mtx);
	pthread_cond_destroy(&j->cv);
	free(j);
	st->jobs = NULL;
}
