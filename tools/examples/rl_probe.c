/* The RL landscape probe behind README's RL notes: the exact expected accuracy of a model on arithmetic
 * prompts, J = mean over prompts of p(answer + end | prompt) (teacher forcing, no sampling), its exact
 * gradient, how well a GRPO gradient estimate points along it, and whether steps along the exact gradient of
 * one prompt set raise J on another (transfer).
 *
 *   build/examples/rl_probe MODEL_DIR [G] [LEVEL]     e.g. rl_out/sft_model (written by `cgrad rl`)
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cgrad.h"

#define N_PROMPTS 256
#define CHECK(x)                                                                                                 \
    do {                                                                                                       \
        if ((x) != CG_OK) {                                                                                    \
            fprintf(stderr, "rl_probe: %s\n", cg_last_error());                                                \
            exit(1);                                                                                           \
        }                                                                                                      \
    } while (0)

static cg_tensor *params[1024];
static int n_params;
static int64_t n_elems;

/* J over prompts [first, first + N_PROMPTS); with want_grad its gradient lands in the parameters' grads. */
static double exact_J(cg_model *m, const cg_tokenizer *tok, const cg_task_item *items, int first, bool want_grad) {
    cg_rollout r = {.n_prompts = N_PROMPTS, .group_size = 1, .n_seq = N_PROMPTS, .max_resp = 1};
    int64_t prompt_len[N_PROMPTS], resp_len[N_PROMPTS], sel[N_PROMPTS];
    int32_t *tokens[N_PROMPTS];
    r.prompt_len = prompt_len, r.resp_len = resp_len, r.tokens = tokens;
    for (int i = 0; i < N_PROMPTS; i++) {
        const cg_task_item *it = &items[first + i];
        int32_t *a = NULL, *b = NULL;
        int64_t na = 0, nb = 0;
        CHECK(cg_tokenizer_encode(tok, it->prompt, strlen(it->prompt), &a, &na));
        CHECK(cg_tokenizer_encode(tok, it->answer, strlen(it->answer), &b, &nb));
        tokens[i] = malloc(sizeof(int32_t) * (size_t)(na + nb + 1));
        if (!tokens[i]) exit(1);
        memcpy(tokens[i], a, sizeof(int32_t) * (size_t)na);
        memcpy(tokens[i] + na, b, sizeof(int32_t) * (size_t)nb);
        tokens[i][na + nb] = cg_tokenizer_eos_id(tok);
        prompt_len[i] = na, resp_len[i] = nb + 1, sel[i] = i;
        if (nb + 1 > r.max_resp) r.max_resp = nb + 1;
        free(a), free(b);
    }
    if (!want_grad) cg_no_grad_enter();
    cg_tensor *mask = NULL;
    cg_tensor *lp = cg_rollout_logprobs(m, &r, sel, N_PROMPTS, 1.0f, &mask, NULL);
    cg_tensor *J = lp ? cg_mean_all(cg_exp(cg_sum(cg_mul(lp, mask), 1, false))) : NULL;
    if (!J) CHECK(cg_last_status());
    double value = cg_get_flat(J, 0);
    if (want_grad) {
        for (int i = 0; i < n_params; i++) CHECK(cg_fill(params[i]->grad, 0.0));
        CHECK(cg_backward(J));
    } else {
        cg_no_grad_exit();
    }
    cg_step_end();
    for (int i = 0; i < N_PROMPTS; i++) free(tokens[i]);
    return value;
}

static void read_flat(float *dst, bool grads) {
    int64_t o = 0;
    for (int i = 0; i < n_params; i++)
        for (int64_t j = 0; j < cg_numel(params[i]); j++) dst[o++] = (float)cg_get_flat(grads ? params[i]->grad : params[i], j);
}

