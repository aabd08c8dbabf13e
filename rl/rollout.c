#include "rl/rollout.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/context.h"

void cg_rollout_free(cg_rollout *r) {
    if (!r) return;
    for (int64_t i = 0; i < r->n_seq; i++) {
        if (r->tokens) free(r->tokens[i]);
        if (r->responses) free(r->responses[i]);
    }
    free(r->tokens);
    free(r->responses);
    free(r->prompt_len);
    free(r->resp_len);
    free(r->sample_logp);
    free(r->rewards);
    free(r->truncated);
    free(r);
}

static cg_rollout *rollout_alloc(int64_t n_prompts, int64_t G) {
    cg_rollout *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    int64_t n = n_prompts * G;
    r->n_prompts = n_prompts, r->group_size = G, r->n_seq = n;
    r->prompt_len = calloc((size_t)n, sizeof *r->prompt_len);
    r->resp_len = calloc((size_t)n, sizeof *r->resp_len);
    r->tokens = calloc((size_t)n, sizeof *r->tokens);
    r->responses = calloc((size_t)n, sizeof *r->responses);
    r->rewards = calloc((size_t)n, sizeof *r->rewards);
    r->truncated = calloc((size_t)n, sizeof *r->truncated);
    if (!r->prompt_len || !r->resp_len || !r->tokens || !r->responses || !r->rewards || !r->truncated) {
        cg_rollout_free(r);
        return NULL;
    }
    return r;
}

cg_status cg_rollout_generate(cg_model *m, const cg_tokenizer *tok, const char *const *prompts,
                              const char *const *answers, int64_t n_prompts, const cg_rollout_config *cfg,
                              const cg_reward *rewards, int n_rewards, cg_rollout **out) {
    if (!m || !tok || !prompts || !answers || !cfg || !out || n_prompts <= 0 || cfg->group_size <= 0)
        return cg_set_error(CG_ERR_INVALID_ARG, "rollout: needs a model, a tokenizer, prompts, answers, a config "
                            "with group_size > 0 and n_prompts > 0 (got %lld prompts)", (long long)n_prompts);
    if (n_rewards <= 0 || !rewards) return cg_set_error(CG_ERR_INVALID_ARG, "rollout: no reward function");
    int64_t G = cfg->group_size, n = n_prompts * G;
    cg_rollout *r = rollout_alloc(n_prompts, G);
    int32_t **enc = calloc((size_t)n_prompts, sizeof *enc);
    int64_t *enc_len = calloc((size_t)n_prompts, sizeof *enc_len);
    const int32_t **rows = calloc((size_t)n, sizeof *rows);
    int64_t *row_len = calloc((size_t)n, sizeof *row_len);
    cg_status s = (r && enc && enc_len && rows && row_len) ? CG_OK : cg_set_error(CG_ERR_OOM, "rollout: out of memory");
    for (int64_t p = 0; s == CG_OK && p < n_prompts; p++) {
        s = cg_tokenizer_encode(tok, prompts[p], strlen(prompts[p]), &enc[p], &enc_len[p]);
        if (s != CG_OK) cg_error_context("rollout: prompt %lld: ", (long long)p);
        for (int64_t g = 0; s == CG_OK && g < G; g++) rows[p * G + g] = enc[p], row_len[p * G + g] = enc_len[p];
    }
    /* the end token stops a row (kept in the response: ending is an action the policy took) */
    int32_t stops[17];
    int n_stops = 0;
    int32_t eos = cg_tokenizer_eos_id(tok);
    if (eos >= 0) stops[n_stops++] = eos;
    for (int i = 0; i < cfg->sampling.n_stop && n_stops < 17; i++) stops[n_stops++] = cfg->sampling.stop_tokens[i];
    cg_sampling smp = cfg->sampling;
    smp.stop_tokens = stops, smp.n_stop = n_stops;
    cg_generation *gen = NULL;
    if (s == CG_OK) {
        cg_no_grad_enter();
        s = cg_generate(m, rows, row_len, n, &smp, &gen);
        cg_no_grad_exit();
    }
    if (s == CG_OK) {
        r->max_resp = 1;
        for (int64_t i = 0; i < n; i++)
            if (gen->gen_len[i] > r->max_resp) r->max_resp = gen->gen_len[i];
        r->sample_logp = calloc((size_t)n * (size_t)r->max_resp, sizeof *r->sample_logp);
        if (!r->sample_logp) s = cg_set_error(CG_ERR_OOM, "rollout: out of memory");
    }
    for (int64_t i = 0; s == CG_OK && i < n; i++) {
        int64_t pl = gen->prompt_len[i], gl = gen->gen_len[i], W = gen->max_total;
        const int32_t *row = gen->tokens + i * W;
        r->prompt_len[i] = pl, r->resp_len[i] = gl;
        r->truncated[i] = !gen->stopped[i];
        r->tokens[i] = malloc(sizeof(int32_t) * (size_t)(pl + gl));
        if (!r->tokens[i]) {
            s = cg_set_error(CG_ERR_OOM, "rollout: out of memory");
            break;
        }
        memcpy(r->tokens[i], row, sizeof(int32_t) * (size_t)(pl + gl));
        for (int64_t t = 0; t < gl; t++) r->sample_logp[i * r->max_resp + t] = gen->logprobs[i * W + pl + t];
        /* the reward sees the text without the end token */
        int64_t text_len = gen->stopped[i] && gl > 0 ? gl - 1 : gl;
        size_t len = 0;
        s = cg_tokenizer_decode(tok, row + pl, text_len, &r->responses[i], &len);
        if (s != CG_OK) break;
        int64_t p = i / G;
        r->rewards[i] = cg_reward_weighted_sum(rewards, n_rewards, prompts[p], r->responses[i], len, answers[p]);
    }
    r->answers = (const char **)answers;
    cg_generation_free(gen);
    for (int64_t p = 0; enc && p < n_prompts; p++) free(enc[p]);
    free(enc), free(enc_len), free(rows), free(row_len);
    if (s != CG_OK) {
        cg_rollout_free(r);
        return s;
    }
    *out = r;
    return CG_OK;
}

