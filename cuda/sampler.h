/* The GPU sampler of generation (models/generate.h specifies it; cg_sample_logits is the CPU reference) and
 * the per-step bookkeeping that keeps a whole decode loop on the device: only the sampled tokens, their
 * log-probs, the lengths and the done flags come back to the host, once at the end of cg_generate (plus a
 * 4-byte "rows still live" count every few steps, to stop early).
 *
 * Sums run in double as on the CPU, but in a different order (per-thread chunks, then the chunk prefix), so
 * log-probs agree with the CPU to ~1e-12 relative and the token is the same unless u falls within ~1e-15
 * of a boundary of the cumulative distribution. top-k / top-p sort each row (CUB segmented radix sort of
 * 64-bit keys: the logit's order bits above the complemented index, so ties go to the smaller index, as on
 * the CPU); unfiltered sampling and greedy never sort. All kernels run on the compute stream; nothing
 * synchronises. */
#ifndef CG_CUDA_SAMPLER_H
#define CG_CUDA_SAMPLER_H

#include <stddef.h>
#include <stdint.h>

#include "core/dtype.h"
#include "core/error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* What a row's sampling failed on (err[b]; 0 = fine). */
enum { CG_CUDA_SAMPLE_OK = 0, CG_CUDA_SAMPLE_BAD_LOGIT = 1, CG_CUDA_SAMPLE_ALL_NEG_INF = 2 };

typedef struct cg_cuda_sampler_params {
    float temperature; /* 0 = greedy */
    int top_k;         /* 0 = off */
    float top_p;       /* 1 or 0 = off */
    int logprob_mode;  /* cg_logprob_mode */
} cg_cuda_sampler_params;

/* Device scratch cg_cuda_sample needs for batch rows of vocab logits (0 when nothing sorts). */
size_t cg_cuda_sample_workspace_bytes(int64_t batch, int64_t vocab, const cg_cuda_sampler_params *p);

/* For every row b with active[b] != 0 (active NULL: every row): draws from logits[b * row_stride ..
 * + vocab) (dtype CG_F32 or CG_BF16, device) with the uniform u[b] (device; unused and may be NULL when
 * greedy) and writes tokens[b] and logprobs[b] (device); a row whose logits hold a NaN or +inf, or only
 * -inf, sets err[b] (CG_CUDA_SAMPLE_*) and writes no token; err is never cleared (zero it once, read it at
 * the end). Inactive rows are left untouched. */
cg_status cg_cuda_sample(const void *logits, cg_dtype dtype, int64_t batch, int64_t vocab, int64_t row_stride,
                         const float *u, const uint8_t *active, const cg_cuda_sampler_params *p, void *work,
                         size_t work_bytes, int32_t *tokens, float *logprobs, int32_t *err);

/* u[b] = cg_rng_unit_f32(word 0 of Philox block gen_len[b] of stream first_stream + b of seed) for every
 * live row: the word of row b's next new token (models/generate.h, "Randomness"). */
cg_status cg_cuda_sample_uniforms(uint64_t seed, uint64_t first_stream, int64_t batch, const int64_t *gen_len,
                                  const uint8_t *live, float *u);

/* The device arrays of one generation's decode loop. */
typedef struct cg_cuda_gen_rows {
    int64_t batch, steps;   /* rows; columns of out_tokens / out_logprobs */
    int64_t prompt_cols;    /* P: the padded prompt length (column of the first fed-back token) */
    int64_t cache_len;      /* columns of mask */
    const int64_t *budget;  /* [batch] new tokens a row may have */
    const int64_t *prompt_len; /* [batch] */
    const int32_t *stop;    /* [n_stop] */
    int n_stop;
    int64_t *gen_len;       /* [batch] */
    uint8_t *stopped;       /* [batch] */
    uint8_t *live;          /* [batch]: samples this step (!stopped && gen_len < budget) */
    int32_t *out_tokens;    /* [batch, steps] */
    float *out_logprobs;    /* [batch, steps] */
    int32_t *tok_step;      /* [batch] the next decode step's token ... */
    int64_t *pos_step;      /* [batch] ... position ... */
    uint8_t *mask;          /* [batch, cache_len] ... and key mask column prompt_cols + step */
    int32_t *n_live;        /* [1]: rows still live after this step */
    /* Optional (both or neither), for a step replayed from a CUDA graph: the step number lives on the device
     * (*step_dev is read instead of the step argument, then incremented), and *cache_pos is set to the cache
     * column the next step's token goes to (prompt_cols + step). */
    int64_t *step_dev;
    int64_t *cache_pos;
} cg_cuda_gen_rows;

/* After sampling step `step` (tokens / logprobs from cg_cuda_sample): each live row records its token,
 * grows, stops on a stop token; then the next step's inputs are written as generate.c's host loop does
 * (a row still live feeds its token at position prompt_len + step, its mask column P + step opens; other
 * rows feed token 0 at position 0 behind a closed column), and n_live counts the rows still live. */
cg_status cg_cuda_generate_advance(const cg_cuda_gen_rows *r, int64_t step, const int32_t *tokens,
                                   const float *logprobs); /* step: ignored when r->step_dev is set */

#ifdef __cplusplus
}
#endif
#endif
