/* core/safetensors: round trips of every cgrad dtype (strided sources, empty and 0-rank tensors,
 * metadata), header alignment, conversion on load, and one hand-built file per malformed case. */
#include "test_util.h"

#include <dirent.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/safetensors.h"

static char g_dir[64];

static int setup_dir(void **state) {
    (void)state;
    snprintf(g_dir, sizeof g_dir, "/tmp/cg_test_st_XXXXXX");
    return mkdtemp(g_dir) ? 0 : -1;
}

static int remove_dir(void **state) {
    (void)state;
    DIR *d = opendir(g_dir);
    if (!d) return -1;
    struct dirent *de;
    char p[512];
    while ((de = readdir(d))) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) continue;
        snprintf(p, sizeof p, "%s/%s", g_dir, de->d_name);
        unlink(p);
    }
    closedir(d);
    return rmdir(g_dir);
}

static const char *tmp_path(const char *name) {
    static char p[8][256];
    static int k;
    k = (k + 1) % 8;
    snprintf(p[k], sizeof p[k], "%s/%s", g_dir, name);
    return p[k];
}

/* Number of files in the test directory whose name contains `part`. */
static int count_files_with(const char *part) {
    DIR *d = opendir(g_dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)))
        if (strstr(de->d_name, part)) n++;
    closedir(d);
    return n;
}

/* Writes the raw bytes of a safetensors file: an 8-byte little-endian length (header_len, or the real
 * length of `header` when header_len is UINT64_MAX), the header text, then data_len bytes 0, 1, 2, ... */
static const char *write_raw(const char *name, uint64_t header_len, const char *header, size_t data_len) {
    const char *path = tmp_path(name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    uint64_t n = header_len == UINT64_MAX ? strlen(header) : header_len;
    unsigned char le[8];
    for (int i = 0; i < 8; i++) le[i] = (unsigned char)(n >> (8 * i));
    assert_int_equal(fwrite(le, 1, 8, f), 8);
    if (header) assert_int_equal(fwrite(header, 1, strlen(header), f), strlen(header));
    for (size_t i = 0; i < data_len; i++) fputc((int)(i & 0xff), f);
    fclose(f);
    return path;
}

static long file_size(const char *path) {
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    return (long)sb.st_size;
}

static uint64_t read_header_len(const char *path) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    unsigned char b[8];
    assert_int_equal(fread(b, 1, 8, f), 8);
    fclose(f);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | b[i];
    return n;
}

#ifdef CG_HAVE_CJSON

static cg_arena *cpu(void) { return cg_step_arena(CG_CPU); }

/* ------------------------------------------------------------------ round trip */

