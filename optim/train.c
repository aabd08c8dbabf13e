/* The training step: micro-batches with gradient accumulation, guards, the optimizer update, evaluation
 * (the contract is in optim/train.h). */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "autograd/autograd.h"
#include "core/context.h"
#include "optim/train_internal.h"
#ifdef CG_HAVE_CUDA
#include "cuda/meminfo.h"
#endif

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

cg_train_config cg_train_config_default(void) {
    cg_train_config c;
    memset(&c, 0, sizeof c);
    c.batch = 4;
    c.seq_len = 64;
    c.world_size = 1;
    c.optim = cg_optimizer_config_default(CG_OPT_ADAMW);
    c.schedule.kind = CG_LR_CONSTANT;
    c.schedule.lr = 3e-4f;
    c.outlier_window = CG_OUTLIER_DEFAULT_WINDOW;
    return c;
}

double cg_outlier_update(cg_outlier_window *w, double x) {
    double z = NAN;
    if (w->count == w->window) {
        double sum = 0.0, sumsq = 0.0;
        for (int i = 0; i < w->window; i++)
            sum += w->values[i];
        double mean = sum / w->window;
        for (int i = 0; i < w->window; i++)
            sumsq += (w->values[i] - mean) * (w->values[i] - mean);
        double sd = sqrt(sumsq / w->window);
        z = sd > 0.0 ? (x - mean) / sd : 0.0;
    }
    if (isfinite(x)) {
        w->values[w->next] = x;
        w->next = (w->next + 1) % w->window;
        if (w->count < w->window) w->count++;
    }
    return z;
}

double cg_train_flops_per_token(const cg_model *m, int64_t seq_len) {
    if (!m) return 0.0;
    double n = (double)cg_model_num_elements(m);
    return 6.0 * n + 6.0 * (double)m->cfg.n_layer * (double)m->cfg.d_model * (double)seq_len;
}

/* A GPU model: the working copies go to the optimizer, and the device buffers every step reuses (the
 * targets and the loss accumulator) are made once here. Nothing to do on the CPU. */
cg_status cg_optimizer_bind_working_copies(cg_optimizer *opt, const cg_model *m) {
    if (!opt || !m) return cg_set_error(CG_ERR_INVALID_ARG, "bind working copies: NULL optimizer or model");
    for (int i = 0; i < cg_optimizer_num_params(opt); i++) {
        cg_tensor *copy = cg_model_working_copy(m, cg_optimizer_param(opt, i));
        if (!copy) continue;
        cg_status s = cg_optimizer_set_working_copy(opt, i, copy);
        if (s != CG_OK) return s;
    }
    return CG_OK;
}

static cg_status gpu_setup(cg_trainer *tr) {
    cg_model *m = tr->model;
    if (m->device.type != CG_DEVICE_CUDA) return CG_OK;
    cg_status s = cg_optimizer_bind_working_copies(tr->opt, m);
    if (s != CG_OK) return s;
    int64_t shape[2] = {tr->cfg.batch, tr->cfg.seq_len};
    tr->dev_arena = cg_arena_create("trainer", m->device, sizeof(int32_t) * (size_t)(shape[0] * shape[1]) + 4096);
    if (!tr->dev_arena) return cg_last_status();
    tr->dev_targets = cg_tensor_empty(tr->dev_arena, CG_I32, 2, shape);
    tr->loss_sum = tr->dev_targets ? cg_tensor_zeros(tr->dev_arena, CG_F32, 0, NULL) : NULL;
    return tr->loss_sum ? CG_OK : cg_last_status();
}

