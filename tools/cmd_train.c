/* cgrad train: pre-training / SFT of a model preset or checkpoint on llm.c token shards or a text file, with
 * gradient accumulation, validation, sampling, metrics (JSONL), checkpoints and --resume (optim/train.h). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "models/checkpoint.h"
#include "models/generate.h"
#include "models/lora.h"
#include "models/tokenizer.h"
#include "optim/data.h"
#include "optim/train.h"
#include "tools/commands.h"
#include "tools/dist_cli.h"
#include "tools/flags.h"

#define ERR(...) (fprintf(stderr, "cgrad train: " __VA_ARGS__), fputc('\n', stderr))

static void usage(FILE *f) {
    fprintf(
        f,
        "usage: cgrad train --model PRESET_OR_DIR --data GLOB|FILE [--val GLOB|FILE] --steps N --batch B --seq T\n"
        "                   [--total-batch TOKENS] [--optimizer adamw|lion|sgd] [--lr LR] [--warmup N]\n"
        "                   [--schedule cosine|linear|wsd|constant] [--weight-decay W] [--clip C] [--grad-noise ETA]\n"
        "                   [--lora-rank R --lora-alpha A --lora-targets LIST] [--device cpu|cuda] [--dtype bf16|f32]\n"
        "                   [--out DIR] [--resume] [--metrics FILE.jsonl]\n"
        "model and data:\n"
        "  --model M          a preset with random weights (listed below), a Hugging Face directory or an llm.c .bin\n"
        "  --init-seed S      the random weights' seed (default 1)\n"
        "  --data P           llm.c token shards (a glob: uint16 GPT-2 or uint32 Llama 3) or one text file\n"
        "  --val P            validation shards or text (default for text data: the last --val-frac of it)\n"
        "  --val-frac F       text data held out for validation when --val is not given (default 0.1; 0 = none)\n"
        "  --tokenizer PATH   tokenizer.json for text (default: the model directory's, or the character\n"
        "                     tokenizer for 64-token vocabularies such as gpt2:tiny and llama:tiny)\n"
        "batch and schedule:\n"
        "  --steps N          optimizer steps (default 20)\n"
        "  --batch B          micro-batch rows (default 4)     --seq T   tokens per row (default 64)\n"
        "  --total-batch N    tokens per step; a multiple of B x T, reached by gradient accumulation\n"
        "  --lr LR            peak learning rate (default 3e-4)\n"
        "  --schedule S       cosine (default), linear, wsd or constant, after --warmup N steps (default 0)\n"
        "  --final-frac F     the last lr as a fraction of the peak (default 0)\n"
        "  --decay-frac F     wsd: share of the steps spent decaying (default 0.2); --wsd-sqrt for 1-sqrt decay\n"
        "  --schedule-steps N the schedule's length (default --steps): stop early on a longer run's schedule\n"
        "optimizer:\n"
        "  --optimizer O      adamw (default), lion or sgd\n"
        "  --weight-decay W   decoupled (default: the optimizer's PyTorch default); not on norms, biases and,\n"
        "                     without --decay-embeddings, embeddings\n"
        "  --beta1 B --beta2 B --eps E --momentum M --nesterov\n"
        "  --clip C           global gradient-norm clipping (default 1; 0 = off)\n"
        "  --grad-noise ETA   annealed gradient noise, variance ETA / (1 + t)^0.55 (default 0 = off)\n"
        "  --skip-loss-z Z    skip updates whose loss z-score over the last 128 steps exceeds Z (0 = off)\n"
        "  --skip-grad-z Z    the same for the gradient norm (0 = off)\n"
        "  --seed S           gradient noise and sampling seed (default 0)\n"
        "LoRA:\n"
        "  --lora-rank R      train adapters of rank R instead of the whole model (default 0 = off)\n"
        "  --lora-alpha A     (default R)   --lora-targets LIST (default: PEFT's per family)\n"
        "  --lora-dropout P   (default 0)   --rslora\n"
        "run:\n"
        "  --device D         cpu (default) or cuda (cuda:N for another GPU)\n"
        "  --dtype T          compute dtype on a GPU: bf16 (default: bf16 working weights and activations, fp32\n"
        "                     master weights, optimizer state and accumulation) or f32 (TF32 matmuls); the CPU is f32\n"
        "  --threads N        CPU threads (default: all cores)\n"
        "  --val-every N      validation loss every N steps (default 0: only at the end)\n"
        "  --val-steps N      validation batches (default 20)\n"
        "  --sample-every N   print a sample every N steps (default 0 = never)   --sample-tokens N (default 32)\n"
        "  --out DIR          checkpoints in DIR/ckpt_<step>/ (model or adapter + train_state.bin)\n"
        "  --save-every N     checkpoint every N steps (default 0: at the end only)\n"
        "  --keep-last K      keep the K newest checkpoints (default 0 = all)\n"
        "  --resume           continue from the newest checkpoint in --out, bit-exactly on the CPU when the\n"
        "                     flags (and the schedule's length) are those of the original run\n"
        "  --metrics FILE     one JSON object per step (step, loss, lr, grad_norm, tokens_per_s, ...)\n"
        "presets:");
    for (int i = 0; i < cg_model_preset_count(); i++)
        fprintf(f, " %s", cg_model_preset_name(i));
    fprintf(f, "\n");
    cg_cli_dist_usage(f);
}

typedef struct train_args {
    const char *model, *data, *val, *tokenizer, *out, *metrics, *device, *optimizer, *schedule, *lora_targets, *dtype;
    int64_t init_seed, steps, batch, seq, total_batch, warmup, threads, val_every, val_steps, sample_every,
        sample_tokens, save_every, keep_last, lora_rank, seed, schedule_steps;
    float lr, final_frac, decay_frac, weight_decay, beta1, beta2, eps, momentum, clip, grad_noise, skip_loss_z,
        skip_grad_z, lora_alpha, lora_dropout, val_frac;
    bool have_wd, have_beta1, have_beta2, have_eps, nesterov, decay_embeddings, wsd_sqrt, rslora, resume;
    cg_cli_dist dist;
} train_args;

static int parse_args(int argc, char **argv, train_args *a) {
    memset(a, 0, sizeof *a);
    a->init_seed = 1, a->steps = 20, a->batch = 4, a->seq = 64, a->val_steps = 20, a->sample_tokens = 32;
    a->lr = 3e-4f, a->decay_frac = 0.2f, a->clip = 1.0f, a->val_frac = 0.1f, a->lora_alpha = -1.0f;
    a->device = "cpu", a->optimizer = "adamw", a->schedule = "cosine";
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i];
        if (strcmp(f, "--help") == 0 || strcmp(f, "-h") == 0) {
            usage(stdout);
            return -1;
        }
        bool *flag = strcmp(f, "--nesterov") == 0           ? &a->nesterov
                     : strcmp(f, "--decay-embeddings") == 0 ? &a->decay_embeddings
                     : strcmp(f, "--wsd-sqrt") == 0         ? &a->wsd_sqrt
                     : strcmp(f, "--rslora") == 0           ? &a->rslora
                     : strcmp(f, "--resume") == 0           ? &a->resume
                                                            : NULL;
        if (flag) {
            *flag = true;
            continue;
        }
        int dr = cg_cli_dist_flag("train", &a->dist, argc, argv, &i);
        if (dr) {
            if (dr == 2) return 2;
            continue;
        }
        if (i + 1 >= argc) {
            ERR("%s %s", f,
                strncmp(f, "--", 2) == 0 ? "needs a value (or is unknown: cgrad train --help)" : "is not a flag");
            return 2;
        }
        const char *v = argv[++i];
        int rc = 0;
        const char **str = strcmp(f, "--model") == 0          ? &a->model
                           : strcmp(f, "--data") == 0         ? &a->data
                           : strcmp(f, "--val") == 0          ? &a->val
                           : strcmp(f, "--tokenizer") == 0    ? &a->tokenizer
                           : strcmp(f, "--out") == 0          ? &a->out
                           : strcmp(f, "--metrics") == 0      ? &a->metrics
                           : strcmp(f, "--device") == 0       ? &a->device
                           : strcmp(f, "--dtype") == 0        ? &a->dtype
                           : strcmp(f, "--optimizer") == 0    ? &a->optimizer
                           : strcmp(f, "--schedule") == 0     ? &a->schedule
                           : strcmp(f, "--lora-targets") == 0 ? &a->lora_targets
                                                              : NULL;
        int64_t *i64 = strcmp(f, "--init-seed") == 0        ? &a->init_seed
                       : strcmp(f, "--steps") == 0          ? &a->steps
                       : strcmp(f, "--batch") == 0          ? &a->batch
                       : strcmp(f, "--seq") == 0            ? &a->seq
                       : strcmp(f, "--total-batch") == 0    ? &a->total_batch
                       : strcmp(f, "--warmup") == 0         ? &a->warmup
                       : strcmp(f, "--threads") == 0        ? &a->threads
                       : strcmp(f, "--val-every") == 0      ? &a->val_every
                       : strcmp(f, "--val-steps") == 0      ? &a->val_steps
                       : strcmp(f, "--sample-every") == 0   ? &a->sample_every
                       : strcmp(f, "--sample-tokens") == 0  ? &a->sample_tokens
                       : strcmp(f, "--save-every") == 0     ? &a->save_every
                       : strcmp(f, "--keep-last") == 0      ? &a->keep_last
                       : strcmp(f, "--lora-rank") == 0      ? &a->lora_rank
                       : strcmp(f, "--seed") == 0           ? &a->seed
                       : strcmp(f, "--schedule-steps") == 0 ? &a->schedule_steps
                                                            : NULL;
        float *f32 = strcmp(f, "--lr") == 0             ? &a->lr
                     : strcmp(f, "--final-frac") == 0   ? &a->final_frac
                     : strcmp(f, "--decay-frac") == 0   ? &a->decay_frac
                     : strcmp(f, "--weight-decay") == 0 ? (a->have_wd = true, &a->weight_decay)
                     : strcmp(f, "--beta1") == 0        ? (a->have_beta1 = true, &a->beta1)
                     : strcmp(f, "--beta2") == 0        ? (a->have_beta2 = true, &a->beta2)
                     : strcmp(f, "--eps") == 0          ? (a->have_eps = true, &a->eps)
                     : strcmp(f, "--momentum") == 0     ? &a->momentum
                     : strcmp(f, "--clip") == 0         ? &a->clip
                     : strcmp(f, "--grad-noise") == 0   ? &a->grad_noise
                     : strcmp(f, "--skip-loss-z") == 0  ? &a->skip_loss_z
                     : strcmp(f, "--skip-grad-z") == 0  ? &a->skip_grad_z
                     : strcmp(f, "--lora-alpha") == 0   ? &a->lora_alpha
                     : strcmp(f, "--lora-dropout") == 0 ? &a->lora_dropout
                     : strcmp(f, "--val-frac") == 0     ? &a->val_frac
                                                        : NULL;
        if (str)
            *str = v;
        else if (i64)
            rc = cg_flag_i64("train", f, v, i64);
        else if (f32)
            rc = cg_flag_f32("train", f, v, f32);
        else {
            ERR("unknown flag '%s' (cgrad train --help)", f);
            return 2;
        }
        if (rc) return rc;
    }
    if (!a->model || !a->data) {
        ERR("needs --model PRESET_OR_DIR and --data GLOB|FILE (cgrad train --help)");
        return 2;
    }
    if (a->steps < 1 || a->batch < 1 || a->seq < 1 || a->total_batch < 0 || a->warmup < 0 || a->val_every < 0 ||
        a->val_steps < 1 || a->sample_every < 0 || a->sample_tokens < 0 || a->save_every < 0 || a->keep_last < 0 ||
        a->lora_rank < 0 || a->schedule_steps < 0 || a->keep_last > 1000000 || a->lora_rank > 1 << 20) {
        ERR("--steps, --batch, --seq, --val-steps must be >= 1 and the other counts >= 0");
        return 2;
    }
    cg_optimizer_kind kind;
    cg_lr_schedule_kind skind;
    if (cg_optimizer_kind_from_name(a->optimizer, &kind) != CG_OK ||
        cg_lr_schedule_kind_from_name(a->schedule, &skind) != CG_OK) {
        ERR("%s", cg_last_error());
        return 2;
    }
    if (a->resume && !a->out) {
        ERR("--resume needs --out DIR (where the checkpoints are)");
        return 2;
    }
    if (!(a->val_frac >= 0.0f && a->val_frac < 1.0f)) {
        ERR("--val-frac %g must be in [0, 1)", a->val_frac);
        return 2;
    }
    return 0;
}

/* The tokenizer for text data: --tokenizer, the model directory's tokenizer.json, or the character
 * tokenizer for a 64-token vocabulary; NULL (no error) when none applies. */
