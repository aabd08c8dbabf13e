/* Batched generation with the KV cache (models/generate.h has the rules): the sampler of one row of
 * logits, then the batch loop (left-padded prefill, one decode step per new token). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "models/generate.h"

#include "core/context.h"
#ifdef CG_HAVE_CUDA
#include "cuda/decode.h"
#include "cuda/sampler.h"
#endif

/* ------------------------------------------------------------------ the sampler */

cg_status cg_sampling_validate(const cg_sampling *s) {
    if (!s) return cg_set_error(CG_ERR_INVALID_ARG, "sampling: NULL config");
    if (!(s->temperature >= 0.0f) || isinf(s->temperature))
        return cg_set_error(CG_ERR_INVALID_ARG, "sampling: temperature %g must be finite and >= 0 (0 = greedy)",
                            (double)s->temperature);
    if (s->top_k < 0) return cg_set_error(CG_ERR_INVALID_ARG, "sampling: top_k %d must be >= 0 (0 = off)", s->top_k);
    if (!(s->top_p >= 0.0f && s->top_p <= 1.0f))
        return cg_set_error(CG_ERR_INVALID_ARG, "sampling: top_p %g must be in (0, 1] (1 or 0 = off)", (double)s->top_p);
    if (s->max_new_tokens < 0)
        return cg_set_error(CG_ERR_INVALID_ARG, "sampling: max_new_tokens %lld must be >= 0",
                            (long long)s->max_new_tokens);
    if (s->n_stop < 0 || (s->n_stop > 0 && !s->stop_tokens))
        return cg_set_error(CG_ERR_INVALID_ARG, "sampling: %d stop tokens but stop_tokens is %s", s->n_stop,
                            s->stop_tokens ? "set" : "NULL");
    if (s->logprob_mode != CG_LOGPROB_SCALED && s->logprob_mode != CG_LOGPROB_RAW &&
        s->logprob_mode != CG_LOGPROB_SAMPLED)
        return cg_set_error(CG_ERR_INVALID_ARG, "sampling: unknown logprob_mode %d", (int)s->logprob_mode);
    if (s->cuda_graphs < -1 || s->cuda_graphs > 1)
        return cg_set_error(CG_ERR_INVALID_ARG, "sampling: cuda_graphs %d must be -1 (off), 0 (default) or 1 (on)",
                            s->cuda_graphs);
    return CG_OK;
}

size_t cg_sample_workspace_bytes(int64_t vocab) {
    return vocab > 0 ? (size_t)vocab * (sizeof(double) + sizeof(int32_t)) + 64 : 0;
}

/* ---- ranking: a strict total order, larger logit first, then the smaller index ---- */

static inline int better(const float *logits, int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
}

/* A heap whose root is the worst element (of the order above). */
static void sift_down(int32_t *idx, int64_t n, int64_t i, const float *logits) {
    for (;;) {
        int64_t l = 2 * i + 1, r = l + 1, w = i;
        if (l < n && better(logits, idx[w], idx[l])) w = l;
        if (r < n && better(logits, idx[w], idx[r])) w = r;
        if (w == i) return;
        int32_t t = idx[i];
        idx[i] = idx[w];
        idx[w] = t;
        i = w;
    }
}

static void heapify(int32_t *idx, int64_t n, const float *logits) {
    for (int64_t i = n / 2 - 1; i >= 0; i--) sift_down(idx, n, i, logits);
}

/* A heap (from heapify) into best-first order. */
static void heap_to_sorted(int32_t *idx, int64_t n, const float *logits) {
    for (int64_t end = n - 1; end > 0; end--) {
        int32_t t = idx[0];
        idx[0] = idx[end];
        idx[end] = t;
        sift_down(idx, end, 0, logits);
    }
}

/* idx[0 .. k) = the k best tokens, best first: a heap of the k best seen so far, O(V log k). */
static void top_k_sorted(const float *logits, int64_t vocab, int64_t k, int32_t *idx) {
    for (int64_t i = 0; i < k; i++) idx[i] = (int32_t)i;
    heapify(idx, k, logits);
    for (int64_t i = k; i < vocab; i++) {
        if (better(logits, (int32_t)i, idx[0])) {
            idx[0] = (int32_t)i;
            sift_down(idx, k, 0, logits);
        }
    }
    heap_to_sorted(idx, k, logits);
}

