/* libFuzzer harness for the tokenizer.json loader (cg_tokenizer_load_json) and, for every input that loads,
 * the BPE encoder and decoder: a fixed text plus the input's own bytes are encoded, decoded and must come
 * back byte for byte. Built and run by `make fuzz` (FUZZ_TARGET=tokenizer). Not named test_*.c: the
 * Makefile's test rule does not build it. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/context.h"
#include "models/tokenizer.h"

static void round_trip(const cg_tokenizer *tok, const char *text, size_t len) {
    int32_t *ids = NULL;
    int64_t n = 0;
    if (cg_tokenizer_encode(tok, text, len, &ids, &n) != CG_OK) return; /* e.g. invalid UTF-8: a clean error */
    char *back = NULL;
    size_t back_len = 0;
    if (cg_tokenizer_decode(tok, ids, n, &back, &back_len) != CG_OK) __builtin_trap(); /* own ids must decode */
    /* byte-level BPE is lossless, except that add_prefix_space (HF's default when the key is absent) puts a
     * space in front of each segment between added tokens: equal once spaces are skipped, never shorter */
    if (back_len < len) __builtin_trap();
    size_t i = 0, j = 0;
    while (i < len || j < back_len) {
        if (i < len && text[i] == ' ') { i++; continue; }
        if (j < back_len && back[j] == ' ') { j++; continue; }
        if (i == len || j == back_len || text[i] != back[j]) __builtin_trap();
        i++, j++;
    }
    free(back);
    free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    cg_tokenizer *tok = NULL;
    if (cg_tokenizer_load_json((const char *)data, size, "fuzz", &tok) == CG_OK) {
        static const char text[] = "Hello, world! 12345  \n\n caf\xc3\xa9 \xe4\xb8\xad\xe6\x96\x87 \xf0\x9f\x99\x82";
        round_trip(tok, text, sizeof text - 1);
        round_trip(tok, (const char *)data, size < 256 ? size : 256);
        cg_tokenizer_free(tok);
    }
    cg_step_end();
    return 0;
}