static cg_status pick_tokenizer(const train_args *a, bool is_preset, const cg_model_config *cfg, cg_tokenizer **out) {
    *out = NULL;
    if (a->tokenizer) return cg_tokenizer_load(a->tokenizer, out);
    if (!is_preset) {
        char path[4096];
        snprintf(path, sizeof path, "%s/tokenizer.json", a->model);
        FILE *f = fopen(path, "rb");
        if (f) {
            fclose(f);
            return cg_tokenizer_load(path, out);
        }
    }
    if (cfg->vocab_size == 3 + (int64_t)strlen(CG_CHAR_ALPHABET_DEFAULT))
        return cg_tokenizer_char_create(CG_CHAR_ALPHABET_DEFAULT, out);
    return CG_OK;
}

static void json_num(FILE *f, const char *key, double v) {
    if (isfinite(v))
        fprintf(f, ",\"%s\":%.9g", key, v);
    else
        fprintf(f, ",\"%s\":null", key);
}

static void format_eta(double s, char *buf, size_t n) {
    if (!(s >= 0) || s > 1e8) {
        snprintf(buf, n, "?");
        return;
    }
    long t = (long)(s + 0.5);
    if (t >= 3600)
        snprintf(buf, n, "%ldh%02ldm", t / 3600, (t / 60) % 60);
    else
        snprintf(buf, n, "%ldm%02lds", t / 60, t % 60);
}

