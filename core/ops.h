/* Forward kernels of the primitive ops, behind one checked entry point each.
 *
 * These write into a caller-provided output tensor: they never allocate the output and never record
 * anything on the autograd tape (autograd/ builds the allocating, differentiable API on top of them).
 * Each entry point checks shapes, dtypes and devices and fails with a message that names the op and the
 * shapes; then it dispatches to the CPU kernel (core/) or the CUDA kernel (cuda/).
 *
 * CPU compute is fp32: float inputs and outputs must be f32 (cast bf16/f16 with cg_copy first). Index
 * tensors are i32 or i64. Inputs may be any strided view (transposed, sliced, expanded); outputs may be
 * strided too but must not overlap their inputs unless stated. */
#ifndef CG_OPS_H
#define CG_OPS_H

#include <stdbool.h>

#include "core/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum cg_binary_op {
    CG_OP_ADD,
    CG_OP_SUB,
    CG_OP_MUL,
    CG_OP_DIV,
    CG_OP_MAXIMUM, /* elementwise max; NaN propagates */
    CG_OP_MINIMUM,
    CG_OP_POW,
    /* comparisons: 1.0 where the relation holds, else 0.0 (NaN compares false, except NOT_EQUAL) */
    CG_OP_GREATER,
    CG_OP_GREATER_EQUAL,
    CG_OP_LESS,
    CG_OP_LESS_EQUAL,
    CG_OP_EQUAL,
    CG_OP_NOT_EQUAL,
    CG_BINARY_OP_COUNT
} cg_binary_op;

typedef enum cg_unary_op {
    CG_OP_NEG,
    CG_OP_EXP,
    CG_OP_LOG,
    CG_OP_TANH,
    CG_OP_SIGMOID,
    CG_OP_SIGN, /* -1, 0, +1; sign(0) = 0, NaN stays NaN */
    CG_OP_ABS,
    CG_OP_SQRT,
    CG_OP_RSQRT,
    CG_OP_RECIPROCAL,
    CG_OP_SQUARE,
    CG_OP_RELU,
    CG_OP_GELU_TANH, /* 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) */
    CG_OP_SILU,      /* x sigmoid(x) */
    CG_UNARY_OP_COUNT
} cg_unary_op;

typedef enum cg_reduce_op { CG_REDUCE_SUM, CG_REDUCE_MEAN, CG_REDUCE_MAX, CG_REDUCE_MIN, CG_REDUCE_OP_COUNT } cg_reduce_op;

const char *cg_binary_op_name(cg_binary_op op);
const char *cg_unary_op_name(cg_unary_op op);
const char *cg_reduce_op_name(cg_reduce_op op);

/* NumPy broadcasting of two shapes (aligned at the right; each pair equal or one of them 1). */
cg_status cg_broadcast_shapes(int ndim_a, const int64_t *shape_a, int ndim_b, const int64_t *shape_b,
                              int *ndim_out, int64_t *shape_out);

/* out = a (op) b, a and b broadcast to out's shape. */
cg_status cg_binary_into(cg_binary_op op, cg_tensor *out, const cg_tensor *a, const cg_tensor *b);
/* out = op(x); out and x have the same shape; out may be x (in place). */
cg_status cg_unary_into(cg_unary_op op, cg_tensor *out, const cg_tensor *x);
/* out = x * scale + shift (out may be x). */
cg_status cg_affine_into(cg_tensor *out, const cg_tensor *x, float scale, float shift);
/* out = x ^ exponent. */
cg_status cg_pow_scalar_into(cg_tensor *out, const cg_tensor *x, float exponent);
/* out = min(max(x, lo), hi) (out may be x). */
cg_status cg_clamp_into(cg_tensor *out, const cg_tensor *x, float lo, float hi);
/* out = cond != 0 ? a : b; cond (u8, i32, i64 or f32), a and b broadcast to out's shape. */
cg_status cg_where_into(cg_tensor *out, const cg_tensor *cond, const cg_tensor *a, const cg_tensor *b);

/* Reduction over one axis. out has x's shape with that axis set to 1 (keepdim) or removed. For MAX/MIN,
 * argout (optional, i64, out's shape) receives the index of the first extreme element. */
