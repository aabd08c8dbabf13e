/* rl/objective.h, the token-level losses (GRPO, Dr. GRPO, DAPO, GPPO, REINFORCE) on a hand-made batch of
 * n_seq = 4, G = 2, T = 3 with padding: value and d loss / d logp (logp->grad after cg_backward) against a reference
 * written here in double straight from spec/rl_objectives.md: PPO clipping case by case (spec 1.3), the dual clip,
 * GPPO's preserved gradients (4.2, 4.3) and SFT term (4.4), the k3 KL and its gradient (1.1, 1.3), every
 * aggregation (1.4, 1.5, 2.1). Plus: the on-policy GRPO gradient equals -A / normaliser, all-equal groups and
 * padding that holds garbage (every algorithm, DisCO included), micro-batch denominators, overlong filtering,
 * cg_gradcheck, stats, configuration and argument errors. DisCO itself: test_rl_disco.c. */
#include "rl_test_util.h"

/* ------------------------------------------------------------------ references (double, from the spec) */

/* Aggregation weights: loss = sum_{i,t} w_{i,t} l_{i,t}. */
static void agg_weights(cg_rl_aggregation mode, double norm_c, const float *m, int n, int T, double tok_cnt,
                        double seq_cnt, double *w) {
    double N = 0, sd = seq_cnt > 0 ? seq_cnt : n;
    for (int k = 0; k < n * T; k++) N += m[k];
    for (int i = 0; i < n; i++) {
        double ni = 0;
        for (int t = 0; t < T; t++) ni += m[i * T + t];
        for (int t = 0; t < T; t++) {
            double v = 0;
            switch (mode) {
            case CG_AGG_TOKEN_MEAN: v = 1.0 / (tok_cnt > 0 ? tok_cnt : N); break;
            case CG_AGG_SEQ_MEAN_TOKEN_MEAN: v = 1.0 / (ni * sd); break;
            case CG_AGG_SEQ_MEAN_TOKEN_SUM: v = 1.0 / sd; break;
            default: v = 1.0 / (sd * (norm_c > 0 ? norm_c : T)); break;
            }
            w[i * T + t] = m[i * T + t] != 0 ? v : 0.0;
        }
    }
}

static double clampd(double x, double c) { return x < -c ? -c : x > c ? c : x; }

static void ref_token(const cg_rl_config *c, const batch *b, const run_opts *ro, ref_out *o) {
    const int n = b->n, T = b->T;
    float m[MAXN * MAXT];
    double w[MAXN * MAXT];
    memset(o, 0, sizeof *o);
    for (int k = 0; k < n * T; k++) m[k] = ro->no_mask ? 1.0f : b->mask[k];
    if (c->overlong_filter && ro->trunc)
        for (int i = 0; i < n; i++)
            if (ro->trunc[i])
                for (int t = 0; t < T; t++) m[i * T + t] = 0;
    agg_weights(c->aggregation, c->norm_constant, m, n, T, ro->tok_cnt, ro->seq_cnt, w);
    const double lo = (double)(1.0f - c->clip_low), hi = (double)(1.0f + c->clip_high), cd = c->dual_clip;
    for (int i = 0; i < n; i++)
        for (int t = 0; t < T; t++) {
            int k = i * T + t;
            if (m[k] == 0) continue;
            double lp = b->logp[k], old = b->has_old ? b->old[k] : lp, A = ro->tok_adv ? ro->tok_adv[k] : b->adv[i];
            double l, g;
            if (c->algo == CG_RL_REINFORCE) {
                l = -A * lp, g = -A;
            } else {
                double r = exp(clampd(lp - old, 20));
                if (c->algo == CG_RL_GPPO) { /* spec 4.3: value and gradient beta c A on the clipped side */
                    if (r < lo && A < 0) l = g = -c->gppo_beta1 * lo * A;
                    else if (r > hi && A > 0) l = g = -c->gppo_beta2 * hi * A;
                    else l = -A * r, g = -A * r;
                } else if ((A > 0 && r > hi) || (A < 0 && r < lo)) { /* spec 1.3: clipped, zero gradient */
                    l = -A * (r > hi ? hi : lo), g = 0;
                } else {
                    l = -A * r, g = -A * r;
                }
                if (cd > 0 && A < 0 && l > -A * cd) l = -A * cd, g = 0; /* verl dual clip */
            }
            o->pg += w[k] * l;
            o->grad[k] += w[k] * g;
            if (c->kl_beta > 0) { /* k3 = e^d - d - 1, d = ref - logp; d k3 / d logp = 1 - e^d */
                double d = clampd(b->ref[k] - lp, 20);
                o->kl += c->kl_beta * w[k] * (exp(d) - d - 1);
                o->grad[k] += c->kl_beta * w[k] * (1 - exp(d));
            }
        }
    if (c->algo == CG_RL_GPPO && c->sft_coef > 0) { /* spec 4.4: coef * agg(-logp) over positive responses */
        float pm[MAXN * MAXT];
        for (int k = 0; k < n * T; k++) pm[k] = b->rewards[k / T] == c->sft_positive_reward ? m[k] : 0;
        agg_weights(c->aggregation, c->norm_constant, pm, n, T, 0, 0, w);
        for (int k = 0; k < n * T; k++) {
            if (pm[k] == 0) continue;
            o->sft += c->sft_coef * w[k] * -b->logp[k];
            o->grad[k] += -c->sft_coef * w[k];
        }
    }
    o->loss = o->pg + o->kl + o->sft;
}