/* parameters = w0 + eta * dir / |dir| */
static void step_along(const float *w0, const float *dir, double eta) {
    double norm = 0;
    for (int64_t o = 0; o < n_elems; o++) norm += (double)dir[o] * dir[o];
    norm = sqrt(norm);
    int64_t o = 0;
    for (int i = 0; i < n_params; i++)
        for (int64_t j = 0; j < cg_numel(params[i]); j++, o++) cg_set_flat(params[i], j, w0[o] + eta * dir[o] / norm);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: rl_probe MODEL_DIR [G] [LEVEL]\n");
        return 2;
    }
    int G = argc > 2 ? atoi(argv[2]) : 8, level = argc > 3 ? atoi(argv[3]) : 1;
    cg_set_num_threads(1);
    cg_model *m = NULL;
    cg_tokenizer *tok = NULL;
    CHECK(cg_model_load(argv[1], CG_CPU, &m));
    CHECK(cg_tokenizer_char_create(CG_CHAR_ALPHABET_DEFAULT, &tok));
    cg_arith_config ac = cg_arith_difficulty(level);
    cg_task_set *tasks = NULL, *train = NULL;
    CHECK(cg_task_set_arith(&ac, 1, &tasks));
    CHECK(cg_task_set_split(tasks, CG_SPLIT_TRAIN, &train));
    static cg_task_item items[2 * N_PROMPTS];
    const char *prompts[N_PROMPTS], *answers[N_PROMPTS];
    for (int i = 0; i < 2 * N_PROMPTS; i++) CHECK(cg_task_set_get(train, 9000 + i, &items[i]));
    for (int i = 0; i < N_PROMPTS; i++) prompts[i] = items[i].prompt, answers[i] = items[i].answer;
    CHECK(cg_model_alloc_grads(m));
    n_params = cg_model_trainable(m, params, 1024);
    for (int i = 0; i < n_params; i++) n_elems += cg_numel(params[i]);
    float *w0 = malloc(sizeof(float) * (size_t)n_elems), *gJ = malloc(sizeof(float) * (size_t)n_elems);
    float *gpg = malloc(sizeof(float) * (size_t)n_elems);
    if (!w0 || !gJ || !gpg) return 1;
    read_flat(w0, false);

    double JA = exact_J(m, tok, items, 0, true), JB = exact_J(m, tok, items, N_PROMPTS, false);
    exact_J(m, tok, items, 0, true);
    read_flat(gJ, true);
    printf("J on prompt set A %.4f, on set B %.4f (exact expected accuracy, %d prompts each)\n", JA, JB, N_PROMPTS);

    /* a GRPO gradient estimate on set A (GRPO loss, KL off, old policy = the current one) */
    cg_reward rw[1] = {{cg_reward_numeric, NULL, 1.0f}};
    cg_rollout_config rc = {.group_size = G, .sampling = {.temperature = 1.0f, .max_new_tokens = 8, .seed = 3}};
    cg_rollout *r = NULL;
    CHECK(cg_rollout_generate(m, tok, prompts, answers, N_PROMPTS, &rc, rw, 1, &r));
    float *adv = malloc(sizeof(float) * (size_t)r->n_seq);
    int64_t *sel = malloc(sizeof(int64_t) * (size_t)r->n_seq);
    if (!adv || !sel) return 1;
    CHECK(cg_compute_advantages(CG_ADV_GROUP_MEAN_STD, r->rewards, r->n_seq, G, 1e-6f, adv));
    for (int64_t i = 0; i < r->n_seq; i++) sel[i] = i;
    for (int i = 0; i < n_params; i++) CHECK(cg_fill(params[i]->grad, 0.0));
    cg_tensor *mask = NULL;
    cg_tensor *lp = cg_rollout_logprobs(m, r, sel, r->n_seq, 1.0f, &mask, NULL);
    cg_rl_config cfg = cg_rl_config_default(CG_RL_GRPO);
    cfg.kl_beta = 0.0f;
    cg_rl_inputs in = {.logp = lp, .mask = mask, .advantages = adv, .rewards = r->rewards, .group_size = G};
    cg_rl_stats st;
    cg_tensor *loss = lp ? cg_rl_loss(&cfg, &in, &st) : NULL;
    if (!loss) CHECK(cg_last_status());
    CHECK(cg_backward(loss));
    cg_step_end();
    read_flat(gpg, true);
    double dot = 0, n1 = 0, n2 = 0;
    for (int64_t o = 0; o < n_elems; o++) dot -= (double)gpg[o] * gJ[o], n1 += (double)gpg[o] * gpg[o], n2 += (double)gJ[o] * gJ[o];
    printf("GRPO estimate (%d x %d samples, sampled accuracy %.3f): cosine with the exact gradient of J_A %.3f; |grad J_A| %.4f\n",
           N_PROMPTS, G, cg_rollout_mean_reward(r), dot / sqrt(n1 * n2), sqrt(n2));

    const double etas[] = {0.001, 0.003, 0.01, 0.03, 0.1};
    for (size_t k = 0; k < sizeof etas / sizeof etas[0]; k++) {
        step_along(w0, gJ, etas[k]);
        double a = exact_J(m, tok, items, 0, false), b = exact_J(m, tok, items, N_PROMPTS, false);
        printf("step %-6g along grad J_A: J_A %.4f (%+.4f; first order %+.4f)  J_B %.4f (%+.4f)\n", etas[k], a, a - JA,
               etas[k] * sqrt(n2), b, b - JB);
    }
    free(w0), free(gJ), free(gpg), free(adv), free(sel);
    for (int i = 0; i < 2 * N_PROMPTS; i++) cg_task_item_free(&items[i]);
    cg_rollout_free(r);
    cg_task_set_free(train);
    cg_task_set_free(tasks);
    cg_tokenizer_free(tok);
    cg_model_free(m);
    cg_shutdown();
    return 0;
}
