/* Hugging Face model directories: the weights (model.safetensors, or shards listed by
 * model.safetensors.index.json) loaded into a model and saved from one, translating names and layouts
 * (see models/checkpoint.h). */
#include "models/checkpoint.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/context.h"
#include "core/json.h"
#include "core/safetensors.h"

#define PATH_BYTES 4096

/* ------------------------------------------------------------------ names and layouts */

/* "h.<digits>.<rest>": true with *rest pointing after the layer number's dot. */
static bool gpt2_layer_name(const char *name, const char **rest) {
    if (strncmp(name, "h.", 2) != 0) return false;
    const char *p = name + 2;
    if (*p < '0' || *p > '9') return false;
    while (*p >= '0' && *p <= '9') p++;
    if (*p != '.') return false;
    *rest = p + 1;
    return true;
}

/* GPT-2's Conv1D weights, stored [in, out] in Hugging Face files. */
static bool gpt2_conv1d(const char *name) {
    const char *rest;
    return gpt2_layer_name(name, &rest) &&
           (strcmp(rest, "attn.c_attn.weight") == 0 || strcmp(rest, "attn.c_proj.weight") == 0 ||
            strcmp(rest, "mlp.c_fc.weight") == 0 || strcmp(rest, "mlp.c_proj.weight") == 0);
}

#ifdef CG_HAVE_CJSON /* only the directory loader skips buffers */
/* GPT-2's causal-mask buffers (not parameters). */
static bool gpt2_mask_buffer(const char *name) {
    const char *rest;
    return gpt2_layer_name(name, &rest) && (strcmp(rest, "attn.bias") == 0 || strcmp(rest, "attn.masked_bias") == 0);
}

/* Rotary-embedding frequency buffers that older Llama checkpoints carry ("...rotary_emb.inv_freq"):
 * recomputed from the config, never loaded. */
static bool llama_rotary_buffer(const char *name) {
    size_t n = strlen(name), k = strlen(".rotary_emb.inv_freq");
    return n >= k && strcmp(name + n - k, ".rotary_emb.inv_freq") == 0;
}
#endif

/* How a model parameter is laid out in a file. */
typedef struct file_layout {
    bool transposed; /* Conv1D: the file holds the [out, in] parameter as [in, out] */
    bool vocab_rows; /* the embedding / head: the file holds only the first vocab_size rows */
    int ndim;
    int64_t shape[CG_MAX_DIMS];
} file_layout;

static file_layout layout_of(const cg_model *m, const cg_tensor *p) {
    file_layout f = {0};
    f.ndim = p->ndim;
    memcpy(f.shape, p->shape, sizeof f.shape);
    f.transposed = m->cfg.arch == CG_ARCH_GPT2 && gpt2_conv1d(p->name);
    f.vocab_rows = p == m->wte || p == m->lm_head;
    if (f.transposed) {
        f.shape[0] = p->shape[1];
        f.shape[1] = p->shape[0];
    }
    if (f.vocab_rows) f.shape[0] = m->cfg.vocab_size;
    return f;
}

/* The parameter's region that the file's tensor fills: the first vocab_size rows or all of it. */
static cg_tensor *filled_region(const cg_model *m, cg_tensor *p, const file_layout *f) {
    return f->vocab_rows && p->shape[0] != m->cfg.vocab_size ? cg_view_slice(p, 0, 0, m->cfg.vocab_size, 1) : p;
}

/* ------------------------------------------------------------------ load */

#ifdef CG_HAVE_CJSON

typedef struct file_tensor {
    const char *name;       /* as in the file */
    int file;               /* index into the opened files */
} file_tensor;

typedef struct hf_files {
    int n;
    cg_safetensors **st;
    char **names;           /* file names relative to the directory */
    file_tensor *tensors;
    int n_tensors, cap_tensors;
} hf_files;

static void hf_files_close(hf_files *h) {
    for (int i = 0; i < h->n; i++) {
        cg_safetensors_close(h->st[i]);
        free(h->names[i]);
    }
    free(h->st);
    free(h->names);
    free(h->tensors);
    memset(h, 0, sizeof *h);
}

