/* Linear (bias, GELU epilogue), LoRA linear and dropout: forward values against naive double loops,
 * gradients by cg_gradcheck and by closed forms, the dropout mask's statistics and reuse, and errors.
 * Gradcheck tolerances (eps 1e-3): linear and LoRA rtol 5e-3 / atol 1e-3 (f32 rounding of the perturbed
 * outputs is ~5e-4 in the numeric derivative, so 2e-4 fails), dropout + tanh rtol 1e-3 / atol 1e-4. */
#include "test_util.h"

#include "autograd/gradcheck.h"
#include "autograd/ops.h"

/* ------------------------------------------------------------------ helpers */

/* A step-arena f32 tensor with values in [-amp, amp). */
static cg_tensor *rand_tensor(int nd, const int64_t *shape, uint64_t seed, float amp) {
    int64_t n = 1;
    for (int i = 0; i < nd; i++) n *= shape[i];
    float *v = malloc(sizeof(float) * (size_t)(n ? n : 1));
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    for (int64_t i = 0; i < n; i++) v[i] = amp * cg_test_randf(&s);
    cg_tensor *t = cg_tensor_from_data(cg_step_arena(CG_CPU), CG_F32, nd, shape, v);
    free(v);
    assert_non_null(t);
    return t;
}

static cg_tensor *rand_leaf(int nd, const int64_t *shape, uint64_t seed, float amp) {
    cg_tensor *t = rand_tensor(nd, shape, seed, amp);
    assert_ok(cg_set_requires_grad(t, true));
    return t;
}

static cg_tensor *as_leaf(cg_tensor *t) {
    assert_non_null(t);
    assert_ok(cg_set_requires_grad(t, true));
    return t;
}

static double gelu_ref(double v) { return 0.5 * v * (1.0 + tanh(sqrt(2.0 / 3.14159265358979323846) * (v + 0.044715 * v * v * v))); }

/* y[n, o] = sum_i x[n, i] w[o, i] + bias[o] (+ scale * sum_k (sum_i xd[n, i] A[k, i]) B[o, k]), GELU optional;
 * x read through its logical shape, whatever its strides; mask (scaled, [N, in]) multiplies x in the adapter. */
static void naive_linear(const cg_tensor *x, const cg_tensor *w, const cg_tensor *bias, const cg_tensor *A,
                         const cg_tensor *B, double scale, const cg_tensor *mask, bool gelu, double *out) {
    int64_t in = w->shape[1], nout = w->shape[0], rows = cg_numel(x) / in, r = A ? A->shape[0] : 0;
    for (int64_t n = 0; n < rows; n++)
        for (int64_t o = 0; o < nout; o++) {
            double acc = bias ? cg_get_flat(bias, o) : 0.0;
            for (int64_t i = 0; i < in; i++) acc += cg_get_flat(x, n * in + i) * cg_get_flat(w, o * in + i);
            for (int64_t k = 0; k < r; k++) {
                double t = 0;
                for (int64_t i = 0; i < in; i++) {
                    double xd = cg_get_flat(x, n * in + i) * (mask ? cg_get_flat(mask, n * in + i) : 1.0);
                    t += xd * cg_get_flat(A, k * in + i);
                }
                acc += scale * t * cg_get_flat(B, o * r + k);
            }
            out[n * nout + o] = gelu ? gelu_ref(acc) : acc;
        }
}

static void assert_matches(const cg_tensor *y, const double *want, int64_t n, double rtol, double atol) {
    assert_int_equal(cg_numel(y), n);
    for (int64_t i = 0; i < n; i++) assert_close(cg_get_flat(y, i), want[i], rtol, atol);
}

static void check_gradients(cg_gradcheck_fn fn, void *user, int n, cg_tensor *const *inputs, double rtol,
                            double atol) {
    cg_gradcheck_opts o = {.eps = 1e-3, .rtol = rtol, .atol = atol};
    cg_gradcheck_result r;
    assert_ok(cg_gradcheck(fn, user, n, inputs, &o, &r));
    if (!r.passed) {
        print_error("gradcheck: %lld of %lld elements failed; worst: input %d [%lld] analytic %.8g numeric %.8g\n",
                    (long long)r.failures, (long long)r.checked, r.worst_input, (long long)r.worst_index,
                    r.worst_analytic, r.worst_numeric);
        fail();
    }
    assert_true(r.checked > 0);
}

