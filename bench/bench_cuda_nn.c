/* Throughput of the CUDA nn kernels (cuda/nn.h) on the shapes of the CUDA issue, bf16 storage: one line per
 * kernel with the median time over the timed runs (CUDA events on the compute stream, after warm-up), the
 * achieved GB/s (memory-bound kernels: the minimal traffic, each input read once and each output written
 * once) or TFLOP/s (attention: 4 B H T^2 D / 2 for the causal forward, 2.5x that for the backward; token
 * log-probs: 2 N C V for the forward, 4x that for forward + backward), and the
 * fraction of the H200 ceiling (4.2 TB/s copy, 790 TFLOP/s bf16 dense). bench/torch_cases_nn.py holds the
 * same cases for PyTorch. Without a GPU it prints "no CUDA device: skipped" and exits 0.
 *
 *   bench_cuda_nn [--quick]   (--quick: 3 timed runs instead of 20) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cgrad.h"

#ifdef CG_HAVE_CUDA
#include <cuda_runtime_api.h>

#include "cuda/nn.h"
#include "cuda/runtime.h"

#define COPY_GBPS 4200.0
#define BF16_TFLOPS 790.0
#define MAX_RUNS 64

static int timed_runs = 20;

typedef cg_status (*bench_fn)(void *ctx);

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* Median milliseconds of fn over timed_runs, after 3 warm-up runs; < 0 on an error (printed). */
static double time_ms(bench_fn fn, void *ctx) {
    cudaStream_t st = (cudaStream_t)cg_cuda_rt_stream(0);
    cudaEvent_t e0, e1;
    if (cudaEventCreate(&e0) != cudaSuccess || cudaEventCreate(&e1) != cudaSuccess) return -1.0;
    float ms[MAX_RUNS];
    double result = -1.0;
    for (int i = 0; i < 3; i++)
        if (fn(ctx) != CG_OK) goto done;
    for (int i = 0; i < timed_runs; i++) {
        cudaEventRecord(e0, st);
        if (fn(ctx) != CG_OK) goto done;
        cudaEventRecord(e1, st);
        if (cudaEventSynchronize(e1) != cudaSuccess) goto done;
        cudaEventElapsedTime(&ms[i], e0, e1);
    }
    qsort(ms, (size_t)timed_runs, sizeof(float), cmp_float);
    result = ms[timed_runs / 2];
done:
    if (result < 0) fprintf(stderr, "bench_cuda_nn: %s\n", cg_last_error());
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    return result;
}

static void report_bytes(const char *name, const char *shape, double ms, double bytes) {
    if (ms < 0) return;
    double gbps = bytes / (ms * 1e-3) / 1e9;
    printf("%-28s %-24s %10.1f us %9.1f GB/s     %5.1f%% of %.0f GB/s\n", name, shape, ms * 1e3, gbps,
           100.0 * gbps / COPY_GBPS, COPY_GBPS);
}

static void report_flops(const char *name, const char *shape, double ms, double flops) {
    if (ms < 0) return;
    double tflops = flops / (ms * 1e-3) / 1e12;
    printf("%-28s %-24s %10.1f us %9.1f TFLOP/s  %5.1f%% of %.0f TFLOP/s\n", name, shape, ms * 1e3, tflops,
           100.0 * tflops / BF16_TFLOPS, BF16_TFLOPS);
}

/* Device memory that lives for the whole run (zeroed: the timings do not depend on the values). */
static void *dev(size_t bytes) {
    void *p = cg_device_malloc(CG_CUDA(0), bytes ? bytes : 1);
    if (!p) {
        fprintf(stderr, "bench_cuda_nn: %s\n", cg_last_error());
        exit(1);
    }
    if (cg_device_memset_zero(CG_CUDA(0), p, bytes) != CG_OK) exit(1);
    return p;
}

/* ------------------------------------------------------------------ norms, softmax, cross-entropy */

typedef struct rows_ctx {
    int64_t N, C;
    void *x, *out, *w, *b, *dout, *dx, *dw, *db;
    float *mean, *rstd, *ws, *loss;
    int64_t *targets;
} rows_ctx;

static rows_ctx rows_make(int64_t N, int64_t C) {
    rows_ctx c = {.N = N, .C = C};
    size_t nc = (size_t)(N * C) * 2, cb = (size_t)C * 2;
    c.x = dev(nc), c.out = dev(nc), c.dout = dev(nc), c.dx = dev(nc);
    c.w = dev(cb), c.b = dev(cb), c.dw = dev(cb), c.db = dev(cb);
    c.mean = dev((size_t)N * 4), c.rstd = dev((size_t)N * 4), c.loss = dev((size_t)N * 4);
    c.ws = dev(cg_cuda_norm_backward_workspace(N, C) * 4);
    c.targets = dev((size_t)N * 8);
    return c;
}

