/* The CUDA nn kernels (cuda/nn.h) against the CPU kernels (core/nn_*.h) on the same random inputs, forward
 * and backward, in f32 and bf16, over several shapes including odd ones; then the autograd ops end to end on
 * CUDA tensors against the same ops on CPU tensors. Every test skips without a GPU (fails under
 * CG_REQUIRE_GPU=1, `make test-gpu`).
 *
 * Tolerances, element by element, with M = the largest |CPU value| of the array:
 *   f32:  |gpu - cpu| <= 2e-5 * (|cpu| + M)   (f32 accumulation on the GPU against the CPU's double sums)
 *   bf16: |gpu - cpu| <= 1.5e-2 * (|cpu| + M) (inputs rounded to bf16 on both sides; the GPU stores its
 *         outputs, and intermediate sums such as the residual add, in bf16) */
#include "test_util.h"

#include "core/nn_activation.h"
#include "core/nn_attention.h"
#include "core/nn_norm.h"
#include "core/nn_softmax.h"
#ifdef CG_HAVE_CUDA
#include "cuda/nn.h"
#endif

#define F32_TOL 2e-5
#define BF16_TOL 1.5e-2

static const cg_dtype DTYPES[2] = {CG_F32, CG_BF16};

/* ------------------------------------------------------------------ helpers */

#ifdef CG_HAVE_CUDA /* the raw-kernel helpers: only the kernel tests (CUDA builds) use them */
/* n floats in [-1, 1) * scale + shift on the host (rounded to bf16 values when dt is bf16, so that the CPU
 * reference sees exactly what the GPU does). */
static float *host_rand(int64_t n, uint64_t seed, float scale, float shift, cg_dtype dt) {
    int64_t shape[1] = {n > 0 ? n : 1};
    cg_tensor *t = cg_tensor_empty(cg_step_arena(CG_CPU), CG_F32, 1, shape);
    assert_non_null(t);
    float *v = cg_data(t);
    seed = seed * 2654435761u + 12345u;
    for (int64_t i = 0; i < n; i++) {
        v[i] = cg_test_randf(&seed) * scale + shift;
        if (dt == CG_BF16) v[i] = cg_bf16_to_f32(cg_f32_to_bf16(v[i]));
    }
    return v;
}

static float *host_zeros(int64_t n) {
    int64_t shape[1] = {n > 0 ? n : 1};
    cg_tensor *t = cg_tensor_zeros(cg_step_arena(CG_CPU), CG_F32, 1, shape);
    assert_non_null(t);
    return cg_data(t);
}

/* A device array of n elements of dt holding the host floats (converted). */
static void *upload(const float *h, int64_t n, cg_dtype dt) {
    int64_t shape[1] = {n > 0 ? n : 1};
    cg_tensor *ht = cg_tensor_from_data(cg_step_arena(CG_CPU), CG_F32, 1, shape, h);
    assert_non_null(ht);
    cg_tensor *d = cg_tensor_empty(cg_step_arena(CG_CUDA(0)), dt, 1, shape);
    assert_non_null(d);
    assert_ok(cg_copy(d, ht));
    assert_ok(cg_device_synchronize(CG_CUDA(0)));
    return cg_data(d);
}

static void *dev_empty(int64_t n, cg_dtype dt) {
    int64_t shape[1] = {n > 0 ? n : 1};
    cg_tensor *d = cg_tensor_empty(cg_step_arena(CG_CUDA(0)), dt, 1, shape);
    assert_non_null(d);
    return cg_data(d);
}

static int64_t *upload_i64(const int64_t *h, int64_t n) {
    int64_t shape[1] = {n > 0 ? n : 1};
    cg_tensor *d = cg_tensor_from_data(cg_step_arena(CG_CUDA(0)), CG_I64, 1, shape, h);
    assert_non_null(d);
    assert_ok(cg_device_synchronize(CG_CUDA(0)));
    return cg_data(d);
}

/* The n elements of dt at device pointer p, as host floats (after the GPU has finished). */
static float *download(const void *p, int64_t n, cg_dtype dt) {
    int64_t shape[1] = {n > 0 ? n : 1};
    assert_ok(cg_device_synchronize(CG_CUDA(0)));
    cg_tensor *d = cg_tensor_wrap(cg_step_arena(CG_CPU), dt, CG_CUDA(0), 1, shape, (void *)p);
    assert_non_null(d);
    cg_tensor *h = cg_tensor_to(cg_step_arena(CG_CPU), d, CG_F32);
    assert_non_null(h);
    return cg_data(h);
}

#endif

static void expect_close_at(const char *what, const float *gpu, const float *cpu, int64_t n, cg_dtype dt,
                            const char *file, int line) {
    double m = 0.0, tol = dt == CG_F32 ? F32_TOL : BF16_TOL;
    for (int64_t i = 0; i < n; i++)
        if (isfinite(cpu[i]) && fabs(cpu[i]) > m) m = fabs(cpu[i]);
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)gpu[i] - (double)cpu[i]);
        if (isinf(cpu[i]) && gpu[i] == cpu[i]) continue; /* lse = +inf of a row that sees no key */
        if (!(d <= tol * (fabs(cpu[i]) + m))) {
            print_error("%s [%s] element %lld of %lld: gpu %.9g, cpu %.9g (tolerance %g * (|cpu| + %g))\n", what,
                        cg_dtype_name(dt), (long long)i, (long long)n, gpu[i], cpu[i], tol, m);
            _fail(file, line);
        }
    }
}
#define expect_close(what, gpu, cpu, n, dt) expect_close_at(what, gpu, cpu, n, dt, __FILE__, __LINE__)

/* ------------------------------------------------------------------ norms */

#ifdef CG_HAVE_CUDA
static const int64_t NORM_SHAPES[][2] = {{1, 7}, {3, 7}, {5, 769}, {64, 768}, {17, 1}, {300, 1000}, {2048, 768}};
#endif

