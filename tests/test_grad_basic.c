/* Every primitive differentiable op of autograd/ops.h (and gelu, silu, swiglu): forward values against naive
 * double references and gradients by cg_gradcheck, over several shapes: broadcasting both ways, batch 1,
 * odd sizes, non-contiguous inputs (transposed, sliced with a step). Inputs stay away from non-smooth points
 * so finite differences are valid; the conventions at those points are checked exactly on their own.
 * Gradcheck tolerances: rtol 1e-2, atol 1e-3 (the defaults) unless a case says otherwise. */
#include "test_util.h"

#include "autograd/gradcheck.h"
#include "autograd/ops.h"

/* ------------------------------------------------------------------ inputs */

typedef float (*gen_fn)(uint64_t *s);

static float gen_any(uint64_t *s) { return 2.0f * cg_test_randf(s); }               /* [-2, 2) */
static float gen_pos(uint64_t *s) { return 1.1f + 0.9f * cg_test_randf(s); }        /* [0.2, 2) */
static float gen_away(uint64_t *s) { /* |x| in [0.1, 1.5): away from the kinks of abs/relu/sign at 0 */
    float v = cg_test_randf(s);
    return (v < 0 ? -0.1f : 0.1f) + 1.4f * v;
}
static float gen_nonzero(uint64_t *s) { /* |x| in [0.5, 1.5): safe denominators */
    float v = cg_test_randf(s);
    return (v < 0 ? -0.5f : 0.5f) + v;
}
/* maximum/minimum: a gets odd multiples of 0.1, b even multiples jittered by < 0.02, so |a - b| > 0.08 */
static float gen_odd_tenths(uint64_t *s) { return 0.1f * (float)(2 * (int)(8.0f * cg_test_randf(s)) + 1); }
static float gen_even_tenths(uint64_t *s) {
    return 0.2f * (float)(int)(8.0f * cg_test_randf(s)) + 0.02f * cg_test_randf(s);
}
/* clamp(x, -0.5, 0.4): at least 0.05 from either bound */
static float gen_clamp_safe(uint64_t *s) {
    for (;;) {
        float v = cg_test_randf(s);
        if (fabsf(v + 0.5f) > 0.05f && fabsf(v - 0.4f) > 0.05f) return v;
    }
}
/* max/min reductions: distinct values 0.01 apart (k -> 7919 k mod 1009 is a bijection), so no ties */
static uint64_t distinct_counter;
static float gen_distinct(uint64_t *s) {
    (void)s;
    return (float)((distinct_counter++ * 7919) % 1009) * 0.01f - 5.0f;
}

enum { PACKED, TRANSPOSED, STEPPED };

static cg_tensor *filled(int nd, const int64_t *shape, gen_fn gen, uint64_t seed) {
    int64_t n = 1;
    for (int i = 0; i < nd; i++) n *= shape[i];
    float *v = malloc(sizeof(float) * (size_t)(n ? n : 1));
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 12345;
    for (int64_t i = 0; i < n; i++) v[i] = gen(&s);
    cg_tensor *t = cg_tensor_from_data(cg_step_arena(CG_CPU), CG_F32, nd, shape, v);
    free(v);
    assert_non_null(t);
    return t;
}

/* A tensor of the given logical shape: packed, the transpose of a packed tensor (last two dims swapped),
 * or every second row (dim 0) of a taller tensor. */
static cg_tensor *make_input(int layout, int nd, const int64_t *shape, gen_fn gen, uint64_t seed) {
    int64_t base[CG_MAX_DIMS];
    memcpy(base, shape, sizeof(int64_t) * (size_t)nd);
    cg_tensor *t;
    if (layout == TRANSPOSED && nd >= 2) {
        base[nd - 2] = shape[nd - 1], base[nd - 1] = shape[nd - 2];
        t = cg_view_transpose(filled(nd, base, gen, seed), nd - 2, nd - 1);
    } else if (layout == STEPPED && nd >= 1) {
        base[0] = 2 * shape[0] + 1;
        t = cg_view_slice(filled(nd, base, gen, seed), 0, 1, 2 * shape[0] + 1, 2);
    } else {
        t = filled(nd, shape, gen, seed);
    }
    assert_non_null(t);
    bool strided = layout == TRANSPOSED ? nd >= 2 && shape[nd - 1] > 1 && shape[nd - 2] > 1
                                        : layout == STEPPED && nd >= 1 && shape[0] > 1;
    if (strided) assert_false(cg_is_contiguous(t));
    return t;
}

static cg_tensor *leaf(cg_tensor *t) {
    assert_non_null(t);
    assert_ok(cg_set_requires_grad(t, true));
    return t;
}

static cg_tensor *from_values(int nd, const int64_t *shape, const float *v) {
    cg_tensor *t = cg_tensor_from_data(cg_step_arena(CG_CPU), CG_F32, nd, shape, v);
    assert_non_null(t);
    return t;
}

static void check_gradients(cg_gradcheck_fn fn, void *user, int n, cg_tensor *const *inputs, const char *what) {
    cg_gradcheck_opts o = {.eps = 1e-3, .rtol = 1e-2, .atol = 1e-3, .max_per_input = 64};
    cg_gradcheck_result r;
    assert_ok(cg_gradcheck(fn, user, n, inputs, &o, &r));
    if (!r.passed) {
        print_error("%s: gradcheck: %lld of %lld failed; worst: input %d [%lld] analytic %.8g numeric %.8g\n", what,
                    (long long)r.failures, (long long)r.checked, r.worst_input, (long long)r.worst_index,
                    r.worst_analytic, r.worst_numeric);
        fail();
    }
    assert_true(r.checked > 0);
}

/* Element of t at the position of out-flat-index i of a broadcast result of shape (nd, shape). */
static double bcast_get(const cg_tensor *t, int nd, const int64_t *shape, int64_t i) {
    int64_t idx[CG_MAX_DIMS], full[CG_MAX_DIMS];
    for (int d = nd - 1; d >= 0; d--) full[d] = i % shape[d], i /= shape[d];
    int lead = nd - t->ndim;
    for (int d = 0; d < t->ndim; d++) idx[d] = t->shape[d] == 1 ? 0 : full[d + lead];
    return cg_get(t, idx);
}

static void assert_shape(const cg_tensor *t, int nd, const int64_t *shape) {
    assert_non_null(t);
    assert_int_equal(t->ndim, nd);
    for (int d = 0; d < nd; d++) assert_int_equal(t->shape[d], shape[d]);
}

/* ------------------------------------------------------------------ binary elementwise */

typedef cg_tensor *(*binary_fn)(const cg_tensor *, const cg_tensor *);
typedef struct binary_case {
    const char *name;
    binary_fn fn;
    double (*ref)(double, double);
    gen_fn gen_a, gen_b;
} binary_case;

static double r_add(double a, double b) { return a + b; }
static double r_sub(double a, double b) { return a - b; }
static double r_mul(double a, double b) { return a * b; }
static double r_div(double a, double b) { return a / b; }
static double r_max(double a, double b) { return a > b ? a : b; }
static double r_min(double a, double b) { return a < b ? a : b; }

