/* Tokenizers: the character tokenizer, the public encode/decode entry points, accessors, and the shared
 * helpers (hash maps, UTF-8, GPT-2's byte <-> unicode table). Loading tokenizer.json is in
 * tokenizer_load.c, the BPE encoder in tokenizer_bpe.c, NFC in tokenizer_nfc.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "models/tokenizer_internal.h"

/* ---------------------------------------------------------------- hash maps */

uint64_t cg_tok_hash(const char *s, size_t len) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ull;
    }
    return h ^ (h >> 29);
}

static bool strmap_grow(cg_strmap *m) {
    size_t cap = m->cap ? m->cap * 2 : 64;
    cg_strmap_entry *slots = calloc(cap, sizeof *slots);
    if (!slots) return false;
    for (size_t i = 0; i < m->cap; i++) {
        cg_strmap_entry *e = &m->slots[i];
        if (!e->key) continue;
        size_t j = e->hash & (cap - 1);
        while (slots[j].key) j = (j + 1) & (cap - 1);
        slots[j] = *e;
    }
    free(m->slots);
    m->slots = slots;
    m->cap = cap;
    return true;
}

bool cg_strmap_put(cg_strmap *m, const char *key, size_t len, int64_t value) {
    if ((m->count + 1) * 2 > m->cap && !strmap_grow(m)) return false;
    uint64_t h = cg_tok_hash(key, len);
    size_t j = h & (m->cap - 1);
    while (m->slots[j].key) {
        cg_strmap_entry *e = &m->slots[j];
        if (e->hash == h && e->len == len && memcmp(e->key, key, len) == 0) {
            e->value = value;
            return true;
        }
        j = (j + 1) & (m->cap - 1);
    }
    m->slots[j] = (cg_strmap_entry){key, (uint32_t)len, h, value};
    m->count++;
    return true;
}

bool cg_strmap_get(const cg_strmap *m, const char *key, size_t len, int64_t *value) {
    if (!m->cap) return false;
    uint64_t h = cg_tok_hash(key, len);
    size_t j = h & (m->cap - 1);
    while (m->slots[j].key) {
        const cg_strmap_entry *e = &m->slots[j];
        if (e->hash == h && e->len == len && memcmp(e->key, key, len) == 0) {
            *value = e->value;
            return true;
        }
        j = (j + 1) & (m->cap - 1);
    }
    return false;
}

void cg_strmap_free(cg_strmap *m) {
    free(m->slots);
    *m = (cg_strmap){0};
}

static uint64_t pair_key(int32_t a, int32_t b) { return ((uint64_t)(uint32_t)a << 32) | (uint32_t)b; }

static size_t pair_slot(uint64_t key, size_t cap) {
    uint64_t h = key * 0x9E3779B97F4A7C15ull;
    return (size_t)(h >> 17) & (cap - 1);
}

static bool mergemap_grow(cg_mergemap *m) {
    size_t cap = m->cap ? m->cap * 2 : 64;
    cg_merge_entry *slots = malloc(cap * sizeof *slots);
    if (!slots) return false;
    for (size_t i = 0; i < cap; i++) slots[i].key = UINT64_MAX;
    for (size_t i = 0; i < m->cap; i++) {
        if (m->slots[i].key == UINT64_MAX) continue;
        size_t j = pair_slot(m->slots[i].key, cap);
        while (slots[j].key != UINT64_MAX) j = (j + 1) & (cap - 1);
        slots[j] = m->slots[i];
    }
    free(m->slots);
    m->slots = slots;
    m->cap = cap;
    return true;
}

bool cg_mergemap_put(cg_mergemap *m, int32_t left, int32_t right, int32_t rank, int32_t merged) {
    if ((m->count + 1) * 2 > m->cap && !mergemap_grow(m)) return false;
    uint64_t key = pair_key(left, right);
    size_t j = pair_slot(key, m->cap);
    while (m->slots[j].key != UINT64_MAX) {
        if (m->slots[j].key == key) { /* a repeated pair: the later rank wins, as in the HF library */
            m->slots[j].rank = rank;
            m->slots[j].merged = merged;
            return true;
        }
        j = (j + 1) & (m->cap - 1);
    }
    m->slots[j] = (cg_merge_entry){key, rank, merged};
    m->count++;
    return true;
}

bool cg_mergemap_get(const cg_mergemap *m, int32_t left, int32_t right, int32_t *rank, int32_t *merged) {
    if (!m->cap) return false;
    uint64_t key = pair_key(left, right);
    size_t j = pair_slot(key, m->cap);
    while (m->slots[j].key != UINT64_MAX) {
        if (m->slots[j].key == key) {
            *rank = m->slots[j].rank;
            *merged = m->slots[j].merged;
            return true;
        }
        j = (j + 1) & (m->cap - 1);
    }
    return false;
}

