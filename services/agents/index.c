// The retrieval engine's in-process index of one knowledge base (issue 5),
// free of sockets and SQL: built once from the base's active entries, then
// read-only and shared by every worker (reference counted), replaced when
// the base's content_version moves.
//
// Terms are the normalised words (agents_text_normalize) minus stop words.
// An inverted index maps each term to its postings (entry, weighted term
// frequency: question and keywords 1.0, answer 0.3) for BM25 weights, and
// a character-trigram index over the vocabulary (pg_trgm's padding: "  w ")
// maps a misspelt query word to the terms it resembles (the share of its
// trigrams a term has, as pg_trgm's word_similarity, >= 0.5; best 8),
// which then count with that weight. A
// query only touches the postings of its terms and their neighbours: the
// best 64 entries by BM25 are scored
//   0.55 * coverage: mean over query words of their best match (1 exact,
//          else the trigram similarity) among the entry's question and
//          keyword terms
// + 0.30 * trigram similarity of the whole query and the question
// + 0.15 * bm25 / (bm25 + 10)
// and the best k are returned, ties by id.
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agents.h"

#define ANSWER_WEIGHT   0.3f
#define BM25_K1         1.2f
#define BM25_B          0.75f
#define FUZZY_MIN       0.5
#define FUZZY_MAX       8
#define CANDIDATES      64
#define MAX_QUERY_TERMS 32

// While building, tf is the weighted term frequency; once built, the
// posting's BM25 term weight, tf * (k1 + 1) / (tf + k1 * (1 - b + b * len /
// avglen)), so that a query adds idf * weight per posting and reads no
// entry's length.
typedef struct ix_post {
	uint32_t doc;
	float tf;
} ix_post;

typedef struct ix_doc {
	const char *id, *question, *answer, *intent;
	uint32_t tri_off, tri_n; // the question's trigram set in ix->qtri
	uint32_t trm_off,
	        trm_n; // question+keyword terms (sorted) in ix->dterms
	float len;     // weighted length in terms
} ix_doc;

struct agents_index {
	atomic_int refs;
	int64_t version;
	pl_arena strings;
	size_t n_docs;
	ix_doc *docs;
	uint32_t *qtri;   // all question trigram sets
	uint32_t *dterms; // all question+keyword term lists
	float avglen;
	// Vocabulary.
	size_t n_terms;
	const char **terms;
	uint32_t *tlen;
	bool *stop;
	uint32_t *post_off; // n_terms + 1
	ix_post *posts;
	uint32_t *ntri; // trigrams per term
	uint32_t *hash; // term id + 1, open addressing
	size_t hash_cap;
	// Trigram -> terms, sorted by trigram.
	size_t n_tkeys;
	uint32_t *tkeys, *toff; // toff: n_tkeys + 1
	uint32_t *tterms;
};

// ---------------------------------------------------------------------------
// Helpers

static int
grow(void **p, size_t *cap, size_t need, size_t size)
{
	size_t nc;
	void *np;

	if (need <= *cap)
		return 0;
	nc = *cap ? *cap : 64;
	while (nc < need)
		nc *= 2;
	if ((np = realloc(*p, nc * size)) == NULL)
		return -1;
	*p = np;
	*cap = nc;
	return 0;
}

static uint32_t
hash_str(const char *s, size_t n)
{
	uint32_t h = 2166136261u;

	for (size_t i = 0; i < n; i++) {
		h ^= (unsigned char)s[i];
		h *= 16777619u;
	}
	return h;
}

static int
cmp_u32(const void *x, const void *y)
{
	uint32_t a = *(const uint32_t *)x, b = *(const uint32_t *)y;
	return a < b ? -1 : a > b;
}

// Sorts and de-duplicates v[0..n); returns the new count.
static size_t
uniq_u32(uint32_t *v, size_t n)
{
	size_t o = 0;

	if (n == 0)
		return 0;
	qsort(v, n, sizeof(*v), cmp_u32);
	for (size_t i = 1; i < n; i++) {
		if (v[i] != v[o])
			v[++o] = v[i];
	}
	return o + 1;
}

