// The before/after check (the same per-table checksums the services compute
// in GetImportSummary, here over the legacy rows as mapped) and the report,
// human-readable and JSON.
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <sodium.h>

#include "import.h"

static const char *const table_names[IMP_TABLES] = {
	"contacts",    "conversations",    "messages",
	"orders",      "campaigns",        "campaign_recipients",
	"checkpoints", "checkpoint_blobs", "checkpoint_writes",
};
static const char *const dir_names[] = { "", "inbound", "outbound" };
static const char *const type_names[] = {
	"",         "text",     "image",    "audio",
	"video",    "document", "location", "interactive",
	"template", "reaction", "sticker",  "unsupported",
};
static const char *const mstatus_names[] = { "",       "received",  "queued",
	                                     "sent",   "delivered", "read",
	                                     "played", "failed" };
static const char *const cstatus_names[] = { "", "open", "pending", "closed" };
static const char *const ostatus_names[] = { "",          "pending",
	                                     "confirmed", "shipped",
	                                     "delivered", "cancelled" };
static const char *const cpstatus_names[] = { "",        "draft",  "scheduled",
	                                      "running", "paused", "completed",
	                                      "canceled" };
static const char *const rstatus_names[] = {
	"",       "pending",           "sent",          "delivered", "read",
	"failed", "skipped_opted_out", "skipped_limit",
};

void
import_report_init(imp_report *r)
{
	memset(r, 0, sizeof(*r));
	for (int i = 0; i < IMP_TABLES; i++) {
		r->t[i].name = table_names[i];
		r->t[i].parley = -1;
		r->t[i].rows_differ = -1;
	}
}

void
import_report_fini(imp_report *r)
{
	for (size_t i = 0; i < r->n_mismatches; i++)
		free(r->mismatches[i]);
	free(r->mismatches);
	r->mismatches = NULL;
	r->n_mismatches = r->cap_mismatches = 0;
	for (size_t i = 0; i < r->n_bad_rows; i++)
		free(r->bad_rows[i].legacy_id);
	free(r->bad_rows);
	r->bad_rows = NULL;
	r->n_bad_rows = r->cap_bad_rows = 0;
}

void
import_mismatch(imp_report *r, const char *fmt, ...)
{
	va_list ap;
	char *s = NULL;

	if (r->n_mismatches == r->cap_mismatches) {
		size_t cap = r->cap_mismatches ? r->cap_mismatches * 2 : 8;
		char **v = realloc(r->mismatches, cap * sizeof(*v));
		if (v == NULL)
			return;
		r->mismatches = v;
		r->cap_mismatches = cap;
	}
	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) < 0)
		s = NULL;
	va_end(ap);
	if (s != NULL)
		r->mismatches[r->n_mismatches++] = s;
}

// ---------------------------------------------------------------------------
// Checksums: rows sorted by key (bytewise, as COLLATE "C"), fields joined by
// U+001F, rows by U+001E, SHA-256 in hex. The row check hashes each row's
// text alone (what the services answer for rows_of_table).

typedef struct row {
	char *key;  // what the service orders the checksum by
	char *text; // the fields joined by U+001F
	char *lkey; // what the service lists the row by (NULL: key)
	char *name; // how the report names the row (NULL: lkey)
} row;

typedef struct rows {
	row *v;
	size_t n;
} rows;

static int
by_key(const void *a, const void *b)
{
	const row *x = a, *y = b;

	return strcmp(x->key, y->key);
}

static const char *
lkey(const row *r)
{
	return r->lkey != NULL ? r->lkey : r->key;
}

static int
by_lkey(const void *a, const void *b)
{
	return strcmp(lkey(a), lkey(b));
}

