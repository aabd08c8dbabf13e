/* LoRA adapters: attaching to the model's linear layers by PEFT target names, enable/disable, merge/unmerge,
 * and PEFT's adapter_model.safetensors + adapter_config.json. */
#include "models/lora.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/json.h"
#include "core/safetensors.h"

#define LORA_MAX_TARGETS 64
#define LORA_NAME_MAX 256

/* ------------------------------------------------------------------ configs */

cg_lora_config cg_lora_config_default(void) {
    return (cg_lora_config){.rank = 8, .alpha = 8.0f, .rslora = false, .dropout = 0.0f, .targets = NULL, .seed = 0};
}

cg_lora_config cg_lora_config_tina(void) {
    return (cg_lora_config){.rank = 32, .alpha = 128.0f, .rslora = false, .dropout = 0.05f,
                            .targets = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj", .seed = 0};
}

float cg_lora_scale(const cg_lora_config *cfg) {
    if (!cfg || cfg->rank <= 0) return 0.0f;
    double r = (double)cfg->rank;
    return (float)((double)cfg->alpha / (cfg->rslora ? sqrt(r) : r));
}

static cg_status check_config(const char *op, const cg_lora_config *cfg) {
    if (!cfg) return cg_set_error(CG_ERR_INVALID_ARG, "%s: NULL config", op);
    if (cfg->rank <= 0) return cg_set_error(CG_ERR_INVALID_ARG, "%s: rank r = %d must be positive", op, cfg->rank);
    if (!isfinite(cfg->alpha)) return cg_set_error(CG_ERR_INVALID_ARG, "%s: alpha %g is not finite", op, (double)cfg->alpha);
    if (!(cfg->dropout >= 0.0f && cfg->dropout < 1.0f))
        return cg_set_error(CG_ERR_INVALID_ARG, "%s: dropout %g outside [0, 1)", op, (double)cfg->dropout);
    return CG_OK;
}

/* ------------------------------------------------------------------ the model's linear layers */

/* Every linear layer of the blocks, in model order, with its module path in transformers' *ForCausalLM. */
typedef struct layer_list {
    int n;
    cg_linear_module **mods;
    char (*paths)[LORA_NAME_MAX];
} layer_list;

static void layer_list_free(layer_list *l) {
    free(l->mods);
    free(l->paths);
    l->mods = NULL;
    l->paths = NULL;
    l->n = 0;
}

static cg_status list_layers(const cg_model *m, layer_list *l) {
    bool gpt2 = m->cfg.arch == CG_ARCH_GPT2;
    int per = gpt2 ? 4 : 7;
    int64_t total = m->cfg.n_layer * per;
    l->n = 0;
    l->mods = calloc((size_t)total, sizeof *l->mods);
    l->paths = calloc((size_t)total, sizeof *l->paths);
    if (!l->mods || !l->paths) {
        layer_list_free(l);
        return cg_set_error(CG_ERR_OOM, "lora: out of host memory listing %lld layers", (long long)total);
    }
    for (int64_t i = 0; i < m->cfg.n_layer; i++) {
        cg_block *b = &m->blocks[i];
        cg_linear_module *gpt2_mods[4] = {&b->qkv, &b->o, &b->fc, &b->proj};
        cg_linear_module *llama_mods[7] = {&b->q, &b->k, &b->v, &b->o, &b->gate, &b->up, &b->down};
        for (int k = 0; k < per; k++) {
            cg_linear_module *mod = gpt2 ? gpt2_mods[k] : llama_mods[k];
            l->mods[l->n] = mod;
            /* our GPT-2 names drop GPT2LMHeadModel's "transformer." (as GPT-2 checkpoints do); PEFT keeps it */
            snprintf(l->paths[l->n], LORA_NAME_MAX, "%s%s", gpt2 ? "transformer." : "", mod->name);
            l->n++;
        }
    }
    return CG_OK;
}

/* PEFT's saved name of an adapter weight: "base_model.model.<path>.lora_A.weight". */
static void adapter_name(char *buf, size_t n, const char *path, char which) {
    snprintf(buf, n, "base_model.model.%s.lora_%c.weight", path, which);
}

/* PEFT's target_modules test for a list: the path equals the name or ends with "." + name. */
static bool target_matches(const char *path, const char *name) {
    size_t lp = strlen(path), ln = strlen(name);
    if (lp == ln) return strcmp(path, name) == 0;
    return lp > ln && path[lp - ln - 1] == '.' && strcmp(path + lp - ln, name) == 0;
}

static const char *valid_targets(const cg_model *m) {
    return m->cfg.arch == CG_ARCH_GPT2
               ? "c_attn, c_proj, c_fc, attn.c_proj, mlp.c_proj, all-linear, or a dotted suffix of a module path "
                 "such as h.0.attn.c_attn"
               : "q, k, v, o, gate, up, down, q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj, "
                 "all-linear, or a dotted suffix of a module path such as layers.0.self_attn.q_proj";
}

/* Resolves a target list against the layers: selected[i] for each layer, and the names as PEFT writes them
 * in target_modules (short names expanded, "all-linear" replaced by the layer names it selects) into
 * resolved[0..*n_resolved). */
static cg_status resolve_targets(const cg_model *m, const layer_list *l, const char *targets, bool *selected,
                                 char (*resolved)[LORA_NAME_MAX], int *n_resolved) {
    static const char *const llama_short[7][2] = {{"q", "q_proj"},       {"k", "k_proj"},   {"v", "v_proj"},
                                                  {"o", "o_proj"},       {"gate", "gate_proj"}, {"up", "up_proj"},
                                                  {"down", "down_proj"}};
    bool gpt2 = m->cfg.arch == CG_ARCH_GPT2;
    if (!targets) targets = gpt2 ? "c_attn" : "q_proj,v_proj"; /* PEFT's per-model-type defaults */
    for (int i = 0; i < l->n; i++) selected[i] = false;
    *n_resolved = 0;
    const char *p = targets;
    while (*p) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        const char *q = p;
        while (len && (*q == ' ' || *q == '\t')) q++, len--;
        while (len && (q[len - 1] == ' ' || q[len - 1] == '\t')) len--;
        p = end ? end + 1 : p + strlen(p);
        if (len == 0) continue;
        char tok[LORA_NAME_MAX];
        if (len >= sizeof tok)
            return cg_set_error(CG_ERR_INVALID_ARG, "lora: target name of %zu characters is too long", len);
        memcpy(tok, q, len);
        tok[len] = '\0';
        bool all = strcmp(tok, "all-linear") == 0;
        if (!gpt2)
            for (int k = 0; k < 7; k++)
                if (strcmp(tok, llama_short[k][0]) == 0) snprintf(tok, sizeof tok, "%s", llama_short[k][1]);
        int hits = 0;
        for (int i = 0; i < l->n; i++) {
            if (all || target_matches(l->paths[i], tok)) {
                hits++;
                if (all && !selected[i]) { /* record the layer's own name, once */
                    const char *leaf = strrchr(l->paths[i], '.') + 1;
                    bool seen = false;
                    for (int r = 0; r < *n_resolved; r++) seen = seen || strcmp(resolved[r], leaf) == 0;
                    if (!seen) {
                        if (*n_resolved == LORA_MAX_TARGETS)
                            return cg_set_error(CG_ERR_INVALID_ARG, "lora: more than %d targets", LORA_MAX_TARGETS);
                        snprintf(resolved[(*n_resolved)++], LORA_NAME_MAX, "%s", leaf);
                    }
                }
                selected[i] = true;
            }
        }
        if (hits == 0)
            return cg_set_error(CG_ERR_INVALID_ARG, "lora: target '%s' matches no linear layer of %s (valid: %s)", tok,
                                m->cfg.name[0] ? m->cfg.name : "the model", valid_targets(m));
        if (!all) {
            bool seen = false;
            for (int r = 0; r < *n_resolved; r++) seen = seen || strcmp(resolved[r], tok) == 0;
            if (!seen) {
                if (*n_resolved == LORA_MAX_TARGETS)
                    return cg_set_error(CG_ERR_INVALID_ARG, "lora: more than %d targets", LORA_MAX_TARGETS);
                snprintf(resolved[(*n_resolved)++], LORA_NAME_MAX, "%s", tok);
            }
        }
    }
    if (*n_resolved == 0) return cg_set_error(CG_ERR_INVALID_ARG, "lora: empty target list (valid: %s)", valid_targets(m));
    return CG_OK;
}

