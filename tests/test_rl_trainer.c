/* The RL loop end to end: GRPO raises the reward of a toy task within a few seconds; the SFT warm-up lowers
 * its loss; the evaluation counts correct answers; dynamic sampling drops groups without signal. */
#include "test_util.h"

#include <unistd.h>

#include "core/json.h"

static cg_model *tiny(uint64_t seed) {
    cg_model_config cfg;
    assert_ok(cg_model_config_preset("llama:tiny", &cfg));
    cg_model *m = NULL;
    assert_ok(cg_model_create(&cfg, CG_CPU, seed, &m));
    return m;
}

/* 1 when the response starts with '7' (a preference any policy can learn), else 0. */
static float starts_with_7(const char *prompt, const char *response, size_t len, const char *answer, void *user) {
    (void)prompt, (void)answer, (void)user;
    return len > 0 && response[0] == '7' ? 1.0f : 0.0f;
}

static cg_task_set *toy_tasks(void) {
    cg_task_item items[4] = {{"1+1=", "2"}, {"2+2=", "4"}, {"3+3=", "6"}, {"4+4=", "8"}};
    cg_task_set *set = NULL;
    assert_ok(cg_task_set_from_items(items, 4, &set));
    return set;
}

static void run_toy(cg_rl_algo algo, double *first, double *last) {
    cg_set_num_threads(1);
    cg_model *m = tiny(5);
    cg_tokenizer *tok = NULL;
    assert_ok(cg_tokenizer_char_create(CG_CHAR_ALPHABET_DEFAULT, &tok));
    cg_task_set *tasks = toy_tasks();
    cg_reward rw[1] = {{starts_with_7, NULL, 1.0f}};
    cg_rl_trainer_config c = cg_rl_trainer_config_default(algo);
    c.obj.kl_beta = 0.0f;
    c.prompts_per_step = 4, c.group_size = 8;
    c.sampling.max_new_tokens = 3;
    c.opt.lr = 3e-3f;
    cg_rl_trainer *t = NULL;
    assert_ok(cg_rl_trainer_create(m, NULL, tok, tasks, rw, 1, &c, &t));
    double avg_first = 0, avg_last = 0;
    const int steps = 30;
    for (int s = 0; s < steps; s++) {
        cg_rl_step_stats st;
        assert_ok(cg_rl_trainer_step(t, &st));
        if (s < 5) avg_first += st.reward / 5;
        if (s >= steps - 5) avg_last += st.reward / 5;
    }
    *first = avg_first, *last = avg_last;
    cg_rl_trainer_free(t);
    cg_task_set_free(tasks);
    cg_tokenizer_free(tok);
    cg_model_free(m);
    cg_set_num_threads(0);
}

static void test_grpo_raises_a_toy_reward(void **state) {
    (void)state;
    double first, last;
    run_toy(CG_RL_GRPO, &first, &last);
    print_message("grpo: mean reward over the first 5 steps %.3f, over the last 5 %.3f\n", first, last);
    assert_true(last > first + 0.3);
}

static float always_zero(const char *prompt, const char *response, size_t len, const char *answer, void *user) {
    (void)prompt, (void)response, (void)len, (void)answer, (void)user;
    return 0.0f;
}

/* DAPO's dynamic sampling: groups whose rewards are all equal are dropped and more prompts drawn; the kept
 * sequences are whole groups with mixed rewards, and a step where every group is flat learns nothing. */
