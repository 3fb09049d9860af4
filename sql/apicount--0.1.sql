-- apicount 0.1: schema, ingest surface, rollup tables, query functions.
-- C owns ingest, shared memory and the worker; SQL owns the tables and the
-- queries that combine flushed rollups with unflushed live counts.

\echo Use "CREATE EXTENSION apicount" to load this file. \quit

-- Refuse to install where it cannot work: the library must be preloaded
-- (checked in C: apicount.* settings in postgresql.conf exist as
-- placeholders even when it is not) ...
CREATE FUNCTION @extschema@._require_preload() RETURNS void
AS 'MODULE_PATHNAME', 'apicount_require_preload_sql' LANGUAGE C;
SELECT @extschema@._require_preload();

-- ... and the worker must serve this database.
DO $check$
BEGIN
	IF pg_catalog.current_database() OPERATOR(pg_catalog.<>) pg_catalog.current_setting('apicount.database') THEN
		RAISE EXCEPTION 'apicount can only be created in database "%"', pg_catalog.current_setting('apicount.database')
			USING ERRCODE = 'object_not_in_prerequisite_state',
			      DETAIL = pg_catalog.format('The apicount background worker flushes into the database named by apicount.database, not into "%s".', pg_catalog.current_database()),
			      HINT = 'Create the extension in that database, or set apicount.database and restart the server.';
	END IF;
END
$check$;

DO $roles$
BEGIN
	IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'apicount_writer') THEN
		CREATE ROLE apicount_writer NOLOGIN;
	END IF;
	IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'apicount_reader') THEN
		CREATE ROLE apicount_reader NOLOGIN;
	END IF;
END
$roles$;

REVOKE ALL ON SCHEMA @extschema@ FROM PUBLIC;
GRANT USAGE ON SCHEMA @extschema@ TO apicount_writer, apicount_reader;

---------------------------------------------------------------------------
-- Rollup tables (written by the worker)
---------------------------------------------------------------------------
CREATE TABLE @extschema@.api_minute (
	bucket          timestamptz NOT NULL,
	method          text NOT NULL,
	path            text NOT NULL,
	calls           bigint NOT NULL DEFAULT 0,
	ok              bigint NOT NULL DEFAULT 0,
	client_errors   bigint NOT NULL DEFAULT 0,
	server_errors   bigint NOT NULL DEFAULT 0,
	latency_sum_ms  double precision NOT NULL DEFAULT 0,
	latency_max_ms  double precision,
	latency_count   bigint NOT NULL DEFAULT 0,
	-- log-bucketed latency histogram (see latency_merge, latency_percentile)
	latency_hist    bytea,
	PRIMARY KEY (bucket, method, path)
) WITH (fillfactor = 50);	-- see caller_minute
CREATE INDEX api_minute_path_bucket ON @extschema@.api_minute (path, bucket);

-- the same per hour (UTC), written by the same flushes; long ranges read it
CREATE TABLE @extschema@.api_hour (LIKE @extschema@.api_minute INCLUDING DEFAULTS,
	PRIMARY KEY (bucket, method, path)) WITH (fillfactor = 50);

CREATE TABLE @extschema@.caller_minute (
	bucket          timestamptz NOT NULL,
	method          text NOT NULL,
	path            text NOT NULL,
	client_ip       inet,
	user_id         text,
	calls           bigint NOT NULL DEFAULT 0,
	ok              bigint NOT NULL DEFAULT 0,
	client_errors   bigint NOT NULL DEFAULT 0,
	server_errors   bigint NOT NULL DEFAULT 0,
	CONSTRAINT caller_minute_key UNIQUE NULLS NOT DISTINCT (bucket, method, path, client_ip, user_id)
) WITH (fillfactor = 50);
-- Fill factor 50: every flush updates the rows of the current minute again,
-- all rows of a page in one go, and a page with room for a second version
-- of each row takes those updates as HOT updates (no index entries, dead
-- versions pruned in place).  Measured with 70, 100,000 rows written and
-- updated 5 times in one minute: twice the flush time, and a table of 31 MB
-- against 20 MB.
CREATE INDEX caller_minute_path_bucket ON @extschema@.caller_minute (path, bucket);

-- rollups are data: keep them in pg_dump output
SELECT pg_catalog.pg_extension_config_dump('@extschema@.api_minute', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.api_hour', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.caller_minute', '');

---------------------------------------------------------------------------
-- Ingest
---------------------------------------------------------------------------
-- apicount.requests counts the rows inserted into it and stores nothing: its
-- table access method (src/requests_am.c) hands each row to the ingest code,
-- one call per INSERT row and one per COPY batch; scans return no rows
CREATE FUNCTION @extschema@._requests_am_handler(internal)
RETURNS table_am_handler
AS 'MODULE_PATHNAME', 'apicount_requests_am_handler'
LANGUAGE C;

CREATE ACCESS METHOD apicount_requests TYPE TABLE HANDLER @extschema@._requests_am_handler;
COMMENT ON ACCESS METHOD apicount_requests IS 'apicount: rows are counted in shared memory, not stored';

