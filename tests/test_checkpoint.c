/* Checkpoints: Hugging Face directories and llm.c files. Save -> load round trips bit-exactly (tied and
 * untied heads, q/k/v biases, padded vocabularies, shards, bf16, llm.c v3 and v5), the files hold what
 * transformers and llm.c expect (Conv1D weights transposed, "transformer." prefixes, vocab-size rows, the
 * index's total_size and weight_map, llm.c's tensor order), a hand-built GPT-2 directory loads to the
 * transposed values, loaded models compute the same forward, and malformed inputs give clear errors. */
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include "test_util.h"

#include "core/json.h"
#include "models/checkpoint.h"

/* ------------------------------------------------------------------ helpers */

static void make_temp_dir(char *buf, size_t n) {
    snprintf(buf, n, "/tmp/cg_test_ckpt_XXXXXX");
    assert_non_null(mkdtemp(buf));
}

/* Removes a directory and the files in it (one level: that is all the tests create). */
static void remove_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char path[4096];
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        struct stat sb;
        if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) remove_dir(path);
        else unlink(path);
    }
    closedir(d);
    rmdir(dir);
}

static bool file_exists(const char *dir, const char *name) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return access(path, F_OK) == 0;
}

static void write_text(const char *dir, const char *name, const char *text) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, strlen(text), f), strlen(text));
    fclose(f);
}

/* Every parameter random (norms and biases too), with the pad rows past the vocabulary left zero. */
static void randomize(cg_model *m, uint64_t seed) {
    for (int i = 0; i < m->n_params; i++) {
        cg_tensor *t = m->params[i].tensor;
        float *v = cg_data(t);
        int64_t n = cg_numel(t);
        if (t == m->wte || t == m->lm_head) n = m->cfg.vocab_size * t->shape[1];
        for (int64_t k = 0; k < n; k++) v[k] = cg_test_randf(&seed);
    }
}

static cg_model *random_model(const cg_model_config *cfg, uint64_t seed) {
    cg_model *m = NULL;
    assert_ok(cg_model_create(cfg, CG_CPU, seed, &m));
    randomize(m, seed * 7919 + 1);
    return m;
}

static cg_model *random_preset(const char *preset, uint64_t seed) {
    cg_model_config cfg;
    assert_ok(cg_model_config_preset(preset, &cfg));
    return random_model(&cfg, seed);
}

/* The configs agree on everything but the name. */
static void assert_same_config(const cg_model_config *a, const cg_model_config *b) {
    assert_int_equal(a->arch, b->arch);
    assert_int_equal(a->vocab_size, b->vocab_size);
    assert_int_equal(a->padded_vocab_size, b->padded_vocab_size);
    assert_int_equal(a->n_layer, b->n_layer);
    assert_int_equal(a->n_head, b->n_head);
    assert_int_equal(a->n_kv_head, b->n_kv_head);
    assert_int_equal(a->d_model, b->d_model);
    assert_int_equal(a->d_ff, b->d_ff);
    assert_int_equal(a->max_seq_len, b->max_seq_len);
    assert_true(a->norm_eps == b->norm_eps);
    assert_int_equal(a->qkv_bias, b->qkv_bias);
    assert_int_equal(a->tie_embeddings, b->tie_embeddings);
    assert_true(a->init_std == b->init_std);
    if (a->arch == CG_ARCH_LLAMA) {
        assert_true(a->rope_theta == b->rope_theta);
        assert_true(a->rope_scaling_factor == b->rope_scaling_factor);
        assert_true(a->rope_low_freq_factor == b->rope_low_freq_factor);
        assert_true(a->rope_high_freq_factor == b->rope_high_freq_factor);
        assert_int_equal(a->rope_original_max_pos, b->rope_original_max_pos);
    }
}

/* Round a float to bf16 (nearest, ties to even) with integer arithmetic, independently of the library. */
static float bf16_round(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    uint32_t lower = u & 0xffffu, upper = u >> 16;
    if (lower > 0x8000u || (lower == 0x8000u && (upper & 1u))) upper++;
    u = upper << 16;
    memcpy(&x, &u, 4);
    return x;
}

/* Same parameter names, shapes and bytes (or the bf16-rounded bytes of `want` when bf16). */
static void assert_same_params(const cg_model *got, const cg_model *want, bool bf16) {
    assert_int_equal(got->n_params, want->n_params);
    for (int i = 0; i < want->n_params; i++) {
        const cg_tensor *a = got->params[i].tensor, *b = want->params[i].tensor;
        assert_string_equal(got->params[i].name, want->params[i].name);
        assert_true(cg_same_shape(a, b));
        const float *x = cg_data(a), *y = cg_data(b);
        for (int64_t k = 0; k < cg_numel(b); k++) {
            float w = bf16 ? bf16_round(y[k]) : y[k];
            if (memcmp(&x[k], &w, 4) != 0) {
                print_error("%s[%lld] = %.9g, expected %.9g\n", want->params[i].name, (long long)k, (double)x[k],
                            (double)w);
                fail();
            }
        }
    }
}

/* The loaded model's forward equals the original's, bit for bit (same weights, same ops). */
static void assert_same_forward(cg_model *a, cg_model *b) {
    int64_t shape[2] = {2, 7};
    int32_t toks[14];
    for (int i = 0; i < 14; i++) toks[i] = (int32_t)((i * 37 + 5) % a->cfg.vocab_size);
    cg_tensor *t = cg_tensor_from_data(cg_step_arena(CG_CPU), CG_I32, 2, shape, toks);
    assert_non_null(t);
    cg_no_grad_enter();
    cg_model_inputs in = {.tokens = t};
    cg_tensor *ha = cg_model_forward(a, &in), *hb = cg_model_forward(b, &in);
    cg_no_grad_exit();
    assert_non_null(ha);
    assert_non_null(hb);
    assert_true(cg_same_shape(ha, hb));
    double max_abs = 0;
    for (int64_t k = 0; k < cg_numel(ha); k++) {
        assert_true(cg_get_flat(ha, k) == cg_get_flat(hb, k));
        max_abs = fmax(max_abs, fabs(cg_get_flat(ha, k)));
    }
    assert_true(max_abs > 0.1); /* the comparison compared something */
}

#ifdef CG_HAVE_CJSON

