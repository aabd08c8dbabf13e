/* Optimizer state for checkpoints: a flat little-endian buffer (layout in optim/optim.h). */
#include <stdlib.h>
#include <string.h>

#include "optim/optim_internal.h"

#define STATE_MAGIC "CGOPTST1"
#define STATE_VERSION 1u
#define STATE_HEADER_BYTES 32 /* magic 8, version 4, kind 4, n_params 4, n_state 4, step 8 */

static void put_u32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}
static void put_u64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}
static uint32_t get_u32(const unsigned char *p) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++)
        v |= (uint32_t)p[i] << (8 * i);
    return v;
}
static uint64_t get_u64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* fp32 values are copied as their bytes: every supported host is little-endian (x86-64, aarch64). */
size_t cg_optimizer_state_bytes(const cg_optimizer *o) {
    if (!o) return 0;
    return STATE_HEADER_BYTES + 8 * (size_t)o->n_params +
           (size_t)o->n_state * (size_t)o->total_elements * sizeof(float);
}

cg_status cg_optimizer_save_state(const cg_optimizer *o, void *buf) {
    if (!o || !buf) return cg_set_error(CG_ERR_INVALID_ARG, "optimizer save_state: NULL argument");
    unsigned char *p = buf;
    memcpy(p, STATE_MAGIC, 8);
    put_u32(p + 8, STATE_VERSION);
    put_u32(p + 12, (uint32_t)o->cfg.kind);
    put_u32(p + 16, (uint32_t)o->n_params);
    put_u32(p + 20, (uint32_t)o->n_state);
    put_u64(p + 24, (uint64_t)o->step);
    p += STATE_HEADER_BYTES;
    for (int i = 0; i < o->n_params; i++, p += 8)
        put_u64(p, (uint64_t)o->params[i].numel);
    if (o->comm) { /* ZeRO-1: each state tensor gathered from the shards, then written whole */
        cg_optimizer *mo = (cg_optimizer *)o; /* the gather buffer is scratch */
        float *mine = mo->gather + (size_t)cg_comm_rank(o->comm) * (size_t)o->shard_size;
        for (int k = 0; k < o->n_state; k++) {
            cg_optim_copy_range(mo, k, o->shard_lo, o->shard_hi, mine, true);
            cg_status s = cg_comm_allgather(o->comm, CG_CPU, mine, mo->gather, o->shard_size, CG_F32);
            if (s != CG_OK) return cg_error_context("optimizer save_state (ZeRO-1 gather): ");
            memcpy(p, mo->gather, (size_t)o->total_elements * sizeof(float));
            p += (size_t)o->total_elements * sizeof(float);
        }
        return CG_OK;
    }
    for (int k = 0; k < o->n_state; k++) {
        for (int i = 0; i < o->n_params; i++) {
            size_t nb = (size_t)o->params[i].numel * sizeof(float);
            if (nb) {
                cg_status st = cg_device_memcpy(CG_CPU, p, o->device, o->params[i].state[k], nb);
                if (st != CG_OK) return st;
            }
            p += nb;
        }
    }
    return CG_OK;
}

