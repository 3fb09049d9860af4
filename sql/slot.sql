--
-- slot: the tuple slot of apicount.requests (src/ingest/requests_slot.c) and the
-- COPY batch path (src/ingest/ingest.c), seen through INSERT ... RETURNING, a
-- BEFORE ROW trigger that rewrites and skips rows, values far larger than
-- a slot's first buffer, COPY batches mixing long, short and null values,
-- and one key whose latencies use more buckets than a sparse array holds.
-- Paths used here all start with /slot/.  Every count is checked against
-- the same rows kept in a plain table.
--
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS apicount;
RESET client_min_messages;
SET timezone = 'UTC';

-- counts of /slot/ paths (flushed and live) over the last hour
CREATE FUNCTION pg_temp.slot_counts(prefix text)
RETURNS TABLE (method text, path text, calls bigint, errors bigint)
LANGUAGE sql AS $$
	SELECT method, path, calls, errors
	FROM apicount.top_apis(1000000, now() - interval '1 hour', now() + interval '1 hour')
	WHERE path LIKE prefix || '%'
$$;

-- RETURNING gives back the row as inserted
INSERT INTO apicount.requests (method, path, client_ip, user_id, status, latency_ms)
VALUES ('get', '/slot/ret', '192.0.2.9', 'carol', 201, 2.5),
       (NULL, '/slot/ret', NULL, NULL, NULL, NULL)
RETURNING method, path, client_ip, user_id, status, latency_ms;

-- values much larger than the buffer a slot keeps (8 kB), then small
-- ones again: the path and user id are cut to 256 and 128 bytes
INSERT INTO apicount.requests (path, user_id, status)
VALUES ('/slot/long/' || repeat('x', 20000), repeat('u', 500), 200)
RETURNING length(path) AS path_length, length(user_id) AS user_length;
INSERT INTO apicount.requests (path) VALUES ('/slot/short');
SELECT path = left('/slot/long/' || repeat('x', 20000), 256) AS cut_to_256, calls
FROM pg_temp.slot_counts('/slot/long/');
SELECT calls FROM pg_temp.slot_counts('/slot/short');

-- INSERT ... SELECT and COPY of 3,000 rows: long and short paths, nulls in
-- every nullable column, several methods and statuses.  The truth is the
-- same rows in a plain table (the paths hold no ids and no '?', so
-- normalizing them changes nothing; long ones are cut to 256 bytes).
CREATE TEMP TABLE slot_rows AS
SELECT CASE WHEN i % 5 = 0 THEN NULL
            WHEN i % 5 = 1 THEN 'post' ELSE 'GET' END AS method,
       CASE WHEN i % 3 = 0
            THEN '/slot/mix/' || repeat(chr(120 + i % 3 + (i / 3) % 3), 400 + i % 900)
            ELSE '/slot/mix/s' || (i % 7) END AS path,
       CASE WHEN i % 4 = 0 THEN NULL
            ELSE ('10.1.' || (i % 250) || '.' || (i % 199))::inet END AS client_ip,
       CASE WHEN i % 6 = 0 THEN NULL ELSE 'user' || repeat('z', i % 200) END AS user_id,
       CASE WHEN i % 9 = 0 THEN NULL WHEN i % 10 = 0 THEN 503
            WHEN i % 7 = 0 THEN 404 ELSE 200 END AS status,
       CASE WHEN i % 8 = 0 THEN NULL ELSE (i % 97) * 1.5 END AS latency_ms
FROM generate_series(1, 3000) AS i;
CREATE TEMP TABLE slot_truth AS
SELECT coalesce(upper(method), 'GET') AS method, left(path, 256) AS path,
       count(*) AS calls, count(*) FILTER (WHERE status >= 400) AS errors
FROM slot_rows GROUP BY 1, 2;
SELECT count(*) AS keys, sum(calls) AS calls FROM slot_truth;

INSERT INTO apicount.requests (method, path, client_ip, user_id, status, latency_ms)
SELECT method, path, client_ip, user_id, status, latency_ms FROM slot_rows;
SELECT count(*) AS mismatches
FROM slot_truth t
FULL JOIN pg_temp.slot_counts('/slot/mix/') a USING (method, path)
WHERE a.calls IS DISTINCT FROM t.calls OR a.errors IS DISTINCT FROM t.errors;

-- the same rows by COPY (server-side file in the data directory): counts double
SELECT current_setting('data_directory') || '/apicount_slot_rows.csv' AS slot_file \gset
COPY slot_rows TO :'slot_file' WITH (FORMAT csv);
COPY apicount.requests (method, path, client_ip, user_id, status, latency_ms)
FROM :'slot_file' WITH (FORMAT csv);
SELECT count(*) AS mismatches
FROM slot_truth t
FULL JOIN pg_temp.slot_counts('/slot/mix/') a USING (method, path)
WHERE a.calls IS DISTINCT FROM 2 * t.calls OR a.errors IS DISTINCT FROM 2 * t.errors;

-- the file is not needed any more: leave it empty
COPY (SELECT 1 WHERE false) TO :'slot_file';

-- and per caller (IP and user id, cut to 128 bytes, either may be null)
-- on one path
SELECT count(*) AS callers,
       count(*) FILTER (WHERE a.calls IS DISTINCT FROM t.calls) AS caller_mismatches
FROM (SELECT client_ip, left(user_id, 128) AS user_id, 2 * count(*) AS calls
      FROM slot_rows WHERE path = '/slot/mix/s3' GROUP BY 1, 2) t
FULL JOIN apicount.top_callers(100000, '1 hour', '/slot/mix/s3', 'ip_user') a
	ON coalesce(a.client_ip::text, '-') = coalesce(t.client_ip::text, '-')
	AND coalesce(a.user_id, '-') = coalesce(t.user_id, '-');

