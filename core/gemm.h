/* Single-precision GEMM on the CPU: cache-blocked (packed panels of A and B sized for L1/L2/L3), a
 * register-blocked 6x16 micro-kernel (AVX2+FMA intrinsics, or a portable C kernel picked at run time
 * when the CPU lacks AVX2; CG_GEMM_KERNEL=generic forces it), parallel over OpenMP threads (cg_set_num_threads). */
#ifndef CG_GEMM_H
#define CG_GEMM_H

#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Row-major C[M,N] = alpha * op(A) op(B) + beta * C.
 * op(A) is [M,K]: A is stored [M,K] with row stride lda, or [K,M] when trans_a.
 * op(B) is [K,N]: B is stored [K,N] with row stride ldb, or [N,K] when trans_b.
 * beta == 0 overwrites C without reading it (NaN in C does not leak through).
 * M, N or K may be 0. Arguments are trusted: callers (cg_matmul_into) check them. */
void cg_sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
              int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc);

/* The naive triple loop (double accumulation): the reference the tests and benchmarks compare against. */
void cg_sgemm_reference(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                        const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                        int64_t ldc);

#ifdef __cplusplus
}
#endif
#endif
