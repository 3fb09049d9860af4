# 012_login_anomalies.pl — each threshold of apicount.login_anomalies() flips its result, and
# calls, ok, success_ratio, baseline_calls and factor equal hand-computed values.
#
# Definitions (README "Security recipes", sql/apicount--0.1.sql): the window is the sliding
# window of `since` (last ceil(since/5 s) slots up to now()); the baseline is the whole
# minutes [W - baseline, W) with W = date_trunc('minute', now() - since);
# baseline_calls = (calls in the baseline) / (baseline / since); a path is returned when
# calls >= min_calls AND calls >= spike_factor * baseline_calls AND ok/calls <=
# max_success_ratio; factor = calls / baseline_calls, or Infinity when the baseline is 0.
#
# Each sub-case has its own path (all match '/laN/%login%'); all window hits are POST at
# T0 - 1 s (T0 = now() of the setup transaction), status 401 unless said otherwise:
#   mc-below / mc-at       19 / 20 calls, no baseline            (min_calls = 20)
#   sf-below / sf-at       29 / 30 calls; baseline: 30 whole minutes before W with 16 calls
#                          in each of the 10 latest minutes and 7 in each of the 20 before
#                          (300 calls, 10 per window; spike_factor = 3 -> 30), half of each
#                          minute's calls at its first microsecond and half at its last; plus
#                          7 calls 1 us before the baseline and 5 in [W, window start), which
#                          are in neither the baseline nor the window
#   msr-at / msr-above     40 calls, 20 / 21 of them status 200  (max_success_ratio = 0.5)
#   /laN/logout-spike      100 calls that the pattern does not select
# Queries (one transaction, together with now()): the default thresholds (20, 3, 0.5),
# then each threshold moved just past a boundary (min_calls 21, spike_factor 3.0000001 and
# 2.9, max_success_ratio 0.4999 and 0.525), baselines of 10 and 31 minutes, and since =
# 30 seconds (baseline 10 minutes = 20 windows) and 2 minutes (30 minutes = 15 windows).  Every
# result is compared with a Perl model evaluated over the inserted (ts, status) list at the
# query's now(), and the boundary rows also with hand-computed literals.  If the query's W
# differs from the setup's (a minute boundary passed), the attempt is repeated on fresh paths.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use POSIX qw(floor ceil strftime);
use Time::HiRes qw(time usleep);

my $SLOT_US = 5_000_000;
my $MIN_US  = 60_000_000;

my $node = PostgreSQL::Test::Cluster->new('login');
$node->init;
$node->append_conf('postgresql.conf',
	"shared_preload_libraries = 'apicount'\n"
	  . "apicount.flush_interval = '1s'\n"
	  . "log_statement = none\n"
	  . "timezone = 'UTC'\n"
	  . "extra_float_digits = 1\n");
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION apicount');

sub ts_text
{
	my ($us) = @_;
	my $s = floor($us / 1_000_000);
	return strftime('%Y-%m-%d %H:%M:%S', gmtime($s))
	  . sprintf('.%06d+00', $us - $s * 1_000_000);
}
sub slot_of  { return floor($_[0] / $SLOT_US); }
sub trunc_min { return $MIN_US * floor($_[0] / $MIN_US); }

# the queries: [tag, since s, baseline s, min_calls, spike_factor, max_success_ratio]
my @Q = (
	[ 'default', 60, 1800, 20, 3,         0.5 ],
	[ 'mc21',    60, 1800, 21, 3,         0.5 ],
	[ 'sf+',     60, 1800, 20, 3.0000001, 0.5 ],
	[ 'sf2.9',   60, 1800, 20, 2.9,       0.5 ],
	[ 'msr-',    60, 1800, 20, 3,         0.4999 ],
	[ 'msr+',    60, 1800, 20, 3,         0.525 ],
	[ 'b10',     60, 600,  20, 3,         0.5 ],
	[ 'b10sf1',  60, 600,  20, 1,         0.5 ],
	[ 'b31sf1',  60, 1860, 20, 1,         0.5 ],
	[ 's30',     30, 600,  5,  1,         0.5 ],
	[ 's120',    120, 1800, 20, 1,        0.5 ]);

