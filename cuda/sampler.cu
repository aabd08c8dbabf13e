/* The GPU sampler and decode-loop bookkeeping (cuda/sampler.h). One block per row; every quantity the CPU
 * sampler (models/generate.c, cg_sample_logits) computes in double is computed in double here, in the same
 * walk order (vocabulary order without a filter, best-first with one). */
#include <cub/device/device_segmented_radix_sort.cuh>
#include <math.h>

#include "core/rng.h"
#include "cuda/common.cuh"
#include "cuda/sampler.h"

#define THREADS 256

enum { MODE_SCALED = 0, MODE_RAW = 1, MODE_SAMPLED = 2 }; /* cg_logprob_mode */

static size_t round16(size_t n) { return (n + 15) & ~(size_t)15; }

static bool is_filtered(const cg_cuda_sampler_params *p, int64_t vocab) {
    if (p->temperature == 0.0f) return false;
    return (p->top_k > 0 && p->top_k < vocab) || (p->top_p > 0.0f && p->top_p < 1.0f);
}

/* Rows sorted per CUB call, so its int item count never overflows. */
static int64_t rows_per_sort(int64_t batch, int64_t vocab) {
    int64_t r = ((int64_t)1 << 30) / vocab;
    if (r < 1) r = 1;
    return r < batch ? r : batch;
}

static size_t cub_sort_temp_bytes(int64_t rows, int64_t vocab) {
    size_t bytes = 0;
    cub::DeviceSegmentedRadixSort::SortKeysDescending(NULL, bytes, (const uint64_t *)NULL, (uint64_t *)NULL,
                                                      (int)(rows * vocab), (int)rows, (const int *)NULL,
                                                      (const int *)NULL, 0, 64);
    return bytes;
}

/* layout: keys in, keys out (rows * vocab uint64 each), offsets (rows + 1 ints), CUB temp */
extern "C" size_t cg_cuda_sample_workspace_bytes(int64_t batch, int64_t vocab, const cg_cuda_sampler_params *p) {
    if (batch <= 0 || vocab <= 0 || !p || !is_filtered(p, vocab)) return 0;
    int64_t rows = rows_per_sort(batch, vocab);
    return 2 * round16((size_t)(rows * vocab) * sizeof(uint64_t)) + round16((size_t)(rows + 1) * sizeof(int)) +
           round16(cub_sort_temp_bytes(rows, vocab));
}

/* ---- ordering keys: larger logit first, then the smaller index (the CPU's `better`) ---- */

__device__ __forceinline__ uint32_t order_bits(float v) {
    if (v == 0.0f) v = 0.0f; /* -0 and +0 compare equal on the CPU: one key */
    uint32_t b = __float_as_uint(v);
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

template <typename T>
__global__ void sort_keys_kernel(const T *logits, int64_t rows, int64_t vocab, int64_t row_stride, uint64_t *keys,
                                 int *offsets) {
    int64_t n = rows * vocab;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        int64_t r = i / vocab, j = i % vocab;
        float v = cg_to_f32(logits[r * row_stride + j]);
        keys[i] = ((uint64_t)order_bits(v) << 32) | (uint64_t)(0xFFFFFFFFu - (uint32_t)j);
        if (j == 0) offsets[r] = (int)(r * vocab);
        if (i == n - 1) offsets[rows] = (int)n;
    }
}

__device__ __forceinline__ int32_t key_index(uint64_t k) { return (int32_t)(0xFFFFFFFFu - (uint32_t)(k & 0xFFFFFFFFu)); }

/* ---- block helpers (THREADS threads) ---- */

__device__ double block_sum(double v, double *sh) {
    sh[threadIdx.x] = v;
    __syncthreads();
    for (int s = THREADS / 2; s > 0; s >>= 1) {
        if ((int)threadIdx.x < s) sh[threadIdx.x] += sh[threadIdx.x + s];
        __syncthreads();
    }
    double r = sh[0];
    __syncthreads();
    return r;
}

