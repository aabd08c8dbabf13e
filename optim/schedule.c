/* Learning-rate schedules (formulas in optim/optim.h). */
#include <math.h>
#include <string.h>

#include "optim/optim.h"

static const char *const schedule_names[] = {"constant", "cosine", "linear", "wsd"};

const char *cg_lr_schedule_kind_name(cg_lr_schedule_kind kind) {
    return (unsigned)kind < 4 ? schedule_names[kind] : "unknown";
}

cg_status cg_lr_schedule_kind_from_name(const char *name, cg_lr_schedule_kind *out) {
    if (!name || !out) return cg_set_error(CG_ERR_INVALID_ARG, "lr schedule: NULL name");
    for (int i = 0; i < 4; i++) {
        if (strcmp(name, schedule_names[i]) == 0) {
            *out = (cg_lr_schedule_kind)i;
            return CG_OK;
        }
    }
    return cg_set_error(CG_ERR_INVALID_ARG, "lr schedule: unknown kind '%s' (constant, cosine, linear, wsd)", name);
}

cg_status cg_lr_schedule_validate(const cg_lr_schedule_config *s) {
    if (!s) return cg_set_error(CG_ERR_INVALID_ARG, "lr schedule: NULL config");
    if ((unsigned)s->kind > CG_LR_WSD)
        return cg_set_error(CG_ERR_INVALID_ARG, "lr schedule: unknown kind %d", (int)s->kind);
    const char *k = cg_lr_schedule_kind_name(s->kind);
    if (!(isfinite(s->lr) && s->lr >= 0.0f))
        return cg_set_error(CG_ERR_INVALID_ARG, "lr schedule %s: lr %g must be finite and >= 0", k, s->lr);
    if (s->warmup_steps < 0)
        return cg_set_error(CG_ERR_INVALID_ARG, "lr schedule %s: warmup_steps %lld must be >= 0", k,
                            (long long)s->warmup_steps);
    if (!(s->final_frac >= 0.0f && s->final_frac <= 1.0f))
        return cg_set_error(CG_ERR_INVALID_ARG, "lr schedule %s: final_frac %g must be in [0, 1]", k, s->final_frac);
    if (s->kind != CG_LR_CONSTANT && s->total_steps <= s->warmup_steps)
        return cg_set_error(CG_ERR_INVALID_ARG, "lr schedule %s: total_steps %lld must exceed warmup_steps %lld", k,
                            (long long)s->total_steps, (long long)s->warmup_steps);
    if (s->kind == CG_LR_WSD && !(s->decay_frac >= 0.0f && s->decay_frac <= 1.0f))
        return cg_set_error(CG_ERR_INVALID_ARG, "lr schedule wsd: decay_frac %g must be in [0, 1]", s->decay_frac);
    return CG_OK;
}

static double clamp01(double x) { return x < 0.0 ? 0.0 : (x > 1.0 ? 1.0 : x); }

float cg_lr_schedule(const cg_lr_schedule_config *s, int64_t step) {
    if (!s) return 0.0f;
    if (step < 0) step = 0;
    double lr_max = s->lr, lr_min = (double)s->lr * (double)s->final_frac;
    int64_t W = s->warmup_steps, N = s->total_steps;
    if (step < W) return (float)(lr_max * (double)(step + 1) / (double)W);
    switch (s->kind) {
    case CG_LR_CONSTANT: return (float)lr_max;
    case CG_LR_COSINE:
    case CG_LR_LINEAR: {
        if (N <= W) return (float)lr_min;
        double r = clamp01((double)(step - W) / (double)(N - W));
        double coeff = s->kind == CG_LR_COSINE ? 0.5 * (1.0 + cos(M_PI * r)) : 1.0 - r;
        return (float)(lr_min + coeff * (lr_max - lr_min));
    }
    case CG_LR_WSD: {
        int64_t D = (int64_t)llround((double)s->decay_frac * (double)N);
        if (D > N - W) D = N - W;
        int64_t S = N - D;
        if (D <= 0) return step < N ? (float)lr_max : (float)lr_min;
        if (step < S) return (float)lr_max;
        double q = clamp01((double)(step - S) / (double)D);
        double coeff = s->wsd_sqrt ? 1.0 - sqrt(q) : 1.0 - q;
        return (float)(lr_min + coeff * (lr_max - lr_min));
    }
    }
    return (float)lr_max;
}
