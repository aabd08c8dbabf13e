/* rl/objective.h, DisCO and DisCO-b (spec/rl_objectives.md section 3) on a hand-made batch of n_seq = 6 (two
 * questions of G = 3, padding included): the log-sum-exp gradient equals softmax weights over the negatives, the
 * squared-hinge KL constraint active and inactive (k1 and k3), log-L and L-ratio scores, dropped questions in the
 * denominator, all against a double transcription of the reference code; the gradient against central
 * differences of the true objective -J + (beta/2) [KL - delta]_+^2; DisCO-b through cg_gradcheck. */
#include <float.h>

#include "rl_test_util.h"

/* ------------------------------------------------------------------ references (double, from the spec) */

/* DisCO scores s_i and ds_i / dlogp_{i,t} (spec 3.1). */
static void disco_scores(const cg_rl_config *c, const batch *b, const float *lp, double *s, double *ds) {
    for (int i = 0; i < b->n; i++) {
        double len = 0, sum = 0;
        for (int t = 0; t < b->T; t++) len += b->mask[i * b->T + t];
        for (int t = 0; t < b->T; t++) {
            int k = i * b->T + t;
            double v = 0, dv = 0;
            if (b->mask[k] != 0) {
                if (c->disco_score == CG_DISCO_SCORE_LOG_L) v = lp[k], dv = 1;
                else v = dv = exp(lp[k] - (b->has_old ? b->old[k] : lp[k]));
            }
            sum += v;
            ds[k] = dv / len;
        }
        s[i] = sum / len;
    }
}

static double disco_kl(const cg_rl_config *c, const batch *b, const float *lp, double *dkl) {
    double N = 0, kl = 0;
    for (int k = 0; k < b->n * b->T; k++) N += b->mask[k];
    for (int k = 0; k < b->n * b->T; k++) {
        dkl[k] = 0;
        if (b->mask[k] == 0) continue;
        double d = lp[k] - (b->has_old ? b->old[k] : lp[k]);
        if (c->disco_kl == CG_DISCO_KL_K1) kl += -d / N, dkl[k] = -1 / N;
        else kl += (exp(d) - d - 1) / N, dkl[k] = (exp(d) - 1) / N;
    }
    return kl;
}

/* The reference code's loss value and gradient (spec 3.2-3.4). */
static void ref_disco(const cg_rl_config *c, const batch *b, ref_out *o) {
    const int n = b->n, T = b->T, G = b->G, nq = n / G;
    double s[MAXN], ds[MAXN * MAXT], dpg[MAXN] = {0}, dkl[MAXN * MAXT];
    memset(o, 0, sizeof *o);
    disco_scores(c, b, b->logp, s, ds);
    double pg = 0, tau = c->disco_tau;
    int n_valid = 0;
    for (int q = 0; q < nq; q++) {
        int np = 0, nn = 0;
        double pos = 0, mx = -INFINITY;
        for (int k = q * G; k < q * G + G; k++) {
            if (b->rewards[k] == 1) np++, pos += s[k];
            else nn++, mx = fmax(mx, s[k] / tau);
        }
        if (!np || !nn) continue;
        n_valid++;
        double negterm = 0, S = 0;
        if (c->algo == CG_RL_DISCO)
            for (int k = q * G; k < q * G + G; k++) S += b->rewards[k] == 0 ? exp(s[k] / tau - mx) : 0;
        for (int k = q * G; k < q * G + G; k++) {
            if (b->rewards[k] == 1) dpg[k] += 1.0 / np;
            else if (c->algo == CG_RL_DISCO) dpg[k] -= exp(s[k] / tau - mx) / S; /* softmax over negatives */
            else dpg[k] -= 1.0 / nn, negterm += s[k] / nn;
        }
        if (c->algo == CG_RL_DISCO) negterm = tau * S / (S + FLT_EPSILON);
        pg += pos / np - negterm;
    }
    pg /= nq;
    double kl = disco_kl(c, b, b->logp, dkl);
    double coef = fmax(c->disco_beta * (kl - c->disco_delta), 0);
    if (!n_valid) return; /* dummy 0 loss */
    o->pg = -pg;
    o->loss = -pg + coef * kl;
    for (int k = 0; k < n * T; k++) o->grad[k] = -dpg[k / T] / nq * ds[k] + coef * dkl[k];
}

/* The objective the DisCO gradient descends, -J + (beta/2) [KL - delta]_+^2 with J's true log-mean-exp
 * (spec 3.2), at log-probs lp. */