static void expect_token_ref(const cg_rl_config *c, const batch *b, const run_opts *ro) {
    static const run_opts none = {0};
    ref_out want;
    ref_token(c, b, ro ? ro : &none, &want);
    expect_matches(c, b, ro, &want);
}

/* ------------------------------------------------------------------ GRPO family */

/* spec 1.3 / appendix 2: with pi_theta == pi_old the clip is inactive and d loss / d logp = -A / normaliser. */
static void test_grpo_on_policy_is_reinforce(void **state) {
    (void)state;
    for (int explicit_old = 0; explicit_old < 2; explicit_old++) {
        batch b = base_batch(PAD_BENIGN);
        b.has_ref = false;
        b.has_old = explicit_old;
        memcpy(b.old, b.logp, sizeof b.old);
        cg_rl_config c = cg_rl_config_default(CG_RL_GRPO);
        c.kl_beta = 0;
        double g[12];
        double v = run_loss(&c, &b, NULL, NULL, g);
        /* seq-mean-token-mean: each sequence's token mean of -A * 1 is -A_i; their mean is 0 here */
        assert_close(v, -(1 - 1 + 0.5 - 0.5) / 4.0, 0, 1e-7);
        const double len[4] = {3, 2, 1, 3};
        for (int k = 0; k < 12; k++)
            assert_close(g[k], base_mask[k] ? -base_adv[k / 3] / (len[k / 3] * 4) : 0.0, 1e-6, 1e-8);
        c = cg_rl_config_default(CG_RL_DAPO); /* token-mean over the 9 real tokens */
        run_loss(&c, &b, NULL, NULL, g);
        for (int k = 0; k < 12; k++) assert_close(g[k], base_mask[k] ? -base_adv[k / 3] / 9.0 : 0.0, 1e-6, 1e-8);
        cg_step_end();
    }
}

static void test_ppo_clipped_tokens_have_zero_gradient(void **state) {
    (void)state;
    batch b = base_batch(PAD_BENIGN);
    cg_rl_config c = cg_rl_config_default(CG_RL_GRPO);
    c.kl_beta = 0;
    c.aggregation = CG_AGG_TOKEN_MEAN;
    double g[12];
    run_loss(&c, &b, NULL, NULL, g);
    /* clipped: seq0 t0 (A > 0, r 1.65), seq1 t0 (A < 0, r 0.61), seq2 t0 (A > 0, r 1.35), seq3 t1 (A < 0, r 0.74) */
    const int clipped[4] = {0, 3, 6, 10};
    for (int j = 0; j < 4; j++) assert_true(g[clipped[j]] == 0.0);
    /* unclipped tokens: -A r / 9, including A > 0 with r < 1 - eps and A < 0 with r > 1 + eps */
    const int open[5] = {1, 2, 4, 9, 11};
    for (int j = 0; j < 5; j++) {
        int k = open[j];
        double r = exp((double)b.logp[k] - b.old[k]);
        assert_close(g[k], -base_adv[k / 3] * r / 9.0, 1e-5, 1e-8);
    }
    expect_token_ref(&c, &b, NULL);
    c.clip_high = 0.28f; /* clip-higher: r 1.35 still clipped, the other results the same */
    expect_token_ref(&c, &b, NULL);
    cg_step_end();
}

