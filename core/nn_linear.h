/* CPU kernels of the linear layers' elementwise epilogues (packed f32). The matmuls themselves are
 * cg_matmul_into; these are the pieces a GPU fuses around them. */
#ifndef CG_NN_LINEAR_H
#define CG_NN_LINEAR_H

#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* y[r, c] += bias[c] (bias may be NULL); pre = y when pre is given (the GELU backward needs it); then, with
 * gelu, y = gelu(y). One pass over rows x cols. */
void cg_cpu_bias_gelu_forward(float *y, float *pre, const float *bias, int64_t rows, int64_t cols, bool gelu);
/* out += a * b elementwise. */
void cg_cpu_mul_add(float *out, const float *a, const float *b, int64_t n);

#ifdef __cplusplus
}
#endif
#endif