// The trigrams of one word as pg_trgm pads it ("  w "): n + 1 of them,
// three bytes each packed in a uint32, appended at out (room for n + 1).
static size_t
word_trigrams(const char *w, size_t n, uint32_t *out)
{
	size_t k = 0;

	for (size_t i = 0; i < n + 1; i++) {
		unsigned char c[3];

		for (size_t j = 0; j < 3; j++) {
			size_t at = i + j; // position in "  " w " "
			c[j] = at < 2       ? ' '
			       : at - 2 < n ? (unsigned char)w[at - 2]
			                    : ' ';
		}
		out[k++] = (uint32_t)c[0] << 16 | (uint32_t)c[1] << 8 | c[2];
	}
	return k;
}

// The trigram set of a normalised text (every word), sorted, unique. out
// has room for strlen(s) * 2 + 2.
static size_t
text_trigrams(const char *s, uint32_t *out)
{
	size_t k = 0;

	for (const char *p = s; *p != '\0';) {
		const char *e = strchr(p, ' ');
		size_t n = e ? (size_t)(e - p) : strlen(p);

		if (n > 0)
			k += word_trigrams(p, n, out + k);
		p += n;
		while (*p == ' ')
			p++;
	}
	return uniq_u32(out, k);
}

// |a ∩ b| / |a ∪ b| of two sorted sets.
static double
jaccard(const uint32_t *a, size_t na, const uint32_t *b, size_t nb)
{
	size_t i = 0, j = 0, both = 0;

	if (na == 0 || nb == 0)
		return 0;
	// Without branches on the comparisons: which side moves is as good
	// as random, and the mispredicted branches were half of a search's
	// time (perf, bench_agents' engine run).
	while (i < na && j < nb) {
		uint32_t x = a[i], y = b[j];

		both += x == y;
		i += x <= y;
		j += y <= x;
	}
	return (double)both / (double)(na + nb - both);
}

static bool
has_u32(const uint32_t *v, size_t n, uint32_t x)
{
	size_t lo = 0, hi = n;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (v[mid] == x)
			return true;
		if (v[mid] < x)
			lo = mid + 1;
		else
			hi = mid;
	}
	return false;
}

// The term id of w[0..n), or -1.
static int64_t
term_find(const agents_index *ix, const char *w, size_t n)
{
	size_t mask = ix->hash_cap - 1;

	if (ix->hash_cap == 0)
		return -1;
	for (size_t h = hash_str(w, n) & mask;; h = (h + 1) & mask) {
		uint32_t v = ix->hash[h];

		if (v == 0)
			return -1;
		if (ix->tlen[v - 1] == n && memcmp(ix->terms[v - 1], w, n) == 0)
			return v - 1;
	}
}

// ---------------------------------------------------------------------------
// Build

typedef struct builder {
	agents_index *ix;
	size_t terms_cap, hash_used;
	// (term, doc, tf) triples, before they become postings.
	uint32_t *pt, *pd;
	float *pf;
	size_t np, np_cap, pf_cap, pd_cap;
} builder;

static int
hash_put(agents_index *ix, uint32_t id)
{
	size_t mask = ix->hash_cap - 1;
	size_t h = hash_str(ix->terms[id], ix->tlen[id]) & mask;

	while (ix->hash[h] != 0)
		h = (h + 1) & mask;
	ix->hash[h] = id + 1;
	return 0;
}

