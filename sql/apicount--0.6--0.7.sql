/* apicount 0.6 -> 0.7: the tier plan in C (issue 18) */
\echo Use "CREATE EXTENSION apicount" or "ALTER EXTENSION apicount UPDATE" to load this file. \quit

---------------------------------------------------------------------------
-- The reading plan of a range (which tier answers which part of it) and
-- each tier's retention are computed by src/query/tiers.c, from the same
-- settings the worker applies (apicount_retention_tier_secs).  Same
-- signatures and results as the SQL and PL/pgSQL versions of 0.4; a range
-- query spends less of its fixed cost on them.
---------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION @extschema@._retention_secs(OUT minute_secs double precision,
	OUT hour_secs double precision, OUT day_secs double precision)
AS 'MODULE_PATHNAME', 'apicount_retention_secs_sql'
LANGUAGE C STABLE PARALLEL SAFE;

CREATE OR REPLACE FUNCTION @extschema@._tier_plan(from_bucket timestamptz, to_ts timestamptz,
	coarsest integer,
	OUT f timestamptz, OUT ha timestamptz, OUT d0 timestamptz, OUT d1 timestamptz,
	OUT hb timestamptz, OUT t timestamptz)
AS 'MODULE_PATHNAME', 'apicount_tier_plan'
LANGUAGE C STABLE STRICT PARALLEL SAFE;

CREATE OR REPLACE FUNCTION @extschema@._tier_of_step(step interval)
RETURNS integer
AS 'MODULE_PATHNAME', 'apicount_tier_of_step'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

---------------------------------------------------------------------------
-- The text of a range query over the API tiers now holds only the scans of
-- the tiers' intervals that are not empty, and, with a path filter or over
-- the all-API sums, rows rather than per-scan groups: few rows reach the
-- outer aggregate then, and one aggregate plans and starts faster than one
-- per scan (series, minutes, latency_percentiles and top_apis of one path).
-- Without a path filter each scan is still aggregated on its own:
-- thousands of APIs' rows would otherwise be sorted together for the outer
-- aggregate.  top_apis over a range joins the API summaries (calls_error)
-- only when a path flood left some in the range.
---------------------------------------------------------------------------
DROP FUNCTION @extschema@._api_source(text[], text, boolean, text[]);

-- The text of a query over the API tiers and the live counters, for
-- EXECUTE ... USING f, ha, d0, d1, hb, t (from _tier_plan), paths, method,
-- from_bucket, to_ts, and step as $11 when a key uses it; the same plan
-- is passed here, so that the scans of empty intervals are left out.  The
-- keys are expressions over a row "a" of a tier for bucket, method and
-- path, such as date_bin($11, a.bucket, ...) or NULL.  Columns: bucket,
-- method, path, calls, ok, client_errors, server_errors, latency_count,
-- latency_sum_ms, latency_max_ms, latency_hist (NULL unless hist), to be
-- summed (max for latency_max_ms, latency_merge for latency_hist) by the
-- keys: with a path filter or over the all-API sums they are the tiers'
-- rows; else each scan's groups by the keys.  Only the filters given appear
-- in the text, so each scan is planned with them (an index scan on (path,
-- bucket) for a few paths).  Run by EXECUTE, it is planned for the actual
-- values on every call: no generic plan.
CREATE FUNCTION @extschema@._api_source(paths text[], method text, hist boolean,
	keys text[], f timestamptz, ha timestamptz, d0 timestamptz, d1 timestamptz,
	hb timestamptz, t timestamptz)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	flt text := CASE WHEN paths IS NOT NULL THEN ' AND a.path OPERATOR(pg_catalog.=) ANY ($7)' ELSE '' END
	         || CASE WHEN method IS NOT NULL THEN ' AND a.method OPERATOR(pg_catalog.=) $8' ELSE '' END;
	-- all APIs and methods, one row per bucket: from the sums over all APIs
	totals boolean := paths IS NULL AND method IS NULL
	                  AND keys[2] = 'NULL::text' AND keys[3] = 'NULL::text';
	flat boolean := paths IS NOT NULL OR totals;
	cols text := format('SELECT %s AS bucket, %s AS method, %s AS path, ', keys[1], keys[2], keys[3])
	         || CASE WHEN flat
	                 THEN 'a.calls, a.ok, a.client_errors, a.server_errors, a.latency_count,'
	                      || ' a.latency_sum_ms, a.latency_max_ms, '
	                 ELSE 'sum(a.calls)::bigint AS calls, sum(a.ok)::bigint AS ok,'
	                      || ' sum(a.client_errors)::bigint AS client_errors,'
	                      || ' sum(a.server_errors)::bigint AS server_errors,'
	                      || ' sum(a.latency_count)::bigint AS latency_count,'
	                      || ' sum(a.latency_sum_ms)::float8 AS latency_sum_ms,'
	                      || ' max(a.latency_max_ms) AS latency_max_ms, ' END;
	hcol text := CASE WHEN NOT hist THEN 'NULL::bytea'
	                  WHEN flat THEN 'a.latency_hist'
	                  ELSE '@extschema@.latency_merge(a.latency_hist)' END;
	grp text := CASE WHEN flat THEN '' ELSE ' GROUP BY 1, 2, 3' END;
	tbl text;
	scans text[] := '{}';
	s record;
