/* Tests of the CPU forward kernels of core/ops.h (everything but matmul): every value is checked against a
 * naive double-precision loop written here (or a closed form), over packed, transposed, sliced, expanded
 * and strided-output layouts, small odd sizes and sizes past the OpenMP threshold; and every error path. */
#include "test_util.h"

#define SHAPE(...) ((const int64_t[]){__VA_ARGS__})
#define NDIM(...) ((int)(sizeof((const int64_t[]){__VA_ARGS__}) / sizeof(int64_t)))
#define SENTINEL 12345.0

static uint64_t seed = 0x9e3779b97f4a7c15ull;

static cg_arena *arena(void) { return cg_step_arena(CG_CPU); }

/* A packed f32 tensor of values in [lo, hi). */
static cg_tensor *rand_range(int nd, const int64_t *shape, double lo, double hi) {
    cg_tensor *t = cg_tensor_empty(arena(), CG_F32, nd, shape);
    assert_non_null(t);
    float *p = cg_data(t);
    for (int64_t i = 0; i < cg_numel(t); i++) p[i] = (float)(lo + (hi - lo) * 0.5 * (cg_test_randf(&seed) + 1.0));
    return t;
}
static cg_tensor *rand_t(int nd, const int64_t *shape) { return rand_range(nd, shape, -1.0, 1.0); }

static cg_tensor *empty_t(cg_dtype dt, int nd, const int64_t *shape) {
    cg_tensor *t = cg_tensor_empty(arena(), dt, nd, shape);
    assert_non_null(t);
    return t;
}

/* A [r, c] view of a packed [c, r] tensor (transposed). */
static cg_tensor *transposed_t(int64_t r, int64_t c) {
    cg_tensor *t = cg_view_transpose(rand_t(2, SHAPE(c, r)), 0, 1);
    assert_non_null(t);
    return t;
}
/* A [r, c] view taking every second column of a packed [r, 2c] tensor. */
static cg_tensor *step2_t(int64_t r, int64_t c) {
    cg_tensor *t = cg_view_slice(rand_t(2, SHAPE(r, 2 * c)), 1, 0, 2 * c, 2);
    assert_non_null(t);
    return t;
}
/* [r, c] from a [1, c] row expanded with stride 0. */
static cg_tensor *expanded_t(int64_t r, int64_t c) {
    cg_tensor *t = cg_view_expand(rand_t(2, SHAPE(1, c)), 2, SHAPE(r, c));
    assert_non_null(t);
    return t;
}
/* A strided f32 output: every second column of an [r, 2c] buffer filled with SENTINEL. */
static cg_tensor *strided_out(int64_t r, int64_t c) {
    cg_tensor *buf = empty_t(CG_F32, 2, SHAPE(r, 2 * c));
    assert_ok(cg_fill(buf, SENTINEL));
    cg_tensor *t = cg_view_slice(buf, 1, 0, 2 * c, 2);
    assert_non_null(t);
    return t;
}
/* The columns a strided_out view skips still hold SENTINEL. */
static void assert_gaps_untouched(const cg_tensor *out) {
    for (int64_t i = 0; i < out->shape[0]; i++)
        for (int64_t j = 0; j < out->shape[1]; j++)
            assert_true(((const float *)cg_data(out))[i * out->strides[0] + j * 2 + 1] == (float)SENTINEL);
}

static void unflatten(int nd, const int64_t *shape, int64_t flat, int64_t *idx) {
    for (int d = nd - 1; d >= 0; d--) {
        idx[d] = flat % shape[d];
        flat /= shape[d];
    }
}
/* t's element at idx of an nd-dim shape that t broadcasts to. */
static double get_bcast(const cg_tensor *t, int nd, const int64_t *idx) {
    int64_t ti[CG_MAX_DIMS];
    int lead = nd - t->ndim;
    for (int k = 0; k < t->ndim; k++) ti[k] = t->shape[k] == 1 ? 0 : idx[k + lead];
    return cg_get(t, ti);
}
/* A copy of t's struct that claims to live on a GPU (for the device checks; never dereferenced). */
static cg_tensor fake_cuda(const cg_tensor *t) {
    cg_tensor c = *t;
    c.device = CG_CUDA(0);
    return c;
}

/* ------------------------------------------------------------------ names and broadcast_shapes */

static void test_names(void **state) {
    (void)state;
    assert_string_equal(cg_binary_op_name(CG_OP_ADD), "add");
    assert_string_equal(cg_binary_op_name(CG_OP_POW), "pow");
    assert_string_equal(cg_unary_op_name(CG_OP_GELU_TANH), "gelu_tanh");
    assert_string_equal(cg_unary_op_name(CG_OP_SILU), "silu");
    assert_string_equal(cg_reduce_op_name(CG_REDUCE_MEAN), "mean");
    for (int op = 0; op < CG_BINARY_OP_COUNT; op++) assert_null(strstr(cg_binary_op_name(op), "unknown"));
    for (int op = 0; op < CG_UNARY_OP_COUNT; op++) assert_null(strstr(cg_unary_op_name(op), "unknown"));
    assert_non_null(strstr(cg_unary_op_name(CG_UNARY_OP_COUNT), "unknown"));
}

static void test_broadcast_shapes(void **state) {
    (void)state;
    int nd;
    int64_t s[CG_MAX_DIMS];
    assert_ok(cg_broadcast_shapes(3, SHAPE(3, 1, 5), 2, SHAPE(4, 1), &nd, s));
    assert_int_equal(nd, 3);
    assert_true(s[0] == 3 && s[1] == 4 && s[2] == 5);
    assert_ok(cg_broadcast_shapes(0, NULL, 2, SHAPE(2, 3), &nd, s));
    assert_true(nd == 2 && s[0] == 2 && s[1] == 3);
    assert_ok(cg_broadcast_shapes(1, SHAPE(0), 2, SHAPE(3, 1), &nd, s));
    assert_true(nd == 2 && s[0] == 3 && s[1] == 0);
    assert_int_equal(cg_broadcast_shapes(2, SHAPE(2, 3), 1, SHAPE(4), &nd, s), CG_ERR_SHAPE);
    assert_error_contains("shapes [2, 3] and [4] do not broadcast");
}

/* ------------------------------------------------------------------ binary */

static double ref_binary(cg_binary_op op, double a, double b) {
    switch (op) {
    case CG_OP_ADD: return a + b;
    case CG_OP_SUB: return a - b;
    case CG_OP_MUL: return a * b;
    case CG_OP_DIV: return a / b;
    case CG_OP_MAXIMUM: return isnan(a) || isnan(b) ? NAN : a > b ? a : b;
    case CG_OP_MINIMUM: return isnan(a) || isnan(b) ? NAN : a < b ? a : b;
    case CG_OP_POW: return pow(a, b);
    case CG_OP_GREATER: return a > b;
    case CG_OP_GREATER_EQUAL: return a >= b;
    case CG_OP_LESS: return a < b;
    case CG_OP_LESS_EQUAL: return a <= b;
    case CG_OP_EQUAL: return a == b;
    case CG_OP_NOT_EQUAL: return a != b;
    default: return NAN;
    }
}

/* Runs out = a op b and checks every element against the double reference. */
static void check_binary(cg_binary_op op, cg_tensor *out, const cg_tensor *a, const cg_tensor *b) {
    assert_ok(cg_binary_into(op, out, a, b));
    int64_t idx[CG_MAX_DIMS];
    for (int64_t i = 0; i < cg_numel(out); i++) {
        unflatten(out->ndim, out->shape, i, idx);
        double want = ref_binary(op, get_bcast(a, out->ndim, idx), get_bcast(b, out->ndim, idx));
        assert_close(cg_get(out, idx), want, op == CG_OP_POW ? 1e-5 : 1e-6, 1e-6);
    }
}

