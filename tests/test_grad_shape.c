/* The shape, indexing, cast and matmul ops of autograd/ops.h: forward values against naive double
 * references and gradients by cg_gradcheck (defaults rtol 1e-2, atol 1e-3), with non-contiguous inputs,
 * batch broadcasting and all four matmul transpose combinations. */
#include "grad_util.h"

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

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_shape_ops, cg_test_teardown),
        cmocka_unit_test_teardown(test_concat, cg_test_teardown),
        cmocka_unit_test_teardown(test_gather_index_select_embedding, cg_test_teardown),
        cmocka_unit_test_teardown(test_cast, cg_test_teardown),
        cmocka_unit_test_teardown(test_matmul, cg_test_teardown),
    };
    int rc = cmocka_run_group_tests_name("grad_shape", tests, NULL, NULL);
    cg_shutdown();
    return rc;
}
