/* Optimizers: configuration, parameter groups, and the step (check, norm, clip, noise, update). The
 * algorithms are documented in optim/optim.h. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/autograd.h"
#include "core/parallel.h"
#include "core/rng.h"
#include "optim/optim_internal.h"
#include "cuda/optim.h"

/* ------------------------------------------------------------------ configuration */

cg_optimizer_config cg_optimizer_config_default(cg_optimizer_kind kind) {
    cg_optimizer_config c;
    memset(&c, 0, sizeof c);
    c.kind = kind;
    switch (kind) {
    case CG_OPT_SGD: c.lr = 1e-3f; break;
    case CG_OPT_ADAMW:
        c.lr = 1e-3f;
        c.beta1 = 0.9f;
        c.beta2 = 0.999f;
        c.eps = 1e-8f;
        c.weight_decay = 1e-2f;
        break;
    case CG_OPT_LION:
        c.lr = 1e-4f;
        c.beta1 = 0.9f;
        c.beta2 = 0.99f;
        break;
    }
    return c;
}

static const char *const kind_names[] = {"sgd", "adamw", "lion"};

const char *cg_optimizer_kind_name(cg_optimizer_kind kind) { return (unsigned)kind < 3 ? kind_names[kind] : "unknown"; }

cg_status cg_optimizer_kind_from_name(const char *name, cg_optimizer_kind *out) {
    if (!name || !out) return cg_set_error(CG_ERR_INVALID_ARG, "optimizer: NULL name");
    for (int i = 0; i < 3; i++) {
        if (strcmp(name, kind_names[i]) == 0) {
            *out = (cg_optimizer_kind)i;
            return CG_OK;
        }
    }
    return cg_set_error(CG_ERR_INVALID_ARG, "optimizer: unknown kind '%s' (sgd, adamw, lion)", name);
}

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

bool cg_optimizer_default_decays(const cg_tensor *t, bool decay_embeddings) {
    if (!t || t->ndim < 2) return false;
    if (!decay_embeddings && t->name &&
        (ends_with(t->name, "wte.weight") || ends_with(t->name, "embed_tokens.weight") ||
         ends_with(t->name, "wpe.weight")))
        return false;
    return true;
}

static bool finite_nonneg(float x) { return isfinite(x) && x >= 0.0f; }

static cg_status check_config(const cg_optimizer_config *c) {
    if ((unsigned)c->kind > CG_OPT_LION)
        return cg_set_error(CG_ERR_INVALID_ARG, "optimizer: unknown kind %d", (int)c->kind);
    const char *k = cg_optimizer_kind_name(c->kind);
    if (!finite_nonneg(c->lr))
        return cg_set_error(CG_ERR_INVALID_ARG, "optimizer %s: lr %g must be finite and >= 0", k, c->lr);
    if (!finite_nonneg(c->weight_decay))
        return cg_set_error(CG_ERR_INVALID_ARG, "optimizer %s: weight_decay %g must be finite and >= 0", k,
                            c->weight_decay);
    if (!finite_nonneg(c->grad_clip))
        return cg_set_error(CG_ERR_INVALID_ARG, "optimizer %s: grad_clip %g must be finite and >= 0 (0 = off)", k,
                            c->grad_clip);
    if (!finite_nonneg(c->grad_noise_eta))
        return cg_set_error(CG_ERR_INVALID_ARG, "optimizer %s: grad_noise_eta %g must be finite and >= 0 (0 = off)", k,
                            c->grad_noise_eta);
    if (c->kind == CG_OPT_SGD) {
        if (!finite_nonneg(c->momentum) || c->momentum >= 1.0f)
            return cg_set_error(CG_ERR_INVALID_ARG, "optimizer sgd: momentum %g must be in [0, 1)", c->momentum);
        if (c->nesterov && c->momentum <= 0.0f)
            return cg_set_error(CG_ERR_INVALID_ARG, "optimizer sgd: nesterov needs momentum > 0");
    } else {
        if (!(c->beta1 >= 0.0f && c->beta1 < 1.0f) || !(c->beta2 >= 0.0f && c->beta2 < 1.0f))
            return cg_set_error(CG_ERR_INVALID_ARG, "optimizer %s: betas (%g, %g) must be in [0, 1)", k, c->beta1,
                                c->beta2);
        if (c->kind == CG_OPT_ADAMW && !(isfinite(c->eps) && c->eps > 0.0f))
            return cg_set_error(CG_ERR_INVALID_ARG, "optimizer adamw: eps %g must be finite and > 0", c->eps);
    }
    return CG_OK;
}

