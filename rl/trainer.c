#include "rl/trainer.h"

#include "optim/train.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/context.h"
#include "models/lora.h"

struct cg_rl_trainer {
    cg_rl_trainer_config cfg;
    cg_model *policy, *reference;
    const cg_tokenizer *tok;
    cg_task_set *train;
    const cg_reward *rewards;
    int n_rewards;
    cg_optimizer *opt;
    int64_t step;
    int64_t next_item; /* the next training item to draw */
    cg_rng shuffle_rng;
    cg_comm *comm; /* never NULL */
    int rank, world;
    cg_grad_sync *sync; /* with more than one rank */
};

/* Every tensor of a model (trainable or frozen) from rank 0. The masters move; a bf16 CUDA model's working
 * copies (what its forward reads) are then rewritten from them, or frozen weights and a reference model
 * would keep this rank's values. */
static cg_status broadcast_model(cg_comm *comm, cg_model *m) {
    for (int i = 0; i < m->n_params; i++) {
        cg_tensor *p = m->params[i].tensor;
        cg_status s = cg_dist_broadcast_params(comm, 1, &p);
        if (s != CG_OK) return s;
    }
    return cg_model_refresh_working_copies(m);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

cg_rl_trainer_config cg_rl_trainer_config_default(cg_rl_algo algo) {
    cg_rl_trainer_config c = {0};
    c.obj = cg_rl_config_default(algo);
    c.prompts_per_step = 16;
    c.group_size = 8;
    c.sampling = (cg_sampling){.temperature = 1.0f, .max_new_tokens = 64};
    c.epochs = 1;
    c.opt = cg_optimizer_config_default(CG_OPT_ADAMW);
    c.opt.lr = 1e-5f;
    c.opt.weight_decay = 0.0f;
    c.correct_reward = 1.0f;
    return c;
}

cg_status cg_rl_trainer_create(cg_model *policy, cg_model *reference, const cg_tokenizer *tok,
                               const cg_task_set *tasks, const cg_reward *rewards, int n_rewards,
                               const cg_rl_trainer_config *cfg, cg_rl_trainer **out) {
    if (!policy || !tok || !tasks || !rewards || n_rewards <= 0 || !cfg || !out)
        return cg_set_error(CG_ERR_INVALID_ARG, "rl_trainer: needs a policy, a tokenizer, tasks, rewards and a config");
    cg_status s = cg_rl_config_check(&cfg->obj);
    if (s != CG_OK) return s;
    if (cfg->prompts_per_step <= 0 || cfg->group_size <= 0 || cfg->epochs <= 0 || cfg->minibatch_seqs < 0)
        return cg_set_error(CG_ERR_INVALID_ARG, "rl_trainer: prompts_per_step (%lld), group_size (%lld) and epochs (%d) "
                            "must be positive", (long long)cfg->prompts_per_step, (long long)cfg->group_size, cfg->epochs);
    if (cfg->obj.kl_beta > 0.0f && !reference && !cg_lora_attached(policy))
        return cg_set_error(CG_ERR_INVALID_ARG, "rl_trainer: kl_beta %g needs a reference policy (attach LoRA, whose "
                            "disabled model is the reference, or pass a frozen copy)", (double)cfg->obj.kl_beta);
    if ((s = cg_sampling_validate(&cfg->sampling)) != CG_OK) return s;
    if (cfg->obj.overlong_penalty &&
        (cfg->obj.overlong_cache_len < 0 || cfg->obj.overlong_cache_len > cfg->sampling.max_new_tokens))
        return cg_set_error(CG_ERR_INVALID_ARG, "rl_trainer: the overlong penalty's cache length %lld must lie in [0, "
                            "max_new_tokens %lld]", (long long)cfg->obj.overlong_cache_len,
                            (long long)cfg->sampling.max_new_tokens);
    cg_comm *comm = cfg->comm ? cfg->comm : cg_comm_single();
    int world = cg_comm_size(comm);
    if (cfg->prompts_per_step % world != 0 || cfg->minibatch_seqs % world != 0)
        return cg_set_error(CG_ERR_INVALID_ARG, "rl_trainer: prompts_per_step %lld and minibatch_seqs %lld must be "
                            "multiples of the %d ranks", (long long)cfg->prompts_per_step,
                            (long long)cfg->minibatch_seqs, world);
    cg_rl_trainer *t = calloc(1, sizeof *t);
    if (!t) return cg_set_error(CG_ERR_OOM, "rl_trainer: out of memory");
    t->cfg = *cfg;
    t->comm = comm;
    t->world = world;
    t->rank = cg_comm_rank(comm);
    t->policy = policy, t->reference = reference, t->tok = tok, t->rewards = rewards, t->n_rewards = n_rewards;
    t->shuffle_rng = cg_rng_fork(&(cg_rng){cfg->seed, 0, 0}, 0x5bu);
    cg_tensor *params[4096];
    int n = cg_model_trainable(policy, params, 4096);
    if (n > 4096) s = cg_set_error(CG_ERR_INVALID_ARG, "rl_trainer: %d trainable tensors (at most 4096)", n);
    if (s == CG_OK && n == 0) s = cg_set_error(CG_ERR_INVALID_ARG, "rl_trainer: the policy has no trainable parameter");
    if (s == CG_OK) s = cg_model_alloc_grads(policy);
    if (s == CG_OK && world > 1) {
        s = broadcast_model(comm, policy);
        if (s == CG_OK) s = cg_dist_broadcast_params(comm, n, params); /* LoRA adapters */
        if (s == CG_OK && reference) s = broadcast_model(comm, reference);
        if (s == CG_OK) s = cg_grad_sync_create(comm, n, params, 0, &t->sync);
    }
    if (s == CG_OK && cfg->zero1) s = cg_optimizer_create_zero1(&cfg->opt, n, params, comm, &t->opt);
    else if (s == CG_OK) s = cg_optimizer_create(&cfg->opt, n, params, &t->opt);
    if (s == CG_OK) s = cg_optimizer_bind_working_copies(t->opt, policy); /* bf16 CUDA policy */
    if (s == CG_OK) s = cg_task_set_split(tasks, CG_SPLIT_TRAIN, &t->train);
    if (s != CG_OK) {
        cg_rl_trainer_free(t);
        return s;
    }
    *out = t;
    return CG_OK;
}

void cg_rl_trainer_free(cg_rl_trainer *t) {
    if (!t) return;
    cg_optimizer_free(t->opt);
    cg_grad_sync_free(t->sync);
    cg_task_set_free(t->train);
    free(t);
}

/* The next n training items: their prompts and answers (malloc'd copies in items[]). */
static cg_status draw_items(cg_rl_trainer *t, int64_t n, cg_task_item *items) {
    for (int64_t i = 0; i < n; i++) {
        int64_t size = cg_task_set_size(t->train);
        cg_status s = cg_task_set_get(t->train, t->next_item % size, &items[i]);
        if (s != CG_OK) return s;
        t->next_item++;
    }
    return CG_OK;
}

/* Log-probs of every sequence of a rollout under model m (no-grad), as a malloc'd [n_seq, max_resp] array. */
/* Sequences per no-grad forward of all_logprobs: bounds the activations of the old/reference passes (a
 * 128 x 576-token batch of a 0.5B model in one forward would need tens of GB on a GPU). */
#define LOGPROB_CHUNK_SEQS 16

static float *all_logprobs(cg_model *m, const cg_rollout *r, float temperature, double *entropy) {
    int64_t n = r->n_seq, T = r->max_resp;
    float *out = malloc(sizeof(float) * (size_t)(n * T));
    int64_t *sel = malloc(sizeof(int64_t) * (size_t)n);
    if (!out || !sel) {
        free(out), free(sel);
        cg_set_error(CG_ERR_OOM, "rl_trainer: out of memory");
        return NULL;
    }
    for (int64_t i = 0; i < n; i++) sel[i] = i;
    cg_arena *a = cg_step_arena(CG_CPU), *da = cg_device_eq(m->device, CG_CPU) ? NULL : cg_step_arena(m->device);
    double entropy_sum = 0, tokens = 0;
    bool ok = a && (da || cg_device_eq(m->device, CG_CPU));
    for (int64_t off = 0; ok && off < n; off += LOGPROB_CHUNK_SEQS) {
        int64_t nb = n - off < LOGPROB_CHUNK_SEQS ? n - off : LOGPROB_CHUNK_SEQS;
        cg_arena_mark mark = cg_arena_get_mark(a), dmark = da ? cg_arena_get_mark(da) : (cg_arena_mark){0};
        cg_no_grad_enter();
        cg_tensor *mask = NULL;
        double chunk_entropy = 0;
        cg_tensor *lp = cg_rollout_logprobs(m, r, sel + off, nb, temperature, &mask, entropy ? &chunk_entropy : NULL);
        cg_no_grad_exit();
        cg_tensor *hl = lp ? cg_tensor_to(a, lp, CG_F32) : NULL; /* packed f32 on the host, from any device */
        cg_tensor *hm = hl && entropy ? cg_tensor_to(a, mask, CG_F32) : NULL;
        ok = hl && (!entropy || hm);
        if (ok) memcpy(out + off * T, cg_data(hl), sizeof(float) * (size_t)(nb * T));
        if (ok && entropy) { /* the chunk's mean, weighted by its response tokens */
            double count = 0;
            for (int64_t k = 0; k < nb * T; k++) count += ((const float *)cg_data(hm))[k];
            entropy_sum += chunk_entropy * count, tokens += count;
        }
        cg_arena_rewind(a, mark);
        if (da) cg_arena_rewind(da, dmark);
    }
    free(sel);
    if (!ok) {
        free(out);
        return NULL;
    }
    if (entropy) *entropy = tokens > 0 ? entropy_sum / tokens : 0.0;
    return out;
}

/* The rows sel[0..n) of a [n_seq, T] host array as a tensor on dev (uploaded from the host). */
static cg_tensor *rows_tensor(const float *src, const int64_t *sel, int64_t n, int64_t T, cg_device dev) {
    int64_t s[2] = {n, T};
    cg_tensor *t = cg_tensor_empty(cg_step_arena(CG_CPU), CG_F32, 2, s);
    if (!t) return NULL;
    float *d = cg_data(t);
    for (int64_t k = 0; k < n; k++) memcpy(d + k * T, src + sel[k] * T, sizeof(float) * (size_t)T);
    return cg_device_eq(dev, CG_CPU) ? t : cg_tensor_clone(cg_output_arena(dev), t);
}

/* Generates the step's rollout: one batch, or with dynamic sampling several, keeping only groups whose
 * rewards differ until prompts_per_step groups are collected (or max_gen_batches batches were drawn). */
static cg_status collect_rollout(cg_rl_trainer *t, cg_rollout **out, cg_rl_step_stats *st) {
    const cg_rl_trainer_config *c = &t->cfg;
    /* every rank draws the job's P items and keeps its slice */
    int64_t P_all = c->prompts_per_step, P = P_all / t->world, first = (int64_t)t->rank * P, G = c->group_size;
    int max_batches = c->obj.dynamic_sampling ? (c->obj.max_gen_batches > 0 ? c->obj.max_gen_batches : 3) : 1;
    cg_rollout *keep = NULL;
    cg_status s = CG_OK;
    for (int b = 0; b < max_batches && s == CG_OK; b++) {
        cg_task_item *items = calloc((size_t)P_all, sizeof *items);
        const char **prompts = calloc((size_t)P, sizeof *prompts), **answers = calloc((size_t)P, sizeof *answers);
        cg_rollout *r = NULL;
        s = items && prompts && answers ? draw_items(t, P_all, items) : cg_set_error(CG_ERR_OOM, "rl_trainer: out of memory");
        for (int64_t i = 0; s == CG_OK && i < P; i++)
            prompts[i] = items[first + i].prompt, answers[i] = items[first + i].answer;
        cg_rollout_config rc = {.group_size = G, .sampling = c->sampling};
        rc.sampling.seed = c->seed * 1000003u + (uint64_t)t->step * 64u + (uint64_t)b;
        rc.sampling.first_stream = (uint64_t)(first * G); /* the rows the single-process run gives these prompts */
        if (s == CG_OK) s = cg_rollout_generate(t->policy, t->tok, prompts, answers, P, &rc, t->rewards, t->n_rewards, &r);
        st->rollout_batches++;
        if (s == CG_OK && c->obj.overlong_penalty)
            s = cg_apply_soft_overlong_penalty(r->rewards, r->resp_len, r->n_seq, c->sampling.max_new_tokens,
                                               c->obj.overlong_cache_len, c->obj.overlong_penalty_factor);
        if (s == CG_OK && c->obj.dynamic_sampling) {
            bool *sig = calloc((size_t)P, sizeof *sig);
            int64_t n_kept = 0;
            s = sig ? cg_groups_with_signal(r->rewards, r->n_seq, G, sig, &n_kept) : cg_set_error(CG_ERR_OOM, "oom");
            /* the kept groups move to the front: a rollout with fewer prompts */
            int64_t w = 0;
            for (int64_t p = 0; s == CG_OK && p < P; p++) {
                if (!sig[p]) {
                    st->groups_dropped++;
                    continue;
                }
                if (keep && keep->n_prompts + w >= P) break;
                for (int64_t g = 0; g < G; g++) {
                    int64_t from = p * G + g, to = w * G + g;
                    if (from == to) continue;
                    free(r->tokens[to]), free(r->responses[to]);
                    r->tokens[to] = r->tokens[from], r->responses[to] = r->responses[from];
                    r->tokens[from] = NULL, r->responses[from] = NULL;
                    r->prompt_len[to] = r->prompt_len[from], r->resp_len[to] = r->resp_len[from];
                    r->rewards[to] = r->rewards[from], r->truncated[to] = r->truncated[from];
                    memmove(r->sample_logp + to * r->max_resp, r->sample_logp + from * r->max_resp,
                            sizeof(float) * (size_t)r->max_resp);
                }
                w++;
            }
            free(sig);
            for (int64_t i = w * G; i < r->n_seq; i++) { /* drop the tail */
                free(r->tokens[i]), free(r->responses[i]);
                r->tokens[i] = NULL, r->responses[i] = NULL;
            }
            r->n_prompts = w, r->n_seq = w * G;
        }
        for (int64_t i = 0; items && i < P_all; i++) cg_task_item_free(&items[i]);
        free(items), free(prompts), free(answers);
        if (s != CG_OK) {
            cg_rollout_free(r);
            break;
        }
        r->answers = NULL; /* the answers were freed with the items */
        if (r->n_seq == 0) { /* dynamic sampling kept no group of this batch */
            cg_rollout_free(r);
            continue;
        }
        if (!keep) {
            keep = r;
        } else { /* append r's sequences to keep */
            s = CG_ERR_UNSUPPORTED;
            cg_rollout *m = keep;
            int64_t n = m->n_seq + r->n_seq, T = m->max_resp > r->max_resp ? m->max_resp : r->max_resp;
            float *lp = calloc((size_t)(n * T), sizeof *lp);
            int64_t *pl = realloc(m->prompt_len, sizeof *pl * (size_t)n);
            if (pl) m->prompt_len = pl;
            int64_t *rl = realloc(m->resp_len, sizeof *rl * (size_t)n);
            if (rl) m->resp_len = rl;
            int32_t **tk = realloc(m->tokens, sizeof *tk * (size_t)n);
            if (tk) m->tokens = tk;
            char **rs = realloc(m->responses, sizeof *rs * (size_t)n);
            if (rs) m->responses = rs;
            float *rw = realloc(m->rewards, sizeof *rw * (size_t)n);
            if (rw) m->rewards = rw;
            uint8_t *tr = realloc(m->truncated, sizeof *tr * (size_t)n);
            if (tr) m->truncated = tr;
            if (lp && pl && rl && tk && rs && rw && tr) {
                for (int64_t i = 0; i < m->n_seq; i++)
                    memcpy(lp + i * T, m->sample_logp + i * m->max_resp, sizeof(float) * (size_t)m->max_resp);
                for (int64_t i = 0; i < r->n_seq; i++) {
                    int64_t j = m->n_seq + i;
                    memcpy(lp + j * T, r->sample_logp + i * r->max_resp, sizeof(float) * (size_t)r->max_resp);
                    pl[j] = r->prompt_len[i], rl[j] = r->resp_len[i], tk[j] = r->tokens[i], rs[j] = r->responses[i];
                    rw[j] = r->rewards[i], tr[j] = r->truncated[i];
                    r->tokens[i] = NULL, r->responses[i] = NULL;
                }
                free(m->sample_logp);
                m->sample_logp = lp, m->max_resp = T, m->n_seq = n, m->n_prompts += r->n_prompts;
                s = CG_OK;
            } else {
                free(lp);
                s = cg_set_error(CG_ERR_OOM, "rl_trainer: out of memory");
            }
            cg_rollout_free(r);
        }
        if (!c->obj.dynamic_sampling || keep->n_prompts >= P) break;
    }
    *out = keep;
    return s;
}

/* Data parallel: every rank keeps the smallest number of groups any rank kept (0: no rank trains). */
static cg_status equalize_groups(cg_rl_trainer *t, cg_rollout **rp) {
    cg_rollout *r = *rp;
    int64_t G = t->cfg.group_size;
    double *counts = calloc((size_t)t->world, sizeof *counts);
    if (!counts) return cg_set_error(CG_ERR_OOM, "rl_trainer: out of memory");
    counts[t->rank] = r ? (double)(r->n_seq / G) : 0.0;
    cg_status s = cg_comm_allreduce_f64(t->comm, counts, t->world, CG_COMM_SUM);
    double least = counts[0];
    for (int i = 1; i < t->world; i++) least = counts[i] < least ? counts[i] : least;
    free(counts);
    if (s != CG_OK) return s;
    int64_t keep = (int64_t)least;
    if (r && keep == 0) {
        cg_rollout_free(r);
        *rp = NULL;
    } else if (r && r->n_seq > keep * G) {
        for (int64_t i = keep * G; i < r->n_seq; i++) {
            free(r->tokens[i]), free(r->responses[i]);
            r->tokens[i] = NULL, r->responses[i] = NULL;
        }
        r->n_seq = keep * G, r->n_prompts = keep;
    }
    return CG_OK;
}

/* Data parallel: the step's statistics as means over every rank's sequences (tokens for entropy and KL). */
static cg_status global_stats(cg_rl_trainer *t, cg_rl_step_stats *st) {
    double n = (double)st->sequences, tok = (double)st->tokens;
    double v[7] = {st->reward * n, st->accuracy * n, st->response_len * n, n, tok, st->entropy * tok,
                   isnan(st->kl) ? 0.0 : st->kl * tok};
    cg_status s = cg_comm_allreduce_f64(t->comm, v, 7, CG_COMM_SUM);
    if (s != CG_OK) return s;
    st->sequences = (int64_t)v[3], st->tokens = (int64_t)v[4];
    if (v[3] > 0) st->reward = v[0] / v[3], st->accuracy = v[1] / v[3], st->response_len = v[2] / v[3];
    if (v[4] > 0) {
        st->entropy = v[5] / v[4];
        if (!isnan(st->kl)) st->kl = v[6] / v[4];
    }
    return CG_OK;
}

/* Data parallel: a mini-batch's sequence and token counts summed over the ranks, as the denominators of the
 * global means (divided by W: the gradient all-reduce averages), and DisCO's KL over all ranks' tokens. */
static cg_status global_counts(cg_rl_trainer *t, const cg_rollout *r, const int64_t *sel, int64_t nb,
                               const bool *trunc_b, const cg_tensor *logp, const float *old_lp, cg_rl_inputs *in) {
    const cg_rl_config *o = &t->cfg.obj;
    bool disco = o->algo == CG_RL_DISCO || o->algo == CG_RL_DISCOB;
    double v[3] = {(double)nb, 0.0, 0.0};
    int64_t T = r->max_resp, LT = logp->shape[1];
    /* DisCO's KL reads logp on the host (a packed f32 copy when it lives on a GPU or is bf16) */
    if (disco && !(logp = cg_tensor_to(cg_step_arena(CG_CPU), logp, CG_F32))) return cg_last_status();
    for (int64_t k = 0; k < nb; k++) {
        if (o->overlong_filter && trunc_b[k]) continue; /* cg_rl_loss masks these */
        int64_t len = r->resp_len[sel[k]];
        v[1] += (double)len;
        for (int64_t j = 0; disco && j < len; j++) {
            double d = cg_get_flat(logp, k * LT + j) - (double)old_lp[sel[k] * T + j];
            v[2] += o->disco_kl == CG_DISCO_KL_K1 ? -d : exp(d) - d - 1.0;
        }
    }
    cg_status s = cg_comm_allreduce_f64(t->comm, v, 3, CG_COMM_SUM);
    if (s != CG_OK) return s;
    in->seq_count = v[0] / t->world;
    in->token_count = v[1] / t->world;
    if (disco) {
        in->disco_kl_given = true;
        in->disco_kl = v[1] > 0 ? v[2] / v[1] : 0.0;
    }
    return CG_OK;
}

cg_status cg_rl_trainer_step(cg_rl_trainer *t, cg_rl_step_stats *st) {
    const cg_rl_trainer_config *c = &t->cfg;
    cg_rl_step_stats zero = {0};
    *st = zero;
    st->step = t->step;
    st->kl = NAN;
    double t0 = now_s();
    cg_rollout *r = NULL;
    cg_status s = collect_rollout(t, &r, st);
    if (s != CG_OK) return s;
    st->rollout_seconds = now_s() - t0;
    t->step++;
    if (t->world > 1 && (s = equalize_groups(t, &r)) != CG_OK) {
        cg_rollout_free(r);
        return s;
    }
    if (!r) { /* dynamic sampling found no group with signal: nothing to learn from this step */
        cg_step_end();
        return CG_OK;
    }
    int64_t n = r->n_seq, T = r->max_resp, G = c->group_size;
    st->sequences = n;
    st->reward = cg_rollout_mean_reward(r);
    st->accuracy = cg_rollout_fraction_at_least(r, c->correct_reward);
    st->response_len = cg_rollout_mean_response_len(r);
    for (int64_t i = 0; i < n; i++) st->tokens += r->resp_len[i];
    st->rollout_tokens_per_s = st->rollout_seconds > 0 ? (double)st->tokens / st->rollout_seconds : 0;

    double t1 = now_s();
    float temperature = c->sampling.temperature > 0.0f ? c->sampling.temperature : 1.0f;
    float *adv = malloc(sizeof(float) * (size_t)n);
    float *old_lp = all_logprobs(t->policy, r, temperature, &st->entropy);
    float *ref_lp = NULL;
    bool lora_ref = !t->reference && cg_lora_attached(t->policy);
    if (old_lp && (t->reference || lora_ref)) {
        if (lora_ref) cg_lora_set_enabled(t->policy, false);
        ref_lp = all_logprobs(t->reference ? t->reference : t->policy, r, temperature, NULL);
        if (lora_ref) cg_lora_set_enabled(t->policy, true);
        if (!ref_lp) s = cg_last_status();
    }
    if (!adv || !old_lp) s = adv ? cg_last_status() : cg_set_error(CG_ERR_OOM, "rl_trainer: out of memory");
    if (s == CG_OK) s = cg_compute_advantages(c->obj.adv_kind, r->rewards, n, G, c->obj.adv_eps, adv);
    if (s == CG_OK && ref_lp) { /* the logged KL: mean k3 over response tokens, before the update */
        double kl = 0;
        int64_t cnt = 0;
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < r->resp_len[i]; j++) {
                double d = (double)ref_lp[i * T + j] - (double)old_lp[i * T + j];
                kl += exp(d) - d - 1.0, cnt++;
            }
        st->kl = cnt ? kl / (double)cnt : 0.0;
    }
    bool *trunc = malloc(sizeof(bool) * (size_t)n);
    int64_t *order = malloc(sizeof(int64_t) * (size_t)n);
    if (s == CG_OK && (!trunc || !order)) s = cg_set_error(CG_ERR_OOM, "rl_trainer: out of memory");
    for (int64_t i = 0; s == CG_OK && i < n; i++) trunc[i] = r->truncated[i], order[i] = i;
    if (s == CG_OK && t->world > 1) s = global_stats(t, st);
    int64_t mb_rank = c->minibatch_seqs / t->world; /* this rank's share of a mini-batch */
    int64_t mb = mb_rank > 0 && mb_rank < n ? mb_rank : n;
    /* DisCO compares sequences within a group: its mini-batches must hold whole groups */
    if (c->obj.algo == CG_RL_DISCO || c->obj.algo == CG_RL_DISCOB) mb = ((mb + G - 1) / G) * G;
    int64_t total_tokens = 0;
    for (int e = 0; s == CG_OK && e < c->epochs; e++) {
        /* shuffle whole groups (DisCO needs them together; harmless for the token-level objectives) */
        int64_t ng = n / G;
        for (int64_t g = ng - 1; g > 0; g--) {
            uint32_t u;
            cg_rng_u32(&t->shuffle_rng, &u, 1);
            int64_t k = (int64_t)(u % (uint32_t)(g + 1));
            for (int64_t j = 0; j < G; j++) {
                int64_t tmp = order[g * G + j];
                order[g * G + j] = order[k * G + j], order[k * G + j] = tmp;
            }
        }
        for (int64_t b0 = 0; s == CG_OK && b0 < n; b0 += mb) {
            int64_t nb = n - b0 < mb ? n - b0 : mb;
            const int64_t *sel = order + b0;
            float *adv_b = malloc(sizeof(float) * (size_t)nb), *rew_b = malloc(sizeof(float) * (size_t)nb);
            bool *tr_b = malloc(sizeof(bool) * (size_t)nb);
            if (!adv_b || !rew_b || !tr_b) s = cg_set_error(CG_ERR_OOM, "rl_trainer: out of memory");
            for (int64_t k = 0; s == CG_OK && k < nb; k++)
                adv_b[k] = adv[sel[k]], rew_b[k] = r->rewards[sel[k]], tr_b[k] = trunc[sel[k]];
            cg_tensor *mask = NULL;
            cg_tensor *logp = s == CG_OK ? cg_rollout_logprobs(t->policy, r, sel, nb, temperature, &mask, NULL) : NULL;
            cg_tensor *old_t = logp ? rows_tensor(old_lp, sel, nb, T, logp->device) : NULL;
            cg_tensor *ref_t = logp && ref_lp ? rows_tensor(ref_lp, sel, nb, T, logp->device) : NULL;
            if (s == CG_OK && (!logp || !old_t || (ref_lp && !ref_t))) s = cg_last_status();
            if (s == CG_OK) {
                cg_rl_inputs in = {.logp = logp, .old_logp = old_t, .ref_logp = ref_t, .mask = mask,
                                   .advantages = adv_b, .rewards = rew_b, .truncated = tr_b, .group_size = G};
                cg_rl_stats rs;
                if (t->world > 1) s = global_counts(t, r, sel, nb, tr_b, logp, old_lp, &in);
                cg_tensor *loss = s == CG_OK ? cg_rl_loss(&c->obj, &in, &rs) : NULL;
                if (s == CG_OK && t->sync) s = cg_grad_sync_begin(t->sync, true);
                if (s == CG_OK) s = loss ? cg_backward(loss) : cg_last_status();
                if (t->sync) {
                    cg_status f = cg_grad_sync_finish(t->sync);
                    if (s == CG_OK) s = f;
                }
                cg_optim_step_info info = {0};
                if (s == CG_OK) s = cg_optimizer_step(t->opt, c->opt.lr, &info);
                cg_optimizer_zero_grad(t->opt);
                if (s == CG_OK) {
                    double v[2] = {rs.loss, rs.clip_frac};
                    if (t->world > 1) s = cg_comm_allreduce_f64(t->comm, v, 2, CG_COMM_AVG);
                    st->loss = v[0], st->clip_fraction = v[1];
                }
                st->grad_norm = info.grad_norm;
                total_tokens += rs.n_tokens;
            }
            free(adv_b), free(rew_b), free(tr_b);
            cg_step_end(); /* the mini-batch's activations and tape */
        }
    }
    st->update_seconds = now_s() - t1;
    st->update_tokens_per_s = st->update_seconds > 0 ? (double)total_tokens / st->update_seconds : 0;
    free(adv), free(old_lp), free(ref_lp), free(trunc), free(order);
    cg_rollout_free(r);
    cg_step_end();
    return s;
}

