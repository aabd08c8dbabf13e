/* Causal grouped-query attention, flash style, on the GPU (the CPU kernels in core/nn_attention.c are the
 * reference): scores exist only one tile at a time in registers and shared memory, never as a T x S matrix.
 *
 * Forward: one block per (query tile of ATT_BQ rows, query head, batch); K/V tiles of ATT_BC keys go through
 * shared memory (f32); each warp owns ATT_RPW query rows. For a row, lane c computes the score of key c of the
 * tile, the tile's max/sum come from warp reductions (online softmax, f32), and the output accumulator is
 * split across the lanes by head dim (lane owns dims lane, lane + 32, ...). The per-row logsumexp is saved.
 * Backward (FlashAttention-2 style, from out and lse): delta = rowsum(dout * out); dq from a pass shaped like
 * the forward; dk/dv from a pass over (key tile, kv head, batch) that walks every query of the group that sees
 * the tile, so every gradient element has one writer (deterministic, no atomics).
 * Correctness first: plain f32 FMAs, no tensor cores. */
#include "cuda/nn.h"
#include <type_traits>

#include "cuda/nn_common.cuh"

#define ATT_WARPS 4
#define ATT_RPW 8                       /* query rows per warp */
#define ATT_BQ (ATT_WARPS * ATT_RPW)    /* query rows per block */
#define ATT_BC 32                       /* keys per shared-memory tile (one per lane) */

struct att_shape {
    int64_t B, Hq, Hkv, T, S, D;
    float scale;
};

__device__ __forceinline__ bool key_visible(const uint8_t *mask_row, int64_t j, int64_t last, int64_t S) {
    return j < S && j <= last && (!mask_row || mask_row[j]);
}

/* rows [row0, row0 + nrows) of a [*, D] array into shared memory as f32 rows of stride D + 1 (padding keeps
 * lane c's reads of row c conflict-free); rows past nrows are zero. */
template <typename T>
__device__ void load_rows(float *dst, const T *src, int64_t row0, int64_t nrows, int rows, int64_t D) {
    for (int64_t idx = threadIdx.x; idx < (int64_t)rows * D; idx += blockDim.x) {
        int64_t r = idx / D, d = idx % D;
        dst[r * (D + 1) + d] = r < nrows ? cg_to_f32(src[(row0 + r) * D + d]) : 0.0f;
    }
}

__device__ __forceinline__ float smem_dot(const float *a, const float *b, int64_t D) {
    float s = 0.0f;
    for (int64_t d = 0; d < D; d++) s += a[d] * b[d];
    return s;
}

/* ------------------------------------------------------------------ forward */

