/* The transformer: config presets, parameter allocation and init, and the forward pass (GPT-2 and
 * Llama/Qwen2 families), with an optional KV cache for generation. */
#include "models/model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/ops_decode.h"
#include "core/context.h"
#include "core/ops_common.h"

/* ------------------------------------------------------------------ presets */

typedef struct preset {
    const char *name;
    cg_model_config cfg;
} preset;

#define GPT2(NAME, L, C, H)                                                                                     \
    {NAME,                                                                                                      \
     {.arch = CG_ARCH_GPT2, .vocab_size = 50257, .padded_vocab_size = 50304, .n_layer = L, .n_head = H,         \
      .n_kv_head = H, .d_model = C, .d_ff = 4 * (C), .max_seq_len = 1024, .norm_eps = 1e-5f, .qkv_bias = true,   \
      .tie_embeddings = true, .init_std = 0.02f}}

static const preset presets[] = {
    GPT2("gpt2:d2", 2, 128, 2),
    GPT2("gpt2:d4", 4, 256, 4),
    GPT2("gpt2:d6", 6, 384, 6),
    GPT2("gpt2:d12", 12, 768, 12),
    GPT2("gpt2:d24", 24, 1024, 16),
    GPT2("gpt2:d36", 36, 1280, 20),
    GPT2("gpt2:d48", 48, 1600, 25),
    {"gpt2:tiny",
     {.arch = CG_ARCH_GPT2, .vocab_size = 64, .padded_vocab_size = 64, .n_layer = 2, .n_head = 4, .n_kv_head = 4,
      .d_model = 64, .d_ff = 256, .max_seq_len = 128, .norm_eps = 1e-5f, .qkv_bias = true, .tie_embeddings = true,
      .init_std = 0.02f}},
    {"llama:tiny",
     {.arch = CG_ARCH_LLAMA, .vocab_size = 64, .padded_vocab_size = 64, .n_layer = 2, .n_head = 4, .n_kv_head = 2,
      .d_model = 64, .d_ff = 176, .max_seq_len = 256, .norm_eps = 1e-6f, .rope_theta = 10000.0f, .qkv_bias = false,
      .tie_embeddings = false, .init_std = 0.02f}},
    {"qwen2.5-0.5b",
     {.arch = CG_ARCH_LLAMA, .vocab_size = 151936, .padded_vocab_size = 151936, .n_layer = 24, .n_head = 14,
      .n_kv_head = 2, .d_model = 896, .d_ff = 4864, .max_seq_len = 32768, .norm_eps = 1e-6f, .rope_theta = 1e6f,
      .qkv_bias = true, .tie_embeddings = true, .init_std = 0.02f}},
    {"qwen2.5-1.5b",
     {.arch = CG_ARCH_LLAMA, .vocab_size = 151936, .padded_vocab_size = 151936, .n_layer = 28, .n_head = 12,
      .n_kv_head = 2, .d_model = 1536, .d_ff = 8960, .max_seq_len = 32768, .norm_eps = 1e-6f, .rope_theta = 1e6f,
      .qkv_bias = true, .tie_embeddings = true, .init_std = 0.02f}},
    {"llama3.2-1b",
     {.arch = CG_ARCH_LLAMA, .vocab_size = 128256, .padded_vocab_size = 128256, .n_layer = 16, .n_head = 32,
      .n_kv_head = 8, .d_model = 2048, .d_ff = 8192, .max_seq_len = 131072, .norm_eps = 1e-5f,
      .rope_theta = 500000.0f, .rope_scaling_factor = 32.0f, .rope_low_freq_factor = 1.0f,
      .rope_high_freq_factor = 4.0f, .rope_original_max_pos = 8192, .qkv_bias = false, .tie_embeddings = true,
      .init_std = 0.02f}},
};
static const int n_presets = (int)(sizeof presets / sizeof presets[0]);

int cg_model_preset_count(void) { return n_presets; }

const char *cg_model_preset_name(int i) { return i >= 0 && i < n_presets ? presets[i].name : NULL; }

cg_status cg_model_config_preset(const char *name, cg_model_config *out) {
    if (!name || !out) return cg_set_error(CG_ERR_INVALID_ARG, "model preset: NULL argument");
    for (int i = 0; i < n_presets; i++) {
        if (strcmp(presets[i].name, name) == 0) {
            *out = presets[i].cfg;
            snprintf(out->name, sizeof out->name, "%s", name);
            return CG_OK;
        }
    }
    char list[512];
    size_t pos = 0;
    for (int i = 0; i < n_presets && pos < sizeof list; i++)
        pos += (size_t)snprintf(list + pos, sizeof list - pos, i ? ", %s" : "%s", presets[i].name);
    return cg_set_error(CG_ERR_INVALID_ARG, "unknown model preset '%s' (presets: %s)", name, list);
}

