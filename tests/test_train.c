/* The training runtime: data loaders (shards, text, positions, ranks), gradient accumulation, the guards,
 * a tiny model learning a text file, bit-exact resume, refused damaged state files, keep-last-K, and
 * `cgrad train` end to end through $CGRAD_BIN. Files live in a mkdtemp directory removed at the end. */
#include "test_util.h"

#include <ftw.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/json.h"
#include "optim/data.h"
#include "optim/train.h"
#include "optim/train_internal.h"

static char tmpdir[64];

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}

static int setup(void **state) {
    (void)state;
    strcpy(tmpdir, "/tmp/cg_test_train_XXXXXX");
    /* One thread: the figures do not depend on it, and the 2-core test machine runs other builds. */
    cg_set_num_threads(1);
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    return nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static const char *tmp_path(const char *name) {
    static char p[16][256]; /* a few paths may be live at once */
    static int k;
    k = (k + 1) % 16;
    snprintf(p[k], sizeof p[k], "%s/%s", tmpdir, name);
    return p[k];
}

/* A text of short sentences over a small word list (deterministic), in the character alphabet. */
static const char *write_text(const char *name, int lines) {
    static const char *words[] = {"the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "and", "runs"};
    const char *path = tmp_path(name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    uint64_t s = 12345;
    for (int i = 0; i < lines; i++) {
        for (int w = 0; w < 6; w++) {
            uint64_t r = (uint64_t)((cg_test_randf(&s) + 1.0f) * 5.5f);
            fprintf(f, "%s%s", w ? " " : "", words[r % 11]);
        }
        fprintf(f, ".\n");
    }
    fclose(f);
    return path;
}

static cg_tokenizer *char_tok(void) {
    cg_tokenizer *t;
    assert_ok(cg_tokenizer_char_create(CG_CHAR_ALPHABET_DEFAULT, &t));
    return t;
}

/* ------------------------------------------------------------------ data */

static void test_data_shards(void **state) {
    (void)state;
    /* shard 0: 41 uint16 tokens 0..40; shard 1: 30 uint32 tokens 100000 + i */
    int32_t a[41], b[30];
    for (int i = 0; i < 41; i++)
        a[i] = i;
    for (int i = 0; i < 30; i++)
        b[i] = 100000 + i;
    assert_ok(cg_token_file_write(tmp_path("shard_000.bin"), a, 41, 2));
    assert_ok(cg_token_file_write(tmp_path("shard_001.bin"), b, 30, 4));
    cg_data_config c = {.path = tmp_path("shard_*.bin"), .batch = 2, .seq_len = 4, .world_size = 1};
    cg_data_loader *d;
    assert_ok(cg_data_open(&c, &d));
    assert_int_equal(cg_data_num_shards(d), 2);
    assert_int_equal(cg_data_num_tokens(d), 71);
    /* samples: (41 - 1) / 8 = 5 and (30 - 1) / 8 = 3 */
    assert_int_equal(cg_data_samples_per_epoch(d), 8);
    assert_false(cg_data_is_text(d));
    int32_t in[8], tg[8];
    for (int s = 0; s < 5; s++) {
        assert_ok(cg_data_next(d, in, tg));
        for (int i = 0; i < 8; i++) {
            assert_int_equal(in[i], 8 * s + i);
            assert_int_equal(tg[i], 8 * s + i + 1);
        }
    }
    cg_data_position p = cg_data_get_position(d);
    assert_int_equal(p.shard, 1);
    assert_int_equal(p.sample, 0);
    for (int s = 0; s < 3; s++) {
        assert_ok(cg_data_next(d, in, tg));
        assert_int_equal(in[0], 100000 + 8 * s);
        assert_int_equal(tg[7], 100000 + 8 * s + 8);
    }
    assert_ok(cg_data_next(d, in, tg)); /* the next epoch starts over */
    assert_int_equal(in[0], 0);
    assert_ok(cg_data_set_position(d, (cg_data_position){1, 2}));
    assert_ok(cg_data_next(d, in, tg));
    assert_int_equal(in[0], 100016);
    assert_int_equal(cg_data_set_position(d, (cg_data_position){1, 3}), CG_ERR_INVALID_ARG);
    assert_error_contains("sample 3");
    assert_int_equal(cg_data_set_position(d, (cg_data_position){2, 0}), CG_ERR_INVALID_ARG);
    cg_data_close(d);

    /* rank 1 of 2 (llm.c): sample s starts at s * 2 * B * T + 1 * B * T; (41 - 1) / 16 = 2 samples */
    c.rank = 1, c.world_size = 2;
    c.path = tmp_path("shard_000.bin");
    assert_ok(cg_data_open(&c, &d));
    assert_int_equal(cg_data_samples_per_epoch(d), 2);
    assert_ok(cg_data_next(d, in, tg));
    assert_int_equal(in[0], 8);
    assert_ok(cg_data_next(d, in, tg));
    assert_int_equal(in[0], 24);
    assert_int_equal(tg[7], 32);
    cg_data_close(d);

    /* errors: no match, a shard too small for one batch, a bad rank */
    c.rank = 0, c.world_size = 1;
    c.path = tmp_path("nothing_*.bin");
    assert_int_equal(cg_data_open(&c, &d), CG_ERR_IO);
    assert_error_contains("no file matches");
    c.path = tmp_path("shard_001.bin");
    c.batch = 8;
    assert_int_equal(cg_data_open(&c, &d), CG_ERR_INVALID_ARG);
    assert_error_contains("fewer than one batch");
    c.batch = 2, c.rank = 2;
    assert_int_equal(cg_data_open(&c, &d), CG_ERR_INVALID_ARG);
    assert_null(d);
}

static void test_data_text(void **state) {
    (void)state;
    const char *path = tmp_path("abc.txt");
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    for (int i = 0; i < 100; i++)
        fputc("abcdefghij"[i % 10], f);
    fclose(f);
    cg_tokenizer *tok = char_tok();
    cg_data_config c = {.path = path, .tokenizer = tok, .batch = 2, .seq_len = 5, .world_size = 1};
    cg_data_loader *d;
    assert_ok(cg_data_open(&c, &d));
    assert_true(cg_data_is_text(d));
    assert_int_equal(cg_data_num_tokens(d), 100);
    int32_t in[10], tg[10];
    int32_t a_id = cg_tokenizer_token_id(tok, "a");
    assert_ok(cg_data_next(d, in, tg));
    for (int i = 0; i < 10; i++) {
        assert_int_equal(in[i], a_id + i % 10);
        assert_int_equal(tg[i], a_id + (i + 1) % 10);
    }
    cg_data_close(d);
    /* holdout: the last 20% (20 tokens: 1 sample of 10 + 1) for validation, 80 for training */
    c.holdout_frac = 0.2f;
    assert_ok(cg_data_open(&c, &d));
    assert_int_equal(cg_data_num_tokens(d), 80);
    cg_data_close(d);
    c.split = CG_DATA_HOLDOUT;
    assert_ok(cg_data_open(&c, &d));
    assert_int_equal(cg_data_num_tokens(d), 20);
    assert_ok(cg_data_next(d, in, tg));
    assert_int_equal(in[0], a_id); /* token 80 = 'a' */
    cg_data_close(d);
    /* text without a tokenizer, and a character outside the alphabet */
    c.tokenizer = NULL, c.holdout_frac = 0, c.split = CG_DATA_TRAIN;
    assert_int_equal(cg_data_open(&c, &d), CG_ERR_INVALID_ARG);
    assert_error_contains("no tokenizer");
    f = fopen(path, "a");
    fputs("ABC", f);
    fclose(f);
    c.tokenizer = tok;
    assert_int_not_equal(cg_data_open(&c, &d), CG_OK);
    assert_error_contains("abc.txt");
    cg_tokenizer_free(tok);
}

/* ------------------------------------------------------------------ training */

typedef struct run {
    cg_model *m;
    cg_tokenizer *tok;
    cg_data_loader *data;
    cg_trainer *tr;
    cg_lora_config lora;
} run;

static void run_open(run *r, const char *preset, const char *text, const cg_train_config *tc, bool lora) {
    memset(r, 0, sizeof *r);
    cg_model_config mc;
    assert_ok(cg_model_config_preset(preset, &mc));
    assert_ok(cg_model_create(&mc, CG_CPU, 7, &r->m));
    if (lora) {
        r->lora = cg_lora_config_default();
        r->lora.rank = 4;
        r->lora.alpha = 8;
        r->lora.dropout = 0.1f;
        r->lora.targets = "all-linear";
        assert_ok(cg_lora_attach(r->m, &r->lora));
    }
    r->tok = char_tok();
    cg_data_config dc = {
        .path = text, .tokenizer = r->tok, .batch = tc->batch, .seq_len = tc->seq_len, .world_size = 1};
    assert_ok(cg_data_open(&dc, &r->data));
    cg_train_config c = *tc;
    c.lora = lora ? &r->lora : NULL;
    assert_ok(cg_trainer_create(r->m, r->data, &c, &r->tr));
}

static void run_close(run *r) {
    cg_trainer_free(r->tr);
    cg_data_close(r->data);
    cg_tokenizer_free(r->tok);
    cg_model_free(r->m);
}

static void run_steps(run *r, int n, cg_train_step_info *last) {
    for (int i = 0; i < n; i++) {
        cg_train_step_info info;
        assert_ok(cg_trainer_step(r->tr, &info));
        if (last) *last = info;
    }
}

static void test_tiny_model_learns_text(void **state) {
    (void)state;
    const char *text = write_text("learn.txt", 300);
    cg_train_config tc = cg_train_config_default();
    tc.batch = 4, tc.seq_len = 32;
    tc.optim.grad_clip = 1.0f;
    tc.schedule = (cg_lr_schedule_config){
        .kind = CG_LR_COSINE, .lr = 1e-2f, .warmup_steps = 5, .total_steps = 60, .final_frac = 0.1f};
    run r;
    run_open(&r, "llama:tiny", text, &tc, false);
    double first = 0, last5 = 0;
    for (int s = 0; s < 60; s++) {
        cg_train_step_info info;
        assert_ok(cg_trainer_step(r.tr, &info));
        assert_false(info.skipped);
        assert_true(info.tokens_per_s > 0);
        if (s == 0) first = info.loss;
        if (s >= 55) last5 += info.loss / 5;
    }
    print_message("llama:tiny on a 6-word-sentence text: loss %.3f -> %.3f after 60 steps\n", first, last5);
    /* from ln(64) = 4.16 at init to below 1.2 (measured 0.85; the text's own entropy, the choice among 11
     * words per 5.5 characters, is about 0.45 nats per character) */
    assert_close(first, log(64.0), 0.05, 0);
    assert_true(last5 < 1.2);
    assert_int_equal(cg_trainer_tokens_seen(r.tr), 60 * 128);
    /* validation on the same file: the model is as good on any part of it */
    double val;
    assert_ok(cg_trainer_evaluate(r.tr, r.data, 4, &val));
    assert_true(val < 1.3);
    /* FLOPs per token: 6 N + 6 L C T */
    assert_close(cg_train_flops_per_token(r.m, 32), 6.0 * (double)cg_model_num_elements(r.m) + 6.0 * 2 * 64 * 32, 1e-12,
                 0);
    run_close(&r);
}

/* total batch 2 x B x T with B = 2 reads the same tokens as one micro-batch of B = 4, and gives the same step */
static void test_gradient_accumulation(void **state) {
    (void)state;
    const char *text = write_text("accum.txt", 60);
    cg_train_config tc = cg_train_config_default();
    tc.optim = cg_optimizer_config_default(CG_OPT_SGD);
    tc.schedule = (cg_lr_schedule_config){.kind = CG_LR_CONSTANT, .lr = 0.5f};
    tc.seq_len = 16;
    tc.batch = 2, tc.total_batch = 64;
    run a, b;
    run_open(&a, "gpt2:tiny", text, &tc, false);
    assert_int_equal(cg_trainer_grad_accum(a.tr), 2);
    tc.batch = 4, tc.total_batch = 0;
    run_open(&b, "gpt2:tiny", text, &tc, false);
    assert_int_equal(cg_trainer_grad_accum(b.tr), 1);
    cg_train_step_info ia, ib;
    run_steps(&a, 1, &ia);
    run_steps(&b, 1, &ib);
    assert_close(ia.loss, ib.loss, 1e-5, 0);
    assert_close(ia.grad_norm, ib.grad_norm, 1e-4, 0);
    double maxdiff = 0, maxmove = 0;
    for (int i = 0; i < a.m->n_params; i++) {
        cg_tensor *x = a.m->params[i].tensor, *y = b.m->params[i].tensor;
        for (int64_t e = 0; e < cg_numel(x); e++) {
            maxdiff = fmax(maxdiff, fabs(cg_get_flat(x, e) - cg_get_flat(y, e)));
        }
    }
    /* and the step moved the weights: compare with a fresh model */
    cg_model *fresh;
    assert_ok(cg_model_create(&a.m->cfg, CG_CPU, 7, &fresh));
    for (int i = 0; i < a.m->n_params; i++)
        for (int64_t e = 0; e < cg_numel(fresh->params[i].tensor); e++)
            maxmove =
                fmax(maxmove, fabs(cg_get_flat(a.m->params[i].tensor, e) - cg_get_flat(fresh->params[i].tensor, e)));
    cg_model_free(fresh);
    assert_true(maxmove > 1e-3);
    assert_true(maxdiff < 1e-5);
    run_close(&a);
    run_close(&b);
    /* a total batch that is not a multiple of B x T */
    tc.total_batch = 100;
    cg_model *m;
    cg_model_config mc;
    assert_ok(cg_model_config_preset("gpt2:tiny", &mc));
    assert_ok(cg_model_create(&mc, CG_CPU, 7, &m));
    cg_tokenizer *tok = char_tok();
    cg_data_config dc = {.path = text, .tokenizer = tok, .batch = 4, .seq_len = 16, .world_size = 1};
    cg_data_loader *d;
    assert_ok(cg_data_open(&dc, &d));
    cg_trainer *tr;
    assert_int_equal(cg_trainer_create(m, d, &tc, &tr), CG_ERR_INVALID_ARG);
    assert_error_contains("multiple of");
    tc.total_batch = 0;
    tc.seq_len = 1000;
    assert_int_equal(cg_trainer_create(m, d, &tc, &tr), CG_ERR_INVALID_ARG);
    assert_error_contains("max_seq_len");
    cg_data_close(d);
    cg_tokenizer_free(tok);
    cg_model_free(m);
}

static void snapshot(const cg_model *m, float **out, size_t *n) {
    size_t total = 0;
    for (int i = 0; i < m->n_params; i++)
        total += (size_t)cg_numel(m->params[i].tensor);
    float *v = malloc(sizeof(float) * total);
    assert_non_null(v);
    size_t k = 0;
    for (int i = 0; i < m->n_params; i++) {
        memcpy(v + k, cg_data(m->params[i].tensor), cg_nbytes(m->params[i].tensor));
        k += (size_t)cg_numel(m->params[i].tensor);
    }
    *out = v;
    *n = total;
}

static void check_resume(const char *preset, bool lora, cg_optimizer_kind kind, const char *dir) {
    const char *text = write_text("resume.txt", 80);
    cg_train_config tc = cg_train_config_default();
    tc.batch = 2, tc.seq_len = 16, tc.total_batch = 64;
    tc.optim = cg_optimizer_config_default(kind);
    tc.optim.grad_clip = 0.5f;
    tc.optim.grad_noise_eta = 1e-4f;
    tc.optim.seed = 5;
    tc.optim.weight_decay = 0.1f;
    tc.schedule = (cg_lr_schedule_config){.kind = CG_LR_COSINE, .lr = 3e-3f, .warmup_steps = 2, .total_steps = 6};
    tc.outlier_window = 3;
    /* uninterrupted */
    run a;
    run_open(&a, preset, text, &tc, lora);
    run_steps(&a, 6, NULL);
    float *pa;
    size_t na;
    snapshot(a.m, &pa, &na);
    /* 3 steps, checkpoint, everything freed; a new process-like start resumes and runs 3 more */
    run b;
    run_open(&b, preset, text, &tc, lora);
    run_steps(&b, 3, NULL);
    char ck[512];
    assert_ok(cg_trainer_save(b.tr, dir, 0, ck, sizeof ck));
    run_close(&b);
    run_open(&b, preset, text, &tc, lora);
    bool resumed = false;
    char from[512];
    assert_ok(cg_trainer_resume(b.tr, dir, &resumed, from, sizeof from));
    assert_true(resumed);
    assert_string_equal(from, ck);
    assert_int_equal(cg_trainer_step_count(b.tr), 3);
    assert_int_equal(cg_optimizer_step_count(cg_trainer_optimizer(b.tr)), 3);
    run_steps(&b, 3, NULL);
    float *pb;
    size_t nb;
    snapshot(b.m, &pb, &nb);
    assert_int_equal(na, nb);
    assert_memory_equal(pa, pb, na * sizeof(float));
    /* and training did change the trained tensors */
    run c;
    run_open(&c, preset, text, &tc, lora);
    float *pc;
    size_t nc;
    snapshot(c.m, &pc, &nc);
    assert_memory_not_equal(pa, pc, na * sizeof(float));
    free(pa), free(pb), free(pc);
    run_close(&a);
    run_close(&b);
    run_close(&c);
}

static void test_resume_bit_exact(void **state) {
    (void)state;
    check_resume("gpt2:tiny", false, CG_OPT_ADAMW, tmp_path("resume_full"));
    check_resume("llama:tiny", true, CG_OPT_LION, tmp_path("resume_lora"));
    struct stat st;
    char p[512];
    snprintf(p, sizeof p, "%s/ckpt_00000003/model/model.safetensors", tmp_path("resume_full"));
    assert_int_equal(stat(p, &st), 0);
    snprintf(p, sizeof p, "%s/ckpt_00000003/adapter/adapter_model.safetensors", tmp_path("resume_lora"));
    assert_int_equal(stat(p, &st), 0);
}

static void copy_file(const char *from, const char *to, long truncate_to, long flip_at) {
    FILE *f = fopen(from, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    rewind(f);
    unsigned char *buf = malloc((size_t)n);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    if (flip_at >= 0) buf[flip_at] ^= 0x10;
    if (truncate_to >= 0) n = truncate_to;
    f = fopen(to, "wb");
    assert_int_equal(fwrite(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    free(buf);
}

static void test_damaged_state_refused(void **state) {
    (void)state;
    const char *text = write_text("damage.txt", 40);
    cg_train_config tc = cg_train_config_default();
    tc.batch = 2, tc.seq_len = 16;
    run r;
    run_open(&r, "gpt2:tiny", text, &tc, false);
    run_steps(&r, 2, NULL);
    const char *good = tmp_path("state_good.bin"), *bad = tmp_path("state_bad.bin");
    assert_ok(cg_train_state_write(r.tr, good));
    struct stat st;
    assert_int_equal(stat(good, &st), 0);
    run_steps(&r, 1, NULL);
    float *before;
    size_t n;
    snapshot(r.m, &before, &n);

    copy_file(good, bad, st.st_size - 1, -1);
    assert_int_equal(cg_train_state_read(r.tr, bad), CG_ERR_FORMAT);
    assert_error_contains("truncated");
    assert_error_contains("state_bad.bin");
    copy_file(good, bad, 20, -1);
    assert_int_equal(cg_train_state_read(r.tr, bad), CG_ERR_FORMAT);
    assert_error_contains("truncated");
    copy_file(good, bad, -1, st.st_size / 2); /* one flipped bit in the payload */
    assert_int_equal(cg_train_state_read(r.tr, bad), CG_ERR_FORMAT);
    assert_error_contains("checksum mismatch");
    assert_error_contains("corrupted");
    copy_file(good, bad, -1, 1); /* in the magic */
    assert_int_equal(cg_train_state_read(r.tr, bad), CG_ERR_FORMAT);
    assert_error_contains("magic");
    assert_int_equal(cg_train_state_read(r.tr, tmp_path("missing.bin")), CG_ERR_IO);
    /* nothing changed by the refusals */
    float *after;
    snapshot(r.m, &after, &n);
    assert_memory_equal(before, after, n * sizeof(float));
    assert_int_equal(cg_trainer_step_count(r.tr), 3);
    free(after);
    /* the good file goes back to step 2 */
    assert_ok(cg_train_state_read(r.tr, good));
    assert_int_equal(cg_trainer_step_count(r.tr), 2);
    run_close(&r);
    free(before);

    /* a state saved with another batch size is refused */
    tc.batch = 1;
    run_open(&r, "gpt2:tiny", text, &tc, false);
    assert_int_equal(cg_train_state_read(r.tr, good), CG_ERR_INVALID_ARG);
    assert_error_contains("batch 2");
    run_close(&r);
    /* and one from a model with other trainable tensors (LoRA) */
    tc.batch = 2;
    run_open(&r, "gpt2:tiny", text, &tc, true);
    assert_int_equal(cg_train_state_read(r.tr, good), CG_ERR_INVALID_ARG);
    assert_error_contains("trainable parameters");
    run_close(&r);
}

static void test_keep_last(void **state) {
    (void)state;
    const char *text = write_text("keep.txt", 40);
    const char *dir = tmp_path("keep");
    cg_train_config tc = cg_train_config_default();
    tc.batch = 1, tc.seq_len = 8;
    run r;
    run_open(&r, "gpt2:tiny", text, &tc, false);
    for (int s = 0; s < 4; s++) {
        run_steps(&r, 1, NULL);
        assert_ok(cg_trainer_save(r.tr, dir, 2, NULL, 0));
    }
    int64_t steps[8];
    assert_int_equal(cg_train_list_checkpoints(dir, steps, 8), 2);
    assert_int_equal(steps[0], 3);
    assert_int_equal(steps[1], 4);
    /* a leftover temporary directory (a crash mid-save) is not a checkpoint */
    char p[512];
    snprintf(p, sizeof p, "%s/ckpt_00000009.tmp", dir);
    assert_int_equal(mkdir(p, 0777), 0);
    assert_int_equal(cg_train_list_checkpoints(dir, steps, 8), 2);
    /* resume picks step 4 */
    run_close(&r);
    run_open(&r, "gpt2:tiny", text, &tc, false);
    bool resumed;
    assert_ok(cg_trainer_resume(r.tr, dir, &resumed, NULL, 0));
    assert_true(resumed);
    assert_int_equal(cg_trainer_step_count(r.tr), 4);
    /* keep_last 0 keeps everything */
    run_steps(&r, 1, NULL);
    assert_ok(cg_trainer_save(r.tr, dir, 0, NULL, 0));
    assert_int_equal(cg_train_list_checkpoints(dir, steps, 8), 3);
    assert_int_equal(cg_train_list_checkpoints(tmp_path("no_such_dir"), steps, 8), 0);
    run_close(&r);
}

/* ------------------------------------------------------------------ guards */

static void test_outlier_window(void **state) {
    (void)state;
    double v[4];
    cg_outlier_window w = {4, 0, 0, v};
    for (int i = 1; i <= 4; i++)
        assert_true(isnan(cg_outlier_update(&w, i)));
    /* window {1, 2, 3, 4}: mean 2.5, population sd sqrt(1.25) */
    assert_close(cg_outlier_update(&w, 10.0), 7.5 / sqrt(1.25), 1e-12, 0);
    /* now {2, 3, 4, 10}, mean 4.75: a NaN gets no score and stays out (else the next mean would be NaN) */
    assert_true(isnan(cg_outlier_update(&w, NAN)));
    assert_close(cg_outlier_update(&w, 4.75), 0.0, 0, 1e-12);
    /* now {4.75, 3, 4, 10}: mean 5.4375, sd by hand */
    double mean = 5.4375,
           sd = sqrt((pow(4.75 - mean, 2) + pow(3 - mean, 2) + pow(4 - mean, 2) + pow(10 - mean, 2)) / 4);
    assert_close(cg_outlier_update(&w, 20.0), (20.0 - mean) / sd, 1e-12, 0);
    double c[2] = {0, 0};
    cg_outlier_window k = {2, 0, 0, c};
    cg_outlier_update(&k, 3.0);
    cg_outlier_update(&k, 3.0);
    assert_close(cg_outlier_update(&k, 100.0), 0.0, 0, 0); /* sd 0: z = 0 */
}

static void test_guards_skip_updates(void **state) {
    (void)state;
    const char *text = write_text("guard.txt", 40);
    cg_train_config tc = cg_train_config_default();
    tc.batch = 2, tc.seq_len = 16;
    tc.schedule.lr = 1e-2f;
    tc.outlier_window = 2;
    tc.skip_grad_z = 1e-3f; /* any norm above the mean of the last two */
    run r;
    run_open(&r, "gpt2:tiny", text, &tc, false);
    int skipped = 0;
    for (int s = 0; s < 10; s++) {
        float *before, *after;
        size_t n;
        snapshot(r.m, &before, &n);
        cg_train_step_info info;
        assert_ok(cg_trainer_step(r.tr, &info));
        snapshot(r.m, &after, &n);
        if (s < 2) assert_true(isnan(info.grad_z));
        if (info.skipped) {
            skipped++;
            assert_string_equal(info.skip_reason, "grad outlier");
            assert_true(info.grad_z > 1e-3);
            assert_memory_equal(before, after, n * sizeof(float));
        } else {
            assert_memory_not_equal(before, after, n * sizeof(float));
        }
        free(before), free(after);
    }
    assert_true(skipped > 0);
    assert_int_equal(cg_trainer_step_count(r.tr), 10);
    assert_int_equal(cg_optimizer_step_count(cg_trainer_optimizer(r.tr)), 10 - skipped);
    run_close(&r);

    /* a NaN weight makes the loss NaN: the update is skipped and reported */
    tc.skip_grad_z = 0;
    run_open(&r, "gpt2:tiny", text, &tc, false);
    float *w = cg_data(r.m->params[3].tensor);
    w[0] = NAN;
    cg_train_step_info info;
    assert_ok(cg_trainer_step(r.tr, &info));
    assert_true(info.skipped);
    assert_string_equal(info.skip_reason, "nonfinite");
    assert_int_equal(cg_optimizer_step_count(cg_trainer_optimizer(r.tr)), 0);
    assert_int_equal(cg_trainer_step_count(r.tr), 1);
    run_close(&r);
}

/* ------------------------------------------------------------------ the command line */

static char *read_all(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    rewind(f);
    char *buf = malloc((size_t)len + 1);
    assert_int_equal(fread(buf, 1, (size_t)len, f), (size_t)len);
    buf[len] = '\0';
    fclose(f);
    *n = (size_t)len;
    return buf;
}

static void test_cli_train(void **state) {
    (void)state;
    char text[256], args[1536], out[16384];
    snprintf(text, sizeof text, "%s", write_text("cli.txt", 60));
    const char *common = "--model gpt2:tiny --batch 2 --seq 16 --total-batch 64 --lr 3e-3 --schedule cosine "
                         "--schedule-steps 4 --warmup 2 "
                         "--grad-noise 1e-4 --threads 1 --val-steps 2";
    snprintf(args, sizeof args,
             "train %s --data %s --steps 4 --val-every 2 --sample-every 4 --sample-tokens 8 --out %s --metrics %s",
             common, text, tmp_path("cli_a"), tmp_path("a.jsonl"));
    int rc = cg_test_run_cgrad(args, out, sizeof out);
    if (rc != 0) print_error("%s\n", out);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(out, "step     4/4 | loss "));
    assert_non_null(strstr(out, "tok/s"));
    assert_non_null(strstr(out, "ETA"));
    assert_non_null(strstr(out, "MFU n/a"));
    assert_non_null(strstr(out, "val loss"));
    assert_non_null(strstr(out, "sample at step 4: "));
    assert_non_null(strstr(out, "ckpt_00000004"));

    /* the metrics: one JSON object per line, per step */
    size_t n;
    char *m = read_all(tmp_path("a.jsonl"), &n);
    int lines = 0;
    for (char *line = strtok(m, "\n"); line; line = strtok(NULL, "\n"), lines++) {
#ifdef CG_HAVE_CJSON
        cJSON *j;
        assert_ok(cg_json_parse(line, strlen(line), "metrics line", &j));
        int64_t step;
        double loss, lr, norm, tps;
        assert_ok(cg_json_get_int(j, "step", "metrics", &step));
        assert_int_equal(step, lines + 1);
        assert_ok(cg_json_get_double(j, "loss", "metrics", &loss));
        assert_ok(cg_json_get_double(j, "lr", "metrics", &lr));
        assert_ok(cg_json_get_double(j, "grad_norm", "metrics", &norm));
        assert_ok(cg_json_get_double(j, "tokens_per_s", "metrics", &tps));
        assert_true(loss > 0 && loss < 5 && norm > 0 && tps > 0);
        /* warmup 2 ((s + 1) / 2 of the peak), then cosine over steps 2..3 of 4: r = (s - 2) / 2 */
        double want = lines < 2 ? 3e-3 * (lines + 1) / 2 : 3e-3 * 0.5 * (1 + cos(M_PI * (lines - 2) / 2.0));
        assert_close(lr, want, 1e-6, 0);
        bool has_val = cJSON_GetObjectItemCaseSensitive(j, "val_loss") != NULL;
        assert_int_equal(has_val, (lines + 1) % 2 == 0);
        cg_json_free(j);
#else
        assert_true(line[0] == '{' && line[strlen(line) - 1] == '}');
        assert_non_null(strstr(line, "\"tokens_per_s\":"));
#endif
    }
    assert_int_equal(lines, 4);
    free(m);

    /* 2 steps, then --resume to 4: the same final weights, byte for byte */
    snprintf(args, sizeof args, "train %s --data %s --steps 2 --out %s", common, text, tmp_path("cli_b"));
    assert_int_equal(cg_test_run_cgrad(args, out, sizeof out), 0);
    snprintf(args, sizeof args, "train %s --data %s --steps 4 --out %s --resume --metrics %s", common, text,
             tmp_path("cli_b"), tmp_path("b.jsonl"));
    rc = cg_test_run_cgrad(args, out, sizeof out);
    if (rc != 0) print_error("%s\n", out);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(out, "resumed from"));
    assert_non_null(strstr(out, "at step 2"));
    size_t na, nb;
    char pa[512], pb[512];
    snprintf(pa, sizeof pa, "%s/ckpt_00000004/model/model.safetensors", tmp_path("cli_a"));
    snprintf(pb, sizeof pb, "%s/ckpt_00000004/model/model.safetensors", tmp_path("cli_b"));
    char *fa = read_all(pa, &na), *fb = read_all(pb, &nb);
    assert_int_equal(na, nb);
    assert_memory_equal(fa, fb, na);
    free(fa), free(fb);
    m = read_all(tmp_path("b.jsonl"), &n);
    assert_non_null(strstr(m, "{\"step\":3,"));
    assert_null(strstr(m, "{\"step\":1,"));
    free(m);

    /* a corrupted newest checkpoint is refused with a message */
    snprintf(pa, sizeof pa, "%s/ckpt_00000004/train_state.bin", tmp_path("cli_b"));
    struct stat st;
    assert_int_equal(stat(pa, &st), 0);
    copy_file(pa, pa, -1, st.st_size - 3);
    snprintf(args, sizeof args, "train %s --data %s --steps 5 --out %s --resume", common, text, tmp_path("cli_b"));
    assert_int_equal(cg_test_run_cgrad(args, out, sizeof out), 1);
    assert_non_null(strstr(out, "cgrad train: --resume: "));
    assert_non_null(strstr(out, "corrupted"));

    /* flag errors and the CUDA device */
    if (cg_cuda_device_count() == 0) { /* with a GPU this would train (test_cuda_train covers it) */
        snprintf(args, sizeof args, "train --model gpt2:tiny --data %s --device cuda", text);
        assert_int_equal(cg_test_run_cgrad(args, out, sizeof out), 1);
        assert_true(strstr(out, "no CUDA device") || strstr(out, "no CUDA backend"));
    }
    /* bf16 compute is for GPUs; an unknown dtype is a flag error */
    snprintf(args, sizeof args, "train --model gpt2:tiny --data %s --dtype bf16", text);
    assert_int_equal(cg_test_run_cgrad(args, out, sizeof out), 1);
    assert_non_null(strstr(out, "bf16 compute needs a CUDA model"));
    snprintf(args, sizeof args, "train --model gpt2:tiny --data %s --dtype f16", text);
    assert_int_equal(cg_test_run_cgrad(args, out, sizeof out), 2);
    assert_non_null(strstr(out, "--dtype 'f16'"));
    assert_int_equal(cg_test_run_cgrad("train --model gpt2:tiny", out, sizeof out), 2);
    assert_non_null(strstr(out, "needs --model PRESET_OR_DIR and --data"));
    snprintf(args, sizeof args, "train --model gpt2:tiny --data %s --optimizer adam", text);
    assert_int_equal(cg_test_run_cgrad(args, out, sizeof out), 2);
    assert_non_null(strstr(out, "unknown kind 'adam'"));
    assert_int_equal(cg_test_run_cgrad("train --help", out, sizeof out), 0);
    assert_non_null(strstr(out, "--total-batch"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_data_shards),
        cmocka_unit_test(test_data_text),
        cmocka_unit_test_teardown(test_tiny_model_learns_text, cg_test_teardown),
        cmocka_unit_test_teardown(test_gradient_accumulation, cg_test_teardown),
        cmocka_unit_test_teardown(test_resume_bit_exact, cg_test_teardown),
        cmocka_unit_test_teardown(test_damaged_state_refused, cg_test_teardown),
        cmocka_unit_test_teardown(test_keep_last, cg_test_teardown),
        cmocka_unit_test(test_outlier_window),
        cmocka_unit_test_teardown(test_guards_skip_updates, cg_test_teardown),
        cmocka_unit_test(test_cli_train),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
