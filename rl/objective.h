/* Policy-gradient objectives for RL fine-tuning of language models: GRPO, Dr. GRPO, DAPO, GPPO, DisCO,
 * DisCO-b and REINFORCE with a baseline, as losses built from the differentiable op API (autograd/ops.h).
 *
 * Exact definitions: spec/rl_objectives.md sections 0-5 (referred to as "spec N.M" below). The loss returned is
 * -J (minimised); cg_backward(loss) gives d loss / d logp, and through logp the model's gradients. Only the
 * current policy's log-probs carry gradient: old and reference log-probs, advantages and rewards are constants,
 * and every sg() of the spec is a cg_detach at the same place.
 *
 * A batch: n_seq = n_prompts x group responses, padded to T tokens, the responses of one prompt contiguous.
 * The driver computes advantages with rl/advantage.h (cfg.adv_kind, cfg.adv_eps) and passes them in.
 *
 * Typical step (one update per rollout, so old_logp may be NULL):
 *     cg_rl_config cfg = cg_rl_config_default(CG_RL_GRPO);
 *     cg_compute_advantages(cfg.adv_kind, rewards, n_seq, G, cfg.adv_eps, adv);
 *     cg_rl_inputs in = {.logp = logp, .ref_logp = ref, .mask = mask, .advantages = adv, .group_size = G};
 *     cg_tensor *loss = cg_rl_loss(&cfg, &in, &stats);
 *     cg_backward(loss); */
#ifndef CG_RL_OBJECTIVE_H
#define CG_RL_OBJECTIVE_H

#include <stdbool.h>
#include <stdint.h>

#include "core/tensor.h"
#include "rl/advantage.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum cg_rl_algo {
    CG_RL_GRPO,      /* PPO clip + k3 KL to the reference, seq-mean-token-mean (spec 1.1) */
    CG_RL_DRGRPO,    /* PPO clip, no std, token sum over a constant (spec 2.1) */
    CG_RL_DAPO,      /* clip-higher, token-mean, dual clip; dynamic sampling and overlong shaping (spec 2.2) */
    CG_RL_GPPO,      /* gradient-preserving clip with beta1/beta2, optional SFT term on positives (spec 4) */
    CG_RL_DISCO,     /* DisCO: positives' mean score minus tau-log-sum-exp over negatives, KL hinge (spec 3) */
    CG_RL_DISCOB,    /* DisCO-b: positives' mean score minus negatives' mean score, KL hinge (spec 3).
                      * Both: binary rewards; questions without a positive and a negative are dropped but
                      * counted in the denominator; with no valid question the loss is 0 * mean(scores)
                      * (no penalty), as the reference code does (spec 3.3). */
    CG_RL_REINFORCE, /* -A * logp: REINFORCE with the baseline of the advantage estimator (spec 1.3) */
    CG_RL_ALGO_COUNT
} cg_rl_algo;

/* How per-token losses l_{i,t} (mask m) become one number (spec 1.4, 1.5, 2.1, appendix 3). */
typedef enum cg_rl_aggregation {
    /* mean_i [ sum_t l m / sum_t m ]: the GRPO paper (TRL "grpo", verl "seq-mean-token-mean") */
    CG_AGG_SEQ_MEAN_TOKEN_MEAN,
    /* sum_{i,t} l m / sum_{i,t} m: DAPO, GPPO, verl's default (TRL "dapo"/"bnpo") */
    CG_AGG_TOKEN_MEAN,
    /* sum_{i,t} l m / (n_seq * C), C = norm_constant (the generation budget): Dr. GRPO's oat reference
     * (per-sequence sum / C, then the mean over sequences), TRL "dr_grpo", BRPO's just_mean. verl's
     * "seq-mean-token-sum-norm" does not divide by n_seq: use norm_constant = C / n_seq to get it. */
    CG_AGG_TOKEN_SUM_NORM,
    /* mean_i [ sum_t l m ]: verl "seq-mean-token-sum" */
    CG_AGG_SEQ_MEAN_TOKEN_SUM,
    CG_AGG_COUNT
} cg_rl_aggregation;

/* DisCO's sequence score (spec 3.1). */
typedef enum cg_disco_score {
    CG_DISCO_SCORE_LOG_L,  /* (1/|o|) sum_t logp_t */
    CG_DISCO_SCORE_L_RATIO /* (1/|o|) sum_t exp(logp_t - logp_old_t), not clipped */
} cg_disco_score;

