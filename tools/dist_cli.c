/* Distributed flags and start-up for the subcommands (tools/dist_cli.h). */
#include "tools/dist_cli.h"

#include <string.h>
#include <unistd.h>

#include "core/affinity.h"
#include "core/context.h"
#include "tools/flags.h"

static cg_comm *active; /* the running command's communicator, for cg_cli_dist_abort_on_error */

void cg_cli_dist_usage(FILE *f) {
    fprintf(f, "distributed (under mpirun -np N or srun; see README):\n"
               "  --zero 1           ZeRO-1: shard the optimizer state and update over the ranks (default 0)\n"
               "  --no-bind          do not bind each rank to its share of the cores (hwloc)\n"
               "  --comm-timeout S   end the job when a collective waits longer than S seconds (default 600)\n");
}

int cg_cli_dist_flag(const char *cmd, cg_cli_dist *d, int argc, char **argv, int *i) {
    const char *f = argv[*i];
    if (strcmp(f, "--no-bind") == 0) {
        d->no_bind = true;
        return 1;
    }
    bool zero = strcmp(f, "--zero") == 0, timeout = strcmp(f, "--comm-timeout") == 0;
    if (!zero && !timeout) return 0;
    if (*i + 1 >= argc) {
        fprintf(stderr, "cgrad %s: %s needs a value\n", cmd, f);
        return 2;
    }
    const char *v = argv[++*i];
    if (zero) {
        if (cg_flag_i64(cmd, f, v, &d->zero)) return 2;
        if (d->zero != 0 && d->zero != 1) {
            fprintf(stderr, "cgrad %s: --zero %lld: 0 (off) or 1 (ZeRO-1)\n", cmd, (long long)d->zero);
            return 2;
        }
        return 1;
    }
    if (cg_flag_f32(cmd, f, v, &d->comm_timeout)) return 2;
    if (!(d->comm_timeout > 0.0f)) {
        fprintf(stderr, "cgrad %s: --comm-timeout %g must be > 0 seconds\n", cmd, d->comm_timeout);
        return 2;
    }
    return 1;
}

int cg_cli_dist_start(const char *cmd, cg_cli_dist *d, int64_t *threads) {
    cg_comm_options o = {.timeout_s = d->comm_timeout, .use_nccl = d->nccl};
    if (cg_comm_init(&o, &d->comm) != CG_OK) {
        fprintf(stderr, "cgrad %s: %s\n", cmd, cg_last_error());
        return 1;
    }
    active = d->comm;
    int rank = cg_comm_rank(d->comm), size = cg_comm_size(d->comm);
    if (size == 1) return 0; /* a plain run: nothing bound, nothing redirected */
    char bound[512] = "not bound (--no-bind)";
    int n_cpus = 0;
    if (!d->no_bind &&
        cg_affinity_bind(cg_comm_local_rank(d->comm), cg_comm_local_size(d->comm), cg_comm_cuda_device(d->comm), bound,
                         sizeof bound, &n_cpus) != CG_OK)
        snprintf(bound, sizeof bound, "not bound: %s", cg_last_error());
    if (*threads <= 0) {
        long online = sysconf(_SC_NPROCESSORS_ONLN);
        int share = (int)(online > 0 ? online : 1) / cg_comm_local_size(d->comm);
        *threads = n_cpus > 0 ? n_cpus : (share > 0 ? share : 1);
    }
    printf("rank %d of %d (%s, local %d of %d): %s; %lld threads\n", rank, size,
           cg_comm_backend_name(cg_comm_get_backend(d->comm)), cg_comm_local_rank(d->comm),
           cg_comm_local_size(d->comm), bound, (long long)*threads);
    fflush(stdout);
    /* Only rank 0 reports progress; errors still reach stderr from every rank. */
    if (rank != 0 && !freopen("/dev/null", "w", stdout)) return 0;
    return 0;
}

cg_device cg_cli_dist_device(const cg_cli_dist *d, cg_device requested) {
    int gpu = d->comm ? cg_comm_cuda_device(d->comm) : -1;
    return requested.type == CG_DEVICE_CUDA && gpu >= 0 ? CG_CUDA(gpu) : requested;
}

bool cg_cli_dist_is_root(const cg_cli_dist *d) { return !d->comm || cg_comm_rank(d->comm) == 0; }

void cg_cli_dist_abort_on_error(int code) {
    if (active && cg_comm_size(active) > 1) cg_comm_abort(active, code);
}

void cg_cli_dist_end(cg_cli_dist *d) {
    if (active == d->comm) active = NULL;
    if (d->comm) cg_comm_free(d->comm);
    d->comm = NULL;
}
