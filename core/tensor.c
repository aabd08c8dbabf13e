#include "core/tensor.h"

#include <stdio.h>
#include <string.h>

#include "core/context.h"
#include "core/ops_common.h"

/* ------------------------------------------------------------------ helpers */

void cg_contiguous_strides(int ndim, const int64_t *shape, int64_t *strides) {
    int64_t s = 1;
    for (int i = ndim - 1; i >= 0; i--) {
        strides[i] = s;
        s *= shape[i] > 0 ? shape[i] : 1;
    }
}

int cg_normalize_axis(int axis, int ndim) {
    if (axis < 0) axis += ndim;
    return (axis < 0 || axis >= ndim) ? -1 : axis;
}

const char *cg_format_shape(int ndim, const int64_t *shape, char *buf, size_t n) {
    size_t pos = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < ndim && pos < n; i++)
        pos += (size_t)snprintf(buf + pos, n - pos, i ? ", %lld" : "%lld", (long long)shape[i]);
    if (pos < n) snprintf(buf + pos, n - pos, "]");
    return buf;
}

const char *cg_shape_str(const cg_tensor *t, char *buf, size_t n) {
    return t ? cg_format_shape(t->ndim, t->shape, buf, n) : cg_format_shape(0, NULL, buf, n);
}

const char *cg_tensor_desc(const cg_tensor *t, char *buf, size_t n) {
    if (!t) {
        snprintf(buf, n, "NULL");
        return buf;
    }
    char shape[160], dev[24];
    snprintf(buf, n, "%s%s %s", cg_dtype_name(t->dtype), cg_shape_str(t, shape, sizeof shape),
             cg_device_str(t->device, dev, sizeof dev));
    return buf;
}

int64_t cg_numel(const cg_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

size_t cg_nbytes(const cg_tensor *t) { return (size_t)cg_numel(t) * cg_dtype_size(t->dtype); }

bool cg_is_contiguous(const cg_tensor *t) {
    int64_t expected = 1;
    for (int i = t->ndim - 1; i >= 0; i--) {
        if (t->shape[i] == 1) continue; /* a size-1 dim's stride never matters */
        if (t->strides[i] != expected) return false;
        expected *= t->shape[i];
    }
    return true;
}

void *cg_data(const cg_tensor *t) {
    return (char *)t->storage->data + t->offset * (int64_t)cg_dtype_size(t->dtype);
}

bool cg_same_shape(const cg_tensor *a, const cg_tensor *b) {
    if (a->ndim != b->ndim) return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i]) return false;
    return true;
}

static cg_status check_shape(const char *what, int ndim, const int64_t *shape) {
    if (ndim < 0 || ndim > CG_MAX_DIMS)
        return cg_set_error(CG_ERR_SHAPE, "%s: %d dims (cgrad supports 0 to %d)", what, ndim, CG_MAX_DIMS);
    if (ndim > 0 && !shape) return cg_set_error(CG_ERR_INVALID_ARG, "%s: NULL shape", what);
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return cg_set_error(CG_ERR_SHAPE, "%s: dim %d has negative size %lld", what, i, (long long)shape[i]);
        if (shape[i] > 0 && n > INT64_MAX / 16 / shape[i])
            return cg_set_error(CG_ERR_SHAPE, "%s: the shape's element count overflows", what);
        n *= shape[i];
    }
    return CG_OK;
}

/* A tensor struct (and its storage struct) in the metadata region of arena a. */
static cg_tensor *tensor_struct(cg_arena *a, cg_dtype dtype, cg_device device, int ndim, const int64_t *shape) {
    cg_tensor *t = cg_arena_alloc_meta(a, sizeof(cg_tensor) + sizeof(cg_storage));
    if (!t) return NULL;
    t->storage = (cg_storage *)(t + 1);
    t->dtype = dtype;
    t->device = device;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    cg_contiguous_strides(ndim, t->shape, t->strides);
    t->storage->device = device;
    return t;
}

/* ------------------------------------------------------------------ creation */

