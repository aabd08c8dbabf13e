/* RL tasks and rewards: the arithmetic generator (determinism, answers checked by an independent evaluator
 * in 128-bit integers, digit bounds per level, alphabet, no overflow at the largest settings, train/held-out
 * disjointness), task sets, the JSONL loader (good files and every malformed-line error with file:line),
 * every built-in reward on edge cases, the combiner, and DAPO's overlong penalty at its boundaries. */
#include <unistd.h>

#include "test_util.h"

#include "models/tokenizer.h"
#include "rl/reward.h"
#include "rl/task.h"

/* ---------------------------------------------------------------- an independent evaluator */

/* What the evaluator saw in one prompt. */
typedef struct parsed_expr {
    __int128 value;
    int n_operands, n_groups;
    int min_operand_digits, max_operand_digits;
    bool negative_group;  /* a parenthesised value < 0 */
    bool op_seen[256];
    bool ok;
} parsed_expr;

typedef struct expr_cursor {
    const char *s;
    size_t pos;
    parsed_expr *info;
} expr_cursor;

static __int128 eval_sum(expr_cursor *c);

static __int128 eval_factor(expr_cursor *c) {
    if (c->s[c->pos] == '(') {
        c->pos++;
        __int128 v = eval_sum(c);
        if (c->s[c->pos] != ')') c->info->ok = false;
        else c->pos++;
        c->info->n_groups++;
        if (v < 0) c->info->negative_group = true;
        return v;
    }
    int digits = 0;
    __int128 v = 0;
    while (c->s[c->pos] >= '0' && c->s[c->pos] <= '9') {
        v = v * 10 + (c->s[c->pos++] - '0');
        digits++;
    }
    if (digits == 0) c->info->ok = false;
    /* literals have no leading zeros except "0" itself */
    if (digits > 1 && c->s[c->pos - (size_t)digits] == '0') c->info->ok = false;
    c->info->n_operands++;
    if (digits < c->info->min_operand_digits) c->info->min_operand_digits = digits;
    if (digits > c->info->max_operand_digits) c->info->max_operand_digits = digits;
    return v;
}

static __int128 eval_product(expr_cursor *c) {
    __int128 v = eval_factor(c);
    while (c->info->ok && c->s[c->pos] == '*') {
        c->info->op_seen['*'] = true;
        c->pos++;
        v *= eval_factor(c);
    }
    return v;
}

static __int128 eval_sum(expr_cursor *c) {
    __int128 v = eval_product(c);
    while (c->info->ok && (c->s[c->pos] == '+' || c->s[c->pos] == '-')) {
        char op = c->s[c->pos++];
        c->info->op_seen[(unsigned char)op] = true;
        __int128 w = eval_product(c);
        v = op == '+' ? v + w : v - w;
    }
    return v;
}

/* Parses "expr=" completely; info->ok is false on any deviation. */
static parsed_expr evaluate_prompt(const char *prompt) {
    parsed_expr info;
    memset(&info, 0, sizeof info);
    info.ok = true;
    info.min_operand_digits = 1000;
    expr_cursor c = {prompt, 0, &info};
    info.value = eval_sum(&c);
    if (prompt[c.pos] != '=' || prompt[c.pos + 1] != '\0') info.ok = false;
    return info;
}

static void int128_to_string(__int128 v, char *buf) {
    char tmp[64];
    int n = 0;
    bool neg = v < 0;
    unsigned __int128 u = neg ? (unsigned __int128)(-v) : (unsigned __int128)v;
    do {
        tmp[n++] = (char)('0' + (int)(u % 10));
        u /= 10;
    } while (u);
    int k = 0;
    if (neg) buf[k++] = '-';
    while (n) buf[k++] = tmp[--n];
    buf[k] = '\0';
}

static const __int128 INT64_LIMIT = (__int128)INT64_MAX;

/* Checks one generated item against the config; returns the evaluator's findings. */
static parsed_expr check_item(const cg_arith_config *cfg, const cg_task_item *it) {
    assert_non_null(it->prompt);
    assert_non_null(it->answer);
    for (const char *p = it->prompt; *p; p++) {
        assert_non_null(strchr("0123456789+-*()=", *p));
        assert_non_null(strchr(CG_CHAR_ALPHABET_DEFAULT, *p));
    }
    for (const char *p = it->answer; *p; p++) assert_non_null(strchr("-0123456789", *p));
    parsed_expr e = evaluate_prompt(it->prompt);
    if (!e.ok) fail_msg("unparsable prompt \"%s\"", it->prompt);
    assert_true(e.value <= INT64_LIMIT && e.value >= -INT64_LIMIT);
    char expected[64];
    int128_to_string(e.value, expected);
    if (strcmp(expected, it->answer) != 0)
        fail_msg("\"%s\": answer %s, evaluator %s", it->prompt, it->answer, expected);
    assert_int_equal(e.n_operands, cfg->n_terms);
    assert_true(e.min_operand_digits >= cfg->min_digits);
    assert_true(e.max_operand_digits <= cfg->max_digits);
    /* the sign flip that keeps answers >= 0 may turn a '-' into a '+' (documented) */
    bool plus_ok = strchr(cfg->ops, '+') || (!cfg->allow_negative && strchr(cfg->ops, '-'));
    for (int op = 0; op < 256; op++)
        if (e.op_seen[op] && !(op == '+' && plus_ok)) assert_non_null(strchr(cfg->ops, op));
    assert_true(e.n_groups <= 1);
    if (!cfg->allow_parens) assert_int_equal(e.n_groups, 0);
    if (!cfg->allow_negative) {
        assert_true(e.value >= 0);
        assert_false(e.negative_group);
    }
    return e;
}

/* ---------------------------------------------------------------- generator */

