/* Softmax, log-softmax, cross-entropy and chunked token log-probabilities: forward values against naive
 * double loops (any axis, huge logits), cross-entropy against a hand-worked example, ignore_index, label
 * smoothing and the all-ignored case, token log-probs against log_softmax(hidden @ weight^T) gathered for
 * several chunk sizes, gradients against finite differences, argument errors, and the memory bound of the
 * chunked token log-probs. */
#include "test_util.h"

#include "autograd/gradcheck.h"
#include "autograd/ops.h"

/* Tighter than the defaults (rtol 1e-2, atol 1e-3): these ops are smooth and their outputs O(1). */
static const cg_gradcheck_opts TIGHT = {.eps = 1e-3, .rtol = 5e-3, .atol = 5e-4};

static cg_tensor *f32(int nd, const int64_t *shape, const float *v) {
    cg_tensor *t = cg_tensor_from_data(cg_step_arena(CG_CPU), CG_F32, nd, shape, v);
    assert_non_null(t);
    return t;
}

static cg_tensor *i64(int nd, const int64_t *shape, const int64_t *v) {
    cg_tensor *t = cg_tensor_from_data(cg_step_arena(CG_CPU), CG_I64, nd, shape, v);
    assert_non_null(t);
    return t;
}

static void report(const char *what, const cg_gradcheck_result *r) {
    if (!r->passed)
        print_error("%s: %lld of %lld failed, worst input %d index %lld analytic %g numeric %g\n", what,
                    (long long)r->failures, (long long)r->checked, r->worst_input, (long long)r->worst_index,
                    r->worst_analytic, r->worst_numeric);
}

static double grad_at(const cg_tensor *t, int64_t i) { return t->grad ? cg_get_flat(t->grad, i) : 0.0; }

/* ------------------------------------------------------------------ softmax, log-softmax */

/* Compares softmax and log_softmax of x along axis with a direct double computation over the logical
 * elements, and checks that every softmax slice sums to 1. */
static void check_softmax_forward(const cg_tensor *x, int axis) {
    int ax = axis < 0 ? axis + x->ndim : axis;
    cg_tensor *y = cg_softmax(x, axis), *ly = cg_log_softmax(x, axis);
    assert_non_null(y);
    assert_non_null(ly);
    int64_t outer = 1, inner = 1, dim = x->shape[ax];
    for (int k = 0; k < ax; k++) outer *= x->shape[k];
    for (int k = ax + 1; k < x->ndim; k++) inner *= x->shape[k];
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < inner; i++) {
            double m = -INFINITY, s = 0, total = 0;
            for (int64_t k = 0; k < dim; k++) m = fmax(m, cg_get_flat(x, (o * dim + k) * inner + i));
            for (int64_t k = 0; k < dim; k++) s += exp(cg_get_flat(x, (o * dim + k) * inner + i) - m);
            for (int64_t k = 0; k < dim; k++) {
                int64_t f = (o * dim + k) * inner + i;
                double xv = cg_get_flat(x, f);
                assert_close(cg_get_flat(y, f), exp(xv - m) / s, 1e-5, 1e-7);
                assert_close(cg_get_flat(ly, f), xv - m - log(s), 1e-5, 1e-5);
                total += cg_get_flat(y, f);
            }
            assert_close(total, 1.0, 0, 1e-6);
        }
}

static void test_softmax_forward(void **state) {
    (void)state;
    int64_t s1[2] = {1, 7}, s2[2] = {3, 13}, s3[3] = {2, 5, 3}, st[2] = {13, 3}, s4[1] = {65};
    check_softmax_forward(cg_test_rand_tensor(2, s1, 1, 3.0f, 0, false), -1);
    check_softmax_forward(cg_test_rand_tensor(2, s2, 2, 3.0f, 0, false), 1);
    check_softmax_forward(cg_test_rand_tensor(3, s3, 3, 3.0f, 0, false), 1); /* a middle axis */
    check_softmax_forward(cg_test_rand_tensor(3, s3, 4, 3.0f, 0, false), 0);
    check_softmax_forward(cg_test_rand_tensor(3, s3, 5, 3.0f, 0, false), -1);
    check_softmax_forward(cg_test_rand_tensor(2, s2, 6, 3.0f, 0, false), 0);
    check_softmax_forward(cg_test_rand_tensor(1, s4, 7, 3.0f, 0, false), 0);
    cg_tensor *xt = cg_view_transpose(cg_test_rand_tensor(2, st, 8, 3.0f, 0, false), 0, 1); /* [3, 13] with strides */
    check_softmax_forward(xt, -1);
    check_softmax_forward(xt, 0);
}