static void test_dapo_dual_clip(void **state) {
    (void)state;
    batch b = base_batch(PAD_BENIGN);
    b.has_ref = false;
    cg_rl_config c = cg_rl_config_default(CG_RL_DAPO);
    double g[12];
    double v = run_loss(&c, &b, NULL, NULL, g);
    assert_true(g[9] == 0.0); /* A = -0.5, r = 3.32 > c = 3: the loss is capped at -A c = 1.5 */
    expect_token_ref(&c, &b, NULL);
    c.dual_clip = 0;
    double v2 = run_loss(&c, &b, NULL, NULL, g);
    double r9 = exp((double)b.logp[9] - b.old[9]);
    assert_close(g[9], 0.5 * r9 / 9.0, 1e-5, 0);
    assert_close(v2 - v, (0.5 * r9 - 1.5) / 9.0, 1e-4, 1e-7);
    expect_token_ref(&c, &b, NULL);
}

/* The k3 KL alone (A = 0): value mean(e^d - d - 1), gradient (1 - pi_ref / pi_theta) / N (spec 1.3). */
static void test_k3_kl_value_and_gradient(void **state) {
    (void)state;
    batch b = base_batch(PAD_BENIGN);
    memset(b.adv, 0, sizeof b.adv);
    cg_rl_config c = cg_rl_config_default(CG_RL_GRPO);
    c.kl_beta = 1.0f;
    c.aggregation = CG_AGG_TOKEN_MEAN;
    cg_rl_stats st;
    double g[12];
    double v = run_loss(&c, &b, NULL, &st, g);
    double want = 0;
    for (int k = 0; k < 12; k++) {
        if (!base_mask[k]) continue;
        double d = (double)b.ref[k] - b.logp[k];
        want += (exp(d) - d - 1) / 9.0;
        assert_close(g[k], (1 - exp(d)) / 9.0, 1e-5, 1e-8);
    }
    assert_close(v, want, 1e-5, 1e-8);
    /* hand-worked token: d = 0.2: k3 = e^0.2 - 1.2 = 0.0214028, gradient (1 - e^0.2) / 9 = -0.0246003 */
    assert_close(g[0], -0.0246003, 1e-4, 0);
    assert_close(st.kl_ref, want, 1e-6, 1e-9);
    assert_close(st.kl_loss, want, 1e-5, 1e-9);
    assert_close(st.pg_loss, 0, 0, 1e-9);
}

/* GRPO paper setting: seq-mean-token-mean, beta 0.04; on-policy the gradient coefficient is
 * GC = A + beta (pi_ref / pi_theta - 1) (spec 1.3): d loss / d logp = -GC / (|o_i| G'). */
static void test_grpo_with_kl(void **state) {
    (void)state;
    batch b = base_batch(PAD_HUGE);
    cg_rl_config c = cg_rl_config_default(CG_RL_GRPO);
    expect_token_ref(&c, &b, NULL);
    b.has_old = false;
    double g[12];
    run_loss(&c, &b, NULL, NULL, g);
    const double len[4] = {3, 2, 1, 3};
    for (int k = 0; k < 12; k++) {
        if (!base_mask[k]) {
            assert_true(g[k] == 0.0);
            continue;
        }
        double gc = base_adv[k / 3] + 0.04 * (exp((double)b.ref[k] - b.logp[k]) - 1);
        assert_close(g[k], -gc / (len[k / 3] * 4), 1e-5, 1e-8);
    }
    expect_token_ref(&c, &b, NULL);
}

static void test_drgrpo_token_sum_norm(void **state) {
    (void)state;
    batch b = base_batch(PAD_BENIGN);
    b.has_old = false;
    cg_rl_config c = cg_rl_config_default(CG_RL_DRGRPO);
    double g[12];
    run_loss(&c, &b, NULL, NULL, g); /* C = T = 3: -A / (4 * 3) on every real token, whatever the length */
    for (int k = 0; k < 12; k++) assert_close(g[k], base_mask[k] ? -base_adv[k / 3] / 12.0 : 0.0, 1e-6, 1e-9);
    c.norm_constant = 5; /* the generation budget */
    run_loss(&c, &b, NULL, NULL, g);
    for (int k = 0; k < 12; k++) assert_close(g[k], base_mask[k] ? -base_adv[k / 3] / 20.0 : 0.0, 1e-6, 1e-9);
    b.has_old = true;
    expect_token_ref(&c, &b, NULL);
}

