/* The transformer: one model whose config covers the GPT-2 family (LayerNorm, learned positions, GELU MLP,
 * biases, tied embeddings, padded vocabulary) and the Llama / Qwen2 family (RMSNorm, RoPE, SwiGLU,
 * grouped-query attention, optional q/k/v bias, tied or untied head).
 *
 * Parameters live in the model's own arena, in nn.Linear layout ([out, in]) whatever the checkpoint format,
 * and are named with their Hugging Face names ("h.0.attn.c_attn.weight" for GPT-2,
 * "model.layers.0.self_attn.q_proj.weight" for Llama/Qwen2), which is how checkpoints, LoRA targets and
 * optimizers find them. The embedding (and an untied head) keep padded_vocab_size rows; the rows past
 * vocab_size are zero and never produce logits. CPU compute is fp32. */
#ifndef CG_MODEL_H
#define CG_MODEL_H

#include <stdbool.h>

#include "autograd/ops.h"
#include "autograd/ops_mixed.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum cg_model_arch {
    CG_ARCH_GPT2 = 0, /* LayerNorm with bias, learned positions, fused c_attn, GELU MLP, biases everywhere */
    CG_ARCH_LLAMA = 1 /* RMSNorm, RoPE, separate q/k/v/o, SwiGLU MLP, no biases but optional q/k/v bias (Qwen2) */
} cg_model_arch;

typedef struct cg_model_config {
    char name[64];           /* the preset name or "custom" */
    cg_model_arch arch;
    int64_t vocab_size;      /* tokens the tokenizer produces */
    int64_t padded_vocab_size; /* rows of the embedding / head (>= vocab_size; llm.c pads GPT-2 to 50304) */
    int64_t n_layer, n_head, n_kv_head, d_model, d_ff, max_seq_len;
    float norm_eps;
    float rope_theta;        /* Llama family */
    /* Llama 3 RoPE frequency scaling ("rope_type": "llama3"); factor 0 = none */
    float rope_scaling_factor, rope_low_freq_factor, rope_high_freq_factor;
    int64_t rope_original_max_pos;
    bool qkv_bias;           /* bias on the q/k/v projections (GPT-2's c_attn, Qwen2) */
    bool tie_embeddings;     /* the head is the token embedding */
    float init_std;          /* N(0, init_std) init; residual projections use init_std / sqrt(2 n_layer) */
} cg_model_config;

/* Presets: gpt2:d2 gpt2:d4 gpt2:d6 gpt2:d12 gpt2:d24 gpt2:d36 gpt2:d48 (llm.c's depths; d2/d4 are small
 * extras), qwen2.5-0.5b, qwen2.5-1.5b, llama3.2-1b, gpt2:tiny and llama:tiny (character vocabulary of 64,
 * well under a million parameters, for tests and demos). */
cg_status cg_model_config_preset(const char *name, cg_model_config *out);
int cg_model_preset_count(void);
const char *cg_model_preset_name(int i);
/* Elements of the parameters a config describes (tied embedding counted once, padded rows included). */
int64_t cg_model_config_num_elements(const cg_model_config *cfg);
/* Checks a config's internal consistency (heads divide d_model, kv heads divide heads, sizes positive...). */
cg_status cg_model_config_validate(const cg_model_config *cfg);
static inline int64_t cg_model_head_dim(const cg_model_config *c) { return c->d_model / c->n_head; }

/* A linear layer of the model, with its optional LoRA adapter (models/lora.h fills lora_*). */
typedef struct cg_linear_module {
    char name[96];           /* the weight's Hugging Face name without ".weight" */
    cg_tensor *weight;       /* [out, in] */
    cg_tensor *bias;         /* [out] or NULL */
    cg_tensor *lora_a;       /* [r, in] or NULL */
    cg_tensor *lora_b;       /* [out, r] or NULL */
    float lora_scale;        /* alpha / r (or alpha / sqrt(r) with rsLoRA) */
    float lora_dropout;
} cg_linear_module;

