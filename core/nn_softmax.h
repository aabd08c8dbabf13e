/* CPU kernels of softmax, log-softmax, cross-entropy and token log-probabilities (forward and backward side
 * by side, llm.c style). Packed f32 arrays; index arrays are int64. All of them are numerically stable: every
 * exponential is taken of (x - row max) or (x - logsumexp), so logits of 1e4 neither overflow nor lose the
 * softmax. The CUDA backend provides the same functions and is tested against these. */
#ifndef CG_NN_SOFTMAX_H
#define CG_NN_SOFTMAX_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- softmax over the middle axis of a packed [outer, dim, inner] array (inner = 1: the last axis) ---- */
void cg_cpu_softmax_forward(float *out, const float *x, int64_t outer, int64_t dim, int64_t inner);
void cg_cpu_log_softmax_forward(float *out, const float *x, int64_t outer, int64_t dim, int64_t inner);
/* From the forward's output y: dx = y * (dy - sum(dy * y)). */
void cg_cpu_softmax_backward(float *dx, const float *y, const float *dy, int64_t outer, int64_t dim, int64_t inner);
/* From the forward's output y = log_softmax(x): dx = dy - exp(y) * sum(dy). */
void cg_cpu_log_softmax_backward(float *dx, const float *y, const float *dy, int64_t outer, int64_t dim,
                                 int64_t inner);

/* ---- cross-entropy, fused with the softmax: logits [N, V], targets [N] ----
 * Row n with targets[n] == ignore_index gets loss 0 and gradient 0. Others (targets trusted to lie in
 * [0, V)): lse[n] = logsumexp(logits[n]) and
 *   row_loss[n] = (1 - ls) * (lse - logits[n, t]) + ls * (lse - mean_c logits[n, c])
 * (PyTorch's label smoothing: the target distribution is (1 - ls) * onehot + ls / V). The caller sums the
 * rows in a fixed order and divides by the count of non-ignored rows. */
void cg_cpu_cross_entropy_forward(float *row_loss, float *lse, const float *logits, const int64_t *targets,
                                  int64_t N, int64_t V, int64_t ignore_index, float label_smoothing);
/* dlogits[n, c] = (softmax(logits[n])_c - (1 - ls) * [c == t] - ls / V) * scale, with scale = dloss / count;
 * the softmax is recomputed from the saved lse (no probabilities are stored). Ignored rows get 0. */
void cg_cpu_cross_entropy_backward(float *dlogits, const float *logits, const float *lse, const int64_t *targets,
                                   int64_t N, int64_t V, int64_t ignore_index, float label_smoothing, float scale);

/* ---- token log-probabilities through a classifier, chunked over the vocabulary ----
 * out[n] = log_softmax(hidden[n] @ weight^T)[tokens[n]], hidden [N, C], weight [V, C], tokens in [0, V)
 * (trusted). The logits are computed chunk rows of weight at a time with cg_sgemm, with a running max and
 * sum of exponentials per row (online log-sum-exp); lse [N] is saved for the backward. scratch must hold
 * cg_cpu_token_logprobs_scratch(N, chunk) floats: the only memory used beyond the outputs, so at most
 * N x chunk logits exist at once, never N x V. */
int64_t cg_cpu_token_logprobs_scratch(int64_t N, int64_t chunk);
void cg_cpu_token_logprobs_forward(float *out, float *lse, const float *hidden, const float *weight,
                                   const int64_t *tokens, int64_t N, int64_t C, int64_t V, int64_t chunk,
                                   float *scratch);
/* Recomputes each chunk's logits, forms dlogits = dout[n] * (onehot - softmax) for the chunk and accumulates
 * dhidden = sum over chunks of dlogits @ weight_chunk and dweight_chunk = dlogits^T @ hidden (both
 * overwritten; either may be NULL). Same scratch as the forward. */
void cg_cpu_token_logprobs_backward(float *dhidden, float *dweight, const float *dout, const float *hidden,
                                    const float *weight, const int64_t *tokens, const float *lse, int64_t N,
                                    int64_t C, int64_t V, int64_t chunk, float *scratch);

#ifdef __cplusplus
}
#endif
#endif