static cg_status check_param(const cg_tensor *t, int i, cg_device device) {
    char desc[96];
    if (!t) return cg_set_error(CG_ERR_INVALID_ARG, "optimizer: parameter %d is NULL", i);
    const char *name = t->name ? t->name : "(unnamed)";
    if (!cg_device_eq(t->device, device)) {
        char d0[16];
        return cg_set_error(CG_ERR_DEVICE, "optimizer: parameter %d (%s, %s) is not on %s, the device of parameter 0",
                            i, name, cg_tensor_desc(t, desc, sizeof desc), cg_device_str(device, d0, sizeof d0));
    }
    if (t->device.type == CG_DEVICE_CUDA && !cg_cuda_compiled())
        return cg_set_error(CG_ERR_UNSUPPORTED, "optimizer: parameter %d (%s, %s) is on a GPU but cgrad was built "
                            "without CUDA", i, name, cg_tensor_desc(t, desc, sizeof desc));
    if (t->device.type == CG_DEVICE_CUDA && t->device.index >= cg_cuda_device_count())
        return cg_set_error(CG_ERR_DEVICE, "optimizer: parameter %d (%s, %s) is on a GPU that does not exist", i, name,
                            cg_tensor_desc(t, desc, sizeof desc));
    if (t->dtype != CG_F32)
        return cg_set_error(CG_ERR_DTYPE, "optimizer: parameter %d (%s, %s) must be f32 (fp32 master weights)", i, name,
                            cg_tensor_desc(t, desc, sizeof desc));
    if (!cg_is_contiguous(t))
        return cg_set_error(CG_ERR_INVALID_ARG, "optimizer: parameter %d (%s, %s) must be contiguous", i, name,
                            cg_tensor_desc(t, desc, sizeof desc));
    return CG_OK;
}

/* ------------------------------------------------------------------ create / free */

/* ------------------------------------------------------------------ GPU tables */

/* The host mirror of the kernels' parameter table, from the current gradient pointers. Returns true when it
 * changed (then it must be uploaded). */
static bool cuda_params_refresh(cg_optimizer *o) {
    cg_cuda_optim_param *hp = o->host_params;
    bool changed = false;
    for (int i = 0; i < o->n_params; i++) {
        const cg_optim_param *p = &o->params[i];
        cg_cuda_optim_param q = {
            .w = cg_data(p->t),
            .g = p->t->grad ? (const float *)cg_data(p->t->grad) : NULL,
            .s0 = p->state[0],
            .s1 = p->state[1],
            .working = p->working ? (uint16_t *)cg_data(p->working) : NULL,
            .numel = p->numel,
            .global_offset = p->global_offset,
            .lr_mult = p->lr_mult,
            .weight_decay = p->weight_decay,
        };
        if (memcmp(&hp[i], &q, sizeof q) != 0) {
            hp[i] = q;
            changed = true;
        }
    }
    return changed;
}

static cg_status cuda_params_upload(cg_optimizer *o, bool force) {
    if (!cuda_params_refresh(o) && !force) return CG_OK;
    return cg_device_memcpy(o->device, o->cuda_params, CG_CPU, o->host_params,
                            sizeof(cg_cuda_optim_param) * (size_t)o->n_params);
}

static cg_status cuda_tables_create(cg_optimizer *o) {
    size_t pbytes = sizeof(cg_cuda_optim_param) * (size_t)(o->n_params + 1);
    size_t cbytes = sizeof(cg_cuda_optim_chunk) * (size_t)(o->n_chunks + 1);
    o->host_params = calloc(1, pbytes);
    o->chunk_sumsq = calloc((size_t)(o->n_chunks + 1), sizeof(double));
    o->chunk_nonfinite = calloc((size_t)(o->n_chunks + 1), sizeof(int64_t));
    cg_cuda_optim_chunk *hc = calloc(1, cbytes);
    o->cuda_params = cg_arena_alloc(o->arena, pbytes, 64);
    o->cuda_chunks = cg_arena_alloc(o->arena, cbytes, 64);
    o->cuda_sumsq = cg_arena_alloc(o->arena, sizeof(double) * (size_t)(o->n_chunks + 1), 64);
    o->cuda_nonfinite = cg_arena_alloc(o->arena, sizeof(int64_t) * (size_t)(o->n_chunks + 1), 64);
    cg_status s = CG_OK;
    if (!o->host_params || !o->chunk_sumsq || !o->chunk_nonfinite || !hc)
        s = cg_set_error(CG_ERR_OOM, "optimizer: out of host memory for the GPU tables");
    else if (!o->cuda_params || !o->cuda_chunks || !o->cuda_sumsq || !o->cuda_nonfinite)
        s = cg_error_context("optimizer: GPU tables: ");
    if (s == CG_OK) {
        for (int64_t c = 0; c < o->n_chunks; c++)
            hc[c] = (cg_cuda_optim_chunk){o->chunks[c].param, o->chunks[c].start, o->chunks[c].len};
        s = cg_device_memcpy(o->device, o->cuda_chunks, CG_CPU, hc, cbytes);
    }
    if (s == CG_OK) s = cuda_params_upload(o, true);
    free(hc);
    return s;
}

