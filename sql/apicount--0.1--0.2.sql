-- apicount 0.1 -> 0.2: two tiers of counters (never blind under a flood).
-- API entries count every hit exactly whatever the number of callers;
-- callers that find no room are folded into their API's "(other callers)"
-- row of caller_minute (client_ip NULL, user_id '(other callers)').
-- A fresh CREATE EXTENSION runs apicount--0.1.sql and then this script, so
-- an upgraded and a new installation are the same.

\echo Use "ALTER EXTENSION apicount UPDATE TO '0.2'" to load this file. \quit

-- apicount.live: one row per entry of either tier, with its tier
DROP VIEW @extschema@.live;
DROP FUNCTION @extschema@._live_entries();
CREATE FUNCTION @extschema@._live_entries(
	OUT bucket timestamptz, OUT method text, OUT path text,
	OUT client_ip inet, OUT user_id text, OUT tracked boolean,
	OUT calls bigint, OUT unflushed bigint, OUT unflushed_ok bigint,
	OUT unflushed_client_errors bigint, OUT unflushed_server_errors bigint,
	OUT unflushed_latency_count bigint, OUT unflushed_latency_sum_ms double precision,
	OUT unflushed_latency_max_ms double precision, OUT tier text)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'apicount_live_entries'
LANGUAGE C VOLATILE PARALLEL RESTRICTED;

CREATE VIEW @extschema@.live AS
SELECT bucket, method, path, client_ip, user_id, calls, unflushed, tier
FROM @extschema@._live_entries();

-- apicount.stats: each tier's capacity and fill, and the calls folded
DROP VIEW @extschema@.stats;
DROP FUNCTION @extschema@._stats();
CREATE FUNCTION @extschema@._stats(
	OUT capacity bigint, OUT entries bigint, OUT hits bigint,
	OUT overflow_hits bigint, OUT truncated bigint, OUT flushes bigint,
	OUT flush_failures bigint, OUT last_flush_at timestamptz,
	OUT last_flush_ms double precision, OUT worker_pid integer,
	OUT shared_memory_bytes bigint, OUT latency_pages bigint,
	OUT latency_pages_capacity bigint, OUT latency_unbinned bigint,
	OUT caller_rows_inserted bigint, OUT caller_rows_updated bigint,
	OUT caller_rows_upserted bigint, OUT strings bigint,
	OUT strings_capacity bigint, OUT api_capacity bigint,
	OUT api_entries bigint, OUT caller_entries bigint,
	OUT folded_calls bigint, OUT folded_unsummarized bigint,
	OUT heavy_counters bigint, OUT heavy_bound bigint,
	OUT audited_capacity bigint, OUT audited_entries bigint,
	OUT audited_folded bigint)
RETURNS record
AS 'MODULE_PATHNAME', 'apicount_stats'
LANGUAGE C VOLATILE PARALLEL RESTRICTED;

CREATE VIEW @extschema@.stats AS SELECT * FROM @extschema@._stats();

-- caller rows say whether their caller may have been folded in that minute
-- before its entry was made (then a summary may have forgotten some calls)
ALTER TABLE @extschema@.caller_minute
	ADD COLUMN folded_before boolean NOT NULL DEFAULT false;

DROP FUNCTION @extschema@._caller_minutes(timestamptz, timestamptz);
DROP FUNCTION @extschema@._live_minutes(timestamptz, timestamptz, boolean);
CREATE FUNCTION @extschema@._live_minutes(from_bucket timestamptz, to_ts timestamptz,
	by_caller boolean,
	OUT bucket timestamptz, OUT method text, OUT path text,
	OUT client_ip inet, OUT user_id text,
	OUT calls bigint, OUT ok bigint, OUT client_errors bigint,
	OUT server_errors bigint, OUT latency_count bigint,
	OUT latency_sum_ms double precision, OUT latency_max_ms double precision,
	OUT folded_before boolean)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'apicount_live_minutes'
LANGUAGE C VOLATILE STRICT PARALLEL RESTRICTED;

-- caller-level minute rows, flushed + unflushed, with each API's
-- "(other callers)" row
CREATE FUNCTION @extschema@._caller_minutes(from_bucket timestamptz, to_ts timestamptz,
	OUT bucket timestamptz, OUT method text, OUT path text, OUT client_ip inet,
	OUT user_id text, OUT calls bigint, OUT ok bigint, OUT errors bigint,
	OUT folded_before boolean)
RETURNS SETOF record
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT c.bucket, c.method, c.path, c.client_ip, c.user_id, c.calls, c.ok,
	       c.client_errors + c.server_errors, c.folded_before
	FROM @extschema@.caller_minute c
	WHERE c.bucket >= from_bucket AND c.bucket < to_ts
	UNION ALL
	SELECT l.bucket, l.method, l.path, l.client_ip, l.user_id, l.calls,
	       l.ok, l.client_errors + l.server_errors, l.folded_before
	FROM @extschema@._live_minutes(from_bucket, to_ts, true) l
	WHERE l.calls > 0
