/* Verifiable tasks for RL: a seeded generator of arithmetic problems with exact answers, a JSONL format for
 * user data, and a task-set abstraction over both with a held-out split that never overlaps training.
 *
 * ---- Arithmetic problems ----
 * A problem is an expression of non-negative integer literals followed by '=', with no spaces, and its
 * answer is the exact value in decimal ("-" sign when negative, no leading zeros):
 *     prompt "12+7="        answer "19"
 *     prompt "3+4*(15-9)="  answer "27"      (usual precedence: * before + and -, left to right)
 * Only the characters "0123456789+-*()=" are used, all in the default character alphabet
 * (CG_CHAR_ALPHABET_DEFAULT). Operands never carry a sign: a negative answer only comes from subtraction.
 *
 * Item `index` of the stream of `seed` is a pure function of (config, seed, split, index): it comes from its
 * own Philox stream (core/rng.h: key = seed mixed with a hash of the config, stream = index), so items can be
 * made in any order and on any thread, and two configs give unrelated problems.
 *
 * Exactness: every value is a 64-bit integer computed with overflow checks. A config is accepted only if no
 * expression it can make leaves int64: with '*' in ops, max_digits * n_terms <= 18 (n operands below 10^D
 * combine to at most 10^(D*n) in magnitude under + - * and parentheses); without '*', max_digits <= 17.
 *
 * ---- Held-out split ----
 * Whether a problem is held out is a fixed function of its prompt text alone (cg_task_is_heldout: a 64-bit
 * hash of the prompt, 1 prompt in CG_TASK_HELDOUT_ONE_IN). The training stream skips held-out prompts and
 * the held-out stream keeps only them, so no held-out prompt can ever appear in training, whatever the seeds
 * or the number of items drawn (the same problem reached twice lands on the same side). The same rule
 * splits a JSONL set (cg_task_set_split).
 *
 * ---- JSONL ----
 * One JSON object per line: {"prompt": "...", "answer": "..." or a number}; other keys are ignored; blank
 * lines are skipped; duplicates are kept. A number answer keeps its literal text ("0.50" stays "0.50"), so
 * big integers stay exact. Errors name the file and the line: "tasks.jsonl:7: 'answer' must be a string or
 * a number, got object". */
#ifndef CG_RL_TASK_H
#define CG_RL_TASK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One problem. Both strings are malloc'd and NUL-terminated; free them with cg_task_item_free. */
typedef struct cg_task_item {
    char *prompt;
    char *answer;
} cg_task_item;

/* Frees both strings and sets them to NULL (NULL item or NULL fields are fine). */
void cg_task_item_free(cg_task_item *item);

/* ---------------------------------------------------------------- arithmetic problems */

#define CG_ARITH_MAX_DIGITS 18
#define CG_ARITH_MAX_TERMS 16
#define CG_ARITH_MAX_LEVEL 4

/* An arithmetic problem family.
 *   min_digits, max_digits  each operand has a digit count drawn uniformly in [min_digits, max_digits]
 *                           (1 <= min <= max <= 18), then a value uniform among the numbers with that many
 *                           digits (1 digit: 0-9; d >= 2 digits: 10^(d-1) .. 10^d - 1).
 *   ops                     the operators to draw from, uniformly per position: any non-empty mix of '+',
 *                           '-', '*' (a repeated character counts twice, to weight it).
 *   n_terms                 number of operands, 2 .. 16. 2 gives "a op b"; 3 or more mixed expressions with
 *                           precedence.
 *   allow_negative          false: the answer and every parenthesised value are >= 0. A negative flat
 *                           sum "x - y" is written "y - x"; a longer one has its + and - swapped, which
 *                           makes it positive (the first product is >= 0), and can so bring a '+' into a
 *                           problem of ops "-". true: answers may be negative.
 *   allow_parens            with n_terms >= 3, half the problems wrap one run of 2 .. n_terms-1 adjacent
 *                           operands in parentheses.
 *   difficulty              the preset level this config came from (cg_arith_difficulty), or -1 for a
 *                           hand-made one. Only a label for logs: generation reads the fields above. */
typedef struct cg_arith_config {
    int min_digits, max_digits;
    const char *ops;
    int n_terms;
    bool allow_negative;
    bool allow_parens;
    int difficulty;
} cg_arith_config;

