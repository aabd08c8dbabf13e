/* Single-precision GEMM on the CPU (see gemm.h), in the GotoBLAS/BLIS structure:
 *
 *   for jc over N in NC columns          B block [KC x NC] lives in L3
 *     for pc over K in KC steps          pack B into KC x NR panels (shared by all threads)
 *       for ic over M in MC rows         pack A into MC x KC, as panels of MR rows (per thread)
 *         for jr over NR panels          one B panel stays in L1
 *           for ir over MR panels        micro-kernel: an MR x NR tile of C in registers, FMA over KC
 *
 * Packing absorbs the transposes and the leading dimensions, and pads edge panels with zeros, so the
 * micro-kernel always runs a full MR x NR tile; partial tiles are stored through a small buffer.
 * The micro-kernel is compiled twice, for AVX2+FMA and for plain x86-64 (or any other CPU), and picked at
 * run time. Threads split C into a tm x tn grid of row and column ranges; every element of C is owned by
 * exactly one thread and sums its K terms in the same order whatever the thread count, so the result
 * does not depend on the number of threads. */
#include "core/gemm.h"

#include <stdlib.h>
#include <string.h>

#include "core/context.h"

#ifdef CG_HAVE_OPENMP
#include <omp.h>
#endif

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define CG_GEMM_HAVE_AVX2_KERNEL 1
#endif

/* Register tile: 6 rows x 16 columns = 12 ymm accumulators, 2 for the B row, 1 for the broadcast A. */
#define MR 6
#define NR 16

/* Cache blocking, sized for AMD Zen 3 (32 KiB L1d, 512 KiB L2 per core, 32 MiB L3): a KC x NR panel of B
 * (16 KiB) stays in L1, an MC x KC block of A (144 KiB) in L2, a KC x NC block of B (4 MiB) in L3.
 * Overridable at compile time for tuning experiments. */
#ifndef CG_GEMM_KC
#define CG_GEMM_KC 256
#endif
#ifndef CG_GEMM_MC
#define CG_GEMM_MC 144
#endif
#ifndef CG_GEMM_NC
#define CG_GEMM_NC 4080
#endif
#define KC ((int64_t)CG_GEMM_KC)
#define MC ((int64_t)CG_GEMM_MC)
#define NC ((int64_t)CG_GEMM_NC)
_Static_assert(CG_GEMM_MC % MR == 0, "MC must be a multiple of MR");
_Static_assert(CG_GEMM_NC % NR == 0, "NC must be a multiple of NR");

/* Below this many multiply-adds a call runs on one thread: waking the team costs more than it saves. */
#define PARALLEL_MIN_WORK ((int64_t)64 * 64 * 64)

/* ------------------------------------------------------------------ the reference */

void cg_sgemm_reference(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                        const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                        int64_t ldc) {
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            double acc = 0.0;
            for (int64_t k = 0; k < K; k++) {
                double a = trans_a ? A[k * lda + i] : A[i * lda + k];
                double b = trans_b ? B[j * ldb + k] : B[k * ldb + j];
                acc += a * b;
            }
            double prev = beta == 0.0f ? 0.0 : (double)beta * C[i * ldc + j];
            C[i * ldc + j] = (float)(alpha * acc + prev);
        }
}

/* ------------------------------------------------------------------ micro-kernels */

/* c[mr x nr] = alpha * acc + beta * c, without reading c when beta == 0. */
static void store_tile(const float *acc, float *c, int64_t ldc, float alpha, float beta, int mr, int nr) {
    for (int i = 0; i < mr; i++) {
        float *row = c + i * ldc;
        const float *src = acc + i * NR;
        if (beta == 0.0f) {
            for (int j = 0; j < nr; j++) row[j] = alpha * src[j];
        } else {
            for (int j = 0; j < nr; j++) row[j] = alpha * src[j] + beta * row[j];
        }
    }
}

