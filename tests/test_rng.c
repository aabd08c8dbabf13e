/* Philox4x32-10 known answers, the stream layout, fills, determinism across threads, and statistics. */
#include "test_util.h"

#include "core/rng.h"

/* Block b of (seed, stream), built by hand from the layout documented in rng.h. */
static void layout_block(uint64_t seed, uint64_t stream, uint64_t b, uint32_t w[4]) {
    uint32_t ctr[4] = {(uint32_t)(b & 0xffffffffu), (uint32_t)(b >> 32), (uint32_t)(stream & 0xffffffffu),
                       (uint32_t)(stream >> 32)};
    uint32_t key[2] = {(uint32_t)(seed & 0xffffffffu), (uint32_t)(seed >> 32)};
    cg_philox4x32_10(ctr, key, w);
}

/* Word i of a 4-words-per-block draw that started at block `offset`. */
static uint32_t layout_word(uint64_t seed, uint64_t stream, uint64_t offset, int64_t i) {
    uint32_t w[4];
    layout_block(seed, stream, offset + (uint64_t)(i / 4), w);
    return w[i % 4];
}

static cg_tensor *new_tensor(cg_dtype dt, int ndim, const int64_t *shape) {
    cg_tensor *t = cg_tensor_zeros(cg_step_arena(CG_CPU), dt, ndim, shape);
    assert_non_null(t);
    return t;
}

/* ------------------------------------------------------------------ Philox itself */

/* Random123 tests/kat_vectors, the three "philox4x32 10" lines: counter[4], key[2] -> output[4]. */
static void test_philox_known_answers(void **state) {
    (void)state;
    static const uint32_t kat[3][10] = {
        {0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x00000000,
         0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8},
        {0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff,
         0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd},
        {0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344, 0xa4093822, 0x299f31d0,
         0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1},
    };
    for (int k = 0; k < 3; k++) {
        uint32_t out[4];
        cg_philox4x32_10(&kat[k][0], &kat[k][4], out);
        for (int j = 0; j < 4; j++) assert_int_equal(out[j], kat[k][6 + j]);
        /* out may alias the counter */
        uint32_t inplace[4] = {kat[k][0], kat[k][1], kat[k][2], kat[k][3]};
        cg_philox4x32_10(inplace, &kat[k][4], inplace);
        for (int j = 0; j < 4; j++) assert_int_equal(inplace[j], kat[k][6 + j]);
    }
}

static void test_mulhi64(void **state) {
    (void)state;
    uint64_t s = 12345;
    for (int k = 0; k < 1000; k++) {
        (void)cg_test_randf(&s); /* steps the xorshift state s */
        uint64_t a = s;
        uint64_t b = s * 0x9E3779B97F4A7C15ull + (uint64_t)k;
        unsigned __int128 prod = (unsigned __int128)a * b;
        assert_true(cg_rng_mulhi64(a, b) == (uint64_t)(prod >> 64));
    }
    assert_true(cg_rng_mulhi64(UINT64_MAX, UINT64_MAX) == UINT64_MAX - 1);
}

/* ------------------------------------------------------------------ layout */

static void test_u32_layout_and_offset(void **state) {
    (void)state;
    const uint64_t seed = 0x0123456789abcdefull;
    cg_rng rng = cg_rng_init(seed);
    assert_true(rng.seed == seed && rng.offset == 0 && rng.stream == 0);
    uint32_t a[5], b[7];
    cg_rng_u32(&rng, a, 5);
    assert_true(rng.offset == 2); /* ceil(5/4) */
    cg_rng_u32(&rng, b, 7);
    assert_true(rng.offset == 4); /* + ceil(7/4) */
    for (int i = 0; i < 5; i++) assert_int_equal(a[i], layout_word(seed, 0, 0, i));
    for (int i = 0; i < 7; i++) assert_int_equal(b[i], layout_word(seed, 0, 2, i));
    /* the second draw starts on a fresh block: no word of block 1 is reused */
    assert_int_not_equal(b[0], layout_word(seed, 0, 0, 5));
    /* a counter past 2^32 uses the high counter word */
    cg_rng far = {seed, (UINT64_C(1) << 32) + 7, 0};
    uint32_t c[4];
    cg_rng_u32(&far, c, 4);
    uint32_t w[4];
    uint32_t ctr[4] = {7, 1, 0, 0}, key[2] = {0x89abcdefu, 0x01234567u};
    cg_philox4x32_10(ctr, key, w);
    for (int j = 0; j < 4; j++) assert_int_equal(c[j], w[j]);
    /* n <= 0 draws nothing */
    cg_rng_u32(&far, c, 0);
    assert_true(far.offset == (UINT64_C(1) << 32) + 8);
}