static void test_layernorm_matches_cpu(void **state) {
    (void)state;
    cg_test_require_gpu();
#ifdef CG_HAVE_CUDA
    for (size_t si = 0; si < sizeof NORM_SHAPES / sizeof NORM_SHAPES[0]; si++)
        for (int di = 0; di < 2; di++)
            for (int affine = 0; affine < 2; affine++) {
                cg_dtype dt = DTYPES[di];
                int64_t N = NORM_SHAPES[si][0], C = NORM_SHAPES[si][1];
                float *x = host_rand(N * C, 1 + si, 2.0f, 0.5f, dt), *dout = host_rand(N * C, 2 + si, 1.0f, 0.0f, dt);
                float *w = affine ? host_rand(C, 3, 0.5f, 1.0f, dt) : NULL, *b = affine ? host_rand(C, 4, 0.5f, 0.0f, dt) : NULL;
                float *out = host_zeros(N * C), *mean = host_zeros(N), *rstd = host_zeros(N);
                float *dx = host_zeros(N * C), *dw = host_zeros(C), *db = host_zeros(C);
                cg_cpu_layernorm_forward(out, mean, rstd, x, w, b, N, C, 1e-5f);
                cg_cpu_layernorm_backward(dx, affine ? dw : NULL, affine ? db : NULL, dout, x, w, mean, rstd, N, C);

                void *gx = upload(x, N * C, dt), *gdout = upload(dout, N * C, dt);
                void *gw = affine ? upload(w, C, dt) : NULL, *gb = affine ? upload(b, C, dt) : NULL;
                void *gout = dev_empty(N * C, dt), *gdx = dev_empty(N * C, dt), *gdw = dev_empty(C, dt),
                     *gdb = dev_empty(C, dt);
                float *gmean = dev_empty(N, CG_F32), *grstd = dev_empty(N, CG_F32);
                float *ws = dev_empty((int64_t)cg_cuda_norm_backward_workspace(N, C), CG_F32);
                assert_ok(cg_cuda_layernorm_forward(dt, gout, gmean, grstd, gx, gw, gb, N, C, 1e-5f));
                /* the backward reads the CPU's statistics (uploaded) so that it is tested on its own */
                float *cmean = upload(mean, N, CG_F32), *crstd = upload(rstd, N, CG_F32);
                assert_ok(cg_cuda_layernorm_backward(dt, gdx, affine ? gdw : NULL, affine ? gdb : NULL, gdout, gx, gw,
                                                     cmean, crstd, N, C, ws));
                expect_close("layernorm out", download(gout, N * C, dt), out, N * C, dt);
                expect_close("layernorm mean", download(gmean, N, CG_F32), mean, N, CG_F32);
                expect_close("layernorm rstd", download(grstd, N, CG_F32), rstd, N, dt);
                expect_close("layernorm dx", download(gdx, N * C, dt), dx, N * C, dt);
                if (affine) {
                    expect_close("layernorm dweight", download(gdw, C, dt), dw, C, dt);
                    expect_close("layernorm dbias", download(gdb, C, dt), db, C, dt);
                }
                cg_step_end();
            }
#endif
}

static void test_rmsnorm_matches_cpu(void **state) {
    (void)state;
    cg_test_require_gpu();
#ifdef CG_HAVE_CUDA
    for (size_t si = 0; si < sizeof NORM_SHAPES / sizeof NORM_SHAPES[0]; si++)
        for (int di = 0; di < 2; di++) {
            cg_dtype dt = DTYPES[di];
            int64_t N = NORM_SHAPES[si][0], C = NORM_SHAPES[si][1];
            float *x = host_rand(N * C, 11 + si, 2.0f, 0.3f, dt), *dout = host_rand(N * C, 12 + si, 1.0f, 0.0f, dt);
            float *w = host_rand(C, 13, 0.5f, 1.0f, dt);
            float *out = host_zeros(N * C), *rstd = host_zeros(N), *dx = host_zeros(N * C), *dw = host_zeros(C);
            cg_cpu_rmsnorm_forward(out, rstd, x, w, N, C, 1e-6f);
            cg_cpu_rmsnorm_backward(dx, dw, dout, x, w, rstd, N, C);

            void *gx = upload(x, N * C, dt), *gdout = upload(dout, N * C, dt), *gw = upload(w, C, dt);
            void *gout = dev_empty(N * C, dt), *gdx = dev_empty(N * C, dt), *gdw = dev_empty(C, dt);
            float *grstd = dev_empty(N, CG_F32);
            float *ws = dev_empty((int64_t)cg_cuda_norm_backward_workspace(N, C), CG_F32);
            assert_ok(cg_cuda_rmsnorm_forward(dt, gout, grstd, gx, gw, N, C, 1e-6f));
            assert_ok(cg_cuda_rmsnorm_backward(dt, gdx, gdw, gdout, gx, gw, upload(rstd, N, CG_F32), N, C, ws));
            expect_close("rmsnorm out", download(gout, N * C, dt), out, N * C, dt);
            expect_close("rmsnorm rstd", download(grstd, N, CG_F32), rstd, N, dt);
            expect_close("rmsnorm dx", download(gdx, N * C, dt), dx, N * C, dt);
            expect_close("rmsnorm dweight", download(gdw, C, dt), dw, C, dt);
            cg_step_end();
        }
#endif
}

