/* The fused CUDA optimizer updates against the CPU optimizer on the same parameters and gradients: SGD
 * (momentum, Nesterov), AdamW and Lion with weight decay, lr multipliers, clipping and gradient noise, over
 * several steps, including an odd-sized and a large parameter; the skip on a non-finite gradient; the bf16
 * working copy; the state save/load round trip. The GPU rounds each operation as the CPU loop does, so the
 * results should agree to the bit; the test allows 1e-5 of each tensor's largest value (the global norm is
 * summed in another order, which may move the clip coefficient by an ulp, and the noise goes through each
 * side's libm). Skips without a GPU. */
#include "test_util.h"

#include "optim/optim.h"

#define GPU CG_CUDA(0)
#define NPARAM 3

typedef struct pair {
    cg_tensor *cpu[NPARAM], *gpu[NPARAM];
} pair;

/* Parameters of 7 x 5, 769 and 300000 elements (the last spans many 16384-element chunks), the same values on
 * both devices, with zeroed gradients. */
static void make_params(pair *p) {
    const int64_t shapes[NPARAM][2] = {{7, 5}, {1, 769}, {600, 500}};
    const char *names[NPARAM] = {"h.0.attn.c_attn.weight", "h.0.ln_1.bias", "h.1.mlp.c_fc.weight"};
    for (int i = 0; i < NPARAM; i++) {
        int nd = i == 1 ? 1 : 2;
        const int64_t *sh = i == 1 ? &shapes[i][1] : shapes[i];
        p->cpu[i] = cg_test_rand_tensor(nd, sh, 10 + (uint64_t)i, 1.0f, 0.0f, true);
        p->cpu[i]->name = names[i];
        assert_ok(cg_alloc_grad(p->cpu[i], cg_step_arena(CG_CPU)));
        p->gpu[i] = cg_tensor_clone(cg_step_arena(GPU), p->cpu[i]);
        assert_non_null(p->gpu[i]);
        p->gpu[i]->name = names[i];
        assert_ok(cg_set_requires_grad(p->gpu[i], true));
        assert_ok(cg_alloc_grad(p->gpu[i], cg_step_arena(GPU)));
    }
}

/* Fresh random gradients (scale chosen per step) on both sides. */
static void set_grads(pair *p, uint64_t seed, float scale) {
    for (int i = 0; i < NPARAM; i++) {
        cg_tensor *g = cg_test_rand_tensor(p->cpu[i]->ndim, p->cpu[i]->shape, seed + (uint64_t)i, scale, 0.0f, false);
        assert_ok(cg_copy(p->cpu[i]->grad, g));
        assert_ok(cg_copy(p->gpu[i]->grad, g));
    }
}

static void assert_tensors_close(const cg_tensor *gpu, const cg_tensor *cpu, double tol, const char *what) {
    cg_tensor *g = cg_tensor_to(cg_step_arena(CG_CPU), gpu, CG_F32);
    assert_non_null(g);
    double maxabs = 0;
    for (int64_t i = 0; i < cg_numel(cpu); i++) maxabs = fmax(maxabs, fabs(cg_get_flat(cpu, i)));
    for (int64_t i = 0; i < cg_numel(cpu); i++) {
        double a = cg_get_flat(g, i), b = cg_get_flat(cpu, i);
        if (!(fabs(a - b) <= tol * maxabs + 1e-30)) {
            print_error("%s: element %lld: gpu %.9g cpu %.9g\n", what, (long long)i, a, b);
            fail();
        }
    }
}

