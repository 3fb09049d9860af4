# 003_overflow.pl — a full counter table sends hits to the '(overflow)' entry, losing none.
#
# apicount.max_entries = 1000 (the minimum); 20,000 hits on 20,000 distinct paths
# ('/p/n<g>', not id-like, and apicount.normalize_paths = off so they stay distinct) spread over
# 3 known minutes, in 4 transactions of 5,000, mixed statuses.  Expected totals per minute are
# computed in Perl from the generating formula.
#
# Proves:
#  - no error while the table is full; stats.overflow_hits > 0;
#  - after flush(), sum(calls) over api_minute (normal rows + '(overflow)' rows with method '*')
#    is exactly 20,000, and per minute calls/ok/server_errors equal the expected values;
#  - overflow rows exist with method '*' and path '(overflow)', one per minute at most, and
#    caller_minute holds them with NULL client_ip/user_id; its per-minute totals are exact too;
#  - every normal (non-overflow) row is a real inserted path in its right minute with calls = 1,
#    and there are at most max_entries of them;
#  - before the flush, top_apis over the range shows the live overflow entry first and sums to
#    the exact total;
#  - stats.entries <= capacity + 1024 (the overflow reserve), and stats.overflow_hits equals the
#    calls of the overflow rows;
#  - the full table still counts existing keys normally (a path that has an entry keeps
#    counting under its own name);
#  - recovery: the hits are 10 minutes old, so once flushed their entries are idle and past the
#    live horizon; after flush() new distinct paths get entries of their own again (no new
#    overflow hits) and are flushed under their own names.
# apicount.flush_interval = '1h', so only flush() flushes (and frees idle entries): the table
# state at each check is deterministic.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('overflow');
$node->init;
$node->append_conf('postgresql.conf',
	"shared_preload_libraries = 'apicount'\n"
	  . "apicount.flush_interval = '1h'\n"
	  . "apicount.max_entries = 1000\n"
	  . "log_statement = none\n"
	  . "timezone = 'UTC'\n");
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION apicount');

my $base_epoch = $node->safe_psql('postgres',
	"SELECT extract(epoch FROM date_trunc('minute', now()) - interval '10 minutes')::bigint");
my $base = "to_timestamp($base_epoch)";

my $N = 20000;

# formula: minute g % 3, status 503 when g % 4 = 0 else 200
my %exp;    # minute -> [calls, ok, server_errors]
for my $g (1 .. $N)
{
	my $e = $exp{ $g % 3 } //= [ 0, 0, 0 ];
	$e->[0]++;
	if ($g % 4 == 0) { $e->[2]++ } else { $e->[1]++ }
}
my $expected_per_minute =
  join("\n", map { join('|', $_, @{ $exp{$_} }) } sort { $a <=> $b } keys %exp);

my $capacity = $node->safe_psql('postgres', 'SELECT capacity FROM apicount.stats');
is($capacity, '1000', 'stats.capacity is apicount.max_entries (1000)');

for my $t (0 .. 3)
{
	my ($lo, $hi) = (1 + $t * 5000, ($t + 1) * 5000);
	my ($ret, $out, $err) = $node->psql('postgres', qq{
		SET apicount.normalize_paths = off;
		INSERT INTO apicount.requests (ts, path, client_ip, status)
		SELECT $base + (g % 3) * interval '1 minute' + (g % 60) * interval '1 second',
		       '/p/n' || g, '10.9.0.1', CASE WHEN g % 4 = 0 THEN 503 ELSE 200 END
		FROM generate_series($lo, $hi) g;});
	is($ret, 0, "transaction $t (hits $lo..$hi) succeeds with the table full")
	  or diag($err);
}

my ($overflow_hits, $entries) = split /\|/,
  $node->safe_psql('postgres', 'SELECT overflow_hits, entries FROM apicount.stats');
cmp_ok($overflow_hits, '>', 0, 'stats.overflow_hits > 0');
cmp_ok($entries, '<=', $capacity + 1024,
	'stats.entries <= capacity + overflow reserve (1024)');

# a key that already has an entry keeps counting under its own name while the table is full:
# find one normal live entry and hit it 5 more times (same minute, method, path, ip)
my $live_key = $node->safe_psql('postgres', qq{
	SELECT path FROM apicount.live
	WHERE method = 'GET' AND path <> '(overflow)' AND client_ip = '10.9.0.1'
	  AND bucket = $base + interval '1 minute'
	ORDER BY path LIMIT 1});
