/* cg_sgemm against a naive double-precision loop written here (and cg_sgemm_reference against the same
 * loop and a hand-computed product); cg_matmul_into on batched, broadcast, transposed and sliced operands
 * against index-by-index sums, and its error messages.
 *
 * Tolerance: a K-term float dot product of values in [-1, 1] is off by about eps * sqrt(K) * |terms|, so
 * results must agree with the double loop to 1e-5 relative plus 1e-5 * sqrt(K) * (|alpha| + |beta| + 1)
 * absolute; a missing or doubled term (about 0.3 on average) is far outside that. */
#include "test_util.h"

#include "core/gemm.h"

/* ------------------------------------------------------------------ helpers */

/* op(A) op(B), alpha, beta in double: the independent reference. */
static void naive_gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha, const float *A,
                       int64_t lda, const float *B, int64_t ldb, double beta, const float *C_in, int64_t ldc,
                       double *out) {
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            double acc = 0.0;
            for (int64_t k = 0; k < K; k++)
                acc += (double)(ta ? A[k * lda + i] : A[i * lda + k]) * (double)(tb ? B[j * ldb + k] : B[k * ldb + j]);
            out[i * N + j] = alpha * acc + (beta == 0.0 ? 0.0 : beta * C_in[i * ldc + j]);
        }
}

static float *random_floats(int64_t n, uint64_t *seed) {
    float *p = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    assert_non_null(p);
    for (int64_t i = 0; i < n; i++) p[i] = cg_test_randf(seed);
    return p;
}

static double gemm_atol(int64_t K, double alpha, double beta) {
    return 1e-5 * sqrt((double)(K > 1 ? K : 1)) * (fabs(alpha) + fabs(beta) + 1.0);
}

/* Runs cg_sgemm on random data with the given shapes and leading-dimension padding and checks every
 * element of C against naive_gemm, and every padding element of C against its old value. When
 * nan_c, C starts as NaN (beta must be 0 then). */
static void check_sgemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, float beta, int64_t pad,
                        bool nan_c, uint64_t seed) {
    int64_t lda = (ta ? M : K) + pad, ldb = (tb ? K : N) + pad, ldc = N + pad;
    int64_t a_rows = ta ? K : M, b_rows = tb ? N : K;
    float *A = random_floats(a_rows * lda, &seed), *B = random_floats(b_rows * ldb, &seed);
    float *C = random_floats(M * ldc, &seed), *C0 = malloc(sizeof(float) * (size_t)(M * ldc + 1));
    double *want = malloc(sizeof(double) * (size_t)(M * N + 1));
    assert_non_null(C0);
    assert_non_null(want);
    if (nan_c)
        for (int64_t i = 0; i < M * ldc; i++) C[i] = NAN;
    memcpy(C0, C, sizeof(float) * (size_t)(M * ldc));
    naive_gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C0, ldc, want);
    cg_sgemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    double atol = gemm_atol(K, alpha, beta);
    for (int64_t i = 0; i < M; i++) {
        for (int64_t j = 0; j < N; j++) {
            float got = C[i * ldc + j];
            if (!(fabs(got - want[i * N + j]) <= atol + 1e-5 * fabs(want[i * N + j]))) {
                print_error("ta=%d tb=%d M=%lld N=%lld K=%lld alpha=%g beta=%g pad=%lld: C[%lld][%lld]\n", ta, tb,
                            (long long)M, (long long)N, (long long)K, alpha, beta, (long long)pad, (long long)i,
                            (long long)j);
                assert_close(got, want[i * N + j], 1e-5, atol);
            }
        }
        for (int64_t j = N; j < ldc; j++) /* padding past N is not C: untouched (NaN stays NaN) */
            assert_memory_equal(&C[i * ldc + j], &C0[i * ldc + j], sizeof(float));
    }
    free(A), free(B), free(C), free(C0), free(want);
}

/* ------------------------------------------------------------------ cg_sgemm */

