/* cg_matmul_into (see ops.h): checks, batch broadcasting, and the mapping of strided operands onto
 * cg_sgemm calls. A matrix whose last dim has unit stride is passed as is (its row stride is the leading
 * dimension); one whose second-to-last dim has unit stride is a transposed view, passed with the transpose
 * flag flipped; anything else is packed first. */
#include <stdio.h>

#include "core/context.h"
#include "core/gemm.h"
#include "core/ops.h"

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

cg_status cg_matmul_into(cg_tensor *out, const cg_tensor *a, const cg_tensor *b, bool trans_a, bool trans_b,
                         float alpha, float beta) {
    char da[200], db[200], dout[200];
    if (!out || !a || !b)
        return cg_set_error(CG_ERR_INVALID_ARG, "matmul: NULL tensor (out %s, a %s, b %s)", out ? "set" : "NULL",
                            a ? "set" : "NULL", b ? "set" : "NULL");
    cg_tensor_desc(a, da, sizeof da);
    cg_tensor_desc(b, db, sizeof db);
    cg_tensor_desc(out, dout, sizeof dout);
    if (a->device.type != CG_DEVICE_CPU || b->device.type != CG_DEVICE_CPU || out->device.type != CG_DEVICE_CPU)
        return cg_set_error(CG_ERR_UNSUPPORTED, "matmul: CUDA tensors need the CUDA backend (a %s, b %s, out %s)",
                            da, db, dout);
    if (a->dtype != CG_F32 || b->dtype != CG_F32)
        return cg_set_error(CG_ERR_DTYPE, "matmul: the CPU matmul takes f32 operands, got a %s and b %s "
                            "(convert with cg_copy first)", da, db);
    if (out->dtype != CG_F32)
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

    int64_t batch = 1;
    for (int d = 0; d < nb; d++) batch *= batch_shape[d];
    if (batch == 0 || M == 0 || N == 0) return CG_OK;

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
    return CG_OK;
}
