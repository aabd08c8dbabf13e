/* GELU (tanh form), SiLU and SwiGLU forward/backward, and rotate-half RoPE forward/backward on the GPU (the CPU
 * kernels in core/nn_activation.c and core/nn_attention.c are the reference, formula for formula). */
#include "core/nn_activation.h"
#include "cuda/nn.h"
#include "cuda/nn_common.cuh"

#define THREADS 256

/* ------------------------------------------------------------------ activations */

#define GELU_K 0.7978845608028654f /* sqrt(2 / pi) */
#define GELU_C 0.044715f

__device__ __forceinline__ float sigmoid_f32(float x) { return 1.0f / (1.0f + expf(-x)); }

/* The same expression as cg_gelu_tanh_f32 (core/nn_activation.h). */
__device__ __forceinline__ float gelu_tanh(float x) {
    const float k2 = 1.5957691216057308f;
    return x / (1.0f + expf(-k2 * (x + 0.044715f * x * x * x)));
}

__device__ __forceinline__ float gelu_grad(float v) {
    float u = GELU_K * (v + GELU_C * v * v * v);
    float t = tanhf(u);
    float du = GELU_K * (1.0f + 3.0f * GELU_C * v * v);
    return 0.5f * (1.0f + t) + 0.5f * v * (1.0f - t * t) * du;
}

enum act_kind { GELU_FWD, SILU_FWD, GELU_BWD, SILU_BWD };

/* Grid-stride loop over n elements: out = f(a) (forwards) or f'(a) * b (backwards). */
template <typename T>
__global__ void activation_kernel(T *out, const T *a, const T *b, int64_t n, int kind) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        float x = cg_to_f32(a[i]), y;
        switch (kind) {
        case GELU_FWD: y = gelu_tanh(x); break;
        case SILU_FWD: y = x * sigmoid_f32(x); break;
        case GELU_BWD: y = cg_to_f32(b[i]) * gelu_grad(x); break;
        default: {
            float s = sigmoid_f32(x);
            y = cg_to_f32(b[i]) * s * (1.0f + x * (1.0f - s));
        }
        }
        out[i] = cg_from_f32<T>(y);
    }
}

/* Enough blocks to fill the GPU several times over; the grid-stride loop covers the rest. */
static unsigned elementwise_blocks(int64_t n) {
    unsigned b = cg_cuda_blocks(n, THREADS);
    return b > 65535u * 16u ? 65535u * 16u : b;
}

static cg_status activation(const char *op, cg_dtype dt, void *out, const void *a, const void *b, int64_t n, int kind) {
    if (n <= 0) return CG_OK;
    return cg_cuda_dispatch(op, dt, [&](auto tag) {
        using T = decltype(tag);
        activation_kernel<T><<<elementwise_blocks(n), THREADS, 0, cg_cuda_compute_stream()>>>(
            (T *)out, (const T *)a, (const T *)b, n, kind);
    });
}

extern "C" cg_status cg_cuda_gelu_forward(cg_dtype dt, void *out, const void *x, int64_t n) {
    return activation("gelu", dt, out, x, NULL, n, GELU_FWD);
}
extern "C" cg_status cg_cuda_silu_forward(cg_dtype dt, void *out, const void *x, int64_t n) {
    return activation("silu", dt, out, x, NULL, n, SILU_FWD);
}
extern "C" cg_status cg_cuda_gelu_backward(cg_dtype dt, void *dx, const void *x, const void *dy, int64_t n) {
    return activation("gelu backward", dt, dx, x, dy, n, GELU_BWD);
}
extern "C" cg_status cg_cuda_silu_backward(cg_dtype dt, void *dx, const void *x, const void *dy, int64_t n) {
    return activation("silu backward", dt, dx, x, dy, n, SILU_BWD);
}

/* out = silu(gate) * up, or (backward, dy given) dgate = dy * up * silu'(gate), dup = dy * silu(gate). */
template <typename T>
__global__ void swiglu_kernel(T *out, T *dgate, T *dup, const T *gate, const T *up, const T *dy, int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        float g = cg_to_f32(gate[i]), s = sigmoid_f32(g), u = cg_to_f32(up[i]);
        if (!dy) {
            out[i] = cg_from_f32<T>(g * s * u);
            continue;
        }
        float d = cg_to_f32(dy[i]);
        if (dgate) dgate[i] = cg_from_f32<T>(d * u * s * (1.0f + g * (1.0f - s)));
        if (dup) dup[i] = cg_from_f32<T>(d * g * s);
    }
}