static const binary_case binary_cases[] = {
    {"add", cg_add, r_add, gen_any, gen_any},         {"sub", cg_sub, r_sub, gen_any, gen_any},
    {"mul", cg_mul, r_mul, gen_any, gen_any},         {"div", cg_div, r_div, gen_any, gen_nonzero},
    {"maximum", cg_maximum, r_max, gen_odd_tenths, gen_even_tenths},
    {"minimum", cg_minimum, r_min, gen_odd_tenths, gen_even_tenths},
};

typedef struct shape_pair {
    int nd_a, nd_b, nd_out;
    int64_t a[3], b[3], out[3];
    int layout_a, layout_b;
} shape_pair;

static const shape_pair binary_shapes[] = {
    {1, 1, 1, {7}, {7}, {7}, PACKED, PACKED},
    {3, 2, 3, {3, 1, 5}, {4, 1}, {3, 4, 5}, PACKED, PACKED}, /* both sides broadcast */
    {1, 2, 2, {1}, {2, 3}, {2, 3}, PACKED, PACKED},
    {2, 2, 2, {4, 5}, {4, 5}, {4, 5}, TRANSPOSED, STEPPED},
    {2, 1, 2, {13, 3}, {3}, {13, 3}, STEPPED, PACKED},
    {2, 0, 2, {2, 3}, {0}, {2, 3}, TRANSPOSED, PACKED}, /* a 0-d operand */
};

static cg_tensor *binary_gc(cg_tensor *const *in, void *user) { return ((const binary_case *)user)->fn(in[0], in[1]); }

static void test_binary_ops(void **state) {
    (void)state;
    for (size_t c = 0; c < sizeof binary_cases / sizeof *binary_cases; c++) {
        const binary_case *bc = &binary_cases[c];
        for (size_t s = 0; s < sizeof binary_shapes / sizeof *binary_shapes; s++) {
            const shape_pair *sp = &binary_shapes[s];
            cg_tensor *a = make_input(sp->layout_a, sp->nd_a, sp->a, bc->gen_a, 100 * c + s);
            cg_tensor *b = make_input(sp->layout_b, sp->nd_b, sp->b, bc->gen_b, 100 * c + s + 50);
            cg_tensor *y = bc->fn(a, b);
            assert_shape(y, sp->nd_out, sp->out);
            for (int64_t i = 0; i < cg_numel(y); i++)
                assert_close(cg_get_flat(y, i), bc->ref(bcast_get(a, sp->nd_out, sp->out, i),
                                                        bcast_get(b, sp->nd_out, sp->out, i)), 1e-6, 1e-7);
            cg_tensor *in[2] = {leaf(a), leaf(b)};
            check_gradients(binary_gc, (void *)bc, 2, in, bc->name);
            cg_step_end();
        }
    }
}

/* ------------------------------------------------------------------ unary elementwise */

typedef struct unary_case {
    const char *name;
    cg_unary_op op; /* the op, through cg_unary; the named wrapper is checked to agree */
    cg_tensor *(*named)(const cg_tensor *);
    double (*ref)(double);
    gen_fn gen;
} unary_case;

static double r_neg(double x) { return -x; }
static double r_sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }
static double r_sign(double x) { return x > 0 ? 1.0 : x < 0 ? -1.0 : 0.0; }
static double r_rsqrt(double x) { return 1.0 / sqrt(x); }
static double r_recip(double x) { return 1.0 / x; }
static double r_square(double x) { return x * x; }
static double r_relu(double x) { return x > 0 ? x : 0.0; }
static double r_gelu(double x) {
    return 0.5 * x * (1.0 + tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)));
}
static double r_silu(double x) { return x / (1.0 + exp(-x)); }

static const unary_case unary_cases[] = {
    {"neg", CG_OP_NEG, cg_neg, r_neg, gen_any},
    {"exp", CG_OP_EXP, cg_exp, exp, gen_any},
    {"log", CG_OP_LOG, cg_log, log, gen_pos},
    {"tanh", CG_OP_TANH, cg_tanh, tanh, gen_any},
    {"sigmoid", CG_OP_SIGMOID, cg_sigmoid, r_sigmoid, gen_any},
    {"sign", CG_OP_SIGN, cg_sign, r_sign, gen_away},
    {"abs", CG_OP_ABS, cg_abs, fabs, gen_away},
    {"sqrt", CG_OP_SQRT, cg_sqrt, sqrt, gen_pos},
    {"rsqrt", CG_OP_RSQRT, NULL, r_rsqrt, gen_pos},
    {"reciprocal", CG_OP_RECIPROCAL, NULL, r_recip, gen_nonzero},
    {"square", CG_OP_SQUARE, cg_square, r_square, gen_any},
    {"relu", CG_OP_RELU, cg_relu, r_relu, gen_away},
    {"gelu", CG_OP_GELU_TANH, cg_gelu, r_gelu, gen_any},
    {"silu", CG_OP_SILU, cg_silu, r_silu, gen_any},
};

typedef struct one_shape {
    int nd;
    int64_t shape[3];
    int layout;
} one_shape;

static const one_shape unary_shapes[] = {
    {1, {7}, PACKED}, {2, {3, 13}, TRANSPOSED}, {2, {4, 5}, STEPPED}, {2, {1, 1}, PACKED}, {3, {2, 3, 65}, PACKED},
};

static cg_tensor *unary_gc(cg_tensor *const *in, void *user) { return cg_unary(((const unary_case *)user)->op, in[0]); }

static void test_unary_ops(void **state) {
    (void)state;
    for (size_t c = 0; c < sizeof unary_cases / sizeof *unary_cases; c++) {
        const unary_case *uc = &unary_cases[c];
        for (size_t s = 0; s < sizeof unary_shapes / sizeof *unary_shapes; s++) {
            const one_shape *sh = &unary_shapes[s];
            cg_tensor *x = make_input(sh->layout, sh->nd, sh->shape, uc->gen, 10 * c + s);
            cg_tensor *y = cg_unary(uc->op, x);
            assert_shape(y, sh->nd, sh->shape);
            cg_tensor *y2 = uc->named ? uc->named(x) : y;
            for (int64_t i = 0; i < cg_numel(y); i++) {
                assert_close(cg_get_flat(y, i), uc->ref(cg_get_flat(x, i)), 2e-6, 1e-7);
                assert_true(cg_get_flat(y2, i) == cg_get_flat(y, i));
            }
            cg_tensor *in[1] = {leaf(x)};
            check_gradients(unary_gc, (void *)uc, 1, in, uc->name);
            cg_step_end();
        }
    }
}

/* ------------------------------------------------------------------ scalar ops, clamp, where */

typedef enum { S_AFFINE, S_SCALE, S_ADD_SCALAR, S_POW, S_CLAMP } scalar_kind;
typedef struct scalar_case {
    const char *name;
    scalar_kind kind;
    float p0, p1;
    gen_fn gen;
} scalar_case;

