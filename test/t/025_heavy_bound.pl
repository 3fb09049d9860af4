# 025_heavy_bound.pl — the Space-Saving bound of the summaries of heavy callers (src/shmem/heavy.h),
# tested against counts computed here in Perl.
#
# A small server: apicount.max_entries = 1000 (the minimum), apicount.heavy_counters = 64.  The
# caller tier is filled first with 1,000 callers of /fill, so every caller after that is folded.
# Then, within one minute, a stream of 40,000 calls to /b from 2,000 IPs with skewed counts
# (IP k gets about 40000 / (k * H) calls, a Zipf law, in a shuffled order, 40 transactions of
# 1,000 rows), plus 1,000 calls from 10.9.9.9 spread over the stream.  With F folded calls and
# m = 64 counters, Space-Saving (Metwally et al. 2005) promises, for every IP group of /b:
#   count - error <= truth <= count for each counter; error <= min count <= F / m;
#   every group with truth > F / m is in the summary.
# Checked on the live summary (_live_heavy), through hot_callers() (never below the truth, above
# it by at most calls_error, every IP with truth >= the threshold reported), and after the
# worker wrote the minute to caller_heavy_minute (same figures through callers()).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use List::Util qw(shuffle sum);

my $node = PostgreSQL::Test::Cluster->new('heavy_bound');
$node->init;
$node->append_conf('postgresql.conf',
	"shared_preload_libraries = 'apicount'\n"
	  . "apicount.max_entries = 1000\n"
	  . "apicount.heavy_counters = 64\n"
	  . "apicount.flush_interval = '1s'\n"
	  . "timezone = 'UTC'\n");
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION apicount');
sub q1 { return $node->safe_psql('postgres', $_[0]); }

# all of it within one minute: start early in one
my $sec = q1("SELECT extract(second FROM now())::int");
sleep(61 - $sec) if $sec > 20;
my $minute = q1("SELECT date_trunc('minute', now())");

q1("INSERT INTO apicount.requests (path, client_ip) SELECT '/fill', '10.1.0.0'::inet + g FROM generate_series(1, 1000) g");
is(q1('SELECT caller_entries FROM apicount.stats'), '1000', 'the caller tier is full');

# the stream: a Zipf law over 2,000 IPs, plus one IP whose calls come spread out
my $H = sum(map { 1 / $_ } 1 .. 2000);
my %truth;
my @stream;
for my $k (1 .. 2000)
{
	my $n = int(40000 / ($k * $H)) + 1;
	my $ip = '10.2.' . int($k / 256) . '.' . ($k % 256);
	$truth{$ip} += $n;
	push @stream, ($ip) x $n;
}
$truth{'10.9.9.9'} = 1000;
push @stream, ('10.9.9.9') x 1000;
srand(14);
@stream = shuffle(@stream);
my $F = scalar @stream;

# calls to /b, one per element of @_ (an IP), in one transaction
sub insert_b
{
	my %c;
	$c{$_}++ for @_;
	q1("INSERT INTO apicount.requests (path, client_ip, status) SELECT '/b', ip::inet, 200 FROM (VALUES "
		  . join(',', map { "('$_', $c{$_})" } keys %c)
		  . ") v(ip, n), generate_series(1, n)");
}
while (my @batch = splice(@stream, 0, 1000))
{
	insert_b(@batch);
}
my $m = 64;
my $bound = $F / $m;
diag("F = $F folded calls, m = $m, F/m = $bound");
is(q1("SELECT date_trunc('minute', now())"), $minute, 'the stream fell in one minute');
is(q1('SELECT folded_calls FROM apicount.stats'), $F, 'stats.folded_calls = the stream');