/* Logits of 1e4 do not overflow: the max is subtracted before exponentiating. */
static void test_softmax_large_logits(void **state) {
    (void)state;
    int64_t s[2] = {2, 4};
    float v[8] = {1e4f, 1e4f - 1.0f, -1e4f, 0.0f, 1e4f, 1e4f, 1e4f, 1e4f};
    cg_tensor *x = f32(2, s, v);
    cg_tensor *y = cg_softmax(x, -1), *ly = cg_log_softmax(x, -1);
    assert_non_null(y);
    assert_non_null(ly);
    double z = 1.0 + exp(-1.0);
    double expect[4] = {1.0 / z, exp(-1.0) / z, 0.0, 0.0};
    double lexpect[4] = {-log(z), -1.0 - log(z), -2e4 - log(z), -1e4 - log(z)};
    for (int i = 0; i < 4; i++) {
        assert_true(isfinite(cg_get_flat(y, i)));
        assert_close(cg_get_flat(y, i), expect[i], 1e-6, 1e-30);
        assert_close(cg_get_flat(ly, i), lexpect[i], 1e-6, 1e-6);
        assert_close(cg_get_flat(y, 4 + i), 0.25, 1e-6, 0);
        assert_close(cg_get_flat(ly, 4 + i), -log(4.0), 1e-6, 0);
    }
    /* and the gradient stays finite: d/dx sum(log_softmax * r) */
    cg_tensor *xg = f32(2, s, v);
    assert_ok(cg_set_requires_grad(xg, true));
    assert_ok(cg_backward(cg_sum_all(cg_log_softmax(xg, -1))));
    /* dx = 1 - softmax * 4 (sum of an all-ones upstream gradient over a row of 4) */
    for (int i = 0; i < 8; i++)
        assert_close(cg_get_flat(xg->grad, i), 1.0 - 4.0 * (i < 4 ? expect[i] : 0.25), 1e-5, 1e-6);
}

typedef struct softmax_case {
    int axis;
    bool log, transposed;
} softmax_case;

static cg_tensor *softmax_fn(cg_tensor *const *in, void *user) {
    const softmax_case *c = user;
    const cg_tensor *x = c->transposed ? cg_transpose(in[0], 0, 1) : in[0];
    return c->log ? cg_log_softmax(x, c->axis) : cg_softmax(x, c->axis);
}

static void test_softmax_gradcheck(void **state) {
    (void)state;
    struct {
        int nd;
        int64_t shape[3];
        int axis;
        bool transposed;
    } cases[] = {
        {2, {1, 7, 0}, -1, false}, {2, {3, 13, 0}, 1, false}, {3, {2, 5, 3}, 1, false},
        {3, {2, 5, 3}, 0, false},  {2, {13, 3, 0}, -1, true}, {1, {65, 0, 0}, 0, false},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++)
        for (int log = 0; log < 2; log++) {
            cg_tensor *x = cg_test_rand_tensor(cases[k].nd, cases[k].shape, 10 + k, 2.0f, 0, true);
            softmax_case c = {cases[k].axis, log, cases[k].transposed};
            cg_gradcheck_result r;
            /* log_softmax outputs are O(log dim): their f32 rounding puts ~1e-3 of noise in the finite
             * differences over 65 elements, so it keeps the default atol */
            cg_gradcheck_opts o = TIGHT;
            if (log) o.atol = 1e-3;
            assert_ok(cg_gradcheck(softmax_fn, &c, 1, &x, &o, &r));
            report(log ? "log_softmax" : "softmax", &r);
            assert_true(r.passed);
            assert_int_equal(r.checked, cg_numel(x));
        }
}