/* ------------------------------------------------------------------ linear: forward */

typedef struct linear_case {
    int x_nd;
    int64_t x_shape[4];
    int64_t out;
    bool bias, gelu, transposed_x;
} linear_case;

/* x for a case: random, or the transpose of a random [in, N] tensor (a non-contiguous view). */
static cg_tensor *case_x(const linear_case *c, uint64_t seed) {
    if (!c->transposed_x) return rand_tensor(c->x_nd, c->x_shape, seed, 1.0f);
    int64_t base[2] = {c->x_shape[1], c->x_shape[0]};
    cg_tensor *t = cg_view_transpose(rand_tensor(2, base, seed, 1.0f), 0, 1);
    assert_non_null(t);
    assert_false(cg_is_contiguous(t));
    return t;
}

static const linear_case linear_cases[] = {
    {2, {5, 7}, 4, false, false, false},  {2, {5, 7}, 4, true, false, false},
    {2, {5, 7}, 4, false, true, false},   {2, {5, 7}, 4, true, true, false},
    {3, {2, 3, 13}, 6, true, false, false}, {3, {2, 3, 13}, 6, true, true, false},
    {2, {5, 7}, 3, true, true, true},     {1, {7}, 5, true, false, false},
    {2, {1, 65}, 3, true, true, false},
};

static void test_linear_forward(void **state) {
    (void)state;
    for (size_t ci = 0; ci < sizeof linear_cases / sizeof *linear_cases; ci++) {
        const linear_case *c = &linear_cases[ci];
        int64_t in = c->x_shape[c->x_nd - 1];
        int64_t ws[2] = {c->out, in}, bs[1] = {c->out};
        cg_tensor *x = case_x(c, 10 + ci), *w = rand_tensor(2, ws, 20 + ci, 1.0f);
        cg_tensor *b = c->bias ? rand_tensor(1, bs, 30 + ci, 1.0f) : NULL;
        cg_tensor *y = cg_linear(x, w, b, c->gelu);
        assert_non_null(y);
        assert_int_equal(y->ndim, c->x_nd);
        for (int d = 0; d < c->x_nd - 1; d++) assert_int_equal(y->shape[d], c->x_shape[d]);
        assert_int_equal(y->shape[c->x_nd - 1], c->out);
        int64_t n = cg_numel(y);
        double *want = malloc(sizeof(double) * (size_t)n);
        naive_linear(x, w, b, NULL, NULL, 0, NULL, c->gelu, want);
        assert_matches(y, want, n, 1e-5, 1e-6);
        free(want);
        assert_null(y->node); /* nothing required a gradient */
        if (c->gelu) { /* the fused epilogue is the GELU op, bit for bit */
            cg_tensor *ref = cg_gelu(cg_linear(x, w, b, false));
            assert_non_null(ref);
            for (int64_t i = 0; i < n; i++) assert_true(cg_get_flat(y, i) == cg_get_flat(ref, i));
        }
    }
}

/* ------------------------------------------------------------------ linear: gradients */

typedef struct linear_fn_args {
    bool gelu;
} linear_fn_args;

static cg_tensor *linear_fn(cg_tensor *const *in, void *user) {
    return cg_linear(in[0], in[1], in[2], ((linear_fn_args *)user)->gelu);
}

static void test_linear_gradcheck(void **state) {
    (void)state;
    for (size_t ci = 0; ci < sizeof linear_cases / sizeof *linear_cases; ci++) {
        const linear_case *c = &linear_cases[ci];
        int64_t in = c->x_shape[c->x_nd - 1];
        int64_t ws[2] = {c->out, in}, bs[1] = {c->out};
        cg_tensor *inputs[3] = {as_leaf(case_x(c, 40 + ci)), rand_leaf(2, ws, 50 + ci, 1.0f),
                                c->bias ? rand_leaf(1, bs, 60 + ci, 1.0f) : NULL};
        linear_fn_args a = {c->gelu};
        check_gradients(linear_fn, &a, c->bias ? 3 : 2, inputs, 5e-3, 1e-3);
        cg_step_end();
    }
}

/* Closed form with upstream gradient r (no GELU): dx = r w, dw = r^T x, dbias = column sums of r; only the
 * inputs that require a gradient receive one. */
