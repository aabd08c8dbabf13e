/* Devices: the CPU and CUDA GPUs. Raw memory on a device is reached only through these functions, which
 * dispatch to cuda/ when cgrad was built with CUDA and report CG_ERR_UNSUPPORTED otherwise. */
#ifndef CG_DEVICE_H
#define CG_DEVICE_H

#include <stdbool.h>
#include <stddef.h>

#include "core/error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum cg_device_type { CG_DEVICE_CPU = 0, CG_DEVICE_CUDA = 1 } cg_device_type;

typedef struct cg_device {
    cg_device_type type;
    int index; /* GPU ordinal for CUDA; 0 for the CPU */
} cg_device;

#define CG_CPU ((cg_device){CG_DEVICE_CPU, 0})
#define CG_CUDA(i) ((cg_device){CG_DEVICE_CUDA, (i)})

static inline bool cg_device_eq(cg_device a, cg_device b) { return a.type == b.type && a.index == b.index; }

/* Writes "cpu" or "cuda:N" into buf (at least 16 bytes); returns buf. */
const char *cg_device_str(cg_device d, char *buf, size_t n);
/* Parses "cpu", "cuda", "cuda:N". */
cg_status cg_device_parse(const char *s, cg_device *out);

/* Number of usable CUDA devices: 0 when built without CUDA or when no GPU/driver is present. */
int cg_cuda_device_count(void);
/* True when cgrad was built with the CUDA backend (whether or not a GPU is present). */
bool cg_cuda_compiled(void);
/* Makes GPU `index` current for this thread: kernels, streams and cuBLASLt handles follow it. Ops on CUDA
 * tensors select their tensor's device themselves; this is for drivers (one rank per GPU). */
cg_status cg_cuda_set_device(int index);
/* The current GPU of this thread (0 when none was selected), or -1 without CUDA or a GPU. */
int cg_cuda_current_device(void);

/* Raw memory. CPU memory is 64-byte aligned. Returns NULL and sets an error on failure. */
void *cg_device_malloc(cg_device d, size_t nbytes);
void cg_device_free(cg_device d, void *p);
/* Copies nbytes between any two devices (host<->device through pinned staging on the CUDA side). */
cg_status cg_device_memcpy(cg_device dst_dev, void *dst, cg_device src_dev, const void *src, size_t nbytes);
cg_status cg_device_memset_zero(cg_device d, void *p, size_t nbytes);
/* Waits for all queued work on the device (no-op on the CPU). */
cg_status cg_device_synchronize(cg_device d);

#ifdef __cplusplus
}
#endif
#endif
