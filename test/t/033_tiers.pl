# 033_tiers.pl — ranges read from the minute, hour and day tiers, path and method filters
# inside the scans, and tiered retention (issue 18).
#
# Traffic: 3 days of hits (every 7 minutes, 3 hits each, 4 paths /t/a../t/d, GET and POST,
# 2xx/4xx/5xx/NULL statuses, latencies with some NULL, 7 client IPs and users) recorded
# through apicount.requests AND copied into a plain table, public.mirror: every expected
# answer below is a GROUP BY over that mirror, never over apicount's own tables.  After a
# flush, more hits in the current minute stay unflushed (apicount.flush_interval = 1h), so the
# live counters take part in the first round of checks.
# Checks (each for several ranges, steps and filters):
#  - minutes(from, to, step, paths, method [, by_api => false]), series(path, from, to, step,
#    method) (all paths: from api_total_minute, _hour and _day),
#    top_apis(n, from, to, paths, method), top_callers_range and callers equal the mirror's
#    GROUP BY, for: whole days; a range that starts inside an hour and ends inside a day;
#    3 days up to now (live hits included); steps 1 minute, 5 minutes, 1 hour, 3 hours, 1 day;
#    no filter, one path, two paths, a method, a path and a method;
#  - a filtered answer is the unfiltered answer filtered;
#  - after the flush: api_day = sums of api_hour = sums of api_minute per day, api_total_minute,
#    _hour and _day = sums of api_minute per minute, hour and day (histograms too); percentiles
#    (series p95, latency_percentiles) equal the percentiles of the histograms merged by a
#    plain GROUP BY over api_minute;
#  - EXPLAIN (auto_explain, nested statements, at NOTICE level, 8 calls in one session, so a
#    generic plan would show): a one-path series by day over 30 days reads api_minute,
#    api_hour and api_day with index scans on (path, bucket) and the path's value in the
#    plan, and no sequential scan of a rollup;
#  - retention per tier (apicount.retention_minute = 1 day, _hour = 2 days, _day = 3 days
#    12 hours; restart: the worker applies retention at start): rows past each tier's
#    retention are gone, younger ones stay; ranges whose minutes (or hours) are gone are
#    answered from the coarser tier, each hit reported at the bucket of the finest tier that
#    still holds it, the range's ends widened to those buckets (README "Ranges and tiers").
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use ApicountTest qw(wait_for same_rows $EXPECTED_RANGE_SQL);

my $node = PostgreSQL::Test::Cluster->new('tiers');
$node->init;
$node->append_conf('postgresql.conf',
	"shared_preload_libraries = 'apicount'\n"
	  . "apicount.flush_interval = '1h'\n"
	  . "timezone = 'UTC'\n");
$node->start;
sub q1 { return $node->safe_psql('postgres', $_[0]); }
q1('CREATE EXTENSION apicount');

# ------------------------------------------------------------------ traffic and mirror
q1(q{
CREATE TABLE setup AS SELECT now() AS t0;
CREATE TABLE mirror (b timestamptz, ts timestamptz, method text, path text, client_ip inet,
                     user_id text, status int, latency_ms float8);
INSERT INTO mirror (ts, method, path, client_ip, user_id, status, latency_ms)
SELECT t0 - g * interval '7 minutes' - k * interval '13 seconds',
       CASE WHEN (g + k) % 3 = 0 THEN 'POST' ELSE 'GET' END,
       '/t/' || chr(97 + (g * k + g / 5) % 4),
       ('10.0.0.' || (g % 7))::inet, 'u' || (g % 5),
       CASE WHEN g % 11 = 0 THEN 404 WHEN g % 13 = 0 THEN 503 WHEN g % 17 = 0 THEN NULL ELSE 200 END,
       CASE WHEN g % 19 = 0 THEN NULL ELSE ((g * 7 + k * 31) % 400) + 0.5 END
FROM setup, generate_series(1, 3 * 1440 / 7) g, generate_series(1, 3) k;
UPDATE mirror SET b = date_trunc('minute', ts);
INSERT INTO apicount.requests (ts, method, path, client_ip, user_id, status, latency_ms)
SELECT ts, method, path, client_ip, user_id, status, latency_ms FROM mirror;
});
is(q1('SELECT apicount.flush() > 0'), 't', 'history flushed');
# live hits: the current minute, never flushed during the first round
q1(q{
INSERT INTO mirror (ts, method, path, client_ip, user_id, status, latency_ms)
SELECT clock_timestamp(), CASE WHEN g % 2 = 0 THEN 'GET' ELSE 'POST' END, '/t/' || chr(97 + g % 3),
       ('10.0.0.' || (g % 3))::inet, 'u' || (g % 2), CASE WHEN g % 4 = 0 THEN 500 ELSE 201 END, g + 0.5
FROM generate_series(1, 40) g;
UPDATE mirror SET b = date_trunc('minute', ts) WHERE b IS NULL;
INSERT INTO apicount.requests (ts, method, path, client_ip, user_id, status, latency_ms)
SELECT ts, method, path, client_ip, user_id, status, latency_ms FROM mirror WHERE ts > (SELECT t0 FROM setup);
});
is(q1('SELECT sum(unflushed) FROM apicount.live WHERE tier = \'api\''), '40', '40 live hits unflushed');

