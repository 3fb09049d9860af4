--
-- normalize: apicount.normalize_path() over a table of inputs, its errors,
-- ingest using the same normalization, and apicount.normalize_paths = off.
-- Paths counted here start with /norm/.
--
-- (quietly: an earlier suite may have created it)
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS apicount;
RESET client_min_messages;
SET timezone = 'UTC';

CREATE TEMP TABLE norm_cases (n int, input text, expected text);
INSERT INTO norm_cases VALUES
	-- query string and fragment
	( 1, '/users',                                      '/users'),
	( 2, '/users?page=2',                               '/users'),
	( 3, '/users#top',                                  '/users'),
	( 4, '/users#top?x=1',                              '/users'),
	( 5, '/users?next=/a/1#frag',                       '/users'),
	( 6, '/users/42?x=1',                               '/users/:id'),
	( 7, '/users/?',                                    '/users/'),
	-- digit segments
	( 8, '/users/42',                                   '/users/:id'),
	( 9, '/users/0',                                    '/users/:id'),
	(10, '/users/007/orders/12345678901234567890',      '/users/:id/orders/:id'),
	(11, '/42',                                         '/:id'),
	(12, '42',                                          ':id'),
	(13, 'users/42',                                    'users/:id'),
	(14, '/users/-1',                                   '/users/-1'),
	(15, '/users/1.5',                                  '/users/1.5'),
	(16, '/users/1e3',                                  '/users/1e3'),
	(17, '/users/42abc',                                '/users/42abc'),
	(18, '/users/v2',                                   '/users/v2'),
	(19, '/users/+42',                                  '/users/+42'),
	(20, '/users/４２',                                 '/users/４２'),
	(21, '/users/٤٢',                                   '/users/٤٢'),
	-- UUIDs
	(22, '/o/123e4567-e89b-12d3-a456-426614174000',     '/o/:id'),
	(23, '/o/123E4567-E89B-12D3-A456-426614174000',     '/o/:id'),
	(24, '/o/123e4567-E89B-12d3-A456-426614174000/x',   '/o/:id/x'),
	(25, '/o/{123e4567-e89b-12d3-a456-426614174000}',   '/o/{123e4567-e89b-12d3-a456-426614174000}'),
	(26, '/o/123e4567e89b12d3a456426614174000',         '/o/:id'),
	(27, '/o/123e4567-e89b-12d3-a456-42661417400g',     '/o/123e4567-e89b-12d3-a456-42661417400g'),
	(28, '/o/123e4567-e89b-12d3-a456-4266141740000',    '/o/123e4567-e89b-12d3-a456-4266141740000'),
	(29, '/o/123e4567-e89b-12d3-a456-42661417400',      '/o/123e4567-e89b-12d3-a456-42661417400'),
	(30, '/o/123e456-7e89b-12d3-a456-426614174000',     '/o/123e456-7e89b-12d3-a456-426614174000'),
	(31, '/o/123e4567_e89b_12d3_a456_426614174000',     '/o/123e4567_e89b_12d3_a456_426614174000'),
	-- hex runs: 16 or more hex chars, any case
	(32, '/h/deadbeefdeadbee',                          '/h/deadbeefdeadbee'),
	(33, '/h/deadbeefdeadbeef',                         '/h/:id'),
	(34, '/h/DEADBEEFDEADBEEF',                         '/h/:id'),
	(35, '/h/DeadBeefDeadBeef0123',                     '/h/:id'),
	(36, '/h/deadbeefdeadbeeg',                         '/h/deadbeefdeadbeeg'),
	(37, '/h/abcdef',                                   '/h/abcdef'),
	(38, '/h/0x1234567890abcdef',                       '/h/0x1234567890abcdef'),
	(39, '/h/' || repeat('f', 64),                      '/h/:id'),
	-- mixed segments, slashes
	(40, '/a/1/b/deadbeefdeadbeef/c/123e4567-e89b-12d3-a456-426614174000/d', '/a/:id/b/:id/c/:id/d'),
	(41, '/users/42/',                                  '/users/:id/'),
	(42, '/users/',                                     '/users/'),
	(43, '/',                                           '/'),
	(44, '//',                                          '//'),
	(45, '//42//',                                      '//:id//'),
	(46, '/:id/42',                                     '/:id/:id'),
	(47, '/users/42;jsessionid=1',                      '/users/42;jsessionid=1'),
	(48, '/users/%34%32',                               '/users/%34%32'),
	(49, '/Users/ÄÖÜ/42',                               '/Users/ÄÖÜ/:id'),
	(50, 'no-slash',                                    'no-slash'),
	(51, ' /users/42 ',                                 ' /users/42 '),
	(52, '/users/ 42',                                  '/users/ 42');

SELECT n, input, apicount.normalize_path(input) AS normalized,
       apicount.normalize_path(input) = expected AS ok
FROM norm_cases ORDER BY n;

-- no truncation in normalize_path itself
SELECT octet_length(apicount.normalize_path('/long/' || repeat('x', 1000))) AS long_len,
       apicount.normalize_path('/long/' || repeat('1', 1000)) AS long_digits;

-- STRICT: NULL in, NULL out
SELECT apicount.normalize_path(NULL) IS NULL AS null_is_null;

-- empty (also after stripping) and control characters are errors
\set VERBOSITY sqlstate
SELECT apicount.normalize_path('');
SELECT apicount.normalize_path('?');
SELECT apicount.normalize_path('#');
SELECT apicount.normalize_path('?a=1#b');
SELECT apicount.normalize_path(E'/a\tb');
SELECT apicount.normalize_path(E'/a\x7f');
\set VERBOSITY default

-- normalize_path is what ingest applies (paths prefixed with /norm)
INSERT INTO apicount.requests (path)
SELECT '/norm' || input FROM norm_cases WHERE input LIKE '/%';
CREATE TEMP TABLE norm_expected AS
SELECT apicount.normalize_path('/norm' || input) AS path, count(*) AS calls
FROM norm_cases WHERE input LIKE '/%' GROUP BY 1;
SELECT count(*) AS expected_keys, sum(calls) AS expected_calls FROM norm_expected;
-- every normalized path landed with its count, and nothing else did
SELECT count(*) AS mismatches
FROM norm_expected e
FULL JOIN (SELECT path, calls
           FROM apicount.top_apis(100000, now() - interval '1 hour', now() + interval '1 hour')
           WHERE path LIKE '/norm/%' OR path = '/norm') a USING (path)
WHERE a.calls IS DISTINCT FROM e.calls;

-- apicount.normalize_paths = off keeps the raw path, query string included
SET apicount.normalize_paths = off;
SHOW apicount.normalize_paths;
SELECT apicount.hit('/normoff/users/42?page=2#top');
SELECT apicount.hit('/normoff/users/123e4567-e89b-12d3-a456-426614174000');
SELECT apicount.hit('?normoff');
INSERT INTO apicount.requests (path) VALUES ('/normoff/h/deadbeefdeadbeef/');
-- still rejected with normalization off
\set VERBOSITY sqlstate
SELECT apicount.hit('');
SELECT apicount.hit(E'/normoff/\x01');
\set VERBOSITY default
-- normalize_path() itself always normalizes
SELECT apicount.normalize_path('/normoff/users/42?page=2') AS fn_ignores_setting;
RESET apicount.normalize_paths;
SELECT apicount.hit('/normoff/users/42?page=2#top');
SELECT path, calls
FROM apicount.top_apis(100000, now() - interval '1 hour', now() + interval '1 hour')
WHERE path LIKE '/normoff/%' OR path LIKE '?normoff%'
ORDER BY path;
