/* CPU kernels that accumulate into indexed positions: scatter_add, index_add and the embedding's weight
 * gradient. They are the backward passes of gather, index_select, embedding and max/min.
 *
 * Several source elements may land on one destination, so the generic kernels run serially in row-major
 * order (deterministic); the embedding gradient, the one that is large in practice, is parallel over
 * column blocks, each thread adding the rows in position order, so its result does not depend on the
 * thread count either. */
#include <string.h>

#include "core/context.h"
#include "core/ops.h"
#include "core/ops_common.h"

static inline int64_t load_index(const char *p, cg_dtype dt) {
    return dt == CG_I64 ? *(const int64_t *)p : (int64_t)*(const int32_t *)p;
}

typedef struct put_ctx {
    cg_dtype index_dtype;
    int64_t axis_stride; /* destination elements between consecutive indices */
    int64_t limit;       /* the destination's size along the axis */
    int64_t bad_value;   /* first index outside [0, limit), checked before writing */
    bool bad;
} put_ctx;

/* Operands: 0 destination (stride 0 along the axis), 1 source, 2 index. */
static void check_run(void *ctx, int64_t n, char *const *p, const int64_t *s) {
    put_ctx *c = ctx;
    int64_t ies = (int64_t)cg_dtype_size(c->index_dtype);
    for (int64_t j = 0; j < n && !c->bad; j++) {
        int64_t id = load_index(p[2] + j * s[2] * ies, c->index_dtype);
        if (id < 0 || id >= c->limit) c->bad = true, c->bad_value = id;
    }
}

static void put_add_run(void *ctx, int64_t n, char *const *p, const int64_t *s) {
    const put_ctx *c = ctx;
    int64_t ies = (int64_t)cg_dtype_size(c->index_dtype);
    float *dst = (float *)p[0];
    const float *src = (const float *)p[1];
    for (int64_t j = 0; j < n; j++) {
        int64_t id = load_index(p[2] + j * s[2] * ies, c->index_dtype);
        dst[j * s[0] + id * c->axis_stride] += src[j * s[1]];
    }
}

/* The GPU put-add: every dim but the axis is iterated by threads, each walking the axis in order. */
static cg_status put_add_cuda(const char *op, cg_tensor *out, int ax, int ndim, const int64_t *shape,
                              const cg_tensor *src, const int64_t *src_strides, const cg_tensor *index,
                              const int64_t *index_strides) {
    cg_status st = cg_ops_cuda_enter(op, out);
    if (st != CG_OK) return st;
    int64_t value, pos;
    if ((st = cg_ops_find_bad_index(index, out->shape[ax], &value, &pos)) != CG_OK) return st;
    if (pos >= 0) {
        char d[CG_DESC_LEN];
        return cg_set_error(CG_ERR_INVALID_ARG, "%s: index %lld is outside [0, %lld) for axis %d of out %s", op,
                            (long long)value, (long long)out->shape[ax], ax, cg_tensor_desc(out, d, sizeof d));
    }
    int64_t rshape[CG_MAX_DIMS], rs[3][CG_MAX_DIMS];
    int nd = 0;
    for (int i = 0; i < ndim; i++) {
        if (i == ax) continue;
        rshape[nd] = shape[i];
        rs[0][nd] = out->strides[i], rs[1][nd] = src_strides[i], rs[2][nd] = index_strides[i];
        nd++;
    }
    cg_ew_operand ops[3] = {{cg_ops_data(out), 4, rs[0]},
                            {cg_ops_data(src), (int64_t)cg_dtype_size(src->dtype), rs[1]},
                            {cg_ops_data(index), (int64_t)cg_dtype_size(index->dtype), rs[2]}};
    cg_ew_iter it;
    cg_ew_iter_init(&it, nd, rshape, 3, ops);
    const cg_tensor *ts[3] = {out, src, index};
    cg_cuda_ew ew;
    cg_ops_cuda_ew(&it, ts, &ew);
#ifdef CG_HAVE_CUDA
    return cg_cuda_put_add(&ew, shape[ax], out->strides[ax], src_strides[ax], index_strides[ax]);
#else
    return CG_ERR_UNSUPPORTED;
#endif
}

