/* cg_sgemm throughput (GFLOP/s) for square sizes on one thread and on all threads, side by side with
 * OpenBLAS when libopenblas.so.0 can be dlopen'ed (a comparison only: cgrad never links against it).
 *
 *   bench_gemm [--quick] [--nt]
 *     --quick  only 512^3 and 1024^3
 *     --nt     also C = A B^T (the layout of x @ W^T in a linear layer) */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cgrad.h"

/* The CBLAS entry points, declared here so that nothing needs cblas.h at build time. */
enum { CBLAS_ROW_MAJOR = 101, CBLAS_NO_TRANS = 111, CBLAS_TRANS = 112 };
typedef void (*cblas_sgemm_fn)(int order, int trans_a, int trans_b, int m, int n, int k, float alpha,
                               const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc);
typedef void (*openblas_set_num_threads_fn)(int n);

typedef struct openblas {
    void *handle;
    cblas_sgemm_fn sgemm;
    openblas_set_num_threads_fn set_num_threads;
} openblas;

static openblas openblas_open(void) {
    openblas ob = {0};
    ob.handle = dlopen("libopenblas.so.0", RTLD_NOW | RTLD_LOCAL);
    if (!ob.handle) return ob;
    ob.sgemm = (cblas_sgemm_fn)dlsym(ob.handle, "cblas_sgemm");
    ob.set_num_threads = (openblas_set_num_threads_fn)dlsym(ob.handle, "openblas_set_num_threads");
    if (!ob.sgemm || !ob.set_num_threads) {
        dlclose(ob.handle);
        memset(&ob, 0, sizeof ob);
    }
    return ob;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct problem {
    int64_t n;
    bool trans_b;
    float *a, *b, *c;
} problem;

static void run_cgrad(const problem *p) {
    cg_sgemm(false, p->trans_b, p->n, p->n, p->n, 1.0f, p->a, p->n, p->b, p->n, 0.0f, p->c, p->n);
}

static void run_openblas(const problem *p, const openblas *ob) {
    int n = (int)p->n;
    ob->sgemm(CBLAS_ROW_MAJOR, CBLAS_NO_TRANS, p->trans_b ? CBLAS_TRANS : CBLAS_NO_TRANS, n, n, n, 1.0f, p->a, n,
              p->b, n, 0.0f, p->c, n);
}

static double time_one(const problem *p, const openblas *ob) {
    double t0 = now_s();
    if (ob) run_openblas(p, ob);
    else run_cgrad(p);
    return now_s() - t0;
}

/* Best-of-reps GFLOP/s of cgrad and (when ob is set) OpenBLAS, after one warm-up call each. The two run in
 * alternation, so that load from other processes on the machine hits both alike. */
static void measure(const problem *p, const openblas *ob, double *ours, double *theirs) {
    double flops = 2.0 * (double)p->n * (double)p->n * (double)p->n;
    int reps = p->n <= 512 ? 30 : p->n <= 1024 ? 10 : 4;
    time_one(p, NULL); /* warm-up: page faults, thread start-up */
    if (ob) time_one(p, ob);
    double best_ours = 1e30, best_theirs = 1e30;
    for (int r = 0; r < reps; r++) {
        double t = time_one(p, NULL);
        if (t < best_ours) best_ours = t;
        if (ob) {
            t = time_one(p, ob);
            if (t < best_theirs) best_theirs = t;
        }
    }
    *ours = flops / best_ours * 1e-9;
    *theirs = ob ? flops / best_theirs * 1e-9 : 0.0;
}

/* Largest relative difference between the two libraries' results, as a sanity check of the figures. */
static double max_rel_diff(const float *x, const float *y, int64_t n) {
    double worst = 0.0, scale = 1e-30;
    for (int64_t i = 0; i < n; i++) {
        double d = x[i] > y[i] ? x[i] - y[i] : y[i] - x[i];
        double m = y[i] < 0 ? -y[i] : y[i];
        if (d > worst) worst = d;
        if (m > scale) scale = m;
    }
    return worst / scale;
}

int main(int argc, char **argv) {
    bool quick = false, with_nt = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0) {
            quick = true;
        } else if (strcmp(argv[i], "--nt") == 0) {
            with_nt = true;
        } else {
            fprintf(stderr, "usage: %s [--quick] [--nt]\n", argv[0]);
            return 2;
        }
    }
    const int64_t sizes[] = {512, 1024, 2048};
    int nsizes = quick ? 2 : 3;
    int all_threads = cg_set_num_threads(0);
    openblas ob = openblas_open();
    printf("sgemm GFLOP/s, row-major C = A B%s; best of several runs after a warm-up\n", with_nt ? " and A B^T" : "");
    if (!ob.handle) printf("(libopenblas.so.0 not found: cgrad only)\n");
    printf("%-6s %-7s %7s %10s %10s %8s %10s\n", "layout", "size", "threads", "cgrad", "openblas", "ratio",
           "max rel diff");

    for (int layout = 0; layout < (with_nt ? 2 : 1); layout++) {
        for (int s = 0; s < nsizes; s++) {
            int64_t n = sizes[s];
            size_t bytes = sizeof(float) * (size_t)(n * n);
            problem p = {n, layout == 1, malloc(bytes), malloc(bytes), malloc(bytes)};
            float *c_ref = malloc(bytes);
            if (!p.a || !p.b || !p.c || !c_ref) {
                fprintf(stderr, "bench_gemm: out of memory\n");
                return 1;
            }
            uint64_t seed = 42;
            for (int64_t i = 0; i < n * n; i++) {
                seed = seed * 6364136223846793005ull + 1442695040888963407ull;
                p.a[i] = (float)((seed >> 40) * (1.0 / 16777216.0)) - 0.5f;
                seed = seed * 6364136223846793005ull + 1442695040888963407ull;
                p.b[i] = (float)((seed >> 40) * (1.0 / 16777216.0)) - 0.5f;
            }
            int thread_counts[2] = {1, all_threads};
            for (int t = 0; t < (all_threads > 1 ? 2 : 1); t++) {
                cg_set_num_threads(thread_counts[t]);
                if (ob.handle) ob.set_num_threads(thread_counts[t]);
                double ours, theirs;
                measure(&p, ob.handle ? &ob : NULL, &ours, &theirs);
                printf("%-6s %4lld^3 %7d %10.1f", layout ? "NT" : "NN", (long long)n, thread_counts[t], ours);
                if (ob.handle) {
                    run_cgrad(&p);
                    memcpy(c_ref, p.c, bytes);
                    run_openblas(&p, &ob);
                    printf(" %10.1f %8.2f %10.1e", theirs, ours / theirs, max_rel_diff(c_ref, p.c, n * n));
                }
                printf("\n");
                fflush(stdout);
            }
            free(p.a), free(p.b), free(p.c), free(c_ref);
        }
    }
    if (ob.handle) dlclose(ob.handle);
    return 0;
}
