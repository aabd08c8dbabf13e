/* CPU forward kernel of the reductions over one axis (sum, mean, max, min with the first arg-extreme).
 *
 * Three paths: the reduced axis innermost in a packed tensor (each output reduces one contiguous row),
 * an outer axis of a packed tensor (rows of the reduced axis are accumulated into a block of outputs,
 * which vectorises), and a generic strided walk for any other layout. Sums accumulate in double, so
 * every path agrees with a double-precision reference to float rounding. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("tree-vectorize", "vect-cost-model=dynamic")
#endif

#include <math.h>
#include <string.h>

#ifdef CG_HAVE_OPENMP
#include <omp.h>
#endif

#include "core/context.h"
#include "core/ops.h"
#include "core/ops_common.h"

const char *cg_reduce_op_name(cg_reduce_op op) {
    static const char *const names[CG_REDUCE_OP_COUNT] = {"sum", "mean", "max", "min"};
    return (unsigned)op < CG_REDUCE_OP_COUNT ? names[op] : "unknown reduce op";
}

/* v replaces the current extreme m: strictly greater (max) or smaller (min), or the first NaN, which
 * then sticks (torch.max propagates NaN and points at it). Ties keep the earlier index. */
static inline bool replaces(bool is_max, float v, float m) {
    if (v != v) return m == m;
    return is_max ? v > m : v < m;
}

typedef struct reduce_partial {
    double val;
    int64_t idx;
} reduce_partial;

/* ------------------------------------------------------------------ contiguous rows */

static double sum_contig(const float *x, int64_t n) {
    /* Eight independent double lanes: the compiler vectorises them without reassociating one sum. */
    double lane[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) lane[j] += x[i + j];
    double s = ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
    for (; i < n; i++) s += x[i];
    return s;
}

static double sum_strided(const float *x, int64_t n, int64_t stride) {
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) s += x[i * stride];
    return s;
}

/* Extreme of n elements at stride; idx is relative to x. n >= 1. */
static reduce_partial extreme_strided(const float *x, int64_t n, int64_t stride, bool is_max) {
    float m = x[0];
    int64_t at = 0;
    if (m != m) return (reduce_partial){m, 0};
    for (int64_t i = 1; i < n; i++) {
        float v = x[i * stride];
        if (replaces(is_max, v, m)) {
            m = v;
            at = i;
            if (v != v) break;
        }
    }
    return (reduce_partial){m, at};
}

/* Reduces one row of n elements at stride into (value, index). */
static reduce_partial reduce_row(cg_reduce_op op, const float *x, int64_t n, int64_t stride) {
    if (op == CG_REDUCE_SUM || op == CG_REDUCE_MEAN)
        return (reduce_partial){stride == 1 ? sum_contig(x, n) : sum_strided(x, n, stride), 0};
    return extreme_strided(x, n, stride, op == CG_REDUCE_MAX);
}

/* Folds partial q (a later part of the row) into p. */
static reduce_partial combine(cg_reduce_op op, reduce_partial p, reduce_partial q) {
    if (op == CG_REDUCE_SUM || op == CG_REDUCE_MEAN) return (reduce_partial){p.val + q.val, 0};
    return replaces(op == CG_REDUCE_MAX, (float)q.val, (float)p.val) ? q : p;
}

static inline float finish(cg_reduce_op op, double v, int64_t n) {
    if (op != CG_REDUCE_MEAN) return (float)v;
    return n > 0 ? (float)(v / (double)n) : NAN;
}

