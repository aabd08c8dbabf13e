/* Policy-gradient losses (spec/rl_objectives.md sections 0-5): configuration defaults, input checks, the
 * aggregation modes, and the token-level objectives (GRPO, Dr. GRPO, DAPO, GPPO, REINFORCE). DisCO is in
 * rl/objective_disco.c. Every loss is built from autograd ops, so its gradient is the tape's. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/context.h"
#include "rl/objective_internal.h"

/* ------------------------------------------------------------------ names */

static const char *const algo_names[CG_RL_ALGO_COUNT] = {"grpo", "drgrpo", "dapo", "gppo", "disco", "discob", "reinforce"};
static const char *const agg_names[CG_AGG_COUNT] = {"seq-mean-token-mean", "token-mean", "token-sum-norm",
                                                     "seq-mean-token-sum"};
static const char *const score_names[2] = {"log-l", "l-ratio"};

static cg_status parse_name(const char *what, const char *name, const char *const *names, int count, int *out) {
    if (!name || !out) return cg_set_error(CG_ERR_INVALID_ARG, "%s: NULL argument", what);
    char choices[256] = "";
    for (int k = 0; k < count; k++) {
        if (strcmp(name, names[k]) == 0) {
            *out = k;
            return CG_OK;
        }
        strncat(choices, k ? ", " : "", sizeof choices - strlen(choices) - 1);
        strncat(choices, names[k], sizeof choices - strlen(choices) - 1);
    }
    return cg_set_error(CG_ERR_INVALID_ARG, "%s: unknown \"%s\" (choices: %s)", what, name, choices);
}

const char *cg_rl_algo_name(cg_rl_algo a) { return (a >= 0 && a < CG_RL_ALGO_COUNT) ? algo_names[a] : "unknown"; }
const char *cg_rl_aggregation_name(cg_rl_aggregation a) { return (a >= 0 && a < CG_AGG_COUNT) ? agg_names[a] : "unknown"; }
const char *cg_disco_score_name(cg_disco_score s) { return (s >= 0 && s <= 1) ? score_names[s] : "unknown"; }

cg_status cg_rl_algo_parse(const char *name, cg_rl_algo *algo) {
    int k = 0;
    cg_status st = parse_name("rl algorithm", name, algo_names, CG_RL_ALGO_COUNT, &k);
    if (st == CG_OK) *algo = (cg_rl_algo)k;
    return st;
}
cg_status cg_rl_aggregation_parse(const char *name, cg_rl_aggregation *agg) {
    int k = 0;
    cg_status st = parse_name("loss aggregation", name, agg_names, CG_AGG_COUNT, &k);
    if (st == CG_OK) *agg = (cg_rl_aggregation)k;
    return st;
}
cg_status cg_disco_score_parse(const char *name, cg_disco_score *score) {
    int k = 0;
    cg_status st = parse_name("disco score", name, score_names, 2, &k);
    if (st == CG_OK) *score = (cg_disco_score)k;
    return st;
}

/* ------------------------------------------------------------------ defaults */