static void run_kind(cg_optimizer_kind kind, float momentum, bool nesterov, float clip, float noise) {
    pair p;
    make_params(&p);
    cg_optimizer_config cfg = cg_optimizer_config_default(kind);
    cfg.weight_decay = 0.1f;
    cfg.momentum = momentum;
    cfg.nesterov = nesterov;
    cfg.grad_clip = clip;
    cfg.grad_noise_eta = noise;
    cfg.seed = 1234;
    /* two groups: different lr multipliers and decays */
    cg_param_group gc[2] = {{2, p.cpu, 1.0f, 0.1f}, {1, p.cpu + 2, 0.5f, 0.0f}};
    cg_param_group gg[2] = {{2, p.gpu, 1.0f, 0.1f}, {1, p.gpu + 2, 0.5f, 0.0f}};
    cg_optimizer *oc = NULL, *og = NULL;
    assert_ok(cg_optimizer_create_groups(&cfg, 2, gc, &oc));
    assert_ok(cg_optimizer_create_groups(&cfg, 2, gg, &og));
    for (int step = 0; step < 3; step++) {
        set_grads(&p, 100 + 10 * (uint64_t)step, step == 1 ? 5.0f : 0.5f); /* step 1 clips when clip is on */
        cg_optim_step_info ic, ig;
        assert_ok(cg_optimizer_step(oc, 1e-2f, &ic));
        assert_ok(cg_optimizer_step(og, 1e-2f, &ig));
        assert_close(ig.grad_norm, ic.grad_norm, 1e-12, 0);
        assert_close(ig.clip_coef, ic.clip_coef, 1e-6, 0);
        assert_int_equal(ig.step, ic.step);
        for (int i = 0; i < NPARAM; i++) assert_tensors_close(p.gpu[i], p.cpu[i], 1e-5, p.cpu[i]->name);
    }
    /* the state agrees too */
    size_t n = cg_optimizer_state_bytes(oc);
    assert_int_equal(n, cg_optimizer_state_bytes(og));
    float *sc = malloc(n), *sg = malloc(n);
    assert_non_null(sc);
    assert_non_null(sg);
    assert_ok(cg_optimizer_save_state(oc, sc));
    assert_ok(cg_optimizer_save_state(og, sg));
    /* the fp32 state values are the buffer's tail: n_state tensors of every parameter's elements */
    int64_t total = 0;
    for (int i = 0; i < NPARAM; i++) total += cg_numel(p.cpu[i]);
    int n_state = kind == CG_OPT_ADAMW ? 2 : (kind == CG_OPT_LION || momentum > 0.0f) ? 1 : 0;
    size_t nf = (size_t)n_state * (size_t)total, off = n - nf * sizeof(float);
    assert_memory_equal(sc, sg, off); /* header, counts, step */
    const float *fc = (const float *)((const char *)sc + off), *fg = (const float *)((const char *)sg + off);
    double maxabs = 0;
    for (size_t i = 0; i < nf; i++) maxabs = fmax(maxabs, fabs(fc[i]));
    for (size_t i = 0; i < nf; i++) assert_true(fabs((double)fg[i] - fc[i]) <= 1e-5 * maxabs + 1e-30);
    cg_optimizer_free(oc);
    cg_optimizer_free(og);
    free(sc);
    free(sg);
}

static void test_sgd(void **state) {
    (void)state;
    cg_test_require_gpu();
    run_kind(CG_OPT_SGD, 0.0f, false, 0.0f, 0.0f);
    run_kind(CG_OPT_SGD, 0.9f, false, 1.0f, 0.0f);
    run_kind(CG_OPT_SGD, 0.9f, true, 0.0f, 0.01f);
}

static void test_adamw(void **state) {
    (void)state;
    cg_test_require_gpu();
    run_kind(CG_OPT_ADAMW, 0.0f, false, 0.0f, 0.0f);
    run_kind(CG_OPT_ADAMW, 0.0f, false, 1.0f, 0.01f);
}

static void test_lion(void **state) {
    (void)state;
    cg_test_require_gpu();
    run_kind(CG_OPT_LION, 0.0f, false, 0.0f, 0.0f);
    run_kind(CG_OPT_LION, 0.0f, false, 1.0f, 0.0f);
}

