// NCCL glue for core/comm.c (contract in cuda/comm_nccl.h). Compiled in every CUDA build; the NCCL calls
// exist only with CG_HAVE_NCCL (else every function fails with CG_ERR_UNSUPPORTED). Untested here: the
// development machine has no GPU, so this file is only compiled and linked.
#include <new>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <cuda_runtime.h>

#include "cuda/comm_nccl.h"
#include "cuda/common.cuh"
#include "cuda/runtime.h"

#ifdef CG_HAVE_NCCL
#include <nccl.h>


static_assert(sizeof(ncclUniqueId) == CG_NCCL_ID_BYTES, "the NCCL unique id has the size comm.c broadcasts");

struct nccl_state {
    ncclComm_t comm;
    int device;
    cudaEvent_t ready; // the compute stream's work the collective depends on
    cudaEvent_t done;  // the communication stream's work the compute stream waits for
};

static cg_status nccl_check(ncclResult_t r, const char *op) {
    if (r == ncclSuccess) return CG_OK;
    return cg_set_error(CG_ERR_COMM, "%s: %s", op, ncclGetErrorString(r));
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

extern "C" cg_status cg_nccl_unique_id(void *id) {
    ncclUniqueId u;
    cg_status s = nccl_check(ncclGetUniqueId(&u), "ncclGetUniqueId");
    if (s == CG_OK) memcpy(id, &u, sizeof u);
    return s;
}

extern "C" cg_status cg_nccl_init(int device, int nranks, int rank, const void *id, void **out) {
    *out = NULL;
    cg_status s = cg_cuda_check(cudaSetDevice(device), "nccl init: cudaSetDevice");
    if (s != CG_OK) return s;
    nccl_state *st = new (std::nothrow) nccl_state();
    if (!st) return cg_set_error(CG_ERR_OOM, "nccl init: out of memory");
    st->device = device;
    ncclUniqueId u;
    memcpy(&u, id, sizeof u);
    s = nccl_check(ncclCommInitRank(&st->comm, nranks, u, rank), "ncclCommInitRank");
    if (s == CG_OK) s = cg_cuda_check(cudaEventCreateWithFlags(&st->ready, cudaEventDisableTiming), "nccl init: event");
    if (s == CG_OK) s = cg_cuda_check(cudaEventCreateWithFlags(&st->done, cudaEventDisableTiming), "nccl init: event");
    if (s == CG_OK && (!cg_cuda_compute_stream() || !cg_cuda_comm_stream()))
        s = cg_set_error(CG_ERR_CUDA, "nccl init: cannot create the compute and communication streams");
    if (s != CG_OK) {
        if (st->comm) ncclCommAbort(st->comm);
        delete st;
        return s;
    }
    *out = st;
    return CG_OK;
}

extern "C" void cg_nccl_free(void *state) {
    nccl_state *st = (nccl_state *)state;
    if (!st) return;
    cudaStreamSynchronize(cg_cuda_comm_stream());
    ncclCommDestroy(st->comm);
    cudaEventDestroy(st->ready);
    cudaEventDestroy(st->done);
    cudaGetLastError();
    delete st;
}

extern "C" void cg_nccl_abort(void *state) {
    nccl_state *st = (nccl_state *)state;
    if (!st) return;
    ncclCommAbort(st->comm);
    cudaGetLastError();
    delete st;
}

extern "C" cg_status cg_nccl_start(void *state, int kind, const void *send, void *recv, size_t count, int bf16,
                                   int avg, int root) {
    nccl_state *st = (nccl_state *)state;
    if (!st) return cg_set_error(CG_ERR_INTERNAL, "nccl: the communicator is not initialised");
    cudaStream_t compute = cg_cuda_compute_stream(), comm = cg_cuda_comm_stream();
    // The buffers are written by kernels on the compute stream: the collective starts after them.
    cg_status s = cg_cuda_check(cudaEventRecord(st->ready, compute), "nccl: cudaEventRecord");
    if (s == CG_OK) s = cg_cuda_check(cudaStreamWaitEvent(comm, st->ready, 0), "nccl: cudaStreamWaitEvent");
    if (s != CG_OK) return s;
    ncclDataType_t t = bf16 ? ncclBfloat16 : ncclFloat;
    ncclRedOp_t op = avg ? ncclAvg : ncclSum;
    switch (kind) {
    case 0: return nccl_check(ncclAllReduce(send, recv, count, t, op, st->comm, comm), "ncclAllReduce");
    case 1: return nccl_check(ncclReduceScatter(send, recv, count, t, op, st->comm, comm), "ncclReduceScatter");
    case 2: return nccl_check(ncclAllGather(send, recv, count, t, st->comm, comm), "ncclAllGather");
    case 3: return nccl_check(ncclBroadcast(send, recv, count, t, root, st->comm, comm), "ncclBroadcast");
    default: return cg_set_error(CG_ERR_INTERNAL, "nccl: collective %d has no NCCL call", kind);
    }
}

extern "C" cg_status cg_nccl_wait(void *state, double timeout_s, char *why, size_t cap) {
    nccl_state *st = (nccl_state *)state;
    if (!st) {
        snprintf(why, cap, "the NCCL communicator is not initialised");
        return CG_ERR_INTERNAL;
    }
    cudaStream_t compute = cg_cuda_compute_stream(), comm = cg_cuda_comm_stream();
    double deadline = now_s() + timeout_s;
    for (;;) {
        cudaError_t q = cudaStreamQuery(comm);
        if (q == cudaSuccess) break;
        if (q != cudaErrorNotReady) {
            cudaGetLastError();
            snprintf(why, cap, "CUDA error on the communication stream: %s", cudaGetErrorString(q));
            return CG_ERR_CUDA;
        }
        ncclResult_t async_err = ncclSuccess;
        ncclCommGetAsyncError(st->comm, &async_err);
        if (async_err != ncclSuccess) {
            snprintf(why, cap, "NCCL reported %s (a peer failed)", ncclGetErrorString(async_err));
            ncclCommAbort(st->comm);
            st->comm = NULL;
            return CG_ERR_COMM;
        }
        if (now_s() > deadline) {
            snprintf(why, cap, "did not complete within the %g s timeout (another rank died or hangs); NCCL aborted",
                     timeout_s);
            ncclCommAbort(st->comm);
            st->comm = NULL;
            return CG_ERR_COMM;
        }
        struct timespec ts = {0, 100000};
        nanosleep(&ts, NULL);
    }
    cudaError_t e = cudaEventRecord(st->done, comm);
    if (e == cudaSuccess) e = cudaStreamWaitEvent(compute, st->done, 0);
    if (e != cudaSuccess) {
        cudaGetLastError();
        snprintf(why, cap, "ordering the compute stream after the collective: %s", cudaGetErrorString(e));
        return CG_ERR_CUDA;
    }
    return CG_OK;
}

#else // CUDA without NCCL

static cg_status no_nccl(void) {
    return cg_set_error(CG_ERR_UNSUPPORTED, "nccl: cgrad was built without NCCL");
}
extern "C" cg_status cg_nccl_unique_id(void *) { return no_nccl(); }
extern "C" cg_status cg_nccl_init(int, int, int, const void *, void **out) {
    *out = NULL;
    return no_nccl();
}
extern "C" void cg_nccl_free(void *) {}
extern "C" void cg_nccl_abort(void *) {}
extern "C" cg_status cg_nccl_start(void *, int, const void *, void *, size_t, int, int, int) { return no_nccl(); }
extern "C" cg_status cg_nccl_wait(void *, double, char *why, size_t cap) {
    snprintf(why, cap, "cgrad was built without NCCL");
    return no_nccl();
}

#endif