cg_rl_config cg_rl_config_default(cg_rl_algo algo) {
    cg_rl_config c;
    memset(&c, 0, sizeof c);
    c.algo = algo;
    c.aggregation = CG_AGG_TOKEN_MEAN;
    c.norm_constant = 0;                    /* = T; set it to the generation budget (spec 2.1) */
    c.adv_kind = CG_ADV_GROUP_MEAN_STD;
    c.adv_eps = CG_ADV_EPS_VERL;
    c.clip_low = 0.2f;                      /* spec 1.2: the standard eps of every implementation */
    c.clip_high = 0.2f;
    c.dual_clip = 0;
    c.log_ratio_clamp = 20.0f;              /* verl compute_policy_loss_vanilla (spec 1.5) */
    c.kl_beta = 0;
    c.gppo_beta1 = 1.0f;                    /* spec 4.3: the paper's plain GPPO (README later suggests 0.25-0.5) */
    c.gppo_beta2 = 1.0f;
    c.sft_coef = 0;
    c.sft_positive_reward = 1.0f;
    c.disco_score = CG_DISCO_SCORE_LOG_L;
    c.disco_tau = 10.0f;                    /* spec 3.5: 10 for log-L (the scripts use 1 for L-ratio) */
    c.disco_beta = 1e3f;                    /* spec 3.5 */
    c.disco_delta = 1e-4f;                  /* spec 3.5 */
    c.disco_kl = CG_DISCO_KL_K1;            /* spec 3.5: ppo_kl_type "kl" */
    c.dynamic_sampling = false;
    c.max_gen_batches = 10;                 /* not fixed by the spec: a cap so uniform groups cannot loop forever */
    c.overlong_filter = false;
    c.overlong_penalty = false;
    c.overlong_cache_len = 4096;            /* spec 2.2: verl recipe overlong_buffer.len */
    c.overlong_penalty_factor = 1.0f;       /* spec 2.2: penalty_factor */
    switch (algo) {
    case CG_RL_GRPO:
        c.aggregation = CG_AGG_SEQ_MEAN_TOKEN_MEAN; /* spec 1.1: the paper's 1/G sum_i 1/|o_i| sum_t */
        c.adv_eps = CG_ADV_EPS_TRL;                 /* spec 1.4: TRL's (R - mean) / (std + 1e-4) */
        c.kl_beta = 0.04f;                          /* spec 1.2: DeepSeekMath beta */
        break;
    case CG_RL_DRGRPO:
        c.aggregation = CG_AGG_TOKEN_SUM_NORM;      /* spec 2.1 "Modification 1" */
        c.adv_kind = CG_ADV_GROUP_MEAN;             /* spec 2.1 "Modification 2" */
        break;
    case CG_RL_DAPO:
        c.clip_high = 0.28f;                        /* spec 2.2: clip-higher */
        c.dual_clip = 3.0f;                         /* spec 2.2: the verl recipe still applies clip_ratio_c = 3 */
        c.dynamic_sampling = true;                  /* spec 2.2 item 2 */
        c.overlong_penalty = true;                  /* spec 2.2 item 4: the best runs used soft punishment */
        break;
    case CG_RL_GPPO:
        c.clip_high = 0.28f;                        /* spec 4.4: Klear scripts */
        c.dual_clip = 10.0f;                        /* spec 4.4: Klear scripts use clip_ratio_c = 10 */
        c.sft_coef = 0.1f;                          /* spec 4.4: positive_loss_coeff in the scripts */
        break;
    case CG_RL_DISCO:
    case CG_RL_DISCOB:
        c.adv_kind = CG_ADV_NONE;                   /* spec 3: advantages are not used */
        break;
    case CG_RL_REINFORCE:
        c.adv_kind = CG_ADV_GROUP_MEAN;             /* spec 1.3: REINFORCE with a group baseline */
        break;
    default: break;
    }
    return c;
}

static bool finite_nonneg(float v) { return isfinite(v) && v >= 0; }

