/* The communicator's layout and the backend entry points, shared by core/comm.c (the single backend,
 * checks, dispatch), core/comm_mpi.c (MPI) and the NCCL glue (cuda/comm_nccl.h). */
#ifndef CG_COMM_INTERNAL_H
#define CG_COMM_INTERNAL_H

#include "core/comm.h"

/* The collectives, as the backends number them. */
typedef enum cg_comm_kind {
    CG_COMM_KIND_ALLREDUCE = 0,
    CG_COMM_KIND_REDUCE_SCATTER = 1,
    CG_COMM_KIND_ALLGATHER = 2,
    CG_COMM_KIND_BROADCAST = 3,
    CG_COMM_KIND_BARRIER = 4
} cg_comm_kind;

struct cg_comm {
    cg_comm_backend backend;
    int rank, size, local_rank, local_size;
    double timeout_s;
    bool broken;
    bool is_static;           /* the single communicator */
    bool mpi_initialised_here; /* cg_comm_free finalises MPI */
    void *mpi;                /* comm_mpi.c's state (the duplicated world communicator) */
    void *nccl;               /* the NCCL glue's state */
    int cuda_device;          /* -1 without NCCL */
};

/* "all-reduce", "reduce-scatter", ... for messages. */
const char *cg_comm_kind_name(cg_comm_kind k);
/* Marks c broken and records the CG_ERR_COMM message for a collective that failed or timed out. */
cg_status cg_comm_fail(cg_comm *c, cg_comm_kind k, int64_t count, cg_dtype dt, const char *why);

/* ---- MPI (core/comm_mpi.c; without CG_HAVE_MPI every call fails with CG_ERR_UNSUPPORTED) ---- */
/* True when a launcher's environment variables say this process is one rank of several. */
bool cg_comm_mpi_launched(void);
/* MPI_Init (unless already initialised), then rank, size, local rank and local size into c. */
cg_status cg_comm_mpi_init(cg_comm *c);
void cg_comm_mpi_finalize(cg_comm *c);
void cg_comm_mpi_abort(cg_comm *c, int code);
/* A blocking collective on host buffers, polled against c's deadline. send may equal recv (in place). */
cg_status cg_comm_mpi_run(cg_comm *c, cg_comm_kind k, const void *send, void *recv, int64_t count, cg_dtype dt,
                          cg_comm_op op, int root);
cg_status cg_comm_mpi_istart(cg_comm *c, cg_comm_request *req);
void cg_comm_mpi_test(cg_comm *c, cg_comm_request *req);
cg_status cg_comm_mpi_wait(cg_comm *c, cg_comm_request *req);
/* Bytes broadcast from rank 0 (the NCCL unique id). */
cg_status cg_comm_mpi_bcast_bytes(cg_comm *c, void *buf, int n);
/* Sum of doubles over the ranks. */
cg_status cg_comm_mpi_sum_f64(cg_comm *c, double *v, int n);

/* Seconds on a monotonic clock. */
double cg_comm_now(void);

#endif
