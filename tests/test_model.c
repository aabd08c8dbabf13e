/* The transformer: presets and parameter counts, the forward pass against a hand composition of the ops
 * for a tiny model of each family (attention written out as matmul + causal mask + softmax), gradcheck
 * through both, the KV cache against full recomputation, left padding, and argument errors. */
#include "test_util.h"

static cg_model *tiny(const char *preset, uint64_t seed) { return cg_test_tiny_model(preset, seed, 1000); }

static void test_presets_and_counts(void **state) {
    (void)state;
    for (int i = 0; i < cg_model_preset_count(); i++) {
        cg_model_config c;
        assert_ok(cg_model_config_preset(cg_model_preset_name(i), &c));
        assert_ok(cg_model_config_validate(&c));
    }
    cg_model_config c;
    /* published parameter counts */
    assert_ok(cg_model_config_preset("gpt2:d12", &c));
    assert_int_equal(cg_model_config_num_elements(&c), 124475904); /* llm.c, padded vocabulary */
    assert_ok(cg_model_config_preset("qwen2.5-0.5b", &c));
    assert_int_equal(cg_model_config_num_elements(&c), 494032768);
    assert_ok(cg_model_config_preset("llama3.2-1b", &c));
    assert_int_equal(cg_model_config_num_elements(&c), 1235814400);
    assert_ok(cg_model_config_preset("gpt2:tiny", &c));
    assert_true(cg_model_config_num_elements(&c) < 1000000);
    assert_ok(cg_model_config_preset("llama:tiny", &c));
    assert_true(cg_model_config_num_elements(&c) < 1000000);
    assert_int_equal(cg_model_config_preset("gpt3:d12", &c), CG_ERR_INVALID_ARG);
    assert_error_contains("unknown model preset 'gpt3:d12'");
    c.n_kv_head = 3; /* llama:tiny has 4 heads */
    assert_int_equal(cg_model_config_validate(&c), CG_ERR_INVALID_ARG);
    assert_error_contains("not a multiple of n_kv_head 3");
    /* a created model holds exactly the elements its config describes */
    cg_model *m = tiny("llama:tiny", 1);
    assert_ok(cg_model_config_preset("llama:tiny", &c));
    assert_int_equal(cg_model_num_elements(m), cg_model_config_num_elements(&c));
    assert_non_null(cg_model_find_param(m, "model.layers.1.self_attn.k_proj.weight"));
    assert_non_null(cg_model_find_param(m, "lm_head.weight"));
    cg_model_free(m);
    m = tiny("gpt2:tiny", 1);
    assert_non_null(cg_model_find_param(m, "h.0.attn.c_attn.bias"));
    assert_null(cg_model_find_param(m, "lm_head.weight")); /* tied */
    cg_model_free(m);
}

/* Init: N(0, 0.02), residual projections 0.02 / sqrt(2 L), norms 1, biases 0. */
static void test_init_statistics(void **state) {
    (void)state;
    cg_model_config c;
    assert_ok(cg_model_config_preset("gpt2:d2", &c));
    cg_model *m = NULL;
    assert_ok(cg_model_create(&c, CG_CPU, 7, &m));
    struct { const char *name; double std; } want[] = {
        {"wte.weight", 0.02}, {"h.0.attn.c_attn.weight", 0.02}, {"h.1.mlp.c_proj.weight", 0.02 / sqrt(4.0)},
        {"h.0.attn.c_proj.weight", 0.02 / sqrt(4.0)}};
    for (int k = 0; k < 4; k++) {
        cg_tensor *t = cg_model_find_param(m, want[k].name);
        assert_non_null(t);
        int64_t n = k == 0 ? 50257 * 128 : cg_numel(t); /* the embedding's padded rows are zero */
        double s2 = 0;
        for (int64_t i = 0; i < n; i++) s2 += cg_get_flat(t, i) * cg_get_flat(t, i);
        assert_close(sqrt(s2 / (double)n), want[k].std, 0.03, 0);
    }
    assert_true(cg_get_flat(m->wte, 50300LL * 128) == 0.0);
    assert_true(cg_get_flat(cg_model_find_param(m, "h.0.ln_1.weight"), 5) == 1.0);
    assert_true(cg_get_flat(cg_model_find_param(m, "h.0.mlp.c_fc.bias"), 5) == 0.0);
    cg_model_free(m);
}

