#include "core/context.h"

#ifdef CG_HAVE_CUDA
#include "cuda/matmul.h"
#include "cuda/runtime.h"
#endif

#include <stdio.h>
#include <string.h>
#ifdef CG_HAVE_OPENMP
#include <omp.h>
#endif

#define MAX_HOOKS 8

typedef struct device_arenas {
    cg_arena *persistent;
    cg_arena *step;
    cg_arena *output_override;
    size_t peak_total;
} device_arenas;

static struct {
    device_arenas cpu;
    device_arenas cuda[CG_MAX_CUDA_DEVICES];
    struct {
        cg_step_end_hook fn;
        void *user;
    } hooks[MAX_HOOKS];
    int n_hooks;
} ctx;

static device_arenas *arenas_of(cg_device d) {
    if (d.type == CG_DEVICE_CPU) return &ctx.cpu;
    if (d.type == CG_DEVICE_CUDA && d.index >= 0 && d.index < CG_MAX_CUDA_DEVICES) return &ctx.cuda[d.index];
    cg_set_error(CG_ERR_DEVICE, "no such device (type %d, index %d)", (int)d.type, d.index);
    return NULL;
}

static cg_arena *get_or_create(cg_device d, bool persistent) {
    device_arenas *da = arenas_of(d);
    if (!da) return NULL;
    cg_arena **slot = persistent ? &da->persistent : &da->step;
    if (!*slot) {
        char name[48], dev[24];
        snprintf(name, sizeof name, "%s:%s", persistent ? "persistent" : "step", cg_device_str(d, dev, sizeof dev));
        *slot = cg_arena_create(name, d, 0);
    }
    return *slot;
}

cg_arena *cg_persistent_arena(cg_device d) { return get_or_create(d, true); }

cg_arena *cg_step_arena(cg_device d) { return get_or_create(d, false); }

cg_arena *cg_output_arena(cg_device d) {
    device_arenas *da = arenas_of(d);
    if (!da) return NULL;
    return da->output_override ? da->output_override : get_or_create(d, false);
}

cg_arena *cg_set_output_arena(cg_device d, cg_arena *a) {
    device_arenas *da = arenas_of(d);
    if (!da) return NULL;
    cg_arena *prev = da->output_override;
    da->output_override = a;
    return prev;
}

static void note_peak(device_arenas *da) {
    size_t p = da->persistent ? cg_arena_get_stats(da->persistent).used : 0;
    size_t s = da->step ? cg_arena_get_stats(da->step).used : 0;
    if (p + s > da->peak_total) da->peak_total = p + s;
}

void cg_step_end(void) {
    for (int i = 0; i < ctx.n_hooks; i++) ctx.hooks[i].fn(ctx.hooks[i].user);
    note_peak(&ctx.cpu);
    cg_arena_reset(ctx.cpu.step);
    for (int i = 0; i < CG_MAX_CUDA_DEVICES; i++) {
        note_peak(&ctx.cuda[i]);
        cg_arena_reset(ctx.cuda[i].step);
    }
}

cg_status cg_on_step_end(cg_step_end_hook fn, void *user) {
    if (!fn) return cg_set_error(CG_ERR_INVALID_ARG, "on_step_end: NULL hook");
    for (int i = 0; i < ctx.n_hooks; i++)
        if (ctx.hooks[i].fn == fn && ctx.hooks[i].user == user) return CG_OK;
    if (ctx.n_hooks == MAX_HOOKS) return cg_set_error(CG_ERR_INVALID_ARG, "on_step_end: more than %d hooks", MAX_HOOKS);
    ctx.hooks[ctx.n_hooks].fn = fn;
    ctx.hooks[ctx.n_hooks].user = user;
    ctx.n_hooks++;
    return CG_OK;
}

static void free_arenas(device_arenas *da) {
    cg_arena_destroy(da->persistent);
    cg_arena_destroy(da->step);
    memset(da, 0, sizeof *da);
}

void cg_shutdown(void) {
    free_arenas(&ctx.cpu);
    for (int i = 0; i < CG_MAX_CUDA_DEVICES; i++) free_arenas(&ctx.cuda[i]);
#ifdef CG_HAVE_CUDA
    if (cg_cuda_device_count() > 0) { /* the GPU-side caches: re-created on demand */
        cg_cuda_matmul_release();
        cg_cuda_rt_release_staging();
    }
#endif
}

cg_memory_stats cg_memory_get_stats(cg_device d) {
    cg_memory_stats m = {0};
    device_arenas *da = arenas_of(d);
    if (!da) return m;
    note_peak(da);
    if (da->persistent) {
        cg_arena_stats s = cg_arena_get_stats(da->persistent);
        m.persistent_used = s.used;
        m.persistent_reserved = s.reserved;
    }
    if (da->step) {
        cg_arena_stats s = cg_arena_get_stats(da->step);
        m.step_used = s.used;
        m.step_peak = s.peak;
        m.step_reserved = s.reserved;
    }
    m.peak_total = da->peak_total;
    return m;
}

int cg_set_num_threads(int n) {
#ifdef CG_HAVE_OPENMP
    if (n <= 0) n = omp_get_num_procs();
    omp_set_num_threads(n);
    return n;
#else
    (void)n;
    return 1;
#endif
}

int cg_get_num_threads(void) {
#ifdef CG_HAVE_OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}
