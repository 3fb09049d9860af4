# 034_caller_tiers.pl — the caller hour and day tiers (caller_hour, caller_day, 0.6): written by
# the flushes that write caller_minute, read by top_callers_range through _caller_plan, hours
# with summarized folds read from minutes, and tiered retention.
#
# Traffic: 3 days of hits (every 7 minutes, 3 hits each, 4 paths /t/a../t/d, GET and POST,
# 2xx/4xx/5xx/NULL statuses, 14 client IPs in two /24 networks, 5 users and NULL) recorded
# through apicount.requests(ts, ...) AND copied into a plain table, public.mirror; after a
# flush, late hits into minutes of those already flushed hours and days (existing caller keys
# and new ones), a second flush, then 40 live hits in the current minute
# (apicount.flush_interval = 1h: unflushed).  Every expected answer is a GROUP BY over the
# mirror, never over apicount's tables, except the one differential check named below.
# Checks:
#  1. the tiers agree: caller_hour = caller_minute summed per UTC hour, caller_day = caller_hour
#     summed per UTC day (keys, calls, ok, client_errors, server_errors, folded_before =
#     bool_or), and caller_minute summed per UTC day = the mirror's flushed hits per (day,
#     method, path, IP, user); late hits landed on keys flushed before; again after the flood
#     of 3. ("(other callers)" rows and folded_before rows included, some asserted to exist;
#     per day and API the caller rows and caller_day = the mirror's hits);
#  2. top_callers_range for by = ip, user, ip_user, net over whole days, a range that starts
#     inside an hour and ends inside a day, and 3 days up to now (live hits in it); without a
#     filter, with path, paths, path + paths, a method, paths + a method: equals the mirror's
#     GROUP BY (calls, errors, calls_error 0); so does callers(path, ...) with or without a
#     method, first_seen and last_seen included (the coarse tiers keep each row's first and last
#     minute); _caller_plan reads whole days from caller_day and whole hours from caller_hour
#     there (summarized false);
#  3. a flood: apicount.max_entries = 1000, apicount.heavy_counters = 64 (restart); exact callers
#     first (their own path /q, and ten on /f/b), the caller tier filled with 1000 - those
#     entries by hits 20 minutes back, then ~6,900 calls to /f/b and /f/c from 3,000 new
#     callers (all folded: stats.folded_calls = exactly those; some share an IP, user or
#     network with callers that have entries), a flush (the old entries freed), then more
#     calls of 15 folded callers (entries made late: folded_before).  Over a
#     range whose whole hours hold the flood's hour, and one up to the next midnight whose
#     days hold the flood's day, for each grouping and filter, in three states (all live;
#     flushed with live summaries; after a restart, summaries written to
#     caller_heavy_minute / heavy_minute_bounds): _caller_plan reads the flood's hour from
#     caller_minute, not from caller_hour, and its day not from caller_day (the day before is
#     still in dlo), summarized true; filtered to one API (paths + method, path + method):
#     for every group of the mirror calls - calls_error <= truth <= calls, a group missing
#     from the answer has truth <= the summaries' bound B (sum over its minutes of folded
#     calls / 64); over several APIs the guarantee is per API (README "Limits": a caller that
#     an API's summary lacks gets no bound of it): calls - calls_error <= truth <= calls + k B
#     (k: the APIs with folds), left out: truth <= k B; groups with no hit on an API that had
#     folds in the range are exact with calls_error 0; where the summaries evicted, some group
#     has calls_error > 0; and (differential) the answer equals sum(calls), sum(calls_error)
#     per group of _caller_groups(..., tiered => false), the minute-only computation;
#  4. retention per tier (apicount.retention_minute = 1 day, _hour = 2 days, _day = 3 days 12
#     hours; restart: the worker applies retention at start): caller_minute, caller_hour and
#     caller_day rows past their tier's retention are gone, younger ones kept (equal to the
#     mirror); top_callers_range and callers over ranges whose minutes (or hours) are gone answer from
#     caller_hour / caller_day, the range's ends widened to those tiers' buckets (README
#     "Ranges and tiers"), and equals the mirror over that widened range.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use ApicountTest qw(wait_for same_rows $EXPECTED_RANGE_SQL);

my $node = PostgreSQL::Test::Cluster->new('caller_tiers');
$node->init;
$node->append_conf('postgresql.conf',
	"shared_preload_libraries = 'apicount'\n"
	  . "apicount.flush_interval = '1h'\n"
	  . "log_statement = none\n"
	  . "timezone = 'UTC'\n");
$node->start;
sub q1 { return $node->safe_psql('postgres', $_[0]); }
q1('CREATE EXTENSION apicount');
my $pfx = q1('SHOW apicount.net_prefix_v4');

