/* rl/advantage.h: the advantage estimators on hand-made reward batches (expected values from the spec formulas,
 * recomputed here in double: unbiased std, eps), groups with all-equal rewards, DAPO's group filter and soft
 * overlong penalty (paper Eq. 13 on hand-worked lengths), BRPO's budget baseline on a hand-worked example and
 * against a direct transcription of the spec, and the argument errors. */
#include "test_util.h"

#include "rl/advantage.h"

/* ------------------------------------------------------------------ estimators */

/* Group statistics by the textbook formulas. */
static double grp_mean(const float *r, int g) {
    double s = 0;
    for (int k = 0; k < g; k++) s += r[k];
    return s / g;
}
static double grp_std_unbiased(const float *r, int g) {
    double m = grp_mean(r, g), s = 0;
    for (int k = 0; k < g; k++) s += (r[k] - m) * (r[k] - m);
    return sqrt(s / (g - 1));
}

static void test_group_mean_std(void **state) {
    (void)state;
    /* group 0: {1, 0, 0, 1}: mean 0.5, unbiased std sqrt(1/3); group 1: all equal; group 2: {3, -1, 0.5, 2} */
    const float r[12] = {1, 0, 0, 1, 2, 2, 2, 2, 3, -1, 0.5f, 2};
    float a[12];
    assert_ok(cg_compute_advantages(CG_ADV_GROUP_MEAN_STD, r, 12, 4, 1e-4f, a));
    /* hand-worked: 0.5 / (sqrt(1/3) + 1e-4) = 0.865875... */
    assert_close(a[0], 0.5 / (sqrt(1.0 / 3.0) + 1e-4), 1e-6, 0);
    assert_close(a[0], 0.8658756, 1e-6, 0);
    assert_close(a[1], -0.8658756, 1e-6, 0);
    for (int k = 4; k < 8; k++) assert_true(a[k] == 0.0f); /* all equal: zero, not NaN */
    for (int k = 8; k < 12; k++)
        assert_close(a[k], (r[k] - grp_mean(r + 8, 4)) / (grp_std_unbiased(r + 8, 4) + 1e-4), 1e-6, 1e-7);
    /* eps matters: with eps 0 the all-equal group would divide 0 by 0, but the numerator is exactly 0 */
    assert_ok(cg_compute_advantages(CG_ADV_GROUP_MEAN_STD, r, 12, 4, 0.0f, a));
    assert_close(a[0], 0.5 / sqrt(1.0 / 3.0), 1e-6, 0);
    for (int k = 4; k < 8; k++) assert_true(a[k] == 0.0f);
    /* verl's rule for a group of one: mean 0, std 1 */
    assert_ok(cg_compute_advantages(CG_ADV_GROUP_MEAN_STD, r, 3, 1, 1e-6f, a));
    assert_close(a[0], 1.0 / (1 + 1e-6), 1e-7, 0);
    assert_close(a[1], 0.0, 0, 0);
}

static void test_group_mean_batch_std_rloo_none(void **state) {
    (void)state;
    const float r[6] = {1, 0, 0, 4, 2, 3};
    float a[6];
    assert_ok(cg_compute_advantages(CG_ADV_GROUP_MEAN, r, 6, 3, 1e-4f, a));
    const double m0 = 1.0 / 3.0, m1 = 3.0;
    assert_close(a[0], 1 - m0, 1e-6, 0);
    assert_close(a[1], -m0, 1e-6, 0);
    assert_close(a[3], 4 - m1, 1e-6, 0);
    assert_close(a[4], 2 - m1, 1e-6, 0);
    assert_close(a[5], 0, 0, 1e-7);

    /* batch std: group mean subtracted, divided by the unbiased std of all six rewards (TRL "batch") */
    assert_ok(cg_compute_advantages(CG_ADV_BATCH_STD, r, 6, 3, 1e-4f, a));
    double bm = 10.0 / 6.0, bs = 0;
    for (int k = 0; k < 6; k++) bs += (r[k] - bm) * (r[k] - bm);
    bs = sqrt(bs / 5.0);
    assert_close(a[0], (1 - m0) / (bs + 1e-4), 1e-6, 0);
    assert_close(a[4], (2 - m1) / (bs + 1e-4), 1e-6, 0);

    /* leave-one-out: 1 - mean(0, 0) = 1; 0 - mean(1, 0) = -0.5; 4 - mean(2, 3) = 1.5; 2 - 3.5 = -1.5; 3 - 3 = 0 */
    assert_ok(cg_compute_advantages(CG_ADV_RLOO, r, 6, 3, 0, a));
    const double want[6] = {1, -0.5, -0.5, 1.5, -1.5, 0};
    for (int k = 0; k < 6; k++) assert_close(a[k], want[k], 1e-6, 1e-7);

    assert_ok(cg_compute_advantages(CG_ADV_NONE, r, 6, 3, 0, a));
    for (int k = 0; k < 6; k++) assert_true(a[k] == r[k]);

    /* the output may be the rewards array itself */
    float rr[6];
    memcpy(rr, r, sizeof rr);
    assert_ok(cg_compute_advantages(CG_ADV_RLOO, rr, 6, 3, 0, rr));
    for (int k = 0; k < 6; k++) assert_close(rr[k], want[k], 1e-6, 1e-7);
}

