/* The communicator: the single backend, argument checks, and dispatch to MPI (host buffers) or NCCL (CUDA
 * buffers). The contract is in core/comm.h. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/comm_internal.h"

#if defined(CG_HAVE_CUDA) && defined(CG_HAVE_NCCL)
#include "cuda/comm_nccl.h"
#define CG_COMM_NCCL_BUILT 1
#else
#define CG_COMM_NCCL_BUILT 0
#endif
#ifdef CG_HAVE_CUDA
#include "cuda/runtime.h"
#endif

static cg_comm single_comm = {.backend = CG_COMM_SINGLE,
                              .rank = 0,
                              .size = 1,
                              .local_rank = 0,
                              .local_size = 1,
                              .timeout_s = CG_COMM_DEFAULT_TIMEOUT_S,
                              .is_static = true,
                              .cuda_device = -1};

double cg_comm_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

const char *cg_comm_kind_name(cg_comm_kind k) {
    switch (k) {
    case CG_COMM_KIND_ALLREDUCE: return "all-reduce";
    case CG_COMM_KIND_REDUCE_SCATTER: return "reduce-scatter";
    case CG_COMM_KIND_ALLGATHER: return "all-gather";
    case CG_COMM_KIND_BROADCAST: return "broadcast";
    case CG_COMM_KIND_BARRIER: return "barrier";
    }
    return "collective";
}

const char *cg_comm_backend_name(cg_comm_backend b) {
    switch (b) {
    case CG_COMM_SINGLE: return "single";
    case CG_COMM_MPI: return "mpi";
    case CG_COMM_NCCL: return "nccl";
    }
    return "unknown";
}

cg_status cg_comm_fail(cg_comm *c, cg_comm_kind k, int64_t count, cg_dtype dt, const char *why) {
    c->broken = true;
    if (k == CG_COMM_KIND_BARRIER)
        return cg_set_error(CG_ERR_COMM, "comm: barrier on rank %d of %d: %s", c->rank, c->size, why);
    return cg_set_error(CG_ERR_COMM, "comm: %s of %lld %s elements on rank %d of %d: %s", cg_comm_kind_name(k),
                        (long long)count, cg_dtype_name(dt), c->rank, c->size, why);
}

/* ------------------------------------------------------------------ lifetime */

cg_comm *cg_comm_single(void) { return &single_comm; }

cg_status cg_comm_init(const cg_comm_options *opts, cg_comm **out) {
    if (!out) return cg_set_error(CG_ERR_INVALID_ARG, "comm init: NULL output");
    *out = NULL;
    cg_comm_options o = {0};
    if (opts) o = *opts;
    if (!(o.timeout_s >= 0.0) || !isfinite(o.timeout_s))
        return cg_set_error(CG_ERR_INVALID_ARG, "comm init: timeout %g s must be finite and >= 0", o.timeout_s);
    if (o.timeout_s == 0.0) o.timeout_s = CG_COMM_DEFAULT_TIMEOUT_S;
    if (!cg_comm_mpi_launched()) {
        single_comm.timeout_s = o.timeout_s;
        *out = &single_comm;
        return CG_OK;
    }
    cg_comm *c = calloc(1, sizeof *c);
    if (!c) return cg_set_error(CG_ERR_OOM, "comm init: out of memory");
    c->backend = CG_COMM_MPI;
    c->timeout_s = o.timeout_s;
    c->cuda_device = -1;
    cg_status s = cg_comm_mpi_init(c);
    if (s != CG_OK) {
        free(c);
        return s;
    }
#if CG_COMM_NCCL_BUILT
    if (o.use_nccl && cg_cuda_rt_device_count() > 0) {
        int ndev = cg_cuda_rt_device_count();
        if (c->local_size > ndev) {
            s = cg_set_error(CG_ERR_DEVICE, "comm init: %d ranks on this node but %d GPUs (NCCL needs one GPU per "
                             "rank)", c->local_size, ndev);
        } else {
            /* The device must be set before the communicator is made (NCCL docs, one device per process). */
            unsigned char id[CG_NCCL_ID_BYTES];
            memset(id, 0, sizeof id);
            if (c->rank == 0) s = cg_nccl_unique_id(id);
            /* Every rank joins the broadcast even when rank 0 failed, so nobody waits for it. */
            int ok = s == CG_OK;
            double flag = ok ? 0.0 : 1.0;
            cg_status bs = cg_comm_mpi_bcast_bytes(c, id, (int)sizeof id);
            if (bs == CG_OK) bs = cg_comm_mpi_sum_f64(c, &flag, 1);
            if (bs != CG_OK) s = bs;
            else if (flag != 0.0 && s == CG_OK)
                s = cg_set_error(CG_ERR_COMM, "comm init: rank 0 could not make the NCCL unique id");
            if (s == CG_OK) s = cg_nccl_init(c->local_rank, c->size, c->rank, id, &c->nccl);
            if (s == CG_OK) {
                c->backend = CG_COMM_NCCL;
                c->cuda_device = c->local_rank;
            }
        }
        if (s != CG_OK) {
            cg_error_context("comm init (rank %d of %d): ", c->rank, c->size);
            cg_comm_free(c);
            return s;
        }
    }
#else
    (void)o.use_nccl;
#endif
    *out = c;
    return CG_OK;
}

