-- workload 1f: workload 1 during a caller flood: client IPs drawn from 10,000,000, so the
-- caller tier (apicount.max_entries, 100,000) fills within seconds and most hits are folded
-- into "(other callers)" and the summaries of heavy callers (issue 14).
\set p random_zipfian(1, 1000, 1.1)
\set ip random(0, 9999999)
\set a :ip / 65536
\set b (:ip / 256) % 256
\set c :ip % 256
\set s random(1, 100)
\set st case when :s <= 85 then 200 when :s <= 90 then 201 when :s <= 95 then 404 when :s <= 98 then 401 else 500 end
\set lat random_exponential(1, 2000, 20.0)
INSERT INTO apicount.requests (method, path, client_ip, user_id, status, latency_ms)
VALUES ('GET', '/api/v1/r' || :p, ('10.' || :a || '.' || :b || '.' || :c)::inet, NULL, :st, :lat);
