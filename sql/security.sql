--
-- security: hostile strings are stored and returned byte-exact (after the
-- documented normalization and truncation) and never interpreted as SQL,
-- through the live counts, the query functions, the rollups and the alerts;
-- bad input through COPY (invalid UTF-8, NUL, control characters, invalid
-- inet) counts nothing of its statement and leaves the session usable;
-- PUBLIC, writer and reader can do only their part; a hostile search_path
-- and hostile objects in schema public cannot redirect the query functions
-- or the worker; no SECURITY DEFINER function lacks a pinned search_path.
-- Expected values are computed independently of apicount (pg_temp.cut,
-- pg_temp.strip below).  Paths used here start with /sec/.
--
-- (quietly: an earlier suite may have created it)
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS apicount;
RESET client_min_messages;
SET timezone = 'UTC';
SELECT getdatabaseencoding() AS encoding;

-- the worker connects once contrib_regression exists; wait for it (up to 30 s)
DO $$
BEGIN
	FOR i IN 1..300 LOOP
		EXIT WHEN (SELECT worker_pid FROM apicount.stats) IS NOT NULL;
		PERFORM pg_sleep(0.1);
	END LOOP;
END
$$;

-- a table that injected SQL would drop, and what schema public holds now
CREATE TABLE sec_victim (id int);
INSERT INTO sec_victim VALUES (1), (2);
SELECT count(*) AS public_relations_before FROM pg_class
WHERE relnamespace = 'public'::regnamespace \gset

-- the longest prefix of s that fits in max_bytes bytes (character boundary)
CREATE FUNCTION pg_temp.cut(s text, max_bytes int) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
	SELECT left(s, k) FROM generate_series(least(length(s), max_bytes), 0, -1) AS k
	WHERE octet_length(left(s, k)) <= max_bytes
	LIMIT 1