# the expected answers: GROUP BY over the mirror.  a0 / a1: where minutes / hours are still
# kept ('-infinity' before the retention round); a hit is reported at the bucket of the
# finest tier that holds it, and the range's ends widen to those buckets (exp_hits and
# ceil_to: ApicountTest).
q1($EXPECTED_RANGE_SQL);
q1(q{
CREATE FUNCTION lbl(b timestamptz, a0 timestamptz, a1 timestamptz) RETURNS timestamptz
LANGUAGE sql IMMUTABLE AS $$
	SELECT CASE WHEN b < a1 THEN date_trunc('day', b, 'UTC')
	            WHEN b < a0 THEN date_trunc('hour', b, 'UTC') ELSE b END $$;
CREATE FUNCTION exp_minutes(f timestamptz, t timestamptz, step interval, ps text[], m text,
                            a0 timestamptz, a1 timestamptz)
RETURNS TABLE (bucket timestamptz, method text, path text, calls bigint, ok bigint,
               client_errors bigint, server_errors bigint, latency_count bigint,
               latency_sum numeric, latency_max float8)
LANGUAGE sql STABLE AS $$
	SELECT date_bin(step, lbl(x.b, a0, a1), timestamptz '2000-01-01 00:00:00+00'), x.method, x.path,
	       count(*), count(*) FILTER (WHERE x.status BETWEEN 100 AND 399),
	       count(*) FILTER (WHERE x.status BETWEEN 400 AND 499), count(*) FILTER (WHERE x.status >= 500),
	       count(x.latency_ms), round(coalesce(sum(x.latency_ms), 0)::numeric, 3), max(x.latency_ms)
	FROM exp_hits(date_trunc('minute', f), t, ps, m, a0, a1) x GROUP BY 1, 2, 3 $$;
});

# same(label, A, B): the two queries return the same multiset of rows, and not none
sub same { return same_rows($node, @_); }

my $day = q{date_trunc('day', (SELECT t0 FROM setup), 'UTC')};
my %ranges = (
	'whole days' => [ "$day - interval '2 days'", $day ],
	'inside an hour .. inside a day' =>
	  [ "$day - interval '2 days' + interval '13 hours 17 minutes 20 seconds'", "$day - interval '1 day' + interval '9 hours 43 minutes'" ],
	'3 days up to now' => [ q{(SELECT t0 FROM setup) - interval '3 days'}, q{now() + interval '1 minute'} ],
);
my @filters = ([ 'NULL', 'NULL' ], [ q{'{/t/a}'}, 'NULL' ], [ q{'{/t/a,/t/c}'}, 'NULL' ], [ 'NULL', q{'POST'} ],
	[ q{'{/t/b}'}, q{'GET'} ]);
my @steps = ('1 minute', '5 minutes', '1 hour', '3 hours', '1 day');
my $noret = q{'-infinity'::timestamptz, '-infinity'::timestamptz};

