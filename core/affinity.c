/* hwloc binding (contract in core/affinity.h). */
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "core/affinity.h"

#ifdef CG_HAVE_HWLOC
#include <hwloc.h>
#ifdef CG_HAVE_CUDA
#include <hwloc/cudart.h>
#endif

/* The cpuset of GPU `device` (NULL with a reason when it cannot be had). */
static hwloc_bitmap_t gpu_cpuset(hwloc_topology_t topo, int device, const char **why) {
#ifdef CG_HAVE_CUDA
    hwloc_bitmap_t set = hwloc_bitmap_alloc();
    if (set && hwloc_cudart_get_device_cpuset(topo, device, set) == 0 && !hwloc_bitmap_iszero(set)) return set;
    hwloc_bitmap_free(set);
    *why = "hwloc cannot locate the GPU";
    return NULL;
#else
    (void)topo, (void)device;
    *why = "built without CUDA";
    return NULL;
#endif
}

cg_status cg_affinity_bind(int local_rank, int local_size, int cuda_device, char *desc, size_t cap, int *n_cpus) {
    if (n_cpus) *n_cpus = 0;
    if (desc && cap) desc[0] = '\0';
    if (local_size < 1 || local_rank < 0 || local_rank >= local_size)
        return cg_set_error(CG_ERR_INVALID_ARG, "affinity: local rank %d of %d", local_rank, local_size);
    hwloc_topology_t topo;
    if (hwloc_topology_init(&topo) != 0) return cg_set_error(CG_ERR_UNSUPPORTED, "affinity: hwloc_topology_init failed");
    if (hwloc_topology_load(topo) != 0) {
        hwloc_topology_destroy(topo);
        return cg_set_error(CG_ERR_UNSUPPORTED, "affinity: hwloc cannot read the machine's topology");
    }
    hwloc_bitmap_t set = NULL;
    const char *why = NULL;
    char near[64] = "";
    if (cuda_device >= 0) {
        set = gpu_cpuset(topo, cuda_device, &why);
        if (set) snprintf(near, sizeof near, ", near GPU %d", cuda_device);
    }
    if (!set) { /* a fair share of the machine among the node's ranks */
        hwloc_bitmap_t sets[1024];
        unsigned n = (unsigned)(local_size < 1024 ? local_size : 1024);
        hwloc_obj_t root = hwloc_get_root_obj(topo);
        /* hwloc_distrib allocates each set itself (hwloc_bitmap_dup) */
        for (unsigned i = 0; i < n; i++) sets[i] = NULL;
        if (hwloc_distrib(topo, &root, 1, sets, n, INT_MAX, 0) == 0) {
            set = sets[local_rank % (int)n];
            sets[local_rank % (int)n] = NULL;
        }
        for (unsigned i = 0; i < n; i++) hwloc_bitmap_free(sets[i]);
        snprintf(near, sizeof near, ", share %d of %d%s%s", local_rank + 1, local_size, why ? ": " : "",
                 why ? why : "");
    }
    cg_status s = CG_OK;
    if (!set || hwloc_bitmap_iszero(set)) {
        s = cg_set_error(CG_ERR_UNSUPPORTED, "affinity: no processing units to bind local rank %d of %d to",
                         local_rank, local_size);
    } else if (hwloc_set_cpubind(topo, set, HWLOC_CPUBIND_PROCESS) != 0) {
        s = cg_set_error(CG_ERR_UNSUPPORTED, "affinity: binding to the cpuset failed: %s", strerror(errno));
    } else {
        /* Memory binding is best effort: containers and kernels without NUMA support refuse it. */
        bool mem = hwloc_set_membind(topo, set, HWLOC_MEMBIND_BIND, HWLOC_MEMBIND_PROCESS) == 0;
        char list[256];
        hwloc_bitmap_list_snprintf(list, sizeof list, set);
        int pus = hwloc_bitmap_weight(set);
        if (n_cpus) *n_cpus = pus;
        if (desc && cap)
            snprintf(desc, cap, "cores %s (%d PU%s%s), memory %s", list, pus, pus == 1 ? "" : "s", near,
                     mem ? "bound" : "not bound (refused by the system)");
    }
    hwloc_bitmap_free(set);
    hwloc_topology_destroy(topo);
    return s;
}

#else

cg_status cg_affinity_bind(int local_rank, int local_size, int cuda_device, char *desc, size_t cap, int *n_cpus) {
    (void)cuda_device;
    if (n_cpus) *n_cpus = 0;
    if (local_size < 1 || local_rank < 0 || local_rank >= local_size)
        return cg_set_error(CG_ERR_INVALID_ARG, "affinity: local rank %d of %d", local_rank, local_size);
    if (desc && cap) snprintf(desc, cap, "not bound (built without hwloc)");
    return CG_OK;
}

#endif