static void test_arith_deterministic(void **state) {
    (void)state;
    cg_arith_config cfg = cg_arith_difficulty(4);
    int distinct_next = 0;
    for (int64_t i = 0; i < 500; i++) {
        cg_task_item a, b, c, d;
        assert_ok(cg_arith_generate(&cfg, 42, i, &a));
        assert_ok(cg_arith_generate(&cfg, 42, i, &b));
        assert_string_equal(a.prompt, b.prompt);
        assert_string_equal(a.answer, b.answer);
        assert_ok(cg_arith_generate(&cfg, 42, i + 1, &c));
        assert_ok(cg_arith_generate(&cfg, 43, i, &d));
        distinct_next += strcmp(a.prompt, c.prompt) != 0;
        /* a different seed gives a different problem (level 4 has ~10^16 of them) */
        assert_string_not_equal(a.prompt, d.prompt);
        cg_task_item_free(&a);
        cg_task_item_free(&b);
        cg_task_item_free(&c);
        cg_task_item_free(&d);
    }
    assert_int_equal(distinct_next, 500);
    /* Items do not depend on the order they are made in: index 1000 alone equals index 1000 after others. */
    cg_task_item x, y;
    assert_ok(cg_arith_generate(&cfg, 7, 1000, &x));
    for (int64_t i = 0; i < 10; i++) {
        assert_ok(cg_arith_generate(&cfg, 7, i, &y));
        cg_task_item_free(&y);
    }
    assert_ok(cg_arith_generate(&cfg, 7, 1000, &y));
    assert_string_equal(x.prompt, y.prompt);
    cg_task_item_free(&x);
    cg_task_item_free(&y);
    /* Two configs give unrelated streams: level 1 (1-2 digits) is not level 0 whenever the digit draws agree. */
    cg_arith_config l0 = cg_arith_difficulty(0), l1 = cg_arith_difficulty(1);
    int same = 0;
    for (int64_t i = 0; i < 400; i++) {
        cg_task_item a, b;
        assert_ok(cg_arith_generate(&l0, 3, i, &a));
        assert_ok(cg_arith_generate(&l1, 3, i, &b));
        same += strcmp(a.prompt, b.prompt) == 0;
        cg_task_item_free(&a);
        cg_task_item_free(&b);
    }
    /* chance agreement: P(both operands 1 digit) / ~155 problems ~ 0.2% */
    assert_true(same < 10);
    /* Level 0 has ~200 problems: many indices repeat some, yet it must still cover most of them. */
    cg_arith_config c0 = cg_arith_difficulty(0);
    char seen[200][8];
    int n_seen = 0;
    for (int64_t i = 0; i < 4000; i++) {
        cg_task_item it;
        assert_ok(cg_arith_generate(&c0, 1, i, &it));
        check_item(&c0, &it);
        bool dup = false;
        for (int k = 0; k < n_seen; k++) dup |= strcmp(seen[k], it.prompt) == 0;
        if (!dup) {
            assert_true(n_seen < 200);
            snprintf(seen[n_seen++], 8, "%s", it.prompt);
        }
        cg_task_item_free(&it);
    }
    assert_true(n_seen >= 120);
}

/* A few hand-picked prompts through the test's evaluator (so the evaluator itself is checked). */
static void test_evaluator_itself(void **state) {
    (void)state;
    const struct { const char *prompt; long long value; } cases[] = {
        {"12+7=", 19}, {"3-15=", -12}, {"2+3*4=", 14}, {"2*3+4=", 10}, {"10-2-3=", 5}, {"(10-2)*3=", 24},
        {"3+4*(15-9)=", 27}, {"2*(3+4)*5=", 70}, {"100-(20+30)-5=", 45}, {"7*8-9*6=", 2}};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        parsed_expr e = evaluate_prompt(cases[k].prompt);
        assert_true(e.ok);
        assert_true(e.value == cases[k].value);
    }
    assert_false(evaluate_prompt("12+=").ok);
    assert_false(evaluate_prompt("(1+2=").ok);
    assert_false(evaluate_prompt("012+1=").ok);
}

/* The sloppy pupil of the demo's warm-up: columns without carries or borrows, by hand. */
static void test_answer_without_carry(void **state) {
    (void)state;
    char out[32];
    const char *cases[][2] = {{"98+5=", "93"}, {"58+88=", "36"}, {"12+34=", "46"}, {"60-1=", "69"}, {"15-8=", "17"},
                              {"52-38=", "24"}, {"99-99=", "0"}, {"5+5=", "0"}, {"0+0=", "0"}, {"7-7=", "0"},
                              {"100-1=", "109"}, {"9+91=", "90"}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        assert_int_equal(cg_arith_answer_without_carry(cases[i][0], out, sizeof out), CG_OK);
        assert_string_equal(out, cases[i][1]);
    }
    /* no carry anywhere: the true answer, for every 2-digit + problem without a carrying column */
    cg_arith_config c = cg_arith_difficulty(1);
    int checked = 0;
    for (int64_t k = 0; k < 2000; k++) {
        cg_task_item it;
        assert_int_equal(cg_arith_generate(&c, 7, k, &it), CG_OK);
        int a, b;
        char op;
        assert_int_equal(sscanf(it.prompt, "%d%c%d=", &a, &op, &b), 3);
        bool carries = false;
        for (int x = a, y = b; x || y; x /= 10, y /= 10)
            carries |= op == '+' ? x % 10 + y % 10 >= 10 : x % 10 < y % 10;
        assert_int_equal(cg_arith_answer_without_carry(it.prompt, out, sizeof out), CG_OK);
        if (!carries) assert_string_equal(out, it.answer), checked++;
        else assert_string_not_equal(out, it.answer);
        cg_task_item_free(&it);
    }
    assert_true(checked > 500);
    /* shapes it does not take */
    const char *bad[] = {"1+2+3=", "3-5=", "(1+2)=", "12*3=", "12+3", "", "+3=", "12+=", "12+3= "};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(cg_arith_answer_without_carry(bad[i], out, sizeof out), CG_ERR_INVALID_ARG);
        assert_non_null(strstr(cg_last_error(), "answer without carry"));
    }
    assert_int_equal(cg_arith_answer_without_carry("98+5=", out, 2), CG_ERR_INVALID_ARG);
}

static void test_arith_levels(void **state) {
    (void)state;
    for (int level = 0; level <= CG_ARITH_MAX_LEVEL; level++) {
        cg_arith_config cfg = cg_arith_difficulty(level);
        assert_int_equal(cfg.difficulty, level);
        assert_ok(cg_arith_validate(&cfg));
        int digits_hit[CG_ARITH_MAX_DIGITS + 2] = {0};
        bool op_hit[256] = {false};
        int with_parens = 0, negatives = 0;
        const int n = 2000;
        for (int64_t i = 0; i < n; i++) {
            cg_task_item it;
            assert_ok(cg_arith_generate(&cfg, 2024, i, &it));
            parsed_expr e = check_item(&cfg, &it);
            digits_hit[e.min_operand_digits]++;
            digits_hit[e.max_operand_digits]++;
            for (int op = 0; op < 256; op++) op_hit[op] |= e.op_seen[op];
            with_parens += e.n_groups;
            negatives += e.value < 0;
            assert_true(strlen(it.prompt) < 40); /* compact for a 256-position model */
            cg_task_item_free(&it);
        }
        /* every digit count and operator of the level occurs */
        for (int d = cfg.min_digits; d <= cfg.max_digits; d++) assert_true(digits_hit[d] > 0);
        for (const char *p = cfg.ops; *p; p++) assert_true(op_hit[(unsigned char)*p]);
        if (cfg.allow_parens) assert_true(with_parens > n / 4 && with_parens < 3 * n / 4);
        if (cfg.allow_negative) assert_true(negatives > 0);
    }
    /* documented presets */
    cg_arith_config c = cg_arith_difficulty(1);
    assert_int_equal(c.min_digits, 1);
    assert_int_equal(c.max_digits, 2);
    assert_string_equal(c.ops, "+-");
    c = cg_arith_difficulty(4);
    assert_int_equal(c.max_digits, 3);
    assert_int_equal(c.n_terms, 4);
    assert_true(c.allow_parens && c.allow_negative);
    assert_int_equal(cg_arith_difficulty(99).difficulty, 4);
    assert_int_equal(cg_arith_difficulty(-3).difficulty, 0);
}