cg_status cg_rl_config_check(const cg_rl_config *c) {
#define BAD(...) return cg_set_error(CG_ERR_INVALID_ARG, __VA_ARGS__)
    if (!c) BAD("rl config: NULL");
    if (c->algo < 0 || c->algo >= CG_RL_ALGO_COUNT) BAD("rl config: unknown algo %d", (int)c->algo);
    if (c->aggregation < 0 || c->aggregation >= CG_AGG_COUNT) BAD("rl config: unknown aggregation %d", (int)c->aggregation);
    if (c->adv_kind < 0 || c->adv_kind >= CG_ADV_KIND_COUNT) BAD("rl config: unknown adv_kind %d", (int)c->adv_kind);
    if (!finite_nonneg(c->adv_eps)) BAD("rl config: adv_eps is %g, need >= 0", (double)c->adv_eps);
    if (!finite_nonneg(c->norm_constant)) BAD("rl config: norm_constant is %g, need >= 0", (double)c->norm_constant);
    if (!finite_nonneg(c->clip_low) || c->clip_low >= 1)
        BAD("rl config: clip_low is %g, need 0 <= clip_low < 1", (double)c->clip_low);
    if (!finite_nonneg(c->clip_high)) BAD("rl config: clip_high is %g, need >= 0", (double)c->clip_high);
    if (!finite_nonneg(c->dual_clip) || (c->dual_clip != 0 && c->dual_clip <= 1))
        BAD("rl config: dual_clip is %g, need 0 (off) or > 1", (double)c->dual_clip);
    if (!finite_nonneg(c->log_ratio_clamp)) BAD("rl config: log_ratio_clamp is %g, need >= 0", (double)c->log_ratio_clamp);
    if (!finite_nonneg(c->kl_beta)) BAD("rl config: kl_beta is %g, need >= 0", (double)c->kl_beta);
    if (!finite_nonneg(c->gppo_beta1) || !finite_nonneg(c->gppo_beta2))
        BAD("rl config: gppo_beta1 %g and gppo_beta2 %g must be >= 0", (double)c->gppo_beta1, (double)c->gppo_beta2);
    if (!finite_nonneg(c->sft_coef)) BAD("rl config: sft_coef is %g, need >= 0", (double)c->sft_coef);
    if (!isfinite(c->sft_positive_reward)) BAD("rl config: sft_positive_reward is not finite");
    if (c->disco_score != CG_DISCO_SCORE_LOG_L && c->disco_score != CG_DISCO_SCORE_L_RATIO)
        BAD("rl config: unknown disco_score %d", (int)c->disco_score);
    if (c->disco_kl != CG_DISCO_KL_K1 && c->disco_kl != CG_DISCO_KL_K3) BAD("rl config: unknown disco_kl %d", (int)c->disco_kl);
    if (!finite_nonneg(c->disco_tau) || c->disco_tau == 0) BAD("rl config: disco_tau is %g, need > 0", (double)c->disco_tau);
    if (!finite_nonneg(c->disco_beta)) BAD("rl config: disco_beta is %g, need >= 0", (double)c->disco_beta);
    if (!finite_nonneg(c->disco_delta)) BAD("rl config: disco_delta is %g, need >= 0", (double)c->disco_delta);
    if (c->max_gen_batches < 0) BAD("rl config: max_gen_batches is %d, need >= 0", c->max_gen_batches);
    if (c->overlong_cache_len < 0) BAD("rl config: overlong_cache_len is %lld, need >= 0", (long long)c->overlong_cache_len);
    if (!isfinite(c->overlong_penalty_factor)) BAD("rl config: overlong_penalty_factor is not finite");
#undef BAD
    return CG_OK;
}

/* ------------------------------------------------------------------ tensor helpers */

cg_tensor *cg_rl_const_tensor(cg_device dev, int ndim, const int64_t *shape, const float *data) {
    cg_arena *a = cg_output_arena(dev);
    return a ? cg_tensor_from_data(a, CG_F32, ndim, shape, data) : NULL;
}

cg_tensor *cg_rl_scalar_tensor(cg_device dev, float value) { return cg_rl_const_tensor(dev, 0, NULL, &value); }

cg_status cg_rl_to_host(const cg_tensor *t, float *buf) {
    cg_tensor *w = cg_tensor_wrap(cg_step_arena(CG_CPU), CG_F32, CG_CPU, t->ndim, t->shape, buf);
    if (!w) return cg_last_status();
    return cg_copy(w, t);
}

double cg_rl_read_scalar(const cg_tensor *t) {
    float v = NAN;
    if (!t || cg_numel(t) != 1) return NAN;
    if (cg_rl_to_host(t, &v) != CG_OK) return NAN;
    return v;
}

cg_tensor *cg_rl_masked(const cg_rl_batch *b, const cg_tensor *mask_t, const cg_tensor *x) {
    return x ? cg_where(mask_t, x, b->zero) : NULL;
}

/* ------------------------------------------------------------------ the batch */

static void batch_free(cg_rl_batch *b) {
    free(b->mask);
    free(b->logp);
    free(b->old);
    free(b->ref);
    memset(b, 0, sizeof *b);
}