template <typename T, int DPL>
__global__ void __launch_bounds__(ATT_WARPS * 32)
attention_forward_kernel(T *out, float *lse, const T *q, const T *k, const T *v, const uint8_t *key_mask,
                         att_shape sh) {
    extern __shared__ float smem[];
    const int64_t D = sh.D, T_len = sh.T, S = sh.S, offset = S - T_len;
    const int64_t b = blockIdx.z, h = blockIdx.y, hk = h / (sh.Hq / sh.Hkv), bh = b * sh.Hq + h;
    const int64_t t0 = (int64_t)blockIdx.x * ATT_BQ, nr = min((int64_t)ATT_BQ, T_len - t0);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    float *qs = smem, *ks = qs + ATT_BQ * (D + 1), *vs = ks + ATT_BC * (D + 1);
    const T *kh = k + (b * sh.Hkv + hk) * S * D, *vh = v + (b * sh.Hkv + hk) * S * D;
    const uint8_t *mask_row = key_mask ? key_mask + b * S : NULL;

    load_rows(qs, q + bh * T_len * D, t0, nr, ATT_BQ, D);
    float m[ATT_RPW], l[ATT_RPW], acc[ATT_RPW][DPL];
#pragma unroll
    for (int i = 0; i < ATT_RPW; i++) {
        m[i] = -INFINITY, l[i] = 0.0f;
#pragma unroll
        for (int e = 0; e < DPL; e++) acc[i][e] = 0.0f;
    }
    const int64_t key_end = offset + t0 + nr; /* one past the last key any row of the block sees */
    for (int64_t j0 = 0; j0 < key_end; j0 += ATT_BC) {
        __syncthreads(); /* the previous tile is no longer read (and qs is complete) */
        load_rows(ks, kh, j0, min((int64_t)ATT_BC, S - j0), ATT_BC, D);
        load_rows(vs, vh, j0, min((int64_t)ATT_BC, S - j0), ATT_BC, D);
        __syncthreads();
        const int64_t j = j0 + lane;
#pragma unroll
        for (int i = 0; i < ATT_RPW; i++) {
            const int64_t r = warp * ATT_RPW + i;
            if (r >= nr) continue; /* uniform across the warp */
            const int64_t last = offset + t0 + r;
            bool vis = key_visible(mask_row, j, last, S);
            float s = vis ? sh.scale * smem_dot(qs + r * (D + 1), ks + lane * (D + 1), D) : -INFINITY;
            float tile_max = cg_warp_max(s);
            if (tile_max == -INFINITY) continue; /* nothing visible here: the row is unchanged */
            float m_new = fmaxf(m[i], tile_max);
            float alpha = expf(m[i] - m_new); /* 0 when the row had nothing before */
            float p = vis ? expf(s - m_new) : 0.0f;
            float psum = cg_warp_sum(p);
#pragma unroll
            for (int e = 0; e < DPL; e++) acc[i][e] *= alpha;
#pragma unroll 8
            for (int c = 0; c < ATT_BC; c++) {
                float pc = __shfl_sync(CG_FULL_MASK, p, c);
                /* a masked (or underflowed) key adds nothing, as on the CPU: 0 * v would turn a non-finite
                 * value in a masked slot (an unwritten cache column) into NaN. pc is warp-uniform. */
                if (pc == 0.0f) continue;
#pragma unroll
                for (int e = 0; e < DPL; e++) {
                    int64_t d = lane + 32 * e;
                    if (d < D) acc[i][e] += pc * vs[c * (D + 1) + d];
                }
            }
            l[i] = l[i] * alpha + psum;
            m[i] = m_new;
        }
    }
#pragma unroll
    for (int i = 0; i < ATT_RPW; i++) {
        const int64_t r = warp * ATT_RPW + i;
        if (r >= nr) continue;
        const int64_t row = bh * T_len + t0 + r;
        float inv = l[i] > 0.0f ? 1.0f / l[i] : 0.0f; /* a row with no visible key: out 0 */
#pragma unroll
        for (int e = 0; e < DPL; e++) {
            int64_t d = lane + 32 * e;
            if (d < D) out[row * D + d] = cg_from_f32<T>(acc[i][e] * inv);
        }
        if (lane == 0) lse[row] = l[i] > 0.0f ? m[i] + logf(l[i]) : INFINITY;
    }
}

/* ------------------------------------------------------------------ backward */

/* delta[row] = sum_d dout[row, d] * out[row, d]: one warp per row. */
template <typename T>
__global__ void attention_delta_kernel(float *delta, const T *dout, const T *out, int64_t rows, int64_t D) {
    int64_t row = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (row >= rows) return; /* whole warps leave together */
    float s = 0.0f;
    for (int64_t d = lane; d < D; d += 32) s += cg_to_f32(dout[row * D + d]) * cg_to_f32(out[row * D + d]);
    s = cg_warp_sum(s);
    if (lane == 0) delta[row] = s;
}

/* dq = sum over visible keys of dS k, dS = P (dout . v - delta) scale, P = exp(scale q . k - lse): laid out as
 * the forward, with dout rows in shared memory next to the q rows. */
