/* Softmax and log-softmax (forward/backward) and cross-entropy fused with the softmax on the GPU (the CPU
 * kernels in core/nn_softmax.c are the reference). One block per row; the row's max and sum of exponentials
 * come from one online pass (each thread keeps its own (max, sum) pair, merged across the block in a fixed
 * order), so the logits are read once for the statistics and once for the output. */
#include "cuda/nn.h"
#include "cuda/nn_common.cuh"

/* ------------------------------------------------------------------ softmax, log-softmax */

/* Row r of a packed [outer, dim, inner] array: elements base, base + inner, ... */
__device__ __forceinline__ int64_t row_base(int64_t r, int64_t dim, int64_t inner) {
    return (r / inner) * dim * inner + r % inner;
}

template <typename T>
__global__ void softmax_forward_kernel(T *out, const T *x, int64_t dim, int64_t inner, bool want_log) {
    __shared__ float shm[64];
    int64_t base = row_base(blockIdx.x, dim, inner);
    const T *xr = x + base;
    T *yr = out + base;
    cg_maxsum acc = {-INFINITY, 0.0f};
    for (int64_t k = threadIdx.x; k < dim; k += blockDim.x) acc = cg_maxsum_add(acc, cg_to_f32(xr[k * inner]));
    acc = cg_block_maxsum(acc, shm);
    float m = acc.m == -INFINITY ? 0.0f : acc.m; /* an all -inf row, as the CPU kernel */
    if (want_log) {
        float log_sum = logf(acc.s); /* (x - m) - log(sum): precise for large logits, as the CPU kernel */
        for (int64_t k = threadIdx.x; k < dim; k += blockDim.x)
            yr[k * inner] = cg_from_f32<T>((cg_to_f32(xr[k * inner]) - m) - log_sum);
    } else {
        float inv = 1.0f / acc.s;
        for (int64_t k = threadIdx.x; k < dim; k += blockDim.x)
            yr[k * inner] = cg_from_f32<T>(expf(cg_to_f32(xr[k * inner]) - m) * inv);
    }
}

/* softmax: dx = y * (dy - sum(dy * y)); log-softmax: dx = dy - exp(y) * sum(dy). */
template <typename T>
__global__ void softmax_backward_kernel(T *dx, const T *y, const T *dy, int64_t dim, int64_t inner, bool from_log) {
    __shared__ float shm[32];
    int64_t base = row_base(blockIdx.x, dim, inner);
    float s = 0.0f;
    for (int64_t k = threadIdx.x; k < dim; k += blockDim.x) {
        int64_t i = base + k * inner;
        s += from_log ? cg_to_f32(dy[i]) : cg_to_f32(dy[i]) * cg_to_f32(y[i]);
    }
    s = cg_block_sum(s, shm);
    for (int64_t k = threadIdx.x; k < dim; k += blockDim.x) {
        int64_t i = base + k * inner;
        float yi = cg_to_f32(y[i]), dyi = cg_to_f32(dy[i]);
        dx[i] = cg_from_f32<T>(from_log ? dyi - expf(yi) * s : yi * (dyi - s));
    }
}

static cg_status check_rows(const char *op, int64_t rows) {
    if (rows > 0x7fffffff) return cg_set_error(CG_ERR_SHAPE, "%s: %lld rows exceed the CUDA grid", op, (long long)rows);
    return CG_OK;
}

static cg_status softmax_fwd(const char *op, cg_dtype dt, void *out, const void *x, int64_t outer, int64_t dim,
                             int64_t inner, bool want_log) {
    int64_t rows = outer * inner;
    if (rows <= 0 || dim <= 0) return CG_OK;
    if (check_rows(op, rows) != CG_OK) return cg_last_status();
    return cg_cuda_dispatch(op, dt, [&](auto tag) {
        using T = decltype(tag);
        softmax_forward_kernel<T><<<(unsigned)rows, cg_row_threads(dim), 0, cg_cuda_compute_stream()>>>(
            (T *)out, (const T *)x, dim, inner, want_log);
    });
}

static cg_status softmax_bwd(const char *op, cg_dtype dt, void *dx, const void *y, const void *dy, int64_t outer,
                             int64_t dim, int64_t inner, bool from_log) {
    int64_t rows = outer * inner;
    if (rows <= 0 || dim <= 0) return CG_OK;
    if (check_rows(op, rows) != CG_OK) return cg_last_status();
    return cg_cuda_dispatch(op, dt, [&](auto tag) {
        using T = decltype(tag);
        softmax_backward_kernel<T><<<(unsigned)rows, cg_row_threads(dim), 0, cg_cuda_compute_stream()>>>(
            (T *)dx, (const T *)y, (const T *)dy, dim, inner, from_log);
    });
}

extern "C" cg_status cg_cuda_softmax_forward(cg_dtype dt, void *out, const void *x, int64_t outer, int64_t dim,
                                             int64_t inner) {
    return softmax_fwd("softmax", dt, out, x, outer, dim, inner, false);
}
extern "C" cg_status cg_cuda_log_softmax_forward(cg_dtype dt, void *out, const void *x, int64_t outer, int64_t dim,
                                                 int64_t inner) {
    return softmax_fwd("log_softmax", dt, out, x, outer, dim, inner, true);
}
extern "C" cg_status cg_cuda_softmax_backward(cg_dtype dt, void *dx, const void *y, const void *dy, int64_t outer,
                                              int64_t dim, int64_t inner) {
    return softmax_bwd("softmax backward", dt, dx, y, dy, outer, dim, inner, false);
}
extern "C" cg_status cg_cuda_log_softmax_backward(cg_dtype dt, void *dx, const void *y, const void *dy, int64_t outer,
                                                  int64_t dim, int64_t inner) {
    return softmax_bwd("log_softmax backward", dt, dx, y, dy, outer, dim, inner, true);
}