static void test_residual_norm_matches_cpu(void **state) {
    (void)state;
    cg_test_require_gpu();
#ifdef CG_HAVE_CUDA
    for (size_t si = 0; si < sizeof NORM_SHAPES / sizeof NORM_SHAPES[0]; si++)
        for (int di = 0; di < 2; di++)
            for (int rms = 0; rms < 2; rms++) {
                cg_dtype dt = DTYPES[di];
                int64_t N = NORM_SHAPES[si][0], C = NORM_SHAPES[si][1];
                float *x = host_rand(N * C, 21 + si, 1.0f, 0.0f, dt), *r = host_rand(N * C, 22 + si, 2.0f, 0.2f, dt);
                float *w = host_rand(C, 23, 0.5f, 1.0f, dt), *b = host_rand(C, 24, 0.5f, 0.0f, dt);
                float *sum = host_zeros(N * C), *out = host_zeros(N * C), *mean = host_zeros(N), *rstd = host_zeros(N);
                cg_cpu_residual_norm_forward(sum, out, mean, rstd, x, r, w, b, N, C, 1e-5f, rms);
                void *gsum = dev_empty(N * C, dt), *gout = dev_empty(N * C, dt);
                float *gmean = dev_empty(N, CG_F32), *grstd = dev_empty(N, CG_F32);
                assert_ok(cg_cuda_residual_norm_forward(dt, gsum, gout, rms ? NULL : gmean, grstd, upload(x, N * C, dt),
                                                        upload(r, N * C, dt), upload(w, C, dt), upload(b, C, dt), N, C,
                                                        1e-5f, rms));
                expect_close("residual_norm sum", download(gsum, N * C, dt), sum, N * C, dt);
                expect_close("residual_norm out", download(gout, N * C, dt), out, N * C, dt);
                expect_close("residual_norm rstd", download(grstd, N, CG_F32), rstd, N, dt);
                if (!rms) expect_close("residual_norm mean", download(gmean, N, CG_F32), mean, N, dt);
                cg_step_end();
            }
#endif
}

/* The column sums of the norm backward are deterministic: two runs give the same bits. */
static void test_norm_weight_grad_is_deterministic(void **state) {
    (void)state;
    cg_test_require_gpu();
#ifdef CG_HAVE_CUDA
    int64_t N = 4099, C = 769;
    float *x = host_rand(N * C, 31, 1.0f, 0.0f, CG_F32), *dout = host_rand(N * C, 32, 1.0f, 0.0f, CG_F32);
    float *mean = host_zeros(N), *rstd = host_zeros(N), *out = host_zeros(N * C);
    cg_cpu_layernorm_forward(out, mean, rstd, x, NULL, NULL, N, C, 1e-5f);
    void *gx = upload(x, N * C, CG_F32), *gd = upload(dout, N * C, CG_F32);
    float *gm = upload(mean, N, CG_F32), *gr = upload(rstd, N, CG_F32);
    float *ws = dev_empty((int64_t)cg_cuda_norm_backward_workspace(N, C), CG_F32);
    void *dw1 = dev_empty(C, CG_F32), *dw2 = dev_empty(C, CG_F32);
    assert_ok(cg_cuda_layernorm_backward(CG_F32, NULL, dw1, NULL, gd, gx, NULL, gm, gr, N, C, ws));
    assert_ok(cg_cuda_layernorm_backward(CG_F32, NULL, dw2, NULL, gd, gx, NULL, gm, gr, N, C, ws));
    float *a = download(dw1, C, CG_F32), *b = download(dw2, C, CG_F32);
    assert_memory_equal(a, b, sizeof(float) * (size_t)C);
#endif
}

/* ------------------------------------------------------------------ activations */

#ifdef CG_HAVE_CUDA
static const int64_t ACT_SIZES[] = {1, 7, 769, 100003};
#endif

static void test_activations_match_cpu(void **state) {
    (void)state;
    cg_test_require_gpu();
#ifdef CG_HAVE_CUDA
    for (size_t si = 0; si < sizeof ACT_SIZES / sizeof ACT_SIZES[0]; si++)
        for (int di = 0; di < 2; di++) {
            cg_dtype dt = DTYPES[di];
            int64_t n = ACT_SIZES[si];
            float *x = host_rand(n, 41 + si, 4.0f, 0.0f, dt), *up = host_rand(n, 42 + si, 2.0f, 0.0f, dt);
            float *dy = host_rand(n, 43 + si, 1.0f, 0.0f, dt);
            float *gelu = host_zeros(n), *silu = host_zeros(n), *dgelu = host_zeros(n), *dsilu = host_zeros(n);
            float *sw = host_zeros(n), *dgate = host_zeros(n), *dup = host_zeros(n);
            for (int64_t i = 0; i < n; i++) {
                gelu[i] = cg_gelu_tanh_f32(x[i]);
                silu[i] = x[i] / (1.0f + expf(-x[i]));
            }
            cg_cpu_gelu_backward(dgelu, x, dy, n);
            cg_cpu_silu_backward(dsilu, x, dy, n);
            cg_cpu_swiglu_forward(sw, x, up, n);
            cg_cpu_swiglu_backward(dgate, dup, x, up, dy, n);

            void *gx = upload(x, n, dt), *gup = upload(up, n, dt), *gdy = upload(dy, n, dt);
            void *o1 = dev_empty(n, dt), *o2 = dev_empty(n, dt), *o3 = dev_empty(n, dt), *o4 = dev_empty(n, dt);
            void *o5 = dev_empty(n, dt), *o6 = dev_empty(n, dt), *o7 = dev_empty(n, dt);
            assert_ok(cg_cuda_gelu_forward(dt, o1, gx, n));
            assert_ok(cg_cuda_silu_forward(dt, o2, gx, n));
            assert_ok(cg_cuda_gelu_backward(dt, o3, gx, gdy, n));
            assert_ok(cg_cuda_silu_backward(dt, o4, gx, gdy, n));
            assert_ok(cg_cuda_swiglu_forward(dt, o5, gx, gup, n));
            assert_ok(cg_cuda_swiglu_backward(dt, o6, o7, gx, gup, gdy, n));
            expect_close("gelu", download(o1, n, dt), gelu, n, dt);
            expect_close("silu", download(o2, n, dt), silu, n, dt);
            expect_close("gelu backward", download(o3, n, dt), dgelu, n, dt);
            expect_close("silu backward", download(o4, n, dt), dsilu, n, dt);
            expect_close("swiglu", download(o5, n, dt), sw, n, dt);
            expect_close("swiglu dgate", download(o6, n, dt), dgate, n, dt);
            expect_close("swiglu dup", download(o7, n, dt), dup, n, dt);
            cg_step_end();
        }
#endif
}

