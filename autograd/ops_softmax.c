/* Softmax, log-softmax, cross-entropy and token log-probabilities as differentiable ops: argument checks,
 * packing, the core/nn_softmax kernels (cuda/nn_softmax for CUDA tensors: softmax, log-softmax and
 * cross-entropy; token log-probabilities through cuda/nn_logprobs), and the tape nodes. */
#include <string.h>

#include "autograd/ops_common.h"
#include "core/nn_softmax.h"
#ifdef CG_HAVE_CUDA
#include "cuda/nn.h"
#endif

#define DEFAULT_CHUNK 4096

/* An index tensor (i32/i64, on x's device, with x's shape minus its last dim) as packed int64: the tensor
 * itself when it already is one, else a converted copy in the output arena. */
static const cg_tensor *index_rows(const char *op, const char *xname, const cg_tensor *x, const char *what,
                                   const cg_tensor *idx) {
    char dx[160], di[160];
    if (!cg_device_eq(x->device, idx->device)) {
        cg_set_error(CG_ERR_DEVICE, "%s: %s %s and %s %s are on different devices", op, xname,
                     cg_tensor_desc(x, dx, sizeof dx), what, cg_tensor_desc(idx, di, sizeof di));
        return NULL;
    }
    if (idx->dtype != CG_I32 && idx->dtype != CG_I64) {
        cg_set_error(CG_ERR_DTYPE, "%s: %s %s must be i32 or i64", op, what, cg_tensor_desc(idx, di, sizeof di));
        return NULL;
    }
    bool fits = idx->ndim == x->ndim - 1;
    for (int k = 0; fits && k < idx->ndim; k++) fits = idx->shape[k] == x->shape[k];
    if (!fits) {
        cg_set_error(CG_ERR_SHAPE, "%s: %s %s and %s %s: %s must have the shape of %s without its last dim", op, xname,
                     cg_tensor_desc(x, dx, sizeof dx), what, cg_tensor_desc(idx, di, sizeof di), what, xname);
        return NULL;
    }
    if (idx->dtype == CG_I64 && cg_is_contiguous(idx)) return idx;
    cg_arena *a = cg_output_arena(idx->device);
    return a ? cg_tensor_to(a, idx, CG_I64) : NULL;
}

/* ------------------------------------------------------------------ softmax, log-softmax */

/* x's shape seen as [outer, dim, inner] around axis. */
static void split_at_axis(const cg_tensor *x, int axis, int64_t *outer, int64_t *dim, int64_t *inner) {
    *outer = 1, *inner = 1;
    for (int k = 0; k < axis; k++) *outer *= x->shape[k];
    for (int k = axis + 1; k < x->ndim; k++) *inner *= x->shape[k];
    *dim = x->shape[axis];
}

/* The node: inputs {x}; the backward reads the output y; iargs = {axis, log}. */
static cg_status softmax_backward(cg_node *n, const cg_tensor *g, cg_tensor **gi) {
    const cg_tensor *y = n->out;
    const cg_tensor *gp = cg_packed_as(g, y->dtype);
    CG_BW_NONNULL(gp);
    cg_tensor *dx = cg_new_grad_for(n->inputs[0]);
    CG_BW_NONNULL(dx);
    int64_t outer, dim, inner;
    split_at_axis(y, (int)n->iargs[0], &outer, &dim, &inner);
    bool log = n->iargs[1] != 0;
    if (cg_on_cuda(y)) {
#ifdef CG_HAVE_CUDA
        CG_BW_TRY(log ? cg_cuda_log_softmax_backward(y->dtype, cg_data(dx), cg_data(y), cg_data(gp), outer, dim, inner)
                      : cg_cuda_softmax_backward(y->dtype, cg_data(dx), cg_data(y), cg_data(gp), outer, dim, inner));
#else
        return cg_no_cuda_error(n->op);
#endif
    } else if (log) {
        cg_cpu_log_softmax_backward(cg_data(dx), cg_data(y), cg_data(gp), outer, dim, inner);
    } else {
        cg_cpu_softmax_backward(cg_data(dx), cg_data(y), cg_data(gp), outer, dim, inner);
    }
    gi[0] = dx;
    return CG_OK;
}

