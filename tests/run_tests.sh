#!/bin/sh
# Runs the named test binaries of a build directory, shows their output, and ends with one summary line
# counting the cmocka test cases: "<build>: N passed, N failed, N skipped". Exits 1 if any test failed.
build=$1
shift
passed=0 failed=0 skipped=0 bad_bins=""
export CMOCKA_MESSAGE_OUTPUT=stdout
for t in "$@"; do
    bin="$build/tests/$t"
    out=$("$bin" 2>&1)
    rc=$?
    printf '%s\n' "$out"
    p=$(printf '%s\n' "$out" | sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' | tail -n 1)
    f=$(printf '%s\n' "$out" | sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' | tail -n 1)
    s=$(printf '%s\n' "$out" | sed -n 's/^\[  SKIPPED \] \([0-9]*\) test.*/\1/p' | tail -n 1)
    passed=$((passed + ${p:-0}))
    failed=$((failed + ${f:-0}))
    skipped=$((skipped + ${s:-0}))
    # A crash or a sanitizer abort counts as a failure even if cmocka printed nothing.
    if [ $rc -ne 0 ] && [ -z "$f" ]; then failed=$((failed + 1)); fi
    [ $rc -ne 0 ] && bad_bins="$bad_bins $t"
done
[ -n "$bad_bins" ] && echo "failing test programs:$bad_bins"
echo "$(basename "$build"): $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ] && [ -z "$bad_bins" ]
