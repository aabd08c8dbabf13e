/* Primitive differentiable ops: elementwise, reductions, shape, indexing, matmul. Each forward calls the
 * checked core kernel; each backward is written with the same op API (grad mode is off during backward, so
 * nothing it computes is recorded). */
#include <string.h>

#include "autograd/ops_common.h"

/* ------------------------------------------------------------------ elementwise, binary */

static cg_tensor *binary(cg_binary_op op, const char *name, cg_backward_fn bw, const cg_tensor *a, const cg_tensor *b) {
    CG_CHECK_ARG(name, a);
    CG_CHECK_ARG(name, b);
    char da[160], db[160];
    int nd;
    int64_t shape[CG_MAX_DIMS];
    if (cg_broadcast_shapes(a->ndim, a->shape, b->ndim, b->shape, &nd, shape) != CG_OK) {
        cg_set_error(CG_ERR_SHAPE, "%s: shapes %s and %s do not broadcast", name, cg_tensor_desc(a, da, sizeof da),
                     cg_tensor_desc(b, db, sizeof db));
        return NULL;
    }
    if (!cg_device_eq(a->device, b->device)) {
        cg_set_error(CG_ERR_DEVICE, "%s: %s and %s are on different devices", name, cg_tensor_desc(a, da, sizeof da),
                     cg_tensor_desc(b, db, sizeof db));
        return NULL;
    }
    const cg_tensor *ab[2] = {a, b};
    cg_tensor *out = cg_new_output(a->device, cg_result_dtype(2, ab), nd, shape);
    if (!out) return NULL;
    CG_TRY(cg_binary_into(op, out, a, b));
    cg_tensor *in[2] = {(cg_tensor *)a, (cg_tensor *)b};
    return cg_finish(name, bw, out, 2, in, NULL);
}

/* Gradient g of a broadcast result, summed back to t's shape. */
static cg_tensor *unbroadcast(const cg_tensor *g, const cg_tensor *t) { return cg_sum_to_shape(g, t->ndim, t->shape); }

static cg_status add_backward(cg_node *n, const cg_tensor *g, cg_tensor **gi) {
    if (n->inputs[0]->requires_grad) CG_BW_NONNULL(gi[0] = unbroadcast(g, n->inputs[0]));
    if (n->inputs[1]->requires_grad) CG_BW_NONNULL(gi[1] = unbroadcast(g, n->inputs[1]));
    return CG_OK;
}

static cg_status sub_backward(cg_node *n, const cg_tensor *g, cg_tensor **gi) {
    if (n->inputs[0]->requires_grad) CG_BW_NONNULL(gi[0] = unbroadcast(g, n->inputs[0]));
    if (n->inputs[1]->requires_grad) CG_BW_NONNULL(gi[1] = unbroadcast(cg_neg(g), n->inputs[1]));
    return CG_OK;
}

static cg_status mul_backward(cg_node *n, const cg_tensor *g, cg_tensor **gi) {
    cg_tensor *a = n->inputs[0], *b = n->inputs[1];
    if (a->requires_grad) CG_BW_NONNULL(gi[0] = unbroadcast(cg_mul(g, b), a));
    if (b->requires_grad) CG_BW_NONNULL(gi[1] = unbroadcast(cg_mul(g, a), b));
    return CG_OK;
}

static cg_status div_backward(cg_node *n, const cg_tensor *g, cg_tensor **gi) {
    cg_tensor *a = n->inputs[0], *b = n->inputs[1];
    cg_tensor *g_over_b = cg_div(g, b);
    CG_BW_NONNULL(g_over_b);
    if (a->requires_grad) CG_BW_NONNULL(gi[0] = unbroadcast(g_over_b, a));
    if (b->requires_grad) /* d(a/b)/db = -(a/b)/b */
        CG_BW_NONNULL(gi[1] = unbroadcast(cg_neg(cg_mul(g_over_b, n->out)), b));
    return CG_OK;
}

/* max/min: the gradient goes to the larger (smaller) side and is split at ties. */
static cg_status extremum_backward(cg_node *n, const cg_tensor *g, cg_tensor **gi) {
    cg_tensor *a = n->inputs[0], *b = n->inputs[1];
    float dir = (float)n->args[0]; /* +1 for maximum, -1 for minimum */
    cg_tensor *s = cg_scale(cg_sign(cg_sub(a, b)), dir); /* +1 where a wins, 0 at ties */
    CG_BW_NONNULL(s);
    if (a->requires_grad) CG_BW_NONNULL(gi[0] = unbroadcast(cg_mul(g, cg_affine(s, 0.5f, 0.5f)), a));
    if (b->requires_grad) CG_BW_NONNULL(gi[1] = unbroadcast(cg_mul(g, cg_affine(s, -0.5f, 0.5f)), b));
    return CG_OK;
}

