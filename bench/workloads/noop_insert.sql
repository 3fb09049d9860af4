-- diagnostic floor of workload 1: the same INSERT into a table using apicount's access method built without the counting (bench/noop_am)
-- Parameters shared by the apicount workloads and the raw-INSERT baselines (same expressions):
-- 1,000 paths (zipfian, s = 1.1), 100,000 client IPs (uniform), a status and latency mix.
\set p random_zipfian(1, 1000, 1.1)
\set ip random(0, 99999)
\set a :ip / 65536
\set b (:ip / 256) % 256
\set c :ip % 256
\set s random(1, 100)
\set st case when :s <= 85 then 200 when :s <= 90 then 201 when :s <= 95 then 404 when :s <= 98 then 401 else 500 end
\set lat random_exponential(1, 2000, 20.0)
INSERT INTO bench.req_noop (method, path, client_ip, user_id, status, latency_ms)
VALUES ('GET', '/api/v1/r' || :p, ('10.' || :a || '.' || :b || '.' || :c)::inet, NULL, :st, :lat);
