/* The decode step's device-position kernels and the CUDA graph wrapper (cuda/decode.h). */
#include "cuda/decode.h"

#include <stdlib.h>

#include "cuda/common.cuh"
#include "cuda/nn_common.cuh"

#define THREADS 256

/* grid-stride launches: at most this many blocks */
static unsigned blocks_for(int64_t n) {
    unsigned b = cg_cuda_blocks(n, THREADS);
    return b < 4096 ? b : 4096;
}

template <typename T, typename I>
__global__ void embedding_kernel(T *out, const T *w, int64_t rows, int64_t C, const I *ids, int64_t n) {
    int64_t total = n * C;
    for (int64_t k = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; k < total; k += (int64_t)gridDim.x * blockDim.x) {
        int64_t i = k / C, c = k % C, id = (int64_t)ids[i];
        out[k] = id >= 0 && id < rows ? w[id * C + c] : cg_from_f32<T>(0.0f);
    }
}

extern "C" cg_status cg_cuda_decode_embedding(cg_dtype dt, void *out, const void *weight, int64_t rows, int64_t C,
                                              cg_dtype id_dtype, const void *ids, int64_t n) {
    const char *op = "decode embedding";
    if (!out || !weight || !ids || rows <= 0 || C <= 0 || n < 0)
        return cg_set_error(CG_ERR_INVALID_ARG, "%s: NULL buffers or %lld rows of %lld channels", op,
                            (long long)rows, (long long)C);
    if (id_dtype != CG_I32 && id_dtype != CG_I64)
        return cg_set_error(CG_ERR_DTYPE, "%s: ids of %s (i32 or i64)", op, cg_dtype_name(id_dtype));
    if (n == 0) return CG_OK;
    cudaStream_t st = cg_cuda_compute_stream();
    unsigned blocks = blocks_for(n * C);
    if (dt == CG_F32 && id_dtype == CG_I32)
        embedding_kernel<<<blocks, THREADS, 0, st>>>((float *)out, (const float *)weight, rows, C, (const int32_t *)ids, n);
    else if (dt == CG_F32)
        embedding_kernel<<<blocks, THREADS, 0, st>>>((float *)out, (const float *)weight, rows, C, (const int64_t *)ids, n);
    else if (dt == CG_BF16 && id_dtype == CG_I32)
        embedding_kernel<<<blocks, THREADS, 0, st>>>((__nv_bfloat16 *)out, (const __nv_bfloat16 *)weight, rows, C,
                                                     (const int32_t *)ids, n);
    else if (dt == CG_BF16)
        embedding_kernel<<<blocks, THREADS, 0, st>>>((__nv_bfloat16 *)out, (const __nv_bfloat16 *)weight, rows, C,
                                                     (const int64_t *)ids, n);
    else
        return cg_set_error(CG_ERR_DTYPE, "%s: weight of %s (f32 or bf16)", op, cg_dtype_name(dt));
    return cg_cuda_check_launch(op);
}

template <typename T>
__global__ void cache_write_kernel(T *store, const T *x, int64_t BH, int64_t L, int64_t T_len, int64_t D,
                                   const int64_t *pos) {
    const int64_t p0 = *pos, total = BH * T_len * D;
    for (int64_t k = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; k < total; k += (int64_t)gridDim.x * blockDim.x) {
        int64_t d = k % D, t = (k / D) % T_len, bh = k / (D * T_len), col = p0 + t;
        if (col >= 0 && col < L) store[(bh * L + col) * D + d] = x[k];
    }
}

extern "C" cg_status cg_cuda_decode_cache_write(cg_dtype dt, void *store, const void *x, int64_t B, int64_t H,
                                                int64_t L, int64_t T, int64_t D, const int64_t *pos) {
    const char *op = "decode cache write";
    if (!store || !x || !pos || B < 0 || H < 0 || L <= 0 || T < 0 || D <= 0)
        return cg_set_error(CG_ERR_INVALID_ARG, "%s: NULL buffers or shape [%lld, %lld, %lld of %lld, %lld]", op,
                            (long long)B, (long long)H, (long long)T, (long long)L, (long long)D);
    if (T > L) return cg_set_error(CG_ERR_SHAPE, "%s: %lld new columns exceed the cache's %lld", op, (long long)T, (long long)L);
    if (B * H * T == 0) return CG_OK;
    unsigned blocks = blocks_for(B * H * T * D);
    cudaStream_t st = cg_cuda_compute_stream();
    if (dt == CG_F32)
        cache_write_kernel<<<blocks, THREADS, 0, st>>>((float *)store, (const float *)x, B * H, L, T, D, pos);
    else if (dt == CG_BF16)
        cache_write_kernel<<<blocks, THREADS, 0, st>>>((__nv_bfloat16 *)store, (const __nv_bfloat16 *)x, B * H, L, T,
                                                       D, pos);
    else
        return cg_set_error(CG_ERR_DTYPE, "%s: %s (f32 or bf16)", op, cg_dtype_name(dt));
    return cg_cuda_check_launch(op);
}

