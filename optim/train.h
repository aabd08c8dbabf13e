/* The training runtime: optimizer steps over micro-batches with gradient accumulation, validation, the
 * NaN/Inf and outlier guards, throughput figures, and checkpoints that resume bit-exactly.
 *
 * ---- One step (cg_trainer_step) ----
 * accum = total_batch / (B * T * world_size) micro-batches (total_batch must be a multiple of B * T * world).
 * Each micro-batch: the next [B, T] inputs/targets from the loader (every id must be < the model's
 * vocab_size), forward, mean cross-entropy, backward of loss / accum, cg_step_end (activations freed), so
 * the gradients hold the mean over all accum * B * T tokens. Then, with lr = cg_lr_schedule(step):
 *   - the update is skipped (gradients dropped, reported with a reason) when the mean loss or any gradient
 *     element is NaN/Inf ("nonfinite"), or when the outlier guard fires (below);
 *   - otherwise cg_optimizer_step (clipping, noise, the update).
 * The step counter advances in every case (the data was consumed and the schedule moves on, as in llm.c);
 * cg_optimizer_step_count counts only the updates made.
 *
 * ---- Outlier guard (llm.c's OutlierDetector, train_gpt2.cu -sl / -sg) ----
 * Two detectors, for the step's mean loss and its gradient norm, each with a sliding window of the last
 * outlier_window finite values (default 128). Once the window is full, a value's z-score is
 * z = (x - mean) / std over the window BEFORE x enters it (population std; z = 0 when std = 0); x then
 * replaces the oldest value. The update is skipped when skip_loss_z > 0 and z_loss > skip_loss_z, or
 * skip_grad_z > 0 and z_grad > skip_grad_z (only upward spikes count). Both thresholds default to 0 (off),
 * as in llm.c. Non-finite values never enter a window.
 *
 * ---- Throughput ----
 * tokens_per_s = total_batch / the step's wall time. FLOPs per token as llm.c's gpt2_estimate_mfu:
 * 6 N + 6 L C T (N = cg_model_num_elements, padded embedding included, counted once when tied; L layers,
 * C = d_model, T = seq_len); MFU = flops_per_token * tokens_per_s / peak, with peak 989.4e12 (H100/H200 bf16
 * dense) for a bf16 model on a GPU and 494.7e12 (H100/H200 TF32 dense, what f32 matmuls run as) for an f32
 * one; on the CPU no peak is defined and MFU is reported as n/a (negative in the struct).
 *
 * ---- On a GPU (a CUDA model) ----
 * The model's compute dtype (cg_model_set_compute_dtype) decides the precision: with bf16 every trainable
 * parameter's working copy is given to the optimizer (cg_optimizer_set_working_copy), whose fused update
 * rewrites it after each step. The batch is checked on the host, then its targets are copied into a device
 * buffer made at create (through the runtime's pinned staging) and the tokens uploaded by the forward into
 * the step arena: after the first step nothing is allocated. Each micro-batch's loss is added on the device
 * into an accumulator, read back once per step; the NaN/Inf check and the gradient norm come from the
 * optimizer's device scan (one small read; a second one only when the step is skipped before the update
 * or the gradient outlier guard needs the norm first). Memory: the info's mem_ fields (below).
 *
 * ---- Checkpoints (cg_trainer_save) ----
 * OUT/ckpt_<step %08d>/ holds
 *   model/               the model as a Hugging Face directory (cg_model_save_hf, f32), or for a LoRA run
 *   adapter/             the PEFT adapter (cg_lora_save) instead (the frozen base comes from the run's --model)
 *   train_state.bin      what resuming needs (below)
 * It is built as OUT/ckpt_<step>.tmp/ and renamed into place when every file is written and fsync'd, then OUT
 * is fsync'd: a ckpt_<step> directory is complete by construction (a crash leaves only a .tmp, ignored and
 * replaced next time). keep_last > 0 then deletes the oldest complete checkpoints beyond that many.
 *
 * train_state.bin: a 32-byte header { char magic[8] = "CGTRNST1"; u32 version = 1; u32 0; u64 payload bytes;
 * u64 FNV-1a 64 of the payload } then the payload (little-endian): step, tokens seen, B, T, total_batch,
 * world size; the data position (shard, sample); the model's LoRA-dropout RNG (seed, offset, stream); the
 * outlier windows; every trainable parameter (name, element count, fp32 values: the exact weights, so a
 * resume does not depend on re-reading the safetensors); the optimizer state (cg_optimizer_save_state).
 * It is written to a temporary file, fsync'd and renamed. Loading refuses, with a message naming the file,
 * a short or long file ("truncated"), a checksum mismatch ("corrupted"), another B/T/total batch/world size,
 * or parameters that do not match the model's trainable ones by name and size; nothing changes on error.
 * ---- Data parallel (cfg.comm with W > 1 ranks; optim/dist.h) ----
 * Each rank reads its own rows (the loader's rank/world_size must match the communicator), the parameters
 * are broadcast from rank 0 at create, and the gradients are averaged over the ranks in buckets overlapped
 * with the backward of the last micro-batch (no communication on the earlier ones). The reported loss is
 * the mean over ranks, so every rank takes the same skip decisions. With zero1 the optimizer is
 * cg_optimizer_create_zero1. Checkpoints: rank 0 writes the model and train_state.bin; with ZeRO-1 every
 * rank writes its optimizer shard, optim_shard_<rank>_of_<W>.bin (cg_optimizer_save_shard, in the same
 * header + checksum framing as the state, magic "CGOSHRD1"), into the checkpoint directory before rank 0
 * renames it, and train_state.bin then holds 0 optimizer bytes. Every rank resumes from the same files (a
 * shared filesystem across nodes), reading whichever shards cover its range. A checkpoint
 * resumes with another rank count (and per-rank batch) when seq_len and the total batch are the same and its
 * data position falls on a sample boundary of the new layout (else it is refused, naming both).
 * Everything else a step depends on is a function of the step number (schedule, gradient noise via the
 * optimizer's step count), so a resumed run is bit-identical to an uninterrupted one on the CPU. */
