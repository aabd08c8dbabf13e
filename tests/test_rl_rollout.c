/* Rollouts: G samples per prompt with their decoded text and rewards; the log-probs the sampler reported
 * equal the policy's recomputed over the full sequences (the old-policy log-probs of the objectives); the
 * entropy equals a direct computation; gradients flow from the log-probs to the model. */
#include "test_util.h"

static cg_model *tiny(uint64_t seed) {
    cg_model_config cfg;
    assert_ok(cg_model_config_preset("llama:tiny", &cfg));
    cfg.init_std = 0.1f; /* flatter than trained, sharper than uniform: varied samples */
    cg_model *m = NULL;
    assert_ok(cg_model_create(&cfg, CG_CPU, seed, &m));
    return m;
}

/* A reward that records what it saw: the response's length, plus 100 if it was handed the right answer. */
static float length_reward(const char *prompt, const char *response, size_t len, const char *answer, void *user) {
    (void)prompt;
    int *calls = user;
    (*calls)++;
    if (strlen(response) != len) return -1.0f; /* the text must be exactly len bytes */
    return (float)len + (strcmp(answer, "A1") == 0 || strcmp(answer, "A2") == 0 ? 100.0f : 0.0f);
}

static void test_rollout_shapes_rewards_and_logprobs(void **state) {
    (void)state;
    cg_model *m = tiny(3);
    cg_tokenizer *tok = NULL;
    assert_ok(cg_tokenizer_char_create(CG_CHAR_ALPHABET_DEFAULT, &tok));
    const char *prompts[2] = {"12+7=", "3-1="}, *answers[2] = {"A1", "A2"};
    int calls = 0;
    cg_reward rw[1] = {{length_reward, &calls, 1.0f}};
    cg_rollout_config rc = {.group_size = 3, .sampling = {.temperature = 0.9f, .max_new_tokens = 6, .seed = 11}};
    cg_rollout *r = NULL;
    assert_ok(cg_rollout_generate(m, tok, prompts, answers, 2, &rc, rw, 1, &r));
    assert_int_equal(r->n_seq, 6);
    assert_int_equal(calls, 6);
    for (int64_t i = 0; i < 6; i++) {
        assert_int_equal(r->prompt_len[i], i < 3 ? 5 : 4);
        assert_true(r->resp_len[i] >= 1 && r->resp_len[i] <= 6);
        /* the end token (id 2) ends a non-truncated response and is not part of the text */
        bool ended = r->tokens[i][r->prompt_len[i] + r->resp_len[i] - 1] == cg_tokenizer_eos_id(tok);
        assert_int_equal(ended, !r->truncated[i]);
        int64_t text_tokens = r->resp_len[i] - (ended ? 1 : 0);
        assert_true(r->rewards[i] == (float)strlen(r->responses[i]) + 100.0f);
        assert_true((int64_t)strlen(r->responses[i]) <= text_tokens * 5); /* "<pad>" is the longest token text */
    }
    /* the sampler's log-probs = the full forward's (temperature 0.9 on both sides) */
    int64_t sel[6] = {0, 1, 2, 3, 4, 5};
    cg_no_grad_enter();
    cg_tensor *mask = NULL;
    double entropy = 0;
    cg_tensor *lp = cg_rollout_logprobs(m, r, sel, 6, 0.9f, &mask, &entropy);
    cg_no_grad_exit();
    assert_non_null(lp);
    assert_int_equal(lp->shape[0], 6);
    assert_int_equal(lp->shape[1], r->max_resp);
    for (int64_t i = 0; i < 6; i++)
        for (int64_t j = 0; j < r->max_resp; j++) {
            double mk = cg_get_flat(mask, i * r->max_resp + j);
            assert_true(mk == (j < r->resp_len[i] ? 1.0 : 0.0));
            if (mk) assert_close(cg_get_flat(lp, i * r->max_resp + j), r->sample_logp[i * r->max_resp + j], 1e-4, 1e-5);
        }
    /* entropy: directly from the logits of each response position */
    double want = 0;
    int64_t count = 0;
    cg_no_grad_enter();
    for (int64_t i = 0; i < 6; i++) {
        int64_t len = r->prompt_len[i] + r->resp_len[i], s[2] = {1, len};
        cg_tensor *tk = cg_tensor_from_data(cg_step_arena(CG_CPU), CG_I32, 2, s, r->tokens[i]);
        cg_model_inputs in = {.tokens = tk};
        cg_tensor *logits = cg_model_logits(m, cg_model_forward(m, &in));
        for (int64_t j = 0; j < r->resp_len[i]; j++, count++) {
            int64_t pos = r->prompt_len[i] - 1 + j, V = logits->shape[2];
            double mx = -INFINITY, z = 0, h = 0;
            for (int64_t v = 0; v < V; v++) mx = fmax(mx, cg_get_flat(logits, pos * V + v) / 0.9);
            for (int64_t v = 0; v < V; v++) z += exp(cg_get_flat(logits, pos * V + v) / 0.9 - mx);
            for (int64_t v = 0; v < V; v++) {
                double lpv = cg_get_flat(logits, pos * V + v) / 0.9 - mx - log(z);
                h -= exp(lpv) * lpv;
            }
            want += h;
        }
    }
    cg_no_grad_exit();
    assert_close(entropy, want / (double)count, 1e-4, 1e-5);
    assert_true(entropy > 0.5); /* a near-uniform tiny model: close to log(64) = 4.16 */
    /* gradients reach the model through the selected rows' log-probs */
    int64_t two[2] = {1, 4};
    lp = cg_rollout_logprobs(m, r, two, 2, 1.0f, &mask, NULL);
    assert_non_null(lp);
    assert_ok(cg_backward(cg_sum_all(cg_mul(lp, mask))));
    cg_tensor *wq = cg_model_find_param(m, "model.layers.0.self_attn.q_proj.weight");
    double g2 = 0;
    for (int64_t i = 0; i < cg_numel(wq); i++) g2 += cg_get_flat(wq->grad, i) * cg_get_flat(wq->grad, i);
    assert_true(g2 > 0);
    assert_close(cg_rollout_mean_reward(r), (r->rewards[0] + r->rewards[1] + r->rewards[2] + r->rewards[3] +
                                             r->rewards[4] + r->rewards[5]) / 6.0, 1e-6, 0);
    assert_close(cg_rollout_fraction_at_least(r, 100.0f), 1.0, 0, 0);
    cg_rollout_free(r);
    cg_tokenizer_free(tok);
    cg_model_free(m);
}