cg_status cg_sample_logits(const float *logits, int64_t vocab, const cg_sampling *s, float u, void *work,
                           int32_t *token, float *logprob) {
    if (!logits || !token || !logprob) return cg_set_error(CG_ERR_INVALID_ARG, "sample: NULL logits or output");
    if (vocab <= 0 || vocab > INT32_MAX)
        return cg_set_error(CG_ERR_INVALID_ARG, "sample: vocabulary of %lld tokens", (long long)vocab);
    cg_status st = cg_sampling_validate(s);
    if (st != CG_OK) return st;
    int64_t best = 0;
    for (int64_t i = 0; i < vocab; i++) {
        if (isnan(logits[i]) || logits[i] == INFINITY)
            return cg_set_error(CG_ERR_INVALID_ARG, "sample: logit %lld is %g", (long long)i, (double)logits[i]);
        if (logits[i] > logits[best]) best = i;
    }
    double lmax = logits[best];
    if (isinf(lmax)) return cg_set_error(CG_ERR_INVALID_ARG, "sample: every logit is -inf");
    if (s->temperature == 0.0f) {
        *token = (int32_t)best;
        double sum1 = 0;
        if (s->logprob_mode != CG_LOGPROB_SAMPLED)
            for (int64_t i = 0; i < vocab; i++) sum1 += exp((double)logits[i] - lmax);
        *logprob = s->logprob_mode == CG_LOGPROB_SAMPLED ? 0.0f : (float)(-log(sum1));
        return CG_OK;
    }

    void *owned = NULL;
    if (!work && !(work = owned = malloc(cg_sample_workspace_bytes(vocab))))
        return cg_set_error(CG_ERR_OOM, "sample: cannot allocate the workspace for %lld tokens", (long long)vocab);
    double *p = work;
    int32_t *idx = (int32_t *)(p + vocab);
    double T = s->temperature, sum_all = 0;
    for (int64_t i = 0; i < vocab; i++) sum_all += p[i] = exp(((double)logits[i] - lmax) / T);

    /* the kept tokens: all of them in vocabulary order, or idx[0 .. n_keep) best first */
    bool filtered = false;
    int64_t n_keep = vocab;
    if (s->top_k > 0 && s->top_k < vocab) {
        n_keep = s->top_k;
        top_k_sorted(logits, vocab, n_keep, idx);
        filtered = true;
    }
    if (s->top_p > 0.0f && s->top_p < 1.0f) {
        if (!filtered) {
            /* Only tokens with p >= t can be in the nucleus when the mass below t, < vocab * t, is at most
             * (1 - top_p) of the total: sort just those (the nucleus is a prefix of them). */
            double t = (1.0 - (double)s->top_p) * sum_all / (double)vocab;
            n_keep = 0;
            for (int64_t i = 0; i < vocab; i++)
                if (p[i] >= t) idx[n_keep++] = (int32_t)i;
            heapify(idx, n_keep, logits);
            heap_to_sorted(idx, n_keep, logits);
            filtered = true;
        }
        /* the mass top-p is a share of: the top-k set's, or the whole vocabulary's (not the candidates') */
        double kept = 0;
        if (s->top_k > 0 && s->top_k < vocab)
            for (int64_t j = 0; j < n_keep; j++) kept += p[idx[j]];
        else
            kept = sum_all;
        double target = (double)s->top_p * kept, cum = 0;
        int64_t j = 0;
        while (j < n_keep - 1) {
            cum += p[idx[j]];
            if (cum >= target) break;
            j++;
        }
        n_keep = j + 1;
    }

    double total = 0;
    for (int64_t j = 0; j < n_keep; j++) total += p[filtered ? idx[j] : j];
    double target = (double)u * total, cum = 0;
    int64_t pick = filtered ? idx[n_keep - 1] : n_keep - 1; /* rounding fallback: the last kept token */
    for (int64_t j = 0; j < n_keep; j++) {
        int64_t i = filtered ? idx[j] : j;
        cum += p[i];
        if (cum > target) {
            pick = i;
            break;
        }
    }
    *token = (int32_t)pick;
    double lp;
    if (s->logprob_mode == CG_LOGPROB_SAMPLED) {
        lp = log(p[pick] / total);
    } else if (s->logprob_mode == CG_LOGPROB_SCALED) {
        lp = ((double)logits[pick] - lmax) / T - log(sum_all);
    } else {
        double sum1 = 0;
        for (int64_t i = 0; i < vocab; i++) sum1 += exp((double)logits[i] - lmax);
        lp = (double)logits[pick] - lmax - log(sum1);
    }
    *logprob = (float)lp;
    free(owned);
    return CG_OK;
}

/* ------------------------------------------------------------------ generation */

/* What lives across the steps of one cg_generate call. */
typedef struct gen_state {
    cg_model *m;
    int64_t B, V, P, cache_len;
    cg_kv_cache *kv;
    cg_tensor *tok_in, *pos_in, *mask; /* [B, P] or [B, 1] inputs; mask [B, cache_len] u8 */
    cg_tensor *tok_step, *pos_step;    /* [B, 1]: the decode step's fixed input buffers */
    int32_t *h_tok;                    /* host staging for token / position uploads */
    int64_t *h_pos;
    uint8_t *h_mask;                   /* [B, cache_len] host copy of the mask */
    float *h_logits;                   /* [B, V] */
    cg_arena *arenas[2];               /* the step arenas rewound around each step (device, host) */
    int n_arenas;
} gen_state;

