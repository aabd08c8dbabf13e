/* Composite checks: a two-layer MLP and a one-block pre-norm transformer (GPT-2 and Llama styles) pass
 * gradcheck end to end; an MLP trained with plain SGD learns XOR and a small regression to a stated loss. */
#include "test_util.h"

static cg_tensor *randn_param(int nd, const int64_t *shape, float scale, uint64_t *seed) {
    cg_tensor *t = cg_tensor_empty(cg_persistent_arena(CG_CPU), CG_F32, nd, shape);
    assert_non_null(t);
    float *p = cg_data(t);
    for (int64_t i = 0; i < cg_numel(t); i++) p[i] = scale * cg_test_randf(seed);
    assert_ok(cg_set_requires_grad(t, true));
    return t;
}

static cg_tensor *ones_param(int64_t n, float value) {
    cg_tensor *t = cg_tensor_empty(cg_persistent_arena(CG_CPU), CG_F32, 1, &n);
    assert_ok(cg_fill(t, value));
    assert_ok(cg_set_requires_grad(t, true));
    return t;
}

static void expect_gradcheck(cg_gradcheck_fn fn, void *user, int n, cg_tensor *const *inputs, int64_t max_per_input) {
    cg_gradcheck_opts o = {.eps = 1e-3, .rtol = 2e-2, .atol = 2e-3, .max_per_input = max_per_input};
    cg_gradcheck_result r;
    assert_ok(cg_gradcheck(fn, user, n, inputs, &o, &r));
    if (!r.passed)
        print_error("gradcheck: %lld of %lld failed; worst input %d [%lld]: analytic %.6g numeric %.6g\n",
                    (long long)r.failures, (long long)r.checked, r.worst_input, (long long)r.worst_index,
                    r.worst_analytic, r.worst_numeric);
    assert_true(r.passed);
    assert_true(r.checked > 0);
}

/* ------------------------------------------------------------------ MLP */

/* inputs: x [5, 7], w1 [9, 7], b1 [9], w2 [3, 9], b2 [3]; targets in user. Cross-entropy loss. */
static cg_tensor *mlp_loss(cg_tensor *const *in, void *user) {
    cg_tensor *h = cg_linear(in[0], in[1], in[2], true);
    cg_tensor *logits = cg_linear(h, in[3], in[4], false);
    return cg_cross_entropy(logits, (const cg_tensor *)user, -100, 0.0f);
}

static void test_mlp_gradcheck(void **state) {
    (void)state;
    uint64_t seed = 11;
    int64_t sx[2] = {5, 7}, s1[2] = {9, 7}, s2[2] = {3, 9};
    cg_tensor *in[5] = {randn_param(2, sx, 1.0f, &seed), randn_param(2, s1, 0.5f, &seed), ones_param(9, 0.1f),
                        randn_param(2, s2, 0.5f, &seed), ones_param(3, -0.2f)};
    int64_t n5 = 5;
    int32_t tv[5] = {0, 2, 1, 1, 0};
    cg_tensor *targets = cg_tensor_from_data(cg_step_arena(CG_CPU), CG_I32, 1, &n5, tv);
    expect_gradcheck(mlp_loss, targets, 5, in, 0);
}

/* ------------------------------------------------------------------ one transformer block */

typedef struct block_cfg {
    int64_t B, T, C, H, Hkv;
    bool llama; /* RMSNorm + RoPE + SwiGLU + GQA, else LayerNorm + GELU MLP (GPT-2) */
} block_cfg;

/* [B, T, heads * D] -> [B, heads, T, D] */
static cg_tensor *split_heads(const cg_tensor *x, int64_t B, int64_t T, int64_t heads, int64_t D) {
    int64_t s[4] = {B, T, heads, D};
    int perm[4] = {0, 2, 1, 3};
    return cg_permute(cg_reshape(x, 4, s), perm);
}