/* ------------------------------------------------------------------ attach */

bool cg_lora_attached(const cg_model *m) {
    if (!m) return false;
    for (int i = 0; i < m->n_params; i++)
        if (m->params[i].adapter) return true;
    return false;
}

int cg_lora_modules(cg_model *m, cg_linear_module **out, int cap) {
    layer_list l;
    if (!m || list_layers(m, &l) != CG_OK) return 0;
    int n = 0;
    for (int i = 0; i < l.n; i++) {
        if (!l.mods[i]->lora_a) continue;
        if (out && n < cap) out[n] = l.mods[i];
        n++;
    }
    layer_list_free(&l);
    return n;
}

/* The model's state before an attach, to put back when a later step fails. */
typedef struct attach_undo {
    int n_params;
    cg_arena_mark mark;
    bool base_trainable;
} attach_undo;

static attach_undo undo_point(const cg_model *m) {
    attach_undo u = {m->n_params, cg_arena_get_mark(m->arena), false};
    for (int i = 0; i < m->n_params; i++)
        if (!m->params[i].adapter) {
            u.base_trainable = m->params[i].tensor->requires_grad;
            break;
        }
    return u;
}

static void undo_attach(cg_model *m, const layer_list *l, const attach_undo *u) {
    for (int i = 0; i < l->n; i++) {
        l->mods[i]->lora_a = l->mods[i]->lora_b = NULL;
        l->mods[i]->lora_scale = l->mods[i]->lora_dropout = 0.0f;
    }
    m->n_params = u->n_params;
    m->lora_merged = false;
    cg_model_set_base_trainable(m, u->base_trainable);
    cg_arena_rewind(m->arena, u->mark);
}

