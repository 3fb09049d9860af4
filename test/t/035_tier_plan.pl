# 035_tier_plan.pl — the reading plan of a range (apicount._tier_plan, src/query/tiers.c):
# which tier answers which part of [from, to), for every range query (issue 18).
#
# For six retention settings (the defaults; minute 1 day, hour 2 days, day 3 days 12 hours;
# minute 90 minutes, hour 36 hours; minute and hour both 5 hours through apicount.retention;
# hour shorter than minute; minute 13 months, hour 14 months: a month is 30 days, as the
# worker counts it), each applied by a reload, and for about 1,400 ranges (ends on and
# around the minute tier's and hour tier's retention limits, hour and day boundaries, now,
# random minutes over 420 days; ends before starts) and each coarsest tier (0, 1, 2):
#  - the plan (f, ha, d0, d1, hb, t) equals the one this file computes in Perl from the
#    contract (README "Ranges and tiers", tiers.h): minutes are kept from a0 = the first whole
#    hour at or after now - retention_minute, hours from a1 = the first whole day at or after
#    now - max(retention_minute, retention_hour); an end before a1 widens to its day, before
#    a0 to its hour; then whole hours (coarsest >= 1) and whole days (coarsest 2) inside;
#  - and, independently of that computation, its properties: f <= ha <= d0 <= d1 <= hb <= t;
#    the day and hour intervals in use start and end on their unit; no minute interval
#    before a0, no hour interval before a1; with coarsest 0, hours only before a0, and with
#    coarsest 0 or 1, days only before a1; f is from (t is to) unless widened to the hour or
#    day that holds it, where minutes or hours are gone.  0.4 to 0.6 broke the order where
#    hours are kept less than a day longer than minutes (a1 > a0) with coarsest 0: they
#    read [a0, a1) from both minutes and days;
#  - _retention_secs() gives each tier's retention as the worker applies it;
#  - end to end, with minutes and hours both kept 1 hour: minutes() and series() with a
#    one-minute step over 2 hours count each of 60 fresh hits once (a plain table's count);
#    0.4 to 0.6 counted twice the hits since the start of the current hour, from 01:00 UTC
#    on (before, the stretch read twice lies in the previous day);
#  - _tier_of_step gives 2 for a whole number of days, 1 for a whole number of hours, else 0.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

my $node = PostgreSQL::Test::Cluster->new('tier_plan');
$node->init;
$node->append_conf('postgresql.conf',
	"shared_preload_libraries = 'apicount'\napicount.flush_interval = '1h'\ntimezone = 'UTC'\n");
$node->start;
sub q1 { return $node->safe_psql('postgres', $_[0]); }
q1('CREATE EXTENSION apicount');

my $MIN = 60_000_000;
my $HOUR = 60 * $MIN;
my $DAY = 24 * $HOUR;
# UTC boundaries: Unix time 0 is a UTC midnight, so a boundary is a multiple of its unit
sub fl { my ($x, $u) = @_; return $x - ($x % $u); }
sub ce { my ($x, $u) = @_; my $f = fl($x, $u); return $f < $x ? $f + $u : $f; }
sub min2 { return $_[0] < $_[1] ? $_[0] : $_[1]; }

