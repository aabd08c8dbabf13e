/* Batched generation with the KV cache: greedy or sampled (temperature, top-k, top-p), stop tokens, a
 * token budget and a seed; returns the tokens, the log-prob of every generated token and the lengths.
 *
 * ---- How a batch runs ----
 * The prompts are left-padded to the longest one (pad token 0, hidden by the key mask; each row's positions
 * start at 0 at its first real token), so every row's last prompt token sits in the same column. The padded
 * prompts go through cg_model_forward in one call that fills a cg_kv_cache; then each decode step feeds one
 * token per row ([batch, 1], its position, the key mask so far) and samples from the logits of that
 * position. A row is done when it samples a stop token (kept in the output and counted in gen_len), when it
 * has max_new_tokens new tokens, or when its length reaches the model's max_seq_len; a done row keeps being
 * fed the pad token (nothing recorded) until every row is done.
 *
 * Everything runs under no-grad. The tensors of each step are freed by rewinding the step arena(s) to a mark
 * taken before the step (cg_arena_get_mark / cg_arena_rewind), and cg_generate rewinds to the mark taken
 * on entry before it returns: decoding N tokens does not grow memory, and tensors the caller holds from
 * before the call stay valid (cg_step_end is never called).
 *
 * ---- The decode step (CUDA graphs) ----
 * On the CPU a decode step feeds [batch, 1] tokens and attends to the filled prefix of the cache. On CUDA
 * every decode step is one fixed-shape call (cg_model_inputs.cache_pos): the token, the position, the key
 * mask [batch, cache length] and the cache column live in device buffers allocated once per generation and
 * written by the bookkeeping kernel, attention reads the whole cache with the mask hiding the unfilled
 * columns (which adds exact zeros: the same result as the prefix), and nothing reads device data on the
 * host. Then the step (forward, sampler, bookkeeping) is the same kernels on the same addresses every time:
 * step 1 runs plainly (it warms the matmul heuristic cache), step 2 is captured from the same arena mark
 * into a CUDA graph, and steps 2.. replay it (cudaGraphLaunch); its memory stays allocated until the end of
 * the call. Graphs off (cg_sampling.cuda_graphs = -1 or CG_CUDA_GRAPHS=0), or any capture error, runs the
 * same step without a graph, with the same results; cg_generation.graph_steps / graph_note tell which.
 *
 * ---- Randomness (reproducible, independent of the batch's other rows) ----
 * Row b draws from the Philox stream b (+ first_stream) of the seed, cg_rng_fork(&cg_rng_init(seed), b), one 32-bit word per
 * sampled token: the word of new token t (t = 0, 1, ...) is the first word of block t of that stream, and
 * u = cg_rng_unit_f32(word). So a row's tokens depend on its index, its prompt and the seed, never on how
 * many other rows there are, what they hold or when they stop. Greedy rows draw nothing. Generating in
 * several batches: vary the seed per batch (or per row group) to get fresh streams.
 *
 * ---- The sampler (cg_sample_logits; the CUDA side must reproduce it) ----
 * temperature 0: greedy, the first index of the largest logit.
 * Otherwise z = logits / temperature, p = softmax(z) (in double); then
 *   top_k > 0: keep the k largest z (ties: the smaller index first);
 *   top_p < 1: of those, in descending order, keep the smallest prefix whose probability (renormalised over
 *              the kept set) sums to >= top_p (at least one token);
 *   draw: target = u * (sum of the kept p); the token is the first kept token (in descending order when a
 *         filter is on, in vocabulary order when none is) whose running sum of p exceeds target.
 * The order of the filters is Hugging Face's (temperature, top-k, top-p).
 *
 * ---- Log-probs (cg_logprob_mode; the default matches TRL and verl) ----
 *   CG_LOGPROB_SCALED (default): log_softmax(logits / temperature)[token] over the full vocabulary, which
 *     is what TRL's GRPO trainer and verl recompute for the old policy (they divide the logits by the
 *     rollout temperature), so the importance ratio starts at exactly 1. Greedy (temperature 0) uses the
 *     raw logits.
 *   CG_LOGPROB_RAW: log_softmax(logits)[token]: log pi(token) of the policy at temperature 1.
 *   CG_LOGPROB_SAMPLED: the log of the probability the sampler actually gave the token (after top-k/top-p
 *     and renormalisation; 0 for greedy).
 * Every mode is computed from the same fp32 logits, in double, and stored as float. */
