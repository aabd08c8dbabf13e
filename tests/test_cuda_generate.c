/* Generation on CUDA: the GPU sampler (cuda/sampler.h) against cg_sample_logits on the same f32 logits and
 * uniforms (identical tokens, log-probs within 1e-6), with every filter and log-prob mode, ties and -inf
 * logits; then cg_generate on a CUDA f32 model against the same model on the CPU (TF32 off: identical tokens
 * for greedy and sampled decoding; log-probs within 1e-4 of the CPU's, the difference of f32 GPU matmuls);
 * then the CUDA decode loop with its step replayed from a CUDA graph against the same loop without one
 * (bit-identical tokens and log-probs). The GPU tests skip without a GPU (fail under CG_REQUIRE_GPU=1,
 * `make test-gpu`); the last test (the switch, the CPU path, the decode ops' refusals) runs everywhere. */
#include "test_util.h"

#include "autograd/ops_decode.h"
#include "models/generate.h"
#ifdef CG_HAVE_CUDA
#include "cuda/matmul.h"
#include "cuda/sampler.h"
#endif

#ifdef CG_HAVE_CUDA
static void *to_device(cg_dtype dt, int64_t n, const void *host) {
    int64_t shape[1] = {n};
    cg_tensor *d = cg_tensor_from_data(cg_step_arena(CG_CUDA(0)), dt, 1, shape, host);
    assert_non_null(d);
    return cg_data(d);
}

static void from_device(void *host, cg_dtype dt, int64_t n, void *dev) {
    int64_t shape[1] = {n};
    cg_tensor *d = cg_tensor_wrap(cg_step_arena(CG_CPU), dt, CG_CUDA(0), 1, shape, dev);
    cg_tensor *h = cg_tensor_wrap(cg_step_arena(CG_CPU), dt, CG_CPU, 1, shape, host);
    assert_non_null(d);
    assert_non_null(h);
    assert_ok(cg_copy(h, d));
}

/* rows x vocab logits with ties (values on a coarse grid), a -inf in every row, and one row of a few large
 * values (a peaked distribution) */
static float *make_logits(int64_t rows, int64_t vocab, uint64_t seed) {
    float *l = malloc(sizeof(float) * (size_t)(rows * vocab));
    assert_non_null(l);
    for (int64_t i = 0; i < rows * vocab; i++) l[i] = roundf(cg_test_randf(&seed) * 40.0f) / 8.0f;
    for (int64_t r = 0; r < rows; r++) l[r * vocab + (r * 7) % vocab] = -INFINITY;
    if (rows > 1)
        for (int64_t j = 0; j < vocab && j < 5; j++) l[vocab + (j * 13) % vocab] = 12.0f - (float)j * 0.5f;
    return l;
}

#endif

