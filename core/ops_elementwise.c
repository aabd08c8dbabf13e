/* CPU forward kernels of the elementwise ops (binary with broadcasting, unary, affine, pow, clamp,
 * where, cast), the op names, and the shared checks and strided iterator of ops_common.h.
 *
 * Every kernel is a "run" function called by the iterator on the innermost merged dim; inside it, the
 * stride pattern picks a flat loop the compiler vectorises (all strides 1), a scalar-broadcast loop (one
 * input stride 0) or a plain strided loop.
 *
 * Aliasing: unary, affine, pow_scalar and clamp accept out == x, and binary and where accept out being
 * exactly one of their inputs (the same view: same storage, offset, shape and strides), since each element
 * is read before it is written and no other element depends on it. Partial overlap (out a shifted or
 * differently strided view of an input's memory) is not supported. Outputs may not be expanded views. */
#if defined(__GNUC__) && !defined(__clang__)
/* The build uses -O2, where GCC 12 only vectorises loops that need no scalar epilogue; these flat loops
 * need one, so ask for the vectoriser with the dynamic cost model in this file. */
#pragma GCC optimize("tree-vectorize", "vect-cost-model=dynamic")
#endif

#include <math.h>
#include <stdio.h>
#include <string.h>

#ifdef CG_HAVE_OPENMP
#include <omp.h>
#endif

#include "core/ops.h"
#include "core/nn_activation.h"
#include "core/ops_common.h"

/* ------------------------------------------------------------------ names */

const char *cg_binary_op_name(cg_binary_op op) {
    static const char *const names[CG_BINARY_OP_COUNT] = {"add",     "sub",           "mul",  "div",       "maximum", "minimum",
                                                                  "pow",     "greater",       "greater_equal", "less",
                                                                  "less_equal", "equal",     "not_equal"};
    return (unsigned)op < CG_BINARY_OP_COUNT ? names[op] : "unknown binary op";
}

const char *cg_unary_op_name(cg_unary_op op) {
    static const char *const names[CG_UNARY_OP_COUNT] = {
        "neg",  "exp",   "log",   "tanh",       "sigmoid", "sign", "abs",
        "sqrt", "rsqrt", "reciprocal", "square", "relu", "gelu_tanh", "silu"};
    return (unsigned)op < CG_UNARY_OP_COUNT ? names[op] : "unknown unary op";
}

/* ------------------------------------------------------------------ checks (ops_common.h) */

cg_status cg_ops_check_cpu(const char *op, const char *what, const cg_tensor *t) {
    if (!t) return cg_set_error(CG_ERR_INVALID_ARG, "%s: %s is a NULL tensor", op, what);
    if (!t->storage || !t->storage->data) {
        char d[CG_DESC_LEN];
        if (cg_numel(t) > 0)
            return cg_set_error(CG_ERR_INVALID_ARG, "%s: %s %s has no storage", op, what, cg_tensor_desc(t, d, sizeof d));
    }
    if (t->device.type == CG_DEVICE_CUDA) {
        char d[CG_DESC_LEN];
        return cg_set_error(CG_ERR_UNSUPPORTED, "%s: %s %s: CUDA tensors need the CUDA backend", op, what,
                            cg_tensor_desc(t, d, sizeof d));
    }
    if (t->device.type != CG_DEVICE_CPU)
        return cg_set_error(CG_ERR_DEVICE, "%s: %s is on an unknown device", op, what);
    return CG_OK;
}

cg_status cg_ops_check_f32(const char *op, const char *what, const cg_tensor *t) {
    cg_status st = cg_ops_check_cpu(op, what, t);
    if (st != CG_OK) return st;
    if (t->dtype != CG_F32) {
        char d[CG_DESC_LEN];
        return cg_set_error(CG_ERR_DTYPE, "%s: %s %s must be f32 (CPU compute is fp32; cast with cg_copy first)", op,
                            what, cg_tensor_desc(t, d, sizeof d));
    }
    return CG_OK;
}

