/* Optimizers and LR schedules: every step against the spec's formulas evaluated in double in the test
 * (../shared/spec/rl_objectives.md sections 6-7), masks, clipping, noise statistics, NaN skips, state. */
#include "test_util.h"

#include "optim/optim.h"

/* ------------------------------------------------------------------ helpers */

/* A named f32 parameter in the step arena with its gradient buffer (zeroed). */
static cg_tensor *param(const char *name, int nd, const int64_t *shape, const float *values) {
    cg_tensor *t = cg_tensor_from_data(cg_step_arena(CG_CPU), CG_F32, nd, shape, values);
    assert_non_null(t);
    assert_ok(cg_set_requires_grad(t, true));
    assert_ok(cg_alloc_grad(t, cg_step_arena(CG_CPU)));
    t->name = name;
    return t;
}

static void set_grad(cg_tensor *t, const float *g) { memcpy(cg_data(t->grad), g, cg_nbytes(t)); }

static float *fdata(cg_tensor *t) { return (float *)cg_data(t); }

/* ---- reference updates in double, one element at a time (spec formulas) ---- */

static void ref_sgd(double *p, double *buf, double g, double lr, double wd, double mom, bool nesterov) {
    *p *= 1.0 - lr * wd;
    double d = g;
    if (mom > 0) {
        *buf = mom * *buf + g;
        d = nesterov ? g + mom * *buf : *buf;
    }
    *p -= lr * d;
}

static void ref_adamw(double *p, double *m, double *v, double g, int t, double lr, double wd, double b1, double b2,
                      double eps) {
    *p -= lr * wd * *p;
    *m = b1 * *m + (1 - b1) * g;
    *v = b2 * *v + (1 - b2) * g * g;
    double mhat = *m / (1 - pow(b1, t)), vhat = *v / (1 - pow(b2, t));
    *p -= lr * mhat / (sqrt(vhat) + eps);
}

static void ref_lion(double *p, double *m, double g, double lr, double wd, double b1, double b2) {
    double c = b1 * *m + (1 - b1) * g;
    double sign = c > 0 ? 1 : (c < 0 ? -1 : 0);
    *p = *p - lr * (sign + wd * *p);
    *m = b2 * *m + (1 - b2) * g;
}

/* ------------------------------------------------------------------ SGD */

static void check_sgd(float mom, bool nesterov) {
    const int64_t shape[2] = {2, 3};
    const float p0[6] = {0.5f, -1.0f, 2.0f, 0.25f, -0.75f, 1.5f};
    const float g1[6] = {0.1f, -0.2f, 0.3f, 0.0f, 1.0f, -0.5f};
    const float g2[6] = {-0.3f, 0.4f, 0.1f, 0.2f, -1.0f, 0.05f};
    cg_tensor *w = param("h.0.mlp.c_fc.weight", 2, shape, p0);
    cg_optimizer_config cfg = cg_optimizer_config_default(CG_OPT_SGD);
    cfg.momentum = mom;
    cfg.nesterov = nesterov;
    cfg.weight_decay = 0.1f;
    cg_optimizer *opt;
    assert_ok(cg_optimizer_create(&cfg, 1, &w, &opt));
    double p[6], b[6] = {0};
    for (int i = 0; i < 6; i++)
        p[i] = p0[i];
    const float lrs[2] = {0.1f, 0.05f};
    const float *gs[2] = {g1, g2};
    for (int s = 0; s < 2; s++) {
        set_grad(w, gs[s]);
        cg_optim_step_info info;
        assert_ok(cg_optimizer_step(opt, lrs[s], &info));
        assert_false(info.skipped);
        assert_int_equal(info.step, s + 1);
        for (int i = 0; i < 6; i++) {
            ref_sgd(&p[i], &b[i], gs[s][i], lrs[s], 0.1, mom, nesterov);
            assert_close(fdata(w)[i], p[i], 1e-6, 1e-7);
        }
    }
    assert_int_equal(cg_optimizer_step_count(opt), 2);
    cg_optimizer_free(opt);
}

static void test_sgd_plain(void **state) {
    (void)state;
    check_sgd(0.0f, false);
}
static void test_sgd_momentum(void **state) {
    (void)state;
    check_sgd(0.9f, false);
}
static void test_sgd_nesterov(void **state) {
    (void)state;
    check_sgd(0.9f, true);
}

/* First step of SGD with momentum by hand: b = g, p = p(1 - lr wd) - lr g; nesterov: - lr (1 + mom) g. */
static void test_sgd_first_step_closed_form(void **state) {
    (void)state;
    const int64_t shape[2] = {1, 2};
    const float p0[2] = {1.0f, -2.0f}, g[2] = {0.5f, 0.25f};
    cg_tensor *w = param("w", 2, shape, p0);
    cg_optimizer_config cfg = cg_optimizer_config_default(CG_OPT_SGD);
    cfg.momentum = 0.5f;
    cfg.nesterov = true;
    cfg.weight_decay = 0.5f;
    cg_optimizer *opt;
    assert_ok(cg_optimizer_create(&cfg, 1, &w, &opt));
    set_grad(w, g);
    assert_ok(cg_optimizer_step(opt, 0.1f, NULL));
    /* 1 * 0.95 - 0.1 * 1.5 * 0.5 = 0.875;  -2 * 0.95 - 0.1 * 1.5 * 0.25 = -1.9375 */
    assert_close(fdata(w)[0], 0.875, 1e-6, 0);
    assert_close(fdata(w)[1], -1.9375, 1e-6, 0);
    cg_optimizer_free(opt);
}