/* ------------------------------------------------------------------ the hand composition */

/* Causal attention without cg_attention: softmax(q k^T * scale + mask) v per head, kv heads repeated. */
static cg_tensor *hand_attention(const cg_tensor *q, const cg_tensor *k, const cg_tensor *v, int64_t H, int64_t Hkv) {
    int64_t B = q->shape[0], T = q->shape[2], D = q->shape[3];
    cg_tensor *outs[64];
    assert_true(H <= 64);
    int64_t ms[2] = {T, T};
    cg_tensor *mask = cg_tensor_empty(cg_step_arena(CG_CPU), CG_F32, 2, ms);
    for (int64_t i = 0; i < T; i++)
        for (int64_t j = 0; j < T; j++) cg_set_flat(mask, i * T + j, j <= i ? 0.0 : -1e30);
    for (int64_t h = 0; h < H; h++) {
        int64_t g = h / (H / Hkv);
        cg_tensor *qh = cg_slice(q, 1, h, h + 1, 1), *kh = cg_slice(k, 1, g, g + 1, 1), *vh = cg_slice(v, 1, g, g + 1, 1);
        cg_tensor *scores = cg_add(cg_scale(cg_matmul_t(qh, kh, false, true), 1.0f / sqrtf((float)D)), mask);
        outs[h] = cg_matmul(cg_softmax(scores, -1), vh); /* [B, 1, T, D] */
    }
    (void)B;
    return cg_concat((int)H, (const cg_tensor *const *)outs, 1);
}

/* x [B, T, C] -> [B, H, T, D] */
static cg_tensor *heads(const cg_tensor *x, int64_t H) {
    int64_t B = x->shape[0], T = x->shape[1], D = x->shape[2] / H;
    int64_t s[4] = {B, T, H, D};
    return cg_transpose(cg_reshape(x, 4, s), 1, 2);
}

static cg_tensor *merge(const cg_tensor *x) {
    int64_t B = x->shape[0], H = x->shape[1], T = x->shape[2], D = x->shape[3];
    int64_t s[3] = {B, T, H * D};
    return cg_reshape(cg_transpose(x, 1, 2), 3, s);
}

static cg_tensor *lin(const cg_tensor *x, const cg_tensor *w, const cg_tensor *b) {
    cg_tensor *y = cg_matmul_t(x, w, false, true);
    return b ? cg_add(y, b) : y;
}

static cg_tensor *P(const cg_model *m, const char *fmt, long long l) {
    char name[128];
    snprintf(name, sizeof name, fmt, l);
    cg_tensor *t = cg_model_find_param(m, name);
    if (!t) print_error("no parameter %s\n", name);
    assert_non_null(t);
    return t;
}

