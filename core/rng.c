/* Philox generator state, raw draws and tensor fills; the bit-level functions live in rng.h. */
#include "core/rng.h"

#include <math.h>
#include <stdbool.h>

#include "core/context.h"
#include "core/ops_common.h"

/* Fills below this many Philox blocks stay on one thread: starting a parallel region costs more. */
#define PARALLEL_MIN_BLOCKS 4096

cg_rng cg_rng_init(uint64_t seed) {
    cg_rng r = {seed, 0, 0};
    return r;
}

cg_rng cg_rng_fork(const cg_rng *rng, uint64_t stream_id) {
    cg_rng r = {rng ? rng->seed : 0, 0, stream_id};
    return r;
}

void cg_rng_u32(cg_rng *rng, uint32_t *out, int64_t n) {
    if (!rng || !out || n <= 0) return;
    uint64_t nblocks = ((uint64_t)n + 3) / 4;
    for (uint64_t b = 0; b < nblocks; b++) {
        uint32_t w[4];
        cg_rng_block(rng->seed, rng->stream, rng->offset + b, w);
        for (int j = 0; j < 4; j++) {
            int64_t i = (int64_t)(b * 4) + j;
            if (i >= n) break;
            out[i] = w[j];
        }
    }
    rng->offset += nblocks;
}

/* ------------------------------------------------------------------ fills */

typedef cg_rng_fill_params fill_params;

static int values_per_block(cg_rng_fill_kind kind) { return cg_rng_fill_per_block(kind); }

/* Element offset (in elements, from the storage start) of flat row-major position i. */
static int64_t flat_to_offset(const cg_tensor *t, int64_t i) {
    int64_t off = t->offset;
    for (int d = t->ndim - 1; d >= 0; d--) {
        off += (i % t->shape[d]) * t->strides[d];
        i /= t->shape[d];
    }
    return off;
}

static void store_value(const cg_tensor *t, bool packed, int64_t i, float fv, int64_t iv) {
    int64_t at = packed ? t->offset + i : flat_to_offset(t, i);
    void *data = t->storage->data;
    switch (t->dtype) {
    case CG_F32: ((float *)data)[at] = fv; break;
    case CG_I32: ((int32_t *)data)[at] = (int32_t)iv; break;
    case CG_I64: ((int64_t *)data)[at] = iv; break;
    case CG_U8: ((uint8_t *)data)[at] = (uint8_t)iv; break;
    default: break; /* excluded by check_out */
    }
}

static void fill_cpu(const cg_rng *rng, cg_tensor *out, const fill_params *p, int64_t n) {
    int per_block = values_per_block(p->kind);
    int64_t nblocks = (n + per_block - 1) / per_block;
    bool packed = cg_is_contiguous(out);
#ifdef CG_HAVE_OPENMP
#pragma omp parallel for schedule(static) if (nblocks >= PARALLEL_MIN_BLOCKS)
#endif
    for (int64_t b = 0; b < nblocks; b++) {
        uint32_t w[4];
        float fv[4] = {0};
        int64_t iv[4] = {0};
        cg_rng_block(rng->seed, rng->stream, rng->offset + (uint64_t)b, w);
        cg_rng_fill_block(p, w, fv, iv);
        for (int j = 0; j < per_block; j++) {
            int64_t i = b * per_block + j;
            if (i >= n) break;
            store_value(out, packed, i, fv[j], iv[j]);
        }
    }
}

/* Checks rng/out and that out's dtype is one of `allowed` (a list ending in CG_DTYPE_COUNT). */
static cg_status check_out(const char *op, const cg_rng *rng, const cg_tensor *out, const cg_dtype *allowed,
                           const char *allowed_names) {
    if (!rng) return cg_set_error(CG_ERR_INVALID_ARG, "%s: NULL generator", op);
    if (!out) return cg_set_error(CG_ERR_INVALID_ARG, "%s: NULL output tensor", op);
    char desc[96];
    bool ok = false;
    for (const cg_dtype *d = allowed; *d != CG_DTYPE_COUNT; d++) ok = ok || out->dtype == *d;
    if (!ok)
        return cg_set_error(CG_ERR_DTYPE, "%s: out is %s; expected dtype %s", op,
                            cg_tensor_desc(out, desc, sizeof desc), allowed_names);
    if (out->device.type != CG_DEVICE_CPU && out->device.type != CG_DEVICE_CUDA)
        return cg_set_error(CG_ERR_DEVICE, "%s: out is on an unknown device", op);
    for (int d = 0; d < out->ndim; d++)
        if (out->shape[d] > 1 && out->strides[d] == 0)
            return cg_set_error(CG_ERR_INVALID_ARG,
                                "%s: out %s is an expanded view (stride 0 in dim %d); a fill needs distinct "
                                "elements",
                                op, cg_tensor_desc(out, desc, sizeof desc), d);
    return CG_OK;
}

