/* CPU kernels of the activation functions' backward passes and of SwiGLU (forward and backward). The
 * forwards of GELU and SiLU are unary ops (core/ops.h). All packed f32, any length n. */
#ifndef CG_NN_ACTIVATION_H
#define CG_NN_ACTIVATION_H

#include <math.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* GELU, tanh form: 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3), written as x sigmoid(2u) (one
 * expf). The one definition every GELU in cgrad uses (the unary op, the linear epilogue), so they agree to
 * the bit. */
static inline float cg_gelu_tanh_f32(float x) {
    const float k2 = 1.5957691216057308f; /* 2 sqrt(2 / pi) */
    return x / (1.0f + expf(-k2 * (x + 0.044715f * x * x * x)));
}

/* dx = dy * gelu'(x), GELU in its tanh form. */
void cg_cpu_gelu_backward(float *dx, const float *x, const float *dy, int64_t n);
/* dx = dy * silu'(x) = dy * s (1 + x (1 - s)), s = sigmoid(x). */
void cg_cpu_silu_backward(float *dx, const float *x, const float *dy, int64_t n);
/* out = silu(gate) * up */
void cg_cpu_swiglu_forward(float *out, const float *gate, const float *up, int64_t n);
/* dgate = dy * up * silu'(gate), dup = dy * silu(gate); either output may be NULL. */
void cg_cpu_swiglu_backward(float *dgate, float *dup, const float *gate, const float *up, const float *dy, int64_t n);

#ifdef __cplusplus
}
#endif
#endif
