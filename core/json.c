#include "core/json.h"

#ifdef CG_HAVE_CJSON

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static bool is_json_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

/* A printable excerpt of text[pos..] for messages: non-printable bytes become '?'. */
static const char *excerpt(const char *text, size_t len, size_t pos, char *buf, size_t n) {
    if (pos >= len) {
        snprintf(buf, n, "end of input");
        return buf;
    }
    size_t k = 0;
    buf[k++] = '\'';
    for (size_t i = pos; i < len && i < pos + 24 && k + 5 < n; i++) {
        unsigned char c = (unsigned char)text[i];
        buf[k++] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
    }
    if (pos + 24 < len && k + 5 < n) buf[k++] = '.', buf[k++] = '.', buf[k++] = '.';
    buf[k++] = '\'';
    buf[k] = '\0';
    return buf;
}

static void line_col(const char *text, size_t pos, size_t *line, size_t *col) {
    *line = 1;
    *col = 1;
    for (size_t i = 0; i < pos; i++) {
        if (text[i] == '\n') {
            (*line)++;
            *col = 1;
        } else {
            (*col)++;
        }
    }
}

cg_status cg_json_parse(const char *text, size_t len, const char *what, cJSON **out) {
    if (!what) what = "json";
    if (!out) return cg_set_error(CG_ERR_INVALID_ARG, "%s: cg_json_parse: NULL output", what);
    *out = NULL;
    if (!text && len > 0) return cg_set_error(CG_ERR_INVALID_ARG, "%s: cg_json_parse: NULL text", what);
    /* Parse a NUL-terminated copy: the caller's bytes may end at a page boundary (an mmap'd header), and
     * this keeps any read past len by cJSON inside our own buffer. */
    char *copy = malloc(len + 1);
    if (!copy) return cg_set_error(CG_ERR_OOM, "%s: out of memory copying %zu bytes of JSON", what, len);
    if (len) memcpy(copy, text, len);
    copy[len] = '\0';
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(copy, len, &end, 0);
    char ex[64];
    size_t line, col;
    if (!root) {
        size_t pos = (end && end >= copy && end <= copy + len) ? (size_t)(end - copy) : 0;
        line_col(copy, pos, &line, &col);
        cg_status st = cg_set_error(CG_ERR_FORMAT, "%s: invalid JSON at byte %zu (line %zu, column %zu), near %s", what,
                                    pos, line, col, excerpt(copy, len, pos, ex, sizeof ex));
        free(copy);
        return st;
    }
    size_t pos = (size_t)(end - copy);
    while (pos < len && is_json_space(copy[pos])) pos++;
    if (pos < len) {
        line_col(copy, pos, &line, &col);
        cg_status st = cg_set_error(CG_ERR_FORMAT,
                                    "%s: unexpected data after the JSON value at byte %zu (line %zu, column %zu): %s",
                                    what, pos, line, col, excerpt(copy, len, pos, ex, sizeof ex));
        cJSON_Delete(root);
        free(copy);
        return st;
    }
    free(copy);
    *out = root;
    return CG_OK;
}