static void test_reference_hand_computed(void **state) {
    (void)state;
    /* A = [[1, 2, 3], [4, 5, 6]], B = [[7, 8], [9, 10], [11, 12]]: A B = [[58, 64], [139, 154]]. */
    const float A[6] = {1, 2, 3, 4, 5, 6}, B[6] = {7, 8, 9, 10, 11, 12};
    const float At[6] = {1, 4, 2, 5, 3, 6}, Bt[6] = {7, 9, 11, 8, 10, 12};
    const double want[4] = {2 * 58 + 0.5 * 1, 2 * 64 + 0.5 * 2, 2 * 139 + 0.5 * 3, 2 * 154 + 0.5 * 4};
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            float C_ref[4] = {1, 2, 3, 4}, C[4] = {1, 2, 3, 4};
            const float *a = ta ? At : A, *b = tb ? Bt : B;
            int64_t lda = ta ? 2 : 3, ldb = tb ? 3 : 2;
            cg_sgemm_reference(ta, tb, 2, 2, 3, 2.0f, a, lda, b, ldb, 0.5f, C_ref, 2);
            cg_sgemm(ta, tb, 2, 2, 3, 2.0f, a, lda, b, ldb, 0.5f, C, 2);
            for (int i = 0; i < 4; i++) {
                assert_close(C_ref[i], want[i], 0, 0);
                assert_close(C[i], want[i], 0, 0);
            }
        }
}

static void test_reference_matches_naive(void **state) {
    (void)state;
    uint64_t seed = 7;
    const int64_t M = 9, N = 11, K = 13;
    float *A = random_floats(K * M, &seed), *B = random_floats(N * K, &seed), *C = random_floats(M * N, &seed);
    double want[9 * 11];
    for (int t = 0; t < 4; t++) {
        bool ta = t & 1, tb = t & 2;
        float out[9 * 11];
        memcpy(out, C, sizeof out);
        naive_gemm(ta, tb, M, N, K, 1.5, A, ta ? M : K, B, tb ? K : N, -0.5, C, N, want);
        cg_sgemm_reference(ta, tb, M, N, K, 1.5f, A, ta ? M : K, B, tb ? K : N, -0.5f, out, N);
        for (int i = 0; i < M * N; i++) assert_close(out[i], want[i], 1e-6, 1e-6);
    }
    free(A), free(B), free(C);
}

/* Sizes around the register tile (6 x 16), the cache blocks (MC 144, KC 256) and odd primes. */
static void test_sgemm_sizes_all_transposes(void **state) {
    (void)state;
    static const int64_t shapes[][3] = {
        {1, 1, 1},    {7, 7, 7},    {65, 65, 65}, {257, 257, 257}, {1, 257, 65}, {257, 1, 7},
        {7, 65, 257}, {65, 257, 1}, {257, 7, 65}, {65, 1, 257},    {6, 16, 16},  {12, 32, 256},
        {13, 33, 513}, {150, 17, 300}, {1, 64, 1}, {64, 1, 1},
    };
    static const float ab[][2] = {{1.0f, 0.0f}, {0.5f, -1.25f}, {-2.0f, 1.0f}};
    int n = (int)(sizeof shapes / sizeof shapes[0]);
    for (int s = 0; s < n; s++)
        for (int t = 0; t < 4; t++) {
            const float *coef = ab[(s + t) % 3];
            check_sgemm(t & 1, t & 2, shapes[s][0], shapes[s][1], shapes[s][2], coef[0], coef[1], 0, false,
                        (uint64_t)(1000 + 4 * s + t));
        }
}

static void test_sgemm_beta_zero_ignores_nan(void **state) {
    (void)state;
    for (int t = 0; t < 4; t++) {
        check_sgemm(t & 1, t & 2, 65, 33, 20, 1.0f, 0.0f, 0, true, 11 + t);
        check_sgemm(t & 1, t & 2, 7, 5, 300, -0.75f, 0.0f, 3, true, 21 + t); /* two K blocks */
    }
}