sub round_checks
{
	my ($phase, $ret) = @_;
	$ret //= $noret;
	for my $rn (sort keys %ranges)
	{
		my ($f, $t) = @{ $ranges{$rn} };
		for my $fl (@filters)
		{
			my ($ps, $m) = @$fl;
			my $fd = "paths $ps, method $m";
			for my $step (@steps)
			{
				same("$phase: $rn, minutes() step $step, $fd",
					"SELECT bucket, method, path, calls, ok, client_errors, server_errors, latency_count, "
					  . "round(latency_sum_ms::numeric, 3), latency_max_ms "
					  . "FROM apicount.minutes($f, $t, '$step', $ps, $m)",
					"SELECT * FROM exp_minutes($f, $t, '$step', $ps, $m, $ret)");
			}
			same("$phase: $rn, top_apis, $fd",
				"SELECT method, path, calls, errors, calls_error FROM apicount.top_apis(1000, $f, $t, $ps, $m)",
				"SELECT method, path, sum(calls)::bigint, sum(client_errors + server_errors)::bigint, 0::bigint "
				  . "FROM exp_minutes($f, $t, '1 day', $ps, $m, $ret) GROUP BY 1, 2");
			same("$phase: $rn, top_callers_range by ip, $fd",
				"SELECT client_ip, calls, errors, calls_error FROM apicount.top_callers_range(1000, $f, $t, NULL, 'ip', $ps, $m)",
				"SELECT client_ip, count(*), count(*) FILTER (WHERE status >= 400), 0::bigint "
				  . "FROM exp_hits(date_trunc('minute', $f), $t, $ps, $m, $ret) GROUP BY 1")
			  if $ret eq $noret;
		}
		for my $p ('/t/a', '/t/d')
		{
			for my $m ('NULL', q{'POST'})
			{
				for my $step (@steps)
				{
					same("$phase: $rn, series('$p') step $step, method $m",
						"SELECT \"time\", method, path, calls, errors, round(avg_latency_ms::numeric, 6) "
						  . "FROM apicount.series('$p', $f, $t, '$step', $m)",
						"SELECT bucket, method, path, calls, client_errors + server_errors, "
						  . "round(latency_sum / nullif(latency_count, 0), 6) FROM exp_minutes($f, $t, '$step', '{$p}', $m, $ret)");
				}
				same("$phase: $rn, callers('$p'), method $m",
					"SELECT client_ip, user_id, first_seen, last_seen, calls, errors FROM apicount.callers('$p', $f, $t, $m)",
					"SELECT client_ip, user_id, min(b), max(b), count(*), count(*) FILTER (WHERE status >= 400) "
					  . "FROM exp_hits(date_trunc('minute', $f), $t, '{$p}', $m, $ret) GROUP BY 1, 2")
				  if $ret eq $noret;
			}
		}
		for my $step ('1 minute', '1 hour', '1 day')
		{
			same("$phase: $rn, minutes(by_api => false) step $step",
				"SELECT bucket, calls, ok, client_errors, server_errors, latency_count, round(latency_sum_ms::numeric, 3), latency_max_ms "
				  . "FROM apicount.minutes($f, $t, '$step', by_api => false)",
				"SELECT bucket, sum(calls)::bigint, sum(ok)::bigint, sum(client_errors)::bigint, sum(server_errors)::bigint, "
				  . "sum(latency_count)::bigint, sum(latency_sum), max(latency_max) FROM exp_minutes($f, $t, '$step', NULL, NULL, $ret) GROUP BY 1");
			same("$phase: $rn, series(all paths) step $step",
				"SELECT \"time\", calls, errors, round(avg_latency_ms::numeric, 6) FROM apicount.series(NULL, $f, $t, '$step')",
				"SELECT bucket, sum(calls)::bigint, sum(client_errors + server_errors)::bigint, "
				  . "round(sum(latency_sum) / nullif(sum(latency_count), 0), 6) FROM exp_minutes($f, $t, '$step', NULL, NULL, $ret) GROUP BY 1");
		}
		# a filter inside the scans gives the unfiltered answer, filtered
		same("$phase: $rn, top_apis(paths) = top_apis() filtered",
			"SELECT * FROM apicount.top_apis(1000, $f, $t, '{/t/a,/t/b}')",
			"SELECT * FROM apicount.top_apis(1000, $f, $t) WHERE path IN ('/t/a', '/t/b')");
		same("$phase: $rn, minutes(paths, method) = minutes() filtered",
			"SELECT * FROM apicount.minutes($f, $t, '1 hour', '{/t/c}', 'GET')",
			"SELECT * FROM apicount.minutes($f, $t, '1 hour') WHERE path = '/t/c' AND method = 'GET'");
	}
}

