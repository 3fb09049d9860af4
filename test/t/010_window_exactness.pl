# 010_window_exactness.pl — sliding windows (since <= 2 minutes) are exactly the last
# ceil(since / slot_seconds) slots up to and including the slot holding now().
#
# Documented rule (README "Windows"): slot k covers [k*5 s, (k+1)*5 s) in
# epoch seconds (apicount.slot_seconds = 5, the default); since => S covers the slots
# cur-K+1 .. cur with K = ceil(S / 5) and cur = the slot of now(); hits in a later slot are
# left out, and a hit stamped after now() within the current slot counts (slots count hits,
# not instants).
#
# Each attempt inserts hits with explicit ts values chosen in Perl relative to the setup
# transaction's now() (T0, slot s0), each edge on its own path and client IP with its own
# multiplicity, so a miscount names the edge:
#   - for each K in (1, 2, 12, 13, 24): the first microsecond of the oldest slot of the window
#     ((s0-K+1)*5 s, counted) and the microsecond before it (not counted);
#   - the first microsecond of the current slot, and T0 itself (counted by every window);
#   - a hit 30 s ago (counted by K >= 12 only);
#   - the first microsecond of the next slot, and hits 1 minute and 4 minutes in the future
#     (never counted);
#   - (separately) the last microsecond of the current slot, which is after now() of the
#     query transaction: the README says it counts, as the whole current slot does.
# The older half is inserted and flushed (apicount.flush(), flush_interval = 1s) before the
# rest, so the window is computed over flushed and unflushed entries alike.
#
# The query transaction reads now() and runs top_apis, top_callers and hot_callers for
# since = '5 seconds', '7 seconds', '1 minute', '61 seconds', '2 minutes'.  The expected
# counts are computed in Perl from the inserted ts list and that now() (never from apicount
# output).  If the query's now() is no longer in slot s0 (the edges would not be edges any
# more), the attempt is discarded and repeated with fresh paths.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use ApicountTest qw(ts_text slot_of $SLOT_US window_node);
use POSIX qw(floor ceil);
use Time::HiRes qw(time usleep);

my $node = window_node('window');

# windows under test: since text => seconds (K is computed from the seconds, in Perl)
my @WINDOWS = (
	[ '5 seconds',  5 ],
	[ '7 seconds',  7 ],
	[ '1 minute',   60 ],
	[ '61 seconds', 61 ],
	[ '2 minutes',  120 ]);

# wait until we are early in a slot (leaves ~4.5 s for setup + query)
sub wait_slot_start
{
	for (;;)
	{
		my $phase = time() - 5 * floor(time() / 5);
		return if $phase < 0.4;
		usleep(int((5.02 - $phase) * 1e6));
	}
}