cg_status cg_ops_check_float(const char *op, const char *what, const cg_tensor *t) {
    if (!t || t->device.type != CG_DEVICE_CUDA) return cg_ops_check_f32(op, what, t);
    char d[CG_DESC_LEN];
    if ((!t->storage || !t->storage->data) && cg_numel(t) > 0)
        return cg_set_error(CG_ERR_INVALID_ARG, "%s: %s %s has no storage", op, what, cg_tensor_desc(t, d, sizeof d));
    if (t->dtype != CG_F32 && t->dtype != CG_BF16)
        return cg_set_error(CG_ERR_DTYPE, "%s: %s %s must be f32 or bf16 on a GPU", op, what,
                            cg_tensor_desc(t, d, sizeof d));
    return CG_OK;
}

cg_status cg_ops_check_index(const char *op, const char *what, const cg_tensor *t) {
    cg_status st = cg_ops_check_cpu(op, what, t);
    if (st != CG_OK) return st;
    if (t->dtype != CG_I32 && t->dtype != CG_I64) {
        char d[CG_DESC_LEN];
        return cg_set_error(CG_ERR_DTYPE, "%s: %s %s must be i32 or i64", op, what, cg_tensor_desc(t, d, sizeof d));
    }
    return CG_OK;
}

cg_status cg_ops_check_same_device(const char *op, const cg_tensor *ref, const char *what, const cg_tensor *t) {
    if (cg_device_eq(ref->device, t->device)) return CG_OK;
    char d[2][CG_DESC_LEN];
    return cg_set_error(CG_ERR_DEVICE, "%s: %s %s is not on the device of %s", op, what,
                        cg_tensor_desc(t, d[0], sizeof d[0]), cg_tensor_desc(ref, d[1], sizeof d[1]));
}

void cg_ops_cuda_ew(const cg_ew_iter *it, const cg_tensor *const *ts, cg_cuda_ew *out) {
    memset(out, 0, sizeof *out);
    out->ndim = it->ndim;
    out->nops = it->nops;
    out->numel = it->numel;
    for (int d = 0; d < it->ndim; d++) out->shape[d] = it->shape[d];
    for (int k = 0; k < it->nops; k++) {
        out->data[k] = it->base[k];
        out->dtype[k] = ts[k]->dtype;
        for (int d = 0; d < it->ndim; d++) out->strides[k][d] = it->strides[k][d];
    }
}

cg_status cg_ops_cuda_enter(const char *op, const cg_tensor *t) {
#ifdef CG_HAVE_CUDA
    cg_status st = cg_cuda_set_device(t->device.index);
    return st == CG_OK ? CG_OK : cg_error_context("%s: ", op);
#else
    (void)t;
    return cg_set_error(CG_ERR_UNSUPPORTED, "%s: cgrad was built without CUDA", op);
#endif
}

const char *cg_ops_shape_str(int ndim, const int64_t *shape, char *buf, size_t n) {
    size_t pos = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < ndim && pos < n; i++)
        pos += (size_t)snprintf(buf + pos, n - pos, i ? ", %lld" : "%lld", (long long)shape[i]);
    if (pos < n) snprintf(buf + pos, n - pos, "]");
    return buf;
}

cg_status cg_ops_check_out_shape(const char *op, const cg_tensor *out, int ndim, const int64_t *shape) {
    bool same = out->ndim == ndim;
    for (int i = 0; same && i < ndim; i++) same = out->shape[i] == shape[i];
    if (same) return CG_OK;
    char d[CG_DESC_LEN], s[CG_DESC_LEN];
    return cg_set_error(CG_ERR_SHAPE, "%s: output %s should have shape %s", op, cg_tensor_desc(out, d, sizeof d),
                        cg_ops_shape_str(ndim, shape, s, sizeof s));
}

cg_status cg_ops_check_writable(const char *op, const cg_tensor *out) {
    for (int i = 0; i < out->ndim; i++) {
        if (out->shape[i] > 1 && out->strides[i] == 0) {
            char d[CG_DESC_LEN];
            return cg_set_error(CG_ERR_INVALID_ARG,
                                "%s: output %s is an expanded view (stride 0 on dim %d); it cannot be written", op,
                                cg_tensor_desc(out, d, sizeof d), i);
        }
    }
    return CG_OK;
}

