/* Tokenizers: text <-> token ids.
 *
 * One opaque type for two kinds:
 *
 * Character tokenizer (cg_tokenizer_char_create), for the built-in synthetic tasks. The alphabet is a
 * string of distinct bytes (digits, operators, letters, space, newline...); every byte of the text is one
 * token. Ids: 0 = "<pad>", 1 = "<bos>", 2 = "<eos>", then 3 + i for alphabet[i]. A byte outside the
 * alphabet is an error naming the byte and its offset (no <unk>: a verifiable task must never see a silently
 * replaced character). The text "<eos>" is five ordinary characters, never the special token.
 *
 * Byte-level BPE (cg_tokenizer_load), reading a Hugging Face tokenizer.json as written for GPT-2, Qwen2 and
 * Llama 3, and encoding token for token like the Hugging Face tokenizers library with
 * add_special_tokens=False (no template tokens such as Llama 3's <|begin_of_text|> are added: prepend
 * cg_tokenizer_bos_id yourself where the model wants it). Supported configuration:
 *   model: type "BPE", vocab, merges (["a b", ...] or [["a","b"], ...]), ignore_merges, dropout null,
 *          no continuing_subword_prefix / end_of_word_suffix; all 256 byte-level symbols in the vocab.
 *   added_tokens: id, content, special (single_word / lstrip / rstrip must be false).
 *   normalizer: null or NFC (Qwen2).
 *   pre_tokenizer: ByteLevel (add_prefix_space, use_regex: GPT-2's split regex), or a Sequence of
 *          Split (pattern Regex or String, behavior Isolated, invert false) steps ending with a ByteLevel.
 *   decoder: ByteLevel.  post_processor, truncation, padding: ignored.
 * Anything else is a CG_ERR_FORMAT (or CG_ERR_UNSUPPORTED) error naming the JSON path, e.g.
 * "tokenizer.json: pre_tokenizer.pretokenizers[0].type 'Metaspace' is not supported".
 *
 * Encoding splits the text on added tokens first (leftmost-longest match; each maps straight to its id),
 * then each other segment is NFC-normalised if configured, split by the pre-tokenizer regexes (PCRE2 with
 * UTF and Unicode properties, JIT when available), mapped byte by byte to GPT-2's byte-to-unicode symbols
 * and merged by BPE rank. Text must be valid UTF-8 (as a Rust string is). Decoding concatenates the bytes
 * of the tokens, special ones included (like decode(ids, skip_special_tokens=False)): each token's characters
 * mapped back through the byte-level table, or its UTF-8 spelling when some character is no byte-level
 * symbol (as HF's ByteLevel decoder does; "<|im_end|>" decodes to itself). The bytes come back exactly, with
 * no U+FFFD in place of an incomplete UTF-8 sequence, so a stream can be decoded token by token.
 *
 * Without PCRE2 (CG_HAVE_PCRE2 undefined) or cJSON, cg_tokenizer_load returns CG_ERR_UNSUPPORTED; the
 * character tokenizer always works. A tokenizer is immutable once made: encode and decode may be called
 * from several threads at once. */
#ifndef CG_MODELS_TOKENIZER_H
#define CG_MODELS_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "core/error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cg_tokenizer cg_tokenizer;

typedef enum cg_tokenizer_kind { CG_TOKENIZER_CHAR = 0, CG_TOKENIZER_BPE = 1 } cg_tokenizer_kind;

/* The fixed ids of the character tokenizer's special tokens; alphabet[i] has id CG_CHAR_TOKEN_FIRST + i. */
#define CG_CHAR_TOKEN_PAD 0
#define CG_CHAR_TOKEN_BOS 1
#define CG_CHAR_TOKEN_EOS 2
#define CG_CHAR_TOKEN_FIRST 3

/* The alphabet of the built-in tasks and the tiny presets (61 characters, so with the 3 special tokens it fills
 * their 64-entry vocabulary): digits, arithmetic, punctuation, space, newline and lower-case letters. */
