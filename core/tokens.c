/* llm.c token shards: a validating mmap reader and an atomic writer. Format in tokens.h. */
#include "core/tokens.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

struct cg_token_file {
    char *path;
    const uint8_t *map; /* the whole file */
    size_t map_bytes;
    int64_t ntok;
    int token_bytes;
};

static uint32_t load_le32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void store_le32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

/* Checks the header against the file size; fills token_bytes and ntok. */
static cg_status check_header(const char *path, const uint8_t *h, int64_t file_bytes, int *token_bytes,
                              int64_t *ntok) {
    int32_t magic = (int32_t)load_le32(h), version = (int32_t)load_le32(h + 4), count = (int32_t)load_le32(h + 8);
    const char *kind;
    int32_t want_version;
    if (magic == CG_TOKEN_MAGIC_GPT2) {
        kind = "GPT-2 uint16";
        want_version = CG_TOKEN_VERSION_GPT2;
        *token_bytes = 2;
    } else if (magic == CG_TOKEN_MAGIC_LLAMA3) {
        kind = "Llama 3 uint32";
        want_version = CG_TOKEN_VERSION_LLAMA3;
        *token_bytes = 4;
    } else if (magic == CG_TOKEN_MAGIC_EVAL) {
        return cg_set_error(CG_ERR_FORMAT,
                            "token file %s: magic %d is llm.c's eval-example format (HellaSwag/MMLU), not a "
                            "token shard",
                            path, magic);
    } else {
        return cg_set_error(CG_ERR_FORMAT,
                            "token file %s: bad magic %d (0x%08x); expected %d (GPT-2, uint16 tokens) or %d "
                            "(Llama 3, uint32 tokens)",
                            path, magic, (unsigned)magic, CG_TOKEN_MAGIC_GPT2, CG_TOKEN_MAGIC_LLAMA3);
    }
    if (version != want_version)
        return cg_set_error(CG_ERR_FORMAT, "token file %s: magic %d (%s) needs version %d, found version %d", path,
                            magic, kind, want_version, version);
    if (count < 0)
        return cg_set_error(CG_ERR_FORMAT, "token file %s: negative token count %d in the header", path, count);
    int64_t expect = CG_TOKEN_HEADER_BYTES + (int64_t)count * *token_bytes;
    if (file_bytes != expect)
        return cg_set_error(CG_ERR_FORMAT,
                            "token file %s: size mismatch: the header's %d %s tokens need %lld bytes (1024-byte "
                            "header + %lld), but the file has %lld bytes (%s)",
                            path, count, kind, (long long)expect, (long long)(expect - CG_TOKEN_HEADER_BYTES),
                            (long long)file_bytes, file_bytes < expect ? "truncated" : "trailing bytes");
    *ntok = count;
    return CG_OK;
}

cg_status cg_token_file_open(const char *path, cg_token_file **out) {
    if (!out) return cg_set_error(CG_ERR_INVALID_ARG, "token_file_open: NULL output pointer");
    *out = NULL;
    if (!path) return cg_set_error(CG_ERR_INVALID_ARG, "token_file_open: NULL path");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return cg_set_error(CG_ERR_IO, "token file %s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        cg_status s = cg_set_error(CG_ERR_IO, "token file %s: cannot stat: %s", path, strerror(errno));
        close(fd);
        return s;
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return cg_set_error(CG_ERR_IO, "token file %s: not a regular file", path);
    }
    int64_t file_bytes = (int64_t)st.st_size;
    if (file_bytes < CG_TOKEN_HEADER_BYTES) {
        close(fd);
        return cg_set_error(CG_ERR_FORMAT, "token file %s: %lld bytes, shorter than the %d-byte header", path,
                            (long long)file_bytes, CG_TOKEN_HEADER_BYTES);
    }
    void *map = mmap(NULL, (size_t)file_bytes, PROT_READ, MAP_PRIVATE, fd, 0);
    int map_errno = errno;
    close(fd); /* the mapping keeps the file */
    if (map == MAP_FAILED)
        return cg_set_error(CG_ERR_IO, "token file %s: cannot mmap %lld bytes: %s", path, (long long)file_bytes,
                            strerror(map_errno));
    int token_bytes = 0;
    int64_t ntok = 0;
    cg_status s = check_header(path, map, file_bytes, &token_bytes, &ntok);
    if (s != CG_OK) {
        munmap(map, (size_t)file_bytes);
        return s;
    }
    cg_token_file *f = calloc(1, sizeof *f);
    char *path_copy = f ? strdup(path) : NULL;
    if (!f || !path_copy) {
        free(f);
        munmap(map, (size_t)file_bytes);
        return cg_set_error(CG_ERR_OOM, "token file %s: out of host memory", path);
    }
    f->path = path_copy;
    f->map = map;
    f->map_bytes = (size_t)file_bytes;
    f->ntok = ntok;
    f->token_bytes = token_bytes;
    *out = f;
    return CG_OK;
}

void cg_token_file_close(cg_token_file *f) {
    if (!f) return;
    munmap((void *)f->map, f->map_bytes);
    free(f->path);
    free(f);
}

int64_t cg_token_file_count(const cg_token_file *f) { return f ? f->ntok : 0; }
int cg_token_file_token_bytes(const cg_token_file *f) { return f ? f->token_bytes : 0; }
const char *cg_token_file_path(const cg_token_file *f) { return f ? f->path : ""; }

