/* The optimizer's layout, shared by optim/optim.c (create, step) and optim/optim_state.c (save/load). */
#ifndef CG_OPTIM_INTERNAL_H
#define CG_OPTIM_INTERNAL_H

#include "core/arena.h"
#include "core/comm.h"
#include "optim/optim.h"

/* Elements per work chunk: the unit of the parallel loops and of the norm's partial sums. */
#define CG_OPTIM_CHUNK ((int64_t)1 << 14)
/* State tensors per parameter at most (AdamW: m, v). */
#define CG_OPTIM_MAX_STATE 2

typedef struct cg_optim_param {
    cg_tensor *t;
    int64_t numel;
    int64_t global_offset; /* index of its first element with all parameters laid end to end */
    float lr_mult, weight_decay;
    /* ZeRO-1: the elements [shard_start, shard_start + shard_len) of this parameter belong to this rank's
     * shard; state[k][i] is element shard_start + i. Unsharded (and always on a GPU): 0 and numel. */
    int64_t shard_start, shard_len;
    float *state[CG_OPTIM_MAX_STATE]; /* on the optimizer's device */
    cg_tensor *working;               /* bf16 working copy written after each update, or NULL */
} cg_optim_param;

typedef struct cg_optim_chunk {
    int param;
    int64_t start, len;
} cg_optim_chunk;

struct cg_optimizer {
    cg_optimizer_config cfg;
    int n_params;
    cg_optim_param *params;
    int n_state; /* state tensors per parameter: SGD 0 or 1, AdamW 2, Lion 1 */
    int64_t step;
    int64_t total_elements;
    int64_t n_chunks;
    cg_optim_chunk *chunks;        /* every element: the norm's scan */
    int64_t n_update_chunks;
    cg_optim_chunk *update_chunks; /* this rank's elements: the update (== chunks when unsharded) */
    /* ZeRO-1 (comm with more than one rank): rank r owns global elements [r * shard_size, (r+1) * shard_size)
     * clipped to total_elements; gather holds size * shard_size floats for the all-gathers. */
    cg_comm *comm;
    int64_t shard_lo, shard_hi, shard_size;
    float *gather;
    double *chunk_sumsq; /* per chunk, host memory (the arena's on the CPU; malloc'd for a GPU optimizer) */
    int64_t *chunk_nonfinite;
    cg_arena *arena;     /* on `device`: the state (and on a GPU the tables below) */
    cg_device device;    /* where every parameter, gradient and state tensor lives */
    /* GPU only: device tables for the fused kernels (cuda/optim.h), their host mirror (re-uploaded when a
     * gradient pointer changes), and the per-chunk sums on the device */
    void *cuda_params, *cuda_chunks, *host_params;
    double *cuda_sumsq;
    int64_t *cuda_nonfinite;
};

/* Copies global elements [lo, hi) between the parameters (k < 0) or state tensor k (the range must then lie
 * in this rank's shard) and flat[0 .. hi - lo): to_flat reads them out, else writes them back. */
void cg_optim_copy_range(cg_optimizer *o, int k, int64_t lo, int64_t hi, float *flat, bool to_flat);
/* ZeRO-1: every rank's updated shard of the parameters to every rank. */
cg_status cg_optim_gather_params(cg_optimizer *o);

#endif