/* One adapter tensor: zeros in the model's arena, a gradient leaf with its buffer, registered by name. */
static cg_tensor *new_adapter(cg_model *m, const char *name, int64_t rows, int64_t cols) {
    int64_t shape[2] = {rows, cols};
    cg_tensor *t = cg_tensor_zeros(m->arena, CG_F32, 2, shape);
    if (!t) return NULL;
    cg_status s = cg_set_requires_grad(t, true);
    if (s == CG_OK) s = cg_alloc_grad(t, m->arena);
    if (s == CG_OK) s = cg_model_add_param(m, name, t, true);
    return s == CG_OK ? t : NULL;
}

/* Attaches to the selected layers of l; on error everything is undone. */
static cg_status attach_selected(cg_model *m, const cg_lora_config *cfg, const layer_list *l, const bool *selected) {
    attach_undo u = undo_point(m);
    cg_rng rng = cg_rng_init(cfg->seed);
    float scale = cg_lora_scale(cfg);
    int64_t r = cfg->rank;
    char name[LORA_NAME_MAX + 64];
    for (int i = 0; i < l->n; i++) {
        if (!selected[i]) continue;
        cg_linear_module *mod = l->mods[i];
        int64_t out = mod->weight->shape[0], in = mod->weight->shape[1];
        adapter_name(name, sizeof name, l->paths[i], 'A');
        cg_tensor *a = new_adapter(m, name, r, in);
        /* kaiming_uniform_(a = sqrt(5)) over fan_in = in: gain sqrt(2 / (1 + 5)), bound = gain * sqrt(3 / in) */
        float bound = (float)(1.0 / sqrt((double)in));
        if (a && cg_rng_uniform(&rng, a, -bound, bound) != CG_OK) a = NULL;
        adapter_name(name, sizeof name, l->paths[i], 'B');
        cg_tensor *b = a ? new_adapter(m, name, out, r) : NULL;
        if (!b) {
            cg_status s = cg_error_context("lora_attach (%s): ", l->paths[i]);
            undo_attach(m, l, &u);
            return s;
        }
        mod->lora_a = a;
        mod->lora_b = b;
        mod->lora_scale = scale;
        mod->lora_dropout = cfg->dropout;
    }
    cg_model_set_base_trainable(m, false);
    m->lora_merged = false;
    return CG_OK;
}

cg_status cg_lora_attach(cg_model *m, const cg_lora_config *cfg) {
    if (!m) return cg_set_error(CG_ERR_INVALID_ARG, "lora_attach: NULL model");
    cg_status s = check_config("lora_attach", cfg);
    if (s != CG_OK) return s;
    if (cg_lora_attached(m))
        return cg_set_error(CG_ERR_INVALID_ARG, "lora_attach: %s already has LoRA adapters (one adapter per model)",
                            m->cfg.name[0] ? m->cfg.name : "the model");
    layer_list l;
    if ((s = list_layers(m, &l)) != CG_OK) return s;
    bool *selected = calloc((size_t)l.n, sizeof *selected);
    char(*resolved)[LORA_NAME_MAX] = calloc(LORA_MAX_TARGETS, sizeof *resolved);
    int n_resolved = 0;
    if (!selected || !resolved) s = cg_set_error(CG_ERR_OOM, "lora_attach: out of host memory");
    if (s == CG_OK) s = resolve_targets(m, &l, cfg->targets, selected, resolved, &n_resolved);
    if (s == CG_OK) s = attach_selected(m, cfg, &l, selected);
    if (s == CG_OK) s = cg_model_refresh_working_copies(m); /* mixed precision: the initialised adapters' copies */
    free(selected);
    free(resolved);
    layer_list_free(&l);
    return s;
}

