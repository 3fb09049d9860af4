--
-- queries: top_apis (both forms), top_callers (each "by"), series and callers
-- compared with independent GROUP BY queries over a plain table holding the
-- same hits, with everything live, everything flushed, and a mix of both;
-- the rollup tables after a flush; track_callers = off (untracked hits are
-- their API's "(other callers)": a caller_minute row with NULL client_ip and
-- user_id '(other callers)', shown by callers(), left out of top_callers).
-- Paths used here start with /q/; client_ips are in 10.99.0.0/24 and
-- 2001:db8:99::/64, user ids start with q- (or are '' / NULL).
--
-- Windows are relative to now(): each phase runs all its checks in a single
-- statement, so the functions under test and the reference queries see the
-- same now().  Only booleans are printed.
--
-- (quietly: an earlier suite may have created it)
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS apicount;
RESET client_min_messages;
SET timezone = 'UTC';

DO $$
BEGIN
	FOR i IN 1..300 LOOP
		EXIT WHEN (SELECT worker_pid FROM apicount.stats) IS NOT NULL;
		PERFORM pg_sleep(0.1);
	END LOOP;
END
$$;
SELECT worker_pid IS NOT NULL AS worker_running FROM apicount.stats;

--
-- the plain table: every hit given to apicount, and whether callers were tracked
--
CREATE TEMP TABLE q_raw (
	ts timestamptz, method text, path text, client_ip inet, user_id text,
	status int, latency_ms float8, tracked bool,
	bucket timestamptz,		-- date_trunc('minute', ts)
	slot numeric);			-- floor(epoch / 5 s)

-- fixed ranges for the from_ts/to_ts forms, relative to the first load
CREATE TEMP TABLE q_ranges (name text PRIMARY KEY, f timestamptz, t timestamptz);
INSERT INTO q_ranges VALUES
	('all',      now() - interval '2 hours',              now() + interval '10 minutes'),
	('odd',      now() - interval '47 minutes 30 seconds', now() - interval '3 minutes 15 seconds'),
	('aligned',  date_trunc('minute', now() - interval '30 minutes'), date_trunc('minute', now() - interval '10 minutes'));

-- equal, or both NULL, up to rounding
CREATE FUNCTION pg_temp.feq(a float8, b float8) RETURNS bool LANGUAGE sql IMMUTABLE AS $$
	SELECT (a IS NULL AND b IS NULL) OR
	       (a IS NOT NULL AND b IS NOT NULL AND abs(a - b) <= 1e-9 * greatest(1.0, abs(b)))
$$;

-- rows of q_raw inside a window: from_ts/to_ts (since NULL), or since
CREATE FUNCTION pg_temp.in_window(r_bucket timestamptz, r_slot numeric, r_ts timestamptz, f timestamptz, t timestamptz, since interval,
                                  minute_rule bool) RETURNS bool LANGUAGE sql STABLE AS $$
	SELECT CASE
		WHEN since IS NULL THEN
			r_bucket >= date_trunc('minute', f) AND r_bucket < t
		WHEN since > interval '2 minutes' THEN
			r_bucket >= date_trunc('minute', now() - since) AND r_bucket <= now()
		WHEN minute_rule THEN
			-- latency of a sliding window: the minutes its slots overlap (README "Windows")
			r_bucket >= date_trunc('minute', to_timestamp((floor(extract(epoch FROM now()) / 5)
			                                  - ceil(extract(epoch FROM since) / 5) + 1) * 5))
			AND r_bucket <= now()
		ELSE
			r_slot BETWEEN floor(extract(epoch FROM now()) / 5) - ceil(extract(epoch FROM since) / 5) + 1
			           AND floor(extract(epoch FROM now()) / 5)
			AND r_ts <= now()
		END
$$;

--
-- top_apis
--
CREATE FUNCTION pg_temp.ref_top_apis(f timestamptz, t timestamptz, since interval)
RETURNS TABLE (method text, path text, calls bigint, errors bigint, error_ratio float8, avg_latency_ms float8)
LANGUAGE sql STABLE AS $$
	SELECT w.method, w.path, count(*), count(*) FILTER (WHERE w.status >= 400),
	       (count(*) FILTER (WHERE w.status >= 400))::float8 / count(*),
	       -- latency: the minute buckets overlapping the window
	       (SELECT sum(l.latency_ms) / nullif(count(l.latency_ms), 0)
	        FROM q_raw l
	        WHERE l.method = w.method AND l.path = w.path
	          AND pg_temp.in_window(l.bucket, l.slot, l.ts, f, t, since, true))
	FROM q_raw w
	WHERE pg_temp.in_window(w.bucket, w.slot, w.ts, f, t, since, false)
	GROUP BY w.method, w.path