cg_status cg_token_file_read(const cg_token_file *f, int64_t start, int64_t count, int32_t *out) {
    if (!f) return cg_set_error(CG_ERR_INVALID_ARG, "token_file_read: NULL file");
    if (start < 0 || count < 0 || start > f->ntok || count > f->ntok - start)
        return cg_set_error(CG_ERR_INVALID_ARG,
                            "token file %s: cannot read tokens [%lld, %lld + %lld): the file has %lld tokens",
                            f->path, (long long)start, (long long)start, (long long)count, (long long)f->ntok);
    if (count > 0 && !out) return cg_set_error(CG_ERR_INVALID_ARG, "token file %s: NULL output buffer", f->path);
    const uint8_t *body = f->map + CG_TOKEN_HEADER_BYTES;
    if (f->token_bytes == 2) {
        const uint8_t *p = body + 2 * start;
        for (int64_t i = 0; i < count; i++) out[i] = (int32_t)((uint32_t)p[2 * i] | (uint32_t)p[2 * i + 1] << 8);
    } else {
        const uint8_t *p = body + 4 * start;
        for (int64_t i = 0; i < count; i++) {
            uint32_t t = load_le32(p + 4 * i);
            if (t > INT32_MAX)
                return cg_set_error(CG_ERR_FORMAT, "token file %s: token %lld is %u, past the int32 range", f->path,
                                    (long long)(start + i), (unsigned)t);
            out[i] = (int32_t)t;
        }
    }
    return CG_OK;
}

/* ------------------------------------------------------------------ writer */

static int write_all(int fd, const uint8_t *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* fsync of the directory holding path, so the rename itself survives a crash. Best effort: some file
 * systems refuse to fsync a directory. */
static void sync_parent_dir(const char *path) {
    const char *slash = strrchr(path, '/');
    char dir[4096];
    if (!slash) {
        strcpy(dir, ".");
    } else if (slash == path) {
        strcpy(dir, "/");
    } else {
        size_t n = (size_t)(slash - path);
        if (n >= sizeof dir) return;
        memcpy(dir, path, n);
        dir[n] = '\0';
    }
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return;
    (void)fsync(fd);
    close(fd);
}

cg_status cg_token_file_write(const char *path, const int32_t *tokens, int64_t n, int token_bytes) {
    if (!path) return cg_set_error(CG_ERR_INVALID_ARG, "token_file_write: NULL path");
    if (token_bytes != 2 && token_bytes != 4)
        return cg_set_error(CG_ERR_INVALID_ARG, "token file %s: token_bytes must be 2 (uint16) or 4 (uint32), got %d",
                            path, token_bytes);
    if (n < 0 || n > INT32_MAX)
        return cg_set_error(CG_ERR_INVALID_ARG, "token file %s: %lld tokens; the header holds 0 to %d", path,
                            (long long)n, INT32_MAX);
    if (n > 0 && !tokens) return cg_set_error(CG_ERR_INVALID_ARG, "token file %s: NULL tokens", path);
    int64_t limit = token_bytes == 2 ? 65536 : (int64_t)INT32_MAX + 1;
    for (int64_t i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= limit)
            return cg_set_error(CG_ERR_INVALID_ARG, "token file %s: token %lld is %d, outside [0, %lld) for %s tokens",
                                path, (long long)i, tokens[i], (long long)limit, token_bytes == 2 ? "uint16" : "uint32");

    size_t plen = strlen(path);
    char *tmp = malloc(plen + 16);
    if (!tmp) return cg_set_error(CG_ERR_OOM, "token file %s: out of host memory", path);
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmp.XXXXXX", 12);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        cg_status s = cg_set_error(CG_ERR_IO, "token file %s: cannot create a temporary file next to it: %s", path,
                                   strerror(errno));
        free(tmp);
        return s;
    }
    (void)fchmod(fd, 0644); /* mkstemp makes 0600; shards are meant to be shared */

    uint8_t header[CG_TOKEN_HEADER_BYTES] = {0};
    store_le32(header, token_bytes == 2 ? CG_TOKEN_MAGIC_GPT2 : CG_TOKEN_MAGIC_LLAMA3);
    store_le32(header + 4, token_bytes == 2 ? CG_TOKEN_VERSION_GPT2 : CG_TOKEN_VERSION_LLAMA3);
    store_le32(header + 8, (uint32_t)n);
    const char *failed = NULL; /* what went wrong, for the message */
    int err = 0;
    if (write_all(fd, header, sizeof header) != 0) {
        failed = "write";
        err = errno;
    }
    /* the body goes out in chunks of little-endian tokens */
    enum { CHUNK_TOKENS = 16384 };
    uint8_t *buf = failed ? NULL : malloc((size_t)CHUNK_TOKENS * 4);
    if (!failed && !buf) {
        failed = "allocate a write buffer for";
        err = ENOMEM;
    }
    for (int64_t i = 0; !failed && i < n; i += CHUNK_TOKENS) {
        int64_t m = n - i < CHUNK_TOKENS ? n - i : CHUNK_TOKENS;
        for (int64_t j = 0; j < m; j++) {
            uint32_t t = (uint32_t)tokens[i + j];
            if (token_bytes == 2) {
                buf[2 * j] = (uint8_t)t;
                buf[2 * j + 1] = (uint8_t)(t >> 8);
            } else {
                store_le32(buf + 4 * j, t);
            }
        }
        if (write_all(fd, buf, (size_t)(m * token_bytes)) != 0) {
            failed = "write";
            err = errno;
        }
    }
    free(buf);
    if (!failed && fsync(fd) != 0) {
        failed = "fsync";
        err = errno;
    }
    if (close(fd) != 0 && !failed) {
        failed = "close";
        err = errno;
    }
    if (!failed && rename(tmp, path) != 0) {
        failed = "rename the temporary file onto";
        err = errno;
    }
    if (failed) {
        unlink(tmp);
        free(tmp);
        return cg_set_error(CG_ERR_IO, "token file %s: cannot %s it: %s", path, failed, strerror(err));
    }
    free(tmp);
    sync_parent_dir(path);
    return CG_OK;
}