static void test_gpu_sampler_matches_cpu(void **state) {
    (void)state;
    cg_test_require_gpu();
#ifdef CG_HAVE_CUDA
    const int64_t vocabs[4] = {7, 769, 4099, 151936};
    const cg_sampling configs[7] = {
        {.temperature = 0.0f},
        {.temperature = 1.0f},
        {.temperature = 0.7f},
        {.temperature = 0.9f, .top_k = 5},
        {.temperature = 1.2f, .top_p = 0.8f},
        {.temperature = 0.8f, .top_k = 50, .top_p = 0.9f},
        {.temperature = 1.0f, .top_k = 1},
    };
    const int64_t rows = 9;
    for (int vi = 0; vi < 4; vi++) {
        int64_t V = vocabs[vi];
        float *l = make_logits(rows, V, 100 + (uint64_t)vi);
        float u[9];
        uint64_t us = 7 + (uint64_t)vi;
        for (int64_t r = 0; r < rows; r++) u[r] = 0.5f * (cg_test_randf(&us) + 1.0f);
        u[0] = 0.0f;
        const float *l_d = to_device(CG_F32, rows * V, l);
        const float *u_d = to_device(CG_F32, rows, u);
        int32_t zeros[9] = {0};
        for (int ci = 0; ci < 7; ci++)
            for (int mode = 0; mode < 3; mode++) {
                cg_sampling s = configs[ci];
                s.logprob_mode = (cg_logprob_mode)mode;
                cg_cuda_sampler_params p = {s.temperature, s.top_k, s.top_p, mode};
                size_t wb = cg_cuda_sample_workspace_bytes(rows, V, &p);
                int64_t ws[1] = {(int64_t)(wb ? wb : 1)};
                cg_tensor *work = cg_tensor_empty(cg_step_arena(CG_CUDA(0)), CG_U8, 1, ws);
                assert_non_null(work);
                int32_t *tok_d = to_device(CG_I32, rows, zeros), *err_d = to_device(CG_I32, rows, zeros);
                float *lp_d = to_device(CG_F32, rows, zeros);
                assert_ok(cg_cuda_sample(l_d, CG_F32, rows, V, V, u_d, NULL, &p, cg_data(work), wb, tok_d, lp_d,
                                         err_d));
                int32_t tok[9], err[9];
                float lp[9];
                from_device(tok, CG_I32, rows, tok_d);
                from_device(err, CG_I32, rows, err_d);
                from_device(lp, CG_F32, rows, lp_d);
                for (int64_t r = 0; r < rows; r++) {
                    int32_t want_tok;
                    float want_lp;
                    assert_ok(cg_sample_logits(l + r * V, V, &s, u[r], NULL, &want_tok, &want_lp));
                    if (tok[r] != want_tok || err[r] != 0)
                        print_error("V %lld config %d mode %d row %lld: gpu %d (err %d), cpu %d\n", (long long)V, ci,
                                    mode, (long long)r, tok[r], err[r], want_tok);
                    assert_int_equal(err[r], 0);
                    assert_int_equal(tok[r], want_tok);
                    assert_close(lp[r], want_lp, 0, 1e-6);
                }
            }
        free(l);
    }
    /* a NaN row and an all -inf row are flagged, the other rows sampled */
    float bad[3 * 4] = {0.1f, NAN, 0.3f, 0.2f, -INFINITY, -INFINITY, -INFINITY, -INFINITY, 1.0f, 2.0f, 3.0f, 4.0f};
    int32_t zeros[3] = {0};
    cg_cuda_sampler_params greedy = {0.0f, 0, 1.0f, 0};
    int32_t *tok_d = to_device(CG_I32, 3, zeros), *err_d = to_device(CG_I32, 3, zeros);
    float *lp_d = to_device(CG_F32, 3, zeros);
    assert_ok(cg_cuda_sample(to_device(CG_F32, 12, bad), CG_F32, 3, 4, 4, NULL, NULL, &greedy, NULL, 0, tok_d, lp_d,
                             err_d));
    int32_t tok[3], err[3];
    from_device(tok, CG_I32, 3, tok_d);
    from_device(err, CG_I32, 3, err_d);
    assert_int_equal(err[0], CG_CUDA_SAMPLE_BAD_LOGIT);
    assert_int_equal(err[1], CG_CUDA_SAMPLE_ALL_NEG_INF);
    assert_int_equal(err[2], 0);
    assert_int_equal(tok[2], 3);
#endif
}

#ifdef CG_HAVE_CUDA
/* The same model (same init seed) on the CPU and on CUDA generates the same tokens. */
static void generate_both(const char *preset, const cg_sampling *s) {
    cg_model_config cfg;
    assert_ok(cg_model_config_preset(preset, &cfg));
    cg_model *cpu = NULL, *gpu = NULL;
    assert_ok(cg_model_create(&cfg, CG_CPU, 5, &cpu));
    assert_ok(cg_model_create(&cfg, CG_CUDA(0), 5, &gpu));
    const int32_t p0[3] = {1, 2, 3}, p1[6] = {4, 5, 6, 7, 8, 9}, p2[1] = {10}, p3[4] = {11, 12, 13, 14};
    const int32_t *prompts[4] = {p0, p1, p2, p3};
    int64_t lens[4] = {3, 6, 1, 4};
    cg_generation *a = NULL, *b = NULL;
    assert_ok(cg_generate(cpu, prompts, lens, 4, s, &a));
    assert_ok(cg_generate(gpu, prompts, lens, 4, s, &b));
    assert_int_equal(a->max_total, b->max_total);
    for (int64_t r = 0; r < 4; r++) {
        assert_int_equal(a->gen_len[r], b->gen_len[r]);
        assert_int_equal(a->stopped[r], b->stopped[r]);
        for (int64_t t = 0; t < a->max_total; t++) {
            assert_int_equal(a->tokens[r * a->max_total + t], b->tokens[r * b->max_total + t]);
            assert_close(a->logprobs[r * a->max_total + t], b->logprobs[r * b->max_total + t], 0, 1e-4);
        }
    }
    cg_generation_free(a);
    cg_generation_free(b);
    cg_model_free(cpu);
    cg_model_free(gpu);
}
#endif

