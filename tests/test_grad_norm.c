/* LayerNorm, RMSNorm and the fused residual-add + norm: forward values against naive double loops, gradients
 * against finite differences (gradcheck) over batch 1, odd sizes and non-contiguous inputs, the fused op
 * against add + norm done separately (values and gradients, with both outputs in the loss), and every
 * argument error. */
#include "test_util.h"

#include "autograd/gradcheck.h"
#include "autograd/ops.h"

/* Gradcheck tolerances, tighter than the defaults (rtol 1e-2, atol 1e-3): these ops are smooth and O(1). */
static const cg_gradcheck_opts TIGHT = {.eps = 1e-3, .rtol = 5e-3, .atol = 5e-4};

/* The reference: LayerNorm (or RMSNorm) of N rows of C in double, straight from the definitions. */
static void norm_ref(double *out, const double *x, const double *w, const double *b, int64_t N, int64_t C,
                     double eps, bool rms) {
    for (int64_t n = 0; n < N; n++) {
        const double *xr = x + n * C;
        double mean = 0, var = 0;
        if (!rms) {
            for (int64_t c = 0; c < C; c++) mean += xr[c];
            mean /= (double)C;
        }
        for (int64_t c = 0; c < C; c++) var += (xr[c] - mean) * (xr[c] - mean); /* mean 0: sum of squares */
        var /= (double)C;
        for (int64_t c = 0; c < C; c++)
            out[n * C + c] = (xr[c] - mean) / sqrt(var + eps) * w[c] + (b && !rms ? b[c] : 0.0);
    }
}

/* ------------------------------------------------------------------ forward against the reference */

/* x of the given shape (built transposed and viewed back when transposed is set, so the op sees strides),
 * offset by 3 so the mean matters. */
static void check_norm_forward(int nd, const int64_t *shape, bool rms, bool with_bias, bool transposed, float eps) {
    int64_t C = shape[nd - 1], N = 1;
    for (int k = 0; k < nd - 1; k++) N *= shape[k];
    cg_tensor *x;
    if (transposed) {
        assert_int_equal(nd, 2);
        int64_t ts[2] = {shape[1], shape[0]};
        x = cg_view_transpose(cg_test_rand_tensor(2, ts, 11, 2.0f, 3.0f, false), 0, 1);
        assert_false(cg_is_contiguous(x));
    } else {
        x = cg_test_rand_tensor(nd, shape, 11, 2.0f, 3.0f, false);
    }
    int64_t cs[1] = {C};
    cg_tensor *w = cg_test_rand_tensor(1, cs, 12, 0.5f, 1.0f, false);
    cg_tensor *b = with_bias ? cg_test_rand_tensor(1, cs, 13, 1.0f, 0, false) : NULL;
    cg_tensor *y = rms ? cg_rmsnorm(x, w, eps) : cg_layernorm(x, w, b, eps);
    assert_non_null(y);
    assert_int_equal(y->ndim, nd);
    for (int k = 0; k < nd; k++) assert_int_equal(y->shape[k], shape[k]);
    double *xv = cg_test_values(x), *wv = cg_test_values(w), *bv = b ? cg_test_values(b) : NULL;
    double *ref = malloc(sizeof(double) * (size_t)(N * C));
    norm_ref(ref, xv, wv, bv, N, C, eps, rms);
    for (int64_t i = 0; i < N * C; i++) assert_close(cg_get_flat(y, i), ref[i], 2e-5, 2e-5);
    free(xv), free(wv), free(bv), free(ref);
}

