/* Index kernels: the bad-index scan, the take kernel behind gather / index_select / embedding, and the
 * deterministic put-add behind scatter_add / index_add / the embedding backward. They run on the strided
 * iteration of cuda/ops.h, as their CPU counterparts in core/ops_index.c and core/ops_scatter.c do. */
#include "cuda/ew.cuh"

#define THREADS EW_THREADS

__device__ __forceinline__ int64_t load_index(const void *p, int dt, int64_t i) {
    return dt == CG_I64 ? ((const int64_t *)p)[i] : (int64_t)((const int32_t *)p)[i];
}

static unsigned blocks_for(int64_t n) { return ew_blocks(n); }

/* ------------------------------------------------------------------ the bad-index scan */

__global__ void find_bad_kernel(cg_cuda_ew it, int64_t limit, unsigned long long *first) {
    GRID_STRIDE_LOOP(i, it.numel) {
        int64_t off[CG_CUDA_EW_MAX_OPS];
        ew_offsets(it, i, off);
        int64_t v = load_index(it.data[0], it.dtype[0], off[0]);
        if (v < 0 || v >= limit) atomicMin(first, (unsigned long long)i);
    }
}

__global__ void read_index_kernel(cg_cuda_ew it, const unsigned long long *first, int64_t *value) {
    if (*first == ~0ull) return;
    int64_t off[CG_CUDA_EW_MAX_OPS];
    ew_offsets(it, (int64_t)*first, off);
    *value = load_index(it.data[0], it.dtype[0], off[0]);
}

extern "C" cg_status cg_cuda_find_bad_index(const cg_cuda_ew *it, int64_t limit, int64_t *scratch, int64_t *bad_pos,
                                            int64_t *bad_value) {
    *bad_pos = -1;
    *bad_value = 0;
    if (it->numel == 0) return CG_OK;
    cudaStream_t st = cg_cuda_compute_stream();
    unsigned long long *first = (unsigned long long *)scratch;
    cg_status s = cg_cuda_check(cudaMemsetAsync(first, 0xff, sizeof *first, st), "index check");
    if (s != CG_OK) return s;
    find_bad_kernel<<<blocks_for(it->numel), THREADS, 0, st>>>(*it, limit, first);
    read_index_kernel<<<1, 1, 0, st>>>(*it, first, scratch + 1);
    if ((s = cg_cuda_check_launch("index check")) != CG_OK) return s;
    int64_t host[2];
    if ((s = cg_cuda_check(cudaMemcpyAsync(host, scratch, sizeof host, cudaMemcpyDeviceToHost, st), "index check")) != CG_OK)
        return s;
    if ((s = cg_cuda_check(cudaStreamSynchronize(st), "index check")) != CG_OK) return s;
    if ((unsigned long long)host[0] != ~0ull) {
        *bad_pos = host[0];
        *bad_value = host[1];
    }
    return CG_OK;
}

/* ------------------------------------------------------------------ take */

template <typename T> __global__ void take_kernel(cg_cuda_ew it, int64_t axis_stride) {
    GRID_STRIDE_LOOP(i, it.numel) {
        int64_t off[CG_CUDA_EW_MAX_OPS];
        ew_offsets(it, i, off);
        int64_t id = load_index(it.data[2], it.dtype[2], off[2]);
        ((T *)it.data[0])[off[0]] = ((const T *)it.data[1])[off[1] + id * axis_stride];
    }
}

extern "C" cg_status cg_cuda_take(const cg_cuda_ew *it, int64_t axis_stride) {
    if (it->numel == 0) return CG_OK;
    cudaStream_t st = cg_cuda_compute_stream();
    unsigned b = blocks_for(it->numel);
    switch (cg_dtype_size((cg_dtype)it->dtype[0])) {
    case 1: take_kernel<uint8_t><<<b, THREADS, 0, st>>>(*it, axis_stride); break;
    case 2: take_kernel<uint16_t><<<b, THREADS, 0, st>>>(*it, axis_stride); break;
    case 4: take_kernel<uint32_t><<<b, THREADS, 0, st>>>(*it, axis_stride); break;
    case 8: take_kernel<uint64_t><<<b, THREADS, 0, st>>>(*it, axis_stride); break;
    default: return cg_set_error(CG_ERR_DTYPE, "take: unknown dtype %d", it->dtype[0]);
    }
    return cg_cuda_check_launch("gather/index_select/embedding");
}

/* ------------------------------------------------------------------ put-add */

__global__ void put_add_kernel(cg_cuda_ew it, int64_t axis_len, int64_t out_axis_stride, int64_t src_axis_stride,
                               int64_t index_axis_stride) {
    GRID_STRIDE_LOOP(t, it.numel) {
        int64_t off[CG_CUDA_EW_MAX_OPS];
        ew_offsets(it, t, off);
        float *out = (float *)it.data[0] + off[0];
        const bool src_bf16 = it.dtype[1] == CG_BF16;
        for (int64_t i = 0; i < axis_len; i++) {
            int64_t id = load_index(it.data[2], it.dtype[2], off[2] + i * index_axis_stride);
            int64_t s = off[1] + i * src_axis_stride;
            float v = src_bf16 ? __bfloat162float(((const __nv_bfloat16 *)it.data[1])[s]) : ((const float *)it.data[1])[s];
            out[id * out_axis_stride] += v;
        }
    }
}

extern "C" cg_status cg_cuda_put_add(const cg_cuda_ew *it, int64_t axis_len, int64_t out_axis_stride,
                                     int64_t src_axis_stride, int64_t index_axis_stride) {
    if (it->numel == 0 || axis_len == 0) return CG_OK;
    put_add_kernel<<<blocks_for(it->numel), THREADS, 0, cg_cuda_compute_stream()>>>(*it, axis_len, out_axis_stride,
                                                                                    src_axis_stride, index_axis_stride);
    return cg_cuda_check_launch("scatter_add/index_add/embedding_backward");
}
