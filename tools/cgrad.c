/* The cgrad command-line program: `cgrad <subcommand> [--flags]`. Each subcommand lives in its own file
 * (tools/cmd_*.c) and is listed in the table below. */
#include <stdio.h>
#include <string.h>

#include "tools/commands.h"

static const cg_command commands[] = {
    {"info", "show the build, the devices and a quick CPU GEMM figure", cg_cmd_info},
    {"generate", "generate text from a preset or checkpoint (KV cache, greedy or sampled)", cg_cmd_generate},
    {"inspect", "show a .safetensors file, a model directory, an llm.c checkpoint or token shard", cg_cmd_inspect},
    {"plot", "draw keys of a metrics .jsonl file (reward, accuracy, loss...) per step to an SVG", cg_cmd_plot},
    {"rl", "policy-gradient RL on a verifiable task (no flags: the default demo)", cg_cmd_rl},
    {"train", "train a model on llm.c token shards or a text file (checkpoints, --resume)", cg_cmd_train},
    {"tokenize", "encode text to token ids or decode ids with a tokenizer.json or a character tokenizer", cg_cmd_tokenize},
};
static const int n_commands = (int)(sizeof commands / sizeof commands[0]);

static void usage(FILE *f) {
    fprintf(f, "usage: cgrad <command> [--flags]   (cgrad <command> --help for its flags)\n\ncommands:\n");
    for (int i = 0; i < n_commands; i++) fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].help);
    fprintf(f, "\n  --version  print the version and the features compiled in\n");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "version") == 0) {
        printf("cgrad %s (%s)\n", cg_version(), cg_features());
        return 0;
    }
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        usage(stdout);
        return 0;
    }
    for (int i = 0; i < n_commands; i++)
        if (strcmp(cmd, commands[i].name) == 0) return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "cgrad: unknown command '%s' (run 'cgrad --help' for the list)\n", cmd);
    return 2;
}
