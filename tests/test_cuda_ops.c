/* The CUDA primitive ops against the CPU ops on the same inputs: elementwise with broadcasting and strided
 * views, where, reductions, copy/cast across dtypes and devices, fill, matmul through cuBLASLt (every
 * transpose, batched, bias/GELU epilogues, f32 exact / TF32 / bf16), and linear / LoRA linear forward and
 * backward through autograd. Every test skips without a GPU (make test-gpu makes that a failure).
 *
 * Tolerances (|gpu - cpu| <= tol * max|cpu| over the tensor, plus the per-element rtol):
 *   f32 kernels 1e-5; matmul f32 with TF32 off 1e-5, with TF32 on 5e-3, cuBLASLt's GELU epilogue 1e-3;
 *   bf16 storage 1e-2 (bf16 keeps 8 significant bits: one rounding of the output is 2^-9 relative; the
 *   inputs are bf16-rounded on the CPU side too, so only the output rounding and the summation order
 *   differ); index ops, copies, fills and RNG (but normal) exact. */
#include "test_util.h"

#define GPU CG_CUDA(0)

static cg_arena *cpu_arena(void) { return cg_step_arena(CG_CPU); }
static cg_arena *gpu_arena(void) { return cg_step_arena(GPU); }

/* A random CPU f32 tensor, rounded to bf16 values when the GPU copy will be bf16 (so both sides see the same
 * numbers). */
static cg_tensor *rand_cpu(int nd, const int64_t *shape, uint64_t seed, float scale, float shift, cg_dtype as) {
    cg_tensor *t = cg_test_rand_tensor(nd, shape, seed, scale, shift, false);
    if (as == CG_BF16) {
        float *v = cg_data(t);
        for (int64_t i = 0; i < cg_numel(t); i++) v[i] = cg_bf16_to_f32(cg_f32_to_bf16(v[i]));
    }
    return t;
}

static cg_tensor *to_gpu(const cg_tensor *t, cg_dtype dtype) {
    cg_tensor *g = cg_tensor_to(gpu_arena(), t, dtype);
    assert_non_null(g);
    assert_int_equal(g->device.type, CG_DEVICE_CUDA);
    return g;
}

static cg_tensor *to_cpu(const cg_tensor *t) {
    cg_tensor *c = cg_tensor_to(cpu_arena(), t, CG_F32);
    assert_non_null(c);
    return c;
}

/* Compares a GPU result with the CPU reference: |g - c| <= tol * (max|c| + 1e-30) + rtol|c|. */
static void assert_matches(const cg_tensor *gpu, const cg_tensor *ref, double tol, const char *what) {
    cg_tensor *g = to_cpu(gpu);
    assert_true(cg_same_shape(g, ref));
    int64_t n = cg_numel(ref);
    double maxabs = 0;
    for (int64_t i = 0; i < n; i++) {
        double v = fabs(cg_get_flat(ref, i));
        if (isfinite(v) && v > maxabs) maxabs = v;
    }
    for (int64_t i = 0; i < n; i++) {
        double a = cg_get_flat(g, i), b = cg_get_flat(ref, i);
        if (isnan(a) && isnan(b)) continue;
        if (isinf(b) && a == b) continue;
        if (!(fabs(a - b) <= tol * maxabs + tol * fabs(b) + 1e-30)) {
            print_error("%s: element %lld: gpu %.9g, cpu %.9g (tol %g of max %g)\n", what, (long long)i, a, b, tol, maxabs);
            fail();
        }
    }
}

static double tol_for(cg_dtype dt) { return dt == CG_BF16 ? 1e-2 : 1e-5; }

/* ------------------------------------------------------------------ elementwise */

typedef struct bshape {
    int na, nb;
    int64_t a[4], b[4];
} bshape;

static void test_binary_broadcast(void **state) {
    (void)state;
    cg_test_require_gpu();
    const bshape shapes[] = {
        {1, 1, {7}, {7}},
        {2, 1, {3, 7}, {7}},
        {2, 2, {769, 1}, {1, 513}},
        {3, 2, {4, 1, 5}, {3, 1}},
        {2, 2, {1024, 1023}, {1024, 1023}}, /* large, packed */
    };
    const cg_dtype dts[2] = {CG_F32, CG_BF16};
    for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++) {
        const bshape *s = &shapes[si];
        for (int di = 0; di < 2; di++) {
            cg_dtype dt = dts[di];
            cg_tensor *a = rand_cpu(s->na, s->a, 11 + si, 2.0f, 0.0f, dt);
            cg_tensor *b = rand_cpu(s->nb, s->b, 29 + si, 2.0f, 0.1f, dt);
            cg_tensor *ga = to_gpu(a, dt), *gb = to_gpu(b, dt);
            int nd;
            int64_t shape[CG_MAX_DIMS];
            assert_ok(cg_broadcast_shapes(a->ndim, a->shape, b->ndim, b->shape, &nd, shape));
            for (int op = 0; op < CG_BINARY_OP_COUNT; op++) {
                if (op == CG_OP_POW) continue; /* below, on positive bases */
                cg_tensor *ref = cg_tensor_empty(cpu_arena(), CG_F32, nd, shape);
                cg_tensor *out = cg_tensor_empty(gpu_arena(), dt, nd, shape);
                assert_ok(cg_binary_into(op, ref, a, b));
                assert_ok(cg_binary_into(op, out, ga, gb));
                assert_matches(out, ref, tol_for(dt), cg_binary_op_name(op));
            }
        }
    }
    /* pow on positive bases, and a transposed (strided) operand with an f32 output from bf16 inputs */
    int64_t sh[2] = {65, 33};
    cg_tensor *a = rand_cpu(2, sh, 5, 1.0f, 1.5f, CG_BF16), *b = rand_cpu(2, sh, 6, 1.0f, 0.0f, CG_BF16);
    cg_tensor *ref = cg_tensor_empty(cpu_arena(), CG_F32, 2, sh);
    cg_tensor *out = cg_tensor_empty(gpu_arena(), CG_F32, 2, sh);
    assert_ok(cg_binary_into(CG_OP_POW, ref, a, b));
    assert_ok(cg_binary_into(CG_OP_POW, out, to_gpu(a, CG_BF16), to_gpu(b, CG_BF16)));
    assert_matches(out, ref, 1e-5, "pow");
    int64_t tsh[2] = {33, 65};
    cg_tensor *at = cg_view_transpose(a, 0, 1), *gat = cg_view_transpose(to_gpu(a, CG_F32), 0, 1);
    cg_tensor *bt = rand_cpu(2, tsh, 7, 1.0f, 0.0f, CG_F32);
    ref = cg_tensor_empty(cpu_arena(), CG_F32, 2, tsh);
    out = cg_tensor_empty(gpu_arena(), CG_F32, 2, tsh);
    assert_ok(cg_binary_into(CG_OP_SUB, ref, at, bt));
    assert_ok(cg_binary_into(CG_OP_SUB, out, gat, to_gpu(bt, CG_F32)));
    assert_matches(out, ref, 1e-6, "sub of a transposed view");
    /* in place: out is one of the inputs */
    cg_tensor *g = to_gpu(bt, CG_F32);
    assert_ok(cg_binary_into(CG_OP_MUL, g, g, g));
    assert_ok(cg_binary_into(CG_OP_MUL, bt, bt, bt));
    assert_matches(g, bt, 1e-6, "in-place mul");
}

