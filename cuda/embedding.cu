/* The embedding's weight gradient, fast and deterministic: the positions are sorted by id with a stable
 * radix sort (CUB), so equal ids stay in position order; then one block per distinct id adds its rows of
 * grad_out into grad_weight[id], column by column, in position order. Each weight row is written by one
 * block and summed in the order the CPU uses (gw += g[i] for i ascending): the result is bit-equal to the
 * CPU's, with no atomics. */
#include <cub/device/device_radix_sort.cuh>

#include "cuda/common.cuh"
#include "cuda/ops.h"

#define THREADS 256

/* The scratch layout: keys in/out, positions in/out (N uint32 each, 16-byte aligned), then CUB's temp. */
static size_t round16(size_t n) { return (n + 15) & ~(size_t)15; }

static int key_bits(int64_t V) {
    int bits = 1;
    while (bits < 32 && ((int64_t)1 << bits) < V) bits++;
    return bits;
}

static size_t cub_temp_bytes(int64_t N, int64_t V) {
    size_t bytes = 0;
    cub::DeviceRadixSort::SortPairs(NULL, bytes, (const uint32_t *)NULL, (uint32_t *)NULL, (const uint32_t *)NULL,
                                    (uint32_t *)NULL, (int)N, 0, key_bits(V));
    return bytes;
}

extern "C" size_t cg_cuda_embedding_backward_scratch(int64_t N, int64_t V) {
    if (N <= 0) return 0;
    return 4 * round16((size_t)N * sizeof(uint32_t)) + round16(cub_temp_bytes(N, V));
}

__global__ void embedding_keys_kernel(const void *ids, int ids_dt, int64_t N, uint32_t *keys, uint32_t *pos) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < N; i += (int64_t)gridDim.x * blockDim.x) {
        int64_t id = ids_dt == CG_I64 ? ((const int64_t *)ids)[i] : (int64_t)((const int32_t *)ids)[i];
        keys[i] = (uint32_t)id;
        pos[i] = (uint32_t)i;
    }
}

__global__ void embedding_segments_kernel(float *gw, const void *g, int g_dt, const uint32_t *keys,
                                          const uint32_t *pos, int64_t N, int64_t C) {
    for (int64_t p = blockIdx.x; p < N; p += gridDim.x) {
        if (p > 0 && keys[p] == keys[p - 1]) continue; /* not the first position of its id */
        const uint32_t id = keys[p];
        float *row = gw + (int64_t)id * C;
        for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
            float acc = row[c];
            for (int64_t q = p; q < N && keys[q] == id; q++) {
                int64_t src = (int64_t)pos[q] * C + c;
                acc += g_dt == CG_BF16 ? __bfloat162float(((const __nv_bfloat16 *)g)[src]) : ((const float *)g)[src];
            }
            row[c] = acc;
        }
    }
}

extern "C" cg_status cg_cuda_embedding_backward(float *grad_weight, const void *ids, int ids_dtype,
                                                const void *grad_out, int grad_dtype, int64_t N, int64_t V, int64_t C,
                                                void *scratch) {
    if (N <= 0 || C <= 0) return CG_OK;
    if (N > INT32_MAX || V > (int64_t)UINT32_MAX)
        return cg_set_error(CG_ERR_SHAPE, "embedding_backward: %lld positions or %lld ids are too many for the GPU sort",
                            (long long)N, (long long)V);
    cudaStream_t st = cg_cuda_compute_stream();
    char *p = (char *)scratch;
    size_t arr = round16((size_t)N * sizeof(uint32_t));
    uint32_t *keys_in = (uint32_t *)p, *keys_out = (uint32_t *)(p + arr);
    uint32_t *pos_in = (uint32_t *)(p + 2 * arr), *pos_out = (uint32_t *)(p + 3 * arr);
    void *temp = p + 4 * arr;
    size_t temp_bytes = cub_temp_bytes(N, V);
    unsigned blocks = cg_cuda_blocks(N, THREADS);
    if (blocks > (1u << 20)) blocks = 1u << 20;
    embedding_keys_kernel<<<blocks, THREADS, 0, st>>>(ids, ids_dtype, N, keys_in, pos_in);
    cg_status s = cg_cuda_check_launch("embedding_backward (keys)");
    if (s != CG_OK) return s;
    s = cg_cuda_check(cub::DeviceRadixSort::SortPairs(temp, temp_bytes, keys_in, keys_out, pos_in, pos_out, (int)N, 0,
                                                      key_bits(V), st),
                      "embedding_backward (sort)");
    if (s != CG_OK) return s;
    unsigned seg_blocks = N < (1 << 20) ? (unsigned)N : (1u << 20);
    int threads = C < THREADS ? (int)((C + 31) / 32 * 32) : THREADS;
    embedding_segments_kernel<<<seg_blocks, threads, 0, st>>>(grad_weight, grad_out, grad_dtype, keys_out, pos_out, N, C);
    return cg_cuda_check_launch("embedding_backward");
}
