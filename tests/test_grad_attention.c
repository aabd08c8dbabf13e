/* RoPE and causal attention: forward values against naive references computed in double here (full score
 * matrices, explicit rotations), the backward against a naive double backward and against finite differences
 * (gradcheck), padding masks with fully-masked queries, GQA, the KV-cache case S > T, non-contiguous inputs,
 * identical results with 1 and 2 threads, argument errors, and the memory figure of the tiled kernels. */
#include "test_util.h"

#include "core/nn_attention.h"

/* ------------------------------------------------------------------ helpers */

static cg_tensor *rand_tensor(int ndim, const int64_t *shape, uint64_t seed, float amp) {
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    float *v = malloc((size_t)(n ? n : 1) * sizeof(float));
    assert_non_null(v);
    uint64_t s = seed * 0x9e3779b97f4a7c15ull + 1;
    for (int64_t i = 0; i < n; i++) v[i] = amp * cg_test_randf(&s);
    cg_tensor *t = cg_tensor_from_data(cg_step_arena(CG_CPU), CG_F32, ndim, shape, v);
    free(v);
    assert_non_null(t);
    return t;
}

/* All elements of t in row-major order of its logical shape, as doubles (works for any strides). */
static double *to_doubles(const cg_tensor *t) {
    int64_t n = cg_numel(t);
    double *d = malloc((size_t)(n ? n : 1) * sizeof(double));
    assert_non_null(d);
    for (int64_t i = 0; i < n; i++) d[i] = cg_get_flat(t, i);
    return d;
}

typedef struct attn_case {
    int64_t B, Hq, Hkv, T, S, D;
} attn_case;

/* Naive attention in double with the full score row: out [B, Hq, T, D]; mask [B * S] ints or NULL. Also
 * returns the probabilities' gradients when dout is not NULL (dq, dk, dv, each may be NULL). */
static void naive_attention(const attn_case *c, const double *q, const double *k, const double *v,
                            const int *mask, double scale, double *out, const double *dout, double *dq, double *dk,
                            double *dv) {
    int64_t B = c->B, Hq = c->Hq, Hkv = c->Hkv, T = c->T, S = c->S, D = c->D, group = Hq / Hkv;
    double *p = malloc((size_t)S * sizeof(double)), *dp = malloc((size_t)S * sizeof(double));
    assert_non_null(p);
    assert_non_null(dp);
    if (dq) memset(dq, 0, (size_t)(B * Hq * T * D) * sizeof(double));
    if (dk) memset(dk, 0, (size_t)(B * Hkv * S * D) * sizeof(double));
    if (dv) memset(dv, 0, (size_t)(B * Hkv * S * D) * sizeof(double));
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < Hq; h++)
            for (int64_t t = 0; t < T; t++) {
                int64_t hk = h / group;
                const double *qr = q + ((b * Hq + h) * T + t) * D;
                const double *kh = k + (b * Hkv + hk) * S * D, *vh = v + (b * Hkv + hk) * S * D;
                double mx = -INFINITY;
                for (int64_t j = 0; j < S; j++) {
                    int visible = j <= S - T + t && (!mask || mask[b * S + j]);
                    double s = 0;
                    for (int64_t i = 0; i < D; i++) s += qr[i] * kh[j * D + i];
                    p[j] = visible ? s * scale : -INFINITY;
                    if (p[j] > mx) mx = p[j];
                }
                double *orow = out + ((b * Hq + h) * T + t) * D;
                for (int64_t i = 0; i < D; i++) orow[i] = 0;
                if (mx == -INFINITY) continue; /* no visible key: zeros, zero gradient */
                double z = 0;
                for (int64_t j = 0; j < S; j++) z += (p[j] = exp(p[j] - mx));
                for (int64_t j = 0; j < S; j++) {
                    p[j] /= z;
                    for (int64_t i = 0; i < D; i++) orow[i] += p[j] * vh[j * D + i];
                }
                if (!dout) continue;
                const double *dor = dout + ((b * Hq + h) * T + t) * D;
                double pdp = 0;
                for (int64_t j = 0; j < S; j++) {
                    dp[j] = 0;
                    for (int64_t i = 0; i < D; i++) dp[j] += dor[i] * vh[j * D + i];
                    pdp += p[j] * dp[j];
                }
                for (int64_t j = 0; j < S; j++) {
                    double ds = p[j] * (dp[j] - pdp) * scale;
                    for (int64_t i = 0; i < D; i++) {
                        if (dq) dq[((b * Hq + h) * T + t) * D + i] += ds * kh[j * D + i];
                        if (dk) dk[((b * Hkv + hk) * S + j) * D + i] += ds * qr[i];
                        if (dv) dv[((b * Hkv + hk) * S + j) * D + i] += p[j] * dor[i];
                    }
                }
            }
    free(p);
    free(dp);
}

static cg_tensor *int_mask(const int *m, int64_t B, int64_t S, cg_dtype dtype) {
    int64_t shape[2] = {B, S};
    cg_tensor *t = cg_tensor_zeros(cg_step_arena(CG_CPU), dtype, 2, shape);
    assert_non_null(t);
    for (int64_t i = 0; i < B * S; i++) cg_set_flat(t, i, m[i] ? (dtype == CG_F32 ? 0.5 : 7.0) : 0.0);
    return t;
}