CREATE TABLE @extschema@.requests (
	ts          timestamptz DEFAULT pg_catalog.statement_timestamp(),
	method      text DEFAULT 'GET',
	path        text,
	client_ip   inet,
	user_id     text,
	status      integer,
	latency_ms  double precision
) USING apicount_requests;

CREATE FUNCTION @extschema@.hit(
	path text,
	method text DEFAULT 'GET',
	client_ip inet DEFAULT NULL,
	user_id text DEFAULT NULL,
	status integer DEFAULT NULL,
	latency_ms double precision DEFAULT NULL,
	ts timestamptz DEFAULT pg_catalog.statement_timestamp())
RETURNS void
AS 'MODULE_PATHNAME', 'apicount_hit'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

CREATE FUNCTION @extschema@.normalize_path(path text)
RETURNS text
AS 'MODULE_PATHNAME', 'apicount_normalize_path_sql'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

---------------------------------------------------------------------------
-- Shared memory, worker, statistics
---------------------------------------------------------------------------
CREATE FUNCTION @extschema@._live_entries(
	OUT bucket timestamptz, OUT method text, OUT path text,
	OUT client_ip inet, OUT user_id text, OUT tracked boolean,
	OUT calls bigint, OUT unflushed bigint, OUT unflushed_ok bigint,
	OUT unflushed_client_errors bigint, OUT unflushed_server_errors bigint,
	OUT unflushed_latency_count bigint, OUT unflushed_latency_sum_ms double precision,
	OUT unflushed_latency_max_ms double precision)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'apicount_live_entries'
LANGUAGE C VOLATILE PARALLEL RESTRICTED;

CREATE FUNCTION @extschema@._live_groups(since interval, by_api boolean,
	by_ip boolean, by_user boolean, path text, min_calls bigint,
	tracked_only boolean, named_callers boolean, with_ok boolean,
	OUT method text, OUT path text, OUT client_ip inet, OUT user_id text,
	OUT calls bigint, OUT ok bigint, OUT errors bigint,
	OUT unflushed_latency_count bigint, OUT unflushed_latency_sum_ms double precision)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'apicount_live_groups'
LANGUAGE C VOLATILE PARALLEL RESTRICTED;

CREATE FUNCTION @extschema@._live_minutes(from_bucket timestamptz, to_ts timestamptz,
	by_caller boolean,
	OUT bucket timestamptz, OUT method text, OUT path text,
	OUT client_ip inet, OUT user_id text,
	OUT calls bigint, OUT ok bigint, OUT client_errors bigint,
	OUT server_errors bigint, OUT latency_count bigint,
	OUT latency_sum_ms double precision, OUT latency_max_ms double precision)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'apicount_live_minutes'
LANGUAGE C VOLATILE STRICT PARALLEL RESTRICTED;

CREATE FUNCTION @extschema@._live_latency(from_bucket timestamptz, to_ts timestamptz,
	OUT bucket timestamptz, OUT method text, OUT path text, OUT latency_hist bytea)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'apicount_live_latency'
LANGUAGE C VOLATILE STRICT PARALLEL RESTRICTED;

---------------------------------------------------------------------------
-- Latency histograms (bytea, format in src/latency_codec.h): buckets of
-- 3 % width, each reported within 1.48 % of the latencies it holds
---------------------------------------------------------------------------
CREATE FUNCTION @extschema@._latency_hist_add(a bytea, b bytea)
RETURNS bytea
AS 'MODULE_PATHNAME', 'apicount_latency_hist_add'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

CREATE FUNCTION @extschema@._latency_merge_accum(internal, bytea)
RETURNS internal
AS 'MODULE_PATHNAME', 'apicount_latency_merge_accum'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

CREATE FUNCTION @extschema@._latency_merge_final(internal)
RETURNS bytea
AS 'MODULE_PATHNAME', 'apicount_latency_merge_final'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

-- the merge of latency histograms (NULLs ignored; NULL if none)
CREATE AGGREGATE @extschema@.latency_merge(bytea) (
	SFUNC = @extschema@._latency_merge_accum,
	STYPE = internal,
	FINALFUNC = @extschema@._latency_merge_final
);

-- the percentile (0..1) of a histogram in milliseconds, percentile_disc's rank rule
CREATE FUNCTION @extschema@.latency_percentile(hist bytea, percentile double precision)
RETURNS double precision
AS 'MODULE_PATHNAME', 'apicount_latency_percentile'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

-- the number of latencies in a histogram
CREATE FUNCTION @extschema@.latency_count(hist bytea)
RETURNS bigint
AS 'MODULE_PATHNAME', 'apicount_latency_count'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION @extschema@._read_begin() RETURNS void
AS 'MODULE_PATHNAME', 'apicount_read_begin' LANGUAGE C VOLATILE PARALLEL UNSAFE;
CREATE FUNCTION @extschema@._read_end() RETURNS void
AS 'MODULE_PATHNAME', 'apicount_read_end' LANGUAGE C VOLATILE PARALLEL UNSAFE;