static void test_round_trip_all_dtypes(void **state) {
    (void)state;
    uint64_t seed = 7;
    float f32v[6];
    for (int i = 0; i < 6; i++) f32v[i] = cg_test_randf(&seed) * 100.0f;
    const uint16_t bf16v[4] = {0x3f80, 0xc2f7, 0x0001, 0xff80}; /* 1, -123.5, a subnormal, -inf */
    const uint16_t f16v[3] = {0x3c00, 0xc500, 0x7bff};          /* 1, -5, 65504 */
    const int32_t i32v[4] = {-2147483647 - 1, -1, 0, 2147483647};
    const int64_t i64v[3] = {-((int64_t)1 << 62), 1234567890123LL, INT64_MAX};
    const uint8_t u8v[5] = {0, 1, 127, 128, 255};
    float src34[12]; /* [3, 4]; stored transposed as [4, 3] */
    for (int i = 0; i < 12; i++) src34[i] = (float)(i * 3 - 7) * 0.5f;
    const float scalar = 3.25f;

    const int64_t s_23[] = {2, 3}, s_4[] = {4}, s_3[] = {3}, s_22[] = {2, 2}, s_5[] = {5}, s_34[] = {3, 4},
                  s_03[] = {0, 3};
    cg_tensor *t_f32 = cg_tensor_from_data(cpu(), CG_F32, 2, s_23, f32v);
    cg_tensor *t_bf16 = cg_tensor_from_data(cpu(), CG_BF16, 1, s_4, bf16v);
    cg_tensor *t_f16 = cg_tensor_from_data(cpu(), CG_F16, 1, s_3, f16v);
    cg_tensor *t_i32 = cg_tensor_from_data(cpu(), CG_I32, 2, s_22, i32v);
    cg_tensor *t_i64 = cg_tensor_from_data(cpu(), CG_I64, 1, s_3, i64v);
    cg_tensor *t_u8 = cg_tensor_from_data(cpu(), CG_U8, 1, s_5, u8v);
    cg_tensor *t_34 = cg_tensor_from_data(cpu(), CG_F32, 2, s_34, src34);
    cg_tensor *t_T = cg_view_transpose(t_34, 0, 1); /* [4, 3], strides [1, 4] */
    cg_tensor *t_empty = cg_tensor_empty(cpu(), CG_F32, 2, s_03);
    cg_tensor *t_scalar = cg_tensor_from_data(cpu(), CG_F32, 0, NULL, &scalar);
    assert_non_null(t_T);
    assert_false(cg_is_contiguous(t_T));
    assert_non_null(t_empty);
    assert_non_null(t_scalar);

    const char *names[] = {"model.f32", "b.bf16", "c.f16", "d.i32", "e.i64", "f.u8", "g.transposed", "h.empty",
                           "i.scalar"};
    const cg_tensor *ts[] = {t_f32, t_bf16, t_f16, t_i32, t_i64, t_u8, t_T, t_empty, t_scalar};
    const char *mk[] = {"format", "note"}, *mv[] = {"pt", "quote\" back\\slash \xc3\xa9"};
    const char *path = tmp_path("all.safetensors");
    assert_ok(cg_safetensors_write(path, 9, names, ts, 2, mk, mv));
    assert_int_equal(count_files_with(".tmp."), 0);

    /* The header is padded so that the data starts at a multiple of 8. */
    uint64_t n = read_header_len(path);
    assert_int_equal((8 + n) % 8, 0);
    size_t data_bytes = 24 + 8 + 6 + 16 + 24 + 5 + 48 + 0 + 4;
    assert_int_equal(file_size(path), (long)(8 + n + data_bytes));

    cg_safetensors *st = NULL;
    assert_ok(cg_safetensors_open(path, &st));
    assert_int_equal(cg_safetensors_count(st), 9);
    assert_int_equal(cg_safetensors_data_bytes(st), data_bytes);
    assert_string_equal(cg_safetensors_metadata(st, "format"), "pt");
    assert_string_equal(cg_safetensors_metadata(st, "note"), mv[1]);
    assert_null(cg_safetensors_metadata(st, "absent"));
    assert_int_equal(cg_safetensors_metadata_count(st), 2);

    /* File order follows the order given (empty tensors sort before others at the same offset). */
    const char *order[] = {"model.f32", "b.bf16", "c.f16", "d.i32", "e.i64", "f.u8", "g.transposed", "h.empty",
                           "i.scalar"};
    static const char *dtn[] = {"F32", "BF16", "F16", "I32", "I64", "U8", "F32", "F32", "F32"};
    uint64_t off = 0;
    for (int i = 0; i < 9; i++) {
        const cg_safetensors_entry *e = cg_safetensors_entry_at(st, i);
        assert_non_null(e);
        assert_string_equal(e->name, order[i]);
        assert_string_equal(e->dtype_name, dtn[i]);
        assert_true(e->dtype_supported);
        assert_int_equal(e->offset, off);
        assert_int_equal(e->nbytes, cg_nbytes(ts[i]));
        assert_int_equal((uintptr_t)e->data % 8 == 0, off % 8 == 0);
        assert_ptr_equal(cg_safetensors_find(st, names[i]), e);
        off += e->nbytes;
    }
    assert_null(cg_safetensors_entry_at(st, 9));
    assert_null(cg_safetensors_find(st, "nope"));

    /* Exact bytes in the file. */
    assert_memory_equal(cg_safetensors_find(st, "model.f32")->data, f32v, sizeof f32v);
    assert_memory_equal(cg_safetensors_find(st, "b.bf16")->data, bf16v, sizeof bf16v);
    assert_memory_equal(cg_safetensors_find(st, "c.f16")->data, f16v, sizeof f16v);
    assert_memory_equal(cg_safetensors_find(st, "d.i32")->data, i32v, sizeof i32v);
    assert_memory_equal(cg_safetensors_find(st, "e.i64")->data, i64v, sizeof i64v);
    assert_memory_equal(cg_safetensors_find(st, "f.u8")->data, u8v, sizeof u8v);
    float want_T[12];
    for (int r = 0; r < 4; r++)
        for (int c = 0; c < 3; c++) want_T[r * 3 + c] = src34[c * 4 + r];
    assert_memory_equal(cg_safetensors_find(st, "g.transposed")->data, want_T, sizeof want_T);
    const cg_safetensors_entry *ee = cg_safetensors_find(st, "h.empty");
    assert_int_equal(ee->ndim, 2);
    assert_int_equal(ee->shape[0], 0);
    assert_int_equal(ee->shape[1], 3);
    assert_int_equal(ee->nbytes, 0);
    assert_int_equal(cg_safetensors_find(st, "i.scalar")->ndim, 0);

    /* Loading in the stored dtype gives the same tensors back. */
    for (int i = 0; i < 9; i++) {
        const cg_safetensors_entry *e = cg_safetensors_find(st, names[i]);
        cg_tensor *t = cg_safetensors_load(st, names[i], cpu(), e->dtype);
        assert_non_null(t);
        assert_true(cg_same_shape(t, ts[i]));
        assert_int_equal(t->dtype, ts[i]->dtype);
        for (int64_t k = 0; k < cg_numel(t); k++) assert_true(cg_get_flat(t, k) == cg_get_flat(ts[i], k));
        if (ts[i]->dtype == CG_I64) /* beyond double precision: compare the integers themselves */
            assert_memory_equal(cg_data(t), i64v, sizeof i64v);
    }
    cg_tensor *sc = cg_safetensors_load(st, "i.scalar", cpu(), CG_F32);
    assert_int_equal(sc->ndim, 0);
    assert_close(cg_get_flat(sc, 0), 3.25, 0, 0);
    cg_safetensors_close(st);
}

