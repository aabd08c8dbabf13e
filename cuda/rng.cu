/* Philox tensor fills on the GPU: one thread per Philox block computes that block's values with the same
 * header-only code as the CPU (core/rng.h) and stores them at their flat row-major positions. */
#include "core/rng.h"
#include "cuda/ew.cuh"

#define THREADS 256

__global__ void rng_fill_kernel(cg_cuda_ew it, cg_rng_fill_params p, uint64_t seed, uint64_t stream, uint64_t offset,
                                int64_t nblocks) {
    const int per_block = cg_rng_fill_per_block(p.kind);
    for (int64_t b = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; b < nblocks; b += (int64_t)gridDim.x * blockDim.x) {
        uint32_t w[4];
        float fv[4] = {0, 0, 0, 0};
        int64_t iv[4] = {0, 0, 0, 0};
        cg_rng_block(seed, stream, offset + (uint64_t)b, w);
        cg_rng_fill_block(&p, w, fv, iv);
        for (int j = 0; j < per_block; j++) {
            int64_t i = b * per_block + j;
            if (i >= it.numel) break;
            int64_t offs[CG_CUDA_EW_MAX_OPS];
            ew_offsets(it, i, offs);
            const int64_t off = offs[0];
            switch (it.dtype[0]) {
            case CG_F32: ((float *)it.data[0])[off] = fv[j]; break;
            case CG_I32: ((int32_t *)it.data[0])[off] = (int32_t)iv[j]; break;
            case CG_I64: ((int64_t *)it.data[0])[off] = iv[j]; break;
            case CG_U8: ((uint8_t *)it.data[0])[off] = (uint8_t)iv[j]; break;
            default: break;
            }
        }
    }
}

extern "C" cg_status cg_cuda_rng_fill(const cg_cuda_ew *it, const cg_rng_fill_params *p, uint64_t seed,
                                      uint64_t stream, uint64_t offset) {
    if (it->numel == 0) return CG_OK;
    int per_block = cg_rng_fill_per_block(p->kind);
    int64_t nblocks = (it->numel + per_block - 1) / per_block;
    unsigned grid = cg_cuda_blocks(nblocks, THREADS);
    if (grid > (1u << 20)) grid = 1u << 20;
    rng_fill_kernel<<<grid, THREADS, 0, cg_cuda_compute_stream()>>>(*it, *p, seed, stream, offset, nblocks);
    return cg_cuda_check_launch("rng fill");
}
