/* apicount 0.5 -> 0.6: caller hour and day tiers (issue 18) */
\echo Use "CREATE EXTENSION apicount" or "ALTER EXTENSION apicount UPDATE" to load this file. \quit

---------------------------------------------------------------------------
-- Caller tiers.  caller_hour and caller_day hold caller_minute's rows summed
-- per UTC hour and day (folded_before: any of its minutes'; first_seen and
-- last_seen: the first and last of its minutes), written by the
-- same flush transactions as caller_minute (src/worker/flush_callers.c), so
-- the three always agree, late hits included.  Retention: the API tiers'
-- (apicount.retention_minute, _hour, _day).
--
-- A range over callers reads them as a range over APIs reads api_day,
-- api_hour and api_minute (_tier_plan), with one exception: an hour in
-- which callers of the grouping were folded with a summary (rows in
-- caller_heavy_minute or heavy_minute_bounds, or live ones) is read from
-- caller_minute, and so its day from caller_hour: the bound of a folded
-- group is per minute and per API (_caller_groups).  Every other hour's
-- caller rows only add up, in any tier.
---------------------------------------------------------------------------
-- a flush in progress commits first; later ones wait and then see the tiers
LOCK TABLE @extschema@.caller_minute IN SHARE ROW EXCLUSIVE MODE;
CREATE TABLE @extschema@.caller_hour (LIKE @extschema@.caller_minute INCLUDING DEFAULTS,
	first_seen timestamptz NOT NULL,
	last_seen timestamptz NOT NULL,
	CONSTRAINT caller_hour_key UNIQUE NULLS NOT DISTINCT (bucket, method, path, client_ip, user_id)
) WITH (fillfactor = 50);
CREATE TABLE @extschema@.caller_day (LIKE @extschema@.caller_minute INCLUDING DEFAULTS,
	first_seen timestamptz NOT NULL,
	last_seen timestamptz NOT NULL,
	CONSTRAINT caller_day_key UNIQUE NULLS NOT DISTINCT (bucket, method, path, client_ip, user_id)
) WITH (fillfactor = 50);
CREATE INDEX caller_hour_path_bucket ON @extschema@.caller_hour (path, bucket);
CREATE INDEX caller_day_path_bucket ON @extschema@.caller_day (path, bucket);
SELECT pg_catalog.pg_extension_config_dump('@extschema@.caller_hour', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.caller_day', '');
REVOKE ALL ON @extschema@.caller_hour, @extschema@.caller_day FROM PUBLIC;
GRANT SELECT ON @extschema@.caller_hour, @extschema@.caller_day TO apicount_reader;

-- the rebuilds of both families (caller tables: keys and sums of caller_minute)
CREATE OR REPLACE FUNCTION @extschema@._rebuild_tiers(sources text[], targets text[], units text[])
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	n bigint := 0;
	k bigint;
	keys text;
	sums text;
BEGIN
	EXECUTE 'LOCK TABLE ' || (SELECT string_agg(format('@extschema@.%I', t), ', ' ORDER BY o)
	                          FROM unnest(sources || targets) WITH ORDINALITY u(t, o))
	        || ' IN SHARE ROW EXCLUSIVE MODE';
	FOR i IN 1 .. cardinality(targets) LOOP
		IF targets[i] LIKE 'caller\_%' THEN
			keys := ', method, path, client_ip, user_id';
			sums := 'sum(calls), sum(ok), sum(client_errors), sum(server_errors), bool_or(folded_before), '
			        || CASE WHEN sources[i] = 'caller_minute' THEN 'min(bucket), max(bucket)'
			                ELSE 'min(first_seen), max(last_seen)' END;
		ELSE
			keys := CASE WHEN targets[i] LIKE 'api\_total\_%' THEN '' ELSE ', method, path' END;
			sums := 'sum(calls), sum(ok), sum(client_errors), sum(server_errors), sum(latency_sum_ms),'
			        || ' max(latency_max_ms), sum(latency_count), @extschema@.latency_merge(latency_hist)';
		END IF;
		EXECUTE format('DELETE FROM @extschema@.%I', targets[i]);
		EXECUTE format('INSERT INTO @extschema@.%I SELECT %s%s, %s FROM @extschema@.%I GROUP BY 1%s',
		               targets[i],
		               CASE WHEN units[i] IS NULL THEN 'bucket'
		                    ELSE format('date_trunc(%L, bucket, ''UTC'')', units[i]) END,
		               keys, sums, sources[i], keys);
		GET DIAGNOSTICS k = ROW_COUNT;
		n := n + k;
	END LOOP;
	RETURN n;
END
$$;

-- Recompute caller_hour from caller_minute and caller_day from caller_hour
-- (after loading or repairing caller_minute by hand; the worker keeps the
-- tiers in step on its own).  Returns the rows written.
CREATE FUNCTION @extschema@.rebuild_caller_tiers()
RETURNS bigint
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT @extschema@._rebuild_tiers('{caller_minute,caller_hour}', '{caller_hour,caller_day}',
	                                  '{hour,day}')
$$;
-- an update from 0.5 starts them from the rows already written
SELECT @extschema@.rebuild_caller_tiers();

-- The intervals of [from_bucket, to_ts) a query over callers of grouping
-- `by` reads from each caller tier: days [dlo[i], dhi[i]) from caller_day,
-- hours [hlo[i], hhi[i]) from caller_hour, minutes [mlo[i], mhi[i]) from
-- caller_minute.  The tiers of _tier_plan(from_bucket, to_ts, 2), except
-- that an hour with folded callers of `by` summarized (caller_heavy_minute,
-- heavy_minute_bounds, _live_heavy) is read from minutes and its day from
-- hours; summarized says whether the range has any such minute.  With by
-- NULL: minutes only, over [from_bucket, to_ts).
CREATE FUNCTION @extschema@._caller_plan(from_bucket timestamptz, to_ts timestamptz, by text,
	OUT dlo timestamptz[], OUT dhi timestamptz[], OUT hlo timestamptz[], OUT hhi timestamptz[],
	OUT mlo timestamptz[], OUT mhi timestamptz[], OUT summarized boolean)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	pl record;
	dirty timestamptz[];	-- hours with summarized folds, within [pl.ha, pl.hb)
	minute_from timestamptz;	-- the first whole hour the minute tier still holds
BEGIN
	dlo := '{}'; dhi := '{}'; hlo := '{}'; hhi := '{}'; mlo := '{}'; mhi := '{}';
	IF by IS NULL THEN
		mlo := ARRAY[from_bucket]; mhi := ARRAY[to_ts];
		summarized := NULL;
		RETURN;
	END IF;
	pl := @extschema@._tier_plan(from_bucket, to_ts, 2);
	SELECT coalesce(array_agg(DISTINCT date_trunc('hour', x.bucket, 'UTC')), '{}') INTO dirty
	FROM (SELECT b.bucket FROM @extschema@.heavy_minute_bounds b
	      WHERE b.grouped_by = by AND b.bucket >= pl.f AND b.bucket < pl.t
	      UNION ALL
	      SELECT h.bucket FROM @extschema@.caller_heavy_minute h
	      WHERE h.grouped_by = by AND h.bucket >= pl.f AND h.bucket < pl.t
	      UNION ALL
	      SELECT l.bucket FROM @extschema@._live_heavy(pl.f, pl.t, by) l) x;
	summarized := cardinality(dirty) > 0;
	-- only hours whose minutes are all still kept can be read from minutes
	minute_from := @extschema@._ceil_to(now() - make_interval(secs => (SELECT r.minute_secs
	                                    FROM @extschema@._retention_secs() r)), 'hour');
	dirty := ARRAY(SELECT d FROM unnest(dirty) d
	               WHERE d >= pl.ha AND d < pl.hb AND d >= minute_from ORDER BY 1);
	IF cardinality(dirty) = 0 THEN
		IF pl.d0 < pl.d1 THEN
			dlo := ARRAY[pl.d0]; dhi := ARRAY[pl.d1];
		END IF;
		IF pl.ha < pl.d0 THEN
			hlo := hlo || pl.ha; hhi := hhi || pl.d0;
		END IF;
		IF pl.d1 < pl.hb THEN
			hlo := hlo || pl.d1; hhi := hhi || pl.hb;
		END IF;
	ELSE
		-- each day of [d0, d1) from caller_day unless it has a dirty hour;
		-- each other hour of [ha, hb) from caller_hour unless dirty
		SELECT coalesce(array_agg(d ORDER BY d), '{}'),
		       coalesce(array_agg(d + interval '1 day' ORDER BY d), '{}')
		INTO dlo, dhi
		FROM generate_series(pl.d0, pl.d1 - interval '1 day', interval '1 day') d
		WHERE pl.d0 < pl.d1
		  AND NOT EXISTS (SELECT 1 FROM unnest(dirty) x
		                  WHERE x >= d AND x < d + interval '1 day');
		SELECT coalesce(array_agg(h ORDER BY h), '{}'),
		       coalesce(array_agg(h + interval '1 hour' ORDER BY h), '{}')
		INTO hlo, hhi
		FROM generate_series(pl.ha, pl.hb - interval '1 hour', interval '1 hour') h
		WHERE h <> ALL (dirty)
		  AND NOT EXISTS (SELECT 1 FROM unnest(dlo, dhi) r(lo, hi) WHERE h >= r.lo AND h < r.hi);
		mlo := ARRAY(SELECT x FROM unnest(dirty) x);
		mhi := ARRAY(SELECT x + interval '1 hour' FROM unnest(dirty) x);
	END IF;
	IF pl.f < pl.ha THEN
		mlo := mlo || pl.f; mhi := mhi || pl.ha;
	END IF;
	IF pl.hb < pl.t THEN
		mlo := mlo || pl.hb; mhi := mhi || pl.t;
	END IF;
END
$$;

-- The text of a query over the caller tiers and the live counters, for
-- EXECUTE ... USING the six arrays of _caller_plan, paths, method,
-- from_bucket, to_ts: the rows of caller_minute's shape (bucket, method,
-- path, client_ip, user_id, calls, ok, errors, folded_before, first_seen,
-- last_seen), a tier's bucket in each; a minute's first and last minute
-- are its bucket.  One scan per interval (nd days, nh hours, nm minutes),
-- its bounds array elements ($1[i]): the values are known when the query
-- is planned, so each scan is an index range scan.  The filters given
-- appear in the text, so each scan is planned with them (an index scan on
-- (path, bucket) for a few paths).
CREATE FUNCTION @extschema@._caller_source(paths text[], meth text, nd integer, nh integer,
	nm integer)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT string_agg(format('SELECT c.bucket, c.method, c.path, c.client_ip, c.user_id, c.calls,'
	                         || ' c.ok, c.client_errors + c.server_errors AS errors, c.folded_before, %s'
	                         || ' FROM @extschema@.%s c WHERE c.bucket >= $%s[%s] AND c.bucket < $%s[%s]%s',
	                         t.seen, t.tbl, t.lo, i, t.lo + 1, i, flt.f), ' UNION ALL ')
	       || format(' UNION ALL SELECT c.bucket, c.method, c.path, c.client_ip, c.user_id, c.calls,'
	                 || ' c.ok, c.client_errors + c.server_errors, c.folded_before, c.bucket, c.bucket'
	                 || ' FROM @extschema@._live_minutes($9, $10, true, $7, $8) c WHERE c.calls > 0%s', min(flt.f))
	FROM (SELECT CASE WHEN paths IS NOT NULL THEN ' AND c.path OPERATOR(pg_catalog.=) ANY ($7)' ELSE '' END
	             || CASE WHEN meth IS NOT NULL THEN ' AND c.method OPERATOR(pg_catalog.=) $8' ELSE '' END AS f) flt,
	     (VALUES ('caller_day', 1, nd, 'c.first_seen, c.last_seen'),
	             ('caller_hour', 3, nh, 'c.first_seen, c.last_seen'),
	             ('caller_minute', 5, nm, 'c.bucket AS first_seen, c.bucket AS last_seen')) t(tbl, lo, k, seen),
	     generate_series(0, t.k) i
	WHERE i >= 1 OR (t.tbl = 'caller_minute' AND nd + nh + nm = 0)