# ------------------------------------------------------------------ traffic and mirror
q1(q{
CREATE TABLE setup AS SELECT now() AS t0;
CREATE TABLE mirror (b timestamptz, ts timestamptz, method text, path text, client_ip inet,
                     user_id text, status int, phase text, live boolean DEFAULT false,
                     folded boolean DEFAULT false, batch int);
INSERT INTO mirror (ts, method, path, client_ip, user_id, status, phase)
SELECT t0 - g * interval '7 minutes' - k * interval '13 seconds',
       CASE WHEN (g + k) % 3 = 0 THEN 'POST' ELSE 'GET' END,
       '/t/' || chr(97 + (g * k + g / 5) % 4),
       ('10.0.' || (g % 2) || '.' || (g % 7))::inet,
       CASE WHEN g % 23 = 0 THEN NULL ELSE 'u' || ((g + k) % 5) END,
       CASE WHEN g % 11 = 0 THEN 404 WHEN g % 13 = 0 THEN 503 WHEN g % 17 = 0 THEN NULL ELSE 200 END,
       'history'
FROM setup, generate_series(1, 3 * 1440 / 7) g, generate_series(1, 3) k;
UPDATE mirror SET b = date_trunc('minute', ts);
INSERT INTO apicount.requests (ts, method, path, client_ip, user_id, status)
SELECT ts, method, path, client_ip, user_id, status FROM mirror;
});
is(q1('SELECT apicount.flush() > 0'), 't', 'history flushed');
# late hits into minutes of hours and days already flushed: keys of the history (same minute,
# API, IP, user as a history hit) and new callers
q1(q{
INSERT INTO mirror (ts, method, path, client_ip, user_id, status, phase)
SELECT t0 - g * interval '7 minutes' - interval '13 seconds',
       CASE WHEN (g + 1) % 3 = 0 THEN 'POST' ELSE 'GET' END,
       '/t/' || chr(97 + (g + g / 5) % 4),
       ('10.0.' || (g % 2) || '.' || (g % 7))::inet,
       CASE WHEN g % 23 = 0 THEN NULL ELSE 'u' || ((g + 1) % 5) END,
       CASE WHEN g % 3 = 0 THEN 500 ELSE 201 END, 'late'
FROM setup, generate_series(3, 3 * 1440 / 7, 5) g
UNION ALL
SELECT t0 - g * interval '31 minutes' - interval '7 seconds', 'GET', '/t/' || chr(97 + g % 4),
       ('10.5.' || (g % 3) || '.' || (g % 4))::inet, 'late' || (g % 3),
       CASE WHEN g % 4 = 0 THEN 429 ELSE 200 END, 'late'
FROM setup, generate_series(1, 139) g;
UPDATE mirror SET b = date_trunc('minute', ts) WHERE b IS NULL;
INSERT INTO apicount.requests (ts, method, path, client_ip, user_id, status)
SELECT ts, method, path, client_ip, user_id, status FROM mirror WHERE phase = 'late';
});
is(q1('SELECT apicount.flush() > 0'), 't', 'late hits flushed');
# live hits: the current minute, never flushed during the first round
q1(q{
INSERT INTO mirror (ts, method, path, client_ip, user_id, status, phase, live)
SELECT clock_timestamp(), CASE WHEN g % 2 = 0 THEN 'GET' ELSE 'POST' END, '/t/' || chr(97 + g % 3),
       ('10.0.' || (g % 2) || '.' || (g % 3))::inet, 'u' || (g % 2), CASE WHEN g % 4 = 0 THEN 500 ELSE 201 END,
       'live', true
FROM generate_series(1, 40) g;
UPDATE mirror SET b = date_trunc('minute', ts) WHERE b IS NULL;
INSERT INTO apicount.requests (ts, method, path, client_ip, user_id, status)
SELECT ts, method, path, client_ip, user_id, status FROM mirror WHERE phase = 'live';
});
is(q1(q{SELECT sum(unflushed) FROM apicount.live WHERE tier = 'api'}), '40', '40 live hits unflushed');

# the expected hits of a range: a0 / a1: where minutes / hours are still kept ('-infinity'
# before the retention round); the range's ends widen to the buckets of the finest tier that
# holds them (README "Ranges and tiers"): exp_hits, ApicountTest
q1($EXPECTED_RANGE_SQL);

# same(label, A, B): the two queries return the same multiset of rows, and not none
sub same { return same_rows($node, @_); }

# a grouping's key over the mirror's columns (the network: the address masked to
# apicount.net_prefix_v4 bits)
my %grp = (
	ip => [ 'client_ip', 'NULL::text' ],
	user => [ 'NULL::inet', 'user_id' ],
	ip_user => [ 'client_ip', 'user_id' ],
	net => [ "network(set_masklen(client_ip, $pfx))::inet", 'NULL::text' ],
);
my @bys = qw(ip user ip_user net);
my $noret = q{'-infinity'::timestamptz, '-infinity'::timestamptz};

# ------------------------------------------------------------------ 1. the tiers agree
my $cols = 'calls, ok, client_errors, server_errors';
my $sums = 'sum(calls)::bigint, sum(ok)::bigint, sum(client_errors)::bigint, sum(server_errors)::bigint';
my $exp_cols = q{count(*), count(*) FILTER (WHERE status BETWEEN 100 AND 399), }
  . q{count(*) FILTER (WHERE status BETWEEN 400 AND 499), count(*) FILTER (WHERE status >= 500)};