$$;

CREATE FUNCTION pg_temp.api_top_apis(f timestamptz, t timestamptz, since interval)
RETURNS TABLE (method text, path text, calls bigint, errors bigint, error_ratio float8,
               avg_latency_ms float8, calls_error bigint, ord bigint)
LANGUAGE plpgsql AS $$
BEGIN
	IF since IS NULL THEN
		RETURN QUERY SELECT * FROM apicount.top_apis(100000, f, t) WITH ORDINALITY;
	ELSE
		RETURN QUERY SELECT * FROM apicount.top_apis(100000, since) WITH ORDINALITY;
	END IF;
END
$$;

-- same rows, same values, same order (among the /q/ rows)
CREATE FUNCTION pg_temp.chk_top_apis(f timestamptz, t timestamptz, since interval)
RETURNS TABLE (ok bool, nonempty bool) LANGUAGE sql AS $$
	WITH a AS (
		SELECT x.*, row_number() OVER (ORDER BY x.ord) AS pos
		FROM pg_temp.api_top_apis(f, t, since) x WHERE x.path LIKE '/q/%'
	), r AS (
		SELECT x.*, row_number() OVER (ORDER BY x.calls DESC, x.method, x.path) AS pos
		FROM pg_temp.ref_top_apis(f, t, since) x
	)
	SELECT count(*) FILTER (WHERE a.pos IS NULL OR r.pos IS NULL
	                           OR a.method IS DISTINCT FROM r.method OR a.path IS DISTINCT FROM r.path
	                           OR a.calls IS DISTINCT FROM r.calls OR a.errors IS DISTINCT FROM r.errors
	                           OR NOT pg_temp.feq(a.error_ratio, r.error_ratio)
	                           OR NOT pg_temp.feq(a.avg_latency_ms, r.avg_latency_ms)
	                           OR a.calls_error IS DISTINCT FROM 0) = 0,
	       count(r.pos) > 0
	FROM a FULL JOIN r ON a.pos = r.pos
$$;

--
-- top_callers
--
CREATE FUNCTION pg_temp.ref_top_callers(since interval, p text, by text)
RETURNS TABLE (client_ip inet, user_id text, calls bigint, errors bigint)
LANGUAGE sql STABLE AS $$
	SELECT CASE WHEN by IN ('ip', 'ip_user') THEN w.client_ip END,
	       CASE WHEN by IN ('user', 'ip_user') THEN w.user_id END,
	       count(*), count(*) FILTER (WHERE w.status >= 400)
	FROM q_raw w
	WHERE w.tracked AND (p IS NULL OR w.path = p)
	  AND pg_temp.in_window(w.bucket, w.slot, w.ts, NULL, NULL, since, false)
	GROUP BY 1, 2
$$;

-- a group belongs to this suite alone if its ip or user id does
CREATE FUNCTION pg_temp.q_caller(ip inet, uid text) RETURNS bool LANGUAGE sql IMMUTABLE AS $$
	SELECT coalesce(ip << inet '10.99.0.0/24' OR ip << inet '2001:db8:99::/64', false)
	    OR coalesce(uid LIKE 'q-%', false)
$$;

-- for a /q/ path every group is compared (and LIMIT n); for all paths only the
-- groups that are this suite's own
CREATE FUNCTION pg_temp.chk_top_callers(n int, since interval, p text, by text)
RETURNS TABLE (ok bool, nonempty bool) LANGUAGE sql AS $$
	WITH a AS (
		SELECT x.*, row_number() OVER (ORDER BY x.ordinality) AS pos
		FROM apicount.top_callers(n, since, p, by) WITH ORDINALITY x
		WHERE p IS NOT NULL OR pg_temp.q_caller(x.client_ip, x.user_id)
	), r AS (
		SELECT * FROM (
			SELECT x.*, row_number() OVER (ORDER BY x.calls DESC, x.client_ip NULLS LAST, x.user_id NULLS LAST) AS pos
			FROM pg_temp.ref_top_callers(since, p, by) x
			WHERE p IS NOT NULL OR pg_temp.q_caller(x.client_ip, x.user_id)) y
		WHERE p IS NULL OR y.pos <= n
	)
	SELECT count(*) FILTER (WHERE a.pos IS NULL OR r.pos IS NULL
	                           OR a.client_ip IS DISTINCT FROM r.client_ip
	                           OR a.user_id IS DISTINCT FROM r.user_id
	                           OR a.calls IS DISTINCT FROM r.calls
	                           OR a.errors IS DISTINCT FROM r.errors) = 0,
	       count(r.pos) > 0
	FROM a FULL JOIN r ON a.pos = r.pos
