/* Kernels of the fixed-shape decode step and the CUDA graph that captures it (models/generate.c). Every
 * kernel here reads what changes from step to step (token ids, positions, the cache column) from device
 * memory and none waits for the GPU or copies from host memory, so one step can be captured once with
 * cudaStreamBeginCapture and replayed with cudaGraphLaunch. All run on the compute stream. */
#ifndef CG_CUDA_DECODE_H
#define CG_CUDA_DECODE_H

#include <stddef.h>
#include <stdint.h>

#include "core/dtype.h"
#include "core/error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* out[i, :] = weight[ids[i], :] for i < n: weight [rows, C] packed (dtype f32/bf16, out the same), ids i32 or
 * i64 on the device. An id outside [0, rows) gives a zero row (the caller guarantees the range: nothing is
 * checked on the host, as that would wait for the GPU). */
cg_status cg_cuda_decode_embedding(cg_dtype dt, void *out, const void *weight, int64_t rows, int64_t C,
                                   cg_dtype id_dtype, const void *ids, int64_t n);

/* store [B, H, L, D] and x [B, H, T, D], both packed, same dtype (f32/bf16): store[b, h, *pos + t, :] =
 * x[b, h, t, :], *pos read on the device (int64); columns outside [0, L) are not written. */
cg_status cg_cuda_decode_cache_write(cg_dtype dt, void *store, const void *x, int64_t B, int64_t H, int64_t L,
                                     int64_t T, int64_t D, const int64_t *pos);

/* RoPE forward as cg_cuda_rope_forward with positions (device int64 [B, T]), but its frequency table
 * inv_freq [D / 2] (double, cg_rope_inv_freq) read from device memory instead of copied from the host each
 * call. x and out [B, H, T, D] packed. */
cg_status cg_cuda_decode_rope(cg_dtype dt, void *out, const void *x, int64_t B, int64_t H, int64_t T, int64_t D,
                              const double *inv_freq, const int64_t *positions);

/* ---- CUDA graphs of the compute stream ---- */
typedef struct cg_cuda_graph cg_cuda_graph;
/* Starts capturing the compute stream (cudaStreamCaptureModeThreadLocal). */
cg_status cg_cuda_graph_capture_begin(void);
/* Ends the capture started by cg_cuda_graph_capture_begin and instantiates it. Always leaves capture mode;
 * on failure *out is NULL, the CUDA error slot is cleared and the status names what failed. */
cg_status cg_cuda_graph_capture_end(cg_cuda_graph **out);
/* Replays the graph on the compute stream (asynchronous). */
cg_status cg_cuda_graph_launch(cg_cuda_graph *g);
void cg_cuda_graph_free(cg_cuda_graph *g);

#ifdef __cplusplus
}
#endif
#endif