// Adds a row: key, then the listing key and the name (NULL: the key), then
// n fields (NULL as "").
static void
add_named(rows *rs, const char *key, const char *lk, const char *name, int n,
          ...)
{
	va_list ap;
	size_t len = 0;
	char *t, *p;
	const char *f[16];

	va_start(ap, n);
	for (int i = 0; i < n; i++) {
		f[i] = va_arg(ap, const char *);
		if (f[i] == NULL)
			f[i] = "";
		len += strlen(f[i]) + 1;
	}
	va_end(ap);
	p = t = malloc(len + 1);
	if (t == NULL)
		return;
	for (int i = 0; i < n; i++) {
		size_t l = strlen(f[i]);
		if (i > 0)
			*p++ = '\x1f';
		memcpy(p, f[i], l);
		p += l;
	}
	*p = '\0';
	rs->v[rs->n].key = strdup(key);
	rs->v[rs->n].text = t;
	rs->v[rs->n].lkey = lk != NULL ? strdup(lk) : NULL;
	rs->v[rs->n].name = name != NULL ? strdup(name) : NULL;
	rs->n++;
}

#define add(rs, key, ...) add_named(rs, key, NULL, NULL, __VA_ARGS__)

static void
rows_free(rows *rs)
{
	for (size_t i = 0; i < rs->n; i++) {
		free(rs->v[i].key);
		free(rs->v[i].text);
		free(rs->v[i].lkey);
		free(rs->v[i].name);
	}
	free(rs->v);
	rs->v = NULL;
	rs->n = 0;
}

static void
finish(rows *rs, char out[65])
{
	crypto_hash_sha256_state st;
	unsigned char h[32];

	qsort(rs->v, rs->n, sizeof(row), by_key);
	crypto_hash_sha256_init(&st);
	for (size_t i = 0; i < rs->n; i++) {
		if (i > 0)
			crypto_hash_sha256_update(
			        &st, (const unsigned char *)"\x1e", 1);
		crypto_hash_sha256_update(&st,
		                          (const unsigned char *)rs->v[i].text,
		                          strlen(rs->v[i].text));
	}
	crypto_hash_sha256_final(&st, h);
	sodium_bin2hex(out, 65, h, 32);
	rows_free(rs);
}

static void
alloc_rows(rows *rs, size_t n)
{
	rs->v = calloc(n + 1, sizeof(row));
	rs->n = 0;
}

static char *
hex(const uint8_t *d, size_t n)
{
	char *s = malloc(n * 2 + 1);

	if (s != NULL)
		sodium_bin2hex(s, n * 2 + 1, d, n);
	return s;
}

static void
st_add(imp_report *r, const char *table, const char *status)
{
	if (r == NULL)
		return;
	for (int i = 0; i < r->n_st; i++)
		if (strcmp(r->st[i].table, table) == 0 &&
		    strcmp(r->st[i].status, status) == 0) {
			r->st[i].source++;
			return;
		}
	if (r->n_st < 64) {
		int i = r->n_st++;
		for (int k = 0; k < IMP_TABLES; k++)
			if (strcmp(table_names[k], table) == 0)
				r->st[i].table = table_names[k];
		snprintf(r->st[i].status, sizeof(r->st[i].status), "%s",
		         status);
		r->st[i].source = 1;
		r->st[i].parley = -1;
	}
}

// A checkpoint table's row: the key it is listed by (the columns of its
// primary key joined by U+001F, the thread as imported) and its name in
// the report (the legacy thread, then the other columns, joined by '/').
static void
agent_keys(char **lk, char **name, const char *mapped, const char *legacy,
           int n, ...)
{
	va_list ap;
	size_t ll = strlen(mapped) + 1, nl = strlen(legacy) + 1;
	const char *f[8];

	va_start(ap, n);
	for (int i = 0; i < n; i++) {
		f[i] = va_arg(ap, const char *);
		if (f[i] == NULL)
			f[i] = "";
		ll += strlen(f[i]) + 1;
		nl += strlen(f[i]) + 1;
	}
	va_end(ap);
	*lk = malloc(ll);
	*name = malloc(nl);
	if (*lk == NULL || *name == NULL) {
		free(*lk);
		free(*name);
		*lk = *name = NULL;
		return;
	}
	strcpy(*lk, mapped);
	strcpy(*name, legacy);
	for (int i = 0; i < n; i++) {
		strcat(*lk, "\x1f");
		strcat(*lk, f[i]);
		strcat(*name, "/");
		strcat(*name, f[i]);
	}
}

