/* The tape and the backward pass. */
#include <stdint.h>
#include <string.h>

#include "autograd/autograd.h"
#include "core/context.h"
#include "core/ops.h"

static struct {
    cg_node *head; /* newest node */
    int64_t size;
    int no_grad_depth;
    bool hook_registered;
    cg_grad_ready_fn ready_fn;
    void *ready_user;
} tape;

void cg_set_grad_ready_hook(cg_grad_ready_fn fn, void *user) {
    tape.ready_fn = fn;
    tape.ready_user = user;
}

/* For the gradient-ready hook: each leaf of the graph and the oldest node that uses it, in an
 * open-addressing table keyed by the leaf's address (step arena). */
typedef struct leaf_use {
    cg_tensor *leaf;
    cg_node *oldest;
    bool fired;
} leaf_use;

typedef struct leaf_table {
    leaf_use *slots;
    size_t mask;
} leaf_table;

static leaf_use *leaf_slot(leaf_table *t, const cg_tensor *leaf) {
    size_t h = ((size_t)(uintptr_t)leaf >> 4) * 0x9E3779B97F4A7C15ull;
    for (size_t i = h & t->mask;; i = (i + 1) & t->mask)
        if (t->slots[i].leaf == leaf || !t->slots[i].leaf) return &t->slots[i];
}

static bool is_hooked_leaf(const cg_tensor *t) { return t && t->requires_grad && !t->node; }

/* Walks the graph newest to oldest once, so each leaf ends up with its oldest user. */
static cg_status build_leaf_table(cg_node *head, leaf_table *t) {
    size_t uses = 0;
    for (cg_node *n = head; n; n = n->prev) uses += (size_t)n->n_inputs;
    size_t cap = 16;
    while (cap < 2 * uses + 2) cap *= 2;
    cg_arena *a = cg_step_arena(CG_CPU);
    t->slots = a ? cg_arena_alloc_meta(a, sizeof(leaf_use) * cap) : NULL;
    if (!t->slots) return cg_error_context("backward: gradient-ready table: ");
    memset(t->slots, 0, sizeof(leaf_use) * cap);
    t->mask = cap - 1;
    for (cg_node *n = head; n; n = n->prev) {
        for (int i = 0; i < n->n_inputs; i++) {
            cg_tensor *in = n->inputs[i];
            if (!is_hooked_leaf(in)) continue;
            leaf_use *u = leaf_slot(t, in);
            u->leaf = in;
            u->oldest = n;
        }
    }
    return CG_OK;
}

/* Reports the leaves whose oldest user is n. */
static void fire_ready(leaf_table *t, cg_node *n) {
    for (int i = 0; i < n->n_inputs; i++) {
        cg_tensor *in = n->inputs[i];
        if (!is_hooked_leaf(in)) continue;
        leaf_use *u = leaf_slot(t, in);
        if (u->oldest == n && !u->fired) {
            u->fired = true;
            tape.ready_fn(in, tape.ready_user);
        }
    }
}

static void tape_clear(void *user) {
    (void)user;
    tape.head = NULL;
    tape.size = 0;
}

bool cg_grad_enabled(void) { return tape.no_grad_depth == 0; }

void cg_no_grad_enter(void) { tape.no_grad_depth++; }

void cg_no_grad_exit(void) {
    if (tape.no_grad_depth > 0) tape.no_grad_depth--;
}

int64_t cg_tape_size(void) { return tape.size; }

cg_status cg_set_requires_grad(cg_tensor *t, bool requires_grad) {
    char d[160];
    if (!t) return cg_set_error(CG_ERR_INVALID_ARG, "set_requires_grad: NULL tensor");
    if (requires_grad && !cg_dtype_is_float(t->dtype))
        return cg_set_error(CG_ERR_DTYPE, "set_requires_grad: %s is an integer tensor; only float tensors have "
                            "gradients", cg_tensor_desc(t, d, sizeof d));
    t->requires_grad = requires_grad;
    return CG_OK;
}

cg_status cg_alloc_grad(cg_tensor *t, cg_arena *a) {
    char d[160];
    if (!t || !a) return cg_set_error(CG_ERR_INVALID_ARG, "alloc_grad: NULL argument");
    if (!cg_device_eq(cg_arena_device(a), t->device))
        return cg_set_error(CG_ERR_DEVICE, "alloc_grad: arena '%s' is not on the device of %s", cg_arena_name(a),
                            cg_tensor_desc(t, d, sizeof d));
    if (t->grad) return CG_OK;
    t->grad = cg_tensor_zeros(a, CG_F32, t->ndim, t->shape);
    return t->grad ? CG_OK : cg_last_status();
}

