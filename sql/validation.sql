--
-- validation: every class of invalid input raises its SQLSTATE and counts
-- nothing of the statement; truncation of long paths and user ids; method
-- upper-casing.  Paths used here start with /v/ (and /vr/ for hits at the
-- retention edge, which the worker's retention job may delete at any time).
--
-- (quietly: an earlier suite may have created it)
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS apicount;
RESET client_min_messages;
SET timezone = 'UTC';

-- calls recorded (rollups + live) for paths LIKE p, any time in the last 40 days
CREATE FUNCTION pg_temp.calls(p text) RETURNS bigint LANGUAGE sql AS $$
	SELECT coalesce(sum(calls), 0)::bigint
	FROM apicount.top_apis(1000000, now() - interval '40 days', now() + interval '1 hour')
	WHERE path LIKE p
$$;

-- run one statement; 'ok' or the SQLSTATE it raised (each runs in a subtransaction)
CREATE FUNCTION pg_temp.try(stmt text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE stmt;
	RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
	RETURN SQLSTATE;
END
$$;

SELECT hits AS hits0, truncated AS trunc0 FROM apicount.stats \gset

--
-- top-level statements: the error and its SQLSTATE
--
\set VERBOSITY sqlstate
SELECT apicount.hit(NULL);
\echo :LAST_ERROR_SQLSTATE
INSERT INTO apicount.requests (method) VALUES ('GET');
\echo :LAST_ERROR_SQLSTATE
SELECT apicount.hit('/v/bad/status', status => 600);
\echo :LAST_ERROR_SQLSTATE
SELECT apicount.hit('/v/bad/ts', ts => now() + interval '6 minutes');
\echo :LAST_ERROR_SQLSTATE
\set VERBOSITY default

-- the retention error names apicount.retention in its hint
DO $$
DECLARE
	st text;
	h text;
BEGIN
	PERFORM apicount.hit('/v/bad/old', ts => now() - interval '31 days');
	RAISE NOTICE 'no error';
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, h = PG_EXCEPTION_HINT;
	RAISE NOTICE 'sqlstate %, hint names apicount.retention: %', st, h LIKE '%apicount.retention%';
END
$$;

--
-- every class of invalid input (ERROR expected) and the valid values at its edges
--
SELECT label, pg_temp.try(stmt) AS result
FROM (VALUES
	-- path
	('path NULL (hit)',               $$SELECT apicount.hit(NULL)$$),
	('path NULL (insert)',            $$INSERT INTO apicount.requests (path) VALUES (NULL)$$),
	('path omitted (insert)',         $$INSERT INTO apicount.requests (status) VALUES (200)$$),
	('path empty',                    $$SELECT apicount.hit('')$$),
	('path only a query string',      $$SELECT apicount.hit('?page=1')$$),
	('path only a fragment',          $$SELECT apicount.hit('#top')$$),
	('path ''?''',                    $$SELECT apicount.hit('?')$$),
	('path with tab',                 $$SELECT apicount.hit(E'/v/bad/a\tb')$$),
	('path with newline',             $$SELECT apicount.hit(E'/v/bad/a\nb')$$),
	('path with 0x01',                $$SELECT apicount.hit(E'/v/bad/a\x01b')$$),
	('path with 0x1f',                $$SELECT apicount.hit(E'/v/bad/a\x1fb')$$),
	('path with DEL 0x7f',            $$SELECT apicount.hit(E'/v/bad/a\x7fb')$$),
	('path with control char in query', $$SELECT apicount.hit(E'/v/bad/q?x=\x01')$$),
	('path with space (valid)',       $$SELECT apicount.hit('/v/ok/a b')$$),
	-- user id
	('user_id with 0x07',             $$SELECT apicount.hit('/v/bad/user', user_id => E'al\x07ice')$$),
	('user_id with DEL',              $$SELECT apicount.hit('/v/bad/user', user_id => E'al\x7fice')$$),
	('user_id empty (valid)',         $$SELECT apicount.hit('/v/ok/user', user_id => '')$$),
	-- status
	('status 99',                     $$SELECT apicount.hit('/v/bad/status', status => 99)$$),
	('status 600',                    $$SELECT apicount.hit('/v/bad/status', status => 600)$$),
	('status 0',                      $$SELECT apicount.hit('/v/bad/status', status => 0)$$),
	('status -200',                   $$SELECT apicount.hit('/v/bad/status', status => -200)$$),
	('status 100 (valid)',            $$SELECT apicount.hit('/v/ok/status', status => 100)$$),
	('status 599 (valid)',            $$SELECT apicount.hit('/v/ok/status', status => 599)$$),
	-- latency
	('latency -1',                    $$SELECT apicount.hit('/v/bad/lat', latency_ms => -1)$$),
	('latency -0.001',                $$SELECT apicount.hit('/v/bad/lat', latency_ms => -0.001)$$),
	('latency NaN',                   $$SELECT apicount.hit('/v/bad/lat', latency_ms => 'NaN')$$),
	('latency Infinity',              $$SELECT apicount.hit('/v/bad/lat', latency_ms => 'Infinity')$$),
	('latency -Infinity',             $$SELECT apicount.hit('/v/bad/lat', latency_ms => '-Infinity')$$),
	('latency NaN (insert)',          $$INSERT INTO apicount.requests (path, latency_ms) VALUES ('/v/bad/lat', 'NaN')$$),
	('latency 0 (valid)',             $$SELECT apicount.hit('/v/ok/lat', latency_ms => 0)$$),
	('latency 3600000 (valid)',       $$SELECT apicount.hit('/v/ok/lat', latency_ms => 3600000)$$),
	-- timestamp
	('ts now+6min',                   $$SELECT apicount.hit('/v/bad/ts', ts => now() + interval '6 minutes')$$),
	('ts stmt+5min+1us',              $$SELECT apicount.hit('/v/bad/ts', ts => statement_timestamp() + interval '5 minutes 0.000001 seconds')$$),
	('ts infinity',                   $$SELECT apicount.hit('/v/bad/ts', ts => 'infinity')$$),
	('ts -infinity',                  $$SELECT apicount.hit('/v/bad/ts', ts => '-infinity')$$),
	('ts now-31days',                 $$SELECT apicount.hit('/v/bad/ts', ts => now() - interval '31 days')$$),
	('ts stmt-30days-1us',            $$SELECT apicount.hit('/v/bad/ts', ts => statement_timestamp() - interval '30 days 0.000001 seconds')$$),
	('ts now-31days (insert)',        $$INSERT INTO apicount.requests (ts, path) VALUES (now() - interval '31 days', '/v/bad/ts')$$),
	('ts stmt+5min (valid)',          $$SELECT apicount.hit('/v/ok/ts', ts => statement_timestamp() + interval '5 minutes')$$),
	('ts now-29days (valid)',         $$SELECT apicount.hit('/v/ok/ts', ts => now() - interval '29 days')$$),
	('ts stmt-30days (valid)',        $$SELECT apicount.hit('/vr/ts', ts => statement_timestamp() - interval '30 days')$$),
	-- method
	('method empty',                  $$SELECT apicount.hit('/v/bad/m', '')$$),
	('method with space',             $$SELECT apicount.hit('/v/bad/m', 'GE T')$$),
	('method with tab',               $$SELECT apicount.hit('/v/bad/m', E'GET\t')$$),
	('method with slash',             $$SELECT apicount.hit('/v/bad/m', 'GET/1')$$),
	('method with parentheses',       $$SELECT apicount.hit('/v/bad/m', '(GET)')$$),
	('method with comma',             $$SELECT apicount.hit('/v/bad/m', 'GET,POST')$$),
	('method non-ASCII',              $$SELECT apicount.hit('/v/bad/m', 'GÉT')$$),
	('method 17 chars',               $$SELECT apicount.hit('/v/bad/m', repeat('A', 17))$$),
	('method 17 chars (insert)',      $$INSERT INTO apicount.requests (method, path) VALUES (repeat('a', 17), '/v/bad/m')$$),
	('method 16 chars (valid)',       $$SELECT apicount.hit('/v/ok/m', repeat('a', 16))$$),
	('method all tchar symbols (valid)', $$SELECT apicount.hit('/v/ok/m', '!#$%&''*+-.^_`|~')$$),
	-- PostgreSQL's own input errors
	('client_ip invalid',             $$SELECT apicount.hit('/v/bad/ip', client_ip => '10.0.0.256')$$),
	('client_ip invalid (insert)',    $$INSERT INTO apicount.requests (path, client_ip) VALUES ('/v/bad/ip', '1.2.3')$$),
	('path invalid UTF-8',            $$SELECT apicount.hit(E'/v/bad/\xc3')$$),
	('user_id invalid UTF-8',         $$SELECT apicount.hit('/v/bad/u8', user_id => convert_from('\xff'::bytea, 'UTF8'))$$)
) AS t(label, stmt);

-- nothing of the failed statements was counted; the valid edge values were
SELECT pg_temp.calls('/v/bad/%') AS bad_calls;
SELECT path, method, calls, errors
FROM apicount.top_apis(1000000, now() - interval '40 days', now() + interval '1 hour')
WHERE path LIKE '/v/ok/%'
ORDER BY path, method;

--
-- multi-row statements with one bad row count nothing, and the session goes on
--
\set VERBOSITY sqlstate
INSERT INTO apicount.requests (path, status) VALUES
	('/v/multi', 200), ('/v/multi', 404), ('/v/multi', 600), ('/v/multi', 200);
INSERT INTO apicount.requests (path, user_id)
SELECT '/v/multi', CASE WHEN i = 500 THEN E'bad\x01' ELSE 'u' || i END
FROM generate_series(1, 1000) AS i;
SELECT apicount.hit('/v/multi', status => s) FROM (VALUES (200), (201), (1000)) AS v(s);
SELECT apicount.hit(p) FROM (VALUES ('/v/multi'), (NULL)) AS v(p);
COPY apicount.requests (path, method) FROM STDIN;
/v/multi	GET
/v/multi	POST
/v/multi	BAD METHOD
/v/multi	GET
\.
\set VERBOSITY default
SELECT pg_temp.calls('/v/multi') AS multi_calls_after_failures;
INSERT INTO apicount.requests (path, status) VALUES ('/v/multi', 200), ('/v/multi', 404);
SELECT pg_temp.calls('/v/multi') AS multi_calls;

--
-- methods are upper-cased (and grouped after that)
--
INSERT INTO apicount.requests (method, path) VALUES
	('get', '/v/case'), ('Get', '/v/case'), ('GET', '/v/case'),
	('m-search', '/v/case'), ('pAtCh', '/v/case'), ('propfind', '/v/case');
SELECT method, calls
FROM apicount.top_apis(100000, now() - interval '1 hour', now() + interval '1 hour')
WHERE path = '/v/case'
ORDER BY method;

--
-- truncation: paths > 256 bytes and user ids > 128 bytes, cut at a character
-- boundary, each counted in stats.truncated; normalization comes first
--
SELECT truncated AS trunc1 FROM apicount.stats \gset
CREATE TEMP TABLE long_paths (label text, input text);
INSERT INTO long_paths VALUES
	('ascii 300 bytes',         '/v/trunc1/' || repeat('x', 290)),
	('ascii 257 bytes',         '/v/trunc2/' || repeat('x', 247)),
	('ascii 256 bytes',         '/v/trunc3/' || repeat('x', 246)),
	('2-byte char at 256..257', '/v/trunc4/' || repeat('y', 245) || 'é' || 'zzz'),
	('3-byte char at 255..257', '/v/trunc5/' || repeat('y', 244) || '€' || 'zzz'),
	('4-byte char at 254..257', '/v/trunc6/' || repeat('y', 243) || '😀' || 'zzz'),
	('2-byte chars throughout', '/v/trunc7/' || repeat('ü', 150)),
	('300 digits -> :id',       '/v/trunc8/' || repeat('1', 300) || '/x'),
	('long query string',       '/v/trunc9/a?' || repeat('q', 400));
SELECT count(*) AS hits FROM long_paths, LATERAL apicount.hit(input);
SELECT truncated - :trunc1 AS path_truncations FROM apicount.stats;
SELECT l.label, octet_length(l.input) AS in_bytes, octet_length(a.path) AS stored_bytes,
       starts_with(l.input, a.path) AS is_prefix,
       CASE WHEN octet_length(a.path) <= 40 THEN a.path END AS short_path, a.calls
FROM long_paths l
JOIN apicount.top_apis(100000, now() - interval '1 hour', now() + interval '1 hour') a
  ON starts_with(a.path, left(l.input, 10))
ORDER BY l.label;

SELECT truncated AS trunc2 FROM apicount.stats \gset
CREATE TEMP TABLE long_users (label text, input text);
INSERT INTO long_users VALUES
	('ascii 200 bytes',         repeat('t', 200)),
	('ascii 129 bytes',         repeat('u', 128) || 'v'),
	('ascii 128 bytes',         repeat('w', 128)),
	('2-byte char at 128..129', repeat('x', 127) || 'é' || 'tail'),
	('3-byte char at 127..129', repeat('y', 126) || '€' || 'tail'),
	('4-byte chars throughout', repeat('😀', 50));
SELECT count(*) AS hits FROM long_users, LATERAL apicount.hit('/v/trunc-user', user_id => input);
SELECT truncated - :trunc2 AS user_truncations FROM apicount.stats;
SELECT l.label, octet_length(l.input) AS in_bytes, octet_length(c.user_id) AS stored_bytes,
       starts_with(l.input, c.user_id) AS is_prefix, c.calls
FROM long_users l
JOIN apicount.callers('/v/trunc-user', now() - interval '1 hour', now() + interval '1 hour') c
  ON left(l.input, 1) = left(c.user_id, 1)
ORDER BY l.label;

-- with normalize_paths off the raw path (query string included) is what gets cut
SET apicount.normalize_paths = off;
SELECT truncated AS trunc3 FROM apicount.stats \gset
SELECT apicount.hit('/v/raw/a?' || repeat('q', 300));
SELECT truncated - :trunc3 AS raw_truncations FROM apicount.stats;
SELECT octet_length(path) AS stored_bytes, path = left('/v/raw/a?' || repeat('q', 300), 256) AS is_prefix
FROM apicount.top_apis(100000, now() - interval '1 hour', now() + interval '1 hour')
WHERE path LIKE '/v/raw/%';
RESET apicount.normalize_paths;

-- stats.hits grew by exactly the hits that were counted
-- (the one /vr/ hit is counted in hits; its rollup row may already be gone)
SELECT (SELECT hits FROM apicount.stats) - :hits0 AS hits_delta,
       pg_temp.calls('/v/%') AS v_calls;
