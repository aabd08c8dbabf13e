/* Supervised fine-tuning on prompt/answer pairs: the warm-up before RL. Each example is
 * prompt + answer + <eos>; the loss is the mean next-token cross-entropy over the answer and end tokens only
 * (the prompt positions are ignored), as TRL's SFT with a completion-only collator does. */
#ifndef CG_RL_SFT_H
#define CG_RL_SFT_H

#include "models/model.h"
#include "models/tokenizer.h"
#include "optim/optim.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The mean answer-token cross-entropy of a batch, as a 0-d differentiable tensor (grad mode decides). */
cg_tensor *cg_sft_loss(cg_model *m, const cg_tokenizer *tok, const char *const *prompts, const char *const *answers,
                       int64_t n);

/* One optimizer step on a batch: loss, backward, step with learning rate lr, zero grads; *loss_out gets the
 * loss before the step. The caller ends the step (cg_step_end) when it no longer needs step tensors. */
cg_status cg_sft_step(cg_model *m, const cg_tokenizer *tok, cg_optimizer *opt, float lr, const char *const *prompts,
                      const char *const *answers, int64_t n, float *loss_out);

#ifdef __cplusplus
}
#endif
#endif