sub tiers_agree
{
	my ($phase) = @_;
	same("$phase: caller_hour = caller_minute summed per UTC hour (keys, counts, folded_before = bool_or)",
		"SELECT bucket, method, path, client_ip, user_id, $cols, folded_before FROM apicount.caller_hour",
		"SELECT date_trunc('hour', bucket, 'UTC'), method, path, client_ip, user_id, $sums, bool_or(folded_before) "
		  . "FROM apicount.caller_minute GROUP BY 1, 2, 3, 4, 5");
	same("$phase: caller_day = caller_hour summed per UTC day (keys, counts, folded_before = bool_or)",
		"SELECT bucket, method, path, client_ip, user_id, $cols, folded_before FROM apicount.caller_day",
		"SELECT date_trunc('day', bucket, 'UTC'), method, path, client_ip, user_id, $sums, bool_or(folded_before) "
		  . "FROM apicount.caller_hour GROUP BY 1, 2, 3, 4, 5");
}
tiers_agree('after the flushes');
same('caller_minute summed per UTC day = the mirror\'s flushed hits per (day, method, path, IP, user)',
	"SELECT date_trunc('day', bucket, 'UTC'), method, path, client_ip, user_id, $sums FROM apicount.caller_minute GROUP BY 1, 2, 3, 4, 5",
	"SELECT date_trunc('day', b, 'UTC'), method, path, client_ip, user_id, $exp_cols FROM mirror WHERE NOT live GROUP BY 1, 2, 3, 4, 5");
same('caller_day = the mirror\'s flushed hits per (day, method, path, IP, user)',
	"SELECT bucket, method, path, client_ip, user_id, $cols FROM apicount.caller_day",
	"SELECT date_trunc('day', b, 'UTC'), method, path, client_ip, user_id, $exp_cols FROM mirror WHERE NOT live GROUP BY 1, 2, 3, 4, 5");
cmp_ok(q1(q{SELECT count(*) FROM apicount.caller_minute c JOIN mirror m ON m.b = c.bucket AND m.phase = 'late'
        AND m.method = c.method AND m.path = c.path AND m.client_ip = c.client_ip
        AND m.user_id IS NOT DISTINCT FROM c.user_id
        WHERE EXISTS (SELECT 1 FROM mirror h WHERE h.phase = 'history' AND h.b = m.b AND h.method = m.method
                      AND h.path = m.path AND h.client_ip = m.client_ip AND h.user_id IS NOT DISTINCT FROM m.user_id)}),
	'>', 10, 'late hits landed on caller keys flushed before (the upsert path of all three tiers)');

# ------------------------------------------------------------------ 2. top_callers_range, no folds
my $day = q{date_trunc('day', (SELECT t0 FROM setup), 'UTC')};
my %ranges = (
	'whole days' => [ "$day - interval '2 days'", $day ],
	'inside an hour .. inside a day' =>
	  [ "$day - interval '2 days' + interval '13 hours 17 minutes 20 seconds'", "$day - interval '1 day' + interval '9 hours 43 minutes'" ],
	'3 days up to now' => [ q{(SELECT t0 FROM setup) - interval '3 days'}, q{now() + interval '1 minute'} ],
);
# [ path, paths, method ]
my @filters = ([ 'NULL', 'NULL', 'NULL' ], [ q{'/t/a'}, 'NULL', 'NULL' ], [ 'NULL', q{'{/t/a,/t/c}'}, 'NULL' ],
	[ q{'/t/c'}, q{'{/t/a,/t/c}'}, 'NULL' ], [ 'NULL', 'NULL', q{'POST'} ], [ 'NULL', q{'{/t/b,/t/d}'}, q{'GET'} ],
	[ q{'/t/a'}, 'NULL', q{'POST'} ]);

sub exp_filter
{
	my ($p, $ps, $m) = @_;
	return ($ps, $m) if $p eq 'NULL';
	return ("ARRAY[$p]", $m);    # (path and paths: the path, which the tests keep in paths)
}

sub exact_round
{
	my ($phase, $ret, $rangesref, $filtersref) = @_;
	for my $rn (sort keys %$rangesref)
	{
		my ($f, $t) = @{ $rangesref->{$rn} };
		for my $fl (@$filtersref)
		{
			my ($p, $ps, $m) = @$fl;
			my ($eps, $em) = exp_filter(@$fl);
			for my $by (@bys)
			{
				my ($gi, $gu) = @{ $grp{$by} };
				same("$phase: $rn, top_callers_range by $by, path $p, paths $ps, method $m",
					"SELECT client_ip, user_id, calls, errors, calls_error FROM apicount.top_callers_range(100000, $f, $t, $p, '$by', $ps, $m)",
					"SELECT $gi, $gu, count(*), count(*) FILTER (WHERE status >= 400), 0::bigint "
					  . "FROM exp_hits(date_trunc('minute', $f), $t, $eps, $em, $ret) GROUP BY 1, 2");
			}
			# callers() of one path: its rows in the coarse tiers keep their first and last
			# minute, so first_seen and last_seen are the mirror's, whichever tier is read
			same("$phase: $rn, callers($p), method $m",
				"SELECT client_ip, user_id, first_seen, last_seen, calls, errors, calls_error FROM apicount.callers($p, $f, $t, $m)",
				"SELECT client_ip, user_id, min(b), max(b), count(*), count(*) FILTER (WHERE status >= 400), 0::bigint "
				  . "FROM exp_hits(date_trunc('minute', $f), $t, ARRAY[$p], $em, $ret) GROUP BY 1, 2")
			  if $p ne 'NULL' && $ps eq 'NULL';
		}
	}
}

