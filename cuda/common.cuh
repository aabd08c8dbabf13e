/* Shared by every .cu file in cuda/: the streams, error checks that turn CUDA errors into cg errors naming the
 * op, and the f32/bf16 load/store helpers the kernels are templated on. C++ only (included from .cu files);
 * the C side sees only the extern "C" functions of the cuda/ headers. */
#ifndef CG_CUDA_COMMON_CUH
#define CG_CUDA_COMMON_CUH

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "core/dtype.h"
#include "core/error.h"
#include "cuda/runtime.h"

/* The current device's compute stream (every kernel of a step runs on it, in order) and its communication
 * stream (NCCL, overlapped with backward). Created on first use, non-blocking with respect to the legacy
 * default stream. */
static inline cudaStream_t cg_cuda_compute_stream(void) { return (cudaStream_t)cg_cuda_rt_stream(0); }
static inline cudaStream_t cg_cuda_comm_stream(void) { return (cudaStream_t)cg_cuda_rt_stream(1); }

/* A CUDA error as a cg error: "<op>: <message> (<name>)". Resets the sticky last-error slot. */
static inline cg_status cg_cuda_check(cudaError_t err, const char *op) {
    if (err == cudaSuccess) return CG_OK;
    cudaGetLastError();
    return cg_set_error(CG_ERR_CUDA, "%s: %s (%s)", op, cudaGetErrorString(err), cudaGetErrorName(err));
}
/* After a kernel launch: reports a bad launch configuration (or an earlier asynchronous fault). */
static inline cg_status cg_cuda_check_launch(const char *op) { return cg_cuda_check(cudaGetLastError(), op); }

/* Blocks of `threads` covering n items (at least one block). */
static inline unsigned cg_cuda_blocks(int64_t n, int threads) {
    int64_t b = (n + threads - 1) / threads;
    return (unsigned)(b < 1 ? 1 : b);
}

/* Kernels are written once, templated on the storage type T (float or __nv_bfloat16), and compute in f32. */
__device__ __forceinline__ float cg_to_f32(float v) { return v; }
__device__ __forceinline__ float cg_to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T> __device__ __forceinline__ T cg_from_f32(float v);
template <> __device__ __forceinline__ float cg_from_f32<float>(float v) { return v; }
/* round to nearest even, as the CPU's cg_f32_to_bf16 */
template <> __device__ __forceinline__ __nv_bfloat16 cg_from_f32<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

#endif