void cg_ops_broadcast_strides(const cg_tensor *t, int ndim, const int64_t *shape, int64_t *strides) {
    int lead = ndim - t->ndim;
    for (int i = 0; i < ndim; i++) {
        int k = i - lead;
        strides[i] = (k < 0 || (t->shape[k] == 1 && shape[i] != 1)) ? 0 : t->strides[k];
    }
}

/* ------------------------------------------------------------------ the iterator */

void cg_ew_iter_init(cg_ew_iter *it, int ndim, const int64_t *shape, int nops, const cg_ew_operand *ops) {
    it->nops = nops;
    it->numel = 1;
    for (int i = 0; i < ndim; i++) it->numel *= shape[i];
    for (int k = 0; k < nops; k++) {
        it->base[k] = ops[k].base;
        it->elem_size[k] = ops[k].elem_size;
    }
    /* Keep the dims of size != 1, merging a dim into the one kept before it (its outer neighbour) when
     * every operand steps across the pair as across one dim. */
    int nd = 0;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] == 1) continue;
        bool merge = nd > 0;
        for (int k = 0; merge && k < nops; k++)
            merge = it->strides[k][nd - 1] == ops[k].strides[i] * shape[i];
        if (merge) {
            it->shape[nd - 1] *= shape[i];
            for (int k = 0; k < nops; k++) it->strides[k][nd - 1] = ops[k].strides[i];
        } else {
            it->shape[nd] = shape[i];
            for (int k = 0; k < nops; k++) it->strides[k][nd] = ops[k].strides[i];
            nd++;
        }
    }
    if (nd == 0) { /* a single element (or a 0-d tensor) */
        it->shape[0] = 1;
        for (int k = 0; k < nops; k++) it->strides[k][0] = 0;
        nd = 1;
    }
    it->ndim = nd;
}

int cg_ops_threads_for(int64_t n, int64_t parallel_min) {
#ifdef CG_HAVE_OPENMP
    if (n < parallel_min) return 1;
    int nt = omp_get_max_threads();
    if ((int64_t)nt > n) nt = (int)n;
    return nt < 1 ? 1 : nt;
#else
    (void)n;
    (void)parallel_min;
    return 1;
#endif
}

/* Runs the logical index range [begin, end) of the iteration. */
static void ew_run_range(const cg_ew_iter *it, cg_ew_run_fn fn, void *ctx, int64_t begin, int64_t end) {
    int nd = it->ndim, nops = it->nops;
    int64_t idx[CG_MAX_DIMS], off[CG_EW_MAX_OPS] = {0}, inner_stride[CG_EW_MAX_OPS];
    int64_t rest = begin;
    for (int d = nd - 1; d >= 0; d--) {
        idx[d] = rest % it->shape[d];
        rest /= it->shape[d];
        for (int k = 0; k < nops; k++) off[k] += idx[d] * it->strides[k][d];
    }
    for (int k = 0; k < nops; k++) inner_stride[k] = it->strides[k][nd - 1];
    int64_t inner = it->shape[nd - 1];
    char *p[CG_EW_MAX_OPS];
    for (int64_t pos = begin; pos < end;) {
        int64_t n = inner - idx[nd - 1];
        if (n > end - pos) n = end - pos;
        for (int k = 0; k < nops; k++) p[k] = it->base[k] + off[k] * it->elem_size[k];
        fn(ctx, n, p, inner_stride);
        pos += n;
        if (pos >= end) break;
        /* advance the odometer: finish the inner run, then carry into the outer dims */
        for (int k = 0; k < nops; k++) off[k] -= idx[nd - 1] * inner_stride[k];
        idx[nd - 1] = 0;
        for (int d = nd - 2; d >= 0; d--) {
            idx[d]++;
            for (int k = 0; k < nops; k++) off[k] += it->strides[k][d];
            if (idx[d] < it->shape[d]) break;
            for (int k = 0; k < nops; k++) off[k] -= it->strides[k][d] * it->shape[d];
            idx[d] = 0;
        }
    }
}