// The id of term w[0..n), added when new; -1 on OOM.
static int64_t
term_add(builder *b, const char *w, size_t n)
{
	agents_index *ix = b->ix;
	int64_t id = term_find(ix, w, n);
	char *s;

	if (id >= 0)
		return id;
	if ((b->hash_used + 1) * 2 > ix->hash_cap) {
		size_t nc = ix->hash_cap ? ix->hash_cap * 2 : 1024;
		uint32_t *nh = calloc(nc, sizeof(*nh));

		if (nh == NULL)
			return -1;
		free(ix->hash);
		ix->hash = nh;
		ix->hash_cap = nc;
		for (size_t i = 0; i < ix->n_terms; i++)
			hash_put(ix, (uint32_t)i);
	}
	if (ix->n_terms == b->terms_cap) {
		size_t cap = b->terms_cap;
		if (grow((void **)&ix->terms, &cap, ix->n_terms + 1,
		         sizeof(*ix->terms)) != 0)
			return -1;
		cap = b->terms_cap;
		if (grow((void **)&ix->tlen, &cap, ix->n_terms + 1,
		         sizeof(*ix->tlen)) != 0)
			return -1;
		cap = b->terms_cap;
		if (grow((void **)&ix->stop, &cap, ix->n_terms + 1,
		         sizeof(*ix->stop)) != 0)
			return -1;
		b->terms_cap = cap;
	}
	if ((s = pl_arena_strndup(&ix->strings, w, n)) == NULL)
		return -1;
	id = (int64_t)ix->n_terms++;
	ix->terms[id] = s;
	ix->tlen[id] = (uint32_t)n;
	ix->stop[id] = agents_stop_word(w, n);
	hash_put(ix, (uint32_t)id);
	b->hash_used++;
	return id;
}

// Adds the terms of text (weight w) of doc d to the triples; with
// doc_terms, also collects the distinct term ids into *dt.
static int
add_text(builder *b, uint32_t d, const char *text, float w, float *len,
         uint32_t **dt, size_t *ndt, size_t *dtcap)
{
	for (const char *p = text; *p != '\0';) {
		const char *e = strchr(p, ' ');
		size_t n = e ? (size_t)(e - p) : strlen(p);
		int64_t t;

		if (n > 0) {
			if ((t = term_add(b, p, n)) < 0)
				return -1;
			if (!b->ix->stop[t]) {
				size_t c1 = b->np_cap, c2 = b->pd_cap,
				       c3 = b->pf_cap;
				if (grow((void **)&b->pt, &c1, b->np + 1,
				         sizeof(*b->pt)) != 0 ||
				    grow((void **)&b->pd, &c2, b->np + 1,
				         sizeof(*b->pd)) != 0 ||
				    grow((void **)&b->pf, &c3, b->np + 1,
				         sizeof(*b->pf)) != 0)
					return -1;
				b->np_cap = c1;
				b->pd_cap = c2;
				b->pf_cap = c3;
				b->pt[b->np] = (uint32_t)t;
				b->pd[b->np] = d;
				b->pf[b->np++] = w;
				*len += w;
				if (dt != NULL) {
					if (grow((void **)dt, dtcap, *ndt + 1,
					         sizeof(**dt)) != 0)
						return -1;
					(*dt)[(*ndt)++] = (uint32_t)t;
				}
			}
		}
		p += n;
		while (*p == ' ')
			p++;
	}
	return 0;
}

typedef struct tri_pair {
	uint32_t tri, term;
} tri_pair;

static int
cmp_pair(const void *x, const void *y)
{
	const tri_pair *a = x, *b = y;
	if (a->tri != b->tri)
		return a->tri < b->tri ? -1 : 1;
	return a->term < b->term ? -1 : a->term > b->term;
}

