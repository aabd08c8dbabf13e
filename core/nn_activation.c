#include "core/nn_activation.h"

#include <math.h>

#define GELU_K 0.7978845608028654f /* sqrt(2 / pi) */
#define GELU_C 0.044715f
#define PARALLEL_MIN 32768

static inline float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

void cg_cpu_gelu_backward(float *dx, const float *x, const float *dy, int64_t n) {
#pragma omp parallel for schedule(static) if (n > PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++) {
        float v = x[i];
        float u = GELU_K * (v + GELU_C * v * v * v);
        float t = tanhf(u);
        float du = GELU_K * (1.0f + 3.0f * GELU_C * v * v);
        dx[i] = dy[i] * (0.5f * (1.0f + t) + 0.5f * v * (1.0f - t * t) * du);
    }
}

void cg_cpu_silu_backward(float *dx, const float *x, const float *dy, int64_t n) {
#pragma omp parallel for schedule(static) if (n > PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++) {
        float s = sigmoidf(x[i]);
        dx[i] = dy[i] * s * (1.0f + x[i] * (1.0f - s));
    }
}

void cg_cpu_swiglu_forward(float *out, const float *gate, const float *up, int64_t n) {
#pragma omp parallel for schedule(static) if (n > PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++) out[i] = gate[i] * sigmoidf(gate[i]) * up[i];
}

void cg_cpu_swiglu_backward(float *dgate, float *dup, const float *gate, const float *up, const float *dy, int64_t n) {
#pragma omp parallel for schedule(static) if (n > PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++) {
        float g = gate[i], s = sigmoidf(g);
        if (dgate) dgate[i] = dy[i] * up[i] * s * (1.0f + g * (1.0f - s));
        if (dup) dup[i] = dy[i] * g * s;
    }
}