static void test_sgemm_leading_dims(void **state) {
    (void)state;
    for (int t = 0; t < 4; t++) {
        check_sgemm(t & 1, t & 2, 65, 70, 33, 1.0f, 1.0f, 5, false, 31 + t);
        check_sgemm(t & 1, t & 2, 7, 17, 257, 2.0f, 0.5f, 1, false, 41 + t);
        check_sgemm(t & 1, t & 2, 1, 1, 1, 1.0f, -1.0f, 9, false, 51 + t);
    }
}

static void test_sgemm_empty(void **state) {
    (void)state;
    float A[4] = {1, 2, 3, 4}, B[4] = {5, 6, 7, 8};
    float C[4] = {1, 2, 3, 4};
    cg_sgemm(false, false, 0, 2, 2, 1.0f, A, 2, B, 2, 0.0f, C, 2); /* M = 0: nothing to write */
    cg_sgemm(false, false, 2, 0, 2, 1.0f, A, 2, B, 2, 0.0f, C, 2); /* N = 0 */
    for (int i = 0; i < 4; i++) assert_close(C[i], i + 1, 0, 0);
    cg_sgemm(false, false, 2, 2, 0, 1.0f, A, 2, B, 2, 3.0f, C, 2); /* K = 0: C = beta C */
    for (int i = 0; i < 4; i++) assert_close(C[i], 3.0 * (i + 1), 0, 0);
    float Cn[4] = {NAN, NAN, NAN, NAN};
    cg_sgemm(true, true, 2, 2, 0, 1.0f, A, 2, B, 2, 0.0f, Cn, 2); /* K = 0, beta = 0: zeros, not NaN */
    for (int i = 0; i < 4; i++) assert_close(Cn[i], 0.0, 0, 0);
}

/* Past every cache block: N beyond NC (4080), K beyond KC, M beyond MC. */
static void test_sgemm_many_blocks(void **state) {
    (void)state;
    check_sgemm(false, false, 7, 4100, 3, 1.0f, 0.0f, 0, false, 61);
    check_sgemm(true, true, 5, 4113, 2, 1.0f, 0.5f, 2, false, 62);
    check_sgemm(false, true, 301, 19, 600, 1.0f, 1.0f, 0, false, 63);
}

/* Every element of C is owned by one thread and summed in the same order whatever the thread count, so
 * one and two threads must give identical bits; both must also be right. */
static void test_sgemm_threads_bitwise_equal(void **state) {
    (void)state;
    static const int64_t shapes[][3] = {{200, 300, 260}, {3, 1000, 64}, {1000, 5, 70}, {97, 97, 97}};
    int before = cg_get_num_threads();
    for (int s = 0; s < 4; s++) {
        int64_t M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
        uint64_t seed = 71 + s;
        for (int t = 0; t < 4; t++) {
            bool ta = t & 1, tb = t & 2;
            float *A = random_floats(M * K, &seed), *B = random_floats(K * N, &seed), *C0 = random_floats(M * N, &seed);
            float *C1 = malloc(sizeof(float) * (size_t)(M * N)), *C2 = malloc(sizeof(float) * (size_t)(M * N));
            double *want = malloc(sizeof(double) * (size_t)(M * N));
            assert_non_null(C1);
            assert_non_null(C2);
            assert_non_null(want);
            memcpy(C1, C0, sizeof(float) * (size_t)(M * N));
            memcpy(C2, C0, sizeof(float) * (size_t)(M * N));
            cg_set_num_threads(1);
            cg_sgemm(ta, tb, M, N, K, 1.25f, A, ta ? M : K, B, tb ? K : N, 0.5f, C1, N);
            cg_set_num_threads(2);
            cg_sgemm(ta, tb, M, N, K, 1.25f, A, ta ? M : K, B, tb ? K : N, 0.5f, C2, N);
            naive_gemm(ta, tb, M, N, K, 1.25, A, ta ? M : K, B, tb ? K : N, 0.5, C0, N, want);
            assert_memory_equal(C1, C2, sizeof(float) * (size_t)(M * N));
            for (int64_t i = 0; i < M * N; i++) assert_close(C2[i], want[i], 1e-5, gemm_atol(K, 1.25, 0.5));
            free(A), free(B), free(C0), free(C1), free(C2), free(want);
        }
    }
    cg_set_num_threads(before);
}

