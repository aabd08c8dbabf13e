/* cg_tensor: a typed, strided view of memory owned by an arena.
 *
 * shape/strides are in elements; element (i0, i1, ...) lives at
 *   (char *)storage->data + (offset + sum_k i_k * strides[k]) * dtype_size.
 * Views (reshape, permute, transpose, slice, expand) share the storage and only change shape, strides
 * and offset; expand uses stride 0. The struct is public so callers can read shapes directly; create
 * and change tensors only through the functions below. */
#ifndef CG_TENSOR_H
#define CG_TENSOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/arena.h"
#include "core/device.h"
#include "core/dtype.h"
#include "core/error.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CG_MAX_DIMS 6

typedef struct cg_storage {
    void *data;
    size_t nbytes;
    cg_device device;
} cg_storage;

struct cg_node; /* autograd/: the tape entry that produced a tensor */

typedef struct cg_tensor {
    cg_dtype dtype;
    cg_device device;
    int ndim;
    int64_t shape[CG_MAX_DIMS];
    int64_t strides[CG_MAX_DIMS];
    int64_t offset;
    cg_storage *storage;
    /* autograd fields, managed by autograd/ */
    bool requires_grad;
    struct cg_tensor *grad;
    struct cg_node *node;
    const char *name;
} cg_tensor;

/* ---- creation (the tensor struct and its data both come from arena `a`, on the arena's device) ---- */
cg_tensor *cg_tensor_empty(cg_arena *a, cg_dtype dtype, int ndim, const int64_t *shape);
cg_tensor *cg_tensor_zeros(cg_arena *a, cg_dtype dtype, int ndim, const int64_t *shape);
/* Copies host data (packed, row-major, of the given dtype) into a new tensor on the arena's device. */
cg_tensor *cg_tensor_from_data(cg_arena *a, cg_dtype dtype, int ndim, const int64_t *shape, const void *data);
/* Wraps memory the caller owns (an mmap'd file, a user buffer) without copying; the struct comes from
 * the arena, the data must outlive the tensor. */
cg_tensor *cg_tensor_wrap(cg_arena *a, cg_dtype dtype, cg_device device, int ndim, const int64_t *shape,
                          void *data);
/* A new tensor with t's dtype and shape, packed, in arena a. */
cg_tensor *cg_tensor_empty_like(cg_arena *a, const cg_tensor *t);

/* ---- properties ---- */
int64_t cg_numel(const cg_tensor *t);
size_t cg_nbytes(const cg_tensor *t); /* numel * dtype size */
bool cg_is_contiguous(const cg_tensor *t);
/* Address of the first element (storage + offset). */
void *cg_data(const cg_tensor *t);
bool cg_same_shape(const cg_tensor *a, const cg_tensor *b);
/* "[2, 3, 4]" for a shape given as dims; returns buf. */
const char *cg_format_shape(int ndim, const int64_t *shape, char *buf, size_t n);
/* "[2, 3, 4]" into buf; returns buf. */
const char *cg_shape_str(const cg_tensor *t, char *buf, size_t n);
/* "f32[2, 3] cpu" into buf; returns buf. For error messages. */
const char *cg_tensor_desc(const cg_tensor *t, char *buf, size_t n);
/* Row-major strides for a shape. */
void cg_contiguous_strides(int ndim, const int64_t *shape, int64_t *strides);
/* Converts a negative axis (-1 = last) and checks the range; returns -1 if out of range. */
int cg_normalize_axis(int axis, int ndim);

/* ---- element access on CPU tensors (any dtype, any strides), for tests and small host work ---- */
double cg_get(const cg_tensor *t, const int64_t *index);
void cg_set(cg_tensor *t, const int64_t *index, double value);
/* Element at flat row-major position i of the logical shape. */
double cg_get_flat(const cg_tensor *t, int64_t i);
void cg_set_flat(cg_tensor *t, int64_t i, double value);

/* ---- views: share storage; the new struct comes from the output arena (see core/context.h) ---- */
/* A new struct for the same elements (same shape, strides, storage) with no autograd state. */
cg_tensor *cg_view_alias(const cg_tensor *t);
/* One entry of shape may be -1 (inferred). Fails if the layout cannot be viewed without a copy
 * (use cg_contiguous first, or autograd's cg_reshape, which copies when it must). */
cg_tensor *cg_view_reshape(const cg_tensor *t, int ndim, const int64_t *shape);
cg_tensor *cg_view_permute(const cg_tensor *t, const int *perm);
cg_tensor *cg_view_transpose(const cg_tensor *t, int dim0, int dim1);
/* Elements start, start+step, ... < end along dim (negative start/end count from the end; step >= 1). */
cg_tensor *cg_view_slice(const cg_tensor *t, int dim, int64_t start, int64_t end, int64_t step);
/* Broadcasts size-1 dims (and new leading dims) to shape with stride 0. */
cg_tensor *cg_view_expand(const cg_tensor *t, int ndim, const int64_t *shape);
/* Inserts/removes a size-1 dim. */
cg_tensor *cg_view_unsqueeze(const cg_tensor *t, int dim);
cg_tensor *cg_view_squeeze(const cg_tensor *t, int dim);

/* ---- copies ---- */
/* t itself if already contiguous, else a packed copy in the output arena. */
cg_tensor *cg_contiguous(const cg_tensor *t);
/* dst = src elementwise: same shape, any strides, any dtypes (converting), any devices. */
cg_status cg_copy(cg_tensor *dst, const cg_tensor *src);
/* A packed copy of t in arena a (on a's device, with t's dtype). */
cg_tensor *cg_tensor_clone(cg_arena *a, const cg_tensor *t);
/* A packed copy of t converted to dtype, in arena a. */
cg_tensor *cg_tensor_to(cg_arena *a, const cg_tensor *t, cg_dtype dtype);
cg_status cg_fill(cg_tensor *t, double value);

#ifdef __cplusplus
}
#endif
#endif
