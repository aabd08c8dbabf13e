/* cg_matmul_into (see ops.h): checks, batch broadcasting, and the mapping of strided operands onto
 * cg_sgemm calls. A matrix whose last dim has unit stride is passed as is (its row stride is the leading
 * dimension); one whose second-to-last dim has unit stride is a transposed view, passed with the transpose
 * flag flipped; anything else is packed first. */
#include <stdio.h>
#include <string.h>

#include "core/context.h"
#include "core/gemm.h"
#include "core/nn_linear.h"
#include "core/ops.h"
#include "core/ops_common.h"
#include "cuda/matmul.h"

#ifdef CG_HAVE_OPENMP
#include <omp.h>
#endif

/* Below this many multiply-adds per matrix, a batch always runs one matrix per thread. */
#define SMALL_MATRIX_WORK ((int64_t)1 << 18)

/* How one batch of matrices of a tensor reaches cg_sgemm. */
typedef struct matrix_operand {
    const float *data;                 /* first element of the (possibly packed) tensor */
    bool trans;                        /* the trans flag for cg_sgemm, after looking at the strides */
    int64_t ld;                        /* leading dimension for cg_sgemm */
    int64_t batch_strides[CG_MAX_DIMS]; /* per broadcast batch dim; 0 where the operand is broadcast */
} matrix_operand;

/* The last two dims of t as a row-major matrix (trans as given) or as a transposed one, or false when
 * neither dim has unit stride. A dim of size 1 has any stride. */
static bool matrix_layout(const cg_tensor *t, bool trans, bool *trans_out, int64_t *ld) {
    int nd = t->ndim;
    int64_t rows = t->shape[nd - 2], cols = t->shape[nd - 1];
    int64_t row_stride = t->strides[nd - 2], col_stride = t->strides[nd - 1];
    if (cols == 1 || col_stride == 1) {
        *trans_out = trans;
        *ld = rows == 1 ? (cols > 0 ? cols : 1) : row_stride;
        return true;
    }
    if (rows == 1 || row_stride == 1) {
        *trans_out = !trans;
        *ld = col_stride;
        return true;
    }
    return false;
}

/* Fills op for operand t broadcast to the batch shape of nb dims; packs t when its strides need it. */
static cg_status prepare_operand(const cg_tensor *t, bool trans, int nb, matrix_operand *op) {
    if (!matrix_layout(t, trans, &op->trans, &op->ld)) {
        t = cg_contiguous(t);
        if (!t) return cg_error_context("matmul: packing a strided operand: ");
        matrix_layout(t, trans, &op->trans, &op->ld);
    }
    op->data = cg_data(t);
    int lead = nb - (t->ndim - 2);
    for (int d = 0; d < nb; d++) {
        int td = d - lead;
        op->batch_strides[d] = (td < 0 || t->shape[td] == 1) ? 0 : t->strides[td];
    }
    return CG_OK;
}

static void describe_operand(const cg_tensor *t, bool trans, int64_t k, char *buf, size_t n) {
    char desc[200];
    snprintf(buf, n, "%s (%sK=%lld)", cg_tensor_desc(t, desc, sizeof desc), trans ? "transposed, " : "",
             (long long)k);
}

static cg_status matmul_cuda(cg_tensor *out, const cg_tensor *a, const cg_tensor *b, bool trans_a, bool trans_b,
                             float alpha, float beta, const cg_tensor *bias, bool gelu, int nb,
                             const int64_t *batch_shape, int64_t M, int64_t N, int64_t K);

