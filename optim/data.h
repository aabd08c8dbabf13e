/* Training data: batches of B x T token ids with their next-token targets, from llm.c token shards or from
 * a plain text file through a tokenizer.
 *
 * ---- Sources ----
 * The path is a glob (glob(3)). If it matches one file whose first four bytes are not a token-shard magic
 * (core/tokens.h: 20240520 GPT-2 uint16, 20240801 Llama 3 uint32), that file is text: it is read whole and
 * encoded with the tokenizer given (an error without one). Otherwise every match, in sorted order, must be a
 * valid shard (uint16 and uint32 shards may be mixed).
 *
 * ---- Batches (llm.c's dataloader, spec/formats_and_distributed.md section 1) ----
 * With W = world_size ranks, one step of all ranks takes W * B * T tokens of a shard; a shard of n tokens
 * holds S = (n - 1) / (W * B * T) such samples (at least 1, else the open fails naming the shard). Sample s of
 * rank r reads the B * T + 1 tokens starting at token s * W * B * T + r * B * T: inputs are the first B * T,
 * targets the same shifted by one. After the last sample of a shard comes sample 0 of the next shard, and
 * after the last shard the first again (one more epoch). No shuffling: the order is the files' order.
 * A text file is one shard made of its tokens.
 *
 * Holdout (text only): holdout_frac f in (0, 1) keeps the last f of the tokens out of the training split;
 * opening with split CG_DATA_HOLDOUT gives those tokens instead (a validation set from the same file).
 *
 * ---- Position ----
 * (shard, sample) of the next batch; saved in training checkpoints and restored with cg_data_set_position,
 * so a resumed run reads exactly the batches the uninterrupted run would have read. */
#ifndef CG_DATA_H
#define CG_DATA_H

#include <stdbool.h>
#include <stdint.h>

#include "core/error.h"
#include "models/tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum cg_data_split { CG_DATA_TRAIN = 0, CG_DATA_HOLDOUT = 1 } cg_data_split;

typedef struct cg_data_config {
    const char *path;              /* glob of shards, or one text file */
    const cg_tokenizer *tokenizer; /* for text (read during open only) */
    int64_t batch, seq_len;        /* B, T */
    int rank, world_size;          /* 0 <= rank < world_size */
    float holdout_frac;            /* text: share of the tokens held out (0 = none) */
    cg_data_split split;
} cg_data_config;

typedef struct cg_data_position {
    int64_t shard, sample;
} cg_data_position;

typedef struct cg_data_loader cg_data_loader;

cg_status cg_data_open(const cg_data_config *cfg, cg_data_loader **out);
void cg_data_close(cg_data_loader *d);
/* The next batch: inputs and targets [B * T] each (row-major [B, T]). */
cg_status cg_data_next(cg_data_loader *d, int32_t *inputs, int32_t *targets);
cg_data_position cg_data_get_position(const cg_data_loader *d);
/* Fails (naming the position) unless 0 <= shard < shards and 0 <= sample < samples of that shard. */
cg_status cg_data_set_position(cg_data_loader *d, cg_data_position p);
/* Back to the first sample of the first shard. */
void cg_data_reset(cg_data_loader *d);
int cg_data_num_shards(const cg_data_loader *d);
/* Tokens over all shards (for text: of the split). */
int64_t cg_data_num_tokens(const cg_data_loader *d);
/* Samples (batches of this rank) in one pass over every shard. */
int64_t cg_data_samples_per_epoch(const cg_data_loader *d);
/* True when the source is a text file. */
bool cg_data_is_text(const cg_data_loader *d);

#ifdef __cplusplus
}
#endif
#endif
