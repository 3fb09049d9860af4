# 011_straddle_burst.pl — a burst that straddles a minute boundary is caught whole by the
# sliding window, while per-minute buckets split it.
#
# With B = the start of the current UTC minute and T0 = now() of the setup transaction
# (the test waits until T0 is between B+1 s and B+40 s, so that the whole burst fits in the
# sliding minute and stays in it for the rest of the test):
#   - 203.0.113.7 sends 500 calls spread over [B-10 s, B) and 600 over [B, T0 - 0.1 s],
#     1,100 calls within 60 s of now();
#   - 203.0.113.8 sends 399 + 600 = 999 calls at the same times (one below the threshold);
#   - 203.0.113.9 sends 1,000 calls 65 s before B (outside the sliding minute).
# Proves, with expected counts computed in Perl from the ts values (documented slot rule:
# the last 12 slots of 5 s up to the slot holding now(), ts <= now()):
#   - hot_callers(1000, '1 minute') returns exactly 203.0.113.7 with 1,100 calls (and
#     hot_callers(1101, ...) returns nothing); top_callers agrees;
#   - after apicount.flush(), api_minute and caller_minute grouped by bucket show 500 and 600
#     for that IP (neither minute reaches 1,000), i.e. a minute-bucket detector misses it.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use ApicountTest qw(ts_text slot_of $SLOT_US window_node);
use POSIX qw(floor);
use Time::HiRes qw(time usleep);

my $PATH = '/api/v1/export';

my $node = window_node('straddle');

