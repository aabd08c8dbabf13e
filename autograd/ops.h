/* The differentiable op API: what a model or an experiment driver calls.
 *
 * Every function allocates its output in the output arena of its inputs' device (the step arena unless
 * overridden, see core/context.h), records a tape node when grad mode is on and an input requires a
 * gradient, and returns NULL with cg_last_error() set on bad arguments ("layernorm: x f32[4, 7] cpu and
 * weight f32[8] cpu: the last dim of x (7) differs from the weight's size (8)").
 *
 * Conventions: CPU compute is fp32 (f32 inputs and outputs); index tensors are i32 or i64 and never get
 * gradients. "Last dim" ops (norms, softmax) work on the innermost axis of any-rank input. Linear weights
 * use nn.Linear's layout [out_features, in_features]. Attention tensors are [B, H, T, D]. */
#ifndef CG_AUTOGRAD_OPS_H
#define CG_AUTOGRAD_OPS_H

#include <stdbool.h>

#include "autograd/autograd.h"
#include "core/nn_attention.h"
#include "core/ops.h"
#include "core/rng.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------ primitive: elementwise */
/* Binary ops broadcast (NumPy rules); the gradient of a broadcast input is summed back to its shape. */
cg_tensor *cg_add(const cg_tensor *a, const cg_tensor *b);
cg_tensor *cg_sub(const cg_tensor *a, const cg_tensor *b);
cg_tensor *cg_mul(const cg_tensor *a, const cg_tensor *b);
cg_tensor *cg_div(const cg_tensor *a, const cg_tensor *b);
/* Elementwise max/min; at ties the gradient is split equally (as torch.maximum does). */
cg_tensor *cg_maximum(const cg_tensor *a, const cg_tensor *b);
cg_tensor *cg_minimum(const cg_tensor *a, const cg_tensor *b);

cg_tensor *cg_neg(const cg_tensor *x);
cg_tensor *cg_exp(const cg_tensor *x);
cg_tensor *cg_log(const cg_tensor *x);
cg_tensor *cg_tanh(const cg_tensor *x);
cg_tensor *cg_sigmoid(const cg_tensor *x);
cg_tensor *cg_sign(const cg_tensor *x); /* gradient 0 */
cg_tensor *cg_abs(const cg_tensor *x);  /* gradient sign(x), 0 at 0 */
cg_tensor *cg_sqrt(const cg_tensor *x);
cg_tensor *cg_square(const cg_tensor *x);
cg_tensor *cg_relu(const cg_tensor *x);
cg_tensor *cg_unary(cg_unary_op op, const cg_tensor *x);
/* x * scale + shift */
cg_tensor *cg_affine(const cg_tensor *x, float scale, float shift);
cg_tensor *cg_scale(const cg_tensor *x, float scale);
cg_tensor *cg_add_scalar(const cg_tensor *x, float c);
cg_tensor *cg_pow_scalar(const cg_tensor *x, float exponent);
/* The gradient passes where lo <= x <= hi, as in torch.clamp. */
cg_tensor *cg_clamp(const cg_tensor *x, float lo, float hi);
/* 1.0 where the comparison holds, else 0.0 (op is CG_OP_GREATER .. CG_OP_NOT_EQUAL); never has a gradient. */
cg_tensor *cg_compare(cg_binary_op op, const cg_tensor *a, const cg_tensor *b);
/* cond ? a : b with broadcasting; gradients flow to the chosen side. */
cg_tensor *cg_where(const cg_tensor *cond, const cg_tensor *a, const cg_tensor *b);

/* ------------------------------------------------------------------ primitive: reductions */
cg_tensor *cg_sum(const cg_tensor *x, int axis, bool keepdim);
cg_tensor *cg_mean(const cg_tensor *x, int axis, bool keepdim);
/* The gradient goes to the first maximal (minimal) element. */
cg_tensor *cg_max(const cg_tensor *x, int axis, bool keepdim);
cg_tensor *cg_min(const cg_tensor *x, int axis, bool keepdim);
/* Over all elements, to a 0-d tensor. */
cg_tensor *cg_sum_all(const cg_tensor *x);
cg_tensor *cg_mean_all(const cg_tensor *x);

/* ------------------------------------------------------------------ primitive: shape and indexing */
/* A view when the layout allows it, else a packed copy; the gradient is reshaped back. */
cg_tensor *cg_reshape(const cg_tensor *x, int ndim, const int64_t *shape);
cg_tensor *cg_permute(const cg_tensor *x, const int *perm);
cg_tensor *cg_transpose(const cg_tensor *x, int dim0, int dim1);
cg_tensor *cg_slice(const cg_tensor *x, int dim, int64_t start, int64_t end, int64_t step);
cg_tensor *cg_expand(const cg_tensor *x, int ndim, const int64_t *shape);
cg_tensor *cg_concat(int n, const cg_tensor *const *xs, int axis);
cg_tensor *cg_gather(const cg_tensor *x, int axis, const cg_tensor *index);
cg_tensor *cg_index_select(const cg_tensor *x, int axis, const cg_tensor *index);
/* weight [V, C], ids any shape -> [ids..., C]; the backward scatters into rows of weight in a fixed order
 * (deterministic). */
cg_tensor *cg_embedding(const cg_tensor *weight, const cg_tensor *ids);
/* Converts dtype; the gradient is converted back (float dtypes only carry gradients). */
cg_tensor *cg_cast(const cg_tensor *x, cg_dtype dtype);

