/* LayerNorm, RMSNorm and the fused residual-add + norm on the GPU (the CPU kernels in core/nn_norm.c are the
 * reference). One block per row for the per-row work; the weight/bias gradients are column sums over all
 * rows, done in two passes (per-row-group partials, then a fixed-order sum per column) so that they are
 * deterministic without atomics. */
#include "cuda/nn.h"
#include "cuda/nn_common.cuh"

/* Row groups of the first pass of the column sums: each block of the pass sums rows g, g + G, g + 2G, ... */
#define NORM_ROW_GROUPS 256
#define COL_THREADS 256

static int64_t row_groups(int64_t N) { return N < NORM_ROW_GROUPS ? N : NORM_ROW_GROUPS; }

extern "C" size_t cg_cuda_norm_backward_workspace(int64_t N, int64_t C) {
    return (size_t)(2 * row_groups(N) * C);
}

/* ------------------------------------------------------------------ forward */

/* Mean (LayerNorm) or 0 (RMSNorm) and rstd of row xr, reading the row as stored. */
template <typename T>
__device__ void row_stats(const T *xr, int64_t C, float eps, bool rms, float *shm, float *mean_out, float *rstd_out) {
    float m = 0.0f;
    if (!rms) {
        float s = 0.0f;
        for (int64_t c = threadIdx.x; c < C; c += blockDim.x) s += cg_to_f32(xr[c]);
        m = cg_block_sum(s, shm) / (float)C;
    }
    float v = 0.0f;
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
        float d = cg_to_f32(xr[c]) - m;
        v += d * d;
    }
    v = cg_block_sum(v, shm) / (float)C;
    *mean_out = m;
    *rstd_out = 1.0f / sqrtf(v + eps);
}

/* One block per row: optionally sum = x + residual first (stored in T, the norm reads the stored sum), then
 * the statistics and out = xhat * weight + bias. mean may be NULL (RMSNorm). */
template <typename T>
__global__ void norm_forward_kernel(T *out, float *mean, float *rstd, T *sum, const T *x, const T *residual,
                                    const T *weight, const T *bias, int64_t C, float eps, bool rms) {
    __shared__ float shm[32];
    int64_t n = blockIdx.x;
    const T *xr = x + n * C;
    if (residual) {
        T *sr = sum + n * C;
        const T *rr = residual + n * C;
        for (int64_t c = threadIdx.x; c < C; c += blockDim.x)
            sr[c] = cg_from_f32<T>(cg_to_f32(xr[c]) + cg_to_f32(rr[c]));
        xr = sr; /* each thread reads back only what it wrote itself: no barrier needed */
    }
    float m, r;
    row_stats(xr, C, eps, rms, shm, &m, &r);
    if (threadIdx.x == 0) {
        if (mean) mean[n] = m;
        rstd[n] = r;
    }
    T *orow = out + n * C;
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
        float y = (cg_to_f32(xr[c]) - m) * r;
        if (weight) y *= cg_to_f32(weight[c]);
        if (bias) y += cg_to_f32(bias[c]);
        orow[c] = cg_from_f32<T>(y);
    }
}

template <typename T>
static void launch_norm_forward(void *out, float *mean, float *rstd, void *sum, const void *x, const void *residual,
                                const void *weight, const void *bias, int64_t N, int64_t C, float eps, bool rms) {
    norm_forward_kernel<T><<<(unsigned)N, cg_row_threads(C), 0, cg_cuda_compute_stream()>>>(
        (T *)out, rms ? NULL : mean, rstd, (T *)sum, (const T *)x, (const T *)residual, (const T *)weight,
        rms ? NULL : (const T *)bias, C, eps, rms);
}

