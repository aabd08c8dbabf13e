/* The RL step benchmark of issue 7: one GRPO step (rollout + update) for the qwen2.5-0.5b shape with random
 * weights, LoRA r = 32 (alpha 64) on q,k,v,o,gate,up,down, 16 prompts x 8 samples, 64 prompt + 512 new tokens,
 * bf16 compute on CUDA. Reports rollout tokens/s and update tokens/s. bench/torch_rl_step.py is the PyTorch
 * counterpart (HF generate: 2,272 tokens/s and a PyTorch GRPO update with LoRA 79,400 tokens/s, full
 * fine-tune 85,500, on an H200; targets 25,000 and 100,000).
 *
 *   bench_rl_step [--preset NAME] [--device cpu|cuda[:N]] [--prompts P] [--group G] [--prompt-len T] [--new N]
 *                 [--rank R] [--alpha A] [--targets LIST] [--full] [--micro M] [--warmup W] [--steps S]
 *                 [--lr X] [--seed S] [--threads N]
 *
 * The step goes through the library's RL pieces as rl/trainer.c does, one level down (the trainer draws text
 * prompts from a task set and decodes responses with a tokenizer; random weights have no tokenizer):
 *   rollout  cg_generate on P x G rows (T = 1 sampling, no stop token, so every response has N tokens), then
 *            the reward in C on the token ids (below) - timed: rollout tokens/s = P G N / rollout seconds;
 *   update   under no-grad the old policy's log-probs (cg_rollout_logprobs, the full forward, as the trainer
 *            does) and the reference's (the LoRA-disabled model, or a frozen copy with --full), group
 *            advantages (mean/std), then cg_rl_loss (GRPO: PPO clip 0.2, k3 KL beta 0.04,
 *            seq-mean-token-mean) + cg_backward in micro-batches of M sequences with gradient accumulation
 *            (the global sequence and token counts as denominators, so the gradient is the whole batch's),
 *            and one AdamW step (lr 1e-5, the trainer's default) - timed: update tokens/s =
 *            P G (T + N) / update seconds, old and reference log-probs included. The time of the gradient
 *            pass alone (loss, backward, optimizer) is printed too.
 * Reward: the fraction of even token ids in the response. It needs no tokenizer and varies between the
 * samples of a group, which is all GRPO needs here: the point is the speed, not learning anything.
 *
 * Without a GPU and without --device cpu: "no CUDA device: skipped", exit 0. A tiny CPU smoke run:
 *   bench_rl_step --preset llama:tiny --device cpu --prompts 2 --group 2 --new 8
 * (tests/test_bench_rl_step.c runs it in `make test`). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cgrad.h"
#ifdef CG_HAVE_CUDA
#include "cuda/meminfo.h"
#endif

typedef struct rl_bench_opts {
    const char *preset, *device, *targets;
    int64_t prompts, group, prompt_len, new_tokens, rank, micro, warmup, steps, seed, threads;
    float alpha, lr;
    bool full;
} rl_bench_opts;

static double rl_bench_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The reward of one response: the fraction of its token ids that are even. */
static float rl_bench_reward(const int32_t *resp, int64_t n) {
    int64_t even = 0;
    for (int64_t i = 0; i < n; i++) even += (resp[i] & 1) == 0;
    return n > 0 ? (float)even / (float)n : 0.0f;
}