/* Reduces `rows` packed rows of length n into out[rows] (and argout). */
static void reduce_inner_packed(cg_reduce_op op, float *out, int64_t *argout, const float *x, int64_t rows, int64_t n) {
    int nt = cg_ops_threads_for(rows * n, CG_OPS_PARALLEL_MIN);
    if (nt <= 1 || rows >= nt) {
#ifdef CG_HAVE_OPENMP
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
#endif
        for (int64_t r = 0; r < rows; r++) {
            reduce_partial p = reduce_row(op, x + r * n, n, 1);
            out[r] = finish(op, p.val, n);
            if (argout) argout[r] = p.idx;
        }
        return;
    }
    /* Fewer rows than threads: split each long row into one chunk per thread and fold the partials in
     * chunk order (keeping the first-index rule for max/min). */
    enum { MAX_CHUNKS = 256 };
    if (nt > MAX_CHUNKS) nt = MAX_CHUNKS;
    if (nt > n) nt = (int)n; /* so that no chunk is empty */
    reduce_partial part[MAX_CHUNKS];
    for (int64_t r = 0; r < rows; r++) {
        const float *row = x + r * n;
#ifdef CG_HAVE_OPENMP
#pragma omp parallel for num_threads(nt) schedule(static)
#endif
        for (int c = 0; c < nt; c++) {
            int64_t b = n * c / nt, e = n * (c + 1) / nt;
            part[c] = reduce_row(op, row + b, e - b, 1);
            part[c].idx += b;
        }
        reduce_partial acc = part[0];
        for (int c = 1; c < nt; c++) acc = combine(op, acc, part[c]);
        out[r] = finish(op, acc.val, n);
        if (argout) argout[r] = acc.idx;
    }
}

/* ------------------------------------------------------------------ outer axis of a packed tensor */

enum { COL_BLOCK = 256 };

/* x is [outer, n, inner] packed, out [outer, inner]: each task accumulates the n rows of one block of up
 * to COL_BLOCK columns. */
static void reduce_outer_packed(cg_reduce_op op, float *out, int64_t *argout, const float *x, int64_t outer,
                                int64_t n, int64_t inner) {
    int64_t blocks = (inner + COL_BLOCK - 1) / COL_BLOCK, tasks = outer * blocks;
    int nt = cg_ops_threads_for(outer * n * inner, CG_OPS_PARALLEL_MIN);
    if (nt > tasks) nt = (int)tasks;
    bool is_sum = op == CG_REDUCE_SUM || op == CG_REDUCE_MEAN, is_max = op == CG_REDUCE_MAX;
#ifdef CG_HAVE_OPENMP
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
#endif
    for (int64_t t = 0; t < tasks; t++) {
        int64_t o = t / blocks, c0 = (t % blocks) * COL_BLOCK;
        int64_t w = inner - c0 < COL_BLOCK ? inner - c0 : COL_BLOCK;
        const float *base = x + o * n * inner + c0;
        float *dst = out + o * inner + c0;
        if (is_sum) {
            double acc[COL_BLOCK];
            for (int64_t j = 0; j < w; j++) acc[j] = 0.0;
            for (int64_t r = 0; r < n; r++) {
                const float *row = base + r * inner;
                for (int64_t j = 0; j < w; j++) acc[j] += row[j];
            }
            for (int64_t j = 0; j < w; j++) dst[j] = finish(op, acc[j], n);
        } else {
            float m[COL_BLOCK];
            int64_t at[COL_BLOCK];
            for (int64_t j = 0; j < w; j++) {
                m[j] = base[j];
                at[j] = 0;
            }
            for (int64_t r = 1; r < n; r++) {
                const float *row = base + r * inner;
                if (!argout) { /* value only: a branch-free select the compiler vectorises */
                    if (is_max) {
                        for (int64_t j = 0; j < w; j++) m[j] = (row[j] > m[j] || row[j] != row[j]) ? row[j] : m[j];
                    } else {
                        for (int64_t j = 0; j < w; j++) m[j] = (row[j] < m[j] || row[j] != row[j]) ? row[j] : m[j];
                    }
                    continue;
                }
                for (int64_t j = 0; j < w; j++) {
                    if (replaces(is_max, row[j], m[j])) {
                        m[j] = row[j];
                        at[j] = r;
                    }
                }
            }
            memcpy(dst, m, (size_t)w * sizeof *m);
            if (argout) memcpy(argout + o * inner + c0, at, (size_t)w * sizeof *at);
        }
    }
}

/* ------------------------------------------------------------------ generic strided path */

typedef struct strided_ctx {
    cg_reduce_op op;
    int64_t n, stride; /* the reduced axis */
    bool has_arg;
} strided_ctx;

