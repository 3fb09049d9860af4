# 015_slot_spread.pl — per-slot counts of a key hit in several slots within one
# transaction, across savepoints (released, rolled back, nested).
#
# A backend keeps a key's per-slot counts only once its hits span two slots; until then
# the key's totals stand for its one slot (src/ingest/pending.c).  Each scenario below records
# hits of one key (its own path and IP) with explicit timestamps in past slots, in one
# transaction, so that a key moves between the two forms: one slot throughout, one slot
# then spread, a savepoint whose key is in the same or another slot than its parent's,
# a spread child into a one-slot parent and the reverse, both spread, a key new in the
# savepoint, a rolled-back savepoint, nested savepoints.  Statuses mix ok (2xx, 3xx),
# errors (4xx, 5xx) and null (counted as a call, neither ok nor error).  The test waits
# (up to 30 s) until the hits' slots, 1 to 6 back, fall in the current minute, since a key
# split by a minute boundary would be two keys and the scenario would be lost.
#
# The expected calls, ok and errors of every sliding window (K = 1 .. 24 slots) are
# computed in Perl from the list of committed hits and the query transaction's now()
# (the rule of README "Windows": the K slots up to and including the slot of now()),
# never from apicount output; the per-minute rollups after a flush are checked against
# the same list.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use ApicountTest qw(ts_text slot_of $SLOT_US window_node);
use POSIX qw(floor);
use Time::HiRes qw(usleep);

my $node = window_node('slot_spread');

# The minute is part of a key, so every scenario's hits must fall in one minute: the hits
# go 1 to 6 slots back from the slot of t0, so t0 must be in slot 6 or later of its minute.
my $MAX_BACK = 6;
my $t0;
for (;;)
{
	$t0 = $node->safe_psql('postgres',
		'SELECT (extract(epoch FROM now()) * 1000000)::bigint');
	my $in_minute = slot_of($t0) % 12;
	last if $in_minute >= $MAX_BACK;
	usleep(($MAX_BACK - $in_minute) * $SLOT_US - ($t0 % $SLOT_US) + 100_000);
}
my $s0 = slot_of($t0);