/* 2-term subtraction without negatives is written larger-first: "a-b" with a >= b, and both orders of
 * magnitude occur (so the generator does not simply drop the '-' problems). */
static void test_arith_subtraction_non_negative(void **state) {
    (void)state;
    cg_arith_config cfg = {1, 2, "-", 2, false, false, -1};
    int swapped_like = 0;
    for (int64_t i = 0; i < 1000; i++) {
        cg_task_item it;
        assert_ok(cg_arith_generate(&cfg, 5, i, &it));
        check_item(&cfg, &it);
        assert_non_null(strchr(it.prompt, '-'));
        long long a = atoll(it.prompt), b = atoll(strchr(it.prompt, '-') + 1);
        assert_true(a >= b);
        assert_int_equal(atoll(it.answer), a - b);
        swapped_like += a > 9 && b <= 9;
        cg_task_item_free(&it);
    }
    assert_true(swapped_like > 100);
    /* long flat differences: the sign flip keeps them non-negative */
    cg_arith_config many = {1, 3, "--+", 6, false, true, -1};
    for (int64_t i = 0; i < 1000; i++) {
        cg_task_item it;
        assert_ok(cg_arith_generate(&many, 6, i, &it));
        check_item(&many, &it);
        cg_task_item_free(&it);
    }
}

static void test_arith_largest_settings(void **state) {
    (void)state;
    const cg_arith_config big[] = {
        {9, 9, "*", 2, true, false, -1},      {6, 6, "*+-", 3, true, true, -1},  {1, 1, "*", 16, true, true, -1},
        {17, 17, "+-", 16, true, true, -1},   {17, 17, "-", 16, false, true, -1}, {3, 3, "+-*", 6, true, true, -1},
        {1, 18, "+", 1 + 1, false, false, -1} /* invalid: 18 digits without '*' */};
    for (size_t k = 0; k < sizeof big / sizeof big[0]; k++) {
        if (big[k].max_digits == 18) {
            assert_int_equal(cg_arith_validate(&big[k]), CG_ERR_INVALID_ARG);
            assert_error_contains("overflow");
            continue;
        }
        __int128 largest = 0;
        for (int64_t i = 0; i < 1500; i++) {
            cg_task_item it;
            assert_ok(cg_arith_generate(&big[k], 99, i, &it));
            parsed_expr e = check_item(&big[k], &it);
            __int128 mag = e.value < 0 ? -e.value : e.value;
            if (mag > largest) largest = mag;
            cg_task_item_free(&it);
        }
        /* the products of config 0 reach ~10^17, near the top of the exact range */
        if (k == 0) assert_true(largest > (__int128)100000000000000000LL / 2);
    }
}

static void test_arith_invalid_configs(void **state) {
    (void)state;
    cg_task_item it = {(char *)1, (char *)1};
    cg_arith_config c = {10, 10, "*", 2, false, false, -1};
    assert_int_equal(cg_arith_generate(&c, 1, 0, &it), CG_ERR_INVALID_ARG);
    assert_null(it.prompt);
    assert_error_contains("max_digits 10 x n_terms 2");
    const struct { cg_arith_config cfg; const char *msg; } bad[] = {
        {{1, 1, "/", 2, false, false, -1}, "'/'"},     {{1, 1, "", 2, false, false, -1}, "ops is empty"},
        {{1, 1, NULL, 2, false, false, -1}, "ops is empty"}, {{0, 1, "+", 2, false, false, -1}, "digits 0..1"},
        {{3, 2, "+", 2, false, false, -1}, "digits 3..2"}, {{1, 1, "+", 1, false, false, -1}, "n_terms 1"},
        {{1, 1, "+", 17, false, false, -1}, "n_terms 17"}, {{6, 6, "*", 4, false, false, -1}, "overflow"}};
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        assert_int_equal(cg_arith_validate(&bad[k].cfg), CG_ERR_INVALID_ARG);
        assert_error_contains(bad[k].msg);
    }
    cg_arith_config ok = cg_arith_difficulty(2);
    assert_int_equal(cg_arith_generate(&ok, 1, -1, &it), CG_ERR_INVALID_ARG);
    assert_int_equal(cg_arith_generate(NULL, 1, 0, &it), CG_ERR_INVALID_ARG);
    assert_int_equal(cg_arith_generate(&ok, 1, 0, NULL), CG_ERR_INVALID_ARG);
    assert_int_equal(cg_arith_generate_split(&ok, 1, (cg_task_split)7, 0, &it), CG_ERR_INVALID_ARG);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Number of strings present in both sorted arrays. */
static int count_common(char **a, int na, char **b, int nb) {
    int i = 0, j = 0, common = 0;
    while (i < na && j < nb) {
        int c = strcmp(a[i], b[j]);
        if (c == 0) common++, i++, j++;
        else if (c < 0) i++;
        else j++;
    }
    return common;
}

