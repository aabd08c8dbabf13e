/* Shared helpers for the cmocka tests: includes in the order cmocka needs, float comparisons that print
 * both values, and the GPU skip rule. */
#ifndef CG_TEST_UTIL_H
#define CG_TEST_UTIL_H

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <cmocka.h>

#include "cgrad.h"

/* |a - b| <= atol + rtol * |b|, NaN only equal to NaN. Fails with both values and the call site. */
#define assert_close(a, b, rtol, atol) cg_test_assert_close((double)(a), (double)(b), (rtol), (atol), #a, __FILE__, __LINE__)

static inline void cg_test_assert_close(double a, double b, double rtol, double atol, const char *expr,
                                        const char *file, int line) {
    if (isnan(a) && isnan(b)) return;
    if (isinf(a) || isinf(b)) {
        if (a == b) return;
    } else if (fabs(a - b) <= atol + rtol * fabs(b)) {
        return;
    }
    print_error("%s = %.9g, expected %.9g (rtol %g, atol %g)\n", expr, a, b, rtol, atol);
    _fail(file, line);
}

/* Asserts that a status is CG_OK, printing cg_last_error() otherwise. */
#define assert_ok(expr)                                                                                  \
    do {                                                                                                 \
        cg_status st_ = (expr);                                                                          \
        if (st_ != CG_OK) {                                                                              \
            print_error("%s failed: %s\n", #expr, cg_last_error());                                   \
            fail();                                                                                      \
        }                                                                                                \
    } while (0)

/* Asserts that an error message contains a substring. */
#define assert_error_contains(needle)                                                                    \
    do {                                                                                                 \
        if (!strstr(cg_last_error(), (needle))) {                                                        \
            print_error("error message \"%s\" does not contain \"%s\"\n", cg_last_error(), (needle));  \
            fail();                                                                                      \
        }                                                                                                \
    } while (0)

/* CUDA tests call this first: it skips the test (cmocka skip) when there is no GPU, unless
 * CG_REQUIRE_GPU=1 (make test-gpu), where a missing GPU fails. */
#define cg_test_require_gpu()                                                                            \
    do {                                                                                                 \
        if (cg_cuda_device_count() == 0) {                                                               \
            if (getenv("CG_REQUIRE_GPU") && strcmp(getenv("CG_REQUIRE_GPU"), "1") == 0) {                \
                print_error("no CUDA device, and CG_REQUIRE_GPU=1\n");                                \
                fail();                                                                                  \
            }                                                                                            \
            print_message("skipped: no CUDA device (%s)\n",                                              \
                          cg_cuda_compiled() ? "built with CUDA" : "built without CUDA");               \
            skip();                                                                                      \
        }                                                                                                \
    } while (0)

/* True when the heavier checks of `make test-full` are requested. */
static inline int cg_test_full(void) { return getenv("CG_TEST_FULL") && strcmp(getenv("CG_TEST_FULL"), "1") == 0; }

/* Per-test teardown: drop the step arenas so one test's tensors cannot leak into the next. */
static inline int cg_test_teardown(void **state) {
    (void)state;
    cg_step_end();
    return 0;
}

/* A deterministic pseudo-random float in [-1, 1) for test data (xorshift; independent of cgrad's RNG). */
static inline float cg_test_randf(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return (float)((*s >> 40) * (1.0 / 8388608.0)) - 1.0f;
}

/* Runs `$CGRAD_BIN args` (build/bin/cgrad by default) with stderr joined to stdout; keeps the first n-1 bytes
 * of the output in out (the rest is read and dropped, so the program never dies of a full pipe) and returns
 * the exit code (-1 if it did not exit normally). */
/* Runs a shell command; its output (stdout and whatever the command redirects) goes to out (truncated to
 * n - 1 bytes, NUL-terminated). Returns the exit status, or -1 if it did not exit normally. */
static inline int cg_test_run_command(const char *cmd, char *out, size_t n) {
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t len = 0, got;
    char sink[4096];
    while ((got = fread(len < n - 1 ? out + len : sink, 1, len < n - 1 ? n - 1 - len : sizeof sink, p)) > 0)
        if (len < n - 1) len += got;
    out[len] = '\0';
    int status = pclose(p);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static inline int cg_test_run_cgrad(const char *args, char *out, size_t n) {
    const char *bin = getenv("CGRAD_BIN");
    if (!bin) bin = "build/bin/cgrad";
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "%s %s 2>&1", bin, args);
    return cg_test_run_command(cmd, out, n);
}

/* A step-arena f32 tensor of the shape, filled with cg_test_randf * scale + shift; a gradient leaf if grad. */
static inline cg_tensor *cg_test_rand_tensor(int nd, const int64_t *shape, uint64_t seed, float scale, float shift,
                                             bool grad) {
    int64_t n = 1;
    for (int k = 0; k < nd; k++) n *= shape[k];
    cg_tensor *t = cg_tensor_empty(cg_step_arena(CG_CPU), CG_F32, nd, shape);
    assert_non_null(t);
    float *v = cg_data(t);
    for (int64_t i = 0; i < n; i++) v[i] = cg_test_randf(&seed) * scale + shift;
    if (grad) assert_ok(cg_set_requires_grad(t, true));
    return t;
}

/* A step-arena [B, T] i32 tensor of pseudo-random token ids in [0, vocab) (xorshift from seed). */
static inline cg_tensor *cg_test_random_tokens(int64_t B, int64_t T, uint64_t seed, int64_t vocab) {
    int64_t s[2] = {B, T};
    cg_tensor *t = cg_tensor_empty(cg_step_arena(CG_CPU), CG_I32, 2, s);
    assert_non_null(t);
    int32_t *p = cg_data(t);
    for (int64_t i = 0; i < B * T; i++) {
        seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
        p[i] = (int32_t)(seed % (uint64_t)vocab);
    }
    return t;
}

/* A CPU model of a preset with weights large enough that every path carries signal a wrong composition
 * would change: init std 0.2, and every 1-d parameter (norms, biases) uniform in [0.5, 1.5) from Philox
 * seed norm_seed + its index. */
static inline cg_model *cg_test_tiny_model(const char *preset, uint64_t seed, uint64_t norm_seed) {
    cg_model_config cfg;
    assert_ok(cg_model_config_preset(preset, &cfg));
    cfg.init_std = 0.2f;
    cg_model *m = NULL;
    assert_ok(cg_model_create(&cfg, CG_CPU, seed, &m));
    for (int i = 0; i < m->n_params; i++) {
        cg_tensor *t = m->params[i].tensor;
        if (t->ndim == 1) {
            cg_rng r = cg_rng_init(norm_seed + (uint64_t)i);
            assert_ok(cg_rng_uniform(&r, t, 0.5f, 1.5f));
        }
    }
    return m;
}

/* The logical (row-major) values of any CPU tensor as a malloc'd array of doubles (free it). */
static inline double *cg_test_values(const cg_tensor *t) {
    int64_t n = cg_numel(t);
    double *v = malloc(sizeof(double) * (size_t)(n ? n : 1));
    assert_non_null(v);
    for (int64_t i = 0; i < n; i++) v[i] = cg_get_flat(t, i);
    return v;
}

#endif