/* Presets (levels outside 0..4 are clamped):
 *   0: 1 digit,      "+-",  2 terms, answers >= 0             e.g. "7-3="
 *   1: 1-2 digits,   "+-",  2 terms, answers >= 0             e.g. "45+8="
 *   2: 1-2 digits,   "+-*", 2 terms, answers >= 0             e.g. "12*7="
 *   3: 1-2 digits,   "+-*", 3 terms, answers >= 0             e.g. "4+12*3="
 *   4: 1-3 digits,   "+-*", 4 terms, parentheses, negatives   e.g. "(8-120)*3+41=" */
cg_arith_config cg_arith_difficulty(int level);

/* Checks a config (the rules above); CG_ERR_INVALID_ARG names the field. */
cg_status cg_arith_validate(const cg_arith_config *cfg);

/* Which problems a stream draws. */
typedef enum cg_task_split {
    CG_SPLIT_ALL = 0, /* every problem */
    CG_SPLIT_TRAIN,   /* only problems that are not held out */
    CG_SPLIT_HELDOUT  /* only held-out problems */
} cg_task_split;

#define CG_TASK_HELDOUT_ONE_IN 10

/* True when a prompt belongs to the held-out split (see the top of this file). */
bool cg_task_is_heldout(const char *prompt);

/* Item `index` (>= 0) of the training stream of `seed` (never a held-out problem). On error *out is
 * {NULL, NULL}. */
cg_status cg_arith_generate(const cg_arith_config *cfg, uint64_t seed, int64_t index, cg_task_item *out);
/* The same for any split. The held-out stream fails with CG_ERR_INVALID_ARG if a config has so few
 * distinct problems that 4096 draws find no held-out one. */
cg_status cg_arith_generate_split(const cg_arith_config *cfg, uint64_t seed, cg_task_split split, int64_t index,
                                  cg_task_item *out);

/* The answer a sloppy pupil gives to a two-term "a+b=" or "a-b=" prompt (non-negative operands, a >= b for
 * -): column by column with every carry and borrow forgotten, (a_i + b_i) mod 10 or (a_i - b_i) mod 10,
 * leading zeros dropped. Equals the true answer exactly when no column carries or borrows. The default RL
 * demo warms up on a mix of its answers and the true ones (an imperfect teacher), so that the reward has
 * something systematic to correct. Fails with CG_ERR_INVALID_ARG on any other prompt shape. */
cg_status cg_arith_answer_without_carry(const char *prompt, char *out, size_t out_size);

/* ---------------------------------------------------------------- task sets */

typedef struct cg_task_set cg_task_set;

/* The training stream of an arithmetic config (an infinite set: size INT64_MAX). The config (and its ops
 * string) is copied. */
cg_status cg_task_set_arith(const cg_arith_config *cfg, uint64_t seed, cg_task_set **out);
/* Loads a JSONL file (format above). Lines longer than CG_TASK_JSONL_MAX_LINE bytes are an error; a file
 * with no task is an error. */
#define CG_TASK_JSONL_MAX_LINE ((int64_t)1 << 20)
cg_status cg_task_set_load_jsonl(const char *path, cg_task_set **out);
/* A finite set holding copies of n items (n >= 1). */
cg_status cg_task_set_from_items(const cg_task_item *items, int64_t n, cg_task_set **out);
/* The items of src that belong to `split`, in their order. For an arithmetic set: the stream of the same
 * config and seed restricted to that split. For a finite set: a filtered copy (an empty result is an
 * error naming the split). */
cg_status cg_task_set_split(const cg_task_set *src, cg_task_split split, cg_task_set **out);

/* Number of items; INT64_MAX for a generator; -1 for NULL. */
int64_t cg_task_set_size(const cg_task_set *set);
/* Copies item i (0 <= i < size) into *out; the caller frees it with cg_task_item_free. */
cg_status cg_task_set_get(const cg_task_set *set, int64_t i, cg_task_item *out);
/* A one-line description for logs: "arith level 2 (digits 1-2, ops +-*, 2 terms), train split, seed 7" or
 * "tasks.jsonl (1200 tasks)". Valid until the set is freed. */
const char *cg_task_set_describe(const cg_task_set *set);
void cg_task_set_free(cg_task_set *set);

#ifdef __cplusplus
}
#endif
#endif
