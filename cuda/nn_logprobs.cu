/* Token log-probabilities through a classifier on the GPU, chunked over the vocabulary (the CPU kernels in
 * core/nn_softmax.c are the reference). For each chunk of `chunk` rows of weight:
 *   forward:  logits [N, cw] = hidden @ W_chunk^T (cuBLASLt, f32 result in the scratch), then one block per row
 *             folds the chunk into the row's running (max, sum of exponentials) and picks the target's logit
 *             when the target falls in the chunk; a last kernel forms logp and the saved lse.
 *   backward: the chunk's logits again, then dlogits = g_n * (onehot - exp(l - lse_n)) in the storage dtype,
 *             then dhidden (+)= dlogits @ W_chunk and dweight_chunk = dlogits^T @ hidden (cuBLASLt, f32
 *             results: dhidden accumulates over the chunks with beta = 1 in f32).
 * Only N x chunk logits exist at any time (plus their bf16 gradient for bf16 storage), never N x V. Every
 * reduction has a fixed order (no atomics), so the results repeat bit for bit when the matmuls do (see
 * cg_set_deterministic). */
#include <string.h>

#include "cuda/matmul.h"
#include "cuda/nn.h"
#include "cuda/nn_common.cuh"

#define OP_FWD "token_logprobs"
#define OP_BWD "token_logprobs backward"
#define EW_THREADS 256

/* Scratch rows are padded to a multiple of 8 elements, so every row of the logits (f32) and of the bf16 dlogits
 * starts 16-byte aligned: cuBLASLt's tensor-core kernels want that of each operand's leading dimension. */
static int64_t scratch_ld(int64_t chunk) { return (chunk + 7) / 8 * 8; }

/* The scratch (floats): logits [N, ld] f32 first; then the forward's sum of exponentials [N], or the backward's
 * bf16 dlogits [N, ld] (N x ld / 2 floats; an f32 gradient overwrites the logits in place). */
extern "C" size_t cg_cuda_token_logprobs_scratch(cg_dtype dt, int64_t N, int64_t chunk) {
    int64_t nld = N * scratch_ld(chunk);
    int64_t second = dt == CG_BF16 ? nld / 2 : 0;
    return (size_t)(nld + (second > N ? second : N));
}

/* One block per row n: folds logits[n, 0..cw) into (runmax[n], sumexp[n]) and stores the target's logit in
 * target[n] when tokens[n] - v0 falls in [0, cw). first: the state starts empty (the first chunk). */
__global__ void logprobs_chunk_kernel(const float *logits, int64_t ld, int64_t cw, int64_t v0, const int64_t *tokens,
                                      float *runmax, float *sumexp, float *target, bool first) {
    __shared__ float shm[64];
    int64_t n = blockIdx.x;
    const float *row = logits + n * ld;
    cg_maxsum acc = {-INFINITY, 0.0f};
    for (int64_t j = threadIdx.x; j < cw; j += blockDim.x) acc = cg_maxsum_add(acc, row[j]);
    acc = cg_block_maxsum(acc, shm);
    if (threadIdx.x == 0) {
        cg_maxsum run = first ? cg_maxsum{-INFINITY, 0.0f} : cg_maxsum{runmax[n], sumexp[n]};
        run = cg_maxsum_combine(run, acc);
        runmax[n] = run.m;
        sumexp[n] = run.s;
        if (first) target[n] = 0.0f;
        int64_t t = tokens[n] - v0;
        if (t >= 0 && t < cw) target[n] = row[t];
    }
}

/* out[n] holds the target's logit and lse[n] the running max on entry: logp = (logit - max) - log(sum), the
 * CPU kernel's order; lse = max + log(sum). */
__global__ void logprobs_finish_kernel(float *out, float *lse, const float *sumexp, int64_t N) {
    int64_t n = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (n >= N) return;
    float log_sum = logf(sumexp[n]), m = lse[n];
    out[n] = (out[n] - m) - log_sum;
    lse[n] = m + log_sum;
}