static void assert_all_close(const cg_tensor *t, const double *want, double rtol, double atol) {
    int64_t n = cg_numel(t);
    for (int64_t i = 0; i < n; i++) assert_close(cg_get_flat(t, i), want[i], rtol, atol);
}

/* ------------------------------------------------------------------ attention forward */

/* Left padding: batch b has pad[b] masked keys at the front. */
static int *left_pad_mask(int64_t B, int64_t S, const int64_t *pad) {
    int *m = malloc((size_t)(B * S) * sizeof(int));
    assert_non_null(m);
    for (int64_t b = 0; b < B; b++)
        for (int64_t j = 0; j < S; j++) m[b * S + j] = j >= pad[b];
    return m;
}

static void check_forward_case(const attn_case *c, bool with_mask, uint64_t seed) {
    int64_t qs[4] = {c->B, c->Hq, c->T, c->D}, ks[4] = {c->B, c->Hkv, c->S, c->D};
    cg_tensor *q = rand_tensor(4, qs, seed, 1.0f), *k = rand_tensor(4, ks, seed + 1, 1.0f);
    cg_tensor *v = rand_tensor(4, ks, seed + 2, 1.0f);
    int64_t pad[2] = {0, c->S / 3 + 1};
    int *mask = with_mask ? left_pad_mask(c->B, c->S, pad) : NULL;
    cg_tensor *mt = mask ? int_mask(mask, c->B, c->S, CG_U8) : NULL;
    cg_tensor *out = cg_attention(q, k, v, mt, 0.0f);
    if (!out) print_error("%s\n", cg_last_error());
    assert_non_null(out);
    assert_int_equal(out->ndim, 4);
    for (int i = 0; i < 4; i++) assert_int_equal(out->shape[i], qs[i]);
    double *qd = to_doubles(q), *kd = to_doubles(k), *vd = to_doubles(v);
    double *want = malloc((size_t)cg_numel(out) * sizeof(double));
    assert_non_null(want);
    naive_attention(c, qd, kd, vd, mask, 1.0 / sqrt((double)c->D), want, NULL, NULL, NULL, NULL);
    assert_all_close(out, want, 1e-4, 2e-5);
    free(qd), free(kd), free(vd), free(want), free(mask);
}

static void test_attention_forward_matches_naive(void **state) {
    (void)state;
    const attn_case cases[] = {
        {2, 4, 2, 13, 13, 64},   /* GQA, one tile */
        {1, 2, 2, 65, 65, 128},  /* Hq = Hkv, two key tiles and two query blocks */
        {2, 4, 2, 7, 150, 64},   /* KV cache: S > T over three key tiles */
        {2, 2, 1, 1, 70, 64},    /* decode: T = 1 */
        {1, 3, 3, 130, 130, 16}, /* several query blocks and key tiles, a partial last tile */
        {1, 1, 1, 1, 1, 8},      /* one query, one key: out = v */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        check_forward_case(&cases[i], false, 10 + i);
        if (cases[i].B == 2) check_forward_case(&cases[i], true, 20 + i);
    }
}

/* An explicit scale and the T = S = 1 closed form: the output is the single value row. */
static void test_attention_explicit_scale_and_closed_form(void **state) {
    (void)state;
    attn_case c = {1, 2, 1, 9, 11, 8};
    int64_t qs[4] = {1, 2, 9, 8}, ks[4] = {1, 1, 11, 8};
    cg_tensor *q = rand_tensor(4, qs, 3, 2.0f), *k = rand_tensor(4, ks, 4, 2.0f), *v = rand_tensor(4, ks, 5, 1.0f);
    cg_tensor *out = cg_attention(q, k, v, NULL, 0.7f);
    assert_non_null(out);
    double *qd = to_doubles(q), *kd = to_doubles(k), *vd = to_doubles(v), want[2 * 9 * 8];
    naive_attention(&c, qd, kd, vd, NULL, 0.7, want, NULL, NULL, NULL, NULL);
    assert_all_close(out, want, 1e-4, 2e-5);
    free(qd), free(kd), free(vd);

    int64_t s1[4] = {1, 1, 1, 4};
    float qv[4] = {1, 2, 3, 4}, kv[4] = {-1, 0, 5, 2}, vv[4] = {0.25f, -3, 8, 1e-3f};
    cg_tensor *q1 = cg_tensor_from_data(cg_step_arena(CG_CPU), CG_F32, 4, s1, qv);
    cg_tensor *k1 = cg_tensor_from_data(cg_step_arena(CG_CPU), CG_F32, 4, s1, kv);
    cg_tensor *v1 = cg_tensor_from_data(cg_step_arena(CG_CPU), CG_F32, 4, s1, vv);
    cg_tensor *o1 = cg_attention(q1, k1, v1, NULL, -1.0f);
    assert_non_null(o1);
    for (int i = 0; i < 4; i++) assert_true(cg_get_flat(o1, i) == vv[i]);

    /* no queries (T = 0) against three keys: an empty output, not an error */
    int64_t q0s[4] = {1, 2, 0, 8};
    cg_tensor *q0 = cg_tensor_zeros(cg_step_arena(CG_CPU), CG_F32, 4, q0s);
    cg_tensor *o0 = cg_attention(q0, rand_tensor(4, (int64_t[]){1, 1, 3, 8}, 6, 1.0f),
                                 rand_tensor(4, (int64_t[]){1, 1, 3, 8}, 7, 1.0f), NULL, 0.0f);
    assert_non_null(o0);
    assert_int_equal(cg_numel(o0), 0);
    assert_int_equal(o0->shape[2], 0);
}