static void test_unary_family(void **state) {
    (void)state;
    cg_test_require_gpu();
    int64_t shapes[3][2] = {{1, 7}, {33, 769}, {512, 1031}};
    for (int si = 0; si < 3; si++) {
        for (int di = 0; di < 2; di++) {
            cg_dtype dt = di ? CG_BF16 : CG_F32;
            cg_tensor *x = rand_cpu(2, shapes[si], 3 + si, 3.0f, 0.0f, dt);
            cg_tensor *xp = rand_cpu(2, shapes[si], 4 + si, 1.0f, 1.2f, dt); /* positive: log, sqrt, rsqrt */
            cg_tensor *gx = to_gpu(x, dt), *gxp = to_gpu(xp, dt);
            for (int op = 0; op < CG_UNARY_OP_COUNT; op++) {
                bool pos = op == CG_OP_LOG || op == CG_OP_SQRT || op == CG_OP_RSQRT || op == CG_OP_RECIPROCAL;
                cg_tensor *ref = cg_tensor_empty(cpu_arena(), CG_F32, 2, shapes[si]);
                cg_tensor *out = cg_tensor_empty(gpu_arena(), dt, 2, shapes[si]);
                assert_ok(cg_unary_into(op, ref, pos ? xp : x));
                assert_ok(cg_unary_into(op, out, pos ? gxp : gx));
                assert_matches(out, ref, tol_for(dt), cg_unary_op_name(op));
            }
            cg_tensor *ref = cg_tensor_empty(cpu_arena(), CG_F32, 2, shapes[si]);
            cg_tensor *out = cg_tensor_empty(gpu_arena(), dt, 2, shapes[si]);
            assert_ok(cg_affine_into(ref, x, -1.5f, 0.25f));
            assert_ok(cg_affine_into(out, gx, -1.5f, 0.25f));
            assert_matches(out, ref, tol_for(dt), "affine");
            assert_ok(cg_pow_scalar_into(ref, xp, 1.7f));
            assert_ok(cg_pow_scalar_into(out, gxp, 1.7f));
            assert_matches(out, ref, tol_for(dt), "pow_scalar");
            assert_ok(cg_clamp_into(ref, x, -0.5f, 0.75f));
            assert_ok(cg_clamp_into(out, gx, -0.5f, 0.75f));
            assert_matches(out, ref, tol_for(dt), "clamp");
        }
    }
}

static void test_where(void **state) {
    (void)state;
    cg_test_require_gpu();
    int64_t sh[2] = {37, 129}, row[1] = {129};
    cg_tensor *cond = cg_tensor_empty(cpu_arena(), CG_U8, 2, sh);
    uint8_t *c = cg_data(cond);
    uint64_t s = 99;
    for (int64_t i = 0; i < 37 * 129; i++) c[i] = cg_test_randf(&s) > 0.0f;
    cg_tensor *a = rand_cpu(2, sh, 1, 1.0f, 0.0f, CG_F32), *b = rand_cpu(1, row, 2, 1.0f, 5.0f, CG_F32);
    cg_tensor *ref = cg_tensor_empty(cpu_arena(), CG_F32, 2, sh);
    cg_tensor *out = cg_tensor_empty(gpu_arena(), CG_F32, 2, sh);
    assert_ok(cg_where_into(ref, cond, a, b));
    assert_ok(cg_where_into(out, to_gpu(cond, CG_U8), to_gpu(a, CG_F32), to_gpu(b, CG_F32)));
    assert_matches(out, ref, 0.0, "where");
    /* the devices must agree */
    assert_int_equal(cg_where_into(out, cond, to_gpu(a, CG_F32), to_gpu(b, CG_F32)), CG_ERR_DEVICE);
    assert_error_contains("where: cond");
}

/* ------------------------------------------------------------------ reductions */

