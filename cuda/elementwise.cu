/* Elementwise kernels: binary ops with broadcasting, the unary family, where, strided copy/cast and fill,
 * over the strided iteration of cuda/ops.h. One thread per output element (grid-stride); each operand's
 * offset comes from the element's logical index and the operand's strides, so any view (transposed,
 * sliced, expanded) is read in place. Float operands load as f32 whatever their storage (f32 or bf16) and
 * the math matches the CPU kernels of core/ops_elementwise.c expression for expression. */
#include <cuda_fp16.h>

#include "core/ops.h"
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

static unsigned ew_blocks(int64_t n) {
    unsigned b = cg_cuda_blocks(n, EW_THREADS);
    return b > EW_MAX_BLOCKS ? EW_MAX_BLOCKS : b;
}

#define GRID_STRIDE_LOOP(i, n)                                                                           \
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (int64_t)gridDim.x * blockDim.x)

/* ------------------------------------------------------------------ the scalar functions (as the CPU) */

__device__ __forceinline__ float f_sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }
__device__ __forceinline__ float f_sign(float x) { return x > 0.0f ? 1.0f : x < 0.0f ? -1.0f : x; }
__device__ __forceinline__ float f_maximum(float a, float b) { return (a > b || a != a) ? a : b; }
__device__ __forceinline__ float f_minimum(float a, float b) { return (a < b || a != a) ? a : b; }
__device__ __forceinline__ float f_clamp(float v, float lo, float hi) {
    const float above = v < lo ? lo : v;
    return above > hi ? hi : above;
}
/* cg_gelu_tanh_f32 of core/nn_activation.h, the same expression */
__device__ __forceinline__ float f_gelu_tanh(float x) {
    const float k2 = 1.5957691216057308f;
    return x / (1.0f + expf(-k2 * (x + 0.044715f * x * x * x)));
}

template <int OP> __device__ __forceinline__ float binary_fn(float x, float y) {
    switch (OP) {
    case CG_OP_ADD: return x + y;
    case CG_OP_SUB: return x - y;
    case CG_OP_MUL: return x * y;
    case CG_OP_DIV: return x / y;
    case CG_OP_MAXIMUM: return f_maximum(x, y);
    case CG_OP_MINIMUM: return f_minimum(x, y);
    case CG_OP_POW: return powf(x, y);
    case CG_OP_GREATER: return x > y ? 1.0f : 0.0f;
    case CG_OP_GREATER_EQUAL: return x >= y ? 1.0f : 0.0f;
    case CG_OP_LESS: return x < y ? 1.0f : 0.0f;
    case CG_OP_LESS_EQUAL: return x <= y ? 1.0f : 0.0f;
    case CG_OP_EQUAL: return x == y ? 1.0f : 0.0f;
    case CG_OP_NOT_EQUAL: return x != y ? 1.0f : 0.0f;
    default: return 0.0f;
    }
}

template <int OP> __device__ __forceinline__ float unary_fn(float v, float p0, float p1) {
    switch (OP) {
    case CG_OP_NEG: return -v;
    case CG_OP_EXP: return expf(v);
    case CG_OP_LOG: return logf(v);
    case CG_OP_TANH: return tanhf(v);
    case CG_OP_SIGMOID: return f_sigmoid(v);
    case CG_OP_SIGN: return f_sign(v);
    case CG_OP_ABS: return fabsf(v);
    case CG_OP_SQRT: return sqrtf(v);
    case CG_OP_RSQRT: return 1.0f / sqrtf(v);
    case CG_OP_RECIPROCAL: return 1.0f / v;
    case CG_OP_SQUARE: return v * v;
    case CG_OP_RELU: return v < 0.0f ? 0.0f : v;
    case CG_OP_GELU_TANH: return f_gelu_tanh(v);
    case CG_OP_SILU: return v * f_sigmoid(v);
    case CG_CUDA_UNARY_AFFINE: return v * p0 + p1;
    case CG_CUDA_UNARY_POW: return powf(v, p0);
    case CG_CUDA_UNARY_CLAMP: return f_clamp(v, p0, p1);
    default: return 0.0f;
    }
}

/* ------------------------------------------------------------------ kernels */

template <int OP> __global__ void binary_kernel(cg_cuda_ew it) {
    GRID_STRIDE_LOOP(i, it.numel) {
        int64_t off[CG_CUDA_EW_MAX_OPS];
        ew_offsets(it, i, off);
        float a = load_float(it.data[1], it.dtype[1], off[1]);
        float b = load_float(it.data[2], it.dtype[2], off[2]);
        store_float(it.data[0], it.dtype[0], off[0], binary_fn<OP>(a, b));
    }
}