static void test_cuda_generation_matches_cpu(void **state) {
    (void)state;
    cg_test_require_gpu();
#ifdef CG_HAVE_CUDA
    bool tf32 = cg_cuda_matmul_set_tf32(false);
    const int32_t stop = 17;
    cg_sampling greedy = {.temperature = 0.0f, .max_new_tokens = 20};
    cg_sampling sampled = {.temperature = 1.0f, .top_k = 20, .max_new_tokens = 40, .seed = 3,
                           .stop_tokens = &stop, .n_stop = 1};
    cg_sampling nucleus = {.temperature = 0.8f, .top_p = 0.9f, .max_new_tokens = 33, .seed = 9,
                           .logprob_mode = CG_LOGPROB_SAMPLED, .first_stream = 5};
    const char *presets[2] = {"llama:tiny", "gpt2:tiny"};
    for (int i = 0; i < 2; i++) {
        generate_both(presets[i], &greedy);
        generate_both(presets[i], &sampled);
        generate_both(presets[i], &nucleus);
    }
    cg_cuda_matmul_set_tf32(tf32);
#endif
}

#ifdef CG_HAVE_CUDA
/* One generation on model m with cuda_graphs set to `graphs` (the rest of s as given). */
static cg_generation *generate_with(cg_model *m, const cg_sampling *s, int graphs) {
    const int32_t p0[3] = {1, 2, 3}, p1[7] = {4, 5, 6, 7, 8, 9, 2}, p2[1] = {10}, p3[4] = {11, 12, 13, 14},
                  p4[2] = {30, 31};
    const int32_t *prompts[5] = {p0, p1, p2, p3, p4};
    int64_t lens[5] = {3, 7, 1, 4, 2};
    cg_sampling c = *s;
    c.cuda_graphs = graphs;
    cg_generation *g = NULL;
    assert_ok(cg_generate(m, prompts, lens, 5, &c, &g));
    return g;
}

/* Graphs on and off give the same bits: the replayed step is the plain step's kernels on the same
 * addresses. The graph must really be used (more than 2 decode steps: step 1 runs plainly, step 2 is
 * captured), and CG_CUDA_GRAPHS=0 turns it off when the config leaves the choice to the environment. */
static void graphs_on_off(const char *preset, cg_dtype compute, const cg_sampling *s) {
    cg_model_config cfg;
    assert_ok(cg_model_config_preset(preset, &cfg));
    cg_model *m = NULL;
    assert_ok(cg_model_create(&cfg, CG_CUDA(0), 7, &m));
    assert_ok(cg_model_set_compute_dtype(m, compute));
    cg_generation *on = generate_with(m, s, 1), *off = generate_with(m, s, -1);
    if (on->graph_note) fprintf(stderr, "graph not used (%s, %s): %s\n", preset, cg_dtype_name(compute), on->graph_note);
    assert_null(on->graph_note);
    int64_t longest = 0;
    for (int64_t r = 0; r < on->batch; r++) longest = on->gen_len[r] > longest ? on->gen_len[r] : longest;
    if (longest > 2) assert_true(on->graph_steps > 0);
    assert_int_equal(off->graph_steps, 0);
    assert_null(off->graph_note);
    assert_int_equal(on->max_total, off->max_total);
    for (int64_t r = 0; r < on->batch; r++) {
        assert_int_equal(on->gen_len[r], off->gen_len[r]);
        assert_int_equal(on->stopped[r], off->stopped[r]);
    }
    size_t n = (size_t)(on->batch * on->max_total);
    assert_memory_equal(on->tokens, off->tokens, n * sizeof(int32_t));
    assert_memory_equal(on->logprobs, off->logprobs, n * sizeof(float)); /* bit-identical */

    assert_int_equal(setenv("CG_CUDA_GRAPHS", "0", 1), 0);
    cg_generation *env_off = generate_with(m, s, 0);
    assert_int_equal(unsetenv("CG_CUDA_GRAPHS"), 0);
    assert_int_equal(env_off->graph_steps, 0);
    assert_memory_equal(env_off->tokens, off->tokens, n * sizeof(int32_t));
    cg_generation_free(on);
    cg_generation_free(off);
    cg_generation_free(env_off);
    cg_model_free(m);
}
#endif

