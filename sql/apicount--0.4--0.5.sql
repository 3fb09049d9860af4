/* apicount 0.4 -> 0.5: one source for each fact of the sliding windows (issue 17) */
\echo Use "CREATE EXTENSION apicount" or "ALTER EXTENSION apicount UPDATE" to load this file. \quit

---------------------------------------------------------------------------
-- The live horizon and the start of a window come from C
-- (src/query/window.c), which the live scans use too: SQL no longer writes
-- interval '2 minutes' or a slot arithmetic of its own.
---------------------------------------------------------------------------
-- the longest sliding window the live counters answer exactly
-- (LIVE_HORIZON_SECS); a longer one is read from the minute rollups
CREATE FUNCTION @extschema@._live_horizon() RETURNS interval
AS 'MODULE_PATHNAME', 'apicount_live_horizon'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

-- first instant of the oldest slot of a sliding window ending at now(): the
-- slots _live_groups reads
CREATE OR REPLACE FUNCTION @extschema@._window_start(since interval) RETURNS timestamptz
AS 'MODULE_PATHNAME', 'apicount_window_start'
LANGUAGE C STABLE STRICT PARALLEL SAFE;

-- the first instant a window ending at now() counts: its oldest slot up to
-- the live horizon, the start of the minute of now() - since beyond it
CREATE FUNCTION @extschema@._window_from(since interval) RETURNS timestamptz
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT CASE WHEN since <= @extschema@._live_horizon() THEN @extschema@._window_start(since)
	            ELSE date_trunc('minute', now() - since) END
$$;

-- the same C function, with defaults: callers name only what they turn on,
-- e.g. _live_groups(since, by_api => true, with_ok => true)
CREATE OR REPLACE FUNCTION @extschema@._live_groups(since interval, by_api boolean DEFAULT false,
	by_ip boolean DEFAULT false, by_user boolean DEFAULT false, path text DEFAULT NULL,
	min_calls bigint DEFAULT 1, tracked_only boolean DEFAULT false,
	named_callers boolean DEFAULT false, with_ok boolean DEFAULT false,
	by_net boolean DEFAULT false,
	OUT method text, OUT path text, OUT client_ip inet, OUT user_id text,
	OUT calls bigint, OUT ok bigint, OUT errors bigint,
	OUT unflushed_latency_count bigint, OUT unflushed_latency_sum_ms double precision,
	OUT calls_error bigint)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'apicount_live_groups'
LANGUAGE C VOLATILE PARALLEL RESTRICTED;

---------------------------------------------------------------------------
-- The window branch, in one function.  Up to the live horizon a window is
-- read from the live counters (exact to the slot); beyond it, from the
-- rollups, in whole minutes from _window_from(since).
--  - by 'api': per API, every hit ('*' and "(other)" rows included);
--  - by 'ip', 'user', 'ip_user' or 'net' with per_api (detection:
--    _window_by): per API and caller group, callers only (tracked hits, no
--    catch-all, no caller whose grouped field is NULL), groups with calls
--    >= min_calls;
--  - the same without per_api (top_callers): per caller group over all
--    APIs, or over only_path, every caller; ok is not read.
-- calls_error as in _live_groups and _caller_groups (0 for rolled-up APIs).
---------------------------------------------------------------------------
CREATE FUNCTION @extschema@._window_groups(since interval, by text,
	per_api boolean DEFAULT true, only_path text DEFAULT NULL, min_calls bigint DEFAULT 1,
	OUT method text, OUT path text, OUT client_ip inet, OUT user_id text,
	OUT calls bigint, OUT ok bigint, OUT errors bigint, OUT calls_error bigint)
RETURNS SETOF record
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	want_ip boolean := by IN ('ip', 'ip_user', 'net');
	want_user boolean := by IN ('user', 'ip_user');
	live boolean := since <= @extschema@._live_horizon();
