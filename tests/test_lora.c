/* LoRA: attach (targets, init, names, frozen base), the adapted forward against a base model whose weights the
 * test itself moves by scale * B A (in double), B = 0 and disabled adapters giving the base model bit for bit,
 * merge/unmerge, rsLoRA scaling, dropout only in training, gradients only on the adapters (gradcheck and one
 * SGD step), PEFT save -> load round trips for both families, and the errors of malformed adapter files. */
#include "test_util.h"

#include <sys/stat.h>
#include <unistd.h>

#include "core/json.h"
#include "models/lora.h"

#define LLAMA_ALL "q,k,v,o,gate,up,down"
#define GPT2_ALL "c_attn,c_proj,c_fc"

/* A tiny model whose every path matters (tests/test_util.h). */
static cg_model *tiny(const char *preset, uint64_t seed) { return cg_test_tiny_model(preset, seed, 1000); }

static const char *all_targets(const char *preset) { return strncmp(preset, "gpt2", 4) == 0 ? GPT2_ALL : LLAMA_ALL; }

static cg_lora_config lora_cfg(const char *targets, int rank, float alpha) {
    cg_lora_config c = cg_lora_config_default();
    c.rank = rank;
    c.alpha = alpha;
    c.targets = targets;
    c.seed = 77;
    return c;
}

/* The final hidden states of a no-grad forward, as doubles (free them). */
static double *hidden_of(cg_model *m, const cg_tensor *tok, int64_t *n) {
    cg_no_grad_enter();
    cg_model_inputs in = {.tokens = tok};
    cg_tensor *h = cg_model_forward(m, &in);
    cg_no_grad_exit();
    if (!h) print_error("%s\n", cg_last_error());
    assert_non_null(h);
    *n = cg_numel(h);
    return cg_test_values(h);
}

static void assert_same(const double *a, const double *b, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (a[i] != b[i]) {
            print_error("element %lld: %.9g != %.9g\n", (long long)i, a[i], b[i]);
            fail();
        }
}

static double max_abs_diff(const double *a, const double *b, int64_t n) {
    double d = 0;
    for (int64_t i = 0; i < n; i++) d = fmax(d, fabs(a[i] - b[i]));
    return d;
}

static int adapted(cg_model *m, cg_linear_module **mods) { return cg_lora_modules(m, mods, 64); }

static void randomize_b(cg_model *m, uint64_t seed, float std) {
    cg_linear_module *mods[64];
    int n = adapted(m, mods);
    cg_rng r = cg_rng_init(seed);
    for (int i = 0; i < n; i++) assert_ok(cg_rng_normal(&r, mods[i]->lora_b, 0.0f, std));
}

/* ------------------------------------------------------------------ attach */

static void check_attach(const char *preset, int expect_modules) {
    cg_model *m = tiny(preset, 3);
    cg_tensor *tok = cg_test_random_tokens(2, 7, 5, m->cfg.vocab_size);
    int64_t n = 0;
    double *base = hidden_of(m, tok, &n);
    int n_base_params = m->n_params;
    cg_lora_config c = lora_cfg(all_targets(preset), 8, 16.0f);
    assert_ok(cg_lora_attach(m, &c));
    assert_true(cg_lora_attached(m));
    cg_linear_module *mods[64];
    int k = adapted(m, mods);
    assert_int_equal(k, expect_modules);
    assert_int_equal(m->n_params, n_base_params + 2 * k);
    /* only the adapters train */
    cg_tensor *train[128];
    assert_int_equal(cg_model_trainable(m, train, 128), 2 * k);
    for (int i = 0; i < 2 * k; i++) assert_non_null(strstr(train[i]->name, ".lora_"));
    /* init: A ~ U(-1/sqrt(in), 1/sqrt(in)) (kaiming_uniform a = sqrt(5)), B = 0, scale alpha / r */
    double s2 = 0, cnt = 0, amax = 0;
    for (int i = 0; i < k; i++) {
        cg_linear_module *mod = mods[i];
        int64_t out = mod->weight->shape[0], in = mod->weight->shape[1];
        assert_int_equal(mod->lora_a->shape[0], 8);
        assert_int_equal(mod->lora_a->shape[1], in);
        assert_int_equal(mod->lora_b->shape[0], out);
        assert_int_equal(mod->lora_b->shape[1], 8);
        assert_true(mod->lora_scale == 2.0f);
        double bound = 1.0 / sqrt((double)in);
        for (int64_t e = 0; e < cg_numel(mod->lora_a); e++) {
            double v = cg_get_flat(mod->lora_a, e);
            assert_true(v >= -bound && v < bound);
            s2 += v * v / (bound * bound);
            amax = fmax(amax, fabs(v) / bound);
            cnt++;
        }
        for (int64_t e = 0; e < cg_numel(mod->lora_b); e++) assert_true(cg_get_flat(mod->lora_b, e) == 0.0);
    }
    assert_close(s2 / cnt, 1.0 / 3.0, 0.05, 0); /* the variance of U(-1, 1) */
    assert_true(amax > 0.99);
    /* PEFT's names */
    bool gpt2 = m->cfg.arch == CG_ARCH_GPT2;
    const char *a0 = gpt2 ? "base_model.model.transformer.h.0.attn.c_attn.lora_A.weight"
                          : "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight";
    const char *b1 = gpt2 ? "base_model.model.transformer.h.1.mlp.c_proj.lora_B.weight"
                          : "base_model.model.model.layers.1.mlp.down_proj.lora_B.weight";
    assert_true(cg_model_find_param(m, a0) == mods[0]->lora_a);
    assert_true(cg_model_find_param(m, b1) == mods[k - 1]->lora_b);
    /* B = 0: the output is the base model's, bit for bit */
    double *with = hidden_of(m, tok, &n);
    assert_same(with, base, n);
    /* attaching twice is an error */
    assert_int_equal(cg_lora_attach(m, &c), CG_ERR_INVALID_ARG);
    assert_error_contains("already has LoRA adapters");
    free(base);
    free(with);
    cg_model_free(m);
}