static void test_streams(void **state) {
    (void)state;
    cg_rng base = cg_rng_init(7);
    uint32_t skip[9];
    cg_rng_u32(&base, skip, 9);
    cg_rng s1 = cg_rng_fork(&base, 1), s2 = cg_rng_fork(&base, 2);
    cg_rng s1_again = cg_rng_fork(&(cg_rng){7, 0, 0}, 1);
    assert_true(s1.seed == 7 && s1.stream == 1 && s1.offset == 0);
    uint32_t x0[64], x1[64], x2[64], x1b[64];
    cg_rng fresh = cg_rng_init(7);
    cg_rng_u32(&fresh, x0, 64);
    cg_rng_u32(&s1, x1, 64);
    cg_rng_u32(&s2, x2, 64);
    cg_rng_u32(&s1_again, x1b, 64);
    int same01 = 0, same12 = 0;
    for (int i = 0; i < 64; i++) {
        same01 += x0[i] == x1[i];
        same12 += x1[i] == x2[i];
        assert_int_equal(x1[i], x1b[i]); /* a fork depends only on (seed, id) */
        uint64_t id = 1;
        assert_int_equal(x1[i], layout_word(7, id, 0, i));
    }
    assert_true(same01 <= 1 && same12 <= 1);
    /* a stream id past 2^32 uses counter word 3 */
    cg_rng big = cg_rng_fork(&base, (UINT64_C(5) << 32) | 3);
    uint32_t y[4], w[4];
    cg_rng_u32(&big, y, 4);
    uint32_t ctr[4] = {0, 0, 3, 5}, key[2] = {7, 0};
    cg_philox4x32_10(ctr, key, w);
    for (int j = 0; j < 4; j++) assert_int_equal(y[j], w[j]);
}

/* ------------------------------------------------------------------ fills against the formulas */

static void test_uniform_values(void **state) {
    (void)state;
    const uint64_t seed = 42;
    cg_rng rng = cg_rng_init(seed);
    rng.offset = 3;
    int64_t shape[3] = {2, 3, 5};
    cg_tensor *t = new_tensor(CG_F32, 3, shape);
    assert_ok(cg_rng_uniform(&rng, t, -2.0f, 3.0f));
    assert_true(rng.offset == 3 + 8); /* ceil(30/4) */
    for (int64_t i = 0; i < 30; i++) {
        uint32_t x = layout_word(seed, 0, 3, i);
        double expect = -2.0 + 5.0 * ((double)(x >> 8) / 16777216.0);
        assert_close(cg_get_flat(t, i), expect, 0, 1e-6);
        assert_true(cg_get_flat(t, i) >= -2.0 && cg_get_flat(t, i) < 3.0);
    }
    /* unit conversion extremes */
    assert_true(cg_rng_unit_f32(0) == 0.0f);
    assert_close(cg_rng_unit_f32(0xffffffffu), 1.0 - 1.0 / 16777216.0, 0, 0);
    assert_close(cg_rng_unit_open_f32(0), 1.0 / 16777216.0, 0, 0);
    assert_true(cg_rng_unit_open_f32(0xffffffffu) == 1.0f);
    /* rounding that would reach hi is pulled below it: width 1 at magnitude 2^24 */
    float v = cg_rng_uniform_f32(0xffffffffu, 16777216.0f, 16777218.0f);
    assert_true(v < 16777218.0f && v >= 16777216.0f);
}