static void test_advantage_errors(void **state) {
    (void)state;
    float r[6] = {1, 0, 0, 1, 1, 1}, a[6];
    assert_int_equal(cg_compute_advantages(CG_ADV_GROUP_MEAN, r, 6, 4, 0, a), CG_ERR_INVALID_ARG);
    assert_error_contains("group size 4 does not divide n_seq 6");
    assert_int_equal(cg_compute_advantages(CG_ADV_GROUP_MEAN, r, 6, 0, 0, a), CG_ERR_INVALID_ARG);
    r[4] = NAN;
    assert_int_equal(cg_compute_advantages(CG_ADV_GROUP_MEAN_STD, r, 6, 3, 1e-4f, a), CG_ERR_INVALID_ARG);
    assert_error_contains("reward of sequence 4 is nan");
    r[4] = INFINITY;
    assert_int_equal(cg_compute_advantages(CG_ADV_GROUP_MEAN_STD, r, 6, 3, 1e-4f, a), CG_ERR_INVALID_ARG);
    r[4] = 1;
    assert_int_equal(cg_compute_advantages(CG_ADV_GROUP_MEAN_STD, r, 6, 3, -1e-4f, a), CG_ERR_INVALID_ARG);
    assert_error_contains("eps");
    assert_int_equal(cg_compute_advantages(CG_ADV_GROUP_MEAN_STD, NULL, 6, 3, 0, a), CG_ERR_INVALID_ARG);
    assert_int_equal(cg_compute_advantages(CG_ADV_GROUP_MEAN_STD, r, 6, 3, 0, NULL), CG_ERR_INVALID_ARG);
    assert_int_equal(cg_compute_advantages((cg_advantage_kind)99, r, 6, 3, 0, a), CG_ERR_INVALID_ARG);
    assert_int_equal(cg_compute_advantages(CG_ADV_NONE, r, 0, 1, 0, a), CG_ERR_INVALID_ARG);

    cg_advantage_kind k;
    for (int i = 0; i < CG_ADV_KIND_COUNT; i++) {
        assert_ok(cg_advantage_kind_parse(cg_advantage_kind_name((cg_advantage_kind)i), &k));
        assert_int_equal(k, i);
    }
    assert_string_equal(cg_advantage_kind_name(CG_ADV_GROUP_MEAN), "group_mean");
    assert_int_equal(cg_advantage_kind_parse("groupmean", &k), CG_ERR_INVALID_ARG);
    assert_error_contains("unknown \"groupmean\"");
}

/* ------------------------------------------------------------------ DAPO */

static void test_dynamic_sampling_filter(void **state) {
    (void)state;
    const float r[9] = {1, 1, 1, 0, 1, 0, 0, 0, 0};
    assert_true(cg_group_all_equal(r, 3));
    assert_false(cg_group_all_equal(r + 3, 3));
    assert_true(cg_group_all_equal(r + 6, 3));
    assert_true(cg_group_all_equal(r, 1));
    const float nan2[2] = {NAN, NAN};
    assert_false(cg_group_all_equal(nan2, 2));
    bool keep[3];
    int64_t kept = -1;
    assert_ok(cg_groups_with_signal(r, 9, 3, keep, &kept));
    assert_int_equal(kept, 1);
    assert_false(keep[0]);
    assert_true(keep[1]);
    assert_false(keep[2]);
    assert_int_equal(cg_groups_with_signal(r, 9, 2, keep, &kept), CG_ERR_INVALID_ARG);
    /* a kept group has nonzero advantages, a dropped one zero */
    float a[9];
    assert_ok(cg_compute_advantages(CG_ADV_GROUP_MEAN_STD, r, 9, 3, 1e-6f, a));
    for (int g = 0; g < 3; g++) {
        double mag = fabs(a[3 * g]) + fabs(a[3 * g + 1]) + fabs(a[3 * g + 2]);
        if (keep[g]) assert_true(mag > 1.0);
        else assert_true(mag == 0.0);
    }
}

