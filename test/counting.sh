# test/counting.sh — how test/run_tests.sh counts results; sourced by it and by the harness
# test test/harness/run.sh, which feeds it captured outputs of each format.
# Each function prints "passed failed skipped" for FILE.
# shellcheck shell=bash

# count_tap FILE: the top-level TAP lines in FILE.
# 'ok N # skip' and 'not ok N # TODO' count as skipped; a skipped script ('1..0 # SKIP', or
# prove's 'FILE .. skipped: why') counts as one skipped.
count_tap() {
    awk '
        /^not ok [0-9]+/ { if ($0 ~ /#[ \t]*TODO/) s++; else f++; next }
        /^ok [0-9]+/     { if ($0 ~ /#[ \t]*[Ss][Kk][Ii][Pp]/) s++; else p++; next }
        /^1\.\.0[ \t]*#[ \t]*[Ss][Kk][Ii][Pp]/ { s++; next }
        / \.\. skipped:/ { s++ }
        END { printf "%d %d %d\n", p, f, s }' "$1"
}

# count_regress FILE: pg_regress result lines, in either of its two output formats.
#   PostgreSQL 15 and older: 'test NAME   ... ok   12 ms', '... FAILED   12 ms',
#     '... failed (ignored)'; inside parallel groups the line starts with spaces, not 'test'.
#   PostgreSQL 16 and later (TAP): 'ok 1         - NAME   12 ms', 'not ok 2     - NAME  12 ms'
#     ('+' instead of '-' inside parallel groups); 'Bail out!' aborts the run (a failure).
count_regress() {
    awk '
        /^(test +| +)[^ ]+ +\.\.\. +ok( |$)/           { p++; next }
        /^(test +| +)[^ ]+ +\.\.\. +FAILED/            { f++; next }
        /^(test +| +)[^ ]+ +\.\.\. +failed \(ignored\)/ { s++; next }
        /^ok +[0-9]+ +[-+] /                           { p++; next }
        /^not ok +[0-9]+ +[-+] /                       { f++; next }
        /^Bail out!/                                   { f++; next }
        END { printf "%d %d %d\n", p, f, s }' "$1"
}

# regress_counts FILE NTESTS: count_regress, plus one failure when the lines recognized do
# not add up to the NTESTS tests run (an output format this file does not read, or a run
# that stopped early, must not pass unnoticed).
regress_counts() {
    local p f s
    read -r p f s <<<"$(count_regress "$1")"
    if [ $((p + f + s)) -ne "$2" ]; then
        echo "pg_regress: $((p + f + s)) results recognized for $2 tests (see $1)" >&2
        f=$((f + 1))
    fi
    printf '%d %d %d\n' "$p" "$f" "$s"
}
