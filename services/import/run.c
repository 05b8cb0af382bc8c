// The import in order: read (one snapshot), map, check the mapping, set the
// tenant up, write in batches, ask the services what they hold, compare.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "import.h"

typedef struct progress {
	const imp_opts *o;
	double start, last;
	int table;
} progress;

static double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void
on_progress(void *arg, int table, size_t done, size_t total)
{
	static const char *const names[] = {
		"contacts",    "conversations", "messages",
		"orders",      "campaigns",     "recipients",
		"checkpoints", "blobs",         "writes",
	};
	progress *p = arg;
	double t = now_s();
	bool tty = isatty(STDERR_FILENO);

	if (p->o->quiet)
		return;
	if (table != p->table) {
		p->table = table;
		p->start = t;
	}
	if (done < total && t - p->last < (tty ? 0.2 : 2.0))
		return;
	p->last = t;
	{
		double el = t - p->start, rate = el > 0 ? (double)done / el : 0;
		double eta = rate > 0 ? (double)(total - done) / rate : 0;
		fprintf(stderr,
		        "%s%-12s %8zu/%-8zu %8.0f rows/s  ETA %5.1f s%s",
		        tty ? "\r" : "", names[table], done, total, rate, eta,
		        tty && done < total ? "" : "\n");
	}
}

static void
verify(imp_report *r)
{
	for (int i = 0; i < IMP_TABLES; i++) {
		imp_table *t = &r->t[i];
		if (t->parley != t->expected)
			import_mismatch(r,
			                "%s: the legacy side gives %lld rows, "
			                "Parley holds %lld",
			                t->name, (long long)t->expected,
			                (long long)t->parley);
		else if (strcmp(t->sha_source, t->sha_parley) != 0)
			import_mismatch(
			        r,
			        "%s: same count (%lld) but the content "
			        "differs (sha256 %s legacy vs %s Parley)",
			        t->name, (long long)t->expected, t->sha_source,
			        t->sha_parley);
	}
	for (int i = 0; i < r->n_st; i++)
		if (r->st[i].source != r->st[i].parley)
			import_mismatch(r,
			                "%s with status %s: %lld legacy, %lld "
			                "in Parley",
			                r->st[i].table, r->st[i].status,
			                (long long)r->st[i].source,
			                (long long)r->st[i].parley);
}

// Rows of the source that did not get a Parley id (named in the report).
static void
name_missing(const imp_source *src, imp_report *r)
{
	size_t named = 0;

	for (size_t i = 0; i < src->n_messages && named < 100; i++)
		if (!src->messages[i].pid[0]) {
			import_mismatch(r,
			                "messages row id=%s (%s) was not "
			                "imported",
			                src->messages[i].id,
			                src->messages[i].message_id);
			named++;
		}
	for (size_t i = 0; i < src->n_contacts && named < 100; i++)
		if (!src->contacts[i].pid[0]) {
			import_mismatch(r,
			                "contacts row id=%s was not imported",
			                src->contacts[i].id);
			named++;
		}
	for (size_t i = 0; i < src->n_orders && named < 100; i++)
		if (!src->orders[i].pid[0]) {
			import_mismatch(r, "orders row id=%s was not imported",
			                src->orders[i].id);
			named++;
		}
}

// The row check: for every table whose checksum differs, the service's
// rows against the source's, the rows that differ named. A service that
// cannot list them leaves its tables named only.
static void
name_rows(imp_writer *w, const imp_source *src, imp_report *r)
{
	for (int i = 0; i < IMP_TABLES; i++) {
		imp_table *t = &r->t[i];
		imp_digest *d = NULL;
		size_t n = 0;
		char err[512] = "";
		int rc;

		if (t->parley < 0 || strcmp(t->sha_source, t->sha_parley) == 0)
			continue;
		rc = import_fetch_rows(w, r, i, &d, &n, err, sizeof(err));
		if (rc < 0)
			import_mismatch(r, "%s: could not list the rows: %s",
			                t->name, err);
		else if (rc > 0)
			import_mismatch(r,
			                "%s: the service does not list its "
			                "rows (too old): rows not named",
			                t->name);
		else
			import_compare_rows(r, src, i, d, n);
		import_digests_free(d, n);
	}
}

static int
finish(const imp_opts *o, imp_report *r, imp_source *src, double t0, char *err,
       size_t errlen)
{
	r->seconds = now_s() - t0;
	import_report_print(r, src, o->out ? o->out : stdout);
	if (o->report_path != NULL) {
		char *j = import_report_json(r, src);
		FILE *f = fopen(o->report_path, "w");
		if (f == NULL || j == NULL) {
			snprintf(err, errlen,
			         "could not write the report to %s",
			         o->report_path);
			if (f)
				fclose(f);
			free(j);
			return 1;
		}
		fputs(j, f);
		fputc('\n', f);
		fclose(f);
		free(j);
	}
	return r->exit_code;
}

int
import_run(const imp_opts *o, imp_report *r, char *err, size_t errlen)
{
	imp_source src;
	imp_writer *w = NULL;
	progress pr = { o, 0, 0, -1 };
	double t0 = now_s(), t1;
	bool found = false;
	int rc = 1;

	import_report_init(r);
	r->dry_run = o->dry_run;
	snprintf(r->tenant_slug, sizeof(r->tenant_slug), "%s", o->tenant_slug);
	if (import_read(o->source_url, &src, err, errlen) != 0) {
		import_source_free(&src);
		return 1;
	}
	t1 = now_s();
	r->read_s = t1 - t0;
	if (import_map_all(&src, o->close_idle_days, (int64_t)time(NULL), err,
	                   errlen) != 0)
		goto out;
	r->map_s = now_s() - t1;
	t1 = now_s();
	if (import_writer_open(&w, o, err, errlen) != 0)
		goto out;
	if (import_setup(w, o, r, o->dry_run, &found, err, errlen) != PL_OK)
		goto out;
	r->setup_s = now_s() - t1;
	t1 = now_s();
	if (!o->dry_run &&
	    import_write_all(w, o, &src, r, on_progress, &pr, err, errlen) != 0)
		goto out;
	r->write_s = now_s() - t1;
	t1 = now_s();
	if (o->dry_run) {
		// Nothing written: threads keep their legacy names here.
		for (size_t i = 0; i < src.n_ckpts; i++)
			src.ckpts[i].mapped_thread = src.ckpts[i].thread_id;
		for (size_t i = 0; i < src.n_blobs; i++)
			src.blobs[i].mapped_thread = src.blobs[i].thread_id;
		for (size_t i = 0; i < src.n_writes; i++)
			src.writes[i].mapped_thread = src.writes[i].thread_id;
	}
	import_source_checksums(&src, r);
	if (!o->dry_run || found) {
		if (import_fetch_summary(w, r, err, errlen) != 0)
			goto out;
	}
	if (!o->dry_run) {
		verify(r);
		if (r->n_mismatches > 0) {
			name_missing(&src, r);
			name_rows(w, &src, r);
			r->exit_code = 2;
		}
	}
	r->verify_s = now_s() - t1;
	import_writer_counts(w, &r->rpc_calls, &r->rpc_writes);
	err[0] = '\0'; // retries above may have left a message
	rc = finish(o, r, &src, t0, err, errlen);
out:
	if (rc == 1)
		import_writer_counts(w, &r->rpc_calls, &r->rpc_writes);
	import_writer_close(w);
	import_source_free(&src);
	return rc;
}
