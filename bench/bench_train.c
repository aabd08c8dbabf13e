/* The issue-6 training benchmark: `cgrad train --model gpt2:d12` (GPT-2 124M, random init) on random-token
 * llm.c shards, B=64 T=1024, bf16 compute with fp32 masters, AdamW, 30 steps, on the GPU; cgrad prints
 * tokens/s, MFU (against the H100/H200 bf16 dense peak, 989.4 TFLOP/s) and peak memory per step and at the
 * end. bench/torch_gpt2.py runs the same step in PyTorch (`make bench-train` runs both).
 *
 *   bench_train [--cgrad PATH] [--dir DIR] [--steps N] [--batch B] [--seq T] [--model PRESET] [--dtype bf16|f32]
 *
 * It writes one GPT-2 shard (magic 20240520, uint16 tokens, uniform over the 50257-token vocabulary, fixed
 * seed) of steps * B * T + 1 tokens into DIR (default /tmp/cgrad_bench_train) and then runs cgrad (default:
 * ../bin/cgrad next to this binary). Without a GPU it prints "no CUDA device: skipped" and exits 0. */
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cgrad.h"

int main(int argc, char **argv) {
    const char *cgrad = NULL, *dir = "/tmp/cgrad_bench_train", *model = "gpt2:d12", *dtype = "bf16";
    long long steps = 30, batch = 64, seq = 1024;
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            fprintf(stderr, "bench_train: %s needs a value\n", f);
            return 2;
        }
        if (strcmp(f, "--cgrad") == 0) cgrad = v;
        else if (strcmp(f, "--dir") == 0) dir = v;
        else if (strcmp(f, "--model") == 0) model = v;
        else if (strcmp(f, "--dtype") == 0) dtype = v;
        else if (strcmp(f, "--steps") == 0) steps = atoll(v);
        else if (strcmp(f, "--batch") == 0) batch = atoll(v);
        else if (strcmp(f, "--seq") == 0) seq = atoll(v);
        else {
            fprintf(stderr, "bench_train: unknown flag '%s'\n", f);
            return 2;
        }
        i++;
    }
    if (steps < 1 || batch < 1 || seq < 1) {
        fprintf(stderr, "bench_train: --steps, --batch and --seq must be >= 1\n");
        return 2;
    }
    if (cg_cuda_device_count() == 0) {
        printf("bench_train: no CUDA device: skipped\n");
        return 0;
    }
    char self[4096], bin[4200];
    if (!cgrad) {
        snprintf(self, sizeof self, "%s", argv[0]);
        snprintf(bin, sizeof bin, "%s/../bin/cgrad", dirname(self));
        cgrad = bin;
    }
    mkdir(dir, 0755);
    char shard[4200];
    snprintf(shard, sizeof shard, "%s/bench_train_000000.bin", dir);
    int64_t n = (int64_t)(steps * batch * seq + 1);
    int32_t *toks = malloc(sizeof *toks * (size_t)n);
    if (!toks) {
        fprintf(stderr, "bench_train: out of memory for %lld tokens\n", (long long)n);
        return 1;
    }
    uint64_t s = 0x9E3779B97F4A7C15ull;
    for (int64_t i = 0; i < n; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        toks[i] = (int32_t)(s % 50257u);
    }
    cg_status st = cg_token_file_write(shard, toks, n, 2);
    free(toks);
    if (st != CG_OK) {
        fprintf(stderr, "bench_train: %s\n", cg_last_error());
        return 1;
    }
    char cmd[16384];
    snprintf(cmd, sizeof cmd,
             "'%s' train --model %s --data '%s' --device cuda --dtype %s --batch %lld --seq %lld --steps %lld "
             "--optimizer adamw --lr 6e-4 --warmup 0 --schedule constant --weight-decay 0.1 --clip 1 --val-frac 0",
             cgrad, model, shard, dtype, batch, seq, steps);
    printf("bench_train: %s\n", cmd);
    fflush(stdout);
    int rc = system(cmd);
    remove(shard);
    return rc == 0 ? 0 : 1;
}
