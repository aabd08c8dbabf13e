/* Training checkpoints: the training-state file (header + FNV-1a checksum), checkpoint directories built
 * under a temporary name and renamed into place, keep-last-K and resume (layout in optim/train.h). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "models/checkpoint.h"
#include "optim/train_internal.h"

#define STATE_MAGIC "CGTRNST1"
#define STATE_VERSION 1u
#define STATE_HEADER_BYTES 32
#define STATE_FILE "train_state.bin"
#define CKPT_PREFIX "ckpt_"
#define CKPT_DIGITS 8

static uint64_t fnv1a64(const unsigned char *p, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

/* ------------------------------------------------------------------ byte cursors */

typedef struct writer {
    unsigned char *p;
} writer;

static void w_bytes(writer *w, const void *src, size_t n) {
    if (n) memcpy(w->p, src, n);
    w->p += n;
}
static void w_u32(writer *w, uint32_t v) {
    for (int i = 0; i < 4; i++)
        *w->p++ = (unsigned char)(v >> (8 * i));
}
static void w_u64(writer *w, uint64_t v) {
    for (int i = 0; i < 8; i++)
        *w->p++ = (unsigned char)(v >> (8 * i));
}
static void w_f64(writer *w, double v) {
    uint64_t u;
    memcpy(&u, &v, 8);
    w_u64(w, u);
}

typedef struct reader {
    const unsigned char *p, *end;
    bool short_read;
} reader;

static bool r_need(reader *r, size_t n) {
    if ((size_t)(r->end - r->p) < n) {
        r->short_read = true;
        r->p = r->end;
        return false;
    }
    return true;
}
static const unsigned char *r_bytes(reader *r, size_t n) {
    if (!r_need(r, n)) return NULL;
    const unsigned char *q = r->p;
    r->p += n;
    return q;
}
static uint32_t r_u32(reader *r) {
    if (!r_need(r, 4)) return 0;
    uint32_t v = 0;
    for (int i = 0; i < 4; i++)
        v |= (uint32_t)*r->p++ << (8 * i);
    return v;
}
static uint64_t r_u64(reader *r) {
    if (!r_need(r, 8)) return 0;
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)*r->p++ << (8 * i);
    return v;
}
static double r_f64(reader *r) {
    uint64_t u = r_u64(r);
    double v;
    memcpy(&v, &u, 8);
    return v;
}

/* ------------------------------------------------------------------ files and directories */

static cg_status fsync_dir(const char *dir) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0) return cg_set_error(CG_ERR_IO, "checkpoint: cannot open directory '%s': %s", dir, strerror(errno));
    int rc = fsync(fd);
    close(fd);
    if (rc != 0) return cg_set_error(CG_ERR_IO, "checkpoint: fsync of '%s' failed: %s", dir, strerror(errno));
    return CG_OK;
}

static void parent_dir(const char *path, char *out, size_t cap) {
    snprintf(out, cap, "%s", path);
    char *slash = strrchr(out, '/');
    if (!slash)
        snprintf(out, cap, ".");
    else if (slash == out)
        out[1] = '\0';
    else
        *slash = '\0';
}

/* Writes the bytes to path.tmp, fsyncs, renames over path, fsyncs the directory. */
static cg_status write_atomic(const char *path, const unsigned char *a, size_t na, const unsigned char *b, size_t nb) {
    char tmp[4200];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp)
        return cg_set_error(CG_ERR_INVALID_ARG, "checkpoint: path too long: '%s'", path);
    FILE *f = fopen(tmp, "wb");
    if (!f) return cg_set_error(CG_ERR_IO, "checkpoint: cannot create '%s': %s", tmp, strerror(errno));
    bool ok =
        fwrite(a, 1, na, f) == na && (nb == 0 || fwrite(b, 1, nb, f) == nb) && fflush(f) == 0 && fsync(fileno(f)) == 0;
    int err = errno;
    if (fclose(f) != 0) ok = false;
    if (!ok) {
        unlink(tmp);
        return cg_set_error(CG_ERR_IO, "checkpoint: writing '%s' failed: %s", tmp, strerror(err));
    }
    if (rename(tmp, path) != 0) {
        err = errno;
        unlink(tmp);
        return cg_set_error(CG_ERR_IO, "checkpoint: cannot rename '%s' to '%s': %s", tmp, path, strerror(err));
    }
    char dir[4200];
    parent_dir(path, dir, sizeof dir);
    return fsync_dir(dir);
}