static void test_normal_values(void **state) {
    (void)state;
    const uint64_t seed = 2024;
    cg_rng rng = cg_rng_init(seed);
    int64_t shape[1] = {11};
    cg_tensor *t = new_tensor(CG_F32, 1, shape);
    assert_ok(cg_rng_normal(&rng, t, 1.5f, 2.0f));
    assert_true(rng.offset == 3);
    for (int64_t i = 0; i < 11; i++) {
        int64_t first = i - (i % 2); /* the pair's first word */
        uint32_t a = layout_word(seed, 0, 0, first), b = layout_word(seed, 0, 0, first + 1);
        double u1 = ((double)(a >> 8) + 1.0) / 16777216.0, u2 = (double)(b >> 8) / 16777216.0;
        double r = sqrt(-2.0 * log(u1)), theta = 2.0 * M_PI * u2;
        double z = (i % 2 == 0) ? r * cos(theta) : r * sin(theta);
        assert_close(cg_get_flat(t, i), 1.5 + 2.0 * z, 0, 2e-5 * (1.0 + fabs(z)));
    }
    /* the extreme word pair gives the largest radius, finite */
    float z0, z1;
    cg_rng_box_muller(0, 0, &z0, &z1);
    assert_close(z0, sqrt(2.0 * 24.0 * log(2.0)), 1e-6, 0);
    assert_close(z1, 0.0, 0, 0);
}

static void test_randint_values(void **state) {
    (void)state;
    const uint64_t seed = 99;
    cg_rng rng = cg_rng_init(seed);
    int64_t shape[2] = {3, 3};
    cg_tensor *t = new_tensor(CG_I32, 2, shape);
    assert_ok(cg_rng_randint(&rng, t, -5, 1000));
    assert_true(rng.offset == 3);
    for (int64_t i = 0; i < 9; i++) {
        uint32_t x = layout_word(seed, 0, 0, i);
        double expect = -5.0 + floor((double)x * 1005.0 / 4294967296.0);
        assert_close(cg_get_flat(t, i), expect, 0, 0);
    }
    /* range exactly 2^32: the word itself, offset by lo */
    cg_rng r2 = cg_rng_init(seed);
    cg_tensor *t64 = new_tensor(CG_I64, 2, shape);
    assert_ok(cg_rng_randint(&r2, t64, -(INT64_C(1) << 31), INT64_C(1) << 31));
    const int64_t *v64 = cg_data(t64);
    for (int64_t i = 0; i < 9; i++) assert_true(v64[i] == (int64_t)layout_word(seed, 0, 0, i) - (INT64_C(1) << 31));
    /* ranges past 2^32: two words per value, two values per block */
    const int64_t los[2] = {-(INT64_C(1) << 40), INT64_MIN}, his[2] = {(INT64_C(1) << 40) + 12345, INT64_MAX};
    for (int c = 0; c < 2; c++) {
        cg_rng r3 = cg_rng_init(seed);
        r3.offset = 10;
        assert_ok(cg_rng_randint(&r3, t64, los[c], his[c]));
        assert_true(r3.offset == 10 + 5); /* ceil(9/2) */
        uint64_t range = (uint64_t)his[c] - (uint64_t)los[c];
        for (int64_t i = 0; i < 9; i++) {
            uint32_t w[4];
            layout_block(seed, 0, 10 + (uint64_t)(i / 2), w);
            uint64_t x = ((uint64_t)w[2 * (i % 2) + 1] << 32) | w[2 * (i % 2)];
            uint64_t off = (uint64_t)(((unsigned __int128)x * range) >> 64);
            assert_true(v64[i] == (int64_t)((uint64_t)los[c] + off));
            assert_true(v64[i] >= los[c] && v64[i] < his[c]);
        }
    }
}

