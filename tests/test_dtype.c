/* dtype sizes and names; bf16 and f16 conversions: round trips, ties to even, NaN, Inf, subnormals. */
#include "test_util.h"

static uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static void test_sizes_and_names(void **state) {
    (void)state;
    assert_int_equal(cg_dtype_size(CG_F32), 4);
    assert_int_equal(cg_dtype_size(CG_BF16), 2);
    assert_int_equal(cg_dtype_size(CG_F16), 2);
    assert_int_equal(cg_dtype_size(CG_I32), 4);
    assert_int_equal(cg_dtype_size(CG_I64), 8);
    assert_int_equal(cg_dtype_size(CG_U8), 1);
    assert_int_equal(cg_dtype_size((cg_dtype)99), 0);
    for (int i = 0; i < CG_DTYPE_COUNT; i++) {
        cg_dtype back;
        assert_ok(cg_dtype_from_name(cg_dtype_name((cg_dtype)i), &back));
        assert_int_equal(back, i);
    }
    cg_dtype dt;
    assert_int_equal(cg_dtype_from_name("float64", &dt), CG_ERR_INVALID_ARG);
    assert_error_contains("unknown dtype 'float64'");
    assert_true(cg_dtype_is_float(CG_BF16));
    assert_false(cg_dtype_is_float(CG_I64));
}

/* Every bf16 bit pattern survives bf16 -> f32 -> bf16 (NaNs stay NaN with their sign). */
static void test_bf16_round_trip_all_patterns(void **state) {
    (void)state;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = cg_bf16_to_f32((uint16_t)h);
        uint16_t back = cg_f32_to_bf16(f);
        if (isnan(f)) {
            assert_true(isnan(cg_bf16_to_f32(back)));
            assert_int_equal(back & 0x8000, h & 0x8000);
        } else {
            assert_int_equal(back, h);
        }
    }
}

static void test_bf16_rounding(void **state) {
    (void)state;
    /* 1.0 = 0x3f800000; bf16 keeps 7 mantissa bits, so the spacing at 1 is 2^-7. */
    assert_int_equal(cg_f32_to_bf16(1.0f), 0x3f80);
    /* exactly halfway between 0x3f80 and 0x3f81: ties go to the even one (0x3f80) */
    assert_int_equal(cg_f32_to_bf16(bits_f32(0x3f808000u)), 0x3f80);
    /* halfway between 0x3f81 and 0x3f82: ties to even gives 0x3f82 */
    assert_int_equal(cg_f32_to_bf16(bits_f32(0x3f818000u)), 0x3f82);
    /* just above and below half */
    assert_int_equal(cg_f32_to_bf16(bits_f32(0x3f808001u)), 0x3f81);
    assert_int_equal(cg_f32_to_bf16(bits_f32(0x3f807fffu)), 0x3f80);
    /* negative values round symmetrically */
    assert_int_equal(cg_f32_to_bf16(bits_f32(0xbf818000u)), 0xbf82);
    /* Inf stays Inf; the largest finite f32 rounds up to Inf (it is past bf16's max + half a step) */
    assert_int_equal(cg_f32_to_bf16(INFINITY), 0x7f80);
    assert_int_equal(cg_f32_to_bf16(-INFINITY), 0xff80);
    assert_int_equal(cg_f32_to_bf16(bits_f32(0x7f7fffffu)), 0x7f80);
    /* bf16's own max (0x7f7f) is exact */
    assert_int_equal(cg_f32_to_bf16(bits_f32(0x7f7f0000u)), 0x7f7f);
    /* NaN (quiet and signalling payloads that would round to Inf if treated as numbers) stays NaN */
    uint16_t qn = cg_f32_to_bf16(NAN);
    assert_true(isnan(cg_bf16_to_f32(qn)));
    uint16_t sn = cg_f32_to_bf16(bits_f32(0x7f800001u)); /* payload only in the low bits */
    assert_true(isnan(cg_bf16_to_f32(sn)));
    assert_true(isnan(cg_bf16_to_f32(cg_f32_to_bf16(bits_f32(0xffffffffu)))));
    /* subnormals: the smallest f32 subnormal is far below half a bf16 subnormal step -> +0 */
    assert_int_equal(cg_f32_to_bf16(bits_f32(0x00000001u)), 0x0000);
    /* a bf16 subnormal is exact; halfway between two bf16 subnormals ties to even */
    assert_int_equal(cg_f32_to_bf16(bits_f32(0x00010000u)), 0x0001);
    assert_int_equal(cg_f32_to_bf16(bits_f32(0x00018000u)), 0x0002);
    assert_int_equal(cg_f32_to_bf16(bits_f32(0x00008000u)), 0x0000);
    assert_int_equal(cg_f32_to_bf16(bits_f32(0x00008001u)), 0x0001);
    /* the largest subnormal rounds up into the smallest normal */
    assert_int_equal(cg_f32_to_bf16(bits_f32(0x007fffffu)), 0x0080);
    assert_int_equal(cg_f32_to_bf16(-0.0f), 0x8000);
    assert_int_equal(f32_bits(cg_bf16_to_f32(0x3fc0)), 0x3fc00000u); /* 1.5 */
}

