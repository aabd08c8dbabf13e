/* Byte-level BPE encoding of one segment of text (a stretch with no added tokens in it): NFC if the
 * tokenizer asks for it, the pre-tokenizer's regex splits, GPT-2's byte-level symbols, and the merges applied
 * by rank as the Hugging Face library does (lowest rank first, leftmost first among equal ranks), with a
 * per-call cache of words already seen. */
#include <stdlib.h>
#include <string.h>

#include "models/tokenizer_internal.h"

#ifdef CG_HAVE_PCRE2
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

/* Words longer than this (bytes) are not cached; the cache stops growing past CACHE_MAX entries. */
#define CACHE_MAX_LEN 128
#define CACHE_MAX 65536

typedef struct range_list {
    size_t *v; /* (offset, length) pairs */
    size_t n, cap;
} range_list;

typedef struct heap_item {
    int32_t rank, pos;
} heap_item;

struct cg_bpe_scratch {
    pcre2_match_data *md;
    range_list a, b, words;
    unsigned char *prefixed; /* " " + piece for add_prefix_space */
    size_t prefixed_cap;
    /* BPE symbols of the current word: a doubly linked list over positions, dead once merged away */
    int32_t *sym, *prev, *next;
    unsigned char *alive;
    size_t sym_cap;
    heap_item *heap;
    size_t heap_n, heap_cap;
    char *mapped; /* the word in byte-level spelling, for ignore_merges */
    size_t mapped_cap;
    cg_strmap cache; /* word bytes -> (offset << 16 | count) into cache_ids */
    char **cache_keys;
    size_t n_cache_keys, cache_keys_cap;
    cg_id_buf cache_ids;
};

#define OOM() cg_set_error(CG_ERR_OOM, "cg_tokenizer_encode: out of memory")

static bool range_push(range_list *r, size_t off, size_t len) {
    if (r->n + 2 > r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 64;
        size_t *v = realloc(r->v, cap * sizeof *v);
        if (!v) return false;
        r->v = v;
        r->cap = cap;
    }
    r->v[r->n++] = off;
    r->v[r->n++] = len;
    return true;
}

/* p grown to hold need elements (the old p, unchanged, with *ok false when out of memory). */
static void *reserve(void *p, size_t *cap, size_t need, size_t elem, bool *ok) {
    *ok = true;
    if (need <= *cap) return p;
    size_t c = *cap ? *cap : 64;
    while (c < need) c *= 2;
    void *q = realloc(p, c * elem);
    if (!q) {
        *ok = false;
        return p;
    }
    *cap = c;
    return q;
}

/* The four per-symbol arrays share one capacity. */
static bool reserve_symbols(cg_bpe_scratch *s, size_t n) {
    if (n <= s->sym_cap) return true;
    size_t c = s->sym_cap ? s->sym_cap : 64;
    while (c < n) c *= 2;
    int32_t *a = realloc(s->sym, c * sizeof *a);
    if (!a) return false;
    s->sym = a;
    if (!(a = realloc(s->prev, c * sizeof *a))) return false;
    s->prev = a;
    if (!(a = realloc(s->next, c * sizeof *a))) return false;
    s->next = a;
    unsigned char *b = realloc(s->alive, c);
    if (!b) return false;
    s->alive = b;
    s->sym_cap = c;
    return true;
}

cg_bpe_scratch *cg_bpe_scratch_new(const cg_tokenizer *tok) {
    (void)tok;
    cg_bpe_scratch *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->md = pcre2_match_data_create(1, NULL); /* only the whole match is needed */
    if (!s->md) {
        free(s);
        return NULL;
    }
    return s;
}

void cg_bpe_scratch_free(cg_bpe_scratch *s) {
    if (!s) return;
    pcre2_match_data_free(s->md);
    free(s->a.v), free(s->b.v), free(s->words.v);
    free(s->prefixed);
    free(s->sym), free(s->prev), free(s->next), free(s->alive);
    free(s->heap);
    free(s->mapped);
    for (size_t i = 0; i < s->n_cache_keys; i++) free(s->cache_keys[i]);
    free(s->cache_keys);
    cg_strmap_free(&s->cache);
    free(s->cache_ids.ids);
    free(s);
}

/* Splits s[0..len) with the regex, Isolated: every match and every stretch between matches is a piece;
 * empty pieces are dropped. Offsets are relative to s, shifted by base. */