/* The portable micro-kernel (what a CPU without AVX2 runs), forced through CG_GEMM_KERNEL. */
static void test_sgemm_generic_kernel(void **state) {
    (void)state;
    setenv("CG_GEMM_KERNEL", "generic", 1);
    for (int t = 0; t < 4; t++) {
        check_sgemm(t & 1, t & 2, 65, 33, 257, 0.5f, -1.0f, 2, false, 81 + t);
        check_sgemm(t & 1, t & 2, 13, 7, 20, 1.0f, 0.0f, 0, true, 91 + t);
    }
    unsetenv("CG_GEMM_KERNEL");
}

/* ------------------------------------------------------------------ cg_matmul_into */

static cg_tensor *random_tensor(int ndim, const int64_t *shape, uint64_t *seed) {
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    float *data = random_floats(n, seed);
    cg_tensor *t = cg_tensor_from_data(cg_step_arena(CG_CPU), CG_F32, ndim, shape, data);
    free(data);
    assert_non_null(t);
    return t;
}

/* alpha op(a) op(b) + beta out_before, element by element through cg_get (the batch dims broadcast). */
static void expected_matmul(const cg_tensor *a, const cg_tensor *b, bool ta, bool tb, double alpha, double beta,
                            const cg_tensor *out, const double *out_before, double *want) {
    int nd = out->ndim;
    int64_t total = cg_numel(out);
    int64_t K = ta ? a->shape[a->ndim - 2] : a->shape[a->ndim - 1];
    for (int64_t flat = 0; flat < total; flat++) {
        int64_t idx[CG_MAX_DIMS], rest = flat;
        for (int d = nd - 1; d >= 0; d--) {
            idx[d] = rest % out->shape[d];
            rest /= out->shape[d];
        }
        int64_t ia[CG_MAX_DIMS], ib[CG_MAX_DIMS];
        for (int d = 0; d < a->ndim - 2; d++) {
            int od = d + (nd - a->ndim);
            ia[d] = a->shape[d] == 1 ? 0 : idx[od];
        }
        for (int d = 0; d < b->ndim - 2; d++) {
            int od = d + (nd - b->ndim);
            ib[d] = b->shape[d] == 1 ? 0 : idx[od];
        }
        int64_t i = idx[nd - 2], j = idx[nd - 1];
        double acc = 0.0;
        for (int64_t k = 0; k < K; k++) {
            ia[a->ndim - 2] = ta ? k : i, ia[a->ndim - 1] = ta ? i : k;
            ib[b->ndim - 2] = tb ? j : k, ib[b->ndim - 1] = tb ? k : j;
            acc += cg_get(a, ia) * cg_get(b, ib);
        }
        want[flat] = alpha * acc + (beta == 0.0 ? 0.0 : beta * out_before[flat]);
    }
}

/* Runs cg_matmul_into into a fresh out (filled with `fill`, NaN allowed when beta == 0) and checks it. */
static void check_matmul(const cg_tensor *a, const cg_tensor *b, bool ta, bool tb, float alpha, float beta,
                         int out_ndim, const int64_t *out_shape, double fill) {
    cg_tensor *out = cg_tensor_empty(cg_step_arena(CG_CPU), CG_F32, out_ndim, out_shape);
    assert_non_null(out);
    int64_t n = cg_numel(out);
    double *before = malloc(sizeof(double) * (size_t)(n + 1)), *want = malloc(sizeof(double) * (size_t)(n + 1));
    assert_non_null(before);
    assert_non_null(want);
    for (int64_t i = 0; i < n; i++) {
        before[i] = isnan(fill) ? fill : fill + 0.01 * (double)(i % 17);
        cg_set_flat(out, i, before[i]);
    }
    expected_matmul(a, b, ta, tb, alpha, beta, out, before, want);
    assert_ok(cg_matmul_into(out, a, b, ta, tb, alpha, beta));
    int64_t K = ta ? a->shape[a->ndim - 2] : a->shape[a->ndim - 1];
    for (int64_t i = 0; i < n; i++) assert_close(cg_get_flat(out, i), want[i], 1e-5, gemm_atol(K, alpha, beta));
    free(before), free(want);
}

