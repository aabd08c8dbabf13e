/* cudaMemGetInfo for the C side (see cuda/meminfo.h). */
#include "cuda/meminfo.h"

#include "cuda/common.cuh"

extern "C" cg_status cg_cuda_rt_mem_info(int device, size_t *free_bytes, size_t *total_bytes) {
    int previous = 0;
    cg_status s = cg_cuda_check(cudaGetDevice(&previous), "mem_info: cudaGetDevice");
    if (s == CG_OK && previous != device) s = cg_cuda_check(cudaSetDevice(device), "mem_info: cudaSetDevice");
    size_t f = 0, t = 0;
    if (s == CG_OK) s = cg_cuda_check(cudaMemGetInfo(&f, &t), "mem_info: cudaMemGetInfo");
    if (previous != device) cudaSetDevice(previous);
    if (s == CG_OK) {
        *free_bytes = f;
        *total_bytes = t;
    }
    return s;
}