#ifndef CG_GENERATE_H
#define CG_GENERATE_H

#include <stddef.h>
#include <stdint.h>

#include "models/model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum cg_logprob_mode {
    CG_LOGPROB_SCALED = 0,  /* log_softmax(logits / temperature): TRL / verl's old-policy log-probs */
    CG_LOGPROB_RAW = 1,     /* log_softmax(logits): the policy at temperature 1 */
    CG_LOGPROB_SAMPLED = 2  /* the filtered, renormalised distribution the token was drawn from */
} cg_logprob_mode;

typedef struct cg_sampling {
    float temperature;          /* 0 = greedy; > 0 samples */
    int top_k;                  /* 0 = off */
    float top_p;                /* in (0, 1]; 1 = off (0 in a zero-initialised struct also means off) */
    int64_t max_new_tokens;     /* >= 0 */
    const int32_t *stop_tokens; /* n_stop ids that end a row (kept in its output) */
    int n_stop;
    uint64_t seed;
    cg_logprob_mode logprob_mode;
    /* Row b draws from stream first_stream + b (0: stream b). Data-parallel ranks each generate a slice of
     * the job's rows and offset it by the slice's first row, so they sample what one process would. */
    uint64_t first_stream;
    /* CUDA models: capture the decode step in a CUDA graph and replay it (models/generate.c). 0: on unless
     * the environment has CG_CUDA_GRAPHS=0; 1: on; -1: off. Tokens and log-probs are the same either way. */
    int cuda_graphs;
} cg_sampling;

/* The result, allocated by the library (one block) and freed with cg_generation_free. Row b holds its
 * prompt in tokens[b * max_total + 0 .. prompt_len[b] - 1], then its gen_len[b] new tokens; the rest of the
 * row is -1 (an id the model rejects, so a stray read is loud). logprobs has the same layout: the log-prob
 * of each new token (see cg_logprob_mode), 0 elsewhere. max_total = the largest prompt_len + gen_len. */
typedef struct cg_generation {
    int64_t batch, max_total;
    int32_t *tokens;     /* [batch, max_total] */
    float *logprobs;     /* [batch, max_total] */
    int64_t *prompt_len; /* [batch] */
    int64_t *gen_len;    /* [batch] */
    uint8_t *stopped;    /* [batch]: 1 if the row ended with a stop token, 0 if it ran out of budget */
    /* CUDA: decode steps replayed from a CUDA graph (0 on the CPU, with graphs off, or after a fall-back),
     * and why no graph was used when one was wanted (static text; NULL when none was wanted or it worked). */
    int64_t graph_steps;
    const char *graph_note;
} cg_generation;

/* Generates for `batch` prompts (prompts[b] holds prompt_lens[b] >= 1 ids, each < vocab_size and shorter
 * than max_seq_len). On success *out is a new cg_generation; on error *out is untouched and nothing leaks.
 * Runs on the model's device; the sampler runs on the host for a CPU model, on the GPU for a CUDA one. */
cg_status cg_generate(cg_model *m, const int32_t *const *prompts, const int64_t *prompt_lens, int64_t batch,
                      const cg_sampling *s, cg_generation **out);
void cg_generation_free(cg_generation *g);

/* Checks a sampling config: temperature >= 0 and finite, top_k >= 0, top_p in (0, 1] (or 0 = off),
 * max_new_tokens >= 0, stop_tokens given when n_stop > 0, a known logprob_mode, cuda_graphs in {-1, 0, 1}. */
cg_status cg_sampling_validate(const cg_sampling *s);

/* Bytes of scratch cg_sample_logits needs for a vocabulary (pass NULL work to let it allocate). */
size_t cg_sample_workspace_bytes(int64_t vocab);
/* One draw from one row of logits [vocab] with the sampler above: u is the uniform in [0, 1) (unused when
 * greedy). Writes the token and its log-prob (s->logprob_mode). Only temperature, top_k, top_p and
 * logprob_mode of s are read. */
cg_status cg_sample_logits(const float *logits, int64_t vocab, const cg_sampling *s, float u, void *work,
                           int32_t *token, float *logprob);

#ifdef __cplusplus
}
#endif
#endif