/* Fills out (checked) and advances the offset. A CUDA tensor is filled by the kernel of cuda/rng.cu. */
static cg_status run_fill(cg_rng *rng, cg_tensor *out, const fill_params *p) {
    int64_t n = cg_numel(out);
    int per_block = values_per_block(p->kind);
    if (n > 0) {
        if (out->device.type == CG_DEVICE_CPU) {
            fill_cpu(rng, out, p, n);
        } else {
            cg_status st = cg_ops_cuda_enter("rng fill", out);
            if (st != CG_OK) return st;
            cg_ew_operand op = {cg_ops_data(out), (int64_t)cg_dtype_size(out->dtype), out->strides};
            cg_ew_iter it;
            cg_ew_iter_init(&it, out->ndim, out->shape, 1, &op);
            cg_cuda_ew ew;
            cg_ops_cuda_ew(&it, (const cg_tensor *const *)&out, &ew);
#ifdef CG_HAVE_CUDA
            st = cg_cuda_rng_fill(&ew, p, rng->seed, rng->stream, rng->offset);
#endif
            if (st != CG_OK) return st;
        }
    }
    rng->offset += ((uint64_t)n + (uint64_t)per_block - 1) / (uint64_t)per_block;
    return CG_OK;
}

cg_status cg_rng_uniform(cg_rng *rng, cg_tensor *out, float lo, float hi) {
    static const cg_dtype allowed[] = {CG_F32, CG_DTYPE_COUNT};
    cg_status st = check_out("rng_uniform", rng, out, allowed, "f32");
    if (st != CG_OK) return st;
    if (!isfinite(lo) || !isfinite(hi) || !(lo < hi) || !isfinite(hi - lo))
        return cg_set_error(CG_ERR_INVALID_ARG, "rng_uniform: needs finite lo < hi with finite hi - lo, got [%g, %g)",
                            (double)lo, (double)hi);
    fill_params p = {.kind = CG_RNG_FILL_UNIFORM, .a = lo, .b = hi};
    return run_fill(rng, out, &p);
}

cg_status cg_rng_normal(cg_rng *rng, cg_tensor *out, float mean, float std) {
    static const cg_dtype allowed[] = {CG_F32, CG_DTYPE_COUNT};
    cg_status st = check_out("rng_normal", rng, out, allowed, "f32");
    if (st != CG_OK) return st;
    if (!isfinite(mean) || !isfinite(std) || std < 0)
        return cg_set_error(CG_ERR_INVALID_ARG, "rng_normal: needs a finite mean and a finite std >= 0, got mean %g std %g",
                            (double)mean, (double)std);
    fill_params p = {.kind = CG_RNG_FILL_NORMAL, .a = mean, .b = std};
    return run_fill(rng, out, &p);
}

cg_status cg_rng_randint(cg_rng *rng, cg_tensor *out, int64_t lo, int64_t hi) {
    static const cg_dtype allowed[] = {CG_I32, CG_I64, CG_DTYPE_COUNT};
    cg_status st = check_out("rng_randint", rng, out, allowed, "i32 or i64");
    if (st != CG_OK) return st;
    if (!(lo < hi))
        return cg_set_error(CG_ERR_INVALID_ARG, "rng_randint: needs lo < hi, got [%lld, %lld)", (long long)lo,
                            (long long)hi);
    if (out->dtype == CG_I32 && (lo < INT32_MIN || hi - 1 > INT32_MAX))
        return cg_set_error(CG_ERR_INVALID_ARG, "rng_randint: [%lld, %lld) does not fit the i32 output",
                            (long long)lo, (long long)hi);
    uint64_t range = (uint64_t)hi - (uint64_t)lo; /* exact for any lo < hi */
    fill_params p = {.kind = range <= (UINT64_C(1) << 32) ? CG_RNG_FILL_RANDINT32 : CG_RNG_FILL_RANDINT64, .lo = lo, .range = range};
    return run_fill(rng, out, &p);
}

cg_status cg_rng_bernoulli(cg_rng *rng, cg_tensor *out, float p) {
    static const cg_dtype allowed[] = {CG_U8, CG_F32, CG_DTYPE_COUNT};
    cg_status st = check_out("rng_bernoulli", rng, out, allowed, "u8 or f32");
    if (st != CG_OK) return st;
    if (!(p >= 0.0f && p <= 1.0f))
        return cg_set_error(CG_ERR_INVALID_ARG, "rng_bernoulli: needs 0 <= p <= 1, got p = %g", (double)p);
    fill_params fp = {.kind = CG_RNG_FILL_BERNOULLI, .a = p};
    return run_fill(rng, out, &fp);
}
