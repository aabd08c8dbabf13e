/* Loading a Hugging Face tokenizer.json (byte-level BPE) into a cg_tokenizer: the model's vocabulary and
 * merges, added tokens, the normalizer, the pre-tokenizer regexes (compiled with PCRE2) and the decoder.
 * Every rejected input names the file and the JSON path of the problem. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/json.h"
#include "models/tokenizer_internal.h"

#ifdef CG_HAVE_PCRE2
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#endif

void cg_tok_free_steps(cg_pretok_step *steps, int n) {
    if (!steps) return;
#ifdef CG_HAVE_PCRE2
    for (int i = 0; i < n; i++) pcre2_code_free((pcre2_code *)steps[i].regex);
#else
    (void)n;
#endif
    free(steps);
}

#if defined(CG_HAVE_PCRE2) && defined(CG_HAVE_CJSON)

/* GPT-2's split regex, used by a ByteLevel pre-tokenizer with use_regex true. */
static const char gpt2_pattern[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

/* ---------------------------------------------------------------- small JSON helpers */

/* obj[key] or NULL (also NULL when obj is not an object). */
static const cJSON *get(const cJSON *obj, const char *key) {
    return cJSON_IsObject(obj) ? cJSON_GetObjectItemCaseSensitive(obj, key) : NULL;
}

static bool is_absent(const cJSON *it) { return !it || cJSON_IsNull(it); }

/* A printable, shortened copy of a token for messages. */
static const char *shown(const char *s, char *buf, size_t n) {
    size_t len = strlen(s);
    snprintf(buf, n, "%.60s%s", s, len > 60 ? "..." : "");
    return buf;
}

/* An optional boolean member; wrong types are errors naming path.key. */
static cg_status opt_bool(const char *what, const cJSON *obj, const char *path, const char *key, bool def, bool *out) {
    const cJSON *it = get(obj, key);
    if (is_absent(it)) {
        *out = def;
        return CG_OK;
    }
    if (!cJSON_IsBool(it))
        return cg_set_error(CG_ERR_FORMAT, "%s: %s.%s must be true or false, got %s", what, path, key,
                            cg_json_type_name(it));
    *out = cJSON_IsTrue(it);
    return CG_OK;
}

/* The "type" string of a component at path (an object). */
static cg_status type_of(const char *what, const cJSON *obj, const char *path, const char **type) {
    if (!cJSON_IsObject(obj))
        return cg_set_error(CG_ERR_FORMAT, "%s: %s must be an object, got %s", what, path, cg_json_type_name(obj));
    const cJSON *t = get(obj, "type");
    if (!cJSON_IsString(t))
        return cg_set_error(CG_ERR_FORMAT, "%s: %s.type is %s (a string naming the component is required)", what, path,
                            t ? cg_json_type_name(t) : "missing");
    *type = t->valuestring;
    return CG_OK;
}

/* ---------------------------------------------------------------- regexes */

static cg_status compile_regex(const char *what, const char *path, const char *pattern, size_t len, bool literal,
                               void **out) {
    int err = 0;
    PCRE2_SIZE off = 0;
    uint32_t opts = PCRE2_UTF | PCRE2_UCP | (literal ? PCRE2_LITERAL : 0);
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, len, opts, &err, &off, NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        if (pcre2_get_error_message(err, msg, sizeof msg) < 0) snprintf((char *)msg, sizeof msg, "error %d", err);
        return cg_set_error(CG_ERR_FORMAT, "%s: %s: the regex does not compile (PCRE2 at offset %zu: %s)", what, path,
                            (size_t)off, (const char *)msg);
    }
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* best effort: pcre2_match falls back to the interpreter */
    *out = re;
    return CG_OK;
}

static cg_status parse_byte_level(const char *what, const cJSON *obj, const char *path, cg_pretok_step *step) {
    bool use_regex;
    cg_status st = opt_bool(what, obj, path, "add_prefix_space", true, &step->add_prefix_space);
    if (st == CG_OK) st = opt_bool(what, obj, path, "use_regex", true, &use_regex);
    if (st != CG_OK) return st;
    step->byte_level = true;
    if (!use_regex) return CG_OK;
    char p[160];
    snprintf(p, sizeof p, "%s (GPT-2 regex)", path);
    return compile_regex(what, p, gpt2_pattern, sizeof gpt2_pattern - 1, false, &step->regex);
}

