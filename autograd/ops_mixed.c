/* Mixed precision: a parameter's working copy in the forward, its gradient into the fp32 master. */
#include "autograd/ops_mixed.h"

#include "autograd/autograd.h"
#include "autograd/ops_common.h"

/* d master = d copy: the copy is a rounding of the master, whose derivative is taken as 1 (straight
 * through). The gradient keeps its dtype here; the leaf accumulation adds it into the f32 .grad buffer, a
 * mixed-dtype add that converts on the fly (no separate conversion pass). */
static cg_status working_weight_backward(cg_node *n, const cg_tensor *g, cg_tensor **gi) {
    (void)n;
    gi[0] = (cg_tensor *)g;
    return CG_OK;
}

cg_tensor *cg_working_weight(const cg_tensor *master, const cg_tensor *copy) {
    const char *op = "working_weight";
    char a[CG_DESC_LEN], b[CG_DESC_LEN];
    CG_CHECK_ARG(op, master);
    CG_CHECK_ARG(op, copy);
    if (!cg_same_shape(master, copy) || !cg_device_eq(master->device, copy->device) ||
        !cg_dtype_is_float(copy->dtype)) {
        cg_set_error(CG_ERR_SHAPE, "%s: the copy %s must be a float tensor of the master %s's shape and device", op,
                     cg_tensor_desc(copy, a, sizeof a), cg_tensor_desc(master, b, sizeof b));
        return NULL;
    }
    cg_tensor *in[1] = {(cg_tensor *)master};
    if (!cg_any_requires_grad(1, (const cg_tensor *const *)in)) return (cg_tensor *)copy;
    cg_tensor *out = cg_view_alias(copy); /* a fresh struct: the node's output, never the persistent copy */
    if (!out) return NULL;
    return cg_finish(op, working_weight_backward, out, 1, in, NULL);
}