cg_status cg_json_read_file_max(const char *path, size_t max_bytes, cJSON **out) {
    if (!out) return cg_set_error(CG_ERR_INVALID_ARG, "cg_json_read_file: NULL output");
    *out = NULL;
    if (!path) return cg_set_error(CG_ERR_INVALID_ARG, "cg_json_read_file: NULL path");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return cg_set_error(CG_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return cg_set_error(CG_ERR_IO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return cg_set_error(CG_ERR_IO, "%s: not a regular file", path);
    }
    if ((uint64_t)sb.st_size > (uint64_t)max_bytes) {
        close(fd);
        return cg_set_error(CG_ERR_FORMAT, "%s: %lld bytes, more than the %zu-byte limit for a JSON file", path,
                            (long long)sb.st_size, max_bytes);
    }
    size_t size = (size_t)sb.st_size;
    char *buf = malloc(size ? size : 1);
    if (!buf) {
        close(fd);
        return cg_set_error(CG_ERR_OOM, "%s: out of memory reading %zu bytes", path, size);
    }
    size_t got = 0;
    while (got < size) {
        ssize_t r = read(fd, buf + got, size - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            int e = r < 0 ? errno : 0;
            free(buf);
            close(fd);
            return cg_set_error(CG_ERR_IO, "%s: read failed after %zu of %zu bytes: %s", path, got, size,
                                e ? strerror(e) : "file shrank while reading");
        }
        got += (size_t)r;
    }
    close(fd);
    cg_status st = cg_json_parse(buf, size, path, out);
    free(buf);
    return st;
}

cg_status cg_json_read_file(const char *path, cJSON **out) {
    return cg_json_read_file_max(path, CG_JSON_MAX_FILE_BYTES, out);
}

void cg_json_free(cJSON *item) { cJSON_Delete(item); }

const char *cg_json_type_name(const cJSON *item) {
    if (!item) return "nothing";
    if (cJSON_IsNull(item)) return "null";
    if (cJSON_IsBool(item)) return "bool";
    if (cJSON_IsNumber(item)) return "number";
    if (cJSON_IsString(item)) return "string";
    if (cJSON_IsArray(item)) return "array";
    if (cJSON_IsObject(item)) return "object";
    if (cJSON_IsRaw(item)) return "raw";
    return "invalid";
}

/* " (got string \"abc\")" style description of a value, for wrong-type messages. */
static const char *describe(const cJSON *item, char *buf, size_t n) {
    if (cJSON_IsNumber(item))
        snprintf(buf, n, "number %.17g", item->valuedouble);
    else if (cJSON_IsString(item))
        snprintf(buf, n, "string \"%.40s%s\"", item->valuestring, strlen(item->valuestring) > 40 ? "..." : "");
    else if (cJSON_IsBool(item))
        snprintf(buf, n, "%s", cJSON_IsTrue(item) ? "true" : "false");
    else
        snprintf(buf, n, "%s", cg_json_type_name(item));
    return buf;
}

cg_status cg_json_as_int(const cJSON *item, const char *what, const char *name, int64_t *out) {
    char d[96];
    if (!what) what = "json";
    if (!name) name = "value";
    if (!cJSON_IsNumber(item))
        return cg_set_error(CG_ERR_FORMAT, "%s: %s must be an integer, got %s", what, name, describe(item, d, sizeof d));
    double v = item->valuedouble;
    if (!isfinite(v) || v != floor(v))
        return cg_set_error(CG_ERR_FORMAT, "%s: %s must be an integer, got %s", what, name, describe(item, d, sizeof d));
    if (v > (double)CG_JSON_MAX_EXACT_INT || v < -(double)CG_JSON_MAX_EXACT_INT)
        return cg_set_error(CG_ERR_FORMAT, "%s: %s = %.17g is outside the exactly representable range +-2^53", what,
                            name, v);
    *out = (int64_t)v;
    return CG_OK;
}

cg_status cg_json_as_double(const cJSON *item, const char *what, const char *name, double *out) {
    char d[96];
    if (!what) what = "json";
    if (!name) name = "value";
    if (!cJSON_IsNumber(item))
        return cg_set_error(CG_ERR_FORMAT, "%s: %s must be a number, got %s", what, name, describe(item, d, sizeof d));
    if (!isfinite(item->valuedouble))
        return cg_set_error(CG_ERR_FORMAT, "%s: %s is out of the range of a double", what, name);
    *out = item->valuedouble;
    return CG_OK;
}

/* obj[key], or NULL with *st set when obj is not an object; a missing key is *st = CG_OK, NULL. */
static const cJSON *member(const cJSON *obj, const char *key, const char *what, cg_status *st) {
    *st = CG_OK;
    if (!key) {
        *st = cg_set_error(CG_ERR_INVALID_ARG, "%s: NULL key", what);
        return NULL;
    }
    if (!cJSON_IsObject(obj)) {
        *st = cg_set_error(CG_ERR_FORMAT, "%s: expected an object holding '%s', got %s", what, key,
                           cg_json_type_name(obj));
        return NULL;
    }
    return cJSON_GetObjectItemCaseSensitive(obj, key);
}

/* The shared body of the getters: look up key, report a missing key (required) or return the default
 * (optional), else convert with `conv`. */
#define CG_JSON_GETTER(required_missing, conv_call)                                                      \
    do {                                                                                                 \
        if (!what) what = "json";                                                                        \
        if (!out) return cg_set_error(CG_ERR_INVALID_ARG, "%s: NULL output for '%s'", what, key ? key : ""); \
        cg_status st_;                                                                                   \
        const cJSON *it = member(obj, key, what, &st_);                                                 \
        if (st_ != CG_OK) return st_;                                                                    \
        if (!it || (!(required_missing) && cJSON_IsNull(it))) {                                          \
            if (required_missing) return cg_set_error(CG_ERR_FORMAT, "%s: missing key '%s'", what, key);  \
            *out = def;                                                                                  \
            return CG_OK;                                                                                \
        }                                                                                                \
        char name_[160];                                                                                 \
        snprintf(name_, sizeof name_, "'%s'", key);                                                      \
        conv_call;                                                                                       \
    } while (0)

static cg_status as_string(const cJSON *it, const char *what, const char *name, const char **out) {
    char d[96];
    if (!cJSON_IsString(it))
        return cg_set_error(CG_ERR_FORMAT, "%s: %s must be a string, got %s", what, name, describe(it, d, sizeof d));
    *out = it->valuestring;
    return CG_OK;
}

static cg_status as_bool(const cJSON *it, const char *what, const char *name, bool *out) {
    char d[96];
    if (!cJSON_IsBool(it))
        return cg_set_error(CG_ERR_FORMAT, "%s: %s must be true or false, got %s", what, name, describe(it, d, sizeof d));
    *out = cJSON_IsTrue(it);
    return CG_OK;
}

cg_status cg_json_get_int(const cJSON *obj, const char *key, const char *what, int64_t *out) {
    int64_t def = 0;
    CG_JSON_GETTER(true, return cg_json_as_int(it, what, name_, out));
}
cg_status cg_json_get_double(const cJSON *obj, const char *key, const char *what, double *out) {
    double def = 0;
    CG_JSON_GETTER(true, return cg_json_as_double(it, what, name_, out));
}
cg_status cg_json_get_string(const cJSON *obj, const char *key, const char *what, const char **out) {
    const char *def = NULL;
    CG_JSON_GETTER(true, return as_string(it, what, name_, out));
}
cg_status cg_json_get_bool(const cJSON *obj, const char *key, const char *what, bool *out) {
    bool def = false;
    CG_JSON_GETTER(true, return as_bool(it, what, name_, out));
}
cg_status cg_json_opt_int(const cJSON *obj, const char *key, const char *what, int64_t def, int64_t *out) {
    CG_JSON_GETTER(false, return cg_json_as_int(it, what, name_, out));
}
cg_status cg_json_opt_double(const cJSON *obj, const char *key, const char *what, double def, double *out) {
    CG_JSON_GETTER(false, return cg_json_as_double(it, what, name_, out));
}
cg_status cg_json_opt_string(const cJSON *obj, const char *key, const char *what, const char *def,
                             const char **out) {
    CG_JSON_GETTER(false, return as_string(it, what, name_, out));
}
cg_status cg_json_opt_bool(const cJSON *obj, const char *key, const char *what, bool def, bool *out) {
    CG_JSON_GETTER(false, return as_bool(it, what, name_, out));
}

static int cmp_key(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Recursion depth is bounded by cJSON's nesting limit (CJSON_NESTING_LIMIT, 1000). */
static cg_status check_unique(const cJSON *item, const char *what) {
    if (cJSON_IsObject(item)) {
        size_t n = 0;
        for (const cJSON *c = item->child; c; c = c->next) n++;
        if (n > 1) {
            const char **keys = malloc(n * sizeof *keys);
            if (!keys) return cg_set_error(CG_ERR_OOM, "%s: out of memory checking %zu keys", what, n);
            size_t k = 0;
            for (const cJSON *c = item->child; c; c = c->next) keys[k++] = c->string ? c->string : "";
            qsort(keys, n, sizeof *keys, cmp_key);
            for (size_t i = 1; i < n; i++) {
                if (strcmp(keys[i - 1], keys[i]) == 0) {
                    cg_status st;
                    if (item->string)
                        st = cg_set_error(CG_ERR_FORMAT, "%s: duplicate key '%s' in the object '%s'", what, keys[i],
                                          item->string);
                    else
                        st = cg_set_error(CG_ERR_FORMAT, "%s: duplicate key '%s'", what, keys[i]);
                    free(keys);
                    return st;
                }
            }
            free(keys);
        }
    }
    if (cJSON_IsObject(item) || cJSON_IsArray(item))
        for (const cJSON *c = item->child; c; c = c->next) {
            cg_status st = check_unique(c, what);
            if (st != CG_OK) return st;
        }
    return CG_OK;
}

cg_status cg_json_check_unique_keys(const cJSON *item, const char *what) {
    if (!item) return cg_set_error(CG_ERR_INVALID_ARG, "cg_json_check_unique_keys: NULL item");
    return check_unique(item, what ? what : "json");
}

#else /* !CG_HAVE_CJSON */

#define CG_NO_CJSON(what) \
    cg_set_error(CG_ERR_UNSUPPORTED, "%s: JSON support is not available: cgrad was built without cJSON", (what))

cg_status cg_json_parse(const char *text, size_t len, const char *what, cJSON **out) {
    (void)text, (void)len;
    if (out) *out = NULL;
    return CG_NO_CJSON(what ? what : "json");
}
cg_status cg_json_read_file(const char *path, cJSON **out) {
    if (out) *out = NULL;
    return CG_NO_CJSON(path ? path : "json");
}
cg_status cg_json_read_file_max(const char *path, size_t max_bytes, cJSON **out) {
    (void)max_bytes;
    if (out) *out = NULL;
    return CG_NO_CJSON(path ? path : "json");
}
void cg_json_free(cJSON *item) { (void)item; }
const char *cg_json_type_name(const cJSON *item) {
    (void)item;
    return "unknown";
}
cg_status cg_json_as_int(const cJSON *item, const char *what, const char *name, int64_t *out) {
    (void)item, (void)name, (void)out;
    return CG_NO_CJSON(what ? what : "json");
}
cg_status cg_json_as_double(const cJSON *item, const char *what, const char *name, double *out) {
    (void)item, (void)name, (void)out;
    return CG_NO_CJSON(what ? what : "json");
}
#define CG_JSON_STUB(fn, T)                                                         \
    cg_status fn(const cJSON *obj, const char *key, const char *what, T *out) {     \
        (void)obj, (void)key, (void)out;                                            \
        return CG_NO_CJSON(what ? what : "json");                                   \
    }
#define CG_JSON_OPT_STUB(fn, T)                                                          \
    cg_status fn(const cJSON *obj, const char *key, const char *what, T def, T *out) {   \
        (void)obj, (void)key, (void)def, (void)out;                                      \
        return CG_NO_CJSON(what ? what : "json");                                        \
    }
CG_JSON_STUB(cg_json_get_int, int64_t)
CG_JSON_STUB(cg_json_get_double, double)
CG_JSON_STUB(cg_json_get_string, const char *)
CG_JSON_STUB(cg_json_get_bool, bool)
CG_JSON_OPT_STUB(cg_json_opt_int, int64_t)
CG_JSON_OPT_STUB(cg_json_opt_double, double)
CG_JSON_OPT_STUB(cg_json_opt_string, const char *)
CG_JSON_OPT_STUB(cg_json_opt_bool, bool)
cg_status cg_json_check_unique_keys(const cJSON *item, const char *what) {
    (void)item;
    return CG_NO_CJSON(what ? what : "json");
}

#endif