static void test_layernorm_forward(void **state) {
    (void)state;
    int64_t s1[2] = {1, 7}, s2[2] = {3, 13}, s3[3] = {2, 3, 65}, s4[2] = {4, 5};
    check_norm_forward(2, s1, false, true, false, 1e-5f);
    check_norm_forward(2, s2, false, true, false, 1e-5f);
    check_norm_forward(3, s3, false, true, false, 1e-5f);
    check_norm_forward(2, s4, false, false, false, 1e-5f); /* no bias */
    check_norm_forward(2, s2, false, true, true, 1e-5f);   /* non-contiguous x */
    check_norm_forward(2, s4, false, true, false, 0.5f);   /* eps large enough to matter */
    /* a closed form: x = [1, 2, 3] has mean 2, variance 2/3: y = (x - 2) / sqrt(2/3 + eps) */
    int64_t s[1] = {3};
    float xv[3] = {1, 2, 3}, ones[3] = {1, 1, 1};
    cg_tensor *x = cg_tensor_from_data(cg_step_arena(CG_CPU), CG_F32, 1, s, xv);
    cg_tensor *w = cg_tensor_from_data(cg_step_arena(CG_CPU), CG_F32, 1, s, ones);
    cg_tensor *y = cg_layernorm(x, w, NULL, 1e-5f);
    assert_non_null(y);
    for (int i = 0; i < 3; i++) assert_close(cg_get_flat(y, i), (xv[i] - 2.0) / sqrt(2.0 / 3.0 + 1e-5), 1e-6, 1e-6);
}

static void test_rmsnorm_forward(void **state) {
    (void)state;
    int64_t s1[2] = {1, 7}, s2[2] = {3, 13}, s3[3] = {2, 3, 65};
    check_norm_forward(2, s1, true, false, false, 1e-6f);
    check_norm_forward(2, s2, true, false, false, 1e-6f);
    check_norm_forward(3, s3, true, false, false, 1e-6f);
    check_norm_forward(2, s2, true, false, true, 1e-6f);
    check_norm_forward(2, s1, true, false, false, 0.25f);
    /* closed form: x = [3, 4] has mean square 12.5: y = x / sqrt(12.5 + eps) * w */
    int64_t s[1] = {2};
    float xv[2] = {3, 4}, wv[2] = {2, -1};
    cg_tensor *x = cg_tensor_from_data(cg_step_arena(CG_CPU), CG_F32, 1, s, xv);
    cg_tensor *w = cg_tensor_from_data(cg_step_arena(CG_CPU), CG_F32, 1, s, wv);
    cg_tensor *y = cg_rmsnorm(x, w, 0.5f);
    assert_non_null(y);
    for (int i = 0; i < 2; i++) assert_close(cg_get_flat(y, i), xv[i] / sqrt(13.0) * wv[i], 1e-6, 1e-6);
}

/* ------------------------------------------------------------------ gradients */

typedef struct norm_case {
    bool rms, transposed;
    float eps;
} norm_case;

/* inputs {x, weight, bias (LayerNorm only)}; a transposed case stores x as [C, N]. */
static cg_tensor *norm_fn(cg_tensor *const *in, void *user) {
    const norm_case *c = user;
    const cg_tensor *x = c->transposed ? cg_transpose(in[0], 0, 1) : in[0];
    return c->rms ? cg_rmsnorm(x, in[1], c->eps) : cg_layernorm(x, in[1], in[2], c->eps);
}

static void gradcheck_norm(int nd, const int64_t *shape, bool rms, bool transposed, bool with_bias) {
    int64_t C = transposed ? shape[0] : shape[nd - 1], cs[1] = {C};
    cg_tensor *in[3] = {cg_test_rand_tensor(nd, shape, 21, 1.5f, 0.5f, true), cg_test_rand_tensor(1, cs, 22, 0.5f, 1.0f, true),
                        with_bias ? cg_test_rand_tensor(1, cs, 23, 1.0f, 0, true) : NULL};
    norm_case c = {rms, transposed, 1e-5f};
    cg_gradcheck_result r;
    assert_ok(cg_gradcheck(norm_fn, &c, with_bias ? 3 : 2, in, &TIGHT, &r));
    if (!r.passed)
        print_error("%s: %lld of %lld failed, worst input %d index %lld analytic %g numeric %g\n",
                    rms ? "rmsnorm" : "layernorm", (long long)r.failures, (long long)r.checked, r.worst_input,
                    (long long)r.worst_index, r.worst_analytic, r.worst_numeric);
    assert_true(r.passed);
    assert_true(r.checked >= cg_numel(in[0]) + C);
    /* every input got a real, nonzero gradient */
    for (int i = 0; i < (with_bias ? 3 : 2); i++) {
        double norm2 = 0;
        for (int64_t j = 0; j < cg_numel(in[i]); j++) norm2 += pow(cg_get_flat(in[i]->grad, j), 2);
        assert_true(norm2 > 1e-6);
    }
}