static void test_attach_init_and_b_zero(void **state) {
    (void)state;
    check_attach("gpt2:tiny", 8);   /* 2 layers x (c_attn, attn.c_proj, c_fc, mlp.c_proj) */
    check_attach("llama:tiny", 14); /* 2 layers x 7 */
}

static void test_targets(void **state) {
    (void)state;
    struct { const char *preset, *targets; int n; } cases[] = {
        {"gpt2:tiny", NULL, 2},           {"gpt2:tiny", "c_proj", 4},         {"gpt2:tiny", "attn.c_proj", 2},
        {"gpt2:tiny", "all-linear", 8},   {"gpt2:tiny", "h.1.mlp.c_fc", 1},   {"llama:tiny", NULL, 4},
        {"llama:tiny", "q, v", 4},        {"llama:tiny", "gate_proj,up", 4},  {"llama:tiny", "all-linear", 14},
        {"llama:tiny", "layers.0.self_attn.o_proj", 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cg_model *m = tiny(cases[i].preset, 1);
        cg_lora_config c = lora_cfg(cases[i].targets, 2, 2.0f);
        assert_ok(cg_lora_attach(m, &c));
        assert_int_equal(cg_lora_modules(m, NULL, 0), cases[i].n);
        cg_model_free(m);
    }
    /* unknown names: the message lists the valid ones, and the model is untouched */
    cg_model *m = tiny("gpt2:tiny", 1);
    int np = m->n_params;
    cg_lora_config c = lora_cfg("c_attn,q", 4, 4.0f);
    assert_int_equal(cg_lora_attach(m, &c), CG_ERR_INVALID_ARG);
    assert_error_contains("target 'q' matches no linear layer of gpt2:tiny (valid: c_attn, c_proj, c_fc");
    assert_int_equal(m->n_params, np);
    assert_false(cg_lora_attached(m));
    assert_true(m->params[0].tensor->requires_grad);
    c.targets = "c_at";
    assert_int_equal(cg_lora_attach(m, &c), CG_ERR_INVALID_ARG);
    assert_error_contains("'c_at'");
    c.targets = " , ";
    assert_int_equal(cg_lora_attach(m, &c), CG_ERR_INVALID_ARG);
    assert_error_contains("empty target list");
    c = lora_cfg(GPT2_ALL, 0, 4.0f);
    assert_int_equal(cg_lora_attach(m, &c), CG_ERR_INVALID_ARG);
    assert_error_contains("rank r = 0");
    c = lora_cfg(GPT2_ALL, 4, 4.0f);
    c.dropout = 1.0f;
    assert_int_equal(cg_lora_attach(m, &c), CG_ERR_INVALID_ARG);
    assert_error_contains("dropout 1 outside [0, 1)");
    cg_model_free(m);
    m = tiny("llama:tiny", 1);
    c = lora_cfg("q,c_fc", 4, 4.0f);
    assert_int_equal(cg_lora_attach(m, &c), CG_ERR_INVALID_ARG);
    assert_error_contains("target 'c_fc' matches no linear layer of llama:tiny (valid: q, k, v, o, gate, up, down");
    cg_model_free(m);
}

/* ------------------------------------------------------------------ the adapted forward */

/* The adapted model against a copy of the base model whose targeted weights the test moves by scale * B A,
 * summed in double: this checks the scale, the layouts of A and B and which layers are adapted. Then disable
 * (the base, bit for bit), merge (within fp32 rounding of the hand-merged model) and unmerge. */
static void check_adapted_forward(const char *preset) {
    cg_model *m = tiny(preset, 4), *hand = tiny(preset, 4), *base = tiny(preset, 4);
    cg_tensor *tok = cg_test_random_tokens(2, 9, 6, m->cfg.vocab_size);
    int64_t n = 0;
    double *h_base = hidden_of(base, tok, &n);
    cg_lora_config c = lora_cfg(all_targets(preset), 4, 12.0f); /* scale 3 */
    assert_ok(cg_lora_attach(m, &c));
    randomize_b(m, 8, 0.1f);
    cg_linear_module *mods[64];
    int k = adapted(m, mods);
    for (int i = 0; i < k; i++) {
        char name[128];
        snprintf(name, sizeof name, "%s.weight", mods[i]->name);
        cg_tensor *w = cg_model_find_param(hand, name);
        assert_non_null(w);
        int64_t out = w->shape[0], in = w->shape[1], r = 4;
        for (int64_t o = 0; o < out; o++)
            for (int64_t j = 0; j < in; j++) {
                double d = 0;
                for (int64_t q = 0; q < r; q++)
                    d += cg_get_flat(mods[i]->lora_b, o * r + q) * cg_get_flat(mods[i]->lora_a, q * in + j);
                cg_set_flat(w, o * in + j, cg_get_flat(w, o * in + j) + 3.0 * d);
            }
    }
    double *h_lora = hidden_of(m, tok, &n), *h_hand = hidden_of(hand, tok, &n);
    double diff_base = max_abs_diff(h_lora, h_base, n), diff_hand = max_abs_diff(h_lora, h_hand, n);
    print_message("%s: adapted vs base %.3g, adapted vs hand-merged %.3g\n", preset, diff_base, diff_hand);
    assert_true(diff_base > 0.05);  /* the adapters change the output */
    assert_true(diff_hand < 2e-5);  /* ... by exactly scale * B A */

    /* disabled: the base model bit for bit (the reference policy); enabled again: the adapted output */
    cg_lora_set_enabled(m, false);
    double *h_off = hidden_of(m, tok, &n);
    assert_same(h_off, h_base, n);
    cg_lora_set_enabled(m, true);
    double *h_on = hidden_of(m, tok, &n);
    assert_same(h_on, h_lora, n);

    /* merged equals unmerged (fp32 rounding of W + s B A and of the two-path sum) */
    float *w_before = malloc(sizeof(float) * 1000000);
    int64_t nw = 0;
    for (int i = 0; i < k; i++)
        for (int64_t e = 0; e < cg_numel(mods[i]->weight); e++) w_before[nw++] = (float)cg_get_flat(mods[i]->weight, e);
    assert_ok(cg_lora_merge(m));
    assert_int_equal(cg_lora_merge(m), CG_ERR_INVALID_ARG);
    assert_error_contains("already merged");
    double *h_merged = hidden_of(m, tok, &n);
    double diff_merged = max_abs_diff(h_merged, h_lora, n);
    print_message("%s: merged vs unmerged forward: max abs diff %.3g\n", preset, diff_merged);
    assert_true(diff_merged < 2e-5);
    assert_true(max_abs_diff(h_merged, h_hand, n) < 2e-5);
    /* unmerge: W back within rounding: |W' - W| <= 2 ulp of max(|W|, |W merged|) */
    double w_merged_max[64];
    for (int i = 0; i < k; i++) {
        w_merged_max[i] = 0;
        for (int64_t e = 0; e < cg_numel(mods[i]->weight); e++)
            w_merged_max[i] = fmax(w_merged_max[i], fabs(cg_get_flat(mods[i]->weight, e)));
    }
    assert_ok(cg_lora_unmerge(m));
    assert_int_equal(cg_lora_unmerge(m), CG_ERR_INVALID_ARG);
    assert_error_contains("not merged");
    int64_t at = 0, exact = 0;
    double worst = 0;
    for (int i = 0; i < k; i++)
        for (int64_t e = 0; e < cg_numel(mods[i]->weight); e++, at++) {
            double w = cg_get_flat(mods[i]->weight, e), w0 = w_before[at];
            double ulp = ldexp(1.0, ilogb(fmax(fabs(w0), w_merged_max[i])) - 23);
            worst = fmax(worst, fabs(w - w0) / ulp);
            exact += w == w0;
        }
    print_message("%s: unmerge: %lld of %lld weights bit-exact, worst %.2f ulp\n", preset, (long long)exact,
                  (long long)nw, worst);
    assert_true(worst <= 2.0);
    double *h_unmerged = hidden_of(m, tok, &n);
    assert_true(max_abs_diff(h_unmerged, h_lora, n) < 2e-5);
    /* disabling while merged unmerges first, so the disabled model is still the base */
    assert_ok(cg_lora_merge(m));
    cg_lora_set_enabled(m, false);
    assert_false(m->lora_merged);
    double *h_off2 = hidden_of(m, tok, &n);
    assert_true(max_abs_diff(h_off2, h_base, n) < 2e-5);
    assert_int_equal(cg_lora_merge(m), CG_ERR_INVALID_ARG);
    assert_error_contains("disabled");
    cg_lora_set_enabled(m, true);
    assert_int_equal(cg_lora_merge(base), CG_ERR_INVALID_ARG);
    assert_error_contains("no LoRA adapters");

    free(w_before);
    free(h_base), free(h_lora), free(h_hand), free(h_off), free(h_on), free(h_merged), free(h_unmerged), free(h_off2);
    cg_model_free(m), cg_model_free(hand), cg_model_free(base);
}

static void test_adapted_forward_disable_merge(void **state) {
    (void)state;
    check_adapted_forward("gpt2:tiny");
    check_adapted_forward("llama:tiny");
}

/* rsLoRA: scale alpha / sqrt(r). r = 4, alpha = 8 -> 4, the same as plain LoRA with alpha 16: same output. */
static void test_rslora_scale(void **state) {
    (void)state;
    cg_lora_config c = lora_cfg(LLAMA_ALL, 16, 32.0f);
    assert_true(cg_lora_scale(&c) == 2.0f);
    c.rslora = true;
    assert_true(cg_lora_scale(&c) == 8.0f);
    cg_lora_config t = cg_lora_config_tina();
    assert_int_equal(t.rank, 32);
    assert_true(t.alpha == 128.0f && t.dropout == 0.05f && cg_lora_scale(&t) == 4.0f);
    cg_model *a = tiny("llama:tiny", 2), *b = tiny("llama:tiny", 2);
    c = lora_cfg(LLAMA_ALL, 4, 8.0f);
    c.rslora = true;
    assert_ok(cg_lora_attach(a, &c));
    c.rslora = false;
    c.alpha = 16.0f;
    assert_ok(cg_lora_attach(b, &c));
    cg_linear_module *ma[64], *mb[64];
    assert_int_equal(adapted(a, ma), adapted(b, mb));
    assert_true(ma[0]->lora_scale == 4.0f && mb[0]->lora_scale == 4.0f);
    randomize_b(a, 3, 0.1f);
    randomize_b(b, 3, 0.1f);
    cg_tensor *tok = cg_test_random_tokens(1, 6, 9, 64);
    int64_t n;
    double *ha = hidden_of(a, tok, &n), *hb = hidden_of(b, tok, &n);
    assert_same(ha, hb, n);
    free(ha), free(hb);
    cg_model_free(a), cg_model_free(b);
}

/* Dropout on the adapter input acts only with grad mode on: no-grad passes equal a dropout-free adapter. */
static void test_dropout_training_only(void **state) {
    (void)state;
    cg_model *m = tiny("gpt2:tiny", 6);
    cg_lora_config c = lora_cfg(GPT2_ALL, 4, 8.0f);
    c.dropout = 0.5f;
    assert_ok(cg_lora_attach(m, &c));
    randomize_b(m, 4, 0.2f);
    cg_tensor *tok = cg_test_random_tokens(2, 5, 3, 64);
    int64_t n;
    double *eval1 = hidden_of(m, tok, &n), *eval2 = hidden_of(m, tok, &n);
    assert_same(eval1, eval2, n);
    cg_model_inputs in = {.tokens = tok};
    cg_tensor *t1 = cg_model_forward(m, &in), *t2 = cg_model_forward(m, &in);
    assert_non_null(t1);
    assert_non_null(t2);
    double *train1 = cg_test_values(t1), *train2 = cg_test_values(t2);
    assert_true(max_abs_diff(train1, eval1, n) > 1e-3); /* masks change the training forward */
    assert_true(max_abs_diff(train1, train2, n) > 1e-3); /* ... a fresh mask per call */
    /* the no-grad output is the dropout-free adapter's */
    cg_linear_module *mods[64];
    int k = adapted(m, mods);
    for (int i = 0; i < k; i++) mods[i]->lora_dropout = 0.0f;
    cg_tensor *t3 = cg_model_forward(m, &in);
    double *train_nodrop = cg_test_values(t3);
    assert_same(train_nodrop, eval1, n);
    free(eval1), free(eval2), free(train1), free(train2), free(train_nodrop);
    cg_model_free(m);
}

/* ------------------------------------------------------------------ gradients */

typedef struct loss_ctx {
    cg_model *m;
    cg_tensor *tok, *targets;
} loss_ctx;

static cg_tensor *model_loss(cg_tensor *const *inputs, void *user) {
    (void)inputs; /* the inputs are the model's own adapter tensors */
    loss_ctx *c = user;
    cg_model_inputs in = {.tokens = c->tok};
    cg_tensor *h = cg_model_forward(c->m, &in);
    return h ? cg_model_loss(c->m, h, c->targets) : NULL;
}

static void check_gradients(const char *preset) {
    cg_model *m = tiny(preset, 12);
    cg_lora_config c = lora_cfg(all_targets(preset), 4, 8.0f);
    assert_ok(cg_lora_attach(m, &c));
    loss_ctx ctx = {m, cg_test_random_tokens(2, 6, 13, 64), cg_test_random_tokens(2, 6, 14, 64)};
    cg_tensor *train[128];
    int nt = cg_model_trainable(m, train, 128);
    cg_linear_module *mods[64];
    int k = adapted(m, mods);
    assert_int_equal(nt, 2 * k);
    /* step 0 (B = 0): only B gets a gradient, dL/dA = scale * B^T (...) = 0 exactly; the base gets none */
    cg_tensor *loss = model_loss(NULL, &ctx);
    assert_non_null(loss);
    assert_ok(cg_backward(loss));
    for (int i = 0; i < k; i++) {
        double sa = 0, sb = 0;
        for (int64_t e = 0; e < cg_numel(mods[i]->lora_a); e++) sa += fabs(cg_get_flat(mods[i]->lora_a->grad, e));
        for (int64_t e = 0; e < cg_numel(mods[i]->lora_b); e++) sb += fabs(cg_get_flat(mods[i]->lora_b->grad, e));
        assert_true(sa == 0.0);
        assert_true(sb > 0.0);
    }
    for (int i = 0; i < m->n_params; i++) {
        cg_tensor *t = m->params[i].tensor;
        if (m->params[i].adapter) continue;
        assert_false(t->requires_grad);
        if (t->grad)
            for (int64_t e = 0; e < cg_numel(t); e++) assert_true(cg_get_flat(t->grad, e) == 0.0);
    }
    cg_step_end();

    /* one SGD step on the adapters lowers the loss by about lr * |g|^2 (first order) */
    cg_zero_grads(nt, train);
    ctx.tok = cg_test_random_tokens(2, 6, 13, 64), ctx.targets = cg_test_random_tokens(2, 6, 14, 64);
    randomize_b(m, 5, 0.05f);
    loss = model_loss(NULL, &ctx);
    double l0 = cg_get_flat(loss, 0), g2 = 0;
    assert_ok(cg_backward(loss));
    const float lr = 0.02f;
    for (int i = 0; i < nt; i++)
        for (int64_t e = 0; e < cg_numel(train[i]); e++) {
            double g = cg_get_flat(train[i]->grad, e);
            g2 += g * g;
            cg_set_flat(train[i], e, cg_get_flat(train[i], e) - lr * g);
        }
    cg_step_end();
    ctx.tok = cg_test_random_tokens(2, 6, 13, 64), ctx.targets = cg_test_random_tokens(2, 6, 14, 64);
    cg_no_grad_enter();
    double l1 = cg_get_flat(model_loss(NULL, &ctx), 0);
    cg_no_grad_exit();
    print_message("%s: SGD step on the adapters: loss %.6f -> %.6f (first order predicts %.6f)\n", preset, l0, l1,
                  l0 - lr * g2);
    assert_true(l1 < l0);
    assert_close(l0 - l1, lr * g2, 0.25, 0);

    /* gradcheck of a sample of every A and B through the whole model */
    cg_step_end();
    cg_zero_grads(nt, train);
    ctx.tok = cg_test_random_tokens(2, 5, 21, 64), ctx.targets = cg_test_random_tokens(2, 5, 22, 64);
    cg_gradcheck_opts o = {.eps = 1e-2, .rtol = 2e-2, .atol = 2e-4, .max_per_input = 4};
    cg_gradcheck_result r;
    assert_ok(cg_gradcheck(model_loss, &ctx, nt, train, &o, &r));
    if (!r.passed)
        print_error("%s: %lld of %lld failed; worst %s[%lld]: analytic %g numeric %g\n", preset, (long long)r.failures,
                    (long long)r.checked, train[r.worst_input]->name, (long long)r.worst_index, r.worst_analytic,
                    r.worst_numeric);
    assert_true(r.passed);
    print_message("%s: gradcheck of %lld adapter elements over %d tensors, max abs error %.2g\n", preset,
                  (long long)r.checked, nt, r.max_abs_err);
    cg_model_free(m);
}

static void test_gradients_only_adapters(void **state) {
    (void)state;
    check_gradients("gpt2:tiny");
    check_gradients("llama:tiny");
}

/* ------------------------------------------------------------------ save and load */

static char tmpdir[64];

static void make_tmpdir(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/cg_test_lora_XXXXXX");
    assert_non_null(mkdtemp(tmpdir));
}

static void path_in(char *buf, size_t n, const char *file) { snprintf(buf, n, "%s/%s", tmpdir, file); }

static void remove_tmpdir(void) {
    char p[128];
    path_in(p, sizeof p, "adapter_model.safetensors");
    remove(p);
    path_in(p, sizeof p, "adapter_config.json");
    remove(p);
    rmdir(tmpdir);
}

static void check_round_trip(const char *preset, const char *targets, const char *want_targets[], int n_want,
                             bool rslora, float dropout) {
    make_tmpdir();
    cg_model *m = tiny(preset, 31), *fresh = tiny(preset, 31);
    cg_lora_config c = lora_cfg(targets, 4, 16.0f);
    c.rslora = rslora;
    c.dropout = dropout;
    assert_ok(cg_lora_attach(m, &c));
    randomize_b(m, 9, 0.1f);
    assert_ok(cg_lora_save(m, &c, tmpdir));
    /* the safetensors file: PEFT names, [r, in] and [out, r], f32, metadata format = pt */
    char p[128];
    path_in(p, sizeof p, "adapter_model.safetensors");
    cg_safetensors *st = NULL;
    assert_ok(cg_safetensors_open(p, &st));
    cg_linear_module *mods[64];
    int k = adapted(m, mods);
    assert_int_equal(cg_safetensors_count(st), 2 * k);
    assert_string_equal(cg_safetensors_metadata(st, "format"), "pt");
    bool gpt2 = m->cfg.arch == CG_ARCH_GPT2;
    for (int i = 0; i < k; i++) {
        char name[160];
        for (int ab = 0; ab < 2; ab++) {
            snprintf(name, sizeof name, "base_model.model.%s%s.lora_%c.weight", gpt2 ? "transformer." : "",
                     mods[i]->name, ab ? 'B' : 'A');
            const cg_safetensors_entry *e = cg_safetensors_find(st, name);
            if (!e) print_error("no tensor %s\n", name);
            assert_non_null(e);
            assert_string_equal(e->dtype_name, "F32");
            assert_int_equal(e->ndim, 2);
            assert_int_equal(e->shape[0], ab ? mods[i]->weight->shape[0] : 4);             /* B [out, r] */
            assert_int_equal(e->shape[1], ab ? 4 : mods[i]->weight->shape[1]);             /* A [r, in] */
        }
    }
    cg_safetensors_close(st);
    /* the config: PEFT's keys and values */
    path_in(p, sizeof p, "adapter_config.json");
    cJSON *js = NULL;
    assert_ok(cg_json_read_file(p, &js));
    const char *s;
    assert_ok(cg_json_get_string(js, "peft_type", p, &s));
    assert_string_equal(s, "LORA");
    assert_ok(cg_json_get_string(js, "task_type", p, &s));
    assert_string_equal(s, "CAUSAL_LM");
    assert_ok(cg_json_get_string(js, "bias", p, &s));
    assert_string_equal(s, "none");
    assert_ok(cg_json_get_string(js, "base_model_name_or_path", p, &s));
    assert_string_equal(s, preset);
    int64_t r;
    double v;
    bool b;
    assert_ok(cg_json_get_int(js, "r", p, &r));
    assert_int_equal(r, 4);
    assert_ok(cg_json_get_double(js, "lora_alpha", p, &v));
    assert_true(v == 16.0);
    assert_ok(cg_json_get_double(js, "lora_dropout", p, &v));
    assert_true((float)v == dropout);
    assert_ok(cg_json_get_bool(js, "use_rslora", p, &b));
    assert_true(b == rslora);
    assert_ok(cg_json_get_bool(js, "fan_in_fan_out", p, &b));
    assert_true(b == gpt2); /* GPT-2's Conv1D stores W as [in, out] */
    assert_ok(cg_json_get_bool(js, "init_lora_weights", p, &b));
    assert_true(b);
    const cJSON *tm = cJSON_GetObjectItemCaseSensitive(js, "target_modules");
    assert_int_equal(cJSON_GetArraySize(tm), n_want);
    for (int i = 0; i < n_want; i++) assert_string_equal(cJSON_GetArrayItem(tm, i)->valuestring, want_targets[i]);
    assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(js, "modules_to_save")));
    cJSON_Delete(js);

    /* load into a fresh copy of the base: every adapter weight and the output bit for bit */
    assert_ok(cg_lora_load(fresh, tmpdir));
    cg_linear_module *fm[64];
    assert_int_equal(adapted(fresh, fm), k);
    for (int i = 0; i < k; i++) {
        assert_string_equal(fm[i]->name, mods[i]->name);
        assert_true(fm[i]->lora_scale == mods[i]->lora_scale && fm[i]->lora_dropout == mods[i]->lora_dropout);
        assert_memory_equal(cg_data(fm[i]->lora_a), cg_data(mods[i]->lora_a), cg_nbytes(mods[i]->lora_a));
        assert_memory_equal(cg_data(fm[i]->lora_b), cg_data(mods[i]->lora_b), cg_nbytes(mods[i]->lora_b));
    }
    assert_int_equal(cg_model_trainable(fresh, NULL, 0), 2 * k);
    cg_tensor *tok = cg_test_random_tokens(2, 6, 17, 64);
    int64_t n;
    double *h1 = hidden_of(m, tok, &n), *h2 = hidden_of(fresh, tok, &n);
    assert_same(h1, h2, n);
    /* the config read back */
    char tbuf[256];
    cg_lora_config back;
    assert_ok(cg_lora_config_read(p, &back, tbuf, sizeof tbuf));
    assert_int_equal(back.rank, 4);
    assert_true(back.alpha == 16.0f && back.rslora == rslora && back.dropout == dropout);
    /* loading twice is an error */
    assert_int_equal(cg_lora_load(fresh, tmpdir), CG_ERR_INVALID_ARG);
    assert_error_contains("already has LoRA adapters");
    /* a config that does not describe the adapters is refused */
    c.rank = 8;
    assert_int_equal(cg_lora_save(m, &c, tmpdir), CG_ERR_INVALID_ARG);
    assert_error_contains("has rank 4");
    free(h1), free(h2);
    cg_model_free(m), cg_model_free(fresh);
    remove_tmpdir();
}

