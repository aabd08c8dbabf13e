/* Data parallelism over MPI on the CPU: the collectives with 2 ranks against hand-computed values, the
 * gradient-ready hook, a 2-rank training run (batch B per rank) against a 1-rank run with batch 2B (with and
 * without ZeRO-1 and gradient accumulation, and a ZeRO-1 checkpoint resumed by one rank), an RL step (GRPO,
 * DAPO's token-mean, DisCO) over 2 ranks against the 1-rank step, and a rank that
 * hangs or dies ending the job within the timeout.
 *
 * The 2-rank parts run this same binary under `mpirun -np 2` with "--worker <what> ..." (see main); the
 * cmocka side compares what the workers wrote. They skip when the build has no MPI (the sanitizer build)
 * or mpirun is missing. */
#include "test_util.h"

#include <ftw.h>
#include <signal.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/affinity.h"
#include "core/comm.h"
#include "optim/dist.h"
#include "optim/train.h"

static const char *self_path;
static char tmpdir[64];

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}

static const char *tmp_path(const char *name) {
    static char p[8][256];
    static int k;
    k = (k + 1) % 8;
    snprintf(p[k], sizeof p[k], "%s/%s", tmpdir, name);
    return p[k];
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ------------------------------------------------------------------ shared by workers and tests */

#define TRAIN_B 2
#define TRAIN_T 16
#define TRAIN_STEPS 4

typedef struct train_run {
    cg_model *m;
    cg_tokenizer *tok;
    cg_data_loader *data;
    cg_trainer *tr;
} train_run;

/* A tiny GPT-2 on a text file: B rows per rank of `world`, accum micro-batches per step, AdamW. */
static cg_status train_open(train_run *r, const char *text, cg_comm *comm, int64_t batch, int accum, bool zero1) {
    memset(r, 0, sizeof *r);
    int world = cg_comm_size(comm);
    cg_model_config mc;
    cg_status s = cg_model_config_preset("gpt2:tiny", &mc);
    if (s == CG_OK) s = cg_model_create(&mc, CG_CPU, 7, &r->m);
    /* Rank 1's model starts elsewhere: the broadcast from rank 0 must fix that. */
    if (s == CG_OK && cg_comm_rank(comm) != 0) {
        cg_model_free(r->m);
        s = cg_model_create(&mc, CG_CPU, 99, &r->m);
    }
    if (s == CG_OK) s = cg_tokenizer_char_create(CG_CHAR_ALPHABET_DEFAULT, &r->tok);
    cg_data_config dc = {.path = text, .tokenizer = r->tok, .batch = batch, .seq_len = TRAIN_T,
                         .rank = cg_comm_rank(comm), .world_size = world};
    if (s == CG_OK) s = cg_data_open(&dc, &r->data);
    cg_train_config tc = cg_train_config_default();
    tc.batch = batch;
    tc.seq_len = TRAIN_T;
    tc.total_batch = batch * TRAIN_T * world * accum;
    tc.world_size = world;
    tc.comm = comm;
    tc.zero1 = zero1;
    tc.bucket_bytes = 20000; /* several buckets even for the tiny model */
    tc.optim = cg_optimizer_config_default(CG_OPT_ADAMW);
    tc.optim.grad_clip = 1.0f;
    tc.schedule = (cg_lr_schedule_config){.kind = CG_LR_CONSTANT, .lr = 3e-3f};
    if (s == CG_OK) s = cg_trainer_create(r->m, r->data, &tc, &r->tr);
    return s;
}

static void train_close(train_run *r) {
    cg_trainer_free(r->tr);
    cg_data_close(r->data);
    cg_tokenizer_free(r->tok);
    cg_model_free(r->m);
}

/* Every trainable parameter, end to end, as floats (malloc'd). */
static float *params_flat(cg_model *m, int64_t *n) {
    cg_tensor *ps[512];
    int np = cg_model_trainable(m, ps, 512);
    int64_t total = 0;
    for (int i = 0; i < np; i++) total += cg_numel(ps[i]);
    float *v = malloc(sizeof(float) * (size_t)total);
    int64_t k = 0;
    for (int i = 0; i < np; i++) {
        memcpy(v + k, cg_data(ps[i]), cg_nbytes(ps[i]));
        k += cg_numel(ps[i]);
    }
    *n = total;
    return v;
}

static void write_floats(const char *path, const float *v, int64_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return;
    fwrite(v, sizeof(float), (size_t)n, f);
    fclose(f);
}

static float *read_floats(const char *path, int64_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long bytes = ftell(f);
    fseek(f, 0, SEEK_SET);
    float *v = malloc((size_t)bytes + 4);
    *n = (int64_t)(fread(v, 1, (size_t)bytes, f) / sizeof(float));
    fclose(f);
    return v;
}

/* ------------------------------------------------------------------ workers (under mpirun) */

#define WORKER_CHECK(cond, ...)                                                                          \
    do {                                                                                                 \
        if (!(cond)) {                                                                                   \
            fprintf(stderr, "worker rank %d: check failed at line %d: ", cg_comm_rank(comm), __LINE__);  \
            fprintf(stderr, __VA_ARGS__);                                                                \
            fprintf(stderr, " [%s]\n", cg_last_error());                                                \
            cg_comm_abort(comm, 2);                                                                      \
        }                                                                                                \
    } while (0)

static int worker_collectives(cg_comm *comm) {
    int r = cg_comm_rank(comm), w = cg_comm_size(comm);
    WORKER_CHECK(w == 2, "expected 2 ranks, got %d", w);
    WORKER_CHECK(cg_comm_get_backend(comm) == CG_COMM_MPI, "backend %s", cg_comm_backend_name(cg_comm_get_backend(comm)));
    float a[5];
    for (int i = 0; i < 5; i++) a[i] = (float)(10 * r + i); /* rank 0: 0..4, rank 1: 10..14 */
    WORKER_CHECK(cg_comm_allreduce(comm, CG_CPU, a, 5, CG_F32, CG_COMM_SUM) == CG_OK, "allreduce sum");
    for (int i = 0; i < 5; i++) WORKER_CHECK(a[i] == (float)(10 + 2 * i), "sum[%d] = %g", i, a[i]);
    for (int i = 0; i < 5; i++) a[i] = (float)(10 * r + i);
    WORKER_CHECK(cg_comm_allreduce(comm, CG_CPU, a, 5, CG_F32, CG_COMM_AVG) == CG_OK, "allreduce avg");
    for (int i = 0; i < 5; i++) WORKER_CHECK(a[i] == (float)(5 + i), "avg[%d] = %g", i, a[i]);
    /* bf16: 1.5 + 2.25 (rank 0, 1) = 3.75 exactly; avg 1.875 */
    uint16_t h[3];
    for (int i = 0; i < 3; i++) h[i] = cg_f32_to_bf16(r == 0 ? 1.5f : 2.25f);
    WORKER_CHECK(cg_comm_allreduce(comm, CG_CPU, h, 3, CG_BF16, CG_COMM_AVG) == CG_OK, "allreduce bf16");
    for (int i = 0; i < 3; i++) WORKER_CHECK(cg_bf16_to_f32(h[i]) == 1.875f, "bf16 avg %g", cg_bf16_to_f32(h[i]));
    /* reduce-scatter: send[4] = rank*100 + i; rank r gets sum over ranks of send[2r..2r+1] */
    float send[4], recv[2];
    for (int i = 0; i < 4; i++) send[i] = (float)(100 * r + i);
    WORKER_CHECK(cg_comm_reduce_scatter(comm, CG_CPU, send, recv, 2, CG_F32, CG_COMM_SUM) == CG_OK, "reduce-scatter");
    for (int i = 0; i < 2; i++) WORKER_CHECK(recv[i] == (float)(100 + 2 * (2 * r + i)), "rs[%d] = %g", i, recv[i]);
    /* all-gather, out of place and in place */
    float mine[2] = {(float)r, (float)(r + 0.5)}, all[4];
    WORKER_CHECK(cg_comm_allgather(comm, CG_CPU, mine, all, 2, CG_F32) == CG_OK, "allgather");
    WORKER_CHECK(all[0] == 0 && all[1] == 0.5f && all[2] == 1 && all[3] == 1.5f, "allgather %g %g %g %g", all[0],
                 all[1], all[2], all[3]);
    float inplace[4] = {-1, -1, -1, -1};
    inplace[2 * r] = (float)(7 * r), inplace[2 * r + 1] = (float)(7 * r + 1);
    WORKER_CHECK(cg_comm_allgather(comm, CG_CPU, inplace + 2 * r, inplace, 2, CG_F32) == CG_OK, "allgather in place");
    WORKER_CHECK(inplace[0] == 0 && inplace[1] == 1 && inplace[2] == 7 && inplace[3] == 8, "allgather in place");
    /* broadcast from rank 1, barrier, doubles, non-blocking */
    float b[2] = {(float)r, (float)r};
    WORKER_CHECK(cg_comm_broadcast(comm, CG_CPU, b, 2, CG_F32, 1) == CG_OK && b[0] == 1 && b[1] == 1, "broadcast");
    WORKER_CHECK(cg_comm_barrier(comm) == CG_OK, "barrier");
    double d[2] = {0.1 * (r + 1), 1.0};
    WORKER_CHECK(cg_comm_allreduce_f64(comm, d, 2, CG_COMM_SUM) == CG_OK && fabs(d[0] - 0.3) < 1e-15 && d[1] == 2.0,
                 "f64 sum %g %g", d[0], d[1]);
    float nb[3] = {(float)r, 2, 3};
    cg_comm_request req;
    WORKER_CHECK(cg_comm_iallreduce(comm, CG_CPU, nb, 3, CG_F32, CG_COMM_AVG, &req) == CG_OK, "iallreduce");
    cg_comm_progress(comm, &req);
    WORKER_CHECK(cg_comm_wait(comm, &req) == CG_OK && nb[0] == 0.5f && nb[1] == 2 && nb[2] == 3, "iallreduce %g", nb[0]);
    /* bad input is an error, not a crash */
    WORKER_CHECK(cg_comm_allreduce(comm, CG_CPU, a, 5, CG_I32, CG_COMM_SUM) == CG_ERR_DTYPE, "i32 refused");
    WORKER_CHECK(cg_comm_broadcast(comm, CG_CPU, b, 2, CG_F32, 5) == CG_ERR_INVALID_ARG, "root 5 refused");
    return 0;
}

/* train TEXT OUT ZERO ACCUM [SAVE_DIR [RESUME_STEPS]]: TRAIN_STEPS steps with B per rank, then a checkpoint in
 * SAVE_DIR; or, with RESUME_STEPS, resume from SAVE_DIR and take that many steps. Each rank writes OUT.<rank>. */
static int worker_train(cg_comm *comm, int argc, char **argv) {
    WORKER_CHECK(argc >= 4, "train: arguments");
    const char *text = argv[0], *out = argv[1];
    bool zero1 = atoi(argv[2]) != 0;
    int accum = atoi(argv[3]);
    train_run run;
    WORKER_CHECK(train_open(&run, text, comm, TRAIN_B, accum, zero1) == CG_OK, "train_open");
    WORKER_CHECK(cg_optimizer_is_sharded(cg_trainer_optimizer(run.tr)) == zero1, "sharded");
    int steps = TRAIN_STEPS;
    if (argc >= 6) { /* resume from SAVE_DIR and take that many steps more */
        bool resumed = false;
        WORKER_CHECK(cg_trainer_resume(run.tr, argv[4], &resumed, NULL, 0) == CG_OK && resumed, "resume");
        steps = atoi(argv[5]);
    }
    for (int i = 0; i < steps; i++) {
        cg_train_step_info info;
        WORKER_CHECK(cg_trainer_step(run.tr, &info) == CG_OK, "step %d", i);
        WORKER_CHECK(!info.skipped, "step %d skipped", i);
        /* the reduction overlaps backward: most buckets start before backward ends */
        WORKER_CHECK(info.buckets >= 3 && info.buckets_overlapped >= info.buckets - 1, "buckets %d, overlapped %d",
                     info.buckets, info.buckets_overlapped);
        if (i == 0 && cg_comm_rank(comm) == 0)
            printf("%d gradient buckets, %d started during backward\n", info.buckets, info.buckets_overlapped);
    }
    if (argc == 5) WORKER_CHECK(cg_trainer_save(run.tr, argv[4], 0, NULL, 0) == CG_OK, "save");
    int64_t n;
    float *v = params_flat(run.m, &n);
    char path[512];
    snprintf(path, sizeof path, "%s.%d", out, cg_comm_rank(comm));
    write_floats(path, v, n);
    free(v);
    train_close(&run);
    return 0;
}

/* fault hang|die TIMEOUT: rank 1 stops answering (sleeps or kills itself) while rank 0 all-reduces. */
static int worker_fault(cg_comm *comm, int argc, char **argv) {
    WORKER_CHECK(argc >= 2, "fault: arguments");
    WORKER_CHECK(cg_comm_set_timeout(comm, atof(argv[1])) == CG_OK, "timeout");
    float x[4] = {1, 2, 3, 4};
    WORKER_CHECK(cg_comm_allreduce(comm, CG_CPU, x, 4, CG_F32, CG_COMM_SUM) == CG_OK, "first all-reduce");
    if (cg_comm_rank(comm) == 1) {
        if (strcmp(argv[0], "die") == 0) raise(SIGKILL);
        sleep(120); /* hangs: never joins the next collective */
    }
    if (cg_comm_allreduce(comm, CG_CPU, x, 4, CG_F32, CG_COMM_SUM) != CG_OK) {
        fprintf(stderr, "cgrad: %s\n", cg_last_error());
        cg_comm_abort(comm, 3);
    }
    return 0;
}

/* 1 when the response's first byte is even: a binary reward with variance even for an untrained policy. */
static float even_first_byte(const char *prompt, const char *response, size_t len, const char *answer, void *user) {
    (void)prompt, (void)answer, (void)user;
    return len > 0 && ((unsigned char)response[0] % 2 == 0) ? 1.0f : 0.0f;
}

#define RL_STEPS 2

/* RL_STEPS steps of algo with P = 4 prompts (over all ranks), G = 4; the policy's parameters (malloc'd). */
static cg_status rl_run(cg_comm *comm, cg_rl_algo algo, bool zero1, float **params, int64_t *n, double *reward,
                        double *moved) {
    cg_model_config mc;
    cg_model *m = NULL;
    cg_tokenizer *tok = NULL;
    cg_task_set *tasks = NULL;
    cg_rl_trainer *t = NULL;
    cg_task_item items[4] = {{"1+1=", "2"}, {"2+2=", "4"}, {"3+3=", "6"}, {"4+4=", "8"}};
    cg_status s = cg_model_config_preset("llama:tiny", &mc);
    if (s == CG_OK) s = cg_model_create(&mc, CG_CPU, cg_comm_rank(comm) == 0 ? 5 : 6, &m);
    if (s == CG_OK) s = cg_tokenizer_char_create(CG_CHAR_ALPHABET_DEFAULT, &tok);
    if (s == CG_OK) s = cg_task_set_from_items(items, 4, &tasks);
    cg_reward rw[1] = {{even_first_byte, NULL, 1.0f}};
    cg_rl_trainer_config c = cg_rl_trainer_config_default(algo);
    c.obj.kl_beta = 0.0f;
    c.obj.dynamic_sampling = false; /* DAPO: test its global token-mean, not the refill */
    c.prompts_per_step = 4, c.group_size = 4;
    c.sampling.max_new_tokens = 10; /* long enough for some rows to end early: unequal token counts per rank */
    if (c.obj.overlong_penalty) c.obj.overlong_cache_len = 2;
    c.obj.overlong_filter = false; /* keep the truncated rows' tokens in the loss */
    /* SGD: its update scales with the gradient, so a wrong normaliser shows (Adam's would hide a scale) */
    c.opt = cg_optimizer_config_default(CG_OPT_SGD);
    c.opt.lr = 0.5f;
    c.comm = comm;
    c.zero1 = zero1;
    if (s == CG_OK) s = cg_rl_trainer_create(m, NULL, tok, tasks, rw, 1, &c, &t);
    *reward = 0;
    float *start = s == CG_OK ? params_flat(m, n) : NULL;
    for (int i = 0; s == CG_OK && i < RL_STEPS; i++) {
        cg_rl_step_stats st;
        s = cg_rl_trainer_step(t, &st);
        *reward += st.reward / RL_STEPS;
    }
    if (s == CG_OK) *params = params_flat(m, n);
    *moved = 0;
    for (int64_t i = 0; s == CG_OK && i < *n; i++) *moved = fmax(*moved, fabs((double)(*params)[i] - start[i]));
    free(start);
    cg_rl_trainer_free(t);
    cg_task_set_free(tasks);
    cg_tokenizer_free(tok);
    cg_model_free(m);
    return s;
}

/* rl ALGO ZERO OUT: each rank writes OUT.<rank> (parameters) */
static int worker_rl(cg_comm *comm, int argc, char **argv) {
    WORKER_CHECK(argc >= 3, "rl: arguments");
    cg_rl_algo algo;
    WORKER_CHECK(cg_rl_algo_parse(argv[0], &algo) == CG_OK, "algo");
    float *v = NULL;
    int64_t n;
    double reward, moved;
    WORKER_CHECK(rl_run(comm, algo, atoi(argv[1]) != 0, &v, &n, &reward, &moved) == CG_OK, "rl run");
    char path[512];
    snprintf(path, sizeof path, "%s.%d", argv[2], cg_comm_rank(comm));
    write_floats(path, v, n);
    snprintf(path, sizeof path, "%s.reward", argv[2]);
    if (cg_comm_rank(comm) == 0) write_floats(path, &(float){(float)reward}, 1);
    free(v);
    return 0;
}

static int worker_main(int argc, char **argv) {
    cg_set_num_threads(1);
    cg_comm *comm;
    if (cg_comm_init(&(cg_comm_options){.timeout_s = 60}, &comm) != CG_OK) {
        fprintf(stderr, "worker: %s\n", cg_last_error());
        return 1;
    }
    int rc = 1;
    if (strcmp(argv[0], "collectives") == 0) rc = worker_collectives(comm);
    else if (strcmp(argv[0], "train") == 0) rc = worker_train(comm, argc - 1, argv + 1);
    else if (strcmp(argv[0], "fault") == 0) rc = worker_fault(comm, argc - 1, argv + 1);
    else if (strcmp(argv[0], "rl") == 0) rc = worker_rl(comm, argc - 1, argv + 1);
    cg_comm_free(comm);
    return rc;
}

/* ------------------------------------------------------------------ cmocka side */

static bool mpi_available(void) {
#ifndef CG_HAVE_MPI
    print_message("skipped: built without MPI\n");
    return false;
#else
    if (system("command -v mpirun >/dev/null 2>&1") != 0) {
        print_message("skipped: mpirun is not installed\n");
        return false;
    }
    return true;
#endif
}

/* Runs `mpirun -np 2 <this binary> --worker args` (as root in a container, oversubscribed on 2 cores, one
 * thread per rank); returns the exit code, the output in out. */
static int mpirun2(const char *args, char *out, size_t cap, double *seconds) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1 OMPI_MCA_btl=self,vader "
             "mpirun --oversubscribe --bind-to none -np 2 %s --worker %s 2>&1",
             self_path, args);
    double t0 = now_s();
    int status = cg_test_run_command(cmd, out, cap);
    if (seconds) *seconds = now_s() - t0;
    return status;
}

