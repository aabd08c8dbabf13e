/* The autograd engine: gradients by hand for small graphs, accumulation into leaves across backward
 * calls, no-grad scopes, detach, non-scalar backward, errors, gradcheck catching a wrong gradient, and no
 * memory growth over 1,000 steps. */
#include "test_util.h"

#include "autograd/gradcheck.h"
#include "autograd/ops.h"

static cg_tensor *param(const float *v, int nd, const int64_t *shape) {
    cg_tensor *t = cg_tensor_from_data(cg_persistent_arena(CG_CPU), CG_F32, nd, shape, v);
    assert_non_null(t);
    assert_ok(cg_set_requires_grad(t, true));
    return t;
}

static cg_tensor *constant(const float *v, int nd, const int64_t *shape) {
    cg_tensor *t = cg_tensor_from_data(cg_step_arena(CG_CPU), CG_F32, nd, shape, v);
    assert_non_null(t);
    return t;
}

/* L = sum((a * b + a) / 2): dL/da = (b + 1) / 2, dL/db = a / 2; a is used twice. */
static void test_hand_gradients_and_accumulation(void **state) {
    (void)state;
    int64_t s[1] = {3};
    float av[3] = {1, -2, 3}, bv[3] = {0.5f, 4, -1};
    cg_tensor *a = param(av, 1, s), *b = param(bv, 1, s);
    cg_tensor *loss = cg_sum_all(cg_scale(cg_add(cg_mul(a, b), a), 0.5f));
    assert_non_null(loss);
    assert_close(cg_get_flat(loss, 0), (0.5 - 8 - 3 + 1 - 2 + 3) / 2.0, 1e-6, 1e-6);
    assert_ok(cg_backward(loss));
    for (int i = 0; i < 3; i++) {
        assert_close(cg_get_flat(a->grad, i), (bv[i] + 1) / 2.0, 1e-6, 1e-7);
        assert_close(cg_get_flat(b->grad, i), av[i] / 2.0, 1e-6, 1e-7);
    }
    /* a second step accumulates into the same persistent buffers (gradient accumulation) */
    cg_tensor *grad_buffer = a->grad;
    cg_step_end();
    loss = cg_sum_all(cg_mul(a, b));
    assert_ok(cg_backward(loss));
    assert_ptr_equal(a->grad, grad_buffer);
    for (int i = 0; i < 3; i++) assert_close(cg_get_flat(a->grad, i), (bv[i] + 1) / 2.0 + bv[i], 1e-6, 1e-7);
    cg_zero_grad(a);
    for (int i = 0; i < 3; i++) assert_true(cg_get_flat(a->grad, i) == 0.0);
}

/* Two backward passes over one graph (two loss terms) each see only their own upstream gradient. */
static void test_two_backwards_over_one_graph(void **state) {
    (void)state;
    int64_t s[1] = {2};
    float xv[2] = {2, 3};
    cg_tensor *x = param(xv, 1, s);
    cg_tensor *h = cg_square(x); /* shared intermediate */
    cg_tensor *l1 = cg_sum_all(h), *l2 = cg_sum_all(cg_scale(h, 3.0f));
    assert_ok(cg_backward(l1));
    assert_ok(cg_backward(l2));
    for (int i = 0; i < 2; i++) assert_close(cg_get_flat(x->grad, i), 2.0 * xv[i] * (1 + 3), 1e-6, 1e-6);
}

static void test_no_grad_and_detach(void **state) {
    (void)state;
    int64_t s[1] = {2};
    float xv[2] = {1, 2};
    cg_tensor *x = param(xv, 1, s);
    int64_t before = cg_tape_size();
    cg_no_grad_enter();
    cg_no_grad_enter(); /* nesting */
    cg_tensor *y = cg_mul(x, x);
    cg_no_grad_exit();
    cg_tensor *y2 = cg_mul(x, x);
    cg_no_grad_exit();
    assert_false(y->requires_grad);
    assert_false(y2->requires_grad);
    assert_int_equal(cg_tape_size(), before);
    assert_int_equal(cg_backward(cg_sum_all(y)), CG_ERR_INVALID_ARG);
    assert_error_contains("does not require a gradient");
    /* loss = sum(x * detach(x)): the gradient is detach(x) = x, not 2x */
    cg_tensor *d = cg_detach(x);
    assert_ptr_equal(d->storage, x->storage);
    assert_ok(cg_backward(cg_sum_all(cg_mul(x, d))));
    for (int i = 0; i < 2; i++) assert_close(cg_get_flat(x->grad, i), xv[i], 1e-6, 1e-7);
}