static void test_linear_grad_closed_form(void **state) {
    (void)state;
    int64_t xs[2] = {6, 5}, ws[2] = {3, 5}, bs[1] = {3}, ys[2] = {6, 3};
    cg_tensor *x = rand_leaf(2, xs, 1, 1.0f), *w = rand_tensor(2, ws, 2, 1.0f), *b = rand_leaf(1, bs, 3, 1.0f);
    cg_tensor *r = rand_tensor(2, ys, 4, 1.0f);
    cg_tensor *y = cg_linear(x, w, b, false);
    assert_non_null(y);
    assert_ok(cg_backward_with_grad(y, r));
    assert_null(w->grad);
    for (int n = 0; n < 6; n++)
        for (int i = 0; i < 5; i++) {
            double want = 0;
            for (int o = 0; o < 3; o++) want += cg_get_flat(r, n * 3 + o) * cg_get_flat(w, o * 5 + i);
            assert_close(cg_get_flat(x->grad, n * 5 + i), want, 1e-5, 1e-6);
        }
    for (int o = 0; o < 3; o++) {
        double want = 0;
        for (int n = 0; n < 6; n++) want += cg_get_flat(r, n * 3 + o);
        assert_close(cg_get_flat(b->grad, o), want, 1e-5, 1e-6);
    }
    /* now w alone */
    cg_tensor *w2 = as_leaf(rand_tensor(2, ws, 2, 1.0f)), *x2 = rand_tensor(2, xs, 1, 1.0f);
    y = cg_linear(x2, w2, NULL, false);
    assert_ok(cg_backward_with_grad(y, r));
    for (int o = 0; o < 3; o++)
        for (int i = 0; i < 5; i++) {
            double want = 0;
            for (int n = 0; n < 6; n++) want += cg_get_flat(r, n * 3 + o) * cg_get_flat(x2, n * 5 + i);
            assert_close(cg_get_flat(w2->grad, o * 5 + i), want, 1e-5, 1e-6);
        }
}

static void test_linear_errors(void **state) {
    (void)state;
    int64_t xs[2] = {5, 7}, ws[2] = {4, 7}, w_bad[2] = {4, 6}, b_bad[1] = {5}, w1[1] = {7};
    cg_tensor *x = rand_tensor(2, xs, 1, 1), *w = rand_tensor(2, ws, 2, 1);
    assert_null(cg_linear(x, rand_tensor(2, w_bad, 3, 1), NULL, false));
    assert_int_equal(cg_last_status(), CG_ERR_SHAPE);
    assert_error_contains("linear: x f32[5, 7] cpu and weight f32[4, 6] cpu");
    assert_null(cg_linear(x, w, rand_tensor(1, b_bad, 4, 1), false));
    assert_int_equal(cg_last_status(), CG_ERR_SHAPE);
    assert_error_contains("bias f32[5] cpu does not match weight f32[4, 7]");
    assert_null(cg_linear(x, rand_tensor(1, w1, 5, 1), NULL, false));
    assert_int_equal(cg_last_status(), CG_ERR_SHAPE);
    cg_tensor *xi = cg_tensor_zeros(cg_step_arena(CG_CPU), CG_I32, 2, xs);
    assert_null(cg_linear(xi, w, NULL, true));
    assert_int_equal(cg_last_status(), CG_ERR_DTYPE);
    assert_error_contains("linear: x i32[5, 7] cpu must be f32");
    assert_null(cg_linear(NULL, w, NULL, false));
    assert_error_contains("linear: x is NULL");
}

/* ------------------------------------------------------------------ LoRA */

typedef struct lora_setup {
    cg_tensor *x, *w, *b, *A, *B;
} lora_setup;

static lora_setup make_lora(int nd, const int64_t *xs, int64_t out, int64_t r, uint64_t seed, bool zero_b) {
    int64_t in = xs[nd - 1];
    int64_t ws[2] = {out, in}, bs[1] = {out}, as[2] = {r, in}, bbs[2] = {out, r};
    lora_setup s = {rand_tensor(nd, xs, seed, 1), rand_tensor(2, ws, seed + 1, 1), rand_tensor(1, bs, seed + 2, 1),
                    rand_tensor(2, as, seed + 3, 1), rand_tensor(2, bbs, seed + 4, 1)};
    if (zero_b) assert_ok(cg_fill(s.B, 0.0));
    return s;
}

