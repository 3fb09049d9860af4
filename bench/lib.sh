# bench/lib.sh — helpers for bench/run.sh (sourced after test/common.sh).
# Owns: the private Redis (install, start, stop), psql/pgbench wrappers against the
# throwaway server, parsing of pgbench/redis-benchmark output, statistics (best, median),
# and the result table.  Defines functions only; run.sh sets W, PORT, DURATION, CLIENTS,
# THREADS and RAW before calling them.
# shellcheck shell=bash

# ---- Redis -----------------------------------------------------------------------------

# ensure_redis: install redis-server and redis-tools (Debian) when missing.  Returns 1
# (and says why) when they are missing and cannot be installed; the Redis baseline is
# then skipped.  The package's own service is not started (policy-rc.d), so nothing
# but our private server runs.
ensure_redis() {
    if command -v redis-server >/dev/null 2>&1 && command -v redis-benchmark >/dev/null 2>&1; then
        return 0
    fi
    if ! is_root; then
        log "redis-server/redis-benchmark missing and not root: skipping the Redis baseline (sudo apt-get install redis-server redis-tools)"
        return 1
    fi
    log "installing redis-server redis-tools"
    local policy=/usr/sbin/policy-rc.d created="" rc=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\n# bench/lib.sh: do not start services during this install\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        created=1
    fi
    (
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -q --no-install-recommends redis-server redis-tools </dev/null >&2 ||
            { apt-get update -q >&2 && apt-get install -y -q --no-install-recommends redis-server redis-tools </dev/null >&2; }
    ) || rc=$?
    [ -n "$created" ] && rm -f "$policy"
    if [ "$rc" -ne 0 ] || ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-benchmark >/dev/null 2>&1; then
        log "could not install redis: skipping the Redis baseline"
        return 1
    fi
    return 0
}

# start_redis DIR PORT: a private redis-server on 127.0.0.1:PORT, no persistence, run as
# the postgres user when we are root; pid file DIR/redis.pid.
start_redis() {
    local dir=$1 port=$2
    mkdir -p "$dir"
    if is_root; then chown "$PG_USER:$PG_USER" "$dir"; fi
    as_pg redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
        --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" --dir "$dir" \
        >/dev/null || return 1
    for _ in $(seq 1 100); do
        redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null | grep -q PONG && return 0
        sleep 0.1
    done
    return 1
}

# stop_redis DIR: stop the server whose pid file is DIR/redis.pid (if any), wait for it.
stop_redis() {
    local dir=$1 pid
    [ -f "$dir/redis.pid" ] || return 0
    pid=$(cat "$dir/redis.pid" 2>/dev/null) || return 0
    [ -n "$pid" ] || return 0
    kill "$pid" 2>/dev/null || { rm -f "$dir/redis.pid"; return 0; }
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null
    rm -f "$dir/redis.pid"
    return 0
}

# ---- PostgreSQL ---------------------------------------------------------------------------

# q ARGS...: psql against the bench server (quiet, unaligned, stop on error).
# shellcheck disable=SC2153  # W and PORT are set by bench/run.sh
q() { as_pg psql -X -q -A -t -v ON_ERROR_STOP=1 -P pager=off -h "$W" -p "$PORT" -U postgres -d postgres "$@"; }

# restart_server [CONF_LINE...]: append CONF_LINEs to postgresql.conf and restart the server
# (clean shutdown: the worker flushes; shared memory starts empty).
# shellcheck disable=SC2120  # CONF_LINEs are optional
restart_server() {
    local line
    for line in "$@"; do printf '%s\n' "$line"; done >>"$W/data/postgresql.conf"
    stop_cluster "$W"
    as_pg pg_ctl -D "$W/data" -l "$W/server.log" -w -t 60 start >/dev/null ||
        { tail -n 30 "$W/server.log" >&2 || true; die "server failed to restart (log: $W/server.log)"; }
    wait_worker
}

# fresh_apicount: restart the server so that apicount's shared memory starts empty.
fresh_apicount() {
    local t0 t1
    t0=$(date +%s%N)
    # shellcheck disable=SC2119
    restart_server
    t1=$(date +%s%N)
    log "restarted the server (empty apicount shared memory) in $(((t1 - t0) / 1000000)) ms"
}

# wait_worker: wait (10 s at most) until apicount's worker is up.
wait_worker() {
    local pid
    for _ in $(seq 1 100); do
        pid=$(q -c "SELECT coalesce(worker_pid, 0) FROM apicount.stats" 2>/dev/null || true)
        [ -n "$pid" ] && [ "$pid" != 0 ] && return 0
        sleep 0.1
    done
    log "warning: apicount worker not seen running"
}