static void test_save_load_round_trip(void **state) {
    (void)state;
    const char *g[] = {"c_attn", "c_proj", "c_fc"};
    check_round_trip("gpt2:tiny", GPT2_ALL, g, 3, false, 0.0f);
    check_round_trip("gpt2:tiny", "all-linear", g, 3, true, 0.1f);
    const char *a[] = {"attn.c_proj"};
    check_round_trip("gpt2:tiny", "attn.c_proj", a, 1, false, 0.0f);
    const char *l[] = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
    check_round_trip("llama:tiny", LLAMA_ALL, l, 7, false, 0.05f);
    check_round_trip("llama:tiny", "all-linear", l, 7, true, 0.0f);
}

/* ------------------------------------------------------------------ malformed adapter files */

static void write_text(const char *file, const char *text) {
    char p[128];
    path_in(p, sizeof p, file);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* An adapter_model.safetensors for gpt2:tiny's c_attn layers (in 64, out 192) with rank 2, with a choice of
 * what to break: 0 nothing, 1 drop a tensor, 2 a wrong shape, 3 an extra tensor. */
static void write_c_attn_adapter(int broken) {
    const char *names[5] = {"base_model.model.transformer.h.0.attn.c_attn.lora_A.weight",
                            "base_model.model.transformer.h.0.attn.c_attn.lora_B.weight",
                            "base_model.model.transformer.h.1.attn.c_attn.lora_A.weight",
                            "base_model.model.transformer.h.1.attn.c_attn.lora_B.weight",
                            "base_model.model.lm_head.lora_A.weight"};
    int64_t sa[2] = {2, 64}, sb[2] = {192, 2}, sbad[2] = {3, 64};
    const cg_tensor *t[5] = {cg_test_rand_tensor(2, sa, 1, 0.1f, 0, false), cg_test_rand_tensor(2, sb, 2, 0.1f, 0, false),
                             cg_test_rand_tensor(2, broken == 2 ? sbad : sa, 3, 0.1f, 0, false),
                             cg_test_rand_tensor(2, sb, 4, 0.1f, 0, false), cg_test_rand_tensor(2, sa, 5, 0.1f, 0, false)};
    char p[128];
    path_in(p, sizeof p, "adapter_model.safetensors");
    int n = broken == 1 ? 3 : broken == 3 ? 5 : 4;
    assert_ok(cg_safetensors_write(p, n, names, t, 0, NULL, NULL));
}

static const char *good_config = "{\"peft_type\": \"LORA\", \"r\": 2, \"lora_alpha\": 4, \"target_modules\": "
                                 "[\"c_attn\"], \"bias\": \"none\", \"task_type\": \"CAUSAL_LM\"}";

/* Loading fails with a message containing `want`, and leaves the model without adapters. */
static void expect_load_error(cg_model *m, cg_status status, const char *want) {
    int np = m->n_params;
    cg_status s = cg_lora_load(m, tmpdir);
    if (s != status) print_error("status %d (%s), expected %d\n", s, cg_last_error(), status);
    assert_int_equal(s, status);
    assert_error_contains(want);
    assert_int_equal(m->n_params, np);
    assert_false(cg_lora_attached(m));
    assert_true(m->params[0].tensor->requires_grad);
}

static void test_malformed_adapters(void **state) {
    (void)state;
    make_tmpdir();
    cg_model *m = tiny("gpt2:tiny", 40);
    /* no files at all */
    expect_load_error(m, CG_ERR_IO, "adapter_config.json");
    write_c_attn_adapter(0);
    struct { const char *json; cg_status status; const char *want; } cases[] = {
        {"{\"peft_type\": \"LORA\", \"lora_alpha\": 4, \"target_modules\": [\"c_attn\"]}", CG_ERR_FORMAT, "'r'"},
        {"{\"peft_type\": \"LORA\", \"r\": 0, \"target_modules\": [\"c_attn\"]}", CG_ERR_FORMAT, "r = 0 must be a positive"},
        {"{\"peft_type\": \"LORA\", \"r\": -3, \"target_modules\": [\"c_attn\"]}", CG_ERR_FORMAT, "r = -3"},
        {"{\"peft_type\": \"LORA\", \"r\": 2.5, \"target_modules\": [\"c_attn\"]}", CG_ERR_FORMAT, "'r'"},
        {"{\"peft_type\": \"LORA\", \"r\": 2, \"target_modules\": [\"q_proj\"]}", CG_ERR_INVALID_ARG,
         "target 'q_proj' matches no linear layer of gpt2:tiny (valid: c_attn"},
        {"{\"peft_type\": \"PREFIX_TUNING\", \"r\": 2, \"target_modules\": [\"c_attn\"]}", CG_ERR_UNSUPPORTED,
         "peft_type is 'PREFIX_TUNING'"},
        {"{\"r\": 2, \"target_modules\": [\"c_attn\"]}", CG_ERR_FORMAT, "'peft_type'"},
        {"{\"peft_type\": \"LORA\", \"r\": 2, \"target_modules\": \".*c_attn\"}", CG_ERR_UNSUPPORTED,
         "regular expression '.*c_attn'"},
        {"{\"peft_type\": \"LORA\", \"r\": 2, \"target_modules\": []}", CG_ERR_FORMAT, "target_modules is empty"},
        {"{\"peft_type\": \"LORA\", \"r\": 2, \"target_modules\": [\"c_attn\"], \"lora_dropout\": 1.5}", CG_ERR_FORMAT,
         "lora_dropout 1.5 outside [0, 1)"},
        {"{\"peft_type\": \"LORA\", \"r\": 2, \"target_modules\": [\"c_attn\"], \"use_dora\": true}", CG_ERR_UNSUPPORTED,
         "use_dora"},
        {"{\"peft_type\": \"LORA\", \"r\": 2, \"target_modules\": [\"c_attn\"], \"modules_to_save\": [\"lm_head\"]}",
         CG_ERR_UNSUPPORTED, "'modules_to_save' is set"},
        {"{\"peft_type\": \"LORA\", \"r\": 2, \"r\": 3, \"target_modules\": [\"c_attn\"]}", CG_ERR_FORMAT, "'r'"},
        {"[1, 2]", CG_ERR_FORMAT, "not an object"},
        {"{\"peft_type\": \"LORA\", \"r\": 2,", CG_ERR_FORMAT, "adapter_config.json"},
        /* a valid config whose rank does not match the file's tensors */
        {"{\"peft_type\": \"LORA\", \"r\": 3, \"target_modules\": [\"c_attn\"]}", CG_ERR_SHAPE,
         "tensor 'base_model.model.transformer.h.0.attn.c_attn.lora_A.weight' has shape [2, 64], expected [3, 64]"},
        /* a config targeting more layers than the file holds */
        {"{\"peft_type\": \"LORA\", \"r\": 2, \"target_modules\": [\"c_attn\", \"c_fc\"]}", CG_ERR_FORMAT,
         "has no tensor 'base_model.model.transformer.h.0.mlp.c_fc.lora_A.weight'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        write_text("adapter_config.json", cases[i].json);
        expect_load_error(m, cases[i].status, cases[i].want);
    }
    /* broken tensor files under a good config */
    write_text("adapter_config.json", good_config);
    write_c_attn_adapter(1);
    expect_load_error(m, CG_ERR_FORMAT, "has no tensor 'base_model.model.transformer.h.1.attn.c_attn.lora_B.weight'");
    write_c_attn_adapter(2);
    expect_load_error(m, CG_ERR_SHAPE, "has shape [3, 64], expected [2, 64]");
    write_c_attn_adapter(3);
    expect_load_error(m, CG_ERR_FORMAT, "tensor 'base_model.model.lm_head.lora_A.weight' is not a LoRA weight");
    write_text("adapter_model.safetensors", "not a safetensors file");
    expect_load_error(m, CG_ERR_FORMAT, "adapter_model.safetensors");
    /* and the good pair loads, with alpha 4 / r 2 */
    write_c_attn_adapter(0);
    assert_ok(cg_lora_load(m, tmpdir));
    cg_linear_module *mods[64];
    assert_int_equal(adapted(m, mods), 2);
    assert_true(mods[0]->lora_scale == 2.0f);
    assert_string_equal(mods[1]->name, "h.1.attn.c_attn");
    cg_model_free(m);
    remove_tmpdir();
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_attach_init_and_b_zero, cg_test_teardown),
        cmocka_unit_test_teardown(test_targets, cg_test_teardown),
        cmocka_unit_test_teardown(test_adapted_forward_disable_merge, cg_test_teardown),
        cmocka_unit_test_teardown(test_rslora_scale, cg_test_teardown),
        cmocka_unit_test_teardown(test_dropout_training_only, cg_test_teardown),
        cmocka_unit_test_teardown(test_gradients_only_adapters, cg_test_teardown),
        cmocka_unit_test_teardown(test_save_load_round_trip, cg_test_teardown),
        cmocka_unit_test_teardown(test_malformed_adapters, cg_test_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