static void test_every_aggregation(void **state) {
    (void)state;
    batch b = base_batch(PAD_HUGE);
    for (int mode = 0; mode < CG_AGG_COUNT; mode++) {
        cg_rl_config c = cg_rl_config_default(CG_RL_GRPO);
        c.aggregation = (cg_rl_aggregation)mode;
        c.norm_constant = mode == CG_AGG_TOKEN_SUM_NORM ? 7.0f : 0.0f;
        expect_token_ref(&c, &b, NULL);
        c.algo = CG_RL_REINFORCE;
        expect_token_ref(&c, &b, NULL);
        cg_step_end();
    }
    /* hand check of seq-mean-token-sum on-policy: -A_i / 4 per real token */
    cg_rl_config c = cg_rl_config_default(CG_RL_DRGRPO);
    c.aggregation = CG_AGG_SEQ_MEAN_TOKEN_SUM;
    b.has_old = false;
    double g[12];
    run_loss(&c, &b, NULL, NULL, g);
    for (int k = 0; k < 12; k++) assert_close(g[k], base_mask[k] ? -base_adv[k / 3] / 4.0 : 0.0, 1e-6, 1e-9);
}

/* ------------------------------------------------------------------ GPPO, REINFORCE */

static void test_gppo_preserves_clipped_gradients(void **state) {
    (void)state;
    batch b = base_batch(PAD_BENIGN);
    b.has_ref = false;
    cg_rl_config c = cg_rl_config_default(CG_RL_GPPO); /* 0.2 / 0.28, dual clip 10, SFT 0.1 */
    c.sft_coef = 0;
    double g[12];
    run_loss(&c, &b, NULL, NULL, g);
    /* spec 4.2, per token of the token mean over 9: A > 0 above 1 + eps_h: -(1 + eps_h) A; A < 0 below 1 - eps_l:
     * -(1 - eps_l) A; elsewhere -r A */
    assert_close(g[0], -1.28 * 1.0 / 9, 1e-6, 0);  /* A = 1, r = 1.65 */
    assert_close(g[3], -0.8 * -1.0 / 9, 1e-6, 0);  /* A = -1, r = 0.61 */
    assert_close(g[6], -1.28 * 0.5 / 9, 1e-6, 0);  /* A = 0.5, r = 1.35 */
    assert_close(g[10], -0.8 * -0.5 / 9, 1e-6, 0); /* A = -0.5, r = 0.74 */
    double r2 = exp((double)b.logp[2] - b.old[2]);
    assert_close(g[2], -1.0 * r2 / 9, 1e-5, 0); /* A > 0, r < 1 - eps_l: unclipped as in PPO */
    expect_token_ref(&c, &b, NULL);

    /* the forward value equals clip-higher PPO's (DAPO with the same dual clip) */
    cg_rl_config d = cg_rl_config_default(CG_RL_DAPO);
    d.dual_clip = c.dual_clip;
    double gd[12];
    assert_close(run_loss(&c, &b, NULL, NULL, g), run_loss(&d, &b, NULL, NULL, gd), 1e-6, 1e-8);
    assert_true(gd[0] == 0.0 && g[0] != 0.0);

    /* general beta: beta1 0.25 on the low side */
    c.gppo_beta1 = 0.25f;
    run_loss(&c, &b, NULL, NULL, g);
    assert_close(g[3], -0.25 * 0.8 * -1.0 / 9, 1e-6, 0);
    assert_close(g[0], -1.28 / 9, 1e-6, 0);
    expect_token_ref(&c, &b, NULL);

    /* SFT term on the positive responses (rewards 1, 0, 1, 0: 4 positive tokens) */
    c = cg_rl_config_default(CG_RL_GPPO);
    double g0[12];
    c.sft_coef = 0;
    run_loss(&c, &b, NULL, NULL, g0);
    c.sft_coef = 0.1f;
    cg_rl_stats st;
    run_loss(&c, &b, NULL, &st, g);
    for (int k = 0; k < 12; k++)
        assert_close(g[k] - g0[k], base_mask[k] && base_rewards[k / 3] == 1 ? -0.1 / 4 : 0.0, 1e-5, 1e-8);
    double sft = 0.1 * -((double)b.logp[0] + b.logp[1] + b.logp[2] + b.logp[6]) / 4;
    assert_close(st.sft_loss, sft, 1e-5, 0);
    assert_close(st.loss, st.pg_loss + st.sft_loss, 1e-6, 1e-8);
    expect_token_ref(&c, &b, NULL);
}

static void test_reinforce(void **state) {
    (void)state;
    batch b = base_batch(PAD_HUGE);
    cg_rl_config c = cg_rl_config_default(CG_RL_REINFORCE); /* token mean of -A logp */
    double g[12];
    double v = run_loss(&c, &b, NULL, NULL, g);
    double want = 0;
    for (int k = 0; k < 12; k++)
        if (base_mask[k]) want += -base_adv[k / 3] * (double)b.logp[k] / 9;
    assert_close(v, want, 1e-5, 1e-8);
    for (int k = 0; k < 12; k++) assert_close(g[k], base_mask[k] ? -base_adv[k / 3] / 9.0 : 0.0, 1e-6, 1e-9);
}