static cg_status mkdir_p(const char *dir) {
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", dir) >= (int)sizeof buf)
        return cg_set_error(CG_ERR_INVALID_ARG, "checkpoint: path too long: '%s'", dir);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(buf, 0777) != 0 && errno != EEXIST)
            return cg_set_error(CG_ERR_IO, "checkpoint: cannot create '%s': %s", buf, strerror(errno));
        *p = '/';
    }
    if (mkdir(buf, 0777) != 0 && errno != EEXIST)
        return cg_set_error(CG_ERR_IO, "checkpoint: cannot create '%s': %s", buf, strerror(errno));
    return CG_OK;
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

/* Deletes a directory tree (a checkpoint this module wrote); a missing one is fine. */
static cg_status remove_tree(const char *dir) {
    struct stat st;
    if (lstat(dir, &st) != 0) return CG_OK;
    if (nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS) != 0)
        return cg_set_error(CG_ERR_IO, "checkpoint: cannot delete '%s': %s", dir, strerror(errno));
    return CG_OK;
}

/* ------------------------------------------------------------------ the state file */

static size_t payload_bytes(const cg_trainer *tr, size_t opt_bytes) {
    size_t n = 8 * 6 + 8 * 2 + 8 * 3;                          /* counters, data position, rng */
    n += 4 + 2 * (4 + 4 + 8 * (size_t)tr->cfg.outlier_window); /* outlier windows */
    n += 4;                                                    /* parameter count */
    for (int i = 0; i < tr->n_params; i++)
        n += 4 + strlen(tr->params[i]->name ? tr->params[i]->name : "") + 8 + (size_t)cg_nbytes(tr->params[i]);
    n += 8 + opt_bytes;
    return n;
}

static void write_window(writer *w, const cg_outlier_window *o) {
    w_u32(w, (uint32_t)o->count);
    w_u32(w, (uint32_t)o->next);
    for (int i = 0; i < o->window; i++)
        w_f64(w, o->values[i]);
}

cg_status cg_train_state_write(const cg_trainer *tr, const char *path) {
    if (!tr || !path) return cg_set_error(CG_ERR_INVALID_ARG, "train state: NULL argument");
    /* A ZeRO-1 optimizer's state goes to the ranks' shard files instead (opt_bytes 0 says so). */
    bool sharded = cg_optimizer_is_sharded(tr->opt);
    size_t opt_bytes = sharded ? 0 : cg_optimizer_state_bytes(tr->opt);
    size_t n = payload_bytes(tr, opt_bytes);
    unsigned char *payload = malloc(n);
    if (!payload) return cg_set_error(CG_ERR_OOM, "train state: out of memory for %zu bytes", n);
    writer w = {payload};
    w_u64(&w, (uint64_t)tr->step);
    w_u64(&w, (uint64_t)tr->tokens_seen);
    w_u64(&w, (uint64_t)tr->cfg.batch);
    w_u64(&w, (uint64_t)tr->cfg.seq_len);
    w_u64(&w, (uint64_t)tr->cfg.total_batch);
    w_u64(&w, (uint64_t)tr->cfg.world_size);
    cg_data_position pos = cg_data_get_position(tr->data);
    w_u64(&w, (uint64_t)pos.shard);
    w_u64(&w, (uint64_t)pos.sample);
    w_u64(&w, tr->model->lora_rng.seed);
    w_u64(&w, tr->model->lora_rng.offset);
    w_u64(&w, tr->model->lora_rng.stream);
    w_u32(&w, (uint32_t)tr->cfg.outlier_window);
    write_window(&w, &tr->loss_window);
    write_window(&w, &tr->grad_window);
    w_u32(&w, (uint32_t)tr->n_params);
    for (int i = 0; i < tr->n_params; i++) {
        const char *name = tr->params[i]->name ? tr->params[i]->name : "";
        w_u32(&w, (uint32_t)strlen(name));
        w_bytes(&w, name, strlen(name));
        w_u64(&w, (uint64_t)cg_numel(tr->params[i]));
        /* fp32, little-endian host; a GPU model's masters are read back (a packed f32 tensor: one copy) */
        cg_status cs = cg_device_memcpy(CG_CPU, w.p, tr->params[i]->device, cg_data(tr->params[i]),
                                        cg_nbytes(tr->params[i]));
        if (cs != CG_OK) {
            free(payload);
            return cg_error_context("train state '%s': reading %s: ", path, name);
        }
        w.p += cg_nbytes(tr->params[i]);
    }
    w_u64(&w, (uint64_t)opt_bytes);
    cg_status s = sharded ? CG_OK : cg_optimizer_save_state(tr->opt, w.p);
    w.p += opt_bytes;
    if (s == CG_OK && (size_t)(w.p - payload) != n)
        s = cg_set_error(CG_ERR_INTERNAL, "train state: wrote %zu bytes, expected %zu", (size_t)(w.p - payload), n);
    if (s == CG_OK) {
        unsigned char header[STATE_HEADER_BYTES];
        writer h = {header};
        w_bytes(&h, STATE_MAGIC, 8);
        w_u32(&h, STATE_VERSION);
        w_u32(&h, 0);
        w_u64(&h, (uint64_t)n);
        w_u64(&h, fnv1a64(payload, n));
        s = write_atomic(path, header, sizeof header, payload, n);
    }
    free(payload);
    return s;
}

