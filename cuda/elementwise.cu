/* Elementwise kernels: binary ops with broadcasting, the unary family, where, and the linear layer's GELU
 * backward and mul-add pieces,
 * over the strided iteration of cuda/ops.h. One thread per output element (grid-stride); each operand's
 * offset comes from the element's logical index and the operand's strides, so any view (transposed,
 * sliced, expanded) is read in place. Float operands load as f32 whatever their storage (f32 or bf16) and
 * the math matches the CPU kernels of core/ops_elementwise.c expression for expression. */
#include "core/ops.h"
#include "cuda/ew.cuh"

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

/* The same with 16-byte loads and stores (all three pointers 16-byte aligned); the last n % 4 elements are
 * done by the first thread. */
template <int OP> __global__ void binary_packed_f32x4_kernel(float *o, const float *a, const float *b, int64_t n) {
    const int64_t n4 = n / 4;
    GRID_STRIDE_LOOP(i, n4) {
        float4 x = ((const float4 *)a)[i], y = ((const float4 *)b)[i];
        ((float4 *)o)[i] = make_float4(binary_fn<OP>(x.x, y.x), binary_fn<OP>(x.y, y.y), binary_fn<OP>(x.z, y.z),
                                       binary_fn<OP>(x.w, y.w));
    }
    if (blockIdx.x == 0 && threadIdx.x == 0)
        for (int64_t i = n4 * 4; i < n; i++) o[i] = binary_fn<OP>(a[i], b[i]);
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

static bool aligned16(const void *p) { return ((uintptr_t)p & 15) == 0; }

template <int OP> static void launch_binary(const cg_cuda_ew *it) {
    unsigned blocks = ew_blocks(it->numel);
    if (packed_f32_same(it, 3) && aligned16(it->data[0]) && aligned16(it->data[1]) && aligned16(it->data[2]) &&
        it->numel >= 4)
        binary_packed_f32x4_kernel<OP><<<ew_blocks(it->numel / 4), EW_THREADS, 0, stream()>>>(
            (float *)it->data[0], (const float *)it->data[1], (const float *)it->data[2], it->numel);
    else if (packed_f32_same(it, 3))
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
