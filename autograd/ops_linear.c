/* Linear (with the bias + GELU epilogue), LoRA linear and dropout as differentiable ops.
 *
 * All three view the input as a matrix of rows: x [..., in] is x2 [N, in] with N the product of the leading
 * dims, so the matmuls are single cg_matmul_into calls (a transposed x is passed as is: the GEMM reads it
 * through its strides). The elementwise epilogues (bias, GELU, dropout mask) are small packed-array loops
 * in core/nn_linear.c; they are the pieces the CUDA backend fuses into its own kernels. */
#include <math.h>
#include <string.h>

#include "autograd/ops_common.h"
#include "core/nn_activation.h"
#include "core/nn_linear.h"

#define PARALLEL_MIN 32768

/* A Bernoulli(1 - p) keep mask scaled to 0 or 1/(1-p) (inverted dropout), drawn from rng. */
static cg_tensor *dropout_mask(cg_device dev, int ndim, const int64_t *shape, float p, cg_rng *rng) {
    cg_tensor *mask = cg_new_output(dev, CG_F32, ndim, shape);
    if (!mask) return NULL;
    if (cg_rng_bernoulli(rng, mask, 1.0f - p) != CG_OK) return NULL;
    return cg_affine_into(mask, mask, 1.0f / (1.0f - p), 0.0f) == CG_OK ? mask : NULL;
}

/* ------------------------------------------------------------------ argument checks */

/* x [..., in], w [out, in], bias [out] or NULL. */
static bool check_linear_args(const char *op, const cg_tensor *x, const cg_tensor *w, const cg_tensor *bias) {
    char dx[160], dw[160], db[160];
    if (!cg_check_float(op, "x", x) || !cg_check_float(op, "weight", w) || (bias && !cg_check_float(op, "bias", bias)))
        return false;
    if (cg_ops_check_same_device(op, x, "weight", w) != CG_OK ||
        (bias && cg_ops_check_same_device(op, x, "bias", bias) != CG_OK))
        return false;
    if (x->ndim < 1 || w->ndim != 2 || x->shape[x->ndim - 1] != w->shape[1]) {
        cg_set_error(CG_ERR_SHAPE, "%s: x %s and weight %s: need x [..., in] and weight [out, in]", op,
                     cg_tensor_desc(x, dx, sizeof dx), cg_tensor_desc(w, dw, sizeof dw));
        return false;
    }
    if (bias && (bias->ndim != 1 || bias->shape[0] != w->shape[0])) {
        cg_set_error(CG_ERR_SHAPE, "%s: bias %s does not match weight %s (need [%lld])", op,
                     cg_tensor_desc(bias, db, sizeof db), cg_tensor_desc(w, dw, sizeof dw), (long long)w->shape[0]);
        return false;
    }
    return true;
}

/* The number of rows N of x [..., cols] seen as [N, cols]. */
static int64_t leading_rows(const cg_tensor *x) {
    int64_t n = 1;
    for (int i = 0; i < x->ndim - 1; i++) n *= x->shape[i];
    return n;
}

/* x as [N, in]: x itself when 2-D (the GEMM takes any row or column stride), a view when the layout allows
 * it, else a packed copy. */
static cg_tensor *as_rows(const cg_tensor *x) {
    if (x->ndim == 2) return (cg_tensor *)x;
    int64_t shape[2] = {leading_rows(x), x->shape[x->ndim - 1]};
    const cg_tensor *c = cg_is_contiguous(x) ? x : cg_contiguous(x);
    return c ? cg_view_reshape(c, 2, shape) : NULL;
}

/* A new packed tensor (dtype) of x's leading dims and `cols` columns, and its [N, cols] view. */
static cg_tensor *new_rows_like(const cg_tensor *x, int64_t cols, cg_dtype dtype, cg_tensor **rows_view) {
    int64_t shape[CG_MAX_DIMS];
    memcpy(shape, x->shape, sizeof(int64_t) * (size_t)x->ndim);
    shape[x->ndim - 1] = cols;
    cg_tensor *t = cg_new_output(x->device, dtype, x->ndim, shape);
    if (!t) return NULL;
    int64_t rshape[2] = {leading_rows(x), cols};
    *rows_view = cg_view_reshape(t, 2, rshape);
    return *rows_view ? t : NULL;
}

/* The [N, cols] packed view of a gradient g (shape [..., cols]). */
static cg_tensor *grad_rows(const cg_tensor *g) {
    cg_tensor *gc = cg_contiguous(g);
    if (!gc) return NULL;
    int64_t shape[2] = {leading_rows(g), g->shape[g->ndim - 1]};
    return cg_view_reshape(gc, 2, shape);
}