# the plans: whole days from caller_day, whole hours from caller_hour, nothing summarized
for my $by (@bys)
{
	is(q1(qq{SELECT dlo = ARRAY[$day - interval '2 days'] AND dhi = ARRAY[$day] AND hlo = '{}' AND mlo = '{}'
	                AND NOT summarized
	         FROM apicount._caller_plan($day - interval '2 days', $day, '$by')}), 't',
		"_caller_plan by $by, whole days: both days from caller_day, no hour, no minute, not summarized");
	my ($f, $t) = @{ $ranges{'inside an hour .. inside a day'} };
	is(q1(qq{SELECT cardinality(dlo) || ' ' || (SELECT sum(extract(epoch FROM hi - lo) / 3600)::int FROM unnest(hlo, hhi) r(lo, hi))
	                || ' ' || (SELECT sum(extract(epoch FROM hi - lo) / 60)::int FROM unnest(mlo, mhi) r(lo, hi)) || ' ' || summarized
	         FROM apicount._caller_plan(date_trunc('minute', $f), $t, '$by')}), '0 19 86 false',
		"_caller_plan by $by, 13:17:20 .. 09:43 next day: 19 whole hours from caller_hour, 86 minutes from caller_minute");
}
exact_round('live', $noret, \%ranges, \@filters);
is(q1(q{SELECT count(*) FROM apicount.top_callers_range(100000, now() - interval '3 days', now() + interval '1 minute', '/t/b', 'ip', '{/t/a}')}),
	'0', 'path and paths that exclude each other: no caller');
is(q1(q{SELECT sum(unflushed) FROM apicount.live WHERE tier = 'api'}), '40', 'the live hits were still unflushed');
q1('SELECT apicount.flush()');
exact_round('flushed', $noret, \%ranges, \@filters);
tiers_agree('live hits flushed');

# ------------------------------------------------------------------ 3. a flood: folds and summaries
$node->append_conf('postgresql.conf', "apicount.max_entries = 1000\napicount.heavy_counters = 64\n");
$node->restart;
is(q1('SELECT caller_entries || \' \' || folded_calls FROM apicount.stats'), '0 0', 'restarted with an empty caller tier');
q1(q{CREATE TABLE flood AS SELECT date_trunc('minute', now()) AS m});
my $M = q1('SELECT m FROM flood');

# send(phase): the mirror's hits of a phase through apicount.requests, 1000 a transaction
sub send_phase
{
	my ($phase) = @_;
	my $nb = q1(qq{SELECT coalesce(max(batch), 0) FROM mirror WHERE phase = '$phase'});
	for my $i (0 .. $nb)
	{
		q1(qq{INSERT INTO apicount.requests (ts, method, path, client_ip, user_id, status)
		      SELECT ts, method, path, client_ip, user_id, status FROM mirror WHERE phase = '$phase' AND batch = $i});
	}
}
# a. exact callers (entries): /q from 10.8.0.k, and 10.8.0.1..10 / e1 on /f/b
q1(q{
INSERT INTO mirror (ts, b, method, path, client_ip, user_id, status, phase, batch)
SELECT m, m, CASE WHEN g % 2 = 0 THEN 'GET' ELSE 'POST' END, '/q', ('10.8.0.' || k)::inet, 'e' || (k % 4),
       CASE WHEN g = 3 THEN 404 ELSE 200 END, 'exact', 0
FROM flood, generate_series(1, 20) k, generate_series(1, 3) g
UNION ALL
SELECT m, m, 'GET', '/f/b', '10.8.0.1', 'e1', 200, 'exact', 0 FROM flood, generate_series(1, 5)
UNION ALL
SELECT m, m, 'GET', '/f/b', ('10.8.0.' || k)::inet, 'e1', 200, 'exact', 0 FROM flood, generate_series(2, 10) k;
});
send_phase('exact');
my $E = q1('SELECT caller_entries FROM apicount.stats');
is($E, q1(q{SELECT count(*) FROM (SELECT DISTINCT b, method, path, client_ip, user_id FROM mirror WHERE phase = 'exact') x}),
	"the exact callers hold $E entries");