my $done = 0;
for my $attempt (1 .. 6)
{
	wait_slot_start();
	my $pfx = "/a$attempt";
	my $t0 = $node->safe_psql('postgres',
		'SELECT (extract(epoch FROM now()) * 1000000)::bigint');
	my $s0 = slot_of($t0);
	my $cur0 = $s0 * $SLOT_US;

	# edges: [name, ts_us, multiplicity, phase]; phase 1 is inserted + flushed first
	my @hits;
	my $m = 1;
	for my $k (1, 2, 12, 13, 24)
	{
		my $oldest = ($s0 - $k + 1) * $SLOT_US;
		my $ph = $k >= 12 ? 1 : 2;
		push @hits, [ "k${k}_first",  $oldest,     $m++, $ph ];
		push @hits, [ "k${k}_before", $oldest - 1, $m++, $ph ];
	}
	push @hits, [ 'ago30',       $t0 - 30_000_000,  $m++, 1 ];
	push @hits, [ 'cur_first',   $cur0,             $m++, 2 ];
	push @hits, [ 'cur_now',     $t0,               $m++, 2 ];
	push @hits, [ 'next_slot',   $cur0 + $SLOT_US,  $m++, 2 ];
	push @hits, [ 'future1m',    $t0 + 60_000_000,  $m++, 2 ];
	push @hits, [ 'future4m',    $t0 + 240_000_000, $m++, 2 ];
	# after now() but inside the current slot: counted (README "Windows")
	my $late = [ 'cur_last', $cur0 + $SLOT_US - 1, 7, 2 ];

	my %ip;
	my $i = 0;
	$ip{ $_->[0] } = "10.$attempt.0." . (++$i) for (@hits, $late);

	my $ins = sub {
		my ($phase) = @_;
		my @v;
		for my $h (grep { $_->[3] == $phase } (@hits, $late))
		{
			my ($name, $ts, $mult) = @$h;
			push @v,
			  sprintf("('%s', '%s/%s', '%s', %d)",
				ts_text($ts), $pfx, $name, $ip{$name}, $mult);
		}
		return
		    "INSERT INTO apicount.requests (ts, method, path, client_ip, status) "
		  . "SELECT v.ts::timestamptz, 'GET', v.p, v.ip::inet, 200 "
		  . "FROM (VALUES "
		  . join(', ', @v)
		  . ") v(ts, p, ip, n), generate_series(1, v.n)";
	};
	$node->safe_psql('postgres', $ins->(1));
	$node->safe_psql('postgres', 'SELECT apicount.flush()');
	my $flushed = $node->safe_psql('postgres',
		"SELECT coalesce(sum(calls), 0) FROM apicount.api_minute WHERE path LIKE '$pfx/%'");
	$node->safe_psql('postgres', $ins->(2));

	# one transaction: now() and every query
	my $sql = "BEGIN;\nSELECT 'now', (extract(epoch FROM now()) * 1000000)::bigint;\n";
	for my $w (@WINDOWS)
	{
		my $s = $w->[0];
		$sql .=
		    "SELECT 'api', '$s', method, path, calls FROM apicount.top_apis(100000, '$s') "
		  . "WHERE path LIKE '$pfx/%';\n"
		  . "SELECT 'caller', '$s', client_ip, coalesce(user_id, '-'), calls "
		  . "FROM apicount.top_callers(100000, '$s') WHERE client_ip << '10.$attempt.0.0/24';\n"
		  . "SELECT 'hot', '$s', method, path, client_ip, calls "
		  . "FROM apicount.hot_callers(1, '$s') WHERE path LIKE '$pfx/%';\n";
	}
	$sql .= "COMMIT;\n";
	my $out = $node->safe_psql('postgres', $sql);
	my @rows = map { [ split /\|/, $_, -1 ] } split /\n/, $out;
	my ($nowrow) = grep { $_->[0] eq 'now' } @rows;
	my $tq = $nowrow->[1];
	my $cur = slot_of($tq);
	if ($cur != $s0)
	{
		diag("attempt $attempt: query now() is in slot $cur, setup was in $s0; retrying");
		next;
	}
	note("attempt $attempt: T0=" . ts_text($t0) . " query now()=" . ts_text($tq));
	ok($flushed > 0,
		"some hits were flushed before the query (api_minute holds $flushed of them)");

	my @late_results;
	for my $w (@WINDOWS)
	{
		my ($s, $secs) = @$w;
		my $k = ceil($secs / 5);

		# expected per path, from the inserted ts list and the query's now()
		my %exp;
		for my $h (@hits)
		{
			my ($name, $ts, $mult) = @$h;
			my $sl = slot_of($ts);
			$exp{"$pfx/$name"} = $mult
			  if $sl >= $cur - $k + 1 && $sl <= $cur && $ts <= $tq;
		}

		my %api = map { ($_->[3] => $_->[4]) }
		  grep { $_->[0] eq 'api' && $_->[1] eq $s && $_->[3] ne "$pfx/cur_last" } @rows;
		is_deeply(\%api, \%exp, "top_apis since '$s' (K=$k slots): calls per edge");

		my %callers = map { ($_->[2] => $_->[4]) }
		  grep {
			$_->[0] eq 'caller'
			  && $_->[1] eq $s
			  && $_->[3] eq '-'
			  && $_->[2] ne $ip{cur_last}
		  } @rows;
		my %exp_ip = map { ($ip{ substr($_, length("$pfx/")) } => $exp{$_}) } keys %exp;
		is_deeply(\%callers, \%exp_ip, "top_callers since '$s': calls per IP");

		my %hot = map { ($_->[3] . ' ' . $_->[4] => $_->[5]) }
		  grep {
			$_->[0] eq 'hot'
			  && $_->[1] eq $s
			  && $_->[2] eq 'GET'
			  && $_->[3] ne "$pfx/cur_last"
		  } @rows;
		my %exp_hot =
		  map { ("$_ " . $ip{ substr($_, length("$pfx/")) } => $exp{$_}) } keys %exp;
		is_deeply(\%hot, \%exp_hot, "hot_callers(1, '$s'): calls per (path, IP)");

		# the hit in the current slot but after now() (documented: counted), per function
		my %late_got;
		for my $r (@rows)
		{
			next unless $r->[1] eq $s;
			$late_got{api} = $r->[4]
			  if $r->[0] eq 'api' && $r->[3] eq "$pfx/cur_last";
			$late_got{caller} = $r->[4]
			  if $r->[0] eq 'caller' && $r->[2] eq $ip{cur_last};
			$late_got{hot} = $r->[5]
			  if $r->[0] eq 'hot' && $r->[3] eq "$pfx/cur_last";
		}
		push @late_results,
		  "'$s': " . join(' ', map { "$_=" . ($late_got{$_} // 0) } qw(api caller hot));
	}
	ok($late->[1] > $tq, "cur_last ts is after the query's now() (precondition)");
	is(join('; ', @late_results),
		join('; ', map { "'$_->[0]': api=$late->[2] caller=$late->[2] hot=$late->[2]" } @WINDOWS),
		'a hit in the current slot with ts after now() ('
		  . ts_text($late->[1])
		  . ') counts whole in top_apis, top_callers, hot_callers (every window)');
	$done = 1;
	last;
}
ok($done, 'an attempt ran within one slot');

done_testing();