static void rows_free(rows_ctx *c) {
    void *ps[] = {c->x, c->out, c->dout, c->dx, c->w, c->b, c->dw, c->db, c->mean, c->rstd, c->loss, c->ws, c->targets};
    for (size_t i = 0; i < sizeof ps / sizeof ps[0]; i++) cg_device_free(CG_CUDA(0), ps[i]);
}

static cg_status layernorm_fwd(void *p) {
    rows_ctx *c = p;
    return cg_cuda_layernorm_forward(CG_BF16, c->out, c->mean, c->rstd, c->x, c->w, c->b, c->N, c->C, 1e-5f);
}
static cg_status layernorm_fwd_bwd(void *p) {
    rows_ctx *c = p;
    cg_status s = layernorm_fwd(p);
    return s != CG_OK ? s
                      : cg_cuda_layernorm_backward(CG_BF16, c->dx, c->dw, c->db, c->dout, c->x, c->w, c->mean, c->rstd,
                                                   c->N, c->C, c->ws);
}
static cg_status rmsnorm_fwd(void *p) {
    rows_ctx *c = p;
    return cg_cuda_rmsnorm_forward(CG_BF16, c->out, c->rstd, c->x, c->w, c->N, c->C, 1e-6f);
}
static cg_status softmax_fwd(void *p) {
    rows_ctx *c = p;
    return cg_cuda_softmax_forward(CG_BF16, c->out, c->x, c->N, c->C, 1);
}
static cg_status cross_entropy_fwd_bwd(void *p) {
    rows_ctx *c = p;
    cg_status s = cg_cuda_cross_entropy_forward(CG_BF16, c->loss, c->rstd, c->x, c->targets, c->N, c->C, -100, 0.0f);
    if (s == CG_OK) s = cg_cuda_mean_loss(c->mean, c->loss, c->N, c->N);
    return s != CG_OK ? s
                      : cg_cuda_cross_entropy_backward(CG_BF16, c->dx, c->x, c->rstd, c->targets, c->N, c->C, -100, 0.0f,
                                                       1.0f / (float)c->N, c->mean);
}

static void bench_rows(void) {
    char shape[64];
    rows_ctx c = rows_make(65536, 768);
    double nc2 = 65536.0 * 768 * 2;
    snprintf(shape, sizeof shape, "%dx%d bf16", 65536, 768);
    report_bytes("layernorm fwd", shape, time_ms(layernorm_fwd, &c), 2 * nc2);
    report_bytes("layernorm fwd+bwd", shape, time_ms(layernorm_fwd_bwd, &c), 5 * nc2); /* x,out | dout,x,dx */
    report_bytes("rmsnorm fwd", shape, time_ms(rmsnorm_fwd, &c), 2 * nc2);
    rows_free(&c);

    c = rows_make(98304, 1024);
    snprintf(shape, sizeof shape, "%dx%d bf16", 98304, 1024);
    report_bytes("softmax fwd", shape, time_ms(softmax_fwd, &c), 2 * 98304.0 * 1024 * 2);
    rows_free(&c);

    c = rows_make(8192, 50304);
    snprintf(shape, sizeof shape, "%dx%d bf16", 8192, 50304);
    /* forward reads the logits; backward reads them again and writes dlogits */
    report_bytes("cross_entropy fwd+bwd", shape, time_ms(cross_entropy_fwd_bwd, &c), 3 * 8192.0 * 50304 * 2);
    rows_free(&c);
}

/* ------------------------------------------------------------------ token log-probs */

typedef struct logprobs_ctx {
    int64_t N, C, V, chunk;
    void *hidden, *weight;
    float *out, *lse, *dout, *dhidden, *dweight, *scratch;
    int64_t *tokens;
} logprobs_ctx;

static cg_status logprobs_fwd(void *p) {
    logprobs_ctx *c = p;
    return cg_cuda_token_logprobs_forward(CG_BF16, c->out, c->lse, c->hidden, c->weight, c->tokens, c->N, c->C, c->V,
                                          c->chunk, c->scratch);
}
static cg_status logprobs_fwd_bwd(void *p) {
    logprobs_ctx *c = p;
    cg_status s = logprobs_fwd(p);
    return s != CG_OK ? s
                      : cg_cuda_token_logprobs_backward(CG_BF16, c->dhidden, c->dweight, c->dout, c->hidden, c->weight,
                                                        c->tokens, c->lse, c->N, c->C, c->V, c->chunk, c->scratch);
}

/* Qwen2-0.5B's head: N = 16 x 512 tokens, C = 896, V = 151936, bf16, the default chunk of 4096 rows. FLOPs:
 * forward 2 N C V (the logits); forward + backward 4 x that (the backward recomputes the logits, then the
 * dhidden and dweight matmuls, each 2 N C V; the elementwise kernels are not counted). */