// Postings from the triples (counting sort by term, tf merged per doc),
// and the vocabulary's trigram index.
static int
finish(builder *b)
{
	agents_index *ix = b->ix;
	size_t nt = ix->n_terms, o = 0, np = 0, cap = 0;
	uint32_t *cnt = calloc(nt + 1, sizeof(*cnt)), tri[512];
	ix_post *tmp = malloc((b->np + 1) * sizeof(*tmp));
	tri_pair *pairs = NULL;

	ix->post_off = calloc(nt + 1, sizeof(*ix->post_off));
	ix->ntri = calloc(nt + 1, sizeof(*ix->ntri));
	if (cnt == NULL || tmp == NULL || ix->post_off == NULL ||
	    ix->ntri == NULL)
		goto fail;
	for (size_t i = 0; i < b->np; i++)
		cnt[b->pt[i]]++;
	for (size_t t = 0; t < nt; t++) {
		ix->post_off[t] = (uint32_t)o;
		o += cnt[t];
		cnt[t] = ix->post_off[t];
	}
	ix->post_off[nt] = (uint32_t)o;
	// Triples are in doc order, so each term's run is in doc order too.
	for (size_t i = 0; i < b->np; i++)
		tmp[cnt[b->pt[i]]++] = (ix_post){ b->pd[i], b->pf[i] };
	// Merge repeated (term, doc) into one posting with the summed tf.
	if ((ix->posts = malloc((o + 1) * sizeof(*ix->posts))) == NULL)
		goto fail;
	for (size_t t = 0; t < nt; t++) {
		uint32_t s = ix->post_off[t], e = ix->post_off[t + 1];

		ix->post_off[t] = (uint32_t)np;
		for (uint32_t i = s; i < e; i++) {
			if (np > ix->post_off[t] &&
			    ix->posts[np - 1].doc == tmp[i].doc)
				ix->posts[np - 1].tf += tmp[i].tf;
			else
				ix->posts[np++] = tmp[i];
		}
	}
	ix->post_off[nt] = (uint32_t)np;
	for (size_t i = 0; i < np; i++) {
		ix_post *ps = &ix->posts[i];
		float norm =
		        BM25_K1 * (1 - BM25_B +
		                   BM25_B * ix->docs[ps->doc].len / ix->avglen);

		ps->tf = ps->tf * (BM25_K1 + 1) / (ps->tf + norm);
	}
	// Trigram index over the vocabulary (stop words left out).
	o = 0;
	for (size_t t = 0; t < nt; t++) {
		size_t n = ix->tlen[t], k;

		if (ix->stop[t] || n + 1 > sizeof(tri) / sizeof(tri[0]))
			continue;
		k = uniq_u32(tri, word_trigrams(ix->terms[t], n, tri));
		ix->ntri[t] = (uint32_t)k;
		if (grow((void **)&pairs, &cap, o + k, sizeof(*pairs)) != 0)
			goto fail;
		for (size_t i = 0; i < k; i++)
			pairs[o++] = (tri_pair){ tri[i], (uint32_t)t };
	}
	if (o > 0)
		qsort(pairs, o, sizeof(*pairs), cmp_pair);
	ix->tkeys = malloc((o + 1) * sizeof(*ix->tkeys));
	ix->toff = malloc((o + 2) * sizeof(*ix->toff));
	ix->tterms = malloc((o + 1) * sizeof(*ix->tterms));
	if (ix->tkeys == NULL || ix->toff == NULL || ix->tterms == NULL)
		goto fail;
	for (size_t i = 0; i < o; i++) {
		if (i == 0 || pairs[i].tri != pairs[i - 1].tri) {
			ix->tkeys[ix->n_tkeys] = pairs[i].tri;
			ix->toff[ix->n_tkeys++] = (uint32_t)i;
		}
		ix->tterms[i] = pairs[i].term;
	}
	ix->toff[ix->n_tkeys] = (uint32_t)o;
	free(pairs);
	free(cnt);
	free(tmp);
	return 0;
fail:
	free(pairs);
	free(cnt);
	free(tmp);
	return -1;
}

static void
index_free(agents_index *ix)
{
	if (ix == NULL)
		return;
	free(ix->docs);
	free(ix->qtri);
	free(ix->dterms);
	free(ix->terms);
	free(ix->tlen);
	free(ix->stop);
	free(ix->post_off);
	free(ix->posts);
	free(ix->ntri);
	free(ix->hash);
	free(ix->tkeys);
	free(ix->toff);
	free(ix->tterms);
	pl_arena_fini(&ix->strings);
	free(ix);
}

