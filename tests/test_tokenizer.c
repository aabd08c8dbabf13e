/* Tokenizers: the character tokenizer, and byte-level BPE on tokenizer.json files this test writes in the
 * GPT-2, Qwen2 and Llama 3 styles (no downloads). Expected ids were worked out by hand from the merges
 * (comments below) and agree with the Hugging Face tokenizers library (0.23.3), which produced the golden
 * table through tests/fixtures/gen_tokenizer_golden.py on the same three files. Also: exact round trips,
 * NFC, added tokens, every malformed-file error, and the `cgrad tokenize` command. */
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test_util.h"

#include "models/tokenizer.h"

/* ---------------------------------------------------------------- helpers */

static bool have_bpe(void) { return strstr(cg_features(), "pcre2") && strstr(cg_features(), "cjson"); }

#define REQUIRE_BPE()                                                                                                  \
    do {                                                                                                               \
        if (!have_bpe()) {                                                                                             \
            print_message("skipped: built without PCRE2 or cJSON\n");                                                  \
            skip();                                                                                                    \
        }                                                                                                              \
    } while (0)

typedef struct sbuf {
    char *s;
    size_t n, cap;
} sbuf;

static void sb_addn(sbuf *b, const char *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        b->cap = 2 * (b->n + n + 1);
        b->s = realloc(b->s, b->cap);
        assert_non_null(b->s);
    }
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = '\0';
}
static void sb_add(sbuf *b, const char *s) { sb_addn(b, s, strlen(s)); }

/* s as a JSON string literal (UTF-8 kept as is). */
static void sb_json(sbuf *b, const char *s) {
    sb_add(b, "\"");
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char esc[8];
        if (c == '"' || c == '\\')
            snprintf(esc, sizeof esc, "\\%c", c);
        else if (c < 0x20)
            snprintf(esc, sizeof esc, "\\u%04x", c);
        else
            esc[0] = (char)c, esc[1] = '\0';
        sb_add(b, esc);
    }
    sb_add(b, "\"");
}

/* GPT-2's byte-to-unicode table, built here from its definition (independently of the library): the
 * printable bytes keep their code point, the other 68 take U+0100.. in byte order. sym[i] is the UTF-8
 * of the i-th symbol in vocabulary order (the printable ones first), so id i = sym[i]. */
static void byte_symbols(char sym[256][4]) {
    int bs[256], n = 0;
    for (int b = 0; b < 256; b++)
        if ((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE) bs[n++] = b;
    int printable = n, extra = 0;
    for (int b = 0; b < 256; b++)
        if (!((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE)) bs[n++] = b;
    for (int i = 0; i < 256; i++) {
        unsigned cp = i < printable ? (unsigned)bs[i] : 256u + (unsigned)extra++;
        unsigned char *o = (unsigned char *)sym[i];
        if (cp < 0x80)
            o[0] = (unsigned char)cp, o[1] = 0;
        else
            o[0] = (unsigned char)(0xC0 | (cp >> 6)), o[1] = (unsigned char)(0x80 | (cp & 0x3F)), o[2] = 0;
    }
}

/* The merges of every fixture, in rank order; the merged token gets id 256 + rank:
 *   256 Ġt  257 he  258 Ġthe  259 in  260 Ġw  261 Ġwin  262 re  263 er  264 12  265 123
 *   266 Ã© (the two bytes of é)  267 ĠĠ  268 ĊĊ  269 ll  270 ell
 * then 271 Ġxyz (in the vocabulary, made by no merge), then the added tokens from 272. */
static const char *const merges[][2] = {{"Ġ", "t"},   {"h", "e"}, {"Ġt", "he"}, {"i", "n"}, {"Ġ", "w"},
                                        {"Ġw", "in"}, {"r", "e"}, {"e", "r"},   {"1", "2"}, {"12", "3"},
                                        {"Ã", "©"},   {"Ġ", "Ġ"}, {"Ċ", "Ċ"},   {"l", "l"}, {"e", "ll"}};
#define N_MERGES 15
#define ID_XYZ 271
#define ID_EOT 272
#define ID_IM_START 273
#define ID_IM_END 274

static const char qwen2_re[] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+"
                               "[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char llama3_re[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+"
    "[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

enum { GPT2, QWEN2, LLAMA3 };

/* The tokenizer.json of a style, as gen_tokenizer_golden.py writes it (malloc'd). */
static char *fixture_json(int kind) {
    char sym[256][4];
    byte_symbols(sym);
    sbuf b = {0};
    sb_add(&b, "{\"version\": \"1.0\", \"truncation\": null, \"padding\": null, \"added_tokens\": [");
    const char *added[] = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};
    int n_added = kind == GPT2 ? 1 : 3;
    for (int i = 0; i < n_added; i++) {
        char head[64];
        snprintf(head, sizeof head, "%s{\"id\": %d, \"content\": ", i ? ", " : "", ID_EOT + i);
        sb_add(&b, head);
        sb_json(&b, added[i]);
        sb_add(&b, ", \"single_word\": false, \"lstrip\": false, \"rstrip\": false, \"normalized\": false, "
                   "\"special\": true}");
    }
    sb_add(&b, "], \"normalizer\": ");
    sb_add(&b, kind == QWEN2 ? "{\"type\": \"NFC\"}" : "null");
    sb_add(&b, ", \"pre_tokenizer\": ");
    if (kind == GPT2) {
        sb_add(&b,
               "{\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"trim_offsets\": true, \"use_regex\": true}");
    } else {
        sb_add(&b, "{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", \"pattern\": {\"Regex\": ");
        sb_json(&b, kind == QWEN2 ? qwen2_re : llama3_re);
        sb_add(&b, "}, \"behavior\": \"Isolated\", \"invert\": false}, {\"type\": \"ByteLevel\", \"add_prefix_space\": "
                   "false, \"trim_offsets\": false, \"use_regex\": false}]}");
    }
    sb_add(&b, ", \"post_processor\": null, \"decoder\": {\"type\": \"ByteLevel\", \"add_prefix_space\": true, "
               "\"trim_offsets\": true, \"use_regex\": true}, \"model\": {\"type\": \"BPE\", \"dropout\": null, "
               "\"unk_token\": null, \"continuing_subword_prefix\": null, \"end_of_word_suffix\": null, \"fuse_unk\": "
               "false, \"byte_fallback\": false, \"ignore_merges\": ");
    sb_add(&b, kind == LLAMA3 ? "true" : "false");
    sb_add(&b, ", \"vocab\": {");
    char num[32];
    for (int i = 0; i < 256; i++) {
        if (i) sb_add(&b, ", ");
        sb_json(&b, sym[i]);
        snprintf(num, sizeof num, ": %d", i);
        sb_add(&b, num);
    }
    for (int m = 0; m < N_MERGES; m++) {
        char joined[16];
        snprintf(joined, sizeof joined, "%s%s", merges[m][0], merges[m][1]);
        sb_add(&b, ", ");
        sb_json(&b, joined);
        snprintf(num, sizeof num, ": %d", 256 + m);
        sb_add(&b, num);
    }
    snprintf(num, sizeof num, ", \"Ġxyz\": %d}, \"merges\": [", ID_XYZ);
    sb_add(&b, num);
    for (int m = 0; m < N_MERGES; m++) {
        if (m) sb_add(&b, ", ");
        if (kind == GPT2) { /* the legacy "a b" strings */
            char pair[16];
            snprintf(pair, sizeof pair, "%s %s", merges[m][0], merges[m][1]);
            sb_json(&b, pair);
        } else { /* the newer ["a", "b"] pairs */
            sb_add(&b, "[");
            sb_json(&b, merges[m][0]);
            sb_add(&b, ", ");
            sb_json(&b, merges[m][1]);
            sb_add(&b, "]");
        }
    }
    sb_add(&b, "]}}");
    return b.s;
}

/* text with the first occurrence of `from` replaced by `to` (which must occur). */
static char *replace(const char *text, const char *from, const char *to) {
    const char *at = strstr(text, from);
    if (!at) print_error("fixture has no '%s'\n", from);
    assert_non_null(at);
    sbuf b = {0};
    sb_addn(&b, text, (size_t)(at - text));
    sb_add(&b, to);
    sb_add(&b, at + strlen(from));
    return b.s;
}

static char tmpdir[64];

static int setup_dir(void **state) {
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/cgrad_tok_XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int remove_dir(void **state) {
    (void)state;
    if (getenv("CG_TOKENIZER_KEEP")) return 0; /* leave the files for gen_tokenizer_golden.py to check */
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, strlen(text), f), strlen(text));
    assert_int_equal(fclose(f), 0);
}

