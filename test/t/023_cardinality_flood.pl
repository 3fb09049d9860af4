# 023_cardinality_flood.pl — 2,000,000 distinct callers and 1,000,000 distinct APIs within a
# minute, default capacities.
#
# Default apicount.max_entries (100,000 caller entries) and apicount.max_apis (10,000 API
# entries), default flush_interval (5 s, so flushes run during the flood).  Two floods at full
# speed, each 1,000,000 rows in 2 INSERT ... SELECT statements of 500,000 (one transaction each):
#   B. a botnet: one path ('/login') from 1,000,000 distinct client IPs;
#   A. then a scanner: 1,000,000 distinct paths ('/scan/x<g>', not id-like so normalization
#      keeps them distinct) from 1,000,000 distinct client IPs.
# Proves:
#  - no error, and every statement reports its row count;
#  - memory is bounded: stats.shared_memory_bytes is unchanged, each tier within its capacity
#    and stats.entries <= max_entries + max_apis + 1,024 (the reserve) at every step; the sum of
#    PSS of all server processes and the inserting backend's peak RSS (VmHWM) are reported with
#    diag();
#  - per-API counts are exact whatever the number of callers: after B, with the caller tier
#    full, no '(other)' entry exists (the API tier has room: overflow_hits 0) and '/login' holds
#    its 1,000,000 hits, before and after the flush; the callers that found no caller entry
#    are folded (folded_calls), and caller tier + folded = every hit;
#  - after A fills the API tier, its surplus paths are counted under 'GET' '(other)' (no '*'
#    catch-all), stats.overflow_hits equals the '(other)' entries' calls = inserted - hits under
#    named APIs, both before the flush (apicount.live) and after it (api_minute);
#  - totals are exact: after flush(), sum(calls) over api_minute, '(other)' rows included, is
#    exactly the 2,000,000 inserted (plus 30 control hits), and so is caller_minute's; per
#    (minute, method, path) the caller rows, one '(other callers)' row included, add up to
#    api_minute; every named caller row is a real inserted key with calls = 1, every named
#    '/scan/' API row a real path with calls = 1; the '(other callers)' rows hold folded_calls;
#  - an existing key (the control key, created before the floods) keeps counting under its own
#    name, in both tiers;
#  - the query functions stay usable: timings of top_apis('1 minute'), top_apis over 1 hour,
#    top_callers, hot_callers and series, live (before the flush) and after it, are reported
#    with diag(), not asserted (a generous 60 s sanity bound only); top_apis ranks '/login'
#    and then 'GET' '(other)' first; top_callers never returns the '(other callers)' row.
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

my ($capacity, $api_capacity, $shm0) = split /\|/,
  q1('SELECT capacity, api_capacity, shared_memory_bytes FROM apicount.stats');
is("$capacity|$api_capacity", '100000|10000', 'default capacities: 100000 callers, 10000 APIs');
my ($pss0, $nproc0) = server_pss_kb();

# the control key, the flood and the checks that follow it take about 15 s: start them early
# in a minute, so that the control key's later hits fall in the minute of its entry (in the
# next minute the API tier is still full of the flood's paths, and a new key there is folded)
my $sec = q1("SELECT extract(second FROM clock_timestamp())::int");
sleep(61 - $sec) if $sec > 25;

# control key, created before the flood: must keep counting under its own name
q1("INSERT INTO apicount.requests (path, client_ip, status) SELECT '/control', '192.0.2.1', 200 FROM generate_series(1, 10)");

my $N = 500_000;
my %batch = (
	A => "'/scan/x' || g, ('10.0.0.0'::inet + g)",
	B => "'/login', ('11.0.0.0'::inet + g)");
my $inserted = 0;
my $t_flood = time;
sub tiers_ok
{
	my ($label) = @_;
	my ($entries, $api, $callers, $shm) = split /\|/,
	  q1('SELECT entries, api_entries, caller_entries, shared_memory_bytes FROM apicount.stats');
	cmp_ok($entries, '<=', $capacity + $api_capacity + 1024,
		"$label: stats.entries $entries <= max_entries + max_apis + 1024");
	ok($api <= $api_capacity && $callers <= $capacity,
		"$label: API tier $api <= $api_capacity, caller tier $callers <= $capacity");
	is($shm, $shm0, "$label: stats.shared_memory_bytes unchanged ($shm0)");
}
for my $step ([ 'B', 0 ], [ 'B', 1 ], [ 'A', 0 ], [ 'A', 1 ])
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
	tiers_ok("after $b $lo..$hi");
	if ($b eq 'B' && $half == 1)
	{
		# the botnet alone: one API, 1,000,000 callers
		my ($ovh_b, $folded_b, $callers_b) = split /\|/,
		  q1('SELECT overflow_hits, folded_calls, caller_entries FROM apicount.stats');
		is($ovh_b, '0', "after B: no hit under '(other)' (the API tier has room)");
		is(q1("SELECT count(*) FROM apicount.live WHERE path = '(other)' OR method = '*'"), '0',
			"after B: no '(other)' entry in apicount.live");
		is($callers_b, $capacity, 'after B: the caller tier is full');
		is(q1("SELECT sum(calls) FROM apicount.live WHERE tier = 'api' AND path = '/login'"),
			2 * $N, 'after B: the API tier counts every /login hit (' . (2 * $N) . ')');
		is($folded_b + q1("SELECT sum(calls) FROM apicount.live WHERE tier = 'caller' AND path = '/login'"),
			2 * $N, 'after B: /login callers in the caller tier + folded_calls = every /login hit');
	}
}
my $flood_s = time - $t_flood;
q1("INSERT INTO apicount.requests (path, client_ip, status) SELECT '/control', '192.0.2.1', 200 FROM generate_series(1, 20)");
my $total = $inserted + 30;