static cg_status parse_split(const char *what, const cJSON *obj, const char *path, cg_pretok_step *step) {
    const cJSON *pat = get(obj, "pattern");
    const cJSON *re = get(pat, "Regex"), *lit = get(pat, "String");
    if (!cJSON_IsString(re) && !cJSON_IsString(lit))
        return cg_set_error(CG_ERR_FORMAT, "%s: %s.pattern must be {\"Regex\": \"...\"} or {\"String\": \"...\"}", what,
                            path);
    const cJSON *beh = get(obj, "behavior");
    if (!cJSON_IsString(beh)) return cg_set_error(CG_ERR_FORMAT, "%s: %s.behavior must be a string", what, path);
    if (strcmp(beh->valuestring, "Isolated") != 0)
        return cg_set_error(CG_ERR_UNSUPPORTED, "%s: %s.behavior '%s' is not supported (only Isolated)", what, path,
                            beh->valuestring);
    bool invert;
    cg_status st = opt_bool(what, obj, path, "invert", false, &invert);
    if (st != CG_OK) return st;
    if (invert) return cg_set_error(CG_ERR_UNSUPPORTED, "%s: %s.invert true is not supported", what, path);
    const char *s = cJSON_IsString(re) ? re->valuestring : lit->valuestring;
    char p[160];
    snprintf(p, sizeof p, "%s.pattern.%s", path, cJSON_IsString(re) ? "Regex" : "String");
    step->byte_level = false;
    return compile_regex(what, p, s, strlen(s), !cJSON_IsString(re), &step->regex);
}

static cg_status parse_pre_tokenizer(const char *what, const cJSON *root, cg_tokenizer *tok) {
    const cJSON *pt = get(root, "pre_tokenizer");
    if (is_absent(pt))
        return cg_set_error(CG_ERR_UNSUPPORTED, "%s: pre_tokenizer is missing (byte-level BPE needs a ByteLevel one)",
                            what);
    const char *type;
    cg_status st = type_of(what, pt, "pre_tokenizer", &type);
    if (st != CG_OK) return st;
    if (strcmp(type, "ByteLevel") == 0) {
        tok->steps = calloc(1, sizeof *tok->steps);
        if (!tok->steps) return cg_set_error(CG_ERR_OOM, "%s: out of memory", what);
        tok->n_steps = 1;
        return parse_byte_level(what, pt, "pre_tokenizer", &tok->steps[0]);
    }
    if (strcmp(type, "Sequence") != 0)
        return cg_set_error(CG_ERR_UNSUPPORTED, "%s: pre_tokenizer.type '%s' is not supported (ByteLevel or Sequence)",
                            what, type);
    const cJSON *list = get(pt, "pretokenizers");
    if (!cJSON_IsArray(list) || cJSON_GetArraySize(list) == 0)
        return cg_set_error(CG_ERR_FORMAT, "%s: pre_tokenizer.pretokenizers must be a non-empty array", what);
    int n = cJSON_GetArraySize(list);
    tok->steps = calloc((size_t)n, sizeof *tok->steps);
    if (!tok->steps) return cg_set_error(CG_ERR_OOM, "%s: out of memory", what);
    int i = 0;
    for (const cJSON *e = list->child; e; e = e->next, i++) {
        char path[96];
        snprintf(path, sizeof path, "pre_tokenizer.pretokenizers[%d]", i);
        if ((st = type_of(what, e, path, &type)) != CG_OK) return st;
        tok->n_steps = i + 1; /* so that a failure frees what was compiled */
        if (strcmp(type, "ByteLevel") == 0) {
            if (i != n - 1)
                return cg_set_error(CG_ERR_UNSUPPORTED, "%s: %s: ByteLevel must be the last pre-tokenizer", what, path);
            st = parse_byte_level(what, e, path, &tok->steps[i]);
        } else if (strcmp(type, "Split") == 0) {
            st = parse_split(what, e, path, &tok->steps[i]);
        } else {
            st = cg_set_error(CG_ERR_UNSUPPORTED, "%s: %s.type '%s' is not supported (Split or ByteLevel)", what, path,
                              type);
        }
        if (st != CG_OK) return st;
    }
    if (!tok->steps[n - 1].byte_level)
        return cg_set_error(CG_ERR_UNSUPPORTED, "%s: pre_tokenizer.pretokenizers must end with a ByteLevel step", what);
    return CG_OK;
}