BEGIN
	IF by = 'api' AND live THEN
		RETURN QUERY
		SELECT lw.method, lw.path, NULL::inet, NULL::text, lw.calls, lw.ok, lw.errors,
		       lw.calls_error
		FROM @extschema@._live_groups(since, by_api => true, with_ok => true) lw;
	ELSIF by = 'api' THEN
		RETURN QUERY
		SELECT am.method, am.path, NULL::inet, NULL::text, sum(am.calls)::bigint,
		       sum(am.ok)::bigint, sum(am.errors)::bigint, 0::bigint
		FROM @extschema@._api_rows(@extschema@._window_from(since),
		                           now() + interval '1 microsecond') am
		GROUP BY 1, 2;
	ELSIF live THEN
		RETURN QUERY
		SELECT lw.method, lw.path, lw.client_ip, lw.user_id, lw.calls, lw.ok, lw.errors,
		       lw.calls_error
		FROM @extschema@._live_groups(since, by_api => per_api,
		                              by_ip => by IN ('ip', 'ip_user'), by_user => want_user,
		                              by_net => by = 'net', path => only_path,
		                              min_calls => min_calls, tracked_only => true,
		                              named_callers => per_api, with_ok => per_api) lw;
	ELSE
		RETURN QUERY
		SELECT CASE WHEN per_api THEN g.method END, CASE WHEN per_api THEN g.path END,
		       g.client_ip, g.user_id, sum(g.calls)::bigint, sum(g.ok)::bigint,
		       sum(g.errors)::bigint, sum(g.calls_error)::bigint
		FROM @extschema@._caller_groups(@extschema@._window_from(since),
		                                now() + interval '1 microsecond', by) g
		WHERE (only_path IS NULL OR g.path = only_path)
		  AND (NOT per_api
		       OR (g.method <> '*'
		           AND (NOT want_ip OR g.client_ip IS NOT NULL)
		           AND (NOT want_user OR g.user_id IS NOT NULL)))
		GROUP BY 1, 2, 3, 4
		HAVING sum(g.calls) >= min_calls;
	END IF;
END
$$;

