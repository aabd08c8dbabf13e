/* Mixed precision and training on a GPU, against the CPU model with the same weights:
 *   - an f32 CUDA model (TF32 off): loss to 1e-4 relative, every parameter's gradient to 1e-4 of its largest
 *     CPU magnitude (gpt2:tiny and llama:tiny);
 *   - the bf16 model (bf16 working copies and activations, f32 loss): loss within 2e-2 relative of the f32 CPU
 *     loss, gradients within 5e-2 in relative L2 norm per parameter (bf16 keeps 8 bits of mantissa, so
 *     activations carry ~4e-3 relative rounding through a few layers);
 *   - one AdamW step (lr 1e-3) on the bf16 GPU model moves the masters like the f32 CPU step: Adam's first
 *     update is lr * g / (|g| + eps) per element, so every difference is at most 2 lr, and at most 2% of the
 *     elements (those whose gradient is near zero, where bf16 rounding can flip its sign) may differ by more
 *     than lr / 10; afterwards each working copy equals bf16(master) exactly;
 *   - the trainer on a bf16 GPU model over llm.c shards: finite losses that fall, MFU and device memory
 *     reported, and a checkpoint that resumes onto a fresh GPU model with the same masters.
 * Every test skips without a GPU. */
#include "test_util.h"

#include <stdlib.h>
#include <unistd.h>

#ifdef CG_HAVE_CUDA
#include "cuda/matmul.h"
#endif

#define GPU CG_CUDA(0)

static void set_tf32(bool on) {
#ifdef CG_HAVE_CUDA
    cg_cuda_matmul_set_tf32(on);
#else
    (void)on;
#endif
}

static cg_model *cpu_model(const char *preset, uint64_t seed) {
    cg_model_config cfg;
    assert_ok(cg_model_config_preset(preset, &cfg));
    cfg.init_std = 0.1f;
    cg_model *m = NULL;
    assert_ok(cg_model_create(&cfg, CG_CPU, seed, &m));
    return m;
}

/* The same weights on the GPU (every parameter copied by name). */
static cg_model *gpu_copy(const cg_model *cpu) {
    cg_model_config cfg = cpu->cfg;
    cfg.init_std = 0.0f;
    cg_model *g = NULL;
    assert_ok(cg_model_create(&cfg, GPU, 0, &g));
    for (int i = 0; i < g->n_params; i++) {
        cg_tensor *src = cg_model_find_param(cpu, g->params[i].name);
        assert_non_null(src);
        assert_ok(cg_copy(g->params[i].tensor, src));
    }
    return g;
}

/* Mean loss of a fixed batch, then its backward (gradients in the models' persistent buffers). */
static double loss_and_grads(cg_model *m, uint64_t seed) {
    cg_tensor *tok = cg_test_random_tokens(2, 17, seed, m->cfg.vocab_size);
    int64_t s[2] = {2, 16};
    cg_tensor *in = cg_contiguous(cg_view_slice(tok, 1, 0, 16, 1));
    cg_tensor *tgt = cg_contiguous(cg_view_slice(tok, 1, 1, 17, 1));
    assert_true(in && tgt && in->shape[1] == s[1]);
    if (m->device.type == CG_DEVICE_CUDA) {
        cg_tensor *t = cg_tensor_empty(cg_step_arena(m->device), CG_I32, 2, s);
        assert_ok(cg_copy(t, tgt));
        tgt = t;
    }
    cg_model_inputs inputs = {.tokens = in};
    cg_tensor *h = cg_model_forward(m, &inputs);
    assert_non_null(h);
    cg_tensor *loss = cg_model_loss(m, h, tgt);
    assert_non_null(loss);
    float v = 0;
    assert_ok(cg_device_memcpy(CG_CPU, &v, loss->device, cg_data(loss), sizeof v));
    assert_ok(cg_backward(loss));
    cg_step_end();
    return v;
}

static cg_tensor *host_f32(const cg_tensor *t) {
    cg_tensor *h = cg_tensor_to(cg_step_arena(CG_CPU), t, CG_F32);
    assert_non_null(h);
    return h;
}

static void compare_grads(const cg_model *cpu, const cg_model *gpu, double tol, bool relative_l2) {
    for (int i = 0; i < cpu->n_params; i++) {
        const cg_tensor *pc = cpu->params[i].tensor, *pg = cg_model_find_param(gpu, cpu->params[i].name);
        assert_non_null(pg);
        assert_non_null(pc->grad);
        assert_non_null(pg->grad);
        assert_int_equal(pg->grad->dtype, CG_F32);
        cg_tensor *g = host_f32(pg->grad);
        double maxabs = 0, diff2 = 0, ref2 = 0, maxdiff = 0;
        for (int64_t k = 0; k < cg_numel(pc); k++) {
            double a = cg_get_flat(g, k), b = cg_get_flat(pc->grad, k);
            maxabs = fmax(maxabs, fabs(b));
            maxdiff = fmax(maxdiff, fabs(a - b));
            diff2 += (a - b) * (a - b), ref2 += b * b;
        }
        bool ok = relative_l2 ? sqrt(diff2) <= tol * sqrt(ref2) + 1e-12 : maxdiff <= tol * maxabs + 1e-12;
        if (!ok) {
            print_error("%s: gradient differs (max diff %.3g, max |cpu| %.3g, rel L2 %.3g)\n", cpu->params[i].name,
                        maxdiff, maxabs, ref2 > 0 ? sqrt(diff2 / ref2) : 0.0);
            fail();
        }
    }
}