round_checks('live');
is(q1(q{SELECT sum(unflushed) FROM apicount.live WHERE tier = 'api'}), '40', 'the live hits were still unflushed');

q1('SELECT apicount.flush()');
round_checks('flushed');

# top_callers_range reads the caller rows in one aggregate when no summary of folded callers
# exists in the range, else through the summaries (_caller_groups): a summary bound of 0 in
# every range sends it the second way, which must give the same answers
q1(q{INSERT INTO apicount.heavy_minute_bounds (bucket, grouped_by, folded_calls, absent_bound)
     SELECT date_trunc('minute', (SELECT t0 FROM setup)) - g * interval '1 hour', 'ip', 0, 0
     FROM generate_series(1, 72) g});
for my $rn (sort keys %ranges)
{
	my ($f, $t) = @{ $ranges{$rn} };
	for my $fl (@filters)
	{
		my ($ps, $m) = @$fl;
		same("with summaries: $rn, top_callers_range by ip, paths $ps, method $m",
			"SELECT client_ip, calls, errors, calls_error FROM apicount.top_callers_range(1000, $f, $t, NULL, 'ip', $ps, $m)",
			"SELECT client_ip, count(*), count(*) FILTER (WHERE status >= 400), 0::bigint "
			  . "FROM exp_hits(date_trunc('minute', $f), $t, $ps, $m, $noret) GROUP BY 1");
	}
}
q1(q{DELETE FROM apicount.heavy_minute_bounds WHERE absent_bound = 0});

# ------------------------------------------------------------------ the tiers agree
for my $c (qw(calls ok client_errors server_errors latency_count))
{
	same("api_day.$c = sum of api_hour = sum of api_minute per UTC day",
		"SELECT bucket, method, path, $c FROM apicount.api_day",
		"SELECT date_trunc('day', bucket, 'UTC'), method, path, sum($c)::bigint FROM apicount.api_minute GROUP BY 1, 2, 3");
	same("api_hour.$c = sum of api_minute per UTC hour",
		"SELECT bucket, method, path, $c FROM apicount.api_hour",
		"SELECT date_trunc('hour', bucket, 'UTC'), method, path, sum($c)::bigint FROM apicount.api_minute GROUP BY 1, 2, 3");
}
for my $t (qw(minute hour day))
{
	for my $c (qw(calls ok client_errors server_errors latency_count))
	{
		same("api_total_$t.$c = sum of api_minute per $t (all APIs)",
			"SELECT bucket, $c FROM apicount.api_total_$t",
			"SELECT date_trunc('$t', bucket, 'UTC'), sum($c)::bigint FROM apicount.api_minute GROUP BY 1");
	}
	same("api_total_$t latency histograms = merged api_minute histograms (p50, p99)",
		"SELECT bucket, apicount.latency_percentile(latency_hist, 0.5), apicount.latency_percentile(latency_hist, 0.99) FROM apicount.api_total_$t WHERE latency_hist IS NOT NULL",
		"SELECT b, apicount.latency_percentile(h, 0.5), apicount.latency_percentile(h, 0.99) FROM "
		  . "(SELECT date_trunc('$t', bucket, 'UTC') b, apicount.latency_merge(latency_hist) h FROM apicount.api_minute GROUP BY 1) x WHERE h IS NOT NULL");
}
same('api_day latency histograms = merged api_minute histograms (p50, p99)',
	"SELECT bucket, method, path, apicount.latency_percentile(latency_hist, 0.5), apicount.latency_percentile(latency_hist, 0.99) FROM apicount.api_day WHERE latency_hist IS NOT NULL",
	"SELECT b, method, path, apicount.latency_percentile(h, 0.5), apicount.latency_percentile(h, 0.99) FROM "
	  . "(SELECT date_trunc('day', bucket, 'UTC') b, method, path, apicount.latency_merge(latency_hist) h FROM apicount.api_minute GROUP BY 1, 2, 3) x WHERE h IS NOT NULL");

