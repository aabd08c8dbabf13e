/* RoPE and causal grouped-query attention as differentiable ops: argument checks, packing, and the tape
 * nodes; the numerics are in core/nn_attention. */
#include <math.h>
#include <string.h>

#include "autograd/ops_common.h"
#include "core/context.h"
#include "core/nn_attention.h"
#ifdef CG_HAVE_CUDA
#include "cuda/nn.h"
#endif

#define DESC 160

/* An f32 CPU tensor or an f32/bf16 CUDA tensor of rank 4, or an error naming op and the role of t ("q", "x"). */
static bool check_float_4d(const char *op, const char *role, const cg_tensor *t) {
    char d[DESC];
    if (!cg_check_float(op, role, t)) return false;
    if (t->ndim != 4) {
        cg_set_error(CG_ERR_SHAPE, "%s: %s %s must have 4 dims [B, H, T, D]", op, role,
                     cg_tensor_desc(t, d, sizeof d));
        return false;
    }
    return true;
}

/* Scratch for a kernel, taken from the step arena and given back right after the kernel (the caller
 * rewinds to *mark), so an op's footprint beyond its outputs is only this. */
static float *scratch_floats(size_t n, cg_arena_mark *mark) {
    cg_arena *a = cg_step_arena(CG_CPU);
    if (!a) return NULL;
    *mark = cg_arena_get_mark(a);
    float *p = cg_arena_alloc(a, (n ? n : 1) * sizeof(float), 64);
    if (!p) cg_set_error(CG_ERR_OOM, "attention: cannot allocate %zu bytes of scratch", n * sizeof(float));
    return p;
}

static void scratch_release(cg_arena_mark mark) { cg_arena_rewind(cg_step_arena(CG_CPU), mark); }

/* A host array uploaded to dev's step arena (CUDA ops: positions, key mask); host data itself on the CPU. */
static void *on_device(cg_device dev, void *host, cg_dtype dt, int64_t n) {
    if (dev.type != CG_DEVICE_CUDA || !host) return host;
    int64_t shape[1] = {n > 0 ? n : 1};
    cg_arena *a = cg_step_arena(dev);
    cg_tensor *t = a ? cg_tensor_from_data(a, dt, 1, shape, host) : NULL;
    return t ? cg_data(t) : NULL;
}

/* t on the host (a copy after waiting for the GPU when t lives there), for the small index/mask inputs that
 * are checked and converted on the host. */
static const cg_tensor *host_view(const cg_tensor *t) {
    if (!cg_on_cuda(t)) return t;
    if (cg_device_synchronize(t->device) != CG_OK) return NULL;
    cg_arena *a = cg_step_arena(CG_CPU);
    return a ? cg_tensor_clone(a, t) : NULL;
}

/* ------------------------------------------------------------------ RoPE */

static cg_status rope_backward(cg_node *n, const cg_tensor *g, cg_tensor **gi) {
    const cg_tensor *x = n->inputs[0];
    const cg_tensor *gp = cg_packed_as(g, x->dtype);
    CG_BW_NONNULL(gp);
    cg_tensor *dx = cg_new_grad_for(x);
    CG_BW_NONNULL(dx);
    cg_rope_config rope = {(float)n->args[0], (float)n->args[1], (float)n->args[2], (float)n->args[3], n->iargs[1]};
    if (cg_numel(dx) > 0 && cg_on_cuda(x)) {
#ifdef CG_HAVE_CUDA
        CG_BW_TRY(cg_cuda_rope_backward(x->dtype, cg_data(dx), cg_data(gp), x->shape[0], x->shape[1], x->shape[2],
                                        x->shape[3], &rope, n->iargs[0], (const int64_t *)n->extra));
#else
        return cg_no_cuda_error("rope");
#endif
    } else if (cg_numel(dx) > 0) {
        cg_cpu_rope_backward(cg_data(dx), cg_data(gp), x->shape[0], x->shape[1], x->shape[2], x->shape[3], &rope,
                             n->iargs[0], (const int64_t *)n->extra);
    }
    gi[0] = dx;
    return CG_OK;
}