cg_tensor *cg_tensor_empty(cg_arena *a, cg_dtype dtype, int ndim, const int64_t *shape) {
    if (!a) {
        cg_set_error(CG_ERR_INVALID_ARG, "tensor_empty: NULL arena");
        return NULL;
    }
    if (!cg_dtype_valid(dtype)) {
        cg_set_error(CG_ERR_DTYPE, "tensor_empty: invalid dtype %d", (int)dtype);
        return NULL;
    }
    if (check_shape("tensor_empty", ndim, shape) != CG_OK) return NULL;
    cg_tensor *t = tensor_struct(a, dtype, cg_arena_device(a), ndim, shape);
    if (!t) return NULL;
    t->storage->nbytes = cg_nbytes(t);
    t->storage->data = cg_arena_alloc(a, t->storage->nbytes, 64);
    return t->storage->data ? t : NULL;
}

cg_tensor *cg_tensor_zeros(cg_arena *a, cg_dtype dtype, int ndim, const int64_t *shape) {
    cg_tensor *t = cg_tensor_empty(a, dtype, ndim, shape);
    if (t && cg_device_memset_zero(t->device, t->storage->data, t->storage->nbytes) != CG_OK) return NULL;
    return t;
}

cg_tensor *cg_tensor_from_data(cg_arena *a, cg_dtype dtype, int ndim, const int64_t *shape, const void *data) {
    cg_tensor *t = cg_tensor_empty(a, dtype, ndim, shape);
    if (!t) return NULL;
    if (cg_nbytes(t) > 0) {
        if (!data) {
            cg_set_error(CG_ERR_INVALID_ARG, "tensor_from_data: NULL data");
            return NULL;
        }
        if (cg_device_memcpy(t->device, t->storage->data, CG_CPU, data, cg_nbytes(t)) != CG_OK) return NULL;
    }
    return t;
}

cg_tensor *cg_tensor_wrap(cg_arena *a, cg_dtype dtype, cg_device device, int ndim, const int64_t *shape,
                          void *data) {
    if (!a) {
        cg_set_error(CG_ERR_INVALID_ARG, "tensor_wrap: NULL arena");
        return NULL;
    }
    if (!cg_dtype_valid(dtype)) {
        cg_set_error(CG_ERR_DTYPE, "tensor_wrap: invalid dtype %d", (int)dtype);
        return NULL;
    }
    if (check_shape("tensor_wrap", ndim, shape) != CG_OK) return NULL;
    cg_tensor *t = tensor_struct(a, dtype, device, ndim, shape);
    if (!t) return NULL;
    t->storage->data = data;
    t->storage->nbytes = cg_nbytes(t);
    return t;
}

cg_tensor *cg_tensor_empty_like(cg_arena *a, const cg_tensor *t) {
    return cg_tensor_empty(a, t->dtype, t->ndim, t->shape);
}

/* ------------------------------------------------------------------ element access (CPU) */

static int64_t element_offset(const cg_tensor *t, const int64_t *index) {
    int64_t off = t->offset;
    for (int i = 0; i < t->ndim; i++) off += index[i] * t->strides[i];
    return off;
}

static int64_t flat_offset(const cg_tensor *t, int64_t flat) {
    int64_t off = t->offset;
    for (int i = t->ndim - 1; i >= 0; i--) {
        int64_t d = t->shape[i];
        off += (flat % d) * t->strides[i];
        flat /= d;
    }
    return off;
}

double cg_get(const cg_tensor *t, const int64_t *index) {
    return cg_load_as_f64(t->storage->data, t->dtype, element_offset(t, index));
}

void cg_set(cg_tensor *t, const int64_t *index, double value) {
    cg_store_from_f64(t->storage->data, t->dtype, element_offset(t, index), value);
}

double cg_get_flat(const cg_tensor *t, int64_t i) {
    return cg_load_as_f64(t->storage->data, t->dtype, flat_offset(t, i));
}

void cg_set_flat(cg_tensor *t, int64_t i, double value) {
    cg_store_from_f64(t->storage->data, t->dtype, flat_offset(t, i), value);
}

