#include "core/nn_linear.h"

#include <stddef.h>

#include "core/nn_activation.h"

#define PARALLEL_MIN 32768

void cg_cpu_bias_gelu_forward(float *y, float *pre, const float *bias, int64_t rows, int64_t cols, bool gelu) {
#pragma omp parallel for schedule(static) if (rows * cols > PARALLEL_MIN)
    for (int64_t r = 0; r < rows; r++) {
        float *yr = y + r * cols;
        float *pr = pre ? pre + r * cols : NULL;
        for (int64_t c = 0; c < cols; c++) {
            float v = bias ? yr[c] + bias[c] : yr[c];
            if (pr) pr[c] = v;
            yr[c] = gelu ? cg_gelu_tanh_f32(v) : v;
        }
    }
}

void cg_cpu_mul_add(float *out, const float *a, const float *b, int64_t n) {
#pragma omp parallel for schedule(static) if (n > PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++) out[i] += a[i] * b[i];
}
