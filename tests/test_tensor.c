/* Tensors and views: creation, strides, views that share storage and index correctly for non-contiguous
 * layouts, reshape's view rules, copies across dtypes and layouts, and argument errors. */
#include "test_util.h"

static cg_arena *A(void) { return cg_step_arena(CG_CPU); }

/* A [d0, d1, d2] f32 tensor whose element (i, j, k) holds 100 i + 10 j + k. */
static cg_tensor *iota3(int64_t d0, int64_t d1, int64_t d2) {
    int64_t shape[3] = {d0, d1, d2};
    cg_tensor *t = cg_tensor_empty(A(), CG_F32, 3, shape);
    assert_non_null(t);
    float *p = cg_data(t);
    for (int64_t i = 0; i < d0; i++)
        for (int64_t j = 0; j < d1; j++)
            for (int64_t k = 0; k < d2; k++) p[(i * d1 + j) * d2 + k] = (float)(100 * i + 10 * j + k);
    return t;
}

static double at3(const cg_tensor *t, int64_t i, int64_t j, int64_t k) {
    int64_t idx[3] = {i, j, k};
    return cg_get(t, idx);
}

static void test_create_and_strides(void **state) {
    (void)state;
    cg_tensor *t = iota3(2, 3, 4);
    assert_int_equal(t->ndim, 3);
    assert_int_equal(t->strides[0], 12);
    assert_int_equal(t->strides[1], 4);
    assert_int_equal(t->strides[2], 1);
    assert_int_equal(cg_numel(t), 24);
    assert_int_equal(cg_nbytes(t), 96);
    assert_true(cg_is_contiguous(t));
    assert_int_equal((uintptr_t)cg_data(t) % 64, 0);
    char buf[64];
    assert_string_equal(cg_tensor_desc(t, buf, sizeof buf), "f32[2, 3, 4] cpu");
    int64_t shape[2] = {3, 5};
    cg_tensor *z = cg_tensor_zeros(A(), CG_BF16, 2, shape);
    for (int64_t i = 0; i < 15; i++) assert_true(cg_get_flat(z, i) == 0.0);
    int64_t empty_shape[2] = {0, 7};
    cg_tensor *e = cg_tensor_empty(A(), CG_F32, 2, empty_shape);
    assert_non_null(e);
    assert_int_equal(cg_numel(e), 0);
    cg_tensor *scalar = cg_tensor_from_data(A(), CG_I64, 0, NULL, &(int64_t){-5});
    assert_non_null(scalar);
    assert_int_equal(cg_numel(scalar), 1);
    assert_true(cg_get_flat(scalar, 0) == -5.0);
}

static void test_create_errors(void **state) {
    (void)state;
    int64_t bad[2] = {3, -1};
    assert_null(cg_tensor_empty(A(), CG_F32, 2, bad));
    assert_int_equal(cg_last_status(), CG_ERR_SHAPE);
    assert_error_contains("dim 1 has negative size -1");
    int64_t seven[7] = {1, 1, 1, 1, 1, 1, 1};
    assert_null(cg_tensor_empty(A(), CG_F32, 7, seven));
    assert_error_contains("7 dims");
    assert_null(cg_tensor_empty(A(), (cg_dtype)42, 1, seven));
    assert_int_equal(cg_last_status(), CG_ERR_DTYPE);
    int64_t huge[3] = {1LL << 30, 1LL << 30, 1LL << 30};
    assert_null(cg_tensor_empty(A(), CG_F32, 3, huge));
    assert_error_contains("overflows");
}

