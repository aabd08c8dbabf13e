/* GELU, SiLU and SwiGLU as differentiable ops: the forward through the unary kernels (or the SwiGLU
 * kernel), the backward through core/nn_activation. */
#include "autograd/ops_common.h"
#include "core/nn_activation.h"

/* Packed f32 CPU view of t (t itself when already packed); the CPU kernels here take flat arrays. */
static const cg_tensor *packed_cpu(const char *op, const cg_tensor *t) {
    char d[160];
    if (t->device.type != CG_DEVICE_CPU || t->dtype != CG_F32) {
        cg_set_error(t->dtype != CG_F32 ? CG_ERR_DTYPE : CG_ERR_UNSUPPORTED, "%s: %s must be an f32 CPU tensor%s", op,
                     cg_tensor_desc(t, d, sizeof d), t->dtype != CG_F32 ? "" : " (CUDA needs the CUDA backend)");
        return NULL;
    }
    return cg_contiguous(t);
}

static cg_status activation_backward(cg_node *n, const cg_tensor *g, cg_tensor **gi) {
    const cg_tensor *x = packed_cpu(n->op, n->inputs[0]), *gp = packed_cpu(n->op, g);
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

static cg_tensor *activation(cg_unary_op op, const cg_tensor *x) {
    const char *name = op == CG_OP_GELU_TANH ? "gelu" : "silu";
    CG_CHECK_ARG(name, x);
    cg_tensor *out = cg_new_output(x->device, CG_F32, x->ndim, x->shape);
    if (!out) return NULL;
    CG_TRY(cg_unary_into(op, out, x));
    cg_tensor *in[1] = {(cg_tensor *)x};
    cg_node *node = NULL;
    if (!cg_finish(name, activation_backward, out, 1, in, &node)) return NULL;
    if (node) node->iargs[0] = op;
    return out;
}

cg_tensor *cg_gelu(const cg_tensor *x) { return activation(CG_OP_GELU_TANH, x); }
cg_tensor *cg_silu(const cg_tensor *x) { return activation(CG_OP_SILU, x); }

static cg_status swiglu_backward(cg_node *n, const cg_tensor *g, cg_tensor **gi) {
    const cg_tensor *gate = packed_cpu("swiglu", n->inputs[0]), *up = packed_cpu("swiglu", n->inputs[1]);
    const cg_tensor *gp = packed_cpu("swiglu", g);
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
    const cg_tensor *gp = packed_cpu("swiglu", gate), *upp = packed_cpu("swiglu", up);
    if (!gp || !upp) return NULL;
    cg_tensor *out = cg_new_output(gate->device, CG_F32, gate->ndim, gate->shape);
    if (!out) return NULL;
    cg_cpu_swiglu_forward(cg_data(out), cg_data(gp), cg_data(upp), cg_numel(out));
    cg_tensor *in[2] = {(cg_tensor *)gate, (cg_tensor *)up};
    return cg_finish("swiglu", swiglu_backward, out, 2, in, NULL);
}