cg_status cg_reduce_into(cg_reduce_op op, cg_tensor *out, cg_tensor *argout, const cg_tensor *x, int axis,
                         bool keepdim);

/* out = alpha * op(a) @ op(b) + beta * out, op = transpose of the last two dims when the flag is set.
 * a: [..., M, K] (or [..., K, M] transposed), b: [..., K, N] (or [..., N, K]); the batch dims broadcast.
 * 1-D tensors are not accepted here (reshape them). On a GPU (cuBLASLt): f32 or bf16 operands and out, fp32
 * accumulation; f32 operands use TF32 unless cg_cuda_matmul_set_tf32(false). */
cg_status cg_matmul_into(cg_tensor *out, const cg_tensor *a, const cg_tensor *b, bool trans_a, bool trans_b,
                         float alpha, float beta);

/* out = op(a) @ op(b) + bias (one value per column of out, [N]; may be NULL), then GELU (tanh form) when
 * gelu. On a GPU the bias and GELU run in cuBLASLt's epilogue; on the CPU out must be packed. */
cg_status cg_matmul_bias_into(cg_tensor *out, const cg_tensor *a, const cg_tensor *b, bool trans_a, bool trans_b,
                              const cg_tensor *bias, bool gelu);

/* TF32 tensor cores for f32 matmuls on a GPU (on by default; ~1e-3 relative error, as PyTorch with
 * allow_tf32). Off gives full fp32 products. Returns the previous setting (false in a build without CUDA). */
bool cg_matmul_set_tf32(bool on);
/* Deterministic mode (on by default): bitwise-repeatable GPU results for the same inputs, shapes and settings on
 * the same GPU model and software versions. What it changes: cuBLASLt may only use algorithms without split-K
 * (or, for a shape that has none, split-K reduced in a separate fixed-order step), never its in-place split-K
 * reduction; every project kernel is deterministic in both modes (no float atomics). Off lets cuBLASLt pick any
 * algorithm. CPU results do not depend on it. cg_set_deterministic returns the previous setting. */
bool cg_set_deterministic(bool on);
bool cg_deterministic(void);
/* The GPU matmul's heuristic cache: lookups served from it and cuBLASLt heuristic queries made. */
void cg_matmul_cuda_cache_stats(uint64_t *hits, uint64_t *misses);

/* torch.gather: out[i][j][k] = x[index[i][j][k]][j][k] along axis; out has index's shape. */
cg_status cg_gather_into(cg_tensor *out, const cg_tensor *x, int axis, const cg_tensor *index);
/* torch.index_select: picks whole slices of x along axis by a 1-D index. */
cg_status cg_index_select_into(cg_tensor *out, const cg_tensor *x, int axis, const cg_tensor *index);
/* out[..., :] = weight[ids[...], :]; weight [V, C], ids any shape of i32/i64, out [ids..., C]. An id outside
 * [0, V) is an error that names the id and its position. */
cg_status cg_embedding_into(cg_tensor *out, const cg_tensor *weight, const cg_tensor *ids);
/* The scatter counterparts, used by the backward passes (they accumulate: out must be initialised).
 * torch.scatter_add_: out[index[i][j][k]][j][k] += src[i][j][k] along axis (index no larger than src). */
cg_status cg_scatter_add_into(cg_tensor *out, int axis, const cg_tensor *index, const cg_tensor *src);
/* torch.index_add_: out[..., index[i], ...] += src[..., i, ...] along axis; index 1-D. */
cg_status cg_index_add_into(cg_tensor *out, int axis, const cg_tensor *index, const cg_tensor *src);
/* The embedding's weight gradient: grad_weight[ids[n], :] += grad_out[n, :] for every position n, in
 * position order whatever the thread count (deterministic). grad_weight [V, C] packed f32. */
cg_status cg_embedding_backward_into(cg_tensor *grad_weight, const cg_tensor *ids, const cg_tensor *grad_out);
/* Concatenates n tensors along axis into out. */
cg_status cg_concat_into(cg_tensor *out, int n, const cg_tensor *const *xs, int axis);
/* Casts between any dtypes (same shape): an alias of cg_copy, named for the op table. */
cg_status cg_cast_into(cg_tensor *out, const cg_tensor *x);

#ifdef __cplusplus
}
#endif
#endif