cg_status cg_model_config_validate(const cg_model_config *c) {
    if (!c) return cg_set_error(CG_ERR_INVALID_ARG, "model config: NULL");
    const char *n = c->name[0] ? c->name : "model config";
    if (c->arch != CG_ARCH_GPT2 && c->arch != CG_ARCH_LLAMA)
        return cg_set_error(CG_ERR_INVALID_ARG, "%s: unknown architecture %d", n, (int)c->arch);
    if (c->vocab_size <= 0 || c->padded_vocab_size < c->vocab_size)
        return cg_set_error(CG_ERR_INVALID_ARG, "%s: vocab_size %lld and padded_vocab_size %lld (need 0 < vocab <= "
                            "padded)", n, (long long)c->vocab_size, (long long)c->padded_vocab_size);
    if (c->n_layer <= 0 || c->n_head <= 0 || c->d_model <= 0 || c->d_ff <= 0 || c->max_seq_len <= 0)
        return cg_set_error(CG_ERR_INVALID_ARG, "%s: n_layer %lld, n_head %lld, d_model %lld, d_ff %lld and "
                            "max_seq_len %lld must all be positive", n, (long long)c->n_layer, (long long)c->n_head,
                            (long long)c->d_model, (long long)c->d_ff, (long long)c->max_seq_len);
    if (c->d_model % c->n_head != 0)
        return cg_set_error(CG_ERR_INVALID_ARG, "%s: d_model %lld is not a multiple of n_head %lld", n,
                            (long long)c->d_model, (long long)c->n_head);
    if (c->n_kv_head <= 0 || c->n_head % c->n_kv_head != 0)
        return cg_set_error(CG_ERR_INVALID_ARG, "%s: n_head %lld is not a multiple of n_kv_head %lld", n,
                            (long long)c->n_head, (long long)c->n_kv_head);
    if (c->arch == CG_ARCH_GPT2 && c->n_kv_head != c->n_head)
        return cg_set_error(CG_ERR_INVALID_ARG, "%s: GPT-2 has no grouped-query attention (n_kv_head %lld != n_head "
                            "%lld)", n, (long long)c->n_kv_head, (long long)c->n_head);
    if (c->arch == CG_ARCH_LLAMA && (cg_model_head_dim(c) % 2 != 0 || !(c->rope_theta > 0.0f)))
        return cg_set_error(CG_ERR_INVALID_ARG, "%s: RoPE needs an even head dim (%lld) and rope_theta > 0 (%g)", n,
                            (long long)cg_model_head_dim(c), (double)c->rope_theta);
    if (!(c->norm_eps > 0.0f) || !(c->init_std >= 0.0f))
        return cg_set_error(CG_ERR_INVALID_ARG, "%s: norm_eps (%g) must be > 0 and init_std (%g) >= 0", n,
                            (double)c->norm_eps, (double)c->init_std);
    return CG_OK;
}

/* ------------------------------------------------------------------ parameters */

/* ------------------------------------------------------------------ mixed precision */

/* Gives p its bf16 working copy (in the model's arena) if it has none, and fills it from the master. */
static cg_status make_working_copy(cg_model *m, cg_named_param *p) {
    if (!p->working) {
        p->working = cg_tensor_empty(m->arena, CG_BF16, p->tensor->ndim, p->tensor->shape);
        if (!p->working) return cg_error_context("model: bf16 working copy of %s: ", p->name);
    }
    cg_status s = cg_copy(p->working, p->tensor);
    return s == CG_OK ? CG_OK : cg_error_context("model: bf16 working copy of %s: ", p->name);
}

cg_status cg_model_set_compute_dtype(cg_model *m, cg_dtype dtype) {
    if (!m) return cg_set_error(CG_ERR_INVALID_ARG, "model_set_compute_dtype: NULL model");
    if (dtype != CG_F32 && dtype != CG_BF16)
        return cg_set_error(CG_ERR_DTYPE, "model_set_compute_dtype: %s is not a compute dtype (f32 or bf16)",
                            cg_dtype_name(dtype));
    if (dtype == CG_BF16 && m->device.type != CG_DEVICE_CUDA)
        return cg_set_error(CG_ERR_UNSUPPORTED, "model_set_compute_dtype: bf16 compute needs a CUDA model; %s is on "
                            "the CPU, which computes in f32", m->cfg.name[0] ? m->cfg.name : "the model");
    if (dtype == CG_BF16) {
        for (int i = 0; i < m->n_params; i++) {
            cg_status s = make_working_copy(m, &m->params[i]);
            if (s != CG_OK) return s;
        }
    }
    m->compute_dtype = dtype;
    return CG_OK;
}

cg_dtype cg_model_compute_dtype(const cg_model *m) { return m ? m->compute_dtype : CG_F32; }

cg_tensor *cg_model_working_copy(const cg_model *m, const cg_tensor *param) {
    if (!m || !param || m->compute_dtype != CG_BF16) return NULL;
    for (int i = 0; i < m->n_params; i++)
        if (m->params[i].tensor == param) return m->params[i].working;
    return NULL;
}

cg_status cg_model_refresh_working_copies(cg_model *m) {
    if (!m) return cg_set_error(CG_ERR_INVALID_ARG, "model_refresh_working_copies: NULL model");
    if (m->compute_dtype != CG_BF16) return CG_OK;
    for (int i = 0; i < m->n_params; i++) {
        cg_status s = make_working_copy(m, &m->params[i]);
        if (s != CG_OK) return s;
    }
    return CG_OK;
}

cg_tensor *cg_model_weight(const cg_model *m, const cg_tensor *p) {
    if (!p) return NULL;
    cg_tensor *w = cg_model_working_copy(m, p);
    return w ? cg_working_weight(p, w) : (cg_tensor *)p;
}

