/* cg_cuda_matmul: cuBLASLt with a per-shape heuristic cache and a workspace allocated once per device.
 *
 * cuBLASLt is column-major. A row-major [r, c] matrix with row stride ld is the column-major [c, r] matrix
 * with the same ld, so the row-major C = op(A) op(B) is computed as the column-major C^T = op(B)^T op(A)^T:
 * B is cuBLAS's first operand, A its second, m = N, n = M. A per-column bias of the row-major C is then a
 * per-row bias of the column-major result, which is what CUBLASLT_EPILOGUE_BIAS adds. */
#include <cublasLt.h>
#include <string.h>

#include "cuda/common.cuh"
#include "cuda/matmul.h"

#ifdef CG_HAVE_CUBLASLT

#define MAX_DEVICES 16
#define WORKSPACE_BYTES ((size_t)32 << 20)
#define CACHE_SIZE 512

static cg_status lt_check(cublasStatus_t s, const char *what) {
    if (s == CUBLAS_STATUS_SUCCESS) return CG_OK;
    return cg_set_error(CG_ERR_CUDA, "matmul: %s: %s (%d)", what, cublasLtGetStatusString(s), (int)s);
}

typedef struct lt_device {
    cublasLtHandle_t handle;
    void *workspace;
    bool ready;
} lt_device;

static lt_device g_lt[MAX_DEVICES];
static bool g_tf32 = true;
/* Deterministic mode (cg_set_deterministic): the heuristic may only pick algorithms without split-K, whose dot
 * products each run in one sequence (CUBLASLT_REDUCTION_SCHEME_NONE). Off: every reduction scheme. */
static bool g_deterministic = true;

/* What an algorithm choice depends on: shapes, layouts, types, transposes, epilogue, pointer alignment. */
typedef struct cache_key {
    int64_t M, N, K, batch, lda, ldb, ldc, stride_a, stride_b, stride_c;
    int device, ab_dtype, c_dtype, epilogue;
    uint32_t align_a, align_b, align_c, align_bias;
    bool trans_a, trans_b, tf32, beta_nonzero, deterministic;
} cache_key;

typedef struct cache_entry {
    cache_key key;
    cublasLtMatmulAlgo_t algo;
    bool used;
} cache_entry;

static cache_entry g_cache[CACHE_SIZE];
static int g_cache_next;
static uint64_t g_hits, g_misses;

extern "C" bool cg_cuda_matmul_set_tf32(bool on) {
    bool old = g_tf32;
    g_tf32 = on;
    return old;
}

extern "C" bool cg_cuda_matmul_set_deterministic(bool on) {
    bool old = g_deterministic;
    g_deterministic = on;
    return old;
}

extern "C" void cg_cuda_matmul_cache_stats(uint64_t *hits, uint64_t *misses) {
    if (hits) *hits = g_hits;
    if (misses) *misses = g_misses;
}

extern "C" void cg_cuda_matmul_release(void) {
    for (int d = 0; d < MAX_DEVICES; d++) {
        lt_device *dev = &g_lt[d];
        if (!dev->ready) continue;
        cudaSetDevice(d);
        cudaFree(dev->workspace); /* synchronises the device: no matmul is still using it */
        cublasLtDestroy(dev->handle);
        memset(dev, 0, sizeof *dev);
    }
    memset(g_cache, 0, sizeof g_cache);
    g_cache_next = 0;
    cudaGetLastError();
}

static cg_status lt_get(int device, lt_device **out) {
    if (device < 0 || device >= MAX_DEVICES) return cg_set_error(CG_ERR_DEVICE, "matmul: bad device %d", device);
    lt_device *d = &g_lt[device];
    if (!d->ready) {
        cg_status s = lt_check(cublasLtCreate(&d->handle), "cublasLtCreate");
        if (s != CG_OK) return s;
        if ((s = cg_cuda_check(cudaMalloc(&d->workspace, WORKSPACE_BYTES), "matmul: workspace")) != CG_OK) {
            cublasLtDestroy(d->handle);
            return s;
        }
        d->ready = true;
    }
    *out = d;
    return CG_OK;
}

/* The largest power of two (up to 256) the address is a multiple of: cuBLASLt assumes 256 unless told. */
static uint32_t alignment_of(const void *p) {
    uintptr_t v = (uintptr_t)p;
    uint32_t a = 256;
    while (a > 1 && v % a != 0) a /= 2;
    return a;
}

static cudaDataType_t cuda_type(int dt) { return dt == CG_BF16 ? CUDA_R_16BF : CUDA_R_32F; }

