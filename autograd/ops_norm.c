/* LayerNorm, RMSNorm and the fused residual-add + norm as differentiable ops: argument checks, packing,
 * the core/nn_norm kernels, and the tape nodes. The forward saves the per-row statistics (mean and rstd, or
 * rstd) so the backward reads them instead of recomputing them. */
#include "autograd/ops_common.h"
#include "core/nn_norm.h"
#ifdef CG_HAVE_CUDA
#include "cuda/nn.h"
#endif

/* On CUDA every array of a norm has x's dtype (f32 or bf16); the CPU is f32 only. */
static bool check_same_dtype(const char *op, const char *what, const cg_tensor *x, const cg_tensor *p) {
    char dx[160], dp[160];
    if (p->dtype == x->dtype) return true;
    cg_set_error(CG_ERR_DTYPE, "%s: x %s and %s %s differ in dtype", op, cg_tensor_desc(x, dx, sizeof dx), what,
                 cg_tensor_desc(p, dp, sizeof dp));
    return false;
}

/* weight or bias: a [C] vector on x's device. */
static bool check_param(const char *op, const char *what, const cg_tensor *x, const cg_tensor *p, int64_t C) {
    char dx[160], dp[160];
    if (!cg_device_eq(x->device, p->device)) {
        cg_set_error(CG_ERR_DEVICE, "%s: x %s and %s %s are on different devices", op, cg_tensor_desc(x, dx, sizeof dx),
                     what, cg_tensor_desc(p, dp, sizeof dp));
        return false;
    }
    if (!cg_check_float(op, what, p) || !check_same_dtype(op, what, x, p)) return false;
    if (p->ndim != 1) {
        cg_set_error(CG_ERR_SHAPE, "%s: %s %s must be a 1-D vector of the size of the last dim of x %s (%lld)", op,
                     what, cg_tensor_desc(p, dp, sizeof dp), cg_tensor_desc(x, dx, sizeof dx), (long long)C);
        return false;
    }
    if (p->shape[0] != C) {
        cg_set_error(CG_ERR_SHAPE, "%s: x %s and %s %s: the last dim of x (%lld) differs from the %s's size (%lld)", op,
                     cg_tensor_desc(x, dx, sizeof dx), what, cg_tensor_desc(p, dp, sizeof dp), (long long)C, what,
                     (long long)p->shape[0]);
        return false;
    }
    return true;
}

/* ------------------------------------------------------------------ backward */

/* The norm node: inputs {x, weight, bias or NULL}; saved {packed x, packed weight, mean (NULL for RMSNorm),
 * rstd}; iargs[0] = 1 for RMSNorm. */
static cg_status norm_backward(cg_node *n, const cg_tensor *g, cg_tensor **gi) {
    const cg_tensor *x = n->saved[0], *w = n->saved[1], *mean = n->saved[2], *rstd = n->saved[3];
    const cg_tensor *gp = cg_packed_as(g, x->dtype);
    CG_BW_NONNULL(gp);
    bool rms = n->iargs[0] != 0;
    cg_tensor *dx = NULL, *dw = NULL, *db = NULL;
    if (n->inputs[0]->requires_grad) CG_BW_NONNULL(dx = cg_new_grad_for(n->inputs[0]));
    if (n->inputs[1]->requires_grad) CG_BW_NONNULL(dw = cg_new_grad_for(n->inputs[1]));
    if (n->inputs[2] && n->inputs[2]->requires_grad) CG_BW_NONNULL(db = cg_new_grad_for(n->inputs[2]));
    int64_t C = x->shape[x->ndim - 1], N = cg_numel(x) / C;
    if (cg_on_cuda(x)) {
#ifdef CG_HAVE_CUDA
        cg_scratch_scope sc;
        float *ws = NULL;
        if (dw || db) CG_BW_NONNULL(ws = cg_scratch_begin(&sc, x->device, (int64_t)cg_cuda_norm_backward_workspace(N, C)));
        cg_status s = rms ? cg_cuda_rmsnorm_backward(x->dtype, dx ? cg_data(dx) : NULL, dw ? cg_data(dw) : NULL,
                                                     cg_data(gp), cg_data(x), cg_data(w), cg_data(rstd), N, C, ws)
                          : cg_cuda_layernorm_backward(x->dtype, dx ? cg_data(dx) : NULL, dw ? cg_data(dw) : NULL,
                                                       db ? cg_data(db) : NULL, cg_data(gp), cg_data(x), cg_data(w),
                                                       cg_data(mean), cg_data(rstd), N, C, ws);
        if (ws) cg_scratch_end(&sc);
        CG_BW_TRY(s);
#else
        return cg_no_cuda_error(n->op);
#endif
    } else if (rms) {
        cg_cpu_rmsnorm_backward(dx ? cg_data(dx) : NULL, dw ? cg_data(dw) : NULL, cg_data(gp), cg_data(x), cg_data(w),
                                cg_data(rstd), N, C);
    } else {
        cg_cpu_layernorm_backward(dx ? cg_data(dx) : NULL, dw ? cg_data(dw) : NULL, db ? cg_data(db) : NULL,
                                  cg_data(gp), cg_data(x), cg_data(w), cg_data(mean), cg_data(rstd), N, C);
    }
    gi[0] = dx;
    gi[1] = dw;
    gi[2] = db;
    return CG_OK;
}

