/* Optimizers over lists of parameter tensors: SGD (momentum, Nesterov), AdamW (PyTorch), Lion; global-norm
 * clipping, annealed gradient noise, weight-decay masks and parameter groups; LR schedules. Formulas:
 * ../shared/spec/rl_objectives.md sections 6-7.
 *
 * ---- What one cg_optimizer_step(opt, lr, info) does, in order ----
 * 1. Scans every gradient once: counts non-finite elements and sums g^2 (in double, over fixed chunks of
 *    elements summed in a fixed order, so the norm does not depend on the thread count). If any element is
 *    NaN or Inf the step is skipped: parameters, optimizer state and the step count stay as they were, and
 *    info says so. A parameter whose ->grad is NULL (never touched by a backward) is skipped altogether,
 *    as PyTorch skips grad None (no update, no weight decay).
 * 2. grad_norm = sqrt(sum g^2) over all parameters (reported in info).
 * 3. Clipping (grad_clip > 0), as torch.nn.utils.clip_grad_norm_: coef = grad_clip / (grad_norm + 1e-6);
 *    when coef < 1 every gradient is scaled by coef.
 * 4. Gradient noise (grad_noise_eta > 0; Neelakantan et al. 2015): g += N(0, sigma_t^2) per element,
 *    sigma_t^2 = eta / (1 + t)^0.55 with t = the number of updates made before this one (t = 0 on the
 *    first step). Added AFTER clipping, so the noise level is the stated one whatever the gradient norm.
 *    Values: Philox (core/rng.h) with the optimizer's seed on stream CG_OPTIM_NOISE_STREAM; the element
 *    with global index j (parameters laid end to end in list order) at update t uses block
 *    t * 2^40 + j / 4, normal number j % 4 of that block's two Box-Muller pairs. Fresh each step,
 *    independent of threads, reproducible after a resume.
 * 5. The update with lr_eff = lr * group.lr_mult and the group's weight decay wd (decoupled everywhere):
 *    SGD:   p *= 1 - lr_eff*wd;  b = momentum*b + g (b starts at 0, so b_1 = g as in PyTorch, dampening 0);
 *           d = nesterov ? g + momentum*b : b (d = g when momentum = 0);  p -= lr_eff * d.
 *    AdamW: torch.optim.AdamW with amsgrad = False, t = the 1-based step number:
 *           p *= 1 - lr_eff*wd;  m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g^2;
 *           p -= (lr_eff / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
 *           (bias corrections and the step size in double, as PyTorch computes them in Python floats).
 *    Lion:  google/automl's order: p *= 1 - lr_eff*wd;  c = b1*m + (1-b1)*g;  p -= lr_eff * sign(c)
 *           (sign(0) = 0);  m = b2*m + (1-b2)*g.
 * Gradients are read, never modified (clipping and noise are applied on the fly); cg_optimizer_zero_grad
 * clears them for the next accumulation. The step count (and Adam's t) is one for the whole optimizer.
 *
 * Memory: the state (SGD momentum buffer when momentum != 0, AdamW m and v, Lion m; fp32, one per
 * parameter) and the norm's per-chunk partial sums live in the optimizer's own arena, allocated at create:
 * a step allocates nothing. Parameters are f32 and contiguous, all on one device. On the CPU the element
 * loops run in parallel (OpenMP) over fixed chunks; results do not depend on the thread count. On a GPU the
 * state lives on the device and fused kernels (cuda/optim.cu) do the scan and the update, one block per
 * chunk; the step waits for the scan's per-chunk sums (the skip / clip decision is made on the host). */
#ifndef CG_OPTIM_H
#define CG_OPTIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/comm.h"
#include "core/error.h"
#include "core/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The Philox stream of the gradient noise (see above): "OPTNOISE". */
#define CG_OPTIM_NOISE_STREAM 0x4F50544E4F495345ull

typedef enum cg_optimizer_kind { CG_OPT_SGD = 0, CG_OPT_ADAMW = 1, CG_OPT_LION = 2 } cg_optimizer_kind;

typedef struct cg_optimizer_config {
    cg_optimizer_kind kind;
    float lr;              /* the default lr (what the caller usually passes to cg_optimizer_step or the schedule) */
    float weight_decay;    /* decoupled: p *= 1 - lr * weight_decay, for parameters the mask lets decay */
    float beta1, beta2;    /* AdamW and Lion */
    float eps;             /* AdamW */
    float momentum;        /* SGD */
    bool nesterov;         /* SGD (needs momentum > 0) */
    bool decay_embeddings; /* decay the token/position embeddings too (default false) */
    float grad_clip;       /* max global gradient norm; 0 = off */
    float grad_noise_eta;  /* eta of the annealed gradient noise; 0 = off */
    uint64_t seed;         /* gradient noise */
} cg_optimizer_config;