static cg_tensor *hand_forward(const cg_model *m, const cg_tensor *tokens) {
    const cg_model_config *c = &m->cfg;
    int64_t T = tokens->shape[1], H = c->n_head, Hkv = c->n_kv_head;
    bool gpt2 = c->arch == CG_ARCH_GPT2;
    cg_tensor *x = cg_embedding(gpt2 ? P(m, "wte.weight", 0) : P(m, "model.embed_tokens.weight", 0), tokens);
    if (gpt2) {
        int64_t s2[2] = {1, T};
        cg_tensor *pos = cg_tensor_empty(cg_step_arena(CG_CPU), CG_I64, 2, s2);
        for (int64_t t = 0; t < T; t++) cg_set_flat(pos, t, (double)t);
        x = cg_add(x, cg_embedding(P(m, "wpe.weight", 0), pos));
    }
    int64_t C = c->d_model;
    for (long long l = 0; l < c->n_layer; l++) {
        cg_tensor *att;
        if (gpt2) {
            cg_tensor *h = cg_layernorm(x, P(m, "h.%lld.ln_1.weight", l), P(m, "h.%lld.ln_1.bias", l), c->norm_eps);
            /* q, k, v from row blocks of c_attn (not slices of its output) */
            cg_tensor *w = P(m, "h.%lld.attn.c_attn.weight", l), *bb = P(m, "h.%lld.attn.c_attn.bias", l);
            cg_tensor *q = lin(h, cg_slice(w, 0, 0, C, 1), cg_slice(bb, 0, 0, C, 1));
            cg_tensor *k = lin(h, cg_slice(w, 0, C, 2 * C, 1), cg_slice(bb, 0, C, 2 * C, 1));
            cg_tensor *v = lin(h, cg_slice(w, 0, 2 * C, 3 * C, 1), cg_slice(bb, 0, 2 * C, 3 * C, 1));
            att = hand_attention(heads(q, H), heads(k, Hkv), heads(v, Hkv), H, Hkv);
            x = cg_add(x, lin(merge(att), P(m, "h.%lld.attn.c_proj.weight", l), P(m, "h.%lld.attn.c_proj.bias", l)));
            cg_tensor *h2 = cg_layernorm(x, P(m, "h.%lld.ln_2.weight", l), P(m, "h.%lld.ln_2.bias", l), c->norm_eps);
            cg_tensor *f = cg_gelu(lin(h2, P(m, "h.%lld.mlp.c_fc.weight", l), P(m, "h.%lld.mlp.c_fc.bias", l)));
            x = cg_add(x, lin(f, P(m, "h.%lld.mlp.c_proj.weight", l), P(m, "h.%lld.mlp.c_proj.bias", l)));
        } else {
            cg_tensor *h = cg_rmsnorm(x, P(m, "model.layers.%lld.input_layernorm.weight", l), c->norm_eps);
            cg_tensor *q = lin(h, P(m, "model.layers.%lld.self_attn.q_proj.weight", l), NULL);
            cg_tensor *k = lin(h, P(m, "model.layers.%lld.self_attn.k_proj.weight", l), NULL);
            cg_tensor *v = lin(h, P(m, "model.layers.%lld.self_attn.v_proj.weight", l), NULL);
            cg_tensor *qh = cg_rope(heads(q, H), c->rope_theta, 0, NULL), *kh = cg_rope(heads(k, Hkv), c->rope_theta, 0, NULL);
            att = hand_attention(qh, kh, heads(v, Hkv), H, Hkv);
            x = cg_add(x, lin(merge(att), P(m, "model.layers.%lld.self_attn.o_proj.weight", l), NULL));
            cg_tensor *h2 = cg_rmsnorm(x, P(m, "model.layers.%lld.post_attention_layernorm.weight", l), c->norm_eps);
            cg_tensor *g = lin(h2, P(m, "model.layers.%lld.mlp.gate_proj.weight", l), NULL);
            cg_tensor *u = lin(h2, P(m, "model.layers.%lld.mlp.up_proj.weight", l), NULL);
            x = cg_add(x, lin(cg_mul(cg_mul(g, cg_sigmoid(g)), u), P(m, "model.layers.%lld.mlp.down_proj.weight", l), NULL));
        }
    }
    return gpt2 ? cg_layernorm(x, P(m, "ln_f.weight", 0), P(m, "ln_f.bias", 0), c->norm_eps)
                : cg_rmsnorm(x, P(m, "model.norm.weight", 0), c->norm_eps);
}

