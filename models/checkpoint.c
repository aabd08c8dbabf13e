/* Checkpoints: Hugging Face config.json to and from a model config, and cg_model_load, which tells a
 * Hugging Face directory from an llm.c checkpoint. The weights themselves: checkpoint_hf.c (safetensors)
 * and checkpoint_llmc.c. */
#include "models/checkpoint.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/json.h"

static bool is_directory(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

static bool has_basename(const char *path, const char *base) {
    const char *slash = strrchr(path, '/');
    return strcmp(slash ? slash + 1 : path, base) == 0;
}

/* ------------------------------------------------------------------ config.json -> config */

#ifdef CG_HAVE_CJSON

/* A positive integer key (required), as int64. */
static cg_status get_pos_int(const cJSON *root, const char *key, const char *file, int64_t *out) {
    cg_status s = cg_json_get_int(root, key, file, out);
    if (s != CG_OK) return s;
    if (*out <= 0) return cg_set_error(CG_ERR_FORMAT, "%s: '%s' is %lld, must be positive", file, key, (long long)*out);
    return CG_OK;
}

static cg_status opt_pos_int(const cJSON *root, const char *key, const char *file, int64_t def, int64_t *out) {
    cg_status s = cg_json_opt_int(root, key, file, def, out);
    if (s != CG_OK) return s;
    if (*out <= 0) return cg_set_error(CG_ERR_FORMAT, "%s: '%s' is %lld, must be positive", file, key, (long long)*out);
    return CG_OK;
}

static cg_status opt_pos_float(const cJSON *root, const char *key, const char *file, double def, float *out) {
    double v;
    cg_status s = cg_json_opt_double(root, key, file, def, &v);
    if (s != CG_OK) return s;
    if (!(v > 0.0) || !isfinite((float)v))
        return cg_set_error(CG_ERR_FORMAT, "%s: '%s' is %g, must be a positive finite number", file, key, v);
    *out = (float)v;
    return CG_OK;
}

#define TRY(expr)                                                                                                \
    do {                                                                                                         \
        cg_status try_s_ = (expr);                                                                               \
        if (try_s_ != CG_OK) return try_s_;                                                                      \
    } while (0)

static cg_status parse_gpt2(const cJSON *root, const char *file, cg_model_config *c) {
    c->arch = CG_ARCH_GPT2;
    TRY(get_pos_int(root, "n_embd", file, &c->d_model));
    TRY(get_pos_int(root, "n_layer", file, &c->n_layer));
    TRY(get_pos_int(root, "n_head", file, &c->n_head));
    TRY(get_pos_int(root, "n_positions", file, &c->max_seq_len));
    TRY(get_pos_int(root, "vocab_size", file, &c->vocab_size));
    TRY(opt_pos_int(root, "n_inner", file, 4 * c->d_model, &c->d_ff));
    TRY(opt_pos_float(root, "layer_norm_epsilon", file, 1e-5, &c->norm_eps));
    TRY(cg_json_opt_bool(root, "tie_word_embeddings", file, true, &c->tie_embeddings));
    const char *act;
    TRY(cg_json_opt_string(root, "activation_function", file, "gelu_new", &act));
    if (strcmp(act, "gelu_new") != 0 && strcmp(act, "gelu_pytorch_tanh") != 0)
        return cg_set_error(CG_ERR_FORMAT, "%s: activation_function '%s' is not supported (this model's GELU is the "
                            "tanh form: 'gelu_new' or 'gelu_pytorch_tanh')", file, act);
    c->n_kv_head = c->n_head;
    c->qkv_bias = true;
    return CG_OK;
}

/* rope_scaling: null / absent / {"rope_type": "default"} = none, or Llama 3's scaling. */
static cg_status parse_rope_scaling(const cJSON *root, const char *file, cg_model_config *c) {
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(root, "rope_scaling");
    if (!rs || cJSON_IsNull(rs)) return CG_OK;
    if (!cJSON_IsObject(rs))
        return cg_set_error(CG_ERR_FORMAT, "%s: 'rope_scaling' is a %s, expected an object or null", file,
                            cg_json_type_name(rs));
    const char *type = NULL;
    TRY(cg_json_opt_string(rs, "rope_type", file, NULL, &type));
    if (!type) TRY(cg_json_opt_string(rs, "type", file, NULL, &type)); /* the older key */
    if (!type) return cg_set_error(CG_ERR_FORMAT, "%s: 'rope_scaling' has no 'rope_type'", file);
    if (strcmp(type, "default") == 0) return CG_OK;
    if (strcmp(type, "llama3") != 0)
        return cg_set_error(CG_ERR_FORMAT, "%s: rope_scaling type '%s' is not supported (only 'llama3')", file, type);
    double factor, lo, hi;
    TRY(cg_json_get_double(rs, "factor", file, &factor));
    TRY(cg_json_get_double(rs, "low_freq_factor", file, &lo));
    TRY(cg_json_get_double(rs, "high_freq_factor", file, &hi));
    TRY(get_pos_int(rs, "original_max_position_embeddings", file, &c->rope_original_max_pos));
    if (!(factor > 0.0) || !(lo > 0.0) || !(hi > lo) || !isfinite(factor) || !isfinite(hi))
        return cg_set_error(CG_ERR_FORMAT, "%s: rope_scaling needs factor > 0 and high_freq_factor > "
                            "low_freq_factor > 0 (got %g, %g, %g)", file, factor, hi, lo);
    c->rope_scaling_factor = (float)factor;
    c->rope_low_freq_factor = (float)lo;
    c->rope_high_freq_factor = (float)hi;
    return CG_OK;
}

static cg_status parse_llama(const cJSON *root, const char *file, bool qwen2, cg_model_config *c) {
    c->arch = CG_ARCH_LLAMA;
    TRY(get_pos_int(root, "hidden_size", file, &c->d_model));
    TRY(get_pos_int(root, "intermediate_size", file, &c->d_ff));
    TRY(get_pos_int(root, "num_hidden_layers", file, &c->n_layer));
    TRY(get_pos_int(root, "num_attention_heads", file, &c->n_head));
    TRY(get_pos_int(root, "vocab_size", file, &c->vocab_size));
    TRY(opt_pos_int(root, "num_key_value_heads", file, c->n_head, &c->n_kv_head));
    TRY(opt_pos_int(root, "max_position_embeddings", file, qwen2 ? 32768 : 2048, &c->max_seq_len));
    TRY(opt_pos_float(root, "rms_norm_eps", file, 1e-6, &c->norm_eps));
    TRY(opt_pos_float(root, "rope_theta", file, 10000.0, &c->rope_theta));
    TRY(cg_json_opt_bool(root, "tie_word_embeddings", file, false, &c->tie_embeddings));
    const char *act;
    TRY(cg_json_opt_string(root, "hidden_act", file, "silu", &act));
    if (strcmp(act, "silu") != 0)
        return cg_set_error(CG_ERR_FORMAT, "%s: hidden_act '%s' is not supported (only 'silu')", file, act);
    if (c->d_model % c->n_head != 0)
        return cg_set_error(CG_ERR_FORMAT, "%s: hidden_size %lld is not a multiple of num_attention_heads %lld", file,
                            (long long)c->d_model, (long long)c->n_head);
    int64_t head_dim;
    TRY(cg_json_opt_int(root, "head_dim", file, c->d_model / c->n_head, &head_dim));
    if (head_dim != c->d_model / c->n_head)
        return cg_set_error(CG_ERR_FORMAT, "%s: head_dim %lld differs from hidden_size / num_attention_heads = %lld "
                            "(not supported)", file, (long long)head_dim, (long long)(c->d_model / c->n_head));
    if (qwen2) {
        bool sliding;
        TRY(cg_json_opt_bool(root, "use_sliding_window", file, false, &sliding));
        if (sliding)
            return cg_set_error(CG_ERR_FORMAT, "%s: use_sliding_window true is not supported", file);
        c->qkv_bias = true;
    } else {
        bool attention_bias, mlp_bias;
        TRY(cg_json_opt_bool(root, "attention_bias", file, false, &attention_bias));
        TRY(cg_json_opt_bool(root, "mlp_bias", file, false, &mlp_bias));
        if (attention_bias || mlp_bias)
            return cg_set_error(CG_ERR_FORMAT, "%s: %s true is not supported (Llama puts that bias on %s as well; "
                                "this model has q/k/v biases only, as Qwen2 does)", file,
                                attention_bias ? "attention_bias" : "mlp_bias",
                                attention_bias ? "o_proj" : "every MLP projection");
        c->qkv_bias = false;
    }
    return parse_rope_scaling(root, file, c);
}

static cg_status config_from_json(const cJSON *root, const char *file, cg_model_config *c) {
    if (!cJSON_IsObject(root))
        return cg_set_error(CG_ERR_FORMAT, "%s: the config is a JSON %s, expected an object", file,
                            cg_json_type_name(root));
    TRY(cg_json_check_unique_keys(root, file));
    const char *type;
    TRY(cg_json_get_string(root, "model_type", file, &type));
    memset(c, 0, sizeof *c);
    snprintf(c->name, sizeof c->name, "custom");
    if (strcmp(type, "gpt2") == 0) TRY(parse_gpt2(root, file, c));
    else if (strcmp(type, "llama") == 0 || strcmp(type, "qwen2") == 0) TRY(parse_llama(root, file, type[0] == 'q', c));
    else
        return cg_set_error(CG_ERR_FORMAT, "%s: model_type '%s' is not supported (supported: gpt2, llama, qwen2)",
                            file, type);
    TRY(opt_pos_int(root, "padded_vocab_size", file, c->vocab_size, &c->padded_vocab_size));
    if (c->padded_vocab_size < c->vocab_size)
        return cg_set_error(CG_ERR_FORMAT, "%s: padded_vocab_size %lld is smaller than vocab_size %lld", file,
                            (long long)c->padded_vocab_size, (long long)c->vocab_size);
    double std;
    TRY(cg_json_opt_double(root, "initializer_range", file, 0.02, &std));
    c->init_std = (float)std;
    if (cg_model_config_validate(c) != CG_OK) {
        /* an inconsistent file is a format error, whatever the validator calls it */
        char msg[512];
        snprintf(msg, sizeof msg, "%s", cg_last_error());
        return cg_set_error(CG_ERR_FORMAT, "%s: %s", file, msg);
    }
    return CG_OK;
}

cg_status cg_model_config_from_hf(const char *path, cg_model_config *out) {
    if (!path || !out) return cg_set_error(CG_ERR_INVALID_ARG, "model_config_from_hf: NULL argument");
    char file[4096];
    size_t n = strlen(path);
    bool json_file = n >= 5 && strcmp(path + n - 5, ".json") == 0 && !is_directory(path);
    if (!json_file) snprintf(file, sizeof file, "%s/config.json", path);
    else snprintf(file, sizeof file, "%s", path);
    cJSON *root = NULL;
    cg_status s = cg_json_read_file(file, &root);
    if (s != CG_OK) return s;
    cg_model_config c;
    s = config_from_json(root, file, &c);
    cJSON_Delete(root);
    if (s == CG_OK) *out = c;
    return s;
}

#else

cg_status cg_model_config_from_hf(const char *path, cg_model_config *out) {
    (void)out;
    return cg_set_error(CG_ERR_UNSUPPORTED, "%s: reading config.json needs cJSON, which this build left out",
                        path ? path : "config.json");
}

#endif

/* ------------------------------------------------------------------ config -> config.json */

typedef struct textbuf {
    char *p;
    size_t len, cap;
    bool oom;
} textbuf;

static void tb_printf(textbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void tb_printf(textbuf *b, const char *fmt, ...) {
    if (b->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = true;
            return;
        }
        if (b->p && b->len + (size_t)n < b->cap) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap ? b->cap : 1024;
        while (cap <= b->len + (size_t)n) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
}

/* The shortest %g form that reads back as the same float (1e-05, not 9.99999975e-06). */
static const char *float_text(float v, char *buf, size_t n) {
    for (int prec = 6; prec <= 9; prec++) {
        snprintf(buf, n, "%.*g", prec, (double)v);
        if (strtof(buf, NULL) == v) break;
    }
    return buf;
}

cg_status cg_model_config_to_hf_json(const cg_model_config *c, cg_dtype dtype, char **json) {
    if (!c || !json) return cg_set_error(CG_ERR_INVALID_ARG, "model_config_to_hf_json: NULL argument");
    *json = NULL;
    cg_status s = cg_model_config_validate(c);
    if (s != CG_OK) return s;
    if (dtype != CG_F32 && dtype != CG_BF16)
        return cg_set_error(CG_ERR_DTYPE, "model_config_to_hf_json: dtype %s (checkpoints are f32 or bf16)",
                            cg_dtype_name(dtype));
    if (!isfinite(c->rope_theta) || !isfinite(c->init_std) || !isfinite(c->rope_scaling_factor) ||
        !isfinite(c->rope_low_freq_factor) || !isfinite(c->rope_high_freq_factor))
        return cg_set_error(CG_ERR_INVALID_ARG, "model_config_to_hf_json: a non-finite rope or init setting");
    const char *torch_dtype = dtype == CG_BF16 ? "bfloat16" : "float32";
    const char *tie = c->tie_embeddings ? "true" : "false";
    char f1[32], f2[32], f3[32];
    textbuf b = {0};
    if (c->arch == CG_ARCH_GPT2) {
        tb_printf(&b,
                  "{\n  \"architectures\": [\"GPT2LMHeadModel\"],\n  \"model_type\": \"gpt2\",\n"
                  "  \"vocab_size\": %lld,\n  \"n_positions\": %lld,\n  \"n_ctx\": %lld,\n  \"n_embd\": %lld,\n"
                  "  \"n_layer\": %lld,\n  \"n_head\": %lld,\n  \"n_inner\": %lld,\n"
                  "  \"activation_function\": \"gelu_new\",\n  \"layer_norm_epsilon\": %s,\n"
                  "  \"initializer_range\": %s,\n  \"resid_pdrop\": 0.0,\n  \"embd_pdrop\": 0.0,\n"
                  "  \"attn_pdrop\": 0.0,\n  \"tie_word_embeddings\": %s,\n",
                  (long long)c->vocab_size, (long long)c->max_seq_len, (long long)c->max_seq_len,
                  (long long)c->d_model, (long long)c->n_layer, (long long)c->n_head, (long long)c->d_ff,
                  float_text(c->norm_eps, f1, sizeof f1), float_text(c->init_std, f2, sizeof f2), tie);
    } else {
        bool qwen2 = c->qkv_bias;
        tb_printf(&b,
                  "{\n  \"architectures\": [\"%s\"],\n  \"model_type\": \"%s\",\n  \"vocab_size\": %lld,\n"
                  "  \"hidden_size\": %lld,\n  \"intermediate_size\": %lld,\n  \"num_hidden_layers\": %lld,\n"
                  "  \"num_attention_heads\": %lld,\n  \"num_key_value_heads\": %lld,\n  \"head_dim\": %lld,\n"
                  "  \"max_position_embeddings\": %lld,\n  \"rms_norm_eps\": %s,\n  \"rope_theta\": %s,\n"
                  "  \"hidden_act\": \"silu\",\n  \"initializer_range\": %s,\n  \"attention_dropout\": 0.0,\n"
                  "  \"tie_word_embeddings\": %s,\n",
                  qwen2 ? "Qwen2ForCausalLM" : "LlamaForCausalLM", qwen2 ? "qwen2" : "llama",
                  (long long)c->vocab_size, (long long)c->d_model, (long long)c->d_ff, (long long)c->n_layer,
                  (long long)c->n_head, (long long)c->n_kv_head, (long long)cg_model_head_dim(c),
                  (long long)c->max_seq_len, float_text(c->norm_eps, f1, sizeof f1),
                  float_text(c->rope_theta, f2, sizeof f2), float_text(c->init_std, f3, sizeof f3), tie);
        if (qwen2)
            tb_printf(&b, "  \"use_sliding_window\": false,\n  \"sliding_window\": %lld,\n  \"max_window_layers\": %lld,\n",
                      (long long)c->max_seq_len, (long long)c->n_layer);
        else
            tb_printf(&b, "  \"attention_bias\": false,\n  \"mlp_bias\": false,\n");
        if (c->rope_scaling_factor > 0.0f)
            tb_printf(&b,
                      "  \"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": %s, \"low_freq_factor\": %s, "
                      "\"high_freq_factor\": %s, \"original_max_position_embeddings\": %lld},\n",
                      float_text(c->rope_scaling_factor, f1, sizeof f1),
                      float_text(c->rope_low_freq_factor, f2, sizeof f2),
                      float_text(c->rope_high_freq_factor, f3, sizeof f3), (long long)c->rope_original_max_pos);
        else
            tb_printf(&b, "  \"rope_scaling\": null,\n");
    }
    if (c->padded_vocab_size != c->vocab_size)
        tb_printf(&b, "  \"padded_vocab_size\": %lld,\n", (long long)c->padded_vocab_size);
    tb_printf(&b, "  \"use_cache\": true,\n  \"torch_dtype\": \"%s\"\n}\n", torch_dtype);
    if (b.oom) {
        free(b.p);
        return cg_set_error(CG_ERR_OOM, "model_config_to_hf_json: out of memory");
    }
    *json = b.p;
    return CG_OK;
}

/* ------------------------------------------------------------------ load: which format */

cg_status cg_model_create_blank(const cg_model_config *cfg, cg_device device, cg_model **out) {
    if (!cfg) return cg_set_error(CG_ERR_INVALID_ARG, "model_create_blank: NULL config");
    cg_model_config zero = *cfg;
    zero.init_std = 0.0f; /* the model fills N(0, 0) with zeros, drawing no random numbers */
    cg_status s = cg_model_create(&zero, device, 0, out);
    if (s == CG_OK) (*out)->cfg.init_std = cfg->init_std;
    return s;
}

cg_status cg_model_load(const char *path, cg_device device, cg_model **out) {
    if (!path || !out) return cg_set_error(CG_ERR_INVALID_ARG, "model_load: NULL argument");
    *out = NULL;
    char dir[4096];
    if (is_directory(path)) {
        snprintf(dir, sizeof dir, "%s", path);
    } else if (has_basename(path, "config.json")) {
        const char *slash = strrchr(path, '/');
        if (!slash) snprintf(dir, sizeof dir, ".");
        else snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    } else {
        struct stat sb;
        if (stat(path, &sb) != 0)
            return cg_set_error(CG_ERR_IO, "model_load: %s: no such file or directory (expected a Hugging Face model "
                                "directory or an llm.c .bin checkpoint)", path);
        if (strlen(path) > 12 && strcmp(path + strlen(path) - 12, ".safetensors") == 0)
            return cg_set_error(CG_ERR_INVALID_ARG, "model_load: %s is a weight file; pass the directory that holds "
                                "it and its config.json", path);
        return cg_model_load_llmc(path, device, out);
    }
    cg_model_config cfg;
    cg_status s = cg_model_config_from_hf(dir, &cfg);
    if (s != CG_OK) return s;
    cg_model *m = NULL;
    s = cg_model_create_blank(&cfg, device, &m);
    if (s != CG_OK) return s;
    s = cg_model_load_hf_weights(m, dir);
    if (s != CG_OK) {
        cg_model_free(m);
        return s;
    }
    *out = m;
    return CG_OK;
}