/* Left-padded batch with S = T: the first pad queries of the padded row see only padding, so they output
 * exactly 0 and get zero gradients; padding keys get zero dk and dv. Every mask dtype gives the same result. */
static void test_attention_padding_mask(void **state) {
    (void)state;
    attn_case c = {2, 4, 2, 9, 9, 16};
    int64_t qs[4] = {2, 4, 9, 16}, ks[4] = {2, 2, 9, 16}, pad[2] = {0, 3};
    cg_tensor *q = rand_tensor(4, qs, 31, 1.0f), *k = rand_tensor(4, ks, 32, 1.0f), *v = rand_tensor(4, ks, 33, 1.0f);
    cg_tensor *dout = rand_tensor(4, qs, 34, 1.0f);
    assert_ok(cg_set_requires_grad(q, true));
    assert_ok(cg_set_requires_grad(k, true));
    assert_ok(cg_set_requires_grad(v, true));
    int *mask = left_pad_mask(2, 9, pad);
    double *qd = to_doubles(q), *kd = to_doubles(k), *vd = to_doubles(v), *dod = to_doubles(dout);
    double want[2 * 4 * 9 * 16], dq[2 * 4 * 9 * 16], dk[2 * 2 * 9 * 16], dv[2 * 2 * 9 * 16];
    naive_attention(&c, qd, kd, vd, mask, 0.25, want, dod, dq, dk, dv);
    const cg_dtype dtypes[4] = {CG_U8, CG_I32, CG_I64, CG_F32};
    for (int di = 0; di < 4; di++) {
        cg_zero_grads(3, (cg_tensor *[]){q, k, v});
        cg_tensor *out = cg_attention(q, k, v, int_mask(mask, 2, 9, dtypes[di]), 0.0f);
        assert_non_null(out);
        assert_all_close(out, want, 1e-4, 2e-5);
        for (int64_t h = 0; h < 4; h++)
            for (int64_t t = 0; t < 3; t++)
                for (int64_t i = 0; i < 16; i++) {
                    int64_t idx[4] = {1, h, t, i};
                    assert_true(cg_get(out, idx) == 0.0); /* exactly zero, not NaN */
                    assert_true(want[((1 * 4 + h) * 9 + t) * 16 + i] == 0.0);
                }
        assert_ok(cg_backward_with_grad(out, dout));
        assert_all_close(q->grad, dq, 1e-4, 2e-5);
        assert_all_close(k->grad, dk, 1e-4, 2e-5);
        assert_all_close(v->grad, dv, 1e-4, 2e-5);
        for (int64_t h = 0; h < 4; h++)
            for (int64_t t = 0; t < 3; t++)
                for (int64_t i = 0; i < 16; i++) {
                    int64_t iq[4] = {1, h, t, i}, ik[4] = {1, h / 2, t, i};
                    assert_true(cg_get(q->grad, iq) == 0.0);
                    assert_true(cg_get(k->grad, ik) == 0.0 && cg_get(v->grad, ik) == 0.0);
                }
    }
    free(mask), free(qd), free(kd), free(vd), free(dod);
}

/* ------------------------------------------------------------------ attention backward */

/* dq, dk, dv against the naive double backward on shapes spanning several query blocks and key tiles. */
static void check_backward_case(const attn_case *c, bool with_mask, uint64_t seed) {
    int64_t qs[4] = {c->B, c->Hq, c->T, c->D}, ks[4] = {c->B, c->Hkv, c->S, c->D};
    cg_tensor *q = rand_tensor(4, qs, seed, 1.0f), *k = rand_tensor(4, ks, seed + 1, 1.0f);
    cg_tensor *v = rand_tensor(4, ks, seed + 2, 1.0f), *dout = rand_tensor(4, qs, seed + 3, 1.0f);
    assert_ok(cg_set_requires_grad(q, true));
    assert_ok(cg_set_requires_grad(k, true));
    assert_ok(cg_set_requires_grad(v, true));
    int64_t pad[2] = {c->S / 2, 5};
    int *mask = with_mask ? left_pad_mask(c->B, c->S, pad) : NULL;
    cg_tensor *out = cg_attention(q, k, v, mask ? int_mask(mask, c->B, c->S, CG_I64) : NULL, 0.0f);
    assert_non_null(out);
    assert_ok(cg_backward_with_grad(out, dout));
    double *qd = to_doubles(q), *kd = to_doubles(k), *vd = to_doubles(v), *dod = to_doubles(dout);
    size_t nq = (size_t)cg_numel(q), nk = (size_t)cg_numel(k);
    double *want = malloc(nq * sizeof(double)), *dq = malloc(nq * sizeof(double));
    double *dk = malloc(nk * sizeof(double)), *dv = malloc(nk * sizeof(double));
    assert_true(want && dq && dk && dv);
    naive_attention(c, qd, kd, vd, mask, 1.0 / sqrt((double)c->D), want, dod, dq, dk, dv);
    assert_all_close(out, want, 1e-4, 2e-5);
    assert_all_close(q->grad, dq, 1e-3, 5e-5);
    assert_all_close(k->grad, dk, 1e-3, 5e-5);
    assert_all_close(v->grad, dv, 1e-3, 5e-5);
    free(qd), free(kd), free(vd), free(dod), free(want), free(dq), free(dk), free(dv), free(mask);
}

