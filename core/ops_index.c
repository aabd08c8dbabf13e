/* CPU forward kernels of the indexing ops: gather, index_select, embedding and concat.
 *
 * gather, index_select and embedding are one kernel: iterate over the output's shape with the source
 * positioned everywhere except along the indexed axis (stride 0 there), and add index * axis stride.
 * They move data without computing, so besides f32 they take the integer dtypes (i32, i64, u8) as long as
 * the output has the source's dtype; bf16/f16 follow the f32-only rule of ops.h. Indices are checked in
 * one serial pass before anything is written, so an error names the first bad index in row-major order. */
#include <stdio.h>
#include <string.h>

#include "core/context.h"
#include "core/ops.h"
#include "core/ops_common.h"

/* ------------------------------------------------------------------ checks */

static cg_status check_data_pair(const char *op, const char *what, const cg_tensor *out, const cg_tensor *x) {
    cg_status st;
    char d[2][CG_DESC_LEN];
    if (cg_ops_on_cuda(out) || cg_ops_on_cuda(x)) { /* a GPU moves any dtype, bf16 included */
        if (!out || !x) return cg_set_error(CG_ERR_INVALID_ARG, "%s: %s is a NULL tensor", op, out ? what : "out");
        if ((st = cg_ops_check_same_device(op, out, what, x)) != CG_OK) return st;
        if (out->dtype != x->dtype)
            return cg_set_error(CG_ERR_DTYPE, "%s: output %s must have the dtype of %s %s", op,
                                cg_tensor_desc(out, d[0], sizeof d[0]), what, cg_tensor_desc(x, d[1], sizeof d[1]));
        return cg_ops_check_writable(op, out);
    }
    if ((st = cg_ops_check_cpu(op, "out", out)) != CG_OK) return st;
    if ((st = cg_ops_check_cpu(op, what, x)) != CG_OK) return st;
    if (x->dtype == CG_BF16 || x->dtype == CG_F16)
        return cg_set_error(CG_ERR_DTYPE, "%s: %s %s must be f32 or an integer dtype (CPU compute is fp32; cast with "
                            "cg_copy first)", op, what, cg_tensor_desc(x, d[0], sizeof d[0]));
    if (out->dtype != x->dtype)
        return cg_set_error(CG_ERR_DTYPE, "%s: output %s must have the dtype of %s %s", op,
                            cg_tensor_desc(out, d[0], sizeof d[0]), what, cg_tensor_desc(x, d[1], sizeof d[1]));
    return cg_ops_check_writable(op, out);
}

static inline int64_t load_index(const char *p, cg_dtype dt) {
    return dt == CG_I64 ? *(const int64_t *)p : (int64_t)*(const int32_t *)p;
}

typedef struct index_scan {
    cg_dtype dtype;
    int64_t limit;
    int64_t pos;     /* row-major position of the next element */
    int64_t bad_pos; /* -1 while every index is in [0, limit) */
    int64_t bad_value;
} index_scan;

static void index_scan_run(void *ctx, int64_t n, char *const *p, const int64_t *s) {
    index_scan *c = ctx;
    if (c->bad_pos >= 0) return;
    int64_t es = (int64_t)cg_dtype_size(c->dtype);
    for (int64_t j = 0; j < n; j++) {
        int64_t v = load_index(p[0] + j * s[0] * es, c->dtype);
        if (v < 0 || v >= c->limit) {
            c->bad_pos = c->pos + j;
            c->bad_value = v;
            return;
        }
    }
    c->pos += n;
}

cg_status cg_ops_check_index_on(const char *op, const char *what, const cg_tensor *t, const cg_tensor *ref) {
    if (!cg_ops_on_cuda(t) && !cg_ops_on_cuda(ref)) return cg_ops_check_index(op, what, t);
    if (!t) return cg_set_error(CG_ERR_INVALID_ARG, "%s: %s is a NULL tensor", op, what);
    cg_status st = cg_ops_check_same_device(op, ref, what, t);
    if (st != CG_OK) return st;
    if (t->dtype != CG_I32 && t->dtype != CG_I64) {
        char d[CG_DESC_LEN];
        return cg_set_error(CG_ERR_DTYPE, "%s: %s %s must be i32 or i64", op, what, cg_tensor_desc(t, d, sizeof d));
    }
    return CG_OK;
}

