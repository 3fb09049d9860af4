#!/usr/bin/env bash
# test/harness/run.sh — tests of the test harness itself: test/counting.sh must count a
# failing pg_regress test as failed in both of pg_regress's output formats.  Prints TAP.
#   regress-pg15.out   captured from PostgreSQL 15's pg_regress (classic format)
#   regress-pg18.out   captured from PostgreSQL 18's pg_regress (TAP, as from 16 on)
# Both are the same run: schedule 'alpha', 'beta gamma' (a parallel group), 'delta', where
# beta and delta fail (their expected output says 2 where the query returns 1).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=test/counting.sh
. "$here/../counting.sh"

n=0 failed=0
check() {  # check NAME EXPECTED ACTUAL
    n=$((n + 1))
    if [ "$2" = "$3" ]; then
        echo "ok $n - $1"
    else
        echo "not ok $n - $1"
        echo "#   expected '$2', got '$3'"
        failed=$((failed + 1))
    fi
}

tmp=$(mktemp -d /tmp/apicount-harness-XXXX)
trap 'rm -rf "$tmp"' EXIT

for fmt in pg15 pg18; do
    f=$here/regress-$fmt.out
    check "$fmt: 2 passed, 2 failed (one in a parallel group)" "2 2 0" "$(count_regress "$f")"
    check "$fmt: regress_counts agrees when all 4 results are recognized" "2 2 0" \
        "$(regress_counts "$f" 4 2>/dev/null)"
    # the same output with the failing lines removed: nothing failed
    grep -v -e 'FAILED' -e '^not ok' "$f" >"$tmp/$fmt-pass.out"
    check "$fmt: without the failing lines, 2 passed and 0 failed" "2 0 0" \
        "$(count_regress "$tmp/$fmt-pass.out")"
    # ... but 4 tests ran: two results missing count as a failure, not as a pass
    check "$fmt: 2 of 4 results missing is a failure" "2 1 0" \
        "$(regress_counts "$tmp/$fmt-pass.out" 4 2>/dev/null)"
done

# an output of a format nobody taught count_regress: never a pass
printf 'test alpha: PASS\ntest beta: FAIL\n' >"$tmp/unknown.out"
check "unknown format: counted as a failure" "0 1 0" "$(regress_counts "$tmp/unknown.out" 2 2>/dev/null)"

# TAP lines of prove -v (the TAP suites) are not pg_regress results, and vice versa
check "count_tap ignores pg_regress classic lines" "0 0 0" "$(count_tap "$here/regress-pg15.out")"

echo "1..$n"
[ "$failed" -eq 0 ]