static void check_forward_matches_hand(const char *preset) {
    cg_model *m = tiny(preset, 3);
    cg_tensor *tok = cg_test_random_tokens(2, 9, 5, m->cfg.vocab_size);
    cg_no_grad_enter();
    cg_model_inputs in = {.tokens = tok};
    cg_tensor *got = cg_model_forward(m, &in);
    if (!got) print_error("%s\n", cg_last_error());
    assert_non_null(got);
    cg_tensor *want = hand_forward(m, tok);
    assert_non_null(want);
    assert_true(cg_same_shape(got, want));
    double max_abs = 0;
    for (int64_t i = 0; i < cg_numel(got); i++) {
        assert_close(cg_get_flat(got, i), cg_get_flat(want, i), 1e-4, 1e-4);
        max_abs = fmax(max_abs, fabs(cg_get_flat(want, i)));
    }
    assert_true(max_abs > 0.5); /* the outputs are not trivially zero */
    /* logits and loss: [B, T, vocab] and a finite scalar near log(vocab) for a random model */
    cg_tensor *logits = cg_model_logits(m, got);
    assert_int_equal(logits->shape[2], m->cfg.vocab_size);
    cg_no_grad_exit();
    cg_model_free(m);
}

static void test_forward_matches_hand_composition(void **state) {
    (void)state;
    check_forward_matches_hand("gpt2:tiny");
    check_forward_matches_hand("llama:tiny");
}

/* ------------------------------------------------------------------ gradients */

typedef struct loss_ctx {
    cg_model *m;
    const cg_tensor *tokens, *targets;
} loss_ctx;

static cg_tensor *model_loss(cg_tensor *const *in, void *user) {
    (void)in;
    loss_ctx *c = user;
    cg_model_inputs mi = {.tokens = c->tokens};
    cg_tensor *h = cg_model_forward(c->m, &mi);
    return h ? cg_model_loss(c->m, h, c->targets) : NULL;
}

static void check_model_gradcheck(const char *preset) {
    cg_model *m = tiny(preset, 9);
    loss_ctx ctx = {m, cg_test_random_tokens(2, 5, 11, m->cfg.vocab_size), cg_test_random_tokens(2, 5, 12, m->cfg.vocab_size)};
    /* a sample of every parameter tensor, as gradcheck inputs (the function reads them through the model) */
    cg_tensor *params[64];
    int n = cg_model_trainable(m, params, 64);
    assert_true(n > 10 && n <= 64);
    /* 6 elements of every tensor (make test-full: 64). eps 1e-2: the f32 round-off of a whole-model loss
     * (~1e-6 relative) divided by 2 eps would otherwise be ~2e-3, as large as the tolerance */
    cg_gradcheck_opts o = {.eps = 1e-2, .rtol = 2e-2, .atol = 5e-4, .max_per_input = cg_test_full() ? 64 : 6};
    cg_gradcheck_result r;
    assert_ok(cg_gradcheck(model_loss, &ctx, n, params, &o, &r));
    if (!r.passed)
        print_error("%s: %lld of %lld failed; worst %s[%lld]: analytic %g numeric %g\n", preset,
                    (long long)r.failures, (long long)r.checked, params[r.worst_input]->name, (long long)r.worst_index,
                    r.worst_analytic, r.worst_numeric);
    assert_true(r.passed);
    print_message("%s: gradcheck of %lld parameter elements over %d tensors, max abs error %.2g\n", preset,
                  (long long)r.checked, n, r.max_abs_err);
    cg_model_free(m);
}

static void test_gradcheck_through_tiny_models(void **state) {
    (void)state;
    check_model_gradcheck("gpt2:tiny");
    check_model_gradcheck("llama:tiny");
}

/* ------------------------------------------------------------------ KV cache and padding */

