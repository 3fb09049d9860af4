#!/usr/bin/env bash
# test/run_tests.sh — the 'make test' driver (also what CI runs through .ci/run).
# Owns: installing dependencies, building/installing apicount, and running every suite as the
# unprivileged 'postgres' user in a fresh /tmp/apicount-XXXXXX work directory:
#   test/unit/run.sh (if present)  — prints its own TAP-style 'ok N' / 'not ok N' lines
#   test/harness/run.sh            — the result counting of test/counting.sh, on captured
#                                    pg_regress outputs of both formats (15; 16 and later)
#   test/fuzz/run.sh               — a 20 s libFuzzer run over src/common/normalize.c (skips without clang)
#   pg_regress                     — sql/*.sql (except sql/apicount--*.sql) vs expected/*.out,
#                                    on a temporary instance configured by test/apicount.conf
#   TAP                            — test/t/*.pl through prove, with PostgreSQL::Test::Cluster
# Ends with exactly one line 'N passed, N failed[, N skipped]'; exits 1 if anything failed or
# nothing ran.  The work directory (logs, diffs) is kept and printed on failure.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=test/common.sh
. "$ROOT/test/common.sh"
cd "$ROOT"

PASSED=0 FAILED=0 SKIPPED=0
W=""
SUMMARY_DONE=""

summary() {
    local line="$PASSED passed, $FAILED failed"
    [ "$SKIPPED" -gt 0 ] && line+=", $SKIPPED skipped"
    SUMMARY_DONE=1
    printf '%s\n' "$line"
}

# Unexpected exit (set -e) or early failure: still end with the summary line.
# shellcheck disable=SC2317  # invoked by the EXIT trap
on_exit() {
    local rc=$?
    [ -n "$SUMMARY_DONE" ] && return
    [ "$rc" -ne 0 ] && FAILED=$((FAILED + 1))
    [ -n "$W" ] && echo "logs kept in $W"
    summary
    exit 1
}
trap on_exit EXIT

# count_tap, count_regress
# shellcheck source=test/counting.sh
. "$ROOT/test/counting.sh"

