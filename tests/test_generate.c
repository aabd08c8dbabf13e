/* Generation: the sampler against naive computations in the test (greedy, the documented inverse-CDF draw,
 * top-k, top-p, each log-prob mode, frequencies over many draws), batched generation with the KV cache
 * against a reference that recomputes every row alone without a cache at every step (greedy and seeded
 * sampling, stop tokens, budgets, the max_seq_len cap), row independence of the random streams, flat
 * memory over long decodes, argument errors, and the `cgrad generate` command. */
#include <sys/wait.h>
#include <unistd.h>

#include "test_util.h"

#include "models/checkpoint.h"
#include "models/lora.h"

#include "models/generate.h"

/* ------------------------------------------------------------------ naive references */

/* log_softmax(logits / T)[i] in double */
static double naive_logprob(const float *logits, int64_t V, double T, int64_t i) {
    double mx = -INFINITY, sum = 0;
    for (int64_t j = 0; j < V; j++) mx = fmax(mx, logits[j] / T);
    for (int64_t j = 0; j < V; j++) sum += exp(logits[j] / T - mx);
    return logits[i] / T - mx - log(sum);
}

/* Tokens ranked best first (larger logit, then smaller index), by selection: O(V^2), obviously right. */
static void naive_rank(const float *logits, int64_t V, int64_t *order) {
    bool *used = calloc((size_t)V, 1);
    assert_non_null(used);
    for (int64_t r = 0; r < V; r++) {
        int64_t best = -1;
        for (int64_t j = 0; j < V; j++)
            if (!used[j] && (best < 0 || logits[j] > logits[best])) best = j;
        used[best] = true;
        order[r] = best;
    }
    free(used);
}

/* The kept set of the documented sampler as probabilities over the vocabulary (0 for dropped tokens,
 * renormalised), and whether the draw walks in ranked order. */
static bool naive_kept(const float *logits, int64_t V, double T, int top_k, double top_p, double *q) {
    int64_t *order = malloc(sizeof(int64_t) * (size_t)V);
    assert_non_null(order);
    naive_rank(logits, V, order);
    double sum = 0;
    for (int64_t j = 0; j < V; j++) sum += q[j] = exp(naive_logprob(logits, V, T, j));
    (void)sum;
    int64_t keep = top_k > 0 && top_k < V ? top_k : V;
    if (top_p < 1.0) {
        double kept = 0, cum = 0;
        for (int64_t r = 0; r < keep; r++) kept += q[order[r]];
        int64_t n = 0;
        while (n < keep) {
            cum += q[order[n++]];
            if (cum >= top_p * kept) break;
        }
        keep = n;
    }
    double total = 0;
    for (int64_t r = 0; r < V; r++) {
        if (r >= keep) q[order[r]] = 0;
        else total += q[order[r]];
    }
    for (int64_t j = 0; j < V; j++) q[j] /= total;
    free(order);
    return (top_k > 0 && top_k < V) || top_p < 1.0;
}

/* The documented draw: the first token (ranked order when filtered, vocabulary order otherwise) whose
 * running probability exceeds u. */
static int64_t naive_draw(const float *logits, int64_t V, const double *q, bool ranked, double u) {
    int64_t *order = malloc(sizeof(int64_t) * (size_t)V);
    assert_non_null(order);
    if (ranked) naive_rank(logits, V, order);
    else
        for (int64_t j = 0; j < V; j++) order[j] = j;
    double cum = 0;
    int64_t pick = -1;
    for (int64_t r = 0; r < V && pick < 0; r++) {
        cum += q[order[r]];
        if (q[order[r]] > 0 && cum > u) pick = order[r];
    }
    free(order);
    return pick;
}

/* ------------------------------------------------------------------ the sampler */

static const float fixed_logits[8] = {1.0f, 3.0f, -0.5f, 2.5f, 0.0f, 3.0f, -2.0f, 1.5f}; /* a tie: 1 and 5 */

