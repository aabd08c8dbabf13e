/* Advantage estimators, DAPO's group filter and overlong shaping, and BRPO's budget baseline
 * (spec/rl_objectives.md sections 1.4, 1.5, 2.1, 2.2, 5). Host arithmetic in double. */
#include "rl/advantage.h"

#include <math.h>
#include <stddef.h>
#include <string.h>

static const char *const kind_names[CG_ADV_KIND_COUNT] = {"group_mean_std", "group_mean", "batch_std", "rloo", "none"};

const char *cg_advantage_kind_name(cg_advantage_kind kind) {
    return (kind >= 0 && kind < CG_ADV_KIND_COUNT) ? kind_names[kind] : "unknown";
}

cg_status cg_advantage_kind_parse(const char *name, cg_advantage_kind *kind) {
    if (!name || !kind) return cg_set_error(CG_ERR_INVALID_ARG, "advantage kind: NULL argument");
    for (int k = 0; k < CG_ADV_KIND_COUNT; k++)
        if (strcmp(name, kind_names[k]) == 0) {
            *kind = (cg_advantage_kind)k;
            return CG_OK;
        }
    return cg_set_error(CG_ERR_INVALID_ARG,
                        "advantage kind: unknown \"%s\" (choices: group_mean_std, group_mean, batch_std, rloo, none)",
                        name);
}

/* n >= 1 values, group >= 1 dividing n, all finite. */
static cg_status check_grouped(const char *what, const float *v, int64_t n, int64_t group) {
    if (!v) return cg_set_error(CG_ERR_INVALID_ARG, "%s: NULL rewards", what);
    if (n < 1) return cg_set_error(CG_ERR_INVALID_ARG, "%s: n_seq is %lld, need at least 1", what, (long long)n);
    if (group < 1 || n % group != 0)
        return cg_set_error(CG_ERR_INVALID_ARG, "%s: group size %lld does not divide n_seq %lld", what,
                            (long long)group, (long long)n);
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(v[i]))
            return cg_set_error(CG_ERR_INVALID_ARG, "%s: reward of sequence %lld is %g (not finite)", what,
                                (long long)i, (double)v[i]);
    return CG_OK;
}

static double mean_of(const float *v, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += v[i];
    return s / (double)n;
}

/* Unbiased (n - 1) std, as torch.std; 1 for a single value (verl's rule for a group of one). */
static double std_of(const float *v, int64_t n, double mean) {
    if (n < 2) return 1.0;
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += (v[i] - mean) * (v[i] - mean);
    return sqrt(s / (double)(n - 1));
}

static double inverse_or_zero(double x) { return x > 0 ? 1.0 / x : 0.0; }

cg_status cg_compute_advantages(cg_advantage_kind kind, const float *rewards, int64_t n_seq, int64_t group, float eps,
                                float *adv_out) {
    cg_status st = check_grouped("advantages", rewards, n_seq, group);
    if (st != CG_OK) return st;
    if (!adv_out) return cg_set_error(CG_ERR_INVALID_ARG, "advantages: NULL output");
    if (kind < 0 || kind >= CG_ADV_KIND_COUNT)
        return cg_set_error(CG_ERR_INVALID_ARG, "advantages: unknown kind %d", (int)kind);
    if (!(eps >= 0) || !isfinite(eps))
        return cg_set_error(CG_ERR_INVALID_ARG, "advantages: eps is %g, need a finite value >= 0", (double)eps);
    double batch_std = 1.0;
    if (kind == CG_ADV_BATCH_STD) batch_std = std_of(rewards, n_seq, mean_of(rewards, n_seq));
    for (int64_t g0 = 0; g0 < n_seq; g0 += group) {
        const float *r = rewards + g0;
        /* verl: a group of one has mean 0 and std 1. */
        double mean = group > 1 ? mean_of(r, group) : 0.0;
        double sum = mean * (double)group;
        double scale = 1.0;
        /* A zero std (with eps 0) means equal rewards, whose centred values are exactly 0: keep them 0. */
        if (kind == CG_ADV_GROUP_MEAN_STD) scale = inverse_or_zero(std_of(r, group, mean) + eps);
        if (kind == CG_ADV_BATCH_STD) scale = inverse_or_zero(batch_std + eps);
        /* adv_out may alias rewards: the group's statistics are taken before any of it is overwritten. */
        for (int64_t k = 0; k < group; k++) {
            double a;
            switch (kind) {
            case CG_ADV_RLOO: a = group > 1 ? r[k] - (sum - r[k]) / (double)(group - 1) : r[k]; break;
            case CG_ADV_NONE: a = r[k]; break;
            default: a = (r[k] - mean) * scale; break;
            }
            adv_out[g0 + k] = (float)a;
        }
    }
    return CG_OK;
}

