/* The MPI backend of the communicator: host buffers, MPI-3 non-blocking collectives polled against the
 * communicator's deadline (so a dead or hung rank gives an error instead of a hang). bf16 sums use a user
 * MPI_Op on 16-bit words that adds in fp32 and rounds to bf16. Without CG_HAVE_MPI every entry point fails
 * with CG_ERR_UNSUPPORTED, and cg_comm_mpi_launched still reports a launcher so that `mpirun -np 2` on a
 * build without MPI fails loudly instead of running two independent jobs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/comm_internal.h"

bool cg_comm_mpi_launched(void) {
    static const char *const size_vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS"};
    for (size_t i = 0; i < sizeof size_vars / sizeof size_vars[0]; i++)
        if (getenv(size_vars[i])) return true;
    if (getenv("PMIX_RANK")) return true;
    /* srun sets SLURM_STEP_NUM_TASKS for the tasks of a job step (a batch script alone does not). */
    return getenv("SLURM_PROCID") && getenv("SLURM_STEP_NUM_TASKS");
}

#ifdef CG_HAVE_MPI
#include <mpi.h>

typedef struct mpi_state {
    MPI_Comm comm;
    MPI_Op bf16_sum;
} mpi_state;

_Static_assert(sizeof(MPI_Request) <= sizeof(((cg_comm_request *)0)->impl), "MPI_Request fits a request's impl");

static void bf16_sum_fn(void *in, void *inout, int *len, MPI_Datatype *type) {
    (void)type;
    const uint16_t *a = in;
    uint16_t *b = inout;
    for (int i = 0; i < *len; i++) b[i] = cg_f32_to_bf16(cg_bf16_to_f32(a[i]) + cg_bf16_to_f32(b[i]));
}

static const char *mpi_error_text(int rc, char *buf, int cap) {
    int n = 0;
    if (MPI_Error_string(rc, buf, &n) != MPI_SUCCESS || n <= 0) snprintf(buf, (size_t)cap, "MPI error %d", rc);
    return buf;
}

cg_status cg_comm_mpi_init(cg_comm *c) {
    int inited = 0, rc;
    MPI_Initialized(&inited);
    if (!inited) {
        int provided = 0;
        rc = MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided);
        if (rc != MPI_SUCCESS) return cg_set_error(CG_ERR_COMM, "comm init: MPI_Init_thread failed (%d)", rc);
        c->mpi_initialised_here = true;
    }
    mpi_state *st = calloc(1, sizeof *st);
    if (!st) return cg_set_error(CG_ERR_OOM, "comm init: out of memory");
    /* Our own communicator, whose errors come back as return codes instead of aborting inside MPI. */
    MPI_Comm_dup(MPI_COMM_WORLD, &st->comm);
    MPI_Comm_set_errhandler(st->comm, MPI_ERRORS_RETURN);
    MPI_Comm_rank(st->comm, &c->rank);
    MPI_Comm_size(st->comm, &c->size);
    MPI_Comm node;
    rc = MPI_Comm_split_type(st->comm, MPI_COMM_TYPE_SHARED, c->rank, MPI_INFO_NULL, &node);
    if (rc == MPI_SUCCESS) {
        MPI_Comm_rank(node, &c->local_rank);
        MPI_Comm_size(node, &c->local_size);
        MPI_Comm_free(&node);
    } else {
        c->local_rank = c->rank;
        c->local_size = c->size;
    }
    MPI_Op_create(bf16_sum_fn, 1, &st->bf16_sum);
    c->mpi = st;
    return CG_OK;
}

void cg_comm_mpi_finalize(cg_comm *c) {
    mpi_state *st = c->mpi;
    if (st && !c->broken) {
        MPI_Op_free(&st->bf16_sum);
        MPI_Comm_free(&st->comm);
    }
    free(st);
    c->mpi = NULL;
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (c->mpi_initialised_here && !finalized && !c->broken) MPI_Finalize();
}

void cg_comm_mpi_abort(cg_comm *c, int code) {
    (void)c;
    MPI_Abort(MPI_COMM_WORLD, code);
}

/* Polls *req until it completes or the deadline passes. Sleeps between tests (growing to 1 ms) so a waiting
 * rank leaves the cores to ranks that are still computing. */
