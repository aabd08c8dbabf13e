/* Device memory in use, for the training progress line (cudaMemGetInfo behind C linkage). Implemented in
 * cuda/meminfo.cu; call only in builds with CG_HAVE_CUDA. */
#ifndef CG_CUDA_MEMINFO_H
#define CG_CUDA_MEMINFO_H

#include <stddef.h>

#include "core/error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Free and total bytes of `device` as the driver sees them (all processes and the CUDA context included). */
cg_status cg_cuda_rt_mem_info(int device, size_t *free_bytes, size_t *total_bytes);

#ifdef __cplusplus
}
#endif
#endif