$$;

-- the "(other callers)" row is no caller: top_callers and the detection
-- functions leave it out (callers() shows it)
CREATE FUNCTION @extschema@._is_other_callers(client_ip inet, user_id text)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT client_ip IS NULL AND user_id IS NOT DISTINCT FROM '(other callers)' $$;

-- the network of an address: /apicount.net_prefix_v4 or /apicount.net_prefix_v6
CREATE FUNCTION @extschema@._net(ip inet)
RETURNS inet
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT network(set_masklen(ip, CASE WHEN family(ip) = 4
		THEN current_setting('apicount.net_prefix_v4')::integer
		ELSE current_setting('apicount.net_prefix_v6')::integer END))
$$;

---------------------------------------------------------------------------
-- Heavy callers among the folded ones (src/heavy.h): per minute and
-- grouped_by, Space-Saving summaries of the calls folded into "(other
-- callers)".  A row's true count lies in [calls - calls_error, calls]; a
-- caller of an API absent from a minute's rows folded at most that
-- minute's absent_bound calls (heavy_minute_bounds).  Written by the
-- worker once a minute is past the live horizon; _live_heavy reads the
-- minutes before that.
---------------------------------------------------------------------------
CREATE TABLE @extschema@.caller_heavy_minute (
	bucket          timestamptz NOT NULL,
	grouped_by        text NOT NULL CHECK (grouped_by IN ('ip_user', 'ip', 'user', 'net', 'api')),
	method          text NOT NULL,
	path            text NOT NULL,
	client_ip       inet,
	user_id         text,
	calls           bigint NOT NULL,
	calls_error     bigint NOT NULL,
	errors          bigint NOT NULL,
	CONSTRAINT caller_heavy_minute_key UNIQUE NULLS NOT DISTINCT
		(bucket, grouped_by, method, path, client_ip, user_id)
);
CREATE TABLE @extschema@.heavy_minute_bounds (
	bucket          timestamptz NOT NULL,
	grouped_by        text NOT NULL,
	folded_calls    bigint NOT NULL,
	absent_bound    bigint NOT NULL,
	PRIMARY KEY (bucket, grouped_by)
);
-- a query of one grouping over a range (top_apis reads 'api') skips the others
CREATE INDEX caller_heavy_minute_grouped_by_bucket
	ON @extschema@.caller_heavy_minute (grouped_by, bucket);
