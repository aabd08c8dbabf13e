/* Deterministic mode (cg_set_deterministic, core/ops.h): the switch round-trips (CPU); on a GPU, two runs of
 * the same matmuls (one of them a split-K-prone shape: small output, long inner dim), embedding backward and
 * token log-probs forward/backward give bitwise-equal results, and the matmul heuristic cache keys on the
 * mode. The GPU tests skip without a GPU (fail under CG_REQUIRE_GPU=1, `make test-gpu`). */
#include "test_util.h"

static void test_deterministic_switch_round_trips(void **state) {
    (void)state;
    assert_true(cg_deterministic()); /* on by default */
    assert_true(cg_set_deterministic(false));
    assert_false(cg_deterministic());
    assert_false(cg_set_deterministic(false));
    assert_false(cg_set_deterministic(true));
    assert_true(cg_deterministic());
    assert_true(cg_set_deterministic(true));
    assert_true(cg_deterministic());
}

/* A CUDA tensor of dtype dt holding random values (the same for a given seed). */
static cg_tensor *cuda_rand(int nd, const int64_t *shape, uint64_t seed, cg_dtype dt, bool grad) {
    cg_tensor *h = cg_test_rand_tensor(nd, shape, seed, 1.0f, 0.0f, false);
    cg_tensor *d = cg_tensor_to(cg_step_arena(CG_CUDA(0)), h, dt);
    assert_non_null(d);
    if (grad) assert_ok(cg_set_requires_grad(d, true));
    return d;
}

/* A host copy (malloc'd bytes) of a GPU tensor, after the GPU has finished. */
static void *host_bytes(const cg_tensor *t, size_t *nbytes) {
    assert_non_null(t);
    assert_ok(cg_device_synchronize(t->device));
    const cg_tensor *h = cg_tensor_to(cg_step_arena(CG_CPU), t, t->dtype);
    assert_non_null(h);
    *nbytes = (size_t)cg_numel(h) * cg_dtype_size(h->dtype);
    void *p = malloc(*nbytes ? *nbytes : 1);
    assert_non_null(p);
    memcpy(p, cg_data(h), *nbytes);
    return p;
}

#define N_RESULTS 6

/* Runs every computation once from fixed inputs and returns host copies of the results. */
static void run_all(void *res[N_RESULTS], size_t len[N_RESULTS]) {
    cg_arena *ga = cg_step_arena(CG_CUDA(0));
    /* f32 matmul with a small output and a long inner dimension: where cuBLASLt likes split-K */
    int64_t as[2] = {64, 65536}, bs[2] = {65536, 64}, os[2] = {64, 64};
    cg_tensor *a = cuda_rand(2, as, 1, CG_F32, false), *b = cuda_rand(2, bs, 2, CG_F32, false);
    cg_tensor *o = cg_tensor_empty(ga, CG_F32, 2, os);
    assert_non_null(o);
    assert_ok(cg_matmul_into(o, a, b, false, false, 1.0f, 0.0f));
    res[0] = host_bytes(o, &len[0]);
    /* bf16 matmul, f32 result, B transposed */
    int64_t a2s[2] = {512, 8192}, b2s[2] = {384, 8192}, o2s[2] = {512, 384};
    cg_tensor *a2 = cuda_rand(2, a2s, 3, CG_BF16, false), *b2 = cuda_rand(2, b2s, 4, CG_BF16, false);
    cg_tensor *o2 = cg_tensor_empty(ga, CG_F32, 2, o2s);
    assert_non_null(o2);
    assert_ok(cg_matmul_into(o2, a2, b2, false, true, 1.0f, 0.0f));
    res[1] = host_bytes(o2, &len[1]);
    /* embedding backward with many repeated ids */
    int64_t ids_shape[1] = {4096}, gs[2] = {4096, 256}, ws[2] = {50, 256};
    cg_tensor *ids = cg_tensor_empty(cg_step_arena(CG_CPU), CG_I64, 1, ids_shape);
    assert_non_null(ids);
    for (int64_t i = 0; i < 4096; i++) ((int64_t *)cg_data(ids))[i] = (i * 37 + i / 7) % 50;
    cg_tensor *idsd = cg_tensor_clone(ga, ids);
    assert_non_null(idsd);
    cg_tensor *gout = cuda_rand(2, gs, 5, CG_F32, false);
    cg_tensor *gw = cg_tensor_zeros(ga, CG_F32, 2, ws); /* the backward accumulates */
    assert_non_null(gw);
    assert_ok(cg_embedding_backward_into(gw, idsd, gout));
    res[2] = host_bytes(gw, &len[2]);
    /* token log-probs forward and backward, bf16 */
    int64_t hs[2] = {64, 128}, vs[2] = {5000, 128}, ts[1] = {64};
    cg_tensor *hid = cuda_rand(2, hs, 6, CG_BF16, true), *wt = cuda_rand(2, vs, 7, CG_BF16, true);
    cg_tensor *tok = cg_tensor_empty(cg_step_arena(CG_CPU), CG_I64, 1, ts);
    assert_non_null(tok);
    for (int64_t i = 0; i < 64; i++) ((int64_t *)cg_data(tok))[i] = (i * 977) % 5000;
    cg_tensor *tokd = cg_tensor_clone(ga, tok);
    assert_non_null(tokd);
    cg_tensor *lp = cg_token_logprobs(hid, wt, tokd, 1024);
    assert_non_null(lp);
    assert_ok(cg_backward_with_grad(lp, cuda_rand(1, ts, 8, CG_F32, false)));
    res[3] = host_bytes(lp, &len[3]);
    res[4] = host_bytes(hid->grad, &len[4]);
    res[5] = host_bytes(wt->grad, &len[5]);
    cg_step_end();
}