static cg_status read_window(reader *r, cg_outlier_window *o, int window, const char *path) {
    o->window = window;
    o->count = (int)r_u32(r);
    o->next = (int)r_u32(r);
    if (o->count < 0 || o->count > window || o->next < 0 || o->next >= window)
        return cg_set_error(CG_ERR_FORMAT, "train state '%s': outlier window count %d / next %d outside %d", path,
                            o->count, o->next, window);
    for (int i = 0; i < window; i++)
        o->values[i] = r_f64(r);
    return CG_OK;
}

static cg_status read_file(const char *path, unsigned char **data, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return cg_set_error(CG_ERR_IO, "train state: cannot open '%s': %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return cg_set_error(CG_ERR_IO, "train state: '%s' is not a regular file", path);
    }
    size_t n = (size_t)st.st_size;
    unsigned char *buf = malloc(n ? n : 1);
    if (!buf) {
        fclose(f);
        return cg_set_error(CG_ERR_OOM, "train state: out of memory for '%s' (%zu bytes)", path, n);
    }
    size_t got = fread(buf, 1, n, f);
    fclose(f);
    if (got != n) {
        free(buf);
        return cg_set_error(CG_ERR_IO, "train state: short read of '%s'", path);
    }
    *data = buf;
    *len = n;
    return CG_OK;
}

/* ---- ZeRO-1 optimizer shards: DIR/optim_shard_<r>_of_<W>.bin, a 32-byte header { "CGOSHRD1", u32 version 1,
 * u32 0, u64 payload bytes, u64 FNV-1a 64 } then cg_optimizer_save_shard's bytes. ---- */
#define SHARD_FILE_MAGIC "CGOSHRD1"

static void shard_path(char *out, size_t cap, const char *dir, int rank, int world) {
    snprintf(out, cap, "%s/optim_shard_%05d_of_%05d.bin", dir, rank, world);
}

static cg_status write_shard_file(const cg_trainer *tr, const char *dir) {
    size_t n = cg_optimizer_shard_bytes(tr->opt);
    unsigned char *payload = malloc(n);
    if (!payload) return cg_set_error(CG_ERR_OOM, "checkpoint: out of memory for the optimizer shard");
    cg_status s = cg_optimizer_save_shard(tr->opt, payload);
    if (s == CG_OK) {
        unsigned char header[STATE_HEADER_BYTES];
        writer h = {header};
        w_bytes(&h, SHARD_FILE_MAGIC, 8);
        w_u32(&h, STATE_VERSION);
        w_u32(&h, 0);
        w_u64(&h, (uint64_t)n);
        w_u64(&h, fnv1a64(payload, n));
        char path[4300];
        shard_path(path, sizeof path, dir, cg_comm_rank(tr->comm), cg_comm_size(tr->comm));
        s = write_atomic(path, header, sizeof header, payload, n);
    }
    free(payload);
    return s;
}