// The rows of one table as the services must hold them (same text as
// their checksums). With r, also the source and expected counts and the
// per-status counts.
static void
table_rows(const imp_source *src, int table, rows *rs, imp_report *r)
{
	char buf[64];
	imp_table *t = r != NULL ? &r->t[table] : NULL;
	int64_t n_src = 0;

	switch (table) {
	case IMP_T_CONTACTS: // legacy id, E.164, raw phone
		alloc_rows(rs, src->n_contacts + 1);
		for (size_t i = 0; i < src->n_contacts; i++) {
			const imp_contact *c = &src->contacts[i];
			add(rs, c->id, 3, c->id, c->e164, c->phone);
		}
		if (src->system_group >= 0)
			add(rs, IMP_SYSTEM_CONTACT, 3, IMP_SYSTEM_CONTACT, "",
			    "");
		n_src = (int64_t)src->n_contacts;
		break;
	case IMP_T_CONVERSATIONS: // legacy id, status, message count
		alloc_rows(rs, src->n_groups);
		for (size_t i = 0; i < src->n_groups; i++) {
			const imp_group *g = &src->groups[i];
			snprintf(buf, sizeof(buf), "%zu", g->n_msgs);
			add(rs, g->legacy, 3, g->legacy,
			    cstatus_names[g->status], buf);
		}
		n_src = (int64_t)src->n_groups;
		break;
	case IMP_T_MESSAGES:
		alloc_rows(rs, src->n_messages);
		for (size_t i = 0; i < src->n_messages; i++) {
			const imp_message *m = &src->messages[i];
			add(rs, m->id, 9, m->id, m->message_id,
			    dir_names[m->dir], type_names[m->mtype],
			    mstatus_names[m->mstatus], m->text, m->url,
			    m->sent_at, m->metadata ? m->metadata : "{}");
			st_add(r, "messages", mstatus_names[m->mstatus]);
		}
		n_src = (int64_t)src->n_messages;
		break;
	case IMP_T_ORDERS: // legacy id, status, currency, total, items
		alloc_rows(rs, src->n_orders);
		for (size_t i = 0; i < src->n_orders; i++) {
			const imp_order *o = &src->orders[i];
			size_t len = 1;
			char *items, tot[32];
			for (size_t k = 0; k < o->n_items; k++)
				len += strlen(o->items[k].sku) + 48;
			items = calloc(1, len);
			for (size_t k = 0; items && k < o->n_items; k++)
				sprintf(items + strlen(items), "%s%s:%lld:%lld",
				        k ? ";" : "", o->items[k].sku,
				        (long long)o->items[k].qty,
				        (long long)o->items[k].unit_minor);
			snprintf(tot, sizeof(tot), "%lld",
			         (long long)o->total_minor);
			add(rs, o->id, 5, o->id, ostatus_names[o->ostatus],
			    o->currency, tot, items);
			free(items);
			st_add(r, "orders", ostatus_names[o->ostatus]);
		}
		n_src = (int64_t)src->n_orders;
		break;
	case IMP_T_CAMPAIGNS: // legacy id, name, status, template body
		alloc_rows(rs, src->n_campaigns);
		for (size_t i = 0; i < src->n_campaigns; i++) {
			const imp_campaign *c = &src->campaigns[i];
			add(rs, c->id, 4, c->id, c->name,
			    cpstatus_names[c->cstatus], c->body);
			st_add(r, "campaigns", cpstatus_names[c->cstatus]);
		}
		n_src = (int64_t)src->n_campaigns;
		break;
	case IMP_T_RECIPIENTS: // legacy id, status, in/out
		alloc_rows(rs, src->n_subs);
		for (size_t i = 0; i < src->n_subs; i++) {
			const imp_sub *s = &src->subs[i];
			add(rs, s->id, 3, s->id, rstatus_names[s->rstatus],
			    s->rstatus == 6 ? "out" : "in");
			st_add(r, "campaign_recipients",
			       rstatus_names[s->rstatus]);
		}
		n_src = (int64_t)src->n_subs;
		break;
	// agents' definitions (services/agents/README.md, "Checksums"):
	// primary-key order, the thread as imported.
	case IMP_T_CHECKPOINTS:
		alloc_rows(rs, src->n_ckpts);
		for (size_t i = 0; i < src->n_ckpts; i++) {
			const imp_ckpt *c = &src->ckpts[i];
			char *key, *lk = NULL, *name = NULL;
			if (asprintf(&key, "%s\x01%s\x01%s", c->mapped_thread,
			             c->ns ? c->ns : "", c->id) < 0)
				continue;
			agent_keys(&lk, &name, c->mapped_thread, c->thread_id,
			           2, c->ns, c->id);
			add_named(rs, key, lk, name, 7, c->mapped_thread, c->ns,
			          c->id, c->parent, c->type, c->state,
			          c->metadata ? c->metadata : "{}");
			free(key);
			free(lk);
			free(name);
		}
		n_src = (int64_t)src->n_ckpts;
		break;
	case IMP_T_BLOBS:
		alloc_rows(rs, src->n_blobs);
		for (size_t i = 0; i < src->n_blobs; i++) {
			const imp_blob *b = &src->blobs[i];
			char *key, *lk = NULL, *name = NULL;
			char *h = b->is_null ? NULL : hex(b->data, b->len);
			if (asprintf(&key, "%s\x01%s\x01%s\x01%s",
			             b->mapped_thread, b->ns ? b->ns : "",
			             b->channel, b->version) >= 0) {
				agent_keys(&lk, &name, b->mapped_thread,
				           b->thread_id, 3, b->ns, b->channel,
				           b->version);
				add_named(rs, key, lk, name, 6,
				          b->mapped_thread, b->ns, b->channel,
				          b->version,
				          b->is_null ? "empty" : b->type, h);
				free(key);
				free(lk);
				free(name);
			}
			free(h);
		}
		n_src = (int64_t)src->n_blobs;
		break;
	case IMP_T_WRITES:
		alloc_rows(rs, src->n_writes);
		for (size_t i = 0; i < src->n_writes; i++) {
			const imp_write *w = &src->writes[i];
			char *key, *lk = NULL, *name = NULL;
			char *h = hex(w->data, w->len);
			long idx = strtol(w->idx, NULL, 10);
			// idx sorts numerically: pad it in the key
			if (asprintf(&key, "%s\x01%s\x01%s\x01%s\x01%020ld",
			             w->mapped_thread, w->ns ? w->ns : "",
			             w->ckpt_id, w->task_id,
			             idx + 1000000000L) >= 0) {
				agent_keys(&lk, &name, w->mapped_thread,
				           w->thread_id, 4, w->ns, w->ckpt_id,
				           w->task_id, w->idx);
				add_named(rs, key, lk, name, 9,
				          w->mapped_thread, w->ns, w->ckpt_id,
				          w->task_id, w->idx, w->channel,
				          w->type, h, w->task_path);
				free(key);
				free(lk);
				free(name);
			}
			free(h);
		}
		n_src = (int64_t)src->n_writes;
		break;
	default:
		alloc_rows(rs, 0);
		break;
	}
	if (t != NULL) {
		t->source = n_src;
		t->expected = (int64_t)rs->n;
	}
}