bool cg_group_all_equal(const float *rewards, int64_t group) {
    if (!rewards || group <= 1) return true;
    for (int64_t k = 1; k < group; k++)
        if (!(rewards[k] == rewards[0])) return false;
    return true;
}

cg_status cg_groups_with_signal(const float *rewards, int64_t n_seq, int64_t group, bool *keep, int64_t *n_kept) {
    cg_status st = check_grouped("dynamic sampling", rewards, n_seq, group);
    if (st != CG_OK) return st;
    if (!keep) return cg_set_error(CG_ERR_INVALID_ARG, "dynamic sampling: NULL keep array");
    int64_t kept = 0;
    for (int64_t g = 0; g < n_seq / group; g++) {
        keep[g] = !cg_group_all_equal(rewards + g * group, group);
        kept += keep[g];
    }
    if (n_kept) *n_kept = kept;
    return CG_OK;
}

cg_status cg_soft_overlong_penalty(int64_t len, int64_t max_len, int64_t cache_len, float factor, float *penalty) {
    if (!penalty) return cg_set_error(CG_ERR_INVALID_ARG, "overlong penalty: NULL output");
    if (len < 0 || cache_len < 0 || cache_len > max_len)
        return cg_set_error(CG_ERR_INVALID_ARG,
                            "overlong penalty: length %lld, max length %lld and cache length %lld (need length >= 0 "
                            "and 0 <= cache <= max)",
                            (long long)len, (long long)max_len, (long long)cache_len);
    if (!isfinite(factor))
        return cg_set_error(CG_ERR_INVALID_ARG, "overlong penalty: factor is %g", (double)factor);
    int64_t start = max_len - cache_len;
    double p;
    if (len <= start) p = 0.0;
    else if (len <= max_len) p = (double)(start - len) / (double)cache_len; /* cache_len > 0 here */
    else p = -1.0;
    *penalty = (float)(p * factor);
    return CG_OK;
}

cg_status cg_apply_soft_overlong_penalty(float *rewards, const int64_t *lengths, int64_t n, int64_t max_len,
                                         int64_t cache_len, float factor) {
    if (!rewards || !lengths || n < 0)
        return cg_set_error(CG_ERR_INVALID_ARG, "overlong penalty: NULL rewards or lengths, or n < 0");
    for (int64_t i = 0; i < n; i++) {
        float p;
        cg_status st = cg_soft_overlong_penalty(lengths[i], max_len, cache_len, factor, &p);
        if (st != CG_OK) return cg_error_context("sequence %lld: ", (long long)i);
        rewards[i] += p;
    }
    return CG_OK;
}

/* ------------------------------------------------------------------ BRPO */

/* R_j = sum_{k >= j} p_k r_k of one trace. */
static double return_to_go(const float *r, const float *probs, int64_t m, int64_t j) {
    double acc = 0;
    for (int64_t k = j; k < m; k++) acc += (double)probs[k] * r[k];
    return acc;
}

cg_status cg_brpo_budget_probs(cg_budget_prior prior, const int64_t *budgets, int64_t m, float *probs) {
    if (!budgets || !probs || m < 1)
        return cg_set_error(CG_ERR_INVALID_ARG, "budget probs: NULL budgets or probs, or m = %lld < 1", (long long)m);
    double total = 0;
    for (int64_t j = 0; j < m; j++) {
        if (budgets[j] <= 0 || (j > 0 && budgets[j] <= budgets[j - 1]))
            return cg_set_error(CG_ERR_INVALID_ARG,
                                "budget probs: budgets must be positive and strictly increasing (budget %lld is %lld)",
                                (long long)j, (long long)budgets[j]);
        total += (double)budgets[j];
    }
    for (int64_t j = 0; j < m; j++) {
        switch (prior) {
        case CG_BUDGET_PRIOR_UNIFORM: probs[j] = (float)(1.0 / (double)m); break;
        case CG_BUDGET_PRIOR_LINEAR: probs[j] = (float)((double)budgets[j] / total); break;
        case CG_BUDGET_PRIOR_BASE: probs[j] = j == m - 1 ? 1.0f : 0.0f; break;
        default: return cg_set_error(CG_ERR_INVALID_ARG, "budget probs: unknown prior %d", (int)prior);
        }
    }
    return CG_OK;
}

