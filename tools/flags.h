/* Flag values for the cgrad subcommands: integers and finite numbers, with the one-line usage error every
 * command prints ("cgrad CMD: FLAG takes an integer, not 'x'"). */
#ifndef CG_TOOLS_FLAGS_H
#define CG_TOOLS_FLAGS_H

#include <stdint.h>

/* 0 on success; 2 (the usage-error exit code) after printing the error. */
int cg_flag_i64(const char *cmd, const char *flag, const char *value, int64_t *out);
int cg_flag_f32(const char *cmd, const char *flag, const char *value, float *out);

#endif
