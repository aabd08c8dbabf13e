/* CPU and memory binding with hwloc: each rank of a job runs on the cores nearest its GPU (hwloc's cpuset of
 * the GPU's PCI device: its socket / NUMA node), or on a CPU run on its fair share of the node's cores
 * (hwloc_distrib of the machine over the node's ranks, so two ranks on two cores get one core each). Memory
 * is bound to the same set (HWLOC_MEMBIND_BIND, whole process) where the system allows it. Call it before
 * allocating large buffers and before starting threads (first-touch pages then land on the local node).
 * With mpirun, pass --bind-to none so that MPI's own binding does not fight this one. */
#ifndef CG_AFFINITY_H
#define CG_AFFINITY_H

#include <stddef.h>

#include "core/error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Binds this process (all its threads) as above: local_rank of local_size ranks on this node, cuda_device
 * the GPU it drives (-1 on a CPU run). desc (may be NULL) receives one line saying what was bound
 * ("cores 0-3 (4 PUs, near GPU 0), memory bound"), *n_cpus (may be NULL) the processing units of the set
 * (a thread count for the rank). Without hwloc in the build nothing is bound: CG_OK, a desc saying so and
 * *n_cpus = 0. Errors: bad arguments; hwloc failing to read the topology or to bind (CG_ERR_UNSUPPORTED). */
cg_status cg_affinity_bind(int local_rank, int local_size, int cuda_device, char *desc, size_t cap, int *n_cpus);

#ifdef __cplusplus
}
#endif
#endif
