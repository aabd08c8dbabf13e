/* The RL loop a driver runs: prompts -> G rollouts each -> rewards -> advantages -> epochs of mini-batch
 * updates with the chosen objective -> repeat. One cg_rl_trainer_step is one rollout batch.
 *
 * Per step:
 *  1. Draw prompts_per_step training items from the task set (item index step * prompts_per_step + i of its
 *     training stream, so a run is reproducible and never sees the held-out split).
 *  2. Sample group_size responses each (cg_rollout_generate, sampling seed derived from seed and step). With
 *     dynamic sampling (DAPO), groups whose rewards are all equal are dropped and more prompts drawn, up to
 *     obj.max_gen_batches rollout batches.
 *  3. Rewards (+ DAPO's soft overlong penalty when obj.overlong_penalty), advantages (obj.adv_kind).
 *  4. Under no-grad: the old policy's log-probs (recomputed with the full forward so the first ratio is exactly
 *     1, as verl does), the reference policy's (when obj.kl_beta > 0, or for the KL that is always logged when
 *     a reference exists: the LoRA-disabled model, or an explicit frozen copy), and the policy entropy.
 *  5. epochs passes over the sequences in shuffled mini-batches of minibatch_seqs, one optimizer step each.
 * Log-probs use the logits divided by the sampling temperature for both the old and the new policy (TRL).
 *
 * Data parallel (cfg.comm with W > 1 ranks; P and a non-zero minibatch_seqs must be multiples of W): every
 * rank draws the same P items and keeps its slice of P / W prompts; it samples them from the sampling
 * streams the single-process run would use for those rows (cg_sampling.first_stream), so the job's
 * rollouts are the single run's. Rewards, advantages (within each group, all on one rank), old and
 * reference log-probs stay local. Each mini-batch takes minibatch_seqs / W sequences per rank; its global
 * sequence and token counts are summed over the ranks and passed as cg_rl_inputs.seq_count/token_count
 * (divided by W, since the gradient all-reduce averages), so token-mean (DAPO, GPPO) normalises by the
 * global token count and the sequence means and DisCO's question count by the global counts, as the spec's
 * references do; DisCO's KL hinge coefficient uses the KL over all ranks' tokens. Gradients are averaged
 * in buckets during backward (optim/dist.h), the parameters (all of the policy's, frozen ones too, and an
 * explicit reference's) are broadcast from rank 0 at create. With dynamic sampling ranks may keep different
 * numbers of groups: every rank then trains on the smallest count (its extra groups are dropped). The
 * returned statistics are means over all ranks. */
#ifndef CG_RL_TRAINER_H
#define CG_RL_TRAINER_H

#include "optim/dist.h"
#include "optim/optim.h"
#include "rl/objective.h"
#include "rl/rollout.h"
#include "rl/task.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cg_rl_trainer_config {
    cg_rl_config obj;          /* the objective and its hyperparameters */
    int64_t prompts_per_step;  /* P */
    int64_t group_size;        /* G */
    cg_sampling sampling;      /* temperature, top-k/p, max_new_tokens (the seed is derived per step) */
    int epochs;                /* update passes over each rollout batch */
    int64_t minibatch_seqs;    /* sequences per optimizer step; 0 = the whole batch */
    cg_optimizer_config opt;   /* lr is the constant learning rate */
    float correct_reward;      /* a response counts as correct (accuracy) when its reward >= this */
    uint64_t seed;
    cg_comm *comm;             /* data parallel over its ranks (see below); NULL = one process */
    bool zero1;                /* ZeRO-1 optimizer (cg_optimizer_create_zero1) */
} cg_rl_trainer_config;

/* P 16, G 8, temperature 1, 64 new tokens, 1 epoch, whole-batch updates, AdamW lr 1e-5 without weight decay,
 * the algorithm's spec defaults, correct at reward >= 1. */
cg_rl_trainer_config cg_rl_trainer_config_default(cg_rl_algo algo);

typedef struct cg_rl_step_stats {
    int64_t step;
    double reward, accuracy, response_len; /* means over the step's sequences */
    double kl;                 /* mean k3 KL to the reference over response tokens (NaN without a reference) */
    double entropy;            /* mean next-token entropy of the sampling distribution over response tokens */
    double loss, clip_fraction, grad_norm; /* from the last mini-batch */
    double rollout_seconds, update_seconds;
    double rollout_tokens_per_s, update_tokens_per_s;
    int64_t sequences, tokens, rollout_batches, groups_dropped;
} cg_rl_step_stats;

typedef struct cg_rl_trainer cg_rl_trainer;

/* reference: NULL means the policy with its LoRA adapters disabled when it has adapters, else none (then
 * obj.kl_beta must be 0). The trainer borrows every pointer. */
cg_status cg_rl_trainer_create(cg_model *policy, cg_model *reference, const cg_tokenizer *tok,
                               const cg_task_set *tasks, const cg_reward *rewards, int n_rewards,
                               const cg_rl_trainer_config *cfg, cg_rl_trainer **out);
cg_status cg_rl_trainer_step(cg_rl_trainer *t, cg_rl_step_stats *stats);
void cg_rl_trainer_free(cg_rl_trainer *t);

/* Greedy accuracy on the first n held-out items of the task set: the fraction whose reward is >= correct. */
cg_status cg_rl_evaluate(cg_model *m, const cg_tokenizer *tok, const cg_task_set *tasks, int64_t n,
                         int64_t max_new_tokens, const cg_reward *rewards, int n_rewards, float correct,
                         double *accuracy);

#ifdef __cplusplus
}
#endif
#endif