# ---- before the flush: live counts -------------------------------------------------------------
my ($hits, $ovh, $folded) = split /\|/, q1('SELECT hits, overflow_hits, folded_calls FROM apicount.stats');
is($hits, $total, "stats.hits = $total");
cmp_ok($ovh, '>', 0, "stats.overflow_hits > 0 ($ovh)");
is(q1('SELECT api_entries FROM apicount.stats'), $api_capacity, 'after A: the API tier is full');
my ($live_named, $live_other, $live_other_methods) = split /\|/, q1(q{
	SELECT coalesce(sum(calls) FILTER (WHERE path <> '(other)'), 0),
	       coalesce(sum(calls) FILTER (WHERE path = '(other)'), 0),
	       string_agg(DISTINCT method, ',') FILTER (WHERE path = '(other)')
	FROM apicount.live WHERE tier = 'api'});
is($live_other, $ovh, "live: the '(other)' entries hold exactly stats.overflow_hits");
is($live_other_methods, 'GET', "live: the '(other)' entries keep the method GET (no '*' catch-all)");
is($live_named + $live_other, $total, "live: the API tier (named + '(other)') holds every hit");
is(q1("SELECT sum(calls) FROM apicount.live WHERE tier = 'api' AND path = '/login'"), 2 * $N,
	'live: /login still holds its ' . (2 * $N) . ' hits');
is($folded + q1("SELECT sum(calls) FROM apicount.live WHERE tier = 'caller'"), $total,
	'live: the caller tier + folded_calls = every hit');
is(q1("SELECT string_agg(tier || ' ' || calls, ',' ORDER BY tier) FROM apicount.live WHERE path = '/control'"),
	'api 30,caller 30',
	'the control key (created before the flood) kept counting under its own name, in both tiers');

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
# calls is an upper bound: an API row no summary of folded APIs names adds the minute's bound
# of folded APIs (it could have been folded before it had an entry); its exact count is
# calls - calls_error, and the bound is at most the folded calls / heavy_counters
is(q1("SELECT method || '|' || path || '|' || (calls - calls_error) FROM apicount.top_apis(2, '1 minute')"),
	"GET|/login|" . (2 * $N) . "\nGET|(other)|$ovh",
	"top_apis: /login comes first with all its hits, then 'GET' '(other)' with all overflow hits");
my $login_err = q1("SELECT calls_error FROM apicount.top_apis(1, '1 minute')");
ok($login_err <= $ovh / q1("SELECT current_setting('apicount.heavy_counters')::int"),
	"top_apis: /login's calls_error ($login_err) <= the folded APIs' calls / heavy_counters");
is(q1(q{SELECT count(*) FROM apicount.top_callers(100000, '1 minute', NULL, 'ip_user')
	WHERE client_ip IS NULL OR user_id = '(other callers)'}),
	'0', "top_callers: no '(other callers)' row");

# ---- after the flush: rollups ------------------------------------------------------------------
my $t0 = time;
my ($ret, $out, $err) = $node->psql('postgres', 'SELECT apicount.flush()');
is($ret, 0, 'flush() works after the flood') or diag($err);
diag(sprintf('flush() after the flood: %.2f s, %s entries', time - $t0, $out));
is(q1('SELECT sum(calls) FROM apicount.api_minute'), $total,
	"api_minute: sum(calls) including '(other)' = $total exactly");
is(q1('SELECT sum(calls) FROM apicount.caller_minute'), $total,
	"caller_minute: sum(calls) including '(other callers)' = $total exactly");
is(q1("SELECT sum(client_errors) FROM apicount.api_minute"), $inserted / 10,
	'api_minute: client_errors exact (every 10th row was a 404)');
is(q1("SELECT sum(calls) FROM apicount.api_minute WHERE path = '/login'"), 2 * $N,
	'api_minute: /login holds exactly its ' . (2 * $N) . ' hits (1,000,000 callers)');
