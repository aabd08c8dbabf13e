/* index_add along one axis with a 1-D index, fast and deterministic (the embedding's weight gradient is the
 * case outer = 1): the positions are sorted by index with a stable radix sort (CUB), so equal indices stay
 * in position order; then one block per distinct index adds its slices of src into out[.., index, ..],
 * column by column, in position order. Each output row is written by one block and summed in the order the
 * CPU uses (out += src[i] for i ascending): the result is bit-equal to the CPU's, with no atomics. */
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

extern "C" size_t cg_cuda_index_add_sorted_scratch(int64_t N, int64_t V) {
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

/* out [outer, V, C], src [outer, N, C]; block p handles the segment of sorted positions starting at p. */
__global__ void index_add_segments_kernel(float *out, const void *src, int src_dt, const uint32_t *keys,
                                          const uint32_t *pos, int64_t outer, int64_t N, int64_t V, int64_t C) {
    for (int64_t p = blockIdx.x; p < N; p += gridDim.x) {
        if (p > 0 && keys[p] == keys[p - 1]) continue; /* not the first position of its index */
        const uint32_t id = keys[p];
        for (int64_t col = threadIdx.x; col < outer * C; col += blockDim.x) {
            const int64_t o = col / C, c = col % C;
            float *dst = out + (o * V + (int64_t)id) * C + c;
            float acc = *dst;
            for (int64_t q = p; q < N && keys[q] == id; q++) {
                int64_t s = (o * N + (int64_t)pos[q]) * C + c;
                acc += src_dt == CG_BF16 ? __bfloat162float(((const __nv_bfloat16 *)src)[s]) : ((const float *)src)[s];
            }
            *dst = acc;
        }
    }
}

extern "C" cg_status cg_cuda_index_add_sorted(float *out, const void *ids, int ids_dtype, const void *src,
                                              int src_dtype, int64_t outer, int64_t N, int64_t V, int64_t C,
                                              void *scratch) {
    if (N <= 0 || C <= 0 || outer <= 0) return CG_OK;
    if (N > INT32_MAX || V > (int64_t)UINT32_MAX)
        return cg_set_error(CG_ERR_SHAPE, "index_add: %lld positions or %lld rows are too many for the GPU sort",
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
    cg_status s = cg_cuda_check_launch("index_add (keys)");
    if (s != CG_OK) return s;
    s = cg_cuda_check(cub::DeviceRadixSort::SortPairs(temp, temp_bytes, keys_in, keys_out, pos_in, pos_out, (int)N, 0,
                                                      key_bits(V), st),
                      "index_add (sort)");
    if (s != CG_OK) return s;
    unsigned seg_blocks = N < (1 << 20) ? (unsigned)N : (1u << 20);
    int64_t cols = outer * C;
    int threads = cols < THREADS ? (int)((cols + 31) / 32 * 32) : THREADS;
    index_add_segments_kernel<<<seg_blocks, threads, 0, st>>>(out, src, src_dtype, keys_out, pos_out, outer, N, V, C);
    return cg_cuda_check_launch("index_add");
}
