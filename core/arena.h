/* Arenas own memory: a bump allocator over a few large chunks on one device. Tensors never own their
 * memory; an arena frees everything at once on reset or destroy.
 *
 * Two regions per arena: metadata (tensor structs, tape nodes; always host memory) and data (the
 * arena's device). When a step overflows the first chunk, more chunks are added; the next reset merges
 * them into one chunk large enough for the whole step, so from the second step on a step that repeats
 * itself makes no system allocation at all (`system_allocs` stops growing, which tests check). */
#ifndef CG_ARENA_H
#define CG_ARENA_H

#include <stddef.h>
#include <stdint.h>

#include "core/device.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cg_arena cg_arena;

typedef struct cg_arena_stats {
    size_t used;          /* data bytes handed out since the last reset (including alignment padding) */
    size_t peak;          /* the most data bytes in use at once since creation */
    size_t reserved;      /* data bytes held in chunks */
    size_t meta_used;     /* metadata bytes in use */
    size_t meta_reserved; /* metadata bytes held in chunks */
    uint64_t system_allocs; /* chunk allocations made so far (malloc/cudaMalloc calls) */
    uint64_t resets;
} cg_arena_stats;

/* chunk_bytes: the size of the first data chunk (0 picks 64 MiB on the CPU, 256 MiB on a GPU). Chunks
 * are allocated lazily, on the first allocation. */
cg_arena *cg_arena_create(const char *name, cg_device device, size_t chunk_bytes);
void cg_arena_destroy(cg_arena *a);

/* Data memory on the arena's device, aligned to `align` (a power of two; 0 means 64). */
void *cg_arena_alloc(cg_arena *a, size_t nbytes, size_t align);
/* Host memory for metadata, zero-filled. */
void *cg_arena_alloc_meta(cg_arena *a, size_t nbytes);
/* A position in the arena: cg_arena_rewind frees everything allocated after the mark (for evaluation
 * loops and gradient checks that run many throw-away forwards inside one step). */
typedef struct cg_arena_mark {
    void *data_chunk, *meta_chunk;
    size_t data_chunk_used, meta_chunk_used;
    size_t data_used, meta_used;
} cg_arena_mark;
cg_arena_mark cg_arena_get_mark(const cg_arena *a);
void cg_arena_rewind(cg_arena *a, cg_arena_mark m);

/* Frees everything allocated from the arena at once. */
void cg_arena_reset(cg_arena *a);

cg_device cg_arena_device(const cg_arena *a);
const char *cg_arena_name(const cg_arena *a);
cg_arena_stats cg_arena_get_stats(const cg_arena *a);

#ifdef __cplusplus
}
#endif
#endif