static void test_rollout_errors(void **state) {
    (void)state;
    cg_model *m = tiny(1);
    cg_tokenizer *tok = NULL;
    assert_ok(cg_tokenizer_char_create(CG_CHAR_ALPHABET_DEFAULT, &tok));
    const char *prompts[1] = {"ABC="}, *answers[1] = {"1"};
    cg_reward rw[1] = {{cg_reward_numeric, NULL, 1.0f}};
    cg_rollout_config rc = {.group_size = 2, .sampling = {.temperature = 1.0f, .max_new_tokens = 4}};
    cg_rollout *r = NULL;
    assert_int_equal(cg_rollout_generate(m, tok, prompts, answers, 1, &rc, rw, 1, &r), CG_ERR_INVALID_ARG);
    assert_error_contains("rollout: prompt 0: ");
    assert_null(r);
    rc.group_size = 0;
    prompts[0] = "1+1=";
    assert_int_equal(cg_rollout_generate(m, tok, prompts, answers, 1, &rc, rw, 1, &r), CG_ERR_INVALID_ARG);
    assert_error_contains("group_size > 0");
    cg_tokenizer_free(tok);
    cg_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_rollout_shapes_rewards_and_logprobs, cg_test_teardown),
        cmocka_unit_test_teardown(test_rollout_errors, cg_test_teardown),
    };
    int rc = cmocka_run_group_tests_name("rl_rollout", tests, NULL, NULL);
    cg_shutdown();
    return rc;
}
