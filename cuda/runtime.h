/* The CUDA runtime behind C linkage: devices, memory and copies. Implemented in cuda/runtime.cu; core/
 * calls these only when built with CG_HAVE_CUDA. Every function turns a CUDA error into a cg error that
 * names the operation. */
#ifndef CG_CUDA_RUNTIME_H
#define CG_CUDA_RUNTIME_H

#include <stddef.h>

#include "core/error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Usable devices; 0 (not an error) when there is no driver or GPU. */
int cg_cuda_rt_device_count(void);
/* Name, memory and compute capability of a device. */
cg_status cg_cuda_rt_device_info(int device, char *name, size_t name_len, size_t *total_mem, int *cc_major,
                                 int *cc_minor);
/* Runtime and driver versions as CUDA encodes them (1000*major + 10*minor); 0 if unknown. */
void cg_cuda_rt_versions(int *runtime, int *driver);
void *cg_cuda_rt_malloc(int device, size_t nbytes);
void cg_cuda_rt_free(int device, void *p);
/* kind: 0 host->device, 1 device->host, 2 device->device. */
cg_status cg_cuda_rt_memcpy(int device, void *dst, const void *src, size_t nbytes, int kind);
cg_status cg_cuda_rt_memset_zero(int device, void *p, size_t nbytes);
cg_status cg_cuda_rt_synchronize(int device);
/* The current device's stream `which` (0 compute, 1 communication) as an opaque cudaStream_t, created on first
 * use (non-blocking); NULL (the default stream) if it cannot be created. */
void *cg_cuda_rt_stream(int which);

#ifdef __cplusplus
}
#endif
#endif