cg_status cg_rl_evaluate(cg_model *m, const cg_tokenizer *tok, const cg_task_set *tasks, int64_t n,
                         int64_t max_new_tokens, const cg_reward *rewards, int n_rewards, float correct,
                         double *accuracy) {
    if (!accuracy || n <= 0) return cg_set_error(CG_ERR_INVALID_ARG, "rl_evaluate: needs n > 0 and an output");
    cg_task_set *held = NULL;
    cg_status s = cg_task_set_split(tasks, CG_SPLIT_HELDOUT, &held);
    if (s != CG_OK) return s;
    int64_t size = cg_task_set_size(held);
    if (n > size) n = size;
    cg_task_item *items = calloc((size_t)n, sizeof *items);
    const char **prompts = calloc((size_t)n, sizeof *prompts), **answers = calloc((size_t)n, sizeof *answers);
    if (!items || !prompts || !answers) s = cg_set_error(CG_ERR_OOM, "rl_evaluate: out of memory");
    for (int64_t i = 0; s == CG_OK && i < n; i++) {
        s = cg_task_set_get(held, i, &items[i]);
        if (s == CG_OK) prompts[i] = items[i].prompt, answers[i] = items[i].answer;
    }
    cg_rollout *r = NULL;
    if (s == CG_OK) {
        cg_rollout_config rc = {.group_size = 1, .sampling = {.temperature = 0.0f, .max_new_tokens = max_new_tokens}};
        s = cg_rollout_generate(m, tok, prompts, answers, n, &rc, rewards, n_rewards, &r);
    }
    if (s == CG_OK) *accuracy = cg_rollout_fraction_at_least(r, correct);
    cg_rollout_free(r);
    for (int64_t i = 0; items && i < n; i++) cg_task_item_free(&items[i]);
    free(items), free(prompts), free(answers);
    cg_task_set_free(held);
    cg_step_end();
    return s;
}