static const char *const kind_name[] = {"gpt2", "qwen2", "llama3"};

/* Writes the fixture of a style to tmpdir/<style>.json and loads it. */
static cg_tokenizer *load_fixture(int kind) {
    char path[128];
    snprintf(path, sizeof path, "%s/%s.json", tmpdir, kind_name[kind]);
    char *json = fixture_json(kind);
    write_file(path, json);
    free(json);
    cg_tokenizer *tok = NULL;
    assert_ok(cg_tokenizer_load(path, &tok));
    return tok;
}

static void assert_ids(const cg_tokenizer *tok, const char *text, size_t len, const int32_t *want, int64_t n_want) {
    int32_t *ids = NULL;
    int64_t n = -1;
    assert_ok(cg_tokenizer_encode(tok, text, len, &ids, &n));
    bool same = n == n_want;
    for (int64_t i = 0; same && i < n; i++) same = ids[i] == want[i];
    if (!same) {
        print_error("encoding \"%.*s\": got %lld ids:", (int)len, text, (long long)n);
        for (int64_t i = 0; i < n; i++) print_error(" %d", ids[i]);
        print_error("; expected %lld:", (long long)n_want);
        for (int64_t i = 0; i < n_want; i++) print_error(" %d", want[i]);
        print_error("\n");
    }
    free(ids);
    assert_true(same);
}

/* encode then decode gives back `expect` byte for byte. */
static void assert_round_trip(const cg_tokenizer *tok, const char *text, size_t len, const char *expect, size_t elen) {
    int32_t *ids = NULL;
    int64_t n;
    assert_ok(cg_tokenizer_encode(tok, text, len, &ids, &n));
    char *back = NULL;
    size_t blen = 0;
    assert_ok(cg_tokenizer_decode(tok, ids, n, &back, &blen));
    if (blen != elen || memcmp(back, expect, elen) != 0)
        print_error("round trip of \"%.*s\" gave \"%s\"\n", (int)len, text, back);
    assert_int_equal(blen, elen);
    assert_memory_equal(back, expect, elen);
    assert_int_equal(back[blen], '\0');
    free(ids);
    free(back);
}

/* ---------------------------------------------------------------- character tokenizer */