static void test_train_heldout_disjoint(void **state) {
    (void)state;
    const int n = 3000;
    for (int level = 0; level <= 2; level += 1) {
        cg_arith_config cfg = cg_arith_difficulty(level);
        char **train = malloc(sizeof(char *) * (size_t)n), **held = malloc(sizeof(char *) * (size_t)n);
        assert_non_null(train);
        assert_non_null(held);
        int all_held = 0;
        for (int64_t i = 0; i < n; i++) {
            cg_task_item t, h, a;
            /* different seeds on purpose: the split holds across seeds */
            assert_ok(cg_arith_generate_split(&cfg, 11, CG_SPLIT_TRAIN, i, &t));
            assert_ok(cg_arith_generate_split(&cfg, 12, CG_SPLIT_HELDOUT, i, &h));
            assert_ok(cg_arith_generate_split(&cfg, 13, CG_SPLIT_ALL, i, &a));
            check_item(&cfg, &h);
            assert_false(cg_task_is_heldout(t.prompt));
            assert_true(cg_task_is_heldout(h.prompt));
            all_held += cg_task_is_heldout(a.prompt);
            train[i] = t.prompt;
            held[i] = h.prompt;
            free(t.answer);
            free(h.answer);
            cg_task_item_free(&a);
        }
        qsort(train, (size_t)n, sizeof(char *), cmp_str);
        qsort(held, (size_t)n, sizeof(char *), cmp_str);
        assert_int_equal(count_common(train, n, held, n), 0);
        /* sanity of the comparison itself: a set shares everything with itself */
        assert_int_equal(count_common(held, n, held, n), n);
        /* about 1 in 10 of all problems is held out (binomial sd ~16 at level 2; level 0 has ~200 problems) */
        if (level > 0) assert_true(all_held > 200 && all_held < 400);
        else assert_true(all_held > 0 && all_held < 900);
        for (int i = 0; i < n; i++) {
            free(train[i]);
            free(held[i]);
        }
        free(train);
        free(held);
    }
}

static void test_task_set_arith(void **state) {
    (void)state;
    cg_arith_config cfg = cg_arith_difficulty(3);
    char ops[] = "+-*";
    cfg.ops = ops; /* the set copies the config's ops */
    cg_task_set *set = NULL, *held = NULL;
    assert_ok(cg_task_set_arith(&cfg, 77, &set));
    ops[0] = '/';
    assert_true(cg_task_set_size(set) == INT64_MAX);
    assert_non_null(strstr(cg_task_set_describe(set), "level 3"));
    assert_non_null(strstr(cg_task_set_describe(set), "train"));
    assert_ok(cg_task_set_split(set, CG_SPLIT_HELDOUT, &held));
    assert_non_null(strstr(cg_task_set_describe(held), "held-out"));
    ops[0] = '+';
    for (int64_t i = 0; i < 200; i++) {
        cg_task_item a, b, c, d;
        assert_ok(cg_task_set_get(set, i * 1000003, &a));
        assert_ok(cg_arith_generate(&cfg, 77, i * 1000003, &b));
        assert_string_equal(a.prompt, b.prompt);
        assert_string_equal(a.answer, b.answer);
        assert_ok(cg_task_set_get(held, i, &c));
        assert_ok(cg_arith_generate_split(&cfg, 77, CG_SPLIT_HELDOUT, i, &d));
        assert_string_equal(c.prompt, d.prompt);
        assert_true(cg_task_is_heldout(c.prompt));
        cg_task_item_free(&a);
        cg_task_item_free(&b);
        cg_task_item_free(&c);
        cg_task_item_free(&d);
    }
    cg_task_item it;
    assert_int_equal(cg_task_set_get(set, -5, &it), CG_ERR_INVALID_ARG);
    assert_int_equal(cg_task_set_get(NULL, 0, &it), CG_ERR_INVALID_ARG);
    assert_true(cg_task_set_size(NULL) == -1);
    cg_task_set_free(held);
    cg_task_set_free(set);
    cg_task_set_free(NULL);
    cg_arith_config bad = {1, 1, "/", 2, false, false, -1};
    assert_int_equal(cg_task_set_arith(&bad, 1, &set), CG_ERR_INVALID_ARG);
    assert_null(set);
}

static void test_task_set_from_items(void **state) {
    (void)state;
    cg_task_item items[40];
    char prompts[40][16], answers[40][16];
    int expected_held = 0;
    for (int i = 0; i < 40; i++) {
        snprintf(prompts[i], 16, "%d+%d=", i, 2 * i);
        snprintf(answers[i], 16, "%d", 3 * i);
        items[i].prompt = prompts[i];
        items[i].answer = answers[i];
        expected_held += cg_task_is_heldout(prompts[i]);
    }
    cg_task_set *set, *held, *train;
    assert_ok(cg_task_set_from_items(items, 40, &set));
    prompts[0][0] = 'x'; /* copies were taken */
    assert_true(cg_task_set_size(set) == 40);
    cg_task_item it;
    assert_ok(cg_task_set_get(set, 0, &it));
    assert_string_equal(it.prompt, "0+0=");
    cg_task_item_free(&it);
    assert_null(it.prompt);
    assert_ok(cg_task_set_get(set, 39, &it));
    assert_string_equal(it.answer, "117");
    cg_task_item_free(&it);
    assert_int_equal(cg_task_set_get(set, 40, &it), CG_ERR_INVALID_ARG);
    assert_error_contains("index 40 out of range [0, 40)");
    prompts[0][0] = '0';
    assert_true(expected_held > 0);
    assert_ok(cg_task_set_split(set, CG_SPLIT_HELDOUT, &held));
    assert_ok(cg_task_set_split(set, CG_SPLIT_TRAIN, &train));
    assert_int_equal(cg_task_set_size(held), expected_held);
    assert_int_equal(cg_task_set_size(train), 40 - expected_held);
    for (int64_t i = 0; i < cg_task_set_size(held); i++) {
        assert_ok(cg_task_set_get(held, i, &it));
        assert_true(cg_task_is_heldout(it.prompt));
        cg_task_item_free(&it);
    }
    cg_task_set_free(held);
    cg_task_set_free(train);
    cg_task_set_free(set);
    assert_int_equal(cg_task_set_from_items(items, 0, &set), CG_ERR_INVALID_ARG);
    items[3].answer = NULL;
    assert_int_equal(cg_task_set_from_items(items, 5, &set), CG_ERR_INVALID_ARG);
    assert_error_contains("item 3");
    /* a split that keeps nothing is an error */
    cg_task_item one = {"1+1=", "2"};
    if (cg_task_is_heldout(one.prompt)) one.prompt = "1+2=";
    assert_false(cg_task_is_heldout(one.prompt));
    assert_ok(cg_task_set_from_items(&one, 1, &set));
    assert_int_equal(cg_task_set_split(set, CG_SPLIT_HELDOUT, &held), CG_ERR_INVALID_ARG);
    assert_error_contains("no held-out task");
    cg_task_set_free(set);
}

/* ---------------------------------------------------------------- JSONL */

static char tmpdir[64];

static int setup_tmpdir(void **state) {
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/cgrad_rltask_XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int remove_tmpdir(void **state) {
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static const char *write_file(const char *name, const char *text, size_t len) {
    static char path[128];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, len, f), len);
    fclose(f);
    return path;
}