/* Packed f32 operands of one size (the common case): no index arithmetic, vector-friendly. */
template <int OP> __global__ void binary_packed_f32_kernel(float *o, const float *a, const float *b, int64_t n) {
    GRID_STRIDE_LOOP(i, n) o[i] = binary_fn<OP>(a[i], b[i]);
}

template <int OP> __global__ void unary_kernel(cg_cuda_ew it, float p0, float p1) {
    GRID_STRIDE_LOOP(i, it.numel) {
        int64_t off[CG_CUDA_EW_MAX_OPS];
        ew_offsets(it, i, off);
        store_float(it.data[0], it.dtype[0], off[0], unary_fn<OP>(load_float(it.data[1], it.dtype[1], off[1]), p0, p1));
    }
}

__global__ void where_kernel(cg_cuda_ew it) {
    GRID_STRIDE_LOOP(i, it.numel) {
        int64_t off[CG_CUDA_EW_MAX_OPS];
        ew_offsets(it, i, off);
        bool c = load_any(it.data[1], it.dtype[1], off[1]) != 0.0;
        float v = c ? load_float(it.data[2], it.dtype[2], off[2]) : load_float(it.data[3], it.dtype[3], off[3]);
        store_float(it.data[0], it.dtype[0], off[0], v);
    }
}

/* Same dtype: a plain element move of T (a type of the element's size). */
template <typename T> __global__ void copy_same_kernel(cg_cuda_ew it) {
    GRID_STRIDE_LOOP(i, it.numel) {
        int64_t off[CG_CUDA_EW_MAX_OPS];
        ew_offsets(it, i, off);
        ((T *)it.data[0])[off[0]] = ((const T *)it.data[1])[off[1]];
    }
}

__global__ void copy_f32_bf16_kernel(cg_cuda_ew it) {
    GRID_STRIDE_LOOP(i, it.numel) {
        int64_t off[CG_CUDA_EW_MAX_OPS];
        ew_offsets(it, i, off);
        store_float(it.data[0], it.dtype[0], off[0], load_float(it.data[1], it.dtype[1], off[1]));
    }
}

__global__ void copy_convert_kernel(cg_cuda_ew it) {
    GRID_STRIDE_LOOP(i, it.numel) {
        int64_t off[CG_CUDA_EW_MAX_OPS];
        ew_offsets(it, i, off);
        store_any(it.data[0], it.dtype[0], off[0], load_any(it.data[1], it.dtype[1], off[1]));
    }
}

__global__ void fill_kernel(cg_cuda_ew it, double value) {
    GRID_STRIDE_LOOP(i, it.numel) {
        int64_t off[CG_CUDA_EW_MAX_OPS];
        ew_offsets(it, i, off);
        store_any(it.data[0], it.dtype[0], off[0], value);
    }
}

__global__ void gelu_backward_kernel(float *dpre, const float *pre, const float *dy, int64_t n) {
    const float K = 0.7978845608028654f, C = 0.044715f; /* as cg_cpu_gelu_backward */
    GRID_STRIDE_LOOP(i, n) {
        float v = pre[i];
        float u = K * (v + C * v * v * v);
        float t = tanhf(u);
        float du = K * (1.0f + 3.0f * C * v * v);
        dpre[i] = dy[i] * (0.5f * (1.0f + t) + 0.5f * v * (1.0f - t * t) * du);
    }
}

__global__ void mul_add_kernel(float *out, const float *a, const float *b, int64_t n) {
    GRID_STRIDE_LOOP(i, n) out[i] += a[i] * b[i];
}

/* ------------------------------------------------------------------ launchers */

static cudaStream_t stream(void) { return cg_cuda_compute_stream(); }

static bool packed_f32_same(const cg_cuda_ew *it, int nops) {
    if (it->ndim != 1) return false;
    for (int k = 0; k < nops; k++)
        if (it->dtype[k] != CG_F32 || (it->strides[k][0] != 1 && it->numel > 1)) return false;
    return true;
}

template <int OP> static void launch_binary(const cg_cuda_ew *it) {
    unsigned blocks = ew_blocks(it->numel);
    if (packed_f32_same(it, 3))
        binary_packed_f32_kernel<OP><<<blocks, EW_THREADS, 0, stream()>>>((float *)it->data[0], (const float *)it->data[1],
                                                                          (const float *)it->data[2], it->numel);
    else
        binary_kernel<OP><<<blocks, EW_THREADS, 0, stream()>>>(*it);
}