/* Gradients of the base part y = x2 @ w^T + bias from dpre [N, out]: dx (into dx2, beta = 0), dw, dbias. */
static cg_status base_backward(cg_node *n, const cg_tensor *dpre, const cg_tensor *x2, cg_tensor *dx2, int w_index,
                               int bias_index, cg_tensor **gi) {
    const cg_tensor *w = n->inputs[w_index];
    if (dx2) CG_BW_TRY(cg_matmul_into(dx2, dpre, w, false, false, 1.0f, 0.0f));
    if (w->requires_grad) {
        cg_tensor *dw = cg_new_like(w);
        CG_BW_NONNULL(dw);
        CG_BW_TRY(cg_matmul_into(dw, dpre, x2, true, false, 1.0f, 0.0f));
        gi[w_index] = dw;
    }
    if (bias_index >= 0 && n->inputs[bias_index]->requires_grad) {
        cg_tensor *db = cg_new_like(n->inputs[bias_index]);
        CG_BW_NONNULL(db);
        CG_BW_TRY(cg_reduce_into(CG_REDUCE_SUM, db, NULL, dpre, 0, false));
        gi[bias_index] = db;
    }
    return CG_OK;
}

/* ------------------------------------------------------------------ linear */

/* inputs {x, w[, bias]}; saved[0] = x2 [N, in], saved[1] = pre-activation [N, out] (GELU only). */
static cg_status linear_backward(cg_node *n, const cg_tensor *g, cg_tensor **gi) {
    const cg_tensor *x = n->inputs[0], *x2 = n->saved[0], *pre = n->saved[1];
    cg_tensor *g2 = grad_rows(g);
    CG_BW_NONNULL(g2);
    const cg_tensor *dpre = g2;
    if (pre) {
        cg_tensor *d = cg_new_like(g2);
        CG_BW_NONNULL(d);
        if (cg_ops_on_cuda(g2)) {
            if (g2->dtype != CG_F32) CG_BW_NONNULL(g2 = cg_tensor_to(cg_step_arena(g2->device), g2, CG_F32));
#ifdef CG_HAVE_CUDA
            CG_BW_TRY(cg_cuda_gelu_tanh_backward(cg_data(d), cg_data(pre), cg_data(g2), cg_numel(g2)));
#endif
        } else {
            cg_cpu_gelu_backward(cg_data(d), cg_data(pre), cg_data(g2), cg_numel(g2));
        }
        dpre = d;
    }
    cg_tensor *dx2 = NULL;
    if (x->requires_grad) CG_BW_NONNULL(gi[0] = new_rows_like(x, x->shape[x->ndim - 1], CG_F32, &dx2));
    return base_backward(n, dpre, x2, dx2, 1, n->n_inputs > 2 ? 2 : -1, gi);
}

cg_tensor *cg_linear(const cg_tensor *x, const cg_tensor *w, const cg_tensor *bias, bool gelu) {
    CG_CHECK_ARG("linear", x);
    CG_CHECK_ARG("linear", w);
    if (!check_linear_args("linear", x, w, bias)) return NULL;
    int64_t out_features = w->shape[0];
    cg_tensor *x2 = as_rows(x), *y2 = NULL;
    if (!x2) return NULL;
    const cg_tensor *in[3] = {x, w, bias};
    int n_in = bias ? 3 : 2;
    cg_tensor *y = new_rows_like(x, out_features, cg_result_dtype(3, in), &y2);
    if (!y) return NULL;
    bool record = cg_any_requires_grad(n_in, in);
    cg_tensor *pre = NULL;
    if (gelu && record) {
        pre = cg_new_like(y2);
        if (!pre) return NULL;
    }
    if (cg_ops_on_cuda(x)) {
        /* cuBLASLt's epilogue adds the bias (and applies GELU when no pre-activation must be kept) */
        if (pre) {
            CG_TRY(cg_matmul_bias_into(pre, x2, w, false, true, bias, false));
            CG_TRY(cg_unary_into(CG_OP_GELU_TANH, y2, pre));
        } else {
            CG_TRY(cg_matmul_bias_into(y2, x2, w, false, true, bias, gelu));
        }
    } else {
        CG_TRY(cg_matmul_into(y2, x2, w, false, true, 1.0f, 0.0f));
        const cg_tensor *bp = bias ? cg_contiguous(bias) : NULL;
        if (bias && !bp) return NULL;
        if (bias || gelu)
            cg_cpu_bias_gelu_forward(cg_data(y2), pre ? cg_data(pre) : NULL, bp ? cg_data(bp) : NULL, y2->shape[0],
                                     out_features, gelu);
    }
    cg_node *node = NULL;
    if (!cg_finish(gelu ? "linear_gelu" : "linear", linear_backward, y, n_in, (cg_tensor *const *)in, &node))
        return NULL;
    if (node) {
        node->saved[0] = x2;
        node->saved[1] = pre;
    }
    return y;
}