/* inputs: x, then per style the parameters; returns sum(out * r) is done by gradcheck: returns the block output. */
static cg_tensor *block_forward(cg_tensor *const *in, void *user) {
    const block_cfg *c = user;
    int64_t D = c->C / c->H;
    const cg_tensor *x = in[0];
    cg_tensor *h = c->llama ? cg_rmsnorm(x, in[1], 1e-6f) : cg_layernorm(x, in[1], in[2], 1e-5f);
    cg_tensor *q = cg_linear(h, in[3], c->llama ? NULL : in[4], false);
    cg_tensor *k = cg_linear(h, in[5], c->llama ? NULL : in[6], false);
    cg_tensor *v = cg_linear(h, in[7], c->llama ? NULL : in[8], false);
    cg_tensor *qh = split_heads(q, c->B, c->T, c->H, D), *kh = split_heads(k, c->B, c->T, c->Hkv, D);
    cg_tensor *vh = split_heads(v, c->B, c->T, c->Hkv, D);
    if (c->llama) {
        qh = cg_rope(qh, 10000.0f, 0, NULL);
        kh = cg_rope(kh, 10000.0f, 0, NULL);
    }
    cg_tensor *att = cg_attention(qh, kh, vh, NULL, 0.0f);
    int perm[4] = {0, 2, 1, 3};
    int64_t s3[3] = {c->B, c->T, c->C};
    cg_tensor *merged = cg_reshape(cg_permute(att, perm), 3, s3);
    cg_tensor *proj = cg_linear(merged, in[9], c->llama ? NULL : in[10], false);
    cg_tensor *resid = NULL;
    cg_tensor *h2 = c->llama ? cg_residual_norm(proj, x, in[11], NULL, 1e-6f, true, &resid)
                             : cg_residual_norm(proj, x, in[11], in[12], 1e-5f, false, &resid);
    cg_tensor *mlp;
    if (c->llama)
        mlp = cg_linear(cg_swiglu(cg_linear(h2, in[13], NULL, false), cg_linear(h2, in[14], NULL, false)), in[15], NULL,
                        false);
    else
        mlp = cg_linear(cg_linear(h2, in[13], in[14], true), in[15], in[16], false);
    return cg_add(resid, mlp);
}

static void run_block_gradcheck(block_cfg c) {
    uint64_t seed = 5;
    int64_t D = c.C / c.H, F = 4 * c.C;
    int64_t sx[3] = {c.B, c.T, c.C}, sq[2] = {c.H * D, c.C}, skv[2] = {c.Hkv * D, c.C}, so[2] = {c.C, c.H * D};
    int64_t sup[2] = {F, c.C}, sdown[2] = {c.C, F};
    cg_tensor *in[17] = {0};
    in[0] = randn_param(3, sx, 1.0f, &seed);
    in[1] = ones_param(c.C, 1.0f);
    in[2] = ones_param(c.C, 0.05f);
    in[3] = randn_param(2, sq, 0.3f, &seed);
    in[4] = ones_param(c.H * D, 0.02f);
    in[5] = randn_param(2, skv, 0.3f, &seed);
    in[6] = ones_param(c.Hkv * D, -0.02f);
    in[7] = randn_param(2, skv, 0.3f, &seed);
    in[8] = ones_param(c.Hkv * D, 0.01f);
    in[9] = randn_param(2, so, 0.3f, &seed);
    in[10] = ones_param(c.C, 0.0f);
    in[11] = ones_param(c.C, 1.0f);
    in[12] = ones_param(c.C, 0.0f);
    in[13] = randn_param(2, sup, 0.3f, &seed);
    in[14] = c.llama ? randn_param(2, sup, 0.3f, &seed) : ones_param(F, 0.01f);
    in[15] = randn_param(2, sdown, 0.2f, &seed);
    in[16] = ones_param(c.C, 0.0f);
    int n = c.llama ? 16 : 17;
    if (c.llama) /* the bias slots are unused: keep them out of the check */
        for (int i = 2; i <= 10; i += 2) assert_ok(cg_set_requires_grad(in[i], false));
    if (c.llama) assert_ok(cg_set_requires_grad(in[12], false));
    expect_gradcheck(block_forward, &c, n, in, cg_test_full() ? 0 : 24); /* test-full: every element */
}

static void test_gpt2_block_gradcheck(void **state) {
    (void)state;
    run_block_gradcheck((block_cfg){.B = 2, .T = 5, .C = 8, .H = 2, .Hkv = 2, .llama = false});
}

static void test_llama_block_gradcheck(void **state) {
    (void)state;
    run_block_gradcheck((block_cfg){.B = 2, .T = 6, .C = 8, .H = 4, .Hkv = 2, .llama = true});
}

/* ------------------------------------------------------------------ training with plain SGD */

/* p -= lr * p.grad for every parameter, then zero the grads. */
static void sgd_step(int n, cg_tensor *const *params, float lr) {
    for (int i = 0; i < n; i++) {
        float *w = cg_data(params[i]);
        const float *g = cg_data(params[i]->grad);
        for (int64_t j = 0; j < cg_numel(params[i]); j++) w[j] -= lr * g[j];
        cg_zero_grad(params[i]);
    }
}