static void test_transpose_and_permute_share_storage(void **state) {
    (void)state;
    cg_tensor *t = iota3(2, 3, 4);
    cg_tensor *tt = cg_view_transpose(t, 0, 2); /* [4, 3, 2] */
    assert_non_null(tt);
    assert_ptr_equal(tt->storage, t->storage);
    assert_int_equal(tt->shape[0], 4);
    assert_int_equal(tt->shape[2], 2);
    assert_false(cg_is_contiguous(tt));
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 3; j++)
            for (int k = 0; k < 2; k++) assert_true(at3(tt, i, j, k) == 100 * k + 10 * j + i);
    int perm[3] = {1, 2, 0}; /* [3, 4, 2] */
    cg_tensor *p = cg_view_permute(t, perm);
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 4; j++)
            for (int k = 0; k < 2; k++) assert_true(at3(p, i, j, k) == 100 * k + 10 * i + j);
    /* writes through a view land in the original */
    int64_t idx[3] = {3, 1, 0};
    cg_set(tt, idx, -1.0);
    assert_true(at3(t, 0, 1, 3) == -1.0);
    int bad_perm[3] = {0, 0, 1};
    assert_null(cg_view_permute(t, bad_perm));
    assert_error_contains("not a permutation");
    assert_null(cg_view_transpose(t, 0, 3));
    assert_error_contains("out of range");
}

static void test_slice(void **state) {
    (void)state;
    cg_tensor *t = iota3(2, 5, 7);
    cg_tensor *s = cg_view_slice(t, 2, 1, 6, 2); /* k = 1, 3, 5 */
    assert_non_null(s);
    assert_int_equal(s->shape[2], 3);
    assert_ptr_equal(s->storage, t->storage);
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 5; j++)
            for (int k = 0; k < 3; k++) assert_true(at3(s, i, j, k) == 100 * i + 10 * j + (1 + 2 * k));
    /* negative indices count from the end; a slice of a slice composes */
    cg_tensor *s2 = cg_view_slice(s, 1, -3, -1, 1); /* j = 2, 3 */
    assert_int_equal(s2->shape[1], 2);
    assert_true(at3(s2, 1, 1, 2) == 100 + 30 + 5);
    /* out-of-range bounds clamp like Python slices; an empty slice is allowed */
    cg_tensor *e = cg_view_slice(t, 1, 4, 2, 1);
    assert_int_equal(e->shape[1], 0);
    cg_tensor *c = cg_view_slice(t, 0, -10, 10, 1);
    assert_int_equal(c->shape[0], 2);
    assert_null(cg_view_slice(t, 1, 0, 3, 0));
    assert_error_contains("step 0");
    /* a packed copy of the strided slice has the same values */
    cg_tensor *pc = cg_contiguous(s);
    assert_true(cg_is_contiguous(pc));
    assert_ptr_not_equal(pc->storage, t->storage);
    for (int64_t i = 0; i < cg_numel(s); i++) assert_true(cg_get_flat(pc, i) == cg_get_flat(s, i));
    /* cg_contiguous of a packed tensor is the tensor itself */
    assert_ptr_equal(cg_contiguous(t), t);
}

static void test_expand(void **state) {
    (void)state;
    float v[3] = {1, 2, 3};
    int64_t shape[2] = {1, 3};
    cg_tensor *row = cg_tensor_from_data(A(), CG_F32, 2, shape, v);
    int64_t to[3] = {4, 2, 3};
    cg_tensor *x = cg_view_expand(row, 3, to);
    assert_non_null(x);
    assert_int_equal(x->strides[0], 0);
    assert_int_equal(x->strides[1], 0);
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 2; j++)
            for (int k = 0; k < 3; k++) assert_true(at3(x, i, j, k) == v[k]);
    int64_t bad[2] = {2, 4};
    assert_null(cg_view_expand(row, 2, bad));
    assert_error_contains("cannot expand to 4");
    cg_tensor *packed = cg_contiguous(x);
    assert_int_equal(cg_numel(packed), 24);
    assert_true(cg_get_flat(packed, 23) == 3.0);
}

static void test_unsqueeze_squeeze(void **state) {
    (void)state;
    cg_tensor *t = iota3(2, 3, 4);
    cg_tensor *u = cg_view_unsqueeze(t, 1);
    assert_int_equal(u->ndim, 4);
    assert_int_equal(u->shape[1], 1);
    int64_t idx[4] = {1, 0, 2, 3};
    assert_true(cg_get(u, idx) == 123.0);
    cg_tensor *last = cg_view_unsqueeze(t, -1);
    assert_int_equal(last->shape[3], 1);
    cg_tensor *s = cg_view_squeeze(u, 1);
    assert_int_equal(s->ndim, 3);
    assert_true(cg_same_shape(s, t));
    assert_null(cg_view_squeeze(t, 0));
    assert_error_contains("not of size 1");
}