static const scalar_case scalar_cases[] = {
    {"affine", S_AFFINE, -1.5f, 0.25f, gen_any}, {"scale", S_SCALE, 3.0f, 0, gen_any},
    {"add_scalar", S_ADD_SCALAR, -2.0f, 0, gen_any}, {"pow 2", S_POW, 2.0f, 0, gen_any},
    {"pow 3", S_POW, 3.0f, 0, gen_any},          {"pow 0.5", S_POW, 0.5f, 0, gen_pos},
    {"pow -1.5", S_POW, -1.5f, 0, gen_pos},      {"pow 1.7", S_POW, 1.7f, 0, gen_pos},
    {"clamp", S_CLAMP, -0.5f, 0.4f, gen_clamp_safe},
};

static cg_tensor *scalar_apply(const scalar_case *sc, const cg_tensor *x) {
    switch (sc->kind) {
    case S_AFFINE: return cg_affine(x, sc->p0, sc->p1);
    case S_SCALE: return cg_scale(x, sc->p0);
    case S_ADD_SCALAR: return cg_add_scalar(x, sc->p0);
    case S_POW: return cg_pow_scalar(x, sc->p0);
    default: return cg_clamp(x, sc->p0, sc->p1);
    }
}

static double scalar_ref(const scalar_case *sc, double x) {
    switch (sc->kind) {
    case S_AFFINE: return x * sc->p0 + sc->p1;
    case S_SCALE: return x * sc->p0;
    case S_ADD_SCALAR: return x + sc->p0;
    case S_POW: return pow(x, sc->p0);
    default: return x < sc->p0 ? sc->p0 : x > sc->p1 ? sc->p1 : x;
    }
}

static cg_tensor *scalar_gc(cg_tensor *const *in, void *user) { return scalar_apply(user, in[0]); }

static void test_scalar_ops(void **state) {
    (void)state;
    for (size_t c = 0; c < sizeof scalar_cases / sizeof *scalar_cases; c++) {
        const scalar_case *sc = &scalar_cases[c];
        for (size_t s = 0; s < 4; s++) {
            const one_shape *sh = &unary_shapes[s];
            cg_tensor *x = make_input(sh->layout, sh->nd, sh->shape, sc->gen, 10 * c + s);
            cg_tensor *y = scalar_apply(sc, x);
            assert_shape(y, sh->nd, sh->shape);
            for (int64_t i = 0; i < cg_numel(y); i++)
                assert_close(cg_get_flat(y, i), scalar_ref(sc, cg_get_flat(x, i)), 2e-6, 1e-6);
            cg_tensor *in[1] = {leaf(x)};
            check_gradients(scalar_gc, (void *)sc, 1, in, sc->name);
            cg_step_end();
        }
    }
}

static cg_tensor *where_gc(cg_tensor *const *in, void *user) {
    (void)user;
    return cg_where(in[0], in[1], in[2]);
}

static void test_where(void **state) {
    (void)state;
    /* f32 cond [3, 1], a [1, 4], b [3, 4]; then u8 cond [3, 4], a a transposed view, b [4] */
    int64_t cs[2] = {3, 1}, as[2] = {1, 4}, bs[2] = {3, 4}, b1[1] = {4}, out[2] = {3, 4};
    float cv[3] = {1, 0, 1};
    uint8_t cu[12] = {1, 0, 0, 1, 1, 1, 0, 0, 0, 1, 0, 1};
    for (int c = 0; c < 2; c++) {
        cg_tensor *cond = c == 0 ? from_values(2, cs, cv)
                                 : cg_tensor_from_data(cg_step_arena(CG_CPU), CG_U8, 2, bs, cu);
        cg_tensor *a = c == 0 ? make_input(PACKED, 2, as, gen_any, 1) : make_input(TRANSPOSED, 2, bs, gen_any, 2);
        cg_tensor *b = c == 0 ? make_input(PACKED, 2, bs, gen_any, 3) : make_input(PACKED, 1, b1, gen_any, 4);
        cg_tensor *y = cg_where(cond, a, b);
        assert_shape(y, 2, out);
        for (int64_t i = 0; i < 12; i++) {
            double want = bcast_get(cond, 2, out, i) != 0 ? bcast_get(a, 2, out, i) : bcast_get(b, 2, out, i);
            assert_true(cg_get_flat(y, i) == want);
        }
        cg_tensor *in[3] = {cond, leaf(a), leaf(b)};
        check_gradients(where_gc, NULL, 3, in, "where");
    }
}

/* A float condition that itself requires a gradient (a mask computed in the graph) gets a zero gradient:
 * the output is piecewise constant in it. */
static void test_where_float_cond_with_grad(void **state) {
    (void)state;
    int64_t s[1] = {3};
    float cv[3] = {1, 0, 1}, av[3] = {1, 2, 3}, bv[3] = {4, 5, 6};
    cg_tensor *cond = leaf(from_values(1, s, cv)), *a = leaf(from_values(1, s, av)), *b = from_values(1, s, bv);
    cg_tensor *y = cg_where(cond, a, b);
    assert_non_null(y);
    assert_ok(cg_backward(cg_sum_all(y)));
    for (int i = 0; i < 3; i++) {
        assert_true(cg_get_flat(cond->grad, i) == 0.0);
        assert_true(cg_get_flat(a->grad, i) == cv[i]);
    }
}

/* Comparisons: 1/0 values with broadcasting, never a gradient. */
static void test_compare(void **state) {
    (void)state;
    int64_t sa[2] = {2, 3}, sb[1] = {3};
    float av[6] = {1, 2, 3, 4, 5, 6}, bv[3] = {2, 2, 7};
    cg_tensor *a = leaf(from_values(2, sa, av)), *b = from_values(1, sb, bv);
    for (int op = CG_OP_GREATER; op <= CG_OP_NOT_EQUAL; op++) {
        cg_tensor *y = cg_compare((cg_binary_op)op, a, b);
        assert_shape(y, 2, sa);
        assert_false(y->requires_grad);
        assert_null(y->node);
        for (int i = 0; i < 6; i++) {
            double x = av[i], z = bv[i % 3];
            bool want = op == CG_OP_GREATER ? x > z : op == CG_OP_GREATER_EQUAL ? x >= z : op == CG_OP_LESS ? x < z
                      : op == CG_OP_LESS_EQUAL ? x <= z : op == CG_OP_EQUAL ? x == z : x != z;
            assert_true(cg_get_flat(y, i) == (want ? 1.0 : 0.0));
        }
    }
}

/* ------------------------------------------------------------------ reductions */

typedef struct reduce_case {
    int nd;
    int64_t shape[3];
    int layout, axis;
    bool keepdim;
} reduce_case;

static const reduce_case reduce_cases[] = {
    {1, {7}, PACKED, 0, false},       {2, {3, 5}, PACKED, 0, true},    {2, {3, 5}, PACKED, 1, false},
    {2, {3, 5}, TRANSPOSED, -1, true}, {3, {2, 3, 4}, TRANSPOSED, 1, false}, {3, {3, 2, 5}, STEPPED, 0, false},
    {2, {1, 6}, PACKED, 0, false},    {2, {13, 1}, PACKED, 1, true},
};