static void test_matmul_2d_hand_computed(void **state) {
    (void)state;
    const float av[6] = {1, 2, 3, 4, 5, 6}, bv[6] = {7, 8, 9, 10, 11, 12};
    cg_tensor *a = cg_tensor_from_data(cg_step_arena(CG_CPU), CG_F32, 2, (int64_t[]){2, 3}, av);
    cg_tensor *b = cg_tensor_from_data(cg_step_arena(CG_CPU), CG_F32, 2, (int64_t[]){3, 2}, bv);
    cg_tensor *out = cg_tensor_empty(cg_step_arena(CG_CPU), CG_F32, 2, (int64_t[]){2, 2});
    assert_ok(cg_matmul_into(out, a, b, false, false, 1.0f, 0.0f));
    const double want[4] = {58, 64, 139, 154};
    for (int i = 0; i < 4; i++) assert_close(cg_get_flat(out, i), want[i], 0, 0);
    /* b^T a^T = (a b)^T */
    assert_ok(cg_matmul_into(out, b, a, true, true, 1.0f, 0.0f));
    const double want_t[4] = {58, 139, 64, 154};
    for (int i = 0; i < 4; i++) assert_close(cg_get_flat(out, i), want_t[i], 0, 0);
}

static void test_matmul_batched_broadcast(void **state) {
    (void)state;
    uint64_t seed = 101;
    const int64_t M = 5, K = 7, N = 9;
    cg_tensor *a4 = random_tensor(4, (int64_t[]){2, 3, M, K}, &seed);
    cg_tensor *b2 = random_tensor(2, (int64_t[]){K, N}, &seed);
    cg_tensor *b3 = random_tensor(3, (int64_t[]){3, K, N}, &seed);
    cg_tensor *a3 = random_tensor(3, (int64_t[]){3, M, K}, &seed);
    cg_tensor *b4 = random_tensor(4, (int64_t[]){2, 1, K, N}, &seed);
    cg_tensor *a1 = random_tensor(3, (int64_t[]){1, M, K}, &seed);
    check_matmul(a4, b2, false, false, 1.0f, 0.0f, 4, (int64_t[]){2, 3, M, N}, NAN);
    check_matmul(a4, b3, false, false, 1.0f, 0.0f, 4, (int64_t[]){2, 3, M, N}, NAN);
    check_matmul(a3, b4, false, false, 1.0f, 0.0f, 4, (int64_t[]){2, 3, M, N}, NAN);
    check_matmul(a1, b3, false, false, 1.0f, 0.0f, 3, (int64_t[]){3, M, N}, NAN);
    check_matmul(b2, b3, true, false, 1.0f, 0.0f, 3, (int64_t[]){3, N, N}, NAN); /* b2^T b3: [N,K] @ [3,K,N] */
}

static void test_matmul_transposed_views(void **state) {
    (void)state;
    uint64_t seed = 202;
    const int64_t M = 6, K = 10, N = 17;
    cg_tensor *a_km = random_tensor(3, (int64_t[]){2, K, M}, &seed);
    cg_tensor *b_nk = random_tensor(3, (int64_t[]){2, N, K}, &seed);
    cg_tensor *a_view = cg_view_transpose(a_km, -1, -2); /* [2, M, K], unit stride along M */
    cg_tensor *b_view = cg_view_transpose(b_nk, -1, -2); /* [2, K, N], unit stride along K */
    assert_non_null(a_view);
    assert_non_null(b_view);
    int64_t out_shape[3] = {2, M, N};
    check_matmul(a_view, b_view, false, false, 1.0f, 0.0f, 3, out_shape, NAN);
    check_matmul(a_km, b_nk, true, true, 1.0f, 0.0f, 3, out_shape, NAN);
    check_matmul(a_view, b_nk, false, true, 1.0f, 0.0f, 3, out_shape, NAN);
    check_matmul(a_km, b_view, true, false, 1.0f, 0.0f, 3, out_shape, NAN);
    /* a transposed view with the transpose flag: two transposes cancel */
    cg_tensor *a_mk = random_tensor(2, (int64_t[]){M, K}, &seed);
    check_matmul(cg_view_transpose(a_mk, 0, 1), b_view, true, false, 1.0f, 0.0f, 3, out_shape, NAN);
}