sub check_summary
{
	my ($rows, $what) = @_;
	my (%seen, @bad);
	my $min;
	for (split /\n/, $rows)
	{
		my ($ip, $c, $e) = split /\|/;
		$ip =~ s{/32$}{};
		$seen{$ip} = 1;
		my $t = $truth{$ip} // 0;
		push @bad, "$ip: truth $t, count $c, error $e" unless $c - $e <= $t && $t <= $c && $e <= $bound;
	}
	is(scalar @bad, 0, "$what: count - error <= truth <= count and error <= F/m for every counter")
	  or diag(join("\n", @bad[ 0 .. ($#bad < 10 ? $#bad : 10) ]));
	my @missed = grep { $truth{$_} > $bound && !$seen{$_} } keys %truth;
	is(scalar @missed, 0, "$what: every IP with more than F/m calls is in it")
	  or diag(join(' ', @missed));
	return scalar keys %seen;
}

my $live = q1("SELECT client_ip, calls, calls_error FROM apicount._live_heavy('$minute', '$minute'::timestamptz + interval '1 minute', 'ip') WHERE path = '/b'");
is(check_summary($live, 'live summary'), $m, "the summary holds $m counters for /b");
my ($folded, $absent) = split /\|/, q1("SELECT calls, calls_error FROM apicount._live_heavy('$minute', '$minute'::timestamptz + interval '1 minute', 'ip') WHERE method IS NULL");
is($folded, $F, 'the summary counted every folded call');
cmp_ok($absent, '<=', $bound, "its bound for absent callers ($absent) <= F/m");

# hot_callers: never below the truth, every IP at or over the threshold
my $threshold = 700;
my %hot = map { my @f = split /\|/; ($f[0] => [ @f ]) }
  split /\n/, q1("SELECT client_ip, calls, calls_error FROM apicount.hot_callers($threshold, '2 minutes', '/b')");
my @wrong = grep { my $r = $hot{$_}; !$r || $r->[1] < $truth{$_} } grep { $truth{$_} >= $threshold } keys %truth;
is(scalar @wrong, 0, "hot_callers($threshold): every IP with >= $threshold calls, with calls >= its truth")
  or diag(join(' ', @wrong));
@wrong = grep { my $t = $truth{$_} // 0; $hot{$_}[1] - $hot{$_}[2] > $t } keys %hot;
is(scalar @wrong, 0, 'hot_callers: calls - calls_error <= truth for every row') or diag(join(' ', @wrong));
ok($hot{'10.9.9.9'} && $truth{'10.9.9.9'} > $bound, 'the spread-out caller (1000 calls > F/m) is reported');

# after the minute is written by the worker: caller_heavy_minute through callers()
my $ok = 0;
for (1 .. 200)
{
	$ok = q1("SELECT count(*) FROM apicount.caller_heavy_minute WHERE bucket = '$minute' AND grouped_by = 'ip' AND path = '/b'");
	last if $ok > 0;
	sleep 1;
}
is($ok, $m, 'the worker wrote the minute\'s summary to caller_heavy_minute');
check_summary(q1("SELECT client_ip, calls, calls_error FROM apicount.caller_heavy_minute WHERE bucket = '$minute' AND grouped_by = 'ip' AND path = '/b'"),
	'caller_heavy_minute');
my %cl = map { my @f = split /\|/; ($f[0] => [ @f ]) }
  split /\n/, q1("SELECT client_ip, calls, calls_error FROM apicount.callers('/b', '$minute', '$minute'::timestamptz + interval '1 minute') WHERE client_ip IS NOT NULL");
@wrong = grep { my $r = $cl{$_}; !$r || $r->[1] < $truth{$_} || $r->[1] - $r->[2] > $truth{$_} } grep { $truth{$_} > $bound } keys %truth;
is(scalar @wrong, 0, 'callers() after the write: every IP over F/m, with calls - calls_error <= truth <= calls')
  or diag(join(' ', @wrong));
is(q1("SELECT calls FROM apicount.callers('/b', '$minute', '$minute'::timestamptz + interval '1 minute') WHERE user_id = '(other callers)'"),
	$F, 'callers(): the "(other callers)" row holds the whole folded stream');

# ---- a range of two minutes, with callers absent from a summary of the second minute ----------
# In a later minute, five IPs (10.5.0.k) send 400 calls each to /b (first, so counted exactly),
# then the 10 busiest IPs of the first minute and five more (10.6.0.k) send 3 calls each, then
# 10,000 new IPs send 2 calls each: the summary evicts the 3-call ones, so in that minute they
# are in no row at all.  Then the server restarts within the minute (the shutdown writes the
# minute's summaries), and a second summary of the same minute counts 400 calls of each
# 10.6.0.k, then 3 of each 10.5.0.k, evicted in turn by 10,000 more IPs with 2 calls each.
# Over a range holding both minutes, callers() and top_callers() must still never be below the
# truth: a minute, or a summary of it, that lacks a caller adds its bound; the worker's write of
# the second summary merges it with the first one the same way.
my @top10 = (sort { $truth{$b} <=> $truth{$a} || $a cmp $b } keys %truth)[ 0 .. 9 ];
my @g1 = map { "10.5.0.$_" } 1 .. 5;
my @g2 = map { "10.6.0.$_" } 1 .. 5;
my %truth2;
my $F2 = 0;

sub send_b
{
	my ($calls) = @_;    # { ip => calls }, shuffled, 1,000 rows (at most max_entries callers) a transaction
	my @s = shuffle(map { ($_) x $calls->{$_} } sort keys %$calls);
	$truth2{$_} += $calls->{$_} for keys %$calls;
	$F2 += scalar @s;
	while (my @batch = splice(@s, 0, 1000))
	{
		insert_b(@batch);
	}
}

sub many_ips
{
	my ($prefix) = @_;
	return map { ($prefix . int($_ / 256) . '.' . ($_ % 256) => 2) } 1 .. 10000;
}

$sec = q1("SELECT extract(second FROM now())::int");
sleep(61 - $sec) if $sec > 15;
my $minute2 = q1("SELECT date_trunc('minute', now())");
# the first minute's entries may have been let go: fill the caller tier again
q1("INSERT INTO apicount.requests (path, client_ip) SELECT '/fill2', '10.3.0.0'::inet + g FROM generate_series(1, 1000) g");
send_b({ map { ($_ => 400) } @g1 });
send_b({ map { ($_ => 3) } @top10, @g2 });
send_b({ many_ips('10.4.') });
$node->restart;
my $gen1 = q1("SELECT coalesce(sum(folded_calls), 0) FROM apicount.heavy_minute_bounds WHERE bucket = '$minute2' AND grouped_by = 'ip'");
cmp_ok($gen1, '>', 0, "the shutdown wrote the second minute's first summary ($gen1 folded calls)");
q1("INSERT INTO apicount.requests (path, client_ip) SELECT '/fill3', '10.3.8.0'::inet + g FROM generate_series(1, 1000) g");
send_b({ map { ($_ => 400) } @g2 });
send_b({ map { ($_ => 3) } @g1 });
send_b({ many_ips('10.7.') });
is(q1("SELECT date_trunc('minute', now())"), $minute2, 'the second minute\'s streams and the restart fell in one minute');
my %total = %truth;
$total{$_} += $truth2{$_} for keys %truth2;
my $range_bound = $F / $m + $F2 / $m;
my $in_summary = sub {
	my ($from, $ips) = @_;
	return q1("SELECT count(*) FROM $from AND path = '/b' AND client_ip IN ('" . join("','", @$ips) . "')");
};
my $top10_kept = $in_summary->("apicount.caller_heavy_minute WHERE grouped_by = 'ip' AND bucket = '$minute2'", \@top10);
my $g1_live = $in_summary->("apicount._live_heavy('$minute2', '$minute2'::timestamptz + interval '1 minute', 'ip') WHERE true", \@g1);
diag("second minute: F2 = $F2 calls over two summaries; of the 10, $top10_kept in its first summary; of 10.5.0.*, $g1_live in its second");
ok($top10_kept < 10 && $g1_live < 5, 'the summaries of the second minute lost some of those callers (the case under test)');

# check_range(rows, what, truth, bound, listed): every row within its bound of the truth; every
# IP over the bound reported; the IPs of @listed (that a summary of the second minute lacks, but
# that the range has a row of) reported, never below their truth
sub check_range
{
	my ($rows, $what, $truth, $must_bound, @listed) = @_;
	my %got = map { my @f = split /\|/; $f[0] =~ s{/32$}{}; ($f[0] => [ @f ]) } split /\n/, $rows;
	my @bad;
	for my $ip (sort keys %got)
	{
		my ($c, $e) = @{ $got{$ip} }[ 1, 2 ];
		my $t = $truth->{$ip} // 0;
		push @bad, "$ip: truth $t, calls $c, calls_error $e" unless $c - $e <= $t && $t <= $c;
	}
	is(scalar @bad, 0, "$what: calls - calls_error <= truth <= calls for every IP")
	  or diag(join("\n", @bad[ 0 .. ($#bad < 10 ? $#bad : 10) ]));
	my @missed = grep { !$got{$_} } grep { $truth->{$_} > $must_bound } keys %$truth;
	is(scalar @missed, 0, "$what: every IP with more calls than the bound is reported")
	  or diag(join(' ', @missed));
	my @top_low = grep { !$got{$_} || $got{$_}[1] < $truth->{$_} } @listed;
	is(scalar @top_low, 0, "$what: the " . scalar(@listed) . " IPs absent from a summary of the second minute, calls >= truth")
	  or diag(join(' ', map { "$_: truth $truth->{$_}, got " . ($got{$_} ? $got{$_}[1] : 'none') } @top_low));
}
my $range = "'$minute', '$minute2'::timestamptz + interval '1 minute'";
my $range2 = "'$minute2', '$minute2'::timestamptz + interval '1 minute'";
check_range(q1("SELECT client_ip, calls, calls_error FROM apicount.callers('/b', $range) WHERE client_ip IS NOT NULL"),
	'callers() over both minutes (the second one\'s summaries: one written at shutdown, one live)', \%total, $range_bound, @top10, @g1, @g2);
check_range(q1("SELECT client_ip, calls, calls_error FROM apicount.callers('/b', $range2) WHERE client_ip IS NOT NULL"),
	'callers() over the second minute (one summary written at shutdown, one live)', \%truth2, $F2 / $m, @g1, @g2);
my $since = q1("SELECT ceil(extract(epoch FROM now() - '$minute'::timestamptz) / 60) || ' minutes'");
check_range(q1("SELECT client_ip, calls, calls_error FROM apicount.top_callers(100000, '$since', '/b', 'ip')"),
	"top_callers(since $since) over both minutes", \%total, $range_bound, @top10, @g1, @g2);
# the worker writes the live summary once the minute is past the live horizon
my $written = 0;
for (1 .. 240)
{
	$written = q1("SELECT coalesce(sum(folded_calls), 0) FROM apicount.heavy_minute_bounds WHERE bucket = '$minute2' AND grouped_by = 'ip'");
	last if $written > $gen1;
	sleep 1;
}
cmp_ok($written, '>', $gen1, 'the worker wrote the second summary of the second minute (its folded calls added)');
my $other2 = q1("SELECT coalesce(sum(calls), 0) FROM apicount.caller_minute WHERE bucket = '$minute2' AND path = '/b' "
	  . "AND client_ip IS NULL AND user_id = '(other callers)'");
diag("second minute: $other2 of the $F2 calls to /b folded");
cmp_ok($written, '>=', $other2, 'the two summaries of the second minute counted each folded call to /b');
is(q1("SELECT count(*) FROM apicount._live_heavy('$minute2', '$minute2'::timestamptz + interval '1 minute', 'ip')"), '0',
	'and let the live one go');
check_range(q1("SELECT client_ip, calls, calls_error FROM apicount.callers('/b', $range) WHERE client_ip IS NOT NULL"),
	'callers() over both minutes, both summaries of the second merged by the worker', \%total, $range_bound, @top10, @g1, @g2);
check_range(q1("SELECT client_ip, calls, calls_error FROM apicount.callers('/b', $range2) WHERE client_ip IS NOT NULL"),
	'callers() over the second minute, its two summaries merged by the worker', \%truth2, $F2 / $m, @g1, @g2);

$node->stop;
done_testing();