void
import_source_checksums(const imp_source *src, imp_report *r)
{
	for (int i = 0; i < IMP_TABLES; i++) {
		rows rs;
		table_rows(src, i, &rs, r);
		finish(&rs, r->t[i].sha_source);
	}
}

// ---------------------------------------------------------------------------
// The row check: which rows make a table's checksum differ.

static int
by_digest_key(const void *a, const void *b)
{
	const imp_digest *const *x = a, *const *y = b;

	return strcmp((*x)->key, (*y)->key);
}

// How the report names a row found only in Parley: its key, and for the
// checkpoint tables the legacy thread in place of the imported one and
// '/' between the columns.
static char *
parley_name(const imp_source *src, int table, const char *key)
{
	const char *sep = strchr(key, '\x1f'), *legacy = NULL;
	size_t tl;
	char *s, *p;

	if (table < IMP_T_CHECKPOINTS || sep == NULL)
		return strdup(key);
	tl = (size_t)(sep - key);
	for (size_t i = 0; legacy == NULL && i < src->n_ckpts; i++)
		if (strlen(src->ckpts[i].mapped_thread) == tl &&
		    strncmp(src->ckpts[i].mapped_thread, key, tl) == 0)
			legacy = src->ckpts[i].thread_id;
	for (size_t i = 0; legacy == NULL && i < src->n_blobs; i++)
		if (strlen(src->blobs[i].mapped_thread) == tl &&
		    strncmp(src->blobs[i].mapped_thread, key, tl) == 0)
			legacy = src->blobs[i].thread_id;
	for (size_t i = 0; legacy == NULL && i < src->n_writes; i++)
		if (strlen(src->writes[i].mapped_thread) == tl &&
		    strncmp(src->writes[i].mapped_thread, key, tl) == 0)
			legacy = src->writes[i].thread_id;
	if (legacy == NULL) {
		s = strdup(key);
	} else if (asprintf(&s, "%s%s", legacy, sep) < 0) {
		s = NULL;
	}
	for (p = s; p != NULL && *p; p++)
		if (*p == '\x1f')
			*p = '/';
	return s;
}

