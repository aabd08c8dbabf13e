/* The communicator: collectives between the ranks of a data-parallel job.
 *
 * ---- Backends ----
 *   single  one process: every collective is the identity (all-reduce of one rank, a gather of one shard),
 *           so library code calls cg_comm always and a plain run pays nothing.
 *   mpi     CPU buffers over MPI (MPI-3 non-blocking collectives); built with CG_HAVE_MPI.
 *   nccl    CUDA buffers over NCCL (one GPU per rank, the GPU = the rank's index on its node), CPU buffers
 *           still over MPI; the NCCL unique id is broadcast over MPI. Built with CG_HAVE_NCCL (and MPI).
 * Which one cg_comm_init picks comes from the environment: a launcher's variables (OMPI_COMM_WORLD_SIZE,
 * PMI_SIZE, PMIX_RANK, SLURM_STEP_NUM_TASKS with SLURM_PROCID) mean "started by mpirun/srun" and MPI is
 * initialised; otherwise the single backend (a plain `cgrad train` is unchanged). NCCL is added on top when
 * asked for (opts.use_nccl), the build has it and the node has GPUs.
 *
 * ---- Collectives ----
 * On buffers of `count` elements of dtype f32 or bf16, on `device` (CPU: MPI; CUDA: NCCL). In place where the
 * name says so. Every rank must call the same collectives in the same order with the same sizes.
 *   all-reduce      buf = op over ranks of buf  (sum; avg = sum / size, in fp32 for f32, rounded per step
 *                   for bf16, whose sums on MPI are made in fp32 and rounded to bf16 after each addition)
 *   reduce-scatter  recv[count] = op over ranks of send[rank * count ..+count]  (send holds size * count)
 *   all-gather      recv[r * count ..+count] = rank r's send[count]
 *   broadcast       buf = root's buf
 *   barrier
 * The non-blocking all-reduce (cg_comm_iallreduce + cg_comm_wait) is what the data-parallel trainer uses to
 * overlap gradient buckets with backward.
 *
 * ---- Faults ----
 * No collective waits forever: each is started non-blocking and polled against a deadline of timeout_s
 * seconds (NCCL: its asynchronous error is polled too). When the deadline passes or a peer fails, the
 * call returns CG_ERR_COMM with a message naming the collective, its size, this rank and the timeout; the
 * communicator is then broken (every later call fails at once). MPI's state cannot be recovered from
 * that, so the caller prints the message and calls cg_comm_abort, which ends every rank of the job
 * (MPI_Abort; NCCL's communicator is aborted first). */
#ifndef CG_COMM_H
#define CG_COMM_H

#include <stdbool.h>
#include <stdint.h>

#include "core/device.h"
#include "core/dtype.h"
#include "core/error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum cg_comm_backend { CG_COMM_SINGLE = 0, CG_COMM_MPI = 1, CG_COMM_NCCL = 2 } cg_comm_backend;
typedef enum cg_comm_op { CG_COMM_SUM = 0, CG_COMM_AVG = 1 } cg_comm_op;

#define CG_COMM_DEFAULT_TIMEOUT_S 600.0

typedef struct cg_comm_options {
    double timeout_s; /* deadline of every collective; 0 = CG_COMM_DEFAULT_TIMEOUT_S */
    bool use_nccl;    /* also set up NCCL for CUDA buffers (when built with it and GPUs exist) */
} cg_comm_options;

typedef struct cg_comm cg_comm;

/* The communicator the environment asks for (see above). Call once per process, before other threads
 * start; free it with cg_comm_free (which finalises MPI when this call initialised it). */
cg_status cg_comm_init(const cg_comm_options *opts, cg_comm **out);
/* The single-process communicator (static; cg_comm_free ignores it). */
cg_comm *cg_comm_single(void);
void cg_comm_free(cg_comm *c);
/* Ends the whole job now (MPI_Abort with code on an MPI communicator, after aborting NCCL); a single
 * process simply exits with code. Prints nothing: print the error first. */
void cg_comm_abort(cg_comm *c, int code);

int cg_comm_rank(const cg_comm *c);
int cg_comm_size(const cg_comm *c);
/* This rank's index among the ranks of its node, and how many ranks the node has. */
int cg_comm_local_rank(const cg_comm *c);
int cg_comm_local_size(const cg_comm *c);
cg_comm_backend cg_comm_get_backend(const cg_comm *c);
/* "single", "mpi", "nccl" */
const char *cg_comm_backend_name(cg_comm_backend b);
double cg_comm_timeout(const cg_comm *c);
/* Changes the deadline of later collectives (> 0 seconds). */
cg_status cg_comm_set_timeout(cg_comm *c, double seconds);
/* True once a collective failed or timed out. */
bool cg_comm_broken(const cg_comm *c);
/* The GPU this rank uses with NCCL, or -1. */
int cg_comm_cuda_device(const cg_comm *c);

cg_status cg_comm_allreduce(cg_comm *c, cg_device dev, void *buf, int64_t count, cg_dtype dt, cg_comm_op op);
cg_status cg_comm_reduce_scatter(cg_comm *c, cg_device dev, const void *send, void *recv, int64_t count, cg_dtype dt,
                                 cg_comm_op op);
cg_status cg_comm_allgather(cg_comm *c, cg_device dev, const void *send, void *recv, int64_t count, cg_dtype dt);
cg_status cg_comm_broadcast(cg_comm *c, cg_device dev, void *buf, int64_t count, cg_dtype dt, int root);
cg_status cg_comm_barrier(cg_comm *c);
/* Sums/averages a few host doubles over the ranks (statistics: token counts, losses, rewards); exact
 * double addition in rank order is not promised, only the same result on every rank. */
cg_status cg_comm_allreduce_f64(cg_comm *c, double *values, int n, cg_comm_op op);

/* A non-blocking all-reduce in flight. Filled by cg_comm_iallreduce, finished by cg_comm_wait. */
typedef struct cg_comm_request {
    bool active;
    cg_device device;
    void *buf;
    int64_t count;
    cg_dtype dtype;
    cg_comm_op op;
    uint64_t impl[4]; /* the backend's handle (an MPI_Request, a CUDA event) */
} cg_comm_request;

/* Starts an in-place all-reduce of buf (at most INT32_MAX elements) and returns at once; buf must not be
 * touched until cg_comm_wait. Requests must be started in the same order on every rank. */
cg_status cg_comm_iallreduce(cg_comm *c, cg_device dev, void *buf, int64_t count, cg_dtype dt, cg_comm_op op,
                             cg_comm_request *req);
/* Lets the backend progress a started request without blocking (MPI progresses only inside its calls). */
void cg_comm_progress(cg_comm *c, cg_comm_request *req);
/* Waits (against the deadline) until the request is done; applies avg's division. */
cg_status cg_comm_wait(cg_comm *c, cg_comm_request *req);

#ifdef __cplusplus
}
#endif
#endif
