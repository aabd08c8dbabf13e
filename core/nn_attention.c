#include "core/nn_attention.h"

#include <math.h>
#include <string.h>

/* OMP(...) is an OpenMP pragma when the build has OpenMP, else nothing (no unknown-pragma warnings). */
#ifdef CG_HAVE_OPENMP
#include <omp.h>
#define THREAD_ID() omp_get_thread_num()
#define OMP(...) _Pragma(#__VA_ARGS__)
#else
#define THREAD_ID() 0
#define OMP(...)
#endif

#define TQ CG_ATTN_TILE_Q
#define TK CG_ATTN_TILE_K
/* Below this many multiply-adds a kernel stays on one thread (waking the team costs more). */
#define PARALLEL_MIN_WORK 65536
#define ROPE_CHUNK 64 /* frequencies handled per pass, so their table lives on the stack */

/* ------------------------------------------------------------------ RoPE */

double cg_rope_inv_freq(const cg_rope_config *c, int64_t i, int64_t D) {
    double f = pow((double)c->theta, -2.0 * (double)i / (double)D);
    if (!(c->scaling_factor > 0.0f)) return f;
    const double pi = 3.14159265358979323846;
    double wavelen = 2.0 * pi / f, old = (double)c->original_max_pos;
    double low = c->low_freq_factor, high = c->high_freq_factor;
    if (wavelen < old / high) return f;
    if (wavelen > old / low) return f / c->scaling_factor;
    double smooth = (old / wavelen - low) / (high - low);
    return (1.0 - smooth) * f / c->scaling_factor + smooth * f;
}

/* sign = +1 rotates by +angle (forward), -1 by -angle (backward: the inverse of an orthogonal rotation). */
static void rope_rotate(float *out, const float *x, int64_t B, int64_t H, int64_t T, int64_t D,
                        const cg_rope_config *rope, int64_t pos_offset, const int64_t *positions, double sign) {
    int64_t half = D / 2, rows = B * T;
    for (int64_t i0 = 0; i0 < half; i0 += ROPE_CHUNK) {
        int64_t ni = half - i0 < ROPE_CHUNK ? half - i0 : ROPE_CHUNK;
        double inv_freq[ROPE_CHUNK];
        for (int64_t i = 0; i < ni; i++) inv_freq[i] = cg_rope_inv_freq(rope, i0 + i, D);
        OMP(omp parallel for schedule(static) if (rows * H * ni > PARALLEL_MIN_WORK))
        for (int64_t bt = 0; bt < rows; bt++) {
            int64_t b = bt / T, t = bt % T;
            double pos = (double)(positions ? positions[bt] : pos_offset + t);
            float cs[ROPE_CHUNK], sn[ROPE_CHUNK];
            for (int64_t i = 0; i < ni; i++) {
                double angle = pos * inv_freq[i];
                cs[i] = (float)cos(angle);
                sn[i] = (float)(sign * sin(angle));
            }
            for (int64_t h = 0; h < H; h++) {
                int64_t row = ((b * H + h) * T + t) * D + i0;
                const float *x1 = x + row, *x2 = x + row + half;
                float *o1 = out + row, *o2 = out + row + half;
                for (int64_t i = 0; i < ni; i++) {
                    float a = x1[i], c = x2[i];
                    o1[i] = a * cs[i] - c * sn[i];
                    o2[i] = c * cs[i] + a * sn[i];
                }
            }
        }
    }
}

void cg_cpu_rope_forward(float *out, const float *x, int64_t B, int64_t H, int64_t T, int64_t D,
                         const cg_rope_config *rope, int64_t pos_offset, const int64_t *positions) {
    rope_rotate(out, x, B, H, T, D, rope, pos_offset, positions, 1.0);
}

void cg_cpu_rope_backward(float *dx, const float *dy, int64_t B, int64_t H, int64_t T, int64_t D,
                          const cg_rope_config *rope, int64_t pos_offset, const int64_t *positions) {
    rope_rotate(dx, dy, B, H, T, D, rope, pos_offset, positions, -1.0);
}

/* ------------------------------------------------------------------ attention helpers */