/* The residual add node (sum = x + residual, same shapes): the gradient passes unchanged to both. Its
 * gradient arrives from both uses of the sum (the norm node and the caller's next residual), summed by the
 * tape before this node runs. */
static cg_status residual_add_backward(cg_node *n, const cg_tensor *g, cg_tensor **gi) {
    if (n->inputs[0]->requires_grad) gi[0] = (cg_tensor *)g;
    if (n->inputs[1]->requires_grad) gi[1] = (cg_tensor *)g;
    return CG_OK;
}

/* ------------------------------------------------------------------ forward */

/* LayerNorm or RMSNorm of x, or of x + residual when residual is given (then *sum_out gets the sum). */
static cg_tensor *norm_forward(const char *op, const cg_tensor *x, const cg_tensor *residual, const cg_tensor *weight,
                               const cg_tensor *bias, float eps, bool rms, cg_tensor **sum_out) {
    char dx[160], dr[160];
    if (!x || !weight) {
        cg_set_error(CG_ERR_INVALID_ARG, "%s: %s is NULL", op, !x ? "x" : "weight");
        return NULL;
    }
    if (!cg_check_float(op, "x", x)) return NULL;
    if (x->ndim < 1 || x->shape[x->ndim - 1] == 0) {
        cg_set_error(CG_ERR_SHAPE, "%s: x %s has %s", op, cg_tensor_desc(x, dx, sizeof dx),
                     x->ndim < 1 ? "no last dim to normalise" : "an empty last dim");
        return NULL;
    }
    int64_t C = x->shape[x->ndim - 1], N = cg_numel(x) / C;
    if (rms) bias = NULL; /* RMSNorm has no bias */
    if (!check_param(op, "weight", x, weight, C) || (bias && !check_param(op, "bias", x, bias, C))) return NULL;
    if (residual) {
        if (!cg_device_eq(x->device, residual->device)) {
            cg_set_error(CG_ERR_DEVICE, "%s: x %s and residual %s are on different devices", op,
                         cg_tensor_desc(x, dx, sizeof dx), cg_tensor_desc(residual, dr, sizeof dr));
            return NULL;
        }
        if (!cg_check_float(op, "residual", residual) || !check_same_dtype(op, "residual", x, residual)) return NULL;
        if (!cg_same_shape(x, residual)) {
            cg_set_error(CG_ERR_SHAPE, "%s: x %s and residual %s differ in shape", op, cg_tensor_desc(x, dx, sizeof dx),
                         cg_tensor_desc(residual, dr, sizeof dr));
            return NULL;
        }
    }
    if (!(eps >= 0.0f)) {
        cg_set_error(CG_ERR_INVALID_ARG, "%s: eps %g must be >= 0", op, (double)eps);
        return NULL;
    }

    const cg_tensor *xp = cg_contiguous(x), *wp = cg_contiguous(weight);
    const cg_tensor *bp = bias ? cg_contiguous(bias) : NULL, *rp = residual ? cg_contiguous(residual) : NULL;
    if (!xp || !wp || (bias && !bp) || (residual && !rp)) return NULL;
    int64_t rows[1] = {N};
    cg_tensor *out = cg_new_output(x->device, x->dtype, x->ndim, x->shape);
    cg_tensor *mean = rms ? NULL : cg_new_output(x->device, CG_F32, 1, rows);
    cg_tensor *rstd = cg_new_output(x->device, CG_F32, 1, rows);
    if (!out || (!rms && !mean) || !rstd) return NULL;
    const void *w = cg_data(wp), *b = bp ? cg_data(bp) : NULL;
    float *mean_p = mean ? cg_data(mean) : NULL;
    bool cuda = cg_on_cuda(x);
#ifndef CG_HAVE_CUDA
    if (cuda) {
        cg_no_cuda_error(op);
        return NULL;
    }
#endif

    cg_tensor *normed = (cg_tensor *)x; /* the norm node's input: x, or the sum */
    const cg_tensor *normed_packed = xp;
    if (residual) {
        cg_tensor *sum = cg_new_output(x->device, x->dtype, x->ndim, x->shape);
        if (!sum) return NULL;
        if (cuda) {
#ifdef CG_HAVE_CUDA
            CG_TRY(cg_cuda_residual_norm_forward(x->dtype, cg_data(sum), cg_data(out), mean_p, cg_data(rstd),
                                                 cg_data(xp), cg_data(rp), w, b, N, C, eps, rms));
#endif
        } else {
            cg_cpu_residual_norm_forward(cg_data(sum), cg_data(out), mean_p, cg_data(rstd), cg_data(xp), cg_data(rp),
                                         w, b, N, C, eps, rms);
        }
        cg_tensor *add_in[2] = {(cg_tensor *)x, (cg_tensor *)residual};
        if (!cg_finish("residual_add", residual_add_backward, sum, 2, add_in, NULL)) return NULL;
        normed = sum;
        normed_packed = sum;
    } else if (cuda) {
#ifdef CG_HAVE_CUDA
        if (rms)
            CG_TRY(cg_cuda_rmsnorm_forward(x->dtype, cg_data(out), cg_data(rstd), cg_data(xp), w, N, C, eps));
        else
            CG_TRY(cg_cuda_layernorm_forward(x->dtype, cg_data(out), mean_p, cg_data(rstd), cg_data(xp), w, b, N, C,
                                             eps));
#endif
    } else if (rms) {
        cg_cpu_rmsnorm_forward(cg_data(out), cg_data(rstd), cg_data(xp), w, N, C, eps);
    } else {
        cg_cpu_layernorm_forward(cg_data(out), mean_p, cg_data(rstd), cg_data(xp), w, b, N, C, eps);
    }

    cg_tensor *in[3] = {normed, (cg_tensor *)weight, (cg_tensor *)bias};
    cg_node *node = NULL;
    if (!cg_finish(op, norm_backward, out, 3, in, &node)) return NULL;
    if (node) {
        node->saved[0] = (cg_tensor *)normed_packed;
        node->saved[1] = (cg_tensor *)wp;
        node->saved[2] = mean;
        node->saved[3] = rstd;
        node->iargs[0] = rms;
        node->args[0] = eps;
    }
    if (sum_out) *sum_out = normed;
    return out;
}

cg_tensor *cg_layernorm(const cg_tensor *x, const cg_tensor *weight, const cg_tensor *bias, float eps) {
    return norm_forward("layernorm", x, NULL, weight, bias, eps, false, NULL);
}

cg_tensor *cg_rmsnorm(const cg_tensor *x, const cg_tensor *weight, float eps) {
    return norm_forward("rmsnorm", x, NULL, weight, NULL, eps, true, NULL);
}

cg_tensor *cg_residual_norm(const cg_tensor *x, const cg_tensor *residual, const cg_tensor *weight,
                            const cg_tensor *bias, float eps, bool rms, cg_tensor **sum_out) {
    if (!sum_out) {
        cg_set_error(CG_ERR_INVALID_ARG, "residual_norm: sum_out is NULL (the sum x + residual is an output)");
        return NULL;
    }
    *sum_out = NULL;
    if (!residual) {
        cg_set_error(CG_ERR_INVALID_ARG, "residual_norm: residual is NULL");
        return NULL;
    }
    cg_tensor *sum = NULL;
    cg_tensor *out = norm_forward("residual_norm", x, residual, weight, bias, eps, rms, &sum);
    if (out) *sum_out = sum;
    return out;
}