/* One MR x NR tile: a is a packed A panel (kc steps of MR values), b a packed B panel (kc steps of NR). */
typedef void (*microkernel_fn)(int64_t kc, const float *a, const float *b, float *c, int64_t ldc, float alpha,
                               float beta, int mr, int nr);

static void microkernel_generic(int64_t kc, const float *restrict a, const float *restrict b, float *c,
                                int64_t ldc, float alpha, float beta, int mr, int nr) {
    float acc[MR * NR];
    memset(acc, 0, sizeof acc);
    for (int64_t k = 0; k < kc; k++) {
        const float *ak = a + k * MR, *bk = b + k * NR;
        for (int i = 0; i < MR; i++) {
            float ai = ak[i];
            for (int j = 0; j < NR; j++) acc[i * NR + j] += ai * bk[j];
        }
    }
    store_tile(acc, c, ldc, alpha, beta, mr, nr);
}

#ifdef CG_GEMM_HAVE_AVX2_KERNEL
#define AVX2_FMA __attribute__((target("avx2,fma")))

/* One row of a full tile: row[0:16] = alpha * (lo, hi) + beta * row[0:16]. */
static inline AVX2_FMA void store_row_avx2(float *row, __m256 lo, __m256 hi, __m256 valpha, float beta) {
    lo = _mm256_mul_ps(lo, valpha);
    hi = _mm256_mul_ps(hi, valpha);
    if (beta == 1.0f) {
        lo = _mm256_add_ps(lo, _mm256_loadu_ps(row));
        hi = _mm256_add_ps(hi, _mm256_loadu_ps(row + 8));
    } else if (beta != 0.0f) {
        __m256 vbeta = _mm256_set1_ps(beta);
        lo = _mm256_fmadd_ps(vbeta, _mm256_loadu_ps(row), lo);
        hi = _mm256_fmadd_ps(vbeta, _mm256_loadu_ps(row + 8), hi);
    }
    _mm256_storeu_ps(row, lo);
    _mm256_storeu_ps(row + 8, hi);
}

/* The 6 x 16 AVX2 kernel. Packed panels are 64-byte aligned and NR floats wide, so the B loads are
 * aligned; A values are broadcast one at a time. */
