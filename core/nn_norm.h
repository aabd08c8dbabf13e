/* CPU kernels of the normalisations (forward and backward side by side, llm.c style): LayerNorm, RMSNorm
 * and the fused residual-add + norm of a pre-norm transformer block. All arrays are packed f32: x and out
 * are [N, C] (N rows normalised over their C entries), weight and bias [C], and the per-row statistics
 * mean and rstd [N] that the forward saves so the backward never recomputes them. Statistics are fp32
 * values (accumulated in double inside a row). The CUDA backend provides the same functions and is tested
 * against these. */
#ifndef CG_NN_NORM_H
#define CG_NN_NORM_H

#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* out = (x - mean) * rstd * weight + bias, rstd = 1 / sqrt(var + eps) with the biased variance (as
 * torch.nn.LayerNorm). weight NULL means 1, bias NULL means 0. */
void cg_cpu_layernorm_forward(float *out, float *mean, float *rstd, const float *x, const float *weight,
                              const float *bias, int64_t N, int64_t C, float eps);
/* From dout [N, C] and the forward's x, mean and rstd: dx [N, C], dweight [C], dbias [C], each overwritten;
 * any of the three may be NULL (not wanted). */
void cg_cpu_layernorm_backward(float *dx, float *dweight, float *dbias, const float *dout, const float *x,
                               const float *weight, const float *mean, const float *rstd, int64_t N, int64_t C);

/* out = x * rstd * weight, rstd = 1 / sqrt(mean(x^2) + eps) (Llama/Qwen2 RMSNorm). weight NULL means 1. */
void cg_cpu_rmsnorm_forward(float *out, float *rstd, const float *x, const float *weight, int64_t N, int64_t C,
                            float eps);
/* dx [N, C] and dweight [C], overwritten; either may be NULL. */
void cg_cpu_rmsnorm_backward(float *dx, float *dweight, const float *dout, const float *x, const float *weight,
                             const float *rstd, int64_t N, int64_t C);

/* One pass of the pre-norm residual step: sum = x + residual, out = norm(sum), with LayerNorm (mean and rstd
 * saved) or, when rms, RMSNorm (only rstd; mean and bias are not used and may be NULL). The backward is the
 * norm's backward applied to sum, whose gradient passes unchanged to x and residual. */
void cg_cpu_residual_norm_forward(float *sum, float *out, float *mean, float *rstd, const float *x,
                                  const float *residual, const float *weight, const float *bias, int64_t N,
                                  int64_t C, float eps, bool rms);

#ifdef __cplusplus
}
#endif
#endif