cg_status cg_model_add_param(cg_model *m, const char *name, cg_tensor *t, bool adapter) {
    if (m->n_params == m->cap_params) {
        int cap = m->cap_params ? 2 * m->cap_params : 64;
        cg_named_param *p = realloc(m->params, sizeof *p * (size_t)cap);
        if (!p) return cg_set_error(CG_ERR_OOM, "model: out of memory listing parameters");
        m->params = p;
        m->cap_params = cap;
    }
    size_t len = strlen(name) + 1;
    char *copy = cg_arena_alloc_meta(m->arena, len);
    if (!copy) return cg_last_status();
    memcpy(copy, name, len);
    t->name = copy;
    m->params[m->n_params++] = (cg_named_param){copy, t, adapter, NULL};
    /* registered while the model computes in bf16 (a LoRA adapter attached later): its copy now */
    if (m->compute_dtype == CG_BF16) return make_working_copy(m, &m->params[m->n_params - 1]);
    return CG_OK;
}

cg_tensor *cg_model_find_param(const cg_model *m, const char *name) {
    for (int i = 0; i < m->n_params; i++)
        if (strcmp(m->params[i].name, name) == 0) return m->params[i].tensor;
    return NULL;
}

int64_t cg_model_num_elements(const cg_model *m) {
    int64_t n = 0;
    for (int i = 0; i < m->n_params; i++)
        if (!m->params[i].adapter) n += cg_numel(m->params[i].tensor);
    return n;
}

int cg_model_trainable(const cg_model *m, cg_tensor **out, int cap) {
    int n = 0;
    for (int i = 0; i < m->n_params; i++) {
        if (!m->params[i].tensor->requires_grad) continue;
        if (out && n < cap) out[n] = m->params[i].tensor;
        n++;
    }
    return n;
}

cg_status cg_model_alloc_grads(cg_model *m) {
    for (int i = 0; i < m->n_params; i++) {
        cg_tensor *t = m->params[i].tensor;
        if (t->requires_grad && !t->grad) {
            cg_status s = cg_alloc_grad(t, m->arena);
            if (s != CG_OK) return cg_error_context("model: gradient of %s: ", m->params[i].name);
        }
    }
    return CG_OK;
}

void cg_model_set_base_trainable(cg_model *m, bool trainable) {
    for (int i = 0; i < m->n_params; i++)
        if (!m->params[i].adapter) m->params[i].tensor->requires_grad = trainable;
}

/* A parameter: allocated in the model's arena, filled by init ('n' normal(0, std), '1' ones, '0' zeros) and
 * registered under its name. Its gradient buffer comes later, only if it trains (cg_model_alloc_grads). */
static cg_tensor *new_param(cg_model *m, cg_rng *rng, const char *name, int nd, const int64_t *shape, char init,
                            float std) {
    cg_tensor *t = cg_tensor_empty(m->arena, CG_F32, nd, shape);
    if (!t) return NULL;
    /* N(0, 0) is all zeros: filled directly, so that loaders (which create with init_std 0 and overwrite
     * every parameter) skip drawing random numbers for the whole model */
    cg_status s = init == 'n' && std > 0.0f ? cg_rng_normal(rng, t, 0.0f, std) : cg_fill(t, init == '1' ? 1.0 : 0.0);
    if (s == CG_OK) s = cg_set_requires_grad(t, true);
    if (s == CG_OK) s = cg_model_add_param(m, name, t, false);
    return s == CG_OK ? t : NULL;
}

static bool new_linear(cg_model *m, cg_rng *rng, cg_linear_module *mod, const char *name, int64_t out, int64_t in,
                       bool bias, float std) {
    char buf[128];
    snprintf(mod->name, sizeof mod->name, "%s", name);
    int64_t ws[2] = {out, in};
    snprintf(buf, sizeof buf, "%s.weight", name);
    if (!(mod->weight = new_param(m, rng, buf, 2, ws, 'n', std))) return false;
    if (bias) {
        snprintf(buf, sizeof buf, "%s.bias", name);
        if (!(mod->bias = new_param(m, rng, buf, 1, &out, '0', 0))) return false;
    }
    return true;
}

int64_t cg_model_config_num_elements(const cg_model_config *c) {
    int64_t C = c->d_model, D = cg_model_head_dim(c), F = c->d_ff, L = c->n_layer;
    int64_t per_layer = c->arch == CG_ARCH_GPT2 ? (4 * C + 3 * C * C + 3 * C + C * C + C + 2 * C * F + F + C)
                                                : (2 * C + C * c->n_head * D + 2 * C * c->n_kv_head * D +
                                                   (c->qkv_bias ? (c->n_head + 2 * c->n_kv_head) * D : 0) +
                                                   c->n_head * D * C + 3 * C * F);
    return L * per_layer + c->padded_vocab_size * C * (c->tie_embeddings ? 1 : 2) +
           (c->arch == CG_ARCH_GPT2 ? 2 * C + c->max_seq_len * C : C);
}

/* Bytes the parameters take, plus slack for alignment: the first chunk of the model's arena. Gradients, when
 * a training loop asks for them, go into a second chunk of the same size. */
static size_t param_bytes(const cg_model_config *c) {
    return (size_t)cg_model_config_num_elements(c) * 4 + (size_t)(c->n_layer * 40 + 16) * 128;
}

