/* Fused optimizer kernels (cuda/optim.cu) behind C linkage, used by optim/optim.c when the parameters live
 * on a GPU. The formulas are those of optim/optim.h, element for element: fp32 master weights and state,
 * clipping and gradient noise applied on the fly, and optionally a bf16 working copy of each updated
 * parameter written in the same pass. */
#ifndef CG_CUDA_OPTIM_H
#define CG_CUDA_OPTIM_H

#include <stdbool.h>
#include <stdint.h>

#include "core/error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One parameter, as the kernels see it (a device-side table of these is uploaded by the optimizer). */
typedef struct cg_cuda_optim_param {
    float *w;          /* fp32 master weights */
    const float *g;    /* gradient, NULL = no update for this parameter */
    float *s0, *s1;    /* state (SGD momentum / AdamW m, v / Lion m), NULL when unused */
    uint16_t *working; /* bf16 working copy written after the update, or NULL */
    int64_t numel, global_offset;
    float lr_mult, weight_decay;
} cg_cuda_optim_param;

/* A run of at most 16384 elements of one parameter: the unit of the kernels' blocks and of the norm's
 * partial sums (the same chunks as the CPU optimizer's). */
typedef struct cg_cuda_optim_chunk {
    int param;
    int64_t start, len;
} cg_cuda_optim_chunk;

typedef struct cg_cuda_optim_consts {
    int kind; /* cg_optimizer_kind */
    double lr;
    float clip, noise_std;
    uint64_t noise_block0, seed, noise_stream;
    float b1, one_minus_b1, b2, one_minus_b2, eps, momentum;
    bool nesterov;
    double bias_correction1, bias_correction2_sqrt;
} cg_cuda_optim_consts;

/* Per chunk: the sum of g^2 (double) and the count of non-finite elements, into device arrays. */
cg_status cg_cuda_optim_scan(const cg_cuda_optim_param *params, const cg_cuda_optim_chunk *chunks, int64_t n_chunks,
                             double *chunk_sumsq, int64_t *chunk_nonfinite);
/* The update of every chunk. */
cg_status cg_cuda_optim_update(const cg_cuda_optim_param *params, const cg_cuda_optim_chunk *chunks, int64_t n_chunks,
                               const cg_cuda_optim_consts *k);

#ifdef __cplusplus
}
#endif
#endif
