/* End-to-end generation throughput: a preset with random weights, `batch` prompts of `prompt` random tokens,
 * `new` tokens each (no stop tokens, so every row runs the full budget), sampled; reports new tokens per
 * second over the whole cg_generate call (prefill included) and the prefill alone.
 *
 *   bench_generate [--model PRESET] [--batch B] [--prompt T] [--new N] [--temperature X] [--top-k K]
 *                  [--top-p P] [--seed S] [--threads N] [--reps R] [--device cpu|cuda[:N]] [--bf16 0|1]
 *   bench_generate --issue     the issue's case on CUDA: qwen2.5-0.5b, 128 x 64 prompt tokens, 512 new,
 *                              T = 1 sampling, bf16 when the build has it (HF generate: 2,272 tokens/s on an
 *                              H200; target 25,000)
 *
 * With no flags (`make bench`): the CPU default (gpt2:tiny, 8 x 16 prompt tokens, 64 new; about a second),
 * then the issue's case when a GPU is present. A CUDA case without a GPU prints "no CUDA device: skipped" and
 * exits 0. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cgrad.h"
#include "models/generate.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int flag_value(int argc, char **argv, int *i, const char **v) {
    if (*i + 1 >= argc) {
        fprintf(stderr, "bench_generate: %s needs a value\n", argv[*i]);
        return 0;
    }
    *v = argv[++*i];
    return 1;
}

static int to_i64(const char *flag, const char *v, int64_t *out) {
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno || end == v || *end) {
        fprintf(stderr, "bench_generate: %s takes an integer, not '%s'\n", flag, v);
        return 0;
    }
    *out = x;
    return 1;
}

static int to_f32(const char *flag, const char *v, float *out) {
    char *end;
    errno = 0;
    float x = strtof(v, &end);
    if (errno || end == v || *end) {
        fprintf(stderr, "bench_generate: %s takes a number, not '%s'\n", flag, v);
        return 0;
    }
    *out = x;
    return 1;
}

/* bf16 compute for the model (DESIGN section 5): bf16 working weights, KV cache and activations. */
static const char *use_bf16(cg_model *m) {
    if (cg_model_set_compute_dtype(m, CG_BF16) != CG_OK) return "f32 (bf16 refused)";
    return "bf16";
}

static int run_case(const char *preset, cg_device dev, bool bf16, int64_t batch, int64_t prompt, int64_t new_tokens,
                    float temperature, int64_t top_k, float top_p, int64_t seed, int64_t reps);

int main(int argc, char **argv) {
    const char *preset = "gpt2:tiny", *device = "cpu";
    int64_t batch = 8, prompt = 16, new_tokens = 64, top_k = 0, seed = 1, threads = 0, reps = 2, bf16 = 1;
    float temperature = 1.0f, top_p = 1.0f;
    bool issue = argc == 2 && strcmp(argv[1], "--issue") == 0;
    for (int i = 1; i < argc && !issue; i++) {
        const char *a = argv[i], *v = NULL;
        int ok = 1;
        if (strcmp(a, "--help") == 0) {
            printf("usage: bench_generate [--model PRESET] [--batch B] [--prompt T] [--new N] [--temperature X]\n"
                   "                      [--top-k K] [--top-p P] [--seed S] [--threads N] [--reps R]\n"
                   "                      [--device cpu|cuda[:N]] [--bf16 0|1]\n"
                   "       bench_generate --issue   (qwen2.5-0.5b, 128 x 64 prompt tokens, 512 new, on CUDA)\n");
            return 0;
        }
        if (!flag_value(argc, argv, &i, &v)) return 2;
        if (strcmp(a, "--model") == 0) preset = v;
        else if (strcmp(a, "--batch") == 0) ok = to_i64(a, v, &batch);
        else if (strcmp(a, "--prompt") == 0) ok = to_i64(a, v, &prompt);
        else if (strcmp(a, "--new") == 0) ok = to_i64(a, v, &new_tokens);
        else if (strcmp(a, "--top-k") == 0) ok = to_i64(a, v, &top_k);
        else if (strcmp(a, "--seed") == 0) ok = to_i64(a, v, &seed);
        else if (strcmp(a, "--threads") == 0) ok = to_i64(a, v, &threads);
        else if (strcmp(a, "--reps") == 0) ok = to_i64(a, v, &reps);
        else if (strcmp(a, "--bf16") == 0) ok = to_i64(a, v, &bf16);
        else if (strcmp(a, "--device") == 0) device = v;
        else if (strcmp(a, "--temperature") == 0) ok = to_f32(a, v, &temperature);
        else if (strcmp(a, "--top-p") == 0) ok = to_f32(a, v, &top_p);
        else {
            fprintf(stderr, "bench_generate: unknown flag '%s'\n", a);
            return 2;
        }
        if (!ok) return 2;
    }
    if (batch <= 0 || prompt <= 0 || new_tokens < 0 || reps <= 0 || top_k < 0 || top_k > 1 << 30) {
        fprintf(stderr, "bench_generate: needs batch, prompt and reps > 0, new >= 0, top-k in [0, 2^30]\n");
        return 2;
    }
    cg_set_num_threads((int)threads);
    cg_device dev;
    if (cg_device_parse(issue ? "cuda" : device, &dev) != CG_OK) {
        fprintf(stderr, "bench_generate: --device %s: %s\n", device, cg_last_error());
        return 2;
    }
    int rc = 0;
    if (issue) {
        rc = run_case("qwen2.5-0.5b", dev, true, 128, 64, 512, 1.0f, 0, 1.0f, 1, 1);
    } else {
        rc = run_case(preset, dev, bf16 != 0, batch, prompt, new_tokens, temperature, top_k, top_p, seed, reps);
        /* `make bench` (no flags): the issue's case too, on a GPU */
        if (rc == 0 && argc == 1 && cg_cuda_device_count() > 0)
            rc = run_case("qwen2.5-0.5b", CG_CUDA(0), true, 128, 64, 512, 1.0f, 0, 1.0f, 1, 1);
    }
    cg_shutdown();
    return rc;
}