extern "C" cg_status cg_cuda_binary(int op, const cg_cuda_ew *it) {
    if (it->numel == 0) return CG_OK;
    switch (op) {
#define CASE(OP) case OP: launch_binary<OP>(it); break;
        CASE(CG_OP_ADD) CASE(CG_OP_SUB) CASE(CG_OP_MUL) CASE(CG_OP_DIV) CASE(CG_OP_MAXIMUM) CASE(CG_OP_MINIMUM)
        CASE(CG_OP_POW) CASE(CG_OP_GREATER) CASE(CG_OP_GREATER_EQUAL) CASE(CG_OP_LESS) CASE(CG_OP_LESS_EQUAL)
        CASE(CG_OP_EQUAL) CASE(CG_OP_NOT_EQUAL)
#undef CASE
    default: return cg_set_error(CG_ERR_INVALID_ARG, "cuda binary: unknown op %d", op);
    }
    return cg_cuda_check_launch(cg_binary_op_name((cg_binary_op)op));
}

extern "C" cg_status cg_cuda_unary(int op, float p0, float p1, const cg_cuda_ew *it) {
    if (it->numel == 0) return CG_OK;
    unsigned blocks = ew_blocks(it->numel);
    switch (op) {
#define CASE(OP) case OP: unary_kernel<OP><<<blocks, EW_THREADS, 0, stream()>>>(*it, p0, p1); break;
        CASE(CG_OP_NEG) CASE(CG_OP_EXP) CASE(CG_OP_LOG) CASE(CG_OP_TANH) CASE(CG_OP_SIGMOID) CASE(CG_OP_SIGN)
        CASE(CG_OP_ABS) CASE(CG_OP_SQRT) CASE(CG_OP_RSQRT) CASE(CG_OP_RECIPROCAL) CASE(CG_OP_SQUARE) CASE(CG_OP_RELU)
        CASE(CG_OP_GELU_TANH) CASE(CG_OP_SILU) CASE(CG_CUDA_UNARY_AFFINE) CASE(CG_CUDA_UNARY_POW)
        CASE(CG_CUDA_UNARY_CLAMP)
#undef CASE
    default: return cg_set_error(CG_ERR_INVALID_ARG, "cuda unary: unknown op %d", op);
    }
    return cg_cuda_check_launch(op < CG_UNARY_OP_COUNT ? cg_unary_op_name((cg_unary_op)op) : "affine/pow/clamp");
}

extern "C" cg_status cg_cuda_where(const cg_cuda_ew *it) {
    if (it->numel == 0) return CG_OK;
    where_kernel<<<ew_blocks(it->numel), EW_THREADS, 0, stream()>>>(*it);
    return cg_cuda_check_launch("where");
}

extern "C" cg_status cg_cuda_copy(const cg_cuda_ew *it) {
    if (it->numel == 0) return CG_OK;
    unsigned blocks = ew_blocks(it->numel);
    int dd = it->dtype[0], sd = it->dtype[1];
    if (dd == sd) {
        switch (cg_dtype_size((cg_dtype)dd)) {
        case 1: copy_same_kernel<uint8_t><<<blocks, EW_THREADS, 0, stream()>>>(*it); break;
        case 2: copy_same_kernel<uint16_t><<<blocks, EW_THREADS, 0, stream()>>>(*it); break;
        case 4: copy_same_kernel<uint32_t><<<blocks, EW_THREADS, 0, stream()>>>(*it); break;
        case 8: copy_same_kernel<uint64_t><<<blocks, EW_THREADS, 0, stream()>>>(*it); break;
        default: return cg_set_error(CG_ERR_DTYPE, "copy: unknown dtype %d", dd);
        }
    } else if ((dd == CG_F32 || dd == CG_BF16) && (sd == CG_F32 || sd == CG_BF16)) {
        copy_f32_bf16_kernel<<<blocks, EW_THREADS, 0, stream()>>>(*it);
    } else {
        copy_convert_kernel<<<blocks, EW_THREADS, 0, stream()>>>(*it);
    }
    return cg_cuda_check_launch("copy");
}

extern "C" cg_status cg_cuda_fill(const cg_cuda_ew *it, double value) {
    if (it->numel == 0) return CG_OK;
    fill_kernel<<<ew_blocks(it->numel), EW_THREADS, 0, stream()>>>(*it, value);
    return cg_cuda_check_launch("fill");
}

extern "C" cg_status cg_cuda_gelu_tanh_backward(float *dpre, const float *pre, const float *dy, int64_t n) {
    if (n == 0) return CG_OK;
    gelu_backward_kernel<<<ew_blocks(n), EW_THREADS, 0, stream()>>>(dpre, pre, dy, n);
    return cg_cuda_check_launch("linear_gelu backward");
}

extern "C" cg_status cg_cuda_mul_add(float *out, const float *a, const float *b, int64_t n) {
    if (n == 0) return CG_OK;
    mul_add_kernel<<<ew_blocks(n), EW_THREADS, 0, stream()>>>(out, a, b, n);
    return cg_cuda_check_launch("mul_add");
}