static void test_softmax_errors(void **state) {
    (void)state;
    int64_t s[2] = {2, 3};
    cg_tensor *x = cg_test_rand_tensor(2, s, 1, 1.0f, 0, false);
    assert_null(cg_softmax(x, 2));
    assert_int_equal(cg_last_status(), CG_ERR_INVALID_ARG);
    assert_error_contains("softmax: axis 2 is out of range for x f32[2, 3] cpu");
    assert_null(cg_log_softmax(x, -3));
    assert_error_contains("log_softmax: axis -3 is out of range");
    assert_null(cg_softmax(NULL, 0));
    assert_error_contains("softmax: x is NULL");
    assert_null(cg_softmax(cg_tensor_zeros(cg_step_arena(CG_CPU), CG_I64, 2, s), 0));
    assert_int_equal(cg_last_status(), CG_ERR_DTYPE);
    assert_error_contains("softmax: x i64[2, 3] cpu must be f32");
    /* a CUDA tensor (wrapped, never dereferenced) must be f32 or bf16 */
    float dummy[6] = {0};
    cg_tensor *xc = cg_tensor_wrap(cg_step_arena(CG_CPU), CG_I32, (cg_device){CG_DEVICE_CUDA, 0}, 2, s, dummy);
    assert_null(cg_softmax(xc, 0));
    assert_int_equal(cg_last_status(), CG_ERR_DTYPE);
    assert_error_contains("must be f32 or bf16 on a GPU");
}

/* ------------------------------------------------------------------ cross-entropy */

/* The reference: mean over rows not ignored of -sum_c q_c log p_c, q = (1 - ls) onehot + ls / V, and its
 * gradient (p - q) / count; all in double. Returns the count. */
static int64_t ce_ref(const cg_tensor *logits, const int64_t *t, int64_t N, int64_t V, int64_t ignore, double ls,
                      double *loss, double *grad) {
    int64_t count = 0;
    double total = 0;
    for (int64_t n = 0; n < N; n++) count += t[n] != ignore;
    for (int64_t n = 0; n < N; n++) {
        double m = -INFINITY, s = 0;
        for (int64_t c = 0; c < V; c++) m = fmax(m, cg_get_flat(logits, n * V + c));
        for (int64_t c = 0; c < V; c++) s += exp(cg_get_flat(logits, n * V + c) - m);
        for (int64_t c = 0; c < V; c++) {
            double logp = cg_get_flat(logits, n * V + c) - m - log(s);
            double q = t[n] == ignore ? 0.0 : (1.0 - ls) * (c == t[n]) + ls / (double)V;
            total -= q * logp;
            if (grad) grad[n * V + c] = t[n] == ignore ? 0.0 : (exp(logp) - q) / (double)count;
        }
    }
    *loss = count ? total / (double)count : 0.0;
    return count;
}

/* logits [[1, 2, 3], [1, -1, 0.5]], targets [2, 0]: loss = mean(logsumexp(row) - logit[target]). */
static void test_cross_entropy_hand_worked(void **state) {
    (void)state;
    int64_t s[2] = {2, 3}, ts[1] = {2}, tv[2] = {2, 0};
    float v[6] = {1, 2, 3, 1, -1, 0.5f};
    cg_tensor *logits = f32(2, s, v);
    assert_ok(cg_set_requires_grad(logits, true));
    cg_tensor *loss = cg_cross_entropy(logits, i64(1, ts, tv), -100, 0.0f);
    assert_non_null(loss);
    assert_int_equal(loss->ndim, 0);
    double lse0 = log(exp(1.0) + exp(2.0) + exp(3.0)), lse1 = log(exp(1.0) + exp(-1.0) + exp(0.5));
    double expect = ((lse0 - 3.0) + (lse1 - 1.0)) / 2.0; /* = 0.6779... */
    assert_close(cg_get_flat(loss, 0), expect, 1e-6, 1e-7);
    assert_ok(cg_backward(loss));
    double lse[2] = {lse0, lse1};
    for (int n = 0; n < 2; n++)
        for (int c = 0; c < 3; c++)
            assert_close(cg_get_flat(logits->grad, n * 3 + c), (exp(v[n * 3 + c] - lse[n]) - (c == tv[n])) / 2.0, 1e-5,
                         1e-7);
}