/* dlogits[n, j] = dout[n] * ([v0 + j == tokens[n]] - exp(logits[n, j] - lse[n])) for the chunk's cw columns,
 * rows ld apart. dlogits may be the logits array itself (f32): each element is read, then written, by one
 * thread. */
template <typename T>
__global__ void logprobs_dlogits_kernel(T *dlogits, const float *logits, int64_t ld, int64_t N, int64_t cw, int64_t v0,
                                        const int64_t *tokens, const float *lse, const float *dout) {
    int64_t total = N * cw;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
        int64_t n = i / cw, j = i % cw;
        float d = dout[n];
        float v = -d * expf(logits[n * ld + j] - lse[n]);
        if (tokens[n] - v0 == j) v += d;
        dlogits[n * ld + j] = cg_from_f32<T>(v);
    }
}

static cg_status check_args(const char *op, cg_dtype dt, int64_t N, int64_t C, int64_t V, int64_t chunk) {
    if (dt != CG_F32 && dt != CG_BF16)
        return cg_set_error(CG_ERR_DTYPE, "%s: dtype %s has no CUDA kernel (f32 or bf16)", op, cg_dtype_name(dt));
    if (N < 0 || C < 0 || V <= 0 || chunk <= 0)
        return cg_set_error(CG_ERR_SHAPE, "%s: bad sizes N=%lld C=%lld V=%lld chunk=%lld", op, (long long)N,
                            (long long)C, (long long)V, (long long)chunk);
    if (N > 0x7fffffff) return cg_set_error(CG_ERR_SHAPE, "%s: %lld rows exceed the CUDA grid", op, (long long)N);
    return CG_OK;
}

/* logits [N, cw] (row stride ld, f32) = hidden [N, C] @ weight[v0 .. v0 + cw)^T; zeros when C == 0 (cuBLASLt is
 * not asked for an empty inner dimension). */
static cg_status chunk_logits(const char *op, cg_dtype dt, float *logits, int64_t ld, const void *hidden,
                              const void *weight, int64_t N, int64_t C, int64_t v0, int64_t cw) {
    if (C == 0)
        return cg_cuda_check(cudaMemsetAsync(logits, 0, sizeof(float) * (size_t)(N * ld), cg_cuda_compute_stream()), op);
    size_t esize = dt == CG_BF16 ? 2 : 4;
    cg_cuda_matmul_args a;
    memset(&a, 0, sizeof a);
    a.M = N, a.N = cw, a.K = C, a.batch = 1;
    a.trans_a = false, a.trans_b = true;
    a.a = hidden, a.lda = C;
    a.b = (const char *)weight + (size_t)(v0 * C) * esize, a.ldb = C;
    a.c = logits, a.ldc = ld;
    a.ab_dtype = dt, a.c_dtype = CG_F32;
    a.alpha = 1.0f, a.beta = 0.0f;
    return cg_cuda_matmul(&a);
}

extern "C" cg_status cg_cuda_token_logprobs_forward(cg_dtype dt, float *out, float *lse, const void *hidden,
                                                    const void *weight, const int64_t *tokens, int64_t N, int64_t C,
                                                    int64_t V, int64_t chunk, float *scratch) {
    cg_status s = check_args(OP_FWD, dt, N, C, V, chunk);
    if (s != CG_OK || N == 0) return s;
    if (chunk > V) chunk = V;
    int64_t ld = scratch_ld(chunk);
    float *logits = scratch;
    float *sumexp = scratch + N * ld; /* the forward leaves the dlogits region unused */
    cudaStream_t st = cg_cuda_compute_stream();
    int threads = cg_row_threads(chunk);
    for (int64_t v0 = 0; v0 < V; v0 += chunk) {
        int64_t cw = V - v0 < chunk ? V - v0 : chunk;
        if ((s = chunk_logits(OP_FWD, dt, logits, ld, hidden, weight, N, C, v0, cw)) != CG_OK) return s;
        /* lse holds the running max and out the target's logit until the finish kernel */
        logprobs_chunk_kernel<<<(unsigned)N, threads, 0, st>>>(logits, ld, cw, v0, tokens, lse, sumexp, out, v0 == 0);
        if ((s = cg_cuda_check_launch(OP_FWD)) != CG_OK) return s;
    }
    logprobs_finish_kernel<<<cg_cuda_blocks(N, EW_THREADS), EW_THREADS, 0, st>>>(out, lse, sumexp, N);
    return cg_cuda_check_launch(OP_FWD);
}

