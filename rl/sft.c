#include "rl/sft.h"

#include <stdlib.h>
#include <string.h>

#include "core/context.h"

cg_tensor *cg_sft_loss(cg_model *m, const cg_tokenizer *tok, const char *const *prompts, const char *const *answers,
                       int64_t n) {
    if (!m || !tok || !prompts || !answers || n <= 0) {
        cg_set_error(CG_ERR_INVALID_ARG, "sft_loss: needs a model, a tokenizer and n > 0 examples");
        return NULL;
    }
    int32_t eos = cg_tokenizer_eos_id(tok);
    int32_t **pi = calloc((size_t)n, sizeof *pi), **ai = calloc((size_t)n, sizeof *ai);
    int64_t *pl = calloc((size_t)n, sizeof *pl), *al = calloc((size_t)n, sizeof *al);
    cg_tensor *loss = NULL;
    int64_t L = 1;
    cg_status s = pi && ai && pl && al ? CG_OK : cg_set_error(CG_ERR_OOM, "sft_loss: out of memory");
    for (int64_t i = 0; s == CG_OK && i < n; i++) {
        s = cg_tokenizer_encode(tok, prompts[i], strlen(prompts[i]), &pi[i], &pl[i]);
        if (s == CG_OK) s = cg_tokenizer_encode(tok, answers[i], strlen(answers[i]), &ai[i], &al[i]);
        if (s != CG_OK) cg_error_context("sft_loss: example %lld: ", (long long)i);
        int64_t len = pl[i] + al[i] + (eos >= 0);
        if (len > L) L = len;
    }
    if (s == CG_OK && pl[0] == 0) s = cg_set_error(CG_ERR_INVALID_ARG, "sft_loss: an empty prompt");
    if (s == CG_OK) {
        cg_arena *a = cg_step_arena(CG_CPU);
        int64_t shape[2] = {n, L};
        cg_tensor *tokens = cg_tensor_zeros(a, CG_I32, 2, shape), *targets = cg_tensor_empty(a, CG_I32, 2, shape);
        if (tokens && targets) {
            int32_t *tk = cg_data(tokens), *tg = cg_data(targets);
            for (int64_t i = 0; i < n * L; i++) tg[i] = -100;
            for (int64_t i = 0; i < n; i++) {
                int32_t *row = tk + i * L;
                memcpy(row, pi[i], sizeof(int32_t) * (size_t)pl[i]);
                memcpy(row + pl[i], ai[i], sizeof(int32_t) * (size_t)al[i]);
                int64_t len = pl[i] + al[i];
                if (eos >= 0) row[len++] = eos;
                /* position t predicts token t + 1: only answer and end tokens are learned */
                for (int64_t t = pl[i] - 1; t + 1 < len; t++) tg[i * L + t] = row[t + 1];
            }
            if (!cg_device_eq(m->device, CG_CPU)) { /* a CUDA model: the ids move to the GPU */
                tokens = cg_tensor_clone(cg_output_arena(m->device), tokens);
                targets = tokens ? cg_tensor_clone(cg_output_arena(m->device), targets) : NULL;
            }
            cg_model_inputs in = {.tokens = tokens};
            cg_tensor *hidden = !tokens || !targets ? NULL : cg_model_forward(m, &in);
            loss = hidden ? cg_model_loss(m, hidden, targets) : NULL;
        }
    }
    for (int64_t i = 0; i < n; i++) {
        if (pi) free(pi[i]);
        if (ai) free(ai[i]);
    }
    free(pi), free(ai), free(pl), free(al);
    return loss;
}

cg_status cg_sft_step(cg_model *m, const cg_tokenizer *tok, cg_optimizer *opt, float lr, const char *const *prompts,
                      const char *const *answers, int64_t n, float *loss_out) {
    cg_tensor *loss = cg_sft_loss(m, tok, prompts, answers, n);
    if (!loss) return cg_last_status();
    if (loss_out) { /* the loss may live on a GPU and be bf16: a host f32 copy */
        cg_tensor *h = cg_tensor_to(cg_step_arena(CG_CPU), loss, CG_F32);
        if (!h) return cg_last_status();
        *loss_out = *(const float *)cg_data(h);
    }
    cg_status s = cg_backward(loss);
    if (s == CG_OK) s = cg_optimizer_step(opt, lr, NULL);
    cg_optimizer_zero_grad(opt);
    return s;
}
