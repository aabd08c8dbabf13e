// libFuzzer harness for the safetensors reader (and the JSON layer under it).
//
// Build and run (from the repository root):
//   clang -g -O1 -std=c11 -D_GNU_SOURCE -DCG_HAVE_CJSON -fsanitize=fuzzer,address,undefined -I.
//     tests/fuzz_safetensors.c core/*.c -lcjson -lm -lpthread -ldl -o build/fuzz_safetensors
//   (one command line)
//   mkdir -p build/fuzz_corpus && build/fuzz_safetensors -max_total_time=60 build/fuzz_corpus
//
/* Each input is written to an in-memory file (memfd) and opened through /proc/self/fd, so the real
 * open + fstat + mmap path runs; a file that opens is then queried and every loadable tensor is copied
 * into f32 and into its own dtype. Not named test_*.c: the Makefile's test rule does not build it. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "cgrad.h"
#include "core/json.h"
#include "core/safetensors.h"

static void exercise(const cg_safetensors *st) {
    cg_arena *a = cg_step_arena(CG_CPU);
    int n = cg_safetensors_count(st);
    for (int i = 0; i < n; i++) {
        const cg_safetensors_entry *e = cg_safetensors_entry_at(st, i);
        if (cg_safetensors_find(st, e->name) != e) __builtin_trap(); /* the index must find every entry */
        if (e->nbytes > ((size_t)1 << 24)) continue;                  /* keep each run small */
        cg_tensor *t = cg_safetensors_load(st, e->name, a, CG_F32);
        if (e->dtype_supported != (t != NULL)) __builtin_trap();
        if (e->dtype_supported) (void)cg_safetensors_load(st, e->name, a, e->dtype);
    }
    for (int i = 0; i < cg_safetensors_metadata_count(st); i++) {
        const char *k, *v;
        if (!cg_safetensors_metadata_at(st, i, &k, &v) || cg_safetensors_metadata(st, k) == NULL) __builtin_trap();
    }
    cg_step_end();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static int fd = -1;
    if (fd < 0) fd = memfd_create("cg_fuzz_safetensors", 0);
    if (fd < 0) return 0;
    if (ftruncate(fd, 0) != 0 || pwrite(fd, data, size, 0) != (ssize_t)size) return 0;
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    cg_safetensors *st = NULL;
    if (cg_safetensors_open(path, &st) == CG_OK) {
        exercise(st);
        cg_safetensors_close(st);
    } else if (st != NULL || cg_last_error()[0] == '\0') {
        __builtin_trap(); /* a failure must leave no handle and a message */
    }
    /* The JSON layer on its own, over the raw bytes. */
    cJSON *j = NULL;
    if (cg_json_parse((const char *)data, size, "fuzz", &j) == CG_OK) {
        (void)cg_json_check_unique_keys(j, "fuzz");
        cg_json_free(j);
    }
    return 0;
}
