/* The elementwise and reduction ops of autograd/ops.h (and gelu, silu, swiglu): forward values against naive
 * double references and gradients by cg_gradcheck, over several shapes: broadcasting both ways, batch 1,
 * odd sizes, non-contiguous inputs (transposed, sliced with a step). Inputs stay away from non-smooth points
 * so finite differences are valid; the conventions at those points are checked exactly on their own. Also
 * the argument errors of every primitive op. Shape, indexing and matmul ops: test_grad_shape.c.
 * Gradcheck tolerances: rtol 1e-2, atol 1e-3 (the defaults) unless a case says otherwise. */
#include "grad_util.h"

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
        cmocka_unit_test_teardown(test_swiglu, cg_test_teardown),
        cmocka_unit_test_teardown(test_conventions_unary, cg_test_teardown),
        cmocka_unit_test_teardown(test_conventions_extrema, cg_test_teardown),
        cmocka_unit_test_teardown(test_errors, cg_test_teardown),
    };
    int rc = cmocka_run_group_tests_name("grad_basic", tests, NULL, NULL);
    cg_shutdown();
    return rc;
}