static cg_status read_file(const char *path, unsigned char **data, size_t *len);

/* Reads the `world` shard files next to the state file `state_path` (checked); files[i] owns the bytes,
 * payloads[i] / lens[i] are the shards. */
static cg_status read_shard_files(const char *state_path, int world, unsigned char **files, const void **payloads,
                                  size_t *lens) {
    char dir[4200], path[4300];
    parent_dir(state_path, dir, sizeof dir);
    for (int r = 0; r < world; r++) {
        shard_path(path, sizeof path, dir, r, world);
        size_t len = 0;
        cg_status s = read_file(path, &files[r], &len);
        if (s != CG_OK) return cg_error_context("ZeRO-1 optimizer shard: ");
        reader h = {files[r], files[r] + len, false};
        const unsigned char *magic = r_bytes(&h, 8);
        uint32_t version = r_u32(&h);
        (void)r_u32(&h);
        uint64_t n = r_u64(&h), sum = r_u64(&h);
        if (h.short_read || memcmp(magic, SHARD_FILE_MAGIC, 8) != 0 || version != STATE_VERSION)
            return cg_set_error(CG_ERR_FORMAT, "optimizer shard '%s': not a shard file (or truncated)", path);
        if (n != len - STATE_HEADER_BYTES)
            return cg_set_error(CG_ERR_FORMAT, "optimizer shard '%s': truncated (%zu payload bytes, header says %llu)",
                                path, len - STATE_HEADER_BYTES, (unsigned long long)n);
        if (fnv1a64(files[r] + STATE_HEADER_BYTES, (size_t)n) != sum)
            return cg_set_error(CG_ERR_FORMAT, "optimizer shard '%s': corrupted (checksum mismatch)", path);
        payloads[r] = files[r] + STATE_HEADER_BYTES;
        lens[r] = (size_t)n;
    }
    return CG_OK;
}