/* positions (i32/i64 [B, T], any strides) as a packed int64 array in the step arena. */
static int64_t *positions_array(const cg_tensor *positions, const cg_tensor *x) {
    char d[DESC], e[DESC];
    if (!cg_device_eq(positions->device, x->device) && positions->device.type != CG_DEVICE_CPU) {
        cg_set_error(CG_ERR_DEVICE, "rope: positions %s must be on the CPU or on x's device (x %s)",
                     cg_tensor_desc(positions, d, sizeof d), cg_tensor_desc(x, e, sizeof e));
        return NULL;
    }
    if (positions->dtype != CG_I32 && positions->dtype != CG_I64) {
        cg_set_error(CG_ERR_DTYPE, "rope: positions %s must be i32 or i64", cg_tensor_desc(positions, d, sizeof d));
        return NULL;
    }
    if (positions->ndim != 2 || positions->shape[0] != x->shape[0] || positions->shape[1] != x->shape[2]) {
        cg_set_error(CG_ERR_SHAPE, "rope: positions %s must be [B, T] = [%lld, %lld] for x %s",
                     cg_tensor_desc(positions, d, sizeof d), (long long)x->shape[0], (long long)x->shape[2],
                     cg_tensor_desc(x, e, sizeof e));
        return NULL;
    }
    const cg_tensor *hp = host_view(positions);
    const cg_tensor *p = hp ? cg_contiguous(hp) : NULL;
    if (!p) return NULL;
    int64_t n = cg_numel(p);
    int64_t *pos = cg_arena_alloc(cg_step_arena(CG_CPU), (size_t)(n ? n : 1) * sizeof(int64_t), 64);
    if (!pos) {
        cg_set_error(CG_ERR_OOM, "rope: cannot allocate the positions (%lld entries)", (long long)n);
        return NULL;
    }
    if (n > 0 && p->dtype == CG_I64) {
        memcpy(pos, cg_data(p), (size_t)n * sizeof(int64_t));
    } else if (n > 0) {
        const int32_t *src = cg_data(p);
        for (int64_t i = 0; i < n; i++) pos[i] = src[i];
    }
    return pos;
}

cg_tensor *cg_rope(const cg_tensor *x, float theta, int64_t pos_offset, const cg_tensor *positions) {
    cg_rope_config c = {.theta = theta};
    return cg_rope_scaled(x, &c, pos_offset, positions);
}

cg_tensor *cg_rope_scaled(const cg_tensor *x, const cg_rope_config *rope, int64_t pos_offset,
                          const cg_tensor *positions) {
    char d[DESC];
    CG_CHECK_ARG("rope", x);
    CG_CHECK_ARG("rope", rope);
    float theta = rope->theta;
    if (!check_float_4d("rope", "x", x)) return NULL;
    if (x->shape[3] % 2 != 0) {
        cg_set_error(CG_ERR_SHAPE, "rope: x %s: the head dim (%lld) must be even (pairs (i, i + D/2))",
                     cg_tensor_desc(x, d, sizeof d), (long long)x->shape[3]);
        return NULL;
    }
    if (!(theta > 0.0f) || isinf(theta)) {
        cg_set_error(CG_ERR_INVALID_ARG, "rope: theta must be positive and finite, got %g", (double)theta);
        return NULL;
    }
    if (rope->scaling_factor > 0.0f &&
        (!(rope->high_freq_factor > rope->low_freq_factor) || !(rope->low_freq_factor > 0.0f) || rope->original_max_pos <= 0)) {
        cg_set_error(CG_ERR_INVALID_ARG, "rope: scaling needs 0 < low_freq_factor (%g) < high_freq_factor (%g) and "
                     "original_max_pos > 0 (%lld)", (double)rope->low_freq_factor, (double)rope->high_freq_factor,
                     (long long)rope->original_max_pos);
        return NULL;
    }
    int64_t *pos = NULL;
    if (positions && !(pos = positions_array(positions, x))) return NULL;
    if (pos && !(pos = on_device(x->device, pos, CG_I64, x->shape[0] * x->shape[2]))) return NULL;
    const cg_tensor *xp = cg_contiguous(x);
    if (!xp) return NULL;
    cg_tensor *out = cg_new_output(x->device, x->dtype, 4, x->shape);
    if (!out) return NULL;
    if (cg_numel(out) > 0 && cg_on_cuda(x)) {
#ifdef CG_HAVE_CUDA
        CG_TRY(cg_cuda_rope_forward(x->dtype, cg_data(out), cg_data(xp), x->shape[0], x->shape[1], x->shape[2],
                                    x->shape[3], rope, pos_offset, pos));
#else
        cg_no_cuda_error("rope");
        return NULL;
#endif
    } else if (cg_numel(out) > 0) {
        cg_cpu_rope_forward(cg_data(out), cg_data(xp), x->shape[0], x->shape[1], x->shape[2], x->shape[3], rope,
                            pos_offset, pos);
    }
    cg_tensor *in[1] = {(cg_tensor *)x};
    cg_node *node = NULL;
    if (!cg_finish("rope", rope_backward, out, 1, in, &node)) return NULL;
    if (node) {
        node->args[0] = rope->theta;
        node->args[1] = rope->scaling_factor;
        node->args[2] = rope->low_freq_factor;
        node->args[3] = rope->high_freq_factor;
        node->iargs[0] = pos_offset;
        node->iargs[1] = rope->original_max_pos;
        node->extra = pos;
    }
    return out;
}

