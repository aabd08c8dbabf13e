/* CUDA kernel benchmarks of the core ops: device copy, broadcast add, cast, row reduction, bf16 matmuls
 * (cuBLASLt) and the fused AdamW step (its gradient scan included). Each line: kernel, shape, median time over the timed runs (CUDA
 * events on the compute stream, after warm-up), achieved GB/s or TFLOP/s, and the fraction of the H200
 * ceiling (4.2 TB/s copy bandwidth, 790 TFLOP/s dense bf16). bench/torch_ref.py prints the same lines for
 * PyTorch on the same shapes.
 *
 *   bench_cuda [--quick] [filter]   (--quick: fewer runs and no 65536x50304 matmul; filter: substring of a name)
 * Without a GPU it prints "no CUDA device: skipped" and exits 0. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cgrad.h"

#ifdef CG_HAVE_CUDA
#include <cuda_runtime.h>

#include "cuda/runtime.h"

#define H200_BW_GBS 4200.0
#define H200_BF16_TFLOPS 790.0

typedef cg_status (*bench_fn)(void *ctx);

static int g_runs = 20;
static const char *g_filter = NULL;

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

/* Median time in microseconds of fn over g_runs runs after 3 warm-up runs; negative on error. */
static double time_us(bench_fn fn, void *ctx) {
    cudaStream_t s = (cudaStream_t)cg_cuda_rt_stream(0);
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0);
    cudaEventCreate(&e1);
    float *ms = malloc(sizeof(float) * (size_t)g_runs);
    double result = -1.0;
    for (int i = 0; i < 3; i++)
        if (fn(ctx) != CG_OK) goto done;
    for (int i = 0; i < g_runs; i++) {
        cudaEventRecord(e0, s);
        if (fn(ctx) != CG_OK) goto done;
        cudaEventRecord(e1, s);
        cudaEventSynchronize(e1);
        cudaEventElapsedTime(&ms[i], e0, e1);
    }
    qsort(ms, (size_t)g_runs, sizeof *ms, cmp_float);
    result = 1000.0 * ms[g_runs / 2];
done:
    free(ms);
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    return result;
}

static bool selected(const char *name) { return !g_filter || strstr(name, g_filter); }

/* bytes moved (read + written) or flops done; one line in the common format */
static void report(const char *name, const char *shape, double us, double bytes, double flops) {
    if (us < 0) {
        printf("%-26s %-22s failed: %s\n", name, shape, cg_last_error());
        return;
    }
    if (flops > 0) {
        double tf = flops / (us * 1e-6) / 1e12;
        printf("%-26s %-22s %10.1f us %9.1f TFLOP/s %5.1f%% of H200 bf16\n", name, shape, us, tf, 100.0 * tf / H200_BF16_TFLOPS);
    } else {
        double gbs = bytes / (us * 1e-6) / 1e9;
        printf("%-26s %-22s %10.1f us %9.1f GB/s    %5.1f%% of H200 copy\n", name, shape, us, gbs, 100.0 * gbs / H200_BW_GBS);
    }
    fflush(stdout);
}

typedef struct two {
    cg_tensor *out, *a, *b;
} two;

static cg_status run_copy(void *c) { return cg_copy(((two *)c)->out, ((two *)c)->a); }
static cg_status run_add(void *c) { return cg_binary_into(CG_OP_ADD, ((two *)c)->out, ((two *)c)->a, ((two *)c)->b); }
static cg_status run_sum_rows(void *c) { return cg_reduce_into(CG_REDUCE_SUM, ((two *)c)->out, NULL, ((two *)c)->a, 1, false); }
static cg_status run_sum_cols(void *c) { return cg_reduce_into(CG_REDUCE_SUM, ((two *)c)->out, NULL, ((two *)c)->a, 0, false); }
static cg_status run_matmul_nt(void *c) {
    two *t = c;
    return cg_matmul_into(t->out, t->a, t->b, false, true, 1.0f, 0.0f);
}

static cg_tensor *gpu_tensor(cg_dtype dt, int nd, const int64_t *shape, double fill) {
    cg_tensor *t = cg_tensor_empty(cg_persistent_arena(CG_CUDA(0)), dt, nd, shape);
    if (t && cg_fill(t, fill) != CG_OK) return NULL;
    return t;
}