static AVX2_FMA void microkernel_avx2(int64_t kc, const float *restrict a, const float *restrict b, float *c,
                                     int64_t ldc, float alpha, float beta, int mr, int nr) {
    __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps();
    __m256 c10 = _mm256_setzero_ps(), c11 = _mm256_setzero_ps();
    __m256 c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps();
    __m256 c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps();
    __m256 c40 = _mm256_setzero_ps(), c41 = _mm256_setzero_ps();
    __m256 c50 = _mm256_setzero_ps(), c51 = _mm256_setzero_ps();
    if (mr == MR && nr == NR)
        for (int i = 0; i < MR; i++) _mm_prefetch((const char *)(c + i * ldc), _MM_HINT_T0);
#define CG_GEMM_ROW(i, lo, hi)                                                                             \
    do {                                                                                                   \
        __m256 ai = _mm256_broadcast_ss(a + (i));                                                          \
        lo = _mm256_fmadd_ps(ai, b0, lo);                                                                  \
        hi = _mm256_fmadd_ps(ai, b1, hi);                                                                  \
    } while (0)
#pragma GCC unroll 4
    for (int64_t k = 0; k < kc; k++) {
        __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
        CG_GEMM_ROW(0, c00, c01);
        CG_GEMM_ROW(1, c10, c11);
        CG_GEMM_ROW(2, c20, c21);
        CG_GEMM_ROW(3, c30, c31);
        CG_GEMM_ROW(4, c40, c41);
        CG_GEMM_ROW(5, c50, c51);
        a += MR;
        b += NR;
    }
#undef CG_GEMM_ROW
    if (mr == MR && nr == NR) {
        __m256 valpha = _mm256_set1_ps(alpha);
        store_row_avx2(c + 0 * ldc, c00, c01, valpha, beta);
        store_row_avx2(c + 1 * ldc, c10, c11, valpha, beta);
        store_row_avx2(c + 2 * ldc, c20, c21, valpha, beta);
        store_row_avx2(c + 3 * ldc, c30, c31, valpha, beta);
        store_row_avx2(c + 4 * ldc, c40, c41, valpha, beta);
        store_row_avx2(c + 5 * ldc, c50, c51, valpha, beta);
        /* Clear the upper ymm halves before returning to code that may be SSE: dirty upper state makes later
         * SSE instructions pay a transition penalty or a false dependency (one run measured a softmax loop
         * after a GEMM 17x slower; not reproduced on every machine). */
        _mm256_zeroupper();
        return;
    }
    float acc[MR * NR] __attribute__((aligned(32)));
    _mm256_store_ps(acc + 0 * NR, c00), _mm256_store_ps(acc + 0 * NR + 8, c01);
    _mm256_store_ps(acc + 1 * NR, c10), _mm256_store_ps(acc + 1 * NR + 8, c11);
    _mm256_store_ps(acc + 2 * NR, c20), _mm256_store_ps(acc + 2 * NR + 8, c21);
    _mm256_store_ps(acc + 3 * NR, c30), _mm256_store_ps(acc + 3 * NR + 8, c31);
    _mm256_store_ps(acc + 4 * NR, c40), _mm256_store_ps(acc + 4 * NR + 8, c41);
    _mm256_store_ps(acc + 5 * NR, c50), _mm256_store_ps(acc + 5 * NR + 8, c51);
    _mm256_zeroupper(); /* store_tile is SSE code, see above */
    store_tile(acc, c, ldc, alpha, beta, mr, nr);
}
#endif

/* The best kernel this CPU runs. CG_GEMM_KERNEL=generic forces the portable one (to test it on a machine
 * with AVX2, or to rule the vector kernel out when chasing a numerical difference). */
static microkernel_fn pick_microkernel(void) {
    const char *forced = getenv("CG_GEMM_KERNEL");
    if (forced && strcmp(forced, "generic") == 0) return microkernel_generic;
#ifdef CG_GEMM_HAVE_AVX2_KERNEL
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return microkernel_avx2;
#endif
    return microkernel_generic;
}

/* ------------------------------------------------------------------ packing */

#ifdef CG_GEMM_HAVE_AVX2_KERNEL
/* Transposes the 8 x 8 block held in r[0..7] (row i in r[i]) in place: afterwards r[j] is column j. */
static inline AVX2_FMA void transpose8_avx2(__m256 r[8]) {
    __m256 t[8], u[8];
    for (int i = 0; i < 4; i++) {
        t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int h = 0; h < 2; h++) { /* rows 0-3, then rows 4-7 */
        u[4 * h + 0] = _mm256_shuffle_ps(t[4 * h], t[4 * h + 2], 0x44);
        u[4 * h + 1] = _mm256_shuffle_ps(t[4 * h], t[4 * h + 2], 0xEE);
        u[4 * h + 2] = _mm256_shuffle_ps(t[4 * h + 1], t[4 * h + 3], 0x44);
        u[4 * h + 3] = _mm256_shuffle_ps(t[4 * h + 1], t[4 * h + 3], 0xEE);
    }
    for (int j = 0; j < 4; j++) {
        r[j] = _mm256_permute2f128_ps(u[j], u[4 + j], 0x20);
        r[j + 4] = _mm256_permute2f128_ps(u[j], u[4 + j], 0x31);
    }
}

/* A full MR-row panel of a row-major A: 8 k at a time, 6 rows (plus 2 zero rows) transposed so that
 * each k's 6 values are contiguous. Returns how many k it packed (a multiple of 8). */