void cg_ew_iter_run(const cg_ew_iter *it, cg_ew_run_fn fn, void *ctx, int64_t parallel_min) {
    int64_t n = it->numel;
    if (n <= 0) return;
    int nt = cg_ops_threads_for(n, parallel_min);
    if (nt <= 1) {
        ew_run_range(it, fn, ctx, 0, n);
        return;
    }
#ifdef CG_HAVE_OPENMP
#pragma omp parallel num_threads(nt)
    {
        int64_t t = omp_get_thread_num(), team = omp_get_num_threads();
        ew_run_range(it, fn, ctx, n * t / team, n * (t + 1) / team);
    }
#endif
}

/* ------------------------------------------------------------------ shapes */

cg_status cg_broadcast_shapes(int ndim_a, const int64_t *shape_a, int ndim_b, const int64_t *shape_b,
                              int *ndim_out, int64_t *shape_out) {
    if (!ndim_out || !shape_out || (ndim_a > 0 && !shape_a) || (ndim_b > 0 && !shape_b))
        return cg_set_error(CG_ERR_INVALID_ARG, "broadcast: NULL shape argument");
    if (ndim_a < 0 || ndim_b < 0 || ndim_a > CG_MAX_DIMS || ndim_b > CG_MAX_DIMS)
        return cg_set_error(CG_ERR_SHAPE, "broadcast: dims %d and %d must be in [0, %d]", ndim_a, ndim_b, CG_MAX_DIMS);
    int nd = ndim_a > ndim_b ? ndim_a : ndim_b;
    int64_t result[CG_MAX_DIMS];
    for (int i = 0; i < nd; i++) {
        int ka = i - (nd - ndim_a), kb = i - (nd - ndim_b);
        int64_t da = ka >= 0 ? shape_a[ka] : 1, db = kb >= 0 ? shape_b[kb] : 1;
        if (da < 0 || db < 0 || (da != db && da != 1 && db != 1)) {
            char sa[CG_DESC_LEN], sb[CG_DESC_LEN];
            return cg_set_error(CG_ERR_SHAPE, "broadcast: shapes %s and %s do not broadcast",
                                cg_ops_shape_str(ndim_a, shape_a, sa, sizeof sa),
                                cg_ops_shape_str(ndim_b, shape_b, sb, sizeof sb));
        }
        result[i] = da == 1 ? db : da;
    }
    *ndim_out = nd;
    memcpy(shape_out, result, (size_t)nd * sizeof *result);
    return CG_OK;
}

/* ------------------------------------------------------------------ binary */

static inline float op_maximum(float a, float b) { return (a > b || a != a) ? a : b; }
static inline float op_minimum(float a, float b) { return (a < b || a != a) ? a : b; }

/* The four stride patterns of one binary expression E(x, y) over floats o (out), a, b. */
#define BINARY_LOOPS(E)                                                                                  \
    do {                                                                                                 \
        if (so == 1 && sa == 1 && sb == 1) {                                                             \
            CG_IVDEP for (int64_t i = 0; i < n; i++) o[i] = E(a[i], b[i]);                               \
        } else if (so == 1 && sa == 1 && sb == 0) {                                                      \
            const float y = b[0];                                                                        \
            CG_IVDEP for (int64_t i = 0; i < n; i++) o[i] = E(a[i], y);                                  \
        } else if (so == 1 && sa == 0 && sb == 1) {                                                      \
            const float x = a[0];                                                                        \
            CG_IVDEP for (int64_t i = 0; i < n; i++) o[i] = E(x, b[i]);                                  \
        } else {                                                                                         \
            for (int64_t i = 0; i < n; i++) o[i * so] = E(a[i * sa], b[i * sb]);                         \
        }                                                                                                \
    } while (0)

