/* The CUDA nn kernels behind C linkage: the fused norms, activations, softmax / cross-entropy, chunked token log-probs
 * and causal attention, forward and backward. Each mirrors the CPU kernel of the same name (core/nn_norm.h,
 * core/nn_activation.h, core/nn_softmax.h, core/nn_attention.h), in the same argument order, with:
 *   - a leading cg_dtype (CG_F32 or CG_BF16) for the arrays the CPU kernel types `float` and that hold
 *     activations, weights or their gradients (declared void * here);
 *   - per-row statistics (mean, rstd, lse, row losses) always f32;
 *   - every pointer a device pointer on the current device, unless a comment says otherwise;
 *   - a cg_status return: a bad dtype, or a launch error turned into a cg error naming the op.
 * Every kernel runs on the compute stream (cg_cuda_compute_stream) and returns without waiting for it.
 * Computation is in f32 whatever the storage type; results are deterministic (no float atomics: column sums
 * such as dweight go through per-block partials and a second pass in a fixed order).
 * Built only with CUDA (cuda/nn_*.cu); C callers guard their calls with #ifdef CG_HAVE_CUDA. */
#ifndef CG_CUDA_NN_H
#define CG_CUDA_NN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/dtype.h"
#include "core/error.h"
#include "core/nn_attention.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------ norms (cuda/nn_norm.cu) */

cg_status cg_cuda_layernorm_forward(cg_dtype dt, void *out, float *mean, float *rstd, const void *x,
                                    const void *weight, const void *bias, int64_t N, int64_t C, float eps);
/* f32 scratch the norm backwards need for the deterministic dweight/dbias column sums. */
size_t cg_cuda_norm_backward_workspace(int64_t N, int64_t C);
/* As the CPU kernel (dx, dweight, dbias each overwritten, any may be NULL); workspace holds
 * cg_cuda_norm_backward_workspace(N, C) floats (it may be NULL when dweight and dbias are). */
cg_status cg_cuda_layernorm_backward(cg_dtype dt, void *dx, void *dweight, void *dbias, const void *dout,
                                     const void *x, const void *weight, const float *mean, const float *rstd,
                                     int64_t N, int64_t C, float *workspace);
cg_status cg_cuda_rmsnorm_forward(cg_dtype dt, void *out, float *rstd, const void *x, const void *weight, int64_t N,
                                  int64_t C, float eps);
cg_status cg_cuda_rmsnorm_backward(cg_dtype dt, void *dx, void *dweight, const void *dout, const void *x,
                                   const void *weight, const float *rstd, int64_t N, int64_t C, float *workspace);
/* sum is stored in dt and the statistics are those of the stored (rounded) sum, which is what the backward
 * reads. */
cg_status cg_cuda_residual_norm_forward(cg_dtype dt, void *sum, void *out, float *mean, float *rstd, const void *x,
                                        const void *residual, const void *weight, const void *bias, int64_t N,
                                        int64_t C, float eps, bool rms);

/* ------------------------------------------------------------------ activations (cuda/nn_activation.cu) */

/* The forwards of the unary GELU (tanh form, cg_gelu_tanh_f32) and SiLU, for the elementwise op's CUDA path. */
cg_status cg_cuda_gelu_forward(cg_dtype dt, void *out, const void *x, int64_t n);
cg_status cg_cuda_silu_forward(cg_dtype dt, void *out, const void *x, int64_t n);
cg_status cg_cuda_gelu_backward(cg_dtype dt, void *dx, const void *x, const void *dy, int64_t n);
cg_status cg_cuda_silu_backward(cg_dtype dt, void *dx, const void *x, const void *dy, int64_t n);
cg_status cg_cuda_swiglu_forward(cg_dtype dt, void *out, const void *gate, const void *up, int64_t n);
cg_status cg_cuda_swiglu_backward(cg_dtype dt, void *dgate, void *dup, const void *gate, const void *up,
                                  const void *dy, int64_t n);

/* RoPE as the CPU kernel: rope is a host struct; its frequency table (cg_rope_inv_freq, double) is computed on
 * the host and copied to the GPU on the compute stream; positions is a device int64 [B, T] array or NULL.
 * D even and D <= CG_CUDA_ROPE_MAX_D. out may equal x. */
#define CG_CUDA_ROPE_MAX_D 1024
cg_status cg_cuda_rope_forward(cg_dtype dt, void *out, const void *x, int64_t B, int64_t H, int64_t T, int64_t D,
                               const cg_rope_config *rope, int64_t pos_offset, const int64_t *positions);
cg_status cg_cuda_rope_backward(cg_dtype dt, void *dx, const void *dy, int64_t B, int64_t H, int64_t T, int64_t D,
                                const cg_rope_config *rope, int64_t pos_offset, const int64_t *positions);