/* ignore_index rows count for nothing; targets as i32; label smoothing 0.1 against the naive formula. */
static void test_cross_entropy_ignore_and_smoothing(void **state) {
    (void)state;
    int64_t s[2] = {5, 7}, ts[1] = {5};
    int64_t tv[5] = {1, -100, 6, 0, -100};
    int32_t tv32[5] = {1, -100, 6, 0, -100};
    float lsv[3] = {0.0f, 0.1f, 0.35f};
    for (int k = 0; k < 3; k++) {
        cg_tensor *logits = cg_test_rand_tensor(2, s, 20 + k, 3.0f, 0, true);
        cg_tensor *t32 = cg_tensor_from_data(cg_step_arena(CG_CPU), CG_I32, 1, ts, tv32);
        cg_tensor *loss = cg_cross_entropy(logits, t32, -100, lsv[k]);
        assert_non_null(loss);
        double expect, grad[35];
        assert_int_equal(ce_ref(logits, tv, 5, 7, -100, lsv[k], &expect, grad), 3);
        assert_close(cg_get_flat(loss, 0), expect, 1e-6, 1e-7);
        /* the i64 path gives the same loss */
        assert_close(cg_get_flat(cg_cross_entropy(logits, i64(1, ts, tv), -100, lsv[k]), 0), expect, 1e-6, 1e-7);
        assert_ok(cg_backward(loss));
        for (int i = 0; i < 35; i++) assert_close(cg_get_flat(logits->grad, i), grad[i], 1e-5, 1e-7);
        for (int c = 0; c < 7; c++) assert_true(cg_get_flat(logits->grad, 7 + c) == 0.0); /* an ignored row */
    }
    /* a different ignore_index: -100 is then an out-of-range target */
    int64_t tv2[5] = {1, 3, 6, 0, 3};
    cg_tensor *logits = cg_test_rand_tensor(2, s, 30, 3.0f, 0, false);
    double expect;
    ce_ref(logits, tv2, 5, 7, 3, 0.1, &expect, NULL);
    assert_close(cg_get_flat(cg_cross_entropy(logits, i64(1, ts, tv2), 3, 0.1f), 0), expect, 1e-6, 1e-7);
}

static void test_cross_entropy_all_ignored(void **state) {
    (void)state;
    int64_t s[2] = {3, 4}, ts[1] = {3}, tv[3] = {-1, -1, -1};
    cg_tensor *logits = cg_test_rand_tensor(2, s, 40, 3.0f, 0, true);
    cg_tensor *loss = cg_cross_entropy(logits, i64(1, ts, tv), -1, 0.1f);
    assert_non_null(loss);
    assert_true(cg_get_flat(loss, 0) == 0.0);
    assert_ok(cg_backward(loss));
    for (int i = 0; i < 12; i++) assert_true(cg_get_flat(logits->grad, i) == 0.0);
}

/* Logits [2, 3, V] with targets [2, 3], and logits seen through a transpose. */
static void test_cross_entropy_leading_dims(void **state) {
    (void)state;
    int64_t s[3] = {2, 3, 13}, ts[2] = {2, 3}, tv[6] = {12, 0, 5, -100, 7, 1};
    cg_tensor *logits = cg_test_rand_tensor(3, s, 50, 2.0f, 0, false);
    double expect;
    ce_ref(logits, tv, 6, 13, -100, 0.0, &expect, NULL);
    assert_close(cg_get_flat(cg_cross_entropy(logits, i64(2, ts, tv), -100, 0.0f), 0), expect, 1e-6, 1e-7);
    int64_t st[2] = {13, 6};
    cg_tensor *lt = cg_view_transpose(cg_test_rand_tensor(2, st, 51, 2.0f, 0, false), 0, 1); /* [6, 13], strided */
    int64_t ts1[1] = {6};
    ce_ref(lt, tv, 6, 13, -100, 0.2, &expect, NULL);
    assert_close(cg_get_flat(cg_cross_entropy(lt, i64(1, ts1, tv), -100, 0.2f), 0), expect, 1e-6, 1e-7);
}