static void test_lora_zero_b_is_base_linear(void **state) {
    (void)state;
    int64_t xs[3] = {2, 3, 13};
    lora_setup s = make_lora(3, xs, 6, 4, 7, true);
    cg_tensor *base = cg_linear(s.x, s.w, s.b, false);
    assert_non_null(base);
    for (int dropout = 0; dropout < 2; dropout++) {
        cg_rng rng = cg_rng_init(5);
        cg_tensor *y = cg_lora_linear(s.x, s.w, s.b, s.A, s.B, 4.0f, dropout ? 0.3f : 0.0f, &rng);
        assert_non_null(y);
        assert_true(cg_same_shape(y, base));
        for (int64_t i = 0; i < cg_numel(y); i++) assert_true(cg_get_flat(y, i) == cg_get_flat(base, i));
    }
}

static void test_lora_forward(void **state) {
    (void)state;
    const int64_t r = 4;
    const double alpha = 16.0;
    const double scales[2] = {alpha / (double)r, alpha / sqrt((double)r)}; /* LoRA, rsLoRA */
    int64_t xs[3] = {2, 3, 13}, xs1[2] = {1, 7};
    for (int si = 0; si < 2; si++) {
        for (int shape = 0; shape < 2; shape++) {
            lora_setup s = shape ? make_lora(2, xs1, 5, r, 30, false) : make_lora(3, xs, 6, r, 20, false);
            cg_tensor *y = cg_lora_linear(s.x, s.w, s.b, s.A, s.B, (float)scales[si], 0.0f, NULL);
            assert_non_null(y);
            int64_t n = cg_numel(y);
            double *want = malloc(sizeof(double) * (size_t)n);
            naive_linear(s.x, s.w, s.b, s.A, s.B, (float)scales[si], NULL, false, want);
            assert_matches(y, want, n, 1e-5, 1e-5);
            /* with dropout, the mask is Bernoulli(1 - p) drawn from rng over x's [N, in] elements in order */
            const float p = 0.25f;
            cg_rng rng = cg_rng_init(99), copy = rng;
            cg_tensor *yd = cg_lora_linear(s.x, s.w, s.b, s.A, s.B, (float)scales[si], p, &rng);
            assert_non_null(yd);
            assert_true(rng.offset > copy.offset); /* the draw advanced the generator */
            cg_tensor *mask = cg_tensor_empty(cg_step_arena(CG_CPU), CG_F32, s.x->ndim, s.x->shape);
            assert_ok(cg_rng_bernoulli(&copy, mask, 1.0f - p));
            assert_int_equal(copy.offset, rng.offset);
            assert_ok(cg_affine_into(mask, mask, 1.0f / (1.0f - p), 0.0f));
            naive_linear(s.x, s.w, s.b, s.A, s.B, (float)scales[si], mask, false, want);
            assert_matches(yd, want, n, 1e-5, 1e-5);
            free(want);
        }
    }
}

typedef struct lora_fn_args {
    float scale, p;
    cg_rng rng; /* copied per evaluation: every evaluation draws the same mask */
} lora_fn_args;

static cg_tensor *lora_fn(cg_tensor *const *in, void *user) {
    lora_fn_args *a = user;
    cg_rng rng = a->rng;
    return cg_lora_linear(in[0], in[1], in[4], in[2], in[3], a->scale, a->p, &rng);
}

static void test_lora_gradcheck(void **state) {
    (void)state;
    int64_t xs[3] = {2, 3, 13}, xs2[2] = {5, 7};
    for (int c = 0; c < 4; c++) {
        bool dropout = c & 1, batched = c & 2;
        lora_setup s = batched ? make_lora(3, xs, 6, 4, 100 + c, false) : make_lora(2, xs2, 3, 2, 100 + c, false);
        lora_fn_args a = {.scale = 2.0f, .p = dropout ? 0.3f : 0.0f, .rng = cg_rng_fork(&(cg_rng){7, 0, 0}, 3)};
        /* x, A, B (w and bias frozen), then everything */
        cg_tensor *in[5] = {as_leaf(s.x), s.w, as_leaf(s.A), as_leaf(s.B), s.b};
        check_gradients(lora_fn, &a, 5, in, 5e-3, 1e-3);
        assert_ok(cg_set_requires_grad(s.w, true));
        assert_ok(cg_set_requires_grad(s.b, true));
        check_gradients(lora_fn, &a, 5, in, 5e-3, 1e-3);
        cg_step_end();
    }
}

