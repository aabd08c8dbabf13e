/* safetensors reader (mmap + validation) and writer (atomic). See core/safetensors.h for the format.
 *
 * Byte order: the header length is decoded byte by byte, but tensor bytes are handed to cgrad as they lie
 * in the file, which is little-endian; this assumes a little-endian host (x86-64, AArch64), checked below
 * at compile time where the compiler tells us the byte order. */
#include "core/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/context.h"
#include "core/json.h"

#if defined(__BYTE_ORDER__) && defined(__ORDER_LITTLE_ENDIAN__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "core/safetensors.c hands little-endian file bytes to cgrad unchanged: a big-endian host needs byte swaps"
#endif

/* ------------------------------------------------------------------ dtypes */

typedef struct st_dtype {
    const char *name;
    size_t size;
    int cg; /* cg_dtype, or -1 when cgrad has no such dtype */
} st_dtype;

static const st_dtype st_dtypes[] = {
    {"BOOL", 1, -1},   {"U8", 1, CG_U8},   {"I8", 1, -1},      {"F8_E5M2", 1, -1}, {"F8_E4M3", 1, -1},
    {"I16", 2, -1},    {"U16", 2, -1},     {"F16", 2, CG_F16}, {"BF16", 2, CG_BF16}, {"I32", 4, CG_I32},
    {"U32", 4, -1},    {"F32", 4, CG_F32}, {"F64", 8, -1},     {"I64", 8, CG_I64}, {"U64", 8, -1},
};
#define N_ST_DTYPES ((int)(sizeof st_dtypes / sizeof st_dtypes[0]))

const char *cg_safetensors_dtype_name(cg_dtype dt) {
    for (int i = 0; i < N_ST_DTYPES; i++)
        if (st_dtypes[i].cg == (int)dt) return st_dtypes[i].name;
    return NULL;
}

/* ------------------------------------------------------------------ UTF-8 */

/* Index of the first byte that is not part of valid UTF-8 (overlongs, surrogates and code points past
 * U+10FFFF are invalid), or len if all of s is valid. */
static size_t utf8_invalid_at(const unsigned char *s, size_t len) {
    size_t i = 0;
    while (i < len) {
        unsigned char c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t n;
        uint32_t cp, min;
        if ((c & 0xe0) == 0xc0) n = 1, cp = c & 0x1f, min = 0x80;
        else if ((c & 0xf0) == 0xe0) n = 2, cp = c & 0x0f, min = 0x800;
        else if ((c & 0xf8) == 0xf0) n = 3, cp = c & 0x07, min = 0x10000;
        else return i;
        if (len - i <= n) return i;
        for (size_t k = 1; k <= n; k++) {
            if ((s[i + k] & 0xc0) != 0x80) return i;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return i;
        i += n + 1;
    }
    return len;
}

/* ------------------------------------------------------------------ the handle and queries */

struct cg_safetensors {
    char *path;
    void *map;
    size_t map_len;
    uint64_t header_len;
    uint64_t data_bytes;
    int n;
    cg_safetensors_entry *entries; /* sorted by offset */
    const cg_safetensors_entry **by_name; /* the entries sorted by name, for binary search */
    int n_meta;
    char **meta_keys, **meta_values;
};

void cg_safetensors_close(cg_safetensors *st) {
    if (!st) return;
    if (st->map) munmap(st->map, st->map_len);
    for (int i = 0; i < st->n; i++) free((char *)st->entries[i].name);
    for (int i = 0; i < st->n_meta; i++) {
        free(st->meta_keys[i]);
        free(st->meta_values[i]);
    }
    free(st->entries);
    free((void *)st->by_name);
    free(st->meta_keys);
    free(st->meta_values);
    free(st->path);
    free(st);
}

const char *cg_safetensors_path(const cg_safetensors *st) { return st ? st->path : NULL; }
int cg_safetensors_count(const cg_safetensors *st) { return st ? st->n : 0; }
uint64_t cg_safetensors_data_bytes(const cg_safetensors *st) { return st ? st->data_bytes : 0; }

const cg_safetensors_entry *cg_safetensors_entry_at(const cg_safetensors *st, int i) {
    if (!st || i < 0 || i >= st->n) return NULL;
    return &st->entries[i];
}

const cg_safetensors_entry *cg_safetensors_find(const cg_safetensors *st, const char *name) {
    if (!st || !name) return NULL;
    int lo = 0, hi = st->n - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        const cg_safetensors_entry *e = st->by_name[mid];
        int c = strcmp(name, e->name);
        if (c == 0) return e;
        if (c < 0) hi = mid - 1;
        else lo = mid + 1;
    }
    return NULL;
}

