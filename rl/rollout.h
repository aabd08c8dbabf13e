/* Rollouts: G sampled responses per prompt from the current policy, their rewards, and the per-token
 * log-probabilities the policy-gradient objectives need.
 *
 * A rollout holds n_seq = n_prompts * G sequences, the G responses of one prompt contiguous (the layout the
 * group advantages assume). Each sequence is prompt + response; the response ends with the end token (kept,
 * it is an action the policy took) or at max_new_tokens (then `truncated`). Rewards are computed on the
 * decoded response text without the end token. */
#ifndef CG_RL_ROLLOUT_H
#define CG_RL_ROLLOUT_H

#include "models/generate.h"
#include "models/model.h"
#include "models/tokenizer.h"
#include "rl/reward.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cg_rollout {
    int64_t n_prompts, group_size, n_seq;
    int64_t max_resp;        /* the longest response (tokens), >= 1 */
    int64_t *prompt_len;     /* [n_seq] */
    int64_t *resp_len;       /* [n_seq] */
    int32_t **tokens;        /* [n_seq] arrays of prompt_len + resp_len tokens */
    float *sample_logp;      /* [n_seq, max_resp] log-probs the sampler reported (0 past resp_len) */
    float *rewards;          /* [n_seq] the weighted sum of the reward functions */
    uint8_t *truncated;      /* [n_seq] 1 when the response hit max_new_tokens without the end token */
    char **responses;        /* [n_seq] decoded response text (without the end token), NUL-terminated */
    const char **answers;    /* [n_prompts] borrowed from the caller, for logging */
} cg_rollout;

typedef struct cg_rollout_config {
    int64_t group_size;      /* G responses per prompt */
    cg_sampling sampling;    /* temperature, top-k/p, max_new_tokens, seed; the end token is added as a stop */
} cg_rollout_config;

/* Samples G responses for each prompt (one cg_generate call over all n_prompts * G rows, under no-grad) and
 * scores them. Prompts are text, encoded with tok (a character tokenizer's <bos> is not added). */
cg_status cg_rollout_generate(cg_model *m, const cg_tokenizer *tok, const char *const *prompts,
                              const char *const *answers, int64_t n_prompts, const cg_rollout_config *cfg,
                              const cg_reward *rewards, int n_rewards, cg_rollout **out);
void cg_rollout_free(cg_rollout *r);

/* The log-probs of the response tokens of sequences sel[0..n) under the model: a [n, max_resp] tensor
 * (differentiable when grad mode is on: the update's logp), with *mask_out [n, max_resp] f32 set to 1 on
 * real response tokens. The logits are divided by temperature first (the sampler's distribution; pass 1 for
 * the raw policy). One forward over the right-padded sequences (causal attention: padding never reaches a
 * real token). If entropy_out is given, the mean entropy of the policy's next-token distribution over the
 * response positions is computed too (no gradient; in row chunks, never a full [tokens, vocab] tensor). */
cg_tensor *cg_rollout_logprobs(cg_model *m, const cg_rollout *r, const int64_t *sel, int64_t n, float temperature,
                               cg_tensor **mask_out, double *entropy_out);

/* The fraction of sequences whose reward is at least `threshold` (accuracy when the reward is 0/1). */
double cg_rollout_fraction_at_least(const cg_rollout *r, float threshold);
double cg_rollout_mean_reward(const cg_rollout *r);
double cg_rollout_mean_response_len(const cg_rollout *r);

#ifdef __cplusplus
}
#endif
#endif