cg_status cg_optimizer_load_state(cg_optimizer *o, const void *buf, size_t n) {
    if (!o || !buf) return cg_set_error(CG_ERR_INVALID_ARG, "optimizer load_state: NULL argument");
    const unsigned char *p = buf;
    if (n < STATE_HEADER_BYTES || memcmp(p, STATE_MAGIC, 8) != 0)
        return cg_set_error(CG_ERR_FORMAT, "optimizer load_state: not an optimizer state (%zu bytes, no '%s' header)",
                            n, STATE_MAGIC);
    uint32_t version = get_u32(p + 8), kind = get_u32(p + 12), n_params = get_u32(p + 16), n_state = get_u32(p + 20);
    int64_t step = (int64_t)get_u64(p + 24);
    if (version != STATE_VERSION)
        return cg_set_error(CG_ERR_FORMAT, "optimizer load_state: version %u (this build reads %u)", version,
                            STATE_VERSION);
    if (kind != (uint32_t)o->cfg.kind)
        return cg_set_error(CG_ERR_INVALID_ARG, "optimizer load_state: the state is for %s, this optimizer is %s",
                            cg_optimizer_kind_name((cg_optimizer_kind)kind), cg_optimizer_kind_name(o->cfg.kind));
    if (n_params != (uint32_t)o->n_params || n_state != (uint32_t)o->n_state)
        return cg_set_error(
            CG_ERR_INVALID_ARG,
            "optimizer load_state: the state has %u parameters with %u state tensors each, this optimizer %d with %d",
            n_params, n_state, o->n_params, o->n_state);
    if (step < 0) return cg_set_error(CG_ERR_FORMAT, "optimizer load_state: negative step %lld", (long long)step);
    if (n != cg_optimizer_state_bytes(o))
        return cg_set_error(CG_ERR_FORMAT, "optimizer load_state: %zu bytes, expected %zu", n,
                            cg_optimizer_state_bytes(o));
    p += STATE_HEADER_BYTES;
    for (int i = 0; i < o->n_params; i++, p += 8) {
        uint64_t numel = get_u64(p);
        if (numel != (uint64_t)o->params[i].numel)
            return cg_set_error(CG_ERR_INVALID_ARG,
                                "optimizer load_state: parameter %d (%s) has %llu elements in the state, %lld here", i,
                                o->params[i].t->name ? o->params[i].t->name : "(unnamed)", (unsigned long long)numel,
                                (long long)o->params[i].numel);
    }
    /* Everything checked: now copy (a ZeRO-1 optimizer keeps its shard of each state tensor). */
    for (int k = 0; k < o->n_state; k++) {
        for (int i = 0; i < o->n_params; i++) {
            const cg_optim_param *q = &o->params[i];
            size_t nb = (size_t)q->shard_len * sizeof(float);
            if (nb) {
                cg_status st = cg_device_memcpy(o->device, q->state[k], CG_CPU, p + (size_t)q->shard_start * sizeof(float), nb);
                if (st != CG_OK) return st;
            }
            p += (size_t)q->numel * sizeof(float);
        }
    }
    o->step = step;
    return CG_OK;
}

/* ---- ZeRO-1 shards: this rank's slice of each state tensor (layout in optim/optim.h) ---- */

#define SHARD_MAGIC "CGOPTSH1"
#define SHARD_HEADER_BYTES 64 /* magic 8, version 4, kind 4, n_params 4, n_state 4, step 8, total 8, lo 8, hi 8, 0 8 */

size_t cg_optimizer_shard_bytes(const cg_optimizer *o) {
    if (!o) return 0;
    return SHARD_HEADER_BYTES + 8 * (size_t)o->n_params +
           (size_t)o->n_state * (size_t)(o->shard_hi - o->shard_lo) * sizeof(float);
}

cg_status cg_optimizer_save_shard(const cg_optimizer *o, void *buf) {
    if (!o || !buf) return cg_set_error(CG_ERR_INVALID_ARG, "optimizer save_shard: NULL argument");
    unsigned char *p = buf;
    memset(p, 0, SHARD_HEADER_BYTES);
    memcpy(p, SHARD_MAGIC, 8);
    put_u32(p + 8, STATE_VERSION);
    put_u32(p + 12, (uint32_t)o->cfg.kind);
    put_u32(p + 16, (uint32_t)o->n_params);
    put_u32(p + 20, (uint32_t)o->n_state);
    put_u64(p + 24, (uint64_t)o->step);
    put_u64(p + 32, (uint64_t)o->total_elements);
    put_u64(p + 40, (uint64_t)o->shard_lo);
    put_u64(p + 48, (uint64_t)o->shard_hi);
    p += SHARD_HEADER_BYTES;
    for (int i = 0; i < o->n_params; i++, p += 8) put_u64(p, (uint64_t)o->params[i].numel);
    size_t nb = (size_t)(o->shard_hi - o->shard_lo) * sizeof(float);
    for (int k = 0; k < o->n_state; k++, p += nb)
        cg_optim_copy_range((cg_optimizer *)o, k, o->shard_lo, o->shard_hi, (float *)(void *)p, true);
    return CG_OK;
}

typedef struct shard_view {
    int64_t step, lo, hi;
    const unsigned char *values; /* n_state runs of (hi - lo) floats */
} shard_view;