static void test_reshape_views(void **state) {
    (void)state;
    cg_tensor *t = iota3(2, 3, 4);
    int64_t s1[2] = {6, -1};
    cg_tensor *r = cg_view_reshape(t, 2, s1);
    assert_non_null(r);
    assert_int_equal(r->shape[1], 4);
    assert_ptr_equal(r->storage, t->storage);
    int64_t idx[2] = {4, 3};
    assert_true(cg_get(r, idx) == 100 + 10 + 3);
    /* a transposed tensor can merge dims that stay contiguous among themselves: [4, 3, 2] from transpose(0,2)
     * cannot flatten to [12, 2] (dims 0 and 1 are not adjacent in memory) */
    cg_tensor *tt = cg_view_transpose(t, 0, 2);
    int64_t s2[2] = {12, 2};
    assert_null(cg_view_reshape(tt, 2, s2));
    assert_error_contains("without a copy");
    /* but splitting a dim of a transposed view is fine: [4, 3, 2] -> [2, 2, 3, 2] */
    int64_t s3[4] = {2, 2, 3, 2};
    cg_tensor *split = cg_view_reshape(tt, 4, s3);
    assert_non_null(split);
    int64_t i4[4] = {1, 1, 2, 1}; /* tt[3, 2, 1] = t[1, 2, 3] */
    assert_true(cg_get(split, i4) == 123.0);
    /* merging the last two dims of a slice along dim 0 works (they are still packed) */
    cg_tensor *sl = cg_view_slice(t, 0, 1, 2, 1);
    int64_t s4[2] = {1, 12};
    cg_tensor *m = cg_view_reshape(sl, 2, s4);
    assert_non_null(m);
    int64_t i2[2] = {0, 11};
    assert_true(cg_get(m, i2) == 123.0);
    /* size-1 dims anywhere */
    int64_t s5[5] = {1, 2, 1, 12, 1};
    cg_tensor *ones = cg_view_reshape(t, 5, s5);
    assert_non_null(ones);
    int64_t i5[5] = {0, 1, 0, 11, 0};
    assert_true(cg_get(ones, i5) == 123.0);
    /* element-count and -1 errors */
    int64_t bad[2] = {5, 5};
    assert_null(cg_view_reshape(t, 2, bad));
    assert_error_contains("24 elements");
    int64_t two_infer[2] = {-1, -1};
    assert_null(cg_view_reshape(t, 2, two_infer));
    assert_error_contains("more than one -1");
    int64_t no_div[2] = {5, -1};
    assert_null(cg_view_reshape(t, 2, no_div));
    assert_error_contains("cannot infer");
    /* a 0-d tensor reshapes to [1, 1] and back */
    cg_tensor *scalar = cg_tensor_from_data(A(), CG_F32, 0, NULL, &(float){7});
    int64_t s6[2] = {1, 1};
    cg_tensor *sc2 = cg_view_reshape(scalar, 2, s6);
    assert_non_null(sc2);
    assert_true(cg_get_flat(sc2, 0) == 7.0);
    assert_non_null(cg_view_reshape(sc2, 0, NULL));
}