/* RoPE forward (cg_rope_rotate, as cuda/nn_activation.cu's rope_kernel) with the table read from global memory. */
template <typename T>
__global__ void rope_table_kernel(T *out, const T *x, int64_t B, int64_t H, int64_t T_len, int64_t D,
                                  const double *inv_freq, const int64_t *positions) {
    int64_t half = D / 2, total = B * T_len * half;
    for (int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (int64_t)gridDim.x * blockDim.x) {
        int64_t i = idx % half, bt = idx / half, b = bt / T_len, t = bt % T_len;
        cg_rope_rotate(out, x, b, t, i, H, T_len, D, (double)positions[bt] * inv_freq[i], 1.0);
    }
}

extern "C" cg_status cg_cuda_decode_rope(cg_dtype dt, void *out, const void *x, int64_t B, int64_t H, int64_t T,
                                         int64_t D, const double *inv_freq, const int64_t *positions) {
    const char *op = "decode rope";
    if (!out || !x || !inv_freq || !positions)
        return cg_set_error(CG_ERR_INVALID_ARG, "%s: NULL buffers, table or positions", op);
    if (D <= 0 || D % 2 != 0) return cg_set_error(CG_ERR_SHAPE, "%s: head dim %lld must be even", op, (long long)D);
    if (B <= 0 || H <= 0 || T <= 0) return CG_OK;
    unsigned blocks = blocks_for(B * T * (D / 2));
    cudaStream_t st = cg_cuda_compute_stream();
    if (dt == CG_F32)
        rope_table_kernel<<<blocks, THREADS, 0, st>>>((float *)out, (const float *)x, B, H, T, D, inv_freq, positions);
    else if (dt == CG_BF16)
        rope_table_kernel<<<blocks, THREADS, 0, st>>>((__nv_bfloat16 *)out, (const __nv_bfloat16 *)x, B, H, T, D,
                                                      inv_freq, positions);
    else
        return cg_set_error(CG_ERR_DTYPE, "%s: %s (f32 or bf16)", op, cg_dtype_name(dt));
    return cg_cuda_check_launch(op);
}

/* ------------------------------------------------------------------ graphs */

struct cg_cuda_graph {
    cudaGraphExec_t exec;
};

extern "C" cg_status cg_cuda_graph_capture_begin(void) {
    return cg_cuda_check(cudaStreamBeginCapture(cg_cuda_compute_stream(), cudaStreamCaptureModeThreadLocal),
                         "cuda graph: cudaStreamBeginCapture");
}

extern "C" cg_status cg_cuda_graph_capture_end(cg_cuda_graph **out) {
    if (out) *out = NULL;
    cudaGraph_t graph = NULL;
    cudaError_t e = cudaStreamEndCapture(cg_cuda_compute_stream(), &graph);
    if (e != cudaSuccess || !graph) {
        if (graph) cudaGraphDestroy(graph);
        cudaGetLastError();
        return cg_cuda_check(e != cudaSuccess ? e : cudaErrorStreamCaptureInvalidated, "cuda graph: cudaStreamEndCapture");
    }
    if (!out) {
        cudaGraphDestroy(graph);
        return CG_OK;
    }
    cudaGraphExec_t exec = NULL;
    e = cudaGraphInstantiate(&exec, graph, 0);
    cudaGraphDestroy(graph); /* the executable graph keeps what it needs */
    if (e != cudaSuccess) return cg_cuda_check(e, "cuda graph: cudaGraphInstantiate");
    cg_cuda_graph *g = (cg_cuda_graph *)malloc(sizeof *g);
    if (!g) {
        cudaGraphExecDestroy(exec);
        return cg_set_error(CG_ERR_OOM, "cuda graph: out of host memory");
    }
    g->exec = exec;
    *out = g;
    return CG_OK;
}

extern "C" cg_status cg_cuda_graph_launch(cg_cuda_graph *g) {
    if (!g) return cg_set_error(CG_ERR_INVALID_ARG, "cuda graph launch: NULL graph");
    return cg_cuda_check(cudaGraphLaunch(g->exec, cg_cuda_compute_stream()), "cuda graph: cudaGraphLaunch");
}

extern "C" void cg_cuda_graph_free(cg_cuda_graph *g) {
    if (!g) return;
    cudaGraphExecDestroy(g->exec);
    free(g);
}