const char *cg_safetensors_metadata(const cg_safetensors *st, const char *key) {
    if (!st || !key) return NULL;
    for (int i = 0; i < st->n_meta; i++)
        if (strcmp(st->meta_keys[i], key) == 0) return st->meta_values[i];
    return NULL;
}

int cg_safetensors_metadata_count(const cg_safetensors *st) { return st ? st->n_meta : 0; }

bool cg_safetensors_metadata_at(const cg_safetensors *st, int i, const char **key, const char **value) {
    if (!st || i < 0 || i >= st->n_meta) return false;
    if (key) *key = st->meta_keys[i];
    if (value) *value = st->meta_values[i];
    return true;
}

/* ------------------------------------------------------------------ reader */

#ifdef CG_HAVE_CJSON

/* Parses one tensor entry of the header into e (name already set). */
static cg_status parse_entry(const char *path, const char *name, const cJSON *info, cg_safetensors_entry *e) {
    char what[512];
    snprintf(what, sizeof what, "%s: tensor '%s'", path, name);
    if (!cJSON_IsObject(info))
        return cg_set_error(CG_ERR_FORMAT, "%s: the entry is a JSON %s, not an object", what, cg_json_type_name(info));
    const char *dtype_name;
    if (cg_json_get_string(info, "dtype", what, &dtype_name) != CG_OK) return cg_last_status();
    const st_dtype *dt = NULL;
    for (int i = 0; i < N_ST_DTYPES; i++)
        if (strcmp(dtype_name, st_dtypes[i].name) == 0) dt = &st_dtypes[i];
    if (!dt)
        return cg_set_error(CG_ERR_FORMAT, "%s: unknown dtype '%.40s' for tensor '%s'", path, dtype_name, name);
    e->dtype_name = dt->name;
    e->dtype_supported = dt->cg >= 0;
    e->dtype = dt->cg >= 0 ? (cg_dtype)dt->cg : CG_U8;

    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(info, "shape");
    if (!shape) return cg_set_error(CG_ERR_FORMAT, "%s: missing key 'shape'", what);
    if (!cJSON_IsArray(shape))
        return cg_set_error(CG_ERR_FORMAT, "%s: 'shape' must be an array, got %s", what, cg_json_type_name(shape));
    int ndim = 0;
    uint64_t numel = 1;
    bool overflow = false;
    for (const cJSON *d = shape->child; d; d = d->next, ndim++) {
        char nm[32];
        snprintf(nm, sizeof nm, "shape[%d]", ndim);
        int64_t v;
        if (cg_json_as_int(d, what, nm, &v) != CG_OK) return cg_last_status();
        if (v < 0) return cg_set_error(CG_ERR_FORMAT, "%s: %s = %lld is negative", what, nm, (long long)v);
        if (ndim < CG_MAX_DIMS) e->shape[ndim] = v;
        if (v != 0 && numel > UINT64_MAX / (uint64_t)v) overflow = true;
        numel *= (uint64_t)v;
    }
    if (ndim > CG_MAX_DIMS)
        return cg_set_error(CG_ERR_FORMAT, "%s: %d dims, more than the %d cgrad supports", what, ndim, CG_MAX_DIMS);
    e->ndim = ndim;

    const cJSON *offs = cJSON_GetObjectItemCaseSensitive(info, "data_offsets");
    if (!offs) return cg_set_error(CG_ERR_FORMAT, "%s: missing key 'data_offsets'", what);
    if (!cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2)
        return cg_set_error(CG_ERR_FORMAT, "%s: 'data_offsets' must be an array [begin, end], got %s", what,
                            cJSON_IsArray(offs) ? "an array of another length" : cg_json_type_name(offs));
    int64_t begin, end;
    if (cg_json_as_int(offs->child, what, "data_offsets[0]", &begin) != CG_OK ||
        cg_json_as_int(offs->child->next, what, "data_offsets[1]", &end) != CG_OK)
        return cg_last_status();
    if (begin < 0 || end < 0)
        return cg_set_error(CG_ERR_FORMAT, "%s: data_offsets [%lld, %lld] has a negative entry", what, (long long)begin,
                            (long long)end);
    if (begin > end)
        return cg_set_error(CG_ERR_FORMAT, "%s: data_offsets begin %lld > end %lld", what, (long long)begin,
                            (long long)end);
    char sb[160];
    if (overflow || numel > UINT64_MAX / dt->size)
        return cg_set_error(CG_ERR_FORMAT, "%s: the byte size of shape %s overflows", what,
                            cg_format_shape(ndim, e->shape, sb, sizeof sb));
    uint64_t need = numel * dt->size;
    if ((uint64_t)(end - begin) != need)
        return cg_set_error(CG_ERR_FORMAT, "%s: data_offsets [%lld, %lld] span %llu bytes, but shape %s of %s needs %llu",
                            what, (long long)begin, (long long)end, (unsigned long long)(end - begin),
                            cg_format_shape(ndim, e->shape, sb, sizeof sb), dt->name, (unsigned long long)need);
    e->offset = (uint64_t)begin;
    e->nbytes = (size_t)need;
    return CG_OK;
}

