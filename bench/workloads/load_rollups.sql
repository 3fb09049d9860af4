-- bench/workloads/load_rollups.sql: 24 hours of minute rollups (1,440 minutes x 1,000 paths =
-- 1.44M rows) loaded directly into apicount.api_minute (emptied first: the earlier workloads
-- flushed into it), ending the minute before the current one.
TRUNCATE apicount.api_minute, apicount.api_hour, apicount.caller_minute;
INSERT INTO apicount.api_minute (bucket, method, path, calls, ok, client_errors, server_errors,
                                 latency_sum_ms, latency_max_ms, latency_count)
SELECT date_trunc('minute', now()) - m * interval '1 minute', 'GET', '/api/v1/r' || p,
       c, c - c / 10, c / 20, c / 10 - c / 20, c * 12.5, 900, c
FROM generate_series(1, 1440) m, generate_series(1, 1000) p,
     LATERAL (SELECT (1 + 60000 / (p * (1 + m % 7)))::bigint AS c) x;
-- the worker keeps api_hour in step with what it flushes; rows loaded by hand need this
SELECT apicount.rebuild_api_hour();
VACUUM ANALYZE apicount.api_minute;
VACUUM ANALYZE apicount.api_hour;
