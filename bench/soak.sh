#!/usr/bin/env bash
# bench/soak.sh — soak test (issue 5); not part of 'make test'.
#
# Runs a throwaway PostgreSQL server (test/common.sh selects which) (test/common.sh start_cluster, as 'postgres') with
# apicount, measures the peak ingest rate (pgbench, 8 clients, 10 s), then ingests at half of it
# (pgbench --rate) for SOAK_MINUTES.  Every pgbench transaction records one hit and inserts one
# row into the logged table `truth` in the same transaction, so committed hits are known
# independently of apicount.  During the run:
#   - a fast restart (pg_ctl restart -m fast) every SOAK_RESTART_MINUTES, while clients are
#     committing (pgbench cannot reconnect, so ingest runs in segments between events);
#   - one kill -9 of a client backend (a crash restart of the whole cluster), once, at about
#     40% of the run, away from the restarts;
#   - the server's memory (sums of RSS, PSS and private USS of its processes, and the apicount
#     worker's own), sampled every SOAK_SAMPLE_SECONDS; private memory must not grow.
# After each event (and at the end) it calls apicount.flush() and compares: loss = truth -
# rollups (all of api_minute, '(overflow)' rows included).  A clean restart must add no loss; the crash may add at
# most its bound (the hits committed from one flush interval + 0.5 s before the kill to 2 s
# after it, from commit timestamps); rollups may never exceed truth.
# Prints a summary; exits 0 when every check passes, 1 otherwise.
#
# Knobs (environment): SOAK_MINUTES (30), SOAK_RESTART_MINUTES (5; 1 when SOAK_MINUTES <= 5),
# SOAK_SAMPLE_SECONDS (60; 30 when SOAK_MINUTES <= 5), SOAK_FLUSH_INTERVAL ('5s', apicount's
# default), SOAK_CLIENTS (8), SOAK_THREADS (2), SOAK_FSYNC (off), SOAK_KEEP=1 keeps the work
# directory (kept anyway when a check fails).
#
#   sudo bench/soak.sh                      # 30 minutes
#   sudo SOAK_MINUTES=3 bench/soak.sh       # a 3-minute smoke run, restart every minute
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=test/common.sh
. "$ROOT/test/common.sh"

MINUTES=${SOAK_MINUTES:-30}
if [ "$MINUTES" -le 5 ]; then
    RESTART_MIN=${SOAK_RESTART_MINUTES:-1}
    SAMPLE_S=${SOAK_SAMPLE_SECONDS:-30}
else
    RESTART_MIN=${SOAK_RESTART_MINUTES:-5}
    SAMPLE_S=${SOAK_SAMPLE_SECONDS:-60}
fi
FLUSH_INTERVAL=${SOAK_FLUSH_INTERVAL:-5s}
CLIENTS=${SOAK_CLIENTS:-8}
THREADS=${SOAK_THREADS:-2}
FSYNC=${SOAK_FSYNC:-off}

command -v pgbench >/dev/null 2>&1 || die "pgbench not found (postgresql-$PG_MAJOR)"
[ -f "$("$PGBIN/pg_config" --pkglibdir)/apicount.so" ] || die "apicount is not installed (make && sudo make install)"

W=$(make_workdir)
PORT=$(free_port)
OK=""
EVENTS=$W/events.txt
MEM=$W/memory.txt
: >"$EVENTS"
: >"$MEM"
is_root && chown "$PG_USER:$PG_USER" "$EVENTS" "$MEM"

# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
    set +e
    [ -n "${PGB_PID:-}" ] && kill "$PGB_PID" 2>/dev/null && wait "$PGB_PID" 2>/dev/null
    if [ -f "$W/data/postmaster.pid" ]; then
        (stop_cluster "$W") 2>/dev/null ||
            as_pg pg_ctl -D "$W/data" -m immediate -w -t 30 stop >/dev/null 2>&1
    fi
    if [ -n "$OK" ] && [ -z "${SOAK_KEEP:-}" ]; then
        rm -rf "$W"
    else
        echo "work directory kept: $W (server.log, pgbench-*.log, events.txt, memory.txt)"
    fi
}
trap cleanup EXIT