/* ---------------------------------------------------------------- vocabulary, added tokens, merges */

/* The bytes a token decodes to: its characters mapped back through the byte-level table, or (when some
 * character is no byte-level symbol, as in most added tokens) its UTF-8 spelling, as the HF ByteLevel
 * decoder does. */
static cg_status set_token(cg_tokenizer *tok, int32_t id, const char *s) {
    size_t len = strlen(s);
    tok->token_str[id] = malloc(len + 1);
    tok->token_bytes[id] = malloc(len + 1);
    if (!tok->token_str[id] || !tok->token_bytes[id]) return CG_ERR_OOM;
    memcpy(tok->token_str[id], s, len + 1);
    size_t i = 0, k = 0;
    bool mapped = true;
    while (i < len && mapped) {
        uint32_t cp;
        int n = cg_utf8_decode((const unsigned char *)s + i, len - i, &cp);
        int b = n ? cg_tok_unicode_to_byte(cp) : -1;
        if (b < 0)
            mapped = false;
        else
            tok->token_bytes[id][k++] = (unsigned char)b, i += (size_t)n;
    }
    if (!mapped) memcpy(tok->token_bytes[id], s, len), k = len;
    tok->token_nbytes[id] = (uint32_t)k;
    return CG_OK;
}

static cg_status read_id(const char *what, const cJSON *v, const char *path, int64_t *id) {
    cg_status st = cg_json_as_int(v, what, path, id);
    if (st != CG_OK) return st;
    if (*id < 0 || *id >= CG_TOKENIZER_MAX_ID)
        return cg_set_error(CG_ERR_FORMAT, "%s: %s = %lld is not a valid id (0 <= id < %d)", what, path, (long long)*id,
                            CG_TOKENIZER_MAX_ID);
    return CG_OK;
}