static void test_per_token_advantages(void **state) {
    (void)state;
    batch b = base_batch(PAD_BENIGN);
    float ta[12];
    for (int k = 0; k < 12; k++) ta[k] = 0.3f * (float)(k % 5) - 0.6f;
    run_opts ro = {.tok_adv = ta};
    for (int algo = CG_RL_GRPO; algo <= CG_RL_GPPO; algo++) {
        cg_rl_config c = cg_rl_config_default((cg_rl_algo)algo);
        c.sft_coef = 0;
        expect_token_ref(&c, &b, &ro);
    }
}

/* ------------------------------------------------------------------ batch-level behaviour */

static void test_all_equal_groups_give_zero(void **state) {
    (void)state;
    batch b = base_batch(PAD_BENIGN);
    b.has_ref = false;
    const float rw[4] = {1, 1, 0, 0};
    memcpy(b.rewards, rw, sizeof rw);
    for (int algo = 0; algo < CG_RL_ALGO_COUNT; algo++) {
        cg_rl_config c = cg_rl_config_default((cg_rl_algo)algo);
        c.kl_beta = 0;
        c.sft_coef = 0;
        assert_ok(cg_compute_advantages(c.adv_kind, b.rewards, 4, 2, c.adv_eps, b.adv));
        cg_rl_stats st;
        double g[12];
        double v = run_loss(&c, &b, NULL, &st, g);
        assert_true(v == 0.0);
        for (int k = 0; k < 12; k++) assert_true(g[k] == 0.0);
        assert_false(isnan(st.loss) || isnan(st.ratio_mean) || isnan(st.kl_old));
        if (algo == CG_RL_DISCO || algo == CG_RL_DISCOB) assert_int_equal(st.n_valid_groups, 0);
        cg_step_end();
    }
}

/* Padding may hold anything (huge values that overflow exp, NaN): same loss and gradient, zero gradient there. */
static void test_padding_is_ignored(void **state) {
    (void)state;
    for (int algo = 0; algo < CG_RL_ALGO_COUNT; algo++) {
        bool disco = algo == CG_RL_DISCO || algo == CG_RL_DISCOB;
        cg_rl_config c = cg_rl_config_default((cg_rl_algo)algo);
        batch clean = disco ? disco_batch(PAD_BENIGN) : base_batch(PAD_BENIGN);
        double g0[MAXN * MAXT], g[MAXN * MAXT];
        double v0 = run_loss(&c, &clean, NULL, NULL, g0);
        for (int pad = PAD_HUGE; pad <= PAD_NAN; pad++) {
            batch b = disco ? disco_batch(pad) : base_batch(pad);
            double v = run_loss(&c, &b, NULL, NULL, g);
            assert_close(v, v0, 1e-6, 1e-9);
            for (int k = 0; k < b.n * b.T; k++) {
                if (b.mask[k] == 0) assert_true(g[k] == 0.0);
                else assert_close(g[k], g0[k], 1e-6, 1e-9);
            }
        }
        cg_step_end();
    }
}

/* Two micro-batches with the mini-batch's denominators accumulate exactly the full batch's gradient. */
static void test_micro_batch_denominators(void **state) {
    (void)state;
    batch full = base_batch(PAD_BENIGN);
    for (int mode = 0; mode < CG_AGG_COUNT; mode++) {
        cg_rl_config c = cg_rl_config_default(CG_RL_GRPO);
        c.aggregation = (cg_rl_aggregation)mode;
        double gf[12], gh[12];
        double vf = run_loss(&c, &full, NULL, NULL, gf), vsum = 0;
        for (int h = 0; h < 2; h++) {
            batch half = full;
            half.n = 2;
            memcpy(half.logp, full.logp + 6 * h, 6 * sizeof(float));
            memcpy(half.old, full.old + 6 * h, 6 * sizeof(float));
            memcpy(half.ref, full.ref + 6 * h, 6 * sizeof(float));
            memcpy(half.mask, full.mask + 6 * h, 6 * sizeof(float));
            memcpy(half.adv, full.adv + 2 * h, 2 * sizeof(float));
            run_opts ro = {.tok_cnt = 9, .seq_cnt = 4};
            vsum += run_loss(&c, &half, &ro, NULL, gh);
            for (int k = 0; k < 6; k++) assert_close(gh[k], gf[6 * h + k], 1e-5, 1e-9);
        }
        assert_close(vsum, vf, 1e-5, 1e-8);
        cg_step_end();
    }
}

