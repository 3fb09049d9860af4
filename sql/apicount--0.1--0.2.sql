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
	OUT folded_calls bigint)
RETURNS record
AS 'MODULE_PATHNAME', 'apicount_stats'
LANGUAGE C VOLATILE PARALLEL RESTRICTED;

CREATE VIEW @extschema@.stats AS SELECT * FROM @extschema@._stats();

-- the "(other callers)" row is no caller: top_callers and the detection
-- functions leave it out (callers() shows it)
CREATE FUNCTION @extschema@._is_other_callers(client_ip inet, user_id text)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT client_ip IS NULL AND user_id IS NOT DISTINCT FROM '(other callers)' $$;

CREATE OR REPLACE FUNCTION @extschema@.top_callers(n integer DEFAULT 10, since interval DEFAULT '1 minute',
	path text DEFAULT NULL, by text DEFAULT 'ip')
RETURNS TABLE (client_ip inet, user_id text, calls bigint, errors bigint)
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
		SELECT lw.client_ip, lw.user_id, lw.calls, lw.errors
		FROM @extschema@._live_groups(since, false, want_ip, want_user, p, 1, true, false, false) lw
		ORDER BY 3 DESC, 1 NULLS LAST, 2 NULLS LAST
		LIMIT n;
	ELSE
		RETURN QUERY
		SELECT CASE WHEN want_ip THEN c.client_ip END AS ip,
		       CASE WHEN want_user THEN c.user_id END AS uid,
		       sum(c.calls)::bigint, sum(c.errors)::bigint
		FROM @extschema@._caller_minutes(date_trunc('minute', now() - since), now() + interval '1 microsecond') c
		WHERE (p IS NULL OR c.path = p)
		  AND NOT @extschema@._is_other_callers(c.client_ip, c.user_id)
		GROUP BY 1, 2
		HAVING sum(c.calls) > 0
		ORDER BY 3 DESC, 1 NULLS LAST, 2 NULLS LAST
		LIMIT n;
	END IF;
	PERFORM @extschema@._read_end();
END
$$;

CREATE OR REPLACE FUNCTION @extschema@._window_by(since interval, by text, min_calls bigint,
	OUT method text, OUT path text, OUT client_ip inet, OUT user_id text,
	OUT calls bigint, OUT ok bigint, OUT errors bigint)
RETURNS SETOF record
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	want_ip boolean := by IN ('ip', 'ip_user');
	want_user boolean := by IN ('user', 'ip_user');
BEGIN
	IF by = 'api' THEN
		RETURN QUERY
		SELECT a.method, a.path, NULL::inet, NULL::text, a.calls, a.ok, a.errors
		FROM @extschema@._api_window(since) a
		WHERE a.method <> '*' AND a.calls >= min_calls;
	ELSIF since <= interval '2 minutes' THEN
		RETURN QUERY
		SELECT lw.method, lw.path, lw.client_ip, lw.user_id, lw.calls, lw.ok, lw.errors
		FROM @extschema@._live_groups(since, true, want_ip, want_user, NULL,
		                              min_calls, true, true, true) lw;
	ELSE
		RETURN QUERY
		SELECT g.method, g.path, g.ip, g.uid,
		       sum(g.calls)::bigint, sum(g.ok)::bigint, sum(g.errors)::bigint
		FROM (SELECT cm.method, cm.path,
		             CASE WHEN want_ip THEN cm.client_ip END AS ip,
		             CASE WHEN want_user THEN cm.user_id END AS uid,
		             cm.calls, cm.ok, cm.errors
		      FROM @extschema@._caller_minutes(date_trunc('minute', now() - since),
		                                       now() + interval '1 microsecond') cm
		      WHERE cm.method <> '*'
		        AND NOT @extschema@._is_other_callers(cm.client_ip, cm.user_id)
		        AND (NOT want_ip OR cm.client_ip IS NOT NULL)
		        AND (NOT want_user OR cm.user_id IS NOT NULL)) g
		GROUP BY 1, 2, 3, 4
		HAVING sum(g.calls) >= min_calls;
	END IF;
END
$$;

-- privileges of the objects made here, as in apicount--0.1.sql
REVOKE ALL ON @extschema@.live, @extschema@.stats FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@._live_entries(), @extschema@._stats(),
	@extschema@._is_other_callers(inet, text) FROM PUBLIC;
GRANT SELECT ON @extschema@.live, @extschema@.stats TO apicount_reader;
GRANT EXECUTE ON FUNCTION @extschema@._live_entries(), @extschema@._stats(),
	@extschema@._is_other_callers(inet, text) TO apicount_reader;
