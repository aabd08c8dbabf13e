/* cgrad: a tensor engine, autograd and RL training runtime in C11 and CUDA. The one header to include. */
#ifndef CGRAD_H
#define CGRAD_H

#include "core/affinity.h"
#include "core/arena.h"
#include "core/comm.h"
#include "core/context.h"
#include "core/device.h"
#include "core/dtype.h"
#include "core/error.h"
#include "core/gemm.h"
#include "core/ops.h"
#include "core/rng.h"
#include "core/safetensors.h"
#include "core/tensor.h"
#include "core/tokens.h"
#include "core/version.h"

#include "autograd/autograd.h"
#include "autograd/gradcheck.h"
#include "autograd/ops.h"

#include "models/checkpoint.h"
#include "models/generate.h"
#include "models/lora.h"
#include "models/model.h"
#include "models/tokenizer.h"

#include "optim/data.h"
#include "optim/dist.h"
#include "optim/optim.h"
#include "optim/train.h"

#include "rl/advantage.h"
#include "rl/objective.h"
#include "rl/reward.h"
#include "rl/rollout.h"
#include "rl/sft.h"
#include "rl/task.h"
#include "rl/trainer.h"
#include "models/tokenizer.h"

#include "optim/data.h"
#include "optim/optim.h"
#include "optim/train.h"

#include "rl/advantage.h"
#include "rl/objective.h"
#include "rl/reward.h"
#include "rl/rollout.h"
#include "rl/sft.h"
#include "rl/task.h"
#include "rl/trainer.h"

#endif