static void test_char_tokenizer(void **state) {
    (void)state;
    const char *alphabet = "0123456789+-*= \n";
    cg_tokenizer *tok = NULL;
    assert_ok(cg_tokenizer_char_create(alphabet, &tok));
    assert_int_equal(cg_tokenizer_get_kind(tok), CG_TOKENIZER_CHAR);
    assert_int_equal(cg_tokenizer_vocab_size(tok), 3 + 16);
    assert_int_equal(cg_tokenizer_pad_id(tok), 0);
    assert_int_equal(cg_tokenizer_bos_id(tok), 1);
    assert_int_equal(cg_tokenizer_eos_id(tok), 2);
    assert_int_equal(cg_tokenizer_token_id(tok, "<eos>"), 2);
    assert_int_equal(cg_tokenizer_token_id(tok, "+"), 3 + 10);
    assert_int_equal(cg_tokenizer_token_id(tok, "x"), -1);
    assert_string_equal(cg_tokenizer_token(tok, 3 + 14), " ");
    assert_true(cg_tokenizer_is_special(tok, 1) && !cg_tokenizer_is_special(tok, 3));

    /* "12+3=15\n": id = 3 + position in the alphabet */
    const int32_t want[] = {4, 5, 13, 6, 16, 4, 8, 18};
    assert_ids(tok, "12+3=15\n", 8, want, 8);
    assert_round_trip(tok, "9*9 - 81 = 0\n", 13, "9*9 - 81 = 0\n", 13);
    int32_t *ids = NULL;
    int64_t n = -1;
    assert_ok(cg_tokenizer_encode(tok, "", 0, &ids, &n));
    assert_int_equal(n, 0);
    assert_non_null(ids);
    free(ids);

    /* specials decode as their names */
    const int32_t with_specials[] = {1, 4, 13, 5, 2};
    char *text = NULL;
    size_t len = 0;
    assert_ok(cg_tokenizer_decode(tok, with_specials, 5, &text, &len));
    assert_string_equal(text, "<bos>1+2<eos>");
    assert_int_equal(len, 13);
    free(text);

    /* a byte outside the alphabet: an error naming it and its offset, nothing returned */
    assert_int_equal(cg_tokenizer_encode(tok, "12x3", 4, &ids, &n), CG_ERR_INVALID_ARG);
    assert_error_contains("0x78 ('x') at offset 2");
    assert_null(ids);
    assert_int_equal(n, 0);
    const int32_t bad[] = {4, 19};
    assert_int_equal(cg_tokenizer_decode(tok, bad, 2, &text, &len), CG_ERR_INVALID_ARG);
    assert_error_contains("id 19 at position 1 is out of range");
    assert_null(text);
    cg_tokenizer_free(tok);

    assert_int_equal(cg_tokenizer_char_create("abca", &tok), CG_ERR_INVALID_ARG);
    assert_error_contains("0x61 ('a') appears twice in the alphabet (offsets 0 and 3)");
    assert_null(tok);
    assert_int_equal(cg_tokenizer_char_create("", &tok), CG_ERR_INVALID_ARG);
    assert_error_contains("empty");
}

/* ---------------------------------------------------------------- BPE: golden ids */

typedef struct golden {
    const char *text;
    int32_t ids[32];
    int n;
} golden;

/* From tests/fixtures/gen_tokenizer_golden.py (Hugging Face tokenizers 0.23.3, add_special_tokens=False).
 * Byte symbols have ids 0..255 in GPT-2 order: '!'..'~' are 0..93 (so 'a' = 64, 'e' = 68, '1' = 16), and
 * space 'Ġ' = 220, '\n' 'Ċ' = 198, '\t' 'ĉ' = 197, '\r' 'č' = 201. Worked by hand:
 *   " the":  Ġ t h e -> (Ġ,t) rank 0 -> Ġt h e -> (h,e) rank 1 -> Ġt he -> (Ġt,he) rank 2 -> [258 Ġthe]
 *   "ere":   e r e: (r,e) has rank 6, lower than (e,r) rank 7, so r e merges first -> [68 e, 262 re];
 *            with the ranks swapped it would be [263 er, 68 e]: rank order, not position, decides.
 *   "here":  (h,e) rank 1 first -> he r e -> (r,e) -> [257 he, 262 re]
 *   " win":  (i,n) rank 3, (Ġ,w) rank 4, then (Ġw,in) rank 5 -> [261]
 *   "Hello": (l,l) rank 13 -> H e ll o -> (e,ll) rank 14 -> [39 H, 270 ell, 78 o]
 *   "12345": GPT-2's \p{N}+ keeps one word -> 123 4 5 = [265, 19, 20]; Llama 3's \p{N}{1,3} splits
 *            123|45 -> the same ids; Qwen2's \p{N} splits every digit -> [16..20].
 *   "café":  c a f and é's bytes C3 A9 = symbols Ã © -> (Ã,©) rank 10 -> [66, 64, 69, 266]
 *   "e\u0301" (e + combining acute): raw bytes 65 CC 81 -> [68, 136, 223]; Qwen2's NFC makes it é -> [266]
 *   "中文":  six bytes, no merges -> six byte ids;  "🙂": F0 9F 99 82 -> four byte ids
 *   "a   b\n\n c": a | ĠĠ (\s+(?!\S) leaves the last space to " b") | Ġb | ĊĊ | Ġc
 *   " xyz":  no merge makes Ġxyz: four byte ids, except Llama 3 (ignore_merges) emits the word whole [271]
 *   "<|im_start|>user\nhi<|im_end|>": the added tokens 273 and 274 in Qwen2/Llama 3, bytes in GPT-2 */
