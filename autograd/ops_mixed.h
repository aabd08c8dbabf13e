/* Mixed precision: the op that lets a forward read a low-precision working copy of a parameter while the
 * gradient goes to its fp32 master (DESIGN.md section 5). */
#ifndef CG_OPS_MIXED_H
#define CG_OPS_MIXED_H

#include "core/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The working copy `copy` (bf16, same shape and device as `master`) standing in for `master` in a forward.
 * No data moves: the result shares copy's storage (the optimizer keeps the copy equal to the rounded
 * master, cg_optimizer_set_working_copy). With grad mode on and master->requires_grad the result records a
 * node whose backward adds the incoming gradient (bf16 or f32) into master's f32 gradient (converted to f32
 * by the accumulation); otherwise it is copy itself (nothing recorded). */
cg_tensor *cg_working_weight(const cg_tensor *master, const cg_tensor *copy);

#ifdef __cplusplus
}
#endif
#endif