/* ------------------------------------------------------------------ attention */

/* key_mask (u8/i32/i64/f32 [B, S], any strides) as bytes, 1 = attend, in the step arena. */
static uint8_t *key_mask_bytes(const cg_tensor *mask, const cg_tensor *q, int64_t B, int64_t S) {
    char d[DESC], e[DESC];
    if (!cg_device_eq(mask->device, q->device) && mask->device.type != CG_DEVICE_CPU) {
        cg_set_error(CG_ERR_DEVICE, "attention: key_mask %s must be on the CPU or on q's device (q %s)",
                     cg_tensor_desc(mask, d, sizeof d), cg_tensor_desc(q, e, sizeof e));
        return NULL;
    }
    if (mask->dtype != CG_U8 && mask->dtype != CG_I32 && mask->dtype != CG_I64 && mask->dtype != CG_F32) {
        cg_set_error(CG_ERR_DTYPE, "attention: key_mask %s must be u8, i32, i64 or f32",
                     cg_tensor_desc(mask, d, sizeof d));
        return NULL;
    }
    if (mask->ndim != 2 || mask->shape[0] != B || mask->shape[1] != S) {
        cg_set_error(CG_ERR_SHAPE, "attention: key_mask %s must be [B, S] = [%lld, %lld]",
                     cg_tensor_desc(mask, d, sizeof d), (long long)B, (long long)S);
        return NULL;
    }
    int64_t n = B * S;
    uint8_t *bytes = cg_arena_alloc(cg_step_arena(CG_CPU), (size_t)(n ? n : 1), 64);
    if (!bytes) {
        cg_set_error(CG_ERR_OOM, "attention: cannot allocate the key mask (%lld bytes)", (long long)n);
        return NULL;
    }
    const cg_tensor *hm = host_view(mask);
    if (!hm) return NULL;
    for (int64_t i = 0; i < n; i++) bytes[i] = cg_get_flat(hm, i) != 0.0;
    return on_device(q->device, bytes, CG_U8, n);
}

/* A key mask the CUDA kernel can read in place: u8 [B, S] packed on q's CUDA device, under no-grad. */
static bool device_mask_usable(const cg_tensor *mask, const cg_tensor *q, int64_t S) {
    return cg_on_cuda(q) && cg_device_eq(mask->device, q->device) && mask->dtype == CG_U8 && mask->ndim == 2 &&
           mask->shape[0] == q->shape[0] && mask->shape[1] == S && cg_is_contiguous(mask) && !cg_grad_enabled();
}

static cg_attention_dims dims_of(const cg_tensor *q, const cg_tensor *k, float scale) {
    return (cg_attention_dims){.batch = q->shape[0], .q_heads = q->shape[1], .kv_heads = k->shape[1],
                               .q_len = q->shape[2], .kv_len = k->shape[2], .head_dim = q->shape[3],
                               .scale = scale};
}

/* A gradient buffer for t (t's dtype and device), zero-filled unless the kernel writes every element. */
static cg_tensor *grad_buffer(const cg_tensor *t, bool kernel_writes_all) {
    cg_tensor *z = cg_new_grad_for(t);
    if (z && !kernel_writes_all && cg_fill(z, 0.0) != CG_OK) return NULL;
    return z;
}