static void test_reductions(void **state) {
    (void)state;
    cg_test_require_gpu();
    int64_t shapes[3][3] = {{5, 769, 7}, {1, 3, 1}, {64, 4096, 3}};
    for (int si = 0; si < 3; si++) {
        for (int di = 0; di < 2; di++) {
            cg_dtype dt = di ? CG_BF16 : CG_F32;
            cg_tensor *x = rand_cpu(3, shapes[si], 17 + si, 1.0f, 0.2f, dt);
            cg_tensor *gx = to_gpu(x, dt);
            for (int axis = 0; axis < 3; axis++) {
                for (int op = 0; op < CG_REDUCE_OP_COUNT; op++) {
                    int64_t osh[3];
                    memcpy(osh, shapes[si], sizeof osh);
                    osh[axis] = 1;
                    cg_tensor *ref = cg_tensor_empty(cpu_arena(), CG_F32, 3, osh);
                    cg_tensor *out = cg_tensor_empty(gpu_arena(), CG_F32, 3, osh);
                    bool ext = op == CG_REDUCE_MAX || op == CG_REDUCE_MIN;
                    cg_tensor *rarg = ext ? cg_tensor_empty(cpu_arena(), CG_I64, 3, osh) : NULL;
                    cg_tensor *garg = ext ? cg_tensor_empty(gpu_arena(), CG_I64, 3, osh) : NULL;
                    assert_ok(cg_reduce_into(op, ref, rarg, x, axis, true));
                    assert_ok(cg_reduce_into(op, out, garg, gx, axis, true));
                    /* sums: an f32 tree vs the CPU's double sum; the 0.2 shift keeps every sum near n * 0.2,
                     * so the f32 error (~n eps |x|) stays far below 2e-5 of the largest */
                    assert_matches(out, ref, ext ? 0.0 : 2e-5, cg_reduce_op_name(op));
                    if (ext) {
                        cg_tensor *ga = cg_tensor_clone(cpu_arena(), garg);
                        for (int64_t i = 0; i < cg_numel(rarg); i++)
                            assert_int_equal((int64_t)cg_get_flat(ga, i), (int64_t)cg_get_flat(rarg, i));
                    }
                }
            }
        }
    }
    /* few long rows: the axis is cut into slices (two passes) */
    int64_t lsh[2] = {3, 100003}, lo[1] = {3};
    cg_tensor *lx = rand_cpu(2, lsh, 5, 1.0f, 0.0f, CG_F32);
    for (int op = 0; op < CG_REDUCE_OP_COUNT; op++) {
        bool ext = op == CG_REDUCE_MAX || op == CG_REDUCE_MIN;
        cg_tensor *ref = cg_tensor_empty(cpu_arena(), CG_F32, 1, lo), *out = cg_tensor_empty(gpu_arena(), CG_F32, 1, lo);
        cg_tensor *rarg = ext ? cg_tensor_empty(cpu_arena(), CG_I64, 1, lo) : NULL;
        cg_tensor *garg = ext ? cg_tensor_empty(gpu_arena(), CG_I64, 1, lo) : NULL;
        assert_ok(cg_reduce_into(op, ref, rarg, lx, 1, false));
        assert_ok(cg_reduce_into(op, out, garg, to_gpu(lx, CG_F32), 1, false));
        assert_matches(out, ref, ext ? 0.0 : 1e-4, cg_reduce_op_name(op));
        if (ext) {
            cg_tensor *ga = cg_tensor_clone(cpu_arena(), garg);
            for (int i = 0; i < 3; i++) assert_int_equal((int64_t)cg_get_flat(ga, i), (int64_t)cg_get_flat(rarg, i));
        }
    }
    /* a strided input (transposed) and a dropped axis */
    int64_t sh[2] = {300, 70}, osh[1] = {300};
    cg_tensor *x = rand_cpu(2, sh, 3, 1.0f, 0.0f, CG_F32);
    cg_tensor *ref = cg_tensor_empty(cpu_arena(), CG_F32, 1, osh), *out = cg_tensor_empty(gpu_arena(), CG_F32, 1, osh);
    assert_ok(cg_reduce_into(CG_REDUCE_MEAN, ref, NULL, cg_view_transpose(x, 0, 1), 0, false));
    assert_ok(cg_reduce_into(CG_REDUCE_MEAN, out, NULL, cg_view_transpose(to_gpu(x, CG_F32), 0, 1), 0, false));
    assert_matches(out, ref, 1e-5, "mean of a transposed view");
    /* NaN propagates into max and its index points at the first NaN */
    float *v = cg_data(x);
    v[5] = NAN, v[9] = NAN;
    int64_t one[1] = {1};
    int64_t row_shape[2] = {1, 70};
    cg_tensor *r0 = cg_view_reshape(cg_view_slice(x, 0, 0, 1, 1), 2, row_shape);
    cg_tensor *m = cg_tensor_empty(gpu_arena(), CG_F32, 1, one), *mi = cg_tensor_empty(gpu_arena(), CG_I64, 1, one);
    assert_ok(cg_reduce_into(CG_REDUCE_MAX, m, mi, cg_view_reshape(to_gpu(r0, CG_F32), 1, (int64_t[]){70}), 0, false));
    assert_true(isnan(cg_get_flat(to_cpu(m), 0)));
    assert_int_equal((int64_t)cg_get_flat(cg_tensor_clone(cpu_arena(), mi), 0), 5);
}

/* ------------------------------------------------------------------ copies and fills */

static void test_copy_cast_and_fill(void **state) {
    (void)state;
    cg_test_require_gpu();
    int64_t sh[2] = {129, 67}, tsh[2] = {67, 129};
    cg_tensor *x = rand_cpu(2, sh, 8, 100.0f, 0.0f, CG_F32);
    cg_tensor *gx = to_gpu(x, CG_F32);
    /* on-device transposing casts to every dtype, back to f32 on the CPU; compared with the CPU's copy */
    const cg_dtype dts[] = {CG_F32, CG_BF16, CG_F16, CG_I32, CG_I64, CG_U8};
    for (size_t i = 0; i < sizeof dts / sizeof *dts; i++) {
        cg_tensor *g = cg_tensor_empty(gpu_arena(), dts[i], 2, tsh);
        cg_tensor *c = cg_tensor_empty(cpu_arena(), dts[i], 2, tsh);
        assert_ok(cg_copy(g, cg_view_transpose(gx, 0, 1)));
        assert_ok(cg_copy(c, cg_view_transpose(x, 0, 1)));
        cg_tensor *back = cg_tensor_clone(cpu_arena(), g);
        for (int64_t k = 0; k < cg_numel(c); k++) assert_true(cg_get_flat(back, k) == cg_get_flat(c, k));
        /* and back from that dtype to f32 on the GPU */
        cg_tensor *g32 = cg_tensor_empty(gpu_arena(), CG_F32, 2, tsh), *c32 = cg_tensor_empty(cpu_arena(), CG_F32, 2, tsh);
        assert_ok(cg_copy(g32, g));
        assert_ok(cg_copy(c32, c));
        assert_matches(g32, c32, 0.0, cg_dtype_name(dts[i]));
    }
    /* a strided GPU destination written from a strided CPU source, and the reverse */
    cg_tensor *gdst = cg_tensor_zeros(gpu_arena(), CG_BF16, 2, sh);
    assert_ok(cg_copy(cg_view_transpose(gdst, 0, 1), cg_view_transpose(x, 0, 1)));
    cg_tensor *ref = cg_tensor_to(cpu_arena(), x, CG_BF16);
    assert_matches(gdst, to_cpu(ref), 0.0, "strided upload");
    cg_tensor *hdst = cg_tensor_zeros(cpu_arena(), CG_F32, 2, tsh);
    assert_ok(cg_copy(hdst, cg_view_transpose(gx, 0, 1)));
    for (int64_t r = 0; r < 67; r++)
        for (int64_t c = 0; c < 129; c++)
            assert_true(cg_get(hdst, (int64_t[]){r, c}) == cg_get(x, (int64_t[]){c, r}));
    /* a large round trip through the staging buffers (more than two 8 MiB chunks) */
    int64_t big[1] = {5 * 1024 * 1024 + 3};
    cg_tensor *bx = rand_cpu(1, big, 1, 1.0f, 0.0f, CG_F32);
    cg_tensor *bback = cg_tensor_clone(cpu_arena(), to_gpu(bx, CG_F32));
    assert_memory_equal(cg_data(bback), cg_data(bx), cg_nbytes(bx));
    /* fill: every dtype, and a strided (sliced) view */
    for (size_t i = 0; i < sizeof dts / sizeof *dts; i++) {
        cg_tensor *g = cg_tensor_zeros(gpu_arena(), dts[i], 2, sh);
        assert_ok(cg_fill(cg_view_slice(g, 1, 1, 67, 2), 3.0));
        cg_tensor *back = to_cpu(g);
        for (int64_t r = 0; r < 129; r++)
            for (int64_t c = 0; c < 67; c++)
                assert_true(cg_get(back, (int64_t[]){r, c}) == (c % 2 == 1 ? 3.0 : 0.0));
    }
}