static void test_matmul_sliced_operands(void **state) {
    (void)state;
    uint64_t seed = 303;
    const int64_t M = 7, K = 9, N = 5;
    cg_tensor *big = random_tensor(2, (int64_t[]){2 * M, 3 * K}, &seed);
    /* every other row, every third column: neither dim has unit stride, so it is packed first */
    cg_tensor *a_strided = cg_view_slice(cg_view_slice(big, 0, 0, 2 * M, 2), 1, 1, 3 * K, 3);
    /* a column window: unit stride along K, row stride 3K (a leading dimension wider than K) */
    cg_tensor *a_window = cg_view_slice(big, 1, 4, 4 + K, 1);
    a_window = cg_view_slice(a_window, 0, 3, 3 + M, 1);
    cg_tensor *b = random_tensor(2, (int64_t[]){K, N}, &seed);
    assert_non_null(a_strided);
    assert_non_null(a_window);
    assert_int_equal(a_strided->shape[0], M);
    assert_int_equal(a_strided->shape[1], K);
    check_matmul(a_strided, b, false, false, 1.0f, 0.0f, 2, (int64_t[]){M, N}, NAN);
    check_matmul(a_window, b, false, false, 1.0f, 0.0f, 2, (int64_t[]){M, N}, NAN);
    check_matmul(b, a_strided, true, true, 1.0f, 0.0f, 2, (int64_t[]){N, M}, NAN);

    /* out itself a column window of a wider tensor: row stride 2N */
    cg_tensor *wide = cg_tensor_zeros(cg_step_arena(CG_CPU), CG_F32, 2, (int64_t[]){M, 2 * N});
    cg_tensor *out = cg_view_slice(wide, 1, N, 2 * N, 1);
    assert_ok(cg_matmul_into(out, a_window, b, false, false, 1.0f, 0.0f));
    double want[7 * 5], zeros[7 * 5] = {0};
    expected_matmul(a_window, b, false, false, 1.0, 0.0, out, zeros, want);
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < 2 * N; j++) {
            double got = cg_get(wide, (int64_t[]){i, j});
            assert_close(got, j < N ? 0.0 : want[i * N + (j - N)], 1e-5, gemm_atol(K, 1, 0));
        }
}

static void test_matmul_alpha_beta_accumulate(void **state) {
    (void)state;
    uint64_t seed = 404;
    cg_tensor *a = random_tensor(3, (int64_t[]){2, 33, 40}, &seed);
    cg_tensor *b = random_tensor(3, (int64_t[]){2, 40, 19}, &seed);
    check_matmul(a, b, false, false, 0.5f, 2.0f, 3, (int64_t[]){2, 33, 19}, 1.0);
    check_matmul(a, b, false, false, -1.0f, 1.0f, 3, (int64_t[]){2, 33, 19}, -3.0);
    /* accumulating twice into the same out doubles the product */
    cg_tensor *out = cg_tensor_zeros(cg_step_arena(CG_CPU), CG_F32, 3, (int64_t[]){2, 33, 19});
    assert_ok(cg_matmul_into(out, a, b, false, false, 1.0f, 1.0f));
    assert_ok(cg_matmul_into(out, a, b, false, false, 1.0f, 1.0f));
    double *want = malloc(sizeof(double) * 2 * 33 * 19), *zero = calloc(2 * 33 * 19, sizeof(double));
    assert_non_null(want);
    assert_non_null(zero);
    expected_matmul(a, b, false, false, 2.0, 0.0, out, zero, want);
    for (int64_t i = 0; i < 2 * 33 * 19; i++) assert_close(cg_get_flat(out, i), want[i], 1e-5, gemm_atol(40, 2, 1));
    free(want), free(zero);
}

