#include "core/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define CG_ERROR_MSG_MAX 1024

static _Thread_local char error_msg[CG_ERROR_MSG_MAX];
static _Thread_local cg_status error_status = CG_OK;

const char *cg_last_error(void) { return error_msg; }

cg_status cg_last_status(void) { return error_status; }

const char *cg_status_name(cg_status s) {
    switch (s) {
    case CG_OK: return "ok";
    case CG_ERR_INVALID_ARG: return "invalid argument";
    case CG_ERR_SHAPE: return "shape error";
    case CG_ERR_DTYPE: return "dtype error";
    case CG_ERR_DEVICE: return "device error";
    case CG_ERR_OOM: return "out of memory";
    case CG_ERR_IO: return "i/o error";
    case CG_ERR_FORMAT: return "format error";
    case CG_ERR_UNSUPPORTED: return "unsupported";
    case CG_ERR_CUDA: return "cuda error";
    case CG_ERR_INTERNAL: return "internal error";
    case CG_ERR_COMM: return "communication error";
    }
    return "unknown status";
}

cg_status cg_set_error(cg_status s, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(error_msg, sizeof error_msg, fmt, ap);
    va_end(ap);
    error_status = s;
    return s;
}

cg_status cg_error_context(const char *fmt, ...) {
    char prefix[CG_ERROR_MSG_MAX];
    char old[CG_ERROR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, error_msg, sizeof old);
    /* prefix then the old message, truncated to the buffer */
    size_t np = strnlen(prefix, sizeof error_msg - 1);
    size_t no = strnlen(old, sizeof error_msg - 1 - np);
    memcpy(error_msg, prefix, np);
    memcpy(error_msg + np, old, no);
    error_msg[np + no] = '\0';
    return error_status;
}

void cg_clear_error(void) {
    error_msg[0] = '\0';
    error_status = CG_OK;
}