/* The optimizer over params[0..n) with per-parameter lr multipliers and weight decays. */
static cg_status create_flat(const cg_optimizer_config *cfg, int n, cg_tensor *const *list, const float *lr_mult,
                             const float *weight_decay, cg_comm *comm, cg_optimizer **out) {
    cg_status s;
    cg_optimizer *o = calloc(1, sizeof *o);
    if (!o) return cg_set_error(CG_ERR_OOM, "optimizer: out of host memory");
    o->cfg = *cfg;
    o->n_params = n;
    o->params = calloc((size_t)(n ? n : 1), sizeof *o->params);
    if (!o->params) {
        free(o);
        return cg_set_error(CG_ERR_OOM, "optimizer: out of host memory for %d parameters", n);
    }
    int64_t total = 0, n_chunks = 0;
    o->device = n > 0 && list[0] ? list[0]->device : CG_CPU;
    bool gpu = o->device.type == CG_DEVICE_CUDA;
    for (int i = 0; i < n; i++) {
        cg_tensor *t = list[i];
        if ((s = check_param(t, i, o->device)) != CG_OK) goto fail;
        for (int j = 0; j < i; j++) {
            if (o->params[j].t == t) {
                s = cg_set_error(CG_ERR_INVALID_ARG, "optimizer: parameter %d (%s) is listed twice (also as %d)", i,
                                 t->name ? t->name : "(unnamed)", j);
                goto fail;
            }
        }
        cg_optim_param *p = &o->params[i];
        p->t = t;
        p->numel = cg_numel(t);
        p->global_offset = total;
        p->lr_mult = lr_mult[i];
        p->weight_decay = weight_decay[i];
        total += p->numel;
        n_chunks += (p->numel + CG_OPTIM_CHUNK - 1) / CG_OPTIM_CHUNK;
    }
    o->total_elements = total;
    o->n_chunks = n_chunks;
    /* ZeRO-1: this rank's share of the elements laid end to end. */
    int world = comm ? cg_comm_size(comm) : 1;
    o->shard_lo = 0;
    o->shard_hi = total;
    o->shard_size = total;
    if (world > 1 && gpu) {
        s = cg_set_error(CG_ERR_UNSUPPORTED, "optimizer (ZeRO-1): sharding the state of CUDA parameters is not "
                         "implemented yet (use the unsharded optimizer)");
        goto fail;
    }
    if (world > 1) {
        int rank = cg_comm_rank(comm);
        o->comm = comm;
        o->shard_size = (total + world - 1) / world;
        o->shard_lo = (int64_t)rank * o->shard_size < total ? (int64_t)rank * o->shard_size : total;
        o->shard_hi = o->shard_lo + o->shard_size < total ? o->shard_lo + o->shard_size : total;
    }
    int64_t n_update = 0;
    for (int i = 0; i < n; i++) {
        cg_optim_param *p = &o->params[i];
        int64_t a = o->shard_lo - p->global_offset, b = o->shard_hi - p->global_offset;
        a = a < 0 ? 0 : (a > p->numel ? p->numel : a);
        b = b < 0 ? 0 : (b > p->numel ? p->numel : b);
        p->shard_start = a;
        p->shard_len = b > a ? b - a : 0;
        n_update += (p->shard_len + CG_OPTIM_CHUNK - 1) / CG_OPTIM_CHUNK;
    }
    switch (cfg->kind) {
    case CG_OPT_SGD: o->n_state = cfg->momentum > 0.0f ? 1 : 0; break;
    case CG_OPT_ADAMW: o->n_state = 2; break;
    case CG_OPT_LION: o->n_state = 1; break;
    }

    o->chunks = malloc(sizeof *o->chunks * (size_t)(n_chunks ? n_chunks : 1));
    if (!o->chunks) {
        s = cg_set_error(CG_ERR_OOM, "optimizer: out of host memory for %lld chunks", (long long)n_chunks);
        goto fail;
    }
    int64_t c = 0;
    for (int p = 0; p < n; p++) {
        int64_t numel = o->params[p].numel;
        for (int64_t st = 0; st < numel; st += CG_OPTIM_CHUNK, c++)
            o->chunks[c] = (cg_optim_chunk){p, st, numel - st < CG_OPTIM_CHUNK ? numel - st : CG_OPTIM_CHUNK};
    }
    if (o->comm) {
        o->update_chunks = malloc(sizeof *o->update_chunks * (size_t)(n_update ? n_update : 1));
        if (!o->update_chunks) {
            s = cg_set_error(CG_ERR_OOM, "optimizer: out of host memory for %lld chunks", (long long)n_update);
            goto fail;
        }
        c = 0;
        for (int p = 0; p < n; p++) {
            int64_t end = o->params[p].shard_start + o->params[p].shard_len;
            for (int64_t st = o->params[p].shard_start; st < end; st += CG_OPTIM_CHUNK, c++)
                o->update_chunks[c] = (cg_optim_chunk){p, st, end - st < CG_OPTIM_CHUNK ? end - st : CG_OPTIM_CHUNK};
        }
        o->n_update_chunks = n_update;
    } else {
        o->update_chunks = o->chunks;
        o->n_update_chunks = n_chunks;
    }

    /* One arena chunk for everything: state tensors (64-byte aligned each), the per-chunk sums and, on a
     * GPU, the kernels' tables. */
    int64_t shard_total = o->shard_hi - o->shard_lo;
    size_t gather_bytes = o->comm ? (size_t)world * (size_t)o->shard_size * sizeof(float) + 64 : 0;
    size_t bytes = (size_t)o->n_state * ((size_t)shard_total * sizeof(float) + 64 * (size_t)n) +
                   (size_t)(n_chunks + 1) * (sizeof(double) + sizeof(int64_t)) + 256 + gather_bytes;
    if (gpu) bytes += (size_t)(n + 1) * sizeof(cg_cuda_optim_param) + (size_t)(n_chunks + 1) * sizeof(cg_cuda_optim_chunk) + 256;
    o->arena = cg_arena_create("optimizer", o->device, bytes);
    if (!o->arena) {
        s = cg_error_context("optimizer: ");
        goto fail;
    }
    for (int p = 0; p < n; p++) {
        for (int k = 0; k < o->n_state; k++) {
            size_t nb = (size_t)o->params[p].shard_len * sizeof(float);
            o->params[p].state[k] = cg_arena_alloc(o->arena, nb ? nb : 4, 64);
            if (!o->params[p].state[k]) {
                s = cg_error_context("optimizer: state of %s: ",
                                     o->params[p].t->name ? o->params[p].t->name : "parameter");
                goto fail;
            }
            if ((s = cg_device_memset_zero(o->device, o->params[p].state[k], nb)) != CG_OK) goto fail;
        }
    }
    if (gpu) {
        if ((s = cuda_tables_create(o)) != CG_OK) goto fail;
    } else {
        o->chunk_sumsq = cg_arena_alloc(o->arena, sizeof(double) * (size_t)(n_chunks + 1), 64);
        o->chunk_nonfinite = cg_arena_alloc(o->arena, sizeof(int64_t) * (size_t)(n_chunks + 1), 64);
        if (o->comm) o->gather = cg_arena_alloc(o->arena, gather_bytes - 64, 64);
        if (!o->chunk_sumsq || !o->chunk_nonfinite || (o->comm && !o->gather)) {
            s = cg_error_context("optimizer: ");
            goto fail;
        }
    }
    *out = o;
    return CG_OK;
fail:
    cg_optimizer_free(o);
    return s;
}