static void test_cuda_results_repeat_bitwise(void **state) {
    (void)state;
    cg_test_require_gpu();
    static const char *names[N_RESULTS] = {"f32 matmul 64x64 K=65536", "bf16 matmul 512x384 K=8192",
                                           "embedding backward", "token_logprobs out", "token_logprobs dhidden",
                                           "token_logprobs dweight"};
    assert_true(cg_deterministic());
    void *first[N_RESULTS], *second[N_RESULTS];
    size_t l1[N_RESULTS], l2[N_RESULTS];
    run_all(first, l1);
    run_all(second, l2);
    for (int i = 0; i < N_RESULTS; i++) {
        assert_int_equal(l1[i], l2[i]);
        assert_true(l1[i] > 0);
        if (memcmp(first[i], second[i], l1[i]) != 0) fail_msg("%s differs between two runs", names[i]);
        free(first[i]);
        free(second[i]);
    }
}

/* The heuristic cache keys on the mode: a shape seen in one mode is a miss in the other, then a hit in each. */
static void test_cuda_matmul_cache_keys_on_mode(void **state) {
    (void)state;
    cg_test_require_gpu();
    int64_t as[2] = {33, 4099}, bs[2] = {4099, 17}, os[2] = {33, 17};
    cg_tensor *a = cuda_rand(2, as, 11, CG_F32, false), *b = cuda_rand(2, bs, 12, CG_F32, false);
    cg_tensor *o = cg_tensor_empty(cg_step_arena(CG_CUDA(0)), CG_F32, 2, os);
    assert_non_null(o);
    uint64_t h0, m0, h, m;
    bool old = cg_set_deterministic(true);
    cg_matmul_cuda_cache_stats(&h0, &m0);
    assert_ok(cg_matmul_into(o, a, b, false, false, 1.0f, 0.0f)); /* new shape: a miss */
    assert_ok(cg_matmul_into(o, a, b, false, false, 1.0f, 0.0f)); /* a hit */
    cg_matmul_cuda_cache_stats(&h, &m);
    assert_int_equal(m - m0, 1);
    assert_int_equal(h - h0, 1);
    cg_set_deterministic(false);
    assert_ok(cg_matmul_into(o, a, b, false, false, 1.0f, 0.0f)); /* the other mode: a miss */
    cg_set_deterministic(true);
    assert_ok(cg_matmul_into(o, a, b, false, false, 1.0f, 0.0f)); /* back: a hit */
    cg_matmul_cuda_cache_stats(&h, &m);
    assert_int_equal(m - m0, 2);
    assert_int_equal(h - h0, 2);
    assert_ok(cg_device_synchronize(CG_CUDA(0)));
    cg_set_deterministic(old);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_deterministic_switch_round_trips, cg_test_teardown),
        cmocka_unit_test_teardown(test_cuda_results_repeat_bitwise, cg_test_teardown),
        cmocka_unit_test_teardown(test_cuda_matmul_cache_keys_on_mode, cg_test_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