static void test_copy_and_cast(void **state) {
    (void)state;
    cg_tensor *t = iota3(3, 4, 5);
    cg_tensor *tt = cg_view_transpose(t, 1, 2); /* [3, 5, 4] strided */
    int64_t shape[3] = {3, 5, 4};
    cg_tensor *bf = cg_tensor_empty(A(), CG_BF16, 3, shape);
    assert_ok(cg_copy(bf, tt));
    for (int64_t i = 0; i < 60; i++) assert_true(cg_get_flat(bf, i) == cg_get_flat(tt, i)); /* all < 256: exact */
    cg_tensor *back = cg_tensor_to(A(), bf, CG_I32);
    assert_int_equal(back->dtype, CG_I32);
    assert_true(cg_get_flat(back, 59) == 234.0); /* tt[2, 4, 3] = t[2, 3, 4] */
    /* copy into a strided destination */
    cg_tensor *dst = iota3(3, 4, 5);
    cg_tensor *dst_t = cg_view_transpose(dst, 1, 2);
    cg_fill(bf, 2.5);
    assert_ok(cg_copy(dst_t, bf));
    for (int64_t i = 0; i < 60; i++) assert_true(cg_get_flat(dst, i) == 2.5);
    /* a bf16 copy of a value that needs rounding */
    float val = 1.0f + 0x1p-8f + 0x1p-9f; /* above the half-way point between 1 and 1 + 2^-7 */
    cg_tensor *one = cg_tensor_from_data(A(), CG_F32, 0, NULL, &val);
    cg_tensor *one_bf = cg_tensor_to(A(), one, CG_BF16);
    assert_true(cg_get_flat(one_bf, 0) == 1.0 + 0x1p-7);
    /* shape mismatch is an error naming both tensors */
    cg_tensor *other = iota3(3, 4, 4);
    assert_int_equal(cg_copy(other, t), CG_ERR_SHAPE);
    assert_error_contains("f32[3, 4, 4] cpu");
    assert_error_contains("f32[3, 4, 5] cpu");
    cg_tensor *cl = cg_tensor_clone(cg_persistent_arena(CG_CPU), tt);
    assert_true(cg_is_contiguous(cl));
    for (int64_t i = 0; i < 60; i++) assert_true(cg_get_flat(cl, i) == cg_get_flat(tt, i));
}

static void test_wrap_external_memory(void **state) {
    (void)state;
    int32_t buf[6] = {1, 2, 3, 4, 5, 6};
    int64_t shape[2] = {2, 3};
    cg_tensor *w = cg_tensor_wrap(A(), CG_I32, CG_CPU, 2, shape, buf);
    assert_non_null(w);
    assert_ptr_equal(cg_data(w), buf);
    int64_t idx[2] = {1, 2};
    cg_set(w, idx, 60);
    assert_int_equal(buf[5], 60);
}

static void test_device_parse_and_missing_gpu(void **state) {
    (void)state;
    cg_device d;
    assert_ok(cg_device_parse("cuda:3", &d));
    assert_int_equal(d.type, CG_DEVICE_CUDA);
    assert_int_equal(d.index, 3);
    assert_ok(cg_device_parse("cpu", &d));
    assert_true(cg_device_eq(d, CG_CPU));
    assert_int_equal(cg_device_parse("gpu0", &d), CG_ERR_INVALID_ARG);
    assert_error_contains("unknown device 'gpu0'");
    /* an arena on a GPU that does not exist fails on first allocation with a message naming it */
    int n = cg_cuda_device_count();
    cg_arena *a = cg_arena_create("ghost", CG_CUDA(n + 3), 1 << 20);
    if (!cg_cuda_compiled()) {
        assert_null(a);
        assert_error_contains("without CUDA");
        return;
    }
    assert_non_null(a);
    int64_t shape[1] = {4};
    assert_null(cg_tensor_empty(a, CG_F32, 1, shape));
    assert_int_equal(cg_last_status(), CG_ERR_DEVICE);
    char want[32];
    snprintf(want, sizeof want, "cuda:%d does not exist", n + 3);
    assert_error_contains(want);
    cg_arena_destroy(a);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_create_and_strides, cg_test_teardown),
        cmocka_unit_test_teardown(test_create_errors, cg_test_teardown),
        cmocka_unit_test_teardown(test_transpose_and_permute_share_storage, cg_test_teardown),
        cmocka_unit_test_teardown(test_slice, cg_test_teardown),
        cmocka_unit_test_teardown(test_expand, cg_test_teardown),
        cmocka_unit_test_teardown(test_unsqueeze_squeeze, cg_test_teardown),
        cmocka_unit_test_teardown(test_reshape_views, cg_test_teardown),
        cmocka_unit_test_teardown(test_copy_and_cast, cg_test_teardown),
        cmocka_unit_test_teardown(test_wrap_external_memory, cg_test_teardown),
        cmocka_unit_test_teardown(test_device_parse_and_missing_gpu, cg_test_teardown),
    };
    int rc = cmocka_run_group_tests_name("tensor", tests, NULL, NULL);
    cg_shutdown();
    return rc;
}