void cg_mergemap_free(cg_mergemap *m) {
    free(m->slots);
    *m = (cg_mergemap){0};
}

bool cg_id_buf_push(cg_id_buf *b, int32_t id) {
    if (b->n == b->cap) {
        int64_t cap = b->cap ? b->cap * 2 : 64;
        int32_t *ids = realloc(b->ids, (size_t)cap * sizeof *ids);
        if (!ids) return false;
        b->ids = ids;
        b->cap = cap;
    }
    b->ids[b->n++] = id;
    return true;
}

/* ---------------------------------------------------------------- UTF-8 and the byte table */

int cg_utf8_decode(const unsigned char *s, size_t len, uint32_t *cp) {
    if (len == 0) return 0;
    unsigned char c = s[0];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    int n;
    uint32_t v, min;
    if ((c & 0xE0) == 0xC0)
        n = 2, v = c & 0x1F, min = 0x80;
    else if ((c & 0xF0) == 0xE0)
        n = 3, v = c & 0x0F, min = 0x800;
    else if ((c & 0xF8) == 0xF0)
        n = 4, v = c & 0x07, min = 0x10000;
    else
        return 0;
    if (len < (size_t)n) return 0;
    for (int i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        v = (v << 6) | (s[i] & 0x3F);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) return 0;
    *cp = v;
    return n;
}