typedef struct ce_case {
    const cg_tensor *targets;
    float ls;
    bool transposed;
} ce_case;

static cg_tensor *ce_fn(cg_tensor *const *in, void *user) {
    const ce_case *c = user;
    const cg_tensor *x = c->transposed ? cg_transpose(in[0], 0, 1) : in[0];
    return cg_cross_entropy(x, c->targets, -100, c->ls);
}

static void test_cross_entropy_gradcheck(void **state) {
    (void)state;
    int64_t s1[2] = {1, 7}, s2[2] = {5, 13}, s3[3] = {2, 3, 5}, st[2] = {13, 5};
    int64_t t1[1] = {1}, t2[1] = {5}, t3[2] = {2, 3};
    int64_t v1[1] = {3}, v2[5] = {12, -100, 0, 7, 7}, v3[6] = {4, 0, -100, 2, 2, 1};
    struct {
        int nd;
        const int64_t *shape;
        cg_tensor *targets;
        float ls;
        bool transposed;
    } cases[] = {
        {2, s1, i64(1, t1, v1), 0.0f, false}, {2, s2, i64(1, t2, v2), 0.0f, false},
        {2, s2, i64(1, t2, v2), 0.1f, false}, {3, s3, i64(2, t3, v3), 0.2f, false},
        {2, st, i64(1, t2, v2), 0.1f, true},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        cg_tensor *x = cg_test_rand_tensor(cases[k].nd, cases[k].shape, 60 + k, 2.0f, 0, true);
        ce_case c = {cases[k].targets, cases[k].ls, cases[k].transposed};
        cg_gradcheck_result r;
        cg_gradcheck_opts o = TIGHT;
        o.atol = 1e-4; /* the gradients are O(1/count) */
        assert_ok(cg_gradcheck(ce_fn, &c, 1, &x, &o, &r));
        report("cross_entropy", &r);
        assert_true(r.passed);
    }
}

static void test_cross_entropy_errors(void **state) {
    (void)state;
    int64_t s[2] = {3, 4}, ts[1] = {3}, tv[3] = {0, 7, 1}, tn[3] = {0, 1, -5}, t2[2] = {3, 1};
    cg_tensor *logits = cg_test_rand_tensor(2, s, 70, 1.0f, 0, false);
    assert_null(cg_cross_entropy(logits, i64(1, ts, tv), -100, 0.0f));
    assert_int_equal(cg_last_status(), CG_ERR_INVALID_ARG);
    assert_error_contains("cross_entropy: target 7 at row 1 is outside [0, 4)");
    assert_null(cg_cross_entropy(logits, i64(1, ts, tn), -100, 0.0f));
    assert_error_contains("target -5 at row 2");
    assert_null(cg_cross_entropy(logits, i64(2, t2, tv), -100, 0.0f));
    assert_int_equal(cg_last_status(), CG_ERR_SHAPE);
    assert_error_contains("logits f32[3, 4] cpu and targets i64[3, 1] cpu");
    assert_null(cg_cross_entropy(logits, logits, -100, 0.0f));
    assert_int_equal(cg_last_status(), CG_ERR_DTYPE);
    assert_error_contains("targets f32[3, 4] cpu must be i32 or i64");
    int64_t ok[3] = {0, 1, 2};
    cg_tensor *t = i64(1, ts, ok);
    assert_null(cg_cross_entropy(logits, t, -100, 1.0f));
    assert_error_contains("label_smoothing 1 is outside [0, 1)");
    assert_null(cg_cross_entropy(logits, t, -100, -0.1f));
    assert_error_contains("label_smoothing -0.1");
    assert_null(cg_cross_entropy(NULL, t, -100, 0.0f));
    assert_error_contains("cross_entropy: logits is NULL");
    assert_null(cg_cross_entropy(cg_tensor_zeros(cg_step_arena(CG_CPU), CG_F32, 0, NULL), t, -100, 0.0f));
    assert_error_contains("have no class dim");
}

/* ------------------------------------------------------------------ token log-probabilities */