static cg_status attention_backward(cg_node *n, const cg_tensor *g, cg_tensor **gi) {
    const cg_tensor *q = n->saved[0], *k = n->saved[1], *v = n->saved[2], *out = n->saved[3], *lse = n->saved[4];
    bool want_q = n->inputs[0]->requires_grad, want_k = n->inputs[1]->requires_grad;
    bool want_v = n->inputs[2]->requires_grad;
    bool cuda = cg_on_cuda(q), nonempty = cg_numel(q) > 0 && cg_numel(k) > 0;
    bool all = cuda && nonempty; /* the CUDA kernels write every gradient element; the CPU ones accumulate */
    cg_tensor *dq = want_q ? grad_buffer(q, all) : NULL, *dk = want_k ? grad_buffer(k, all) : NULL;
    cg_tensor *dv = want_v ? grad_buffer(v, all) : NULL;
    if ((want_q && !dq) || (want_k && !dk) || (want_v && !dv)) return cg_last_status();
    if (nonempty && cuda) {
#ifdef CG_HAVE_CUDA
        const cg_tensor *gp = cg_packed_as(g, q->dtype);
        CG_BW_NONNULL(gp);
        cg_attention_dims dims = dims_of(q, k, (float)n->args[0]);
        cg_scratch_scope sc;
        float *ws = cg_scratch_begin(&sc, q->device, (int64_t)cg_cuda_attention_backward_workspace(&dims));
        CG_BW_NONNULL(ws);
        cg_status s = cg_cuda_attention_backward(q->dtype, dq ? cg_data(dq) : NULL, dk ? cg_data(dk) : NULL,
                                                 dv ? cg_data(dv) : NULL, cg_data(gp), cg_data(q), cg_data(k),
                                                 cg_data(v), cg_data(out), cg_data(lse), (const uint8_t *)n->extra,
                                                 &dims, ws);
        cg_scratch_end(&sc);
        CG_BW_TRY(s);
#else
        return cg_no_cuda_error("attention");
#endif
    } else if (nonempty) {
        const cg_tensor *gp = cg_contiguous(g);
        CG_BW_NONNULL(gp);
        cg_attention_dims dims = dims_of(q, k, (float)n->args[0]);
        int threads = cg_get_num_threads();
        cg_arena_mark mark;
        float *ws = scratch_floats(cg_cpu_attention_backward_workspace(&dims, threads), &mark);
        CG_BW_NONNULL(ws);
        cg_cpu_attention_backward(dq ? cg_data(dq) : NULL, dk ? cg_data(dk) : NULL, dv ? cg_data(dv) : NULL,
                                  cg_data(gp), cg_data(q), cg_data(k), cg_data(v), cg_data(out), cg_data(lse),
                                  (const uint8_t *)n->extra, &dims, threads, ws);
        scratch_release(mark);
    }
    gi[0] = dq;
    gi[1] = dk;
    gi[2] = dv;
    return CG_OK;
}

/* Every shape relation of attention, with the tensors named in the message. */
static bool check_attention_shapes(const cg_tensor *q, const cg_tensor *k, const cg_tensor *v) {
    char a[DESC], b[DESC];
    if (!check_float_4d("attention", "q", q) || !check_float_4d("attention", "k", k) ||
        !check_float_4d("attention", "v", v))
        return false;
    cg_tensor_desc(q, a, sizeof a);
    if (!cg_same_shape(k, v)) {
        cg_set_error(CG_ERR_SHAPE, "attention: k %s and v %s must have the same shape [B, Hkv, S, D]",
                     cg_tensor_desc(k, a, sizeof a), cg_tensor_desc(v, b, sizeof b));
        return false;
    }
    cg_tensor_desc(k, b, sizeof b);
    if (q->shape[0] != k->shape[0]) {
        cg_set_error(CG_ERR_SHAPE, "attention: q %s and k %s: batch sizes differ (%lld vs %lld)", a, b,
                     (long long)q->shape[0], (long long)k->shape[0]);
        return false;
    }
    if (q->shape[3] != k->shape[3]) {
        cg_set_error(CG_ERR_SHAPE, "attention: q %s and k %s: head dims differ (%lld vs %lld)", a, b,
                     (long long)q->shape[3], (long long)k->shape[3]);
        return false;
    }
    if (k->shape[1] < 1 || q->shape[1] % k->shape[1] != 0) {
        cg_set_error(CG_ERR_SHAPE,
                     "attention: q %s and k %s: the query heads (%lld) must be a multiple of the kv heads (%lld)", a,
                     b, (long long)q->shape[1], (long long)k->shape[1]);
        return false;
    }
    if (k->shape[2] < q->shape[2]) {
        cg_set_error(CG_ERR_SHAPE,
                     "attention: q %s and k %s: fewer keys (S = %lld) than queries (T = %lld); the queries are the "
                     "last T of the S positions",
                     a, b, (long long)k->shape[2], (long long)q->shape[2]);
        return false;
    }
    return true;
}