static double disco_true_objective(const cg_rl_config *c, const batch *b, const float *lp) {
    double s[MAXN], ds[MAXN * MAXT], dkl[MAXN * MAXT], J = 0, tau = c->disco_tau;
    disco_scores(c, b, lp, s, ds);
    for (int q = 0; q < b->n / b->G; q++) {
        int np = 0, nn = 0;
        double pos = 0, neg = 0;
        for (int k = q * b->G; k < (q + 1) * b->G; k++) {
            if (b->rewards[k] == 1) np++, pos += s[k];
            else nn++, neg += c->algo == CG_RL_DISCO ? exp(s[k] / tau) : s[k];
        }
        if (np && nn) J += pos / np - (c->algo == CG_RL_DISCO ? tau * log(neg / nn) : neg / nn);
    }
    J /= b->n / b->G;
    double h = fmax(disco_kl(c, b, lp, dkl) - c->disco_delta, 0);
    return -J + 0.5 * c->disco_beta * h * h;
}

/* ------------------------------------------------------------------ DisCO */

/* DisCO's log-sum-exp gradient: each negative gets softmax_j(s / tau) over its question's negatives, each
 * positive 1 / n_pos, both over the question count and the response length (spec 3.4). */
static void test_disco_lse_gradient_is_softmax(void **state) {
    (void)state;
    batch b = disco_batch(PAD_BENIGN);
    b.has_old = false; /* KL = 0: hinge inactive */
    cg_rl_config c = cg_rl_config_default(CG_RL_DISCO);
    c.disco_tau = 0.5f;
    cg_rl_stats st;
    double g[18];
    double v = run_loss(&c, &b, NULL, &st, g);
    const double len[6] = {3, 2, 1, 3, 3, 2};
    double s[6];
    for (int i = 0; i < 6; i++) {
        s[i] = 0;
        for (int t = 0; t < 3; t++) s[i] += b.mask[i * 3 + t] ? b.logp[i * 3 + t] / len[i] : 0;
    }
    /* q0: positive 0, negatives 1, 2; q1: negative 3, positives 4, 5 */
    double z = exp(s[1] / 0.5) + exp(s[2] / 0.5);
    double w[6] = {-1.0 / 2, exp(s[1] / 0.5) / z / 2, exp(s[2] / 0.5) / z / 2, 1.0 / 2, -0.5 / 2, -0.5 / 2};
    for (int k = 0; k < 18; k++) assert_close(g[k], b.mask[k] ? w[k / 3] / len[k / 3] : 0.0, 1e-5, 1e-8);
    /* the softmax weights differ from a plain mean (the test would not notice otherwise) */
    assert_true(fabs(w[1] - 0.25) > 0.05);
    /* value: -(sum_q mean_pos(s) - tau * S / (sg(S) + eps)) / 2 = -(s0 - 0.5 + (s4 + s5) / 2 - 0.5) / 2 */
    assert_close(v, -(s[0] + (s[4] + s[5]) / 2 - 1.0) / 2, 1e-5, 1e-7);
    assert_int_equal(st.n_valid_groups, 2);
    assert_false(st.constraint_active);
    assert_close(st.score_pos_mean, (s[0] + s[4] + s[5]) / 3, 1e-5, 0);
    assert_close(st.score_neg_mean, (s[1] + s[2] + s[3]) / 3, 1e-5, 0);
    ref_out want;
    ref_disco(&c, &b, &want);
    expect_matches(&c, &b, NULL, &want);
}

static void test_disco_variants_against_reference(void **state) {
    (void)state;
    for (int algo = CG_RL_DISCO; algo <= CG_RL_DISCOB; algo++)
        for (int score = 0; score < 2; score++)
            for (int kl = 0; kl < 2; kl++)
                for (int active = 0; active < 2; active++) {
                    batch b = disco_batch(PAD_HUGE);
                    cg_rl_config c = cg_rl_config_default((cg_rl_algo)algo);
                    c.disco_score = (cg_disco_score)score;
                    c.disco_tau = score == CG_DISCO_SCORE_L_RATIO ? 1.0f : 10.0f; /* spec 3.5 */
                    c.disco_kl = (cg_disco_kl)kl;
                    c.disco_delta = active ? 1e-4f : 1.0f;
                    ref_out want;
                    ref_disco(&c, &b, &want);
                    expect_matches(&c, &b, NULL, &want);
                    cg_rl_stats st;
                    double g[18];
                    run_loss(&c, &b, NULL, &st, g);
                    assert_int_equal(st.constraint_active, active);
                    assert_close(st.clip_frac, active, 0, 0);
                    cg_step_end();
                }
}

/* The squared hinge: inactive, the gradient is the objective's alone; active, it adds
 * beta (KL - delta) grad KL with grad KL = -1/N per token for k1 (spec 3.2). */