/* ------------------------------------------------------------------ AdamW */

static void test_adamw_two_steps(void **state) {
    (void)state;
    const int64_t s2[2] = {2, 2}, s1[1] = {3};
    const float w0[4] = {0.5f, -0.25f, 1.0f, 2.0f}, b0[3] = {0.1f, -0.2f, 0.3f};
    /* Small gradients so that eps = 1e-3 matters (it is added after the bias-corrected sqrt). */
    const float gw[2][4] = {{0.01f, -0.002f, 0.0f, 0.05f}, {-0.004f, -0.003f, 0.001f, 0.02f}};
    const float gb[2][3] = {{0.003f, 0.0f, -0.02f}, {0.001f, 0.004f, -0.01f}};
    cg_tensor *w = param("model.layers.0.mlp.up_proj.weight", 2, s2, w0);
    cg_tensor *b = param("model.layers.0.self_attn.q_proj.bias", 1, s1, b0);
    cg_tensor *ps[2] = {w, b};
    cg_optimizer_config cfg = cg_optimizer_config_default(CG_OPT_ADAMW);
    cfg.beta1 = 0.8f;
    cfg.beta2 = 0.95f;
    cfg.eps = 1e-3f;
    cfg.weight_decay = 0.2f;
    cg_optimizer *opt;
    assert_ok(cg_optimizer_create(&cfg, 2, ps, &opt));
    assert_close(cg_optimizer_param_weight_decay(opt, 0), 0.2, 1e-7, 0);
    assert_close(cg_optimizer_param_weight_decay(opt, 1), 0.0, 0, 0); /* the 1-D bias is masked */
    double pw[4], mw[4] = {0}, vw[4] = {0}, pb[3], mb[3] = {0}, vb[3] = {0};
    for (int i = 0; i < 4; i++)
        pw[i] = w0[i];
    for (int i = 0; i < 3; i++)
        pb[i] = b0[i];
    const float lrs[2] = {0.01f, 0.02f};
    for (int s = 0; s < 2; s++) {
        set_grad(w, gw[s]);
        set_grad(b, gb[s]);
        assert_ok(cg_optimizer_step(opt, lrs[s], NULL));
        for (int i = 0; i < 4; i++) {
            ref_adamw(&pw[i], &mw[i], &vw[i], gw[s][i], s + 1, lrs[s], 0.2, 0.8, 0.95, 1e-3);
            assert_close(fdata(w)[i], pw[i], 2e-6, 1e-7);
        }
        for (int i = 0; i < 3; i++) {
            ref_adamw(&pb[i], &mb[i], &vb[i], gb[s][i], s + 1, lrs[s], 0.0, 0.8, 0.95, 1e-3);
            assert_close(fdata(b)[i], pb[i], 2e-6, 1e-7);
        }
    }
    cg_optimizer_free(opt);
}

/* Step 1 by hand: m_hat = g, v_hat = g^2, so p1 = p0 (1 - lr wd) - lr g / (|g| + eps). */
static void test_adamw_first_step_closed_form(void **state) {
    (void)state;
    const int64_t shape[2] = {1, 3};
    const float p0[3] = {1.0f, -1.0f, 0.5f}, g[3] = {0.002f, -4.0f, 0.0f};
    cg_tensor *w = param("w", 2, shape, p0);
    cg_optimizer_config cfg = cg_optimizer_config_default(CG_OPT_ADAMW); /* wd 0.01, eps 1e-8 */
    cfg.eps = 1e-3f;
    cg_optimizer *opt;
    assert_ok(cg_optimizer_create(&cfg, 1, &w, &opt));
    set_grad(w, g);
    assert_ok(cg_optimizer_step(opt, 0.1f, NULL));
    assert_close(fdata(w)[0], 1.0 * 0.999 - 0.1 * 0.002 / 0.003, 1e-6, 0);
    assert_close(fdata(w)[1], -1.0 * 0.999 + 0.1 * 4.0 / 4.001, 1e-6, 0);
    assert_close(fdata(w)[2], 0.5 * 0.999, 1e-6, 0);
    cg_optimizer_free(opt);
}

static void test_defaults(void **state) {
    (void)state;
    cg_optimizer_config a = cg_optimizer_config_default(CG_OPT_ADAMW);
    assert_close(a.lr, 1e-3, 1e-7, 0);
    assert_close(a.beta1, 0.9, 1e-7, 0);
    assert_close(a.beta2, 0.999, 1e-7, 0);
    assert_close(a.eps, 1e-8, 1e-7, 0);
    assert_close(a.weight_decay, 1e-2, 1e-7, 0);
    cg_optimizer_config l = cg_optimizer_config_default(CG_OPT_LION);
    assert_close(l.lr, 1e-4, 1e-7, 0);
    assert_close(l.beta1, 0.9, 1e-7, 0);
    assert_close(l.beta2, 0.99, 1e-7, 0);
    assert_close(l.weight_decay, 0.0, 0, 0);
    cg_optimizer_config s = cg_optimizer_config_default(CG_OPT_SGD);
    assert_close(s.lr, 1e-3, 1e-7, 0);
    assert_close(s.momentum, 0.0, 0, 0);
    assert_false(s.decay_embeddings);
    cg_optimizer_kind k;
    assert_ok(cg_optimizer_kind_from_name("lion", &k));
    assert_int_equal(k, CG_OPT_LION);
    assert_int_equal(cg_optimizer_kind_from_name("adam", &k), CG_ERR_INVALID_ARG);
    assert_error_contains("adam");
}

