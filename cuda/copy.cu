/* Strided copy with conversion between any dtypes (cg_copy on one GPU) and fills, over the strided
 * iteration of cuda/ops.h. Conversions follow the CPU's cg_load_as_f64 / cg_store_from_f64: floats round to
 * nearest even, float-to-integer truncates toward zero and saturates, NaN becomes 0. */
#include "cuda/ew.cuh"

static cudaStream_t stream(void) { return cg_cuda_compute_stream(); }

/* Packed f32 -> bf16, four elements per thread (src 16-byte, dst 8-byte aligned); the first thread does the
 * last n % 4. Rounds to nearest even, as everywhere. */
__global__ void cast_f32_bf16_x4_kernel(__nv_bfloat16 *dst, const float *src, int64_t n) {
    const int64_t n4 = n / 4;
    GRID_STRIDE_LOOP(i, n4) {
        float4 v = ((const float4 *)src)[i];
        __nv_bfloat162 lo = __floats2bfloat162_rn(v.x, v.y), hi = __floats2bfloat162_rn(v.z, v.w);
        ((__nv_bfloat162 *)dst)[2 * i] = lo;
        ((__nv_bfloat162 *)dst)[2 * i + 1] = hi;
    }
    if (blockIdx.x == 0 && threadIdx.x == 0)
        for (int64_t i = n4 * 4; i < n; i++) dst[i] = __float2bfloat16_rn(src[i]);
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
    } else if (dd == CG_BF16 && sd == CG_F32 && it->ndim == 1 && (it->numel == 1 || (it->strides[0][0] == 1 &&
               it->strides[1][0] == 1)) && ((uintptr_t)it->data[1] & 15) == 0 && ((uintptr_t)it->data[0] & 7) == 0) {
        cast_f32_bf16_x4_kernel<<<ew_blocks(it->numel / 4 + 1), EW_THREADS, 0, stream()>>>(
            (__nv_bfloat16 *)it->data[0], (const float *)it->data[1], it->numel);
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