cg_tensor *cg_attention(const cg_tensor *q, const cg_tensor *k, const cg_tensor *v, const cg_tensor *key_mask,
                        float scale) {
    CG_CHECK_ARG("attention", q);
    CG_CHECK_ARG("attention", k);
    CG_CHECK_ARG("attention", v);
    if (!check_attention_shapes(q, k, v)) return NULL;
    if (isnan(scale) || isinf(scale)) {
        cg_set_error(CG_ERR_INVALID_ARG, "attention: scale must be finite, got %g", (double)scale);
        return NULL;
    }
    if (scale <= 0.0f) scale = q->shape[3] > 0 ? (float)(1.0 / sqrt((double)q->shape[3])) : 1.0f;
    uint8_t *mask = NULL;
    if (key_mask && device_mask_usable(key_mask, q, k->shape[2])) {
        /* a packed u8 mask on q's GPU is already the kernel's format: read where it lies, nothing waits for
         * the GPU (what a CUDA graph of the decode step needs); no-grad only, as the tape would keep the
         * pointer to a buffer the caller may rewrite */
        mask = (uint8_t *)cg_data(key_mask);
    } else if (key_mask && !(mask = key_mask_bytes(key_mask, q, q->shape[0], k->shape[2]))) {
        return NULL;
    }

    if (!cg_device_eq(q->device, k->device) || !cg_device_eq(q->device, v->device)) {
        char a[DESC], b[DESC];
        cg_set_error(CG_ERR_DEVICE, "attention: q %s and k/v %s are on different devices",
                     cg_tensor_desc(q, a, sizeof a), cg_tensor_desc(cg_device_eq(q->device, k->device) ? v : k, b, sizeof b));
        return NULL;
    }
    /* one dtype for the kernels: k and v converted to q's when they differ (CUDA f32/bf16 mixes) */
    const cg_tensor *qp = cg_contiguous(q), *kp = cg_packed_as(k, q->dtype), *vp = cg_packed_as(v, q->dtype);
    if (!qp || !kp || !vp) return NULL;
    cg_tensor *out = cg_new_output(q->device, q->dtype, 4, q->shape);
    cg_tensor *lse = cg_new_output(q->device, CG_F32, 3, q->shape);
    if (!out || !lse) return NULL;
    if (cg_numel(q) > 0 && cg_numel(k) > 0 && cg_on_cuda(q)) {
#ifdef CG_HAVE_CUDA
        cg_attention_dims dims = dims_of(q, k, scale);
        CG_TRY(cg_cuda_attention_forward(q->dtype, cg_data(out), cg_data(lse), cg_data(qp), cg_data(kp), cg_data(vp),
                                         mask, &dims));
#else
        cg_no_cuda_error("attention");
        return NULL;
#endif
    } else if (cg_numel(q) > 0 && cg_numel(k) > 0) {
        cg_attention_dims dims = dims_of(q, k, scale);
        int threads = cg_get_num_threads();
        cg_arena_mark mark;
        float *ws = scratch_floats(cg_cpu_attention_forward_workspace(&dims, threads), &mark);
        if (!ws) return NULL;
        cg_cpu_attention_forward(cg_data(out), cg_data(lse), cg_data(qp), cg_data(kp), cg_data(vp), mask, &dims,
                                 threads, ws);
        scratch_release(mark);
    } else {
        CG_TRY(cg_fill(out, 0.0));
    }

    cg_tensor *in[3] = {(cg_tensor *)q, (cg_tensor *)k, (cg_tensor *)v};
    cg_node *node = NULL;
    if (!cg_finish("attention", attention_backward, out, 3, in, &node)) return NULL;
    if (node) {
        node->saved[0] = (cg_tensor *)qp;
        node->saved[1] = (cg_tensor *)kp;
        node->saved[2] = (cg_tensor *)vp;
        node->saved[3] = out;
        node->saved[4] = lse;
        node->args[0] = scale;
        node->extra = mask;
    }
    return out;
}
