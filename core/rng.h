/* Random numbers: Philox4x32-10, a counter-based generator (Salmon, Moraes, Dror, Shaw, "Parallel random
 * numbers: as easy as 1, 2, 3", SC'11; constants of the Random123 library). Every value is a pure
 * function of (seed, stream, block counter), so the CPU and CUDA backends produce the same numbers for the
 * same seed, in any order and with any number of threads.
 *
 * ---- Philox4x32-10 ----
 * One call maps a 128-bit counter ctr[0..3] and a 64-bit key key[0..1] to 128 random bits out[0..3].
 * A round: (hi0, lo0) = M0 * ctr[0], (hi1, lo1) = M1 * ctr[2] (32x32 -> 64-bit products), then
 *   ctr = { hi1 ^ ctr[1] ^ key[0], lo1, hi0 ^ ctr[3] ^ key[1], lo0 }
 * and between rounds key[0] += W0, key[1] += W1 (mod 2^32). Ten rounds, nine key bumps.
 *   M0 = 0xD2511F53, M1 = 0xCD9E8D57, W0 = 0x9E3779B9, W1 = 0xBB67AE85.
 *
 * ---- Stream layout (the CUDA backend reproduces this bit for bit) ----
 * A generator is (seed, stream, offset). Block number b of it is
 *   out[0..3] = philox4x32_10(ctr = {b lo32, b hi32, stream lo32, stream hi32},
 *                             key = {seed lo32, seed hi32})
 * (cg_rng_block). A draw of n values starting at offset o (in blocks) uses blocks o, o+1, ..., and
 * advances the offset by the blocks it used, so the next draw never reuses a word:
 *   32-bit values (cg_rng_u32, uniform, normal, bernoulli, randint with hi - lo <= 2^32):
 *     value i comes from block o + i/4, word i%4; offset += ceil(n/4).
 *   64-bit values (randint with hi - lo > 2^32):
 *     value i comes from block o + i/2, words 2*(i%2) (low half) and 2*(i%2)+1 (high half);
 *     offset += ceil(n/2).
 *   Normal values come in pairs: values 2k and 2k+1 of a block (k = 0, 1; i.e. words (0,1) and (2,3))
 *     are the two outputs of one Box-Muller transform of that pair of words (cg_rng_box_muller):
 *     value i%4 == 0 or 2 is the cosine branch, i%4 == 1 or 3 the sine branch.
 * Tensor fills write value i to flat row-major position i of the output's logical shape, whatever its
 * strides.
 *
 * ---- Conversions (f32 arithmetic, each operation rounded on its own: no fused multiply-add; the CUDA
 * side uses __fmul_rn / __fadd_rn or equivalent) ----
 *   unit(x)      = (float)(x >> 8) * 2^-24                       in [0, 1), 2^24 equally spaced values
 *   uniform      = lo + (hi - lo) * unit(x); if rounding gives a value >= hi, the largest float below hi
 *   normal       = mean + std * z (cg_rng_affine_f32), z from Box-Muller of words (a, b):
 *                  u1 = (float)((a >> 8) + 1) * 2^-24 in (0, 1] (never 0, so logf never sees 0)
 *                  u2 = unit(b);  r = sqrtf(-2 * logf(u1));  t = 6.28318548f * u2  (2*pi rounded to f32)
 *                  z0 = r * cosf(t), z1 = r * sinf(t)
 *                  |z| <= sqrt(2 * 24 ln 2) = 5.77. CPU and CUDA agree up to libm's rounding of
 *                  logf/sqrtf/cosf/sinf (a few ulp), not bit for bit.
 *   randint      = lo + ((uint64)x * range >> 32) for range = hi - lo <= 2^32 (multiply-shift, Lemire).
 *                  Outcome k gets floor or ceil of 2^32 / range of the 2^32 inputs, so each probability is
 *                  within range / 2^32 (relative) of 1/range: < 2.4e-7 relative for a 1000-way choice.
 *                  For range > 2^32: lo + mulhi64(x64, range), x64 = (high word << 32) | low word, bias
 *                  below range / 2^64.
 *   bernoulli(p) = unit(x) < p  (exactly 0 for p = 0, exactly 1 for p = 1)
 *
 * ---- Streams ----
 * cg_rng_fork(rng, id) gives the generator with the same seed on stream id, at offset 0: independent of
 * every other stream (Philox counters that differ in words 2-3 never meet), and a pure function of
 * (seed, id), so per-rank or per-purpose streams are reproducible however much the parent drew. The
 * default generator from cg_rng_init is stream 0. Stream ids are one flat namespace: a caller combining
 * several purposes packs them into the id (e.g. rank << 32 | purpose). */
#ifndef CG_RNG_H
#define CG_RNG_H

#include <math.h>
#include <stdint.h>

