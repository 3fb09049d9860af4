--
-- privileges: nothing for PUBLIC; apicount_writer ingests; apicount_reader
-- reads and queries; flush() is for superusers only.
-- Paths used here start with /priv/.
--
-- (quietly: an earlier suite may have created it)
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS apicount;
RESET client_min_messages;
SET timezone = 'UTC';

-- the worker connects once contrib_regression exists; wait for it (up to 30 s)
DO $$
BEGIN
	FOR i IN 1..300 LOOP
		EXIT WHEN (SELECT worker_pid FROM apicount.stats) IS NOT NULL;
		PERFORM pg_sleep(0.1);
	END LOOP;
END
$$;

SET client_min_messages = warning;
DROP ROLE IF EXISTS regress_apicount_nobody;
DROP ROLE IF EXISTS regress_apicount_w;
DROP ROLE IF EXISTS regress_apicount_r;
RESET client_min_messages;
CREATE ROLE regress_apicount_nobody;
CREATE ROLE regress_apicount_w IN ROLE apicount_writer;
CREATE ROLE regress_apicount_r IN ROLE apicount_reader;

-- the extension's roles exist and cannot log in
SELECT rolname, rolcanlogin, rolsuper FROM pg_roles
WHERE rolname IN ('apicount_writer', 'apicount_reader') ORDER BY rolname;

--
-- from the catalogs
--
-- PUBLIC (a role with no grants): no schema usage, no function, no relation
SELECT has_schema_privilege('regress_apicount_nobody', 'apicount', 'USAGE') AS public_usage;
SELECT p.oid::regprocedure AS public_can_execute
FROM pg_proc p WHERE p.pronamespace = 'apicount'::regnamespace
  AND has_function_privilege('regress_apicount_nobody', p.oid, 'EXECUTE');