static void test_single_backend(void **state) {
    (void)state;
    cg_comm *c;
    assert_ok(cg_comm_init(NULL, &c)); /* no launcher variables here: the single backend */
    assert_int_equal(cg_comm_size(c), 1);
    assert_int_equal(cg_comm_get_backend(c), CG_COMM_SINGLE);
    float a[3] = {1, 2, 3}, g[3];
    assert_ok(cg_comm_allreduce(c, CG_CPU, a, 3, CG_F32, CG_COMM_AVG));
    assert_true(a[0] == 1 && a[2] == 3);
    assert_ok(cg_comm_allgather(c, CG_CPU, a, g, 3, CG_F32));
    assert_true(g[1] == 2);
    assert_ok(cg_comm_barrier(c));
    assert_int_equal(cg_comm_allreduce(c, CG_CPU, a, 3, CG_I64, CG_COMM_SUM), CG_ERR_DTYPE);
    assert_error_contains("f32 and bf16");
    cg_comm_free(c);
}

/* One rank of one: bound to the whole machine (a no-op), with a line saying so; bad ranks are refused. */
static void test_affinity(void **state) {
    (void)state;
    char desc[256];
    int n = -1;
    assert_ok(cg_affinity_bind(0, 1, -1, desc, sizeof desc, &n));
    print_message("affinity: %s\n", desc);
#ifdef CG_HAVE_HWLOC
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    assert_true(n >= 1 && n <= online);
    assert_non_null(strstr(desc, "cores "));
#else
    assert_int_equal(n, 0);
    assert_non_null(strstr(desc, "without hwloc"));
#endif
    assert_int_equal(cg_affinity_bind(2, 2, -1, desc, sizeof desc, &n), CG_ERR_INVALID_ARG);
    assert_error_contains("local rank 2 of 2");
}

