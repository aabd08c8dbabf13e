/* Internals shared by models/tokenizer*.c: the tokenizer struct, a string -> int map and a pair -> merge
 * map (open addressing), GPT-2's byte <-> unicode table, UTF-8 helpers, and NFC. Not part of cgrad.h. */
#ifndef CG_MODELS_TOKENIZER_INTERNAL_H
#define CG_MODELS_TOKENIZER_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "models/tokenizer.h"

/* Ids must lie below this: id-indexed tables are allocated up to the largest id, and no real vocabulary
 * comes near it (Qwen2 has 151,665 tokens). */
#define CG_TOKENIZER_MAX_ID (1 << 24)

/* ---- string -> int64 map; keys are borrowed (the caller keeps them alive) */
typedef struct cg_strmap_entry {
    const char *key; /* NULL: empty slot */
    uint32_t len;
    uint64_t hash;
    int64_t value;
} cg_strmap_entry;

typedef struct cg_strmap {
    cg_strmap_entry *slots;
    size_t cap, count; /* cap is a power of two */
} cg_strmap;

uint64_t cg_tok_hash(const char *s, size_t len);
/* Adds or overwrites key -> value. Returns false when out of memory. */
bool cg_strmap_put(cg_strmap *m, const char *key, size_t len, int64_t value);
/* The value of key, or false when absent. */
bool cg_strmap_get(const cg_strmap *m, const char *key, size_t len, int64_t *value);
void cg_strmap_free(cg_strmap *m);

/* ---- (left id, right id) -> (rank, merged id) */
typedef struct cg_merge_entry {
    uint64_t key; /* UINT64_MAX: empty slot */
    int32_t rank, merged;
} cg_merge_entry;

typedef struct cg_mergemap {
    cg_merge_entry *slots;
    size_t cap, count;
} cg_mergemap;

bool cg_mergemap_put(cg_mergemap *m, int32_t left, int32_t right, int32_t rank, int32_t merged);
bool cg_mergemap_get(const cg_mergemap *m, int32_t left, int32_t right, int32_t *rank, int32_t *merged);
void cg_mergemap_free(cg_mergemap *m);

/* ---- one pre-tokenizer step. Split steps run in order; the ByteLevel step is always last. */
typedef struct cg_pretok_step {
    bool byte_level;       /* false: a Split (Isolated) step */
    bool add_prefix_space; /* ByteLevel only */
    void *regex;           /* pcre2_code *; NULL for ByteLevel with use_regex false */
} cg_pretok_step;

typedef struct cg_added_token {
    const char *content; /* == tok->token_str[id] */
    size_t len;
    int32_t id;
    bool special;
} cg_added_token;

struct cg_tokenizer {
    cg_tokenizer_kind kind;
    int64_t vocab_size;
    int32_t bos, eos, pad;

    /* id -> spelling (NUL-terminated, owned) and id -> decoded bytes (owned); NULL where no token has the id */
    char **token_str;
    unsigned char **token_bytes;
    uint32_t *token_nbytes;
    unsigned char *special; /* id -> 1 if special */
    cg_strmap vocab;        /* spelling -> id, keys borrowed from token_str */

    /* char tokenizer: byte -> id, -1 if not in the alphabet */
    int32_t char_id[256];

    /* BPE */
    cg_mergemap merges;
    int32_t byte_id[256]; /* id of each byte's byte-level symbol */
    bool ignore_merges;
    bool nfc;
    cg_added_token *added; /* sorted by first byte, then longest first */
    int32_t n_added;
    int32_t added_first[257]; /* added[added_first[b] .. added_first[b+1]) start with byte b */
    cg_pretok_step *steps;
    int n_steps;
};

/* GPT-2's bytes_to_unicode: byte -> code point, and the inverse (-1 for code points that are no byte). */
uint32_t cg_tok_byte_to_unicode(unsigned char b);
int cg_tok_unicode_to_byte(uint32_t cp);

/* Decodes one UTF-8 sequence at s[0..len); returns its length (1-4) and the code point, or 0 if the
 * bytes there are not valid UTF-8 (overlong, surrogate, above U+10FFFF, truncated). */
int cg_utf8_decode(const unsigned char *s, size_t len, uint32_t *cp);
/* Writes cp as UTF-8 into out (room for 4); returns the length. */
int cg_utf8_encode(uint32_t cp, unsigned char *out);
/* Offset of the first invalid byte, or len if s is valid UTF-8. */
size_t cg_utf8_validate(const unsigned char *s, size_t len);

/* NFC of valid UTF-8 text into a malloc'd buffer (*out, *out_len). When the text is already NFC (the
 * common case: every code point passes the quick check), *out is NULL and nothing is allocated. */
cg_status cg_tok_nfc(const unsigned char *s, size_t len, unsigned char **out, size_t *out_len);

/* Byte-level BPE encoding of one segment (no added tokens in it); appends to the growing id array. */
typedef struct cg_id_buf {
    int32_t *ids;
    int64_t n, cap;
} cg_id_buf;
bool cg_id_buf_push(cg_id_buf *b, int32_t id);

typedef struct cg_bpe_scratch cg_bpe_scratch;
cg_bpe_scratch *cg_bpe_scratch_new(const cg_tokenizer *tok);
void cg_bpe_scratch_free(cg_bpe_scratch *s);
cg_status cg_bpe_encode_segment(const cg_tokenizer *tok, cg_bpe_scratch *s, const unsigned char *text, size_t len,
                                cg_id_buf *out);

/* Frees regexes of the steps (PCRE2 build) and the step array. */
void cg_tok_free_steps(cg_pretok_step *steps, int n);

#endif
