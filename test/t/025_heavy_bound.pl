# 025_heavy_bound.pl — the Space-Saving bound of the summaries of heavy callers (src/heavy.h),
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
while (my @batch = splice(@stream, 0, 1000))
{
	my %c;
	$c{$_}++ for @batch;
	q1("INSERT INTO apicount.requests (path, client_ip, status) SELECT '/b', ip::inet, 200 FROM (VALUES "
		  . join(',', map { "('$_', $c{$_})" } keys %c)
		  . ") v(ip, n), generate_series(1, n)");
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

$node->stop;
done_testing();