static void test_rope_matches_cpu(void **state) {
    (void)state;
    cg_test_require_gpu();
#ifdef CG_HAVE_CUDA
    static const int64_t shapes[][4] = {{1, 1, 1, 2}, {2, 3, 65, 64}, {1, 4, 7, 128}, {2, 2, 33, 96}};
    cg_rope_config plain = {.theta = 10000.0f};
    cg_rope_config llama3 = {.theta = 500000.0f, .scaling_factor = 8.0f, .low_freq_factor = 1.0f,
                             .high_freq_factor = 4.0f, .original_max_pos = 8192};
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++)
        for (int di = 0; di < 2; di++)
            for (int variant = 0; variant < 3; variant++) {
                cg_dtype dt = DTYPES[di];
                int64_t B = shapes[si][0], H = shapes[si][1], T = shapes[si][2], D = shapes[si][3], n = B * H * T * D;
                const cg_rope_config *cfg = variant == 1 ? &llama3 : &plain;
                int64_t offset = variant == 0 ? 5 : 0;
                int64_t *pos = NULL, *gpos = NULL;
                if (variant == 2) { /* explicit positions, some of them large */
                    pos = (int64_t *)host_zeros(2 * B * T);
                    for (int64_t i = 0; i < B * T; i++) pos[i] = (i * 7919) % 20000;
                    gpos = upload_i64(pos, B * T);
                }
                float *x = host_rand(n, 51 + si, 1.0f, 0.0f, dt), *out = host_zeros(n), *back = host_zeros(n);
                cg_cpu_rope_forward(out, x, B, H, T, D, cfg, offset, pos);
                cg_cpu_rope_backward(back, x, B, H, T, D, cfg, offset, pos);
                void *gx = upload(x, n, dt), *go = dev_empty(n, dt), *gb = dev_empty(n, dt);
                assert_ok(cg_cuda_rope_forward(dt, go, gx, B, H, T, D, cfg, offset, gpos));
                assert_ok(cg_cuda_rope_backward(dt, gb, gx, B, H, T, D, cfg, offset, gpos));
                expect_close("rope", download(go, n, dt), out, n, dt);
                expect_close("rope backward", download(gb, n, dt), back, n, dt);
                /* in place, as the CPU kernel allows */
                assert_ok(cg_cuda_rope_forward(dt, gx, gx, B, H, T, D, cfg, offset, gpos));
                expect_close("rope in place", download(gx, n, dt), out, n, dt);
                cg_step_end();
            }
#endif
}

/* ------------------------------------------------------------------ softmax, cross-entropy */

static void test_softmax_matches_cpu(void **state) {
    (void)state;
    cg_test_require_gpu();
#ifdef CG_HAVE_CUDA
    static const int64_t shapes[][3] = {{1, 7, 1}, {3, 769, 1}, {64, 1024, 1}, {2, 5, 3}, {1, 1, 1}, {8, 50304, 1}};
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++)
        for (int di = 0; di < 2; di++)
            for (int log = 0; log < 2; log++) {
                cg_dtype dt = DTYPES[di];
                int64_t outer = shapes[si][0], dim = shapes[si][1], inner = shapes[si][2], n = outer * dim * inner;
                float *x = host_rand(n, 61 + si, 8.0f, 100.0f, dt), *dy = host_rand(n, 62 + si, 1.0f, 0.0f, dt);
                float *y = host_zeros(n), *dx = host_zeros(n);
                if (log) cg_cpu_log_softmax_forward(y, x, outer, dim, inner);
                else cg_cpu_softmax_forward(y, x, outer, dim, inner);
                void *gx = upload(x, n, dt), *gy = dev_empty(n, dt), *gdx = dev_empty(n, dt);
                if (log) assert_ok(cg_cuda_log_softmax_forward(dt, gy, gx, outer, dim, inner));
                else assert_ok(cg_cuda_softmax_forward(dt, gy, gx, outer, dim, inner));
                expect_close(log ? "log_softmax" : "softmax", download(gy, n, dt), y, n, dt);
                /* the backward from the CPU's y rounded to dt, the same on both sides */
                float *yr = host_zeros(n);
                for (int64_t i = 0; i < n; i++) yr[i] = dt == CG_BF16 ? cg_bf16_to_f32(cg_f32_to_bf16(y[i])) : y[i];
                if (log) cg_cpu_log_softmax_backward(dx, yr, dy, outer, dim, inner);
                else cg_cpu_softmax_backward(dx, yr, dy, outer, dim, inner);
                void *gyr = upload(yr, n, dt), *gdy = upload(dy, n, dt);
                if (log) assert_ok(cg_cuda_log_softmax_backward(dt, gdx, gyr, gdy, outer, dim, inner));
                else assert_ok(cg_cuda_softmax_backward(dt, gdx, gyr, gdy, outer, dim, inner));
                expect_close(log ? "log_softmax backward" : "softmax backward", download(gdx, n, dt), dx, n, dt);
                cg_step_end();
            }
#endif
}