/* The reference, naively: log_softmax(hidden @ weight^T)[n, tokens[n]] in double. */
static double token_logprob_ref(const cg_tensor *hidden, const cg_tensor *weight, int64_t n, int64_t token) {
    int64_t V = weight->shape[0], C = weight->shape[1];
    double *logit = malloc(sizeof(double) * (size_t)V), m = -INFINITY, s = 0;
    assert_non_null(logit);
    for (int64_t v = 0; v < V; v++) {
        double acc = 0;
        for (int64_t c = 0; c < C; c++) acc += cg_get_flat(hidden, n * C + c) * cg_get_flat(weight, v * C + c);
        logit[v] = acc;
        m = fmax(m, acc);
    }
    for (int64_t v = 0; v < V; v++) s += exp(logit[v] - m);
    double out = logit[token] - m - log(s);
    free(logit);
    return out;
}

static void test_token_logprobs_forward(void **state) {
    (void)state;
    int64_t hs[3] = {2, 3, 6}, ws[2] = {23, 6}, ts[2] = {2, 3};
    int64_t tv[6] = {0, 22, 7, 13, 6, 21}; /* first and last token, and both sides of chunk edges */
    cg_tensor *hidden = cg_test_rand_tensor(3, hs, 80, 1.5f, 0, false), *weight = cg_test_rand_tensor(2, ws, 81, 1.5f, 0, false);
    cg_tensor *tokens = i64(2, ts, tv);
    int64_t chunks[6] = {1, 7, 23, 0, 5, 100}; /* 7 and 5 do not divide 23; 0 = default; 100 > V */
    for (int k = 0; k < 6; k++) {
        cg_tensor *out = cg_token_logprobs(hidden, weight, tokens, chunks[k]);
        assert_non_null(out);
        assert_int_equal(out->ndim, 2);
        assert_int_equal(out->shape[0], 2);
        assert_int_equal(out->shape[1], 3);
        for (int n = 0; n < 6; n++)
            assert_close(cg_get_flat(out, n), token_logprob_ref(hidden, weight, n, tv[n]), 1e-5, 1e-5);
    }
    /* i32 tokens and a hidden seen through a transpose */
    int64_t hts[2] = {6, 6}, ts1[1] = {6};
    int32_t tv32[6] = {0, 22, 7, 13, 6, 21};
    cg_tensor *ht = cg_view_transpose(cg_test_rand_tensor(2, hts, 82, 1.5f, 0, false), 0, 1);
    cg_tensor *t32 = cg_tensor_from_data(cg_step_arena(CG_CPU), CG_I32, 1, ts1, tv32);
    cg_tensor *out = cg_token_logprobs(ht, weight, t32, 7);
    assert_non_null(out);
    for (int n = 0; n < 6; n++) assert_close(cg_get_flat(out, n), token_logprob_ref(ht, weight, n, tv[n]), 1e-5, 1e-5);
}

typedef struct tlp_case {
    const cg_tensor *tokens;
    int64_t chunk;
    bool transposed;
} tlp_case;

static cg_tensor *tlp_fn(cg_tensor *const *in, void *user) {
    const tlp_case *c = user;
    const cg_tensor *h = c->transposed ? cg_transpose(in[0], 0, 1) : in[0];
    return cg_token_logprobs(h, in[1], c->tokens, c->chunk);
}

