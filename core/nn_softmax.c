#include "core/parallel.h"
#include "core/nn_softmax.h"

#include <math.h>
#include <string.h>

#include "core/gemm.h"

/* Rows are independent: parallel over rows once there is enough work to pay for a thread team. */
#define PARALLEL_MIN 32768


/* ------------------------------------------------------------------ softmax, log-softmax */

/* The max of one row: dim elements s apart starting at x. */
static float row_max(const float *x, int64_t dim, int64_t s) {
    float m = -INFINITY;
    for (int64_t k = 0; k < dim; k++)
        if (x[k * s] > m) m = x[k * s];
    return m;
}

static void softmax_rows(float *out, const float *x, int64_t outer, int64_t dim, int64_t inner, int want_log) {
    int64_t rows = outer * inner;
    CG_OMP_FOR_IF(rows * dim > PARALLEL_MIN)
    for (int64_t r = 0; r < rows; r++) {
        int64_t base = (r / inner) * dim * inner + r % inner;
        const float *xr = x + base;
        float *yr = out + base;
        float m = row_max(xr, dim, inner);
        if (m == -INFINITY) m = 0.0f; /* an all -inf row: keep exp(-inf - m) = 0 rather than NaN */
        double sum = 0.0;
        for (int64_t k = 0; k < dim; k++) {
            float e = expf(xr[k * inner] - m);
            if (!want_log) yr[k * inner] = e;
            sum += e;
        }
        if (want_log) {
            /* (x - m) - log(sum), not x - (m + log(sum)): m + log(sum) would round to m's ulp (1e-3 at 1e4) */
            float log_sum = (float)log(sum);
            for (int64_t k = 0; k < dim; k++) yr[k * inner] = (xr[k * inner] - m) - log_sum;
        } else {
            float inv = (float)(1.0 / sum);
            for (int64_t k = 0; k < dim; k++) yr[k * inner] *= inv;
        }
    }
}

void cg_cpu_softmax_forward(float *out, const float *x, int64_t outer, int64_t dim, int64_t inner) {
    softmax_rows(out, x, outer, dim, inner, 0);
}

void cg_cpu_log_softmax_forward(float *out, const float *x, int64_t outer, int64_t dim, int64_t inner) {
    softmax_rows(out, x, outer, dim, inner, 1);
}

void cg_cpu_softmax_backward(float *dx, const float *y, const float *dy, int64_t outer, int64_t dim, int64_t inner) {
    int64_t rows = outer * inner;
    CG_OMP_FOR_IF(rows * dim > PARALLEL_MIN)
    for (int64_t r = 0; r < rows; r++) {
        int64_t base = (r / inner) * dim * inner + r % inner;
        double dot = 0.0;
        for (int64_t k = 0; k < dim; k++) dot += (double)dy[base + k * inner] * y[base + k * inner];
        float d = (float)dot;
        for (int64_t k = 0; k < dim; k++) {
            int64_t i = base + k * inner;
            dx[i] = y[i] * (dy[i] - d);
        }
    }
}

void cg_cpu_log_softmax_backward(float *dx, const float *y, const float *dy, int64_t outer, int64_t dim,
                                 int64_t inner) {
    int64_t rows = outer * inner;
    CG_OMP_FOR_IF(rows * dim > PARALLEL_MIN)
    for (int64_t r = 0; r < rows; r++) {
        int64_t base = (r / inner) * dim * inner + r % inner;
        double sum = 0.0;
        for (int64_t k = 0; k < dim; k++) sum += dy[base + k * inner];
        float s = (float)sum;
        for (int64_t k = 0; k < dim; k++) {
            int64_t i = base + k * inner;
            dx[i] = dy[i] - expf(y[i]) * s;
        }
    }
}

/* ------------------------------------------------------------------ cross-entropy */

void cg_cpu_cross_entropy_forward(float *row_loss, float *lse, const float *logits, const int64_t *targets,
                                  int64_t N, int64_t V, int64_t ignore_index, float label_smoothing) {
    CG_OMP_FOR_IF(N * V > PARALLEL_MIN)
    for (int64_t n = 0; n < N; n++) {
        int64_t t = targets[n];
        if (t == ignore_index) {
            row_loss[n] = 0.0f;
            lse[n] = 0.0f;
            continue;
        }
        const float *xr = logits + n * V;
        float m = row_max(xr, V, 1);
        if (m == -INFINITY) m = 0.0f;
        double sum = 0.0, sum_x = 0.0;
        for (int64_t c = 0; c < V; c++) {
            sum += expf(xr[c] - m);
            sum_x += xr[c];
        }
        double l = (double)m + log(sum);
        double nll = l - xr[t];
        double smooth = l - sum_x / (double)V; /* mean over classes of -log p */
        lse[n] = (float)l;
        row_loss[n] = (float)((1.0 - label_smoothing) * nll + label_smoothing * smooth);
    }
}