/* Compare against the exact real-number rounding: for random f32 values, the chosen bf16 is the nearest,
 * and at exact ties its last bit is 0. */
static void test_bf16_nearest_random(void **state) {
    (void)state;
    uint64_t s = 42;
    for (int i = 0; i < 200000; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        uint32_t u = (uint32_t)(s >> 11);
        float f = bits_f32(u);
        if (isnan(f) || isinf(f)) continue;
        uint16_t h = cg_f32_to_bf16(f);
        double v = f, lo = cg_bf16_to_f32((uint16_t)(u >> 16)), hi = cg_bf16_to_f32((uint16_t)((u >> 16) + 1));
        double got = cg_bf16_to_f32(h);
        if (isinf(hi)) continue; /* rounding into Inf checked above */
        double dlo = fabs(v - lo), dhi = fabs(hi - v);
        double want = dlo < dhi ? lo : dhi < dlo ? hi : ((u >> 16) & 1 ? hi : lo);
        if (got != want) {
            print_error("f32 bits 0x%08x -> bf16 0x%04x (%.9g), want %.9g\n", u, h, got, want);
            fail();
        }
    }
}

static void test_f16_conversions(void **state) {
    (void)state;
    assert_int_equal(cg_f32_to_f16(1.0f), 0x3c00);
    assert_int_equal(cg_f32_to_f16(-2.0f), 0xc000);
    assert_int_equal(cg_f32_to_f16(65504.0f), 0x7bff);   /* the largest finite half */
    assert_int_equal(cg_f32_to_f16(65519.0f), 0x7bff);   /* below the rounding point to Inf */
    assert_int_equal(cg_f32_to_f16(65520.0f), 0x7c00);   /* the tie at the top rounds to Inf (even) */
    assert_int_equal(cg_f32_to_f16(1e10f), 0x7c00);
    assert_int_equal(cg_f32_to_f16(-INFINITY), 0xfc00);
    assert_true(isnan(cg_f16_to_f32(cg_f32_to_f16(NAN))));
    /* ties to even at 1: spacing 2^-10 */
    assert_int_equal(cg_f32_to_f16(1.0f + 0x1p-11f), 0x3c00);
    assert_int_equal(cg_f32_to_f16(1.0f + 3 * 0x1p-11f), 0x3c02);
    /* subnormals: smallest 2^-24, ties to even at half of it */
    assert_int_equal(cg_f32_to_f16(0x1p-24f), 0x0001);
    assert_int_equal(cg_f32_to_f16(0x1p-25f), 0x0000);        /* exactly half: ties to even (0) */
    assert_int_equal(cg_f32_to_f16(0x1.8p-24f), 0x0002);      /* 1.5 steps: ties to even (2) */
    assert_int_equal(cg_f32_to_f16(0x1.000002p-25f), 0x0001); /* just above half */
    assert_int_equal(cg_f32_to_f16(0x1p-14f), 0x0400);        /* smallest normal */
    assert_int_equal(cg_f32_to_f16(0x1.ff8p-15f), 0x03ff);    /* the largest subnormal, 1023 * 2^-24 */
    assert_int_equal(cg_f32_to_f16(0x1.ffcp-15f), 0x0400);    /* 1023.5 steps: ties to even, into the normals */
    /* every finite half survives the round trip */
    for (uint32_t h = 0; h < 65536; h++) {
        float f = cg_f16_to_f32((uint16_t)h);
        if (isnan(f)) continue;
        assert_int_equal(cg_f32_to_f16(f), h);
    }
    assert_true(cg_f16_to_f32(0x0001) == 0x1p-24f);
    assert_true(cg_f16_to_f32(0x03ff) == 0x1.ff8p-15f);
}

static void test_load_store(void **state) {
    (void)state;
    int32_t i32[2];
    uint8_t u8[2];
    int64_t i64[1];
    cg_store_from_f64(i32, CG_I32, 0, 3.9);
    cg_store_from_f64(i32, CG_I32, 1, -1e20);
    assert_int_equal(i32[0], 3);
    assert_int_equal(i32[1], INT32_MIN);
    cg_store_from_f64(u8, CG_U8, 0, 300.0);
    cg_store_from_f64(u8, CG_U8, 1, NAN);
    assert_int_equal(u8[0], 255);
    assert_int_equal(u8[1], 0);
    cg_store_from_f64(i64, CG_I64, 0, -7.5);
    assert_int_equal(i64[0], -7);
    assert_true(cg_load_as_f64(i64, CG_I64, 0) == -7.0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sizes_and_names),      cmocka_unit_test(test_bf16_round_trip_all_patterns),
        cmocka_unit_test(test_bf16_rounding),        cmocka_unit_test(test_bf16_nearest_random),
        cmocka_unit_test(test_f16_conversions),      cmocka_unit_test(test_load_store),
    };
    return cmocka_run_group_tests_name("dtype", tests, NULL, NULL);
}