/* Eight partial sums: independent chains the compiler can keep in vector registers; the summation order
 * depends only on n, so results are reproducible. */
static inline float dot(const float *a, const float *b, int64_t n) {
    float s[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) s[j] += a[i + j] * b[i + j];
    for (; i < n; i++) s[0] += a[i] * b[i];
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

static inline void axpy(float *y, float alpha, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] += alpha * x[i];
}

static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

/* Key j is visible to query row t (0-based among the T queries) under the causal rule and the padding mask. */
static inline int key_visible(const uint8_t *mask_row, int64_t j, int64_t last_visible) {
    return j <= last_visible && (!mask_row || mask_row[j]);
}

static int64_t q_blocks(const cg_attention_dims *d) { return (d->q_len + TQ - 1) / TQ; }

/* Work estimate of the causal product (multiply-adds), for the parallel threshold. */
static int64_t attention_work(const cg_attention_dims *d) {
    return d->batch * d->q_heads * d->q_len * d->kv_len * d->head_dim;
}

/* ------------------------------------------------------------------ forward */

#define FWD_SCRATCH (TQ * TK + 2 * TQ) /* scores tile, running max, running sum */

size_t cg_cpu_attention_forward_workspace(const cg_attention_dims *d, int n_threads) {
    (void)d;
    return (size_t)(n_threads > 0 ? n_threads : 1) * FWD_SCRATCH;
}

/* One (batch, head, query block): the output rows double as the running accumulator. */
static void forward_block(float *out, float *lse, const float *q, const float *k, const float *v,
                          const uint8_t *key_mask, const cg_attention_dims *d, int64_t item, float *scratch) {
    int64_t H = d->q_heads, T = d->q_len, S = d->kv_len, D = d->head_dim, group = d->q_heads / d->kv_heads;
    int64_t nqb = q_blocks(d);
    int64_t qb = item % nqb, bh = item / nqb, h = bh % H, b = bh / H, hk = h / group;
    int64_t t0 = qb * TQ, nr = min64(TQ, T - t0), offset = S - T;
    const float *qrows = q + (bh * T + t0) * D;
    const float *kh = k + (b * d->kv_heads + hk) * S * D, *vh = v + (b * d->kv_heads + hk) * S * D;
    float *orows = out + (bh * T + t0) * D;
    const uint8_t *mask_row = key_mask ? key_mask + b * S : NULL;
    float *scores = scratch, *row_max = scratch + TQ * TK, *row_sum = row_max + TQ;
    float scale = d->scale;

    memset(orows, 0, (size_t)(nr * D) * sizeof(float));
    for (int64_t r = 0; r < nr; r++) row_max[r] = -INFINITY, row_sum[r] = 0.0f;
    int64_t key_end = offset + t0 + nr; /* one past the last key any row of the block sees */
    for (int64_t j0 = 0; j0 < key_end; j0 += TK) {
        int64_t nc = min64(TK, key_end - j0);
        for (int64_t r = 0; r < nr; r++) {
            int64_t last = offset + t0 + r;
            const float *qr = qrows + r * D;
            float *sr = scores + r * TK, tile_max = -INFINITY;
            for (int64_t c = 0; c < nc; c++) {
                int64_t j = j0 + c;
                float s = key_visible(mask_row, j, last) ? scale * dot(qr, kh + j * D, D) : -INFINITY;
                sr[c] = s;
                if (s > tile_max) tile_max = s;
            }
            if (tile_max == -INFINITY) continue; /* nothing visible in this tile: the row is unchanged */
            float m_new = row_max[r] > tile_max ? row_max[r] : tile_max;
            float alpha = expf(row_max[r] - m_new); /* 0 when the row had nothing before */
            float sum = 0.0f;
            for (int64_t c = 0; c < nc; c++) {
                float p = expf(sr[c] - m_new);
                sr[c] = p;
                sum += p;
            }
            float *orow = orows + r * D;
            if (alpha != 1.0f)
                for (int64_t i = 0; i < D; i++) orow[i] *= alpha;
            for (int64_t c = 0; c < nc; c++)
                if (sr[c] != 0.0f) axpy(orow, sr[c], vh + (j0 + c) * D, D);
            row_sum[r] = row_sum[r] * alpha + sum;
            row_max[r] = m_new;
        }
    }
    for (int64_t r = 0; r < nr; r++) {
        float *orow = orows + r * D;
        if (row_sum[r] > 0.0f) {
            float inv = 1.0f / row_sum[r];
            for (int64_t i = 0; i < D; i++) orow[i] *= inv;
            lse[bh * T + t0 + r] = row_max[r] + logf(row_sum[r]);
        } else {
            lse[bh * T + t0 + r] = INFINITY; /* no visible key: out stays 0, and P = exp(s - inf) = 0 */
        }
    }
}

