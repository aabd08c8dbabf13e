/* Device helpers shared by the kernels over the strided iteration of cuda/ops.h (elementwise, copy, index,
 * rng): per-operand offsets of a logical index, loads and stores by dtype, the grid-stride loop. */
#ifndef CG_CUDA_EW_CUH
#define CG_CUDA_EW_CUH

#include <cuda_fp16.h>

#include "cuda/common.cuh"
#include "cuda/ops.h"

#define EW_THREADS 256
#define EW_MAX_BLOCKS (1 << 20)

/* ------------------------------------------------------------------ loads and stores by dtype */

__device__ __forceinline__ float load_float(const void *p, int dt, int64_t i) {
    if (dt == CG_BF16) return __bfloat162float(((const __nv_bfloat16 *)p)[i]);
    return ((const float *)p)[i];
}

__device__ __forceinline__ void store_float(void *p, int dt, int64_t i, float v) {
    if (dt == CG_BF16) ((__nv_bfloat16 *)p)[i] = __float2bfloat16_rn(v);
    else ((float *)p)[i] = v;
}

/* Any dtype as double, and back with the CPU's rules (float to integer saturates, NaN becomes 0). */
__device__ __forceinline__ double load_any(const void *p, int dt, int64_t i) {
    switch (dt) {
    case CG_F32: return ((const float *)p)[i];
    case CG_BF16: return __bfloat162float(((const __nv_bfloat16 *)p)[i]);
    case CG_F16: return __half2float(((const __half *)p)[i]);
    case CG_I32: return ((const int32_t *)p)[i];
    case CG_I64: return (double)((const int64_t *)p)[i];
    case CG_U8: return ((const uint8_t *)p)[i];
    default: return 0.0;
    }
}

__device__ __forceinline__ double saturate(double v, double lo, double hi) {
    if (v != v) return 0.0;
    return v < lo ? lo : v > hi ? hi : v;
}

__device__ __forceinline__ void store_any(void *p, int dt, int64_t i, double v) {
    switch (dt) {
    case CG_F32: ((float *)p)[i] = (float)v; break;
    case CG_BF16: ((__nv_bfloat16 *)p)[i] = __float2bfloat16_rn((float)v); break;
    case CG_F16: ((__half *)p)[i] = __float2half_rn((float)v); break;
    case CG_I32: ((int32_t *)p)[i] = (int32_t)saturate(v, -2147483648.0, 2147483647.0); break;
    case CG_I64: ((int64_t *)p)[i] = (int64_t)saturate(v, -9223372036854775808.0, 9223372036854774784.0); break;
    case CG_U8: ((uint8_t *)p)[i] = (uint8_t)saturate(v, 0.0, 255.0); break;
    default: break;
    }
}

/* Element offsets (in elements) of every operand for logical index i. Below 2^32 elements the index is
 * split with 32-bit divisions (several times cheaper than 64-bit ones); offsets stay 64-bit. */
__device__ __forceinline__ void ew_offsets(const cg_cuda_ew &it, int64_t i, int64_t *off) {
    if (it.ndim == 1) {
        for (int k = 0; k < CG_CUDA_EW_MAX_OPS; k++) off[k] = i * it.strides[k][0];
        return;
    }
    for (int k = 0; k < CG_CUDA_EW_MAX_OPS; k++) off[k] = 0;
    if (it.numel <= (int64_t)UINT32_MAX) {
        uint32_t rest = (uint32_t)i;
        for (int d = it.ndim - 1; d >= 0; d--) {
            uint32_t n = (uint32_t)it.shape[d], idx = rest % n;
            rest /= n;
            for (int k = 0; k < CG_CUDA_EW_MAX_OPS; k++) off[k] += (int64_t)idx * it.strides[k][d];
        }
        return;
    }
    int64_t rest = i;
    for (int d = it.ndim - 1; d >= 0; d--) {
        int64_t idx = rest % it.shape[d];
        rest /= it.shape[d];
        for (int k = 0; k < CG_CUDA_EW_MAX_OPS; k++) off[k] += idx * it.strides[k][d];
    }
}

static inline unsigned ew_blocks(int64_t n) {
    unsigned b = cg_cuda_blocks(n, EW_THREADS);
    return b > EW_MAX_BLOCKS ? EW_MAX_BLOCKS : b;
}

#define GRID_STRIDE_LOOP(i, n)                                                                           \
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (int64_t)gridDim.x * blockDim.x)

#endif