/* Copies host data into a tensor of any device (through a wrapped host view). */
static cg_status upload(cg_tensor *dst, void *host) {
    cg_tensor *src = cg_tensor_wrap(cg_step_arena(CG_CPU), dst->dtype, CG_CPU, dst->ndim, dst->shape, host);
    return src ? cg_copy(dst, src) : cg_last_status();
}

/* One forward of T new tokens per row through the cache: the logits [B, 1, V] of the last position (in the
 * step arenas; the caller rewinds them). With upload, the tokens and positions come from h_tok / h_pos and
 * the mask from h_mask; without, the device buffers already hold them (the CUDA decode loop writes them).
 * The decode step is this with T = 1: the same buffers and shapes every step but the key length. */
static cg_tensor *forward_logits(gen_state *g, cg_tensor *tokens, cg_tensor *positions, bool upload_inputs) {
    int64_t T = tokens->shape[1], S = g->kv->len + T;
    cg_tensor *mask = cg_view_slice(g->mask, 1, 0, S, 1);
    if (!mask) return NULL;
    if (upload_inputs && (upload(tokens, g->h_tok) != CG_OK || upload(positions, g->h_pos) != CG_OK ||
                          upload(g->mask, g->h_mask) != CG_OK))
        return NULL;
    cg_model_inputs in = {.tokens = tokens, .positions = positions, .key_mask = mask, .cache = g->kv};
    cg_tensor *h = cg_model_forward(g->m, &in);
    cg_tensor *last = h ? cg_view_slice(h, 1, T - 1, T, 1) : NULL;
    cg_tensor *logits = last ? cg_model_logits(g->m, last) : NULL; /* [B, 1, V] */
    if (!logits) {
        if (cg_last_status() != CG_OK) cg_error_context("generate: ");
        else cg_set_error(CG_ERR_INTERNAL, "generate: the model gave no logits");
    }
    return logits;
}

typedef struct step_marks {
    cg_arena_mark m[2];
} step_marks;

static step_marks marks_get(const gen_state *g) {
    step_marks k;
    for (int i = 0; i < g->n_arenas; i++) k.m[i] = cg_arena_get_mark(g->arenas[i]);
    return k;
}

static void marks_rewind(const gen_state *g, step_marks k) {
    for (int i = 0; i < g->n_arenas; i++) cg_arena_rewind(g->arenas[i], k.m[i]);
}

/* forward_logits with the logits copied to h_logits; everything it allocates is rewound before it returns. */
static cg_status forward_step(gen_state *g, cg_tensor *tokens, cg_tensor *positions) {
    step_marks k = marks_get(g);
    cg_tensor *logits = forward_logits(g, tokens, positions, true);
    cg_status st = cg_last_status();
    if (logits) {
        int64_t hs[3] = {g->B, 1, g->V};
        cg_tensor *host = cg_tensor_wrap(cg_step_arena(CG_CPU), CG_F32, CG_CPU, 3, hs, g->h_logits);
        st = host ? cg_copy(host, logits) : cg_last_status();
    }
    marks_rewind(g, k);
    return st;
}

static void gen_state_free(gen_state *g) {
    cg_kv_cache_free(g->kv);
    free(g->h_tok);
    free(g->h_pos);
    free(g->h_mask);
    free(g->h_logits);
}

static bool is_stop(const cg_sampling *s, int32_t t) {
    for (int i = 0; i < s->n_stop; i++)
        if (s->stop_tokens[i] == t) return true;
    return false;
}

static cg_status check_prompts(const cg_model *m, const int32_t *const *prompts, const int64_t *lens, int64_t batch) {
    const cg_model_config *c = &m->cfg;
    for (int64_t b = 0; b < batch; b++) {
        if (lens[b] < 1)
            return cg_set_error(CG_ERR_INVALID_ARG, "generate: prompt %lld is empty (%lld tokens); a prompt needs at "
                                "least one token", (long long)b, (long long)lens[b]);
        if (!prompts[b]) return cg_set_error(CG_ERR_INVALID_ARG, "generate: prompt %lld is NULL", (long long)b);
        if (lens[b] >= c->max_seq_len)
            return cg_set_error(CG_ERR_INVALID_ARG, "generate: prompt %lld has %lld tokens; %s takes at most %lld "
                                "(max_seq_len) including a new token", (long long)b, (long long)lens[b], c->name,
                                (long long)c->max_seq_len);
        for (int64_t t = 0; t < lens[b]; t++)
            if (prompts[b][t] < 0 || prompts[b][t] >= c->vocab_size)
                return cg_set_error(CG_ERR_INVALID_ARG, "generate: prompt %lld, token %lld is %d, outside the "
                                    "vocabulary [0, %lld)", (long long)b, (long long)t, (int)prompts[b][t],
                                    (long long)c->vocab_size);
    }
    return CG_OK;
}