static void test_bernoulli_values(void **state) {
    (void)state;
    const uint64_t seed = 5;
    int64_t shape[1] = {37};
    cg_tensor *u8 = new_tensor(CG_U8, 1, shape), *f = new_tensor(CG_F32, 1, shape);
    cg_rng rng = cg_rng_init(seed);
    assert_ok(cg_rng_bernoulli(&rng, u8, 0.4f));
    assert_true(rng.offset == 10);
    assert_ok(cg_rng_bernoulli(&rng, f, 0.4f));
    assert_true(rng.offset == 20);
    for (int64_t i = 0; i < 37; i++) {
        double ua = (double)(layout_word(seed, 0, 0, i) >> 8) / 16777216.0;
        double ub = (double)(layout_word(seed, 0, 10, i) >> 8) / 16777216.0;
        assert_close(cg_get_flat(u8, i), ua < 0.4 ? 1.0 : 0.0, 0, 0);
        assert_close(cg_get_flat(f, i), ub < 0.4 ? 1.0 : 0.0, 0, 0);
    }
    /* p = 0 and p = 1 are exact */
    assert_ok(cg_rng_bernoulli(&rng, f, 0.0f));
    for (int64_t i = 0; i < 37; i++) assert_close(cg_get_flat(f, i), 0.0, 0, 0);
    assert_ok(cg_rng_bernoulli(&rng, f, 1.0f));
    for (int64_t i = 0; i < 37; i++) assert_close(cg_get_flat(f, i), 1.0, 0, 0);
}

/* A strided output gets, at flat position i, what a packed output gets at i. */
static void test_strided_output(void **state) {
    (void)state;
    int64_t shape[2] = {6, 10};
    cg_tensor *base = new_tensor(CG_F32, 2, shape);
    assert_ok(cg_fill(base, -100.0));
    cg_tensor *view = cg_view_slice(cg_view_transpose(base, 0, 1), 1, 1, 6, 2); /* [10, 3], strided */
    assert_non_null(view);
    assert_false(cg_is_contiguous(view));
    int64_t pshape[2] = {10, 3};
    cg_tensor *packed = new_tensor(CG_F32, 2, pshape);
    cg_rng r1 = cg_rng_init(11), r2 = cg_rng_init(11);
    assert_ok(cg_rng_normal(&r1, view, 0.0f, 1.0f));
    assert_ok(cg_rng_normal(&r2, packed, 0.0f, 1.0f));
    assert_true(r1.offset == r2.offset);
    for (int64_t i = 0; i < 30; i++) assert_close(cg_get_flat(view, i), cg_get_flat(packed, i), 0, 0);
    /* rows 0, 2, 4 of base were not touched */
    for (int64_t j = 0; j < 10; j++) {
        assert_close(cg_get(base, (int64_t[]){0, j}), -100.0, 0, 0);
        assert_close(cg_get(base, (int64_t[]){4, j}), -100.0, 0, 0);
    }
    /* the same holds for randint into a strided i64 view past 2^32 (no rounding through double) */
    cg_tensor *ibase = new_tensor(CG_I64, 2, shape);
    cg_tensor *iview = cg_view_transpose(ibase, 0, 1);
    cg_tensor *ipacked = new_tensor(CG_I64, 2, (int64_t[]){10, 6});
    cg_rng r3 = cg_rng_init(12), r4 = cg_rng_init(12);
    assert_ok(cg_rng_randint(&r3, iview, INT64_MIN + 1, INT64_MAX));
    assert_ok(cg_rng_randint(&r4, ipacked, INT64_MIN + 1, INT64_MAX));
    const int64_t *ib = cg_data(ibase), *ip = cg_data(ipacked);
    for (int64_t r = 0; r < 10; r++)
        for (int64_t c = 0; c < 6; c++) assert_true(ib[c * 10 + r] == ip[r * 6 + c]);
}

/* ------------------------------------------------------------------ determinism */

