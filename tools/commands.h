/* Subcommands of the cgrad program. Each takes argv with argv[0] = its own name and returns the exit
 * code; errors are printed as one line on stderr: "cgrad <command>: <message>". */
#ifndef CG_TOOLS_COMMANDS_H
#define CG_TOOLS_COMMANDS_H

#include "cgrad.h"

typedef struct cg_command {
    const char *name;
    const char *help;
    int (*run)(int argc, char **argv);
} cg_command;

int cg_cmd_info(int argc, char **argv);
int cg_cmd_inspect(int argc, char **argv);
int cg_cmd_generate(int argc, char **argv);
int cg_cmd_tokenize(int argc, char **argv);
int cg_cmd_plot(int argc, char **argv);
int cg_cmd_rl(int argc, char **argv);
int cg_cmd_train(int argc, char **argv);

#endif