static void test_overlong_filter_and_no_mask(void **state) {
    (void)state;
    batch b = base_batch(PAD_BENIGN);
    cg_rl_config c = cg_rl_config_default(CG_RL_DAPO);
    c.overlong_filter = true;
    const bool trunc[4] = {false, false, false, true};
    run_opts ro = {.trunc = trunc};
    cg_rl_stats st;
    double g[12];
    run_loss(&c, &b, &ro, &st, g);
    assert_int_equal(st.n_tokens, 6);
    for (int k = 9; k < 12; k++) assert_true(g[k] == 0.0);
    expect_token_ref(&c, &b, &ro);
    c.overlong_filter = false; /* the flags are ignored unless filtering is on */
    run_loss(&c, &b, &ro, &st, g);
    assert_int_equal(st.n_tokens, 9);
    /* no mask: every token is real */
    batch full = base_batch(PAD_BENIGN);
    for (int k = 0; k < 12; k++) full.mask[k] = 1;
    run_opts nm = {.no_mask = true};
    expect_token_ref(&c, &full, &nm);
}

static void test_stats(void **state) {
    (void)state;
    batch b = base_batch(PAD_HUGE);
    cg_rl_config c = cg_rl_config_default(CG_RL_DAPO);
    c.kl_beta = 0.1f;
    cg_rl_stats st;
    double g[12];
    double v = run_loss(&c, &b, NULL, &st, g);
    assert_close(st.loss, v, 1e-6, 1e-9);
    assert_close(st.loss, st.pg_loss + st.kl_loss, 1e-6, 1e-9);
    assert_int_equal(st.n_tokens, 9);
    assert_int_equal(st.n_seqs, 4);
    assert_close(st.clip_frac_high, 2.0 / 9, 1e-9, 0); /* seq0 t0, seq2 t0 */
    assert_close(st.clip_frac_low, 2.0 / 9, 1e-9, 0);  /* seq1 t0, seq3 t1 */
    assert_close(st.clip_frac, 4.0 / 9, 1e-9, 0);
    assert_close(st.dual_clip_frac, 1.0 / 9, 1e-9, 0); /* seq3 t0 */
    double rm = 0, klo = 0, lpm = 0, am = 0, rmax = 0, rmin = 1e9;
    for (int k = 0; k < 12; k++) {
        if (!base_mask[k]) continue;
        double lr = (double)b.logp[k] - b.old[k];
        rm += exp(lr) / 9, klo += -lr / 9, lpm += b.logp[k] / 9.0, am += base_adv[k / 3] / 9.0;
        rmax = fmax(rmax, exp(lr)), rmin = fmin(rmin, exp(lr));
    }
    assert_close(st.ratio_mean, rm, 1e-6, 0);
    assert_close(st.ratio_max, rmax, 1e-6, 0);
    assert_close(st.ratio_min, rmin, 1e-6, 0);
    assert_close(st.kl_old, klo, 1e-5, 1e-8);
    assert_close(st.logp_mean, lpm, 1e-6, 0);
    assert_close(st.adv_mean, am, 1e-6, 1e-9);
}

/* Where the loss value is the objective (no ratio-to-detached trick), the tape's gradient matches central
 * differences: GRPO with KL, Dr. GRPO, DAPO with its dual clip, REINFORCE, each aggregation. (The ratios stay > 0.05 away from every clip bound, so a 1e-3 step crosses none.) */
static void test_gradcheck(void **state) {
    (void)state;
    batch b = base_batch(PAD_BENIGN);
    for (int mode = 0; mode < CG_AGG_COUNT; mode++) {
        cg_rl_config c = cg_rl_config_default(CG_RL_GRPO);
        c.aggregation = (cg_rl_aggregation)mode;
        gradcheck_config(&c, &b);
        cg_step_end();
    }
    const cg_rl_algo algos[3] = {CG_RL_DRGRPO, CG_RL_DAPO, CG_RL_REINFORCE};
    for (int i = 0; i < 3; i++) {
        cg_rl_config c = cg_rl_config_default(algos[i]);
        c.kl_beta = 0.05f;
        gradcheck_config(&c, &b);
        cg_step_end();
    }
}

/* ------------------------------------------------------------------ configuration and errors */