/* a and b shapes; out is their broadcast. */
static void check_binary_shapes(cg_binary_op op, int nda, const int64_t *sa, int ndb, const int64_t *sb) {
    int nd;
    int64_t so[CG_MAX_DIMS];
    assert_ok(cg_broadcast_shapes(nda, sa, ndb, sb, &nd, so));
    double lo = op == CG_OP_POW ? 0.1 : -1.0; /* pow: positive bases, so the values are not all NaN */
    cg_tensor *a = rand_range(nda, sa, lo, 2.0), *b = rand_range(ndb, sb, -1.0, 2.0);
    check_binary(op, empty_t(CG_F32, nd, so), a, b);
}

static void test_binary_broadcast(void **state) {
    (void)state;
    for (int op = 0; op < CG_BINARY_OP_COUNT; op++) {
        check_binary_shapes(op, 1, SHAPE(7), 1, SHAPE(7));
        check_binary_shapes(op, 1, SHAPE(1), 1, SHAPE(1));
        check_binary_shapes(op, 2, SHAPE(3, 65), 1, SHAPE(65));          /* bias-like row */
        check_binary_shapes(op, 1, SHAPE(65), 2, SHAPE(3, 65));          /* the other direction */
        check_binary_shapes(op, 2, SHAPE(257, 1), 2, SHAPE(1, 7));       /* outer product */
        check_binary_shapes(op, 1, SHAPE(257), 1, SHAPE(1));             /* scalar b */
        check_binary_shapes(op, 1, SHAPE(1), 2, SHAPE(3, 257));          /* scalar a */
        check_binary_shapes(op, 3, SHAPE(4, 1, 6), 3, SHAPE(4, 3, 6));   /* middle dim */
        check_binary_shapes(op, 4, SHAPE(2, 3, 4, 5), 3, SHAPE(3, 1, 5));
        check_binary_shapes(op, 3, SHAPE(1, 5, 7), 2, SHAPE(1, 7));
        check_binary_shapes(op, 2, SHAPE(0, 3), 1, SHAPE(3));             /* empty */
    }
}

static void test_binary_strided(void **state) {
    (void)state;
    for (int op = 0; op < CG_BINARY_OP_COUNT; op++) {
        cg_tensor *t = transposed_t(7, 5), *s = step2_t(7, 5), *e = expanded_t(7, 5);
        if (op == CG_OP_POW) {
            cg_tensor *pa = rand_range(2, SHAPE(5, 7), 0.1, 2.0);
            t = cg_view_transpose(pa, 0, 1);
        }
        check_binary(op, empty_t(CG_F32, 2, SHAPE(7, 5)), t, s);
        check_binary(op, empty_t(CG_F32, 2, SHAPE(7, 5)), s, e);
        check_binary(op, empty_t(CG_F32, 2, SHAPE(7, 5)), e, t);
        cg_tensor *out = strided_out(7, 5);
        check_binary(op, out, t, s);
        assert_gaps_untouched(out);
        /* a transposed output */
        cg_tensor *tout = cg_view_transpose(empty_t(CG_F32, 2, SHAPE(5, 7)), 0, 1);
        check_binary(op, tout, s, rand_t(1, SHAPE(5)));
    }
}

static void test_binary_large(void **state) {
    (void)state;
    /* Past the OpenMP threshold: packed, row-broadcast, column-broadcast, and strided. */
    check_binary_shapes(CG_OP_ADD, 2, SHAPE(300, 257), 2, SHAPE(300, 257));
    check_binary_shapes(CG_OP_MUL, 2, SHAPE(300, 257), 1, SHAPE(257));
    check_binary_shapes(CG_OP_SUB, 2, SHAPE(300, 1), 2, SHAPE(300, 257));
    check_binary_shapes(CG_OP_MAXIMUM, 3, SHAPE(5, 1, 129), 3, SHAPE(1, 101, 129));
    cg_tensor *out = strided_out(301, 255);
    check_binary(CG_OP_DIV, out, transposed_t(301, 255), step2_t(301, 255));
    assert_gaps_untouched(out);
}

static void test_binary_inplace_and_nan(void **state) {
    (void)state;
    cg_tensor *a = rand_t(2, SHAPE(33, 65)), *b = rand_t(1, SHAPE(65));
    cg_tensor *a0 = cg_tensor_clone(arena(), a);
    assert_ok(cg_binary_into(CG_OP_MUL, a, a, b)); /* out == a */
    for (int64_t i = 0; i < cg_numel(a); i++)
        assert_close(cg_get_flat(a, i), cg_get_flat(a0, i) * cg_get_flat(b, i % 65), 1e-6, 0);

    const float xa[] = {NAN, 1.0f, NAN, -INFINITY, 2.0f, -0.0f};
    const float xb[] = {1.0f, NAN, NAN, 3.0f, INFINITY, 5.0f};
    cg_tensor *ta = cg_tensor_from_data(arena(), CG_F32, 1, SHAPE(6), xa);
    cg_tensor *tb = cg_tensor_from_data(arena(), CG_F32, 1, SHAPE(6), xb);
    cg_tensor *mx = empty_t(CG_F32, 1, SHAPE(6)), *mn = empty_t(CG_F32, 1, SHAPE(6));
    assert_ok(cg_binary_into(CG_OP_MAXIMUM, mx, ta, tb));
    assert_ok(cg_binary_into(CG_OP_MINIMUM, mn, ta, tb));
    const double want_max[] = {NAN, NAN, NAN, 3.0, INFINITY, 5.0};
    const double want_min[] = {NAN, NAN, NAN, -INFINITY, 2.0, -0.0};
    for (int i = 0; i < 6; i++) {
        assert_close(cg_get_flat(mx, i), want_max[i], 0, 0);
        assert_close(cg_get_flat(mn, i), want_min[i], 0, 0);
    }
}

static void test_binary_errors(void **state) {
    (void)state;
    cg_tensor *a = rand_t(2, SHAPE(2, 3)), *b = rand_t(1, SHAPE(4)), *out = empty_t(CG_F32, 2, SHAPE(2, 3));
    assert_int_equal(cg_binary_into(CG_OP_ADD, out, a, b), CG_ERR_SHAPE);
    assert_error_contains("add: shapes f32[2, 3] cpu and f32[4] cpu do not broadcast");
    assert_int_equal(cg_binary_into(CG_OP_SUB, empty_t(CG_F32, 2, SHAPE(3, 2)), a, a), CG_ERR_SHAPE);
    assert_error_contains("sub: output f32[3, 2] cpu should have shape [2, 3]");
    assert_int_equal(cg_binary_into(CG_OP_ADD, empty_t(CG_F32, 1, SHAPE(3)), rand_t(1, SHAPE(3)),
                                    rand_t(2, SHAPE(2, 3))), CG_ERR_SHAPE); /* out cannot take the broadcast */
    assert_error_contains("should have shape [2, 3]");
    assert_int_equal(cg_binary_into(CG_OP_MUL, out, empty_t(CG_I32, 2, SHAPE(2, 3)), a), CG_ERR_DTYPE);
    assert_error_contains("mul: a i32[2, 3] cpu must be f32");
    assert_int_equal(cg_binary_into(CG_OP_MUL, empty_t(CG_BF16, 2, SHAPE(2, 3)), a, a), CG_ERR_DTYPE);
    assert_error_contains("mul: out bf16[2, 3] cpu must be f32");
    assert_int_equal(cg_binary_into(CG_OP_DIV, out, a, NULL), CG_ERR_INVALID_ARG);
    assert_error_contains("div: b is a NULL tensor");
    cg_tensor g = fake_cuda(a);
    /* a GPU operand with a CPU output: refused before any kernel runs */
    assert_int_equal(cg_binary_into(CG_OP_ADD, out, &g, a), CG_ERR_DEVICE);
    assert_error_contains("add: a f32[2, 3] cuda:0 is not on the device of f32[2, 3] cpu");
    assert_int_equal(cg_binary_into(CG_OP_ADD, expanded_t(2, 3), a, a), CG_ERR_INVALID_ARG);
    assert_error_contains("expanded view");
    assert_int_equal(cg_binary_into(CG_BINARY_OP_COUNT, out, a, a), CG_ERR_INVALID_ARG);
    assert_error_contains("unknown op");
}

