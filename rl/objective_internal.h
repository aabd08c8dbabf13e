/* Shared by rl/objective.c (token-level objectives) and rl/objective_disco.c (DisCO): the checked batch with
 * host copies of its no-grad inputs, and small tensor helpers. Not part of the public API. */
#ifndef CG_RL_OBJECTIVE_INTERNAL_H
#define CG_RL_OBJECTIVE_INTERNAL_H

#include "autograd/ops.h"
#include "rl/objective.h"

typedef struct cg_rl_batch {
    const cg_rl_config *cfg;
    const cg_rl_inputs *in;
    int64_t n, T;
    cg_device dev;
    /* host copies, n * T row-major: the effective mask (0/1, truncated rows zeroed under overlong_filter),
     * logp's values, old (NULL when old_logp is NULL: then old == logp), ref (NULL without ref_logp) */
    float *mask, *logp, *old, *ref;
    double n_tokens; /* real tokens in the batch */
    /* on logp's device: the effective mask [n, T] f32, a 0-d zero, sg(logp_old) (or sg(logp)), sg(logp_ref) */
    cg_tensor *mask_t, *zero, *old_t, *ref_t;
} cg_rl_batch;

/* A constant f32 tensor on dev (output arena) from host data. */
cg_tensor *cg_rl_const_tensor(cg_device dev, int ndim, const int64_t *shape, const float *data);
cg_tensor *cg_rl_scalar_tensor(cg_device dev, float value);
/* Copies t (any device, dtype, strides) into the packed host floats buf (numel entries). */
cg_status cg_rl_to_host(const cg_tensor *t, float *buf);
/* The value of a one-element tensor on any device (NaN with an error set if it cannot be read). */
double cg_rl_read_scalar(const cg_tensor *t);
/* where(mask != 0, x, 0): padding never reaches a value or a gradient, even when x is not finite there. */
cg_tensor *cg_rl_masked(const cg_rl_batch *b, const cg_tensor *mask_t, const cg_tensor *x);

/* Ratio, KL, log-prob and (with adv) clip statistics of the real tokens from the host copies (b made with
 * values). adv: per token ([n * T]) when per_token, else per sequence, or NULL. */
void cg_rl_token_stats(const cg_rl_batch *b, const float *adv, bool per_token, cg_rl_stats *s);

/* The DisCO / DisCO-b loss (rl/objective_disco.c); b is checked and filled. */
cg_tensor *cg_rl_disco_loss(const cg_rl_batch *b, cg_rl_stats *stats);

#endif
