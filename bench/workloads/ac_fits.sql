-- workload 1s: workload 1 on keys that fit: 200 client IPs x 100 paths (at most 20,000 caller
-- keys a minute, under apicount.max_entries), so no build folds a caller and both count alike.
-- Otherwise as workload 1 (bench/workloads/ac_insert.sql): zipfian paths, uniform IPs, the same
-- status and latency mix.
\set p random_zipfian(1, 100, 1.1)
\set ip random(0, 199)
\set a :ip / 65536
\set b (:ip / 256) % 256
\set c :ip % 256
\set s random(1, 100)
\set st case when :s <= 85 then 200 when :s <= 90 then 201 when :s <= 95 then 404 when :s <= 98 then 401 else 500 end
\set lat random_exponential(1, 2000, 20.0)
INSERT INTO apicount.requests (method, path, client_ip, user_id, status, latency_ms)
VALUES ('GET', '/api/v1/r' || :p, ('10.' || :a || '.' || :b || '.' || :c)::inet, NULL, :st, :lat);
