/* Ops of the fixed-shape decode step (models/generate.c captures one in a CUDA graph and replays it): CUDA
 * tensors only, under no-grad only (nothing is recorded), and none of them reads device data on the host or
 * waits for the GPU, so a step built from them (plus matmuls, norms, elementwise ops and cg_attention with a
 * device u8 mask) can be captured. What changes between steps (token ids, positions, the cache column) is
 * read from device memory by the kernels. */
#ifndef CG_OPS_DECODE_H
#define CG_OPS_DECODE_H

#include "autograd/ops.h"
#include "core/nn_attention.h"

#ifdef __cplusplus
extern "C" {
#endif

/* weight[ids] as cg_embedding ([..., C], weight's dtype) with ids (i32/i64) on weight's device NOT checked
 * against the vocabulary (an id outside it gives a zero row): for ids the device produced itself. */
cg_tensor *cg_decode_embedding(const cg_tensor *weight, const cg_tensor *ids);

/* The RoPE frequency table of a config and head dim D: D / 2 doubles (cg_rope_inv_freq) uploaded once into
 * a u8 tensor of a's device, for cg_decode_rope. */
cg_tensor *cg_decode_rope_table(cg_arena *a, const cg_rope_config *rope, int64_t D);

/* RoPE of x [B, H, T, D] at positions (i64 [B, T], packed, on x's device) with the table of
 * cg_decode_rope_table: the rotation cg_rope_scaled computes, without copying anything from the host. */
cg_tensor *cg_decode_rope(const cg_tensor *x, const cg_tensor *table, const cg_tensor *positions);

/* Writes x [B, H, T, D] into the cache store [B, H, L, D] (same device) at columns *pos .. *pos + T - 1, pos
 * an i64 [1] device tensor read by the kernel (columns outside [0, L) are skipped). x is converted to
 * store's dtype when they differ. */
cg_status cg_decode_cache_write(cg_tensor *store, const cg_tensor *x, const cg_tensor *pos);

#ifdef __cplusplus
}
#endif
#endif