static void test_attention_backward_matches_naive(void **state) {
    (void)state;
    const attn_case big = {2, 4, 2, 130, 150, 16}; /* 3 query blocks, 3 key tiles, KV cache, GQA */
    check_backward_case(&big, false, 41);
    check_backward_case(&big, true, 45);
    const attn_case decode = {1, 2, 1, 1, 70, 64};
    check_backward_case(&decode, false, 49);
}

typedef struct attn_fn_ctx {
    const cg_tensor *mask;
    float scale;
} attn_fn_ctx;

static cg_tensor *attention_fn(cg_tensor *const *in, void *user) {
    attn_fn_ctx *ctx = user;
    return cg_attention(in[0], in[1], in[2], ctx->mask, ctx->scale);
}

/* q as models produce it: a [B, T, H, D] buffer viewed as [B, H, T, D] (non-contiguous). */
static cg_tensor *transposed_q(int64_t B, int64_t H, int64_t T, int64_t D, uint64_t seed) {
    int64_t s[4] = {B, T, H, D};
    cg_tensor *base = rand_tensor(4, s, seed, 1.0f);
    cg_tensor *q = cg_view_transpose(base, 1, 2);
    assert_non_null(q);
    assert_false(cg_is_contiguous(q));
    return q;
}

static void test_attention_gradcheck(void **state) {
    (void)state;
    const int64_t Ts[3] = {5, 9, 13}, extra_keys[3] = {0, 3, 0};
    for (int ci = 0; ci < 3; ci++) {
        int64_t B = 2, Hq = 4, Hkv = 2, T = Ts[ci], S = T + extra_keys[ci], D = 8;
        int64_t ks[4] = {B, Hkv, S, D};
        cg_tensor *q = transposed_q(B, Hq, T, D, 50 + ci);
        cg_tensor *k = rand_tensor(4, ks, 60 + ci, 1.0f), *v = rand_tensor(4, ks, 70 + ci, 1.0f);
        assert_ok(cg_set_requires_grad(q, true));
        assert_ok(cg_set_requires_grad(k, true));
        assert_ok(cg_set_requires_grad(v, true));
        int64_t pad[2] = {0, 2}; /* with S = T, queries 0 and 1 of batch 1 see no key */
        int *m = left_pad_mask(B, S, pad);
        attn_fn_ctx ctx = {ci == 1 ? NULL : int_mask(m, B, S, CG_I32), ci == 2 ? 0.5f : 0.0f};
        free(m);
        cg_tensor *in[3] = {q, k, v};
        cg_gradcheck_opts opts = {.eps = 1e-3, .rtol = 5e-3, .atol = 5e-4};
        cg_gradcheck_result r;
        assert_ok(cg_gradcheck(attention_fn, &ctx, 3, in, &opts, &r));
        if (!r.passed)
            print_error("T=%lld: input %d index %lld analytic %g numeric %g\n", (long long)T, r.worst_input,
                        (long long)r.worst_index, r.worst_analytic, r.worst_numeric);
        assert_true(r.passed);
        assert_int_equal(r.checked, cg_numel(q) + 2 * cg_numel(k));
    }
}

/* The same bits with 1 and 2 threads, forward and backward. */
static void test_attention_thread_count_invariance(void **state) {
    (void)state;
    int64_t qs[4] = {1, 4, 150, 32}, ks[4] = {1, 2, 170, 32};
    cg_tensor *q = rand_tensor(4, qs, 81, 1.0f), *k = rand_tensor(4, ks, 82, 1.0f), *v = rand_tensor(4, ks, 83, 1.0f);
    cg_tensor *dout = rand_tensor(4, qs, 84, 1.0f);
    cg_tensor *in[3] = {q, k, v};
    for (int i = 0; i < 3; i++) assert_ok(cg_set_requires_grad(in[i], true));
    int saved_threads = cg_get_num_threads();
    float *results[2][4];
    for (int run = 0; run < 2; run++) {
        cg_set_num_threads(run + 1);
        cg_zero_grads(3, in);
        cg_tensor *out = cg_attention(q, k, v, NULL, 0.0f);
        assert_non_null(out);
        assert_ok(cg_backward_with_grad(out, dout));
        const cg_tensor *ts[4] = {out, q->grad, k->grad, v->grad};
        for (int j = 0; j < 4; j++) {
            size_t nb = cg_nbytes(ts[j]);
            results[run][j] = malloc(nb);
            assert_non_null(results[run][j]);
            memcpy(results[run][j], cg_data(ts[j]), nb);
        }
    }
    cg_set_num_threads(saved_threads);
    const size_t nbytes[4] = {cg_nbytes(q), cg_nbytes(q), cg_nbytes(k), cg_nbytes(k)};
    for (int j = 0; j < 4; j++) {
        assert_memory_equal(results[0][j], results[1][j], nbytes[j]);
        free(results[0][j]);
        free(results[1][j]);
    }
}

/* The memory figure: at T = 2048 (1100 under ASan) the forward and backward together need far less extra memory than
 * one T x T f32 matrix per head; a few output rows are checked against the naive reference too. */
