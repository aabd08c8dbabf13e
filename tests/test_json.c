/* core/json: parsing with offsets, trailing data, typed getters on every wrong type, optional getters,
 * duplicate keys, whole-file reading. */
#include "test_util.h"

#include <unistd.h>

#include "core/json.h"

#ifdef CG_HAVE_CJSON

static cJSON *parse_ok(const char *text) {
    cJSON *j = NULL;
    assert_ok(cg_json_parse(text, strlen(text), "t.json", &j));
    assert_non_null(j);
    return j;
}

static void expect_parse_error(const char *text, size_t len, const char *needle) {
    cJSON *j = (cJSON *)1;
    assert_int_equal(cg_json_parse(text, len, "bad.json", &j), CG_ERR_FORMAT);
    assert_null(j);
    assert_error_contains("bad.json");
    assert_error_contains(needle);
}

static void test_parse_values(void **state) {
    (void)state;
    cJSON *j = parse_ok(" {\"a\": 12, \"b\": [1, 2, 3], \"c\": \"x\\u00e9y\", \"d\": -2.5e-3, \"e\": false}\n ");
    int64_t a;
    assert_ok(cg_json_get_int(j, "a", "t.json", &a));
    assert_int_equal(a, 12);
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(j, "b");
    assert_int_equal(cJSON_GetArraySize(b), 3);
    int64_t sum = 0;
    for (const cJSON *x = b->child; x; x = x->next) {
        int64_t v;
        assert_ok(cg_json_as_int(x, "t.json", "b[]", &v));
        sum += v;
    }
    assert_int_equal(sum, 6);
    const char *c;
    assert_ok(cg_json_get_string(j, "c", "t.json", &c));
    assert_string_equal(c, "x\xc3\xa9y"); /* \u00e9 decoded to UTF-8 */
    double d;
    assert_ok(cg_json_get_double(j, "d", "t.json", &d));
    assert_close(d, -0.0025, 0, 0);
    bool e = true;
    assert_ok(cg_json_get_bool(j, "e", "t.json", &e));
    assert_false(e);
    cg_json_free(j);
}

/* Only len bytes are read: the text need not be NUL-terminated, and what follows is ignored. */
static void test_parse_length_bounded(void **state) {
    (void)state;
    const char buf[] = {'[', '7', ',', '8', ']', 'g', 'a', 'r', 'b'};
    cJSON *j = NULL;
    assert_ok(cg_json_parse(buf, 5, "buf", &j));
    assert_int_equal(cJSON_GetArraySize(j), 2);
    int64_t v;
    assert_ok(cg_json_as_int(j->child->next, "buf", "[1]", &v));
    assert_int_equal(v, 8);
    cg_json_free(j);
    /* The same bytes with the garbage included fail at byte 5. */
    expect_parse_error(buf, sizeof buf, "byte 5");
}

static void test_parse_errors_with_offsets(void **state) {
    (void)state;
    /* cJSON reports the error just past the second comma (byte 8). */
    expect_parse_error("{\"a\": 1,, }", 11, "byte 9");
    expect_parse_error("{\"a\": 1,, }", 11, "near ' }'");
    expect_parse_error("{\"a\":tru}", 9, "byte 5");
    /* Line and column of an error on the second line. */
    expect_parse_error("{\"a\": 1,\n \"b\": ?}", 17, "line 2, column 7");
    expect_parse_error("", 0, "end of input");
    expect_parse_error("   ", 3, "invalid JSON");
}

static void test_trailing_garbage(void **state) {
    (void)state;
    expect_parse_error("{\"a\":1} x", 9, "unexpected data after the JSON value at byte 8");
    expect_parse_error("[1] [2]", 7, "byte 4");
    const char nul_pad[] = "{}\0\0";
    expect_parse_error(nul_pad, 4, "byte 2");
    cJSON *j = parse_ok("{\"a\":1} \t\r\n  ");
    cg_json_free(j);
}