BEGIN
	-- the tiers' intervals: $3..$4 days, $2..$3 and $4..$5 hours, $1..$2
	-- and $5..$6 minutes
	FOR s IN SELECT * FROM (VALUES ('day', 3, d0 < d1), ('hour', 2, ha < d0), ('hour', 4, d1 < hb),
	                               ('minute', 1, f < ha), ('minute', 5, hb < t)) v(tier, lo, used)
	         WHERE v.used
	LOOP
		tbl := CASE WHEN totals THEN format('(SELECT t.*, NULL::text AS method, NULL::text AS path'
		                                    || ' FROM @extschema@.api_total_%s t)', s.tier)
		            ELSE format('@extschema@.api_%s', s.tier) END;
		scans := scans || format('%s%s AS latency_hist FROM %s a WHERE a.bucket >= $%s AND a.bucket < $%s%s%s',
		                         cols, hcol, tbl, s.lo, s.lo + 1, flt, grp);
	END LOOP;
	scans := scans || format('%sNULL::bytea AS latency_hist FROM (SELECT l.bucket, l.method, l.path, l.calls,'
	         || ' l.ok, l.client_errors, l.server_errors, l.latency_count, l.latency_sum_ms, l.latency_max_ms'
	         || ' FROM @extschema@._live_minutes($9, $10, false, $7, $8) l) a WHERE true%s%s', cols, flt, grp);
	IF hist THEN
		scans := scans || format('%s%s AS latency_hist FROM (SELECT l.bucket, l.method, l.path,'
		         || ' 0::bigint AS calls, 0::bigint AS ok, 0::bigint AS client_errors,'
		         || ' 0::bigint AS server_errors, 0::bigint AS latency_count, 0::float8 AS latency_sum_ms,'
		         || ' NULL::float8 AS latency_max_ms, l.latency_hist'
		         || ' FROM @extschema@._live_latency($9, $10, $7, $8) l) a WHERE true%s%s', cols, hcol, flt, grp);
	END IF;
	RETURN array_to_string(scans, ' UNION ALL ');
END
$$;

-- The range functions pass their plan to _api_source; their bodies are
-- those of 0.4 and 0.5 otherwise.

-- API rows per step over [date_trunc('minute', from_ts), to_ts), flushed and
-- unflushed merged into one row per (bucket, method, path) (per bucket, with
-- NULL method and path, when by_api is false), read from the
-- coarsest tier the step allows; bucket is date_bin(step, row's bucket,
-- 2000-01-01 UTC).  A range (or part of one) whose minutes or hours are
-- past their retention comes from the next coarser tier, at its resolution.
CREATE OR REPLACE FUNCTION @extschema@._minutes(from_ts timestamptz, to_ts timestamptz,
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
		                        CASE WHEN by_api THEN 'a.path' ELSE 'NULL::text' END],
		                        pl.f, pl.ha, pl.d0, pl.d1, pl.hb, pl.t))
		USING pl.f, pl.ha, pl.d0, pl.d1, pl.hb, pl.t, paths, meth, f0, to_ts, step;
	PERFORM @extschema@._read_end();