void cg_cpu_attention_forward(float *out, float *lse, const float *q, const float *k, const float *v,
                              const uint8_t *key_mask, const cg_attention_dims *d, int n_threads,
                              float *workspace) {
    int64_t items = d->batch * d->q_heads * q_blocks(d);
    int nt = n_threads > 0 ? n_threads : 1;
    (void)nt;
    OMP(omp parallel for schedule(dynamic, 1) num_threads(nt) if (attention_work(d) > PARALLEL_MIN_WORK))
    for (int64_t item = 0; item < items; item++)
        forward_block(out, lse, q, k, v, key_mask, d, item, workspace + (size_t)THREAD_ID() * FWD_SCRATCH);
}

/* ------------------------------------------------------------------ backward */

size_t cg_cpu_attention_backward_workspace(const cg_attention_dims *d, int n_threads) {
    (void)n_threads;
    return (size_t)(d->batch * d->q_heads * d->q_len);
}

/* What the backward needs of one query row to form P = exp(scale q.k - lse) and dS = P (dout.v - delta) scale
 * for each key it sees. */
typedef struct row_ctx {
    const float *q, *dout; /* this query row */
    float lse, delta;
    int64_t last; /* last visible key */
} row_ctx;

/* 0 when the row sees no key at all (nothing to do). */
static inline int row_ctx_init(row_ctx *rc, const float *q, const float *dout, const float *lse,
                               const float *delta, int64_t qrow, int64_t t, const cg_attention_dims *d) {
    rc->lse = lse[qrow];
    if (rc->lse == INFINITY) return 0; /* no visible key: zero gradient */
    rc->q = q + qrow * d->head_dim;
    rc->dout = dout + qrow * d->head_dim;
    rc->delta = delta[qrow];
    rc->last = d->kv_len - d->q_len + t;
    return 1;
}

/* dk, dv for one (batch, kv head, key tile): sum over the group's query heads and every query that sees
 * the tile. */
static void backward_kv_tile(float *dk, float *dv, const float *dout, const float *q, const float *k,
                             const float *v, const float *lse, const float *delta, const uint8_t *key_mask,
                             const cg_attention_dims *d, int64_t item) {
    int64_t Hkv = d->kv_heads, T = d->q_len, S = d->kv_len, D = d->head_dim, group = d->q_heads / Hkv;
    int64_t nkt = (S + TK - 1) / TK;
    int64_t kt = item % nkt, bhk = item / nkt, hk = bhk % Hkv, b = bhk / Hkv;
    int64_t j0 = kt * TK, nc = min64(TK, S - j0), offset = S - T;
    const float *kh = k + bhk * S * D, *vh = v + bhk * S * D;
    float *dkt = dk ? dk + (bhk * S + j0) * D : NULL, *dvt = dv ? dv + (bhk * S + j0) * D : NULL;
    const uint8_t *mask_row = key_mask ? key_mask + b * S : NULL;
    float scale = d->scale;
    if (dkt) memset(dkt, 0, (size_t)(nc * D) * sizeof(float));
    if (dvt) memset(dvt, 0, (size_t)(nc * D) * sizeof(float));
    int64_t t_first = j0 - offset > 0 ? j0 - offset : 0; /* the first query that can see key j0 */
    for (int64_t h = hk * group; h < (hk + 1) * group; h++) {
        int64_t bh = b * d->q_heads + h;
        for (int64_t t = t_first; t < T; t++) {
            row_ctx rc;
            if (!row_ctx_init(&rc, q, dout, lse, delta, bh * T + t, t, d)) continue;
            for (int64_t c = 0; c < nc; c++) {
                int64_t j = j0 + c;
                if (!key_visible(mask_row, j, rc.last)) continue;
                float p = expf(scale * dot(rc.q, kh + j * D, D) - rc.lse);
                if (p == 0.0f) continue;
                if (dvt) axpy(dvt + c * D, p, rc.dout, D);
                if (dkt) {
                    float ds = p * (dot(rc.dout, vh + j * D, D) - rc.delta) * scale;
                    axpy(dkt + c * D, ds, rc.q, D);
                }
            }
        }
    }
}