extern "C" cg_status cg_cuda_token_logprobs_backward(cg_dtype dt, float *dhidden, float *dweight, const float *dout,
                                                     const void *hidden, const void *weight, const int64_t *tokens,
                                                     const float *lse, int64_t N, int64_t C, int64_t V, int64_t chunk,
                                                     float *scratch) {
    cg_status s = check_args(OP_BWD, dt, N, C, V, chunk);
    if (s != CG_OK) return s;
    cudaStream_t st = cg_cuda_compute_stream();
    if (N == 0) { /* no rows: dweight is zero (dhidden is empty) */
        if (dweight && C > 0)
            s = cg_cuda_check(cudaMemsetAsync(dweight, 0, sizeof(float) * (size_t)(V * C), st), OP_BWD);
        return s;
    }
    if (!dhidden && !dweight) return CG_OK;
    if (chunk > V) chunk = V;
    int64_t ld = scratch_ld(chunk);
    float *logits = scratch;
    /* f32: the gradient overwrites the logits in place; bf16: it goes to its own half-size region */
    void *dlogits = dt == CG_BF16 ? (void *)(scratch + N * ld) : (void *)scratch;
    size_t esize = dt == CG_BF16 ? 2 : 4;
    for (int64_t v0 = 0; v0 < V; v0 += chunk) {
        int64_t cw = V - v0 < chunk ? V - v0 : chunk;
        const void *wchunk = (const char *)weight + (size_t)(v0 * C) * esize;
        if ((s = chunk_logits(OP_BWD, dt, logits, ld, hidden, weight, N, C, v0, cw)) != CG_OK) return s;
        int64_t total = N * cw;
        unsigned blocks = cg_cuda_blocks(total, EW_THREADS);
        if (blocks > 65535u * 16u) blocks = 65535u * 16u; /* grid-stride beyond this */
        s = cg_cuda_dispatch(OP_BWD, dt, [&](auto tag) {
            using T = decltype(tag);
            logprobs_dlogits_kernel<T><<<blocks, EW_THREADS, 0, st>>>((T *)dlogits, logits, ld, N, cw, v0, tokens, lse,
                                                                      dout);
        });
        if (s != CG_OK) return s;
        if (C == 0) continue; /* dhidden and dweight are empty */
        if (dhidden) { /* dhidden [N, C] (+)= dlogits [N, cw] @ W_chunk [cw, C], accumulated in f32 */
            cg_cuda_matmul_args a;
            memset(&a, 0, sizeof a);
            a.M = N, a.N = C, a.K = cw, a.batch = 1;
            a.a = dlogits, a.lda = ld;
            a.b = wchunk, a.ldb = C;
            a.c = dhidden, a.ldc = C;
            a.ab_dtype = dt, a.c_dtype = CG_F32;
            a.alpha = 1.0f, a.beta = v0 ? 1.0f : 0.0f;
            if ((s = cg_cuda_matmul(&a)) != CG_OK) return s;
        }
        if (dweight) { /* dweight[v0 .. v0 + cw) [cw, C] = dlogits^T @ hidden [N, C] */
            cg_cuda_matmul_args a;
            memset(&a, 0, sizeof a);
            a.M = cw, a.N = C, a.K = N, a.batch = 1;
            a.trans_a = true;
            a.a = dlogits, a.lda = ld;
            a.b = hidden, a.ldb = C;
            a.c = dweight + v0 * C, a.ldc = C;
            a.ab_dtype = dt, a.c_dtype = CG_F32;
            a.alpha = 1.0f, a.beta = 0.0f;
            if ((s = cg_cuda_matmul(&a)) != CG_OK) return s;
        }
    }
    return CG_OK;
}
