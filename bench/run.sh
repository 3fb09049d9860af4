#!/usr/bin/env bash
# bench/run.sh — 'make bench' (issue 4).
# Owns the benchmark suite: installs what is missing (test/ensure_deps.sh, plus redis-server and
# redis-tools), builds and installs apicount, starts a throwaway PostgreSQL server (test/common.sh selects which) (as
# 'postgres', test/common.sh start_cluster) and a private redis-server, measures every apicount
# workload against its baselines in the same run, and prints a table (workload, apicount,
# baseline, ratio, target, result) plus the raw numbers, also written to bench/results/latest.md.
# Every server it starts is stopped on exit (trap).  Exits 0 whether targets pass or fail;
# non-zero only when the harness itself breaks (dependencies, build, server start, SQL setup).
#
# Knobs (environment): BENCH_DURATION (pgbench -T seconds, 10), BENCH_ROUNDS (interleaved
# rounds per throughput pair, best taken, 3), BENCH_CLIENTS (8), BENCH_THREADS (2),
# BENCH_QUERY_RUNS (20), BENCH_COPY_ROWS (1000000), BENCH_FSYNC (on), BENCH_KEEP=1 keeps the
# work directory, BENCH_ONLY (space-separated subset of: mem tput copy query flush ship ranges),
# BENCH_SHIP_LINES (1000000; workload 8, bench/ship.sh), BENCH_RANGES_DAYS (30),
# BENCH_RANGES_RUNS (7), BENCH_RANGES_BASE_RUNS (3) (workload 9, bench/ranges.sh),
# BENCH_RESULTS_FILE (latest.md, under bench/results/).  Only the range queries:
# BENCH_ONLY=ranges make bench.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=test/common.sh
. "$ROOT/test/common.sh"
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"

DURATION=${BENCH_DURATION:-10}
ROUNDS=${BENCH_ROUNDS:-3}
CLIENTS=${BENCH_CLIENTS:-8}
THREADS=${BENCH_THREADS:-2}
QUERY_RUNS=${BENCH_QUERY_RUNS:-20}
COPY_ROWS=${BENCH_COPY_ROWS:-1000000}
FSYNC=${BENCH_FSYNC:-on}
ONLY=${BENCH_ONLY:-mem tput copy query flush ship ranges}
W5_MAX_ENTRIES=500000
RESULTS=$ROOT/bench/results
T_START=$(date +%s)

want() { [[ " $ONLY " == *" $1 "* ]]; }

# ---- setup --------------------------------------------------------------------------------
bash "$ROOT/test/ensure_deps.sh" || die "dependencies missing (test/ensure_deps.sh)"
HAVE_REDIS=""
if want tput && ensure_redis; then HAVE_REDIS=1; fi
build_and_install

W=$(make_workdir)
RAW=$W/raw.txt
: >"$RAW"
DIRTY_PID=""
HARNESS_OK=""

# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
    local rc=$?
    set +e
    if [ -n "$DIRTY_PID" ]; then touch "$W/dirty.stop"; kill "$DIRTY_PID" 2>/dev/null; wait "$DIRTY_PID" 2>/dev/null; fi
    stop_redis "$W/redis"
    if [ -f "$W/data/postmaster.pid" ]; then
        (stop_cluster "$W") 2>/dev/null ||
            as_pg pg_ctl -D "$W/data" -m immediate -w -t 30 stop >/dev/null 2>&1
    fi
    if [ -n "$HARNESS_OK" ] && [ -z "${BENCH_KEEP:-}" ]; then
        rm -rf "$W"
    else
        echo "bench: work directory kept: $W (server log $W/server.log)" >&2
    fi
    [ -z "$HARNESS_OK" ] && [ "$rc" -eq 0 ] && rc=1
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mkdir -p "$W/wl"
cp "$ROOT"/bench/workloads/*.sql "$W/wl/"
chmod 755 "$W/wl"; chmod 644 "$W"/wl/*.sql
if is_root; then chown -R "$PG_USER:$PG_USER" "$W/wl"; touch "$RAW"; chmod 644 "$RAW"; fi
WL=$W/wl

# shellcheck disable=SC2119  # BASE is optional
PORT=$(free_port)
log "starting the bench server in $W on port $PORT"
start_cluster "$W" "$PORT" \
    "shared_buffers = 1GB" \
    "fsync = $FSYNC" \
    "synchronous_commit = on" \
    "max_connections = 50" \
    "max_wal_size = 8GB" \
    "checkpoint_timeout = 30min" \
    "timezone = 'UTC'" \
    "lc_messages = 'C'" \
    "log_min_messages = warning"
q -f "$WL/setup.sql" >/dev/null || die "bench setup SQL failed"
wait_worker

# the floor of workloads 1 and 4: apicount's access method without the counting
# (bench/noop_am), loaded by path from the work directory (never installed)
if want tput || want copy; then
    make -s -C "$ROOT/bench/noop_am" PG_CONFIG="$PGBIN/pg_config" >"$W/noop_am.log" 2>&1 ||
        { cat "$W/noop_am.log" >&2; die "building bench/noop_am failed"; }
    install -m 644 "$ROOT/bench/noop_am/noop_am.so" "$W/noop_am.so"
    q -c "CREATE FUNCTION bench.noop_am_handler(internal) RETURNS table_am_handler
              AS '$W/noop_am.so', 'apicount_noop_am_handler' LANGUAGE C" \
      -c "CREATE ACCESS METHOD bench_noop TYPE TABLE HANDLER bench.noop_am_handler" \
      -c "CREATE TABLE bench.req_noop (LIKE apicount.requests INCLUDING DEFAULTS) USING bench_noop" \
        >/dev/null || die "creating bench.req_noop failed"
fi

# ---- machine info -------------------------------------------------------------------------
CPU_MODEL=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || echo unknown)
MEM_TOTAL=$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo 2>/dev/null || echo unknown)
PG_VERSION=$(q -c "SELECT version()")
GIT_REV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
GIT_DIRTY=$(git -C "$ROOT" status --porcelain -- src sql Makefile 2>/dev/null | wc -l)
[ "$GIT_DIRTY" -gt 0 ] && GIT_REV="$GIT_REV + uncommitted changes in src/sql ($GIT_DIRTY files)"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
REDIS_VERSION=$([ -n "$HAVE_REDIS" ] && redis-server --version | sed -n 's/.*v=\([0-9.]*\).*/\1/p' || echo "not available")
RUN_DATE=$(date -u '+%Y-%m-%d %H:%M:%S UTC')

# ---- 7. memory (default limits, fresh server) -------------------------------------------------
if want mem; then
    log "7: shared memory per entry"
    # every entry of the tiers: callers, APIs, the 1,024 "(other)" reserve and audited callers
    # (the summaries of heavy callers and folded APIs are a fixed part of the total)
    read -r CAPACITY SHMEM < <(q -F ' ' -c "SELECT capacity + api_capacity + 1024 + audited_capacity, shared_memory_bytes FROM apicount.stats" || echo "0 0")
    BYTES_PER_ENTRY=$(awk -v s="$SHMEM" -v c="$CAPACITY" 'BEGIN { if (c > 0) printf "%.1f", s / c; else print "error" }')
    raw "memory: shared_memory_bytes $SHMEM, $CAPACITY entries in all tiers at the default limits => $BYTES_PER_ENTRY bytes/entry"
fi