static void test_disco_hinge(void **state) {
    (void)state;
    batch b = disco_batch(PAD_BENIGN);
    cg_rl_config c = cg_rl_config_default(CG_RL_DISCOB);
    double g_on[18], g_off[18], g_free[18];
    cg_rl_stats st;
    double v_on = run_loss(&c, &b, NULL, &st, g_on);
    assert_true(st.constraint_active);
    double kl = 0;
    for (int k = 0; k < 18; k++)
        if (b.mask[k]) kl += ((double)b.old[k] - b.logp[k]) / 14;
    assert_close(st.disco_kl, kl, 1e-4, 1e-8);
    assert_true(kl > 0.01);
    double coef = 1e3 * (kl - 1e-4);
    assert_close(st.disco_penalty, coef * kl, 1e-3, 0);
    c.disco_beta = 0;
    double v_free = run_loss(&c, &b, NULL, NULL, g_free);
    assert_close(v_on - v_free, coef * kl, 1e-3, 0);
    for (int k = 0; k < 18; k++) assert_close(g_on[k] - g_free[k], b.mask[k] ? -coef / 14 : 0.0, 1e-3, 1e-6);
    c.disco_beta = 1e3f;
    c.disco_delta = 0.05f; /* KL below delta: inactive */
    double v_off = run_loss(&c, &b, NULL, &st, g_off);
    assert_false(st.constraint_active);
    assert_close(v_off, v_free, 1e-6, 1e-9);
    for (int k = 0; k < 18; k++) assert_close(g_off[k], g_free[k], 1e-6, 1e-9);
}

/* The DisCO gradient is that of -J + (beta/2) [KL - delta]_+^2 with J's true log-mean-exp (spec 3.2): central
 * differences of that objective in double against the tape's gradient, hinge active. */
static void test_disco_gradient_of_true_objective(void **state) {
    (void)state;
    for (int algo = CG_RL_DISCO; algo <= CG_RL_DISCOB; algo++)
        for (int score = 0; score < 2; score++) {
            batch b = disco_batch(PAD_BENIGN);
            cg_rl_config c = cg_rl_config_default((cg_rl_algo)algo);
            c.disco_score = (cg_disco_score)score;
            c.disco_tau = 0.7f;
            c.disco_beta = 50.0f;
            double g[18];
            run_loss(&c, &b, NULL, NULL, g);
            for (int k = 0; k < 18; k++) {
                if (!b.mask[k]) continue;
                float lp[18];
                memcpy(lp, b.logp, sizeof lp);
                const double h = 1e-3;
                lp[k] = (float)(b.logp[k] + h);
                double hp = (double)lp[k] - b.logp[k], fp = disco_true_objective(&c, &b, lp);
                lp[k] = (float)(b.logp[k] - h);
                double hm = (double)b.logp[k] - lp[k], fm = disco_true_objective(&c, &b, lp);
                assert_close(g[k], (fp - fm) / (hp + hm), 2e-3, 1e-5);
            }
            cg_step_end();
        }
}

/* spec 3.3: dropped (all-positive or all-negative) questions still count in the denominator. */
static void test_disco_dropped_question_denominator(void **state) {
    (void)state;
    batch b = disco_batch(PAD_BENIGN);
    b.has_old = false;
    const float rw[6] = {1, 0, 0, 1, 1, 1};
    memcpy(b.rewards, rw, sizeof rw);
    cg_rl_config c = cg_rl_config_default(CG_RL_DISCOB);
    double g[18];
    cg_rl_stats st;
    run_loss(&c, &b, NULL, &st, g);
    assert_int_equal(st.n_valid_groups, 1);
    assert_close(g[0], -1.0 / 2 / 3, 1e-6, 0);    /* positive of q0: 1 / n_pos / n_questions / |o| */
    assert_close(g[3], 0.5 / 2 / 2, 1e-6, 0);     /* negative of q0: 1 / n_neg / n_questions / |o| */
    for (int k = 9; k < 18; k++) assert_true(g[k] == 0.0);
    ref_out want;
    ref_disco(&c, &b, &want);
    expect_matches(&c, &b, NULL, &want);
}

/* DisCO-b with the hinge inactive: the loss value is the objective, so finite differences apply. */
static void test_discob_gradcheck(void **state) {
    (void)state;
    batch d = disco_batch(PAD_BENIGN);
    cg_rl_config c = cg_rl_config_default(CG_RL_DISCOB);
    c.disco_delta = 1.0f;
    gradcheck_config(&c, &d);
    c.disco_score = CG_DISCO_SCORE_L_RATIO;
    gradcheck_config(&c, &d);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_disco_lse_gradient_is_softmax, cg_test_teardown),
        cmocka_unit_test_teardown(test_disco_variants_against_reference, cg_test_teardown),
        cmocka_unit_test_teardown(test_disco_hinge, cg_test_teardown),
        cmocka_unit_test_teardown(test_disco_gradient_of_true_objective, cg_test_teardown),
        cmocka_unit_test_teardown(test_disco_dropped_question_denominator, cg_test_teardown),
        cmocka_unit_test_teardown(test_discob_gradcheck, cg_test_teardown),
    };
    int rc = cmocka_run_group_tests_name("rl_disco", tests, NULL, NULL);
    cg_shutdown();
    return rc;
}