static int rl_bench_parse(int argc, char **argv, rl_bench_opts *o, FILE *out) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0) {
            fprintf(out, "usage: bench_rl_step [--preset NAME] [--device cpu|cuda[:N]] [--prompts P] [--group G]\n"
                         "                     [--prompt-len T] [--new N] [--rank R] [--alpha A] [--targets LIST]\n"
                         "                     [--full] [--micro M] [--warmup W] [--steps S] [--lr X] [--seed S]\n"
                         "                     [--threads N]\n");
            return 1;
        }
        if (strcmp(a, "--full") == 0) {
            o->full = true;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "bench_rl_step: %s needs a value\n", a);
            return 2;
        }
        const char *v = argv[++i];
        int64_t *iv = NULL;
        float *fv = NULL;
        if (strcmp(a, "--preset") == 0) o->preset = v;
        else if (strcmp(a, "--device") == 0) o->device = v;
        else if (strcmp(a, "--targets") == 0) o->targets = v;
        else if (strcmp(a, "--prompts") == 0) iv = &o->prompts;
        else if (strcmp(a, "--group") == 0) iv = &o->group;
        else if (strcmp(a, "--prompt-len") == 0) iv = &o->prompt_len;
        else if (strcmp(a, "--new") == 0) iv = &o->new_tokens;
        else if (strcmp(a, "--rank") == 0) iv = &o->rank;
        else if (strcmp(a, "--micro") == 0) iv = &o->micro;
        else if (strcmp(a, "--warmup") == 0) iv = &o->warmup;
        else if (strcmp(a, "--steps") == 0) iv = &o->steps;
        else if (strcmp(a, "--seed") == 0) iv = &o->seed;
        else if (strcmp(a, "--threads") == 0) iv = &o->threads;
        else if (strcmp(a, "--alpha") == 0) fv = &o->alpha;
        else if (strcmp(a, "--lr") == 0) fv = &o->lr;
        else {
            fprintf(stderr, "bench_rl_step: unknown flag '%s'\n", a);
            return 2;
        }
        char *end;
        errno = 0;
        if (iv) {
            long long x = strtoll(v, &end, 10);
            if (errno || end == v || *end) {
                fprintf(stderr, "bench_rl_step: %s takes an integer, not '%s'\n", a, v);
                return 2;
            }
            *iv = x;
        } else if (fv) {
            float x = strtof(v, &end);
            if (errno || end == v || *end) {
                fprintf(stderr, "bench_rl_step: %s takes a number, not '%s'\n", a, v);
                return 2;
            }
            *fv = x;
        }
    }
    if (o->prompts <= 0 || o->group <= 0 || o->prompt_len <= 0 || o->new_tokens <= 0 || o->rank <= 0 ||
        o->micro < 0 || o->warmup < 0 || o->steps <= 0 || o->prompts > 1 << 20 || o->group > 1 << 20) {
        fprintf(stderr, "bench_rl_step: needs prompts, group, prompt-len, new, rank and steps > 0, micro and "
                        "warmup >= 0\n");
        return 2;
    }
    return 0;
}

/* What one measured step took. */
typedef struct rl_bench_times {
    double rollout, old_ref, grad; /* seconds: generation + reward; old + reference log-probs; loss + backward + step */
    double reward_mean, loss, kl;
} rl_bench_times;

/* Log-probs of every sequence of r under m (no-grad), in micro-batches of mb sequences, into out [n_seq, T]. */
static cg_status rl_bench_logprobs(cg_model *m, const cg_rollout *r, const int64_t *order, int64_t mb, float *out) {
    int64_t n = r->n_seq, T = r->max_resp;
    cg_status s = CG_OK;
    cg_no_grad_enter();
    for (int64_t b0 = 0; s == CG_OK && b0 < n; b0 += mb) {
        int64_t nb = n - b0 < mb ? n - b0 : mb;
        cg_tensor *mask = NULL;
        cg_tensor *lp = cg_rollout_logprobs(m, r, order + b0, nb, 1.0f, &mask, NULL);
        const cg_tensor *hl = lp ? cg_tensor_to(cg_step_arena(CG_CPU), lp, CG_F32) : NULL; /* packed host f32 */
        if (hl) memcpy(out + b0 * T, cg_data(hl), sizeof(float) * (size_t)(nb * T));
        else s = cg_last_status();
        cg_step_end(); /* this micro-batch's activations */
    }
    cg_no_grad_exit();
    return s;
}