-- a COPY whose row 15 is bad, in a savepoint: the rows before it in its
-- batch were recorded when it failed, and go with the savepoint
BEGIN;
SAVEPOINT before_copy;
COPY apicount.requests (path, status) FROM STDIN;
/slot/badbatch	200
/slot/badbatch	200
/slot/badbatch	200
/slot/badbatch	200
/slot/badbatch	200
/slot/badbatch	200
/slot/badbatch	200
/slot/badbatch	200
/slot/badbatch	200
/slot/badbatch	200
/slot/badbatch	200
/slot/badbatch	200
/slot/badbatch	200
/slot/badbatch	200
/slot/badbatch	999
/slot/badbatch	200
/slot/badbatch	200
\.
ROLLBACK TO SAVEPOINT before_copy;
INSERT INTO apicount.requests (path) VALUES ('/slot/aftercopy');
COMMIT;
SELECT path, calls FROM pg_temp.slot_counts('/slot/badbatch')
UNION ALL SELECT path, calls FROM pg_temp.slot_counts('/slot/aftercopy');

-- paths of one length whose first, middle and last bytes agree, alternating
-- (in the memo of normalized paths they may share a slot), some with an id
COPY apicount.requests (path) FROM STDIN;
/slot/memo/aaaa/x/bbbb/end
/slot/memo/aaaa/y/bbbb/end
/slot/memo/aaaa/1/bbbb/end
/slot/memo/aaaa/x/bbbb/end
/slot/memo/aaaa/y/bbbb/end
/slot/memo/aaaa/2/bbbb/end
/slot/memo/aaaa/x/bbbb/end
/slot/memo/aaaa/z/bbbb/end
\.
SELECT path, calls FROM pg_temp.slot_counts('/slot/memo/') ORDER BY path;

-- a BEFORE ROW trigger that rewrites rows, and skips one: the rewritten
-- row is what is counted and returned (INSERT), and COPY counts the same
CREATE FUNCTION pg_temp.slot_rewrite() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF NEW.path = '/rw/skip' THEN
		RETURN NULL;
	END IF;
	NEW.path := '/slot/trig' || NEW.path;
	NEW.status := 500;
	RETURN NEW;
END $$;
CREATE TRIGGER slot_rewrite BEFORE INSERT ON apicount.requests
	FOR EACH ROW WHEN (NEW.path LIKE '/rw/%') EXECUTE FUNCTION pg_temp.slot_rewrite();
INSERT INTO apicount.requests (path, status)
VALUES ('/rw/a', 200), ('/rw/skip', 200), ('/rw/b', 201)
RETURNING path, status;
COPY apicount.requests (path, status) FROM STDIN;
/rw/a	200
/rw/skip	200
/rw/c	\N
\.
DROP TRIGGER slot_rewrite ON apicount.requests;
SELECT method, path, calls, errors FROM pg_temp.slot_counts('/slot/trig/') ORDER BY path;
SELECT count(*) AS skipped_rows_counted FROM pg_temp.slot_counts('/rw/');

-- one key, one transaction, latencies in 700 different buckets (the
-- middle of bucket b is 1.03^(b - 0.5) us), a released savepoint with 300
-- more and a rolled-back one with 300 that must not count
CREATE TEMP TABLE slot_lat (latency_ms float8, kept boolean);
BEGIN;
INSERT INTO slot_lat SELECT power(1.03, b - 0.5) / 1000, true FROM generate_series(1, 700) b;
INSERT INTO apicount.requests (path, latency_ms)
SELECT '/slot/lat', latency_ms FROM slot_lat;
SAVEPOINT a;
INSERT INTO slot_lat SELECT power(1.03, b - 0.5) / 1000, true FROM generate_series(400, 699) b;
INSERT INTO apicount.requests (path, latency_ms)
SELECT '/slot/lat', power(1.03, b - 0.5) / 1000 FROM generate_series(400, 699) b;
RELEASE SAVEPOINT a;
SAVEPOINT b;
INSERT INTO apicount.requests (path, latency_ms)
SELECT '/slot/lat', power(1.03, b - 0.5) / 1000 FROM generate_series(100, 399) b;
ROLLBACK TO SAVEPOINT b;
COMMIT;
SELECT sum(calls) AS calls, sum(latency_count) AS latency_count,
       sum(apicount.latency_count(latency_hist)) AS hist_count
FROM apicount.minutes(now() - interval '1 hour', now() + interval '1 hour')
WHERE path = '/slot/lat';
-- each percentile within 1.5 % of percentile_disc over the kept latencies
WITH p AS (SELECT unnest(ARRAY[0, 0.1, 0.25, 0.5, 0.6, 0.75, 0.9, 0.99, 1]::float8[]) AS p),
got AS (
	SELECT percentile, latency_ms
	FROM apicount.latency_percentiles('/slot/lat', now() - interval '1 hour',
									  now() + interval '1 hour',
									  (SELECT array_agg(p) FROM p))
),
want AS (
	SELECT p.p, (SELECT percentile_disc(p.p) WITHIN GROUP (ORDER BY latency_ms)
				 FROM slot_lat WHERE kept) AS latency_ms
	FROM p
)
SELECT count(*) AS percentiles,
       count(*) FILTER (WHERE abs(got.latency_ms - want.latency_ms) <= 0.015 * want.latency_ms)
       AS within_1_5_percent
FROM want JOIN got ON got.percentile = want.p;

-- nothing above touched storage
SELECT pg_relation_size('apicount.requests') AS stored_bytes;