template <typename T, int DPL>
__global__ void __launch_bounds__(ATT_WARPS * 32)
attention_dq_kernel(T *dq, const T *dout, const T *q, const T *k, const T *v, const float *lse, const float *delta,
                    const uint8_t *key_mask, att_shape sh) {
    extern __shared__ float smem[];
    const int64_t D = sh.D, T_len = sh.T, S = sh.S, offset = S - T_len;
    const int64_t b = blockIdx.z, h = blockIdx.y, hk = h / (sh.Hq / sh.Hkv), bh = b * sh.Hq + h;
    const int64_t t0 = (int64_t)blockIdx.x * ATT_BQ, nr = min((int64_t)ATT_BQ, T_len - t0);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    float *qs = smem, *dos = qs + ATT_BQ * (D + 1), *ks = dos + ATT_BQ * (D + 1), *vs = ks + ATT_BC * (D + 1);
    const T *kh = k + (b * sh.Hkv + hk) * S * D, *vh = v + (b * sh.Hkv + hk) * S * D;
    const uint8_t *mask_row = key_mask ? key_mask + b * S : NULL;

    load_rows(qs, q + bh * T_len * D, t0, nr, ATT_BQ, D);
    load_rows(dos, dout + bh * T_len * D, t0, nr, ATT_BQ, D);
    float row_lse[ATT_RPW], row_delta[ATT_RPW], acc[ATT_RPW][DPL];
#pragma unroll
    for (int i = 0; i < ATT_RPW; i++) {
        const int64_t r = warp * ATT_RPW + i;
        row_lse[i] = r < nr ? lse[bh * T_len + t0 + r] : INFINITY;
        row_delta[i] = r < nr ? delta[bh * T_len + t0 + r] : 0.0f;
#pragma unroll
        for (int e = 0; e < DPL; e++) acc[i][e] = 0.0f;
    }
    const int64_t key_end = offset + t0 + nr;
    for (int64_t j0 = 0; j0 < key_end; j0 += ATT_BC) {
        __syncthreads();
        load_rows(ks, kh, j0, min((int64_t)ATT_BC, S - j0), ATT_BC, D);
        load_rows(vs, vh, j0, min((int64_t)ATT_BC, S - j0), ATT_BC, D);
        __syncthreads();
        const int64_t j = j0 + lane;
#pragma unroll
        for (int i = 0; i < ATT_RPW; i++) {
            const int64_t r = warp * ATT_RPW + i;
            if (r >= nr || row_lse[i] == INFINITY) continue; /* uniform across the warp */
            bool vis = key_visible(mask_row, j, offset + t0 + r, S);
            float ds = 0.0f;
            if (vis) {
                float p = expf(sh.scale * smem_dot(qs + r * (D + 1), ks + lane * (D + 1), D) - row_lse[i]);
                float dp = smem_dot(dos + r * (D + 1), vs + lane * (D + 1), D);
                ds = p * (dp - row_delta[i]) * sh.scale;
            }
#pragma unroll 8
            for (int c = 0; c < ATT_BC; c++) {
                float dsc = __shfl_sync(CG_FULL_MASK, ds, c);
                if (dsc == 0.0f) continue; /* a masked key adds nothing (the CPU skips it), whatever k holds */
#pragma unroll
                for (int e = 0; e < DPL; e++) {
                    int64_t d = lane + 32 * e;
                    if (d < D) acc[i][e] += dsc * ks[c * (D + 1) + d];
                }
            }
        }
    }
#pragma unroll
    for (int i = 0; i < ATT_RPW; i++) {
        const int64_t r = warp * ATT_RPW + i;
        if (r >= nr) continue;
        const int64_t row = bh * T_len + t0 + r;
#pragma unroll
        for (int e = 0; e < DPL; e++) {
            int64_t d = lane + 32 * e;
            if (d < D) dq[row * D + d] = cg_from_f32<T>(acc[i][e]);
        }
    }
}

/* dk, dv for KPW keys per warp (ATT_WARPS * KPW keys per block) of one (kv head, batch): each warp holds its
 * keys' k and v rows and their gradients in registers, split by head dim across the lanes, and walks every
 * query of the group's heads that can see the block's keys; the two dot products per (query, key) are warp
 * reductions. dk or dv may be NULL. */