static void bench_bandwidth(void) {
    const int64_t n = (int64_t)256 << 20; /* 1 GiB of f32 */
    int64_t sh[1] = {n};
    if (selected("copy")) {
        two t = {gpu_tensor(CG_F32, 1, sh, 0), gpu_tensor(CG_F32, 1, sh, 1), NULL};
        if (t.out && t.a) report("copy f32 (d2d)", "268435456", time_us(run_copy, &t), 2.0 * 4 * (double)n, 0);
    }
    if (selected("cast")) {
        two t = {gpu_tensor(CG_BF16, 1, sh, 0), gpu_tensor(CG_F32, 1, sh, 1), NULL};
        if (t.out && t.a) report("cast f32->bf16", "268435456", time_us(run_copy, &t), 6.0 * (double)n, 0);
    }
    if (selected("broadcast_add")) {
        int64_t xs[2] = {65536, 768}, bs[1] = {768};
        two t = {gpu_tensor(CG_F32, 2, xs, 0), gpu_tensor(CG_F32, 2, xs, 1), gpu_tensor(CG_F32, 1, bs, 2)};
        if (t.out && t.a && t.b) report("broadcast_add f32", "65536x768 + 768", time_us(run_add, &t), 2.0 * 4 * 65536 * 768, 0);
        two h = {gpu_tensor(CG_BF16, 2, xs, 0), gpu_tensor(CG_BF16, 2, xs, 1), gpu_tensor(CG_BF16, 1, bs, 2)};
        if (h.out && h.a && h.b) report("broadcast_add bf16", "65536x768 + 768", time_us(run_add, &h), 2.0 * 2 * 65536 * 768, 0);
    }
    if (selected("sum")) {
        int64_t xs[2] = {65536, 768}, rs[1] = {65536}, cs[1] = {768};
        two r = {gpu_tensor(CG_F32, 1, rs, 0), gpu_tensor(CG_F32, 2, xs, 1), NULL};
        if (r.out && r.a) report("sum rows f32", "65536x768 -> 65536", time_us(run_sum_rows, &r), 4.0 * 65536 * 768, 0);
        two c = {gpu_tensor(CG_F32, 1, cs, 0), gpu_tensor(CG_F32, 2, xs, 1), NULL};
        if (c.out && c.a) report("sum cols f32 (dbias)", "65536x768 -> 768", time_us(run_sum_cols, &c), 4.0 * 65536 * 768, 0);
    }
}

static void bench_matmul(bool quick) {
    /* x [M, K] @ W^T with W [N, K]: the linear layer's layout */
    const int64_t shapes[3][3] = {{4096, 4096, 4096}, {65536, 2304, 768}, {65536, 50304, 768}};
    for (int i = 0; i < (quick ? 2 : 3); i++) {
        int64_t M = shapes[i][0], N = shapes[i][1], K = shapes[i][2];
        char name[64], shape[64];
        snprintf(name, sizeof name, "matmul bf16 %s", i == 0 ? "square" : i == 1 ? "qkv" : "lm_head");
        snprintf(shape, sizeof shape, "%lldx%lldx%lld", (long long)M, (long long)N, (long long)K);
        if (!selected("matmul")) continue;
        int64_t as[2] = {M, K}, ws[2] = {N, K}, os[2] = {M, N};
        two t = {gpu_tensor(CG_BF16, 2, os, 0), gpu_tensor(CG_BF16, 2, as, 0.01), gpu_tensor(CG_BF16, 2, ws, 0.01)};
        if (!t.out || !t.a || !t.b) {
            printf("%-26s %-22s failed: %s\n", name, shape, cg_last_error());
            continue;
        }
        report(name, shape, time_us(run_matmul_nt, &t), 0, 2.0 * (double)M * (double)N * (double)K);
        cg_arena_reset(cg_persistent_arena(CG_CUDA(0))); /* the lm_head output alone is 6.6 GB */
    }
}

typedef struct adamw_bench {
    cg_optimizer *opt;
} adamw_bench;

static cg_status run_adamw(void *c) { return cg_optimizer_step(((adamw_bench *)c)->opt, 1e-4f, NULL); }

/* The fused AdamW step over 124M fp32 parameters (GPT-2 small): scan (norm, non-finite count) + update.
 * Bytes: p, g, m, v read, p, m, v written. */
static void bench_adamw(void) {
    if (!selected("adamw")) return;
    const int64_t n = 124000000;
    int64_t sh[1] = {n};
    cg_tensor *p = gpu_tensor(CG_F32, 1, sh, 0.01);
    if (!p || cg_set_requires_grad(p, true) != CG_OK || cg_alloc_grad(p, cg_persistent_arena(CG_CUDA(0))) != CG_OK ||
        cg_fill(p->grad, 1e-3) != CG_OK) {
        printf("%-26s %-22s failed: %s\n", "adamw f32 fused", "124M params", cg_last_error());
        return;
    }
    cg_optimizer_config cfg = cg_optimizer_config_default(CG_OPT_ADAMW);
    cfg.weight_decay = 0.1f;
    adamw_bench b = {NULL};
    if (cg_optimizer_create(&cfg, 1, &p, &b.opt) != CG_OK) {
        printf("%-26s %-22s failed: %s\n", "adamw f32 fused", "124M params", cg_last_error());
        return;
    }
    report("adamw f32 fused", "124M params", time_us(run_adamw, &b), 7.0 * 4 * (double)n, 0);
    cg_optimizer_free(b.opt);
}

int main(int argc, char **argv) {
    bool quick = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0) quick = true;
        else g_filter = argv[i];
    }
    if (cg_cuda_device_count() == 0) {
        printf("bench_cuda: no CUDA device: skipped\n");
        return 0;
    }
    if (quick) g_runs = 5;
    cg_cuda_props p;
    if (cg_cuda_rt_device_props(0, &p) == CG_OK)
        printf("bench_cuda on %s (%d SMs, %.0f GiB)\n", p.name, p.sm_count, (double)p.total_mem / (1 << 30));
    bench_bandwidth();
    cg_arena_reset(cg_persistent_arena(CG_CUDA(0)));
    bench_adamw();
    cg_arena_reset(cg_persistent_arena(CG_CUDA(0)));
    bench_matmul(quick);
    cg_shutdown();
    return 0;
}

#else

int main(void) {
    printf("bench_cuda: no CUDA device: skipped (built without CUDA)\n");
    return 0;
}

#endif