/* The GPU index_add through a sort: out [outer, V, C] packed f32 += src [outer, N, C] packed by the packed
 * 1-D index (checked). */
static cg_status index_add_sorted(cg_tensor *out, const cg_tensor *index, const cg_tensor *src, int64_t outer,
                                  int64_t N, int64_t V, int64_t C) {
#ifdef CG_HAVE_CUDA
    size_t bytes = cg_cuda_index_add_sorted_scratch(N, V);
    void *scratch = bytes ? cg_arena_alloc(cg_step_arena(out->device), bytes, 256) : NULL;
    if (bytes && !scratch) return cg_last_status();
    return cg_cuda_index_add_sorted((float *)cg_ops_data(out), cg_ops_data(index), index->dtype, cg_ops_data(src),
                                    src->dtype, outer, N, V, C, scratch);
#else
    (void)out, (void)index, (void)src, (void)outer, (void)N, (void)V, (void)C;
    return cg_set_error(CG_ERR_UNSUPPORTED, "index_add: cgrad was built without CUDA");
#endif
}

/* dest[pos with the axis coordinate replaced by index] += src over the iteration shape (ndim, shape). */
static cg_status put_add(const char *op, cg_tensor *out, int ax, int ndim, const int64_t *shape, const cg_tensor *src,
                         const int64_t *src_strides, const cg_tensor *index, const int64_t *index_strides) {
    if (cg_ops_on_cuda(out)) return put_add_cuda(op, out, ax, ndim, shape, src, src_strides, index, index_strides);
    int64_t dst_strides[CG_MAX_DIMS];
    for (int i = 0; i < ndim; i++) dst_strides[i] = i == ax ? 0 : out->strides[i];
    cg_ew_operand ops[3] = {{cg_ops_data(out), 4, dst_strides},
                            {cg_ops_data(src), 4, src_strides},
                            {cg_ops_data(index), (int64_t)cg_dtype_size(index->dtype), index_strides}};
    cg_ew_iter it;
    cg_ew_iter_init(&it, ndim, shape, 3, ops);
    put_ctx c = {index->dtype, out->strides[ax], out->shape[ax], 0, false};
    cg_ew_iter_run(&it, check_run, &c, INT64_MAX);
    if (c.bad) {
        char d[CG_DESC_LEN];
        return cg_set_error(CG_ERR_INVALID_ARG, "%s: index %lld is outside [0, %lld) for axis %d of out %s", op,
                            (long long)c.bad_value, (long long)c.limit, ax, cg_tensor_desc(out, d, sizeof d));
    }
    cg_ew_iter_run(&it, put_add_run, &c, INT64_MAX); /* serial: destinations may repeat */
    return CG_OK;
}

cg_status cg_scatter_add_into(cg_tensor *out, int axis, const cg_tensor *index, const cg_tensor *src) {
    cg_status st;
    char d[3][CG_DESC_LEN];
    if ((st = cg_ops_check_float("scatter_add", "out", out)) != CG_OK) return st;
    if (cg_ops_on_cuda(out) && out->dtype != CG_F32) return cg_set_error(CG_ERR_DTYPE, "scatter_add: out must be f32 (it accumulates)");
    if ((st = cg_ops_check_float("scatter_add", "src", src)) != CG_OK) return st;
    if ((st = cg_ops_check_same_device("scatter_add", out, "src", src)) != CG_OK) return st;
    if ((st = cg_ops_check_index_on("scatter_add", "index", index, out)) != CG_OK) return st;
    if ((st = cg_ops_check_writable("scatter_add", out)) != CG_OK) return st;
    int ax = cg_normalize_axis(axis, out->ndim);
    if (ax < 0)
        return cg_set_error(CG_ERR_INVALID_ARG, "scatter_add: axis %d is out of range for out %s", axis,
                            cg_tensor_desc(out, d[0], sizeof d[0]));
    bool fits = index->ndim == out->ndim && src->ndim == out->ndim;
    for (int i = 0; fits && i < out->ndim; i++)
        fits = index->shape[i] <= src->shape[i] && (i == ax || index->shape[i] <= out->shape[i]);
    if (!fits)
        return cg_set_error(CG_ERR_SHAPE, "scatter_add: index %s must have the rank of out %s and src %s and be no "
                            "larger than src (and than out outside axis %d)", cg_tensor_desc(index, d[0], sizeof d[0]),
                            cg_tensor_desc(out, d[1], sizeof d[1]), cg_tensor_desc(src, d[2], sizeof d[2]), ax);
    return put_add("scatter_add", out, ax, index->ndim, index->shape, src, src->strides, index, index->strides);
}

