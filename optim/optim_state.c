/* Optimizer state for checkpoints: a flat little-endian buffer (layout in optim/optim.h). */
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
    /* Everything checked: now copy. */
    for (int k = 0; k < o->n_state; k++) {
        for (int i = 0; i < o->n_params; i++) {
            size_t nb = (size_t)o->params[i].numel * sizeof(float);
            if (nb) {
                cg_status st = cg_device_memcpy(o->device, o->params[i].state[k], CG_CPU, p, nb);
                if (st != CG_OK) return st;
            }
            p += nb;
        }
    }
    o->step = step;
    return CG_OK;
}
