/* Data parallelism: parameter broadcast and the bucketed gradient all-reduce (contract in optim/dist.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/autograd.h"
#include "core/arena.h"
#include "optim/dist.h"

cg_status cg_dist_broadcast_params(cg_comm *comm, int n, cg_tensor *const *params) {
    if (!comm || n < 0 || (n > 0 && !params))
        return cg_set_error(CG_ERR_INVALID_ARG, "broadcast params: NULL communicator or list");
    if (cg_comm_size(comm) == 1) return CG_OK;
    for (int i = 0; i < n; i++) {
        cg_tensor *t = params[i];
        if (!t || t->dtype != CG_F32 || !cg_is_contiguous(t))
            return cg_set_error(CG_ERR_INVALID_ARG, "broadcast params: parameter %d (%s) must be a contiguous f32 "
                                "tensor", i, t && t->name ? t->name : "(unnamed)");
        cg_status s = cg_comm_broadcast(comm, t->device, cg_data(t), cg_numel(t), CG_F32, 0);
        if (s != CG_OK) return cg_error_context("broadcast params: %s: ", t->name ? t->name : "(unnamed)");
    }
    return CG_OK;
}

typedef struct bucket {
    int64_t offset, count; /* in the buffer */
    int n_params, pending; /* parameters in it; those whose gradient is not final yet */
    cg_comm_request req;
} bucket;

struct cg_grad_sync {
    cg_comm *comm;
    cg_device device;
    int n_params;
    cg_tensor **params;
    int *param_bucket; /* bucket of params[i] */
    bool *ready;       /* params[i]'s gradient is final in this backward */
    int n_buckets, next_launch, overlapped;
    bucket *buckets;
    float *buffer;
    int64_t total;
    cg_arena *arena;
    bool syncing;
    cg_status error; /* the first failure inside the hook, reported by finish */
    char error_msg[512];
};

float *cg_grad_sync_buffer(const cg_grad_sync *gs, int64_t *count) {
    if (count) *count = gs ? gs->total : 0;
    return gs ? gs->buffer : NULL;
}
int cg_grad_sync_num_buckets(const cg_grad_sync *gs) { return gs ? gs->n_buckets : 0; }
int cg_grad_sync_overlapped(const cg_grad_sync *gs) { return gs ? gs->overlapped : 0; }

void cg_grad_sync_free(cg_grad_sync *gs) {
    if (!gs) return;
    cg_set_grad_ready_hook(NULL, NULL);
    /* The gradients point into the buffer: detach them before it goes. */
    if (gs->params)
        for (int i = 0; i < gs->n_params; i++)
            if (gs->params[i]) gs->params[i]->grad = NULL;
    if (gs->arena) cg_arena_destroy(gs->arena);
    free(gs->params);
    free(gs->param_bucket);
    free(gs->ready);
    free(gs->buckets);
    free(gs);
}

cg_status cg_grad_sync_create(cg_comm *comm, int n, cg_tensor *const *params, int64_t bucket_bytes,
                              cg_grad_sync **out) {
    if (!out) return cg_set_error(CG_ERR_INVALID_ARG, "grad sync: NULL output");
    *out = NULL;
    if (!comm || n < 1 || !params)
        return cg_set_error(CG_ERR_INVALID_ARG, "grad sync: NULL communicator or an empty parameter list");
    if (bucket_bytes < 0) return cg_set_error(CG_ERR_INVALID_ARG, "grad sync: bucket size %lld < 0", (long long)bucket_bytes);
    if (bucket_bytes == 0) bucket_bytes = CG_GRAD_BUCKET_DEFAULT_BYTES;
    int64_t cap = bucket_bytes / (int64_t)sizeof(float);
    if (cap < 1) cap = 1;
    if (cap > INT32_MAX) cap = INT32_MAX;
    int64_t total = 0;
    for (int i = 0; i < n; i++) {
        cg_tensor *t = params[i];
        char d[160];
        if (!t || t->dtype != CG_F32 || !cg_is_contiguous(t))
            return cg_set_error(CG_ERR_INVALID_ARG, "grad sync: parameter %d (%s) must be a contiguous f32 tensor", i,
                                t && t->name ? t->name : "(unnamed)");
        if (!cg_device_eq(t->device, params[0]->device))
            return cg_set_error(CG_ERR_DEVICE, "grad sync: parameter %d (%s, %s) is not on the device of parameter 0",
                                i, t->name ? t->name : "(unnamed)", cg_tensor_desc(t, d, sizeof d));
        if (cg_numel(t) > INT32_MAX)
            return cg_set_error(CG_ERR_INVALID_ARG, "grad sync: parameter %d has more than %d elements", i, INT32_MAX);
        total += cg_numel(t);
    }
    cg_grad_sync *gs = calloc(1, sizeof *gs);
    if (!gs) return cg_set_error(CG_ERR_OOM, "grad sync: out of memory");
    gs->comm = comm;
    gs->device = params[0]->device;
    gs->n_params = n;
    gs->total = total;
    gs->params = malloc(sizeof *gs->params * (size_t)n);
    gs->param_bucket = malloc(sizeof *gs->param_bucket * (size_t)n);
    gs->ready = calloc((size_t)n, sizeof *gs->ready);
    gs->buckets = calloc((size_t)n, sizeof *gs->buckets); /* at most one bucket per parameter */
    gs->arena = cg_arena_create("gradients", gs->device, (size_t)total * sizeof(float) + 4096 + 512 * (size_t)n);
    gs->buffer = gs->arena ? cg_arena_alloc(gs->arena, (size_t)total * sizeof(float), 256) : NULL;
    if (!gs->params || !gs->param_bucket || !gs->ready || !gs->buckets || !gs->buffer) {
        cg_status s = gs->arena ? cg_set_error(CG_ERR_OOM, "grad sync: out of memory for %lld gradients",
                                               (long long)total) : cg_error_context("grad sync: ");
        cg_grad_sync_free(gs);
        return s;
    }
    memcpy(gs->params, params, sizeof *params * (size_t)n);
    cg_status s = cg_device_memset_zero(gs->device, gs->buffer, (size_t)total * sizeof(float));
    /* Last parameter first; a new bucket when the next parameter would overflow a non-empty one. */
    int64_t off = 0;
    int b = -1;
    for (int i = n - 1; i >= 0 && s == CG_OK; i--) {
        cg_tensor *t = params[i];
        int64_t k = cg_numel(t);
        if (b < 0 || (gs->buckets[b].count > 0 && gs->buckets[b].count + k > cap)) {
            b++;
            gs->buckets[b].offset = off;
        }
        gs->buckets[b].count += k;
        gs->buckets[b].n_params++;
        gs->param_bucket[i] = b;
        cg_tensor *g = cg_tensor_wrap(gs->arena, CG_F32, gs->device, t->ndim, t->shape, gs->buffer + off);
        if (!g) {
            s = cg_error_context("grad sync: gradient of %s: ", t->name ? t->name : "(unnamed)");
            break;
        }
        if (t->grad) s = cg_copy(g, t->grad);
        t->grad = g;
        off += k;
    }
    if (s != CG_OK) {
        cg_grad_sync_free(gs);
        return s;
    }
    gs->n_buckets = b + 1;
    *out = gs;
    return CG_OK;
}