static cg_safetensors *open_st(const char *dir, const char *name) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    cg_safetensors *st = NULL;
    assert_ok(cg_safetensors_open(path, &st));
    return st;
}

static cJSON *read_json(const char *dir, const char *name) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    cJSON *j = NULL;
    assert_ok(cg_json_read_file(path, &j));
    return j;
}

/* ------------------------------------------------------------------ Hugging Face round trips */

/* gpt2:tiny (tied): the files hold transformers' layout, and loading gives back the same model. */
static void test_gpt2_tied_roundtrip(void **state) {
    (void)state;
    char dir[64];
    make_temp_dir(dir, sizeof dir);
    cg_model *m = random_preset("gpt2:tiny", 1);
    assert_ok(cg_model_save_hf(m, dir, 0, CG_F32));
    assert_true(file_exists(dir, "config.json"));
    assert_false(file_exists(dir, "model.safetensors.index.json"));

    cJSON *cfg = read_json(dir, "config.json");
    assert_string_equal(cJSON_GetArrayItem(cJSON_GetObjectItem(cfg, "architectures"), 0)->valuestring,
                        "GPT2LMHeadModel");
    assert_string_equal(cJSON_GetObjectItem(cfg, "model_type")->valuestring, "gpt2");
    assert_string_equal(cJSON_GetObjectItem(cfg, "torch_dtype")->valuestring, "float32");
    assert_int_equal(cJSON_GetObjectItem(cfg, "n_embd")->valueint, 64);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(cfg, "tie_word_embeddings")));
    cJSON_Delete(cfg);

    cg_safetensors *st = open_st(dir, "model.safetensors");
    assert_string_equal(cg_safetensors_metadata(st, "format"), "pt");
    assert_int_equal(cg_safetensors_count(st), m->n_params); /* no lm_head: tied */
    assert_null(cg_safetensors_find(st, "lm_head.weight"));
    assert_null(cg_safetensors_find(st, "h.0.attn.c_attn.weight"));
    const cg_safetensors_entry *e = cg_safetensors_find(st, "transformer.h.1.attn.c_attn.weight");
    assert_non_null(e);
    assert_int_equal(e->ndim, 2);
    assert_int_equal(e->shape[0], 64);  /* [in, out] */
    assert_int_equal(e->shape[1], 192);
    const float *file = e->data;
    const float *w = cg_data(m->blocks[1].qkv.weight); /* [192, 64] */
    for (int o = 0; o < 192; o += 7)
        for (int i = 0; i < 64; i += 5) assert_true(file[i * 192 + o] == w[o * 64 + i]);
    e = cg_safetensors_find(st, "transformer.h.0.mlp.c_proj.weight");
    assert_int_equal(e->shape[0], 256);
    assert_int_equal(e->shape[1], 64);
    e = cg_safetensors_find(st, "transformer.h.0.ln_1.bias");
    assert_true(((const float *)e->data)[3] == ((const float *)cg_data(m->blocks[0].norm1_b))[3]);
    cg_safetensors_close(st);

    cg_model *l = NULL;
    assert_ok(cg_model_load(dir, CG_CPU, &l));
    assert_same_config(&l->cfg, &m->cfg);
    assert_same_params(l, m, false);
    assert_same_forward(l, m);
    cg_model_free(l);
    /* the config.json path works as well as the directory */
    char cpath[128];
    snprintf(cpath, sizeof cpath, "%s/config.json", dir);
    assert_ok(cg_model_load(cpath, CG_CPU, &l));
    assert_same_params(l, m, false);
    cg_model_free(l);
    snprintf(cpath, sizeof cpath, "%s/model.safetensors", dir);
    assert_int_equal(cg_model_load(cpath, CG_CPU, &l), CG_ERR_INVALID_ARG);
    assert_error_contains("pass the directory");
    cg_model_free(m);
    remove_dir(dir);
}

/* llama:tiny (untied head) with a padded vocabulary and Llama 3 RoPE scaling. */
static void test_llama_untied_padded_roundtrip(void **state) {
    (void)state;
    char dir[64];
    make_temp_dir(dir, sizeof dir);
    cg_model_config c;
    assert_ok(cg_model_config_preset("llama:tiny", &c));
    c.padded_vocab_size = 80;
    c.rope_scaling_factor = 8.0f, c.rope_low_freq_factor = 1.0f, c.rope_high_freq_factor = 4.0f;
    c.rope_original_max_pos = 64;
    c.norm_eps = 1e-5f;
    cg_model *m = random_model(&c, 2);
    assert_ok(cg_model_save_hf(m, dir, 0, CG_F32));

    cJSON *cfg = read_json(dir, "config.json");
    assert_string_equal(cJSON_GetArrayItem(cJSON_GetObjectItem(cfg, "architectures"), 0)->valuestring,
                        "LlamaForCausalLM");
    assert_string_equal(cJSON_GetObjectItem(cfg, "model_type")->valuestring, "llama");
    assert_int_equal(cJSON_GetObjectItem(cfg, "num_key_value_heads")->valueint, 2);
    assert_false(cJSON_IsTrue(cJSON_GetObjectItem(cfg, "tie_word_embeddings")));
    cJSON *rs = cJSON_GetObjectItem(cfg, "rope_scaling");
    assert_string_equal(cJSON_GetObjectItem(rs, "rope_type")->valuestring, "llama3");
    assert_true(cJSON_GetObjectItem(rs, "factor")->valuedouble == 8.0);
    assert_true(cJSON_GetObjectItem(cfg, "rms_norm_eps")->valuedouble == 1e-5); /* written as 1e-05 */
    cJSON_Delete(cfg);

    cg_safetensors *st = open_st(dir, "model.safetensors");
    assert_int_equal(cg_safetensors_count(st), m->n_params);
    const cg_safetensors_entry *e = cg_safetensors_find(st, "lm_head.weight");
    assert_non_null(e);
    assert_int_equal(e->shape[0], 64); /* vocab rows, not the 80 padded ones */
    e = cg_safetensors_find(st, "model.embed_tokens.weight");
    assert_int_equal(e->shape[0], 64);
    assert_true(((const float *)e->data)[63 * 64 + 5] == ((const float *)cg_data(m->wte))[63 * 64 + 5]);
    e = cg_safetensors_find(st, "model.layers.1.self_attn.k_proj.weight");
    assert_int_equal(e->shape[0], 32); /* [n_kv_head * head_dim, C], nn.Linear layout as is */
    assert_int_equal(e->shape[1], 64);
    assert_true(((const float *)e->data)[5 * 64 + 9] == ((const float *)cg_data(m->blocks[1].k.weight))[5 * 64 + 9]);
    cg_safetensors_close(st);

    cg_model *l = NULL;
    assert_ok(cg_model_load(dir, CG_CPU, &l));
    assert_same_config(&l->cfg, &m->cfg);
    assert_int_equal(l->cfg.padded_vocab_size, 80);
    assert_same_params(l, m, false); /* includes the zero pad rows */
    assert_same_forward(l, m);
    cg_model_free(l);
    cg_model_free(m);
    remove_dir(dir);
}