static void test_attention_memory_long_sequence(void **state) {
    (void)state;
    cg_step_end();
    cg_shutdown(); /* fresh arenas, so step_peak measures this test only */
#ifdef __SANITIZE_ADDRESS__
    /* still above 1024; the instrumented kernels run ~15x slower (make test-full runs 2048 here too) */
    const int64_t T = cg_test_full() ? 2048 : 1100;
#else
    const int64_t T = 2048;
#endif
    const int64_t B = 1, H = 2, D = 64;
    int64_t s[4] = {B, H, T, D};
    cg_tensor *q = rand_tensor(4, s, 91, 1.0f), *k = rand_tensor(4, s, 92, 1.0f), *v = rand_tensor(4, s, 93, 1.0f);
    cg_tensor *dout = rand_tensor(4, s, 94, 1.0f);
    cg_tensor *in[3] = {q, k, v};
    for (int i = 0; i < 3; i++) assert_ok(cg_set_requires_grad(in[i], true));
    cg_memory_stats before = cg_memory_get_stats(CG_CPU);
    cg_tensor *out = cg_attention(q, k, v, NULL, 0.0f);
    assert_non_null(out);
    assert_ok(cg_backward_with_grad(out, dout));
    cg_memory_stats after = cg_memory_get_stats(CG_CPU);
    size_t extra = after.step_peak - before.step_used;
    size_t tt_per_head = (size_t)(T * T) * sizeof(float);
    size_t tensor_bytes = (size_t)(B * H * T * D) * sizeof(float); /* one [B, H, T, D] f32 tensor */
    cg_attention_dims dims = {B, H, H, T, T, D, 0.125f};
    size_t fwd_ws = cg_cpu_attention_forward_workspace(&dims, cg_get_num_threads()) * sizeof(float);
    size_t bwd_ws = cg_cpu_attention_backward_workspace(&dims, cg_get_num_threads()) * sizeof(float);
    /* what is not an output of the op: the kernels' scratch, alignment, copies */
    size_t outputs = 4 * tensor_bytes + (size_t)(B * H * T) * sizeof(float); /* out, dq, dk, dv; lse */
    assert_true(extra >= outputs);
    size_t overhead = extra - outputs;
    print_message("attention B=%lld H=%lld T=%lld D=%lld forward+backward: step-arena growth %.3f MiB "
                  "(%.3f MiB per head), of which %zu bytes are not out/lse/dq/dk/dv; kernel scratch %zu (forward) + "
                  "%zu (backward) bytes; one T x T f32 matrix per head would be %.2f MiB\n",
                  (long long)B, (long long)H, (long long)T, (long long)D, extra / 1048576.0,
                  extra / 1048576.0 / (double)H, overhead, fwd_ws, bwd_ws, tt_per_head / 1048576.0);
    assert_true(overhead <= (256u << 10));          /* tile-sized, independent of T x T */
    assert_true(overhead * 64 < tt_per_head);
    assert_true(extra / (size_t)H < tt_per_head / 2); /* even counting the O(T D) outputs */
    assert_true(fwd_ws <= (size_t)cg_get_num_threads() * 20000);
    assert_true(bwd_ws == (size_t)(B * H * T) * sizeof(float));

    /* a few rows against the naive reference (one query row costs O(S D)) */
    attn_case one = {1, 1, 1, 1, 0, D};
    double *kd = malloc((size_t)(T * D) * sizeof(double)), *vd = malloc((size_t)(T * D) * sizeof(double));
    double qr[64], want[64];
    assert_true(kd && vd);
    const int64_t rows[3] = {0, T / 2 + 1, T - 1};
    for (int ri = 0; ri < 3; ri++) {
        int64_t t = rows[ri];
        one.S = t + 1; /* query t sees keys 0 .. t: a single query at the end of t + 1 keys */
        for (int64_t j = 0; j <= t; j++)
            for (int64_t i = 0; i < D; i++) {
                int64_t idx[4] = {0, 1, j, i};
                kd[j * D + i] = cg_get(k, idx);
                vd[j * D + i] = cg_get(v, idx);
            }
        for (int64_t i = 0; i < D; i++) qr[i] = cg_get(q, (int64_t[]){0, 1, t, i});
        naive_attention(&one, qr, kd, vd, NULL, 0.125, want, NULL, NULL, NULL, NULL);
        for (int64_t i = 0; i < D; i++) assert_close(cg_get(out, (int64_t[]){0, 1, t, i}), want[i], 1e-4, 2e-5);
    }
    free(kd), free(vd);
}

/* ------------------------------------------------------------------ RoPE */

/* out[i] = x[i] cos - x[i + D/2] sin, out[i + D/2] = x[i + D/2] cos + x[i] sin, all in double. */
static void naive_rope(const double *x, double *out, int64_t B, int64_t H, int64_t T, int64_t D, double theta,
                       const int64_t *pos /* [B * T] */) {
    int64_t half = D / 2;
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t t = 0; t < T; t++)
                for (int64_t i = 0; i < half; i++) {
                    double a = (double)pos[b * T + t] * pow(theta, -2.0 * (double)i / (double)D);
                    int64_t r = ((b * H + h) * T + t) * D;
                    out[r + i] = x[r + i] * cos(a) - x[r + i + half] * sin(a);
                    out[r + i + half] = x[r + i + half] * cos(a) + x[r + i] * sin(a);
                }
}

