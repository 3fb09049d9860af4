--
-- ingest: the ways hits get in (INSERT, INSERT ... SELECT, COPY, hit()),
-- their command tags, column defaults, and the counts that land.
-- Paths used here all start with /ingest/.
--
-- (quietly: an earlier suite may have created it)
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS apicount;
RESET client_min_messages;
SET timezone = 'UTC';

-- wall-clock bounds around every default timestamp used below
SELECT clock_timestamp() AS t_before, now() - interval '3 minutes' AS t_past \gset

-- command tags report the rows counted
\set QUIET off
INSERT INTO apicount.requests (path) VALUES ('/ingest/one');
INSERT INTO apicount.requests VALUES
	(NULL,    'get',  '/ingest/multi', '192.0.2.1',   'alice', 200, 10),
	(DEFAULT, 'POST', '/ingest/multi', '192.0.2.1',   'alice', 404, 30),
	(:'t_past', DEFAULT, '/ingest/multi', '2001:db8::1', NULL, 503, NULL);
-- INSERT ... SELECT: even i -> GET, odd i -> PUT; i 1..6 -> 200, 7..8 -> 404, 9..10 -> 500
INSERT INTO apicount.requests (method, path, status, latency_ms)
SELECT CASE WHEN i % 2 = 0 THEN 'GET' ELSE 'PUT' END, '/ingest/select',
       CASE WHEN i <= 6 THEN 200 WHEN i <= 8 THEN 404 ELSE 500 END, i
FROM generate_series(1, 10) AS i;
-- an INSERT ... SELECT of no rows counts nothing
INSERT INTO apicount.requests (path) SELECT '/ingest/none' WHERE false;
-- COPY, all seven columns (\N ts and method mean statement_timestamp() and GET)
COPY apicount.requests FROM STDIN;
\N	\N	/ingest/copy	198.51.100.7	bob	200	1.5
\N	delete	/ingest/copy	198.51.100.7	bob	500	2.5
\N	patch	/ingest/copy	\N	\N	\N	\N
\.
-- COPY, a column subset (ts and method take their defaults)
COPY apicount.requests (path, status) FROM STDIN;
/ingest/copy2	201
/ingest/copy2	429
/ingest/copy2	\N
\.
-- COPY csv; the path is normalized like any other
COPY apicount.requests (method, path, user_id) FROM STDIN WITH (FORMAT csv);
get,/ingest/csv?page=2,"dave"
\.
\set QUIET on

-- hit(): defaults, positional, named, explicit NULL method and ts
SELECT apicount.hit('/ingest/hit');
SELECT apicount.hit('/ingest/hit', 'post', '203.0.113.5', 'carol', 302, 0);
SELECT apicount.hit(path => '/ingest/hit', status => 500, ts => NULL, method => NULL);

SELECT clock_timestamp() AS t_after \gset

-- the view itself never returns rows
SELECT * FROM apicount.requests;

-- what landed, per (method, path): flushed rollups + live counts
SELECT method, path, calls, errors, error_ratio, avg_latency_ms
FROM apicount.top_apis(100000, now() - interval '1 hour', now() + interval '1 hour')
WHERE path LIKE '/ingest/%'
ORDER BY path, method;

-- per caller (only /ingest/multi has a hit in the past)
SELECT client_ip, user_id, calls, errors,
       first_seen = date_trunc('minute', :'t_past'::timestamptz) AS first_is_past,
       last_seen BETWEEN date_trunc('minute', :'t_before'::timestamptz) AND :'t_after' AS last_is_recent
FROM apicount.callers('/ingest/multi', now() - interval '1 hour', now() + interval '1 hour')
ORDER BY calls DESC, client_ip;
SELECT client_ip, user_id, calls, errors
FROM apicount.callers('/ingest/copy', now() - interval '1 hour', now() + interval '1 hour');
SELECT client_ip, user_id, calls, errors
FROM apicount.callers('/ingest/csv', now() - interval '1 hour', now() + interval '1 hour');
SELECT client_ip, user_id, calls, errors
FROM apicount.callers('/ingest/hit', now() - interval '1 hour', now() + interval '1 hour');

-- default and NULL timestamps are the statement's time: every bucket other than
-- the explicit past one lies between the two clock readings
SELECT path, bool_and(time BETWEEN date_trunc('minute', :'t_before'::timestamptz) AND :'t_after') AS default_ts_ok
FROM (SELECT p AS path, s.time
      FROM unnest(ARRAY['/ingest/one', '/ingest/select', '/ingest/copy',
                        '/ingest/copy2', '/ingest/csv', '/ingest/hit']) AS p,
           apicount.series(p, now() - interval '1 hour', now() + interval '1 hour') s) x
GROUP BY path ORDER BY path;

-- the live view holds the recent hits (entries of recent minutes are kept
-- after a flush; calls is the minute's total, flushed or not): each hit once
-- in the API tier, and (all hits here are tracked) once in the caller tier
SELECT path, method, sum(calls) FILTER (WHERE tier = 'api') AS calls,
       sum(calls) FILTER (WHERE tier = 'caller') AS caller_calls
FROM apicount.live
WHERE path LIKE '/ingest/%' AND path <> '/ingest/multi'
GROUP BY path, method
ORDER BY path, method;
SELECT sum(calls) FILTER (WHERE tier = 'api') AS multi_recent_calls,
       sum(calls) FILTER (WHERE tier = 'caller') AS multi_recent_caller_calls
FROM apicount.live
WHERE path = '/ingest/multi' AND bucket >= date_trunc('minute', :'t_before'::timestamptz);