cg_tensor *cg_add(const cg_tensor *a, const cg_tensor *b) { return binary(CG_OP_ADD, "add", add_backward, a, b); }
cg_tensor *cg_sub(const cg_tensor *a, const cg_tensor *b) { return binary(CG_OP_SUB, "sub", sub_backward, a, b); }
cg_tensor *cg_mul(const cg_tensor *a, const cg_tensor *b) { return binary(CG_OP_MUL, "mul", mul_backward, a, b); }
cg_tensor *cg_div(const cg_tensor *a, const cg_tensor *b) { return binary(CG_OP_DIV, "div", div_backward, a, b); }

cg_tensor *cg_maximum(const cg_tensor *a, const cg_tensor *b) {
    cg_tensor *out = binary(CG_OP_MAXIMUM, "maximum", extremum_backward, a, b);
    if (out && out->node) out->node->args[0] = 1.0;
    return out;
}

cg_tensor *cg_minimum(const cg_tensor *a, const cg_tensor *b) {
    cg_tensor *out = binary(CG_OP_MINIMUM, "minimum", extremum_backward, a, b);
    if (out && out->node) out->node->args[0] = -1.0;
    return out;
}

cg_tensor *cg_compare(cg_binary_op op, const cg_tensor *a, const cg_tensor *b) {
    if (op < CG_OP_GREATER || op > CG_OP_NOT_EQUAL) {
        cg_set_error(CG_ERR_INVALID_ARG, "compare: %s is not a comparison", cg_binary_op_name(op));
        return NULL;
    }
    /* no backward: a comparison is a step function, its output never requires a gradient */
    cg_no_grad_enter();
    cg_tensor *out = binary(op, cg_binary_op_name(op), NULL, a, b);
    cg_no_grad_exit();
    return out;
}

/* ------------------------------------------------------------------ elementwise, unary */

/* A 0-d tensor holding 0 (a comparison operand) on t's device. */
static cg_tensor *scalar_zero(const cg_tensor *t) {
    cg_tensor *z = cg_new_output(t->device, CG_F32, 0, NULL);
    return z && cg_fill(z, 0.0) == CG_OK ? z : NULL;
}

/* Zeros of t's shape: an exact zero gradient (g * 0 would turn an infinite g into NaN). */
static cg_tensor *zeros_like(const cg_tensor *t) {
    cg_tensor *z = cg_new_like(t);
    return z && cg_fill(z, 0.0) == CG_OK ? z : NULL;
}

static cg_status unary_backward(cg_node *n, const cg_tensor *g, cg_tensor **gi) {
    const cg_tensor *x = n->inputs[0], *y = n->out;
    cg_tensor *d = NULL; /* dy/dx */
    switch ((cg_unary_op)n->iargs[0]) {
    case CG_OP_NEG: d = NULL; gi[0] = cg_neg(g); break;
    case CG_OP_EXP: d = (cg_tensor *)y; break;
    case CG_OP_LOG: gi[0] = cg_div(g, x); break;
    case CG_OP_TANH: d = cg_affine(cg_square(y), -1.0f, 1.0f); break;                 /* 1 - y^2 */
    case CG_OP_SIGMOID: d = cg_mul(y, cg_affine(y, -1.0f, 1.0f)); break;              /* y (1 - y) */
    case CG_OP_SIGN: gi[0] = zeros_like(x); break;
    case CG_OP_ABS: d = cg_sign(x); break;
    case CG_OP_SQRT: gi[0] = cg_div(cg_scale(g, 0.5f), y); break;                      /* 1 / (2 sqrt x) */
    case CG_OP_RSQRT: d = cg_scale(cg_pow_scalar(y, 3.0f), -0.5f); break;              /* -x^-3/2 / 2 */
    case CG_OP_RECIPROCAL: d = cg_neg(cg_square(y)); break;
    case CG_OP_SQUARE: d = cg_scale(x, 2.0f); break;
    case CG_OP_RELU: d = cg_compare(CG_OP_GREATER, x, scalar_zero(x)); break; /* 0 at x = 0, 1 at +inf */
    case CG_OP_GELU_TANH:
    case CG_OP_SILU: return cg_activation_backward(n, g, gi);
    default: return cg_set_error(CG_ERR_INTERNAL, "unary backward: op %lld has no rule here", (long long)n->iargs[0]);
    }
    if (d) gi[0] = cg_mul(g, d);
    return gi[0] ? CG_OK : cg_last_status();
}

