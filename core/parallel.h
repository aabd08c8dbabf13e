/* OpenMP in kernel files: a pragma macro that disappears when cgrad is built without OpenMP. */
#ifndef CG_PARALLEL_H
#define CG_PARALLEL_H

#ifdef CG_HAVE_OPENMP
#define CG_PRAGMA(x) _Pragma(#x)
/* `CG_OMP_FOR_IF(n > 32768) for (...)`: a static-scheduled parallel loop when cond holds. */
#define CG_OMP_FOR_IF(cond) CG_PRAGMA(omp parallel for schedule(static) if (cond))
#else
#define CG_OMP_FOR_IF(cond)
#endif

#endif