static void test_determinism_and_threads(void **state) {
    (void)state;
    const int64_t n = 200003; /* well past the parallel threshold, and not a multiple of 4 */
    int64_t shape[1] = {n};
    cg_tensor *a = new_tensor(CG_F32, 1, shape), *b = new_tensor(CG_F32, 1, shape);
    cg_tensor *c = new_tensor(CG_F32, 1, shape);
    int saved = cg_get_num_threads();
    cg_set_num_threads(1);
    cg_rng r1 = cg_rng_init(314);
    assert_ok(cg_rng_normal(&r1, a, 0.0f, 1.0f));
    cg_set_num_threads(2);
    cg_rng r2 = cg_rng_init(314);
    assert_ok(cg_rng_normal(&r2, b, 0.0f, 1.0f));
    cg_rng r3 = cg_rng_init(315);
    assert_ok(cg_rng_normal(&r3, c, 0.0f, 1.0f));
    cg_set_num_threads(saved);
    assert_memory_equal(cg_data(a), cg_data(b), (size_t)n * sizeof(float));
    assert_true(r1.offset == r2.offset && r1.offset == (uint64_t)(n + 3) / 4);
    const float *fa = cg_data(a), *fc = cg_data(c);
    int64_t same = 0;
    for (int64_t i = 0; i < n; i++) same += fa[i] == fc[i];
    assert_true(same < 10);
    /* consecutive draws from one generator differ */
    cg_rng r4 = cg_rng_init(314);
    assert_ok(cg_rng_uniform(&r4, b, 0.0f, 1.0f));
    assert_ok(cg_rng_uniform(&r4, c, 0.0f, 1.0f));
    const float *fb = cg_data(b);
    same = 0;
    for (int64_t i = 0; i < n; i++) same += fb[i] == fc[i];
    assert_true(same < 100); /* 2^24 values: ~n/2^24 = 0.01 chance collisions expected */
    /* the parallel fill equals the sequential definition */
    for (int64_t i = n - 20; i < n; i++) {
        uint32_t x = layout_word(314, 0, (uint64_t)(n + 3) / 4, i);
        assert_close(fc[i], (double)(x >> 8) / 16777216.0, 0, 0);
    }
}

/* ------------------------------------------------------------------ statistics (fixed seeds) */

static void test_uniform_statistics(void **state) {
    (void)state;
    const int64_t n = 1000000;
    cg_tensor *t = new_tensor(CG_F32, 1, (int64_t[]){n});
    cg_rng rng = cg_rng_init(1);
    assert_ok(cg_rng_uniform(&rng, t, 0.0f, 1.0f));
    const float *v = cg_data(t);
    double s = 0, s2 = 0, lo = 1, hi = 0;
    for (int64_t i = 0; i < n; i++) {
        s += v[i];
        lo = fmin(lo, v[i]);
        hi = fmax(hi, v[i]);
    }
    double mean = s / n;
    for (int64_t i = 0; i < n; i++) s2 += (v[i] - mean) * (v[i] - mean);
    double var = s2 / n;
    /* sigma of the mean sqrt(1/12/n) = 2.9e-4; of the variance sqrt((1/80 - 1/144)/n) = 7.5e-5; 5 sigma */
    assert_close(mean, 0.5, 0, 5 * 2.89e-4);
    assert_close(var, 1.0 / 12.0, 0, 5 * 7.46e-5);
    assert_true(lo >= 0.0 && lo < 1e-4 && hi < 1.0 && hi > 1.0 - 1e-4);
}

static void test_normal_statistics(void **state) {
    (void)state;
    const int64_t n = 1000000;
    cg_tensor *t = new_tensor(CG_F32, 1, (int64_t[]){n});
    cg_rng rng = cg_rng_init(2);
    assert_ok(cg_rng_normal(&rng, t, 0.0f, 1.0f));
    const float *v = cg_data(t);
    double s = 0, s2 = 0, s4 = 0, m = 0;
    for (int64_t i = 0; i < n; i++) s += v[i];
    double mean = s / n;
    for (int64_t i = 0; i < n; i++) {
        double d = v[i] - mean;
        s2 += d * d;
        s4 += d * d * d * d;
        m = fmax(m, fabs(v[i]));
    }
    double var = s2 / n, kurt = (s4 / n) / (var * var);
    /* sigmas: mean 1/sqrt(n) = 1e-3; variance sqrt(2/n) = 1.41e-3; 4th moment sqrt(96/n) = 9.8e-3 */
    assert_close(mean, 0.0, 0, 5 * 1e-3);
    assert_close(var, 1.0, 0, 5 * 1.414e-3);
    assert_close(kurt, 3.0, 0, 5 * 9.8e-3);
    assert_true(m > 4.0 && m <= 5.78); /* ~63 of 1e6 beyond 4; Box-Muller with 24-bit u1 caps at 5.77 */
    /* mean and std are applied: N(3, 0.5) */
    cg_tensor *t2 = new_tensor(CG_F32, 1, (int64_t[]){100000});
    assert_ok(cg_rng_normal(&rng, t2, 3.0f, 0.5f));
    const float *w = cg_data(t2);
    s = 0;
    s2 = 0;
    for (int64_t i = 0; i < 100000; i++) s += w[i];
    mean = s / 100000;
    for (int64_t i = 0; i < 100000; i++) s2 += (w[i] - mean) * (w[i] - mean);
    assert_close(mean, 3.0, 0, 5 * 0.5 / sqrt(1e5));
    assert_close(sqrt(s2 / 100000), 0.5, 0, 5 * 0.5 / sqrt(2e5));
    /* std = 0 gives the mean exactly */
    assert_ok(cg_rng_normal(&rng, t2, -1.25f, 0.0f));
    for (int64_t i = 0; i < 100; i++) assert_close(w[i], -1.25, 0, 0);
}