cg_tensor *cg_unary(cg_unary_op op, const cg_tensor *x) {
    const char *name = cg_unary_op_name(op);
    CG_CHECK_ARG(name, x);
    cg_tensor *out = cg_new_output(x->device, cg_result_dtype(1, &x), x->ndim, x->shape);
    if (!out) return NULL;
    CG_TRY(cg_unary_into(op, out, x));
    cg_tensor *in[1] = {(cg_tensor *)x};
    cg_node *node = NULL;
    if (!cg_finish(name, unary_backward, out, 1, in, &node)) return NULL;
    if (node) node->iargs[0] = op;
    return out;
}

cg_tensor *cg_neg(const cg_tensor *x) { return cg_unary(CG_OP_NEG, x); }
cg_tensor *cg_exp(const cg_tensor *x) { return cg_unary(CG_OP_EXP, x); }
cg_tensor *cg_log(const cg_tensor *x) { return cg_unary(CG_OP_LOG, x); }
cg_tensor *cg_tanh(const cg_tensor *x) { return cg_unary(CG_OP_TANH, x); }
cg_tensor *cg_sigmoid(const cg_tensor *x) { return cg_unary(CG_OP_SIGMOID, x); }
cg_tensor *cg_sign(const cg_tensor *x) { return cg_unary(CG_OP_SIGN, x); }
cg_tensor *cg_abs(const cg_tensor *x) { return cg_unary(CG_OP_ABS, x); }
cg_tensor *cg_sqrt(const cg_tensor *x) { return cg_unary(CG_OP_SQRT, x); }
cg_tensor *cg_square(const cg_tensor *x) { return cg_unary(CG_OP_SQUARE, x); }
cg_tensor *cg_relu(const cg_tensor *x) { return cg_unary(CG_OP_RELU, x); }

/* ------------------------------------------------------------------ elementwise with scalars */

static cg_status affine_backward(cg_node *n, const cg_tensor *g, cg_tensor **gi) {
    gi[0] = cg_scale(g, (float)n->args[0]);
    return gi[0] ? CG_OK : cg_last_status();
}

cg_tensor *cg_affine(const cg_tensor *x, float scale, float shift) {
    CG_CHECK_ARG("affine", x);
    cg_tensor *out = cg_new_output(x->device, cg_result_dtype(1, &x), x->ndim, x->shape);
    if (!out) return NULL;
    CG_TRY(cg_affine_into(out, x, scale, shift));
    cg_tensor *in[1] = {(cg_tensor *)x};
    cg_node *node = NULL;
    if (!cg_finish("affine", affine_backward, out, 1, in, &node)) return NULL;
    if (node) node->args[0] = scale;
    return out;
}

cg_tensor *cg_scale(const cg_tensor *x, float scale) { return cg_affine(x, scale, 0.0f); }
cg_tensor *cg_add_scalar(const cg_tensor *x, float c) { return cg_affine(x, 1.0f, c); }

static cg_status pow_backward(cg_node *n, const cg_tensor *g, cg_tensor **gi) {
    float p = (float)n->args[0];
    if (p == 0.0f) { /* x^0 = 1: zero gradient, also at x = 0 where p x^(p-1) would be 0 * inf = NaN */
        gi[0] = zeros_like(n->inputs[0]);
        return gi[0] ? CG_OK : cg_last_status();
    }
    gi[0] = cg_mul(g, cg_scale(cg_pow_scalar(n->inputs[0], p - 1.0f), p));
    return gi[0] ? CG_OK : cg_last_status();
}

cg_tensor *cg_pow_scalar(const cg_tensor *x, float exponent) {
    CG_CHECK_ARG("pow", x);
    cg_tensor *out = cg_new_output(x->device, cg_result_dtype(1, &x), x->ndim, x->shape);
    if (!out) return NULL;
    CG_TRY(cg_pow_scalar_into(out, x, exponent));
    cg_tensor *in[1] = {(cg_tensor *)x};
    cg_node *node = NULL;
    if (!cg_finish("pow", pow_backward, out, 1, in, &node)) return NULL;
    if (node) node->args[0] = exponent;
    return out;
}

/* torch.clamp's rule: the gradient passes where lo <= x <= hi. */
static cg_status clamp_backward(cg_node *n, const cg_tensor *g, cg_tensor **gi) {
    const cg_tensor *x = n->inputs[0];
    cg_tensor *inside = cg_compare(CG_OP_EQUAL, n->out, x);
    gi[0] = inside ? cg_mul(g, inside) : NULL;
    return gi[0] ? CG_OK : cg_last_status();
}