#include "core/error.h"
#include "core/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The bit-level functions below are header-only so that the CUDA kernels compile the very same code. */
#if defined(__CUDACC__)
#define CG_RNG_FN __host__ __device__ static inline
#else
#define CG_RNG_FN static inline
#endif
/* Separately rounded f32 multiply and add. nvcc would fuse a * b + c into one FMA (a different rounding),
 * so device code spells the rounding out; host C relies on gcc's -ffp-contract=off, the default under
 * -std=c11 (and x86-64 without -mfma has no FMA to fuse into). */
#if defined(__CUDA_ARCH__)
#define CG_RNG_FMUL(a, b) __fmul_rn((a), (b))
#define CG_RNG_FADD(a, b) __fadd_rn((a), (b))
#else
#define CG_RNG_FMUL(a, b) ((a) * (b))
#define CG_RNG_FADD(a, b) ((a) + (b))
#endif

#define CG_PHILOX_M0 0xD2511F53u
#define CG_PHILOX_M1 0xCD9E8D57u
#define CG_PHILOX_W0 0x9E3779B9u
#define CG_PHILOX_W1 0xBB67AE85u
#define CG_PHILOX_ROUNDS 10

/* Philox4x32 with 10 rounds: out = philox(ctr, key). out may alias ctr. */
CG_RNG_FN void cg_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]) {
    uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3];
    uint32_t k0 = key[0], k1 = key[1];
    for (int r = 0; r < CG_PHILOX_ROUNDS; r++) {
        if (r > 0) {
            k0 += CG_PHILOX_W0;
            k1 += CG_PHILOX_W1;
        }
        uint64_t p0 = (uint64_t)CG_PHILOX_M0 * c0;
        uint64_t p1 = (uint64_t)CG_PHILOX_M1 * c2;
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0;
        uint32_t n1 = (uint32_t)p1;
        uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
        uint32_t n3 = (uint32_t)p0;
        c0 = n0;
        c1 = n1;
        c2 = n2;
        c3 = n3;
    }
    out[0] = c0;
    out[1] = c1;
    out[2] = c2;
    out[3] = c3;
}

/* Block number `block` of the stream (seed, stream): see the layout above. */
CG_RNG_FN void cg_rng_block(uint64_t seed, uint64_t stream, uint64_t block, uint32_t out[4]) {
    uint32_t ctr[4] = {(uint32_t)block, (uint32_t)(block >> 32), (uint32_t)stream, (uint32_t)(stream >> 32)};
    uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    cg_philox4x32_10(ctr, key, out);
}

/* [0, 1): the 24 high bits times 2^-24 (exact in f32). */
CG_RNG_FN float cg_rng_unit_f32(uint32_t x) { return (float)(x >> 8) * (1.0f / 16777216.0f); }

/* (0, 1]: (24 high bits + 1) times 2^-24 (exact in f32); safe to take the log of. */
CG_RNG_FN float cg_rng_unit_open_f32(uint32_t x) { return (float)((x >> 8) + 1u) * (1.0f / 16777216.0f); }

/* Uniform in [lo, hi) (needs lo < hi and hi - lo finite). */
CG_RNG_FN float cg_rng_uniform_f32(uint32_t x, float lo, float hi) {
    float width = hi - lo;
    float v = CG_RNG_FADD(lo, CG_RNG_FMUL(width, cg_rng_unit_f32(x)));
    if (v >= hi) v = nextafterf(hi, lo); /* rounding up to hi is possible when |lo| >> hi - lo */
    return v;
}

/* Two independent standard normals from two words (Box-Muller). */
CG_RNG_FN void cg_rng_box_muller(uint32_t a, uint32_t b, float *z0, float *z1) {
    float u1 = cg_rng_unit_open_f32(a);
    float u2 = cg_rng_unit_f32(b);
    float r = sqrtf(-2.0f * logf(u1));
    float t = 6.28318548f * u2;
    *z0 = r * cosf(t);
    *z1 = r * sinf(t);
}

/* mean + std * z, rounded after the multiply and after the add (the normal fill's last step). */
CG_RNG_FN float cg_rng_affine_f32(float z, float mean, float std) { return CG_RNG_FADD(mean, CG_RNG_FMUL(std, z)); }

/* lo + floor(x * range / 2^32), for 1 <= range <= 2^32. */
CG_RNG_FN int64_t cg_rng_randint32(uint32_t x, int64_t lo, uint64_t range) {
    return (int64_t)((uint64_t)lo + (((uint64_t)x * range) >> 32));
}

/* High 64 bits of the 128-bit product a * b, from 32-bit pieces (no __int128 needed). */
CG_RNG_FN uint64_t cg_rng_mulhi64(uint64_t a, uint64_t b) {
    uint64_t a_lo = (uint32_t)a, a_hi = a >> 32, b_lo = (uint32_t)b, b_hi = b >> 32;
    uint64_t lo_lo = a_lo * b_lo, hi_lo = a_hi * b_lo, lo_hi = a_lo * b_hi, hi_hi = a_hi * b_hi;
    uint64_t middle = (lo_lo >> 32) + (uint32_t)hi_lo + (uint32_t)lo_hi; /* < 3 * 2^32: no overflow */
    return hi_hi + (hi_lo >> 32) + (lo_hi >> 32) + (middle >> 32);
}