cg_status cg_ops_find_bad_index(const cg_tensor *index, int64_t limit, int64_t *value, int64_t *pos) {
    cg_ew_operand op = {cg_ops_data(index), (int64_t)cg_dtype_size(index->dtype), index->strides};
    cg_ew_iter it;
    cg_ew_iter_init(&it, index->ndim, index->shape, 1, &op);
    if (cg_ops_on_cuda(index)) {
        cg_status st = cg_ops_cuda_enter("index check", index);
        if (st != CG_OK) return st;
        int64_t *scratch = cg_arena_alloc(cg_step_arena(index->device), 2 * sizeof(int64_t), 16);
        if (!scratch) return cg_last_status();
        cg_cuda_ew ew;
        cg_ops_cuda_ew(&it, &index, &ew);
#ifdef CG_HAVE_CUDA
        return cg_cuda_find_bad_index(&ew, limit, scratch, pos, value);
#endif
    }
    index_scan c = {index->dtype, limit, 0, -1, 0};
    cg_ew_iter_run(&it, index_scan_run, &c, INT64_MAX);
    *value = c.bad_value;
    *pos = c.bad_pos;
    return CG_OK;
}

/* Finds the first index outside [0, limit) in row-major order; returns false if there is none (or the scan
 * failed: then *pos is -2 and the error is set). */
static bool find_bad_index(const cg_tensor *index, int64_t limit, int64_t *value, int64_t *pos) {
    if (cg_ops_find_bad_index(index, limit, value, pos) != CG_OK) {
        *pos = -2;
        return false;
    }
    return *pos >= 0;
}

/* ------------------------------------------------------------------ the take kernel */

typedef struct take_ctx {
    cg_dtype index_dtype;
    int64_t elem_size;
    int64_t axis_stride; /* source elements between consecutive indices */
} take_ctx;

#define TAKE_LOOP(T)                                                                                     \
    for (int64_t j = 0; j < n; j++) {                                                                    \
        int64_t id = load_index(p[2] + j * s[2] * ies, c->index_dtype);                                  \
        ((T *)p[0])[j * s[0]] = ((const T *)p[1])[j * s[1] + id * c->axis_stride];                       \
    }

/* Operands: 0 out, 1 source (stride 0 along the indexed axis), 2 index. */
static void take_run(void *ctx, int64_t n, char *const *p, const int64_t *s) {
    const take_ctx *c = ctx;
    int64_t es = c->elem_size, ies = (int64_t)cg_dtype_size(c->index_dtype);
    if (s[2] == 0 && s[0] == 1 && s[1] == 1) { /* one index for a packed run: an embedding row */
        int64_t id = load_index(p[2], c->index_dtype);
        memcpy(p[0], p[1] + id * c->axis_stride * es, (size_t)(n * es));
        return;
    }
    switch (es) {
    case 1: TAKE_LOOP(uint8_t); break;
    case 4: TAKE_LOOP(uint32_t); break;
    case 8: TAKE_LOOP(uint64_t); break;
    default: break;
    }
}

/* Runs the take kernel over out's shape. src_strides/index_strides are over out's dims. */
static cg_status take(cg_tensor *out, const cg_tensor *src, const int64_t *src_strides, int64_t axis_stride,
                 const cg_tensor *index, const int64_t *index_strides) {
    cg_ew_operand ops[3] = {{cg_ops_data(out), (int64_t)cg_dtype_size(out->dtype), out->strides},
                            {cg_ops_data(src), (int64_t)cg_dtype_size(src->dtype), src_strides},
                            {cg_ops_data(index), (int64_t)cg_dtype_size(index->dtype), index_strides}};
    cg_ew_iter it;
    cg_ew_iter_init(&it, out->ndim, out->shape, 3, ops);
    if (cg_ops_on_cuda(out)) {
        cg_status st = cg_ops_cuda_enter("take", out);
        if (st != CG_OK) return st;
        const cg_tensor *ts[3] = {out, src, index};
        cg_cuda_ew ew;
        cg_ops_cuda_ew(&it, ts, &ew);
#ifdef CG_HAVE_CUDA
        return cg_cuda_take(&ew, axis_stride);
#endif
    }
    take_ctx c = {index->dtype, (int64_t)cg_dtype_size(src->dtype), axis_stride};
    cg_ew_iter_run(&it, take_run, &c, CG_OPS_PARALLEL_MIN);
    return CG_OK;
}

/* ------------------------------------------------------------------ gather */

