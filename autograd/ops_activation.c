/* The activations' backward passes through core/nn_activation, or cuda/nn_activation for CUDA tensors
 * (GELU and SiLU are unary ops; SwiGLU is its own op with a fused kernel). */
#include "autograd/ops_common.h"
#include "core/nn_activation.h"

#ifdef CG_HAVE_CUDA
#include "cuda/nn.h"
#endif

/* Packed view of t for the kernels (t itself when already packed): f32 on the CPU; f32 or bf16 on CUDA,
 * converted to dt when it is another float dtype (dt: the op's dtype, -1 to keep t's). */
static const cg_tensor *packed_float(const char *op, const char *what, const cg_tensor *t, int dt) {
    if (!cg_check_float(op, what, t)) return NULL;
    return cg_packed_as(t, dt < 0 ? t->dtype : (cg_dtype)dt);
}

/* GELU and SiLU are unary ops (their backward rules live with the others in ops_basic.c). */
cg_tensor *cg_gelu(const cg_tensor *x) { return cg_unary(CG_OP_GELU_TANH, x); }
cg_tensor *cg_silu(const cg_tensor *x) { return cg_unary(CG_OP_SILU, x); }

/* GELU and SiLU's backward through the core or CUDA kernels (called from the unary backward). */
cg_status cg_activation_backward(cg_node *n, const cg_tensor *g, cg_tensor **gi) {
    const cg_tensor *x = packed_float(n->op, "x", n->inputs[0], -1);
    CG_BW_NONNULL(x);
    const cg_tensor *gp = packed_float(n->op, "grad", g, (int)x->dtype);
    CG_BW_NONNULL(gp);
    cg_tensor *dx = cg_new_grad_for(x);
    CG_BW_NONNULL(dx);
    bool gelu = n->iargs[0] == CG_OP_GELU_TANH;
    if (cg_on_cuda(x)) {
#ifdef CG_HAVE_CUDA
        CG_BW_TRY(gelu ? cg_cuda_gelu_backward(x->dtype, cg_data(dx), cg_data(x), cg_data(gp), cg_numel(x))
                       : cg_cuda_silu_backward(x->dtype, cg_data(dx), cg_data(x), cg_data(gp), cg_numel(x)));
#else
        return cg_no_cuda_error(n->op);
#endif
    } else if (gelu) {
        cg_cpu_gelu_backward(cg_data(dx), cg_data(x), cg_data(gp), cg_numel(x));
    } else {
        cg_cpu_silu_backward(cg_data(dx), cg_data(x), cg_data(gp), cg_numel(x));
    }
    gi[0] = dx;
    return CG_OK;
}

static cg_status swiglu_backward(cg_node *n, const cg_tensor *g, cg_tensor **gi) {
    const cg_tensor *gate = packed_float("swiglu", "gate", n->inputs[0], -1);
    CG_BW_NONNULL(gate);
    const cg_tensor *up = packed_float("swiglu", "up", n->inputs[1], (int)gate->dtype);
    const cg_tensor *gp = packed_float("swiglu", "grad", g, (int)gate->dtype);
    CG_BW_NONNULL(up);
    CG_BW_NONNULL(gp);
    cg_tensor *dgate = n->inputs[0]->requires_grad ? cg_new_grad_for(gate) : NULL;
    cg_tensor *dup = n->inputs[1]->requires_grad ? cg_new_grad_for(up) : NULL;
    if ((n->inputs[0]->requires_grad && !dgate) || (n->inputs[1]->requires_grad && !dup)) return cg_last_status();
    if (cg_on_cuda(gate)) {
#ifdef CG_HAVE_CUDA
        CG_BW_TRY(cg_cuda_swiglu_backward(gate->dtype, dgate ? cg_data(dgate) : NULL, dup ? cg_data(dup) : NULL,
                                          cg_data(gate), cg_data(up), cg_data(gp), cg_numel(gate)));
#else
        return cg_no_cuda_error("swiglu");
#endif
    } else {
        cg_cpu_swiglu_backward(dgate ? cg_data(dgate) : NULL, dup ? cg_data(dup) : NULL, cg_data(gate), cg_data(up),
                               cg_data(gp), cg_numel(gate));
    }
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
    if (!cg_device_eq(gate->device, up->device)) {
        char a[160], b[160];
        cg_set_error(CG_ERR_DEVICE, "swiglu: gate %s and up %s are on different devices",
                     cg_tensor_desc(gate, a, sizeof a), cg_tensor_desc(up, b, sizeof b));
        return NULL;
    }
    const cg_tensor *gp = packed_float("swiglu", "gate", gate, -1);
    const cg_tensor *upp = gp ? packed_float("swiglu", "up", up, (int)gp->dtype) : NULL;
    if (!gp || !upp) return NULL;
    cg_tensor *out = cg_new_output(gate->device, gate->dtype, gate->ndim, gate->shape);
    if (!out) return NULL;
    if (cg_on_cuda(gate)) {
#ifdef CG_HAVE_CUDA
        CG_TRY(cg_cuda_swiglu_forward(gate->dtype, cg_data(out), cg_data(gp), cg_data(upp), cg_numel(out)));
#else
        cg_no_cuda_error("swiglu");
        return NULL;
#endif
    } else {
        cg_cpu_swiglu_forward(cg_data(out), cg_data(gp), cg_data(upp), cg_numel(out));
    }
    cg_tensor *in[2] = {(cg_tensor *)gate, (cg_tensor *)up};
    return cg_finish("swiglu", swiglu_backward, out, 2, in, NULL);
}
