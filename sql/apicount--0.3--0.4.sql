/* apicount 0.3 -> 0.4: ranges at any length (issue 18) */
\echo Use "CREATE EXTENSION apicount" or "ALTER EXTENSION apicount UPDATE" to load this file. \quit

---------------------------------------------------------------------------
-- Tiers in time.  api_minute, api_hour and api_day hold the same columns
-- per UTC minute, hour and day; the worker writes all three in each flush
-- transaction (src/worker/flush.c), so they always agree, late hits included.
-- Each has its own retention (apicount.retention_minute, _hour, _day).
-- A range reads whole days from api_day, whole hours at its edges from
-- api_hour and only the partial hours at its ends from api_minute, as far
-- as its step allows (a step that is a whole number of days reads days, of
-- hours reads hours); path and method filters reach the scans of every
-- tier (index on (path, bucket)) and of the live counters.
---------------------------------------------------------------------------
-- a flush in progress commits first; later ones wait and then see api_day
LOCK TABLE @extschema@.api_minute, @extschema@.api_hour IN SHARE ROW EXCLUSIVE MODE;
CREATE TABLE @extschema@.api_day (LIKE @extschema@.api_minute INCLUDING DEFAULTS,
	PRIMARY KEY (bucket, method, path)) WITH (fillfactor = 50);
