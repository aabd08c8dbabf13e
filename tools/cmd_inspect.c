/* cgrad inspect FILE...: what a file holds: .safetensors files (one line per tensor, totals, metadata),
 * Hugging Face model directories (the config and every weight file), llm.c model checkpoints and token
 * shards. Each format is one row in `formats` below with a detector and a printer. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/json.h"
#include "core/safetensors.h"
#include "core/tokens.h"
#include "models/checkpoint.h"
#include "tools/commands.h"

typedef struct inspect_format {
    const char *name;
    bool (*matches)(const char *path); /* cheap: the name, or a peek at the first bytes */
    cg_status (*print)(const char *path); /* prints to stdout; returns a status with cg_last_error() set */
} inspect_format;

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* "1,234,567" */
static const char *with_commas(unsigned long long v, char *buf, size_t n) {
    char digits[32];
    int len = snprintf(digits, sizeof digits, "%llu", v);
    size_t k = 0;
    for (int i = 0; i < len && k + 2 < n; i++) {
        if (i > 0 && (len - i) % 3 == 0) buf[k++] = ',';
        buf[k++] = digits[i];
    }
    buf[k] = '\0';
    return buf;
}

/* "942.3 MiB" */
static const char *human_bytes(unsigned long long v, char *buf, size_t n) {
    static const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double x = (double)v;
    int u = 0;
    while (x >= 1024.0 && u < 4) x /= 1024.0, u++;
    if (u == 0) snprintf(buf, n, "%llu B", v);
    else snprintf(buf, n, "%.1f %s", x, units[u]);
    return buf;
}

/* ------------------------------------------------------------------ safetensors */

static bool is_safetensors(const char *path) {
    if (ends_with(path, ".safetensors")) return true;
    /* Otherwise sniff: a plausible little-endian header length followed by '{'. */
    FILE *f = fopen(path, "rb");
    if (!f) return false;
    unsigned char b[9];
    bool ok = fread(b, 1, 9, f) == 9;
    fclose(f);
    if (!ok) return false;
    unsigned long long n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | b[i];
    return n >= 2 && n <= CG_SAFETENSORS_MAX_HEADER && b[8] == '{';
}

/* Prints the file's tensors and adds its parameter and byte counts to *total_params, *total_bytes. */
static cg_status print_safetensors_counted(const char *path, unsigned long long *total_params,
                                          unsigned long long *total_bytes) {
    cg_safetensors *st = NULL;
    cg_status s = cg_safetensors_open(path, &st);
    if (s != CG_OK) return s;
    int n = cg_safetensors_count(st);
    int name_w = 4;
    for (int i = 0; i < n; i++) {
        int l = (int)strlen(cg_safetensors_entry_at(st, i)->name);
        if (l > name_w) name_w = l;
    }
    if (name_w > 64) name_w = 64;
    printf("%s: safetensors\n", path);
    if (n > 0) printf("  %-*s  %-7s  %-22s  %s\n", name_w, "name", "dtype", "shape", "bytes");
    unsigned long long params = 0, bytes = 0;
    char shape[160], num[40];
    for (int i = 0; i < n; i++) {
        const cg_safetensors_entry *e = cg_safetensors_entry_at(st, i);
        size_t pos = (size_t)snprintf(shape, sizeof shape, "[");
        unsigned long long numel = 1;
        for (int d = 0; d < e->ndim && pos < sizeof shape; d++) {
            pos += (size_t)snprintf(shape + pos, sizeof shape - pos, d ? ", %lld" : "%lld", (long long)e->shape[d]);
            numel *= (unsigned long long)e->shape[d];
        }
        if (pos < sizeof shape) snprintf(shape + pos, sizeof shape - pos, "]");
        printf("  %-*s  %-7s  %-22s  %s\n", name_w, e->name, e->dtype_name, shape,
               with_commas((unsigned long long)e->nbytes, num, sizeof num));
        params += numel;
        bytes += e->nbytes;
    }
    char p[40], b[40], h[40];
    printf("%d tensor%s, %s parameters, %s bytes (%s)\n", n, n == 1 ? "" : "s", with_commas(params, p, sizeof p),
           with_commas(bytes, b, sizeof b), human_bytes(bytes, h, sizeof h));
    int nm = cg_safetensors_metadata_count(st);
    if (nm > 0) {
        printf("metadata:\n");
        for (int i = 0; i < nm; i++) {
            const char *k, *v;
            cg_safetensors_metadata_at(st, i, &k, &v);
            printf("  %s = %s\n", k, v);
        }
    }
    cg_safetensors_close(st);
    *total_params += params;
    *total_bytes += bytes;
    return CG_OK;
}