static cg_status parse_vocab_and_added(const char *what, const cJSON *root, const cJSON *vocab, cg_tokenizer *tok) {
    char b1[80], b2[80], path[96];
    cg_status st;
    int64_t max_id = -1, id;
    for (const cJSON *e = vocab->child; e; e = e->next) {
        snprintf(path, sizeof path, "model.vocab['%s']", shown(e->string, b1, sizeof b1));
        if ((st = read_id(what, e, path, &id)) != CG_OK) return st;
        if (!e->string[0]) return cg_set_error(CG_ERR_FORMAT, "%s: model.vocab has an empty token", what);
        if (id > max_id) max_id = id;
    }
    const cJSON *added = get(root, "added_tokens");
    if (!is_absent(added) && !cJSON_IsArray(added))
        return cg_set_error(CG_ERR_FORMAT, "%s: added_tokens must be an array, got %s", what, cg_json_type_name(added));
    int n_added = is_absent(added) ? 0 : cJSON_GetArraySize(added), i = 0;
    for (const cJSON *a = is_absent(added) ? NULL : added->child; a; a = a->next, i++) {
        snprintf(path, sizeof path, "added_tokens[%d]", i);
        if (!cJSON_IsObject(a))
            return cg_set_error(CG_ERR_FORMAT, "%s: %s must be an object, got %s", what, path, cg_json_type_name(a));
        const cJSON *c = get(a, "content");
        if (!cJSON_IsString(c) || !c->valuestring[0])
            return cg_set_error(CG_ERR_FORMAT, "%s: %s.content must be a non-empty string", what, path);
        char p2[128];
        snprintf(p2, sizeof p2, "%s.id", path);
        if (!get(a, "id")) return cg_set_error(CG_ERR_FORMAT, "%s: %s.id is missing", what, path);
        if ((st = read_id(what, get(a, "id"), p2, &id)) != CG_OK) return st;
        if (id > max_id) max_id = id;
        static const char *const unsupported[] = {"single_word", "lstrip", "rstrip"};
        for (int k = 0; k < 3; k++) {
            bool flag;
            if ((st = opt_bool(what, a, path, unsupported[k], false, &flag)) != CG_OK) return st;
            if (flag)
                return cg_set_error(CG_ERR_UNSUPPORTED, "%s: %s.%s true is not supported ('%s')", what, path,
                                    unsupported[k], shown(c->valuestring, b1, sizeof b1));
        }
        bool special;
        if ((st = opt_bool(what, a, path, "special", false, &special)) != CG_OK) return st;
    }
    if (max_id < 0) return cg_set_error(CG_ERR_FORMAT, "%s: model.vocab is empty", what);

    int64_t v = max_id + 1;
    tok->vocab_size = v;
    tok->token_str = calloc((size_t)v, sizeof(char *));
    tok->token_bytes = calloc((size_t)v, sizeof(unsigned char *));
    tok->token_nbytes = calloc((size_t)v, sizeof(uint32_t));
    tok->special = calloc((size_t)v, 1);
    if (!tok->token_str || !tok->token_bytes || !tok->token_nbytes || !tok->special)
        return cg_set_error(CG_ERR_OOM, "%s: out of memory for a vocabulary of %lld ids", what, (long long)v);
    for (const cJSON *e = vocab->child; e; e = e->next) {
        id = (int64_t)e->valuedouble;
        if (tok->token_str[id])
            return cg_set_error(CG_ERR_FORMAT, "%s: model.vocab gives id %lld to both '%s' and '%s'", what,
                                (long long)id, shown(tok->token_str[id], b1, sizeof b1),
                                shown(e->string, b2, sizeof b2));
        if (set_token(tok, (int32_t)id, e->string) != CG_OK) return cg_set_error(CG_ERR_OOM, "%s: out of memory", what);
        if (!cg_strmap_put(&tok->vocab, tok->token_str[id], strlen(e->string), id))
            return cg_set_error(CG_ERR_OOM, "%s: out of memory", what);
    }
    if (n_added) {
        tok->added = calloc((size_t)n_added, sizeof *tok->added);
        if (!tok->added) return cg_set_error(CG_ERR_OOM, "%s: out of memory", what);
    }
    i = 0;
    for (const cJSON *a = n_added ? added->child : NULL; a; a = a->next, i++) {
        const char *content = get(a, "content")->valuestring;
        id = (int64_t)get(a, "id")->valuedouble;
        int64_t have;
        if (cg_strmap_get(&tok->vocab, content, strlen(content), &have)) {
            if (have != id)
                return cg_set_error(CG_ERR_FORMAT,
                                    "%s: added_tokens[%d] '%s' has id %lld but the vocabulary gives it id %lld", what,
                                    i, shown(content, b1, sizeof b1), (long long)id, (long long)have);
        } else {
            if (tok->token_str[id])
                return cg_set_error(CG_ERR_FORMAT, "%s: added_tokens[%d] '%s' has id %lld, which is already '%s'", what,
                                    i, shown(content, b1, sizeof b1), (long long)id,
                                    shown(tok->token_str[id], b2, sizeof b2));
            if (set_token(tok, (int32_t)id, content) != CG_OK ||
                !cg_strmap_put(&tok->vocab, tok->token_str[id], strlen(content), id))
                return cg_set_error(CG_ERR_OOM, "%s: out of memory", what);
        }
        bool special = cJSON_IsTrue(get(a, "special"));
        tok->special[id] = special;
        tok->added[i] = (cg_added_token){tok->token_str[id], strlen(content), (int32_t)id, special};
    }
    tok->n_added = n_added;
    return CG_OK;
}

/* Added tokens ordered by first byte, longest first, so the matcher takes the leftmost-longest one. */
static int cmp_added(const void *pa, const void *pb) {
    const cg_added_token *a = pa, *b = pb;
    unsigned char ca = (unsigned char)a->content[0], cb = (unsigned char)b->content[0];
    if (ca != cb) return ca < cb ? -1 : 1;
    if (a->len != b->len) return a->len > b->len ? -1 : 1;
    return a->id < b->id ? -1 : a->id > b->id;
}

static void index_added(cg_tokenizer *tok) {
    if (tok->n_added) qsort(tok->added, (size_t)tok->n_added, sizeof *tok->added, cmp_added);
    int32_t k = 0;
    for (int b = 0; b <= 256; b++) {
        while (b < 256 && k < tok->n_added && (unsigned char)tok->added[k].content[0] < b) k++;
        tok->added_first[b] = b < 256 ? k : tok->n_added;
    }
}