/* ------------------------------------------------------------------ Lion */

static void test_lion_two_steps(void **state) {
    (void)state;
    const int64_t shape[2] = {2, 2};
    const float p0[4] = {0.5f, -1.0f, 2.0f, 0.3f};
    /* Element 0: beta2 = 0.99 keeps m small, so step 2's c = 0.9 * 0.01 - 0.1 * 0.15 < 0 (with beta1 in the
     * momentum it would be > 0). Element 1: a zero gradient both steps: sign(0) = 0, only the decay acts. */
    const float g[2][4] = {{1.0f, 0.0f, -0.5f, 0.2f}, {-0.15f, 0.0f, 0.3f, -0.7f}};
    cg_tensor *w = param("w", 2, shape, p0);
    cg_optimizer_config cfg = cg_optimizer_config_default(CG_OPT_LION);
    cfg.weight_decay = 0.5f;
    cg_optimizer *opt;
    assert_ok(cg_optimizer_create(&cfg, 1, &w, &opt));
    double p[4], m[4] = {0};
    for (int i = 0; i < 4; i++)
        p[i] = p0[i];
    const float lr = 0.01f;
    for (int s = 0; s < 2; s++) {
        set_grad(w, g[s]);
        assert_ok(cg_optimizer_step(opt, lr, NULL));
        for (int i = 0; i < 4; i++) {
            ref_lion(&p[i], &m[i], g[s][i], lr, 0.5, 0.9, 0.99);
            assert_close(fdata(w)[i], p[i], 1e-6, 1e-7);
        }
    }
    /* By hand: element 0 after step 1: 0.5 * 0.995 - 0.01 = 0.4875; step 2 (sign -1): 0.4875 * 0.995 + 0.01. */
    assert_close(fdata(w)[0], 0.4875 * 0.995 + 0.01, 1e-6, 0);
    /* element 1: decay only, twice */
    assert_close(fdata(w)[1], -1.0 * 0.995 * 0.995, 1e-6, 0);
    cg_optimizer_free(opt);
}

/* ------------------------------------------------------------------ masks and groups */

static void test_weight_decay_masks(void **state) {
    (void)state;
    const int64_t s2[2] = {2, 2}, s1[1] = {2};
    const float v4[4] = {1.0f, -2.0f, 3.0f, -4.0f}, v2[2] = {1.5f, -0.5f};
    cg_tensor *wte = param("wte.weight", 2, s2, v4);
    cg_tensor *embed = param("model.embed_tokens.weight", 2, s2, v4);
    cg_tensor *wpe = param("wpe.weight", 2, s2, v4);
    cg_tensor *fc = param("h.0.mlp.c_fc.weight", 2, s2, v4);
    cg_tensor *ln = param("h.0.ln_1.weight", 1, s1, v2);
    cg_tensor *bias = param("h.0.mlp.c_fc.bias", 1, s1, v2);
    assert_false(cg_optimizer_default_decays(wte, false));
    assert_false(cg_optimizer_default_decays(embed, false));
    assert_false(cg_optimizer_default_decays(wpe, false));
    assert_true(cg_optimizer_default_decays(wte, true));
    assert_true(cg_optimizer_default_decays(fc, false));
    assert_false(cg_optimizer_default_decays(ln, true));
    assert_false(cg_optimizer_default_decays(bias, true));

    /* Zero gradients: AdamW's update is 0 / (0 + eps) = 0, so only the decoupled decay moves anything. */
    for (int pass = 0; pass < 2; pass++) {
        bool decay_emb = pass == 1;
        cg_tensor *ps[6] = {wte, embed, wpe, fc, ln, bias};
        float before[6][4];
        for (int k = 0; k < 6; k++)
            memcpy(before[k], cg_data(ps[k]), cg_nbytes(ps[k]));
        cg_optimizer_config cfg = cg_optimizer_config_default(CG_OPT_ADAMW);
        cfg.weight_decay = 0.5f;
        cfg.decay_embeddings = decay_emb;
        cg_optimizer *opt;
        assert_ok(cg_optimizer_create(&cfg, 6, ps, &opt));
        assert_ok(cg_optimizer_step(opt, 0.1f, NULL));
        for (int k = 0; k < 6; k++) {
            bool decays = k == 3 || (decay_emb && k < 3);
            for (int64_t i = 0; i < cg_numel(ps[k]); i++) {
                if (decays)
                    assert_close(fdata(ps[k])[i], before[k][i] * 0.95, 1e-6, 0);
                else
                    assert_true(fdata(ps[k])[i] == before[k][i]); /* untouched, bit for bit */
            }
        }
        cg_optimizer_free(opt);
    }
}

