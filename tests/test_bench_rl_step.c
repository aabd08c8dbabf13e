/* The RL step benchmark (bench/bench_rl_step.c, compiled in here without its main): the tiny CPU smoke run
 * exits 0 and prints both figures with the exact token counts, the CUDA case skips without a GPU, and bad
 * flags are refused. */
#define CG_BENCH_RL_STEP_NO_MAIN
#include "../bench/bench_rl_step.c"

#include "test_util.h"

/* Runs the benchmark with the given arguments; its output goes to buf (NUL-terminated). Returns its rc. */
static int run_bench(int argc, char **argv, char *buf, size_t cap) {
    FILE *f = tmpfile();
    assert_non_null(f);
    int rc = bench_rl_step_run(argc, argv, f);
    fflush(f);
    rewind(f);
    size_t n = fread(buf, 1, cap - 1, f);
    buf[n] = '\0';
    fclose(f);
    cg_set_num_threads(0);
    return rc;
}

/* The first number after `key` in text (asserts it is there). */
static double number_after(const char *text, const char *key) {
    const char *p = strstr(text, key);
    assert_non_null(p);
    return strtod(p + strlen(key), NULL);
}

static void test_cpu_smoke_run(void **state) {
    (void)state;
    char *argv[] = {"bench_rl_step", "--preset", "llama:tiny", "--device", "cpu", "--prompts", "2", "--group", "2",
                    "--new", "8", "--threads", "1", NULL};
    static char out[16384];
    assert_int_equal(run_bench(13, argv, out, sizeof out), 0);
    print_message("%s", out);
    /* 2 prompts x 2 samples x 8 new tokens (no stop token: every response runs the full budget) */
    assert_true(number_after(out, "rollout: ") == 32.0);
    /* 4 sequences x (64 prompt + 8 response) tokens */
    assert_true(number_after(out, "update: ") == 288.0);
    double roll = number_after(out, " s: "), upd = number_after(strstr(out, "update: "), " s: ");
    assert_true(roll > 0.0 && isfinite(roll));
    assert_true(upd > 0.0 && isfinite(upd));
    assert_non_null(strstr(out, "tokens/s"));
    assert_non_null(strstr(out, "step 0 (warm-up)"));
    assert_non_null(strstr(out, "step 2:"));
    /* the update moved the adapters: the policy differs from the LoRA-disabled reference by step 1 */
    double kl = number_after(strstr(out, "step 1:"), "kl ");
    assert_true(kl > 0.0);
}

static void test_full_fine_tune_smoke_run(void **state) {
    (void)state;
    char *argv[] = {"bench_rl_step", "--preset", "llama:tiny", "--device", "cpu", "--prompts", "2", "--group", "2",
                    "--new", "4", "--threads", "1", "--full", "--warmup", "0", "--steps", "1", NULL};
    static char out[16384];
    assert_int_equal(run_bench(18, argv, out, sizeof out), 0);
    assert_non_null(strstr(out, "full fine-tune"));
    assert_true(number_after(out, "rollout: ") == 16.0);
    assert_true(number_after(out, "update: ") == 272.0);
}

static void test_cuda_skips_without_gpu(void **state) {
    (void)state;
    if (cg_cuda_device_count() > 0) skip(); /* the real case takes minutes on a GPU: not a unit test */
    char *argv[] = {"bench_rl_step", NULL};
    char out[1024];
    assert_int_equal(run_bench(1, argv, out, sizeof out), 0);
    assert_string_equal(out, "bench_rl_step qwen2.5-0.5b: no CUDA device: skipped\n");
}

static void test_bad_flags(void **state) {
    (void)state;
    char out[1024];
    char *unknown[] = {"bench_rl_step", "--bogus", "1", NULL};
    assert_int_equal(run_bench(3, unknown, out, sizeof out), 2);
    char *zero[] = {"bench_rl_step", "--device", "cpu", "--group", "0", NULL};
    assert_int_equal(run_bench(5, zero, out, sizeof out), 2);
    char *text[] = {"bench_rl_step", "--new", "many", NULL};
    assert_int_equal(run_bench(3, text, out, sizeof out), 2);
    /* llama:tiny holds 256 positions: 64 + 512 does not fit */
    char *too_long[] = {"bench_rl_step", "--preset", "llama:tiny", "--device", "cpu", NULL};
    assert_int_equal(run_bench(5, too_long, out, sizeof out), 2);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_cpu_smoke_run, cg_test_teardown),
        cmocka_unit_test_teardown(test_full_fine_tune_smoke_run, cg_test_teardown),
        cmocka_unit_test_teardown(test_cuda_skips_without_gpu, cg_test_teardown),
        cmocka_unit_test_teardown(test_bad_flags, cg_test_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
