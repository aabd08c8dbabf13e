/* The process-wide context: a persistent arena (parameters, gradients, optimizer state) and a step
 * arena (activations, the tape, views and op outputs) per device, the thread count, and memory
 * accounting. Created lazily on first use; not thread-safe (one driver thread, kernels use OpenMP). */
#ifndef CG_CONTEXT_H
#define CG_CONTEXT_H

#include <stddef.h>

#include "core/arena.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CG_MAX_CUDA_DEVICES 16

/* The persistent and step arenas of a device (created on first use; NULL with an error if the device
 * is unavailable). */
cg_arena *cg_persistent_arena(cg_device d);
cg_arena *cg_step_arena(cg_device d);

/* Where op outputs and view structs for tensors on device d go: the step arena unless overridden. */
cg_arena *cg_output_arena(cg_device d);
/* Send outputs on a's device to a (for example the persistent arena while building long-lived views);
 * returns the previous override (NULL = the step arena). Pass NULL to restore the default. */
cg_arena *cg_set_output_arena(cg_device d, cg_arena *a);

/* Ends a step: runs the registered step-end hooks (autograd clears its tape) and resets every step
 * arena. Tensors from the step arenas are invalid afterwards. */
void cg_step_end(void);
/* Hooks run by cg_step_end before the arenas reset (at most 8). */
typedef void (*cg_step_end_hook)(void *user);
cg_status cg_on_step_end(cg_step_end_hook fn, void *user);

/* Frees every context arena. The context can be used again afterwards (it is re-created lazily). */
void cg_shutdown(void);

typedef struct cg_memory_stats {
    size_t persistent_used, persistent_reserved;
    size_t step_used, step_peak, step_reserved;
    size_t peak_total; /* the largest persistent_used + step_used seen at any step end */
} cg_memory_stats;
cg_memory_stats cg_memory_get_stats(cg_device d);

/* Threads used by CPU kernels (OpenMP). n <= 0 means all available cores. Returns the count in force. */
int cg_set_num_threads(int n);
int cg_get_num_threads(void);

#ifdef __cplusplus
}
#endif
#endif