template <typename T, int DPL, int KPW>
__global__ void __launch_bounds__(ATT_WARPS * 32)
attention_dkdv_kernel(T *dk, T *dv, const T *dout, const T *q, const T *k, const T *v, const float *lse,
                      const float *delta, const uint8_t *key_mask, att_shape sh) {
    const int64_t D = sh.D, T_len = sh.T, S = sh.S, offset = S - T_len, group = sh.Hq / sh.Hkv;
    const int64_t b = blockIdx.z, hk = blockIdx.y, bhk = b * sh.Hkv + hk;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int64_t block_j0 = (int64_t)blockIdx.x * ATT_WARPS * KPW, j0 = block_j0 + (int64_t)warp * KPW;
    const uint8_t *mask_row = key_mask ? key_mask + b * S : NULL;
    float kr[KPW][DPL], vr[KPW][DPL], dkr[KPW][DPL], dvr[KPW][DPL];
#pragma unroll
    for (int kk = 0; kk < KPW; kk++)
#pragma unroll
        for (int e = 0; e < DPL; e++) {
            int64_t j = j0 + kk, d = lane + 32 * e;
            bool in = j < S && d < D;
            kr[kk][e] = in ? cg_to_f32(k[(bhk * S + j) * D + d]) : 0.0f;
            vr[kk][e] = in ? cg_to_f32(v[(bhk * S + j) * D + d]) : 0.0f;
            dkr[kk][e] = 0.0f, dvr[kk][e] = 0.0f;
        }
    /* the first query that can see any key of the warp: t >= j0 - offset */
    const int64_t t_first = j0 - offset > 0 ? j0 - offset : 0;
    for (int64_t h = hk * group; h < (hk + 1) * group; h++) {
        const int64_t bh = b * sh.Hq + h;
        for (int64_t t = t_first; t < T_len && j0 < S; t++) {
            const int64_t row = bh * T_len + t;
            const float row_lse = lse[row];
            if (row_lse == INFINITY) continue; /* the row sees no key: no gradient */
            const float row_delta = delta[row];
            float qr[DPL], dor[DPL];
#pragma unroll
            for (int e = 0; e < DPL; e++) {
                int64_t d = lane + 32 * e;
                qr[e] = d < D ? cg_to_f32(q[row * D + d]) : 0.0f;
                dor[e] = d < D ? cg_to_f32(dout[row * D + d]) : 0.0f;
            }
            const int64_t last = offset + t;
#pragma unroll
            for (int kk = 0; kk < KPW; kk++) {
                if (!key_visible(mask_row, j0 + kk, last, S)) continue; /* uniform across the warp */
                float s = 0.0f, dp = 0.0f;
#pragma unroll
                for (int e = 0; e < DPL; e++) {
                    s += qr[e] * kr[kk][e];
                    dp += dor[e] * vr[kk][e];
                }
                s = cg_warp_sum(s);
                dp = cg_warp_sum(dp);
                float p = expf(sh.scale * s - row_lse);
                float ds = p * (dp - row_delta) * sh.scale;
#pragma unroll
                for (int e = 0; e < DPL; e++) {
                    dvr[kk][e] += p * dor[e];
                    dkr[kk][e] += ds * qr[e];
                }
            }
        }
    }
#pragma unroll
    for (int kk = 0; kk < KPW; kk++)
#pragma unroll
        for (int e = 0; e < DPL; e++) {
            int64_t j = j0 + kk, d = lane + 32 * e;
            if (j >= S || d >= D) continue;
            if (dk) dk[(bhk * S + j) * D + d] = cg_from_f32<T>(dkr[kk][e]);
            if (dv) dv[(bhk * S + j) * D + d] = cg_from_f32<T>(dvr[kk][e]);
        }
}

/* ------------------------------------------------------------------ launch */

static cg_status check_dims(const char *op, const cg_attention_dims *d, att_shape *sh) {
    if (!d) return cg_set_error(CG_ERR_INVALID_ARG, "%s: dims is NULL", op);
    *sh = {d->batch, d->q_heads, d->kv_heads, d->q_len, d->kv_len, d->head_dim, d->scale};
    if (sh->Hkv < 1 || sh->Hq % sh->Hkv != 0)
        return cg_set_error(CG_ERR_SHAPE, "%s: %lld query heads are not a multiple of %lld kv heads", op,
                            (long long)sh->Hq, (long long)sh->Hkv);
    if (sh->S < sh->T)
        return cg_set_error(CG_ERR_SHAPE, "%s: fewer keys (%lld) than queries (%lld)", op, (long long)sh->S,
                            (long long)sh->T);
    if (sh->D < 1 || sh->D > CG_CUDA_ATTN_MAX_D)
        return cg_set_error(CG_ERR_UNSUPPORTED, "%s: head dim %lld: the CUDA kernels take 1 to %d", op,
                            (long long)sh->D, CG_CUDA_ATTN_MAX_D);
    if (sh->B > 65535 || sh->Hq > 65535)
        return cg_set_error(CG_ERR_SHAPE, "%s: batch %lld or heads %lld exceed the CUDA grid (65535)", op,
                            (long long)sh->B, (long long)sh->Hq);
    return CG_OK;
}

/* Dynamic shared memory above the default 48 KiB needs an opt-in per kernel. */
template <typename K> static cg_status allow_smem(K kernel, size_t bytes, const char *op) {
    if (bytes <= 48 * 1024) return CG_OK;
    return cg_cuda_check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes), op);
}

/* Runs f with the compile-time lanes-per-row width DPL = ceil(D / 32) in {1, 2, 4, 8}. */
template <typename F> static void with_dpl(int64_t D, F f) {
    if (D <= 32) f(std::integral_constant<int, 1>{});
    else if (D <= 64) f(std::integral_constant<int, 2>{});
    else if (D <= 128) f(std::integral_constant<int, 4>{});
    else f(std::integral_constant<int, 8>{});
}