/* ------------------------------------------------------------------ matmul */

typedef struct mm_case {
    int64_t M, N, K;
} mm_case;

/* C = op(A) op(B) on the GPU vs the CPU, for the given input dtype; batch dims: a [batch_a..., ...], b
 * [batch_b..., ...]. */
static void check_matmul(const mm_case *c, bool ta, bool tb, cg_dtype dt, int nba, const int64_t *ba, int nbb,
                         const int64_t *bb, float alpha, float beta, double tol) {
    int64_t ash[CG_MAX_DIMS], bsh[CG_MAX_DIMS];
    for (int i = 0; i < nba; i++) ash[i] = ba[i];
    for (int i = 0; i < nbb; i++) bsh[i] = bb[i];
    ash[nba] = ta ? c->K : c->M, ash[nba + 1] = ta ? c->M : c->K;
    bsh[nbb] = tb ? c->N : c->K, bsh[nbb + 1] = tb ? c->K : c->N;
    cg_tensor *a = rand_cpu(nba + 2, ash, 100 + (uint64_t)c->M, 1.0f, 0.0f, dt);
    cg_tensor *b = rand_cpu(nbb + 2, bsh, 200 + (uint64_t)c->N, 1.0f, 0.0f, dt);
    int nd;
    int64_t osh[CG_MAX_DIMS];
    assert_ok(cg_broadcast_shapes(nba, ba, nbb, bb, &nd, osh));
    osh[nd] = c->M, osh[nd + 1] = c->N;
    cg_tensor *ref = rand_cpu(nd + 2, osh, 7, 1.0f, 0.0f, CG_F32);
    cg_tensor *out = to_gpu(ref, CG_F32);
    assert_ok(cg_matmul_into(ref, a, b, ta, tb, alpha, beta));
    assert_ok(cg_matmul_into(out, to_gpu(a, dt), to_gpu(b, dt), ta, tb, alpha, beta));
    char what[128];
    snprintf(what, sizeof what, "matmul %s M%lld N%lld K%lld%s%s", cg_dtype_name(dt), (long long)c->M, (long long)c->N,
             (long long)c->K, ta ? " A^T" : "", tb ? " B^T" : "");
    assert_matches(out, ref, tol, what);
}

static void test_matmul_transposes_and_dtypes(void **state) {
    (void)state;
    cg_test_require_gpu();
    const mm_case cases[] = {{7, 5, 3}, {64, 33, 129}, {257, 511, 128}, {1, 769, 64}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        for (int t = 0; t < 4; t++) {
            bool ta = t & 1, tb = t & 2;
            bool old = cg_matmul_set_tf32(false);
            check_matmul(&cases[i], ta, tb, CG_F32, 0, NULL, 0, NULL, 1.0f, 0.0f, 1e-5);
            check_matmul(&cases[i], ta, tb, CG_F32, 0, NULL, 0, NULL, 0.5f, 2.0f, 1e-5); /* alpha, beta */
            cg_matmul_set_tf32(true);
            check_matmul(&cases[i], ta, tb, CG_F32, 0, NULL, 0, NULL, 1.0f, 0.0f, 5e-3);
            cg_matmul_set_tf32(old);
            check_matmul(&cases[i], ta, tb, CG_BF16, 0, NULL, 0, NULL, 1.0f, 0.0f, 1e-2);
        }
    }
    /* bf16 output */
    int64_t as[2] = {33, 64}, bs[2] = {64, 17}, os[2] = {33, 17};
    cg_tensor *a = rand_cpu(2, as, 1, 1.0f, 0.0f, CG_BF16), *b = rand_cpu(2, bs, 2, 1.0f, 0.0f, CG_BF16);
    cg_tensor *ref = cg_tensor_empty(cpu_arena(), CG_F32, 2, os), *out = cg_tensor_empty(gpu_arena(), CG_BF16, 2, os);
    assert_ok(cg_matmul_into(ref, a, b, false, false, 1.0f, 0.0f));
    assert_ok(cg_matmul_into(out, to_gpu(a, CG_BF16), to_gpu(b, CG_BF16), false, false, 1.0f, 0.0f));
    assert_matches(out, ref, 1e-2, "matmul bf16 out");
}