cg_status cg_train_state_read(cg_trainer *tr, const char *path) {
    if (!tr || !path) return cg_set_error(CG_ERR_INVALID_ARG, "train state: NULL argument");
    unsigned char *file = NULL;
    size_t len = 0;
    cg_status s = read_file(path, &file, &len);
    if (s != CG_OK) return s;
    cg_outlier_window lw = {0}, gw = {0};
    cg_data_position old_pos = cg_data_get_position(tr->data);
    bool pos_set = false;
    reader h = {file, file + len, false};
    const unsigned char *magic = r_bytes(&h, 8);
    uint32_t version = r_u32(&h);
    (void)r_u32(&h);
    uint64_t n = r_u64(&h), checksum = r_u64(&h);
    if (h.short_read) {
        s = cg_set_error(CG_ERR_FORMAT, "train state '%s': truncated: %zu bytes, shorter than its %d-byte header", path,
                         len, STATE_HEADER_BYTES);
        goto done;
    }
    if (memcmp(magic, STATE_MAGIC, 8) != 0) {
        s = cg_set_error(CG_ERR_FORMAT, "train state '%s': not a training-state file (no '%s' magic)", path,
                         STATE_MAGIC);
        goto done;
    }
    if (version != STATE_VERSION) {
        s = cg_set_error(CG_ERR_FORMAT, "train state '%s': version %u, this build reads %u", path, version,
                         STATE_VERSION);
        goto done;
    }
    if (n != len - STATE_HEADER_BYTES) {
        s = cg_set_error(
            CG_ERR_FORMAT,
            "train state '%s': truncated or extended: the header says %llu payload bytes, the file has %zu", path,
            (unsigned long long)n, len - STATE_HEADER_BYTES);
        goto done;
    }
    const unsigned char *payload = file + STATE_HEADER_BYTES;
    uint64_t actual = fnv1a64(payload, (size_t)n);
    if (actual != checksum) {
        s = cg_set_error(
            CG_ERR_FORMAT,
            "train state '%s': checksum mismatch (FNV-1a %016llx, header says %016llx): the file is corrupted", path,
            (unsigned long long)actual, (unsigned long long)checksum);
        goto done;
    }

    reader r = {payload, payload + n, false};
    int64_t step = (int64_t)r_u64(&r), tokens = (int64_t)r_u64(&r);
    int64_t B = (int64_t)r_u64(&r), T = (int64_t)r_u64(&r), total = (int64_t)r_u64(&r), world = (int64_t)r_u64(&r);
    cg_data_position pos = {(int64_t)r_u64(&r), (int64_t)r_u64(&r)};
    cg_rng rng;
    rng.seed = r_u64(&r);
    rng.offset = r_u64(&r);
    rng.stream = r_u64(&r);
    /* Another rank count (and maybe per-rank batch): the same seq_len and total batch, and the position mapped
     * to the new sample size when it falls on one of its boundaries (sample s of W ranks of B rows starts at
     * token s * W * B * T of its shard). */
    int64_t new_rows = tr->cfg.batch * tr->cfg.world_size; /* rows of one sample over all ranks */
    if (world != tr->cfg.world_size && world > 0 && B > 0 && T == tr->cfg.seq_len && total == tr->cfg.total_batch &&
        (pos.sample * world * B) % new_rows == 0)
        pos.sample = pos.sample * world * B / new_rows;
    else if (B != tr->cfg.batch || T != tr->cfg.seq_len || total != tr->cfg.total_batch || world != tr->cfg.world_size) {
        s = cg_set_error(
            CG_ERR_INVALID_ARG,
            "train state '%s': saved with batch %lld, seq %lld, total batch %lld, world %lld; this run has "
            "%lld, %lld, %lld, %d",
            path, (long long)B, (long long)T, (long long)total, (long long)world, (long long)tr->cfg.batch,
            (long long)tr->cfg.seq_len, (long long)tr->cfg.total_batch, tr->cfg.world_size);
        goto done;
    }
    if (step < 0 || tokens < 0) {
        s = cg_set_error(CG_ERR_FORMAT, "train state '%s': negative step or token count", path);
        goto done;
    }
    int window = (int)r_u32(&r);
    if (window != tr->cfg.outlier_window) {
        s = cg_set_error(CG_ERR_INVALID_ARG, "train state '%s': outlier window %d, this run has %d", path, window,
                         tr->cfg.outlier_window);
        goto done;
    }
    lw.values = calloc((size_t)window, sizeof(double));
    gw.values = calloc((size_t)window, sizeof(double));
    if (!lw.values || !gw.values) {
        s = cg_set_error(CG_ERR_OOM, "train state: out of memory");
        goto done;
    }
    if ((s = read_window(&r, &lw, window, path)) != CG_OK || (s = read_window(&r, &gw, window, path)) != CG_OK)
        goto done;
    uint32_t n_params = r_u32(&r);
    if (n_params != (uint32_t)tr->n_params) {
        s = cg_set_error(CG_ERR_INVALID_ARG,
                         "train state '%s': %u trainable parameters, the model has %d (LoRA flags differ?)", path,
                         n_params, tr->n_params);
        goto done;
    }
    /* Check every parameter before copying any. */
    const unsigned char *params_start = r.p;
    for (int i = 0; i < tr->n_params; i++) {
        uint32_t name_len = r_u32(&r);
        const unsigned char *name = r_bytes(&r, name_len);
        uint64_t numel = r_u64(&r);
        if (r.short_read) break;
        const char *want = tr->params[i]->name ? tr->params[i]->name : "";
        if (name_len != strlen(want) || memcmp(name, want, name_len) != 0 ||
            numel != (uint64_t)cg_numel(tr->params[i])) {
            s = cg_set_error(
                CG_ERR_INVALID_ARG,
                "train state '%s': parameter %d is '%.*s' with %llu elements, the model's is '%s' with %lld", path, i,
                (int)(name_len > 200 ? 200 : name_len), name ? (const char *)name : "", (unsigned long long)numel, want,
                (long long)cg_numel(tr->params[i]));
            goto done;
        }
        r_bytes(&r, (size_t)numel * sizeof(float));
    }
    uint64_t opt_bytes = r_u64(&r);
    const unsigned char *opt_state = r_bytes(&r, (size_t)opt_bytes);
    if (r.short_read || r.p != r.end) {
        s = cg_set_error(CG_ERR_FORMAT, "train state '%s': the payload does not parse (%s)", path,
                         r.short_read ? "too short" : "bytes left over");
        goto done;
    }
    /* Apply: the data position and the optimizer state check themselves before changing anything. */
    if ((s = cg_data_set_position(tr->data, pos)) != CG_OK) {
        cg_error_context("train state '%s': ", path);
        goto done;
    }
    pos_set = true;
    if (opt_bytes == 0) { /* a ZeRO-1 checkpoint: the shards of its `world` ranks */
        if (world < 1 || world > 1 << 20) {
            s = cg_set_error(CG_ERR_FORMAT, "train state '%s': world size %lld", path, (long long)world);
            goto done;
        }
        unsigned char **files = calloc((size_t)world, sizeof *files);
        const void **payloads = calloc((size_t)world, sizeof *payloads);
        size_t *lens = calloc((size_t)world, sizeof *lens);
        s = files && payloads && lens ? read_shard_files(path, (int)world, files, payloads, lens)
                                      : cg_set_error(CG_ERR_OOM, "train state: out of memory");
        if (s == CG_OK) s = cg_optimizer_load_shards(tr->opt, (int)world, payloads, lens);
        for (int64_t i = 0; files && i < world; i++) free(files[i]);
        free(files), free(payloads), free(lens);
    } else {
        s = cg_optimizer_load_state(tr->opt, opt_state, (size_t)opt_bytes);
    }
    if (s != CG_OK) {
        cg_error_context("train state '%s': ", path);
        goto done;
    }
    reader pr = {params_start, payload + n, false};
    for (int i = 0; i < tr->n_params; i++) {
        uint32_t name_len = r_u32(&pr);
        r_bytes(&pr, name_len);
        uint64_t numel = r_u64(&pr);
        s = cg_device_memcpy(tr->params[i]->device, cg_data(tr->params[i]), CG_CPU,
                             r_bytes(&pr, (size_t)numel * sizeof(float)), (size_t)numel * sizeof(float));
        if (s != CG_OK) {
            cg_error_context("train state '%s': ", path);
            goto done;
        }
    }
    /* mixed precision: the forward's bf16 copies follow the loaded masters */
    if ((s = cg_model_refresh_working_copies(tr->model)) != CG_OK) {
        cg_error_context("train state '%s': ", path);
        goto done;
    }
    tr->step = step;
    tr->tokens_seen = tokens;
    tr->model->lora_rng = rng;
    memcpy(tr->loss_window.values, lw.values, sizeof(double) * (size_t)window);
    memcpy(tr->grad_window.values, gw.values, sizeof(double) * (size_t)window);
    tr->loss_window.count = lw.count, tr->loss_window.next = lw.next;
    tr->grad_window.count = gw.count, tr->grad_window.next = gw.next;
    cg_optimizer_zero_grad(tr->opt);
    s = CG_OK;
done:
    if (s != CG_OK && pos_set) cg_data_set_position(tr->data, old_pos);
    free(lw.values);
    free(gw.values);
    free(file);
    return s;
}