cg_status cg_gather_into(cg_tensor *out, const cg_tensor *x, int axis, const cg_tensor *index) {
    cg_status st;
    char d[3][CG_DESC_LEN];
    if ((st = check_data_pair("gather", "x", out, x)) != CG_OK) return st;
    if ((st = cg_ops_check_index_on("gather", "index", index, x)) != CG_OK) return st;
    int ax = cg_normalize_axis(axis, x->ndim);
    if (ax < 0)
        return cg_set_error(CG_ERR_INVALID_ARG, "gather: axis %d is out of range for x %s", axis,
                            cg_tensor_desc(x, d[0], sizeof d[0]));
    if (index->ndim != x->ndim)
        return cg_set_error(CG_ERR_SHAPE, "gather: index %s must have as many dims as x %s",
                            cg_tensor_desc(index, d[0], sizeof d[0]), cg_tensor_desc(x, d[1], sizeof d[1]));
    for (int i = 0; i < x->ndim; i++) {
        if (i != ax && index->shape[i] > x->shape[i])
            return cg_set_error(CG_ERR_SHAPE, "gather: index %s is larger than x %s in dim %d (only axis %d may be)",
                                cg_tensor_desc(index, d[0], sizeof d[0]), cg_tensor_desc(x, d[1], sizeof d[1]), i, ax);
    }
    if ((st = cg_ops_check_out_shape("gather", out, index->ndim, index->shape)) != CG_OK) return st;
    int64_t value, pos;
    if (find_bad_index(index, x->shape[ax], &value, &pos))
        return cg_set_error(CG_ERR_INVALID_ARG, "gather: index %lld at position %lld is outside [0, %lld) for axis %d of x %s",
                            (long long)value, (long long)pos, (long long)x->shape[ax], ax,
                            cg_tensor_desc(x, d[0], sizeof d[0]));
    if (pos == -2) return cg_last_status();
    int64_t src_strides[CG_MAX_DIMS];
    for (int i = 0; i < x->ndim; i++) src_strides[i] = i == ax ? 0 : x->strides[i];
    return take(out, x, src_strides, x->strides[ax], index, index->strides);
}

/* ------------------------------------------------------------------ index_select */

cg_status cg_index_select_into(cg_tensor *out, const cg_tensor *x, int axis, const cg_tensor *index) {
    cg_status st;
    char d[2][CG_DESC_LEN];
    if ((st = check_data_pair("index_select", "x", out, x)) != CG_OK) return st;
    if ((st = cg_ops_check_index_on("index_select", "index", index, x)) != CG_OK) return st;
    int ax = cg_normalize_axis(axis, x->ndim);
    if (ax < 0)
        return cg_set_error(CG_ERR_INVALID_ARG, "index_select: axis %d is out of range for x %s", axis,
                            cg_tensor_desc(x, d[0], sizeof d[0]));
    if (index->ndim > 1)
        return cg_set_error(CG_ERR_SHAPE, "index_select: index %s must be 1-D", cg_tensor_desc(index, d[0], sizeof d[0]));
    int64_t count = cg_numel(index), shape[CG_MAX_DIMS];
    for (int i = 0; i < x->ndim; i++) shape[i] = i == ax ? count : x->shape[i];
    if ((st = cg_ops_check_out_shape("index_select", out, x->ndim, shape)) != CG_OK) return st;
    int64_t value, pos;
    if (find_bad_index(index, x->shape[ax], &value, &pos))
        return cg_set_error(CG_ERR_INVALID_ARG,
                            "index_select: index %lld at position %lld is outside [0, %lld) for axis %d of x %s",
                            (long long)value, (long long)pos, (long long)x->shape[ax], ax,
                            cg_tensor_desc(x, d[0], sizeof d[0]));
    if (pos == -2) return cg_last_status();
    int64_t src_strides[CG_MAX_DIMS], index_strides[CG_MAX_DIMS];
    for (int i = 0; i < x->ndim; i++) {
        src_strides[i] = i == ax ? 0 : x->strides[i];
        index_strides[i] = i == ax && index->ndim == 1 ? index->strides[0] : 0;
    }
    return take(out, x, src_strides, x->strides[ax], index, index_strides);
}

/* ------------------------------------------------------------------ embedding */

cg_status cg_embedding_into(cg_tensor *out, const cg_tensor *weight, const cg_tensor *ids) {
    cg_status st;
    char d[2][CG_DESC_LEN];
    if ((st = check_data_pair("embedding", "weight", out, weight)) != CG_OK) return st;
    if ((st = cg_ops_check_index_on("embedding", "ids", ids, weight)) != CG_OK) return st;
    if (weight->ndim != 2)
        return cg_set_error(CG_ERR_SHAPE, "embedding: weight %s must be 2-D [vocab, channels]",
                            cg_tensor_desc(weight, d[0], sizeof d[0]));
    if (ids->ndim + 1 > CG_MAX_DIMS)
        return cg_set_error(CG_ERR_SHAPE, "embedding: ids %s has too many dims (the output adds one; at most %d)",
                            cg_tensor_desc(ids, d[0], sizeof d[0]), CG_MAX_DIMS);
    int nd = ids->ndim + 1;
    int64_t shape[CG_MAX_DIMS];
    memcpy(shape, ids->shape, (size_t)ids->ndim * sizeof *shape);
    shape[nd - 1] = weight->shape[1];
    if ((st = cg_ops_check_out_shape("embedding", out, nd, shape)) != CG_OK) return st;
    int64_t value, pos;
    if (find_bad_index(ids, weight->shape[0], &value, &pos))
        return cg_set_error(CG_ERR_INVALID_ARG, "embedding: id %lld at position %lld is outside [0, %lld) (weight %s)",
                            (long long)value, (long long)pos, (long long)weight->shape[0],
                            cg_tensor_desc(weight, d[0], sizeof d[0]));
    if (pos == -2) return cg_last_status();
    int64_t src_strides[CG_MAX_DIMS] = {0}, ids_strides[CG_MAX_DIMS] = {0};
    src_strides[nd - 1] = weight->strides[1];
    memcpy(ids_strides, ids->strides, (size_t)ids->ndim * sizeof *ids_strides);
    return take(out, weight, src_strides, weight->strides[0], ids, ids_strides);
}