static void test_matmul_batched(void **state) {
    (void)state;
    cg_test_require_gpu();
    bool old = cg_matmul_set_tf32(false);
    mm_case c = {31, 17, 45};
    int64_t b3[1] = {3}, b23[2] = {2, 3}, b21[2] = {2, 1}, b13[2] = {1, 3};
    for (int t = 0; t < 4; t++) {
        bool ta = t & 1, tb = t & 2;
        check_matmul(&c, ta, tb, CG_F32, 1, b3, 1, b3, 1.0f, 0.0f, 1e-5);  /* plain strided batch */
        check_matmul(&c, ta, tb, CG_F32, 1, b3, 0, NULL, 1.0f, 0.0f, 1e-5); /* b shared by the batch */
        check_matmul(&c, ta, tb, CG_F32, 2, b23, 1, b3, 1.0f, 0.0f, 1e-5);
        check_matmul(&c, ta, tb, CG_F32, 2, b21, 2, b13, 1.0f, 0.0f, 1e-5); /* both broadcast: packed */
        check_matmul(&c, ta, tb, CG_BF16, 2, b23, 2, b23, 1.0f, 0.0f, 1e-2);
    }
    cg_matmul_set_tf32(old);
}

static void test_matmul_epilogues(void **state) {
    (void)state;
    cg_test_require_gpu();
    bool old = cg_matmul_set_tf32(false);
    int64_t shapes[2][3] = {{37, 65, 24}, {256, 768, 64}};
    for (int si = 0; si < 2; si++) {
        int64_t M = shapes[si][0], N = shapes[si][1], K = shapes[si][2];
        for (int di = 0; di < 2; di++) {
            cg_dtype dt = di ? CG_BF16 : CG_F32;
            cg_tensor *x = rand_cpu(2, (int64_t[]){M, K}, 1, 1.0f, 0.0f, dt);
            cg_tensor *w = rand_cpu(2, (int64_t[]){N, K}, 2, 1.0f, 0.0f, dt);
            cg_tensor *bias = rand_cpu(1, (int64_t[]){N}, 3, 1.0f, 0.0f, dt);
            for (int gelu = 0; gelu < 2; gelu++) {
                for (int with_bias = 0; with_bias < 2; with_bias++) {
                    cg_tensor *ref = cg_tensor_empty(cpu_arena(), CG_F32, 2, (int64_t[]){M, N});
                    cg_tensor *out = cg_tensor_empty(gpu_arena(), dt, 2, (int64_t[]){M, N});
                    assert_ok(cg_matmul_bias_into(ref, x, w, false, true, with_bias ? bias : NULL, gelu));
                    assert_ok(cg_matmul_bias_into(out, to_gpu(x, dt), to_gpu(w, dt), false, true,
                                                  with_bias ? to_gpu(bias, dt) : NULL, gelu));
                    /* cuBLASLt's GELU (tanh form) is evaluated its own way, possibly with a fast tanh: 1e-3 of
                     * the largest value in f32; a missing or misplaced GELU or bias is off by O(1) */
                    assert_matches(out, ref, dt == CG_BF16 ? 1e-2 : (gelu ? 1e-3 : 1e-5),
                                   gelu ? "gelu epilogue" : "bias epilogue");
                }
            }
        }
    }
    /* the heuristic cache: the first call of a shape asks cuBLASLt, the same shape again is served from it */
    int64_t as[2] = {48, 80}, bs[2] = {80, 56}, os[2] = {48, 56};
    cg_tensor *a = to_gpu(rand_cpu(2, as, 4, 1.0f, 0.0f, CG_F32), CG_F32), *b = to_gpu(rand_cpu(2, bs, 5, 1.0f, 0.0f, CG_F32), CG_F32);
    cg_tensor *c = cg_tensor_empty(gpu_arena(), CG_F32, 2, os);
    uint64_t h0, m0, h1, m1, h2, m2;
    cg_matmul_cuda_cache_stats(&h0, &m0);
    assert_ok(cg_matmul_into(c, a, b, false, false, 1.0f, 0.0f));
    cg_matmul_cuda_cache_stats(&h1, &m1);
    assert_ok(cg_matmul_into(c, a, b, false, false, 1.0f, 0.0f));
    cg_matmul_cuda_cache_stats(&h2, &m2);
    assert_int_equal(m1, m0 + 1);
    assert_int_equal(h2, h1 + 1);
    assert_int_equal(m2, m1);
    cg_matmul_set_tf32(old);
}

/* ------------------------------------------------------------------ autograd on the GPU */

/* A leaf on the GPU with the CPU leaf's values. */
static cg_tensor *gpu_leaf(const cg_tensor *cpu, cg_dtype dt) {
    cg_tensor *g = cg_tensor_to(cg_persistent_arena(GPU), cpu, dt);
    assert_non_null(g);
    assert_ok(cg_set_requires_grad(g, true));
    return g;
}

static void check_grad(const cg_tensor *gpu_leaf_t, const cg_tensor *cpu_leaf, double tol, const char *what) {
    assert_non_null(gpu_leaf_t->grad);
    assert_non_null(cpu_leaf->grad);
    assert_matches(gpu_leaf_t->grad, cpu_leaf->grad, tol, what);
}

/* loss = sum(y * r) for a fixed random r: its gradient wrt y is r, so every path of the backward is used. */
static cg_tensor *weighted_sum(const cg_tensor *y, const cg_tensor *r) { return cg_sum_all(cg_mul(y, r)); }