__device__ int64_t block_min_i64(int64_t v, int64_t *sh) {
    sh[threadIdx.x] = v;
    __syncthreads();
    for (int s = THREADS / 2; s > 0; s >>= 1) {
        if ((int)threadIdx.x < s && sh[threadIdx.x + s] < sh[threadIdx.x]) sh[threadIdx.x] = sh[threadIdx.x + s];
        __syncthreads();
    }
    int64_t r = sh[0];
    __syncthreads();
    return r;
}

/* p of walk position j: exp((logit - lmax) / T) of the token at j (vocabulary order, or sorted order). */
template <typename T> struct walk_probs {
    const T *row;
    const uint64_t *sorted; /* NULL: vocabulary order */
    double lmax, temp;
    __device__ int32_t token(int64_t j) const { return sorted ? key_index(sorted[j]) : (int32_t)j; }
    __device__ double p(int64_t j) const { return exp(((double)cg_to_f32(row[token(j)]) - lmax) / temp); }
};

/* Sum of p over walk positions [0, n), and the first position j < n whose running sum (inclusive) exceeds
 * target (strict) or reaches it (!strict); n when none does. Chunks of consecutive positions per thread,
 * their exclusive prefix by one thread: the running sum is the CPU's up to the rounding of that split. */
template <typename T>
__device__ void block_walk(const walk_probs<T> &w, int64_t n, double target, bool strict, double *sh_d,
                           int64_t *sh_i, double *total, int64_t *first) {
    int64_t chunk = (n + THREADS - 1) / THREADS;
    int64_t lo = (int64_t)threadIdx.x * chunk, hi = lo + chunk < n ? lo + chunk : n;
    double s = 0;
    for (int64_t j = lo; j < hi; j++) s += w.p(j);
    sh_d[threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.x == 0) {
        double acc = 0;
        for (int t = 0; t < THREADS; t++) {
            double v = sh_d[t];
            sh_d[t] = acc;
            acc += v;
        }
        sh_d[THREADS] = acc;
    }
    __syncthreads();
    double cum = sh_d[threadIdx.x];
    *total = sh_d[THREADS];
    int64_t found = n;
    if (target < *total || !strict) { /* with strict, nothing can exceed a target >= the total */
        for (int64_t j = lo; j < hi; j++) {
            cum += w.p(j);
            if (strict ? cum > target : cum >= target) {
                found = j;
                break;
            }
        }
    }
    __syncthreads();
    *first = block_min_i64(found, sh_i);
}