/* DisCO's estimate of KL(pi_old || pi_theta) over the batch's tokens (spec 3.2, ppo_kl_type). */
typedef enum cg_disco_kl {
    CG_DISCO_KL_K1, /* mean(logp_old - logp)  ("kl", used by the scripts) */
    CG_DISCO_KL_K3  /* mean(exp(logp - logp_old) - (logp - logp_old) - 1)  ("low_var_kl") */
} cg_disco_kl;

typedef struct cg_rl_config {
    cg_rl_algo algo;
    cg_rl_aggregation aggregation; /* token-level algorithms and GPPO's SFT term; DisCO has its own (spec 3.3) */
    float norm_constant;           /* C of CG_AGG_TOKEN_SUM_NORM; 0 = the padded length T of the batch */

    /* Advantages: what the driver passes to cg_compute_advantages (not read by cg_rl_loss). */
    cg_advantage_kind adv_kind;
    float adv_eps;

    /* PPO-style clipping (GRPO, Dr. GRPO, DAPO, GPPO): ratio clipped to [1 - clip_low, 1 + clip_high]. */
    float clip_low, clip_high; /* eps_low, eps_high */
    float dual_clip;           /* clip_ratio_c > 1: for A < 0 the loss is capped at -A * c (verl); 0 = off */
    float log_ratio_clamp;     /* logp - logp_old (and logp_ref - logp) clamped to [-c, c] before exp, as verl
                                  does with c = 20, so an outlier token cannot overflow; 0 = off. Token-level
                                  algorithms only (DisCO's L-ratio score is unclipped, spec 3.1) */

    /* k3 KL to the reference policy, added per token as beta * agg(k3) (spec 1.1); needs ref_logp when > 0.
     * Token-level algorithms only. */
    float kl_beta;

    /* GPPO (spec 4.3, 4.4): clipped tokens keep the gradient beta1 * (1 - eps_l) * A (low side, A < 0) or
     * beta2 * (1 + eps_h) * A (high side, A > 0); beta1 = beta2 = 1 is plain GPPO. */
    float gppo_beta1, gppo_beta2;
    float sft_coef;            /* weight of the SFT term -agg(logp) over positive responses; 0 = off */
    float sft_positive_reward; /* a response is positive when its reward equals this (correct_score) */

    /* DisCO / DisCO-b (spec 3). */
    cg_disco_score disco_score;
    float disco_tau;   /* temperature of the log-sum-exp over negatives (DisCO only) */
    float disco_beta;  /* squared-hinge penalty weight: gradient beta * [KL - delta]_+ * grad KL */
    float disco_delta; /* trust-region radius of KL(pi_old || pi_theta) */
    cg_disco_kl disco_kl;

    /* DAPO sampling and reward shaping: read by the driver (rollout and reward code), not by cg_rl_loss,
     * except overlong_filter. */
    bool dynamic_sampling;          /* drop groups whose rewards are all equal and refill (spec 2.2 item 2) */
    int max_gen_batches;            /* cap on rollout batches drawn to refill one training batch */
    bool overlong_filter;           /* mask the loss of truncated responses (in->truncated) (spec 2.2 item 4) */
    bool overlong_penalty;          /* add cg_soft_overlong_penalty to the reward */
    int64_t overlong_cache_len;     /* L_cache; L_max is the rollout's maximum response length */
    float overlong_penalty_factor;  /* verl's penalty_factor */
} cg_rl_config;

/* The spec's defaults for each algorithm (each value's source in rl/objective.c). */
cg_rl_config cg_rl_config_default(cg_rl_algo algo);
/* Checks ranges (clip in [0, 1) and >= 0, tau > 0, ...); CG_ERR_INVALID_ARG naming the field otherwise. */
cg_status cg_rl_config_check(const cg_rl_config *cfg);

/* "grpo", "drgrpo", "dapo", "gppo", "disco", "discob", "reinforce" and back. */
const char *cg_rl_algo_name(cg_rl_algo algo);
cg_status cg_rl_algo_parse(const char *name, cg_rl_algo *algo);
/* "seq-mean-token-mean", "token-mean", "token-sum-norm", "seq-mean-token-sum" and back. */
const char *cg_rl_aggregation_name(cg_rl_aggregation agg);
cg_status cg_rl_aggregation_parse(const char *name, cg_rl_aggregation *agg);
/* "log-l", "l-ratio" and back. */
const char *cg_disco_score_name(cg_disco_score score);
cg_status cg_disco_score_parse(const char *name, cg_disco_score *score);

