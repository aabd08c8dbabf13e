/* The decode-step ops (autograd/ops_decode.h): argument checks, then the kernels of cuda/decode.h. */
#include "autograd/ops_decode.h"

#include <stdlib.h>
#include <string.h>

#include "autograd/ops_common.h"
#ifdef CG_HAVE_CUDA
#include "cuda/decode.h"
#endif

#define DESC 160

/* t is a CUDA tensor, the op runs under no-grad; else an error naming op and role. */
static bool check_decode(const char *op, const char *role, const cg_tensor *t) {
    char d[DESC];
    if (!t) {
        cg_set_error(CG_ERR_INVALID_ARG, "%s: %s is NULL", op, role);
        return false;
    }
    if (t->device.type != CG_DEVICE_CUDA) {
        cg_set_error(CG_ERR_DEVICE, "%s: %s %s must be a CUDA tensor (the decode-step ops are CUDA only)", op, role,
                     cg_tensor_desc(t, d, sizeof d));
        return false;
    }
    if (cg_grad_enabled()) {
        cg_set_error(CG_ERR_INVALID_ARG, "%s: inference only; call it between cg_no_grad_enter() and "
                     "cg_no_grad_exit()", op);
        return false;
    }
    return true;
}

static bool same_device(const char *op, const cg_tensor *a, const cg_tensor *b) {
    char d[DESC], e[DESC];
    if (cg_device_eq(a->device, b->device)) return true;
    cg_set_error(CG_ERR_DEVICE, "%s: %s and %s are on different devices", op, cg_tensor_desc(a, d, sizeof d),
                 cg_tensor_desc(b, e, sizeof e));
    return false;
}

cg_tensor *cg_decode_embedding(const cg_tensor *weight, const cg_tensor *ids) {
    const char *op = "decode embedding";
    char d[DESC];
    if (!check_decode(op, "weight", weight) || !check_decode(op, "ids", ids) || !same_device(op, weight, ids))
        return NULL;
    if (weight->ndim != 2 || !cg_is_contiguous(weight) || (weight->dtype != CG_F32 && weight->dtype != CG_BF16)) {
        cg_set_error(CG_ERR_SHAPE, "%s: weight %s must be a packed f32/bf16 [vocab, channels]", op,
                     cg_tensor_desc(weight, d, sizeof d));
        return NULL;
    }
    if ((ids->dtype != CG_I32 && ids->dtype != CG_I64) || ids->ndim + 1 > CG_MAX_DIMS) {
        cg_set_error(CG_ERR_DTYPE, "%s: ids %s must be i32 or i64 with at most %d dims", op,
                     cg_tensor_desc(ids, d, sizeof d), CG_MAX_DIMS - 1);
        return NULL;
    }
    const cg_tensor *ip = cg_contiguous(ids);
    if (!ip) return NULL;
    int64_t shape[CG_MAX_DIMS];
    memcpy(shape, ids->shape, sizeof(int64_t) * (size_t)ids->ndim);
    shape[ids->ndim] = weight->shape[1];
    cg_tensor *out = cg_new_output(weight->device, weight->dtype, ids->ndim + 1, shape);
    if (!out) return NULL;
#ifdef CG_HAVE_CUDA
    if (cg_cuda_decode_embedding(weight->dtype, cg_data(out), cg_data(weight), weight->shape[0], weight->shape[1],
                                 ip->dtype, cg_data(ip), cg_numel(ip)) != CG_OK)
        return NULL;
    return out;
#else
    cg_no_cuda_error(op);
    return NULL;
#endif
}

cg_tensor *cg_decode_rope_table(cg_arena *a, const cg_rope_config *rope, int64_t D) {
    if (!a || !rope || D <= 0 || D % 2 != 0) {
        cg_set_error(CG_ERR_INVALID_ARG, "decode rope table: needs an arena, a config and an even head dim (%lld)",
                     (long long)D);
        return NULL;
    }
    int64_t half = D / 2, bytes[1] = {half * (int64_t)sizeof(double)};
    double *host = malloc(sizeof(double) * (size_t)half);
    if (!host) {
        cg_set_error(CG_ERR_OOM, "decode rope table: out of host memory");
        return NULL;
    }
    for (int64_t i = 0; i < half; i++) host[i] = cg_rope_inv_freq(rope, i, D);
    cg_tensor *t = cg_tensor_from_data(a, CG_U8, 1, bytes, host);
    free(host);
    return t;
}