static AVX2_FMA int64_t pack_a_rows_avx2(const float *const rows[MR], int64_t kc, float *panel) {
    int64_t k = 0;
    for (; k + 8 <= kc; k += 8) {
        __m256 r[8];
        for (int i = 0; i < MR; i++) r[i] = _mm256_loadu_ps(rows[i] + k);
        r[6] = r[7] = _mm256_setzero_ps();
        transpose8_avx2(r);
        float *d = panel + k * MR;
        /* 8-wide stores 6 apart: each overwrites the previous one's 2 spare lanes; the last one must not
         * run past the 48 values of this group */
        for (int j = 0; j < 7; j++) _mm256_storeu_ps(d + j * MR, r[j]);
        _mm_storeu_ps(d + 7 * MR, _mm256_castps256_ps128(r[7]));
        float tail[4];
        _mm_storeu_ps(tail, _mm256_extractf128_ps(r[7], 1));
        d[7 * MR + 4] = tail[0];
        d[7 * MR + 5] = tail[1];
    }
    return k;
}

/* A full NR-column panel of a transposed B (stored [N, K]): two 8 x 8 transposes per 8 k. Returns how
 * many k it packed. */
static AVX2_FMA int64_t pack_b_trans_avx2(const float *src, int64_t ldb, int64_t kc, float *panel) {
    int64_t k = 0;
    for (; k + 8 <= kc; k += 8) {
        for (int h = 0; h < 2; h++) {
            __m256 r[8];
            for (int i = 0; i < 8; i++) r[i] = _mm256_loadu_ps(src + (8 * h + i) * ldb + k);
            transpose8_avx2(r);
            for (int j = 0; j < 8; j++) _mm256_store_ps(panel + (k + j) * NR + 8 * h, r[j]);
        }
    }
    return k;
}
#endif

/* Packs op(A)[i0 : i0+mc, k0 : k0+kc] into panels of MR rows: panel p holds, for each k, the MR values
 * of rows p*MR .. p*MR+MR-1 (zero past mc). */
static void pack_a(const float *A, int64_t lda, bool trans_a, int64_t i0, int64_t k0, int64_t mc, int64_t kc,
                   bool avx2, float *restrict dst) {
    (void)avx2;
    for (int64_t ir = 0; ir < mc; ir += MR) {
        int64_t mr = mc - ir < MR ? mc - ir : MR;
        float *panel = dst + ir * kc;
        if (!trans_a) {
            const float *rows[MR];
            for (int64_t ii = 0; ii < MR; ii++) rows[ii] = A + (i0 + ir + (ii < mr ? ii : 0)) * lda + k0;
            int64_t k = 0;
            if (mr == MR) {
#ifdef CG_GEMM_HAVE_AVX2_KERNEL
                if (avx2) k = pack_a_rows_avx2(rows, kc, panel);
#endif
                for (; k < kc; k++)
                    for (int ii = 0; ii < MR; ii++) panel[k * MR + ii] = rows[ii][k];
            } else {
                for (; k < kc; k++)
                    for (int ii = 0; ii < MR; ii++) panel[k * MR + ii] = ii < mr ? rows[ii][k] : 0.0f;
            }
        } else {
            const float *src = A + k0 * lda + i0 + ir; /* stored [K, M]: row k holds the M values */
            if (mr == MR) {
                for (int64_t k = 0; k < kc; k++) memcpy(panel + k * MR, src + k * lda, MR * sizeof(float));
            } else {
                for (int64_t k = 0; k < kc; k++) {
                    const float *s = src + k * lda;
                    int64_t ii = 0;
                    for (; ii < mr; ii++) panel[k * MR + ii] = s[ii];
                    for (; ii < MR; ii++) panel[k * MR + ii] = 0.0f;
                }
            }
        }
    }
}

/* Packs panels [p_begin, p_end) of op(B)[k0 : k0+kc, j0 : j0+nc]: panel p holds, for each k, the NR values
 * of columns p*NR .. p*NR+NR-1 (zero past nc). */