typedef struct cg_block {
    cg_tensor *norm1_w, *norm1_b, *norm2_w, *norm2_b; /* biases: GPT-2 only */
    cg_linear_module qkv;                            /* GPT-2: c_attn, [3C, C] */
    cg_linear_module q, k, v;                        /* Llama family */
    cg_linear_module o;                              /* attention output: c_proj / o_proj */
    cg_linear_module fc, proj;                       /* GPT-2 MLP: c_fc, c_proj */
    cg_linear_module gate, up, down;                 /* Llama MLP */
} cg_block;

typedef struct cg_named_param {
    const char *name;
    cg_tensor *tensor;
    bool adapter;       /* a LoRA weight */
    cg_tensor *working; /* its bf16 working copy (compute dtype bf16), else NULL */
} cg_named_param;

typedef struct cg_model {
    cg_model_config cfg;
    cg_device device;
    cg_arena *arena;         /* owns every parameter, gradient and adapter */
    cg_tensor *wte;          /* [Vp, C] */
    cg_tensor *wpe;          /* [max_seq_len, C], GPT-2 */
    cg_tensor *lm_head;      /* [Vp, C], NULL when tied */
    cg_tensor *norm_f_w, *norm_f_b;
    cg_block *blocks;
    cg_named_param *params;  /* every parameter (base and adapter) by name */
    int n_params, cap_params;
    bool lora_enabled;       /* adapters take part in the forward (false: the base model = reference policy) */
    bool lora_merged;        /* adapters are folded into the base weights (models/lora.h): the forward skips them */
    cg_rng lora_rng;         /* LoRA dropout masks (training only: grad mode on) */
    cg_dtype compute_dtype;  /* CG_F32 (default) or CG_BF16 (CUDA: the forward reads the working copies) */
} cg_model;

/* A new model with random init (seeded Philox) on device. Base parameters require gradients (full
 * fine-tuning); cg_model_set_base_trainable(m, false) turns that off (LoRA). No gradient memory is taken
 * until cg_model_alloc_grads (or, lazily, the first backward, in the context's persistent arena): a model
 * used for inference holds its weights only. */
cg_status cg_model_create(const cg_model_config *cfg, cg_device device, uint64_t seed, cg_model **out);
void cg_model_free(cg_model *m);
/* A frozen copy of m's base parameters (no adapters, no gradients): the reference policy of RL with full
 * fine-tuning. */
cg_status cg_model_copy(const cg_model *m, cg_model **out);
/* Gives every parameter that requires a gradient its buffer in the model's arena (call once before training,
 * so gradients are freed with the model). */
cg_status cg_model_alloc_grads(cg_model *m);
/* Stops (or restarts) gradients for every non-adapter parameter. */
void cg_model_set_base_trainable(cg_model *m, bool trainable);

/* ---- parameters ---- */
cg_tensor *cg_model_find_param(const cg_model *m, const char *name);
/* Elements of all base parameters (the embedding counted once when tied; padded rows included). */
int64_t cg_model_num_elements(const cg_model *m);
/* Parameters with requires_grad (what an optimizer updates): fills up to cap, returns the count. */
int cg_model_trainable(const cg_model *m, cg_tensor **out, int cap);
/* Registers a tensor under a name (used by LoRA and checkpoint loading; the name is copied). */
cg_status cg_model_add_param(cg_model *m, const char *name, cg_tensor *t, bool adapter);

/* ---- mixed precision (DESIGN.md section 5) ----
 * CG_BF16 (CUDA models only): every parameter, trainable or frozen, gets a bf16 working copy in the model's
 * arena, filled from its fp32 master at once (a parameter registered later, such as a LoRA adapter, gets its
 * copy when registered and cg_lora_attach refreshes it after its init). The forward then reads the copies
 * (cg_working_weight: no conversion pass) and runs in bf16 with f32 accumulation; norms, softmax and the
 * loss compute in f32; gradients reach the masters' f32 .grad. Whoever changes a master outside the
 * optimizer must call cg_model_refresh_working_copies; an optimizer keeps them current itself once each
 * copy is given to cg_optimizer_set_working_copy (the trainer does this). CG_F32 returns to the masters (the
 * copies stay allocated and are refreshed if bf16 is chosen again). A CPU model refuses CG_BF16 (the CPU
 * computes in f32). */