$$;

--
-- series
--
CREATE FUNCTION pg_temp.ref_series(p text, f timestamptz, t timestamptz, step interval)
RETURNS TABLE ("time" timestamptz, method text, path text, calls bigint, errors bigint, avg_latency_ms float8)
LANGUAGE sql STABLE AS $$
	SELECT date_bin(step, w.bucket, timestamptz '2000-01-01 00:00:00+00'),
	       CASE WHEN p IS NOT NULL THEN w.method END,
	       CASE WHEN p IS NOT NULL THEN w.path END,
	       count(*), count(*) FILTER (WHERE w.status >= 400),
	       sum(w.latency_ms) / nullif(count(w.latency_ms), 0)
	FROM q_raw w
	WHERE (p IS NULL OR w.path = p) AND pg_temp.in_window(w.bucket, w.slot, w.ts, f, t, NULL, false)
	GROUP BY 1, 2, 3
$$;

CREATE FUNCTION pg_temp.chk_series(p text, f timestamptz, t timestamptz, step interval)
RETURNS TABLE (ok bool, nonempty bool) LANGUAGE sql AS $$
	WITH a AS (
		SELECT x.*, row_number() OVER (ORDER BY x.ordinality) AS pos
		FROM apicount.series(p, f, t, step) WITH ORDINALITY x
	), r AS (
		SELECT x.*, row_number() OVER (ORDER BY x.time, x.method, x.path) AS pos
		FROM pg_temp.ref_series(p, f, t, step) x
	)
	SELECT count(*) FILTER (WHERE a.pos IS NULL OR r.pos IS NULL
	                           OR a.time IS DISTINCT FROM r.time
	                           OR a.method IS DISTINCT FROM r.method OR a.path IS DISTINCT FROM r.path
	                           OR a.calls IS DISTINCT FROM r.calls OR a.errors IS DISTINCT FROM r.errors
	                           OR NOT pg_temp.feq(a.avg_latency_ms, r.avg_latency_ms)) = 0,
	       count(r.pos) > 0
	FROM a FULL JOIN r ON a.pos = r.pos
$$;

-- series(NULL, ...) sums every path, other suites' too: compare with what it
-- returned before this suite's first hit (the baseline) plus the reference;
-- averages only where the baseline had no row
CREATE TEMP TABLE series_base AS
SELECT g.name, s.step, x.time, x.calls, x.errors, x.avg_latency_ms
FROM q_ranges g
CROSS JOIN (VALUES (interval '1 minute'), (interval '5 minutes')) AS s(step)
CROSS JOIN LATERAL apicount.series(NULL, g.f, g.t, s.step) x;

CREATE FUNCTION pg_temp.chk_series_all(range_name text, step interval)
RETURNS TABLE (ok bool, nonempty bool) LANGUAGE sql AS $$
	WITH g AS (SELECT * FROM q_ranges WHERE name = range_name),
	a AS (
		SELECT x.*, x.ordinality AS pos FROM g, apicount.series(NULL, g.f, g.t, step) WITH ORDINALITY x
	), r AS (
		SELECT x.time, x.calls, x.errors, x.avg_latency_ms FROM g, pg_temp.ref_series(NULL, g.f, g.t, step) x
	), b AS (
		SELECT * FROM series_base WHERE name = range_name AND series_base.step = chk_series_all.step
	), e AS (
		SELECT time, coalesce(b.calls, 0) + coalesce(r.calls, 0) AS calls,
		       coalesce(b.errors, 0) + coalesce(r.errors, 0) AS errors,
		       r.avg_latency_ms, b.time IS NULL AS avg_known, r.time IS NOT NULL AS from_ref,
		       row_number() OVER (ORDER BY time) AS pos
		FROM r FULL JOIN b USING (time)
	)
	SELECT count(*) FILTER (WHERE a.pos IS NULL OR e.pos IS NULL
	                           OR a.time IS DISTINCT FROM e.time
	                           OR a.method IS NOT NULL OR a.path IS NOT NULL
	                           OR a.calls IS DISTINCT FROM e.calls OR a.errors IS DISTINCT FROM e.errors
	                           OR (e.avg_known AND NOT pg_temp.feq(a.avg_latency_ms, e.avg_latency_ms))) = 0,
	       count(*) FILTER (WHERE e.from_ref) > 0
	FROM a FULL JOIN e ON a.pos = e.pos