cg_tensor *cg_decode_rope(const cg_tensor *x, const cg_tensor *table, const cg_tensor *positions) {
    const char *op = "decode rope";
    char d[DESC];
    if (!check_decode(op, "x", x) || !check_decode(op, "table", table) || !check_decode(op, "positions", positions) ||
        !same_device(op, x, table) || !same_device(op, x, positions))
        return NULL;
    if (x->ndim != 4 || x->shape[3] % 2 != 0 || (x->dtype != CG_F32 && x->dtype != CG_BF16)) {
        cg_set_error(CG_ERR_SHAPE, "%s: x %s must be f32/bf16 [B, H, T, D] with D even", op, cg_tensor_desc(x, d, sizeof d));
        return NULL;
    }
    if (table->dtype != CG_U8 || cg_numel(table) != x->shape[3] / 2 * (int64_t)sizeof(double) ||
        !cg_is_contiguous(table)) {
        cg_set_error(CG_ERR_SHAPE, "%s: table %s is not the table of head dim %lld (cg_decode_rope_table)", op,
                     cg_tensor_desc(table, d, sizeof d), (long long)x->shape[3]);
        return NULL;
    }
    if (positions->dtype != CG_I64 || positions->ndim != 2 || positions->shape[0] != x->shape[0] ||
        positions->shape[1] != x->shape[2] || !cg_is_contiguous(positions)) {
        cg_set_error(CG_ERR_SHAPE, "%s: positions %s must be packed i64 [B, T] = [%lld, %lld]", op,
                     cg_tensor_desc(positions, d, sizeof d), (long long)x->shape[0], (long long)x->shape[2]);
        return NULL;
    }
    const cg_tensor *xp = cg_contiguous(x);
    cg_tensor *out = xp ? cg_new_output(x->device, x->dtype, 4, x->shape) : NULL;
    if (!out) return NULL;
#ifdef CG_HAVE_CUDA
    if (cg_cuda_decode_rope(x->dtype, cg_data(out), cg_data(xp), x->shape[0], x->shape[1], x->shape[2], x->shape[3],
                            (const double *)cg_data(table), (const int64_t *)cg_data(positions)) != CG_OK)
        return NULL;
    return out;
#else
    cg_no_cuda_error(op);
    return NULL;
#endif
}

cg_status cg_decode_cache_write(cg_tensor *store, const cg_tensor *x, const cg_tensor *pos) {
    const char *op = "decode cache write";
    char d[DESC], e[DESC];
    if (!check_decode(op, "store", store) || !check_decode(op, "x", x) || !check_decode(op, "pos", pos) ||
        !same_device(op, store, x) || !same_device(op, store, pos))
        return cg_last_status();
    if (store->ndim != 4 || x->ndim != 4 || !cg_is_contiguous(store) || store->shape[0] != x->shape[0] ||
        store->shape[1] != x->shape[1] || store->shape[3] != x->shape[3] || x->shape[2] > store->shape[2])
        return cg_set_error(CG_ERR_SHAPE, "%s: x %s does not fit the packed cache %s ([B, H, T, D] into [B, H, L, D])",
                            op, cg_tensor_desc(x, d, sizeof d), cg_tensor_desc(store, e, sizeof e));
    if (pos->dtype != CG_I64 || cg_numel(pos) != 1)
        return cg_set_error(CG_ERR_SHAPE, "%s: pos %s must be one i64", op, cg_tensor_desc(pos, d, sizeof d));
    const cg_tensor *xp = cg_packed_as(x, store->dtype);
    if (!xp) return cg_last_status();
#ifdef CG_HAVE_CUDA
    return cg_cuda_decode_cache_write(store->dtype, cg_data(store), cg_data(xp), store->shape[0], store->shape[1],
                                      store->shape[2], x->shape[2], store->shape[3], (const int64_t *)cg_data(pos));
#else
    return cg_no_cuda_error(op);
#endif
}
