# 023_cardinality_flood.pl — 2,000,000 distinct keys within a minute, default max_entries.
#
# Default apicount.max_entries (100,000), default flush_interval (5 s, so flushes run during the
# flood).  Two floods at full speed, each 1,000,000 rows in 2 INSERT ... SELECT statements of
# 500,000 (one transaction each):
#   A. a scanner: 1,000,000 distinct paths ('/scan/x<g>', not id-like so normalization keeps
#      them distinct) from 1,000,000 distinct client IPs;
#   B. a botnet: one path ('/login') from 1,000,000 distinct client IPs.
# Proves:
#  - no error, and every statement reports its row count;
#  - memory is bounded: stats.shared_memory_bytes is unchanged, stats.entries <= capacity +
#    1,024 (the overflow reserve) at every step; the sum of PSS of all server processes and
#    the inserting backend's peak RSS (VmHWM) are reported with diag();
#  - totals are exact: after flush(), sum(calls) over api_minute, including the '(overflow)'
#    rows with method '*', is exactly the 2,000,000 inserted (plus 30 control hits), and the
#    same holds for caller_minute; every normal row is a real inserted key with calls = 1;
#  - stats.overflow_hits > 0 and equals the overflow rows' calls = inserted - hits in normal
#    entries, both before the flush (apicount.live) and after it (api_minute);
#  - an existing key keeps counting under its own name while the table is full;
#  - the query functions stay usable: timings of top_apis('1 minute'), top_apis over 1 hour,
#    top_callers, hot_callers and series, live (before the flush) and after it, are reported
#    with diag(), not asserted (a generous 60 s sanity bound only).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

my $node = PostgreSQL::Test::Cluster->new('flood');
$node->init;
$node->append_conf('postgresql.conf',
	"shared_preload_libraries = 'apicount'\n"
	  . "log_statement = none\n"
	  . "timezone = 'UTC'\n");
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION apicount');

sub q1 { return $node->safe_psql('postgres', $_[0]); }

# sum of PSS (kB) of the postmaster and all its children
sub server_pss_kb
{
	my $pm = $node->safe_psql('postgres', 'SELECT pg_postmaster_start_time() IS NOT NULL');
	my @pids = ($node->{_pid});
	for my $p (glob('/proc/[0-9]*'))
	{
		my ($pid) = $p =~ m{/proc/(\d+)};
		open my $fh, '<', "$p/stat" or next;
		my $st = <$fh>;
		close $fh;
		next unless defined $st;
		my @f = split ' ', (split /\)\s/, $st, 2)[1] // '';
		push @pids, $pid if @f > 1 && $f[1] == $node->{_pid};
	}
	my $sum = 0;
	for my $pid (@pids)
	{
		open my $fh, '<', "/proc/$pid/smaps_rollup" or next;
		while (<$fh>) { $sum += $1 if /^Pss:\s+(\d+) kB/; }
		close $fh;
	}
	return ($sum, scalar @pids);
}

my ($capacity, $shm0) = split /\|/,
  q1('SELECT capacity, shared_memory_bytes FROM apicount.stats');
is($capacity, '100000', 'default capacity 100000');
my ($pss0, $nproc0) = server_pss_kb();

# control key, created before the flood: must keep counting under its own name
q1("INSERT INTO apicount.requests (path, client_ip, status) SELECT '/control', '192.0.2.1', 200 FROM generate_series(1, 10)");

my $N = 500_000;
my %batch = (
	A => "'/scan/x' || g, ('10.0.0.0'::inet + g)",
	B => "'/login', ('11.0.0.0'::inet + g)");