static void test_config_defaults_and_names(void **state) {
    (void)state;
    cg_rl_config c = cg_rl_config_default(CG_RL_GRPO);
    assert_int_equal(c.aggregation, CG_AGG_SEQ_MEAN_TOKEN_MEAN);
    assert_close(c.kl_beta, 0.04, 1e-7, 0);
    assert_close(c.clip_low, 0.2, 1e-7, 0);
    assert_close(c.clip_high, 0.2, 1e-7, 0);
    assert_int_equal(c.adv_kind, CG_ADV_GROUP_MEAN_STD);
    c = cg_rl_config_default(CG_RL_DRGRPO);
    assert_int_equal(c.aggregation, CG_AGG_TOKEN_SUM_NORM);
    assert_int_equal(c.adv_kind, CG_ADV_GROUP_MEAN);
    assert_true(c.kl_beta == 0);
    c = cg_rl_config_default(CG_RL_DAPO);
    assert_close(c.clip_high, 0.28, 1e-7, 0);
    assert_int_equal(c.aggregation, CG_AGG_TOKEN_MEAN);
    assert_true(c.dynamic_sampling && c.overlong_penalty && c.overlong_cache_len == 4096);
    assert_close(c.dual_clip, 3, 0, 0);
    c = cg_rl_config_default(CG_RL_GPPO);
    assert_close(c.sft_coef, 0.1, 1e-7, 0);
    assert_close(c.gppo_beta1, 1, 0, 0);
    assert_close(c.dual_clip, 10, 0, 0);
    c = cg_rl_config_default(CG_RL_DISCO);
    assert_close(c.disco_tau, 10, 0, 0);
    assert_close(c.disco_beta, 1e3, 0, 0);
    assert_close(c.disco_delta, 1e-4, 1e-6, 0);
    assert_int_equal(c.disco_kl, CG_DISCO_KL_K1);
    for (int a = 0; a < CG_RL_ALGO_COUNT; a++) {
        cg_rl_config d = cg_rl_config_default((cg_rl_algo)a);
        assert_ok(cg_rl_config_check(&d));
        cg_rl_algo back;
        assert_ok(cg_rl_algo_parse(cg_rl_algo_name((cg_rl_algo)a), &back));
        assert_int_equal(back, a);
    }
    for (int m = 0; m < CG_AGG_COUNT; m++) {
        cg_rl_aggregation back;
        assert_ok(cg_rl_aggregation_parse(cg_rl_aggregation_name((cg_rl_aggregation)m), &back));
        assert_int_equal(back, m);
    }
    cg_disco_score sc;
    assert_ok(cg_disco_score_parse("l-ratio", &sc));
    assert_int_equal(sc, CG_DISCO_SCORE_L_RATIO);
    cg_rl_algo al;
    assert_int_equal(cg_rl_algo_parse("ppo", &al), CG_ERR_INVALID_ARG);
    assert_error_contains("unknown \"ppo\" (choices: grpo, drgrpo, dapo, gppo, disco, discob, reinforce)");
}

static void expect_loss_error(const cg_rl_config *c, const cg_rl_inputs *in, const char *msg) {
    assert_null(cg_rl_loss(c, in, NULL));
    assert_error_contains(msg);
}