static void test_token_logprobs_gradcheck(void **state) {
    (void)state;
    int64_t hs[2] = {5, 6}, hts[2] = {6, 5}, ws[2] = {23, 6}, ts[1] = {5}, tv[5] = {0, 22, 7, 13, 7};
    cg_tensor *tokens = i64(1, ts, tv);
    int64_t chunks[4] = {1, 7, 23, 0};
    for (int k = 0; k < 5; k++) {
        bool transposed = k == 4;
        cg_tensor *in[2] = {cg_test_rand_tensor(2, transposed ? hts : hs, 90 + k, 1.0f, 0, true),
                            cg_test_rand_tensor(2, ws, 95 + k, 1.0f, 0, true)};
        tlp_case c = {tokens, transposed ? 5 : chunks[k], transposed};
        cg_gradcheck_result r;
        assert_ok(cg_gradcheck(tlp_fn, &c, 2, in, &TIGHT, &r));
        report("token_logprobs", &r);
        assert_true(r.passed);
        assert_int_equal(r.checked, 30 + 23 * 6);
    }
    /* the same gradients as the unfused graph gather(log_softmax(hidden @ weight^T), tokens) */
    int64_t h3[3] = {1, 5, 6}, t3[2] = {1, 5}, idx_shape[2] = {5, 1};
    cg_tensor *h = cg_test_rand_tensor(3, h3, 100, 1.0f, 0, true), *w = cg_test_rand_tensor(2, ws, 101, 1.0f, 0, true);
    cg_tensor *rw = cg_test_rand_tensor(2, t3, 102, 1.0f, 0, false);
    assert_ok(cg_backward(cg_sum_all(cg_mul(cg_token_logprobs(h, w, i64(2, t3, tv), 4), rw))));
    double gh[30], gw[138];
    for (int i = 0; i < 30; i++) gh[i] = grad_at(h, i);
    for (int i = 0; i < 138; i++) gw[i] = grad_at(w, i);
    cg_zero_grad(h);
    cg_zero_grad(w);
    int64_t flat[2] = {5, 6}, rshape[2] = {5, 1};
    cg_tensor *logp = cg_log_softmax(cg_matmul_t(cg_reshape(h, 2, flat), w, false, true), -1);
    cg_tensor *picked = cg_gather(logp, 1, i64(2, idx_shape, tv));
    assert_non_null(picked);
    assert_ok(cg_backward(cg_sum_all(cg_mul(picked, cg_reshape(rw, 2, rshape)))));
    for (int i = 0; i < 30; i++) assert_close(gh[i], grad_at(h, i), 1e-4, 1e-6);
    for (int i = 0; i < 138; i++) assert_close(gw[i], grad_at(w, i), 1e-4, 1e-6);
}

static void test_token_logprobs_errors(void **state) {
    (void)state;
    int64_t hs[2] = {3, 4}, ws[2] = {10, 4}, w5[2] = {10, 5}, ts[1] = {3}, t2[1] = {2};
    int64_t tv[3] = {0, 9, 10}, ok[3] = {0, 1, 2};
    cg_tensor *h = cg_test_rand_tensor(2, hs, 110, 1.0f, 0, false), *w = cg_test_rand_tensor(2, ws, 111, 1.0f, 0, false);
    assert_null(cg_token_logprobs(h, w, i64(1, ts, tv), 0));
    assert_int_equal(cg_last_status(), CG_ERR_INVALID_ARG);
    assert_error_contains("token_logprobs: token 10 at row 2 is outside [0, 10)");
    assert_null(cg_token_logprobs(h, cg_test_rand_tensor(2, w5, 112, 1.0f, 0, false), i64(1, ts, ok), 0));
    assert_int_equal(cg_last_status(), CG_ERR_SHAPE);
    assert_error_contains("hidden f32[3, 4] cpu and weight f32[10, 5] cpu");
    assert_null(cg_token_logprobs(h, w, i64(1, t2, ok), 0));
    assert_int_equal(cg_last_status(), CG_ERR_SHAPE);
    assert_error_contains("hidden f32[3, 4] cpu and tokens i64[2] cpu");
    assert_null(cg_token_logprobs(h, w, i64(1, ts, ok), -1));
    assert_int_equal(cg_last_status(), CG_ERR_INVALID_ARG);
    assert_error_contains("chunk_size -1 is negative");
    assert_null(cg_token_logprobs(h, w, h, 0));
    assert_int_equal(cg_last_status(), CG_ERR_DTYPE);
    assert_error_contains("tokens f32[3, 4] cpu must be i32 or i64");
    assert_null(cg_token_logprobs(h, NULL, h, 0));
    assert_error_contains("token_logprobs: weight is NULL");
}

/* The point of the chunking: with N = 64 rows, C = 32 and a 50,000-entry vocabulary, forward + backward use a
 * small fraction of the N x V x 4 bytes the full logits would take. */