cg_tensor *cg_clamp(const cg_tensor *x, float lo, float hi) {
    CG_CHECK_ARG("clamp", x);
    cg_tensor *out = cg_new_output(x->device, cg_result_dtype(1, &x), x->ndim, x->shape);
    if (!out) return NULL;
    CG_TRY(cg_clamp_into(out, x, lo, hi));
    cg_tensor *in[1] = {(cg_tensor *)x};
    return cg_finish("clamp", clamp_backward, out, 1, in, NULL);
}

static cg_status where_backward(cg_node *n, const cg_tensor *g, cg_tensor **gi) {
    const cg_tensor *cond = n->inputs[0];
    cg_tensor *zero = cg_new_output(g->device, CG_F32, 0, NULL);
    CG_BW_NONNULL(zero);
    CG_BW_TRY(cg_fill(zero, 0.0));
    if (cond->requires_grad) { /* a float mask computed in the graph: the output is piecewise constant in it */
        CG_BW_NONNULL(gi[0] = zeros_like(cond));
    }
    if (n->inputs[1]->requires_grad) CG_BW_NONNULL(gi[1] = unbroadcast(cg_where(cond, g, zero), n->inputs[1]));
    if (n->inputs[2]->requires_grad) CG_BW_NONNULL(gi[2] = unbroadcast(cg_where(cond, zero, g), n->inputs[2]));
    return CG_OK;
}

cg_tensor *cg_where(const cg_tensor *cond, const cg_tensor *a, const cg_tensor *b) {
    CG_CHECK_ARG("where", cond);
    CG_CHECK_ARG("where", a);
    CG_CHECK_ARG("where", b);
    int nd1, nd;
    int64_t s1[CG_MAX_DIMS], shape[CG_MAX_DIMS];
    if (cg_broadcast_shapes(a->ndim, a->shape, b->ndim, b->shape, &nd1, s1) != CG_OK ||
        cg_broadcast_shapes(cond->ndim, cond->shape, nd1, s1, &nd, shape) != CG_OK) {
        char dc[160], da[160], db[160];
        cg_set_error(CG_ERR_SHAPE, "where: cond %s, a %s and b %s do not broadcast", cg_tensor_desc(cond, dc, sizeof dc),
                     cg_tensor_desc(a, da, sizeof da), cg_tensor_desc(b, db, sizeof db));
        return NULL;
    }
    const cg_tensor *ab[2] = {a, b};
    cg_tensor *out = cg_new_output(a->device, cg_result_dtype(2, ab), nd, shape);
    if (!out) return NULL;
    CG_TRY(cg_where_into(out, cond, a, b));
    cg_tensor *in[3] = {(cg_tensor *)cond, (cg_tensor *)a, (cg_tensor *)b};
    return cg_finish("where", where_backward, out, 3, in, NULL);
}

/* ------------------------------------------------------------------ reductions */

/* The gradient of a reduction over axis, broadcast back to x's shape (a stride-0 view). */
static cg_tensor *expand_back(const cg_tensor *g, const cg_tensor *x, int axis, bool keepdim) {
    const cg_tensor *gk = keepdim ? g : cg_view_unsqueeze(g, axis);
    return gk ? cg_view_expand(gk, x->ndim, x->shape) : NULL;
}

static cg_status sum_backward(cg_node *n, const cg_tensor *g, cg_tensor **gi) {
    const cg_tensor *x = n->inputs[0];
    int axis = (int)n->iargs[0];
    bool keepdim = n->iargs[1] != 0;
    cg_tensor *e = expand_back(g, x, axis, keepdim);
    CG_BW_NONNULL(e);
    gi[0] = n->args[0] != 1.0 ? cg_scale(e, (float)n->args[0]) : e; /* mean: 1/n */
    return gi[0] ? CG_OK : cg_last_status();
}

static cg_tensor *reduce(cg_reduce_op op, const char *name, const cg_tensor *x, int axis, bool keepdim) {
    CG_CHECK_ARG(name, x);
    int ax = cg_normalize_axis(axis, x->ndim);
    if (ax < 0) {
        char d[160];
        cg_set_error(CG_ERR_INVALID_ARG, "%s: axis %d out of range for %s", name, axis, cg_tensor_desc(x, d, sizeof d));
        return NULL;
    }
    int64_t shape[CG_MAX_DIMS];
    int nd = 0;
    for (int i = 0; i < x->ndim; i++) {
        if (i == ax && !keepdim) continue;
        shape[nd++] = i == ax ? 1 : x->shape[i];
    }
    cg_tensor *out = cg_new_output(x->device, CG_F32, nd, shape);
    if (!out) return NULL;
    cg_tensor *arg = NULL;
    bool extreme = op == CG_REDUCE_MAX || op == CG_REDUCE_MIN;
    if (extreme && cg_any_requires_grad(1, &x)) {
        arg = cg_new_output(x->device, CG_I64, nd, shape);
        if (!arg) return NULL;
    }
    CG_TRY(cg_reduce_into(op, out, arg, x, ax, keepdim));
    cg_tensor *in[1] = {(cg_tensor *)x};
    cg_node *node = NULL;
    if (!cg_finish(name, NULL, out, 1, in, &node)) return NULL;
    if (node) {
        node->iargs[0] = ax;
        node->iargs[1] = keepdim;
        if (extreme) {
            node->backward = NULL; /* set below */
            node->saved[0] = arg;
        } else {
            node->backward = sum_backward;
            node->args[0] = op == CG_REDUCE_MEAN ? 1.0 / (double)x->shape[ax] : 1.0;
        }
    }
    return out;
}