---------------------------------------------------------------------------
-- The APIs the summaries of folded APIs name, added to the exact ones: the
-- text of a WITH list (_top_apis runs it with EXECUTE; top_apis(since) and
-- _window_by have it pasted in when they are made, below, so that their
-- plans stay cached), over the query texts exact (columns
-- method, path, calls, errors, ok, ls, lc: latency sum and count) and
-- heavy (rows of _heavy_apis or _live_heavy_apis), ending in r (method,
-- path, calls, errors, ok, ls, lc, calls_error).  Append more CTEs after a
-- comma, then the SELECT.  An exact row the summaries do not name may lack
-- calls folded before it had an entry: at most the bound of the range
-- (heavy's row with NULL method); the "(other)" and catch-all ('*') rows are
-- totals and get none.
---------------------------------------------------------------------------
CREATE FUNCTION @extschema@._with_heavy_apis(exact text, heavy text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT format($q$
	WITH exact AS (%s), ha AS MATERIALIZED (%s), r0 AS (
		SELECT coalesce(e.method, h.method) AS method, coalesce(e.path, h.path) AS path,
		       coalesce(e.calls, 0) + coalesce(h.calls, 0) AS calls,
		       coalesce(e.errors, 0) + coalesce(h.errors, 0) AS errors,
		       coalesce(e.ok, 0) AS ok, e.ls, e.lc, coalesce(h.calls_error, 0) AS calls_error,
		       h.method IS NOT NULL AS named
		FROM exact e
		FULL JOIN (SELECT * FROM ha WHERE ha.method IS NOT NULL) h
		     ON h.method = e.method AND h.path = e.path
	), r AS (
		SELECT r0.method, r0.path,
		       r0.calls + CASE WHEN r0.named OR r0.path = '(other)' OR r0.method = '*'
		                       THEN 0 ELSE tb.bound END AS calls,
		       r0.errors, r0.ok, r0.ls, r0.lc,
		       r0.calls_error + CASE WHEN r0.named OR r0.path = '(other)' OR r0.method = '*'
		                             THEN 0 ELSE tb.bound END AS calls_error
		FROM r0 CROSS JOIN (SELECT coalesce(max(ha.calls), 0) AS bound
		                    FROM ha WHERE ha.method IS NULL) tb
	)$q$, exact, heavy)
$$;

-- top_apis over a window: the live counters up to the horizon, else the
-- range.  Its body is made here from _with_heavy_apis(), as static SQL
-- (its plan is cached, as before), with the same text _top_apis runs.
DO $make$
BEGIN
	EXECUTE pg_catalog.format($f$
CREATE OR REPLACE FUNCTION @extschema@.top_apis(n integer DEFAULT 10, since interval DEFAULT '1 minute')
RETURNS TABLE (method text, path text, calls bigint, errors bigint,
               error_ratio double precision, avg_latency_ms double precision,
               calls_error bigint)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $body$
BEGIN
	PERFORM @extschema@._check_n(n);
	PERFORM @extschema@._check_since(since);
	IF since > @extschema@._live_horizon() THEN
		RETURN QUERY SELECT * FROM @extschema@.top_apis(n, now() - since, now() + interval '1 microsecond');
		RETURN;
	END IF;
	PERFORM @extschema@._read_begin();
	RETURN QUERY %s
	, lat AS (
		-- flushed latency of the minutes the window overlaps
		SELECT a.method, a.path, sum(a.latency_sum_ms) AS s, sum(a.latency_count) AS c
		FROM @extschema@.api_minute a
		WHERE a.bucket >= date_trunc('minute', @extschema@._window_start(since))
		  AND a.bucket <= now()
		GROUP BY a.method, a.path
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
$body$$f$,
	@extschema@._with_heavy_apis(
		'SELECT lw.method, lw.path, lw.calls, lw.errors, NULL::bigint AS ok,'
		|| ' lw.unflushed_latency_sum_ms AS ls, lw.unflushed_latency_count AS lc'
		|| ' FROM @extschema@._live_groups(since, by_api => true) lw',
		'SELECT * FROM @extschema@._live_heavy_apis(since)'));
END
$make$;

-- top_apis over a range: whole days, hours and the partial hours' minutes,
-- filters inside the scans
CREATE OR REPLACE FUNCTION @extschema@._top_apis(n integer, from_ts timestamptz, to_ts timestamptz,
	paths text[], meth text)
RETURNS TABLE (m text, pth text, calls bigint, errors bigint,
               error_ratio double precision, avg_latency_ms double precision,
               calls_error bigint)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET jit = off
SET work_mem = '32MB'
AS $$
DECLARE
	f0 timestamptz := date_trunc('minute', from_ts);
	pl record;
BEGIN
	PERFORM @extschema@._check_n(n);
	IF from_ts IS NULL OR to_ts IS NULL THEN
		RAISE EXCEPTION 'from_ts and to_ts must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	pl := @extschema@._tier_plan(f0, to_ts, 2);
	PERFORM @extschema@._read_begin();
	RETURN QUERY EXECUTE @extschema@._with_heavy_apis(
		'SELECT u.method, u.path, sum(u.calls) AS calls,'
		|| ' sum(u.client_errors + u.server_errors) AS errors, NULL::bigint AS ok,'
		|| ' sum(u.latency_sum_ms) AS ls, sum(u.latency_count) AS lc'
		|| ' FROM (' || @extschema@._api_source(paths, meth, false,
		                    ARRAY['NULL::timestamptz', 'a.method', 'a.path'])
		|| ') u GROUP BY u.method, u.path',
		'SELECT * FROM @extschema@._heavy_apis($9, $10) x WHERE x.method IS NULL'
		|| ' OR (($7 IS NULL OR x.path = ANY ($7)) AND ($8 IS NULL OR x.method = $8))') || $q$
	SELECT r.method, r.path, r.calls::bigint, r.errors::bigint,
	       CASE WHEN r.calls > 0 THEN (r.errors / r.calls)::float8 END,
	       CASE WHEN r.lc > 0 THEN r.ls / r.lc END,
	       r.calls_error::bigint
	FROM r
	WHERE r.calls > 0
	ORDER BY 3 DESC, 1, 2
	LIMIT $11$q$
		USING pl.f, pl.ha, pl.d0, pl.d1, pl.hb, pl.t, paths, meth, f0, to_ts, n;
	PERFORM @extschema@._read_end();
END
$$;

CREATE OR REPLACE FUNCTION @extschema@.top_callers(n integer DEFAULT 10, since interval DEFAULT '1 minute',
	path text DEFAULT NULL, by text DEFAULT 'ip')
RETURNS TABLE (client_ip inet, user_id text, calls bigint, errors bigint, calls_error bigint)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	p text := path;
BEGIN
	PERFORM @extschema@._check_n(n);
	PERFORM @extschema@._check_since(since);
	PERFORM @extschema@._check_by(by);
	PERFORM @extschema@._read_begin();
	RETURN QUERY
	SELECT w.client_ip, w.user_id, w.calls, w.errors, w.calls_error
	FROM @extschema@._window_groups(since, by, per_api => false, only_path => p) w
	ORDER BY 3 DESC, 1 NULLS LAST, 2 NULLS LAST
	LIMIT n;
	PERFORM @extschema@._read_end();
END
$$;

-- per API and caller ('ip', 'user', 'ip_user', 'net') or per API ('api')
-- over a window, calls >= min_calls; a caller whose grouped_by field is NULL
-- is no caller and is left out, and so are catch-all and "(other
-- callers)" hits.  calls is never below the truth (see _live_groups).
-- (body made from _with_heavy_apis(), static, as top_apis')
DO $make$
BEGIN
	EXECUTE pg_catalog.format($f$
CREATE OR REPLACE FUNCTION @extschema@._window_by(since interval, by text, min_calls bigint,
	OUT method text, OUT path text, OUT client_ip inet, OUT user_id text,
	OUT calls bigint, OUT ok bigint, OUT errors bigint, OUT calls_error bigint)
RETURNS SETOF record
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $body$
BEGIN
	IF by = 'api' THEN
		-- exact API rows, plus the APIs a path flood folded into "(other)"
		-- that the summaries name (upper bounds: a rule never misses them)
		RETURN QUERY %s
		SELECT r.method, r.path, NULL::inet, NULL::text, r.calls::bigint, r.ok::bigint,
		       r.errors::bigint, r.calls_error::bigint
		FROM r
		WHERE r.method <> '*' AND r.calls >= min_calls;
	ELSE
		RETURN QUERY
		SELECT w.method, w.path, w.client_ip, w.user_id, w.calls, w.ok, w.errors,
		       w.calls_error
		FROM @extschema@._window_groups(since, by, min_calls => min_calls) w;
	END IF;
END
$body$$f$,
	@extschema@._with_heavy_apis(
		'SELECT a.method, a.path, a.calls, a.errors, a.ok, NULL::float8 AS ls,'
		|| ' NULL::bigint AS lc FROM @extschema@._window_groups(since, ''api'') a',
		-- the summaries of the window: live up to the horizon, else written
		'SELECT x.* FROM @extschema@._live_heavy_apis(least(since, @extschema@._live_horizon())) x'
		|| ' WHERE since <= @extschema@._live_horizon()'
		|| ' UNION ALL'
		|| ' SELECT x.* FROM @extschema@._heavy_apis(@extschema@._window_from(since),'
		|| ' now() + interval ''1 microsecond'') x'
		|| ' WHERE since > @extschema@._live_horizon()'));
END
$make$;

-- API rows of a window, all hits (login_anomalies reads it): now the window
-- branch's 'api' rows
CREATE OR REPLACE FUNCTION @extschema@._api_window(since interval,
	OUT method text, OUT path text, OUT calls bigint, OUT ok bigint, OUT errors bigint)
RETURNS SETOF record
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT w.method, w.path, w.calls, w.ok, w.errors
	FROM @extschema@._window_groups(since, 'api') w
$$;

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
		wstart := @extschema@._window_from(r."window");
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
-- Rebuilding a coarser tier from a finer one: one body for api_hour,
-- api_day and the sums over all APIs.  For each i, targets[i] (emptied) gets
-- sources[i] summed per date_trunc(units[i], bucket, 'UTC') (per bucket when
-- units[i] is NULL), and per API unless the target is an api_total_ table.
-- Sources and targets are locked first, in that order, as the flush writes
-- them.  Returns the rows written.
---------------------------------------------------------------------------
CREATE FUNCTION @extschema@._rebuild_tiers(sources text[], targets text[], units text[])
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	n bigint := 0;
	k bigint;
	keys text;
BEGIN
	EXECUTE 'LOCK TABLE ' || (SELECT string_agg(format('@extschema@.%I', t), ', ' ORDER BY o)
	                          FROM unnest(sources || targets) WITH ORDINALITY u(t, o))
	        || ' IN SHARE ROW EXCLUSIVE MODE';
	FOR i IN 1 .. cardinality(targets) LOOP
		keys := CASE WHEN targets[i] LIKE 'api\_total\_%' THEN '' ELSE ', method, path' END;
		EXECUTE format('DELETE FROM @extschema@.%I', targets[i]);
		EXECUTE format('INSERT INTO @extschema@.%I SELECT %s%s, sum(calls), sum(ok),'
		               || ' sum(client_errors), sum(server_errors), sum(latency_sum_ms),'
		               || ' max(latency_max_ms), sum(latency_count),'
		               || ' @extschema@.latency_merge(latency_hist)'
		               || ' FROM @extschema@.%I GROUP BY 1%s',
		               targets[i],
		               CASE WHEN units[i] IS NULL THEN 'bucket'
		                    ELSE format('date_trunc(%L, bucket, ''UTC'')', units[i]) END,
		               keys, sources[i], CASE WHEN keys = '' THEN '' ELSE ', 2, 3' END);
		GET DIAGNOSTICS k = ROW_COUNT;
		n := n + k;
	END LOOP;
	RETURN n;
END
$$;

CREATE OR REPLACE FUNCTION @extschema@.rebuild_api_hour()
RETURNS bigint
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT @extschema@._rebuild_tiers('{api_minute}', '{api_hour}', '{hour}') $$;

CREATE OR REPLACE FUNCTION @extschema@.rebuild_api_day()
RETURNS bigint
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT @extschema@._rebuild_tiers('{api_hour}', '{api_day}', '{day}') $$;

-- (run it after rebuild_api_hour() and rebuild_api_day())
CREATE OR REPLACE FUNCTION @extschema@.rebuild_api_totals()
RETURNS bigint
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT @extschema@._rebuild_tiers('{api_minute,api_hour,api_day}',
	                                  '{api_total_minute,api_total_hour,api_total_day}',
	                                  '{NULL,NULL,NULL}')
$$;

---------------------------------------------------------------------------
-- privileges of the functions made here (replaced ones keep theirs)
---------------------------------------------------------------------------
DO $grants$
DECLARE
	f text;
BEGIN
	FOREACH f IN ARRAY ARRAY[
		'@extschema@._live_horizon()',
		'@extschema@._window_from(interval)',
		'@extschema@._window_groups(interval, text, boolean, text, bigint)',
		'@extschema@._with_heavy_apis(text, text)']
	LOOP
		EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
		EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO apicount_reader', f);
	END LOOP;
	REVOKE ALL ON FUNCTION @extschema@._rebuild_tiers(text[], text[], text[]) FROM PUBLIC;
END
$grants$;

COMMENT ON FUNCTION @extschema@._live_horizon() IS
'The longest sliding window the live counters answer exactly (LIVE_HORIZON_SECS in C)';
COMMENT ON FUNCTION @extschema@._window_start(interval) IS
'The first instant of the oldest slot of a sliding window ending at now(), as the live scans count it';
COMMENT ON FUNCTION @extschema@._window_from(interval) IS
'The first instant a window ending at now() counts: its oldest slot up to the live horizon, else its first minute';
COMMENT ON FUNCTION @extschema@._window_groups(interval, text, boolean, text, bigint) IS
'The rows of a sliding window per API or caller group: live counters up to the live horizon, rollups beyond it';
COMMENT ON FUNCTION @extschema@._with_heavy_apis(text, text) IS
'The query text that adds the folded APIs the summaries name to exact API rows, with the bound of the unnamed ones';
COMMENT ON FUNCTION @extschema@._rebuild_tiers(text[], text[], text[]) IS
'Recompute coarser rollup tables from finer ones (the body of the rebuild_ functions)';