static void test_param_groups(void **state) {
    (void)state;
    const int64_t shape[1] = {2};
    const float a0[2] = {1.0f, 2.0f}, b0[2] = {-1.0f, 0.5f}, g[2] = {0.5f, -0.25f};
    cg_tensor *a = param("a", 1, shape, a0), *b = param("b", 1, shape, b0);
    set_grad(a, g);
    set_grad(b, g);
    cg_tensor *ga[1] = {a}, *gb[1] = {b};
    cg_param_group groups[2] = {{1, ga, 1.0f, 0.1f}, {1, gb, 0.5f, 0.0f}};
    cg_optimizer_config cfg = cg_optimizer_config_default(CG_OPT_SGD);
    cg_optimizer *opt;
    assert_ok(cg_optimizer_create_groups(&cfg, 2, groups, &opt));
    assert_int_equal(cg_optimizer_num_params(opt), 2);
    assert_ptr_equal(cg_optimizer_param(opt, 1), b);
    assert_close(cg_optimizer_param_lr_mult(opt, 1), 0.5, 0, 0);
    assert_ok(cg_optimizer_step(opt, 0.2f, NULL));
    /* group 0: lr 0.2, wd 0.1 (explicit groups use their decay even on 1-D tensors) */
    assert_close(fdata(a)[0], 1.0 * 0.98 - 0.2 * 0.5, 1e-6, 0);
    assert_close(fdata(a)[1], 2.0 * 0.98 + 0.2 * 0.25, 1e-6, 0);
    /* group 1: lr 0.1, no decay */
    assert_close(fdata(b)[0], -1.0 - 0.1 * 0.5, 1e-6, 0);
    assert_close(fdata(b)[1], 0.5 + 0.1 * 0.25, 1e-6, 0);
    /* a parameter with no gradient buffer is left alone */
    cg_optimizer_free(opt);
    cg_tensor *c = cg_tensor_from_data(cg_step_arena(CG_CPU), CG_F32, 1, shape, a0);
    cg_tensor *both[2] = {a, c};
    float a_before[2];
    memcpy(a_before, cg_data(a), sizeof a_before);
    assert_ok(cg_optimizer_create(&cfg, 2, both, &opt));
    assert_ok(cg_optimizer_step(opt, 1.0f, NULL));
    assert_close(fdata(a)[0], a_before[0] - 0.5, 1e-6, 0);
    assert_true(fdata(c)[0] == a0[0] && fdata(c)[1] == a0[1]);
    cg_optimizer_free(opt);
}

/* ------------------------------------------------------------------ schedules */

static void test_schedule_cosine_linear(void **state) {
    (void)state;
    cg_lr_schedule_config s = {
        .kind = CG_LR_COSINE, .lr = 1.0f, .warmup_steps = 10, .total_steps = 100, .final_frac = 0.1f};
    assert_ok(cg_lr_schedule_validate(&s));
    assert_close(cg_lr_schedule(&s, 0), 0.1, 1e-6, 0); /* (0 + 1) / 10 */
    assert_close(cg_lr_schedule(&s, 4), 0.5, 1e-6, 0);
    assert_close(cg_lr_schedule(&s, 9), 1.0, 1e-6, 0);   /* warmup - 1 */
    assert_close(cg_lr_schedule(&s, 10), 1.0, 1e-6, 0);  /* warmup: r = 0 */
    assert_close(cg_lr_schedule(&s, 55), 0.55, 1e-6, 0); /* r = 1/2: cos = 0 */
    assert_close(cg_lr_schedule(&s, 99), 0.1 + 0.45 * (1 + cos(M_PI * 89.0 / 90.0)), 1e-6, 0);
    assert_close(cg_lr_schedule(&s, 100), 0.1, 1e-6, 0);
    assert_close(cg_lr_schedule(&s, 5000), 0.1, 1e-6, 0);
    s.kind = CG_LR_LINEAR;
    assert_close(cg_lr_schedule(&s, 10), 1.0, 1e-6, 0);
    assert_close(cg_lr_schedule(&s, 55), 0.55, 1e-6, 0);
    assert_close(cg_lr_schedule(&s, 99), 0.1 + 0.9 / 90.0, 1e-6, 0);
    assert_close(cg_lr_schedule(&s, 100), 0.1, 1e-6, 0);
    /* llm.c's GPT-2 recipe: cosine to 0 after 700 warmup steps */
    cg_lr_schedule_config g = {.kind = CG_LR_COSINE, .lr = 6e-4f, .warmup_steps = 700, .total_steps = 18865};
    assert_close(cg_lr_schedule(&g, 0), 6e-4 / 700, 1e-6, 0);
    assert_close(cg_lr_schedule(&g, 700 + (18865 - 700) / 4), 6e-4 * 0.5 * (1 + cos(M_PI * 0.25)), 1e-4, 0);
}

