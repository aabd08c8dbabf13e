/* Shared by tests/test_rl_objective.c and tests/test_rl_disco.c: the hand-made batches, a runner that builds
 * the tensors, calls cg_rl_loss and backpropagates, and a gradcheck wrapper. */
#ifndef CG_TEST_RL_UTIL_H
#define CG_TEST_RL_UTIL_H

#include "test_util.h"

#include "rl/objective.h"

#define MAXN 8
#define MAXT 4

typedef struct batch {
    int n, T, G;
    float logp[MAXN * MAXT], old[MAXN * MAXT], ref[MAXN * MAXT], mask[MAXN * MAXT];
    float adv[MAXN], rewards[MAXN];
    bool has_old, has_ref;
} batch;

/* ------------------------------------------------------------------ the batches */

/* n 4, G 2, T 3. Log-ratios chosen on both sides of every clip bound: with eps 0.2/0.28 and A = (1, -1, .5, -.5):
 * seq 0: r = 1.65 (A > 0: clipped high), 1.105 (inside), 0.61 (A > 0: unclipped);
 * seq 1: r = 0.61 (A < 0: clipped low), 1.05;  seq 2: r = 1.35 (clipped high);
 * seq 3: r = 3.32 (A < 0, above the dual clip 3), 0.74 (clipped low), 1.16. */
static const float base_mask[12] = {1, 1, 1, 1, 1, 0, 1, 0, 0, 1, 1, 1};
static const float base_logp[12] = {-0.7f, -1.2f, -0.4f, -2.0f, -0.9f, 0, -0.3f, 0, 0, -1.5f, -0.6f, -1.1f};
static const float base_lr[12] = {0.5f, 0.1f, -0.5f, -0.5f, 0.05f, 0, 0.3f, 0, 0, 1.2f, -0.3f, 0.15f};
static const float base_dref[12] = {0.2f, -0.1f, 0.3f, -0.4f, 0.25f, 0, 0.1f, 0, 0, -0.2f, 0.5f, -0.05f};
static const float base_adv[4] = {1, -1, 0.5f, -0.5f};
static const float base_rewards[4] = {1, 0, 1, 0};

/* garbage: padding holds values that overflow exp if they leak (or NaN); else benign values */
enum { PAD_BENIGN, PAD_HUGE, PAD_NAN };

static inline void fill_padding(batch *b, int pad) {
    for (int k = 0; k < b->n * b->T; k++) {
        if (b->mask[k] != 0) continue;
        b->logp[k] = pad == PAD_BENIGN ? -1.0f : pad == PAD_HUGE ? 100.0f : NAN;
        b->old[k] = pad == PAD_BENIGN ? -1.0f : pad == PAD_HUGE ? -100.0f : NAN;
        b->ref[k] = pad == PAD_BENIGN ? -1.0f : pad == PAD_HUGE ? 150.0f : NAN;
    }
}

static inline batch base_batch(int pad) {
    batch b;
    memset(&b, 0, sizeof b);
    b.n = 4, b.T = 3, b.G = 2, b.has_old = true, b.has_ref = true;
    for (int k = 0; k < 12; k++) {
        b.mask[k] = base_mask[k];
        b.logp[k] = base_logp[k];
        b.old[k] = base_logp[k] - base_lr[k];
        b.ref[k] = base_logp[k] + base_dref[k];
    }
    memcpy(b.adv, base_adv, sizeof base_adv);
    memcpy(b.rewards, base_rewards, sizeof base_rewards);
    fill_padding(&b, pad);
    return b;
}

/* n 6, G 3, T 3; rewards (1, 0, 0 | 0, 1, 1): both questions valid; old log-probs slightly above logp on
 * average, so the k1 KL estimate is positive (~0.02, far above delta = 1e-4). */
static inline batch disco_batch(int pad) {
    static const float mask[18] = {1, 1, 1, 1, 1, 0, 1, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 0};
    static const float logp[18] = {-0.5f, -0.8f, -0.3f, -1.5f, -2.0f, 0, -0.9f, 0, 0,
                                   -1.2f, -0.7f, -1.0f, -0.4f, -0.6f, -0.2f, -2.2f, -1.8f, 0};
    static const float lr[18] = {-0.05f, 0.02f, -0.03f, -0.04f, 0.01f, 0, -0.06f, 0, 0,
                                 0.03f, -0.02f, -0.01f, -0.05f, -0.02f, 0.04f, -0.03f, -0.01f, 0};
    static const float rw[6] = {1, 0, 0, 0, 1, 1};
    batch b;
    memset(&b, 0, sizeof b);
    b.n = 6, b.T = 3, b.G = 3, b.has_old = true;
    for (int k = 0; k < 18; k++) {
        b.mask[k] = mask[k];
        b.logp[k] = logp[k];
        b.old[k] = logp[k] - lr[k];
        b.ref[k] = logp[k];
    }
    memcpy(b.rewards, rw, sizeof rw);
    fill_padding(&b, pad);
    return b;
}

