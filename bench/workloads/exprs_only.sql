-- diagnostic baseline: the parameters and expressions of workloads 1 and 2, without apicount
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
SELECT '/api/v1/r' || :p, ('10.' || :a || '.' || :b || '.' || :c)::inet, NULL::text, :st::int, :lat::float8;
