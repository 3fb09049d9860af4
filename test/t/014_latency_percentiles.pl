# 014_latency_percentiles.pl — latency histograms against exact percentiles.
#
# The same latencies are kept in a plain table (truth) and recorded through
# apicount.requests; the expected percentiles come from percentile_disc over that
# table (PostgreSQL's own ordered-set aggregate, independent of apicount), restricted
# to the same minute buckets.  Every estimate must be within 2 % of the exact value.
# Proves:
#   - latency_percentiles is within 2 % with everything unflushed (live pages only),
#     after a flush (api_minute / api_hour histograms), and with half of each;
#   - a range spanning whole hours (api_hour) plus partial edge hours (api_minute)
#     and a sub-range of a few minutes select exactly the right minutes;
#   - series.p95_latency_ms per minute is within 2 % of percentile_disc per minute;
#   - every flushed histogram holds exactly latency_count latencies, in api_minute
#     and api_hour, and minutes() merges flushed and live rows;
#   - rolled-back transactions and savepoints leave the histograms untouched;
#   - the latency page store holds (max_entries + max_apis) / 8 + 1,024 pages; latencies
#     that find no page are counted as unbinned, never in a histogram;
#   - hits of APIs that find no room in the API tier keep their latencies under their
#     method's '(other)' row, and every row's histogram holds exactly its latency_count;
#   - bad arguments give 22023 / 22004 / 22P03.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $BOUND = 0.02;