#define E_ADD(x, y) ((x) + (y))
#define E_SUB(x, y) ((x) - (y))
#define E_MUL(x, y) ((x) * (y))
#define E_DIV(x, y) ((x) / (y))
#define E_GT(x, y) ((x) > (y) ? 1.0f : 0.0f)
#define E_GE(x, y) ((x) >= (y) ? 1.0f : 0.0f)
#define E_LT(x, y) ((x) < (y) ? 1.0f : 0.0f)
#define E_LE(x, y) ((x) <= (y) ? 1.0f : 0.0f)
#define E_EQ(x, y) ((x) == (y) ? 1.0f : 0.0f)
#define E_NE(x, y) ((x) != (y) ? 1.0f : 0.0f)

static void binary_run(void *ctx, int64_t n, char *const *p, const int64_t *s) {
    cg_binary_op op = *(const cg_binary_op *)ctx;
    float *o = (float *)p[0];
    const float *a = (const float *)p[1], *b = (const float *)p[2];
    int64_t so = s[0], sa = s[1], sb = s[2];
    switch (op) {
    case CG_OP_ADD: BINARY_LOOPS(E_ADD); break;
    case CG_OP_SUB: BINARY_LOOPS(E_SUB); break;
    case CG_OP_MUL: BINARY_LOOPS(E_MUL); break;
    case CG_OP_DIV: BINARY_LOOPS(E_DIV); break;
    case CG_OP_MAXIMUM: BINARY_LOOPS(op_maximum); break;
    case CG_OP_MINIMUM: BINARY_LOOPS(op_minimum); break;
    case CG_OP_POW: BINARY_LOOPS(powf); break;
    case CG_OP_GREATER: BINARY_LOOPS(E_GT); break;
    case CG_OP_GREATER_EQUAL: BINARY_LOOPS(E_GE); break;
    case CG_OP_LESS: BINARY_LOOPS(E_LT); break;
    case CG_OP_LESS_EQUAL: BINARY_LOOPS(E_LE); break;
    case CG_OP_EQUAL: BINARY_LOOPS(E_EQ); break;
    case CG_OP_NOT_EQUAL: BINARY_LOOPS(E_NE); break;
    default: break;
    }
}

/* Checks out and the inputs of an n-input broadcasting op and builds its iterator (out is operand 0). */
static cg_status broadcast_setup(const char *op, cg_tensor *out, int nin, const cg_tensor *const *in,
                                 const char *const *names, cg_ew_iter *it) {
    cg_status st = cg_ops_check_float(op, "out", out);
    if (st != CG_OK) return st;
    int nd = 0;
    int64_t shape[CG_MAX_DIMS];
    for (int k = 0; k < nin; k++) {
        if (k == 0 && nin == 3) /* where's condition: any listed dtype */
            st = cg_ops_on_cuda(in[k]) ? CG_OK : cg_ops_check_cpu(op, names[k], in[k]);
        else st = cg_ops_check_float(op, names[k], in[k]);
        if (st == CG_OK && in[k]) st = cg_ops_check_same_device(op, out, names[k], in[k]);
        if (st != CG_OK) return st;
    }
    for (int k = 0; k < nin; k++) {
        if (cg_broadcast_shapes(nd, shape, in[k]->ndim, in[k]->shape, &nd, shape) != CG_OK) {
            char d[3][CG_DESC_LEN];
            if (nin == 2)
                return cg_set_error(CG_ERR_SHAPE, "%s: shapes %s and %s do not broadcast", op,
                                    cg_tensor_desc(in[0], d[0], sizeof d[0]), cg_tensor_desc(in[1], d[1], sizeof d[1]));
            return cg_set_error(CG_ERR_SHAPE, "%s: shapes %s, %s and %s do not broadcast", op,
                                cg_tensor_desc(in[0], d[0], sizeof d[0]), cg_tensor_desc(in[1], d[1], sizeof d[1]),
                                cg_tensor_desc(in[2], d[2], sizeof d[2]));
        }
    }
    if ((st = cg_ops_check_out_shape(op, out, nd, shape)) != CG_OK) return st;
    if ((st = cg_ops_check_writable(op, out)) != CG_OK) return st;
    int64_t strides[CG_EW_MAX_OPS][CG_MAX_DIMS];
    cg_ew_operand ops[CG_EW_MAX_OPS];
    const cg_tensor *all[CG_EW_MAX_OPS] = {out};
    for (int k = 0; k < nin; k++) all[k + 1] = in[k];
    for (int k = 0; k <= nin; k++) {
        cg_ops_broadcast_strides(all[k], nd, shape, strides[k]);
        ops[k].base = cg_ops_data(all[k]);
        ops[k].elem_size = (int64_t)cg_dtype_size(all[k]->dtype);
        ops[k].strides = strides[k];
    }
    cg_ew_iter_init(it, nd, shape, nin + 1, ops);
    return CG_OK;
}

