#include "core/parallel.h"
#include "core/nn_norm.h"

#include <math.h>
#include <stddef.h>

/* Rows are independent: parallel over rows once there is enough work to pay for a thread team. */
#define PARALLEL_MIN 32768
/* Weight/bias gradients are column sums over all rows: threads take blocks of columns and walk the rows,
 * so each sum has one owner and a fixed order (deterministic, no atomics). */
#define COL_BLOCK 256


/* ------------------------------------------------------------------ per-row pieces */

static void row_mean_rstd(const float *x, int64_t C, float eps, float *mean, float *rstd) {
    double s = 0.0;
    for (int64_t c = 0; c < C; c++) s += x[c];
    double m = s / (double)C, v = 0.0;
    for (int64_t c = 0; c < C; c++) {
        double d = x[c] - m;
        v += d * d;
    }
    *mean = (float)m;
    *rstd = (float)(1.0 / sqrt(v / (double)C + (double)eps));
}

static float row_rms_rstd(const float *x, int64_t C, float eps) {
    double s = 0.0;
    for (int64_t c = 0; c < C; c++) s += (double)x[c] * x[c];
    return (float)(1.0 / sqrt(s / (double)C + (double)eps));
}

static void layernorm_row_apply(float *out, const float *x, const float *weight, const float *bias, int64_t C,
                                float mean, float rstd) {
    for (int64_t c = 0; c < C; c++) {
        float y = (x[c] - mean) * rstd;
        if (weight) y *= weight[c];
        if (bias) y += bias[c];
        out[c] = y;
    }
}

static void rmsnorm_row_apply(float *out, const float *x, const float *weight, int64_t C, float rstd) {
    for (int64_t c = 0; c < C; c++) out[c] = x[c] * rstd * (weight ? weight[c] : 1.0f);
}

/* dweight[c] = sum_n dout[n, c] * xhat[n, c] and dbias[c] = sum_n dout[n, c], with xhat recomputed from the
 * saved statistics (mean NULL: RMSNorm, xhat = x * rstd). */
static void weight_bias_grads(float *dweight, float *dbias, const float *dout, const float *x, const float *mean,
                              const float *rstd, int64_t N, int64_t C) {
    int64_t nblocks = (C + COL_BLOCK - 1) / COL_BLOCK;
    CG_OMP_FOR_IF(N * C > PARALLEL_MIN && nblocks > 1)
    for (int64_t b = 0; b < nblocks; b++) {
        int64_t c0 = b * COL_BLOCK, c1 = c0 + COL_BLOCK < C ? c0 + COL_BLOCK : C;
        double accw[COL_BLOCK] = {0}, accb[COL_BLOCK] = {0};
        for (int64_t n = 0; n < N; n++) {
            const float *xr = x + n * C, *dr = dout + n * C;
            float m = mean ? mean[n] : 0.0f, r = rstd[n];
            for (int64_t c = c0; c < c1; c++) {
                accw[c - c0] += (double)dr[c] * ((xr[c] - m) * r);
                accb[c - c0] += dr[c];
            }
        }
        for (int64_t c = c0; c < c1; c++) {
            if (dweight) dweight[c] = (float)accw[c - c0];
            if (dbias) dbias[c] = (float)accb[c - c0];
        }
    }
}

/* ------------------------------------------------------------------ LayerNorm */

void cg_cpu_layernorm_forward(float *out, float *mean, float *rstd, const float *x, const float *weight,
                              const float *bias, int64_t N, int64_t C, float eps) {
    CG_OMP_FOR_IF(N * C > PARALLEL_MIN)
    for (int64_t n = 0; n < N; n++) {
        row_mean_rstd(x + n * C, C, eps, &mean[n], &rstd[n]);
        layernorm_row_apply(out + n * C, x + n * C, weight, bias, C, mean[n], rstd[n]);
    }
}

/* dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)), dxhat = dout * weight. */
void cg_cpu_layernorm_backward(float *dx, float *dweight, float *dbias, const float *dout, const float *x,
                               const float *weight, const float *mean, const float *rstd, int64_t N, int64_t C) {
    if (dx) {
        CG_OMP_FOR_IF(N * C > PARALLEL_MIN)
        for (int64_t n = 0; n < N; n++) {
            const float *xr = x + n * C, *dr = dout + n * C;
            float m = mean[n], r = rstd[n];
            double s_dxhat = 0.0, s_dxhat_xhat = 0.0;
            for (int64_t c = 0; c < C; c++) {
                float dxhat = dr[c] * (weight ? weight[c] : 1.0f);
                s_dxhat += dxhat;
                s_dxhat_xhat += (double)dxhat * ((xr[c] - m) * r);
            }
            float mean_dxhat = (float)(s_dxhat / (double)C), mean_dxhat_xhat = (float)(s_dxhat_xhat / (double)C);
            float *dxr = dx + n * C;
            for (int64_t c = 0; c < C; c++) {
                float dxhat = dr[c] * (weight ? weight[c] : 1.0f);
                float xhat = (xr[c] - m) * r;
                dxr[c] = r * (dxhat - mean_dxhat - xhat * mean_dxhat_xhat);
            }
        }
    }
    if (dweight || dbias) weight_bias_grads(dweight, dbias, dout, x, mean, rstd, N, C);
}

/* ------------------------------------------------------------------ RMSNorm */

void cg_cpu_rmsnorm_forward(float *out, float *rstd, const float *x, const float *weight, int64_t N, int64_t C,
                            float eps) {
    CG_OMP_FOR_IF(N * C > PARALLEL_MIN)
    for (int64_t n = 0; n < N; n++) {
        rstd[n] = row_rms_rstd(x + n * C, C, eps);
        rmsnorm_row_apply(out + n * C, x + n * C, weight, C, rstd[n]);
    }
}

/* With xhat = x * rstd: dx = rstd * (dxhat - xhat * mean(dxhat * xhat)), dxhat = dout * weight. */
void cg_cpu_rmsnorm_backward(float *dx, float *dweight, const float *dout, const float *x, const float *weight,
                             const float *rstd, int64_t N, int64_t C) {
    if (dx) {
        CG_OMP_FOR_IF(N * C > PARALLEL_MIN)
        for (int64_t n = 0; n < N; n++) {
            const float *xr = x + n * C, *dr = dout + n * C;
            float r = rstd[n];
            double s = 0.0;
            for (int64_t c = 0; c < C; c++) s += (double)dr[c] * (weight ? weight[c] : 1.0f) * (xr[c] * r);
            float mean_dxhat_xhat = (float)(s / (double)C);
            float *dxr = dx + n * C;
            for (int64_t c = 0; c < C; c++)
                dxr[c] = r * (dr[c] * (weight ? weight[c] : 1.0f) - xr[c] * r * mean_dxhat_xhat);
        }
    }
    if (dweight) weight_bias_grads(dweight, NULL, dout, x, NULL, rstd, N, C);
}

/* ------------------------------------------------------------------ residual add + norm */

void cg_cpu_residual_norm_forward(float *sum, float *out, float *mean, float *rstd, const float *x,
                                  const float *residual, const float *weight, const float *bias, int64_t N,
                                  int64_t C, float eps, bool rms) {
    CG_OMP_FOR_IF(N * C > PARALLEL_MIN)
    for (int64_t n = 0; n < N; n++) {
        float *sr = sum + n * C;
        const float *xr = x + n * C, *rr = residual + n * C;
        for (int64_t c = 0; c < C; c++) sr[c] = xr[c] + rr[c]; /* the row stays in L1 for the norm below */
        if (rms) {
            rstd[n] = row_rms_rstd(sr, C, eps);
            rmsnorm_row_apply(out + n * C, sr, weight, C, rstd[n]);
        } else {
            row_mean_rstd(sr, C, eps, &mean[n], &rstd[n]);
            layernorm_row_apply(out + n * C, sr, weight, bias, C, mean[n], rstd[n]);
        }
    }
}