/* Many small matrices run one per thread; the results must be the same as one by one. */
static void test_matmul_many_small_batches(void **state) {
    (void)state;
    uint64_t seed = 505;
    int before = cg_get_num_threads();
    cg_set_num_threads(2);
    cg_tensor *a = random_tensor(3, (int64_t[]){64, 5, 3}, &seed);
    cg_tensor *b = random_tensor(3, (int64_t[]){64, 3, 7}, &seed);
    check_matmul(a, b, false, false, 1.0f, 0.0f, 3, (int64_t[]){64, 5, 7}, NAN);
    cg_tensor *a2 = random_tensor(3, (int64_t[]){3, 100, 70}, &seed); /* 3 batches on 2 threads */
    cg_tensor *b2 = random_tensor(2, (int64_t[]){70, 90}, &seed);
    check_matmul(a2, b2, false, false, 1.0f, 0.0f, 3, (int64_t[]){3, 100, 90}, NAN);
    cg_set_num_threads(before);
}

static void test_matmul_errors(void **state) {
    (void)state;
    cg_arena *ar = cg_step_arena(CG_CPU);
    cg_tensor *a23 = cg_tensor_zeros(ar, CG_F32, 2, (int64_t[]){2, 3});
    cg_tensor *b45 = cg_tensor_zeros(ar, CG_F32, 2, (int64_t[]){4, 5});
    cg_tensor *b35 = cg_tensor_zeros(ar, CG_F32, 2, (int64_t[]){3, 5});
    cg_tensor *out25 = cg_tensor_zeros(ar, CG_F32, 2, (int64_t[]){2, 5});
    cg_tensor *v3 = cg_tensor_zeros(ar, CG_F32, 1, (int64_t[]){3});

    assert_int_equal(cg_matmul_into(out25, a23, b45, false, false, 1.0f, 0.0f), CG_ERR_SHAPE);
    assert_error_contains("matmul: inner dimensions differ: a f32[2, 3] cpu (K=3) and b f32[4, 5] cpu (K=4)");

    assert_int_equal(cg_matmul_into(out25, v3, b35, false, false, 1.0f, 0.0f), CG_ERR_SHAPE);
    assert_error_contains("matmul: operands need at least 2 dims");
    assert_error_contains("f32[3] cpu");

    cg_tensor *out24 = cg_tensor_zeros(ar, CG_F32, 2, (int64_t[]){2, 4});
    assert_int_equal(cg_matmul_into(out24, a23, b35, false, false, 1.0f, 0.0f), CG_ERR_SHAPE);
    assert_error_contains("matmul: out is f32[2, 4] cpu, expected shape [2, 5]");
    assert_error_contains("f32[3, 5] cpu");

    cg_tensor *i23 = cg_tensor_zeros(ar, CG_I32, 2, (int64_t[]){2, 3});
    assert_int_equal(cg_matmul_into(out25, i23, b35, false, false, 1.0f, 0.0f), CG_ERR_DTYPE);
    assert_error_contains("matmul: the CPU matmul takes f32 operands, got a i32[2, 3] cpu");
    cg_tensor *i25 = cg_tensor_zeros(ar, CG_I32, 2, (int64_t[]){2, 5});
    assert_int_equal(cg_matmul_into(i25, a23, b35, false, false, 1.0f, 0.0f), CG_ERR_DTYPE);
    assert_error_contains("matmul: out must be f32, got i32[2, 5] cpu");

    cg_tensor *a2 = cg_tensor_zeros(ar, CG_F32, 3, (int64_t[]){2, 2, 3});
    cg_tensor *b3 = cg_tensor_zeros(ar, CG_F32, 3, (int64_t[]){3, 3, 5});
    cg_tensor *out_b = cg_tensor_zeros(ar, CG_F32, 3, (int64_t[]){3, 2, 5});
    assert_int_equal(cg_matmul_into(out_b, a2, b3, false, false, 1.0f, 0.0f), CG_ERR_SHAPE);
    assert_error_contains("matmul: batch dimensions do not broadcast: a f32[2, 2, 3] cpu and b f32[3, 3, 5] cpu");

    /* an out whose last dim is strided (a transposed view) cannot be written by the GEMM */
    cg_tensor *out52 = cg_tensor_zeros(ar, CG_F32, 2, (int64_t[]){5, 2});
    assert_int_equal(cg_matmul_into(cg_view_transpose(out52, 0, 1), a23, b35, false, false, 1.0f, 0.0f),
                     CG_ERR_SHAPE);
    assert_error_contains("must have unit stride in its last dim");

    /* a CUDA tensor (never dereferenced: the check comes first) */
    float dummy[15];
    cg_tensor *cuda_b = cg_tensor_wrap(ar, CG_F32, CG_CUDA(0), 2, (int64_t[]){3, 5}, dummy);
    assert_non_null(cuda_b);
    assert_int_equal(cg_matmul_into(out25, a23, cuda_b, false, false, 1.0f, 0.0f), CG_ERR_DEVICE);
    assert_error_contains("matmul: a f32[2, 3] cpu, b f32[3, 5] cuda:0 and out f32[2, 5] cpu must be on one device");

    assert_int_equal(cg_matmul_into(NULL, a23, b35, false, false, 1.0f, 0.0f), CG_ERR_INVALID_ARG);
    assert_error_contains("matmul: NULL tensor");
}

