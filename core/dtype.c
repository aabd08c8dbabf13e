#include "core/dtype.h"

#include <math.h>
#include <string.h>

static const struct {
    const char *name;
    size_t size;
    bool is_float;
} dtype_info[CG_DTYPE_COUNT] = {
    [CG_F32] = {"f32", 4, true},  [CG_BF16] = {"bf16", 2, true}, [CG_F16] = {"f16", 2, true},
    [CG_I32] = {"i32", 4, false}, [CG_I64] = {"i64", 8, false},  [CG_U8] = {"u8", 1, false},
};

bool cg_dtype_valid(cg_dtype dt) { return (unsigned)dt < CG_DTYPE_COUNT; }

size_t cg_dtype_size(cg_dtype dt) { return cg_dtype_valid(dt) ? dtype_info[dt].size : 0; }

const char *cg_dtype_name(cg_dtype dt) { return cg_dtype_valid(dt) ? dtype_info[dt].name : "invalid"; }

bool cg_dtype_is_float(cg_dtype dt) { return cg_dtype_valid(dt) && dtype_info[dt].is_float; }

cg_status cg_dtype_from_name(const char *name, cg_dtype *out) {
    if (!name || !out) return cg_set_error(CG_ERR_INVALID_ARG, "dtype_from_name: NULL argument");
    for (int i = 0; i < CG_DTYPE_COUNT; i++) {
        if (strcmp(name, dtype_info[i].name) == 0) {
            *out = (cg_dtype)i;
            return CG_OK;
        }
    }
    return cg_set_error(CG_ERR_INVALID_ARG, "unknown dtype '%s' (expected f32, bf16, f16, i32, i64 or u8)",
                        name);
}

float cg_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    uint32_t bits;
    if (exp == 0x1f) { /* Inf or NaN */
        bits = sign | 0x7f800000u | (mant << 13);
    } else if (exp == 0) {
        if (mant == 0) {
            bits = sign;
        } else { /* subnormal: normalise the mantissa */
            int e = -1;
            do {
                e++;
                mant <<= 1;
            } while ((mant & 0x400u) == 0);
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((mant & 0x3ffu) << 13);
        }
    } else {
        bits = sign | ((exp + (127 - 15)) << 23) | (mant << 13);
    }
    union { uint32_t u; float f; } v;
    v.u = bits;
    return v.f;
}

uint16_t cg_f32_to_f16(float f) {
    union { uint32_t u; float f; } v;
    v.f = f;
    uint32_t sign = (v.u >> 16) & 0x8000u;
    uint32_t absu = v.u & 0x7fffffffu;
    if (absu > 0x7f800000u) return (uint16_t)(sign | 0x7e00u | ((absu >> 13) & 0x3ffu)); /* NaN stays NaN */
    if (absu >= 0x47800000u) { /* >= 65536: Inf, unless it rounds... it does not: 65520 and up round to Inf */
        return (uint16_t)(sign | 0x7c00u);
    }
    if (absu >= 0x38800000u) { /* normal f16 range (>= 2^-14) */
        uint32_t mant_rounded = absu + 0xfffu + ((absu >> 13) & 1u); /* round to nearest even at bit 13 */
        uint32_t h = (mant_rounded >> 13) - ((127u - 15u) << 10);
        if (h >= 0x7c00u) h = 0x7c00u; /* overflow from rounding (65520 .. 65535.99) */
        return (uint16_t)(sign | h);
    }
    if (absu < 0x33000000u) return (uint16_t)sign; /* below half the smallest subnormal (2^-25): zero */
    /* Subnormal f16: value = mant * 2^-24. Shift the full 24-bit significand into place and round. */
    uint32_t exp = absu >> 23;
    uint32_t significand = (absu & 0x7fffffu) | 0x800000u;
    uint32_t shift = 126u - exp; /* 14..24 for exp in [102, 112] */
    uint32_t half = 1u << (shift - 1);
    uint32_t rest = significand & ((1u << shift) - 1u);
    uint32_t h = significand >> shift;
    if (rest > half || (rest == half && (h & 1u))) h++;
    return (uint16_t)(sign | h);
}

double cg_load_as_f64(const void *data, cg_dtype dt, int64_t i) {
    switch (dt) {
    case CG_F32: return ((const float *)data)[i];
    case CG_BF16: return cg_bf16_to_f32(((const uint16_t *)data)[i]);
    case CG_F16: return cg_f16_to_f32(((const uint16_t *)data)[i]);
    case CG_I32: return ((const int32_t *)data)[i];
    case CG_I64: return (double)((const int64_t *)data)[i];
    case CG_U8: return ((const uint8_t *)data)[i];
    default: return NAN;
    }
}

/* Float to integer casts saturate and send NaN to 0: a plain C cast of an out-of-range value is undefined. */
static double saturate(double v, double lo, double hi) {
    if (isnan(v)) return 0.0;
    return v < lo ? lo : v > hi ? hi : v;
}

void cg_store_from_f64(void *data, cg_dtype dt, int64_t i, double v) {
    switch (dt) {
    case CG_F32: ((float *)data)[i] = (float)v; break;
    case CG_BF16: ((uint16_t *)data)[i] = cg_f32_to_bf16((float)v); break;
    case CG_F16: ((uint16_t *)data)[i] = cg_f32_to_f16((float)v); break;
    case CG_I32: ((int32_t *)data)[i] = (int32_t)saturate(v, -2147483648.0, 2147483647.0); break;
    case CG_I64: ((int64_t *)data)[i] = (int64_t)saturate(v, -9223372036854775808.0, 9223372036854774784.0); break;
    case CG_U8: ((uint8_t *)data)[i] = (uint8_t)saturate(v, 0.0, 255.0); break;
    default: break;
    }
}