static cg_status parse_metadata(cg_safetensors *st, const cJSON *meta) {
    if (cJSON_IsNull(meta)) return CG_OK;
    if (!cJSON_IsObject(meta))
        return cg_set_error(CG_ERR_FORMAT, "%s: __metadata__ must be an object of strings, got %s", st->path,
                            cg_json_type_name(meta));
    int n = cJSON_GetArraySize(meta);
    st->meta_keys = calloc((size_t)n + 1, sizeof *st->meta_keys);
    st->meta_values = calloc((size_t)n + 1, sizeof *st->meta_values);
    if (!st->meta_keys || !st->meta_values) return cg_set_error(CG_ERR_OOM, "%s: out of memory", st->path);
    for (const cJSON *m = meta->child; m; m = m->next) {
        if (!cJSON_IsString(m))
            return cg_set_error(CG_ERR_FORMAT, "%s: __metadata__ value of '%s' is a %s, not a string", st->path,
                                m->string, cg_json_type_name(m));
        char *k = strdup(m->string), *v = strdup(m->valuestring);
        if (!k || !v) {
            free(k), free(v);
            return cg_set_error(CG_ERR_OOM, "%s: out of memory", st->path);
        }
        st->meta_keys[st->n_meta] = k;
        st->meta_values[st->n_meta] = v;
        st->n_meta++;
    }
    return CG_OK;
}

static int cmp_offset(const void *pa, const void *pb) {
    const cg_safetensors_entry *a = pa, *b = pb;
    if (a->offset != b->offset) return a->offset < b->offset ? -1 : 1;
    if (a->nbytes != b->nbytes) return a->nbytes < b->nbytes ? -1 : 1;
    return strcmp(a->name, b->name);
}

static int cmp_entry_name(const void *pa, const void *pb) {
    return strcmp((*(const cg_safetensors_entry *const *)pa)->name, (*(const cg_safetensors_entry *const *)pb)->name);
}