void cg_comm_free(cg_comm *c) {
    if (!c || c->is_static) return;
#if CG_COMM_NCCL_BUILT
    if (c->nccl) {
        if (c->broken)
            cg_nccl_abort(c->nccl);
        else
            cg_nccl_free(c->nccl);
    }
#endif
    cg_comm_mpi_finalize(c);
    free(c);
}

void cg_comm_abort(cg_comm *c, int code) {
    if (code == 0) code = 1;
    if (c && !c->is_static) {
#if CG_COMM_NCCL_BUILT
        if (c->nccl) cg_nccl_abort(c->nccl);
        c->nccl = NULL;
#endif
        fflush(stdout);
        fflush(stderr);
        cg_comm_mpi_abort(c, code);
    }
    exit(code);
}

int cg_comm_rank(const cg_comm *c) { return c ? c->rank : 0; }
int cg_comm_size(const cg_comm *c) { return c ? c->size : 1; }
int cg_comm_local_rank(const cg_comm *c) { return c ? c->local_rank : 0; }
int cg_comm_local_size(const cg_comm *c) { return c ? c->local_size : 1; }
cg_comm_backend cg_comm_get_backend(const cg_comm *c) { return c ? c->backend : CG_COMM_SINGLE; }
double cg_comm_timeout(const cg_comm *c) { return c ? c->timeout_s : CG_COMM_DEFAULT_TIMEOUT_S; }
bool cg_comm_broken(const cg_comm *c) { return c && c->broken; }
int cg_comm_cuda_device(const cg_comm *c) { return c ? c->cuda_device : -1; }

cg_status cg_comm_set_timeout(cg_comm *c, double seconds) {
    if (!c) return cg_set_error(CG_ERR_INVALID_ARG, "comm: NULL communicator");
    if (!(seconds > 0.0) || !isfinite(seconds))
        return cg_set_error(CG_ERR_INVALID_ARG, "comm: timeout %g s must be finite and > 0", seconds);
    c->timeout_s = seconds;
    return CG_OK;
}

/* ------------------------------------------------------------------ collectives */

static cg_status check_args(const cg_comm *c, cg_comm_kind k, cg_device dev, const void *a, const void *b,
                            int64_t count, cg_dtype dt) {
    const char *name = cg_comm_kind_name(k);
    if (!c) return cg_set_error(CG_ERR_INVALID_ARG, "comm %s: NULL communicator", name);
    if (c->broken)
        return cg_set_error(CG_ERR_COMM, "comm %s on rank %d: the communicator is broken by an earlier failure",
                            name, c->rank);
    if (count < 0 || (count > 0 && (!a || !b)))
        return cg_set_error(CG_ERR_INVALID_ARG, "comm %s: %lld elements with a NULL buffer", name, (long long)count);
    if (dt != CG_F32 && dt != CG_BF16)
        return cg_set_error(CG_ERR_DTYPE, "comm %s: dtype %s (f32 and bf16 only)", name, cg_dtype_name(dt));
    if (dev.type == CG_DEVICE_CUDA && c->size > 1 && c->backend != CG_COMM_NCCL)
        return cg_set_error(CG_ERR_UNSUPPORTED,
                            "comm %s: a CUDA buffer needs the nccl backend (this communicator is %s%s)", name,
                            cg_comm_backend_name(c->backend),
                            CG_COMM_NCCL_BUILT ? "" : "; this build has no NCCL");
    return CG_OK;
}