/* ------------------------------------------------------------------ LoRA linear */

/* inputs {x, w, A, B[, bias]}; saved: x2 [N, in], xd = dropout(x2) [N, in], t = xd @ A^T [N, r],
 * mask [N, in] (scaled, NULL without dropout); args[0] = scale.
 * y = x2 w^T + bias + s t B^T:  dB = s g^T t,  dt = s g B,  dA = dt^T xd,  dx = g w + mask * (dt A). */
static cg_status lora_backward(cg_node *n, const cg_tensor *g, cg_tensor **gi) {
    const cg_tensor *x = n->inputs[0], *lora_a = n->inputs[2], *lora_b = n->inputs[3];
    const cg_tensor *x2 = n->saved[0], *xd = n->saved[1], *t = n->saved[2], *mask = n->saved[3];
    float scale = (float)n->args[0];
    cg_tensor *g2 = grad_rows(g);
    CG_BW_NONNULL(g2);
    if (lora_b->requires_grad) {
        cg_tensor *db = cg_new_like(lora_b);
        CG_BW_NONNULL(db);
        CG_BW_TRY(cg_matmul_into(db, g2, t, true, false, scale, 0.0f));
        gi[3] = db;
    }
    cg_tensor *dt = NULL;
    if (lora_a->requires_grad || x->requires_grad) {
        dt = cg_new_like(t);
        CG_BW_NONNULL(dt);
        CG_BW_TRY(cg_matmul_into(dt, g2, lora_b, false, false, scale, 0.0f));
    }
    if (lora_a->requires_grad) {
        cg_tensor *da = cg_new_like(lora_a);
        CG_BW_NONNULL(da);
        CG_BW_TRY(cg_matmul_into(da, dt, xd, true, false, 1.0f, 0.0f));
        gi[2] = da;
    }
    cg_tensor *dx2 = NULL;
    if (x->requires_grad) CG_BW_NONNULL(gi[0] = new_rows_like(x, x->shape[x->ndim - 1], CG_F32, &dx2));
    CG_BW_TRY(base_backward(n, g2, x2, dx2, 1, n->n_inputs > 4 ? 4 : -1, gi));
    if (dx2) {
        if (!mask) {
            CG_BW_TRY(cg_matmul_into(dx2, dt, lora_a, false, false, 1.0f, 1.0f));
        } else { /* the dropout's backward: only the kept elements of x fed the adapter */
            cg_tensor *dxd = cg_new_like(dx2);
            CG_BW_NONNULL(dxd);
            CG_BW_TRY(cg_matmul_into(dxd, dt, lora_a, false, false, 1.0f, 0.0f));
            if (cg_ops_on_cuda(dx2)) {
#ifdef CG_HAVE_CUDA
                CG_BW_TRY(cg_cuda_mul_add(cg_data(dx2), cg_data(dxd), cg_data(mask), cg_numel(dx2)));
#endif
            } else {
                cg_cpu_mul_add(cg_data(dx2), cg_data(dxd), cg_data(mask), cg_numel(dx2));
            }
        }
    }
    return CG_OK;
}