static void test_layernorm_gradcheck(void **state) {
    (void)state;
    int64_t s1[2] = {1, 7}, s2[2] = {3, 13}, s3[3] = {2, 3, 5}, st[2] = {13, 3}, s4[2] = {2, 65};
    gradcheck_norm(2, s1, false, false, true);
    gradcheck_norm(2, s2, false, false, true);
    gradcheck_norm(3, s3, false, false, true);
    gradcheck_norm(2, st, false, true, true); /* x seen through a transpose: [3, 13] with strides */
    gradcheck_norm(2, s4, false, false, false);
}

static void test_rmsnorm_gradcheck(void **state) {
    (void)state;
    int64_t s1[2] = {1, 7}, s2[2] = {3, 13}, s3[3] = {2, 3, 5}, st[2] = {13, 3}, s4[2] = {2, 65};
    gradcheck_norm(2, s1, true, false, false);
    gradcheck_norm(2, s2, true, false, false);
    gradcheck_norm(3, s3, true, false, false);
    gradcheck_norm(2, st, true, true, false);
    gradcheck_norm(2, s4, true, false, false);
}

/* The weight gradient against a closed form: with dy = 1, dweight[c] = sum_n xhat[n, c]; the bias gradient is
 * the row count. */
static void test_layernorm_param_grads_closed_form(void **state) {
    (void)state;
    int64_t s[2] = {5, 9}, cs[1] = {9};
    cg_tensor *x = cg_test_rand_tensor(2, s, 31, 2.0f, 0, false);
    cg_tensor *w = cg_test_rand_tensor(1, cs, 32, 1.0f, 0, true), *b = cg_test_rand_tensor(1, cs, 33, 1.0f, 0, true);
    assert_ok(cg_backward(cg_sum_all(cg_layernorm(x, w, b, 1e-5f))));
    double *xv = cg_test_values(x), ones[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1}, xhat[45];
    norm_ref(xhat, xv, ones, NULL, 5, 9, 1e-5, false);
    for (int c = 0; c < 9; c++) {
        double sw = 0;
        for (int n = 0; n < 5; n++) sw += xhat[n * 9 + c];
        assert_close(cg_get_flat(w->grad, c), sw, 1e-5, 1e-5);
        assert_close(cg_get_flat(b->grad, c), 5.0, 1e-6, 0);
    }
    free(xv);
}

/* ------------------------------------------------------------------ residual + norm */

/* Element i of t's gradient; 0 when t never received one. */
static double grad_at(const cg_tensor *t, int64_t i) { return t->grad ? cg_get_flat(t->grad, i) : 0.0; }