static void test_randint_statistics(void **state) {
    (void)state;
    const int64_t n = 1000000, k = 10, lo = -3;
    cg_tensor *t = new_tensor(CG_I32, 1, (int64_t[]){n});
    cg_rng rng = cg_rng_init(3);
    assert_ok(cg_rng_randint(&rng, t, lo, lo + k));
    const int32_t *v = cg_data(t);
    int64_t count[10] = {0};
    for (int64_t i = 0; i < n; i++) {
        assert_true(v[i] >= lo && v[i] < lo + k);
        count[v[i] - lo]++;
    }
    double chi2 = 0, expect = (double)n / k;
    for (int j = 0; j < k; j++) {
        assert_true(count[j] > 0);
        chi2 += (count[j] - expect) * (count[j] - expect) / expect;
    }
    /* 9 degrees of freedom: mean 9, sd 4.24; P(chi2 > 33.7) = 1e-4 */
    assert_true(chi2 < 33.7);
    /* a 64-bit range: mean of uniform on [0, 2^40) is 2^39 - 0.5, sd 2^40/sqrt(12 n) */
    cg_tensor *t64 = new_tensor(CG_I64, 1, (int64_t[]){100000});
    assert_ok(cg_rng_randint(&rng, t64, 0, INT64_C(1) << 40));
    const int64_t *w = cg_data(t64);
    double s = 0;
    for (int64_t i = 0; i < 100000; i++) {
        assert_true(w[i] >= 0 && w[i] < (INT64_C(1) << 40));
        s += (double)w[i];
    }
    double sd = 1099511627776.0 / sqrt(12.0 * 100000);
    assert_close(s / 100000, 549755813887.5, 0, 5 * sd);
    /* a one-value range */
    assert_ok(cg_rng_randint(&rng, t, 7, 8));
    for (int64_t i = 0; i < 100; i++) assert_int_equal(v[i], 7);
}

static void test_bernoulli_statistics(void **state) {
    (void)state;
    const int64_t n = 1000000;
    cg_tensor *t = new_tensor(CG_U8, 1, (int64_t[]){n});
    cg_rng rng = cg_rng_init(4);
    assert_ok(cg_rng_bernoulli(&rng, t, 0.3f));
    const uint8_t *v = cg_data(t);
    int64_t ones = 0;
    for (int64_t i = 0; i < n; i++) {
        assert_true(v[i] <= 1);
        ones += v[i];
    }
    /* sigma sqrt(p(1-p)/n) = 4.6e-4 */
    assert_close((double)ones / n, 0.3, 0, 5 * 4.58e-4);
}

/* ------------------------------------------------------------------ bad arguments */