static const golden gpt2_golden[] = {
    {" the", {258}, 1},
    {"the", {83, 257}, 2},
    {"here", {257, 262}, 2},
    {"ere", {68, 262}, 2},
    {" win", {261}, 1},
    {"Hello world", {39, 270, 78, 260, 78, 81, 75, 67}, 8},
    {"12345", {265, 19, 20}, 3},
    {"caf\xc3\xa9", {66, 64, 69, 266}, 4},
    {"e\xcc\x81", {68, 136, 223}, 3},
    {"\xe4\xb8\xad\xe6\x96\x87", {160, 116, 255, 162, 244, 229}, 6},
    {"\xf0\x9f\x99\x82", {172, 253, 247, 224}, 4},
    {"a   b\n\n c", {64, 267, 220, 65, 268, 220, 66}, 7},
    {" xyz", {220, 87, 88, 89}, 4},
    {"Hello<|endoftext|> world", {39, 270, 78, 272, 260, 78, 81, 75, 67}, 9},
    {"<|im_start|>user\nhi<|im_end|>",
     {27, 91, 72, 76, 62, 82, 83, 64, 81, 83, 91, 29, 84, 82, 263, 198, 71, 72, 27, 91, 72, 76, 62, 68, 77, 67, 91, 29},
     28},
    {"it's IT'S", {72, 83, 6, 82, 220, 40, 51, 6, 50}, 9},
    {"", {0}, 0},
    {"   ", {267, 220}, 2},
    {"x\r\ny", {87, 201, 198, 88}, 4},
    {"tell well\t\tdone!!", {83, 270, 260, 270, 197, 197, 67, 78, 77, 68, 0, 0}, 12},
};

static const golden qwen2_golden[] = {
    {" the", {258}, 1},
    {"the", {83, 257}, 2},
    {"here", {257, 262}, 2},
    {"ere", {68, 262}, 2},
    {" win", {261}, 1},
    {"Hello world", {39, 270, 78, 260, 78, 81, 75, 67}, 8},
    {"12345", {16, 17, 18, 19, 20}, 5},
    {"caf\xc3\xa9", {66, 64, 69, 266}, 4},
    {"e\xcc\x81", {266}, 1},
    {"\xe4\xb8\xad\xe6\x96\x87", {160, 116, 255, 162, 244, 229}, 6},
    {"\xf0\x9f\x99\x82", {172, 253, 247, 224}, 4},
    {"a   b\n\n c", {64, 267, 220, 65, 268, 220, 66}, 7},
    {" xyz", {220, 87, 88, 89}, 4},
    {"Hello<|endoftext|> world", {39, 270, 78, 272, 260, 78, 81, 75, 67}, 9},
    {"<|im_start|>user\nhi<|im_end|>", {273, 84, 82, 263, 198, 71, 72, 274}, 8},
    {"it's IT'S", {72, 83, 6, 82, 220, 40, 51, 6, 50}, 9},
    {"", {0}, 0},
    {"   ", {267, 220}, 2},
    {"x\r\ny", {87, 201, 198, 88}, 4},
    {"tell well\t\tdone!!", {83, 270, 260, 270, 197, 197, 67, 78, 77, 68, 0, 0}, 12},
};

static const golden llama3_golden[] = {
    {" the", {258}, 1},
    {"the", {83, 257}, 2},
    {"here", {257, 262}, 2},
    {"ere", {68, 262}, 2},
    {" win", {261}, 1},
    {"Hello world", {39, 270, 78, 260, 78, 81, 75, 67}, 8},
    {"12345", {265, 19, 20}, 3},
    {"caf\xc3\xa9", {66, 64, 69, 266}, 4},
    {"e\xcc\x81", {68, 136, 223}, 3},
    {"\xe4\xb8\xad\xe6\x96\x87", {160, 116, 255, 162, 244, 229}, 6},
    {"\xf0\x9f\x99\x82", {172, 253, 247, 224}, 4},
    {"a   b\n\n c", {64, 267, 220, 65, 268, 220, 66}, 7},
    {" xyz", {271}, 1},
    {"Hello<|endoftext|> world", {39, 270, 78, 272, 260, 78, 81, 75, 67}, 9},
    {"<|im_start|>user\nhi<|im_end|>", {273, 84, 82, 263, 198, 71, 72, 274}, 8},
    {"it's IT'S", {72, 83, 6, 82, 220, 40, 51, 6, 50}, 9},
    {"", {0}, 0},
    {"   ", {267, 220}, 2},
    {"x\r\ny", {87, 201, 198, 88}, 4},
    {"tell well\t\tdone!!", {83, 270, 260, 270, 197, 197, 67, 78, 77, 68, 0, 0}, 12},
};

static void check_golden(int kind, const golden *g, size_t n) {
    cg_tokenizer *tok = load_fixture(kind);
    assert_int_equal(cg_tokenizer_get_kind(tok), CG_TOKENIZER_BPE);
    assert_int_equal(cg_tokenizer_vocab_size(tok), kind == GPT2 ? 273 : 275);
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(g[i].text);
        assert_ids(tok, g[i].text, len, g[i].ids, g[i].n);
        /* decoding gives the exact bytes back, except that Qwen2's NFC turned e + U+0301 into é */
        bool nfc_changed = kind == QWEN2 && strcmp(g[i].text, "e\xcc\x81") == 0;
        if (nfc_changed)
            assert_round_trip(tok, g[i].text, len, "\xc3\xa9", 2);
        else
            assert_round_trip(tok, g[i].text, len, g[i].text, len);
    }
    cg_tokenizer_free(tok);
}

static void test_bpe_gpt2_golden(void **state) {
    (void)state;
    REQUIRE_BPE();
    check_golden(GPT2, gpt2_golden, sizeof gpt2_golden / sizeof gpt2_golden[0]);
}

static void test_bpe_qwen2_golden(void **state) {
    (void)state;
    REQUIRE_BPE();
    check_golden(QWEN2, qwen2_golden, sizeof qwen2_golden / sizeof qwen2_golden[0]);
}

static void test_bpe_llama3_golden(void **state) {
    (void)state;
    REQUIRE_BPE();
    check_golden(LLAMA3, llama3_golden, sizeof llama3_golden / sizeof llama3_golden[0]);
}

/* ---------------------------------------------------------------- BPE: vocabulary, decoding, round trips */