static void test_nonscalar_backward_and_errors(void **state) {
    (void)state;
    int64_t s[2] = {2, 2};
    float xv[4] = {1, 2, 3, 4}, gv[4] = {1, 0, -1, 0.5f};
    cg_tensor *x = param(xv, 2, s);
    cg_tensor *y = cg_exp(x);
    cg_tensor *g = constant(gv, 2, s);
    assert_ok(cg_backward_with_grad(y, g));
    for (int i = 0; i < 4; i++) assert_close(cg_get_flat(x->grad, i), gv[i] * exp(xv[i]), 1e-6, 1e-6);
    assert_int_equal(cg_backward(y), CG_ERR_SHAPE);
    assert_error_contains("not a single element");
    int64_t s3[1] = {3};
    cg_tensor *g3 = cg_tensor_zeros(cg_step_arena(CG_CPU), CG_F32, 1, s3);
    assert_int_equal(cg_backward_with_grad(y, g3), CG_ERR_SHAPE);
    assert_error_contains("does not match the output");
    cg_tensor *ints = cg_tensor_zeros(cg_step_arena(CG_CPU), CG_I32, 1, s3);
    assert_int_equal(cg_set_requires_grad(ints, true), CG_ERR_DTYPE);
    assert_error_contains("integer tensor");
}

/* gradcheck must fail when a gradient is wrong: a deliberately broken op (d/dx of x^2 claimed as x). */
static cg_status wrong_square_backward(cg_node *n, const cg_tensor *g, cg_tensor **gi) {
    gi[0] = cg_mul(g, n->inputs[0]);
    return gi[0] ? CG_OK : cg_last_status();
}

static cg_tensor *broken_square(cg_tensor *const *in, void *user) {
    (void)user;
    cg_tensor *out = cg_tensor_empty(cg_step_arena(CG_CPU), CG_F32, in[0]->ndim, in[0]->shape);
    if (cg_binary_into(CG_OP_MUL, out, in[0], in[0]) != CG_OK) return NULL;
    cg_status st;
    cg_record("broken_square", wrong_square_backward, out, 1, in, &st);
    return st == CG_OK ? out : NULL;
}

static cg_tensor *good_square(cg_tensor *const *in, void *user) {
    (void)user;
    return cg_square(in[0]);
}

static void test_gradcheck_catches_a_wrong_gradient(void **state) {
    (void)state;
    int64_t s[1] = {5};
    float xv[5] = {0.5f, -1, 2, 0.25f, 3};
    cg_tensor *x = param(xv, 1, s);
    cg_gradcheck_result r;
    assert_ok(cg_gradcheck(good_square, NULL, 1, &x, NULL, &r));
    assert_true(r.passed);
    assert_int_equal(r.checked, 5);
    assert_ok(cg_gradcheck(broken_square, NULL, 1, &x, NULL, &r));
    assert_false(r.passed);
    assert_int_equal(r.failures, 5);
    assert_close(r.worst_numeric, 2.0 * r.worst_analytic, 1e-2, 1e-3); /* numeric 2x r, analytic x r */
}

/* 1,000 steps of forward, backward, step end: the arenas stop allocating after the first steps and the
 * persistent memory does not grow. */
static void test_no_memory_growth(void **state) {
    (void)state;
    int64_t sw[2] = {16, 8}, sx[2] = {4, 16};
    float wv[128], xv[64];
    uint64_t seed = 3;
    for (int i = 0; i < 128; i++) wv[i] = cg_test_randf(&seed);
    for (int i = 0; i < 64; i++) xv[i] = cg_test_randf(&seed);
    cg_tensor *w = param(wv, 2, sw);
    uint64_t allocs_at_2 = 0;
    size_t persistent_at_2 = 0;
    for (int step = 0; step < 1000; step++) {
        cg_tensor *x = constant(xv, 2, sx);
        cg_tensor *loss = cg_mean_all(cg_tanh(cg_matmul(x, w)));
        assert_ok(cg_backward(loss));
        cg_step_end();
        if (step == 1) {
            allocs_at_2 = cg_arena_get_stats(cg_step_arena(CG_CPU)).system_allocs +
                          cg_arena_get_stats(cg_persistent_arena(CG_CPU)).system_allocs;
            persistent_at_2 = cg_memory_get_stats(CG_CPU).persistent_used;
        }
    }
    uint64_t allocs = cg_arena_get_stats(cg_step_arena(CG_CPU)).system_allocs +
                      cg_arena_get_stats(cg_persistent_arena(CG_CPU)).system_allocs;
    cg_memory_stats m = cg_memory_get_stats(CG_CPU);
    print_message("1000 steps: step arena peak %zu bytes, persistent %zu bytes, %llu chunk allocations\n", m.step_peak,
                  m.persistent_used, (unsigned long long)allocs);
    assert_int_equal(allocs, allocs_at_2);
    assert_int_equal(m.persistent_used, persistent_at_2);
    assert_int_equal(m.step_used, 0);
    assert_int_equal(cg_tape_size(), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_hand_gradients_and_accumulation, cg_test_teardown),
        cmocka_unit_test_teardown(test_two_backwards_over_one_graph, cg_test_teardown),
        cmocka_unit_test_teardown(test_no_grad_and_detach, cg_test_teardown),
        cmocka_unit_test_teardown(test_nonscalar_backward_and_errors, cg_test_teardown),
        cmocka_unit_test_teardown(test_gradcheck_catches_a_wrong_gradient, cg_test_teardown),
        cmocka_unit_test_teardown(test_no_memory_growth, cg_test_teardown),
    };
    int rc = cmocka_run_group_tests_name("autograd", tests, NULL, NULL);
    cg_shutdown();
    return rc;
}