cg_status cg_optimizer_create_groups(const cg_optimizer_config *cfg, int n_groups, const cg_param_group *groups,
                                     cg_optimizer **out) {
    if (!out) return cg_set_error(CG_ERR_INVALID_ARG, "optimizer: NULL output");
    *out = NULL;
    if (!cfg) return cg_set_error(CG_ERR_INVALID_ARG, "optimizer: NULL config");
    cg_status s = check_config(cfg);
    if (s != CG_OK) return s;
    if (n_groups < 0 || (n_groups > 0 && !groups))
        return cg_set_error(CG_ERR_INVALID_ARG, "optimizer: %d groups with a NULL group list", n_groups);
    int n = 0;
    for (int g = 0; g < n_groups; g++) {
        if (groups[g].n < 0 || (groups[g].n > 0 && !groups[g].params))
            return cg_set_error(CG_ERR_INVALID_ARG, "optimizer: group %d has %d parameters and a NULL list", g,
                                groups[g].n);
        if (!finite_nonneg(groups[g].lr_mult) || !finite_nonneg(groups[g].weight_decay))
            return cg_set_error(CG_ERR_INVALID_ARG,
                                "optimizer: group %d: lr_mult %g and weight_decay %g must be finite and >= 0", g,
                                groups[g].lr_mult, groups[g].weight_decay);
        if (groups[g].n > INT32_MAX / 2 - n) return cg_set_error(CG_ERR_INVALID_ARG, "optimizer: too many parameters");
        n += groups[g].n;
    }
    cg_tensor **list = malloc(sizeof *list * (size_t)(n ? n : 1));
    float *lr_mult = malloc(sizeof *lr_mult * (size_t)(n ? n : 1));
    float *wd = malloc(sizeof *wd * (size_t)(n ? n : 1));
    if (!list || !lr_mult || !wd) {
        s = cg_set_error(CG_ERR_OOM, "optimizer: out of host memory");
    } else {
        int i = 0;
        for (int g = 0; g < n_groups; g++) {
            for (int k = 0; k < groups[g].n; k++, i++) {
                list[i] = groups[g].params[k];
                lr_mult[i] = groups[g].lr_mult;
                wd[i] = groups[g].weight_decay;
            }
        }
        s = create_flat(cfg, n, list, lr_mult, wd, NULL, out);
    }
    free(list);
    free(lr_mult);
    free(wd);
    return s;
}

