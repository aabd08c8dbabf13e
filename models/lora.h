/* LoRA adapters on the model's linear layers (Hu et al. 2021; rsLoRA, Kalajdzievski 2023), saved and loaded
 * in Hugging Face PEFT's format.
 *
 * A targeted layer y = x W^T + b becomes y = x W^T + b + scale * dropout(x) A^T B^T with A [r, in] and
 * B [out, r]; scale = alpha / r, or alpha / sqrt(r) with rsLoRA. Init as loralib and PEFT
 * (init_lora_weights=True): A ~ kaiming_uniform(a = sqrt(5)) = U(-1/sqrt(in), 1/sqrt(in)), B = 0, so a fresh
 * adapter leaves the model's output unchanged. Dropout acts on the adapter's input only, and only with grad
 * mode on (training); no-grad passes (rollouts, evaluation) are deterministic.
 *
 * Targets follow PEFT's matching of target_modules: a name matches a layer whose full module path equals it
 * or ends with "." + name. Module paths are those of transformers' *ForCausalLM classes:
 *   GPT-2:        transformer.h.<i>.attn.c_attn, transformer.h.<i>.attn.c_proj, transformer.h.<i>.mlp.c_fc,
 *                 transformer.h.<i>.mlp.c_proj  ("c_proj" targets both; "attn.c_proj" or "mlp.c_proj" one)
 *   Llama/Qwen2:  model.layers.<i>.self_attn.{q,k,v,o}_proj, model.layers.<i>.mlp.{gate,up,down}_proj
 * Llama short names q, k, v, o, gate, up, down stand for q_proj ... down_proj; "all-linear" is every linear
 * layer of the blocks (never the head or the embeddings, as in PEFT).
 *
 * Adapter parameters are registered in the model under PEFT's saved names
 * ("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight",
 *  "base_model.model.transformer.h.0.attn.c_attn.lora_B.weight"). PEFT stores lora_A and lora_B as the
 * weights of nn.Linear(in, r) and nn.Linear(r, out) for every layer type, GPT-2's Conv1D included
 * (fan_in_fan_out only transposes the merged delta), so the file layout is [r, in] and [out, r] for both
 * families. */
#ifndef CG_LORA_H
#define CG_LORA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "models/model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cg_lora_config {
    int rank;            /* r > 0 (PEFT default 8; Tina 32) */
    float alpha;         /* lora_alpha (PEFT default 8; Tina 4 r = 128) */
    bool rslora;         /* scale alpha / sqrt(r) instead of alpha / r (PEFT use_rslora) */
    float dropout;       /* lora_dropout in [0, 1) on the adapter's input, training only (PEFT 0; Tina 0.05) */
    const char *targets; /* comma list: "q,k,v,o,gate,up,down", "q_proj,v_proj", "c_attn,c_proj,c_fc",
                          * "attn.c_proj", "all-linear"; NULL = PEFT's default for the family
                          * (Llama/Qwen2: q_proj,v_proj; GPT-2: c_attn) */
    uint64_t seed;       /* Philox seed of A's init */
} cg_lora_config;

/* PEFT LoraConfig's defaults: r 8, alpha 8, no rsLoRA, dropout 0, the family's default targets, seed 0. */
cg_lora_config cg_lora_config_default(void);
/* Tina's recipe (spec section 8.3): r 32, alpha 128, dropout 0.05, all seven Llama/Qwen2 projections. */
cg_lora_config cg_lora_config_tina(void);
/* alpha / r, or alpha / sqrt(r) with rsLoRA (0 for r <= 0). */
float cg_lora_scale(const cg_lora_config *cfg);

/* Adds an adapter to every targeted linear layer: A (kaiming-uniform, from cfg->seed) and B (zero) in the
 * model's arena with gradient buffers, registered as adapter parameters; the base parameters stop requiring
 * gradients, so cg_model_trainable lists exactly the 2 x (adapted layers) adapter tensors. Errors: a model
 * that already has adapters, rank <= 0, a non-finite alpha, dropout outside [0, 1), a target that matches
 * no layer (the message lists the valid names). On error the model is left as it was. */
cg_status cg_lora_attach(cg_model *m, const cg_lora_config *cfg);
/* Whether adapters are attached. */
bool cg_lora_attached(const cg_model *m);
/* The adapted layers, in model order (layer by layer): fills up to cap, returns the count. */
int cg_lora_modules(cg_model *m, cg_linear_module **out, int cap);

/* Adapters on (default) or off. Off, the forward is exactly the base model's: the reference policy of RL
 * objectives. Turning them off while merged unmerges first (as PEFT's disabled adapters do). */
void cg_lora_set_enabled(cg_model *m, bool enabled);
/* Folds the adapters into the base weights, W += scale * B A (one GEMM per layer, fp32), for inference
 * without the adapter's extra matmuls; the forward then skips the adapters. Errors: no adapters, already
 * merged, adapters disabled. Gradients no longer reach A and B while merged. */
cg_status cg_lora_merge(cg_model *m);
/* W -= scale * B A: the base weights come back up to fp32 rounding (each element within an ulp or two of
 * max(|W|, |W + scale B A|)). Error when not merged. */
cg_status cg_lora_unmerge(cg_model *m);

/* Writes dir/adapter_model.safetensors (PEFT names, f32, [r, in] and [out, r], metadata format=pt) and
 * dir/adapter_config.json (PEFT LoraConfig keys; fan_in_fan_out true for GPT-2's Conv1D layers), creating
 * dir if needed. cfg must be the config the adapters were attached with (its rank and scale are checked
 * against the model's). Both files are written to temporary names and renamed into place. */
cg_status cg_lora_save(const cg_model *m, const cg_lora_config *cfg, const char *dir);
/* Reads a PEFT adapter directory into a model without adapters: attaches with the config read, then copies
 * the weights (f32, bf16 or f16 files). Every targeted layer needs both tensors with the right shapes, and
 * every tensor in the file must belong to a targeted layer. On error the model is left without adapters. */
cg_status cg_lora_load(cg_model *m, const char *dir);
/* Parses an adapter_config.json into cfg. targets is written into the caller's buffer (comma list; NULL
 * when the file's target_modules is null). Rejects what this implementation cannot reproduce exactly:
 * peft_type other than LORA, DoRA, bias other than "none", modules_to_save, rank/alpha patterns,
 * layers_to_transform, regex target_modules. */
cg_status cg_lora_config_read(const char *path, cg_lora_config *cfg, char *targets, size_t targets_cap);

#ifdef __cplusplus
}
#endif
#endif