#define CG_CHAR_ALPHABET_DEFAULT "0123456789+-*/=() .,?!:;'\nabcdefghijklmnopqrstuvwxyz<>[]_#%&$"

/* A character tokenizer over the bytes of alphabet (NUL-terminated, non-empty, no byte twice).
 * Errors: CG_ERR_INVALID_ARG naming the repeated byte. *out is NULL on error. */
cg_status cg_tokenizer_char_create(const char *alphabet, cg_tokenizer **out);

/* Loads a byte-level BPE tokenizer from path: a tokenizer.json file, or a directory holding one. If a
 * tokenizer_config.json lies beside it, its bos_token / eos_token / pad_token (a string or an object with
 * "content") name the special ids; otherwise eos is "<|endoftext|>" or "<|end_of_text|>" and bos is
 * "<|begin_of_text|>" when the vocabulary has them. Errors: CG_ERR_IO (missing or unreadable file),
 * CG_ERR_FORMAT (malformed or unsupported contents, naming the file and the JSON path), CG_ERR_UNSUPPORTED
 * (built without PCRE2 or cJSON). *out is NULL on error. */
cg_status cg_tokenizer_load(const char *path, cg_tokenizer **out);
/* The same from tokenizer.json text in memory; `what` names it in messages (no tokenizer_config.json). */
cg_status cg_tokenizer_load_json(const char *json, size_t len, const char *what, cg_tokenizer **out);

void cg_tokenizer_free(cg_tokenizer *tok);

cg_tokenizer_kind cg_tokenizer_get_kind(const cg_tokenizer *tok);

/* Encodes len bytes of text into *ids, a malloc'd array of *n ids that the caller frees with free()
 * (non-NULL even when *n is 0). On error *ids is NULL and *n is 0. Errors: CG_ERR_INVALID_ARG (a byte
 * outside the char tokenizer's alphabet, or text that is not valid UTF-8 for BPE, naming the byte offset),
 * CG_ERR_OOM. */
cg_status cg_tokenizer_encode(const cg_tokenizer *tok, const char *text, size_t len, int32_t **ids, int64_t *n);

/* Decodes n ids into *text, a malloc'd buffer of *len bytes plus a terminating NUL (not counted) that the
 * caller frees with free(). An id outside [0, vocab_size) or one no token has is CG_ERR_INVALID_ARG naming
 * its position. On error *text is NULL and *len is 0. */
cg_status cg_tokenizer_decode(const cg_tokenizer *tok, const int32_t *ids, int64_t n, char **text, size_t *len);

/* One past the largest id (model vocabulary and added tokens together). */
int64_t cg_tokenizer_vocab_size(const cg_tokenizer *tok);
/* The id of a token given as it is spelled in the vocabulary ("<|endoftext|>", "<|im_end|>", "Ġthe", or
 * for the char tokenizer "<eos>" or a one-byte string); -1 if there is no such token. */
int32_t cg_tokenizer_token_id(const cg_tokenizer *tok, const char *token);
/* The vocabulary spelling of an id (byte-level form for BPE: " the" is "Ġthe"); NULL if none. The string
 * belongs to the tokenizer. */
const char *cg_tokenizer_token(const cg_tokenizer *tok, int32_t id);
/* 1 if id is a special token (an added token marked special, or the char tokenizer's <pad>/<bos>/<eos>). */
int cg_tokenizer_is_special(const cg_tokenizer *tok, int32_t id);
/* Special ids; -1 if the tokenizer has none. */
int32_t cg_tokenizer_eos_id(const cg_tokenizer *tok);
int32_t cg_tokenizer_bos_id(const cg_tokenizer *tok);
int32_t cg_tokenizer_pad_id(const cg_tokenizer *tok);

#ifdef __cplusplus
}
#endif
#endif