static void test_cross_entropy_matches_cpu(void **state) {
    (void)state;
    cg_test_require_gpu();
#ifdef CG_HAVE_CUDA
    static const int64_t shapes[][2] = {{1, 7}, {5, 769}, {33, 50304}, {300, 1000}};
    const int64_t ignore = -100;
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++)
        for (int di = 0; di < 2; di++)
            for (int smooth = 0; smooth < 2; smooth++) {
                cg_dtype dt = DTYPES[di];
                int64_t N = shapes[si][0], V = shapes[si][1];
                float ls = smooth ? 0.1f : 0.0f;
                float *x = host_rand(N * V, 71 + si, 6.0f, 0.0f, dt);
                int64_t *t = (int64_t *)host_zeros(2 * N), count = 0;
                uint64_t s = 99 + si;
                for (int64_t n = 0; n < N; n++) {
                    t[n] = (n % 4 == 3) ? ignore : (int64_t)((cg_test_randf(&s) + 1.0f) * 0.5f * (float)V) % V;
                    count += t[n] != ignore;
                }
                float *loss = host_zeros(N), *lse = host_zeros(N), *dx = host_zeros(N * V);
                float dloss = 0.75f, scale = count ? 1.0f / (float)count : 0.0f;
                cg_cpu_cross_entropy_forward(loss, lse, x, t, N, V, ignore, ls);
                cg_cpu_cross_entropy_backward(dx, x, lse, t, N, V, ignore, ls, scale * dloss);
                double mean = 0.0;
                for (int64_t n = 0; n < N; n++) mean += loss[n];
                float mean_f = count ? (float)(mean / (double)count) : 0.0f;

                void *gx = upload(x, N * V, dt), *gdx = dev_empty(N * V, dt);
                int64_t *gt = upload_i64(t, N);
                float *gloss = dev_empty(N, CG_F32), *glse = dev_empty(N, CG_F32), *gmean = dev_empty(1, CG_F32);
                float *gdl = upload(&dloss, 1, CG_F32);
                assert_ok(cg_cuda_cross_entropy_forward(dt, gloss, glse, gx, gt, N, V, ignore, ls));
                assert_ok(cg_cuda_mean_loss(gmean, gloss, N, count));
                assert_ok(cg_cuda_cross_entropy_backward(dt, gdx, gx, upload(lse, N, CG_F32), gt, N, V, ignore, ls,
                                                         scale, gdl));
                expect_close("cross_entropy row loss", download(gloss, N, CG_F32), loss, N, CG_F32);
                expect_close("cross_entropy lse", download(glse, N, CG_F32), lse, N, CG_F32);
                expect_close("cross_entropy mean", download(gmean, 1, CG_F32), &mean_f, 1, CG_F32);
                expect_close("cross_entropy dlogits", download(gdx, N * V, dt), dx, N * V, dt);
                cg_step_end();
            }
#endif
}

/* ------------------------------------------------------------------ attention */

#ifdef CG_HAVE_CUDA
typedef struct attn_case {
    int64_t B, Hq, Hkv, T, S, D;
    int masked;
} attn_case;

static const attn_case ATTN_CASES[] = {
    {1, 1, 1, 1, 1, 64, 0},    /* one query, one key */
    {2, 4, 1, 65, 65, 64, 0},  /* GQA 4:1, T not a multiple of the tiles */
    {1, 2, 2, 33, 40, 128, 1}, /* KV-cache offset (S > T) and a padding mask */
    {2, 8, 2, 64, 64, 128, 1}, /* GQA 4:1 with a mask */
    {1, 3, 1, 17, 17, 40, 0},  /* a head dim off the tuned ones */
    {1, 2, 1, 1, 70, 64, 1},   /* decoding: one query against a cache */
};
#endif

static void test_attention_matches_cpu(void **state) {
    (void)state;
    cg_test_require_gpu();
#ifdef CG_HAVE_CUDA
    for (size_t ci = 0; ci < sizeof ATTN_CASES / sizeof ATTN_CASES[0]; ci++)
        for (int di = 0; di < 2; di++) {
            const attn_case *c = &ATTN_CASES[ci];
            cg_dtype dt = DTYPES[di];
            cg_attention_dims d = {.batch = c->B, .q_heads = c->Hq, .kv_heads = c->Hkv, .q_len = c->T,
                                   .kv_len = c->S, .head_dim = c->D, .scale = (float)(1.0 / sqrt((double)c->D))};
            int64_t nq = c->B * c->Hq * c->T * c->D, nk = c->B * c->Hkv * c->S * c->D, rows = c->B * c->Hq * c->T;
            float *q = host_rand(nq, 81 + ci, 1.0f, 0.0f, dt), *k = host_rand(nk, 82 + ci, 1.0f, 0.0f, dt);
            float *v = host_rand(nk, 83 + ci, 1.0f, 0.0f, dt), *dout = host_rand(nq, 84 + ci, 1.0f, 0.0f, dt);
            uint8_t *mask = NULL, *gmask = NULL;
            if (c->masked) {
                int64_t shape[1] = {c->B * c->S};
                cg_tensor *mt = cg_tensor_empty(cg_step_arena(CG_CPU), CG_U8, 1, shape);
                mask = cg_data(mt);
                /* batch 0 left-padded by 3 keys; batch 1 with every fifth key hidden */
                for (int64_t b = 0; b < c->B; b++)
                    for (int64_t j = 0; j < c->S; j++) mask[b * c->S + j] = b == 0 ? j >= 3 : j % 5 != 4;
                cg_tensor *gm = cg_tensor_clone(cg_step_arena(CG_CUDA(0)), mt);
                assert_non_null(gm);
                gmask = cg_data(gm);
            }
            float *out = host_zeros(nq), *lse = host_zeros(rows);
            float *ws = host_zeros((int64_t)cg_cpu_attention_forward_workspace(&d, 1));
            cg_cpu_attention_forward(out, lse, q, k, v, mask, &d, 1, ws);
            /* the backward on both sides from the CPU forward's out (rounded to dt) and lse */
            float *outr = host_zeros(nq);
            for (int64_t i = 0; i < nq; i++) outr[i] = dt == CG_BF16 ? cg_bf16_to_f32(cg_f32_to_bf16(out[i])) : out[i];
            float *dq = host_zeros(nq), *dk = host_zeros(nk), *dv = host_zeros(nk);
            float *bws = host_zeros((int64_t)cg_cpu_attention_backward_workspace(&d, 1));
            cg_cpu_attention_backward(dq, dk, dv, dout, q, k, v, outr, lse, mask, &d, 1, bws);

            void *gq = upload(q, nq, dt), *gk = upload(k, nk, dt), *gv = upload(v, nk, dt);
            void *gout = dev_empty(nq, dt);
            float *glse = dev_empty(rows, CG_F32);
            assert_ok(cg_cuda_attention_forward(dt, gout, glse, gq, gk, gv, gmask, &d));
            expect_close("attention out", download(gout, nq, dt), out, nq, dt);
            expect_close("attention lse", download(glse, rows, CG_F32), lse, rows, dt);

            void *gdq = dev_empty(nq, dt), *gdk = dev_empty(nk, dt), *gdv = dev_empty(nk, dt);
            float *gws = dev_empty((int64_t)cg_cuda_attention_backward_workspace(&d), CG_F32);
            assert_ok(cg_cuda_attention_backward(dt, gdq, gdk, gdv, upload(dout, nq, dt), gq, gk, gv,
                                                 upload(outr, nq, dt), upload(lse, rows, CG_F32), gmask, &d, gws));
            expect_close("attention dq", download(gdq, nq, dt), dq, nq, dt);
            expect_close("attention dk", download(gdk, nk, dt), dk, nk, dt);
            expect_close("attention dv", download(gdv, nk, dt), dv, nk, dt);
            cg_step_end();
        }
#endif
}

