/* Training data loaders over llm.c token shards or a tokenized text file (layout in optim/data.h). */
#include "optim/data.h"

#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/tokens.h"

typedef struct data_shard {
    cg_token_file *file; /* NULL for text (the tokens are in memory) */
    int64_t ntok, samples;
} data_shard;

struct cg_data_loader {
    cg_data_config cfg;
    char *path;
    int n_shards;
    data_shard *shards;
    int32_t *text_tokens; /* text: the split's tokens */
    cg_data_position pos;
    int64_t total_tokens, samples_per_epoch;
};

static bool is_shard_magic(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return false;
    unsigned char b[4];
    bool shard = false;
    if (fread(b, 1, 4, f) == 4) {
        int32_t magic = (int32_t)((uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24);
        shard = magic == CG_TOKEN_MAGIC_GPT2 || magic == CG_TOKEN_MAGIC_LLAMA3 || magic == CG_TOKEN_MAGIC_EVAL;
    }
    fclose(f);
    return shard;
}

static cg_status read_text(const char *path, char **text, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return cg_set_error(CG_ERR_IO, "data: cannot open '%s'", path);
    if (fseek(f, 0, SEEK_END) != 0) {
        fclose(f);
        return cg_set_error(CG_ERR_IO, "data: cannot seek in '%s'", path);
    }
    long n = ftell(f);
    rewind(f);
    if (n < 0) {
        fclose(f);
        return cg_set_error(CG_ERR_IO, "data: cannot size '%s'", path);
    }
    char *buf = malloc((size_t)n + 1);
    if (!buf) {
        fclose(f);
        return cg_set_error(CG_ERR_OOM, "data: out of memory for '%s' (%ld bytes)", path, n);
    }
    size_t got = fread(buf, 1, (size_t)n, f);
    fclose(f);
    if (got != (size_t)n) {
        free(buf);
        return cg_set_error(CG_ERR_IO, "data: short read of '%s' (%zu of %ld bytes)", path, got, n);
    }
    buf[n] = '\0';
    *text = buf;
    *len = (size_t)n;
    return CG_OK;
}

static cg_status check_samples(cg_data_loader *d, const char *name, data_shard *s) {
    int64_t step_tokens = (int64_t)d->cfg.world_size * d->cfg.batch * d->cfg.seq_len;
    s->samples = s->ntok > 0 ? (s->ntok - 1) / step_tokens : 0;
    if (s->samples < 1)
        return cg_set_error(CG_ERR_INVALID_ARG,
                            "data: '%s' has %lld tokens, fewer than one batch of all ranks needs (%d x %lld x %lld + 1 "
                            "= %lld)",
                            name, (long long)s->ntok, d->cfg.world_size, (long long)d->cfg.batch,
                            (long long)d->cfg.seq_len, (long long)(step_tokens + 1));
    d->total_tokens += s->ntok;
    d->samples_per_epoch += s->samples;
    return CG_OK;
}

static cg_status open_text(cg_data_loader *d, const char *path) {
    if (!d->cfg.tokenizer)
        return cg_set_error(CG_ERR_INVALID_ARG,
                            "data: '%s' is not a token shard, and no tokenizer was given to read it as text", path);
    char *text = NULL;
    size_t len = 0;
    cg_status s = read_text(path, &text, &len);
    if (s != CG_OK) return s;
    int32_t *ids;
    int64_t n;
    s = cg_tokenizer_encode(d->cfg.tokenizer, text, len, &ids, &n);
    free(text);
    if (s != CG_OK) return cg_error_context("data: tokenizing '%s': ", path);
    int64_t keep_from = 0, keep_to = n;
    if (d->cfg.holdout_frac > 0.0f) {
        int64_t held = (int64_t)((double)d->cfg.holdout_frac * (double)n);
        if (d->cfg.split == CG_DATA_HOLDOUT)
            keep_from = n - held;
        else
            keep_to = n - held;
    }
    int64_t m = keep_to - keep_from;
    d->text_tokens = malloc(sizeof(int32_t) * (size_t)(m ? m : 1));
    if (!d->text_tokens) {
        free(ids);
        return cg_set_error(CG_ERR_OOM, "data: out of memory for %lld tokens", (long long)m);
    }
    if (m) memcpy(d->text_tokens, ids + keep_from, sizeof(int32_t) * (size_t)m);
    free(ids);
    d->n_shards = 1;
    d->shards = calloc(1, sizeof *d->shards);
    if (!d->shards) return cg_set_error(CG_ERR_OOM, "data: out of memory");
    d->shards[0].ntok = m;
    s = check_samples(d, path, &d->shards[0]);
    if (s != CG_OK && d->cfg.holdout_frac > 0.0f)
        cg_error_context("(the %s split of %lld tokens, holdout %g) ",
                         d->cfg.split == CG_DATA_HOLDOUT ? "holdout" : "train", (long long)n, d->cfg.holdout_frac);
    return s;
}

cg_status cg_data_open(const cg_data_config *cfg, cg_data_loader **out) {
    if (!out) return cg_set_error(CG_ERR_INVALID_ARG, "data: NULL output");
    *out = NULL;
    if (!cfg || !cfg->path) return cg_set_error(CG_ERR_INVALID_ARG, "data: NULL config or path");
    if (cfg->batch < 1 || cfg->seq_len < 1)
        return cg_set_error(CG_ERR_INVALID_ARG, "data: batch %lld and seq_len %lld must be >= 1", (long long)cfg->batch,
                            (long long)cfg->seq_len);
    if (cfg->world_size < 1 || cfg->rank < 0 || cfg->rank >= cfg->world_size)
        return cg_set_error(CG_ERR_INVALID_ARG, "data: rank %d of world size %d", cfg->rank, cfg->world_size);
    if (!(cfg->holdout_frac >= 0.0f && cfg->holdout_frac < 1.0f))
        return cg_set_error(CG_ERR_INVALID_ARG, "data: holdout_frac %g must be in [0, 1)", cfg->holdout_frac);
    if (cfg->batch > INT32_MAX / cfg->seq_len)
        return cg_set_error(CG_ERR_INVALID_ARG, "data: batch x seq_len = %lld x %lld is too large",
                            (long long)cfg->batch, (long long)cfg->seq_len);

    cg_data_loader *d = calloc(1, sizeof *d);
    if (!d) return cg_set_error(CG_ERR_OOM, "data: out of memory");
    d->cfg = *cfg;
    d->cfg.tokenizer = NULL; /* only used during open */
    size_t plen = strlen(cfg->path) + 1;
    d->path = malloc(plen);
    if (!d->path) {
        free(d);
        return cg_set_error(CG_ERR_OOM, "data: out of memory");
    }
    memcpy(d->path, cfg->path, plen);
    d->cfg.path = d->path;

    glob_t g;
    memset(&g, 0, sizeof g);
    int rc = glob(cfg->path, 0, NULL, &g);
    cg_status s = CG_OK;
    if (rc == GLOB_NOMATCH || (rc == 0 && g.gl_pathc == 0)) {
        s = cg_set_error(CG_ERR_IO, "data: no file matches '%s'", cfg->path);
    } else if (rc != 0) {
        s = cg_set_error(CG_ERR_IO, "data: cannot expand '%s' (glob error %d)", cfg->path, rc);
    } else if (g.gl_pathc == 1 && !is_shard_magic(g.gl_pathv[0])) {
        d->cfg.tokenizer = cfg->tokenizer;
        s = open_text(d, g.gl_pathv[0]);
        d->cfg.tokenizer = NULL;
    } else if (cfg->holdout_frac > 0.0f) {
        s = cg_set_error(CG_ERR_INVALID_ARG,
                         "data: a holdout split is for text files; '%s' holds token shards (use a --val glob)",
                         cfg->path);
    } else if (g.gl_pathc > (size_t)INT32_MAX) {
        s = cg_set_error(CG_ERR_INVALID_ARG, "data: too many files match '%s'", cfg->path);
    } else {
        d->shards = calloc(g.gl_pathc, sizeof *d->shards);
        if (!d->shards) s = cg_set_error(CG_ERR_OOM, "data: out of memory");
        for (size_t i = 0; s == CG_OK && i < g.gl_pathc; i++) {
            s = cg_token_file_open(g.gl_pathv[i], &d->shards[i].file);
            if (s != CG_OK) break;
            d->n_shards = (int)i + 1;
            d->shards[i].ntok = cg_token_file_count(d->shards[i].file);
            s = check_samples(d, g.gl_pathv[i], &d->shards[i]);
        }
    }
    globfree(&g);
    if (s != CG_OK) {
        cg_data_close(d);
        return s;
    }
    *out = d;
    return CG_OK;
}

void cg_data_close(cg_data_loader *d) {
    if (!d) return;
    for (int i = 0; i < d->n_shards; i++)
        cg_token_file_close(d->shards[i].file);
    free(d->shards);
    free(d->text_tokens);
    free(d->path);
    free(d);
}

cg_status cg_data_next(cg_data_loader *d, int32_t *inputs, int32_t *targets) {
    if (!d || !inputs || !targets) return cg_set_error(CG_ERR_INVALID_ARG, "data next: NULL argument");
    const int64_t bt = d->cfg.batch * d->cfg.seq_len;
    const data_shard *sh = &d->shards[d->pos.shard];
    int64_t start = d->pos.sample * (int64_t)d->cfg.world_size * bt + (int64_t)d->cfg.rank * bt;
    /* inputs = tokens [start, start + bt), targets = [start + 1, start + bt + 1) */
    if (sh->file) {
        cg_status s = cg_token_file_read(sh->file, start, bt, inputs);
        if (s == CG_OK) s = cg_token_file_read(sh->file, start + 1, bt, targets);
        if (s != CG_OK) return s;
    } else {
        memcpy(inputs, d->text_tokens + start, sizeof(int32_t) * (size_t)bt);
        memcpy(targets, d->text_tokens + start + 1, sizeof(int32_t) * (size_t)bt);
    }
    if (++d->pos.sample >= sh->samples) {
        d->pos.sample = 0;
        d->pos.shard = (d->pos.shard + 1) % d->n_shards;
    }
    return CG_OK;
}

cg_data_position cg_data_get_position(const cg_data_loader *d) {
    cg_data_position p = {0, 0};
    return d ? d->pos : p;
}

cg_status cg_data_set_position(cg_data_loader *d, cg_data_position p) {
    if (!d) return cg_set_error(CG_ERR_INVALID_ARG, "data: NULL loader");
    if (p.shard < 0 || p.shard >= d->n_shards || p.sample < 0 || p.sample >= d->shards[p.shard].samples)
        return cg_set_error(CG_ERR_INVALID_ARG,
                            "data: position (shard %lld, sample %lld) is outside '%s' (%d shards%s%lld samples)",
                            (long long)p.shard, (long long)p.sample, d->path, d->n_shards,
                            p.shard >= 0 && p.shard < d->n_shards ? ", that one has " : ", ",
                            p.shard >= 0 && p.shard < d->n_shards ? (long long)d->shards[p.shard].samples
                                                                  : (long long)d->samples_per_epoch);
    d->pos = p;
    return CG_OK;
}

void cg_data_reset(cg_data_loader *d) {
    if (d) d->pos = (cg_data_position){0, 0};
}

int cg_data_num_shards(const cg_data_loader *d) { return d ? d->n_shards : 0; }
int64_t cg_data_num_tokens(const cg_data_loader *d) { return d ? d->total_tokens : 0; }
int64_t cg_data_samples_per_epoch(const cg_data_loader *d) { return d ? d->samples_per_epoch : 0; }
bool cg_data_is_text(const cg_data_loader *d) { return d && d->text_tokens != NULL; }