$$;
-- s without its query string and fragment (everything from the first ? or #)
CREATE FUNCTION pg_temp.strip(s text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
	SELECT split_part(split_part(s, '?', 1), '#', 1)
$$;

--
-- hostile strings: n hits each (odd n through INSERT, even n through hit()),
-- each with its own path and user id.  norm is the normalized path where the
-- input has an id segment (else strip(path) is the normalized path).
--
CREATE TEMP TABLE hostile (n int PRIMARY KEY, label text, path text, user_id text,
                           norm text, exp_path text, exp_user text);
INSERT INTO hostile (n, label, path, user_id, norm) VALUES
	( 1, 'single quotes',          '/sec/h/o''brien',             'o''brien', NULL),
	( 2, 'double quotes',          '/sec/h/"quoted"',             '"admin"--', NULL),
	( 3, 'backslashes',            '/sec/h/back\slash\',          'dom\user\', NULL),
	( 4, 'percent',                '/sec/h/100%25%',              '%', NULL),
	( 5, 'underscore',             '/sec/h/a_b',                  '_', NULL),
	( 6, 'positional parameter',   '/sec/h/$1',                   '$1', NULL),
	( 7, 'dollar quoting',         '/sec/h/$$x$$',                '$q$ $q$', NULL),
	( 8, 'injection',              '/sec/h/''); DROP TABLE sec_victim; --', '''); DROP TABLE sec_victim; --', NULL),
	( 9, 'injection in query str', '/sec/h/inj?x=''); DROP TABLE sec_victim; --', 'x'' OR ''1''=''1', NULL),
	(10, 'semicolon, comments',    '/sec/h/a;b/*c*/--d',          '/* */;', NULL),
	(11, 'emoji and non-ASCII',    '/sec/h/😀🚀/ünï/Ωmega',       '用户😀', NULL),
	(12, 'psql meta-commands',     '/sec/h/\gexec \! rm',         ':''var'' :"id" \q', NULL),
	(13, '10 KB of 2-byte chars',  '/sec/h/long/' || repeat('é', 5000), repeat('ü', 5000), NULL),
	(14, '10 KB of 4-byte chars',  '/sec/h/e/' || repeat('😀', 2560), 'x' || repeat('😀', 2560), NULL),
	(15, '10 KB injection in qs',  '/sec/h/q?' || repeat('''; DROP TABLE sec_victim; --', 400), repeat('''', 10000), NULL),
	(16, 'NULL as text',           '/sec/h/NULL',                 'NULL', NULL),
	(17, 'format specifiers',      '/sec/h/%s%I%L%%',             '%s %I %L', NULL),
	(18, 'JSON and markup',        '/sec/h/{"a":1}/<b>&amp;',     '{"user":"x\"y"}', NULL),
	(19, 'id segment and quote',   '/sec/h/42/it''s',             '''', '/sec/h/:id/it''s'),
	(20, 'trailing space',         '/sec/h/sp ',                  ' ', NULL);
UPDATE hostile SET exp_path = pg_temp.cut(coalesce(norm, pg_temp.strip(path)), 256),
                   exp_user = pg_temp.cut(user_id, 128);

SELECT truncated AS trunc0 FROM apicount.stats \gset
INSERT INTO apicount.requests (path, user_id, client_ip, status)
SELECT h.path, h.user_id, '203.0.113.9', 200
FROM hostile h, generate_series(1, h.n)
WHERE h.n % 2 = 1;
SELECT count(*) AS hit_calls FROM (
	SELECT apicount.hit(h.path, 'GET', '203.0.113.9', h.user_id, 200)
	FROM hostile h, generate_series(1, h.n)
	WHERE h.n % 2 = 0) s;

-- the independent expectations agree with apicount.normalize_path (+ truncation)
SELECT n, label, octet_length(path) AS in_bytes, octet_length(exp_path) AS path_bytes,
       octet_length(exp_user) AS user_bytes,
       exp_path = pg_temp.cut(apicount.normalize_path(path), 256) AS normalize_path_agrees
FROM hostile ORDER BY n;

-- injected SQL never ran
SELECT count(*) AS sec_victim_rows FROM sec_victim;
SELECT count(*) - :public_relations_before AS new_public_relations
FROM pg_class WHERE relnamespace = 'public'::regnamespace;

-- truncations: one per truncated field of each hit (13 and 14 have both a
-- path over 256 bytes and a user id over 128 bytes, 15 only the user id):
-- 2 * 13 + 2 * 14 + 15 = 69
SELECT truncated - :trunc0 AS truncations FROM apicount.stats;

-- live counts: apicount.live holds exactly the expected keys: in the caller
-- tier (path, user id), in the API tier (path) with NULL caller fields
SELECT n, live_calls, live_api_calls, live_calls = n AND live_api_calls = n AS ok
FROM (SELECT h.n,
             (SELECT sum(l.calls) FROM apicount.live l
              WHERE l.tier = 'caller' AND l.path = h.exp_path AND l.user_id = h.exp_user) AS live_calls,
             (SELECT sum(l.calls) FROM apicount.live l
              WHERE l.tier = 'api' AND l.path = h.exp_path) AS live_api_calls
      FROM hostile h) x
ORDER BY n;
SELECT count(*) AS unexpected_live_keys FROM apicount.live l
WHERE l.path LIKE '/sec/h/%'
  AND NOT EXISTS (SELECT FROM hostile h WHERE h.exp_path = l.path
                  AND ((l.tier = 'caller' AND h.exp_user = l.user_id)
                       OR (l.tier = 'api' AND l.user_id IS NULL AND l.client_ip IS NULL)));

-- query functions: the paths come back byte-exact (short ones shown)
SELECT h.n, CASE WHEN octet_length(a.path) <= 48 THEN a.path END AS path,
       octet_length(a.path) AS bytes, a.calls, a.calls = h.n AS ok
FROM hostile h
LEFT JOIN apicount.top_apis(1000000, now() - interval '1 hour', now() + interval '1 hour') a
  ON a.path = h.exp_path
ORDER BY h.n;
SELECT count(*) AS sec_h_paths
FROM apicount.top_apis(1000000, now() - interval '1 hour', now() + interval '1 hour')
WHERE path LIKE '/sec/h/%';
-- sliding window, exact match on the path
SELECT count(*) AS window_paths_ok
FROM hostile h
JOIN apicount.top_apis(1000000, interval '2 minutes') a ON a.path = h.exp_path AND a.calls = h.n;

-- user ids come back byte-exact through callers(), top_callers() and hot_callers()
SELECT h.n, CASE WHEN octet_length(c.user_id) <= 32 THEN c.user_id END AS user_id,
       octet_length(c.user_id) AS bytes, c.user_id = h.exp_user AS exact, c.calls
FROM hostile h
LEFT JOIN LATERAL apicount.callers(h.exp_path, now() - interval '1 hour', now() + interval '1 hour') c ON true
ORDER BY h.n;
SELECT count(*) AS top_callers_ok
FROM hostile h,
LATERAL apicount.top_callers(10, interval '2 minutes', h.exp_path, 'ip_user') c
WHERE c.user_id = h.exp_user AND c.client_ip = '203.0.113.9' AND c.calls = h.n;
SELECT count(*) AS hot_callers_ok
FROM apicount.hot_callers(1, interval '2 minutes', NULL, 'user') c
JOIN hostile h ON c.path = h.exp_path AND c.user_id = h.exp_user AND c.calls = h.n;

-- '%' and '_' in a path argument are not wildcards
SELECT apicount.hit('/sec/w/a%', user_id => 'pct');
SELECT apicount.hit('/sec/w/aXYZ', user_id => 'xyz');
SELECT apicount.hit('/sec/w/a_', user_id => 'under');
SELECT apicount.hit('/sec/w/aY', user_id => 'y');
SELECT p, (SELECT string_agg(user_id, ',' ORDER BY user_id)
           FROM apicount.callers(p, now() - interval '1 hour', now() + interval '1 hour')) AS callers,
          (SELECT string_agg(user_id, ',' ORDER BY user_id)
           FROM apicount.top_callers(10, interval '2 minutes', p, 'user')) AS top_callers,
          (SELECT sum(calls) FROM apicount.series(p, now() - interval '1 hour', now() + interval '1 hour')) AS series_calls
FROM unnest(ARRAY['/sec/w/a%', '/sec/w/a_']) AS p;

-- alerts carry the hostile strings exactly, and their NOTIFY payload (the
-- row as JSON) round-trips
INSERT INTO apicount.rules (name, path_pattern, per, threshold, "window", cooldown)
VALUES ('sec_rule', '/sec/h/%', 'user', 1, '1 minute', '1 hour');
SELECT apicount.evaluate_rules() >= 0 AS evaluated;
SELECT count(DISTINCT h.n) AS alerted_keys,
       bool_and(row_to_json(a)::jsonb ->> 'path' = a.path
                AND row_to_json(a)::jsonb ->> 'user_id' = a.user_id) AS json_round_trip
FROM hostile h
JOIN apicount.alerts a ON a.rule = 'sec_rule' AND a.path = h.exp_path AND a.user_id = h.exp_user;
SELECT count(*) AS unexpected_alerts FROM apicount.alerts a
WHERE a.rule = 'sec_rule'
  AND NOT EXISTS (SELECT FROM hostile h WHERE h.exp_path = a.path AND h.exp_user = a.user_id);
DELETE FROM apicount.rules WHERE name = 'sec_rule';
DELETE FROM apicount.alerts WHERE rule = 'sec_rule';

-- after a flush: the rollup rows are byte-exact and complete
SELECT apicount.flush() >= 0 AS flushed;
SELECT h.n,
       (SELECT sum(calls) FROM apicount.api_minute m WHERE m.path = h.exp_path) AS api_minute,
       (SELECT sum(calls) FROM apicount.caller_minute m
        WHERE m.path = h.exp_path AND m.user_id = h.exp_user) AS caller_minute
FROM hostile h ORDER BY h.n;
SELECT count(*) AS unexpected_rollup_rows FROM apicount.caller_minute m
WHERE m.path LIKE '/sec/h/%'
  AND NOT EXISTS (SELECT FROM hostile h WHERE h.exp_path = m.path AND h.exp_user = m.user_id);
SELECT count(*) AS sec_victim_rows FROM sec_victim;

--
-- hostile strings through COPY (text and csv)
--
CREATE TEMP TABLE copy_expected (path text, user_id text);
INSERT INTO copy_expected VALUES
	('/sec/c/o''q"uote',                    'it''s "me"'),
	('/sec/c/back\slash',                   'dom\user'),
	('/sec/c/''); DROP TABLE sec_victim; --', '''); DROP TABLE sec_victim; --'),
	('/sec/c/😀',                           '😀'),
	('/sec/c/%_$1',                         '%_$1'),
	('/sec/c/csv,"q"',                      ',"u"'),
	('/sec/c/csv ''single''',               E'line\\n');
COPY apicount.requests (path, user_id, status) FROM STDIN;
/sec/c/o'q"uote	it's "me"	200
/sec/c/back\\slash	dom\\user	200
/sec/c/'); DROP TABLE sec_victim; --	'); DROP TABLE sec_victim; --	200
/sec/c/😀	😀	200
/sec/c/%_$1	%_$1	200
\.
COPY apicount.requests (path, user_id) FROM STDIN (FORMAT csv);
"/sec/c/csv,""q""",",""u"""
/sec/c/csv 'single',line\n
\.
SELECT e.path, e.user_id, c.calls
FROM copy_expected e
LEFT JOIN LATERAL apicount.callers(e.path, now() - interval '1 hour', now() + interval '1 hour') c
  ON c.user_id = e.user_id
ORDER BY e.path COLLATE "C";
SELECT count(*) AS sec_c_paths
FROM apicount.top_apis(1000000, now() - interval '1 hour', now() + interval '1 hour')
WHERE path LIKE '/sec/c/%';
SELECT count(*) AS sec_victim_rows FROM sec_victim;

--
-- bad input through COPY, not covered by validation.sql: each statement
-- fails with its SQLSTATE and counts none of its rows, even the valid rows
-- before the bad one
--
\set VERBOSITY sqlstate
-- invalid UTF-8 made by a COPY escape (0xc3 0x28) in the path, then in the user id
COPY apicount.requests (path, user_id) FROM STDIN;
/sec/bad/ok	u
/sec/bad/utf8\303\050	u
/sec/bad/ok	u
\.
COPY apicount.requests (path, user_id) FROM STDIN;
/sec/bad/ok	u
/sec/bad/utf8	\377
\.
-- raw invalid bytes on the wire (printf writes 0xc3 0x28 and a lone 0xff)
\copy apicount.requests (path) FROM PROGRAM 'printf "/sec/bad/ok\n/sec/bad/raw\303\050\n"'
\copy apicount.requests (path, user_id) FROM PROGRAM 'printf "/sec/bad/ok\tu\n/sec/bad/raw\tx\377y\n"'
-- a NUL byte
COPY apicount.requests (path) FROM STDIN;
/sec/bad/ok
/sec/bad/nul\000x
\.
-- control characters (0x01 in the path, a tab inside the user id, DEL)
COPY apicount.requests (path) FROM STDIN;
/sec/bad/ok
/sec/bad/ctl\001x
\.
COPY apicount.requests (path, user_id) FROM STDIN;
/sec/bad/ok	u
/sec/bad/ctl	a\tb
\.
\copy apicount.requests (path, user_id) FROM PROGRAM 'printf "/sec/bad/ok,u\n/sec/bad/ctl,d\177l\n"' WITH (FORMAT csv)
-- invalid inet (COPY, and a cast failing on the third row of INSERT ... SELECT)
COPY apicount.requests (path, client_ip) FROM STDIN;
/sec/bad/ok	10.0.0.1
/sec/bad/ip	999.1.1.1
\.
INSERT INTO apicount.requests (path, client_ip)
SELECT '/sec/bad/ok', ip::inet FROM (VALUES ('10.0.0.1'), ('10.0.0.2'), ('not-an-ip')) AS v(ip);
-- the same inside a transaction with statement-level savepoints (psql's
-- ON_ERROR_ROLLBACK): the failed statements count nothing, the others count
\set ON_ERROR_ROLLBACK on
BEGIN;
INSERT INTO apicount.requests (path) VALUES ('/sec/bad/txn-ok');
INSERT INTO apicount.requests (path, client_ip)
SELECT '/sec/bad/ok', ip::inet FROM (VALUES ('10.0.0.1'), ('10.0.0.2'), ('not-an-ip')) AS v(ip);
COPY apicount.requests (path) FROM STDIN;
/sec/bad/ok
/sec/bad/utf8\303\050
\.
SELECT apicount.hit(p) FROM (VALUES ('/sec/bad/ok'), (E'/sec/bad/ctl\x02')) AS v(p);
INSERT INTO apicount.requests (path) VALUES ('/sec/bad/txn-ok');
COMMIT;
\set ON_ERROR_ROLLBACK off
\set VERBOSITY default
-- the session is usable, and only the two good statements counted
SELECT path, calls
FROM apicount.top_apis(1000000, now() - interval '1 hour', now() + interval '1 hour')
WHERE path LIKE '/sec/bad/%'
ORDER BY path;

--
-- roles: PUBLIC can neither ingest nor read; the writer only ingests; the
-- reader only reads (see privileges.sql for the full catalog view)
--
SET client_min_messages = warning;
DROP ROLE IF EXISTS regress_sec_public;
DROP ROLE IF EXISTS regress_sec_writer;
DROP ROLE IF EXISTS regress_sec_reader;
RESET client_min_messages;
CREATE ROLE regress_sec_public;
CREATE ROLE regress_sec_writer IN ROLE apicount_writer;
CREATE ROLE regress_sec_reader IN ROLE apicount_reader;
CREATE FUNCTION pg_temp.try(stmt text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE stmt;
	RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
	RETURN SQLSTATE;
END
$$;
CREATE TEMP TABLE role_stmts (n int, stmt text);
INSERT INTO role_stmts VALUES
	(1, $$INSERT INTO apicount.requests (path, user_id) VALUES ('/sec/r/insert', '''); DROP TABLE sec_victim; --')$$),
	(2, $$SELECT apicount.hit('/sec/r/hit')$$),
	(3, $$SELECT count(*) FROM apicount.top_apis(10, interval '1 minute')$$),
	(4, $$SELECT count(*) FROM apicount.callers('/sec/h/$1', now() - interval '1 hour', now())$$),
	(5, $$SELECT count(*) FROM apicount.live$$),
	(6, $$SELECT hits FROM apicount.stats$$),
	(7, $$SELECT count(*) FROM apicount.caller_minute$$),
	(8, $$UPDATE apicount.api_minute SET calls = 0 WHERE false$$),
	(9, $$INSERT INTO apicount.rules (name, path_pattern, per, threshold) VALUES ('x', '%', 'ip', 1)$$),
	(10, $$SELECT apicount.evaluate_rules()$$),
	(11, $$SELECT apicount.flush()$$),
	(12, $$SELECT apicount.rebuild_api_hour()$$),
	(13, $$DROP TABLE sec_victim$$),
	-- the table access method of requests must not give anyone a way around
	-- INSERT on apicount.requests
	(14, $$CREATE TEMP TABLE sec_fake (path text) USING apicount_requests$$),
	(15, $$CREATE TEMP TABLE sec_heap (path text); ALTER TABLE sec_heap SET ACCESS METHOD apicount_requests$$),
	(16, $$SELECT count(*) FROM apicount.requests$$),
	(17, $$UPDATE apicount.requests SET path = '/x' WHERE false$$),
	(18, $$CREATE INDEX ON apicount.requests (path)$$);
CREATE TEMP TABLE role_results (who text, n int, result text);
GRANT INSERT ON role_results TO PUBLIC;
GRANT SELECT ON role_stmts TO PUBLIC;
SET ROLE regress_sec_public;
INSERT INTO role_results SELECT 'public', n, pg_temp.try(stmt) FROM role_stmts;
RESET ROLE;
SET ROLE regress_sec_writer;
INSERT INTO role_results SELECT 'writer', n, pg_temp.try(stmt) FROM role_stmts;
RESET ROLE;
SET ROLE regress_sec_reader;
INSERT INTO role_results SELECT 'reader', n, pg_temp.try(stmt) FROM role_stmts;
RESET ROLE;
SELECT s.n, left(s.stmt, 60) AS stmt,
       max(r.result) FILTER (WHERE who = 'public') AS public,
       max(r.result) FILTER (WHERE who = 'writer') AS writer,
       max(r.result) FILTER (WHERE who = 'reader') AS reader
FROM role_stmts s JOIN role_results r USING (n)
GROUP BY s.n, s.stmt ORDER BY s.n;
-- only the writer's hits were counted, its hostile user id byte-exact
SELECT user_id, calls
FROM apicount.callers('/sec/r/insert', now() - interval '1 hour', now() + interval '1 hour');
SELECT path, calls
FROM apicount.top_apis(1000000, now() - interval '1 hour', now() + interval '1 hour')
WHERE path LIKE '/sec/r/%' ORDER BY path;
SELECT count(*) AS sec_victim_rows FROM sec_victim;
DROP ROLE regress_sec_public;
DROP ROLE regress_sec_writer;
DROP ROLE regress_sec_reader;

--
-- a hostile search_path: schema evil, searched before pg_catalog, shadows
-- the functions, aggregates and operators the query functions use.  Each
-- evil object raises a NOTICE and returns a wrong value, so any use would
-- show here.  The results under the hostile path must equal the normal ones.
--
CREATE SCHEMA evil;
CREATE FUNCTION evil.now() RETURNS timestamptz LANGUAGE plpgsql AS
	$$BEGIN RAISE NOTICE 'evil now() called'; RETURN '2000-01-01'; END$$;
CREATE FUNCTION evil.date_trunc(text, timestamptz) RETURNS timestamptz LANGUAGE plpgsql AS
	$$BEGIN RAISE NOTICE 'evil date_trunc() called'; RETURN '2000-01-01'; END$$;
CREATE FUNCTION evil.date_bin(interval, timestamptz, timestamptz) RETURNS timestamptz LANGUAGE plpgsql AS
	$$BEGIN RAISE NOTICE 'evil date_bin() called'; RETURN '2000-01-01'; END$$;
CREATE FUNCTION evil.to_timestamp(double precision) RETURNS timestamptz LANGUAGE plpgsql AS
	$$BEGIN RAISE NOTICE 'evil to_timestamp() called'; RETURN '2000-01-01'; END$$;
CREATE FUNCTION evil.unnest(anyarray) RETURNS SETOF anyelement LANGUAGE plpgsql AS
	$$BEGIN RAISE NOTICE 'evil unnest() called'; RETURN; END$$;
CREATE FUNCTION evil.upper(text) RETURNS text LANGUAGE plpgsql AS
	$$BEGIN RAISE NOTICE 'evil upper() called'; RETURN 'EVIL'; END$$;
CREATE FUNCTION evil.lower(text) RETURNS text LANGUAGE plpgsql AS
	$$BEGIN RAISE NOTICE 'evil lower() called'; RETURN 'evil'; END$$;
CREATE FUNCTION evil.floor(double precision) RETURNS double precision LANGUAGE plpgsql AS
	$$BEGIN RAISE NOTICE 'evil floor() called'; RETURN -1; END$$;
CREATE FUNCTION evil.ceil(double precision) RETURNS double precision LANGUAGE plpgsql AS
	$$BEGIN RAISE NOTICE 'evil ceil() called'; RETURN -1; END$$;
CREATE FUNCTION evil.current_setting(text) RETURNS text LANGUAGE plpgsql AS
	$$BEGIN RAISE NOTICE 'evil current_setting() called'; RETURN '1'; END$$;
CREATE FUNCTION evil.row_to_json(record) RETURNS json LANGUAGE plpgsql AS
	$$BEGIN RAISE NOTICE 'evil row_to_json() called'; RETURN '{}'; END$$;
CREATE FUNCTION evil.pg_notify(text, text) RETURNS void LANGUAGE plpgsql AS
	$$BEGIN RAISE NOTICE 'evil pg_notify() called'; END$$;
CREATE FUNCTION evil.quote_literal(text) RETURNS text LANGUAGE plpgsql AS
	$$BEGIN RAISE NOTICE 'evil quote_literal() called'; RETURN 'evil'; END$$;
-- aggregates
CREATE FUNCTION evil.sf_int8(bigint, bigint) RETURNS bigint LANGUAGE plpgsql AS
	$$BEGIN RAISE NOTICE 'evil sum/max(bigint) called'; RETURN -1; END$$;
CREATE FUNCTION evil.sf_float8(double precision, double precision) RETURNS double precision LANGUAGE plpgsql AS
	$$BEGIN RAISE NOTICE 'evil sum/max(float8) called'; RETURN -1; END$$;
CREATE FUNCTION evil.sf_numeric(numeric, numeric) RETURNS numeric LANGUAGE plpgsql AS
	$$BEGIN RAISE NOTICE 'evil sum(numeric) called'; RETURN -1; END$$;
CREATE FUNCTION evil.sf_ts(timestamptz, timestamptz) RETURNS timestamptz LANGUAGE plpgsql AS
	$$BEGIN RAISE NOTICE 'evil min/max(timestamptz) called'; RETURN '2000-01-01'; END$$;
CREATE FUNCTION evil.sf_count(bigint) RETURNS bigint LANGUAGE plpgsql AS
	$$BEGIN RAISE NOTICE 'evil count(*) called'; RETURN -1; END$$;
CREATE AGGREGATE evil.sum(bigint) (sfunc = evil.sf_int8, stype = bigint);
CREATE AGGREGATE evil.sum(double precision) (sfunc = evil.sf_float8, stype = double precision);
CREATE AGGREGATE evil.sum(numeric) (sfunc = evil.sf_numeric, stype = numeric);
CREATE AGGREGATE evil.max(bigint) (sfunc = evil.sf_int8, stype = bigint);
CREATE AGGREGATE evil.max(double precision) (sfunc = evil.sf_float8, stype = double precision);
CREATE AGGREGATE evil.max(timestamptz) (sfunc = evil.sf_ts, stype = timestamptz);
CREATE AGGREGATE evil.min(timestamptz) (sfunc = evil.sf_ts, stype = timestamptz);
CREATE AGGREGATE evil.count(*) (sfunc = evil.sf_count, stype = bigint, initcond = '0');
-- operators
CREATE FUNCTION evil.op_text(text, text) RETURNS boolean LANGUAGE plpgsql AS
	$$BEGIN RAISE NOTICE 'evil text operator called'; RETURN true; END$$;
CREATE FUNCTION evil.op_int8(bigint, bigint) RETURNS boolean LANGUAGE plpgsql AS
	$$BEGIN RAISE NOTICE 'evil bigint comparison called'; RETURN true; END$$;
CREATE FUNCTION evil.op_ts(timestamptz, timestamptz) RETURNS boolean LANGUAGE plpgsql AS
	$$BEGIN RAISE NOTICE 'evil timestamptz comparison called'; RETURN true; END$$;
CREATE FUNCTION evil.op_iv(interval, interval) RETURNS boolean LANGUAGE plpgsql AS
	$$BEGIN RAISE NOTICE 'evil interval comparison called'; RETURN false; END$$;
CREATE FUNCTION evil.plus_int8(bigint, bigint) RETURNS bigint LANGUAGE plpgsql AS
	$$BEGIN RAISE NOTICE 'evil + called'; RETURN -1; END$$;
CREATE FUNCTION evil.ts_iv(timestamptz, interval) RETURNS timestamptz LANGUAGE plpgsql AS
	$$BEGIN RAISE NOTICE 'evil timestamptz +/- interval called'; RETURN '2000-01-01'; END$$;
CREATE FUNCTION evil.div_float8(double precision, double precision) RETURNS double precision LANGUAGE plpgsql AS
	$$BEGIN RAISE NOTICE 'evil / called'; RETURN -1; END$$;
CREATE FUNCTION evil.concat_text(text, text) RETURNS text LANGUAGE plpgsql AS
	$$BEGIN RAISE NOTICE 'evil || called'; RETURN 'evil'; END$$;
CREATE OPERATOR evil.=  (leftarg = text, rightarg = text, function = evil.op_text);
CREATE OPERATOR evil.<> (leftarg = text, rightarg = text, function = evil.op_text);
CREATE OPERATOR evil.~~ (leftarg = text, rightarg = text, function = evil.op_text);
CREATE OPERATOR evil.=  (leftarg = bigint, rightarg = bigint, function = evil.op_int8);
CREATE OPERATOR evil.>= (leftarg = bigint, rightarg = bigint, function = evil.op_int8);
CREATE OPERATOR evil.>  (leftarg = bigint, rightarg = bigint, function = evil.op_int8);
CREATE OPERATOR evil.=  (leftarg = timestamptz, rightarg = timestamptz, function = evil.op_ts);
CREATE OPERATOR evil.>= (leftarg = timestamptz, rightarg = timestamptz, function = evil.op_ts);
CREATE OPERATOR evil.<  (leftarg = timestamptz, rightarg = timestamptz, function = evil.op_ts);
CREATE OPERATOR evil.>  (leftarg = timestamptz, rightarg = timestamptz, function = evil.op_ts);
CREATE OPERATOR evil.<= (leftarg = interval, rightarg = interval, function = evil.op_iv);
CREATE OPERATOR evil.>  (leftarg = interval, rightarg = interval, function = evil.op_iv);
CREATE OPERATOR evil.+  (leftarg = bigint, rightarg = bigint, function = evil.plus_int8);
CREATE OPERATOR evil.-  (leftarg = timestamptz, rightarg = interval, function = evil.ts_iv);
CREATE OPERATOR evil.+  (leftarg = timestamptz, rightarg = interval, function = evil.ts_iv);
CREATE OPERATOR evil./  (leftarg = double precision, rightarg = double precision, function = evil.div_float8);
CREATE OPERATOR evil.|| (leftarg = text, rightarg = text, function = evil.concat_text);

-- the same calls under the normal and the hostile search_path, in one
-- transaction (one now(), so the answers must be identical; stats and live
-- without their flush-dependent columns, since the worker may flush between)
SELECT now() - interval '1 hour' AS t_from, now() + interval '1 hour' AS t_to \gset
BEGIN;
CREATE TEMP TABLE q_normal AS
SELECT 1 AS q, to_jsonb(t) AS r FROM apicount.top_apis(1000, interval '1 minute') t
UNION ALL SELECT 2, to_jsonb(t) FROM apicount.top_apis(1000, interval '1 hour') t
UNION ALL SELECT 3, to_jsonb(t) FROM apicount.top_apis(1000, :'t_from', :'t_to') t
UNION ALL SELECT 4, to_jsonb(t) FROM apicount.top_callers(1000, interval '1 minute', NULL, 'user') t
UNION ALL SELECT 5, to_jsonb(t) FROM apicount.top_callers(1000, interval '1 hour', '/sec/h/$1', 'ip_user') t
UNION ALL SELECT 6, to_jsonb(t) FROM apicount.series('/sec/h/a_b', :'t_from', :'t_to') t
UNION ALL SELECT 7, to_jsonb(t) FROM apicount.series(NULL, :'t_from', :'t_to', interval '5 minutes') t
UNION ALL SELECT 8, to_jsonb(t) FROM apicount.callers('/sec/h/o''brien', :'t_from', :'t_to') t
UNION ALL SELECT 9, to_jsonb(t) FROM apicount.hot_callers(1, interval '1 minute', NULL, 'user') t
UNION ALL SELECT 10, to_jsonb(t) FROM apicount.hot_callers(1, interval '1 hour', NULL, 'ip') t
UNION ALL SELECT 11, to_jsonb(t) FROM apicount.login_anomalies('/sec/%', interval '1 minute', interval '30 minutes', 1, 0, 1) t
UNION ALL SELECT 12, to_jsonb(t) FROM (SELECT capacity, hits, overflow_hits, truncated, shared_memory_bytes FROM apicount.stats) t
UNION ALL SELECT 13, to_jsonb(t) FROM (SELECT bucket, method, path, client_ip, user_id, calls, tier FROM apicount.live) t;
SET LOCAL search_path = evil, public, pg_catalog;
CREATE TEMP TABLE q_hostile AS
SELECT 1 AS q, to_jsonb(t) AS r FROM apicount.top_apis(1000, interval '1 minute') t
UNION ALL SELECT 2, to_jsonb(t) FROM apicount.top_apis(1000, interval '1 hour') t
UNION ALL SELECT 3, to_jsonb(t) FROM apicount.top_apis(1000, :'t_from', :'t_to') t
UNION ALL SELECT 4, to_jsonb(t) FROM apicount.top_callers(1000, interval '1 minute', NULL, 'user') t
UNION ALL SELECT 5, to_jsonb(t) FROM apicount.top_callers(1000, interval '1 hour', '/sec/h/$1', 'ip_user') t
UNION ALL SELECT 6, to_jsonb(t) FROM apicount.series('/sec/h/a_b', :'t_from', :'t_to') t
UNION ALL SELECT 7, to_jsonb(t) FROM apicount.series(NULL, :'t_from', :'t_to', interval '5 minutes') t
UNION ALL SELECT 8, to_jsonb(t) FROM apicount.callers('/sec/h/o''brien', :'t_from', :'t_to') t
UNION ALL SELECT 9, to_jsonb(t) FROM apicount.hot_callers(1, interval '1 minute', NULL, 'user') t
UNION ALL SELECT 10, to_jsonb(t) FROM apicount.hot_callers(1, interval '1 hour', NULL, 'ip') t
UNION ALL SELECT 11, to_jsonb(t) FROM apicount.login_anomalies('/sec/%', interval '1 minute', interval '30 minutes', 1, 0, 1) t
UNION ALL SELECT 12, to_jsonb(t) FROM (SELECT capacity, hits, overflow_hits, truncated, shared_memory_bytes FROM apicount.stats) t
UNION ALL SELECT 13, to_jsonb(t) FROM (SELECT bucket, method, path, client_ip, user_id, calls, tier FROM apicount.live) t;
-- defaults of series() and the evaluation of rules under the hostile path
CREATE TEMP TABLE q_hostile_defaults AS
SELECT pg_catalog.count(*) AS n FROM apicount.series();
SELECT apicount.evaluate_rules() AS rules_fired_under_hostile_path;
COMMIT;
SHOW search_path;
SELECT q.q, (SELECT count(*) FROM q_normal n WHERE n.q = q.q) > 0 AS has_rows,
       NOT EXISTS (SELECT r FROM q_normal n WHERE n.q = q.q
                   EXCEPT ALL SELECT r FROM q_hostile h WHERE h.q = q.q)
       AND NOT EXISTS (SELECT r FROM q_hostile h WHERE h.q = q.q
                       EXCEPT ALL SELECT r FROM q_normal n WHERE n.q = q.q) AS identical
FROM generate_series(1, 13) AS q(q) ORDER BY q.q;
SELECT n > 0 AS series_defaults_ok FROM q_hostile_defaults;

--
-- hostile objects in schema public cannot redirect the worker's flush:
-- tables named like the rollups, a public unnest() and a public + for bigint
--
CREATE TABLE public.api_minute (LIKE apicount.api_minute);
CREATE TABLE public.caller_minute (LIKE apicount.caller_minute);
CREATE FUNCTION public.unnest(anyarray) RETURNS SETOF anyelement LANGUAGE plpgsql AS
	$$BEGIN RAISE NOTICE 'public unnest() called'; RETURN; END$$;
CREATE OPERATOR public.+ (leftarg = bigint, rightarg = bigint, function = evil.plus_int8);
SELECT apicount.flush() >= 0 AS flushed;
-- the same key twice, with a flush in between: the second flush takes the
-- ON CONFLICT path (calls = t.calls + excluded.calls)
INSERT INTO apicount.requests (path, user_id) SELECT '/sec/w/public', 'u' FROM generate_series(1, 7);
SELECT apicount.flush() >= 0 AS flushed;
INSERT INTO apicount.requests (path, user_id) SELECT '/sec/w/public', 'u' FROM generate_series(1, 5);
SELECT apicount.flush() >= 0 AS flushed;
SELECT (SELECT sum(calls) FROM apicount.api_minute WHERE path = '/sec/w/public') AS api_minute_calls,
       (SELECT sum(calls) FROM apicount.caller_minute WHERE path = '/sec/w/public') AS caller_minute_calls,
       (SELECT count(*) FROM public.api_minute) AS public_api_minute_rows,
       (SELECT count(*) FROM public.caller_minute) AS public_caller_minute_rows;

-- ... nor a database-wide hostile search_path: a worker that connects with
-- search_path = evil, public, pg_catalog (restarted after the ALTER DATABASE)
DO $$
BEGIN
	EXECUTE format('ALTER DATABASE %I SET search_path = evil, public, pg_catalog', current_database());
END
$$;
SELECT set_config('regress_sec.old_worker', worker_pid::text, false) AS old_worker
FROM apicount.stats \gset
SELECT pg_terminate_backend(:old_worker) AS worker_terminated;
-- it flushes, exits, and the postmaster starts a new one (up to 60 s)
DO $$
BEGIN
	FOR i IN 1..600 LOOP
		EXIT WHEN coalesce((SELECT worker_pid FROM apicount.stats), 0)
		          NOT IN (0, current_setting('regress_sec.old_worker')::int);
		PERFORM pg_sleep(0.1);
	END LOOP;
END
$$;
SELECT worker_pid <> :old_worker AS new_worker FROM apicount.stats;
SELECT setting AS new_worker_db_search_path
FROM pg_db_role_setting s, unnest(s.setconfig) AS setting
WHERE s.setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND setting LIKE 'search_path=%';
INSERT INTO apicount.requests (path, user_id) SELECT '/sec/w/public', 'u' FROM generate_series(1, 3);
SELECT apicount.flush() >= 0 AS flushed;
SELECT (SELECT sum(calls) FROM apicount.api_minute WHERE path = '/sec/w/public') AS api_minute_calls,
       (SELECT sum(calls) FROM apicount.caller_minute WHERE path = '/sec/w/public') AS caller_minute_calls,
       (SELECT count(*) FROM public.api_minute) AS public_api_minute_rows;
DO $$
BEGIN
	EXECUTE format('ALTER DATABASE %I RESET search_path', current_database());
END
$$;

--
-- SECURITY DEFINER and pinned search paths, from the catalog
--
-- no SECURITY DEFINER function without a pinned search_path
SELECT p.oid::regprocedure AS secdef_without_pinned_path
FROM pg_proc p
WHERE p.pronamespace = 'apicount'::regnamespace AND p.prosecdef
  AND NOT coalesce('search_path=pg_catalog, pg_temp' = ANY (p.proconfig), false);
SELECT count(*) FILTER (WHERE p.prosecdef) AS security_definer_functions
FROM pg_proc p WHERE p.pronamespace = 'apicount'::regnamespace;
-- every SQL and PL/pgSQL function pins search_path to pg_catalog, pg_temp
-- (aggregates have no body of their own: their support functions are checked below)
SELECT p.oid::regprocedure AS unpinned, l.lanname, p.proconfig
FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
WHERE p.pronamespace = 'apicount'::regnamespace AND l.lanname <> 'c'
  AND p.prokind <> 'a'
  AND NOT coalesce('search_path=pg_catalog, pg_temp' = ANY (p.proconfig), false);
-- every aggregate's support functions are C functions of apicount
SELECT a.aggfnoid::regprocedure AS aggregate, f.oid::regprocedure AS support, l.lanname
FROM pg_aggregate a JOIN pg_proc ap ON ap.oid = a.aggfnoid
JOIN pg_proc f ON f.oid IN (a.aggtransfn, a.aggfinalfn)
JOIN pg_language l ON l.oid = f.prolang
WHERE ap.pronamespace = 'apicount'::regnamespace
ORDER BY 1, 2;
-- every member of the extension lives in schema apicount (or is a type of it),
-- except the table access method of apicount.requests (access methods have no
-- schema; it refuses any other table, see the role matrix above)
SELECT pg_describe_object(d.classid, d.objid, 0) AS member_outside_apicount
FROM pg_depend d
WHERE d.refclassid = 'pg_extension'::regclass
  AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'apicount')
  AND d.deptype = 'e'
  AND pg_describe_object(d.classid, d.objid, 0) !~ '(^| )apicount\.'
  AND pg_describe_object(d.classid, d.objid, 0) <> 'access method apicount_requests';
-- even a superuser gets no other table with it
CREATE TABLE sec_fake2 (path text) USING apicount_requests;
CREATE TABLE sec_heap2 (path text);
ALTER TABLE sec_heap2 SET ACCESS METHOD apicount_requests;
DROP TABLE sec_heap2;
-- requests takes no index, and UPDATE / DELETE find no row
CREATE INDEX ON apicount.requests (path);
UPDATE apicount.requests SET path = '/x';
DELETE FROM apicount.requests;
-- maintenance that rewrites tables works on requests, also database-wide
VACUUM FULL apicount.requests;
VACUUM FULL;
VACUUM ANALYZE apicount.requests;
-- TRUNCATE of requests itself works; it stays empty
TRUNCATE apicount.requests;
SELECT count(*) AS rows_in_requests FROM apicount.requests;

-- clean up
DROP TABLE public.api_minute, public.caller_minute, sec_victim;
DROP OPERATOR public.+ (bigint, bigint);
DROP FUNCTION public.unnest(anyarray);
SET client_min_messages = warning;
DROP SCHEMA evil CASCADE;
RESET client_min_messages;