/* A Qwen2-like config (q/k/v biases, tied) saves as Qwen2ForCausalLM and comes back the same. */
static void test_qwen_bias_roundtrip(void **state) {
    (void)state;
    char dir[64];
    make_temp_dir(dir, sizeof dir);
    cg_model_config c = {.arch = CG_ARCH_LLAMA, .vocab_size = 50, .padded_vocab_size = 50, .n_layer = 2,
                         .n_head = 4, .n_kv_head = 2, .d_model = 32, .d_ff = 48, .max_seq_len = 64,
                         .norm_eps = 1e-6f, .rope_theta = 1e6f, .qkv_bias = true, .tie_embeddings = true,
                         .init_std = 0.02f};
    snprintf(c.name, sizeof c.name, "custom");
    cg_model *m = random_model(&c, 3);
    assert_ok(cg_model_save_hf(m, dir, 0, CG_F32));
    cJSON *cfg = read_json(dir, "config.json");
    assert_string_equal(cJSON_GetArrayItem(cJSON_GetObjectItem(cfg, "architectures"), 0)->valuestring,
                        "Qwen2ForCausalLM");
    assert_string_equal(cJSON_GetObjectItem(cfg, "model_type")->valuestring, "qwen2");
    assert_true(cJSON_GetObjectItem(cfg, "rope_theta")->valuedouble == 1e6);
    cJSON_Delete(cfg);
    cg_safetensors *st = open_st(dir, "model.safetensors");
    const cg_safetensors_entry *e = cg_safetensors_find(st, "model.layers.0.self_attn.v_proj.bias");
    assert_non_null(e);
    assert_int_equal(e->shape[0], 16);
    assert_null(cg_safetensors_find(st, "lm_head.weight"));
    assert_null(cg_safetensors_find(st, "model.layers.0.self_attn.o_proj.bias"));
    cg_safetensors_close(st);
    cg_model *l = NULL;
    assert_ok(cg_model_load(dir, CG_CPU, &l));
    assert_same_config(&l->cfg, &m->cfg);
    assert_same_params(l, m, false);
    assert_same_forward(l, m);
    cg_model_free(l);
    cg_model_free(m);
    remove_dir(dir);
}

/* Shards: 3+ files, an index whose total_size and weight_map describe them, and the same model back.
 * Saving unsharded over it afterwards drops the index. */
static void test_sharded_roundtrip(void **state) {
    (void)state;
    char dir[64];
    make_temp_dir(dir, sizeof dir);
    cg_model *m = random_preset("llama:tiny", 4);
    int64_t total = 0;
    for (int i = 0; i < m->n_params; i++) total += 4 * cg_numel(m->params[i].tensor); /* padded = vocab here */
    assert_ok(cg_model_save_hf(m, dir, 60000, CG_F32));
    assert_false(file_exists(dir, "model.safetensors"));
    cJSON *idx = read_json(dir, "model.safetensors.index.json");
    assert_int_equal((int64_t)cJSON_GetObjectItem(cJSON_GetObjectItem(idx, "metadata"), "total_size")->valuedouble,
                     total);
    cJSON *wm = cJSON_GetObjectItem(idx, "weight_map");
    assert_int_equal(cJSON_GetArraySize(wm), m->n_params);
    char names[16][64];
    int n_shards = 0;
    int64_t bytes = 0;
    cJSON *it;
    cJSON_ArrayForEach(it, wm) {
        int k = 0;
        while (k < n_shards && strcmp(names[k], it->valuestring) != 0) k++;
        if (k == n_shards) {
            assert_true(n_shards < 16);
            snprintf(names[n_shards++], 64, "%s", it->valuestring);
        }
        cg_safetensors *st = open_st(dir, it->valuestring);
        const cg_safetensors_entry *e = cg_safetensors_find(st, it->string);
        assert_non_null(e);
        bytes += (int64_t)e->nbytes;
        cg_safetensors_close(st);
    }
    assert_int_equal(bytes, total);
    assert_true(n_shards >= 3);
    char want[64];
    snprintf(want, sizeof want, "model-00001-of-%05d.safetensors", n_shards);
    assert_true(file_exists(dir, want));
    snprintf(want, sizeof want, "model-%05d-of-%05d.safetensors", n_shards, n_shards);
    assert_true(file_exists(dir, want));
    /* every shard within the limit unless it holds a single larger tensor */
    for (int k = 0; k < n_shards; k++) {
        cg_safetensors *st = open_st(dir, names[k]);
        assert_true(cg_safetensors_data_bytes(st) <= 60000 || cg_safetensors_count(st) == 1);
        cg_safetensors_close(st);
    }
    cJSON_Delete(idx);

    cg_model *l = NULL;
    assert_ok(cg_model_load(dir, CG_CPU, &l));
    assert_same_params(l, m, false);
    cg_model_free(l);

    assert_ok(cg_model_save_hf(m, dir, 0, CG_F32));
    assert_false(file_exists(dir, "model.safetensors.index.json"));
    assert_ok(cg_model_load(dir, CG_CPU, &l));
    assert_same_params(l, m, false);
    cg_model_free(l);
    cg_model_free(m);
    remove_dir(dir);
}