static bool is_token_level(cg_rl_algo a) { return a != CG_RL_DISCO && a != CG_RL_DISCOB; }

/* A [n, T] input: logp's shape and device; float ones (old, ref) must be f32. */
static cg_status check_like_logp(const char *name, const cg_tensor *t, const cg_tensor *logp, bool need_f32) {
    char dt[160], dl[160];
    if (t->ndim != 2 || t->shape[0] != logp->shape[0] || t->shape[1] != logp->shape[1])
        return cg_set_error(CG_ERR_SHAPE, "rl loss: %s %s does not have logp's shape (logp %s)", name,
                            cg_tensor_desc(t, dt, sizeof dt), cg_tensor_desc(logp, dl, sizeof dl));
    if (t->device.type != logp->device.type || t->device.index != logp->device.index)
        return cg_set_error(CG_ERR_DEVICE, "rl loss: %s %s is not on logp's device (logp %s)", name,
                            cg_tensor_desc(t, dt, sizeof dt), cg_tensor_desc(logp, dl, sizeof dl));
    if (need_f32 && t->dtype != CG_F32)
        return cg_set_error(CG_ERR_DTYPE, "rl loss: %s %s must be f32", name, cg_tensor_desc(t, dt, sizeof dt));
    return CG_OK;
}

static cg_status check_finite(const char *what, const float *v, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(v[i]))
            return cg_set_error(CG_ERR_INVALID_ARG, "rl loss: %s[%lld] is %g (not finite)", what, (long long)i,
                                (double)v[i]);
    return CG_OK;
}

