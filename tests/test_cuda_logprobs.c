/* cg_token_logprobs on CUDA tensors (cuda/nn_logprobs.cu) against the same op on CPU tensors (the reference),
 * forward and backward (dhidden, dweight), on random inputs: N = 1, 7, 300; C = 64, 96; V = 100, 1000, 50257;
 * chunk 0 (the default 4096), 64 and one that does not divide V; f32 and bf16; tokens at the chunk edges
 * (0, V - 1, multiples of the chunk and the entry before one). Then i32 tokens with a 3-d hidden, a bf16
 * hidden with an f32 weight, a frozen weight, and the argument checks on GPU tensors. Every test skips without
 * a GPU (fails under CG_REQUIRE_GPU=1, `make test-gpu`).
 *
 * Tolerances, element by element, with M = the largest |CPU value| of the array:
 *   f32 (TF32 off for these tests): |gpu - cpu| <= 1e-5 * (|cpu| + M)
 *   bf16 inputs (rounded to bf16 on both sides), forward: 1e-4 * (|cpu| + M) (the logits are f32 on both
 *   sides: only the summation order differs); gradients: 1.5e-2 * (|cpu| + M) (the GPU rounds dlogits to bf16
 *   before the two gradient matmuls; the sums are f32). */
#include "test_util.h"

#define F32_TOL 1e-5
#define BF16_FWD_TOL 1e-4
#define BF16_GRAD_TOL 1.5e-2

static void expect_close_at(const char *what, const cg_tensor *gpu, const cg_tensor *cpu, double tol,
                            const char *file, int line) {
    assert_non_null(gpu);
    assert_non_null(cpu);
    assert_true(cg_same_shape(gpu, cpu));
    assert_ok(cg_device_synchronize(gpu->device));
    const cg_tensor *g = cg_tensor_to(cg_step_arena(CG_CPU), gpu, CG_F32);
    const cg_tensor *c = cg_tensor_to(cg_step_arena(CG_CPU), cpu, CG_F32);
    assert_non_null(g);
    assert_non_null(c);
    const float *gv = cg_data(g), *cv = cg_data(c);
    int64_t n = cg_numel(c);
    double m = 0.0;
    for (int64_t i = 0; i < n; i++)
        if (fabs(cv[i]) > m) m = fabs(cv[i]);
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)gv[i] - (double)cv[i]);
        if (!(d <= tol * (fabs(cv[i]) + m))) {
            print_error("%s element %lld of %lld: gpu %.9g, cpu %.9g (tolerance %g * (|cpu| + %g))\n", what,
                        (long long)i, (long long)n, gv[i], cv[i], tol, m);
            _fail(file, line);
        }
    }
}
#define expect_close(what, gpu, cpu, tol) expect_close_at(what, gpu, cpu, tol, __FILE__, __LINE__)

/* A CPU f32 tensor of random values in [-scale, scale), rounded to bf16 values when dt is bf16 (so the CPU
 * reference sees exactly what the GPU does), optionally a gradient leaf. */
static cg_tensor *rand_leaf(int nd, const int64_t *shape, uint64_t seed, float scale, cg_dtype dt, bool grad) {
    cg_tensor *t = cg_test_rand_tensor(nd, shape, seed, scale, 0.0f, false);
    float *v = cg_data(t);
    if (dt == CG_BF16)
        for (int64_t i = 0; i < cg_numel(t); i++) v[i] = cg_bf16_to_f32(cg_f32_to_bf16(v[i]));
    if (grad) assert_ok(cg_set_requires_grad(t, true));
    return t;
}

/* A CUDA copy (dtype dt) of a CPU tensor, a gradient leaf if the original is one. */
static cg_tensor *to_cuda(const cg_tensor *h, cg_dtype dt) {
    cg_tensor *d = cg_tensor_to(cg_step_arena(CG_CUDA(0)), h, dt);
    assert_non_null(d);
    if (h->requires_grad) assert_ok(cg_set_requires_grad(d, true));
    return d;
}

/* N tokens in [0, V): the chunk edges first (0, V - 1, chunk, chunk - 1, 2 chunk, ...), then spread values;
 * `rot` rotates the list so that N = 1 also meets every edge across the cases. */