/* Operands: 0 out, 1 x (positioned at the start of each output's row), 2 argout (if any). */
static void reduce_strided_run(void *ctx, int64_t count, char *const *p, const int64_t *s) {
    const strided_ctx *c = ctx;
    float *out = (float *)p[0];
    const float *x = (const float *)p[1];
    int64_t *arg = c->has_arg ? (int64_t *)p[2] : NULL;
    for (int64_t j = 0; j < count; j++) {
        reduce_partial r = reduce_row(c->op, x + j * s[1], c->n, c->stride);
        out[j * s[0]] = finish(c->op, r.val, c->n);
        if (arg) arg[j * s[2]] = r.idx;
    }
}

static void fill_run(void *ctx, int64_t count, char *const *p, const int64_t *s) {
    const float value = *(const float *)ctx;
    float *o = (float *)p[0];
    for (int64_t j = 0; j < count; j++) o[j * s[0]] = value;
}

/* ------------------------------------------------------------------ CUDA */

/* The GPU kernel reads a packed x and writes packed outputs: a strided x is packed first, strided outputs
 * are written through packed temporaries. */
static cg_status reduce_cuda(cg_reduce_op op, cg_tensor *out, cg_tensor *argout, const cg_tensor *x, int ax,
                             int64_t n) {
    const char *name = cg_reduce_op_name(op);
    cg_status st = cg_ops_cuda_enter(name, out);
    if (st != CG_OK) return st;
    if (n == 0) return cg_fill(out, op == CG_REDUCE_SUM ? 0.0 : NAN);
    const cg_tensor *xc = cg_contiguous(x);
    if (!xc) return cg_error_context("%s: packing x: ", name);
    cg_tensor *o = out, *arg = argout;
    if (!cg_is_contiguous(out) && !(o = cg_tensor_empty_like(cg_step_arena(out->device), out))) return cg_last_status();
    if (argout && !cg_is_contiguous(argout) && !(arg = cg_tensor_empty_like(cg_step_arena(argout->device), argout)))
        return cg_last_status();
    int64_t outer = 1, inner = 1;
    for (int i = 0; i < ax; i++) outer *= x->shape[i];
    for (int i = ax + 1; i < x->ndim; i++) inner *= x->shape[i];
#ifdef CG_HAVE_CUDA
    size_t scratch_bytes = cg_cuda_reduce_scratch_bytes(outer, n, inner);
    void *scratch = scratch_bytes ? cg_arena_alloc(cg_step_arena(out->device), scratch_bytes, 64) : NULL;
    if (scratch_bytes && !scratch) return cg_last_status();
    st = cg_cuda_reduce((int)op, cg_ops_data(o), o->dtype, arg ? (int64_t *)cg_ops_data(arg) : NULL, cg_ops_data(xc),
                        xc->dtype, outer, n, inner, scratch);
#endif
    if (st == CG_OK && o != out) st = cg_copy(out, o);
    if (st == CG_OK && arg != argout) st = cg_copy(argout, arg);
    return st;
}

/* ------------------------------------------------------------------ entry point */