static cg_status norm_forward(const char *op, cg_dtype dt, void *out, float *mean, float *rstd, void *sum,
                              const void *x, const void *residual, const void *weight, const void *bias, int64_t N,
                              int64_t C, float eps, bool rms) {
    if (N <= 0 || C <= 0) return CG_OK;
    if (N > 0x7fffffff) return cg_set_error(CG_ERR_SHAPE, "%s: %lld rows exceed the CUDA grid", op, (long long)N);
    return cg_cuda_dispatch(op, dt, [&](auto tag) {
        launch_norm_forward<decltype(tag)>(out, mean, rstd, sum, x, residual, weight, bias, N, C, eps, rms);
    });
}

extern "C" cg_status cg_cuda_layernorm_forward(cg_dtype dt, void *out, float *mean, float *rstd, const void *x,
                                               const void *weight, const void *bias, int64_t N, int64_t C, float eps) {
    return norm_forward("layernorm", dt, out, mean, rstd, NULL, x, NULL, weight, bias, N, C, eps, false);
}

extern "C" cg_status cg_cuda_rmsnorm_forward(cg_dtype dt, void *out, float *rstd, const void *x, const void *weight,
                                             int64_t N, int64_t C, float eps) {
    return norm_forward("rmsnorm", dt, out, NULL, rstd, NULL, x, NULL, weight, NULL, N, C, eps, true);
}

extern "C" cg_status cg_cuda_residual_norm_forward(cg_dtype dt, void *sum, void *out, float *mean, float *rstd,
                                                   const void *x, const void *residual, const void *weight,
                                                   const void *bias, int64_t N, int64_t C, float eps, bool rms) {
    return norm_forward("residual_norm", dt, out, mean, rstd, sum, x, residual, weight, bias, N, C, eps, rms);
}

/* ------------------------------------------------------------------ backward */

/* dx for one row per block: dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)), dxhat = dout * w;
 * for RMSNorm (mean NULL) xhat = x * rstd and the mean(dxhat) term is absent. */
template <typename T>
__global__ void norm_backward_dx_kernel(T *dx, const T *dout, const T *x, const T *weight, const float *mean,
                                        const float *rstd, int64_t C) {
    __shared__ float shm[32];
    int64_t n = blockIdx.x;
    const T *xr = x + n * C, *dr = dout + n * C;
    float m = mean ? mean[n] : 0.0f, r = rstd[n];
    float s_dxhat = 0.0f, s_dxhat_xhat = 0.0f;
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
        float dxhat = cg_to_f32(dr[c]) * (weight ? cg_to_f32(weight[c]) : 1.0f);
        s_dxhat += dxhat;
        s_dxhat_xhat += dxhat * ((cg_to_f32(xr[c]) - m) * r);
    }
    float mean_dxhat = mean ? cg_block_sum(s_dxhat, shm) / (float)C : 0.0f;
    float mean_dxhat_xhat = cg_block_sum(s_dxhat_xhat, shm) / (float)C;
    T *dxr = dx + n * C;
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
        float dxhat = cg_to_f32(dr[c]) * (weight ? cg_to_f32(weight[c]) : 1.0f);
        float xhat = (cg_to_f32(xr[c]) - m) * r;
        dxr[c] = cg_from_f32<T>(r * (dxhat - mean_dxhat - xhat * mean_dxhat_xhat));
    }
}

/* First pass of dweight = sum_n dout * xhat and dbias = sum_n dout: block (column block, row group g) sums rows
 * g, g + G, ... of its columns into partial_w[g, c] and partial_b[g, c]. Threads walk columns, so each row
 * read is coalesced. */
template <typename T>
__global__ void norm_backward_partial_kernel(float *partial_w, float *partial_b, const T *dout, const T *x,
                                             const float *mean, const float *rstd, int64_t N, int64_t C, int64_t G) {
    int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x, g = blockIdx.y;
    if (c >= C) return;
    float aw = 0.0f, ab = 0.0f;
    for (int64_t n = g; n < N; n += G) {
        float d = cg_to_f32(dout[n * C + c]);
        float xhat = (cg_to_f32(x[n * C + c]) - (mean ? mean[n] : 0.0f)) * rstd[n];
        aw += d * xhat;
        ab += d;
    }
    partial_w[g * C + c] = aw;
    if (partial_b) partial_b[g * C + c] = ab;
}