$$;

-- caller rows of the given paths and method (NULL: any) over [from_bucket,
-- to_ts), flushed + unflushed, read from the caller tiers as _caller_plan
-- says for grouping by (NULL: caller_minute only, as _caller_minutes)
CREATE FUNCTION @extschema@._caller_rows(from_bucket timestamptz, to_ts timestamptz,
	paths text[], meth text, by text,
	OUT bucket timestamptz, OUT method text, OUT path text, OUT client_ip inet,
	OUT user_id text, OUT calls bigint, OUT ok bigint, OUT errors bigint,
	OUT folded_before boolean, OUT first_seen timestamptz, OUT last_seen timestamptz)
RETURNS SETOF record
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	pl record;
BEGIN
	pl := @extschema@._caller_plan(from_bucket, to_ts, by);
	RETURN QUERY EXECUTE @extschema@._caller_source(paths, meth, cardinality(pl.dlo),
	                                                 cardinality(pl.hlo), cardinality(pl.mlo))
		USING pl.dlo, pl.dhi, pl.hlo, pl.hhi, pl.mlo, pl.mhi, paths, meth, from_bucket, to_ts;
END
$$;

-- _caller_groups reads the tiers (tiered) or minutes only; see 0.4 for what
-- it returns, and now each row's first and last minute (first_seen,
-- last_seen; NULL on the rows with a NULL bucket)
DROP FUNCTION @extschema@._caller_groups(timestamptz, timestamptz, text, text[], text);
CREATE FUNCTION @extschema@._caller_groups(from_bucket timestamptz, to_ts timestamptz,
	by text, paths text[], meth text, tiered boolean DEFAULT true,
	OUT bucket timestamptz, OUT method text, OUT path text, OUT client_ip inet,
	OUT user_id text, OUT calls bigint, OUT ok bigint, OUT errors bigint,
	OUT calls_error bigint, OUT first_seen timestamptz, OUT last_seen timestamptz)