my $inserted = 0;
my $t_flood = time;
for my $step ([ 'A', 0 ], [ 'A', 1 ], [ 'B', 0 ], [ 'B', 1 ])
{
	my ($b, $half) = @$step;
	my ($lo, $hi) = (1 + $half * $N, ($half + 1) * $N);
	my $sql = "INSERT INTO apicount.requests (path, client_ip, status, latency_ms) "
	  . "SELECT $batch{$b}, CASE WHEN g % 10 = 0 THEN 404 ELSE 200 END, g % 50 "
	  . "FROM generate_series($lo, $hi) g";
	my $t0 = time;
	my ($ret, $out, $err) = $node->psql('postgres',
		"\\echo :VERSION_NUM\n$sql;\nSELECT pg_backend_pid();\n"
		  . "SELECT (regexp_match(pg_read_file('/proc/' || pg_backend_pid() || '/status'), 'VmHWM:\\s+(\\d+)'))[1]");
	my $dt = time - $t0;
	is($ret, 0, "flood $b rows $lo..$hi: no error") or diag($err);
	$inserted += $N;
	my @l = split /\n/, $out;
	diag(sprintf('flood %s %d..%d: %.1f s (%.0f rows/s), inserting backend peak RSS %s kB',
			$b, $lo, $hi, $dt, $N / $dt, $l[-1] // '?'));
	my ($entries, $shm) = split /\|/, q1('SELECT entries, shared_memory_bytes FROM apicount.stats');
	cmp_ok($entries, '<=', $capacity + 1024, "after $b $lo..$hi: stats.entries $entries <= capacity + 1024");
	is($shm, $shm0, "after $b $lo..$hi: stats.shared_memory_bytes unchanged ($shm0)");
}
my $flood_s = time - $t_flood;
q1("INSERT INTO apicount.requests (path, client_ip, status) SELECT '/control', '192.0.2.1', 200 FROM generate_series(1, 20)");
my $total = $inserted + 30;

# ---- before the flush: live counts -------------------------------------------------------------
my ($hits, $ovh, $entries) = split /\|/, q1('SELECT hits, overflow_hits, entries FROM apicount.stats');
is($hits, $total, "stats.hits = $total");
cmp_ok($ovh, '>', 0, "stats.overflow_hits > 0 ($ovh)");
my ($live_normal, $live_over) = split /\|/, q1(
	"SELECT coalesce(sum(calls) FILTER (WHERE method <> '*'), 0), coalesce(sum(calls) FILTER (WHERE method = '*'), 0) FROM apicount.live"
);
is($live_over, $ovh, 'live: the (overflow) entries hold exactly stats.overflow_hits');
is($live_normal + $live_over, $total, 'live: normal + overflow = every hit');
is(q1("SELECT sum(calls) FROM apicount.live WHERE path = '/control'"), '30',
	'the control key (created before the flood) kept counting under its own name');

# query timings (ms), measured inside the server
q1(q{CREATE FUNCTION time_ms(q text) RETURNS text LANGUAGE plpgsql AS $$
	DECLARE t0 timestamptz := clock_timestamp(); n bigint;
	BEGIN EXECUTE 'SELECT count(*) FROM (' || q || ') s' INTO n;
	      RETURN round(extract(epoch FROM clock_timestamp() - t0) * 1000, 1) || ' ms (' || n || ' rows)';
	END $$});
my @queries = (
	[ "top_apis('1 minute')",  "SELECT * FROM apicount.top_apis(10, '1 minute')" ],
	[ "top_apis('1 hour')",    "SELECT * FROM apicount.top_apis(10, '1 hour')" ],
	[ "top_callers('1 minute')", "SELECT * FROM apicount.top_callers(10, '1 minute')" ],
	[ "hot_callers(1000,'1 minute')", "SELECT * FROM apicount.hot_callers(1000, '1 minute')" ],
	[ "hot_callers(1000,'1 minute',NULL,'user')", "SELECT * FROM apicount.hot_callers(1000, '1 minute', NULL, 'user')" ],
	[ "series(all paths, 1 hour)", "SELECT * FROM apicount.series()" ]);
sub time_queries
{
	my ($label) = @_;
	my @r;
	for my $q (@queries)
	{
		my $t0 = time;
		my ($ret, $out, $err) = $node->psql('postgres', "SELECT time_ms(\$q\$$q->[1]\$q\$)");
		my $wall = time - $t0;
		ok($ret == 0 && $wall < 60, "$label: $q->[0] runs") or diag($err);
		push @r, "$q->[0] $out";
	}
	diag("$label: " . join('; ', @r));
}
time_queries('before flush (live)');
is(q1("SELECT calls FROM apicount.top_apis(1, '1 minute')"), $ovh,
	'top_apis: the (overflow) row comes first with all overflow hits');

# ---- after the flush: rollups ------------------------------------------------------------------
my $t0 = time;
my ($ret, $out, $err) = $node->psql('postgres', 'SELECT apicount.flush()');
is($ret, 0, 'flush() works after the flood') or diag($err);
diag(sprintf('flush() after the flood: %.2f s, %s entries', time - $t0, $out));
is(q1('SELECT sum(calls) FROM apicount.api_minute'), $total,
	"api_minute: sum(calls) including (overflow) = $total exactly");
is(q1('SELECT sum(calls) FROM apicount.caller_minute'), $total,
	"caller_minute: sum(calls) including (overflow) = $total exactly");
is(q1("SELECT sum(client_errors) FROM apicount.api_minute"), $inserted / 10,
	'api_minute: client_errors exact (every 10th row was a 404)');
my ($rolled_normal, $rolled_over) = split /\|/, q1(
	"SELECT coalesce(sum(calls) FILTER (WHERE method <> '*'), 0), coalesce(sum(calls) FILTER (WHERE method = '*' AND path = '(overflow)'), 0) FROM apicount.api_minute"
);
is($rolled_over, $ovh, 'api_minute: the (overflow) rows hold exactly stats.overflow_hits');
is($ovh, $total - $rolled_normal, 'stats.overflow_hits = inserted - hits in normal entries');
is(q1(q{SELECT count(*) FROM apicount.caller_minute WHERE method <> '*' AND calls <> 1
	AND path <> '/control'}), '0', 'caller_minute: every normal flood key has calls = 1');
is(q1(q{SELECT count(*) FROM apicount.caller_minute WHERE method <> '*' AND NOT (
	(path ~ '^/scan/x\d+$' AND client_ip = '10.0.0.0'::inet + substr(path, 8)::bigint)
	OR (path = '/login' AND client_ip << '11.0.0.0/8') OR path = '/control')}),
	'0', 'caller_minute: every normal row is a real inserted key');
is(q1(q{SELECT count(*) FROM apicount.caller_minute WHERE method = '*'
	AND (path <> '(overflow)' OR client_ip IS NOT NULL OR user_id IS NOT NULL)}),
	'0', 'caller_minute: overflow rows have path (overflow) and NULL ip/user');
is(q1("SELECT sum(calls) FROM apicount.api_minute WHERE path = '/control'"), '30',
	'the control key is flushed under its own name');
($entries) = q1('SELECT entries FROM apicount.stats');
cmp_ok($entries, '<=', $capacity + 1024, "after flush: stats.entries $entries <= capacity + 1024");
time_queries('after flush (rollups + live)');

# where the normal entries went: the string table holds (max_entries + 1024) / 2 + 64 strings,
# so a flood of distinct paths fills it at about half the counter capacity; after that even a
# brand-new path with few keys (the botnet's '/login') gets no entry of its own (reported)
my ($scan_named, $login_named) = split /\|/, q1(
	"SELECT coalesce(sum(calls) FILTER (WHERE path LIKE '/scan/%'), 0), coalesce(sum(calls) FILTER (WHERE path = '/login'), 0) FROM apicount.api_minute"
);
diag(sprintf('normal entries at the end: %d of capacity %d; flood A (1,000,000 new paths) counted under '
		  . 'their own names: %d; flood B (one new path /login, 1,000,000 IPs): %d',
		$entries, $capacity, $scan_named, $login_named));

my ($pss1, $nproc1) = server_pss_kb();
is(q1('SELECT shared_memory_bytes FROM apicount.stats'), $shm0, 'shared_memory_bytes unchanged at the end');
diag(sprintf(
		'flood: %d rows in %.1f s (%.0f rows/s); overflow_hits %d (%.1f%%); normal hits %d; '
		  . 'entries %d of %d + 1024; shared_memory_bytes %d (%.1f MB); server PSS %d kB (%d procs) before, %d kB (%d procs) after',
		$inserted, $flood_s, $inserted / $flood_s, $ovh, 100 * $ovh / $total, $rolled_normal,
		$entries, $capacity, $shm0, $shm0 / 1048576, $pss0, $nproc0, $pss1, $nproc1));
cmp_ok($pss1 - $pss0, '<', $shm0 / 1024 + 200 * 1024,
	'server PSS grew by less than the shared memory size + 200 MB (backends are gone)');

$node->stop('fast');
done_testing();