/* Opens dir/name (once) and returns its index, or -1 with the error set. */
static int hf_open(hf_files *h, const char *dir, const char *name) {
    for (int i = 0; i < h->n; i++)
        if (strcmp(h->names[i], name) == 0) return i;
    cg_safetensors **st = realloc(h->st, sizeof *st * (size_t)(h->n + 1));
    if (st) h->st = st;
    char **names = realloc(h->names, sizeof *names * (size_t)(h->n + 1));
    if (names) h->names = names;
    char *copy = strdup(name);
    if (!st || !names || !copy) {
        free(copy);
        cg_set_error(CG_ERR_OOM, "%s: out of memory opening %s", dir, name);
        return -1;
    }
    char path[PATH_BYTES];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (cg_safetensors_open(path, &h->st[h->n]) != CG_OK) {
        free(copy);
        return -1;
    }
    h->names[h->n] = copy;
    return h->n++;
}

static cg_status hf_add_tensor(hf_files *h, const char *name, int file) {
    if (h->n_tensors == h->cap_tensors) {
        int cap = h->cap_tensors ? 2 * h->cap_tensors : 256;
        file_tensor *t = realloc(h->tensors, sizeof *t * (size_t)cap);
        if (!t) return cg_set_error(CG_ERR_OOM, "model load: out of memory listing tensors");
        h->tensors = t;
        h->cap_tensors = cap;
    }
    h->tensors[h->n_tensors++] = (file_tensor){name, file};
    return CG_OK;
}

/* The tensors of a sharded checkpoint, from the index's weight_map, checked against the shards. */
static cg_status open_index(hf_files *h, const char *dir, const char *index_path) {
    cJSON *root = NULL;
    cg_status s = cg_json_read_file(index_path, &root);
    if (s != CG_OK) return s;
    const cJSON *wm = cJSON_IsObject(root) ? cJSON_GetObjectItemCaseSensitive(root, "weight_map") : NULL;
    if (s == CG_OK) s = cg_json_check_unique_keys(root, index_path);
    if (s == CG_OK && !cJSON_IsObject(wm))
        s = cg_set_error(CG_ERR_FORMAT, "%s: no \"weight_map\" object", index_path);
    const cJSON *it = NULL;
    int listed = 0;
    if (s == CG_OK) {
        cJSON_ArrayForEach(it, wm) {
            if (!cJSON_IsString(it)) {
                s = cg_set_error(CG_ERR_FORMAT, "%s: weight_map['%s'] is a %s, expected a file name", index_path,
                                 it->string, cg_json_type_name(it));
                break;
            }
            const char *shard = it->valuestring;
            if (shard[0] == '\0' || strchr(shard, '/') || strcmp(shard, "..") == 0) {
                s = cg_set_error(CG_ERR_FORMAT, "%s: weight_map['%s'] names '%s', which is not a file in the "
                                 "directory", index_path, it->string, shard);
                break;
            }
            int f = hf_open(h, dir, shard);
            if (f < 0) {
                s = cg_error_context("%s names shard '%s' (for tensor '%s'), which cannot be read: ", index_path,
                                     shard, it->string);
                break;
            }
            const cg_safetensors_entry *e = cg_safetensors_find(h->st[f], it->string);
            if (!e) {
                s = cg_set_error(CG_ERR_FORMAT, "%s maps tensor '%s' to %s, which holds no such tensor", index_path,
                                 it->string, shard);
                break;
            }
            if ((s = hf_add_tensor(h, e->name, f)) != CG_OK) break;
            listed++;
        }
    }
    /* every tensor of every shard must be the one the index names */
    for (int f = 0; s == CG_OK && f < h->n; f++) {
        for (int i = 0; s == CG_OK && i < cg_safetensors_count(h->st[f]); i++) {
            const char *name = cg_safetensors_entry_at(h->st[f], i)->name;
            const cJSON *where = cJSON_GetObjectItemCaseSensitive(wm, name);
            if (!where || strcmp(where->valuestring, h->names[f]) != 0)
                s = cg_set_error(CG_ERR_FORMAT, "%s/%s holds tensor '%s', which %s does not map to it", dir,
                                 h->names[f], name, index_path);
        }
    }
    if (s == CG_OK && listed == 0) s = cg_set_error(CG_ERR_FORMAT, "%s: the weight_map is empty", index_path);
    cJSON_Delete(root);
    return s;
}

