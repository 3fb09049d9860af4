# bench/ranges.sh — workload 9 of 'make bench' (issue 18): dashboards over long ranges.
# Sourced by bench/run.sh (needs its W, PORT, WL, q, raw, log, query_latency, restart_server, row).
# Loads BENCH_RANGES_DAYS (30) days of rollups for 1,000 paths (bench/workloads/load_ranges.sql:
# api_minute dense, 1.44M rows a day, with latency histograms; api_hour and api_day derived by
# rebuild_api_hour() / rebuild_api_day(); 205 caller rows a minute in caller_minute, mostly
# 1,000 recurring API clients, with caller_hour and caller_day by rebuild_caller_tiers()), with
# apicount.retention_minute above the loaded span so that every range is read as a user with
# the defaults would read it.  Then, for ranges of 24 h, 7 days and 30 days ending now (those
# within the loaded span), for one path (/api/v1/r1, the busiest) and for all paths, times
# (median of BENCH_RANGES_RUNS single-client runs):
#   - series(path, from, to, step), step as the dashboard's $__interval for a ~300-point
#     panel: 5 minutes at 24 h (minute tier), 1 hour at 7 days and 2 hours at 30 days (hour
#     tier);
#   - minutes(from, to, step, paths) as the dashboard calls it (one path: its points; all
#     paths: by_api => false, the latency panel's call);
#   - latency_percentiles(path, from, to) (whole range: days, hours, minute edges);
#   - top_apis(10, from, to, paths);
#   - top_callers_range(10, from, to, path);
#   - callers(path, from, to) (one path: the audit of one API);
# each against a plain GROUP BY over the finest table (api_minute, caller_minute) for the same
# answer.  Sets RANGE_ROWS (lines "label|apicount ms|baseline ms") for ranges_rows.
# api_minute and caller_minute are loaded at fillfactor 100 (half the pages of the production
# fill factor 50: the plain GROUP BY reads fewer pages than it would on a table the worker
# wrote).
RANGES_DAYS=${BENCH_RANGES_DAYS:-30}
RANGES_RUNS=${BENCH_RANGES_RUNS:-7}
RANGES_BASE_RUNS=${BENCH_RANGES_BASE_RUNS:-3}
RANGE_ROWS=()

# rq NAME SQL BASELINE_SQL RUNS: time both, append a row
rq() {
    local name=$1 sql=$2 base=$3 a b
    a=$(query_latency "$name" "$sql" "$RANGES_RUNS")
    b=$(query_latency "${name}_plain" "$base" "$RANGES_BASE_RUNS")
    RANGE_ROWS+=("$name|$a|$b")
    log "9: $name: $a ms (plain GROUP BY $b ms)"
}