CREATE INDEX api_hour_path_bucket ON @extschema@.api_hour (path, bucket);
CREATE INDEX api_day_path_bucket ON @extschema@.api_day (path, bucket);
SELECT pg_catalog.pg_extension_config_dump('@extschema@.api_day', '');
-- all APIs per minute, hour and day, written by the same flushes: an
-- all-paths series or minutes(by_api => false) reads one row a bucket
-- instead of one per API (retention: their tier's)
CREATE TABLE @extschema@.api_total_minute (
	bucket          timestamptz PRIMARY KEY,
	calls           bigint NOT NULL DEFAULT 0,
	ok              bigint NOT NULL DEFAULT 0,
	client_errors   bigint NOT NULL DEFAULT 0,
	server_errors   bigint NOT NULL DEFAULT 0,
	latency_sum_ms  double precision NOT NULL DEFAULT 0,
	latency_max_ms  double precision,
	latency_count   bigint NOT NULL DEFAULT 0,
	latency_hist    bytea
) WITH (fillfactor = 50);
CREATE TABLE @extschema@.api_total_hour (LIKE @extschema@.api_total_minute INCLUDING DEFAULTS,
	PRIMARY KEY (bucket)) WITH (fillfactor = 50);
CREATE TABLE @extschema@.api_total_day (LIKE @extschema@.api_total_minute INCLUDING DEFAULTS,
	PRIMARY KEY (bucket)) WITH (fillfactor = 50);
SELECT pg_catalog.pg_extension_config_dump('@extschema@.api_total_minute', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.api_total_hour', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.api_total_day', '');
-- an update from 0.3 starts the day tier from the hours already written
INSERT INTO @extschema@.api_day
SELECT pg_catalog.date_trunc('day', h.bucket, 'UTC'), h.method, h.path, sum(h.calls), sum(h.ok),
       sum(h.client_errors), sum(h.server_errors), sum(h.latency_sum_ms),
       max(h.latency_max_ms), sum(h.latency_count), @extschema@.latency_merge(h.latency_hist)
FROM @extschema@.api_hour h
GROUP BY 1, 2, 3;

-- the live scans with filters, applied while scanning shared memory (NULL: any)
CREATE FUNCTION @extschema@._live_minutes(from_bucket timestamptz, to_ts timestamptz,
	by_caller boolean, paths text[], method text,
	OUT bucket timestamptz, OUT method text, OUT path text,
	OUT client_ip inet, OUT user_id text,
	OUT calls bigint, OUT ok bigint, OUT client_errors bigint,
	OUT server_errors bigint, OUT latency_count bigint,
	OUT latency_sum_ms double precision, OUT latency_max_ms double precision,
	OUT folded_before boolean)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'apicount_live_minutes'
LANGUAGE C VOLATILE PARALLEL RESTRICTED;

CREATE FUNCTION @extschema@._live_latency(from_bucket timestamptz, to_ts timestamptz,
	paths text[], method text,
	OUT bucket timestamptz, OUT method text, OUT path text, OUT latency_hist bytea)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'apicount_live_latency'
LANGUAGE C VOLATILE PARALLEL RESTRICTED;

-- each tier's retention in seconds, as the worker applies it: minute is
-- apicount.retention_minute, or apicount.retention when that is empty; a
-- coarser tier keeps its rows at least as long as the finer one
CREATE FUNCTION @extschema@._retention_secs(OUT minute_secs double precision,
	OUT hour_secs double precision, OUT day_secs double precision)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT m, greatest(m, h), greatest(m, h, d)
	FROM (SELECT extract(epoch FROM coalesce(nullif(current_setting('apicount.retention_minute'), ''),
	                                         current_setting('apicount.retention'))::interval) AS m,
	             extract(epoch FROM current_setting('apicount.retention_hour')::interval) AS h,
	             extract(epoch FROM current_setting('apicount.retention_day')::interval) AS d) s
$$;

-- The reading plan of the range [from_bucket, to_ts) with tiers up to
-- coarsest (0 minute, 1 hour, 2 day): days [d0, d1) from api_day, hours
-- [ha, d0) and [d1, hb) from api_hour, minutes [f, ha) and [hb, t) from
-- api_minute, where f <= ha <= d0 <= d1 <= hb <= t.  Where a tier's rows
-- are past its retention (minutes before the first whole hour after now()
-- - retention_minute, hours before the first whole day after now() -
-- retention_hour) the next coarser tier answers, and the range's ends
-- there widen to that tier's buckets (f and t are the widened ends).
CREATE FUNCTION @extschema@._tier_plan(from_bucket timestamptz, to_ts timestamptz,
	coarsest integer,
	OUT f timestamptz, OUT ha timestamptz, OUT d0 timestamptz, OUT d1 timestamptz,
	OUT hb timestamptz, OUT t timestamptz)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	r record;
	a0 timestamptz;		-- minutes are read from here on
	a1 timestamptz;		-- hours are read from here on
	fl_h timestamptz;
	fl_d timestamptz;
BEGIN
	SELECT * INTO r FROM @extschema@._retention_secs();
	fl_h := date_trunc('hour', now() - make_interval(secs => r.minute_secs), 'UTC');
	a0 := CASE WHEN fl_h < now() - make_interval(secs => r.minute_secs)
	           THEN fl_h + interval '1 hour' ELSE fl_h END;
	fl_d := date_trunc('day', now() - make_interval(secs => r.hour_secs), 'UTC');
	a1 := CASE WHEN fl_d < now() - make_interval(secs => r.hour_secs)
	           THEN fl_d + interval '1 day' ELSE fl_d END;
	-- the ends, widened where their tier is gone
	f := CASE WHEN from_bucket < a1 THEN date_trunc('day', from_bucket, 'UTC')
	          WHEN from_bucket < a0 THEN date_trunc('hour', from_bucket, 'UTC')
	          ELSE from_bucket END;
	t := CASE WHEN to_ts <= a1 THEN @extschema@._ceil_to(to_ts, 'day')
	          WHEN to_ts <= a0 THEN @extschema@._ceil_to(to_ts, 'hour')
	          ELSE to_ts END;
	IF t <= f THEN
		ha := t; hb := t; d0 := t; d1 := t;
		RETURN;
	END IF;
	-- hours
	IF coarsest >= 1 THEN
		ha := @extschema@._ceil_to(f, 'hour');
		hb := date_trunc('hour', t, 'UTC');
		IF ha >= hb THEN
			ha := t; hb := t;
		END IF;
	ELSIF f < a0 THEN
		ha := f;	-- whole hours (widened) up to where minutes start
		hb := least(a0, t);
	ELSE
		ha := t; hb := t;
	END IF;
	-- days
	IF coarsest >= 2 AND ha < hb THEN
		d0 := @extschema@._ceil_to(ha, 'day');
		d1 := date_trunc('day', hb, 'UTC');
		IF d0 >= d1 THEN
			d0 := hb; d1 := hb;
		END IF;
	ELSIF f < a1 THEN
		d0 := f;	-- whole days (widened) up to where hours start
		d1 := least(a1, t);
	ELSE
		d0 := hb; d1 := hb;
	END IF;
END
$$;

-- the first UTC hour or day boundary at or after ts
CREATE FUNCTION @extschema@._ceil_to(ts timestamptz, unit text)
RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT CASE WHEN date_trunc(unit, ts, 'UTC') < ts
	            THEN date_trunc(unit, ts, 'UTC') + ('1 ' || unit)::interval
	            ELSE date_trunc(unit, ts, 'UTC') END
$$;

-- the coarsest tier a step can read: 2 (days) for a whole number of days,
-- 1 (hours) for a whole number of hours, else 0 (minutes); NULL step (one
-- total over the range): 2
CREATE FUNCTION @extschema@._tier_of_step(step interval)
RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT CASE WHEN step IS NULL THEN 2
	            WHEN extract(epoch FROM step) % 86400 = 0 THEN 2
	            WHEN extract(epoch FROM step) % 3600 = 0 THEN 1
	            ELSE 0 END
$$;

-- The text of a query over the API tiers and the live counters, for
-- EXECUTE ... USING f, ha, d0, d1, hb, t (from _tier_plan), paths, method,
-- from_bucket, to_ts, and step as $11 when a key uses it.  Each tier's scan
-- is aggregated on its own by the keys (expressions over a row "a" of the
-- tier for bucket, method and path, such as date_bin($11, a.bucket, ...) or
-- NULL), so that only its groups reach the outer aggregate; sums and merges
-- add up across tiers.  Columns: bucket, method, path, calls, ok,
-- client_errors, server_errors, latency_count, latency_sum_ms,
-- latency_max_ms, latency_hist (NULL unless hist).  Only the filters given
-- appear in the text, so each scan is planned with them (an index scan on
-- (path, bucket) for a few paths).  Run by EXECUTE, it is planned for the
-- actual values on every call: no generic plan.
CREATE FUNCTION @extschema@._api_source(paths text[], method text, hist boolean,
	keys text[])
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	flt text := CASE WHEN paths IS NOT NULL THEN ' AND a.path OPERATOR(pg_catalog.=) ANY ($7)' ELSE '' END
	         || CASE WHEN method IS NOT NULL THEN ' AND a.method OPERATOR(pg_catalog.=) $8' ELSE '' END;
	sel text := format('SELECT %s AS bucket, %s AS method, %s AS path, ', keys[1], keys[2], keys[3])
	         || 'sum(a.calls)::bigint AS calls, sum(a.ok)::bigint AS ok, '
	         || 'sum(a.client_errors)::bigint AS client_errors, '
	         || 'sum(a.server_errors)::bigint AS server_errors, '
	         || 'sum(a.latency_count)::bigint AS latency_count, '
	         || 'sum(a.latency_sum_ms)::float8 AS latency_sum_ms, max(a.latency_max_ms) AS latency_max_ms, '
	         || CASE WHEN hist THEN '@extschema@.latency_merge(a.latency_hist)' ELSE 'NULL::bytea' END
	         || ' AS latency_hist FROM ';
	-- all APIs and methods, one row per bucket: from the sums over all APIs
	totals boolean := paths IS NULL AND method IS NULL
	                  AND keys[2] = 'NULL::text' AND keys[3] = 'NULL::text';
	q text;
BEGIN
	q := format('%1$s %4$s a WHERE a.bucket >= $3 AND a.bucket < $4%2$s GROUP BY 1, 2, 3'
	         || ' UNION ALL %1$s %5$s a WHERE a.bucket >= $2 AND a.bucket < $3%2$s GROUP BY 1, 2, 3'
	         || ' UNION ALL %1$s %5$s a WHERE a.bucket >= $4 AND a.bucket < $5%2$s GROUP BY 1, 2, 3'
	         || ' UNION ALL %1$s %6$s a WHERE a.bucket >= $1 AND a.bucket < $2%2$s GROUP BY 1, 2, 3'
	         || ' UNION ALL %1$s %6$s a WHERE a.bucket >= $5 AND a.bucket < $6%2$s GROUP BY 1, 2, 3'
	         || ' UNION ALL %3$s (SELECT l.bucket, l.method, l.path, l.calls, l.ok, l.client_errors,'
	         || ' l.server_errors, l.latency_count, l.latency_sum_ms, l.latency_max_ms, NULL::bytea AS latency_hist'
	         || ' FROM @extschema@._live_minutes($9, $10, false, $7, $8) l) a WHERE true%2$s GROUP BY 1, 2, 3',
	         sel, flt, replace(sel, '@extschema@.latency_merge(a.latency_hist)', 'NULL::bytea'),
	         CASE WHEN totals THEN '(SELECT t.*, NULL::text AS method, NULL::text AS path'
	                               || ' FROM @extschema@.api_total_day t)'
	              ELSE '@extschema@.api_day' END,
	         CASE WHEN totals THEN '(SELECT t.*, NULL::text AS method, NULL::text AS path'
	                               || ' FROM @extschema@.api_total_hour t)'
	              ELSE '@extschema@.api_hour' END,
	         CASE WHEN totals THEN '(SELECT t.*, NULL::text AS method, NULL::text AS path'
	                               || ' FROM @extschema@.api_total_minute t)'
	              ELSE '@extschema@.api_minute' END);
	IF hist THEN
		q := q || format(' UNION ALL %s (SELECT l.bucket, l.method, l.path, 0::bigint AS calls, 0::bigint AS ok,'
		         || ' 0::bigint AS client_errors, 0::bigint AS server_errors, 0::bigint AS latency_count,'
		         || ' 0::float8 AS latency_sum_ms, NULL::float8 AS latency_max_ms, l.latency_hist'
		         || ' FROM @extschema@._live_latency($9, $10, $7, $8) l) a WHERE true%s GROUP BY 1, 2, 3',
		         sel, flt);
	END IF;
	RETURN q;
END
$$;

-- API rows per step over [date_trunc('minute', from_ts), to_ts), flushed and
-- unflushed merged into one row per (bucket, method, path) (per bucket, with
-- NULL method and path, when by_api is false), read from the
-- coarsest tier the step allows; bucket is date_bin(step, row's bucket,
-- 2000-01-01 UTC).  A range (or part of one) whose minutes or hours are
-- past their retention comes from the next coarser tier, at its resolution.
CREATE FUNCTION @extschema@._minutes(from_ts timestamptz, to_ts timestamptz,
	step interval, paths text[], meth text, by_api boolean)
RETURNS TABLE (b timestamptz, m text, pth text, calls bigint,
               ok bigint, client_errors bigint, server_errors bigint,
               latency_count bigint, latency_sum_ms double precision,
               latency_max_ms double precision, latency_hist bytea)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET jit = off
SET work_mem = '32MB'
AS $$
DECLARE
	f0 timestamptz := date_trunc('minute', from_ts);
	pl record;
BEGIN
	IF from_ts IS NULL OR to_ts IS NULL THEN
		RAISE EXCEPTION 'from_ts and to_ts must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF step IS NULL OR step <= interval '0' OR step < interval '1 minute' THEN
		RAISE EXCEPTION 'step must be an interval of at least 1 minute'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	pl := @extschema@._tier_plan(f0, to_ts, @extschema@._tier_of_step(step));
	PERFORM @extschema@._read_begin();
	RETURN QUERY EXECUTE format(
		'SELECT u.bucket, u.method, u.path,'
		|| ' sum(u.calls)::bigint, sum(u.ok)::bigint, sum(u.client_errors)::bigint,'
		|| ' sum(u.server_errors)::bigint, sum(u.latency_count)::bigint,'
		|| ' sum(u.latency_sum_ms)::float8, max(u.latency_max_ms),'
		|| ' @extschema@.latency_merge(u.latency_hist)'
		|| ' FROM (%s) u GROUP BY 1, 2, 3 ORDER BY 1, 2, 3',
		@extschema@._api_source(paths, meth, true, ARRAY['date_bin($11, a.bucket, timestamptz ''2000-01-01 00:00:00+00'')',
		                        CASE WHEN by_api THEN 'a.method' ELSE 'NULL::text' END,
		                        CASE WHEN by_api THEN 'a.path' ELSE 'NULL::text' END]))
		USING pl.f, pl.ha, pl.d0, pl.d1, pl.hb, pl.t, paths, meth, f0, to_ts, step;
	PERFORM @extschema@._read_end();
END
$$;

CREATE FUNCTION @extschema@.minutes(from_ts timestamptz, to_ts timestamptz,
	step interval, paths text[] DEFAULT NULL, method text DEFAULT NULL,
	by_api boolean DEFAULT true)
RETURNS TABLE (bucket timestamptz, method text, path text, calls bigint,
               ok bigint, client_errors bigint, server_errors bigint,
               latency_count bigint, latency_sum_ms double precision,
               latency_max_ms double precision, latency_hist bytea)
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM @extschema@._minutes($1, $2, $3, $4, $5, coalesce($6, true)) $$;

DROP FUNCTION @extschema@.series(text, timestamptz, timestamptz, interval);
DROP FUNCTION @extschema@._series(text, timestamptz, timestamptz, interval);
CREATE FUNCTION @extschema@._series(p text, from_ts timestamptz, to_ts timestamptz,
	step interval, meth text)
RETURNS TABLE (t timestamptz, m text, pth text, calls bigint,
               errors bigint, avg_latency_ms double precision,
               p95_latency_ms double precision)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET jit = off
SET work_mem = '32MB'
AS $$
DECLARE
	f0 timestamptz := date_trunc('minute', from_ts);
	pl record;
	by_api boolean := p IS NOT NULL;
BEGIN
	IF step IS NULL OR step <= interval '0' THEN
		RAISE EXCEPTION 'step must be a positive interval'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF from_ts IS NULL OR to_ts IS NULL THEN
		RAISE EXCEPTION 'from_ts and to_ts must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	pl := @extschema@._tier_plan(f0, to_ts, @extschema@._tier_of_step(step));
	PERFORM @extschema@._read_begin();
	RETURN QUERY EXECUTE format(
		'SELECT u.bucket AS t, %1$s,'
		|| ' sum(u.calls)::bigint, sum(u.client_errors + u.server_errors)::bigint,'
		|| ' CASE WHEN sum(u.latency_count) > 0 THEN sum(u.latency_sum_ms) / sum(u.latency_count) END,'
		|| ' @extschema@.latency_percentile(@extschema@.latency_merge(u.latency_hist), 0.95)'
		|| ' FROM (%2$s) u GROUP BY 1, 2, 3 HAVING sum(u.calls) > 0 ORDER BY 1, 2, 3',
		'u.method, u.path',
		@extschema@._api_source(CASE WHEN by_api THEN ARRAY[p] END, meth, true,
		                        ARRAY['date_bin($11, a.bucket, timestamptz ''2000-01-01 00:00:00+00'')',
		                              CASE WHEN by_api THEN 'a.method' ELSE 'NULL::text' END,
		                              CASE WHEN by_api THEN 'a.path' ELSE 'NULL::text' END]))
		USING pl.f, pl.ha, pl.d0, pl.d1, pl.hb, pl.t, CASE WHEN by_api THEN ARRAY[p] END,
		      meth, f0, to_ts, step;
	PERFORM @extschema@._read_end();
END
$$;

-- public signature (its OUT column "path" shares the parameter's name,
-- which PL/pgSQL does not allow, hence the SQL wrapper)
CREATE FUNCTION @extschema@.series(path text DEFAULT NULL,
	from_ts timestamptz DEFAULT now() - interval '1 hour',
	to_ts timestamptz DEFAULT now(),
	step interval DEFAULT '1 minute',
	method text DEFAULT NULL)
RETURNS TABLE ("time" timestamptz, method text, path text, calls bigint,
               errors bigint, avg_latency_ms double precision,
               p95_latency_ms double precision)
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM @extschema@._series($1, $2, $3, $4, $5) $$;

DROP FUNCTION @extschema@.latency_percentiles(text, timestamptz, timestamptz, double precision[]);
DROP FUNCTION @extschema@._latency_percentiles(text, timestamptz, timestamptz, double precision[]);
CREATE FUNCTION @extschema@._latency_percentiles(p text, from_ts timestamptz,
	to_ts timestamptz, ps double precision[], meth text, ps_paths text[])
RETURNS TABLE (m text, pth text, pct double precision, ms double precision)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET jit = off
SET work_mem = '32MB'
AS $$
DECLARE
	f0 timestamptz := date_trunc('minute', from_ts);
	pl record;
	flt text[];
BEGIN
	IF from_ts IS NULL OR to_ts IS NULL THEN
		RAISE EXCEPTION 'from_ts and to_ts must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF ps IS NULL OR cardinality(ps) = 0 OR EXISTS (
		SELECT 1 FROM unnest(ps) x
		WHERE x IS NULL OR x < 0 OR x > 1 OR x = 'NaN'::float8) THEN
		RAISE EXCEPTION 'percentiles must be a non-empty array of values between 0 and 1'
			USING ERRCODE = 'invalid_parameter_value',
			      HINT = 'For example ''{0.5,0.95,0.99}''.';
	END IF;
	-- path and paths both filter (a path must pass both)
	flt := CASE WHEN p IS NOT NULL AND ps_paths IS NOT NULL
	            THEN CASE WHEN p = ANY (ps_paths) THEN ARRAY[p] ELSE '{}'::text[] END
	            WHEN p IS NOT NULL THEN ARRAY[p]
	            ELSE ps_paths END;
	pl := @extschema@._tier_plan(f0, to_ts, 2);
	PERFORM @extschema@._read_begin();
	RETURN QUERY EXECUTE format(
		'SELECT g.method, g.path, q.pct, @extschema@.latency_percentile(g.hist, q.pct)'
		|| ' FROM (SELECT u.method, u.path, @extschema@.latency_merge(u.latency_hist) AS hist'
		|| '       FROM (%s) u GROUP BY 1, 2) g'
		|| ' CROSS JOIN LATERAL unnest($11) WITH ORDINALITY AS q(pct, ord)'
		|| ' WHERE g.hist IS NOT NULL ORDER BY g.method, g.path, q.ord',
		@extschema@._api_source(flt, meth, true, ARRAY['NULL::timestamptz', 'a.method', 'a.path']))
		USING pl.f, pl.ha, pl.d0, pl.d1, pl.hb, pl.t, flt, meth, f0, to_ts, ps;
	PERFORM @extschema@._read_end();