static cg_tensor *edge_tokens(int64_t N, int64_t V, int64_t chunk, int rot) {
    int64_t edges[6] = {0, V - 1, chunk % V, (chunk - 1) % V, (2 * chunk) % V, (V / chunk) * chunk % V};
    int64_t shape[1] = {N};
    cg_tensor *t = cg_tensor_empty(cg_step_arena(CG_CPU), CG_I64, 1, shape);
    assert_non_null(t);
    int64_t *tv = cg_data(t);
    for (int64_t n = 0; n < N; n++) {
        int64_t k = (n + rot) % 12;
        tv[n] = k < 6 ? edges[k] : (n * 7919 + 13 * rot) % V;
    }
    return t;
}

static void test_token_logprobs_matches_cpu(void **state) {
    (void)state;
    cg_test_require_gpu();
    static const int64_t Ns[3] = {1, 7, 300}, Cs[2] = {64, 96}, Vs[3] = {100, 1000, 50257};
    static const int64_t odd_chunk[3] = {30, 300, 5000}; /* none divides its V */
    const cg_dtype dts[2] = {CG_F32, CG_BF16};
    bool tf32 = cg_matmul_set_tf32(false); /* full fp32 products for the f32 comparison */
    int rot = 0;
    for (int di = 0; di < 2; di++)
        for (int vi = 0; vi < 3; vi++)
            for (int ci = 0; ci < 2; ci++)
                for (int ni = 0; ni < 3; ni++)
                    for (int ki = 0; ki < 3; ki++) {
                        cg_dtype dt = dts[di];
                        int64_t N = Ns[ni], C = Cs[ci], V = Vs[vi];
                        int64_t chunk = ki == 0 ? 0 : ki == 1 ? 64 : odd_chunk[vi];
                        int64_t eff = chunk == 0 ? (V < 4096 ? V : 4096) : chunk;
                        int64_t hs[2] = {N, C}, ws[2] = {V, C}, gs[1] = {N};
                        cg_tensor *h = rand_leaf(2, hs, 11 + ni + 3 * ci, 1.0f, dt, true);
                        cg_tensor *w = rand_leaf(2, ws, 21 + vi + 3 * ci, 0.5f, dt, true);
                        cg_tensor *g = rand_leaf(1, gs, 31 + ni, 1.0f, CG_F32, false);
                        cg_tensor *t = edge_tokens(N, V, eff, rot++);
                        cg_tensor *hd = to_cuda(h, dt), *wd = to_cuda(w, dt);
                        cg_tensor *td = cg_tensor_clone(cg_step_arena(CG_CUDA(0)), t);
                        assert_non_null(td);

                        cg_tensor *oc = cg_token_logprobs(h, w, t, chunk), *od = cg_token_logprobs(hd, wd, td, chunk);
                        assert_non_null(oc);
                        assert_non_null(od);
                        assert_int_equal(od->dtype, CG_F32);
                        assert_true(od->device.type == CG_DEVICE_CUDA);
                        expect_close("token_logprobs out", od, oc, dt == CG_F32 ? F32_TOL : BF16_FWD_TOL);
                        assert_ok(cg_backward_with_grad(oc, g));
                        assert_ok(cg_backward_with_grad(od, to_cuda(g, CG_F32)));
                        double gtol = dt == CG_F32 ? F32_TOL : BF16_GRAD_TOL;
                        expect_close("token_logprobs dhidden", hd->grad, h->grad, gtol);
                        expect_close("token_logprobs dweight", wd->grad, w->grad, gtol);
                        cg_step_end();
                    }
    cg_matmul_set_tf32(tf32);
}

/* A 3-d hidden with i32 tokens; a bf16 hidden with an f32 weight (computed in f32); a frozen weight (no
 * dweight). */