CREATE FUNCTION @extschema@._stats(
	OUT capacity bigint, OUT entries bigint, OUT hits bigint,
	OUT overflow_hits bigint, OUT truncated bigint, OUT flushes bigint,
	OUT flush_failures bigint, OUT last_flush_at timestamptz,
	OUT last_flush_ms double precision, OUT worker_pid integer,
	OUT shared_memory_bytes bigint, OUT latency_pages bigint,
	OUT latency_pages_capacity bigint, OUT latency_unbinned bigint,
	OUT caller_rows_inserted bigint, OUT caller_rows_updated bigint,
	OUT caller_rows_upserted bigint, OUT strings bigint,
	OUT strings_capacity bigint)
RETURNS record
AS 'MODULE_PATHNAME', 'apicount_stats'
LANGUAGE C VOLATILE PARALLEL RESTRICTED;

CREATE VIEW @extschema@.stats AS SELECT * FROM @extschema@._stats();

CREATE VIEW @extschema@.live AS
SELECT bucket, method, path, client_ip, user_id, calls, unflushed
FROM @extschema@._live_entries();

CREATE FUNCTION @extschema@.flush()
RETURNS bigint
AS 'MODULE_PATHNAME', 'apicount_flush'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

-- start from empty counters: a dropped earlier installation may have left
-- live counts in shared memory (see worker_discard_stale in src/worker.c)
CREATE FUNCTION @extschema@._discard_stale()
RETURNS void
AS 'MODULE_PATHNAME', 'apicount_discard_stale'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
SELECT @extschema@._discard_stale();

---------------------------------------------------------------------------
-- Query functions.  Each brackets its read with _read_begin/_read_end so
-- that a flush is seen either in the rollups or in shared memory, never
-- both and never neither (see src/readlock.h).
---------------------------------------------------------------------------

-- API-level minute rows, flushed + unflushed, over [from_bucket, to_ts)
CREATE FUNCTION @extschema@._api_minutes(from_bucket timestamptz, to_ts timestamptz,
	OUT bucket timestamptz, OUT method text, OUT path text, OUT calls bigint,
	OUT ok bigint, OUT errors bigint, OUT latency_sum_ms double precision,
	OUT latency_count bigint)
RETURNS SETOF record
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT a.bucket, a.method, a.path, a.calls, a.ok,
	       a.client_errors + a.server_errors, a.latency_sum_ms, a.latency_count
	FROM @extschema@.api_minute a
	WHERE a.bucket >= from_bucket AND a.bucket < to_ts
	UNION ALL
	SELECT l.bucket, l.method, l.path, l.calls, l.ok,
	       l.client_errors + l.server_errors, l.latency_sum_ms, l.latency_count
	FROM @extschema@._live_minutes(from_bucket, to_ts, false) l
$$;

-- the whole UTC hours [h0, h1) inside [from_bucket, to_ts); h0 = h1 = to_ts
-- when there is none (the range is then read from minutes only)
CREATE FUNCTION @extschema@._whole_hours(from_bucket timestamptz, to_ts timestamptz,
	OUT h0 timestamptz, OUT h1 timestamptz)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT CASE WHEN a < b THEN a ELSE to_ts END, CASE WHEN a < b THEN b ELSE to_ts END
	FROM (SELECT CASE WHEN date_trunc('hour', from_bucket, 'UTC') < from_bucket
	                  THEN date_trunc('hour', from_bucket, 'UTC') + interval '1 hour'
	                  ELSE date_trunc('hour', from_bucket, 'UTC') END AS a,
	             date_trunc('hour', to_ts, 'UTC') AS b) x
$$;

