-- bench/workloads/dirty.sql (psql; variables paths, ips, ahead): 100,000 hits in one statement
-- on paths x ips keys, in the minute that starts `ahead` minutes after the current one (0 to 4).
-- paths=1000 ips=100: 100,000 distinct entries (workload 5, "many");
-- paths=10 ips=1: the same 100,000 hits on 10 entries ("few").
INSERT INTO apicount.requests (ts, method, path, client_ip, user_id, status, latency_ms)
SELECT date_trunc('minute', now()) + make_interval(mins => :ahead), 'GET',
       '/api/v1/d' || (g % :paths), ('10.2.' || (g / 1000 % :ips) || '.1')::inet, NULL, 200, 1.5
FROM generate_series(0, 99999) g;
