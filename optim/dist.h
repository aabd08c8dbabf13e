/* Data parallelism: the parameters broadcast from rank 0, and the gradients averaged over the ranks in
 * buckets overlapped with backward (PyTorch DDP's reducer, llm.c's contiguous gradient buffer).
 *
 * ---- Layout ----
 * cg_grad_sync_create gives every parameter's gradient (t->grad) a slice of one contiguous f32 buffer on the
 * parameters' device, laid out last parameter first (the list's reverse: for a model's trainable list, the
 * last layers, whose gradients backward finishes first, come first). The buffer is cut into buckets of
 * consecutive parameters of about bucket_bytes each (default 25 MB; a larger parameter gets a bucket of its
 * own), so each bucket is one contiguous all-reduce with no packing.
 *
 * ---- One step ----
 *   cg_grad_sync_begin(gs, sync)   before the backward; sync = false on accumulation micro-steps before the
 *                                  last: their gradients just accumulate, with no communication at all.
 *   backward                       (with sync) autograd's gradient-ready hook counts each bucket's final
 *                                  gradients; when a bucket is complete it is handed to a non-blocking
 *                                  all-reduce (average) on the communication stream (MPI_Iallreduce, or
 *                                  NCCL on the comm stream), in bucket order on every rank, while backward
 *                                  goes on with earlier layers.
 *   cg_grad_sync_finish(gs)        starts the buckets still waiting (parameters the graph did not use) and
 *                                  waits for all: every rank then holds the gradients averaged over ranks.
 * With one rank nothing is launched and finish returns at once. The averaged gradient of the per-rank
 * mean losses equals the gradient of the mean loss over all ranks' examples when every rank's loss is the
 * mean over the same number of examples (same B, T). */
#ifndef CG_DIST_H
#define CG_DIST_H

#include <stdbool.h>
#include <stdint.h>

#include "core/comm.h"
#include "core/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CG_GRAD_BUCKET_DEFAULT_BYTES (25ll * 1000 * 1000)

/* Rank 0's values of every parameter to every rank (start of training: identical replicas). */
cg_status cg_dist_broadcast_params(cg_comm *comm, int n, cg_tensor *const *params);

typedef struct cg_grad_sync cg_grad_sync;

/* Over params (f32, contiguous, one device; the list is copied, the tensors must outlive gs). Existing
 * gradient values are kept (copied into the buffer). bucket_bytes 0 = CG_GRAD_BUCKET_DEFAULT_BYTES. */
cg_status cg_grad_sync_create(cg_comm *comm, int n, cg_tensor *const *params, int64_t bucket_bytes,
                              cg_grad_sync **out);
void cg_grad_sync_free(cg_grad_sync *gs);
cg_status cg_grad_sync_begin(cg_grad_sync *gs, bool sync);
cg_status cg_grad_sync_finish(cg_grad_sync *gs);
int cg_grad_sync_num_buckets(const cg_grad_sync *gs);
/* Buckets launched during the last backward (before finish): how much of the reduction overlapped. */
int cg_grad_sync_overlapped(const cg_grad_sync *gs);
/* The contiguous gradient buffer and its element count. */
float *cg_grad_sync_buffer(const cg_grad_sync *gs, int64_t *count);

#ifdef __cplusplus
}
#endif
#endif