/* ------------------------------------------------------------------ cross-entropy */

/* One block per row, one pass: the online (max, sum of exp) and the plain sum (for label smoothing); the
 * target's logit is read directly. */
template <typename T>
__global__ void cross_entropy_forward_kernel(float *row_loss, float *lse, const T *logits, const int64_t *targets,
                                             int64_t V, int64_t ignore_index, float label_smoothing) {
    __shared__ float shm[64];
    int64_t n = blockIdx.x, t = targets[n];
    if (t == ignore_index) { /* uniform across the block: every thread leaves here */
        if (threadIdx.x == 0) row_loss[n] = 0.0f, lse[n] = 0.0f;
        return;
    }
    const T *xr = logits + n * V;
    cg_maxsum acc = {-INFINITY, 0.0f};
    float sum_x = 0.0f;
    for (int64_t c = threadIdx.x; c < V; c += blockDim.x) {
        float v = cg_to_f32(xr[c]);
        acc = cg_maxsum_add(acc, v);
        sum_x += v;
    }
    acc = cg_block_maxsum(acc, shm);
    sum_x = cg_block_sum(sum_x, shm);
    if (threadIdx.x == 0) {
        float m = acc.m == -INFINITY ? 0.0f : acc.m;
        float l = m + logf(acc.s);
        float nll = l - cg_to_f32(xr[t]), smooth = l - sum_x / (float)V;
        lse[n] = l;
        row_loss[n] = (1.0f - label_smoothing) * nll + label_smoothing * smooth;
    }
}

/* dlogits written directly from the logits and the saved lse: (exp(x - lse) - ls / V - (1 - ls) [c == t]) * scale. */
template <typename T>
__global__ void cross_entropy_backward_kernel(T *dlogits, const T *logits, const float *lse, const int64_t *targets,
                                              int64_t V, int64_t ignore_index, float label_smoothing, float scale,
                                              const float *dscale) {
    int64_t n = blockIdx.x, t = targets[n];
    T *dr = dlogits + n * V;
    if (t == ignore_index) {
        for (int64_t c = threadIdx.x; c < V; c += blockDim.x) dr[c] = cg_from_f32<T>(0.0f);
        return;
    }
    float s = dscale ? scale * dscale[0] : scale;
    float uniform = label_smoothing / (float)V, on = 1.0f - label_smoothing, l = lse[n];
    const T *xr = logits + n * V;
    for (int64_t c = threadIdx.x; c < V; c += blockDim.x) {
        float g = expf(cg_to_f32(xr[c]) - l) - uniform;
        if (c == t) g -= on;
        dr[c] = cg_from_f32<T>(g * s);
    }
}

extern "C" cg_status cg_cuda_cross_entropy_forward(cg_dtype dt, float *row_loss, float *lse, const void *logits,
                                                   const int64_t *targets, int64_t N, int64_t V, int64_t ignore_index,
                                                   float label_smoothing) {
    const char *op = "cross_entropy";
    if (N <= 0) return CG_OK;
    if (V <= 0) return cg_set_error(CG_ERR_SHAPE, "%s: no classes (V = %lld)", op, (long long)V);
    if (check_rows(op, N) != CG_OK) return cg_last_status();
    return cg_cuda_dispatch(op, dt, [&](auto tag) {
        using T = decltype(tag);
        cross_entropy_forward_kernel<T><<<(unsigned)N, cg_row_threads(V), 0, cg_cuda_compute_stream()>>>(
            row_loss, lse, (const T *)logits, targets, V, ignore_index, label_smoothing);
    });
}

extern "C" cg_status cg_cuda_cross_entropy_backward(cg_dtype dt, void *dlogits, const void *logits, const float *lse,
                                                    const int64_t *targets, int64_t N, int64_t V,
                                                    int64_t ignore_index, float label_smoothing, float scale,
                                                    const float *dscale) {
    const char *op = "cross_entropy backward";
    if (N <= 0 || V <= 0) return CG_OK;
    if (check_rows(op, N) != CG_OK) return cg_last_status();
    return cg_cuda_dispatch(op, dt, [&](auto tag) {
        using T = decltype(tag);
        cross_entropy_backward_kernel<T><<<(unsigned)N, cg_row_threads(V), 0, cg_cuda_compute_stream()>>>(
            (T *)dlogits, (const T *)logits, lse, targets, V, ignore_index, label_smoothing, scale, dscale);
    });
}

/* One block: thread i sums rows i, i + 1024, ... in order, then the fixed-order block sum. */
__global__ void mean_loss_kernel(float *out, const float *row_loss, int64_t N, int64_t count) {
    __shared__ float shm[32];
    float s = 0.0f;
    for (int64_t n = threadIdx.x; n < N; n += blockDim.x) s += row_loss[n];
    s = cg_block_sum(s, shm);
    if (threadIdx.x == 0) out[0] = count > 0 ? s / (float)count : 0.0f;
}

extern "C" cg_status cg_cuda_mean_loss(float *out, const float *row_loss, int64_t N, int64_t count) {
    mean_loss_kernel<<<1, 1024, 0, cg_cuda_compute_stream()>>>(out, row_loss, N < 0 ? 0 : N, count);
    return cg_cuda_check_launch("cross_entropy mean");
}