# b. the caller tier filled by hits 20 minutes back
q1(qq{
INSERT INTO mirror (ts, b, method, path, client_ip, user_id, status, phase, batch)
SELECT m - interval '20 minutes', m - interval '20 minutes', 'GET', '/fill', '10.1.0.0'::inet + g, NULL, 200, 'fill', 0
FROM flood, generate_series(1, 1000 - $E) g;
});
send_phase('fill');
is(q1('SELECT caller_entries || \' \' || folded_calls FROM apicount.stats'), '1000 0', 'the caller tier is full, nothing folded yet');
# c. the flood: new callers, all folded; the exact caller 10.8.0.1 / e1 keeps its entry.  A few
# small folded keys share an IP, a user or a network with callers that have entries (10.8.0.k
# with users xk, 10.9.0.k with user e1), or come back later with an entry (10.8.1.k / yk):
# where a summary lacks them, only the bound added to the group keeps truth <= calls
q1(q{
INSERT INTO mirror (ts, method, path, client_ip, user_id, status, phase, folded)
SELECT m, 'GET', '/f/b', ('10.2.0.' || k)::inet, 'h' || k, CASE WHEN g % 10 = 0 THEN 500 ELSE 200 END, 'flood', true
FROM flood, generate_series(1, 10) k, generate_series(1, 400 - 30 * k) g
UNION ALL
SELECT m, 'POST', '/f/c', ('10.2.0.' || k)::inet, 'h' || k, CASE WHEN g % 4 = 0 THEN 403 ELSE 200 END, 'flood', true
FROM flood, generate_series(1, 3) k, generate_series(1, 80) g
UNION ALL
SELECT m, 'GET', '/f/b', ('10.3.' || (j % 100) || '.' || (j / 100))::inet, 's' || (j % 400), 200, 'flood', true
FROM flood, generate_series(1, 3000) j, generate_series(1, 1 + (j % 3 = 0)::int) g
UNION ALL
SELECT m, CASE WHEN g % 2 = 0 THEN 'GET' ELSE 'POST' END, CASE WHEN g % 2 = 0 THEN '/f/b' ELSE '/f/c' END,
       ('10.3.20.' || (g % 50))::inet, 'h' || (g % 10 + 1), 200, 'flood', true
FROM flood, generate_series(1, 200) g
UNION ALL
SELECT m, 'GET', '/f/b', '10.8.0.1', 'e1', 200, 'flood', false FROM flood, generate_series(1, 20)
UNION ALL
SELECT m, 'GET', '/f/b', ('10.8.0.' || k)::inet, 'x' || k, 200, 'flood', true FROM flood, generate_series(1, 10) k, generate_series(1, 2)
UNION ALL
SELECT m, 'GET', '/f/b', ('10.9.0.' || k)::inet, 'e1', 200, 'flood', true FROM flood, generate_series(1, 10) k, generate_series(1, 2)
UNION ALL
SELECT m, 'GET', '/f/b', ('10.8.1.' || k)::inet, 'y' || k, 200, 'flood', true FROM flood, generate_series(1, 10) k, generate_series(1, 2);
UPDATE mirror SET batch = x.rn / 1000 FROM (SELECT ctid AS c, row_number() OVER (ORDER BY md5(ctid::text)) - 1 AS rn
                                            FROM mirror WHERE phase = 'flood') x WHERE ctid = x.c;
UPDATE mirror SET b = date_trunc('minute', ts) WHERE b IS NULL;
});
send_phase('flood');
my $F = q1(q{SELECT count(*) FROM mirror WHERE folded});
is(q1('SELECT folded_calls FROM apicount.stats'), $F, "stats.folded_calls = the $F calls of the new callers (the hits marked folded)");

# the ranges: whole hours holding the flood's hour; days holding the flood's day
my $mh = q{date_trunc('hour', (SELECT m FROM flood), 'UTC')};
my $md = q{date_trunc('day', (SELECT m FROM flood), 'UTC')};
my %franges = (
	'2 h 43 min back .. the end of the flood\'s hour' => [ q{(SELECT m FROM flood) - interval '2 hours 43 minutes 10 seconds'}, "$mh + interval '1 hour'" ],
	'yesterday - 5 h 13 min .. the next midnight' => [ "$md - interval '1 day 5 hours 13 minutes'", "$md + interval '1 day'" ],
);
# [ path, paths, method, one API ]: the bound is per API (README "Under a flood", "Limits": over
# several APIs, a caller that one API's summary lacks and that has no row there gets no bound
# of that API), so truth <= calls is checked where the filter names one API; over several,
# calls - calls_error <= truth <= calls + (APIs with folds) * bound
my @ffilters = ([ 'NULL', 'NULL', 'NULL', 0 ], [ 'NULL', q{'{/f/b}'}, q{'GET'}, 1 ], [ q{'/f/c'}, 'NULL', q{'POST'}, 1 ],
	[ 'NULL', q{'{/f/b,/q,/t/a}'}, 'NULL', 0 ]);