/* ------------------------------------------------------------------ checkpoint directories */

static bool parse_ckpt_name(const char *name, int64_t *step) {
    size_t pl = strlen(CKPT_PREFIX);
    if (strncmp(name, CKPT_PREFIX, pl) != 0 || strlen(name) != pl + CKPT_DIGITS) return false;
    int64_t v = 0;
    for (size_t i = pl; i < pl + CKPT_DIGITS; i++) {
        if (name[i] < '0' || name[i] > '9') return false;
        v = v * 10 + (name[i] - '0');
    }
    *step = v;
    return true;
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

int cg_train_list_checkpoints(const char *out_dir, int64_t *steps, int cap) {
    if (!out_dir) {
        cg_set_error(CG_ERR_INVALID_ARG, "checkpoints: NULL directory");
        return -1;
    }
    DIR *d = opendir(out_dir);
    if (!d) {
        if (errno == ENOENT) return 0;
        cg_set_error(CG_ERR_IO, "checkpoints: cannot read '%s': %s", out_dir, strerror(errno));
        return -1;
    }
    int n = 0, filled = 0;
    int64_t *all = NULL;
    int all_cap = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        int64_t step;
        if (!parse_ckpt_name(e->d_name, &step)) continue;
        char path[4200];
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", out_dir, e->d_name);
        if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode)) continue;
        if (n == all_cap) {
            all_cap = all_cap ? 2 * all_cap : 16;
            int64_t *grown = realloc(all, sizeof *all * (size_t)all_cap);
            if (!grown) {
                free(all);
                closedir(d);
                cg_set_error(CG_ERR_OOM, "checkpoints: out of memory");
                return -1;
            }
            all = grown;
        }
        all[n++] = step;
    }
    closedir(d);
    if (n) qsort(all, (size_t)n, sizeof *all, cmp_i64);
    for (int i = 0; i < n && filled < cap && steps; i++)
        steps[filled++] = all[i];
    free(all);
    return n;
}