agents_index *
agents_index_build(const agents_ix_src *src, size_t n, int64_t version)
{
	agents_index *ix = calloc(1, sizeof(*ix));
	builder b = { 0 };
	size_t tri_cap = 0, tri_n = 0, dt_cap = 0, dt_n = 0;
	double total = 0;

	if (ix == NULL)
		return NULL;
	atomic_init(&ix->refs, 1);
	ix->version = version;
	pl_arena_init(&ix->strings, 64 * 1024, 0);
	b.ix = ix;
	if ((ix->docs = calloc(n + 1, sizeof(*ix->docs))) == NULL)
		goto fail;
	for (size_t i = 0; i < n; i++) {
		ix_doc *d = &ix->docs[i];
		size_t ql = strlen(src[i].question_norm), k;
		float len = 0;

		d->id = pl_arena_strdup(&ix->strings, src[i].id);
		d->question = pl_arena_strdup(&ix->strings, src[i].question);
		d->answer = pl_arena_strdup(&ix->strings, src[i].answer);
		d->intent = pl_arena_strdup(&ix->strings, src[i].intent);
		if (d->id == NULL || d->question == NULL || d->answer == NULL ||
		    d->intent == NULL)
			goto fail;
		if (grow((void **)&ix->qtri, &tri_cap, tri_n + ql * 2 + 2,
		         sizeof(*ix->qtri)) != 0)
			goto fail;
		k = text_trigrams(src[i].question_norm, ix->qtri + tri_n);
		d->tri_off = (uint32_t)tri_n;
		d->tri_n = (uint32_t)k;
		tri_n += k;
		d->trm_off = (uint32_t)dt_n;
		if (add_text(&b, (uint32_t)i, src[i].question_norm, 1.0f, &len,
		             &ix->dterms, &dt_n, &dt_cap) != 0 ||
		    add_text(&b, (uint32_t)i, src[i].keywords_norm, 1.0f, &len,
		             &ix->dterms, &dt_n, &dt_cap) != 0 ||
		    add_text(&b, (uint32_t)i, src[i].answer_norm, ANSWER_WEIGHT,
		             &len, NULL, NULL, NULL) != 0)
			goto fail;
		d->trm_n = (uint32_t)uniq_u32(ix->dterms + d->trm_off,
		                              dt_n - d->trm_off);
		dt_n = d->trm_off + d->trm_n;
		d->len = len;
		total += len;
	}
	ix->n_docs = n;
	ix->avglen = n > 0 && total > 0 ? (float)(total / (double)n) : 1.0f;
	if (finish(&b) != 0)
		goto fail;
	free(b.pt);
	free(b.pd);
	free(b.pf);
	return ix;
fail:
	free(b.pt);
	free(b.pd);
	free(b.pf);
	index_free(ix);
	return NULL;
}

agents_index *
agents_index_ref(agents_index *ix)
{
	atomic_fetch_add(&ix->refs, 1);
	return ix;
}

void
agents_index_release(agents_index *ix)
{
	if (ix != NULL && atomic_fetch_sub(&ix->refs, 1) == 1)
		index_free(ix);
}

int64_t
agents_index_version(const agents_index *ix)
{
	return ix->version;
}

size_t
agents_index_size(const agents_index *ix)
{
	return ix->n_docs;
}

// ---------------------------------------------------------------------------
// Search

typedef struct qexp {
	uint32_t term;
	float w;
} qexp;

typedef struct qword {
	qexp e[FUZZY_MAX + 1];
	size_t n;
} qword;

typedef struct cand {
	uint32_t doc;
	float bm;
	double score;
} cand;