# the plan by the contract, for minutes kept from a0 and hours from a1
sub expected_plan
{
	my ($from, $to, $c, $a0, $a1) = @_;
	my $f = $from < $a1 ? fl($from, $DAY) : $from < $a0 ? fl($from, $HOUR) : $from;
	my $t = $to <= $a1 ? ce($to, $DAY) : $to <= $a0 ? ce($to, $HOUR) : $to;
	return ($f, $t, $t, $t, $t, $t) if $t <= $f;
	my ($ha, $hb, $d0, $d1);
	if ($c >= 1)
	{
		($ha, $hb) = (ce($f, $HOUR), fl($t, $HOUR));
		($ha, $hb) = ($t, $t) if $ha >= $hb;
	}
	elsif ($f < $a0)
	{
		# hours and days up to where minutes are kept: a0, or a1 when hours are gone there too
		($ha, $hb) = ($f, min2($a0 > $a1 ? $a0 : $a1, $t));
	}
	else { ($ha, $hb) = ($t, $t); }
	if ($c >= 2 && $ha < $hb)
	{
		($d0, $d1) = (ce($ha, $DAY), fl($hb, $DAY));
		($d0, $d1) = ($hb, $hb) if $d0 >= $d1;
	}
	elsif ($f < $a1) { ($d0, $d1) = ($f, min2($a1, $t)); }
	else { ($d0, $d1) = ($hb, $hb); }
	return ($f, $ha, $d0, $d1, $hb, $t);
}

# the plan's properties, whatever computed it; returns the first one broken, or ''
sub broken_property
{
	my ($from, $to, $c, $a0, $a1, $f, $ha, $d0, $d1, $hb, $t) = @_;
	if ($t <= $f)
	{
		# an empty range: nothing is read
		return ($ha == $t && $d0 == $t && $d1 == $t && $hb == $t) ? '' : 'empty range with intervals';
	}
	return 'order' unless $f <= $ha && $ha <= $d0 && $d0 <= $d1 && $d1 <= $hb && $hb <= $t;
	return 'days not on day boundaries' if $d0 < $d1 && ($d0 % $DAY || $d1 % $DAY);
	return 'hours not on hour boundaries'
	  if ($ha < $d0 && ($ha % $HOUR || $d0 % $HOUR)) || ($d1 < $hb && ($d1 % $HOUR || $hb % $HOUR));
	return 'minutes before a0' if ($f < $ha && $f < $a0) || ($hb < $t && $hb < $a0);
	return 'hours before a1' if ($ha < $d0 && $ha < $a1) || ($d1 < $hb && $d1 < $a1);
	return 'hours where minutes are kept (coarsest 0)'
	  if $c == 0 && (($ha < $d0 && $d0 > $a0) || ($d1 < $hb && $hb > $a0));
	return 'days where hours are kept (coarsest < 2)' if $c < 2 && $d0 < $d1 && $d1 > $a1;
	# (an end before a1 widens to its day even where minutes are kept: a1 > a0 when hours are
	# kept less than a day longer than minutes)
	return 'from moved though its minute and hour are kept' if $from >= $a0 && $from >= $a1 && $f != $from;
	return 'to moved though its minute and hour are kept' if $to > $a0 && $to > $a1 && $t != $to;
	return 'from widened past its tier' if $f > $from || $from - $f >= ($from < $a1 ? $DAY : $HOUR);
	return 'to widened past its tier' if $t < $to || $t - $to >= ($to <= $a1 ? $DAY : $HOUR);
	return '';
}

my @settings = (
	[ 'defaults', '', '', '', '' ],
	[ 'minute 1 day, hour 2 days, day 3 days 12 hours', '', '1 day', '2 days', '3 days 12 hours' ],
	[ 'minute 90 minutes, hour 36 hours', '', '90 minutes', '36 hours', '' ],
	[ 'minute (apicount.retention) and hour 5 hours', '5 hours', '', '5 hours', '' ],
	[ 'hour shorter than minute', '', '3 days', '1 day', '' ],
	[ 'minute 13 months, hour 14 months', '', '13 months', '14 months', '' ],);
my %secs = (
	'' => undef, '1 day' => 86400, '2 days' => 172800, '3 days 12 hours' => 302400,
	'90 minutes' => 5400, '36 hours' => 129600, '5 hours' => 18000, '3 days' => 259200,
	'30 days' => 2592000, '400 days' => 34560000, '5 years' => 157788000,
	'13 months' => 390 * 86400, '14 months' => 420 * 86400);