RETURNS SETOF record
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	WITH cm AS MATERIALIZED (
		-- _is_other_callers(), written out: a call per row costs more than the rest
		SELECT c.*, (c.client_ip IS NULL AND c.user_id IS NOT DISTINCT FROM '(other callers)') AS other
		FROM @extschema@._caller_rows(from_bucket, to_ts, paths, meth,
		                              CASE WHEN tiered THEN by END) c
	), full_rows AS (
		SELECT c.bucket, c.method, c.path,
		       CASE WHEN by IN ('ip', 'ip_user') THEN c.client_ip
		            WHEN by = 'net' THEN @extschema@._net(c.client_ip) END AS ip,
		       CASE WHEN by IN ('user', 'ip_user') THEN c.user_id END AS uid,
		       sum(c.calls) AS calls, sum(c.ok) AS ok, sum(c.errors) AS errors,
		       bool_or(c.folded_before) OR by <> 'ip_user' AS may_have_folded,
		       min(c.first_seen) AS first_seen, max(c.last_seen) AS last_seen
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
		-- (an hour or day row has no summary: _caller_plan reads the hours
		-- with summaries from caller_minute)
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
		       coalesce(f.first_seen, h.bucket) AS first_seen,
		       coalesce(f.last_seen, h.bucket) AS last_seen,
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
	       g.ok::bigint, g.errors::bigint, (g.calls_error + g.missing)::bigint,
	       g.first_seen, g.last_seen
	FROM grouped g
	UNION ALL
	-- each group's minutes without a row: the sum of their bounds
	SELECT NULL::timestamptz, r.method, r.path, r.ip, r.uid,
	       (t.total - r.present)::bigint, 0::bigint, 0::bigint, (t.total - r.present)::bigint,
	       NULL::timestamptz, NULL::timestamptz
	FROM (SELECT g.method, g.path, g.ip, g.uid, sum(g.minute_bound) AS present
	      FROM grouped g GROUP BY 1, 2, 3, 4) r
	JOIN (SELECT ab.method, ab.path, sum(ab.absent_bound) AS total
	      FROM api_bounds ab GROUP BY 1, 2) t
	     ON t.method = r.method AND t.path = r.path
	WHERE t.total > r.present
$$;

-- the same over every path and method (top_callers' windows, _window_by)
DROP FUNCTION @extschema@._caller_groups(timestamptz, timestamptz, text);
CREATE FUNCTION @extschema@._caller_groups(from_bucket timestamptz, to_ts timestamptz,
	by text,
	OUT bucket timestamptz, OUT method text, OUT path text, OUT client_ip inet,
	OUT user_id text, OUT calls bigint, OUT ok bigint, OUT errors bigint,
	OUT calls_error bigint, OUT first_seen timestamptz, OUT last_seen timestamptz)
RETURNS SETOF record
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM @extschema@._caller_groups(from_bucket, to_ts, by, NULL, NULL) $$;

-- top callers over a range, from the caller tiers (_caller_plan), with the
-- path filter (path and paths both filter) and method filter inside the scans
CREATE OR REPLACE FUNCTION @extschema@.top_callers_range(n integer, from_ts timestamptz, to_ts timestamptz,
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
	pl record;
BEGIN
	PERFORM @extschema@._check_n(n);
	PERFORM @extschema@._check_by(by);
	IF from_ts IS NULL OR to_ts IS NULL THEN
		RAISE EXCEPTION 'from_ts and to_ts must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	f0 := date_trunc('minute', from_ts);
	PERFORM @extschema@._read_begin();
	pl := @extschema@._caller_plan(f0, to_ts, by);
	-- No summary of folded callers in the range (none is written for a minute
	-- without folded calls): then _caller_groups adds nothing to the caller
	-- rows, and one aggregate over them, filtered in the scans, is the answer.
	IF NOT pl.summarized THEN
		RETURN QUERY EXECUTE format(
			'SELECT %s, %s, sum(c.calls)::bigint, sum(c.errors)::bigint, 0::bigint'
			|| ' FROM (%s) c'
			|| ' WHERE NOT (c.client_ip IS NULL AND c.user_id IS NOT DISTINCT FROM ''(other callers)'')'
			|| '   AND c.method <> ''*'''
			|| ' GROUP BY 1, 2 HAVING sum(c.calls) > 0'
			|| ' ORDER BY 3 DESC, 1 NULLS LAST, 2 NULLS LAST LIMIT $11',
			CASE WHEN by IN ('ip', 'ip_user') THEN 'c.client_ip'
			     WHEN by = 'net' THEN '@extschema@._net(c.client_ip)' ELSE 'NULL::inet' END,
			CASE WHEN by IN ('user', 'ip_user') THEN 'c.user_id' ELSE 'NULL::text' END,
			@extschema@._caller_source(flt, top_callers_range.method, cardinality(pl.dlo),
			                           cardinality(pl.hlo), cardinality(pl.mlo)))
			USING pl.dlo, pl.dhi, pl.hlo, pl.hhi, pl.mlo, pl.mhi, flt, top_callers_range.method,
			      f0, to_ts, n;
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

-- callers() reads the caller tiers too: their rows keep their first and
-- last minute (first_seen, last_seen)
CREATE OR REPLACE FUNCTION @extschema@.callers(path text, from_ts timestamptz, to_ts timestamptz,
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
	f0 timestamptz := date_trunc('minute', from_ts);
	pl record;
BEGIN
	IF p IS NULL THEN
		RAISE EXCEPTION 'path must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	PERFORM @extschema@._read_begin();
	pl := @extschema@._caller_plan(f0, to_ts, 'ip_user');
	-- no summary of folded callers in the range: the rows only add up (as
	-- in top_callers_range), "(other callers)" among them
	IF NOT pl.summarized THEN
		RETURN QUERY EXECUTE
			'SELECT c.client_ip, c.user_id, min(c.first_seen), max(c.last_seen),'
			|| ' sum(c.calls)::bigint, sum(c.errors)::bigint, 0::bigint FROM ('
			|| @extschema@._caller_source(ARRAY[p], m, cardinality(pl.dlo), cardinality(pl.hlo),
			                              cardinality(pl.mlo))
			|| ') c WHERE c.calls > 0 GROUP BY 1, 2 ORDER BY 5 DESC, 1 NULLS LAST, 2 NULLS LAST'
			USING pl.dlo, pl.dhi, pl.hlo, pl.hhi, pl.mlo, pl.mhi, ARRAY[p], m, f0, to_ts;
		PERFORM @extschema@._read_end();
		RETURN;
	END IF;
	RETURN QUERY
	SELECT u.client_ip, u.user_id, min(u.first_seen), max(u.last_seen),
	       sum(u.calls)::bigint, sum(u.errors)::bigint, sum(u.calls_error)::bigint
	FROM (
		SELECT g.first_seen, g.last_seen, g.client_ip, g.user_id, g.calls, g.errors, g.calls_error
		FROM @extschema@._caller_groups(date_trunc('minute', from_ts), to_ts, 'ip_user',
		                                ARRAY[p], m) g
		WHERE g.calls > 0
		UNION ALL
		SELECT c.first_seen, c.last_seen, c.client_ip, c.user_id, c.calls, c.errors, 0
		FROM @extschema@._caller_rows(date_trunc('minute', from_ts), to_ts, ARRAY[p], m, 'ip_user') c
		WHERE c.calls > 0 AND c.client_ip IS NULL AND c.user_id IS NOT DISTINCT FROM '(other callers)'
	) u
	GROUP BY u.client_ip, u.user_id
	ORDER BY 5 DESC, 1 NULLS LAST, 2 NULLS LAST;
	PERFORM @extschema@._read_end();
END
$$;

---------------------------------------------------------------------------
-- privileges of the functions made here (replaced ones keep theirs)
---------------------------------------------------------------------------
DO $grants$
DECLARE
	f text;
BEGIN
	FOREACH f IN ARRAY ARRAY[
		'@extschema@._caller_plan(timestamptz, timestamptz, text)',
		'@extschema@._caller_source(text[], text, integer, integer, integer)',
		'@extschema@._caller_rows(timestamptz, timestamptz, text[], text, text)',
		'@extschema@._caller_groups(timestamptz, timestamptz, text, text[], text, boolean)',
		'@extschema@._caller_groups(timestamptz, timestamptz, text)']
	LOOP
		EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
		EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO apicount_reader', f);
	END LOOP;
	REVOKE ALL ON FUNCTION @extschema@.rebuild_caller_tiers() FROM PUBLIC;
END
$grants$;

COMMENT ON TABLE @extschema@.caller_hour IS
'Per UTC hour and caller: caller_minute''s rows summed, with their first and last minute, written by the same flushes (retention: apicount.retention_hour)';
COMMENT ON TABLE @extschema@.caller_day IS
'Per UTC day and caller: caller_minute''s rows summed, with their first and last minute, written by the same flushes (retention: apicount.retention_day)';
COMMENT ON FUNCTION @extschema@.rebuild_caller_tiers() IS
'Recompute caller_hour from caller_minute and caller_day from caller_hour (after loading or repairing rollups by hand); returns the rows written';
COMMENT ON FUNCTION @extschema@._caller_plan(timestamptz, timestamptz, text) IS
'The intervals of a range each caller tier answers; hours with summarized folds of the grouping come from minutes';
COMMENT ON FUNCTION @extschema@._caller_source(text[], text, integer, integer, integer) IS
'The query text over the caller tiers and the live counters, with the filters in the scans';
COMMENT ON FUNCTION @extschema@._caller_rows(timestamptz, timestamptz, text[], text, text) IS
'Caller rows of a range from the caller tiers (or minutes only), flushed and live';
COMMENT ON FUNCTION @extschema@._caller_groups(timestamptz, timestamptz, text) IS
'Caller groups per bucket and API over a range, every path and method (the windows of top_callers and the rules)';
COMMENT ON FUNCTION @extschema@._caller_groups(timestamptz, timestamptz, text, text[], text, boolean) IS
'Caller groups per bucket and API over a range with the bound of the folded calls, from the caller tiers or minutes only';