/* ------------------------------------------------------------------ views */

/* A copy of t's struct (same storage) in the output arena of t's device. */
static cg_tensor *view_of(const cg_tensor *t, const char *op) {
    if (!t) {
        cg_set_error(CG_ERR_INVALID_ARG, "%s: NULL tensor", op);
        return NULL;
    }
    cg_arena *a = cg_output_arena(t->device);
    if (!a) return NULL;
    cg_tensor *v = cg_arena_alloc_meta(a, sizeof *v);
    if (!v) return NULL;
    *v = *t;
    v->requires_grad = false;
    v->grad = NULL;
    v->node = NULL;
    v->name = NULL;
    return v;
}

/* Strides that give t the new shape without moving data, or false if there are none. The old dims are
 * cut into chunks that are contiguous among themselves; each chunk must map onto a run of new dims with
 * the same element count (the rule PyTorch's view follows). */
static bool view_strides(const cg_tensor *t, int ndim, const int64_t *shape, int64_t *strides) {
    if (cg_numel(t) == 0) {
        cg_contiguous_strides(ndim, shape, strides);
        return true;
    }
    int old_nd = t->ndim;
    const int64_t one = 1;
    const int64_t *old_shape = old_nd ? t->shape : &one, *old_strides = old_nd ? t->strides : &one;
    if (old_nd == 0) old_nd = 1;
    int view_d = ndim - 1;
    int64_t chunk_base_stride = old_strides[old_nd - 1];
    int64_t tensor_numel = 1, view_numel = 1;
    for (int d = old_nd - 1; d >= 0; d--) {
        tensor_numel *= old_shape[d];
        bool chunk_ends = d == 0 || (old_shape[d - 1] != 1 && old_strides[d - 1] != tensor_numel * chunk_base_stride);
        if (!chunk_ends) continue;
        while (view_d >= 0 && (view_numel < tensor_numel || shape[view_d] == 1)) {
            strides[view_d] = view_numel * chunk_base_stride;
            view_numel *= shape[view_d];
            view_d--;
        }
        if (view_numel != tensor_numel) return false;
        if (d > 0) {
            chunk_base_stride = old_strides[d - 1];
            tensor_numel = 1;
            view_numel = 1;
        }
    }
    return view_d == -1;
}

cg_tensor *cg_view_alias(const cg_tensor *t) { return view_of(t, "alias"); }

cg_tensor *cg_view_reshape(const cg_tensor *t, int ndim, const int64_t *shape) {
    char sbuf[160];
    if (!t) return view_of(t, "reshape");
    if (ndim < 0 || ndim > CG_MAX_DIMS || (ndim > 0 && !shape)) {
        cg_set_error(CG_ERR_SHAPE, "reshape: bad target rank %d", ndim);
        return NULL;
    }
    int64_t want[CG_MAX_DIMS];
    int infer = -1;
    int64_t known = 1;
    for (int i = 0; i < ndim; i++) {
        want[i] = shape[i];
        if (shape[i] == -1) {
            if (infer >= 0) {
                cg_set_error(CG_ERR_SHAPE, "reshape: more than one -1 in the target shape");
                return NULL;
            }
            infer = i;
        } else if (shape[i] < 0) {
            cg_set_error(CG_ERR_SHAPE, "reshape: negative size %lld", (long long)shape[i]);
            return NULL;
        } else {
            known *= shape[i];
        }
    }
    int64_t n = cg_numel(t);
    if (infer >= 0) {
        if (known == 0 || n % known != 0) {
            cg_set_error(CG_ERR_SHAPE, "reshape: cannot infer -1 for %s into %lld-element pieces",
                         cg_shape_str(t, sbuf, sizeof sbuf), (long long)known);
            return NULL;
        }
        want[infer] = n / known;
        known *= want[infer];
    }
    if (known != n) {
        cg_set_error(CG_ERR_SHAPE, "reshape: %s has %lld elements, the target shape %lld",
                     cg_shape_str(t, sbuf, sizeof sbuf), (long long)n, (long long)known);
        return NULL;
    }
    int64_t new_strides[CG_MAX_DIMS];
    if (!view_strides(t, ndim, want, new_strides)) {
        cg_set_error(CG_ERR_SHAPE, "reshape: a view of %s with these strides cannot have the target shape "
                     "without a copy (call cg_contiguous first)", cg_shape_str(t, sbuf, sizeof sbuf));
        return NULL;
    }
    cg_tensor *v = view_of(t, "reshape");
    if (!v) return NULL;
    v->ndim = ndim;
    for (int i = 0; i < ndim; i++) {
        v->shape[i] = want[i];
        v->strides[i] = new_strides[i];
    }
    if (n == 0) cg_contiguous_strides(ndim, v->shape, v->strides);
    return v;
}