static cg_status lookup(const char *what, const cg_tokenizer *tok, const char *s, size_t len, int i, const char *role,
                        int32_t *id) {
    int64_t v;
    if (cg_strmap_get(&tok->vocab, s, len, &v)) {
        *id = (int32_t)v;
        return CG_OK;
    }
    char b[80];
    snprintf(b, sizeof b, "%.*s", (int)(len > 60 ? 60 : len), s);
    return cg_set_error(CG_ERR_FORMAT, "%s: model.merges[%d]: %s '%s' is not in model.vocab", what, i, role, b);
}

static cg_status parse_merges(const char *what, const cJSON *model, cg_tokenizer *tok) {
    const cJSON *merges = get(model, "merges");
    if (is_absent(merges)) return CG_OK; /* a vocabulary of bytes only */
    if (!cJSON_IsArray(merges))
        return cg_set_error(CG_ERR_FORMAT, "%s: model.merges must be an array, got %s", what,
                            cg_json_type_name(merges));
    int i = 0;
    char *joined = NULL;
    size_t joined_cap = 0;
    cg_status st = CG_OK;
    for (const cJSON *m = merges->child; m && st == CG_OK; m = m->next, i++) {
        const char *a, *b;
        size_t la, lb;
        if (cJSON_IsString(m)) { /* "a b", split at the first space */
            const char *sp = strchr(m->valuestring, ' ');
            if (!sp || sp == m->valuestring || !sp[1]) {
                st = cg_set_error(CG_ERR_FORMAT, "%s: model.merges[%d] '%.60s' is not two tokens separated by a space",
                                  what, i, m->valuestring);
                break;
            }
            a = m->valuestring, la = (size_t)(sp - a), b = sp + 1, lb = strlen(b);
        } else if (cJSON_IsArray(m) && cJSON_GetArraySize(m) == 2 && cJSON_IsString(m->child) &&
                   cJSON_IsString(m->child->next)) {
            a = m->child->valuestring, la = strlen(a), b = m->child->next->valuestring, lb = strlen(b);
        } else {
            st = cg_set_error(CG_ERR_FORMAT,
                              "%s: model.merges[%d] must be a string \"a b\" or a pair [\"a\", \"b\"], got %s", what, i,
                              cg_json_type_name(m));
            break;
        }
        if (la + lb + 1 > joined_cap) {
            joined_cap = 2 * (la + lb + 1);
            char *nj = realloc(joined, joined_cap);
            if (!nj) {
                st = cg_set_error(CG_ERR_OOM, "%s: out of memory", what);
                break;
            }
            joined = nj;
        }
        memcpy(joined, a, la);
        memcpy(joined + la, b, lb);
        int32_t ia, ib, im;
        if ((st = lookup(what, tok, a, la, i, "the left token", &ia)) != CG_OK) break;
        if ((st = lookup(what, tok, b, lb, i, "the right token", &ib)) != CG_OK) break;
        if ((st = lookup(what, tok, joined, la + lb, i, "the merged token", &im)) != CG_OK) break;
        if (!cg_mergemap_put(&tok->merges, ia, ib, i, im)) st = cg_set_error(CG_ERR_OOM, "%s: out of memory", what);
    }
    free(joined);
    return st;
}

/* ---------------------------------------------------------------- the whole file */

static cg_status check_null_or(const char *what, const cJSON *model, const char *key, const char *allowed) {
    const cJSON *it = get(model, key);
    if (is_absent(it)) return CG_OK;
    if (cJSON_IsString(it) && allowed && strcmp(it->valuestring, allowed) == 0) return CG_OK;
    return cg_set_error(CG_ERR_UNSUPPORTED, "%s: model.%s must be null%s (got %s)", what, key,
                        allowed ? " or \"\"" : "", cg_json_type_name(it));
}