-- API-level rows over [from_bucket, to_ts), flushed + unflushed, reading
-- whole UTC hours from api_hour and only the partial hours at the edges from
-- api_minute (bucket is the hour's start for hourly rows)
CREATE FUNCTION @extschema@._api_rows(from_bucket timestamptz, to_ts timestamptz,
	OUT bucket timestamptz, OUT method text, OUT path text, OUT calls bigint,
	OUT ok bigint, OUT errors bigint, OUT latency_sum_ms double precision,
	OUT latency_count bigint)
RETURNS SETOF record
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	h0 timestamptz;
	h1 timestamptz;
BEGIN
	SELECT w.h0, w.h1 INTO h0, h1 FROM @extschema@._whole_hours(from_bucket, to_ts) w;
	RETURN QUERY
	SELECT a.bucket, a.method, a.path, a.calls, a.ok,
	       a.client_errors + a.server_errors, a.latency_sum_ms, a.latency_count
	FROM @extschema@.api_hour a
	WHERE a.bucket >= h0 AND a.bucket < h1
	UNION ALL
	SELECT a.bucket, a.method, a.path, a.calls, a.ok,
	       a.client_errors + a.server_errors, a.latency_sum_ms, a.latency_count
	FROM @extschema@.api_minute a
	WHERE a.bucket >= from_bucket AND a.bucket < h0
	UNION ALL
	SELECT a.bucket, a.method, a.path, a.calls, a.ok,
	       a.client_errors + a.server_errors, a.latency_sum_ms, a.latency_count
	FROM @extschema@.api_minute a
	WHERE a.bucket >= h1 AND a.bucket < to_ts AND h1 < to_ts
	UNION ALL
	SELECT l.bucket, l.method, l.path, l.calls, l.ok,
	       l.client_errors + l.server_errors, l.latency_sum_ms, l.latency_count
	FROM @extschema@._live_minutes(from_bucket, to_ts, false) l;
END
$$;

-- latency histograms over [from_bucket, to_ts), flushed + unflushed: per
-- minute when hourly is false, else whole UTC hours from api_hour and the
-- partial hours at the edges from api_minute (as _api_rows)
CREATE FUNCTION @extschema@._api_hists(from_bucket timestamptz, to_ts timestamptz,
	hourly boolean,
	OUT bucket timestamptz, OUT method text, OUT path text, OUT latency_hist bytea)
RETURNS SETOF record
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	h0 timestamptz := to_ts;
	h1 timestamptz := to_ts;
BEGIN
	IF hourly THEN
		SELECT w.h0, w.h1 INTO h0, h1 FROM @extschema@._whole_hours(from_bucket, to_ts) w;
	END IF;
	RETURN QUERY
	SELECT a.bucket, a.method, a.path, a.latency_hist
	FROM @extschema@.api_hour a
	WHERE a.bucket >= h0 AND a.bucket < h1 AND a.latency_hist IS NOT NULL
	UNION ALL
	SELECT a.bucket, a.method, a.path, a.latency_hist
	FROM @extschema@.api_minute a
	WHERE a.bucket >= from_bucket AND a.bucket < h0 AND a.latency_hist IS NOT NULL
	UNION ALL
	SELECT a.bucket, a.method, a.path, a.latency_hist
	FROM @extschema@.api_minute a
	WHERE a.bucket >= h1 AND a.bucket < to_ts AND h1 < to_ts
	  AND a.latency_hist IS NOT NULL
	UNION ALL
	SELECT l.bucket, l.method, l.path, l.latency_hist
	FROM @extschema@._live_latency(from_bucket, to_ts) l;
END
$$;

-- API-level minute rows, flushed and unflushed merged into one row per
-- (bucket, method, path), for buckets in [date_trunc('minute', from_ts), to_ts):
-- the table Grafana and ad-hoc SQL build on
CREATE FUNCTION @extschema@.minutes(from_ts timestamptz, to_ts timestamptz DEFAULT now())
RETURNS TABLE (bucket timestamptz, method text, path text, calls bigint,
               ok bigint, client_errors bigint, server_errors bigint,
               latency_count bigint, latency_sum_ms double precision,
               latency_max_ms double precision, latency_hist bytea)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
	f timestamptz := date_trunc('minute', from_ts);
BEGIN
	IF from_ts IS NULL OR to_ts IS NULL THEN
		RAISE EXCEPTION 'from_ts and to_ts must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	PERFORM @extschema@._read_begin();
	RETURN QUERY
	SELECT u.bucket, u.method, u.path, sum(u.calls)::bigint, sum(u.ok)::bigint,
	       sum(u.client_errors)::bigint, sum(u.server_errors)::bigint,
	       sum(u.latency_count)::bigint, sum(u.latency_sum_ms)::float8,
	       max(u.latency_max_ms), @extschema@.latency_merge(u.latency_hist)
	FROM (
		SELECT a.bucket, a.method, a.path, a.calls, a.ok, a.client_errors,
		       a.server_errors, a.latency_count, a.latency_sum_ms,
		       a.latency_max_ms, a.latency_hist
		FROM @extschema@.api_minute a
		WHERE a.bucket >= f AND a.bucket < to_ts
		UNION ALL
		SELECT l.bucket, l.method, l.path, l.calls, l.ok, l.client_errors,
		       l.server_errors, l.latency_count, l.latency_sum_ms,
		       l.latency_max_ms, NULL::bytea
		FROM @extschema@._live_minutes(f, to_ts, false) l
		UNION ALL
		SELECT h.bucket, h.method, h.path, 0, 0, 0, 0, 0, 0, NULL, h.latency_hist
		FROM @extschema@._live_latency(f, to_ts) h
	) u
	GROUP BY u.bucket, u.method, u.path
	ORDER BY u.bucket, u.method, u.path;
	PERFORM @extschema@._read_end();
END
$$;

-- Recompute api_hour from api_minute (after loading or repairing api_minute
-- by hand; the worker keeps both in step on its own).  Returns the rows written.
CREATE FUNCTION @extschema@.rebuild_api_hour()
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	n bigint;
BEGIN
	LOCK TABLE @extschema@.api_minute, @extschema@.api_hour IN SHARE ROW EXCLUSIVE MODE;
	DELETE FROM @extschema@.api_hour;
	INSERT INTO @extschema@.api_hour
	SELECT date_trunc('hour', bucket, 'UTC'), method, path, sum(calls), sum(ok),
	       sum(client_errors), sum(server_errors), sum(latency_sum_ms),
	       max(latency_max_ms), sum(latency_count),
	       @extschema@.latency_merge(latency_hist)
	FROM @extschema@.api_minute
	GROUP BY 1, 2, 3;
	GET DIAGNOSTICS n = ROW_COUNT;
	RETURN n;
END
$$;

-- caller-level minute rows, flushed + unflushed (tracked hits only)
CREATE FUNCTION @extschema@._caller_minutes(from_bucket timestamptz, to_ts timestamptz,
	OUT bucket timestamptz, OUT method text, OUT path text, OUT client_ip inet,
	OUT user_id text, OUT calls bigint, OUT ok bigint, OUT errors bigint)
RETURNS SETOF record
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT c.bucket, c.method, c.path, c.client_ip, c.user_id, c.calls, c.ok,
	       c.client_errors + c.server_errors
	FROM @extschema@.caller_minute c
	WHERE c.bucket >= from_bucket AND c.bucket < to_ts
	UNION ALL
	SELECT l.bucket, l.method, l.path, l.client_ip, l.user_id, l.calls,
	       l.ok, l.client_errors + l.server_errors
	FROM @extschema@._live_minutes(from_bucket, to_ts, true) l
	WHERE l.calls > 0
$$;

CREATE FUNCTION @extschema@._check_n(n integer) RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF n IS NULL OR n < 0 THEN
		RAISE EXCEPTION 'n must be a non-negative number of rows'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
END
$$;

CREATE FUNCTION @extschema@._check_since(since interval) RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF since IS NULL OR since <= interval '0' THEN
		RAISE EXCEPTION 'since must be a positive interval'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
END
$$;

-- first instant of the oldest slot of a sliding window ending at now()
CREATE FUNCTION @extschema@._window_start(since interval) RETURNS timestamptz
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT to_timestamp((floor(extract(epoch FROM now()) / s)
	                     - ceil(extract(epoch FROM since) / s) + 1) * s)
	FROM (SELECT extract(epoch FROM current_setting('apicount.slot_seconds')::interval) AS s) c
$$;

CREATE FUNCTION @extschema@.top_apis(n integer, from_ts timestamptz, to_ts timestamptz)
RETURNS TABLE (method text, path text, calls bigint, errors bigint,
               error_ratio double precision, avg_latency_ms double precision)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM @extschema@._check_n(n);
	PERFORM @extschema@._read_begin();
	RETURN QUERY
	SELECT m.method, m.path, sum(m.calls)::bigint, sum(m.errors)::bigint,
	       CASE WHEN sum(m.calls) > 0 THEN (sum(m.errors) / sum(m.calls))::float8 END,
	       CASE WHEN sum(m.latency_count) > 0 THEN sum(m.latency_sum_ms) / sum(m.latency_count) END
	FROM @extschema@._api_rows(date_trunc('minute', from_ts), to_ts) m
	GROUP BY m.method, m.path
	HAVING sum(m.calls) > 0
	ORDER BY 3 DESC, 1, 2
	LIMIT n;
	PERFORM @extschema@._read_end();
END
$$;

CREATE FUNCTION @extschema@.top_apis(n integer DEFAULT 10, since interval DEFAULT '1 minute')
RETURNS TABLE (method text, path text, calls bigint, errors bigint,
               error_ratio double precision, avg_latency_ms double precision)
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
	)
	SELECT w.method, w.path, w.calls, w.errors,
	       (w.errors::float8 / w.calls::float8),
	       CASE WHEN w.lc + coalesce(lat.c, 0) > 0
	            THEN (w.ls + coalesce(lat.s, 0)) / (w.lc + coalesce(lat.c, 0)) END
	FROM w LEFT JOIN lat ON lat.method = w.method AND lat.path = w.path
	ORDER BY 3 DESC, 1, 2
	LIMIT n;
	PERFORM @extschema@._read_end();