static void test_linear_and_lora_autograd(void **state) {
    (void)state;
    cg_test_require_gpu();
    bool old = cg_matmul_set_tf32(false);
    int64_t B = 3, T = 5, C = 24, O = 40, R = 4;
    for (int gelu = 0; gelu < 2; gelu++) {
        int64_t xs[3] = {B, T, C}, ws[2] = {O, C}, bs[1] = {O}, ys[3] = {B, T, O};
        cg_tensor *x = cg_test_rand_tensor(3, xs, 1, 1.0f, 0.0f, true);
        cg_tensor *w = cg_test_rand_tensor(2, ws, 2, 0.5f, 0.0f, true);
        cg_tensor *b = cg_test_rand_tensor(1, bs, 3, 0.5f, 0.0f, true);
        cg_tensor *r = cg_test_rand_tensor(3, ys, 4, 1.0f, 0.0f, false);
        cg_tensor *gx = gpu_leaf(x, CG_F32), *gw = gpu_leaf(w, CG_F32), *gb = gpu_leaf(b, CG_F32);
        cg_tensor *y = cg_linear(x, w, b, gelu), *gy = cg_linear(gx, gw, gb, gelu);
        assert_non_null(gy);
        assert_matches(gy, y, 1e-5, "linear forward");
        assert_ok(cg_backward(weighted_sum(y, r)));
        assert_ok(cg_backward(weighted_sum(gy, to_gpu(r, CG_F32))));
        check_grad(gx, x, 1e-5, "linear dx");
        check_grad(gw, w, 1e-5, "linear dw");
        check_grad(gb, b, 1e-5, "linear dbias");
        cg_step_end();
    }
    /* LoRA linear (no dropout) */
    int64_t xs[2] = {7, C}, ws[2] = {O, C}, as[2] = {R, C}, bsh[2] = {O, R}, ys[2] = {7, O};
    cg_tensor *x = cg_test_rand_tensor(2, xs, 5, 1.0f, 0.0f, true);
    cg_tensor *w = cg_test_rand_tensor(2, ws, 6, 0.5f, 0.0f, false);
    cg_tensor *la = cg_test_rand_tensor(2, as, 7, 0.5f, 0.0f, true);
    cg_tensor *lb = cg_test_rand_tensor(2, bsh, 8, 0.5f, 0.0f, true);
    cg_tensor *r = cg_test_rand_tensor(2, ys, 9, 1.0f, 0.0f, false);
    cg_tensor *gx = gpu_leaf(x, CG_F32), *gla = gpu_leaf(la, CG_F32), *glb = gpu_leaf(lb, CG_F32);
    cg_tensor *gw = to_gpu(w, CG_BF16); /* a frozen bf16 base weight, as in LoRA training */
    cg_tensor *wr = to_cpu(gw);        /* the same values in f32 for the CPU */
    cg_tensor *y = cg_lora_linear(x, wr, NULL, la, lb, 2.0f, 0.0f, NULL);
    cg_tensor *gy = cg_lora_linear(gx, gw, NULL, gla, glb, 2.0f, 0.0f, NULL);
    assert_non_null(gy);
    assert_matches(gy, y, 1e-5, "lora forward");
    assert_ok(cg_backward(weighted_sum(y, r)));
    assert_ok(cg_backward(weighted_sum(gy, to_gpu(r, CG_F32))));
    check_grad(gx, x, 1e-5, "lora dx");
    check_grad(gla, la, 1e-5, "lora dA");
    check_grad(glb, lb, 1e-5, "lora dB");
    cg_matmul_set_tf32(old);
}

/* Mixed precision: bf16 weights and activations give a bf16 result (f32 math inside), f32 gradients. */
static void test_bf16_linear_autograd(void **state) {
    (void)state;
    cg_test_require_gpu();
    int64_t xs[2] = {33, 64}, ws[2] = {48, 64}, bs[1] = {48}, ys[2] = {33, 48};
    cg_tensor *x = rand_cpu(2, xs, 1, 1.0f, 0.0f, CG_BF16), *w = rand_cpu(2, ws, 2, 0.5f, 0.0f, CG_BF16);
    cg_tensor *b = rand_cpu(1, bs, 3, 0.5f, 0.0f, CG_BF16);
    cg_tensor *r = cg_test_rand_tensor(2, ys, 4, 1.0f, 0.0f, false);
    assert_ok(cg_set_requires_grad(x, true));
    assert_ok(cg_set_requires_grad(w, true));
    assert_ok(cg_set_requires_grad(b, true));
    cg_tensor *gx = gpu_leaf(x, CG_BF16), *gw = gpu_leaf(w, CG_BF16), *gb = gpu_leaf(b, CG_BF16);
    cg_tensor *y = cg_linear(x, w, b, true), *gy = cg_linear(gx, gw, gb, true);
    assert_non_null(gy);
    assert_int_equal(gy->dtype, CG_BF16);
    assert_matches(gy, y, 1e-2, "bf16 linear forward");
    cg_tensor *sq = cg_square(gy); /* an elementwise op on bf16 stays bf16 */
    assert_non_null(sq);
    assert_int_equal(sq->dtype, CG_BF16);
    assert_ok(cg_backward(weighted_sum(y, r)));
    assert_ok(cg_backward(weighted_sum(gy, to_gpu(r, CG_F32))));
    assert_int_equal(gw->grad->dtype, CG_F32);
    check_grad(gx, x, 1e-2, "bf16 linear dx");
    check_grad(gw, w, 1e-2, "bf16 linear dw");
    check_grad(gb, b, 1e-2, "bf16 linear dbias");
}

static void test_elementwise_autograd(void **state) {
    (void)state;
    cg_test_require_gpu();
    int64_t as[2] = {9, 33}, bs[1] = {33};
    cg_tensor *a = cg_test_rand_tensor(2, as, 1, 1.0f, 0.0f, true);
    cg_tensor *b = cg_test_rand_tensor(1, bs, 2, 1.0f, 2.0f, true);
    cg_tensor *ga = gpu_leaf(a, CG_F32), *gb = gpu_leaf(b, CG_F32);
    /* mean over rows of tanh(a / b) * exp(b) - max(a, axis 1) */
    cg_tensor *l = cg_sub(cg_mean_all(cg_mul(cg_tanh(cg_div(a, b)), cg_exp(b))), cg_mean_all(cg_max(a, 1, false)));
    cg_tensor *gl = cg_sub(cg_mean_all(cg_mul(cg_tanh(cg_div(ga, gb)), cg_exp(gb))), cg_mean_all(cg_max(ga, 1, false)));
    assert_non_null(gl);
    assert_matches(gl, l, 1e-5, "loss");
    assert_ok(cg_backward(l));
    assert_ok(cg_backward(gl));
    check_grad(ga, a, 1e-5, "da");
    check_grad(gb, b, 1e-5, "db");
}

/* ------------------------------------------------------------------ index ops */

/* Random i64 indices in [0, limit) of the shape. */
static cg_tensor *rand_index(int nd, const int64_t *shape, int64_t limit, uint64_t seed, cg_dtype dt) {
    cg_tensor *t = cg_tensor_empty(cpu_arena(), dt, nd, shape);
    assert_non_null(t);
    for (int64_t i = 0; i < cg_numel(t); i++) {
        seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
        cg_set_flat(t, i, (double)(seed % (uint64_t)limit));
    }
    return t;
}

static cg_tensor *idx_gpu(const cg_tensor *t) {
    cg_tensor *g = cg_tensor_clone(gpu_arena(), t);
    assert_non_null(g);
    return g;
}

