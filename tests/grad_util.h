/* Inputs and checks shared by the gradient tests of the primitive ops (test_grad_basic.c, test_grad_shape.c):
 * generators that keep values away from kinks, packed/transposed/sliced layouts, and a gradcheck wrapper. */
#ifndef CG_TEST_GRAD_UTIL_H
#define CG_TEST_GRAD_UTIL_H

#include "test_util.h"

/* ------------------------------------------------------------------ inputs */

typedef float (*gen_fn)(uint64_t *s);

static inline float gen_any(uint64_t *s) { return 2.0f * cg_test_randf(s); }               /* [-2, 2) */
static inline float gen_pos(uint64_t *s) { return 1.1f + 0.9f * cg_test_randf(s); }        /* [0.2, 2) */
static inline float gen_away(uint64_t *s) { /* |x| in [0.1, 1.5): away from the kinks of abs/relu/sign at 0 */
    float v = cg_test_randf(s);
    return (v < 0 ? -0.1f : 0.1f) + 1.4f * v;
}
static inline float gen_nonzero(uint64_t *s) { /* |x| in [0.5, 1.5): safe denominators */
    float v = cg_test_randf(s);
    return (v < 0 ? -0.5f : 0.5f) + v;
}
/* maximum/minimum: a gets odd multiples of 0.1, b even multiples jittered by < 0.02, so |a - b| > 0.08 */
static inline float gen_odd_tenths(uint64_t *s) { return 0.1f * (float)(2 * (int)(8.0f * cg_test_randf(s)) + 1); }
static inline float gen_even_tenths(uint64_t *s) {
    return 0.2f * (float)(int)(8.0f * cg_test_randf(s)) + 0.02f * cg_test_randf(s);
}
/* clamp(x, -0.5, 0.4): at least 0.05 from either bound */
static inline float gen_clamp_safe(uint64_t *s) {
    for (;;) {
        float v = cg_test_randf(s);
        if (fabsf(v + 0.5f) > 0.05f && fabsf(v - 0.4f) > 0.05f) return v;
    }
}
/* max/min reductions: distinct values 0.01 apart (k -> 7919 k mod 1009 is a bijection), so no ties */
static uint64_t distinct_counter;
static inline float gen_distinct(uint64_t *s) {
    (void)s;
    return (float)((distinct_counter++ * 7919) % 1009) * 0.01f - 5.0f;
}

enum { PACKED, TRANSPOSED, STEPPED };

static inline cg_tensor *filled(int nd, const int64_t *shape, gen_fn gen, uint64_t seed) {
    int64_t n = 1;
    for (int i = 0; i < nd; i++) n *= shape[i];
    float *v = malloc(sizeof(float) * (size_t)(n ? n : 1));
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 12345;
    for (int64_t i = 0; i < n; i++) v[i] = gen(&s);
    cg_tensor *t = cg_tensor_from_data(cg_step_arena(CG_CPU), CG_F32, nd, shape, v);
    free(v);
    assert_non_null(t);
    return t;
}

/* A tensor of the given logical shape: packed, the transpose of a packed tensor (last two dims swapped),
 * or every second row (dim 0) of a taller tensor. */
static inline cg_tensor *make_input(int layout, int nd, const int64_t *shape, gen_fn gen, uint64_t seed) {
    int64_t base[CG_MAX_DIMS];
    memcpy(base, shape, sizeof(int64_t) * (size_t)nd);
    cg_tensor *t;
    if (layout == TRANSPOSED && nd >= 2) {
        base[nd - 2] = shape[nd - 1], base[nd - 1] = shape[nd - 2];
        t = cg_view_transpose(filled(nd, base, gen, seed), nd - 2, nd - 1);
    } else if (layout == STEPPED && nd >= 1) {
        base[0] = 2 * shape[0] + 1;
        t = cg_view_slice(filled(nd, base, gen, seed), 0, 1, 2 * shape[0] + 1, 2);
    } else {
        t = filled(nd, shape, gen, seed);
    }
    assert_non_null(t);
    bool strided = layout == TRANSPOSED ? nd >= 2 && shape[nd - 1] > 1 && shape[nd - 2] > 1
                                        : layout == STEPPED && nd >= 1 && shape[0] > 1;
    if (strided) assert_false(cg_is_contiguous(t));
    return t;
}

static inline cg_tensor *leaf(cg_tensor *t) {
    assert_non_null(t);
    assert_ok(cg_set_requires_grad(t, true));
    return t;
}

static inline cg_tensor *from_values(int nd, const int64_t *shape, const float *v) {
    cg_tensor *t = cg_tensor_from_data(cg_step_arena(CG_CPU), CG_F32, nd, shape, v);
    assert_non_null(t);
    return t;
}

static inline void check_gradients(cg_gradcheck_fn fn, void *user, int n, cg_tensor *const *inputs, const char *what) {
    cg_gradcheck_opts o = {.eps = 1e-3, .rtol = 1e-2, .atol = 1e-3, .max_per_input = 64};
    cg_gradcheck_result r;
    assert_ok(cg_gradcheck(fn, user, n, inputs, &o, &r));
    if (!r.passed) {
        print_error("%s: gradcheck: %lld of %lld failed; worst: input %d [%lld] analytic %.8g numeric %.8g\n", what,
                    (long long)r.failures, (long long)r.checked, r.worst_input, (long long)r.worst_index,
                    r.worst_analytic, r.worst_numeric);
        fail();
    }
    assert_true(r.checked > 0);
}

/* Element of t at the position of out-flat-index i of a broadcast result of shape (nd, shape). */
static inline double bcast_get(const cg_tensor *t, int nd, const int64_t *shape, int64_t i) {
    int64_t idx[CG_MAX_DIMS], full[CG_MAX_DIMS];
    for (int d = nd - 1; d >= 0; d--) full[d] = i % shape[d], i /= shape[d];
    int lead = nd - t->ndim;
    for (int d = 0; d < t->ndim; d++) idx[d] = t->shape[d] == 1 ? 0 : full[d + lead];
    return cg_get(t, idx);
}

static inline void assert_shape(const cg_tensor *t, int nd, const int64_t *shape) {
    assert_non_null(t);
    assert_int_equal(t->ndim, nd);
    for (int d = 0; d < nd; d++) assert_int_equal(t->shape[d], shape[d]);
}

#endif