static void expect_item(const cg_task_set *set, int64_t i, const char *prompt, const char *answer) {
    cg_task_item it;
    assert_ok(cg_task_set_get(set, i, &it));
    assert_string_equal(it.prompt, prompt);
    assert_string_equal(it.answer, answer);
    cg_task_item_free(&it);
}

static void test_jsonl_good(void **state) {
    (void)state;
    const char text[] =
        "{\"prompt\": \"12+7=\", \"answer\": \"19\"}\n"
        "\n"
        "   \t\n"
        "{\"answer\": 42, \"prompt\": \"six times seven?\", \"id\": 3, "
        "\"meta\": {\"a\": [1, 2, {\"b\": null}], \"c\": true}}\r\n"
        "  {\"prompt\":\"tab\\there \\\"q\\\" \\\\ \\/ \\n\\u00e9\\ud83d\\ude00\",\"answer\":-3.5e2}  \n"
        "{\"prompt\": \"big\", \"answer\": 12345678901234567890123}\n"
        "{\"prompt\": \"12+7=\", \"answer\": \"19\"}\n"
        "{\"prompt\": \"zero\", \"answer\": -0.0}"; /* no final newline */
    const char *path = write_file("good.jsonl", text, sizeof text - 1);
    cg_task_set *set = NULL;
    assert_ok(cg_task_set_load_jsonl(path, &set));
    assert_true(cg_task_set_size(set) == 6);
    expect_item(set, 0, "12+7=", "19");
    expect_item(set, 1, "six times seven?", "42");
    expect_item(set, 2, "tab\there \"q\" \\ / \n\xc3\xa9\xf0\x9f\x98\x80", "-3.5e2");
    expect_item(set, 3, "big", "12345678901234567890123"); /* the literal text: exact beyond double */
    expect_item(set, 4, "12+7=", "19");                   /* duplicates are kept */
    expect_item(set, 5, "zero", "-0.0");
    assert_non_null(strstr(cg_task_set_describe(set), "good.jsonl (6 tasks)"));
    cg_task_set_free(set);
}

static void test_jsonl_malformed(void **state) {
    (void)state;
    const char *good = "{\"prompt\": \"1+1=\", \"answer\": \"2\"}\n\n";
    const struct { const char *line; const char *msg; } bad[] = {
        {"hello", "not a JSON object"},
        {"[1, 2]", "not a JSON object"},
        {"{\"answer\": \"2\"}", "missing key 'prompt'"},
        {"{\"prompt\": \"1+1=\"}", "missing key 'answer'"},
        {"{}", "missing key 'prompt'"},
        {"{\"prompt\": \"1+1=\", \"answer\": {\"v\": 2}}", "'answer' must be a string or a number, got object"},
        {"{\"prompt\": \"1+1=\", \"answer\": [2]}", "got array"},
        {"{\"prompt\": \"1+1=\", \"answer\": null}", "got null"},
        {"{\"prompt\": \"1+1=\", \"answer\": true}", "got bool"},
        {"{\"prompt\": 5, \"answer\": \"2\"}", "'prompt' must be a string, got number"},
        {"{\"prompt\": \"a\", \"prompt\": \"b\", \"answer\": \"2\"}", "duplicate key 'prompt'"},
        {"{\"prompt\": \"1+1=\", \"answer\": \"2\",}", "expected a key string"},
        {"{\"prompt\": \"1+1=\", \"answer\": \"2\"} x", "unexpected text after the object"},
        {"{\"prompt\": \"1+1=\", \"answer\": \"2\"", "expected ',' or '}'"},
        {"{\"prompt\": \"1+1=, \"answer\": \"2\"}", "expected ',' or '}'"},
        {"{\"prompt\": \"1+1=", "unterminated string"},
        {"{\"prompt\": \"a\\q\", \"answer\": \"2\"}", "invalid escape"},
        {"{\"prompt\": \"a\\u12\", \"answer\": \"2\"}", "invalid \\u escape"},
        {"{\"prompt\": \"a\\u0000\", \"answer\": \"2\"}", "NUL byte"},
        {"{\"prompt\": \"a\\ud83d\", \"answer\": \"2\"}", "unpaired UTF-16 surrogate"},
        {"{\"prompt\": \"a\", \"answer\": 01}", "invalid number"},
        {"{\"prompt\": \"a\", \"answer\": 1.}", "no digit after '.'"},
        {"{\"prompt\": \"a\", \"answer\": -}", "invalid number"},
        {"{\"prompt\": \"a\", \"answer\": 2, \"x\": tru}", "invalid JSON value"},
        {"{\"prompt\" \"a\", \"answer\": 2}", "expected ':'"},
        {"{\"prompt\": \"a\tb\", \"answer\": 2}", "control character"},
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        char text[512];
        int n = snprintf(text, sizeof text, "%s%s\n%s", good, bad[k].line, good);
        const char *path = write_file("bad.jsonl", text, (size_t)n);
        cg_task_set *set = (cg_task_set *)1;
        cg_status st = cg_task_set_load_jsonl(path, &set);
        if (st != CG_ERR_FORMAT) fail_msg("line %s: status %d", bad[k].line, (int)st);
        assert_null(set);
        char where[160];
        snprintf(where, sizeof where, "%s:3: ", path);
        assert_error_contains(where);
        assert_error_contains(bad[k].msg);
    }

    /* nesting deeper than the limit inside an ignored key */
    char deep[512];
    int n = snprintf(deep, sizeof deep, "{\"prompt\": \"a\", \"answer\": 2, \"x\": ");
    for (int k = 0; k < 100; k++) deep[n++] = '[';
    for (int k = 0; k < 100; k++) deep[n++] = ']';
    deep[n++] = '}';
    const char *path = write_file("deep.jsonl", deep, (size_t)n);
    cg_task_set *set;
    assert_int_equal(cg_task_set_load_jsonl(path, &set), CG_ERR_FORMAT);
    assert_error_contains(":1: JSON nested too deeply");

    /* a line over the limit (the line after it is fine) */
    size_t long_len = (size_t)CG_TASK_JSONL_MAX_LINE + 100;
    char *big = malloc(long_len + 200);
    assert_non_null(big);
    size_t m = (size_t)sprintf(big, "%s{\"prompt\": \"", good);
    memset(big + m, 'x', long_len);
    m += long_len;
    m += (size_t)sprintf(big + m, "\", \"answer\": 1}\n%s", good);
    path = write_file("long.jsonl", big, m);
    free(big);
    assert_int_equal(cg_task_set_load_jsonl(path, &set), CG_ERR_FORMAT);
    assert_error_contains(":3: line longer than 1048576 bytes");

    /* a NUL byte in a line */
    const char nul_line[] = "{\"prompt\": \"a\", \"answer\": 2}\n{\"prompt\": \"a\0\", \"answer\": 2}\n";
    path = write_file("nul.jsonl", nul_line, sizeof nul_line - 1);
    assert_int_equal(cg_task_set_load_jsonl(path, &set), CG_ERR_FORMAT);
    assert_error_contains(":2: NUL byte");

    /* empty and blank-only files */
    path = write_file("empty.jsonl", "\n  \n", 4);
    assert_int_equal(cg_task_set_load_jsonl(path, &set), CG_ERR_FORMAT);
    assert_error_contains("no tasks");

    /* a missing file */
    char missing[160];
    snprintf(missing, sizeof missing, "%s/does_not_exist.jsonl", tmpdir);
    assert_int_equal(cg_task_set_load_jsonl(missing, &set), CG_ERR_IO);
    assert_error_contains("does_not_exist.jsonl: cannot open task file");
    assert_null(set);
    assert_int_equal(cg_task_set_load_jsonl(NULL, &set), CG_ERR_INVALID_ARG);
}