/* Optimizer shards in one process: a full-range shard loads into a fresh optimizer (then both step alike);
 * a shard of another optimizer, one that leaves elements uncovered and a wrong size are refused. */
static void test_optimizer_shards(void **state) {
    (void)state;
    int64_t s1[2] = {3, 4}, s2[1] = {5};
    cg_tensor *p[2] = {cg_test_rand_tensor(2, s1, 1, 1, 0, true), cg_test_rand_tensor(1, s2, 2, 1, 0, true)};
    cg_tensor *q[2] = {cg_test_rand_tensor(2, s1, 1, 1, 0, true), cg_test_rand_tensor(1, s2, 2, 1, 0, true)};
    cg_optimizer_config c = cg_optimizer_config_default(CG_OPT_ADAMW);
    cg_optimizer *a, *b, *lion;
    assert_ok(cg_optimizer_create(&c, 2, p, &a));
    assert_ok(cg_optimizer_create(&c, 2, q, &b));
    for (int k = 0; k < 2; k++) {
        assert_ok(cg_alloc_grad(p[k], cg_step_arena(CG_CPU)));
        assert_ok(cg_alloc_grad(q[k], cg_step_arena(CG_CPU)));
        for (int64_t i = 0; i < cg_numel(p[k]); i++) cg_set_flat(p[k]->grad, i, 0.1 * (double)(i + k));
    }
    assert_ok(cg_optimizer_step(a, 0.01f, NULL));
    size_t n = cg_optimizer_shard_bytes(a);
    unsigned char *buf = malloc(n);
    assert_ok(cg_optimizer_save_shard(a, buf));
    const void *bufs[1] = {buf};
    assert_ok(cg_optimizer_load_shards(b, 1, bufs, &n));
    assert_int_equal(cg_optimizer_step_count(b), 1);
    for (int k = 0; k < 2; k++) { /* same weights, same gradients, same state: the same next step */
        memcpy(cg_data(q[k]), cg_data(p[k]), cg_nbytes(p[k]));
        memcpy(cg_data(q[k]->grad), cg_data(p[k]->grad), cg_nbytes(p[k]));
    }
    assert_ok(cg_optimizer_step(a, 0.01f, NULL));
    assert_ok(cg_optimizer_step(b, 0.01f, NULL));
    for (int k = 0; k < 2; k++)
        for (int64_t i = 0; i < cg_numel(p[k]); i++) assert_true(cg_get_flat(p[k], i) == cg_get_flat(q[k], i));
    c = cg_optimizer_config_default(CG_OPT_LION);
    assert_ok(cg_optimizer_create(&c, 2, q, &lion));
    assert_int_equal(cg_optimizer_load_shards(lion, 1, bufs, &n), CG_ERR_INVALID_ARG);
    assert_error_contains("another optimizer");
    /* hi = 10 of 17 elements: the rest is not covered (the size no longer matches either: patch it too) */
    unsigned char *cut = malloc(n);
    memcpy(cut, buf, n);
    cut[48] = 10;
    size_t cut_n = n - 2 * 7 * sizeof(float);
    const void *cuts[1] = {cut};
    assert_int_equal(cg_optimizer_load_shards(b, 1, cuts, &cut_n), CG_ERR_FORMAT);
    assert_error_contains("cover 10 of the 17");
    size_t bad_n = n - 4;
    assert_int_equal(cg_optimizer_load_shards(b, 1, bufs, &bad_n), CG_ERR_FORMAT);
    assert_error_contains("bytes, expected");
    free(cut);
    free(buf);
    cg_optimizer_free(a);
    cg_optimizer_free(b);
    cg_optimizer_free(lion);
}

