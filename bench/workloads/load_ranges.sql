-- bench/workloads/load_ranges.sql: :days days of rollups for 1,000 paths, ending the minute
-- before the current one, loaded directly into the tables (emptied first): api_minute dense
-- (1,440 x 1,000 rows a day, the calls of bench/workloads/load_rollups.sql), latency
-- histograms copied from 16 templates made by apicount's own flush (various log-normal
-- spreads), api_hour, api_day and the api_total_* sums derived with rebuild_api_hour(),
-- rebuild_api_day() and rebuild_api_totals(), and caller_minute with 205 caller rows a
-- minute, caller_hour and caller_day derived by rebuild_caller_tiers().  The callers: 1,000
-- API clients (IPs 10.2.0.0/22) that each call one path, one minute in five, the busiest
-- paths having the most clients (client k calls /api/v1/r(1 + floor(50 (k/1000)^2)): 142
-- clients for r1, 58 for r2, ... 50 paths), and 5 one-off callers a minute (IPs
-- 10.1.0.0/16, paths spread over all 1,000) that no tier folds together.
\set ON_ERROR_STOP 1
TRUNCATE apicount.api_minute, apicount.api_hour, apicount.api_day, apicount.api_total_minute,
         apicount.api_total_hour, apicount.api_total_day, apicount.caller_minute,
         apicount.caller_hour, apicount.caller_day, apicount.caller_heavy_minute,
         apicount.heavy_minute_bounds;
-- the templates: 16 APIs with 200 latencies each, flushed, then read back and removed
SELECT count(apicount.hit('/tmpl/' || chr(97 + k), 'GET', NULL, NULL, 200,
                    exp(ln(5 + k * 3) + (0.3 + k * 0.05) * sqrt(-2 * ln((i + 0.5) / 200.0)) * cos(i * 2.4))))
FROM generate_series(0, 15) k, generate_series(0, 199) i;
SELECT apicount.flush();
CREATE TEMP TABLE tmpl AS
SELECT ascii(substr(path, 7)) - 97 AS k, apicount.latency_merge(latency_hist) AS hist
FROM apicount.api_minute WHERE path LIKE '/tmpl/%' GROUP BY 1;
TRUNCATE apicount.api_minute, apicount.api_hour, apicount.api_day, apicount.api_total_minute,
         apicount.api_total_hour, apicount.api_total_day, apicount.caller_minute,
         apicount.caller_hour, apicount.caller_day;
INSERT INTO apicount.api_minute (bucket, method, path, calls, ok, client_errors, server_errors,
                                 latency_sum_ms, latency_max_ms, latency_count, latency_hist)
SELECT date_trunc('minute', now()) - m * interval '1 minute', 'GET', '/api/v1/r' || p,
       c, c - c / 10, c / 20, c / 10 - c / 20, c * 12.5, 900, c, t.hist
FROM generate_series(1, :days * 1440) m, generate_series(1, 1000) p,
     LATERAL (SELECT (1 + 60000 / (p * (1 + m % 7)))::bigint AS c) x,
     tmpl t
WHERE t.k = (p + m / 60) % 16
ORDER BY m DESC, p;
INSERT INTO apicount.caller_minute (bucket, method, path, client_ip, user_id, calls, ok,
                                    client_errors, server_errors)
SELECT b, 'GET', pth, ip, NULL, c, c - c / 10, c / 20, c / 10 - c / 20
FROM (SELECT date_trunc('minute', now()) - m * interval '1 minute' AS b,
             '/api/v1/r' || (1 + floor(50 * (k / 1000.0) ^ 2))::int AS pth,
             ('10.2.' || k / 256 || '.' || k % 256)::inet AS ip, 1 + k % 30 AS c
      FROM generate_series(1, :days * 1440) m, generate_series(0, 199) j,
           LATERAL (SELECT (m * 200 + j) % 1000 AS k) x
      UNION ALL
      SELECT date_trunc('minute', now()) - m * interval '1 minute',
             '/api/v1/r' || (1 + (m * 37 + i * 101) % 1000),
             ('10.1.' || (m * 7 + i) % 200 || '.' || i)::inet, 1 + i
      FROM generate_series(1, :days * 1440) m, generate_series(1, 5) i) r
ORDER BY b, pth, ip;
SELECT apicount.rebuild_api_hour();
SELECT apicount.rebuild_api_day();
SELECT apicount.rebuild_api_totals();
SELECT apicount.rebuild_caller_tiers();
VACUUM ANALYZE apicount.api_minute;
VACUUM ANALYZE apicount.api_hour;
VACUUM ANALYZE apicount.api_day;
VACUUM ANALYZE apicount.api_total_minute;
VACUUM ANALYZE apicount.api_total_hour;
VACUUM ANALYZE apicount.api_total_day;
VACUUM ANALYZE apicount.caller_minute;
VACUUM ANALYZE apicount.caller_hour;
VACUUM ANALYZE apicount.caller_day;