static void check_residual_norm(bool rms) {
    int64_t s[3] = {2, 3, 13}, cs[1] = {13};
    cg_tensor *x = cg_test_rand_tensor(3, s, 41, 1.0f, 0, true), *res = cg_test_rand_tensor(3, s, 42, 2.0f, 1.0f, true);
    cg_tensor *w = cg_test_rand_tensor(1, cs, 43, 0.5f, 1.0f, true), *b = cg_test_rand_tensor(1, cs, 44, 1.0f, 0, true);
    cg_tensor *r1 = cg_test_rand_tensor(3, s, 45, 1.0f, 0, false), *r2 = cg_test_rand_tensor(3, s, 46, 1.0f, 0, false);
    float eps = 1e-5f;

    /* fused: one add node and one norm node */
    int64_t before = cg_tape_size();
    cg_tensor *sum = NULL;
    cg_tensor *y = cg_residual_norm(x, res, w, b, eps, rms, &sum);
    assert_non_null(y);
    assert_non_null(sum);
    assert_int_equal(cg_tape_size() - before, 2);
    /* separately */
    cg_tensor *sum2 = cg_add(x, res);
    cg_tensor *y2 = rms ? cg_rmsnorm(sum2, w, eps) : cg_layernorm(sum2, w, b, eps);
    assert_non_null(y2);
    double *sv = cg_test_values(sum2), *wv = cg_test_values(w), *bv = cg_test_values(b), ref[78];
    norm_ref(ref, sv, wv, bv, 6, 13, eps, rms);
    for (int64_t i = 0; i < 78; i++) {
        assert_close(cg_get_flat(sum, i), cg_get_flat(x, i) + cg_get_flat(res, i), 1e-7, 0);
        assert_close(cg_get_flat(y, i), cg_get_flat(y2, i), 1e-6, 1e-6);
        assert_close(cg_get_flat(y, i), ref[i], 2e-5, 2e-5);
    }
    free(sv), free(wv), free(bv);

    /* both outputs in the loss: L = sum(y * r1) + sum(sum * r2); the gradients must match the unfused graph */
    cg_tensor *leaves[4] = {x, res, w, b};
    double fused[4][78];
    assert_ok(cg_backward(cg_add(cg_sum_all(cg_mul(y, r1)), cg_sum_all(cg_mul(sum, r2)))));
    for (int l = 0; l < 4; l++) {
        for (int64_t i = 0; i < cg_numel(leaves[l]); i++) fused[l][i] = grad_at(leaves[l], i);
        cg_zero_grad(leaves[l]);
    }
    assert_ok(cg_backward(cg_add(cg_sum_all(cg_mul(y2, r1)), cg_sum_all(cg_mul(sum2, r2)))));
    for (int l = 0; l < 4; l++)
        for (int64_t i = 0; i < cg_numel(leaves[l]); i++) {
            double expect = grad_at(leaves[l], i); /* 0 for the bias under RMSNorm, which ignores it */
            assert_close(fused[l][i], expect, 1e-5, 1e-6);
        }
    /* d/dx = d/dresidual, and that includes r2 from the direct use of the sum */
    for (int64_t i = 0; i < 78; i++) assert_close(fused[0][i], fused[1][i], 0, 0);
}

static void test_residual_norm_matches_add_then_norm(void **state) {
    (void)state;
    check_residual_norm(false);
    cg_step_end();
    check_residual_norm(true);
}

typedef struct residual_case {
    bool rms;
    const cg_tensor *c; /* weights of the sum's direct use */
} residual_case;

/* inputs {x, residual, weight, bias}: norm(x + residual) + c * (x + residual), so both outputs matter */
static cg_tensor *residual_fn(cg_tensor *const *in, void *user) {
    const residual_case *rc = user;
    cg_tensor *sum = NULL;
    cg_tensor *y = cg_residual_norm(in[0], in[1], in[2], rc->rms ? NULL : in[3], 1e-5f, rc->rms, &sum);
    return y ? cg_add(y, cg_mul(sum, rc->c)) : NULL;
}

static void test_residual_norm_gradcheck(void **state) {
    (void)state;
    int64_t shapes[3][3] = {{1, 1, 7}, {1, 3, 13}, {2, 2, 65}};
    for (int k = 0; k < 3; k++)
        for (int rms = 0; rms < 2; rms++) {
            int64_t *s = shapes[k], cs[1] = {s[2]};
            cg_tensor *in[4] = {cg_test_rand_tensor(3, s, 51, 1.0f, 0, true), cg_test_rand_tensor(3, s, 52, 1.0f, 0.5f, true),
                                cg_test_rand_tensor(1, cs, 53, 0.5f, 1.0f, true), cg_test_rand_tensor(1, cs, 54, 1.0f, 0, true)};
            residual_case rc = {rms, cg_test_rand_tensor(3, s, 55, 1.0f, 0, false)};
            cg_gradcheck_opts o = TIGHT;
            o.max_per_input = 64;
            cg_gradcheck_result r;
            assert_ok(cg_gradcheck(residual_fn, &rc, rms ? 3 : 4, in, &o, &r));
            if (!r.passed)
                print_error("residual_norm rms=%d shape %d: worst input %d index %lld analytic %g numeric %g\n", rms, k,
                            r.worst_input, (long long)r.worst_index, r.worst_analytic, r.worst_numeric);
            assert_true(r.passed);
        }
}