/* A query row that sees no key (all masked): out 0 and lse +inf, as on the CPU, and zero gradients. */
static void test_attention_fully_masked_row(void **state) {
    (void)state;
    cg_test_require_gpu();
#ifdef CG_HAVE_CUDA
    cg_attention_dims d = {.batch = 1, .q_heads = 1, .kv_heads = 1, .q_len = 4, .kv_len = 4, .head_dim = 64,
                           .scale = 0.125f};
    int64_t n = 4 * 64;
    float *q = host_rand(n, 91, 1.0f, 0.0f, CG_F32), *kv = host_rand(n, 92, 1.0f, 0.0f, CG_F32);
    int64_t mshape[1] = {4};
    uint8_t m[4] = {0, 0, 1, 1}; /* queries 0 and 1 see only keys 0..1, both hidden */
    cg_tensor *gm = cg_tensor_from_data(cg_step_arena(CG_CUDA(0)), CG_U8, 1, mshape, m);
    assert_non_null(gm);
    void *gq = upload(q, n, CG_F32), *gkv = upload(kv, n, CG_F32), *gout = dev_empty(n, CG_F32);
    float *glse = dev_empty(4, CG_F32);
    assert_ok(cg_cuda_attention_forward(CG_F32, gout, glse, gq, gkv, gkv, cg_data(gm), &d));
    float *out = download(gout, n, CG_F32), *lse = download(glse, 4, CG_F32);
    assert_true(isinf(lse[0]) && lse[0] > 0 && isinf(lse[1]));
    assert_true(isfinite(lse[2]) && isfinite(lse[3]));
    for (int i = 0; i < 2 * 64; i++) assert_true(out[i] == 0.0f);
#endif
}

/* The decode step reads the whole KV cache with the unwritten columns masked: whatever those slots hold (NaN
 * here) must add exactly nothing, as on the CPU, which skips them (0 * NaN would be NaN). */
static void test_attention_masked_nonfinite_cache(void **state) {
    (void)state;
    cg_test_require_gpu();
#ifdef CG_HAVE_CUDA
    const int64_t S = 70, D = 128, filled = 41;
    cg_attention_dims d = {.batch = 1, .q_heads = 2, .kv_heads = 1, .q_len = 1, .kv_len = S, .head_dim = D,
                           .scale = (float)(1.0 / sqrt((double)D))};
    int64_t nq = 2 * D, nk = S * D;
    float *q = host_rand(nq, 95, 1.0f, 0.0f, CG_F32), *k = host_rand(nk, 96, 1.0f, 0.0f, CG_F32);
    float *v = host_rand(nk, 97, 1.0f, 0.0f, CG_F32), *dout = host_rand(nq, 98, 1.0f, 0.0f, CG_F32);
    for (int64_t i = filled * D; i < nk; i++) k[i] = v[i] = NAN;
    int64_t mshape[1] = {S};
    cg_tensor *mt = cg_tensor_empty(cg_step_arena(CG_CPU), CG_U8, 1, mshape);
    assert_non_null(mt);
    uint8_t *mask = cg_data(mt);
    for (int64_t j = 0; j < S; j++) mask[j] = j >= 2 && j < filled; /* two left pads, then the filled prefix */
    cg_tensor *gm = cg_tensor_clone(cg_step_arena(CG_CUDA(0)), mt);
    assert_non_null(gm);
    float *out = host_zeros(nq), *lse = host_zeros(2);
    cg_cpu_attention_forward(out, lse, q, k, v, mask, &d, 1, host_zeros((int64_t)cg_cpu_attention_forward_workspace(&d, 1)));
    for (int64_t i = 0; i < nq; i++) assert_true(isfinite(out[i]));
    float *dq = host_zeros(nq), *dk = host_zeros(nk), *dv = host_zeros(nk);
    cg_cpu_attention_backward(dq, dk, dv, dout, q, k, v, out, lse, mask, &d, 1,
                              host_zeros((int64_t)cg_cpu_attention_backward_workspace(&d, 1)));
    void *gq = upload(q, nq, CG_F32), *gk = upload(k, nk, CG_F32), *gv = upload(v, nk, CG_F32);
    void *gout = dev_empty(nq, CG_F32);
    float *glse = dev_empty(2, CG_F32);
    assert_ok(cg_cuda_attention_forward(CG_F32, gout, glse, gq, gk, gv, cg_data(gm), &d));
    expect_close("masked cache out", download(gout, nq, CG_F32), out, nq, CG_F32);
    void *gdq = dev_empty(nq, CG_F32);
    float *gws = dev_empty((int64_t)cg_cuda_attention_backward_workspace(&d), CG_F32);
    assert_ok(cg_cuda_attention_backward(CG_F32, gdq, NULL, NULL, upload(dout, nq, CG_F32), gq, gk, gv,
                                         upload(out, nq, CG_F32), upload(lse, 2, CG_F32), cg_data(gm), &d, gws));
    expect_close("masked cache dq", download(gdq, nq, CG_F32), dq, nq, CG_F32);
    cg_step_end();
#endif
}