static void print_sample(cg_model *m, const cg_tokenizer *tok, int64_t tokens, uint64_t seed, int64_t step) {
    int32_t start = 0;
    if (tok)
        start = cg_tokenizer_bos_id(tok) >= 0 ? cg_tokenizer_bos_id(tok)
                                              : (cg_tokenizer_eos_id(tok) >= 0 ? cg_tokenizer_eos_id(tok) : 0);
    int64_t len = 1;
    const int32_t *rows[1] = {&start};
    cg_sampling s = {.temperature = 1.0f, .top_p = 1.0f, .max_new_tokens = tokens, .seed = seed + (uint64_t)step};
    cg_generation *g = NULL;
    if (cg_generate(m, rows, &len, 1, &s, &g) != CG_OK) {
        printf("sample at step %lld failed: %s\n", (long long)step, cg_last_error());
        return;
    }
    char *text = NULL;
    size_t text_len = 0;
    printf("sample at step %lld: ", (long long)step);
    if (tok && cg_tokenizer_decode(tok, g->tokens + g->prompt_len[0], g->gen_len[0], &text, &text_len) == CG_OK) {
        for (size_t i = 0; i < text_len; i++)
            putchar(text[i] == '\n' ? ' ' : text[i]);
        free(text);
    } else {
        for (int64_t t = 0; t < g->gen_len[0]; t++)
            printf("%s%d", t ? " " : "", (int)g->tokens[g->prompt_len[0] + t]);
    }
    printf("\n");
    cg_generation_free(g);
}