static void test_bpe_vocab_and_decode(void **state) {
    (void)state;
    REQUIRE_BPE();
    cg_tokenizer *tok = load_fixture(QWEN2);
    /* the byte-level spellings: space is U+0120 'Ġ', newline U+010A 'Ċ', byte 0 U+0100 'Ā', '!' itself */
    assert_int_equal(cg_tokenizer_token_id(tok, "\xc4\xa0"), 220);
    assert_int_equal(cg_tokenizer_token_id(tok, "\xc4\x8a"), 198);
    assert_int_equal(cg_tokenizer_token_id(tok, "\xc4\x80"), 188);
    assert_int_equal(cg_tokenizer_token_id(tok, "!"), 0);
    assert_int_equal(cg_tokenizer_token_id(tok, "\xc4\xa0the"), 258);
    assert_string_equal(cg_tokenizer_token(tok, 261), "\xc4\xa0win");
    assert_int_equal(cg_tokenizer_token_id(tok, "<|im_end|>"), ID_IM_END);
    assert_int_equal(cg_tokenizer_token_id(tok, "<|nope|>"), -1);
    assert_null(cg_tokenizer_token(tok, 275));
    assert_true(cg_tokenizer_is_special(tok, ID_IM_START) && !cg_tokenizer_is_special(tok, 258));
    assert_int_equal(cg_tokenizer_eos_id(tok), ID_EOT); /* no tokenizer_config.json: <|endoftext|> */
    assert_int_equal(cg_tokenizer_bos_id(tok), -1);
    assert_int_equal(cg_tokenizer_pad_id(tok), -1);

    /* decoding: byte ids give raw bytes, even the pieces of one character (no replacement characters) */
    const int32_t emoji[] = {172, 253, 247, 224};
    char *text = NULL;
    size_t len = 0;
    assert_ok(cg_tokenizer_decode(tok, emoji, 2, &text, &len));
    assert_int_equal(len, 2);
    assert_memory_equal(text, "\xf0\x9f", 2);
    free(text);
    const int32_t mixed[] = {ID_IM_START, 84, 82, 263, 198, 188, 258, ID_IM_END};
    assert_ok(cg_tokenizer_decode(tok, mixed, 8, &text, &len));
    assert_int_equal(len, 32); /* 12 + "us" + "er" + "\n" + a NUL byte + " the" + 10 */
    assert_memory_equal(text, "<|im_start|>user\n\0 the<|im_end|>", 32);
    free(text);
    const int32_t out_of_range[] = {258, 275};
    assert_int_equal(cg_tokenizer_decode(tok, out_of_range, 2, &text, &len), CG_ERR_INVALID_ARG);
    assert_error_contains("id 275 at position 1 is out of range");
    const int32_t negative[] = {-1};
    assert_int_equal(cg_tokenizer_decode(tok, negative, 1, &text, &len), CG_ERR_INVALID_ARG);
    assert_null(text);
    assert_ok(cg_tokenizer_decode(tok, NULL, 0, &text, &len));
    assert_int_equal(len, 0);
    assert_string_equal(text, "");
    free(text);

    /* encoding text that is not UTF-8 is an error naming the offset */
    int32_t *ids = NULL;
    int64_t n;
    assert_int_equal(cg_tokenizer_encode(tok, "ab\xff", 3, &ids, &n), CG_ERR_INVALID_ARG);
    assert_error_contains("not valid UTF-8 at byte offset 2");
    assert_int_equal(cg_tokenizer_encode(tok, "\xc3", 1, &ids, &n), CG_ERR_INVALID_ARG);         /* truncated */
    assert_int_equal(cg_tokenizer_encode(tok, "\xed\xa0\x80", 3, &ids, &n), CG_ERR_INVALID_ARG); /* surrogate */
    assert_null(ids);
    cg_tokenizer_free(tok);
}

/* A deterministic mix of the hard cases: ASCII, accents, CJK, emoji, digits, whitespace runs, specials. */
static const char *const pool[] = {"a",
                                   "b",
                                   "Z",
                                   "q",
                                   "the",
                                   " the",
                                   "in",
                                   " w",
                                   "ll",
                                   "1",
                                   "2",
                                   "3",
                                   "45",
                                   " ",
                                   "  ",
                                   "\t",
                                   "\n",
                                   "\r\n",
                                   "\n\n",
                                   "'s",
                                   "'LL",
                                   "!",
                                   "?",
                                   ".",
                                   "\xc3\xa9",
                                   "\xc3\xb1",
                                   "\xc3\x9c",
                                   "\xe4\xb8\xad",
                                   "\xe6\x96\x87",
                                   "\xed\x95\x9c",
                                   "\xf0\x9f\x99\x82",
                                   "\xf0\x9f\x91\x8d\xf0\x9f\x8f\xbd",
                                   "\xc2\xa0",
                                   "\xe3\x80\x80",
                                   "\xd9\xa1",
                                   "<|endoftext|>",
                                   "<|im_start|>",
                                   "<|im_end|>",
                                   "<|",
                                   "|>",
                                   "\x7f",
                                   "\x01"};

static void test_bpe_round_trips(void **state) {
    (void)state;
    REQUIRE_BPE();
    const char *fixed = "Hello, world! caf\xc3\xa9 ni\xc3\xb1o \xe4\xb8\xad\xe6\x96\x87 \xf0\x9f\x99\x82 12345 "
                        "a   b\n\n  c\t\tend<|endoftext|>tail <|im_start|>x<|im_end|>";
    for (int kind = GPT2; kind <= LLAMA3; kind++) {
        cg_tokenizer *tok = load_fixture(kind);
        assert_round_trip(tok, fixed, strlen(fixed), fixed, strlen(fixed));
        uint64_t seed = 42 + (uint64_t)kind;
        for (int t = 0; t < 200; t++) {
            char text[512];
            size_t len = 0;
            int parts = (int)((cg_test_randf(&seed) + 1.0f) * 15.0f);
            for (int k = 0; k < parts; k++) {
                int pick = (int)((cg_test_randf(&seed) + 1.0f) * 0.5f * (float)(sizeof pool / sizeof pool[0]));
                if (pick >= (int)(sizeof pool / sizeof pool[0])) pick = 0;
                size_t pl = strlen(pool[pick]);
                memcpy(text + len, pool[pick], pl);
                len += pl;
            }
            assert_round_trip(tok, text, len, text, len);
        }
        cg_tokenizer_free(tok);
    }
}