/* Checks shard i against this optimizer; fills v. */
static cg_status parse_shard(const cg_optimizer *o, int i, const unsigned char *p, size_t n, shard_view *v) {
    if (n < SHARD_HEADER_BYTES || memcmp(p, SHARD_MAGIC, 8) != 0)
        return cg_set_error(CG_ERR_FORMAT, "optimizer load_shards: shard %d is not an optimizer shard", i);
    uint32_t version = get_u32(p + 8), kind = get_u32(p + 12), n_params = get_u32(p + 16), n_state = get_u32(p + 20);
    uint64_t total = get_u64(p + 32);
    v->step = (int64_t)get_u64(p + 24), v->lo = (int64_t)get_u64(p + 40), v->hi = (int64_t)get_u64(p + 48);
    if (version != STATE_VERSION || kind != (uint32_t)o->cfg.kind || n_params != (uint32_t)o->n_params ||
        n_state != (uint32_t)o->n_state || total != (uint64_t)o->total_elements)
        return cg_set_error(CG_ERR_INVALID_ARG, "optimizer load_shards: shard %d is of another optimizer (version %u, "
                            "%s, %u parameters, %u state tensors, %llu elements; this one: %s, %d, %d, %lld)", i,
                            version, cg_optimizer_kind_name((cg_optimizer_kind)kind), n_params, n_state,
                            (unsigned long long)total, cg_optimizer_kind_name(o->cfg.kind), o->n_params, o->n_state,
                            (long long)o->total_elements);
    if (v->step < 0 || v->lo < 0 || v->lo > v->hi || v->hi > o->total_elements)
        return cg_set_error(CG_ERR_FORMAT, "optimizer load_shards: shard %d: step %lld, range [%lld, %lld)", i,
                            (long long)v->step, (long long)v->lo, (long long)v->hi);
    size_t want = SHARD_HEADER_BYTES + 8 * (size_t)n_params + (size_t)n_state * (size_t)(v->hi - v->lo) * sizeof(float);
    if (n != want)
        return cg_set_error(CG_ERR_FORMAT, "optimizer load_shards: shard %d has %zu bytes, expected %zu", i, n, want);
    for (int k = 0; k < o->n_params; k++)
        if (get_u64(p + SHARD_HEADER_BYTES + 8 * (size_t)k) != (uint64_t)o->params[k].numel)
            return cg_set_error(CG_ERR_INVALID_ARG, "optimizer load_shards: shard %d: parameter %d's size differs", i, k);
    v->values = p + SHARD_HEADER_BYTES + 8 * (size_t)n_params;
    return CG_OK;
}

cg_status cg_optimizer_load_shards(cg_optimizer *o, int n, const void *const *bufs, const size_t *lens) {
    if (!o || n < 1 || !bufs || !lens) return cg_set_error(CG_ERR_INVALID_ARG, "optimizer load_shards: no shards");
    shard_view *v = calloc((size_t)n, sizeof *v);
    if (!v) return cg_set_error(CG_ERR_OOM, "optimizer load_shards: out of memory");
    cg_status s = CG_OK;
    int64_t covered = 0;
    for (int i = 0; i < n && s == CG_OK; i++) {
        s = parse_shard(o, i, bufs[i], lens[i], &v[i]);
        if (s != CG_OK) break;
        if (v[i].step != v[0].step)
            s = cg_set_error(CG_ERR_FORMAT, "optimizer load_shards: shard %d is from step %lld, shard 0 from %lld", i,
                             (long long)v[i].step, (long long)v[0].step);
        for (int j = 0; j < i && s == CG_OK; j++)
            if (v[i].lo < v[j].hi && v[j].lo < v[i].hi && v[i].lo < v[i].hi)
                s = cg_set_error(CG_ERR_FORMAT, "optimizer load_shards: shards %d and %d overlap", j, i);
        int64_t a = v[i].lo > o->shard_lo ? v[i].lo : o->shard_lo, b = v[i].hi < o->shard_hi ? v[i].hi : o->shard_hi;
        if (b > a) covered += b - a;
    }
    if (s == CG_OK && covered != o->shard_hi - o->shard_lo)
        s = cg_set_error(CG_ERR_FORMAT, "optimizer load_shards: the shards cover %lld of the %lld elements [%lld, %lld) "
                         "this rank needs", (long long)covered, (long long)(o->shard_hi - o->shard_lo),
                         (long long)o->shard_lo, (long long)o->shard_hi);
    for (int i = 0; i < n && s == CG_OK; i++) { /* everything checked: copy the overlaps */
        int64_t a = v[i].lo > o->shard_lo ? v[i].lo : o->shard_lo, b = v[i].hi < o->shard_hi ? v[i].hi : o->shard_hi;
        if (b <= a) continue;
        size_t run = (size_t)(v[i].hi - v[i].lo) * sizeof(float);
        for (int k = 0; k < o->n_state; k++) {
            float *src = (float *)(void *)(v[i].values + (size_t)k * run) + (a - v[i].lo);
            cg_optim_copy_range(o, k, a, b, src, false);
        }
    }
    if (s == CG_OK) o->step = v[0].step;
    free(v);
    return s;
}
