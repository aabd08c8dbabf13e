/* Helpers shared by the nn kernels (cuda/nn_*.cu): deterministic warp and block reductions, the online
 * (max, sum of exponentials) pair, and the dtype dispatch of the C entry points. C++ only. */
#ifndef CG_CUDA_NN_COMMON_CUH
#define CG_CUDA_NN_COMMON_CUH

#include <math.h>

#include "cuda/common.cuh"

#define CG_FULL_MASK 0xffffffffu

/* Sums/maxima over a warp by xor shuffles: every lane gets the result, and the combination order is fixed,
 * so the result is the same on every run. */
__device__ __forceinline__ float cg_warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(CG_FULL_MASK, v, o);
    return v;
}
__device__ __forceinline__ float cg_warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(CG_FULL_MASK, v, o));
    return v;
}

/* Block-wide sum or max; blockDim.x a multiple of 32 (<= 1024), called by every thread of the block; shm
 * holds 32 floats. Every thread gets the result. The first barrier lets shm be reused by back-to-back calls. */
__device__ __forceinline__ float cg_block_sum(float v, float *shm) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = cg_warp_sum(v);
    __syncthreads();
    if (lane == 0) shm[warp] = v;
    __syncthreads();
    v = lane < nw ? shm[lane] : 0.0f;
    return cg_warp_sum(v);
}
__device__ __forceinline__ float cg_block_max(float v, float *shm) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = cg_warp_max(v);
    __syncthreads();
    if (lane == 0) shm[warp] = v;
    __syncthreads();
    v = lane < nw ? shm[lane] : -INFINITY;
    return cg_warp_max(v);
}

/* An online softmax normaliser: the running max m and the sum s of exp(x - m) over the values seen. */
struct cg_maxsum {
    float m, s;
};
__device__ __forceinline__ cg_maxsum cg_maxsum_combine(cg_maxsum a, cg_maxsum b) {
    float m = fmaxf(a.m, b.m);
    if (m == -INFINITY) return {m, 0.0f}; /* both empty (or all -inf): exp(-inf - -inf) would be NaN */
    return {m, a.s * expf(a.m - m) + b.s * expf(b.m - m)};
}
__device__ __forceinline__ cg_maxsum cg_maxsum_add(cg_maxsum a, float x) {
    if (x == -INFINITY) return a;
    if (x > a.m) return {x, a.s * expf(a.m - x) + 1.0f};
    return {a.m, a.s + expf(x - a.m)};
}
__device__ __forceinline__ cg_maxsum cg_warp_maxsum(cg_maxsum v) {
    for (int o = 16; o > 0; o >>= 1) {
        cg_maxsum w = {__shfl_xor_sync(CG_FULL_MASK, v.m, o), __shfl_xor_sync(CG_FULL_MASK, v.s, o)};
        v = cg_maxsum_combine(v, w);
    }
    return v;
}
/* shm holds 64 floats. */
__device__ __forceinline__ cg_maxsum cg_block_maxsum(cg_maxsum v, float *shm) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = cg_warp_maxsum(v);
    __syncthreads();
    if (lane == 0) shm[warp] = v.m, shm[32 + warp] = v.s;
    __syncthreads();
    cg_maxsum w = lane < nw ? cg_maxsum{shm[lane], shm[32 + lane]} : cg_maxsum{-INFINITY, 0.0f};
    return cg_warp_maxsum(w);
}

/* Threads for a kernel with one block per row of C entries: about 4 entries per thread, a multiple of 32,
 * between 32 and 1024. */
static inline int cg_row_threads(int64_t C) {
    int64_t t = ((C + 3) / 4 + 31) / 32 * 32;
    return (int)(t < 32 ? 32 : t > 1024 ? 1024 : t);
}

/* The f32/bf16 dispatch of a C entry point: runs `launch(T{})` (a generic lambda that launches the kernel for
 * storage type T) and checks the launch, or fails naming the op for any other dtype. */
template <typename F> static inline cg_status cg_cuda_dispatch(const char *op, cg_dtype dt, F launch) {
    if (dt == CG_F32)
        launch(float{});
    else if (dt == CG_BF16)
        launch(__nv_bfloat16{});
    else
        return cg_set_error(CG_ERR_DTYPE, "%s: dtype %s has no CUDA kernel (f32 or bf16)", op, cg_dtype_name(dt));
    return cg_cuda_check_launch(op);
}

/* RoPE's rotation at (b, t) of the pair (i, i + D/2) in every head, cos/sin of the angle in double as the CPU
 * does; sign -1 rotates backwards. One body for the autograd kernel (cuda/nn_activation.cu) and the decode
 * kernel with a device table (cuda/decode.cu). */
template <typename T>
__device__ inline void cg_rope_rotate(T *out, const T *x, int64_t b, int64_t t, int64_t i, int64_t H, int64_t T_len,
                                      int64_t D, double angle, double sign) {
    int64_t half = D / 2;
    float cs = (float)cos(angle), sn = (float)(sign * sin(angle));
    for (int64_t h = 0; h < H; h++) {
        int64_t row = ((b * H + h) * T_len + t) * D;
        float a = cg_to_f32(x[row + i]), c = cg_to_f32(x[row + i + half]);
        out[row + i] = cg_from_f32<T>(a * cs - c * sn);
        out[row + i + half] = cg_from_f32<T>(c * cs + a * sn);
    }
}

#endif