cg_tensor *cg_view_permute(const cg_tensor *t, const int *perm) {
    if (!t || !perm) {
        cg_set_error(CG_ERR_INVALID_ARG, "permute: NULL argument");
        return NULL;
    }
    bool seen[CG_MAX_DIMS] = {false};
    for (int i = 0; i < t->ndim; i++) {
        int p = perm[i];
        if (p < 0 || p >= t->ndim || seen[p]) {
            cg_set_error(CG_ERR_INVALID_ARG, "permute: the permutation is not a permutation of 0..%d", t->ndim - 1);
            return NULL;
        }
        seen[p] = true;
    }
    cg_tensor *v = view_of(t, "permute");
    if (!v) return NULL;
    for (int i = 0; i < t->ndim; i++) {
        v->shape[i] = t->shape[perm[i]];
        v->strides[i] = t->strides[perm[i]];
    }
    return v;
}

cg_tensor *cg_view_transpose(const cg_tensor *t, int dim0, int dim1) {
    if (!t) return view_of(t, "transpose");
    int d0 = cg_normalize_axis(dim0, t->ndim), d1 = cg_normalize_axis(dim1, t->ndim);
    if (d0 < 0 || d1 < 0) {
        cg_set_error(CG_ERR_INVALID_ARG, "transpose: dims (%d, %d) out of range for %d dims", dim0, dim1, t->ndim);
        return NULL;
    }
    int perm[CG_MAX_DIMS];
    for (int i = 0; i < t->ndim; i++) perm[i] = i;
    perm[d0] = d1;
    perm[d1] = d0;
    return cg_view_permute(t, perm);
}

cg_tensor *cg_view_slice(const cg_tensor *t, int dim, int64_t start, int64_t end, int64_t step) {
    if (!t) return view_of(t, "slice");
    int d = cg_normalize_axis(dim, t->ndim);
    if (d < 0) {
        cg_set_error(CG_ERR_INVALID_ARG, "slice: dim %d out of range for %d dims", dim, t->ndim);
        return NULL;
    }
    if (step < 1) {
        cg_set_error(CG_ERR_INVALID_ARG, "slice: step %lld (must be >= 1)", (long long)step);
        return NULL;
    }
    int64_t size = t->shape[d];
    if (start < 0) start += size;
    if (end < 0) end += size;
    if (start < 0) start = 0;
    if (end > size) end = size;
    if (start > size) start = size;
    if (end < start) end = start;
    cg_tensor *v = view_of(t, "slice");
    if (!v) return NULL;
    v->offset += start * t->strides[d];
    v->shape[d] = (end - start + step - 1) / step;
    v->strides[d] = t->strides[d] * step;
    return v;
}