static void check_rope(int64_t B, int64_t H, int64_t T, int64_t D, float theta, int64_t offset, bool left_padded,
                       cg_dtype pos_dtype) {
    int64_t s[4] = {B, H, T, D}, ps[2] = {B, T};
    cg_tensor *x = rand_tensor(4, s, (uint64_t)(D + T), 1.0f);
    int64_t *pos = malloc((size_t)(B * T) * sizeof(int64_t));
    assert_non_null(pos);
    cg_tensor *pt = NULL;
    if (left_padded) { /* batch b has b + 1 pad tokens at the front; real tokens count from 0 */
        pt = cg_tensor_zeros(cg_step_arena(CG_CPU), pos_dtype, 2, ps);
        assert_non_null(pt);
        for (int64_t b = 0; b < B; b++)
            for (int64_t t = 0; t < T; t++) {
                pos[b * T + t] = t > b ? t - b - 1 : 0;
                cg_set_flat(pt, b * T + t, (double)pos[b * T + t]);
            }
    } else {
        for (int64_t i = 0; i < B * T; i++) pos[i] = offset + i % T;
    }
    cg_tensor *y = cg_rope(x, theta, offset, pt);
    if (!y) print_error("%s\n", cg_last_error());
    assert_non_null(y);
    double *xd = to_doubles(x), *want = malloc((size_t)cg_numel(x) * sizeof(double));
    assert_non_null(want);
    naive_rope(xd, want, B, H, T, D, theta, pos);
    assert_all_close(y, want, 1e-5, 1e-6);
    /* each pair (i, i + D/2) keeps its norm: the rotation is orthogonal */
    for (int64_t r = 0; r < B * H * T; r++)
        for (int64_t i = 0; i < D / 2; i++) {
            double a = cg_get_flat(y, r * D + i), c = cg_get_flat(y, r * D + i + D / 2);
            double xa = xd[r * D + i], xc = xd[r * D + i + D / 2];
            assert_close(a * a + c * c, xa * xa + xc * xc, 1e-5, 1e-7);
        }
    free(pos), free(xd), free(want);
}

static void test_rope_matches_naive(void **state) {
    (void)state;
    check_rope(2, 3, 7, 8, 10000.0f, 0, false, CG_I64);
    check_rope(1, 2, 5, 160, 1e6f, 3, false, CG_I64);      /* D/2 = 80: two frequency chunks */
    check_rope(2, 2, 3, 64, 10000.0f, 32768, false, CG_I64); /* large positions: angles in double */
    check_rope(3, 2, 6, 16, 10000.0f, 0, true, CG_I64);   /* explicit positions, left-padded */
    check_rope(3, 2, 6, 16, 500000.0f, 0, true, CG_I32);
}

/* positions equal to pos_offset + t give the same bits as pos_offset; position 0 is the identity. */
static void test_rope_positions_and_identity(void **state) {
    (void)state;
    int64_t s[4] = {2, 2, 4, 8}, ps[2] = {2, 4};
    cg_tensor *x = rand_tensor(4, s, 101, 1.0f);
    int32_t pv[8] = {5, 6, 7, 8, 5, 6, 7, 8};
    cg_tensor *pt = cg_tensor_from_data(cg_step_arena(CG_CPU), CG_I32, 2, ps, pv);
    cg_tensor *y1 = cg_rope(x, 10000.0f, 5, NULL), *y2 = cg_rope(x, 10000.0f, 123, pt);
    assert_non_null(y1);
    assert_non_null(y2);
    assert_memory_equal(cg_data(y1), cg_data(y2), cg_nbytes(y1));
    int32_t zeros[8] = {0};
    cg_tensor *y0 = cg_rope(x, 10000.0f, 77, cg_tensor_from_data(cg_step_arena(CG_CPU), CG_I32, 2, ps, zeros));
    assert_non_null(y0);
    assert_memory_equal(cg_data(y0), cg_data(x), cg_nbytes(x));
}

typedef struct rope_fn_ctx {
    float theta;
    int64_t offset;
    const cg_tensor *positions;
} rope_fn_ctx;

static cg_tensor *rope_fn(cg_tensor *const *in, void *user) {
    rope_fn_ctx *c = user;
    return cg_rope(in[0], c->theta, c->offset, c->positions);
}

static void test_rope_gradcheck_and_inverse(void **state) {
    (void)state;
    /* a non-contiguous x: [B, T, H, D] viewed as [B, H, T, D] */
    int64_t s[4] = {2, 5, 3, 8}, ps[2] = {2, 5};
    cg_tensor *x = cg_view_transpose(rand_tensor(4, s, 111, 1.0f), 1, 2);
    assert_non_null(x);
    assert_ok(cg_set_requires_grad(x, true));
    int64_t pv[10] = {0, 0, 0, 1, 2, 0, 1, 2, 3, 4};
    cg_tensor *pt = cg_tensor_from_data(cg_step_arena(CG_CPU), CG_I64, 2, ps, pv);
    cg_gradcheck_opts opts = {.eps = 1e-3, .rtol = 1e-3, .atol = 1e-4};
    for (int with_pos = 0; with_pos < 2; with_pos++) {
        rope_fn_ctx ctx = {10000.0f, 11, with_pos ? pt : NULL};
        cg_gradcheck_result r;
        assert_ok(cg_gradcheck(rope_fn, &ctx, 1, &x, &opts, &r));
        assert_true(r.passed);
        assert_int_equal(r.checked, cg_numel(x));
    }
    /* backward is the inverse rotation: pulling y = R x back through R^T gives x */
    cg_zero_grad(x);
    cg_tensor *y = cg_rope(x, 10000.0f, 7, NULL);
    assert_non_null(y);
    assert_ok(cg_backward_with_grad(y, y));
    for (int64_t i = 0; i < cg_numel(x); i++) assert_close(cg_get_flat(x->grad, i), cg_get_flat(x, i), 1e-5, 1e-6);
}