static void
bad_row(imp_report *r, int table, char *name, const char *problem)
{
	r->t[table].rows_differ++;
	r->bad_rows_total++;
	if (name == NULL)
		return;
	if (r->t[table].rows_differ > IMP_NAMED_PER_TABLE) {
		free(name);
		return;
	}
	if (r->n_bad_rows == r->cap_bad_rows) {
		size_t cap = r->cap_bad_rows ? r->cap_bad_rows * 2 : 16;
		imp_bad_row *v = realloc(r->bad_rows, cap * sizeof(*v));
		if (v == NULL) {
			free(name);
			return;
		}
		r->bad_rows = v;
		r->cap_bad_rows = cap;
	}
	r->bad_rows[r->n_bad_rows].table = r->t[table].name;
	r->bad_rows[r->n_bad_rows].legacy_id = name;
	r->bad_rows[r->n_bad_rows].problem = problem;
	r->n_bad_rows++;
}

static bool
named_more(const imp_report *r, int table)
{
	return r->t[table].rows_differ < IMP_NAMED_PER_TABLE;
}

void
import_compare_rows(imp_report *r, const imp_source *src, int table,
                    const imp_digest *parley, size_t n_parley)
{
	rows rs;
	const imp_digest **pv = calloc(n_parley + 1, sizeof(*pv));
	size_t i = 0, k = 0;

	if (pv == NULL)
		return;
	for (size_t j = 0; j < n_parley; j++)
		pv[j] = &parley[j];
	qsort(pv, n_parley, sizeof(*pv), by_digest_key);
	table_rows(src, table, &rs, NULL);
	qsort(rs.v, rs.n, sizeof(row), by_lkey);
	r->t[table].rows_differ = 0;
	// Both sides in key order (bytewise): walk them side by side.
	while (i < rs.n || k < n_parley) {
		const row *x = i < rs.n ? &rs.v[i] : NULL;
		int c = x == NULL       ? 1
		        : k >= n_parley ? -1
		                        : strcmp(lkey(x), pv[k]->key);
		const char *nm = x != NULL && x->name ? x->name
		                 : x != NULL          ? lkey(x)
		                                      : NULL;

		if (c < 0) {
			bad_row(r, table,
			        named_more(r, table) ? strdup(nm) : NULL,
			        IMP_MISSING);
			i++;
		} else if (c > 0) {
			bad_row(r, table,
			        named_more(r, table)
			                ? parley_name(src, table, pv[k]->key)
			                : NULL,
			        IMP_EXTRA);
			k++;
		} else {
			unsigned char h[32];
			char hx[65];
			crypto_hash_sha256(h, (const unsigned char *)x->text,
			                   strlen(x->text));
			sodium_bin2hex(hx, sizeof(hx), h, 32);
			if (strcmp(hx, pv[k]->sha256) != 0)
				bad_row(r, table,
				        named_more(r, table) ? strdup(nm)
				                             : NULL,
				        IMP_DIFFERS);
			i++;
			k++;
		}
	}
	rows_free(&rs);
	free(pv);
}

void
import_digests_free(imp_digest *d, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(d[i].key);
		free(d[i].sha256);
	}
	free(d);
}

// ---------------------------------------------------------------------------