static void test_cuda_graphs_same_as_plain_loop(void **state) {
    (void)state;
    cg_test_require_gpu();
#ifdef CG_HAVE_CUDA
    const int32_t stop = 17;
    cg_sampling greedy = {.temperature = 0.0f, .max_new_tokens = 40};
    cg_sampling sampled = {.temperature = 1.0f, .top_k = 20, .max_new_tokens = 37, .seed = 3, .stop_tokens = &stop,
                           .n_stop = 1};
    cg_sampling plain = {.temperature = 0.9f, .max_new_tokens = 21, .seed = 11, .logprob_mode = CG_LOGPROB_RAW};
    cg_sampling nucleus = {.temperature = 0.8f, .top_p = 0.9f, .max_new_tokens = 33, .seed = 9,
                           .logprob_mode = CG_LOGPROB_SAMPLED, .first_stream = 5};
    const char *presets[2] = {"llama:tiny", "gpt2:tiny"};
    const cg_dtype dtypes[2] = {CG_F32, CG_BF16};
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++) {
            graphs_on_off(presets[i], dtypes[j], &greedy);
            graphs_on_off(presets[i], dtypes[j], &sampled);
            graphs_on_off(presets[i], dtypes[j], &plain);
            graphs_on_off(presets[i], dtypes[j], &nucleus);
        }
#endif
}

/* Runs everywhere: the switch is validated, a CPU generation reports no graph, and the decode-step ops
 * refuse CPU tensors with their error. */
static void test_graph_switch_and_cpu(void **state) {
    (void)state;
    cg_sampling bad = {.temperature = 0.0f, .max_new_tokens = 3, .cuda_graphs = 2};
    assert_int_equal(cg_sampling_validate(&bad), CG_ERR_INVALID_ARG);
    bad.cuda_graphs = -2;
    assert_int_equal(cg_sampling_validate(&bad), CG_ERR_INVALID_ARG);
    cg_model_config cfg;
    assert_ok(cg_model_config_preset("llama:tiny", &cfg));
    cg_model *m = NULL;
    assert_ok(cg_model_create(&cfg, CG_CPU, 7, &m));
    const int32_t p0[2] = {1, 2};
    const int32_t *prompts[1] = {p0};
    int64_t lens[1] = {2};
    cg_sampling s = {.temperature = 0.0f, .max_new_tokens = 5, .cuda_graphs = 1};
    cg_generation *g = NULL;
    assert_ok(cg_generate(m, prompts, lens, 1, &s, &g));
    assert_int_equal(g->gen_len[0], 5);
    assert_int_equal(g->graph_steps, 0);
    assert_null(g->graph_note);
    cg_generation_free(g);
    cg_model_free(m);

    int64_t ws[2] = {4, 3}, is[2] = {1, 2};
    cg_tensor *w = cg_tensor_zeros(cg_step_arena(CG_CPU), CG_F32, 2, ws);
    cg_tensor *ids = cg_tensor_zeros(cg_step_arena(CG_CPU), CG_I32, 2, is);
    assert_non_null(w);
    assert_non_null(ids);
    cg_no_grad_enter();
    assert_null(cg_decode_embedding(w, ids));
    assert_int_equal(cg_last_status(), CG_ERR_DEVICE);
    cg_no_grad_exit();
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_gpu_sampler_matches_cpu, cg_test_teardown),
        cmocka_unit_test_teardown(test_cuda_generation_matches_cpu, cg_test_teardown),
        cmocka_unit_test_teardown(test_cuda_graphs_same_as_plain_loop, cg_test_teardown),
        cmocka_unit_test_teardown(test_graph_switch_and_cpu, cg_test_teardown),
    };
    int rc = cmocka_run_group_tests_name("cuda_generate", tests, NULL, NULL);
    cg_shutdown();
    return rc;
}