/* A host tensor on the model's device (itself on the CPU). */
static cg_tensor *on_device(cg_tensor *t, cg_device dev) {
    return !t || cg_device_eq(t->device, dev) ? t : cg_tensor_clone(cg_output_arena(dev), t);
}

/* Mean entropy of softmax(h W^T) over the given rows of hidden [rows, C] (host floats), in chunks (no
 * gradient), on the model's device. On the CPU each chunk's log-probs are summed in double; on a GPU the
 * chunk's sum of p log p is reduced there and only that scalar comes back (the [chunk, V] log-probs of a
 * 150k-token vocabulary would be ~150 MB per chunk over PCIe and a host loop over them). */
static cg_status mean_entropy(const cg_model *m, const float *hidden, int64_t rows, int64_t C, float temperature,
                              double *out) {
    const int64_t chunk = 256;
    cg_tensor *head = cg_model_head(m);
    if (!head) return cg_last_status();
    cg_arena *a = cg_step_arena(CG_CPU), *da = cg_step_arena(m->device);
    if (!a || !da) return cg_last_status();
    double sum = 0.0;
    for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
        int64_t nr = rows - r0 < chunk ? rows - r0 : chunk;
        cg_arena_mark mark = cg_arena_get_mark(a), dmark = cg_arena_get_mark(da);
        int64_t s[2] = {nr, C};
        cg_tensor *h = on_device(cg_tensor_from_data(a, CG_F32, 2, s, hidden + r0 * C), m->device);
        cg_tensor *lp = h ? cg_log_softmax(cg_linear(cg_scale(h, 1.0f / temperature), head, NULL, false), -1) : NULL;
        if (lp && lp->device.type != CG_DEVICE_CPU) {
            cg_tensor *plogp = cg_sum_all(cg_mul(cg_exp(lp), lp));
            cg_tensor *hs = plogp ? cg_tensor_to(a, plogp, CG_F32) : NULL; /* one f32 on the host */
            if (!hs) return cg_last_status();
            sum -= (double)*(const float *)cg_data(hs);
        } else {
            cg_tensor *hl = lp ? cg_tensor_to(a, lp, CG_F32) : NULL; /* packed f32 on the host */
            if (!hl) return cg_last_status();
            const float *v = cg_data(hl);
            int64_t V = hl->shape[1];
            for (int64_t i = 0; i < nr * V; i++) sum -= (double)expf(v[i]) * (double)v[i];
        }
        if (da != a) cg_arena_rewind(da, dmark);
        cg_arena_rewind(a, mark);
    }
    *out = rows > 0 ? sum / (double)rows : 0.0;
    return CG_OK;
}