END
$$;

-- series() per step: the rows of _api_source summed per bucket (per API
-- with a path)
CREATE OR REPLACE FUNCTION @extschema@._series(p text, from_ts timestamptz, to_ts timestamptz,
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
		                              CASE WHEN by_api THEN 'a.path' ELSE 'NULL::text' END],
		                        pl.f, pl.ha, pl.d0, pl.d1, pl.hb, pl.t))
		USING pl.f, pl.ha, pl.d0, pl.d1, pl.hb, pl.t, CASE WHEN by_api THEN ARRAY[p] END,
		      meth, f0, to_ts, step;
	PERFORM @extschema@._read_end();
END
$$;

-- latency_percentiles(): histograms merged per API over the range
CREATE OR REPLACE FUNCTION @extschema@._latency_percentiles(p text, from_ts timestamptz,
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
		@extschema@._api_source(flt, meth, true, ARRAY['NULL::timestamptz', 'a.method', 'a.path'],
		                        pl.f, pl.ha, pl.d0, pl.d1, pl.hb, pl.t))
		USING pl.f, pl.ha, pl.d0, pl.d1, pl.hb, pl.t, flt, meth, f0, to_ts, ps;
	PERFORM @extschema@._read_end();
END
$$;

-- top_apis over a range: whole days, hours and the partial hours' minutes,
-- filters inside the scans; joined with the API summaries only where a
-- path flood left some in the range
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
	exact text;
BEGIN
	PERFORM @extschema@._check_n(n);
	IF from_ts IS NULL OR to_ts IS NULL THEN
		RAISE EXCEPTION 'from_ts and to_ts must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	pl := @extschema@._tier_plan(f0, to_ts, 2);
	PERFORM @extschema@._read_begin();
	exact := 'SELECT u.method, u.path, sum(u.calls) AS calls,'
		|| ' sum(u.client_errors + u.server_errors) AS errors, NULL::bigint AS ok,'
		|| ' sum(u.latency_sum_ms) AS ls, sum(u.latency_count) AS lc'
		|| ' FROM (' || @extschema@._api_source(paths, meth, false,
		                    ARRAY['NULL::timestamptz', 'a.method', 'a.path'],
		                    pl.f, pl.ha, pl.d0, pl.d1, pl.hb, pl.t)
		|| ') u GROUP BY u.method, u.path';
	-- without API summaries in the range (no path flood: _heavy_apis would
	-- return only its zero bound), the exact rows are the answer: no join
	-- with the summaries to plan.  The flush waits for _read_end(); a fold
	-- made by a backend after this check is left out, as by a read of the
	-- summaries at this instant (the exact and the summary scans of shared
	-- memory never read at one instant either).
	IF EXISTS (SELECT 1 FROM @extschema@.caller_heavy_minute h
	           WHERE h.grouped_by = 'api' AND h.bucket >= f0 AND h.bucket < to_ts)
	   OR EXISTS (SELECT 1 FROM @extschema@.heavy_minute_bounds b
	              WHERE b.grouped_by = 'api' AND b.bucket >= f0 AND b.bucket < to_ts
	                AND b.absent_bound > 0)
	   OR EXISTS (SELECT 1 FROM @extschema@._live_heavy(f0, to_ts, 'api') l
	              WHERE l.method IS NOT NULL OR l.calls_error > 0) THEN
		exact := @extschema@._with_heavy_apis(exact,
			'SELECT * FROM @extschema@._heavy_apis($9, $10) x WHERE x.method IS NULL'
			|| ' OR (($7 IS NULL OR x.path = ANY ($7)) AND ($8 IS NULL OR x.method = $8))');
	ELSE
		exact := format('WITH r AS (SELECT e.*, 0 AS calls_error FROM (%s) e)', exact);
	END IF;
	RETURN QUERY EXECUTE exact || $q$
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

REVOKE ALL ON FUNCTION @extschema@._api_source(text[], text, boolean, text[], timestamptz,
	timestamptz, timestamptz, timestamptz, timestamptz, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@._api_source(text[], text, boolean, text[], timestamptz,
	timestamptz, timestamptz, timestamptz, timestamptz, timestamptz) TO apicount_reader;