void cg_zero_grad(cg_tensor *t) {
    if (t && t->grad) cg_device_memset_zero(t->grad->device, cg_data(t->grad), cg_nbytes(t->grad));
}

void cg_zero_grads(int n, cg_tensor *const *ts) {
    for (int i = 0; i < n; i++) cg_zero_grad(ts[i]);
}

cg_tensor *cg_detach(const cg_tensor *t) {
    cg_tensor *v = cg_view_alias(t);
    if (!v) cg_error_context("detach: ");
    return v;
}

bool cg_any_requires_grad(int n, const cg_tensor *const *inputs) {
    if (!cg_grad_enabled()) return false;
    for (int i = 0; i < n; i++)
        if (inputs[i] && inputs[i]->requires_grad) return true;
    return false;
}

cg_node *cg_record(const char *op, cg_backward_fn backward, cg_tensor *out, int n_inputs,
                   cg_tensor *const *inputs, cg_status *status) {
    *status = CG_OK;
    if (!cg_any_requires_grad(n_inputs, (const cg_tensor *const *)inputs)) return NULL;
    if (!tape.hook_registered) {
        *status = cg_on_step_end(tape_clear, NULL);
        if (*status != CG_OK) return NULL;
        tape.hook_registered = true;
    }
    cg_arena *a = cg_step_arena(CG_CPU); /* nodes are host metadata whatever the device */
    cg_node *node = a ? cg_arena_alloc_meta(a, sizeof *node) : NULL;
    cg_tensor **ins = node ? cg_arena_alloc_meta(a, sizeof(cg_tensor *) * (size_t)(n_inputs ? n_inputs : 1)) : NULL;
    if (!ins) {
        *status = cg_error_context("%s: recording on the tape: ", op);
        return NULL;
    }
    memcpy(ins, inputs, sizeof(cg_tensor *) * (size_t)n_inputs);
    node->op = op;
    node->backward = backward;
    node->out = out;
    node->n_inputs = n_inputs;
    node->inputs = ins;
    node->prev = tape.head;
    tape.head = node;
    tape.size++;
    out->node = node;
    out->requires_grad = true;
    return node;
}

cg_tensor *cg_sum_to_shape(const cg_tensor *g, int ndim, const int64_t *shape) {
    if (g->ndim == ndim && memcmp(g->shape, shape, sizeof(int64_t) * (size_t)ndim) == 0) return (cg_tensor *)g;
    cg_arena *a = cg_step_arena(g->device);
    if (!a) return NULL;
    /* Sum over the leading dims that broadcasting added, then over dims that were 1 (keepdim). */
    const cg_tensor *cur = g;
    int lead = g->ndim - ndim;
    for (int i = 0; i < lead; i++) {
        int64_t rshape[CG_MAX_DIMS];
        for (int k = 1; k < cur->ndim; k++) rshape[k - 1] = cur->shape[k];
        cg_tensor *r = cg_tensor_empty(a, CG_F32, cur->ndim - 1, rshape);
        if (!r || cg_reduce_into(CG_REDUCE_SUM, r, NULL, cur, 0, false) != CG_OK) return NULL;
        cur = r;
    }
    for (int k = 0; k < ndim; k++) {
        if (shape[k] == 1 && cur->shape[k] != 1) {
            int64_t rshape[CG_MAX_DIMS];
            memcpy(rshape, cur->shape, sizeof(int64_t) * (size_t)cur->ndim);
            rshape[k] = 1;
            cg_tensor *r = cg_tensor_empty(a, CG_F32, cur->ndim, rshape);
            if (!r || cg_reduce_into(CG_REDUCE_SUM, r, NULL, cur, k, true) != CG_OK) return NULL;
            cur = r;
        }
    }
    return (cg_tensor *)cur;
}

/* Adds g into t's gradient: in place into a leaf's persistent buffer, out of place for intermediates (whose
 * gradient tensor may be a view shared with another tensor's gradient). */