static void test_schedule_constant_wsd(void **state) {
    (void)state;
    cg_lr_schedule_config c = {.kind = CG_LR_CONSTANT, .lr = 2.0f, .warmup_steps = 4};
    assert_ok(cg_lr_schedule_validate(&c));
    assert_close(cg_lr_schedule(&c, 0), 0.5, 1e-6, 0);
    assert_close(cg_lr_schedule(&c, 3), 2.0, 1e-6, 0);
    assert_close(cg_lr_schedule(&c, 4), 2.0, 1e-6, 0);
    assert_close(cg_lr_schedule(&c, 1000000), 2.0, 1e-6, 0);
    c.warmup_steps = 0;
    assert_close(cg_lr_schedule(&c, 0), 2.0, 1e-6, 0);

    cg_lr_schedule_config w = {
        .kind = CG_LR_WSD, .lr = 1.0f, .warmup_steps = 10, .total_steps = 100, .final_frac = 0.1f, .decay_frac = 0.2f};
    assert_ok(cg_lr_schedule_validate(&w));
    assert_close(cg_lr_schedule(&w, 0), 0.1, 1e-6, 0);
    assert_close(cg_lr_schedule(&w, 9), 1.0, 1e-6, 0);
    assert_close(cg_lr_schedule(&w, 10), 1.0, 1e-6, 0);
    assert_close(cg_lr_schedule(&w, 79), 1.0, 1e-6, 0); /* last stable step */
    assert_close(cg_lr_schedule(&w, 80), 1.0, 1e-6, 0); /* decay starts: q = 0 */
    assert_close(cg_lr_schedule(&w, 90), 0.55, 1e-6, 0);
    assert_close(cg_lr_schedule(&w, 99), 0.1 + 0.05 * 0.9, 1e-6, 0);
    assert_close(cg_lr_schedule(&w, 100), 0.1, 1e-6, 0);
    w.wsd_sqrt = true;
    assert_close(cg_lr_schedule(&w, 90), 0.1 + (1 - sqrt(0.5)) * 0.9, 1e-6, 0);
    assert_close(cg_lr_schedule(&w, 85), 0.1 + (1 - sqrt(0.25)) * 0.9, 1e-6, 0);

    cg_lr_schedule_kind k;
    assert_ok(cg_lr_schedule_kind_from_name("wsd", &k));
    assert_int_equal(k, CG_LR_WSD);
    assert_int_equal(cg_lr_schedule_kind_from_name("step", &k), CG_ERR_INVALID_ARG);
    cg_lr_schedule_config bad = {.kind = CG_LR_COSINE, .lr = 1.0f, .warmup_steps = 10, .total_steps = 10};
    assert_int_equal(cg_lr_schedule_validate(&bad), CG_ERR_INVALID_ARG);
    assert_error_contains("total_steps");
    bad.total_steps = 20;
    bad.final_frac = 1.5f;
    assert_int_equal(cg_lr_schedule_validate(&bad), CG_ERR_INVALID_ARG);
    assert_error_contains("final_frac");
}

/* ------------------------------------------------------------------ clipping */

static void test_clipping(void **state) {
    (void)state;
    const int64_t s1[1] = {1}, s2[2] = {1, 1};
    const float z = 0.0f, g3 = 3.0f, g4 = 4.0f;
    cg_tensor *a = param("a", 1, s1, &z), *b = param("b", 2, s2, &z);
    set_grad(a, &g3);
    set_grad(b, &g4);
    cg_tensor *ps[2] = {a, b};
    cg_optimizer_config cfg = cg_optimizer_config_default(CG_OPT_SGD);
    cfg.grad_clip = 1.0f;
    cg_optimizer *opt;
    assert_ok(cg_optimizer_create(&cfg, 2, ps, &opt));
    double norm;
    int64_t bad;
    assert_ok(cg_optimizer_grad_norm(opt, &norm, &bad));
    assert_close(norm, 5.0, 1e-12, 0);
    assert_int_equal(bad, 0);
    cg_optim_step_info info;
    assert_ok(cg_optimizer_step(opt, 1.0f, &info));
    assert_close(info.grad_norm, 5.0, 1e-12, 0);
    assert_close(info.clip_coef, 1.0 / (5.0 + 1e-6), 1e-6, 0);
    /* lr 1, no momentum: the update is the clipped gradient, of norm 1 */
    double du = hypot(fdata(a)[0], fdata(b)[0]);
    assert_close(du, 1.0, 1e-6, 0);
    assert_close(fdata(a)[0], -0.6, 1e-6, 0);
    assert_close(fdata(b)[0], -0.8, 1e-6, 0);
    /* the gradients themselves are not modified */
    assert_true(fdata(a->grad)[0] == 3.0f && fdata(b->grad)[0] == 4.0f);
    cg_optimizer_free(opt);

    /* a norm below the threshold is not scaled */
    cfg.grad_clip = 10.0f;
    assert_ok(cg_optimizer_create(&cfg, 2, ps, &opt));
    assert_ok(cg_optimizer_step(opt, 1.0f, &info));
    assert_close(info.clip_coef, 1.0, 0, 0);
    assert_close(fdata(a)[0], -3.6, 1e-6, 0);
    assert_close(fdata(b)[0], -4.8, 1e-6, 0);
    cg_optimizer_free(opt);
}

/* ------------------------------------------------------------------ gradient noise */

static void sample_stats(const double *x, int64_t n, double *mean, double *var) {
    double s = 0, ss = 0;
    for (int64_t i = 0; i < n; i++)
        s += x[i];
    *mean = s / (double)n;
    for (int64_t i = 0; i < n; i++)
        ss += (x[i] - *mean) * (x[i] - *mean);
    *var = ss / (double)(n - 1);
}