static cg_status create_list(const cg_optimizer_config *cfg, int n, cg_tensor *const *params, cg_comm *comm,
                             cg_optimizer **out) {
    if (!out) return cg_set_error(CG_ERR_INVALID_ARG, "optimizer: NULL output");
    *out = NULL;
    if (!cfg) return cg_set_error(CG_ERR_INVALID_ARG, "optimizer: NULL config");
    cg_status s = check_config(cfg);
    if (s != CG_OK) return s;
    if (n < 0 || (n > 0 && !params))
        return cg_set_error(CG_ERR_INVALID_ARG, "optimizer: %d parameters with a NULL list", n);
    float *lr_mult = malloc(sizeof *lr_mult * (size_t)(n ? n : 1));
    float *wd = malloc(sizeof *wd * (size_t)(n ? n : 1));
    if (!lr_mult || !wd) {
        s = cg_set_error(CG_ERR_OOM, "optimizer: out of host memory");
    } else {
        for (int i = 0; i < n; i++) {
            lr_mult[i] = 1.0f;
            wd[i] = cg_optimizer_default_decays(params[i], cfg->decay_embeddings) ? cfg->weight_decay : 0.0f;
        }
        s = create_flat(cfg, n, params, lr_mult, wd, comm, out);
    }
    free(lr_mult);
    free(wd);
    return s;
}

cg_status cg_optimizer_create(const cg_optimizer_config *cfg, int n, cg_tensor *const *params, cg_optimizer **out) {
    return create_list(cfg, n, params, NULL, out);
}

cg_status cg_optimizer_create_zero1(const cg_optimizer_config *cfg, int n, cg_tensor *const *params, cg_comm *comm,
                                    cg_optimizer **out) {
    if (!comm) {
        if (out) *out = NULL;
        return cg_set_error(CG_ERR_INVALID_ARG, "optimizer (ZeRO-1): NULL communicator");
    }
    return create_list(cfg, n, params, comm, out);
}

bool cg_optimizer_is_sharded(const cg_optimizer *o) { return o && o->comm; }

void cg_optimizer_shard_range(const cg_optimizer *o, int64_t *lo, int64_t *hi) {
    if (lo) *lo = o ? o->shard_lo : 0;
    if (hi) *hi = o ? o->shard_hi : 0;
}

/* Copies global elements [lo, hi) between the parameters (or their state k when k >= 0) and a flat array. */
void cg_optim_copy_range(cg_optimizer *o, int k, int64_t lo, int64_t hi, float *flat, bool to_flat) {
    for (int i = 0; i < o->n_params; i++) {
        cg_optim_param *p = &o->params[i];
        int64_t a = lo - p->global_offset, b = hi - p->global_offset;
        a = a < 0 ? 0 : (a > p->numel ? p->numel : a);
        b = b < 0 ? 0 : (b > p->numel ? p->numel : b);
        if (b <= a) continue;
        float *src = k < 0 ? (float *)cg_data(p->t) + a : p->state[k] + (a - p->shard_start);
        float *dst = flat + (p->global_offset + a - lo);
        size_t nb = (size_t)(b - a) * sizeof(float);
        if (to_flat)
            memcpy(dst, src, nb);
        else
            memcpy(src, dst, nb);
    }
}

cg_status cg_optim_gather_params(cg_optimizer *o) {
    float *mine = o->gather + (size_t)cg_comm_rank(o->comm) * (size_t)o->shard_size;
    cg_optim_copy_range(o, -1, o->shard_lo, o->shard_hi, mine, true);
    cg_status s = cg_comm_allgather(o->comm, CG_CPU, mine, o->gather, o->shard_size, CG_F32);
    if (s != CG_OK) return s;
    cg_optim_copy_range(o, -1, 0, o->total_elements, o->gather, false);
    return CG_OK;
}

void cg_optimizer_free(cg_optimizer *o) {
    if (!o) return;
    if (o->arena) cg_arena_destroy(o->arena);
    if (o->update_chunks != o->chunks) free(o->update_chunks);
    if (o->device.type == CG_DEVICE_CUDA) { /* host buffers (on the CPU they live in the arena) */
        free(o->chunk_sumsq);
        free(o->chunk_nonfinite);
        free(o->host_params);
    }
    free(o->chunks);
    free(o->params);
    free(o);
}