# stats_line: "hits overflow_hits entries flushes" of apicount.stats.
stats_line() { q -F ' ' -c "SELECT hits, overflow_hits, entries, flushes FROM apicount.stats" 2>/dev/null || echo "? ? ? ?"; }

# raw LINE: append a line to the raw-numbers file.
raw() { printf '%s\n' "$*" >>"$RAW"; }

# pgb NAME SCRIPT [PGBENCH_ARGS...]: one pgbench run (CLIENTS clients, THREADS threads,
# prepared statements, unix socket, DURATION seconds).  Prints the tps (or "error").
# Keeps the output in $W/pgbench-NAME.N.log and appends tps, latency, failures and the
# apicount.stats deltas to the raw numbers.
PGB_SEQ=0
pgb() {
    local name=$1 script=$2; shift 2
    PGB_SEQ=$((PGB_SEQ + 1))
    local out="$W/pgbench-$name.$PGB_SEQ.log" before after tps lat failed rc=0
    before=$(stats_line)
    (cd "$W" && as_pg pgbench -n -h "$W" -p "$PORT" -U postgres -c "$CLIENTS" -j "$THREADS" \
        -M prepared -T "$DURATION" "$@" -f "$script" postgres) >"$out" 2>&1 || rc=$?
    after=$(stats_line)
    tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p' "$out" | head -n 1)
    lat=$(sed -n 's/^latency average = \([0-9.]*\) ms/\1/p' "$out" | head -n 1)
    failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$out" | head -n 1)
    if [ "$rc" -ne 0 ] || [ -z "$tps" ] || [ "${failed:-0}" != 0 ]; then
        raw "pgbench $name: ERROR (exit $rc, failed ${failed:-?}); output: $(tr '\n' ' ' <"$out" | cut -c1-400)"
        log "pgbench $name failed (exit $rc): see $out"
        echo error
        return 0
    fi
    local d
    d=$(awk -v b="$before" -v a="$after" 'BEGIN {
            split(b, x, " "); split(a, y, " ");
            if (x[1] == "?" || y[1] == "?") { print "stats: n/a"; exit }
            h = y[1] - x[1]; o = y[2] - x[2];
            printf "hits +%d, overflow_hits +%d (%.1f%%), entries %d, flushes +%d", h, o, (h > 0 ? 100 * o / h : 0), y[3], y[4] - x[4] }')
    raw "pgbench $(printf '%-16s' "$name") tps $(printf '%10.1f' "$tps")  lat ${lat} ms  [$d]"
    case "$d" in *"overflow_hits +0 "*|"stats: n/a") ;; *) echo "$name: $d" >>"$W/overflow.txt" ;; esac
    log "$name: $tps tps"
    echo "$tps"
}