cg_status cg_model_create(const cg_model_config *cfg, cg_device device, uint64_t seed, cg_model **out) {
    cg_status s = cg_model_config_validate(cfg);
    if (s != CG_OK) return s;
    if (!out) return cg_set_error(CG_ERR_INVALID_ARG, "model_create: NULL output");
    cg_model *m = calloc(1, sizeof *m);
    if (!m) return cg_set_error(CG_ERR_OOM, "model_create: out of host memory");
    m->cfg = *cfg;
    m->device = device;
    m->lora_enabled = true;
    m->lora_rng = cg_rng_fork(&(cg_rng){seed, 0, 0}, 0x10ba);
    m->arena = cg_arena_create("model", device, param_bytes(cfg));
    m->blocks = calloc((size_t)cfg->n_layer, sizeof *m->blocks);
    if (!m->arena || !m->blocks) {
        cg_model_free(m);
        return cg_last_status() != CG_OK ? cg_last_status() : cg_set_error(CG_ERR_OOM, "model_create: out of memory");
    }
    cg_rng rng = cg_rng_init(seed);
    const cg_model_config *c = cfg;
    int64_t C = c->d_model, D = cg_model_head_dim(c), F = c->d_ff, V = c->padded_vocab_size;
    float std = c->init_std, resid_std = c->init_std / sqrtf(2.0f * (float)c->n_layer);
    bool gpt2 = c->arch == CG_ARCH_GPT2;
    char name[128];
    const char *pre = gpt2 ? "" : "model.";
    int64_t es[2] = {V, C};
    snprintf(name, sizeof name, "%s%s", pre, gpt2 ? "wte.weight" : "embed_tokens.weight");
    bool ok = (m->wte = new_param(m, &rng, name, 2, es, 'n', std)) != NULL;
    if (ok && gpt2) {
        int64_t ps[2] = {c->max_seq_len, C};
        ok = (m->wpe = new_param(m, &rng, "wpe.weight", 2, ps, 'n', std)) != NULL;
    }
    for (int64_t l = 0; ok && l < c->n_layer; l++) {
        cg_block *b = &m->blocks[l];
        char p[64];
        if (gpt2) {
            snprintf(p, sizeof p, "h.%lld", (long long)l);
            snprintf(name, sizeof name, "%s.ln_1.weight", p);
            ok = ok && (b->norm1_w = new_param(m, &rng, name, 1, &C, '1', 0));
            snprintf(name, sizeof name, "%s.ln_1.bias", p);
            ok = ok && (b->norm1_b = new_param(m, &rng, name, 1, &C, '0', 0));
            snprintf(name, sizeof name, "%s.attn.c_attn", p);
            ok = ok && new_linear(m, &rng, &b->qkv, name, 3 * C, C, true, std);
            snprintf(name, sizeof name, "%s.attn.c_proj", p);
            ok = ok && new_linear(m, &rng, &b->o, name, C, C, true, resid_std);
            snprintf(name, sizeof name, "%s.ln_2.weight", p);
            ok = ok && (b->norm2_w = new_param(m, &rng, name, 1, &C, '1', 0));
            snprintf(name, sizeof name, "%s.ln_2.bias", p);
            ok = ok && (b->norm2_b = new_param(m, &rng, name, 1, &C, '0', 0));
            snprintf(name, sizeof name, "%s.mlp.c_fc", p);
            ok = ok && new_linear(m, &rng, &b->fc, name, F, C, true, std);
            snprintf(name, sizeof name, "%s.mlp.c_proj", p);
            ok = ok && new_linear(m, &rng, &b->proj, name, C, F, true, resid_std);
        } else {
            snprintf(p, sizeof p, "model.layers.%lld", (long long)l);
            snprintf(name, sizeof name, "%s.input_layernorm.weight", p);
            ok = ok && (b->norm1_w = new_param(m, &rng, name, 1, &C, '1', 0));
            snprintf(name, sizeof name, "%s.self_attn.q_proj", p);
            ok = ok && new_linear(m, &rng, &b->q, name, c->n_head * D, C, c->qkv_bias, std);
            snprintf(name, sizeof name, "%s.self_attn.k_proj", p);
            ok = ok && new_linear(m, &rng, &b->k, name, c->n_kv_head * D, C, c->qkv_bias, std);
            snprintf(name, sizeof name, "%s.self_attn.v_proj", p);
            ok = ok && new_linear(m, &rng, &b->v, name, c->n_kv_head * D, C, c->qkv_bias, std);
            snprintf(name, sizeof name, "%s.self_attn.o_proj", p);
            ok = ok && new_linear(m, &rng, &b->o, name, C, c->n_head * D, false, resid_std);
            snprintf(name, sizeof name, "%s.post_attention_layernorm.weight", p);
            ok = ok && (b->norm2_w = new_param(m, &rng, name, 1, &C, '1', 0));
            snprintf(name, sizeof name, "%s.mlp.gate_proj", p);
            ok = ok && new_linear(m, &rng, &b->gate, name, F, C, false, std);
            snprintf(name, sizeof name, "%s.mlp.up_proj", p);
            ok = ok && new_linear(m, &rng, &b->up, name, F, C, false, std);
            snprintf(name, sizeof name, "%s.mlp.down_proj", p);
            ok = ok && new_linear(m, &rng, &b->down, name, C, F, false, resid_std);
        }
    }
    if (ok) {
        snprintf(name, sizeof name, "%s", gpt2 ? "ln_f.weight" : "model.norm.weight");
        ok = (m->norm_f_w = new_param(m, &rng, name, 1, &C, '1', 0)) != NULL;
    }
    if (ok && gpt2) ok = (m->norm_f_b = new_param(m, &rng, "ln_f.bias", 1, &C, '0', 0)) != NULL;
    if (ok && !c->tie_embeddings) ok = (m->lm_head = new_param(m, &rng, "lm_head.weight", 2, es, 'n', std)) != NULL;
    /* rows past the real vocabulary stay zero: they never become logits */
    if (ok && V > c->vocab_size) {
        cg_tensor *pad = cg_view_slice(m->wte, 0, c->vocab_size, V, 1);
        ok = pad && cg_fill(pad, 0.0) == CG_OK;
        if (ok && m->lm_head) {
            pad = cg_view_slice(m->lm_head, 0, c->vocab_size, V, 1);
            ok = pad && cg_fill(pad, 0.0) == CG_OK;
        }
    }
    if (!ok) {
        s = cg_error_context("model_create (%s): ", c->name[0] ? c->name : "custom");
        cg_model_free(m);
        return s;
    }
    *out = m;
    return CG_OK;
}

