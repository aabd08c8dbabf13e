/* scatter_add, index_add and the embedding weight gradient against naive loops, with repeated indices,
 * and the same bits on 1 and 2 threads for the embedding gradient. */
#include "test_util.h"

static cg_arena *A(void) { return cg_step_arena(CG_CPU); }

static cg_tensor *randn_like_shape(int nd, const int64_t *shape, uint64_t seed) {
    cg_tensor *t = cg_tensor_empty(A(), CG_F32, nd, shape);
    float *p = cg_data(t);
    for (int64_t i = 0; i < cg_numel(t); i++) p[i] = cg_test_randf(&seed);
    return t;
}

static void test_scatter_add(void **state) {
    (void)state;
    /* out [4, 3]; index and src [5, 3] along axis 0 with repeats */
    int64_t so[2] = {4, 3}, si[2] = {5, 3};
    cg_tensor *out = randn_like_shape(2, so, 1), *src = randn_like_shape(2, si, 2);
    int64_t idx_data[15] = {0, 1, 2, 3, 3, 3, 0, 0, 0, 2, 1, 0, 1, 1, 1};
    cg_tensor *idx = cg_tensor_from_data(A(), CG_I64, 2, si, idx_data);
    double want[12];
    for (int i = 0; i < 12; i++) want[i] = cg_get_flat(out, i);
    for (int i = 0; i < 5; i++)
        for (int j = 0; j < 3; j++) want[idx_data[i * 3 + j] * 3 + j] += cg_get_flat(src, i * 3 + j);
    assert_ok(cg_scatter_add_into(out, 0, idx, src));
    for (int i = 0; i < 12; i++) assert_close(cg_get_flat(out, i), want[i], 1e-6, 1e-6);
    /* along the last axis with an i32 index smaller than src */
    int64_t so2[2] = {2, 6}, ss2[2] = {2, 4}, si2[2] = {2, 2};
    cg_tensor *out2 = cg_tensor_zeros(A(), CG_F32, 2, so2), *src2 = randn_like_shape(2, ss2, 3);
    int32_t i2[4] = {5, 5, 0, 2};
    cg_tensor *idx2 = cg_tensor_from_data(A(), CG_I32, 2, si2, i2);
    assert_ok(cg_scatter_add_into(out2, -1, idx2, src2));
    int64_t p[2] = {0, 5};
    assert_close(cg_get(out2, p), cg_get_flat(src2, 0) + cg_get_flat(src2, 1), 1e-6, 1e-7);
    p[0] = 1, p[1] = 2;
    assert_close(cg_get(out2, p), cg_get_flat(src2, 5), 1e-6, 1e-7);
    assert_true(cg_get_flat(out2, 1) == 0.0);
    /* errors: an index out of range is refused before anything is written */
    i2[1] = 6;
    cg_tensor *bad = cg_tensor_from_data(A(), CG_I32, 2, si2, i2);
    cg_tensor *before = cg_tensor_clone(A(), out2);
    assert_int_equal(cg_scatter_add_into(out2, 1, bad, src2), CG_ERR_INVALID_ARG);
    assert_error_contains("index 6 is outside [0, 6)");
    for (int i = 0; i < 12; i++) assert_true(cg_get_flat(out2, i) == cg_get_flat(before, i));
    int64_t big[2] = {3, 3};
    cg_tensor *idx_big = cg_tensor_zeros(A(), CG_I64, 2, big);
    assert_int_equal(cg_scatter_add_into(out2, 1, idx_big, src2), CG_ERR_SHAPE);
    assert_error_contains("no larger than src");
}

static void test_index_add(void **state) {
    (void)state;
    int64_t so[3] = {2, 5, 3}, ss[3] = {2, 4, 3};
    cg_tensor *out = cg_tensor_zeros(A(), CG_F32, 3, so), *src = randn_like_shape(3, ss, 4);
    int64_t id[4] = {4, 0, 4, 2};
    int64_t n4 = 4;
    cg_tensor *idx = cg_tensor_from_data(A(), CG_I64, 1, &n4, id);
    assert_ok(cg_index_add_into(out, 1, idx, src));
    for (int b = 0; b < 2; b++)
        for (int r = 0; r < 5; r++)
            for (int c = 0; c < 3; c++) {
                double want = 0;
                for (int k = 0; k < 4; k++)
                    if (id[k] == r) want += cg_get_flat(src, (b * 4 + k) * 3 + c);
                int64_t pos[3] = {b, r, c};
                assert_close(cg_get(out, pos), want, 1e-6, 1e-7);
            }
    int64_t wrong[3] = {2, 3, 3};
    cg_tensor *src_wrong = cg_tensor_zeros(A(), CG_F32, 3, wrong);
    assert_int_equal(cg_index_add_into(out, 1, idx, src_wrong), CG_ERR_SHAPE);
    assert_error_contains("index_add: src f32[2, 3, 3] cpu");
}

static void embedding_grad(int threads, int64_t N, int64_t V, int64_t C, cg_tensor **out) {
    int64_t sw[2] = {V, C}, sg[2] = {N, C};
    cg_set_num_threads(threads);
    cg_tensor *gw = cg_tensor_zeros(A(), CG_F32, 2, sw);
    cg_tensor *go = randn_like_shape(2, sg, 5);
    cg_tensor *ids = cg_tensor_empty(A(), CG_I32, 1, &N);
    int32_t *p = cg_data(ids);
    for (int64_t i = 0; i < N; i++) p[i] = (int32_t)((i * 7 + i / 3) % V); /* many repeats */
    assert_ok(cg_embedding_backward_into(gw, ids, go));
    /* naive reference in double */
    for (int64_t v = 0; v < V; v += V / 7 + 1)
        for (int64_t c = 0; c < C; c += 13) {
            double want = 0;
            for (int64_t i = 0; i < N; i++)
                if (p[i] == v) want += cg_get_flat(go, i * C + c);
            assert_close(cg_get_flat(gw, v * C + c), want, 1e-5, 1e-5);
        }
    *out = gw;
}

static void test_embedding_backward_deterministic(void **state) {
    (void)state;
    cg_tensor *g1, *g2;
    embedding_grad(1, 3000, 97, 200, &g1); /* 600k elements: above the parallel threshold */
    embedding_grad(2, 3000, 97, 200, &g2);
    assert_memory_equal(cg_data(g1), cg_data(g2), cg_nbytes(g1));
    cg_set_num_threads(0);
    /* an id out of range */
    int64_t sw[2] = {4, 2}, sg[2] = {1, 2}, n1 = 1;
    cg_tensor *gw = cg_tensor_zeros(A(), CG_F32, 2, sw), *go = cg_tensor_zeros(A(), CG_F32, 2, sg);
    cg_tensor *ids = cg_tensor_from_data(A(), CG_I64, 1, &n1, &(int64_t){4});
    assert_int_equal(cg_embedding_backward_into(gw, ids, go), CG_ERR_INVALID_ARG);
    assert_error_contains("id 4 at position 0 is outside [0, 4)");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_scatter_add, cg_test_teardown),
        cmocka_unit_test_teardown(test_index_add, cg_test_teardown),
        cmocka_unit_test_teardown(test_embedding_backward_deterministic, cg_test_teardown),
    };
    int rc = cmocka_run_group_tests_name("ops_scatter", tests, NULL, NULL);
    cg_shutdown();
    return rc;
}
