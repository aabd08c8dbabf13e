/* Element types and the scalar conversions between them. bf16 and f16 are stored as uint16_t bit
 * patterns on the host; conversions from f32 round to nearest, ties to even, and keep NaN a NaN. */
#ifndef CG_DTYPE_H
#define CG_DTYPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum cg_dtype {
    CG_F32 = 0,
    CG_BF16,
    CG_F16,
    CG_I32,
    CG_I64,
    CG_U8,
    CG_DTYPE_COUNT
} cg_dtype;

size_t cg_dtype_size(cg_dtype dt);
/* "f32", "bf16", "f16", "i32", "i64", "u8" */
const char *cg_dtype_name(cg_dtype dt);
/* Parses the names above; returns CG_ERR_INVALID_ARG for anything else. */
cg_status cg_dtype_from_name(const char *name, cg_dtype *out);
bool cg_dtype_is_float(cg_dtype dt);
bool cg_dtype_valid(cg_dtype dt);

/* Scalar conversions. */
static inline float cg_bf16_to_f32(uint16_t h) {
    union { uint32_t u; float f; } v;
    v.u = (uint32_t)h << 16;
    return v.f;
}

static inline uint16_t cg_f32_to_bf16(float f) {
    union { uint32_t u; float f; } v;
    v.f = f;
    if ((v.u & 0x7fffffffu) > 0x7f800000u) /* NaN: keep the sign, force a quiet NaN payload */
        return (uint16_t)((v.u >> 16) | 0x0040u);
    /* Round to nearest even: add 0x7fff plus the lowest kept bit, then truncate. Inf stays Inf, and
     * values past the largest bf16 round up to Inf, as IEEE rounding does. */
    uint32_t rounding_bias = 0x7fffu + ((v.u >> 16) & 1u);
    return (uint16_t)((v.u + rounding_bias) >> 16);
}

float cg_f16_to_f32(uint16_t h);
uint16_t cg_f32_to_f16(float f);

/* Read element i of a buffer of dtype dt as double, or write it from double (floats round to nearest
 * even; integers truncate toward zero and saturate at their range, NaN becomes 0). Used by generic copy/cast paths and tests. */
double cg_load_as_f64(const void *data, cg_dtype dt, int64_t i);
void cg_store_from_f64(void *data, cg_dtype dt, int64_t i, double v);

#ifdef __cplusplus
}
#endif
#endif