static cg_status accumulate(cg_tensor *t, cg_tensor *g, const char *op) {
    char a[160], b[160];
    if (!cg_same_shape(t, g))
        return cg_set_error(CG_ERR_INTERNAL, "backward of %s: gradient %s does not match its input %s", op,
                            cg_tensor_desc(g, a, sizeof a), cg_tensor_desc(t, b, sizeof b));
    if (!t->node) { /* a leaf */
        if (!t->grad) {
            cg_arena *pa = cg_persistent_arena(t->device);
            t->grad = pa ? cg_tensor_zeros(pa, CG_F32, t->ndim, t->shape) : NULL;
            if (!t->grad) return cg_error_context("allocating the gradient of a leaf: ");
        }
        return cg_binary_into(CG_OP_ADD, t->grad, t->grad, g);
    }
    if (!t->grad) {
        t->grad = g;
        return CG_OK;
    }
    cg_tensor *sum = cg_tensor_empty(cg_step_arena(t->device), CG_F32, t->ndim, t->shape);
    if (!sum) return cg_last_status();
    cg_status s = cg_binary_into(CG_OP_ADD, sum, t->grad, g);
    t->grad = sum;
    return s;
}

cg_status cg_backward_with_grad(cg_tensor *out, const cg_tensor *grad) {
    char a[160], b[160];
    if (!out || !grad) return cg_set_error(CG_ERR_INVALID_ARG, "backward: NULL tensor");
    if (!out->requires_grad)
        return cg_set_error(CG_ERR_INVALID_ARG, "backward: %s does not require a gradient (was it computed under "
                            "no-grad, or from inputs without requires_grad?)", cg_tensor_desc(out, a, sizeof a));
    if (!cg_same_shape(out, grad))
        return cg_set_error(CG_ERR_SHAPE, "backward: the gradient %s does not match the output %s",
                            cg_tensor_desc(grad, a, sizeof a), cg_tensor_desc(out, b, sizeof b));
    cg_status s = accumulate(out, (cg_tensor *)grad, "backward");
    if (s != CG_OK || !out->node) return s;

    leaf_table leaves = {0};
    bool hooked = tape.ready_fn != NULL;
    if (hooked && (s = build_leaf_table(out->node, &leaves)) != CG_OK) return s;

    cg_no_grad_enter(); /* backward functions use the forward kernels; nothing they do is recorded */
    for (cg_node *n = out->node; n; n = n->prev) {
        cg_tensor *g = n->out->grad;
        if (!g) { /* not on a path to out */
            if (hooked) fire_ready(&leaves, n);
            continue;
        }
        cg_tensor *grad_in[64] = {0};
        if (n->n_inputs > 64) {
            s = cg_set_error(CG_ERR_INTERNAL, "backward of %s: %d inputs (at most 64)", n->op, n->n_inputs);
            break;
        }
        s = n->backward(n, g, grad_in);
        if (s != CG_OK) {
            cg_error_context("backward of %s: ", n->op);
            break;
        }
        for (int i = 0; i < n->n_inputs && s == CG_OK; i++) {
            cg_tensor *in = n->inputs[i];
            if (!in || !in->requires_grad) continue;
            if (!grad_in[i]) {
                s = cg_set_error(CG_ERR_INTERNAL, "backward of %s: no gradient for input %d", n->op, i);
                break;
            }
            s = accumulate(in, grad_in[i], n->op);
        }
        if (s != CG_OK) break;
        if (hooked) fire_ready(&leaves, n);
    }
    cg_no_grad_exit();
    /* Intermediate gradients belong to this pass only. */
    for (cg_node *n = out->node; n; n = n->prev) n->out->grad = NULL;
    return s;
}

cg_status cg_backward(cg_tensor *loss) {
    char a[160];
    if (!loss) return cg_set_error(CG_ERR_INVALID_ARG, "backward: NULL loss");
    if (cg_numel(loss) != 1)
        return cg_set_error(CG_ERR_SHAPE, "backward: the loss %s is not a single element (use "
                            "cg_backward_with_grad for a non-scalar output)", cg_tensor_desc(loss, a, sizeof a));
    cg_arena *ar = cg_step_arena(loss->device);
    if (!ar) return cg_last_status();
    cg_tensor *one = cg_tensor_empty(ar, CG_F32, loss->ndim, loss->shape);
    if (!one) return cg_last_status();
    cg_status s = cg_fill(one, 1.0);
    return s != CG_OK ? s : cg_backward_with_grad(loss, one);
}
