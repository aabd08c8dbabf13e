/* The distributed flags and start-up shared by `cgrad train` and `cgrad rl`: --zero, --no-bind,
 * --comm-timeout; the communicator from the launcher's environment (core/comm.h), hwloc binding
 * (core/affinity.h) with one line per rank saying what was bound, and rank 0 as the only rank that prints
 * to stdout. A plain run (no mpirun) is the single backend and binds nothing: behaviour unchanged. */
#ifndef CG_TOOLS_DIST_CLI_H
#define CG_TOOLS_DIST_CLI_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "core/comm.h"

typedef struct cg_cli_dist {
    int64_t zero;       /* --zero 0|1 */
    bool no_bind;       /* --no-bind */
    float comm_timeout; /* --comm-timeout SECONDS (0 = default) */
    bool nccl;          /* set by the command before cg_cli_dist_start when it runs on CUDA: under mpirun the
                         * CUDA buffers go over NCCL (unique id over MPI), each rank on the GPU of its local
                         * rank (cg_cli_dist_device) */
    cg_comm *comm;      /* after cg_cli_dist_start */
} cg_cli_dist;

/* If argv[*i] is one of the flags above: consumes it (and its value, advancing *i) and returns 1; 2 after
 * printing a usage error; 0 when it is not one of them. */
int cg_cli_dist_flag(const char *cmd, cg_cli_dist *d, int argc, char **argv, int *i);
void cg_cli_dist_usage(FILE *f);
/* Starts the communicator and binds; *threads (the --threads value, 0 = unset) becomes the bound core count
 * on a multi-rank run when unset. Returns 0, or 1 after printing the error. */
int cg_cli_dist_start(const char *cmd, cg_cli_dist *d, int64_t *threads);
/* After an error was printed: a multi-rank job cannot go on (the other ranks wait in collectives), so this
 * ends the whole job (MPI_Abort) with code; a single process returns. */
void cg_cli_dist_abort_on_error(int code);
void cg_cli_dist_end(cg_cli_dist *d);
/* The device a rank computes on: `requested` itself, except that a CUDA device under an NCCL communicator
 * becomes the rank's GPU (its index among the ranks of its node). */
cg_device cg_cli_dist_device(const cg_cli_dist *d, cg_device requested);
/* True on rank 0 (or without a communicator). */
bool cg_cli_dist_is_root(const cg_cli_dist *d);

#endif