cg_status cg_trainer_create(cg_model *m, cg_data_loader *data, const cg_train_config *cfg, cg_trainer **out) {
    if (!out) return cg_set_error(CG_ERR_INVALID_ARG, "trainer: NULL output");
    *out = NULL;
    if (!m || !data || !cfg) return cg_set_error(CG_ERR_INVALID_ARG, "trainer: NULL model, data or config");
    if (m->device.type != CG_DEVICE_CPU && m->device.type != CG_DEVICE_CUDA)
        return cg_set_error(CG_ERR_UNSUPPORTED, "trainer: the model is on an unknown device type %d",
                            (int)m->device.type);
    if (cfg->batch < 1 || cfg->seq_len < 1)
        return cg_set_error(CG_ERR_INVALID_ARG, "trainer: batch %lld and seq_len %lld must be >= 1",
                            (long long)cfg->batch, (long long)cfg->seq_len);
    if (cfg->seq_len > m->cfg.max_seq_len)
        return cg_set_error(CG_ERR_INVALID_ARG, "trainer: seq_len %lld exceeds the model's max_seq_len %lld",
                            (long long)cfg->seq_len, (long long)m->cfg.max_seq_len);
    int world = cfg->comm ? cg_comm_size(cfg->comm) : 1;
    if (cfg->world_size != world)
        return cg_set_error(CG_ERR_INVALID_ARG, "trainer: world_size %d does not match the communicator's %d ranks",
                            cfg->world_size, world);
    int64_t micro = cfg->batch * cfg->seq_len * cfg->world_size;
    int64_t total = cfg->total_batch ? cfg->total_batch : micro;
    if (total < micro || total % micro != 0)
        return cg_set_error(
            CG_ERR_INVALID_ARG,
            "trainer: total batch %lld tokens must be a multiple of batch x seq x world = %lld x %lld x %d "
            "= %lld",
            (long long)total, (long long)cfg->batch, (long long)cfg->seq_len, cfg->world_size, (long long)micro);
    if (total / micro > 1 << 20)
        return cg_set_error(CG_ERR_INVALID_ARG, "trainer: %lld micro-batches per step is too many",
                            (long long)(total / micro));
    if (cfg->outlier_window < 0 || !(cfg->skip_loss_z >= 0.0f) || !(cfg->skip_grad_z >= 0.0f))
        return cg_set_error(CG_ERR_INVALID_ARG, "trainer: outlier window %d and thresholds (%g, %g) must be >= 0",
                            cfg->outlier_window, cfg->skip_loss_z, cfg->skip_grad_z);
    cg_status s = cg_lr_schedule_validate(&cfg->schedule);
    if (s != CG_OK) return cg_error_context("trainer: ");
    if (cfg->lora && !cg_lora_attached(m))
        return cg_set_error(CG_ERR_INVALID_ARG, "trainer: a LoRA config was given but the model has no adapters");

    cg_trainer *tr = calloc(1, sizeof *tr);
    if (!tr) return cg_set_error(CG_ERR_OOM, "trainer: out of memory");
    tr->model = m;
    tr->data = data;
    tr->cfg = *cfg;
    tr->cfg.total_batch = total;
    tr->accum = (int)(total / micro);
    if (!tr->cfg.outlier_window) tr->cfg.outlier_window = CG_OUTLIER_DEFAULT_WINDOW;
    tr->flops_per_token = cg_train_flops_per_token(m, cfg->seq_len);
    tr->comm = cfg->comm ? cfg->comm : cg_comm_single();
    int w = tr->cfg.outlier_window;
    tr->loss_window = (cg_outlier_window){w, 0, 0, calloc((size_t)w, sizeof(double))};
    tr->grad_window = (cg_outlier_window){w, 0, 0, calloc((size_t)w, sizeof(double))};
    size_t bt = (size_t)(cfg->batch * cfg->seq_len);
    tr->inputs = malloc(sizeof(int32_t) * bt);
    tr->targets = malloc(sizeof(int32_t) * bt);
    int n = cg_model_trainable(m, NULL, 0);
    tr->params = malloc(sizeof *tr->params * (size_t)(n > 0 ? n : 1));
    if (!tr->loss_window.values || !tr->grad_window.values || !tr->inputs || !tr->targets || !tr->params) {
        cg_trainer_free(tr);
        return cg_set_error(CG_ERR_OOM, "trainer: out of memory");
    }
    tr->n_params = cg_model_trainable(m, tr->params, n);
    if (tr->n_params == 0) {
        cg_trainer_free(tr);
        return cg_set_error(CG_ERR_INVALID_ARG, "trainer: the model has no trainable parameters");
    }
    s = cg_model_alloc_grads(m);
    if (s == CG_OK && world > 1) {
        s = cg_dist_broadcast_params(tr->comm, tr->n_params, tr->params);
        if (s == CG_OK) s = cg_grad_sync_create(tr->comm, tr->n_params, tr->params, cfg->bucket_bytes, &tr->sync);
    }
    if (s == CG_OK && cfg->zero1)
        s = cg_optimizer_create_zero1(&cfg->optim, tr->n_params, tr->params, tr->comm, &tr->opt);
    else if (s == CG_OK)
        s = cg_optimizer_create(&cfg->optim, tr->n_params, tr->params, &tr->opt);
    if (s == CG_OK) s = gpu_setup(tr);
    if (s != CG_OK) {
        cg_error_context("trainer: ");
        cg_trainer_free(tr);
        return s;
    }
    *out = tr;
    return CG_OK;
}