static void test_gradient_noise_variance(void **state) {
    (void)state;
    /* 70,000 elements (the parallel path) in two tensors; gradient 1 everywhere, clipped to norm 1, so the
     * noise (added after clipping) dominates: with noise before clipping its variance would shrink by
     * the clip factor squared (1/70000). */
    enum { NA = 50000, NB = 20000, N = NA + NB };
    const int64_t sa[2] = {100, 500}, sb[2] = {40, 500};
    float *zeros = calloc(N, sizeof(float)), *ones = malloc(N * sizeof(float));
    assert_non_null(zeros);
    assert_non_null(ones);
    for (int i = 0; i < N; i++)
        ones[i] = 1.0f;
    cg_tensor *a = param("a", 2, sa, zeros), *b = param("b", 2, sb, zeros);
    set_grad(a, ones);
    set_grad(b, ones);
    cg_tensor *ps[2] = {a, b};
    cg_optimizer_config cfg = cg_optimizer_config_default(CG_OPT_SGD);
    cfg.grad_clip = 1.0f;
    cfg.grad_noise_eta = 0.3f;
    cfg.seed = 1234;
    cg_optimizer *opt;
    assert_ok(cg_optimizer_create(&cfg, 2, ps, &opt));
    double *prev = malloc(N * sizeof(double)), *noise = malloc(N * sizeof(double)), *first = malloc(N * sizeof(double));
    assert_non_null(prev);
    assert_non_null(noise);
    assert_non_null(first);
    for (int i = 0; i < N; i++)
        prev[i] = 0.0;
    const double clipped = 1.0 / (sqrt((double)N) + 1e-6);
    for (int t = 0; t < 4; t++) {
        cg_optim_step_info info;
        assert_ok(cg_optimizer_step(opt, 1.0f, &info));
        double expected_var = 0.3 / pow(1.0 + t, 0.55);
        assert_close(info.noise_std, sqrt(expected_var), 1e-6, 0);
        for (int i = 0; i < N; i++) {
            double now = i < NA ? fdata(a)[i] : fdata(b)[i - NA];
            noise[i] = -(now - prev[i]) - clipped; /* p -= lr * (clipped g + noise) */
            prev[i] = now;
        }
        double mean, var;
        sample_stats(noise, N, &mean, &var);
        /* sample variance of N normals: sd = var * sqrt(2 / (N - 1)); 5 sigma. Mean: 5 sd / sqrt(N). */
        assert_close(var, expected_var, 5.0 * sqrt(2.0 / (N - 1)), 0);
        assert_close(mean, 0.0, 0, 5.0 * sqrt(expected_var / N));
        if (t == 0) {
            memcpy(first, noise, N * sizeof(double));
        } else if (t == 1) {
            /* fresh each step: the correlation with step 0's noise is 0 within 5 / sqrt(N) */
            double c = 0;
            for (int i = 0; i < N; i++)
                c += first[i] * noise[i];
            c /= (double)N * sqrt(0.3 * expected_var);
            assert_close(c, 0.0, 0, 5.0 / sqrt((double)N));
        }
    }
    /* Fourth moment check on the last step: kurtosis of a normal is 3 (sd of the estimate ~ sqrt(24 / N)). */
    double mean, var, m4 = 0;
    sample_stats(noise, N, &mean, &var);
    for (int i = 0; i < N; i++)
        m4 += pow(noise[i] - mean, 4);
    assert_close(m4 / N / (var * var), 3.0, 0, 5.0 * sqrt(24.0 / N));
    cg_optimizer_free(opt);
    free(zeros);
    free(ones);
    free(prev);
    free(noise);
    free(first);
}

/* ------------------------------------------------------------------ NaN / Inf */

static void test_nonfinite_skip(void **state) {
    (void)state;
    const int64_t shape[2] = {2, 2};
    const float p0[4] = {1.0f, 2.0f, 3.0f, 4.0f}, q0[4] = {-1.0f, -2.0f, -3.0f, -4.0f};
    const float g[4] = {0.1f, 0.2f, -0.3f, 0.4f};
    float gbad[4] = {0.1f, NAN, 0.3f, 0.4f};
    cg_tensor *p = param("p", 2, shape, p0), *q = param("q", 2, shape, q0);
    cg_tensor *ps[2] = {p, q};
    cg_optimizer_config cfg = cg_optimizer_config_default(CG_OPT_ADAMW);
    cg_optimizer *opt;
    assert_ok(cg_optimizer_create(&cfg, 2, ps, &opt));
    for (int trial = 0; trial < 2; trial++) {
        gbad[1] = trial == 0 ? NAN : -INFINITY;
        set_grad(p, g);
        set_grad(q, gbad);
        cg_optim_step_info info;
        assert_ok(cg_optimizer_step(opt, 0.1f, &info));
        assert_true(info.skipped);
        assert_int_equal(info.nonfinite, 1);
        assert_int_equal(info.first_nonfinite, 1);
        assert_false(isfinite(info.grad_norm));
        assert_int_equal(cg_optimizer_step_count(opt), 0);
        assert_memory_equal(cg_data(p), p0, sizeof p0);
        assert_memory_equal(cg_data(q), q0, sizeof q0);
    }
    /* The skipped steps left no trace: the next finite step is AdamW's first step. */
    set_grad(q, g);
    cg_optim_step_info info;
    assert_ok(cg_optimizer_step(opt, 0.1f, &info));
    assert_false(info.skipped);
    assert_int_equal(info.step, 1);
    for (int i = 0; i < 4; i++) {
        double r = p0[i], m = 0, v = 0;
        ref_adamw(&r, &m, &v, g[i], 1, 0.1, 0.01, 0.9, 0.999, 1e-8);
        assert_close(fdata(p)[i], r, 1e-6, 0);
    }
    cg_optimizer_free(opt);
}

/* ------------------------------------------------------------------ state save / load */