/* Frozen base: only A and B get gradients; their values against the closed forms (with a dropout mask). */
static void test_lora_frozen_base_grads(void **state) {
    (void)state;
    int64_t xs[2] = {6, 5};
    const int64_t N = 6, in = 5, out = 3, r = 2;
    const float p = 0.4f, scale = 1.5f;
    lora_setup s = make_lora(2, xs, out, r, 300, false);
    assert_ok(cg_set_requires_grad(s.A, true));
    assert_ok(cg_set_requires_grad(s.B, true));
    cg_rng rng = cg_rng_init(11), copy = rng;
    cg_tensor *y = cg_lora_linear(s.x, s.w, s.b, s.A, s.B, scale, p, &rng);
    assert_non_null(y);
    int64_t ys[2] = {N, out};
    cg_tensor *g = rand_tensor(2, ys, 301, 1);
    assert_ok(cg_backward_with_grad(y, g));
    assert_null(s.x->grad);
    assert_null(s.w->grad);
    assert_null(s.b->grad);
    assert_non_null(s.A->grad);
    assert_non_null(s.B->grad);
    cg_tensor *mask = cg_tensor_empty(cg_step_arena(CG_CPU), CG_F32, 2, xs);
    assert_ok(cg_rng_bernoulli(&copy, mask, 1.0f - p));
    double xd[6][5], t[6][2];
    for (int n = 0; n < N; n++)
        for (int i = 0; i < in; i++) xd[n][i] = cg_get_flat(s.x, n * in + i) * cg_get_flat(mask, n * in + i) / (1.0 - p);
    for (int n = 0; n < N; n++)
        for (int k = 0; k < r; k++) {
            t[n][k] = 0;
            for (int i = 0; i < in; i++) t[n][k] += xd[n][i] * cg_get_flat(s.A, k * in + i);
        }
    for (int o = 0; o < out; o++) /* dB = scale g^T t */
        for (int k = 0; k < r; k++) {
            double want = 0;
            for (int n = 0; n < N; n++) want += scale * cg_get_flat(g, n * out + o) * t[n][k];
            assert_close(cg_get_flat(s.B->grad, o * r + k), want, 1e-5, 1e-6);
        }
    for (int k = 0; k < r; k++) /* dA = scale (g B)^T xd */
        for (int i = 0; i < in; i++) {
            double want = 0;
            for (int n = 0; n < N; n++) {
                double gb = 0;
                for (int o = 0; o < out; o++) gb += cg_get_flat(g, n * out + o) * cg_get_flat(s.B, o * r + k);
                want += scale * gb * xd[n][i];
            }
            assert_close(cg_get_flat(s.A->grad, k * in + i), want, 1e-5, 1e-6);
        }
}

/* At LoRA's initialisation (B = 0) dL/dA = 0 and only B learns. */
static void test_lora_init_only_b_learns(void **state) {
    (void)state;
    int64_t xs[2] = {4, 6};
    lora_setup s = make_lora(2, xs, 3, 2, 400, true);
    as_leaf(s.A);
    as_leaf(s.B);
    cg_tensor *y = cg_lora_linear(s.x, s.w, NULL, s.A, s.B, 2.0f, 0.0f, NULL);
    assert_ok(cg_backward(cg_sum_all(y)));
    double norm_b = 0;
    for (int64_t i = 0; i < cg_numel(s.A); i++) assert_true(cg_get_flat(s.A->grad, i) == 0.0);
    for (int64_t i = 0; i < cg_numel(s.B); i++) norm_b += fabs(cg_get_flat(s.B->grad, i));
    assert_true(norm_b > 0.1);
}