void cg_trainer_free(cg_trainer *tr) {
    if (!tr) return;
    cg_optimizer_free(tr->opt);
    cg_grad_sync_free(tr->sync);
    cg_arena_destroy(tr->dev_arena);
    free(tr->loss_window.values);
    free(tr->grad_window.values);
    free(tr->inputs);
    free(tr->targets);
    free(tr->params);
    free(tr);
}

int64_t cg_trainer_step_count(const cg_trainer *tr) { return tr ? tr->step : 0; }
int64_t cg_trainer_tokens_seen(const cg_trainer *tr) { return tr ? tr->tokens_seen : 0; }
int cg_trainer_grad_accum(const cg_trainer *tr) { return tr ? tr->accum : 0; }
cg_optimizer *cg_trainer_optimizer(cg_trainer *tr) { return tr ? tr->opt : NULL; }

/* Reads the next batch and checks its ids against the vocabulary. */
static cg_status next_batch(cg_trainer *tr, cg_data_loader *d) {
    cg_status s = cg_data_next(d, tr->inputs, tr->targets);
    if (s != CG_OK) return s;
    int64_t n = tr->cfg.batch * tr->cfg.seq_len, V = tr->model->cfg.vocab_size;
    for (int64_t i = 0; i < n; i++) {
        int32_t a = tr->inputs[i], b = tr->targets[i];
        if (a < 0 || a >= V || b < 0 || b >= V)
            return cg_set_error(
                CG_ERR_INVALID_ARG,
                "trainer: token id %d in the data is outside the model's vocabulary of %lld (a tokenizer "
                "or shard made for another model?)",
                (int)(a < 0 || a >= V ? a : b), (long long)V);
    }
    return CG_OK;
}

/* Forward of the current batch: the mean loss tensor (step arena). The tokens go in as a host tensor (the
 * forward uploads them to a GPU model); on a GPU the targets are copied into the trainer's device buffer. */
static cg_tensor *batch_loss(cg_trainer *tr) {
    const int64_t shape[2] = {tr->cfg.batch, tr->cfg.seq_len};
    cg_arena *a = cg_step_arena(CG_CPU);
    cg_tensor *tok = cg_tensor_from_data(a, CG_I32, 2, shape, tr->inputs);
    cg_tensor *tgt = tok ? cg_tensor_from_data(a, CG_I32, 2, shape, tr->targets) : NULL;
    if (!tgt) return NULL;
    if (tr->dev_targets) {
        if (cg_copy(tr->dev_targets, tgt) != CG_OK) return NULL;
        tgt = tr->dev_targets;
    }
    cg_model_inputs in = {.tokens = tok};
    cg_tensor *h = cg_model_forward(tr->model, &in);
    return h ? cg_model_loss(tr->model, h, tgt) : NULL;
}