/* Qwen2's NFC: canonical composition, reordering by combining class, singletons and Hangul; the expected
 * NFC forms are from Python's unicodedata, encoded with the Llama 3 fixture (no normalizer) to compare. */
static void test_bpe_nfc(void **state) {
    (void)state;
    REQUIRE_BPE();
    cg_tokenizer *qwen = load_fixture(QWEN2), *llama = load_fixture(LLAMA3);
    static const char *const cases[][2] = {
        {"e\xcc\x81\xcc\xa3", "\xe1\xba\xb9\xcc\x81"}, /* e + acute (230) + dot below (220) -> U+1EB9 + acute */
        {"\xe2\x84\xab", "\xc3\x85"},                  /* ANGSTROM SIGN -> Å (a singleton) */
        {"\xe1\x84\x80\xe1\x85\xa1", "\xea\xb0\x80"},  /* Hangul jamo L + V -> 가 */
        {"Cafe\xcc\x81 na\xc3\xafve", "Caf\xc3\xa9 na\xc3\xafve"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int32_t *want = NULL, *got = NULL;
        int64_t nw, ng;
        assert_ok(cg_tokenizer_encode(llama, cases[i][1], strlen(cases[i][1]), &want, &nw));
        assert_ok(cg_tokenizer_encode(qwen, cases[i][0], strlen(cases[i][0]), &got, &ng));
        assert_int_equal(ng, nw);
        assert_memory_equal(got, want, (size_t)nw * sizeof(int32_t));
        assert_round_trip(qwen, cases[i][0], strlen(cases[i][0]), cases[i][1], strlen(cases[i][1]));
        free(want);
        free(got);
    }
    cg_tokenizer_free(qwen);
    cg_tokenizer_free(llama);
}

/* Added tokens: the longest one wins where several start at the same place; a non-special one still splits. */
static void test_bpe_added_tokens(void **state) {
    (void)state;
    REQUIRE_BPE();
    char *json = fixture_json(QWEN2);
    char *more = replace(json, "\"added_tokens\": [",
                         "\"added_tokens\": [{\"id\": 300, \"content\": \"<|im\", \"special\": false}, ");
    cg_tokenizer *tok = NULL;
    assert_ok(cg_tokenizer_load_json(more, strlen(more), "more.json", &tok));
    assert_int_equal(cg_tokenizer_vocab_size(tok), 301);
    assert_false(cg_tokenizer_is_special(tok, 300));
    /* "<|im_start|>" beats its prefix "<|im"; "<|imx" has only the short one: [300, x] */
    const int32_t want[] = {ID_IM_START, 87, 300, 87, ID_IM_END};
    assert_ids(tok, "<|im_start|>x<|imx<|im_end|>", 28, want, 5);
    /* ids 275..299 belong to no token */
    const int32_t hole[] = {280};
    char *text;
    size_t len;
    assert_int_equal(cg_tokenizer_decode(tok, hole, 1, &text, &len), CG_ERR_INVALID_ARG);
    assert_error_contains("id 280 at position 0 is not assigned to any token");
    cg_tokenizer_free(tok);
    free(more);
    free(json);
}

/* A directory with tokenizer.json and tokenizer_config.json: the config names the special ids. */
static void test_bpe_directory_and_config(void **state) {
    (void)state;
    REQUIRE_BPE();
    char dir[128], path[160];
    snprintf(dir, sizeof dir, "%s/model", tmpdir);
    assert_int_equal(mkdir(dir, 0700), 0);
    char *json = fixture_json(QWEN2);
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    write_file(path, json);
    free(json);
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    write_file(path,
               "{\"bos_token\": null, \"eos_token\": \"<|im_end|>\", \"pad_token\": {\"content\": \"<|endoftext|>\"}}");
    cg_tokenizer *tok = NULL;
    assert_ok(cg_tokenizer_load(dir, &tok));
    assert_int_equal(cg_tokenizer_eos_id(tok), ID_IM_END);
    assert_int_equal(cg_tokenizer_pad_id(tok), ID_EOT);
    assert_int_equal(cg_tokenizer_bos_id(tok), -1);
    const int32_t want[] = {258};
    assert_ids(tok, " the", 4, want, 1);
    cg_tokenizer_free(tok);
    write_file(path, "{\"eos_token\": \"<|nope|>\"}");
    assert_int_equal(cg_tokenizer_load(dir, &tok), CG_ERR_FORMAT);
    assert_error_contains("tokenizer_config.json: eos_token '<|nope|>' is not in the vocabulary");
    assert_null(tok);
}

/* ---------------------------------------------------------------- malformed files */

typedef struct bad_case {
    int kind;
    const char *from, *to; /* the edit of the good fixture; from NULL: `to` is the whole file */
    cg_status status;
    const char *message;
} bad_case;

static const bad_case bad_cases[] = {
    {GPT2, NULL, "{\"model\": {\"type\": \"BPE\",", CG_ERR_FORMAT, "invalid JSON at byte"},
    {GPT2, NULL, "[1, 2]", CG_ERR_FORMAT, "the top level must be an object"},
    {GPT2, "\"model\": {", "\"modelx\": {", CG_ERR_FORMAT, "'model' is missing"},
    {GPT2, "\"type\": \"BPE\"", "\"type\": \"WordPiece\"", CG_ERR_UNSUPPORTED,
     "model.type 'WordPiece' is not supported"},
    {GPT2, "\"type\": \"BPE\", ", "", CG_ERR_FORMAT, "model.type is missing"},
    {GPT2, "\"e ll\"", "\"e qq\"", CG_ERR_FORMAT, "model.merges[14]: the right token 'qq' is not in model.vocab"},
    {GPT2, "\"e ll\"", "\"ell\"", CG_ERR_FORMAT, "model.merges[14] 'ell' is not two tokens separated by a space"},
    {GPT2, "\"e ll\"", "\"l e\"", CG_ERR_FORMAT, "model.merges[14]: the merged token 'le' is not in model.vocab"},
    {QWEN2, "[\"e\", \"ll\"]", "[\"e\", \"ll\", \"x\"]", CG_ERR_FORMAT,
     "model.merges[14] must be a string \"a b\" or a pair"},
    {GPT2, "\"\xc4\xa0xyz\": 271", "\"\xc4\xa0xyz\": 270", CG_ERR_FORMAT,
     "model.vocab gives id 270 to both 'ell' and '\xc4\xa0xyz'"},
    {GPT2, "\"\xc4\xa0xyz\": 271", "\"\xc4\xa0xyz\": -3", CG_ERR_FORMAT,
     "model.vocab['\xc4\xa0xyz'] = -3 is not a valid id"},
    {GPT2, "\"\xc4\xa0xyz\": 271", "\"\xc4\xa0xyz\": 2.5", CG_ERR_FORMAT,
     "model.vocab['\xc4\xa0xyz'] must be an integer"},
    {GPT2, "\"\xc4\xa0xyz\": 271", "\"\xc4\xa0xyz\": 271, \"ell\": 3", CG_ERR_FORMAT, "duplicate key 'ell'"},
    {GPT2, "\"!\": 0", "\"!!\": 0", CG_ERR_FORMAT, "model.vocab lacks the byte-level symbol '!' of byte 0x21"},
    {GPT2, "\"vocab\": {", "\"vocab\": [], \"x\": {", CG_ERR_FORMAT, "model.vocab must be an object"},
    {QWEN2, "\\\\p{N}|", "(\\\\p{N}|", CG_ERR_FORMAT,
     "pre_tokenizer.pretokenizers[0].pattern.Regex: the regex does not compile (PCRE2 at offset"},
    {QWEN2, "\\\\p{N}|", "\\\\p{Nope}|", CG_ERR_FORMAT, "unknown property"},
    {QWEN2, "{\"type\": \"Split\"", "{\"type\": \"Metaspace\"", CG_ERR_UNSUPPORTED,
     "pre_tokenizer.pretokenizers[0].type 'Metaspace' is not supported"},
    {QWEN2, "\"Isolated\"", "\"Removed\"", CG_ERR_UNSUPPORTED,
     "pre_tokenizer.pretokenizers[0].behavior 'Removed' is not supported"},
    {QWEN2, "\"invert\": false", "\"invert\": true", CG_ERR_UNSUPPORTED,
     "pretokenizers[0].invert true is not supported"},
    {QWEN2, "\"use_regex\": false}]",
     "\"use_regex\": false}, {\"type\": \"Split\", \"pattern\": {\"String\": \"x\"}, \"behavior\": \"Isolated\"}]",
     CG_ERR_UNSUPPORTED, "pre_tokenizer.pretokenizers[1]: ByteLevel must be the last pre-tokenizer"},
    {GPT2, "\"pre_tokenizer\": {", "\"pre_tokenizer\": null, \"x\": {", CG_ERR_UNSUPPORTED, "pre_tokenizer is missing"},
    {QWEN2, "{\"type\": \"NFC\"}", "{\"type\": \"Lowercase\"}", CG_ERR_UNSUPPORTED,
     "normalizer.type 'Lowercase' is not supported"},
    {GPT2, "\"decoder\": {\"type\": \"ByteLevel\"", "\"decoder\": {\"type\": \"WordPiece\"", CG_ERR_UNSUPPORTED,
     "decoder.type 'WordPiece' is not supported"},
    {GPT2, "\"decoder\": {", "\"decoder\": null, \"x\": {", CG_ERR_UNSUPPORTED, "decoder is missing"},
    {GPT2, "\"dropout\": null", "\"dropout\": 0.1", CG_ERR_UNSUPPORTED, "model.dropout must be null"},
    {GPT2, "\"continuing_subword_prefix\": null", "\"continuing_subword_prefix\": \"##\"", CG_ERR_UNSUPPORTED,
     "model.continuing_subword_prefix must be null"},
    {GPT2, "\"id\": 272", "\"id\": -1", CG_ERR_FORMAT, "added_tokens[0].id = -1 is not a valid id"},
    {GPT2, "\"id\": 272", "\"id\": \"272\"", CG_ERR_FORMAT, "added_tokens[0].id must be an integer"},
    {GPT2, "\"id\": 272", "\"id\": 100", CG_ERR_FORMAT, "added_tokens[0] '<|endoftext|>' has id 100, which is already"},
    {GPT2, "\"id\": 272", "\"id\": 16777216", CG_ERR_FORMAT, "added_tokens[0].id = 16777216 is not a valid id"},
    {GPT2, "\"id\": 272, ", "", CG_ERR_FORMAT, "added_tokens[0].id is missing"},
    {GPT2, "\"content\": \"<|endoftext|>\"", "\"content\": \"ell\"", CG_ERR_FORMAT,
     "added_tokens[0] 'ell' has id 272 but the vocabulary gives it id 270"},
    {GPT2, "\"lstrip\": false", "\"lstrip\": true", CG_ERR_UNSUPPORTED, "added_tokens[0].lstrip true is not supported"},
    {GPT2, "\"special\": true", "\"special\": 1", CG_ERR_FORMAT, "added_tokens[0].special must be true or false"},
};

static void test_bpe_malformed(void **state) {
    (void)state;
    REQUIRE_BPE();
    char path[128];
    snprintf(path, sizeof path, "%s/bad.json", tmpdir);
    for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++) {
        const bad_case *c = &bad_cases[i];
        char *good = fixture_json(c->kind);
        char *text = c->from ? replace(good, c->from, c->to) : strdup(c->to);
        write_file(path, text);
        cg_tokenizer *tok = (cg_tokenizer *)&tok; /* must come back NULL */
        cg_status st = cg_tokenizer_load(path, &tok);
        if (st != c->status || !strstr(cg_last_error(), c->message) || !strstr(cg_last_error(), path))
            print_error("case %zu: status %d, message \"%s\"; expected %d with \"%s\" and the path\n", i, st,
                        cg_last_error(), c->status, c->message);
        assert_int_equal(st, c->status);
        assert_non_null(strstr(cg_last_error(), c->message));
        assert_non_null(strstr(cg_last_error(), path));
        assert_null(tok);
        free(text);
        free(good);
    }
    cg_tokenizer *tok = NULL;
    snprintf(path, sizeof path, "%s/missing.json", tmpdir);
    assert_int_equal(cg_tokenizer_load(path, &tok), CG_ERR_IO);
    assert_error_contains("missing.json: cannot open");
    assert_int_equal(cg_tokenizer_load(tmpdir, &tok), CG_ERR_IO); /* a directory without tokenizer.json */
    assert_error_contains("tokenizer.json: cannot open");
    assert_null(tok);
}

