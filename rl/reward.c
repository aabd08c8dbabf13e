/* Built-in verifiable rewards and DAPO's overlong penalty (see reward.h). */
#include "rl/reward.h"

#include "rl/advantage.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static bool is_digit(char c) { return c >= '0' && c <= '9'; }
static bool is_line_space(char c) { return c == ' ' || c == '\t' || c == '\r'; }
static bool is_space(char c) { return is_line_space(c) || c == '\n' || c == '\v' || c == '\f'; }

size_t cg_reward_answer_len(const char *response, size_t response_len) {
    if (!response) return 0;
    size_t n = 0;
    while (n < response_len && response[n] != '\n' && response[n] != '\0') n++;
    return n;
}

/* Bytes before the first NUL (the whole response for last_number). */
static size_t text_len(const char *response, size_t response_len) {
    const char *nul = memchr(response, '\0', response_len);
    return nul ? (size_t)(nul - response) : response_len;
}

bool cg_reward_find_number(const char *text, size_t len, size_t *start, size_t *end) {
    if (!text) return false;
    for (size_t i = 0; i < len; i++) {
        size_t j;
        if ((text[i] == '+' || text[i] == '-') && i + 1 < len && is_digit(text[i + 1])) j = i + 1;
        else if (is_digit(text[i])) j = i;
        else continue;
        while (j < len && is_digit(text[j])) j++;
        if (j + 1 < len && text[j] == '.' && is_digit(text[j + 1])) {
            j++;
            while (j < len && is_digit(text[j])) j++;
        }
        if (start) *start = i;
        if (end) *end = j;
        return true;
    }
    return false;
}

/* A plain decimal reduced to a canonical form: no leading zeros in the integer part, no trailing zeros in
 * the fraction, and zero never negative. */
typedef struct decimal {
    bool negative;
    const char *int_digits, *frac_digits;
    size_t int_len, frac_len;
} decimal;

/* True if s[0, n) is exactly one number of the grammar. */
static bool parse_decimal(const char *s, size_t n, decimal *d) {
    size_t start, end;
    if (!cg_reward_find_number(s, n, &start, &end) || start != 0 || end != n) return false;
    size_t i = 0;
    d->negative = s[0] == '-';
    if (s[0] == '+' || s[0] == '-') i++;
    while (i + 1 < n && s[i] == '0' && is_digit(s[i + 1])) i++; /* keep one digit before '.' or the end */
    size_t int_start = i;
    while (i < n && is_digit(s[i])) i++;
    d->int_digits = s + int_start;
    d->int_len = i - int_start;
    if (d->int_len == 1 && s[int_start] == '0') d->int_len = 0;
    d->frac_digits = s + (i < n ? i + 1 : n);
    d->frac_len = i < n ? n - i - 1 : 0;
    while (d->frac_len > 0 && d->frac_digits[d->frac_len - 1] == '0') d->frac_len--;
    if (d->int_len == 0 && d->frac_len == 0) d->negative = false;
    return true;
}

static bool decimal_equal(const decimal *a, const decimal *b) {
    return a->negative == b->negative && a->int_len == b->int_len && a->frac_len == b->frac_len &&
           memcmp(a->int_digits, b->int_digits, a->int_len) == 0 &&
           memcmp(a->frac_digits, b->frac_digits, a->frac_len) == 0;
}

/* strtod over exactly s[0, n); false unless all of it is one finite number. */
static bool parse_double(const char *s, size_t n, double *out) {
    if (n == 0) return false;
    char small[64];
    char *buf = n < sizeof small ? small : malloc(n + 1);
    if (!buf) return false;
    memcpy(buf, s, n);
    buf[n] = '\0';
    char *end;
    double v = strtod(buf, &end);
    bool ok = end == buf + n && isfinite(v) && !is_space(buf[0]);
    if (buf != small) free(buf);
    if (ok) *out = v;
    return ok;
}

static void trim(const char **s, size_t *n, bool (*space)(char)) {
    while (*n > 0 && space((*s)[0])) (*s)++, (*n)--;
    while (*n > 0 && space((*s)[*n - 1])) (*n)--;
}

