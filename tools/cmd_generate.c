/* cgrad generate: text from a model preset with random weights or a checkpoint (a Hugging Face directory
 * or an llm.c .bin), optionally with a PEFT LoRA adapter, through cg_generate.
 *
 * The text goes through the model directory's tokenizer.json, or for the tiny presets the default character
 * tokenizer; a large random-weight preset has no tokenizer, and then a byte is its own id. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "models/checkpoint.h"
#include "models/generate.h"
#include "models/lora.h"
#include "models/tokenizer.h"
#include "tools/commands.h"
#include "tools/flags.h"

/* The tokenizer for a model: a checkpoint directory's tokenizer.json if it has one; else the default
 * character tokenizer when the vocabulary is its 64 entries (the tiny presets and models trained from them).
 * NULL (without an error) means none is known: then the prompt's bytes are its ids, which only makes sense
 * for random-weight smoke tests of large presets. */
static cg_status model_tokenizer(const char *model, bool is_preset, const cg_model_config *cfg, cg_tokenizer **out) {
    *out = NULL;
    if (!is_preset) {
        char path[4096];
        snprintf(path, sizeof path, "%s/tokenizer.json", model);
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

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void usage(FILE *f) {
    fprintf(f, "usage: cgrad generate --model PRESET_OR_DIR --prompt TEXT [--max-new N] [--temperature T]\n"
               "                      [--top-k K] [--top-p P] [--seed S] [--init-seed S] [--ids] [--lora DIR]\n"
               "                      [--device cpu|cuda]\n"
               "  --model PRESET    a preset with random weights (listed below), or a Hugging Face model\n"
               "                    directory, or an llm.c model_*.bin checkpoint\n"
               "  --lora DIR        a PEFT adapter (adapter_config.json + adapter_model.safetensors)\n"
               "  --max-new N       new tokens at most (default 32)\n"
               "  --temperature T   0 = greedy (default 1)\n"
               "  --top-k K         keep the K most likely tokens (default 0 = off)\n"
               "  --top-p P         nucleus sampling, P in (0, 1] (default 1 = off)\n"
               "  --seed S          the sampling seed (default 0)\n"
               "  --init-seed S     the random weights' seed (default 1)\n"
               "  --device D        cpu (default) or cuda / cuda:N: on CUDA the sampler runs on the GPU too\n"
               "  --ids             also print the prompt's and the new tokens' ids\n"
               "presets:");
    for (int i = 0; i < cg_model_preset_count(); i++) fprintf(f, " %s", cg_model_preset_name(i));
    fprintf(f, "\n");
}

int cg_cmd_generate(int argc, char **argv) {
    const char *model = NULL, *prompt = NULL, *lora = NULL, *device_name = "cpu";
    int64_t max_new = 32, top_k = 0, seed = 0, init_seed = 1;
    float temperature = 1.0f, top_p = 1.0f;
    bool print_ids = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        }
        if (strcmp(a, "--ids") == 0) {
            print_ids = true;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "cgrad generate: %s %s\n", a, strncmp(a, "--", 2) == 0 ? "needs a value" : "is not a flag");
            return 2;
        }
        const char *v = argv[++i];
        int rc = 0;
        if (strcmp(a, "--model") == 0) model = v;
        else if (strcmp(a, "--prompt") == 0) prompt = v;
        else if (strcmp(a, "--lora") == 0) lora = v;
        else if (strcmp(a, "--device") == 0) device_name = v;
        else if (strcmp(a, "--max-new") == 0) rc = cg_flag_i64("generate", a, v, &max_new);
        else if (strcmp(a, "--top-k") == 0) rc = cg_flag_i64("generate", a, v, &top_k);
        else if (strcmp(a, "--seed") == 0) rc = cg_flag_i64("generate", a, v, &seed);
        else if (strcmp(a, "--init-seed") == 0) rc = cg_flag_i64("generate", a, v, &init_seed);
        else if (strcmp(a, "--temperature") == 0) rc = cg_flag_f32("generate", a, v, &temperature);
        else if (strcmp(a, "--top-p") == 0) rc = cg_flag_f32("generate", a, v, &top_p);
        else {
            fprintf(stderr, "cgrad generate: unknown flag '%s' (cgrad generate --help)\n", a);
            return 2;
        }
        if (rc) return rc;
    }
    if (!model || !prompt) {
        fprintf(stderr, "cgrad generate: needs --model PRESET_OR_DIR and --prompt TEXT (cgrad generate --help)\n");
        return 2;
    }
    if (top_k < 0 || top_k > 1 << 30) {
        fprintf(stderr, "cgrad generate: --top-k %lld must be in [0, 2^30]\n", (long long)top_k);
        return 1;
    }
    cg_sampling s = {.temperature = temperature, .top_k = (int)top_k, .top_p = top_p, .max_new_tokens = max_new,
                     .seed = (uint64_t)seed};
    if (cg_sampling_validate(&s) != CG_OK) {
        fprintf(stderr, "cgrad generate: %s\n", cg_last_error());
        return 1;
    }
    cg_device dev;
    if (cg_device_parse(device_name, &dev) != CG_OK) {
        fprintf(stderr, "cgrad generate: --device %s: %s\n", device_name, cg_last_error());
        return 1;
    }
    if (dev.type == CG_DEVICE_CUDA && dev.index >= cg_cuda_device_count()) {
        fprintf(stderr, "cgrad generate: --device %s: %d CUDA device(s) on this machine (%s)\n", device_name,
                cg_cuda_device_count(), cg_cuda_compiled() ? "built with CUDA" : "built without CUDA");
        return 1;
    }
    /* a preset name gives random weights (seeded by --init-seed); anything else is a checkpoint path */
    cg_model_config cfg;
    cg_model *m = NULL;
    bool is_preset = cg_model_config_preset(model, &cfg) == CG_OK;
    cg_status ms = is_preset ? cg_model_create(&cfg, dev, (uint64_t)init_seed, &m) : cg_model_load(model, dev, &m);
    if (ms == CG_OK && lora) ms = cg_lora_load(m, lora);
    if (ms != CG_OK) {
        fprintf(stderr, "cgrad generate: %s\n", cg_last_error());
        cg_model_free(m);
        return 1;
    }
    cfg = m->cfg;
    cg_tokenizer *tok = NULL;
    int64_t n = (int64_t)strlen(prompt);
    int32_t *ids = NULL;
    ms = model_tokenizer(model, is_preset, &cfg, &tok);
    if (ms == CG_OK && tok) {
        ms = cg_tokenizer_encode(tok, prompt, (size_t)n, &ids, &n);
    } else if (ms == CG_OK) {
        ids = malloc(sizeof(int32_t) * (size_t)(n ? n : 1));
        if (!ids) ms = cg_set_error(CG_ERR_OOM, "out of memory");
        for (int64_t i = 0; ids && i < n; i++) ids[i] = (unsigned char)prompt[i];
    }
    if (ms != CG_OK) {
        fprintf(stderr, "cgrad generate: %s\n", cg_last_error());
        cg_tokenizer_free(tok);
        cg_model_free(m);
        return 1;
    }
    const int32_t *rows[1] = {ids};
    /* the tokenizer's end token stops generation */
    int32_t eos = tok ? cg_tokenizer_eos_id(tok) : -1;
    if (eos >= 0) s.stop_tokens = &eos, s.n_stop = 1;
    cg_generation *g = NULL;
    double t0 = now_s();
    cg_status st = cg_generate(m, rows, &n, 1, &s, &g);
    double dt = now_s() - t0;
    if (st != CG_OK) {
        fprintf(stderr, "cgrad generate: %s\n", cg_last_error());
        free(ids);
        cg_tokenizer_free(tok);
        cg_model_free(m);
        return 1;
    }
    int64_t total = g->prompt_len[0] + g->gen_len[0];
    char *text = NULL;
    size_t text_len = 0;
    if (tok && cg_tokenizer_decode(tok, g->tokens, total, &text, &text_len) == CG_OK) {
        fwrite(text, 1, text_len, stdout);
        free(text);
    } else { /* no tokenizer: printable bytes as themselves, anything else as <id> */
        for (int64_t t = 0; t < total; t++) {
            int32_t id = g->tokens[t];
            if (id >= 32 && id < 127) putchar(id);
            else printf("<%d>", (int)id);
        }
    }
    printf("\n");
    if (print_ids) {
        printf("prompt ids:");
        for (int64_t t = 0; t < g->prompt_len[0]; t++) printf(" %d", (int)g->tokens[t]);
        printf("\nnew ids:");
        for (int64_t t = 0; t < g->gen_len[0]; t++) printf(" %d", (int)g->tokens[g->prompt_len[0] + t]);
        printf("\n");
    }
    char dev_str[32];
    cg_device_str(dev, dev_str, sizeof dev_str);
    printf("tokens/s: %.1f (%lld new tokens in %.3f s, %s, %s, %d CPU threads)\n",
           dt > 0 ? (double)g->gen_len[0] / dt : 0.0, (long long)g->gen_len[0], dt, cfg.name, dev_str,
           cg_get_num_threads());
    cg_generation_free(g);
    free(ids);
    cg_tokenizer_free(tok);
    cg_model_free(m);
    return 0;
}