cg_status cg_binary_into(cg_binary_op op, cg_tensor *out, const cg_tensor *a, const cg_tensor *b) {
    if ((unsigned)op >= CG_BINARY_OP_COUNT)
        return cg_set_error(CG_ERR_INVALID_ARG, "binary op: unknown op %d", (int)op);
    const char *name = cg_binary_op_name(op);
    const cg_tensor *in[2] = {a, b};
    const char *names[2] = {"a", "b"};
    cg_ew_iter it;
    cg_status st = broadcast_setup(name, out, 2, in, names, &it);
    if (st != CG_OK) return st;
    if (cg_ops_on_cuda(out)) {
        if ((st = cg_ops_cuda_enter(name, out)) != CG_OK) return st;
        const cg_tensor *ts[3] = {out, a, b};
        cg_cuda_ew ew;
        cg_ops_cuda_ew(&it, ts, &ew);
#ifdef CG_HAVE_CUDA
        return cg_cuda_binary((int)op, &ew);
#endif
    }
    cg_ew_iter_run(&it, binary_run, &op, CG_OPS_PARALLEL_MIN);
    return CG_OK;
}

/* ------------------------------------------------------------------ unary family */

typedef struct unary_ctx {
    int op; /* a cg_unary_op, or one of the scalar ops below */
    float p0, p1;
} unary_ctx;

enum { UNARY_AFFINE = CG_UNARY_OP_COUNT, UNARY_POW, UNARY_CLAMP };

static inline float f_sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }
static inline float f_sign(float x) { return x > 0.0f ? 1.0f : x < 0.0f ? -1.0f : x; } /* keeps 0 and NaN */
static inline float f_clamp(float v, float lo, float hi) {
    const float above = v < lo ? lo : v;
    return above > hi ? hi : above;
}
/* 0.5 (1 + tanh(u)) = sigmoid(2u): one expf instead of tanhf (several times slower in glibc), and no
 * cancellation in 1 + tanh(u) for negative u. */
/* One unary expression E(x) over the two stride patterns (packed, strided). */
#define UNARY_LOOPS(E)                                                                                   \
    do {                                                                                                 \
        if (so == 1 && sx == 1) {                                                                        \
            CG_IVDEP for (int64_t i = 0; i < n; i++) { const float v = x[i]; o[i] = (E); }               \
        } else {                                                                                         \
            for (int64_t i = 0; i < n; i++) { const float v = x[i * sx]; o[i * so] = (E); }              \
        }                                                                                                \
    } while (0)