/* ------------------------------------------------------------------ the autograd ops end to end */

/* A CUDA copy (dtype dt) of a CPU tensor, a gradient leaf if the original is one. */
static cg_tensor *to_cuda(const cg_tensor *h, cg_dtype dt) {
    cg_tensor *d = cg_tensor_to(cg_step_arena(CG_CUDA(0)), h, dt);
    assert_non_null(d);
    if (h->requires_grad) assert_ok(cg_set_requires_grad(d, true));
    return d;
}

static void expect_tensor_close(const char *what, const cg_tensor *gpu, const cg_tensor *cpu, cg_dtype dt) {
    assert_non_null(gpu);
    assert_non_null(cpu);
    assert_true(cg_same_shape(gpu, cpu));
    assert_ok(cg_device_synchronize(CG_CUDA(0)));
    cg_tensor *g = cg_tensor_to(cg_step_arena(CG_CPU), gpu, CG_F32), *c = cg_tensor_to(cg_step_arena(CG_CPU), cpu, CG_F32);
    assert_non_null(g);
    assert_non_null(c);
    expect_close(what, cg_data(g), cg_data(c), cg_numel(c), dt);
}

/* A CPU f32 tensor of random values, rounded to dt's precision, optionally a gradient leaf. */
static cg_tensor *rand_leaf(int nd, const int64_t *shape, uint64_t seed, float scale, float shift, cg_dtype dt,
                            bool grad) {
    cg_tensor *t = cg_test_rand_tensor(nd, shape, seed, scale, shift, false);
    float *v = cg_data(t);
    if (dt == CG_BF16)
        for (int64_t i = 0; i < cg_numel(t); i++) v[i] = cg_bf16_to_f32(cg_f32_to_bf16(v[i]));
    if (grad) assert_ok(cg_set_requires_grad(t, true));
    return t;
}

static void test_autograd_norms_on_cuda(void **state) {
    (void)state;
    cg_test_require_gpu();
    for (int di = 0; di < 2; di++)
        for (int kind = 0; kind < 3; kind++) { /* layernorm, rmsnorm, residual + layernorm */
            cg_dtype dt = DTYPES[di];
            int64_t shape[3] = {3, 5, 769}, cshape[1] = {769};
            cg_tensor *x = rand_leaf(3, shape, 101, 1.0f, 0.2f, dt, true);
            cg_tensor *r = rand_leaf(3, shape, 102, 1.0f, 0.0f, dt, true);
            cg_tensor *w = rand_leaf(1, cshape, 103, 0.3f, 1.0f, dt, true);
            cg_tensor *b = rand_leaf(1, cshape, 104, 0.3f, 0.0f, dt, true);
            cg_tensor *gout = rand_leaf(3, shape, 105, 1.0f, 0.0f, dt, false);
            cg_tensor *xd = to_cuda(x, dt), *rd = to_cuda(r, dt), *wd = to_cuda(w, dt), *bd = to_cuda(b, dt);
            cg_tensor *sum = NULL, *sumd = NULL, *yc, *yd;
            if (kind == 0) {
                yc = cg_layernorm(x, w, b, 1e-5f);
                yd = cg_layernorm(xd, wd, bd, 1e-5f);
            } else if (kind == 1) {
                yc = cg_rmsnorm(x, w, 1e-6f);
                yd = cg_rmsnorm(xd, wd, 1e-6f);
            } else {
                yc = cg_residual_norm(x, r, w, b, 1e-5f, false, &sum);
                yd = cg_residual_norm(xd, rd, wd, bd, 1e-5f, false, &sumd);
                expect_tensor_close("residual_norm sum", sumd, sum, dt);
            }
            assert_non_null(yd);
            assert_int_equal(yd->dtype, dt);
            expect_tensor_close("norm op out", yd, yc, dt);
            assert_ok(cg_backward_with_grad(yc, gout));
            assert_ok(cg_backward_with_grad(yd, to_cuda(gout, dt)));
            expect_tensor_close("norm op dx", xd->grad, x->grad, dt);
            expect_tensor_close("norm op dweight", wd->grad, w->grad, dt);
            if (kind != 1) expect_tensor_close("norm op dbias", bd->grad, b->grad, dt);
            if (kind == 2) expect_tensor_close("norm op dresidual", rd->grad, r->grad, dt);
            cg_step_end();
        }
}

static void test_autograd_softmax_swiglu_on_cuda(void **state) {
    (void)state;
    cg_test_require_gpu();
    for (int di = 0; di < 2; di++) {
        cg_dtype dt = DTYPES[di];
        int64_t shape[2] = {7, 769};
        for (int op = 0; op < 3; op++) { /* softmax, log_softmax over the last dim, softmax over dim 0 */
            cg_tensor *x = rand_leaf(2, shape, 111 + op, 3.0f, 0.0f, dt, true);
            cg_tensor *g = rand_leaf(2, shape, 114, 1.0f, 0.0f, dt, false);
            cg_tensor *xd = to_cuda(x, dt);
            cg_tensor *yc = op == 1 ? cg_log_softmax(x, -1) : cg_softmax(x, op == 2 ? 0 : -1);
            cg_tensor *yd = op == 1 ? cg_log_softmax(xd, -1) : cg_softmax(xd, op == 2 ? 0 : -1);
            expect_tensor_close("softmax op out", yd, yc, dt);
            assert_ok(cg_backward_with_grad(yc, g));
            assert_ok(cg_backward_with_grad(yd, to_cuda(g, dt)));
            expect_tensor_close("softmax op dx", xd->grad, x->grad, dt);
        }
        cg_tensor *gate = rand_leaf(2, shape, 121, 3.0f, 0.0f, dt, true), *up = rand_leaf(2, shape, 122, 1.0f, 0.0f, dt, true);
        cg_tensor *g = rand_leaf(2, shape, 123, 1.0f, 0.0f, dt, false);
        cg_tensor *gd = to_cuda(gate, dt), *ud = to_cuda(up, dt);
        cg_tensor *yc = cg_swiglu(gate, up), *yd = cg_swiglu(gd, ud);
        expect_tensor_close("swiglu op out", yd, yc, dt);
        assert_ok(cg_backward_with_grad(yc, g));
        assert_ok(cg_backward_with_grad(yd, to_cuda(g, dt)));
        expect_tensor_close("swiglu op dgate", gd->grad, gate->grad, dt);
        expect_tensor_close("swiglu op dup", ud->grad, up->grad, dt);
        cg_step_end();
    }
}