sub flood_round
{
	my ($state) = @_;
	for my $rn (sort keys %franges)
	{
		my ($f, $t) = @{ $franges{$rn} };
		my $f0 = "date_trunc('minute', $f)";
		for my $by (@bys)
		{
			# the plan: the hours with folded hits from minutes, their days not from caller_day
			my $plan = q1(qq{
WITH fh AS (SELECT DISTINCT date_trunc('hour', b, 'UTC') AS h FROM mirror WHERE folded AND b >= $f0 AND b < $t),
     p AS (SELECT * FROM apicount._caller_plan($f0, $t, '$by'))
SELECT (SELECT count(*) FROM fh) || ' '
       || (SELECT bool_and(EXISTS (SELECT 1 FROM unnest(p.mlo, p.mhi) r(lo, hi) WHERE lo = fh.h AND hi = fh.h + interval '1 hour')) FROM fh) || ' '
       || (NOT EXISTS (SELECT 1 FROM fh, unnest(p.hlo, p.hhi) r(lo, hi) WHERE fh.h >= lo AND fh.h < hi)) || ' '
       || (NOT EXISTS (SELECT 1 FROM fh, unnest(p.dlo, p.dhi) r(lo, hi) WHERE fh.h >= lo AND fh.h < hi)) || ' '
       || ($t <= $md OR EXISTS (SELECT 1 FROM unnest(p.dlo) d WHERE d = $md - interval '1 day')
                     OR $f0 > $md - interval '1 day') || ' '
       || p.summarized
FROM p});
			is($plan, '1 true true true true true',
				"$state: $rn, _caller_plan by $by: the flood's hour from caller_minute, not caller_hour; its day not from caller_day; the day before from caller_day; summarized");
			for my $fl (@ffilters)
			{
				my ($p, $ps, $m, $one) = @$fl;
				my ($eps, $em) = exp_filter($p, $ps, $m);
				my ($gi, $gu) = @{ $grp{$by} };
				my $onesql = $one ? 'true' : 'false';
				my $what = "$state: $rn, by $by, path $p, paths $ps, method $m";
				my $r = q1(qq{
WITH ans AS (SELECT coalesce(client_ip::text, '-') || '|' || coalesce(user_id, '-') AS k, calls, calls_error
             FROM apicount.top_callers_range(100000, $f, $t, $p, '$by', $ps, $m)),
     hits AS (SELECT * FROM exp_hits($f0, $t, $eps, $em, $noret)),
     fapi AS (SELECT DISTINCT method, path FROM hits WHERE folded),
     tru AS (SELECT coalesce(($gi)::text, '-') || '|' || coalesce($gu, '-') AS k, count(*) AS truth,
                    bool_and(NOT EXISTS (SELECT 1 FROM fapi WHERE fapi.method = h.method AND fapi.path = h.path)) AS exact
             FROM hits h GROUP BY 1),
     bnd AS (SELECT coalesce(sum(n), 0) / 64.0 AS bound
             FROM (SELECT b, count(*) AS n FROM mirror WHERE folded AND b >= $f0 AND b < $t GROUP BY b) x),
     kb AS (SELECT CASE WHEN $onesql THEN 1 ELSE (SELECT count(*) FROM fapi) END * bound AS up,
                   (SELECT count(DISTINCT (method, path, $gi, $gu)) FROM mirror
                    WHERE folded AND b >= $f0 AND b < $t) > 64 AS evicted FROM bnd),
     j AS (SELECT coalesce(a.k, t.k) AS k, a.calls, a.calls_error, coalesce(t.truth, 0) AS truth, t.exact
           FROM ans a FULL JOIN tru t ON t.k = a.k)
SELECT count(*) FILTER (WHERE calls IS NOT NULL AND NOT (calls - calls_error <= truth
                                                          AND truth <= calls + CASE WHEN $onesql THEN 0 ELSE (SELECT up FROM kb) END)) || ' '
       || count(*) FILTER (WHERE calls IS NULL AND truth > (SELECT up FROM kb)) || ' '
       || count(*) FILTER (WHERE exact AND (calls IS NULL OR calls <> truth OR calls_error <> 0)) || ' '
       || count(*) FILTER (WHERE exact) || ' ' || count(*) FILTER (WHERE calls_error > 0) || ' '
       || count(*) FILTER (WHERE calls IS NULL) || ' ' || count(*) || ' ' || (SELECT evicted FROM kb)
FROM j});
				my ($bad, $missing, $inexact, $nexact, $nerr, $nmiss, $n, $evicted) = split / /, $r;
				my $upper = $one ? 'truth <= calls' : 'truth <= calls + APIs with folds x bound';
				ok($bad == 0 && $missing == 0 && $inexact == 0 && ($one || $nexact > 0) && ($one || $evicted ne 't' || $nerr > 0),
					"$what: calls - calls_error <= $upper; groups left out within the bound; "
					  . "$nexact groups on APIs without folds exact; $nerr with an error ($n groups, $nmiss left out, summaries evicted: $evicted)")
				  or diag("out of bounds $bad, left out over the bound $missing, inexact $inexact, exact $nexact, with error $nerr\n"
					  . q1(qq{SELECT a.*, t.truth FROM apicount.top_callers_range(100000, $f, $t, $p, '$by', $ps, $m) a
					          LEFT JOIN (SELECT $gi AS gi, $gu AS gu, count(*) AS truth FROM exp_hits($f0, $t, $eps, $em, $noret) GROUP BY 1, 2) t
					          ON t.gi IS NOT DISTINCT FROM a.client_ip AND t.gu IS NOT DISTINCT FROM a.user_id
					          WHERE NOT (a.calls - a.calls_error <= coalesce(t.truth, 0) AND coalesce(t.truth, 0) <= a.calls) LIMIT 10}));
				my $pf = $p eq 'NULL' ? $ps : "ARRAY[$p]";
				same("$what: tiered = _caller_groups(tiered => false) summed per group (differential)",
					"SELECT client_ip, user_id, calls, calls_error FROM apicount.top_callers_range(100000, $f, $t, $p, '$by', $ps, $m)",
					"SELECT client_ip, user_id, sum(calls)::bigint, sum(calls_error)::bigint "
					  . "FROM apicount._caller_groups($f0, $t, '$by', $pf, $m, tiered => false) "
					  . "WHERE method <> '*' GROUP BY 1, 2 HAVING sum(calls) > 0");
			}
		}
	}
}