/* bf16 files: BF16 tensors, torch_dtype bfloat16, and a load equal to the bf16-rounded weights. */
static void test_bf16_roundtrip(void **state) {
    (void)state;
    char dir[64];
    make_temp_dir(dir, sizeof dir);
    cg_model *m = random_preset("gpt2:tiny", 5);
    assert_ok(cg_model_save_hf(m, dir, 0, CG_BF16));
    cJSON *cfg = read_json(dir, "config.json");
    assert_string_equal(cJSON_GetObjectItem(cfg, "torch_dtype")->valuestring, "bfloat16");
    cJSON_Delete(cfg);
    cg_safetensors *st = open_st(dir, "model.safetensors");
    const cg_safetensors_entry *e = cg_safetensors_find(st, "transformer.wte.weight");
    assert_string_equal(e->dtype_name, "BF16");
    assert_int_equal(e->nbytes, 64 * 64 * 2);
    cg_safetensors_close(st);
    cg_model *l = NULL;
    assert_ok(cg_model_load(dir, CG_CPU, &l));
    assert_same_params(l, m, true);
    cg_model_free(l);
    cg_model_free(m);
    remove_dir(dir);
}

/* ------------------------------------------------------------------ a hand-built GPT-2 directory */

/* Tensor k's value at flat position i: distinct across tensors and positions, exact in bf16. */
static float hand_value(int k, int64_t i) { return (float)((k * 131 + i * 17) % 251 - 125) / 64.0f; }

static cg_tensor *hand_tensor(int k, cg_dtype dt, int nd, const int64_t *shape) {
    cg_tensor *t = cg_tensor_empty(cg_step_arena(CG_CPU), dt, nd, shape);
    assert_non_null(t);
    for (int64_t i = 0; i < cg_numel(t); i++) cg_set_flat(t, i, hand_value(k, i));
    return t;
}

/* Writes a GPT-2 directory the way transformers' GPT2LMHeadModel state dict looks: "transformer."
 * prefixes, Conv1D weights [in, out], attn.bias / attn.masked_bias buffers, and a tied lm_head.weight.
 * C = 8, 2 layers, 2 heads, 16 positions, vocabulary 10; c_fc in BF16 and wpe in F16. */
static int write_hand_gpt2(const char *dir, const char **names, const cg_tensor **tensors, int *conv) {
    write_text(dir, "config.json",
               "{\"architectures\": [\"GPT2LMHeadModel\"], \"model_type\": \"gpt2\", \"n_embd\": 8, \"n_layer\": 2,"
               " \"n_head\": 2, \"n_positions\": 16, \"vocab_size\": 10, \"layer_norm_epsilon\": 1e-05,"
               " \"activation_function\": \"gelu_new\", \"n_inner\": null}");
    static char name_buf[64][64];
    int n = 0;
    int64_t s_vc[2] = {10, 8}, s_tc[2] = {16, 8}, s_c[1] = {8}, s_3c[1] = {24}, s_4c[1] = {32};
    int64_t s_attn[2] = {8, 24}, s_proj[2] = {8, 8}, s_fc[2] = {8, 32}, s_fcp[2] = {32, 8}, s_mask[4] = {1, 1, 16, 16};
#define ADD(NAME, DT, ND, SHAPE, IS_CONV)                                                                        \
    do {                                                                                                         \
        snprintf(name_buf[n], 64, "%s", NAME);                                                                   \
        names[n] = name_buf[n];                                                                                  \
        tensors[n] = hand_tensor(n, DT, ND, SHAPE);                                                              \
        conv[n] = IS_CONV;                                                                                       \
        n++;                                                                                                     \
    } while (0)
    ADD("transformer.wte.weight", CG_F32, 2, s_vc, 0);
    ADD("transformer.wpe.weight", CG_F16, 2, s_tc, 0);
    char nm[64];
    for (int l = 0; l < 2; l++) {
        snprintf(nm, sizeof nm, "transformer.h.%d.ln_1.weight", l); ADD(nm, CG_F32, 1, s_c, 0);
        snprintf(nm, sizeof nm, "transformer.h.%d.ln_1.bias", l); ADD(nm, CG_F32, 1, s_c, 0);
        snprintf(nm, sizeof nm, "transformer.h.%d.attn.bias", l); ADD(nm, CG_F32, 4, s_mask, -1);
        snprintf(nm, sizeof nm, "transformer.h.%d.attn.masked_bias", l); ADD(nm, CG_F32, 0, s_c, -1);
        snprintf(nm, sizeof nm, "transformer.h.%d.attn.c_attn.weight", l); ADD(nm, CG_F32, 2, s_attn, 1);
        snprintf(nm, sizeof nm, "transformer.h.%d.attn.c_attn.bias", l); ADD(nm, CG_F32, 1, s_3c, 0);
        snprintf(nm, sizeof nm, "transformer.h.%d.attn.c_proj.weight", l); ADD(nm, CG_F32, 2, s_proj, 1);
        snprintf(nm, sizeof nm, "transformer.h.%d.attn.c_proj.bias", l); ADD(nm, CG_F32, 1, s_c, 0);
        snprintf(nm, sizeof nm, "transformer.h.%d.ln_2.weight", l); ADD(nm, CG_F32, 1, s_c, 0);
        snprintf(nm, sizeof nm, "transformer.h.%d.ln_2.bias", l); ADD(nm, CG_F32, 1, s_c, 0);
        snprintf(nm, sizeof nm, "transformer.h.%d.mlp.c_fc.weight", l); ADD(nm, CG_BF16, 2, s_fc, 1);
        snprintf(nm, sizeof nm, "transformer.h.%d.mlp.c_fc.bias", l); ADD(nm, CG_F32, 1, s_4c, 0);
        snprintf(nm, sizeof nm, "transformer.h.%d.mlp.c_proj.weight", l); ADD(nm, CG_F32, 2, s_fcp, 1);
        snprintf(nm, sizeof nm, "transformer.h.%d.mlp.c_proj.bias", l); ADD(nm, CG_F32, 1, s_c, 0);
    }
    ADD("transformer.ln_f.weight", CG_F32, 1, s_c, 0);
    ADD("transformer.ln_f.bias", CG_F32, 1, s_c, 0);
#undef ADD
    /* the tied head as transformers may save it: the embedding's values */
    names[n] = "lm_head.weight";
    tensors[n] = tensors[0];
    conv[n] = -1;
    n++;
    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    assert_ok(cg_safetensors_write(path, n, names, tensors, 0, NULL, NULL));
    return n;
}