// The exact term and the closest terms by trigram similarity of word
// w[0..n) into q; cnt is a zeroed counter per term, left zeroed.
static void
expand(const agents_index *ix, const char *w, size_t n, uint16_t *cnt,
       uint32_t *touched, qword *q)
{
	int64_t t = term_find(ix, w, n);
	uint32_t tri[512];
	double keys[FUZZY_MAX + 1] = { 0 };
	size_t k, nt = 0;

	q->n = 0;
	if (t >= 0 && ix->stop[t])
		t = -1;
	if (t >= 0) {
		keys[0] = 2;
		q->e[q->n++] = (qexp){ (uint32_t)t, 1.0f };
	}
	if (n < 3 || n + 1 > sizeof(tri) / sizeof(tri[0]))
		return;
	k = uniq_u32(tri, word_trigrams(w, n, tri));
	for (size_t i = 0; i < k; i++) {
		size_t lo = 0, hi = ix->n_tkeys;

		while (lo < hi) {
			size_t mid = (lo + hi) / 2;
			if (ix->tkeys[mid] < tri[i])
				lo = mid + 1;
			else
				hi = mid;
		}
		if (lo == ix->n_tkeys || ix->tkeys[lo] != tri[i])
			continue;
		for (uint32_t j = ix->toff[lo]; j < ix->toff[lo + 1]; j++) {
			uint32_t term = ix->tterms[j];
			if (cnt[term]++ == 0)
				touched[nt++] = term;
		}
	}
	for (size_t i = 0; i < nt; i++) {
		uint32_t term = touched[i];
		// As pg_trgm's word_similarity: the share of the query word's
		// trigrams the term has ("open" in "opening" is 0.8); Jaccard
		// breaks ties towards the closer length.
		double ws = (double)cnt[term] / (double)k;
		double jac = (double)cnt[term] /
		             (double)(k + ix->ntri[term] - cnt[term]);
		double key = ws + 0.1 * jac;

		cnt[term] = 0;
		if (ws < FUZZY_MIN || (int64_t)term == t)
			continue;
		if (q->n < FUZZY_MAX + 1) {
			keys[q->n] = key;
			q->e[q->n++] = (qexp){ term, (float)ws };
		} else {
			// Replace the weakest neighbour (never the exact term).
			size_t min = t >= 0 ? 1 : 0;
			for (size_t j = min; j < q->n; j++) {
				if (keys[j] < keys[min])
					min = j;
			}
			if (keys[min] < key) {
				keys[min] = key;
				q->e[min] = (qexp){ term, (float)ws };
			}
		}
	}
}

static int
cmp_cand_score(const cand *a, const cand *b, const agents_index *ix)
{

	if (a->score != b->score)
		return a->score > b->score ? -1 : 1;
	return strcmp(ix->docs[a->doc].id, ix->docs[b->doc].id);
}

// A small insertion sort (the candidate list is at most CANDIDATES long).
static void
sort_by_score(const agents_index *ix, cand *c, size_t n)
{
	for (size_t i = 1; i < n; i++) {
		cand x = c[i];
		size_t j = i;

		while (j > 0 && cmp_cand_score(&x, &c[j - 1], ix) < 0) {
			c[j] = c[j - 1];
			j--;
		}
		c[j] = x;
	}
}