is(q1(q{SELECT count(*) > 0 FROM apicount._live_heavy('-infinity', 'infinity', 'ip')}), 't', 'the flood\'s summaries are live');
flood_round('flood live');
# d. a flush writes the flood's caller rows and frees the old entries
q1('SELECT apicount.flush()');
ok(wait_for($node, 'SELECT caller_entries < 1000 FROM apicount.stats', 't', 30), 'the flush freed the old entries');
# e. folded callers come back (entries made after their folds), the exact ones too
q1(q{
INSERT INTO mirror (ts, b, method, path, client_ip, user_id, status, phase, batch)
SELECT m, m, 'GET', '/f/b', ('10.2.0.' || k)::inet, 'h' || k, 200, 'again', 0 FROM flood, generate_series(1, 5) k, generate_series(1, 5)
UNION ALL
SELECT m, m, 'GET', '/f/b', ('10.8.1.' || k)::inet, 'y' || k, 200, 'again', 0 FROM flood, generate_series(1, 10) k
UNION ALL
SELECT m, m, 'GET', '/q', ('10.8.0.' || k)::inet, 'e' || (k % 4), 200, 'again', 0 FROM flood, generate_series(1, 20) k;
});
send_phase('again');
is(q1('SELECT folded_calls FROM apicount.stats'), $F, 'the callers that came back were not folded (entries)');
is(q1(q{SELECT count(*) FROM mirror WHERE phase <> 'history' AND phase <> 'late' AND phase <> 'live' AND b <> (SELECT m FROM flood) AND phase <> 'fill'}),
	'0', 'the exact callers, the flood and the callers that came back are in the flood\'s minute');
q1('SELECT apicount.flush()');
is(q1(q{SELECT count(*) > 0 FROM apicount._live_heavy('-infinity', 'infinity', 'ip')}), 't', 'flushed: the flood\'s summaries are still live');
flood_round('flushed, summaries live');

$node->restart;    # the shutdown writes every minute's summaries
is(q1(q{SELECT string_agg(grouped_by, ',' ORDER BY grouped_by) FROM apicount.heavy_minute_bounds WHERE bucket = (SELECT m FROM flood)}),
	'ip,ip_user,net,user', 'the summaries of the flood\'s minute are written, one per grouping');
is(q1(q{SELECT count(*) FROM apicount._live_heavy('-infinity', 'infinity', 'ip')}), '0', 'no live summary left');
flood_round('summaries written');
tiers_agree('after the flood');
is(q1(q{SELECT count(*) > 0 FROM apicount.caller_minute WHERE folded_before AND bucket = (SELECT m FROM flood)}), 't',
	'the callers that came back after their folds have folded_before rows (the bool_or is tested on them)');
same('after the flood: caller_minute summed per day and API, "(other callers)" included = the mirror per day and API',
	"SELECT date_trunc('day', bucket, 'UTC'), method, path, $sums FROM apicount.caller_minute GROUP BY 1, 2, 3",
	"SELECT date_trunc('day', b, 'UTC'), method, path, $exp_cols FROM mirror GROUP BY 1, 2, 3");
same('after the flood: caller_day per API = the mirror per day and API',
	"SELECT bucket, method, path, $sums FROM apicount.caller_day GROUP BY 1, 2, 3",
	"SELECT date_trunc('day', b, 'UTC'), method, path, $exp_cols FROM mirror GROUP BY 1, 2, 3");

# ------------------------------------------------------------------ 4. retention per tier
q1(q{
INSERT INTO apicount.caller_minute (bucket, method, path, client_ip, calls) VALUES
  (date_trunc('minute', now() - interval '1 day 1 hour'), 'GET', '/old', '10.9.9.9', 1),
  (date_trunc('minute', now() - interval '23 hours'), 'GET', '/old', '10.9.9.9', 2);
INSERT INTO apicount.caller_hour (bucket, method, path, client_ip, calls, first_seen, last_seen)
SELECT b, 'GET', '/old', '10.9.9.9', c, b, b
FROM (VALUES (date_trunc('hour', now() - interval '2 days 2 hours'), 3),
             (date_trunc('hour', now() - interval '1 day 22 hours'), 4)) v(b, c);
INSERT INTO apicount.caller_day (bucket, method, path, client_ip, calls, first_seen, last_seen)
SELECT b, 'GET', '/old', '10.9.9.9', c, b, b
FROM (VALUES (date_trunc('day', now() - interval '10 days'), 5),
             (date_trunc('minute', now() - interval '3 days 6 hours'), 6)) v(b, c);
});
$node->append_conf('postgresql.conf',
	"apicount.retention_minute = '1 day'\napicount.retention_hour = '2 days'\napicount.retention_day = '3 days 12 hours'\n");
$node->restart;    # the worker applies retention when it starts
ok(wait_for($node, q{SELECT count(*) FROM apicount.caller_minute WHERE bucket < now() - interval '1 day 2 minutes'}, '0', 90),
	'caller_minute: no row older than apicount.retention_minute');
ok(wait_for($node, q{SELECT count(*) FROM apicount.caller_hour WHERE bucket < now() - interval '2 days 2 minutes'}, '0', 30),
	'caller_hour: no row older than apicount.retention_hour');