/* Random byte mutations of a good file: the loader returns OK or a format error naming file:line, never
 * crashes (the sanitizer build checks memory), and a file it accepts has readable items. */
static void test_jsonl_mutations(void **state) {
    (void)state;
    const char base[] = "{\"prompt\": \"12+7=\", \"answer\": \"19\"}\n"
                        "{\"prompt\": \"a\\u00e9\\n\\ud83d\\ude00\", \"answer\": -3.5e2, \"x\": [1, {\"y\": null}]}\n";
    const char alphabet[] = "{}[]\":,\\u0123456789abcdef-+.eE \t\r\ntrue";
    uint64_t rng = 12345;
    char path[160];
    snprintf(path, sizeof path, "%s/mut.jsonl", tmpdir);
    int accepted = 0;
    for (int trial = 0; trial < 1500; trial++) {
        char text[sizeof base];
        memcpy(text, base, sizeof base);
        size_t len = sizeof base - 1;
        int n_mut = 1 + (int)((cg_test_randf(&rng) + 1.0f) * 1.5f);
        for (int m = 0; m < n_mut; m++) {
            size_t at = (size_t)((cg_test_randf(&rng) + 1.0f) * 0.5f * (float)len) % len;
            float kind = cg_test_randf(&rng);
            if (kind < -0.6f) len = at + 1; /* truncate */
            else if (kind < 0.6f)
                text[at] = alphabet[(size_t)((cg_test_randf(&rng) + 1.0f) * 20.0f) % (sizeof alphabet - 1)];
            else text[at] = (char)(int)((cg_test_randf(&rng) + 1.0f) * 127.0f); /* any byte, NUL and >= 0x80 too */
        }
        FILE *f = fopen(path, "wb");
        assert_non_null(f);
        assert_int_equal(fwrite(text, 1, len, f), len);
        fclose(f);
        cg_task_set *set = NULL;
        cg_status st = cg_task_set_load_jsonl(path, &set);
        if (st == CG_OK) {
            accepted++;
            assert_true(cg_task_set_size(set) >= 1 && cg_task_set_size(set) <= 2);
            for (int64_t i = 0; i < cg_task_set_size(set); i++) {
                cg_task_item it;
                assert_ok(cg_task_set_get(set, i, &it));
                cg_task_item_free(&it);
            }
            cg_task_set_free(set);
        } else {
            assert_int_equal(st, CG_ERR_FORMAT);
            assert_null(set);
            assert_error_contains("mut.jsonl:");
        }
    }
    print_message("%d of 1500 mutated files accepted\n", accepted);
    /* some mutations are harmless (inside strings), most are not */
    assert_true(accepted > 20 && accepted < 1450);
}

/* ---------------------------------------------------------------- rewards */

static float reward_str(cg_reward_fn fn, const char *response, const char *answer, void *user) {
    return fn("1+1=", response, response ? strlen(response) : 0, answer, user);
}

static void test_reward_exact_match(void **state) {
    (void)state;
    const struct { const char *response, *answer; float expected; } cases[] = {
        {"19", "19", 1},      {" 19 ", "19", 1},    {"\t19\r", "19", 1},   {"19\n", "19", 1},
        {"19\nmore", "19", 1}, {"19", " 19\n", 1},  {"019", "19", 0},      {"+19", "19", 0},
        {"19.0", "19", 0},    {"1 9", "19", 0},     {"", "19", 0},         {"", "", 0},
        {"\n19", "19", 0},    {"19x", "19", 0},     {"-7", "-7", 1},       {"abc", "abc", 1},
        {"Abc", "abc", 0},    {"19 19", "19", 0}};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        float r = reward_str(cg_reward_exact_match, cases[k].response, cases[k].answer, NULL);
        if (r != cases[k].expected) fail_msg("exact(\"%s\", \"%s\") = %g", cases[k].response, cases[k].answer, r);
    }
    /* response_len is honoured and the text need not end in NUL */
    const char buf[] = {'1', '9', '7'};
    assert_true(cg_reward_exact_match(NULL, buf, 2, "19", NULL) == 1.0f);
    assert_true(cg_reward_exact_match(NULL, buf, 3, "19", NULL) == 0.0f);
    assert_true(cg_reward_exact_match(NULL, "19\0junk", 7, "19", NULL) == 1.0f);
    assert_true(cg_reward_exact_match(NULL, NULL, 5, "19", NULL) == 0.0f);
    assert_true(cg_reward_exact_match(NULL, "19", 2, NULL, NULL) == 0.0f);
    /* a long response: 100k spaces then the answer */
    size_t n = 100000;
    char *lng = malloc(n + 3);
    assert_non_null(lng);
    memset(lng, ' ', n);
    memcpy(lng + n, "19", 3);
    assert_true(cg_reward_exact_match(NULL, lng, n + 2, "19", NULL) == 1.0f);
    lng[5] = 'x';
    assert_true(cg_reward_exact_match(NULL, lng, n + 2, "19", NULL) == 0.0f);
    free(lng);
}