static void test_overwrite_is_atomic_rename(void **state) {
    (void)state;
    const int64_t s[] = {2};
    const float a[] = {1, 2}, b[] = {5, 6};
    const char *path = tmp_path("over.safetensors");
    const char *nm[] = {"w"};
    const cg_tensor *ta[] = {cg_tensor_from_data(cpu(), CG_F32, 1, s, a)};
    const cg_tensor *tb[] = {cg_tensor_from_data(cpu(), CG_F32, 1, s, b)};
    assert_ok(cg_safetensors_write(path, 1, nm, ta, 0, NULL, NULL));
    assert_ok(cg_safetensors_write(path, 1, nm, tb, 0, NULL, NULL));
    cg_safetensors *st;
    assert_ok(cg_safetensors_open(path, &st));
    assert_memory_equal(cg_safetensors_find(st, "w")->data, b, sizeof b);
    assert_int_equal(cg_safetensors_metadata_count(st), 0);
    cg_safetensors_close(st);
    assert_int_equal(count_files_with(".tmp."), 0);
}

static void test_write_errors(void **state) {
    (void)state;
    const int64_t s[] = {1};
    const float a[] = {1};
    cg_tensor *t = cg_tensor_from_data(cpu(), CG_F32, 1, s, a);
    const cg_tensor *ts[] = {t, t};
    const char *dup[] = {"x", "x"};
    const char *path = tmp_path("dup.safetensors");
    assert_int_equal(cg_safetensors_write(path, 2, dup, ts, 0, NULL, NULL), CG_ERR_INVALID_ARG);
    assert_error_contains("duplicate tensor name 'x'");
    assert_int_equal(access(path, F_OK), -1);
    const char *reserved[] = {"__metadata__"};
    assert_int_equal(cg_safetensors_write(path, 1, reserved, ts, 0, NULL, NULL), CG_ERR_INVALID_ARG);
    assert_error_contains("reserved");
    const char *mk[] = {"k", "k"}, *mv[] = {"1", "2"}, *one[] = {"y"};
    assert_int_equal(cg_safetensors_write(path, 1, one, ts, 2, mk, mv), CG_ERR_INVALID_ARG);
    assert_error_contains("duplicate metadata key 'k'");
    const char *nodir = "/nonexistent_cg_dir/x.safetensors";
    assert_int_equal(cg_safetensors_write(nodir, 1, one, ts, 0, NULL, NULL), CG_ERR_IO);
    assert_error_contains(nodir);
    assert_int_equal(count_files_with(".tmp."), 0);
}

/* A name that needs JSON escaping survives the round trip; zero tensors is a valid file. */
static void test_escaped_names_and_empty_file(void **state) {
    (void)state;
    const int64_t s[] = {1};
    const int32_t v[] = {-9};
    const cg_tensor *ts[] = {cg_tensor_from_data(cpu(), CG_I32, 1, s, v)};
    const char *nm[] = {"a\"b\\c\n\x01\xe2\x82\xac"};
    const char *path = tmp_path("esc.safetensors");
    assert_ok(cg_safetensors_write(path, 1, nm, ts, 0, NULL, NULL));
    cg_safetensors *st;
    assert_ok(cg_safetensors_open(path, &st));
    assert_non_null(cg_safetensors_find(st, nm[0]));
    cg_tensor *t = cg_safetensors_load(st, nm[0], cpu(), CG_I64);
    assert_int_equal((int64_t)cg_get_flat(t, 0), -9);
    cg_safetensors_close(st);

    path = tmp_path("none.safetensors");
    assert_ok(cg_safetensors_write(path, 0, NULL, NULL, 0, NULL, NULL));
    assert_int_equal(file_size(path) % 8, 0);
    assert_ok(cg_safetensors_open(path, &st));
    assert_int_equal(cg_safetensors_count(st), 0);
    assert_int_equal(cg_safetensors_data_bytes(st), 0);
    cg_safetensors_close(st);
}