/* Checks the inputs against cfg and fills b; host copies of logp/old/ref only when want_values (stats). */
static cg_status batch_init(cg_rl_batch *b, const cg_rl_config *cfg, const cg_rl_inputs *in, bool want_values) {
    memset(b, 0, sizeof *b);
    cg_status st = cg_rl_config_check(cfg);
    if (st != CG_OK) return st;
    if (!in || !in->logp) return cg_set_error(CG_ERR_INVALID_ARG, "rl loss: NULL inputs or logp");
    const cg_tensor *logp = in->logp;
    char dl[160];
    if (logp->ndim != 2 || logp->dtype != CG_F32 || logp->shape[0] < 1 || logp->shape[1] < 1)
        return cg_set_error(CG_ERR_SHAPE, "rl loss: logp %s must be f32 [n_seq, T] with n_seq, T >= 1",
                            cg_tensor_desc(logp, dl, sizeof dl));
    b->cfg = cfg;
    b->in = in;
    b->n = logp->shape[0];
    b->T = logp->shape[1];
    b->dev = logp->device;
    const int64_t n = b->n, T = b->T, nt = n * T;
    if (in->old_logp && (st = check_like_logp("old_logp", in->old_logp, logp, true)) != CG_OK) return st;
    if (in->ref_logp && (st = check_like_logp("ref_logp", in->ref_logp, logp, true)) != CG_OK) return st;
    if (in->mask && (st = check_like_logp("mask", in->mask, logp, false)) != CG_OK) return st;
    if (in->group_size < 0 || (in->group_size > 0 && n % in->group_size != 0))
        return cg_set_error(CG_ERR_INVALID_ARG, "rl loss: group size %lld does not divide n_seq %lld",
                            (long long)in->group_size, (long long)n);
    if (!(in->token_count >= 0) || !(in->seq_count >= 0) || !isfinite(in->token_count) || !isfinite(in->seq_count))
        return cg_set_error(CG_ERR_INVALID_ARG, "rl loss: token_count %g and seq_count %g must be >= 0",
                            in->token_count, in->seq_count);
    const char *algo = cg_rl_algo_name(cfg->algo);
    if (is_token_level(cfg->algo)) {
        if (!in->advantages == !in->token_advantages)
            return cg_set_error(CG_ERR_INVALID_ARG, "rl loss (%s): give exactly one of advantages [n_seq] and "
                                "token_advantages [n_seq * T]", algo);
        if (in->advantages && (st = check_finite("advantages", in->advantages, n)) != CG_OK) return st;
        if (in->token_advantages && (st = check_finite("token_advantages", in->token_advantages, nt)) != CG_OK)
            return st;
        if (cfg->kl_beta > 0 && !in->ref_logp)
            return cg_set_error(CG_ERR_INVALID_ARG, "rl loss (%s): kl_beta is %g but ref_logp is NULL", algo,
                                (double)cfg->kl_beta);
        if (cfg->algo == CG_RL_GPPO && cfg->sft_coef > 0 && !in->rewards)
            return cg_set_error(CG_ERR_INVALID_ARG, "rl loss (gppo): sft_coef is %g but rewards is NULL",
                                (double)cfg->sft_coef);
    } else {
        if (in->group_size < 1)
            return cg_set_error(CG_ERR_INVALID_ARG, "rl loss (%s): group_size is needed (responses per prompt)", algo);
        if (!in->rewards) return cg_set_error(CG_ERR_INVALID_ARG, "rl loss (%s): rewards is NULL", algo);
        if (cfg->kl_beta > 0)
            return cg_set_error(CG_ERR_INVALID_ARG, "rl loss (%s): kl_beta must be 0 (DisCO uses no reference model; "
                                "its trust region is disco_beta / disco_delta)", algo);
    }
    if (in->rewards && (st = check_finite("rewards", in->rewards, n)) != CG_OK) return st;

    if (!(b->mask = malloc(sizeof(float) * (size_t)nt))) return cg_set_error(CG_ERR_OOM, "rl loss: host mask");
    if (in->mask) {
        if ((st = cg_rl_to_host(in->mask, b->mask)) != CG_OK) return st;
        for (int64_t k = 0; k < nt; k++) b->mask[k] = b->mask[k] != 0.0f ? 1.0f : 0.0f;
    } else {
        for (int64_t k = 0; k < nt; k++) b->mask[k] = 1.0f;
    }
    if (cfg->overlong_filter && in->truncated)
        for (int64_t i = 0; i < n; i++)
            if (in->truncated[i]) memset(b->mask + i * T, 0, sizeof(float) * (size_t)T);
    for (int64_t k = 0; k < nt; k++) b->n_tokens += b->mask[k];

    if (want_values) {
        if (!(b->logp = malloc(sizeof(float) * (size_t)nt))) return cg_set_error(CG_ERR_OOM, "rl loss: host logp");
        if ((st = cg_rl_to_host(logp, b->logp)) != CG_OK) return st;
        if (in->old_logp) {
            if (!(b->old = malloc(sizeof(float) * (size_t)nt))) return cg_set_error(CG_ERR_OOM, "rl loss: host old_logp");
            if ((st = cg_rl_to_host(in->old_logp, b->old)) != CG_OK) return st;
        }
        if (in->ref_logp) {
            if (!(b->ref = malloc(sizeof(float) * (size_t)nt))) return cg_set_error(CG_ERR_OOM, "rl loss: host ref_logp");
            if ((st = cg_rl_to_host(in->ref_logp, b->ref)) != CG_OK) return st;
        }
    }
    int64_t shape[2] = {n, T};
    b->mask_t = cg_rl_const_tensor(b->dev, 2, shape, b->mask);
    b->zero = cg_rl_scalar_tensor(b->dev, 0.0f);
    /* sg(logp_old); without old log-probs, pi_old = sg(pi_theta) (ratio 1, gradient grad logp). */
    b->old_t = cg_detach(in->old_logp ? in->old_logp : logp);
    b->ref_t = in->ref_logp ? cg_detach(in->ref_logp) : NULL;
    if (!b->mask_t || !b->zero || !b->old_t || (in->ref_logp && !b->ref_t)) return cg_last_status();
    return CG_OK;
}

/* ------------------------------------------------------------------ aggregation */

/* The aggregation of the per-token losses per_tok [n, T] over the tokens where mask (host copy mask_h,
 * device mask_t) is 1. use_counts: apply the caller's token_count / seq_count denominators. */
