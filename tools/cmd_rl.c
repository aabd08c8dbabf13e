/* cgrad rl: policy-gradient fine-tuning on a verifiable task. With no flags it is the default demo: a small
 * transformer trained from scratch on the CPU, a short supervised warm-up on generated arithmetic, then GRPO,
 * with held-out accuracy before and after RL, a metrics file and an SVG plot of reward and accuracy. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "models/checkpoint.h"
#include "models/lora.h"
#include "optim/train.h"
#include "rl/sft.h"
#include "rl/trainer.h"
#include "tools/commands.h"
#include "tools/dist_cli.h"
#include "tools/flags.h"
#include "tools/svg_plot.h"

typedef enum { F_STR, F_I64, F_F32, F_BOOL } flag_type;
typedef struct flag {
    const char *name;
    flag_type type;
    void *ptr;
    const char *help;
} flag;

typedef struct rl_args {
    const char *model, *task, *algo, *optimizer, *device, *dtype, *out, *metrics, *lora_targets, *adv, *aggregation,
        *disco_score;
    int64_t prompts, group, max_new, steps, epochs, minibatch, sft_steps, sft_batch, lora_rank, difficulty, seed,
        eval_items, top_k, max_gen_batches, overlong_cache, log_every, threads;
    float sft_slip, lr, sft_lr, temperature, top_p, lora_alpha, clip_low, clip_high, dual_clip, kl_beta, adv_eps,
        norm_constant, gppo_beta1, gppo_beta2, sft_coef, disco_tau, disco_beta, disco_delta, overlong_factor,
        weight_decay, grad_clip, lora_dropout;
    bool dynamic_sampling, overlong_filter, overlong_penalty, rslora;
} rl_args;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void usage(FILE *f, const flag *flags, int n) {
    fprintf(f, "usage: cgrad rl [--flags]   (no flags: the default demo, a few minutes on 2 CPU cores)\n\n");
    for (int i = 0; i < n; i++) fprintf(f, "  --%-20s %s\n", flags[i].name, flags[i].help);
}

/* Parses --name value pairs (and bare --name for booleans) into the table; 0 = ok, 2 = usage error. */
static int parse_flags(int argc, char **argv, flag *flags, int n) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) != 0) {
            fprintf(stderr, "cgrad rl: unexpected argument '%s' (cgrad rl --help)\n", a);
            return 2;
        }
        const flag *fl = NULL;
        for (int k = 0; k < n && !fl; k++)
            if (strcmp(a + 2, flags[k].name) == 0) fl = &flags[k];
        if (!fl) {
            fprintf(stderr, "cgrad rl: unknown flag '%s' (cgrad rl --help)\n", a);
            return 2;
        }
        if (fl->type == F_BOOL) {
            *(bool *)fl->ptr = true;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "cgrad rl: %s needs a value\n", a);
            return 2;
        }
        const char *v = argv[++i];
        int rc = 0;
        if (fl->type == F_STR) *(const char **)fl->ptr = v;
        else if (fl->type == F_I64) rc = cg_flag_i64("rl", a, v, (int64_t *)fl->ptr);
        else rc = cg_flag_f32("rl", a, v, (float *)fl->ptr);
        if (rc) return rc;
    }
    return 0;
}

static cg_status write_json_line(FILE *f, const cg_rl_step_stats *s) {
    fprintf(f,
            "{\"step\": %lld, \"reward\": %.6g, \"accuracy\": %.6g, \"kl\": %s%.6g%s, \"entropy\": %.6g, "
            "\"response_len\": %.4g, \"loss\": %.6g, \"clip_fraction\": %.4g, \"grad_norm\": %.6g, "
            "\"sequences\": %lld, \"tokens\": %lld, \"rollout_tokens_per_s\": %.1f, \"update_tokens_per_s\": %.1f, "
            "\"groups_dropped\": %lld}\n",
            (long long)s->step, s->reward, s->accuracy, isnan(s->kl) ? "null" : "", isnan(s->kl) ? 0.0 : s->kl,
            isnan(s->kl) ? "" : "", s->entropy, s->response_len, s->loss, s->clip_fraction, s->grad_norm,
            (long long)s->sequences, (long long)s->tokens, s->rollout_tokens_per_s, s->update_tokens_per_s,
            (long long)s->groups_dropped);
    return fflush(f) == 0 ? CG_OK : cg_set_error(CG_ERR_IO, "cannot write the metrics file");
}

