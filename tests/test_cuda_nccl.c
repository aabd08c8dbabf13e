/* NCCL with one rank (cuda/comm_nccl.h): an all-reduce (sum and average) of f32 and bf16 device buffers, done
 * in place and as a bucket-sized slice of a larger buffer, gives what the single backend gives for the same
 * data on the host (for one rank: the data itself, unchanged bit for bit). Skips without a GPU; without
 * NCCL in the build it checks nothing beyond the skip. */
#include "test_util.h"

#include "core/comm.h"
#ifdef CG_HAVE_CUDA
#include "cuda/comm_nccl.h"
#endif

static void test_nccl_one_rank_allreduce_matches_single(void **state) {
    (void)state;
    cg_test_require_gpu();
#if defined(CG_HAVE_CUDA) && defined(CG_HAVE_NCCL)
    unsigned char id[CG_NCCL_ID_BYTES];
    void *nccl = NULL;
    assert_ok(cg_nccl_unique_id(id));
    assert_ok(cg_nccl_init(0, 1, 0, id, &nccl));
    const int64_t n = 10007;
    uint64_t seed = 42;
    float *host = malloc(sizeof(float) * (size_t)n), *want = malloc(sizeof(float) * (size_t)n),
          *got = malloc(sizeof(float) * (size_t)n);
    assert_non_null(host && want && got);
    for (int64_t i = 0; i < n; i++) host[i] = cg_test_randf(&seed) * 3.0f;
    int64_t shape[1] = {n};
    for (int dt = 0; dt < 2; dt++)
        for (int avg = 0; avg < 2; avg++) {
            cg_dtype dtype = dt ? CG_BF16 : CG_F32;
            cg_tensor *h = cg_tensor_from_data(cg_step_arena(CG_CPU), CG_F32, 1, shape, host);
            cg_tensor *hd = cg_tensor_to(cg_step_arena(CG_CPU), h, dtype); /* the host reference, same dtype */
            cg_tensor *d = cg_tensor_to(cg_step_arena(CG_CUDA(0)), h, dtype);
            assert_non_null(hd);
            assert_non_null(d);
            assert_ok(cg_comm_allreduce(cg_comm_single(), CG_CPU, cg_data(hd), n, dtype, avg ? CG_COMM_AVG : CG_COMM_SUM));
            /* the whole buffer, then a bucket (a slice in the middle) again: both in place */
            char why[256] = "";
            assert_ok(cg_nccl_start(nccl, 0, cg_data(d), cg_data(d), (size_t)n, dt, avg, 0));
            assert_ok(cg_nccl_wait(nccl, 60.0, why, sizeof why));
            size_t es = dt ? 2 : 4;
            assert_ok(cg_nccl_start(nccl, 0, (char *)cg_data(d) + 100 * es, (char *)cg_data(d) + 100 * es, 4096, dt,
                                    avg, 0));
            assert_ok(cg_nccl_wait(nccl, 60.0, why, sizeof why));
            cg_tensor *back = cg_tensor_to(cg_step_arena(CG_CPU), d, CG_F32);
            cg_tensor *ref = cg_tensor_to(cg_step_arena(CG_CPU), hd, CG_F32);
            assert_non_null(back);
            assert_non_null(ref);
            memcpy(got, cg_data(back), sizeof(float) * (size_t)n);
            memcpy(want, cg_data(ref), sizeof(float) * (size_t)n);
            for (int64_t i = 0; i < n; i++) assert_true(got[i] == want[i]);
        }
    free(host), free(want), free(got);
    cg_nccl_free(nccl);
#else
    print_message("skipped: built without NCCL\n");
    skip();
#endif
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_nccl_one_rank_allreduce_matches_single, cg_test_teardown),
    };
    int rc = cmocka_run_group_tests_name("cuda_nccl", tests, NULL, NULL);
    cg_shutdown();
    return rc;
}