static void pack_b(const float *B, int64_t ldb, bool trans_b, int64_t k0, int64_t j0, int64_t kc, int64_t nc,
                   int64_t p_begin, int64_t p_end, bool avx2, float *restrict dst) {
    (void)avx2;
    for (int64_t p = p_begin; p < p_end; p++) {
        int64_t jr = p * NR;
        int64_t nr = nc - jr < NR ? nc - jr : NR;
        float *panel = dst + jr * kc;
        if (!trans_b) {
            const float *src = B + k0 * ldb + j0 + jr;
            if (nr == NR) {
                for (int64_t k = 0; k < kc; k++) memcpy(panel + k * NR, src + k * ldb, NR * sizeof(float));
            } else {
                for (int64_t k = 0; k < kc; k++) {
                    const float *s = src + k * ldb;
                    float *d = panel + k * NR;
                    int64_t jj = 0;
                    for (; jj < nr; jj++) d[jj] = s[jj];
                    for (; jj < NR; jj++) d[jj] = 0.0f;
                }
            }
        } else {
            /* stored [N, K]: column j of op(B) is row j of B */
            const float *src = B + (j0 + jr) * ldb + k0;
            int64_t k = 0;
#ifdef CG_GEMM_HAVE_AVX2_KERNEL
            if (avx2 && nr == NR) k = pack_b_trans_avx2(src, ldb, kc, panel);
#endif
            for (int64_t jj = 0; jj < NR; jj++) {
                if (jj < nr) {
                    const float *s = src + jj * ldb;
                    for (int64_t kk = k; kk < kc; kk++) panel[kk * NR + jj] = s[kk];
                } else {
                    for (int64_t kk = k; kk < kc; kk++) panel[kk * NR + jj] = 0.0f;
                }
            }
        }
    }
}

/* ------------------------------------------------------------------ the blocked driver */

typedef struct gemm_problem {
    bool trans_a, trans_b;
    int64_t M, N, K;
    float alpha, beta;
    const float *A, *B;
    int64_t lda, ldb, ldc;
    float *C;
    microkernel_fn kernel;
    bool avx2;          /* the packing routines may use AVX2 */
    bool panelwise;     /* all of M in one A block on one row range: B packed a panel at a time */
    int tm, tn;         /* thread grid: tm row ranges x tn column ranges */
    float *bpack;       /* shared packed B block (KC x round_up(NC, NR) at most), or one panel per thread */
    float *apack;       /* one packed A block per thread */
    int64_t apack_size; /* floats per thread */
} gemm_problem;

static int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

static void team_barrier(int nthreads) {
#ifdef CG_HAVE_OPENMP
    if (nthreads > 1) {
#pragma omp barrier
    }
#else
    (void)nthreads;
#endif
}

/* When M fits one A block, each B panel is used by that block only: packing it just before use keeps the
 * packed copy in L1 instead of writing a whole B block out to L3 and reading it back, which is most of
 * the memory traffic when M is small (a few tokens times a weight matrix). Threads split the panels and
 * need no barriers. */
static void gemm_worker_panelwise(const gemm_problem *g, int tid) {
    const int64_t M = g->M, N = g->N, K = g->K;
    int64_t npanels = ceil_div(N, NR), panels_per = ceil_div(npanels, g->tn);
    int64_t p_begin = min64(npanels, tid * panels_per), p_end = min64(npanels, p_begin + panels_per);
    if (p_begin >= p_end) return;
    float *apack = g->apack + tid * g->apack_size;
    float *bpanel = g->bpack + tid * NR * min64(KC, K);
    for (int64_t pc = 0; pc < K; pc += KC) {
        int64_t kc = min64(KC, K - pc);
        float beta = pc == 0 ? g->beta : 1.0f;
        pack_a(g->A, g->lda, g->trans_a, 0, pc, M, kc, g->avx2, apack);
        for (int64_t p = p_begin; p < p_end; p++) {
            int64_t jr = p * NR;
            int nr = (int)min64(NR, N - jr);
            /* as panel 0 of the columns starting at jr */
            pack_b(g->B, g->ldb, g->trans_b, pc, jr, kc, nr, 0, 1, g->avx2, bpanel);
            for (int64_t ir = 0; ir < M; ir += MR) {
                int mr = (int)min64(MR, M - ir);
                g->kernel(kc, apack + ir * kc, bpanel, g->C + ir * g->ldc + jr, g->ldc, g->alpha, beta, mr, nr);
            }
        }
    }
}