static void bench_logprobs(void) {
    logprobs_ctx c = {.N = 8192, .C = 896, .V = 151936, .chunk = 4096};
    size_t scratch_bytes = cg_cuda_token_logprobs_scratch(CG_BF16, c.N, c.chunk) * 4;
    c.hidden = dev((size_t)(c.N * c.C) * 2), c.weight = dev((size_t)(c.V * c.C) * 2);
    c.out = dev((size_t)c.N * 4), c.lse = dev((size_t)c.N * 4), c.dout = dev((size_t)c.N * 4);
    c.dhidden = dev((size_t)(c.N * c.C) * 4), c.dweight = dev((size_t)(c.V * c.C) * 4);
    c.scratch = dev(scratch_bytes);
    c.tokens = dev((size_t)c.N * 8); /* zeros: token 0 on every row */
    const char *shape = "8192x896 V151936 bf16";
    double fwd = 2.0 * (double)c.N * (double)c.C * (double)c.V;
    report_flops("token_logprobs fwd", shape, time_ms(logprobs_fwd, &c), fwd);
    report_flops("token_logprobs fwd+bwd", shape, time_ms(logprobs_fwd_bwd, &c), 4.0 * fwd);
    bool det = cg_set_deterministic(false); /* what deterministic mode costs here */
    report_flops("token_logprobs fwd+bwd nondet", shape, time_ms(logprobs_fwd_bwd, &c), 4.0 * fwd);
    cg_set_deterministic(det);
    printf("  token_logprobs memory: scratch %.1f MiB (chunk %lld), f32 gradients dhidden %.1f MiB + dweight %.1f MiB; "
           "full fp32 logits would be %.1f MiB\n",
           scratch_bytes / 1048576.0, (long long)c.chunk, c.N * c.C * 4 / 1048576.0, c.V * c.C * 4 / 1048576.0,
           (double)c.N * (double)c.V * 4 / 1048576.0);
    void *ps[] = {c.hidden, c.weight, c.out, c.lse, c.dout, c.dhidden, c.dweight, c.scratch, c.tokens};
    for (size_t i = 0; i < sizeof ps / sizeof ps[0]; i++) cg_device_free(CG_CUDA(0), ps[i]);
}

/* ------------------------------------------------------------------ attention */

typedef struct attn_ctx {
    cg_attention_dims d;
    void *q, *k, *v, *out, *dout, *dq, *dk, *dv;
    float *lse, *ws;
} attn_ctx;

static cg_status attention_fwd(void *p) {
    attn_ctx *c = p;
    return cg_cuda_attention_forward(CG_BF16, c->out, c->lse, c->q, c->k, c->v, NULL, &c->d);
}
static cg_status attention_fwd_bwd(void *p) {
    attn_ctx *c = p;
    cg_status s = attention_fwd(p);
    return s != CG_OK ? s
                      : cg_cuda_attention_backward(CG_BF16, c->dq, c->dk, c->dv, c->dout, c->q, c->k, c->v, c->out,
                                                   c->lse, NULL, &c->d, c->ws);
}

static void bench_attention(int64_t B, int64_t H, int64_t T, int64_t D) {
    attn_ctx c = {.d = {.batch = B, .q_heads = H, .kv_heads = H, .q_len = T, .kv_len = T, .head_dim = D,
                        .scale = 1.0f / 8.0f}};
    size_t n = (size_t)(B * H * T * D) * 2;
    c.q = dev(n), c.k = dev(n), c.v = dev(n), c.out = dev(n), c.dout = dev(n), c.dq = dev(n), c.dk = dev(n), c.dv = dev(n);
    c.lse = dev((size_t)(B * H * T) * 4), c.ws = dev(cg_cuda_attention_backward_workspace(&c.d) * 4);
    char shape[64];
    snprintf(shape, sizeof shape, "B%lld H%lld T%lld D%lld", (long long)B, (long long)H, (long long)T, (long long)D);
    double fwd = 4.0 * (double)B * (double)H * (double)T * (double)T * (double)D / 2.0;
    report_flops("attention fwd (causal)", shape, time_ms(attention_fwd, &c), fwd);
    report_flops("attention fwd+bwd (causal)", shape, time_ms(attention_fwd_bwd, &c), 3.5 * fwd);
    void *ps[] = {c.q, c.k, c.v, c.out, c.dout, c.dq, c.dk, c.dv, c.lse, c.ws};
    for (size_t i = 0; i < sizeof ps / sizeof ps[0]; i++) cg_device_free(CG_CUDA(0), ps[i]);
}
#endif

int main(int argc, char **argv) {
    int quick = argc > 1 && strcmp(argv[1], "--quick") == 0;
    if (cg_cuda_device_count() == 0) {
        printf("bench_cuda_nn: no CUDA device: skipped\n");
        return 0;
    }
#ifdef CG_HAVE_CUDA
    if (quick) timed_runs = 3;
    printf("%-28s %-24s %13s %14s  %s\n", "kernel", "shape", "median", "throughput", "of the H200 ceiling");
    bench_rows();
    bench_logprobs();
    bench_attention(8, 12, 1024, 64);
    bench_attention(4, 16, 4096, 128);
    cg_shutdown();
#else
    (void)quick;
#endif
    return 0;
}