template <typename T>
__global__ void __launch_bounds__(THREADS)
    sample_kernel(const T *logits, int64_t vocab, int64_t row_stride, const float *u, const uint8_t *active,
                  cg_cuda_sampler_params prm, const uint64_t *sorted, int64_t sorted_row0, int32_t *tokens,
                  float *logprobs, int32_t *err) {
    __shared__ double sh_d[THREADS + 1];
    __shared__ int64_t sh_i[THREADS];
    __shared__ float sh_v[THREADS];
    __shared__ int sh_bad[THREADS];
    int64_t b = blockIdx.x + sorted_row0;
    if (active && !active[b]) return;
    const T *row = logits + b * row_stride;

    /* the first index of the largest logit; NaN or +inf is an error */
    float best_v = -INFINITY;
    int64_t best_i = vocab;
    int bad = 0;
    for (int64_t i = threadIdx.x; i < vocab; i += THREADS) {
        float v = cg_to_f32(row[i]);
        if (isnan(v) || v == INFINITY) bad = 1;
        if (best_i == vocab || v > best_v) best_v = v, best_i = i; /* strided ascending: first of equals kept */
    }
    sh_v[threadIdx.x] = best_v;
    sh_i[threadIdx.x] = best_i;
    sh_bad[threadIdx.x] = bad;
    __syncthreads();
    for (int s = THREADS / 2; s > 0; s >>= 1) {
        if ((int)threadIdx.x < s) {
            float ov = sh_v[threadIdx.x + s];
            int64_t oi = sh_i[threadIdx.x + s];
            if (oi < vocab && (sh_i[threadIdx.x] == vocab || ov > sh_v[threadIdx.x] ||
                               (ov == sh_v[threadIdx.x] && oi < sh_i[threadIdx.x])))
                sh_v[threadIdx.x] = ov, sh_i[threadIdx.x] = oi;
            sh_bad[threadIdx.x] |= sh_bad[threadIdx.x + s];
        }
        __syncthreads();
    }
    best_i = sh_i[0];
    double lmax = sh_v[0];
    bad = sh_bad[0];
    __syncthreads();
    if (bad || isinf(lmax)) {
        if (threadIdx.x == 0) err[b] = bad ? CG_CUDA_SAMPLE_BAD_LOGIT : CG_CUDA_SAMPLE_ALL_NEG_INF;
        return;
    }

    /* sum of exp(l - lmax): RAW log-probs, and greedy's */
    double sum1 = 0;
    bool need_sum1 = prm.temperature == 0.0f ? prm.logprob_mode != MODE_SAMPLED : prm.logprob_mode == MODE_RAW;
    if (need_sum1) {
        double s = 0;
        for (int64_t i = threadIdx.x; i < vocab; i += THREADS) s += exp((double)cg_to_f32(row[i]) - lmax);
        sum1 = block_sum(s, sh_d);
    }
    if (prm.temperature == 0.0f) {
        if (threadIdx.x == 0) {
            tokens[b] = (int32_t)best_i;
            logprobs[b] = prm.logprob_mode == MODE_SAMPLED ? 0.0f : (float)(-log(sum1));
        }
        return;
    }

    double temp = prm.temperature;
    bool top_k_on = prm.top_k > 0 && prm.top_k < vocab, top_p_on = prm.top_p > 0.0f && prm.top_p < 1.0f;
    bool filtered = top_k_on || top_p_on;
    walk_probs<T> w = {row, filtered ? sorted + (b - sorted_row0) * vocab : NULL, lmax, temp};
    double sum_all = 0;
    {
        double s = 0;
        for (int64_t i = threadIdx.x; i < vocab; i += THREADS) s += exp(((double)cg_to_f32(row[i]) - lmax) / temp);
        sum_all = block_sum(s, sh_d);
    }
    int64_t n_keep = top_k_on ? prm.top_k : vocab;
    if (top_p_on) {
        double kept = sum_all, unused;
        int64_t first;
        if (top_k_on) block_walk(w, n_keep, (double)INFINITY, true, sh_d, sh_i, &kept, &first);
        /* the smallest prefix reaching top_p of the mass, capped at n_keep (the CPU stops at n_keep - 1) */
        block_walk(w, n_keep, (double)prm.top_p * kept, false, sh_d, sh_i, &unused, &first);
        n_keep = (first < n_keep - 1 ? first : n_keep - 1) + 1;
    }
    double total;
    int64_t pick_j;
    double ub = (double)u[b];
    /* the total first (the target needs it), then the walk to it */
    {
        int64_t unused_first;
        block_walk(w, n_keep, (double)INFINITY, true, sh_d, sh_i, &total, &unused_first);
        double unused_total;
        block_walk(w, n_keep, ub * total, true, sh_d, sh_i, &unused_total, &pick_j);
    }
    if (pick_j >= n_keep) pick_j = n_keep - 1; /* rounding fallback: the last kept token */
    if (threadIdx.x == 0) {
        int32_t pick = w.token(pick_j);
        double l = (double)cg_to_f32(row[pick]), lp;
        if (prm.logprob_mode == MODE_SAMPLED) lp = log(exp((l - lmax) / temp) / total);
        else if (prm.logprob_mode == MODE_SCALED) lp = (l - lmax) / temp - log(sum_all);
        else lp = l - lmax - log(sum1);
        tokens[b] = pick;
        logprobs[b] = (float)lp;
    }
}

