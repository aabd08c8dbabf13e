/* Reductions over one axis of a packed tensor seen as [outer, n, inner]: sum, mean, max, min (with the
 * first index of the extreme). Accumulation is f32 in a fixed tree per output, so results repeat run to
 * run (no atomics). Two layouts:
 *  - inner == 1 (the reduced axis is the last): one block per row, threads stride the row, then a
 *    shared-memory tree;
 *  - inner > 1: a block covers 32 adjacent outputs (coalesced along inner) with 8 threads per output,
 *    each walking every 8th row, then a tree over those 8.
 * When that gives too few blocks to fill the GPU (a bias gradient: 768 outputs over 65536 rows; one long
 * row), the reduced axis is cut into S slices: pass 1 writes a partial (value, index) per slice and output,
 * pass 2 folds the S partials of each output in slice order. Still a fixed order: deterministic. */
#include "core/ops.h"
#include "cuda/ew.cuh"

#define ROW_THREADS 256
#define COL_X 32
#define COL_Y 8

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

/* Where a pass-1 block writes: the final output (S == 1) or partial slot s of output (o, j). */
struct reduce_dst {
    void *out;
    int out_dt;
    int64_t *argout;
    float *part_val; /* [S, outer * inner] when S > 1 */
    int64_t *part_idx;
    int64_t S, rows_per_slice, n;
};

__device__ __forceinline__ void reduce_store(int op, const reduce_dst &d, int64_t s, int64_t out_index,
                                             int64_t n_outputs, float v, int64_t idx) {
    if (d.S > 1) {
        d.part_val[s * n_outputs + out_index] = v;
        d.part_idx[s * n_outputs + out_index] = idx;
    } else {
        store_float(d.out, d.out_dt, out_index, finish(op, v, d.n));
        if (d.argout) d.argout[out_index] = idx;
    }
}

