/* Loading and saving models: Hugging Face model directories and llm.c checkpoints.
 *
 * Hugging Face directory: config.json plus either model.safetensors or shards
 * (model-00001-of-0000N.safetensors ...) listed by model.safetensors.index.json
 * ({"metadata": {"total_size": N}, "weight_map": {"<tensor>": "<shard file>", ...}}). Supported model_type:
 * "gpt2" (GPT2LMHeadModel), "llama" (LlamaForCausalLM) and "qwen2" (Qwen2ForCausalLM). Tensor names are
 * the model's own (models/model.h), with these translations:
 *   - GPT-2 state dicts may prefix every name with "transformer."; it is stripped on load and written on
 *     save (as transformers' save_pretrained does).
 *   - GPT-2's Conv1D weights (attn.c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj) are stored [in, out] and
 *     transposed to and from the model's nn.Linear layout [out, in].
 *   - GPT-2's causal-mask buffers "h.N.attn.bias" / "h.N.attn.masked_bias" are skipped, as are the
 *     "...rotary_emb.inv_freq" buffers of older Llama checkpoints.
 *   - Llama/Qwen2 names without the "model." prefix (a LlamaModel state dict) get it on load.
 *   - The embedding and an untied head have vocab_size rows in the file and padded_vocab_size rows in the
 *     model; the pad rows are zero after a load and are not written on save.
 *   - A tied model ignores an "lm_head.weight" of shape [vocab_size, C] in the file and writes none.
 * Every model parameter must be found and every file tensor used (or be one of the skipped kinds); each
 * error names the tensor, the file and, for shapes, both shapes.
 *
 * llm.c checkpoint (spec/formats_and_distributed.md section 2): a 256 x int32 little-endian header
 * (magic 20240326; version 3 = fp32, 5 = bf16; max_seq_len, vocab_size, num_layers, num_heads, channels,
 * padded_vocab_size) and then the GPT-2 parameters, tensor type by tensor type (each stacked over the
 * layers): wte [Vp, C], wpe [T, C], ln1w [L, C], ln1b, qkvw [L, 3C, C], qkvb [L, 3C], attprojw [L, C, C],
 * attprojb, ln2w, ln2b, fcw [L, 4C, C], fcb [L, 4C], fcprojw [L, C, 4C], fcprojb [L, C], lnfw [C], lnfb.
 * Matrices are already [out, in].
 *
 * Files are read in F32, BF16 or F16 and converted to the parameters' dtype, on whatever device the model
 * lives. Reading config.json and safetensors needs cJSON (CG_ERR_UNSUPPORTED without it); llm.c
 * checkpoints and every writer do not. */
#ifndef CG_CHECKPOINT_H
#define CG_CHECKPOINT_H

#include "models/model.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CG_LLMC_MAGIC 20240326
#define CG_LLMC_HEADER_INTS 256

/* Reads a Hugging Face config.json (PATH is the file or the directory holding it) into a model config.
 *   gpt2:        n_embd, n_layer, n_head, n_positions, vocab_size (required); layer_norm_epsilon (1e-5),
 *                n_inner (4 n_embd), tie_word_embeddings (true), activation_function ("gelu_new" or
 *                "gelu_pytorch_tanh"), initializer_range (0.02).
 *   llama/qwen2: hidden_size, intermediate_size, num_hidden_layers, num_attention_heads, vocab_size
 *                (required); num_key_value_heads (= heads), rms_norm_eps (1e-6), rope_theta (10000),
 *                max_position_embeddings (2048), tie_word_embeddings (false), hidden_act ("silu"),
 *                head_dim (must equal hidden_size / heads), rope_scaling (null, "default" or "llama3"
 *                with factor, low_freq_factor, high_freq_factor, original_max_position_embeddings).
 *                qwen2 always has q/k/v biases; a llama attention_bias or mlp_bias of true is refused
 *                (it would put a bias on o_proj / the MLP, which this model does not have).
 * "padded_vocab_size" (written by cg_model_config_to_hf_json when it differs) sets the padded rows;
 * otherwise padded_vocab_size = vocab_size. Errors (CG_ERR_FORMAT, CG_ERR_IO) name the file and the key. */
cg_status cg_model_config_from_hf(const char *config_json_path_or_dir, cg_model_config *out);

/* The config.json text transformers reads for cfg (architectures, model_type, torch_dtype = dtype's
 * name: "float32" or "bfloat16", and the sizes above). The Llama family is written as qwen2 when
 * cfg->qkv_bias is set, else as llama. *json is malloc'd (free it). Needs no cJSON. */
cg_status cg_model_config_to_hf_json(const cg_model_config *cfg, cg_dtype dtype, char **json);

/* A model for loading into: cg_model_create with every weight zero and norms one (no random draws,
 * which would dominate the load time of a large model); cfg->init_std is kept in the model's config. */
cg_status cg_model_create_blank(const cg_model_config *cfg, cg_device device, cg_model **out);

/* Loads a model onto device: PATH is a Hugging Face directory (or its config.json) or an llm.c .bin
 * checkpoint (recognised by its magic: any path that is neither a directory nor a config.json is read
 * as one). The model is created with cg_model_create_blank and every parameter is overwritten from the
 * files. Free it with cg_model_free. */
cg_status cg_model_load(const char *path, cg_device device, cg_model **out);

/* Loads the weights of a Hugging Face directory into an existing model whose config matches the files. */
cg_status cg_model_load_hf_weights(cg_model *m, const char *dir);

/* Writes a Hugging Face directory (created if missing): config.json and model.safetensors (metadata
 * {"format": "pt"}), or, when the tensors take more than max_shard_bytes (0 = never shard),
 * model-00001-of-0000N.safetensors ... plus model.safetensors.index.json. Tensors are written in dtype
 * CG_F32 or CG_BF16 with the names and layouts above. Each file is written atomically (temporary file,
 * fsync, rename). Adapter (LoRA) parameters are not written. */
cg_status cg_model_save_hf(const cg_model *m, const char *dir, int64_t max_shard_bytes, cg_dtype dtype);

/* Loads an llm.c checkpoint (versions 3 and 5) onto device. The file size must be exactly the header plus
 * the parameters its header describes. The config is GPT-2 with d_ff = 4 C, tied embeddings, q/k/v bias,
 * LayerNorm eps 1e-5. */
cg_status cg_model_load_llmc(const char *path, cg_device device, cg_model **out);

/* Reads and checks an llm.c checkpoint's header and file size without reading the parameters: the
 * config cg_model_load_llmc would build and the version (3 or 5). */
cg_status cg_llmc_checkpoint_info(const char *path, cg_model_config *cfg, int *version);

/* Writes a GPT-2 model as an llm.c checkpoint: version 3 (fp32) or 5 (bf16), atomically. The model must
 * be llm.c-shaped: GPT-2 family, tied embeddings, d_ff = 4 d_model. */
cg_status cg_model_save_llmc(const cg_model *m, const char *path, int version);

#ifdef __cplusplus
}
#endif
#endif