static void test_gpt2_handbuilt_directory(void **state) {
    (void)state;
    char dir[64];
    make_temp_dir(dir, sizeof dir);
    const char *names[64];
    const cg_tensor *tensors[64];
    int conv[64];
    int n = write_hand_gpt2(dir, names, tensors, conv);
    cg_model *m = NULL;
    assert_ok(cg_model_load(dir, CG_CPU, &m));
    assert_int_equal(m->cfg.arch, CG_ARCH_GPT2);
    assert_int_equal(m->cfg.d_ff, 32); /* n_inner null -> 4 n_embd */
    assert_true(m->cfg.tie_embeddings);
    assert_int_equal(m->n_params, n - 5); /* minus 4 mask buffers and the tied head */
    int checked = 0;
    for (int k = 0; k < n; k++) {
        if (conv[k] < 0) continue;
        cg_tensor *p = cg_model_find_param(m, names[k] + strlen("transformer."));
        assert_non_null(p);
        const cg_tensor *f = tensors[k];
        if (conv[k]) {
            /* model [out, in] = file [in, out] transposed */
            assert_int_equal(p->shape[0], f->shape[1]);
            assert_int_equal(p->shape[1], f->shape[0]);
            for (int64_t o = 0; o < p->shape[0]; o++)
                for (int64_t i = 0; i < p->shape[1]; i++)
                    assert_true(cg_get(p, (int64_t[]){o, i}) == hand_value(k, i * f->shape[1] + o));
        } else {
            assert_true(cg_same_shape(p, f));
            for (int64_t i = 0; i < cg_numel(p); i++) assert_true(cg_get_flat(p, i) == hand_value(k, i));
        }
        checked++;
    }
    assert_int_equal(checked, m->n_params);
    cg_model_free(m);
    remove_dir(dir);
}

/* ------------------------------------------------------------------ config.json errors and defaults */

static cg_status config_of(const char *dir, const char *text, cg_model_config *c) {
    write_text(dir, "config.json", text);
    return cg_model_config_from_hf(dir, c);
}

static void test_config_parsing(void **state) {
    (void)state;
    char dir[64];
    make_temp_dir(dir, sizeof dir);
    cg_model_config c;
    /* defaults */
    assert_ok(config_of(dir, "{\"model_type\": \"gpt2\", \"n_embd\": 48, \"n_layer\": 3, \"n_head\": 6, "
                             "\"n_positions\": 32, \"vocab_size\": 100}", &c));
    assert_int_equal(c.arch, CG_ARCH_GPT2);
    assert_int_equal(c.d_ff, 192);
    assert_true(c.tie_embeddings);
    assert_true(c.qkv_bias);
    assert_true(c.norm_eps == 1e-5f);
    assert_int_equal(c.padded_vocab_size, 100);
    assert_ok(config_of(dir, "{\"model_type\": \"llama\", \"hidden_size\": 64, \"intermediate_size\": 96, "
                             "\"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"vocab_size\": 70, "
                             "\"rope_theta\": 500000.0, \"rms_norm_eps\": 1e-05, \"head_dim\": 16, "
                             "\"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 32.0, \"low_freq_factor\": 1.0,"
                             " \"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 8192}}", &c));
    assert_int_equal(c.arch, CG_ARCH_LLAMA);
    assert_int_equal(c.n_kv_head, 4); /* defaults to the heads */
    assert_false(c.tie_embeddings);
    assert_false(c.qkv_bias);
    assert_true(c.rope_theta == 500000.0f);
    assert_true(c.rope_scaling_factor == 32.0f);
    assert_true(c.rope_high_freq_factor == 4.0f);
    assert_int_equal(c.rope_original_max_pos, 8192);
    assert_ok(config_of(dir, "{\"model_type\": \"qwen2\", \"hidden_size\": 64, \"intermediate_size\": 96, "
                             "\"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"num_key_value_heads\": 2, "
                             "\"vocab_size\": 70, \"tie_word_embeddings\": true, \"rope_scaling\": null}", &c));
    assert_true(c.qkv_bias);
    assert_true(c.tie_embeddings);
    assert_int_equal(c.n_kv_head, 2);
    assert_true(c.rope_scaling_factor == 0.0f);

    /* errors */
    assert_int_equal(cg_model_config_from_hf("/nonexistent_cg_dir", &c), CG_ERR_IO);
    assert_error_contains("/nonexistent_cg_dir/config.json");
    assert_int_equal(config_of(dir, "{\"model_type\": \"gpt2\", ", &c), CG_ERR_FORMAT);
    assert_error_contains("config.json");
    assert_int_equal(config_of(dir, "[1, 2]", &c), CG_ERR_FORMAT);
    assert_error_contains("expected an object");
    assert_int_equal(config_of(dir, "{\"model_type\": \"mamba\"}", &c), CG_ERR_FORMAT);
    assert_error_contains("model_type 'mamba' is not supported");
    assert_int_equal(config_of(dir, "{\"n_embd\": 8}", &c), CG_ERR_FORMAT);
    assert_error_contains("missing key 'model_type'");
    assert_int_equal(config_of(dir, "{\"model_type\": \"gpt2\", \"n_embd\": 48, \"n_head\": 6, \"n_positions\": 32, "
                                    "\"vocab_size\": 100}", &c), CG_ERR_FORMAT);
    assert_error_contains("missing key 'n_layer'");
    assert_error_contains(dir); /* and the file */
    assert_int_equal(config_of(dir, "{\"model_type\": \"gpt2\", \"n_embd\": \"48\", \"n_layer\": 3, \"n_head\": 6, "
                                    "\"n_positions\": 32, \"vocab_size\": 100}", &c), CG_ERR_FORMAT);
    assert_error_contains("n_embd");
    assert_int_equal(config_of(dir, "{\"model_type\": \"gpt2\", \"n_embd\": 48, \"n_layer\": 0, \"n_head\": 6, "
                                    "\"n_positions\": 32, \"vocab_size\": 100}", &c), CG_ERR_FORMAT);
    assert_error_contains("'n_layer' is 0");
    assert_int_equal(config_of(dir, "{\"model_type\": \"gpt2\", \"n_embd\": 50, \"n_layer\": 3, \"n_head\": 6, "
                                    "\"n_positions\": 32, \"vocab_size\": 100}", &c), CG_ERR_FORMAT);
    assert_error_contains("not a multiple of n_head 6");
    const char *llama = "{\"model_type\": \"llama\", \"hidden_size\": 64, \"intermediate_size\": 96, "
                        "\"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"vocab_size\": 70, %s}";
    char text[512];
    snprintf(text, sizeof text, llama, "\"head_dim\": 32");
    assert_int_equal(config_of(dir, text, &c), CG_ERR_FORMAT);
    assert_error_contains("head_dim 32 differs from hidden_size / num_attention_heads = 16");
    snprintf(text, sizeof text, llama, "\"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 4.0}");
    assert_int_equal(config_of(dir, text, &c), CG_ERR_FORMAT);
    assert_error_contains("rope_scaling type 'yarn' is not supported");
    snprintf(text, sizeof text, llama, "\"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 4.0}");
    assert_int_equal(config_of(dir, text, &c), CG_ERR_FORMAT);
    assert_error_contains("missing key 'low_freq_factor'");
    snprintf(text, sizeof text, llama, "\"attention_bias\": true");
    assert_int_equal(config_of(dir, text, &c), CG_ERR_FORMAT);
    assert_error_contains("attention_bias true is not supported");
    snprintf(text, sizeof text, llama, "\"hidden_act\": \"gelu\"");
    assert_int_equal(config_of(dir, text, &c), CG_ERR_FORMAT);
    assert_error_contains("hidden_act 'gelu'");
    snprintf(text, sizeof text, llama, "\"num_key_value_heads\": 3");
    assert_int_equal(config_of(dir, text, &c), CG_ERR_FORMAT);
    assert_error_contains("not a multiple of n_kv_head 3");
    snprintf(text, sizeof text, llama, "\"vocab_size\": 71");
    assert_int_equal(config_of(dir, text, &c), CG_ERR_FORMAT);
    assert_error_contains("vocab_size"); /* a duplicate key */
    /* cg_model_load reports config errors too */
    cg_model *m = NULL;
    assert_int_equal(cg_model_load(dir, CG_CPU, &m), CG_ERR_FORMAT);
    assert_null(m);
    remove_dir(dir);
}