static cg_tensor *aggregate(const cg_rl_batch *b, const cg_tensor *per_tok, const float *mask_h,
                            const cg_tensor *mask_t, bool use_counts) {
    const cg_rl_inputs *in = b->in;
    const int64_t n = b->n, T = b->T;
    cg_tensor *lm = cg_rl_masked(b, mask_t, per_tok);
    if (!lm) return NULL;
    double seq_den = use_counts && in->seq_count > 0 ? in->seq_count : (double)n;
    switch (b->cfg->aggregation) {
    case CG_AGG_TOKEN_MEAN: {
        double cnt = 0;
        for (int64_t k = 0; k < n * T; k++) cnt += mask_h[k];
        double den = use_counts && in->token_count > 0 ? in->token_count : (cnt > 0 ? cnt : 1.0);
        return cg_scale(cg_sum_all(lm), (float)(1.0 / den));
    }
    case CG_AGG_SEQ_MEAN_TOKEN_MEAN: {
        float *w = malloc(sizeof(float) * (size_t)n);
        if (!w) {
            cg_set_error(CG_ERR_OOM, "rl loss: sequence weights");
            return NULL;
        }
        for (int64_t i = 0; i < n; i++) {
            double cnt = 0;
            for (int64_t t = 0; t < T; t++) cnt += mask_h[i * T + t];
            w[i] = (float)(1.0 / ((cnt > 0 ? cnt : 1.0) * seq_den)); /* an empty sequence contributes 0 */
        }
        int64_t shape[1] = {n};
        cg_tensor *wt = cg_rl_const_tensor(b->dev, 1, shape, w);
        free(w);
        return wt ? cg_sum_all(cg_mul(cg_sum(lm, 1, false), wt)) : NULL;
    }
    case CG_AGG_SEQ_MEAN_TOKEN_SUM: return cg_scale(cg_sum_all(lm), (float)(1.0 / seq_den));
    case CG_AGG_TOKEN_SUM_NORM: {
        double c = b->cfg->norm_constant > 0 ? (double)b->cfg->norm_constant : (double)T;
        return cg_scale(cg_sum_all(lm), (float)(1.0 / (seq_den * c)));
    }
    default: cg_set_error(CG_ERR_INVALID_ARG, "rl loss: unknown aggregation"); return NULL;
    }
}

/* ------------------------------------------------------------------ token-level objectives */

/* Per-token policy loss l_{i,t} ([n, T], garbage at padding: it is masked by the aggregation).
 * A: advantages [n, 1] or [n, T]; negA = -A. */