/* ------------------------------------------------------------------ primitive: matmul */
/* op(a) @ op(b), batched with broadcasting over leading dims (see cg_matmul_into). */
cg_tensor *cg_matmul(const cg_tensor *a, const cg_tensor *b);
cg_tensor *cg_matmul_t(const cg_tensor *a, const cg_tensor *b, bool trans_a, bool trans_b);

/* ------------------------------------------------------------------ fused */
/* y = x @ w^T + bias (bias may be NULL), then GELU (tanh form) when gelu is set. x [..., in], w [out, in]. */
cg_tensor *cg_linear(const cg_tensor *x, const cg_tensor *w, const cg_tensor *bias, bool gelu);
/* LoRA linear: x @ w^T + bias + scale * dropout(x) @ A^T @ B^T, A [r, in], B [out, r]. dropout_p > 0 needs
 * rng (the mask is drawn from it); w and bias are usually frozen (no requires_grad). */
cg_tensor *cg_lora_linear(const cg_tensor *x, const cg_tensor *w, const cg_tensor *bias, const cg_tensor *lora_a,
                          const cg_tensor *lora_b, float scale, float dropout_p, cg_rng *rng);
/* Normalisations over the last dim, statistics in fp32; weight/bias [C]. bias may be NULL. */
cg_tensor *cg_layernorm(const cg_tensor *x, const cg_tensor *weight, const cg_tensor *bias, float eps);
cg_tensor *cg_rmsnorm(const cg_tensor *x, const cg_tensor *weight, float eps);
/* Pre-norm residual step in one pass: *sum_out = x + residual, returns norm(*sum_out). rms selects RMSNorm
 * (bias ignored) over LayerNorm. Both outputs are differentiable. */
cg_tensor *cg_residual_norm(const cg_tensor *x, const cg_tensor *residual, const cg_tensor *weight,
                            const cg_tensor *bias, float eps, bool rms, cg_tensor **sum_out);
/* 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) */
cg_tensor *cg_gelu(const cg_tensor *x);
cg_tensor *cg_silu(const cg_tensor *x);
/* silu(gate) * up */
cg_tensor *cg_swiglu(const cg_tensor *gate, const cg_tensor *up);
/* Rotary embedding, rotate-half (NeoX/Llama/Qwen) pairing (i, i + D/2), x [B, H, T, D] with D even.
 * Position of token t: positions[b, t] when positions (i32/i64 [B, T]) is given, else pos_offset + t.
 * Frequencies theta^(-2i/D). */
cg_tensor *cg_rope(const cg_tensor *x, float theta, int64_t pos_offset, const cg_tensor *positions);
/* RoPE with the full frequency config (Llama 3 scaling; see core/nn_attention.h). */
cg_tensor *cg_rope_scaled(const cg_tensor *x, const cg_rope_config *rope, int64_t pos_offset,
                          const cg_tensor *positions);
/* Causal scaled-dot-product attention with grouped-query heads.
 * q [B, Hq, T, D], k and v [B, Hkv, S, D] with Hq a multiple of Hkv (query head h reads kv head h / (Hq/Hkv)),
 * S >= T: the queries are the last T positions of the S keys (query t sees keys 0 .. S - T + t; a KV cache).
 * key_mask (optional, [B, S], nonzero = attend) removes padding keys; a query with no visible key outputs 0.
 * scale <= 0 means 1/sqrt(D). Computed in key tiles with an online softmax: no T x S buffer per head
 * beyond one tile. */
cg_tensor *cg_attention(const cg_tensor *q, const cg_tensor *k, const cg_tensor *v, const cg_tensor *key_mask,
                        float scale);
cg_tensor *cg_softmax(const cg_tensor *x, int axis);
cg_tensor *cg_log_softmax(const cg_tensor *x, int axis);
/* Mean cross-entropy over the rows whose target is not ignore_index. logits [N, V] (or [..., V] with
 * targets [...]), targets i32/i64. label_smoothing in [0, 1) (0 = off, the default PyTorch uses). Returns a
 * 0-d tensor; if every row is ignored the loss is 0 (not NaN). */
cg_tensor *cg_cross_entropy(const cg_tensor *logits, const cg_tensor *targets, int64_t ignore_index,
                            float label_smoothing);
/* Per-token log-probabilities of the taken tokens: log_softmax(hidden @ weight^T)[n, tokens[n]], computed over
 * the vocabulary in chunks of chunk_size rows of weight (0 = 4096) with an online log-sum-exp, so the
 * [N, V] logits are never materialised. hidden [..., C], weight [V, C], tokens [...] -> [...]. On CUDA (f32 or
 * bf16 inputs, cuda/nn_logprobs.cu) the result and the gradients are f32; only N x chunk logits exist at once. */
cg_tensor *cg_token_logprobs(const cg_tensor *hidden, const cg_tensor *weight, const cg_tensor *tokens,
                             int64_t chunk_size);
/* Inverted dropout: each element kept with probability 1 - p and scaled by 1/(1-p), the mask drawn from rng;
 * the identity when p == 0 (pass 0 for evaluation). */
cg_tensor *cg_dropout(const cg_tensor *x, float p, cg_rng *rng);

#ifdef __cplusplus
}
#endif
#endif