/* max/min: scatter the gradient to the index the forward picked. */
static cg_status extreme_backward(cg_node *n, const cg_tensor *g, cg_tensor **gi) {
    const cg_tensor *x = n->inputs[0];
    int axis = (int)n->iargs[0];
    bool keepdim = n->iargs[1] != 0;
    const cg_tensor *idx = n->saved[0], *gk = g;
    if (!keepdim) {
        idx = cg_view_unsqueeze(idx, axis);
        gk = cg_view_unsqueeze(g, axis);
        CG_BW_NONNULL(idx);
        CG_BW_NONNULL(gk);
    }
    cg_tensor *out = cg_new_like(x);
    CG_BW_NONNULL(out);
    CG_BW_TRY(cg_fill(out, 0.0));
    CG_BW_TRY(cg_scatter_add_into(out, axis, idx, gk));
    gi[0] = out;
    return CG_OK;
}

cg_tensor *cg_sum(const cg_tensor *x, int axis, bool keepdim) { return reduce(CG_REDUCE_SUM, "sum", x, axis, keepdim); }
cg_tensor *cg_mean(const cg_tensor *x, int axis, bool keepdim) { return reduce(CG_REDUCE_MEAN, "mean", x, axis, keepdim); }

cg_tensor *cg_max(const cg_tensor *x, int axis, bool keepdim) {
    cg_tensor *out = reduce(CG_REDUCE_MAX, "max", x, axis, keepdim);
    if (out && out->node) out->node->backward = extreme_backward;
    return out;
}

cg_tensor *cg_min(const cg_tensor *x, int axis, bool keepdim) {
    cg_tensor *out = reduce(CG_REDUCE_MIN, "min", x, axis, keepdim);
    if (out && out->node) out->node->backward = extreme_backward;
    return out;
}

static cg_tensor *flat_reduce(cg_reduce_op op, const char *name, const cg_tensor *x) {
    CG_CHECK_ARG(name, x);
    int64_t n = cg_numel(x);
    cg_tensor *flat = cg_reshape(x, 1, &n);
    return flat ? reduce(op, name, flat, 0, false) : NULL;
}

cg_tensor *cg_sum_all(const cg_tensor *x) { return flat_reduce(CG_REDUCE_SUM, "sum_all", x); }
cg_tensor *cg_mean_all(const cg_tensor *x) { return flat_reduce(CG_REDUCE_MEAN, "mean_all", x); }

/* ------------------------------------------------------------------ shape */

static cg_status reshape_backward(cg_node *n, const cg_tensor *g, cg_tensor **gi) {
    const cg_tensor *x = n->inputs[0];
    cg_tensor *gc = cg_contiguous(g);
    gi[0] = gc ? cg_view_reshape(gc, x->ndim, x->shape) : NULL;
    return gi[0] ? CG_OK : cg_last_status();
}

cg_tensor *cg_reshape(const cg_tensor *x, int ndim, const int64_t *shape) {
    CG_CHECK_ARG("reshape", x);
    cg_tensor *v = cg_view_reshape(x, ndim, shape);
    if (!v && cg_last_status() == CG_ERR_SHAPE && !cg_is_contiguous(x)) {
        cg_tensor *c = cg_contiguous(x); /* the layout does not allow a view: copy, as torch.reshape does */
        v = c ? cg_view_reshape(c, ndim, shape) : NULL;
    }
    if (!v) return NULL;
    cg_tensor *in[1] = {(cg_tensor *)x};
    return cg_finish("reshape", reshape_backward, v, 1, in, NULL);
}

static cg_status permute_backward(cg_node *n, const cg_tensor *g, cg_tensor **gi) {
    int inverse[CG_MAX_DIMS];
    for (int i = 0; i < g->ndim; i++) inverse[n->iargs[i]] = i;
    gi[0] = cg_view_permute(g, inverse);
    return gi[0] ? CG_OK : cg_last_status();
}