/* ------------------------------------------------------------------ accessors */

int64_t cg_optimizer_step_count(const cg_optimizer *o) { return o ? o->step : 0; }
const cg_optimizer_config *cg_optimizer_get_config(const cg_optimizer *o) { return o ? &o->cfg : NULL; }
int cg_optimizer_num_params(const cg_optimizer *o) { return o ? o->n_params : 0; }
cg_tensor *cg_optimizer_param(const cg_optimizer *o, int i) {
    return o && i >= 0 && i < o->n_params ? o->params[i].t : NULL;
}
float cg_optimizer_param_weight_decay(const cg_optimizer *o, int i) {
    return o && i >= 0 && i < o->n_params ? o->params[i].weight_decay : 0.0f;
}
float cg_optimizer_param_lr_mult(const cg_optimizer *o, int i) {
    return o && i >= 0 && i < o->n_params ? o->params[i].lr_mult : 0.0f;
}

cg_status cg_optimizer_set_working_copy(cg_optimizer *o, int i, cg_tensor *copy) {
    if (!o || i < 0 || i >= o->n_params)
        return cg_set_error(CG_ERR_INVALID_ARG, "optimizer working copy: no parameter %d", i);
    cg_optim_param *p = &o->params[i];
    char d[2][96];
    if (copy && (copy->dtype != CG_BF16 || !cg_is_contiguous(copy) || !cg_same_shape(copy, p->t) ||
                 !cg_device_eq(copy->device, p->t->device)))
        return cg_set_error(CG_ERR_INVALID_ARG, "optimizer working copy of parameter %d (%s): %s must be a packed bf16 "
                            "tensor of the shape and device of %s", i, p->t->name ? p->t->name : "(unnamed)",
                            cg_tensor_desc(copy, d[0], sizeof d[0]), cg_tensor_desc(p->t, d[1], sizeof d[1]));
    p->working = copy;
    if (copy) { /* current from now on, not only after the next update */
        cg_status s = cg_copy(copy, p->t);
        if (s != CG_OK) return s;
    }
    return CG_OK;
}

void cg_optimizer_zero_grad(cg_optimizer *o) {
    if (!o) return;
    for (int i = 0; i < o->n_params; i++)
        cg_zero_grad(o->params[i].t);
}

/* ------------------------------------------------------------------ step */

static cg_status check_grad(const cg_optim_param *p, int i) {
    const cg_tensor *g = p->t->grad;
    if (!g) return CG_OK;
    char desc[96], pdesc[96];
    if (!cg_device_eq(g->device, p->t->device) || g->dtype != CG_F32 || !cg_is_contiguous(g) || cg_numel(g) != p->numel)
        return cg_set_error(CG_ERR_INVALID_ARG,
                            "optimizer step: gradient of parameter %d (%s, %s) is %s: needs a contiguous f32 "
                            "tensor of the same size on the parameter's device",
                            i, p->t->name ? p->t->name : "(unnamed)", cg_tensor_desc(p->t, pdesc, sizeof pdesc),
                            cg_tensor_desc(g, desc, sizeof desc));
    return CG_OK;
}

/* The update constants of one step for one parameter (scalars in double, as PyTorch's Python floats). */
typedef struct step_consts {
    float clip;            /* gradient scale */
    float noise_std;       /* 0 = no noise */
    uint64_t noise_block0; /* first Philox block of this step's noise */
    float b1, one_minus_b1, b2, one_minus_b2;
    double bias_correction1, bias_correction2_sqrt;
    float momentum;
    bool nesterov;
} step_consts;