static void test_dynamic_sampling(void **state) {
    (void)state;
    cg_set_num_threads(1);
    cg_model *m = tiny(9);
    cg_tokenizer *tok = NULL;
    assert_ok(cg_tokenizer_char_create(CG_CHAR_ALPHABET_DEFAULT, &tok));
    cg_task_set *tasks = toy_tasks();
    cg_rl_trainer_config c = cg_rl_trainer_config_default(CG_RL_DAPO);
    c.obj.dynamic_sampling = true, c.obj.max_gen_batches = 3;
    c.prompts_per_step = 4, c.group_size = 4, c.sampling.max_new_tokens = 2;
    cg_reward none[1] = {{always_zero, NULL, 1.0f}};
    cg_rl_trainer *bad = NULL; /* DAPO's default cache (4096) does not fit 2 new tokens: refused up front */
    assert_int_equal(cg_rl_trainer_create(m, NULL, tok, tasks, none, 1, &c, &bad), CG_ERR_INVALID_ARG);
    assert_error_contains("cache length 4096 must lie in [0, max_new_tokens 2]");
    c.obj.overlong_cache_len = 1;
    c.obj.overlong_penalty = false; /* it varies with length, so it would give flat-reward groups a spread */
    /* a reward that is always 0: every group is flat, 3 batches of 4 groups are drawn and all dropped */
    cg_reward zero[1] = {{always_zero, NULL, 1.0f}};
    cg_rl_trainer *t = NULL;
    assert_ok(cg_rl_trainer_create(m, NULL, tok, tasks, zero, 1, &c, &t));
    cg_rl_step_stats st;
    assert_ok(cg_rl_trainer_step(t, &st));
    assert_int_equal(st.rollout_batches, 3);
    assert_int_equal(st.groups_dropped, 12);
    assert_int_equal(st.sequences, 0);
    cg_rl_trainer_free(t);
    /* a reward with mixed outcomes: kept sequences are whole groups, no more than a step's worth */
    cg_reward mixed[1] = {{starts_with_7, NULL, 1.0f}};
    c.sampling.temperature = 1.0f;
    assert_ok(cg_rl_trainer_create(m, NULL, tok, tasks, mixed, 1, &c, &t));
    int64_t kept_total = 0;
    for (int s = 0; s < 4; s++) {
        assert_ok(cg_rl_trainer_step(t, &st));
        assert_int_equal(st.sequences % c.group_size, 0);
        assert_true(st.sequences <= c.prompts_per_step * c.group_size);
        assert_true(st.rollout_batches >= 1 && st.rollout_batches <= 3);
        kept_total += st.sequences;
        if (st.sequences > 0) assert_true(st.accuracy > 0.0 && st.accuracy < 1.0); /* only mixed groups kept */
    }
    assert_true(kept_total > 0);
    cg_rl_trainer_free(t);
    cg_task_set_free(tasks);
    cg_tokenizer_free(tok);
    cg_model_free(m);
    cg_set_num_threads(0);
}

/* The example driver in tools/examples runs end to end (2 steps) and saves its adapter. */
static void test_example_driver_runs(void **state) {
    (void)state;
    const char *bin = getenv("CGRAD_BIN"); /* build/bin/cgrad -> build/examples/grpo_lora_lion */
    char dir[] = "/tmp/cgrad_example_XXXXXX", cmd[2048], out[8192];
    assert_non_null(mkdtemp(dir));
    char exe[256];
    snprintf(exe, sizeof exe, "%s", bin ? bin : "build/bin/cgrad");
    char *slash = strrchr(exe, '/');
    assert_non_null(slash);
    *slash = '\0';
    slash = strrchr(exe, '/');
    assert_non_null(slash);
    snprintf(slash, sizeof exe - (size_t)(slash - exe), "/examples/grpo_lora_lion");
    char cwd[256];
    assert_non_null(getcwd(cwd, sizeof cwd));
    snprintf(cmd, sizeof cmd, "cd %s && %s%s%s llama:tiny 2 2>&1", dir, exe[0] == '/' ? "" : cwd, exe[0] == '/' ? "" : "/", exe);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = '\0';
    int status = pclose(p);
    if (status != 0) print_error("%s\n", out);
    assert_int_equal(status, 0);
    assert_non_null(strstr(out, "step   1"));
    assert_non_null(strstr(out, "held-out accuracy"));
    snprintf(cmd, sizeof cmd, "%s/grpo_adapter/adapter_config.json", dir);
    FILE *f = fopen(cmd, "r");
    assert_non_null(f);
    fclose(f);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

/* cgrad rl end to end, small: the progress lines, one JSON object per step with the keys the metrics need,
 * the plot and the saved model; and its errors. */
static void test_cli_rl(void **state) {
    (void)state;
    char dir[] = "/tmp/cgrad_rl_XXXXXX", args[512], out[16384], path[128];
    assert_non_null(mkdtemp(dir));
    snprintf(args, sizeof args, "rl --sft-steps 20 --sft-batch 8 --steps 3 --prompts 4 --group 4 --eval-items 10 "
             "--out %s", dir);
    int rc = cg_test_run_cgrad(args, out, sizeof out);
    if (rc != 0) print_error("%s\n", out);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(out, "held-out accuracy before RL"));
    assert_non_null(strstr(out, "held-out accuracy after RL"));
    assert_non_null(strstr(out, "rl step    3/3"));
    snprintf(path, sizeof path, "%s/metrics.jsonl", dir);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char line[4096];
    int lines = 0;
    const char *keys[] = {"\"step\"", "\"reward\"", "\"accuracy\"", "\"kl\"", "\"entropy\"", "\"response_len\""};
    while (fgets(line, sizeof line, f)) {
        cJSON *obj = NULL;
        assert_ok(cg_json_parse(line, strlen(line), "metrics", &obj)); /* valid JSON */
        cg_json_free(obj);
        for (int k = 0; k < 6; k++) assert_non_null(strstr(line, keys[k]));
        lines++;
    }
    fclose(f);
    assert_int_equal(lines, 3);
    snprintf(path, sizeof path, "%s/reward_accuracy.svg", dir);
    assert_int_equal(access(path, R_OK), 0);
    snprintf(path, sizeof path, "%s/model/config.json", dir);
    assert_int_equal(access(path, R_OK), 0);
    /* errors: a usage error exits 2, a bad value 1, each as one line on stderr */
    assert_int_equal(cg_test_run_cgrad("rl --frobnicate 1", out, sizeof out), 2);
    assert_non_null(strstr(out, "unknown flag '--frobnicate'"));
    assert_int_equal(cg_test_run_cgrad("rl --algo ppo2 --steps 1", out, sizeof out), 1);
    assert_non_null(strstr(out, "cgrad rl: "));
    assert_true(strchr(out, '\n') == out + strlen(out) - 1);
    assert_int_equal(cg_test_run_cgrad("rl --steps many", out, sizeof out), 2);
    assert_non_null(strstr(out, "--steps takes an integer"));
    assert_int_equal(cg_test_run_cgrad("rl --sft-slip 1.5 --steps 1", out, sizeof out), 2);
    assert_non_null(strstr(out, "--sft-slip 1.5 is not a fraction"));
    assert_int_equal(cg_test_run_cgrad("rl --dtype f16 --steps 1 --sft-steps 0", out, sizeof out), 1);
    assert_non_null(strstr(out, "--dtype 'f16'"));
    snprintf(args, sizeof args, "rm -rf %s", dir);
    assert_int_equal(system(args), 0);
}