END
$$;

-- latency percentiles per API over [date_trunc('minute', from_ts), to_ts),
-- merged from the day, hour and minute histograms and the unflushed ones
CREATE FUNCTION @extschema@.latency_percentiles(path text DEFAULT NULL,
	from_ts timestamptz DEFAULT now() - interval '1 hour',
	to_ts timestamptz DEFAULT now(),
	percentiles double precision[] DEFAULT '{0.5,0.95,0.99}',
	method text DEFAULT NULL, paths text[] DEFAULT NULL)
RETURNS TABLE (method text, path text, percentile double precision,
               latency_ms double precision)
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM @extschema@._latency_percentiles($1, $2, $3, $4, $5, $6) $$;

-- top_apis over a range: whole days, hours and the partial hours' minutes,
-- filters inside the scans
DROP FUNCTION @extschema@.top_apis(integer, timestamptz, timestamptz);
CREATE FUNCTION @extschema@._top_apis(n integer, from_ts timestamptz, to_ts timestamptz,
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
	RETURN QUERY EXECUTE format($q$
	WITH exact AS (
		SELECT u.method, u.path, sum(u.calls) AS calls,
		       sum(u.client_errors + u.server_errors) AS errors,
		       sum(u.latency_sum_ms) AS ls, sum(u.latency_count) AS lc
		FROM (%s) u
		GROUP BY u.method, u.path
	), ha AS MATERIALIZED (
		SELECT * FROM @extschema@._heavy_apis($9, $10) x
		WHERE x.method IS NULL
		   OR (($7 IS NULL OR x.path = ANY ($7)) AND ($8 IS NULL OR x.method = $8))
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
	LIMIT $11
	$q$, @extschema@._api_source(paths, meth, false, ARRAY['NULL::timestamptz', 'a.method', 'a.path']))
		USING pl.f, pl.ha, pl.d0, pl.d1, pl.hb, pl.t, paths, meth, f0, to_ts, n;
	PERFORM @extschema@._read_end();
END
$$;

CREATE FUNCTION @extschema@.top_apis(n integer, from_ts timestamptz, to_ts timestamptz,
	paths text[] DEFAULT NULL, method text DEFAULT NULL)
RETURNS TABLE (method text, path text, calls bigint, errors bigint,
               error_ratio double precision, avg_latency_ms double precision,
               calls_error bigint)
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM @extschema@._top_apis($1, $2, $3, $4, $5) $$;

-- caller-level minute rows of the given paths and method (NULL: any),
-- flushed + unflushed, with each API's "(other callers)" row; the filters
-- reach the scan of caller_minute (index on (path, bucket)) and the live one
CREATE FUNCTION @extschema@._caller_minutes(from_bucket timestamptz, to_ts timestamptz,
	paths text[], meth text,
	OUT bucket timestamptz, OUT method text, OUT path text, OUT client_ip inet,
	OUT user_id text, OUT calls bigint, OUT ok bigint, OUT errors bigint,
	OUT folded_before boolean)
RETURNS SETOF record
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	flt text := CASE WHEN paths IS NOT NULL THEN ' AND c.path OPERATOR(pg_catalog.=) ANY ($3)' ELSE '' END
	         || CASE WHEN meth IS NOT NULL THEN ' AND c.method OPERATOR(pg_catalog.=) $4' ELSE '' END;
BEGIN
	RETURN QUERY EXECUTE format(
		'SELECT c.bucket, c.method, c.path, c.client_ip, c.user_id, c.calls, c.ok,'
		|| ' c.client_errors + c.server_errors, c.folded_before'
		|| ' FROM @extschema@.caller_minute c WHERE c.bucket >= $1 AND c.bucket < $2%1$s'
		|| ' UNION ALL'
		|| ' SELECT c.bucket, c.method, c.path, c.client_ip, c.user_id, c.calls,'
		|| ' c.ok, c.client_errors + c.server_errors, c.folded_before'
		|| ' FROM @extschema@._live_minutes($1, $2, true, $3, $4) c WHERE c.calls > 0%1$s', flt)
		USING from_bucket, to_ts, paths, meth;
END
$$;

-- Caller groups per minute and API over [from_bucket, to_ts), flushed and
-- live, of the given paths and method (NULL: any; the filters reach the
-- scans): the caller rows (without "(other callers)") grouped by 'ip',
-- 'user', 'ip_user' or 'net', plus the heavy callers among the folded
-- ones.  calls is an upper bound: calls - calls_error <= truth <= calls;
-- ok counts the hits of caller rows only (a lower bound).
--
-- A group may have folded calls that no summary holds in every minute of
-- the range in which its API had folded callers (an "(other callers)" row)
-- and the group is in none of the minute's summaries: at most that
-- minute's bound (heavy_minute_bounds.absent_bound, summed over the
-- minute's summaries when a restart left two).  None, if its caller row of
-- that minute says its entry was made before any fold (folded_before
-- false, 'ip_user' only).  A minute in which the group has a row gets the
-- bound on that row; the minutes in which it has none get it on one more
-- row per group with a NULL bucket (0.3 forgot them: a caller evicted from
-- one minute's summary lost that minute's calls from callers() and from
-- top_callers and the rules over ranges longer than the live horizon).
CREATE FUNCTION @extschema@._caller_groups(from_bucket timestamptz, to_ts timestamptz,
	by text, paths text[], meth text,
	OUT bucket timestamptz, OUT method text, OUT path text, OUT client_ip inet,
	OUT user_id text, OUT calls bigint, OUT ok bigint, OUT errors bigint,
	OUT calls_error bigint)
RETURNS SETOF record
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	WITH cm AS MATERIALIZED (
		-- _is_other_callers(), written out: a call per row costs more than the rest
		SELECT c.*, (c.client_ip IS NULL AND c.user_id IS NOT DISTINCT FROM '(other callers)') AS other
		FROM @extschema@._caller_minutes(from_bucket, to_ts, paths, meth) c
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
	), live AS MATERIALIZED (
		SELECT * FROM @extschema@._live_heavy(from_bucket, to_ts, by)
	), heavy AS (
		-- a minute's summaries: the written one and, after a restart in
		-- that minute, the live one (gens: how many name the group)
		SELECT x.bucket, x.method, x.path, x.client_ip, x.user_id,
		       sum(x.calls) AS calls, sum(x.calls_error) AS calls_error,
		       sum(x.errors) AS errors, count(*) AS gens
		FROM (SELECT h.bucket, h.method, h.path, h.client_ip, h.user_id, h.calls,
		             h.calls_error, h.errors
		      FROM @extschema@.caller_heavy_minute h
		      WHERE h.grouped_by = by AND h.bucket >= from_bucket AND h.bucket < to_ts
		        AND (paths IS NULL OR h.path = ANY (paths)) AND (meth IS NULL OR h.method = meth)
		      UNION ALL
		      SELECT l.bucket, l.method, l.path, l.client_ip, l.user_id, l.calls,
		             l.calls_error, l.errors
		      FROM live l WHERE l.method IS NOT NULL
		        AND (paths IS NULL OR l.path = ANY (paths)) AND (meth IS NULL OR l.method = meth)) x
		GROUP BY 1, 2, 3, 4, 5
	), minute_bounds AS (
		SELECT x.bucket, sum(x.absent_bound) AS absent_bound, count(*) AS gens
		FROM (SELECT b.bucket, b.absent_bound
		      FROM @extschema@.heavy_minute_bounds b
		      WHERE b.grouped_by = by AND b.bucket >= from_bucket AND b.bucket < to_ts
		      UNION ALL
		      SELECT l.bucket, l.calls_error FROM live l WHERE l.method IS NULL) x
		GROUP BY 1
	), api_bounds AS MATERIALIZED (
		-- the minutes and APIs with an "(other callers)" row: only their
		-- callers can have folded calls that a summary no longer holds
		SELECT fa.bucket, fa.method, fa.path, mb.absent_bound, mb.gens
		FROM (SELECT DISTINCT c.bucket, c.method, c.path FROM cm c WHERE c.other) fa
		JOIN minute_bounds mb ON mb.bucket = fa.bucket
		WHERE mb.absent_bound > 0
	), grouped AS MATERIALIZED (
		SELECT coalesce(f.bucket, h.bucket) AS bucket, coalesce(f.method, h.method) AS method,
		       coalesce(f.path, h.path) AS path, coalesce(f.ip, h.client_ip) AS ip,
		       coalesce(f.uid, h.user_id) AS uid,
		       coalesce(f.calls, 0) + coalesce(h.calls, 0) AS calls,
		       coalesce(f.ok, 0) AS ok,
		       coalesce(f.errors, 0) + coalesce(h.errors, 0) AS errors,
		       coalesce(h.calls_error, 0) AS calls_error,
		       coalesce(ab.absent_bound, 0) AS minute_bound,
		       CASE WHEN (h.gens IS NULL OR h.gens < ab.gens)
		                 AND coalesce(f.may_have_folded, true)
		            THEN coalesce(ab.absent_bound, 0) ELSE 0 END AS missing
		FROM full_rows f
		FULL JOIN heavy h ON h.bucket = f.bucket AND h.method = f.method
		     AND h.path = f.path AND h.client_ip IS NOT DISTINCT FROM f.ip
		     AND h.user_id IS NOT DISTINCT FROM f.uid
		LEFT JOIN api_bounds ab ON ab.bucket = coalesce(f.bucket, h.bucket)
		     AND ab.method = coalesce(f.method, h.method)
		     AND ab.path = coalesce(f.path, h.path)
	)
	SELECT g.bucket, g.method, g.path, g.ip, g.uid, (g.calls + g.missing)::bigint,
	       g.ok::bigint, g.errors::bigint, (g.calls_error + g.missing)::bigint
	FROM grouped g
	UNION ALL
	-- each group's minutes without a row: the sum of their bounds
	SELECT NULL::timestamptz, r.method, r.path, r.ip, r.uid,
	       (t.total - r.present)::bigint, 0::bigint, 0::bigint, (t.total - r.present)::bigint
	FROM (SELECT g.method, g.path, g.ip, g.uid, sum(g.minute_bound) AS present
	      FROM grouped g GROUP BY 1, 2, 3, 4) r
	JOIN (SELECT ab.method, ab.path, sum(ab.absent_bound) AS total
	      FROM api_bounds ab GROUP BY 1, 2) t
	     ON t.method = r.method AND t.path = r.path
	WHERE t.total > r.present
$$;

-- the same over every path and method (top_callers' windows, _window_by)
CREATE OR REPLACE FUNCTION @extschema@._caller_groups(from_bucket timestamptz, to_ts timestamptz,
	by text,
	OUT bucket timestamptz, OUT method text, OUT path text, OUT client_ip inet,
	OUT user_id text, OUT calls bigint, OUT ok bigint, OUT errors bigint,
	OUT calls_error bigint)
RETURNS SETOF record
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM @extschema@._caller_groups(from_bucket, to_ts, by, NULL, NULL) $$;

-- top callers over a range (top_callers takes a window; callers are kept per
-- minute: caller_minute),
-- with the path filter (path and paths both filter) and method filter
-- inside the scans
CREATE FUNCTION @extschema@.top_callers_range(n integer, from_ts timestamptz, to_ts timestamptz,
	path text DEFAULT NULL, by text DEFAULT 'ip', paths text[] DEFAULT NULL,
	method text DEFAULT NULL)
RETURNS TABLE (client_ip inet, user_id text, calls bigint, errors bigint, calls_error bigint)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET jit = off
SET work_mem = '32MB'
AS $$
DECLARE
	flt text[] := CASE WHEN path IS NOT NULL AND paths IS NOT NULL
	                   THEN CASE WHEN path = ANY (paths) THEN ARRAY[path] ELSE '{}'::text[] END
	                   WHEN path IS NOT NULL THEN ARRAY[path]
	                   ELSE paths END;
	f0 timestamptz;
BEGIN
	PERFORM @extschema@._check_n(n);
	PERFORM @extschema@._check_by(by);
	IF from_ts IS NULL OR to_ts IS NULL THEN
		RAISE EXCEPTION 'from_ts and to_ts must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	f0 := date_trunc('minute', from_ts);
	PERFORM @extschema@._read_begin();
	-- No summary of folded callers in the range (none is written for a minute
	-- without folded calls): then _caller_groups adds nothing to the caller
	-- rows, and one aggregate over them, filtered in the scans, is the answer.
	IF NOT EXISTS (SELECT 1 FROM @extschema@.heavy_minute_bounds b
	               WHERE b.bucket >= f0 AND b.bucket < to_ts AND b.grouped_by = by)
	   AND NOT EXISTS (SELECT 1 FROM @extschema@.caller_heavy_minute h
	                   WHERE h.grouped_by = by AND h.bucket >= f0 AND h.bucket < to_ts)
	   AND NOT EXISTS (SELECT 1 FROM @extschema@._live_heavy(f0, to_ts, by)) THEN
		RETURN QUERY EXECUTE format(
			'SELECT %s, %s, sum(c.calls)::bigint, sum(c.errors)::bigint, 0::bigint'
			|| ' FROM (SELECT c.client_ip, c.user_id, c.calls, c.client_errors + c.server_errors AS errors, c.method'
			|| '       FROM @extschema@.caller_minute c WHERE c.bucket >= $1 AND c.bucket < $2%3$s'
			|| '       UNION ALL'
			|| '       SELECT c.client_ip, c.user_id, c.calls, c.client_errors + c.server_errors, c.method'
			|| '       FROM @extschema@._live_minutes($1, $2, true, $3, $4) c WHERE c.calls > 0%3$s) c'
			|| ' WHERE NOT (c.client_ip IS NULL AND c.user_id IS NOT DISTINCT FROM ''(other callers)'')'
			|| '   AND c.method <> ''*'''
			|| ' GROUP BY 1, 2 HAVING sum(c.calls) > 0'
			|| ' ORDER BY 3 DESC, 1 NULLS LAST, 2 NULLS LAST LIMIT $5',
			CASE WHEN by IN ('ip', 'ip_user') THEN 'c.client_ip'
			     WHEN by = 'net' THEN '@extschema@._net(c.client_ip)' ELSE 'NULL::inet' END,
			CASE WHEN by IN ('user', 'ip_user') THEN 'c.user_id' ELSE 'NULL::text' END,
			CASE WHEN flt IS NOT NULL THEN ' AND c.path OPERATOR(pg_catalog.=) ANY ($3)' ELSE '' END
			|| CASE WHEN top_callers_range.method IS NOT NULL THEN ' AND c.method OPERATOR(pg_catalog.=) $4' ELSE '' END)
			USING f0, to_ts, flt, top_callers_range.method, n;
	ELSE
		RETURN QUERY
		SELECT c.client_ip, c.user_id, sum(c.calls)::bigint, sum(c.errors)::bigint,
		       sum(c.calls_error)::bigint
		FROM @extschema@._caller_groups(f0, to_ts, by, flt, top_callers_range.method) c
		WHERE c.method <> '*'
		GROUP BY 1, 2
		HAVING sum(c.calls) > 0
		ORDER BY 3 DESC, 1 NULLS LAST, 2 NULLS LAST
		LIMIT n;
	END IF;
	PERFORM @extschema@._read_end();
END
$$;

DROP FUNCTION @extschema@.callers(text, timestamptz, timestamptz);
CREATE FUNCTION @extschema@.callers(path text, from_ts timestamptz, to_ts timestamptz,
	method text DEFAULT NULL)
RETURNS TABLE (client_ip inet, user_id text, first_seen timestamptz,
               last_seen timestamptz, calls bigint, errors bigint, calls_error bigint)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET jit = off
SET work_mem = '32MB'
AS $$
DECLARE
	p text := path;
	m text := method;
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
		FROM @extschema@._caller_groups(date_trunc('minute', from_ts), to_ts, 'ip_user',
		                                ARRAY[p], m) g
		WHERE g.calls > 0
		UNION ALL
		SELECT c.bucket, c.client_ip, c.user_id, c.calls, c.errors, 0
		FROM @extschema@._caller_minutes(date_trunc('minute', from_ts), to_ts, ARRAY[p], m) c
		WHERE c.calls > 0 AND c.client_ip IS NULL AND c.user_id IS NOT DISTINCT FROM '(other callers)'
	) u
	GROUP BY u.client_ip, u.user_id
	ORDER BY 5 DESC, 1 NULLS LAST, 2 NULLS LAST;
	PERFORM @extschema@._read_end();
END
$$;

-- Recompute api_day from api_hour (after loading or repairing the rollups
-- by hand; the worker keeps the tiers in step on its own).  Returns the
-- rows written.
CREATE FUNCTION @extschema@.rebuild_api_day()
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	n bigint;
BEGIN
	LOCK TABLE @extschema@.api_hour, @extschema@.api_day IN SHARE ROW EXCLUSIVE MODE;
	DELETE FROM @extschema@.api_day;
	INSERT INTO @extschema@.api_day
	SELECT date_trunc('day', bucket, 'UTC'), method, path, sum(calls), sum(ok),
	       sum(client_errors), sum(server_errors), sum(latency_sum_ms),
	       max(latency_max_ms), sum(latency_count),
	       @extschema@.latency_merge(latency_hist)
	FROM @extschema@.api_hour
	GROUP BY 1, 2, 3;
	GET DIAGNOSTICS n = ROW_COUNT;
	RETURN n;
END
$$;

-- Recompute api_total_minute, _hour and _day from api_minute, api_hour and
-- api_day (run it after rebuild_api_hour() and rebuild_api_day()).
-- Returns the rows written.
CREATE FUNCTION @extschema@.rebuild_api_totals()
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	n bigint := 0;
	k bigint;
	t text;
BEGIN
	LOCK TABLE @extschema@.api_minute, @extschema@.api_hour, @extschema@.api_day,
		@extschema@.api_total_minute, @extschema@.api_total_hour, @extschema@.api_total_day
		IN SHARE ROW EXCLUSIVE MODE;
	FOREACH t IN ARRAY ARRAY['minute', 'hour', 'day'] LOOP
		EXECUTE format('DELETE FROM @extschema@.api_total_%s', t);
		EXECUTE format('INSERT INTO @extschema@.api_total_%1$s'
		               || ' SELECT bucket, sum(calls), sum(ok), sum(client_errors), sum(server_errors),'
		               || ' sum(latency_sum_ms), max(latency_max_ms), sum(latency_count),'
		               || ' @extschema@.latency_merge(latency_hist)'
		               || ' FROM @extschema@.api_%1$s GROUP BY 1', t);
		GET DIAGNOSTICS k = ROW_COUNT;
		n := n + k;
	END LOOP;
	RETURN n;
END
$$;
-- an update from 0.3 starts them from the rows already written
SELECT @extschema@.rebuild_api_totals();

REVOKE ALL ON @extschema@.api_day, @extschema@.api_total_minute, @extschema@.api_total_hour,
	@extschema@.api_total_day FROM PUBLIC;
GRANT SELECT ON @extschema@.api_day, @extschema@.api_total_minute, @extschema@.api_total_hour,
	@extschema@.api_total_day TO apicount_reader;
DO $grants$
DECLARE
	f text;
BEGIN
	FOREACH f IN ARRAY ARRAY[
		'@extschema@._live_minutes(timestamptz, timestamptz, boolean, text[], text)',
		'@extschema@._live_latency(timestamptz, timestamptz, text[], text)',
		'@extschema@._retention_secs()',
		'@extschema@._tier_plan(timestamptz, timestamptz, integer)',
		'@extschema@._ceil_to(timestamptz, text)',
		'@extschema@._tier_of_step(interval)',
		'@extschema@._api_source(text[], text, boolean, text[])',
		'@extschema@._minutes(timestamptz, timestamptz, interval, text[], text, boolean)',
		'@extschema@.minutes(timestamptz, timestamptz, interval, text[], text, boolean)',
		'@extschema@._top_apis(integer, timestamptz, timestamptz, text[], text)',
		'@extschema@._series(text, timestamptz, timestamptz, interval, text)',
		'@extschema@.series(text, timestamptz, timestamptz, interval, text)',
		'@extschema@._latency_percentiles(text, timestamptz, timestamptz, double precision[], text, text[])',
		'@extschema@.latency_percentiles(text, timestamptz, timestamptz, double precision[], text, text[])',
		'@extschema@.top_apis(integer, timestamptz, timestamptz, text[], text)',
		'@extschema@._caller_minutes(timestamptz, timestamptz, text[], text)',
		'@extschema@._caller_groups(timestamptz, timestamptz, text, text[], text)',
		'@extschema@.top_callers_range(integer, timestamptz, timestamptz, text, text, text[], text)',
		'@extschema@.callers(text, timestamptz, timestamptz, text)']
	LOOP
		EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
		EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO apicount_reader', f);
	END LOOP;
	REVOKE ALL ON FUNCTION @extschema@.rebuild_api_day() FROM PUBLIC;
	REVOKE ALL ON FUNCTION @extschema@.rebuild_api_totals() FROM PUBLIC;
END
$grants$;

---------------------------------------------------------------------------
-- What each public function, view and table is for, so that \df+, \dv+ and
-- \dt+ explain themselves.  Comments go on a function by name, on every
-- signature it has: they survive a change of arguments in a later version.
---------------------------------------------------------------------------
DO $comments$
DECLARE
	c record;
	f regprocedure;
BEGIN
	FOR c IN SELECT * FROM (VALUES
		('hit', 'Record one request (as an INSERT into apicount.requests): counted in shared memory at commit, nothing stored'),
		('flush', 'Ask the worker to flush now and wait for it (30 s at most); returns the number of entries written. Superuser only'),
		('top_apis', 'The busiest APIs over a sliding window (since) or a range (from_ts, to_ts): calls, errors, error ratio, mean latency; calls_error bounds APIs named during a path flood'),
		('top_callers', 'The busiest callers over a sliding window, by ip, user, ip_user or net (/24, /64); calls - calls_error <= truth <= calls'),
		('hot_callers', 'Callers whose calls to one API within the window reach a threshold, by ip, user, ip_user or net; never misses one (calls is an upper bound)'),
		('callers', 'The audit trail of one API over a range: each caller with first and last minute seen, calls, errors, calls_error, and the API''s "(other callers)" row'),
		('series', 'Calls, errors and latency of one API (or all) per step over a range, rollups plus counts not flushed yet; a step of hours or days reads api_hour or api_day'),
		('minutes', 'Rows per API (or all APIs, by_api => false) and step over a range, as api_minute: minutes, or hours or days with a step of hours or days; optional paths and method filters'),
		('latency_percentiles', 'Latency percentiles of one API (or all, or a list of paths) over a range, from the merged histograms'),
		('top_callers_range', 'The busiest callers over a range (from_ts, to_ts), by ip, user, ip_user or net, with path and method filters; calls - calls_error <= truth <= calls'),
		('rebuild_api_day', 'Recompute api_day from api_hour (after loading or repairing rollups by hand); returns the rows written'),
		('rebuild_api_totals', 'Recompute api_total_minute, api_total_hour and api_total_day from the per-API tiers; returns the rows written'),
		('login_anomalies', 'Login paths whose calls in the window spike over their baseline with a low success ratio (credential stuffing)'),
		('evaluate_rules', 'Evaluate apicount.rules now and record (and NOTIFY) the alerts that fire; returns how many. The worker runs it on its own'),
		('normalize_path', 'The path as apicount counts it: query string and fragment stripped, numeric, UUID and long hex segments become :id'),
		('rebuild_api_hour', 'Recompute api_hour from api_minute (after a manual change of api_minute)'),
		('latency_count', 'The number of latencies in a histogram (bytea)'),
		('latency_merge', 'Aggregate: the sum of latency histograms (bytea)'),
		('latency_percentile', 'A percentile (0..1) of a latency histogram (bytea), in milliseconds')
	) v(name, text)
	LOOP
		FOR f IN SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p
			WHERE p.pronamespace = '@extschema@'::regnamespace AND p.proname = c.name
		LOOP
			EXECUTE pg_catalog.format('COMMENT ON %s %s IS %L',
				CASE WHEN (SELECT p.prokind FROM pg_catalog.pg_proc p WHERE p.oid = f) = 'a'
				     THEN 'AGGREGATE' ELSE 'FUNCTION' END, f, c.text);
		END LOOP;
	END LOOP;
END
$comments$;

COMMENT ON VIEW @extschema@.live IS
'One row per live counter entry (API and caller tiers): its minute, key, calls and the part not flushed yet';
COMMENT ON VIEW @extschema@.stats IS
'Fill of each tier, folded calls, the current bound of the heavy-caller summaries, flushes and shared memory';
COMMENT ON VIEW @extschema@.sources IS
'Access logs shipped by apicount-ship: the position each source has reached, flushed or not';
COMMENT ON TABLE @extschema@.requests IS
'Insert requests here (INSERT or COPY): each row is counted in shared memory and not stored';
COMMENT ON TABLE @extschema@.api_minute IS
'Per minute and API (method, path): calls, ok, client and server errors, latency sum, max and histogram';
COMMENT ON TABLE @extschema@.api_hour IS
'Per hour and API: the same columns as api_minute, summed';
COMMENT ON TABLE @extschema@.api_day IS
'Per UTC day and API: the same columns as api_hour, written by the same flushes';
COMMENT ON TABLE @extschema@.api_total_minute IS
'Per minute, all APIs together: what an all-paths series reads at minute steps';
COMMENT ON TABLE @extschema@.api_total_hour IS
'Per hour, all APIs together';
COMMENT ON TABLE @extschema@.api_total_day IS
'Per UTC day, all APIs together';
COMMENT ON TABLE @extschema@.caller_minute IS
'Per minute, API and caller (client_ip, user_id); folded callers are in the API''s "(other callers)" row';
COMMENT ON TABLE @extschema@.caller_heavy_minute IS
'Space-Saving summaries of the folded callers (and folded APIs), per minute and grouping: truth in [calls - calls_error, calls]';
COMMENT ON TABLE @extschema@.heavy_minute_bounds IS
'Per minute and grouping: the calls folded, and the most a caller absent from the summary can have folded';
COMMENT ON TABLE @extschema@.rules IS
'Detection rules: a path pattern, a grouping (per ip, user, ip_user, net or api), a threshold and a window';
COMMENT ON TABLE @extschema@.alerts IS
'Alerts fired by the rules (also sent with NOTIFY apicount_alert)';
COMMENT ON TABLE @extschema@.audited_apis IS
'Path LIKE patterns of sensitive APIs whose every caller is kept exactly';