/* Rows order[b0 .. b0 + nb) of a host [n, T] array as an f32 tensor on dev. */
static cg_tensor *rl_bench_rows(const float *src, int64_t b0, int64_t nb, int64_t T, cg_device dev) {
    int64_t shape[2] = {nb, T};
    cg_tensor *t = cg_tensor_from_data(cg_step_arena(CG_CPU), CG_F32, 2, shape, src + b0 * T);
    if (!t || cg_device_eq(dev, CG_CPU)) return t;
    return cg_tensor_clone(cg_output_arena(dev), t);
}

/* One GRPO step: rollout, rewards, advantages, old/ref log-probs, accumulated gradient, one optimizer step. */
static cg_status rl_bench_step(const rl_bench_opts *o, cg_model *policy, cg_model *reference, cg_optimizer *opt,
                               const int32_t *prompt_ids, int64_t step, rl_bench_times *tm) {
    int64_t P = o->prompts, G = o->group, n = P * G, TP = o->prompt_len, N = o->new_tokens;
    int64_t mb = o->micro > 0 && o->micro < n ? o->micro : n;
    cg_device dev = policy->device;
    const int32_t **rows = malloc(sizeof *rows * (size_t)n);
    int64_t *lens = malloc(sizeof *lens * (size_t)n), *order = malloc(sizeof *order * (size_t)n);
    float *adv = malloc(sizeof *adv * (size_t)n), *old_lp = NULL, *ref_lp = NULL;
    cg_rollout *r = calloc(1, sizeof *r);
    cg_generation *gen = NULL;
    cg_status s = rows && lens && order && adv && r ? CG_OK : cg_set_error(CG_ERR_OOM, "bench_rl_step: out of memory");
    for (int64_t i = 0; s == CG_OK && i < n; i++) rows[i] = prompt_ids + (i / G) * TP, lens[i] = TP, order[i] = i;

    /* ---- rollout: P x G samples at T = 1, no stop token, then the rewards */
    if (s == CG_OK) s = cg_device_synchronize(dev);
    double t0 = rl_bench_now();
    cg_sampling smp = {.temperature = 1.0f, .top_p = 1.0f, .max_new_tokens = N,
                       .seed = (uint64_t)o->seed * 1000003u + (uint64_t)step};
    if (s == CG_OK) {
        cg_no_grad_enter();
        s = cg_generate(policy, rows, lens, n, &smp, &gen);
        cg_no_grad_exit();
    }
    /* the rollout the log-prob code reads: n sequences of prompt + response, responses as long as sampled */
    if (s == CG_OK) {
        r->n_prompts = P, r->group_size = G, r->n_seq = n, r->max_resp = 1;
        r->prompt_len = calloc((size_t)n, sizeof *r->prompt_len);
        r->resp_len = calloc((size_t)n, sizeof *r->resp_len);
        r->tokens = calloc((size_t)n, sizeof *r->tokens);
        r->rewards = calloc((size_t)n, sizeof *r->rewards);
        r->truncated = calloc((size_t)n, sizeof *r->truncated);
        for (int64_t i = 0; i < n; i++)
            if (gen->gen_len[i] > r->max_resp) r->max_resp = gen->gen_len[i];
        r->sample_logp = calloc((size_t)(n * r->max_resp), sizeof *r->sample_logp);
        if (!r->prompt_len || !r->resp_len || !r->tokens || !r->rewards || !r->truncated || !r->sample_logp)
            s = cg_set_error(CG_ERR_OOM, "bench_rl_step: out of memory");
    }
    for (int64_t i = 0; s == CG_OK && i < n; i++) {
        int64_t pl = gen->prompt_len[i], gl = gen->gen_len[i];
        const int32_t *row = gen->tokens + i * gen->max_total;
        r->prompt_len[i] = pl, r->resp_len[i] = gl, r->truncated[i] = !gen->stopped[i];
        if (!(r->tokens[i] = malloc(sizeof(int32_t) * (size_t)(pl + gl)))) {
            s = cg_set_error(CG_ERR_OOM, "bench_rl_step: out of memory");
            break;
        }
        memcpy(r->tokens[i], row, sizeof(int32_t) * (size_t)(pl + gl));
        for (int64_t t = 0; t < gl; t++) r->sample_logp[i * r->max_resp + t] = gen->logprobs[i * gen->max_total + pl + t];
        r->rewards[i] = rl_bench_reward(row + pl, gl);
    }
    double t1 = rl_bench_now();
    tm->rollout = t1 - t0;

    /* ---- update: old and reference log-probs (no-grad), advantages, the accumulated gradient, one step */
    int64_t T = r->max_resp, resp_tokens = 0;
    for (int64_t i = 0; s == CG_OK && i < n; i++) resp_tokens += r->resp_len[i];
    cg_rl_config obj = cg_rl_config_default(CG_RL_GRPO);
    if (s == CG_OK) {
        old_lp = malloc(sizeof(float) * (size_t)(n * T));
        ref_lp = malloc(sizeof(float) * (size_t)(n * T));
        if (!old_lp || !ref_lp) s = cg_set_error(CG_ERR_OOM, "bench_rl_step: out of memory");
    }
    if (s == CG_OK) s = rl_bench_logprobs(policy, r, order, mb, old_lp);
    if (s == CG_OK && reference) {
        s = rl_bench_logprobs(reference, r, order, mb, ref_lp);
    } else if (s == CG_OK) { /* LoRA: the reference is the policy with its adapters off */
        cg_lora_set_enabled(policy, false);
        s = rl_bench_logprobs(policy, r, order, mb, ref_lp);
        cg_lora_set_enabled(policy, true);
    }
    if (s == CG_OK) s = cg_compute_advantages(obj.adv_kind, r->rewards, n, G, obj.adv_eps, adv);
    double t2 = rl_bench_now();
    tm->loss = 0, tm->kl = 0;
    for (int64_t b0 = 0; s == CG_OK && b0 < n; b0 += mb) {
        int64_t nb = n - b0 < mb ? n - b0 : mb;
        cg_tensor *mask = NULL;
        cg_tensor *logp = cg_rollout_logprobs(policy, r, order + b0, nb, 1.0f, &mask, NULL);
        cg_tensor *old_t = logp ? rl_bench_rows(old_lp, b0, nb, T, dev) : NULL;
        cg_tensor *ref_t = logp ? rl_bench_rows(ref_lp, b0, nb, T, dev) : NULL;
        cg_rl_inputs in = {.logp = logp, .old_logp = old_t, .ref_logp = ref_t, .mask = mask, .advantages = adv + b0,
                           .group_size = G, .seq_count = (double)n, .token_count = (double)resp_tokens};
        cg_rl_stats rs = {0};
        cg_tensor *loss = logp && old_t && ref_t ? cg_rl_loss(&obj, &in, &rs) : NULL;
        s = loss ? cg_backward(loss) : cg_last_status();
        tm->loss += rs.loss, tm->kl += rs.kl_ref * (double)nb / (double)n;
        cg_step_end(); /* the micro-batch's activations and tape; the gradients stay in the model's arena */
    }
    cg_optim_step_info info = {0};
    if (s == CG_OK) s = cg_optimizer_step(opt, o->lr, &info);
    cg_optimizer_zero_grad(opt);
    if (s == CG_OK) s = cg_device_synchronize(dev);
    double t3 = rl_bench_now();
    tm->old_ref = t2 - t1, tm->grad = t3 - t2;
    tm->reward_mean = s == CG_OK ? cg_rollout_mean_reward(r) : 0.0;
    cg_generation_free(gen);
    cg_rollout_free(r);
    free(rows), free(lens), free(order), free(adv), free(old_lp), free(ref_lp);
    cg_step_end();
    return s;
}