/* The tensors, sorted by offset, must tile [0, data_bytes) exactly. */
static cg_status check_layout(const cg_safetensors *st) {
    uint64_t expected = 0;
    const cg_safetensors_entry *prev = NULL;
    for (int i = 0; i < st->n; i++) {
        const cg_safetensors_entry *e = &st->entries[i];
        if (e->offset > expected) {
            if (!prev)
                return cg_set_error(CG_ERR_FORMAT, "%s: tensor '%s' starts at byte %llu but the data must start at 0 (gap)",
                                    st->path, e->name, (unsigned long long)e->offset);
            return cg_set_error(CG_ERR_FORMAT, "%s: tensor '%s' starts at byte %llu but the previous tensor '%s' ends at %llu (gap)",
                                st->path, e->name, (unsigned long long)e->offset, prev->name,
                                (unsigned long long)expected);
        }
        if (e->offset < expected)
            return cg_set_error(CG_ERR_FORMAT, "%s: tensors '%s' (bytes %llu..%llu) and '%s' (bytes %llu..%llu) overlap",
                                st->path, prev->name, (unsigned long long)prev->offset,
                                (unsigned long long)(prev->offset + prev->nbytes), e->name, (unsigned long long)e->offset,
                                (unsigned long long)(e->offset + e->nbytes));
        expected = e->offset + e->nbytes;
        prev = e;
    }
    if (expected > st->data_bytes)
        return cg_set_error(CG_ERR_FORMAT, "%s: tensor '%s' ends at data byte %llu, past the end of the file (%llu bytes of data after the %llu-byte header)",
                            st->path, prev->name, (unsigned long long)expected, (unsigned long long)st->data_bytes,
                            (unsigned long long)st->header_len);
    if (expected < st->data_bytes)
        return cg_set_error(CG_ERR_FORMAT, "%s: %llu trailing bytes after the last tensor (the tensors end at data byte %llu, the file holds %llu)",
                            st->path, (unsigned long long)(st->data_bytes - expected), (unsigned long long)expected,
                            (unsigned long long)st->data_bytes);
    return CG_OK;
}

static cg_status parse_header(cg_safetensors *st, const cJSON *root) {
    if (!cJSON_IsObject(root))
        return cg_set_error(CG_ERR_FORMAT, "%s: the header is a JSON %s, not an object", st->path,
                            cg_json_type_name(root));
    if (cg_json_check_unique_keys(root, st->path) != CG_OK) return cg_last_status();
    int n = 0;
    for (const cJSON *c = root->child; c; c = c->next)
        if (strcmp(c->string, "__metadata__") != 0) n++;
    st->entries = calloc((size_t)n + 1, sizeof *st->entries);
    st->by_name = calloc((size_t)n + 1, sizeof *st->by_name);
    if (!st->entries || !st->by_name) return cg_set_error(CG_ERR_OOM, "%s: out of memory for %d tensors", st->path, n);
    for (const cJSON *c = root->child; c; c = c->next) {
        if (strcmp(c->string, "__metadata__") == 0) {
            if (parse_metadata(st, c) != CG_OK) return cg_last_status();
            continue;
        }
        cg_safetensors_entry *e = &st->entries[st->n];
        e->name = strdup(c->string);
        if (!e->name) return cg_set_error(CG_ERR_OOM, "%s: out of memory", st->path);
        st->n++;
        if (parse_entry(st->path, c->string, c, e) != CG_OK) return cg_last_status();
    }
    qsort(st->entries, (size_t)st->n, sizeof *st->entries, cmp_offset);
    if (check_layout(st) != CG_OK) return cg_last_status();
    const unsigned char *data = (const unsigned char *)st->map + 8 + st->header_len;
    for (int i = 0; i < st->n; i++) {
        st->entries[i].data = data + st->entries[i].offset;
        st->by_name[i] = &st->entries[i];
    }
    qsort(st->by_name, (size_t)st->n, sizeof *st->by_name, cmp_entry_name);
    return CG_OK;
}