static void test_get_int_rejects(void **state) {
    (void)state;
    cJSON *j = parse_ok("{\"half\": 1.5, \"str\": \"3\", \"t\": true, \"n\": null, \"arr\": [1], \"obj\": {},"
                        " \"big\": 1e300, \"edge\": 9007199254740992, \"neg\": -9007199254740992, \"past\": 18014398509481984,"
                        " \"whole\": 4.0, \"minus\": -17}");
    int64_t v = 0;
    static const struct {
        const char *key, *needle;
    } bad[] = {
        {"half", "'half' must be an integer, got number 1.5"},
        {"str", "'str' must be an integer, got string \"3\""},
        {"t", "'t' must be an integer, got true"},
        {"n", "'n' must be an integer, got null"},
        {"arr", "got array"},
        {"obj", "got object"},
        {"big", "outside the exactly representable range"},
        {"past", "outside the exactly representable range"},
        {"missing", "missing key 'missing'"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(cg_json_get_int(j, bad[i].key, "cfg.json", &v), CG_ERR_FORMAT);
        assert_error_contains("cfg.json");
        assert_error_contains(bad[i].needle);
    }
    assert_ok(cg_json_get_int(j, "edge", "cfg.json", &v));
    assert_true(v == ((int64_t)1 << 53));
    assert_ok(cg_json_get_int(j, "neg", "cfg.json", &v));
    assert_true(v == -((int64_t)1 << 53));
    assert_ok(cg_json_get_int(j, "whole", "cfg.json", &v));
    assert_int_equal(v, 4);
    assert_ok(cg_json_get_int(j, "minus", "cfg.json", &v));
    assert_int_equal(v, -17);
    /* Case-sensitive keys: "MINUS" is absent. */
    assert_int_equal(cg_json_get_int(j, "MINUS", "cfg.json", &v), CG_ERR_FORMAT);
    assert_error_contains("missing key 'MINUS'");
    /* A non-object holder. */
    assert_int_equal(cg_json_get_int(cJSON_GetObjectItemCaseSensitive(j, "arr"), "x", "cfg.json", &v), CG_ERR_FORMAT);
    assert_error_contains("expected an object holding 'x', got array");
    cg_json_free(j);
}

static void test_get_other_types_reject(void **state) {
    (void)state;
    cJSON *j = parse_ok("{\"num\": 2.5, \"str\": \"s\", \"t\": true, \"n\": null, \"huge\": 1e999}");
    double d;
    const char *s;
    bool b;
    assert_int_equal(cg_json_get_double(j, "str", "c.json", &d), CG_ERR_FORMAT);
    assert_error_contains("c.json: 'str' must be a number, got string \"s\"");
    assert_int_equal(cg_json_get_double(j, "t", "c.json", &d), CG_ERR_FORMAT);
    assert_error_contains("'t' must be a number, got true");
    assert_int_equal(cg_json_get_double(j, "huge", "c.json", &d), CG_ERR_FORMAT);
    assert_error_contains("'huge' is out of the range of a double");
    assert_int_equal(cg_json_get_string(j, "num", "c.json", &s), CG_ERR_FORMAT);
    assert_error_contains("'num' must be a string, got number 2.5");
    assert_int_equal(cg_json_get_string(j, "n", "c.json", &s), CG_ERR_FORMAT);
    assert_error_contains("'n' must be a string, got null");
    assert_int_equal(cg_json_get_bool(j, "num", "c.json", &b), CG_ERR_FORMAT);
    assert_error_contains("'num' must be true or false, got number 2.5");
    assert_int_equal(cg_json_get_bool(j, "str", "c.json", &b), CG_ERR_FORMAT);
    assert_error_contains("got string \"s\"");
    assert_int_equal(cg_json_get_bool(j, "nope", "c.json", &b), CG_ERR_FORMAT);
    assert_error_contains("missing key 'nope'");
    cg_json_free(j);
}

static void test_optional_getters(void **state) {
    (void)state;
    cJSON *j = parse_ok("{\"i\": 7, \"d\": 0.25, \"s\": \"v\", \"b\": true, \"n\": null, \"wrong\": \"x\"}");
    int64_t i;
    double d;
    const char *s;
    bool b;
    assert_ok(cg_json_opt_int(j, "i", "o.json", -1, &i));
    assert_int_equal(i, 7);
    assert_ok(cg_json_opt_int(j, "absent", "o.json", -1, &i));
    assert_int_equal(i, -1);
    assert_ok(cg_json_opt_int(j, "n", "o.json", 42, &i)); /* null means "not given" */
    assert_int_equal(i, 42);
    assert_ok(cg_json_opt_double(j, "d", "o.json", 1.0, &d));
    assert_close(d, 0.25, 0, 0);
    assert_ok(cg_json_opt_double(j, "absent", "o.json", 1e-6, &d));
    assert_close(d, 1e-6, 0, 0);
    assert_ok(cg_json_opt_string(j, "s", "o.json", "def", &s));
    assert_string_equal(s, "v");
    assert_ok(cg_json_opt_string(j, "absent", "o.json", "def", &s));
    assert_string_equal(s, "def");
    assert_ok(cg_json_opt_bool(j, "b", "o.json", false, &b));
    assert_true(b);
    assert_ok(cg_json_opt_bool(j, "absent", "o.json", false, &b));
    assert_false(b);
    /* A present value of the wrong type is an error even for optional keys. */
    assert_int_equal(cg_json_opt_int(j, "wrong", "o.json", 0, &i), CG_ERR_FORMAT);
    assert_error_contains("o.json: 'wrong' must be an integer");
    assert_int_equal(cg_json_opt_bool(j, "wrong", "o.json", false, &b), CG_ERR_FORMAT);
    assert_int_equal(cg_json_opt_double(j, "wrong", "o.json", 0, &d), CG_ERR_FORMAT);
    assert_int_equal(cg_json_opt_string(j, "i", "o.json", NULL, &s), CG_ERR_FORMAT);
    cg_json_free(j);
}

static void test_duplicate_keys(void **state) {
    (void)state;
    cJSON *j = parse_ok("{\"a\": 1, \"b\": 2, \"a\": 3}");
    assert_int_equal(cg_json_check_unique_keys(j, "d.json"), CG_ERR_FORMAT);
    assert_error_contains("d.json: duplicate key 'a'");
    cg_json_free(j);
    /* Nested inside an object inside an array. */
    j = parse_ok("{\"x\": [{\"k\": 1}, {\"inner\": {\"q\": 1, \"r\": 2, \"q\": 3}}]}");
    assert_int_equal(cg_json_check_unique_keys(j, "d.json"), CG_ERR_FORMAT);
    assert_error_contains("duplicate key 'q' in the object 'inner'");
    cg_json_free(j);
    /* Same keys in different objects, and keys differing only in case, are fine. */
    j = parse_ok("{\"a\": {\"k\": 1}, \"b\": {\"k\": 2}, \"A\": 0, \"k\": [1, 1]}");
    assert_ok(cg_json_check_unique_keys(j, "d.json"));
    cg_json_free(j);
}

static void test_read_file(void **state) {
    (void)state;
    char dir[] = "/tmp/cg_test_json_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("{\"hidden_size\": 896,\n \"rms_norm_eps\": 1e-06}\n", f);
    fclose(f);
    cJSON *j = NULL;
    assert_ok(cg_json_read_file(path, &j));
    int64_t h;
    double eps;
    assert_ok(cg_json_get_int(j, "hidden_size", path, &h));
    assert_int_equal(h, 896);
    assert_ok(cg_json_get_double(j, "rms_norm_eps", path, &eps));
    assert_close(eps, 1e-6, 0, 0);
    cg_json_free(j);
    /* Over the size cap. */
    assert_int_equal(cg_json_read_file_max(path, 10, &j), CG_ERR_FORMAT);
    assert_error_contains("more than the 10-byte limit");
    /* A syntax error names the file. */
    f = fopen(path, "w");
    fputs("{\"a\": }", f);
    fclose(f);
    assert_int_equal(cg_json_read_file(path, &j), CG_ERR_FORMAT);
    assert_error_contains(path);
    assert_error_contains("byte 6");
    unlink(path);
    assert_int_equal(cg_json_read_file(path, &j), CG_ERR_IO);
    assert_error_contains(path);
    assert_null(j);
    rmdir(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_values),
        cmocka_unit_test(test_parse_length_bounded),
        cmocka_unit_test(test_parse_errors_with_offsets),
        cmocka_unit_test(test_trailing_garbage),
        cmocka_unit_test(test_get_int_rejects),
        cmocka_unit_test(test_get_other_types_reject),
        cmocka_unit_test(test_optional_getters),
        cmocka_unit_test(test_duplicate_keys),
        cmocka_unit_test(test_read_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

#else /* built without cJSON: every entry point reports it */

static void test_unsupported_without_cjson(void **state) {
    (void)state;
    cJSON *j = NULL;
    assert_int_equal(cg_json_parse("{}", 2, "x.json", &j), CG_ERR_UNSUPPORTED);
    assert_error_contains("cgrad was built without cJSON");
    assert_null(j);
    assert_int_equal(cg_json_read_file("/nonexistent.json", &j), CG_ERR_UNSUPPORTED);
    assert_error_contains("/nonexistent.json");
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_unsupported_without_cjson)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}

#endif