static cg_status build(const char *what, const cJSON *root, cg_tokenizer *tok) {
    cg_status st;
    if (!cJSON_IsObject(root))
        return cg_set_error(CG_ERR_FORMAT, "%s: the top level must be an object, got %s", what,
                            cg_json_type_name(root));
    if ((st = cg_json_check_unique_keys(root, what)) != CG_OK) return st;
    const cJSON *model = get(root, "model");
    if (!model) return cg_set_error(CG_ERR_FORMAT, "%s: 'model' is missing", what);
    const char *type;
    if ((st = type_of(what, model, "model", &type)) != CG_OK) return st;
    if (strcmp(type, "BPE") != 0)
        return cg_set_error(CG_ERR_UNSUPPORTED, "%s: model.type '%s' is not supported (only BPE)", what, type);
    const cJSON *dropout = get(model, "dropout");
    if (!is_absent(dropout) && !(cJSON_IsNumber(dropout) && dropout->valuedouble == 0.0))
        return cg_set_error(CG_ERR_UNSUPPORTED, "%s: model.dropout must be null (BPE dropout is not supported)", what);
    if ((st = check_null_or(what, model, "continuing_subword_prefix", "")) != CG_OK) return st;
    if ((st = check_null_or(what, model, "end_of_word_suffix", "")) != CG_OK) return st;
    if ((st = opt_bool(what, model, "model", "ignore_merges", false, &tok->ignore_merges)) != CG_OK) return st;
    const cJSON *vocab = get(model, "vocab");
    if (!cJSON_IsObject(vocab))
        return cg_set_error(CG_ERR_FORMAT, "%s: model.vocab must be an object (token -> id), got %s", what,
                            vocab ? cg_json_type_name(vocab) : "nothing");
    if ((st = parse_vocab_and_added(what, root, vocab, tok)) != CG_OK) return st;
    for (int b = 0; b < 256; b++) {
        unsigned char u[4];
        int n = cg_utf8_encode(cg_tok_byte_to_unicode((unsigned char)b), u);
        int64_t id;
        if (!cg_strmap_get(&tok->vocab, (const char *)u, (size_t)n, &id))
            return cg_set_error(CG_ERR_FORMAT, "%s: model.vocab lacks the byte-level symbol '%.*s' of byte 0x%02x",
                                what, n, (const char *)u, b);
        tok->byte_id[b] = (int32_t)id;
    }
    if ((st = parse_merges(what, model, tok)) != CG_OK) return st;
    index_added(tok);

    const cJSON *norm = get(root, "normalizer");
    if (!is_absent(norm)) {
        if ((st = type_of(what, norm, "normalizer", &type)) != CG_OK) return st;
        if (strcmp(type, "NFC") != 0)
            return cg_set_error(CG_ERR_UNSUPPORTED, "%s: normalizer.type '%s' is not supported (null or NFC)", what,
                                type);
        tok->nfc = true;
    }
    if ((st = parse_pre_tokenizer(what, root, tok)) != CG_OK) return st;
    const cJSON *dec = get(root, "decoder");
    if (is_absent(dec))
        return cg_set_error(CG_ERR_UNSUPPORTED, "%s: decoder is missing (a ByteLevel decoder is required)", what);
    if ((st = type_of(what, dec, "decoder", &type)) != CG_OK) return st;
    if (strcmp(type, "ByteLevel") != 0)
        return cg_set_error(CG_ERR_UNSUPPORTED, "%s: decoder.type '%s' is not supported (only ByteLevel)", what, type);

    tok->bos = cg_tokenizer_token_id(tok, "<|begin_of_text|>");
    tok->eos = cg_tokenizer_token_id(tok, "<|endoftext|>");
    if (tok->eos < 0) tok->eos = cg_tokenizer_token_id(tok, "<|end_of_text|>");
    tok->pad = -1;
    return CG_OK;
}

static cg_status make(const char *what, const cJSON *root, cg_tokenizer **out) {
    cg_tokenizer *tok = calloc(1, sizeof *tok);
    if (!tok) return cg_set_error(CG_ERR_OOM, "%s: out of memory", what);
    tok->kind = CG_TOKENIZER_BPE;
    for (int b = 0; b < 256; b++) tok->char_id[b] = -1;
    cg_status st = build(what, root, tok);
    if (st != CG_OK) {
        cg_tokenizer_free(tok);
        return st;
    }
    *out = tok;
    return CG_OK;
}

/* bos_token / eos_token / pad_token of a tokenizer_config.json: a string, {"content": ...} or null. */
static cg_status config_token(const char *what, const cJSON *cfg, const char *key, const cg_tokenizer *tok,
                              int32_t *id) {
    const cJSON *it = get(cfg, key);
    if (!it) return CG_OK; /* keep the default */
    if (cJSON_IsNull(it)) {
        *id = -1;
        return CG_OK;
    }
    const cJSON *c = cJSON_IsObject(it) ? get(it, "content") : it;
    if (!cJSON_IsString(c))
        return cg_set_error(CG_ERR_FORMAT, "%s: %s must be a string, {\"content\": ...} or null", what, key);
    int32_t v = cg_tokenizer_token_id(tok, c->valuestring);
    char b[80];
    if (v < 0)
        return cg_set_error(CG_ERR_FORMAT, "%s: %s '%s' is not in the vocabulary", what, key,
                            shown(c->valuestring, b, sizeof b));
    *id = v;
    return CG_OK;
}