static cg_status prune(const char *out_dir, int keep_last) {
    int n = cg_train_list_checkpoints(out_dir, NULL, 0);
    if (n < 0) return cg_last_status();
    if (keep_last <= 0 || n <= keep_last) return CG_OK;
    int64_t *steps = malloc(sizeof *steps * (size_t)n);
    if (!steps) return cg_set_error(CG_ERR_OOM, "checkpoints: out of memory");
    n = cg_train_list_checkpoints(out_dir, steps, n);
    cg_status s = CG_OK;
    for (int i = 0; s == CG_OK && i < n - keep_last; i++) {
        char path[4200];
        snprintf(path, sizeof path, "%s/" CKPT_PREFIX "%08lld", out_dir, (long long)steps[i]);
        s = remove_tree(path);
    }
    free(steps);
    return s;
}

/* Creates OUT/ckpt_<step>.tmp (removing a stale one); final and tmp receive the paths. */
static cg_status save_begin(const cg_trainer *tr, const char *out_dir, char *final, size_t fcap, char *tmp, size_t tcap) {
    if (strlen(out_dir) > 3500) return cg_set_error(CG_ERR_INVALID_ARG, "checkpoint: directory name too long");
    snprintf(final, fcap, "%s/" CKPT_PREFIX "%08lld", out_dir, (long long)tr->step);
    snprintf(tmp, tcap, "%s.tmp", final);
    cg_status s = mkdir_p(out_dir);
    if (s == CG_OK) s = remove_tree(tmp);
    if (s == CG_OK && mkdir(tmp, 0777) != 0)
        s = cg_set_error(CG_ERR_IO, "checkpoint: cannot create '%s': %s", tmp, strerror(errno));
    return s;
}

/* Writes the model and the state into tmp and renames it to final; removes tmp on failure. */
static cg_status save_end(cg_trainer *tr, const char *out_dir, const char *final, const char *tmp, int keep_last,
                          char *path_out, size_t path_cap) {
    char sub[4200];
    cg_status s;
    if (tr->cfg.lora) {
        snprintf(sub, sizeof sub, "%s/adapter", tmp);
        s = cg_lora_save(tr->model, tr->cfg.lora, sub);
    } else {
        snprintf(sub, sizeof sub, "%s/model", tmp);
        s = cg_model_save_hf(tr->model, sub, 0, CG_F32);
    }
    if (s == CG_OK) {
        snprintf(sub, sizeof sub, "%s/" STATE_FILE, tmp);
        s = cg_train_state_write(tr, sub);
    }
    if (s == CG_OK) s = remove_tree(final);
    if (s == CG_OK && rename(tmp, final) != 0)
        s = cg_set_error(CG_ERR_IO, "checkpoint: cannot rename '%s' to '%s': %s", tmp, final, strerror(errno));
    if (s != CG_OK) {
        cg_status keep = s;
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", cg_last_error());
        remove_tree(tmp);
        return cg_set_error(keep, "%s", msg);
    }
    if ((s = fsync_dir(out_dir)) != CG_OK) return s;
    if (path_out && path_cap) snprintf(path_out, path_cap, "%s", final);
    return prune(out_dir, keep_last);
}