add_counts() {  # add_counts "p f s" RC: add to the totals; a failing script with no failed test counts one failure
    local p f s
    read -r p f s <<<"$1"
    if [ "$2" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
    PASSED=$((PASSED + p)) FAILED=$((FAILED + f)) SKIPPED=$((SKIPPED + s))
}

# ---- dependencies and build -------------------------------------------------------------
set +e
bash "$ROOT/test/ensure_deps.sh"; rc=$?
[ "$rc" -eq 0 ] && { (set -e; build_and_install); rc=$?; }
set -e
if [ "$rc" -ne 0 ]; then
    echo "setup failed (dependencies or build); no tests ran"
    FAILED=$((FAILED + 1))
    summary
    exit 1
fi

PGXS_DIR=$(pgxs_dir)
PG_REGRESS=$PGXS_DIR/src/test/regress/pg_regress
W=$(make_workdir)
echo "work directory: $W"

# The suites run as postgres and read sql/, expected/ and test/ from the checkout; if
# postgres cannot read it (e.g. a clone under /root), they read a copy in the work directory.
SRC=$ROOT
if is_root && ! runuser -u "$PG_USER" -- test -r "$ROOT/test/apicount.conf" 2>/dev/null; then
    SRC=$W/src
    mkdir -p "$SRC"
    cp -R "$ROOT/sql" "$ROOT/expected" "$ROOT/test" "$SRC/" 2>/dev/null || true
    chown -R "$PG_USER:$PG_USER" "$SRC"
    echo "postgres cannot read $ROOT; suites read the copy in $SRC"
fi
cd "$W"

# ---- unit tests ---------------------------------------------------------------------------
if [ -f "$ROOT/test/unit/run.sh" ]; then
    echo
    echo "=== unit tests (test/unit/run.sh)"
    mkdir -p "$W/unit"
    set +e
    APICOUNT_ROOT=$ROOT UNIT_WORKDIR=$W/unit PGBIN=$PGBIN bash "$ROOT/test/unit/run.sh" 2>&1 | tee "$W/unit.out"
    rc=${PIPESTATUS[0]}
    set -e
    add_counts "$(count_tap "$W/unit.out")" "$rc"
fi

# ---- the harness: pg_regress results counted in both output formats ----------------------
if [ -f "$ROOT/test/harness/run.sh" ]; then
    echo
    echo "=== harness (test/harness/run.sh)"
    set +e
    bash "$ROOT/test/harness/run.sh" 2>&1 | tee "$W/harness.out"
    rc=${PIPESTATUS[0]}
    set -e
    add_counts "$(count_tap "$W/harness.out")" "$rc"
fi

# ---- fuzzing (short run; clang's libFuzzer runtime comes with clang from Debian) ----------
if [ -f "$ROOT/test/fuzz/run.sh" ]; then
    echo
    echo "=== fuzz (test/fuzz/run.sh ${APICOUNT_FUZZ_SECONDS:-20})"
    set +e
    bash "$ROOT/test/fuzz/run.sh" "${APICOUNT_FUZZ_SECONDS:-20}" 2>&1 | tee "$W/fuzz.out"
    rc=${PIPESTATUS[0]}
    set -e
    add_counts "$(count_tap "$W/fuzz.out")" "$rc"
fi

# ---- pg_regress ---------------------------------------------------------------------------
tests=()
for f in "$ROOT"/sql/*.sql; do
    [ -e "$f" ] || continue
    b=$(basename "$f" .sql)
    case $b in apicount--*) continue ;; esac
    tests+=("$b")
done
if [ ${#tests[@]} -gt 0 ]; then
    echo
    echo "=== pg_regress: ${tests[*]}"
    # shellcheck disable=SC2119  # BASE is optional
    port=$(free_port)
    set +e
    as_pg "$PG_REGRESS" \
        --temp-instance="$W/tmp_instance" \
        --temp-config="$SRC/test/apicount.conf" \
        --port="$port" \
        --no-locale --encoding=UTF8 \
        --inputdir="$SRC" \
        --outputdir="$W/regress" \
        --bindir="$PGBIN" \
        --dbname=contrib_regression \
        "${tests[@]}" 2>&1 | tee "$W/regress.out"
    rc=${PIPESTATUS[0]}
    set -e
    add_counts "$(regress_counts "$W/regress.out" ${#tests[@]})" "$rc"
    if [ "$rc" -ne 0 ]; then
        if [ -s "$W/regress/regression.diffs" ]; then
            echo "--- $W/regress/regression.diffs (first 200 lines)"
            head -n 200 "$W/regress/regression.diffs"
        fi
        if [ -f "$W/regress/log/postmaster.log" ]; then
            echo "--- $W/regress/log/postmaster.log (last 40 lines)"
            tail -n 40 "$W/regress/log/postmaster.log"
        fi
    fi
fi

# ---- TAP ----------------------------------------------------------------------------------
tap=()
for f in "$SRC"/test/t/*.pl; do
    [ -e "$f" ] && tap+=("$f")
done
if [ ${#tap[@]} -gt 0 ]; then
    mkdir -p "$W/tap"
    is_root && chown "$PG_USER:$PG_USER" "$W/tap"
    perl5lib=$PGXS_DIR/src/test/perl
    [ -d "$SRC/test/perl" ] && perl5lib=$SRC/test/perl:$perl5lib
    for f in "${tap[@]}"; do
        name=$(basename "$f" .pl)
        echo
        echo "=== TAP: test/t/$name.pl"
        set +e
        # PostgreSQL::Test::Utils puts its files under TESTDIR up to 16, and under TESTDATADIR
        # and TESTLOGDIR from 17 (else relative to the current directory)
        as_pg env -u TEMP_CONFIG \
            TESTDIR="$W/tap" TESTDATADIR="$W/tap/tmp_check" TESTLOGDIR="$W/tap/log" \
            PG_REGRESS="$PG_REGRESS" PERL5LIB="$perl5lib" \
            APICOUNT_ROOT="$SRC" PGBIN="$PGBIN" \
            prove -v "$f" 2>&1 | tee "$W/tap-$name.out"
        rc=${PIPESTATUS[0]}
        set -e
        add_counts "$(count_tap "$W/tap-$name.out")" "$rc"
    done
fi

# ---- summary ------------------------------------------------------------------------------
echo
total=$((PASSED + FAILED + SKIPPED))
if [ "$total" -eq 0 ]; then
    echo "no tests ran"
fi
if [ "$FAILED" -gt 0 ] || [ "$total" -eq 0 ]; then
    echo "logs kept in $W"
    summary
    exit 1
fi
cd /
rm -rf "$W"
summary
exit 0
