/* llm.c token shards (.bin): what the dev/data scripts of llm.c write and its dataloader reads.
 *
 * Layout (little-endian):
 *   header: 256 int32 (1024 bytes); header[0] = magic, header[1] = version, header[2] = ntok, rest 0.
 *     GPT-2:   magic 20240520, version 1, tokens are uint16.
 *     Llama 3: magic 20240801, version 7, tokens are uint32.
 *   body:   ntok tokens; the file is exactly 1024 + ntok * token_bytes bytes long.
 * (Magic 20240522 is llm.c's HellaSwag/MMLU eval file, a different format; it is rejected here by name.)
 *
 * The reader maps the file read-only and checks everything above on open, so a later read can only fail
 * on its own arguments (or on a uint32 token past the int32 range). Like any mmap reader, it assumes the
 * file is not truncated by another process while open. */
#ifndef CG_TOKENS_H
#define CG_TOKENS_H

#include <stdint.h>

#include "core/error.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CG_TOKEN_HEADER_INTS 256
#define CG_TOKEN_HEADER_BYTES 1024
#define CG_TOKEN_MAGIC_GPT2 20240520
#define CG_TOKEN_VERSION_GPT2 1
#define CG_TOKEN_MAGIC_LLAMA3 20240801
#define CG_TOKEN_VERSION_LLAMA3 7
#define CG_TOKEN_MAGIC_EVAL 20240522

typedef struct cg_token_file cg_token_file;

/* Opens and validates a shard. Errors: CG_ERR_IO (cannot open/stat/map, not a regular file),
 * CG_ERR_FORMAT (short header, bad magic or version, negative count, size mismatch); every message
 * names the file. *out is NULL on error. */
cg_status cg_token_file_open(const char *path, cg_token_file **out);
void cg_token_file_close(cg_token_file *f);

int64_t cg_token_file_count(const cg_token_file *f);
/* 2 (uint16, GPT-2) or 4 (uint32, Llama 3). */
int cg_token_file_token_bytes(const cg_token_file *f);
/* The path given to cg_token_file_open. */
const char *cg_token_file_path(const cg_token_file *f);

/* Tokens [start, start + count) into out as int32. Needs 0 <= start, 0 <= count,
 * start + count <= count of the file. A uint32 token above INT32_MAX is a CG_ERR_FORMAT error naming its
 * position (nothing a real vocabulary produces). */
cg_status cg_token_file_read(const cg_token_file *f, int64_t start, int64_t count, int32_t *out);

/* Writes a shard of n tokens with token_bytes 2 (GPT-2 header) or 4 (Llama 3 header). Every token must fit:
 * 0 <= t < 65536 for 2 bytes, t >= 0 for 4; n <= INT32_MAX (the header's count is an int32). Writes
 * to a temporary file in the same directory, fsyncs it, then renames it over path, so a reader sees the
 * old file or the whole new one, never a partial one. Nothing is left behind on error. */
cg_status cg_token_file_write(const char *path, const int32_t *tokens, int64_t n, int token_bytes);

#ifdef __cplusplus
}
#endif
#endif
