-- bench/workloads/gen_copy.sql (psql; variables rows, file; optional ips, paths, secs): writes
-- the workload 4 CSV file server-side: all seven columns of apicount.requests, ts over the last
-- secs seconds (600), paths paths (1,000) with a zipf-like skew (P(k) ~ 1/k), ips client IPs
-- (100,000), user ids on half the rows, a method, status and latency mix.
\if :{?ips} \else \set ips 100000 \endif
\if :{?paths} \else \set paths 1000 \endif
\if :{?secs} \else \set secs 600 \endif
COPY (
    SELECT now() - (r.u1 * :secs * interval '1 second') AS ts,
           CASE WHEN r.u2 < 0.80 THEN 'GET' WHEN r.u2 < 0.93 THEN 'POST' WHEN r.u2 < 0.98 THEN 'PUT' ELSE 'DELETE' END,
           '/api/v1/r' || least(:paths, floor(exp(r.u3 * ln(:paths + 1)))::int),
           ('10.' || (r.ip / 65536) || '.' || (r.ip / 256 % 256) || '.' || (r.ip % 256))::inet,
           CASE WHEN r.ip % 2 = 0 THEN 'user' || (r.ip % least(20000, :ips)) END,
           CASE WHEN r.u4 < 0.85 THEN 200 WHEN r.u4 < 0.90 THEN 201 WHEN r.u4 < 0.95 THEN 404 WHEN r.u4 < 0.98 THEN 401 ELSE 500 END,
           round((-ln(1 - r.u5) * 20)::numeric, 3)::float8
    FROM (SELECT random() AS u1, random() AS u2, random() AS u3, random() AS u4, random() AS u5,
                 (random() * (:ips - 1))::int AS ip
          FROM generate_series(1, :rows)) r
) TO :'file' WITH (FORMAT csv);