/* K = 0 gives beta * out; M = 0 writes nothing. */
static void test_matmul_empty(void **state) {
    (void)state;
    cg_arena *ar = cg_step_arena(CG_CPU);
    cg_tensor *a = cg_tensor_zeros(ar, CG_F32, 2, (int64_t[]){2, 0});
    cg_tensor *b = cg_tensor_zeros(ar, CG_F32, 2, (int64_t[]){0, 3});
    cg_tensor *out = cg_tensor_empty(ar, CG_F32, 2, (int64_t[]){2, 3});
    assert_ok(cg_fill(out, 4.0));
    assert_ok(cg_matmul_into(out, a, b, false, false, 1.0f, 0.5f));
    for (int i = 0; i < 6; i++) assert_close(cg_get_flat(out, i), 2.0, 0, 0);
    cg_tensor *a0 = cg_tensor_zeros(ar, CG_F32, 2, (int64_t[]){0, 4});
    cg_tensor *b4 = cg_tensor_zeros(ar, CG_F32, 2, (int64_t[]){4, 3});
    cg_tensor *out0 = cg_tensor_empty(ar, CG_F32, 2, (int64_t[]){0, 3});
    assert_ok(cg_matmul_into(out0, a0, b4, false, false, 1.0f, 0.0f));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reference_hand_computed),
        cmocka_unit_test(test_reference_matches_naive),
        cmocka_unit_test(test_sgemm_sizes_all_transposes),
        cmocka_unit_test(test_sgemm_beta_zero_ignores_nan),
        cmocka_unit_test(test_sgemm_leading_dims),
        cmocka_unit_test(test_sgemm_empty),
        cmocka_unit_test(test_sgemm_many_blocks),
        cmocka_unit_test(test_sgemm_threads_bitwise_equal),
        cmocka_unit_test(test_sgemm_generic_kernel),
        cmocka_unit_test_teardown(test_matmul_2d_hand_computed, cg_test_teardown),
        cmocka_unit_test_teardown(test_matmul_batched_broadcast, cg_test_teardown),
        cmocka_unit_test_teardown(test_matmul_transposed_views, cg_test_teardown),
        cmocka_unit_test_teardown(test_matmul_sliced_operands, cg_test_teardown),
        cmocka_unit_test_teardown(test_matmul_alpha_beta_accumulate, cg_test_teardown),
        cmocka_unit_test_teardown(test_matmul_many_small_batches, cg_test_teardown),
        cmocka_unit_test_teardown(test_matmul_errors, cg_test_teardown),
        cmocka_unit_test_teardown(test_matmul_empty, cg_test_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
