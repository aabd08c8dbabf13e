/* The version and the optional features compiled into this build of cgrad. */
#ifndef CG_VERSION_H
#define CG_VERSION_H

#ifdef __cplusplus
extern "C" {
#endif

/* "0.1.0" */
const char *cg_version(void);
/* The compiled-in features in a fixed order: "cpu openmp cuda cublaslt nccl mpi hwloc cjson pcre2". */
const char *cg_features(void);

#ifdef __cplusplus
}
#endif
#endif