/* The default demo itself (make run, about a minute; make test-full only, and not under ASan where it takes
 * many minutes): GRPO must raise held-out greedy accuracy by at least 5 points and cut the share of
 * carry-forgetting answers it inherited from the warm-up. */
static void test_demo_raises_accuracy(void **state) {
    (void)state;
#ifdef __SANITIZE_ADDRESS__
    skip();
#endif
    if (!cg_test_full()) {
        print_message("the default demo runs under make test-full only\n");
        skip();
    }
    char dir[] = "/tmp/cgrad_demo_XXXXXX", args[256], out[65536];
    assert_non_null(mkdtemp(dir));
    snprintf(args, sizeof args, "rl --out %s", dir);
    int rc = cg_test_run_cgrad(args, out, sizeof out);
    if (rc != 0) print_error("%s\n", out);
    assert_int_equal(rc, 0);
    const char *acc = strstr(out, "held-out accuracy after RL:"), *slip = strstr(out, "carry-forgetting answers:");
    assert_non_null(acc);
    assert_non_null(slip);
    double after, before, slip_after, slip_before;
    assert_int_equal(sscanf(acc, "held-out accuracy after RL: %lf%% (before: %lf%%)", &after, &before), 2);
    assert_int_equal(sscanf(slip, "carry-forgetting answers: %lf%% (before: %lf%%)", &slip_after, &slip_before), 2);
    print_message("demo: held-out accuracy %.1f%% -> %.1f%%, carry-forgetting answers %.1f%% -> %.1f%%\n", before,
                  after, slip_before, slip_after);
    assert_true(after >= before + 5.0);
    assert_true(slip_after < slip_before);
    snprintf(args, sizeof args, "rm -rf %s", dir);
    assert_int_equal(system(args), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_grpo_raises_a_toy_reward, cg_test_teardown),
        cmocka_unit_test_teardown(test_dynamic_sampling, cg_test_teardown),
        cmocka_unit_test_teardown(test_example_driver_runs, cg_test_teardown),
        cmocka_unit_test_teardown(test_cli_rl, cg_test_teardown),
        cmocka_unit_test_teardown(test_demo_raises_accuracy, cg_test_teardown),
    };
    int rc = cmocka_run_group_tests_name("rl_trainer", tests, NULL, NULL);
    cg_shutdown();
    return rc;
}