/* Llama 3 frequency scaling: each inv_freq against the formula of Hugging Face's _compute_llama3_parameters,
 * written out here in double; then the rotation itself, and its gradient. */
static cg_tensor *rope_scaled_fn(cg_tensor *const *in, void *user) {
    return cg_rope_scaled(in[0], (const cg_rope_config *)user, 3, NULL);
}

static void test_rope_llama3_scaling(void **state) {
    (void)state;
    cg_rope_config c = {.theta = 500000.0f, .scaling_factor = 32.0f, .low_freq_factor = 1.0f,
                        .high_freq_factor = 4.0f, .original_max_pos = 8192};
    const int64_t D = 64;
    int kept = 0, divided = 0, blended = 0;
    for (int64_t i = 0; i < D / 2; i++) {
        double f = pow(500000.0, -2.0 * (double)i / (double)D), wavelen = 2.0 * M_PI / f, want;
        if (wavelen < 8192.0 / 4.0) want = f, kept++;
        else if (wavelen > 8192.0 / 1.0) want = f / 32.0, divided++;
        else {
            double smooth = (8192.0 / wavelen - 1.0) / (4.0 - 1.0);
            want = (1.0 - smooth) * f / 32.0 + smooth * f;
            blended++;
        }
        assert_close(cg_rope_inv_freq(&c, i, D), want, 1e-12, 0);
    }
    assert_true(kept > 0 && divided > 0 && blended > 0); /* all three regimes exercised at D = 64 */
    /* the rotation uses the scaled frequencies: position p rotates pair i by p * inv_freq[i] */
    int64_t s[4] = {1, 1, 4, D};
    cg_tensor *x = rand_tensor(4, s, 77, 1.0f);
    cg_tensor *y = cg_rope_scaled(x, &c, 1000, NULL);
    assert_non_null(y);
    for (int64_t t = 0; t < 4; t++)
        for (int64_t i = 0; i < D / 2; i++) {
            double a = (double)(1000 + t) * cg_rope_inv_freq(&c, i, D);
            double x1 = cg_get_flat(x, t * D + i), x2 = cg_get_flat(x, t * D + i + D / 2);
            assert_close(cg_get_flat(y, t * D + i), x1 * cos(a) - x2 * sin(a), 1e-5, 1e-6);
            assert_close(cg_get_flat(y, t * D + i + D / 2), x2 * cos(a) + x1 * sin(a), 1e-5, 1e-6);
        }
    assert_ok(cg_set_requires_grad(x, true));
    cg_gradcheck_opts opts = {.eps = 1e-3, .rtol = 1e-3, .atol = 1e-4};
    cg_gradcheck_result r;
    assert_ok(cg_gradcheck(rope_scaled_fn, &c, 1, &x, &opts, &r));
    assert_true(r.passed);
    c.high_freq_factor = 0.5f; /* below low_freq_factor */
    assert_null(cg_rope_scaled(x, &c, 0, NULL));
    assert_error_contains("rope: scaling needs 0 < low_freq_factor");
}

/* ------------------------------------------------------------------ errors */

static void test_rope_errors(void **state) {
    (void)state;
    int64_t s4[4] = {1, 2, 3, 8}, odd[4] = {1, 2, 3, 7}, s3[3] = {2, 3, 8};
    cg_tensor *x = rand_tensor(4, s4, 1, 1.0f);
    assert_null(cg_rope(NULL, 10000.0f, 0, NULL));
    assert_error_contains("rope: x is NULL");
    assert_null(cg_rope(rand_tensor(4, odd, 1, 1.0f), 10000.0f, 0, NULL));
    assert_int_equal(cg_last_status(), CG_ERR_SHAPE);
    assert_error_contains("head dim (7) must be even");
    assert_null(cg_rope(rand_tensor(3, s3, 1, 1.0f), 10000.0f, 0, NULL));
    assert_error_contains("must have 4 dims");
    assert_null(cg_rope(cg_tensor_zeros(cg_step_arena(CG_CPU), CG_I32, 4, s4), 10000.0f, 0, NULL));
    assert_int_equal(cg_last_status(), CG_ERR_DTYPE);
    assert_error_contains("must be f32");
    assert_null(cg_rope(x, 0.0f, 0, NULL));
    assert_error_contains("theta must be positive");
    int64_t bad_ps[2] = {1, 4}, ps[2] = {1, 3};
    assert_null(cg_rope(x, 10000.0f, 0, cg_tensor_zeros(cg_step_arena(CG_CPU), CG_I64, 2, bad_ps)));
    assert_error_contains("positions i64[1, 4] cpu must be [B, T] = [1, 3]");
    assert_null(cg_rope(x, 10000.0f, 0, cg_tensor_zeros(cg_step_arena(CG_CPU), CG_F32, 2, ps)));
    assert_error_contains("must be i32 or i64");
    /* a CUDA tensor (never dereferenced: the op refuses it first) must be f32 or bf16 */
    float dummy[48];
    cg_tensor *gpu = cg_tensor_wrap(cg_step_arena(CG_CPU), CG_I32, (cg_device){CG_DEVICE_CUDA, 0}, 4, s4, dummy);
    assert_non_null(gpu);
    assert_null(cg_rope(gpu, 10000.0f, 0, NULL));
    assert_int_equal(cg_last_status(), CG_ERR_DTYPE);
    assert_error_contains("must be f32 or bf16 on a GPU");
}