/* Second pass: each column's G partials summed in group order. */
template <typename T>
__global__ void column_sum_kernel(T *out, const float *partial, int64_t C, int64_t G) {
    int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    float s = 0.0f;
    for (int64_t g = 0; g < G; g++) s += partial[g * C + c];
    out[c] = cg_from_f32<T>(s);
}

template <typename T>
static void launch_norm_backward(void *dx, void *dweight, void *dbias, const void *dout, const void *x,
                                 const void *weight, const float *mean, const float *rstd, int64_t N, int64_t C,
                                 float *workspace) {
    cudaStream_t st = cg_cuda_compute_stream();
    if (dx)
        norm_backward_dx_kernel<T><<<(unsigned)N, cg_row_threads(C), 0, st>>>(
            (T *)dx, (const T *)dout, (const T *)x, (const T *)weight, mean, rstd, C);
    if (dweight || dbias) {
        int64_t G = row_groups(N);
        float *pw = workspace, *pb = dbias ? workspace + G * C : NULL;
        dim3 grid(cg_cuda_blocks(C, COL_THREADS), (unsigned)G);
        norm_backward_partial_kernel<T><<<grid, COL_THREADS, 0, st>>>(pw, pb, (const T *)dout, (const T *)x, mean,
                                                                      rstd, N, C, G);
        if (dweight) column_sum_kernel<T><<<cg_cuda_blocks(C, COL_THREADS), COL_THREADS, 0, st>>>((T *)dweight, pw, C, G);
        if (dbias) column_sum_kernel<T><<<cg_cuda_blocks(C, COL_THREADS), COL_THREADS, 0, st>>>((T *)dbias, pb, C, G);
    }
}

static cg_status norm_backward(const char *op, cg_dtype dt, void *dx, void *dweight, void *dbias, const void *dout,
                               const void *x, const void *weight, const float *mean, const float *rstd, int64_t N,
                               int64_t C, float *workspace) {
    if (C <= 0) return CG_OK;
    if (N > 0x7fffffff) return cg_set_error(CG_ERR_SHAPE, "%s: %lld rows exceed the CUDA grid", op, (long long)N);
    if ((dweight || dbias) && !workspace)
        return cg_set_error(CG_ERR_INVALID_ARG, "%s: dweight/dbias need the workspace", op);
    if (N <= 0) { /* no rows: the column sums are 0 */
        cg_status s = CG_OK;
        size_t bytes = (size_t)C * cg_dtype_size(dt);
        if (dweight) s = cg_cuda_check(cudaMemsetAsync(dweight, 0, bytes, cg_cuda_compute_stream()), op);
        if (s == CG_OK && dbias) s = cg_cuda_check(cudaMemsetAsync(dbias, 0, bytes, cg_cuda_compute_stream()), op);
        return s;
    }
    return cg_cuda_dispatch(op, dt, [&](auto tag) {
        launch_norm_backward<decltype(tag)>(dx, dweight, dbias, dout, x, weight, mean, rstd, N, C, workspace);
    });
}

extern "C" cg_status cg_cuda_layernorm_backward(cg_dtype dt, void *dx, void *dweight, void *dbias, const void *dout,
                                                const void *x, const void *weight, const float *mean,
                                                const float *rstd, int64_t N, int64_t C, float *workspace) {
    return norm_backward("layernorm backward", dt, dx, dweight, dbias, dout, x, weight, mean, rstd, N, C, workspace);
}

extern "C" cg_status cg_cuda_rmsnorm_backward(cg_dtype dt, void *dx, void *dweight, const void *dout, const void *x,
                                              const void *weight, const float *rstd, int64_t N, int64_t C,
                                              float *workspace) {
    return norm_backward("rmsnorm backward", dt, dx, dweight, NULL, dout, x, weight, NULL, rstd, N, C, workspace);
}