static cg_status open_impl(cg_safetensors *st) {
    int fd = open(st->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return cg_set_error(CG_ERR_IO, "%s: cannot open: %s", st->path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return cg_set_error(CG_ERR_IO, "%s: cannot stat: %s", st->path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return cg_set_error(CG_ERR_IO, "%s: not a regular file", st->path);
    }
    uint64_t size = (uint64_t)sb.st_size;
    if (size < 8) {
        close(fd);
        return cg_set_error(CG_ERR_FORMAT, "%s: the file is %llu bytes, too short for the 8-byte header length", st->path,
                            (unsigned long long)size);
    }
    void *map = mmap(NULL, (size_t)size, PROT_READ, MAP_PRIVATE, fd, 0);
    int map_errno = errno;
    close(fd);
    if (map == MAP_FAILED) return cg_set_error(CG_ERR_IO, "%s: mmap failed: %s", st->path, strerror(map_errno));
    st->map = map;
    st->map_len = (size_t)size;
    const unsigned char *b = map;
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | b[i];
    if (n > CG_SAFETENSORS_MAX_HEADER)
        return cg_set_error(CG_ERR_FORMAT, "%s: header length %llu exceeds the limit of %llu bytes", st->path,
                            (unsigned long long)n, CG_SAFETENSORS_MAX_HEADER);
    if (8 + n > size)
        return cg_set_error(CG_ERR_FORMAT, "%s: header length %llu runs past the end of the file (%llu bytes)", st->path,
                            (unsigned long long)n, (unsigned long long)size);
    st->header_len = n;
    st->data_bytes = size - 8 - n;
    size_t bad = utf8_invalid_at(b + 8, (size_t)n);
    if (bad < n)
        return cg_set_error(CG_ERR_FORMAT, "%s: the header is not valid UTF-8 (byte %zu of the header)", st->path, bad);
    cJSON *root = NULL;
    char what[4200];
    snprintf(what, sizeof what, "%s: header", st->path); /* offsets in JSON errors count from the header */
    if (cg_json_parse((const char *)b + 8, (size_t)n, what, &root) != CG_OK) return cg_last_status();
    cg_status s = parse_header(st, root);
    cJSON_Delete(root);
    return s;
}

cg_status cg_safetensors_open(const char *path, cg_safetensors **out) {
    if (!out) return cg_set_error(CG_ERR_INVALID_ARG, "safetensors_open: NULL output");
    *out = NULL;
    if (!path) return cg_set_error(CG_ERR_INVALID_ARG, "safetensors_open: NULL path");
    cg_safetensors *st = calloc(1, sizeof *st);
    if (!st || !(st->path = strdup(path))) {
        free(st);
        return cg_set_error(CG_ERR_OOM, "%s: out of memory", path);
    }
    cg_status s = open_impl(st);
    if (s != CG_OK) {
        cg_safetensors_close(st);
        return s;
    }
    *out = st;
    return CG_OK;
}

#else /* !CG_HAVE_CJSON */

cg_status cg_safetensors_open(const char *path, cg_safetensors **out) {
    if (out) *out = NULL;
    (void)utf8_invalid_at;
    return cg_set_error(CG_ERR_UNSUPPORTED, "%s: cannot read safetensors: cgrad was built without cJSON",
                        path ? path : "safetensors");
}

#endif

/* ------------------------------------------------------------------ loading into tensors */

cg_status cg_safetensors_load_into(const cg_safetensors *st, const char *name, cg_tensor *dst) {
    if (!st || !name || !dst) return cg_set_error(CG_ERR_INVALID_ARG, "safetensors_load: NULL argument");
    const cg_safetensors_entry *e = cg_safetensors_find(st, name);
    if (!e) return cg_set_error(CG_ERR_INVALID_ARG, "%s: no tensor named '%s'", st->path, name);
    if (!e->dtype_supported)
        return cg_set_error(CG_ERR_DTYPE, "%s: tensor '%s' has dtype %s, which cgrad cannot load (it takes F32, BF16, F16, I32, I64, U8)",
                            st->path, name, e->dtype_name);
    char a[160], b[160];
    bool same = dst->ndim == e->ndim;
    for (int i = 0; same && i < e->ndim; i++) same = dst->shape[i] == e->shape[i];
    if (!same)
        return cg_set_error(CG_ERR_SHAPE, "%s: tensor '%s' has shape %s but the destination is %s", st->path, name,
                            cg_format_shape(e->ndim, e->shape, a, sizeof a), cg_tensor_desc(dst, b, sizeof b));
    cg_arena *tmp = cg_step_arena(CG_CPU);
    if (!tmp) return cg_last_status();
    /* cgrad's copy kernels load elements through typed pointers: a tensor at an offset that is not a
     * multiple of its element size (a header not padded to 8) is staged in an aligned buffer first. */
    void *staged = NULL;
    const void *src_data = e->data;
    if (e->nbytes && (uintptr_t)e->data % cg_dtype_size(e->dtype) != 0) {
        staged = malloc(e->nbytes);
        if (!staged) return cg_set_error(CG_ERR_OOM, "%s: out of memory staging tensor '%s'", st->path, name);
        memcpy(staged, e->data, e->nbytes);
        src_data = staged;
    }
    /* The mapping is read-only; the wrapped tensor is only ever read (as the copy source). */
    cg_tensor *src = cg_tensor_wrap(tmp, e->dtype, CG_CPU, e->ndim, e->shape, (void *)(uintptr_t)src_data);
    cg_status s = src ? cg_copy(dst, src) : cg_last_status();
    free(staged);
    if (s != CG_OK) return cg_error_context("%s: loading tensor '%s': ", st->path, name);
    return CG_OK;
}

cg_tensor *cg_safetensors_load(const cg_safetensors *st, const char *name, cg_arena *a, cg_dtype want) {
    if (!st || !name || !a) {
        cg_set_error(CG_ERR_INVALID_ARG, "safetensors_load: NULL argument");
        return NULL;
    }
    const cg_safetensors_entry *e = cg_safetensors_find(st, name);
    if (!e) {
        cg_set_error(CG_ERR_INVALID_ARG, "%s: no tensor named '%s'", st->path, name);
        return NULL;
    }
    if (!e->dtype_supported) {
        cg_set_error(CG_ERR_DTYPE, "%s: tensor '%s' has dtype %s, which cgrad cannot load (it takes F32, BF16, F16, I32, I64, U8)",
                     st->path, name, e->dtype_name);
        return NULL;
    }
    cg_tensor *t = cg_tensor_empty(a, want, e->ndim, e->shape);
    if (!t) {
        cg_error_context("%s: loading tensor '%s': ", st->path, name);
        return NULL;
    }
    return cg_safetensors_load_into(st, name, t) == CG_OK ? t : NULL;
}

/* ------------------------------------------------------------------ writer */

typedef struct strbuf {
    char *p;
    size_t len, cap;
    bool oom;
} strbuf;

static void sb_put(strbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_printf(strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(strbuf *b, const char *fmt, ...) {
    char tmp[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0) sb_put(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

/* A JSON string literal: quotes, backslashes and control bytes escaped; UTF-8 passes through. */
static void sb_json_string(strbuf *b, const char *s) {
    sb_put(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') {
            char esc[2] = {'\\', (char)*p};
            sb_put(b, esc, 2);
        } else if (*p < 0x20) {
            sb_printf(b, "\\u%04x", *p);
        } else {
            sb_put(b, (const char *)p, 1);
        }
    }
    sb_put(b, "\"", 1);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

/* Fails if two of the n strings are equal (kind: "tensor name", "metadata key"). */
static cg_status check_distinct(const char *path, const char *kind, int n, const char *const *s) {
    if (n < 2) return CG_OK;
    const char **c = malloc((size_t)n * sizeof *c);
    if (!c) return cg_set_error(CG_ERR_OOM, "%s: out of memory", path);
    memcpy(c, s, (size_t)n * sizeof *c);
    qsort(c, (size_t)n, sizeof *c, cmp_str);
    cg_status st = CG_OK;
    for (int i = 1; i < n && st == CG_OK; i++)
        if (strcmp(c[i - 1], c[i]) == 0) st = cg_set_error(CG_ERR_INVALID_ARG, "%s: duplicate %s '%s'", path, kind, c[i]);
    free(c);
    return st;
}

static cg_status write_all(int fd, const void *p, size_t n, const char *tmp) {
    const char *c = p;
    while (n > 0) {
        ssize_t w = write(fd, c, n > ((size_t)1 << 30) ? ((size_t)1 << 30) : n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return cg_set_error(CG_ERR_IO, "%s: write failed: %s", tmp, w < 0 ? strerror(errno) : "no progress");
        c += w;
        n -= (size_t)w;
    }
    return CG_OK;
}

static cg_status check_write_args(const char *path, int n, const char *const *names, const cg_tensor *const *tensors,
                                  int n_meta, const char *const *meta_keys, const char *const *meta_values) {
    if (n < 0 || n_meta < 0) return cg_set_error(CG_ERR_INVALID_ARG, "%s: negative tensor or metadata count", path);
    if ((n > 0 && (!names || !tensors)) || (n_meta > 0 && (!meta_keys || !meta_values)))
        return cg_set_error(CG_ERR_INVALID_ARG, "%s: NULL name, tensor or metadata array", path);
    for (int i = 0; i < n; i++) {
        if (!names[i] || !tensors[i])
            return cg_set_error(CG_ERR_INVALID_ARG, "%s: tensor %d has a NULL name or tensor", path, i);
        if (strcmp(names[i], "__metadata__") == 0)
            return cg_set_error(CG_ERR_INVALID_ARG, "%s: '__metadata__' is reserved and cannot name a tensor", path);
        if (utf8_invalid_at((const unsigned char *)names[i], strlen(names[i])) != strlen(names[i]))
            return cg_set_error(CG_ERR_INVALID_ARG, "%s: tensor name %d is not valid UTF-8", path, i);
        if (!cg_dtype_valid(tensors[i]->dtype) || !cg_safetensors_dtype_name(tensors[i]->dtype))
            return cg_set_error(CG_ERR_DTYPE, "%s: tensor '%s' has an invalid dtype %d", path, names[i],
                                (int)tensors[i]->dtype);
    }
    for (int i = 0; i < n_meta; i++) {
        if (!meta_keys[i] || !meta_values[i])
            return cg_set_error(CG_ERR_INVALID_ARG, "%s: metadata entry %d has a NULL key or value", path, i);
        if (utf8_invalid_at((const unsigned char *)meta_keys[i], strlen(meta_keys[i])) != strlen(meta_keys[i]) ||
            utf8_invalid_at((const unsigned char *)meta_values[i], strlen(meta_values[i])) != strlen(meta_values[i]))
            return cg_set_error(CG_ERR_INVALID_ARG, "%s: metadata entry '%s' is not valid UTF-8", path, meta_keys[i]);
    }
    if (check_distinct(path, "tensor name", n, names) != CG_OK) return cg_last_status();
    return check_distinct(path, "metadata key", n_meta, meta_keys);
}

static cg_status build_header(const char *path, int n, const char *const *names, const cg_tensor *const *tensors,
                              int n_meta, const char *const *meta_keys, const char *const *meta_values, strbuf *h) {
    sb_put(h, "{", 1);
    if (n_meta > 0) {
        sb_put(h, "\"__metadata__\":{", 16);
        for (int i = 0; i < n_meta; i++) {
            if (i) sb_put(h, ",", 1);
            sb_json_string(h, meta_keys[i]);
            sb_put(h, ":", 1);
            sb_json_string(h, meta_values[i]);
        }
        sb_put(h, "}", 1);
    }
    uint64_t offset = 0;
    for (int i = 0; i < n; i++) {
        const cg_tensor *t = tensors[i];
        if (i || n_meta > 0) sb_put(h, ",", 1);
        sb_json_string(h, names[i]);
        sb_printf(h, ":{\"dtype\":\"%s\",\"shape\":[", cg_safetensors_dtype_name(t->dtype));
        for (int d = 0; d < t->ndim; d++) sb_printf(h, d ? ",%lld" : "%lld", (long long)t->shape[d]);
        uint64_t nb = (uint64_t)cg_nbytes(t);
        sb_printf(h, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)offset, (unsigned long long)(offset + nb));
        offset += nb;
    }
    sb_put(h, "}", 1);
    while (!h->oom && (8 + h->len) % 8 != 0) sb_put(h, " ", 1);
    if (h->oom) return cg_set_error(CG_ERR_OOM, "%s: out of memory building the header", path);
    if (h->len > CG_SAFETENSORS_MAX_HEADER)
        return cg_set_error(CG_ERR_INVALID_ARG, "%s: the header would be %zu bytes, over the %llu-byte limit", path,
                            h->len, CG_SAFETENSORS_MAX_HEADER);
    return CG_OK;
}

/* Writes the packed bytes of t: directly for packed CPU tensors, else through a host staging buffer
 * (*stage, grown as needed) filled by cg_copy, which gathers strides and copies from any device. */
static cg_status write_tensor(int fd, const cg_tensor *t, const char *name, const char *tmp, void **stage,
                              size_t *stage_cap) {
    size_t nb = cg_nbytes(t);
    if (nb == 0) return CG_OK;
    if (t->device.type == CG_DEVICE_CPU && cg_is_contiguous(t)) return write_all(fd, cg_data(t), nb, tmp);
    if (nb > *stage_cap) {
        void *p = realloc(*stage, nb);
        if (!p) return cg_set_error(CG_ERR_OOM, "%s: out of memory staging tensor '%s' (%zu bytes)", tmp, name, nb);
        *stage = p;
        *stage_cap = nb;
    }
    cg_arena *meta = cg_step_arena(CG_CPU);
    if (!meta) return cg_last_status();
    cg_tensor *host = cg_tensor_wrap(meta, t->dtype, CG_CPU, t->ndim, t->shape, *stage);
    if (!host || cg_copy(host, t) != CG_OK) return cg_error_context("%s: gathering tensor '%s': ", tmp, name);
    return write_all(fd, *stage, nb, tmp);
}

/* Makes the rename durable; a failure here is not reported (the data itself is already fsync'd). */
static void fsync_parent_dir(const char *path) {
    const char *slash = strrchr(path, '/');
    char dir[4096];
    if (!slash) snprintf(dir, sizeof dir, ".");
    else if (slash == path) snprintf(dir, sizeof dir, "/");
    else snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
}

cg_status cg_safetensors_write(const char *path, int n, const char *const *names, const cg_tensor *const *tensors,
                               int n_meta, const char *const *meta_keys, const char *const *meta_values) {
    if (!path) return cg_set_error(CG_ERR_INVALID_ARG, "safetensors_write: NULL path");
    if (check_write_args(path, n, names, tensors, n_meta, meta_keys, meta_values) != CG_OK) return cg_last_status();
    strbuf h = {0};
    if (build_header(path, n, names, tensors, n_meta, meta_keys, meta_values, &h) != CG_OK) {
        free(h.p);
        return cg_last_status();
    }
    size_t tlen = strlen(path) + 32;
    char *tmp = malloc(tlen);
    if (!tmp) {
        free(h.p);
        return cg_set_error(CG_ERR_OOM, "%s: out of memory", path);
    }
    snprintf(tmp, tlen, "%s.tmp.%ld", path, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        cg_status s = cg_set_error(CG_ERR_IO, "%s: cannot create the temporary file %s: %s", path, tmp, strerror(errno));
        free(tmp);
        free(h.p);
        return s;
    }
    unsigned char len_le[8];
    for (int i = 0; i < 8; i++) len_le[i] = (unsigned char)((uint64_t)h.len >> (8 * i));
    cg_status s = write_all(fd, len_le, 8, tmp);
    if (s == CG_OK) s = write_all(fd, h.p, h.len, tmp);
    void *stage = NULL;
    size_t stage_cap = 0;
    for (int i = 0; i < n && s == CG_OK; i++) s = write_tensor(fd, tensors[i], names[i], tmp, &stage, &stage_cap);
    free(stage);
    free(h.p);
    if (s == CG_OK && fsync(fd) != 0) s = cg_set_error(CG_ERR_IO, "%s: fsync failed: %s", tmp, strerror(errno));
    if (close(fd) != 0 && s == CG_OK) s = cg_set_error(CG_ERR_IO, "%s: close failed: %s", tmp, strerror(errno));
    if (s == CG_OK && rename(tmp, path) != 0)
        s = cg_set_error(CG_ERR_IO, "%s: cannot rename %s over it: %s", path, tmp, strerror(errno));
    if (s != CG_OK) unlink(tmp);
    else fsync_parent_dir(path);
    free(tmp);
    return s;
}