float cg_reward_exact_match(const char *prompt, const char *response, size_t response_len, const char *answer,
                            void *user) {
    (void)prompt;
    (void)user;
    if (!response || !answer) return 0.0f;
    size_t n = cg_reward_answer_len(response, response_len), an = strlen(answer);
    trim(&response, &n, is_line_space);
    trim(&answer, &an, is_space);
    if (n == 0) return 0.0f; /* an empty response never matches, even an empty answer */
    return n == an && memcmp(response, answer, n) == 0 ? 1.0f : 0.0f;
}

float cg_reward_numeric(const char *prompt, const char *response, size_t response_len, const char *answer,
                        void *user) {
    (void)prompt;
    static const cg_reward_numeric_opts defaults = {0.0, 0.0, false};
    const cg_reward_numeric_opts *opt = user ? (const cg_reward_numeric_opts *)user : &defaults;
    if (!response || !answer) return 0.0f;
    size_t n = opt->last_number ? text_len(response, response_len) : cg_reward_answer_len(response, response_len);
    size_t start, end;
    if (!cg_reward_find_number(response, n, &start, &end)) return 0.0f;
    size_t next_start, next_end;
    while (opt->last_number && cg_reward_find_number(response + end, n - end, &next_start, &next_end)) {
        start = end + next_start;
        end = end + next_end;
    }
    const char *num = response + start;
    size_t num_len = end - start;

    size_t an = strlen(answer);
    trim(&answer, &an, is_space);
    decimal x, a;
    parse_decimal(num, num_len, &x);
    bool answer_plain = parse_decimal(answer, an, &a);
    if (answer_plain && decimal_equal(&x, &a)) return 1.0f;
    double abs_tol = opt->abs_tol > 0 ? opt->abs_tol : 0.0, rel_tol = opt->rel_tol > 0 ? opt->rel_tol : 0.0;
    bool tolerant = abs_tol > 0 || rel_tol > 0;
    if (answer_plain && !tolerant) return 0.0f;
    double xv, av;
    if (!parse_double(answer, an, &av) || !parse_double(num, num_len, &xv)) return 0.0f;
    return fabs(xv - av) <= abs_tol + rel_tol * fabs(av) ? 1.0f : 0.0f;
}

float cg_reward_format(const char *prompt, const char *response, size_t response_len, const char *answer,
                       void *user) {
    (void)prompt;
    (void)answer;
    (void)user;
    if (!response) return 0.0f;
    size_t n = cg_reward_answer_len(response, response_len), start, end;
    return cg_reward_find_number(response, n, &start, &end) && start == 0 && end == n ? 1.0f : 0.0f;
}

float cg_reward_weighted_sum(const cg_reward *rewards, int n, const char *prompt, const char *response,
                             size_t response_len, const char *answer) {
    if (!rewards) return 0.0f;
    double total = 0.0;
    for (int k = 0; k < n; k++) {
        if (!rewards[k].fn || rewards[k].weight == 0.0f) continue;
        total += (double)rewards[k].weight *
                 (double)rewards[k].fn(prompt, response, response_len, answer, rewards[k].user);
    }
    return (float)total;
}

float cg_reward_combined(const char *prompt, const char *response, size_t response_len, const char *answer,
                         void *user) {
    const cg_reward_list *list = user;
    if (!list) return 0.0f;
    return cg_reward_weighted_sum(list->items, list->n, prompt, response, response_len, answer);
}

float cg_reward_overlong_penalty(int64_t len, int64_t L_max, int64_t L_cache) {
    /* the formula lives in rl/advantage.c; this form clamps its arguments instead of refusing them */
    if (L_cache > L_max) L_cache = L_max;
    if (L_cache < 0) L_cache = 0;
    if (len < 0) len = 0;
    float p = 0.0f;
    return cg_soft_overlong_penalty(len, L_max, L_cache, 1.0f, &p) == CG_OK ? p : 0.0f;
}