static void test_gather_select_embedding(void **state) {
    (void)state;
    cg_test_require_gpu();
    for (int di = 0; di < 2; di++) {
        cg_dtype dt = di ? CG_BF16 : CG_F32;
        /* gather along axis 1 of [6, 50, 7] with an index [6, 13, 5] */
        int64_t xs[3] = {6, 50, 7}, is[3] = {6, 13, 5};
        cg_tensor *x = rand_cpu(3, xs, 1, 1.0f, 0.0f, dt);
        cg_tensor *idx = rand_index(3, is, 50, 3, CG_I64);
        cg_tensor *ref = cg_tensor_empty(cpu_arena(), CG_F32, 3, is), *out = cg_tensor_empty(gpu_arena(), dt, 3, is);
        assert_ok(cg_gather_into(ref, x, 1, idx));
        assert_ok(cg_gather_into(out, to_gpu(x, dt), 1, idx_gpu(idx)));
        assert_matches(out, ref, 0.0, "gather");
        /* index_select of 9 slices along axis 0 (i32 index) */
        int64_t n9[1] = {9}, os[3] = {9, 50, 7};
        cg_tensor *sel = rand_index(1, n9, 6, 5, CG_I32);
        ref = cg_tensor_empty(cpu_arena(), CG_F32, 3, os);
        out = cg_tensor_empty(gpu_arena(), dt, 3, os);
        assert_ok(cg_index_select_into(ref, x, 0, sel));
        assert_ok(cg_index_select_into(out, to_gpu(x, dt), 0, idx_gpu(sel)));
        assert_matches(out, ref, 0.0, "index_select");
        /* embedding: weight [1000, 769], ids [4, 33] */
        int64_t ws[2] = {1000, 769}, ids_s[2] = {4, 33}, es[3] = {4, 33, 769};
        cg_tensor *w = rand_cpu(2, ws, 2, 1.0f, 0.0f, dt);
        cg_tensor *ids = rand_index(2, ids_s, 1000, 9, CG_I32);
        ref = cg_tensor_empty(cpu_arena(), CG_F32, 3, es);
        out = cg_tensor_empty(gpu_arena(), dt, 3, es);
        assert_ok(cg_embedding_into(ref, w, ids));
        assert_ok(cg_embedding_into(out, to_gpu(w, dt), idx_gpu(ids)));
        assert_matches(out, ref, 0.0, "embedding");
        /* a bad id fails before anything is written, naming the id and its position */
        cg_set_flat(ids, 40, 1000);
        assert_int_equal(cg_embedding_into(out, to_gpu(w, dt), idx_gpu(ids)), CG_ERR_INVALID_ARG);
        assert_error_contains("embedding: id 1000 at position 40 is outside [0, 1000)");
    }
}

static void test_scatter_adds_and_concat(void **state) {
    (void)state;
    cg_test_require_gpu();
    /* scatter_add along axis 0 with many repeats (the sums must equal the CPU's exactly: same order) */
    int64_t os[2] = {5, 129}, ss[2] = {300, 129};
    cg_tensor *src = rand_cpu(2, ss, 1, 1.0f, 0.0f, CG_F32);
    cg_tensor *idx = rand_index(2, ss, 5, 2, CG_I64);
    cg_tensor *ref = rand_cpu(2, os, 3, 1.0f, 0.0f, CG_F32);
    cg_tensor *out = to_gpu(ref, CG_F32);
    assert_ok(cg_scatter_add_into(ref, 0, idx, src));
    assert_ok(cg_scatter_add_into(out, 0, idx_gpu(idx), to_gpu(src, CG_F32)));
    assert_matches(out, ref, 0.0, "scatter_add");
    /* index_add along axis 1 (packed out: through the GPU sort, three outer slices) */
    int64_t o2[3] = {3, 11, 17}, s2[3] = {3, 40, 17}, n40[1] = {40};
    cg_tensor *src2 = rand_cpu(3, s2, 4, 1.0f, 0.0f, CG_BF16);
    cg_tensor *sel = rand_index(1, n40, 11, 5, CG_I32);
    ref = cg_tensor_zeros(cpu_arena(), CG_F32, 3, o2);
    out = cg_tensor_zeros(gpu_arena(), CG_F32, 3, o2);
    assert_ok(cg_index_add_into(ref, 1, sel, src2));
    assert_ok(cg_index_add_into(out, 1, idx_gpu(sel), to_gpu(src2, CG_BF16)));
    assert_matches(out, ref, 0.0, "index_add");
    /* index_add along axis 0 (one outer slice) with a bf16 source and a strided out: the column walk */
    int64_t s3[2] = {70, 20}, n70[1] = {70};
    cg_tensor *src3 = rand_cpu(2, s3, 6, 1.0f, 0.0f, CG_BF16), *sel3 = rand_index(1, n70, 9, 8, CG_I64);
    cg_tensor *ref3 = cg_tensor_zeros(cpu_arena(), CG_F32, 2, (int64_t[]){20, 9});
    cg_tensor *out3 = cg_tensor_zeros(gpu_arena(), CG_F32, 2, (int64_t[]){20, 9});
    assert_ok(cg_index_add_into(cg_view_transpose(ref3, 0, 1), 0, sel3, src3));
    assert_ok(cg_index_add_into(cg_view_transpose(out3, 0, 1), 0, idx_gpu(sel3), to_gpu(src3, CG_BF16)));
    assert_matches(out3, ref3, 0.0, "index_add into a strided out");
    /* embedding backward: [V, C] += rows of grad_out by id, many repeats, bit-equal to the CPU */
    int64_t gws[2] = {50, 96}, ids_s[2] = {8, 64}, gs[3] = {8, 64, 96};
    cg_tensor *ids = rand_index(2, ids_s, 50, 7, CG_I64);
    cg_tensor *g = rand_cpu(3, gs, 8, 1.0f, 0.0f, CG_F32);
    ref = cg_tensor_zeros(cpu_arena(), CG_F32, 2, gws);
    out = cg_tensor_zeros(gpu_arena(), CG_F32, 2, gws);
    assert_ok(cg_embedding_backward_into(ref, ids, g));
    assert_ok(cg_embedding_backward_into(out, idx_gpu(ids), to_gpu(g, CG_F32)));
    assert_matches(out, ref, 0.0, "embedding_backward");
    /* concat along the middle axis, one input strided */
    int64_t a_s[3] = {4, 3, 9}, b_s[3] = {4, 5, 9}, bt_s[3] = {4, 9, 5}, c_s[3] = {4, 8, 9};
    cg_tensor *a = rand_cpu(3, a_s, 1, 1.0f, 0.0f, CG_F32), *bt = rand_cpu(3, bt_s, 2, 1.0f, 0.0f, CG_F32);
    (void)b_s;
    const cg_tensor *xs[2] = {a, cg_view_transpose(bt, 1, 2)};
    const cg_tensor *gxs[2] = {to_gpu(a, CG_F32), cg_view_transpose(to_gpu(bt, CG_F32), 1, 2)};
    ref = cg_tensor_empty(cpu_arena(), CG_F32, 3, c_s);
    out = cg_tensor_empty(gpu_arena(), CG_F32, 3, c_s);
    assert_ok(cg_concat_into(ref, 2, xs, 1));
    assert_ok(cg_concat_into(out, 2, gxs, 1));
    assert_matches(out, ref, 0.0, "concat");
}