/* ------------------------------------------------------------------ enable, merge */

/* W += sign * scale * B A for every adapted layer (one GEMM each: beta = 1 accumulates into W). */
static cg_status fold(cg_model *m, float sign, const char *op) {
    layer_list l;
    cg_status s = list_layers(m, &l);
    for (int i = 0; s == CG_OK && i < l.n; i++) {
        cg_linear_module *mod = l.mods[i];
        if (!mod->lora_a) continue;
        s = cg_matmul_into(mod->weight, mod->lora_b, mod->lora_a, false, false, sign * mod->lora_scale, 1.0f);
        if (s != CG_OK) {
            s = cg_error_context("%s (%s): ", op, l.paths[i]);
            for (int k = 0; k < i; k++) /* put back the layers already done */
                if (l.mods[k]->lora_a)
                    cg_matmul_into(l.mods[k]->weight, l.mods[k]->lora_b, l.mods[k]->lora_a, false, false,
                                   -sign * l.mods[k]->lora_scale, 1.0f);
        }
    }
    layer_list_free(&l);
    return s;
}

cg_status cg_lora_merge(cg_model *m) {
    if (!m) return cg_set_error(CG_ERR_INVALID_ARG, "lora_merge: NULL model");
    if (!cg_lora_attached(m)) return cg_set_error(CG_ERR_INVALID_ARG, "lora_merge: the model has no LoRA adapters");
    if (m->lora_merged) return cg_set_error(CG_ERR_INVALID_ARG, "lora_merge: the adapters are already merged");
    if (!m->lora_enabled)
        return cg_set_error(CG_ERR_INVALID_ARG, "lora_merge: the adapters are disabled (enable them before merging)");
    cg_status s = fold(m, 1.0f, "lora_merge");
    if (s == CG_OK) m->lora_merged = true;
    if (s == CG_OK) s = cg_model_refresh_working_copies(m); /* the forward reads the merged weights' copies */
    return s;
}

cg_status cg_lora_unmerge(cg_model *m) {
    if (!m) return cg_set_error(CG_ERR_INVALID_ARG, "lora_unmerge: NULL model");
    if (!m->lora_merged) return cg_set_error(CG_ERR_INVALID_ARG, "lora_unmerge: the adapters are not merged");
    cg_status s = fold(m, -1.0f, "lora_unmerge");
    if (s == CG_OK) m->lora_merged = false;
    if (s == CG_OK) s = cg_model_refresh_working_copies(m);
    return s;
}

void cg_lora_set_enabled(cg_model *m, bool enabled) {
    if (!m) return;
    /* a merged adapter is in W itself: the base model needs it taken out (PEFT unmerges here too) */
    if (!enabled && m->lora_merged) cg_lora_unmerge(m);
    m->lora_enabled = enabled;
}

/* ------------------------------------------------------------------ adapter_config.json */

/* A JSON string literal of s (quotes, backslashes and control characters escaped). */
static void json_string(FILE *f, const char *s) {
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') fprintf(f, "\\%c", *p);
        else if (*p < 0x20) fprintf(f, "\\u%04x", *p);
        else fputc(*p, f);
    }
    fputc('"', f);
}

/* The shortest %g text that reads back as the same float (16 -> "16", 0.05f -> "0.05"). */
static void json_float(FILE *f, float v) {
    char buf[32];
    for (int prec = 1; prec <= 9; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, (double)v);
        if (strtof(buf, NULL) == v) break;
    }
    fputs(buf, f);
}