# ---- 1, 2, 3: throughput, interleaved rounds --------------------------------------------------
redis_run() {  # prints ops/s of ZINCRBY (or "error")
    local n=$1 out="$W/redis-benchmark.$RANDOM.log" rps
    if ! redis-benchmark -h 127.0.0.1 -p "$RPORT" -c "$CLIENTS" --threads "$THREADS" -n "$n" \
            -r 1000 --csv ZINCRBY bench:apis 1 __rand_int__ >"$out" 2>&1; then
        raw "redis-benchmark: ERROR $(tr '\n' ' ' <"$out" | cut -c1-300)"
        echo error; return 0
    fi
    rps=$(awk -F'","' '/^"ZINCRBY/ { print $2 }' "$out" | tail -n 1)
    [ -n "$rps" ] || { echo error; return 0; }
    raw "redis-benchmark ZINCRBY  ops/s $(printf '%10.1f' "$rps")  (-c $CLIENTS --threads $THREADS -n $n -r 1000; $(awk -F'","' '/^"ZINCRBY/ { printf "avg %s ms, p50 %s ms, p99 %s ms", $3, $5, $7 }' "$out" | tail -n 1))"
    log "redis ZINCRBY: $rps ops/s"
    echo "$rps"
}

if want tput; then
    declare -a T_SEL=() T_LOG=() T_UNL=() T_INS=() T_HIT=() T_HOT=() T_RED=() T_EXP=() T_NOOP=() T_FLD=()
    REDIS_N=""
    if [ -n "$HAVE_REDIS" ]; then
        # shellcheck disable=SC2119
        RPORT=$(free_port)
        if start_redis "$W/redis" "$RPORT"; then
            # size -n so that one run takes about DURATION seconds
            cal=$(redis_run 20000)
            if [[ "$cal" =~ ^[0-9.]+$ ]]; then
                REDIS_N=$(awk -v r="$cal" -v d="$DURATION" 'BEGIN { printf "%d", r * d }')
            fi
        else
            raw "redis-server: could not start (log $W/redis/redis.log)"
        fi
    fi
    # Every apicount run starts on empty shared memory (fresh_apicount): entries stay resident
    # for the 2-minute live horizon, so without it each run would inherit a table the
    # previous run filled, and its hits would all go to the overflow entries.
    for r in $(seq 1 "$ROUNDS"); do
        log "throughput round $r of $ROUNDS (${DURATION}s per run)"
        T_SEL+=("$(pgb select1 "$WL/select1.sql")")
        fresh_apicount
        T_INS+=("$(pgb ac_insert "$WL/ac_insert.sql")")
        q -c "CHECKPOINT" >/dev/null || true
        T_LOG+=("$(pgb raw_logged "$WL/raw_logged.sql")")
        fresh_apicount
        T_HIT+=("$(pgb ac_hit "$WL/ac_hit.sql")")
        T_UNL+=("$(pgb raw_unlogged "$WL/raw_unlogged.sql")")
        fresh_apicount
        T_HOT+=("$(pgb ac_hot "$WL/ac_hot.sql")")
        T_EXP+=("$(pgb exprs_only "$WL/exprs_only.sql")")
        T_NOOP+=("$(pgb noop_insert "$WL/noop_insert.sql")")
        fresh_apicount
        T_FLD+=("$(pgb ac_flood "$WL/ac_flood.sql")")
        if [ -n "$REDIS_N" ]; then T_RED+=("$(redis_run "$REDIS_N")"); fi
    done
    stop_redis "$W/redis"
    SEL=$(best "${T_SEL[@]}") LOGD=$(best "${T_LOG[@]}") UNL=$(best "${T_UNL[@]}")
    INS=$(best "${T_INS[@]}") HIT=$(best "${T_HIT[@]}") HOT=$(best "${T_HOT[@]}") EXP=$(best "${T_EXP[@]}")
    NOOP=$(best "${T_NOOP[@]}") FLD=$(best "${T_FLD[@]}")
    RED=$([ ${#T_RED[@]} -gt 0 ] && best "${T_RED[@]}" || echo "n/a")
fi

# ---- 4. COPY of 1,000,000 rows ------------------------------------------------------------------
if want copy; then
    log "4: COPY of $COPY_ROWS rows"
    CSV=$W/requests.csv
    q -v rows="$COPY_ROWS" -v file="$CSV" -f "$WL/gen_copy.sql" >/dev/null || die "generating $CSV failed"
    q -c "VACUUM" >/dev/null || true
    raw "copy: $CSV, $(wc -l <"$CSV") rows, $(du -m "$CSV" | cut -f1) MB"
    COLS="(ts, method, path, client_ip, user_id, status, latency_ms)"
    declare -a C_AC=() C_UNL=() C_LOG=() C_NOOP=()
    for r in $(seq 1 "$ROUNDS"); do
        q -c "TRUNCATE bench.copy_unlogged_noidx" -c "CHECKPOINT" >/dev/null || true
        ms=$(timed_sql copy_unlogged "COPY bench.copy_unlogged_noidx $COLS FROM '$CSV' WITH (FORMAT csv);")
        C_UNL+=("$ms"); raw "copy unlogged, no index      $ms ms"
        q -c "TRUNCATE bench.copy_logged" -c "CHECKPOINT" >/dev/null || true
        ms=$(timed_sql copy_logged "COPY bench.copy_logged $COLS FROM '$CSV' WITH (FORMAT csv);")
        C_LOG+=("$ms"); raw "copy logged, PK + (path, ts)  $ms ms"
        ms=$(timed_sql copy_noop "COPY bench.req_noop $COLS FROM '$CSV' WITH (FORMAT csv);")
        C_NOOP+=("$ms"); raw "copy, access method without the counting  $ms ms"
        fresh_apicount
        q -c "CHECKPOINT" >/dev/null || true
        before=$(stats_line)
        ms=$(timed_sql copy_apicount "COPY apicount.requests $COLS FROM '$CSV' WITH (FORMAT csv);")
        after=$(stats_line)
        C_AC+=("$ms")
        raw "copy apicount.requests       $ms ms  [stats before: $before; after: $after (hits overflow entries flushes)]"
    done
    rate() { [[ "$1" =~ ^[0-9.]+$ ]] && awk -v n="$COPY_ROWS" -v ms="$1" 'BEGIN { printf "%.1f", n / (ms / 1000) }' || echo error; }
    COPY_AC=$(rate "$(lowest "${C_AC[@]}")")
    COPY_UNL=$(rate "$(lowest "${C_UNL[@]}")")
    COPY_LOG=$(rate "$(lowest "${C_LOG[@]}")")
    COPY_NOOP=$(rate "$(lowest "${C_NOOP[@]}")")
fi

# ---- 6. query latency (fresh shared memory) -------------------------------------------------------
if want query; then
    log "6: query latency (restart: empty shared memory; 24 h of rollups; 100,000 live entries)"
    # shellcheck disable=SC2119
    restart_server
    Q_TOP1=error Q_HOT1=error Q_TOP24=error Q_SER24P=error Q_SER24A=error Q_PLAIN24=error
    t0=$(date +%s.%N)
    if ! q -f "$WL/load_rollups.sql" >"$W/load_rollups.log" 2>&1; then
        raw "rollups: loading failed: $(head -c 300 "$W/load_rollups.log")"
    else
        t1=$(date +%s.%N)
        raw "rollups: $(q -c "SELECT count(*) FROM apicount.api_minute") rows in apicount.api_minute, loaded in $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }') s"
        # 100,000 entries must land in one minute: do not start in the last 8 s of a minute
        sec=$((10#$(date +%S)))
        if [ "$sec" -ge 52 ]; then sleep $((61 - sec)); fi
        if ! q -f "$WL/load_live.sql" >"$W/load_live.log" 2>&1; then
            raw "live: loading failed: $(head -c 300 "$W/load_live.log")"
        else
            raw "live: $(q -F ' ' -c "SELECT 'entries ' || entries || ', overflow_hits ' || overflow_hits || ', capacity ' || capacity FROM apicount.stats")"
            Q_TOP1=$(query_latency top_apis_1m "SELECT * FROM apicount.top_apis(10, '1 minute');" "$QUERY_RUNS")
            Q_HOT1=$(query_latency hot_callers_1m "SELECT * FROM apicount.hot_callers(1000, '1 minute');" "$QUERY_RUNS")
            raw "live after the last-minute queries: $(q -F ' ' -c "SELECT 'entries ' || entries || ', overflow_hits ' || overflow_hits || ', flushes ' || flushes || ', last_flush_ms ' || coalesce(last_flush_ms::text, '-') FROM apicount.stats" 2>&1)"
            raw "hot_callers(1000, '1 minute') rows: $(q -c "SELECT count(*) FROM apicount.hot_callers(1000, '1 minute')" 2>&1); top_apis(10, '1 minute') rows: $(q -c "SELECT count(*) FROM apicount.top_apis(10, '1 minute')" 2>&1)"
        fi
        Q_TOP24=$(query_latency top_apis_24h "SELECT * FROM apicount.top_apis(10, now() - interval '24 hours', now());" "$QUERY_RUNS")
        # no target for these: 5 runs keep the suite short
        Q_SER24P=$(query_latency series_24h_one_path "SELECT * FROM apicount.series('/api/v1/r1', now() - interval '24 hours', now(), '1 minute');" 5)
        Q_SER24A=$(query_latency series_24h_all_paths "SELECT * FROM apicount.series(NULL, now() - interval '24 hours', now(), '1 minute');" 5)
        # what PostgreSQL itself needs for the 24 h aggregate (no live counts, no functions)
        Q_PLAIN24=$(query_latency plain_group_by_24h "SELECT method, path, sum(calls) FROM apicount.api_minute WHERE bucket >= date_trunc('minute', now() - interval '24 hours') AND bucket < now() GROUP BY 1, 2 ORDER BY 3 DESC LIMIT 10;" 5)
    fi
fi

# ---- 5. ingest while flushing 100,000 dirty entries per interval -----------------------------------
# dirtier PATHS IPS LOG: every flush interval (5 s, a fixed schedule, so that both modes offer
# the same load whether or not the worker keeps up) 100,000 hits on PATHS x IPS keys
# (bench/workloads/dirty.sql).  Polls apicount.stats every 0.2 s and logs "flush N MS" for
# every completed flush it sees and "dirty MS" for every batch.
dirtier() {
    local paths=$1 ips=$2 logf=$3 last="" cur ms t0 t1 next=0 now
    while [ ! -e "$W/dirty.stop" ]; do
        read -r cur ms < <(q -F ' ' -c "SELECT flushes, coalesce(last_flush_ms, 0) FROM apicount.stats" 2>/dev/null || echo "x 0")
        if [ "$cur" != x ] && [ "$cur" != "$last" ]; then
            [ -n "$last" ] && echo "flush $cur $ms" >>"$logf"
            last=$cur
        fi
        now=$(date +%s%N)
        if [ "$now" -ge "$next" ]; then
            next=$((now + 5000000000))
            t0=$now
            q -v paths="$paths" -v ips="$ips" -v ahead=0 -f "$WL/dirty.sql" >/dev/null 2>>"$logf.err" || echo "dirty-error" >>"$logf"
            t1=$(date +%s%N)
            echo "dirty $(((t1 - t0) / 1000000))" >>"$logf"
        fi
        sleep 0.2
    done
}

if want flush; then
    log "5: ingest while flushing 100,000 dirty entries (restart with apicount.max_entries = $W5_MAX_ENTRIES)"
    restart_server "apicount.max_entries = $W5_MAX_ENTRIES"
    raw "flush server: $(q -F ' ' -c "SELECT 'capacity ' || capacity || ', shared_memory_bytes ' || shared_memory_bytes FROM apicount.stats" 2>&1), flush_interval $(q -c "SHOW apicount.flush_interval" 2>&1)"
    declare -a F_FEW=() F_MANY=() F_MANY_MS=() F_MANY_N=()
    for r in $(seq 1 "$ROUNDS"); do
        for mode in few many; do
            if [ "$mode" = many ]; then paths=1000 ips=100; else paths=10 ips=1; fi
            dlog="$W/dirty-$mode-$r.log"
            : >"$dlog"; rm -f "$W/dirty.stop"
            dirtier "$paths" "$ips" "$dlog" &
            DIRTY_PID=$!
            # steady state: the second batch written and a flush seen after it (20 s at most)
            for _ in $(seq 1 100); do
                awk '/^dirty/ { d++ } /^flush/ && d >= 2 { ok = 1 } END { exit !ok }' "$dlog" && break
                sleep 0.2
            done
            echo "start" >>"$dlog"
            before=$(stats_line)
            tps=$(pgb "w5_$mode" "$WL/ingest_few_keys.sql")
            after=$(stats_line)
            echo "end" >>"$dlog"
            touch "$W/dirty.stop"; wait "$DIRTY_PID" || true; DIRTY_PID=""
            # drain: the next run must not inherit this run's dirty entries.  flush() first waits
            # for a flush still in progress, so its time shows how far behind the worker is.
            t0=$(date +%s%N)
            q -c "SELECT apicount.flush()" >/dev/null 2>&1 || raw "  w5 $mode: apicount.flush() after the run failed"
            t1=$(date +%s%N)
            raw "  w5 $mode: after the run, apicount.flush() returned in $(((t1 - t0) / 1000000)) ms; stats then: $(q -F ' ' -c "SELECT 'flushes ' || flushes || ', last_flush_ms ' || coalesce(last_flush_ms::text, '-') FROM apicount.stats" 2>&1)"
            fl=$(awk '/^start/ { on = 1 } /^end/ { on = 0 } on && /^flush/ { printf "%s ", $3 }' "$dlog")
            dm=$(awk '/^start/ { on = 1 } /^end/ { on = 0 } on && /^dirty / { printf "%s ", $2 }' "$dlog")
            nfl=$(awk -v b="$before" -v a="$after" 'BEGIN { split(b, x, " "); split(a, y, " "); print y[4] - x[4] }')
            raw "  w5 $mode ($paths paths x $ips IPs per 100,000-hit batch every 5 s): $nfl flushes completed during the ${DURATION} s run, taking ${fl:-(none)} ms; batches took ${dm:-(none)} ms$(grep -q dirty-error "$dlog" && echo "; BATCH ERRORS: $(head -c 300 "$dlog.err")")"
            if [ "$mode" = many ]; then
                F_MANY+=("$tps"); F_MANY_N+=("$nfl")
                # shellcheck disable=SC2207  # numbers
                F_MANY_MS+=($(awk '/^flush/ { print $3 }' "$dlog"))
            else
                F_FEW+=("$tps")
            fi
        done
    done
    W5_FEW=$(best "${F_FEW[@]}") W5_MANY=$(best "${F_MANY[@]}")
    W5_RUN_FLUSH_MS=$(median "${F_MANY_MS[@]:-}")
    W5_RUN_FLUSHES=$(printf '%s\n' "${F_MANY_N[@]}" | awk '$1 ~ /^[0-9]+$/ { s += $1; n++ } END { if (n) printf "%.1f", s / n; else print "error" }')

    # one flush of 100,000 dirty entries, timed by the worker (stats.last_flush_ms), both kinds:
    # rows the flush creates (a minute ahead that has no rows yet; round r writes minute now + r)
    # and rows it adds to (the same 100,000 keys again, right after)
    # (restarted first: the 300,000 entries of the three rounds must fit beside none of the
    # entries the ingest runs left)
    q -c "ALTER SYSTEM SET apicount.flush_interval = '1h'" >/dev/null || true
    restart_server
    q -c "SELECT apicount.flush()" >/dev/null 2>&1 || true
    declare -a F_NEW=() F_UPD=()
    for r in 1 2 3; do
        for kind in new update; do
            q -v paths=1000 -v ips=100 -v ahead="$r" -f "$WL/dirty.sql" >/dev/null || raw "one flush: dirtying 100,000 entries failed"
            n=$(q -c "SELECT apicount.flush()" 2>&1) || n="error: $n"
            read -r ms ins upd ups < <(q -F ' ' -c "SELECT last_flush_ms, caller_rows_inserted, caller_rows_updated, caller_rows_upserted FROM apicount.stats" 2>&1)
            raw "one flush ($kind rows, minute now+$r): apicount.flush() wrote $n entries, stats.last_flush_ms $ms; caller rows so far: inserted $ins, updated $upd, upserted $ups"
            if [[ "$n" =~ ^[0-9]+$ ]] && [ "$n" -ge 100000 ]; then
                if [ $kind = new ]; then F_NEW+=("$ms"); else F_UPD+=("$ms"); fi
            fi
        done
    done
    q -c "ALTER SYSTEM RESET apicount.flush_interval" -c "SELECT pg_reload_conf()" >/dev/null || true
    FLUSH_NEW=$(median "${F_NEW[@]:-}") FLUSH_UPD=$(median "${F_UPD[@]:-}")
fi

# ---- 8. apicount-ship (bench/ship.sh) -------------------------------------------------------
if want ship; then
    # shellcheck source=bench/ship.sh
    . "$ROOT/bench/ship.sh"
    log "8: apicount-ship, $SHIP_LINES lines"
    ship_bench
fi

# ---- 9. dashboards over long ranges (bench/ranges.sh) ----------------------------------------------
if want ranges; then
    # shellcheck source=bench/ranges.sh
    . "$ROOT/bench/ranges.sh"
    log "9: range queries over $RANGES_DAYS days of rollups for 1,000 paths"
    # shellcheck disable=SC2119
    restart_server
    ranges_bench
fi

# ---- the table ------------------------------------------------------------------------------------
if want tput; then
    row "1. INSERT INTO apicount.requests" "$INS" tps "SELECT 1" "$SEL" tps ratio 0.85
    row "1. INSERT INTO apicount.requests" "$INS" tps "raw INSERT, logged (PK + index)" "$LOGD" tps ratio 5
    row "1. INSERT INTO apicount.requests" "$INS" tps "raw INSERT, UNLOGGED (PK + index)" "$UNL" tps ratio -
    row "1. INSERT INTO apicount.requests" "$INS" tps "Redis ZINCRBY" "$RED" "ops/s" ratio -
    row "2. SELECT apicount.hit()" "$HIT" tps "SELECT 1" "$SEL" tps ratio 0.85
    row "2. SELECT apicount.hit()" "$HIT" tps "raw INSERT, logged (PK + index)" "$LOGD" tps ratio 5
    row "2. SELECT apicount.hit()" "$HIT" tps "raw INSERT, UNLOGGED (PK + index)" "$UNL" tps ratio -
    row "2. SELECT apicount.hit()" "$HIT" tps "Redis ZINCRBY" "$RED" "ops/s" ratio -
    row "3. hot key (one path, one IP)" "$HOT" tps "SELECT 1" "$SEL" tps ratio 0.80
    row "1f. INSERT during a caller flood (IPs from 10,000,000: callers folded)" "$FLD" tps "1. INSERT (100,000 IPs)" "$INS" tps ratio 0.80
    row "(diagnostic) the expressions of 1 and 2 without apicount" "$EXP" tps "SELECT 1" "$SEL" tps ratio -
    row "(diagnostic) 1 without the counting: the same INSERT, access method with ingest left out" "$NOOP" tps "SELECT 1" "$SEL" tps ratio -
    row "(diagnostic) 1 against its own floor" "$INS" tps "the same INSERT without the counting" "$NOOP" tps ratio -
fi
if want copy; then
    row "4. COPY 1M rows into apicount.requests" "$COPY_AC" "rows/s" "COPY, UNLOGGED, no index" "$COPY_UNL" "rows/s" ratio 1.0
    row "4. COPY 1M rows into apicount.requests" "$COPY_AC" "rows/s" "COPY, logged (PK + index)" "$COPY_LOG" "rows/s" ratio 5
    row "(diagnostic) 4 without the counting: COPY into the access method with ingest left out" "$COPY_NOOP" "rows/s" "COPY, UNLOGGED, no index" "$COPY_UNL" "rows/s" ratio -
    row "(diagnostic) 4 without the counting" "$COPY_NOOP" "rows/s" "COPY, logged (PK + index)" "$COPY_LOG" "rows/s" ratio -
    row "(diagnostic) 4 against its own floor" "$COPY_AC" "rows/s" "the same COPY without the counting" "$COPY_NOOP" "rows/s" ratio -
fi
if want flush; then
    row "5. ingest, 100,000 dirty entries flushed per interval" "$W5_MANY" tps "same ingest, few dirty entries" "$W5_FEW" tps ratio 0.80
    row "5. one flush of 100,000 dirty entries, new rows (last_flush_ms, median of 3)" "$FLUSH_NEW" ms - - - max 1000
    row "5. one flush of 100,000 dirty entries, rows added to (last_flush_ms, median of 3)" "$FLUSH_UPD" ms - - - max 1000
    row "5. (info) flushes completed per ${DURATION} s run with 100,000 dirty entries (interval 5 s)" "$W5_RUN_FLUSHES" flushes - - - max -
    row "5. (info) duration of the worker's flushes while 100,000 entries were dirty (median)" "$W5_RUN_FLUSH_MS" ms - - - max -
fi
if want query; then
    row "6. top_apis(10, '1 minute'), 100,000 live entries (median of $QUERY_RUNS)" "$Q_TOP1" ms - - - max 20
    row "6. hot_callers(1000, '1 minute') (median of $QUERY_RUNS)" "$Q_HOT1" ms - - - max 20
    row "6. top_apis over 24 h of rollups, 1.44M rows (median of $QUERY_RUNS)" "$Q_TOP24" ms - - - max 200
    row "6. series(one path) over 24 h (median of 5)" "$Q_SER24P" ms - - - max -
    row "6. series(all paths) over 24 h (median of 5)" "$Q_SER24A" ms - - - max -
    row "6. (diagnostic) plain GROUP BY over api_minute, 24 h, top 10 (median of 5)" "$Q_PLAIN24" ms - - - max -
fi
if want ship; then
    ship_rows
fi
if want mem; then
    row "7. shared memory per entry (default limits)" "$BYTES_PER_ENTRY" bytes - - - max 320
fi
if want ranges; then
    ranges_rows
fi

T_END=$(date +%s)
PASS_N=$(printf '%s\n' "${ROWS[@]}" | grep -c '| PASS |$' || true)
FAIL_N=$(printf '%s\n' "${ROWS[@]}" | grep -c '| FAIL' || true)

mkdir -p "$RESULTS"
{
    echo "# apicount benchmark — $RUN_DATE"
    echo
    echo "- machine: nproc $(nproc), CPU $CPU_MODEL, memory $MEM_TOTAL, load average at start $LOAD_START"
    echo "- PostgreSQL: $PG_VERSION"
    echo "- Redis: $REDIS_VERSION"
    echo "- apicount: $GIT_REV"
    echo "- server: shared_buffers 1GB, fsync $FSYNC, synchronous_commit on (the logged baselines flush WAL at every commit), unix socket"
    echo "- apicount: defaults (max_entries 100000, flush_interval 5s), except workload 5: max_entries $W5_MAX_ENTRIES"
    echo "- pgbench: $CLIENTS clients, $THREADS threads, -M prepared, -T $DURATION, best of $ROUNDS interleaved rounds;" \
         "1,000 paths (random_zipfian s = 1.1), 100,000 client IPs (uniform); redis-benchmark: $CLIENTS clients, $THREADS threads, loopback TCP"
    echo
    print_table
    echo
    echo "$PASS_N passed, $FAIL_N failed; suite took $((T_END - T_START)) s"
    echo
    if [ -s "$W/overflow.txt" ]; then
        echo "## Runs in which apicount's counter table was full (hits counted under the overflow entry)"
        echo
        sed 's/^/- /' "$W/overflow.txt"
        echo
    fi
    echo "## Raw numbers"
    echo
    echo '```'
    cat "$RAW"
    echo '```'
} >"$RESULTS/${BENCH_RESULTS_FILE:-latest.md}"
cat "$RESULTS/${BENCH_RESULTS_FILE:-latest.md}"
echo
echo "written to bench/results/${BENCH_RESULTS_FILE:-latest.md}"
HARNESS_OK=1
exit 0
