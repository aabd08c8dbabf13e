/* Reductions over one axis of a packed tensor seen as [outer, n, inner]: sum, mean, max, min (with the
 * first index of the extreme). Accumulation is f32 in a fixed tree per output, so results repeat run to
 * run (no atomics). Two layouts:
 *  - inner == 1 (the reduced axis is the last): one block per row, threads stride the row, then a
 *    shared-memory tree;
 *  - inner > 1: a block covers 32 adjacent outputs (coalesced along inner) with 8 threads per output,
 *    each walking every 8th row, then a tree over those 8. */
#include "core/ops.h"
#include "cuda/common.cuh"
#include "cuda/ops.h"

#define ROW_THREADS 256
#define COL_X 32
#define COL_Y 8

__device__ __forceinline__ float load_f(const void *p, int dt, int64_t i) {
    if (dt == CG_BF16) return __bfloat162float(((const __nv_bfloat16 *)p)[i]);
    return ((const float *)p)[i];
}
__device__ __forceinline__ void store_f(void *p, int dt, int64_t i, float v) {
    if (dt == CG_BF16) ((__nv_bfloat16 *)p)[i] = __float2bfloat16_rn(v);
    else ((float *)p)[i] = v;
}

/* A partial extreme: the value and its index along the axis. */
struct extreme {
    float v;
    int64_t i;
};

/* a comes before b in the order "max (min) first, NaN first of all, ties to the smaller index": the same
 * answer as the CPU's left-to-right scan (the first NaN, else the first extreme). */
__device__ __forceinline__ bool better(bool is_max, extreme a, extreme b) {
    bool an = a.v != a.v, bn = b.v != b.v;
    if (an || bn) return an && (!bn || a.i < b.i);
    if (a.v == b.v) return a.i < b.i;
    return is_max ? a.v > b.v : a.v < b.v;
}

__device__ __forceinline__ float finish(int op, float v, int64_t n) { return op == CG_REDUCE_MEAN ? v / (float)n : v; }

__global__ void reduce_rows_kernel(int op, void *out, int out_dt, int64_t *argout, const void *x, int x_dt,
                                   int64_t rows, int64_t n) {
    __shared__ float s_val[ROW_THREADS];
    __shared__ int64_t s_idx[ROW_THREADS];
    bool is_sum = op == CG_REDUCE_SUM || op == CG_REDUCE_MEAN, is_max = op == CG_REDUCE_MAX;
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const int64_t base = r * n;
        float acc = 0.0f;
        extreme e = {0.0f, -1};
        for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
            float v = load_f(x, x_dt, base + j);
            if (is_sum) {
                acc += v;
            } else {
                extreme c = {v, j};
                if (e.i < 0 || better(is_max, c, e)) e = c;
            }
        }
        s_val[threadIdx.x] = is_sum ? acc : e.v;
        s_idx[threadIdx.x] = e.i;
        __syncthreads();
        for (int w = blockDim.x / 2; w > 0; w /= 2) {
            if ((int)threadIdx.x < w) {
                int o = threadIdx.x + w;
                if (is_sum) {
                    s_val[threadIdx.x] += s_val[o];
                } else if (s_idx[o] >= 0) {
                    extreme a = {s_val[threadIdx.x], s_idx[threadIdx.x]}, b = {s_val[o], s_idx[o]};
                    if (a.i < 0 || better(is_max, b, a)) {
                        s_val[threadIdx.x] = b.v;
                        s_idx[threadIdx.x] = b.i;
                    }
                }
            }
            __syncthreads();
        }
        if (threadIdx.x == 0) {
            store_f(out, out_dt, r, finish(op, s_val[0], n));
            if (argout) argout[r] = s_idx[0];
        }
        __syncthreads(); /* the shared arrays are reused by the next row */
    }
}

__global__ void reduce_cols_kernel(int op, void *out, int out_dt, int64_t *argout, const void *x, int x_dt,
                                   int64_t outer, int64_t n, int64_t inner) {
    __shared__ float s_val[COL_Y][COL_X];
    __shared__ int64_t s_idx[COL_Y][COL_X];
    bool is_sum = op == CG_REDUCE_SUM || op == CG_REDUCE_MEAN, is_max = op == CG_REDUCE_MAX;
    const int64_t col_tiles = (inner + COL_X - 1) / COL_X;
    for (int64_t tile = blockIdx.x; tile < outer * col_tiles; tile += gridDim.x) {
        int64_t o = tile / col_tiles, j = (tile % col_tiles) * COL_X + threadIdx.x;
        float acc = 0.0f;
        extreme e = {0.0f, -1};
        if (j < inner) {
            const int64_t base = o * n * inner + j;
            for (int64_t r = threadIdx.y; r < n; r += COL_Y) {
                float v = load_f(x, x_dt, base + r * inner);
                if (is_sum) {
                    acc += v;
                } else {
                    extreme c = {v, r};
                    if (e.i < 0 || better(is_max, c, e)) e = c;
                }
            }
        }
        s_val[threadIdx.y][threadIdx.x] = is_sum ? acc : e.v;
        s_idx[threadIdx.y][threadIdx.x] = e.i;
        __syncthreads();
        if (threadIdx.y == 0 && j < inner) {
            float a = s_val[0][threadIdx.x];
            extreme best = {s_val[0][threadIdx.x], s_idx[0][threadIdx.x]};
            for (int y = 1; y < COL_Y; y++) {
                if (is_sum) {
                    a += s_val[y][threadIdx.x];
                } else if (s_idx[y][threadIdx.x] >= 0) {
                    extreme c = {s_val[y][threadIdx.x], s_idx[y][threadIdx.x]};
                    if (best.i < 0 || better(is_max, c, best)) best = c;
                }
            }
            store_f(out, out_dt, o * inner + j, finish(op, is_sum ? a : best.v, n));
            if (argout) argout[o * inner + j] = best.i;
        }
        __syncthreads();
    }
}

extern "C" cg_status cg_cuda_reduce(int op, void *out, int out_dtype, int64_t *argout, const void *x, int x_dtype,
                                    int64_t outer, int64_t n, int64_t inner) {
    if (outer == 0 || inner == 0 || n <= 0) return CG_OK;
    cudaStream_t st = cg_cuda_compute_stream();
    const int64_t max_blocks = 1 << 16;
    if (inner == 1) {
        int64_t blocks = outer < max_blocks ? outer : max_blocks;
        reduce_rows_kernel<<<(unsigned)blocks, ROW_THREADS, 0, st>>>(op, out, out_dtype, argout, x, x_dtype, outer, n);
    } else {
        int64_t tiles = outer * ((inner + COL_X - 1) / COL_X);
        int64_t blocks = tiles < max_blocks ? tiles : max_blocks;
        reduce_cols_kernel<<<(unsigned)blocks, dim3(COL_X, COL_Y), 0, st>>>(op, out, out_dtype, argout, x, x_dtype,
                                                                            outer, n, inner);
    }
    return cg_cuda_check_launch(cg_reduce_op_name((cg_reduce_op)op));
}