static void test_sampler_greedy_and_modes(void **state) {
    (void)state;
    const float *l = fixed_logits;
    int32_t tok;
    float lp;
    cg_sampling s = {.temperature = 0};
    assert_ok(cg_sample_logits(l, 8, &s, 0.3f, NULL, &tok, &lp));
    assert_int_equal(tok, 1); /* the first of the tied maxima */
    assert_close(lp, naive_logprob(l, 8, 1.0, 1), 1e-6, 1e-7);
    s.logprob_mode = CG_LOGPROB_SAMPLED;
    assert_ok(cg_sample_logits(l, 8, &s, 0.3f, NULL, &tok, &lp));
    assert_true(lp == 0.0f);
    /* sampling at T = 0.7 with every log-prob mode, against the naive values of the drawn token */
    double q[8];
    for (int mode = 0; mode < 3; mode++) {
        cg_sampling t = {.temperature = 0.7f, .top_k = 5, .top_p = 0.8f, .logprob_mode = (cg_logprob_mode)mode};
        bool ranked = naive_kept(l, 8, 0.7, 5, (double)0.8f, q);
        for (int k = 0; k < 20; k++) {
            float u = (float)k / 20.0f + 0.01f;
            assert_ok(cg_sample_logits(l, 8, &t, u, NULL, &tok, &lp));
            assert_int_equal(tok, naive_draw(l, 8, q, ranked, u));
            double want = mode == CG_LOGPROB_SCALED ? naive_logprob(l, 8, 0.7, tok)
                          : mode == CG_LOGPROB_RAW  ? naive_logprob(l, 8, 1.0, tok)
                                                    : log(q[tok]);
            assert_close(lp, want, 1e-6, 1e-6);
        }
    }
    /* boundaries: a zero-probability token is never drawn, even at u = 0; the nucleus of four equal tokens at
     * top_p 0.5 is exactly the first two (cumulative 0.5 >= 0.5 stops there) */
    float edge[3] = {-INFINITY, 0.0f, 1.0f};
    cg_sampling one = {.temperature = 1.0f};
    assert_ok(cg_sample_logits(edge, 3, &one, 0.0f, NULL, &tok, &lp));
    assert_int_equal(tok, 1);
    float flat[4] = {0.5f, 0.5f, 0.5f, 0.5f};
    cg_sampling half = {.temperature = 1.0f, .top_p = 0.5f, .logprob_mode = CG_LOGPROB_SAMPLED};
    assert_ok(cg_sample_logits(flat, 4, &half, 0.99f, NULL, &tok, &lp));
    assert_int_equal(tok, 1);
    assert_close(lp, log(0.5), 1e-6, 0);
    assert_ok(cg_sample_logits(flat, 4, &half, 0.49f, NULL, &tok, &lp));
    assert_int_equal(tok, 0);
    /* no filter: the draw walks the vocabulary in index order (the documented contract the CUDA side copies) */
    cg_sampling plain = {.temperature = 1.0f};
    naive_kept(l, 8, 1.0, 0, 1.0, q);
    for (int k = 0; k < 50; k++) {
        float u = (float)k / 50.0f;
        assert_ok(cg_sample_logits(l, 8, &plain, u, NULL, &tok, &lp));
        assert_int_equal(tok, naive_draw(l, 8, q, false, u));
    }
}

static void test_sampler_filters_reduce_to_greedy(void **state) {
    (void)state;
    uint64_t seed = 77;
    float l[300];
    for (int i = 0; i < 300; i++) l[i] = 3.0f * cg_test_randf(&seed);
    int64_t argmax = 0;
    for (int i = 1; i < 300; i++)
        if (l[i] > l[argmax]) argmax = i;
    void *work = malloc(cg_sample_workspace_bytes(300));
    assert_non_null(work);
    cg_sampling k1 = {.temperature = 1.3f, .top_k = 1}, p0 = {.temperature = 1.3f, .top_p = 1e-6f};
    for (int k = 0; k < 32; k++) {
        int32_t a, b;
        float la, lb;
        float u = (float)k / 32.0f;
        assert_ok(cg_sample_logits(l, 300, &k1, u, work, &a, &la));
        assert_ok(cg_sample_logits(l, 300, &p0, u, work, &b, &lb));
        assert_int_equal(a, argmax);
        assert_int_equal(b, argmax);
        assert_close(la, naive_logprob(l, 300, 1.3, argmax), 1e-6, 1e-6);
    }
    /* a wide, peaky vocabulary, where most tokens fall outside the nucleus: the documented draw exactly */
    for (int i = 0; i < 300; i++) l[i] *= 4.0f;
    double *q = malloc(sizeof(double) * 300);
    assert_non_null(q);
    for (int c = 0; c < 3; c++) {
        int top_k = c == 1 ? 40 : 0;
        float top_p = c == 2 ? 1.0f : 0.9f;
        cg_sampling s = {.temperature = 0.9f, .top_k = top_k, .top_p = top_p, .logprob_mode = CG_LOGPROB_SAMPLED};
        bool ranked = naive_kept(l, 300, (double)0.9f, top_k, (double)top_p, q);
        int kept = 0;
        for (int i = 0; i < 300; i++) kept += q[i] > 0;
        assert_true(c == 2 ? kept == 300 : kept > 3 && kept < 40);
        for (int k = 0; k < 64; k++) {
            int32_t tok;
            float lp, u = ((float)k + 0.5f) / 64.0f;
            assert_ok(cg_sample_logits(l, 300, &s, u, work, &tok, &lp));
            assert_int_equal(tok, naive_draw(l, 300, q, ranked, u));
            assert_close(lp, log(q[tok]), 1e-6, 1e-6);
        }
    }
    free(q);
    free(work);
}