static void test_soft_overlong_penalty(void **state) {
    (void)state;
    /* L_max 20, L_cache 4: free up to 16 tokens, then a linear ramp to -1 at 20, -1 beyond */
    const int64_t lens[7] = {0, 10, 16, 17, 18, 20, 25};
    const double want[7] = {0, 0, 0, -0.25, -0.5, -1, -1};
    for (int i = 0; i < 7; i++) {
        float p = 99;
        assert_ok(cg_soft_overlong_penalty(lens[i], 20, 4, 1.0f, &p));
        assert_close(p, want[i], 1e-7, 0);
        assert_ok(cg_soft_overlong_penalty(lens[i], 20, 4, 0.5f, &p));
        assert_close(p, 0.5 * want[i], 1e-7, 0);
    }
    /* cache 0: a hard cut at L_max */
    float p;
    assert_ok(cg_soft_overlong_penalty(20, 20, 0, 1.0f, &p));
    assert_close(p, 0, 0, 0);
    assert_ok(cg_soft_overlong_penalty(21, 20, 0, 1.0f, &p));
    assert_close(p, -1, 0, 0);
    float rw[3] = {1, 1, -1};
    const int64_t l3[3] = {5, 18, 30};
    assert_ok(cg_apply_soft_overlong_penalty(rw, l3, 3, 20, 4, 1.0f));
    assert_close(rw[0], 1, 0, 0);
    assert_close(rw[1], 0.5, 1e-7, 0);
    assert_close(rw[2], -2, 1e-7, 0);
    assert_int_equal(cg_soft_overlong_penalty(5, 20, 21, 1.0f, &p), CG_ERR_INVALID_ARG);
    assert_error_contains("cache length 21");
    assert_int_equal(cg_soft_overlong_penalty(-1, 20, 4, 1.0f, &p), CG_ERR_INVALID_ARG);
    const int64_t bad[2] = {5, -3};
    assert_int_equal(cg_apply_soft_overlong_penalty(rw, bad, 2, 20, 4, 1.0f), CG_ERR_INVALID_ARG);
    assert_error_contains("sequence 1");
}

/* ------------------------------------------------------------------ BRPO */

static void test_brpo_hand_example(void **state) {
    (void)state;
    /* m = 2 budgets, p = (0.5, 0.5), one group of two traces with budget rewards (1, 1) and (0, 1):
     * R = (1, 0.5) and (0.5, 0.5); V2 = (0.75, 0.5); V1 = (0, 0.5 * r_1) = (0, 0.5) and (0, 0);
     * V_1 = V2_1 = 0.75, V_2 = (V1_2 + V2_2) / 2 = 0.5 and 0.25; A = (0.25, 0) and (-0.25, 0.25). */
    const float r[4] = {1, 1, 0, 1}, p[2] = {0.5f, 0.5f};
    float a[4];
    assert_ok(cg_brpo_advantages(CG_BRPO_BASELINE_BRPO, r, p, 2, 2, 2, CG_BRPO_DISCOUNT, a));
    const double want[4] = {0.25, 0, -0.25, 0.25};
    for (int k = 0; k < 4; k++) assert_close(a[k], want[k], 1e-6, 1e-7);
    /* v2only = the GRPO baseline of the return: (0.25, 0) and (-0.25, 0) */
    assert_ok(cg_brpo_advantages(CG_BRPO_BASELINE_V2, r, p, 2, 2, 2, CG_BRPO_DISCOUNT, a));
    const double want2[4] = {0.25, 0, -0.25, 0};
    for (int k = 0; k < 4; k++) assert_close(a[k], want2[k], 1e-6, 1e-7);
    assert_ok(cg_brpo_advantages(CG_BRPO_BASELINE_NONE, r, p, 2, 2, 2, CG_BRPO_DISCOUNT, a));
    const double want0[4] = {1, 0.5, 0.5, 0.5};
    for (int k = 0; k < 4; k++) assert_close(a[k], want0[k], 1e-6, 1e-7);
}