my ($rolled_named, $rolled_other) = split /\|/, q1(
	"SELECT coalesce(sum(calls) FILTER (WHERE path <> '(other)'), 0), coalesce(sum(calls) FILTER (WHERE path = '(other)'), 0) FROM apicount.api_minute"
);
is($rolled_other, $ovh, "api_minute: the '(other)' rows hold exactly stats.overflow_hits");
is($ovh, $total - $rolled_named, 'stats.overflow_hits = inserted - hits under named APIs');
is(q1(q{SELECT count(*) FROM apicount.api_minute WHERE method <> 'GET'
	OR NOT (path IN ('/login', '/control', '(other)') OR (path ~ '^/scan/x\d+$' AND calls = 1))}),
	'0', "api_minute: rows are /login, /control, 'GET' '(other)', or an inserted /scan/ path with calls = 1");
is(q1(q{SELECT count(*) FROM apicount.api_minute a
	FULL JOIN (SELECT bucket, method, path, sum(calls) AS calls, sum(ok) AS ok,
	                  sum(client_errors) AS ce, count(*) FILTER (WHERE client_ip IS NULL) AS others
	           FROM apicount.caller_minute GROUP BY 1, 2, 3) c USING (bucket, method, path)
	WHERE a.calls IS DISTINCT FROM c.calls OR a.ok IS DISTINCT FROM c.ok
	   OR a.client_errors IS DISTINCT FROM c.ce OR c.others > 1}),
	'0', "caller_minute: per (minute, method, path) the caller rows, at most one '(other callers)' row, add up to api_minute");
is(q1(q{SELECT count(*) FROM apicount.caller_minute WHERE client_ip IS NOT NULL AND path <> '/control' AND calls <> 1}),
	'0', 'caller_minute: every named flood caller has calls = 1');
is(q1(q{SELECT count(*) FROM apicount.caller_minute WHERE client_ip IS NOT NULL AND NOT (
	(path ~ '^/scan/x\d+$' AND client_ip = '10.0.0.0'::inet + substr(path, 8)::bigint)
	OR (path = '(other)' AND client_ip << '10.0.0.0/8')
	OR (path = '/login' AND client_ip << '11.0.0.0/8') OR (path = '/control' AND client_ip = '192.0.2.1'))}),
	'0', 'caller_minute: every named row is a real inserted key');
is(q1(q{SELECT count(*) FILTER (WHERE user_id IS DISTINCT FROM '(other callers)') || '|' || sum(calls)
	FROM apicount.caller_minute WHERE client_ip IS NULL}),
	"0|$folded", "caller_minute: rows without an IP are '(other callers)' rows holding folded_calls");
is(q1("SELECT sum(calls) FROM apicount.api_minute WHERE path = '/control'") . '|'
	  . q1("SELECT sum(calls) FROM apicount.caller_minute WHERE path = '/control' AND client_ip = '192.0.2.1'"),
	'30|30', 'the control key is flushed under its own name, in both rollups');
my ($entries, $api_entries, $caller_entries) = split /\|/,
  q1('SELECT entries, api_entries, caller_entries FROM apicount.stats');
tiers_ok('after flush');
time_queries('after flush (rollups + live)');

# where the hits went: the API tier holds max_apis APIs per its entries' lifetime (two live
# minutes at least), so once the scanner's paths have filled it, every new API of the minute
# (and of the next ones, until the entries leave the live horizon) is counted under '(other)'
my ($scan_named, $scan_rows) = split /\|/, q1(
	"SELECT coalesce(sum(calls), 0), count(*) FROM apicount.api_minute WHERE path LIKE '/scan/%'");
diag(sprintf('API entries at the end: %d of %d, caller entries %d of %d; flood A (1,000,000 new paths) '
		  . 'counted under their own names: %d (%d rows), under GET (other): %d; flood B (/login, '
		  . '1,000,000 IPs): all under its name, %d callers folded in all',
		$api_entries, $api_capacity, $caller_entries, $capacity, $scan_named, $scan_rows, $ovh, $folded));

my ($pss1, $nproc1) = server_pss_kb();
is(q1('SELECT shared_memory_bytes FROM apicount.stats'), $shm0, 'shared_memory_bytes unchanged at the end');
diag(sprintf(
		'flood: %d rows in %.1f s (%.0f rows/s); overflow_hits %d (%.1f%%); folded_calls %d (%.1f%%); named API hits %d; '
		  . 'entries %d (API %d of %d, callers %d of %d); shared_memory_bytes %d (%.1f MB); server PSS %d kB (%d procs) before, %d kB (%d procs) after',
		$inserted, $flood_s, $inserted / $flood_s, $ovh, 100 * $ovh / $total, $folded, 100 * $folded / $total,
		$rolled_named, $entries, $api_entries, $api_capacity, $caller_entries, $capacity,
		$shm0, $shm0 / 1048576, $pss0, $nproc0, $pss1, $nproc1));
cmp_ok($pss1 - $pss0, '<', $shm0 / 1024 + 200 * 1024,
	'server PSS grew by less than the shared memory size + 200 MB (backends are gone)');

$node->stop('fast');
done_testing();