$$;

--
-- callers: one row per caller of the tracked hits, plus the untracked hits as
-- one row (NULL client_ip, user_id '(other callers)')
--
CREATE FUNCTION pg_temp.ref_callers(p text, f timestamptz, t timestamptz)
RETURNS TABLE (client_ip inet, user_id text, first_seen timestamptz, last_seen timestamptz,
               calls bigint, errors bigint)
LANGUAGE sql STABLE AS $$
	SELECT CASE WHEN w.tracked THEN w.client_ip END,
	       CASE WHEN w.tracked THEN w.user_id ELSE '(other callers)' END,
	       min(w.bucket), max(w.bucket),
	       count(*), count(*) FILTER (WHERE w.status >= 400)
	FROM q_raw w
	WHERE w.path = p AND pg_temp.in_window(w.bucket, w.slot, w.ts, f, t, NULL, false)
	GROUP BY 1, 2
$$;

CREATE FUNCTION pg_temp.chk_callers(p text, range_name text)
RETURNS TABLE (ok bool, nonempty bool) LANGUAGE sql AS $$
	WITH g AS (SELECT * FROM q_ranges WHERE name = range_name),
	a AS (
		SELECT x.*, x.ordinality AS pos FROM g, apicount.callers(p, g.f, g.t) WITH ORDINALITY x
	), r AS (
		SELECT x.*, row_number() OVER (ORDER BY x.calls DESC, x.client_ip NULLS LAST, x.user_id NULLS LAST) AS pos
		FROM g, pg_temp.ref_callers(p, g.f, g.t) x
	)
	SELECT count(*) FILTER (WHERE a.pos IS NULL OR r.pos IS NULL
	                           OR a.client_ip IS DISTINCT FROM r.client_ip
	                           OR a.user_id IS DISTINCT FROM r.user_id
	                           OR a.first_seen IS DISTINCT FROM r.first_seen
	                           OR a.last_seen IS DISTINCT FROM r.last_seen
	                           OR a.calls IS DISTINCT FROM r.calls OR a.errors IS DISTINCT FROM r.errors) = 0,
	       count(r.pos) > 0
	FROM a FULL JOIN r ON a.pos = r.pos
$$;

--
-- every check, in one function call (one now())
--
CREATE FUNCTION pg_temp.run_checks() RETURNS TABLE (check_name text, ok bool, nonempty bool)
LANGUAGE plpgsql AS $$
BEGIN
	RETURN QUERY
		SELECT 'top_apis range ' || g.name, c.ok, c.nonempty
		FROM q_ranges g, pg_temp.chk_top_apis(g.f, g.t, NULL) c;
	RETURN QUERY
		SELECT 'top_apis since ' || s.since, c.ok,
		       CASE WHEN s.since >= interval '1 minute' THEN c.nonempty END
		FROM (VALUES (interval '7 seconds'), (interval '1 minute'), (interval '90 seconds'),
		             (interval '2 minutes'), (interval '2 minutes 30 seconds'), (interval '10 minutes'),
		             (interval '1 hour'), (interval '1 day')) AS s(since),
		     pg_temp.chk_top_apis(NULL, NULL, s.since) c;
	RETURN QUERY
		SELECT format('top_callers %s since %s path %s', b.by, s.since, coalesce(p.p, 'NULL')), c.ok, c.nonempty
		FROM (VALUES ('ip'), ('user'), ('ip_user')) AS b(by),
		     (VALUES (interval '1 minute'), (interval '2 minutes'), (interval '1 hour')) AS s(since),
		     (VALUES ('/q/users'), (NULL)) AS p(p),
		     pg_temp.chk_top_callers(100000, s.since, p.p, b.by) c;
	RETURN QUERY
		SELECT format('top_callers %s limit 3 since %s', b.by, s.since), c.ok, c.nonempty
		FROM (VALUES ('ip'), ('user'), ('ip_user')) AS b(by),
		     (VALUES (interval '1 minute'), (interval '1 hour')) AS s(since),
		     pg_temp.chk_top_callers(3, s.since, '/q/orders', b.by) c;
	RETURN QUERY
		SELECT format('series %s %s step %s', p.p, g.name, s.step), c.ok, c.nonempty
		FROM (VALUES ('/q/users'), ('/q/orders')) AS p(p), q_ranges g,
		     (VALUES (interval '1 minute'), (interval '5 minutes'), (interval '7 minutes')) AS s(step),
		     pg_temp.chk_series(p.p, g.f, g.t, s.step) c;
	RETURN QUERY
		SELECT 'series /q/users default range', c.ok, c.nonempty
		FROM pg_temp.chk_series('/q/users', now() - interval '1 hour', now(), interval '1 minute') c;
	RETURN QUERY
		SELECT format('series NULL %s step %s', g.name, s.step), c.ok, c.nonempty
		FROM q_ranges g, (VALUES (interval '1 minute'), (interval '5 minutes')) AS s(step),
		     pg_temp.chk_series_all(g.name, s.step) c;
	RETURN QUERY
		SELECT format('callers %s %s', p.p, g.name), c.ok, c.nonempty
		FROM (VALUES ('/q/users'), ('/q/health')) AS p(p), q_ranges g,
		     pg_temp.chk_callers(p.p, g.name) c;
