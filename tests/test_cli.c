/* The cgrad program: --version format, subcommand dispatch, errors as one line on stderr with a non-zero
 * exit. Runs the binary named by $CGRAD_BIN (set by `make test`). */
#include <sys/wait.h>
#include <unistd.h>

#include "test_util.h"

static void test_version(void **state) {
    (void)state;
    char out[4096];
    assert_int_equal(cg_test_run_cgrad("--version", out, sizeof out), 0);
    char want[256];
    snprintf(want, sizeof want, "cgrad %s (%s)\n", cg_version(), cg_features());
    assert_string_equal(out, want);
    assert_true(strncmp(cg_features(), "cpu", 3) == 0);
}

static void test_unknown_command_and_usage(void **state) {
    (void)state;
    char out[4096];
    assert_int_equal(cg_test_run_cgrad("frobnicate", out, sizeof out), 2);
    assert_non_null(strstr(out, "unknown command 'frobnicate'"));
    assert_int_equal(cg_test_run_cgrad("", out, sizeof out), 2);
    assert_non_null(strstr(out, "usage: cgrad"));
    assert_int_equal(cg_test_run_cgrad("--help", out, sizeof out), 0);
    assert_non_null(strstr(out, "info"));
}

static void test_info(void **state) {
    (void)state;
    char out[4096];
    assert_int_equal(cg_test_run_cgrad("info", out, sizeof out), 0);
    assert_non_null(strstr(out, "cpu sgemm 512^3"));
    assert_int_equal(cg_test_run_cgrad("info --bogus", out, sizeof out), 2);
    assert_non_null(strstr(out, "unknown flag '--bogus'"));
}

static void test_inspect_token_shard(void **state) {
    (void)state;
    char dir[] = "/tmp/cgrad_cli_XXXXXX", path[64], cmd[128], out[4096];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/shard.bin", dir);
    int32_t tokens[20];
    for (int i = 0; i < 20; i++) tokens[i] = 1000 * i;
    assert_ok(cg_token_file_write(path, tokens, 20, 2));
    snprintf(cmd, sizeof cmd, "inspect %s", path);
    assert_int_equal(cg_test_run_cgrad(cmd, out, sizeof out), 0);
    assert_non_null(strstr(out, "llm.c token shard, 20 tokens of 16 bits"));
    assert_non_null(strstr(out, "first tokens: 0 1000 2000"));
    /* truncate it: one line on stderr naming the problem, exit 1 */
    assert_int_equal(truncate(path, 1024 + 10), 0);
    assert_int_equal(cg_test_run_cgrad(cmd, out, sizeof out), 1);
    assert_non_null(strstr(out, "cgrad inspect: "));
    assert_non_null(strstr(out, "truncated"));
    assert_null(strchr(out, '\n') == out + strlen(out) - 1 ? NULL : "more than one line");
    unlink(path);
    rmdir(dir);
}

static void test_plot(void **state) {
    (void)state;
    char dir[] = "/tmp/cgrad_plot_XXXXXX", metrics[64], svg[64], cmd[256], out[4096];
    assert_non_null(mkdtemp(dir));
    snprintf(metrics, sizeof metrics, "%s/m.jsonl", dir);
    snprintf(svg, sizeof svg, "%s/p.svg", dir);
    FILE *f = fopen(metrics, "w");
    assert_non_null(f);
    fprintf(f, "{\"step\": 0, \"reward\": 0.1, \"accuracy\": 0.05}\n\n{\"step\": 1, \"reward\": 0.5}\n"
               "{\"step\": 2, \"reward\": 0.7, \"accuracy\": 0.6}\n");
    fclose(f);
    snprintf(cmd, sizeof cmd, "plot %s --out %s --title 'RL <demo>'", metrics, svg);
    assert_int_equal(cg_test_run_cgrad(cmd, out, sizeof out), 0);
    assert_non_null(strstr(out, "3 points, 2 series"));
    f = fopen(svg, "r");
    assert_non_null(f);
    char body[16384];
    size_t n = fread(body, 1, sizeof body - 1, f);
    body[n] = '\0';
    fclose(f);
    assert_non_null(strstr(body, "<svg"));
    assert_non_null(strstr(body, "RL &lt;demo&gt;")); /* escaped */
    assert_non_null(strstr(body, ">reward</text>"));
    assert_non_null(strstr(body, ">accuracy</text>"));
    int circles = 0;
    for (const char *p = body; (p = strstr(p, "<circle")); p++) circles++;
    assert_int_equal(circles, 5); /* 3 reward points + 2 accuracy points (the gap at step 1) */
    /* a malformed line is an error naming the file and line */
    f = fopen(metrics, "a");
    fprintf(f, "{oops\n");
    fclose(f);
    assert_int_equal(cg_test_run_cgrad(cmd, out, sizeof out), 1);
    assert_non_null(strstr(out, "m.jsonl:5"));
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_version),
        cmocka_unit_test(test_unknown_command_and_usage),
        cmocka_unit_test(test_info),
        cmocka_unit_test(test_inspect_token_shard),
        cmocka_unit_test(test_plot),
    };
    return cmocka_run_group_tests_name("cli", tests, NULL, NULL);
}
