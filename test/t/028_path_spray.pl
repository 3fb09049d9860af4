# 028_path_spray.pl — a flood of distinct paths (issue 14): a scanner requests 1,000,000 paths
# that normalization cannot fold, while 10 APIs take 1,525 to 10,525 calls each.
#
# Default settings (apicount.max_apis = 10,000, apicount.heavy_counters = 2,048).  The spray
# comes first, so the API tier is full before the heavy APIs arrive: they are folded into
# GET "(other)" and counted in the minute's summary of folded APIs (src/shmem/heavy.h, HEAVY_API).
# Checked against the counts this script sent (computed here, not by apicount):
#   - api_minute adds up exactly to the 1,060,000 calls sent, with at most max_apis named
#     rows per minute (bounded memory), and shared memory does not change;
#   - top_apis(11, range) lists GET "(other)" (about 1M calls) and names exactly the 10 heavy
#     APIs, each with
#       calls - calls_error <= sent <= calls   and   calls_error <= N / m
#     (Space-Saving, Metwally et al. 2005: error <= F / m per minute, and F <= N);
#   - the same through the sliding window top_apis(11, '2 minutes') and the rules per API,
#     and after a restart, when the worker has written the summaries to caller_heavy_minute
#     (grouped_by 'api'), and again after more traffic.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

my $node = PostgreSQL::Test::Cluster->new('path_spray');
$node->init;
$node->append_conf('postgresql.conf',
	"shared_preload_libraries = 'apicount'\n" . "timezone = 'UTC'\n");
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION apicount');
sub q1 { return $node->safe_psql('postgres', $_[0]); }

my $m = q1("SELECT current_setting('apicount.heavy_counters')::int");
my $max_apis = q1("SELECT current_setting('apicount.max_apis')::int");
is("$m/$max_apis", '2048/10000', 'default settings');
my $shmem = q1('SELECT shared_memory_bytes FROM apicount.stats');
my $t0 = time;
my $start = q1("SELECT date_trunc('minute', now())");

# 20 transactions of 50,000 distinct paths each (below the pending level's bound, so every
# key reaches shared memory), then the heavy APIs: API i gets (50 * i + 25) calls in each of
# batches 2 to 21, every fifth one a 500.
my $spray_batches = 20;
my $spray_rows = 50_000;
my %sent;
$sent{ '/export/h' . chr(96 + $_) } = 20 * (50 * $_ + 25) for 1 .. 10;
my $N = $spray_batches * $spray_rows;
$N += $_ for values %sent;
# one transaction: 50,000 new spray paths (tag $b) if $spray, and (50 * i + 25) calls of each
# heavy API i if $heavy, every fifth one a 500
sub send_batch
{
	my ($b, $spray, $heavy) = @_;
	my @parts;
	push @parts,
	  "SELECT '/spray/' || translate(md5('$b:' || g), '0123456789abcdef', 'ghijklmnopqrstuv'), 200 "
	  . "FROM generate_series(1, $spray_rows) g"
	  if $spray;
	if ($heavy)
	{
		for my $i (1 .. 10)
		{
			my $k = 50 * $i + 25;
			push @parts,
			  "SELECT '/export/h' || chr(96 + $i), CASE WHEN g % 5 = 0 THEN 500 ELSE 200 END "
			  . "FROM generate_series(1, $k) g";
		}
	}
	q1("INSERT INTO apicount.requests (method, path, client_ip, status, latency_ms) "
		  . "SELECT 'GET', p, '10.7.0.1', s, 1 FROM (" . join(' UNION ALL ', @parts) . ") x(p, s)");
}
send_batch($_, $_ <= $spray_batches, $_ >= 2) for 1 .. 21;
my $elapsed = time - $t0;
diag(sprintf('sent %d calls (%d distinct spray paths) in %.1f s', $N, $N - 60000, $elapsed));
my $bound = $N / $m;

# the heavy APIs were folded: the spray filled the API tier first
ok(q1('SELECT overflow_hits FROM apicount.stats') >= 60000,
	'the API tier was full: the heavy APIs were folded into "(other)"');