/* Frequencies over many draws match the distribution within 5 standard deviations per token; filtered-out
 * tokens never appear. */
static void check_frequencies(const cg_sampling *s, int top_k, double top_p) {
    const int64_t V = 8, N = 40000;
    double q[8];
    naive_kept(fixed_logits, V, s->temperature, top_k, top_p, q);
    int64_t counts[8] = {0};
    cg_rng rng = cg_rng_init(2024);
    uint32_t *w = malloc(sizeof(uint32_t) * N);
    assert_non_null(w);
    cg_rng_u32(&rng, w, N);
    for (int64_t n = 0; n < N; n++) {
        int32_t tok;
        float lp;
        assert_ok(cg_sample_logits(fixed_logits, V, s, cg_rng_unit_f32(w[n]), NULL, &tok, &lp));
        counts[tok]++;
    }
    free(w);
    for (int64_t j = 0; j < V; j++) {
        double mean = (double)N * q[j], sd = sqrt((double)N * q[j] * (1 - q[j]));
        if (q[j] == 0) assert_int_equal(counts[j], 0);
        else assert_true(fabs((double)counts[j] - mean) <= 5 * sd + 1);
    }
}

static void test_sampler_frequencies(void **state) {
    (void)state;
    cg_sampling plain = {.temperature = 1.0f};
    check_frequencies(&plain, 0, 1.0);
    cg_sampling hot = {.temperature = 2.0f};
    check_frequencies(&hot, 0, 1.0);
    cg_sampling k3 = {.temperature = 1.0f, .top_k = 3};
    check_frequencies(&k3, 3, 1.0);
    cg_sampling p7 = {.temperature = 1.0f, .top_p = 0.7f};
    check_frequencies(&p7, 0, (double)0.7f);
}

static void test_sampler_errors(void **state) {
    (void)state;
    float l[3] = {0.0f, NAN, 1.0f};
    int32_t tok = 5;
    float lp;
    cg_sampling s = {.temperature = 1.0f};
    assert_int_equal(cg_sample_logits(l, 3, &s, 0.5f, NULL, &tok, &lp), CG_ERR_INVALID_ARG);
    assert_error_contains("logit 1 is nan");
    float ninf[2] = {-INFINITY, -INFINITY};
    assert_int_equal(cg_sample_logits(ninf, 2, &s, 0.5f, NULL, &tok, &lp), CG_ERR_INVALID_ARG);
    assert_error_contains("every logit is -inf");
    s.temperature = -0.5f;
    assert_int_equal(cg_sample_logits(fixed_logits, 8, &s, 0.5f, NULL, &tok, &lp), CG_ERR_INVALID_ARG);
    assert_error_contains("temperature -0.5 must be finite and >= 0");
    s = (cg_sampling){.temperature = 1, .top_p = 1.5f};
    assert_int_equal(cg_sampling_validate(&s), CG_ERR_INVALID_ARG);
    assert_error_contains("top_p 1.5 must be in (0, 1]");
    s.top_p = -0.1f;
    assert_int_equal(cg_sampling_validate(&s), CG_ERR_INVALID_ARG);
    s = (cg_sampling){.top_k = -2};
    assert_int_equal(cg_sampling_validate(&s), CG_ERR_INVALID_ARG);
    assert_error_contains("top_k -2");
    s = (cg_sampling){.n_stop = 2};
    assert_int_equal(cg_sampling_validate(&s), CG_ERR_INVALID_ARG);
    assert_error_contains("2 stop tokens but stop_tokens is NULL");
    assert_int_equal(tok, 5); /* untouched on error */
}

/* ------------------------------------------------------------------ generation vs recomputation */