static cg_status open_weights(hf_files *h, const char *dir) {
    char path[PATH_BYTES];
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    if (access(path, F_OK) == 0) return open_index(h, dir, path);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    if (access(path, F_OK) != 0)
        return cg_set_error(CG_ERR_IO, "%s: no model.safetensors or model.safetensors.index.json in the directory", dir);
    int f = hf_open(h, dir, "model.safetensors");
    if (f < 0) return cg_last_status();
    for (int i = 0; i < cg_safetensors_count(h->st[0]); i++) {
        cg_status s = hf_add_tensor(h, cg_safetensors_entry_at(h->st[0], i)->name, 0);
        if (s != CG_OK) return s;
    }
    return CG_OK;
}

/* Copies one file tensor into parameter p (laid out as f describes): straight into a view of p on the
 * CPU; through a packed host tensor for other devices (their copies take packed destinations). */
static cg_status load_param(const cg_model *m, const cg_safetensors *st, const char *name, cg_tensor *p,
                            const file_layout *f) {
    cg_tensor *region = filled_region(m, p, f);
    if (!region) return cg_last_status();
    if (p->device.type == CG_DEVICE_CPU) {
        cg_tensor *dst = f->transposed ? cg_view_transpose(region, 0, 1) : region;
        return dst ? cg_safetensors_load_into(st, name, dst) : cg_last_status();
    }
    cg_tensor *host = cg_tensor_empty(cg_step_arena(CG_CPU), p->dtype, f->ndim, f->shape);
    if (!host) return cg_last_status();
    cg_status s = cg_safetensors_load_into(st, name, host);
    if (s != CG_OK) return s;
    const cg_tensor *src = host;
    if (f->transposed) {
        cg_tensor *t = cg_view_transpose(host, 0, 1);
        if (!t || !(src = cg_contiguous(t))) return cg_last_status();
    }
    return cg_copy(region, src);
}

/* Loads file tensor t (or skips it) into the model, marking the parameter it fills. */
static cg_status load_tensor(cg_model *m, const hf_files *h, const file_tensor *t, bool *loaded) {
    const cg_safetensors *st = h->st[t->file];
    const char *path = cg_safetensors_path(st);
    const cg_safetensors_entry *e = cg_safetensors_find(st, t->name);
    const char *name = t->name;
    bool gpt2 = m->cfg.arch == CG_ARCH_GPT2;
    char a[160], b[160];
    if (gpt2 && strncmp(name, "transformer.", 12) == 0) name += 12;
    if (gpt2 && gpt2_mask_buffer(name)) return CG_OK;
    if (!gpt2 && llama_rotary_buffer(name)) return CG_OK;
    /* a Llama state dict saved from the base model (LlamaModel) lacks the "model." prefix */
    char prefixed[256];
    if (!gpt2 && strncmp(name, "model.", 6) != 0 && strcmp(name, "lm_head.weight") != 0) {
        snprintf(prefixed, sizeof prefixed, "model.%s", name);
        name = prefixed;
    }
    if (m->cfg.tie_embeddings && strcmp(name, "lm_head.weight") == 0) {
        /* a tied head saved alongside the embedding: the same values, nothing to load */
        int64_t want[2] = {m->cfg.vocab_size, m->cfg.d_model};
        if (e->ndim != 2 || e->shape[0] != want[0] || e->shape[1] != want[1])
            return cg_set_error(CG_ERR_FORMAT, "%s: tensor '%s' has shape %s, expected %s (the tied head)", path,
                                t->name, cg_format_shape(e->ndim, e->shape, a, sizeof a), cg_format_shape(2, want, b, sizeof b));
        return CG_OK;
    }
    int k = -1;
    for (int i = 0; i < m->n_params && k < 0; i++)
        if (!m->params[i].adapter && strcmp(m->params[i].name, name) == 0) k = i;
    if (k < 0)
        return cg_set_error(CG_ERR_FORMAT, "%s: unexpected tensor '%s' (the %s model has no parameter '%s')", path,
                            t->name, gpt2 ? "GPT-2" : "Llama/Qwen2", name);
    if (loaded[k])
        return cg_set_error(CG_ERR_FORMAT, "%s: tensor '%s' fills parameter '%s' a second time", path, t->name, name);
    cg_tensor *p = m->params[k].tensor;
    file_layout f = layout_of(m, p);
    bool same = e->ndim == f.ndim;
    for (int d = 0; same && d < f.ndim; d++) same = e->shape[d] == f.shape[d];
    if (!same)
        return cg_set_error(CG_ERR_FORMAT, "%s: tensor '%s' has shape %s, expected %s%s", path, t->name,
                            cg_format_shape(e->ndim, e->shape, a, sizeof a), cg_format_shape(f.ndim, f.shape, b, sizeof b),
                            f.transposed ? " (a GPT-2 Conv1D weight, stored [in, out])" : "");
    if (e->dtype_supported && !cg_dtype_is_float(e->dtype))
        return cg_set_error(CG_ERR_FORMAT, "%s: tensor '%s' has dtype %s; weights must be F32, BF16 or F16", path,
                            t->name, e->dtype_name);
    cg_status s = load_param(m, st, t->name, p, &f);
    if (s != CG_OK) return s;
    loaded[k] = true;
    return CG_OK;
}

