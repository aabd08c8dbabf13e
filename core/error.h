/* Errors: every fallible library function returns a cg_status (or NULL) and leaves a message in a
 * thread-local buffer read by cg_last_error(). The library never prints and never aborts on user input. */
#ifndef CG_ERROR_H
#define CG_ERROR_H

#ifdef __cplusplus
extern "C" {
#endif

typedef enum cg_status {
    CG_OK = 0,
    CG_ERR_INVALID_ARG, /* a bad argument: NULL, out of range, inconsistent */
    CG_ERR_SHAPE,       /* shapes that do not fit the op */
    CG_ERR_DTYPE,       /* a dtype the op does not take */
    CG_ERR_DEVICE,      /* tensors on different devices, or a device that does not exist */
    CG_ERR_OOM,         /* host or device allocation failed */
    CG_ERR_IO,          /* open/read/write/rename failed */
    CG_ERR_FORMAT,      /* a file or text that does not follow its format */
    CG_ERR_UNSUPPORTED, /* a feature left out of this build, or not implemented for this case */
    CG_ERR_CUDA,        /* an error reported by the CUDA runtime or a CUDA library */
    CG_ERR_INTERNAL,    /* a broken invariant inside cgrad: a bug */
    CG_ERR_COMM         /* a collective failed or timed out (a rank died or hangs) */
} cg_status;

/* The message of the last error on this thread ("" if none). */
const char *cg_last_error(void);
/* The status of the last error on this thread (CG_OK if none). */
cg_status cg_last_status(void);
/* A short name for a status: "shape error", "out of memory", ... */
const char *cg_status_name(cg_status s);
/* Record an error (printf-style message) and return s, so callers can write
 * `return cg_set_error(CG_ERR_SHAPE, "matmul: ...", ...)`. */
cg_status cg_set_error(cg_status s, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* Prefix the current message with context ("loading foo.safetensors: " + old message). Returns the
 * current status. */
cg_status cg_error_context(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;
void cg_clear_error(void);

#ifdef __cplusplus
}
#endif
#endif
