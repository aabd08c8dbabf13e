#include "cuda/runtime.h"

#include <cuda_runtime.h>

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

extern "C" void cg_cuda_rt_versions(int *runtime, int *driver) {
    if (runtime && cudaRuntimeGetVersion(runtime) != cudaSuccess) *runtime = 0;
    if (driver && cudaDriverGetVersion(driver) != cudaSuccess) *driver = 0;
    cudaGetLastError();
}

extern "C" void *cg_cuda_rt_malloc(int device, size_t nbytes) {
    void *p = NULL;
    if (cuda_check(cudaSetDevice(device), "cudaSetDevice") != CG_OK) return NULL;
    if (cuda_check(cudaMalloc(&p, nbytes), "cudaMalloc") != CG_OK) return NULL;
    return p;
}

extern "C" void cg_cuda_rt_free(int device, void *p) {
    if (!p) return;
    cudaSetDevice(device);
    cudaFree(p);
}

extern "C" cg_status cg_cuda_rt_memcpy(int device, void *dst, const void *src, size_t nbytes, int kind) {
    static const cudaMemcpyKind kinds[3] = {cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost, cudaMemcpyDeviceToDevice};
    if (kind < 0 || kind > 2) return cg_set_error(CG_ERR_INVALID_ARG, "cuda memcpy: bad direction %d", kind);
    cg_status s = cuda_check(cudaSetDevice(device), "cudaSetDevice");
    if (s != CG_OK) return s;
    return cuda_check(cudaMemcpy(dst, src, nbytes, kinds[kind]), "cudaMemcpy");
}

extern "C" cg_status cg_cuda_rt_memset_zero(int device, void *p, size_t nbytes) {
    cg_status s = cuda_check(cudaSetDevice(device), "cudaSetDevice");
    if (s != CG_OK) return s;
    return cuda_check(cudaMemset(p, 0, nbytes), "cudaMemset");
}

extern "C" cg_status cg_cuda_rt_synchronize(int device) {
    cg_status s = cuda_check(cudaSetDevice(device), "cudaSetDevice");
    if (s != CG_OK) return s;
    return cuda_check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
}

extern "C" void *cg_cuda_rt_stream(int which) {
    /* per device and per kind; a process drives at most CG_MAX_CUDA_DEVICES GPUs */
    static cudaStream_t streams[16][2];
    int device = 0;
    if (which < 0 || which > 1 || cudaGetDevice(&device) != cudaSuccess || device < 0 || device >= 16) {
        cudaGetLastError();
        return NULL;
    }
    if (!streams[device][which] && cudaStreamCreateWithFlags(&streams[device][which], cudaStreamNonBlocking) != cudaSuccess) {
        cudaGetLastError();
        streams[device][which] = NULL;
    }
    return streams[device][which];
}