/* ------------------------------------------------------------------ malformed weights */

/* Rewrites dir/model.safetensors from the tensors of the saved model, dropping `drop`, adding `add` (a
 * tensor of the given 1-D length) and resizing `resize` to `resize_len` elements. */
static void rewrite_weights(const char *dir, const cg_model *m, const char *drop, const char *add,
                            const char *resize, int64_t len) {
    const char *names[256];
    const cg_tensor *tensors[256];
    int n = 0;
    for (int i = 0; i < m->n_params; i++) {
        if (drop && strcmp(m->params[i].name, drop) == 0) continue;
        names[n] = m->params[i].name;
        tensors[n] = m->params[i].tensor;
        if (resize && strcmp(resize, names[n]) == 0) {
            cg_tensor *t = cg_tensor_zeros(cg_step_arena(CG_CPU), CG_F32, 1, &len);
            assert_non_null(t);
            tensors[n] = t;
        }
        n++;
    }
    if (add) {
        names[n] = add;
        tensors[n] = cg_tensor_zeros(cg_step_arena(CG_CPU), CG_F32, 1, &len);
        n++;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    assert_ok(cg_safetensors_write(path, n, names, tensors, 0, NULL, NULL));
}

static void test_malformed_weights(void **state) {
    (void)state;
    char dir[64];
    make_temp_dir(dir, sizeof dir);
    cg_model *m = random_preset("llama:tiny", 6), *l = NULL;
    assert_ok(cg_model_save_hf(m, dir, 0, CG_F32));

    rewrite_weights(dir, m, "model.norm.weight", NULL, NULL, 0);
    assert_int_equal(cg_model_load(dir, CG_CPU, &l), CG_ERR_FORMAT);
    assert_error_contains("tensor 'model.norm.weight' is missing");
    assert_error_contains(dir);
    assert_null(l);

    rewrite_weights(dir, m, NULL, "model.layers.0.mlp.extra_proj.weight", NULL, 8);
    assert_int_equal(cg_model_load(dir, CG_CPU, &l), CG_ERR_FORMAT);
    assert_error_contains("unexpected tensor 'model.layers.0.mlp.extra_proj.weight'");
    assert_error_contains("model.safetensors");
    /* older Llama checkpoints carry rotary frequency buffers: skipped */
    rewrite_weights(dir, m, NULL, "model.layers.0.self_attn.rotary_emb.inv_freq", NULL, 8);
    assert_ok(cg_model_load(dir, CG_CPU, &l));
    assert_same_params(l, m, false);
    cg_model_free(l);
    l = NULL;
    /* a base-model (LlamaModel) state dict: names without "model." */
    {
        const char *names[256];
        const cg_tensor *tensors[256];
        for (int i = 0; i < m->n_params; i++) {
            const char *nm = m->params[i].name;
            names[i] = strncmp(nm, "model.", 6) == 0 ? nm + 6 : nm;
            tensors[i] = m->params[i].tensor;
        }
        char p[4096];
        snprintf(p, sizeof p, "%s/model.safetensors", dir);
        assert_ok(cg_safetensors_write(p, m->n_params, names, tensors, 0, NULL, NULL));
        assert_ok(cg_model_load(dir, CG_CPU, &l));
        assert_same_params(l, m, false);
        cg_model_free(l);
        l = NULL;
    }

    rewrite_weights(dir, m, NULL, NULL, "model.layers.1.post_attention_layernorm.weight", 63);
    assert_int_equal(cg_model_load(dir, CG_CPU, &l), CG_ERR_FORMAT);
    assert_error_contains("tensor 'model.layers.1.post_attention_layernorm.weight' has shape [63], expected [64]");

    /* a truncated safetensors file: the reader's error, naming the file */
    rewrite_weights(dir, m, NULL, NULL, NULL, 0);
    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(truncate(path, sb.st_size - 4), 0);
    assert_int_equal(cg_model_load(dir, CG_CPU, &l), CG_ERR_FORMAT);
    assert_error_contains("model.safetensors");

    /* no weights at all */
    unlink(path);
    assert_int_equal(cg_model_load(dir, CG_CPU, &l), CG_ERR_IO);
    assert_error_contains("no model.safetensors or model.safetensors.index.json");

    /* an index naming a shard that is not there */
    assert_ok(cg_model_save_hf(m, dir, 60000, CG_F32));
    cJSON *idx = read_json(dir, "model.safetensors.index.json");
    char shard[64];
    snprintf(shard, sizeof shard, "%s",
             cJSON_GetObjectItem(cJSON_GetObjectItem(idx, "weight_map"), "model.norm.weight")->valuestring);
    cJSON_Delete(idx);
    snprintf(path, sizeof path, "%s/%s", dir, shard);
    assert_int_equal(unlink(path), 0);
    assert_int_equal(cg_model_load(dir, CG_CPU, &l), CG_ERR_IO);
    char want[128];
    snprintf(want, sizeof want, "names shard '%s'", shard);
    assert_error_contains(want);
    assert_error_contains("model.safetensors.index.json");
    assert_error_contains("cannot open"); /* the reader's own reason follows */
    /* an index naming a tensor its shard does not hold: model.norm.weight is not in the first shard */
    char first[64], index[256];
    snprintf(first, sizeof first, "model-00001%s", shard + strlen("model-00001"));
    assert_true(file_exists(dir, first));
    assert_string_not_equal(first, shard);
    snprintf(index, sizeof index, "{\"metadata\": {\"total_size\": 4}, \"weight_map\": {\"model.norm.weight\": \"%s\"}}",
             first);
    write_text(dir, "model.safetensors.index.json", index);
    assert_int_equal(cg_model_load(dir, CG_CPU, &l), CG_ERR_FORMAT);
    snprintf(want, sizeof want, "maps tensor 'model.norm.weight' to %s, which holds no such tensor", first);
    assert_error_contains(want);
    write_text(dir, "model.safetensors.index.json", "{\"metadata\": {}, \"weight_map\": {\"a\": \"../x\"}}");
    assert_int_equal(cg_model_load(dir, CG_CPU, &l), CG_ERR_FORMAT);
    assert_error_contains("'../x', which is not a file in the directory");
    write_text(dir, "model.safetensors.index.json", "{\"metadata\": {}}");
    assert_int_equal(cg_model_load(dir, CG_CPU, &l), CG_ERR_FORMAT);
    assert_error_contains("no \"weight_map\" object");
    assert_null(l);
    cg_model_free(m);
    remove_dir(dir);
}

#endif /* CG_HAVE_CJSON */

static void test_save_errors(void **state) {
    (void)state;
    cg_model *m = random_preset("llama:tiny", 7);
    assert_int_equal(cg_model_save_hf(m, "/tmp/cg_unused", 0, CG_F16), CG_ERR_DTYPE);
    assert_error_contains("f16");
    assert_int_equal(cg_model_save_hf(m, "/proc/cg_no_such_dir/x", 0, CG_F32), CG_ERR_IO);
    assert_error_contains("cannot create directory");
    assert_int_equal(cg_model_save_llmc(m, "/tmp/cg_unused.bin", 3), CG_ERR_INVALID_ARG);
    assert_error_contains("not llm.c-shaped");
    cg_model_free(m);
    m = random_preset("gpt2:tiny", 7);
    assert_int_equal(cg_model_save_llmc(m, "/tmp/cg_unused.bin", 4), CG_ERR_INVALID_ARG);
    assert_error_contains("version 4");
    cg_model_free(m);
}

/* ------------------------------------------------------------------ llm.c checkpoints */

static int32_t read_i32(FILE *f, long offset) {
    int32_t v;
    assert_int_equal(fseek(f, offset, SEEK_SET), 0);
    assert_int_equal(fread(&v, 4, 1, f), 1);
    return v;
}

static float read_f32(FILE *f, long offset) {
    float v;
    assert_int_equal(fseek(f, offset, SEEK_SET), 0);
    assert_int_equal(fread(&v, 4, 1, f), 1);
    return v;
}

static void test_llmc_roundtrip(void **state) {
    (void)state;
    char dir[64], path[128];
    make_temp_dir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/model_00000010.bin", dir);
    cg_model_config c;
    assert_ok(cg_model_config_preset("gpt2:tiny", &c));
    c.vocab_size = 60; /* padded to 64 as llm.c pads */
    const int64_t C = 64, L = 2, T = 128, Vp = 64;
    cg_model *m = random_model(&c, 8);
    assert_ok(cg_model_save_llmc(m, path, 3));
    int64_t numel = Vp * C + T * C + L * (12 * C * C + 13 * C) + 2 * C;
    assert_int_equal(numel, cg_model_num_elements(m));
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    assert_int_equal(ftell(f), 1024 + 4 * numel);
    int32_t want_header[8] = {20240326, 3, 128, 60, 2, 4, 64, 64};
    for (int i = 0; i < 8; i++) assert_int_equal(read_i32(f, 4 * i), want_header[i]);
    assert_int_equal(read_i32(f, 4 * 8), 0);
    /* llm.c's order: wte, wpe, ln1w (L), ln1b (L), qkvw (L), ...: layer 1's ln1b[7], qkvw[5][3] */
    assert_true(read_f32(f, 1024 + 4 * (Vp * C + T * C + L * C + C + 7)) == cg_get_flat(m->blocks[1].norm1_b, 7));
    assert_true(read_f32(f, 1024 + 4 * (Vp * C + 5 * C + 2)) == cg_get_flat(m->wpe, 5 * C + 2));
    long qkvw1 = 1024 + 4 * (Vp * C + T * C + 2 * L * C + 1 * 3 * C * C);
    assert_true(read_f32(f, qkvw1 + 4 * (5 * C + 3)) == cg_get(m->blocks[1].qkv.weight, (int64_t[]){5, 3}));
    /* fcprojw (L) comes after fcw and fcb; layer 0's fcprojw[2][100] ([C, 4C]) */
    long fcprojw0 = 1024 + 4 * (Vp * C + T * C + L * (2 * C + 3 * C * C + 3 * C + C * C + C + 2 * C + 4 * C * C + 4 * C));
    assert_true(read_f32(f, fcprojw0 + 4 * (2 * 4 * C + 100)) == cg_get(m->blocks[0].proj.weight, (int64_t[]){2, 100}));
    /* the last value is lnfb[C-1] */
    assert_true(read_f32(f, 1024 + 4 * (numel - 1)) == cg_get_flat(m->norm_f_b, C - 1));
    fclose(f);
    cg_model *l = NULL;
    assert_ok(cg_model_load(path, CG_CPU, &l));
    assert_same_config(&l->cfg, &m->cfg);
    assert_same_params(l, m, false);
    assert_same_forward(l, m);
    cg_model_free(l);

    /* version 5: bf16 */
    assert_ok(cg_model_save_llmc(m, path, 5));
    f = fopen(path, "rb");
    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    assert_int_equal(ftell(f), 1024 + 2 * numel);
    assert_int_equal(read_i32(f, 4), 5);
    fclose(f);
    assert_ok(cg_model_load_llmc(path, CG_CPU, &l));
    assert_same_params(l, m, true);
    cg_model_free(l);
    cg_model_free(m);
    remove_dir(dir);
}

static void write_bytes(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(p, 1, n, f), n);
    fclose(f);
}