cg_status cg_model_copy(const cg_model *m, cg_model **out) {
    if (!m || !out) return cg_set_error(CG_ERR_INVALID_ARG, "model_copy: NULL argument");
    cg_model_config cfg = m->cfg;
    cfg.init_std = 0.0f; /* every parameter is overwritten below */
    cg_model *c = NULL;
    cg_status s = cg_model_create(&cfg, m->device, 0, &c);
    for (int i = 0; s == CG_OK && i < c->n_params; i++) {
        cg_tensor *src = cg_model_find_param(m, c->params[i].name);
        s = src ? cg_copy(c->params[i].tensor, src)
                : cg_set_error(CG_ERR_INTERNAL, "model_copy: %s has no %s", m->cfg.name, c->params[i].name);
    }
    if (s != CG_OK) {
        cg_model_free(c);
        return s;
    }
    cg_model_set_base_trainable(c, false);
    c->cfg.init_std = m->cfg.init_std;
    if (s == CG_OK && m->compute_dtype != CG_F32 && (s = cg_model_set_compute_dtype(c, m->compute_dtype)) != CG_OK) {
        cg_model_free(c);
        return s;
    }
    *out = c;
    return CG_OK;
}

void cg_model_free(cg_model *m) {
    if (!m) return;
    cg_arena_destroy(m->arena);
    free(m->blocks);
    free(m->params);
    free(m);
}

/* ------------------------------------------------------------------ KV cache */

cg_status cg_kv_cache_create(const cg_model *m, int64_t batch, int64_t max_len, cg_kv_cache **out) {
    if (!m || !out || batch <= 0 || max_len <= 0)
        return cg_set_error(CG_ERR_INVALID_ARG, "kv_cache_create: needs a model, batch > 0 and max_len > 0");
    const cg_model_config *c = &m->cfg;
    int64_t D = cg_model_head_dim(c);
    size_t bytes = (size_t)(2 * c->n_layer * batch * c->n_kv_head * max_len * D) * 4 + (size_t)c->n_layer * 256 +
                   (size_t)D * sizeof(double) + 256;
    cg_kv_cache *kv = calloc(1, sizeof *kv);
    if (!kv) return cg_set_error(CG_ERR_OOM, "kv_cache_create: out of host memory");
    kv->batch = batch;
    kv->max_len = max_len;
    kv->n_layer = (int)c->n_layer;
    kv->arena = cg_arena_create("kv_cache", m->device, bytes);
    kv->k = calloc((size_t)c->n_layer, sizeof *kv->k);
    kv->v = calloc((size_t)c->n_layer, sizeof *kv->v);
    bool ok = kv->arena && kv->k && kv->v;
    int64_t shape[4] = {batch, c->n_kv_head, max_len, D};
    for (int64_t l = 0; ok && l < c->n_layer; l++)
        ok = (kv->k[l] = cg_tensor_zeros(kv->arena, m->compute_dtype, 4, shape)) &&
             (kv->v[l] = cg_tensor_zeros(kv->arena, m->compute_dtype, 4, shape));
    if (ok && m->device.type == CG_DEVICE_CUDA && c->arch == CG_ARCH_LLAMA) {
        cg_rope_config rope = {c->rope_theta, c->rope_scaling_factor, c->rope_low_freq_factor,
                               c->rope_high_freq_factor, c->rope_original_max_pos};
        ok = (kv->rope_table = cg_decode_rope_table(kv->arena, &rope, D)) != NULL;
    }
    if (!ok) {
        cg_status s = cg_last_status() != CG_OK ? cg_last_status() : cg_set_error(CG_ERR_OOM, "kv_cache_create: out of memory");
        cg_kv_cache_free(kv);
        return s;
    }
    *out = kv;
    return CG_OK;
}

void cg_kv_cache_reset(cg_kv_cache *c) {
    if (c) c->len = 0;
}

void cg_kv_cache_free(cg_kv_cache *c) {
    if (!c) return;
    cg_arena_destroy(c->arena);
    free(c->k);
    free(c->v);
    free(c);
}

/* ------------------------------------------------------------------ forward */

