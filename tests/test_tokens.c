/* llm.c token shards: round trips of both widths, the bytes on disk, range reads, every malformed file the
 * reader must reject, and the writer's checks. Files live in a mkdtemp directory removed at the end. */
#include "test_util.h"

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/tokens.h"

static char tmpdir[64];

static int make_tmpdir(void **state) {
    (void)state;
    strcpy(tmpdir, "/tmp/cg_test_tokens_XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int remove_tmpdir(void **state) {
    (void)state;
    DIR *d = opendir(tmpdir);
    if (!d) return -1;
    struct dirent *e;
    char p[512];
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        snprintf(p, sizeof p, "%s/%s", tmpdir, e->d_name);
        unlink(p);
    }
    closedir(d);
    return rmdir(tmpdir);
}

static const char *tmp_path(const char *name) {
    static char p[256];
    snprintf(p, sizeof p, "%s/%s", tmpdir, name);
    return p;
}

static int count_dir_entries(void) {
    DIR *d = opendir(tmpdir);
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    closedir(d);
    return n;
}

/* Writes a file from a header (the first three ints; the rest zero) and body bytes, by hand. */
static void write_raw(const char *path, int32_t magic, int32_t version, int32_t ntok, const void *body,
                      size_t body_bytes, size_t header_bytes) {
    int32_t header[256] = {0};
    header[0] = magic;
    header[1] = version;
    header[2] = ntok;
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(header, 1, header_bytes, fp), header_bytes);
    if (body_bytes) assert_int_equal(fwrite(body, 1, body_bytes, fp), body_bytes);
    assert_int_equal(fclose(fp), 0);
}

static long file_size(const char *path) {
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return (long)st.st_size;
}

/* ------------------------------------------------------------------ round trips */

static void test_uint16_round_trip(void **state) {
    (void)state;
    enum { N = 5000 };
    static int32_t tok[N];
    for (int i = 0; i < N; i++) tok[i] = (int32_t)((i * 7919u) % 65536u);
    tok[0] = 0;
    tok[1] = 65535; /* the largest uint16 */
    tok[2] = 50256; /* GPT-2's <|endoftext|> */
    const char *path = tmp_path("gpt2.bin");
    assert_ok(cg_token_file_write(path, tok, N, 2));
    assert_int_equal(file_size(path), 1024 + 2 * N);

    /* the bytes on disk, read independently: little-endian int32 header and uint16 body */
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    uint8_t raw[1024 + 2 * 4];
    assert_int_equal(fread(raw, 1, sizeof raw, fp), sizeof raw);
    fclose(fp);
    assert_int_equal(raw[0] | raw[1] << 8 | raw[2] << 16 | raw[3] << 24, 20240520);
    assert_int_equal(raw[4] | raw[5] << 8 | raw[6] << 16 | raw[7] << 24, 1);
    assert_int_equal(raw[8] | raw[9] << 8 | raw[10] << 16 | raw[11] << 24, N);
    for (int i = 12; i < 1024; i++) assert_int_equal(raw[i], 0);
    assert_int_equal(raw[1024 + 2] | raw[1024 + 3] << 8, 65535);
    assert_int_equal(raw[1024 + 4] | raw[1024 + 5] << 8, 50256);

    cg_token_file *f = NULL;
    assert_ok(cg_token_file_open(path, &f));
    assert_int_equal(cg_token_file_count(f), N);
    assert_int_equal(cg_token_file_token_bytes(f), 2);
    assert_string_equal(cg_token_file_path(f), path);
    static int32_t back[N];
    assert_ok(cg_token_file_read(f, 0, N, back));
    assert_memory_equal(back, tok, sizeof tok);
    /* ranges: the middle, the last token, and an empty read at the end */
    int32_t r[10];
    assert_ok(cg_token_file_read(f, 1234, 10, r));
    for (int i = 0; i < 10; i++) assert_int_equal(r[i], tok[1234 + i]);
    assert_ok(cg_token_file_read(f, N - 1, 1, r));
    assert_int_equal(r[0], tok[N - 1]);
    assert_ok(cg_token_file_read(f, N, 0, r));
    cg_token_file_close(f);
}