static void test_llmc_errors(void **state) {
    (void)state;
    char dir[64], path[128];
    make_temp_dir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/model.bin", dir);
    cg_model *m = random_preset("gpt2:tiny", 9), *l = NULL;
    int32_t h[256] = {20240326, 3, 128, 64, 2, 4, 64, 64};

    h[0] = 20240520; /* a token shard's magic */
    write_bytes(path, h, sizeof h);
    assert_int_equal(cg_model_load(path, CG_CPU, &l), CG_ERR_FORMAT);
    assert_error_contains("magic 20240520 (expected 20240326)");
    h[0] = 20240326, h[1] = 1;
    write_bytes(path, h, sizeof h);
    assert_int_equal(cg_model_load(path, CG_CPU, &l), CG_ERR_FORMAT);
    assert_error_contains("version 1 (unpadded fp32) is not supported");
    h[1] = 4;
    write_bytes(path, h, sizeof h);
    assert_int_equal(cg_model_load(path, CG_CPU, &l), CG_ERR_FORMAT);
    assert_error_contains("unknown llm.c checkpoint version 4");
    h[1] = 3, h[7] = 32; /* padded < vocab */
    write_bytes(path, h, sizeof h);
    assert_int_equal(cg_model_load(path, CG_CPU, &l), CG_ERR_FORMAT);
    assert_error_contains("implausible llm.c header");
    h[7] = 64;
    write_bytes(path, h, 100);
    assert_int_equal(cg_model_load(path, CG_CPU, &l), CG_ERR_FORMAT);
    assert_error_contains("shorter than the 1024-byte header");
    write_bytes(path, h, sizeof h); /* a header and no parameters */
    assert_int_equal(cg_model_load(path, CG_CPU, &l), CG_ERR_FORMAT);
    assert_error_contains("the file is 1024 bytes");
    assert_error_contains("(truncated)");

    assert_ok(cg_model_save_llmc(m, path, 5));
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(truncate(path, sb.st_size - 2), 0);
    assert_int_equal(cg_model_load(path, CG_CPU, &l), CG_ERR_FORMAT);
    assert_error_contains("(truncated)");
    assert_int_equal(truncate(path, sb.st_size + 8), 0); /* trailing bytes */
    assert_int_equal(cg_model_load(path, CG_CPU, &l), CG_ERR_FORMAT);
    char want[64];
    snprintf(want, sizeof want, "describes %lld bytes", (long long)sb.st_size);
    assert_error_contains(want);
    assert_int_equal(cg_model_load("/nonexistent_cg_model.bin", CG_CPU, &l), CG_ERR_IO);
    assert_error_contains("/nonexistent_cg_model.bin");
    assert_null(l);
    cg_model_free(m);
    remove_dir(dir);
}