# percentiles against a plain GROUP BY over the finest table
for my $rn (sort keys %ranges)
{
	my ($f, $t) = @{ $ranges{$rn} };
	same("$rn: latency_percentiles(paths {/t/a,/t/b}) = percentiles of merged api_minute histograms",
		"SELECT method, path, percentile, latency_ms FROM apicount.latency_percentiles(NULL, $f, $t, '{0.5,0.95,0.99}', paths => '{/t/a,/t/b}')",
		"SELECT method, path, p, apicount.latency_percentile(h, p) FROM "
		  . "(SELECT method, path, apicount.latency_merge(latency_hist) h FROM apicount.api_minute "
		  . " WHERE bucket >= date_trunc('minute', $f) AND bucket < $t AND path IN ('/t/a', '/t/b') GROUP BY 1, 2) x, "
		  . "unnest('{0.5,0.95,0.99}'::float8[]) p WHERE h IS NOT NULL");
	same("$rn: latency_percentiles(path, method) = the same over api_minute",
		"SELECT method, path, percentile, latency_ms FROM apicount.latency_percentiles('/t/c', $f, $t, '{0.9}', 'GET')",
		"SELECT method, path, 0.9::float8, apicount.latency_percentile(apicount.latency_merge(latency_hist), 0.9) "
		  . "FROM apicount.api_minute WHERE bucket >= date_trunc('minute', $f) AND bucket < $t AND path = '/t/c' AND method = 'GET' "
		  . "GROUP BY 1, 2 HAVING apicount.latency_merge(latency_hist) IS NOT NULL");
	for my $step ('1 minute', '1 hour', '1 day')
	{
		same("$rn: series('/t/b') p95 step $step = p95 of merged api_minute histograms",
			"SELECT \"time\", method, round(p95_latency_ms::numeric, 9) FROM apicount.series('/t/b', $f, $t, '$step') WHERE p95_latency_ms IS NOT NULL",
			"SELECT date_bin('$step', bucket, timestamptz '2000-01-01 00:00:00+00'), method, "
			  . "round(apicount.latency_percentile(apicount.latency_merge(latency_hist), 0.95)::numeric, 9) "
			  . "FROM apicount.api_minute WHERE bucket >= date_trunc('minute', $f) AND bucket < $t AND path = '/t/b' "
			  . "GROUP BY 1, 2 HAVING apicount.latency_merge(latency_hist) IS NOT NULL");
	}
}