cg_tensor *cg_permute(const cg_tensor *x, const int *perm) {
    CG_CHECK_ARG("permute", x);
    cg_tensor *v = cg_view_permute(x, perm);
    if (!v) return NULL;
    cg_tensor *in[1] = {(cg_tensor *)x};
    cg_node *node = NULL;
    if (!cg_finish("permute", permute_backward, v, 1, in, &node)) return NULL;
    if (node)
        for (int i = 0; i < x->ndim; i++) node->iargs[i] = perm[i];
    return v;
}

cg_tensor *cg_transpose(const cg_tensor *x, int dim0, int dim1) {
    CG_CHECK_ARG("transpose", x);
    int d0 = cg_normalize_axis(dim0, x->ndim), d1 = cg_normalize_axis(dim1, x->ndim);
    if (d0 < 0 || d1 < 0) {
        cg_set_error(CG_ERR_INVALID_ARG, "transpose: dims (%d, %d) out of range for %d dims", dim0, dim1, x->ndim);
        return NULL;
    }
    int perm[CG_MAX_DIMS];
    for (int i = 0; i < x->ndim; i++) perm[i] = i;
    perm[d0] = d1;
    perm[d1] = d0;
    return cg_permute(x, perm);
}

static cg_status slice_backward(cg_node *n, const cg_tensor *g, cg_tensor **gi) {
    const cg_tensor *x = n->inputs[0];
    cg_tensor *full = cg_new_like(x);
    CG_BW_NONNULL(full);
    CG_BW_TRY(cg_fill(full, 0.0));
    cg_tensor *view = cg_view_slice(full, (int)n->iargs[0], n->iargs[1], n->iargs[2], n->iargs[3]);
    CG_BW_NONNULL(view);
    CG_BW_TRY(cg_copy(view, g));
    gi[0] = full;
    return CG_OK;
}

cg_tensor *cg_slice(const cg_tensor *x, int dim, int64_t start, int64_t end, int64_t step) {
    CG_CHECK_ARG("slice", x);
    cg_tensor *v = cg_view_slice(x, dim, start, end, step);
    if (!v) return NULL;
    cg_tensor *in[1] = {(cg_tensor *)x};
    cg_node *node = NULL;
    if (!cg_finish("slice", slice_backward, v, 1, in, &node)) return NULL;
    if (node) {
        node->iargs[0] = dim, node->iargs[1] = start, node->iargs[2] = end, node->iargs[3] = step;
    }
    return v;
}

static cg_status expand_backward(cg_node *n, const cg_tensor *g, cg_tensor **gi) {
    gi[0] = unbroadcast(g, n->inputs[0]);
    return gi[0] ? CG_OK : cg_last_status();
}

cg_tensor *cg_expand(const cg_tensor *x, int ndim, const int64_t *shape) {
    CG_CHECK_ARG("expand", x);
    cg_tensor *v = cg_view_expand(x, ndim, shape);
    if (!v) return NULL;
    cg_tensor *in[1] = {(cg_tensor *)x};
    return cg_finish("expand", expand_backward, v, 1, in, NULL);
}

static cg_status concat_backward(cg_node *n, const cg_tensor *g, cg_tensor **gi) {
    int axis = (int)n->iargs[0];
    int64_t start = 0;
    for (int i = 0; i < n->n_inputs; i++) {
        int64_t len = n->inputs[i]->shape[axis];
        if (n->inputs[i]->requires_grad) CG_BW_NONNULL(gi[i] = cg_view_slice(g, axis, start, start + len, 1));
        start += len;
    }
    return CG_OK;
}

cg_tensor *cg_concat(int n, const cg_tensor *const *xs, int axis) {
    if (n < 1 || !xs || !xs[0]) {
        cg_set_error(CG_ERR_INVALID_ARG, "concat: needs at least one tensor");
        return NULL;
    }
    if (n > 64) {
        cg_set_error(CG_ERR_INVALID_ARG, "concat: %d tensors (at most 64)", n);
        return NULL;
    }
    const cg_tensor *x0 = xs[0];
    int ax = cg_normalize_axis(axis, x0->ndim);
    if (ax < 0) {
        cg_set_error(CG_ERR_INVALID_ARG, "concat: axis %d out of range for %d dims", axis, x0->ndim);
        return NULL;
    }
    int64_t shape[CG_MAX_DIMS];
    memcpy(shape, x0->shape, sizeof(int64_t) * (size_t)x0->ndim);
    shape[ax] = 0;
    for (int i = 0; i < n; i++) {
        CG_CHECK_ARG("concat", xs[i]);
        if (xs[i]->ndim == x0->ndim) shape[ax] += xs[i]->shape[ax]; /* cg_concat_into checks the rest */
    }
    cg_tensor *out = cg_new_output(x0->device, x0->dtype, x0->ndim, shape);
    if (!out) return NULL;
    CG_TRY(cg_concat_into(out, n, xs, ax));
    cg_node *node = NULL;
    if (!cg_finish("concat", concat_backward, out, n, (cg_tensor *const *)xs, &node)) return NULL;
    if (node) node->iargs[0] = ax;
    return out;
}

