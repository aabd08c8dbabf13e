/* Hugging Face safetensors files: a validating, mmap-based reader and an atomic writer.
 *
 * Layout: u64 little-endian header length N, N bytes of UTF-8 JSON, then the packed tensor bytes (C order,
 * little-endian). The JSON maps tensor names to {"dtype", "shape", "data_offsets": [begin, end]} (offsets
 * relative to byte 8 + N) plus an optional "__metadata__" object of string -> string.
 *
 * The reader performs every check of the reference implementation (header size <= 100,000,000 bytes,
 * UTF-8, valid JSON object without duplicate keys, known dtypes, sizes that match the shapes, tensors that
 * tile the data region from 0 without gaps or overlaps, no trailing bytes) and names the file and the
 * problem in every error. Reading needs cJSON; without it cg_safetensors_open returns CG_ERR_UNSUPPORTED.
 * The writer does not need cJSON. */
#ifndef CG_SAFETENSORS_H
#define CG_SAFETENSORS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/arena.h"
#include "core/dtype.h"
#include "core/error.h"
#include "core/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CG_SAFETENSORS_MAX_HEADER 100000000ull

typedef struct cg_safetensors cg_safetensors;

typedef struct cg_safetensors_entry {
    const char *name;
    const char *dtype_name;  /* as written in the file: "BF16", "F64", ... */
    cg_dtype dtype;          /* the matching cgrad dtype when dtype_supported */
    bool dtype_supported;    /* F32, BF16, F16, I32, I64, U8 map to cgrad dtypes; the rest cannot be loaded */
    int ndim;
    int64_t shape[CG_MAX_DIMS];
    const void *data;        /* into the read-only mapping; not necessarily aligned to the element size */
    size_t nbytes;
    uint64_t offset;         /* data_offsets[0], relative to the start of the data region */
} cg_safetensors_entry;

/* Maps and validates a file. The handle (and every pointer it hands out) lives until
 * cg_safetensors_close. Errors: CG_ERR_IO (cannot open/map), CG_ERR_FORMAT (malformed), CG_ERR_OOM,
 * CG_ERR_UNSUPPORTED (built without cJSON). */
cg_status cg_safetensors_open(const char *path, cg_safetensors **out);
void cg_safetensors_close(cg_safetensors *st);

const char *cg_safetensors_path(const cg_safetensors *st);
int cg_safetensors_count(const cg_safetensors *st);
/* Entries in file order (by data offset); NULL if i is out of range. */
const cg_safetensors_entry *cg_safetensors_entry_at(const cg_safetensors *st, int i);
/* The entry named `name`, or NULL (no error set) if absent. O(log n). */
const cg_safetensors_entry *cg_safetensors_find(const cg_safetensors *st, const char *name);
/* The value of a __metadata__ key, or NULL if absent. */
const char *cg_safetensors_metadata(const cg_safetensors *st, const char *key);
int cg_safetensors_metadata_count(const cg_safetensors *st);
/* The i-th metadata pair in file order; false if i is out of range. */
bool cg_safetensors_metadata_at(const cg_safetensors *st, int i, const char **key, const char **value);
/* Bytes of tensor data (the file size minus 8 + N). */
uint64_t cg_safetensors_data_bytes(const cg_safetensors *st);

/* Copies tensor `name` into a new packed tensor of dtype `want` in arena a (on a's device), converting
 * (e.g. a BF16 file tensor to f32). Unknown name: CG_ERR_INVALID_ARG; a file dtype cgrad cannot hold
 * (F64, I8, BOOL, ...): CG_ERR_DTYPE; both messages name the tensor. Returns NULL on error. */
cg_tensor *cg_safetensors_load(const cg_safetensors *st, const char *name, cg_arena *a, cg_dtype want);
/* Copies tensor `name` into an existing tensor of the same shape (any dtype, device and strides). */
cg_status cg_safetensors_load_into(const cg_safetensors *st, const char *name, cg_tensor *dst);

/* Writes n tensors (any cgrad dtype, device and strides; stored packed) under unique names, in the order
 * given, with optional string metadata. The header is padded with spaces so that 8 + N is a multiple of
 * 8. The file is written to "<path>.tmp.<pid>", fsync'd and renamed over path, so readers never see a
 * partial file; the temporary file is removed on any error. */
cg_status cg_safetensors_write(const char *path, int n, const char *const *names, const cg_tensor *const *tensors,
                               int n_meta, const char *const *meta_keys, const char *const *meta_values);

/* The safetensors dtype name of a cgrad dtype ("F32", "BF16", "F16", "I32", "I64", "U8"). */
const char *cg_safetensors_dtype_name(cg_dtype dt);

#ifdef __cplusplus
}
#endif
#endif