SELECT pg_catalog.pg_extension_config_dump('@extschema@.caller_heavy_minute', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.heavy_minute_bounds', '');

CREATE FUNCTION @extschema@._live_heavy(from_bucket timestamptz, to_ts timestamptz,
	grouped_by text,
	OUT bucket timestamptz, OUT method text, OUT path text, OUT client_ip inet,
	OUT user_id text, OUT calls bigint, OUT calls_error bigint, OUT errors bigint)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'apicount_live_heavy'
LANGUAGE C VOLATILE STRICT PARALLEL RESTRICTED;

---------------------------------------------------------------------------
-- Heavy APIs among the folded ones: when the API tier is full, an API is
-- counted under its method's "(other)" path, and in a Space-Saving summary
-- per minute that keeps its method and path (grouped_by 'api' in
-- caller_heavy_minute and heavy_minute_bounds, client_ip and user_id NULL).
-- top_apis names them, with calls - calls_error <= truth <= calls; the
-- "(other)" rows keep the exact totals, named APIs included.
---------------------------------------------------------------------------
CREATE FUNCTION @extschema@._live_heavy_apis(since interval,
	OUT method text, OUT path text, OUT calls bigint, OUT calls_error bigint,
	OUT errors bigint)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'apicount_live_heavy_apis'
LANGUAGE C VOLATILE PARALLEL RESTRICTED;

-- The folded APIs named by the summaries of the minutes in [from_bucket,
-- to_ts), flushed and live: per API, its counts plus, for each of those
-- minutes whose summary lacks it, that minute's absent_bound.  One more row,
-- with NULL method and path, carries the sum of the minutes' bounds: an API
-- no summary names may have folded up to that many calls in the range
-- (before it had an entry of its own), so its exact rows are below the
-- truth by at most that much.  A minute can have two summaries (live and
-- written, after a restart): their counts and bounds add up.
CREATE FUNCTION @extschema@._heavy_apis(from_bucket timestamptz, to_ts timestamptz,
	OUT method text, OUT path text, OUT calls bigint, OUT calls_error bigint,
	OUT errors bigint)
RETURNS SETOF record
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	WITH live AS MATERIALIZED (
		SELECT * FROM @extschema@._live_heavy(from_bucket, to_ts, 'api')
	), heavy AS MATERIALIZED (
		SELECT x.bucket, x.method, x.path, sum(x.calls) AS calls,
		       sum(x.calls_error) AS calls_error, sum(x.errors) AS errors
		FROM (SELECT h.bucket, h.method, h.path, h.calls, h.calls_error, h.errors
		      FROM @extschema@.caller_heavy_minute h
		      WHERE h.grouped_by = 'api' AND h.bucket >= from_bucket AND h.bucket < to_ts
		      UNION ALL
		      SELECT l.bucket, l.method, l.path, l.calls, l.calls_error, l.errors
		      FROM live l WHERE l.method IS NOT NULL) x
		GROUP BY 1, 2, 3
	), bounds AS MATERIALIZED (
		SELECT x.bucket, sum(x.absent_bound) AS absent_bound
		FROM (SELECT b.bucket, b.absent_bound
		      FROM @extschema@.heavy_minute_bounds b
		      WHERE b.grouped_by = 'api' AND b.bucket >= from_bucket AND b.bucket < to_ts
		        AND b.absent_bound > 0
		      UNION ALL
		      SELECT l.bucket, l.calls_error FROM live l
		      WHERE l.method IS NULL AND l.calls_error > 0) x
		GROUP BY 1
	), named AS (
		-- an API's bound where it is absent: all the minutes' bounds but those
		-- of the minutes that name it
		SELECT h.method, h.path, sum(h.calls) AS calls,
		       sum(h.calls_error) AS calls_error, sum(h.errors) AS errors,
		       sum(coalesce(b.absent_bound, 0)) AS present_bound
		FROM heavy h LEFT JOIN bounds b ON b.bucket = h.bucket
		GROUP BY 1, 2
	), total AS (
		SELECT coalesce(sum(b.absent_bound), 0) AS bound FROM bounds b
	)
	SELECT n.method, n.path, (n.calls + t.bound - n.present_bound)::bigint,
	       (n.calls_error + t.bound - n.present_bound)::bigint, n.errors::bigint
	FROM named n CROSS JOIN total t
	UNION ALL
	SELECT NULL, NULL, t.bound::bigint, t.bound::bigint, 0 FROM total t
$$;

-- top_apis: the heavy APIs among the folded ones too, and calls_error
-- (0 when exact)
DROP FUNCTION @extschema@.top_apis(integer, interval);
DROP FUNCTION @extschema@.top_apis(integer, timestamptz, timestamptz);
CREATE FUNCTION @extschema@.top_apis(n integer, from_ts timestamptz, to_ts timestamptz)
RETURNS TABLE (method text, path text, calls bigint, errors bigint,
               error_ratio double precision, avg_latency_ms double precision,
               calls_error bigint)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM @extschema@._check_n(n);
	PERFORM @extschema@._read_begin();
	RETURN QUERY
	WITH exact AS (
		SELECT m.method, m.path, sum(m.calls) AS calls, sum(m.errors) AS errors,
		       sum(m.latency_sum_ms) AS ls, sum(m.latency_count) AS lc
		FROM @extschema@._api_rows(date_trunc('minute', from_ts), to_ts) m
		GROUP BY m.method, m.path
	), ha AS MATERIALIZED (
		SELECT * FROM @extschema@._heavy_apis(date_trunc('minute', from_ts), to_ts)
	), r0 AS (
		SELECT coalesce(e.method, h.method) AS method, coalesce(e.path, h.path) AS path,
		       coalesce(e.calls, 0) + coalesce(h.calls, 0) AS calls,
		       coalesce(e.errors, 0) + coalesce(h.errors, 0) AS errors,
		       e.ls, e.lc, coalesce(h.calls_error, 0) AS calls_error,
		       h.method IS NOT NULL AS named
		FROM exact e
		FULL JOIN (SELECT * FROM ha WHERE ha.method IS NOT NULL) h
		     ON h.method = e.method AND h.path = e.path
	), r AS (
		-- an exact row the summaries do not name may lack calls folded
		-- before it had an entry: at most the range's bound
		SELECT r0.method, r0.path,
		       r0.calls + CASE WHEN r0.named OR r0.path = '(other)' OR r0.method = '*'
		                       THEN 0 ELSE tb.bound END AS calls,
		       r0.errors, r0.ls, r0.lc,
		       r0.calls_error + CASE WHEN r0.named OR r0.path = '(other)' OR r0.method = '*'
		                             THEN 0 ELSE tb.bound END AS calls_error
		FROM r0 CROSS JOIN (SELECT coalesce(max(ha.calls), 0) AS bound
		                    FROM ha WHERE ha.method IS NULL) tb
	)
	SELECT r.method, r.path, r.calls::bigint, r.errors::bigint,
	       CASE WHEN r.calls > 0 THEN (r.errors / r.calls)::float8 END,
	       CASE WHEN r.lc > 0 THEN r.ls / r.lc END,
	       r.calls_error::bigint
	FROM r
	WHERE r.calls > 0
	ORDER BY 3 DESC, 1, 2
	LIMIT n;
	PERFORM @extschema@._read_end();
END
$$;

CREATE FUNCTION @extschema@.top_apis(n integer DEFAULT 10, since interval DEFAULT '1 minute')
RETURNS TABLE (method text, path text, calls bigint, errors bigint,
               error_ratio double precision, avg_latency_ms double precision,
               calls_error bigint)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM @extschema@._check_n(n);
	PERFORM @extschema@._check_since(since);
	IF since > interval '2 minutes' THEN
		RETURN QUERY SELECT * FROM @extschema@.top_apis(n, now() - since, now() + interval '1 microsecond');
		RETURN;
	END IF;
	PERFORM @extschema@._read_begin();
	RETURN QUERY
	WITH w AS (
		SELECT lw.method, lw.path, lw.calls, lw.errors,
		       lw.unflushed_latency_count AS lc, lw.unflushed_latency_sum_ms AS ls
		FROM @extschema@._live_groups(since, true, false, false, NULL, 1, false, false, false) lw
	), lat AS (
		-- flushed latency of the minutes the window overlaps
		SELECT a.method, a.path, sum(a.latency_sum_ms) AS s, sum(a.latency_count) AS c
		FROM @extschema@.api_minute a
		WHERE a.bucket >= date_trunc('minute', @extschema@._window_start(since))
		  AND a.bucket <= now()
		GROUP BY a.method, a.path
	), ha AS MATERIALIZED (
		SELECT * FROM @extschema@._live_heavy_apis(since)
	), r0 AS (
		SELECT coalesce(w.method, h.method) AS method, coalesce(w.path, h.path) AS path,
		       coalesce(w.calls, 0) + coalesce(h.calls, 0) AS calls,
		       coalesce(w.errors, 0) + coalesce(h.errors, 0) AS errors,
		       w.lc, w.ls, coalesce(h.calls_error, 0) AS calls_error,
		       h.method IS NOT NULL AS named
		FROM w FULL JOIN (SELECT * FROM ha WHERE ha.method IS NOT NULL) h
		     ON h.method = w.method AND h.path = w.path
	), r AS (
		-- as in the range form: unnamed exact rows get the window's bound
		SELECT r0.method, r0.path,
		       r0.calls + CASE WHEN r0.named OR r0.path = '(other)' OR r0.method = '*'
		                       THEN 0 ELSE tb.bound END AS calls,
		       r0.errors, r0.lc, r0.ls,
		       r0.calls_error + CASE WHEN r0.named OR r0.path = '(other)' OR r0.method = '*'
		                             THEN 0 ELSE tb.bound END AS calls_error
		FROM r0 CROSS JOIN (SELECT coalesce(max(ha.calls), 0) AS bound
		                    FROM ha WHERE ha.method IS NULL) tb
	)
	SELECT r.method, r.path, r.calls::bigint, r.errors::bigint,
	       (r.errors::float8 / r.calls::float8),
	       CASE WHEN coalesce(r.lc, 0) + coalesce(lat.c, 0) > 0
	            THEN (coalesce(r.ls, 0) + coalesce(lat.s, 0)) / (coalesce(r.lc, 0) + coalesce(lat.c, 0)) END,
	       r.calls_error::bigint
	FROM r LEFT JOIN lat ON lat.method = r.method AND lat.path = r.path
	WHERE r.calls > 0
	ORDER BY 3 DESC, 1, 2
	LIMIT n;
	PERFORM @extschema@._read_end();
END
$$;

-- the sliding windows count folded heavy callers too, and by network
DROP FUNCTION @extschema@._live_groups(interval, boolean, boolean, boolean, text, bigint, boolean, boolean, boolean);
CREATE FUNCTION @extschema@._live_groups(since interval, by_api boolean,
	by_ip boolean, by_user boolean, path text, min_calls bigint,
	tracked_only boolean, named_callers boolean, with_ok boolean,
	by_net boolean DEFAULT false,
	OUT method text, OUT path text, OUT client_ip inet, OUT user_id text,
	OUT calls bigint, OUT ok bigint, OUT errors bigint,
	OUT unflushed_latency_count bigint, OUT unflushed_latency_sum_ms double precision,
	OUT calls_error bigint)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'apicount_live_groups'
LANGUAGE C VOLATILE PARALLEL RESTRICTED;

CREATE OR REPLACE FUNCTION @extschema@._check_by(by text) RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF by IS NULL OR by NOT IN ('ip', 'user', 'ip_user', 'net') THEN
		RAISE EXCEPTION 'invalid value for by: %', coalesce(quote_literal(by), 'NULL')
			USING ERRCODE = 'invalid_parameter_value',
			      HINT = 'Use ''ip'', ''user'', ''ip_user'' or ''net''.';
	END IF;
END
$$;

-- Caller groups per minute and API over [from_bucket, to_ts), flushed and
-- live: the caller rows (without "(other callers)") grouped by 'ip',
-- 'user', 'ip_user' or 'net', plus the heavy callers among the folded
-- ones.  calls is an upper bound: calls - calls_error <= truth <= calls;
-- ok counts the hits of caller rows only (a lower bound).  A group absent
-- from a minute's summary gets that minute's bound, unless the minute had
-- no folded caller of its API, or (by 'ip_user') its caller row says it was
-- never folded before its entry was made (folded_before).
CREATE FUNCTION @extschema@._caller_groups(from_bucket timestamptz, to_ts timestamptz,
	by text,
	OUT bucket timestamptz, OUT method text, OUT path text, OUT client_ip inet,
	OUT user_id text, OUT calls bigint, OUT ok bigint, OUT errors bigint,
	OUT calls_error bigint)
RETURNS SETOF record
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	WITH cm AS MATERIALIZED (
		SELECT c.*, @extschema@._is_other_callers(c.client_ip, c.user_id) AS other
		FROM @extschema@._caller_minutes(from_bucket, to_ts) c
	), full_rows AS (
		SELECT c.bucket, c.method, c.path,
		       CASE WHEN by IN ('ip', 'ip_user') THEN c.client_ip
		            WHEN by = 'net' THEN @extschema@._net(c.client_ip) END AS ip,
		       CASE WHEN by IN ('user', 'ip_user') THEN c.user_id END AS uid,
		       sum(c.calls) AS calls, sum(c.ok) AS ok, sum(c.errors) AS errors,
		       bool_or(c.folded_before) OR by <> 'ip_user' AS may_have_folded
		FROM cm c
		WHERE NOT c.other
		GROUP BY 1, 2, 3, 4, 5
	), folded_apis AS (
		-- the minutes and APIs with an "(other callers)" row: only their
		-- callers can have folded calls that a summary no longer holds
		SELECT DISTINCT c.bucket, c.method, c.path FROM cm c WHERE c.other
	), live AS (
		SELECT * FROM @extschema@._live_heavy(from_bucket, to_ts, by)
	), heavy AS (
		SELECT h.bucket, h.method, h.path, h.client_ip, h.user_id, h.calls,
		       h.calls_error, h.errors
		FROM @extschema@.caller_heavy_minute h
		WHERE h.grouped_by = by AND h.bucket >= from_bucket AND h.bucket < to_ts
		UNION ALL
		SELECT l.bucket, l.method, l.path, l.client_ip, l.user_id, l.calls,
		       l.calls_error, l.errors
		FROM live l WHERE l.method IS NOT NULL
	), bounds AS (
		SELECT b.bucket, b.absent_bound
		FROM @extschema@.heavy_minute_bounds b
		WHERE b.grouped_by = by AND b.bucket >= from_bucket AND b.bucket < to_ts
		UNION ALL
		SELECT l.bucket, l.calls_error FROM live l WHERE l.method IS NULL
	)
	SELECT coalesce(f.bucket, h.bucket), coalesce(f.method, h.method),
	       coalesce(f.path, h.path), coalesce(f.ip, h.client_ip),
	       coalesce(f.uid, h.user_id),
	       (coalesce(f.calls, 0) + coalesce(h.calls, 0) +
	        CASE WHEN h.bucket IS NULL AND fa.bucket IS NOT NULL AND f.may_have_folded
	             THEN coalesce(bd.absent_bound, 0) ELSE 0 END)::bigint,
	       coalesce(f.ok, 0)::bigint,
	       (coalesce(f.errors, 0) + coalesce(h.errors, 0))::bigint,
	       (coalesce(h.calls_error, 0) +
	        CASE WHEN h.bucket IS NULL AND fa.bucket IS NOT NULL AND f.may_have_folded
	             THEN coalesce(bd.absent_bound, 0) ELSE 0 END)::bigint
	FROM full_rows f
	FULL JOIN heavy h ON h.bucket = f.bucket AND h.method = f.method
	     AND h.path = f.path AND h.client_ip IS NOT DISTINCT FROM f.ip
	     AND h.user_id IS NOT DISTINCT FROM f.uid
	LEFT JOIN folded_apis fa
	     ON fa.bucket = f.bucket AND fa.method = f.method AND fa.path = f.path
	LEFT JOIN (SELECT bucket, sum(absent_bound) AS absent_bound FROM bounds GROUP BY 1) bd
	     ON bd.bucket = f.bucket
$$;

-- top_callers: by => 'net' too, and calls_error (0 when exact)
DROP FUNCTION @extschema@.top_callers(integer, interval, text, text);
CREATE FUNCTION @extschema@.top_callers(n integer DEFAULT 10, since interval DEFAULT '1 minute',
	path text DEFAULT NULL, by text DEFAULT 'ip')
RETURNS TABLE (client_ip inet, user_id text, calls bigint, errors bigint, calls_error bigint)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	want_ip boolean := by IN ('ip', 'ip_user');
	want_user boolean := by IN ('user', 'ip_user');
	p text := path;
BEGIN
	PERFORM @extschema@._check_n(n);
	PERFORM @extschema@._check_since(since);
	PERFORM @extschema@._check_by(by);
	PERFORM @extschema@._read_begin();
	IF since <= interval '2 minutes' THEN
		RETURN QUERY
		SELECT lw.client_ip, lw.user_id, lw.calls, lw.errors, lw.calls_error
		FROM @extschema@._live_groups(since, false, want_ip, want_user, p, 1, true,
		                              false, false, by = 'net') lw
		ORDER BY 3 DESC, 1 NULLS LAST, 2 NULLS LAST
		LIMIT n;
	ELSE
		RETURN QUERY
		SELECT c.client_ip, c.user_id, sum(c.calls)::bigint, sum(c.errors)::bigint,
		       sum(c.calls_error)::bigint
		FROM @extschema@._caller_groups(date_trunc('minute', now() - since),
		                                now() + interval '1 microsecond', by) c
		WHERE p IS NULL OR c.path = p
		GROUP BY 1, 2
		HAVING sum(c.calls) > 0
		ORDER BY 3 DESC, 1 NULLS LAST, 2 NULLS LAST
		LIMIT n;
	END IF;
	PERFORM @extschema@._read_end();
END
$$;

DROP FUNCTION @extschema@.hot_callers(bigint, interval, text, text);
DROP FUNCTION @extschema@._hot_callers(bigint, interval, text, text);
DROP FUNCTION @extschema@._window_by(interval, text, bigint);

-- per API and caller ('ip', 'user', 'ip_user', 'net') or per API ('api')
-- over a window, calls >= min_calls; a caller whose grouped_by field is NULL
-- is no caller and is left out, and so are catch-all and "(other
-- callers)" hits.  calls is never below the truth (see _live_groups).
CREATE FUNCTION @extschema@._window_by(since interval, by text, min_calls bigint,
	OUT method text, OUT path text, OUT client_ip inet, OUT user_id text,
	OUT calls bigint, OUT ok bigint, OUT errors bigint, OUT calls_error bigint)