/* Any axis, without moving data: the kernels walk [outer, dim, inner] with stride inner along the axis. */
static cg_tensor *softmax_op(const char *op, const cg_tensor *x, int axis, bool log) {
    char d[160];
    CG_CHECK_ARG(op, x);
    if (!cg_check_float(op, "x", x)) return NULL;
    int ax = cg_normalize_axis(axis, x->ndim);
    if (ax < 0) {
        cg_set_error(CG_ERR_INVALID_ARG, "%s: axis %d is out of range for x %s", op, axis,
                     cg_tensor_desc(x, d, sizeof d));
        return NULL;
    }
    const cg_tensor *xp = cg_contiguous(x);
    cg_tensor *out = xp ? cg_new_output(x->device, x->dtype, x->ndim, x->shape) : NULL;
    if (!out) return NULL;
    int64_t outer, dim, inner;
    split_at_axis(x, ax, &outer, &dim, &inner);
    if (cg_on_cuda(x)) {
#ifdef CG_HAVE_CUDA
        CG_TRY(log ? cg_cuda_log_softmax_forward(x->dtype, cg_data(out), cg_data(xp), outer, dim, inner)
                   : cg_cuda_softmax_forward(x->dtype, cg_data(out), cg_data(xp), outer, dim, inner));
#else
        cg_no_cuda_error(op);
        return NULL;
#endif
    } else if (log) {
        cg_cpu_log_softmax_forward(cg_data(out), cg_data(xp), outer, dim, inner);
    } else {
        cg_cpu_softmax_forward(cg_data(out), cg_data(xp), outer, dim, inner);
    }
    cg_tensor *in[1] = {(cg_tensor *)x};
    cg_node *node = NULL;
    if (!cg_finish(op, softmax_backward, out, 1, in, &node)) return NULL;
    if (node) {
        node->iargs[0] = ax;
        node->iargs[1] = log;
    }
    return out;
}

cg_tensor *cg_softmax(const cg_tensor *x, int axis) { return softmax_op("softmax", x, axis, false); }
cg_tensor *cg_log_softmax(const cg_tensor *x, int axis) { return softmax_op("log_softmax", x, axis, true); }

/* ------------------------------------------------------------------ cross-entropy */

/* The node: inputs {logits, targets}; saved {packed logits, lse [N], targets as packed i64};
 * args[0] = label smoothing; iargs = {ignore_index, count of rows not ignored}. */
static cg_status cross_entropy_backward(cg_node *n, const cg_tensor *g, cg_tensor **gi) {
    const cg_tensor *logits = n->saved[0], *lse = n->saved[1], *targets = n->saved[2];
    cg_tensor *dlogits = cg_new_grad_for(n->inputs[0]);
    CG_BW_NONNULL(dlogits);
    int64_t V = logits->shape[logits->ndim - 1], N = cg_numel(targets), count = n->iargs[1];
    if (cg_on_cuda(logits)) {
#ifdef CG_HAVE_CUDA
        /* the incoming gradient stays on the GPU: the kernel reads it there (no round trip to the host) */
        const cg_tensor *gf = cg_packed_as(g, CG_F32);
        CG_BW_NONNULL(gf);
        float scale = count > 0 ? (float)(1.0 / (double)count) : 0.0f;
        CG_BW_TRY(cg_cuda_cross_entropy_backward(logits->dtype, cg_data(dlogits), cg_data(logits), cg_data(lse),
                                                 cg_data(targets), N, V, n->iargs[0], (float)n->args[0], scale,
                                                 cg_data(gf)));
#else
        return cg_no_cuda_error(n->op);
#endif
    } else {
        float scale = count > 0 ? (float)(cg_get_flat(g, 0) / (double)count) : 0.0f;
        cg_cpu_cross_entropy_backward(cg_data(dlogits), cg_data(logits), cg_data(lse), cg_data(targets), N, V,
                                      n->iargs[0], (float)n->args[0], scale);
    }
    gi[0] = dlogits;
    return CG_OK;
}

/* The targets as host int64 values, for the range check and the count of rows not ignored (one download,
 * after waiting for the GPU, when they live there). */