static cg_status poll(cg_comm *c, MPI_Request *req, cg_comm_kind k, int64_t count, cg_dtype dt) {
    double deadline = cg_comm_now() + c->timeout_s;
    long sleep_ns = 0;
    for (int spins = 0;; spins++) {
        int done = 0;
        int rc = MPI_Test(req, &done, MPI_STATUS_IGNORE);
        if (rc != MPI_SUCCESS) {
            char why[MPI_MAX_ERROR_STRING + 1];
            return cg_comm_fail(c, k, count, dt, mpi_error_text(rc, why, (int)sizeof why));
        }
        if (done) return CG_OK;
        if (cg_comm_now() > deadline) {
            char why[160];
            snprintf(why, sizeof why, "did not complete within the %g s timeout (another rank died or hangs)",
                     c->timeout_s);
            return cg_comm_fail(c, k, count, dt, why);
        }
        if (spins > 64) {
            sleep_ns = sleep_ns ? (sleep_ns * 2 > 1000000 ? 1000000 : sleep_ns * 2) : 10000;
            struct timespec ts = {0, sleep_ns};
            nanosleep(&ts, NULL);
        }
    }
}

static void divide(void *buf, int64_t count, cg_dtype dt, int size) {
    if (dt == CG_F32) {
        float *p = buf;
        for (int64_t i = 0; i < count; i++) p[i] /= (float)size;
    } else {
        uint16_t *p = buf;
        for (int64_t i = 0; i < count; i++) p[i] = cg_f32_to_bf16(cg_bf16_to_f32(p[i]) / (float)size);
    }
}

static int start(cg_comm *c, cg_comm_kind k, const void *send, void *recv, int count, cg_dtype dt, int root,
                 MPI_Request *req) {
    mpi_state *st = c->mpi;
    MPI_Datatype t = dt == CG_F32 ? MPI_FLOAT : MPI_UINT16_T;
    MPI_Op op = dt == CG_F32 ? MPI_SUM : st->bf16_sum;
    size_t nb = (size_t)count * cg_dtype_size(dt);
    switch (k) {
    case CG_COMM_KIND_ALLREDUCE:
        return MPI_Iallreduce(send == recv ? MPI_IN_PLACE : send, recv, count, t, op, st->comm, req);
    case CG_COMM_KIND_REDUCE_SCATTER: return MPI_Ireduce_scatter_block(send, recv, count, t, op, st->comm, req);
    case CG_COMM_KIND_ALLGATHER:
        if ((const char *)send == (const char *)recv + (size_t)c->rank * nb)
            return MPI_Iallgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, recv, count, t, st->comm, req);
        return MPI_Iallgather(send, count, t, recv, count, t, st->comm, req);
    case CG_COMM_KIND_BROADCAST: return MPI_Ibcast(recv, count, t, root, st->comm, req);
    case CG_COMM_KIND_BARRIER: return MPI_Ibarrier(st->comm, req);
    }
    return MPI_ERR_OP;
}

cg_status cg_comm_mpi_run(cg_comm *c, cg_comm_kind k, const void *send, void *recv, int64_t count, cg_dtype dt,
                          cg_comm_op op, int root) {
    if (!c->mpi) return cg_set_error(CG_ERR_INTERNAL, "comm %s: MPI is not initialised", cg_comm_kind_name(k));
    /* All-reduce and broadcast go in pieces that fit MPI's int counts; the others must fit whole. */
    const int64_t piece = (int64_t)1 << 30;
    bool splittable = k == CG_COMM_KIND_ALLREDUCE || k == CG_COMM_KIND_BROADCAST;
    if (count > INT32_MAX && !splittable)
        return cg_set_error(CG_ERR_INVALID_ARG, "comm %s: %lld elements per rank (at most %d)", cg_comm_kind_name(k),
                            (long long)count, INT32_MAX);
    size_t es = cg_dtype_size(dt);
    int64_t done = 0;
    do {
        int64_t n = count - done > piece ? piece : count - done;
        const char *s = send ? (const char *)send + (splittable ? (size_t)done * es : 0) : NULL;
        char *r = recv ? (char *)recv + (splittable ? (size_t)done * es : 0) : NULL;
        MPI_Request req;
        int rc = start(c, k, s, r, (int)n, dt, root, &req);
        if (rc != MPI_SUCCESS) {
            char why[MPI_MAX_ERROR_STRING + 1];
            return cg_comm_fail(c, k, count, dt, mpi_error_text(rc, why, (int)sizeof why));
        }
        cg_status st = poll(c, &req, k, count, dt);
        if (st != CG_OK) return st;
        done += n;
    } while (done < count);
    if (op == CG_COMM_AVG && (k == CG_COMM_KIND_ALLREDUCE || k == CG_COMM_KIND_REDUCE_SCATTER))
        divide(recv, count, dt, c->size);
    return CG_OK;
}