/* The part of C that thread tid (of nthreads) computes. Every thread runs the same jc/pc loop, since the
 * B block is packed by all of them together between barriers. */
static void gemm_worker(const gemm_problem *g, int tid, int nthreads) {
    if (g->panelwise) {
        gemm_worker_panelwise(g, tid);
        return;
    }
    const int64_t M = g->M, N = g->N, K = g->K;
    int tid_m = tid % g->tm, tid_n = tid / g->tm; /* tm * tn == nthreads */
    int64_t rows_per = ceil_div(ceil_div(M, MR), g->tm) * MR;
    int64_t m_begin = min64(M, tid_m * rows_per), m_end = min64(M, m_begin + rows_per);
    float *apack = g->apack + tid * g->apack_size;

    for (int64_t jc = 0; jc < N; jc += NC) {
        int64_t nc = min64(NC, N - jc);
        int64_t npanels = ceil_div(nc, NR);
        int64_t panels_per = ceil_div(npanels, g->tn);
        int64_t p_begin = min64(npanels, tid_n * panels_per), p_end = min64(npanels, p_begin + panels_per);
        int64_t pack_per = ceil_div(npanels, nthreads);
        int64_t pack_begin = min64(npanels, tid * pack_per), pack_end = min64(npanels, pack_begin + pack_per);
        for (int64_t pc = 0; pc < K; pc += KC) {
            int64_t kc = min64(KC, K - pc);
            float beta = pc == 0 ? g->beta : 1.0f;
            pack_b(g->B, g->ldb, g->trans_b, pc, jc, kc, nc, pack_begin, pack_end, g->avx2, g->bpack);
            team_barrier(nthreads);
            for (int64_t ic = m_begin; ic < m_end && p_begin < p_end; ic += MC) {
                int64_t mc = min64(MC, m_end - ic);
                pack_a(g->A, g->lda, g->trans_a, ic, pc, mc, kc, g->avx2, apack);
                for (int64_t p = p_begin; p < p_end; p++) {
                    int64_t jr = p * NR;
                    int nr = (int)min64(NR, nc - jr);
                    const float *bp = g->bpack + jr * kc;
                    float *cp = g->C + ic * g->ldc + jc + jr;
                    for (int64_t ir = 0; ir < mc; ir += MR) {
                        int mr = (int)min64(MR, mc - ir);
                        g->kernel(kc, apack + ir * kc, bp, cp + ir * g->ldc, g->ldc, g->alpha, beta, mr, nr);
                    }
                }
            }
            team_barrier(nthreads); /* nobody repacks B while another thread still reads it */
        }
    }
}

/* The tm x tn split of nthreads with the least work for the busiest thread, counted in cycles per k:
 * rows * cols / 16 for the FMAs (two 8-wide FMA units), plus rows per NC block for packing A, which each
 * thread of a row range repeats (B is packed once, by all threads together). */