static void update_chunk(const cg_optimizer *o, const cg_optim_chunk *c, const step_consts *k, float lr) {
    const cg_optim_param *p = &o->params[c->param];
    if (!p->t->grad) return;
    float *w = (float *)cg_data(p->t) + c->start;
    const float *g = (const float *)cg_data(p->t->grad) + c->start;
    float *s0 = p->state[0] ? p->state[0] + (c->start - p->shard_start) : NULL;
    float *s1 = p->state[1] ? p->state[1] + (c->start - p->shard_start) : NULL;
    uint16_t *working = p->working ? (uint16_t *)cg_data(p->working) + c->start : NULL;
    double lr_eff = (double)lr * (double)p->lr_mult;
    float decay = (float)(1.0 - lr_eff * (double)p->weight_decay);
    bool decays = p->weight_decay != 0.0f;
    float lr_f = (float)lr_eff;

    /* The noise for element j comes from block noise_block0 + j/4; blocks are made four values at a time. */
    uint64_t cached_block = UINT64_MAX;
    float z[4] = {0, 0, 0, 0};
    int64_t j0 = p->global_offset + c->start;

    float step_size = 0.0f, bc2_sqrt = 1.0f;
    if (o->cfg.kind == CG_OPT_ADAMW) {
        step_size = (float)(lr_eff / k->bias_correction1);
        bc2_sqrt = (float)k->bias_correction2_sqrt;
    }
    const float eps = o->cfg.eps;

    for (int64_t i = 0; i < c->len; i++) {
        float gi = g[i];
        if (k->clip != 1.0f) gi *= k->clip;
        if (k->noise_std > 0.0f) {
            uint64_t j = (uint64_t)(j0 + i);
            uint64_t block = k->noise_block0 + (j >> 2);
            if (block != cached_block) {
                uint32_t words[4];
                cg_rng_block(o->cfg.seed, CG_OPTIM_NOISE_STREAM, block, words);
                cg_rng_box_muller(words[0], words[1], &z[0], &z[1]);
                cg_rng_box_muller(words[2], words[3], &z[2], &z[3]);
                cached_block = block;
            }
            gi += k->noise_std * z[j & 3];
        }
        float wi = w[i];
        if (decays) wi *= decay;
        switch (o->cfg.kind) {
        case CG_OPT_SGD: {
            float d = gi;
            if (s0) {
                float b = k->momentum * s0[i] + gi;
                s0[i] = b;
                d = k->nesterov ? gi + k->momentum * b : b;
            }
            wi -= lr_f * d;
            break;
        }
        case CG_OPT_ADAMW: {
            float m = k->b1 * s0[i] + k->one_minus_b1 * gi;
            float v = k->b2 * s1[i] + k->one_minus_b2 * gi * gi;
            s0[i] = m;
            s1[i] = v;
            float denom = sqrtf(v) / bc2_sqrt + eps;
            wi -= step_size * (m / denom);
            break;
        }
        case CG_OPT_LION: {
            float m = s0[i];
            float cmix = k->b1 * m + k->one_minus_b1 * gi;
            float sign = (cmix > 0.0f) ? 1.0f : (cmix < 0.0f ? -1.0f : 0.0f);
            wi -= lr_f * sign;
            s0[i] = k->b2 * m + k->one_minus_b2 * gi;
            break;
        }
        }
        w[i] = wi;
        if (working) working[i] = cg_f32_to_bf16(wi);
    }
}

/* Non-finite gradient elements and the sum of squares, per chunk, then summed in chunk order (so the result
 * does not depend on the thread count). */
static cg_status scan_grads(cg_optimizer *o, double *sumsq_out, int64_t *nonfinite_out, int *first_bad_out) {
    const int64_t nc = o->n_chunks;
    if (o->device.type == CG_DEVICE_CUDA) { /* per-chunk sums on the GPU, folded here in chunk order */
        cg_status s = cg_cuda_set_device(o->device.index);
        if (s == CG_OK) s = cuda_params_upload(o, false);
#ifdef CG_HAVE_CUDA
        if (s == CG_OK) s = cg_cuda_optim_scan(o->cuda_params, o->cuda_chunks, nc, o->cuda_sumsq, o->cuda_nonfinite);
#endif
        if (s == CG_OK) s = cg_device_memcpy(CG_CPU, o->chunk_sumsq, o->device, o->cuda_sumsq, sizeof(double) * (size_t)nc);
        if (s == CG_OK)
            s = cg_device_memcpy(CG_CPU, o->chunk_nonfinite, o->device, o->cuda_nonfinite, sizeof(int64_t) * (size_t)nc);
        if (s != CG_OK) return s;
        goto fold;
    }
    CG_OMP_FOR_IF(o->total_elements > 65536)
    for (int64_t c = 0; c < nc; c++) {
        const cg_optim_chunk *ch = &o->chunks[c];
        const cg_tensor *gt = o->params[ch->param].t->grad;
        double sum = 0.0;
        int64_t bad = 0;
        if (gt) {
            const float *g = (const float *)cg_data(gt) + ch->start;
            for (int64_t i = 0; i < ch->len; i++) {
                float x = g[i];
                if (!isfinite(x)) bad++;
                sum += (double)x * (double)x;
            }
        }
        o->chunk_sumsq[c] = sum;
        o->chunk_nonfinite[c] = bad;
    }
fold:;
    double sumsq = 0.0;
    int64_t nonfinite = 0;
    int first_bad = -1;
    for (int64_t c = 0; c < nc; c++) {
        sumsq += o->chunk_sumsq[c];
        nonfinite += o->chunk_nonfinite[c];
        if (o->chunk_nonfinite[c] && first_bad < 0) first_bad = o->chunks[c].param;
    }
    *sumsq_out = sumsq;
    *nonfinite_out = nonfinite;
    *first_bad_out = first_bad;
    return CG_OK;
}