static void unary_run(void *ctx, int64_t n, char *const *p, const int64_t *s) {
    const unary_ctx *c = ctx;
    float *o = (float *)p[0];
    const float *x = (const float *)p[1];
    int64_t so = s[0], sx = s[1];
    const float p0 = c->p0, p1 = c->p1;
    switch (c->op) {
    case CG_OP_NEG: UNARY_LOOPS(-v); break;
    case CG_OP_EXP: UNARY_LOOPS(expf(v)); break;
    case CG_OP_LOG: UNARY_LOOPS(logf(v)); break;
    case CG_OP_TANH: UNARY_LOOPS(tanhf(v)); break;
    case CG_OP_SIGMOID: UNARY_LOOPS(f_sigmoid(v)); break;
    case CG_OP_SIGN: UNARY_LOOPS(f_sign(v)); break;
    case CG_OP_ABS: UNARY_LOOPS(fabsf(v)); break;
    case CG_OP_SQRT: UNARY_LOOPS(sqrtf(v)); break;
    case CG_OP_RSQRT: UNARY_LOOPS(1.0f / sqrtf(v)); break;
    case CG_OP_RECIPROCAL: UNARY_LOOPS(1.0f / v); break;
    case CG_OP_SQUARE: UNARY_LOOPS(v * v); break;
    case CG_OP_RELU: UNARY_LOOPS(v < 0.0f ? 0.0f : v); break; /* NaN stays NaN, as in torch */
    case CG_OP_GELU_TANH: UNARY_LOOPS(cg_gelu_tanh_f32(v)); break;
    case CG_OP_SILU: UNARY_LOOPS(v * f_sigmoid(v)); break;
    case UNARY_AFFINE: UNARY_LOOPS(v * p0 + p1); break;
    case UNARY_POW: UNARY_LOOPS(powf(v, p0)); break;
    /* max first, then min: with lo > hi every element becomes hi, as min(max(x, lo), hi) says; NaN stays */
    case UNARY_CLAMP: UNARY_LOOPS(f_clamp(v, p0, p1)); break;
    default: break;
    }
}

static cg_status unary_apply(const char *op, cg_tensor *out, const cg_tensor *x, unary_ctx *c) {
    cg_status st;
    if ((st = cg_ops_check_float(op, "out", out)) != CG_OK) return st;
    if ((st = cg_ops_check_float(op, "x", x)) != CG_OK) return st;
    if ((st = cg_ops_check_same_device(op, out, "x", x)) != CG_OK) return st;
    if ((st = cg_ops_check_out_shape(op, out, x->ndim, x->shape)) != CG_OK) return st;
    if ((st = cg_ops_check_writable(op, out)) != CG_OK) return st;
    cg_ew_operand ops[2] = {{cg_ops_data(out), (int64_t)cg_dtype_size(out->dtype), out->strides},
                            {cg_ops_data(x), (int64_t)cg_dtype_size(x->dtype), x->strides}};
    cg_ew_iter it;
    cg_ew_iter_init(&it, x->ndim, x->shape, 2, ops);
    if (cg_ops_on_cuda(out)) {
        if ((st = cg_ops_cuda_enter(op, out)) != CG_OK) return st;
        const cg_tensor *ts[2] = {out, x};
        cg_cuda_ew ew;
        cg_ops_cuda_ew(&it, ts, &ew);
        int kind = c->op == UNARY_AFFINE ? CG_CUDA_UNARY_AFFINE : c->op == UNARY_POW ? CG_CUDA_UNARY_POW
                 : c->op == UNARY_CLAMP ? CG_CUDA_UNARY_CLAMP : c->op;
#ifdef CG_HAVE_CUDA
        return cg_cuda_unary(kind, c->p0, c->p1, &ew);
#else
        (void)kind;
#endif
    }
    cg_ew_iter_run(&it, unary_run, c, CG_OPS_PARALLEL_MIN);
    return CG_OK;
}

cg_status cg_unary_into(cg_unary_op op, cg_tensor *out, const cg_tensor *x) {
    if ((unsigned)op >= CG_UNARY_OP_COUNT)
        return cg_set_error(CG_ERR_INVALID_ARG, "unary op: unknown op %d", (int)op);
    unary_ctx c = {(int)op, 0.0f, 0.0f};
    return unary_apply(cg_unary_op_name(op), out, x, &c);
}

cg_status cg_affine_into(cg_tensor *out, const cg_tensor *x, float scale, float shift) {
    unary_ctx c = {UNARY_AFFINE, scale, shift};
    return unary_apply("affine", out, x, &c);
}