static void test_embedding_autograd(void **state) {
    (void)state;
    cg_test_require_gpu();
    int64_t ws[2] = {97, 33}, ids_s[2] = {3, 20}, ys[3] = {3, 20, 33};
    cg_tensor *w = cg_test_rand_tensor(2, ws, 1, 1.0f, 0.0f, true);
    cg_tensor *gw = gpu_leaf(w, CG_F32);
    cg_tensor *ids = rand_index(2, ids_s, 97, 4, CG_I32);
    cg_tensor *r = cg_test_rand_tensor(3, ys, 5, 1.0f, 0.0f, false);
    assert_ok(cg_backward(weighted_sum(cg_embedding(w, ids), r)));
    assert_ok(cg_backward(weighted_sum(cg_embedding(gw, idx_gpu(ids)), to_gpu(r, CG_F32))));
    check_grad(gw, w, 1e-6, "embedding dweight");
}

/* ------------------------------------------------------------------ random fills */

/* The GPU fill gives the CPU's stream: bit for bit for uniform, bernoulli and randint; normal up to libm's
 * rounding of logf/sqrtf/cosf/sinf (a few ulp). Both generators advance alike. */
static void test_rng_matches_cpu(void **state) {
    (void)state;
    cg_test_require_gpu();
    int64_t sh[2] = {37, 1001}, tsh[2] = {1001, 37};
    for (int kind = 0; kind < 5; kind++) {
        cg_rng rc = cg_rng_fork(&(cg_rng){42, 0, 0}, 7), rg = rc;
        cg_dtype dt = kind == 2 ? CG_I32 : kind == 3 ? CG_I64 : kind == 4 ? CG_U8 : CG_F32;
        for (int strided = 0; strided < 2; strided++) {
            cg_tensor *c = cg_tensor_empty(cpu_arena(), dt, 2, strided ? tsh : sh);
            cg_tensor *g = cg_tensor_empty(gpu_arena(), dt, 2, strided ? tsh : sh);
            cg_tensor *cv = strided ? cg_view_transpose(c, 0, 1) : c, *gv = strided ? cg_view_transpose(g, 0, 1) : g;
            switch (kind) {
            case 0: assert_ok(cg_rng_uniform(&rc, cv, -2.0f, 3.0f)); assert_ok(cg_rng_uniform(&rg, gv, -2.0f, 3.0f)); break;
            case 1: assert_ok(cg_rng_normal(&rc, cv, 0.5f, 2.0f)); assert_ok(cg_rng_normal(&rg, gv, 0.5f, 2.0f)); break;
            case 2: assert_ok(cg_rng_randint(&rc, cv, -5, 1000)); assert_ok(cg_rng_randint(&rg, gv, -5, 1000)); break;
            case 3:
                assert_ok(cg_rng_randint(&rc, cv, 0, (int64_t)1 << 40));
                assert_ok(cg_rng_randint(&rg, gv, 0, (int64_t)1 << 40));
                break;
            default: assert_ok(cg_rng_bernoulli(&rc, cv, 0.3f)); assert_ok(cg_rng_bernoulli(&rg, gv, 0.3f)); break;
            }
            assert_int_equal(rc.offset, rg.offset);
            cg_tensor *back = cg_tensor_clone(cpu_arena(), g);
            if (kind == 1) {
                for (int64_t i = 0; i < cg_numel(c); i++) assert_close(cg_get_flat(back, i), cg_get_flat(c, i), 1e-5, 1e-5);
            } else {
                assert_memory_equal(cg_data(back), cg_data(c), cg_nbytes(c));
            }
        }
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_binary_broadcast, cg_test_teardown),
        cmocka_unit_test_teardown(test_unary_family, cg_test_teardown),
        cmocka_unit_test_teardown(test_where, cg_test_teardown),
        cmocka_unit_test_teardown(test_reductions, cg_test_teardown),
        cmocka_unit_test_teardown(test_copy_cast_and_fill, cg_test_teardown),
        cmocka_unit_test_teardown(test_matmul_transposes_and_dtypes, cg_test_teardown),
        cmocka_unit_test_teardown(test_matmul_batched, cg_test_teardown),
        cmocka_unit_test_teardown(test_matmul_epilogues, cg_test_teardown),
        cmocka_unit_test_teardown(test_linear_and_lora_autograd, cg_test_teardown),
        cmocka_unit_test_teardown(test_bf16_linear_autograd, cg_test_teardown),
        cmocka_unit_test_teardown(test_elementwise_autograd, cg_test_teardown),
        cmocka_unit_test_teardown(test_gather_select_embedding, cg_test_teardown),
        cmocka_unit_test_teardown(test_scatter_adds_and_concat, cg_test_teardown),
        cmocka_unit_test_teardown(test_embedding_autograd, cg_test_teardown),
        cmocka_unit_test_teardown(test_rng_matches_cpu, cg_test_teardown),
    };
    int rc = cmocka_run_group_tests_name("cuda_ops", tests, NULL, NULL);
    cg_shutdown();
    return rc;
}
