/* An experiment driver to copy: load a model, attach LoRA, define the reward in C, run GRPO with Lion.
 *
 *   build/examples/grpo_lora_lion [MODEL_DIR_OR_PRESET] [STEPS]
 *
 * With no model directory it uses a fresh llama:tiny and the character tokenizer, so it runs anywhere; point
 * it at a Hugging Face directory (config.json, model.safetensors, tokenizer.json) for a real model. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cgrad.h"

/* The reward: 1 for the exact answer; 0.1 for a well-formed number that is wrong; 0 otherwise. Any C function
 * of (prompt, response, answer) works, with `user` for its own state. */
static float my_reward(const char *prompt, const char *response, size_t len, const char *answer, void *user) {
    (void)user;
    if (cg_reward_numeric(prompt, response, len, answer, NULL) == 1.0f) return 1.0f;
    return 0.1f * cg_reward_format(prompt, response, len, answer, NULL);
}

static int fail(const char *what) {
    fprintf(stderr, "grpo_lora_lion: %s: %s\n", what, cg_last_error());
    return 1;
}

int main(int argc, char **argv) {
    const char *model_path = argc > 1 ? argv[1] : "llama:tiny";
    int64_t steps = argc > 2 ? atoll(argv[2]) : 20;
    cg_set_num_threads(1); /* tiny models: one thread; large ones: cg_set_num_threads(0) for all cores */

    /* 1. the model: a preset (random weights) or a checkpoint directory */
    cg_model *model = NULL;
    cg_model_config cfg;
    cg_status s = cg_model_config_preset(model_path, &cfg) == CG_OK ? cg_model_create(&cfg, CG_CPU, 1, &model)
                                                                     : cg_model_load(model_path, CG_CPU, &model);
    if (s != CG_OK) return fail("loading the model");

    /* 2. its tokenizer: tokenizer.json next to the weights, else the built-in character tokenizer */
    cg_tokenizer *tok = NULL;
    char tj[4096];
    snprintf(tj, sizeof tj, "%s/tokenizer.json", model_path);
    FILE *probe = fopen(tj, "r");
    if (probe) fclose(probe);
    s = probe ? cg_tokenizer_load(tj, &tok) : cg_tokenizer_char_create(CG_CHAR_ALPHABET_DEFAULT, &tok);
    if (s != CG_OK) return fail("loading the tokenizer");

    /* 3. LoRA on every projection; the base is frozen, and disabling the adapters gives the reference policy */
    cg_lora_config lora = cg_lora_config_default();
    lora.rank = 8, lora.alpha = 16, lora.targets = "q,k,v,o,gate,up,down";
    if (cg_lora_attach(model, &lora) != CG_OK) return fail("attaching LoRA");

    /* 4. the task: generated arithmetic (or cg_task_set_load_jsonl for your own {"prompt", "answer"} lines) */
    cg_arith_config arith = cg_arith_difficulty(1);
    cg_task_set *tasks = NULL;
    if (cg_task_set_arith(&arith, 7, &tasks) != CG_OK) return fail("making the tasks");

    /* 5. GRPO with Lion: the spec's GRPO defaults (clip 0.2, k3 KL beta 0.04 to the LoRA-disabled model) */
    cg_rl_trainer_config tc = cg_rl_trainer_config_default(CG_RL_GRPO);
    tc.prompts_per_step = 8, tc.group_size = 8;
    tc.sampling.temperature = 1.0f, tc.sampling.max_new_tokens = 8;
    tc.opt = cg_optimizer_config_default(CG_OPT_LION);
    tc.opt.lr = 1e-4f, tc.opt.grad_clip = 1.0f;
    tc.seed = 7;
    cg_reward rewards[1] = {{my_reward, NULL, 1.0f}};
    cg_rl_trainer *trainer = NULL;
    if (cg_rl_trainer_create(model, NULL, tok, tasks, rewards, 1, &tc, &trainer) != CG_OK)
        return fail("creating the trainer");

    for (int64_t step = 0; step < steps; step++) {
        cg_rl_step_stats st;
        if (cg_rl_trainer_step(trainer, &st) != CG_OK) return fail("training");
        printf("step %3lld  reward %.3f  accuracy %.3f  kl %.4f  entropy %.3f  len %.2f  %.0f rollout tok/s\n",
               (long long)step, st.reward, st.accuracy, st.kl, st.entropy, st.response_len, st.rollout_tokens_per_s);
    }

    /* 6. held-out accuracy, and the adapter saved in PEFT format */
    double acc = 0;
    cg_reward exact[1] = {{cg_reward_numeric, NULL, 1.0f}};
    if (cg_rl_evaluate(model, tok, tasks, 100, tc.sampling.max_new_tokens, exact, 1, 1.0f, &acc) != CG_OK)
        return fail("evaluating");
    printf("held-out accuracy: %.1f%%\n", 100 * acc);
    if (cg_lora_save(model, &lora, "grpo_adapter") != CG_OK) return fail("saving the adapter");
    printf("adapter saved to grpo_adapter/\n");

    cg_rl_trainer_free(trainer);
    cg_task_set_free(tasks);
    cg_tokenizer_free(tok);
    cg_model_free(model);
    cg_shutdown();
    return 0;
}