/* Starts every bucket from next_launch on whose gradients are all final, in order (the same order on every
 * rank, whatever order the hook reported them in). */
static void launch_ready(cg_grad_sync *gs) {
    while (gs->error == CG_OK && gs->next_launch < gs->n_buckets && gs->buckets[gs->next_launch].pending == 0) {
        bucket *bk = &gs->buckets[gs->next_launch];
        cg_status s = cg_comm_iallreduce(gs->comm, gs->device, gs->buffer + bk->offset, bk->count, CG_F32, CG_COMM_AVG,
                                         &bk->req);
        if (s != CG_OK) {
            gs->error = s;
            snprintf(gs->error_msg, sizeof gs->error_msg, "%s", cg_last_error());
            return;
        }
        gs->next_launch++;
    }
}

static int find_param(const cg_grad_sync *gs, const cg_tensor *t) {
    for (int i = 0; i < gs->n_params; i++)
        if (gs->params[i] == t) return i;
    return -1;
}

static void on_grad_ready(cg_tensor *leaf, void *user) {
    cg_grad_sync *gs = user;
    int i = find_param(gs, leaf);
    if (i < 0 || gs->ready[i]) return; /* a leaf that is not one of ours (an input with requires_grad) */
    gs->ready[i] = true;
    gs->buckets[gs->param_bucket[i]].pending--;
    launch_ready(gs);
    gs->overlapped = gs->next_launch;
    /* MPI moves a non-blocking collective forward only inside MPI calls. */
    for (int b = 0; b < gs->next_launch; b++) cg_comm_progress(gs->comm, &gs->buckets[b].req);
}

cg_status cg_grad_sync_begin(cg_grad_sync *gs, bool sync) {
    if (!gs) return cg_set_error(CG_ERR_INVALID_ARG, "grad sync: NULL");
    gs->syncing = sync && cg_comm_size(gs->comm) > 1;
    gs->error = CG_OK;
    gs->next_launch = 0;
    gs->overlapped = 0;
    if (!gs->syncing) {
        cg_set_grad_ready_hook(NULL, NULL);
        return CG_OK;
    }
    memset(gs->ready, 0, sizeof *gs->ready * (size_t)gs->n_params);
    for (int b = 0; b < gs->n_buckets; b++) {
        gs->buckets[b].pending = gs->buckets[b].n_params;
        gs->buckets[b].req.active = false;
    }
    cg_set_grad_ready_hook(on_grad_ready, gs);
    return CG_OK;
}

cg_status cg_grad_sync_finish(cg_grad_sync *gs) {
    if (!gs) return cg_set_error(CG_ERR_INVALID_ARG, "grad sync: NULL");
    cg_set_grad_ready_hook(NULL, NULL);
    if (!gs->syncing) return CG_OK;
    gs->syncing = false;
    /* Buckets holding parameters the graph never used: their (zero or accumulated) gradients are final too. */
    for (int b = 0; b < gs->n_buckets; b++) gs->buckets[b].pending = 0;
    launch_ready(gs);
    cg_status s = gs->error;
    if (s != CG_OK) cg_set_error(s, "%s", gs->error_msg);
    for (int b = 0; b < gs->n_buckets; b++) {
        /* Every started request is waited for, even after a failure, so none is left behind. */
        cg_status w = cg_comm_wait(gs->comm, &gs->buckets[b].req);
        if (s == CG_OK && w != CG_OK) s = w;
    }
    return s == CG_OK ? CG_OK : cg_error_context("gradient all-reduce: ");
}