typedef struct run_state {
    cg_model *m;
    cg_tokenizer *tok;
    cg_data_loader *train, *val;
    cg_trainer *tr;
    FILE *metrics;
} run_state;

static cg_cli_dist *dist; /* this run's communicator (ended by cleanup) */

static void cleanup(run_state *r) {
    if (r->metrics) fclose(r->metrics);
    cg_trainer_free(r->tr);
    cg_data_close(r->train);
    cg_data_close(r->val);
    cg_tokenizer_free(r->tok);
    cg_model_free(r->m);
    if (dist) cg_cli_dist_end(dist);
    dist = NULL;
}

static int fail(run_state *r, const char *what) {
    ERR("%s%s", what, cg_last_error());
    cg_cli_dist_abort_on_error(1); /* the other ranks would wait for this one until the timeout */
    cleanup(r);
    return 1;
}

int cg_cmd_train(int argc, char **argv) {
    train_args a;
    int rc = parse_args(argc, argv, &a);
    if (rc) return rc < 0 ? 0 : rc;
    run_state r = {0};

    cg_device dev;
    if (cg_device_parse(a.device, &dev) != CG_OK) return fail(&r, "");
    bool gpu = dev.type == CG_DEVICE_CUDA;
    const char *dtype_name = a.dtype ? a.dtype : gpu ? "bf16" : "f32";
    cg_dtype compute;
    if (strcmp(dtype_name, "bf16") == 0)
        compute = CG_BF16;
    else if (strcmp(dtype_name, "f32") == 0)
        compute = CG_F32;
    else {
        ERR("--dtype '%s': expected bf16 or f32", dtype_name);
        return 2;
    }
    if (gpu && cg_cuda_device_count() <= dev.index) {
        if (!cg_cuda_compiled())
            ERR("--device %s: this build has no CUDA backend (nvcc was not found at build time)", a.device);
        else
            ERR("--device %s: no CUDA device %d is visible (%d found)", a.device, dev.index, cg_cuda_device_count());
        return 1;
    }
    a.dist.nccl = gpu; /* under mpirun: gradients over NCCL, one GPU per local rank */
    if (cg_cli_dist_start("train", &a.dist, &a.threads)) return 1;
    dist = &a.dist;
    dev = cg_cli_dist_device(&a.dist, dev);
    int rank = cg_comm_rank(a.dist.comm), world = cg_comm_size(a.dist.comm);
    if (a.threads > 0) cg_set_num_threads((int)a.threads);

    /* the model (and adapters) */
    cg_model_config mcfg;
    bool is_preset = cg_model_config_preset(a.model, &mcfg) == CG_OK;
    if ((is_preset ? cg_model_create(&mcfg, dev, (uint64_t)a.init_seed, &r.m) : cg_model_load(a.model, dev, &r.m)) !=
        CG_OK)
        return fail(&r, "");
    cg_lora_config lcfg = cg_lora_config_default();
    if (a.lora_rank > 0) {
        lcfg.rank = (int)a.lora_rank;
        lcfg.alpha = a.lora_alpha >= 0.0f ? a.lora_alpha : (float)a.lora_rank;
        lcfg.rslora = a.rslora;
        lcfg.dropout = a.lora_dropout;
        lcfg.targets = a.lora_targets;
        lcfg.seed = (uint64_t)a.init_seed;
        if (cg_lora_attach(r.m, &lcfg) != CG_OK) return fail(&r, "");
    }
    if (cg_model_set_compute_dtype(r.m, compute) != CG_OK) return fail(&r, "--dtype: ");
    if (a.seq > r.m->cfg.max_seq_len) {
        ERR("--seq %lld exceeds the model's max_seq_len %lld", (long long)a.seq, (long long)r.m->cfg.max_seq_len);
        cleanup(&r);
        return 1;
    }

    /* data */
    if (pick_tokenizer(&a, is_preset, &r.m->cfg, &r.tok) != CG_OK) return fail(&r, "");
    cg_data_config dc = {
        .path = a.data, .tokenizer = r.tok, .batch = a.batch, .seq_len = a.seq, .rank = rank, .world_size = world};
    if (cg_data_open(&dc, &r.train) != CG_OK) return fail(&r, "");
    if (cg_data_is_text(r.train) && !a.val && a.val_frac > 0.0f) {
        /* reopen with the holdout split off, and the holdout as the validation set */
        cg_data_close(r.train);
        r.train = NULL;
        dc.holdout_frac = a.val_frac;
        if (cg_data_open(&dc, &r.train) != CG_OK) return fail(&r, "training split: ");
        dc.split = CG_DATA_HOLDOUT;
        if (cg_data_open(&dc, &r.val) != CG_OK)
            return fail(&r, "validation split (try --val-frac 0 or a larger file): ");
    } else if (a.val) {
        cg_data_config vc = dc;
        vc.path = a.val;
        if (cg_data_open(&vc, &r.val) != CG_OK) return fail(&r, "validation data: ");
    }

    /* trainer */
    cg_train_config tc = cg_train_config_default();
    tc.batch = a.batch, tc.seq_len = a.seq, tc.total_batch = a.total_batch, tc.world_size = world;
    tc.comm = a.dist.comm;
    tc.zero1 = a.dist.zero == 1;
    cg_optimizer_kind kind;
    cg_lr_schedule_kind skind;
    cg_optimizer_kind_from_name(a.optimizer, &kind); /* both checked by parse_args */
    cg_lr_schedule_kind_from_name(a.schedule, &skind);
    tc.optim = cg_optimizer_config_default(kind);
    if (a.have_wd) tc.optim.weight_decay = a.weight_decay;
    if (a.have_beta1) tc.optim.beta1 = a.beta1;
    if (a.have_beta2) tc.optim.beta2 = a.beta2;
    if (a.have_eps) tc.optim.eps = a.eps;
    tc.optim.lr = a.lr;
    tc.optim.momentum = a.momentum;
    tc.optim.nesterov = a.nesterov;
    tc.optim.decay_embeddings = a.decay_embeddings;
    tc.optim.grad_clip = a.clip;
    tc.optim.grad_noise_eta = a.grad_noise;
    tc.optim.seed = (uint64_t)a.seed;
    tc.schedule = (cg_lr_schedule_config){.kind = skind,
                                          .lr = a.lr,
                                          .warmup_steps = a.warmup,
                                          .total_steps = a.schedule_steps ? a.schedule_steps : a.steps,
                                          .final_frac = a.final_frac,
                                          .decay_frac = a.decay_frac,
                                          .wsd_sqrt = a.wsd_sqrt};
    tc.skip_loss_z = a.skip_loss_z, tc.skip_grad_z = a.skip_grad_z;
    tc.lora = a.lora_rank > 0 ? &lcfg : NULL;
    if (cg_trainer_create(r.m, r.train, &tc, &r.tr) != CG_OK) return fail(&r, "");

    bool resumed = false;
    if (a.resume) {
        char from[4096];
        if (cg_trainer_resume(r.tr, a.out, &resumed, from, sizeof from) != CG_OK) return fail(&r, "--resume: ");
        if (resumed)
            printf("resumed from %s at step %lld\n", from, (long long)cg_trainer_step_count(r.tr));
        else
            printf("no checkpoint in %s: starting from step 0\n", a.out);
    }
    if (a.metrics && rank == 0) {
        r.metrics = fopen(a.metrics, resumed ? "a" : "w");
        if (!r.metrics) {
            ERR("cannot open --metrics '%s': %s", a.metrics, strerror(errno));
            cg_cli_dist_abort_on_error(1);
            cleanup(&r);
            return 1;
        }
    }

    int64_t tokens_per_step = a.total_batch ? a.total_batch : a.batch * a.seq * world;
    double fpt = cg_train_flops_per_token(r.m, a.seq);
    printf("model %s: %lld parameters (%d trainable tensors%s), %s, %s\n", r.m->cfg.name,
           (long long)cg_model_num_elements(r.m), cg_optimizer_num_params(cg_trainer_optimizer(r.tr)),
           a.lora_rank > 0 ? ", LoRA" : "", a.device,
           compute == CG_BF16 ? "bf16 compute (fp32 masters and optimizer state)" : "f32");
    printf("data: %s (%lld tokens%s), %lld tokens/step = %d micro-batches x %lld x %lld", a.data,
           (long long)cg_data_num_tokens(r.train), cg_data_is_text(r.train) ? ", text" : "", (long long)tokens_per_step,
           cg_trainer_grad_accum(r.tr), (long long)a.batch, (long long)a.seq);
    if (world > 1) printf(" x %d ranks%s", world, a.dist.zero ? " (ZeRO-1)" : "");
    printf("\n");
    printf("optimizer %s, lr %g %s (warmup %lld), clip %g; FLOPs/token %.4g (llm.c 6N + 6LCT); ", a.optimizer, a.lr,
           a.schedule, (long long)a.warmup, a.clip, fpt);
    if (gpu)
        printf("MFU against %s %.1f TFLOP/s\n", compute == CG_BF16 ? "H100/H200 bf16 dense" : "H100/H200 TF32 dense",
               1e-12 * (compute == CG_BF16 ? CG_TRAIN_PEAK_FLOPS_H100_BF16 : CG_TRAIN_PEAK_FLOPS_H100_TF32));
    else
        printf("MFU n/a on the CPU\n");
    fflush(stdout);

    double elapsed = 0.0;
    int64_t timed = 0;
    cg_train_step_info last_info = {0};
    while (cg_trainer_step_count(r.tr) < a.steps) {
        cg_train_step_info info;
        if (cg_trainer_step(r.tr, &info) != CG_OK) return fail(&r, "");
        int64_t done = info.step + 1;
        if (info.step > 0 || a.steps == 1) { /* the first step pays one-time costs: left out of the ETA */
            elapsed += info.seconds;
            timed++;
        }
        char eta[32];
        format_eta(timed ? elapsed / (double)timed * (double)(a.steps - done) : -1.0, eta, sizeof eta);
        last_info = info;
        char mfu[64];
        if (info.mfu >= 0.0) /* a GPU: MFU and the device memory in use */
            snprintf(mfu, sizeof mfu, "MFU %.1f%% | peak mem %.2f GiB", 100.0 * info.mfu,
                     (double)(info.mem_device_peak ? info.mem_device_peak : info.mem_arena_peak) / 1073741824.0);
        else
            snprintf(mfu, sizeof mfu, "MFU n/a");
        printf("step %5lld/%lld | loss %.6f | lr %.3e | norm %.4f | %8.0f tok/s | %7.1f ms | ETA %s | %s%s%s\n",
               (long long)done, (long long)a.steps, info.loss, info.lr, info.grad_norm, info.tokens_per_s,
               1e3 * info.seconds, eta, mfu, info.skipped ? " | SKIPPED: " : "", info.skipped ? info.skip_reason : "");
        double val_loss = NAN;
        bool last = done == a.steps;
        if (r.val && ((a.val_every > 0 && done % a.val_every == 0) || last)) {
            if (cg_trainer_evaluate(r.tr, r.val, a.val_steps, &val_loss) != CG_OK) return fail(&r, "validation: ");
            printf("step %5lld/%lld | val loss %.6f\n", (long long)done, (long long)a.steps, val_loss);
        }
        if (rank == 0 && a.sample_every > 0 && (done % a.sample_every == 0 || last))
            print_sample(r.m, r.tok, a.sample_tokens, (uint64_t)a.seed, done);
        if (r.metrics) {
            fprintf(r.metrics, "{\"step\":%lld", (long long)done);
            json_num(r.metrics, "loss", info.loss);
            json_num(r.metrics, "lr", info.lr);
            json_num(r.metrics, "grad_norm", info.grad_norm);
            json_num(r.metrics, "tokens_per_s", info.tokens_per_s);
            json_num(r.metrics, "step_ms", 1e3 * info.seconds);
            fprintf(r.metrics, ",\"tokens\":%lld,\"skipped\":%s", (long long)cg_trainer_tokens_seen(r.tr),
                    info.skipped ? "true" : "false");
            if (info.skipped) fprintf(r.metrics, ",\"skip_reason\":\"%s\"", info.skip_reason);
            if (!isnan(val_loss)) json_num(r.metrics, "val_loss", val_loss);
            if (info.mfu >= 0.0) {
                json_num(r.metrics, "mfu", info.mfu);
                json_num(r.metrics, "mem_device_used", (double)info.mem_device_used);
                fprintf(r.metrics, "}\n");
            } else {
                fprintf(r.metrics, ",\"mfu\":null}\n");
            }
            fflush(r.metrics);
        }
        if (a.out && ((a.save_every > 0 && done % a.save_every == 0) || last)) {
            char path[4096];
            if (cg_trainer_save(r.tr, a.out, (int)a.keep_last, path, sizeof path) != CG_OK)
                return fail(&r, "checkpoint: ");
            printf("saved %s\n", path);
        }
        fflush(stdout);
    }
    if (timed) {
        double tps = (double)tokens_per_step * timed / elapsed;
        printf("done: %lld steps, %.0f tokens/s on average", (long long)a.steps, tps);
        if (gpu)
            printf(", MFU %.1f%% of %s; peak memory %.2f GiB in arenas, %.2f GiB device used (cudaMemGetInfo)",
                   100.0 * fpt * tps / last_info.peak_flops, last_info.peak_name,
                   (double)last_info.mem_arena_peak / 1073741824.0, (double)last_info.mem_device_peak / 1073741824.0);
        printf("\n");
    }
    cleanup(&r);
    return 0;
}