size_t
agents_index_search(const agents_index *ix, pl_arena *a, const char *qnorm,
                    size_t k, agents_ix_hit *out)
{
	qword *words;
	size_t nw = 0, ql = strlen(qnorm), nqt, ntouched = 0, nc = 0;
	const char *seen[MAX_QUERY_TERMS];
	size_t seen_len[MAX_QUERY_TERMS];
	uint16_t *cnt;
	uint32_t *touched, *qtri, *dtouched;
	float *acc;
	cand *c;
	bool any_light = false;
	double N = (double)ix->n_docs;

	if (ix->n_docs == 0 || k == 0)
		return 0;
	words = pl_arena_alloc(a, sizeof(*words) * MAX_QUERY_TERMS);
	cnt = pl_arena_zalloc(a, sizeof(*cnt) * (ix->n_terms + 1));
	touched = pl_arena_alloc(a, sizeof(*touched) * (ix->n_terms + 1));
	qtri = pl_arena_alloc(a, sizeof(*qtri) * (ql * 2 + 2));
	acc = pl_arena_zalloc(a, sizeof(*acc) * ix->n_docs);
	dtouched = pl_arena_alloc(a, sizeof(*dtouched) * ix->n_docs);
	c = pl_arena_alloc(a, sizeof(*c) * (CANDIDATES + 1));
	if (words == NULL || cnt == NULL || touched == NULL || qtri == NULL ||
	    acc == NULL || dtouched == NULL || c == NULL)
		return 0;

	// The query's content words, each with its exact term and neighbours.
	for (const char *p = qnorm; *p != '\0' && nw < MAX_QUERY_TERMS;) {
		const char *e = strchr(p, ' ');
		size_t n = e ? (size_t)(e - p) : strlen(p);
		bool dup = false;

		for (size_t i = 0; i < nw; i++)
			dup = dup ||
			      (seen_len[i] == n && memcmp(seen[i], p, n) == 0);
		if (n > 0 && !dup && !agents_stop_word(p, n) &&
		    !(n == 1 && !(*p >= '0' && *p <= '9'))) {
			seen[nw] = p;
			seen_len[nw] = n;
			expand(ix, p, n, cnt, touched, &words[nw]);
			nw++;
		}
		p += n;
		while (*p == ' ')
			p++;
	}
	if (nw == 0)
		return 0;

	// BM25 over the postings. Terms in more than half of the entries
	// carry almost no weight: they only gather candidates when nothing
	// rarer does (they still count in the coverage below).
	for (size_t i = 0; i < nw; i++) {
		for (size_t j = 0; j < words[i].n; j++) {
			uint32_t t = words[i].e[j].term;
			if (ix->post_off[t + 1] - ix->post_off[t] <= N / 2)
				any_light = true;
		}
	}
	for (size_t i = 0; i < nw; i++) {
		for (size_t j = 0; j < words[i].n; j++) {
			uint32_t t = words[i].e[j].term;
			uint32_t s = ix->post_off[t], e = ix->post_off[t + 1];
			double df = e - s;
			float idf, wt;

			if (df == 0 || (any_light && df > N / 2))
				continue;
			idf = (float)log1p((N - df + 0.5) / (df + 0.5));
			wt = idf * words[i].e[j].w;
			for (uint32_t p = s; p < e; p++) {
				const ix_post *ps = &ix->posts[p];

				if (acc[ps->doc] == 0)
					dtouched[ntouched++] = ps->doc;
				acc[ps->doc] += wt * ps->tf;
			}
		}
	}
	if (ntouched == 0)
		return 0;

	// The best CANDIDATES by BM25 (a bounded insertion list).
	for (size_t i = 0; i < ntouched; i++) {
		uint32_t d = dtouched[i];
		float bm = acc[d];
		size_t j;

		if (nc == CANDIDATES && bm <= c[nc - 1].bm)
			continue;
		j = nc < CANDIDATES ? nc++ : nc - 1;
		while (j > 0 && c[j - 1].bm < bm) {
			c[j] = c[j - 1];
			j--;
		}
		c[j] = (cand){ d, bm, 0 };
	}

	// Final scores.
	nqt = text_trigrams(qnorm, qtri);
	for (size_t i = 0; i < nc; i++) {
		const ix_doc *d = &ix->docs[c[i].doc];
		const uint32_t *dt = ix->dterms + d->trm_off;
		double cov = 0, sim;

		for (size_t w = 0; w < nw; w++) {
			float best = 0;
			for (size_t j = 0; j < words[w].n; j++) {
				if (words[w].e[j].w > best &&
				    has_u32(dt, d->trm_n, words[w].e[j].term))
					best = words[w].e[j].w;
			}
			cov += best;
		}
		cov /= (double)nw;
		sim = jaccard(qtri, nqt, ix->qtri + d->tri_off, d->tri_n);
		c[i].score = 0.55 * cov + 0.30 * sim +
		             0.15 * (c[i].bm / (c[i].bm + 10.0));
		if (c[i].score > 1)
			c[i].score = 1;
	}
	sort_by_score(ix, c, nc);
	if (k > nc)
		k = nc;
	for (size_t i = 0; i < k; i++) {
		const ix_doc *d = &ix->docs[c[i].doc];
		out[i] = (agents_ix_hit){ d->id, d->question, d->answer,
			                  d->intent, c[i].score };
	}
	return k;
}