static void test_uint32_round_trip(void **state) {
    (void)state;
    enum { N = 1000 };
    static int32_t tok[N];
    for (int i = 0; i < N; i++) tok[i] = (int32_t)((i * 104729u) % 128256u); /* Llama 3 vocabulary */
    tok[0] = 128255;
    tok[1] = 65536;     /* past uint16 */
    tok[2] = INT32_MAX; /* the largest token an int32 buffer carries */
    tok[3] = 0;
    const char *path = tmp_path("llama3.bin");
    assert_ok(cg_token_file_write(path, tok, N, 4));
    assert_int_equal(file_size(path), 1024 + 4 * N);
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    uint8_t raw[1024 + 12];
    assert_int_equal(fread(raw, 1, sizeof raw, fp), sizeof raw);
    fclose(fp);
    assert_int_equal(raw[0] | raw[1] << 8 | raw[2] << 16 | raw[3] << 24, 20240801);
    assert_int_equal(raw[4] | raw[5] << 8 | raw[6] << 16 | raw[7] << 24, 7);
    assert_int_equal(raw[8] | raw[9] << 8 | raw[10] << 16 | raw[11] << 24, N);
    assert_int_equal(raw[1024] | raw[1025] << 8 | raw[1026] << 16, 128255);
    assert_int_equal(raw[1027], 0);
    assert_int_equal(raw[1028 + 2], 1); /* 65536 = 0x00010000 */

    cg_token_file *f = NULL;
    assert_ok(cg_token_file_open(path, &f));
    assert_int_equal(cg_token_file_count(f), N);
    assert_int_equal(cg_token_file_token_bytes(f), 4);
    static int32_t back[N];
    assert_ok(cg_token_file_read(f, 0, N, back));
    assert_memory_equal(back, tok, sizeof tok);
    int32_t r[3];
    assert_ok(cg_token_file_read(f, 997, 3, r));
    for (int i = 0; i < 3; i++) assert_int_equal(r[i], tok[997 + i]);
    cg_token_file_close(f);
}

static void test_empty_and_overwrite(void **state) {
    (void)state;
    const char *path = tmp_path("over.bin");
    assert_ok(cg_token_file_write(path, NULL, 0, 2));
    assert_int_equal(file_size(path), 1024);
    cg_token_file *f = NULL;
    assert_ok(cg_token_file_open(path, &f));
    assert_int_equal(cg_token_file_count(f), 0);
    cg_token_file_close(f);
    /* an existing file is replaced whole, and no temporary file stays behind */
    int before = count_dir_entries();
    int32_t tok[3] = {7, 8, 9};
    assert_ok(cg_token_file_write(path, tok, 3, 4));
    assert_int_equal(count_dir_entries(), before);
    assert_ok(cg_token_file_open(path, &f));
    int32_t r[3];
    assert_int_equal(cg_token_file_count(f), 3);
    assert_int_equal(cg_token_file_token_bytes(f), 4);
    assert_ok(cg_token_file_read(f, 0, 3, r));
    assert_int_equal(r[0], 7);
    assert_int_equal(r[2], 9);
    cg_token_file_close(f);
}

static void test_read_bounds(void **state) {
    (void)state;
    const char *path = tmp_path("bounds.bin");
    int32_t tok[10] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
    assert_ok(cg_token_file_write(path, tok, 10, 2));
    cg_token_file *f = NULL;
    assert_ok(cg_token_file_open(path, &f));
    int32_t r[16];
    assert_int_equal(cg_token_file_read(f, 5, 6, r), CG_ERR_INVALID_ARG);
    assert_error_contains("bounds.bin: cannot read tokens [5, 5 + 6): the file has 10 tokens");
    assert_int_equal(cg_token_file_read(f, -1, 2, r), CG_ERR_INVALID_ARG);
    assert_int_equal(cg_token_file_read(f, 0, -1, r), CG_ERR_INVALID_ARG);
    assert_int_equal(cg_token_file_read(f, 11, 0, r), CG_ERR_INVALID_ARG);
    assert_int_equal(cg_token_file_read(f, 1, INT64_MAX, r), CG_ERR_INVALID_ARG); /* no overflow */
    assert_int_equal(cg_token_file_read(f, 0, 1, NULL), CG_ERR_INVALID_ARG);
    assert_ok(cg_token_file_read(f, 4, 6, r));
    assert_int_equal(r[5], 9);
    cg_token_file_close(f);
}

