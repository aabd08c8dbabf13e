/* The CUDA runtime glue: device arenas, uploads and downloads, strided copies across devices. Skips (cmocka
 * skip) without a GPU; `make test-gpu` turns a missing GPU into a failure. */
#include "test_util.h"

static void test_upload_download_round_trip(void **state) {
    (void)state;
    cg_test_require_gpu();
    cg_arena *gpu = cg_step_arena(CG_CUDA(0));
    assert_non_null(gpu);
    int64_t shape[2] = {257, 65};
    float host[257 * 65];
    uint64_t s = 7;
    for (int i = 0; i < 257 * 65; i++) host[i] = cg_test_randf(&s);
    cg_tensor *d = cg_tensor_from_data(gpu, CG_F32, 2, shape, host);
    assert_non_null(d);
    assert_int_equal(d->device.type, CG_DEVICE_CUDA);
    cg_tensor *back = cg_tensor_clone(cg_step_arena(CG_CPU), d);
    assert_non_null(back);
    for (int i = 0; i < 257 * 65; i++) assert_true(cg_get_flat(back, i) == host[i]);
    /* a strided (transposed) CPU view uploaded to a packed GPU tensor, with a bf16 conversion */
    cg_tensor *h = cg_tensor_from_data(cg_step_arena(CG_CPU), CG_F32, 2, shape, host);
    cg_tensor *ht = cg_view_transpose(h, 0, 1);
    int64_t tshape[2] = {65, 257};
    cg_tensor *dbf = cg_tensor_empty(gpu, CG_BF16, 2, tshape);
    assert_ok(cg_copy(dbf, ht));
    cg_tensor *bf_back = cg_tensor_to(cg_step_arena(CG_CPU), dbf, CG_F32);
    for (int64_t i = 0; i < 65 * 257; i++)
        assert_true(cg_get_flat(bf_back, i) == cg_bf16_to_f32(cg_f32_to_bf16((float)cg_get_flat(ht, i))));
    assert_ok(cg_device_synchronize(CG_CUDA(0)));
}

static void test_zeros_and_fill_on_gpu(void **state) {
    (void)state;
    cg_test_require_gpu();
    int64_t shape[1] = {1000};
    cg_tensor *z = cg_tensor_zeros(cg_step_arena(CG_CUDA(0)), CG_F32, 1, shape);
    assert_non_null(z);
    assert_ok(cg_fill(z, 3.5));
    cg_tensor *back = cg_tensor_clone(cg_step_arena(CG_CPU), z);
    for (int i = 0; i < 1000; i++) assert_true(cg_get_flat(back, i) == 3.5);
}

static void test_compiled_feature_matches_version_string(void **state) {
    (void)state;
    /* runs everywhere: the feature string and the compile-time flag agree */
    bool listed = strstr(cg_features(), "cuda") != NULL;
    assert_int_equal(listed, cg_cuda_compiled());
    if (!cg_cuda_compiled()) {
        assert_int_equal(cg_cuda_device_count(), 0);
        assert_null(cg_device_malloc(CG_CUDA(0), 16));
        assert_int_equal(cg_last_status(), CG_ERR_UNSUPPORTED);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_upload_download_round_trip, cg_test_teardown),
        cmocka_unit_test_teardown(test_zeros_and_fill_on_gpu, cg_test_teardown),
        cmocka_unit_test(test_compiled_feature_matches_version_string),
    };
    int rc = cmocka_run_group_tests_name("cuda_runtime", tests, NULL, NULL);
    cg_shutdown();
    return rc;
}