static const int64_t *host_targets(const cg_tensor *t64) {
    if (!cg_on_cuda(t64)) return cg_data(t64);
    if (cg_device_synchronize(t64->device) != CG_OK) return NULL;
    cg_arena *a = cg_step_arena(CG_CPU);
    const cg_tensor *h = a ? cg_tensor_to(a, t64, CG_I64) : NULL;
    return h ? cg_data(h) : NULL;
}

cg_tensor *cg_cross_entropy(const cg_tensor *logits, const cg_tensor *targets, int64_t ignore_index,
                            float label_smoothing) {
    const char *op = "cross_entropy";
    char d[160];
    CG_CHECK_ARG(op, logits);
    CG_CHECK_ARG(op, targets);
    if (!cg_check_float(op, "logits", logits)) return NULL;
    if (logits->ndim < 1) {
        cg_set_error(CG_ERR_SHAPE, "%s: logits %s have no class dim", op, cg_tensor_desc(logits, d, sizeof d));
        return NULL;
    }
    if (!(label_smoothing >= 0.0f && label_smoothing < 1.0f)) {
        cg_set_error(CG_ERR_INVALID_ARG, "%s: label_smoothing %g is outside [0, 1)", op, (double)label_smoothing);
        return NULL;
    }
    const cg_tensor *t64 = index_rows(op, "logits", logits, "targets", targets);
    if (!t64) return NULL;
    int64_t V = logits->shape[logits->ndim - 1], N = cg_numel(t64), count = 0;
    const int64_t *tv = N > 0 ? host_targets(t64) : NULL;
    if (N > 0 && !tv) return NULL;
    for (int64_t n = 0; n < N; n++) {
        if (tv[n] == ignore_index) continue;
        if (tv[n] < 0 || tv[n] >= V) {
            cg_set_error(CG_ERR_INVALID_ARG, "%s: target %lld at row %lld is outside [0, %lld) for logits %s (and is "
                         "not ignore_index %lld)", op, (long long)tv[n], (long long)n, (long long)V,
                         cg_tensor_desc(logits, d, sizeof d), (long long)ignore_index);
            return NULL;
        }
        count++;
    }
    const cg_tensor *lp = cg_contiguous(logits);
    int64_t rows[1] = {N};
    cg_tensor *lse = lp ? cg_new_output(logits->device, CG_F32, 1, rows) : NULL;
    cg_tensor *out = lse ? cg_new_output(logits->device, CG_F32, 0, NULL) : NULL;
    if (!out) return NULL;
    cg_scratch_scope sc;
    float *row_loss = cg_scratch_begin(&sc, logits->device, N);
    if (!row_loss) return NULL;
    if (cg_on_cuda(logits)) {
#ifdef CG_HAVE_CUDA
        /* the mean loss is summed on the GPU in a fixed order and stays there */
        cg_status s = cg_cuda_cross_entropy_forward(logits->dtype, row_loss, cg_data(lse), cg_data(lp),
                                                    cg_data(t64), N, V, ignore_index, label_smoothing);
        if (s == CG_OK) s = cg_cuda_mean_loss(cg_data(out), row_loss, N, count);
        cg_scratch_end(&sc);
        CG_TRY(s);
#else
        cg_scratch_end(&sc);
        cg_no_cuda_error(op);
        return NULL;
#endif
    } else {
        cg_cpu_cross_entropy_forward(row_loss, cg_data(lse), cg_data(lp), tv, N, V, ignore_index, label_smoothing);
        double total = 0.0; /* summed in row order: the same loss whatever the thread count */
        for (int64_t n = 0; n < N; n++) total += row_loss[n];
        cg_scratch_end(&sc);
        *(float *)cg_data(out) = count > 0 ? (float)(total / (double)count) : 0.0f;
    }

    cg_tensor *in[2] = {(cg_tensor *)logits, (cg_tensor *)targets};
    cg_node *node = NULL;
    if (!cg_finish(op, cross_entropy_backward, out, 2, in, &node)) return NULL;
    if (node) {
        node->saved[0] = (cg_tensor *)lp;
        node->saved[1] = lse;
        node->saved[2] = (cg_tensor *)t64;
        node->args[0] = label_smoothing;
        node->iargs[0] = ignore_index;
        node->iargs[1] = count;
    }
    return out;
}

