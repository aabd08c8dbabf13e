#include "autograd/gradcheck.h"

#include <math.h>


#include "core/context.h"

static double weighted_sum(const cg_tensor *y, const float *r) {
    double acc = 0.0;
    int64_t n = cg_numel(y);
    for (int64_t i = 0; i < n; i++) acc += cg_get_flat(y, i) * (double)r[i];
    return acc;
}

/* One no-grad evaluation of L, with the step arenas rewound afterwards. */
static cg_status eval_loss(cg_gradcheck_fn fn, void *user, cg_tensor *const *inputs, const float *r, int64_t ny,
                           double *loss) {
    cg_arena *a = cg_step_arena(CG_CPU);
    cg_arena_mark m = cg_arena_get_mark(a);
    cg_no_grad_enter();
    cg_tensor *y = fn(inputs, user);
    cg_no_grad_exit();
    cg_status s = CG_OK;
    if (!y)
        s = cg_error_context("gradcheck: the function failed: ");
    else if (cg_numel(y) != ny)
        s = cg_set_error(CG_ERR_SHAPE, "gradcheck: the output changed size between evaluations");
    else
        *loss = weighted_sum(y, r);
    cg_arena_rewind(a, m);
    return s;
}

cg_status cg_gradcheck(cg_gradcheck_fn fn, void *user, int n_inputs, cg_tensor *const *inputs,
                       const cg_gradcheck_opts *opts, cg_gradcheck_result *result) {
    char d[160];
    cg_gradcheck_opts o = {1e-3, 1e-2, 1e-3, 0, 0};
    if (opts) o = *opts;
    if (o.eps <= 0) o.eps = 1e-3;
    if (o.rtol <= 0 && o.atol <= 0) o.rtol = 1e-2, o.atol = 1e-3;
    if (!fn || !result || (n_inputs > 0 && !inputs))
        return cg_set_error(CG_ERR_INVALID_ARG, "gradcheck: NULL argument");
    *result = (cg_gradcheck_result){.passed = true, .worst_input = -1, .worst_index = -1};
    for (int i = 0; i < n_inputs; i++) {
        const cg_tensor *x = inputs[i];
        if (!x) return cg_set_error(CG_ERR_INVALID_ARG, "gradcheck: input %d is NULL", i);
        if (x->requires_grad && (x->dtype != CG_F32 || x->device.type != CG_DEVICE_CPU || x->node))
            return cg_set_error(CG_ERR_INVALID_ARG, "gradcheck: input %d (%s) must be a CPU f32 leaf", i,
                                cg_tensor_desc(x, d, sizeof d));
        if (x->requires_grad) cg_zero_grad(inputs[i]);
    }

    /* analytic gradients */
    cg_tensor *y = fn(inputs, user);
    if (!y) return cg_error_context("gradcheck: the function failed: ");
    if (y->device.type != CG_DEVICE_CPU) return cg_set_error(CG_ERR_DEVICE, "gradcheck: the output must be on the CPU");
    int64_t ny = cg_numel(y);
    cg_tensor *r = cg_tensor_empty(cg_step_arena(CG_CPU), CG_F32, y->ndim, y->shape);
    if (!r) return cg_last_status();
    float *rw = cg_data(r);
    uint64_t s = o.seed ? o.seed : 0x9e3779b97f4a7c15ull;
    for (int64_t i = 0; i < ny; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        rw[i] = (float)((double)(s >> 11) * 0x1p-53 * 2.0 - 1.0);
    }
    if (y->requires_grad) {
        cg_status st = cg_backward_with_grad(y, r);
        if (st != CG_OK) return st;
    }

    double worst_ratio = -1.0;
    for (int i = 0; i < n_inputs; i++) {
        cg_tensor *x = inputs[i];
        if (!x->requires_grad) continue;
        int64_t n = cg_numel(x);
        int64_t step = (o.max_per_input > 0 && n > o.max_per_input) ? (n + o.max_per_input - 1) / o.max_per_input : 1;
        for (int64_t j = 0; j < n; j += step) {
            double analytic = x->grad ? cg_get_flat(x->grad, j) : 0.0; /* no grad: the output does not use x */
            double x0 = cg_get_flat(x, j);
            cg_set_flat(x, j, x0 + o.eps);
            double xp = cg_get_flat(x, j);
            double lp = 0, lm = 0;
            cg_status st = eval_loss(fn, user, inputs, rw, ny, &lp);
            cg_set_flat(x, j, x0 - o.eps);
            double xm = cg_get_flat(x, j);
            if (st == CG_OK) st = eval_loss(fn, user, inputs, rw, ny, &lm);
            cg_set_flat(x, j, x0);
            if (st != CG_OK) return st;
            double numeric = (lp - lm) / (xp - xm);
            double err = fabs(analytic - numeric);
            double tol = o.atol + o.rtol * fmax(fabs(analytic), fabs(numeric));
            result->checked++;
            if (!(err <= tol)) { /* NaN counts as a failure */
                result->failures++;
                result->passed = false;
            }
            double ratio = isnan(err) ? INFINITY : err / tol;
            if (err > result->max_abs_err || isnan(err)) result->max_abs_err = isnan(err) ? INFINITY : err;
            if (ratio > worst_ratio) {
                worst_ratio = ratio;
                result->worst_input = i;
                result->worst_index = j;
                result->worst_analytic = analytic;
                result->worst_numeric = numeric;
            }
        }
    }
    return CG_OK;
}
