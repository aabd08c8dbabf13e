/* The CUDA runtime behind C linkage: devices, memory and copies. Implemented in cuda/runtime.cu; core/
 * calls these only when built with CG_HAVE_CUDA. Every function turns a CUDA error into a cg error that
 * names the operation.
 *
 * Ordering: every copy and memset is queued on the device's compute stream (the stream all kernels run
 * on), so it sees the results of earlier kernels and later kernels see its result. A copy to host memory
 * waits for its data before returning; host-to-device copies return once the source has been read. */
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

/* The properties kernels and benchmarks size themselves by. */
typedef struct cg_cuda_props {
    char name[256];
    size_t total_mem;
    int cc_major, cc_minor;
    int sm_count;
    int max_threads_per_block;
    size_t shared_mem_per_block_optin; /* the most dynamic shared memory a block may opt in to */
    int l2_cache_bytes;
    int memory_bus_bits;
    int memory_clock_khz; /* 0 when the driver does not say */
} cg_cuda_props;
cg_status cg_cuda_rt_device_props(int device, cg_cuda_props *out);

/* Makes `device` current for this thread (kernels and streams follow the current device). The caller has
 * checked that it exists (core/device.c's cg_cuda_set_device does, against the cached count). */
cg_status cg_cuda_rt_set_device(int device);
/* The current device, or -1 when it cannot be read. */
int cg_cuda_rt_current_device(void);

/* Runtime and driver versions as CUDA encodes them (1000*major + 10*minor); 0 if unknown. */
void cg_cuda_rt_versions(int *runtime, int *driver);
void *cg_cuda_rt_malloc(int device, size_t nbytes);
void cg_cuda_rt_free(int device, void *p);
/* kind: 0 host->device, 1 device->host, 2 device->device. Host memory goes through a pinned staging
 * buffer (allocated once per device, double-buffered), so pageable host memory copies at pinned speed. */
cg_status cg_cuda_rt_memcpy(int device, void *dst, const void *src, size_t nbytes, int kind);
cg_status cg_cuda_rt_memset_zero(int device, void *p, size_t nbytes);
cg_status cg_cuda_rt_synchronize(int device);
/* The current device's stream `which` (0 compute, 1 communication) as an opaque cudaStream_t, created on first
 * use (non-blocking); NULL (the default stream) if it cannot be created. */
void *cg_cuda_rt_stream(int which);
/* Frees the pinned staging buffers (cg_shutdown-style cleanup; they are re-created on demand). */
void cg_cuda_rt_release_staging(void);

#ifdef __cplusplus
}
#endif
#endif