#ifndef CG_TRAIN_H
#define CG_TRAIN_H

#include <stdbool.h>
#include <stdint.h>

#include "models/lora.h"
#include "models/model.h"
#include "optim/data.h"
#include "optim/dist.h"
#include "optim/optim.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CG_TRAIN_PEAK_FLOPS_H100_BF16 989.4e12
#define CG_TRAIN_PEAK_FLOPS_H100_TF32 494.7e12

typedef struct cg_train_config {
    int64_t batch, seq_len; /* micro-batch B x T (the loader's) */
    int64_t total_batch;    /* tokens per optimizer step over all ranks; 0 = B * T * world_size */
    int world_size;         /* data-parallel ranks: must equal comm's size (1 without comm) */
    cg_comm *comm;          /* data-parallel communicator (optim/dist.h); NULL = one process */
    bool zero1;             /* ZeRO-1: optimizer state and update sharded over comm's ranks */
    int64_t bucket_bytes;   /* gradient all-reduce bucket; 0 = 25 MB */
    cg_optimizer_config optim;
    cg_lr_schedule_config schedule; /* lr per step */
    float skip_loss_z, skip_grad_z; /* outlier guard thresholds; 0 = off */
    int outlier_window;             /* 0 = 128 */
    const cg_lora_config *lora;     /* the adapters' config when the model has LoRA (checkpoints save them) */
} cg_train_config;

/* B 4, T 64, AdamW defaults, constant lr 3e-4, guard off. */
cg_train_config cg_train_config_default(void);