static cg_status matmul_impl(cg_tensor *out, const cg_tensor *a, const cg_tensor *b, bool trans_a, bool trans_b,
                             float alpha, float beta, const cg_tensor *bias, bool gelu) {
    char da[200], db[200], dout[200];
    if (!out || !a || !b)
        return cg_set_error(CG_ERR_INVALID_ARG, "matmul: NULL tensor (out %s, a %s, b %s)", out ? "set" : "NULL",
                            a ? "set" : "NULL", b ? "set" : "NULL");
    cg_tensor_desc(a, da, sizeof da);
    cg_tensor_desc(b, db, sizeof db);
    cg_tensor_desc(out, dout, sizeof dout);
    bool on_cuda = cg_ops_on_cuda(out) || cg_ops_on_cuda(a) || cg_ops_on_cuda(b);
    if (on_cuda && (!cg_device_eq(a->device, out->device) || !cg_device_eq(b->device, out->device)))
        return cg_set_error(CG_ERR_DEVICE, "matmul: a %s, b %s and out %s must be on one device", da, db, dout);
    if (on_cuda) {
        cg_status st;
        if ((st = cg_ops_check_float("matmul", "a", a)) != CG_OK || (st = cg_ops_check_float("matmul", "b", b)) != CG_OK ||
            (st = cg_ops_check_float("matmul", "out", out)) != CG_OK)
            return st;
    } else if (a->dtype != CG_F32 || b->dtype != CG_F32)
        return cg_set_error(CG_ERR_DTYPE, "matmul: the CPU matmul takes f32 operands, got a %s and b %s "
                            "(convert with cg_copy first)", da, db);
    if (!on_cuda && out->dtype != CG_F32)
        return cg_set_error(CG_ERR_DTYPE, "matmul: out must be f32, got %s (a %s, b %s)", dout, da, db);
    if (a->ndim < 2 || b->ndim < 2)
        return cg_set_error(CG_ERR_SHAPE, "matmul: operands need at least 2 dims, got a %s and b %s "
                            "(reshape 1-D tensors)", da, db);

    int ra = a->ndim, rb = b->ndim;
    int64_t M = trans_a ? a->shape[ra - 1] : a->shape[ra - 2];
    int64_t K = trans_a ? a->shape[ra - 2] : a->shape[ra - 1];
    int64_t K_b = trans_b ? b->shape[rb - 1] : b->shape[rb - 2];
    int64_t N = trans_b ? b->shape[rb - 2] : b->shape[rb - 1];
    if (K != K_b) {
        char wa[260], wb[260];
        describe_operand(a, trans_a, K, wa, sizeof wa);
        describe_operand(b, trans_b, K_b, wb, sizeof wb);
        return cg_set_error(CG_ERR_SHAPE, "matmul: inner dimensions differ: a %s and b %s", wa, wb);
    }

    int nb;
    int64_t batch_shape[CG_MAX_DIMS];
    if (cg_broadcast_shapes(ra - 2, a->shape, rb - 2, b->shape, &nb, batch_shape) != CG_OK)
        return cg_set_error(CG_ERR_SHAPE, "matmul: batch dimensions do not broadcast: a %s and b %s", da, db);
    if (nb + 2 > CG_MAX_DIMS)
        return cg_set_error(CG_ERR_SHAPE, "matmul: a %s and b %s give more than %d dims", da, db, CG_MAX_DIMS);

    int64_t want[CG_MAX_DIMS];
    for (int d = 0; d < nb; d++) want[d] = batch_shape[d];
    want[nb] = M, want[nb + 1] = N;
    bool shape_ok = out->ndim == nb + 2;
    for (int d = 0; shape_ok && d < nb + 2; d++) shape_ok = out->shape[d] == want[d];
    if (!shape_ok) {
        char ws[160];
        cg_tensor w = {.ndim = nb + 2};
        for (int d = 0; d < nb + 2; d++) w.shape[d] = want[d];
        return cg_set_error(CG_ERR_SHAPE, "matmul: out is %s, expected shape %s for a %s%s and b %s%s", dout,
                            cg_shape_str(&w, ws, sizeof ws), da, trans_a ? " (transposed)" : "", db,
                            trans_b ? " (transposed)" : "");
    }
    /* out is written through cg_sgemm: unit stride along a row, and no two elements at the same address
     * (an expanded out would be written by several batch elements at once). */
    bool layout_ok = N <= 1 || out->strides[nb + 1] == 1;
    if (M > 1 && out->strides[nb] < N) layout_ok = false;
    for (int d = 0; d < nb; d++)
        if (out->shape[d] > 1 && out->strides[d] == 0) layout_ok = false;
    if (!layout_ok)
        return cg_set_error(CG_ERR_SHAPE, "matmul: out %s must have unit stride in its last dim and rows that "
                            "do not overlap (make it contiguous)", dout);

    if (bias) {
        char dbias[200];
        if (bias->ndim != 1 || bias->shape[0] != N || !cg_device_eq(bias->device, out->device))
            return cg_set_error(CG_ERR_SHAPE, "matmul: bias %s must be [%lld] on the device of out %s",
                                cg_tensor_desc(bias, dbias, sizeof dbias), (long long)N, dout);
        cg_status st = on_cuda ? cg_ops_check_float("matmul", "bias", bias) : cg_ops_check_f32("matmul", "bias", bias);
        if (st != CG_OK) return st;
    }
    if ((bias || gelu) && !on_cuda && !cg_is_contiguous(out))
        return cg_set_error(CG_ERR_SHAPE, "matmul: out %s must be packed for a bias or GELU epilogue", dout);

    int64_t batch = 1;
    for (int d = 0; d < nb; d++) batch *= batch_shape[d];
    if (batch == 0 || M == 0 || N == 0) return CG_OK;
    if (on_cuda) return matmul_cuda(out, a, b, trans_a, trans_b, alpha, beta, bias, gelu, nb, batch_shape, M, N, K);

    matrix_operand pa, pb;
    cg_status st = prepare_operand(a, trans_a, nb, &pa);
    if (st != CG_OK) return st;
    st = prepare_operand(b, trans_b, nb, &pb);
    if (st != CG_OK) return st;
    float *out_data = cg_data(out);
    int64_t ldc = M > 1 ? out->strides[nb] : N;

    /* Many matrices: one whole GEMM per thread beats splitting each small one across threads. */
    int nthreads = cg_get_num_threads();
    bool across_batch = nthreads > 1 && batch >= nthreads &&
                        (batch % nthreads == 0 || batch >= 4 * (int64_t)nthreads || M * N < SMALL_MATRIX_WORK / (K ? K : 1));
    (void)across_batch;
#ifdef CG_HAVE_OPENMP
#pragma omp parallel for schedule(static) if (across_batch)
#endif
    for (int64_t bi = 0; bi < batch; bi++) {
        int64_t off_a = 0, off_b = 0, off_out = 0, rest = bi;
        for (int d = nb - 1; d >= 0; d--) {
            int64_t idx = rest % batch_shape[d];
            rest /= batch_shape[d];
            off_a += idx * pa.batch_strides[d];
            off_b += idx * pb.batch_strides[d];
            off_out += idx * out->strides[d];
        }
        if (K == 0) off_a = off_b = 0; /* empty operands may have no storage at all */
        cg_sgemm(pa.trans, pb.trans, M, N, K, alpha, pa.data + off_a, pa.ld, pb.data + off_b, pb.ld, beta,
                 out_data + off_out, ldc);
    }
    if (bias || gelu) {
        const cg_tensor *bp = bias ? cg_contiguous(bias) : NULL;
        if (bias && !bp) return cg_last_status();
        cg_cpu_bias_gelu_forward(out_data, NULL, bp ? cg_data(bp) : NULL, batch * M, N, gelu);
    }
    return CG_OK;
}

