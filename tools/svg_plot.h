/* A small SVG line chart: one or more series over a shared x axis, axes with ticks, a legend. Used by
 * `cgrad plot` and the RL demo to draw reward and accuracy per step. */
#ifndef CG_TOOLS_SVG_PLOT_H
#define CG_TOOLS_SVG_PLOT_H

#include <stdint.h>

#include "core/error.h"

typedef struct cg_plot_series {
    const char *name;
    const double *x, *y; /* n points; NaN y values are gaps */
    int64_t n;
} cg_plot_series;

/* Writes an SVG file (atomically: temporary file, then rename). */
cg_status cg_svg_plot_write(const char *path, const char *title, const char *x_label, int n_series,
                            const cg_plot_series *series);

#endif