static cg_status split_regex(cg_bpe_scratch *sc, const pcre2_code *re, const unsigned char *s, size_t len, size_t base,
                             range_list *out) {
    size_t start = 0, prev = 0;
    while (start < len) {
        int rc = pcre2_match(re, s, len, start, PCRE2_NO_UTF_CHECK, sc->md, NULL);
        if (rc == PCRE2_ERROR_JIT_STACKLIMIT)
            rc = pcre2_match(re, s, len, start, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, sc->md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(rc, msg, sizeof msg);
            return cg_set_error(CG_ERR_UNSUPPORTED,
                                "cg_tokenizer_encode: the pre-tokenizer regex failed at byte %zu: %s", start,
                                (const char *)msg);
        }
        const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(sc->md);
        size_t ms = ov[0], me = ov[1];
        if (me < ms || ms < start)
            return cg_set_error(CG_ERR_UNSUPPORTED, "cg_tokenizer_encode: the pre-tokenizer regex "
                                                    "reported a match that ends before it starts");
        if (ms > prev && !range_push(out, base + prev, ms - prev)) goto oom;
        if (me > ms && !range_push(out, base + ms, me - ms)) goto oom;
        prev = me;
        if (me > ms) {
            start = me;
        } else { /* an empty match: step over one character */
            start = me + 1;
            while (start < len && (s[start] & 0xC0) == 0x80) start++;
        }
    }
    if (len > prev && !range_push(out, base + prev, len - prev)) goto oom;
    return CG_OK;
oom:
    return OOM();
}

/* ---------------------------------------------------------------- BPE of one word */

static bool heap_less(heap_item a, heap_item b) { return a.rank != b.rank ? a.rank < b.rank : a.pos < b.pos; }

static bool heap_push(cg_bpe_scratch *s, int32_t rank, int32_t pos) {
    bool ok;
    s->heap = reserve(s->heap, &s->heap_cap, s->heap_n + 1, sizeof *s->heap, &ok);
    if (!ok) return false;
    size_t i = s->heap_n++;
    heap_item it = {rank, pos};
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!heap_less(it, s->heap[p])) break;
        s->heap[i] = s->heap[p];
        i = p;
    }
    s->heap[i] = it;
    return true;
}

static heap_item heap_pop(cg_bpe_scratch *s) {
    heap_item top = s->heap[0], last = s->heap[--s->heap_n];
    size_t i = 0, n = s->heap_n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && heap_less(s->heap[c + 1], s->heap[c])) c++;
        if (!heap_less(s->heap[c], last)) break;
        s->heap[i] = s->heap[c];
        i = c;
    }
    if (n) s->heap[i] = last;
    return top;
}

static cg_status bpe_word(const cg_tokenizer *tok, cg_bpe_scratch *s, const unsigned char *w, size_t n,
                          cg_id_buf *out) {
    int64_t cached;
    if (n <= CACHE_MAX_LEN && cg_strmap_get(&s->cache, (const char *)w, n, &cached)) {
        int64_t off = cached >> 16, cnt = cached & 0xFFFF;
        for (int64_t i = 0; i < cnt; i++)
            if (!cg_id_buf_push(out, s->cache_ids.ids[off + i])) return OOM();
        return CG_OK;
    }
    int64_t first_out = out->n;
    if (tok->ignore_merges) { /* a word that is itself a token is emitted whole (Llama 3) */
        bool ok;
        s->mapped = reserve(s->mapped, &s->mapped_cap, 2 * n, 1, &ok);
        if (!ok) return OOM();
        size_t k = 0;
        for (size_t i = 0; i < n; i++)
            k += (size_t)cg_utf8_encode(cg_tok_byte_to_unicode(w[i]), (unsigned char *)s->mapped + k);
        int64_t id;
        if (cg_strmap_get(&tok->vocab, s->mapped, k, &id)) {
            if (!cg_id_buf_push(out, (int32_t)id)) return OOM();
            goto store;
        }
    }
    if (!reserve_symbols(s, n)) return OOM();
    for (size_t i = 0; i < n; i++) {
        s->sym[i] = tok->byte_id[w[i]];
        s->prev[i] = (int32_t)i - 1;
        s->next[i] = i + 1 < n ? (int32_t)i + 1 : -1;
        s->alive[i] = 1;
    }
    s->heap_n = 0;
    int32_t rank, merged;
    for (size_t i = 0; i + 1 < n; i++)
        if (cg_mergemap_get(&tok->merges, s->sym[i], s->sym[i + 1], &rank, &merged) && !heap_push(s, rank, (int32_t)i))
            return OOM();
    while (s->heap_n) {
        heap_item top = heap_pop(s);
        int32_t p = top.pos;
        if (!s->alive[p] || s->next[p] < 0) continue;
        int32_t q = s->next[p];
        /* a stale entry: one of the two symbols has changed since it was queued */
        if (!cg_mergemap_get(&tok->merges, s->sym[p], s->sym[q], &rank, &merged) || rank != top.rank) continue;
        s->sym[p] = merged;
        s->alive[q] = 0;
        s->next[p] = s->next[q];
        if (s->next[q] >= 0) s->prev[s->next[q]] = p;
        int32_t r2, m2;
        if (s->prev[p] >= 0 && cg_mergemap_get(&tok->merges, s->sym[s->prev[p]], s->sym[p], &r2, &m2) &&
            !heap_push(s, r2, s->prev[p]))
            return OOM();
        if (s->next[p] >= 0 && cg_mergemap_get(&tok->merges, s->sym[p], s->sym[s->next[p]], &r2, &m2) &&
            !heap_push(s, r2, p))
            return OOM();
    }
    for (int32_t i = 0; i >= 0; i = s->next[i])
        if (!cg_id_buf_push(out, s->sym[i])) return OOM();
store:
    if (n <= CACHE_MAX_LEN && s->cache.count < CACHE_MAX) {
        int64_t cnt = out->n - first_out, off = s->cache_ids.n;
        char *key = malloc(n);
        if (!key) return OOM();
        memcpy(key, w, n);
        bool ok;
        s->cache_keys = reserve(s->cache_keys, &s->cache_keys_cap, s->n_cache_keys + 1, sizeof(char *), &ok);
        if (!ok) {
            free(key);
            return OOM();
        }
        s->cache_keys[s->n_cache_keys++] = key;
        for (int64_t i = 0; i < cnt; i++)
            if (!cg_id_buf_push(&s->cache_ids, out->ids[first_out + i])) return OOM();
        if (!cg_strmap_put(&s->cache, key, n, (off << 16) | cnt)) return OOM();
    }
    return CG_OK;
}