/* ------------------------------------------------------------------ references (double, from the spec) */

typedef struct run_opts {
    const float *tok_adv; /* per-token advantages instead of b->adv */
    const bool *trunc;
    double tok_cnt, seq_cnt;
    bool no_mask;
} run_opts;

typedef struct ref_out {
    double loss, pg, kl, sft;
    double grad[MAXN * MAXT];
} ref_out;

/* ------------------------------------------------------------------ running the library */

/* Builds the tensors, computes the loss, backpropagates; returns the loss value and logp's gradient. */
static inline double run_loss(const cg_rl_config *c, const batch *b, const run_opts *ro, cg_rl_stats *st, double *grad) {
    static const run_opts none = {0};
    if (!ro) ro = &none;
    cg_arena *a = cg_step_arena(CG_CPU);
    int64_t shape[2] = {b->n, b->T};
    cg_tensor *logp = cg_tensor_from_data(a, CG_F32, 2, shape, b->logp);
    assert_non_null(logp);
    assert_ok(cg_set_requires_grad(logp, true));
    cg_rl_inputs in = {
        .logp = logp,
        .old_logp = b->has_old ? cg_tensor_from_data(a, CG_F32, 2, shape, b->old) : NULL,
        .ref_logp = b->has_ref ? cg_tensor_from_data(a, CG_F32, 2, shape, b->ref) : NULL,
        .mask = ro->no_mask ? NULL : cg_tensor_from_data(a, CG_F32, 2, shape, b->mask),
        .advantages = ro->tok_adv ? NULL : b->adv,
        .token_advantages = ro->tok_adv,
        .rewards = b->rewards,
        .truncated = ro->trunc,
        .group_size = b->G,
        .token_count = ro->tok_cnt,
        .seq_count = ro->seq_cnt,
    };
    cg_tensor *loss = cg_rl_loss(c, &in, st);
    if (!loss) {
        print_error("cg_rl_loss failed: %s\n", cg_last_error());
        fail();
    }
    assert_int_equal(loss->ndim, 0);
    assert_ok(cg_backward(loss));
    assert_non_null(logp->grad);
    for (int k = 0; k < b->n * b->T; k++) grad[k] = cg_get_flat(logp->grad, k);
    return cg_get_flat(loss, 0);
}

static inline void expect_matches(const cg_rl_config *c, const batch *b, const run_opts *ro, const ref_out *want) {
    double g[MAXN * MAXT];
    double v = run_loss(c, b, ro, NULL, g);
    assert_close(v, want->loss, 1e-5, 1e-6);
    for (int k = 0; k < b->n * b->T; k++) assert_close(g[k], want->grad[k], 1e-5, 1e-6);
}

/* ------------------------------------------------------------------ finite differences */

typedef struct gc_user {
    cg_rl_config cfg;
    const batch *b;
} gc_user;

static inline cg_tensor *gc_loss(cg_tensor *const *x, void *user) {
    const gc_user *u = user;
    cg_rl_inputs in = {.logp = x[0], .old_logp = x[1], .ref_logp = x[2], .mask = x[3], .advantages = u->b->adv,
                       .rewards = u->b->rewards, .group_size = u->b->G};
    return cg_rl_loss(&u->cfg, &in, NULL);
}

static inline void gradcheck_config(const cg_rl_config *c, const batch *b) {
    cg_arena *a = cg_step_arena(CG_CPU);
    int64_t shape[2] = {b->n, b->T};
    cg_tensor *x[4] = {cg_tensor_from_data(a, CG_F32, 2, shape, b->logp), cg_tensor_from_data(a, CG_F32, 2, shape, b->old),
                       cg_tensor_from_data(a, CG_F32, 2, shape, b->ref), cg_tensor_from_data(a, CG_F32, 2, shape, b->mask)};
    assert_ok(cg_set_requires_grad(x[0], true));
    gc_user u = {*c, b};
    cg_gradcheck_opts o = {.eps = 1e-3, .rtol = 1e-2, .atol = 1e-4};
    cg_gradcheck_result r;
    assert_ok(cg_gradcheck(gc_loss, &u, 4, x, &o, &r));
    if (!r.passed) {
        print_error("%s (%s): element %lld analytic %g numeric %g\n", cg_rl_algo_name(c->algo),
                    cg_rl_aggregation_name(c->aggregation), (long long)r.worst_index, r.worst_analytic, r.worst_numeric);
        fail();
    }
    assert_int_equal(r.checked, b->n * b->T);
}

#endif