cg_status cg_reduce_into(cg_reduce_op op, cg_tensor *out, cg_tensor *argout, const cg_tensor *x, int axis,
                         bool keepdim) {
    if ((unsigned)op >= CG_REDUCE_OP_COUNT)
        return cg_set_error(CG_ERR_INVALID_ARG, "reduce: unknown op %d", (int)op);
    const char *name = cg_reduce_op_name(op);
    char d[2][CG_DESC_LEN];
    cg_status st;
    if ((st = cg_ops_check_float(name, "out", out)) != CG_OK) return st;
    if ((st = cg_ops_check_float(name, "x", x)) != CG_OK) return st;
    if ((st = cg_ops_check_same_device(name, out, "x", x)) != CG_OK) return st;
    int ax = cg_normalize_axis(axis, x->ndim);
    if (ax < 0)
        return cg_set_error(CG_ERR_INVALID_ARG, "%s: axis %d is out of range for %s", name, axis,
                            cg_tensor_desc(x, d[0], sizeof d[0]));
    bool is_extreme = op == CG_REDUCE_MAX || op == CG_REDUCE_MIN;
    if (argout) {
        if (!is_extreme)
            return cg_set_error(CG_ERR_INVALID_ARG, "%s: argout is only produced by max and min", name);
        if (!cg_ops_on_cuda(argout) && (st = cg_ops_check_cpu(name, "argout", argout)) != CG_OK) return st;
        if ((st = cg_ops_check_same_device(name, out, "argout", argout)) != CG_OK) return st;
        if (argout->dtype != CG_I64)
            return cg_set_error(CG_ERR_DTYPE, "%s: argout %s must be i64", name, cg_tensor_desc(argout, d[0], sizeof d[0]));
    }
    int64_t keep_shape[CG_MAX_DIMS], out_shape[CG_MAX_DIMS];
    int out_nd = 0;
    for (int i = 0; i < x->ndim; i++) {
        keep_shape[i] = i == ax ? 1 : x->shape[i];
        if (keepdim || i != ax) out_shape[out_nd++] = keep_shape[i];
    }
    if ((st = cg_ops_check_out_shape(name, out, out_nd, out_shape)) != CG_OK) return st;
    if ((st = cg_ops_check_writable(name, out)) != CG_OK) return st;
    if (argout) {
        if ((st = cg_ops_check_out_shape(name, argout, out_nd, out_shape)) != CG_OK) return st;
        if ((st = cg_ops_check_writable(name, argout)) != CG_OK) return st;
    }
    int64_t n = x->shape[ax];
    if (n == 0 && is_extreme)
        return cg_set_error(CG_ERR_SHAPE, "%s: cannot reduce over axis %d of %s: it is empty", name, axis,
                            cg_tensor_desc(x, d[0], sizeof d[0]));
    int64_t out_count = cg_numel(out);
    if (out_count == 0) return CG_OK;
    if (cg_ops_on_cuda(out)) return reduce_cuda(op, out, argout, x, ax, n);

    float *o = (float *)cg_ops_data(out);
    int64_t *arg = argout ? (int64_t *)cg_ops_data(argout) : NULL;
    if (n == 0) { /* sum of nothing is 0, the mean of nothing NaN */
        float value = op == CG_REDUCE_SUM ? 0.0f : NAN;
        cg_ew_operand dst = {(char *)o, 4, out->strides};
        cg_ew_iter it;
        cg_ew_iter_init(&it, out->ndim, out->shape, 1, &dst);
        cg_ew_iter_run(&it, fill_run, &value, CG_OPS_PARALLEL_MIN);
        return CG_OK;
    }
    if (cg_is_contiguous(x) && cg_is_contiguous(out) && (!argout || cg_is_contiguous(argout))) {
        int64_t inner = 1;
        for (int i = ax + 1; i < x->ndim; i++) inner *= x->shape[i];
        const float *xp = (const float *)cg_ops_data(x);
        if (inner == 1) reduce_inner_packed(op, o, arg, xp, out_count, n);
        else reduce_outer_packed(op, o, arg, xp, out_count / inner, n, inner);
        return CG_OK;
    }
    /* Generic: iterate over the keepdim output shape; x's own strides place each row's first element. */
    int64_t out_strides[CG_MAX_DIMS], arg_strides[CG_MAX_DIMS];
    for (int i = 0, k = 0; i < x->ndim; i++) {
        bool kept = keepdim || i != ax;
        out_strides[i] = kept ? out->strides[k] : 0;
        arg_strides[i] = kept && argout ? argout->strides[k] : 0;
        if (kept) k++;
    }
    cg_ew_operand ops[3] = {{(char *)o, 4, out_strides},
                            {cg_ops_data(x), 4, x->strides},
                            {(char *)arg, 8, arg_strides}};
    cg_ew_iter it;
    cg_ew_iter_init(&it, x->ndim, keep_shape, argout ? 3 : 2, ops);
    strided_ctx c = {op, n, x->strides[ax], argout != NULL};
    cg_ew_iter_run(&it, reduce_strided_run, &c, CG_OPS_PARALLEL_MIN / (n > 0 ? n : 1) + 1);
    return CG_OK;
}