static cg_tensor **hook_seen;
static int hook_count;
static void record_ready(cg_tensor *leaf, void *user) {
    (void)user;
    hook_seen[hook_count++] = leaf;
}

/* y = (w2 * (w1 * x)) + w1: w2 is final after the last node that uses it (the outer mul), w1 only after the
 * oldest node that uses it (the inner mul), and each leaf is reported once. */
static void test_grad_ready_hook(void **state) {
    (void)state;
    int64_t s[1] = {3};
    cg_tensor *x = cg_test_rand_tensor(1, s, 1, 1, 0, false);
    cg_tensor *w1 = cg_test_rand_tensor(1, s, 2, 1, 0, true), *w2 = cg_test_rand_tensor(1, s, 3, 1, 0, true);
    cg_tensor *seen[8];
    hook_seen = seen;
    hook_count = 0;
    cg_set_grad_ready_hook(record_ready, NULL);
    cg_tensor *y = cg_sum(cg_add(cg_mul(w2, cg_mul(w1, x)), w1), -1, false);
    assert_non_null(y);
    assert_ok(cg_backward(y));
    cg_set_grad_ready_hook(NULL, NULL);
    assert_int_equal(hook_count, 2);
    assert_ptr_equal(seen[0], w2);
    assert_ptr_equal(seen[1], w1);
    /* and the gradients are the usual ones: dy/dw1 = w2 * x + 1 */
    for (int i = 0; i < 3; i++)
        assert_close(cg_get_flat(w1->grad, i), cg_get_flat(w2, i) * cg_get_flat(x, i) + 1.0, 1e-6, 1e-7);
}