/* ------------------------------------------------------------------ concat */

static void copy_run(void *ctx, int64_t n, char *const *p, const int64_t *s) {
    int64_t es = *(const int64_t *)ctx;
    if (s[0] == 1 && s[1] == 1) {
        memcpy(p[0], p[1], (size_t)(n * es));
        return;
    }
    switch (es) {
    case 1: for (int64_t j = 0; j < n; j++) ((uint8_t *)p[0])[j * s[0]] = ((const uint8_t *)p[1])[j * s[1]]; break;
    case 4: for (int64_t j = 0; j < n; j++) ((uint32_t *)p[0])[j * s[0]] = ((const uint32_t *)p[1])[j * s[1]]; break;
    case 8: for (int64_t j = 0; j < n; j++) ((uint64_t *)p[0])[j * s[0]] = ((const uint64_t *)p[1])[j * s[1]]; break;
    default: break;
    }
}

cg_status cg_concat_into(cg_tensor *out, int n, const cg_tensor *const *xs, int axis) {
    cg_status st;
    char d[2][CG_DESC_LEN];
    if (n < 1 || !xs) return cg_set_error(CG_ERR_INVALID_ARG, "concat: needs at least one input (got %d)", n);
    for (int i = 0; i < n; i++) {
        char what[32];
        snprintf(what, sizeof what, "xs[%d]", i);
        if ((st = check_data_pair("concat", what, out, xs[i])) != CG_OK) return st;
    }
    const cg_tensor *first = xs[0];
    int ax = cg_normalize_axis(axis, first->ndim);
    if (ax < 0)
        return cg_set_error(CG_ERR_INVALID_ARG, "concat: axis %d is out of range for xs[0] %s", axis,
                            cg_tensor_desc(first, d[0], sizeof d[0]));
    int64_t shape[CG_MAX_DIMS];
    memcpy(shape, first->shape, (size_t)first->ndim * sizeof *shape);
    shape[ax] = 0;
    for (int i = 0; i < n; i++) {
        bool fits = xs[i]->ndim == first->ndim;
        for (int k = 0; fits && k < first->ndim; k++) fits = k == ax || xs[i]->shape[k] == first->shape[k];
        if (!fits)
            return cg_set_error(CG_ERR_SHAPE, "concat: xs[%d] %s does not match xs[0] %s outside axis %d", i,
                                cg_tensor_desc(xs[i], d[0], sizeof d[0]), cg_tensor_desc(first, d[1], sizeof d[1]), ax);
        shape[ax] += xs[i]->shape[ax];
    }
    if ((st = cg_ops_check_out_shape("concat", out, first->ndim, shape)) != CG_OK) return st;
    int64_t es = (int64_t)cg_dtype_size(out->dtype), start = 0;
    if (cg_ops_on_cuda(out)) { /* each input into its slice of out, with the strided copy kernel */
        for (int i = 0; i < n; i++) {
            if (cg_numel(xs[i]) > 0) {
                cg_tensor *slice = cg_view_slice(out, ax, start, start + xs[i]->shape[ax], 1);
                if (!slice || (st = cg_copy(slice, xs[i])) != CG_OK) return cg_last_status();
            }
            start += xs[i]->shape[ax];
        }
        return CG_OK;
    }
    for (int i = 0; i < n; i++) {
        const cg_tensor *x = xs[i];
        if (cg_numel(x) > 0) {
            cg_ew_operand ops[2] = {{cg_ops_data(out) + start * out->strides[ax] * es, es, out->strides},
                                    {cg_ops_data(x), es, x->strides}};
            cg_ew_iter it;
            cg_ew_iter_init(&it, x->ndim, x->shape, 2, ops);
            cg_ew_iter_run(&it, copy_run, &es, CG_OPS_PARALLEL_MIN);
        }
        start += x->shape[ax];
    }
    return CG_OK;
}