extern "C" cg_status cg_cuda_swiglu_forward(cg_dtype dt, void *out, const void *gate, const void *up, int64_t n) {
    if (n <= 0) return CG_OK;
    return cg_cuda_dispatch("swiglu", dt, [&](auto tag) {
        using T = decltype(tag);
        swiglu_kernel<T><<<elementwise_blocks(n), THREADS, 0, cg_cuda_compute_stream()>>>(
            (T *)out, NULL, NULL, (const T *)gate, (const T *)up, NULL, n);
    });
}

extern "C" cg_status cg_cuda_swiglu_backward(cg_dtype dt, void *dgate, void *dup, const void *gate, const void *up,
                                             const void *dy, int64_t n) {
    if (n <= 0 || (!dgate && !dup)) return CG_OK;
    if (!dy) return cg_set_error(CG_ERR_INVALID_ARG, "swiglu backward: dy is NULL");
    return cg_cuda_dispatch("swiglu backward", dt, [&](auto tag) {
        using T = decltype(tag);
        swiglu_kernel<T><<<elementwise_blocks(n), THREADS, 0, cg_cuda_compute_stream()>>>(
            NULL, (T *)dgate, (T *)dup, (const T *)gate, (const T *)up, (const T *)dy, n);
    });
}

/* ------------------------------------------------------------------ RoPE */

/* The frequency table of the call in flight, copied in on the compute stream before each launch (stream order
 * keeps back-to-back calls with different tables apart). */
__constant__ double rope_inv_freq[CG_CUDA_ROPE_MAX_D / 2];

/* One thread per (b, t, i) for i < D/2: the angle pos * inv_freq[i] and its cos/sin in double as the CPU does,
 * then the pair (i, i + D/2) rotated in every head. sign -1 rotates backwards (the inverse rotation). */
template <typename T>
__global__ void rope_kernel(T *out, const T *x, int64_t B, int64_t H, int64_t T_len, int64_t D, int64_t pos_offset,
                            const int64_t *positions, double sign) {
    int64_t half = D / 2, total = B * T_len * half;
    for (int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (int64_t)gridDim.x * blockDim.x) {
        int64_t i = idx % half, bt = idx / half, b = bt / T_len, t = bt % T_len;
        double pos = (double)(positions ? positions[bt] : pos_offset + t);
        cg_rope_rotate(out, x, b, t, i, H, T_len, D, pos * rope_inv_freq[i], sign);
    }
}

static cg_status rope(const char *op, cg_dtype dt, void *out, const void *x, int64_t B, int64_t H, int64_t T,
                      int64_t D, const cg_rope_config *cfg, int64_t pos_offset, const int64_t *positions, double sign) {
    if (!cfg) return cg_set_error(CG_ERR_INVALID_ARG, "%s: rope config is NULL", op);
    if (D % 2 != 0 || D > CG_CUDA_ROPE_MAX_D)
        return cg_set_error(CG_ERR_SHAPE, "%s: head dim %lld must be even and at most %d on CUDA", op, (long long)D,
                            CG_CUDA_ROPE_MAX_D);
    if (B <= 0 || H <= 0 || T <= 0 || D <= 0) return CG_OK;
    double table[CG_CUDA_ROPE_MAX_D / 2];
    for (int64_t i = 0; i < D / 2; i++) table[i] = cg_rope_inv_freq(cfg, i, D);
    cudaStream_t st = cg_cuda_compute_stream();
    /* from pageable memory: the call returns once the table is staged, so `table` may go out of scope */
    cg_status s = cg_cuda_check(cudaMemcpyToSymbolAsync(rope_inv_freq, table, sizeof(double) * (size_t)(D / 2), 0,
                                                        cudaMemcpyHostToDevice, st), op);
    if (s != CG_OK) return s;
    int64_t total = B * T * (D / 2);
    return cg_cuda_dispatch(op, dt, [&](auto tag) {
        using TT = decltype(tag);
        rope_kernel<TT><<<elementwise_blocks(total), THREADS, 0, st>>>((TT *)out, (const TT *)x, B, H, T, D, pos_offset,
                                                                      positions, sign);
    });
}

extern "C" cg_status cg_cuda_rope_forward(cg_dtype dt, void *out, const void *x, int64_t B, int64_t H, int64_t T,
                                          int64_t D, const cg_rope_config *rope_cfg, int64_t pos_offset,
                                          const int64_t *positions) {
    return rope("rope", dt, out, x, B, H, T, D, rope_cfg, pos_offset, positions, 1.0);
}

extern "C" cg_status cg_cuda_rope_backward(cg_dtype dt, void *dx, const void *dy, int64_t B, int64_t H, int64_t T,
                                           int64_t D, const cg_rope_config *rope_cfg, int64_t pos_offset,
                                           const int64_t *positions) {
    return rope("rope backward", dt, dx, dy, B, H, T, D, rope_cfg, pos_offset, positions, -1.0);
}