# ------------------------------------------------------------------ plans
# more paths, so that reading one path by its index is the plan to expect
q1(q{
INSERT INTO apicount.api_minute (bucket, method, path, calls)
SELECT date_trunc('minute', now()) - m * interval '1 minute', 'GET', '/bulk/' || p, 1
FROM generate_series(1, 2 * 1440) m, generate_series(1, 100) p;
INSERT INTO apicount.api_hour (bucket, method, path, calls)
SELECT date_trunc('hour', now()) - h * interval '1 hour', 'GET', '/bulk/' || p, 60
FROM generate_series(1, 24 * 40) h, generate_series(1, 100) p;
INSERT INTO apicount.api_day (bucket, method, path, calls)
SELECT date_trunc('day', now()) - d * interval '1 day', 'GET', '/bulk/' || p, 1440
FROM generate_series(1, 400) d, generate_series(1, 100) p;
ANALYZE apicount.api_minute, apicount.api_hour, apicount.api_day;
});
{
	my $calls = join('', map { "SELECT count(*) FROM apicount.series('/t/a', now() - interval '30 days 7 hours 13 minutes', now(), '1 day');\n" } 1 .. 8);
	my ($ret, $out, $err) = $node->psql('postgres',
		"LOAD 'auto_explain';\nSET auto_explain.log_min_duration = 0;\nSET auto_explain.log_nested_statements = on;\n"
		  . "SET auto_explain.log_level = 'notice';\nSET client_min_messages = notice;\n$calls");
	is($ret, 0, 'series with auto_explain runs');
	my @plans = grep { /api_minute/ && /api_day/ } split /NOTICE:  duration/, $err;
	is(scalar(@plans), 8, '8 plans of the tiered query were logged (one per call: planned every time)');
	my $good = grep {
		/Index (Only )?Scan using api_minute_path_bucket/ && /Index (Only )?Scan using api_hour_path_bucket/
		  && /Index (Only )?Scan using api_day_path_bucket/ && !/Seq Scan on api_(minute|hour|day)/
	} @plans;
	is($good, 8, 'every call, the 8th too: index scans on (path, bucket) of api_minute, api_hour and api_day, no sequential scan')
	  or diag($plans[-1] // $err);
	like($plans[-1] // '', qr/path = ANY \('\{\/t\/a\}'::text\[\]\)/, 'the plan carries the path value (a custom plan, not a generic one)');
}
q1(q{DELETE FROM apicount.api_minute WHERE path LIKE '/bulk/%';
     DELETE FROM apicount.api_hour WHERE path LIKE '/bulk/%';
     DELETE FROM apicount.api_day WHERE path LIKE '/bulk/%';});

# ------------------------------------------------------------------ retention per tier
# rows on either side of each tier's cutoff, besides the traffic's
q1(q{
INSERT INTO apicount.api_minute (bucket, method, path, calls) VALUES
  (date_trunc('minute', now() - interval '1 day 1 hour'), 'GET', '/old', 1),
  (date_trunc('minute', now() - interval '23 hours'), 'GET', '/old', 2);
INSERT INTO apicount.api_hour (bucket, method, path, calls) VALUES
  (date_trunc('hour', now() - interval '2 days 2 hours'), 'GET', '/old', 3),
  (date_trunc('hour', now() - interval '1 day 22 hours'), 'GET', '/old', 4);
INSERT INTO apicount.api_day (bucket, method, path, calls) VALUES
  (date_trunc('day', now() - interval '10 days'), 'GET', '/old', 5),
  (date_trunc('minute', now() - interval '3 days 6 hours'), 'GET', '/old', 6);
INSERT INTO apicount.caller_minute (bucket, method, path, client_ip, calls) VALUES
  (date_trunc('minute', now() - interval '1 day 1 hour'), 'GET', '/old', '10.9.9.9', 7),
  (date_trunc('minute', now() - interval '23 hours'), 'GET', '/old', '10.9.9.9', 8);
});
$node->append_conf('postgresql.conf',
	"apicount.retention_minute = '1 day'\napicount.retention_hour = '2 days'\napicount.retention_day = '3 days 12 hours'\n");
$node->restart;    # the worker applies retention when it starts
is(q1(q{SELECT minute_secs || ' ' || hour_secs || ' ' || day_secs FROM apicount._retention_secs()}),
	'86400 172800 302400', 'the tiers\' retention in seconds');
ok(wait_for($node, q{SELECT count(*) FROM apicount.api_minute WHERE bucket < now() - interval '1 day 2 minutes'}, '0', 90),
	'api_minute: no row older than apicount.retention_minute');
is(q1(q{SELECT string_agg(calls::text, ',' ORDER BY calls) FROM apicount.api_minute WHERE path = '/old'}), '2',
	'api_minute: the row past 1 day is deleted, the one 23 hours back is kept');
is(q1(q{SELECT string_agg(calls::text, ',' ORDER BY calls) FROM apicount.api_hour WHERE path = '/old'}), '4',
	'api_hour: the row past 2 days is deleted, the one 1 day 22 hours back is kept');
is(q1(q{SELECT string_agg(calls::text, ',' ORDER BY calls) FROM apicount.api_day WHERE path = '/old'}), '6',
	'api_day: the row past 3 days 12 hours is deleted, the younger one is kept');
is(q1(q{SELECT string_agg(calls::text, ',' ORDER BY calls) FROM apicount.caller_minute WHERE path = '/old'}), '8',
	'caller_minute follows the minute tier');
is(q1(q{SELECT count(*) FROM apicount.api_total_minute WHERE bucket < now() - interval '1 day 2 minutes'}), '0',
	'api_total_minute follows the minute tier');
is(q1(q{SELECT count(*) FROM apicount.api_total_hour WHERE bucket < now() - interval '2 days 2 minutes'}), '0',
	'api_total_hour follows the hour tier');
is(q1(q{SELECT count(*) FROM apicount.api_total_day WHERE bucket < now() - interval '3 days 12 hours 2 minutes'}), '0',
	'api_total_day follows the day tier');
is(q1(q{SELECT count(*) > 0 FROM apicount.api_total_hour WHERE bucket < now() - interval '1 day 2 hours'}), 't',
	'api_total_hour keeps the hours its tier keeps, older than the minutes');
is(q1(q{SELECT count(*) FROM apicount.api_hour WHERE bucket < now() - interval '2 days 2 minutes'}), '0',
	'api_hour: no row older than apicount.retention_hour');
is(q1(q{SELECT count(*) FROM apicount.api_day WHERE bucket < now() - interval '3 days 12 hours 2 minutes'}), '0',
	'api_day: no row older than apicount.retention_day');
# the younger rows are all there: the traffic's rows of the kept part equal the mirror's
same('api_minute keeps every minute younger than its retention',
	q{SELECT bucket, method, path, calls FROM apicount.api_minute WHERE path LIKE '/t/%' AND bucket >= now() - interval '1 day' + interval '2 minutes'},
	q{SELECT b, method, path, count(*) FROM mirror WHERE b >= now() - interval '1 day' + interval '2 minutes' GROUP BY 1, 2, 3});
same('api_hour keeps every hour younger than its retention',
	q{SELECT bucket, method, path, calls FROM apicount.api_hour WHERE path LIKE '/t/%' AND bucket >= now() - interval '2 days' + interval '2 minutes'},
	q{SELECT date_trunc('hour', b, 'UTC'), method, path, count(*) FROM mirror GROUP BY 1, 2, 3 HAVING date_trunc('hour', b, 'UTC') >= now() - interval '2 days' + interval '2 minutes'});

# ranges whose minutes (or hours) are gone: answered from the coarser tier.  a0, a1: the
# first whole hour (day) after now() - retention_minute (retention_hour), as documented.
q1('DELETE FROM apicount.api_minute WHERE path = \'/old\'; DELETE FROM apicount.api_hour WHERE path = \'/old\'; '
	  . 'DELETE FROM apicount.api_day WHERE path = \'/old\'; DELETE FROM apicount.caller_minute WHERE path = \'/old\'');
my $ret = q{ceil_to(now() - interval '1 day', 'hour'), ceil_to(now() - interval '2 days', 'day')};
%ranges = (
	'minutes gone (30 h .. 26 h back)' => [ q{(SELECT t0 FROM setup) - interval '30 hours 10 minutes'}, q{(SELECT t0 FROM setup) - interval '26 hours 20 minutes'} ],
	'2 days up to now, its start before the minutes kept' => [ q{(SELECT t0 FROM setup) - interval '2 days' + interval '3 hours 7 minutes'}, q{now() + interval '1 minute'} ],
	'20 h back to 3 h back (minutes kept)' => [ q{(SELECT t0 FROM setup) - interval '20 hours 3 minutes'}, q{(SELECT t0 FROM setup) - interval '3 hours 1 minute'} ],
);
round_checks('after retention', $ret);
is(q1(q{SELECT count(DISTINCT date_trunc('minute', "time")) = count(DISTINCT date_trunc('hour', "time"))
        FROM apicount.series('/t/a', (SELECT t0 FROM setup) - interval '30 hours 10 minutes',
                             (SELECT t0 FROM setup) - interval '26 hours 20 minutes', '1 minute')}),
	't', 'a minute-step series over a range whose minutes are gone has hourly points (the hour tier\'s resolution)');

$node->stop;
done_testing();