q() { as_pg psql -X -q -A -t -v ON_ERROR_STOP=1 -h "$W" -p "$PORT" -U postgres -d postgres "$@"; }
now_s() { date +%s.%N; }
# fractional seconds arithmetic
calc() { awk "BEGIN { printf \"%s\", $* }"; }

# wait (up to $1 s) until the server answers and the worker runs
wait_ready() {
    local _
    for _ in $(seq 1 $(( $1 * 10 ))); do
        [ "$(q -c 'SELECT worker_pid IS NOT NULL FROM apicount.stats' 2>/dev/null || true)" = t ] && return 0
        sleep 0.1
    done
    return 1
}

# memory of the postmaster and its children (kB): sums of RSS, PSS and USS (private pages),
# the number of processes, and the apicount worker's own RSS and USS
mem_sample() {
    local label=$1 pm wpid rss=0 pss=0 uss=0 n=0 w_rss=0 w_uss=0 p r ps us
    pm=$(head -n 1 "$W/data/postmaster.pid" 2>/dev/null) || return 0
    wpid=$(q -c "SELECT coalesce(worker_pid, 0) FROM apicount.stats" 2>/dev/null || echo 0)
    for p in $pm $(pgrep -P "$pm" 2>/dev/null); do
        r=$(awk '/^VmRSS:/ { print $2 }' "/proc/$p/status" 2>/dev/null) || continue
        [ -n "$r" ] || continue
        read -r ps us < <(awk '/^Pss:/ { p = $2 } /^Private_(Clean|Dirty):/ { u += $2 }
                                 END { print p + 0, u + 0 }' "/proc/$p/smaps_rollup" 2>/dev/null || echo "0 0")
        rss=$((rss + r)); pss=$((pss + ps)); uss=$((uss + us)); n=$((n + 1))
        if [ "$p" = "$wpid" ]; then w_rss=$r; w_uss=$us; fi
    done
    printf '%s %d %d %d %d %d %d %s\n' "$(date +%s)" "$rss" "$pss" "$uss" "$n" "$w_rss" "$w_uss" "$label" >>"$MEM"
}

# ---- server ---------------------------------------------------------------------------------
log "work directory $W, port $PORT; soak ${MINUTES} min, fast restart every ${RESTART_MIN} min, flush_interval $FLUSH_INTERVAL"
start_cluster "$W" "$PORT" \
    "apicount.flush_interval = '$FLUSH_INTERVAL'" \
    "fsync = $FSYNC" \
    "restart_after_crash = on" \
    "track_commit_timestamp = on" \
    "max_connections = 50" \
    "timezone = 'UTC'" \
    "log_line_prefix = '%m [%p] '"
q -c "CREATE EXTENSION apicount" \
  -c "CREATE TABLE truth (id bigserial PRIMARY KEY, path text NOT NULL,
                          committed_at timestamptz NOT NULL DEFAULT clock_timestamp())"
wait_ready 30 || die "the apicount worker did not start (log: $W/server.log)"

SCRIPT=$W/ingest.sql
cat >"$SCRIPT" <<'EOF'
\set p random(1, 100)
\set ip random(1, 200)
BEGIN;
INSERT INTO apicount.requests (path, method, client_ip, user_id, status, latency_ms) VALUES ('/soak/p' || :p, 'GET', ('10.50.0.0'::inet + :ip), 'u' || (:ip % 100), 200 + (:ip % 4) * 100, :p);
INSERT INTO truth (path) VALUES ('/soak/p' || :p);
COMMIT;
EOF
chmod 644 "$SCRIPT"

pgbench_cmd() {  # pgbench_cmd OUT ARGS...: run pgbench as postgres, output to OUT
    local out=$1; shift
    (cd "$W" && as_pg env PGAPPNAME=pgbench pgbench -n -h "$W" -p "$PORT" -U postgres \
        -c "$CLIENTS" -j "$THREADS" -f "$SCRIPT" "$@" postgres) >"$out" 2>&1
}

