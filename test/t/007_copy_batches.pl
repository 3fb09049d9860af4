# 007_copy_batches.pl — COPY hands rows over in batches; every batch counts exactly, savepoints
# included, with more distinct keys than the counter tiers hold.
#
# apicount.max_entries = 1000 (caller tier), apicount.max_apis = 100 (API tier).  One transaction
# copies four CSV files (server-side COPY, so PostgreSQL batches them, up to 1,000 rows a batch);
# rows have no IP and no user id, so each (path, minute) key is one caller and one API:
#   A  12,000 rows, 1,500 distinct (path, minute) keys x 8 hits, in 3 minutes   (kept)
#   B   3,000 rows on other paths, in a savepoint rolled back                    (dropped)
#   C   5,000 rows, 2,100 distinct keys, in a savepoint released                 (kept)
#   D   2,000 rows whose row 1,500 has status 999, in a savepoint rolled back    (dropped)
# A and C together have 3,600 distinct keys, so the transaction's local counts reach their bounds
# (max_entries caller keys, then max_entries + max_apis keys): the surplus callers are folded into
# their API, the surplus APIs into the '(other)' path of their method (GET), one per minute; at
# commit the API tier keeps max_apis APIs and sends the others to '(other)' too.
# Expected values are computed in Perl from the generated rows.
#
# Proves, after flush():
#  - per minute, calls / ok / client_errors / server_errors / latency_count / latency_sum over
#    api_minute (named and '(other)' rows together) equal the rows of A and C;
#  - every named row equals its key's own rows exactly (a key is counted whole, under its name
#    or under '(other)'), and there are at most max_apis named rows; '(other)' rows exist, keep
#    the method GET (no '*' catch-all) and hold the rest of the rows; callers were folded;
#  - caller_minute adds up to api_minute per (minute, method, path), '(other)' rows included;
#  - nothing of B or D is counted;
#  - D's error names the bad row: "row r of a batch of m rows" at the batch's last line L,
#    with L - m + r = 1500.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use POSIX qw(strftime);

my $node = PostgreSQL::Test::Cluster->new('copy_batches');
$node->init;
$node->append_conf('postgresql.conf',
	"shared_preload_libraries = 'apicount'\n"
	  . "apicount.flush_interval = '1h'\n"
	  . "apicount.max_entries = 1000\n"
	  . "apicount.max_apis = 100\n"
	  . "timezone = 'UTC'\n");
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION apicount');

my $base_epoch = $node->safe_psql('postgres',
	"SELECT extract(epoch FROM date_trunc('minute', now()) - interval '10 minutes')::bigint");

my $dir = PostgreSQL::Test::Utils::tempdir;
my %truth;    # "path|minute" -> [calls, ok, client_errors, server_errors, lat_count, lat_sum]

sub status_of { my $i = shift; return $i % 10 == 0 ? 500 : $i % 10 == 1 ? 404 : 200 }
sub latency_of { my $i = shift; return ($i % 250) + 0.25 }

# write rows 1..n of a file; path_of($i) gives the path; kept files feed %truth
sub write_file
{
	my ($name, $n, $path_of, $keep, $bad_row) = @_;
	my $file = "$dir/$name.csv";
	open my $fh, '>', $file or die "cannot write $file: $!";
	for my $i (1 .. $n)
	{
		my $minute = $i % 3;
		my $second = $i % 60;
		my $status = defined $bad_row && $i == $bad_row ? 999 : status_of($i);
		my $lat = latency_of($i);
		my $path = $path_of->($i);
		my $ts = strftime('%Y-%m-%dT%H:%M:%SZ',
			gmtime($base_epoch + 60 * $minute + $second));
		print $fh "$ts,GET,$path,,,$status,$lat\n";
		next unless $keep;
		my $t = $truth{"$path|$minute"} //= [ 0, 0, 0, 0, 0, 0 ];
		$t->[0]++;
		if    ($status >= 500) { $t->[3]++ }
		elsif ($status >= 400) { $t->[2]++ }
		else                   { $t->[1]++ }
		$t->[4]++;
		$t->[5] += $lat;
	}
	close $fh;
	return $file;
}

my $fa = write_file('a', 12000, sub { '/c/p' . ($_[0] % 1500) }, 1);
my $fb = write_file('b', 3000, sub { '/c/rb' . $_[0] }, 0);
my $fc = write_file('c', 5000, sub { '/c/q' . ($_[0] % 700) }, 1);
my $fd = write_file('d', 2000, sub { '/c/bad' . $_[0] }, 0, 1500);
is(scalar(keys %truth), 3600, 'A and C have 3,600 distinct keys (over the 1,000 + 100 capacity)');

