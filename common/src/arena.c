// A bump allocator: a list of blocks, newest first. Ordinary requests are
// carved from the head block; a request larger than a quarter of a block
// gets a block of its own so it wastes no room in the head.
#include <stdalign.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pl/arena.h"

#define ALIGN    (alignof(max_align_t))
#define DEFBLKSZ (16 * 1024)
#define MAXBLKSZ (SIZE_MAX / 4)

struct pl_arena_block {
	pl_arena_block *next;
	size_t cap;  // bytes in data
	size_t used; // bytes of data handed out, a multiple of ALIGN
	alignas(max_align_t) unsigned char data[];
};

static void *
pb_alloc(void *data, size_t n)
{
	return pl_arena_alloc(data, n);
}

static void
pb_free(void *data, void *p)
{
	// Everything goes at reset.
	(void)data;
	(void)p;
}

void
pl_arena_init(pl_arena *a, size_t blksize, size_t limit)
{
	if (blksize == 0)
		blksize = DEFBLKSZ;
	if (blksize > MAXBLKSZ)
		blksize = MAXBLKSZ;
	// Keep ordinary blocks a whole number of alignment units.
	blksize = (blksize + ALIGN - 1) & ~(ALIGN - 1);
	a->head = NULL;
	a->size = 0;
	a->limit = limit;
	a->blksize = blksize;
	a->pb.alloc = pb_alloc;
	a->pb.free = pb_free;
	a->pb.allocator_data = a;
}

static void
free_list(pl_arena_block *b)
{
	while (b != NULL) {
		pl_arena_block *next = b->next;
		free(b);
		b = next;
	}
}

void
pl_arena_fini(pl_arena *a)
{
	free_list(a->head);
	a->head = NULL;
	a->size = 0;
}

void
pl_arena_reset(pl_arena *a)
{
	pl_arena_block *keep = NULL;
	pl_arena_block *b = a->head;

	// Keep one ordinary block (the oldest one, which was the first made);
	// an oversized block is never kept, so one huge request does not pin
	// its memory for the life of the arena.
	while (b != NULL) {
		pl_arena_block *next = b->next;
		if (b->cap == a->blksize) {
			if (keep != NULL)
				free(keep);
			keep = b;
		} else {
			free(b);
		}
		b = next;
	}
	if (keep != NULL) {
		keep->next = NULL;
		keep->used = 0;
	}
	a->head = keep;
	a->size = 0;
}

static pl_arena_block *
block_new(size_t cap)
{
	pl_arena_block *b;

	if (cap > SIZE_MAX - sizeof(*b))
		return NULL;
	b = malloc(sizeof(*b) + cap);
	if (b == NULL)
		return NULL;
	b->next = NULL;
	b->cap = cap;
	b->used = 0;
	return b;
}

static void *
alloc_slow(pl_arena *a, size_t need)
{
	pl_arena_block *b;

	if (need > a->blksize / 4) {
		b = block_new(need);
		if (b == NULL)
			return NULL;
		b->used = need;
		// Behind the head, so what is left of the head stays usable.
		if (a->head != NULL) {
			b->next = a->head->next;
			a->head->next = b;
		} else {
			a->head = b;
		}
		return b->data;
	}
	b = block_new(a->blksize);
	if (b == NULL)
		return NULL;
	b->next = a->head;
	a->head = b;
	b->used = need;
	return b->data;
}

void *
pl_arena_alloc(pl_arena *a, size_t n)
{
	pl_arena_block *b = a->head;
	size_t need;

	if (n == 0)
		n = 1; // a distinct pointer, as malloc would give
	if (n > SIZE_MAX - ALIGN)
		return NULL;
	if (a->limit != 0 && (n > a->limit || a->size > a->limit - n))
		return NULL;
	need = (n + ALIGN - 1) & ~(ALIGN - 1);

	void *p;
	if (b != NULL && b->cap - b->used >= need) {
		p = b->data + b->used;
		b->used += need;
	} else {
		p = alloc_slow(a, need);
		if (p == NULL)
			return NULL;
	}
	a->size += n;
	return p;
}

void *
pl_arena_zalloc(pl_arena *a, size_t n)
{
	void *p = pl_arena_alloc(a, n);

	if (p != NULL)
		memset(p, 0, n);
	return p;
}

char *
pl_arena_strndup(pl_arena *a, const char *s, size_t n)
{
	char *p;

	if (s == NULL || n == SIZE_MAX)
		return NULL;
	p = pl_arena_alloc(a, n + 1);
	if (p == NULL)
		return NULL;
	memcpy(p, s, n);
	p[n] = '\0';
	return p;
}

char *
pl_arena_strdup(pl_arena *a, const char *s)
{
	if (s == NULL)
		return NULL;
	return pl_arena_strndup(a, s, strlen(s));
}

char *
pl_arena_vprintf(pl_arena *a, const char *fmt, va_list ap)
{
	va_list ap2;
	int len;
	char *p;

	if (fmt == NULL)
		return NULL;
	va_copy(ap2, ap);
	len = vsnprintf(NULL, 0, fmt, ap2);
	va_end(ap2);
	if (len < 0)
		return NULL;
	p = pl_arena_alloc(a, (size_t)len + 1);
	if (p == NULL)
		return NULL;
	va_copy(ap2, ap);
	vsnprintf(p, (size_t)len + 1, fmt, ap2);
	va_end(ap2);
	return p;
}

char *
pl_arena_printf(pl_arena *a, const char *fmt, ...)
{
	va_list ap;
	char *p;

	va_start(ap, fmt);
	p = pl_arena_vprintf(a, fmt, ap);
	va_end(ap);
	return p;
}