cg_status cg_matmul_into(cg_tensor *out, const cg_tensor *a, const cg_tensor *b, bool trans_a, bool trans_b,
                         float alpha, float beta) {
    return matmul_impl(out, a, b, trans_a, trans_b, alpha, beta, NULL, false);
}

bool cg_matmul_set_tf32(bool on) {
#ifdef CG_HAVE_CUDA
    return cg_cuda_matmul_set_tf32(on);
#else
    (void)on;
    return false;
#endif
}

static bool g_deterministic = true; /* mirrored into the CUDA matmul, whose default is also on */

bool cg_set_deterministic(bool on) {
    bool old = g_deterministic;
    g_deterministic = on;
#ifdef CG_HAVE_CUDA
    cg_cuda_matmul_set_deterministic(on);
#endif
    return old;
}

bool cg_deterministic(void) { return g_deterministic; }

void cg_matmul_cuda_cache_stats(uint64_t *hits, uint64_t *misses) {
#ifdef CG_HAVE_CUDA
    cg_cuda_matmul_cache_stats(hits, misses);
#else
    if (hits) *hits = 0;
    if (misses) *misses = 0;
#endif
}

cg_status cg_matmul_bias_into(cg_tensor *out, const cg_tensor *a, const cg_tensor *b, bool trans_a, bool trans_b,
                              const cg_tensor *bias, bool gelu) {
    return matmul_impl(out, a, b, trans_a, trans_b, 1.0f, 0.0f, bias, gelu);
}

