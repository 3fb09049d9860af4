# bench/ship.sh — workload 8 of 'make bench' (issue 16): apicount-ship.  Sourced by bench/run.sh
# (needs its W, PORT, ROUNDS, WL, q, raw, log, timed_sql, lowest, fresh_apicount, as_pg).
# One request set, generated twice (bench/workloads/gen_access_log.py): a 1,000,000-line nginx
# combined log with $request_time, and the same rows as CSV.  Interleaved rounds, each from
# empty shared memory, each timed up to the end of an apicount.flush(), since the shipper's
# batches are flushed while it runs:
#   - apicount-ship, default batches (5,000 lines, one transaction each, with the position);
#   - COPY of the CSV in one transaction (the row's baseline);
#   - COPY of the CSV in transactions of 5,000 rows (the shipper's transaction size, psql);
#   - apicount-ship --dry-run: the parse and checks alone (the floor).
# Sets SHIP_RATE, SHIP_COPY1, SHIP_COPY5K, SHIP_PARSE (lines/s or "error").
SHIP_LINES=${BENCH_SHIP_LINES:-1000000}

ship_bench() {
    local log=$W/ship/access.log csv=$W/ship/access.csv ship_bin r ms t0 t1 f
    ship_bin=$(command -v apicount-ship || echo "$PGBIN/apicount-ship")
    mkdir -p "$W/ship/parts"
    python3 "$ROOT/bench/workloads/gen_access_log.py" "$SHIP_LINES" "$log" "$csv" || { SHIP_RATE=error; return; }
    split -l 5000 -d -a 4 "$csv" "$W/ship/parts/p"
    : >"$W/ship/parts.sql"
    for f in "$W"/ship/parts/p*; do
        echo "COPY apicount.requests (ts, method, path, client_ip, user_id, status, latency_ms) FROM '$f' WITH (FORMAT csv);" >>"$W/ship/parts.sql"
    done
    chmod -R a+rX "$W/ship"
    raw "ship: $log, $(wc -l <"$log") lines, $(du -m "$log" | cut -f1) MB; the same rows as CSV, $(du -m "$csv" | cut -f1) MB"
    declare -a S_SHIP=() S_COPY1=() S_COPY5K=() S_PARSE=()
    # ms_of CMD...: wall-clock ms of a command run as postgres (or "error")
    ms_of() {
        local a b
        a=$(date +%s%N)
        if ! as_pg "$@" >"$W/ship/cmd.log" 2>&1; then raw "ship: ERROR $* : $(tail -c 300 "$W/ship/cmd.log")"; echo error; return; fi
        b=$(date +%s%N)
        echo $(((b - a) / 1000000))
    }
    for r in $(seq 1 "$ROUNDS"); do
        fresh_apicount
        ms=$(ms_of sh -c "'$ship_bin' -d 'host=$W port=$PORT dbname=postgres user=postgres' --format=combined --source=bench$r '$log' && psql -X -q -h '$W' -p $PORT -U postgres -d postgres -c 'SELECT apicount.flush()'")
        S_SHIP+=("$ms"); raw "apicount-ship, batches of 5,000, + flush   $ms ms  ($(tail -n 1 "$W/ship/cmd.log" 2>/dev/null | tr -s ' '))"
        fresh_apicount
        ms=$(ms_of psql -X -q -h "$W" -p "$PORT" -U postgres -d postgres \
            -c "COPY apicount.requests (ts, method, path, client_ip, user_id, status, latency_ms) FROM '$csv' WITH (FORMAT csv)" \
            -c 'SELECT apicount.flush()')
        S_COPY1+=("$ms"); raw "COPY CSV, one transaction, + flush         $ms ms"
        fresh_apicount
        ms=$(ms_of sh -c "psql -X -q -h '$W' -p $PORT -U postgres -d postgres -f '$W/ship/parts.sql' && psql -X -q -h '$W' -p $PORT -U postgres -d postgres -c 'SELECT apicount.flush()'")
        S_COPY5K+=("$ms"); raw "COPY CSV, transactions of 5,000, + flush   $ms ms"
        ms=$(ms_of "$ship_bin" --dry-run --format=combined "$log")
        S_PARSE+=("$ms"); raw "apicount-ship --dry-run (parse only)      $ms ms"
    done
    lps() { [[ "$1" =~ ^[0-9.]+$ ]] && awk -v n="$SHIP_LINES" -v ms="$1" 'BEGIN { printf "%.1f", n / (ms / 1000) }' || echo error; }
    SHIP_RATE=$(lps "$(lowest "${S_SHIP[@]}")")
    SHIP_COPY1=$(lps "$(lowest "${S_COPY1[@]}")")
    SHIP_COPY5K=$(lps "$(lowest "${S_COPY5K[@]}")")
    SHIP_PARSE=$(lps "$(lowest "${S_PARSE[@]}")")
}

ship_rows() {
    row "8. apicount-ship, 1M-line combined log (batches of 5,000, + flush)" "$SHIP_RATE" "lines/s" "COPY of the same rows as CSV, one transaction (+ flush)" "$SHIP_COPY1" "rows/s" ratio 0.8
    row "(diagnostic) 8 against COPY in transactions of 5,000 rows (the shipper's size)" "$SHIP_RATE" "lines/s" "COPY CSV, 200 transactions (+ flush)" "$SHIP_COPY5K" "rows/s" ratio -
    row "(diagnostic) 8 against its floor, the parse alone" "$SHIP_RATE" "lines/s" "apicount-ship --dry-run" "$SHIP_PARSE" "lines/s" ratio -
}