/* ------------------------------------------------------------------ token log-probabilities */

/* What it allocates (step arena): out [N] and lse [N] (kept for the backward), packed copies of hidden,
 * weight and tokens only when they are not already packed (f32 or, on CUDA, the compute dtype; i64), and the
 * kernel's scratch for the duration of the call (given back at once; see cg_scratch_scope): N x (chunk + 1)
 * floats on the CPU, N x chunk f32 logits (+ their bf16 gradient in the backward) on CUDA. The backward
 * allocates the f32 gradients dhidden [N, C] and dweight [V, C] (only for inputs that require one; dweight is the
 * full weight's size, as every gradient of a leaf is) and the same scratch again. Never N x V.
 * On CUDA, hidden and weight compute in one dtype: bf16 when both are bf16, else f32 (a bf16 one is widened). */

/* The node: inputs {hidden, weight, tokens}; saved {packed hidden, packed weight, tokens as i64, lse};
 * iargs[0] = chunk. */
static cg_status token_logprobs_backward(cg_node *n, const cg_tensor *g, cg_tensor **gi) {
    const cg_tensor *hidden = n->saved[0], *weight = n->saved[1], *tokens = n->saved[2], *lse = n->saved[3];
    const cg_tensor *gp = cg_on_cuda(hidden) ? cg_packed_as(g, CG_F32) : cg_contiguous(g);
    CG_BW_NONNULL(gp);
    cg_tensor *dh = NULL, *dw = NULL;
    if (n->inputs[0]->requires_grad) CG_BW_NONNULL(dh = cg_new_like(n->inputs[0]));
    if (n->inputs[1]->requires_grad) CG_BW_NONNULL(dw = cg_new_like(n->inputs[1]));
    int64_t V = weight->shape[0], C = weight->shape[1], N = cg_numel(tokens), chunk = n->iargs[0];
    cg_scratch_scope sc;
    if (cg_on_cuda(hidden)) {
#ifdef CG_HAVE_CUDA
        float *scratch = cg_scratch_begin(&sc, hidden->device,
                                          (int64_t)cg_cuda_token_logprobs_scratch(hidden->dtype, N, chunk));
        CG_BW_NONNULL(scratch);
        cg_status s = cg_cuda_token_logprobs_backward(hidden->dtype, dh ? cg_data(dh) : NULL, dw ? cg_data(dw) : NULL,
                                                      cg_data(gp), cg_data(hidden), cg_data(weight), cg_data(tokens),
                                                      cg_data(lse), N, C, V, chunk, scratch);
        cg_scratch_end(&sc);
        CG_BW_TRY(s);
#else
        return cg_no_cuda_error(n->op);
#endif
    } else {
        float *scratch = cg_scratch_begin(&sc, hidden->device, cg_cpu_token_logprobs_scratch(N, chunk));
        CG_BW_NONNULL(scratch);
        cg_cpu_token_logprobs_backward(dh ? cg_data(dh) : NULL, dw ? cg_data(dw) : NULL, cg_data(gp), cg_data(hidden),
                                       cg_data(weight), cg_data(tokens), cg_data(lse), N, C, V, chunk, scratch);
        cg_scratch_end(&sc);
    }
    gi[0] = dh;
    gi[1] = dw;
    return CG_OK;
}