cg_tensor *cg_view_expand(const cg_tensor *t, int ndim, const int64_t *shape) {
    char a[160];
    if (!t) return view_of(t, "expand");
    if (ndim < t->ndim || ndim > CG_MAX_DIMS || !shape) {
        cg_set_error(CG_ERR_SHAPE, "expand: cannot expand %s to %d dims", cg_shape_str(t, a, sizeof a), ndim);
        return NULL;
    }
    int64_t strides[CG_MAX_DIMS];
    int lead = ndim - t->ndim;
    for (int i = 0; i < ndim; i++) {
        if (i < lead) {
            strides[i] = 0;
            continue;
        }
        int64_t have = t->shape[i - lead];
        if (have == shape[i]) {
            strides[i] = t->strides[i - lead];
        } else if (have == 1) {
            strides[i] = 0;
        } else {
            cg_set_error(CG_ERR_SHAPE, "expand: dim %d of %s has size %lld, cannot expand to %lld", i - lead,
                         cg_shape_str(t, a, sizeof a), (long long)have, (long long)shape[i]);
            return NULL;
        }
    }
    cg_tensor *v = view_of(t, "expand");
    if (!v) return NULL;
    v->ndim = ndim;
    for (int i = 0; i < ndim; i++) {
        v->shape[i] = shape[i];
        v->strides[i] = strides[i];
    }
    return v;
}

cg_tensor *cg_view_unsqueeze(const cg_tensor *t, int dim) {
    if (!t) return view_of(t, "unsqueeze");
    int d = dim < 0 ? dim + t->ndim + 1 : dim;
    if (d < 0 || d > t->ndim || t->ndim >= CG_MAX_DIMS) {
        cg_set_error(CG_ERR_INVALID_ARG, "unsqueeze: dim %d out of range for %d dims", dim, t->ndim);
        return NULL;
    }
    cg_tensor *v = view_of(t, "unsqueeze");
    if (!v) return NULL;
    for (int i = t->ndim; i > d; i--) {
        v->shape[i] = t->shape[i - 1];
        v->strides[i] = t->strides[i - 1];
    }
    v->shape[d] = 1;
    v->strides[d] = d < t->ndim ? t->strides[d] * t->shape[d] : 1;
    v->ndim = t->ndim + 1;
    return v;
}

cg_tensor *cg_view_squeeze(const cg_tensor *t, int dim) {
    if (!t) return view_of(t, "squeeze");
    int d = cg_normalize_axis(dim, t->ndim);
    if (d < 0 || t->shape[d] != 1) {
        cg_set_error(CG_ERR_SHAPE, "squeeze: dim %d is out of range or not of size 1", dim);
        return NULL;
    }
    cg_tensor *v = view_of(t, "squeeze");
    if (!v) return NULL;
    for (int i = d; i + 1 < t->ndim; i++) {
        v->shape[i] = t->shape[i + 1];
        v->strides[i] = t->strides[i + 1];
    }
    v->ndim = t->ndim - 1;
    return v;
}

/* ------------------------------------------------------------------ copies */

/* Strided host copy with dtype conversion. Fast paths: same dtype and both packed (memcpy), and f32
 * to/from bf16 packed. Everything else walks the logical index with a counter. */
static void host_copy(cg_tensor *dst, const cg_tensor *src) {
    int64_t n = cg_numel(dst);
    if (n == 0) return;
    bool packed = cg_is_contiguous(dst) && cg_is_contiguous(src);
    if (packed && dst->dtype == src->dtype) {
        memcpy(cg_data(dst), cg_data(src), cg_nbytes(dst));
        return;
    }
    if (packed && dst->dtype == CG_BF16 && src->dtype == CG_F32) {
        uint16_t *d = cg_data(dst);
        const float *s = cg_data(src);
        for (int64_t i = 0; i < n; i++) d[i] = cg_f32_to_bf16(s[i]);
        return;
    }
    if (packed && dst->dtype == CG_F32 && src->dtype == CG_BF16) {
        float *d = cg_data(dst);
        const uint16_t *s = cg_data(src);
        for (int64_t i = 0; i < n; i++) d[i] = cg_bf16_to_f32(s[i]);
        return;
    }
    int nd = dst->ndim;
    int64_t idx[CG_MAX_DIMS] = {0};
    int64_t so = src->offset, dof = dst->offset;
    size_t es = cg_dtype_size(dst->dtype);
    bool same = dst->dtype == src->dtype;
    for (int64_t i = 0; i < n; i++) {
        if (same)
            memcpy((char *)dst->storage->data + dof * (int64_t)es, (const char *)src->storage->data + so * (int64_t)es, es);
        else
            cg_store_from_f64(dst->storage->data, dst->dtype, dof, cg_load_as_f64(src->storage->data, src->dtype, so));
        for (int k = nd - 1; k >= 0; k--) { /* odometer increment */
            idx[k]++;
            so += src->strides[k];
            dof += dst->strides[k];
            if (idx[k] < dst->shape[k]) break;
            so -= src->strides[k] * dst->shape[k];
            dof -= dst->strides[k] * dst->shape[k];
            idx[k] = 0;
        }
    }
}