/* One collective, blocking; the single backend copies where send and recv differ. */
static cg_status run(cg_comm *c, cg_comm_kind k, cg_device dev, const void *send, void *recv, int64_t count,
                     cg_dtype dt, cg_comm_op op, int root) {
    if (c->size == 1) {
        if (send != recv && count > 0) {
            size_t nb = (size_t)count * cg_dtype_size(dt);
            if (dev.type == CG_DEVICE_CUDA) return cg_device_memcpy(dev, recv, dev, send, nb);
            memmove(recv, send, nb);
        }
        return CG_OK;
    }
#if CG_COMM_NCCL_BUILT
    if (dev.type == CG_DEVICE_CUDA) {
        if (k == CG_COMM_KIND_BARRIER) return cg_comm_mpi_run(c, k, NULL, NULL, 0, dt, op, root);
        cg_status s = cg_nccl_start(c->nccl, (int)k, send, recv, (size_t)count, dt == CG_BF16, op == CG_COMM_AVG, root);
        char why[256];
        if (s == CG_OK) s = cg_nccl_wait(c->nccl, c->timeout_s, why, sizeof why);
        else snprintf(why, sizeof why, "%s", cg_last_error());
        return s == CG_OK ? CG_OK : cg_comm_fail(c, k, count, dt, why);
    }
#endif
    return cg_comm_mpi_run(c, k, send, recv, count, dt, op, root);
}

cg_status cg_comm_allreduce(cg_comm *c, cg_device dev, void *buf, int64_t count, cg_dtype dt, cg_comm_op op) {
    cg_status s = check_args(c, CG_COMM_KIND_ALLREDUCE, dev, buf, buf, count, dt);
    if (s != CG_OK || count == 0) return s;
    return run(c, CG_COMM_KIND_ALLREDUCE, dev, buf, buf, count, dt, op, 0);
}

cg_status cg_comm_reduce_scatter(cg_comm *c, cg_device dev, const void *send, void *recv, int64_t count, cg_dtype dt,
                                 cg_comm_op op) {
    cg_status s = check_args(c, CG_COMM_KIND_REDUCE_SCATTER, dev, send, recv, count, dt);
    if (s != CG_OK || count == 0) return s;
    if (send == recv && c->size > 1)
        return cg_set_error(CG_ERR_INVALID_ARG, "comm reduce-scatter: send and recv must be different buffers");
    return run(c, CG_COMM_KIND_REDUCE_SCATTER, dev, send, recv, count, dt, op, 0);
}

cg_status cg_comm_allgather(cg_comm *c, cg_device dev, const void *send, void *recv, int64_t count, cg_dtype dt) {
    cg_status s = check_args(c, CG_COMM_KIND_ALLGATHER, dev, send, recv, count, dt);
    if (s != CG_OK || count == 0) return s;
    size_t nb = (size_t)count * cg_dtype_size(dt);
    /* send may already be this rank's slot of recv (ZeRO's shards): MPI and NCCL both take that in place. */
    bool in_place = (const char *)send == (const char *)recv + (size_t)c->rank * nb;
    if (!in_place && send == recv && c->size > 1)
        return cg_set_error(CG_ERR_INVALID_ARG, "comm all-gather: send overlaps recv outside this rank's slot");
    return run(c, CG_COMM_KIND_ALLGATHER, dev, send, recv, count, dt, CG_COMM_SUM, 0);
}

cg_status cg_comm_broadcast(cg_comm *c, cg_device dev, void *buf, int64_t count, cg_dtype dt, int root) {
    cg_status s = check_args(c, CG_COMM_KIND_BROADCAST, dev, buf, buf, count, dt);
    if (s != CG_OK || count == 0) return s;
    if (root < 0 || root >= c->size)
        return cg_set_error(CG_ERR_INVALID_ARG, "comm broadcast: root %d outside 0..%d", root, c->size - 1);
    return run(c, CG_COMM_KIND_BROADCAST, dev, buf, buf, count, dt, CG_COMM_SUM, root);
}