/* RMSNorm through residual_norm ignores a bias argument; a frozen x and residual record only the norm node. */
static void test_residual_norm_rms_ignores_bias(void **state) {
    (void)state;
    int64_t s[2] = {3, 5}, cs[1] = {5};
    cg_tensor *x = cg_test_rand_tensor(2, s, 61, 1.0f, 0, false), *res = cg_test_rand_tensor(2, s, 62, 1.0f, 0, false);
    cg_tensor *w = cg_test_rand_tensor(1, cs, 63, 0.5f, 1.0f, true), *b = cg_test_rand_tensor(1, cs, 64, 1.0f, 2.0f, true);
    int64_t before = cg_tape_size();
    cg_tensor *sum = NULL;
    cg_tensor *y = cg_residual_norm(x, res, w, b, 1e-6f, true, &sum);
    assert_non_null(y);
    assert_int_equal(cg_tape_size() - before, 1);
    assert_false(sum->requires_grad);
    cg_tensor *y2 = cg_rmsnorm(cg_add(x, res), w, 1e-6f);
    for (int64_t i = 0; i < 15; i++) assert_close(cg_get_flat(y, i), cg_get_flat(y2, i), 1e-6, 1e-7);
}

/* ------------------------------------------------------------------ errors */

static void test_norm_errors(void **state) {
    (void)state;
    int64_t s[2] = {4, 7}, c7[1] = {7}, c8[1] = {8}, m[2] = {7, 1}, s35[2] = {5, 7};
    cg_tensor *x = cg_test_rand_tensor(2, s, 71, 1.0f, 0, false), *w = cg_test_rand_tensor(1, c7, 72, 1.0f, 0, false);
    cg_tensor *w8 = cg_test_rand_tensor(1, c8, 73, 1.0f, 0, false), *w2d = cg_test_rand_tensor(2, m, 74, 1.0f, 0, false);
    cg_tensor *sum = NULL;

    assert_null(cg_layernorm(NULL, w, NULL, 1e-5f));
    assert_int_equal(cg_last_status(), CG_ERR_INVALID_ARG);
    assert_error_contains("layernorm: x is NULL");
    assert_null(cg_rmsnorm(x, NULL, 1e-5f));
    assert_error_contains("rmsnorm: weight is NULL");

    assert_null(cg_layernorm(x, w8, NULL, 1e-5f));
    assert_int_equal(cg_last_status(), CG_ERR_SHAPE);
    assert_error_contains("layernorm: x f32[4, 7] cpu and weight f32[8] cpu: the last dim of x (7) differs from the "
                          "weight's size (8)");
    assert_null(cg_layernorm(x, w, w8, 1e-5f));
    assert_error_contains("bias f32[8] cpu: the last dim of x (7) differs from the bias's size (8)");
    assert_null(cg_rmsnorm(x, w2d, 1e-5f));
    assert_int_equal(cg_last_status(), CG_ERR_SHAPE);
    assert_error_contains("weight f32[7, 1] cpu must be a 1-D vector");

    cg_tensor *xi = cg_tensor_zeros(cg_step_arena(CG_CPU), CG_I32, 2, s);
    assert_null(cg_layernorm(xi, w, NULL, 1e-5f));
    assert_int_equal(cg_last_status(), CG_ERR_DTYPE);
    assert_error_contains("x i32[4, 7] cpu must be f32");

    cg_tensor *scalar = cg_tensor_zeros(cg_step_arena(CG_CPU), CG_F32, 0, NULL);
    assert_null(cg_rmsnorm(scalar, w, 1e-5f));
    assert_error_contains("has no last dim to normalise");
    int64_t empty[2] = {3, 0};
    assert_null(cg_rmsnorm(cg_tensor_zeros(cg_step_arena(CG_CPU), CG_F32, 2, empty), w, 1e-5f));
    assert_error_contains("an empty last dim");

    assert_null(cg_layernorm(x, w, NULL, -1.0f));
    assert_int_equal(cg_last_status(), CG_ERR_INVALID_ARG);
    assert_error_contains("layernorm: eps -1 must be >= 0");

    /* CUDA tensors (wrapped, never dereferenced): f32 or bf16 only, and one dtype for x and its parameters */
    float dummy[28] = {0};
    cg_tensor *xg = cg_tensor_wrap(cg_step_arena(CG_CPU), CG_I32, (cg_device){CG_DEVICE_CUDA, 0}, 2, s, dummy);
    assert_non_null(xg);
    assert_null(cg_layernorm(xg, w, NULL, 1e-5f));
    assert_int_equal(cg_last_status(), CG_ERR_DTYPE);
    assert_error_contains("layernorm: x i32[4, 7] cuda");
    assert_error_contains("must be f32 or bf16 on a GPU");
    cg_tensor *xc = cg_tensor_wrap(cg_step_arena(CG_CPU), CG_F32, (cg_device){CG_DEVICE_CUDA, 0}, 2, s, dummy);
    cg_tensor *wb = cg_tensor_wrap(cg_step_arena(CG_CPU), CG_BF16, (cg_device){CG_DEVICE_CUDA, 0}, 1, c7, dummy);
    assert_null(cg_layernorm(xc, wb, NULL, 1e-5f));
    assert_int_equal(cg_last_status(), CG_ERR_DTYPE);
    assert_error_contains("differ in dtype");
    cg_tensor *wc = cg_tensor_wrap(cg_step_arena(CG_CPU), CG_F32, (cg_device){CG_DEVICE_CUDA, 0}, 1, c7, dummy);
    assert_null(cg_rmsnorm(x, wc, 1e-5f));
    assert_int_equal(cg_last_status(), CG_ERR_DEVICE);
    assert_error_contains("different devices");

    cg_tensor *r35 = cg_test_rand_tensor(2, s35, 75, 1.0f, 0, false);
    assert_null(cg_residual_norm(x, r35, w, NULL, 1e-5f, false, &sum));
    assert_int_equal(cg_last_status(), CG_ERR_SHAPE);
    assert_error_contains("residual_norm: x f32[4, 7] cpu and residual f32[5, 7] cpu differ in shape");
    assert_null(sum);
    assert_null(cg_residual_norm(x, x, w, NULL, 1e-5f, false, NULL));
    assert_error_contains("residual_norm: sum_out is NULL");
    assert_null(cg_residual_norm(x, NULL, w, NULL, 1e-5f, true, &sum));
    assert_error_contains("residual_norm: residual is NULL");
    assert_null(cg_residual_norm(x, x, w8, NULL, 1e-5f, true, &sum));
    assert_error_contains("residual_norm: x f32[4, 7] cpu and weight f32[8] cpu");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_layernorm_forward, cg_test_teardown),
        cmocka_unit_test_teardown(test_rmsnorm_forward, cg_test_teardown),
        cmocka_unit_test_teardown(test_layernorm_gradcheck, cg_test_teardown),
        cmocka_unit_test_teardown(test_rmsnorm_gradcheck, cg_test_teardown),
        cmocka_unit_test_teardown(test_layernorm_param_grads_closed_form, cg_test_teardown),
        cmocka_unit_test_teardown(test_residual_norm_matches_add_then_norm, cg_test_teardown),
        cmocka_unit_test_teardown(test_residual_norm_gradcheck, cg_test_teardown),
        cmocka_unit_test_teardown(test_residual_norm_rms_ignores_bias, cg_test_teardown),
        cmocka_unit_test_teardown(test_norm_errors, cg_test_teardown),
    };
    int rc = cmocka_run_group_tests_name("grad_norm", tests, NULL, NULL);
    cg_shutdown();
    return rc;
}