static cg_status print_safetensors(const char *path) {
    unsigned long long params = 0, bytes = 0;
    return print_safetensors_counted(path, &params, &bytes);
}

/* ------------------------------------------------------------------ model configs */

static void print_config(const cg_model_config *c) {
    char n1[40], n2[40];
    if (c->arch == CG_ARCH_GPT2)
        printf("  config: GPT-2, %lld layers, d_model %lld, %lld heads, d_ff %lld, %lld positions, LayerNorm eps %g\n",
               (long long)c->n_layer, (long long)c->d_model, (long long)c->n_head, (long long)c->d_ff,
               (long long)c->max_seq_len, (double)c->norm_eps);
    else
        printf("  config: Llama/Qwen2, %lld layers, d_model %lld, %lld heads (%lld key/value), d_ff %lld, "
               "%lld positions, RMSNorm eps %g, rope_theta %g%s\n",
               (long long)c->n_layer, (long long)c->d_model, (long long)c->n_head, (long long)c->n_kv_head,
               (long long)c->d_ff, (long long)c->max_seq_len, (double)c->norm_eps, (double)c->rope_theta,
               c->rope_scaling_factor > 0 ? ", Llama 3 rope scaling" : "");
    printf("  vocabulary %s", with_commas((unsigned long long)c->vocab_size, n1, sizeof n1));
    if (c->padded_vocab_size != c->vocab_size)
        printf(" (padded to %s)", with_commas((unsigned long long)c->padded_vocab_size, n2, sizeof n2));
    printf(", %s head%s\n", c->tie_embeddings ? "tied" : "untied",
           c->arch == CG_ARCH_LLAMA && c->qkv_bias ? ", q/k/v bias" : "");
    printf("  model parameters: %s\n",
           with_commas((unsigned long long)cg_model_config_num_elements(c), n1, sizeof n1));
}

/* ------------------------------------------------------------------ Hugging Face model directories */

static bool is_model_dir(const char *path) {
    struct stat sb;
    if (stat(path, &sb) != 0 || !S_ISDIR(sb.st_mode)) return false;
    char p[4096];
    snprintf(p, sizeof p, "%s/config.json", path);
    return access(p, F_OK) == 0;
}

#ifdef CG_HAVE_CJSON
static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }
#endif

/* The weight files of a model directory: the shards the index names (sorted), or model.safetensors. */
static cg_status weight_files(const char *dir, char ***files, int *n) {
    *files = NULL;
    *n = 0;
    char p[4096];
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
    if (access(p, F_OK) != 0) {
        snprintf(p, sizeof p, "%s/model.safetensors", dir);
        if (access(p, F_OK) != 0)
            return cg_set_error(CG_ERR_IO, "%s: no model.safetensors or model.safetensors.index.json", dir);
        *files = malloc(sizeof **files);
        if (!*files || !((*files)[0] = strdup(p))) return cg_set_error(CG_ERR_OOM, "out of memory");
        *n = 1;
        return CG_OK;
    }
#ifdef CG_HAVE_CJSON
    cJSON *root = NULL;
    cg_status s = cg_json_read_file(p, &root);
    if (s != CG_OK) return s;
    const cJSON *wm = cJSON_IsObject(root) ? cJSON_GetObjectItemCaseSensitive(root, "weight_map") : NULL;
    if (!cJSON_IsObject(wm)) {
        cJSON_Delete(root);
        return cg_set_error(CG_ERR_FORMAT, "%s: no \"weight_map\" object", p);
    }
    char **list = calloc((size_t)cJSON_GetArraySize(wm) + 1, sizeof *list);
    int count = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, wm) {
        if (!list || !cJSON_IsString(it) || strchr(it->valuestring, '/')) continue;
        int k = 0;
        while (k < count && strcmp(strrchr(list[k], '/') + 1, it->valuestring) != 0) k++;
        if (k < count) continue;
        char f[4096];
        snprintf(f, sizeof f, "%s/%s", dir, it->valuestring);
        if ((list[count] = strdup(f))) count++;
    }
    cJSON_Delete(root);
    if (!list) return cg_set_error(CG_ERR_OOM, "out of memory");
    qsort(list, (size_t)count, sizeof *list, cmp_str);
    *files = list;
    *n = count;
    return CG_OK;