static void check_cache_matches_full(const char *preset) {
    cg_model *m = tiny(preset, 21);
    int64_t B = 2, T = 11, prompt = 4;
    cg_tensor *tok = cg_test_random_tokens(B, T, 31, m->cfg.vocab_size);
    cg_no_grad_enter();
    cg_model_inputs full_in = {.tokens = tok};
    cg_tensor *full = cg_model_forward(m, &full_in);
    assert_non_null(full);
    cg_kv_cache *kv = NULL;
    assert_ok(cg_kv_cache_create(m, B, 16, &kv));
    /* the prompt in one call, then one token per call */
    int64_t start = 0;
    while (start < T) {
        int64_t len = start == 0 ? prompt : 1;
        cg_tensor *chunk = cg_contiguous(cg_view_slice(tok, 1, start, start + len, 1));
        cg_model_inputs in = {.tokens = chunk, .cache = kv};
        cg_tensor *h = cg_model_forward(m, &in);
        if (!h) print_error("%s\n", cg_last_error());
        assert_non_null(h);
        for (int64_t b = 0; b < B; b++)
            for (int64_t t = 0; t < len; t++)
                for (int64_t i = 0; i < m->cfg.d_model; i++)
                    assert_close(cg_get(h, (int64_t[]){b, t, i}), cg_get(full, (int64_t[]){b, start + t, i}), 1e-4, 1e-5);
        start += len;
    }
    assert_int_equal(kv->len, T);
    /* the cache refuses what does not fit, and grad mode */
    cg_model_inputs over = {.tokens = cg_test_random_tokens(B, 6, 1, m->cfg.vocab_size), .cache = kv};
    assert_null(cg_model_forward(m, &over));
    assert_error_contains("do not fit the KV cache");
    cg_no_grad_exit();
    cg_kv_cache_reset(kv);
    cg_model_inputs graded = {.tokens = tok, .cache = kv};
    assert_null(cg_model_forward(m, &graded));
    assert_error_contains("the KV cache is for inference");
    cg_kv_cache_free(kv);
    cg_model_free(m);
}

static void test_kv_cache_matches_full_recomputation(void **state) {
    (void)state;
    check_cache_matches_full("gpt2:tiny");
    check_cache_matches_full("llama:tiny");
}

/* Left padding: a row with pad tokens in front, explicit positions and a key mask gives the same hidden
 * states for its real tokens as the same sequence alone. */
static void check_left_padding(const char *preset) {
    cg_model *m = tiny(preset, 41);
    int64_t T = 7, pad = 3;
    cg_tensor *alone = cg_test_random_tokens(1, T - pad, 51, m->cfg.vocab_size);
    int64_t s[2] = {1, T};
    cg_tensor *padded = cg_tensor_zeros(cg_step_arena(CG_CPU), CG_I32, 2, s);
    cg_tensor *pos = cg_tensor_zeros(cg_step_arena(CG_CPU), CG_I64, 2, s);
    cg_tensor *mask = cg_tensor_zeros(cg_step_arena(CG_CPU), CG_U8, 2, s);
    for (int64_t t = pad; t < T; t++) {
        cg_set_flat(padded, t, cg_get_flat(alone, t - pad));
        cg_set_flat(pos, t, (double)(t - pad));
        cg_set_flat(mask, t, 1);
    }
    cg_no_grad_enter();
    cg_model_inputs a = {.tokens = alone}, p = {.tokens = padded, .positions = pos, .key_mask = mask};
    cg_tensor *ha = cg_model_forward(m, &a), *hp = cg_model_forward(m, &p);
    assert_non_null(ha);
    assert_non_null(hp);
    for (int64_t t = pad; t < T; t++)
        for (int64_t i = 0; i < m->cfg.d_model; i++)
            assert_close(cg_get(hp, (int64_t[]){0, t, i}), cg_get(ha, (int64_t[]){0, t - pad, i}), 1e-4, 1e-5);
    cg_no_grad_exit();
    cg_model_free(m);
}

static void test_left_padding(void **state) {
    (void)state;
    check_left_padding("gpt2:tiny");
    check_left_padding("llama:tiny");
}

static void test_forward_errors(void **state) {
    (void)state;
    cg_model *m = tiny("gpt2:tiny", 1);
    cg_model_inputs in = {.tokens = cg_test_random_tokens(1, 3, 1, 64)};
    cg_set_flat((cg_tensor *)in.tokens, 1, 64); /* vocabulary is 64 */
    assert_null(cg_model_forward(m, &in));
    assert_error_contains("token 64 at position 1 is outside the vocabulary [0, 64)");
    in.tokens = cg_test_random_tokens(1, 129, 1, 64); /* gpt2:tiny has 128 positions */
    assert_null(cg_model_forward(m, &in));
    assert_error_contains("position 128 is outside the 128 learned positions");
    int64_t s1[1] = {3};
    in.tokens = cg_tensor_zeros(cg_step_arena(CG_CPU), CG_I32, 1, s1);
    assert_null(cg_model_forward(m, &in));
    assert_error_contains("must be [B, T]");
    cg_model_free(m);
}