/* 1 when the response is the sloppy pupil's answer and that answer is wrong: how often the model still
 * imitates the part of its warm-up that RL has to unlearn. */
static float sloppy_answer_reward(const char *prompt, const char *response, size_t response_len, const char *answer,
                                  void *user) {
    (void)user;
    char sloppy[64];
    if (cg_arith_answer_without_carry(prompt, sloppy, sizeof sloppy) != CG_OK || strcmp(sloppy, answer) == 0) return 0;
    size_t n = cg_reward_answer_len(response, response_len);
    return n == strlen(sloppy) && memcmp(response, sloppy, n) == 0 ? 1.0f : 0.0f;
}

int cg_cmd_rl(int argc, char **argv) {
    /* the default demo's settings (tuned to finish in a few minutes on 2 cores) */
    rl_args A = {.model = "demo", .task = "arith", .algo = "grpo", .optimizer = "adamw", .device = "cpu", .dtype = NULL,
                 .out = "rl_out", .metrics = NULL, .lora_targets = "q,k,v,o,gate,up,down", .adv = NULL,
                 .aggregation = NULL, .disco_score = NULL, .prompts = 32, .group = 8, .max_new = 8, .steps = 300,
                 .epochs = 1, .minibatch = 0, .sft_steps = 2000, .sft_batch = 64, .lora_rank = 0, .difficulty = 1,
                 .seed = 1, .eval_items = 400, .top_k = 0, .max_gen_batches = -1, .overlong_cache = -1, .log_every = 1, .threads = -1,
                 .sft_slip = NAN, .lr = 1e-4f, .sft_lr = 3e-3f, .temperature = 1.0f, .top_p = 1.0f, .lora_alpha = 0,
                 .clip_low = NAN, .clip_high = NAN, .dual_clip = NAN, .kl_beta = NAN, .adv_eps = NAN,
                 .norm_constant = NAN, .gppo_beta1 = NAN, .gppo_beta2 = NAN, .sft_coef = NAN, .disco_tau = NAN,
                 .disco_beta = NAN, .disco_delta = NAN, .overlong_factor = NAN, .weight_decay = 0.0f, .grad_clip = 1.0f,
                 .lora_dropout = 0.0f};
    cg_cli_dist dist = {0}; /* --zero, --no-bind, --comm-timeout (mpirun -np N cgrad rl) */
    flag flags[] = {
        {"model", F_STR, &A.model, "PRESET or DIR (HF directory / llm.c .bin); 'demo' = a fresh llama:tiny (default)"},
        {"task", F_STR, &A.task, "arith (generated arithmetic, default) or FILE.jsonl ({\"prompt\", \"answer\"} lines)"},
        {"difficulty", F_I64, &A.difficulty, "arith level 0-4 (default 1: 1-2 digit + and -)"},
        {"algo", F_STR, &A.algo, "grpo|drgrpo|dapo|gppo|disco|discob|reinforce (default grpo)"},
        {"optimizer", F_STR, &A.optimizer, "adamw|lion (default adamw)"},
        {"lr", F_F32, &A.lr, "RL learning rate (default 1e-4 for the demo's tiny model)"},
        {"weight-decay", F_F32, &A.weight_decay, "decoupled weight decay (default 0)"},
        {"grad-clip", F_F32, &A.grad_clip, "global gradient-norm clip (default 1, 0 = off)"},
        {"prompts", F_I64, &A.prompts, "prompts per step (default 32)"},
        {"group", F_I64, &A.group, "samples per prompt G (default 8)"},
        {"max-new", F_I64, &A.max_new, "max new tokens per response (default 8)"},
        {"temperature", F_F32, &A.temperature, "sampling temperature (default 1)"},
        {"top-k", F_I64, &A.top_k, "sampling top-k (default 0 = off)"},
        {"top-p", F_F32, &A.top_p, "sampling top-p (default 1 = off)"},
        {"steps", F_I64, &A.steps, "RL steps (default 300)"},
        {"epochs", F_I64, &A.epochs, "update epochs per rollout batch (default 1)"},
        {"minibatch", F_I64, &A.minibatch, "sequences per optimizer step (default 0 = the whole batch)"},
        {"sft-steps", F_I64, &A.sft_steps, "supervised warm-up steps before RL (default 2000; 0 = none)"},
        {"sft-batch", F_I64, &A.sft_batch, "warm-up batch size (default 64)"},
        {"sft-lr", F_F32, &A.sft_lr, "warm-up learning rate (default 3e-3)"},
        {"sft-slip", F_F32, &A.sft_slip, "fraction of warm-up answers (a+b=, a-b=) from a pupil who forgets carries and borrows (default 0.6 for the demo model, else 0)"},
        {"lora-rank", F_I64, &A.lora_rank, "attach LoRA of this rank (default 0 = full fine-tuning)"},
        {"lora-alpha", F_F32, &A.lora_alpha, "LoRA alpha (default 2 x rank)"},
        {"lora-dropout", F_F32, &A.lora_dropout, "LoRA dropout (default 0)"},
        {"lora-targets", F_STR, &A.lora_targets, "LoRA target modules (default q,k,v,o,gate,up,down)"},
        {"rslora", F_BOOL, &A.rslora, "rsLoRA scaling alpha / sqrt(r)"},
        {"device", F_STR, &A.device, "cpu|cuda (default cpu)"},
        {"dtype", F_STR, &A.dtype, "compute dtype: bf16 (CUDA default: bf16 working weights, fp32 masters) or f32"},
        {"threads", F_I64, &A.threads, "CPU threads (default: 1 for models under 5M parameters, else all cores)"},
        {"zero", F_I64, &dist.zero, "1: ZeRO-1, optimizer state sharded over the mpirun ranks (default 0)"},
        {"no-bind", F_BOOL, &dist.no_bind, "under mpirun: do not bind each rank to its share of the cores (hwloc)"},
        {"comm-timeout", F_F32, &dist.comm_timeout, "under mpirun: end the job when a collective waits this many s (600)"},
        {"out", F_STR, &A.out, "output directory: metrics, plot, final model (default rl_out)"},
        {"metrics", F_STR, &A.metrics, "metrics JSONL file (default OUT/metrics.jsonl)"},
        {"seed", F_I64, &A.seed, "seed of the model init, the tasks and the sampling (default 1)"},
        {"eval-items", F_I64, &A.eval_items, "held-out problems for the before/after accuracy (default 400)"},
        {"adv", F_STR, &A.adv, "advantage: group-mean-std|group-mean|batch-std|rloo|none (default: the algorithm's)"},
        {"adv-eps", F_F32, &A.adv_eps, "epsilon of the std normalisation (spec default)"},
        {"aggregation", F_STR, &A.aggregation, "seq-mean-token-mean|token-mean|token-sum-norm|seq-mean-token-sum"},
        {"norm-constant", F_F32, &A.norm_constant, "the constant of token-sum-norm (spec default)"},
        {"clip-low", F_F32, &A.clip_low, "PPO clip epsilon (low side) (spec default)"},
        {"clip-high", F_F32, &A.clip_high, "PPO clip epsilon, high side (DAPO clip-higher) (spec default)"},
        {"dual-clip", F_F32, &A.dual_clip, "dual-clip constant c (0 = off) (spec default)"},
        {"kl-beta", F_F32, &A.kl_beta, "k3 KL coefficient to the reference (spec default)"},
        {"gppo-beta1", F_F32, &A.gppo_beta1, "GPPO beta1 (spec default)"},
        {"gppo-beta2", F_F32, &A.gppo_beta2, "GPPO beta2 (spec default)"},
        {"sft-coef", F_F32, &A.sft_coef, "GPPO SFT term on positives (spec default)"},
        {"disco-score", F_STR, &A.disco_score, "log-l|l-ratio (spec default)"},
        {"disco-tau", F_F32, &A.disco_tau, "DisCO log-sum-exp temperature (spec default)"},
        {"disco-beta", F_F32, &A.disco_beta, "DisCO squared-hinge weight (spec default)"},
        {"disco-delta", F_F32, &A.disco_delta, "DisCO KL radius (spec default)"},
        {"dynamic-sampling", F_BOOL, &A.dynamic_sampling, "refill groups whose rewards are all equal (DAPO)"},
        {"max-gen-batches", F_I64, &A.max_gen_batches, "rollout batches per step with dynamic sampling"},
        {"overlong-filter", F_BOOL, &A.overlong_filter, "mask truncated responses (DAPO)"},
        {"overlong-penalty", F_BOOL, &A.overlong_penalty, "DAPO's soft overlong penalty on the reward"},
        {"overlong-cache", F_I64, &A.overlong_cache, "L_cache of the overlong penalty (spec default)"},
        {"overlong-factor", F_F32, &A.overlong_factor, "overlong penalty factor (spec default)"},
    };
    int nf = (int)(sizeof flags / sizeof flags[0]);
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout, flags, nf);
            return 0;
        }
    int rc = parse_flags(argc, argv, flags, nf);
    if (rc) return rc;
    if ((dist.zero != 0 && dist.zero != 1) || dist.comm_timeout < 0) {
        fprintf(stderr, "cgrad rl: --zero takes 0 or 1 and --comm-timeout a positive number of seconds\n");
        return 2;
    }

    /* ---- the configuration: the algorithm's spec defaults, overridden by the flags that were given ---- */
    cg_rl_algo algo;
    cg_optimizer_kind opt_kind;
    cg_status s = cg_rl_algo_parse(A.algo, &algo);
    if (s == CG_OK) s = cg_optimizer_kind_from_name(A.optimizer, &opt_kind);
    cg_device dev = CG_CPU;
    if (s == CG_OK && cg_device_parse(A.device, &dev) != CG_OK) s = cg_error_context("--device %s: ", A.device);
    if (s == CG_OK && dev.type == CG_DEVICE_CUDA && dev.index >= cg_cuda_device_count())
        s = cg_set_error(CG_ERR_DEVICE, "--device %s: %d CUDA device(s) on this machine (%s)", A.device,
                         cg_cuda_device_count(), cg_cuda_compiled() ? "built with CUDA" : "built without CUDA");
    cg_rl_trainer_config tc = cg_rl_trainer_config_default(algo);
    cg_rl_config *o = &tc.obj;
    if (s == CG_OK && A.adv) s = cg_advantage_kind_parse(A.adv, &o->adv_kind);
    if (s == CG_OK && A.aggregation) s = cg_rl_aggregation_parse(A.aggregation, &o->aggregation);
    if (s == CG_OK && A.disco_score) s = cg_disco_score_parse(A.disco_score, &o->disco_score);
