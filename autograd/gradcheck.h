/* Gradient checking: compares the tape's gradients with central finite differences.
 *
 * The checked function maps the inputs to one output y; the check uses the scalar L = sum(y * r) with fixed
 * random weights r, so every output element matters. Analytic: one backward with upstream gradient r.
 * Numeric: for each checked input element, (L(x + h) - L(x - h)) / (x+h - x-h) with the perturbed values as
 * actually stored in f32, L accumulated in double, under no-grad, and the step arenas rewound after every
 * evaluation so a check of thousands of elements does not grow memory. */
#ifndef CG_GRADCHECK_H
#define CG_GRADCHECK_H

#include "autograd/autograd.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef cg_tensor *(*cg_gradcheck_fn)(cg_tensor *const *inputs, void *user);

typedef struct cg_gradcheck_opts {
    double eps;                /* perturbation; default 1e-3 */
    double rtol, atol;         /* pass if |analytic - numeric| <= atol + rtol * max(|a|, |n|); defaults 1e-2, 1e-3 */
    int64_t max_per_input;     /* check at most this many elements per input, spread evenly; 0 = all */
    uint64_t seed;             /* for the weights r; 0 picks a fixed default */
} cg_gradcheck_opts;

typedef struct cg_gradcheck_result {
    bool passed;
    int64_t checked;           /* elements compared */
    int64_t failures;          /* elements outside the tolerance */
    double max_abs_err;
    int worst_input;           /* where the largest error (relative to the tolerance) is */
    int64_t worst_index;       /* flat index into that input */
    double worst_analytic, worst_numeric;
} cg_gradcheck_result;

/* Inputs: CPU f32 tensors; those with requires_grad are checked (their grads are zeroed first), the rest
 * are constants. Returns an error status only when the check could not run (fn failed, bad inputs); the
 * verdict is in result->passed. */
cg_status cg_gradcheck(cg_gradcheck_fn fn, void *user, int n_inputs, cg_tensor *const *inputs,
                       const cg_gradcheck_opts *opts, cg_gradcheck_result *result);

#ifdef __cplusplus
}
#endif
#endif
