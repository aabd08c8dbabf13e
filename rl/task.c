/* Arithmetic problem generator, task sets, the held-out split and the JSONL loader (see task.h). */
#include "rl/task.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"

void cg_task_item_free(cg_task_item *item) {
    if (!item) return;
    free(item->prompt);
    free(item->answer);
    item->prompt = NULL;
    item->answer = NULL;
}

static char *dup_str(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

/* ---------------------------------------------------------------- held-out rule */

bool cg_task_is_heldout(const char *prompt) {
    if (!prompt) return false;
    /* FNV-1a over the bytes, then the splitmix64 finaliser so that the low bits mix every byte. */
    uint64_t h = 0xcbf29ce484222325ull;
    for (const unsigned char *p = (const unsigned char *)prompt; *p; p++) h = (h ^ *p) * 0x100000001b3ull;
    h ^= h >> 30;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 27;
    h *= 0x94d049bb133111ebull;
    h ^= h >> 31;
    return h % CG_TASK_HELDOUT_ONE_IN == 0;
}

static bool split_accepts(cg_task_split split, const char *prompt) {
    if (split == CG_SPLIT_ALL) return true;
    bool held = cg_task_is_heldout(prompt);
    return split == CG_SPLIT_HELDOUT ? held : !held;
}

static const char *split_name(cg_task_split split) {
    return split == CG_SPLIT_TRAIN ? "train" : split == CG_SPLIT_HELDOUT ? "held-out" : "all";
}

/* ---------------------------------------------------------------- arithmetic configs */

cg_arith_config cg_arith_difficulty(int level) {
    if (level < 0) level = 0;
    if (level > CG_ARITH_MAX_LEVEL) level = CG_ARITH_MAX_LEVEL;
    cg_arith_config c = {1, 1, "+-", 2, false, false, level};
    switch (level) {
    case 0:
        break;
    case 1:
        c.max_digits = 2;
        break;
    case 2:
        c.max_digits = 2;
        c.ops = "+-*";
        break;
    case 3:
        c.max_digits = 2;
        c.ops = "+-*";
        c.n_terms = 3;
        break;
    default:
        c.max_digits = 3;
        c.ops = "+-*";
        c.n_terms = 4;
        c.allow_parens = true;
        c.allow_negative = true;
        break;
    }
    return c;
}

cg_status cg_arith_validate(const cg_arith_config *cfg) {
    if (!cfg) return cg_set_error(CG_ERR_INVALID_ARG, "arith config: NULL");
    if (!cfg->ops || !cfg->ops[0]) return cg_set_error(CG_ERR_INVALID_ARG, "arith config: ops is empty");
    bool has_mul = false;
    for (const char *p = cfg->ops; *p; p++) {
        if (*p != '+' && *p != '-' && *p != '*')
            return cg_set_error(CG_ERR_INVALID_ARG, "arith config: ops \"%s\" has '%c'; only + - * are supported",
                                cfg->ops, *p);
        has_mul |= *p == '*';
    }
    if (cfg->min_digits < 1 || cfg->max_digits < cfg->min_digits || cfg->max_digits > CG_ARITH_MAX_DIGITS)
        return cg_set_error(CG_ERR_INVALID_ARG, "arith config: digits %d..%d; need 1 <= min_digits <= max_digits <= %d",
                            cfg->min_digits, cfg->max_digits, CG_ARITH_MAX_DIGITS);
    if (cfg->n_terms < 2 || cfg->n_terms > CG_ARITH_MAX_TERMS)
        return cg_set_error(CG_ERR_INVALID_ARG, "arith config: n_terms %d; need 2..%d", cfg->n_terms,
                            CG_ARITH_MAX_TERMS);
    if (has_mul && cfg->max_digits * cfg->n_terms > 18)
        return cg_set_error(CG_ERR_INVALID_ARG,
                            "arith config: max_digits %d x n_terms %d > 18 with '*': answers could overflow int64",
                            cfg->max_digits, cfg->n_terms);
    if (!has_mul && cfg->max_digits > 17)
        return cg_set_error(CG_ERR_INVALID_ARG, "arith config: max_digits %d > 17: sums could overflow int64",
                            cfg->max_digits);
    return CG_OK;
}

/* ---------------------------------------------------------------- generation */

/* Philox words of one item's stream, drawn in order. */
typedef struct word_source {
    uint64_t key, stream, block;
    uint32_t words[4];
    int used;
} word_source;

/* Keeps the task streams apart from other users of the same seed (model init, sampling). */
#define ARITH_KEY_TAG 0x61726974686d6574ull /* "arithmet" */

static uint32_t next_word(word_source *ws) {
    if (ws->used == 4) {
        cg_rng_block(ws->key, ws->stream, ws->block++, ws->words);
        ws->used = 0;
    }
    return ws->words[ws->used++];
}

/* Uniform in [0, range), 1 <= range <= 2^32. */
static int64_t draw_below(word_source *ws, uint64_t range) { return cg_rng_randint32(next_word(ws), 0, range); }

static int64_t pow10_i64(int e) {
    int64_t v = 1;
    while (e-- > 0) v *= 10;
    return v;
}

/* A flat sequence of items joined by operators; an item is a literal or (the one) parenthesised group. */
typedef struct arith_seq {
    int n;
    bool is_group[CG_ARITH_MAX_TERMS];
    int64_t num[CG_ARITH_MAX_TERMS];
    char op[CG_ARITH_MAX_TERMS]; /* op[k] joins item k and item k + 1 */
} arith_seq;

/* Value with precedence (a sum of signed products), every step overflow-checked. */
static bool eval_seq(const arith_seq *s, int64_t group_value, int64_t *out) {
    int64_t total = 0, prod = s->is_group[0] ? group_value : s->num[0];
    for (int k = 1; k < s->n; k++) {
        int64_t v = s->is_group[k] ? group_value : s->num[k];
        char op = s->op[k - 1];
        if (op == '*') {
            if (__builtin_mul_overflow(prod, v, &prod)) return false;
        } else {
            if (__builtin_add_overflow(total, prod, &total)) return false;
            prod = op == '-' ? -v : v;
        }
    }
    return !__builtin_add_overflow(total, prod, out);
}

/* Makes a sequence of non-negative items non-negative: "x-y" < 0 becomes "y-x"; a longer one has + and -
 * swapped, giving 2 * (first product) - value > 0. */
static bool make_non_negative(arith_seq *s, int64_t group_value, int64_t *value) {
    if (!eval_seq(s, group_value, value)) return false;
    if (*value >= 0) return true;
    if (s->n == 2) {
        bool g = s->is_group[0];
        int64_t x = s->num[0];
        s->is_group[0] = s->is_group[1];
        s->num[0] = s->num[1];
        s->is_group[1] = g;
        s->num[1] = x;
    } else {
        for (int k = 0; k < s->n - 1; k++)
            if (s->op[k] != '*') s->op[k] = s->op[k] == '+' ? '-' : '+';
    }
    return eval_seq(s, group_value, value) && *value >= 0;
}

static size_t render_seq(const arith_seq *s, const arith_seq *group, char *buf, size_t pos) {
    for (int k = 0; k < s->n; k++) {
        if (k > 0) buf[pos++] = s->op[k - 1];
        if (s->is_group[k]) {
            buf[pos++] = '(';
            pos = render_seq(group, NULL, buf, pos);
            buf[pos++] = ')';
        } else {
            pos += (size_t)sprintf(buf + pos, "%" PRId64, s->num[k]);
        }
    }
    return pos;
}

/* 16 operands of 18 digits, 15 operators, parentheses, '=' and NUL. */
#define PROMPT_BUF 400

/* One problem from the next words of ws. */
static cg_status draw_problem(const cg_arith_config *cfg, word_source *ws, char *prompt, char *answer) {
    int n = cfg->n_terms;
    int group_len = 0, group_start = 0;
    if (cfg->allow_parens && n >= 3 && draw_below(ws, 2) == 1) {
        group_len = 2 + (int)draw_below(ws, (uint64_t)(n - 2)); /* 2 .. n-1 */
        group_start = (int)draw_below(ws, (uint64_t)(n - group_len + 1));
    }
    int64_t operands[CG_ARITH_MAX_TERMS];
    for (int j = 0; j < n; j++) {
        int digits = cfg->min_digits + (int)draw_below(ws, (uint64_t)(cfg->max_digits - cfg->min_digits + 1));
        int64_t lo = digits == 1 ? 0 : pow10_i64(digits - 1), hi = pow10_i64(digits) - 1;
        uint32_t w0 = next_word(ws), w1 = next_word(ws);
        operands[j] = cg_rng_randint64(w0, w1, lo, (uint64_t)(hi - lo + 1));
    }
    size_t n_ops = strlen(cfg->ops);
    char ops[CG_ARITH_MAX_TERMS];
    for (int j = 0; j < n - 1; j++) ops[j] = cfg->ops[draw_below(ws, n_ops)];

    /* Split the flat text into the top level and the group, in textual order. */
    arith_seq top = {0}, group = {0};
    for (int j = 0; j < n; j++) {
        bool in_group = group_len > 0 && j >= group_start && j < group_start + group_len;
        if (in_group) {
            group.num[group.n++] = operands[j];
            if (j == group_start) top.is_group[top.n++] = true;
            if (j + 1 < group_start + group_len) group.op[group.n - 1] = ops[j];
            else if (j + 1 < n) top.op[top.n - 1] = ops[j];
        } else {
            top.num[top.n++] = operands[j];
            if (j + 1 < n) top.op[top.n - 1] = ops[j];
        }
    }
    int64_t group_value = 0, value;
    bool ok = true;
    if (group_len > 0)
        ok = cfg->allow_negative ? eval_seq(&group, 0, &group_value) : make_non_negative(&group, 0, &group_value);
    if (ok)
        ok = cfg->allow_negative ? eval_seq(&top, group_value, &value) : make_non_negative(&top, group_value, &value);
    if (!ok) return cg_set_error(CG_ERR_INTERNAL, "arith: an expression left int64 despite the digit limits");
    size_t len = render_seq(&top, &group, prompt, 0);
    prompt[len++] = '=';
    prompt[len] = '\0';
    sprintf(answer, "%" PRId64, value);
    return CG_OK;
}

/* Mixed into the Philox key so that two configs give unrelated streams (level 0 and level 1 would
 * otherwise share every problem whose digit draws agree). The difficulty label is left out. */
static uint64_t config_hash(const cg_arith_config *cfg) {
    uint64_t h = 0xcbf29ce484222325ull;
    const int fields[] = {cfg->min_digits, cfg->max_digits, cfg->n_terms, cfg->allow_negative, cfg->allow_parens};
    for (size_t k = 0; k < sizeof fields / sizeof fields[0]; k++)
        h = (h ^ (uint64_t)(uint32_t)fields[k]) * 0x100000001b3ull;
    for (const char *p = cfg->ops; *p; p++) h = (h ^ (unsigned char)*p) * 0x100000001b3ull;
    return h;
}

/* Upper bound on draws per item: a split that finds nothing in this many draws is (almost) empty. */
#define MAX_DRAWS_PER_ITEM 4096

cg_status cg_arith_generate_split(const cg_arith_config *cfg, uint64_t seed, cg_task_split split, int64_t index,
                                  cg_task_item *out) {
    if (!out) return cg_set_error(CG_ERR_INVALID_ARG, "arith generate: NULL output");
    out->prompt = out->answer = NULL;
    cg_status st = cg_arith_validate(cfg);
    if (st != CG_OK) return st;
    if (index < 0) return cg_set_error(CG_ERR_INVALID_ARG, "arith generate: negative index %" PRId64, index);
    if (split != CG_SPLIT_ALL && split != CG_SPLIT_TRAIN && split != CG_SPLIT_HELDOUT)
        return cg_set_error(CG_ERR_INVALID_ARG, "arith generate: unknown split %d", (int)split);
    word_source ws = {seed ^ ARITH_KEY_TAG ^ config_hash(cfg), (uint64_t)index, 0, {0}, 4};
    char prompt[PROMPT_BUF], answer[32];
    for (int attempt = 0; attempt < MAX_DRAWS_PER_ITEM; attempt++) {
        st = draw_problem(cfg, &ws, prompt, answer);
        if (st != CG_OK) return st;
        if (!split_accepts(split, prompt)) continue;
        out->prompt = dup_str(prompt);
        out->answer = dup_str(answer);
        if (!out->prompt || !out->answer) {
            cg_task_item_free(out);
            return cg_set_error(CG_ERR_OOM, "arith generate: out of memory");
        }
        return CG_OK;
    }
    return cg_set_error(CG_ERR_INVALID_ARG,
                        "arith generate: no %s problem in %d draws: the config has too few distinct problems "
                        "for a held-out split (widen digits, ops or terms)",
                        split_name(split), MAX_DRAWS_PER_ITEM);
}

cg_status cg_arith_generate(const cg_arith_config *cfg, uint64_t seed, int64_t index, cg_task_item *out) {
    return cg_arith_generate_split(cfg, seed, CG_SPLIT_TRAIN, index, out);
}

/* ---------------------------------------------------------------- task sets */

typedef enum set_kind { SET_ARITH, SET_LIST } set_kind;

struct cg_task_set {
    set_kind kind;
    /* SET_ARITH */
    cg_arith_config cfg;
    char *ops; /* owned copy of cfg.ops */
    uint64_t seed;
    cg_task_split split;
    /* SET_LIST */
    int64_t n;
    char **prompts, **answers;
    char *desc;
};

void cg_task_set_free(cg_task_set *set) {
    if (!set) return;
    free(set->ops);
    for (int64_t i = 0; i < set->n; i++) {
        free(set->prompts[i]);
        free(set->answers[i]);
    }
    free(set->prompts);
    free(set->answers);
    free(set->desc);
    free(set);
}

static cg_status set_describe(cg_task_set *set, const char *fmt_path) {
    char buf[512];
    if (set->kind == SET_ARITH) {
        const cg_arith_config *c = &set->cfg;
        char level[32] = "";
        if (c->difficulty >= 0) snprintf(level, sizeof level, " level %d", c->difficulty);
        snprintf(buf, sizeof buf, "arith%s (digits %d-%d, ops %s, %d terms%s%s), %s split, seed %" PRIu64, level,
                 c->min_digits, c->max_digits, c->ops, c->n_terms, c->allow_parens ? ", parentheses" : "",
                 c->allow_negative ? ", negatives" : "", split_name(set->split), set->seed);
    } else {
        snprintf(buf, sizeof buf, "%s (%" PRId64 " tasks)", fmt_path, set->n);
    }
    set->desc = dup_str(buf);
    return set->desc ? CG_OK : cg_set_error(CG_ERR_OOM, "task set: out of memory");
}

static cg_status arith_set(const cg_arith_config *cfg, uint64_t seed, cg_task_split split, cg_task_set **out) {
    cg_task_set *set = calloc(1, sizeof *set);
    if (!set) return cg_set_error(CG_ERR_OOM, "task set: out of memory");
    set->kind = SET_ARITH;
    set->cfg = *cfg;
    set->ops = dup_str(cfg->ops);
    set->cfg.ops = set->ops;
    set->seed = seed;
    set->split = split;
    if (!set->ops) {
        cg_task_set_free(set);
        return cg_set_error(CG_ERR_OOM, "task set: out of memory");
    }
    cg_status st = set_describe(set, NULL);
    if (st != CG_OK) {
        cg_task_set_free(set);
        return st;
    }
    *out = set;
    return CG_OK;
}

cg_status cg_task_set_arith(const cg_arith_config *cfg, uint64_t seed, cg_task_set **out) {
    if (!out) return cg_set_error(CG_ERR_INVALID_ARG, "task set arith: NULL output");
    *out = NULL;
    cg_status st = cg_arith_validate(cfg);
    if (st != CG_OK) return st;
    return arith_set(cfg, seed, CG_SPLIT_TRAIN, out);
}

/* A growing list of owned strings. */
typedef struct item_list {
    int64_t n, cap;
    char **prompts, **answers;
} item_list;

static void list_release(item_list *l) {
    for (int64_t i = 0; i < l->n; i++) {
        free(l->prompts[i]);
        free(l->answers[i]);
    }
    free(l->prompts);
    free(l->answers);
    memset(l, 0, sizeof *l);
}

/* Takes ownership of prompt and answer (freed on failure too). */
static cg_status list_push(item_list *l, char *prompt, char *answer) {
    if (l->n == l->cap) {
        int64_t cap = l->cap ? 2 * l->cap : 64;
        char **p = realloc(l->prompts, (size_t)cap * sizeof *p);
        if (p) l->prompts = p;
        char **a = p ? realloc(l->answers, (size_t)cap * sizeof *a) : NULL;
        if (a) l->answers = a;
        if (!p || !a) {
            free(prompt);
            free(answer);
            return cg_set_error(CG_ERR_OOM, "task set: out of memory for %" PRId64 " tasks", cap);
        }
        l->cap = cap;
    }
    l->prompts[l->n] = prompt;
    l->answers[l->n] = answer;
    l->n++;
    return CG_OK;
}

static cg_status list_push_copy(item_list *l, const char *prompt, const char *answer) {
    char *p = dup_str(prompt), *a = dup_str(answer);
    if (p && a) return list_push(l, p, a);
    free(p);
    free(a);
    return cg_set_error(CG_ERR_OOM, "task set: out of memory");
}

static cg_status list_set(item_list *l, const char *name, cg_task_set **out) {
    cg_task_set *set = calloc(1, sizeof *set);
    if (!set) {
        list_release(l);
        return cg_set_error(CG_ERR_OOM, "task set: out of memory");
    }
    set->kind = SET_LIST;
    set->n = l->n;
    set->prompts = l->prompts;
    set->answers = l->answers;
    memset(l, 0, sizeof *l);
    cg_status st = set_describe(set, name);
    if (st != CG_OK) {
        cg_task_set_free(set);
        return st;
    }
    *out = set;
    return CG_OK;
}

cg_status cg_task_set_from_items(const cg_task_item *items, int64_t n, cg_task_set **out) {
    if (!out) return cg_set_error(CG_ERR_INVALID_ARG, "task set from items: NULL output");
    *out = NULL;
    if (!items || n < 1)
        return cg_set_error(CG_ERR_INVALID_ARG, "task set from items: need n >= 1 items (n = %" PRId64 ")", n);
    item_list l = {0};
    for (int64_t i = 0; i < n; i++) {
        cg_status st = items[i].prompt && items[i].answer
                           ? list_push_copy(&l, items[i].prompt, items[i].answer)
                           : cg_set_error(CG_ERR_INVALID_ARG, "task set from items: item %" PRId64 " has a NULL string", i);
        if (st != CG_OK) {
            list_release(&l);
            return st;
        }
    }
    return list_set(&l, "items", out);
}

cg_status cg_task_set_split(const cg_task_set *src, cg_task_split split, cg_task_set **out) {
    if (!out) return cg_set_error(CG_ERR_INVALID_ARG, "task set split: NULL output");
    *out = NULL;
    if (!src) return cg_set_error(CG_ERR_INVALID_ARG, "task set split: NULL set");
    if (split != CG_SPLIT_ALL && split != CG_SPLIT_TRAIN && split != CG_SPLIT_HELDOUT)
        return cg_set_error(CG_ERR_INVALID_ARG, "task set split: unknown split %d", (int)split);
    if (src->kind == SET_ARITH) return arith_set(&src->cfg, src->seed, split, out);
    item_list l = {0};
    for (int64_t i = 0; i < src->n; i++) {
        if (!split_accepts(split, src->prompts[i])) continue;
        cg_status st = list_push_copy(&l, src->prompts[i], src->answers[i]);
        if (st != CG_OK) {
            list_release(&l);
            return st;
        }
    }
    if (l.n == 0)
        return cg_set_error(CG_ERR_INVALID_ARG, "task set split: %s has no %s task", src->desc, split_name(split));
    /* Keep the source's name in the description. */
    char name[400];
    snprintf(name, sizeof name, "%.300s, %s split", src->desc, split_name(split));
    return list_set(&l, name, out);
}

int64_t cg_task_set_size(const cg_task_set *set) {
    if (!set) return -1;
    return set->kind == SET_ARITH ? INT64_MAX : set->n;
}

cg_status cg_task_set_get(const cg_task_set *set, int64_t i, cg_task_item *out) {
    if (!out) return cg_set_error(CG_ERR_INVALID_ARG, "task set get: NULL output");
    out->prompt = out->answer = NULL;
    if (!set) return cg_set_error(CG_ERR_INVALID_ARG, "task set get: NULL set");
    if (set->kind == SET_ARITH) return cg_arith_generate_split(&set->cfg, set->seed, set->split, i, out);
    if (i < 0 || i >= set->n)
        return cg_set_error(CG_ERR_INVALID_ARG, "task set get: index %" PRId64 " out of range [0, %" PRId64 ") of %s",
                            i, set->n, set->desc);
    out->prompt = dup_str(set->prompts[i]);
    out->answer = dup_str(set->answers[i]);
    if (!out->prompt || !out->answer) {
        cg_task_item_free(out);
        return cg_set_error(CG_ERR_OOM, "task set get: out of memory");
    }
    return CG_OK;
}

const char *cg_task_set_describe(const cg_task_set *set) { return set && set->desc ? set->desc : "(null task set)"; }

/* ---------------------------------------------------------------- JSONL */

/* A cursor over one line, with what error messages need. */
typedef struct json_line {
    const char *s;
    size_t n, pos;
    const char *path;
    int64_t line;
} json_line;

#define MAX_JSON_DEPTH 64

/* "path:line: msg arg (column c)". */
static cg_status line_error(const json_line *j, const char *msg, const char *arg) {
    return cg_set_error(CG_ERR_FORMAT, "%s:%" PRId64 ": %s%s (column %zu)", j->path, j->line, msg, arg ? arg : "",
                        j->pos + 1);
}

static void skip_ws(json_line *j) {
    while (j->pos < j->n && (j->s[j->pos] == ' ' || j->s[j->pos] == '\t' || j->s[j->pos] == '\r')) j->pos++;
}

static int peek(const json_line *j) { return j->pos < j->n ? (unsigned char)j->s[j->pos] : -1; }

static const char *value_type(int c) {
    switch (c) {
    case '{': return "object";
    case '[': return "array";
    case '"': return "string";
    case 't':
    case 'f': return "bool";
    case 'n': return "null";
    case -1: return "end of line";
    default: return (c == '-' || (c >= '0' && c <= '9')) ? "number" : "invalid JSON";
    }
}

static int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static bool read_hex4(json_line *j, uint32_t *out) {
    if (j->pos + 4 > j->n) return false;
    uint32_t v = 0;
    for (int k = 0; k < 4; k++) {
        int d = hex_digit(j->s[j->pos + (size_t)k]);
        if (d < 0) return false;
        v = v << 4 | (uint32_t)d;
    }
    j->pos += 4;
    *out = v;
    return true;
}

/* Parses a string at j->pos (which is '"'). If out is not NULL, the decoded UTF-8 is malloc'd there.
 * Decoding never lengthens the text (\uXXXX: 6 bytes -> at most 3), so the raw length bounds the buffer. */
static cg_status parse_string(json_line *j, char **out) {
    j->pos++; /* opening quote */
    char *buf = NULL;
    if (out) {
        buf = malloc(j->n - j->pos + 1);
        if (!buf) return cg_set_error(CG_ERR_OOM, "%s:%" PRId64 ": out of memory", j->path, j->line);
    }
    size_t k = 0;
    cg_status st = CG_OK;
    for (;;) {
        if (j->pos >= j->n) {
            st = line_error(j, "unterminated string", NULL);
            break;
        }
        unsigned char c = (unsigned char)j->s[j->pos];
        if (c == '"') {
            j->pos++;
            break;
        }
        if (c < 0x20) {
            st = line_error(j, "control character in a string", NULL);
            break;
        }
        if (c != '\\') {
            if (buf) buf[k++] = (char)c;
            j->pos++;
            continue;
        }
        j->pos++;
        int e = peek(j);
        j->pos++;
        const char *simple = strchr("\"\\/bfnrt", e > 0 ? e : 'x');
        if (e > 0 && simple) {
            static const char decoded[] = "\"\\/\b\f\n\r\t";
            if (buf) buf[k++] = decoded[simple - "\"\\/bfnrt"];
            continue;
        }
        if (e != 'u') {
            j->pos--;
            st = line_error(j, "invalid escape in a string", NULL);
            break;
        }
        uint32_t cp;
        if (!read_hex4(j, &cp)) {
            st = line_error(j, "invalid \\u escape", NULL);
            break;
        }
        if (cp >= 0xD800 && cp < 0xDC00) { /* a high surrogate must be followed by a low one */
            uint32_t lo = 0;
            bool escape_follows = j->pos + 2 <= j->n && j->s[j->pos] == '\\' && j->s[j->pos + 1] == 'u';
            if (escape_follows) j->pos += 2;
            if (!escape_follows || !read_hex4(j, &lo) || lo < 0xDC00 || lo > 0xDFFF) {
                st = line_error(j, "unpaired UTF-16 surrogate in a \\u escape", NULL);
                break;
            }
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
            st = line_error(j, "unpaired UTF-16 surrogate in a \\u escape", NULL);
            break;
        }
        if (cp == 0) {
            st = line_error(j, "\\u0000 (a NUL byte) in a string", NULL);
            break;
        }
        if (buf) {
            if (cp < 0x80) {
                buf[k++] = (char)cp;
            } else if (cp < 0x800) {
                buf[k++] = (char)(0xC0 | cp >> 6);
                buf[k++] = (char)(0x80 | (cp & 0x3F));
            } else if (cp < 0x10000) {
                buf[k++] = (char)(0xE0 | cp >> 12);
                buf[k++] = (char)(0x80 | (cp >> 6 & 0x3F));
                buf[k++] = (char)(0x80 | (cp & 0x3F));
            } else {
                buf[k++] = (char)(0xF0 | cp >> 18);
                buf[k++] = (char)(0x80 | (cp >> 12 & 0x3F));
                buf[k++] = (char)(0x80 | (cp >> 6 & 0x3F));
                buf[k++] = (char)(0x80 | (cp & 0x3F));
            }
        }
    }
    if (st != CG_OK) {
        free(buf);
        return st;
    }
    if (buf) {
        buf[k] = '\0';
        *out = buf;
    }
    return CG_OK;
}

static size_t skip_digits(json_line *j) {
    size_t start = j->pos;
    while (j->pos < j->n && j->s[j->pos] >= '0' && j->s[j->pos] <= '9') j->pos++;
    return j->pos - start;
}

/* A JSON number at j->pos: -? (0 | [1-9][0-9]*) (.[0-9]+)? ([eE][+-]?[0-9]+)? */
static cg_status parse_number(json_line *j) {
    size_t start = j->pos;
    if (peek(j) == '-') j->pos++;
    if (peek(j) == '0') {
        j->pos++;
    } else if (skip_digits(j) == 0) {
        j->pos = start;
        return line_error(j, "invalid number", NULL);
    }
    if (peek(j) == '.') {
        j->pos++;
        if (skip_digits(j) == 0) return line_error(j, "invalid number: no digit after '.'", NULL);
    }
    if (peek(j) == 'e' || peek(j) == 'E') {
        j->pos++;
        if (peek(j) == '+' || peek(j) == '-') j->pos++;
        if (skip_digits(j) == 0) return line_error(j, "invalid number: no digit in the exponent", NULL);
    }
    int c = peek(j);
    if (c >= 0 && (c == '.' || c == 'e' || c == 'E' || (c >= '0' && c <= '9')))
        return line_error(j, "invalid number", NULL);
    return CG_OK;
}

static cg_status skip_value(json_line *j, int depth) {
    if (depth > MAX_JSON_DEPTH) return line_error(j, "JSON nested too deeply", NULL);
    skip_ws(j);
    int c = peek(j);
    if (c == '"') return parse_string(j, NULL);
    if (c == '-' || (c >= '0' && c <= '9')) return parse_number(j);
    static const char *const words[] = {"true", "false", "null"};
    for (int w = 0; w < 3; w++) {
        size_t len = strlen(words[w]);
        if (j->n - j->pos >= len && memcmp(j->s + j->pos, words[w], len) == 0) {
            j->pos += len;
            return CG_OK;
        }
    }
    if (c != '[' && c != '{') return line_error(j, "invalid JSON value", NULL);
    char close = c == '[' ? ']' : '}';
    j->pos++;
    skip_ws(j);
    if (peek(j) == close) {
        j->pos++;
        return CG_OK;
    }
    for (;;) {
        cg_status st;
        if (close == '}') {
            skip_ws(j);
            if (peek(j) != '"') return line_error(j, "expected a key string", NULL);
            if ((st = parse_string(j, NULL)) != CG_OK) return st;
            skip_ws(j);
            if (peek(j) != ':') return line_error(j, "expected ':'", NULL);
            j->pos++;
        }
        if ((st = skip_value(j, depth + 1)) != CG_OK) return st;
        skip_ws(j);
        if (peek(j) == ',') {
            j->pos++;
            continue;
        }
        if (peek(j) == close) {
            j->pos++;
            return CG_OK;
        }
        return line_error(j, close == '}' ? "expected ',' or '}'" : "expected ',' or ']'", NULL);
    }
}

static char *dup_range(const char *s, size_t n) {
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

/* One task object; on success *prompt and *answer are malloc'd. */
static cg_status parse_task_line(json_line *j, char **prompt, char **answer) {
    *prompt = *answer = NULL;
    cg_status st = CG_OK;
    skip_ws(j);
    if (peek(j) != '{')
        return line_error(j, "not a JSON object: a line must be {\"prompt\": ..., \"answer\": ...}", NULL);
    j->pos++;
    skip_ws(j);
    if (peek(j) == '}') {
        j->pos++;
    } else {
        for (;;) {
            skip_ws(j);
            if (peek(j) != '"') {
                st = line_error(j, "expected a key string", NULL);
                break;
            }
            char *key = NULL;
            if ((st = parse_string(j, &key)) != CG_OK) break;
            skip_ws(j);
            if (peek(j) != ':') {
                free(key);
                st = line_error(j, "expected ':'", NULL);
                break;
            }
            j->pos++;
            skip_ws(j);
            int c = peek(j);
            if (strcmp(key, "prompt") == 0 || strcmp(key, "answer") == 0) {
                bool is_prompt = key[0] == 'p';
                char **dst = is_prompt ? prompt : answer;
                if (*dst) {
                    st = line_error(j, "duplicate key ", is_prompt ? "'prompt'" : "'answer'");
                } else if (c == '"') {
                    st = parse_string(j, dst);
                } else if (!is_prompt && (c == '-' || (c >= '0' && c <= '9'))) {
                    size_t start = j->pos;
                    st = parse_number(j);
                    if (st == CG_OK && !(*dst = dup_range(j->s + start, j->pos - start)))
                        st = cg_set_error(CG_ERR_OOM, "%s:%" PRId64 ": out of memory", j->path, j->line);
                } else {
                    st = line_error(j,
                                    is_prompt ? "'prompt' must be a string, got "
                                              : "'answer' must be a string or a number, got ",
                                    value_type(c));
                }
            } else {
                st = skip_value(j, 1);
            }
            free(key);
            if (st != CG_OK) break;
            skip_ws(j);
            if (peek(j) == ',') {
                j->pos++;
                continue;
            }
            if (peek(j) == '}') {
                j->pos++;
                break;
            }
            st = line_error(j, "expected ',' or '}'", NULL);
            break;
        }
    }
    if (st == CG_OK) {
        skip_ws(j);
        if (j->pos < j->n) st = line_error(j, "unexpected text after the object", NULL);
        else if (!*prompt) st = line_error(j, "missing key ", "'prompt'");
        else if (!*answer) st = line_error(j, "missing key ", "'answer'");
    }
    if (st != CG_OK) {
        free(*prompt);
        free(*answer);
        *prompt = *answer = NULL;
    }
    return st;
}

/* Reads one line (without its '\n') into *buf. Returns false at end of file with nothing read. Bytes past
 * CG_TASK_JSONL_MAX_LINE are consumed but not kept, and *too_long is set. */
static bool read_line(FILE *f, char **buf, size_t *cap, size_t *len, bool *too_long, bool *has_nul) {
    *len = 0;
    *too_long = *has_nul = false;
    int c;
    bool any = false;
    while ((c = getc(f)) != EOF) {
        any = true;
        if (c == '\n') break;
        if (c == '\0') *has_nul = true;
        if (*len >= (size_t)CG_TASK_JSONL_MAX_LINE) {
            *too_long = true;
            continue;
        }
        if (*len + 1 >= *cap) {
            size_t ncap = *cap ? 2 * *cap : 4096;
            char *nb = realloc(*buf, ncap);
            if (!nb) {
                *too_long = true; /* reported as too long: the line cannot be held */
                continue;
            }
            *buf = nb;
            *cap = ncap;
        }
        (*buf)[(*len)++] = (char)c;
    }
    return any;
}

cg_status cg_task_set_load_jsonl(const char *path, cg_task_set **out) {
    if (!out) return cg_set_error(CG_ERR_INVALID_ARG, "task set load: NULL output");
    *out = NULL;
    if (!path) return cg_set_error(CG_ERR_INVALID_ARG, "task set load: NULL path");
    FILE *f = fopen(path, "rb");
    if (!f) return cg_set_error(CG_ERR_IO, "%s: cannot open task file: %s", path, strerror(errno));
    item_list l = {0};
    char *buf = NULL;
    size_t cap = 0, len;
    bool too_long, has_nul;
    cg_status st = CG_OK;
    for (int64_t line = 1; read_line(f, &buf, &cap, &len, &too_long, &has_nul); line++) {
        if (too_long) {
            st = cg_set_error(CG_ERR_FORMAT, "%s:%" PRId64 ": line longer than %" PRId64 " bytes", path, line,
                              CG_TASK_JSONL_MAX_LINE);
            break;
        }
        if (has_nul) {
            st = cg_set_error(CG_ERR_FORMAT, "%s:%" PRId64 ": NUL byte in the line", path, line);
            break;
        }
        json_line j = {buf, len, 0, path, line};
        skip_ws(&j);
        if (j.pos == len) continue; /* blank line */
        char *prompt, *answer;
        if ((st = parse_task_line(&j, &prompt, &answer)) != CG_OK) break;
        if ((st = list_push(&l, prompt, answer)) != CG_OK) break;
    }
    if (st == CG_OK && ferror(f)) st = cg_set_error(CG_ERR_IO, "%s: read error: %s", path, strerror(errno));
    fclose(f);
    free(buf);
    if (st == CG_OK && l.n == 0) st = cg_set_error(CG_ERR_FORMAT, "%s: no tasks in the file", path);
    if (st != CG_OK) {
        list_release(&l);
        return st;
    }
    return list_set(&l, path, out);
}

/* ---------------------------------------------------------------- the sloppy pupil */

cg_status cg_arith_answer_without_carry(const char *prompt, char *out, size_t out_size) {
    if (!prompt || !out || out_size == 0) return cg_set_error(CG_ERR_INVALID_ARG, "answer without carry: NULL argument");
    char a[CG_ARITH_MAX_DIGITS + 1], b[CG_ARITH_MAX_DIGITS + 1], op = 0;
    size_t na = 0, nb = 0;
    const char *p = prompt;
    while (*p >= '0' && *p <= '9' && na < CG_ARITH_MAX_DIGITS) a[na++] = *p++;
    if (*p == '+' || *p == '-') op = *p++;
    while (*p >= '0' && *p <= '9' && nb < CG_ARITH_MAX_DIGITS) b[nb++] = *p++;
    if (na == 0 || nb == 0 || !op || strcmp(p, "=") != 0)
        return cg_set_error(CG_ERR_INVALID_ARG, "answer without carry: prompt \"%.40s\" is not \"a+b=\" or \"a-b=\"",
                            prompt);
    if (op == '-' && (na < nb || (na == nb && memcmp(a, b, na) < 0)))
        return cg_set_error(CG_ERR_INVALID_ARG, "answer without carry: \"%.40s\" has a negative result", prompt);
    size_t n = na > nb ? na : nb;
    char digits[CG_ARITH_MAX_DIGITS + 1];
    for (size_t i = 0; i < n; i++) { /* column i from the right */
        int da = i < na ? a[na - 1 - i] - '0' : 0, db = i < nb ? b[nb - 1 - i] - '0' : 0;
        int d = op == '+' ? (da + db) % 10 : (da - db + 10) % 10;
        digits[n - 1 - i] = (char)('0' + d);
    }
    size_t first = 0;
    while (first + 1 < n && digits[first] == '0') first++;
    if (n - first + 1 > out_size) return cg_set_error(CG_ERR_INVALID_ARG, "answer without carry: output buffer too small");
    memcpy(out, digits + first, n - first);
    out[n - first] = 0;
    return CG_OK;
}