# Perl model over @$hits ([path, ts, status, n]) at now() = $tq
sub model
{
	my ($hits, $q, $tq) = @_;
	my (undef, $since, $baseline, $min_calls, $sf, $msr) = @$q;
	my $k = ceil($since / 5);
	my $cur = slot_of($tq);
	my $w = trunc_min($tq - $since * 1_000_000);
	my $bstart = $w - $baseline * 1_000_000;
	my $windows = $baseline / $since;
	my (%calls, %ok, %bsum);
	for my $h (@$hits)
	{
		my ($p, $ts, $st, $n) = @$h;
		next unless $p =~ /login/;
		my $sl = slot_of($ts);
		if ($sl >= $cur - $k + 1 && $sl <= $cur && $ts <= $tq)
		{
			$calls{$p} += $n;
			$ok{$p} += $n if $st >= 100 && $st <= 399;
		}
		$bsum{$p} += $n if $ts >= $bstart && $ts < $w;
	}
	my %res;
	for my $p (keys %calls)
	{
		my $c = $calls{$p};
		my $o = $ok{$p} // 0;
		my $per = ($bsum{$p} // 0) / $windows;
		next unless $c >= $min_calls && $c >= $sf * $per && $o / $c <= $msr;
		$res{$p} = [ $c, $o, $o / $c, $per, $per > 0 ? $c / $per : 'Infinity' ];
	}
	return \%res;
}

sub num_eq
{
	my ($a, $b) = @_;
	return $a eq $b if $a eq 'Infinity' || $b eq 'Infinity';
	return abs($a - $b) <= 1e-12 * (abs($b) + 1);
}

my $done = 0;
for my $attempt (1 .. 3)
{
	my $sec = time() - 60 * floor(time() / 60);
	if ($sec < 2 || $sec > 40)
	{
		my $wait = $sec < 2 ? 2 - $sec : 62 - $sec;
		note(sprintf('waiting %.1f s for the next minute', $wait));
		usleep(int($wait * 1e6));
	}
	my $pfx = "/la$attempt";
	my $t0 = $node->safe_psql('postgres',
		'SELECT (extract(epoch FROM now()) * 1000000)::bigint');
	my $s0 = slot_of($t0);
	my $w0 = trunc_min($t0 - $MIN_US);
	my $tw = $t0 - 1_000_000;    # window hits

	my @hits;
	push @hits, [ "$pfx/mc-below/login",  $tw, 401, 19 ];
	push @hits, [ "$pfx/mc-at/login",     $tw, 401, 20 ];
	push @hits, [ "$pfx/sf-below/login",  $tw, 401, 29 ];
	push @hits, [ "$pfx/sf-at/login",     $tw, 401, 30 ];
	push @hits, [ "$pfx/msr-at/login",    $tw, 200, 20 ], [ "$pfx/msr-at/login", $tw, 401, 20 ];
	push @hits, [ "$pfx/msr-above/login", $tw, 200, 21 ],
	  [ "$pfx/msr-above/login", $tw, 401, 19 ];
	push @hits, [ "$pfx/logout-spike", $tw, 401, 100 ];
	for my $p ("$pfx/sf-below/login", "$pfx/sf-at/login")
	{
		for my $j (1 .. 30)    # minute j: [W - j min, W - (j-1) min)
		{
			my $c = $j <= 10 ? 16 : 7;
			my $mstart = $w0 - $j * $MIN_US;
			push @hits, [ $p, $mstart, 200, floor($c / 2) ];
			push @hits, [ $p, $mstart + $MIN_US - 1, 200, $c - floor($c / 2) ];
		}
		push @hits, [ $p, $w0 - 30 * $MIN_US - 1, 200, 7 ];   # just before the baseline
		push @hits, [ $p, $w0, 401, 2 ];                       # first us of the window's minute
		push @hits, [ $p, ($s0 - 11) * $SLOT_US - 1, 401, 3 ];  # 1 us before the window
	}

	my @v = map {
		sprintf("('%s', '%s', %d, %d)", $_->[0], ts_text($_->[1]), $_->[2], $_->[3])
	} @hits;
	$node->safe_psql('postgres',
		    "INSERT INTO apicount.requests (ts, method, path, client_ip, status) "
		  . "SELECT v.ts::timestamptz, 'POST', v.p, '192.0.2.1', v.st "
		  . "FROM (VALUES "
		  . join(', ', @v)
		  . ") v(p, ts, st, n), generate_series(1, v.n)");

	my $sql = "BEGIN;\nSELECT 'now', (extract(epoch FROM now()) * 1000000)::bigint;\n";
	for my $q (@Q)
	{
		my ($tag, $since, $bl, $mc, $sf, $msr) = @$q;
		$sql .=
		    "SELECT '$tag', method, path, calls, ok, success_ratio, baseline_calls, factor "
		  . "FROM apicount.login_anomalies('$pfx/%login%', '$since seconds', '$bl seconds', "
		  . "$mc, $sf, $msr);\n";
	}
	$sql .= "COMMIT;\n";
	my $out = $node->safe_psql('postgres', $sql);
	my @rows = map { [ split /\|/, $_, -1 ] } split /\n/, $out;
	my ($tq) = map { $_->[1] } grep { $_->[0] eq 'now' } @rows;
	if (trunc_min($tq - $MIN_US) != $w0 || slot_of($tw) < slot_of($tq) - 11)
	{
		diag('query now() ' . ts_text($tq) . ' moved W; retrying');
		next;
	}
	note('T0=' . ts_text($t0) . ' W=' . ts_text($w0) . ' query now()=' . ts_text($tq));

	my %got;    # tag -> path -> [method, calls, ok, sr, baseline, factor]
	for my $r (grep { $_->[0] ne 'now' } @rows)
	{
		$got{ $r->[0] }{ $r->[2] } = [ @$r[ 1, 3 .. 7 ] ];
	}

	# 1. every query equals the model
	for my $q (@Q)
	{
		my $tag = $q->[0];
		my $exp = model(\@hits, $q, $tq);
		my $g = $got{$tag} // {};
		my @diff;
		for my $p (sort(keys %$exp, keys %$g))
		{
			my $e = $exp->{$p};
			my $r = $g->{$p};
			if (!$e || !$r)
			{
				push @diff, ($e ? "missing $p" : "unexpected $p");
				next;
			}
			push @diff, "$p method $r->[0]" if $r->[0] ne 'POST';
			for my $i (0 .. 4)
			{
				push @diff, "$p col $i: got $r->[$i+1], expected $e->[$i]"
				  unless num_eq($r->[ $i + 1 ], $e->[$i]);
			}
		}
		my %seen;
		@diff = grep { !$seen{$_}++ } @diff;
		is(join('; ', @diff), '',
			"login_anomalies [$tag] equals the model: "
			  . join(', ', map { (split m{/}, $_)[2] } sort keys %$exp));
	}

	# 2. hand-computed boundary rows (exact text as returned)
	my $row = sub {
		my ($tag, $case) = @_;
		my $p = $case eq 'logout-spike' ? "$pfx/logout-spike" : "$pfx/$case/login";
		my $r = $got{$tag}{$p};
		return $r ? join(' ', @$r) : 'absent';
	};
	is($row->('default', 'mc-below'), 'absent', 'min_calls 20: 19 calls are not returned');
	is($row->('default', 'mc-at'), 'POST 20 0 0 0 Infinity',
		'min_calls 20: 20 calls are returned (ok 0, ratio 0, baseline 0, factor Infinity)');
	is($row->('mc21', 'mc-at'), 'absent', 'min_calls 21: the 20 calls are not returned');
	is($row->('default', 'sf-below'), 'absent',
		'spike_factor 3 x baseline 10: 29 calls are not returned');
	is($row->('default', 'sf-at'), 'POST 30 0 0 10 3',
		'spike_factor 3 x baseline 10: 30 calls are returned, baseline_calls 10, factor 3');
	is($row->('sf+', 'sf-at'), 'absent', 'spike_factor 3.0000001: 30 calls are not returned');
	is($row->('default', 'msr-at'), 'POST 40 20 0.5 0 Infinity',
		'max_success_ratio 0.5: 20 ok of 40 are returned (ratio 0.5)');
	is($row->('default', 'msr-above'), 'absent',
		'max_success_ratio 0.5: 21 ok of 40 are not returned');
	is($row->('msr-', 'msr-at'), 'absent', 'max_success_ratio 0.4999: 20 of 40 not returned');
	is($row->('msr+', 'msr-above'), 'POST 40 21 0.525 0 Infinity',
		'max_success_ratio 0.525: 21 ok of 40 are returned (ratio 0.525)');
	is($row->('b10', 'sf-at'), 'absent',
		'baseline 10 minutes: 160 calls -> 16 per window; 30 < 3 x 16');
	is($row->('b10sf1', 'sf-at'), 'POST 30 0 0 16 1.875',
		'baseline 10 minutes, spike_factor 1: baseline_calls 16, factor 1.875');
	# 31 minutes: the 300 baseline calls + the 7 just before them, over 31 windows
	my $r31 = $got{'b31sf1'}{"$pfx/sf-at/login"};
	ok($r31 && num_eq($r31->[4], 307 / 31) && num_eq($r31->[5], 30 / (307 / 31)),
		'baseline 31 minutes: baseline_calls = 307/31, factor = 30/(307/31)')
	  or diag('got ' . ($r31 ? join(' ', @$r31) : 'absent'));
	is(scalar(grep { $_->[2] eq "$pfx/logout-spike" } @rows),
		0, 'a path that does not match the pattern is never returned');
	$done = 1;
	last;
}
ok($done, 'an attempt ran within one minute');

done_testing();