static cg_status apply_config(const char *cfg_path, cg_tokenizer *tok) {
    cJSON *cfg = NULL;
    cg_status st = cg_json_read_file(cfg_path, &cfg);
    if (st != CG_OK) return st;
    if (!cJSON_IsObject(cfg)) st = cg_set_error(CG_ERR_FORMAT, "%s: the top level must be an object", cfg_path);
    if (st == CG_OK) st = config_token(cfg_path, cfg, "bos_token", tok, &tok->bos);
    if (st == CG_OK) st = config_token(cfg_path, cfg, "eos_token", tok, &tok->eos);
    if (st == CG_OK) st = config_token(cfg_path, cfg, "pad_token", tok, &tok->pad);
    cJSON_Delete(cfg);
    return st;
}

cg_status cg_tokenizer_load_json(const char *json, size_t len, const char *what, cg_tokenizer **out) {
    if (!what) what = "tokenizer.json";
    if (!out) return cg_set_error(CG_ERR_INVALID_ARG, "%s: cg_tokenizer_load_json: NULL output", what);
    *out = NULL;
    cJSON *root = NULL;
    cg_status st = cg_json_parse(json, len, what, &root);
    if (st != CG_OK) return st;
    st = make(what, root, out);
    cJSON_Delete(root);
    return st;
}

cg_status cg_tokenizer_load(const char *path, cg_tokenizer **out) {
    if (!out) return cg_set_error(CG_ERR_INVALID_ARG, "cg_tokenizer_load: NULL output");
    *out = NULL;
    if (!path) return cg_set_error(CG_ERR_INVALID_ARG, "cg_tokenizer_load: NULL path");
    struct stat sb;
    if (stat(path, &sb) != 0) return cg_set_error(CG_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    size_t n = strlen(path);
    char *file = malloc(n + 64), *cfg = malloc(n + 64);
    if (!file || !cfg) {
        free(file), free(cfg);
        return cg_set_error(CG_ERR_OOM, "cg_tokenizer_load: out of memory");
    }
    if (S_ISDIR(sb.st_mode)) {
        snprintf(file, n + 64, "%s/tokenizer.json", path);
        snprintf(cfg, n + 64, "%s/tokenizer_config.json", path);
    } else {
        snprintf(file, n + 64, "%s", path);
        const char *slash = strrchr(path, '/');
        if (slash)
            snprintf(cfg, n + 64, "%.*s/tokenizer_config.json", (int)(slash - path), path);
        else
            snprintf(cfg, n + 64, "tokenizer_config.json");
    }
    cJSON *root = NULL;
    cg_status st = cg_json_read_file(file, &root);
    if (st == CG_OK) st = make(file, root, out);
    cJSON_Delete(root);
    if (st == CG_OK && stat(cfg, &sb) == 0 && (st = apply_config(cfg, *out)) != CG_OK) {
        cg_tokenizer_free(*out);
        *out = NULL;
    }
    free(file), free(cfg);
    return st;
}

#else /* built without PCRE2 or cJSON */

#ifndef CG_HAVE_PCRE2
#define CG_TOK_MISSING "PCRE2"
#else
#define CG_TOK_MISSING "cJSON"
#endif

cg_status cg_tokenizer_load_json(const char *json, size_t len, const char *what, cg_tokenizer **out) {
    (void)json, (void)len;
    if (out) *out = NULL;
    return cg_set_error(CG_ERR_UNSUPPORTED,
                        "%s: byte-level BPE tokenizers are not available: cgrad was built without " CG_TOK_MISSING,
                        what ? what : "tokenizer.json");
}

cg_status cg_tokenizer_load(const char *path, cg_tokenizer **out) {
    if (out) *out = NULL;
    struct stat sb;
    if (path && stat(path, &sb) != 0) return cg_set_error(CG_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    return cg_set_error(CG_ERR_UNSUPPORTED,
                        "%s: byte-level BPE tokenizers are not available: cgrad was built without " CG_TOK_MISSING,
                        path ? path : "tokenizer.json");
}

#endif