cg_tensor *cg_token_logprobs(const cg_tensor *hidden, const cg_tensor *weight, const cg_tensor *tokens,
                             int64_t chunk_size) {
    const char *op = "token_logprobs";
    char dh[160], dw[160];
    CG_CHECK_ARG(op, hidden);
    CG_CHECK_ARG(op, weight);
    CG_CHECK_ARG(op, tokens);
    if (!cg_check_float(op, "hidden", hidden)) return NULL;
    if (!cg_device_eq(hidden->device, weight->device)) {
        cg_set_error(CG_ERR_DEVICE, "%s: hidden %s and weight %s are on different devices", op,
                     cg_tensor_desc(hidden, dh, sizeof dh), cg_tensor_desc(weight, dw, sizeof dw));
        return NULL;
    }
    if (!cg_check_float(op, "weight", weight)) return NULL;
    if (hidden->ndim < 1 || weight->ndim != 2 || weight->shape[1] != hidden->shape[hidden->ndim - 1] ||
        weight->shape[0] == 0) {
        cg_set_error(CG_ERR_SHAPE, "%s: hidden %s and weight %s: weight must be [V, C] with V > 0 and C the last dim "
                     "of hidden", op, cg_tensor_desc(hidden, dh, sizeof dh), cg_tensor_desc(weight, dw, sizeof dw));
        return NULL;
    }
    if (chunk_size < 0) {
        cg_set_error(CG_ERR_INVALID_ARG, "%s: chunk_size %lld is negative (0 picks %d)", op, (long long)chunk_size,
                     DEFAULT_CHUNK);
        return NULL;
    }
    const cg_tensor *t64 = index_rows(op, "hidden", hidden, "tokens", tokens);
    if (!t64) return NULL;
    int64_t V = weight->shape[0], C = weight->shape[1], N = cg_numel(t64);
    int64_t chunk = chunk_size == 0 ? DEFAULT_CHUNK : chunk_size;
    if (chunk > V) chunk = V;
    const int64_t *tv = N > 0 ? host_targets(t64) : NULL; /* GPU tokens: one download, after a wait */
    if (N > 0 && !tv) return NULL;
    for (int64_t n = 0; n < N; n++)
        if (tv[n] < 0 || tv[n] >= V) {
            cg_set_error(CG_ERR_INVALID_ARG, "%s: token %lld at row %lld is outside [0, %lld) for weight %s", op,
                         (long long)tv[n], (long long)n, (long long)V, cg_tensor_desc(weight, dw, sizeof dw));
            return NULL;
        }

    bool cuda = cg_on_cuda(hidden);
    const cg_tensor *hp, *wp;
    if (cuda) {
        cg_dtype dt = hidden->dtype == CG_BF16 && weight->dtype == CG_BF16 ? CG_BF16 : CG_F32;
        hp = cg_packed_as(hidden, dt);
        wp = hp ? cg_packed_as(weight, dt) : NULL;
    } else {
        hp = cg_contiguous(hidden);
        wp = hp ? cg_contiguous(weight) : NULL;
    }
    int64_t rows[1] = {N};
    cg_tensor *lse = hp && wp ? cg_new_output(hidden->device, CG_F32, 1, rows) : NULL;
    cg_tensor *out = lse ? cg_new_output(hidden->device, CG_F32, t64->ndim, t64->shape) : NULL;
    if (!out) return NULL;
    cg_scratch_scope sc;
    if (cuda) {
#ifdef CG_HAVE_CUDA
        float *scratch = cg_scratch_begin(&sc, hidden->device,
                                          (int64_t)cg_cuda_token_logprobs_scratch(hp->dtype, N, chunk));
        if (!scratch) return NULL;
        cg_status s = cg_cuda_token_logprobs_forward(hp->dtype, cg_data(out), cg_data(lse), cg_data(hp), cg_data(wp),
                                                     cg_data(t64), N, C, V, chunk, scratch);
        cg_scratch_end(&sc);
        CG_TRY(s);
#else
        cg_no_cuda_error(op);
        return NULL;
#endif
    } else {
        float *scratch = cg_scratch_begin(&sc, hidden->device, cg_cpu_token_logprobs_scratch(N, chunk));
        if (!scratch) return NULL;
        cg_cpu_token_logprobs_forward(cg_data(out), cg_data(lse), cg_data(hp), cg_data(wp), tv, N, C, V, chunk,
                                      scratch);
        cg_scratch_end(&sc);
    }

    cg_tensor *in[3] = {(cg_tensor *)hidden, (cg_tensor *)weight, (cg_tensor *)tokens};
    cg_node *node = NULL;
    if (!cg_finish(op, token_logprobs_backward, out, 3, in, &node)) return NULL;
    if (node) {
        node->saved[0] = (cg_tensor *)hp;
        node->saved[1] = (cg_tensor *)wp;
        node->saved[2] = (cg_tensor *)t64;
        node->saved[3] = lse;
        node->iargs[0] = chunk;
    }
    return out;
}