static void test_lora_errors(void **state) {
    (void)state;
    int64_t xs[2] = {4, 6}, bad_a[2] = {2, 5}, bad_b[2] = {3, 3};
    lora_setup s = make_lora(2, xs, 3, 2, 500, false);
    cg_rng rng = cg_rng_init(1);
    assert_null(cg_lora_linear(s.x, s.w, s.b, rand_tensor(2, bad_a, 1, 1), s.B, 1, 0, NULL));
    assert_int_equal(cg_last_status(), CG_ERR_SHAPE);
    assert_error_contains("lora_linear: lora_a f32[2, 5] cpu and lora_b f32[3, 2] cpu do not fit x f32[4, 6]");
    assert_null(cg_lora_linear(s.x, s.w, s.b, s.A, rand_tensor(2, bad_b, 1, 1), 1, 0, NULL));
    assert_error_contains("need A [r, 6] and B [3, r]");
    assert_null(cg_lora_linear(s.x, s.w, s.b, s.A, s.B, 1, 1.0f, &rng));
    assert_int_equal(cg_last_status(), CG_ERR_INVALID_ARG);
    assert_error_contains("dropout_p 1 outside [0, 1)");
    assert_null(cg_lora_linear(s.x, s.w, s.b, s.A, s.B, 1, 0.1f, NULL));
    assert_error_contains("needs an rng");
    assert_null(cg_lora_linear(s.x, s.w, s.b, s.A, s.B, NAN, 0, NULL));
    assert_error_contains("scale nan is not finite");
    assert_null(cg_lora_linear(s.x, s.w, s.b, NULL, s.B, 1, 0, NULL));
    assert_error_contains("lora_linear: lora_a is NULL");
}

/* ------------------------------------------------------------------ dropout */

static void test_dropout_statistics(void **state) {
    (void)state;
    const int64_t n = 100000;
    const float p = 0.3f;
    int64_t shape[2] = {200, 500};
    cg_tensor *x = rand_tensor(2, shape, 8, 0.5f);
    assert_ok(cg_affine_into(x, x, 1.0f, 1.0f)); /* values in [0.5, 1.5): never 0 */
    cg_rng rng = cg_rng_init(2024);
    cg_tensor *y = cg_dropout(x, p, &rng);
    assert_non_null(y);
    int64_t zeros = 0;
    double sum_x = 0, sum_y = 0, sum_x2 = 0;
    for (int64_t i = 0; i < n; i++) {
        double xv = cg_get_flat(x, i), yv = cg_get_flat(y, i);
        if (yv == 0.0) {
            zeros++;
        } else {
            assert_true((float)yv == (float)xv * (1.0f / (1.0f - p))); /* kept and rescaled */
        }
        sum_x += xv, sum_y += yv, sum_x2 += xv * xv;
    }
    /* zero fraction ~ p: 5 standard deviations of a binomial proportion */
    double frac = (double)zeros / (double)n, sd_frac = sqrt(p * (1.0 - p) / (double)n);
    assert_true(fabs(frac - p) < 5 * sd_frac);
    /* E[y] = x: the mean difference has sd sqrt(sum x^2 p / (1 - p)) / n */
    double sd_mean = sqrt(sum_x2 * p / (1.0 - p)) / (double)n;
    assert_true(fabs(sum_y / n - sum_x / n) < 5 * sd_mean);
    assert_true(sd_mean < 0.01); /* the bound is meaningful */
}

static void test_dropout_gradient_and_reuse(void **state) {
    (void)state;
    const float p = 0.5f;
    int64_t shape[2] = {7, 13};
    cg_tensor *x = rand_leaf(2, shape, 9, 1.0f);
    cg_rng rng = cg_rng_init(3), copy = rng;
    cg_tensor *y = cg_dropout(x, p, &rng);
    assert_non_null(y);
    cg_tensor *g = rand_tensor(2, shape, 10, 1.0f);
    assert_ok(cg_backward_with_grad(y, g));
    cg_tensor *mask = cg_tensor_empty(cg_step_arena(CG_CPU), CG_F32, 2, shape);
    assert_ok(cg_rng_bernoulli(&copy, mask, 1.0f - p));
    int kept = 0;
    for (int64_t i = 0; i < cg_numel(x); i++) {
        double m = cg_get_flat(mask, i);
        kept += m != 0;
        assert_true(cg_get_flat(y, i) == (m ? (float)cg_get_flat(x, i) * 2.0f : 0.0f));
        assert_true(cg_get_flat(x->grad, i) == (m ? (float)cg_get_flat(g, i) * 2.0f : 0.0f));
    }
    assert_true(kept > 0 && kept < cg_numel(x));
    /* the same generator state gives the same mask; the advanced one a different mask */
    cg_rng again = cg_rng_init(3);
    cg_tensor *y2 = cg_dropout(x, p, &again), *y3 = cg_dropout(x, p, &again);
    int differ = 0;
    for (int64_t i = 0; i < cg_numel(x); i++) {
        assert_true(cg_get_flat(y2, i) == cg_get_flat(y, i));
        differ += (cg_get_flat(y3, i) == 0) != (cg_get_flat(y, i) == 0);
    }
    assert_true(differ > 0);
}