/* The result block: the arrays of cg_generation packed after the struct. */
static cg_generation *generation_alloc(int64_t B, int64_t W) {
    size_t n = (size_t)(B * W);
    size_t bytes = sizeof(cg_generation) + n * (sizeof(int32_t) + sizeof(float)) + (size_t)B * (2 * sizeof(int64_t) + 1);
    cg_generation *g = calloc(1, bytes + 16);
    if (!g) return NULL;
    g->batch = B;
    g->max_total = W;
    g->prompt_len = (int64_t *)(g + 1);
    g->gen_len = g->prompt_len + B;
    g->tokens = (int32_t *)(g->gen_len + B);
    g->logprobs = (float *)(g->tokens + n);
    g->stopped = (uint8_t *)(g->logprobs + n);
    for (size_t i = 0; i < n; i++) g->tokens[i] = -1;
    return g;
}

void cg_generation_free(cg_generation *g) { free(g); }

/* Samples row b's next token from h_logits, records it and decides whether the row is done. */
static cg_status sample_row(const gen_state *g, const cg_sampling *s, int64_t b, cg_rng *rng, void *work,
                            int32_t *tok, float *lp) {
    float u = 0.0f;
    if (s->temperature > 0.0f) {
        uint32_t w;
        cg_rng_u32(rng, &w, 1);
        u = cg_rng_unit_f32(w);
    }
    cg_status st = cg_sample_logits(g->h_logits + b * g->V, g->V, s, u, work, tok, lp);
    return st == CG_OK ? st : cg_error_context("generate: row %lld: ", (long long)b);
}

/* The decode loop with the sampler on the host: the prefill, then one step per new token, each step's
 * logits copied to the host. */
static cg_status decode_on_host(gen_state *g, const cg_sampling *s, const int64_t *prompt_lens, const int64_t *budget,
                                int64_t steps, cg_rng *rngs, void *work, int32_t *new_tok, float *new_lp,
                                int64_t *gen_len, uint8_t *stopped) {
    int64_t B = g->B;
    cg_status st = forward_step(g, g->tok_in, g->pos_in);
    for (int64_t step = 0; st == CG_OK && step < steps; step++) {
        if (step > 0) {
            /* feed each row's last token (the pad token for finished rows, hidden from nobody that
             * matters: a finished row's outputs are not read) */
            int64_t col = g->P + step - 1;
            for (int64_t b = 0; b < B; b++) {
                bool live = gen_len[b] == step && !stopped[b] && gen_len[b] < budget[b];
                g->h_tok[b] = live ? new_tok[b * steps + step - 1] : 0;
                g->h_pos[b] = live ? prompt_lens[b] + step - 1 : 0;
                g->h_mask[b * g->cache_len + col] = live;
            }
            if ((st = forward_step(g, g->tok_step, g->pos_step)) != CG_OK) break;
        }
        bool any_live = false;
        for (int64_t b = 0; b < B && st == CG_OK; b++) {
            if (stopped[b] || gen_len[b] >= budget[b]) continue;
            int32_t t;
            float lp;
            if ((st = sample_row(g, s, b, &rngs[b], work, &t, &lp)) != CG_OK) break;
            new_tok[b * steps + gen_len[b]] = t;
            new_lp[b * steps + gen_len[b]] = lp;
            gen_len[b]++;
            if (is_stop(s, t)) stopped[b] = 1;
            any_live |= !stopped[b] && gen_len[b] < budget[b];
        }
        if (!any_live) break;
    }
    return st;
}

#ifdef CG_HAVE_CUDA
/* Rows-still-live is read back every this many steps (a 4-byte copy that waits for the GPU): finished rows
 * in between only cost their share of a step, and nothing else leaves the device until the end. */
#define LIVE_CHECK_EVERY 16

/* A device tensor holding host data (n elements of dtype); NULL host: zeros. */
static cg_tensor *device_array(cg_arena *dev, cg_dtype dt, int64_t n, const void *host) {
    int64_t shape[1] = {n > 0 ? n : 1};
    cg_tensor *t = host ? cg_tensor_empty(dev, dt, 1, shape) : cg_tensor_zeros(dev, dt, 1, shape);
    if (t && host && n > 0 && upload(t, (void *)host) != CG_OK) return NULL;
    return t;
}