like($live_key, qr{^/p/n\d+$}, 'a normal entry exists for an inserted path');
my ($g_of_key) = $live_key =~ m{^/p/n(\d+)$};
is($g_of_key % 3, 1, 'that entry is in the minute its hit was sent to');
$node->safe_psql('postgres', qq{
	SET apicount.normalize_paths = off;
	INSERT INTO apicount.requests (ts, path, client_ip, status)
	SELECT $base + interval '1 minute' + interval '30 seconds', '$live_key', '10.9.0.1', 200
	FROM generate_series(1, 5);});
$exp{1}[0] += 5;
$exp{1}[1] += 5;
$expected_per_minute =
  join("\n", map { join('|', $_, @{ $exp{$_} }) } sort { $a <=> $b } keys %exp);
is($node->safe_psql('postgres', 'SELECT overflow_hits FROM apicount.stats'),
	$overflow_hits, 'hits on an existing key do not overflow');

# query functions see the overflow entry while it is only in shared memory
my $top_range = "$base, $base + interval '3 minutes'";
is($node->safe_psql('postgres', "SELECT method || '|' || path || '|' || calls FROM apicount.top_apis(1, $top_range)"),
	"*|(overflow)|$overflow_hits", 'before flush: top_apis ranks the live overflow entry first with stats.overflow_hits calls');
is($node->safe_psql('postgres', "SELECT sum(calls) FROM apicount.top_apis(100000, $top_range)"),
	$N + 5, 'before flush: top_apis over all rows sums to ' . ($N + 5));

$node->safe_psql('postgres', 'SELECT apicount.flush()');

is($node->safe_psql('postgres', 'SELECT sum(calls) FROM apicount.api_minute'),
	$N + 5, 'api_minute total (normal + overflow rows) is exactly ' . ($N + 5));
is($node->safe_psql('postgres', qq{
		SELECT (extract(epoch FROM bucket - $base) / 60)::int, sum(calls), sum(ok), sum(server_errors)
		FROM apicount.api_minute GROUP BY 1 ORDER BY 1}),
	$expected_per_minute, 'api_minute per-minute calls/ok/server_errors equal the expected values');
is($node->safe_psql('postgres', qq{
		SELECT (extract(epoch FROM bucket - $base) / 60)::int, sum(calls), sum(ok), sum(server_errors)
		FROM apicount.caller_minute GROUP BY 1 ORDER BY 1}),
	$expected_per_minute, 'caller_minute per-minute totals equal the expected values');

my $ovf = $node->safe_psql('postgres', qq{
	SELECT count(*), coalesce(sum(calls), 0), count(DISTINCT bucket) = count(*)
	FROM apicount.api_minute WHERE method = '*' AND path = '(overflow)'});
my ($ovf_rows, $ovf_calls, $ovf_one_per_minute) = split /\|/, $ovf;
cmp_ok($ovf_rows, '>', 0, "api_minute has '(overflow)' rows with method '*'");
is($ovf_one_per_minute, 't', 'at most one overflow row per minute');
is($ovf_calls, $overflow_hits, 'overflow rows hold exactly stats.overflow_hits calls');
is($node->safe_psql('postgres', qq{
		SELECT count(*) FROM apicount.caller_minute
		WHERE method = '*' AND path = '(overflow)' AND client_ip IS NULL AND user_id IS NULL}),
	$ovf_rows, "caller_minute has the same overflow rows with NULL client_ip and user_id");

# normal rows: real paths, in the right minute, each hit once (plus the 5 extra on $live_key)
is($node->safe_psql('postgres', qq{
		SELECT count(*) FROM apicount.api_minute
		WHERE NOT (method = '*' AND path = '(overflow)')
		  AND NOT (method = 'GET' AND path ~ '^/p/n[0-9]+\$'
		           AND substr(path, 5)::int BETWEEN 1 AND $N
		           AND bucket = $base + (substr(path, 5)::int % 3) * interval '1 minute'
		           AND calls = CASE WHEN path = '$live_key' THEN 6 ELSE 1 END)}),
	'0', 'every normal api_minute row is an inserted path, in its minute, with the right calls');
