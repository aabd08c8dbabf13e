/* Matmul on the GPU through cuBLASLt (cuda/matmul.cu), behind C linkage. core/matmul.c maps cg_matmul_into
 * onto it; autograd's linear uses the bias / GELU epilogues.
 *
 * Row-major semantics, as cg_sgemm: for each batch element b,
 *   C_b = alpha * op(A_b) op(B_b) (+ bias per column) (then GELU) + beta * C_b
 * op(A) is [M, K]: A is stored [M, K] (row stride lda), or [K, M] when trans_a; op(B) is [K, N]: B stored
 * [K, N] or [N, K] when trans_b. Batch element b of X starts at X + b * stride_x elements (0 = shared).
 * A and B have one dtype (f32 or bf16); C is f32 or bf16; the bias has C's dtype. Accumulation is always
 * fp32; f32 inputs use TF32 tensor cores unless cg_cuda_matmul_set_tf32(false) asks for full fp32. */
#ifndef CG_CUDA_MATMUL_H
#define CG_CUDA_MATMUL_H

#include <stdbool.h>
#include <stdint.h>

#include "core/error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum cg_cuda_epilogue {
    CG_CUDA_EPILOGUE_NONE = 0,
    CG_CUDA_EPILOGUE_BIAS,      /* C += bias[col] */
    CG_CUDA_EPILOGUE_GELU,      /* C = gelu_tanh(C) */
    CG_CUDA_EPILOGUE_GELU_BIAS, /* C = gelu_tanh(C + bias[col]) */
} cg_cuda_epilogue;

typedef struct cg_cuda_matmul_args {
    int64_t M, N, K, batch;
    bool trans_a, trans_b;
    const void *a;
    int64_t lda, stride_a;
    const void *b;
    int64_t ldb, stride_b;
    void *c;
    int64_t ldc, stride_c;
    int ab_dtype, c_dtype; /* cg_dtype */
    float alpha, beta;
    cg_cuda_epilogue epilogue;
    const void *bias; /* [N], c_dtype; with the BIAS epilogues */
} cg_cuda_matmul_args;

cg_status cg_cuda_matmul(const cg_cuda_matmul_args *p);

/* TF32 for f32 inputs (default on, as PyTorch's allow_tf32 for cuDNN; ~1e-3 relative error). Off gives
 * full fp32 products (~1e-6). Returns the previous setting. */
bool cg_cuda_matmul_set_tf32(bool on);

/* Deterministic mode (default on; cg_set_deterministic in core/ops.h is the public switch): the heuristic only
 * picks algorithms without split-K (CUBLASLT_REDUCTION_SCHEME_NONE), or, when a shape has none, split-K reduced
 * in a separate step (COMPUTE_TYPE / OUTPUT_TYPE), never the in-place scheme. The heuristic cache keys on the
 * mode. Returns the previous setting. */
bool cg_cuda_matmul_set_deterministic(bool on);

/* Frees the cuBLASLt handles and workspaces and empties the heuristic cache (cg_shutdown calls it; they are
 * re-created on the next matmul). */
void cg_cuda_matmul_release(void);

/* Heuristic-cache statistics: lookups served from the cache and heuristic queries made. */
void cg_cuda_matmul_cache_stats(uint64_t *hits, uint64_t *misses);

#ifdef __cplusplus
}
#endif
#endif
