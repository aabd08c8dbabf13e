#include "tools/svg_plot.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <stdbool.h>
#include <unistd.h>

#define W 760
#define H 420
#define LEFT 64
#define RIGHT 24
#define TOP 48
#define BOTTOM 56

static const char *const colors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"};

/* A "nice" tick step (1, 2 or 5 times a power of ten) giving about `want` ticks over span. */
static double nice_step(double span, int want) {
    double raw = span / want, p = pow(10.0, floor(log10(raw))), f = raw / p;
    return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * p;
}

static void escape(FILE *f, const char *s) {
    for (; s && *s; s++) {
        if (*s == '<') fputs("&lt;", f);
        else if (*s == '>') fputs("&gt;", f);
        else if (*s == '&') fputs("&amp;", f);
        else fputc(*s, f);
    }
}

cg_status cg_svg_plot_write(const char *path, const char *title, const char *x_label, int n_series,
                            const cg_plot_series *series) {
    if (!path || n_series <= 0 || !series) return cg_set_error(CG_ERR_INVALID_ARG, "svg_plot: nothing to plot");
    double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
    for (int s = 0; s < n_series; s++)
        for (int64_t i = 0; i < series[s].n; i++) {
            double x = series[s].x[i], y = series[s].y[i];
            if (isnan(y) || isnan(x)) continue;
            x0 = fmin(x0, x), x1 = fmax(x1, x), y0 = fmin(y0, y), y1 = fmax(y1, y);
        }
    if (!isfinite(x0)) x0 = 0, x1 = 1, y0 = 0, y1 = 1;
    if (x1 <= x0) x1 = x0 + 1;
    if (y0 > 0 && y0 < 0.5 * y1) y0 = 0; /* start at zero when it does not squash the data */
    if (y1 <= y0) y1 = y0 + 1;
    double ystep = nice_step(y1 - y0, 5), xstep = nice_step(x1 - x0, 8);
    y0 = floor(y0 / ystep) * ystep, y1 = ceil(y1 / ystep) * ystep;
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f) return cg_set_error(CG_ERR_IO, "svg_plot: cannot write %s", tmp);
    double pw = W - LEFT - RIGHT, ph = H - TOP - BOTTOM;
#define PX(x) (LEFT + ((x) - x0) / (x1 - x0) * pw)
#define PY(y) (TOP + ph - ((y) - y0) / (y1 - y0) * ph)
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" font-family=\"sans-serif\" "
               "font-size=\"12\">\n<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n", W, H);
    fprintf(f, "<text x=\"%d\" y=\"24\" font-size=\"15\" font-weight=\"bold\">", LEFT);
    escape(f, title);
    fprintf(f, "</text>\n");
    for (double y = y0; y <= y1 + 1e-9 * ystep; y += ystep) {
        fprintf(f, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#ddd\"/>\n", LEFT, PY(y), W - RIGHT, PY(y));
        fprintf(f, "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%g</text>\n", LEFT - 6, PY(y) + 4, y);
    }
    for (double x = ceil(x0 / xstep) * xstep; x <= x1 + 1e-9; x += xstep)
        fprintf(f, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%g</text>\n", PX(x), H - BOTTOM + 18, x);
    fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%.0f\" height=\"%.0f\" fill=\"none\" stroke=\"#333\"/>\n", LEFT, TOP, pw, ph);
    fprintf(f, "<text x=\"%.0f\" y=\"%d\" text-anchor=\"middle\">", LEFT + pw / 2, H - 14);
    escape(f, x_label);
    fprintf(f, "</text>\n");
    for (int s = 0; s < n_series; s++) {
        const char *c = colors[s % 6];
        fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"", c);
        for (int64_t i = 0; i < series[s].n; i++) {
            if (isnan(series[s].y[i])) {
                fprintf(f, "\"/>\n<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"", c);
                continue;
            }
            fprintf(f, "%.1f,%.1f ", PX(series[s].x[i]), PY(series[s].y[i]));
        }
        fprintf(f, "\"/>\n");
        for (int64_t i = 0; i < series[s].n; i++) /* markers: a point between two gaps still shows */
            if (!isnan(series[s].y[i]))
                fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"2.5\" fill=\"%s\"/>\n", PX(series[s].x[i]),
                        PY(series[s].y[i]), c);
        int ly = TOP + 14 + 16 * s;
        fprintf(f, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"%s\" stroke-width=\"3\"/>\n", LEFT + 10, ly - 4,
                LEFT + 30, ly - 4, c);
        fprintf(f, "<text x=\"%d\" y=\"%d\">", LEFT + 36, ly);
        escape(f, series[s].name);
        fprintf(f, "</text>\n");
    }
    fprintf(f, "</svg>\n");
#undef PX
#undef PY
    bool ok = fflush(f) == 0 && fsync(fileno(f)) == 0;
    ok = (fclose(f) == 0) && ok;
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        return cg_set_error(CG_ERR_IO, "svg_plot: cannot write %s", path);
    }
    return CG_OK;
}