static void test_nonfinite_skip_working_copy_and_state(void **state) {
    (void)state;
    cg_test_require_gpu();
    pair p;
    make_params(&p);
    cg_optimizer_config cfg = cg_optimizer_config_default(CG_OPT_ADAMW);
    cg_optimizer *og = NULL;
    assert_ok(cg_optimizer_create(&cfg, NPARAM, p.gpu, &og));
    /* bf16 working copy of the big parameter, filled at once and after each update */
    cg_tensor *work = cg_tensor_empty(cg_step_arena(GPU), CG_BF16, 2, p.gpu[2]->shape);
    assert_ok(cg_optimizer_set_working_copy(og, 2, work));
    set_grads(&p, 7, 1.0f);
    assert_ok(cg_optimizer_step(og, 1e-3f, NULL));
    cg_tensor *w32 = cg_tensor_to(cg_step_arena(CG_CPU), p.gpu[2], CG_F32);
    cg_tensor *wbf = cg_tensor_to(cg_step_arena(CG_CPU), work, CG_F32);
    for (int64_t i = 0; i < cg_numel(w32); i += 997)
        assert_true(cg_get_flat(wbf, i) == cg_bf16_to_f32(cg_f32_to_bf16((float)cg_get_flat(w32, i))));
    /* a NaN gradient: the step is skipped, nothing changes */
    cg_tensor *before = cg_tensor_clone(cg_step_arena(CG_CPU), p.gpu[0]); /* a host copy */
    float nan = NAN;
    assert_ok(cg_device_memcpy(GPU, (float *)cg_data(p.gpu[1]->grad) + 5, CG_CPU, &nan, sizeof nan));
    cg_optim_step_info info;
    assert_ok(cg_optimizer_step(og, 1e-3f, &info));
    assert_true(info.skipped);
    assert_int_equal(info.nonfinite, 1);
    assert_int_equal(info.first_nonfinite, 1);
    assert_int_equal(cg_optimizer_step_count(og), 1);
    cg_tensor *after = cg_tensor_clone(cg_step_arena(CG_CPU), p.gpu[0]);
    assert_memory_equal(cg_data(after), cg_data(before), cg_nbytes(before));
    /* save, run a step, load, run the same step: bit-identical */
    set_grads(&p, 9, 1.0f);
    size_t n = cg_optimizer_state_bytes(og);
    void *buf = malloc(n);
    assert_ok(cg_optimizer_save_state(og, buf));
    cg_tensor *w0 = cg_tensor_clone(cg_step_arena(CG_CPU), p.gpu[2]);
    assert_ok(cg_optimizer_step(og, 1e-3f, NULL));
    cg_tensor *first = cg_tensor_clone(cg_step_arena(CG_CPU), p.gpu[2]);
    assert_ok(cg_copy(p.gpu[2], w0));
    assert_ok(cg_optimizer_load_state(og, buf, n));
    assert_ok(cg_optimizer_step(og, 1e-3f, NULL));
    cg_tensor *second = cg_tensor_clone(cg_step_arena(CG_CPU), p.gpu[2]);
    assert_memory_equal(cg_data(first), cg_data(second), cg_nbytes(first));
    free(buf);
    cg_optimizer_free(og);
}

static void test_mixed_devices_refused(void **state) {
    (void)state;
    cg_test_require_gpu();
    pair p;
    make_params(&p);
    cg_tensor *mixed[2] = {p.cpu[0], p.gpu[1]};
    cg_optimizer_config cfg = cg_optimizer_config_default(CG_OPT_SGD);
    cg_optimizer *o = NULL;
    assert_int_equal(cg_optimizer_create(&cfg, 2, mixed, &o), CG_ERR_DEVICE);
    assert_error_contains("is not on cpu, the device of parameter 0");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_sgd, cg_test_teardown),
        cmocka_unit_test_teardown(test_adamw, cg_test_teardown),
        cmocka_unit_test_teardown(test_lion, cg_test_teardown),
        cmocka_unit_test_teardown(test_nonfinite_skip_working_copy_and_state, cg_test_teardown),
        cmocka_unit_test_teardown(test_mixed_devices_refused, cg_test_teardown),
    };
    int rc = cmocka_run_group_tests_name("cuda_optim", tests, NULL, NULL);
    cg_shutdown();
    return rc;
}
