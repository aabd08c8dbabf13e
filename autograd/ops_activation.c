/* The activations' backward passes through core/nn_activation (GELU and SiLU are unary ops; SwiGLU is its
 * own op with a fused kernel). */
#include "autograd/ops_common.h"
#include "core/nn_activation.h"

/* Packed f32 CPU view of t (t itself when already packed); the CPU kernels here take flat arrays. */
static const cg_tensor *packed_cpu(const char *op, const char *what, const cg_tensor *t) {
    return cg_check_f32_cpu(op, what, t) ? cg_contiguous(t) : NULL;
}

/* GELU and SiLU are unary ops (their backward rules live with the others in ops_basic.c). */
cg_tensor *cg_gelu(const cg_tensor *x) { return cg_unary(CG_OP_GELU_TANH, x); }
cg_tensor *cg_silu(const cg_tensor *x) { return cg_unary(CG_OP_SILU, x); }

/* GELU and SiLU's backward through the core kernels (called from the unary backward). */
cg_status cg_activation_backward(cg_node *n, const cg_tensor *g, cg_tensor **gi) {
    const cg_tensor *x = packed_cpu(n->op, "x", n->inputs[0]), *gp = packed_cpu(n->op, "grad", g);
    CG_BW_NONNULL(x);
    CG_BW_NONNULL(gp);
    cg_tensor *dx = cg_new_like(x);
    CG_BW_NONNULL(dx);
    if (n->iargs[0] == CG_OP_GELU_TANH)
        cg_cpu_gelu_backward(cg_data(dx), cg_data(x), cg_data(gp), cg_numel(x));
    else
        cg_cpu_silu_backward(cg_data(dx), cg_data(x), cg_data(gp), cg_numel(x));
    gi[0] = dx;
    return CG_OK;
}

static cg_status swiglu_backward(cg_node *n, const cg_tensor *g, cg_tensor **gi) {
    const cg_tensor *gate = packed_cpu("swiglu", "gate", n->inputs[0]), *up = packed_cpu("swiglu", "up", n->inputs[1]);
    const cg_tensor *gp = packed_cpu("swiglu", "grad", g);
    CG_BW_NONNULL(gate);
    CG_BW_NONNULL(up);
    CG_BW_NONNULL(gp);
    cg_tensor *dgate = n->inputs[0]->requires_grad ? cg_new_like(gate) : NULL;
    cg_tensor *dup = n->inputs[1]->requires_grad ? cg_new_like(up) : NULL;
    if ((n->inputs[0]->requires_grad && !dgate) || (n->inputs[1]->requires_grad && !dup)) return cg_last_status();
    cg_cpu_swiglu_backward(dgate ? cg_data(dgate) : NULL, dup ? cg_data(dup) : NULL, cg_data(gate), cg_data(up),
                           cg_data(gp), cg_numel(gate));
    gi[0] = dgate;
    gi[1] = dup;
    return CG_OK;
}

cg_tensor *cg_swiglu(const cg_tensor *gate, const cg_tensor *up) {
    CG_CHECK_ARG("swiglu", gate);
    CG_CHECK_ARG("swiglu", up);
    if (!cg_same_shape(gate, up)) {
        char a[160], b[160];
        cg_set_error(CG_ERR_SHAPE, "swiglu: gate %s and up %s differ in shape", cg_tensor_desc(gate, a, sizeof a),
                     cg_tensor_desc(up, b, sizeof b));
        return NULL;
    }
    const cg_tensor *gp = packed_cpu("swiglu", "gate", gate), *upp = packed_cpu("swiglu", "up", up);
    if (!gp || !upp) return NULL;
    cg_tensor *out = cg_new_output(gate->device, CG_F32, gate->ndim, gate->shape);
    if (!out) return NULL;
    cg_cpu_swiglu_forward(cg_data(out), cg_data(gp), cg_data(upp), cg_numel(out));
    cg_tensor *in[2] = {(cg_tensor *)gate, (cg_tensor *)up};
    return cg_finish("swiglu", swiglu_backward, out, 2, in, NULL);
}