static void check_f32(const char *preset) {
    cg_model *c = cpu_model(preset, 3);
    cg_model *g = gpu_copy(c);
    assert_ok(cg_model_alloc_grads(c));
    assert_ok(cg_model_alloc_grads(g));
    double lc = loss_and_grads(c, 11), lg = loss_and_grads(g, 11);
    assert_close(lg, lc, 1e-4, 0);
    compare_grads(c, g, 1e-4, false);
    cg_model_free(c);
    cg_model_free(g);
}

static void test_f32_model_matches_cpu(void **state) {
    (void)state;
    cg_test_require_gpu();
    set_tf32(false);
    check_f32("gpt2:tiny");
    check_f32("llama:tiny");
    set_tf32(true);
}

static void check_bf16(const char *preset) {
    cg_model *c = cpu_model(preset, 4);
    cg_model *g = gpu_copy(c);
    assert_ok(cg_model_set_compute_dtype(g, CG_BF16));
    assert_int_equal(cg_model_compute_dtype(g), CG_BF16);
    cg_tensor *wc = cg_model_working_copy(g, g->wte);
    assert_non_null(wc);
    assert_int_equal(wc->dtype, CG_BF16);
    assert_ok(cg_model_alloc_grads(c));
    assert_ok(cg_model_alloc_grads(g));
    double lc = loss_and_grads(c, 12), lg = loss_and_grads(g, 12);
    assert_close(lg, lc, 2e-2, 0);
    compare_grads(c, g, 5e-2, true);
    cg_model_free(c);
    cg_model_free(g);
}

static void test_bf16_model_close_to_f32(void **state) {
    (void)state;
    cg_test_require_gpu();
    check_bf16("gpt2:tiny");
    check_bf16("llama:tiny");
}

static void test_bf16_adamw_step(void **state) {
    (void)state;
    cg_test_require_gpu();
    cg_model *c = cpu_model("gpt2:tiny", 5);
    cg_model *g = gpu_copy(c);
    assert_ok(cg_model_set_compute_dtype(g, CG_BF16));
    assert_ok(cg_model_alloc_grads(c));
    assert_ok(cg_model_alloc_grads(g));
    int n = cg_model_trainable(c, NULL, 0);
    cg_tensor **pc = calloc((size_t)n, sizeof *pc), **pg = calloc((size_t)n, sizeof *pg);
    cg_tensor **before = calloc((size_t)n, sizeof *before);
    assert_true(pc && pg && before);
    assert_int_equal(cg_model_trainable(c, pc, n), n);
    assert_int_equal(cg_model_trainable(g, pg, n), n);
    cg_optimizer_config oc = cg_optimizer_config_default(CG_OPT_ADAMW);
    cg_optimizer *optc = NULL, *optg = NULL;
    assert_ok(cg_optimizer_create(&oc, n, pc, &optc));
    assert_ok(cg_optimizer_create(&oc, n, pg, &optg));
    for (int i = 0; i < n; i++) {
        assert_ok(cg_optimizer_set_working_copy(optg, i, cg_model_working_copy(g, pg[i])));
        before[i] = cg_tensor_clone(cg_persistent_arena(CG_CPU), pc[i]);
    }
    loss_and_grads(c, 13);
    loss_and_grads(g, 13);
    const float lr = 1e-3f;
    assert_ok(cg_optimizer_step(optc, lr, NULL));
    assert_ok(cg_optimizer_step(optg, lr, NULL));
    int64_t total = 0, far = 0;
    for (int i = 0; i < n; i++) {
        cg_tensor *mg = host_f32(pg[i]);
        cg_tensor *copy = host_f32(cg_model_working_copy(g, pg[i]));
        cg_tensor *rounded = host_f32(cg_tensor_to(cg_step_arena(CG_CPU), mg, CG_BF16));
        for (int64_t k = 0; k < cg_numel(pc[i]); k++) {
            double b = cg_get_flat(before[i], k);
            double dc = cg_get_flat(pc[i], k) - b, dg = cg_get_flat(mg, k) - b;
            double d = fabs(dg - dc);
            assert_true(d <= 2.0 * lr * 1.001 + 1e-6);
            far += d > 0.1 * lr;
            total++;
            assert_true(cg_get_flat(copy, k) == cg_get_flat(rounded, k)); /* copy = bf16(master), exactly */
        }
    }
    if (far > total / 50) {
        print_error("%lld of %lld master updates differ by more than lr/10\n", (long long)far, (long long)total);
        fail();
    }
    cg_optimizer_free(optc);
    cg_optimizer_free(optg);
    free(pc), free(pg), free(before);
    cg_model_free(c);
    cg_model_free(g);
}

