/* NCCL behind C linkage, for core/comm.c (compiled in cuda/comm_nccl.cu; core calls these only when built
 * with CG_HAVE_CUDA and CG_HAVE_NCCL). Collectives run on the communication stream (cg_cuda_rt_stream(1))
 * after the work queued so far on the compute stream; waits poll the stream and ncclCommGetAsyncError
 * against a deadline and abort the NCCL communicator when it passes. */
#ifndef CG_CUDA_COMM_NCCL_H
#define CG_CUDA_COMM_NCCL_H

#include <stddef.h>

#include "core/error.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CG_NCCL_ID_BYTES 128

/* Rank 0 makes the id that every rank passes to cg_nccl_init (after broadcasting it). */
cg_status cg_nccl_unique_id(void *id);
/* cudaSetDevice(device), then ncclCommInitRank; *state receives the communicator. */
cg_status cg_nccl_init(int device, int nranks, int rank, const void *id, void **state);
void cg_nccl_free(void *state);
void cg_nccl_abort(void *state);
/* Queues a collective (kind as cg_comm_kind; bf16: 1 for bf16, 0 for f32; avg: 1 for average) and returns. */
cg_status cg_nccl_start(void *state, int kind, const void *send, void *recv, size_t count, int bf16, int avg,
                        int root);
/* Waits until everything queued on the communication stream is done, then makes the compute stream wait
 * for it; on a NCCL error or after timeout_s seconds aborts the communicator and fails, describing why in
 * why (cap bytes). */
cg_status cg_nccl_wait(void *state, double timeout_s, char *why, size_t cap);

#ifdef __cplusplus
}
#endif
#endif