cg_status cg_comm_mpi_istart(cg_comm *c, cg_comm_request *req) {
    if (!c->mpi) return cg_set_error(CG_ERR_INTERNAL, "comm all-reduce: MPI is not initialised");
    MPI_Request r;
    int rc = start(c, CG_COMM_KIND_ALLREDUCE, req->buf, req->buf, (int)req->count, req->dtype, 0, &r);
    if (rc != MPI_SUCCESS) {
        char why[MPI_MAX_ERROR_STRING + 1];
        return cg_comm_fail(c, CG_COMM_KIND_ALLREDUCE, req->count, req->dtype, mpi_error_text(rc, why, (int)sizeof why));
    }
    memcpy(req->impl, &r, sizeof r);
    return CG_OK;
}

void cg_comm_mpi_test(cg_comm *c, cg_comm_request *req) {
    (void)c;
    MPI_Request r;
    memcpy(&r, req->impl, sizeof r);
    int done = 0;
    /* A completed request becomes MPI_REQUEST_NULL, which later tests and waits accept. */
    MPI_Test(&r, &done, MPI_STATUS_IGNORE);
    memcpy(req->impl, &r, sizeof r);
}

cg_status cg_comm_mpi_wait(cg_comm *c, cg_comm_request *req) {
    MPI_Request r;
    memcpy(&r, req->impl, sizeof r);
    cg_status s = poll(c, &r, CG_COMM_KIND_ALLREDUCE, req->count, req->dtype);
    memcpy(req->impl, &r, sizeof r);
    if (s != CG_OK) return s;
    req->active = false;
    if (req->op == CG_COMM_AVG) divide(req->buf, req->count, req->dtype, c->size);
    return CG_OK;
}

cg_status cg_comm_mpi_bcast_bytes(cg_comm *c, void *buf, int n) {
    mpi_state *st = c->mpi;
    MPI_Request req;
    int rc = MPI_Ibcast(buf, n, MPI_BYTE, 0, st->comm, &req);
    if (rc != MPI_SUCCESS) return cg_comm_fail(c, CG_COMM_KIND_BROADCAST, n, CG_U8, "MPI_Ibcast failed");
    return poll(c, &req, CG_COMM_KIND_BROADCAST, n, CG_U8);
}

cg_status cg_comm_mpi_sum_f64(cg_comm *c, double *v, int n) {
    mpi_state *st = c->mpi;
    MPI_Request req;
    int rc = MPI_Iallreduce(MPI_IN_PLACE, v, n, MPI_DOUBLE, MPI_SUM, st->comm, &req);
    if (rc != MPI_SUCCESS) return cg_comm_fail(c, CG_COMM_KIND_ALLREDUCE, n, CG_F32, "MPI_Iallreduce (f64) failed");
    return poll(c, &req, CG_COMM_KIND_ALLREDUCE, n, CG_F32);
}

#else /* no MPI in this build */

static cg_status no_mpi(void) {
    return cg_set_error(CG_ERR_UNSUPPORTED, "comm: this process was started by an MPI launcher (mpirun/srun) but "
                        "cgrad was built without MPI (install libopenmpi-dev and rebuild)");
}

cg_status cg_comm_mpi_init(cg_comm *c) {
    (void)c;
    return no_mpi();
}
void cg_comm_mpi_finalize(cg_comm *c) { (void)c; }
void cg_comm_mpi_abort(cg_comm *c, int code) {
    (void)c;
    exit(code);
}
cg_status cg_comm_mpi_run(cg_comm *c, cg_comm_kind k, const void *send, void *recv, int64_t count, cg_dtype dt,
                          cg_comm_op op, int root) {
    (void)c, (void)k, (void)send, (void)recv, (void)count, (void)dt, (void)op, (void)root;
    return no_mpi();
}
cg_status cg_comm_mpi_istart(cg_comm *c, cg_comm_request *req) {
    (void)c, (void)req;
    return no_mpi();
}
void cg_comm_mpi_test(cg_comm *c, cg_comm_request *req) { (void)c, (void)req; }
cg_status cg_comm_mpi_wait(cg_comm *c, cg_comm_request *req) {
    (void)c, (void)req;
    return no_mpi();
}
cg_status cg_comm_mpi_bcast_bytes(cg_comm *c, void *buf, int n) {
    (void)c, (void)buf, (void)n;
    return no_mpi();
}
cg_status cg_comm_mpi_sum_f64(cg_comm *c, double *v, int n) {
    (void)c, (void)v, (void)n;
    return no_mpi();
}

#endif