cg_status cg_model_set_compute_dtype(cg_model *m, cg_dtype dtype);
cg_dtype cg_model_compute_dtype(const cg_model *m);
/* The bf16 working copy of a parameter of m (NULL when m computes in f32 or param is not one of m's). */
cg_tensor *cg_model_working_copy(const cg_model *m, const cg_tensor *param);
/* Rewrites every working copy from its master (after loading weights, merging LoRA, resuming). */
cg_status cg_model_refresh_working_copies(cg_model *m);
/* What the forward reads for parameter p: the working copy standing in for p (cg_working_weight) when m
 * computes in bf16, else p. */
cg_tensor *cg_model_weight(const cg_model *m, const cg_tensor *p);

/* ---- KV cache (inference: use under no-grad) ---- */
typedef struct cg_kv_cache {
    int64_t batch, max_len, len; /* len: positions filled so far */
    cg_arena *arena;
    cg_tensor **k, **v;          /* per layer [batch, n_kv_head, max_len, head_dim] */
    int n_layer;
    cg_tensor *rope_table;       /* Llama family on CUDA: RoPE's frequencies on the device (cg_decode_rope) */
} cg_kv_cache;
cg_status cg_kv_cache_create(const cg_model *m, int64_t batch, int64_t max_len, cg_kv_cache **out);
void cg_kv_cache_reset(cg_kv_cache *c);
void cg_kv_cache_free(cg_kv_cache *c);

/* ---- forward ----
 * Tokens (and positions) may be on the CPU or on the model's device; CPU ones are range-checked on the
 * host and uploaded (one copy each), device ones are checked on the device (the check waits for its
 * answer). The KV cache holds keys and values in the model's compute dtype. */
typedef struct cg_model_inputs {
    const cg_tensor *tokens;    /* [B, T] i32/i64 */
    const cg_tensor *positions; /* optional [B, T] i32/i64 (left padding); default cache->len + t */
    const cg_tensor *key_mask;  /* optional [B, S] nonzero = attend, S = keys seen (cache length + T) */
    cg_kv_cache *cache;         /* optional: this call's keys/values are appended and attended to */
    /* Optional, CUDA models with a cache only: the fixed-shape decode step (one call every decode step with
     * the same shapes and addresses, so it can be captured in a CUDA graph). An i64 [1] device tensor: this
     * call's T keys/values go to cache columns *cache_pos .. + T - 1, read on the device; attention reads the
     * whole cache (S = cache->max_len) and key_mask must be a packed u8 [B, max_len] device tensor hiding the
     * unfilled columns; tokens and positions (i64, packed) must be on the device and are NOT range-checked
     * (a check would wait for the GPU: the caller guarantees them); cache->len is neither read nor advanced. */
    const cg_tensor *cache_pos;
} cg_model_inputs;

/* The final-norm hidden states [B, T, C]. */
cg_tensor *cg_model_forward(cg_model *m, const cg_model_inputs *in);
/* The head's weight restricted to the real vocabulary: [vocab_size, C] (a view). */
cg_tensor *cg_model_head(const cg_model *m);
/* Logits [B, T, vocab_size] of hidden states. */
cg_tensor *cg_model_logits(const cg_model *m, const cg_tensor *hidden);
/* Mean next-token cross-entropy of hidden states against targets [B, T] (ignore_index -100 skipped). */
cg_tensor *cg_model_loss(const cg_model *m, const cg_tensor *hidden, const cg_tensor *targets);

#ifdef __cplusplus
}
#endif
#endif