cg_status cg_index_add_into(cg_tensor *out, int axis, const cg_tensor *index, const cg_tensor *src) {
    cg_status st;
    char d[3][CG_DESC_LEN];
    if ((st = cg_ops_check_float("index_add", "out", out)) != CG_OK) return st;
    if (cg_ops_on_cuda(out) && out->dtype != CG_F32) return cg_set_error(CG_ERR_DTYPE, "index_add: out must be f32 (it accumulates)");
    if ((st = cg_ops_check_float("index_add", "src", src)) != CG_OK) return st;
    if ((st = cg_ops_check_same_device("index_add", out, "src", src)) != CG_OK) return st;
    if ((st = cg_ops_check_index_on("index_add", "index", index, out)) != CG_OK) return st;
    if ((st = cg_ops_check_writable("index_add", out)) != CG_OK) return st;
    int ax = cg_normalize_axis(axis, out->ndim);
    if (ax < 0)
        return cg_set_error(CG_ERR_INVALID_ARG, "index_add: axis %d is out of range for out %s", axis,
                            cg_tensor_desc(out, d[0], sizeof d[0]));
    bool fits = index->ndim == 1 && src->ndim == out->ndim && src->shape[ax] == index->shape[0];
    for (int i = 0; fits && i < out->ndim; i++) fits = i == ax || src->shape[i] == out->shape[i];
    if (!fits)
        return cg_set_error(CG_ERR_SHAPE, "index_add: src %s must match out %s outside axis %d and have the 1-D "
                            "index %s's length along it", cg_tensor_desc(src, d[0], sizeof d[0]),
                            cg_tensor_desc(out, d[1], sizeof d[1]), ax, cg_tensor_desc(index, d[2], sizeof d[2]));
    if (cg_ops_on_cuda(out) && cg_is_contiguous(out)) { /* sorted by index: fast and deterministic */
        if ((st = cg_ops_cuda_enter("index_add", out)) != CG_OK) return st;
        int64_t value, pos;
        if ((st = cg_ops_find_bad_index(index, out->shape[ax], &value, &pos)) != CG_OK) return st;
        if (pos >= 0)
            return cg_set_error(CG_ERR_INVALID_ARG, "index_add: index %lld is outside [0, %lld) for axis %d of out %s",
                                (long long)value, (long long)out->shape[ax], ax, cg_tensor_desc(out, d[0], sizeof d[0]));
        const cg_tensor *sp = cg_contiguous(src), *ip = cg_contiguous(index);
        if (!sp || !ip) return cg_last_status();
        int64_t outer = 1, inner = 1;
        for (int i = 0; i < ax; i++) outer *= out->shape[i];
        for (int i = ax + 1; i < out->ndim; i++) inner *= out->shape[i];
        return index_add_sorted(out, ip, sp, outer, index->shape[0], out->shape[ax], inner);
    }
    int64_t index_strides[CG_MAX_DIMS] = {0};
    index_strides[ax] = index->strides[0];
    return put_add("index_add", out, ax, src->ndim, src->shape, src, src->strides, index, index_strides);
}