typedef struct reduce_gc_args {
    cg_reduce_op op;
    int axis;
    bool keepdim;
} reduce_gc_args;

static cg_tensor *reduce_apply(cg_reduce_op op, const cg_tensor *x, int axis, bool keepdim) {
    switch (op) {
    case CG_REDUCE_SUM: return cg_sum(x, axis, keepdim);
    case CG_REDUCE_MEAN: return cg_mean(x, axis, keepdim);
    case CG_REDUCE_MAX: return cg_max(x, axis, keepdim);
    default: return cg_min(x, axis, keepdim);
    }
}

static cg_tensor *reduce_gc(cg_tensor *const *in, void *user) {
    reduce_gc_args *a = user;
    return reduce_apply(a->op, in[0], a->axis, a->keepdim);
}

static void test_reductions(void **state) {
    (void)state;
    for (int op = 0; op < CG_REDUCE_OP_COUNT; op++) {
        for (size_t c = 0; c < sizeof reduce_cases / sizeof *reduce_cases; c++) {
            const reduce_case *rc = &reduce_cases[c];
            bool extreme = op == CG_REDUCE_MAX || op == CG_REDUCE_MIN;
            cg_tensor *x = make_input(rc->layout, rc->nd, rc->shape, extreme ? gen_distinct : gen_any, 7 * c + op);
            cg_tensor *y = reduce_apply((cg_reduce_op)op, x, rc->axis, rc->keepdim);
            int ax = rc->axis < 0 ? rc->axis + rc->nd : rc->axis;
            int64_t want_shape[3];
            int nd = 0;
            for (int d = 0; d < rc->nd; d++)
                if (d != ax || rc->keepdim) want_shape[nd++] = d == ax ? 1 : rc->shape[d];
            assert_shape(y, nd, want_shape);
            /* naive: walk the output positions over x's shape with the axis collapsed */
            int64_t outer = 1, inner = 1, len = rc->shape[ax];
            for (int d = 0; d < ax; d++) outer *= rc->shape[d];
            for (int d = ax + 1; d < rc->nd; d++) inner *= rc->shape[d];
            for (int64_t o = 0; o < outer; o++)
                for (int64_t in = 0; in < inner; in++) {
                    double acc = op == CG_REDUCE_MAX ? -INFINITY : op == CG_REDUCE_MIN ? INFINITY : 0.0;
                    for (int64_t k = 0; k < len; k++) {
                        double v = cg_get_flat(x, (o * len + k) * inner + in);
                        acc = op == CG_REDUCE_MAX ? fmax(acc, v) : op == CG_REDUCE_MIN ? fmin(acc, v) : acc + v;
                    }
                    if (op == CG_REDUCE_MEAN) acc /= (double)len;
                    assert_close(cg_get_flat(y, o * inner + in), acc, 1e-6, 1e-6);
                }
            reduce_gc_args args = {(cg_reduce_op)op, rc->axis, rc->keepdim};
            cg_tensor *in[1] = {leaf(x)};
            check_gradients(reduce_gc, &args, 1, in, cg_reduce_op_name((cg_reduce_op)op));
            cg_step_end();
        }
    }
}

static cg_tensor *sum_all_gc(cg_tensor *const *in, void *user) {
    return user ? cg_mean_all(in[0]) : cg_sum_all(in[0]);
}

static void test_sum_all_mean_all(void **state) {
    (void)state;
    for (size_t s = 0; s < sizeof unary_shapes / sizeof *unary_shapes; s++) {
        const one_shape *sh = &unary_shapes[s];
        cg_tensor *x = make_input(sh->layout, sh->nd, sh->shape, gen_any, s);
        double sum = 0;
        int64_t n = cg_numel(x);
        for (int64_t i = 0; i < n; i++) sum += cg_get_flat(x, i);
        cg_tensor *ys = cg_sum_all(x), *ym = cg_mean_all(x);
        assert_int_equal(ys->ndim, 0);
        assert_int_equal(ym->ndim, 0);
        assert_close(cg_get_flat(ys, 0), sum, 1e-6, 1e-6);
        assert_close(cg_get_flat(ym, 0), sum / (double)n, 1e-6, 1e-7);
        cg_tensor *in[1] = {leaf(x)};
        check_gradients(sum_all_gc, NULL, 1, in, "sum_all");
        check_gradients(sum_all_gc, (void *)1, 1, in, "mean_all");
        cg_step_end();
    }
}

/* ------------------------------------------------------------------ shape ops */

typedef enum { SH_RESHAPE, SH_PERMUTE, SH_TRANSPOSE, SH_SLICE, SH_EXPAND } shape_kind;
typedef struct shape_case {
    const char *name;
    shape_kind kind;
    int nd;
    int64_t shape[3];
    int layout;
    int out_nd;
    int64_t out_shape[3]; /* reshape/expand target */
    int p[4];             /* permute: perm; transpose: dims; slice: dim, start, end, step */
} shape_case;

static const shape_case shape_cases[] = {
    {"reshape", SH_RESHAPE, 2, {3, 4}, PACKED, 2, {2, 6}, {0}},
    {"reshape copy", SH_RESHAPE, 2, {3, 4}, TRANSPOSED, 1, {12}, {0}}, /* not viewable: copies */
    {"reshape -1", SH_RESHAPE, 3, {2, 3, 5}, STEPPED, 2, {5, -1}, {0}},
    {"permute", SH_PERMUTE, 3, {2, 3, 4}, PACKED, 0, {0}, {2, 0, 1}},
    {"permute view", SH_PERMUTE, 3, {2, 3, 4}, TRANSPOSED, 0, {0}, {1, 2, 0}},
    {"transpose", SH_TRANSPOSE, 2, {3, 5}, PACKED, 0, {0}, {0, 1}},
    {"transpose -1", SH_TRANSPOSE, 3, {2, 3, 4}, STEPPED, 0, {0}, {-1, 0}},
    {"slice", SH_SLICE, 2, {7, 5}, PACKED, 0, {0}, {0, 1, 6, 2}},
    {"slice neg", SH_SLICE, 2, {7, 5}, TRANSPOSED, 0, {0}, {-1, -3, 5, 1}},
    {"expand", SH_EXPAND, 2, {3, 1}, PACKED, 3, {2, 3, 4}, {0}},
    {"expand 1", SH_EXPAND, 1, {1}, PACKED, 1, {5}, {0}},
};

static cg_tensor *shape_apply(const shape_case *sc, const cg_tensor *x) {
    switch (sc->kind) {
    case SH_RESHAPE: return cg_reshape(x, sc->out_nd, sc->out_shape);
    case SH_PERMUTE: return cg_permute(x, sc->p);
    case SH_TRANSPOSE: return cg_transpose(x, sc->p[0], sc->p[1]);
    case SH_SLICE: return cg_slice(x, sc->p[0], sc->p[1], sc->p[2], sc->p[3]);
    default: return cg_expand(x, sc->out_nd, sc->out_shape);
    }
}

static cg_tensor *shape_gc(cg_tensor *const *in, void *user) {
    return shape_apply(user, in[0]);
}