/* PyTorch / Lion defaults:
 *   SGD:   lr 1e-3, momentum 0, nesterov false, weight_decay 0 (torch.optim.SGD)
 *   AdamW: lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight_decay 1e-2 (torch.optim.AdamW)
 *   Lion:  lr 1e-4, betas (0.9, 0.99), weight_decay 0 (google/automl lion_pytorch.py)
 * and for all: no clipping, no noise, decay_embeddings false, seed 0. */
cg_optimizer_config cg_optimizer_config_default(cg_optimizer_kind kind);
/* "sgd", "adamw", "lion" (and back). */
const char *cg_optimizer_kind_name(cg_optimizer_kind kind);
cg_status cg_optimizer_kind_from_name(const char *name, cg_optimizer_kind *out);

/* The default weight-decay mask: false for tensors with ndim < 2 (norm weights, biases) and, unless
 * decay_embeddings, for embeddings (t->name ending in "wte.weight", "embed_tokens.weight" or "wpe.weight");
 * true otherwise. */
bool cg_optimizer_default_decays(const cg_tensor *t, bool decay_embeddings);

/* A parameter group (as in PyTorch): its parameters share an lr multiplier and a weight decay. */
typedef struct cg_param_group {
    int n;
    cg_tensor *const *params;
    float lr_mult;      /* lr of the group = lr passed to the step * lr_mult */
    float weight_decay; /* used as given (no mask) */
} cg_param_group;

typedef struct cg_optimizer cg_optimizer;

/* From a flat list, in list order: the parameters the default mask decays get the config's weight_decay,
 * the others 0; all lr_mult 1. Each parameter must be an f32 contiguous tensor, all on one device (its ->grad, an f32
 * buffer of the same size, may still be NULL). The list is copied; the tensors must outlive the
 * optimizer. */
cg_status cg_optimizer_create(const cg_optimizer_config *cfg, int n, cg_tensor *const *params, cg_optimizer **out);
/* Explicit groups; parameter indices run over the groups in order (a parameter may appear only once). */
cg_status cg_optimizer_create_groups(const cg_optimizer_config *cfg, int n_groups, const cg_param_group *groups,
                                     cg_optimizer **out);
void cg_optimizer_free(cg_optimizer *opt);

/* ZeRO-1 over comm's ranks (a flat list, default mask, as cg_optimizer_create): the parameters laid end to
 * end (list order) are cut into size equal shards of ceil(N / size) elements; rank r keeps the optimizer
 * state of shard r only and updates only those elements; cg_optimizer_step then all-gathers the parameters,
 * so every rank ends the step with all of them. The norm, clipping and noise are computed over every
 * element (each rank holds the full, already averaged gradients), so the update equals the unsharded one
 * element for element. cg_optimizer_step and cg_optimizer_save_state are collectives on such an optimizer
 * (every rank must call them); the saved state is the full one, in the unsharded layout, so it loads into
 * an optimizer over any number of ranks (load keeps only the shard). With one rank it is the plain
 * optimizer. comm must outlive the optimizer. */
cg_status cg_optimizer_create_zero1(const cg_optimizer_config *cfg, int n, cg_tensor *const *params,
                                    cg_comm *comm, cg_optimizer **out);
bool cg_optimizer_is_sharded(const cg_optimizer *opt);
/* This rank's global element range [lo, hi) (everything when unsharded). */
void cg_optimizer_shard_range(const cg_optimizer *opt, int64_t *lo, int64_t *hi);

typedef struct cg_optim_step_info {
    double grad_norm;    /* global L2 norm before clipping (NaN or Inf when the step was skipped) */
    double clip_coef;    /* factor the gradients were scaled by (1 = no clipping) */
    double noise_std;    /* sigma_t of the gradient noise (0 = off) */
    bool skipped;        /* a non-finite gradient: nothing changed */
    int64_t nonfinite;   /* non-finite gradient elements found */
    int first_nonfinite; /* index (in create order) of the first parameter holding one, or -1 */
    int64_t step;        /* the step count after this call */
} cg_optim_step_info;

/* One update with learning rate lr (>= 0, finite). info may be NULL. A skipped step returns CG_OK. */
cg_status cg_optimizer_step(cg_optimizer *opt, float lr, cg_optim_step_info *info);
/* The global gradient norm (NaN when some element is not finite) and the count of non-finite elements
 * (nonfinite may be NULL), as step 1-2 of cg_optimizer_step computes them, without changing anything: for
 * callers that decide on the norm before stepping (the trainer's outlier guard). */
cg_status cg_optimizer_grad_norm(cg_optimizer *opt, double *norm, int64_t *nonfinite);
/* Mixed precision: after every update, parameter i's new fp32 value is also written, rounded to bf16, into
 * `copy` (a packed bf16 tensor of its shape on its device; NULL stops it) in the same pass. The copy is
 * filled at once too. The forward then runs on the bf16 copies while the optimizer keeps fp32 masters. */