/* What the forward reads for parameter p (its bf16 working copy under mixed precision); NULL stays NULL. */
static cg_tensor *W(const cg_model *m, const cg_tensor *p) { return p ? cg_model_weight(m, p) : NULL; }

/* A linear layer, through its LoRA adapter when one is attached and adapters are enabled. LoRA dropout
 * applies in training only (grad mode on). */
static cg_tensor *linear_module(cg_model *m, const cg_linear_module *mod, const cg_tensor *x, bool gelu) {
    if (mod->lora_a && m->lora_enabled && !m->lora_merged) {
        float p = cg_grad_enabled() ? mod->lora_dropout : 0.0f;
        cg_tensor *w = W(m, mod->weight), *b = W(m, mod->bias), *la = W(m, mod->lora_a), *lb = W(m, mod->lora_b);
        if (!w || (mod->bias && !b) || !la || !lb) return NULL;
        cg_tensor *y = cg_lora_linear(x, w, b, la, lb, mod->lora_scale, p, &m->lora_rng);
        return gelu && y ? cg_gelu(y) : y;
    }
    cg_tensor *w = W(m, mod->weight), *b = W(m, mod->bias);
    return w && (b || !mod->bias) ? cg_linear(x, w, b, gelu) : NULL;
}

/* [B, T, H * D] -> [B, H, T, D] (a view) */
static cg_tensor *split_heads(const cg_tensor *x, int64_t B, int64_t T, int64_t H, int64_t D) {
    int64_t s[4] = {B, T, H, D};
    int perm[4] = {0, 2, 1, 3};
    cg_tensor *r = cg_reshape(x, 4, s);
    return r ? cg_permute(r, perm) : NULL;
}

/* Appends this step's keys or values [B, Hkv, T, D] to the cache and returns all of them so far. */
static cg_tensor *cache_append(cg_tensor *store, const cg_tensor *x, int64_t len, int64_t T) {
    cg_tensor *dst = cg_view_slice(store, 2, len, len + T, 1);
    if (!dst || cg_copy(dst, x) != CG_OK) return NULL;
    return cg_view_slice(store, 2, 0, len + T, 1);
}

/* Self-attention of one block: h is the normed input [B, T, C]; returns the output projection. */
static cg_tensor *attention_block(cg_model *m, int64_t l, const cg_tensor *h, const cg_tensor *positions,
                                  const cg_model_inputs *in, int64_t B, int64_t T) {
    const cg_model_config *c = &m->cfg;
    cg_block *b = &m->blocks[l];
    int64_t C = c->d_model, D = cg_model_head_dim(c), H = c->n_head, Hkv = c->n_kv_head;
    cg_tensor *q, *k, *v;
    if (c->arch == CG_ARCH_GPT2) {
        cg_tensor *qkv = linear_module(m, &b->qkv, h, false);
        if (!qkv) return NULL;
        q = split_heads(cg_slice(qkv, 2, 0, C, 1), B, T, H, D);
        k = split_heads(cg_slice(qkv, 2, C, 2 * C, 1), B, T, Hkv, D);
        v = split_heads(cg_slice(qkv, 2, 2 * C, 3 * C, 1), B, T, Hkv, D);
    } else {
        cg_rope_config rope = {c->rope_theta, c->rope_scaling_factor, c->rope_low_freq_factor,
                               c->rope_high_freq_factor, c->rope_original_max_pos};
        q = split_heads(linear_module(m, &b->q, h, false), B, T, H, D);
        k = split_heads(linear_module(m, &b->k, h, false), B, T, Hkv, D);
        if (in->cache_pos) { /* the decode step: the frequency table and positions read on the device */
            q = q ? cg_decode_rope(q, in->cache->rope_table, positions) : NULL;
            k = k ? cg_decode_rope(k, in->cache->rope_table, positions) : NULL;
        } else {
            q = cg_rope_scaled(q, &rope, 0, positions);
            k = cg_rope_scaled(k, &rope, 0, positions);
        }
        v = split_heads(linear_module(m, &b->v, h, false), B, T, Hkv, D);
    }
    if (!q || !k || !v) return NULL;
    if (in->cache_pos) { /* written at the device's column; attention reads the whole (packed) cache */
        if (cg_decode_cache_write(in->cache->k[l], k, in->cache_pos) != CG_OK ||
            cg_decode_cache_write(in->cache->v[l], v, in->cache_pos) != CG_OK)
            return NULL;
        k = in->cache->k[l];
        v = in->cache->v[l];
    } else if (in->cache) {
        k = cache_append(in->cache->k[l], k, in->cache->len, T);
        v = cache_append(in->cache->v[l], v, in->cache->len, T);
        if (!k || !v) return NULL;
    }
    cg_tensor *att = cg_attention(q, k, v, in->key_mask, 0.0f);
    int perm[4] = {0, 2, 1, 3};
    int64_t s3[3] = {B, T, H * D};
    cg_tensor *merged = att ? cg_reshape(cg_permute(att, perm), 3, s3) : NULL;
    return merged ? linear_module(m, &b->o, merged, false) : NULL;
}