cg_status cg_comm_barrier(cg_comm *c) {
    int dummy = 0;
    cg_status s = check_args(c, CG_COMM_KIND_BARRIER, CG_CPU, &dummy, &dummy, 0, CG_F32);
    if (s != CG_OK || c->size == 1) return s;
    return cg_comm_mpi_run(c, CG_COMM_KIND_BARRIER, NULL, NULL, 0, CG_F32, CG_COMM_SUM, 0);
}

cg_status cg_comm_allreduce_f64(cg_comm *c, double *values, int n, cg_comm_op op) {
    if (!c || n < 0 || (n > 0 && !values))
        return cg_set_error(CG_ERR_INVALID_ARG, "comm all-reduce (f64): NULL argument or count %d", n);
    if (c->broken)
        return cg_set_error(CG_ERR_COMM, "comm all-reduce (f64) on rank %d: the communicator is broken", c->rank);
    if (c->size == 1 || n == 0) return CG_OK;
    cg_status s = cg_comm_mpi_sum_f64(c, values, n);
    if (s == CG_OK && op == CG_COMM_AVG)
        for (int i = 0; i < n; i++) values[i] /= (double)c->size;
    return s;
}

cg_status cg_comm_iallreduce(cg_comm *c, cg_device dev, void *buf, int64_t count, cg_dtype dt, cg_comm_op op,
                             cg_comm_request *req) {
    if (!req) return cg_set_error(CG_ERR_INVALID_ARG, "comm all-reduce: NULL request");
    memset(req, 0, sizeof *req);
    cg_status s = check_args(c, CG_COMM_KIND_ALLREDUCE, dev, buf, buf, count, dt);
    if (s != CG_OK) return s;
    if (count > INT32_MAX)
        return cg_set_error(CG_ERR_INVALID_ARG, "comm all-reduce: %lld elements in one request (at most %d)",
                            (long long)count, INT32_MAX);
    *req = (cg_comm_request){.active = true, .device = dev, .buf = buf, .count = count, .dtype = dt, .op = op};
    if (c->size == 1 || count == 0) return CG_OK;
#if CG_COMM_NCCL_BUILT
    if (dev.type == CG_DEVICE_CUDA) {
        s = cg_nccl_start(c->nccl, CG_COMM_KIND_ALLREDUCE, buf, buf, (size_t)count, dt == CG_BF16, op == CG_COMM_AVG, 0);
        if (s != CG_OK) {
            req->active = false;
            char why[256];
            snprintf(why, sizeof why, "%s", cg_last_error());
            return cg_comm_fail(c, CG_COMM_KIND_ALLREDUCE, count, dt, why);
        }
        return CG_OK;
    }
#endif
    s = cg_comm_mpi_istart(c, req);
    if (s != CG_OK) req->active = false;
    return s;
}

void cg_comm_progress(cg_comm *c, cg_comm_request *req) {
    if (!c || !req || !req->active || c->size == 1 || req->count == 0) return;
    if (req->device.type == CG_DEVICE_CPU) cg_comm_mpi_test(c, req);
}

cg_status cg_comm_wait(cg_comm *c, cg_comm_request *req) {
    if (!c || !req) return cg_set_error(CG_ERR_INVALID_ARG, "comm wait: NULL argument");
    if (!req->active) return CG_OK;
    if (c->broken) { /* a request of a broken communicator never completes: do not wait a second timeout */
        req->active = false;
        return cg_set_error(CG_ERR_COMM, "comm all-reduce on rank %d: the communicator is broken by an earlier "
                            "failure", c->rank);
    }
    if (c->size == 1 || req->count == 0) {
        req->active = false;
        return CG_OK;
    }
#if CG_COMM_NCCL_BUILT
    if (req->device.type == CG_DEVICE_CUDA) {
        req->active = false;
        char why[256];
        cg_status s = cg_nccl_wait(c->nccl, c->timeout_s, why, sizeof why);
        return s == CG_OK ? CG_OK : cg_comm_fail(c, CG_COMM_KIND_ALLREDUCE, req->count, req->dtype, why);
    }
#endif
    return cg_comm_mpi_wait(c, req);
}