/* Data parallel: every rank learns whether any rank failed (s on this rank); the failing rank keeps its
 * message, the others get one naming the step. */
static cg_status agree(cg_trainer *tr, cg_status s, const char *what) {
    double failed = s != CG_OK ? 1.0 : 0.0;
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", cg_last_error());
    cg_status cs = cg_comm_allreduce_f64(tr->comm, &failed, 1, CG_COMM_SUM);
    if (s != CG_OK) return cg_set_error(s, "%s", msg);
    if (cs != CG_OK) return cs;
    if (failed != 0.0) return cg_set_error(CG_ERR_IO, "checkpoint: another rank failed while %s", what);
    return CG_OK;
}

/* Data parallel: rank 0 creates the temporary directory, every rank of a ZeRO-1 run writes its optimizer
 * shard into it, then rank 0 writes the model and the state and renames it; the ranks agree on success after
 * each phase, so the checkpoint is complete for everyone when save returns. */
cg_status cg_trainer_save(cg_trainer *tr, const char *out_dir, int keep_last, char *path_out, size_t path_cap) {
    if (!tr || !out_dir) return cg_set_error(CG_ERR_INVALID_ARG, "checkpoint: NULL trainer or directory");
    char final[4000], tmp[4100];
    bool root = cg_comm_rank(tr->comm) == 0, multi = cg_comm_size(tr->comm) > 1;
    cg_status s = root ? save_begin(tr, out_dir, final, sizeof final, tmp, sizeof tmp) : CG_OK;
    if (!root) {
        snprintf(final, sizeof final, "%s/" CKPT_PREFIX "%08lld", out_dir, (long long)tr->step);
        snprintf(tmp, sizeof tmp, "%s.tmp", final);
    }
    if (multi) s = agree(tr, s, "creating the checkpoint directory");
    if (s != CG_OK) return s;
    if (cg_optimizer_is_sharded(tr->opt)) {
        s = agree(tr, write_shard_file(tr, tmp), "writing the optimizer shards");
        if (s != CG_OK) {
            if (root) remove_tree(tmp);
            return s;
        }
    }
    if (root) s = save_end(tr, out_dir, final, tmp, keep_last, path_out, path_cap);
    else if (path_out && path_cap) snprintf(path_out, path_cap, "%s", final);
    return multi ? agree(tr, s, "rank 0 wrote the checkpoint") : s;
}

cg_status cg_trainer_resume(cg_trainer *tr, const char *out_dir, bool *resumed, char *path_out, size_t path_cap) {
    if (!tr || !out_dir || !resumed) return cg_set_error(CG_ERR_INVALID_ARG, "resume: NULL argument");
    *resumed = false;
    int n = cg_train_list_checkpoints(out_dir, NULL, 0);
    if (n < 0) return cg_last_status();
    if (n == 0) return CG_OK;
    int64_t *steps = malloc(sizeof *steps * (size_t)n);
    if (!steps) return cg_set_error(CG_ERR_OOM, "resume: out of memory");
    n = cg_train_list_checkpoints(out_dir, steps, n);
    int64_t newest = steps[n - 1];
    free(steps);
    char dir[4096], file[4200];
    snprintf(dir, sizeof dir, "%s/" CKPT_PREFIX "%08lld", out_dir, (long long)newest);
    snprintf(file, sizeof file, "%s/" STATE_FILE, dir);
    cg_status s = cg_train_state_read(tr, file);
    if (s != CG_OK) return s;
    *resumed = true;
    if (path_out && path_cap) snprintf(path_out, path_cap, "%s", dir);
    return CG_OK;
}