cg_status cg_model_load_hf_weights(cg_model *m, const char *dir) {
    if (!m || !dir) return cg_set_error(CG_ERR_INVALID_ARG, "model_load_hf_weights: NULL argument");
    hf_files h = {0};
    bool *loaded = calloc((size_t)m->n_params + 1, sizeof *loaded);
    if (!loaded) return cg_set_error(CG_ERR_OOM, "model load: out of memory");
    cg_arena *cpu_step = cg_step_arena(CG_CPU), *dev_step = cg_step_arena(m->device);
    if (!cpu_step || !dev_step) {
        free(loaded);
        return cg_last_status();
    }
    cg_status s = open_weights(&h, dir);
    for (int i = 0; s == CG_OK && i < h.n_tensors; i++) {
        /* views and staging for one tensor are dropped before the next */
        cg_arena_mark cm = cg_arena_get_mark(cpu_step), dm = cg_arena_get_mark(dev_step);
        s = load_tensor(m, &h, &h.tensors[i], loaded);
        cg_arena_rewind(dev_step, dm);
        cg_arena_rewind(cpu_step, cm);
    }
    for (int i = 0; s == CG_OK && i < m->n_params; i++)
        if (!m->params[i].adapter && !loaded[i])
            s = cg_set_error(CG_ERR_FORMAT, "%s: tensor '%s' is missing (no file of the checkpoint holds it)", dir,
                             m->params[i].name);
    /* the pad rows past the vocabulary are zero, whatever the model held before */
    cg_tensor *pads[2] = {m->wte, m->lm_head};
    for (int i = 0; s == CG_OK && i < 2; i++) {
        if (!pads[i] || pads[i]->shape[0] == m->cfg.vocab_size) continue;
        cg_arena_mark dm = cg_arena_get_mark(dev_step);
        cg_tensor *pad = cg_view_slice(pads[i], 0, m->cfg.vocab_size, pads[i]->shape[0], 1);
        s = pad ? cg_fill(pad, 0.0) : cg_last_status();
        cg_arena_rewind(dev_step, dm);
    }
    hf_files_close(&h);
    free(loaded);
    return s;
}

#else

cg_status cg_model_load_hf_weights(cg_model *m, const char *dir) {
    (void)m;
    return cg_set_error(CG_ERR_UNSUPPORTED, "%s: reading safetensors needs cJSON, which this build left out",
                        dir ? dir : "model directory");
}

#endif

/* ------------------------------------------------------------------ save */

/* mkdir -p */
static cg_status make_dirs(const char *dir) {
    char path[PATH_BYTES];
    size_t n = strlen(dir);
    if (n == 0 || n >= sizeof path) return cg_set_error(CG_ERR_INVALID_ARG, "model_save_hf: bad directory name");
    memcpy(path, dir, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (path[i] != '/' && path[i] != '\0') continue;
        char c = path[i];
        path[i] = '\0';
        if (mkdir(path, 0755) != 0 && errno != EEXIST)
            return cg_set_error(CG_ERR_IO, "%s: cannot create directory %s: %s", dir, path, strerror(errno));
        path[i] = c;
    }
    struct stat sb;
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return cg_set_error(CG_ERR_IO, "%s: exists and is not a directory", dir);
    return CG_OK;
}