ranges_bench() {
    local t0 t1 days label from step p pa
    q -c "ALTER SYSTEM SET apicount.retention_minute = '$((RANGES_DAYS + 30)) days'" -c "SELECT pg_reload_conf()" >/dev/null
    q -c "ALTER TABLE apicount.api_minute SET (fillfactor = 100)" \
      -c "ALTER TABLE apicount.caller_minute SET (fillfactor = 100)" >/dev/null
    t0=$(date +%s.%N)
    if ! q -v days="$RANGES_DAYS" -f "$WL/load_ranges.sql" >"$W/load_ranges.log" 2>&1; then
        raw "ranges: loading failed: $(head -c 300 "$W/load_ranges.log")"
        return
    fi
    t1=$(date +%s.%N)
    q -c "ALTER TABLE apicount.api_minute RESET (fillfactor)" \
      -c "ALTER TABLE apicount.caller_minute RESET (fillfactor)" >/dev/null
    raw "ranges: $RANGES_DAYS days loaded in $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", b - a }') s: $(q -F ' ' -c "SELECT (SELECT count(*) FROM apicount.api_minute) || ' api_minute rows (' || pg_size_pretty(pg_total_relation_size('apicount.api_minute')) || '), ' || (SELECT count(*) FROM apicount.api_hour) || ' api_hour, ' || (SELECT count(*) FROM apicount.api_day) || ' api_day, ' || (SELECT count(*) FROM apicount.caller_minute) || ' caller_minute, ' || (SELECT count(*) FROM apicount.caller_hour) || ' caller_hour, ' || (SELECT count(*) FROM apicount.caller_day) || ' caller_day'")"
    for days in 1 7 30; do
        [ "$days" -le "$RANGES_DAYS" ] || continue
        case $days in
            1) label=24h from="now() - interval '24 hours'" step="5 minutes" ;;
            7) label=7d from="now() - interval '7 days'" step="1 hour" ;;
            30) label=30d from="now() - interval '30 days'" step="2 hours" ;;
        esac
        # plain tables read over [date_trunc('minute', from), now()), as the functions do
        local rng="bucket >= date_trunc('minute', $from) AND bucket < now()"
        local bin="date_bin('$step', bucket, timestamptz '2000-01-01 00:00:00+00')"
        for p in one all; do
            if [ "$p" = one ]; then
                pa="'/api/v1/r1'"
                rq "series_${label}_one_path" \
                    "SELECT * FROM apicount.series($pa, $from, now(), '$step');" \
                    "SELECT $bin, method, path, sum(calls), sum(client_errors + server_errors), sum(latency_sum_ms) / nullif(sum(latency_count), 0), apicount.latency_percentile(apicount.latency_merge(latency_hist), 0.95) FROM apicount.api_minute WHERE path = $pa AND $rng GROUP BY 1, 2, 3 ORDER BY 1, 2, 3;"
                rq "minutes_${label}_one_path" \
                    "SELECT * FROM apicount.minutes($from, now(), '$step', ARRAY[$pa]);" \
                    "SELECT $bin, method, path, sum(calls), sum(ok), sum(client_errors), sum(server_errors), sum(latency_count), sum(latency_sum_ms), max(latency_max_ms), apicount.latency_merge(latency_hist) FROM apicount.api_minute WHERE path = $pa AND $rng GROUP BY 1, 2, 3 ORDER BY 1, 2, 3;"
                rq "latency_percentiles_${label}_one_path" \
                    "SELECT * FROM apicount.latency_percentiles($pa, $from, now());" \
                    "SELECT method, path, p, apicount.latency_percentile(h, p) FROM (SELECT method, path, apicount.latency_merge(latency_hist) h FROM apicount.api_minute WHERE path = $pa AND $rng GROUP BY 1, 2) x, unnest('{0.5,0.95,0.99}'::float8[]) p;"
                rq "top_apis_${label}_one_path" \
                    "SELECT * FROM apicount.top_apis(10, $from, now(), ARRAY[$pa]);" \
                    "SELECT method, path, sum(calls), sum(client_errors + server_errors) FROM apicount.api_minute WHERE path = $pa AND $rng GROUP BY 1, 2 ORDER BY 3 DESC LIMIT 10;"
                rq "top_callers_${label}_one_path" \
                    "SELECT * FROM apicount.top_callers_range(10, $from, now(), $pa);" \
                    "SELECT client_ip, sum(calls) FROM apicount.caller_minute WHERE path = $pa AND $rng GROUP BY 1 ORDER BY 2 DESC LIMIT 10;"
                rq "callers_${label}_one_path" \
                    "SELECT * FROM apicount.callers($pa, $from, now());" \
                    "SELECT client_ip, user_id, min(bucket), max(bucket), sum(calls), sum(client_errors + server_errors) FROM apicount.caller_minute WHERE path = $pa AND $rng GROUP BY 1, 2 ORDER BY 5 DESC;"
            else
                rq "series_${label}_all_paths" \
                    "SELECT * FROM apicount.series(NULL, $from, now(), '$step');" \
                    "SELECT $bin, sum(calls), sum(client_errors + server_errors), sum(latency_sum_ms) / nullif(sum(latency_count), 0), apicount.latency_percentile(apicount.latency_merge(latency_hist), 0.95) FROM apicount.api_minute WHERE $rng GROUP BY 1 ORDER BY 1;"
                rq "minutes_${label}_all_paths" \
                    "SELECT * FROM apicount.minutes($from, now(), '$step', by_api => false);" \
                    "SELECT $bin, sum(calls), sum(ok), sum(client_errors), sum(server_errors), sum(latency_count), sum(latency_sum_ms), max(latency_max_ms), apicount.latency_merge(latency_hist) FROM apicount.api_minute WHERE $rng GROUP BY 1 ORDER BY 1;"
                rq "latency_percentiles_${label}_all_paths" \
                    "SELECT * FROM apicount.latency_percentiles(NULL, $from, now());" \
                    "SELECT method, path, p, apicount.latency_percentile(h, p) FROM (SELECT method, path, apicount.latency_merge(latency_hist) h FROM apicount.api_minute WHERE $rng GROUP BY 1, 2) x, unnest('{0.5,0.95,0.99}'::float8[]) p;"
                rq "top_apis_${label}_all_paths" \
                    "SELECT * FROM apicount.top_apis(10, $from, now());" \
                    "SELECT method, path, sum(calls), sum(client_errors + server_errors) FROM apicount.api_minute WHERE $rng GROUP BY 1, 2 ORDER BY 3 DESC LIMIT 10;"
                rq "top_callers_${label}_all_paths" \
                    "SELECT * FROM apicount.top_callers_range(10, $from, now());" \
                    "SELECT client_ip, sum(calls) FROM apicount.caller_minute WHERE $rng GROUP BY 1 ORDER BY 2 DESC LIMIT 10;"
            fi
        done
    done
    # the plans of the last runs: every call is planned for its values (no generic plan)
    raw "ranges: plan of series(one path, 30 d) on its 8th call in a session: $(ranges_plan_check)"
}

