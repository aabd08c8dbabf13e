/* cgrad info: what this build has, the devices it sees, and a quick CPU GEMM figure. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tools/commands.h"
#ifdef CG_HAVE_CUDA
#include "cuda/runtime.h"
#endif

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int cg_cmd_info(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0) {
            printf("usage: cgrad info\n  prints the build's features, the CPU threads and CUDA devices, and times "
                   "a 512^3 fp32 GEMM\n");
            return 0;
        }
        fprintf(stderr, "cgrad info: unknown flag '%s'\n", argv[i]);
        return 2;
    }
    printf("cgrad %s (%s)\n", cg_version(), cg_features());
    printf("cpu threads: %d\n", cg_get_num_threads());
#ifdef CG_HAVE_CUDA
    int rt = 0, drv = 0;
    cg_cuda_rt_versions(&rt, &drv);
    printf("cuda runtime %d.%d, driver %d.%d, %d device(s)\n", rt / 1000, (rt % 1000) / 10, drv / 1000,
           (drv % 1000) / 10, cg_cuda_device_count());
    for (int d = 0; d < cg_cuda_device_count(); d++) {
        char name[256];
        size_t mem = 0;
        int ma = 0, mi = 0;
        if (cg_cuda_rt_device_info(d, name, sizeof name, &mem, &ma, &mi) == CG_OK)
            printf("  cuda:%d %s, %.1f GiB, sm_%d%d\n", d, name, (double)mem / (1 << 30), ma, mi);
    }
#else
    printf("cuda: not built\n");
#endif
    const int64_t n = 512;
    float *a = malloc(sizeof(float) * n * n), *b = malloc(sizeof(float) * n * n), *c = malloc(sizeof(float) * n * n);
    if (!a || !b || !c) {
        fprintf(stderr, "cgrad info: out of memory\n");
        free(a), free(b), free(c);
        return 1;
    }
    for (int64_t i = 0; i < n * n; i++) a[i] = b[i] = (float)((i % 13) - 6) * 0.1f;
    cg_sgemm(false, false, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n); /* warm-up */
    int reps = 5;
    double t0 = now_s();
    for (int r = 0; r < reps; r++) cg_sgemm(false, false, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
    double dt = (now_s() - t0) / reps;
    printf("cpu sgemm 512^3: %.2f ms, %.1f GFLOP/s on %d thread(s)\n", dt * 1e3, 2.0 * n * n * n / dt * 1e-9,
           cg_get_num_threads());
    free(a), free(b), free(c);
    return 0;
}