static void test_bad_arguments(void **state) {
    (void)state;
    cg_rng rng = cg_rng_init(1);
    int64_t shape[2] = {2, 3};
    cg_tensor *f = new_tensor(CG_F32, 2, shape), *i32 = new_tensor(CG_I32, 2, shape);
    cg_tensor *u8 = new_tensor(CG_U8, 2, shape);

    assert_int_equal(cg_rng_uniform(&rng, f, 1.0f, 1.0f), CG_ERR_INVALID_ARG);
    assert_error_contains("rng_uniform: needs finite lo < hi");
    assert_int_equal(cg_rng_uniform(&rng, f, 0.0f, NAN), CG_ERR_INVALID_ARG);
    assert_int_equal(cg_rng_uniform(&rng, f, -3e38f, 3e38f), CG_ERR_INVALID_ARG); /* hi - lo overflows */
    assert_int_equal(cg_rng_uniform(&rng, i32, 0.0f, 1.0f), CG_ERR_DTYPE);
    assert_error_contains("out is i32[2, 3]");
    assert_error_contains("expected dtype f32");
    assert_int_equal(cg_rng_uniform(NULL, f, 0.0f, 1.0f), CG_ERR_INVALID_ARG);
    assert_error_contains("NULL generator");
    assert_int_equal(cg_rng_uniform(&rng, NULL, 0.0f, 1.0f), CG_ERR_INVALID_ARG);
    assert_error_contains("NULL output");

    assert_int_equal(cg_rng_normal(&rng, f, 0.0f, -1.0f), CG_ERR_INVALID_ARG);
    assert_error_contains("std -1");
    assert_int_equal(cg_rng_normal(&rng, f, INFINITY, 1.0f), CG_ERR_INVALID_ARG);
    assert_int_equal(cg_rng_normal(&rng, u8, 0.0f, 1.0f), CG_ERR_DTYPE);

    assert_int_equal(cg_rng_randint(&rng, i32, 5, 5), CG_ERR_INVALID_ARG);
    assert_error_contains("needs lo < hi, got [5, 5)");
    assert_int_equal(cg_rng_randint(&rng, i32, 0, INT64_C(1) << 31 | 1), CG_ERR_INVALID_ARG);
    assert_error_contains("does not fit the i32 output");
    assert_int_equal(cg_rng_randint(&rng, i32, -(INT64_C(1) << 32), 0), CG_ERR_INVALID_ARG);
    assert_ok(cg_rng_randint(&rng, i32, INT32_MIN, INT64_C(1) << 31)); /* the full i32 range is fine */
    assert_int_equal(cg_rng_randint(&rng, f, 0, 10), CG_ERR_DTYPE);
    assert_error_contains("expected dtype i32 or i64");

    assert_int_equal(cg_rng_bernoulli(&rng, u8, 1.5f), CG_ERR_INVALID_ARG);
    assert_error_contains("0 <= p <= 1, got p = 1.5");
    assert_int_equal(cg_rng_bernoulli(&rng, u8, -0.1f), CG_ERR_INVALID_ARG);
    assert_int_equal(cg_rng_bernoulli(&rng, u8, NAN), CG_ERR_INVALID_ARG);
    assert_int_equal(cg_rng_bernoulli(&rng, i32, 0.5f), CG_ERR_DTYPE);

    /* an expanded view would write one element many times */
    cg_tensor *row = new_tensor(CG_F32, 2, (int64_t[]){1, 3});
    cg_tensor *expanded = cg_view_expand(row, 2, shape);
    assert_non_null(expanded);
    assert_int_equal(cg_rng_uniform(&rng, expanded, 0.0f, 1.0f), CG_ERR_INVALID_ARG);
    assert_error_contains("expanded view (stride 0 in dim 0)");

    /* errors leave the offset alone: only the one successful i32 fill (2 blocks) advanced it */
    assert_true(rng.offset == 2);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_philox_known_answers),
        cmocka_unit_test(test_mulhi64),
        cmocka_unit_test(test_u32_layout_and_offset),
        cmocka_unit_test(test_streams),
        cmocka_unit_test_teardown(test_uniform_values, cg_test_teardown),
        cmocka_unit_test_teardown(test_normal_values, cg_test_teardown),
        cmocka_unit_test_teardown(test_randint_values, cg_test_teardown),
        cmocka_unit_test_teardown(test_bernoulli_values, cg_test_teardown),
        cmocka_unit_test_teardown(test_strided_output, cg_test_teardown),
        cmocka_unit_test_teardown(test_determinism_and_threads, cg_test_teardown),
        cmocka_unit_test_teardown(test_uniform_statistics, cg_test_teardown),
        cmocka_unit_test_teardown(test_normal_statistics, cg_test_teardown),
        cmocka_unit_test_teardown(test_randint_statistics, cg_test_teardown),
        cmocka_unit_test_teardown(test_bernoulli_statistics, cg_test_teardown),
        cmocka_unit_test_teardown(test_bad_arguments, cg_test_teardown),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    cg_shutdown();
    return rc;
}