/* Writes text to path through a temporary file, fsync and rename. */
static cg_status write_text_atomic(const char *path, const char *text) {
    char tmp[PATH_BYTES + 32];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return cg_set_error(CG_ERR_IO, "%s: cannot create %s: %s", path, tmp, strerror(errno));
    size_t len = strlen(text), done = 0;
    cg_status s = CG_OK;
    while (done < len && s == CG_OK) {
        ssize_t w = write(fd, text + done, len - done);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) s = cg_set_error(CG_ERR_IO, "%s: write failed: %s", tmp, strerror(errno));
        else done += (size_t)w;
    }
    if (s == CG_OK && fsync(fd) != 0) s = cg_set_error(CG_ERR_IO, "%s: fsync failed: %s", tmp, strerror(errno));
    if (close(fd) != 0 && s == CG_OK) s = cg_set_error(CG_ERR_IO, "%s: close failed: %s", tmp, strerror(errno));
    if (s == CG_OK && rename(tmp, path) != 0)
        s = cg_set_error(CG_ERR_IO, "%s: cannot rename %s over it: %s", path, tmp, strerror(errno));
    if (s != CG_OK) unlink(tmp);
    return s;
}

typedef struct out_tensor {
    char name[160];  /* the Hugging Face name */
    cg_tensor *param;
    file_layout layout;
    int64_t nbytes;  /* in the file */
    int shard;
} out_tensor;

/* The tensor to write for o, in dtype: a view of the parameter (f32 CPU models) or a converted copy in
 * tmp. View structs go to the CPU step arena, which the caller rewinds. */
static cg_tensor *output_tensor(const cg_model *m, const out_tensor *o, cg_arena *tmp, cg_dtype dtype) {
    cg_tensor *src = o->param;
    if (src->device.type != CG_DEVICE_CPU && !(src = cg_tensor_clone(tmp, src))) return NULL;
    cg_tensor *v = filled_region(m, src, &o->layout);
    if (v && o->layout.transposed) v = cg_view_transpose(v, 0, 1);
    if (!v) return NULL;
    return v->dtype == dtype ? v : cg_tensor_to(tmp, v, dtype);
}

/* Writes the tensors of one shard (all of them when shard < 0) to path. */
static cg_status write_shard(const cg_model *m, const out_tensor *outs, int n, int shard, const char *path,
                             cg_dtype dtype) {
    int count = 0;
    size_t bytes = 4096;
    for (int i = 0; i < n; i++) {
        if (shard >= 0 && outs[i].shard != shard) continue;
        count++;
        bytes += (size_t)outs[i].nbytes + (size_t)cg_nbytes(outs[i].param) + 256;
    }
    const char **names = calloc((size_t)count + 1, sizeof *names);
    const cg_tensor **tensors = calloc((size_t)count + 1, sizeof *tensors);
    cg_arena *tmp = cg_arena_create("checkpoint", CG_CPU, bytes);
    cg_arena *step = cg_step_arena(CG_CPU);
    if (!names || !tensors || !tmp || !step) {
        free(names);
        free(tensors);
        cg_arena_destroy(tmp);
        return cg_last_status() != CG_OK ? cg_last_status() : cg_set_error(CG_ERR_OOM, "%s: out of memory", path);
    }
    cg_arena_mark mark = cg_arena_get_mark(step);
    cg_status s = CG_OK;
    int k = 0;
    for (int i = 0; i < n && s == CG_OK; i++) {
        if (shard >= 0 && outs[i].shard != shard) continue;
        names[k] = outs[i].name;
        if (!(tensors[k] = output_tensor(m, &outs[i], tmp, dtype)))
            s = cg_error_context("%s: preparing tensor '%s': ", path, outs[i].name);
        k++;
    }
    static const char *const meta_keys[] = {"format"}, *const meta_values[] = {"pt"};
    if (s == CG_OK) s = cg_safetensors_write(path, count, names, tensors, 1, meta_keys, meta_values);
    cg_arena_rewind(step, mark);
    cg_arena_destroy(tmp);
    free(names);
    free(tensors);
    return s;
}

static int cmp_out_name(const void *pa, const void *pb) {
    return strcmp((*(const out_tensor *const *)pa)->name, (*(const out_tensor *const *)pb)->name);
}