static void choose_thread_grid(int64_t M, int64_t N, int nthreads, int *tm, int *tn) {
    int64_t mtiles = ceil_div(M, MR), ntiles = ceil_div(N, NR), nblocks = ceil_div(N, NC);
    int64_t best = INT64_MAX;
    *tm = nthreads, *tn = 1;
    for (int m = nthreads; m >= 1; m--) {
        if (nthreads % m) continue;
        int n = nthreads / m;
        int64_t rows = ceil_div(mtiles, m) * MR, cols = ceil_div(ntiles, n) * NR;
        int64_t cost = rows * cols / 16 + rows * nblocks;
        if (cost < best) best = cost, *tm = m, *tn = n;
    }
}

/* C = beta * C (K == 0: the product is empty). */
static void scale_c(int64_t M, int64_t N, float beta, float *C, int64_t ldc) {
    for (int64_t i = 0; i < M; i++) {
        float *row = C + i * ldc;
        if (beta == 0.0f) {
            for (int64_t j = 0; j < N; j++) row[j] = 0.0f;
        } else if (beta != 1.0f) {
            for (int64_t j = 0; j < N; j++) row[j] *= beta;
        }
    }
}

static int gemm_threads(int64_t M, int64_t N, int64_t K) {
#ifdef CG_HAVE_OPENMP
    if (omp_in_parallel()) return 1; /* called per batch element from a parallel loop */
    if (M * N < PARALLEL_MIN_WORK / K) return 1;
    int t = cg_get_num_threads();
    int64_t tiles = ceil_div(M, MR) * ceil_div(N, NR);
    if (tiles < t) t = (int)tiles;
    return t < 1 ? 1 : t;
#else
    (void)M, (void)N, (void)K;
    return 1;
#endif
}

void cg_sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
              int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0) {
        scale_c(M, N, beta, C, ldc);
        return;
    }
    int nthreads = gemm_threads(M, N, K);
    gemm_problem g = {
        .trans_a = trans_a, .trans_b = trans_b, .M = M, .N = N, .K = K, .alpha = alpha, .beta = beta,
        .A = A, .B = B, .lda = lda, .ldb = ldb, .ldc = ldc, .C = C, .kernel = pick_microkernel(),
    };
#ifdef CG_GEMM_HAVE_AVX2_KERNEL
    g.avx2 = g.kernel == microkernel_avx2;
#endif
    choose_thread_grid(M, N, nthreads, &g.tm, &g.tn);

    /* Buffers sized to the problem (a small GEMM gets a small buffer), 64-byte aligned; each thread's A
     * block starts on a 64-byte boundary. */
    int64_t kc_max = min64(KC, K);
    g.panelwise = g.tm == 1 && M <= MC;
    int64_t bpack_size = g.panelwise ? (int64_t)nthreads * NR * kc_max : ceil_div(min64(NC, N), NR) * NR * kc_max;
    g.apack_size = ceil_div(min64(MC, ceil_div(M, MR) * MR) * kc_max, 16) * 16;
    size_t nbytes = (size_t)(bpack_size + g.apack_size * nthreads) * sizeof(float);
    nbytes = (nbytes + 63) / 64 * 64;
    float *buf = aligned_alloc(64, nbytes);
    if (!buf) {
        /* No memory for the packed blocks: the unblocked loop needs none, and gives the same result up to
         * rounding. */
        cg_sgemm_reference(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    g.bpack = buf;
    g.apack = buf + bpack_size;

#ifdef CG_HAVE_OPENMP
    if (nthreads > 1) {
#pragma omp parallel num_threads(nthreads)
        {
            /* The runtime may give fewer threads than asked (limits, nesting); the partition was made for
             * nthreads, so one thread then does all the work. */
            int team = omp_get_num_threads();
            if (team == nthreads) {
                gemm_worker(&g, omp_get_thread_num(), team);
            } else {
#pragma omp single
                {
                    gemm_problem g1 = g;
                    g1.tm = g1.tn = 1;
                    gemm_worker(&g1, 0, 1);
                }
            }
        }
    } else {
        gemm_worker(&g, 0, 1);
    }
#else
    gemm_worker(&g, 0, 1);
#endif
    free(buf);
}