#else
    return cg_set_error(CG_ERR_UNSUPPORTED, "%s: reading the index needs cJSON, which this build left out", p);
#endif
}

static cg_status print_model_dir(const char *path) {
    cg_model_config cfg;
    cg_status s = cg_model_config_from_hf(path, &cfg);
    if (s != CG_OK) return s;
    printf("%s: Hugging Face model directory\n", path);
    print_config(&cfg);
    char **files = NULL;
    int n = 0;
    s = weight_files(path, &files, &n);
    unsigned long long params = 0, bytes = 0;
    for (int i = 0; i < n && s == CG_OK; i++) {
        printf("\n");
        s = print_safetensors_counted(files[i], &params, &bytes);
    }
    for (int i = 0; i < n; i++) free(files[i]);
    free(files);
    if (s != CG_OK) return s;
    char p[40], b[40], h[40];
    printf("\nweights: %s parameters in %d file%s, %s bytes (%s)\n", with_commas(params, p, sizeof p), n,
           n == 1 ? "" : "s", with_commas(bytes, b, sizeof b), human_bytes(bytes, h, sizeof h));
    return CG_OK;
}

/* ------------------------------------------------------------------ llm.c model checkpoints */

static bool is_llmc_checkpoint(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return false;
    unsigned char b[4];
    bool ok = fread(b, 1, 4, f) == 4;
    fclose(f);
    return ok && (int32_t)((uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24) ==
                     CG_LLMC_MAGIC;
}

static cg_status print_llmc_checkpoint(const char *path) {
    cg_model_config c;
    int version = 0;
    cg_status s = cg_llmc_checkpoint_info(path, &c, &version);
    if (s != CG_OK) return s;
    printf("%s: llm.c GPT-2 model checkpoint, version %d (%s)\n", path, version, version == 5 ? "bf16" : "fp32");
    print_config(&c);
    long long C = c.d_model, L = c.n_layer;
    struct { const char *name; long long d0, d1, d2; } t[] = {
        {"wte", c.padded_vocab_size, C, 0}, {"wpe", c.max_seq_len, C, 0}, {"ln1w", L, C, 0}, {"ln1b", L, C, 0},
        {"qkvw", L, 3 * C, C}, {"qkvb", L, 3 * C, 0}, {"attprojw", L, C, C}, {"attprojb", L, C, 0},
        {"ln2w", L, C, 0}, {"ln2b", L, C, 0}, {"fcw", L, 4 * C, C}, {"fcb", L, 4 * C, 0},
        {"fcprojw", L, C, 4 * C}, {"fcprojb", L, C, 0}, {"lnfw", C, 0, 0}, {"lnfb", C, 0, 0}};
    printf("  %-9s  %-20s  %s\n", "tensor", "shape", "elements");
    char shape[64], num[40];
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        long long numel = t[i].d0 * (t[i].d1 ? t[i].d1 : 1) * (t[i].d2 ? t[i].d2 : 1);
        if (t[i].d2) snprintf(shape, sizeof shape, "[%lld, %lld, %lld]", t[i].d0, t[i].d1, t[i].d2);
        else if (t[i].d1) snprintf(shape, sizeof shape, "[%lld, %lld]", t[i].d0, t[i].d1);
        else snprintf(shape, sizeof shape, "[%lld]", t[i].d0);
        printf("  %-9s  %-20s  %s\n", t[i].name, shape, with_commas((unsigned long long)numel, num, sizeof num));
    }
    return CG_OK;
}