/* dq for one (batch, query head, query block). */
static void backward_q_block(float *dq, const float *dout, const float *q, const float *k, const float *v,
                             const float *lse, const float *delta, const uint8_t *key_mask,
                             const cg_attention_dims *d, int64_t item) {
    int64_t H = d->q_heads, T = d->q_len, S = d->kv_len, D = d->head_dim, group = d->q_heads / d->kv_heads;
    int64_t nqb = q_blocks(d);
    int64_t qb = item % nqb, bh = item / nqb, h = bh % H, b = bh / H, hk = h / group;
    int64_t t0 = qb * TQ, nr = min64(TQ, T - t0);
    const float *kh = k + (b * d->kv_heads + hk) * S * D, *vh = v + (b * d->kv_heads + hk) * S * D;
    const uint8_t *mask_row = key_mask ? key_mask + b * S : NULL;
    float scale = d->scale;
    memset(dq + (bh * T + t0) * D, 0, (size_t)(nr * D) * sizeof(float));
    int64_t key_end = S - T + t0 + nr;
    for (int64_t j0 = 0; j0 < key_end; j0 += TK) { /* key tiles outermost: each tile's k, v stay in cache */
        int64_t nc = min64(TK, key_end - j0);
        for (int64_t r = 0; r < nr; r++) {
            row_ctx rc;
            if (!row_ctx_init(&rc, q, dout, lse, delta, bh * T + t0 + r, t0 + r, d)) continue;
            float *dqr = dq + (bh * T + t0 + r) * D;
            for (int64_t c = 0; c < nc; c++) {
                int64_t j = j0 + c;
                if (!key_visible(mask_row, j, rc.last)) continue;
                float p = expf(scale * dot(rc.q, kh + j * D, D) - rc.lse);
                if (p == 0.0f) continue;
                float ds = p * (dot(rc.dout, vh + j * D, D) - rc.delta) * scale;
                axpy(dqr, ds, kh + j * D, D);
            }
        }
    }
}

void cg_cpu_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *q, const float *k,
                               const float *v, const float *out, const float *lse, const uint8_t *key_mask,
                               const cg_attention_dims *d, int n_threads, float *workspace) {
    int64_t rows = d->batch * d->q_heads * d->q_len, D = d->head_dim;
    int nt = n_threads > 0 ? n_threads : 1;
    int parallel = attention_work(d) > PARALLEL_MIN_WORK;
    (void)nt, (void)parallel;
    float *delta = workspace; /* rowsum(dout * out): the softmax backward's correction term */
    OMP(omp parallel for schedule(static) num_threads(nt) if (parallel))
    for (int64_t r = 0; r < rows; r++) delta[r] = dot(dout + r * D, out + r * D, D);

    if (dk || dv) {
        int64_t items = d->batch * d->kv_heads * ((d->kv_len + TK - 1) / TK);
        OMP(omp parallel for schedule(dynamic, 1) num_threads(nt) if (parallel))
        for (int64_t item = 0; item < items; item++)
            backward_kv_tile(dk, dv, dout, q, k, v, lse, delta, key_mask, d, item);
    }
    if (dq) {
        int64_t items = d->batch * d->q_heads * q_blocks(d);
        OMP(omp parallel for schedule(dynamic, 1) num_threads(nt) if (parallel))
        for (int64_t item = 0; item < items; item++)
            backward_q_block(dq, dout, q, k, v, lse, delta, key_mask, d, item);
    }
}