/* ------------------------------------------------------------------ CUDA (cuBLASLt) */

/* The single batch stride of t's matrices over the flattened batch (nb dims of batch_shape), or false when
 * its batch strides do not follow one stride (then it gets packed to the full batch shape). */
static bool flat_batch_stride(const int64_t *strides, int nb, const int64_t *batch_shape, int64_t *flat) {
    int64_t s = -1, inner = 1;
    for (int d = nb - 1; d >= 0; d--) {
        if (batch_shape[d] != 1) {
            if (s < 0) s = strides[d] / (inner ? inner : 1);
            if (strides[d] != s * inner) return false;
        }
        inner *= batch_shape[d];
    }
    *flat = s < 0 ? 0 : s;
    return true;
}

/* One operand for cuBLASLt: the layout of its matrices (trans flag and ld as for cg_sgemm), a single batch
 * stride, and one dtype. Copies (on the GPU) where the strides or dtype need it. */
static cg_status cuda_operand(const cg_tensor *t, bool trans, cg_dtype dtype, int nb, const int64_t *batch_shape,
                              bool full_batch, const void **data, bool *trans_out, int64_t *ld, int64_t *stride) {
    if (t->dtype != dtype) {
        t = cg_tensor_to(cg_step_arena(t->device), t, dtype);
        if (!t) return cg_error_context("matmul: converting an operand: ");
    }
    matrix_operand op;
    cg_status st = prepare_operand(t, trans, nb, &op);
    if (st != CG_OK) return st;
    if (!flat_batch_stride(op.batch_strides, nb, batch_shape, stride) || (full_batch && *stride == 0)) {
        /* e.g. broadcast along an outer batch dim only, or shared by the whole batch where a zero batch stride
         * is not wanted: materialise the full batch */
        int64_t shape[CG_MAX_DIMS];
        for (int d = 0; d < nb; d++) shape[d] = batch_shape[d];
        shape[nb] = t->shape[t->ndim - 2], shape[nb + 1] = t->shape[t->ndim - 1];
        cg_tensor *e = cg_view_expand(t, nb + 2, shape);
        const cg_tensor *packed = e ? cg_tensor_clone(cg_step_arena(t->device), e) : NULL;
        if (!packed) return cg_error_context("matmul: packing a broadcast operand: ");
        if ((st = prepare_operand(packed, trans, nb, &op)) != CG_OK) return st;
        flat_batch_stride(op.batch_strides, nb, batch_shape, stride);
        t = packed;
    }
    *data = op.data;
    *trans_out = op.trans;
    *ld = op.ld;
    return CG_OK;
}