END
$$;

-- series() with its defaults is series(NULL, now() - 1 hour, now(), 1 minute)
CREATE FUNCTION pg_temp.chk_defaults() RETURNS TABLE (check_name text, ok bool) LANGUAGE sql AS $$
	SELECT 'series() = series(NULL, now() - 1 hour, now(), 1 minute)',
	       NOT EXISTS (SELECT * FROM apicount.series()
	                   EXCEPT ALL
	                   SELECT * FROM apicount.series(NULL, now() - interval '1 hour', now(), interval '1 minute'))
	   AND NOT EXISTS (SELECT * FROM apicount.series(NULL, now() - interval '1 hour', now(), interval '1 minute')
	                   EXCEPT ALL
	                   SELECT * FROM apicount.series())
	UNION ALL
	SELECT 'top_apis() = top_apis(10, 1 minute)',
	       (SELECT array_agg(x ORDER BY o) FROM apicount.top_apis() WITH ORDINALITY x(m, p, c, e, r, l, ce, o))
	       IS NOT DISTINCT FROM
	       (SELECT array_agg(x ORDER BY o) FROM apicount.top_apis(10, interval '1 minute') WITH ORDINALITY x(m, p, c, e, r, l, ce, o))
	UNION ALL
	SELECT 'top_callers() = top_callers(10, 1 minute, NULL, ip)',
	       (SELECT array_agg(x ORDER BY o) FROM apicount.top_callers() WITH ORDINALITY x(i, u, c, e, ce, o))
	       IS NOT DISTINCT FROM
	       (SELECT array_agg(x ORDER BY o) FROM apicount.top_callers(10, interval '1 minute', NULL, 'ip') WITH ORDINALITY x(i, u, c, e, ce, o))
	UNION ALL
	SELECT 'top_apis(5, range) = first 5 of top_apis(100000, range)',
	       (SELECT array_agg(x ORDER BY o) FROM q_ranges g, apicount.top_apis(5, g.f, g.t) WITH ORDINALITY x(m, p, c, e, r, l, ce, o) WHERE g.name = 'all')
	       IS NOT DISTINCT FROM
	       (SELECT array_agg(x ORDER BY o) FROM q_ranges g, apicount.top_apis(100000, g.f, g.t) WITH ORDINALITY x(m, p, c, e, r, l, ce, o) WHERE g.name = 'all' AND o <= 5)
	UNION ALL
	SELECT 'top_apis(0, ...) is empty',
	       NOT EXISTS (SELECT FROM apicount.top_apis(0, interval '1 hour'))
	   AND NOT EXISTS (SELECT FROM q_ranges g, apicount.top_apis(0, g.f, g.t))
	   AND NOT EXISTS (SELECT FROM apicount.top_callers(0, interval '1 hour'))
$$;

