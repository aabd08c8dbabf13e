/* Arenas and the context: alignment, growth, reset that merges chunks so repeated steps allocate nothing,
 * peak accounting, step-end hooks and the output-arena override. */
#include "test_util.h"

static void test_alignment_and_accounting(void **state) {
    (void)state;
    cg_arena *a = cg_arena_create("t", CG_CPU, 4096);
    assert_non_null(a);
    cg_arena_stats s = cg_arena_get_stats(a);
    assert_int_equal(s.reserved, 0); /* chunks are lazy */
    char *p1 = cg_arena_alloc(a, 10, 0);
    char *p2 = cg_arena_alloc(a, 10, 0);
    char *p3 = cg_arena_alloc(a, 1, 256);
    assert_int_equal((uintptr_t)p1 % 64, 0);
    assert_int_equal((uintptr_t)p2 % 64, 0);
    assert_int_equal((uintptr_t)p3 % 256, 0);
    assert_true(p2 >= p1 + 10);
    memset(p1, 1, 10), memset(p2, 2, 10);
    assert_int_equal(p1[9], 1);
    s = cg_arena_get_stats(a);
    assert_int_equal(s.reserved, 4096);
    assert_true(s.used >= 21 && s.used <= 64 + 10 + 256);
    assert_int_equal(s.system_allocs, 1);
    assert_null(cg_arena_alloc(a, 8, 3));
    assert_error_contains("not a power of two");
    cg_arena_destroy(a);
}

static void test_growth_then_merge_makes_steady_state_allocation_free(void **state) {
    (void)state;
    cg_arena *a = cg_arena_create("steps", CG_CPU, 1000);
    size_t sizes[5] = {700, 900, 3000, 5, 1200};
    /* step 1 overflows the first chunk several times */
    for (int i = 0; i < 5; i++) assert_non_null(cg_arena_alloc(a, sizes[i], 8));
    cg_arena_stats s1 = cg_arena_get_stats(a);
    assert_true(s1.system_allocs >= 3);
    size_t step_peak = s1.used;
    cg_arena_reset(a);
    cg_arena_stats after_reset = cg_arena_get_stats(a);
    assert_int_equal(after_reset.used, 0);
    uint64_t allocs = after_reset.system_allocs;
    /* every following identical step fits in the merged chunk: no more system allocations */
    for (int step = 0; step < 100; step++) {
        for (int i = 0; i < 5; i++) assert_non_null(cg_arena_alloc(a, sizes[i], 8));
        cg_arena_reset(a);
    }
    cg_arena_stats s = cg_arena_get_stats(a);
    assert_int_equal(s.system_allocs, allocs);
    assert_int_equal(s.resets, 101);
    assert_true(s.peak >= step_peak);
    assert_true(s.reserved >= step_peak);
    cg_arena_destroy(a);
}

static void test_meta_is_zeroed_and_separate(void **state) {
    (void)state;
    cg_arena *a = cg_arena_create("meta", CG_CPU, 1 << 16);
    unsigned char *m = cg_arena_alloc_meta(a, 200);
    for (int i = 0; i < 200; i++) assert_int_equal(m[i], 0);
    memset(m, 0xff, 200);
    cg_arena_reset(a);
    m = cg_arena_alloc_meta(a, 200);
    for (int i = 0; i < 200; i++) assert_int_equal(m[i], 0);
    cg_arena_stats s = cg_arena_get_stats(a);
    assert_int_equal(s.used, 0); /* metadata is not counted as data */
    assert_true(s.meta_used >= 200);
    cg_arena_destroy(a);
}

static void test_mark_and_rewind(void **state) {
    (void)state;
    cg_arena *a = cg_arena_create("mark", CG_CPU, 1024);
    char *keep = cg_arena_alloc(a, 100, 8);
    memset(keep, 7, 100);
    cg_arena_mark m = cg_arena_get_mark(a);
    size_t used = cg_arena_get_stats(a).used;
    for (int rep = 0; rep < 20; rep++) {
        /* spill into new chunks, then rewind: the memory and the chunks go back */
        for (int i = 0; i < 5; i++) assert_non_null(cg_arena_alloc(a, 900, 8));
        assert_non_null(cg_arena_alloc_meta(a, 64));
        cg_arena_rewind(a, m);
        assert_int_equal(cg_arena_get_stats(a).used, used);
        assert_int_equal(cg_arena_get_stats(a).reserved, 1024);
    }
    char *next = cg_arena_alloc(a, 10, 8);
    assert_true(next >= keep + 100 && next < keep + 1024); /* reused the marked chunk */
    for (int i = 0; i < 100; i++) assert_int_equal(keep[i], 7);
    cg_arena_destroy(a);
}

