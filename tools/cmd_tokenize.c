/* cgrad tokenize: encode text to ids or decode ids to text with a tokenizer.json or a character tokenizer. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "models/tokenizer.h"
#include "tools/commands.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: cgrad tokenize (--tokenizer PATH | --chars ALPHABET) (--text TEXT | --file PATH | --decode IDS)\n"
            "  --tokenizer PATH  a Hugging Face tokenizer.json (byte-level BPE), or a directory holding one\n"
            "  --chars ALPHABET  a character tokenizer over these bytes (ids: 0 <pad>, 1 <bos>, 2 <eos>, then the\n"
            "                    alphabet in order)\n"
            "  --text TEXT       encode TEXT: prints the ids, comma-separated, on one line\n"
            "  --file PATH       encode the contents of a file the same way\n"
            "  --lines           with --file: encode each line (without its newline) on its own, one output line each\n"
            "  --tokens          with --text/--file: print one token per line instead: id, tab, vocabulary spelling\n"
            "  --stats           with --text/--file: print the token count and the encoding speed on stderr\n"
            "  --decode IDS      decode comma-separated ids: prints the bytes of the text, then a newline\n");
}

static int fail(const char *msg) {
    fprintf(stderr, "cgrad tokenize: %s\n", msg);
    return 1;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        cg_set_error(CG_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap) break;
        char *b = realloc(buf, cap * 2);
        if (!b) free(buf);
        buf = b;
        cap *= 2;
    }
    bool err = ferror(f);
    fclose(f);
    if (!buf || err) {
        free(buf);
        cg_set_error(CG_ERR_IO, "%s: %s", path, buf ? "read error" : "out of memory");
        return NULL;
    }
    *len = n;
    return buf;
}

/* Encodes one text and prints it (ids line or token lines). */
static int encode_one(const cg_tokenizer *tok, const char *text, size_t len, bool tokens, int64_t *count) {
    int32_t *ids;
    int64_t n;
    if (cg_tokenizer_encode(tok, text, len, &ids, &n) != CG_OK) return fail(cg_last_error());
    for (int64_t i = 0; i < n; i++) {
        if (tokens)
            printf("%d\t%s\n", ids[i], cg_tokenizer_token(tok, ids[i]));
        else
            printf(i ? ",%d" : "%d", ids[i]);
    }
    if (!tokens) printf("\n");
    *count += n;
    free(ids);
    return 0;
}

static int decode(const cg_tokenizer *tok, const char *list) {
    int64_t n = 0, cap = 64;
    int32_t *ids = malloc((size_t)cap * sizeof *ids);
    const char *p = list;
    while (ids && *p) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < INT32_MIN || v > INT32_MAX || (*end && *end != ',')) {
            free(ids);
            char msg[160];
            snprintf(msg, sizeof msg, "--decode: '%.40s' is not a comma-separated list of ids (at offset %d)", list,
                     (int)(p - list));
            return fail(msg);
        }
        if (n == cap) {
            int32_t *b = realloc(ids, (size_t)(cap *= 2) * sizeof *ids);
            if (!b) free(ids);
            ids = b;
            if (!ids) break;
        }
        ids[n++] = (int32_t)v;
        p = *end ? end + 1 : end;
    }
    if (!ids) return fail("out of memory");
    char *text;
    size_t len;
    cg_status st = cg_tokenizer_decode(tok, ids, n, &text, &len);
    free(ids);
    if (st != CG_OK) return fail(cg_last_error());
    fwrite(text, 1, len, stdout);
    printf("\n");
    free(text);
    return 0;
}

int cg_cmd_tokenize(int argc, char **argv) {
    const char *tok_path = NULL, *chars = NULL, *text = NULL, *file = NULL, *ids = NULL;
    bool lines = false, tokens = false, stats = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char **dst = strcmp(a, "--tokenizer") == 0 ? &tok_path
                           : strcmp(a, "--chars") == 0   ? &chars
                           : strcmp(a, "--text") == 0    ? &text
                           : strcmp(a, "--file") == 0    ? &file
                           : strcmp(a, "--decode") == 0  ? &ids
                                                         : NULL;
        if (dst) {
            if (i + 1 >= argc) {
                fprintf(stderr, "cgrad tokenize: %s needs a value\n", a);
                return 2;
            }
            *dst = argv[++i];
        } else if (strcmp(a, "--lines") == 0) {
            lines = true;
        } else if (strcmp(a, "--tokens") == 0) {
            tokens = true;
        } else if (strcmp(a, "--stats") == 0) {
            stats = true;
        } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "cgrad tokenize: unknown flag '%s'\n", a);
            return 2;
        }
    }
    if (!tok_path == !chars || (!!text + !!file + !!ids) != 1) {
        fprintf(stderr, "cgrad tokenize: give one of --tokenizer/--chars and one of --text/--file/--decode "
                        "(cgrad tokenize --help)\n");
        return 2;
    }
    cg_tokenizer *tok = NULL;
    cg_status st = tok_path ? cg_tokenizer_load(tok_path, &tok) : cg_tokenizer_char_create(chars, &tok);
    if (st != CG_OK) return fail(cg_last_error());
    int rc = 0;
    if (ids) {
        rc = decode(tok, ids);
    } else {
        size_t len = text ? strlen(text) : 0;
        char *buf = file ? read_file(file, &len) : NULL;
        if (file && !buf) {
            cg_tokenizer_free(tok);
            return fail(cg_last_error());
        }
        const char *src = file ? buf : text;
        int64_t count = 0;
        double t0 = now_s();
        if (lines) {
            size_t start = 0;
            while (rc == 0 && start < len) {
                const char *nl = memchr(src + start, '\n', len - start);
                size_t end = nl ? (size_t)(nl - src) : len;
                rc = encode_one(tok, src + start, end - start, tokens, &count);
                start = end + 1;
            }
        } else {
            rc = encode_one(tok, src, len, tokens, &count);
        }
        double dt = now_s() - t0;
        if (rc == 0 && stats)
            fprintf(stderr, "%zu bytes -> %lld tokens in %.3f s (%.2f MB/s)\n", len, (long long)count, dt,
                    dt > 0 ? (double)len / dt * 1e-6 : 0.0);
        free(buf);
    }
    cg_tokenizer_free(tok);
    return rc;
}
