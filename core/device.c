#include "core/device.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef CG_HAVE_CUDA
#include "cuda/runtime.h"
#endif

const char *cg_device_str(cg_device d, char *buf, size_t n) {
    if (d.type == CG_DEVICE_CPU)
        snprintf(buf, n, "cpu");
    else
        snprintf(buf, n, "cuda:%d", d.index);
    return buf;
}

cg_status cg_device_parse(const char *s, cg_device *out) {
    if (!s || !out) return cg_set_error(CG_ERR_INVALID_ARG, "device_parse: NULL argument");
    if (strcmp(s, "cpu") == 0) {
        *out = CG_CPU;
        return CG_OK;
    }
    if (strcmp(s, "cuda") == 0) {
        *out = CG_CUDA(0);
        return CG_OK;
    }
    if (strncmp(s, "cuda:", 5) == 0 && s[5]) {
        char *end;
        long i = strtol(s + 5, &end, 10);
        if (*end == '\0' && i >= 0 && i < 1024) {
            *out = CG_CUDA((int)i);
            return CG_OK;
        }
    }
    return cg_set_error(CG_ERR_INVALID_ARG, "unknown device '%s' (expected cpu, cuda or cuda:N)", s);
}

bool cg_cuda_compiled(void) {
#ifdef CG_HAVE_CUDA
    return true;
#else
    return false;
#endif
}

int cg_cuda_device_count(void) {
#ifdef CG_HAVE_CUDA
    static int count = -1; /* the driver is asked once: the answer cannot change within a process */
    if (count < 0) count = cg_cuda_rt_device_count();
    return count;
#else
    return 0;
#endif
}

cg_status cg_cuda_set_device(int index) {
    if (!cg_cuda_compiled()) return cg_set_error(CG_ERR_UNSUPPORTED, "cuda_set_device: cgrad was built without CUDA");
#ifdef CG_HAVE_CUDA
    int n = cg_cuda_device_count();
    if (index < 0 || index >= n)
        return cg_set_error(CG_ERR_DEVICE, "cuda_set_device: cuda:%d does not exist (%d CUDA device%s found)", index, n,
                            n == 1 ? "" : "s");
    return cg_cuda_rt_set_device(index);
#else
    (void)index;
    return CG_ERR_UNSUPPORTED;
#endif
}

int cg_cuda_current_device(void) {
#ifdef CG_HAVE_CUDA
    return cg_cuda_device_count() > 0 ? cg_cuda_rt_current_device() : -1;
#else
    return -1;
#endif
}

static cg_status check_cuda_device(cg_device d, const char *what) {
    if (!cg_cuda_compiled()) return cg_set_error(CG_ERR_UNSUPPORTED, "%s: cgrad was built without CUDA", what);
    int n = cg_cuda_device_count();
    if (d.index < 0 || d.index >= n)
        return cg_set_error(CG_ERR_DEVICE, "%s: cuda:%d does not exist (%d CUDA device%s found)", what, d.index, n,
                            n == 1 ? "" : "s");
    return CG_OK;
}

void *cg_device_malloc(cg_device d, size_t nbytes) {
    if (d.type == CG_DEVICE_CPU) {
        size_t rounded = (nbytes + 63) & ~(size_t)63;
        void *p = aligned_alloc(64, rounded ? rounded : 64);
        if (!p) cg_set_error(CG_ERR_OOM, "out of host memory allocating %zu bytes", nbytes);
        return p;
    }
    if (check_cuda_device(d, "device_malloc") != CG_OK) return NULL;
#ifdef CG_HAVE_CUDA
    return cg_cuda_rt_malloc(d.index, nbytes);
#else
    return NULL;
#endif
}

void cg_device_free(cg_device d, void *p) {
    if (!p) return;
    if (d.type == CG_DEVICE_CPU) {
        free(p);
        return;
    }
#ifdef CG_HAVE_CUDA
    cg_cuda_rt_free(d.index, p);
#endif
}

cg_status cg_device_memcpy(cg_device dst_dev, void *dst, cg_device src_dev, const void *src, size_t nbytes) {
    if (nbytes == 0) return CG_OK;
    if (!dst || !src) return cg_set_error(CG_ERR_INVALID_ARG, "device_memcpy: NULL pointer");
    if (dst_dev.type == CG_DEVICE_CPU && src_dev.type == CG_DEVICE_CPU) {
        memmove(dst, src, nbytes);
        return CG_OK;
    }
    cg_device gpu = dst_dev.type == CG_DEVICE_CUDA ? dst_dev : src_dev;
    cg_status s = check_cuda_device(gpu, "device_memcpy");
    if (s != CG_OK) return s;
#ifdef CG_HAVE_CUDA
    int kind = src_dev.type == CG_DEVICE_CPU ? 0 : dst_dev.type == CG_DEVICE_CPU ? 1 : 2;
    /* GPU to another GPU: the copy is queued on the destination's stream, so first wait for the work queued
     * on the source's (which may still be writing src) */
    if (kind == 2 && src_dev.index != dst_dev.index) {
        if ((s = check_cuda_device(src_dev, "device_memcpy")) != CG_OK) return s;
        if ((s = cg_cuda_rt_synchronize(src_dev.index)) != CG_OK) return s;
    }
    return cg_cuda_rt_memcpy(gpu.index, dst, src, nbytes, kind);
#else
    return s;
#endif
}

cg_status cg_device_memset_zero(cg_device d, void *p, size_t nbytes) {
    if (nbytes == 0) return CG_OK;
    if (d.type == CG_DEVICE_CPU) {
        memset(p, 0, nbytes);
        return CG_OK;
    }
    cg_status s = check_cuda_device(d, "device_memset");
    if (s != CG_OK) return s;
#ifdef CG_HAVE_CUDA
    return cg_cuda_rt_memset_zero(d.index, p, nbytes);
#else
    return s;
#endif
}

cg_status cg_device_synchronize(cg_device d) {
    if (d.type == CG_DEVICE_CPU) return CG_OK;
    cg_status s = check_cuda_device(d, "device_synchronize");
    if (s != CG_OK) return s;
#ifdef CG_HAVE_CUDA
    return cg_cuda_rt_synchronize(d.index);
#else
    return s;
#endif
}
