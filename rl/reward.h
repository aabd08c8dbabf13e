/* Verifiable rewards: exact match, numeric match with tolerance, a format check, weighted combinations, DAPO's
 * soft overlong penalty, and the signature a C driver implements to pass its own reward.
 *
 * The answer region. A response is the decoded text of the sampled tokens, without the end token. The
 * built-in rewards look only at its first line: the bytes before the first '\n', NUL, or response_len,
 * whichever comes first (the model answers "19" and then emits its end token or a newline). The response
 * need not be NUL-terminated. cg_reward_numeric can instead search the whole response (last_number).
 *
 * A number (cg_reward_find_number) is: an optional sign ('+' or '-') directly before the first digit, one or
 * more digits, and optionally '.' followed by one or more digits. No exponent, no thousands separators:
 * "1 2" is the number 1 followed by the number 2, "1,000" is 1. A sign not directly followed by a digit is
 * not part of a number ("- 7" holds the number 7). Leading zeros and signs compare by value: "007" = 7,
 * "+7" = 7, "-0" = 0, "7.50" = 7.5.
 *
 * Every built-in returns 0 for a NULL or empty response, a NULL answer, or an answer that is not a number
 * (for the numeric rewards). */
#ifndef CG_RL_REWARD_H
#define CG_RL_REWARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* A reward function: the prompt, the response (response_len bytes, not necessarily NUL-terminated), the
 * task's reference answer, and the driver's own data. It must not keep the pointers. */
typedef float (*cg_reward_fn)(const char *prompt, const char *response, size_t response_len, const char *answer,
                              void *user);

/* One term of a reward: fn(prompt, response, len, answer, user) * weight. */
typedef struct cg_reward {
    cg_reward_fn fn;
    void *user;
    float weight;
} cg_reward;

/* Length of the answer region (first line) of a response; 0 for NULL. */
size_t cg_reward_answer_len(const char *response, size_t response_len);

/* Finds the first number (grammar above) in text[0, len): true with its byte span [*start, *end). */
bool cg_reward_find_number(const char *text, size_t len, size_t *start, size_t *end);

/* 1 if the answer region, with spaces, tabs and '\r' trimmed at both ends, equals the answer with ASCII
 * whitespace trimmed at both ends, byte for byte; else 0. `user` is ignored. */
float cg_reward_exact_match(const char *prompt, const char *response, size_t response_len, const char *answer,
                            void *user);

/* Options of cg_reward_numeric (user = a pointer to one, or NULL for the defaults: all zero). */
typedef struct cg_reward_numeric_opts {
    double abs_tol; /* match if |x - a| <= abs_tol + rel_tol * |a| (in double) */
    double rel_tol;
    bool last_number; /* take the last number of the whole response instead of the first of its first line */
} cg_reward_numeric_opts;

/* 1 if the first number of the answer region equals the answer, else 0. The answer (ASCII whitespace
 * trimmed) must be a number of the grammar above, or failing that a whole strtod number ("1e3"). With zero
 * tolerances, plain decimals compare exactly digit for digit at any length (no rounding through double:
 * 9007199254740993 != 9007199254740992); a tolerance compares in double, after the exact check. */
float cg_reward_numeric(const char *prompt, const char *response, size_t response_len, const char *answer,
                        void *user);

/* 1 if the answer region is exactly one number of the grammar above, nothing else (no spaces, no text),
 * i.e. the response is a number followed by its end or a newline; else 0. Correctness is not checked.
 * `user` is ignored. */
float cg_reward_format(const char *prompt, const char *response, size_t response_len, const char *answer,
                       void *user);

/* sum_k rewards[k].weight * rewards[k].fn(...), skipping terms with a NULL fn or a zero weight. */
float cg_reward_weighted_sum(const cg_reward *rewards, int n, const char *prompt, const char *response,
                             size_t response_len, const char *answer);

/* cg_reward_weighted_sum as a cg_reward_fn, so that a combination is itself a reward: user points to a
 * cg_reward_list. */
typedef struct cg_reward_list {
    const cg_reward *items;
    int n;
} cg_reward_list;
float cg_reward_combined(const char *prompt, const char *response, size_t response_len, const char *answer,
                         void *user);

/* DAPO's soft overlong punishment (Yu et al. 2025, Eq. 13), added to the correctness reward; lengths in
 * tokens:
 *     0                                   if len <= L_max - L_cache
 *     ((L_max - L_cache) - len) / L_cache  if L_max - L_cache < len <= L_max
 *     -1                                  if len > L_max
 * L_cache <= 0 is a hard cut (0 up to L_max, -1 past it); L_cache > L_max is taken as L_max. */
float cg_reward_overlong_penalty(int64_t len, int64_t L_max, int64_t L_cache);

#ifdef __cplusplus
}
#endif
#endif