SELECT c.relname AS public_can_access
FROM pg_class c WHERE c.relnamespace = 'apicount'::regnamespace AND c.relkind IN ('r', 'v', 'S')
  AND has_table_privilege('regress_apicount_nobody', c.oid, 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER');
-- (a NULL proacl means the default, EXECUTE for PUBLIC)
SELECT p.oid::regprocedure AS granted_to_public
FROM pg_proc p WHERE p.pronamespace = 'apicount'::regnamespace
  AND (p.proacl IS NULL OR EXISTS (SELECT FROM aclexplode(p.proacl) a WHERE a.grantee = 0));

-- the writer: usage, INSERT on requests, hit(), normalize_path(); nothing else
SELECT has_schema_privilege('regress_apicount_w', 'apicount', 'USAGE') AS writer_usage;
SELECT p.oid::regprocedure AS writer_can_execute
FROM pg_proc p WHERE p.pronamespace = 'apicount'::regnamespace
  AND has_function_privilege('regress_apicount_w', p.oid, 'EXECUTE')
ORDER BY p.proname COLLATE "C";
SELECT c.relname, priv
FROM pg_class c
CROSS JOIN unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE']) AS priv
WHERE c.relnamespace = 'apicount'::regnamespace AND c.relkind IN ('r', 'v', 'S')
  AND has_table_privilege('regress_apicount_w', c.oid, priv)
ORDER BY 1, 2;

-- the reader: usage, SELECT on the rollups, stats and live, EXECUTE on the
-- query functions; no writes anywhere, no hit(), no flush()
SELECT has_schema_privilege('regress_apicount_r', 'apicount', 'USAGE') AS reader_usage;
SELECT t AS reader_can_select, has_table_privilege('regress_apicount_r', t, 'SELECT') AS granted
FROM unnest(ARRAY['apicount.api_minute', 'apicount.api_day', 'apicount.caller_minute', 'apicount.stats', 'apicount.live']) AS t;
SELECT f AS reader_can_execute, has_function_privilege('regress_apicount_r', f, 'EXECUTE') AS granted
FROM unnest(ARRAY['apicount.top_apis(integer, interval)',
                  'apicount.top_apis(integer, timestamptz, timestamptz, text[], text)',
                  'apicount.top_callers(integer, interval, text, text)',
                  'apicount.top_callers_range(integer, timestamptz, timestamptz, text, text, text[], text)',
                  'apicount.series(text, timestamptz, timestamptz, interval, text)',
                  'apicount.minutes(timestamptz, timestamptz, interval, text[], text, boolean)',
                  'apicount.latency_percentiles(text, timestamptz, timestamptz, double precision[], text, text[])',
                  'apicount.callers(text, timestamptz, timestamptz, text)',
                  'apicount.rebuild_api_day()',
                  'apicount.normalize_path(text)',
                  'apicount.hit(text, text, inet, text, integer, double precision, timestamptz)',
                  'apicount.flush()']) AS f;
SELECT c.relname AS reader_can_write
FROM pg_class c WHERE c.relnamespace = 'apicount'::regnamespace AND c.relkind IN ('r', 'v', 'S')
  AND has_table_privilege('regress_apicount_r', c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE');

-- flush(): superusers only
SELECT r AS role, has_function_privilege(r, 'apicount.flush()', 'EXECUTE') AS can_flush
FROM unnest(ARRAY['regress_apicount_nobody', 'regress_apicount_w', 'regress_apicount_r',
                  'apicount_writer', 'apicount_reader']) AS r;

--
-- in practice: run each statement as each role
--
CREATE FUNCTION pg_temp.try(stmt text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE stmt;
	RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
	RETURN SQLSTATE;
END
$$;
CREATE TEMP TABLE priv_stmts (n int, stmt text);
INSERT INTO priv_stmts VALUES
	( 1, $$INSERT INTO apicount.requests (path) VALUES ('/priv/insert')$$),
	( 2, $$SELECT apicount.hit('/priv/hit')$$),
	( 3, $$SELECT apicount.normalize_path('/priv/1')$$),
	( 4, $$SELECT * FROM apicount.requests$$),
	( 5, $$SELECT * FROM apicount.api_minute LIMIT 1$$),
	( 6, $$SELECT * FROM apicount.caller_minute LIMIT 1$$),
	( 7, $$SELECT * FROM apicount.stats$$),
	( 8, $$SELECT * FROM apicount.live LIMIT 1$$),
	( 9, $$SELECT * FROM apicount.top_apis()$$),
	(10, $$SELECT * FROM apicount.top_apis(10, interval '1 hour')$$),
	(11, $$SELECT * FROM apicount.top_apis(10, now() - interval '1 hour', now())$$),
	(12, $$SELECT * FROM apicount.top_callers()$$),
	(13, $$SELECT * FROM apicount.top_callers(10, interval '1 hour', '/priv/insert', 'ip_user')$$),
	(14, $$SELECT * FROM apicount.series()$$),
	(15, $$SELECT * FROM apicount.callers('/priv/insert', now() - interval '1 hour', now())$$),
	(16, $$SELECT apicount.flush()$$),
	(17, $$INSERT INTO apicount.api_minute (bucket, method, path) VALUES (date_trunc('minute', now()), 'GET', '/priv/forged')$$),
	(18, $$UPDATE apicount.api_minute SET calls = calls + 1 WHERE false$$),
	(19, $$DELETE FROM apicount.caller_minute WHERE false$$),
	(20, $$TRUNCATE apicount.api_minute$$),
	(21, $$SELECT apicount._live_entries()$$);

CREATE TEMP TABLE priv_results (who text, n int, result text);
GRANT INSERT ON priv_results TO PUBLIC;
GRANT SELECT ON priv_stmts TO PUBLIC;

SET ROLE regress_apicount_nobody;
INSERT INTO priv_results SELECT 'nobody', n, pg_temp.try(stmt) FROM priv_stmts;
RESET ROLE;
SET ROLE regress_apicount_w;
INSERT INTO priv_results SELECT 'writer', n, pg_temp.try(stmt) FROM priv_stmts;
RESET ROLE;
SET ROLE regress_apicount_r;
INSERT INTO priv_results SELECT 'reader', n, pg_temp.try(stmt) FROM priv_stmts;
RESET ROLE;

SELECT s.n, s.stmt,
       max(r.result) FILTER (WHERE who = 'nobody') AS nobody,
       max(r.result) FILTER (WHERE who = 'writer') AS writer,
       max(r.result) FILTER (WHERE who = 'reader') AS reader
FROM priv_stmts s JOIN priv_results r USING (n)
GROUP BY s.n, s.stmt ORDER BY s.n;

-- COPY needs INSERT too
SET ROLE regress_apicount_w;
COPY apicount.requests (path, status) FROM STDIN;
/priv/copy	200
/priv/copy	500
\.
RESET ROLE;
SET ROLE regress_apicount_r;
\set VERBOSITY sqlstate
COPY apicount.requests (path, status) FROM STDIN;
/priv/copy	200
\.
\set VERBOSITY default
RESET ROLE;

-- what the writer recorded counted (the forged row never got in)
SELECT path, calls
FROM apicount.top_apis(100000, now() - interval '1 hour', now() + interval '1 hour')
WHERE path LIKE '/priv/%'
ORDER BY path;

-- the superuser can flush
SELECT apicount.flush() >= 0 AS superuser_flushed;

DROP ROLE regress_apicount_nobody;
DROP ROLE regress_apicount_w;
DROP ROLE regress_apicount_r;