typedef struct cg_train_step_info {
    int64_t step; /* this step's index (0-based) */
    double loss;  /* mean training loss over the step's micro-batches */
    double lr;
    double grad_norm; /* before clipping; NaN when non-finite */
    bool skipped;
    const char *skip_reason; /* NULL, "nonfinite", "loss outlier", "grad outlier" */
    double loss_z, grad_z;   /* the guard's z-scores (NaN until a window is full) */
    int64_t tokens;          /* tokens in this step */
    double seconds, tokens_per_s;
    double mfu; /* < 0: n/a (CPU) */
    double peak_flops;     /* MFU's denominator (0 on the CPU) */
    const char *peak_name; /* what that peak is ("H100/H200 bf16 dense"), NULL on the CPU */
    /* memory on the model's device: bytes the model, optimizer, trainer and context arenas hold (chunks
     * reserved, what cudaMalloc gave them), the most of that seen so far, and on a GPU the device's used
     * memory as the driver reports it (total - free: every process and the CUDA context included; 0 on the
     * CPU) and its most so far */
    size_t mem_arena_bytes, mem_arena_peak, mem_device_used, mem_device_peak;
    /* data parallel: gradient buckets, and how many of them were started during backward (overlapped) */
    int buckets, buckets_overlapped;
} cg_train_step_info;

typedef struct cg_trainer cg_trainer;

/* A trainer over the model's trainable parameters (cg_model_trainable), reading batches from data (not
 * owned; its batch and seq_len must equal cfg's). Gives the model its gradient buffers. The model may be on
 * the CPU or a GPU (see "On a GPU" above); ZeRO-1 is CPU only (the optimizer refuses GPU shards). */
/* Mixed precision: hands every bf16 working copy of the model (cg_model_working_copy) to the optimizer that
 * steps its master (cg_optimizer_set_working_copy), so the fused update rewrites the copies. A no-op for an
 * f32 model. Every optimizer over a bf16 CUDA model needs this (the trainer, the RL trainer, the warm-up). */
cg_status cg_optimizer_bind_working_copies(cg_optimizer *opt, const cg_model *m);
cg_status cg_trainer_create(cg_model *m, cg_data_loader *data, const cg_train_config *cfg, cg_trainer **out);
void cg_trainer_free(cg_trainer *tr);

cg_status cg_trainer_step(cg_trainer *tr, cg_train_step_info *info);
/* Mean loss over max_batches batches of val (from its first batch; val is reset before and after), under
 * no-grad. */
cg_status cg_trainer_evaluate(cg_trainer *tr, cg_data_loader *val, int64_t max_batches, double *loss);

int64_t cg_trainer_step_count(const cg_trainer *tr);
int64_t cg_trainer_tokens_seen(const cg_trainer *tr);
int cg_trainer_grad_accum(const cg_trainer *tr);
cg_optimizer *cg_trainer_optimizer(cg_trainer *tr);
/* llm.c's 6 N + 6 L C T. */
double cg_train_flops_per_token(const cg_model *m, int64_t seq_len);

/* ---- checkpoints ---- */
/* Writes OUT/ckpt_<step>/ (see above); path (may be NULL) receives its path. keep_last 0 keeps all. */
cg_status cg_trainer_save(cg_trainer *tr, const char *out_dir, int keep_last, char *path, size_t path_cap);
/* Loads the newest complete checkpoint of out_dir; *resumed = false (CG_OK) when there is none. path (may
 * be NULL) receives the checkpoint's directory. A damaged newest checkpoint is an error, not skipped. */
cg_status cg_trainer_resume(cg_trainer *tr, const char *out_dir, bool *resumed, char *path, size_t path_cap);
/* The training-state file on its own. */
cg_status cg_train_state_write(const cg_trainer *tr, const char *path);
cg_status cg_train_state_read(cg_trainer *tr, const char *path);
/* Steps of the complete checkpoints in out_dir, ascending: fills up to cap, returns the count (-1 with an
 * error when the directory cannot be read; 0 when it does not exist). */
int cg_train_list_checkpoints(const char *out_dir, int64_t *steps, int cap);

#ifdef __cplusplus
}
#endif
#endif
