/* Internal helpers shared by the CPU op kernels (ops_elementwise.c, ops_reduce.c, ops_index.c): the
 * argument checks behind the house error messages, and a strided N-operand iterator that every
 * elementwise-shaped kernel runs on. Not part of the public API (cgrad.h does not include it). */
#ifndef CG_OPS_COMMON_H
#define CG_OPS_COMMON_H

#include <stdbool.h>
#include <stdint.h>

#include "core/tensor.h"
#include "cuda/ops.h"

/* Loops over fewer elements than this stay on one thread: below it, waking the OpenMP team costs more
 * than the work. */
#define CG_OPS_PARALLEL_MIN 32768

/* Lets GCC vectorise a loop whose output may be exactly one of its inputs (in-place ops): that aliasing
 * is element-for-element, so it carries no dependence across iterations, which is what ivdep asserts. */
#if defined(__GNUC__) && !defined(__clang__)
#define CG_IVDEP _Pragma("GCC ivdep")
#else /* clang's assume_safety warns (an error under -Werror) on loops it cannot vectorise, like powf calls */
#define CG_IVDEP
#endif

/* Description buffer size for cg_tensor_desc in error messages. */
#define CG_DESC_LEN 160

/* The first element of t, or NULL for a tensor without data (0 elements). */
static inline char *cg_ops_data(const cg_tensor *t) {
    return t->storage && t->storage->data ? (char *)cg_data(t) : NULL;
}

/* ---- argument checks: each sets the error ("<op>: ...") and returns its status, or CG_OK ---- */

/* t is non-NULL, has storage, and lives on the CPU (CUDA tensors are refused until the CUDA backend
 * provides the kernel). `what` names the argument in the message ("a", "out", "index"). */
cg_status cg_ops_check_cpu(const char *op, const char *what, const cg_tensor *t);
/* cg_ops_check_cpu plus dtype f32. */
cg_status cg_ops_check_f32(const char *op, const char *what, const cg_tensor *t);
/* For an op that has a CUDA kernel: an f32 CPU tensor, or an f32 or bf16 tensor on a CUDA device. */
cg_status cg_ops_check_float(const char *op, const char *what, const cg_tensor *t);
/* cg_ops_check_cpu plus dtype i32 or i64. */
cg_status cg_ops_check_index(const char *op, const char *what, const cg_tensor *t);
/* out has exactly the given shape. */
cg_status cg_ops_check_out_shape(const char *op, const cg_tensor *out, int ndim, const int64_t *shape);
/* An output must not be an expanded view (a stride 0 on a dim of size > 1 would write one element from
 * several places, racing between threads). */
cg_status cg_ops_check_writable(const char *op, const cg_tensor *out);

/* "[2, 3]" for a raw shape. */
const char *cg_ops_shape_str(int ndim, const int64_t *shape, char *buf, size_t n);

/* Strides of t broadcast to an ndim-dim shape (aligned at the right; dims t lacks or has as size 1 get
 * stride 0). The caller has checked that t broadcasts to the shape. */
void cg_ops_broadcast_strides(const cg_tensor *t, int ndim, const int64_t *shape, int64_t *strides);

/* ---- the strided iterator ---- */

#define CG_EW_MAX_OPS 4

/* One operand of an iteration: its first element and its strides (in elements) over the iteration
 * shape. */
typedef struct cg_ew_operand {
    char *base;
    int64_t elem_size;
    const int64_t *strides; /* ndim entries, 0 for broadcast dims */
} cg_ew_operand;

/* An iteration over a shape with up to CG_EW_MAX_OPS operands, its dims merged where every operand is
 * contiguous across them and size-1 dims dropped, so a packed tensor becomes one long run and a
 * bias-like [N] against [M, N] becomes M runs of N. */
typedef struct cg_ew_iter {
    int ndim; /* >= 1 */
    int nops;
    int64_t numel;
    int64_t shape[CG_MAX_DIMS];
    int64_t strides[CG_EW_MAX_OPS][CG_MAX_DIMS];
    char *base[CG_EW_MAX_OPS];
    int64_t elem_size[CG_EW_MAX_OPS];
} cg_ew_iter;

/* A run of n elements along the innermost merged dim: p[k] is operand k's first element, s[k] its
 * stride in elements. */
typedef void (*cg_ew_run_fn)(void *ctx, int64_t n, char *const *p, const int64_t *s);

void cg_ew_iter_init(cg_ew_iter *it, int ndim, const int64_t *shape, int nops, const cg_ew_operand *ops);
/* Calls fn over every run, in logical row-major order within each thread. Above parallel_min elements
 * the index space is split into one contiguous range per OpenMP thread (pass INT64_MAX for serial). */
void cg_ew_iter_run(const cg_ew_iter *it, cg_ew_run_fn fn, void *ctx, int64_t parallel_min);

/* Number of threads a loop of n units should use (1 below parallel_min or without OpenMP). */
int cg_ops_threads_for(int64_t n, int64_t parallel_min);

/* ---- the CUDA side ---- */

/* t is on the same device as ref (else a device error naming both). */
cg_status cg_ops_check_same_device(const char *op, const cg_tensor *ref, const char *what, const cg_tensor *t);
/* The iteration as the CUDA kernels take it; ts[k] gives operand k's dtype. */
void cg_ops_cuda_ew(const cg_ew_iter *it, const cg_tensor *const *ts, cg_cuda_ew *out);
/* Makes t's GPU current before a launch (ops run on their tensors' device); CG_ERR_UNSUPPORTED in a build
 * without CUDA, where no CUDA tensor can exist. */
cg_status cg_ops_cuda_enter(const char *op, const cg_tensor *t);
/* An index tensor (i32/i64) on ref's device: cg_ops_check_index for the CPU, the same rule on a GPU. */
cg_status cg_ops_check_index_on(const char *op, const char *what, const cg_tensor *t, const cg_tensor *ref);
/* The first entry of index (row-major) outside [0, limit): *pos = -1 when there is none. On a GPU this waits
 * for the scan's answer. */
cg_status cg_ops_find_bad_index(const cg_tensor *index, int64_t limit, int64_t *value, int64_t *pos);
/* True when t lives on a GPU. */
static inline bool cg_ops_on_cuda(const cg_tensor *t) { return t && t->device.type == CG_DEVICE_CUDA; }

#endif