/* ------------------------------------------------------------------ softmax, cross-entropy (cuda/nn_softmax.cu) */

cg_status cg_cuda_softmax_forward(cg_dtype dt, void *out, const void *x, int64_t outer, int64_t dim, int64_t inner);
cg_status cg_cuda_log_softmax_forward(cg_dtype dt, void *out, const void *x, int64_t outer, int64_t dim,
                                      int64_t inner);
cg_status cg_cuda_softmax_backward(cg_dtype dt, void *dx, const void *y, const void *dy, int64_t outer, int64_t dim,
                                   int64_t inner);
cg_status cg_cuda_log_softmax_backward(cg_dtype dt, void *dx, const void *y, const void *dy, int64_t outer,
                                       int64_t dim, int64_t inner);
/* One pass over each row (an online max and sum of exponentials): row_loss [N] and lse [N] in f32; targets a
 * device int64 [N] array, trusted to lie in [0, V) or equal ignore_index. */
cg_status cg_cuda_cross_entropy_forward(cg_dtype dt, float *row_loss, float *lse, const void *logits,
                                        const int64_t *targets, int64_t N, int64_t V, int64_t ignore_index,
                                        float label_smoothing);
/* dlogits = (softmax - target distribution) * scale * (dscale ? dscale[0] : 1), written directly in dt from the
 * saved lse (no probabilities stored). dscale: a device f32 scalar (the loss's incoming gradient) or NULL. */
cg_status cg_cuda_cross_entropy_backward(cg_dtype dt, void *dlogits, const void *logits, const float *lse,
                                         const int64_t *targets, int64_t N, int64_t V, int64_t ignore_index,
                                         float label_smoothing, float scale, const float *dscale);
/* out[0] = (sum of row_loss[0..N) in a fixed order) / count, 0 when count is 0; out f32. The mean loss of
 * cross-entropy without a round trip to the host. */
cg_status cg_cuda_mean_loss(float *out, const float *row_loss, int64_t N, int64_t count);

/* ------------------------------------------------------------------ token log-probs (cuda/nn_logprobs.cu) */

/* As the CPU kernels cg_cpu_token_logprobs_forward/backward (core/nn_softmax.h): hidden [N, C] and weight [V, C]
 * in dt (f32 or bf16), tokens a device int64 [N] array trusted to lie in [0, V), out/lse/dout f32 [N]. The
 * gradients dhidden [N, C] and dweight [V, C] are f32 whatever dt (accumulators: dhidden sums over the chunks in
 * f32), each overwritten, either may be NULL. The logits of a chunk are computed by cuBLASLt (fp32
 * accumulation; TF32 for f32 inputs unless cg_cuda_matmul_set_tf32(false)) into an f32 scratch; the backward's
 * dlogits are rounded to dt before their two matmuls. scratch holds cg_cuda_token_logprobs_scratch(dt, N, chunk)
 * floats of device memory (N x chunk x 4 bytes for f32, x 6 for bf16, plus a little): never N x V. */
size_t cg_cuda_token_logprobs_scratch(cg_dtype dt, int64_t N, int64_t chunk);
cg_status cg_cuda_token_logprobs_forward(cg_dtype dt, float *out, float *lse, const void *hidden, const void *weight,
                                         const int64_t *tokens, int64_t N, int64_t C, int64_t V, int64_t chunk,
                                         float *scratch);
cg_status cg_cuda_token_logprobs_backward(cg_dtype dt, float *dhidden, float *dweight, const float *dout,
                                          const void *hidden, const void *weight, const int64_t *tokens,
                                          const float *lse, int64_t N, int64_t C, int64_t V, int64_t chunk,
                                          float *scratch);

/* ------------------------------------------------------------------ attention (cuda/nn_attention.cu) */

/* Head dims the CUDA attention supports (any D up to this; 64 and 128 are the tuned cases). */
#define CG_CUDA_ATTN_MAX_D 256
/* As the CPU kernel (out [B, Hq, T, D] in dt, lse [B, Hq, T] f32, key_mask a device byte array [B, S] or
 * NULL); no workspace: nothing of size T x S is ever written. */
cg_status cg_cuda_attention_forward(cg_dtype dt, void *out, float *lse, const void *q, const void *k, const void *v,
                                    const uint8_t *key_mask, const cg_attention_dims *d);
/* f32 scratch for the backward: one float per query row. */
size_t cg_cuda_attention_backward_workspace(const cg_attention_dims *d);
cg_status cg_cuda_attention_backward(cg_dtype dt, void *dq, void *dk, void *dv, const void *dout, const void *q,
                                     const void *k, const void *v, const void *out, const float *lse,
                                     const uint8_t *key_mask, const cg_attention_dims *d, float *workspace);

#ifdef __cplusplus
}
#endif
#endif