static void test_token_logprobs_layouts_on_cuda(void **state) {
    (void)state;
    cg_test_require_gpu();
    bool tf32 = cg_matmul_set_tf32(false);
    int64_t hs[3] = {2, 5, 96}, ws[2] = {1000, 96}, ts[2] = {2, 5};
    int32_t tv[10] = {0, 999, 64, 63, 128, 500, 1, 998, 256, 7};
    for (int kind = 0; kind < 2; kind++) {
        cg_dtype hdt = kind == 0 ? CG_F32 : CG_BF16;
        cg_tensor *h = rand_leaf(3, hs, 41, 1.0f, hdt, true);
        cg_tensor *w = rand_leaf(2, ws, 42, 0.5f, CG_F32, kind == 0);
        cg_tensor *g = rand_leaf(2, ts, 43, 1.0f, CG_F32, false);
        cg_tensor *t = cg_tensor_from_data(cg_step_arena(CG_CPU), CG_I32, 2, ts, tv);
        cg_tensor *td = cg_tensor_clone(cg_step_arena(CG_CUDA(0)), t);
        assert_non_null(td);
        cg_tensor *hd = to_cuda(h, hdt), *wd = to_cuda(w, CG_F32);
        cg_tensor *oc = cg_token_logprobs(h, w, t, 64), *od = cg_token_logprobs(hd, wd, td, 64);
        assert_non_null(od);
        assert_int_equal(od->ndim, 2);
        assert_int_equal(od->shape[1], 5);
        expect_close("token_logprobs 3-d out", od, oc, F32_TOL);
        assert_ok(cg_backward_with_grad(oc, g));
        assert_ok(cg_backward_with_grad(od, to_cuda(g, CG_F32)));
        expect_close("token_logprobs 3-d dhidden", hd->grad, h->grad, F32_TOL);
        if (kind == 0)
            expect_close("token_logprobs 3-d dweight", wd->grad, w->grad, F32_TOL);
        else
            assert_null(wd->grad);
        cg_step_end();
    }
    cg_matmul_set_tf32(tf32);
}

static void test_token_logprobs_errors_on_cuda(void **state) {
    (void)state;
    cg_test_require_gpu();
    int64_t hs[2] = {4, 8}, ws[2] = {10, 8}, ts[1] = {4};
    int64_t tv[4] = {0, 9, 3, 5};
    cg_tensor *h = cg_test_rand_tensor(2, hs, 51, 1.0f, 0.0f, false), *w = cg_test_rand_tensor(2, ws, 52, 1.0f, 0.0f, false);
    cg_tensor *t = cg_tensor_from_data(cg_step_arena(CG_CPU), CG_I64, 1, ts, tv);
    cg_tensor *hd = to_cuda(h, CG_BF16), *wd = to_cuda(w, CG_BF16);
    cg_tensor *td = cg_tensor_clone(cg_step_arena(CG_CUDA(0)), t);
    assert_non_null(td);
    assert_non_null(cg_token_logprobs(hd, wd, td, 3));
    /* a token out of range is refused, naming it, also when the tokens live on the GPU */
    tv[2] = 10;
    td = cg_tensor_clone(cg_step_arena(CG_CUDA(0)), t);
    assert_null(cg_token_logprobs(hd, wd, td, 3));
    assert_error_contains("token_logprobs: token 10 at row 2 is outside [0, 10)");
    tv[2] = 3;
    td = cg_tensor_clone(cg_step_arena(CG_CUDA(0)), t);
    /* mixed devices, a wrong dtype, tokens on the CPU */
    assert_null(cg_token_logprobs(h, wd, td, 0));
    assert_error_contains("different devices");
    cg_tensor *wh = cg_tensor_to(cg_step_arena(CG_CUDA(0)), w, CG_F16);
    assert_non_null(wh);
    assert_null(cg_token_logprobs(hd, wh, td, 0));
    assert_error_contains("must be f32 or bf16 on a GPU");
    assert_null(cg_token_logprobs(hd, wd, t, 0));
    assert_error_contains("different devices");
    assert_null(cg_token_logprobs(hd, wd, td, -1));
    assert_error_contains("chunk_size -1 is negative");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_token_logprobs_matches_cpu, cg_test_teardown),
        cmocka_unit_test_teardown(test_token_logprobs_layouts_on_cuda, cg_test_teardown),
        cmocka_unit_test_teardown(test_token_logprobs_errors_on_cuda, cg_test_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