srand(35);
for my $s (@settings)
{
	my ($label, $ret, $rmin, $rhour, $rday) = @$s;
	q1("ALTER SYSTEM SET apicount.retention = '" . ($ret || '30 days') . "'");
	q1("ALTER SYSTEM SET apicount.retention_minute = '$rmin'");
	q1("ALTER SYSTEM SET apicount.retention_hour = '" . ($rhour || '400 days') . "'");
	q1("ALTER SYSTEM SET apicount.retention_day = '" . ($rday || '5 years') . "'");
	q1('SELECT pg_reload_conf()');
	my $m = $secs{ $rmin || $ret || '30 days' };
	my $h = $secs{ $rhour || '400 days' };
	$h = $m if $m > $h;
	my $d = $secs{ $rday || '5 years' };
	$d = $h if $h > $d;
	# a reload is applied asynchronously: wait (5 s at most) for a session that sees it
	my $ret_q = 'SELECT minute_secs || \' \' || hour_secs || \' \' || day_secs FROM apicount._retention_secs()';
	for (1 .. 50)
	{
		last if q1($ret_q) eq "$m $h $d";
		usleep(100_000);
	}
	is(q1($ret_q), "$m $h $d", "$label: _retention_secs()");

	# now() of the transaction the plans are computed in: a later one, so pick ends around a
	# now taken here and let the query report its own
	my $now = q1('SELECT (extract(epoch FROM now()) * 1000000)::bigint') + 0;
	my $a0 = ce($now - $m * 1_000_000, $HOUR);
	my $a1 = ce($now - $h * 1_000_000, $DAY);
	my @marks = ($now, fl($now, $MIN), fl($now, $HOUR), fl($now, $DAY), $a0, $a1,
		fl($now - 7 * $DAY, $DAY));
	my @pts;
	for my $x (@marks)
	{
		push @pts, map { $x + $_ } (0, -$MIN, $MIN, -$HOUR, $HOUR, 59 * $MIN, -$DAY, $DAY, 25 * $HOUR);
	}
	push @pts, fl($now, $MIN) - int(rand(420 * 1440)) * $MIN for 1 .. 12;
	my (@from, @to);
	for my $x (@pts)
	{
		for my $y (@pts)
		{
			next if rand() > 0.25 && $x != $y;
			push @from, fl($x, $MIN);      # from_bucket: a minute
			push @to, $y + 17_000_123;    # to_ts: any instant
		}
	}
	my $n = scalar @from;
	my $rows = q1(
		"SELECT (extract(epoch FROM now()) * 1000000)::bigint, x.i, c, "
		  . join(', ', map { "(extract(epoch FROM p.$_) * 1000000)::bigint" } qw(f ha d0 d1 hb t))
		  . " FROM unnest('{" . join(',', @from) . "}'::bigint[], '{" . join(',', @to) . "}'::bigint[])"
		  . " WITH ORDINALITY x(fr, tt, i), generate_series(0, 2) c,"
		  . " LATERAL apicount._tier_plan(to_timestamp(x.fr / 1000000.0), to_timestamp(x.tt / 1000000.0), c) p"
		  . " ORDER BY x.i, c");
	my ($mism, $prop, $count, $first) = (0, 0, 0, '');
	for my $line (split /\n/, $rows)
	{
		my ($qnow, $i, $c, @got) = split /\|/, $line;
		if ($qnow != $now)
		{
			# the query ran later: limits from its own now
			$now = $qnow;
			$a0 = ce($now - $m * 1_000_000, $HOUR);
			$a1 = ce($now - $h * 1_000_000, $DAY);
		}
		my ($fr, $tt) = ($from[ $i - 1 ], $to[ $i - 1 ]);
		my @exp = expected_plan($fr, $tt, $c, $a0, $a1);
		$count++;
		if ("@exp" ne "@got")
		{
			$mism++;
			$first ||= "from $fr to $tt coarsest $c: got @got, expected @exp";
		}
		my $b = broken_property($fr, $tt, $c, $a0, $a1, @got);
		if ($b ne '')
		{
			$prop++;
			$first ||= "from $fr to $tt coarsest $c: $b (@got)";
		}
	}
	is($count, 3 * $n, "$label: a plan for each of $n ranges and 3 tiers");
	is($mism, 0, "$label: every plan is the contract's") or diag($first);
	is($prop, 0, "$label: every plan keeps the plan's properties") or diag($first);
}

