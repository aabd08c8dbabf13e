/* The RL loop end to end: GRPO raises the reward of a toy task within a few seconds; the SFT warm-up lowers
 * its loss; the evaluation counts correct answers; dynamic sampling drops groups without signal. */
#include "test_util.h"

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

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_grpo_raises_a_toy_reward, cg_test_teardown),
    };
    int rc = cmocka_run_group_tests_name("rl_trainer", tests, NULL, NULL);
    cg_shutdown();
    return rc;
}