#define SET(field, value) \
    if (!isnan(value)) field = value
    SET(o->adv_eps, A.adv_eps);
    SET(o->norm_constant, A.norm_constant);
    SET(o->clip_low, A.clip_low);
    SET(o->clip_high, A.clip_high);
    SET(o->dual_clip, A.dual_clip);
    SET(o->kl_beta, A.kl_beta);
    SET(o->gppo_beta1, A.gppo_beta1);
    SET(o->gppo_beta2, A.gppo_beta2);
    SET(o->sft_coef, A.sft_coef);
    SET(o->disco_tau, A.disco_tau);
    SET(o->disco_beta, A.disco_beta);
    SET(o->disco_delta, A.disco_delta);
    SET(o->overlong_penalty_factor, A.overlong_factor);
#undef SET
    if (A.dynamic_sampling) o->dynamic_sampling = true;
    if (A.overlong_filter) o->overlong_filter = true;
    if (A.overlong_penalty) o->overlong_penalty = true;
    if (A.max_gen_batches >= 0) o->max_gen_batches = (int)A.max_gen_batches;
    if (A.overlong_cache >= 0) o->overlong_cache_len = A.overlong_cache;
    /* DAPO's default cache (4096 of a 20480-token budget) scaled to this budget: its last 20% */
    else if (o->overlong_penalty && o->overlong_cache_len > A.max_new) o->overlong_cache_len = A.max_new / 5;
    tc.prompts_per_step = A.prompts, tc.group_size = A.group, tc.epochs = (int)A.epochs, tc.minibatch_seqs = A.minibatch;
    tc.sampling = (cg_sampling){.temperature = A.temperature, .top_k = (int)A.top_k, .top_p = A.top_p,
                                .max_new_tokens = A.max_new};
    tc.opt = cg_optimizer_config_default(opt_kind);
    tc.opt.lr = A.lr, tc.opt.weight_decay = A.weight_decay, tc.opt.grad_clip = A.grad_clip;
    tc.seed = (uint64_t)A.seed;
    /* the adapter, when --lora-rank is given: attached after the warm-up, saved at the end */
    cg_lora_config lc = cg_lora_config_default();
    lc.rank = (int)A.lora_rank, lc.alpha = A.lora_alpha > 0 ? A.lora_alpha : 2.0f * (float)A.lora_rank;
    lc.rslora = A.rslora, lc.dropout = A.lora_dropout, lc.targets = A.lora_targets, lc.seed = (uint64_t)A.seed;
    if (s != CG_OK) {
        fprintf(stderr, "cgrad rl: %s\n", cg_last_error());
        return 1;
    }
    /* distributed: prompts split over the ranks; rank 0 prints and writes files */
    dist.nccl = dev.type == CG_DEVICE_CUDA; /* under mpirun: gradients over NCCL, one GPU per local rank */
    if (cg_cli_dist_start("rl", &dist, &A.threads)) return 1;
    dev = cg_cli_dist_device(&dist, dev);
    bool root = cg_cli_dist_is_root(&dist);
    tc.comm = dist.comm, tc.zero1 = dist.zero == 1;

    /* ---- model, tokenizer, tasks, rewards ---- */
    cg_model *m = NULL;
    cg_tokenizer *tok = NULL;
    cg_task_set *tasks = NULL;
    cg_rl_trainer *trainer = NULL;
    cg_model *reference = NULL;
    FILE *mf = NULL;
    bool demo = strcmp(A.model, "demo") == 0;
    if (isnan(A.sft_slip)) A.sft_slip = demo ? 0.6f : 0.0f;
    if (!(A.sft_slip >= 0.0f && A.sft_slip <= 1.0f)) {
        fprintf(stderr, "cgrad rl: --sft-slip %g is not a fraction in [0, 1]\n", (double)A.sft_slip);
        cg_cli_dist_end(&dist);
        return 2;
    }
    cg_model_config cfg;
    if (demo || cg_model_config_preset(A.model, &cfg) == CG_OK) {
        if (demo) s = cg_model_config_preset("llama:tiny", &cfg);
        if (s == CG_OK) s = cg_model_create(&cfg, dev, (uint64_t)A.seed, &m);
    } else {
        s = cg_model_load(A.model, dev, &m);
    }
    const char *dtype_name = A.dtype ? A.dtype : dev.type == CG_DEVICE_CUDA ? "bf16" : "f32";
    if (s == CG_OK && strcmp(dtype_name, "bf16") != 0 && strcmp(dtype_name, "f32") != 0)
        s = cg_set_error(CG_ERR_INVALID_ARG, "--dtype '%s': expected bf16 or f32", dtype_name);
    if (s == CG_OK) s = cg_model_set_compute_dtype(m, strcmp(dtype_name, "bf16") == 0 ? CG_BF16 : CG_F32);
    if (s == CG_OK) {
        char path[4096];
        snprintf(path, sizeof path, "%s/tokenizer.json", A.model);
        struct stat sb;
        s = (!demo && stat(path, &sb) == 0) ? cg_tokenizer_load(path, &tok)
                                            : cg_tokenizer_char_create(CG_CHAR_ALPHABET_DEFAULT, &tok);
        if (s == CG_OK && cg_tokenizer_vocab_size(tok) > m->cfg.vocab_size)
            s = cg_set_error(CG_ERR_INVALID_ARG, "the tokenizer has %lld tokens but the model only %lld",
                             (long long)cg_tokenizer_vocab_size(tok), (long long)m->cfg.vocab_size);
    }
    if (s == CG_OK) {
        if (strcmp(A.task, "arith") == 0) {
            cg_arith_config ac = cg_arith_difficulty((int)A.difficulty);
            s = cg_task_set_arith(&ac, (uint64_t)A.seed, &tasks);
        } else {
            s = cg_task_set_load_jsonl(A.task, &tasks);
        }
    }
    /* reward: 1 for the right number; the format reward is implied (a wrong format is not a number) */
    cg_reward_numeric_opts numeric = {0};
    cg_reward rewards[1] = {{cg_reward_numeric, &numeric, 1.0f}};
    if (s == CG_OK && root && mkdir(A.out, 0755) != 0 && errno != EEXIST)
        s = cg_set_error(CG_ERR_IO, "cannot create the output directory %s", A.out);
    char metrics_path[4096], plot_path[4096];
    snprintf(metrics_path, sizeof metrics_path, "%s", A.metrics ? A.metrics : "");
    if (!A.metrics) snprintf(metrics_path, sizeof metrics_path, "%s/metrics.jsonl", A.out);
    snprintf(plot_path, sizeof plot_path, "%s/reward_accuracy.svg", A.out);
    if (s == CG_OK && root && !(mf = fopen(metrics_path, "w"))) s = cg_set_error(CG_ERR_IO, "cannot write %s", metrics_path);
    if (s != CG_OK) goto done;
    /* a tiny model's ops are too small to share between threads: the synchronisation costs more than the work
     * (13x slower on a loaded 2-core machine) */
    int threads = cg_set_num_threads(A.threads > 0 ? (int)A.threads : cg_model_num_elements(m) < 5000000 ? 1 : 0);
    printf("cgrad rl: %d CPU thread%s\n", threads, threads == 1 ? "" : "s");
    printf("cgrad rl: %s, %s model (%lld parameters), task %s, %s\n", cg_rl_algo_name(algo), m->cfg.name,
           (long long)cg_model_num_elements(m), cg_task_set_describe(tasks), demo ? "the default demo" : "");

    double t_start = now_s();
    /* ---- supervised warm-up ---- */
    if (A.sft_steps > 0) {
        cg_optimizer_config sc = cg_optimizer_config_default(CG_OPT_ADAMW);
        sc.weight_decay = 0.0f, sc.grad_clip = 1.0f;
        cg_tensor *params[4096];
        int np = cg_model_trainable(m, params, 4096);
        cg_optimizer *sopt = NULL;
        s = cg_model_alloc_grads(m);
        if (s == CG_OK) s = cg_optimizer_create(&sc, np, params, &sopt);
        if (s == CG_OK) s = cg_optimizer_bind_working_copies(sopt, m); /* bf16 on CUDA */
        cg_task_set *train = NULL;
        if (s == CG_OK) s = cg_task_set_split(tasks, CG_SPLIT_TRAIN, &train);
        cg_rng slip_rng = cg_rng_init((uint64_t)A.seed ^ 0x510905ull);
        int64_t B = A.sft_batch, next = 1000000; /* warm-up items come from a different part of the stream */
        for (int64_t step = 0; s == CG_OK && step < A.sft_steps; step++) {
            cg_task_item *items = calloc((size_t)B, sizeof *items);
            const char **p = calloc((size_t)B, sizeof *p), **a = calloc((size_t)B, sizeof *a);
            for (int64_t i = 0; s == CG_OK && i < B; i++) {
                s = cg_task_set_get(train, (next++) % cg_task_set_size(train), &items[i]);
                p[i] = items[i].prompt, a[i] = items[i].answer;
                uint32_t w;
                cg_rng_u32(&slip_rng, &w, 1);
                char sloppy[64];
                if (s == CG_OK && A.sft_slip > 0 && cg_rng_unit_f32(w) < A.sft_slip &&
                    cg_arith_answer_without_carry(items[i].prompt, sloppy, sizeof sloppy) == CG_OK) {
                    free(items[i].answer);
                    items[i].answer = strdup(sloppy);
                    if (!items[i].answer) s = cg_set_error(CG_ERR_OOM, "warm-up: out of memory");
                    a[i] = items[i].answer;
                }
            }
            float loss = 0;
            /* cosine decay over the warm-up */
            float lr = A.sft_lr * 0.5f * (1.0f + cosf(3.14159265f * (float)step / (float)A.sft_steps));
            if (s == CG_OK) s = cg_sft_step(m, tok, sopt, lr, p, a, B, &loss);
            for (int64_t i = 0; i < B; i++) cg_task_item_free(&items[i]);
            free(items), free(p), free(a);
            cg_step_end();
            if (s == CG_OK && (step % 50 == 0 || step + 1 == A.sft_steps))
                printf("sft step %4lld/%lld  loss %.4f  lr %.2e  %.1fs\n", (long long)step + 1, (long long)A.sft_steps,
                       loss, lr, now_s() - t_start);
        }
        cg_optimizer_free(sopt);
        cg_task_set_free(train);
        char sft_dir[4096];
        snprintf(sft_dir, sizeof sft_dir, "%s/sft_model", A.out);
        if (s == CG_OK && root) s = cg_model_save_hf(m, sft_dir, 0, CG_F32);
        if (s != CG_OK) goto done;
    }
    if (A.lora_rank > 0) {
        s = cg_lora_attach(m, &lc);
        if (s != CG_OK) goto done;
    }
    double acc_before = 0, acc_after = 0;
    s = cg_rl_evaluate(m, tok, tasks, A.eval_items, A.max_new, rewards, 1, 1.0f, &acc_before);
    if (s != CG_OK) goto done;
    printf("held-out accuracy before RL: %.1f%% (%lld problems, greedy)\n", 100 * acc_before, (long long)A.eval_items);
    double slips_before = 0, slips_after = 0;
    cg_reward slip_reward[1] = {{sloppy_answer_reward, NULL, 1.0f}};
    if (A.sft_slip > 0) {
        s = cg_rl_evaluate(m, tok, tasks, A.eval_items, A.max_new, slip_reward, 1, 1.0f, &slips_before);
        if (s != CG_OK) goto done;
        printf("  of which the carry-forgetting answer (the warm-up's sloppy pupil): %.1f%%\n", 100 * slips_before);
    }

    /* ---- RL ---- */
    /* full fine-tuning with a KL term: the reference policy is a frozen copy of the model after the warm-up
     * (with LoRA the reference is the model with its adapters disabled, no copy) */
    if (tc.obj.kl_beta > 0.0f && A.lora_rank == 0) s = cg_model_copy(m, &reference);
    if (s == CG_OK) s = cg_rl_trainer_create(m, reference, tok, tasks, rewards, 1, &tc, &trainer);
    double *xs = calloc((size_t)(A.steps > 0 ? A.steps : 1), sizeof *xs);
    double *rw = calloc((size_t)(A.steps > 0 ? A.steps : 1), sizeof *rw);
    double *ac = calloc((size_t)(A.steps > 0 ? A.steps : 1), sizeof *ac);
    if (s == CG_OK && (!xs || !rw || !ac)) s = cg_set_error(CG_ERR_OOM, "out of memory");
    for (int64_t step = 0; s == CG_OK && step < A.steps; step++) {
        cg_rl_step_stats st;
        s = cg_rl_trainer_step(trainer, &st);
        if (s != CG_OK) break;
        xs[step] = (double)step, rw[step] = st.reward, ac[step] = st.accuracy;
        if (step % A.log_every == 0 || step + 1 == A.steps)
            printf("rl step %4lld/%lld  reward %.3f  accuracy %.3f  len %.2f  kl %.4f  entropy %.3f  loss %+.4f  "
                   "rollout %.0f tok/s  update %.0f tok/s  %.1fs\n", (long long)step + 1, (long long)A.steps, st.reward,
                   st.accuracy, st.response_len, isnan(st.kl) ? 0.0 : st.kl, st.entropy, st.loss,
                   st.rollout_tokens_per_s, st.update_tokens_per_s, now_s() - t_start);
        if (mf) s = write_json_line(mf, &st);
    }
    if (s == CG_OK) s = cg_rl_evaluate(m, tok, tasks, A.eval_items, A.max_new, rewards, 1, 1.0f, &acc_after);
    if (s == CG_OK && A.sft_slip > 0)
        s = cg_rl_evaluate(m, tok, tasks, A.eval_items, A.max_new, slip_reward, 1, 1.0f, &slips_after);
    if (s == CG_OK && root) {
        printf("held-out accuracy after RL:  %.1f%% (before: %.1f%%), %.1f s in all\n", 100 * acc_after,
               100 * acc_before, now_s() - t_start);
        if (A.sft_slip > 0)
            printf("  carry-forgetting answers: %.1f%% (before: %.1f%%)\n", 100 * slips_after, 100 * slips_before);
        /* the sampled accuracy is noisy step to step (256 samples): its trailing mean shows the trend */
        double *ac_mean = calloc((size_t)(A.steps > 0 ? A.steps : 1), sizeof *ac_mean), window = 0;
        for (int64_t i = 0; ac_mean && i < A.steps; i++) {
            window += ac[i] - (i >= 20 ? ac[i - 20] : 0.0);
            ac_mean[i] = window / (double)(i + 1 < 20 ? i + 1 : 20);
        }
        cg_plot_series series[3] = {{"reward (mean over samples)", xs, rw, A.steps},
                                    {"training accuracy (samples)", xs, ac, A.steps},
                                    {"training accuracy, mean of the last 20 steps", xs, ac_mean, A.steps}};
        char title[256];
        snprintf(title, sizeof title, "%s on %s: held-out accuracy %.1f%% -> %.1f%%", cg_rl_algo_name(algo),
                 A.task, 100 * acc_before, 100 * acc_after);
        s = cg_svg_plot_write(plot_path, title, "RL step", ac_mean ? 3 : 2, series);
        free(ac_mean);
        char final_dir[4096];
        snprintf(final_dir, sizeof final_dir, "%s/model", A.out);
        if (s == CG_OK) s = A.lora_rank > 0 ? CG_OK : cg_model_save_hf(m, final_dir, 0, CG_F32);
        if (s == CG_OK && A.lora_rank > 0) {
            snprintf(final_dir, sizeof final_dir, "%s/adapter", A.out);
            s = cg_lora_save(m, &lc, final_dir);
        }
        if (s == CG_OK) printf("wrote %s, %s and %s\n", metrics_path, plot_path, final_dir);
    }
    free(xs), free(rw), free(ac);
done:
    if (s != CG_OK) fprintf(stderr, "cgrad rl: %s\n", cg_last_error());
    if (s != CG_OK) cg_cli_dist_abort_on_error(1); /* the other ranks would wait for this one */
    if (mf) fclose(mf);
    cg_rl_trainer_free(trainer);
    cg_task_set_free(tasks);
    cg_tokenizer_free(tok);
    cg_model_free(reference);
    cg_model_free(m);
    cg_cli_dist_end(&dist);
    return s == CG_OK ? 0 : 1;
}