cg_status cg_brpo_advantages(cg_brpo_baseline baseline, const float *budget_rewards, const float *probs, int64_t n_seq,
                             int64_t group, int64_t m, double discount, float *adv_out) {
    if (!budget_rewards || !probs || !adv_out)
        return cg_set_error(CG_ERR_INVALID_ARG, "brpo advantages: NULL rewards, probs or output");
    if (m < 1) return cg_set_error(CG_ERR_INVALID_ARG, "brpo advantages: %lld budgets, need at least 1", (long long)m);
    if (baseline < CG_BRPO_BASELINE_BRPO || baseline > CG_BRPO_BASELINE_NONE)
        return cg_set_error(CG_ERR_INVALID_ARG, "brpo advantages: unknown baseline %d", (int)baseline);
    if (!(discount > 0) || !isfinite(discount))
        return cg_set_error(CG_ERR_INVALID_ARG, "brpo advantages: discount is %g, need > 0", discount);
    if (n_seq < 1 || group < 1 || n_seq % group != 0)
        return cg_set_error(CG_ERR_INVALID_ARG, "brpo advantages: group size %lld does not divide n_seq %lld",
                            (long long)group, (long long)n_seq);
    for (int64_t i = 0; i < n_seq * m; i++)
        if (!isfinite(budget_rewards[i]))
            return cg_set_error(CG_ERR_INVALID_ARG, "brpo advantages: reward of trace %lld at budget %lld is %g",
                                (long long)(i / m), (long long)(i % m), (double)budget_rewards[i]);
    for (int64_t j = 0; j < m; j++)
        if (!isfinite(probs[j]) || probs[j] < 0)
            return cg_set_error(CG_ERR_INVALID_ARG, "brpo advantages: probability of budget %lld is %g", (long long)j,
                                (double)probs[j]);

    for (int64_t g0 = 0; g0 < n_seq; g0 += group) {
        for (int64_t j = 0; j < m; j++) {
            double p_tail = 0; /* sum_{k >= j} p_k */
            for (int64_t k = j; k < m; k++) p_tail += probs[k];
            double v2 = 0;
            for (int64_t k = 0; k < group; k++) v2 += return_to_go(budget_rewards + (g0 + k) * m, probs, m, j);
            v2 /= (double)group;
            for (int64_t k = 0; k < group; k++) {
                const float *r = budget_rewards + (g0 + k) * m;
                double num = 0, den = 0, w = 1;
                for (int64_t e = 0; e < j; e++, w *= discount) {
                    num += w * r[e];
                    den += w;
                }
                double v1 = j > 0 ? num / den * p_tail : 0.0;
                double v;
                switch (baseline) {
                case CG_BRPO_BASELINE_BRPO: v = ((double)j * v1 + (double)(m - j) * v2) / (double)m; break;
                case CG_BRPO_BASELINE_V1: v = v1; break;
                case CG_BRPO_BASELINE_V2: v = v2; break;
                default: v = 0; break;
                }
                adv_out[(g0 + k) * m + j] = (float)(return_to_go(r, probs, m, j) - v);
            }
        }
    }
    return CG_OK;
}

cg_status cg_brpo_token_advantages(const float *seg_adv, const int64_t *budgets, int64_t n_seq, int64_t m, int64_t T,
                                   float *out) {
    if (!seg_adv || !budgets || !out)
        return cg_set_error(CG_ERR_INVALID_ARG, "brpo token advantages: NULL advantages, budgets or output");
    if (n_seq < 1 || m < 1 || T < 1)
        return cg_set_error(CG_ERR_INVALID_ARG, "brpo token advantages: n_seq %lld, m %lld, T %lld (need >= 1 each)",
                            (long long)n_seq, (long long)m, (long long)T);
    for (int64_t j = 0; j < m; j++)
        if (budgets[j] <= 0 || (j > 0 && budgets[j] <= budgets[j - 1]))
            return cg_set_error(CG_ERR_INVALID_ARG,
                                "brpo token advantages: budgets must be positive and strictly increasing (budget "
                                "%lld is %lld)",
                                (long long)j, (long long)budgets[j]);
    for (int64_t i = 0; i < n_seq; i++) {
        int64_t j = 0;
        for (int64_t t = 0; t < T; t++) {
            while (j < m && t >= budgets[j]) j++;
            out[i * T + t] = j < m ? seg_adv[i * m + j] : 0.0f;
        }
    }
    return CG_OK;
}
