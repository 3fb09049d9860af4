-- bench/workloads/load_live.sql: 100,000 live caller entries in the current minute
-- (1,000 paths x 100 client IPs, one hit each), plus 2,000 more hits on one of them so that
-- hot_callers(1000) has a caller to report.
INSERT INTO apicount.requests (method, path, client_ip, user_id, status, latency_ms)
SELECT 'GET', '/api/v1/r' || (g % 1000 + 1), ('10.1.0.' || (g / 1000))::inet, NULL,
       CASE WHEN g % 20 = 0 THEN 500 ELSE 200 END, (g % 97) + 0.5
FROM generate_series(0, 99999) g;
INSERT INTO apicount.requests (method, path, client_ip, user_id, status, latency_ms)
SELECT 'GET', '/api/v1/r1', '10.1.0.0'::inet, NULL, 200, 3.0 FROM generate_series(1, 2000);