static void test_collectives_2_ranks(void **state) {
    (void)state;
    if (!mpi_available()) skip();
    char out[8192];
    int rc = mpirun2("collectives", out, sizeof out, NULL);
    if (rc != 0) print_error("%s\n", out);
    assert_int_equal(rc, 0);
}

static const char *train_text(void) {
    static const char *words[] = {"the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "and", "runs"};
    const char *path = tmp_path("dist.txt");
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    uint64_t s = 4242;
    for (int i = 0; i < 80; i++) {
        for (int w = 0; w < 6; w++) fprintf(f, "%s%s", w ? " " : "", words[(uint64_t)((cg_test_randf(&s) + 1) * 5.5f) % 11]);
        fprintf(f, ".\n");
    }
    fclose(f);
    return path;
}

/* The 1-rank reference with batch 2B (same total batch) and the 2-rank run's parameters on both ranks. */
static void check_two_ranks_equal_one(bool zero1, int accum) {
    const char *text = train_text();
    train_run ref;
    assert_ok(train_open(&ref, text, cg_comm_single(), 2 * TRAIN_B, accum, false));
    for (int i = 0; i < TRAIN_STEPS; i++) assert_ok(cg_trainer_step(ref.tr, NULL));
    int64_t n;
    float *want = params_flat(ref.m, &n);
    float *start;
    {
        train_run fresh;
        assert_ok(train_open(&fresh, text, cg_comm_single(), 2 * TRAIN_B, accum, false));
        int64_t n0;
        start = params_flat(fresh.m, &n0);
        train_close(&fresh);
    }
    train_close(&ref);

    char args[1024], out[16384];
    snprintf(args, sizeof args, "train %s %s %d %d", text, tmp_path("params"), zero1 ? 1 : 0, accum);
    int rc = mpirun2(args, out, sizeof out, NULL);
    if (rc != 0) print_error("%s\n", out);
    assert_int_equal(rc, 0);
    double maxdiff = 0, maxmove = 0;
    for (int r = 0; r < 2; r++) {
        char path[512];
        snprintf(path, sizeof path, "%s.%d", tmp_path("params"), r);
        int64_t m;
        float *got = read_floats(path, &m);
        assert_non_null(got);
        assert_int_equal(m, n);
        for (int64_t i = 0; i < n; i++) {
            maxdiff = fmax(maxdiff, fabs((double)got[i] - want[i]));
            maxmove = fmax(maxmove, fabs((double)want[i] - start[i]));
        }
        free(got);
    }
    print_message("zero1 %d, accum %d: max |2 ranks - 1 rank| = %.3g over %lld parameters (moved up to %.3g)\n",
                  zero1, accum, maxdiff, (long long)n, maxmove);
    /* fp32: the two runs sum the same per-example gradients in a different order (per rank, then across
     * ranks), so they differ by rounding only; Adam's normalised steps of 3e-3 move weights by ~1e-2. */
    assert_true(maxmove > 1e-3);
    assert_true(maxdiff < 2e-5);
    free(want);
    free(start);
}

static void test_two_ranks_equal_one(void **state) {
    (void)state;
    if (!mpi_available()) skip();
    check_two_ranks_equal_one(false, 1);
}

static void test_two_ranks_zero1_accum(void **state) {
    (void)state;
    if (!mpi_available()) skip();
    check_two_ranks_equal_one(true, 2);
}

static void test_two_ranks_accum(void **state) {
    (void)state;
    if (!mpi_available()) skip();
    check_two_ranks_equal_one(false, 2);
}

/* A ZeRO-1 checkpoint of 2 ranks (model and state by rank 0, an optimizer shard from each rank) resumed by 1
 * rank and by 2 ranks continues like the 1-rank run that never stopped. */
static void test_zero1_checkpoint_resumes_on_one_rank(void **state) {
    (void)state;
    if (!mpi_available()) skip();
    const char *text = train_text();
    char args[1024], out[16384];
    snprintf(args, sizeof args, "train %s %s 1 1 %s", text, tmp_path("ck_params"), tmp_path("ckpt"));
    int rc = mpirun2(args, out, sizeof out, NULL);
    if (rc != 0) print_error("%s\n", out);
    assert_int_equal(rc, 0);
    /* the uninterrupted 1-rank run: TRAIN_STEPS + 2 steps */
    train_run ref, res;
    assert_ok(train_open(&ref, text, cg_comm_single(), 2 * TRAIN_B, 1, false));
    for (int i = 0; i < TRAIN_STEPS + 2; i++) assert_ok(cg_trainer_step(ref.tr, NULL));
    /* 1 rank with batch 2B resumes the 2-rank checkpoint (same total batch) and takes 2 more steps */
    assert_ok(train_open(&res, text, cg_comm_single(), 2 * TRAIN_B, 1, false));
    bool resumed = false;
    assert_ok(cg_trainer_resume(res.tr, tmp_path("ckpt"), &resumed, NULL, 0));
    assert_true(resumed);
    assert_int_equal(cg_trainer_step_count(res.tr), TRAIN_STEPS);
    for (int i = 0; i < 2; i++) assert_ok(cg_trainer_step(res.tr, NULL));
    int64_t n, m;
    float *a = params_flat(ref.m, &n), *b = params_flat(res.m, &m);
    assert_int_equal(n, m);
    double maxdiff = 0;
    for (int64_t i = 0; i < n; i++) maxdiff = fmax(maxdiff, fabs((double)a[i] - b[i]));
    print_message("resumed on 1 rank: max |diff| = %.3g\n", maxdiff);
    assert_true(maxdiff < 2e-5);
    free(b);
    /* each rank wrote its shard; 2 ranks resume from them too */
    char shard[512];
    snprintf(shard, sizeof shard, "%s/ckpt_%08d/optim_shard_00001_of_00002.bin", tmp_path("ckpt"), TRAIN_STEPS);
    FILE *f = fopen(shard, "rb");
    assert_non_null(f);
    fclose(f);
    snprintf(args, sizeof args, "train %s %s 1 1 %s 2", text, tmp_path("ck2_params"), tmp_path("ckpt"));
    rc = mpirun2(args, out, sizeof out, NULL);
    if (rc != 0) print_error("%s\n", out);
    assert_int_equal(rc, 0);
    for (int r = 0; r < 2; r++) {
        char path[512];
        snprintf(path, sizeof path, "%s.%d", tmp_path("ck2_params"), r);
        b = read_floats(path, &m);
        assert_non_null(b);
        assert_int_equal(n, m);
        maxdiff = 0;
        for (int64_t i = 0; i < n; i++) maxdiff = fmax(maxdiff, fabs((double)a[i] - b[i]));
        print_message("resumed on 2 ranks (rank %d): max |diff| = %.3g\n", r, maxdiff);
        assert_true(maxdiff < 2e-5);
        free(b);
    }
    free(a);
    train_close(&ref);
    train_close(&res);
}

/* An RL step over 2 ranks (2 prompts each) against one rank with all 4 prompts. */
static void check_rl(const char *algo_name, bool zero1) {
    cg_rl_algo algo;
    assert_ok(cg_rl_algo_parse(algo_name, &algo));
    float *want = NULL;
    int64_t n;
    double reward, moved;
    assert_ok(rl_run(cg_comm_single(), algo, false, &want, &n, &reward, &moved));
    char args[512], out[16384];
    snprintf(args, sizeof args, "rl %s %d %s", algo_name, zero1 ? 1 : 0, tmp_path("rl"));
    int rc = mpirun2(args, out, sizeof out, NULL);
    if (rc != 0) print_error("%s\n", out);
    assert_int_equal(rc, 0);
    int64_t m;
    char path[512];
    snprintf(path, sizeof path, "%s.reward", tmp_path("rl"));
    float *rw = read_floats(path, &m);
    assert_non_null(rw);
    double maxdiff = 0;
    for (int r = 0; r < 2; r++) {
        snprintf(path, sizeof path, "%s.%d", tmp_path("rl"), r);
        float *got = read_floats(path, &m);
        assert_non_null(got);
        assert_int_equal(m, n);
        for (int64_t i = 0; i < n; i++) maxdiff = fmax(maxdiff, fabs((double)got[i] - want[i]));
        free(got);
    }
    print_message("%s%s: mean reward 1 rank %.4f, 2 ranks %.4f; max |2 ranks - 1 rank| = %.3g (moved %.3g)\n",
                  algo_name, zero1 ? " (ZeRO-1)" : "", reward, rw[0], maxdiff, moved);
    assert_true(moved > 1e-3);
    /* the same rollouts (same sampling streams per row) give the same rewards; the updates differ by fp32
     * rounding of the gradient sums only */
    assert_close(rw[0], reward, 1e-6, 1e-6);
    assert_true(maxdiff < 2e-5);
    free(rw);
    free(want);
}

static void test_rl_two_ranks_equal_one(void **state) {
    (void)state;
    if (!mpi_available()) skip();
    check_rl("grpo", false);
    check_rl("dapo", true);
    check_rl("disco", false);
}

/* `mpirun -np 2 cgrad train` and `cgrad rl`: each rank says what it bound, rank 0 alone prints progress and
 * writes the files; a bad --zero is a usage error. */
static void test_cli_two_ranks(void **state) {
    (void)state;
    if (!mpi_available()) skip();
    const char *bin = getenv("CGRAD_BIN") ? getenv("CGRAD_BIN") : "build/bin/cgrad";
    char cmd[4096], out[16384];
    snprintf(cmd, sizeof cmd,
             "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl=self,vader mpirun --oversubscribe "
             "--bind-to none -np 2 %s train --model gpt2:tiny --data %s --steps 2 --batch 2 --seq 16 --zero 1 "
             "--out %s --comm-timeout 60 2>&1",
             bin, train_text(), tmp_path("cli_out"));
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t len = fread(out, 1, sizeof out - 1, p);
    out[len] = '\0';
    assert_int_equal(pclose(p), 0);
    const char *want[] = {"rank 0 of 2 (mpi", "rank 1 of 2 (mpi", "x 2 ranks (ZeRO-1)", "step     2/2", "saved "};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        if (!strstr(out, want[i])) {
            print_error("'%s' missing from:\n%s\n", want[i], out);
            fail();
        }
    }
    const char *first = strstr(out, "step     1/2");
    assert_non_null(first);
    assert_null(strstr(first + 1, "step     1/2")); /* printed by rank 0 only */
    char ckpt[512];
    snprintf(ckpt, sizeof ckpt, "%s/ckpt_00000002/train_state.bin", tmp_path("cli_out"));
    FILE *f = fopen(ckpt, "rb");
    assert_non_null(f);
    fclose(f);
    snprintf(cmd, sizeof cmd,
             "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl=self,vader mpirun --oversubscribe "
             "--bind-to none -np 2 %s rl --sft-steps 5 --steps 2 --prompts 4 --group 2 --eval-items 4 --out %s 2>&1",
             bin, tmp_path("cli_rl"));
    p = popen(cmd, "r");
    assert_non_null(p);
    len = fread(out, 1, sizeof out - 1, p);
    out[len] = '\0';
    assert_int_equal(pclose(p), 0);
    if (!strstr(out, "rl step    2/2") || !strstr(out, "rank 1 of 2")) {
        print_error("cgrad rl under mpirun:\n%s\n", out);
        fail();
    }
    char args[256];
    snprintf(args, sizeof args, "train --zero 2");
    assert_int_equal(cg_test_run_cgrad(args, out, sizeof out), 2);
    assert_non_null(strstr(out, "--zero 2"));
}

