#include "core/arena.h"

#include <stdlib.h>
#include <string.h>

typedef struct chunk {
    struct chunk *next;
    char *base;
    size_t size;
    size_t used;
} chunk;

/* One bump region: a list of chunks, newest first. */
typedef struct region {
    chunk *chunks;
    cg_device device;
    size_t first_chunk_bytes;
    size_t used;     /* bytes handed out since the last reset */
    size_t peak;
    size_t reserved; /* bytes held in chunks */
    uint64_t system_allocs;
} region;

struct cg_arena {
    char name[64];
    cg_device device;
    region data;
    region meta;
    uint64_t resets;
};

static chunk *chunk_new(region *r, size_t size) {
    chunk *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->base = cg_device_malloc(r->device, size);
    if (!c->base) {
        free(c);
        return NULL;
    }
    c->size = size;
    r->reserved += size;
    r->system_allocs++;
    return c;
}

static void chunks_free(region *r) {
    for (chunk *c = r->chunks, *next; c; c = next) {
        next = c->next;
        cg_device_free(r->device, c->base);
        free(c);
    }
    r->chunks = NULL;
    r->reserved = 0;
}

static void *region_alloc(region *r, size_t nbytes, size_t align, const char *arena_name) {
    if (nbytes == 0) nbytes = 1; /* distinct non-NULL pointers for empty tensors */
    chunk *c = r->chunks;
    if (c) {
        uintptr_t p = (uintptr_t)(c->base + c->used);
        size_t pad = (size_t)(((p + align - 1) & ~(uintptr_t)(align - 1)) - p);
        if (c->used + pad + nbytes <= c->size) {
            void *out = c->base + c->used + pad;
            c->used += pad + nbytes;
            r->used += pad + nbytes;
            if (r->used > r->peak) r->peak = r->used;
            return out;
        }
    }
    /* A new chunk, at least as large as the first one and as this request. Chunk bases are aligned to
     * 64 bytes by the device allocators, so `align` up to 64 needs no padding here. */
    size_t want = nbytes + (align > 64 ? align : 0);
    size_t size = r->first_chunk_bytes > want ? r->first_chunk_bytes : want;
    chunk *n = chunk_new(r, size);
    if (!n) {
        cg_error_context("arena '%s': allocating a chunk of %zu bytes: ", arena_name, size);
        return NULL;
    }
    n->next = r->chunks;
    r->chunks = n;
    uintptr_t p = (uintptr_t)n->base;
    size_t pad = (size_t)(((p + align - 1) & ~(uintptr_t)(align - 1)) - p);
    n->used = pad + nbytes;
    r->used += pad + nbytes;
    if (r->used > r->peak) r->peak = r->used;
    return n->base + pad;
}

/* Empty every chunk; if the last step needed more than one, replace them by one chunk holding the whole
 * step so that the next identical step allocates nothing. */
static void region_reset(region *r) {
    if (r->chunks && r->chunks->next) {
        size_t total = r->reserved;
        chunks_free(r);
        r->chunks = chunk_new(r, total); /* on failure the next alloc retries with smaller chunks */
    }
    for (chunk *c = r->chunks; c; c = c->next) c->used = 0;
    r->used = 0;
}

/* Drop chunks newer than the marked one, then restore the marked chunk's fill level. */
static void region_rewind(region *r, void *mark_chunk, size_t chunk_used, size_t used) {
    while (r->chunks && r->chunks != mark_chunk) {
        chunk *c = r->chunks;
        r->chunks = c->next;
        r->reserved -= c->size;
        cg_device_free(r->device, c->base);
        free(c);
    }
    if (r->chunks) r->chunks->used = chunk_used;
    r->used = used;
}

cg_arena_mark cg_arena_get_mark(const cg_arena *a) {
    cg_arena_mark m = {0};
    if (!a) return m;
    m.data_chunk = a->data.chunks;
    m.meta_chunk = a->meta.chunks;
    m.data_chunk_used = a->data.chunks ? a->data.chunks->used : 0;
    m.meta_chunk_used = a->meta.chunks ? a->meta.chunks->used : 0;
    m.data_used = a->data.used;
    m.meta_used = a->meta.used;
    return m;
}

void cg_arena_rewind(cg_arena *a, cg_arena_mark m) {
    if (!a) return;
    region_rewind(&a->data, m.data_chunk, m.data_chunk_used, m.data_used);
    region_rewind(&a->meta, m.meta_chunk, m.meta_chunk_used, m.meta_used);
}

cg_arena *cg_arena_create(const char *name, cg_device device, size_t chunk_bytes) {
    if (device.type == CG_DEVICE_CUDA && !cg_cuda_compiled()) {
        cg_set_error(CG_ERR_UNSUPPORTED, "arena '%s': cgrad was built without CUDA", name ? name : "");
        return NULL;
    }
    cg_arena *a = calloc(1, sizeof *a);
    if (!a) {
        cg_set_error(CG_ERR_OOM, "arena '%s': out of host memory", name ? name : "");
        return NULL;
    }
    strncpy(a->name, name ? name : "arena", sizeof a->name - 1);
    a->device = device;
    if (chunk_bytes == 0) chunk_bytes = device.type == CG_DEVICE_CUDA ? ((size_t)256 << 20) : ((size_t)64 << 20);
    a->data.device = device;
    a->data.first_chunk_bytes = chunk_bytes;
    a->meta.device = CG_CPU;
    a->meta.first_chunk_bytes = (size_t)1 << 20;
    return a;
}

void cg_arena_destroy(cg_arena *a) {
    if (!a) return;
    chunks_free(&a->data);
    chunks_free(&a->meta);
    free(a);
}

void *cg_arena_alloc(cg_arena *a, size_t nbytes, size_t align) {
    if (!a) {
        cg_set_error(CG_ERR_INVALID_ARG, "arena_alloc: NULL arena");
        return NULL;
    }
    if (align == 0) align = 64;
    if (align & (align - 1)) {
        cg_set_error(CG_ERR_INVALID_ARG, "arena '%s': alignment %zu is not a power of two", a->name, align);
        return NULL;
    }
    return region_alloc(&a->data, nbytes, align, a->name);
}

void *cg_arena_alloc_meta(cg_arena *a, size_t nbytes) {
    if (!a) {
        cg_set_error(CG_ERR_INVALID_ARG, "arena_alloc_meta: NULL arena");
        return NULL;
    }
    void *p = region_alloc(&a->meta, nbytes, 16, a->name);
    if (p) memset(p, 0, nbytes);
    return p;
}

void cg_arena_reset(cg_arena *a) {
    if (!a) return;
    region_reset(&a->data);
    region_reset(&a->meta);
    a->resets++;
}

cg_device cg_arena_device(const cg_arena *a) { return a->device; }

const char *cg_arena_name(const cg_arena *a) { return a->name; }

cg_arena_stats cg_arena_get_stats(const cg_arena *a) {
    cg_arena_stats s = {0};
    if (!a) return s;
    s.used = a->data.used;
    s.peak = a->data.peak;
    s.reserved = a->data.reserved;
    s.meta_used = a->meta.used;
    s.meta_reserved = a->meta.reserved;
    s.system_allocs = a->data.system_allocs + a->meta.system_allocs;
    s.resets = a->resets;
    return s;
}
