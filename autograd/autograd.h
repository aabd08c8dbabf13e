/* Autograd: a define-by-run tape in the step arena.
 *
 * Every differentiable op (autograd/ops.h) computes its output with the forward kernels, then, when grad
 * mode is on and an input requires a gradient, records a node: the op's name, its inputs, the tensors and
 * scalars its backward needs, and its backward function. cg_backward(loss) walks the tape newest-first;
 * each node turns the gradient of its output into gradients of its inputs.
 *
 * Where gradients go:
 * - leaves (tensors with requires_grad and no node: parameters) accumulate into t->grad, a buffer of t's
 *   shape allocated once in the persistent arena of t's device; so micro-batches accumulate until
 *   cg_zero_grad.
 * - intermediate tensors get their gradient in the step arena; it is cleared when the backward pass ends,
 *   so a second backward over the same graph (another loss term) starts clean.
 * cg_step_end() drops the tape with the rest of the step arena. */
#ifndef CG_AUTOGRAD_H
#define CG_AUTOGRAD_H

#include <stdbool.h>

#include "core/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- grad mode ---- */
bool cg_grad_enabled(void);
/* No-grad scopes nest: nothing is recorded between enter and the matching exit (rollouts, evaluation,
 * reference-model passes). */
void cg_no_grad_enter(void);
void cg_no_grad_exit(void);

/* ---- leaves ---- */
/* Marks a float tensor as a leaf that receives a gradient (an integer tensor is an error). */
cg_status cg_set_requires_grad(cg_tensor *t, bool requires_grad);
/* Gives a leaf its gradient buffer now, zeroed, in arena a (on t's device), instead of lazily in the
 * context's persistent arena at the first backward: a model keeps its gradients in its own arena. */
cg_status cg_alloc_grad(cg_tensor *t, cg_arena *a);
/* Sets t->grad to zero (no-op if it has none yet). */
void cg_zero_grad(cg_tensor *t);
void cg_zero_grads(int n, cg_tensor *const *ts);
/* A tensor sharing t's storage that is cut from the graph: no gradient flows through it. */
cg_tensor *cg_detach(const cg_tensor *t);

/* ---- backward ---- */
/* Backward from a one-element tensor (d loss / d loss = 1). */
cg_status cg_backward(cg_tensor *loss);
/* Backward from any tensor with an upstream gradient of its shape. */
cg_status cg_backward_with_grad(cg_tensor *out, const cg_tensor *grad);

/* ---- gradient-ready hook (data parallelism: reduce a bucket as soon as its gradients are final) ----
 * While a hook is set, every backward calls fn(leaf, user) once for each leaf (requires_grad, no node) that
 * some node of the walked graph takes as input, right after the walk has processed the oldest such node:
 * nothing later in this backward adds to that leaf's gradient. Leaves the graph does not use are not
 * reported. NULL removes the hook. The hook runs inside backward (no-grad mode) and must not record ops. */
typedef void (*cg_grad_ready_fn)(cg_tensor *leaf, void *user);
void cg_set_grad_ready_hook(cg_grad_ready_fn fn, void *user);

/* ---- for op implementations (autograd/ops_*.c) ---- */
typedef struct cg_node cg_node;
/* Computes gradients of the inputs from the gradient of the output. grad_in[i] is set only where
 * node->inputs[i]->requires_grad; each must have exactly input i's shape (f32, in the step arena). */
typedef cg_status (*cg_backward_fn)(cg_node *node, const cg_tensor *grad_out, cg_tensor **grad_in);

#define CG_NODE_MAX_SAVED 8

struct cg_node {
    const char *op;
    cg_backward_fn backward;
    cg_tensor *out;
    int n_inputs;
    cg_tensor **inputs;
    cg_tensor *saved[CG_NODE_MAX_SAVED]; /* tensors kept for backward (step arena) */
    double args[8];                      /* the op's scalar parameters */
    int64_t iargs[8];
    void *extra; /* op-specific data in the step arena */
    cg_node *prev;
};

/* True when grad mode is on and any input requires a gradient. */
bool cg_any_requires_grad(int n, const cg_tensor *const *inputs);
/* Records out as produced by op from the inputs, if cg_any_requires_grad; returns the node (to fill
 * saved/args) or NULL when nothing was recorded. On allocation failure returns NULL with an error set and
 * *status != CG_OK. */
cg_node *cg_record(const char *op, cg_backward_fn backward, cg_tensor *out, int n_inputs,
                   cg_tensor *const *inputs, cg_status *status);
/* Sums a broadcast gradient back to shape (ndim, shape): the backward of broadcasting. Returns g itself
 * when the shapes already match. */
cg_tensor *cg_sum_to_shape(const cg_tensor *g, int ndim, const int64_t *shape);
/* Number of nodes on the tape of the current step (for tests). */
int64_t cg_tape_size(void);

#ifdef __cplusplus
}
#endif
#endif