ok(wait_for($node, q{SELECT count(*) FROM apicount.caller_day WHERE bucket < now() - interval '3 days 12 hours 2 minutes'}, '0', 30),
	'caller_day: no row older than apicount.retention_day');
is(q1(q{SELECT string_agg(calls::text, ',' ORDER BY calls) FROM apicount.caller_minute WHERE path = '/old'}), '2',
	'caller_minute: the row past 1 day is deleted, the one 23 hours back is kept');
is(q1(q{SELECT string_agg(calls::text, ',' ORDER BY calls) FROM apicount.caller_hour WHERE path = '/old'}), '4',
	'caller_hour: the row past 2 days is deleted, the one 1 day 22 hours back is kept');
is(q1(q{SELECT string_agg(calls::text, ',' ORDER BY calls) FROM apicount.caller_day WHERE path = '/old'}), '6',
	'caller_day: the row past 3 days 12 hours is deleted, the younger one is kept');
is(q1(q{SELECT count(*) > 0 FROM apicount.caller_hour WHERE bucket < now() - interval '1 day 2 hours'}), 't',
	'caller_hour keeps hours older than the minutes kept');
is(q1(q{SELECT count(*) > 0 FROM apicount.caller_day WHERE bucket < now() - interval '2 days 2 hours'}), 't',
	'caller_day keeps days older than the hours kept');
q1(q{DELETE FROM apicount.caller_minute WHERE path = '/old'; DELETE FROM apicount.caller_hour WHERE path = '/old';
     DELETE FROM apicount.caller_day WHERE path = '/old'});
same('caller_minute keeps every minute younger than its retention',
	"SELECT bucket, method, path, client_ip, user_id, $cols FROM apicount.caller_minute WHERE path LIKE '/t/%' AND bucket >= now() - interval '1 day' + interval '2 minutes'",
	"SELECT b, method, path, client_ip, user_id, $exp_cols FROM mirror WHERE path LIKE '/t/%' AND b >= now() - interval '1 day' + interval '2 minutes' GROUP BY 1, 2, 3, 4, 5");
same('caller_hour keeps every hour younger than its retention',
	"SELECT bucket, method, path, client_ip, user_id, $cols FROM apicount.caller_hour WHERE path LIKE '/t/%' AND bucket >= now() - interval '2 days' + interval '2 minutes'",
	"SELECT date_trunc('hour', b, 'UTC'), method, path, client_ip, user_id, $exp_cols FROM mirror WHERE path LIKE '/t/%' GROUP BY 1, 2, 3, 4, 5 "
	  . "HAVING date_trunc('hour', b, 'UTC') >= now() - interval '2 days' + interval '2 minutes'");
same('caller_day keeps every day younger than its retention',
	"SELECT bucket, method, path, client_ip, user_id, $cols FROM apicount.caller_day WHERE path LIKE '/t/%'",
	"SELECT date_trunc('day', b, 'UTC'), method, path, client_ip, user_id, $exp_cols FROM mirror WHERE path LIKE '/t/%' GROUP BY 1, 2, 3, 4, 5 "
	  . "HAVING date_trunc('day', b, 'UTC') >= now() - interval '3 days 12 hours'");

# ranges whose minutes (or hours) are gone: a0, a1: the first whole hour (day) after now() -
# retention_minute (retention_hour).  The API filters keep the flood's paths out of the
# ranges that reach it.
my $ret = q{ceil_to(now() - interval '1 day', 'hour'), ceil_to(now() - interval '2 days', 'day')};
my %rranges = (
	'minutes gone (30 h .. 26 h back)' => [ q{(SELECT t0 FROM setup) - interval '30 hours 10 minutes'}, q{(SELECT t0 FROM setup) - interval '26 hours 20 minutes'} ],
	'hours gone (2 days 6 h .. 2 days 1 h back)' => [ q{(SELECT t0 FROM setup) - interval '2 days 6 hours 10 minutes'}, q{(SELECT t0 FROM setup) - interval '2 days 1 hour 20 minutes'} ],
	'20 h back to 3 h back (minutes kept)' => [ q{(SELECT t0 FROM setup) - interval '20 hours 3 minutes'}, q{(SELECT t0 FROM setup) - interval '3 hours 1 minute'} ],
);
exact_round('after retention', $ret, \%rranges, \@filters);
my %rranges2 = ('2 days up to now, its start before the minutes kept' =>
	  [ q{(SELECT t0 FROM setup) - interval '2 days' + interval '3 hours 7 minutes'}, q{now() + interval '1 minute'} ]);
exact_round('after retention', $ret, \%rranges2,
	[ [ 'NULL', q{'{/t/a,/t/b,/t/c,/t/d}'}, 'NULL' ], [ q{'/t/c'}, 'NULL', q{'GET'} ] ]);
is(q1(q{SELECT count(*) FROM mirror x WHERE x.b >= date_trunc('hour', (SELECT t0 FROM setup) - interval '30 hours 10 minutes', 'UTC')
         AND x.b < date_trunc('minute', (SELECT t0 FROM setup) - interval '30 hours 10 minutes')}) > 0 ? 't' : 'f', 't',
	'the widened range holds hits before its start (the widening is tested)');

$node->stop;
done_testing();