/* ------------------------------------------------------------------ llm.c token shards */

static bool is_token_shard(const char *path) {
    if (ends_with(path, ".bin")) return true;
    FILE *f = fopen(path, "rb"); /* or sniff the magic: 20240520 (GPT-2) or 20240801 (Llama 3) */
    if (!f) return false;
    int32_t magic = 0;
    bool ok = fread(&magic, 4, 1, f) == 1;
    fclose(f);
    return ok && (magic == 20240520 || magic == 20240801);
}

static cg_status print_token_shard(const char *path) {
    cg_token_file *tf = NULL;
    cg_status s = cg_token_file_open(path, &tf);
    if (s != CG_OK) return s;
    int64_t n = cg_token_file_count(tf);
    int width = cg_token_file_token_bytes(tf);
    char num[40];
    printf("%s: llm.c token shard, %s tokens of %d bits\n", path, with_commas((unsigned long long)n, num, sizeof num),
           8 * width);
    int64_t show = n < 16 ? n : 16;
    if (show > 0) {
        int32_t first[16];
        s = cg_token_file_read(tf, 0, show, first);
        if (s == CG_OK) {
            printf("  first tokens:");
            for (int64_t i = 0; i < show; i++) printf(" %d", first[i]);
            printf("%s\n", show < n ? " ..." : "");
        }
    }
    cg_token_file_close(tf);
    return s;
}

/* ------------------------------------------------------------------ the command */

static const inspect_format formats[] = {
    {"model directory", is_model_dir, print_model_dir},
    {"safetensors", is_safetensors, print_safetensors},
    {"llm.c checkpoint", is_llmc_checkpoint, print_llmc_checkpoint}, /* before token shards: both are .bin */
    {"token shard", is_token_shard, print_token_shard},
};
static const int n_formats = (int)(sizeof formats / sizeof formats[0]);

static void usage(FILE *f) {
    fprintf(f, "usage: cgrad inspect FILE_OR_DIR...\n"
               "  shows what a file holds:\n"
               "    DIR            a Hugging Face model directory (config.json + model.safetensors or shards):\n"
               "                   the config, the model's parameter count and every weight file's tensors\n"
               "    .safetensors   one line per tensor (name, dtype, shape, bytes), the tensor count, total\n"
               "                   parameters and bytes, and the __metadata__ entries\n"
               "    .bin           an llm.c model checkpoint (config, tensors, parameter count), or an llm.c\n"
               "                   token shard: token count, width and the first tokens\n"
               "  the file is validated as it is read; a malformed file is reported with the problem\n");
}

int cg_cmd_inspect(int argc, char **argv) {
    int n_files = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        }
        if (argv[i][0] == '-' && argv[i][1] != '\0' && strcmp(argv[i], "--") != 0) {
            fprintf(stderr, "cgrad inspect: unknown flag '%s' (see cgrad inspect --help)\n", argv[i]);
            return 2;
        }
        if (strcmp(argv[i], "--") != 0) n_files++;
    }
    if (n_files == 0) {
        usage(stderr);
        return 2;
    }
    int rc = 0;
    bool first = true;
    for (int i = 1; i < argc; i++) {
        const char *path = argv[i];
        if (strcmp(path, "--") == 0) continue;
        if (!first) printf("\n");
        first = false;
        const inspect_format *fmt = NULL;
        for (int k = 0; k < n_formats && !fmt; k++)
            if (formats[k].matches(path)) fmt = &formats[k];
        if (!fmt) {
            fprintf(stderr, "cgrad inspect: %s: unrecognised file (expected a model directory, a .safetensors file or an llm.c .bin file)\n", path);
            rc = 1;
            continue;
        }
        fflush(stdout);
        if (fmt->print(path) != CG_OK) {
            fprintf(stderr, "cgrad inspect: %s\n", cg_last_error());
            rc = 1;
        }
    }
    return rc;
}