int cg_utf8_encode(uint32_t cp, unsigned char *out) {
    if (cp < 0x80) {
        out[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (unsigned char)(0xC0 | (cp >> 6));
        out[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (unsigned char)(0xE0 | (cp >> 12));
        out[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (unsigned char)(0xF0 | (cp >> 18));
    out[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

size_t cg_utf8_validate(const unsigned char *s, size_t len) {
    size_t i = 0;
    while (i < len) {
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        uint32_t cp;
        int k = cg_utf8_decode(s + i, len - i, &cp);
        if (!k) return i;
        i += (size_t)k;
    }
    return len;
}

/* GPT-2 keeps the printable bytes '!'..'~', 0xA1..0xAC and 0xAE..0xFF as their own code points and maps the
 * other 68 bytes, in order, to U+0100 onwards, so that every byte is a visible character. */
static bool byte_is_printable(unsigned b) { return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE; }

uint32_t cg_tok_byte_to_unicode(unsigned char b) {
    if (byte_is_printable(b)) return b;
    uint32_t n = 0;
    for (unsigned x = 0; x < b; x++) n += !byte_is_printable(x);
    return 256 + n;
}

int cg_tok_unicode_to_byte(uint32_t cp) {
    if (cp < 256) return byte_is_printable(cp) ? (int)cp : -1;
    if (cp >= 256 + 68) return -1;
    uint32_t n = cp - 256;
    for (unsigned x = 0; x < 256; x++)
        if (!byte_is_printable(x) && n-- == 0) return (int)x;
    return -1;
}

/* ---------------------------------------------------------------- lifetime and accessors */

void cg_tokenizer_free(cg_tokenizer *tok) {
    if (!tok) return;
    for (int64_t i = 0; i < tok->vocab_size; i++) {
        if (tok->token_str) free(tok->token_str[i]);
        if (tok->token_bytes) free(tok->token_bytes[i]);
    }
    free(tok->token_str);
    free(tok->token_bytes);
    free(tok->token_nbytes);
    free(tok->special);
    cg_strmap_free(&tok->vocab);
    cg_mergemap_free(&tok->merges);
    free(tok->added);
    cg_tok_free_steps(tok->steps, tok->n_steps);
    free(tok);
}

cg_status cg_tokenizer_char_create(const char *alphabet, cg_tokenizer **out) {
    if (!out) return cg_set_error(CG_ERR_INVALID_ARG, "cg_tokenizer_char_create: NULL output");
    *out = NULL;
    if (!alphabet || !alphabet[0])
        return cg_set_error(CG_ERR_INVALID_ARG, "cg_tokenizer_char_create: the alphabet is empty");
    size_t n = strlen(alphabet);
    cg_tokenizer *tok = calloc(1, sizeof *tok);
    if (!tok) return cg_set_error(CG_ERR_OOM, "cg_tokenizer_char_create: out of memory");
    tok->kind = CG_TOKENIZER_CHAR;
    for (int b = 0; b < 256; b++) tok->char_id[b] = -1, tok->byte_id[b] = -1;
    int64_t v = CG_CHAR_TOKEN_FIRST + (int64_t)n;
    tok->token_str = calloc((size_t)v, sizeof(char *));
    tok->token_bytes = calloc((size_t)v, sizeof(unsigned char *));
    tok->token_nbytes = calloc((size_t)v, sizeof(uint32_t));
    tok->special = calloc((size_t)v, 1);
    if (!tok->token_str || !tok->token_bytes || !tok->token_nbytes || !tok->special) goto oom;
    tok->vocab_size = v;
    static const char *const names[CG_CHAR_TOKEN_FIRST] = {"<pad>", "<bos>", "<eos>"};
    for (int i = 0; i < CG_CHAR_TOKEN_FIRST; i++) {
        size_t len = strlen(names[i]);
        tok->token_str[i] = malloc(len + 1);
        tok->token_bytes[i] = malloc(len);
        if (!tok->token_str[i] || !tok->token_bytes[i]) goto oom;
        memcpy(tok->token_str[i], names[i], len + 1);
        memcpy(tok->token_bytes[i], names[i], len);
        tok->token_nbytes[i] = (uint32_t)len;
        tok->special[i] = 1;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)alphabet[i];
        if (tok->char_id[c] >= 0) {
            int first = tok->char_id[c] - CG_CHAR_TOKEN_FIRST;
            cg_tokenizer_free(tok);
            return cg_set_error(CG_ERR_INVALID_ARG,
                                "cg_tokenizer_char_create: byte 0x%02x ('%c') appears twice in the alphabet "
                                "(offsets %d and %zu)",
                                c, (c >= 0x20 && c < 0x7f) ? c : '?', first, i);
        }
        int32_t id = CG_CHAR_TOKEN_FIRST + (int32_t)i;
        tok->char_id[c] = id;
        tok->token_str[id] = malloc(2);
        tok->token_bytes[id] = malloc(1);
        if (!tok->token_str[id] || !tok->token_bytes[id]) goto oom;
        tok->token_str[id][0] = (char)c;
        tok->token_str[id][1] = '\0';
        tok->token_bytes[id][0] = c;
        tok->token_nbytes[id] = 1;
    }
    for (int64_t i = 0; i < v; i++)
        if (!cg_strmap_put(&tok->vocab, tok->token_str[i], strlen(tok->token_str[i]), i)) goto oom;
    tok->pad = CG_CHAR_TOKEN_PAD;
    tok->bos = CG_CHAR_TOKEN_BOS;
    tok->eos = CG_CHAR_TOKEN_EOS;
    *out = tok;
    return CG_OK;
oom:
    cg_tokenizer_free(tok);
    return cg_set_error(CG_ERR_OOM, "cg_tokenizer_char_create: out of memory");
}

cg_tokenizer_kind cg_tokenizer_get_kind(const cg_tokenizer *tok) { return tok ? tok->kind : CG_TOKENIZER_CHAR; }
int64_t cg_tokenizer_vocab_size(const cg_tokenizer *tok) { return tok ? tok->vocab_size : 0; }
int32_t cg_tokenizer_eos_id(const cg_tokenizer *tok) { return tok ? tok->eos : -1; }
int32_t cg_tokenizer_bos_id(const cg_tokenizer *tok) { return tok ? tok->bos : -1; }
int32_t cg_tokenizer_pad_id(const cg_tokenizer *tok) { return tok ? tok->pad : -1; }

int32_t cg_tokenizer_token_id(const cg_tokenizer *tok, const char *token) {
    int64_t id;
    if (!tok || !token || !cg_strmap_get(&tok->vocab, token, strlen(token), &id)) return -1;
    return (int32_t)id;
}

const char *cg_tokenizer_token(const cg_tokenizer *tok, int32_t id) {
    if (!tok || id < 0 || id >= tok->vocab_size) return NULL;
    return tok->token_str[id];
}

int cg_tokenizer_is_special(const cg_tokenizer *tok, int32_t id) {
    if (!tok || id < 0 || id >= tok->vocab_size) return 0;
    return tok->special[id];
}

/* ---------------------------------------------------------------- encode / decode */

static cg_status encode_char(const cg_tokenizer *tok, const unsigned char *s, size_t len, cg_id_buf *out) {
    for (size_t i = 0; i < len; i++) {
        int32_t id = tok->char_id[s[i]];
        if (id < 0) {
            unsigned char c = s[i];
            return cg_set_error(CG_ERR_INVALID_ARG,
                                "cg_tokenizer_encode: byte 0x%02x ('%c') at offset %zu is not in the char "
                                "tokenizer's alphabet",
                                c, (c >= 0x20 && c < 0x7f) ? c : '?', i);
        }
        if (!cg_id_buf_push(out, id)) return cg_set_error(CG_ERR_OOM, "cg_tokenizer_encode: out of memory");
    }
    return CG_OK;
}

/* The longest added token that starts at s[0..len), or NULL. */
static const cg_added_token *match_added(const cg_tokenizer *tok, const unsigned char *s, size_t len) {
    for (int32_t k = tok->added_first[s[0]]; k < tok->added_first[s[0] + 1]; k++) {
        const cg_added_token *a = &tok->added[k]; /* longest first within a first byte */
        if (a->len <= len && memcmp(a->content, s, a->len) == 0) return a;
    }
    return NULL;
}

static cg_status encode_bpe(const cg_tokenizer *tok, const unsigned char *s, size_t len, cg_id_buf *out) {
    size_t bad = cg_utf8_validate(s, len);
    if (bad < len)
        return cg_set_error(CG_ERR_INVALID_ARG, "cg_tokenizer_encode: the text is not valid UTF-8 at byte offset %zu",
                            bad);
    cg_bpe_scratch *scratch = cg_bpe_scratch_new(tok);
    if (!scratch) return cg_set_error(CG_ERR_OOM, "cg_tokenizer_encode: out of memory");
    cg_status st = CG_OK;
    size_t seg = 0, i = 0;
    while (i < len && st == CG_OK) {
        const cg_added_token *a = tok->n_added ? match_added(tok, s + i, len - i) : NULL;
        if (!a) {
            i++;
            continue;
        }
        if (i > seg) st = cg_bpe_encode_segment(tok, scratch, s + seg, i - seg, out);
        if (st == CG_OK && !cg_id_buf_push(out, a->id))
            st = cg_set_error(CG_ERR_OOM, "cg_tokenizer_encode: out of memory");
        i += a->len;
        seg = i;
    }
    if (st == CG_OK && len > seg) st = cg_bpe_encode_segment(tok, scratch, s + seg, len - seg, out);
    cg_bpe_scratch_free(scratch);
    return st;
}

cg_status cg_tokenizer_encode(const cg_tokenizer *tok, const char *text, size_t len, int32_t **ids, int64_t *n) {
    if (ids) *ids = NULL;
    if (n) *n = 0;
    if (!tok || !ids || !n) return cg_set_error(CG_ERR_INVALID_ARG, "cg_tokenizer_encode: NULL argument");
    if (!text && len) return cg_set_error(CG_ERR_INVALID_ARG, "cg_tokenizer_encode: NULL text of %zu bytes", len);
    cg_id_buf out = {0};
    cg_status st = tok->kind == CG_TOKENIZER_CHAR ? encode_char(tok, (const unsigned char *)text, len, &out)
                                                  : encode_bpe(tok, (const unsigned char *)text, len, &out);
    if (st == CG_OK && !out.ids && !(out.ids = malloc(sizeof(int32_t))))
        st = cg_set_error(CG_ERR_OOM, "cg_tokenizer_encode: out of memory");
    if (st != CG_OK) {
        free(out.ids);
        return st;
    }
    *ids = out.ids;
    *n = out.n;
    return CG_OK;
}

cg_status cg_tokenizer_decode(const cg_tokenizer *tok, const int32_t *ids, int64_t n, char **text, size_t *len) {
    if (text) *text = NULL;
    if (len) *len = 0;
    if (!tok || !text || !len || (!ids && n) || n < 0)
        return cg_set_error(CG_ERR_INVALID_ARG, "cg_tokenizer_decode: NULL argument or negative count");
    size_t total = 0;
    for (int64_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (id < 0 || id >= tok->vocab_size || !tok->token_bytes[id])
            return cg_set_error(
                CG_ERR_INVALID_ARG, "cg_tokenizer_decode: id %d at position %lld is %s (vocabulary of %lld ids)", id,
                (long long)i, (id < 0 || id >= tok->vocab_size) ? "out of range" : "not assigned to any token",
                (long long)tok->vocab_size);
        total += tok->token_nbytes[id];
    }
    char *buf = malloc(total + 1);
    if (!buf) return cg_set_error(CG_ERR_OOM, "cg_tokenizer_decode: out of memory for %zu bytes", total);
    size_t k = 0;
    for (int64_t i = 0; i < n; i++) {
        memcpy(buf + k, tok->token_bytes[ids[i]], tok->token_nbytes[ids[i]]);
        k += tok->token_nbytes[ids[i]];
    }
    buf[k] = '\0';
    *text = buf;
    *len = k;
    return CG_OK;
}
