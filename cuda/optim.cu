/* Fused optimizer kernels: one block per chunk of one parameter, each thread striding the chunk. The scan
 * sums g^2 in double (a fixed tree per chunk, so the norm repeats run to run); the update applies clipping,
 * the Philox gradient noise of core/rng.h (the same numbers as the CPU), decoupled weight decay and the
 * SGD / AdamW / Lion rule of optim/optim.h, then writes the bf16 working copy if there is one. */
#include "core/rng.h"
#include "cuda/common.cuh"
#include "cuda/optim.h"
#include "optim/optim.h"

#define THREADS 256

/* Each operation rounded on its own, as the CPU loop computes it (the compiler would otherwise fuse a*b+c
 * into one FMA): the GPU update then equals the CPU's bit for bit, given the same clip coefficient. */
#define MUL(a, b) __fmul_rn((a), (b))
#define ADD(a, b) __fadd_rn((a), (b))
#define SUB(a, b) __fsub_rn((a), (b))
#define DIV(a, b) __fdiv_rn((a), (b))

__global__ void optim_scan_kernel(const cg_cuda_optim_param *params, const cg_cuda_optim_chunk *chunks,
                                  double *chunk_sumsq, int64_t *chunk_nonfinite) {
    __shared__ double s_sum[THREADS];
    __shared__ long long s_bad[THREADS];
    const cg_cuda_optim_chunk c = chunks[blockIdx.x];
    const float *g = params[c.param].g;
    double sum = 0.0;
    long long bad = 0;
    if (g) {
        for (int64_t i = threadIdx.x; i < c.len; i += blockDim.x) {
            float x = g[c.start + i];
            if (!isfinite(x)) bad++;
            sum += (double)x * (double)x;
        }
    }
    s_sum[threadIdx.x] = sum;
    s_bad[threadIdx.x] = bad;
    __syncthreads();
    for (int w = blockDim.x / 2; w > 0; w /= 2) {
        if ((int)threadIdx.x < w) {
            s_sum[threadIdx.x] += s_sum[threadIdx.x + w];
            s_bad[threadIdx.x] += s_bad[threadIdx.x + w];
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        chunk_sumsq[blockIdx.x] = s_sum[0];
        chunk_nonfinite[blockIdx.x] = s_bad[0];
    }
}

__global__ void optim_update_kernel(const cg_cuda_optim_param *params, const cg_cuda_optim_chunk *chunks,
                                    cg_cuda_optim_consts k) {
    const cg_cuda_optim_chunk c = chunks[blockIdx.x];
    const cg_cuda_optim_param p = params[c.param];
    if (!p.g) return;
    /* the per-parameter scalars, in double as on the CPU */
    const double lr_eff = k.lr * (double)p.lr_mult;
    const float decay = (float)__dsub_rn(1.0, __dmul_rn(lr_eff, (double)p.weight_decay)); /* no DFMA: as the CPU */
    const bool decays = p.weight_decay != 0.0f;
    const float lr_f = (float)lr_eff;
    const float step_size = k.kind == CG_OPT_ADAMW ? (float)(lr_eff / k.bias_correction1) : 0.0f;
    const float bc2_sqrt = k.kind == CG_OPT_ADAMW ? (float)k.bias_correction2_sqrt : 1.0f;
    for (int64_t i = c.start + threadIdx.x; i < c.start + c.len; i += blockDim.x) {
        float gi = p.g[i];
        if (k.clip != 1.0f) gi = MUL(gi, k.clip);
        if (k.noise_std > 0.0f) {
            uint64_t j = (uint64_t)(p.global_offset + i);
            uint32_t words[4];
            cg_rng_block(k.seed, k.noise_stream, k.noise_block0 + (j >> 2), words);
            float z[4];
            cg_rng_box_muller(words[0], words[1], &z[0], &z[1]);
            cg_rng_box_muller(words[2], words[3], &z[2], &z[3]);
            gi = ADD(gi, MUL(k.noise_std, z[j & 3]));
        }
        float wi = p.w[i];
        if (decays) wi = MUL(wi, decay);
        switch (k.kind) {
        case CG_OPT_SGD: {
            float d = gi;
            if (p.s0) {
                float b = ADD(MUL(k.momentum, p.s0[i]), gi);
                p.s0[i] = b;
                d = k.nesterov ? ADD(gi, MUL(k.momentum, b)) : b;
            }
            wi = SUB(wi, MUL(lr_f, d));
            break;
        }
        case CG_OPT_ADAMW: {
            float m = ADD(MUL(k.b1, p.s0[i]), MUL(k.one_minus_b1, gi));
            float v = ADD(MUL(k.b2, p.s1[i]), MUL(MUL(k.one_minus_b2, gi), gi));
            p.s0[i] = m;
            p.s1[i] = v;
            float denom = ADD(DIV(__fsqrt_rn(v), bc2_sqrt), k.eps);
            wi = SUB(wi, MUL(step_size, DIV(m, denom)));
            break;
        }
        case CG_OPT_LION: {
            float m = p.s0[i];
            float cmix = ADD(MUL(k.b1, m), MUL(k.one_minus_b1, gi));
            float sign = cmix > 0.0f ? 1.0f : (cmix < 0.0f ? -1.0f : 0.0f);
            wi = SUB(wi, MUL(lr_f, sign));
            p.s0[i] = ADD(MUL(k.b2, m), MUL(k.one_minus_b2, gi));
            break;
        }
        default: break;
        }
        p.w[i] = wi;
        if (p.working) {
            __nv_bfloat16 h = __float2bfloat16_rn(wi);
            p.working[i] = *(const uint16_t *)&h;
        }
    }
}

extern "C" cg_status cg_cuda_optim_scan(const cg_cuda_optim_param *params, const cg_cuda_optim_chunk *chunks,
                                        int64_t n_chunks, double *chunk_sumsq, int64_t *chunk_nonfinite) {
    if (n_chunks == 0) return CG_OK;
    if (n_chunks > INT32_MAX) return cg_set_error(CG_ERR_INVALID_ARG, "optimizer: too many chunks");
    optim_scan_kernel<<<(unsigned)n_chunks, THREADS, 0, cg_cuda_compute_stream()>>>(params, chunks, chunk_sumsq,
                                                                                  chunk_nonfinite);
    return cg_cuda_check_launch("optimizer gradient scan");
}

extern "C" cg_status cg_cuda_optim_update(const cg_cuda_optim_param *params, const cg_cuda_optim_chunk *chunks,
                                          int64_t n_chunks, const cg_cuda_optim_consts *k) {
    if (n_chunks == 0) return CG_OK;
    if (n_chunks > INT32_MAX) return cg_set_error(CG_ERR_INVALID_ARG, "optimizer: too many chunks");
    optim_update_kernel<<<(unsigned)n_chunks, THREADS, 0, cg_cuda_compute_stream()>>>(params, chunks, *k);
    return cg_cuda_check_launch("optimizer update");
}