static cg_model *tiny(const char *preset, uint64_t seed) { return cg_test_tiny_model(preset, seed, 500); }

/* Prompts of random ids; ptr points into data, so a prompts value must not be copied once made. */
typedef struct prompts {
    int64_t n, len[4];
    int32_t data[4][130];
    const int32_t *ptr[4];
} prompts;

static void make_prompts(prompts *pp, int64_t n, const int64_t *lens, uint64_t seed, int64_t vocab) {
    prompts p = {.n = n};
    for (int64_t b = 0; b < n; b++) {
        p.len[b] = lens[b];
        for (int64_t t = 0; t < lens[b]; t++) {
            seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
            p.data[b][t] = (int32_t)(seed % (uint64_t)vocab);
        }
    }
    *pp = p;
    for (int64_t b = 0; b < n; b++) pp->ptr[b] = pp->data[b];
}

/* Row b alone, recomputing the whole sequence without a cache for every new token, with the documented
 * per-row stream (stream b of the seed, one word per sampled token). Returns the new-token count. */
static int64_t reference_row(cg_model *m, const int32_t *prompt, int64_t len, int64_t b, const cg_sampling *s,
                             int32_t *toks, float *lps, bool *stopped) {
    int64_t V = m->cfg.vocab_size, n = 0;
    int32_t seq[256];
    memcpy(seq, prompt, sizeof(int32_t) * (size_t)len);
    cg_rng base = cg_rng_init(s->seed), rng = cg_rng_fork(&base, (uint64_t)b);
    *stopped = false;
    cg_no_grad_enter();
    while (n < s->max_new_tokens && len + n < m->cfg.max_seq_len) {
        cg_arena_mark mk = cg_arena_get_mark(cg_step_arena(CG_CPU));
        int64_t shape[2] = {1, len + n};
        cg_tensor *tok = cg_tensor_from_data(cg_step_arena(CG_CPU), CG_I32, 2, shape, seq);
        cg_model_inputs in = {.tokens = tok};
        cg_tensor *h = cg_model_forward(m, &in);
        assert_non_null(h);
        cg_tensor *logits = cg_contiguous(cg_model_logits(m, cg_view_slice(h, 1, len + n - 1, len + n, 1)));
        assert_non_null(logits);
        float u = 0;
        if (s->temperature > 0) {
            uint32_t w;
            cg_rng_u32(&rng, &w, 1);
            u = cg_rng_unit_f32(w);
        }
        assert_ok(cg_sample_logits(cg_data(logits), V, s, u, NULL, &toks[n], &lps[n]));
        cg_arena_rewind(cg_step_arena(CG_CPU), mk);
        seq[len + n] = toks[n];
        n++;
        bool stop = false;
        for (int i = 0; i < s->n_stop; i++) stop |= toks[n - 1] == s->stop_tokens[i];
        if (stop) {
            *stopped = true;
            break;
        }
    }
    cg_no_grad_exit();
    return n;
}

/* cg_generate on the batch equals the per-row reference: tokens exactly, log-probs to 1e-5. Returns the
 * number of distinct new tokens (so callers can check the run is not degenerate). */
static int check_against_reference(cg_model *m, const prompts *p, const cg_sampling *s) {
    cg_generation *g = NULL;
    assert_ok(cg_generate(m, p->ptr, p->len, p->n, s, &g));
    assert_int_equal(g->batch, p->n);
    bool seen[64] = {false};
    int distinct = 0;
    int64_t widest = 0;
    for (int64_t b = 0; b < p->n; b++) {
        int32_t toks[256];
        float lps[256];
        bool stopped;
        int64_t n = reference_row(m, p->data[b], p->len[b], b, s, toks, lps, &stopped);
        assert_int_equal(g->prompt_len[b], p->len[b]);
        assert_int_equal(g->gen_len[b], n);
        assert_int_equal(g->stopped[b], stopped);
        const int32_t *row = g->tokens + b * g->max_total;
        const float *lrow = g->logprobs + b * g->max_total;
        for (int64_t t = 0; t < p->len[b]; t++) {
            assert_int_equal(row[t], p->data[b][t]);
            assert_true(lrow[t] == 0.0f);
        }
        for (int64_t t = 0; t < n; t++) {
            if (row[p->len[b] + t] != toks[t])
                print_error("row %lld new token %lld: %d, reference %d\n", (long long)b, (long long)t,
                            row[p->len[b] + t], toks[t]);
            assert_int_equal(row[p->len[b] + t], toks[t]);
            assert_close(lrow[p->len[b] + t], lps[t], 1e-5, 1e-5);
            assert_true(lps[t] <= 0.0f);
            if (toks[t] < 64 && !seen[toks[t]]) seen[toks[t]] = true, distinct++;
        }
        for (int64_t t = p->len[b] + n; t < g->max_total; t++) {
            assert_int_equal(row[t], -1);
            assert_true(lrow[t] == 0.0f);
        }
        if (p->len[b] + n > widest) widest = p->len[b] + n;
    }
    assert_int_equal(g->max_total, widest);
    cg_generation_free(g);
    return distinct;
}