// ---------------------------------------------------------------------------
// The cache: one index per (tenant, knowledge base), shared by the workers.

typedef struct cache_slot {
	char key[80]; // tenant/kb
	agents_index *ix;
	uint64_t used;
} cache_slot;

struct agents_cache {
	pthread_mutex_t mtx;   // the slots (held for a lookup only)
	pthread_mutex_t build; // one build at a time
	cache_slot *slots;
	size_t n, max;
	uint64_t clock;
	atomic_long builds;
};

agents_cache *
agents_cache_new(size_t max)
{
	agents_cache *c = calloc(1, sizeof(*c));

	if (c == NULL)
		return NULL;
	c->max = max > 0 ? max : 1;
	if ((c->slots = calloc(c->max, sizeof(*c->slots))) == NULL) {
		free(c);
		return NULL;
	}
	pthread_mutex_init(&c->mtx, NULL);
	pthread_mutex_init(&c->build, NULL);
	return c;
}

void
agents_cache_free(agents_cache *c)
{
	if (c == NULL)
		return;
	for (size_t i = 0; i < c->n; i++)
		agents_index_release(c->slots[i].ix);
	pthread_mutex_destroy(&c->mtx);
	pthread_mutex_destroy(&c->build);
	free(c->slots);
	free(c);
}

static void
cache_key(char *key, size_t n, const char *tenant, const char *kb)
{
	snprintf(key, n, "%s/%s", tenant, kb);
}

agents_index *
agents_cache_get(agents_cache *c, const char *tenant, const char *kb,
                 int64_t version)
{
	char key[80];
	agents_index *ix = NULL;

	cache_key(key, sizeof(key), tenant, kb);
	pthread_mutex_lock(&c->mtx);
	for (size_t i = 0; i < c->n; i++) {
		if (strcmp(c->slots[i].key, key) == 0) {
			// A newer index than asked for is fine: versions only
			// grow.
			if (c->slots[i].ix->version >= version) {
				ix = agents_index_ref(c->slots[i].ix);
				c->slots[i].used = ++c->clock;
			}
			break;
		}
	}
	pthread_mutex_unlock(&c->mtx);
	return ix;
}

void
agents_cache_put(agents_cache *c, const char *tenant, const char *kb,
                 agents_index *ix)
{
	char key[80];
	agents_index *old = NULL;
	size_t at = c->n;

	cache_key(key, sizeof(key), tenant, kb);
	pthread_mutex_lock(&c->mtx);
	for (size_t i = 0; i < c->n; i++) {
		if (strcmp(c->slots[i].key, key) == 0) {
			at = i;
			break;
		}
	}
	if (at < c->n && c->slots[at].ix->version > ix->version) {
		pthread_mutex_unlock(&c->mtx);
		return; // someone installed a newer one
	}
	if (at == c->n && c->n == c->max) {
		// Evict the least recently used.
		at = 0;
		for (size_t i = 1; i < c->n; i++) {
			if (c->slots[i].used < c->slots[at].used)
				at = i;
		}
	} else if (at == c->n) {
		c->n++;
	}
	old = c->slots[at].ix;
	snprintf(c->slots[at].key, sizeof(c->slots[at].key), "%s", key);
	c->slots[at].ix = agents_index_ref(ix);
	c->slots[at].used = ++c->clock;
	atomic_fetch_add(&c->builds, 1);
	pthread_mutex_unlock(&c->mtx);
	agents_index_release(old);
}

void
agents_cache_build_lock(agents_cache *c)
{
	pthread_mutex_lock(&c->build);
}

void
agents_cache_build_unlock(agents_cache *c)
{
	pthread_mutex_unlock(&c->build);
}

long
agents_cache_builds(agents_cache *c)
{
	return atomic_load(&c->builds);
}