/* Positions [B, T] i64: cache->len + t for every row, when the caller gives none (on the host). */
static cg_tensor *default_positions(int64_t B, int64_t T, int64_t offset) {
    int64_t s[2] = {B, T};
    cg_tensor *p = cg_tensor_empty(cg_step_arena(CG_CPU), CG_I64, 2, s);
    if (!p) return NULL;
    int64_t *d = cg_data(p);
    for (int64_t i = 0; i < B * T; i++) d[i] = offset + i % T;
    return p;
}

/* Ids (tokens or positions) on the model's device (host ones uploaded, packed, into the step arena). With
 * limit > 0 they must lie in [0, limit): checked where they live (a device check waits for its answer). */
static cg_status bad_id(const cg_model *m, const char *what, double value, int64_t index, int64_t limit) {
    if (strcmp(what, "token") == 0)
        return cg_set_error(CG_ERR_INVALID_ARG, "model_forward: token %.0f at position %lld is outside the vocabulary "
                            "[0, %lld)", value, (long long)index, (long long)limit);
    return cg_set_error(CG_ERR_INVALID_ARG, "model_forward: position %.0f is outside the %lld learned positions of %s",
                        value, (long long)limit, m->cfg.name);
}

static const cg_tensor *ids_on_device(const cg_model *m, const cg_tensor *ids, int64_t limit, const char *what) {
    char d[160];
    if (ids->dtype != CG_I32 && ids->dtype != CG_I64) {
        cg_set_error(CG_ERR_DTYPE, "model_forward: %s %s must be i32 or i64", what, cg_tensor_desc(ids, d, sizeof d));
        return NULL;
    }
    if (ids->device.type == CG_DEVICE_CPU) {
        for (int64_t i = 0; limit > 0 && i < cg_numel(ids); i++) {
            double t = cg_get_flat(ids, i);
            if (t < 0 || t >= (double)limit) {
                bad_id(m, what, t, i, limit);
                return NULL;
            }
        }
        if (m->device.type == CG_DEVICE_CPU) return ids;
        cg_arena *a = cg_step_arena(m->device);
        cg_tensor *up = a ? cg_tensor_empty(a, ids->dtype, ids->ndim, ids->shape) : NULL;
        return up && cg_copy(up, ids) == CG_OK ? up : NULL;
    }
    if (!cg_device_eq(ids->device, m->device)) {
        cg_set_error(CG_ERR_DEVICE, "model_forward: %s %s are on another device than the model %s", what,
                     cg_tensor_desc(ids, d, sizeof d), m->cfg.name);
        return NULL;
    }
    if (limit <= 0) return ids;
    int64_t value = 0, pos = -1;
    if (cg_ops_find_bad_index(ids, limit, &value, &pos) != CG_OK) return NULL;
    if (pos >= 0) {
        bad_id(m, what, (double)value, pos, limit);
        return NULL;
    }
    return ids;
}

/* The decode step's inputs (cg_model_inputs.cache_pos): everything on the model's GPU, in the layouts the
 * device-position kernels read; nothing here looks at device data. */
static bool check_decode_inputs(const cg_model *m, const cg_model_inputs *in, int64_t B, int64_t T) {
    char d[160];
    const cg_kv_cache *kv = in->cache;
    const cg_tensor *pos = in->positions, *mask = in->key_mask, *cp = in->cache_pos;
    if (m->device.type != CG_DEVICE_CUDA || !kv) {
        cg_set_error(CG_ERR_INVALID_ARG, "model_forward: cache_pos (the decode step) needs a CUDA model and a KV cache");
        return false;
    }
    if (T > kv->max_len || (m->cfg.arch == CG_ARCH_LLAMA && !kv->rope_table)) {
        cg_set_error(CG_ERR_INVALID_ARG, "model_forward: decode step of %lld tokens on a cache of %lld columns%s",
                     (long long)T, (long long)kv->max_len, kv->rope_table ? "" : " without its RoPE table");
        return false;
    }
    const cg_tensor *need[4] = {in->tokens, pos, mask, cp};
    const char *names[4] = {"tokens", "positions", "key_mask", "cache_pos"};
    for (int i = 0; i < 4; i++) {
        if (!need[i] || !cg_device_eq(need[i]->device, m->device) || !cg_is_contiguous(need[i])) {
            cg_set_error(CG_ERR_INVALID_ARG, "model_forward: the decode step needs packed %s on the model's device%s%s",
                         names[i], need[i] ? ", got " : " (NULL)", need[i] ? cg_tensor_desc(need[i], d, sizeof d) : "");
            return false;
        }
    }
    if (pos->dtype != CG_I64 || pos->ndim != 2 || pos->shape[0] != B || pos->shape[1] != T) {
        cg_set_error(CG_ERR_SHAPE, "model_forward: decode positions %s must be i64 [%lld, %lld]",
                     cg_tensor_desc(pos, d, sizeof d), (long long)B, (long long)T);
        return false;
    }
    if (mask->dtype != CG_U8 || mask->ndim != 2 || mask->shape[0] != B || mask->shape[1] != kv->max_len) {
        cg_set_error(CG_ERR_SHAPE, "model_forward: decode key_mask %s must be u8 [%lld, %lld] (the whole cache)",
                     cg_tensor_desc(mask, d, sizeof d), (long long)B, (long long)kv->max_len);
        return false;
    }
    if (cp->dtype != CG_I64 || cg_numel(cp) != 1) {
        cg_set_error(CG_ERR_SHAPE, "model_forward: cache_pos %s must be one i64", cg_tensor_desc(cp, d, sizeof d));
        return false;
    }
    return true;
}