RETURNS SETOF record
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	want_ip boolean := by IN ('ip', 'ip_user', 'net');
	want_user boolean := by IN ('user', 'ip_user');
BEGIN
	IF by = 'api' THEN
		-- exact API rows, plus the APIs a path flood folded into "(other)"
		-- that the summaries name (upper bounds: a rule never misses them)
		-- (an exact row no summary names gets the range's bound, as in top_apis)
		RETURN QUERY
		WITH ha AS MATERIALIZED (
			SELECT x.method, x.path, x.calls, x.calls_error, x.errors
			FROM @extschema@._live_heavy_apis(least(since, interval '2 minutes')) x
			WHERE since <= interval '2 minutes'
			UNION ALL
			SELECT x.method, x.path, x.calls, x.calls_error, x.errors
			FROM @extschema@._heavy_apis(date_trunc('minute', now() - since),
			                             now() + interval '1 microsecond') x
			WHERE since > interval '2 minutes'
		), tb AS (
			SELECT coalesce(max(ha.calls), 0) AS bound FROM ha WHERE ha.method IS NULL
		), r AS (
			SELECT coalesce(a.method, h.method) AS method, coalesce(a.path, h.path) AS path,
			       coalesce(a.calls, 0) + coalesce(h.calls, 0) +
			       CASE WHEN h.method IS NULL AND a.path <> '(other)' THEN tb.bound ELSE 0 END
			           AS calls,
			       coalesce(a.ok, 0) AS ok,
			       coalesce(a.errors, 0) + coalesce(h.errors, 0) AS errors,
			       coalesce(h.calls_error, 0) +
			       CASE WHEN h.method IS NULL AND a.path <> '(other)' THEN tb.bound ELSE 0 END
			           AS calls_error
			FROM @extschema@._api_window(since) a
			FULL JOIN (SELECT * FROM ha WHERE ha.method IS NOT NULL) h
			     ON h.method = a.method AND h.path = a.path
			CROSS JOIN tb
		)
		SELECT r.method, r.path, NULL::inet, NULL::text, r.calls::bigint, r.ok::bigint,
		       r.errors::bigint, r.calls_error::bigint
		FROM r
		WHERE r.method <> '*' AND r.calls >= min_calls;
	ELSIF since <= interval '2 minutes' THEN
		RETURN QUERY
		SELECT lw.method, lw.path, lw.client_ip, lw.user_id, lw.calls, lw.ok, lw.errors,
		       lw.calls_error
		FROM @extschema@._live_groups(since, true, want_ip AND by <> 'net', want_user, NULL,
		                              min_calls, true, true, true, by = 'net') lw;
	ELSE
		RETURN QUERY
		SELECT g.method, g.path, g.client_ip, g.user_id, sum(g.calls)::bigint,
		       sum(g.ok)::bigint, sum(g.errors)::bigint, sum(g.calls_error)::bigint
		FROM @extschema@._caller_groups(date_trunc('minute', now() - since),
		                                now() + interval '1 microsecond', by) g
		WHERE g.method <> '*'
		  AND (NOT want_ip OR g.client_ip IS NOT NULL)
		  AND (NOT want_user OR g.user_id IS NOT NULL)
		GROUP BY 1, 2, 3, 4
		HAVING sum(g.calls) >= min_calls;
	END IF;
END
$$;

CREATE FUNCTION @extschema@._hot_callers(threshold bigint, since interval, p text, by text)
RETURNS TABLE (m text, pth text, ip inet, uid text, calls bigint, errors bigint,
               calls_error bigint)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM @extschema@._check_since(since);
	PERFORM @extschema@._check_by(by);
	IF threshold IS NULL OR threshold < 1 THEN
		RAISE EXCEPTION 'threshold must be at least 1'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	PERFORM @extschema@._read_begin();
	RETURN QUERY
	SELECT w.method, w.path, w.client_ip, w.user_id, w.calls, w.errors, w.calls_error
	FROM @extschema@._window_by(since, by, threshold) w
	WHERE p IS NULL OR w.path = p
	ORDER BY 5 DESC, 1, 2, 3 NULLS LAST, 4 NULLS LAST;
	PERFORM @extschema@._read_end();
END
$$;

-- calls is never below the truth and above it by at most calls_error
-- (0 when every hit of the caller had its own counter)
CREATE FUNCTION @extschema@.hot_callers(threshold bigint DEFAULT 1000,
	since interval DEFAULT '1 minute', path text DEFAULT NULL, by text DEFAULT 'ip')
RETURNS TABLE (method text, path text, client_ip inet, user_id text,
               calls bigint, errors bigint, calls_error bigint)
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM @extschema@._hot_callers($1, $2, $3, $4) $$;

-- callers(): the heavy callers among the folded ones too, with calls_error,
-- and the API's "(other callers)" row
DROP FUNCTION @extschema@.callers(text, timestamptz, timestamptz);
CREATE FUNCTION @extschema@.callers(path text, from_ts timestamptz, to_ts timestamptz)
RETURNS TABLE (client_ip inet, user_id text, first_seen timestamptz,
               last_seen timestamptz, calls bigint, errors bigint, calls_error bigint)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	p text := path;
BEGIN
	IF p IS NULL THEN
		RAISE EXCEPTION 'path must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	PERFORM @extschema@._read_begin();
	RETURN QUERY
	SELECT u.client_ip, u.user_id, min(u.bucket), max(u.bucket),
	       sum(u.calls)::bigint, sum(u.errors)::bigint, sum(u.calls_error)::bigint
	FROM (
		SELECT g.bucket, g.client_ip, g.user_id, g.calls, g.errors, g.calls_error
		FROM @extschema@._caller_groups(date_trunc('minute', from_ts), to_ts, 'ip_user') g
		WHERE g.path = p AND g.calls > 0
		UNION ALL
		SELECT c.bucket, c.client_ip, c.user_id, c.calls, c.errors, 0
		FROM @extschema@._caller_minutes(date_trunc('minute', from_ts), to_ts) c
		WHERE c.path = p AND c.calls > 0
		  AND @extschema@._is_other_callers(c.client_ip, c.user_id)
	) u
	GROUP BY u.client_ip, u.user_id
	ORDER BY 5 DESC, 1 NULLS LAST, 2 NULLS LAST;
	PERFORM @extschema@._read_end();
END
$$;

-- rules per network, alerts with the bound of their count
ALTER TABLE @extschema@.rules DROP CONSTRAINT rules_per_check;
ALTER TABLE @extschema@.rules ADD CONSTRAINT rules_per_check
	CHECK (per IN ('ip', 'user', 'ip_user', 'net', 'api'));
ALTER TABLE @extschema@.alerts ADD COLUMN calls_error bigint NOT NULL DEFAULT 0;

CREATE OR REPLACE FUNCTION @extschema@.evaluate_rules()
RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	r record;
	fired integer := 0;
	a @extschema@.alerts;
	wstart timestamptz;
BEGIN
	-- one evaluation at a time (the worker's and a caller's): the second
	-- waits, then sees the first's alerts and respects their cooldown
	PERFORM pg_advisory_xact_lock(1634756963, 1);	-- ('apic', 1): evaluate_rules
	PERFORM @extschema@._read_begin();
	FOR r IN SELECT * FROM @extschema@.rules WHERE enabled ORDER BY name LOOP
		IF r."window" <= interval '2 minutes' THEN
			wstart := @extschema@._window_start(r."window");
		ELSE
			wstart := date_trunc('minute', now() - r."window");
		END IF;
		FOR a IN
			INSERT INTO @extschema@.alerts (fired_at, rule, method, path, client_ip,
			                                user_id, calls, errors, window_start, window_end,
			                                calls_error)
			SELECT now(), r.name, w.method, w.path, w.client_ip, w.user_id,
			       w.calls, w.errors, wstart, now(), w.calls_error
			FROM @extschema@._window_by(r."window", r.per, r.threshold) w
			WHERE w.path LIKE r.path_pattern
			  AND (r.method IS NULL OR w.method = upper(r.method))
			  AND w.calls >= r.threshold
			  AND (r.min_error_ratio IS NULL
			       OR w.errors::float8 / w.calls::float8 >= r.min_error_ratio)
			  AND NOT EXISTS (
				SELECT 1 FROM @extschema@.alerts p
				WHERE p.rule = r.name
				  AND p.fired_at > now() - r.cooldown
				  AND p.method IS NOT DISTINCT FROM w.method
				  AND p.path IS NOT DISTINCT FROM w.path
				  AND p.client_ip IS NOT DISTINCT FROM w.client_ip
				  AND p.user_id IS NOT DISTINCT FROM w.user_id)
			ORDER BY w.calls DESC
			RETURNING *
		LOOP
			PERFORM pg_notify('apicount_alert', row_to_json(a)::text);
			fired := fired + 1;
		END LOOP;
	END LOOP;
	PERFORM @extschema@._read_end();
	RETURN fired;
END
$$;

---------------------------------------------------------------------------
-- Audited APIs: every caller of a path matching one of these LIKE patterns
-- is kept by name (live, caller_minute, callers()), in entries of its own
-- (apicount.max_audited_entries) when the caller tier is full.  If even
-- those run out, the worker fires an alert of rule 'audited_apis_full'.
---------------------------------------------------------------------------
CREATE TABLE @extschema@.audited_apis (
	pattern     text PRIMARY KEY,
	comment     text
);
SELECT pg_catalog.pg_extension_config_dump('@extschema@.audited_apis', '');

CREATE FUNCTION @extschema@._audited_changed() RETURNS trigger
AS 'MODULE_PATHNAME', 'apicount_audited_changed' LANGUAGE C;
CREATE TRIGGER audited_apis_changed
	AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON @extschema@.audited_apis
	FOR EACH STATEMENT EXECUTE FUNCTION @extschema@._audited_changed();

-- privileges of the objects made here, as in apicount--0.1.sql: nothing for
-- PUBLIC, reading for apicount_reader (ingest reads audited_apis in C, so
-- writers need no privilege on it)
REVOKE ALL ON @extschema@.live, @extschema@.stats, @extschema@.caller_heavy_minute,
	@extschema@.heavy_minute_bounds, @extschema@.audited_apis FROM PUBLIC;
GRANT SELECT ON @extschema@.live, @extschema@.stats, @extschema@.caller_heavy_minute,
	@extschema@.heavy_minute_bounds, @extschema@.audited_apis TO apicount_reader;
REVOKE ALL ON FUNCTION @extschema@._audited_changed() FROM PUBLIC;
DO $grants$
DECLARE
	f text;
BEGIN
	FOREACH f IN ARRAY ARRAY[
		'@extschema@._live_minutes(timestamptz, timestamptz, boolean)',
		'@extschema@._caller_minutes(timestamptz, timestamptz)',
		'@extschema@._live_entries()', '@extschema@._stats()',
		'@extschema@._is_other_callers(inet, text)', '@extschema@._net(inet)',
		'@extschema@._live_heavy(timestamptz, timestamptz, text)',
		'@extschema@._live_heavy_apis(interval)',
		'@extschema@._heavy_apis(timestamptz, timestamptz)',
		'@extschema@.top_apis(integer, interval)',
		'@extschema@.top_apis(integer, timestamptz, timestamptz)',
		'@extschema@._live_groups(interval, boolean, boolean, boolean, text, bigint, boolean, boolean, boolean, boolean)',
		'@extschema@._caller_groups(timestamptz, timestamptz, text)',
		'@extschema@.top_callers(integer, interval, text, text)',
		'@extschema@._window_by(interval, text, bigint)',
		'@extschema@._hot_callers(bigint, interval, text, text)',
		'@extschema@.hot_callers(bigint, interval, text, text)',
		'@extschema@.callers(text, timestamptz, timestamptz)']
	LOOP
		EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
		EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO apicount_reader', f);
	END LOOP;
END
$grants$;