void cg_cpu_cross_entropy_backward(float *dlogits, const float *logits, const float *lse, const int64_t *targets,
                                   int64_t N, int64_t V, int64_t ignore_index, float label_smoothing, float scale) {
    float uniform = V > 0 ? label_smoothing / (float)V : 0.0f, on = 1.0f - label_smoothing;
    CG_OMP_FOR_IF(N * V > PARALLEL_MIN)
    for (int64_t n = 0; n < N; n++) {
        float *dr = dlogits + n * V;
        int64_t t = targets[n];
        if (t == ignore_index) {
            memset(dr, 0, sizeof(float) * (size_t)V);
            continue;
        }
        const float *xr = logits + n * V;
        float l = lse[n];
        for (int64_t c = 0; c < V; c++) dr[c] = (expf(xr[c] - l) - uniform) * scale;
        dr[t] -= on * scale;
    }
}

/* ------------------------------------------------------------------ token log-probabilities */

int64_t cg_cpu_token_logprobs_scratch(int64_t N, int64_t chunk) { return N * chunk + N; }

void cg_cpu_token_logprobs_forward(float *out, float *lse, const float *hidden, const float *weight,
                                   const int64_t *tokens, int64_t N, int64_t C, int64_t V, int64_t chunk,
                                   float *scratch) {
    float *logits = scratch;              /* [N, cw] for the chunk in hand */
    float *sumexp = scratch + N * chunk;  /* [N] running sum of exp(logit - running max) */
    float *runmax = lse;                  /* lse holds the running max until the end */
    for (int64_t n = 0; n < N; n++) {
        runmax[n] = -INFINITY;
        sumexp[n] = 0.0f;
        out[n] = 0.0f; /* the target's logit, once its chunk comes */
    }
    for (int64_t v0 = 0; v0 < V; v0 += chunk) {
        int64_t cw = V - v0 < chunk ? V - v0 : chunk;
        /* logits[n, j] = hidden[n] . weight[v0 + j]: B = the chunk's rows of weight, transposed */
        cg_sgemm(false, true, N, cw, C, 1.0f, hidden, C, weight + v0 * C, C, 0.0f, logits, cw);
        CG_OMP_FOR_IF(N * cw > PARALLEL_MIN)
        for (int64_t n = 0; n < N; n++) {
            const float *row = logits + n * cw;
            float m = fmaxf(runmax[n], row_max(row, cw, 1));
            double s = 0.0;
            for (int64_t j = 0; j < cw; j++) s += expf(row[j] - m);
            float rescale = runmax[n] == -INFINITY ? 0.0f : expf(runmax[n] - m);
            sumexp[n] = (float)((double)sumexp[n] * rescale + s);
            runmax[n] = m;
            int64_t t = tokens[n] - v0;
            if (t >= 0 && t < cw) out[n] = row[t];
        }
    }
    for (int64_t n = 0; n < N; n++) {
        float log_sum = logf(sumexp[n]);
        out[n] = (out[n] - runmax[n]) - log_sum; /* the same order as log-softmax, for precision */
        lse[n] = runmax[n] + log_sum;
    }
}

void cg_cpu_token_logprobs_backward(float *dhidden, float *dweight, const float *dout, const float *hidden,
                                    const float *weight, const int64_t *tokens, const float *lse, int64_t N,
                                    int64_t C, int64_t V, int64_t chunk, float *scratch) {
    float *dlogits = scratch; /* [N, cw]: the chunk's logits, turned into their gradient in place */
    if (dhidden && V == 0) memset(dhidden, 0, sizeof(float) * (size_t)(N * C));
    for (int64_t v0 = 0; v0 < V; v0 += chunk) {
        int64_t cw = V - v0 < chunk ? V - v0 : chunk;
        cg_sgemm(false, true, N, cw, C, 1.0f, hidden, C, weight + v0 * C, C, 0.0f, dlogits, cw);
        CG_OMP_FOR_IF(N * cw > PARALLEL_MIN)
        for (int64_t n = 0; n < N; n++) {
            float *row = dlogits + n * cw;
            float d = dout[n], l = lse[n];
            for (int64_t j = 0; j < cw; j++) row[j] = -d * expf(row[j] - l);
            int64_t t = tokens[n] - v0;
            if (t >= 0 && t < cw) row[t] += d;
        }
        /* dhidden (+)= dlogits @ weight_chunk; dweight_chunk = dlogits^T @ hidden */
        if (dhidden)
            cg_sgemm(false, false, N, C, cw, 1.0f, dlogits, cw, weight + v0 * C, C, v0 ? 1.0f : 0.0f, dhidden, C);
        if (dweight) cg_sgemm(true, false, cw, C, N, 1.0f, dlogits, cw, hidden, C, 0.0f, dweight + v0 * C, C);
    }
}