static void test_reward_numeric(void **state) {
    (void)state;
    const struct { const char *response, *answer; float expected; } cases[] = {
        {"19", "19", 1},          {" 19 ", "19", 1},       {"007", "7", 1},         {"7", "007", 1},
        {"+7", "7", 1},           {"-0", "0", 1},          {"0", "-0", 1},          {"-0.000", "0", 1},
        {"-7", "-7", 1},          {"-7", "7", 0},          {"7", "-7", 0},          {"- 7", "-7", 0},
        {"- 7", "7", 1},          {"1 2", "12", 0},        {"1 2", "1", 1},         {"abc", "19", 0},
        {"", "19", 0},            {"x=19.", "19", 1},      {"7.50", "7.5", 1},      {"7.5", "7.05", 0},
        {"3.14", "3.14159", 0},   {"12 13", "13", 0},      {"12 13", "12", 1},      {"foo\n19", "19", 0},
        {"19\n20", "20", 0},      {"19\n20", "19", 1},     {"1,000", "1000", 0},    {".5", "0.5", 0},
        {"0.5", ".5", 1} /* an answer outside the grammar goes through strtod: 0.5 == 0.5 */,
        {"1000", "1e3", 1},       {"1000", "1e3x", 0},     {"19", "abc", 0},        {"19", "", 0},
        {"19", " 19 \n", 1},      {"3-5", "3", 1},         {"the answer is -12.", "-12", 1},
        {"9007199254740993", "9007199254740992", 0},       {"9007199254740993", "9007199254740993", 1},
        {"123456789012345678901234567890", "123456789012345678901234567890", 1},
        {"123456789012345678901234567890", "123456789012345678901234567891", 0}};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        float r = reward_str(cg_reward_numeric, cases[k].response, cases[k].answer, NULL);
        if (r != cases[k].expected) fail_msg("numeric(\"%s\", \"%s\") = %g", cases[k].response, cases[k].answer, r);
    }
    /* tolerances */
    cg_reward_numeric_opts tol = {0.01, 0.0, false};
    assert_true(reward_str(cg_reward_numeric, "3.14", "3.14159", &tol) == 1.0f);
    assert_true(reward_str(cg_reward_numeric, "3.13", "3.14159", &tol) == 0.0f);
    assert_true(reward_str(cg_reward_numeric, "-3.14", "3.14159", &tol) == 0.0f);
    cg_reward_numeric_opts rel = {0.0, 1e-3, false};
    assert_true(reward_str(cg_reward_numeric, "1000.9", "1000", &rel) == 1.0f);
    assert_true(reward_str(cg_reward_numeric, "1001.1", "1000", &rel) == 0.0f);
    assert_true(reward_str(cg_reward_numeric, "garbage", "1000", &rel) == 0.0f);
    /* the last number of the whole response */
    cg_reward_numeric_opts last = {0.0, 0.0, true};
    assert_true(reward_str(cg_reward_numeric, "12 13", "13", &last) == 1.0f);
    assert_true(reward_str(cg_reward_numeric, "think: 3*4=12\nso 12+1 = 13\n", "13", &last) == 1.0f);
    assert_true(reward_str(cg_reward_numeric, "think: 3*4=12\nso 12+1 = 13\n", "12", &last) == 0.0f);
    assert_true(reward_str(cg_reward_numeric, "no numbers", "13", &last) == 0.0f);
    /* response_len, NUL inside, NULL */
    assert_true(cg_reward_numeric(NULL, "1234", 2, "12", NULL) == 1.0f);
    assert_true(cg_reward_numeric(NULL, "19\0 20", 6, "19", NULL) == 1.0f);
    assert_true(cg_reward_numeric(NULL, NULL, 3, "19", NULL) == 0.0f);
    assert_true(cg_reward_numeric(NULL, "19", 2, NULL, NULL) == 0.0f);
    /* very long responses: 1 MB of letters before the number, and a 5000-digit number compared exactly */
    size_t n = 1 << 20;
    char *lng = malloc(n + 5001);
    assert_non_null(lng);
    for (size_t i = 0; i < n; i++) lng[i] = (char)('a' + i % 26);
    memcpy(lng + n, "-42", 4);
    assert_true(cg_reward_numeric(NULL, lng, n + 3, "-42", NULL) == 1.0f);
    assert_true(cg_reward_numeric(NULL, lng, n + 3, "42", NULL) == 0.0f);
    memset(lng, '9', 5000);
    lng[5000] = '\0';
    char *ans = malloc(5001);
    assert_non_null(ans);
    memcpy(ans, lng, 5001);
    assert_true(cg_reward_numeric(NULL, lng, 5000, ans, NULL) == 1.0f);
    ans[4999] = '8';
    assert_true(cg_reward_numeric(NULL, lng, 5000, ans, NULL) == 0.0f);
    assert_true(cg_reward_numeric(NULL, lng, 5000, ans, &tol) == 0.0f); /* inf in double: no match */
    free(ans);
    free(lng);
}

static void test_reward_find_number(void **state) {
    (void)state;
    const struct { const char *text; int start, end; } cases[] = {
        {"19", 0, 2}, {"  -7x", 2, 4}, {"a+3.25b", 1, 6}, {"3.", 0, 1}, {"- 7", 2, 3}, {"1.2.3", 0, 3},
        {"--5", 1, 3}, {"abc", -1, -1}, {"", -1, -1}, {"x.5", 2, 3}};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        size_t s = 99, e = 99;
        bool found = cg_reward_find_number(cases[k].text, strlen(cases[k].text), &s, &e);
        assert_int_equal(found, cases[k].start >= 0);
        if (found) {
            assert_int_equal(s, cases[k].start);
            assert_int_equal(e, cases[k].end);
        }
    }
    assert_int_equal(cg_reward_answer_len("12\n34", 5), 2);
    assert_int_equal(cg_reward_answer_len("1234", 3), 3);
    assert_int_equal(cg_reward_answer_len(NULL, 3), 0);
}

static void test_reward_format(void **state) {
    (void)state;
    const struct { const char *response; float expected; } cases[] = {
        {"19", 1},    {"-19", 1},   {"+19", 1}, {"19\n", 1},  {"19\nxyz", 1}, {"3.5", 1}, {"007", 1},
        {" 19", 0},   {"19 ", 0},   {"19abc", 0}, {"", 0},    {"abc", 0},    {"1 2", 0}, {"3.", 0},
        {"\n19", 0},  {"19\r\n", 0}, {"-", 0},  {"1,000", 0}, {"=19", 0}};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        float r = reward_str(cg_reward_format, cases[k].response, "ignored", NULL);
        if (r != cases[k].expected) fail_msg("format(\"%s\") = %g", cases[k].response, r);
    }
    assert_true(cg_reward_format(NULL, "19xyz", 2, NULL, NULL) == 1.0f);
    assert_true(cg_reward_format(NULL, NULL, 2, NULL, NULL) == 0.0f);
}

/* A driver's own reward: 1 when the response contains the answer reversed, counting its calls. */
typedef struct reversed_state {
    int calls;
    const char *expected_prompt;
} reversed_state;

