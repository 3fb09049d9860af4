/* apicount 0.3 -> 0.4 */
\echo Use "CREATE EXTENSION apicount" or "ALTER EXTENSION apicount UPDATE" to load this file. \quit

-- Caller groups per minute and API over [from_bucket, to_ts), flushed and
-- live: the caller rows (without "(other callers)") grouped by 'ip',
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
CREATE OR REPLACE FUNCTION @extschema@._caller_groups(from_bucket timestamptz, to_ts timestamptz,
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
		      UNION ALL
		      SELECT l.bucket, l.method, l.path, l.client_ip, l.user_id, l.calls,
		             l.calls_error, l.errors
		      FROM live l WHERE l.method IS NOT NULL) x
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
		('series', 'Calls, errors and latency of one API (or all) per step over a range, rollups plus counts not flushed yet'),
		('minutes', 'Per-minute rows of every API over a range (rollups plus counts not flushed yet), as api_minute'),
		('latency_percentiles', 'Latency percentiles of one API (or all) over a range, from the merged histograms'),
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