/* Memory figures of the model's device into info (and the trainer's peaks). */
static void memory_info(cg_trainer *tr, cg_train_step_info *info) {
    cg_device dev = tr->model->device;
    cg_memory_stats ms = cg_memory_get_stats(dev);
    size_t arena = cg_arena_get_stats(tr->model->arena).reserved + ms.persistent_reserved + ms.step_reserved +
                   cg_optimizer_state_bytes(tr->opt);
    if (tr->dev_arena) arena += cg_arena_get_stats(tr->dev_arena).reserved;
    if (arena > tr->mem_arena_peak) tr->mem_arena_peak = arena;
    info->mem_arena_bytes = arena;
    info->mem_arena_peak = tr->mem_arena_peak;
#ifdef CG_HAVE_CUDA
    size_t free_b = 0, total_b = 0;
    if (dev.type == CG_DEVICE_CUDA && cg_cuda_rt_mem_info(dev.index, &free_b, &total_b) == CG_OK) {
        info->mem_device_used = total_b - free_b;
        if (info->mem_device_used > tr->mem_device_peak) tr->mem_device_peak = info->mem_device_used;
    }
#endif
    info->mem_device_peak = tr->mem_device_peak;
}

cg_status cg_trainer_step(cg_trainer *tr, cg_train_step_info *info) {
    cg_train_step_info local;
    if (!info) info = &local;
    memset(info, 0, sizeof *info);
    if (!tr) return cg_set_error(CG_ERR_INVALID_ARG, "trainer step: NULL trainer");
    double t0 = now_s();
    info->step = tr->step;
    cg_optimizer_zero_grad(tr->opt);
    bool gpu = tr->loss_sum != NULL;
    if (gpu && cg_device_memset_zero(tr->loss_sum->device, cg_data(tr->loss_sum), sizeof(float)) != CG_OK)
        return cg_error_context("trainer step %lld: ", (long long)tr->step);
    double loss_sum = 0.0;
    for (int k = 0; k < tr->accum; k++) {
        cg_status s = next_batch(tr, tr->data);
        if (s != CG_OK) return s;
        cg_tensor *loss = batch_loss(tr);
        if (!loss) {
            cg_status st = cg_error_context("trainer step %lld: ", (long long)tr->step);
            cg_step_end();
            return st;
        }
        /* on a GPU the losses add up on the device (queued: no wait); the CPU reads each one */
        if (gpu)
            s = cg_binary_into(CG_OP_ADD, tr->loss_sum, tr->loss_sum, loss);
        else
            loss_sum += cg_get_flat(loss, 0);
        cg_tensor *scaled = tr->accum > 1 ? cg_scale(loss, 1.0f / (float)tr->accum) : loss;
        /* Data parallel: the gradients are reduced during the last micro-batch's backward only. */
        if (s == CG_OK && tr->sync) s = cg_grad_sync_begin(tr->sync, k == tr->accum - 1);
        if (s == CG_OK) s = scaled ? cg_backward(scaled) : cg_last_status();
        if (tr->sync) {
            cg_status f = cg_grad_sync_finish(tr->sync);
            if (s == CG_OK) s = f;
        }
        cg_step_end();
        if (s != CG_OK) return cg_error_context("trainer step %lld: backward: ", (long long)tr->step);
    }
    if (gpu) { /* the one read of the step's loss */
        float sum = 0.0f;
        cg_status s = cg_device_memcpy(CG_CPU, &sum, tr->loss_sum->device, cg_data(tr->loss_sum), sizeof sum);
        if (s != CG_OK) return cg_error_context("trainer step %lld: reading the loss: ", (long long)tr->step);
        loss_sum = sum;
    }
    double loss = loss_sum / tr->accum;
    if (cg_comm_size(tr->comm) > 1) { /* the mean over ranks: every rank then decides the same */
        cg_status s = cg_comm_allreduce_f64(tr->comm, &loss, 1, CG_COMM_AVG);
        if (s != CG_OK) return cg_error_context("trainer step %lld: ", (long long)tr->step);
    }
    double lr = cg_lr_schedule(&tr->cfg.schedule, tr->step);
    info->loss = loss;
    info->lr = lr;
    info->loss_z = cg_outlier_update(&tr->loss_window, loss);
    /* The skip decisions known before the gradients are looked at. The gradient outlier guard needs the
     * norm first (a separate scan); otherwise the update's own scan gives it and skips non-finite
     * gradients itself (the same decision as a scan beforehand, one device read fewer). */
    const char *reason = NULL;
    if (!isfinite(loss))
        reason = "nonfinite";
    else if (tr->cfg.skip_loss_z > 0.0f && info->loss_z > tr->cfg.skip_loss_z)
        reason = "loss outlier";
    double norm = NAN;
    int64_t nonfinite = 0;
    bool scanned = reason || tr->cfg.skip_grad_z > 0.0f;
    if (scanned) {
        cg_status s = cg_optimizer_grad_norm(tr->opt, &norm, &nonfinite);
        if (s != CG_OK) return s;
        if (nonfinite) norm = NAN;
    }
    if (!reason && nonfinite) reason = "nonfinite";
    info->grad_z = NAN;
    if (scanned) info->grad_z = cg_outlier_update(&tr->grad_window, norm);
    if (!reason && tr->cfg.skip_grad_z > 0.0f && info->grad_z > tr->cfg.skip_grad_z) reason = "grad outlier";
    if (!reason) {
        cg_optim_step_info oi;
        cg_status s = cg_optimizer_step(tr->opt, (float)lr, &oi);
        if (s != CG_OK) return s;
        if (oi.skipped) reason = "nonfinite";
        if (!scanned) {
            norm = oi.skipped ? NAN : oi.grad_norm;
            info->grad_z = cg_outlier_update(&tr->grad_window, norm);
        }
    }
    info->grad_norm = norm;
    info->skip_reason = reason;
    info->skipped = reason != NULL;
    cg_optimizer_zero_grad(tr->opt);
    tr->step++;
    tr->tokens_seen += tr->cfg.total_batch;
    info->tokens = tr->cfg.total_batch;
    info->seconds = now_s() - t0;
    info->tokens_per_s = info->seconds > 0 ? (double)info->tokens / info->seconds : 0.0;
    info->mfu = -1.0; /* CPU: no peak defined */
    if (tr->model->device.type == CG_DEVICE_CUDA) {
        bool bf16 = cg_model_compute_dtype(tr->model) == CG_BF16;
        info->peak_flops = bf16 ? CG_TRAIN_PEAK_FLOPS_H100_BF16 : CG_TRAIN_PEAK_FLOPS_H100_TF32;
        info->peak_name = bf16 ? "H100/H200 bf16 dense" : "H100/H200 TF32 dense";
        info->mfu = tr->flops_per_token * info->tokens_per_s / info->peak_flops;
    }
    memory_info(tr, info);
    info->buckets = cg_grad_sync_num_buckets(tr->sync);
    info->buckets_overlapped = cg_grad_sync_overlapped(tr->sync);
    return CG_OK;
}