cg_status cg_optimizer_grad_norm(cg_optimizer *o, double *norm, int64_t *nonfinite) {
    if (!o || !norm) return cg_set_error(CG_ERR_INVALID_ARG, "optimizer grad_norm: NULL argument");
    for (int i = 0; i < o->n_params; i++) {
        cg_status s = check_grad(&o->params[i], i);
        if (s != CG_OK) return s;
    }
    double sumsq;
    int64_t bad;
    int first;
    cg_status s = scan_grads(o, &sumsq, &bad, &first);
    if (s != CG_OK) return s;
    *norm = bad ? (double)NAN : sqrt(sumsq);
    if (nonfinite) *nonfinite = bad;
    return CG_OK;
}

cg_status cg_optimizer_step(cg_optimizer *o, float lr, cg_optim_step_info *info) {
    if (info) {
        memset(info, 0, sizeof *info);
        info->first_nonfinite = -1;
        info->clip_coef = 1.0;
    }
    if (!o) return cg_set_error(CG_ERR_INVALID_ARG, "optimizer step: NULL optimizer");
    if (!finite_nonneg(lr))
        return cg_set_error(CG_ERR_INVALID_ARG, "optimizer step: lr %g must be finite and >= 0", lr);
    for (int i = 0; i < o->n_params; i++) {
        cg_status s = check_grad(&o->params[i], i);
        if (s != CG_OK) return s;
    }
    if (info) info->step = o->step;

    /* 1-2: non-finite elements and the sum of squares. */
    double sumsq;
    int64_t nonfinite;
    int first_bad;
    cg_status scan_status = scan_grads(o, &sumsq, &nonfinite, &first_bad);
    if (scan_status != CG_OK) return scan_status;
    double norm = sqrt(sumsq);
    if (info) {
        info->grad_norm = nonfinite ? (double)NAN : norm;
        info->nonfinite = nonfinite;
        info->first_nonfinite = first_bad;
    }
    if (nonfinite) {
        if (info) info->skipped = true;
        return CG_OK;
    }

    /* 3-4: clipping coefficient and noise level. */
    step_consts k;
    memset(&k, 0, sizeof k);
    k.clip = 1.0f;
    if (o->cfg.grad_clip > 0.0f) {
        double coef = (double)o->cfg.grad_clip / (norm + 1e-6);
        if (coef < 1.0) k.clip = (float)coef;
    }
    if (o->cfg.grad_noise_eta > 0.0f) {
        double var = (double)o->cfg.grad_noise_eta / pow(1.0 + (double)o->step, 0.55);
        k.noise_std = (float)sqrt(var);
        k.noise_block0 = (uint64_t)o->step << 40;
    }
    /* 5: the update. */
    int64_t t = o->step + 1;
    k.b1 = o->cfg.beta1;
    k.b2 = o->cfg.beta2;
    k.one_minus_b1 = (float)(1.0 - (double)o->cfg.beta1);
    k.one_minus_b2 = (float)(1.0 - (double)o->cfg.beta2);
    k.bias_correction1 = 1.0 - pow((double)o->cfg.beta1, (double)t);
    k.bias_correction2_sqrt = sqrt(1.0 - pow((double)o->cfg.beta2, (double)t));
    k.momentum = o->cfg.momentum;
    k.nesterov = o->cfg.nesterov;

    if (o->device.type == CG_DEVICE_CUDA) { /* never sharded (refused at create) */
        cg_cuda_optim_consts kc = {
            .kind = (int)o->cfg.kind, .lr = (double)lr, .clip = k.clip, .noise_std = k.noise_std,
            .noise_block0 = k.noise_block0, .seed = o->cfg.seed, .noise_stream = CG_OPTIM_NOISE_STREAM,
            .b1 = k.b1, .one_minus_b1 = k.one_minus_b1, .b2 = k.b2, .one_minus_b2 = k.one_minus_b2,
            .eps = o->cfg.eps, .momentum = k.momentum, .nesterov = k.nesterov,
            .bias_correction1 = k.bias_correction1, .bias_correction2_sqrt = k.bias_correction2_sqrt,
        };
        cg_status s = CG_OK;
#ifdef CG_HAVE_CUDA
        s = cg_cuda_optim_update(o->cuda_params, o->cuda_chunks, o->n_chunks, &kc);
#else
        (void)kc;
#endif
        if (s != CG_OK) return s;
    } else {
        const int64_t nc = o->n_update_chunks;
        CG_OMP_FOR_IF(o->total_elements > 65536)
        for (int64_t c = 0; c < nc; c++)
            update_chunk(o, &o->update_chunks[c], &k, lr);
        if (o->comm) {
            cg_status s = cg_optim_gather_params(o);
            if (s != CG_OK) return cg_error_context("optimizer step (ZeRO-1 all-gather of the parameters): ");
        }
    }

    o->step = t;
    if (info) {
        info->clip_coef = k.clip;
        info->noise_std = k.noise_std;
        info->step = t;
    }
    return CG_OK;
}