static void check_fault(const char *mode) {
    char args[256], out[16384];
    double seconds;
    snprintf(args, sizeof args, "fault %s 2", mode);
    int rc = mpirun2(args, out, sizeof out, &seconds);
    print_message("rank 1 %s: job ended with exit code %d after %.1f s\n", mode, rc, seconds);
    assert_true(rc != 0);
    assert_true(seconds < 30.0); /* the rank that waits gives up after 2 s; mpirun then ends the job */
    if (strcmp(mode, "hang") == 0 && !strstr(out, "did not complete within the 2 s timeout")) {
        print_error("no timeout message in:\n%s\n", out);
        fail();
    }
}

static void test_hung_rank_ends_job(void **state) {
    (void)state;
    if (!mpi_available()) skip();
    check_fault("hang");
}

static void test_killed_rank_ends_job(void **state) {
    (void)state;
    if (!mpi_available()) skip();
    check_fault("die");
}

static int setup(void **state) {
    (void)state;
    strcpy(tmpdir, "/tmp/cg_test_dist_XXXXXX");
    cg_set_num_threads(1);
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    return nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

int main(int argc, char **argv) {
    if (argc >= 3 && strcmp(argv[1], "--worker") == 0) return worker_main(argc - 2, argv + 2);
    self_path = argv[0];
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_single_backend),
        cmocka_unit_test_teardown(test_grad_ready_hook, cg_test_teardown),
        cmocka_unit_test(test_affinity),
        cmocka_unit_test_teardown(test_optimizer_shards, cg_test_teardown),
        cmocka_unit_test(test_collectives_2_ranks),
        cmocka_unit_test_teardown(test_two_ranks_equal_one, cg_test_teardown),
        cmocka_unit_test_teardown(test_two_ranks_accum, cg_test_teardown),
        cmocka_unit_test_teardown(test_two_ranks_zero1_accum, cg_test_teardown),
        cmocka_unit_test_teardown(test_zero1_checkpoint_resumes_on_one_rank, cg_test_teardown),
        cmocka_unit_test_teardown(test_rl_two_ranks_equal_one, cg_test_teardown),
        cmocka_unit_test(test_cli_two_ranks),
        cmocka_unit_test(test_hung_rank_ends_job),
        cmocka_unit_test(test_killed_rank_ends_job),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