sub check_top
{
	my ($rows, $what) = @_;
	my %got;
	for (split /\n/, $rows)
	{
		my ($path, $calls, $err) = split /\|/;
		$got{$path} = [ $calls, $err ];
	}
	is(join(',', sort keys %got), join(',', sort keys %sent),
		"$what: besides (other), the top 10 are the 10 heavy APIs");
	my @bad;
	for my $p (sort keys %sent)
	{
		my ($c, $e) = @{ $got{$p} // [ -1, 0 ] };
		push @bad, "$p sent $sent{$p}, calls $c, calls_error $e"
		  unless $c >= $sent{$p} && $c - $e <= $sent{$p} && $e <= $bound;
	}
	is(join('; ', @bad), '',
		"$what: calls - calls_error <= sent <= calls, calls_error <= N/m = $bound");
}

my $range = "apicount.top_apis(11, '$start', now() + interval '1 hour')";
check_top(q1("SELECT path, calls, calls_error FROM $range WHERE path <> '(other)'"), 'top_apis(11, range), live');
SKIP:
{
	skip 'the traffic took longer than the 2-minute window', 4 if time - $t0 > 100;
	check_top(q1("SELECT path, calls, calls_error FROM apicount.top_apis(11, interval '2 minutes') WHERE path <> '(other)'"),
		'top_apis(11, 2 minutes)');

	# rules per API see the folded heavy APIs: one at the smallest count sent fires for all
	# 10 (calls is never below the truth); one above the largest count plus the bound, for none
	my $low = (sort { $a <=> $b } values %sent)[0];
	my $high = (sort { $b <=> $a } values %sent)[0] + int($bound) + 1;
	q1("INSERT INTO apicount.rules (name, path_pattern, per, threshold, \"window\") VALUES "
		  . "('spray_low', '/export/%', 'api', $low, '2 minutes'), "
		  . "('spray_high', '/export/%', 'api', $high, '2 minutes')");
	q1('SELECT apicount.evaluate_rules()');
	is(q1("SELECT string_agg(path, ',' ORDER BY path) FROM apicount.alerts WHERE rule = 'spray_low'"),
		join(',', sort keys %sent), "a rule per api with threshold $low fires for the 10 heavy APIs");
	is(q1("SELECT count(*) FROM apicount.alerts WHERE rule = 'spray_high'"),
		'0', "a rule per api with threshold $high (largest sent + N/m) fires for none");
}

# exact totals, bounded rows
q1('SELECT apicount.flush()');
is(q1("SELECT sum(calls) FROM apicount.api_minute WHERE bucket >= '$start'"),
	$N, 'api_minute adds up exactly to the calls sent');
my $max_rows = q1("SELECT max(n) FROM (SELECT count(*) AS n FROM apicount.api_minute "
	  . "WHERE bucket >= '$start' AND path <> '(other)' GROUP BY bucket) x");
ok($max_rows <= $max_apis, "at most max_apis named rows per minute ($max_rows)");
is(q1("SELECT sum(calls) FROM apicount.api_minute WHERE bucket >= '$start' AND path LIKE '/export/%'")
	  + q1("SELECT sum(calls) FROM apicount.api_minute WHERE bucket >= '$start' AND path = '(other)'"),
	$N - q1("SELECT coalesce(sum(calls), 0) FROM apicount.api_minute WHERE bucket >= '$start' AND path LIKE '/spray/%'"),
	'"(other)" holds every call without a row of its own');
is(q1('SELECT shared_memory_bytes FROM apicount.stats'), $shmem, 'shared memory did not change');

# after a restart the worker has written the summaries; the same answer from the tables
$node->restart;
ok(q1("SELECT count(*) FROM apicount.caller_heavy_minute WHERE grouped_by = 'api' AND bucket >= '$start'") > 0,
	'the summaries of folded APIs were written to caller_heavy_minute');
check_top(q1("SELECT path, calls, calls_error FROM $range WHERE path <> '(other)'"), 'top_apis(11, range) after a restart');

# more traffic after the restart (a second summary of a minute the first may have written):
# a new spray fills the empty API tier again, then each heavy API gets one more batch
send_batch('r', 1, 0);
send_batch('r2', 0, 1);
$sent{ '/export/h' . chr(96 + $_) } += 50 * $_ + 25 for 1 .. 10;
$N += $spray_rows;
$N += 50 * $_ + 25 for 1 .. 10;
$bound = $N / $m;
check_top(q1("SELECT path, calls, calls_error FROM $range WHERE path <> '(other)'"),
	'top_apis(11, range) after a restart and more traffic');
q1('SELECT apicount.flush()');
is(q1("SELECT sum(calls) FROM apicount.api_minute WHERE bucket >= '$start'"),
	$N, 'api_minute adds up exactly to the calls sent, before and after the restart');

done_testing();