/* ---------------------------------------------------------------- one segment */

static cg_status byte_level_piece(const cg_tokenizer *tok, cg_bpe_scratch *s, const cg_pretok_step *st,
                                  const unsigned char *p, size_t n, cg_id_buf *out) {
    if (st->add_prefix_space && p[0] != ' ') {
        bool ok;
        s->prefixed = reserve(s->prefixed, &s->prefixed_cap, n + 1, 1, &ok);
        if (!ok) return OOM();
        s->prefixed[0] = ' ';
        memcpy(s->prefixed + 1, p, n);
        p = s->prefixed;
        n++;
    }
    if (!st->regex) return bpe_word(tok, s, p, n, out);
    s->words.n = 0;
    cg_status r = split_regex(s, st->regex, p, n, 0, &s->words);
    for (size_t i = 0; r == CG_OK && i < s->words.n; i += 2)
        r = bpe_word(tok, s, p + s->words.v[i], s->words.v[i + 1], out);
    return r;
}

cg_status cg_bpe_encode_segment(const cg_tokenizer *tok, cg_bpe_scratch *s, const unsigned char *text, size_t len,
                                cg_id_buf *out) {
    unsigned char *norm = NULL;
    size_t norm_len = 0;
    if (tok->nfc) {
        cg_status st = cg_tok_nfc(text, len, &norm, &norm_len);
        if (st != CG_OK) return st;
        if (norm) text = norm, len = norm_len;
    }
    range_list *cur = &s->a, *nxt = &s->b;
    cur->n = 0;
    cg_status st = range_push(cur, 0, len) ? CG_OK : OOM();
    for (int k = 0; st == CG_OK && k < tok->n_steps - 1; k++) { /* the Split steps */
        nxt->n = 0;
        for (size_t i = 0; st == CG_OK && i < cur->n; i += 2)
            st = split_regex(s, tok->steps[k].regex, text + cur->v[i], cur->v[i + 1], cur->v[i], nxt);
        range_list *t = cur;
        cur = nxt, nxt = t;
    }
    const cg_pretok_step *bl = &tok->steps[tok->n_steps - 1];
    for (size_t i = 0; st == CG_OK && i < cur->n; i += 2)
        if (cur->v[i + 1]) st = byte_level_piece(tok, s, bl, text + cur->v[i], cur->v[i + 1], out);
    free(norm);
    return st;
}

#else /* no PCRE2: no BPE tokenizer can be loaded, so these are never reached */

struct cg_bpe_scratch {
    int unused;
};
cg_bpe_scratch *cg_bpe_scratch_new(const cg_tokenizer *tok) {
    (void)tok;
    return calloc(1, sizeof(cg_bpe_scratch));
}
void cg_bpe_scratch_free(cg_bpe_scratch *s) { free(s); }
cg_status cg_bpe_encode_segment(const cg_tokenizer *tok, cg_bpe_scratch *s, const unsigned char *text, size_t len,
                                cg_id_buf *out) {
    (void)tok, (void)s, (void)text, (void)len, (void)out;
    return cg_set_error(CG_ERR_UNSUPPORTED,
                        "cg_tokenizer_encode: byte-level BPE needs PCRE2; cgrad was built without it");
}

#endif
