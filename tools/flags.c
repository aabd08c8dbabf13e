#include "tools/flags.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

int cg_flag_i64(const char *cmd, const char *flag, const char *value, int64_t *out) {
    char *end;
    errno = 0;
    long long x = strtoll(value, &end, 10);
    if (errno || end == value || *end) {
        fprintf(stderr, "cgrad %s: %s takes an integer, not '%s'\n", cmd, flag, value);
        return 2;
    }
    *out = x;
    return 0;
}

int cg_flag_f32(const char *cmd, const char *flag, const char *value, float *out) {
    char *end;
    errno = 0;
    float x = strtof(value, &end);
    if (errno || end == value || *end || !isfinite(x)) {
        fprintf(stderr, "cgrad %s: %s takes a finite number, not '%s'\n", cmd, flag, value);
        return 2;
    }
    *out = x;
    return 0;
}