/* model.safetensors.index.json: total_size and the weight map, in name order as transformers writes it. */
static cg_status write_index(const char *dir, const out_tensor *outs, int n, int n_shards) {
    const out_tensor **order = malloc(sizeof *order * (size_t)n);
    size_t cap = (size_t)n * 240 + 256;
    char *text = malloc(cap);
    if (!order || !text) {
        free(order);
        free(text);
        return cg_set_error(CG_ERR_OOM, "%s: out of memory writing the index", dir);
    }
    long long total = 0;
    for (int i = 0; i < n; i++) {
        order[i] = &outs[i];
        total += outs[i].nbytes;
    }
    qsort(order, (size_t)n, sizeof *order, cmp_out_name);
    size_t pos = (size_t)snprintf(text, cap, "{\n  \"metadata\": {\n    \"total_size\": %lld\n  },\n  \"weight_map\": {\n",
                                  total);
    for (int i = 0; i < n; i++)
        pos += (size_t)snprintf(text + pos, cap - pos, "    \"%s\": \"model-%05d-of-%05d.safetensors\"%s\n", order[i]->name,
                                order[i]->shard + 1, n_shards, i + 1 < n ? "," : "");
    snprintf(text + pos, cap - pos, "  }\n}\n");
    char path[PATH_BYTES];
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    cg_status s = write_text_atomic(path, text);
    free(order);
    free(text);
    return s;
}

cg_status cg_model_save_hf(const cg_model *m, const char *dir, int64_t max_shard_bytes, cg_dtype dtype) {
    if (!m || !dir) return cg_set_error(CG_ERR_INVALID_ARG, "model_save_hf: NULL argument");
    if (dtype != CG_F32 && dtype != CG_BF16)
        return cg_set_error(CG_ERR_DTYPE, "model_save_hf: dtype %s (checkpoints are written in f32 or bf16)",
                            cg_dtype_name(dtype));
    if (max_shard_bytes < 0)
        return cg_set_error(CG_ERR_INVALID_ARG, "model_save_hf: max_shard_bytes %lld is negative",
                            (long long)max_shard_bytes);
    if (strlen(dir) > PATH_BYTES - 64) return cg_set_error(CG_ERR_INVALID_ARG, "model_save_hf: directory name too long");
    char *config = NULL;
    cg_status s = cg_model_config_to_hf_json(&m->cfg, dtype, &config);
    if (s != CG_OK) return s;
    out_tensor *outs = calloc((size_t)m->n_params + 1, sizeof *outs);
    if (!outs) {
        free(config);
        return cg_set_error(CG_ERR_OOM, "model_save_hf: out of memory");
    }
    /* the tensors and their shards: a new shard when the next tensor would overflow the current one */
    bool gpt2 = m->cfg.arch == CG_ARCH_GPT2;
    int n = 0, shard = 0;
    int64_t in_shard = 0;
    for (int i = 0; i < m->n_params; i++) {
        if (m->params[i].adapter) continue;
        out_tensor *o = &outs[n++];
        const char *name = m->params[i].name;
        bool prefix = gpt2 && strcmp(name, "lm_head.weight") != 0;
        snprintf(o->name, sizeof o->name, "%s%s", prefix ? "transformer." : "", name);
        o->param = m->params[i].tensor;
        o->layout = layout_of(m, o->param);
        o->nbytes = (int64_t)cg_dtype_size(dtype);
        for (int d = 0; d < o->layout.ndim; d++) o->nbytes *= o->layout.shape[d];
        if (max_shard_bytes > 0 && in_shard > 0 && in_shard + o->nbytes > max_shard_bytes) shard++, in_shard = 0;
        o->shard = shard;
        in_shard += o->nbytes;
    }
    int n_shards = shard + 1;
    char path[PATH_BYTES];
    s = make_dirs(dir);
    if (s == CG_OK && n_shards == 1) {
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        s = write_shard(m, outs, n, -1, path, dtype);
        /* an index left by an earlier sharded save would take precedence on load */
        snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
        if (s == CG_OK && unlink(path) != 0 && errno != ENOENT)
            s = cg_set_error(CG_ERR_IO, "%s: cannot remove the stale %s: %s", dir, path, strerror(errno));
    } else if (s == CG_OK) {
        for (int k = 0; k < n_shards && s == CG_OK; k++) {
            snprintf(path, sizeof path, "%s/model-%05d-of-%05d.safetensors", dir, k + 1, n_shards);
            s = write_shard(m, outs, n, k, path, dtype);
        }
        if (s == CG_OK) s = write_index(dir, outs, n, n_shards);
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        if (s == CG_OK && unlink(path) != 0 && errno != ENOENT)
            s = cg_set_error(CG_ERR_IO, "%s: cannot remove the stale %s: %s", dir, path, strerror(errno));
    }
    if (s == CG_OK) {
        snprintf(path, sizeof path, "%s/config.json", dir);
        s = write_text_atomic(path, config);
    }
    free(outs);
    free(config);
    return s;
}