# End to end, where 0.4 to 0.6 counted twice: minutes and hours both kept 1 hour (a1 > a0), a
# one-minute step over 2 hours ending now reads the day tier up to a1 and minutes after it, and
# every hit once.  The hits: 60 in the last minute, in a plain table too.  (0.4 to 0.6 read
# [a0, a1) twice: from the start of the current hour to midnight, when it is 01:00 UTC or
# later.)
q1("ALTER SYSTEM SET apicount.retention = '1 hour'");
q1("ALTER SYSTEM SET apicount.retention_minute = ''");
q1("ALTER SYSTEM SET apicount.retention_hour = '1 hour'");
q1('SELECT pg_reload_conf()');
for (1 .. 50)
{
	last if q1('SELECT hour_secs FROM apicount._retention_secs()') eq '3600';
	usleep(100_000);
}
q1(q{CREATE TABLE mirror AS
	SELECT clock_timestamp() - g * interval '1 second' AS ts, '/e/' || chr(97 + g % 3) AS path, 200 AS status
	FROM generate_series(1, 60) g;
	INSERT INTO apicount.requests (ts, method, path, status) SELECT ts, 'GET', path, status FROM mirror});
is(q1('SELECT apicount.flush() > 0'), 't', 'hits flushed');
my $truth = q1('SELECT count(*) FROM mirror');
is(q1(q{SELECT sum(calls) FROM apicount.minutes(now() - interval '2 hours', now(), '1 minute', by_api => false)}),
	$truth, 'minutes(by_api => false), 1-minute step, 2 hours, a1 > a0: each hit once');
is(q1(q{SELECT sum(calls) FROM apicount.series(NULL, now() - interval '2 hours', now(), '1 minute')}),
	$truth, 'series(all paths), 1-minute step, 2 hours, a1 > a0: each hit once');
is(q1(q{SELECT sum(calls) FROM apicount.series('/e/b', now() - interval '2 hours', now(), '1 minute')}),
	q1(q{SELECT count(*) FROM mirror WHERE path = '/e/b'}),
	'series(one path), 1-minute step, 2 hours, a1 > a0: each hit once');

# _tier_of_step: the coarsest tier a step can read (the step in whole days, hours, or less)
my @steps = ('1 minute', '90 seconds', '1 hour', '90 minutes', '2 hours', '24 hours', '1 day',
	'36 hours', '2 days', '7 days', '1 day 1 second', '1 hour 0.5 seconds', '1 second');
my %step_secs = (
	'1 minute' => 60, '90 seconds' => 90, '1 hour' => 3600, '90 minutes' => 5400,
	'2 hours' => 7200, '24 hours' => 86400, '1 day' => 86400, '36 hours' => 129600,
	'2 days' => 172800, '7 days' => 604800, '1 day 1 second' => 86401,
	'1 hour 0.5 seconds' => 3600.5, '1 second' => 1);
my $got = q1('SELECT string_agg(coalesce(apicount._tier_of_step(s::interval), -1)::text, \' \' ORDER BY o) FROM unnest(\'{'
	  . join(',', map { "\"$_\"" } @steps) . '}\'::text[]) WITH ORDINALITY u(s, o)');
my $exp = join ' ', map {
	my $x = $step_secs{$_};
	$x == int($x) && $x % 86400 == 0 ? 2 : $x == int($x) && $x % 3600 == 0 ? 1 : 0
} @steps;
is($got, $exp, '_tier_of_step: days 2, hours 1, else 0');
is(q1('SELECT apicount._tier_of_step(NULL)'), '2', '_tier_of_step(NULL): one total, days');

done_testing();