# ms_of_psql_timing FILE: the last "Time: X ms" of psql's \timing output in FILE.
ms_of_psql_timing() { sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' "$1" | tail -n 1; }

# timed_sql NAME SQL: run SQL (one statement, autocommit) with \timing; print its ms (or "error").
timed_sql() {
    local name=$1 sql=$2 out="$W/sql-$1.$RANDOM.log" ms
    if ! printf '\\timing on\n%s\n' "$sql" | q >"$out" 2>&1; then
        raw "$name: ERROR $(tr '\n' ' ' <"$out" | cut -c1-300)"
        echo error
        return 0
    fi
    ms=$(ms_of_psql_timing "$out")
    echo "${ms:-error}"
}

# query_latency NAME SQL RUNS: median latency (ms) of SQL over RUNS single-client executions
# (pgbench -c 1 -t RUNS with a per-transaction log, after one warm-up run).  Prints the median;
# appends min/median/max to the raw numbers.
query_latency() {
    local name=$1 sql=$2 runs=$3 f="$W/q-$1.sql" out="$W/q-$1.log" prefix="$W/qlog-$1" med
    printf '%s\n' "$sql" >"$f"
    chmod 644 "$f"
    rm -f "$prefix".*
    if ! (cd "$W" && as_pg pgbench -n -h "$W" -p "$PORT" -U postgres -c 1 -j 1 -M prepared -t 1 \
            -f "$f" postgres) >"$out" 2>&1 ||
       ! (cd "$W" && as_pg pgbench -n -h "$W" -p "$PORT" -U postgres -c 1 -j 1 -M prepared -t "$runs" \
            -l --log-prefix="$prefix" -f "$f" postgres) >>"$out" 2>&1; then
        raw "query $name: ERROR $(tr '\n' ' ' <"$out" | cut -c1-400)"
        echo error
        return 0
    fi
    # log line: client_id transaction_no time_us script_no epoch epoch_us
    med=$(cat "$prefix".* | awk '{ print $3 / 1000 }' | sort -g | awk '
        { v[NR] = $1 } END { if (NR == 0) { print "error"; exit }
          m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2;
          printf "%.2f %.2f %.2f %d\n", m, v[1], v[NR], NR }')
    # shellcheck disable=SC2086  # four numbers
    set -- $med
    raw "query $(printf '%-22s' "$name") median $1 ms  (min $2, max $3, n=$4)   $sql"
    echo "$1"
}

# best A B ...: the largest numeric argument ("error" ignored; "error" if none).
best() { printf '%s\n' "$@" | awk '$1 ~ /^[0-9.]+$/ { if (!n || $1 > m) m = $1; n++ } END { print n ? m : "error" }'; }
# lowest A B ...: the smallest numeric argument.
lowest() { printf '%s\n' "$@" | awk '$1 ~ /^[0-9.]+$/ { if (!n || $1 < m) m = $1; n++ } END { print n ? m : "error" }'; }
# median A B ...
median() { printf '%s\n' "$@" | awk '$1 ~ /^[0-9.]+$/' | sort -g | awk '
    { v[NR] = $1 } END { if (NR == 0) { print "error"; exit }
      print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# ---- result table ----------------------------------------------------------------------------

ROWS=()
# row WORKLOAD APICOUNT BASELINE_LABEL BASELINE KIND TARGET
#   KIND ratio: ratio = apicount / baseline, pass if ratio >= TARGET ("-" = no target: info)
#   KIND max:   absolute value; pass if APICOUNT <= TARGET (baseline "-")
#   APICOUNT and BASELINE carry units in the label; values are numbers or "error".
row() {
    local wl=$1 a=$2 a_unit=$3 bl=$4 b=$5 b_unit=$6 kind=$7 target=$8 ratio="-" verdict disp_t
    if [ "$kind" = ratio ]; then
        if [[ "$a" =~ ^[0-9.]+$ && "$b" =~ ^[0-9.]+$ ]] && awk -v b="$b" 'BEGIN { exit !(b > 0) }'; then
            ratio=$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.2f", a / b }')
            if [ "$target" = "-" ]; then verdict=info
            elif awk -v r="$(awk -v a="$a" -v b="$b" 'BEGIN { print a / b }')" -v t="$target" 'BEGIN { exit !(r >= t) }'; then verdict=PASS
            else verdict=FAIL; fi
        else
            verdict=$([ "$target" = "-" ] && echo "n/a" || echo "FAIL (error)")
        fi
        disp_t=$([ "$target" = "-" ] && echo "-" || echo ">= ${target}x")
    else
        if [[ "$a" =~ ^[0-9.]+$ ]]; then
            if [ "$target" = "-" ]; then verdict=info
            elif awk -v a="$a" -v t="$target" 'BEGIN { exit !(a <= t) }'; then verdict=PASS
            else verdict=FAIL; fi
        else
            verdict=$([ "$target" = "-" ] && echo "n/a" || echo "FAIL (error)")
        fi
        disp_t=$([ "$target" = "-" ] && echo "-" || echo "<= ${target} ${a_unit}")
    fi
    local a_disp b_disp
    a_disp=$(fmt_num "$a" "$a_unit")
    if [ "$b" = "-" ]; then b_disp="-"; else b_disp="$bl: $(fmt_num "$b" "$b_unit")"; fi
    ROWS+=("| $wl | $a_disp | $b_disp | $ratio | $disp_t | $verdict |")
}

# fmt_num VALUE UNIT: thousands separators for big numbers, 2 decimals for small ones.
fmt_num() {
    local v=$1 u=$2
    [[ "$v" =~ ^[0-9.]+$ ]] || { echo "$v"; return; }
    awk -v v="$v" -v u="$u" 'BEGIN {
        if (v >= 1000) { s = sprintf("%.0f", v); o = "";
            while (length(s) > 3) { o = "," substr(s, length(s) - 2) o; s = substr(s, 1, length(s) - 3) }
            s = s o }
        else if (v >= 100) s = sprintf("%.0f", v); else s = sprintf("%.2f", v);
        printf "%s %s\n", s, u }'
}

print_table() {
    echo "| workload | apicount | baseline | ratio | target | result |"
    echo "|---|---|---|---|---|---|"
    printf '%s\n' "${ROWS[@]}"
}