static cg_status write_config(const cg_model *m, const cg_lora_config *cfg, char (*targets)[LORA_NAME_MAX],
                              int n_targets, const char *path) {
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f) return cg_set_error(CG_ERR_IO, "lora_save: cannot create %s: %s", tmp, strerror(errno));
    bool gpt2 = m->cfg.arch == CG_ARCH_GPT2;
    fputs("{\n  \"peft_type\": \"LORA\",\n  \"task_type\": \"CAUSAL_LM\",\n  \"base_model_name_or_path\": ", f);
    json_string(f, m->cfg.name[0] ? m->cfg.name : "custom");
    fprintf(f, ",\n  \"r\": %d,\n  \"lora_alpha\": ", cfg->rank);
    json_float(f, cfg->alpha);
    fputs(",\n  \"lora_dropout\": ", f);
    json_float(f, cfg->dropout);
    fputs(",\n  \"target_modules\": [", f);
    for (int i = 0; i < n_targets; i++) {
        fputs(i ? ", " : "", f);
        json_string(f, targets[i]);
    }
    fprintf(f, "],\n  \"use_rslora\": %s,\n  \"fan_in_fan_out\": %s,\n", cfg->rslora ? "true" : "false",
            gpt2 ? "true" : "false");
    fputs("  \"bias\": \"none\",\n  \"init_lora_weights\": true,\n  \"modules_to_save\": null,\n"
          "  \"use_dora\": false,\n  \"rank_pattern\": {},\n  \"alpha_pattern\": {},\n"
          "  \"layers_to_transform\": null,\n  \"layers_pattern\": null,\n  \"inference_mode\": true\n}\n", f);
    bool ok = !ferror(f);
    ok = fflush(f) == 0 && ok;
    ok = fsync(fileno(f)) == 0 && ok;
    ok = fclose(f) == 0 && ok;
    if (!ok || rename(tmp, path) != 0) {
        cg_status s = cg_set_error(CG_ERR_IO, "lora_save: cannot write %s: %s", path, strerror(errno));
        remove(tmp);
        return s;
    }
    return CG_OK;
}

#ifdef CG_HAVE_CJSON
/* Reads an optional key that must be null or an empty object/array (features this code does not have). */
static cg_status require_empty(const cJSON *root, const char *key, const char *path) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!v || cJSON_IsNull(v) || ((cJSON_IsObject(v) || cJSON_IsArray(v)) && !v->child)) return CG_OK;
    return cg_set_error(CG_ERR_UNSUPPORTED, "%s: '%s' is set; per-layer patterns, layer selection and "
                        "modules_to_save are not supported", path, key);
}

#endif