cg_status cg_trainer_evaluate(cg_trainer *tr, cg_data_loader *val, int64_t max_batches, double *loss) {
    if (!tr || !val || !loss || max_batches < 1)
        return cg_set_error(CG_ERR_INVALID_ARG, "trainer evaluate: NULL argument or max_batches %lld < 1",
                            (long long)max_batches);
    int64_t n = cg_data_samples_per_epoch(val);
    if (n > max_batches) n = max_batches;
    cg_data_reset(val);
    cg_no_grad_enter();
    double sum = 0.0;
    cg_status s = CG_OK;
    for (int64_t i = 0; i < n && s == CG_OK; i++) {
        s = next_batch(tr, val);
        if (s != CG_OK) break;
        cg_tensor *l = batch_loss(tr);
        float v = 0.0f; /* the loss is a packed f32 scalar, on the host or the model's GPU */
        if (l) s = cg_device_memcpy(CG_CPU, &v, l->device, cg_data(l), sizeof v);
        if (l && s == CG_OK)
            sum += v;
        else
            s = cg_error_context("trainer evaluate: ");
        cg_step_end();
    }
    cg_no_grad_exit();
    cg_data_reset(val);
    if (s != CG_OK) return s;
    *loss = sum / (double)n;
    if (cg_comm_size(tr->comm) > 1) return cg_comm_allreduce_f64(tr->comm, loss, 1, CG_COMM_AVG);
    return CG_OK;
}