static cg_tensor *policy_per_token(const cg_rl_batch *b, const cg_tensor *A, const cg_tensor *negA) {
    const cg_rl_config *cfg = b->cfg;
    cg_tensor *logp = b->in->logp;
    if (cfg->algo == CG_RL_REINFORCE) return cg_mul(negA, cg_rl_masked(b, b->mask_t, logp)); /* -A logp */

    /* r = exp(logp - sg(logp_old)), the log-ratio zeroed at padding before exp so it cannot overflow there. */
    cg_tensor *lr = cg_rl_masked(b, b->mask_t, cg_sub(logp, b->old_t));
    if (lr && cfg->log_ratio_clamp > 0) lr = cg_clamp(lr, -cfg->log_ratio_clamp, cfg->log_ratio_clamp);
    cg_tensor *r = cg_exp(lr);
    cg_tensor *l1 = cg_mul(negA, r); /* -A r */
    if (!l1) return NULL;
    const float lo = 1.0f - cfg->clip_low, hi = 1.0f + cfg->clip_high;
    cg_tensor *loss;
    if (cfg->algo == CG_RL_GPPO) {
        /* spec 4.3 (compute_gppo_loss_general_beta): on the clipped side the loss is -beta c A r / sg(r): the
         * value of PPO's clipped branch (times beta) with gradient -beta c A grad logp instead of 0. */
        cg_tensor *rs = cg_detach(r);
        cg_tensor *r_over_sg = cg_div(r, rs);
        cg_tensor *low = cg_mul(cg_compare(CG_OP_LESS, rs, cg_rl_scalar_tensor(b->dev, lo)),
                                cg_compare(CG_OP_LESS, A, b->zero));
        cg_tensor *high = cg_mul(cg_compare(CG_OP_GREATER, rs, cg_rl_scalar_tensor(b->dev, hi)),
                                 cg_compare(CG_OP_GREATER, A, b->zero));
        cg_tensor *l_low = cg_mul(negA, cg_scale(r_over_sg, cfg->gppo_beta1 * lo));
        cg_tensor *l_high = cg_mul(negA, cg_scale(r_over_sg, cfg->gppo_beta2 * hi));
        loss = cg_where(low, l_low, cg_where(high, l_high, l1));
    } else {
        /* PPO clip as a loss: max(-A r, -A clip(r, 1 - eps_l, 1 + eps_h)); the clipped branch is constant in
         * logp, so clipped tokens get zero gradient (spec 1.3). At r == 1 both branches tie and the gradient is
         * split equally between them, which sums to -A grad logp as it should. */
        cg_tensor *l2 = cg_mul(negA, cg_clamp(r, lo, hi));
        loss = cg_maximum(l1, l2);
    }
    if (loss && cfg->dual_clip > 0) {
        /* verl dual clip: for A < 0, min(loss, -A c), constant (zero gradient) when r > c. */
        cg_tensor *neg = cg_compare(CG_OP_LESS, A, b->zero);
        loss = cg_where(neg, cg_minimum(loss, cg_scale(negA, cfg->dual_clip)), loss);
    }
    return loss;
}

/* k3 = exp(ref - logp) - (ref - logp) - 1 per token (spec 1.1), gradient 1 - pi_ref / pi_theta through logp. */
static cg_tensor *k3_per_token(const cg_rl_batch *b) {
    cg_tensor *d = cg_rl_masked(b, b->mask_t, cg_sub(b->ref_t, b->in->logp));
    if (d && b->cfg->log_ratio_clamp > 0) d = cg_clamp(d, -b->cfg->log_ratio_clamp, b->cfg->log_ratio_clamp);
    return cg_add_scalar(cg_sub(cg_exp(d), d), -1.0f);
}

static double clampd(double x, double c) { return c > 0 ? (x < -c ? -c : (x > c ? c : x)) : x; }

void cg_rl_token_stats(const cg_rl_batch *b, const float *adv, bool per_token, cg_rl_stats *s) {
    const cg_rl_config *cfg = b->cfg;
    const int64_t n = b->n, T = b->T;
    const double c = cfg->log_ratio_clamp, lo = 1.0 - cfg->clip_low, hi = 1.0 + cfg->clip_high;
    double rmin = INFINITY, rmax = -INFINITY;
    for (int64_t i = 0; i < n; i++)
        for (int64_t t = 0; t < T; t++) {
            int64_t k = i * T + t;
            if (b->mask[k] == 0) continue;
            double lp = b->logp[k], old = b->old ? b->old[k] : lp;
            double r = exp(clampd(lp - old, c));
            double a = !adv ? 0.0 : per_token ? adv[k] : adv[i];
            s->ratio_mean += r;
            if (r < rmin) rmin = r;
            if (r > rmax) rmax = r;
            s->kl_old += old - lp;
            s->logp_mean += lp;
            s->adv_mean += a;
            if (b->ref) {
                double d = clampd(b->ref[k] - lp, c);
                s->kl_ref += exp(d) - d - 1.0;
            }
            if (adv && cfg->algo != CG_RL_REINFORCE) {
                s->clip_frac_high += (a > 0 && r > hi);
                s->clip_frac_low += (a < 0 && r < lo);
                s->dual_clip_frac += (cfg->dual_clip > 0 && a < 0 && r > cfg->dual_clip);
            }
        }
    double nt = b->n_tokens;
    if (nt > 0) {
        s->ratio_mean /= nt;
        s->kl_old /= nt;
        s->logp_mean /= nt;
        s->adv_mean /= nt;
        s->kl_ref /= nt;
        s->clip_frac_high /= nt;
        s->clip_frac_low /= nt;
        s->dual_clip_frac /= nt;
        s->ratio_min = rmin;
        s->ratio_max = rmax;
    }
    s->clip_frac = s->clip_frac_high + s->clip_frac_low;
}