static void test_autograd_cross_entropy_on_cuda(void **state) {
    (void)state;
    cg_test_require_gpu();
    for (int di = 0; di < 2; di++) {
        cg_dtype dt = DTYPES[di];
        int64_t shape[3] = {2, 9, 1000}, tshape[2] = {2, 9};
        cg_tensor *x = rand_leaf(3, shape, 131, 5.0f, 0.0f, dt, true);
        cg_tensor *t = cg_tensor_empty(cg_step_arena(CG_CPU), CG_I64, 2, tshape);
        int64_t *tv = cg_data(t);
        for (int i = 0; i < 18; i++) tv[i] = i % 7 == 6 ? -100 : (i * 389) % 1000;
        cg_tensor *xd = to_cuda(x, dt), *td = cg_tensor_clone(cg_step_arena(CG_CUDA(0)), t);
        assert_non_null(td);
        cg_tensor *lc = cg_cross_entropy(x, t, -100, 0.1f), *ld = cg_cross_entropy(xd, td, -100, 0.1f);
        assert_non_null(ld);
        expect_tensor_close("cross_entropy op loss", ld, lc, CG_F32);
        assert_ok(cg_backward(lc));
        assert_ok(cg_backward(ld));
        expect_tensor_close("cross_entropy op dlogits", xd->grad, x->grad, dt);
        /* a target out of range is refused, naming it, also when the targets live on the GPU */
        tv[3] = 1000;
        td = cg_tensor_clone(cg_step_arena(CG_CUDA(0)), t);
        assert_null(cg_cross_entropy(xd, td, -100, 0.0f));
        assert_error_contains("target 1000 at row 3");
        cg_step_end();
    }
}

static void test_autograd_attention_rope_on_cuda(void **state) {
    (void)state;
    cg_test_require_gpu();
    for (int di = 0; di < 2; di++) {
        cg_dtype dt = DTYPES[di];
        int64_t qs[4] = {2, 4, 33, 64}, ks[4] = {2, 1, 33, 64};
        cg_tensor *q = rand_leaf(4, qs, 141, 1.0f, 0.0f, dt, true), *k = rand_leaf(4, ks, 142, 1.0f, 0.0f, dt, true);
        cg_tensor *v = rand_leaf(4, ks, 143, 1.0f, 0.0f, dt, true), *g = rand_leaf(4, qs, 144, 1.0f, 0.0f, dt, false);
        cg_tensor *qd = to_cuda(q, dt), *kd = to_cuda(k, dt), *vd = to_cuda(v, dt);
        cg_rope_config rope = {.theta = 10000.0f};
        cg_tensor *qr = cg_rope_scaled(q, &rope, 3, NULL), *kr = cg_rope_scaled(k, &rope, 3, NULL);
        cg_tensor *qrd = cg_rope_scaled(qd, &rope, 3, NULL), *krd = cg_rope_scaled(kd, &rope, 3, NULL);
        expect_tensor_close("rope op out", qrd, qr, dt);
        cg_tensor *oc = cg_attention(qr, kr, v, NULL, 0.0f), *od = cg_attention(qrd, krd, vd, NULL, 0.0f);
        expect_tensor_close("attention op out", od, oc, dt);
        assert_ok(cg_backward_with_grad(oc, g));
        assert_ok(cg_backward_with_grad(od, to_cuda(g, dt)));
        expect_tensor_close("attention op dq", qd->grad, q->grad, dt);
        expect_tensor_close("attention op dk", kd->grad, k->grad, dt);
        expect_tensor_close("attention op dv", vd->grad, v->grad, dt);
        cg_step_end();
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_layernorm_matches_cpu, cg_test_teardown),
        cmocka_unit_test_teardown(test_rmsnorm_matches_cpu, cg_test_teardown),
        cmocka_unit_test_teardown(test_residual_norm_matches_cpu, cg_test_teardown),
        cmocka_unit_test_teardown(test_norm_weight_grad_is_deterministic, cg_test_teardown),
        cmocka_unit_test_teardown(test_activations_match_cpu, cg_test_teardown),
        cmocka_unit_test_teardown(test_rope_matches_cpu, cg_test_teardown),
        cmocka_unit_test_teardown(test_softmax_matches_cpu, cg_test_teardown),
        cmocka_unit_test_teardown(test_cross_entropy_matches_cpu, cg_test_teardown),
        cmocka_unit_test_teardown(test_attention_matches_cpu, cg_test_teardown),
        cmocka_unit_test_teardown(test_attention_fully_masked_row, cg_test_teardown),
        cmocka_unit_test_teardown(test_attention_masked_nonfinite_cache, cg_test_teardown),
        cmocka_unit_test_teardown(test_autograd_norms_on_cuda, cg_test_teardown),
        cmocka_unit_test_teardown(test_autograd_softmax_swiglu_on_cuda, cg_test_teardown),
        cmocka_unit_test_teardown(test_autograd_cross_entropy_on_cuda, cg_test_teardown),
        cmocka_unit_test_teardown(test_autograd_attention_rope_on_cuda, cg_test_teardown),
    };
    int rc = cmocka_run_group_tests_name("cuda_nn", tests, NULL, NULL);
    cg_shutdown();
    return rc;
}