/* Many tensors: every name is found (the lookup is a binary search over a sorted index). */
static void test_many_tensors_lookup(void **state) {
    (void)state;
    enum { N = 300 };
    char names_buf[N][48];
    const char *names[N];
    const cg_tensor *ts[N];
    const int64_t s[] = {2};
    for (int i = 0; i < N; i++) {
        snprintf(names_buf[i], sizeof names_buf[i], "model.layers.%d.mlp.weight", (i * 7919) % N);
        names[i] = names_buf[i];
        const float v[2] = {(float)i, (float)-i};
        ts[i] = cg_tensor_from_data(cpu(), CG_F32, 1, s, v);
    }
    const char *path = tmp_path("many.safetensors");
    assert_ok(cg_safetensors_write(path, N, names, ts, 0, NULL, NULL));
    cg_safetensors *st;
    assert_ok(cg_safetensors_open(path, &st));
    for (int i = 0; i < N; i++) {
        const cg_safetensors_entry *e = cg_safetensors_find(st, names[i]);
        assert_non_null(e);
        float v[2];
        memcpy(v, e->data, sizeof v);
        assert_true(v[0] == (float)i && v[1] == (float)-i);
    }
    cg_safetensors_close(st);
}

/* ------------------------------------------------------------------ conversion on load */

static void test_convert_on_load(void **state) {
    (void)state;
    /* bf16 file -> f32: exact widening. */
    const uint16_t bf[] = {0x3f80, 0xc040, 0x3e20, 0x7f80};
    const double bf_want[] = {1.0, -3.0, 0.15625, INFINITY};
    /* f32 file -> bf16 with round-to-nearest-even: 1 + 2^-8 is a tie (rounds down to even 0x3f80);
     * 1 + 3*2^-9 is past the midpoint (up to 0x3f81); 1 + 2^-7 + 2^-8 is a tie from odd 0x3f81 (up to
     * even 0x3f82); -1 - 2^-9 is below the midpoint (down to 0xbf80). */
    const float fl[] = {1.0f + 0x1p-8f, 1.0f + 3 * 0x1p-9f, 1.0f + 0x1p-7f + 0x1p-8f, -1.0f - 0x1p-9f};
    const uint16_t fl_want[] = {0x3f80, 0x3f81, 0x3f82, 0xbf80};
    const int32_t iv[] = {-3, 70000};
    const int64_t s4[] = {4}, s2[] = {2};
    const cg_tensor *ts[] = {cg_tensor_from_data(cpu(), CG_BF16, 1, s4, bf), cg_tensor_from_data(cpu(), CG_F32, 1, s4, fl),
                             cg_tensor_from_data(cpu(), CG_I32, 1, s2, iv)};
    const char *nm[] = {"bf", "fl", "iv"};
    const char *path = tmp_path("conv.safetensors");
    assert_ok(cg_safetensors_write(path, 3, nm, ts, 0, NULL, NULL));
    cg_safetensors *st;
    assert_ok(cg_safetensors_open(path, &st));
    cg_tensor *a = cg_safetensors_load(st, "bf", cpu(), CG_F32);
    assert_non_null(a);
    assert_int_equal(a->dtype, CG_F32);
    for (int i = 0; i < 4; i++) assert_close(cg_get_flat(a, i), bf_want[i], 0, 0);
    cg_tensor *b = cg_safetensors_load(st, "fl", cpu(), CG_BF16);
    assert_non_null(b);
    const uint16_t *bits = cg_data(b);
    for (int i = 0; i < 4; i++) assert_int_equal(bits[i], fl_want[i]);
    cg_tensor *c = cg_safetensors_load(st, "iv", cpu(), CG_F32);
    assert_close(cg_get_flat(c, 0), -3.0, 0, 0);
    assert_close(cg_get_flat(c, 1), 70000.0, 0, 0);
    /* load_into a strided destination (a transposed view of a [1, 4] buffer is [4, 1]: use a slice). */
    const int64_t s8[] = {8};
    cg_tensor *big = cg_tensor_zeros(cpu(), CG_F32, 1, s8);
    cg_tensor *every2 = cg_view_slice(big, 0, 0, 8, 2);
    assert_ok(cg_safetensors_load_into(st, "bf", every2));
    for (int i = 0; i < 8; i++) assert_close(cg_get_flat(big, i), i % 2 ? 0.0 : bf_want[i / 2], 0, 0);
    /* Errors. */
    assert_null(cg_safetensors_load(st, "missing", cpu(), CG_F32));
    assert_int_equal(cg_last_status(), CG_ERR_INVALID_ARG);
    assert_error_contains("no tensor named 'missing'");
    assert_error_contains(path);
    cg_tensor *wrong = cg_tensor_zeros(cpu(), CG_F32, 1, s2);
    assert_int_equal(cg_safetensors_load_into(st, "bf", wrong), CG_ERR_SHAPE);
    assert_error_contains("tensor 'bf' has shape [4]");
    cg_safetensors_close(st);
}