cg_status cg_embedding_backward_into(cg_tensor *grad_weight, const cg_tensor *ids, const cg_tensor *grad_out) {
    cg_status st;
    char d[3][CG_DESC_LEN];
    if ((st = cg_ops_check_float("embedding_backward", "grad_weight", grad_weight)) != CG_OK) return st;
    if (cg_ops_on_cuda(grad_weight) && grad_weight->dtype != CG_F32)
        return cg_set_error(CG_ERR_DTYPE, "embedding_backward: grad_weight must be f32 (it accumulates)");
    if ((st = cg_ops_check_float("embedding_backward", "grad_out", grad_out)) != CG_OK) return st;
    if ((st = cg_ops_check_same_device("embedding_backward", grad_weight, "grad_out", grad_out)) != CG_OK) return st;
    if ((st = cg_ops_check_index_on("embedding_backward", "ids", ids, grad_weight)) != CG_OK) return st;
    bool fits = grad_weight->ndim == 2 && grad_out->ndim == ids->ndim + 1 &&
                grad_out->shape[ids->ndim] == grad_weight->shape[1];
    for (int i = 0; fits && i < ids->ndim; i++) fits = grad_out->shape[i] == ids->shape[i];
    if (!fits)
        return cg_set_error(CG_ERR_SHAPE, "embedding_backward: grad_out %s must be ids %s plus the last dim of "
                            "grad_weight %s", cg_tensor_desc(grad_out, d[0], sizeof d[0]),
                            cg_tensor_desc(ids, d[1], sizeof d[1]), cg_tensor_desc(grad_weight, d[2], sizeof d[2]));
    if (!cg_is_contiguous(grad_weight))
        return cg_set_error(CG_ERR_INVALID_ARG, "embedding_backward: grad_weight %s must be packed",
                            cg_tensor_desc(grad_weight, d[0], sizeof d[0]));
    /* packed copies of the (usually already packed) inputs, so the loop below is two flat arrays */
    const cg_tensor *go = cg_contiguous(grad_out), *id = cg_contiguous(ids);
    if (!go || !id) return cg_last_status();
    int64_t n = cg_numel(id), C = grad_weight->shape[1], V = grad_weight->shape[0];
    if (cg_ops_on_cuda(grad_weight)) { /* sorted by id on the GPU, then summed per id in position order */
        if ((st = cg_ops_cuda_enter("embedding_backward", grad_weight)) != CG_OK) return st;
        int64_t value, pos;
        if ((st = cg_ops_find_bad_index(id, V, &value, &pos)) != CG_OK) return st;
        if (pos >= 0)
            return cg_set_error(CG_ERR_INVALID_ARG, "embedding_backward: id %lld at position %lld is outside [0, %lld)",
                                (long long)value, (long long)pos, (long long)V);
        return index_add_sorted(grad_weight, id, go, 1, n, V, C);
    }
    const char *ids_p = cg_ops_data(id);
    int64_t ies = (int64_t)cg_dtype_size(id->dtype);
    for (int64_t i = 0; i < n; i++) {
        int64_t v = load_index(ids_p + i * ies, id->dtype);
        if (v < 0 || v >= V)
            return cg_set_error(CG_ERR_INVALID_ARG, "embedding_backward: id %lld at position %lld is outside [0, %lld)",
                                (long long)v, (long long)i, (long long)V);
    }
    float *gw = (float *)cg_ops_data(grad_weight);
    const float *g = (const float *)cg_ops_data(go);
    const int64_t block = 64;
    int64_t nblocks = (C + block - 1) / block;
    int threads = cg_ops_threads_for(n * C, CG_OPS_PARALLEL_MIN);
    (void)threads;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
    for (int64_t b = 0; b < nblocks; b++) {
        int64_t c0 = b * block, c1 = c0 + block < C ? c0 + block : C;
        for (int64_t i = 0; i < n; i++) {
            float *row = gw + load_index(ids_p + i * ies, id->dtype) * C;
            const float *src = g + i * C;
            for (int64_t c = c0; c < c1; c++) row[c] += src[c];
        }
    }
    return CG_OK;
}