static int run_case(const char *preset, cg_device dev, bool bf16, int64_t batch, int64_t prompt, int64_t new_tokens,
                    float temperature, int64_t top_k, float top_p, int64_t seed, int64_t reps) {
    if (dev.type == CG_DEVICE_CUDA && dev.index >= cg_cuda_device_count()) {
        printf("bench_generate %s: no CUDA device: skipped\n", preset);
        return 0;
    }
    cg_model_config cfg;
    cg_model *m = NULL;
    if (cg_model_config_preset(preset, &cfg) != CG_OK || cg_model_create(&cfg, dev, (uint64_t)seed, &m) != CG_OK) {
        fprintf(stderr, "bench_generate: %s\n", cg_last_error());
        return 1;
    }
    const char *precision = dev.type == CG_DEVICE_CUDA && bf16 ? use_bf16(m) : "f32";
    char dev_str[32];
    cg_device_str(dev, dev_str, sizeof dev_str);
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)(batch * prompt));
    const int32_t **rows = malloc(sizeof *rows * (size_t)batch);
    int64_t *lens = malloc(sizeof *lens * (size_t)batch);
    if (!ids || !rows || !lens) {
        fprintf(stderr, "bench_generate: out of memory\n");
        return 1;
    }
    uint64_t x = 0x9E3779B97F4A7C15ull ^ (uint64_t)seed;
    for (int64_t i = 0; i < batch * prompt; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        ids[i] = (int32_t)(x % (uint64_t)cfg.vocab_size);
    }
    for (int64_t b = 0; b < batch; b++) rows[b] = ids + b * prompt, lens[b] = prompt;

    printf("%s (%.1fM parameters) on %s, %s, batch %lld, %lld prompt tokens, %lld new tokens, T=%g top-k %lld "
           "top-p %g, %d CPU threads\n", cfg.name, (double)cg_model_num_elements(m) / 1e6, dev_str, precision,
           (long long)batch, (long long)prompt, (long long)new_tokens, (double)temperature, (long long)top_k,
           (double)top_p, cg_get_num_threads());
    cg_sampling prefill_only = {.temperature = temperature, .top_k = (int)top_k, .top_p = top_p, .max_new_tokens = 1,
                                .seed = (uint64_t)seed};
    cg_sampling full = prefill_only;
    full.max_new_tokens = new_tokens;
    double best_prefill = 1e30, best_full = 1e30;
    int64_t generated = 0;
    for (int64_t r = 0; r < reps; r++) {
        cg_generation *g = NULL;
        double t0 = now_s();
        cg_status st = cg_generate(m, rows, lens, batch, &prefill_only, &g);
        double t1 = now_s();
        cg_generation_free(g);
        g = NULL;
        if (st == CG_OK) st = cg_generate(m, rows, lens, batch, &full, &g);
        double t2 = now_s();
        if (st != CG_OK) {
            fprintf(stderr, "bench_generate: %s\n", cg_last_error());
            return 1;
        }
        generated = 0;
        for (int64_t b = 0; b < batch; b++) generated += g->gen_len[b];
        cg_generation_free(g);
        if (t1 - t0 < best_prefill) best_prefill = t1 - t0;
        if (t2 - t1 < best_full) best_full = t2 - t1;
    }
    double decode = best_full - best_prefill;
    printf("prefill: %.3f s (%.0f prompt tokens/s)\n", best_prefill, (double)(batch * prompt) / best_prefill);
    printf("generate: %lld new tokens in %.3f s: %.1f tokens/s (decode only: %.1f tokens/s), best of %lld\n",
           (long long)generated, best_full, (double)generated / best_full,
           decode > 0 ? (double)(generated - batch) / decode : 0.0, (long long)reps);
    cg_memory_stats ms = cg_memory_get_stats(dev);
    printf("step arena peak (%s): %.1f MiB\n", dev_str, (double)ms.step_peak / (1 << 20));
    free(ids);
    free(rows);
    free(lens);
    cg_model_free(m);
    return 0;
}
