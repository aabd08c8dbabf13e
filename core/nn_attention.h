/* CPU kernels of rotary position embedding (RoPE) and causal grouped-query attention, forward and backward,
 * over packed f32 arrays. The CUDA backend provides the same kernels and is tested against these.
 *
 * Layouts: x, q, out [B, H, T, D]; k, v [B, Hkv, S, D]; key_mask [B, S] bytes (nonzero = attend);
 * lse [B, Hq, T] (the per-row log-sum-exp the backward needs); positions [B, T]. */
#ifndef CG_NN_ATTENTION_H
#define CG_NN_ATTENTION_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- RoPE frequencies: inv_freq[i] = theta^(-2i/D), optionally rescaled as Llama 3 does ("rope_type":
 * "llama3"): with wavelength w = 2 pi / inv_freq, frequencies with w < original_max_pos / high_freq_factor are
 * kept, those with w > original_max_pos / low_freq_factor are divided by factor, and those in between are
 * blended: s = (original_max_pos / w - low) / (high - low), inv_freq = (1 - s) inv_freq / factor + s inv_freq. */
typedef struct cg_rope_config {
    float theta;
    float scaling_factor; /* 0 = no scaling */
    float low_freq_factor, high_freq_factor;
    int64_t original_max_pos;
} cg_rope_config;
double cg_rope_inv_freq(const cg_rope_config *c, int64_t i, int64_t D);

/* ---- RoPE, rotate-half (NeoX / Llama / Qwen2) pairing (i, i + D/2), D even. the angle pos * inv_freq[i] and its cos/sin are computed in double and the
 * cos/sin cast to f32 (more accurate than an f32 angle at large positions). pos = positions[b * T + t] when
 * positions is not NULL, else pos_offset + t.
 * out[i] = x[i] cos - x[i + D/2] sin, out[i + D/2] = x[i + D/2] cos + x[i] sin. out may equal x. */
void cg_cpu_rope_forward(float *out, const float *x, int64_t B, int64_t H, int64_t T, int64_t D,
                         const cg_rope_config *rope, int64_t pos_offset, const int64_t *positions);
/* dx = the inverse rotation of dy (the rotation is orthogonal). dx may equal dy. */
void cg_cpu_rope_backward(float *dx, const float *dy, int64_t B, int64_t H, int64_t T, int64_t D,
                          const cg_rope_config *rope, int64_t pos_offset, const int64_t *positions);

/* ---- causal attention with GQA, computed in tiles (flash-attention style) */
#define CG_ATTN_TILE_Q 64 /* query rows per work item */
#define CG_ATTN_TILE_K 64 /* keys per scores tile */

typedef struct cg_attention_dims {
    int64_t batch, q_heads, kv_heads; /* q_heads a multiple of kv_heads */
    int64_t q_len, kv_len, head_dim;  /* T <= S: query t sees keys 0 .. S - T + t */
    float scale;                      /* > 0, already resolved (1/sqrt(D) by default) */
} cg_attention_dims;

/* Scratch floats the forward needs with n_threads threads: one scores tile and two row vectors per thread,
 * independent of T and S. */
size_t cg_cpu_attention_forward_workspace(const cg_attention_dims *d, int n_threads);
/* out = softmax(scale q k^T + causal/padding mask) v per (batch, query head); a query with no visible key
 * gets out = 0 and lse = +inf. Parallel over (batch, head, block of CG_ATTN_TILE_Q query rows) with an
 * online softmax over key tiles; never holds more than one CG_ATTN_TILE_Q x CG_ATTN_TILE_K scores tile per
 * thread. key_mask may be NULL. The result does not depend on the thread count. */
void cg_cpu_attention_forward(float *out, float *lse, const float *q, const float *k, const float *v,
                              const uint8_t *key_mask, const cg_attention_dims *d, int n_threads,
                              float *workspace);

/* Scratch floats the backward needs: one float per query row (rowsum(dout * out)). */
size_t cg_cpu_attention_backward_workspace(const cg_attention_dims *d, int n_threads);
/* FlashAttention-2 style backward from out and lse: P = exp(scale q k^T - lse) is recomputed tile by tile.
 * dk/dv come from a pass parallel over (batch, kv head, key tile), summing over the query heads of the group;
 * dq from a pass parallel over (batch, query head, query tile). Every gradient element is written by one
 * work item in a fixed order, so results are deterministic and independent of the thread count. Any of dq,
 * dk, dv may be NULL to skip it. The outputs are overwritten (not accumulated into). */
void cg_cpu_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *q, const float *k,
                               const float *v, const float *out, const float *lse, const uint8_t *key_mask,
                               const cg_attention_dims *d, int n_threads, float *workspace);

#ifdef __cplusplus
}
#endif
#endif