/* dst = src with the CUDA copy kernel: both on one GPU, any strides and dtypes. */
static cg_status cuda_copy_on_device(cg_tensor *dst, const cg_tensor *src) {
    if (dst->dtype == src->dtype && cg_is_contiguous(dst) && cg_is_contiguous(src))
        return cg_device_memcpy(dst->device, cg_data(dst), src->device, cg_data(src), cg_nbytes(dst));
    cg_status st = cg_ops_cuda_enter("copy", dst);
    if (st != CG_OK) return st;
    int64_t ds[CG_MAX_DIMS], ss[CG_MAX_DIMS];
    for (int i = 0; i < dst->ndim; i++) {
        ds[i] = dst->shape[i] == 1 ? 0 : dst->strides[i];
        ss[i] = dst->shape[i] == 1 ? 0 : src->strides[i];
    }
    cg_ew_operand ops[2] = {{cg_ops_data(dst), (int64_t)cg_dtype_size(dst->dtype), ds},
                            {cg_ops_data(src), (int64_t)cg_dtype_size(src->dtype), ss}};
    cg_ew_iter it;
    cg_ew_iter_init(&it, dst->ndim, dst->shape, 2, ops);
    const cg_tensor *ts[2] = {dst, src};
    cg_cuda_ew ew;
    cg_ops_cuda_ew(&it, ts, &ew);
#ifdef CG_HAVE_CUDA
    return cg_cuda_copy(&ew);
#else
    return cg_set_error(CG_ERR_UNSUPPORTED, "copy: cgrad was built without CUDA");
#endif
}

cg_status cg_copy(cg_tensor *dst, const cg_tensor *src) {
    char a[160], b[160];
    if (!dst || !src) return cg_set_error(CG_ERR_INVALID_ARG, "copy: NULL tensor");
    if (!cg_same_shape(dst, src))
        return cg_set_error(CG_ERR_SHAPE, "copy: destination %s and source %s differ in shape",
                            cg_tensor_desc(dst, a, sizeof a), cg_tensor_desc(src, b, sizeof b));
    bool dst_cpu = dst->device.type == CG_DEVICE_CPU, src_cpu = src->device.type == CG_DEVICE_CPU;
    if (dst_cpu && src_cpu) {
        host_copy(dst, src);
        return CG_OK;
    }
    if (cg_numel(dst) == 0) return CG_OK;
    if (cg_device_eq(dst->device, src->device)) return cuda_copy_on_device(dst, src);
    /* Across devices: packed same-dtype data moves with one memcpy. Otherwise a strided or converting copy
     * runs on the side that has the kernel: the source is packed where it lives, moved packed, and
     * scattered/converted where it lands. */
    if (dst->dtype == src->dtype && cg_is_contiguous(dst) && cg_is_contiguous(src))
        return cg_device_memcpy(dst->device, cg_data(dst), src->device, cg_data(src), cg_nbytes(dst));
    const cg_tensor *s = src;
    if (!cg_is_contiguous(src)) {
        cg_arena *sa = cg_step_arena(src->device);
        cg_tensor *packed = sa ? cg_tensor_empty(sa, src->dtype, src->ndim, src->shape) : NULL;
        if (!packed) return cg_last_status();
        cg_status st = src_cpu ? (host_copy(packed, src), CG_OK) : cuda_copy_on_device(packed, src);
        if (st != CG_OK) return st;
        s = packed;
    }
    if (dst_cpu) { /* download packed, then convert/scatter on the host */
        cg_arena *tmp = cg_step_arena(CG_CPU);
        cg_tensor *h = tmp ? cg_tensor_empty(tmp, s->dtype, s->ndim, s->shape) : NULL;
        if (!h) return cg_last_status();
        cg_status st = cg_device_memcpy(CG_CPU, cg_data(h), s->device, cg_data(s), cg_nbytes(h));
        if (st != CG_OK) return st;
        host_copy(dst, h);
        return CG_OK;
    }
    /* upload (or move between GPUs) packed, then convert/scatter on the destination GPU */
    cg_arena *da = cg_step_arena(dst->device);
    cg_tensor *d = da ? cg_tensor_empty(da, s->dtype, s->ndim, s->shape) : NULL;
    if (!d) return cg_last_status();
    cg_status st = cg_device_memcpy(dst->device, cg_data(d), s->device, cg_data(s), cg_nbytes(d));
    if (st != CG_OK) return st;
    return cuda_copy_on_device(dst, d);
}