/* The x element that output position (multi-index) o reads, computed from the op's definition. */
static double shape_ref(const shape_case *sc, const cg_tensor *x, const cg_tensor *y, int64_t flat) {
    int64_t o[CG_MAX_DIMS], xi[CG_MAX_DIMS];
    for (int d = y->ndim - 1; d >= 0; d--) o[d] = flat % y->shape[d], flat /= y->shape[d];
    switch (sc->kind) {
    case SH_RESHAPE: { /* same row-major flat position */
        int64_t f = 0;
        for (int d = 0; d < y->ndim; d++) f = f * y->shape[d] + o[d];
        return cg_get_flat(x, f);
    }
    case SH_PERMUTE:
        for (int d = 0; d < x->ndim; d++) xi[sc->p[d]] = o[d];
        return cg_get(x, xi);
    case SH_TRANSPOSE: {
        int d0 = sc->p[0] < 0 ? sc->p[0] + x->ndim : sc->p[0], d1 = sc->p[1] < 0 ? sc->p[1] + x->ndim : sc->p[1];
        for (int d = 0; d < x->ndim; d++) xi[d] = o[d];
        xi[d0] = o[d1], xi[d1] = o[d0];
        return cg_get(x, xi);
    }
    case SH_SLICE: {
        int dim = sc->p[0] < 0 ? sc->p[0] + x->ndim : sc->p[0];
        int64_t start = sc->p[1] < 0 ? sc->p[1] + x->shape[dim] : sc->p[1];
        for (int d = 0; d < x->ndim; d++) xi[d] = o[d];
        xi[dim] = start + o[dim] * sc->p[3];
        return cg_get(x, xi);
    }
    default: {
        int lead = y->ndim - x->ndim;
        for (int d = 0; d < x->ndim; d++) xi[d] = x->shape[d] == 1 ? 0 : o[d + lead];
        return cg_get(x, xi);
    }
    }
}

static void test_shape_ops(void **state) {
    (void)state;
    for (size_t c = 0; c < sizeof shape_cases / sizeof *shape_cases; c++) {
        const shape_case *sc = &shape_cases[c];
        cg_tensor *x = make_input(sc->layout, sc->nd, sc->shape, gen_any, c);
        cg_tensor *y = shape_apply(sc, x);
        assert_non_null(y);
        assert_int_equal(cg_numel(y) >= 1, 1);
        for (int64_t i = 0; i < cg_numel(y); i++) assert_true(cg_get_flat(y, i) == shape_ref(sc, x, y, i));
        cg_tensor *in[1] = {leaf(x)};
        check_gradients(shape_gc, (void *)sc, 1, in, sc->name);
        cg_step_end();
    }
    /* expected output shapes of a few */
    int64_t s3[3] = {2, 3, 4}, p_out[3] = {4, 2, 3}, sl_out[2] = {3, 5};
    cg_tensor *x = make_input(PACKED, 3, s3, gen_any, 1);
    assert_shape(cg_permute(x, shape_cases[3].p), 3, p_out);
    int64_t s2[2] = {7, 5};
    assert_shape(cg_slice(make_input(PACKED, 2, s2, gen_any, 2), 0, 1, 6, 2), 2, sl_out);
}

static cg_tensor *concat_gc(cg_tensor *const *in, void *user) {
    return cg_concat(3, (const cg_tensor *const *)in, *(int *)user);
}

static void test_concat(void **state) {
    (void)state;
    /* along axis 1: [2, 3] + [2, 1] (stepped) + [2, 4] (transposed); along axis 0: [1, 3] + [2, 3] + [4, 3] */
    for (int axis = 0; axis < 2; axis++) {
        int64_t s0[2] = {2, 3}, s1[2] = {2, 1}, s2[2] = {2, 4};
        if (axis == 0) s0[0] = 1, s0[1] = 3, s1[0] = 2, s1[1] = 3, s2[0] = 4, s2[1] = 3;
        cg_tensor *xs[3] = {make_input(PACKED, 2, s0, gen_any, 1), make_input(STEPPED, 2, s1, gen_any, 2),
                            make_input(TRANSPOSED, 2, s2, gen_any, 3)};
        cg_tensor *y = cg_concat(3, (const cg_tensor *const *)xs, axis == 1 ? -1 : 0);
        assert_non_null(y);
        int64_t rows = y->shape[0], cols = y->shape[1];
        assert_int_equal(axis ? cols : rows, axis ? 8 : 7);
        for (int64_t r = 0; r < rows; r++)
            for (int64_t c = 0; c < cols; c++) {
                int64_t pos = axis ? c : r, k = 0;
                while (pos >= xs[k]->shape[axis]) pos -= xs[k++]->shape[axis];
                int64_t idx[2] = {axis ? r : pos, axis ? pos : c};
                assert_true(cg_get_flat(y, r * cols + c) == cg_get(xs[k], idx));
            }
        for (int i = 0; i < 3; i++) leaf(xs[i]);
        check_gradients(concat_gc, &axis, 3, xs, "concat");
        cg_step_end();
    }
}

/* ------------------------------------------------------------------ indexing, cast */

typedef struct index_args {
    int axis;
    const cg_tensor *index;
    int which; /* 0 gather, 1 index_select, 2 embedding */
} index_args;

static cg_tensor *index_gc(cg_tensor *const *in, void *user) {
    index_args *a = user;
    if (a->which == 0) return cg_gather(in[0], a->axis, a->index);
    if (a->which == 1) return cg_index_select(in[0], a->axis, a->index);
    return cg_embedding(in[0], a->index);
}