--
-- the rollup tables after a flush (no /q/ hit may be pending)
--
CREATE FUNCTION pg_temp.chk_rollups() RETURNS TABLE (check_name text, ok bool) LANGUAGE sql AS $$
	WITH am AS (
		SELECT bucket, method, path, calls, ok, client_errors, server_errors,
		       latency_sum_ms, latency_max_ms, latency_count
		FROM apicount.api_minute WHERE path LIKE '/q/%'
	), ar AS (
		SELECT date_trunc('minute', ts) AS bucket, method, path, count(*) AS calls,
		       count(*) FILTER (WHERE status BETWEEN 100 AND 399) AS ok,
		       count(*) FILTER (WHERE status BETWEEN 400 AND 499) AS client_errors,
		       count(*) FILTER (WHERE status BETWEEN 500 AND 599) AS server_errors,
		       coalesce(sum(latency_ms), 0) AS latency_sum_ms, max(latency_ms) AS latency_max_ms,
		       count(latency_ms) AS latency_count
		FROM q_raw GROUP BY 1, 2, 3
	), cm AS (
		SELECT bucket, method, path, client_ip, user_id, calls, ok, client_errors, server_errors
		FROM apicount.caller_minute WHERE path LIKE '/q/%'
	), cr AS (
		-- tracked hits per caller; untracked hits per API as its '(other callers)' row
		SELECT date_trunc('minute', ts) AS bucket, method, path,
		       CASE WHEN tracked THEN client_ip END AS client_ip,
		       CASE WHEN tracked THEN user_id ELSE '(other callers)' END AS user_id,
		       count(*) AS calls,
		       count(*) FILTER (WHERE status BETWEEN 100 AND 399) AS ok,
		       count(*) FILTER (WHERE status BETWEEN 400 AND 499) AS client_errors,
		       count(*) FILTER (WHERE status BETWEEN 500 AND 599) AS server_errors
		FROM q_raw GROUP BY 1, 2, 3, 4, 5
	)
	SELECT 'api_minute = plain table per (bucket, method, path)',
	       (SELECT count(*) FROM am FULL JOIN ar USING (bucket, method, path)
	        WHERE am.calls IS DISTINCT FROM ar.calls OR am.ok IS DISTINCT FROM ar.ok
	           OR am.client_errors IS DISTINCT FROM ar.client_errors
	           OR am.server_errors IS DISTINCT FROM ar.server_errors
	           OR NOT pg_temp.feq(am.latency_sum_ms, ar.latency_sum_ms)
	           OR NOT pg_temp.feq(am.latency_max_ms, ar.latency_max_ms)
	           OR am.latency_count IS DISTINCT FROM ar.latency_count) = 0
	UNION ALL
	SELECT 'api_minute total = plain table total',
	       (SELECT sum(calls) FROM am) = (SELECT count(*) FROM q_raw)
	UNION ALL
	SELECT 'caller_minute = plain table (tracked per caller, untracked as (other callers)) per minute',
	       (SELECT count(*) FROM cm FULL JOIN cr
	          ON cm.bucket = cr.bucket AND cm.method = cr.method AND cm.path = cr.path
	         AND cm.client_ip IS NOT DISTINCT FROM cr.client_ip AND cm.user_id IS NOT DISTINCT FROM cr.user_id
	        WHERE cm.calls IS DISTINCT FROM cr.calls OR cm.ok IS DISTINCT FROM cr.ok
	           OR cm.client_errors IS DISTINCT FROM cr.client_errors
	           OR cm.server_errors IS DISTINCT FROM cr.server_errors) = 0
	UNION ALL
	SELECT 'caller_minute total = all hits (tracked + (other callers))',
	       (SELECT sum(calls) FROM cm) = (SELECT count(*) FROM q_raw)
	UNION ALL
	SELECT 'caller_minute tracked rows total = tracked hits',
	       (SELECT sum(calls) FROM cm WHERE NOT (client_ip IS NULL AND user_id IS NOT DISTINCT FROM '(other callers)'))
	       = (SELECT count(*) FROM q_raw WHERE tracked)
	UNION ALL
	SELECT 'caller_minute = api_minute per (bucket, method, path)',
	       (SELECT count(*)
	        FROM am
	        FULL JOIN (SELECT bucket, method, path, sum(calls) AS calls, sum(ok) AS ok,
	                          sum(client_errors) AS ce, sum(server_errors) AS se
	                   FROM cm GROUP BY 1, 2, 3) c USING (bucket, method, path)
	        WHERE c.calls IS DISTINCT FROM am.calls OR c.ok IS DISTINCT FROM am.ok
	           OR c.ce IS DISTINCT FROM am.client_errors OR c.se IS DISTINCT FROM am.server_errors) = 0
	UNION ALL
	SELECT 'no /q/ hit left unflushed in apicount.live',
	       NOT EXISTS (SELECT FROM apicount.live WHERE path LIKE '/q/%' AND unflushed <> 0)
