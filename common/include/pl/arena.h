// A bump allocator for one request: everything a call allocates lives here
// and is released at once by pl_arena_reset(). Not thread-safe. Never copy a
// pl_arena by value: its protobuf-c allocator points at the arena itself.
#ifndef PL_ARENA_H
#define PL_ARENA_H

#include <stdarg.h>
#include <stddef.h>

#include <protobuf-c/protobuf-c.h>

typedef struct pl_arena_block pl_arena_block;

typedef struct pl_arena {
	pl_arena_block *head;  // current block, newest first
	size_t size;           // bytes handed out since the last reset
	size_t limit;          // 0 = unlimited; past it allocations fail
	size_t blksize;        // size of ordinary blocks
	ProtobufCAllocator pb; // protobuf-c allocator bound to this arena
} pl_arena;

// Initialises an arena in caller memory. blksize 0 picks 16 KiB; limit 0
// means no limit.
void pl_arena_init(pl_arena *a, size_t blksize, size_t limit);

// Frees every block; the arena may be initialised again.
void pl_arena_fini(pl_arena *a);

// Forgets every allocation but keeps the first block for reuse.
void pl_arena_reset(pl_arena *a);

// Returns n bytes aligned for any type, or NULL past the limit / on OOM.
void *pl_arena_alloc(pl_arena *a, size_t n);

// Like pl_arena_alloc, zero-filled.
void *pl_arena_zalloc(pl_arena *a, size_t n);

// Copies n bytes and a terminating NUL; NULL on failure.
char *pl_arena_strndup(pl_arena *a, const char *s, size_t n);

// Copies a NUL-terminated string; NULL s gives NULL.
char *pl_arena_strdup(pl_arena *a, const char *s);

// printf into the arena.
char *pl_arena_printf(pl_arena *a, const char *fmt, ...)
        __attribute__((format(printf, 2, 3)));
char *pl_arena_vprintf(pl_arena *a, const char *fmt, va_list ap);

// The arena as a ProtobufCAllocator (free is a no-op). Never call
// __free_unpacked on a message unpacked with it.
static inline ProtobufCAllocator *
pl_arena_pb(pl_arena *a)
{
	return &a->pb;
}

#endif