template <typename T>
static cg_status sample_t(const T *logits, int64_t batch, int64_t vocab, int64_t row_stride, const float *u,
                          const uint8_t *active, const cg_cuda_sampler_params *p, void *work, size_t work_bytes,
                          int32_t *tokens, float *logprobs, int32_t *err) {
    cudaStream_t st = cg_cuda_compute_stream();
    if (!is_filtered(p, vocab)) {
        sample_kernel<T><<<(unsigned)batch, THREADS, 0, st>>>(logits, vocab, row_stride, u, active, *p, NULL, 0,
                                                               tokens, logprobs, err);
        return cg_cuda_check_launch("cuda sample");
    }
    int64_t rows = rows_per_sort(batch, vocab);
    size_t need = cg_cuda_sample_workspace_bytes(batch, vocab, p);
    if (!work || work_bytes < need)
        return cg_set_error(CG_ERR_INVALID_ARG, "cuda sample: workspace of %zu bytes, top-k/top-p needs %zu",
                            work_bytes, need);
    char *w = (char *)work;
    uint64_t *keys_in = (uint64_t *)w;
    uint64_t *keys_out = (uint64_t *)(w + round16((size_t)(rows * vocab) * sizeof(uint64_t)));
    int *offsets = (int *)(w + 2 * round16((size_t)(rows * vocab) * sizeof(uint64_t)));
    void *temp = w + 2 * round16((size_t)(rows * vocab) * sizeof(uint64_t)) + round16((size_t)(rows + 1) * sizeof(int));
    size_t temp_bytes = round16(cub_sort_temp_bytes(rows, vocab));
    for (int64_t r0 = 0; r0 < batch; r0 += rows) {
        int64_t n = batch - r0 < rows ? batch - r0 : rows;
        sort_keys_kernel<T><<<cg_cuda_blocks(n * vocab, THREADS) < 4096 ? cg_cuda_blocks(n * vocab, THREADS) : 4096,
                              THREADS, 0, st>>>(logits + r0 * row_stride, n, vocab, row_stride, keys_in, offsets);
        cg_status s = cg_cuda_check_launch("cuda sample: sort keys");
        if (s != CG_OK) return s;
        s = cg_cuda_check(cub::DeviceSegmentedRadixSort::SortKeysDescending(temp, temp_bytes, keys_in, keys_out,
                                                                             (int)(n * vocab), (int)n, offsets,
                                                                             offsets + 1, 0, 64, st),
                          "cuda sample: segmented sort");
        if (s != CG_OK) return s;
        sample_kernel<T><<<(unsigned)n, THREADS, 0, st>>>(logits, vocab, row_stride, u, active, *p, keys_out, r0,
                                                           tokens, logprobs, err);
        if ((s = cg_cuda_check_launch("cuda sample")) != CG_OK) return s;
    }
    return CG_OK;
}

extern "C" cg_status cg_cuda_sample(const void *logits, cg_dtype dtype, int64_t batch, int64_t vocab,
                                    int64_t row_stride, const float *u, const uint8_t *active,
                                    const cg_cuda_sampler_params *p, void *work, size_t work_bytes, int32_t *tokens,
                                    float *logprobs, int32_t *err) {
    if (!logits || !p || !tokens || !logprobs || !err)
        return cg_set_error(CG_ERR_INVALID_ARG, "cuda sample: NULL logits, params or output");
    if (batch <= 0 || batch > INT32_MAX || vocab <= 0 || vocab > INT32_MAX || row_stride < vocab)
        return cg_set_error(CG_ERR_INVALID_ARG, "cuda sample: %lld rows of %lld logits (row stride %lld)",
                            (long long)batch, (long long)vocab, (long long)row_stride);
    if (p->temperature != 0.0f && !u) return cg_set_error(CG_ERR_INVALID_ARG, "cuda sample: sampling needs u");
    if (p->logprob_mode < MODE_SCALED || p->logprob_mode > MODE_SAMPLED)
        return cg_set_error(CG_ERR_INVALID_ARG, "cuda sample: unknown logprob_mode %d", p->logprob_mode);
    if (dtype == CG_F32)
        return sample_t((const float *)logits, batch, vocab, row_stride, u, active, p, work, work_bytes, tokens,
                        logprobs, err);
    if (dtype == CG_BF16)
        return sample_t((const __nv_bfloat16 *)logits, batch, vocab, row_stride, u, active, p, work, work_bytes,
                        tokens, logprobs, err);
    return cg_set_error(CG_ERR_DTYPE, "cuda sample: logits of %s (f32 or bf16)", cg_dtype_name(dtype));
}

