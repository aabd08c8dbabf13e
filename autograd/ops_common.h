/* Helpers shared by the autograd op files (not public API). */
#ifndef CG_AUTOGRAD_OPS_COMMON_H
#define CG_AUTOGRAD_OPS_COMMON_H

#include "autograd/ops.h"
#include "core/context.h"
#include "core/ops_common.h"

/* A new packed tensor on dev's output arena. */
static inline cg_tensor *cg_new_output(cg_device dev, cg_dtype dtype, int ndim, const int64_t *shape) {
    cg_arena *a = cg_output_arena(dev);
    return a ? cg_tensor_empty(a, dtype, ndim, shape) : NULL;
}

/* A new packed f32 tensor shaped like t on t's device (for gradients and temporaries). */
static inline cg_tensor *cg_new_like(const cg_tensor *t) {
    return cg_new_output(t->device, CG_F32, t->ndim, t->shape);
}

/* The dtype of an op's result: bf16 when every float input is a bf16 GPU tensor (mixed precision: bf16
 * activations stay bf16, the kernels compute in f32), else f32 (the CPU computes in f32). Gradients are f32
 * whatever this gives. NULL entries are skipped. */
static inline cg_dtype cg_result_dtype(int n, const cg_tensor *const *in) {
    bool any = false;
    for (int i = 0; i < n; i++) {
        if (!in[i]) continue;
        if (in[i]->device.type != CG_DEVICE_CUDA || in[i]->dtype != CG_BF16) return CG_F32;
        any = true;
    }
    return any ? CG_BF16 : CG_F32;
}

/* Records a node for out; returns out, or NULL if recording failed. */
static inline cg_tensor *cg_finish(const char *op, cg_backward_fn bw, cg_tensor *out, int n, cg_tensor *const *in,
                                   cg_node **node_out) {
    cg_status st;
    cg_node *node = cg_record(op, bw, out, n, in, &st);
    if (st != CG_OK) return NULL;
    if (node_out) *node_out = node;
    return out;
}

/* An f32 CPU tensor, or false with an error naming the op and the tensor (CUDA tensors report that they need
 * the CUDA backend). */
static inline bool cg_check_f32_cpu(const char *op, const char *what, const cg_tensor *t) {
    return cg_ops_check_f32(op, what, t) == CG_OK;
}

/* For an op with a CUDA kernel: an f32 CPU tensor or an f32/bf16 CUDA tensor, else false with the error. */
static inline bool cg_check_float(const char *op, const char *what, const cg_tensor *t) {
    return cg_ops_check_float(op, what, t) == CG_OK;
}

/* d/dx of GELU (tanh form) or SiLU for a unary node (autograd/ops_activation.c). */
cg_status cg_activation_backward(cg_node *n, const cg_tensor *g, cg_tensor **gi);

/* Null-argument check used at the top of every op. */
#define CG_CHECK_ARG(op, t)                                                                                 \
    do {                                                                                                    \
        if (!(t)) {                                                                                         \
            cg_set_error(CG_ERR_INVALID_ARG, "%s: %s is NULL", (op), #t);                                   \
            return NULL;                                                                                    \
        }                                                                                                   \
    } while (0)

/* Returns NULL from the enclosing op when a kernel fails (the kernel's message names the op). */
#define CG_TRY(expr)                                                                                        \
    do {                                                                                                    \
        if ((expr) != CG_OK) return NULL;                                                                   \
    } while (0)

/* In backward functions: propagate a failed status. */
#define CG_BW_TRY(expr)                                                                                     \
    do {                                                                                                    \
        cg_status s_ = (expr);                                                                              \
        if (s_ != CG_OK) return s_;                                                                         \
    } while (0)

/* In backward functions: fail on a NULL temporary. */
#define CG_BW_NONNULL(p)                                                                                    \
    do {                                                                                                    \
        if (!(p)) return cg_last_status();                                                                  \
    } while (0)

/* ---- shared by the ops with a CUDA path (norms, activations, softmax, attention) ---- */

static inline bool cg_on_cuda(const cg_tensor *t) { return t->device.type == CG_DEVICE_CUDA; }

/* t packed and of dtype dt (t itself when it already is), on t's device: the CUDA kernels take one dtype for
 * all their activation arrays, so an f32 incoming gradient meets a bf16 activation this way. */
static inline const cg_tensor *cg_packed_as(const cg_tensor *t, cg_dtype dt) {
    if (t->dtype == dt) return cg_contiguous(t);
    cg_arena *a = cg_output_arena(t->device);
    return a ? cg_tensor_to(a, t, dt) : NULL;
}

/* A gradient for input t: packed, of t's dtype (f32 on the CPU, f32 or bf16 on CUDA), on t's device. */
static inline cg_tensor *cg_new_grad_for(const cg_tensor *t) {
    return cg_new_output(t->device, t->dtype, t->ndim, t->shape);
}

/* The error of a CUDA tensor in a build without CUDA (cannot happen: such a tensor cannot be made). */
static inline cg_status cg_no_cuda_error(const char *op) {
    return cg_set_error(CG_ERR_UNSUPPORTED, "%s: this build has no CUDA backend", op);
}

/* Scratch for one kernel call from the step arena of dev, given back right after it by rewinding to a mark. If
 * the request opened a new chunk it is kept instead (rewinding would free the chunk and every later step would
 * allocate it again); the step end then merges it into the arena's one chunk, and from the next step on the
 * scratch fits and is given back, with no system allocation. On a GPU the kernels that use the scratch are
 * queued on the compute stream, so later uses of the same memory are ordered after them. */
typedef struct cg_scratch_scope {
    cg_arena *arena;
    cg_arena_mark mark;
} cg_scratch_scope;

static inline float *cg_scratch_begin(cg_scratch_scope *s, cg_device dev, int64_t nfloats) {
    s->arena = cg_step_arena(dev);
    if (!s->arena) return NULL;
    s->mark = cg_arena_get_mark(s->arena);
    return (float *)cg_arena_alloc(s->arena, sizeof(float) * (size_t)(nfloats > 0 ? nfloats : 1), 64);
}

static inline void cg_scratch_end(cg_scratch_scope *s) {
    cg_arena_mark now = cg_arena_get_mark(s->arena);
    if (now.data_chunk == s->mark.data_chunk && now.meta_chunk == s->mark.meta_chunk)
        cg_arena_rewind(s->arena, s->mark);
}

#endif