static cg_status download(void *host, const cg_tensor *src) {
    cg_tensor *dst = cg_tensor_wrap(cg_step_arena(CG_CPU), src->dtype, CG_CPU, src->ndim, src->shape, host);
    return dst ? cg_copy(dst, src) : cg_last_status();
}

/* The device buffers of one CUDA decode loop. */
typedef struct device_loop {
    cg_cuda_sampler_params sp;
    size_t work_bytes;
    cg_tensor *u_d, *tok_d, *lp_d, *err_d, *live_d, *gen_len_d, *work_d, *n_live_d, *cache_pos_d;
    cg_cuda_gen_rows rows;
} device_loop;

/* After a forward: draws the uniforms, samples every live row from the logits [B, 1, V] and advances the
 * bookkeeping (the step number is the device's). Only kernels, on the compute stream. */
static cg_status sample_and_advance(const gen_state *g, const cg_sampling *s, device_loop *d, const cg_tensor *logits) {
    if (logits->strides[2] != 1 || logits->strides[0] < g->V)
        return cg_set_error(CG_ERR_INTERNAL, "generate: the model's logits are not packed rows");
    cg_status st = CG_OK;
    if (s->temperature > 0.0f)
        st = cg_cuda_sample_uniforms(s->seed, s->first_stream, g->B, cg_data(d->gen_len_d), cg_data(d->live_d),
                                     cg_data(d->u_d));
    if (st == CG_OK)
        st = cg_cuda_sample(cg_data(logits), logits->dtype, g->B, g->V, logits->strides[0], cg_data(d->u_d),
                            cg_data(d->live_d), &d->sp, cg_data(d->work_d), d->work_bytes, cg_data(d->tok_d),
                            cg_data(d->lp_d), cg_data(d->err_d));
    if (st == CG_OK) st = cg_cuda_generate_advance(&d->rows, 0, cg_data(d->tok_d), cg_data(d->lp_d));
    return st;
}

/* The fixed-shape decode step (steps 1..): [B, 1] tokens at device positions into cache column *cache_pos,
 * attention over the whole cache, then sampling and bookkeeping. From the same arena marks it allocates the
 * same addresses and launches the same kernels every time, and nothing in it waits for the GPU: it is what
 * the CUDA graph captures. Its memory is left allocated (the caller rewinds, or keeps it for the graph). */
static cg_status decode_step(gen_state *g, const cg_sampling *s, device_loop *d) {
    cg_model_inputs in = {.tokens = g->tok_step, .positions = g->pos_step, .key_mask = g->mask, .cache = g->kv,
                          .cache_pos = d->cache_pos_d};
    cg_tensor *h = cg_model_forward(g->m, &in);
    cg_tensor *logits = h ? cg_model_logits(g->m, h) : NULL; /* [B, 1, V] */
    if (!logits) {
        if (cg_last_status() != CG_OK) return cg_error_context("generate: ");
        return cg_set_error(CG_ERR_INTERNAL, "generate: the model gave no logits");
    }
    return sample_and_advance(g, s, d, logits);
}

/* Whether this call wants a CUDA graph: cg_sampling.cuda_graphs, else the environment (CG_CUDA_GRAPHS=0: off). */
static bool graphs_wanted(const cg_sampling *s) {
    if (s->cuda_graphs != 0) return s->cuda_graphs > 0;
    const char *env = getenv("CG_CUDA_GRAPHS");
    return !(env && strcmp(env, "0") == 0);
}

/* Captures one decode step into *out (from the current arena marks, which the caller took the uncaptured
 * step 1 from, so the addresses are the ones step 1 used and the matmul heuristics are cached). On success
 * the step's memory stays allocated for the replays; on failure everything is rewound, the error cleared,
 * and the reason returned (static text). */
static const char *capture_step(gen_state *g, const cg_sampling *s, device_loop *d, cg_cuda_graph **out) {
    *out = NULL;
    step_marks k = marks_get(g);
    if (cg_cuda_graph_capture_begin() != CG_OK) {
        cg_clear_error();
        return "cudaStreamBeginCapture failed";
    }
    cg_status st = decode_step(g, s, d);
    /* always leave capture mode; instantiate only a step that was fully recorded */
    cg_status end = cg_cuda_graph_capture_end(st == CG_OK ? out : NULL);
    if (st == CG_OK && end == CG_OK && *out) return NULL;
    cg_cuda_graph_free(*out);
    *out = NULL;
    cg_clear_error();
    marks_rewind(g, k);
    return st != CG_OK ? "a call in the decode step cannot be captured" : "cudaStreamEndCapture or cudaGraphInstantiate failed";
}