/* ---- the decode loop's bookkeeping ---- */

__global__ void uniforms_kernel(uint64_t seed, uint64_t first_stream, int64_t batch, const int64_t *gen_len,
                                const uint8_t *live, float *u) {
    int64_t b = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (b >= batch || !live[b]) return;
    uint32_t w[4];
    cg_rng_block(seed, first_stream + (uint64_t)b, (uint64_t)gen_len[b], w);
    u[b] = cg_rng_unit_f32(w[0]);
}

extern "C" cg_status cg_cuda_sample_uniforms(uint64_t seed, uint64_t first_stream, int64_t batch,
                                             const int64_t *gen_len, const uint8_t *live, float *u) {
    if (batch <= 0 || !gen_len || !live || !u)
        return cg_set_error(CG_ERR_INVALID_ARG, "cuda sample uniforms: NULL buffers or batch %lld", (long long)batch);
    uniforms_kernel<<<cg_cuda_blocks(batch, THREADS), THREADS, 0, cg_cuda_compute_stream()>>>(seed, first_stream,
                                                                                              batch, gen_len, live, u);
    return cg_cuda_check_launch("cuda sample uniforms");
}

/* One block: each thread a row; n_live summed through shared memory (integers: exact). */
__global__ void advance_kernel(cg_cuda_gen_rows r, int64_t host_step, const int32_t *tokens, const float *logprobs) {
    __shared__ int count[THREADS];
    /* every thread reads the device step before thread 0 rewrites it (after the reduction's barriers) */
    const int64_t step = r.step_dev ? *r.step_dev : host_step;
    int n = 0;
    if (step < 0 || step >= r.steps) { /* past the loop's end: change nothing (the host never launches this) */
        if (threadIdx.x == 0) *r.n_live = 0;
        return;
    }
    for (int64_t b = threadIdx.x; b < r.batch; b += THREADS) {
        bool was_live = r.live[b] != 0;
        bool live_next = false;
        int32_t t = 0;
        if (was_live) {
            t = tokens[b];
            int64_t g = r.gen_len[b];
            r.out_tokens[b * r.steps + g] = t;
            r.out_logprobs[b * r.steps + g] = logprobs[b];
            r.gen_len[b] = ++g;
            for (int i = 0; i < r.n_stop; i++)
                if (r.stop[i] == t) r.stopped[b] = 1;
            live_next = !r.stopped[b] && g < r.budget[b];
        }
        r.live[b] = live_next;
        r.tok_step[b] = live_next ? t : 0;
        r.pos_step[b] = live_next ? r.prompt_len[b] + step : 0;
        int64_t col = r.prompt_cols + step;
        if (col < r.cache_len) r.mask[b * r.cache_len + col] = live_next;
        n += live_next;
    }
    count[threadIdx.x] = n;
    __syncthreads();
    for (int s = THREADS / 2; s > 0; s >>= 1) {
        if ((int)threadIdx.x < s) count[threadIdx.x] += count[threadIdx.x + s];
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        *r.n_live = count[0];
        if (r.step_dev) {
            *r.step_dev = step + 1;
            *r.cache_pos = r.prompt_cols + step;
        }
    }
}

extern "C" cg_status cg_cuda_generate_advance(const cg_cuda_gen_rows *r, int64_t step, const int32_t *tokens,
                                              const float *logprobs) {
    if (!r || !tokens || !logprobs || (!r->step_dev && (step < 0 || step >= r->steps)) ||
        (!r->step_dev != !r->cache_pos))
        return cg_set_error(CG_ERR_INVALID_ARG, "cuda generate advance: bad arguments (step %lld)", (long long)step);
    advance_kernel<<<1, THREADS, 0, cg_cuda_compute_stream()>>>(*r, step, tokens, logprobs);
    return cg_cuda_check_launch("cuda generate advance");
}