# the 8th call's plan of a one-path series in one session (auto_explain): the index used per tier
ranges_plan_check() {
    local sql i
    sql="LOAD 'auto_explain'; SET auto_explain.log_min_duration = 0; SET auto_explain.log_nested_statements = on; SET auto_explain.log_level = 'notice'; SET client_min_messages = notice;"
    for i in 1 2 3 4 5 6 7 8; do sql="$sql SELECT count(*) FROM apicount.series('/api/v1/r1', now() - interval '30 days', now(), '1 day');"; done
    printf '%s\n' "$sql" | q 2>&1 | perl -0777 -ne 'my @p = grep { /api_day/ && /api_minute/ } split /duration:/; print scalar(@p), " plans; the last: ", join("; ", /((?:Bitmap Heap Scan|Bitmap Index Scan|Index Scan|Index Only Scan|Seq Scan) (?:using|on) \w+)/g) for $p[-1] // ""'
}

# ranges_rows: the table rows; targets: one path <= 30 ms at any range, all paths <= 150 ms at
# 24 h and <= 300 ms at 30 days, >= 5x faster than the plain GROUP BY at 7 and 30 days
ranges_rows() {
    local r name a b label target ratio_t
    for r in "${RANGE_ROWS[@]}"; do
        IFS='|' read -r name a b <<<"$r"
        label="9. $(printf '%s' "$name" | sed 's/_/ /g; s/ one path/, one path/; s/ all paths/, all paths/; s/ \(24h\|7d\|30d\)/ over \1/') (median of $RANGES_RUNS)"
        case $name in
            *one_path) target=30 ;;
            *24h_all_paths) target=150 ;;
            *30d_all_paths) target=300 ;;
            *) target=- ;;
        esac
        row "$label" "$a" ms - - - max "$target"
        case $name in *_7d_*|*_30d_*) ratio_t=5 ;; *) ratio_t=- ;; esac
        # ratio as "times faster": baseline / apicount
        row "9. speed-up of $name over a plain GROUP BY (its ms / apicount's ms)" "$b" ms "apicount" "$a" ms ratio "$ratio_t"
    done
}