cg_tensor *cg_lora_linear(const cg_tensor *x, const cg_tensor *w, const cg_tensor *bias, const cg_tensor *lora_a,
                          const cg_tensor *lora_b, float scale, float dropout_p, cg_rng *rng) {
    const char *op = "lora_linear";
    char dx[160], da[160], db[160];
    CG_CHECK_ARG(op, x);
    CG_CHECK_ARG(op, w);
    CG_CHECK_ARG(op, lora_a);
    CG_CHECK_ARG(op, lora_b);
    if (!check_linear_args(op, x, w, bias) || !cg_check_float(op, "lora_a", lora_a) ||
        !cg_check_float(op, "lora_b", lora_b) || cg_ops_check_same_device(op, x, "lora_a", lora_a) != CG_OK ||
        cg_ops_check_same_device(op, x, "lora_b", lora_b) != CG_OK)
        return NULL;
    int64_t in_features = w->shape[1], out_features = w->shape[0];
    if (lora_a->ndim != 2 || lora_b->ndim != 2 || lora_a->shape[1] != in_features ||
        lora_b->shape[0] != out_features || lora_b->shape[1] != lora_a->shape[0]) {
        cg_set_error(CG_ERR_SHAPE, "%s: lora_a %s and lora_b %s do not fit x %s: need A [r, %lld] and B [%lld, r]", op,
                     cg_tensor_desc(lora_a, da, sizeof da), cg_tensor_desc(lora_b, db, sizeof db),
                     cg_tensor_desc(x, dx, sizeof dx), (long long)in_features, (long long)out_features);
        return NULL;
    }
    if (!isfinite(scale)) {
        cg_set_error(CG_ERR_INVALID_ARG, "%s: scale %g is not finite", op, (double)scale);
        return NULL;
    }
    if (!(dropout_p >= 0.0f && dropout_p < 1.0f)) {
        cg_set_error(CG_ERR_INVALID_ARG, "%s: dropout_p %g outside [0, 1)", op, (double)dropout_p);
        return NULL;
    }
    if (dropout_p > 0.0f && !rng) {
        cg_set_error(CG_ERR_INVALID_ARG, "%s: dropout_p %g needs an rng (NULL given)", op, (double)dropout_p);
        return NULL;
    }

    cg_tensor *x2 = as_rows(x), *y2 = NULL;
    if (!x2) return NULL;
    const cg_tensor *float_in[5] = {x, w, bias, lora_a, lora_b};
    cg_tensor *y = new_rows_like(x, out_features, cg_result_dtype(5, float_in), &y2);
    if (!y) return NULL;
    int64_t rows = x2->shape[0], rank = lora_a->shape[0];
    CG_TRY(cg_matmul_bias_into(y2, x2, w, false, true, bias, false));
    /* the adapter: y += scale * (drop(x) A^T) B^T; with B = 0 it adds exact zeros */
    cg_tensor *mask = NULL, *xd = x2;
    if (dropout_p > 0.0f) {
        mask = dropout_mask(x->device, 2, x2->shape, dropout_p, rng);
        if (!mask) return NULL;
        xd = cg_new_like(x2);
        if (!xd) return NULL;
        CG_TRY(cg_binary_into(CG_OP_MUL, xd, x2, mask));
    }
    int64_t tshape[2] = {rows, rank};
    cg_tensor *t = cg_new_output(x->device, CG_F32, 2, tshape);
    if (!t) return NULL;
    CG_TRY(cg_matmul_into(t, xd, lora_a, false, true, 1.0f, 0.0f));
    CG_TRY(cg_matmul_into(y2, t, lora_b, false, true, scale, 1.0f));

    cg_tensor *in[5] = {(cg_tensor *)x, (cg_tensor *)w, (cg_tensor *)lora_a, (cg_tensor *)lora_b, (cg_tensor *)bias};
    cg_node *node = NULL;
    if (!cg_finish(op, lora_backward, y, bias ? 5 : 4, in, &node)) return NULL;
    if (node) {
        node->saved[0] = x2;
        node->saved[1] = xd;
        node->saved[2] = t;
        node->saved[3] = mask;
        node->args[0] = scale;
    }
    return y;
}

/* ------------------------------------------------------------------ dropout */

/* saved[0] = the scaled mask (0 or 1/(1-p)), x's shape. */
static cg_status dropout_backward(cg_node *n, const cg_tensor *g, cg_tensor **gi) {
    const cg_tensor *mask = n->saved[0];
    cg_tensor *dx = cg_new_like(mask);
    CG_BW_NONNULL(dx);
    CG_BW_TRY(cg_binary_into(CG_OP_MUL, dx, g, mask));
    gi[0] = dx;
    return CG_OK;
}

cg_tensor *cg_dropout(const cg_tensor *x, float p, cg_rng *rng) {
    CG_CHECK_ARG("dropout", x);
    if (!(p >= 0.0f && p < 1.0f)) {
        cg_set_error(CG_ERR_INVALID_ARG, "dropout: p %g outside [0, 1)", (double)p);
        return NULL;
    }
    if (!cg_check_float("dropout", "x", x)) return NULL;
    if (p == 0.0f) return (cg_tensor *)x;
    if (!rng) {
        cg_set_error(CG_ERR_INVALID_ARG, "dropout: p %g needs an rng (NULL given)", (double)p);
        return NULL;
    }
    cg_tensor *mask = dropout_mask(x->device, x->ndim, x->shape, p, rng);
    cg_tensor *y = mask ? cg_new_like(x) : NULL;
    if (!y) return NULL;
    CG_TRY(cg_binary_into(CG_OP_MUL, y, x, mask));
    cg_tensor *in[1] = {(cg_tensor *)x};
    cg_node *node = NULL;
    if (!cg_finish("dropout", dropout_backward, y, 1, in, &node)) return NULL;
    if (node) node->saved[0] = mask;
    return y;
}