cg_tensor *cg_model_forward(cg_model *m, const cg_model_inputs *in) {
    char d[160];
    if (!m || !in || !in->tokens) {
        cg_set_error(CG_ERR_INVALID_ARG, "model_forward: NULL model, inputs or tokens");
        return NULL;
    }
    const cg_model_config *c = &m->cfg;
    const cg_tensor *tok = in->tokens;
    if (tok->ndim != 2 || (tok->dtype != CG_I32 && tok->dtype != CG_I64)) {
        cg_set_error(CG_ERR_SHAPE, "model_forward: tokens %s must be [B, T] of i32 or i64", cg_tensor_desc(tok, d, sizeof d));
        return NULL;
    }
    int64_t B = tok->shape[0], T = tok->shape[1];
    int64_t offset = in->cache ? in->cache->len : 0;
    if (in->cache) {
        if (cg_grad_enabled()) {
            cg_set_error(CG_ERR_INVALID_ARG, "model_forward: the KV cache is for inference; call it between "
                         "cg_no_grad_enter() and cg_no_grad_exit()");
            return NULL;
        }
        if (in->cache->batch != B || (!in->cache_pos && offset + T > in->cache->max_len)) {
            cg_set_error(CG_ERR_SHAPE, "model_forward: %lld x %lld new tokens do not fit the KV cache (batch %lld, %lld "
                         "of %lld positions used)", (long long)B, (long long)T, (long long)in->cache->batch,
                         (long long)offset, (long long)in->cache->max_len);
            return NULL;
        }
    }
    const cg_tensor *positions = in->positions;
    bool gpt2 = c->arch == CG_ARCH_GPT2;
    cg_tensor *x;
    if (in->cache_pos) {
        if (!check_decode_inputs(m, in, B, T)) return NULL;
        x = cg_decode_embedding(W(m, m->wte), tok);
        if (x && gpt2) x = cg_add(x, cg_decode_embedding(W(m, m->wpe), positions));
    } else {
        if (!positions && !(positions = default_positions(B, T, offset))) return NULL;
        /* token ids past the real vocabulary are an error (the embedding checks only against the padded
         * size); GPT-2's positions must have an embedding (RoPE positions are free) */
        if (!(tok = ids_on_device(m, tok, c->vocab_size, "token"))) return NULL;
        if (!(positions = ids_on_device(m, positions, gpt2 ? c->max_seq_len : 0, "position"))) return NULL;
        x = cg_embedding(W(m, m->wte), tok);
        if (x && gpt2) x = cg_add(x, cg_embedding(W(m, m->wpe), positions));
    }
    if (!x) return NULL;
    for (int64_t l = 0; l < c->n_layer && x; l++) {
        cg_block *b = &m->blocks[l];
        cg_tensor *n1w = W(m, b->norm1_w), *n1b = W(m, b->norm1_b), *n2w = W(m, b->norm2_w), *n2b = W(m, b->norm2_b);
        if (!n1w || !n2w || (gpt2 && (!n1b || !n2b))) return NULL;
        cg_tensor *h = gpt2 ? cg_layernorm(x, n1w, n1b, c->norm_eps) : cg_rmsnorm(x, n1w, c->norm_eps);
        if (!h) return NULL;
        cg_tensor *att = attention_block(m, l, h, positions, in, B, T);
        if (!att) return NULL;
        cg_tensor *resid = NULL;
        cg_tensor *h2 = cg_residual_norm(att, x, n2w, gpt2 ? n2b : NULL, c->norm_eps, !gpt2, &resid);
        if (!h2) return NULL;
        cg_tensor *mlp = gpt2 ? linear_module(m, &b->proj, linear_module(m, &b->fc, h2, true), false)
                              : linear_module(m, &b->down,
                                              cg_swiglu(linear_module(m, &b->gate, h2, false),
                                                        linear_module(m, &b->up, h2, false)),
                                              false);
        x = mlp ? cg_add(resid, mlp) : NULL;
    }
    if (!x) return NULL;
    if (in->cache && !in->cache_pos) in->cache->len += T;
    cg_tensor *nfw = W(m, m->norm_f_w), *nfb = W(m, m->norm_f_b);
    if (!nfw || (gpt2 && !nfb)) return NULL;
    return gpt2 ? cg_layernorm(x, nfw, nfb, c->norm_eps) : cg_rmsnorm(x, nfw, c->norm_eps);
}

cg_tensor *cg_model_head(const cg_model *m) {
    cg_tensor *w = W(m, m->lm_head ? m->lm_head : m->wte);
    if (!w) return NULL;
    return m->cfg.vocab_size == m->cfg.padded_vocab_size ? w : cg_slice(w, 0, 0, m->cfg.vocab_size, 1);
}

cg_tensor *cg_model_logits(const cg_model *m, const cg_tensor *hidden) {
    cg_tensor *head = cg_model_head(m);
    return head ? cg_linear(hidden, head, NULL, false) : NULL;
}

cg_tensor *cg_model_loss(const cg_model *m, const cg_tensor *hidden, const cg_tensor *targets) {
    cg_tensor *logits = cg_model_logits(m, hidden);
    return logits ? cg_cross_entropy(logits, targets, -100, 0.0f) : NULL;
}