static void test_mlp_learns_xor(void **state) {
    (void)state;
    uint64_t seed = 7;
    int64_t s1[2] = {8, 2}, s2[2] = {2, 8}, sx[2] = {4, 2}, n4 = 4;
    cg_tensor *p[4] = {randn_param(2, s1, 1.0f, &seed), ones_param(8, 0.0f), randn_param(2, s2, 1.0f, &seed),
                       ones_param(2, 0.0f)};
    float xv[8] = {0, 0, 0, 1, 1, 0, 1, 1};
    int32_t yv[4] = {0, 1, 1, 0};
    float loss_value = 0;
    for (int step = 0; step < 1500; step++) {
        cg_tensor *x = cg_tensor_from_data(cg_step_arena(CG_CPU), CG_F32, 2, sx, xv);
        cg_tensor *y = cg_tensor_from_data(cg_step_arena(CG_CPU), CG_I32, 1, &n4, yv);
        cg_tensor *logits = cg_linear(cg_tanh(cg_linear(x, p[0], p[1], false)), p[2], p[3], false);
        cg_tensor *loss = cg_cross_entropy(logits, y, -100, 0.0f);
        assert_non_null(loss);
        loss_value = (float)cg_get_flat(loss, 0);
        assert_ok(cg_backward(loss));
        sgd_step(4, p, 0.5f);
        if (step < 1499) cg_step_end();
        else {
            for (int i = 0; i < 4; i++) /* every example classified correctly */
                assert_true((cg_get_flat(logits, 2 * i + 1) > cg_get_flat(logits, 2 * i)) == (yv[i] == 1));
        }
    }
    print_message("XOR: cross-entropy %.5f after 1500 SGD steps (lr 0.5)\n", loss_value);
    assert_true(loss_value < 0.02f);
}

/* Fits y = sin(2x) on 64 points of [-1.5, 1.5] with a 1-32-1 tanh MLP and plain SGD (lr 0.05: the loss's
 * curvature along the 32 output weights is ~30, so lr must stay below ~0.06): after 3000 steps the MSE is
 * below 1% of the target's variance (~0.52), i.e. about 99% of the variance explained. */
static void test_mlp_regression(void **state) {
    (void)state;
    uint64_t seed = 9;
    int64_t s1[2] = {32, 1}, s2[2] = {1, 32}, sx[2] = {64, 1};
    cg_tensor *p[4] = {randn_param(2, s1, 1.5f, &seed), ones_param(32, 0.0f), randn_param(2, s2, 0.3f, &seed),
                       ones_param(1, 0.0f)};
    float xv[64], yv[64];
    for (int i = 0; i < 64; i++) {
        xv[i] = -1.5f + 3.0f * (float)i / 63.0f;
        yv[i] = sinf(2.0f * xv[i]);
    }
    float mse = 0;
    for (int step = 0; step < 3000; step++) {
        cg_tensor *x = cg_tensor_from_data(cg_step_arena(CG_CPU), CG_F32, 2, sx, xv);
        cg_tensor *y = cg_tensor_from_data(cg_step_arena(CG_CPU), CG_F32, 2, sx, yv);
        cg_tensor *pred = cg_linear(cg_tanh(cg_linear(x, p[0], p[1], false)), p[2], p[3], false);
        cg_tensor *loss = cg_mean_all(cg_square(cg_sub(pred, y)));
        assert_non_null(loss);
        mse = (float)cg_get_flat(loss, 0);
        if (getenv("CG_DEBUG_REGRESSION") && step % 500 == 0) print_message("step %d mse %g\n", step, mse);
        assert_ok(cg_backward(loss));
        sgd_step(4, p, 0.05f);
        cg_step_end();
    }
    double mean = 0, var = 0;
    for (int i = 0; i < 64; i++) mean += yv[i] / 64.0;
    for (int i = 0; i < 64; i++) var += (yv[i] - mean) * (yv[i] - mean) / 64.0;
    print_message("regression sin(2x): MSE %.5f after 3000 SGD steps (lr 0.05), target variance %.4f\n", mse, var);
    assert_true(mse < 0.01 * var);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_mlp_gradcheck, cg_test_teardown),
        cmocka_unit_test_teardown(test_gpt2_block_gradcheck, cg_test_teardown),
        cmocka_unit_test_teardown(test_llama_block_gradcheck, cg_test_teardown),
        cmocka_unit_test_teardown(test_mlp_learns_xor, cg_test_teardown),
        cmocka_unit_test_teardown(test_mlp_regression, cg_test_teardown),
    };
    int rc = cmocka_run_group_tests_name("composite", tests, NULL, NULL);
    cg_shutdown();
    return rc;
}