/* Files from writers that do not pad the header leave the data unaligned; loads still convert. */
static void test_unaligned_data_loads(void **state) {
    (void)state;
    const char *h = "{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}"; /* 54 bytes: data at 62 */
    const char *path = tmp_path("unaligned.safetensors");
    FILE *f = fopen(path, "wb");
    unsigned char le[8] = {(unsigned char)strlen(h)};
    fwrite(le, 1, 8, f);
    fputs(h, f);
    const float v[2] = {1.5f, -2.0f + 0x1p-20f};
    fwrite(v, sizeof v, 1, f);
    fclose(f);
    cg_safetensors *st;
    assert_ok(cg_safetensors_open(path, &st));
    assert_int_equal((uintptr_t)cg_safetensors_find(st, "x")->data % 4, 2);
    cg_tensor *a = cg_safetensors_load(st, "x", cpu(), CG_F32);
    assert_close(cg_get_flat(a, 0), 1.5, 0, 0);
    assert_close(cg_get_flat(a, 1), -2.0 + 0x1p-20, 0, 0);
    cg_tensor *b = cg_safetensors_load(st, "x", cpu(), CG_BF16);
    assert_close(cg_get_flat(b, 0), 1.5, 0, 0);
    assert_close(cg_get_flat(b, 1), -2.0, 0, 0);
    cg_safetensors_close(st);
}

static void test_unsupported_dtype_load(void **state) {
    (void)state;
    const char *path = write_raw("f64.safetensors", UINT64_MAX,
                                 "{\"d\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]},"
                                 "\"q\":{\"dtype\":\"I8\",\"shape\":[2],\"data_offsets\":[8,10]}}",
                                 10);
    cg_safetensors *st;
    assert_ok(cg_safetensors_open(path, &st));
    const cg_safetensors_entry *e = cg_safetensors_find(st, "d");
    assert_false(e->dtype_supported);
    assert_string_equal(e->dtype_name, "F64");
    assert_null(cg_safetensors_load(st, "d", cpu(), CG_F32));
    assert_int_equal(cg_last_status(), CG_ERR_DTYPE);
    assert_error_contains("tensor 'd' has dtype F64");
    const int64_t s2[] = {2};
    cg_tensor *t = cg_tensor_zeros(cpu(), CG_F32, 1, s2);
    assert_int_equal(cg_safetensors_load_into(st, "q", t), CG_ERR_DTYPE);
    assert_error_contains("tensor 'q' has dtype I8");
    cg_safetensors_close(st);
}

/* ------------------------------------------------------------------ malformed files */

static void expect_bad(const char *path, cg_status want, const char *needle) {
    cg_safetensors *st = (cg_safetensors *)1;
    cg_status s = cg_safetensors_open(path, &st);
    if (s != want) {
        print_error("open(%s) = %d (%s), expected %d\n", path, (int)s, cg_last_error(), (int)want);
        fail();
    }
    assert_null(st);
    assert_error_contains(path);
    assert_error_contains(needle);
}

#define T_(name, dtype, shape, b, e) "\"" name "\":{\"dtype\":\"" dtype "\",\"shape\":" shape ",\"data_offsets\":[" #b "," #e "]}"

static void test_bad_short_file(void **state) {
    (void)state;
    const char *path = tmp_path("short.safetensors");
    FILE *f = fopen(path, "wb");
    fwrite("\x05\0\0\0\0", 1, 5, f);
    fclose(f);
    expect_bad(path, CG_ERR_FORMAT, "the file is 5 bytes, too short");
}

static void test_bad_header_past_end(void **state) {
    (void)state;
    expect_bad(write_raw("past.safetensors", 100, "{}", 0), CG_ERR_FORMAT,
               "header length 100 runs past the end of the file (10 bytes)");
}

static void test_bad_header_too_large(void **state) {
    (void)state;
    expect_bad(write_raw("huge.safetensors", 100000001, "{}", 0), CG_ERR_FORMAT,
               "header length 100000001 exceeds the limit of 100000000 bytes");
}

static void test_bad_json(void **state) {
    (void)state;
    expect_bad(write_raw("badjson.safetensors", UINT64_MAX, "{\"a\": {\"dtype\": }", 0), CG_ERR_FORMAT,
               "invalid JSON at byte 16");
    expect_bad(write_raw("nulpad.safetensors", 4, "{}\n\x01", 0), CG_ERR_FORMAT, "unexpected data after the JSON value");
    expect_bad(write_raw("utf8.safetensors", UINT64_MAX, "{\"\xff\":1}", 0), CG_ERR_FORMAT, "not valid UTF-8 (byte 2");
}