# a statement list: ['hit', key, slots back from s0, status or undef], or a savepoint
# command ['sql', text]; each hit lands 1.5 s into its slot
my @script = (
	# one slot throughout
	[ 'hit', 'one', 2, 200 ], [ 'hit', 'one', 2, 404 ], [ 'hit', 'one', 2, undef ],
	# one slot, then spread at the top level
	[ 'hit', 'spread', 1, 200 ], [ 'hit', 'spread', 3, 500 ], [ 'hit', 'spread', 3, 503 ],
	[ 'hit', 'spread', 6, 201 ], [ 'hit', 'spread', 6, 301 ],
	# parent and released child in the same slot
	[ 'hit', 'same', 2, 200 ],
	[ 'sql', 'SAVEPOINT a' ], [ 'hit', 'same', 2, 404 ], [ 'sql', 'RELEASE a' ],
	# parent in one slot, released child in another: the parent spreads at the release
	[ 'hit', 'diff', 2, 200 ], [ 'hit', 'diff', 2, 200 ],
	[ 'sql', 'SAVEPOINT a' ], [ 'hit', 'diff', 5, 503 ], [ 'sql', 'RELEASE a' ],
	# one-slot parent, spread child
	[ 'hit', 'child_spread', 1, 200 ],
	[ 'sql', 'SAVEPOINT a' ], [ 'hit', 'child_spread', 4, 200 ],
	[ 'hit', 'child_spread', 6, 404 ], [ 'sql', 'RELEASE a' ],
	# spread parent, one-slot child
	[ 'hit', 'parent_spread', 1, 200 ], [ 'hit', 'parent_spread', 6, 404 ],
	[ 'sql', 'SAVEPOINT a' ], [ 'hit', 'parent_spread', 3, undef ],
	[ 'hit', 'parent_spread', 3, 200 ], [ 'sql', 'RELEASE a' ],
	# spread parent, spread child, one slot in common
	[ 'hit', 'both_spread', 1, 200 ], [ 'hit', 'both_spread', 3, 500 ],
	[ 'sql', 'SAVEPOINT a' ], [ 'hit', 'both_spread', 3, 200 ],
	[ 'hit', 'both_spread', 5, 404 ], [ 'sql', 'RELEASE a' ],
	# a key first seen in the savepoint, in one slot and in two
	[ 'sql', 'SAVEPOINT a' ], [ 'hit', 'new_one', 4, 302 ], [ 'hit', 'new_two', 2, 200 ],
	[ 'hit', 'new_two', 6, 500 ], [ 'sql', 'RELEASE a' ],
	# a rolled-back savepoint: only the parent's hit counts
	[ 'hit', 'rolled', 2, 200 ],
	[ 'sql', 'SAVEPOINT a' ], [ 'hit', 'rolled', 2, 404 ], [ 'hit', 'rolled', 6, 200 ],
	[ 'sql', 'ROLLBACK TO a' ], [ 'sql', 'RELEASE a' ],
	# nested savepoints: b spreads the key, then both are released
	[ 'hit', 'nested', 1, 200 ],
	[ 'sql', 'SAVEPOINT a' ], [ 'hit', 'nested', 1, 401 ],
	[ 'sql', 'SAVEPOINT b' ], [ 'hit', 'nested', 6, 200 ], [ 'sql', 'RELEASE b' ],
	[ 'hit', 'nested', 6, undef ], [ 'sql', 'RELEASE a' ],
	# nested, the inner one rolled back after spreading the key
	[ 'hit', 'nested_rb', 2, 200 ],
	[ 'sql', 'SAVEPOINT a' ], [ 'hit', 'nested_rb', 2, 200 ],
	[ 'sql', 'SAVEPOINT b' ], [ 'hit', 'nested_rb', 5, 500 ], [ 'sql', 'ROLLBACK TO b' ],
	[ 'sql', 'RELEASE a' ]);

# every key's hits in one minute (else the scenario would be two keys)
{
	my %minute;
	my $one_minute = 1;
	for my $st (grep { $_->[0] eq 'hit' } @script)
	{
		my $m = floor(($s0 - $st->[2]) / 12);
		$one_minute = 0 if defined $minute{ $st->[1] } && $minute{ $st->[1] } != $m;
		$minute{ $st->[1] } = $m;
	}
	ok($one_minute, "every key's hits fall in one minute (t0 in slot " . ($s0 % 12) . ' of its minute)');
}

# which hits commit: those not inside a rolled-back savepoint
my @committed;
{
	my @open;    # [name, [hits]] of the savepoints open
	my @top;
	for my $st (@script)
	{
		if ($st->[0] eq 'hit')
		{
			push @{ @open ? $open[-1][1] : \@top }, $st;
			next;
		}
		my $cmd = $st->[1];
		if ($cmd =~ /^SAVEPOINT (\w+)/) { push @open, [ $1, [] ]; next; }
		# ROLLBACK TO: drops the savepoints inside it and its hits; it stays open
		if ($cmd =~ /^ROLLBACK TO (\w+)/)
		{
			pop @open while @open && $open[-1][0] ne $1;
			die "no savepoint $1" unless @open;
			$open[-1][1] = [];
			next;
		}
		# RELEASE: it and the savepoints inside it pass their hits outwards
		if ($cmd =~ /^RELEASE (\w+)/)
		{
			my $sp;
			do
			{
				$sp = pop @open or die "no savepoint $1";
				push @{ @open ? $open[-1][1] : \@top }, @{ $sp->[1] };
			} while ($sp->[0] ne $1);
			next;
		}
		die "unknown command $cmd";
	}
	@committed = @top;
}