void
import_report_print(const imp_report *r, const imp_source *src, FILE *f)
{
	int64_t created = 0;

	fprintf(f, "\nparley-import %s: tenant %s (%s)%s\n",
	        r->dry_run ? "dry run" : "report", r->tenant_slug,
	        r->tenant_id[0] ? r->tenant_id : "not created yet",
	        r->tenant_created ? ", created now" : "");
	fprintf(f, "%-20s %9s %9s %9s %9s %9s  %s\n", "table", "legacy",
	        "expected", "parley", "created", "existing", "checksum");
	for (int i = 0; i < IMP_TABLES; i++) {
		const imp_table *t = &r->t[i];
		const char *ck = t->parley < 0 ? "-"
		                 : strcmp(t->sha_source, t->sha_parley) == 0
		                         ? "match"
		                         : "DIFFERS";
		char pn[24];
		if (t->parley < 0)
			snprintf(pn, sizeof(pn), "-");
		else
			snprintf(pn, sizeof(pn), "%lld", (long long)t->parley);
		fprintf(f, "%-20s %9lld %9lld %9s %9lld %9lld  %s\n", t->name,
		        (long long)t->source, (long long)t->expected, pn,
		        (long long)t->created, (long long)t->existing, ck);
		created += t->created;
	}
	if (src != NULL) {
		fprintf(f, "merged contacts: %zu\n", src->n_merges);
		for (size_t i = 0; i < src->n_merges; i++)
			fprintf(f,
			        "  contact %s (%s) merged into %s (%s) as %s\n",
			        src->contacts[src->merges[i].from].id,
			        src->contacts[src->merges[i].from].phone,
			        src->contacts[src->merges[i].into].id,
			        src->contacts[src->merges[i].into].phone,
			        src->contacts[src->merges[i].into].e164);
		fprintf(f,
		        "messages without a contact: %zu (on the contact "
		        "\"Legacy system messages\", legacy id %s)\n",
		        src->orphans, IMP_SYSTEM_CONTACT);
		fprintf(f, "LangGraph threads without a contact: %zu\n",
		        src->n_orphan_threads);
		for (size_t i = 0; i < src->n_orphan_threads && i < 50; i++)
			fprintf(f, "  %s\n", src->orphan_threads[i]);
		for (size_t i = 0; i < src->n_problems; i++)
			fprintf(f, "problem: %s\n", src->problems[i]);
	}
	for (size_t i = 0; i < r->n_mismatches; i++)
		fprintf(f, "MISMATCH: %s\n", r->mismatches[i]);
	for (int i = 0; i < IMP_TABLES; i++) {
		const imp_table *t = &r->t[i];
		if (t->rows_differ <= 0)
			continue;
		fprintf(f, "MISMATCH: %s: %lld %s%s\n", t->name,
		        (long long)t->rows_differ,
		        t->rows_differ == 1 ? "row differs" : "rows differ",
		        t->rows_differ > IMP_NAMED_PER_TABLE
		                ? " (the first 100 named)"
		                : "");
		for (size_t k = 0; k < r->n_bad_rows; k++)
			if (r->bad_rows[k].table == t->name)
				fprintf(f, "MISMATCH: %s row %s: %s\n", t->name,
				        r->bad_rows[k].legacy_id,
				        r->bad_rows[k].problem);
	}
	if (r->bad_rows_total > 0)
		fprintf(f, "mismatched rows: %lld in all\n",
		        (long long)r->bad_rows_total);
	if (r->dry_run)
		fprintf(f, "dry run: nothing was written\n");
	else if (created == 0)
		fprintf(f,
		        "nothing to import: every row was imported before\n");
	fprintf(f,
	        "result: %s in %.1f s (read %.1f, map %.1f, set-up %.1f, "
	        "write %.1f, verify %.1f)\n",
	        r->exit_code == 0 ? "OK" : "VERIFICATION FAILED", r->seconds,
	        r->read_s, r->map_s, r->setup_s, r->write_s, r->verify_s);
}