my $done = 0;
for my $attempt (1 .. 3)
{
	# the wall clock must be 1..40 s into a minute; otherwise wait for the next one
	my $sec = time() - 60 * floor(time() / 60);
	if ($sec < 1.5 || $sec > 38)
	{
		my $wait = $sec < 1.5 ? 1.5 - $sec : 61.5 - $sec;
		note(sprintf('waiting %.1f s for the next minute', $wait));
		usleep(int($wait * 1e6));
	}
	my $pfx = "$PATH-a$attempt";    # fresh path per attempt (no digit-only segment)
	my $t0 = $node->safe_psql('postgres',
		'SELECT (extract(epoch FROM now()) * 1000000)::bigint');
	my $b = 60_000_000 * floor($t0 / 60_000_000);
	if ($t0 - $b < 1_000_000 || $t0 - $b > 40_000_000)
	{
		diag('setup now() ' . ts_text($t0) . ' is not 1..40 s into its minute; retrying');
		next;
	}

	# ts lists, in Perl
	my (@first, @second, @old);
	push @first,  $b - 10_000_000 + int($_ * 10_000_000 / 500) for 0 .. 499;
	my $span = $t0 - 100_000 - $b;
	push @second, $b + int($_ * $span / 599) for 0 .. 599;
	push @old,    $b - 65_000_000 + $_ for 0 .. 999;

	my %ts_of = (
		'203.0.113.7' => [ @first, @second ],
		'203.0.113.8' => [ @first[ 101 .. 499 ], @second ],
		'203.0.113.9' => [@old]);
	my @vals;
	for my $ip (sort keys %ts_of)
	{
		push @vals, "('" . ts_text($_) . "', '$ip')" for @{ $ts_of{$ip} };
	}
	$node->safe_psql('postgres',
		    "INSERT INTO apicount.requests (ts, method, path, client_ip, status) "
		  . "SELECT v.ts::timestamptz, 'GET', '$pfx', v.ip::inet, 200 FROM (VALUES "
		  . join(',', @vals)
		  . ") v(ts, ip)");

	my $out = $node->safe_psql(
		'postgres', qq{
BEGIN;
SELECT 'now', (extract(epoch FROM now()) * 1000000)::bigint;
SELECT 'hot1000', method, path, client_ip, calls FROM apicount.hot_callers(1000, '1 minute')
 WHERE path = '$pfx';
SELECT 'hot1101', count(*) FROM apicount.hot_callers(1101, '1 minute') WHERE path = '$pfx';
SELECT 'top', client_ip, calls FROM apicount.top_callers(10, '1 minute', '$pfx')
 ORDER BY client_ip;
COMMIT;});
	my @rows = map { [ split /\|/, $_, -1 ] } split /\n/, $out;
	my ($tq) = map { $_->[1] } grep { $_->[0] eq 'now' } @rows;
	my $cur = slot_of($tq);

	# expected calls per IP in the sliding minute at the query's now()
	my %exp;
	for my $ip (keys %ts_of)
	{
		my $n = grep { slot_of($_) >= $cur - 11 && slot_of($_) <= $cur && $_ <= $tq }
		  @{ $ts_of{$ip} };
		$exp{$ip} = $n if $n;
	}
	if (($exp{'203.0.113.7'} // 0) != 1100)
	{
		diag('query now() ' . ts_text($tq) . ': the burst left the window; retrying');
		next;
	}
	note('B=' . ts_text($b) . ' T0=' . ts_text($t0) . ' query now()=' . ts_text($tq));
	is_deeply(\%exp, { '203.0.113.7' => 1100, '203.0.113.8' => 999 },
		'expected window counts (Perl): 1,100 and 999, the old burst outside');

	my @hot = map { join ' ', @$_[ 1 .. 4 ] } grep { $_->[0] eq 'hot1000' } @rows;
	is_deeply(\@hot, ["GET $pfx 203.0.113.7 1100"],
		"hot_callers(1000, '1 minute') returns the straddling IP with 1,100 calls, only it");
	my ($h1101) = map { $_->[1] } grep { $_->[0] eq 'hot1101' } @rows;
	is($h1101, 0, "hot_callers(1101, '1 minute') returns nothing for the path");
	my %top = map { ($_->[1] => $_->[2]) } grep { $_->[0] eq 'top' } @rows;
	is_deeply(\%top, \%exp, "top_callers(10, '1 minute', path) agrees");

	# minute buckets
	$node->safe_psql('postgres', 'SELECT apicount.flush()');
	my $b1 = ts_text($b - 60_000_000);
	my $b2 = ts_text($b);
	my $api = $node->safe_psql('postgres',
		"SELECT extract(epoch FROM bucket)::bigint, sum(calls) FROM apicount.api_minute "
		  . "WHERE path = '$pfx' AND bucket IN ('$b1', '$b2') GROUP BY bucket ORDER BY bucket");
	my $e1 = ($b - 60_000_000) / 1_000_000;
	my $e2 = $b / 1_000_000;
	is($api, "$e1|899\n$e2|1200",
		'api_minute by bucket: 899 (500+399) and 1,200 (600+600) for the path');
	my $cm = $node->safe_psql('postgres',
		"SELECT extract(epoch FROM bucket)::bigint, sum(calls) FROM apicount.caller_minute "
		  . "WHERE path = '$pfx' AND client_ip = '203.0.113.7' GROUP BY bucket ORDER BY bucket");
	is($cm, "$e1|500\n$e2|600",
		'caller_minute by bucket for 203.0.113.7: 500 and 600, neither reaches 1,000');
	my $minute_hot = $node->safe_psql('postgres',
		"SELECT count(*) FROM (SELECT 1 FROM apicount.caller_minute WHERE path = '$pfx' "
		  . "AND client_ip IN ('203.0.113.7', '203.0.113.8') GROUP BY bucket, client_ip "
		  . "HAVING sum(calls) >= 1000) s");
	is($minute_hot, 0, 'a per-minute detector (bucket, IP) >= 1,000 finds nothing');
	my $unflushed = $node->safe_psql('postgres',
		"SELECT coalesce(sum(unflushed), 0) FROM apicount.live WHERE path = '$pfx'");
	is($unflushed, 0, 'everything was flushed before reading the minute buckets');
	$done = 1;
	last;
}
ok($done, 'an attempt ran with the burst inside the sliding minute');

done_testing();