sub new_node
{
	my ($name, $extra) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init;
	$node->append_conf('postgresql.conf',
		"shared_preload_libraries = 'apicount'\n"
		  . "apicount.flush_interval = '1h'\n"    # flushes only when asked
		  . "log_statement = none\n"
		  . "timezone = 'UTC'\n"
		  . ($extra // ''));
	$node->start;
	$node->safe_psql('postgres', 'CREATE EXTENSION apicount');
	return $node;
}

my $node = new_node('latency');

# Worst relative error of latency_percentiles(path, from, to, ps) against
# percentile_disc over truth rows whose minute bucket is in [trunc(from), to).
# $from and $to are SQL expressions.  Also checks that the same paths are returned.
sub check_range
{
	my ($label, $from, $to, $where, $path) = @_;
	$where //= 'true';
	$path //= 'NULL';
	my $rows = $node->safe_psql(
		'postgres', qq{
		WITH exact AS (
			SELECT t.method, t.path, p.pct,
			       percentile_disc(p.pct) WITHIN GROUP (ORDER BY t.latency_ms) AS v
			FROM truth t, unnest('{0,0.01,0.25,0.5,0.75,0.9,0.95,0.99,0.999,1}'::float8[]) p(pct)
			WHERE date_trunc('minute', t.ts) >= date_trunc('minute', $from)
			  AND date_trunc('minute', t.ts) < $to AND t.latency_ms IS NOT NULL AND $where
			GROUP BY 1, 2, 3
		), est AS (
			SELECT * FROM apicount.latency_percentiles($path, $from, $to,
				'{0,0.01,0.25,0.5,0.75,0.9,0.95,0.99,0.999,1}')
		)
		SELECT count(*) FILTER (WHERE exact.v IS NULL OR est.latency_ms IS NULL),
		       count(*),
		       coalesce(max(abs(est.latency_ms - exact.v) / exact.v), 1)
		FROM exact FULL JOIN est ON est.method = exact.method AND est.path = exact.path
		                        AND est.percentile = exact.pct});
	my ($unmatched, $n, $worst) = split /\|/, $rows;
	is($unmatched, 0, "$label: same APIs and percentiles as percentile_disc ($n values)");
	cmp_ok($n, '>', 0, "$label: there is something to compare");
	cmp_ok($worst, '<=', $BOUND, "$label: worst relative error $worst <= $BOUND");
}

# 3 APIs with different latency shapes, ts over the last 150 minutes (whole hours
# and partial edge hours), plus the current minute; seeded for reproducibility.
$node->safe_psql(
	'postgres', q{
	SELECT setseed(0.42);
	CREATE TABLE truth AS
	SELECT now() - (random() * 150 * 60) * interval '1 second' AS ts,
	       m.method, m.path, 200 AS status,
	       CASE m.path
	         WHEN '/api/fast' THEN 0.05 + random() * 2              -- uniform 50 us .. 2 ms
	         WHEN '/api/slow' THEN exp(random() * 9)                -- 1 ms .. 8 s, log-uniform
	         ELSE 20 * exp((random() + random() + random() - 1.5) * 3)  -- log-normal-ish
	       END AS latency_ms,
	       random() < 0.5 AS first_half
	FROM generate_series(1, 30000) g,
	     LATERAL (SELECT (ARRAY['GET','GET','POST'])[1 + (g % 3)] AS method,
	                     (ARRAY['/api/fast','/api/slow','/api/login'])[1 + (g % 3)] AS path) m;
	-- hits without latency count as calls but not in histograms
	INSERT INTO truth SELECT now(), 'GET', '/api/fast', 200, NULL, true FROM generate_series(1, 50);
});
my $n_lat = $node->safe_psql('postgres', 'SELECT count(latency_ms) FROM truth');
is($n_lat, 30000, 'truth holds 30,000 latencies');

# half of the hits now (they stay unflushed)
$node->safe_psql('postgres',
	q{INSERT INTO apicount.requests (ts, method, path, status, latency_ms)
	  SELECT ts, method, path, status, latency_ms FROM truth WHERE first_half});
check_range('live only, 150 min', "now() - interval '3 hours'", "now() + interval '1 minute'",
	'first_half');

# flush them, then record the other half (live) and compare the merge
is($node->safe_psql('postgres', 'SELECT apicount.flush() > 0'), 't', 'flush wrote rows');
is($node->safe_psql('postgres', 'SELECT count(*) FROM apicount._live_latency(\'-infinity\', \'infinity\')'),
	'0', 'no live histogram pages left after the flush');
$node->safe_psql('postgres',
	q{INSERT INTO apicount.requests (ts, method, path, status, latency_ms)
	  SELECT ts, method, path, status, latency_ms FROM truth WHERE NOT first_half});
check_range('half flushed + half live, 150 min', "now() - interval '3 hours'",
	"now() + interval '1 minute'");

# rolled back work leaves no trace: huge latencies in an aborted transaction and an
# aborted savepoint
$node->safe_psql(
	'postgres', q{
	BEGIN;
	INSERT INTO apicount.requests (method, path, status, latency_ms)
	SELECT 'GET', '/api/fast', 200, 60000 FROM generate_series(1, 1000);
	ROLLBACK;
	BEGIN;
	SAVEPOINT s;
	INSERT INTO apicount.requests (method, path, status, latency_ms)
	SELECT 'GET', '/api/fast', 200, 60000 FROM generate_series(1, 1000);
	ROLLBACK TO SAVEPOINT s;
	SAVEPOINT t;
	SELECT apicount.hit('/api/fast', 'GET', NULL, NULL, 200, 0.5);
	RELEASE SAVEPOINT t;
	COMMIT;
	INSERT INTO truth VALUES (now(), 'GET', '/api/fast', 200, 0.5, false);
});
check_range('after rollbacks (still exact set)', "now() - interval '3 hours'",
	"now() + interval '1 minute'");

is($node->safe_psql('postgres', 'SELECT apicount.flush() > 0'), 't', 'second flush');
check_range('all flushed, 150 min (api_hour + edges)', "now() - interval '3 hours'",
	"now() + interval '1 minute'");
check_range('whole hours only', "date_trunc('hour', now()) - interval '2 hours'",
	"date_trunc('hour', now())");
check_range('a 7-minute sub-range', "now() - interval '40 minutes'",
	"now() - interval '33 minutes'");
check_range('one path via the path argument', "now() - interval '3 hours'",
	"now() + interval '1 minute'", q{path = '/api/slow'}, q{'/api/slow'});

# the path argument restricts the result to that path
is($node->safe_psql('postgres',
	q{SELECT string_agg(DISTINCT path, ',') FROM apicount.latency_percentiles('/api/slow', now() - interval '3 hours', now() + interval '1 minute')}),
	'/api/slow', 'latency_percentiles(path) returns only that path');

# histogram totals are exact, in both rollups
is( $node->safe_psql(
		'postgres', q{
	SELECT count(*) FILTER (WHERE coalesce(apicount.latency_count(latency_hist), 0) <> latency_count)
	       || ',' || sum(latency_count)
	FROM apicount.api_minute}),
	'0,' . ($n_lat + 1),
	'every api_minute histogram holds exactly latency_count latencies (30,001 in all)');
is( $node->safe_psql(
		'postgres', q{
	SELECT count(*) FILTER (WHERE coalesce(apicount.latency_count(latency_hist), 0) <> latency_count)
	       || ',' || sum(latency_count)
	FROM apicount.api_hour}),
	'0,' . ($n_lat + 1), 'api_hour histograms agree with api_minute');

# series p95 per minute against percentile_disc per minute
my $series = $node->safe_psql(
	'postgres', q{
	WITH exact AS (
		SELECT date_trunc('minute', ts) AS t,
		       percentile_disc(0.95) WITHIN GROUP (ORDER BY latency_ms) AS v
		FROM truth WHERE path = '/api/login' AND ts >= now() - interval '60 minutes'
		GROUP BY 1
	), s AS (
		SELECT "time", p95_latency_ms
		FROM apicount.series('/api/login', now() - interval '59 minutes', now() + interval '1 minute', '1 minute')
	)
	SELECT count(*), count(*) FILTER (WHERE s.p95_latency_ms IS NULL OR exact.v IS NULL),
	       max(abs(s.p95_latency_ms - exact.v) / exact.v)
	FROM exact FULL JOIN s ON s."time" = exact.t
	WHERE exact.t IS NULL OR exact.t >= date_trunc('minute', now() - interval '59 minutes')});
my ($sn, $smiss, $sworst) = split /\|/, $series;
cmp_ok($sn, '>=', 50, "series: $sn minutes compared");
is($smiss, 0, 'series: a p95 for every minute with latencies');
cmp_ok($sworst, '<=', $BOUND, "series p95 worst relative error $sworst <= $BOUND");

# minutes(): flushed + live merged per minute; totals match truth
$node->safe_psql('postgres',
	q{INSERT INTO apicount.requests (method, path, status, latency_ms) VALUES ('GET', '/api/fast', 200, 1.0);
	  INSERT INTO truth VALUES (now(), 'GET', '/api/fast', 200, 1.0, false);});
is( $node->safe_psql(
		'postgres', q{
	WITH m AS (SELECT * FROM apicount.minutes(now() - interval '3 hours', now() + interval '1 minute')),
	     t AS (SELECT date_trunc('minute', ts) AS bucket, method, path, count(*) AS calls,
	                  count(latency_ms) AS lc FROM truth GROUP BY 1, 2, 3)
	SELECT count(*) FILTER (WHERE m.calls IS DISTINCT FROM t.calls
	                           OR m.latency_count IS DISTINCT FROM t.lc
	                           OR coalesce(apicount.latency_count(m.latency_hist), 0) <> t.lc)
	FROM m FULL JOIN t USING (bucket, method, path)}),
	'0', 'minutes(): calls, latency_count and histogram totals equal truth per minute');
is( $node->safe_psql(
		'postgres', q{
	SELECT (SELECT count(*) FROM apicount.minutes('-infinity', 'infinity'))
	     = (SELECT count(*) FROM apicount.minutes(now() - interval '1 day', now() + interval '1 minute'))
	   AND (SELECT count(*) FROM apicount.minutes(now() - interval '3 hours', '9999-12-31'))
	     = (SELECT count(*) FROM apicount.minutes(now() - interval '3 hours', now() + interval '1 minute'))
	   AND (SELECT count(*) FROM apicount.minutes('infinity', 'infinity')) = 0}),
	't', 'minutes(): infinite and far-future edges select the same rows (live ones included)');
my $ordered = $node->safe_psql('postgres',
	q{SELECT bool_and(b >= pb) FROM (SELECT bucket AS b, lag(bucket, 1, '-infinity') OVER () AS pb
	  FROM apicount.minutes(now() - interval '3 hours')) s});
is($ordered, 't', 'minutes() returns rows in bucket order');

# errors
my ($ret, $out, $err) = $node->psql('postgres',
	q{SELECT * FROM apicount.latency_percentiles(NULL, now() - interval '1 hour', now(), '{0.5,1.5}')});
like($err, qr/between 0 and 1/, 'a percentile above 1 is rejected');
($ret, $out, $err) = $node->psql('postgres',
	q{\set VERBOSITY verbose
	  SELECT apicount.latency_percentile('\x01ff'::bytea, 0.5)});
like($err, qr/22P03/, 'a malformed histogram gives 22P03');
($ret, $out, $err) = $node->psql('postgres',
	q{\set VERBOSITY verbose
	  SELECT apicount.latency_percentile('\x01'::bytea, -0.1)});
like($err, qr/22023/, 'percentile -0.1 gives 22023');
($ret, $out, $err) = $node->psql('postgres',
	q{\set VERBOSITY verbose
	  SELECT * FROM apicount.latency_percentiles(NULL, NULL, now())});
like($err, qr/22004/, 'a NULL range gives 22004');
is($node->safe_psql('postgres', q{SELECT apicount.latency_percentile('\x01'::bytea, 0.5) IS NULL}),
	't', 'an empty histogram has no percentile');
$node->stop;

# Small store: max_entries = 1000 and max_apis = 100 give (1000 + 100) / 8 + 1024 = 1,161
# latency pages.
my $small = new_node('latency_overflow', "apicount.max_entries = 1000\napicount.max_apis = 100\n");
is($small->safe_psql('postgres', 'SELECT latency_pages_capacity FROM apicount.stats'),
	int((1000 + 100) / 8) + 1024, 'latency_pages_capacity = (max_entries + max_apis) / 8 + 1024');

# Pages run out: 30 APIs with latencies over every bucket group (1 us .. 1 day) need
# 30 x 54 = 1,620 pages.  Latencies without a page are counted in latency_unbinned;
# the histograms hold the rest, and never more than latency_count.
$small->safe_psql('postgres',
	q{INSERT INTO apicount.requests (method, path, status, latency_ms)
	  SELECT 'GET', '/wide/x' || (g % 30), 200, 0.001 * exp((g / 30) * 0.045)
	  FROM generate_series(0, 30 * 560 - 1) g});
$small->safe_psql('postgres', 'SELECT apicount.flush()');
my ($wtotal, $wbinned, $wover, $unbinned) = split /\|/, $small->safe_psql(
	'postgres', q{
	SELECT sum(latency_count), sum(coalesce(apicount.latency_count(latency_hist), 0)),
	       count(*) FILTER (WHERE coalesce(apicount.latency_count(latency_hist), 0) > latency_count),
	       (SELECT latency_unbinned FROM apicount.stats)
	FROM apicount.api_minute});
is($wtotal, 30 * 560, 'pages exhausted: all 16,800 latencies counted in latency_count');
cmp_ok($unbinned, '>', 0, "pages exhausted: $unbinned latencies unbinned");
is($wbinned + $unbinned, $wtotal, 'pages exhausted: binned + unbinned = latency_count total');
is($wover, 0, 'pages exhausted: no histogram holds more than its latency_count');
is($small->safe_psql('postgres', 'SELECT latency_pages FROM apicount.stats'), 0,
	'the flush freed every emptied page');
$small->safe_psql('postgres', 'TRUNCATE apicount.api_minute');

# Overflow: 3,000 distinct paths overflow the 100-entry API tier; the latencies of the
# APIs that found no room are in the 'GET' '(other)' row's histogram, so every row stays
# exact (one latency per path: a named row holds 1, '(other)' the rest).
$small->safe_psql('postgres',
	q{INSERT INTO apicount.requests (method, path, status, latency_ms)
	  SELECT 'GET', '/p/x' || g, 200, 1 + g % 100 FROM generate_series(1, 3000) g});
$small->safe_psql('postgres', 'SELECT apicount.flush()');
my ($total, $bad, $in_overflow, $named, $named_lat, $other_methods) = split /\|/, $small->safe_psql(
	'postgres', q{
	SELECT sum(latency_count),
	       count(*) FILTER (WHERE coalesce(apicount.latency_count(latency_hist), 0) <> latency_count),
	       coalesce(sum(latency_count) FILTER (WHERE path = '(other)'), 0),
	       count(*) FILTER (WHERE path LIKE '/p/x%'),
	       coalesce(sum(latency_count) FILTER (WHERE path LIKE '/p/x%'), 0),
	       string_agg(DISTINCT method, ',') FILTER (WHERE path = '(other)')
	FROM apicount.api_minute});
is($total, 3000, 'overflow: 3,000 latencies flushed');
is($bad, 0, 'overflow: every row histogram holds exactly its latency_count');
cmp_ok($named, '<=', 100, "overflow: $named named rows, at most max_apis");
is($named_lat, $named, 'overflow: a named row holds its path\'s one latency');
is($in_overflow, 3000 - $named, "overflow: the other $in_overflow latencies are under the '(other)' row");
is($other_methods, 'GET', "overflow: the '(other)' row keeps the method GET");
is($small->safe_psql('postgres', 'SELECT latency_unbinned FROM apicount.stats'), $unbinned,
	'overflow: no latency went unbinned (the pages had room)');
$small->stop;

done_testing();