$$;

--
-- phase 1: load (mostly live; the worker may flush any part of it at any time)
--
INSERT INTO q_raw
SELECT now() - make_interval(secs => CASE WHEN i % 2 = 0 THEN ((i * 7919) % 15000) / 100.0
                                          ELSE 150 + ((i * 104729) % 525000) / 100.0 END),
       (ARRAY['GET', 'GET', 'POST', 'PUT', 'DELETE'])[1 + i % 5],
       '/q/' || (ARRAY['users', 'orders', 'items', 'carts', 'search', 'login', 'health'])[1 + (i * 3) % 7],
       CASE i % 6 WHEN 0 THEN NULL
                  WHEN 1 THEN ('2001:db8:99::' || (i % 4))::inet
                  ELSE ('10.99.0.' || (i % 5))::inet END,
       CASE WHEN i % 4 = 0 THEN NULL WHEN i % 9 = 0 THEN '' ELSE 'q-user' || (i % 13) END,
       CASE WHEN i % 10 = 0 THEN NULL
            ELSE (ARRAY[200, 201, 204, 301, 304, 400, 401, 404, 429, 500, 502, 503, 101])[1 + (i * 7) % 13] END,
       CASE WHEN i % 8 = 0 THEN NULL ELSE ((i * 37) % 2000) / 4.0 END,
       true
FROM generate_series(1, 3000) AS i;
UPDATE q_raw SET bucket = date_trunc('minute', ts), slot = floor(extract(epoch FROM ts) / 5);
\set QUIET off
INSERT INTO apicount.requests (ts, method, path, client_ip, user_id, status, latency_ms)
SELECT ts, method, path, client_ip, user_id, status, latency_ms FROM q_raw;
\set QUIET on

SELECT * FROM pg_temp.run_checks();
SELECT * FROM pg_temp.chk_defaults();

--
-- phase 2: everything flushed
--
SELECT apicount.flush() >= 0 AS flushed;
SELECT * FROM pg_temp.chk_rollups();
CREATE TEMP TABLE results AS SELECT * FROM pg_temp.run_checks();
SELECT bool_and(ok) AS all_ok, bool_and(nonempty) FILTER (WHERE nonempty IS NOT NULL) AS all_nonempty,
       count(*) AS checks
FROM results;
SELECT * FROM results WHERE NOT ok OR NOT nonempty;
DROP TABLE results;

--
-- phase 3: more hits for the same keys and minutes, partly with
-- track_callers = off (those count in api_minute, and in caller_minute only
-- as their API's '(other callers)' row; untracked-only path /q/untracked
-- never shows up in top_callers, and in callers() only as that row)
--
CREATE TEMP TABLE q_batch2 AS
SELECT now() - make_interval(secs => CASE WHEN i % 2 = 0 THEN ((i * 4099) % 15000) / 100.0
                                          ELSE 150 + ((i * 7907) % 525000) / 100.0 END) AS ts,
       (ARRAY['GET', 'GET', 'POST', 'PUT', 'DELETE'])[1 + i % 5] AS method,
       CASE WHEN i > 800 AND i % 3 = 0 THEN '/q/untracked'
            ELSE '/q/' || (ARRAY['users', 'orders', 'items', 'carts', 'search', 'login', 'health'])[1 + (i * 5) % 7] END AS path,
       CASE i % 6 WHEN 0 THEN NULL
                  WHEN 1 THEN ('2001:db8:99::' || (i % 4))::inet
                  ELSE ('10.99.0.' || (i % 7))::inet END AS client_ip,
       CASE WHEN i % 4 = 0 THEN NULL WHEN i % 9 = 0 THEN '' ELSE 'q-user' || (i % 17) END AS user_id,
       CASE WHEN i % 11 = 0 THEN NULL
            ELSE (ARRAY[200, 404, 500, 201, 503, 302, 418])[1 + (i * 3) % 7] END AS status,
       CASE WHEN i % 6 = 0 THEN NULL ELSE ((i * 53) % 1000) / 8.0 END AS latency_ms,
       i <= 800 AS tracked
