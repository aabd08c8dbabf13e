/* llm.c checkpoints (model_%08d.bin): a 256-int32 header and the GPT-2 parameters in llm.c's order,
 * fp32 (version 3) or bf16 (version 5). */
#include "models/checkpoint.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/context.h"

/* llm.c's tensor order; each per-layer kind is stored for all layers before the next kind. */
enum {
    LLMC_WTE, LLMC_WPE, LLMC_LN1W, LLMC_LN1B, LLMC_QKVW, LLMC_QKVB, LLMC_ATTPROJW, LLMC_ATTPROJB, LLMC_LN2W,
    LLMC_LN2B, LLMC_FCW, LLMC_FCB, LLMC_FCPROJW, LLMC_FCPROJB, LLMC_LNFW, LLMC_LNFB, LLMC_KINDS
};

static bool per_layer(int kind) { return kind != LLMC_WTE && kind != LLMC_WPE && kind < LLMC_LNFW; }

static cg_tensor *llmc_tensor(const cg_model *m, int kind, int64_t l) {
    const cg_block *b = per_layer(kind) ? &m->blocks[l] : NULL;
    switch (kind) {
    case LLMC_WTE: return m->wte;
    case LLMC_WPE: return m->wpe;
    case LLMC_LN1W: return b->norm1_w;
    case LLMC_LN1B: return b->norm1_b;
    case LLMC_QKVW: return b->qkv.weight;
    case LLMC_QKVB: return b->qkv.bias;
    case LLMC_ATTPROJW: return b->o.weight;
    case LLMC_ATTPROJB: return b->o.bias;
    case LLMC_LN2W: return b->norm2_w;
    case LLMC_LN2B: return b->norm2_b;
    case LLMC_FCW: return b->fc.weight;
    case LLMC_FCB: return b->fc.bias;
    case LLMC_FCPROJW: return b->proj.weight;
    case LLMC_FCPROJB: return b->proj.bias;
    case LLMC_LNFW: return m->norm_f_w;
    default: return m->norm_f_b;
    }
}

/* Elements of the parameters an llm.c header describes. The caller bounds the sizes, so this cannot
 * overflow. */
static int64_t llmc_numel(int64_t T, int64_t L, int64_t C, int64_t Vp) {
    return Vp * C + T * C + L * (2 * C + 3 * C * C + 3 * C + C * C + C + 2 * C + 4 * C * C + 4 * C + 4 * C * C + C) +
           2 * C;
}

