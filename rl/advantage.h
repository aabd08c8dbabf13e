/* Advantage estimators and reward shaping for the policy-gradient objectives (rl/objective.h).
 *
 * Exact definitions: spec/rl_objectives.md sections 1.4, 1.5, 2.1, 2.2 and 5. Everything here is plain host
 * arithmetic on float arrays (accumulated in double): advantages are constants of the loss, never part of the
 * autograd graph.
 *
 * Layout: a batch holds n_seq = n_prompts x group sequences; the `group` responses of one prompt are
 * contiguous (sequences g*group .. g*group + group - 1 form group g). */
#ifndef CG_RL_ADVANTAGE_H
#define CG_RL_ADVANTAGE_H

#include <stdbool.h>
#include <stdint.h>

#include "core/error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The epsilon added to the std: TRL (scale_rewards "group"/"batch") uses 1e-4, verl 1e-6 (spec 1.4, 1.5). */
#define CG_ADV_EPS_TRL 1e-4f
#define CG_ADV_EPS_VERL 1e-6f

typedef enum cg_advantage_kind {
    /* (R_i - mean_g) / (std_g + eps), std unbiased (Bessel): GRPO (TRL scale_rewards="group", verl "grpo"),
     * DAPO, GPPO. A group of one gets mean 0 and std 1 as in verl: A = R / (1 + eps). */
    CG_ADV_GROUP_MEAN_STD,
    /* R_i - mean_g: Dr. GRPO (no std division; TRL scale_rewards="none", verl norm_adv_by_std_in_grpo=False),
     * and REINFORCE with the group mean as baseline. A group of one gets mean 0 (A = R), as in verl. */
    CG_ADV_GROUP_MEAN,
    /* (R_i - mean_g) / (std_batch + eps): TRL scale_rewards="batch", the std (unbiased) of all n_seq rewards.
     * With n_seq == 1 the batch std is taken as 1. */
    CG_ADV_BATCH_STD,
    /* R_i - mean of the other group-1 rewards of the group: the leave-one-out (RLOO) baseline for REINFORCE.
     * Not in the spec; equals group/(group-1) * (R_i - mean_g). A group of one gets baseline 0. */
    CG_ADV_RLOO,
    /* A = R: REINFORCE without a baseline. */
    CG_ADV_NONE,
    CG_ADV_KIND_COUNT
} cg_advantage_kind;

/* "group_mean_std", "group_mean", "batch_std", "rloo", "none" (for flags and logs). */
const char *cg_advantage_kind_name(cg_advantage_kind kind);
/* The inverse of cg_advantage_kind_name; an unknown name is CG_ERR_INVALID_ARG naming it and the choices. */
cg_status cg_advantage_kind_parse(const char *name, cg_advantage_kind *kind);

/* adv_out[i] = the advantage of sequence i (n_seq entries; adv_out may be rewards). group >= 1 must divide
 * n_seq; eps >= 0 (used by the std kinds only). A NaN or infinite reward is CG_ERR_INVALID_ARG naming the
 * sequence. A group whose rewards are all equal gets advantage 0 for every kind with a baseline (never NaN). */
cg_status cg_compute_advantages(cg_advantage_kind kind, const float *rewards, int64_t n_seq, int64_t group, float eps,
                                float *adv_out);

/* ------------------------------------------------------------------ DAPO dynamic sampling (spec 2.2 item 2) */

/* True when the `group` rewards starting at rewards[0] are all equal (all correct or all wrong): such a group
 * has zero advantage under every baseline and DAPO drops it. group <= 1 is "all equal". NaN never equals. */
bool cg_group_all_equal(const float *rewards, int64_t group);
/* keep[g] = !cg_group_all_equal(group g) for the n_seq / group groups; *n_kept (optional) = how many are
 * kept. The driver then refills the batch with new groups until it holds enough kept prompts. */
cg_status cg_groups_with_signal(const float *rewards, int64_t n_seq, int64_t group, bool *keep, int64_t *n_kept);

/* ------------------------------------------------------------------ DAPO overlong reward shaping (spec 2.2 item 4) */