cg_status cg_lora_config_read(const char *path, cg_lora_config *cfg, char *targets, size_t targets_cap) {
    if (!path || !cfg || !targets || targets_cap == 0)
        return cg_set_error(CG_ERR_INVALID_ARG, "lora_config_read: NULL argument");
#ifndef CG_HAVE_CJSON
    return cg_set_error(CG_ERR_UNSUPPORTED, "lora_config_read (%s): cgrad was built without cJSON", path);
#else
    cJSON *root = NULL;
    cg_status s = cg_json_read_file(path, &root);
    if (s != CG_OK) return s;
    if (!cJSON_IsObject(root)) {
        s = cg_set_error(CG_ERR_FORMAT, "%s: adapter config is a JSON %s, not an object", path, cg_json_type_name(root));
        goto done;
    }
    if ((s = cg_json_check_unique_keys(root, path)) != CG_OK) goto done;
    *cfg = cg_lora_config_default();
    const char *peft_type = NULL, *bias = NULL;
    int64_t r = 0;
    double alpha = 8.0, dropout = 0.0;
    bool rslora = false, dora = false, fan_in_fan_out = false;
    if ((s = cg_json_get_string(root, "peft_type", path, &peft_type)) != CG_OK) goto done;
    if (strcmp(peft_type, "LORA") != 0) {
        s = cg_set_error(CG_ERR_UNSUPPORTED, "%s: peft_type is '%s'; only LORA adapters can be loaded", path, peft_type);
        goto done;
    }
    if ((s = cg_json_get_int(root, "r", path, &r)) != CG_OK) goto done;
    if (r <= 0 || r > INT_MAX) {
        s = cg_set_error(CG_ERR_FORMAT, "%s: r = %lld must be a positive integer", path, (long long)r);
        goto done;
    }
    if ((s = cg_json_opt_double(root, "lora_alpha", path, 8.0, &alpha)) != CG_OK) goto done;
    if ((s = cg_json_opt_double(root, "lora_dropout", path, 0.0, &dropout)) != CG_OK) goto done;
    if ((s = cg_json_opt_bool(root, "use_rslora", path, false, &rslora)) != CG_OK) goto done;
    if ((s = cg_json_opt_bool(root, "use_dora", path, false, &dora)) != CG_OK) goto done;
    if ((s = cg_json_opt_bool(root, "fan_in_fan_out", path, false, &fan_in_fan_out)) != CG_OK) goto done;
    if ((s = cg_json_opt_string(root, "bias", path, "none", &bias)) != CG_OK) goto done;
    if (!isfinite(alpha) || fabs(alpha) > 1e30) {
        s = cg_set_error(CG_ERR_FORMAT, "%s: lora_alpha %g is not a finite number", path, alpha);
        goto done;
    }
    if (!(dropout >= 0.0 && dropout < 1.0)) {
        s = cg_set_error(CG_ERR_FORMAT, "%s: lora_dropout %g outside [0, 1)", path, dropout);
        goto done;
    }
    if (dora || strcmp(bias, "none") != 0) {
        s = cg_set_error(CG_ERR_UNSUPPORTED, "%s: %s is not supported (plain LoRA with bias \"none\" only)", path,
                         dora ? "use_dora" : "a trained bias");
        goto done;
    }
    static const char *const empty_keys[] = {"modules_to_save", "rank_pattern", "alpha_pattern", "layers_to_transform"};
    for (int k = 0; k < 4 && s == CG_OK; k++) s = require_empty(root, empty_keys[k], path);
    if (s != CG_OK) goto done;
    const cJSON *tm = cJSON_GetObjectItemCaseSensitive(root, "target_modules");
    targets[0] = '\0';
    bool has_targets = true;
    if (!tm || cJSON_IsNull(tm)) {
        has_targets = false;
    } else if (cJSON_IsString(tm)) {
        if (strcmp(tm->valuestring, "all-linear") != 0) {
            s = cg_set_error(CG_ERR_UNSUPPORTED, "%s: target_modules is the regular expression '%s'; give a list of "
                             "module names", path, tm->valuestring);
            goto done;
        }
        snprintf(targets, targets_cap, "all-linear");
    } else if (cJSON_IsArray(tm)) {
        size_t pos = 0;
        int n = 0;
        for (const cJSON *e = tm->child; e; e = e->next, n++) {
            if (!cJSON_IsString(e) || !e->valuestring[0] || strchr(e->valuestring, ',')) {
                s = cg_set_error(CG_ERR_FORMAT, "%s: target_modules[%d] is not a module name", path, n);
                goto done;
            }
            size_t len = strlen(e->valuestring);
            if (pos + len + 2 > targets_cap) {
                s = cg_set_error(CG_ERR_INVALID_ARG, "%s: target_modules do not fit a %zu-byte buffer", path, targets_cap);
                goto done;
            }
            pos += (size_t)snprintf(targets + pos, targets_cap - pos, n ? ",%s" : "%s", e->valuestring);
        }
        if (n == 0) {
            s = cg_set_error(CG_ERR_FORMAT, "%s: target_modules is empty", path);
            goto done;
        }
    } else {
        s = cg_set_error(CG_ERR_FORMAT, "%s: target_modules is a JSON %s (need a list of names)", path,
                         cg_json_type_name(tm));
        goto done;
    }
    cfg->rank = (int)r;
    cfg->alpha = (float)alpha;
    cfg->dropout = (float)dropout;
    cfg->rslora = rslora;
    cfg->targets = has_targets ? targets : NULL;
    (void)fan_in_fan_out; /* the file layout is [r, in] / [out, r] either way (see lora.h) */
done:
    cJSON_Delete(root);
    return s;
#endif
}

/* ------------------------------------------------------------------ save and load */

static cg_status join_path(char *buf, size_t n, const char *dir, const char *file, const char *op) {
    int len = snprintf(buf, n, "%s/%s", dir, file);
    if (len < 0 || (size_t)len >= n) return cg_set_error(CG_ERR_INVALID_ARG, "%s: path '%s/%s' is too long", op, dir, file);
    return CG_OK;
}