/* ------------------------------------------------------------------ malformed files */

static void expect_open_error(const char *path, cg_status want, const char *needle) {
    cg_token_file *f = (cg_token_file *)0x1;
    assert_int_equal(cg_token_file_open(path, &f), want);
    assert_null(f);
    assert_error_contains(path);
    assert_error_contains(needle);
}

static void test_malformed_files(void **state) {
    (void)state;
    uint16_t body[101] = {0};

    const char *p = tmp_path("short.bin");
    write_raw(p, 20240520, 1, 0, NULL, 0, 100);
    expect_open_error(p, CG_ERR_FORMAT, "100 bytes, shorter than the 1024-byte header");
    write_raw(p, 20240520, 1, 0, NULL, 0, 0);
    expect_open_error(p, CG_ERR_FORMAT, "0 bytes, shorter than the 1024-byte header");

    p = tmp_path("magic.bin");
    write_raw(p, 12345, 1, 100, body, 200, 1024);
    expect_open_error(p, CG_ERR_FORMAT, "bad magic 12345");
    write_raw(p, 20240522, 1, 100, body, 200, 1024);
    expect_open_error(p, CG_ERR_FORMAT, "magic 20240522 is llm.c's eval-example format");

    p = tmp_path("version.bin");
    write_raw(p, 20240520, 7, 100, body, 200, 1024);
    expect_open_error(p, CG_ERR_FORMAT, "magic 20240520 (GPT-2 uint16) needs version 1, found version 7");
    write_raw(p, 20240801, 1, 50, body, 200, 1024);
    expect_open_error(p, CG_ERR_FORMAT, "magic 20240801 (Llama 3 uint32) needs version 7, found version 1");

    p = tmp_path("size.bin");
    write_raw(p, 20240520, 1, 100, body, 198, 1024); /* one token short */
    expect_open_error(p, CG_ERR_FORMAT, "need 1224 bytes (1024-byte header + 200), but the file has 1222 bytes (truncated)");
    write_raw(p, 20240520, 1, 100, body, 202, 1024); /* one token too many */
    expect_open_error(p, CG_ERR_FORMAT, "need 1224 bytes (1024-byte header + 200), but the file has 1226 bytes (trailing bytes)");
    write_raw(p, 20240520, 1, 100, body, 201, 1024); /* half a token extra */
    expect_open_error(p, CG_ERR_FORMAT, "the file has 1225 bytes");
    write_raw(p, 20240801, 7, 100, body, 200, 1024); /* a GPT-2 sized body under a Llama 3 header */
    expect_open_error(p, CG_ERR_FORMAT, "100 Llama 3 uint32 tokens need 1424 bytes");
    write_raw(p, 20240520, 1, INT32_MAX, body, 200, 1024); /* a huge count */
    expect_open_error(p, CG_ERR_FORMAT, "need 4294968318 bytes (1024-byte header + 4294967294)");

    p = tmp_path("negative.bin");
    write_raw(p, 20240520, 1, -5, body, 0, 1024);
    expect_open_error(p, CG_ERR_FORMAT, "negative token count -5");

    /* every truncation of a valid file is rejected */
    p = tmp_path("trunc.bin");
    int32_t tok[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    assert_ok(cg_token_file_write(p, tok, 8, 2));
    for (off_t len = 0; len < 1024 + 16; len += 1) {
        assert_int_equal(truncate(p, len), 0);
        cg_token_file *f = NULL;
        assert_int_equal(cg_token_file_open(p, &f), CG_ERR_FORMAT);
        assert_null(f);
    }
}

static void test_io_errors(void **state) {
    (void)state;
    const char *p = tmp_path("does_not_exist.bin");
    expect_open_error(p, CG_ERR_IO, "cannot open: No such file or directory");
    expect_open_error(tmpdir, CG_ERR_IO, "not a regular file");
    assert_int_equal(cg_token_file_open(NULL, &(cg_token_file *){NULL}), CG_ERR_INVALID_ARG);
    assert_int_equal(cg_token_file_open(p, NULL), CG_ERR_INVALID_ARG);
}

/* A uint32 token the int32 API cannot carry is reported with its position. */
static void test_uint32_past_int32(void **state) {
    (void)state;
    const char *p = tmp_path("big.bin");
    uint32_t body[4] = {1, 2, 0x80000000u, 3};
    write_raw(p, 20240801, 7, 4, body, sizeof body, 1024);
    cg_token_file *f = NULL;
    assert_ok(cg_token_file_open(p, &f));
    int32_t r[4];
    assert_ok(cg_token_file_read(f, 0, 2, r));
    assert_int_equal(r[1], 2);
    assert_int_equal(cg_token_file_read(f, 1, 3, r), CG_ERR_FORMAT);
    assert_error_contains("big.bin: token 2 is 2147483648, past the int32 range");
    cg_token_file_close(f);
}

/* ------------------------------------------------------------------ writer checks */

static void test_writer_rejects(void **state) {
    (void)state;
    int before = count_dir_entries();
    const char *p = tmp_path("bad_write.bin");
    int32_t tok[4] = {1, 65535, 65536, 2};
    assert_int_equal(cg_token_file_write(p, tok, 4, 2), CG_ERR_INVALID_ARG);
    assert_error_contains("bad_write.bin: token 2 is 65536, outside [0, 65536) for uint16 tokens");
    assert_ok(cg_token_file_write(p, tok, 4, 4)); /* fine as uint32 */
    int32_t neg[2] = {3, -1};
    assert_int_equal(cg_token_file_write(p, neg, 2, 4), CG_ERR_INVALID_ARG);
    assert_error_contains("token 1 is -1, outside [0, 2147483648) for uint32 tokens");
    assert_int_equal(cg_token_file_write(p, tok, 2, 3), CG_ERR_INVALID_ARG);
    assert_error_contains("token_bytes must be 2 (uint16) or 4 (uint32), got 3");
    assert_int_equal(cg_token_file_write(p, tok, -1, 2), CG_ERR_INVALID_ARG);
    assert_int_equal(cg_token_file_write(p, tok, (int64_t)INT32_MAX + 1, 4), CG_ERR_INVALID_ARG);
    assert_error_contains("the header holds 0 to 2147483647");
    assert_int_equal(cg_token_file_write(p, NULL, 3, 2), CG_ERR_INVALID_ARG);
    /* the failed writes left the good file as it was, and nothing else */
    assert_int_equal(count_dir_entries(), before + 1);
    cg_token_file *f = NULL;
    assert_ok(cg_token_file_open(p, &f));
    assert_int_equal(cg_token_file_count(f), 4);
    assert_int_equal(cg_token_file_token_bytes(f), 4);
    cg_token_file_close(f);
    /* a directory that does not exist */
    char missing[256];
    snprintf(missing, sizeof missing, "%s/no_such_dir/x.bin", tmpdir);
    assert_int_equal(cg_token_file_write(missing, tok, 2, 2), CG_ERR_IO);
    assert_error_contains(missing);
    assert_error_contains("cannot create a temporary file");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_uint16_round_trip),   cmocka_unit_test(test_uint32_round_trip),
        cmocka_unit_test(test_empty_and_overwrite), cmocka_unit_test(test_read_bounds),
        cmocka_unit_test(test_malformed_files),     cmocka_unit_test(test_io_errors),
        cmocka_unit_test(test_uint32_past_int32),   cmocka_unit_test(test_writer_rejects),
    };
    return cmocka_run_group_tests(tests, make_tmpdir, remove_tmpdir);
}