static int rl_bench_fail(const char *what) {
    fprintf(stderr, "bench_rl_step: %s: %s\n", what, cg_last_error());
    return 1;
}

/* The benchmark with its command line; prints to out. 0 on success or a skip, 1 on an error, 2 on bad flags. */
int bench_rl_step_run(int argc, char **argv, FILE *out) {
    rl_bench_opts o = {.preset = "qwen2.5-0.5b", .device = "cuda", .targets = "q,k,v,o,gate,up,down",
                       .prompts = 16, .group = 8, .prompt_len = 64, .new_tokens = 512, .rank = 32, .micro = 16,
                       .warmup = 1, .steps = 2, .seed = 1, .threads = 0, .alpha = 64.0f, .lr = 1e-5f};
    int rc = rl_bench_parse(argc, argv, &o, out);
    if (rc) return rc == 1 ? 0 : rc;
    cg_device dev;
    if (cg_device_parse(o.device, &dev) != CG_OK) {
        fprintf(stderr, "bench_rl_step: --device %s: %s\n", o.device, cg_last_error());
        return 2;
    }
    if (dev.type == CG_DEVICE_CUDA && dev.index >= cg_cuda_device_count()) {
        fprintf(out, "bench_rl_step %s: no CUDA device: skipped\n", o.preset);
        return 0;
    }
    if (o.threads) cg_set_num_threads((int)o.threads);
    cg_model_config cfg;
    cg_model *policy = NULL, *reference = NULL;
    if (cg_model_config_preset(o.preset, &cfg) != CG_OK) return rl_bench_fail("--preset");
    if (o.prompt_len + o.new_tokens > cfg.max_seq_len) {
        fprintf(stderr, "bench_rl_step: prompt-len + new = %lld exceeds %s's max_seq_len %lld\n",
                (long long)(o.prompt_len + o.new_tokens), o.preset, (long long)cfg.max_seq_len);
        return 2;
    }
    if (cg_model_create(&cfg, dev, (uint64_t)o.seed, &policy) != CG_OK) return rl_bench_fail("creating the model");
    bool bf16 = dev.type == CG_DEVICE_CUDA;
    cg_lora_config lora = cg_lora_config_default();
    lora.rank = (int)o.rank, lora.alpha = o.alpha, lora.targets = o.targets, lora.seed = (uint64_t)o.seed;
    cg_status s = CG_OK;
    if (o.full) s = cg_model_copy(policy, &reference); /* the frozen reference of full fine-tuning */
    else s = cg_lora_attach(policy, &lora);
    if (s == CG_OK && bf16) s = cg_model_set_compute_dtype(policy, CG_BF16);
    if (s == CG_OK && bf16 && reference) s = cg_model_set_compute_dtype(reference, CG_BF16);
    if (s != CG_OK) return rl_bench_fail(o.full ? "the reference copy / bf16" : "LoRA / bf16");
    cg_tensor *params[4096];
    int n_params = cg_model_trainable(policy, params, 4096);
    int64_t trainable = 0;
    for (int i = 0; i < n_params && i < 4096; i++) trainable += cg_numel(params[i]);
    cg_optimizer_config oc = cg_optimizer_config_default(CG_OPT_ADAMW);
    oc.lr = o.lr, oc.weight_decay = 0.0f;
    cg_optimizer *opt = NULL;
    if (n_params > 4096) return rl_bench_fail("too many trainable tensors");
    if ((s = cg_model_alloc_grads(policy)) != CG_OK || (s = cg_optimizer_create(&oc, n_params, params, &opt)) != CG_OK ||
        (s = cg_optimizer_bind_working_copies(opt, policy)) != CG_OK)
        return rl_bench_fail("the optimizer");

    int64_t P = o.prompts, G = o.group, n = P * G;
    int32_t *prompt_ids = malloc(sizeof(int32_t) * (size_t)(P * o.prompt_len));
    if (!prompt_ids) return rl_bench_fail("out of memory");
    uint64_t x = 0x9E3779B97F4A7C15ull ^ (uint64_t)o.seed;
    for (int64_t i = 0; i < P * o.prompt_len; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        prompt_ids[i] = (int32_t)(x % (uint64_t)cfg.vocab_size);
    }
    char dev_str[32];
    cg_device_str(dev, dev_str, sizeof dev_str);
    int64_t mb = o.micro > 0 && o.micro < n ? o.micro : n;
    fprintf(out, "bench_rl_step: %s (%.1fM parameters) on %s, %s compute, %s (%.2fM trainable), GRPO, %lld prompts x "
            "%lld samples, %lld prompt + %lld new tokens, T=1, micro-batch %lld sequences, AdamW lr %g\n",
            cfg.name, (double)cg_model_num_elements(policy) / 1e6, dev_str, bf16 ? "bf16" : "f32",
            o.full ? "full fine-tune" : "LoRA", (double)trainable / 1e6, (long long)P, (long long)G,
            (long long)o.prompt_len, (long long)o.new_tokens, (long long)mb, (double)o.lr);
    if (!o.full)
        fprintf(out, "bench_rl_step: LoRA r=%lld alpha %g on %s\n", (long long)o.rank, (double)o.alpha, o.targets);
    fflush(out);
    rl_bench_times sum = {0};
    rc = 0;
    for (int64_t step = 0; step < o.warmup + o.steps; step++) {
        rl_bench_times tm = {0};
        if (rl_bench_step(&o, policy, reference, opt, prompt_ids, step, &tm) != CG_OK) {
            rc = rl_bench_fail("the step");
            break;
        }
        bool measured = step >= o.warmup;
        fprintf(out, "step %lld%s: rollout %.3f s, old+ref log-probs %.3f s, loss+backward+step %.3f s, reward %.4f, "
                "loss %.5f, kl %.2e\n", (long long)step, measured ? "" : " (warm-up)", tm.rollout, tm.old_ref, tm.grad,
                tm.reward_mean, tm.loss, tm.kl);
        fflush(out);
        if (measured) sum.rollout += tm.rollout, sum.old_ref += tm.old_ref, sum.grad += tm.grad;
    }
    if (rc == 0) {
        double k = (double)o.steps, new_tok = (double)(n * o.new_tokens), all_tok = (double)(n * (o.prompt_len + o.new_tokens));
        double roll = sum.rollout / k, upd = (sum.old_ref + sum.grad) / k, grad = sum.grad / k;
        fprintf(out, "rollout: %.0f new tokens in %.3f s: %.1f tokens/s (mean of %lld steps)\n", new_tok, roll,
                new_tok / roll, (long long)o.steps);
        fprintf(out, "update: %.0f tokens (prompt + response) in %.3f s: %.1f tokens/s, old + reference log-probs "
                "included (without them: %.1f tokens/s; response tokens only: %.1f tokens/s)\n", all_tok, upd,
                all_tok / upd, all_tok / grad, new_tok / upd);
        cg_memory_stats ms = cg_memory_get_stats(dev);
        const double MiB = 1 << 20;
        fprintf(out, "peak memory (%s context arenas): persistent %.1f MiB used (%.1f reserved), step peak %.1f MiB "
                "(%.1f reserved)", dev_str, (double)ms.persistent_used / MiB, (double)ms.persistent_reserved / MiB,
                (double)ms.step_peak / MiB, (double)ms.step_reserved / MiB);
#ifdef CG_HAVE_CUDA
        size_t free_b = 0, total_b = 0;
        if (dev.type == CG_DEVICE_CUDA && cg_cuda_rt_mem_info(dev.index, &free_b, &total_b) == CG_OK)
            fprintf(out, "; the driver: %.1f of %.1f GiB in use at the end", (double)(total_b - free_b) / (MiB * 1024),
                    (double)total_b / (MiB * 1024));
#endif
        fprintf(out, "\n");
    }
    free(prompt_ids);
    cg_optimizer_free(opt);
    cg_model_free(reference);
    cg_model_free(policy);
    return rc;
}

#ifndef CG_BENCH_RL_STEP_NO_MAIN
int main(int argc, char **argv) {
    int rc = bench_rl_step_run(argc, argv, stdout);
    cg_shutdown();
    return rc;
}
#endif