cg_tensor *cg_rollout_logprobs(cg_model *m, const cg_rollout *r, const int64_t *sel, int64_t n, float temperature,
                               cg_tensor **mask_out, double *entropy_out) {
    if (!m || !r || !sel || n <= 0 || !mask_out || !(temperature > 0.0f)) {
        cg_set_error(CG_ERR_INVALID_ARG, "rollout_logprobs: needs a model, a rollout, n > 0 selected sequences, a "
                     "mask output and temperature > 0");
        return NULL;
    }
    int64_t L = 1, T = r->max_resp;
    for (int64_t k = 0; k < n; k++) {
        int64_t i = sel[k];
        if (i < 0 || i >= r->n_seq) {
            cg_set_error(CG_ERR_INVALID_ARG, "rollout_logprobs: sequence %lld of %lld", (long long)i, (long long)r->n_seq);
            return NULL;
        }
        if (r->prompt_len[i] + r->resp_len[i] > L) L = r->prompt_len[i] + r->resp_len[i];
    }
    cg_arena *a = cg_step_arena(CG_CPU);
    int64_t st[2] = {n, L}, sm[2] = {n, T};
    cg_tensor *tokens = cg_tensor_zeros(a, CG_I32, 2, st), *targets = cg_tensor_zeros(a, CG_I32, 2, st);
    cg_tensor *index = cg_tensor_zeros(a, CG_I64, 2, sm), *mask = cg_tensor_zeros(a, CG_F32, 2, sm);
    if (!tokens || !targets || !index || !mask) return NULL;
    int32_t *tk = cg_data(tokens), *tg = cg_data(targets);
    int64_t *ix = cg_data(index);
    float *mk = cg_data(mask);
    for (int64_t k = 0; k < n; k++) {
        int64_t i = sel[k], len = r->prompt_len[i] + r->resp_len[i];
        memcpy(tk + k * L, r->tokens[i], sizeof(int32_t) * (size_t)len);
        for (int64_t t = 0; t + 1 < len; t++) tg[k * L + t] = r->tokens[i][t + 1];
        for (int64_t j = 0; j < r->resp_len[i]; j++) { /* response token j is predicted at position pl - 1 + j */
            ix[k * T + j] = r->prompt_len[i] - 1 + j;
            mk[k * T + j] = 1.0f;
        }
    }
    /* on a CUDA model the inputs move to the GPU (the mask too: the objective wants it beside logp) */
    if (!(tokens = on_device(tokens, m->device)) || !(targets = on_device(targets, m->device)) ||
        !(index = on_device(index, m->device)) || !(mask = on_device(mask, m->device)))
        return NULL;
    cg_model_inputs in = {.tokens = tokens}; /* right padding: causal attention keeps it out of real tokens */
    cg_tensor *hidden = cg_model_forward(m, &in);
    if (!hidden) return NULL;
    cg_tensor *h = temperature != 1.0f ? cg_scale(hidden, 1.0f / temperature) : hidden;
    cg_tensor *head = cg_model_head(m);
    cg_tensor *all = h && head ? cg_token_logprobs(h, head, targets, 0) : NULL;
    cg_tensor *logp = all ? cg_gather(all, 1, index) : NULL;
    if (!logp) return NULL;
    if (entropy_out) {
        /* the response positions' hidden rows, packed */
        int64_t rows = 0, C = m->cfg.d_model;
        for (int64_t k = 0; k < n; k++) rows += r->resp_len[sel[k]];
        float *buf = malloc(sizeof(float) * (size_t)((rows ? rows : 1) * C));
        if (!buf) {
            cg_set_error(CG_ERR_OOM, "rollout_logprobs: out of memory for the entropy rows");
            return NULL;
        }
        const cg_tensor *hp = cg_tensor_to(a, hidden, CG_F32); /* packed f32 on the host */
        const float *hv = hp ? cg_data(hp) : NULL;
        int64_t row = 0;
        for (int64_t k = 0; hv && k < n; k++)
            for (int64_t j = 0; j < r->resp_len[sel[k]]; j++, row++)
                memcpy(buf + row * C, hv + (k * L + r->prompt_len[sel[k]] - 1 + j) * C, sizeof(float) * (size_t)C);
        cg_no_grad_enter();
        cg_status s = hv ? mean_entropy(m, buf, rows, C, temperature, entropy_out) : cg_last_status();
        cg_no_grad_exit();
        free(buf);
        if (s != CG_OK) return NULL;
    }
    *mask_out = mask;
    return logp;
}

double cg_rollout_fraction_at_least(const cg_rollout *r, float threshold) {
    int64_t k = 0;
    for (int64_t i = 0; i < r->n_seq; i++) k += r->rewards[i] >= threshold;
    return r->n_seq ? (double)k / (double)r->n_seq : 0.0;
}

double cg_rollout_mean_reward(const cg_rollout *r) {
    double s = 0;
    for (int64_t i = 0; i < r->n_seq; i++) s += r->rewards[i];
    return r->n_seq ? s / (double)r->n_seq : 0.0;
}

double cg_rollout_mean_response_len(const cg_rollout *r) {
    double s = 0;
    for (int64_t i = 0; i < r->n_seq; i++) s += (double)r->resp_len[i];
    return r->n_seq ? s / (double)r->n_seq : 0.0;
}