my $normal = $node->safe_psql('postgres', qq{
	SELECT count(*) FROM apicount.api_minute WHERE NOT (method = '*' AND path = '(overflow)')});
cmp_ok($normal, '<=', $capacity, "normal rows ($normal) <= max_entries");
is($normal + $ovf_calls, $N, 'normal rows + overflow calls = the distinct paths inserted');

# ---- recovery after the flush freed the idle (old) entries ---------------------------------
my $entries_after = $node->safe_psql('postgres', 'SELECT entries FROM apicount.stats');
note("stats.entries after the flush: $entries_after");
my $R = 500;
$node->safe_psql('postgres', qq{
	SET apicount.normalize_paths = off;
	INSERT INTO apicount.requests (ts, path, status)
	SELECT $base + interval '5 minutes', '/recovered/r' || g, 200 FROM generate_series(1, $R) g;});
is($node->safe_psql('postgres', 'SELECT overflow_hits FROM apicount.stats'),
	$overflow_hits, "recovery: $R new distinct paths after the flush do not overflow");
$node->safe_psql('postgres', 'SELECT apicount.flush()');
is($node->safe_psql('postgres', qq{
		SELECT count(*) || '|' || sum(calls) FROM apicount.api_minute
		WHERE path LIKE '/recovered/r%' AND bucket = $base + interval '5 minutes'}),
	"$R|$R", "recovery: the $R new paths are flushed under their own names");
is($node->safe_psql('postgres', 'SELECT sum(calls) FROM apicount.api_minute'),
	$N + 5 + $R, 'recovery: api_minute total is exactly ' . ($N + 5 + $R));

# ---- a hit that names the overflow row itself ------------------------------------------------
# A request with method '*' and path '(overflow)', no IP and no user id, maps to the same
# api_minute and caller_minute rows as the minute's overflow entry.  With both dirty in one
# flush, the caller upsert must merge them (an upsert may not touch one row twice).
my ($cap2, $entries2, $failures) = split /\|/,
  $node->safe_psql('postgres', 'SELECT capacity, entries, flush_failures FROM apicount.stats');
my $room = $cap2 - $entries2;
my $fill = $room + 100;
$node->safe_psql('postgres', qq{
	SET apicount.normalize_paths = off;
	INSERT INTO apicount.requests (ts, method, path, status)
	VALUES ($base + interval '7 minutes', '*', '(overflow)', 200);
	INSERT INTO apicount.requests (ts, path, status)
	SELECT $base + interval '7 minutes', '/fill/f' || g, 200 FROM generate_series(1, $fill) g;});
my ($ovf7_live) = $node->safe_psql('postgres', qq{
	SELECT coalesce(sum(calls), 0) FROM apicount.live
	WHERE method = '*' AND path = '(overflow)' AND bucket = $base + interval '7 minutes'});
cmp_ok($ovf7_live, '>=', 2,
	"minute 7: the user's '*' '(overflow)' entry and the overflow entry are both live ($ovf7_live calls)");
my ($fret, $flushed, $ferr) = $node->psql('postgres', 'SELECT apicount.flush()');
is($fret, 0, 'minute 7: flush() succeeds') or diag($ferr);
is($node->safe_psql('postgres', 'SELECT flush_failures FROM apicount.stats'),
	$failures, 'minute 7: flush_failures unchanged');
is($node->safe_psql('postgres', qq{
		SELECT a.calls || '|' || c.calls FROM apicount.api_minute a, apicount.caller_minute c
		WHERE a.method = '*' AND a.path = '(overflow)' AND a.bucket = $base + interval '7 minutes'
		  AND c.method = '*' AND c.path = '(overflow)' AND c.bucket = a.bucket
		  AND c.client_ip IS NULL AND c.user_id IS NULL}),
	"$ovf7_live|$ovf7_live",
	"minute 7: api_minute and caller_minute hold the user's hit and the overflow hits in one row");
is($node->safe_psql('postgres', qq{
		SELECT sum(calls) FROM apicount.api_minute WHERE bucket = $base + interval '7 minutes'}),
	$fill + 1, 'minute 7: api_minute total is every hit of the minute (' . ($fill + 1) . ')');

$node->stop('fast');
done_testing();