__global__ void reduce_rows_kernel(int op, reduce_dst dst, const void *x, int x_dt, int64_t rows) {
    __shared__ float s_val[ROW_THREADS];
    __shared__ int64_t s_idx[ROW_THREADS];
    bool is_sum = op == CG_REDUCE_SUM || op == CG_REDUCE_MEAN, is_max = op == CG_REDUCE_MAX;
    const int64_t n = dst.n;
    for (int64_t work = blockIdx.x; work < rows * dst.S; work += gridDim.x) {
        const int64_t r = work / dst.S, sl = work % dst.S;
        const int64_t begin = sl * dst.rows_per_slice;
        const int64_t end = begin + dst.rows_per_slice < n ? begin + dst.rows_per_slice : n;
        const int64_t base = r * n;
        float acc = 0.0f;
        extreme e = {0.0f, -1};
        for (int64_t j = begin + threadIdx.x; j < end; j += blockDim.x) {
            float v = load_float(x, x_dt, base + j);
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
        if (threadIdx.x == 0) reduce_store(op, dst, sl, r, rows, s_val[0], s_idx[0]);
        __syncthreads(); /* the shared arrays are reused by the next row */
    }
}

__global__ void reduce_cols_kernel(int op, reduce_dst dst, const void *x, int x_dt, int64_t outer, int64_t inner) {
    __shared__ float s_val[COL_Y][COL_X];
    __shared__ int64_t s_idx[COL_Y][COL_X];
    bool is_sum = op == CG_REDUCE_SUM || op == CG_REDUCE_MEAN, is_max = op == CG_REDUCE_MAX;
    const int64_t n = dst.n;
    const int64_t col_tiles = (inner + COL_X - 1) / COL_X;
    for (int64_t work = blockIdx.x; work < outer * col_tiles * dst.S; work += gridDim.x) {
        const int64_t tile = work / dst.S, sl = work % dst.S;
        const int64_t begin = sl * dst.rows_per_slice;
        const int64_t end = begin + dst.rows_per_slice < n ? begin + dst.rows_per_slice : n;
        int64_t o = tile / col_tiles, j = (tile % col_tiles) * COL_X + threadIdx.x;
        float acc = 0.0f;
        extreme e = {0.0f, -1};
        if (j < inner) {
            const int64_t base = o * n * inner + j;
            for (int64_t r = begin + threadIdx.y; r < end; r += COL_Y) {
                float v = load_float(x, x_dt, base + r * inner);
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
            reduce_store(op, dst, sl, o * inner + j, outer * inner, is_sum ? a : best.v, best.i);
        }
        __syncthreads();
    }
}

/* Pass 2: output k folds its S partials in slice order. */
__global__ void reduce_fold_kernel(int op, reduce_dst dst, int64_t n_outputs) {
    bool is_sum = op == CG_REDUCE_SUM || op == CG_REDUCE_MEAN, is_max = op == CG_REDUCE_MAX;
    for (int64_t k = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; k < n_outputs; k += (int64_t)gridDim.x * blockDim.x) {
        float acc = 0.0f;
        extreme best = {0.0f, -1};
        for (int64_t s = 0; s < dst.S; s++) {
            float v = dst.part_val[s * n_outputs + k];
            int64_t i = dst.part_idx[s * n_outputs + k];
            if (is_sum) {
                acc += v;
            } else if (i >= 0) {
                extreme c = {v, i};
                if (best.i < 0 || better(is_max, c, best)) best = c;
            }
        }
        store_float(dst.out, dst.out_dt, k, finish(op, is_sum ? acc : best.v, dst.n));
        if (dst.argout) dst.argout[k] = best.i;
    }
}

#define TARGET_BLOCKS 264 /* about two blocks per SM of an H100/H200 */
#define MIN_ROWS_PER_SLICE 256
#define MAX_SLICES 1024

/* Slices of the reduced axis: enough blocks to fill the GPU, at least MIN_ROWS_PER_SLICE rows each. */
static int64_t slices_for(int64_t outer, int64_t n, int64_t inner) {
    int64_t blocks = inner == 1 ? outer : outer * ((inner + COL_X - 1) / COL_X);
    if (blocks >= TARGET_BLOCKS) return 1;
    int64_t s = (TARGET_BLOCKS + blocks - 1) / blocks, by_rows = n / MIN_ROWS_PER_SLICE;
    if (s > by_rows) s = by_rows;
    if (s > MAX_SLICES) s = MAX_SLICES;
    return s < 1 ? 1 : s;
}

/* The partial values take the front of the scratch, rounded up to 16 bytes; the indices follow. */
static size_t part_val_bytes(int64_t count) { return ((size_t)count * sizeof(float) + 15) & ~(size_t)15; }

extern "C" size_t cg_cuda_reduce_scratch_bytes(int64_t outer, int64_t n, int64_t inner) {
    int64_t s = slices_for(outer, n, inner);
    return s > 1 ? part_val_bytes(s * outer * inner) + (size_t)(s * outer * inner) * sizeof(int64_t) : 0;
}

extern "C" cg_status cg_cuda_reduce(int op, void *out, int out_dtype, int64_t *argout, const void *x, int x_dtype,
                                    int64_t outer, int64_t n, int64_t inner, void *scratch) {
    if (outer == 0 || inner == 0 || n <= 0) return CG_OK;
    cudaStream_t st = cg_cuda_compute_stream();
    reduce_dst d;
    d.out = out, d.out_dt = out_dtype, d.argout = argout, d.n = n;
    d.S = slices_for(outer, n, inner);
    if (d.S > 1 && !scratch) d.S = 1; /* no scratch given: one pass */
    d.rows_per_slice = (n + d.S - 1) / d.S;
    d.part_val = d.S > 1 ? (float *)scratch : NULL;
    d.part_idx = d.S > 1 ? (int64_t *)((char *)scratch + part_val_bytes(d.S * outer * inner)) : NULL;
    const int64_t max_blocks = 1 << 16;
    if (inner == 1) {
        int64_t work = outer * d.S, blocks = work < max_blocks ? work : max_blocks;
        reduce_rows_kernel<<<(unsigned)blocks, ROW_THREADS, 0, st>>>(op, d, x, x_dtype, outer);
    } else {
        int64_t work = outer * ((inner + COL_X - 1) / COL_X) * d.S;
        int64_t blocks = work < max_blocks ? work : max_blocks;
        reduce_cols_kernel<<<(unsigned)blocks, dim3(COL_X, COL_Y), 0, st>>>(op, d, x, x_dtype, outer, inner);
    }
    if (d.S > 1) {
        int64_t n_out = outer * inner;
        unsigned blocks = cg_cuda_blocks(n_out, 256);
        if (blocks > (1u << 16)) blocks = 1u << 16;
        reduce_fold_kernel<<<blocks, 256, 0, st>>>(op, d, n_out);
    }
    return cg_cuda_check_launch(cg_reduce_op_name((cg_reduce_op)op));
}
