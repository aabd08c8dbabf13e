/* The trainer's layout, shared by optim/train.c (the step loop) and optim/train_checkpoint.c. */
#ifndef CG_TRAIN_INTERNAL_H
#define CG_TRAIN_INTERNAL_H

#include "optim/train.h"

#define CG_OUTLIER_DEFAULT_WINDOW 128

/* llm.c's OutlierDetector: a ring of the last `window` finite values. */
typedef struct cg_outlier_window {
    int window, count, next;
    double *values;
} cg_outlier_window;

struct cg_trainer {
    cg_model *model;
    cg_data_loader *data;
    cg_train_config cfg;
    cg_optimizer *opt;
    int n_params;
    cg_tensor **params; /* the trainable parameters, in cg_model_trainable order */
    int accum;
    int64_t step, tokens_seen;
    int32_t *inputs, *targets; /* [B * T] */
    cg_outlier_window loss_window, grad_window;
    double flops_per_token;
    cg_comm *comm;         /* never NULL (cg_comm_single) */
    cg_grad_sync *sync;    /* with more than one rank */
    /* a GPU model: the device buffers made at create */
    cg_arena *dev_arena;   /* NULL on the CPU */
    cg_tensor *dev_targets; /* [B, T] i32 */
    cg_tensor *loss_sum;    /* [] f32: the step's micro-batch losses added on the device */
    size_t mem_arena_peak, mem_device_peak;
};

/* z of x against the window (NaN until full), then x enters the window (if finite). */
double cg_outlier_update(cg_outlier_window *w, double x);

#endif