static void test_errors(void **state) {
    (void)state;
    batch b = base_batch(PAD_BENIGN);
    cg_arena *a = cg_step_arena(CG_CPU);
    int64_t shape[2] = {4, 3}, s42[2] = {4, 2}, s12[1] = {12};
    cg_tensor *logp = cg_tensor_from_data(a, CG_F32, 2, shape, b.logp);
    cg_tensor *mask = cg_tensor_from_data(a, CG_F32, 2, shape, b.mask);
    cg_rl_config c = cg_rl_config_default(CG_RL_DAPO);
    cg_rl_inputs in = {.logp = logp, .mask = mask, .advantages = b.adv, .rewards = b.rewards, .group_size = 2};
    assert_non_null(cg_rl_loss(&c, &in, NULL));

    cg_rl_inputs e = in;
    e.mask = cg_tensor_from_data(a, CG_F32, 2, s42, b.mask);
    expect_loss_error(&c, &e, "rl loss: mask f32[4, 2] cpu does not have logp's shape (logp f32[4, 3] cpu)");
    e = in;
    int32_t ints[12] = {0};
    e.old_logp = cg_tensor_from_data(a, CG_I32, 2, shape, ints);
    expect_loss_error(&c, &e, "old_logp i32[4, 3] cpu must be f32");
    e = in;
    e.logp = cg_tensor_from_data(a, CG_F32, 1, s12, b.logp);
    expect_loss_error(&c, &e, "logp f32[12] cpu must be f32 [n_seq, T]");
    e = in;
    e.group_size = 3;
    expect_loss_error(&c, &e, "group size 3 does not divide n_seq 4");
    e = in;
    float nan_adv[4] = {1, NAN, 0, 0};
    e.advantages = nan_adv;
    expect_loss_error(&c, &e, "advantages[1] is nan");
    e = in;
    float nan_r[4] = {1, 0, NAN, 0};
    e.rewards = nan_r;
    expect_loss_error(&c, &e, "rewards[2] is nan");
    e = in;
    e.token_advantages = b.adv;
    expect_loss_error(&c, &e, "exactly one of advantages");
    e.advantages = e.token_advantages = NULL;
    expect_loss_error(&c, &e, "exactly one of advantages");
    e = in;
    e.token_count = -1;
    expect_loss_error(&c, &e, "token_count -1");

    cg_rl_config g = cg_rl_config_default(CG_RL_GRPO); /* kl_beta 0.04 needs a reference */
    expect_loss_error(&g, &in, "rl loss (grpo): kl_beta is 0.04 but ref_logp is NULL");
    cg_rl_config p = cg_rl_config_default(CG_RL_GPPO);
    e = in;
    e.rewards = NULL;
    expect_loss_error(&p, &e, "rl loss (gppo): sft_coef is 0.1 but rewards is NULL");

    cg_rl_config d = cg_rl_config_default(CG_RL_DISCO);
    e = in;
    e.group_size = 0;
    expect_loss_error(&d, &e, "rl loss (disco): group_size is needed");
    e = in;
    float half[4] = {1, 0.5f, 0, 1};
    e.rewards = half;
    expect_loss_error(&d, &e, "reward of sequence 1 is 0.5; DisCO needs binary rewards");
    e = in;
    e.rewards = NULL;
    expect_loss_error(&d, &e, "rl loss (disco): rewards is NULL");
    d.kl_beta = 0.1f;
    expect_loss_error(&d, &in, "kl_beta must be 0");

    cg_rl_config bad = c;
    bad.clip_low = 1.5f;
    expect_loss_error(&bad, &in, "clip_low is 1.5");
    bad = c;
    bad.dual_clip = 0.5f;
    expect_loss_error(&bad, &in, "dual_clip is 0.5, need 0 (off) or > 1");
    bad = cg_rl_config_default(CG_RL_DISCO);
    bad.disco_tau = 0;
    expect_loss_error(&bad, &in, "disco_tau is 0");
    bad = c;
    bad.algo = (cg_rl_algo)42;
    expect_loss_error(&bad, &in, "unknown algo 42");
    assert_null(cg_rl_loss(&c, NULL, NULL));
    assert_int_equal(cg_last_status(), CG_ERR_INVALID_ARG);
    assert_null(cg_rl_loss(NULL, &in, NULL));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_grpo_on_policy_is_reinforce, cg_test_teardown),
        cmocka_unit_test_teardown(test_ppo_clipped_tokens_have_zero_gradient, cg_test_teardown),
        cmocka_unit_test_teardown(test_dapo_dual_clip, cg_test_teardown),
        cmocka_unit_test_teardown(test_k3_kl_value_and_gradient, cg_test_teardown),
        cmocka_unit_test_teardown(test_grpo_with_kl, cg_test_teardown),
        cmocka_unit_test_teardown(test_drgrpo_token_sum_norm, cg_test_teardown),
        cmocka_unit_test_teardown(test_every_aggregation, cg_test_teardown),
        cmocka_unit_test_teardown(test_gppo_preserves_clipped_gradients, cg_test_teardown),
        cmocka_unit_test_teardown(test_reinforce, cg_test_teardown),
        cmocka_unit_test_teardown(test_per_token_advantages, cg_test_teardown),
        cmocka_unit_test_teardown(test_all_equal_groups_give_zero, cg_test_teardown),
        cmocka_unit_test_teardown(test_padding_is_ignored, cg_test_teardown),
        cmocka_unit_test_teardown(test_micro_batch_denominators, cg_test_teardown),
        cmocka_unit_test_teardown(test_overlong_filter_and_no_mask, cg_test_teardown),
        cmocka_unit_test_teardown(test_stats, cg_test_teardown),
        cmocka_unit_test_teardown(test_gradcheck, cg_test_teardown),
        cmocka_unit_test_teardown(test_config_defaults_and_names, cg_test_teardown),
        cmocka_unit_test_teardown(test_errors, cg_test_teardown),
    };
    int rc = cmocka_run_group_tests_name("rl_objective", tests, NULL, NULL);
    cg_shutdown();
    return rc;
}
