/* Unicode NFC (canonical decomposition, canonical ordering, canonical composition; UAX #15), for
 * tokenizers whose normalizer is NFC (Qwen2). The tables come from tests/fixtures/gen_nfc_table.py. Text
 * that passes the quick check (no combining marks, nothing that composes or decomposes) is left alone
 * without allocating, which is nearly all text. */
#include <stdlib.h>
#include <string.h>

#include "models/tokenizer_internal.h"
#include "models/tokenizer_nfc_table.h"

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

/* Hangul syllables compose and decompose algorithmically (Unicode chapter 3.12). */
enum { S_BASE = 0xAC00, L_BASE = 0x1100, V_BASE = 0x1161, T_BASE = 0x11A7, L_COUNT = 19, V_COUNT = 21, T_COUNT = 28 };
enum { N_COUNT = V_COUNT * T_COUNT, S_COUNT = L_COUNT * N_COUNT };

static uint32_t ccc_of(uint32_t cp) {
    if (cp < 0x300) return 0;
    size_t lo = 0, hi = N_OF(cg_nfc_ccc);
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < cg_nfc_ccc[mid][0])
            hi = mid;
        else if (cp > cg_nfc_ccc[mid][1])
            lo = mid + 1;
        else
            return cg_nfc_ccc[mid][2];
    }
    return 0;
}

static bool needs_work(uint32_t cp) {
    if (cp < 0x300) return false;
    size_t lo = 0, hi = N_OF(cg_nfc_check);
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < cg_nfc_check[mid][0])
            hi = mid;
        else if (cp > cg_nfc_check[mid][1])
            lo = mid + 1;
        else
            return true;
    }
    return false;
}

static const uint32_t *decomp_of(uint32_t cp) {
    size_t lo = 0, hi = N_OF(cg_nfc_decomp);
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < cg_nfc_decomp[mid][0])
            hi = mid;
        else if (cp > cg_nfc_decomp[mid][0])
            lo = mid + 1;
        else
            return cg_nfc_decomp[mid];
    }
    return NULL;
}

/* The primary composite of (a, b), or 0. */
static uint32_t compose(uint32_t a, uint32_t b) {
    if (a >= L_BASE && a < L_BASE + L_COUNT && b >= V_BASE && b < V_BASE + V_COUNT)
        return S_BASE + ((a - L_BASE) * V_COUNT + (b - V_BASE)) * T_COUNT;
    if (a >= S_BASE && a < S_BASE + S_COUNT && (a - S_BASE) % T_COUNT == 0 && b > T_BASE && b < T_BASE + T_COUNT)
        return a + (b - T_BASE);
    size_t lo = 0, hi = N_OF(cg_nfc_comp);
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        const uint32_t *e = cg_nfc_comp[mid];
        if (a < e[0] || (a == e[0] && b < e[1]))
            hi = mid;
        else if (a > e[0] || b > e[1])
            lo = mid + 1;
        else
            return e[2];
    }
    return 0;
}

/* Appends the full canonical decomposition of cp to out (room is ensured by the caller: at most 4 code
 * points per input code point come out of Unicode's canonical decompositions; checked anyway). */
static size_t decompose(uint32_t cp, uint32_t *out, size_t k, size_t cap) {
    if (cp >= S_BASE && cp < S_BASE + S_COUNT) {
        uint32_t s = cp - S_BASE;
        if (k + 3 > cap) return k;
        out[k++] = L_BASE + s / N_COUNT;
        out[k++] = V_BASE + (s % N_COUNT) / T_COUNT;
        if (s % T_COUNT) out[k++] = T_BASE + s % T_COUNT;
        return k;
    }
    const uint32_t *d = cp >= 0xC0 ? decomp_of(cp) : NULL;
    if (!d) {
        if (k < cap) out[k++] = cp;
        return k;
    }
    k = decompose(d[1], out, k, cap);
    if (d[2]) k = decompose(d[2], out, k, cap);
    return k;
}

cg_status cg_tok_nfc(const unsigned char *s, size_t len, unsigned char **out, size_t *out_len) {
    *out = NULL;
    *out_len = 0;
    size_t i = 0, n_cp = 0;
    bool work = false;
    while (i < len) {
        uint32_t cp;
        int k = cg_utf8_decode(s + i, len - i, &cp);
        if (!k) return cg_set_error(CG_ERR_INVALID_ARG, "NFC: invalid UTF-8 at byte offset %zu", i);
        work |= needs_work(cp);
        i += (size_t)k;
        n_cp++;
    }
    if (!work) return CG_OK;

    size_t cap = 4 * n_cp + 4;
    uint32_t *cps = malloc(cap * sizeof *cps);
    if (!cps) return cg_set_error(CG_ERR_OOM, "NFC: out of memory for %zu code points", n_cp);
    size_t n = 0;
    for (i = 0; i < len;) {
        uint32_t cp;
        i += (size_t)cg_utf8_decode(s + i, len - i, &cp);
        n = decompose(cp, cps, n, cap);
    }
    /* canonical ordering: a stable sort of each run of non-starters by combining class */
    for (size_t a = 1; a < n; a++) {
        uint32_t c = ccc_of(cps[a]);
        if (!c) continue;
        size_t b = a;
        while (b > 0) {
            uint32_t pc = ccc_of(cps[b - 1]);
            if (pc <= c) break;
            uint32_t t = cps[b - 1];
            cps[b - 1] = cps[b];
            cps[b] = t;
            b--;
        }
    }
    /* canonical composition: each character joins the last starter unless something between blocks it */
    size_t m = 0;
    long starter = -1;
    uint32_t last_cc = 0;
    for (size_t a = 0; a < n; a++) {
        uint32_t c = cps[a], cc = ccc_of(c);
        if (starter >= 0) {
            bool adjacent = m == (size_t)starter + 1;
            if (adjacent || (last_cc != 0 && last_cc < cc)) {
                uint32_t comp = compose(cps[starter], c);
                if (comp) {
                    cps[starter] = comp;
                    continue;
                }
            }
        }
        if (cc == 0) starter = (long)m;
        last_cc = cc;
        cps[m++] = c;
    }
    unsigned char *buf = malloc(4 * m + 1);
    if (!buf) {
        free(cps);
        return cg_set_error(CG_ERR_OOM, "NFC: out of memory");
    }
    size_t k = 0;
    for (size_t a = 0; a < m; a++) k += (size_t)cg_utf8_encode(cps[a], buf + k);
    free(cps);
    *out = buf;
    *out_len = k;
    return CG_OK;
}