cg_status cg_lora_save(const cg_model *m, const cg_lora_config *cfg, const char *dir) {
    if (!m || !dir) return cg_set_error(CG_ERR_INVALID_ARG, "lora_save: NULL model or directory");
    cg_status s = check_config("lora_save", cfg);
    if (s != CG_OK) return s;
    if (!cg_lora_attached(m)) return cg_set_error(CG_ERR_INVALID_ARG, "lora_save: the model has no LoRA adapters");
    char st_path[4096], cfg_path[4096];
    if ((s = join_path(st_path, sizeof st_path, dir, "adapter_model.safetensors", "lora_save")) != CG_OK) return s;
    if ((s = join_path(cfg_path, sizeof cfg_path, dir, "adapter_config.json", "lora_save")) != CG_OK) return s;
    layer_list l;
    if ((s = list_layers(m, &l)) != CG_OK) return s;
    bool *selected = calloc((size_t)l.n, sizeof *selected);
    char(*resolved)[LORA_NAME_MAX] = calloc(LORA_MAX_TARGETS, sizeof *resolved);
    char(*names)[LORA_NAME_MAX + 64] = calloc((size_t)(2 * l.n), sizeof *names);
    const char **name_ptrs = calloc((size_t)(2 * l.n), sizeof *name_ptrs);
    const cg_tensor **tensors = calloc((size_t)(2 * l.n), sizeof *tensors);
    int n_resolved = 0, n = 0;
    if (!selected || !resolved || !names || !name_ptrs || !tensors) s = cg_set_error(CG_ERR_OOM, "lora_save: out of host memory");
    if (s == CG_OK) s = resolve_targets(m, &l, cfg->targets, selected, resolved, &n_resolved);
    /* the config must describe the adapters the model holds, or the files would not load back to this model */
    float scale = cg_lora_scale(cfg);
    for (int i = 0; s == CG_OK && i < l.n; i++) {
        const cg_linear_module *mod = l.mods[i];
        if (selected[i] != (mod->lora_a != NULL)) {
            s = cg_set_error(CG_ERR_INVALID_ARG, "lora_save: the config's targets %s %s, which %s an adapter",
                             selected[i] ? "select" : "do not select", l.paths[i], mod->lora_a ? "has" : "has no");
        } else if (mod->lora_a && (mod->lora_a->shape[0] != cfg->rank || mod->lora_scale != scale ||
                                   mod->lora_dropout != cfg->dropout)) {
            s = cg_set_error(CG_ERR_INVALID_ARG, "lora_save: %s has rank %lld, scale %g and dropout %g; the config gives "
                             "rank %d, scale %g and dropout %g", l.paths[i], (long long)mod->lora_a->shape[0],
                             (double)mod->lora_scale, (double)mod->lora_dropout, cfg->rank, (double)scale,
                             (double)cfg->dropout);
        } else if (mod->lora_a) {
            for (int k = 0; k < 2; k++) {
                adapter_name(names[n], sizeof names[n], l.paths[i], k ? 'B' : 'A');
                name_ptrs[n] = names[n];
                tensors[n++] = k ? mod->lora_b : mod->lora_a;
            }
        }
    }
    if (s == CG_OK && mkdir(dir, 0755) != 0 && errno != EEXIST)
        s = cg_set_error(CG_ERR_IO, "lora_save: cannot create directory %s: %s", dir, strerror(errno));
    const char *meta_k[1] = {"format"}, *meta_v[1] = {"pt"};
    if (s == CG_OK) s = cg_safetensors_write(st_path, n, name_ptrs, tensors, 1, meta_k, meta_v);
    if (s == CG_OK) s = write_config(m, cfg, resolved, n_resolved, cfg_path);
    free(selected);
    free(resolved);
    free(names);
    free(name_ptrs);
    free(tensors);
    layer_list_free(&l);
    return s;
}

/* The file entry of one adapter tensor, checked against the shape the model needs. */
static cg_status check_entry(const cg_safetensors *st, const char *name, int64_t rows, int64_t cols,
                             const char *layer, const cg_safetensors_entry **out) {
    const char *file = cg_safetensors_path(st);
    const cg_safetensors_entry *e = cg_safetensors_find(st, name);
    if (!e)
        return cg_set_error(CG_ERR_FORMAT, "lora_load: %s has no tensor '%s' (adapter_config.json targets %s)", file,
                            name, layer);
    if (!e->dtype_supported || (e->dtype != CG_F32 && e->dtype != CG_BF16 && e->dtype != CG_F16))
        return cg_set_error(CG_ERR_DTYPE, "lora_load: %s: tensor '%s' has dtype %s (need F32, BF16 or F16)", file,
                            name, e->dtype_name);
    if (e->ndim != 2 || e->shape[0] != rows || e->shape[1] != cols) {
        char shape[96] = "";
        size_t pos = 0;
        for (int k = 0; k < e->ndim && pos < sizeof shape; k++)
            pos += (size_t)snprintf(shape + pos, sizeof shape - pos, k ? ", %lld" : "%lld", (long long)e->shape[k]);
        return cg_set_error(CG_ERR_SHAPE, "lora_load: %s: tensor '%s' has shape [%s], expected [%lld, %lld]", file,
                            name, shape, (long long)rows, (long long)cols);
    }
    *out = e;
    return CG_OK;
}