typedef struct cg_rl_inputs {
    /* [n_seq, T] f32: log pi_theta of each response token, with gradient (cg_token_logprobs of the model). */
    cg_tensor *logp;
    /* [n_seq, T] f32 on logp's device, or NULL. old_logp NULL means pi_old = sg(pi_theta): the ratio is 1 in
     * value and grad logp in gradient (one update per rollout, as TRL does with num_iterations = 1). */
    const cg_tensor *old_logp;
    const cg_tensor *ref_logp; /* needed when kl_beta > 0 */
    /* [n_seq, T], any dtype, nonzero = a real response token; NULL = every token is real. Padding positions of
     * logp/old/ref may hold anything finite or not: they never reach a value or a gradient. */
    const cg_tensor *mask;
    /* Advantages of the token-level algorithms: per sequence ([n_seq], broadcast over its tokens) or per token
     * ([n_seq * T] row-major: BRPO segments, process supervision); exactly one of the two. */
    const float *advantages;
    const float *token_advantages;
    const float *rewards;   /* [n_seq]: DisCO (binary: 1 = positive, 0 = negative), GPPO's SFT term */
    const bool *truncated;  /* [n_seq] or NULL: responses cut at the length limit (cfg.overlong_filter) */
    /* Responses per prompt (contiguous). DisCO needs it; the token-level losses ignore it (0 = not given). */
    int64_t group_size;
    /* Denominators for a mini-batch split into micro-batches (so the accumulated gradient equals the
     * mini-batch's): token_count > 0 replaces the masked token count of CG_AGG_TOKEN_MEAN; seq_count > 0
     * replaces n_seq in the sequence means, CG_AGG_TOKEN_SUM_NORM, and DisCO's question count (seq_count /
     * group_size). 0 = this batch's own counts. */
    double token_count;
    double seq_count;
    /* Data parallel (DisCO): the KL estimate over every rank's tokens, which sets the hinge's coefficient
     * sg([beta (KL - delta)]_+) as the reference code's gathered batch does (used when disco_kl_given). The
     * differentiated KL is then this batch's sum over token_count (when > 0) instead of its own count. */
    bool disco_kl_given;
    double disco_kl;
} cg_rl_inputs;

typedef struct cg_rl_stats {
    double loss;       /* the returned loss's value (= pg_loss + kl_loss + sft_loss + disco_penalty) */
    double pg_loss;    /* the policy term (-J without KL / SFT / penalty) */
    double kl_loss;    /* kl_beta * agg(k3) */
    double sft_loss;   /* sft_coef * agg(-logp over positives) */
    double kl_ref;     /* mean k3 KL(pi_theta || pi_ref) over real tokens (0 without ref_logp) */
    double kl_old;     /* mean (logp_old - logp) over real tokens (k1 of KL(pi_old || pi_theta)) */
    double logp_mean;  /* mean log-prob of the real tokens (-logp_mean is a sampled entropy estimate) */
    double adv_mean;   /* mean advantage over real tokens (token-level algorithms) */
    double ratio_mean, ratio_min, ratio_max; /* pi_theta / pi_old over real tokens */
    /* Fractions of real tokens where PPO's clip is active (A > 0 and r > 1 + eps_h: high; A < 0 and r < 1 - eps_l:
     * low); where dual_clip caps the loss (A < 0 and r > c). DisCO: clip_frac = 1 when the KL constraint is
     * active (as the reference code logs it). */
    double clip_frac, clip_frac_low, clip_frac_high, dual_clip_frac;
    int64_t n_tokens, n_seqs;
    /* DisCO */
    double disco_kl;      /* the KL estimate the hinge sees */
    double disco_penalty; /* sg(max(beta (KL - delta), 0)) * KL */
    double score_pos_mean, score_neg_mean; /* mean score of positives / negatives (valid groups) */
    int64_t n_valid_groups;                /* groups with at least one positive and one negative */
    bool constraint_active;                /* KL > delta */
} cg_rl_stats;

/* The 0-d loss -J of cfg->algo on the batch, in the output arena of logp's device; stats (optional) filled
 * from host copies of the inputs. NULL with an error on bad arguments: shapes that differ from logp's [n_seq, T],
 * tensors on other devices, missing advantages / rewards / ref_logp, a group that does not divide n_seq, NaN or
 * infinite advantages or rewards, non-binary DisCO rewards, an invalid config. */
cg_tensor *cg_rl_loss(const cg_rl_config *cfg, const cg_rl_inputs *in, cg_rl_stats *stats);

#ifdef __cplusplus
}
#endif
#endif