/* The column-major layout of a row-major matrix with `rows` x `cols` and row stride ld, batched. */
static cg_status make_layout(cublasLtMatrixLayout_t *l, int dt, int64_t rows, int64_t cols, int64_t ld,
                             int64_t batch, int64_t stride) {
    cg_status s = lt_check(cublasLtMatrixLayoutCreate(l, cuda_type(dt), (uint64_t)cols, (uint64_t)rows, ld),
                           "cublasLtMatrixLayoutCreate");
    if (s != CG_OK || batch <= 1) return s;
    int32_t count = (int32_t)batch;
    s = lt_check(cublasLtMatrixLayoutSetAttribute(*l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof count),
                 "batch count");
    if (s == CG_OK)
        s = lt_check(cublasLtMatrixLayoutSetAttribute(*l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride,
                                                      sizeof stride),
                     "batch stride");
    return s;
}

extern "C" cg_status cg_cuda_matmul(const cg_cuda_matmul_args *p) {
    if (p->M == 0 || p->N == 0 || p->batch == 0) return CG_OK;
    if (p->batch > INT32_MAX) return cg_set_error(CG_ERR_SHAPE, "matmul: batch %lld too large", (long long)p->batch);
    int device = 0;
    cg_status s = cg_cuda_check(cudaGetDevice(&device), "matmul: cudaGetDevice");
    if (s != CG_OK) return s;
    lt_device *dev = NULL;
    if ((s = lt_get(device, &dev)) != CG_OK) return s;

    cublasLtMatmulDesc_t desc = NULL;
    cublasLtMatrixLayout_t la = NULL, lb = NULL, lc = NULL;
    cublasLtMatmulPreference_t pref = NULL;
    bool tf32 = g_tf32 && p->ab_dtype == CG_F32;
    cublasComputeType_t compute = tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
    /* cuBLAS's first operand is B, its second A (see the top of the file) */
    cublasOperation_t op_first = p->trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasOperation_t op_second = p->trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_DEFAULT;
    switch (p->epilogue) {
    case CG_CUDA_EPILOGUE_BIAS: epi = CUBLASLT_EPILOGUE_BIAS; break;
    case CG_CUDA_EPILOGUE_GELU: epi = CUBLASLT_EPILOGUE_GELU; break;
    case CG_CUDA_EPILOGUE_GELU_BIAS: epi = CUBLASLT_EPILOGUE_GELU_BIAS; break;
    default: break;
    }
    s = lt_check(cublasLtMatmulDescCreate(&desc, compute, CUDA_R_32F), "cublasLtMatmulDescCreate");
    if (s == CG_OK) s = lt_check(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_first, sizeof op_first), "transa");
    if (s == CG_OK) s = lt_check(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_second, sizeof op_second), "transb");
    if (s == CG_OK && epi != CUBLASLT_EPILOGUE_DEFAULT)
        s = lt_check(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi), "epilogue");
    if (s == CG_OK && p->bias)
        s = lt_check(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &p->bias, sizeof p->bias), "bias");
    /* stored shapes (row-major): B is [K, N] or [N, K]; A is [M, K] or [K, M]; C is [M, N] */
    if (s == CG_OK)
        s = make_layout(&lb, p->ab_dtype, p->trans_b ? p->N : p->K, p->trans_b ? p->K : p->N, p->ldb, p->batch, p->stride_b);
    if (s == CG_OK)
        s = make_layout(&la, p->ab_dtype, p->trans_a ? p->K : p->M, p->trans_a ? p->M : p->K, p->lda, p->batch, p->stride_a);
    if (s == CG_OK) s = make_layout(&lc, p->c_dtype, p->M, p->N, p->ldc, p->batch, p->stride_c);

    cache_key key;
    memset(&key, 0, sizeof key); /* the padding too: keys compare with memcmp */
    key.M = p->M, key.N = p->N, key.K = p->K, key.batch = p->batch;
    key.lda = p->lda, key.ldb = p->ldb, key.ldc = p->ldc;
    key.stride_a = p->stride_a, key.stride_b = p->stride_b, key.stride_c = p->stride_c;
    key.device = device, key.ab_dtype = p->ab_dtype, key.c_dtype = p->c_dtype, key.epilogue = (int)p->epilogue;
    key.align_a = alignment_of(p->a), key.align_b = alignment_of(p->b), key.align_c = alignment_of(p->c);
    key.align_bias = p->bias ? alignment_of(p->bias) : 0;
    key.trans_a = p->trans_a, key.trans_b = p->trans_b, key.tf32 = tf32, key.beta_nonzero = p->beta != 0.0f;
    key.deterministic = g_deterministic;

    cublasLtMatmulAlgo_t algo;
    memset(&algo, 0, sizeof algo);
    bool found = false;
    for (int i = 0; s == CG_OK && i < CACHE_SIZE && !found; i++) {
        if (g_cache[i].used && memcmp(&g_cache[i].key, &key, sizeof key) == 0) {
            algo = g_cache[i].algo;
            found = true;
        }
    }
    if (s == CG_OK && found) g_hits++;
    if (s == CG_OK && !found) {
        g_misses++;
        uint64_t ws = WORKSPACE_BYTES;
        cublasLtMatmulHeuristicResult_t result;
        int returned = 0;
        s = lt_check(cublasLtMatmulPreferenceCreate(&pref), "cublasLtMatmulPreferenceCreate");
        if (s == CG_OK)
            s = lt_check(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws),
                         "workspace preference");
        /* the real alignments (cuBLASLt's first operand is B, its second A) */
        const cublasLtMatmulPreferenceAttributes_t align_attr[4] = {
            CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
            CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
        const uint32_t align_val[4] = {key.align_b, key.align_a, key.align_c, key.align_c};
        for (int i = 0; s == CG_OK && i < 4; i++)
            s = lt_check(cublasLtMatmulPreferenceSetAttribute(pref, align_attr[i], &align_val[i], sizeof align_val[i]),
                         "alignment preference");
        /* deterministic: first no split-K at all; if cuBLASLt has nothing for the shape, split-K whose partials
         * are reduced in a separate step (COMPUTE_TYPE / OUTPUT_TYPE: workspace partials summed by a second
         * kernel), never INPLACE (partials accumulated in the output buffer itself) */
        const uint32_t masks[2] = {CUBLASLT_REDUCTION_SCHEME_NONE,
                                   CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE | CUBLASLT_REDUCTION_SCHEME_OUTPUT_TYPE};
        for (int attempt = 0; s == CG_OK && returned == 0 && attempt < (key.deterministic ? 2 : 1); attempt++) {
            if (key.deterministic)
                s = lt_check(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK,
                                                                  &masks[attempt], sizeof masks[attempt]),
                             "reduction scheme preference");
            if (s != CG_OK) break;
            cublasStatus_t hs = cublasLtMatmulAlgoGetHeuristic(dev->handle, desc, lb, la, lc, lc, pref, 1, &result, &returned);
            /* "not supported" under the first deterministic mask only means: try the second */
            if (hs == CUBLAS_STATUS_NOT_SUPPORTED && key.deterministic && attempt == 0) returned = 0;
            else s = lt_check(hs, "cublasLtMatmulAlgoGetHeuristic");
        }
        if (s == CG_OK && returned == 0)
            s = cg_set_error(CG_ERR_UNSUPPORTED,
                             "matmul: cuBLASLt has no algorithm for M=%lld N=%lld K=%lld batch=%lld (%s, %s%s%s%s)",
                             (long long)p->M, (long long)p->N, (long long)p->K, (long long)p->batch,
                             p->ab_dtype == CG_BF16 ? "bf16" : "f32", p->trans_a ? "A^T " : "", p->trans_b ? "B^T " : "",
                             p->epilogue ? "with an epilogue " : "",
                             key.deterministic ? "in deterministic mode: split-K in place refused" : "");
        if (s == CG_OK) {
            algo = result.algo;
            cache_entry *e = &g_cache[g_cache_next];
            g_cache_next = (g_cache_next + 1) % CACHE_SIZE;
            e->key = key;
            e->algo = algo;
            e->used = true;
        }
    }
    if (s == CG_OK) {
        s = lt_check(cublasLtMatmul(dev->handle, desc, &p->alpha, p->b, lb, p->a, la, &p->beta, p->c, lc, p->c, lc, &algo,
                                    dev->workspace, WORKSPACE_BYTES, cg_cuda_compute_stream()),
                     "cublasLtMatmul");
    }
    if (s == CG_OK) s = cg_cuda_check_launch("matmul");
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (lc) cublasLtMatrixLayoutDestroy(lc);
    if (la) cublasLtMatrixLayoutDestroy(la);
    if (lb) cublasLtMatrixLayoutDestroy(lb);
    if (desc) cublasLtMatmulDescDestroy(desc);
    return s;
}

#else /* CUDA without cuBLASLt: the matmul is missing, and says so */

extern "C" cg_status cg_cuda_matmul(const cg_cuda_matmul_args *p) {
    (void)p;
    return cg_set_error(CG_ERR_UNSUPPORTED, "matmul: this build has CUDA but not cuBLASLt (libcublasLt.so was not found)");
}
extern "C" bool cg_cuda_matmul_set_tf32(bool on) {
    (void)on;
    return false;
}
extern "C" bool cg_cuda_matmul_set_deterministic(bool on) {
    (void)on;
    return true;
}
extern "C" void cg_cuda_matmul_cache_stats(uint64_t *hits, uint64_t *misses) {
    if (hits) *hits = 0;
    if (misses) *misses = 0;
}
extern "C" void cg_cuda_matmul_release(void) {}

#endif