cg_status cg_lora_load(cg_model *m, const char *dir) {
    if (!m || !dir) return cg_set_error(CG_ERR_INVALID_ARG, "lora_load: NULL model or directory");
    if (cg_lora_attached(m))
        return cg_set_error(CG_ERR_INVALID_ARG, "lora_load: %s already has LoRA adapters",
                            m->cfg.name[0] ? m->cfg.name : "the model");
    char st_path[4096], cfg_path[4096], targets[4096];
    cg_status s = join_path(st_path, sizeof st_path, dir, "adapter_model.safetensors", "lora_load");
    if (s == CG_OK) s = join_path(cfg_path, sizeof cfg_path, dir, "adapter_config.json", "lora_load");
    cg_lora_config cfg;
    if (s == CG_OK) s = cg_lora_config_read(cfg_path, &cfg, targets, sizeof targets);
    if (s != CG_OK) return s;
    cg_safetensors *st = NULL;
    if ((s = cg_safetensors_open(st_path, &st)) != CG_OK) return s;
    layer_list l = {0};
    s = list_layers(m, &l);
    bool *selected = s == CG_OK ? calloc((size_t)l.n, sizeof *selected) : NULL;
    char(*resolved)[LORA_NAME_MAX] = calloc(LORA_MAX_TARGETS, sizeof *resolved);
    const cg_safetensors_entry **entries = s == CG_OK ? calloc((size_t)(2 * l.n), sizeof *entries) : NULL;
    int n_resolved = 0;
    if (s == CG_OK && (!selected || !resolved || !entries)) s = cg_set_error(CG_ERR_OOM, "lora_load: out of host memory");
    if (s == CG_OK && (s = resolve_targets(m, &l, cfg.targets, selected, resolved, &n_resolved)) != CG_OK)
        s = cg_error_context("lora_load (%s): ", cfg_path);
    /* everything is checked before the model changes */
    int expected = 0;
    char name[LORA_NAME_MAX + 64];
    for (int i = 0; s == CG_OK && i < l.n; i++) {
        if (!selected[i]) continue;
        const cg_tensor *w = l.mods[i]->weight;
        adapter_name(name, sizeof name, l.paths[i], 'A');
        s = check_entry(st, name, cfg.rank, w->shape[1], l.paths[i], &entries[2 * i]);
        adapter_name(name, sizeof name, l.paths[i], 'B');
        if (s == CG_OK) s = check_entry(st, name, w->shape[0], cfg.rank, l.paths[i], &entries[2 * i + 1]);
        expected += 2;
    }
    if (s == CG_OK && cg_safetensors_count(st) != expected) { /* then some tensor is not one of ours: name it */
        for (int k = 0; k < cg_safetensors_count(st) && s == CG_OK; k++) {
            const cg_safetensors_entry *e = cg_safetensors_entry_at(st, k);
            bool known = false;
            for (int i = 0; i < 2 * l.n && !known; i++) known = entries[i] == e;
            if (!known)
                s = cg_set_error(CG_ERR_FORMAT, "lora_load: %s: tensor '%s' is not a LoRA weight of a layer that "
                                 "adapter_config.json targets (%s)", st_path, e->name, targets[0] ? targets : "default");
        }
    }
    if (s == CG_OK) {
        attach_undo u = undo_point(m);
        s = attach_selected(m, &cfg, &l, selected);
        for (int i = 0; s == CG_OK && i < l.n; i++) {
            if (!selected[i]) continue;
            s = cg_safetensors_load_into(st, entries[2 * i]->name, l.mods[i]->lora_a);
            if (s == CG_OK) s = cg_safetensors_load_into(st, entries[2 * i + 1]->name, l.mods[i]->lora_b);
            if (s != CG_OK) {
                s = cg_error_context("lora_load (%s): ", st_path);
                undo_attach(m, &l, &u);
            }
        }
    }
    if (s == CG_OK) s = cg_model_refresh_working_copies(m); /* mixed precision: the loaded adapters' copies */
    free(selected);
    free(resolved);
    free(entries);
    layer_list_free(&l);
    cg_safetensors_close(st);
    return s;
}