static cg_tensor *token_loss(const cg_rl_batch *b, cg_rl_stats *stats) {
    const cg_rl_config *cfg = b->cfg;
    const cg_rl_inputs *in = b->in;
    const int64_t n = b->n, T = b->T;
    const bool per_token = in->token_advantages != NULL;
    const float *adv = per_token ? in->token_advantages : in->advantages;
    const int64_t na = per_token ? n * T : n;
    float *neg = malloc(sizeof(float) * (size_t)(2 * na));
    if (!neg) {
        cg_set_error(CG_ERR_OOM, "rl loss: advantages");
        return NULL;
    }
    for (int64_t k = 0; k < na; k++) {
        neg[k] = adv[k];
        neg[na + k] = -adv[k];
    }
    int64_t shape[2] = {n, per_token ? T : 1};
    cg_tensor *A = cg_rl_const_tensor(b->dev, 2, shape, neg);
    cg_tensor *negA = cg_rl_const_tensor(b->dev, 2, shape, neg + na);
    free(neg);
    if (!A || !negA) return NULL;

    cg_tensor *pg = aggregate(b, policy_per_token(b, A, negA), b->mask, b->mask_t, true);
    if (!pg) return NULL;
    cg_tensor *loss = pg, *kl = NULL, *sft = NULL;
    if (cfg->kl_beta > 0) {
        kl = cg_scale(aggregate(b, k3_per_token(b), b->mask, b->mask_t, true), cfg->kl_beta);
        if (!kl || !(loss = cg_add(loss, kl))) return NULL;
    }
    if (cfg->algo == CG_RL_GPPO && cfg->sft_coef > 0) {
        /* spec 4.4: positive_loss_coeff * agg(-logp) over the tokens of responses with reward == correct score,
         * normalised by those responses' own counts. */
        float *pos = malloc(sizeof(float) * (size_t)(n * T));
        if (!pos) {
            cg_set_error(CG_ERR_OOM, "rl loss: positive mask");
            return NULL;
        }
        for (int64_t i = 0; i < n; i++)
            for (int64_t t = 0; t < T; t++)
                pos[i * T + t] = in->rewards[i] == cfg->sft_positive_reward ? b->mask[i * T + t] : 0.0f;
        int64_t full[2] = {n, T};
        cg_tensor *pos_t = cg_rl_const_tensor(b->dev, 2, full, pos);
        if (pos_t) sft = cg_scale(aggregate(b, cg_neg(in->logp), pos, pos_t, false), cfg->sft_coef);
        free(pos);
        if (!sft || !(loss = cg_add(loss, sft))) return NULL;
    }
    if (stats) {
        cg_rl_token_stats(b, adv, per_token, stats);
        stats->pg_loss = cg_rl_read_scalar(pg);
        stats->kl_loss = kl ? cg_rl_read_scalar(kl) : 0.0;
        stats->sft_loss = sft ? cg_rl_read_scalar(sft) : 0.0;
    }
    return loss;
}

/* ------------------------------------------------------------------ entry point */

cg_tensor *cg_rl_loss(const cg_rl_config *cfg, const cg_rl_inputs *in, cg_rl_stats *stats) {
    cg_rl_batch b;
    if (stats) memset(stats, 0, sizeof *stats);
    if (batch_init(&b, cfg, in, stats != NULL) != CG_OK) {
        batch_free(&b);
        return NULL;
    }
    cg_tensor *loss = is_token_level(cfg->algo) ? token_loss(&b, stats) : cg_rl_disco_loss(&b, stats);
    if (loss && stats) {
        stats->loss = cg_rl_read_scalar(loss);
        stats->n_tokens = (int64_t)b.n_tokens;
        stats->n_seqs = b.n;
    }
    batch_free(&b);
    return loss;
}
