/* CUDA kernels of the primitive ops, behind C linkage (implemented in cuda/elementwise.cu, reduce.cu,
 * index.cu, copy.cu, rng.cu). core/ calls them, under #ifdef CG_HAVE_CUDA, after its own argument checks:
 * these functions trust their arguments (shapes, dtypes, devices) and check only the launches. Every kernel
 * runs on the current device's compute stream; none synchronises with the host.
 *
 * Storage dtypes are passed as cg_dtype. Float operands are f32 or bf16 and the math is f32 (as the CPU
 * ops); copies and fills take every cg_dtype. */
#ifndef CG_CUDA_OPS_H
#define CG_CUDA_OPS_H

#include <stdbool.h>
#include <stdint.h>

#include "core/dtype.h"
#include "core/error.h"
#include "core/rng.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CG_CUDA_EW_MAX_DIMS 6 /* CG_MAX_DIMS */
#define CG_CUDA_EW_MAX_OPS 4

/* A strided iteration over a shape, passed to the kernels by value: operand k's element at logical
 * index (i0, i1, ...) is data[k] + sum_d i_d * strides[k][d] elements of dtype[k]. Operand 0 is the
 * output. Built on the host by cg_ew_iter_init (dims merged, broadcast dims with stride 0). */
typedef struct cg_cuda_ew {
    int ndim; /* 1..CG_CUDA_EW_MAX_DIMS */
    int nops;
    int64_t numel;
    int64_t shape[CG_CUDA_EW_MAX_DIMS];
    int64_t strides[CG_CUDA_EW_MAX_OPS][CG_CUDA_EW_MAX_DIMS];
    void *data[CG_CUDA_EW_MAX_OPS];
    int dtype[CG_CUDA_EW_MAX_OPS]; /* cg_dtype */
} cg_cuda_ew;

/* out = a (op) b; op is a cg_binary_op. Operands 0 out, 1 a, 2 b. */
cg_status cg_cuda_binary(int op, const cg_cuda_ew *it);
/* out = f(x); op is a cg_unary_op or one of the CG_CUDA_UNARY_* below, p0/p1 their parameters. */
enum { CG_CUDA_UNARY_AFFINE = 1000, CG_CUDA_UNARY_POW, CG_CUDA_UNARY_CLAMP };
cg_status cg_cuda_unary(int op, float p0, float p1, const cg_cuda_ew *it);
/* out = cond != 0 ? a : b. Operands 0 out, 1 cond (u8, i32, i64, f32), 2 a, 3 b. */
cg_status cg_cuda_where(const cg_cuda_ew *it);
/* Operand 0 = operand 1, converting between any dtypes as the CPU's cg_copy does. */
cg_status cg_cuda_copy(const cg_cuda_ew *it);
/* Operand 0 (any dtype) = value. */
cg_status cg_cuda_fill(const cg_cuda_ew *it, double value);
/* The linear layer's GELU epilogue pieces: y = gelu_tanh(pre) (y may be pre), and
 * dpre = dy * gelu_tanh'(pre); packed f32, n elements. */
cg_status cg_cuda_gelu_tanh_backward(float *dpre, const float *pre, const float *dy, int64_t n);
/* out += a * b, packed f32 (the LoRA dropout backward). */
cg_status cg_cuda_mul_add(float *out, const float *a, const float *b, int64_t n);

/* Reduction of packed x [outer, n, inner] (dtype x_dtype, f32 or bf16) over its middle dim into packed out
 * [outer, inner] (f32 or bf16); op is a cg_reduce_op; argout (i64, may be NULL) takes the first index of
 * the extreme for max/min. n >= 1. Accumulates in f32 in a fixed order (deterministic). scratch (device
 * memory of cg_cuda_reduce_scratch_bytes, 8-byte aligned; may be NULL, then one slower pass) holds the
 * per-slice partials when the axis is split to fill the GPU. */
size_t cg_cuda_reduce_scratch_bytes(int64_t outer, int64_t n, int64_t inner);
cg_status cg_cuda_reduce(int op, void *out, int out_dtype, int64_t *argout, const void *x, int x_dtype,
                         int64_t outer, int64_t n, int64_t inner, void *scratch);

/* ---- index ops (cuda/index.cu) ---- */
/* The first index (row-major position over the strided index tensor `it`, one operand, i32 or i64) outside
 * [0, limit): *bad_pos = -1 when all are inside. scratch: 2 int64 of device memory. Waits for the answer
 * (one small device-to-host copy), since the op must fail before it writes anything. */
cg_status cg_cuda_find_bad_index(const cg_cuda_ew *it, int64_t limit, int64_t *scratch, int64_t *bad_pos,
                                 int64_t *bad_value);
/* out = src[index] (gather, index_select, embedding): operands 0 out, 1 src (stride 0 along the indexed
 * axis), 2 index (i32/i64); the element at index id is src + id * axis_stride. Any element dtype (out and
 * src the same). Indices were checked. */
cg_status cg_cuda_take(const cg_cuda_ew *it, int64_t axis_stride);
/* Accumulates along one axis (scatter_add, index_add, the embedding backward): over the iteration `it` of
 * every dim but the axis (operands 0 out (f32), 1 src (f32 or bf16), 2 index (i32/i64)), one thread per
 * position walks the axis in order: out[id * out_axis_stride] += src[i * src_axis_stride] with
 * id = index[i * index_axis_stride], i < axis_len. Each output element is summed by one thread in the
 * CPU's order: deterministic and equal to the CPU result. */
cg_status cg_cuda_put_add(const cg_cuda_ew *it, int64_t axis_len, int64_t out_axis_stride, int64_t src_axis_stride,
                          int64_t index_axis_stride);

/* index_add with a 1-D index through a sort (cuda/embedding.cu; the embedding's weight gradient is outer = 1):
 * out [outer, V, C] f32 packed += src [outer, N, C] (f32 or bf16, packed) slices by ids [N] (packed i32/i64,
 * all in [0, V): checked by the caller), summed per index in position order after a stable GPU sort:
 * deterministic and equal to the CPU result. scratch: device memory of cg_cuda_index_add_sorted_scratch(N, V)
 * bytes, 16-byte aligned. */
size_t cg_cuda_index_add_sorted_scratch(int64_t N, int64_t V);
cg_status cg_cuda_index_add_sorted(float *out, const void *ids, int ids_dtype, const void *src, int src_dtype,
                                   int64_t outer, int64_t N, int64_t V, int64_t C, void *scratch);

/* ---- random fills (cuda/rng.cu) ---- */
/* Fills the one operand of `it` (f32, i32, i64 or u8) with blocks offset, offset + 1, ... of Philox stream
 * (seed, stream), value i at flat row-major position i, exactly as the CPU fill of core/rng.c. */
cg_status cg_cuda_rng_fill(const cg_cuda_ew *it, const cg_rng_fill_params *p, uint64_t seed, uint64_t stream,
                           uint64_t offset);

#ifdef __cplusplus
}
#endif
#endif