char *
import_report_json(const imp_report *r, const imp_source *src)
{
	json_t *j = json_object(), *tables = json_object(), *a;
	char *s;

	json_object_set_new(j, "tenant_id", json_string(r->tenant_id));
	json_object_set_new(j, "tenant_slug", json_string(r->tenant_slug));
	json_object_set_new(j, "tenant_created",
	                    json_boolean(r->tenant_created));
	json_object_set_new(j, "channel_id", json_string(r->channel_id));
	json_object_set_new(j, "agent_id", json_string(r->agent_id));
	json_object_set_new(j, "dry_run", json_boolean(r->dry_run));
	json_object_set_new(j, "ok", json_boolean(r->exit_code == 0));
	json_object_set_new(j, "seconds", json_real(r->seconds));
	json_object_set_new(j, "rpc_calls", json_integer(r->rpc_calls));
	json_object_set_new(j, "rpc_writes", json_integer(r->rpc_writes));
	json_object_set_new(j, "phases",
	                    json_pack("{s:f, s:f, s:f, s:f, s:f}", "read",
	                              r->read_s, "map", r->map_s, "setup",
	                              r->setup_s, "write", r->write_s, "verify",
	                              r->verify_s));
	for (int i = 0; i < IMP_TABLES; i++) {
		const imp_table *t = &r->t[i];
		json_t *o = json_pack(
		        "{s:I, s:I, s:I, s:I, s:I, s:s, s:s, s:f}", "legacy",
		        (json_int_t)t->source, "expected",
		        (json_int_t)t->expected, "parley",
		        (json_int_t)t->parley, "created",
		        (json_int_t)t->created, "existing",
		        (json_int_t)t->existing, "sha256_legacy", t->sha_source,
		        "sha256_parley", t->sha_parley, "seconds", t->seconds);
		if (t->rows_differ >= 0)
			json_object_set_new(o, "mismatched_rows",
			                    json_integer(t->rows_differ));
		json_object_set_new(
		        o, "rows_per_second",
		        json_real(t->seconds > 0
		                          ? (double)t->created / t->seconds
		                          : 0));
		json_object_set_new(tables, t->name, o);
	}
	json_object_set_new(j, "tables", tables);
	a = json_array();
	for (int i = 0; i < r->n_st; i++)
		json_array_append_new(
		        a, json_pack("{s:s, s:s, s:I, s:I}", "table",
		                     r->st[i].table ? r->st[i].table : "",
		                     "status", r->st[i].status, "legacy",
		                     (json_int_t)r->st[i].source, "parley",
		                     (json_int_t)r->st[i].parley));
	json_object_set_new(j, "statuses", a);
	if (src != NULL) {
		a = json_array();
		for (size_t i = 0; i < src->n_merges; i++) {
			const imp_contact *x =
			        &src->contacts[src->merges[i].from];
			const imp_contact *y =
			        &src->contacts[src->merges[i].into];
			json_array_append_new(
			        a,
			        json_pack("{s:s, s:s, s:s, s:s, s:s}",
			                  "legacy_id", x->id, "phone", x->phone,
			                  "into_legacy_id", y->id, "into_phone",
			                  y->phone, "e164", y->e164));
		}
		json_object_set_new(j, "merged_contacts", a);
		json_object_set_new(j, "messages_without_contact",
		                    json_integer((json_int_t)src->orphans));
		a = json_array();
		for (size_t i = 0; i < src->n_orphan_threads; i++)
			json_array_append_new(
			        a, json_string(src->orphan_threads[i]));
		json_object_set_new(j, "threads_without_contact", a);
		a = json_array();
		for (size_t i = 0; i < src->n_problems; i++)
			json_array_append_new(a, json_string(src->problems[i]));
		json_object_set_new(j, "problems", a);
	}
	a = json_array();
	for (size_t i = 0; i < r->n_mismatches; i++)
		json_array_append_new(a, json_string(r->mismatches[i]));
	json_object_set_new(j, "mismatches", a);
	a = json_array();
	for (size_t i = 0; i < r->n_bad_rows; i++)
		json_array_append_new(
		        a, json_pack("{s:s, s:s, s:s}", "table",
		                     r->bad_rows[i].table, "legacy_id",
		                     r->bad_rows[i].legacy_id, "problem",
		                     r->bad_rows[i].problem));
	json_object_set_new(j, "mismatched_rows", a);
	json_object_set_new(j, "mismatched_rows_total",
	                    json_integer(r->bad_rows_total));
	s = json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS);
	json_decref(j);
	return s;
}