static void test_token_logprobs_memory(void **state) {
    (void)state;
    const int64_t N = 64, C = 32, V = 50000, chunk = 4096;
    cg_step_end();
    cg_shutdown(); /* fresh arenas: the step arena's peak then covers this test only */
    int64_t hs[2] = {N, C}, ws[2] = {V, C}, ts[1] = {N};
    uint64_t seed = 7;
    float *wv = malloc(sizeof(float) * (size_t)(V * C));
    assert_non_null(wv);
    for (int64_t i = 0; i < V * C; i++) wv[i] = 0.3f * cg_test_randf(&seed);
    cg_tensor *weight = cg_tensor_from_data(cg_persistent_arena(CG_CPU), CG_F32, 2, ws, wv);
    free(wv);
    assert_non_null(weight);
    int64_t tv[64];
    for (int n = 0; n < 64; n++) tv[n] = (n * 7919) % V;
    size_t full = (size_t)(N * V) * sizeof(float);

    /* a frozen classifier (LoRA-style RL): only hidden gets a gradient */
    cg_tensor *hidden = cg_test_rand_tensor(2, hs, 120, 1.0f, 0, true);
    cg_tensor *out = cg_token_logprobs(hidden, weight, i64(1, ts, tv), chunk);
    assert_non_null(out);
    assert_close(cg_get_flat(out, 0), token_logprob_ref(hidden, weight, 0, tv[0]), 1e-4, 1e-4);
    assert_close(cg_get_flat(out, 63), token_logprob_ref(hidden, weight, 63, tv[63]), 1e-4, 1e-4);
    assert_ok(cg_backward(cg_sum_all(out)));
    size_t peak = cg_memory_get_stats(CG_CPU).step_peak;
    print_message("token_logprobs N=%lld C=%lld V=%lld chunk=%lld: step arena peak %zu bytes (frozen weight) vs "
                  "full logits N*V*4 = %zu bytes\n", (long long)N, (long long)C, (long long)V, (long long)chunk, peak,
                  full);
    assert_true(peak < full / 8);

    /* a trained classifier: its [V, C] gradient adds V*C*4 bytes, the logits still never appear */
    cg_step_end();
    hidden = cg_test_rand_tensor(2, hs, 121, 1.0f, 0, true);
    assert_ok(cg_set_requires_grad(weight, true));
    assert_ok(cg_backward(cg_sum_all(cg_token_logprobs(hidden, weight, i64(1, ts, tv), chunk))));
    size_t peak2 = cg_memory_get_stats(CG_CPU).step_peak;
    size_t bound = (size_t)(V * C + N * (chunk + 1)) * sizeof(float) + ((size_t)256 << 10);
    print_message("with the weight trained: step arena peak %zu bytes (dweight alone is %zu)\n", peak2,
                  (size_t)(V * C) * sizeof(float));
    assert_true(peak2 <= bound);
    assert_true(peak2 < full);
    cg_step_end();
    cg_shutdown();
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_softmax_forward, cg_test_teardown),
        cmocka_unit_test_teardown(test_softmax_large_logits, cg_test_teardown),
        cmocka_unit_test_teardown(test_softmax_gradcheck, cg_test_teardown),
        cmocka_unit_test_teardown(test_softmax_errors, cg_test_teardown),
        cmocka_unit_test_teardown(test_cross_entropy_hand_worked, cg_test_teardown),
        cmocka_unit_test_teardown(test_cross_entropy_ignore_and_smoothing, cg_test_teardown),
        cmocka_unit_test_teardown(test_cross_entropy_all_ignored, cg_test_teardown),
        cmocka_unit_test_teardown(test_cross_entropy_leading_dims, cg_test_teardown),
        cmocka_unit_test_teardown(test_cross_entropy_gradcheck, cg_test_teardown),
        cmocka_unit_test_teardown(test_cross_entropy_errors, cg_test_teardown),
        cmocka_unit_test_teardown(test_token_logprobs_forward, cg_test_teardown),
        cmocka_unit_test_teardown(test_token_logprobs_gradcheck, cg_test_teardown),
        cmocka_unit_test_teardown(test_token_logprobs_errors, cg_test_teardown),
        cmocka_unit_test_teardown(test_token_logprobs_memory, cg_test_teardown),
    };
    int rc = cmocka_run_group_tests_name("grad_softmax", tests, NULL, NULL);
    cg_shutdown();
    return rc;
}