/* The decode loop on the GPU: the sampler (cuda/sampler.h) reads the logits where the model wrote them, and
 * the bookkeeping kernel records each live row's token and writes the next step's token, position, mask
 * column and cache column into the decode buffers, so no step uploads anything; the tokens, log-probs,
 * lengths and done flags come back once at the end. Step 0 is the prefill (the prompts, uploaded); steps 1..
 * are decode_step, replayed from a CUDA graph from step 2 on when graphs are wanted. Same rows, same
 * streams, same tokens as decode_on_host. */
static cg_status decode_on_device(gen_state *g, const cg_sampling *s, const int64_t *prompt_lens,
                                  const int64_t *budget, int64_t steps, int32_t *new_tok, float *new_lp,
                                  int64_t *gen_len, uint8_t *stopped, int64_t *graph_steps, const char **graph_note) {
    int64_t B = g->B;
    cg_arena *dev = g->arenas[0];
    device_loop d = {.sp = {.temperature = s->temperature, .top_k = s->top_k, .top_p = s->top_p,
                            .logprob_mode = (int)s->logprob_mode}};
    uint8_t *live0 = malloc((size_t)B);
    if (!live0) return cg_set_error(CG_ERR_OOM, "generate: out of host memory");
    for (int64_t b = 0; b < B; b++) live0[b] = budget[b] > 0;
    d.work_bytes = cg_cuda_sample_workspace_bytes(B, g->V, &d.sp);
    int64_t wb[1] = {(int64_t)(d.work_bytes ? d.work_bytes : 1)}, out_shape[2] = {B, steps};
    cg_tensor *budget_d = device_array(dev, CG_I64, B, budget);
    cg_tensor *plen_d = device_array(dev, CG_I64, B, prompt_lens);
    cg_tensor *stop_d = device_array(dev, CG_I32, s->n_stop, s->n_stop > 0 ? s->stop_tokens : NULL);
    cg_tensor *stopped_d = device_array(dev, CG_U8, B, NULL);
    cg_tensor *step_d = device_array(dev, CG_I64, 1, NULL);
    d.gen_len_d = device_array(dev, CG_I64, B, NULL);
    d.live_d = device_array(dev, CG_U8, B, live0);
    d.err_d = device_array(dev, CG_I32, B, NULL);
    d.u_d = device_array(dev, CG_F32, B, NULL);
    d.tok_d = device_array(dev, CG_I32, B, NULL);
    d.lp_d = device_array(dev, CG_F32, B, NULL);
    d.n_live_d = device_array(dev, CG_I32, 1, NULL);
    d.cache_pos_d = device_array(dev, CG_I64, 1, NULL);
    cg_tensor *out_tok_d = cg_tensor_zeros(dev, CG_I32, 2, out_shape);
    cg_tensor *out_lp_d = cg_tensor_zeros(dev, CG_F32, 2, out_shape);
    d.work_d = cg_tensor_empty(dev, CG_U8, 1, wb);
    free(live0);
    if (!budget_d || !plen_d || !stop_d || !stopped_d || !step_d || !d.gen_len_d || !d.live_d || !d.err_d ||
        !d.u_d || !d.tok_d || !d.lp_d || !d.n_live_d || !d.cache_pos_d || !out_tok_d || !out_lp_d || !d.work_d)
        return cg_error_context("generate: ");
    d.rows = (cg_cuda_gen_rows){.batch = B, .steps = steps, .prompt_cols = g->P, .cache_len = g->cache_len,
                                .budget = cg_data(budget_d), .prompt_len = cg_data(plen_d), .stop = cg_data(stop_d),
                                .n_stop = s->n_stop, .gen_len = cg_data(d.gen_len_d), .stopped = cg_data(stopped_d),
                                .live = cg_data(d.live_d), .out_tokens = cg_data(out_tok_d),
                                .out_logprobs = cg_data(out_lp_d), .tok_step = cg_data(g->tok_step),
                                .pos_step = cg_data(g->pos_step), .mask = cg_data(g->mask),
                                .n_live = cg_data(d.n_live_d), .step_dev = cg_data(step_d),
                                .cache_pos = cg_data(d.cache_pos_d)};
    bool want_graph = graphs_wanted(s);
    cg_cuda_graph *graph = NULL;
    cg_status st = CG_OK;
    for (int64_t step = 0; st == CG_OK && step < steps; step++) {
        if (graph) { /* steps 3..: the replay; nothing is allocated */
            if ((st = cg_cuda_graph_launch(graph)) == CG_OK) ++*graph_steps;
        } else if (step == 0) { /* the prefill: T = P, the prompts uploaded, the cache's prefix */
            step_marks k = marks_get(g);
            cg_tensor *logits = forward_logits(g, g->tok_in, g->pos_in, true);
            st = logits ? sample_and_advance(g, s, &d, logits) : cg_last_status();
            marks_rewind(g, k); /* later kernels reusing this memory queue after the sampler's */
        } else if (want_graph && step >= 2 && !*graph_note) {
            /* step 1 ran plainly from these marks: capture the same step, then replay it for this one */
            *graph_note = capture_step(g, s, &d, &graph);
            if (graph) {
                if ((st = cg_cuda_graph_launch(graph)) == CG_OK) ++*graph_steps;
            } else {
                step_marks k = marks_get(g);
                st = decode_step(g, s, &d);
                marks_rewind(g, k);
            }
        } else {
            step_marks k = marks_get(g);
            st = decode_step(g, s, &d);
            marks_rewind(g, k);
        }
        if (st != CG_OK) break;
        if ((step + 1) % LIVE_CHECK_EVERY == 0 || step + 1 == steps) {
            int32_t n_live = 0;
            if ((st = download(&n_live, d.n_live_d)) != CG_OK || n_live == 0) break;
        }
    }
    if (graph) { /* no replay may still read the graph's memory when the caller rewinds it */
        cg_status sync = cg_device_synchronize(g->m->device);
        if (st == CG_OK) st = sync;
        cg_cuda_graph_free(graph);
    }
    if (st != CG_OK) return cg_error_context("generate: ");
    int32_t *err = malloc(sizeof(int32_t) * (size_t)B);
    if (!err) return cg_set_error(CG_ERR_OOM, "generate: out of host memory");
    if ((st = download(err, d.err_d)) == CG_OK && (st = download(gen_len, d.gen_len_d)) == CG_OK &&
        (st = download(stopped, stopped_d)) == CG_OK && (st = download(new_tok, out_tok_d)) == CG_OK)
        st = download(new_lp, out_lp_d);
    for (int64_t b = 0; st == CG_OK && b < B; b++)
        if (err[b] != CG_CUDA_SAMPLE_OK)
            st = cg_set_error(CG_ERR_INVALID_ARG, "generate: row %lld: sample: %s", (long long)b,
                              err[b] == CG_CUDA_SAMPLE_BAD_LOGIT ? "a logit is NaN or +inf" : "every logit is -inf");
    free(err);
    return st;
}
#endif
cg_status cg_generate(cg_model *m, const int32_t *const *prompts, const int64_t *prompt_lens, int64_t batch,
                      const cg_sampling *s, cg_generation **out) {
    if (!m || !prompts || !prompt_lens || !out)
        return cg_set_error(CG_ERR_INVALID_ARG, "generate: NULL model, prompts, prompt_lens or output");
    if (batch <= 0) return cg_set_error(CG_ERR_INVALID_ARG, "generate: batch %lld must be > 0", (long long)batch);
    cg_status st = cg_sampling_validate(s);
    if (st != CG_OK) return cg_error_context("generate: ");
    if ((st = check_prompts(m, prompts, prompt_lens, batch)) != CG_OK) return st;
    if (!cg_step_arena(m->device) || !cg_step_arena(CG_CPU)) return cg_error_context("generate: ");

    const cg_model_config *c = &m->cfg;
    gen_state g = {.m = m, .B = batch, .V = c->vocab_size};
    int64_t B = batch, steps = 0, graph_steps = 0;
    const char *graph_note = NULL;
    int64_t *budget = calloc((size_t)B, sizeof *budget), *gen_len = calloc((size_t)B, sizeof *gen_len);
    uint8_t *stopped = calloc((size_t)B, 1);
    cg_rng *rngs = calloc((size_t)B, sizeof *rngs);
    for (int64_t b = 0; b < B; b++) {
        g.P = prompt_lens[b] > g.P ? prompt_lens[b] : g.P;
        /* a row's total length stays within max_seq_len */
        int64_t room = c->max_seq_len - prompt_lens[b];
        if (budget) budget[b] = s->max_new_tokens < room ? s->max_new_tokens : room;
        if (budget && budget[b] > steps) steps = budget[b];
    }
    g.cache_len = g.P + (steps > 1 ? steps - 1 : 0); /* the last sampled token is never fed back */
    int32_t *new_tok = malloc(sizeof(int32_t) * (size_t)(B * (steps ? steps : 1)));
    float *new_lp = malloc(sizeof(float) * (size_t)(B * (steps ? steps : 1)));
    void *work = malloc(cg_sample_workspace_bytes(g.V));
    g.h_tok = malloc(sizeof(int32_t) * (size_t)(B * g.P));
    g.h_pos = malloc(sizeof(int64_t) * (size_t)(B * g.P));
    g.h_mask = calloc((size_t)(B * g.cache_len), 1);
    g.h_logits = malloc(sizeof(float) * (size_t)(B * g.V));
    if (!budget || !gen_len || !stopped || !rngs || !new_tok || !new_lp || !work || !g.h_tok || !g.h_pos ||
        !g.h_mask || !g.h_logits) {
        st = cg_set_error(CG_ERR_OOM, "generate: out of host memory for %lld rows of %lld tokens", (long long)B,
                          (long long)g.cache_len);
        goto cleanup_host;
    }
    cg_rng base = cg_rng_init(s->seed);
    for (int64_t b = 0; b < B; b++) rngs[b] = cg_rng_fork(&base, s->first_stream + (uint64_t)b);

    if (steps > 0) {
        /* every op output goes to the step arenas (rewound below), whatever the caller redirected */
        cg_arena *prev_out[2] = {cg_set_output_arena(m->device, NULL), cg_set_output_arena(CG_CPU, NULL)};
        g.arenas[g.n_arenas++] = cg_step_arena(m->device);
        if (cg_step_arena(CG_CPU) != g.arenas[0]) g.arenas[g.n_arenas++] = cg_step_arena(CG_CPU);
        cg_arena_mark entry[2];
        for (int i = 0; i < g.n_arenas; i++) entry[i] = cg_arena_get_mark(g.arenas[i]);
        cg_no_grad_enter();
        st = cg_kv_cache_create(m, B, g.cache_len, &g.kv);
        cg_arena *dev = g.arenas[0];
        int64_t sp[2] = {B, g.P}, s1[2] = {B, 1}, sm[2] = {B, g.cache_len};
        if (st == CG_OK) {
            g.tok_in = cg_tensor_empty(dev, CG_I32, 2, sp);
            g.pos_in = cg_tensor_empty(dev, CG_I64, 2, sp);
            g.tok_step = cg_tensor_empty(dev, CG_I32, 2, s1);
            g.pos_step = cg_tensor_empty(dev, CG_I64, 2, s1);
            g.mask = cg_tensor_empty(dev, CG_U8, 2, sm);
            if (!g.tok_in || !g.pos_in || !g.tok_step || !g.pos_step || !g.mask) st = cg_last_status();
        }
        /* the prompts, left-padded with token 0 at position 0, the pads hidden by the mask */
        if (st == CG_OK) {
            for (int64_t b = 0; b < B; b++) {
                int64_t pad = g.P - prompt_lens[b];
                for (int64_t t = 0; t < g.P; t++) {
                    bool real = t >= pad;
                    g.h_tok[b * g.P + t] = real ? prompts[b][t - pad] : 0;
                    g.h_pos[b * g.P + t] = real ? t - pad : 0;
                    g.h_mask[b * g.cache_len + t] = real;
                }
            }
        }
#ifdef CG_HAVE_CUDA
        if (st == CG_OK && m->device.type == CG_DEVICE_CUDA)
            st = decode_on_device(&g, s, prompt_lens, budget, steps, new_tok, new_lp, gen_len, stopped, &graph_steps,
                                  &graph_note);
        else
#endif
            if (st == CG_OK)
            st = decode_on_host(&g, s, prompt_lens, budget, steps, rngs, work, new_tok, new_lp, gen_len, stopped);
        cg_no_grad_exit();
        for (int i = 0; i < g.n_arenas; i++) cg_arena_rewind(g.arenas[i], entry[i]);
        cg_set_output_arena(CG_CPU, prev_out[1]); /* reverse order: right when the device is the CPU */
        cg_set_output_arena(m->device, prev_out[0]);
    }

    if (st == CG_OK) {
        int64_t W = 0;
        for (int64_t b = 0; b < B; b++) W = prompt_lens[b] + gen_len[b] > W ? prompt_lens[b] + gen_len[b] : W;
        cg_generation *r = generation_alloc(B, W);
        if (!r) {
            st = cg_set_error(CG_ERR_OOM, "generate: out of host memory for the result (%lld x %lld)", (long long)B,
                              (long long)W);
            goto cleanup_host;
        }
        r->graph_steps = graph_steps;
        r->graph_note = graph_note;
        for (int64_t b = 0; b < B; b++) {
            int64_t L = prompt_lens[b];
            r->prompt_len[b] = L;
            r->gen_len[b] = gen_len[b];
            r->stopped[b] = stopped[b];
            memcpy(r->tokens + b * W, prompts[b], sizeof(int32_t) * (size_t)L);
            for (int64_t t = 0; t < gen_len[b]; t++) {
                r->tokens[b * W + L + t] = new_tok[b * steps + t];
                r->logprobs[b * W + L + t] = new_lp[b * steps + t];
            }
        }
        *out = r;
    }
cleanup_host:
    gen_state_free(&g);
    free(budget);
    free(gen_len);
    free(stopped);
    free(rngs);
    free(new_tok);
    free(new_lp);
    free(work);
    return st;
}