END
$$;

CREATE FUNCTION @extschema@._check_by(by text) RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF by IS NULL OR by NOT IN ('ip', 'user', 'ip_user') THEN
		RAISE EXCEPTION 'invalid value for by: %', coalesce(quote_literal(by), 'NULL')
			USING ERRCODE = 'invalid_parameter_value',
			      HINT = 'Use ''ip'', ''user'' or ''ip_user''.';
	END IF;
END
$$;

CREATE FUNCTION @extschema@.top_callers(n integer DEFAULT 10, since interval DEFAULT '1 minute',
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
		WHERE p IS NULL OR c.path = p
		GROUP BY 1, 2
		HAVING sum(c.calls) > 0
		ORDER BY 3 DESC, 1 NULLS LAST, 2 NULLS LAST
		LIMIT n;
	END IF;
	PERFORM @extschema@._read_end();
END
$$;

CREATE FUNCTION @extschema@._series(p text, from_ts timestamptz, to_ts timestamptz, step interval)
RETURNS TABLE (t timestamptz, m text, pth text, calls bigint,
               errors bigint, avg_latency_ms double precision,
               p95_latency_ms double precision)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF step IS NULL OR step <= interval '0' THEN
		RAISE EXCEPTION 'step must be a positive interval'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	PERFORM @extschema@._read_begin();
	RETURN QUERY
	WITH c AS (
		SELECT date_bin(step, a.bucket, timestamptz '2000-01-01 00:00:00+00') AS t,
		       CASE WHEN p IS NOT NULL THEN a.method END AS m,
		       CASE WHEN p IS NOT NULL THEN a.path END AS pth,
		       sum(a.calls)::bigint AS calls, sum(a.errors)::bigint AS errors,
		       CASE WHEN sum(a.latency_count) > 0
		            THEN sum(a.latency_sum_ms) / sum(a.latency_count) END AS avg_ms
		FROM @extschema@._api_minutes(date_trunc('minute', from_ts), to_ts) a
		WHERE p IS NULL OR a.path = p
		GROUP BY 1, 2, 3
		HAVING sum(a.calls) > 0
	), h AS (
		SELECT date_bin(step, x.bucket, timestamptz '2000-01-01 00:00:00+00') AS t,
		       CASE WHEN p IS NOT NULL THEN x.method END AS m,
		       CASE WHEN p IS NOT NULL THEN x.path END AS pth,
		       @extschema@.latency_merge(x.latency_hist) AS hist
		FROM @extschema@._api_hists(date_trunc('minute', from_ts), to_ts, false) x
		WHERE p IS NULL OR x.path = p
		GROUP BY 1, 2, 3
	)
	SELECT c.t, c.m, c.pth, c.calls, c.errors, c.avg_ms,
	       @extschema@.latency_percentile(h.hist, 0.95)
	FROM c LEFT JOIN h ON h.t = c.t AND h.m IS NOT DISTINCT FROM c.m
	                  AND h.pth IS NOT DISTINCT FROM c.pth
	ORDER BY 1, 2, 3;
	PERFORM @extschema@._read_end();
END
$$;

-- public signature (its OUT column "path" shares the parameter's name,
-- which PL/pgSQL does not allow, hence the SQL wrapper)
CREATE FUNCTION @extschema@.series(path text DEFAULT NULL,
	from_ts timestamptz DEFAULT now() - interval '1 hour',
	to_ts timestamptz DEFAULT now(),
	step interval DEFAULT '1 minute')
RETURNS TABLE ("time" timestamptz, method text, path text, calls bigint,
               errors bigint, avg_latency_ms double precision,
               p95_latency_ms double precision)
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM @extschema@._series($1, $2, $3, $4) $$;

CREATE FUNCTION @extschema@._latency_percentiles(p text, from_ts timestamptz,
	to_ts timestamptz, ps double precision[])
RETURNS TABLE (m text, pth text, pct double precision, ms double precision)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
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
	PERFORM @extschema@._read_begin();
	RETURN QUERY
	SELECT g.method, g.path, q.pct, @extschema@.latency_percentile(g.hist, q.pct)
	FROM (
		SELECT x.method, x.path, @extschema@.latency_merge(x.latency_hist) AS hist
		FROM @extschema@._api_hists(date_trunc('minute', from_ts), to_ts, true) x
		WHERE p IS NULL OR x.path = p
		GROUP BY x.method, x.path
	) g
	CROSS JOIN LATERAL unnest(ps) WITH ORDINALITY AS q(pct, ord)
	WHERE g.hist IS NOT NULL
	ORDER BY g.method, g.path, q.ord;
	PERFORM @extschema@._read_end();
END
$$;

-- latency percentiles per API over [date_trunc('minute', from_ts), to_ts),
-- merged from minute and hour histograms and the unflushed ones
CREATE FUNCTION @extschema@.latency_percentiles(path text DEFAULT NULL,
	from_ts timestamptz DEFAULT now() - interval '1 hour',
	to_ts timestamptz DEFAULT now(),
	percentiles double precision[] DEFAULT '{0.5,0.95,0.99}')
RETURNS TABLE (method text, path text, percentile double precision,
               latency_ms double precision)
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM @extschema@._latency_percentiles($1, $2, $3, $4) $$;

CREATE FUNCTION @extschema@.callers(path text, from_ts timestamptz, to_ts timestamptz)
RETURNS TABLE (client_ip inet, user_id text, first_seen timestamptz,
               last_seen timestamptz, calls bigint, errors bigint)
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
	SELECT c.client_ip, c.user_id, min(c.bucket), max(c.bucket),
	       sum(c.calls)::bigint, sum(c.errors)::bigint
	FROM @extschema@._caller_minutes(date_trunc('minute', from_ts), to_ts) c
	WHERE c.path = p AND c.calls > 0
	GROUP BY c.client_ip, c.user_id
	ORDER BY 5 DESC, 1 NULLS LAST, 2 NULLS LAST;
	PERFORM @extschema@._read_end();
END
$$;

---------------------------------------------------------------------------
-- Detection: hot callers, login anomalies, rules and alerts
---------------------------------------------------------------------------

-- API-level rows of a window (all hits, tracked or not): the exact sliding
-- window up to the live horizon (2 minutes), minute resolution beyond it
CREATE FUNCTION @extschema@._api_window(since interval,
	OUT method text, OUT path text, OUT calls bigint, OUT ok bigint, OUT errors bigint)
RETURNS SETOF record
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF since <= interval '2 minutes' THEN
		RETURN QUERY
		SELECT lw.method, lw.path, lw.calls, lw.ok, lw.errors
		FROM @extschema@._live_groups(since, true, false, false, NULL, 1, false, false, true) lw;
	ELSE
		RETURN QUERY
		SELECT am.method, am.path, sum(am.calls)::bigint, sum(am.ok)::bigint, sum(am.errors)::bigint
		FROM @extschema@._api_rows(date_trunc('minute', now() - since),
		                           now() + interval '1 microsecond') am
		GROUP BY 1, 2;
	END IF;
END
$$;

-- per API and caller ('ip', 'user', 'ip_user') or per API ('api') over a
-- window, calls >= min_calls; a caller whose grouping field is NULL is no
-- caller and is left out, and so are overflow hits
CREATE FUNCTION @extschema@._window_by(since interval, by text, min_calls bigint,
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
		        AND (NOT want_ip OR cm.client_ip IS NOT NULL)
		        AND (NOT want_user OR cm.user_id IS NOT NULL)) g
		GROUP BY 1, 2, 3, 4
		HAVING sum(g.calls) >= min_calls;
	END IF;
END
$$;

CREATE FUNCTION @extschema@._hot_callers(threshold bigint, since interval, p text, by text)
RETURNS TABLE (m text, pth text, ip inet, uid text, calls bigint, errors bigint)
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
	SELECT w.method, w.path, w.client_ip, w.user_id, w.calls, w.errors
	FROM @extschema@._window_by(since, by, threshold) w
	WHERE p IS NULL OR w.path = p
	ORDER BY 5 DESC, 1, 2, 3 NULLS LAST, 4 NULLS LAST;
	PERFORM @extschema@._read_end();
END
$$;

CREATE FUNCTION @extschema@.hot_callers(threshold bigint DEFAULT 1000,
	since interval DEFAULT '1 minute', path text DEFAULT NULL, by text DEFAULT 'ip')
RETURNS TABLE (method text, path text, client_ip inet, user_id text,
               calls bigint, errors bigint)
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM @extschema@._hot_callers($1, $2, $3, $4) $$;

CREATE FUNCTION @extschema@.login_anomalies(path_pattern text DEFAULT '%login%',
	since interval DEFAULT '1 minute', baseline interval DEFAULT '30 minutes',
	min_calls bigint DEFAULT 100, spike_factor double precision DEFAULT 3,
	max_success_ratio double precision DEFAULT 0.5)
RETURNS TABLE (method text, path text, calls bigint, ok bigint,
               success_ratio double precision, baseline_calls double precision,
               factor double precision)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	win_start timestamptz;
	windows double precision;
BEGIN
	PERFORM @extschema@._check_since(since);
	IF baseline IS NULL OR baseline <= interval '0' THEN
		RAISE EXCEPTION 'baseline must be a positive interval'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	windows := extract(epoch FROM baseline) / extract(epoch FROM since);
	-- the baseline is the whole minutes before the window's first minute
	win_start := date_trunc('minute', now() - since);
	PERFORM @extschema@._read_begin();
	RETURN QUERY
	WITH w AS (
		SELECT a.method, a.path, a.calls, a.ok
		FROM @extschema@._api_window(since) a
		WHERE a.path LIKE path_pattern AND a.method <> '*'
	), b AS (
		SELECT am.method, am.path, sum(am.calls)::float8 / windows AS per_window
		FROM @extschema@._api_minutes(win_start - baseline, win_start) am
		WHERE am.path LIKE path_pattern
		GROUP BY 1, 2
	)
	SELECT w.method, w.path, w.calls, w.ok,
	       w.ok::float8 / w.calls::float8,
	       coalesce(b.per_window, 0),
	       CASE WHEN coalesce(b.per_window, 0) > 0 THEN w.calls / b.per_window
	            ELSE 'Infinity'::float8 END
	FROM w LEFT JOIN b ON b.method = w.method AND b.path = w.path
	WHERE w.calls >= min_calls
	  AND w.calls >= spike_factor * coalesce(b.per_window, 0)
	  AND w.ok::float8 / w.calls::float8 <= max_success_ratio
	ORDER BY 3 DESC, 1, 2;
	PERFORM @extschema@._read_end();
END
$$;

CREATE TABLE @extschema@.rules (
	name             text PRIMARY KEY,
	path_pattern     text NOT NULL,
	method           text,
	per              text NOT NULL CHECK (per IN ('ip', 'user', 'ip_user', 'api')),
	threshold        bigint NOT NULL CHECK (threshold > 0),
	"window"         interval NOT NULL DEFAULT '1 minute' CHECK ("window" > interval '0'),
	min_error_ratio  double precision CHECK (min_error_ratio BETWEEN 0 AND 1),
	cooldown         interval NOT NULL DEFAULT '5 minutes' CHECK (cooldown >= interval '0'),
	enabled          boolean NOT NULL DEFAULT true
);

CREATE TABLE @extschema@.alerts (
	id            bigserial PRIMARY KEY,
	fired_at      timestamptz NOT NULL DEFAULT now(),
	rule          text NOT NULL,
	method        text,
	path          text,
	client_ip     inet,
	user_id       text,
	calls         bigint NOT NULL,
	errors        bigint NOT NULL,
	window_start  timestamptz NOT NULL,
	window_end    timestamptz NOT NULL
);
CREATE INDEX alerts_cooldown ON @extschema@.alerts (rule, fired_at);

SELECT pg_catalog.pg_extension_config_dump('@extschema@.rules', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.alerts', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.alerts_id_seq', '');

-- Evaluate every enabled rule once; insert and NOTIFY new alerts.  Called
-- by the worker at least once per slot; callable by hand.  Returns the
-- number of alerts fired.
CREATE FUNCTION @extschema@.evaluate_rules()
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
	PERFORM @extschema@._read_begin();
	FOR r IN SELECT * FROM @extschema@.rules WHERE enabled ORDER BY name LOOP
		IF r."window" <= interval '2 minutes' THEN
			wstart := @extschema@._window_start(r."window");
		ELSE
			wstart := date_trunc('minute', now() - r."window");
		END IF;
		FOR a IN
			INSERT INTO @extschema@.alerts (fired_at, rule, method, path, client_ip,
			                                user_id, calls, errors, window_start, window_end)
			SELECT now(), r.name, w.method, w.path, w.client_ip, w.user_id,
			       w.calls, w.errors, wstart, now()
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
-- Privileges: nothing for PUBLIC; writer ingests, reader reads.
---------------------------------------------------------------------------
REVOKE ALL ON ALL TABLES IN SCHEMA @extschema@ FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA @extschema@ FROM PUBLIC;

GRANT INSERT ON @extschema@.requests TO apicount_writer;
GRANT EXECUTE ON FUNCTION @extschema@.hit(text, text, inet, text, integer, double precision, timestamptz) TO apicount_writer;
GRANT EXECUTE ON FUNCTION @extschema@.normalize_path(text) TO apicount_writer, apicount_reader;

GRANT SELECT ON @extschema@.api_minute, @extschema@.api_hour, @extschema@.caller_minute,
	@extschema@.stats, @extschema@.live, @extschema@.requests TO apicount_reader;
GRANT EXECUTE ON FUNCTION
	@extschema@._live_entries(),
	@extschema@._live_groups(interval, boolean, boolean, boolean, text, bigint, boolean, boolean, boolean),
	@extschema@._live_minutes(timestamptz, timestamptz, boolean),
	@extschema@._read_begin(), @extschema@._read_end(), @extschema@._stats(),
	@extschema@._api_minutes(timestamptz, timestamptz),
	@extschema@._api_rows(timestamptz, timestamptz),
	@extschema@._whole_hours(timestamptz, timestamptz),
	@extschema@._window_start(interval),
	@extschema@._caller_minutes(timestamptz, timestamptz),
	@extschema@._check_n(integer), @extschema@._check_since(interval),
	@extschema@._check_by(text),
	@extschema@.top_apis(integer, interval),
	@extschema@.top_apis(integer, timestamptz, timestamptz),
	@extschema@.top_callers(integer, interval, text, text),
	@extschema@.series(text, timestamptz, timestamptz, interval),
	@extschema@._series(text, timestamptz, timestamptz, interval),
	@extschema@.callers(text, timestamptz, timestamptz),
	@extschema@._api_window(interval),
	@extschema@._window_by(interval, text, bigint),
	@extschema@._hot_callers(bigint, interval, text, text),
	@extschema@.hot_callers(bigint, interval, text, text),
	@extschema@.login_anomalies(text, interval, interval, bigint, double precision, double precision),
	@extschema@._live_latency(timestamptz, timestamptz),
	@extschema@._api_hists(timestamptz, timestamptz, boolean),
	@extschema@.minutes(timestamptz, timestamptz),
	@extschema@.latency_merge(bytea),
	@extschema@.latency_percentile(bytea, double precision),
	@extschema@.latency_count(bytea),
	@extschema@._latency_percentiles(text, timestamptz, timestamptz, double precision[]),
	@extschema@.latency_percentiles(text, timestamptz, timestamptz, double precision[])
	TO apicount_reader;
GRANT SELECT ON @extschema@.rules, @extschema@.alerts TO apicount_reader;