static void check_model_generation(const char *preset) {
    cg_model *m = tiny(preset, 13);
    int64_t lens[3] = {1, 4, 7};
    prompts p;
    make_prompts(&p, 3, lens, 99, m->cfg.vocab_size);
    cg_sampling greedy = {.temperature = 0, .max_new_tokens = 12};
    int distinct = check_against_reference(m, &p, &greedy);
    print_message("%s: %d distinct greedy tokens\n", preset, distinct);
    assert_true(distinct >= 3);
    cg_sampling sampled = {.temperature = 0.8f, .top_k = 10, .top_p = 0.9f, .max_new_tokens = 12, .seed = 1234};
    assert_true(check_against_reference(m, &p, &sampled) >= 5);
    cg_sampling plain = {.temperature = 1.0f, .max_new_tokens = 9, .seed = 7, .logprob_mode = CG_LOGPROB_RAW};
    assert_true(check_against_reference(m, &p, &plain) >= 5);

    /* stop tokens: take tokens the unstopped run produces in rows 1 and 2 and stop on them */
    cg_generation *g = NULL;
    assert_ok(cg_generate(m, p.ptr, p.len, 3, &sampled, &g));
    int32_t stops[2] = {g->tokens[1 * g->max_total + 4 + 3], g->tokens[2 * g->max_total + 7 + 1]};
    cg_generation_free(g);
    cg_sampling stopping = sampled;
    stopping.stop_tokens = stops;
    stopping.n_stop = 2;
    check_against_reference(m, &p, &stopping);
    assert_ok(cg_generate(m, p.ptr, p.len, 3, &stopping, &g));
    assert_true(g->gen_len[1] <= 4 && g->gen_len[2] <= 2); /* each ends at its first stop token, kept */
    assert_true(g->stopped[1] && g->stopped[2]);
    int32_t last1 = g->tokens[1 * g->max_total + 4 + g->gen_len[1] - 1];
    assert_true(last1 == stops[0] || last1 == stops[1]);
    cg_generation_free(g);
    cg_model_free(m);
}

static void test_generation_matches_recomputation_gpt2(void **state) {
    (void)state;
    check_model_generation("gpt2:tiny");
}

static void test_generation_matches_recomputation_llama(void **state) {
    (void)state;
    check_model_generation("llama:tiny");
}

/* The budget: max_new 0 returns the prompts; a row stops at max_seq_len (gpt2:tiny has 128 positions). */
static void test_budgets_and_length_cap(void **state) {
    (void)state;
    cg_model *m = tiny("gpt2:tiny", 8);
    int64_t lens[2] = {125, 3};
    prompts p;
    make_prompts(&p, 2, lens, 4, m->cfg.vocab_size);
    cg_sampling s = {.temperature = 0.9f, .max_new_tokens = 6, .seed = 3};
    check_against_reference(m, &p, &s);
    cg_generation *g = NULL;
    assert_ok(cg_generate(m, p.ptr, p.len, 2, &s, &g));
    assert_int_equal(g->gen_len[0], 3); /* 125 + 3 = 128 */
    assert_int_equal(g->gen_len[1], 6);
    assert_int_equal(g->max_total, 128);
    assert_false(g->stopped[0]);
    cg_generation_free(g);
    s.max_new_tokens = 0;
    assert_ok(cg_generate(m, p.ptr, p.len, 2, &s, &g));
    assert_int_equal(g->max_total, 125);
    assert_int_equal(g->gen_len[0] + g->gen_len[1], 0);
    assert_int_equal(g->tokens[1 * 125 + 2], p.data[1][2]);
    assert_int_equal(g->tokens[1 * 125 + 3], -1);
    cg_generation_free(g);
    cg_model_free(m);
}

/* A row's tokens depend on its index, prompt and seed only: changing another row (and so the padding)
 * leaves it alone; a different seed changes it. */