static void run_state_roundtrip(cg_optimizer_kind kind) {
    const int64_t shape[2] = {3, 5}, sb[1] = {5};
    float p0[15], b0[5], g[3][15], gb[3][5];
    uint64_t seed = 99;
    for (int i = 0; i < 15; i++)
        p0[i] = cg_test_randf(&seed);
    for (int i = 0; i < 5; i++)
        b0[i] = cg_test_randf(&seed);
    for (int s = 0; s < 3; s++) {
        for (int i = 0; i < 15; i++)
            g[s][i] = cg_test_randf(&seed);
        for (int i = 0; i < 5; i++)
            gb[s][i] = cg_test_randf(&seed);
    }
    cg_optimizer_config cfg = cg_optimizer_config_default(kind);
    cfg.momentum = kind == CG_OPT_SGD ? 0.9f : 0.0f;
    cfg.weight_decay = 0.1f;
    cfg.grad_noise_eta = 0.01f;
    cfg.seed = 7;
    cg_tensor *w = param("w", 2, shape, p0), *b = param("b", 1, sb, b0);
    cg_tensor *ps[2] = {w, b};
    cg_optimizer *a;
    assert_ok(cg_optimizer_create(&cfg, 2, ps, &a));
    for (int s = 0; s < 2; s++) {
        set_grad(w, g[s]);
        set_grad(b, gb[s]);
        assert_ok(cg_optimizer_step(a, 0.01f, NULL));
    }
    size_t nb = cg_optimizer_state_bytes(a);
    unsigned char *buf = malloc(nb);
    assert_non_null(buf);
    assert_ok(cg_optimizer_save_state(a, buf));
    cg_tensor *w2 = param("w", 2, shape, cg_data(w)), *b2 = param("b", 1, sb, cg_data(b));
    set_grad(w, g[2]);
    set_grad(b, gb[2]);
    assert_ok(cg_optimizer_step(a, 0.01f, NULL));

    cg_tensor *ps2[2] = {w2, b2};
    cg_optimizer *r;
    assert_ok(cg_optimizer_create(&cfg, 2, ps2, &r));
    assert_ok(cg_optimizer_load_state(r, buf, nb));
    assert_int_equal(cg_optimizer_step_count(r), 2);
    set_grad(w2, g[2]);
    set_grad(b2, gb[2]);
    assert_ok(cg_optimizer_step(r, 0.01f, NULL));
    assert_memory_equal(cg_data(w), cg_data(w2), sizeof p0);
    assert_memory_equal(cg_data(b), cg_data(b2), sizeof b0);
    /* and the parameters did move on the third step */
    assert_memory_not_equal(cg_data(w2), p0, sizeof p0);

    /* refusals: truncated, bad magic, other kind, other sizes */
    assert_int_equal(cg_optimizer_load_state(r, buf, nb - 1), CG_ERR_FORMAT);
    assert_error_contains("bytes");
    buf[0] ^= 1;
    assert_int_equal(cg_optimizer_load_state(r, buf, nb), CG_ERR_FORMAT);
    buf[0] ^= 1;
    cg_optimizer_config other = cg_optimizer_config_default(kind == CG_OPT_LION ? CG_OPT_ADAMW : CG_OPT_LION);
    cg_optimizer *o2;
    assert_ok(cg_optimizer_create(&other, 2, ps2, &o2));
    assert_int_equal(cg_optimizer_load_state(o2, buf, nb), CG_ERR_INVALID_ARG);
    assert_error_contains("the state is for");
    cg_optimizer_free(o2);
    assert_ok(cg_optimizer_create(&cfg, 1, ps2, &o2));
    assert_int_equal(cg_optimizer_load_state(o2, buf, nb), CG_ERR_INVALID_ARG);
    cg_optimizer_free(o2);
    cg_optimizer_free(a);
    cg_optimizer_free(r);
    free(buf);
}

static void test_state_roundtrip(void **state) {
    (void)state;
    run_state_roundtrip(CG_OPT_ADAMW);
    cg_step_end();
    run_state_roundtrip(CG_OPT_LION);
    cg_step_end();
    run_state_roundtrip(CG_OPT_SGD);
}

/* ------------------------------------------------------------------ argument errors */