cg_status cg_pow_scalar_into(cg_tensor *out, const cg_tensor *x, float exponent) {
    unary_ctx c = {UNARY_POW, exponent, 0.0f};
    /* x^2 is exact as a product (powf agrees, signed zeros and NaN included) and skips a libm call. */
    if (exponent == 2.0f) c.op = CG_OP_SQUARE;
    return unary_apply("pow_scalar", out, x, &c);
}

cg_status cg_clamp_into(cg_tensor *out, const cg_tensor *x, float lo, float hi) {
    unary_ctx c = {UNARY_CLAMP, lo, hi};
    return unary_apply("clamp", out, x, &c);
}

/* ------------------------------------------------------------------ where */

#define WHERE_LOOP(T)                                                                                    \
    do {                                                                                                 \
        const T *cond = (const T *)p[1];                                                                 \
        if (so == 1 && sc == 1 && sa == 1 && sb == 1) {                                                  \
            CG_IVDEP for (int64_t i = 0; i < n; i++) o[i] = cond[i] != 0 ? a[i] : b[i];                  \
        } else {                                                                                         \
            for (int64_t i = 0; i < n; i++) o[i * so] = cond[i * sc] != 0 ? a[i * sa] : b[i * sb];       \
        }                                                                                                \
    } while (0)

static void where_run(void *ctx, int64_t n, char *const *p, const int64_t *s) {
    cg_dtype cond_dtype = *(const cg_dtype *)ctx;
    float *o = (float *)p[0];
    const float *a = (const float *)p[2], *b = (const float *)p[3];
    int64_t so = s[0], sc = s[1], sa = s[2], sb = s[3];
    switch (cond_dtype) {
    case CG_U8: WHERE_LOOP(uint8_t); break;
    case CG_I32: WHERE_LOOP(int32_t); break;
    case CG_I64: WHERE_LOOP(int64_t); break;
    case CG_F32: WHERE_LOOP(float); break;
    default: break;
    }
}

cg_status cg_where_into(cg_tensor *out, const cg_tensor *cond, const cg_tensor *a, const cg_tensor *b) {
    const cg_tensor *in[3] = {cond, a, b};
    const char *names[3] = {"cond", "a", "b"};
    if (cond && cond->dtype != CG_U8 && cond->dtype != CG_I32 && cond->dtype != CG_I64 && cond->dtype != CG_F32) {
        char d[CG_DESC_LEN];
        return cg_set_error(CG_ERR_DTYPE, "where: cond %s must be u8, i32, i64 or f32", cg_tensor_desc(cond, d, sizeof d));
    }
    cg_ew_iter it;
    cg_status st = broadcast_setup("where", out, 3, in, names, &it);
    if (st != CG_OK) return st;
    if (cg_ops_on_cuda(out)) {
        if ((st = cg_ops_cuda_enter("where", out)) != CG_OK) return st;
        const cg_tensor *ts[4] = {out, cond, a, b};
        cg_cuda_ew ew;
        cg_ops_cuda_ew(&it, ts, &ew);
#ifdef CG_HAVE_CUDA
        return cg_cuda_where(&ew);
#endif
    }
    cg_dtype cond_dtype = cond->dtype;
    cg_ew_iter_run(&it, where_run, &cond_dtype, CG_OPS_PARALLEL_MIN);
    return CG_OK;
}

/* ------------------------------------------------------------------ cast */

cg_status cg_cast_into(cg_tensor *out, const cg_tensor *x) {
    if (!out || !x) return cg_set_error(CG_ERR_INVALID_ARG, "cast: %s is a NULL tensor", out ? "x" : "out");
    if (!cg_same_shape(out, x)) {
        char d[2][CG_DESC_LEN];
        return cg_set_error(CG_ERR_SHAPE, "cast: output %s and input %s differ in shape",
                            cg_tensor_desc(out, d[0], sizeof d[0]), cg_tensor_desc(x, d[1], sizeof d[1]));
    }
    cg_status st = cg_ops_check_writable("cast", out);
    if (st != CG_OK) return st;
    return cg_copy(out, x);
}