/* The soft overlong punishment of DAPO (paper Eq. 13), scaled by factor (verl's penalty_factor, 1 in the
 * paper), for a response of `len` tokens with the expected maximum length max_len (L_max) and the
 * punishment interval cache_len (L_cache):
 *   0                                          if len <= max_len - cache_len
 *   factor * ((max_len - cache_len) - len) / cache_len   if max_len - cache_len < len <= max_len
 *   -factor                                    if len > max_len
 * Needs 0 <= cache_len <= max_len, len >= 0 (else CG_ERR_INVALID_ARG). */
cg_status cg_soft_overlong_penalty(int64_t len, int64_t max_len, int64_t cache_len, float factor, float *penalty);
/* rewards[i] += cg_soft_overlong_penalty(lengths[i], ...) for the n sequences (added to the correctness
 * reward, as DAPO does). */
cg_status cg_apply_soft_overlong_penalty(float *rewards, const int64_t *lengths, int64_t n, int64_t max_len,
                                         int64_t cache_len, float factor);

/* ------------------------------------------------------------------ BRPO budget baseline (spec 5) */

/* Which baseline cg_brpo_advantages subtracts ("variance_reduction" in AnytimeReasoner). */
typedef enum cg_brpo_baseline {
    CG_BRPO_BASELINE_BRPO, /* V_j = ((j-1) V1_j + (m-j+1) V2_j) / m (j 1-based) */
    CG_BRPO_BASELINE_V1,   /* V = V1: the trace's own earlier-budget rewards ("v1only") */
    CG_BRPO_BASELINE_V2,   /* V = V2: the GRPO group mean of the return ("v2only") */
    CG_BRPO_BASELINE_NONE  /* V = 0 */
} cg_brpo_baseline;

/* The prior p_B over the m budgets b_1 < ... < b_m ("budget_probs"). */
typedef enum cg_budget_prior {
    CG_BUDGET_PRIOR_UNIFORM, /* p_j = 1/m */
    CG_BUDGET_PRIOR_LINEAR,  /* p_j = b_j / sum_k b_k */
    CG_BUDGET_PRIOR_BASE     /* all mass on b_m */
} cg_budget_prior;

/* The discount of V1's weights w_k = discount^(k-1) in the reference code (discount_factor 2.0). */
#define CG_BRPO_DISCOUNT 2.0

/* probs[j] for the m strictly increasing positive budgets (token counts). */
cg_status cg_brpo_budget_probs(cg_budget_prior prior, const int64_t *budgets, int64_t m, float *probs);

/* Segment advantages of the thinking policy. budget_rewards[i*m + j] = r_j of trace i (mean verifier reward of
 * its summaries at budget j), probs[j] = p_j (need not sum to 1), discount = w's base (CG_BRPO_DISCOUNT).
 * adv_out[i*m + j] = A_j of trace i = R_j - V_j with
 *   R_j  = sum_{k >= j} p_k r_k                                    (return-to-go)
 *   V2_j = mean over the trace's group of R_j
 *   V1_j = (sum_{k<j} w_k r_k / sum_{k<j} w_k) * sum_{k>=j} p_k,  w_k = discount^(k-1),  V1_1 = 0
 * and V from `baseline` (no std normalisation). group must divide n_seq; non-finite inputs are errors.
 * adv_out must not overlap budget_rewards. */
cg_status cg_brpo_advantages(cg_brpo_baseline baseline, const float *budget_rewards, const float *probs, int64_t n_seq,
                             int64_t group, int64_t m, double discount, float *adv_out);

/* Spreads segment advantages over tokens: out[i*T + t] = seg_adv[i*m + j] for the segment j holding token t
 * (0-based), budgets[j-1] <= t < budgets[j] with budgets[-1] = 0; tokens at t >= budgets[m-1] (past the largest
 * budget, where the thinking trace has been cut) get 0. The result is the token_advantages input of
 * cg_rl_loss. */
cg_status cg_brpo_token_advantages(const float *seg_adv, const int64_t *budgets, int64_t n_seq, int64_t m, int64_t T,
                                   float *out);

#ifdef __cplusplus
}
#endif
#endif
