/* A thin layer over cJSON: parsing with error messages that name the input and the byte offset, whole-file
 * reading, typed getters that reject wrong types with a message naming the key, and a duplicate-key check
 * (cJSON keeps duplicate keys; formats such as safetensors forbid them).
 *
 * Internal module (not in cgrad.h): its prototypes use cJSON types. When cgrad is built without cJSON
 * (CG_HAVE_CJSON undefined) this header still compiles, with cJSON an incomplete type, and every function
 * returns CG_ERR_UNSUPPORTED. Free parsed documents with cJSON_Delete (cg_json_free works in both builds). */
#ifndef CG_JSON_H
#define CG_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/error.h"

#ifdef CG_HAVE_CJSON
#include <cjson/cJSON.h>
#else
struct cJSON;
typedef struct cJSON cJSON;
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Files larger than this are refused by cg_json_read_file (tokenizer.json files are a few MB). */
#define CG_JSON_MAX_FILE_BYTES ((size_t)256 << 20)

/* Integers read by cg_json_get_int must lie in [-2^53, 2^53]: cJSON stores numbers as doubles, so larger
 * magnitudes may already have been rounded and cannot be trusted to be exact. */
#define CG_JSON_MAX_EXACT_INT ((int64_t)1 << 53)

/* Parses len bytes of text (which need not be NUL-terminated) as one JSON value; only JSON whitespace may
 * follow it. `what` names the input in messages (a file name, "config.json", ...). On failure *out is
 * NULL and the message gives the byte offset and an excerpt of the text there. */
cg_status cg_json_parse(const char *text, size_t len, const char *what, cJSON **out);
/* Reads and parses a whole file (at most CG_JSON_MAX_FILE_BYTES); messages name the path. */
cg_status cg_json_read_file(const char *path, cJSON **out);
/* The same with an explicit size cap in bytes. */
cg_status cg_json_read_file_max(const char *path, size_t max_bytes, cJSON **out);
/* cJSON_Delete, callable in builds without cJSON (where it does nothing). */
void cg_json_free(cJSON *item);

/* "null", "bool", "number", "string", "array", "object" (for messages). */
const char *cg_json_type_name(const cJSON *item);

/* Typed conversions of one item; `what` and `name` name it in messages ("config.json", "'n_layer'").
 * Integers must be finite, integral and within +-CG_JSON_MAX_EXACT_INT; 1.5, "3", true are rejected. */
cg_status cg_json_as_int(const cJSON *item, const char *what, const char *name, int64_t *out);
cg_status cg_json_as_double(const cJSON *item, const char *what, const char *name, double *out);

/* Typed getters of obj[key] (obj must be an object; keys match case-sensitively). A missing key or a
 * value of the wrong type is CG_ERR_FORMAT with a message naming `what` and the key. The string returned
 * by cg_json_get_string points into the document. */
cg_status cg_json_get_int(const cJSON *obj, const char *key, const char *what, int64_t *out);
cg_status cg_json_get_double(const cJSON *obj, const char *key, const char *what, double *out);
cg_status cg_json_get_string(const cJSON *obj, const char *key, const char *what, const char **out);
cg_status cg_json_get_bool(const cJSON *obj, const char *key, const char *what, bool *out);

/* Optional variants: a missing key or a JSON null gives the default; a value of the wrong type is still
 * an error. */
cg_status cg_json_opt_int(const cJSON *obj, const char *key, const char *what, int64_t def, int64_t *out);
cg_status cg_json_opt_double(const cJSON *obj, const char *key, const char *what, double def, double *out);
cg_status cg_json_opt_string(const cJSON *obj, const char *key, const char *what, const char *def,
                             const char **out);
cg_status cg_json_opt_bool(const cJSON *obj, const char *key, const char *what, bool def, bool *out);

/* Fails (CG_ERR_FORMAT) if any object in the tree under item has two members with the same key, naming
 * the key and the object that holds it. O(n log n) per object. */
cg_status cg_json_check_unique_keys(const cJSON *item, const char *what);

#ifdef __cplusplus
}
#endif
#endif