static cg_status matmul_cuda(cg_tensor *out, const cg_tensor *a, const cg_tensor *b, bool trans_a, bool trans_b,
                             float alpha, float beta, const cg_tensor *bias, bool gelu, int nb,
                             const int64_t *batch_shape, int64_t M, int64_t N, int64_t K) {
    cg_status st = cg_ops_cuda_enter("matmul", out);
    if (st != CG_OK) return st;
    if (K == 0) { /* an empty product: out = beta * out (+ bias, GELU) */
        st = beta == 0.0f ? cg_fill(out, 0.0) : cg_affine_into(out, out, beta, 0.0f);
        if (st == CG_OK && bias) {
            cg_tensor *ob = cg_view_alias(out);
            if (!ob) return cg_last_status();
            st = cg_binary_into(CG_OP_ADD, ob, out, bias);
        }
        if (st == CG_OK && gelu) st = cg_unary_into(CG_OP_GELU_TANH, out, out);
        return st;
    }
    /* one dtype for A and B: bf16 when both are, else f32 (the bf16 one is widened, exactly) */
    cg_dtype ab = a->dtype == CG_BF16 && b->dtype == CG_BF16 ? CG_BF16 : CG_F32;
    if (ab == CG_F32 && out->dtype == CG_BF16) { /* cuBLASLt has no f32 x f32 -> bf16: through an f32 result */
        cg_tensor *tmp = cg_tensor_empty(cg_step_arena(out->device), CG_F32, out->ndim, out->shape);
        if (!tmp || (beta != 0.0f && cg_copy(tmp, out) != CG_OK)) return cg_last_status();
        st = matmul_cuda(tmp, a, b, trans_a, trans_b, alpha, beta, bias, gelu, nb, batch_shape, M, N, K);
        return st == CG_OK ? cg_copy(out, tmp) : st;
    }
    cg_cuda_matmul_args p;
    memset(&p, 0, sizeof p);
    p.M = M, p.N = N, p.K = K;
    p.batch = 1;
    for (int d = 0; d < nb; d++) p.batch *= batch_shape[d];
    p.ab_dtype = ab, p.c_dtype = out->dtype;
    p.alpha = alpha, p.beta = beta;
    if ((st = cuda_operand(a, trans_a, ab, nb, batch_shape, false, &p.a, &p.trans_a, &p.lda, &p.stride_a)) != CG_OK)
        return st;
    if ((st = cuda_operand(b, trans_b, ab, nb, batch_shape, false, &p.b, &p.trans_b, &p.ldb, &p.stride_b)) != CG_OK)
        return st;
    /* out: written in place when its rows have unit stride and its batch follows one stride, else through
     * a packed temporary */
    cg_tensor *c = out;
    int64_t out_batch_strides[CG_MAX_DIMS];
    for (int d = 0; d < nb; d++) out_batch_strides[d] = out->strides[d];
    bool direct = flat_batch_stride(out_batch_strides, nb, batch_shape, &p.stride_c) && (p.batch == 1 || p.stride_c != 0);
    if (!direct) {
        c = cg_tensor_empty_like(cg_step_arena(out->device), out);
        if (!c || (beta != 0.0f && cg_copy(c, out) != CG_OK)) return cg_last_status();
        for (int d = 0; d < nb; d++) out_batch_strides[d] = c->strides[d];
        flat_batch_stride(out_batch_strides, nb, batch_shape, &p.stride_c);
    }
    p.c = cg_data(c);
    p.ldc = M > 1 ? c->strides[nb] : N;
    if (bias) {
        const cg_tensor *bp = bias;
        if (bias->dtype != out->dtype || !cg_is_contiguous(bias)) bp = cg_tensor_to(cg_step_arena(out->device), bias, out->dtype);
        if (!bp) return cg_last_status();
        p.bias = cg_data(bp);
    }
    /* B shared by the whole batch and A's and C's matrices stacked row after row: one matmul of batch * M
     * rows (the x [B, T, C] @ W case), which is faster and needs no zero batch stride */
    if (p.batch > 1 && p.stride_b == 0 && !p.trans_a && p.stride_a == M * p.lda && p.stride_c == M * p.ldc &&
        (M == 1 ? p.lda == K && p.ldc == N : true)) {
        p.M = M * p.batch;
        p.batch = 1;
        p.stride_a = p.stride_c = 0;
    }
    /* any other operand shared by a batch is materialised: cuBLASLt's batches are kept to nonzero strides */
    if (p.batch > 1 && p.stride_a == 0 &&
        (st = cuda_operand(a, trans_a, ab, nb, batch_shape, true, &p.a, &p.trans_a, &p.lda, &p.stride_a)) != CG_OK)
        return st;
    if (p.batch > 1 && p.stride_b == 0 &&
        (st = cuda_operand(b, trans_b, ab, nb, batch_shape, true, &p.b, &p.trans_b, &p.ldb, &p.stride_b)) != CG_OK)
        return st;
    p.epilogue = bias ? (gelu ? CG_CUDA_EPILOGUE_GELU_BIAS : CG_CUDA_EPILOGUE_BIAS)
                      : (gelu ? CG_CUDA_EPILOGUE_GELU : CG_CUDA_EPILOGUE_NONE);
#ifdef CG_HAVE_CUDA
    st = cg_cuda_matmul(&p);
#endif
    if (st == CG_OK && c != out) st = cg_copy(out, c);
    return st;
}