/* A direct transcription of spec 5 with 1-based j, for larger random cases. */
static void brpo_spec(int mode, const float *r, const float *p, int n, int G, int m, double *out) {
    for (int i = 0; i < n; i++) {
        int g0 = i / G * G;
        for (int j = 1; j <= m; j++) {
            double R = 0, tail = 0, V2 = 0, num = 0, den = 0;
            for (int k = j; k <= m; k++) R += p[k - 1] * r[i * m + k - 1], tail += p[k - 1];
            for (int g = g0; g < g0 + G; g++)
                for (int k = j; k <= m; k++) V2 += p[k - 1] * r[g * m + k - 1] / G;
            for (int k = 1; k < j; k++) num += pow(2.0, k - 1) * r[i * m + k - 1], den += pow(2.0, k - 1);
            double V1 = j == 1 ? 0 : num / den * tail;
            double V = mode == CG_BRPO_BASELINE_BRPO ? ((j - 1) * V1 + (m - j + 1) * V2) / m
                       : mode == CG_BRPO_BASELINE_V1 ? V1
                       : mode == CG_BRPO_BASELINE_V2 ? V2
                                                     : 0;
            out[i * m + j - 1] = R - V;
        }
    }
}

static void test_brpo_against_spec(void **state) {
    (void)state;
    enum { n = 6, G = 3, m = 4 };
    float r[n * m], p[m], a[n * m];
    double want[n * m];
    uint64_t s = 7;
    for (int k = 0; k < n * m; k++) r[k] = (cg_test_randf(&s) + 1) * 0.5f;
    const int64_t budgets[m] = {2000, 4000, 6000, 8000};
    assert_ok(cg_brpo_budget_probs(CG_BUDGET_PRIOR_LINEAR, budgets, m, p));
    assert_close(p[0], 0.1, 1e-6, 0);
    assert_close(p[3], 0.4, 1e-6, 0);
    for (int mode = CG_BRPO_BASELINE_BRPO; mode <= CG_BRPO_BASELINE_NONE; mode++) {
        assert_ok(cg_brpo_advantages((cg_brpo_baseline)mode, r, p, n, G, m, CG_BRPO_DISCOUNT, a));
        brpo_spec(mode, r, p, n, G, m, want);
        for (int k = 0; k < n * m; k++) assert_close(a[k], want[k], 1e-5, 1e-6);
    }
    assert_ok(cg_brpo_budget_probs(CG_BUDGET_PRIOR_UNIFORM, budgets, m, p));
    for (int j = 0; j < m; j++) assert_close(p[j], 0.25, 0, 0);
    assert_ok(cg_brpo_budget_probs(CG_BUDGET_PRIOR_BASE, budgets, m, p));
    assert_true(p[0] == 0 && p[1] == 0 && p[2] == 0 && p[3] == 1);
    const int64_t bad[2] = {10, 10};
    assert_int_equal(cg_brpo_budget_probs(CG_BUDGET_PRIOR_UNIFORM, bad, 2, p), CG_ERR_INVALID_ARG);
    assert_error_contains("strictly increasing");
    r[5] = NAN;
    assert_int_equal(cg_brpo_advantages(CG_BRPO_BASELINE_BRPO, r, p, n, G, m, 2.0, a), CG_ERR_INVALID_ARG);
    assert_error_contains("trace 1 at budget 1");
    r[5] = 0;
    assert_int_equal(cg_brpo_advantages(CG_BRPO_BASELINE_BRPO, r, p, n, 4, m, 2.0, a), CG_ERR_INVALID_ARG);
}

static void test_brpo_token_advantages(void **state) {
    (void)state;
    const float seg[4] = {1, 2, 3, 4}; /* two traces, two segments */
    const int64_t budgets[2] = {2, 4};
    float out[10];
    assert_ok(cg_brpo_token_advantages(seg, budgets, 2, 2, 5, out));
    const float want[10] = {1, 1, 2, 2, 0, 3, 3, 4, 4, 0};
    for (int k = 0; k < 10; k++) assert_true(out[k] == want[k]);
    const int64_t bad[2] = {3, 2};
    assert_int_equal(cg_brpo_token_advantages(seg, bad, 2, 2, 5, out), CG_ERR_INVALID_ARG);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_group_mean_std),
        cmocka_unit_test(test_group_mean_batch_std_rloo_none),
        cmocka_unit_test(test_advantage_errors),
        cmocka_unit_test(test_dynamic_sampling_filter),
        cmocka_unit_test(test_soft_overlong_penalty),
        cmocka_unit_test(test_brpo_hand_example),
        cmocka_unit_test(test_brpo_against_spec),
        cmocka_unit_test(test_brpo_token_advantages),
    };
    int rc = cmocka_run_group_tests_name("rl_advantage", tests, NULL, NULL);
    cg_shutdown();
    return rc;
}