# ---- peak ---------------------------------------------------------------------------------
log "measuring the peak ingest rate (10 s, $CLIENTS clients)"
pgbench_cmd "$W/pgbench-peak.log" -T 10 || die "peak pgbench failed: $(tail -n 5 "$W/pgbench-peak.log")"
PEAK=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' "$W/pgbench-peak.log" | head -n 1)
[ -n "$PEAK" ] || die "could not read the peak tps"
RATE=$(calc "int($PEAK / 2)")
log "peak $PEAK tps; soaking at $RATE tps"
q -c "SELECT apicount.flush()" >/dev/null
# the peak run's hits are in truth and the rollups too; they count like any other

# ---- checkpoint: flush, then loss = truth - rollups ---------------------------------------------
LOSS_PREV=0
CHECKS_FAILED=0
check() {  # check LABEL MAX_ADDED_LOSS
    local label=$1 max_add=$2 truth roll loss added verdict
    q -c "SELECT apicount.flush()" >/dev/null
    read -r truth roll < <(q -F ' ' -c "SELECT (SELECT count(*) FROM truth),
        (SELECT coalesce(sum(calls), 0) FROM apicount.api_minute)")
    loss=$((truth - roll))
    added=$((loss - LOSS_PREV))
    verdict=ok
    if [ "$loss" -lt 0 ] || [ "$added" -lt 0 ] || [ "$added" -gt "$max_add" ]; then
        verdict=FAIL
        CHECKS_FAILED=$((CHECKS_FAILED + 1))
    fi
    printf '%-26s truth %9d  rollups %9d  loss %7d  added %6d  (allowed %d)  %s\n' \
        "$label" "$truth" "$roll" "$loss" "$added" "$max_add" "$verdict" >>"$EVENTS"
    LOSS_PREV=$loss
}
check "after peak run" 0

# ---- soak ---------------------------------------------------------------------------------
T0=$(date +%s)
T_END=$((T0 + MINUTES * 60))
NEXT_RESTART=$((T0 + RESTART_MIN * 60))
KILL_AT=$((T0 + MINUTES * 60 * 2 / 5))
# keep the kill at least 20 s away from a restart and from the end
while :; do
    d=$(( (KILL_AT - T0) % (RESTART_MIN * 60) ))
    if [ "$d" -lt 20 ] || [ "$d" -gt $((RESTART_MIN * 60 - 20)) ]; then KILL_AT=$((KILL_AT + 25)); else break; fi
done
[ "$KILL_AT" -lt $((T_END - 20)) ] || KILL_AT=$((T_END - 20))
KILLED=""
RESTARTS=0
CRASH_LOSS=""
CRASH_BOUND=""
NEXT_SAMPLE=$T0
SEG=0
mem_sample start

while [ "$(date +%s)" -lt "$T_END" ]; do
    now=$(date +%s)
    seg_end=$NEXT_RESTART
    [ "$seg_end" -gt "$T_END" ] && seg_end=$T_END
    event="restart"
    [ "$seg_end" -eq "$T_END" ] && event="end"
    if [ -z "$KILLED" ] && [ "$KILL_AT" -le "$seg_end" ]; then seg_end=$KILL_AT; event="kill"; fi
    SEG=$((SEG + 1))
    # pgbench runs past the event; the event ends it (end: it ends on its own)
    dur=$((seg_end - now + 15))
    [ "$event" = end ] && dur=$((seg_end - now))
    [ "$dur" -lt 1 ] && dur=1
    pgbench_cmd "$W/pgbench-$SEG.log" --rate="$RATE" -T "$dur" -l --log-prefix="$W/pgb-$SEG" &
    PGB_PID=$!
    while [ "$(date +%s)" -lt "$seg_end" ]; do
        if [ "$(date +%s)" -ge "$NEXT_SAMPLE" ]; then
            mem_sample "seg$SEG"
            NEXT_SAMPLE=$((NEXT_SAMPLE + SAMPLE_S))
        fi
        kill -0 "$PGB_PID" 2>/dev/null || break
        sleep 1
    done
    case $event in
    restart)
        t1=$(now_s)
        as_pg pg_ctl -D "$W/data" -l "$W/server.log" -m fast -w -t 120 restart >/dev/null ||
            die "pg_ctl restart failed (log: $W/server.log)"
        wait_ready 60 || die "worker not back after restart"
        t2=$(now_s)
        wait "$PGB_PID" 2>/dev/null || true
        RESTARTS=$((RESTARTS + 1))
        echo "restart $RESTARTS at +$((seg_end - T0)) s: $(calc "$t2 - $t1") s until the worker ran again" >>"$EVENTS"
        check "after fast restart $RESTARTS" 0
        NEXT_RESTART=$((NEXT_RESTART + RESTART_MIN * 60))
        ;;
    kill)
        victim=$(q -c "SELECT pid FROM pg_stat_activity WHERE application_name = 'pgbench'
                       AND backend_type = 'client backend' ORDER BY pid LIMIT 1")
        [ -n "$victim" ] || die "no pgbench backend to kill (see $W/pgbench-$SEG.log)"
        t_kill=$(q -c "SELECT extract(epoch FROM clock_timestamp())")
        kill -9 "$victim"
        t1=$(now_s)
        wait "$PGB_PID" 2>/dev/null || true
        sleep 1
        wait_ready 60 || die "server/worker not back after the kill -9"
        t2=$(now_s)
        KILLED=1
        fi_ms=$(q -c "SELECT (extract(epoch FROM current_setting('apicount.flush_interval')::interval) * 1000)::int")
        CRASH_BOUND=$(q -c "SELECT count(*) FROM truth WHERE pg_xact_commit_timestamp(xmin)
            BETWEEN to_timestamp($t_kill) - ($fi_ms + 500) * interval '1 millisecond'
                AND to_timestamp($t_kill) + interval '2 seconds'")
        echo "kill -9 of client backend $victim at +$(calc "int($t_kill - $T0)") s: $(calc "$t2 - $t1") s until the worker ran again; loss bound $CRASH_BOUND hits (committed from $fi_ms ms + 500 ms before the kill to 2 s after)" >>"$EVENTS"
        before=$LOSS_PREV
        check "after kill -9" "$CRASH_BOUND"
        CRASH_LOSS=$((LOSS_PREV - before))
        ;;
    end)
        wait "$PGB_PID" 2>/dev/null || true
        ;;
    esac
    PGB_PID=""
done
mem_sample end
check "at the end" 0

# ---- summary --------------------------------------------------------------------------------
read -r TRUTH ROLL < <(q -F ' ' -c "SELECT (SELECT count(*) FROM truth),
    (SELECT coalesce(sum(calls), 0) FROM apicount.api_minute)")
CALLER_ROLL=$(q -c "SELECT coalesce(sum(calls), 0) FROM apicount.caller_minute")
HOUR_ROLL=$(q -c "SELECT CASE WHEN to_regclass('apicount.api_hour') IS NULL THEN $ROLL ELSE (SELECT coalesce(sum(calls), 0) FROM apicount.api_hour) END")
PER_PATH_OVER=$(q -c "SELECT count(*) FROM (SELECT path, count(*) n FROM truth GROUP BY path) t
    JOIN (SELECT path, sum(calls) c FROM apicount.api_minute GROUP BY path) r USING (path) WHERE r.c > t.n")
STATS=$(q -F ' ' -c "SELECT 'flushes ' || flushes || ', flush_failures ' || flush_failures || ', entries ' || entries || ' of ' || capacity || ', overflow_hits ' || overflow_hits || ', shared_memory_bytes ' || shared_memory_bytes FROM apicount.stats")
FAILED_TX=$(cat "$W"/pgbench-[0-9]*.log | sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' | awk '{ s += $1 } END { print s + 0 }')
LAT=$(cat "$W"/pgb-*.* 2>/dev/null | awk '{ print $3 / 1000 }' | sort -g | awk '
    { v[NR] = $1; s += $1 } END { if (NR) printf "%d tx, mean %.2f ms, p99 %.2f ms, max %.2f ms", NR, s / NR, v[int(NR * 0.99)], v[NR]; else print "n/a" }')

echo
echo "==== apicount soak: ${MINUTES} min at $RATE tps (half of the measured peak $PEAK tps), $CLIENTS clients"
echo "flush_interval $FLUSH_INTERVAL; fast restarts every ${RESTART_MIN} min: $RESTARTS; kill -9 of a client backend: $([ -n "$KILLED" ] && echo 1 || echo 0)"
echo "--- checkpoints (flush(), then truth vs rollups)"
cat "$EVENTS"
echo "--- totals"
echo "committed hits (truth)      $TRUTH"
echo "api_minute calls            $ROLL"
echo "caller_minute calls         $CALLER_ROLL"
echo "api_hour calls              $HOUR_ROLL"
echo "loss (truth - rollups)      $((TRUTH - ROLL))   crash loss $CRASH_LOSS, crash bound $CRASH_BOUND"
echo "paths with rollups > truth  $PER_PATH_OVER"
echo "pgbench                     $LAT; failed transactions $FAILED_TX (aborted clients at each restart/kill are expected)"
echo "apicount.stats              $STATS"
echo "--- server memory (postmaster + children), every ${SAMPLE_S} s; USS = private pages"
awk -v t0="$T0" '{ printf "+%5d s  RSS %8d kB  PSS %8d kB  USS %8d kB  %3d procs  worker RSS %6d kB USS %6d kB  %s\n",
                          $1 - t0, $2, $3, $4, $5, $6, $7, $8 }' "$MEM"
# stability, from the samples taken while pgbench ran (same set of processes): the private
# memory of all processes and the worker's private memory in the second half of the run stay
# within 50% (+ 8 MB) of the first half's maximum (the worker's varies with the entries it
# flushes; a leak grows without bound over a 30-minute run).  PSS also grows while shared_buffers warm up,
# so it is shown but not judged.
MEM_VERDICT=$(awk '$8 ~ /^seg/ { u[++n] = $4; w[n] = $7 } END {
        if (n < 4) { print "ok (too few samples to judge)"; exit }
        h = int(n / 2); u1 = u2 = w1 = w2 = 0
        for (i = 1; i <= h; i++) { if (u[i] > u1) u1 = u[i]; if (w[i] > w1) w1 = w[i] }
        for (i = h + 1; i <= n; i++) { if (u[i] > u2) u2 = u[i]; if (w[i] > w2) w2 = w[i] }
        ok = (u2 <= u1 * 1.5 + 8192) && (w2 <= w1 * 1.5 + 8192)
        printf "%s (max USS first/second half: all %d/%d kB, worker %d/%d kB)\n", ok ? "ok" : "GROWING", u1, u2, w1, w2 }' "$MEM")
echo "memory stable               $MEM_VERDICT"

FAIL=""
[ "$CHECKS_FAILED" -eq 0 ] || FAIL="$FAIL checkpoints($CHECKS_FAILED)"
[ "$ROLL" -le "$TRUTH" ] || FAIL="$FAIL rollups>truth"
[ "$CALLER_ROLL" -eq "$ROLL" ] || FAIL="$FAIL caller_minute!=api_minute"
[ "$HOUR_ROLL" -eq "$ROLL" ] || FAIL="$FAIL api_hour!=api_minute"
[ "$PER_PATH_OVER" -eq 0 ] || FAIL="$FAIL per-path-over"
[ -n "$KILLED" ] || FAIL="$FAIL no-kill"
case $MEM_VERDICT in ok*) ;; *) FAIL="$FAIL memory" ;; esac
if [ -n "$FAIL" ]; then
    echo "RESULT: FAIL:$FAIL"
    exit 1
fi
OK=1
echo "RESULT: PASS"