cg_status cg_optimizer_set_working_copy(cg_optimizer *opt, int i, cg_tensor *copy);
/* Zeroes every parameter's gradient. */
void cg_optimizer_zero_grad(cg_optimizer *opt);
/* Updates made so far (skipped steps do not count). */
int64_t cg_optimizer_step_count(const cg_optimizer *opt);
const cg_optimizer_config *cg_optimizer_get_config(const cg_optimizer *opt);
int cg_optimizer_num_params(const cg_optimizer *opt);
cg_tensor *cg_optimizer_param(const cg_optimizer *opt, int i);
/* The weight decay and lr multiplier parameter i gets. */
float cg_optimizer_param_weight_decay(const cg_optimizer *opt, int i);
float cg_optimizer_param_lr_mult(const cg_optimizer *opt, int i);

/* ---- state for checkpoints (optim/optim_state.c) ----
 * A flat little-endian buffer: header { char magic[8] = "CGOPTST1"; u32 version = 1; u32 kind; u32 n_params;
 * u32 n_state (state tensors per parameter); i64 step; } then n_params u64 element counts, then for each
 * state tensor kind (m, then v) each parameter's fp32 values in parameter order. Loading checks the kind,
 * the parameter count and every element count against this optimizer and the exact size, so a state can
 * only go back into an optimizer built the same way; the hyperparameters come from the config, not the
 * state. A save followed by a load gives bit-identical later steps. */
size_t cg_optimizer_state_bytes(const cg_optimizer *opt);
/* ZeRO-1 checkpoints without gathering: each rank saves its shard (header { "CGOPTSH1", version, kind,
 * n_params, n_state, step, total elements, lo, hi }, the element counts, then each state tensor's elements
 * [lo, hi) in global order), and an optimizer over any number of ranks (sharded or not) loads the shards
 * covering its own range; they must all be from one step and not overlap. Load checks everything before
 * changing anything. */
size_t cg_optimizer_shard_bytes(const cg_optimizer *opt);
cg_status cg_optimizer_save_shard(const cg_optimizer *opt, void *buf);
cg_status cg_optimizer_load_shards(cg_optimizer *opt, int n, const void *const *bufs, const size_t *lens);
/* buf holds cg_optimizer_state_bytes(opt) bytes. */
cg_status cg_optimizer_save_state(const cg_optimizer *opt, void *buf);
cg_status cg_optimizer_load_state(cg_optimizer *opt, const void *buf, size_t n);

/* ---- LR schedules (optim/schedule.c) ----
 * With lr_max = cfg.lr, lr_min = lr_max * final_frac, W = warmup_steps, N = total_steps, step s >= 0:
 *   warmup (every kind, s < W):    lr_max * (s + 1) / W                       (llm.c)
 *   constant:                      lr_max
 *   cosine (llm.c):                r = (s - W) / (N - W);  lr_min + 0.5 * (1 + cos(pi * r)) * (lr_max - lr_min)
 *   linear:                        lr_min + (1 - r) * (lr_max - lr_min)
 *   wsd (warmup-stable-decay):     D = round(decay_frac * N) decay steps ending at N, starting at S = N - D
 *                                  (S >= W: the decay never cuts into the warmup); lr_max for s < S, then
 *                                  q = (s - S) / D:  lr_min + (1 - q) * (lr_max - lr_min)   (linear)
 *                                               or  lr_min + (1 - sqrt(q)) * (lr_max - lr_min) (wsd_sqrt)
 * r and q are clamped to [0, 1] (s >= N gives lr_min). As in llm.c, the last step s = N - 1 is one
 * decay step short of lr_min (r = (N - 1 - W) / (N - W)). */
typedef enum cg_lr_schedule_kind {
    CG_LR_CONSTANT = 0,
    CG_LR_COSINE = 1,
    CG_LR_LINEAR = 2,
    CG_LR_WSD = 3
} cg_lr_schedule_kind;

typedef struct cg_lr_schedule_config {
    cg_lr_schedule_kind kind;
    float lr;             /* peak */
    int64_t warmup_steps; /* 0 = none */
    int64_t total_steps;  /* N (ignored by constant) */
    float final_frac;     /* lr_min / lr_max, in [0, 1] */
    float decay_frac;     /* wsd: share of the N steps spent decaying, in [0, 1] */
    bool wsd_sqrt;        /* wsd: 1 - sqrt decay instead of linear */
} cg_lr_schedule_config;

/* Checks ranges (lr finite >= 0, warmup >= 0, total > warmup for the decaying kinds, fractions in [0, 1]). */
cg_status cg_lr_schedule_validate(const cg_lr_schedule_config *s);
/* The learning rate at step (>= 0; a negative step counts as 0). Assumes a valid config. */
float cg_lr_schedule(const cg_lr_schedule_config *s, int64_t step);
const char *cg_lr_schedule_kind_name(cg_lr_schedule_kind kind);
/* "constant", "cosine", "linear", "wsd" */
cg_status cg_lr_schedule_kind_from_name(const char *name, cg_lr_schedule_kind *out);

#ifdef __cplusplus
}
#endif
#endif