static void test_rows_are_independent(void **state) {
    (void)state;
    cg_model *m = tiny("llama:tiny", 12);
    int64_t lens_a[3] = {3, 5, 2}, lens_b[3] = {3, 9, 2};
    prompts a, b;
    make_prompts(&a, 3, lens_a, 17, 64);
    make_prompts(&b, 3, lens_b, 17, 64);
    memcpy(b.data[0], a.data[0], sizeof a.data[0]);
    memcpy(b.data[2], a.data[2], sizeof a.data[2]);
    b.data[1][0] ^= 1;
    cg_sampling s = {.temperature = 1.0f, .max_new_tokens = 10, .seed = 5};
    cg_generation *ga = NULL, *gb = NULL, *gc = NULL;
    assert_ok(cg_generate(m, a.ptr, a.len, 3, &s, &ga));
    assert_ok(cg_generate(m, b.ptr, b.len, 3, &s, &gb));
    s.seed = 6;
    assert_ok(cg_generate(m, a.ptr, a.len, 3, &s, &gc));
    int differ = 0;
    for (int64_t r = 0; r < 3; r += 2) {
        for (int64_t t = 0; t < 13; t++) {
            if (t >= lens_a[r] + 10) break;
            assert_int_equal(ga->tokens[r * ga->max_total + t], gb->tokens[r * gb->max_total + t]);
            assert_close(ga->logprobs[r * ga->max_total + t], gb->logprobs[r * gb->max_total + t], 1e-5, 1e-5);
            differ += ga->tokens[r * ga->max_total + t] != gc->tokens[r * gc->max_total + t];
        }
    }
    assert_true(differ > 3);
    cg_generation_free(ga);
    cg_generation_free(gb);
    cg_generation_free(gc);
    cg_model_free(m);
}

/* Decoding N tokens does not grow memory: the step arena is back where it was, and its peak for 60 new
 * tokens is the peak for 4 (the prompt step dominates). */
static size_t step_peak_for(cg_model *m, const prompts *p, int64_t max_new) {
    cg_shutdown();
    cg_tensor *held = cg_tensor_zeros(cg_step_arena(CG_CPU), CG_F32, 1, (int64_t[]){100});
    cg_set_flat(held, 7, 3.5);
    size_t before = cg_arena_get_stats(cg_step_arena(CG_CPU)).used;
    cg_sampling s = {.temperature = 1.0f, .max_new_tokens = max_new, .seed = 1};
    cg_generation *g = NULL;
    assert_ok(cg_generate(m, p->ptr, p->len, p->n, &s, &g));
    assert_int_equal(g->gen_len[0], max_new);
    cg_generation_free(g);
    cg_arena_stats st = cg_arena_get_stats(cg_step_arena(CG_CPU));
    assert_int_equal(st.used, before);
    assert_true(cg_get_flat(held, 7) == 3.5); /* the caller's step tensors survive */
    return st.peak;
}

static void test_memory_is_flat(void **state) {
    (void)state;
    cg_model *m = tiny("gpt2:tiny", 2);
    int64_t lens[2] = {20, 13};
    prompts p;
    make_prompts(&p, 2, lens, 1, 64);
    size_t short_peak = step_peak_for(m, &p, 4), long_peak = step_peak_for(m, &p, 60);
    print_message("step arena peak: %zu bytes for 4 new tokens, %zu for 60\n", short_peak, long_peak);
    assert_true(long_peak <= short_peak + short_peak / 10);
    cg_model_free(m);
}