static cg_model *gpu_bf16_model(void) {
    cg_model_config cfg;
    assert_ok(cg_model_config_preset("gpt2:tiny", &cfg));
    cg_model *m = NULL;
    assert_ok(cg_model_create(&cfg, GPU, 7, &m));
    assert_ok(cg_model_set_compute_dtype(m, CG_BF16));
    return m;
}

static void test_trainer_on_gpu(void **state) {
    (void)state;
    cg_test_require_gpu();
    char dir[128], shard[300], cmd[400];
    snprintf(dir, sizeof dir, "/tmp/cg_test_cuda_train_%d", (int)getpid());
    snprintf(cmd, sizeof cmd, "rm -rf %s && mkdir -p %s", dir, dir);
    assert_int_equal(system(cmd), 0);
    snprintf(shard, sizeof shard, "%s/train_000.bin", dir);
    /* a learnable stream: a repeating ramp over the 64-token vocabulary */
    int32_t toks[4096];
    for (int i = 0; i < 4096; i++) toks[i] = (i * 7) % 64;
    assert_ok(cg_token_file_write(shard, toks, 4096, 2));
    cg_data_config dc = {.path = shard, .batch = 4, .seq_len = 32, .rank = 0, .world_size = 1};
    cg_data_loader *data = NULL;
    assert_ok(cg_data_open(&dc, &data));
    cg_model *m = gpu_bf16_model();
    cg_train_config tc = cg_train_config_default();
    tc.batch = 4, tc.seq_len = 32, tc.total_batch = 256; /* two micro-batches per step */
    tc.schedule.lr = 3e-3f;
    cg_trainer *tr = NULL;
    assert_ok(cg_trainer_create(m, data, &tc, &tr));
    double first = 0, last = 0;
    for (int s = 0; s < 8; s++) {
        cg_train_step_info info;
        assert_ok(cg_trainer_step(tr, &info));
        assert_false(info.skipped);
        assert_true(isfinite(info.loss) && isfinite(info.grad_norm) && info.grad_norm > 0);
        assert_true(info.mfu > 0 && info.peak_flops == CG_TRAIN_PEAK_FLOPS_H100_BF16);
        assert_true(info.mem_arena_bytes > 0 && info.mem_device_used > 0);
        if (s == 0) first = info.loss;
        last = info.loss;
    }
    assert_true(last < first);
    char path[512];
    assert_ok(cg_trainer_save(tr, dir, 0, path, sizeof path));

    /* resume onto a fresh GPU model: the same masters and working copies */
    cg_model *m2 = gpu_bf16_model();
    cg_data_loader *data2 = NULL;
    assert_ok(cg_data_open(&dc, &data2));
    cg_trainer *tr2 = NULL;
    assert_ok(cg_trainer_create(m2, data2, &tc, &tr2));
    bool resumed = false;
    assert_ok(cg_trainer_resume(tr2, dir, &resumed, NULL, 0));
    assert_true(resumed);
    assert_int_equal(cg_trainer_step_count(tr2), 8);
    for (int i = 0; i < m->n_params; i++) {
        cg_tensor *a = host_f32(m->params[i].tensor), *b = host_f32(cg_model_find_param(m2, m->params[i].name));
        assert_memory_equal(cg_data(a), cg_data(b), cg_nbytes(a));
        cg_tensor *ca = host_f32(m->params[i].working), *cb = host_f32(m2->params[i].working);
        assert_memory_equal(cg_data(ca), cg_data(cb), cg_nbytes(ca));
    }
    cg_train_step_info i1, i2;
    assert_ok(cg_trainer_step(tr, &i1));
    assert_ok(cg_trainer_step(tr2, &i2));
    assert_close(i2.loss, i1.loss, 1e-6, 0); /* the same data position and weights */
    cg_trainer_free(tr);
    cg_trainer_free(tr2);
    cg_model_free(m);
    cg_model_free(m2);
    cg_data_close(data);
    cg_data_close(data2);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_f32_model_matches_cpu, cg_test_teardown),
        cmocka_unit_test_teardown(test_bf16_model_close_to_f32, cg_test_teardown),
        cmocka_unit_test_teardown(test_bf16_adamw_step, cg_test_teardown),
        cmocka_unit_test_teardown(test_trainer_on_gpu, cg_test_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