/* lo + floor(x64 * range / 2^64), x64 = (hi_word << 32) | lo_word, for any range >= 1. */
CG_RNG_FN int64_t cg_rng_randint64(uint32_t lo_word, uint32_t hi_word, int64_t lo, uint64_t range) {
    uint64_t x = ((uint64_t)hi_word << 32) | lo_word;
    return (int64_t)((uint64_t)lo + cg_rng_mulhi64(x, range));
}

/* ---- the values of one block for each kind of tensor fill (shared by the CPU fill and the CUDA kernel) ---- */

typedef enum cg_rng_fill_kind {
    CG_RNG_FILL_UNIFORM,
    CG_RNG_FILL_NORMAL,
    CG_RNG_FILL_RANDINT32,
    CG_RNG_FILL_RANDINT64,
    CG_RNG_FILL_BERNOULLI
} cg_rng_fill_kind;

typedef struct cg_rng_fill_params {
    cg_rng_fill_kind kind;
    float a, b;     /* uniform: lo, hi; normal: mean, std; bernoulli: p */
    int64_t lo;     /* randint */
    uint64_t range; /* randint: hi - lo */
} cg_rng_fill_params;

/* Values per block: 2 for 64-bit integers, else 4. */
CG_RNG_FN int cg_rng_fill_per_block(cg_rng_fill_kind kind) { return kind == CG_RNG_FILL_RANDINT64 ? 2 : 4; }

/* The values a block's words yield (floats in fv, integers in iv), per the layout above. */
CG_RNG_FN void cg_rng_fill_block(const cg_rng_fill_params *p, const uint32_t w[4], float fv[4], int64_t iv[4]) {
    switch (p->kind) {
    case CG_RNG_FILL_UNIFORM:
        for (int j = 0; j < 4; j++) fv[j] = cg_rng_uniform_f32(w[j], p->a, p->b);
        break;
    case CG_RNG_FILL_NORMAL:
        for (int j = 0; j < 4; j += 2) {
            float z0, z1;
            cg_rng_box_muller(w[j], w[j + 1], &z0, &z1);
            fv[j] = cg_rng_affine_f32(z0, p->a, p->b);
            fv[j + 1] = cg_rng_affine_f32(z1, p->a, p->b);
        }
        break;
    case CG_RNG_FILL_RANDINT32:
        for (int j = 0; j < 4; j++) iv[j] = cg_rng_randint32(w[j], p->lo, p->range);
        break;
    case CG_RNG_FILL_RANDINT64:
        iv[0] = cg_rng_randint64(w[0], w[1], p->lo, p->range);
        iv[1] = cg_rng_randint64(w[2], w[3], p->lo, p->range);
        break;
    case CG_RNG_FILL_BERNOULLI:
        for (int j = 0; j < 4; j++) {
            int hit = cg_rng_unit_f32(w[j]) < p->a;
            fv[j] = hit ? 1.0f : 0.0f;
            iv[j] = hit;
        }
        break;
    }
}

/* ---- generator state ---- */

typedef struct cg_rng {
    uint64_t seed;   /* the Philox key */
    uint64_t offset; /* the next unused block of this stream */
    uint64_t stream; /* counter words 2-3: 0 for the default stream, see cg_rng_fork */
} cg_rng;

/* Stream 0 of seed, at offset 0. */
cg_rng cg_rng_init(uint64_t seed);
/* The generator of stream `stream_id` with rng's seed, at offset 0 (rng itself is not changed). */
cg_rng cg_rng_fork(const cg_rng *rng, uint64_t stream_id);

/* n raw 32-bit words in the documented layout (4 per block); advances the offset by ceil(n/4).
 * No-op for n <= 0. */
void cg_rng_u32(cg_rng *rng, uint32_t *out, int64_t n);

/* ---- tensor fills (CPU tensors of any strides, values in flat row-major order; a CUDA tensor is filled
 * through a host copy with the same values until the CUDA backend has its own kernel). The output must
 * not be an expanded view (stride 0 over a dim of size > 1): every element is written once. Large fills
 * use OpenMP; the values do not depend on the thread count. Each fill advances the offset as stated in
 * the layout, also for an empty tensor (by 0). On error nothing is written and the offset is unchanged. */

/* f32 uniform in [lo, hi): needs lo < hi, both finite, hi - lo finite. */
cg_status cg_rng_uniform(cg_rng *rng, cg_tensor *out, float lo, float hi);
/* f32 normal with the given mean and std (std >= 0, both finite). */
cg_status cg_rng_normal(cg_rng *rng, cg_tensor *out, float mean, float std);
/* i32 or i64 integers uniform in [lo, hi): needs lo < hi, and for i32 both ends within int32. */
cg_status cg_rng_randint(cg_rng *rng, cg_tensor *out, int64_t lo, int64_t hi);
/* u8 or f32: 1 with probability p, else 0 (0 <= p <= 1). */
cg_status cg_rng_bernoulli(cg_rng *rng, cg_tensor *out, float p);

#ifdef __cplusplus
}
#endif
#endif