static void test_without_pcre2(void **state) {
    (void)state;
    if (have_bpe()) skip();
    cg_tokenizer *tok = NULL;
    assert_int_equal(cg_tokenizer_load_json("{}", 2, "t.json", &tok), CG_ERR_UNSUPPORTED);
    assert_error_contains("built without");
    assert_null(tok);
}

/* ---------------------------------------------------------------- cgrad tokenize */

static void test_cli_tokenize(void **state) {
    (void)state;
    char cmd[512], out[4096];
    assert_int_equal(cg_test_run_cgrad("tokenize --chars '0123456789+=' --text '12+3=15'", out, sizeof out), 0);
    assert_string_equal(out, "4,5,13,6,14,4,8\n");
    assert_int_equal(cg_test_run_cgrad("tokenize --chars '0123456789+=' --decode 1,4,13,5,2", out, sizeof out), 0);
    assert_string_equal(out, "<bos>1+2<eos>\n");
    assert_int_equal(cg_test_run_cgrad("tokenize --chars '0123' --text 'x'", out, sizeof out), 1);
    assert_non_null(strstr(out, "cgrad tokenize: cg_tokenizer_encode: byte 0x78"));
    assert_int_equal(cg_test_run_cgrad("tokenize --text hi", out, sizeof out), 2);
    assert_int_equal(cg_test_run_cgrad("tokenize --bogus", out, sizeof out), 2);
    assert_non_null(strstr(out, "unknown flag '--bogus'"));
    if (!have_bpe()) return;

    char *json = fixture_json(LLAMA3);
    char path[128];
    snprintf(path, sizeof path, "%s/cli.json", tmpdir);
    write_file(path, json);
    free(json);
    snprintf(cmd, sizeof cmd, "tokenize --tokenizer %s --text ' the here<|im_end|> xyz'", path);
    assert_int_equal(cg_test_run_cgrad(cmd, out, sizeof out), 0);
    assert_string_equal(out, "258,220,257,262,274,271\n");
    snprintf(cmd, sizeof cmd, "tokenize --tokenizer %s --decode 258,220,257,262,274,271", path);
    assert_int_equal(cg_test_run_cgrad(cmd, out, sizeof out), 0);
    assert_string_equal(out, " the here<|im_end|> xyz\n");
    snprintf(cmd, sizeof cmd, "tokenize --tokenizer %s --text ' the' --tokens", path);
    assert_int_equal(cg_test_run_cgrad(cmd, out, sizeof out), 0);
    assert_string_equal(out, "258\t\xc4\xa0the\n");
    snprintf(cmd, sizeof cmd, "tokenize --tokenizer %s --decode 1,99999", path);
    assert_int_equal(cg_test_run_cgrad(cmd, out, sizeof out), 1);
    assert_non_null(strstr(out, "cgrad tokenize: cg_tokenizer_decode: id 99999 at position 1 is out of range"));
    snprintf(cmd, sizeof cmd, "tokenize --tokenizer %s --decode 1,x", path);
    assert_int_equal(cg_test_run_cgrad(cmd, out, sizeof out), 1);
    assert_non_null(strstr(out, "is not a comma-separated list of ids"));
    snprintf(cmd, sizeof cmd, "tokenize --tokenizer %s/nope.json --text a", tmpdir);
    assert_int_equal(cg_test_run_cgrad(cmd, out, sizeof out), 1);
    assert_non_null(strstr(out, "nope.json: cannot open"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_char_tokenizer),
        cmocka_unit_test(test_bpe_gpt2_golden),
        cmocka_unit_test(test_bpe_qwen2_golden),
        cmocka_unit_test(test_bpe_llama3_golden),
        cmocka_unit_test(test_bpe_vocab_and_decode),
        cmocka_unit_test(test_bpe_round_trips),
        cmocka_unit_test(test_bpe_nfc),
        cmocka_unit_test(test_bpe_added_tokens),
        cmocka_unit_test(test_bpe_directory_and_config),
        cmocka_unit_test(test_bpe_malformed),
        cmocka_unit_test(test_without_pcre2),
        cmocka_unit_test(test_cli_tokenize),
    };
    return cmocka_run_group_tests_name("tokenizer", tests, setup_dir, remove_dir);
}