my $cols = '(ts, method, path, client_ip, user_id, status, latency_ms)';
my ($ret, $out, $err) = $node->psql('postgres', qq{
SET apicount.normalize_paths = off;
BEGIN;
COPY apicount.requests $cols FROM '$fa' WITH (FORMAT csv);
SAVEPOINT b;
COPY apicount.requests $cols FROM '$fb' WITH (FORMAT csv);
ROLLBACK TO b;
SAVEPOINT c;
COPY apicount.requests $cols FROM '$fc' WITH (FORMAT csv);
RELEASE c;
SAVEPOINT d;
COPY apicount.requests $cols FROM '$fd' WITH (FORMAT csv);
ROLLBACK TO d;
COMMIT;
}, on_error_stop => 0);
is($ret, 0, 'the script ran to its end') or diag($err);
my @errors = $err =~ /ERROR:/g;
is(scalar(@errors), 1, 'exactly one statement failed (D\'s COPY)') or diag($err);
like($err, qr/HTTP status 999 is out of range/, "D's bad row is refused");
if ($err =~ /row (\d+) of a batch of (\d+) rows.*?line (\d+)/s)
{
	my ($r, $m, $l) = ($1, $2, $3);
	is($l - $m + $r, 1500, "the error context locates row 1,500 (row $r of $m, last line $l)");
}
else
{
	fail('the error context names the row of the batch') or diag($err);
}

my ($overflow_hits, $folded) = split /\|/,
  $node->safe_psql('postgres', 'SELECT overflow_hits, folded_calls FROM apicount.stats');
cmp_ok($overflow_hits, '>', 0, 'stats.overflow_hits > 0 (the API bound was reached)');
cmp_ok($folded, '>', 0, 'stats.folded_calls > 0 (the caller bound was reached)');

$node->safe_psql('postgres', 'SELECT apicount.flush()');

# per minute, named and overflow rows together
my %per_minute;
for my $k (keys %truth)
{
	my (undef, $minute) = split /\|/, $k;
	my $p = $per_minute{$minute} //= [ 0, 0, 0, 0, 0, 0 ];
	$p->[$_] += $truth{$k}[$_] for 0 .. 5;
}
my $want = join "\n",
  map { join '|', $_, @{ $per_minute{$_} }[ 0 .. 4 ], sprintf('%.2f', $per_minute{$_}[5]) }
  sort { $a <=> $b } keys %per_minute;
is( $node->safe_psql(
		'postgres', qq{
	SELECT (extract(epoch FROM bucket) - $base_epoch)::int / 60, sum(calls), sum(ok),
	       sum(client_errors), sum(server_errors), sum(latency_count),
	       to_char(sum(latency_sum_ms), 'FM999999990.00')
	FROM apicount.api_minute GROUP BY 1 ORDER BY 1}),
	$want,
	'per minute, api_minute equals the rows of A and C (calls, statuses, latencies)');

# every named row is its key's own rows, exactly
my @named = split /\n/, $node->safe_psql(
	'postgres', qq{
	SELECT path, (extract(epoch FROM bucket) - $base_epoch)::int / 60, calls, ok,
	       client_errors, server_errors, latency_count
	FROM apicount.api_minute WHERE path <> '(other)' ORDER BY 1, 2});
my @wrong;
for my $row (@named)
{
	my ($path, $minute, @got) = split /\|/, $row;
	my $t = $truth{"$path|$minute"};
	my $exp = $t ? join('|', @{$t}[ 0 .. 4 ]) : 'no such key';
	push @wrong, "$row (expected $exp)" if join('|', @got) ne $exp;
}
is(scalar(@wrong), 0, 'every named api_minute row equals its key\'s rows')
  or diag(join "\n", @wrong[ 0 .. ($#wrong < 9 ? $#wrong : 9) ]);
cmp_ok(scalar(@named), '>', 0, 'some keys were counted under their own names');
cmp_ok(scalar(@named), '<=', 100, 'at most max_apis (100) named rows');
my $named_calls = 0;
$named_calls += (split /\|/)[2] for @named;
my ($other_calls, $other_methods, $other_per_minute) = split /\|/, $node->safe_psql('postgres', q{
	SELECT coalesce(sum(calls), 0), string_agg(DISTINCT method, ','), count(*) = count(DISTINCT bucket)
	FROM apicount.api_minute WHERE path = '(other)'});
cmp_ok($other_calls, '>', 0, "'(other)' rows hold the surplus");
is($other_calls, 17000 - $named_calls, "'(other)' rows hold every row not under a named row");
is("$other_methods|$other_per_minute", 'GET|t', "'(other)' rows keep the method GET, one per minute");
is( $node->safe_psql(
		'postgres', q{
	SELECT count(*) FROM apicount.api_minute a
	FULL JOIN (SELECT bucket, method, path, sum(calls) AS calls, sum(ok) AS ok,
	                  sum(client_errors) AS ce, sum(server_errors) AS se
	           FROM apicount.caller_minute GROUP BY 1, 2, 3) c USING (bucket, method, path)
	WHERE a.calls IS DISTINCT FROM c.calls OR a.ok IS DISTINCT FROM c.ok
	   OR a.client_errors IS DISTINCT FROM c.ce OR a.server_errors IS DISTINCT FROM c.se}),
	'0', "caller_minute adds up to api_minute per (minute, method, path), '(other)' included");
is( $node->safe_psql(
		'postgres',
		"SELECT count(*) FROM apicount.api_minute WHERE path LIKE '/c/rb%' OR path LIKE '/c/bad%'"),
	'0',
	'nothing of the rolled-back savepoints is counted');
is($node->safe_psql('postgres', 'SELECT sum(calls) FROM apicount.api_minute'),
	'17000', 'total calls are the 17,000 rows of A and C');

$node->stop;
done_testing();