cg_tensor *cg_tensor_clone(cg_arena *a, const cg_tensor *t) {
    if (!t) {
        cg_set_error(CG_ERR_INVALID_ARG, "clone: NULL tensor");
        return NULL;
    }
    cg_tensor *c = cg_tensor_empty(a, t->dtype, t->ndim, t->shape);
    if (!c) return NULL;
    if (cg_device_eq(c->device, t->device) || cg_is_contiguous(t)) {
        if (cg_copy(c, t) != CG_OK) return NULL;
        return c;
    }
    /* Strided source on another device: pack it where it lives first. */
    cg_tensor *packed = cg_contiguous(t);
    if (!packed || cg_copy(c, packed) != CG_OK) return NULL;
    return c;
}

cg_tensor *cg_tensor_to(cg_arena *a, const cg_tensor *t, cg_dtype dtype) {
    if (!t) {
        cg_set_error(CG_ERR_INVALID_ARG, "tensor_to: NULL tensor");
        return NULL;
    }
    cg_tensor *c = cg_tensor_empty(a, dtype, t->ndim, t->shape);
    if (!c || cg_copy(c, t) != CG_OK) return NULL;
    return c;
}

cg_tensor *cg_contiguous(const cg_tensor *t) {
    if (!t) {
        cg_set_error(CG_ERR_INVALID_ARG, "contiguous: NULL tensor");
        return NULL;
    }
    if (cg_is_contiguous(t)) return (cg_tensor *)t;
    cg_arena *a = cg_output_arena(t->device);
    if (!a) return NULL;
    cg_tensor *c = cg_tensor_empty(a, t->dtype, t->ndim, t->shape);
    if (!c || cg_copy(c, t) != CG_OK) return NULL;
    return c;
}

cg_status cg_fill(cg_tensor *t, double value) {
    if (!t) return cg_set_error(CG_ERR_INVALID_ARG, "fill: NULL tensor");
    int64_t n = cg_numel(t);
    if (t->device.type == CG_DEVICE_CPU) {
        if (t->dtype == CG_F32 && cg_is_contiguous(t)) {
            float *d = cg_data(t), v = (float)value;
            for (int64_t i = 0; i < n; i++) d[i] = v;
        } else {
            for (int64_t i = 0; i < n; i++) cg_set_flat(t, i, value);
        }
        return CG_OK;
    }
    if (n == 0) return CG_OK;
    cg_status st = cg_ops_cuda_enter("fill", t);
    if (st != CG_OK) return st;
    if ((st = cg_ops_check_writable("fill", t)) != CG_OK) return st;
    cg_ew_operand op = {cg_ops_data(t), (int64_t)cg_dtype_size(t->dtype), t->strides};
    cg_ew_iter it;
    cg_ew_iter_init(&it, t->ndim, t->shape, 1, &op);
    cg_cuda_ew ew;
    cg_ops_cuda_ew(&it, (const cg_tensor *const *)&t, &ew);
#ifdef CG_HAVE_CUDA
    return cg_cuda_fill(&ew, value);
#else
    return cg_set_error(CG_ERR_UNSUPPORTED, "fill: cgrad was built without CUDA");
#endif
}