typedef struct dropout_fn_args {
    float p;
    cg_rng rng;
} dropout_fn_args;

static cg_tensor *dropout_fn(cg_tensor *const *in, void *user) {
    dropout_fn_args *a = user;
    cg_rng rng = a->rng;
    return cg_tanh(cg_dropout(in[0], a->p, &rng)); /* something non-linear after the mask */
}

static void test_dropout_gradcheck_and_identity(void **state) {
    (void)state;
    int64_t shape[3] = {2, 5, 7}, base[2] = {9, 4};
    dropout_fn_args a = {0.3f, cg_rng_init(12)};
    cg_tensor *x = rand_leaf(3, shape, 13, 1.0f);
    check_gradients(dropout_fn, &a, 1, &x, 1e-3, 1e-4);
    cg_tensor *xt = as_leaf(cg_view_transpose(rand_tensor(2, base, 14, 1.0f), 0, 1)); /* non-contiguous */
    check_gradients(dropout_fn, &a, 1, &xt, 1e-3, 1e-4);
    /* p = 0: x itself, nothing recorded */
    int64_t tape = cg_tape_size();
    assert_ptr_equal(cg_dropout(x, 0.0f, NULL), x);
    assert_int_equal(cg_tape_size(), tape);
}

static void test_dropout_errors(void **state) {
    (void)state;
    int64_t shape[1] = {4};
    cg_tensor *x = rand_tensor(1, shape, 1, 1);
    cg_rng rng = cg_rng_init(1);
    const float bad[3] = {1.0f, -0.1f, NAN};
    for (int i = 0; i < 3; i++) {
        assert_null(cg_dropout(x, bad[i], &rng));
        assert_int_equal(cg_last_status(), CG_ERR_INVALID_ARG);
        assert_error_contains("dropout: p ");
        assert_error_contains("outside [0, 1)");
    }
    assert_null(cg_dropout(x, 0.5f, NULL));
    assert_error_contains("dropout: p 0.5 needs an rng");
    cg_tensor *xi = cg_tensor_zeros(cg_step_arena(CG_CPU), CG_I32, 1, shape);
    assert_null(cg_dropout(xi, 0.5f, &rng));
    assert_int_equal(cg_last_status(), CG_ERR_DTYPE);
    assert_error_contains("dropout: x i32[4] cpu must be f32");
    assert_null(cg_dropout(NULL, 0.5f, &rng));
    assert_error_contains("dropout: x is NULL");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_linear_forward, cg_test_teardown),
        cmocka_unit_test_teardown(test_linear_gradcheck, cg_test_teardown),
        cmocka_unit_test_teardown(test_linear_grad_closed_form, cg_test_teardown),
        cmocka_unit_test_teardown(test_linear_errors, cg_test_teardown),
        cmocka_unit_test_teardown(test_lora_zero_b_is_base_linear, cg_test_teardown),
        cmocka_unit_test_teardown(test_lora_forward, cg_test_teardown),
        cmocka_unit_test_teardown(test_lora_gradcheck, cg_test_teardown),
        cmocka_unit_test_teardown(test_lora_frozen_base_grads, cg_test_teardown),
        cmocka_unit_test_teardown(test_lora_init_only_b_learns, cg_test_teardown),
        cmocka_unit_test_teardown(test_lora_errors, cg_test_teardown),
        cmocka_unit_test_teardown(test_dropout_statistics, cg_test_teardown),
        cmocka_unit_test_teardown(test_dropout_gradient_and_reuse, cg_test_teardown),
        cmocka_unit_test_teardown(test_dropout_gradcheck_and_identity, cg_test_teardown),
        cmocka_unit_test_teardown(test_dropout_errors, cg_test_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
