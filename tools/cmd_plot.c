/* cgrad plot METRICS.jsonl --out PLOT.svg [--keys reward,accuracy] [--x step]: draws chosen numeric keys of a
 * metrics file (one JSON object per line, as `cgrad train` and `cgrad rl` write) against the x key. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "tools/commands.h"
#include "tools/svg_plot.h"

#define MAX_KEYS 6

static void usage(FILE *f) {
    fprintf(f, "usage: cgrad plot METRICS.jsonl --out PLOT.svg [--keys k1,k2,...] [--x KEY] [--title TEXT]\n"
               "  draws the numeric keys (default reward,accuracy) of each line against --x (default step);\n"
               "  a line without a key leaves a gap\n");
}

int cg_cmd_plot(int argc, char **argv) {
    const char *in = NULL, *out = NULL, *keys_arg = "reward,accuracy", *xkey = "step", *title = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        }
        if (a[0] == '-' && i + 1 >= argc) {
            fprintf(stderr, "cgrad plot: %s needs a value\n", a);
            return 2;
        }
        if (strcmp(a, "--out") == 0) out = argv[++i];
        else if (strcmp(a, "--keys") == 0) keys_arg = argv[++i];
        else if (strcmp(a, "--x") == 0) xkey = argv[++i];
        else if (strcmp(a, "--title") == 0) title = argv[++i];
        else if (a[0] == '-') {
            fprintf(stderr, "cgrad plot: unknown flag '%s' (cgrad plot --help)\n", a);
            return 2;
        } else in = a;
    }
    if (!in || !out) {
        usage(stderr);
        return 2;
    }
    char keys_buf[512];
    snprintf(keys_buf, sizeof keys_buf, "%s", keys_arg);
    const char *keys[MAX_KEYS];
    int nk = 0;
    for (char *k = strtok(keys_buf, ","); k && nk < MAX_KEYS; k = strtok(NULL, ",")) keys[nk++] = k;
    FILE *f = fopen(in, "r");
    if (!f) {
        fprintf(stderr, "cgrad plot: cannot open %s\n", in);
        return 1;
    }
    int64_t cap = 256, n = 0;
    double *xs = malloc(sizeof(double) * (size_t)cap), *ys = malloc(sizeof(double) * (size_t)(cap * MAX_KEYS));
    char *line = NULL;
    size_t line_cap = 0;
    int rc = 0;
    long lineno = 0;
    while (xs && ys && getline(&line, &line_cap, f) > 0) {
        lineno++;
        if (line[strspn(line, " \t\r\n")] == '\0') continue;
        cJSON *obj = NULL;
        char what[600];
        snprintf(what, sizeof what, "%s:%ld", in, lineno);
        if (cg_json_parse(line, strlen(line), what, &obj) != CG_OK) {
            fprintf(stderr, "cgrad plot: %s\n", cg_last_error());
            rc = 1;
            break;
        }
        if (n == cap) {
            cap *= 2;
            double *nx = realloc(xs, sizeof(double) * (size_t)cap), *ny = realloc(ys, sizeof(double) * (size_t)(cap * MAX_KEYS));
            if (nx) xs = nx;
            if (ny) ys = ny;
            if (!nx || !ny) {
                cg_json_free(obj);
                break;
            }
        }
        double v;
        xs[n] = cg_json_opt_double(obj, xkey, what, (double)n, &v) == CG_OK ? v : (double)n;
        for (int k = 0; k < nk; k++)
            ys[k * cap + n] = cg_json_opt_double(obj, keys[k], what, NAN, &v) == CG_OK ? v : NAN;
        cg_json_free(obj);
        n++;
    }
    free(line);
    fclose(f);
    if (rc == 0) {
        /* ys was laid out with stride cap: copy each series out to its own array */
        cg_plot_series series[MAX_KEYS];
        double *packed = malloc(sizeof(double) * (size_t)((n ? n : 1) * nk));
        for (int k = 0; packed && k < nk; k++) {
            memcpy(packed + k * n, ys + k * cap, sizeof(double) * (size_t)n);
            series[k] = (cg_plot_series){keys[k], xs, packed + k * n, n};
        }
        char default_title[600];
        snprintf(default_title, sizeof default_title, "%s", in);
        if (!packed || cg_svg_plot_write(out, title ? title : default_title, xkey, nk, series) != CG_OK) {
            fprintf(stderr, "cgrad plot: %s\n", packed ? cg_last_error() : "out of memory");
            rc = 1;
        } else {
            printf("wrote %s (%lld points, %d series)\n", out, (long long)n, nk);
        }
        free(packed);
    }
    free(xs);
    free(ys);
    return rc;
}