/* ------------------------------------------------------------------ indexing */

static cg_status gather_backward(cg_node *n, const cg_tensor *g, cg_tensor **gi) {
    cg_tensor *full = cg_new_like(n->inputs[0]);
    CG_BW_NONNULL(full);
    CG_BW_TRY(cg_fill(full, 0.0));
    CG_BW_TRY(cg_scatter_add_into(full, (int)n->iargs[0], n->inputs[1], g));
    gi[0] = full;
    return CG_OK;
}

cg_tensor *cg_gather(const cg_tensor *x, int axis, const cg_tensor *index) {
    CG_CHECK_ARG("gather", x);
    CG_CHECK_ARG("gather", index);
    int ax = cg_normalize_axis(axis, x->ndim);
    /* the output keeps x's dtype on a GPU (bf16 moves as bf16); the CPU computes in f32 */
    cg_tensor *out = cg_new_output(x->device, cg_ops_on_cuda(x) ? x->dtype : CG_F32, index->ndim, index->shape);
    if (!out) return NULL;
    CG_TRY(cg_gather_into(out, x, axis, index));
    cg_tensor *in[2] = {(cg_tensor *)x, (cg_tensor *)index};
    cg_node *node = NULL;
    if (!cg_finish("gather", gather_backward, out, 2, in, &node)) return NULL;
    if (node) node->iargs[0] = ax;
    return out;
}

static cg_status index_select_backward(cg_node *n, const cg_tensor *g, cg_tensor **gi) {
    cg_tensor *full = cg_new_like(n->inputs[0]);
    CG_BW_NONNULL(full);
    CG_BW_TRY(cg_fill(full, 0.0));
    CG_BW_TRY(cg_index_add_into(full, (int)n->iargs[0], n->inputs[1], g));
    gi[0] = full;
    return CG_OK;
}

cg_tensor *cg_index_select(const cg_tensor *x, int axis, const cg_tensor *index) {
    CG_CHECK_ARG("index_select", x);
    CG_CHECK_ARG("index_select", index);
    int ax = cg_normalize_axis(axis, x->ndim);
    if (ax < 0 || index->ndim != 1) {
        char d[160], di[160];
        cg_set_error(CG_ERR_SHAPE, "index_select: needs an axis of %s and a 1-D index, got axis %d and index %s",
                     cg_tensor_desc(x, d, sizeof d), axis, cg_tensor_desc(index, di, sizeof di));
        return NULL;
    }
    int64_t shape[CG_MAX_DIMS];
    memcpy(shape, x->shape, sizeof(int64_t) * (size_t)x->ndim);
    shape[ax] = index->shape[0];
    cg_tensor *out = cg_new_output(x->device, cg_ops_on_cuda(x) ? x->dtype : CG_F32, x->ndim, shape);
    if (!out) return NULL;
    CG_TRY(cg_index_select_into(out, x, ax, index));
    cg_tensor *in[2] = {(cg_tensor *)x, (cg_tensor *)index};
    cg_node *node = NULL;
    if (!cg_finish("index_select", index_select_backward, out, 2, in, &node)) return NULL;
    if (node) node->iargs[0] = ax;
    return out;
}

static cg_status embedding_backward(cg_node *n, const cg_tensor *g, cg_tensor **gi) {
    cg_tensor *gw = cg_new_like(n->inputs[0]);
    CG_BW_NONNULL(gw);
    CG_BW_TRY(cg_fill(gw, 0.0));
    CG_BW_TRY(cg_embedding_backward_into(gw, n->inputs[1], g));
    gi[0] = gw;
    return CG_OK;
}