static void test_attention_errors(void **state) {
    (void)state;
    int64_t qs[4] = {2, 4, 5, 8}, ks[4] = {2, 2, 7, 8};
    cg_tensor *q = rand_tensor(4, qs, 1, 1.0f), *k = rand_tensor(4, ks, 2, 1.0f), *v = rand_tensor(4, ks, 3, 1.0f);
    assert_non_null(cg_attention(q, k, v, NULL, 0.0f));
    assert_null(cg_attention(q, NULL, v, NULL, 0.0f));
    assert_error_contains("attention: k is NULL");
    int64_t s3[3] = {2, 5, 8};
    assert_null(cg_attention(rand_tensor(3, s3, 1, 1.0f), k, v, NULL, 0.0f));
    assert_error_contains("attention: q f32[2, 5, 8] cpu must have 4 dims");
    assert_null(cg_attention(q, k, cg_tensor_zeros(cg_step_arena(CG_CPU), CG_I32, 4, ks), NULL, 0.0f));
    assert_int_equal(cg_last_status(), CG_ERR_DTYPE);
    int64_t v_bad[4] = {2, 2, 6, 8};
    assert_null(cg_attention(q, k, rand_tensor(4, v_bad, 4, 1.0f), NULL, 0.0f));
    assert_error_contains("k f32[2, 2, 7, 8] cpu and v f32[2, 2, 6, 8] cpu must have the same shape");
    int64_t k_b[4] = {3, 2, 7, 8};
    cg_tensor *kb = rand_tensor(4, k_b, 5, 1.0f);
    assert_null(cg_attention(q, kb, kb, NULL, 0.0f));
    assert_error_contains("batch sizes differ (2 vs 3)");
    int64_t k_d[4] = {2, 2, 7, 16};
    cg_tensor *kd = rand_tensor(4, k_d, 5, 1.0f);
    assert_null(cg_attention(q, kd, kd, NULL, 0.0f));
    assert_error_contains("head dims differ (8 vs 16)");
    int64_t k_h[4] = {2, 3, 7, 8};
    cg_tensor *kh = rand_tensor(4, k_h, 5, 1.0f);
    assert_null(cg_attention(q, kh, kh, NULL, 0.0f));
    assert_int_equal(cg_last_status(), CG_ERR_SHAPE);
    assert_error_contains("query heads (4) must be a multiple of the kv heads (3)");
    int64_t k_s[4] = {2, 2, 4, 8};
    cg_tensor *ks4 = rand_tensor(4, k_s, 5, 1.0f);
    assert_null(cg_attention(q, ks4, ks4, NULL, 0.0f));
    assert_error_contains("fewer keys (S = 4) than queries (T = 5)");
    int64_t m_bad[2] = {2, 5}, m_ok[2] = {2, 7};
    assert_null(cg_attention(q, k, v, cg_tensor_zeros(cg_step_arena(CG_CPU), CG_U8, 2, m_bad), 0.0f));
    assert_error_contains("key_mask u8[2, 5] cpu must be [B, S] = [2, 7]");
    assert_null(cg_attention(q, k, v, cg_tensor_zeros(cg_step_arena(CG_CPU), CG_BF16, 2, m_ok), 0.0f));
    assert_int_equal(cg_last_status(), CG_ERR_DTYPE);
    assert_error_contains("key_mask bf16[2, 7] cpu must be u8, i32, i64 or f32");
    assert_null(cg_attention(q, k, v, NULL, NAN));
    assert_error_contains("scale must be finite");
    float dummy[320];
    cg_tensor *gpu = cg_tensor_wrap(cg_step_arena(CG_CPU), CG_F32, (cg_device){CG_DEVICE_CUDA, 0}, 4, qs, dummy);
    assert_non_null(gpu);
    assert_null(cg_attention(gpu, k, v, NULL, 0.0f));
    assert_int_equal(cg_last_status(), CG_ERR_DEVICE);
    assert_error_contains("attention: q f32[2, 4, 5, 8] cuda:0 and k/v f32[2, 2, 7, 8] cpu are on different devices");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_attention_forward_matches_naive, cg_test_teardown),
        cmocka_unit_test_teardown(test_rope_llama3_scaling, cg_test_teardown),
        cmocka_unit_test_teardown(test_attention_explicit_scale_and_closed_form, cg_test_teardown),
        cmocka_unit_test_teardown(test_attention_padding_mask, cg_test_teardown),
        cmocka_unit_test_teardown(test_attention_backward_matches_naive, cg_test_teardown),
        cmocka_unit_test_teardown(test_attention_gradcheck, cg_test_teardown),
        cmocka_unit_test_teardown(test_attention_thread_count_invariance, cg_test_teardown),
        cmocka_unit_test_teardown(test_attention_memory_long_sequence, cg_test_teardown),
        cmocka_unit_test_teardown(test_rope_matches_naive, cg_test_teardown),
        cmocka_unit_test_teardown(test_rope_positions_and_identity, cg_test_teardown),
        cmocka_unit_test_teardown(test_rope_gradcheck_and_inverse, cg_test_teardown),
        cmocka_unit_test_teardown(test_rope_errors, cg_test_teardown),
        cmocka_unit_test_teardown(test_attention_errors, cg_test_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