static void test_gather_index_select_embedding(void **state) {
    (void)state;
    int64_t xs[2] = {4, 5};
    /* gather axis 1 with an i64 index [4, 3] (repeats), axis 0 with an i32 index [2, 5] */
    int64_t g1s[2] = {4, 3}, g0s[2] = {2, 5};
    int64_t g1[12] = {0, 4, 4, 1, 1, 1, 3, 2, 0, 4, 0, 2};
    int32_t g0[10] = {3, 0, 1, 1, 2, 3, 3, 0, 2, 1};
    for (int c = 0; c < 2; c++) {
        cg_tensor *x = make_input(c ? TRANSPOSED : PACKED, 2, xs, gen_any, 10 + c);
        cg_tensor *idx = c == 0 ? cg_tensor_from_data(cg_step_arena(CG_CPU), CG_I64, 2, g1s, g1)
                                : cg_tensor_from_data(cg_step_arena(CG_CPU), CG_I32, 2, g0s, g0);
        int axis = c == 0 ? 1 : 0;
        cg_tensor *y = cg_gather(x, axis, idx);
        assert_shape(y, 2, idx->shape);
        for (int64_t i = 0; i < idx->shape[0]; i++)
            for (int64_t j = 0; j < idx->shape[1]; j++) {
                int64_t ij[2] = {i, j}, k = (int64_t)cg_get(idx, ij);
                int64_t src[2] = {axis ? i : k, axis ? k : j};
                assert_true(cg_get(y, ij) == cg_get(x, src));
            }
        index_args a = {axis, idx, 0};
        cg_tensor *in[1] = {leaf(x)};
        check_gradients(index_gc, &a, 1, in, "gather");
    }
    /* index_select with repeats along each axis */
    int64_t sel0[3] = {3, 0, 3}, sel1[4] = {4, 4, 1, 0}, n0[1] = {3}, n1[1] = {4};
    for (int axis = 0; axis < 2; axis++) {
        cg_tensor *x = make_input(axis ? STEPPED : PACKED, 2, xs, gen_any, 20 + axis);
        cg_tensor *idx = cg_tensor_from_data(cg_step_arena(CG_CPU), CG_I64, 1, axis ? n1 : n0, axis ? sel1 : sel0);
        cg_tensor *y = cg_index_select(x, axis, idx);
        assert_non_null(y);
        for (int64_t i = 0; i < y->shape[0]; i++)
            for (int64_t j = 0; j < y->shape[1]; j++) {
                int64_t ij[2] = {i, j}, src[2] = {axis ? i : (axis ? sel1 : sel0)[i], axis ? sel1[j] : j};
                assert_true(cg_get(y, ij) == cg_get(x, src));
            }
        index_args a = {axis, idx, 1};
        cg_tensor *in[1] = {leaf(x)};
        check_gradients(index_gc, &a, 1, in, "index_select");
    }
    /* embedding: weight [6, 4], ids [2, 3] with repeats */
    int64_t ws[2] = {6, 4}, is[2] = {2, 3}, out[3] = {2, 3, 4};
    int32_t ids[6] = {5, 0, 5, 2, 2, 1};
    cg_tensor *w = make_input(PACKED, 2, ws, gen_any, 30);
    cg_tensor *id = cg_tensor_from_data(cg_step_arena(CG_CPU), CG_I32, 2, is, ids);
    cg_tensor *y = cg_embedding(w, id);
    assert_shape(y, 3, out);
    for (int n = 0; n < 6; n++)
        for (int c = 0; c < 4; c++) assert_true(cg_get_flat(y, n * 4 + c) == cg_get_flat(w, ids[n] * 4 + c));
    index_args a = {0, id, 2};
    cg_tensor *in[1] = {leaf(w)};
    check_gradients(index_gc, &a, 1, in, "embedding");
}

static cg_tensor *cast_gc(cg_tensor *const *in, void *user) {
    (void)user;
    return cg_cast(in[0], CG_F32);
}

static void test_cast(void **state) {
    (void)state;
    int64_t s[2] = {3, 4};
    cg_tensor *x = leaf(make_input(TRANSPOSED, 2, s, gen_any, 1));
    check_gradients(cast_gc, NULL, 1, &x, "cast f32");
    /* f32 -> bf16 -> f32: the forward rounds to bf16 (8 bits of mantissa); the gradient passes unchanged */
    cg_tensor *h = cg_cast(x, CG_BF16);
    assert_non_null(h);
    assert_int_equal(h->dtype, CG_BF16);
    assert_true(h->requires_grad);
    cg_tensor *back = cg_cast(h, CG_F32);
    cg_tensor *r = make_input(PACKED, 2, s, gen_any, 2);
    cg_zero_grad(x); /* the gradcheck left its gradient there */
    assert_ok(cg_backward_with_grad(back, r));
    for (int64_t i = 0; i < 12; i++) {
        double v = cg_get_flat(x, i), b = cg_get_flat(back, i);
        assert_true(fabs(b - v) <= fabs(v) * (1.0 / 256.0)); /* bf16's rounding error */
        assert_true(cg_get_flat(x->grad, i) == cg_get_flat(r, i));
    }
    /* to an integer dtype: truncation, and no gradient */
    cg_tensor *xi = cg_cast(x, CG_I32);
    assert_non_null(xi);
    assert_false(xi->requires_grad);
    for (int64_t i = 0; i < 12; i++) assert_true(cg_get_flat(xi, i) == trunc(cg_get_flat(x, i)));
}

/* ------------------------------------------------------------------ matmul */

typedef struct matmul_case {
    int nd_a, nd_b;
    int64_t a[4], b[4]; /* logical op(a) [.., M, K] and op(b) [.., K, N] */
    int64_t M, K, N;
} matmul_case;

static const matmul_case matmul_cases[] = {
    {2, 2, {0}, {0}, 3, 4, 5},
    {4, 3, {2, 1, 0, 0}, {3, 0, 0}, 3, 4, 5}, /* batch [2, 1] x [3] -> [2, 3] */
    {3, 2, {1, 0, 0}, {0}, 7, 13, 5},        /* batch 1, odd sizes */
    {2, 3, {0}, {2, 0, 0}, 1, 6, 1},          /* vectors */
};

typedef struct matmul_args {
    bool ta, tb, plain;
} matmul_args;

static cg_tensor *matmul_gc(cg_tensor *const *in, void *user) {
    matmul_args *a = user;
    return a->plain ? cg_matmul(in[0], in[1]) : cg_matmul_t(in[0], in[1], a->ta, a->tb);
}

/* An operand with its last two dims (rows, cols) as stored: transposed storage when trans. view picks a
 * non-contiguous layout that shows the same logical matrix. */
static cg_tensor *matmul_operand(int nd, const int64_t *batch, int64_t rows, int64_t cols, bool trans, bool view,
                                 uint64_t seed) {
    int64_t shape[4];
    for (int d = 0; d < nd - 2; d++) shape[d] = batch[d];
    shape[nd - 2] = trans ? cols : rows, shape[nd - 1] = trans ? rows : cols;
    return make_input(view ? TRANSPOSED : PACKED, nd, shape, gen_any, seed);
}

/* op(t)[batch..., r, c] for a batch multi-index of the output (nbo dims). */
static double op_get(const cg_tensor *t, bool trans, int nbo, const int64_t *bo, int64_t r, int64_t c) {
    int64_t idx[CG_MAX_DIMS];
    int nb = t->ndim - 2, lead = nbo - nb;
    for (int d = 0; d < nb; d++) idx[d] = t->shape[d] == 1 ? 0 : bo[d + lead];
    idx[nb] = trans ? c : r, idx[nb + 1] = trans ? r : c;
    return cg_get(t, idx);
}