static void test_generate_errors(void **state) {
    (void)state;
    cg_model *m = tiny("gpt2:tiny", 1);
    int64_t lens[2] = {3, 0};
    prompts p;
    make_prompts(&p, 2, lens, 1, 64);
    cg_sampling s = {.max_new_tokens = 4};
    cg_generation *g = (cg_generation *)&s; /* a sentinel: must stay untouched on error */
    assert_int_equal(cg_generate(m, p.ptr, p.len, 2, &s, &g), CG_ERR_INVALID_ARG);
    assert_error_contains("prompt 1 is empty");
    p.len[1] = 128;
    assert_int_equal(cg_generate(m, p.ptr, p.len, 2, &s, &g), CG_ERR_INVALID_ARG);
    assert_error_contains("prompt 1 has 128 tokens; gpt2:tiny takes at most 128");
    p.len[1] = 2;
    p.data[1][1] = 64;
    assert_int_equal(cg_generate(m, p.ptr, p.len, 2, &s, &g), CG_ERR_INVALID_ARG);
    assert_error_contains("prompt 1, token 1 is 64, outside the vocabulary [0, 64)");
    p.data[1][1] = 3;
    s.temperature = -1.0f;
    assert_int_equal(cg_generate(m, p.ptr, p.len, 2, &s, &g), CG_ERR_INVALID_ARG);
    assert_error_contains("generate: sampling: temperature -1");
    s.temperature = 1.0f;
    s.top_p = 1.01f;
    assert_int_equal(cg_generate(m, p.ptr, p.len, 2, &s, &g), CG_ERR_INVALID_ARG);
    assert_error_contains("top_p 1.01");
    s.top_p = 1.0f;
    assert_int_equal(cg_generate(m, p.ptr, p.len, 0, &s, &g), CG_ERR_INVALID_ARG);
    assert_error_contains("batch 0");
    assert_true(g == (cg_generation *)&s);
    s.max_new_tokens = -1;
    assert_int_equal(cg_generate(m, p.ptr, p.len, 2, &s, &g), CG_ERR_INVALID_ARG);
    assert_error_contains("max_new_tokens -1");
    cg_model_free(m);
}

/* ------------------------------------------------------------------ the command */

/* The ids the command prints equal cg_generate's on the same preset, weights seed, prompt ids and sampling. */
static void test_cli_generate(void **state) {
    (void)state;
    char out[8192];
    int rc = cg_test_run_cgrad("generate --model llama:tiny --prompt 'abc' --max-new 6 --temperature 0.7 --top-k 20 --seed 9 "
                       "--init-seed 4 --ids", out, sizeof out);
    if (rc != 0) print_error("%s\n", out);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(out, "tokens/s"));
    const char *ids = strstr(out, "prompt ids:"), *new_ids = strstr(out, "new ids:");
    assert_non_null(ids);
    assert_non_null(new_ids);
    cg_model_config cfg;
    assert_ok(cg_model_config_preset("llama:tiny", &cfg));
    cg_model *m = NULL;
    assert_ok(cg_model_create(&cfg, CG_CPU, 4, &m));
    int32_t prompt[3];
    int64_t plen = 3;
    ids += strlen("prompt ids:");
    for (int i = 0; i < 3; i++) prompt[i] = (int32_t)strtol(ids, (char **)&ids, 10);
    assert_true(*ids == '\n');
    const int32_t *pp = prompt;
    cg_sampling s = {.temperature = 0.7f, .top_k = 20, .max_new_tokens = 6, .seed = 9};
    cg_generation *g = NULL;
    assert_ok(cg_generate(m, &pp, &plen, 1, &s, &g));
    assert_int_equal(g->gen_len[0], 6);
    new_ids += strlen("new ids:");
    for (int t = 0; t < 6; t++) assert_int_equal(strtol(new_ids, (char **)&new_ids, 10), g->tokens[3 + t]);
    assert_true(*new_ids == '\n');
    cg_generation_free(g);
    cg_model_free(m);
    /* the same command gives the same text */
    char again[8192];
    assert_int_equal(cg_test_run_cgrad("generate --model llama:tiny --prompt 'abc' --max-new 6 --temperature 0.7 --top-k 20 "
                               "--seed 9 --init-seed 4 --ids", again, sizeof again), 0);
    assert_memory_equal(out, again, (size_t)(strstr(out, "tokens/s") - out));
    /* errors: one line on stderr, non-zero exit */
    assert_int_equal(cg_test_run_cgrad("generate --model nosuch:preset --prompt x", out, sizeof out), 1);
    assert_non_null(strstr(out, "cgrad generate: "));
    assert_non_null(strstr(out, "nosuch:preset"));
    assert_true(strchr(out, '\n') == out + strlen(out) - 1);
    assert_int_equal(cg_test_run_cgrad("generate --model gpt2:tiny --prompt x --temperature -2", out, sizeof out), 1);
    assert_non_null(strstr(out, "temperature -2"));
    assert_int_equal(cg_test_run_cgrad("generate --model gpt2:tiny --prompt x --max-new abc", out, sizeof out), 2);
    assert_non_null(strstr(out, "--max-new"));
    assert_int_equal(cg_test_run_cgrad("generate --prompt x", out, sizeof out), 2);
    assert_non_null(strstr(out, "--model"));
}