static int hook_calls;
static void count_hook(void *user) { hook_calls += *(int *)user; }

static void test_context_step_end(void **state) {
    (void)state;
    cg_arena *step = cg_step_arena(CG_CPU);
    cg_arena *pers = cg_persistent_arena(CG_CPU);
    assert_ptr_not_equal(step, pers);
    int64_t shape[2] = {256, 256};
    cg_tensor *param = cg_tensor_zeros(pers, CG_F32, 2, shape);
    assert_non_null(param);
    int inc = 1;
    assert_ok(cg_on_step_end(count_hook, &inc));
    assert_ok(cg_on_step_end(count_hook, &inc)); /* registering twice is a no-op */
    hook_calls = 0;
    uint64_t allocs_after_first = 0;
    for (int i = 0; i < 50; i++) {
        for (int k = 0; k < 4; k++) assert_non_null(cg_tensor_empty(cg_step_arena(CG_CPU), CG_F32, 2, shape));
        cg_memory_stats m = cg_memory_get_stats(CG_CPU);
        assert_int_equal(m.step_used, 4 * 256 * 256 * 4);
        cg_step_end();
        if (i == 0) allocs_after_first = cg_arena_get_stats(step).system_allocs;
    }
    assert_int_equal(hook_calls, 50);
    assert_int_equal(cg_arena_get_stats(step).system_allocs, allocs_after_first);
    cg_memory_stats m = cg_memory_get_stats(CG_CPU);
    assert_int_equal(m.step_used, 0);
    assert_true(m.persistent_used >= 256 * 256 * 4);
    assert_true(m.peak_total >= m.persistent_used + 4 * 256 * 256 * 4);
    /* the persistent tensor survives step ends */
    assert_true(cg_get_flat(param, 65535) == 0.0);
}

static void test_output_arena_override(void **state) {
    (void)state;
    cg_arena *pers = cg_persistent_arena(CG_CPU);
    int64_t shape[2] = {3, 4};
    cg_tensor *t = cg_tensor_zeros(pers, CG_F32, 2, shape);
    cg_arena *prev = cg_set_output_arena(CG_CPU, pers);
    assert_null(prev);
    size_t meta_before = cg_arena_get_stats(pers).meta_used;
    cg_tensor *v = cg_view_transpose(t, 0, 1); /* a long-lived view: its struct goes to the persistent arena */
    assert_true(cg_arena_get_stats(pers).meta_used > meta_before);
    assert_ptr_equal(cg_set_output_arena(CG_CPU, NULL), pers);
    cg_step_end();
    assert_int_equal(v->shape[0], 4); /* still valid after the step ended */
    assert_ptr_equal(cg_output_arena(CG_CPU), cg_step_arena(CG_CPU));
}

static void test_threads(void **state) {
    (void)state;
    int n = cg_set_num_threads(1);
    assert_int_equal(n, 1);
    assert_int_equal(cg_get_num_threads(), 1);
    n = cg_set_num_threads(0);
    assert_true(n >= 1);
    assert_int_equal(cg_get_num_threads(), n);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_alignment_and_accounting),
        cmocka_unit_test(test_growth_then_merge_makes_steady_state_allocation_free),
        cmocka_unit_test(test_meta_is_zeroed_and_separate),
        cmocka_unit_test(test_mark_and_rewind),
        cmocka_unit_test_teardown(test_context_step_end, cg_test_teardown),
        cmocka_unit_test_teardown(test_output_arena_override, cg_test_teardown),
        cmocka_unit_test(test_threads),
    };
    int rc = cmocka_run_group_tests_name("arena", tests, NULL, NULL);
    cg_shutdown();
    return rc;
}