static void test_matmul(void **state) {
    (void)state;
    for (size_t c = 0; c < sizeof matmul_cases / sizeof *matmul_cases; c++) {
        const matmul_case *mc = &matmul_cases[c];
        for (int combo = 0; combo < 5; combo++) {
            bool ta = combo & 1, tb = combo & 2, plain = combo == 4;
            bool view = c == 2 || combo == 3; /* non-contiguous operands in some cases */
            cg_tensor *a = matmul_operand(mc->nd_a, mc->a, mc->M, mc->K, ta, view, 10 * c + combo);
            cg_tensor *b = matmul_operand(mc->nd_b, mc->b, mc->K, mc->N, tb, view, 10 * c + combo + 5);
            matmul_args args = {ta, tb, plain};
            cg_tensor *y = matmul_gc((cg_tensor *[]){a, b}, &args);
            assert_non_null(y);
            int nbo = y->ndim - 2;
            assert_int_equal(nbo, (mc->nd_a > mc->nd_b ? mc->nd_a : mc->nd_b) - 2);
            assert_int_equal(y->shape[nbo], mc->M);
            assert_int_equal(y->shape[nbo + 1], mc->N);
            int64_t batch = cg_numel(y) / (mc->M * mc->N);
            for (int64_t bi = 0; bi < batch; bi++) {
                int64_t bo[CG_MAX_DIMS], rest = bi;
                for (int d = nbo - 1; d >= 0; d--) bo[d] = rest % y->shape[d], rest /= y->shape[d];
                for (int64_t m = 0; m < mc->M; m++)
                    for (int64_t n = 0; n < mc->N; n++) {
                        double acc = 0;
                        for (int64_t k = 0; k < mc->K; k++)
                            acc += op_get(a, ta, nbo, bo, m, k) * op_get(b, tb, nbo, bo, k, n);
                        assert_close(cg_get_flat(y, (bi * mc->M + m) * mc->N + n), acc, 1e-5, 1e-5);
                    }
            }
            cg_tensor *in[2] = {leaf(a), leaf(b)};
            check_gradients(matmul_gc, &args, 2, in, "matmul");
            cg_step_end();
        }
    }
}

/* ------------------------------------------------------------------ swiglu */

static cg_tensor *swiglu_gc(cg_tensor *const *in, void *user) {
    (void)user;
    return cg_swiglu(in[0], in[1]);
}

static void test_swiglu(void **state) {
    (void)state;
    for (size_t s = 0; s < sizeof unary_shapes / sizeof *unary_shapes; s++) {
        const one_shape *sh = &unary_shapes[s];
        cg_tensor *g = make_input(sh->layout, sh->nd, sh->shape, gen_any, s);
        cg_tensor *u = make_input(PACKED, sh->nd, sh->shape, gen_any, s + 20);
        cg_tensor *y = cg_swiglu(g, u);
        assert_shape(y, sh->nd, sh->shape);
        for (int64_t i = 0; i < cg_numel(y); i++)
            assert_close(cg_get_flat(y, i), r_silu(cg_get_flat(g, i)) * cg_get_flat(u, i), 2e-6, 1e-7);
        cg_tensor *in[2] = {leaf(g), leaf(u)};
        check_gradients(swiglu_gc, NULL, 2, in, "swiglu");
        /* only the input that requires a gradient gets one */
        cg_tensor *g2 = make_input(PACKED, sh->nd, sh->shape, gen_any, s + 40);
        cg_tensor *u2 = leaf(make_input(PACKED, sh->nd, sh->shape, gen_any, s + 41));
        assert_ok(cg_backward(cg_sum_all(cg_swiglu(g2, u2))));
        assert_null(g2->grad);
        for (int64_t i = 0; i < cg_numel(u2); i++) assert_close(cg_get_flat(u2->grad, i), r_silu(cg_get_flat(g2, i)), 2e-6, 1e-7);
        cg_step_end();
    }
}

/* ------------------------------------------------------------------ conventions at non-smooth points */

static cg_tensor *grad_of(cg_tensor *(*f)(const cg_tensor *), int n, const float *v) {
    int64_t s[1] = {n};
    cg_tensor *x = leaf(from_values(1, s, v));
    assert_ok(cg_backward(cg_sum_all(f(x))));
    return x->grad;
}

static cg_tensor *clamp_fixed(const cg_tensor *x) { return cg_clamp(x, -0.5f, 0.4f); }
static cg_tensor *pow0(const cg_tensor *x) { return cg_pow_scalar(x, 0.0f); }

static void test_conventions_unary(void **state) {
    (void)state;
    float xv[5] = {0, -1, 1, 0.5f, -0.0f};
    const float relu_g[5] = {0, 0, 1, 1, 0}, abs_g[5] = {0, -1, 1, 1, 0};
    cg_tensor *g = grad_of(cg_relu, 5, xv);
    for (int i = 0; i < 5; i++) assert_true(cg_get_flat(g, i) == relu_g[i]);
    g = grad_of(cg_abs, 5, xv);
    for (int i = 0; i < 5; i++) assert_true(cg_get_flat(g, i) == abs_g[i]);
    g = grad_of(cg_sign, 5, xv);
    for (int i = 0; i < 5; i++) assert_true(cg_get_flat(g, i) == 0.0);
    /* relu'(+inf) = 1; sign's gradient is exactly 0, also under an infinite upstream gradient */
    int64_t s2[1] = {2};
    float big[2] = {INFINITY, 3}, ginf[2] = {INFINITY, -INFINITY};
    cg_tensor *xb = leaf(from_values(1, s2, big));
    assert_ok(cg_backward(cg_sum_all(cg_relu(xb))));
    assert_true(cg_get_flat(xb->grad, 0) == 1.0 && cg_get_flat(xb->grad, 1) == 1.0);
    cg_tensor *xs = leaf(from_values(1, s2, big));
    assert_ok(cg_backward_with_grad(cg_sign(xs), from_values(1, s2, ginf)));
    assert_true(cg_get_flat(xs->grad, 0) == 0.0 && cg_get_flat(xs->grad, 1) == 0.0);
    /* clamp passes the gradient at the bounds, and inside, not outside */
    float cv[5] = {-0.5f, 0.4f, -1, 1, 0};
    const float clamp_g[5] = {1, 1, 0, 0, 1};
    g = grad_of(clamp_fixed, 5, cv);
    for (int i = 0; i < 5; i++) assert_true(cg_get_flat(g, i) == clamp_g[i]);
    /* x^0 = 1 has gradient 0 everywhere, also at x = 0 (as torch.pow) */
    g = grad_of(pow0, 5, xv);
    for (int i = 0; i < 5; i++) assert_true(cg_get_flat(g, i) == 0.0);
}