static void test_argument_errors(void **state) {
    (void)state;
    const int64_t shape[2] = {2, 2};
    const float v[4] = {1, 2, 3, 4};
    cg_tensor *w = param("w", 2, shape, v);
    cg_optimizer *opt = (cg_optimizer *)1;
    cg_optimizer_config cfg = cg_optimizer_config_default(CG_OPT_ADAMW);
    assert_int_equal(cg_optimizer_create(NULL, 1, &w, &opt), CG_ERR_INVALID_ARG);
    assert_null(opt);
    cfg.beta2 = 1.0f;
    assert_int_equal(cg_optimizer_create(&cfg, 1, &w, &opt), CG_ERR_INVALID_ARG);
    assert_error_contains("betas");
    cfg = cg_optimizer_config_default(CG_OPT_ADAMW);
    cfg.eps = 0.0f;
    assert_int_equal(cg_optimizer_create(&cfg, 1, &w, &opt), CG_ERR_INVALID_ARG);
    assert_error_contains("eps");
    cfg = cg_optimizer_config_default(CG_OPT_SGD);
    cfg.nesterov = true;
    assert_int_equal(cg_optimizer_create(&cfg, 1, &w, &opt), CG_ERR_INVALID_ARG);
    assert_error_contains("nesterov");
    cfg = cg_optimizer_config_default(CG_OPT_SGD);
    cfg.lr = -1.0f;
    assert_int_equal(cg_optimizer_create(&cfg, 1, &w, &opt), CG_ERR_INVALID_ARG);
    cfg = cg_optimizer_config_default(CG_OPT_SGD);
    cfg.grad_clip = NAN;
    assert_int_equal(cg_optimizer_create(&cfg, 1, &w, &opt), CG_ERR_INVALID_ARG);
    assert_error_contains("grad_clip");
    cfg = cg_optimizer_config_default(CG_OPT_SGD);
    cfg.kind = (cg_optimizer_kind)7;
    assert_int_equal(cg_optimizer_create(&cfg, 1, &w, &opt), CG_ERR_INVALID_ARG);
    cfg = cg_optimizer_config_default(CG_OPT_SGD);
    cg_tensor *twice[2] = {w, w};
    assert_int_equal(cg_optimizer_create(&cfg, 2, twice, &opt), CG_ERR_INVALID_ARG);
    assert_error_contains("twice");
    assert_int_equal(cg_optimizer_create(&cfg, 1, NULL, &opt), CG_ERR_INVALID_ARG);
    cg_tensor *null_param = NULL;
    assert_int_equal(cg_optimizer_create(&cfg, 1, &null_param, &opt), CG_ERR_INVALID_ARG);
    cg_tensor *bf = cg_tensor_zeros(cg_step_arena(CG_CPU), CG_BF16, 2, shape);
    assert_int_equal(cg_optimizer_create(&cfg, 1, &bf, &opt), CG_ERR_DTYPE);
    assert_error_contains("f32");
    cg_tensor *tr = cg_view_transpose(w, 0, 1);
    assert_int_equal(cg_optimizer_create(&cfg, 1, &tr, &opt), CG_ERR_INVALID_ARG);
    assert_error_contains("contiguous");
    float host[4];
    cg_tensor *gpu = cg_tensor_wrap(cg_step_arena(CG_CPU), CG_F32, CG_CUDA(0), 2, shape, host);
    if (gpu && cg_cuda_device_count() == 0) { /* (with a GPU this would be a valid GPU optimizer) */
        assert_int_equal(cg_optimizer_create(&cfg, 1, &gpu, &opt), cg_cuda_compiled() ? CG_ERR_DEVICE : CG_ERR_UNSUPPORTED);
        assert_error_contains("cuda:0");
        assert_error_contains("GPU");
    }
    cg_param_group bad_group = {1, &w, -1.0f, 0.0f};
    assert_int_equal(cg_optimizer_create_groups(&cfg, 1, &bad_group, &opt), CG_ERR_INVALID_ARG);
    assert_error_contains("lr_mult");

    assert_ok(cg_optimizer_create(&cfg, 1, &w, &opt));
    assert_int_equal(cg_optimizer_step(opt, -0.1f, NULL), CG_ERR_INVALID_ARG);
    assert_int_equal(cg_optimizer_step(opt, NAN, NULL), CG_ERR_INVALID_ARG);
    assert_int_equal(cg_optimizer_step(NULL, 0.1f, NULL), CG_ERR_INVALID_ARG);
    /* a gradient buffer of the wrong size is refused before anything changes */
    cg_tensor *good_grad = w->grad;
    const int64_t s3[1] = {3};
    w->grad = cg_tensor_zeros(cg_step_arena(CG_CPU), CG_F32, 1, s3);
    assert_int_equal(cg_optimizer_step(opt, 0.1f, NULL), CG_ERR_INVALID_ARG);
    assert_error_contains("gradient of parameter 0 (w");
    w->grad = good_grad;
    assert_int_equal(cg_optimizer_step_count(opt), 0);
    assert_int_equal(cg_optimizer_save_state(opt, NULL), CG_ERR_INVALID_ARG);
    assert_int_equal(cg_optimizer_load_state(opt, "short", 5), CG_ERR_FORMAT);
    /* zero_grad clears the gradients */
    const float g[4] = {1, 1, 1, 1};
    set_grad(w, g);
    cg_optimizer_zero_grad(opt);
    for (int i = 0; i < 4; i++)
        assert_true(fdata(w->grad)[i] == 0.0f);
    cg_optimizer_free(opt);
    cg_optimizer_free(NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_sgd_plain, cg_test_teardown),
        cmocka_unit_test_teardown(test_sgd_momentum, cg_test_teardown),
        cmocka_unit_test_teardown(test_sgd_nesterov, cg_test_teardown),
        cmocka_unit_test_teardown(test_sgd_first_step_closed_form, cg_test_teardown),
        cmocka_unit_test_teardown(test_adamw_two_steps, cg_test_teardown),
        cmocka_unit_test_teardown(test_adamw_first_step_closed_form, cg_test_teardown),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test_teardown(test_lion_two_steps, cg_test_teardown),
        cmocka_unit_test_teardown(test_weight_decay_masks, cg_test_teardown),
        cmocka_unit_test_teardown(test_param_groups, cg_test_teardown),
        cmocka_unit_test(test_schedule_cosine_linear),
        cmocka_unit_test(test_schedule_constant_wsd),
        cmocka_unit_test_teardown(test_clipping, cg_test_teardown),
        cmocka_unit_test_teardown(test_gradient_noise_variance, cg_test_teardown),
        cmocka_unit_test_teardown(test_nonfinite_skip, cg_test_teardown),
        cmocka_unit_test_teardown(test_state_roundtrip, cg_test_teardown),
        cmocka_unit_test_teardown(test_argument_errors, cg_test_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