static int32_t le32(const unsigned char *p) {
    return (int32_t)((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24);
}

static cg_status read_header(FILE *f, const char *path, cg_model_config *cfg, int *version) {
    unsigned char raw[CG_LLMC_HEADER_INTS * 4];
    size_t got = fread(raw, 1, sizeof raw, f);
    if (got != sizeof raw)
        return cg_set_error(CG_ERR_FORMAT, "%s: truncated llm.c checkpoint: %zu bytes, shorter than the %zu-byte header",
                            path, got, sizeof raw);
    int32_t h[8];
    for (int i = 0; i < 8; i++) h[i] = le32(raw + 4 * i);
    if (h[0] != CG_LLMC_MAGIC)
        return cg_set_error(CG_ERR_FORMAT, "%s: not an llm.c model checkpoint: magic %d (expected %d)", path, h[0],
                            CG_LLMC_MAGIC);
    if (h[1] == 1 || h[1] == 2)
        return cg_set_error(CG_ERR_FORMAT, "%s: llm.c checkpoint version %d (unpadded fp32) is not supported; "
                            "versions 3 (fp32) and 5 (bf16) are", path, h[1]);
    if (h[1] != 3 && h[1] != 5)
        return cg_set_error(CG_ERR_FORMAT, "%s: unknown llm.c checkpoint version %d (expected 3 or 5)", path, h[1]);
    int32_t T = h[2], V = h[3], L = h[4], NH = h[5], C = h[6], Vp = h[7];
    /* bounds that keep every size below 2^62 */
    if (T <= 0 || V <= 0 || L <= 0 || NH <= 0 || C <= 0 || Vp < V || T > (1 << 24) || Vp > (1 << 24) ||
        L > (1 << 12) || C > (1 << 18) || C % NH != 0)
        return cg_set_error(CG_ERR_FORMAT, "%s: implausible llm.c header: max_seq_len %d, vocab_size %d, num_layers %d, "
                            "num_heads %d, channels %d, padded_vocab_size %d", path, T, V, L, NH, C, Vp);
    memset(cfg, 0, sizeof *cfg);
    snprintf(cfg->name, sizeof cfg->name, "custom");
    cfg->arch = CG_ARCH_GPT2;
    cfg->vocab_size = V;
    cfg->padded_vocab_size = Vp;
    cfg->n_layer = L;
    cfg->n_head = cfg->n_kv_head = NH;
    cfg->d_model = C;
    cfg->d_ff = 4 * (int64_t)C;
    cfg->max_seq_len = T;
    cfg->norm_eps = 1e-5f;
    cfg->qkv_bias = true;
    cfg->tie_embeddings = true;
    cfg->init_std = 0.02f;
    *version = h[1];
    return CG_OK;
}

/* Reads the parameters that follow the header into m. */
static cg_status read_params(FILE *f, const char *path, cg_model *m, cg_dtype file_dtype) {
    size_t es = cg_dtype_size(file_dtype);
    size_t max_bytes = 0;
    for (int k = 0; k < LLMC_KINDS; k++) {
        size_t nb = (size_t)cg_numel(llmc_tensor(m, k, 0)) * es;
        if (nb > max_bytes) max_bytes = nb;
    }
    void *buf = malloc(max_bytes);
    /* a bf16 file into a GPU model converts on the device: its staging is dropped after each tensor too */
    cg_arena *step = cg_step_arena(CG_CPU), *dev_step = cg_step_arena(m->device);
    if (!buf || !step || !dev_step) {
        free(buf);
        return step && dev_step ? cg_set_error(CG_ERR_OOM, "%s: out of memory reading the parameters", path)
                                : cg_last_status();
    }
    cg_status s = CG_OK;
    long offset = CG_LLMC_HEADER_INTS * 4;
    for (int k = 0; k < LLMC_KINDS && s == CG_OK; k++) {
        int64_t layers = per_layer(k) ? m->cfg.n_layer : 1;
        for (int64_t l = 0; l < layers && s == CG_OK; l++) {
            cg_tensor *p = llmc_tensor(m, k, l);
            size_t nb = (size_t)cg_numel(p) * es;
            if (fread(buf, 1, nb, f) != nb) {
                s = cg_set_error(CG_ERR_IO, "%s: read failed at offset %ld", path, offset);
                break;
            }
            offset += (long)nb;
            cg_arena_mark mark = cg_arena_get_mark(step), dmark = cg_arena_get_mark(dev_step);
            cg_tensor *src = cg_tensor_wrap(step, file_dtype, CG_CPU, p->ndim, p->shape, buf);
            s = src ? cg_copy(p, src) : cg_last_status();
            cg_arena_rewind(dev_step, dmark);
            cg_arena_rewind(step, mark);
        }
    }
    free(buf);
    return s;
}

/* Opens path, reads and checks the header and the file size; f is left just past the header. */
static cg_status open_checked(const char *path, FILE **fp, cg_model_config *cfg, int *version) {
    FILE *f = fopen(path, "rb");
    if (!f) return cg_set_error(CG_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    cg_status s = read_header(f, path, cfg, version);
    struct stat sb;
    if (s == CG_OK && fstat(fileno(f), &sb) != 0) s = cg_set_error(CG_ERR_IO, "%s: stat failed: %s", path, strerror(errno));
    if (s == CG_OK) {
        long long want = CG_LLMC_HEADER_INTS * 4 +
                         llmc_numel(cfg->max_seq_len, cfg->n_layer, cfg->d_model, cfg->padded_vocab_size) *
                             (*version == 5 ? 2 : 4);
        if ((long long)sb.st_size != want)
            s = cg_set_error(CG_ERR_FORMAT, "%s: the file is %lld bytes but its header (version %d, %lld layers, "
                             "%lld channels, padded vocabulary %lld, %lld positions) describes %lld bytes%s", path,
                             (long long)sb.st_size, *version, (long long)cfg->n_layer, (long long)cfg->d_model,
                             (long long)cfg->padded_vocab_size, (long long)cfg->max_seq_len, want,
                             (long long)sb.st_size < want ? " (truncated)" : "");
    }
    if (s != CG_OK) {
        fclose(f);
        return s;
    }
    *fp = f;
    return CG_OK;
}

cg_status cg_llmc_checkpoint_info(const char *path, cg_model_config *cfg, int *version) {
    if (!path || !cfg || !version) return cg_set_error(CG_ERR_INVALID_ARG, "llmc_checkpoint_info: NULL argument");
    FILE *f = NULL;
    cg_status s = open_checked(path, &f, cfg, version);
    if (s == CG_OK) fclose(f);
    return s;
}

cg_status cg_model_load_llmc(const char *path, cg_device device, cg_model **out) {
    if (!path || !out) return cg_set_error(CG_ERR_INVALID_ARG, "model_load_llmc: NULL argument");
    *out = NULL;
    FILE *f = NULL;
    cg_model_config cfg;
    int version = 0;
    cg_status s = open_checked(path, &f, &cfg, &version);
    if (s != CG_OK) return s;
    cg_model *m = NULL;
    s = cg_model_create_blank(&cfg, device, &m);
    if (s == CG_OK) s = read_params(f, path, m, version == 5 ? CG_BF16 : CG_F32);
    fclose(f);
    if (s != CG_OK) {
        cg_model_free(m);
        return s;
    }
    *out = m;
    return CG_OK;
}

static cg_status write_all(FILE *f, const void *p, size_t n, const char *tmp) {
    if (n && fwrite(p, 1, n, f) != n) return cg_set_error(CG_ERR_IO, "%s: write failed: %s", tmp, strerror(errno));
    return CG_OK;
}

cg_status cg_model_save_llmc(const cg_model *m, const char *path, int version) {
    if (!m || !path) return cg_set_error(CG_ERR_INVALID_ARG, "model_save_llmc: NULL argument");
    const cg_model_config *c = &m->cfg;
    if (version != 3 && version != 5)
        return cg_set_error(CG_ERR_INVALID_ARG, "model_save_llmc: version %d (llm.c checkpoints are version 3 = fp32 or "
                            "5 = bf16)", version);
    if (c->arch != CG_ARCH_GPT2 || !c->tie_embeddings || c->d_ff != 4 * c->d_model || c->n_kv_head != c->n_head)
        return cg_set_error(CG_ERR_INVALID_ARG, "model_save_llmc: %s is not llm.c-shaped (needs GPT-2 with tied "
                            "embeddings and d_ff = 4 d_model; has d_ff %lld, d_model %lld, %s embeddings)",
                            c->name[0] ? c->name : "the model", (long long)c->d_ff, (long long)c->d_model,
                            c->tie_embeddings ? "tied" : "untied");
    if (c->max_seq_len > INT32_MAX || c->padded_vocab_size > INT32_MAX || c->d_model > INT32_MAX)
        return cg_set_error(CG_ERR_INVALID_ARG, "model_save_llmc: a size does not fit the int32 header");
    unsigned char header[CG_LLMC_HEADER_INTS * 4] = {0};
    int32_t h[8] = {CG_LLMC_MAGIC, version, (int32_t)c->max_seq_len, (int32_t)c->vocab_size, (int32_t)c->n_layer,
                    (int32_t)c->n_head, (int32_t)c->d_model, (int32_t)c->padded_vocab_size};
    for (int i = 0; i < 8; i++)
        for (int b = 0; b < 4; b++) header[4 * i + b] = (unsigned char)((uint32_t)h[i] >> (8 * b));
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f) return cg_set_error(CG_ERR_IO, "%s: cannot create %s: %s", path, tmp, strerror(errno));
    cg_dtype dtype = version == 5 ? CG_BF16 : CG_F32;
    cg_arena *step = cg_step_arena(CG_CPU);
    cg_status s = step ? write_all(f, header, sizeof header, tmp) : cg_last_status();
    for (int k = 0; k < LLMC_KINDS && s == CG_OK; k++) {
        int64_t layers = per_layer(k) ? c->n_layer : 1;
        for (int64_t l = 0; l < layers && s == CG_OK; l++) {
            cg_arena_mark mark = cg_arena_get_mark(step);
            const cg_tensor *p = llmc_tensor(m, k, l);
            cg_tensor *host = cg_tensor_to(step, p, dtype); /* packed, on the host, in the file's dtype */
            s = host ? write_all(f, cg_data(host), cg_nbytes(host), tmp) : cg_last_status();
            cg_arena_rewind(step, mark);
        }
    }
    if (s == CG_OK && fflush(f) != 0) s = cg_set_error(CG_ERR_IO, "%s: write failed: %s", tmp, strerror(errno));
    if (s == CG_OK && fsync(fileno(f)) != 0) s = cg_set_error(CG_ERR_IO, "%s: fsync failed: %s", tmp, strerror(errno));
    if (fclose(f) != 0 && s == CG_OK) s = cg_set_error(CG_ERR_IO, "%s: close failed: %s", tmp, strerror(errno));
    if (s == CG_OK && rename(tmp, path) != 0)
        s = cg_set_error(CG_ERR_IO, "%s: cannot rename %s over it: %s", path, tmp, strerror(errno));
    if (s != CG_OK) unlink(tmp);
    return s;
}