/* ------------------------------------------------------------------ unary family */

static double ref_unary(cg_unary_op op, double x) {
    switch (op) {
    case CG_OP_NEG: return -x;
    case CG_OP_EXP: return exp(x);
    case CG_OP_LOG: return log(x);
    case CG_OP_TANH: return tanh(x);
    case CG_OP_SIGMOID: return 1.0 / (1.0 + exp(-x));
    case CG_OP_SIGN: return isnan(x) ? NAN : x > 0 ? 1.0 : x < 0 ? -1.0 : 0.0;
    case CG_OP_ABS: return fabs(x);
    case CG_OP_SQRT: return sqrt(x);
    case CG_OP_RSQRT: return 1.0 / sqrt(x);
    case CG_OP_RECIPROCAL: return 1.0 / x;
    case CG_OP_SQUARE: return x * x;
    case CG_OP_RELU: return x > 0 ? x : 0.0;
    case CG_OP_GELU_TANH: return 0.5 * x * (1.0 + tanh(sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
    case CG_OP_SILU: return x / (1.0 + exp(-x));
    default: return NAN;
    }
}

static bool positive_domain(cg_unary_op op) {
    return op == CG_OP_LOG || op == CG_OP_SQRT || op == CG_OP_RSQRT || op == CG_OP_RECIPROCAL;
}

static void check_unary(cg_unary_op op, cg_tensor *out, const cg_tensor *x) {
    cg_tensor *x0 = cg_tensor_clone(arena(), x); /* x may be out */
    assert_ok(cg_unary_into(op, out, x));
    for (int64_t i = 0; i < cg_numel(out); i++)
        assert_close(cg_get_flat(out, i), ref_unary(op, cg_get_flat(x0, i)), 2e-6, 1e-6);
}

static cg_tensor *unary_input(cg_unary_op op, int nd, const int64_t *shape) {
    return positive_domain(op) ? rand_range(nd, shape, 0.05, 4.0) : rand_range(nd, shape, -4.0, 4.0);
}

static void test_unary_values(void **state) {
    (void)state;
    for (int op = 0; op < CG_UNARY_OP_COUNT; op++) {
        check_unary(op, empty_t(CG_F32, 1, SHAPE(1)), unary_input(op, 1, SHAPE(1)));
        check_unary(op, empty_t(CG_F32, 1, SHAPE(257)), unary_input(op, 1, SHAPE(257)));
        check_unary(op, empty_t(CG_F32, 3, SHAPE(3, 5, 7)), unary_input(op, 3, SHAPE(3, 5, 7)));
        cg_tensor *x = unary_input(op, 2, SHAPE(65, 7));
        check_unary(op, x, x); /* in place */
        /* transposed input into a strided output */
        cg_tensor *out = strided_out(7, 65);
        check_unary(op, out, cg_view_transpose(unary_input(op, 2, SHAPE(65, 7)), 0, 1));
        assert_gaps_untouched(out);
        /* sliced input, expanded input */
        cg_tensor *s = cg_view_slice(unary_input(op, 2, SHAPE(9, 20)), 1, 1, 20, 2);
        check_unary(op, empty_t(CG_F32, 2, SHAPE(9, 10)), s);
        cg_tensor *e = cg_view_expand(unary_input(op, 2, SHAPE(1, 10)), 2, SHAPE(9, 10));
        check_unary(op, empty_t(CG_F32, 2, SHAPE(9, 10)), e);
    }
    /* past the OpenMP threshold */
    check_unary(CG_OP_EXP, empty_t(CG_F32, 2, SHAPE(257, 257)), rand_t(2, SHAPE(257, 257)));
    check_unary(CG_OP_GELU_TANH, empty_t(CG_F32, 2, SHAPE(257, 257)), transposed_t(257, 257));
}

static void test_unary_special_values(void **state) {
    (void)state;
    const float x[] = {0.0f, -0.0f, NAN, INFINITY, -INFINITY, 3.5f, -2.0f, 1e-30f};
    cg_tensor *t = cg_tensor_from_data(arena(), CG_F32, 1, SHAPE(8), x), *o = empty_t(CG_F32, 1, SHAPE(8));
    assert_ok(cg_unary_into(CG_OP_SIGN, o, t));
    const double want_sign[] = {0, 0, NAN, 1, -1, 1, -1, 1};
    for (int i = 0; i < 8; i++) assert_close(cg_get_flat(o, i), want_sign[i], 0, 0);
    assert_ok(cg_unary_into(CG_OP_RELU, o, t));
    const double want_relu[] = {0, 0, NAN, INFINITY, 0, 3.5, 0, 1e-30f};
    for (int i = 0; i < 8; i++) assert_close(cg_get_flat(o, i), want_relu[i], 0, 0);
    assert_ok(cg_unary_into(CG_OP_SIGMOID, o, t));
    const double want_sig[] = {0.5, 0.5, NAN, 1, 0, 1.0 / (1.0 + exp(-3.5)), 1.0 / (1.0 + exp(2.0)), 0.5};
    for (int i = 0; i < 8; i++) assert_close(cg_get_flat(o, i), want_sig[i], 1e-6, 0);
    assert_ok(cg_unary_into(CG_OP_TANH, o, t));
    assert_close(cg_get_flat(o, 3), 1.0, 0, 0);
    assert_close(cg_get_flat(o, 4), -1.0, 0, 0);
    assert_ok(cg_unary_into(CG_OP_GELU_TANH, o, t));
    assert_close(cg_get_flat(o, 3), INFINITY, 0, 0);
    assert_close(cg_get_flat(o, 5), 0.5 * 3.5 * (1.0 + tanh(sqrt(2.0 / M_PI) * (3.5 + 0.044715 * 42.875))), 1e-6, 0);
}

static void test_affine_pow_clamp(void **state) {
    (void)state;
    cg_tensor *x = rand_range(2, SHAPE(65, 7), -3.0, 3.0), *out = empty_t(CG_F32, 2, SHAPE(65, 7));
    assert_ok(cg_affine_into(out, x, 2.5f, -0.75f));
    for (int64_t i = 0; i < cg_numel(x); i++) assert_close(cg_get_flat(out, i), cg_get_flat(x, i) * 2.5 - 0.75, 1e-6, 1e-6);
    cg_tensor *x0 = cg_tensor_clone(arena(), x);
    assert_ok(cg_affine_into(x, x, -1.0f, 0.5f)); /* in place */
    for (int64_t i = 0; i < cg_numel(x); i++) assert_close(cg_get_flat(x, i), 0.5 - cg_get_flat(x0, i), 1e-6, 1e-6);

    cg_tensor *pos = cg_view_transpose(rand_range(2, SHAPE(7, 65), 0.01, 3.0), 0, 1);
    const float exps[] = {2.0f, 0.5f, 3.0f, -1.5f, 0.0f, 1.0f};
    for (int k = 0; k < 6; k++) {
        assert_ok(cg_pow_scalar_into(out, pos, exps[k]));
        for (int64_t i = 0; i < cg_numel(out); i++)
            assert_close(cg_get_flat(out, i), pow(cg_get_flat(pos, i), exps[k]), 2e-6, 0);
    }
    assert_ok(cg_pow_scalar_into(out, x0, 2.0f)); /* negative bases with an integer exponent */
    for (int64_t i = 0; i < cg_numel(out); i++) assert_close(cg_get_flat(out, i), pow(cg_get_flat(x0, i), 2.0), 1e-6, 0);

    cg_tensor *so = strided_out(65, 7);
    assert_ok(cg_clamp_into(so, x0, -1.0f, 0.5f));
    for (int64_t i = 0; i < cg_numel(so); i++) {
        double v = cg_get_flat(x0, i);
        assert_close(cg_get_flat(so, i), v < -1 ? -1 : v > 0.5 ? 0.5 : v, 0, 0);
    }
    assert_gaps_untouched(so);
    const float sp[] = {NAN, -5.0f, 5.0f, 0.25f};
    cg_tensor *t = cg_tensor_from_data(arena(), CG_F32, 1, SHAPE(4), sp);
    cg_tensor *o4 = empty_t(CG_F32, 1, SHAPE(4));
    assert_ok(cg_clamp_into(o4, t, 0.0f, 1.0f));
    const double want[] = {NAN, 0.0, 1.0, 0.25};
    for (int i = 0; i < 4; i++) assert_close(cg_get_flat(o4, i), want[i], 0, 0);
    assert_ok(cg_clamp_into(t, t, 2.0f, 1.0f)); /* lo > hi: min(max(x, lo), hi) = hi, in place */
    for (int i = 1; i < 4; i++) assert_close(cg_get_flat(t, i), 1.0, 0, 0);

    /* big, for the parallel path */
    cg_tensor *big = rand_t(2, SHAPE(300, 200)), *bo = empty_t(CG_F32, 2, SHAPE(300, 200));
    assert_ok(cg_affine_into(bo, big, 3.0f, 1.0f));
    for (int64_t i = 0; i < cg_numel(bo); i += 7) assert_close(cg_get_flat(bo, i), cg_get_flat(big, i) * 3 + 1, 1e-6, 1e-6);
}

static void test_unary_errors(void **state) {
    (void)state;
    cg_tensor *x = rand_t(2, SHAPE(2, 3));
    assert_int_equal(cg_unary_into(CG_OP_EXP, empty_t(CG_F32, 2, SHAPE(3, 2)), x), CG_ERR_SHAPE);
    assert_error_contains("exp: output f32[3, 2] cpu should have shape [2, 3]");
    assert_int_equal(cg_unary_into(CG_OP_LOG, empty_t(CG_F32, 2, SHAPE(2, 3)), empty_t(CG_F16, 2, SHAPE(2, 3))),
                     CG_ERR_DTYPE);
    assert_error_contains("log: x f16[2, 3] cpu must be f32");
    assert_int_equal(cg_unary_into(CG_UNARY_OP_COUNT, x, x), CG_ERR_INVALID_ARG);
    assert_int_equal(cg_affine_into(NULL, x, 1, 0), CG_ERR_INVALID_ARG);
    assert_error_contains("affine: out is a NULL tensor");
    assert_int_equal(cg_clamp_into(empty_t(CG_F32, 1, SHAPE(6)), x, 0, 1), CG_ERR_SHAPE);
    assert_error_contains("clamp: output f32[6] cpu should have shape [2, 3]");
    cg_tensor g = fake_cuda(x);
    assert_int_equal(cg_pow_scalar_into(&g, x, 2), CG_ERR_DEVICE);
    assert_error_contains("pow_scalar: x f32[2, 3] cpu is not on the device of f32[2, 3] cuda:0");
}

/* ------------------------------------------------------------------ where */

static void check_where(cg_tensor *out, const cg_tensor *cond, const cg_tensor *a, const cg_tensor *b) {
    assert_ok(cg_where_into(out, cond, a, b));
    int64_t idx[CG_MAX_DIMS];
    for (int64_t i = 0; i < cg_numel(out); i++) {
        unflatten(out->ndim, out->shape, i, idx);
        double c = get_bcast(cond, out->ndim, idx);
        double want = c != 0 ? get_bcast(a, out->ndim, idx) : get_bcast(b, out->ndim, idx);
        assert_close(cg_get(out, idx), want, 0, 0);
    }
}

static cg_tensor *rand_cond(cg_dtype dt, int nd, const int64_t *shape) {
    cg_tensor *c = empty_t(dt, nd, shape);
    for (int64_t i = 0; i < cg_numel(c); i++) cg_set_flat(c, i, cg_test_randf(&seed) > 0 ? (dt == CG_F32 ? 0.5 : 3) : 0);
    return c;
}

static void test_where(void **state) {
    (void)state;
    const cg_dtype dts[] = {CG_U8, CG_I32, CG_I64, CG_F32};
    for (int k = 0; k < 4; k++) {
        check_where(empty_t(CG_F32, 2, SHAPE(7, 65)), rand_cond(dts[k], 2, SHAPE(7, 65)), rand_t(2, SHAPE(7, 65)),
                    rand_t(2, SHAPE(7, 65)));
        check_where(empty_t(CG_F32, 3, SHAPE(3, 4, 5)), rand_cond(dts[k], 3, SHAPE(3, 1, 5)), rand_t(2, SHAPE(4, 1)),
                    rand_t(1, SHAPE(1)));
        check_where(empty_t(CG_F32, 2, SHAPE(300, 257)), rand_cond(dts[k], 1, SHAPE(257)), rand_t(2, SHAPE(300, 257)),
                    rand_t(2, SHAPE(300, 1)));
    }
    cg_tensor *out = strided_out(7, 5);
    check_where(out, cg_view_transpose(rand_cond(CG_U8, 2, SHAPE(5, 7)), 0, 1), step2_t(7, 5), expanded_t(7, 5));
    assert_gaps_untouched(out);

    cg_tensor *a = rand_t(2, SHAPE(2, 3));
    assert_int_equal(cg_where_into(a, empty_t(CG_BF16, 2, SHAPE(2, 3)), a, a), CG_ERR_DTYPE);
    assert_error_contains("where: cond bf16[2, 3] cpu must be u8, i32, i64 or f32");
    assert_int_equal(cg_where_into(a, rand_cond(CG_U8, 1, SHAPE(4)), a, a), CG_ERR_SHAPE);
    assert_error_contains("where: shapes u8[4] cpu, f32[2, 3] cpu and f32[2, 3] cpu do not broadcast");
    assert_int_equal(cg_where_into(a, rand_cond(CG_U8, 1, SHAPE(3)), a, empty_t(CG_I32, 1, SHAPE(3))), CG_ERR_DTYPE);
    assert_error_contains("where: b i32[3] cpu must be f32");
}

/* ------------------------------------------------------------------ reductions */

/* Reference reduction of x over axis, checked against out (and argout), both in keepdim-or-not layout. */
static void check_reduce(cg_reduce_op op, const cg_tensor *x, int axis, bool keepdim, cg_tensor *out, cg_tensor *argout) {
    assert_ok(cg_reduce_into(op, out, argout, x, axis, keepdim));
    int ax = axis < 0 ? axis + x->ndim : axis;
    int64_t n = x->shape[ax], keep[CG_MAX_DIMS], idx[CG_MAX_DIMS];
    for (int i = 0; i < x->ndim; i++) keep[i] = i == ax ? 1 : x->shape[i];
    int64_t count = cg_numel(out);
    for (int64_t o = 0; o < count; o++) {
        unflatten(x->ndim, keep, o, idx);
        double acc = op == CG_REDUCE_MAX ? -INFINITY : op == CG_REDUCE_MIN ? INFINITY : 0.0;
        int64_t at = 0;
        for (int64_t r = 0; r < n; r++) {
            idx[ax] = r;
            double v = cg_get(x, idx);
            if (op == CG_REDUCE_SUM || op == CG_REDUCE_MEAN) acc += v;
            else if (isnan(acc)) continue;
            else if (isnan(v) || (op == CG_REDUCE_MAX ? v > acc : v < acc) || r == 0) acc = v, at = r;
        }
        if (op == CG_REDUCE_MEAN) acc /= (double)n;
        assert_close(cg_get_flat(out, o), acc, 1e-6, 1e-6);
        if (argout) assert_int_equal((int64_t)cg_get_flat(argout, o), at);
    }
}

/* Every op and axis of x, keepdim or not, with argout for max/min. */
static void check_reduce_all(const cg_tensor *x) {
    for (int op = 0; op < CG_REDUCE_OP_COUNT; op++) {
        for (int axis = -1; axis < x->ndim; axis++) {
            int ax = axis < 0 ? axis + x->ndim : axis;
            for (int keepdim = 0; keepdim < 2; keepdim++) {
                int64_t shape[CG_MAX_DIMS];
                int nd = 0;
                for (int i = 0; i < x->ndim; i++)
                    if (keepdim || i != ax) shape[nd++] = i == ax ? 1 : x->shape[i];
                for (int with_arg = 0; with_arg < (op >= CG_REDUCE_MAX ? 2 : 1); with_arg++) {
                    cg_tensor *out = empty_t(CG_F32, nd, shape);
                    cg_tensor *arg = with_arg ? empty_t(CG_I64, nd, shape) : NULL;
                    check_reduce(op, x, axis, keepdim, out, arg);
                }
            }
        }
    }
}

static void test_reduce_shapes(void **state) {
    (void)state;
    check_reduce_all(rand_t(1, SHAPE(7)));
    check_reduce_all(rand_t(2, SHAPE(1, 65)));
    check_reduce_all(rand_t(2, SHAPE(3, 257)));
    check_reduce_all(rand_t(3, SHAPE(4, 5, 6)));
    check_reduce_all(rand_t(4, SHAPE(2, 1, 3, 5)));
    check_reduce_all(transposed_t(7, 65));
    check_reduce_all(step2_t(5, 9));
    check_reduce_all(expanded_t(6, 7));
    cg_tensor *p = cg_view_permute(rand_t(3, SHAPE(4, 5, 6)), (const int[]){2, 0, 1});
    check_reduce_all(p);
    /* A strided output and argout. */
    cg_tensor *x = rand_t(2, SHAPE(9, 7));
    cg_tensor *out = cg_view_slice(empty_t(CG_F32, 1, SHAPE(18)), 0, 0, 18, 2);
    cg_tensor *arg = cg_view_slice(empty_t(CG_I64, 1, SHAPE(27)), 0, 0, 27, 3);
    check_reduce(CG_REDUCE_MAX, x, 1, false, out, arg);
    check_reduce(CG_REDUCE_MIN, x, 1, false, out, arg);
    check_reduce(CG_REDUCE_MEAN, x, 1, false, out, NULL);
}

static void test_reduce_large(void **state) {
    (void)state;
    /* one long row (the row is split across threads), few long rows, an outer axis, a middle axis */
    cg_tensor *x = rand_t(2, SHAPE(1, 100003));
    float *p = cg_data(x);
    p[70001] = 5.0f; /* the max twice: the first index must win across the chunk boundary */
    p[90001] = 5.0f;
    p[20001] = -5.0f;
    p[60001] = -5.0f;
    for (int op = 0; op < CG_REDUCE_OP_COUNT; op++) {
        cg_tensor *out = empty_t(CG_F32, 1, SHAPE(1)), *arg = op >= CG_REDUCE_MAX ? empty_t(CG_I64, 1, SHAPE(1)) : NULL;
        check_reduce(op, x, 1, false, out, arg);
        if (op == CG_REDUCE_MAX) assert_int_equal((int64_t)cg_get_flat(arg, 0), 70001);
        if (op == CG_REDUCE_MIN) assert_int_equal((int64_t)cg_get_flat(arg, 0), 20001);
    }
    cg_tensor *y = rand_t(2, SHAPE(3, 40000)), *z = rand_t(2, SHAPE(200, 300)), *w = rand_t(3, SHAPE(50, 40, 30));
    for (int op = 0; op < CG_REDUCE_OP_COUNT; op++) {
        cg_tensor *arg3 = op >= CG_REDUCE_MAX ? empty_t(CG_I64, 1, SHAPE(3)) : NULL;
        check_reduce(op, y, 1, false, empty_t(CG_F32, 1, SHAPE(3)), arg3);
        cg_tensor *arg300 = op >= CG_REDUCE_MAX ? empty_t(CG_I64, 2, SHAPE(1, 300)) : NULL;
        check_reduce(op, z, 0, true, empty_t(CG_F32, 2, SHAPE(1, 300)), arg300);
        check_reduce(op, z, 0, true, empty_t(CG_F32, 2, SHAPE(1, 300)), NULL);
        cg_tensor *arg_w = op >= CG_REDUCE_MAX ? empty_t(CG_I64, 2, SHAPE(50, 30)) : NULL;
        check_reduce(op, w, 1, false, empty_t(CG_F32, 2, SHAPE(50, 30)), arg_w);
        cg_tensor *zt = cg_view_transpose(z, 0, 1); /* strided path, big */
        check_reduce(op, zt, 1, false, empty_t(CG_F32, 1, SHAPE(300)), op >= CG_REDUCE_MAX ? empty_t(CG_I64, 1, SHAPE(300)) : NULL);
    }
}

static void test_reduce_nan_ties(void **state) {
    (void)state;
    /* rows: ties, NaN in the middle, NaN first, infinities only */
    const float v[4][5] = {{1, 3, 3, 2, 3}, {1, NAN, 5, NAN, -7}, {NAN, 1, 2, 3, 4}, {-INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY}};
    cg_tensor *x = cg_tensor_from_data(arena(), CG_F32, 2, SHAPE(4, 5), v);
    cg_tensor *out = empty_t(CG_F32, 1, SHAPE(4)), *arg = empty_t(CG_I64, 1, SHAPE(4));
    assert_ok(cg_reduce_into(CG_REDUCE_MAX, out, arg, x, 1, false));
    const double want_max[] = {3, NAN, NAN, -INFINITY};
    const int64_t want_argmax[] = {1, 1, 0, 0};
    for (int i = 0; i < 4; i++) {
        assert_close(cg_get_flat(out, i), want_max[i], 0, 0);
        assert_int_equal((int64_t)cg_get_flat(arg, i), want_argmax[i]);
    }
    assert_ok(cg_reduce_into(CG_REDUCE_MIN, out, arg, x, -1, false));
    const double want_min[] = {1, NAN, NAN, -INFINITY};
    const int64_t want_argmin[] = {0, 1, 0, 0};
    for (int i = 0; i < 4; i++) {
        assert_close(cg_get_flat(out, i), want_min[i], 0, 0);
        assert_int_equal((int64_t)cg_get_flat(arg, i), want_argmin[i]);
    }
    /* the same along an outer axis (the column path) */
    cg_tensor *xt = cg_contiguous(cg_view_transpose(x, 0, 1)); /* [5, 4] packed */
    cg_tensor *o2 = empty_t(CG_F32, 2, SHAPE(1, 4)), *a2 = empty_t(CG_I64, 2, SHAPE(1, 4));
    assert_ok(cg_reduce_into(CG_REDUCE_MAX, o2, a2, xt, 0, true));
    for (int i = 0; i < 4; i++) {
        assert_close(cg_get_flat(o2, i), want_max[i], 0, 0);
        assert_int_equal((int64_t)cg_get_flat(a2, i), want_argmax[i]);
    }
    assert_ok(cg_reduce_into(CG_REDUCE_MIN, o2, NULL, xt, 0, true)); /* the value-only column loop */
    for (int i = 0; i < 4; i++) assert_close(cg_get_flat(o2, i), want_min[i], 0, 0);
    assert_ok(cg_reduce_into(CG_REDUCE_MAX, o2, NULL, xt, 0, true));
    for (int i = 0; i < 4; i++) assert_close(cg_get_flat(o2, i), want_max[i], 0, 0);
    assert_ok(cg_reduce_into(CG_REDUCE_SUM, o2, NULL, xt, 0, true));
    assert_close(cg_get_flat(o2, 0), 12.0, 0, 0);
    assert_close(cg_get_flat(o2, 1), NAN, 0, 0);
    assert_close(cg_get_flat(o2, 3), -INFINITY, 0, 0);
}

static void test_reduce_empty_and_errors(void **state) {
    (void)state;
    cg_tensor *e = empty_t(CG_F32, 2, SHAPE(3, 0)), *out = empty_t(CG_F32, 1, SHAPE(3));
    assert_ok(cg_reduce_into(CG_REDUCE_SUM, out, NULL, e, 1, false));
    for (int i = 0; i < 3; i++) assert_close(cg_get_flat(out, i), 0.0, 0, 0);
    assert_ok(cg_reduce_into(CG_REDUCE_MEAN, out, NULL, e, 1, false));
    for (int i = 0; i < 3; i++) assert_true(isnan(cg_get_flat(out, i)));
    assert_int_equal(cg_reduce_into(CG_REDUCE_MAX, out, NULL, e, 1, false), CG_ERR_SHAPE);
    assert_error_contains("max: cannot reduce over axis 1 of f32[3, 0] cpu: it is empty");
    assert_ok(cg_reduce_into(CG_REDUCE_MAX, empty_t(CG_F32, 1, SHAPE(0)), NULL, e, 0, false)); /* nothing to do */

    cg_tensor *x = rand_t(2, SHAPE(3, 4));
    assert_int_equal(cg_reduce_into(CG_REDUCE_SUM, out, NULL, x, 2, false), CG_ERR_INVALID_ARG);
    assert_error_contains("sum: axis 2 is out of range for f32[3, 4] cpu");
    assert_int_equal(cg_reduce_into(CG_REDUCE_SUM, out, NULL, x, -3, false), CG_ERR_INVALID_ARG);
    assert_int_equal(cg_reduce_into(CG_REDUCE_MEAN, out, NULL, x, 1, true), CG_ERR_SHAPE);
    assert_error_contains("mean: output f32[3] cpu should have shape [3, 1]");
    assert_int_equal(cg_reduce_into(CG_REDUCE_SUM, out, empty_t(CG_I64, 1, SHAPE(3)), x, 1, false), CG_ERR_INVALID_ARG);
    assert_error_contains("argout is only produced by max and min");
    assert_int_equal(cg_reduce_into(CG_REDUCE_MAX, out, empty_t(CG_I32, 1, SHAPE(3)), x, 1, false), CG_ERR_DTYPE);
    assert_error_contains("max: argout i32[3] cpu must be i64");
    assert_int_equal(cg_reduce_into(CG_REDUCE_MIN, out, empty_t(CG_I64, 1, SHAPE(4)), x, 1, false), CG_ERR_SHAPE);
    assert_error_contains("min: output i64[4] cpu should have shape [3]");
    assert_int_equal(cg_reduce_into(CG_REDUCE_SUM, out, NULL, empty_t(CG_I32, 2, SHAPE(3, 4)), 1, false), CG_ERR_DTYPE);
    assert_error_contains("sum: x i32[3, 4] cpu must be f32");
}

/* ------------------------------------------------------------------ gather, index_select, embedding */

static cg_tensor *rand_index(cg_dtype dt, int nd, const int64_t *shape, int64_t limit) {
    cg_tensor *t = empty_t(dt, nd, shape);
    for (int64_t i = 0; i < cg_numel(t); i++)
        cg_set_flat(t, i, (double)((int64_t)((cg_test_randf(&seed) + 1.0) * 0.5 * (double)limit) % limit));
    return t;
}

static void check_gather(const cg_tensor *x, int axis, const cg_tensor *index, cg_tensor *out) {
    assert_ok(cg_gather_into(out, x, axis, index));
    int ax = axis < 0 ? axis + x->ndim : axis;
    int64_t idx[CG_MAX_DIMS];
    for (int64_t i = 0; i < cg_numel(index); i++) {
        unflatten(index->ndim, index->shape, i, idx);
        double got = cg_get(out, idx);
        idx[ax] = (int64_t)cg_get(index, idx);
        assert_close(got, cg_get(x, idx), 0, 0);
    }
}

static void test_gather(void **state) {
    (void)state;
    cg_tensor *x = rand_t(2, SHAPE(4, 5));
    check_gather(x, 0, rand_index(CG_I64, 2, SHAPE(3, 5), 4), empty_t(CG_F32, 2, SHAPE(3, 5)));
    check_gather(x, 1, rand_index(CG_I32, 2, SHAPE(4, 7), 5), empty_t(CG_F32, 2, SHAPE(4, 7)));
    check_gather(x, -1, rand_index(CG_I32, 2, SHAPE(2, 3), 5), empty_t(CG_F32, 2, SHAPE(2, 3))); /* smaller index */
    cg_tensor *x3 = rand_t(3, SHAPE(3, 65, 7));
    check_gather(x3, 1, rand_index(CG_I64, 3, SHAPE(3, 9, 7), 65), empty_t(CG_F32, 3, SHAPE(3, 9, 7)));
    /* non-contiguous x and index, strided out */
    cg_tensor *it = cg_view_transpose(rand_index(CG_I64, 2, SHAPE(5, 7), 9), 0, 1);
    cg_tensor *out = strided_out(7, 5);
    check_gather(step2_t(7, 9), 1, it, out);
    assert_gaps_untouched(out);
    /* big: token log-prob style gather along the vocabulary */
    check_gather(rand_t(2, SHAPE(257, 300)), 1, rand_index(CG_I64, 2, SHAPE(257, 200), 300),
                 empty_t(CG_F32, 2, SHAPE(257, 200)));
    /* an integer source */
    cg_tensor *xi = rand_index(CG_I64, 2, SHAPE(3, 4), 1000);
    check_gather(xi, 1, rand_index(CG_I32, 2, SHAPE(3, 2), 4), empty_t(CG_I64, 2, SHAPE(3, 2)));

    /* errors */
    cg_tensor *bad = rand_index(CG_I64, 2, SHAPE(2, 3), 5);
    cg_set_flat(bad, 4, 9);
    assert_int_equal(cg_gather_into(empty_t(CG_F32, 2, SHAPE(2, 3)), x, 1, bad), CG_ERR_INVALID_ARG);
    assert_error_contains("gather: index 9 at position 4 is outside [0, 5) for axis 1 of x f32[4, 5] cpu");
    cg_set_flat(bad, 4, 0);
    cg_set_flat(bad, 2, -1);
    assert_int_equal(cg_gather_into(empty_t(CG_F32, 2, SHAPE(2, 3)), x, 1, bad), CG_ERR_INVALID_ARG);
    assert_error_contains("index -1 at position 2");
    assert_int_equal(cg_gather_into(empty_t(CG_F32, 2, SHAPE(2, 3)), x, 2, bad), CG_ERR_INVALID_ARG);
    assert_error_contains("gather: axis 2 is out of range for x f32[4, 5] cpu");
    assert_int_equal(cg_gather_into(empty_t(CG_F32, 1, SHAPE(3)), x, 1, rand_index(CG_I64, 1, SHAPE(3), 5)), CG_ERR_SHAPE);
    assert_error_contains("must have as many dims as x");
    assert_int_equal(cg_gather_into(empty_t(CG_F32, 2, SHAPE(6, 2)), x, 1, rand_index(CG_I64, 2, SHAPE(6, 2), 5)),
                     CG_ERR_SHAPE);
    assert_error_contains("larger than x f32[4, 5] cpu in dim 0");
    assert_int_equal(cg_gather_into(empty_t(CG_F32, 2, SHAPE(2, 2)), x, 1, bad), CG_ERR_SHAPE);
    assert_error_contains("gather: output f32[2, 2] cpu should have shape [2, 3]");
    assert_int_equal(cg_gather_into(empty_t(CG_F32, 2, SHAPE(2, 3)), x, 1, rand_t(2, SHAPE(2, 3))), CG_ERR_DTYPE);
    assert_error_contains("gather: index f32[2, 3] cpu must be i32 or i64");
    assert_int_equal(cg_gather_into(empty_t(CG_I32, 2, SHAPE(2, 3)), x, 1, bad), CG_ERR_DTYPE);
    assert_error_contains("must have the dtype of x");
}

static void test_index_select(void **state) {
    (void)state;
    cg_tensor *x = rand_t(3, SHAPE(5, 6, 7));
    for (int axis = -1; axis < 3; axis++) {
        int ax = axis < 0 ? 2 : axis;
        cg_tensor *index = rand_index(axis & 1 ? CG_I32 : CG_I64, 1, SHAPE(4), x->shape[ax]);
        int64_t shape[3] = {5, 6, 7};
        shape[ax] = 4;
        cg_tensor *out = empty_t(CG_F32, 3, shape);
        assert_ok(cg_index_select_into(out, x, axis, index));
        int64_t idx[3];
        for (int64_t i = 0; i < cg_numel(out); i++) {
            unflatten(3, shape, i, idx);
            double got = cg_get(out, idx);
            idx[ax] = (int64_t)cg_get_flat(index, idx[ax]);
            assert_close(got, cg_get(x, idx), 0, 0);
        }
    }
    /* strided x, a strided 1-D index with repeats, strided out */
    const int64_t ids[] = {2, 0, 2, 0, 2, 0, 1, 0};
    cg_tensor *index = cg_view_slice(cg_tensor_from_data(arena(), CG_I64, 1, SHAPE(8), ids), 0, 0, 8, 2); /* 2,2,2,1 */
    cg_tensor *xs = step2_t(3, 4), *out = strided_out(4, 3);
    assert_ok(cg_index_select_into(out, cg_view_transpose(xs, 0, 1), 0, index)); /* out[i, j] = xs[j, index[i]] */
    const int64_t picked[] = {2, 2, 2, 1};
    for (int64_t i = 0; i < 4; i++)
        for (int64_t j = 0; j < 3; j++)
            assert_close(cg_get(out, (int64_t[]){i, j}), cg_get(xs, (int64_t[]){j, picked[i]}), 0, 0);
    assert_gaps_untouched(out);

    cg_tensor *bad = rand_index(CG_I32, 1, SHAPE(3), 6);
    cg_set_flat(bad, 1, 6);
    assert_int_equal(cg_index_select_into(empty_t(CG_F32, 3, SHAPE(5, 3, 7)), x, 1, bad), CG_ERR_INVALID_ARG);
    assert_error_contains("index_select: index 6 at position 1 is outside [0, 6) for axis 1");
    assert_int_equal(cg_index_select_into(empty_t(CG_F32, 3, SHAPE(5, 4, 7)), x, 1, rand_index(CG_I32, 2, SHAPE(2, 2), 6)),
                     CG_ERR_SHAPE);
    assert_error_contains("must be 1-D");
    assert_int_equal(cg_index_select_into(empty_t(CG_F32, 3, SHAPE(5, 4, 7)), x, 3, bad), CG_ERR_INVALID_ARG);
    assert_error_contains("axis 3 is out of range");
}

static void check_embedding(const cg_tensor *weight, const cg_tensor *ids, cg_tensor *out) {
    assert_ok(cg_embedding_into(out, weight, ids));
    int64_t C = weight->shape[1], nids = cg_numel(ids);
    for (int64_t i = 0; i < nids; i++) {
        int64_t id = (int64_t)cg_get_flat(ids, i);
        for (int64_t c = 0; c < C; c++)
            assert_close(cg_get_flat(out, i * C + c), cg_get(weight, (int64_t[]){id, c}), 0, 0);
    }
}

static void test_embedding(void **state) {
    (void)state;
    cg_tensor *w = rand_t(2, SHAPE(10, 8));
    check_embedding(w, rand_index(CG_I64, 2, SHAPE(2, 3), 10), empty_t(CG_F32, 3, SHAPE(2, 3, 8)));
    check_embedding(w, rand_index(CG_I32, 1, SHAPE(7), 10), empty_t(CG_F32, 2, SHAPE(7, 8)));
    check_embedding(w, rand_index(CG_I32, 0, NULL, 10), empty_t(CG_F32, 1, SHAPE(8)));
    check_embedding(w, cg_view_transpose(rand_index(CG_I64, 2, SHAPE(3, 2), 10), 0, 1), empty_t(CG_F32, 3, SHAPE(2, 3, 8)));
    /* a weight with strided rows and columns (every second column of [10, 16]), and its transpose's transpose */
    check_embedding(step2_t(10, 8), rand_index(CG_I64, 2, SHAPE(4, 5), 10), empty_t(CG_F32, 3, SHAPE(4, 5, 8)));
    check_embedding(transposed_t(10, 8), rand_index(CG_I64, 1, SHAPE(5), 10), empty_t(CG_F32, 2, SHAPE(5, 8)));
    /* big */
    check_embedding(rand_t(2, SHAPE(100, 512)), rand_index(CG_I64, 2, SHAPE(2, 64), 100),
                    empty_t(CG_F32, 3, SHAPE(2, 64, 512)));

    cg_tensor *ids = rand_index(CG_I64, 2, SHAPE(2, 3), 10);
    cg_set_flat(ids, 4, 10);
    assert_int_equal(cg_embedding_into(empty_t(CG_F32, 3, SHAPE(2, 3, 8)), w, ids), CG_ERR_INVALID_ARG);
    assert_error_contains("embedding: id 10 at position 4 is outside [0, 10) (weight f32[10, 8] cpu)");
    cg_set_flat(ids, 4, 1);
    cg_set_flat(ids, 5, -3);
    assert_int_equal(cg_embedding_into(empty_t(CG_F32, 3, SHAPE(2, 3, 8)), w, ids), CG_ERR_INVALID_ARG);
    assert_error_contains("id -3 at position 5");
    assert_int_equal(cg_embedding_into(empty_t(CG_F32, 2, SHAPE(6, 8)), w, ids), CG_ERR_SHAPE);
    assert_error_contains("embedding: output f32[6, 8] cpu should have shape [2, 3, 8]");
    assert_int_equal(cg_embedding_into(empty_t(CG_F32, 2, SHAPE(3, 8)), rand_t(1, SHAPE(10)), ids), CG_ERR_SHAPE);
    assert_error_contains("must be 2-D");
    assert_int_equal(cg_embedding_into(empty_t(CG_F32, 2, SHAPE(3, 8)), w, rand_t(1, SHAPE(3))), CG_ERR_DTYPE);
    assert_error_contains("embedding: ids f32[3] cpu must be i32 or i64");
    assert_int_equal(cg_embedding_into(empty_t(CG_BF16, 2, SHAPE(3, 8)), empty_t(CG_BF16, 2, SHAPE(10, 8)),
                                       rand_index(CG_I32, 1, SHAPE(3), 10)), CG_ERR_DTYPE);
    assert_error_contains("must be f32 or an integer dtype");
}

/* ------------------------------------------------------------------ concat and cast */

static void test_concat(void **state) {
    (void)state;
    cg_tensor *a = rand_t(2, SHAPE(2, 3)), *b = transposed_t(2, 1), *c = step2_t(2, 4);
    const cg_tensor *xs[3] = {a, b, c};
    cg_tensor *out = empty_t(CG_F32, 2, SHAPE(2, 8));
    assert_ok(cg_concat_into(out, 3, xs, 1));
    for (int64_t i = 0; i < 2; i++)
        for (int64_t j = 0; j < 8; j++) {
            const cg_tensor *src = j < 3 ? a : j < 4 ? b : c;
            int64_t k = j < 3 ? j : j < 4 ? 0 : j - 4;
            assert_close(cg_get(out, (int64_t[]){i, j}), cg_get(src, (int64_t[]){i, k}), 0, 0);
        }
    /* axis 0 (and -2) into a strided out */
    cg_tensor *d = rand_t(2, SHAPE(1, 3)), *e = expanded_t(4, 3);
    const cg_tensor *ys[3] = {a, d, e};
    cg_tensor *so = strided_out(7, 3);
    assert_ok(cg_concat_into(so, 3, ys, -2));
    for (int64_t i = 0; i < 7; i++)
        for (int64_t j = 0; j < 3; j++) {
            const cg_tensor *src = i < 2 ? a : i < 3 ? d : e;
            int64_t r = i < 2 ? i : i < 3 ? 0 : i - 3;
            assert_close(cg_get(so, (int64_t[]){i, j}), cg_get(src, (int64_t[]){r, j}), 0, 0);
        }
    assert_gaps_untouched(so);
    /* i64 tensors (prompt + completion tokens), and a big middle-axis concat */
    const int64_t p[] = {1, 2, 3}, q[] = {40, 50};
    const cg_tensor *zs[2] = {cg_tensor_from_data(arena(), CG_I64, 1, SHAPE(3), p),
                              cg_tensor_from_data(arena(), CG_I64, 1, SHAPE(2), q)};
    cg_tensor *ti = empty_t(CG_I64, 1, SHAPE(5));
    assert_ok(cg_concat_into(ti, 2, zs, 0));
    const int64_t want[] = {1, 2, 3, 40, 50};
    for (int i = 0; i < 5; i++) assert_int_equal((int64_t)cg_get_flat(ti, i), want[i]);
    cg_tensor *big1 = rand_t(3, SHAPE(40, 30, 50)), *big2 = rand_t(3, SHAPE(40, 20, 50));
    const cg_tensor *bs[2] = {big1, big2};
    cg_tensor *bo = empty_t(CG_F32, 3, SHAPE(40, 50, 50));
    assert_ok(cg_concat_into(bo, 2, bs, 1));
    for (int64_t i = 0; i < 40; i += 3)
        for (int64_t j = 0; j < 50; j++)
            for (int64_t k = 0; k < 50; k += 7) {
                double want_v = j < 30 ? cg_get(big1, (int64_t[]){i, j, k}) : cg_get(big2, (int64_t[]){i, j - 30, k});
                assert_close(cg_get(bo, (int64_t[]){i, j, k}), want_v, 0, 0);
            }

    assert_int_equal(cg_concat_into(out, 2, (const cg_tensor *[]){a, rand_t(2, SHAPE(3, 5))}, 1), CG_ERR_SHAPE);
    assert_error_contains("concat: xs[1] f32[3, 5] cpu does not match xs[0] f32[2, 3] cpu outside axis 1");
    assert_int_equal(cg_concat_into(out, 3, xs, 0), CG_ERR_SHAPE);
    assert_int_equal(cg_concat_into(empty_t(CG_F32, 2, SHAPE(2, 7)), 3, xs, 1), CG_ERR_SHAPE);
    assert_error_contains("concat: output f32[2, 7] cpu should have shape [2, 8]");
    assert_int_equal(cg_concat_into(out, 2, (const cg_tensor *[]){a, empty_t(CG_I32, 2, SHAPE(2, 5))}, 1), CG_ERR_DTYPE);
    assert_error_contains("must have the dtype of xs[1] i32[2, 5] cpu");
    assert_int_equal(cg_concat_into(out, 0, xs, 1), CG_ERR_INVALID_ARG);
    assert_int_equal(cg_concat_into(out, 3, xs, 2), CG_ERR_INVALID_ARG);
    assert_error_contains("concat: axis 2 is out of range");
}

static void test_cast(void **state) {
    (void)state;
    const float v[] = {1.0f + 0x1p-8f, 1.0f + 3 * 0x1p-8f, 1.0f + 0x1p-8f + 0x1p-20f, -1.0f - 0x1p-8f, 65520.0f, NAN};
    cg_tensor *x = cg_tensor_from_data(arena(), CG_F32, 1, SHAPE(6), v);
    cg_tensor *bf = empty_t(CG_BF16, 1, SHAPE(6));
    assert_ok(cg_cast_into(bf, x));
    const uint16_t *h = cg_data(bf);
    assert_int_equal(h[0], 0x3f80); /* a tie: to even, 1.0 */
    assert_int_equal(h[1], 0x3f82); /* a tie: to even, up to 1 + 2^-6 */
    assert_int_equal(h[2], 0x3f81); /* above the tie: up */
    assert_int_equal(h[3], 0xbf80);
    assert_true(isnan(cg_bf16_to_f32(h[5])));
    cg_tensor *back = empty_t(CG_F32, 1, SHAPE(6));
    assert_ok(cg_cast_into(back, bf));
    assert_close(cg_get_flat(back, 1), 1.0 + 0x1p-6, 0, 0);
    assert_close(cg_get_flat(back, 2), 1.0 + 0x1p-7, 0, 0);
    cg_tensor *f16 = empty_t(CG_F16, 1, SHAPE(6));
    assert_ok(cg_cast_into(f16, x));
    assert_close(cg_get_flat(f16, 4), INFINITY, 0, 0); /* 65520 rounds past the largest f16 */
    assert_close(cg_get_flat(f16, 0), 1.0 + 0x1p-8, 0, 0); /* exact in f16 */

    const float iv[] = {2.7f, -2.7f, 3e9f, -3e9f, NAN, 0.5f};
    cg_tensor *xi = cg_tensor_from_data(arena(), CG_F32, 1, SHAPE(6), iv);
    cg_tensor *i32 = empty_t(CG_I32, 1, SHAPE(6));
    assert_ok(cg_cast_into(i32, xi));
    const int32_t *ip = cg_data(i32);
    const int32_t want[] = {2, -2, INT32_MAX, INT32_MIN, 0, 0};
    for (int i = 0; i < 6; i++) assert_int_equal(ip[i], want[i]);
    /* strided source, i64 -> f32 */
    cg_tensor *src = cg_view_transpose(rand_index(CG_I64, 2, SHAPE(3, 4), 1000), 0, 1);
    cg_tensor *dst = empty_t(CG_F32, 2, SHAPE(4, 3));
    assert_ok(cg_cast_into(dst, src));
    for (int64_t i = 0; i < 12; i++) assert_close(cg_get_flat(dst, i), cg_get_flat(src, i), 0, 0);

    assert_int_equal(cg_cast_into(empty_t(CG_F32, 1, SHAPE(5)), x), CG_ERR_SHAPE);
    assert_error_contains("cast: output f32[5] cpu and input f32[6] cpu differ in shape");
    assert_int_equal(cg_cast_into(NULL, x), CG_ERR_INVALID_ARG);
}

int main(void) {
    /* Four threads even on a smaller machine, so the work splitting (and the split of one long row into
     * per-thread chunks, used when there are fewer rows than threads) runs here. */
    cg_set_num_threads(4);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_names, cg_test_teardown),
        cmocka_unit_test_teardown(test_broadcast_shapes, cg_test_teardown),
        cmocka_unit_test_teardown(test_binary_broadcast, cg_test_teardown),
        cmocka_unit_test_teardown(test_binary_strided, cg_test_teardown),
        cmocka_unit_test_teardown(test_binary_large, cg_test_teardown),
        cmocka_unit_test_teardown(test_binary_inplace_and_nan, cg_test_teardown),
        cmocka_unit_test_teardown(test_binary_errors, cg_test_teardown),
        cmocka_unit_test_teardown(test_unary_values, cg_test_teardown),
        cmocka_unit_test_teardown(test_unary_special_values, cg_test_teardown),
        cmocka_unit_test_teardown(test_affine_pow_clamp, cg_test_teardown),
        cmocka_unit_test_teardown(test_unary_errors, cg_test_teardown),
        cmocka_unit_test_teardown(test_where, cg_test_teardown),
        cmocka_unit_test_teardown(test_reduce_shapes, cg_test_teardown),
        cmocka_unit_test_teardown(test_reduce_large, cg_test_teardown),
        cmocka_unit_test_teardown(test_reduce_nan_ties, cg_test_teardown),
        cmocka_unit_test_teardown(test_reduce_empty_and_errors, cg_test_teardown),
        cmocka_unit_test_teardown(test_gather, cg_test_teardown),
        cmocka_unit_test_teardown(test_index_select, cg_test_teardown),
        cmocka_unit_test_teardown(test_embedding, cg_test_teardown),
        cmocka_unit_test_teardown(test_concat, cg_test_teardown),
        cmocka_unit_test_teardown(test_cast, cg_test_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