/* --model DIR and --lora DIR: a saved model with a saved adapter generates what the in-memory model does. */
static void test_cli_generate_checkpoint_and_lora(void **state) {
    (void)state;
    char dir[] = "/tmp/cgrad_gen_XXXXXX", mdir[96], adir[96], cmd[512], out[8192];
    assert_non_null(mkdtemp(dir));
    snprintf(mdir, sizeof mdir, "%s/model", dir);
    snprintf(adir, sizeof adir, "%s/adapter", dir);
    cg_model_config cfg;
    assert_ok(cg_model_config_preset("llama:tiny", &cfg));
    cg_model *m = NULL;
    assert_ok(cg_model_create(&cfg, CG_CPU, 4, &m));
    assert_ok(cg_model_save_hf(m, mdir, 0, CG_F32));
    cg_lora_config lc = cg_lora_config_default();
    lc.rank = 4, lc.alpha = 8, lc.targets = "q,v";
    assert_ok(cg_lora_attach(m, &lc));
    cg_linear_module *mods[64];
    int nm = cg_lora_modules(m, mods, 64);
    assert_true(nm > 0);
    cg_rng r = cg_rng_init(5);
    for (int i = 0; i < nm; i++) assert_ok(cg_rng_normal(&r, mods[i]->lora_b, 0.0f, 0.5f)); /* a non-zero adapter */
    assert_ok(cg_lora_save(m, &lc, adir));
    snprintf(cmd, sizeof cmd, "generate --model %s --lora %s --prompt 'abc' --max-new 5 --temperature 0 --ids", mdir, adir);
    int rc = cg_test_run_cgrad(cmd, out, sizeof out);
    if (rc != 0) print_error("%s\n", out);
    assert_int_equal(rc, 0);
    const char *ids = strstr(out, "prompt ids:"), *new_ids = strstr(out, "new ids:");
    assert_non_null(ids);
    assert_non_null(new_ids);
    int32_t prompt[3];
    int64_t plen = 3;
    ids += strlen("prompt ids:");
    for (int i = 0; i < 3; i++) prompt[i] = (int32_t)strtol(ids, (char **)&ids, 10);
    const int32_t *pp = prompt;
    cg_sampling s = {.temperature = 0.0f, .max_new_tokens = 5};
    cg_generation *g = NULL, *base = NULL;
    assert_ok(cg_generate(m, &pp, &plen, 1, &s, &g));
    new_ids += strlen("new ids:");
    for (int t = 0; t < g->gen_len[0]; t++) assert_int_equal(strtol(new_ids, (char **)&new_ids, 10), g->tokens[3 + t]);
    /* and the adapter matters: the base model's greedy continuation differs for this adapter */
    cg_lora_set_enabled(m, false);
    assert_ok(cg_generate(m, &pp, &plen, 1, &s, &base));
    assert_memory_not_equal(base->tokens + 3, g->tokens + 3, sizeof(int32_t) * 5);
    cg_generation_free(g);
    cg_generation_free(base);
    cg_model_free(m);
    /* a bad adapter directory is one line on stderr */
    snprintf(cmd, sizeof cmd, "generate --model %s --lora %s/nothing --prompt 'abc'", mdir, dir);
    assert_int_equal(cg_test_run_cgrad(cmd, out, sizeof out), 1);
    assert_non_null(strstr(out, "cgrad generate: "));
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sampler_greedy_and_modes),
        cmocka_unit_test(test_sampler_filters_reduce_to_greedy),
        cmocka_unit_test(test_sampler_frequencies),
        cmocka_unit_test(test_sampler_errors),
        cmocka_unit_test_teardown(test_generation_matches_recomputation_gpt2, cg_test_teardown),
        cmocka_unit_test_teardown(test_generation_matches_recomputation_llama, cg_test_teardown),
        cmocka_unit_test_teardown(test_budgets_and_length_cap, cg_test_teardown),
        cmocka_unit_test_teardown(test_rows_are_independent, cg_test_teardown),
        cmocka_unit_test_teardown(test_memory_is_flat, cg_test_teardown),
        cmocka_unit_test_teardown(test_generate_errors, cg_test_teardown),
        cmocka_unit_test_teardown(test_cli_generate, cg_test_teardown),
        cmocka_unit_test_teardown(test_cli_generate_checkpoint_and_lora, cg_test_teardown),
    };
    int rc = cmocka_run_group_tests_name("generate", tests, NULL, NULL);
    cg_shutdown();
    return rc;
}