/* ------------------------------------------------------------------ CUDA */

#ifdef CG_HAVE_CJSON
/* Load onto the GPU, save from it, and get the CPU model back bit for bit. */
static void test_cuda_load_save(void **state) {
    (void)state;
    cg_test_require_gpu();
    char dir[64], dir2[80];
    make_temp_dir(dir, sizeof dir);
    snprintf(dir2, sizeof dir2, "%s/again", dir);
    cg_model *m = random_preset("gpt2:tiny", 10), *g = NULL, *l = NULL;
    assert_ok(cg_model_save_hf(m, dir, 0, CG_BF16));
    assert_ok(cg_model_load(dir, CG_CUDA(0), &g));
    assert_int_equal(g->wte->device.type, CG_DEVICE_CUDA);
    assert_ok(cg_model_save_hf(g, dir2, 0, CG_F32));
    assert_ok(cg_model_load(dir2, CG_CPU, &l));
    assert_same_params(l, m, true);
    cg_model_free(l);
    char path[128];
    snprintf(path, sizeof path, "%s/model.bin", dir);
    assert_ok(cg_model_save_llmc(g, path, 3));
    assert_ok(cg_model_load(path, CG_CPU, &l));
    assert_same_params(l, m, true);
    cg_model_free(l);
    cg_model_free(g);
    cg_model_free(m);
    remove_dir(dir);
}

#endif

int main(void) {
    /* the Hugging Face side reads JSON: without cJSON only the llm.c tests run */
    const struct CMUnitTest tests[] = {
#ifdef CG_HAVE_CJSON
        cmocka_unit_test_teardown(test_gpt2_tied_roundtrip, cg_test_teardown),
        cmocka_unit_test_teardown(test_llama_untied_padded_roundtrip, cg_test_teardown),
        cmocka_unit_test_teardown(test_qwen_bias_roundtrip, cg_test_teardown),
        cmocka_unit_test_teardown(test_sharded_roundtrip, cg_test_teardown),
        cmocka_unit_test_teardown(test_bf16_roundtrip, cg_test_teardown),
        cmocka_unit_test_teardown(test_gpt2_handbuilt_directory, cg_test_teardown),
        cmocka_unit_test_teardown(test_config_parsing, cg_test_teardown),
        cmocka_unit_test_teardown(test_malformed_weights, cg_test_teardown),
        cmocka_unit_test_teardown(test_cuda_load_save, cg_test_teardown),
#endif
        cmocka_unit_test_teardown(test_save_errors, cg_test_teardown),
        cmocka_unit_test_teardown(test_llmc_roundtrip, cg_test_teardown),
        cmocka_unit_test_teardown(test_llmc_errors, cg_test_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