static void test_conventions_extrema(void **state) {
    (void)state;
    int64_t s[1] = {3}, s1[1] = {1};
    float av[3] = {1, 2, 3}, bv[3] = {1, 0, 3}, one[1] = {2};
    const float max_a[3] = {0.5f, 1, 0.5f}, max_b[3] = {0.5f, 0, 0.5f};
    for (int is_min = 0; is_min < 2; is_min++) {
        cg_tensor *a = leaf(from_values(1, s, av)), *b = leaf(from_values(1, s, bv));
        cg_tensor *y = is_min ? cg_minimum(a, b) : cg_maximum(a, b);
        assert_ok(cg_backward(cg_sum_all(y)));
        for (int i = 0; i < 3; i++) {
            assert_true(cg_get_flat(a->grad, i) == (is_min ? max_b[i] : max_a[i]));
            assert_true(cg_get_flat(b->grad, i) == (is_min ? max_a[i] : max_b[i]));
        }
        /* broadcast: the scalar side gathers its halves and wins */
        cg_tensor *c = leaf(from_values(1, s1, one)), *d = leaf(from_values(1, s, av));
        assert_ok(cg_backward(cg_sum_all(is_min ? cg_minimum(c, d) : cg_maximum(c, d))));
        assert_true(cg_get_flat(c->grad, 0) == 1.5); /* 2 vs {1, 2, 3}: wins once, ties once */
    }
    /* max/min over an axis: the gradient goes to the first extreme element */
    int64_t s2[2] = {2, 4};
    float xv[8] = {1, 3, 3, 2, 5, 5, 5, 0};
    const float max_g[8] = {0, 1, 0, 0, 1, 0, 0, 0}, min_g[8] = {1, 0, 0, 0, 0, 0, 0, 1};
    for (int is_min = 0; is_min < 2; is_min++) {
        cg_tensor *x = leaf(from_values(2, s2, xv));
        cg_tensor *y = is_min ? cg_min(x, 1, false) : cg_max(x, 1, true);
        assert_ok(cg_backward(cg_sum_all(y)));
        for (int i = 0; i < 8; i++) assert_true(cg_get_flat(x->grad, i) == (is_min ? min_g[i] : max_g[i]));
    }
    /* along axis 0 with a transposed (non-contiguous) input */
    cg_tensor *xt = leaf(cg_view_transpose(from_values(2, s2, xv), 0, 1)); /* [4, 2] */
    assert_ok(cg_backward(cg_sum_all(cg_max(xt, 0, false))));
    const float t_g[8] = {0, 1, 0, 0, 1, 0, 0, 0}; /* xt[:, 0] = {1, 3, 3, 2}, xt[:, 1] = {5, 5, 5, 0} */
    for (int r = 0; r < 4; r++)
        for (int c = 0; c < 2; c++) assert_true(cg_get_flat(xt->grad, r * 2 + c) == t_g[c * 4 + r]);
}

/* ------------------------------------------------------------------ errors */

static void test_errors(void **state) {
    (void)state;
    int64_t s23[2] = {2, 3}, s4[1] = {4}, s34[2] = {3, 4}, s24[2] = {2, 4};
    cg_tensor *a = make_input(PACKED, 2, s23, gen_any, 1), *b = make_input(PACKED, 1, s4, gen_any, 2);
    cg_tensor *xi = cg_tensor_zeros(cg_step_arena(CG_CPU), CG_I32, 2, s23);
    assert_int_equal(cg_set_requires_grad(xi, true), CG_ERR_DTYPE);
    assert_error_contains("set_requires_grad: i32[2, 3] cpu is an integer tensor");
    assert_false(xi->requires_grad);

    assert_null(cg_add(a, b));
    assert_int_equal(cg_last_status(), CG_ERR_SHAPE);
    assert_error_contains("add: shapes f32[2, 3] cpu and f32[4] cpu do not broadcast");
    assert_null(cg_mul(a, xi));
    assert_int_equal(cg_last_status(), CG_ERR_DTYPE);
    assert_error_contains("i32[2, 3] cpu must be f32");
    assert_null(cg_exp(xi));
    assert_int_equal(cg_last_status(), CG_ERR_DTYPE);
    assert_null(cg_sub(NULL, a));
    assert_error_contains("sub: a is NULL");
    assert_null(cg_compare(CG_OP_ADD, a, a));
    assert_error_contains("compare: add is not a comparison");
    assert_null(cg_where(a, a, b));
    assert_error_contains("where: cond f32[2, 3] cpu, a f32[2, 3] cpu and b f32[4] cpu do not broadcast");
    assert_null(cg_sum(a, 2, false));
    assert_error_contains("sum: axis 2 out of range for f32[2, 3] cpu");
    assert_null(cg_max(a, -3, false));
    assert_error_contains("max: axis -3 out of range");
    assert_null(cg_transpose(a, 0, 2));
    assert_error_contains("transpose: dims (0, 2) out of range for 2 dims");
    int64_t bad_shape[1] = {7};
    assert_null(cg_reshape(a, 1, bad_shape));
    assert_int_equal(cg_last_status(), CG_ERR_SHAPE);
    assert_null(cg_concat(0, NULL, 0));
    assert_error_contains("concat: needs at least one tensor");
    const cg_tensor *pair[2] = {a, make_input(PACKED, 2, s34, gen_any, 3)};
    assert_null(cg_concat(2, pair, 1));
    assert_int_equal(cg_last_status(), CG_ERR_SHAPE);
    cg_tensor *idx2 = cg_tensor_zeros(cg_step_arena(CG_CPU), CG_I64, 2, s23);
    assert_null(cg_index_select(a, 0, idx2));
    assert_error_contains("index_select: needs an axis of f32[2, 3] cpu and a 1-D index");
    assert_null(cg_embedding(b, idx2));
    assert_error_contains("embedding: weight f32[4] cpu must be [V, C]");
    assert_null(cg_gather(a, 1, a));
    assert_int_equal(cg_last_status(), CG_ERR_DTYPE);
    assert_null(cg_matmul(a, make_input(PACKED, 2, s24, gen_any, 4)));
    assert_error_contains("matmul: inner dimensions differ");
    assert_null(cg_matmul(b, b));
    assert_error_contains("matmul: operands need at least 2 dims, got a f32[4] cpu");
    int64_t b23[3] = {2, 2, 3}, b33[3] = {3, 3, 4};
    assert_null(cg_matmul(make_input(PACKED, 3, b23, gen_any, 5), make_input(PACKED, 3, b33, gen_any, 6)));
    assert_error_contains("matmul: the batch dims of a f32[2, 2, 3] cpu and b f32[3, 3, 4] cpu do not broadcast");
    assert_null(cg_swiglu(a, b));
    assert_error_contains("swiglu: gate f32[2, 3] cpu and up f32[4] cpu differ in shape");
    assert_null(cg_gelu(xi));
    assert_int_equal(cg_last_status(), CG_ERR_DTYPE);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_binary_ops, cg_test_teardown),
        cmocka_unit_test_teardown(test_unary_ops, cg_test_teardown),
        cmocka_unit_test_teardown(test_scalar_ops, cg_test_teardown),
        cmocka_unit_test_teardown(test_where, cg_test_teardown),
        cmocka_unit_test_teardown(test_where_float_cond_with_grad, cg_test_teardown),
        cmocka_unit_test_teardown(test_compare, cg_test_teardown),
        cmocka_unit_test_teardown(test_reductions, cg_test_teardown),
        cmocka_unit_test_teardown(test_sum_all_mean_all, cg_test_teardown),
        cmocka_unit_test_teardown(test_shape_ops, cg_test_teardown),
        cmocka_unit_test_teardown(test_concat, cg_test_teardown),
        cmocka_unit_test_teardown(test_gather_index_select_embedding, cg_test_teardown),
        cmocka_unit_test_teardown(test_cast, cg_test_teardown),
        cmocka_unit_test_teardown(test_matmul, cg_test_teardown),
        cmocka_unit_test_teardown(test_swiglu, cg_test_teardown),
        cmocka_unit_test_teardown(test_conventions_unary, cg_test_teardown),
        cmocka_unit_test_teardown(test_conventions_extrema, cg_test_teardown),
        cmocka_unit_test_teardown(test_errors, cg_test_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