static float reward_reversed(const char *prompt, const char *response, size_t response_len, const char *answer,
                             void *user) {
    reversed_state *st = user;
    st->calls++;
    assert_string_equal(prompt, st->expected_prompt);
    size_t n = strlen(answer);
    if (response_len != n) return 0.0f;
    for (size_t i = 0; i < n; i++)
        if (response[i] != answer[n - 1 - i]) return 0.0f;
    return 1.0f;
}

static float reward_must_not_run(const char *prompt, const char *response, size_t response_len, const char *answer,
                                 void *user) {
    (void)prompt, (void)response, (void)response_len, (void)answer, (void)user;
    fail_msg("a zero-weight reward was called");
    return 0.0f;
}

static void test_reward_combined(void **state) {
    (void)state;
    reversed_state rs = {0, "1+1="};
    cg_reward_numeric_opts tol = {0.5, 0.0, false};
    const cg_reward terms[] = {{cg_reward_numeric, &tol, 1.0f},
                               {cg_reward_format, NULL, 0.25f},
                               {reward_reversed, &rs, -2.0f},
                               {reward_must_not_run, NULL, 0.0f},
                               {NULL, NULL, 3.0f}};
    int n = (int)(sizeof terms / sizeof terms[0]);
    /* "91" for answer "19": numeric 0, format 1, reversed 1 -> 0 + 0.25 - 2 */
    assert_close(cg_reward_weighted_sum(terms, n, "1+1=", "91", 2, "19"), 0.25 - 2.0, 0, 1e-7);
    /* "19.3": numeric within 0.5 -> 1, format 1, reversed 0 */
    assert_close(cg_reward_weighted_sum(terms, n, "1+1=", "19.3", 4, "19"), 1.25, 0, 1e-7);
    /* " x": nothing */
    assert_close(cg_reward_weighted_sum(terms, n, "1+1=", " x", 2, "19"), 0.0, 0, 0);
    assert_int_equal(rs.calls, 3);
    /* a combination is itself a reward function, and nests */
    cg_reward_list list = {terms, n};
    const cg_reward outer[] = {{cg_reward_combined, &list, 2.0f}, {cg_reward_exact_match, NULL, 0.5f}};
    cg_reward_list outer_list = {outer, 2};
    assert_close(cg_reward_combined("1+1=", "19.3", 4, "19", &outer_list), 2.0 * 1.25 + 0.0, 0, 1e-7);
    assert_close(cg_reward_combined("1+1=", "19", 2, "19", &outer_list), 2.0 * 1.25 + 0.5, 0, 1e-7);
    assert_close(cg_reward_combined("1+1=", "19", 2, "19", NULL), 0.0, 0, 0);
    assert_close(cg_reward_weighted_sum(NULL, 3, "", "19", 2, "19"), 0.0, 0, 0);
}

/* The spec's piecewise formula, written out in double. */
static double overlong_reference(double len, double L_max, double L_cache) {
    if (len <= L_max - L_cache) return 0.0;
    if (len <= L_max) return ((L_max - L_cache) - len) / L_cache;
    return -1.0;
}

static void test_overlong_penalty(void **state) {
    (void)state;
    /* L_max 20, L_cache 4: free up to 16, then -1/4 per token, -1 from 20 on */
    const struct { int64_t len; double expected; } cases[] = {
        {0, 0.0}, {1, 0.0}, {16, 0.0}, {17, -0.25}, {18, -0.5}, {19, -0.75}, {20, -1.0}, {21, -1.0}, {100000, -1.0}};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        assert_close(cg_reward_overlong_penalty(cases[k].len, 20, 4), cases[k].expected, 0, 1e-7);
        double reference = overlong_reference((double)cases[k].len, 20, 4);
        assert_close(cg_reward_overlong_penalty(cases[k].len, 20, 4), reference, 0, 1e-7);
    }
    /* the DAPO paper's setting: 16,384 expected + 4,096 cache = 20,480 */
    assert_close(cg_reward_overlong_penalty(16384, 20480, 4096), 0.0, 0, 0);
    assert_close(cg_reward_overlong_penalty(16385, 20480, 4096), -1.0 / 4096, 1e-6, 0);
    assert_close(cg_reward_overlong_penalty(18432, 20480, 4096), -0.5, 0, 1e-7);
    assert_close(cg_reward_overlong_penalty(20480, 20480, 4096), -1.0, 0, 1e-7);
    assert_close(cg_reward_overlong_penalty(20481, 20480, 4096), -1.0, 0, 0);
    /* the penalty never increases with length and stays in [-1, 0] */
    for (int64_t len = 0; len < 40; len++) {
        float p = cg_reward_overlong_penalty(len, 30, 7), q = cg_reward_overlong_penalty(len + 1, 30, 7);
        assert_true(q <= p && p <= 0.0f && p >= -1.0f);
        assert_close(p, overlong_reference((double)len, 30, 7), 0, 1e-6);
    }
    /* no cache: a hard cut at L_max; a cache longer than L_max counts as L_max */
    assert_close(cg_reward_overlong_penalty(20, 20, 0), 0.0, 0, 0);
    assert_close(cg_reward_overlong_penalty(21, 20, 0), -1.0, 0, 0);
    assert_close(cg_reward_overlong_penalty(21, 20, -5), -1.0, 0, 0);
    assert_close(cg_reward_overlong_penalty(0, 4, 10), 0.0, 0, 0);
    assert_close(cg_reward_overlong_penalty(2, 4, 10), -0.5, 0, 1e-7);
    assert_close(cg_reward_overlong_penalty(5, 4, 10), -1.0, 0, 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_evaluator_itself),
        cmocka_unit_test(test_arith_deterministic),
        cmocka_unit_test(test_arith_levels),
        cmocka_unit_test(test_arith_subtraction_non_negative),
        cmocka_unit_test(test_arith_largest_settings),
        cmocka_unit_test(test_arith_invalid_configs),
        cmocka_unit_test(test_train_heldout_disjoint),
        cmocka_unit_test(test_task_set_arith),
        cmocka_unit_test(test_task_set_from_items),
        cmocka_unit_test(test_jsonl_good),
        cmocka_unit_test(test_jsonl_malformed),
        cmocka_unit_test(test_jsonl_mutations),
        cmocka_unit_test(test_reward_find_number),
        cmocka_unit_test(test_reward_exact_match),
        cmocka_unit_test(test_reward_numeric),
        cmocka_unit_test(test_answer_without_carry),
        cmocka_unit_test(test_reward_format),
        cmocka_unit_test(test_reward_combined),
        cmocka_unit_test(test_overlong_penalty),
    };
    return cmocka_run_group_tests(tests, setup_tmpdir, remove_tmpdir);
}