FROM generate_series(1, 1000) AS i;
INSERT INTO q_raw SELECT *, date_trunc('minute', ts), floor(extract(epoch FROM ts) / 5) FROM q_batch2;
\set QUIET off
INSERT INTO apicount.requests (ts, method, path, client_ip, user_id, status, latency_ms)
SELECT ts, method, path, client_ip, user_id, status, latency_ms FROM q_batch2 WHERE tracked;
SET apicount.track_callers = off;
INSERT INTO apicount.requests (ts, method, path, client_ip, user_id, status, latency_ms)
SELECT ts, method, path, client_ip, user_id, status, latency_ms FROM q_batch2 WHERE NOT tracked;
RESET apicount.track_callers;
\set QUIET on

-- untracked entries carry no caller fields, and are API entries only
SELECT count(*) > 0 AS untracked_live,
       count(*) FILTER (WHERE client_ip IS NOT NULL OR user_id IS NOT NULL) AS with_caller_fields,
       count(*) FILTER (WHERE tier <> 'api') AS in_caller_tier
FROM apicount.live WHERE path = '/q/untracked';

CREATE TEMP TABLE results AS SELECT * FROM pg_temp.run_checks();
SELECT bool_and(ok) AS all_ok, bool_and(nonempty) FILTER (WHERE nonempty IS NOT NULL) AS all_nonempty,
       count(*) AS checks
FROM results;
SELECT * FROM results WHERE NOT ok OR NOT nonempty;
DROP TABLE results;

--
-- phase 4: flushed again
--
SELECT apicount.flush() >= 0 AS flushed;
SELECT * FROM pg_temp.chk_rollups();
-- /q/untracked in caller_minute: only '(other callers)' rows, one per (minute,
-- method) of its hits, holding all of them
SELECT count(*) FILTER (WHERE NOT (c.client_ip IS NULL AND c.user_id IS NOT DISTINCT FROM '(other callers)')) AS untracked_named_caller_rows,
       count(*) = (SELECT count(DISTINCT (bucket, method)) FROM q_raw WHERE path = '/q/untracked') AS one_row_per_minute_and_method,
       sum(c.calls) = (SELECT count(*) FROM q_raw WHERE path = '/q/untracked') AS other_callers_calls_ok
FROM apicount.caller_minute c WHERE c.path = '/q/untracked';
SELECT sum(calls) = (SELECT count(*) FROM q_raw WHERE path = '/q/untracked') AS untracked_api_calls_ok
FROM apicount.api_minute WHERE path = '/q/untracked';
SELECT count(*) AS untracked_top_callers FROM apicount.top_callers(100, interval '1 hour', '/q/untracked');
SELECT c.client_ip, c.user_id,
       c.calls = (SELECT count(*) FROM q_raw WHERE path = '/q/untracked') AS calls_ok
FROM q_ranges g, apicount.callers('/q/untracked', g.f, g.t) c WHERE g.name = 'all';
CREATE TEMP TABLE results AS SELECT * FROM pg_temp.run_checks();
SELECT bool_and(ok) AS all_ok, bool_and(nonempty) FILTER (WHERE nonempty IS NOT NULL) AS all_nonempty,
       count(*) AS checks
FROM results;
SELECT * FROM results WHERE NOT ok OR NOT nonempty;
DROP TABLE results;
SELECT * FROM pg_temp.chk_defaults();

--
-- argument errors
--
\set VERBOSITY sqlstate
SELECT * FROM apicount.top_apis(-1);
SELECT * FROM apicount.top_apis(NULL::int, interval '1 minute');
SELECT * FROM apicount.top_apis(10, interval '0 seconds');
SELECT * FROM apicount.top_apis(10, interval '-1 minute');
SELECT * FROM apicount.top_apis(10, NULL::interval);
SELECT * FROM apicount.top_apis(-1, now() - interval '1 hour', now());
SELECT * FROM apicount.top_callers(10, interval '1 minute', NULL, 'path');
SELECT * FROM apicount.top_callers(10, interval '1 minute', NULL, NULL);
SELECT * FROM apicount.top_callers(-5);
SELECT * FROM apicount.top_callers(10, interval '0 seconds');
SELECT * FROM apicount.series(NULL, now() - interval '1 hour', now(), interval '0 seconds');
SELECT * FROM apicount.series(NULL, now() - interval '1 hour', now(), NULL);
SELECT * FROM apicount.callers(NULL, now() - interval '1 hour', now());
\set VERBOSITY default