extern "C" cg_status cg_cuda_attention_forward(cg_dtype dt, void *out, float *lse, const void *q, const void *k,
                                               const void *v, const uint8_t *key_mask, const cg_attention_dims *d) {
    const char *op = "attention";
    att_shape sh;
    if (check_dims(op, d, &sh) != CG_OK) return cg_last_status();
    if (sh.B == 0 || sh.Hq == 0 || sh.T == 0) return CG_OK;
    dim3 grid((unsigned)((sh.T + ATT_BQ - 1) / ATT_BQ), (unsigned)sh.Hq, (unsigned)sh.B);
    size_t smem = sizeof(float) * (size_t)((ATT_BQ + 2 * ATT_BC) * (sh.D + 1));
    cg_status s = CG_OK;
    cg_status launched = cg_cuda_dispatch(op, dt, [&](auto tag) {
        using T = decltype(tag);
        with_dpl(sh.D, [&](auto dpl) {
            auto kernel = attention_forward_kernel<T, decltype(dpl)::value>;
            if ((s = allow_smem(kernel, smem, op)) != CG_OK) return;
            kernel<<<grid, ATT_WARPS * 32, smem, cg_cuda_compute_stream()>>>((T *)out, lse, (const T *)q, (const T *)k,
                                                                           (const T *)v, key_mask, sh);
        });
    });
    return s != CG_OK ? s : launched;
}

extern "C" size_t cg_cuda_attention_backward_workspace(const cg_attention_dims *d) {
    return d ? (size_t)(d->batch * d->q_heads * d->q_len) : 0;
}

extern "C" cg_status cg_cuda_attention_backward(cg_dtype dt, void *dq, void *dk, void *dv, const void *dout,
                                                const void *q, const void *k, const void *v, const void *out,
                                                const float *lse, const uint8_t *key_mask, const cg_attention_dims *d,
                                                float *workspace) {
    const char *op = "attention backward";
    att_shape sh;
    if (check_dims(op, d, &sh) != CG_OK) return cg_last_status();
    if (sh.B == 0 || sh.Hq == 0 || sh.T == 0 || sh.S == 0) return CG_OK;
    if (!workspace) return cg_set_error(CG_ERR_INVALID_ARG, "%s: workspace is NULL", op);
    if (sh.Hkv > 65535) return cg_set_error(CG_ERR_SHAPE, "%s: %lld kv heads exceed the CUDA grid", op, (long long)sh.Hkv);
    float *delta = workspace;
    int64_t rows = sh.B * sh.Hq * sh.T;
    cudaStream_t st = cg_cuda_compute_stream();
    cg_status s = CG_OK;
    cg_status launched = cg_cuda_dispatch(op, dt, [&](auto tag) {
        using T = decltype(tag);
        attention_delta_kernel<T><<<cg_cuda_blocks(rows, 8), 256, 0, st>>>(delta, (const T *)dout, (const T *)out,
                                                                          rows, sh.D);
        with_dpl(sh.D, [&](auto dpl) {
            constexpr int DPL = decltype(dpl)::value;
            if (dq) {
                dim3 grid((unsigned)((sh.T + ATT_BQ - 1) / ATT_BQ), (unsigned)sh.Hq, (unsigned)sh.B);
                size_t smem = sizeof(float) * (size_t)((2 * ATT_BQ + 2 * ATT_BC) * (sh.D + 1));
                auto kernel = attention_dq_kernel<T, DPL>;
                if ((s = allow_smem(kernel, smem, op)) != CG_OK) return;
                kernel<<<grid, ATT_WARPS * 32, smem, st>>>((T *)dq, (const T *)dout, (const T *)q, (const T *)k,
                                                           (const T *)v, lse, delta, key_mask, sh);
            }
            if (dk || dv) {
                constexpr int KPW = DPL <= 4 ? 8 : 4; /* keeps the per-lane registers bounded */
                dim3 grid((unsigned)((sh.S + ATT_WARPS * KPW - 1) / (ATT_WARPS * KPW)), (unsigned)sh.Hkv, (unsigned)sh.B);
                attention_dkdv_kernel<T, DPL, KPW><<<grid, ATT_WARPS * 32, 0, st>>>(
                    (T *)dk, (T *)dv, (const T *)dout, (const T *)q, (const T *)k, (const T *)v, lse, delta, key_mask,
                    sh);
            }
        });
    });
    return s != CG_OK ? s : launched;
}
