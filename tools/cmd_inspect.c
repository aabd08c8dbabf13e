/* cgrad inspect FILE...: what a file holds. For now .safetensors files (one line per tensor, totals,
 * metadata); further formats are one more row in `formats` below with a detector and a printer. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/safetensors.h"
#include "core/tokens.h"
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

static cg_status print_safetensors(const char *path) {
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
    {"safetensors", is_safetensors, print_safetensors},
    {"token shard", is_token_shard, print_token_shard},
};
static const int n_formats = (int)(sizeof formats / sizeof formats[0]);

static void usage(FILE *f) {
    fprintf(f, "usage: cgrad inspect FILE...\n"
               "  shows what a file holds:\n"
               "    .safetensors   one line per tensor (name, dtype, shape, bytes), the tensor count, total\n"
               "                   parameters and bytes, and the __metadata__ entries\n"
               "    .bin           an llm.c token shard: token count, width and the first tokens\n"
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
            fprintf(stderr, "cgrad inspect: %s: unrecognised file (expected a .safetensors file or an llm.c .bin token shard)\n", path);
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
