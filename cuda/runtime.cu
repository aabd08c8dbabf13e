#include "cuda/runtime.h"

#include <cuda_runtime.h>
#include <string.h>

#define MAX_DEVICES 16 /* CG_MAX_CUDA_DEVICES */

/* Records a CUDA error as a cg error naming the operation; returns the cg status. */
static cg_status cuda_check(cudaError_t err, const char *what) {
    if (err == cudaSuccess) return CG_OK;
    cudaGetLastError(); /* reset the last-error slot so the next call does not report this one */
    return cg_set_error(CG_ERR_CUDA, "%s: %s (%s)", what, cudaGetErrorString(err), cudaGetErrorName(err));
}

extern "C" int cg_cuda_rt_device_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return n;
}

extern "C" cg_status cg_cuda_rt_device_info(int device, char *name, size_t name_len, size_t *total_mem,
                                            int *cc_major, int *cc_minor) {
    cudaDeviceProp prop;
    cg_status s = cuda_check(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
    if (s != CG_OK) return s;
    if (name && name_len) {
        size_t i = 0;
        for (; i + 1 < name_len && prop.name[i]; i++) name[i] = prop.name[i];
        name[i] = '\0';
    }
    if (total_mem) *total_mem = prop.totalGlobalMem;
    if (cc_major) *cc_major = prop.major;
    if (cc_minor) *cc_minor = prop.minor;
    return CG_OK;
}

extern "C" cg_status cg_cuda_rt_device_props(int device, cg_cuda_props *out) {
    if (!out) return cg_set_error(CG_ERR_INVALID_ARG, "cuda device props: NULL output");
    memset(out, 0, sizeof *out);
    cudaDeviceProp prop;
    cg_status s = cuda_check(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
    if (s != CG_OK) return s;
    size_t i = 0;
    for (; i + 1 < sizeof out->name && prop.name[i]; i++) out->name[i] = prop.name[i];
    out->name[i] = '\0';
    out->total_mem = prop.totalGlobalMem;
    out->cc_major = prop.major;
    out->cc_minor = prop.minor;
    out->sm_count = prop.multiProcessorCount;
    out->max_threads_per_block = prop.maxThreadsPerBlock;
    out->shared_mem_per_block_optin = prop.sharedMemPerBlockOptin;
    out->l2_cache_bytes = prop.l2CacheSize;
    out->memory_bus_bits = prop.memoryBusWidth;
    int clock = 0; /* an attribute query: the struct field is gone from recent toolkits */
    if (cudaDeviceGetAttribute(&clock, cudaDevAttrMemoryClockRate, device) != cudaSuccess) {
        cudaGetLastError();
        clock = 0;
    }
    out->memory_clock_khz = clock;
    return CG_OK;
}

extern "C" cg_status cg_cuda_rt_set_device(int device) {
    if (device < 0 || device >= MAX_DEVICES)
        return cg_set_error(CG_ERR_DEVICE, "cuda set_device: cuda:%d is out of range", device);
    return cuda_check(cudaSetDevice(device), "cudaSetDevice");
}

extern "C" int cg_cuda_rt_current_device(void) {
    int d = -1;
    if (cudaGetDevice(&d) != cudaSuccess) {
        cudaGetLastError();
        return -1;
    }
    return d;
}

extern "C" void cg_cuda_rt_versions(int *runtime, int *driver) {
    if (runtime && cudaRuntimeGetVersion(runtime) != cudaSuccess) *runtime = 0;
    if (driver && cudaDriverGetVersion(driver) != cudaSuccess) *driver = 0;
    cudaGetLastError();
}

extern "C" void *cg_cuda_rt_malloc(int device, size_t nbytes) {
    void *p = NULL;
    if (cuda_check(cudaSetDevice(device), "cudaSetDevice") != CG_OK) return NULL;
    cudaError_t err = cudaMalloc(&p, nbytes);
    if (err != cudaSuccess) {
        cudaGetLastError();
        cg_set_error(err == cudaErrorMemoryAllocation ? CG_ERR_OOM : CG_ERR_CUDA,
                     "cudaMalloc: %zu bytes on cuda:%d: %s", nbytes, device, cudaGetErrorString(err));
        return NULL;
    }
    return p;
}

extern "C" void cg_cuda_rt_free(int device, void *p) {
    if (!p) return;
    cudaSetDevice(device);
    cudaFree(p);
    cudaGetLastError();
}

extern "C" void *cg_cuda_rt_stream(int which) {
    /* per device and per kind; a process drives at most CG_MAX_CUDA_DEVICES GPUs */
    static cudaStream_t streams[MAX_DEVICES][2];
    int device = 0;
    if (which < 0 || which > 1 || cudaGetDevice(&device) != cudaSuccess || device < 0 || device >= MAX_DEVICES) {
        cudaGetLastError();
        return NULL;
    }
    if (!streams[device][which] && cudaStreamCreateWithFlags(&streams[device][which], cudaStreamNonBlocking) != cudaSuccess) {
        cudaGetLastError();
        streams[device][which] = NULL;
    }
    return streams[device][which];
}

/* ------------------------------------------------------------------ pinned staging */

/* Two pinned buffers per device: while the GPU copies one, the host fills or drains the other. Each has an
 * event recorded after the copy that uses it, waited on before the host touches the buffer again. */
#define STAGING_BYTES ((size_t)8 << 20)

typedef struct staging {
    void *buf[2];
    cudaEvent_t done[2];
    bool ready;
} staging;

static staging g_staging[MAX_DEVICES];

static cg_status staging_get(int device, staging **out) {
    staging *st = &g_staging[device];
    if (!st->ready) {
        for (int k = 0; k < 2; k++) {
            cg_status s = cuda_check(cudaMallocHost(&st->buf[k], STAGING_BYTES), "cudaMallocHost (copy staging)");
            if (s == CG_OK) s = cuda_check(cudaEventCreateWithFlags(&st->done[k], cudaEventDisableTiming), "cudaEventCreate");
            if (s != CG_OK) return s;
        }
        st->ready = true;
    }
    *out = st;
    return CG_OK;
}

extern "C" void cg_cuda_rt_release_staging(void) {
    for (int d = 0; d < MAX_DEVICES; d++) {
        staging *st = &g_staging[d];
        if (!st->ready) continue;
        cudaSetDevice(d);
        for (int k = 0; k < 2; k++) {
            cudaEventSynchronize(st->done[k]);
            cudaEventDestroy(st->done[k]);
            cudaFreeHost(st->buf[k]);
        }
        memset(st, 0, sizeof *st);
    }
    cudaGetLastError();
}

static cg_status copy_h2d_staged(int device, char *dst, const char *src, size_t nbytes, cudaStream_t stream) {
    staging *st;
    cg_status s = staging_get(device, &st);
    if (s != CG_OK) return s;
    for (size_t pos = 0, k = 0; pos < nbytes; pos += STAGING_BYTES, k ^= 1) {
        size_t n = nbytes - pos < STAGING_BYTES ? nbytes - pos : STAGING_BYTES;
        if ((s = cuda_check(cudaEventSynchronize(st->done[k]), "memcpy host->device (staging wait)")) != CG_OK) return s;
        memcpy(st->buf[k], src + pos, n);
        if ((s = cuda_check(cudaMemcpyAsync(dst + pos, st->buf[k], n, cudaMemcpyHostToDevice, stream),
                            "memcpy host->device")) != CG_OK)
            return s;
        if ((s = cuda_check(cudaEventRecord(st->done[k], stream), "memcpy host->device (event)")) != CG_OK) return s;
    }
    return CG_OK; /* the source has been read into the staging buffers: the caller may reuse it */
}

static cg_status copy_d2h_staged(int device, char *dst, const char *src, size_t nbytes, cudaStream_t stream) {
    staging *st;
    cg_status s = staging_get(device, &st);
    if (s != CG_OK) return s;
    size_t nchunks = (nbytes + STAGING_BYTES - 1) / STAGING_BYTES;
    /* queue chunk c + 1 before draining chunk c, so the GPU copy overlaps the host memcpy */
    for (size_t c = 0; c <= nchunks; c++) {
        if (c < nchunks) {
            size_t k = c & 1, pos = c * STAGING_BYTES;
            size_t n = nbytes - pos < STAGING_BYTES ? nbytes - pos : STAGING_BYTES;
            if ((s = cuda_check(cudaMemcpyAsync(st->buf[k], src + pos, n, cudaMemcpyDeviceToHost, stream),
                                "memcpy device->host")) != CG_OK)
                return s;
            if ((s = cuda_check(cudaEventRecord(st->done[k], stream), "memcpy device->host (event)")) != CG_OK) return s;
        }
        if (c > 0) {
            size_t p = c - 1, k = p & 1, pos = p * STAGING_BYTES;
            size_t n = nbytes - pos < STAGING_BYTES ? nbytes - pos : STAGING_BYTES;
            if ((s = cuda_check(cudaEventSynchronize(st->done[k]), "memcpy device->host")) != CG_OK) return s;
            memcpy(dst + pos, st->buf[k], n);
        }
    }
    return CG_OK;
}

extern "C" cg_status cg_cuda_rt_memcpy(int device, void *dst, const void *src, size_t nbytes, int kind) {
    if (kind < 0 || kind > 2) return cg_set_error(CG_ERR_INVALID_ARG, "cuda memcpy: bad direction %d", kind);
    if (device < 0 || device >= MAX_DEVICES) return cg_set_error(CG_ERR_DEVICE, "cuda memcpy: bad device %d", device);
    if (nbytes == 0) return CG_OK;
    cg_status s = cuda_check(cudaSetDevice(device), "cudaSetDevice");
    if (s != CG_OK) return s;
    cudaStream_t stream = (cudaStream_t)cg_cuda_rt_stream(0);
    if (kind == 0) return copy_h2d_staged(device, (char *)dst, (const char *)src, nbytes, stream);
    if (kind == 1) return copy_d2h_staged(device, (char *)dst, (const char *)src, nbytes, stream);
    return cuda_check(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDeviceToDevice, stream), "memcpy device->device");
}

extern "C" cg_status cg_cuda_rt_memset_zero(int device, void *p, size_t nbytes) {
    cg_status s = cuda_check(cudaSetDevice(device), "cudaSetDevice");
    if (s != CG_OK) return s;
    return cuda_check(cudaMemsetAsync(p, 0, nbytes, (cudaStream_t)cg_cuda_rt_stream(0)), "cudaMemsetAsync");
}

extern "C" cg_status cg_cuda_rt_synchronize(int device) {
    cg_status s = cuda_check(cudaSetDevice(device), "cudaSetDevice");
    if (s != CG_OK) return s;
    return cuda_check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
}