/* Mixed precision on the CPU: bf16 compute is refused with a clear error (the CPU computes in f32) and
 * nothing changes; the working-weight op itself runs anywhere: its value is the copy's, and its gradient
 * lands in the master's .grad (the copy has none). */
static void test_compute_dtype_and_working_weight(void **state) {
    (void)state;
    cg_model *m = tiny("gpt2:tiny", 5);
    assert_int_equal(cg_model_compute_dtype(m), CG_F32);
    assert_int_equal(cg_model_set_compute_dtype(m, CG_BF16), CG_ERR_UNSUPPORTED);
    assert_error_contains("bf16 compute needs a CUDA model");
    assert_int_equal(cg_model_compute_dtype(m), CG_F32);
    assert_int_equal(cg_model_set_compute_dtype(m, CG_I32), CG_ERR_DTYPE);
    assert_ok(cg_model_set_compute_dtype(m, CG_F32));
    assert_null(cg_model_working_copy(m, m->wte));
    assert_ptr_equal(cg_model_weight(m, m->wte), m->wte); /* f32: the master itself */
    assert_ok(cg_model_refresh_working_copies(m));         /* nothing to refresh */
    cg_model_free(m);

    /* y = sum(x * w) read through a stand-in copy c of w: dy/dw = x, into w's grad; values come from c */
    int64_t sh[1] = {5};
    cg_tensor *w = cg_test_rand_tensor(1, sh, 1, 1.0f, 0.0f, true);
    cg_tensor *c = cg_test_rand_tensor(1, sh, 2, 1.0f, 0.0f, false);
    cg_tensor *x = cg_test_rand_tensor(1, sh, 3, 1.0f, 0.0f, false);
    assert_ok(cg_alloc_grad(w, cg_step_arena(CG_CPU)));
    cg_tensor *ww = cg_working_weight(w, c);
    assert_non_null(ww);
    assert_true(ww != c && cg_data(ww) == cg_data(c) && ww->requires_grad && !c->requires_grad);
    cg_tensor *y = cg_sum(cg_mul(x, ww), -1, false);
    assert_non_null(y);
    double want = 0.0;
    for (int i = 0; i < 5; i++) want += cg_get_flat(x, i) * cg_get_flat(c, i);
    assert_close(cg_get_flat(y, 0), want, 1e-5, 1e-6);
    assert_ok(cg_backward(y));
    for (int i = 0; i < 5; i++) assert_close(cg_get_flat(w->grad, i), cg_get_flat(x, i), 0, 0);
    assert_null(c->grad);
    /* no grad mode, or a frozen master: the copy itself, nothing recorded */
    cg_no_grad_enter();
    assert_ptr_equal(cg_working_weight(w, c), c);
    cg_no_grad_exit();
    int64_t sh2[1] = {4};
    cg_tensor *bad = cg_test_rand_tensor(1, sh2, 4, 1.0f, 0.0f, false);
    assert_null(cg_working_weight(w, bad));
    assert_error_contains("working_weight");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_presets_and_counts, cg_test_teardown),
        cmocka_unit_test_teardown(test_init_statistics, cg_test_teardown),
        cmocka_unit_test_teardown(test_forward_matches_hand_composition, cg_test_teardown),
        cmocka_unit_test_teardown(test_gradcheck_through_tiny_models, cg_test_teardown),
        cmocka_unit_test_teardown(test_kv_cache_matches_full_recomputation, cg_test_teardown),
        cmocka_unit_test_teardown(test_left_padding, cg_test_teardown),
        cmocka_unit_test_teardown(test_forward_errors, cg_test_teardown),
        cmocka_unit_test_teardown(test_compute_dtype_and_working_weight, cg_test_teardown),
    };
    int rc = cmocka_run_group_tests_name("model", tests, NULL, NULL);
    cg_shutdown();
    return rc;
}