static void test_bad_not_object(void **state) {
    (void)state;
    expect_bad(write_raw("array.safetensors", UINT64_MAX, "[1, 2]", 0), CG_ERR_FORMAT,
               "the header is a JSON array, not an object");
    expect_bad(write_raw("entry.safetensors", UINT64_MAX, "{\"w\": 3}", 0), CG_ERR_FORMAT,
               "tensor 'w': the entry is a JSON number, not an object");
}

static void test_bad_duplicate_key(void **state) {
    (void)state;
    expect_bad(write_raw("dup.safetensors", UINT64_MAX, "{" T_("a", "U8", "[1]", 0, 1) "," T_("a", "U8", "[1]", 1, 2) "}", 2),
               CG_ERR_FORMAT, "duplicate key 'a'");
    expect_bad(write_raw("dup2.safetensors", UINT64_MAX,
                         "{\"a\":{\"dtype\":\"U8\",\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1),
               CG_ERR_FORMAT, "duplicate key 'dtype' in the object 'a'");
}

static void test_bad_unknown_dtype(void **state) {
    (void)state;
    expect_bad(write_raw("dtype.safetensors", UINT64_MAX, "{" T_("w", "F7", "[1]", 0, 1) "}", 1), CG_ERR_FORMAT,
               "unknown dtype 'F7' for tensor 'w'");
    expect_bad(write_raw("dtype2.safetensors", UINT64_MAX, "{\"w\":{\"dtype\":5,\"shape\":[1],\"data_offsets\":[0,1]}}", 1),
               CG_ERR_FORMAT, "tensor 'w': 'dtype' must be a string");
}

static void test_bad_shape(void **state) {
    (void)state;
    expect_bad(write_raw("neg.safetensors", UINT64_MAX, "{" T_("w", "U8", "[2, -1]", 0, 0) "}", 0), CG_ERR_FORMAT,
               "tensor 'w': shape[1] = -1 is negative");
    expect_bad(write_raw("frac.safetensors", UINT64_MAX, "{" T_("w", "U8", "[2.5]", 0, 2) "}", 2), CG_ERR_FORMAT,
               "tensor 'w': shape[0] must be an integer, got number 2.5");
    expect_bad(write_raw("strshape.safetensors", UINT64_MAX, "{" T_("w", "U8", "[\"2\"]", 0, 2) "}", 2), CG_ERR_FORMAT,
               "shape[0] must be an integer, got string");
    expect_bad(write_raw("rank7.safetensors", UINT64_MAX, "{" T_("w", "U8", "[1,1,1,1,1,1,1]", 0, 1) "}", 1),
               CG_ERR_FORMAT, "tensor 'w': 7 dims, more than the 6 cgrad supports");
    expect_bad(write_raw("noshape.safetensors", UINT64_MAX, "{\"w\":{\"dtype\":\"U8\",\"data_offsets\":[0,1]}}", 1),
               CG_ERR_FORMAT, "tensor 'w': missing key 'shape'");
    /* A shape whose byte size overflows 64 bits. */
    expect_bad(write_raw("ovf.safetensors", UINT64_MAX,
                         "{" T_("w", "F64", "[4294967296, 4294967296]", 0, 0) "}", 0),
               CG_ERR_FORMAT, "the byte size of shape [4294967296, 4294967296] overflows");
}

static void test_bad_offsets_begin_after_end(void **state) {
    (void)state;
    expect_bad(write_raw("order.safetensors", UINT64_MAX, "{" T_("w", "U8", "[0]", 8, 4) "}", 8), CG_ERR_FORMAT,
               "tensor 'w': data_offsets begin 8 > end 4");
    expect_bad(write_raw("three.safetensors", UINT64_MAX, "{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1,2]}}", 1),
               CG_ERR_FORMAT, "'data_offsets' must be an array [begin, end]");
}

static void test_bad_size_mismatch(void **state) {
    (void)state;
    expect_bad(write_raw("size.safetensors", UINT64_MAX, "{" T_("w", "F32", "[2]", 0, 12) "}", 12), CG_ERR_FORMAT,
               "tensor 'w': data_offsets [0, 12] span 12 bytes, but shape [2] of F32 needs 8");
}

static void test_bad_overlap(void **state) {
    (void)state;
    expect_bad(write_raw("overlap.safetensors", UINT64_MAX,
                         "{" T_("b", "F32", "[2]", 4, 12) "," T_("a", "F32", "[2]", 0, 8) "}", 12),
               CG_ERR_FORMAT, "tensors 'a' (bytes 0..8) and 'b' (bytes 4..12) overlap");
}

static void test_bad_gap(void **state) {
    (void)state;
    expect_bad(write_raw("model.safetensors", UINT64_MAX,
                         "{" T_("a", "F32", "[4]", 0, 16) "," T_("b", "F32", "[2]", 24, 32) "}", 32),
               CG_ERR_FORMAT, "model.safetensors: tensor 'b' starts at byte 24 but the previous tensor 'a' ends at 16 (gap)");
}

static void test_bad_not_from_zero(void **state) {
    (void)state;
    expect_bad(write_raw("nozero.safetensors", UINT64_MAX, "{" T_("a", "F32", "[2]", 8, 16) "}", 16), CG_ERR_FORMAT,
               "tensor 'a' starts at byte 8 but the data must start at 0");
}

static void test_bad_trailing_and_truncated(void **state) {
    (void)state;
    expect_bad(write_raw("trail.safetensors", UINT64_MAX, "{" T_("a", "F32", "[2]", 0, 8) "}", 12), CG_ERR_FORMAT,
               "4 trailing bytes after the last tensor");
    expect_bad(write_raw("trunc.safetensors", UINT64_MAX, "{" T_("a", "F32", "[4]", 0, 16) "}", 8), CG_ERR_FORMAT,
               "tensor 'a' ends at data byte 16, past the end of the file (8 bytes of data");
    expect_bad(write_raw("trail0.safetensors", UINT64_MAX, "{}", 3), CG_ERR_FORMAT, "3 trailing bytes");
}

static void test_bad_metadata(void **state) {
    (void)state;
    expect_bad(write_raw("meta.safetensors", UINT64_MAX, "{\"__metadata__\":{\"format\":\"pt\",\"k\":1}}", 0),
               CG_ERR_FORMAT, "__metadata__ value of 'k' is a number, not a string");
    expect_bad(write_raw("meta2.safetensors", UINT64_MAX, "{\"__metadata__\":[\"pt\"]}", 0), CG_ERR_FORMAT,
               "__metadata__ must be an object of strings, got array");
    /* Metadata alone, empty tensors and 0-rank tensors are valid. */
    const char *ok = write_raw("metaok.safetensors", UINT64_MAX,
                               "{\"__metadata__\":{\"format\":\"pt\"}," T_("e", "BF16", "[3, 0]", 0, 0) "," T_(
                                   "s", "I64", "[]", 0, 8) "}",
                               8);
    cg_safetensors *st;
    assert_ok(cg_safetensors_open(ok, &st));
    assert_int_equal(cg_safetensors_count(st), 2);
    assert_string_equal(cg_safetensors_entry_at(st, 0)->name, "e");
    assert_int_equal(cg_safetensors_find(st, "s")->ndim, 0);
    assert_string_equal(cg_safetensors_metadata(st, "format"), "pt");
    cg_safetensors_close(st);
}

static void test_missing_file(void **state) {
    (void)state;
    const char *path = tmp_path("does_not_exist.safetensors");
    expect_bad(path, CG_ERR_IO, "cannot open");
    expect_bad(g_dir, CG_ERR_IO, "not a regular file");
}

/* ------------------------------------------------------------------ cgrad inspect */

/* Runs a shell command, returning its exit status and up to n-1 bytes of its stdout+stderr. */
static int run_capture(const char *cmd, char *out, size_t n) {
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t k = fread(out, 1, n - 1, p);
    out[k] = '\0';
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_cli_inspect(void **state) {
    (void)state;
    const char *bin = getenv("CGRAD_BIN");
    if (!bin || access(bin, X_OK) != 0) {
        print_message("skipped: CGRAD_BIN not set (run through make test-run)\n");
        skip();
    }
    const int64_t s_emb[] = {16, 8}, s_n[] = {8};
    const cg_tensor *ts[] = {cg_tensor_zeros(cpu(), CG_BF16, 2, s_emb), cg_tensor_zeros(cpu(), CG_F32, 1, s_n),
                             cg_tensor_zeros(cpu(), CG_I64, 0, NULL)};
    const char *nm[] = {"model.embed_tokens.weight", "model.norm.weight", "step"};
    const char *mk[] = {"format"}, *mv[] = {"pt"};
    const char *path = tmp_path("cli.safetensors");
    assert_ok(cg_safetensors_write(path, 3, nm, ts, 1, mk, mv));
    char cmd[600], out[4096];
    snprintf(cmd, sizeof cmd, "%s inspect %s 2>&1", bin, path);
    assert_int_equal(run_capture(cmd, out, sizeof out), 0);
    /* 16*8 + 8 + 1 = 137 parameters; 256 + 32 + 8 = 296 bytes. */
    assert_non_null(strstr(out, "model.embed_tokens.weight  BF16     [16, 8]"));
    assert_non_null(strstr(out, "step                       I64      []"));
    assert_non_null(strstr(out, "3 tensors, 137 parameters, 296 bytes (296 B)"));
    assert_non_null(strstr(out, "format = pt"));
    /* A malformed file: one line on stderr, exit 1. */
    const char *bad = write_raw("cli_bad.safetensors", UINT64_MAX, "{" T_("a", "F32", "[2]", 0, 8) "}", 12);
    snprintf(cmd, sizeof cmd, "%s inspect %s 2>&1 >/dev/null", bin, bad);
    assert_int_equal(run_capture(cmd, out, sizeof out), 1);
    char want[400];
    snprintf(want, sizeof want, "cgrad inspect: %s: 4 trailing bytes", bad);
    assert_non_null(strstr(out, want));
    assert_non_null(strchr(out, '\n'));
    assert_int_equal(strchr(out, '\n')[1], '\0');
}

/* ------------------------------------------------------------------ CUDA (skips without a GPU) */

static void test_cuda_round_trip(void **state) {
    (void)state;
    cg_test_require_gpu();
    const int64_t s[] = {2, 3};
    const float v[] = {1, 2, 3, 4, 5, 6};
    cg_arena *g = cg_step_arena(CG_CUDA(0));
    cg_tensor *d = cg_tensor_from_data(g, CG_F32, 2, s, v);
    cg_tensor *dT = cg_view_transpose(d, 0, 1);
    const cg_tensor *ts[] = {dT};
    const char *nm[] = {"t"};
    const char *path = tmp_path("cuda.safetensors");
    assert_ok(cg_safetensors_write(path, 1, nm, ts, 0, NULL, NULL));
    cg_safetensors *st;
    assert_ok(cg_safetensors_open(path, &st));
    const float want[] = {1, 4, 2, 5, 3, 6};
    assert_memory_equal(cg_safetensors_find(st, "t")->data, want, sizeof want);
    cg_tensor *back = cg_safetensors_load(st, "t", g, CG_BF16);
    assert_non_null(back);
    cg_tensor *h = cg_tensor_to(cpu(), back, CG_F32);
    for (int i = 0; i < 6; i++) assert_close(cg_get_flat(h, i), want[i], 0, 0);
    cg_safetensors_close(st);
}

#define TT(fn) cmocka_unit_test_teardown(fn, cg_test_teardown)

int main(void) {
    const struct CMUnitTest tests[] = {
        TT(test_round_trip_all_dtypes),
        TT(test_overwrite_is_atomic_rename),
        TT(test_write_errors),
        TT(test_escaped_names_and_empty_file),
        TT(test_many_tensors_lookup),
        TT(test_convert_on_load),
        TT(test_unaligned_data_loads),
        TT(test_unsupported_dtype_load),
        TT(test_bad_short_file),
        TT(test_bad_header_past_end),
        TT(test_bad_header_too_large),
        TT(test_bad_json),
        TT(test_bad_not_object),
        TT(test_bad_duplicate_key),
        TT(test_bad_unknown_dtype),
        TT(test_bad_shape),
        TT(test_bad_offsets_begin_after_end),
        TT(test_bad_size_mismatch),
        TT(test_bad_overlap),
        TT(test_bad_gap),
        TT(test_bad_not_from_zero),
        TT(test_bad_trailing_and_truncated),
        TT(test_bad_metadata),
        TT(test_missing_file),
        TT(test_cli_inspect),
        TT(test_cuda_round_trip),
    };
    return cmocka_run_group_tests(tests, setup_dir, remove_dir);
}

#else /* built without cJSON: reading reports it; writing still works */

static void test_unsupported_without_cjson(void **state) {
    (void)state;
    const int64_t s[] = {2};
    const float v[] = {1, 2};
    const cg_tensor *ts[] = {cg_tensor_from_data(cg_step_arena(CG_CPU), CG_F32, 1, s, v)};
    const char *nm[] = {"w"};
    const char *path = tmp_path("w.safetensors");
    assert_ok(cg_safetensors_write(path, 1, nm, ts, 0, NULL, NULL));
    uint64_t n = read_header_len(path);
    assert_int_equal((8 + n) % 8, 0);
    assert_int_equal(file_size(path), (long)(8 + n + 8));
    cg_safetensors *st = NULL;
    assert_int_equal(cg_safetensors_open(path, &st), CG_ERR_UNSUPPORTED);
    assert_error_contains("cgrad was built without cJSON");
    assert_null(st);
    assert_int_equal(count_files_with(".tmp."), 0);
    const char *raw = write_raw("raw.safetensors", UINT64_MAX, "{}", 0);
    assert_int_equal(cg_safetensors_open(raw, &st), CG_ERR_UNSUPPORTED);
    assert_error_contains(raw);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test_teardown(test_unsupported_without_cjson, cg_test_teardown)};
    return cmocka_run_group_tests(tests, setup_dir, remove_dir);
}

#endif