cg_tensor *cg_embedding(const cg_tensor *weight, const cg_tensor *ids) {
    CG_CHECK_ARG("embedding", weight);
    CG_CHECK_ARG("embedding", ids);
    if (weight->ndim != 2 || ids->ndim >= CG_MAX_DIMS) {
        char dw[160], di[160];
        cg_set_error(CG_ERR_SHAPE, "embedding: weight %s must be [V, C] and ids %s of rank < %d",
                     cg_tensor_desc(weight, dw, sizeof dw), cg_tensor_desc(ids, di, sizeof di), CG_MAX_DIMS);
        return NULL;
    }
    int64_t shape[CG_MAX_DIMS];
    memcpy(shape, ids->shape, sizeof(int64_t) * (size_t)ids->ndim);
    shape[ids->ndim] = weight->shape[1];
    cg_tensor *out = cg_new_output(weight->device, cg_ops_on_cuda(weight) ? weight->dtype : CG_F32, ids->ndim + 1, shape);
    if (!out) return NULL;
    CG_TRY(cg_embedding_into(out, weight, ids));
    cg_tensor *in[2] = {(cg_tensor *)weight, (cg_tensor *)ids};
    return cg_finish("embedding", embedding_backward, out, 2, in, NULL);
}

static cg_status cast_backward(cg_node *n, const cg_tensor *g, cg_tensor **gi) {
    (void)n;
    gi[0] = (cg_tensor *)g; /* gradients stay f32 whatever the forward dtypes */
    return CG_OK;
}

cg_tensor *cg_cast(const cg_tensor *x, cg_dtype dtype) {
    CG_CHECK_ARG("cast", x);
    cg_tensor *out = cg_new_output(x->device, dtype, x->ndim, x->shape);
    if (!out) return NULL;
    CG_TRY(cg_cast_into(out, x));
    if (!cg_dtype_is_float(dtype)) return out; /* an integer result carries no gradient */
    cg_tensor *in[1] = {(cg_tensor *)x};
    return cg_finish("cast", cast_backward, out, 1, in, NULL);
}

/* ------------------------------------------------------------------ matmul */

static cg_status matmul_backward(cg_node *n, const cg_tensor *g, cg_tensor **gi) {
    cg_tensor *a = n->inputs[0], *b = n->inputs[1];
    bool ta = n->iargs[0] != 0, tb = n->iargs[1] != 0;
    /* C = op(A) op(B): dop(A) = dC op(B)^T, dop(B) = op(A)^T dC; a transposed operand takes the transpose. */
    if (a->requires_grad) {
        cg_tensor *ga = ta ? cg_matmul_t(b, g, tb, true) : cg_matmul_t(g, b, false, !tb);
        CG_BW_NONNULL(gi[0] = ga ? unbroadcast(ga, a) : NULL);
    }
    if (b->requires_grad) {
        cg_tensor *gb = tb ? cg_matmul_t(g, a, true, ta) : cg_matmul_t(a, g, !ta, false);
        CG_BW_NONNULL(gi[1] = gb ? unbroadcast(gb, b) : NULL);
    }
    return CG_OK;
}

cg_tensor *cg_matmul_t(const cg_tensor *a, const cg_tensor *b, bool trans_a, bool trans_b) {
    CG_CHECK_ARG("matmul", a);
    CG_CHECK_ARG("matmul", b);
    char da[160], db[160];
    if (a->ndim < 2 || b->ndim < 2) {
        cg_set_error(CG_ERR_SHAPE, "matmul: operands need at least 2 dims, got a %s and b %s",
                     cg_tensor_desc(a, da, sizeof da), cg_tensor_desc(b, db, sizeof db));
        return NULL;
    }
    int nd;
    int64_t shape[CG_MAX_DIMS];
    if (cg_broadcast_shapes(a->ndim - 2, a->shape, b->ndim - 2, b->shape, &nd, shape) != CG_OK) {
        cg_set_error(CG_ERR_SHAPE, "matmul: the batch dims of a %s and b %s do not broadcast",
                     cg_tensor_desc(a, da, sizeof da), cg_tensor_desc(b, db, sizeof db));
        return NULL;
    }
    shape[nd] = trans_a ? a->shape[a->ndim - 1] : a->shape[a->ndim - 2];
    shape[nd + 1] = trans_b ? b->shape[b->ndim - 2] : b->shape[b->ndim - 1];
    const cg_tensor *ab[2] = {a, b};
    cg_tensor *out = cg_new_output(a->device, cg_result_dtype(2, ab), nd + 2, shape);
    if (!out) return NULL;
    CG_TRY(cg_matmul_into(out, a, b, trans_a, trans_b, 1.0f, 0.0f));
    cg_tensor *in[2] = {(cg_tensor *)a, (cg_tensor *)b};
    cg_node *node = NULL;
    if (!cg_finish("matmul", matmul_backward, out, 2, in, &node)) return NULL;
    if (node) node->iargs[0] = trans_a, node->iargs[1] = trans_b;
    return out;
}

cg_tensor *cg_matmul(const cg_tensor *a, const cg_tensor *b) { return cg_matmul_t(a, b, false, false); }