my %ip;
my $n = 0;
for my $st (@script)
{
	next unless $st->[0] eq 'hit';
	$ip{ $st->[1] } //= '10.15.0.' . (++$n);
}

my $sql = "BEGIN;\n";
for my $st (@script)
{
	if ($st->[0] eq 'sql') { $sql .= "$st->[1];\n"; next; }
	my (undef, $key, $back, $status) = @$st;
	my $ts = ($s0 - $back) * $SLOT_US + 1_500_000;
	$sql .= sprintf(
		"SELECT apicount.hit('/spread/%s', 'GET', '%s', NULL, %s, NULL, '%s');\n",
		$key, $ip{$key}, defined $status ? $status : 'NULL', ts_text($ts));
}
$sql .= "COMMIT;\n";
$node->safe_psql('postgres', $sql);

# the windows, read in one transaction with its now()
my @WINDOWS = (1, 2, 3, 4, 5, 6, 7, 12, 24);
my $q = "BEGIN;\nSELECT 'now', (extract(epoch FROM now()) * 1000000)::bigint;\n";
for my $k (@WINDOWS)
{
	my $secs = 5 * $k;
	$q .=
	    "SELECT 'w', $k, path, calls, ok, errors FROM apicount._live_groups("
	  . "'$secs seconds', true, false, false, NULL, 1, false, false, true) "
	  . "WHERE path LIKE '/spread/%';\n";
}
$q .= "COMMIT;\n";
my @rows = map { [ split /\|/, $_, -1 ] } split /\n/, $node->safe_psql('postgres', $q);
my ($nowrow) = grep { $_->[0] eq 'now' } @rows;
my $cur = slot_of($nowrow->[1]);
note("hits recorded with s0 = $s0; the windows were read in slot $cur");

my $checked_spread = 0;
for my $k (@WINDOWS)
{
	my %exp;
	for my $st (@committed)
	{
		my (undef, $key, $back, $status) = @$st;
		my $sl = $s0 - $back;
		next unless $sl >= $cur - $k + 1 && $sl <= $cur;
		my $e = ($exp{"/spread/$key"} //= [ 0, 0, 0 ]);
		$e->[0]++;
		$e->[1]++ if defined $status && $status >= 100 && $status < 400;
		$e->[2]++ if defined $status && $status >= 400;
	}
	my %got = map { ($_->[2] => [ $_->[3], $_->[4], $_->[5] ]) }
	  grep { $_->[0] eq 'w' && $_->[1] == $k } @rows;
	is_deeply(\%got, \%exp,
		"window of $k slots: calls, ok and errors per key match the committed hits");
	$checked_spread++ if grep { $_ eq '/spread/spread' } keys %exp;
}
ok($checked_spread >= 2,
	"the key spread over slots was inside at least two of the windows ($checked_spread)");

# totals after a flush, per key: the same committed hits
$node->safe_psql('postgres', 'SELECT apicount.flush()');
my %exp_total;
for my $st (@committed)
{
	my (undef, $key, undef, $status) = @$st;
	my $e = ($exp_total{"/spread/$key"} //= [ 0, 0, 0, 0 ]);
	$e->[0]++;
	$e->[1]++ if defined $status && $status >= 100 && $status < 400;
	$e->[2]++ if defined $status && $status >= 400 && $status < 500;
	$e->[3]++ if defined $status && $status >= 500;
}
my %got_total = map { my @f = split /\|/; ($f[0] => [ @f[ 1 .. 4 ] ]) } split /\n/,
  $node->safe_psql('postgres',
	"SELECT path, sum(calls), sum(ok), sum(client_errors), sum(server_errors) "
	  . "FROM apicount.api_minute WHERE path LIKE '/spread/%' GROUP BY path");
is_deeply(\%got_total, \%exp_total,
	'api_minute after a flush: calls, ok, client and server errors per key');

$node->stop;
done_testing();
