# 003_overflow.pl — full tiers lose no hit: callers fold into "(other callers)", APIs into "(other)".
#
# apicount.max_entries = 1000 (the caller tier, its minimum), apicount.max_apis = 100 (the API
# tier, its minimum), apicount.normalize_paths = off (paths stay distinct).  Expected counts are
# computed in Perl from the generating formulas (or from the documented capacities), never read
# back from apicount.  All hits are 20 minutes old or older, so once flushed their entries are
# idle and past the live horizon, and flush() frees them.
#
# Part A, a caller flood on few APIs: 20,000 hits, each from its own client IP, on 20 paths over
# 3 minutes (60 API entries: the API tier has room), in 4 transactions of 5,000, mixed statuses;
# first, one hit with no IP and user id '(other callers)' (it names the row its API's folded
# callers are written to).  Proves:
#  - no error; the caller tier fills (caller_entries = max_entries), the API tier holds the 60
#    APIs, and no '(other)' entry exists while the API tier has room (overflow_hits 0);
#  - before the flush, the API tier of apicount.live holds every (minute, path) exactly; callers()
#    adds up to each path's hits (its '(other callers)' row holding what no caller row holds);
#    top_callers leaves that row out; folded_calls = hits - the caller tier's calls;
#  - a caller that has an entry keeps counting under its own name (no new folded calls);
#  - after flush(): api_minute per (minute, path) equals the truth exactly (calls, ok,
#    server_errors), with no '(other)' or '*' row; every named caller_minute row is a real
#    inserted (minute, path, IP) with calls 1 (6 for the re-hit caller), max_entries - 1 of
#    them (the user's hit holds the last caller entry);
#    per (minute, API) the caller rows, one '(other callers)' row included, add up to
#    api_minute; the '(other callers)' rows hold folded_calls plus the user's own hit (merged
#    into the same row: flush() succeeds, one upsert does not touch a row twice).
# Part B, an API flood: 20,000 hits on 20,000 distinct paths (GET, every 10th POST) from one IP
# over 3 minutes, in 4 transactions.  Proves:
#  - no error; the API tier fills (api_entries = max_apis) and the reserve holds exactly one
#    (method, '(other)') entry per minute and method (6), no '*' catch-all; entries of every
#    tier within their capacity;
#  - an API that has an entry keeps counting under its own name (overflow_hits unchanged);
#  - before the flush, top_apis ranks 'GET (other)' and 'POST (other)' first with
#    stats.overflow_hits calls between them, and sums to the exact total;
#  - after flush(): api_minute per minute and per (minute, method) equals the truth exactly;
#    '(other)' rows keep their method (GET or POST), one per (minute, method), and hold
#    exactly stats.overflow_hits; every named row is an inserted path, in its minute, with
#    its method and calls 1 (6 for the re-hit path); named rows = max_apis; named + '(other)'
#    = every hit; caller_minute per minute equals the truth.
# Part C, recovery: after the flush freed the idle entries, 80 new distinct paths get entries of
#  their own (no new overflow hits) and are flushed under their own names.
# Part D, the reserve exhausted: with the API tier full, hits on new paths in 1,100 distinct
#  minutes need 1,100 (GET, '(other)') entries, but the 1,024-entry reserve holds only 1,023 more
#  (one is the catch-all '*' '(other)' of minute M, created by a hit that names it); then one more
#  hit in minute M, and one in a minute without a catch-all.  Proves: the reserve is full
#  (1,024); 1,023 flood minutes have a 'GET' '(other)' row of 1 call; the hit of minute M is
#  counted under M's catch-all ('*' '(other)' = 2, no 'GET' row there); the 78 hits that found no
#  room (77 of the flood + 1) are written under '*' '(other)' of the minute of the flush, as its
#  '(other callers)' row too; every hit of the part counted under an '(other)' path.
# At the end, over the whole of both rollups: caller_minute adds up to api_minute per (minute,
# method, path), and api_minute's total is every hit sent.
# apicount.flush_interval = '1h', so only flush() flushes (and frees idle entries): the state of
# the tiers at each check is deterministic.
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
	  . "apicount.max_apis = 100\n"
	  . "apicount.normalize_paths = off\n"
	  . "log_statement = none\n"
	  . "timezone = 'UTC'\n");
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION apicount');

sub q1 { return $node->safe_psql('postgres', $_[0]); }

my $base_epoch =
  q1("SELECT extract(epoch FROM date_trunc('minute', now()) - interval '20 minutes')::bigint");
my $base = "to_timestamp($base_epoch)";
my $sent = 0;    # every hit sent, all parts

my ($capacity, $api_capacity) = split /\|/, q1('SELECT capacity, api_capacity FROM apicount.stats');
is("$capacity|$api_capacity", '1000|100', 'stats: capacity = max_entries, api_capacity = max_apis');

# the reserve: entries of neither tier ("(other)" paths)
my $reserve_sql = 'SELECT entries - api_entries - caller_entries FROM apicount.stats';

# truth rows "k|calls|ok|server_errors", sorted by key
sub truth_text
{
	my ($h) = @_;
	return join("\n", map { join('|', $_, @{ $h->{$_} }) } sort keys %$h);
}

# ---- Part A: a caller flood on 20 APIs ------------------------------------------------------
my $N = 20000;
my %a_exp;    # "minute|path" -> [calls, ok, server_errors]
sub a_add
{
	my ($m, $path, $n, $ok) = @_;
	my $e = $a_exp{"$m|$path"} //= [ 0, 0, 0 ];
	$e->[0] += $n;
	if ($ok) { $e->[1] += $n } else { $e->[2] += $n }
}

# a hit naming the "(other callers)" row of its API (no IP): made before the caller tier fills
q1("INSERT INTO apicount.requests (ts, path, user_id, status)
	VALUES ($base + interval '1 minute 10 seconds', '/a/p1', '(other callers)', 200)");
a_add(1, '/a/p1', 1, 1);
$sent++;

for my $t (0 .. 3)
{
	my ($lo, $hi) = (1 + $t * 5000, ($t + 1) * 5000);
	my ($ret, $out, $err) = $node->psql('postgres', qq{
		INSERT INTO apicount.requests (ts, path, client_ip, status)
		SELECT $base + (g % 3) * interval '1 minute' + (g % 60) * interval '1 second',
		       '/a/p' || (g % 20), '10.8.0.0'::inet + g, CASE WHEN g % 4 = 0 THEN 503 ELSE 200 END
		FROM generate_series($lo, $hi) g;});
	is($ret, 0, "A: transaction $t (hits $lo..$hi, one caller each) succeeds") or diag($err);
}
for my $g (1 .. $N) { a_add($g % 3, '/a/p' . ($g % 20), 1, $g % 4 != 0); }
$sent += $N;

my ($a_api, $a_callers, $a_reserve, $a_ovh, $a_folded) = split /\|/,
  q1('SELECT api_entries, caller_entries, entries - api_entries - caller_entries, overflow_hits, folded_calls FROM apicount.stats');
is($a_callers, $capacity, 'A: the caller tier is full (caller_entries = max_entries)');
is($a_api, '60', 'A: the API tier holds the 60 (minute, path) APIs');
is("$a_reserve|$a_ovh", '0|0', "A: no '(other)' entry and no overflow hit while the API tier has room");
is(q1("SELECT count(*) FROM apicount.live WHERE path = '(other)' OR method = '*'"), '0',
	"A: apicount.live has no '(other)' entry");
is($a_folded, q1("SELECT $sent - sum(calls) FROM apicount.live WHERE tier = 'caller'"),
	'A: folded_calls = hits - the calls of the caller tier');
cmp_ok($a_folded, '>=', $N - $capacity, 'A: at least the hits of callers past max_entries were folded');

my $a_api_sql = qq{
	SELECT (extract(epoch FROM bucket - $base) / 60)::int || '|' || path, sum(calls), sum(ok), sum(server_errors)
	FROM %s WHERE path LIKE '/a/%%' GROUP BY bucket, path ORDER BY bucket, path COLLATE "C"};
is(q1(qq{SELECT (extract(epoch FROM bucket - $base) / 60)::int || '|' || path || '|' || calls
		FROM apicount.live WHERE tier = 'api' AND path LIKE '/a/%' ORDER BY bucket, path COLLATE "C"}),
	join("\n", map { "$_|$a_exp{$_}[0]" } sort keys %a_exp),
	'A, before the flush: the API tier of apicount.live holds every (minute, path) exactly');

# a caller with an entry keeps counting under its own name while the caller tier is full
my ($rehit_path, $rehit_ip, $rehit_min) = split /\|/, q1(qq{
	SELECT path, host(client_ip), (extract(epoch FROM bucket - $base) / 60)::int
	FROM apicount.live WHERE tier = 'caller' AND path LIKE '/a/%' AND client_ip IS NOT NULL
	ORDER BY client_ip LIMIT 1});
like($rehit_path, qr{^/a/p\d+$}, "A: a named caller entry exists ($rehit_ip on $rehit_path)");
q1(qq{INSERT INTO apicount.requests (ts, path, client_ip, status)
	SELECT $base + $rehit_min * interval '1 minute' + interval '30 seconds', '$rehit_path', '$rehit_ip', 200
	FROM generate_series(1, 5)});
a_add($rehit_min, $rehit_path, 5, 1);
$sent += 5;
is(q1('SELECT folded_calls || \'|\' || overflow_hits FROM apicount.stats'), "$a_folded|0",
	'A: hits of an existing caller are not folded');

# callers() adds up to each path's hits, its '(other callers)' row holding the rest; top_callers
# leaves that row out
my %a_path;
$a_path{ (split /\|/, $_)[1] } += $a_exp{$_}[0] for keys %a_exp;
my $range = "$base - interval '1 minute', $base + interval '3 minutes'";
is(q1(qq{SELECT p || '|' || (SELECT sum(calls) FROM apicount.callers(p, $range))
		FROM unnest(ARRAY[} . join(',', map { "'$_'" } sort keys %a_path) . q{]) p ORDER BY p COLLATE "C"}),
	join("\n", map { "$_|$a_path{$_}" } sort keys %a_path),
	'A, before the flush: callers(path) rows add up to the hits of each path');
is(q1(qq{SELECT count(*) FILTER (WHERE client_ip IS NULL AND user_id = '(other callers)') || '|' ||
		       count(*) FILTER (WHERE client_ip IS NULL AND user_id = '(other callers)' AND calls > 1)
		FROM apicount.callers('/a/p2', $range)}),
	'1|1', "A, before the flush: callers() shows one '(other callers)' row");
is(q1(qq{SELECT count(*) FILTER (WHERE client_ip IS NULL) || '|' || count(*) || '|' ||
		       (count(*) = (SELECT count(*) FROM apicount.live
		                    WHERE tier = 'caller' AND path = '/a/p2' AND client_ip IS NOT NULL))
		FROM apicount.top_callers(100000, interval '1 hour', '/a/p2', 'ip')}),
	'0|' . q1("SELECT count(*) FROM apicount.live WHERE tier = 'caller' AND path = '/a/p2'") . '|true',
	"A, before the flush: top_callers shows the named callers only, not '(other callers)'");

my $failures0 = q1('SELECT flush_failures FROM apicount.stats');
my ($fret, $fout, $ferr) = $node->psql('postgres', 'SELECT apicount.flush()');
is($fret, 0, 'A: flush() succeeds') or diag($ferr);
is(q1('SELECT flush_failures FROM apicount.stats'), $failures0, 'A: flush_failures unchanged');

is(q1(sprintf($a_api_sql, 'apicount.api_minute')), truth_text(\%a_exp),
	'A: api_minute per (minute, path) equals the truth exactly (calls, ok, server_errors)');
is(q1("SELECT count(*) FROM apicount.api_minute WHERE path = '(other)' OR method = '*'"), '0',
	"A: no '(other)' row in api_minute");
is(q1(qq{SELECT count(*) FROM apicount.caller_minute
		WHERE client_ip IS NOT NULL
		  AND NOT (client_ip - '10.8.0.0'::inet BETWEEN 1 AND $N
		           AND path = '/a/p' || ((client_ip - '10.8.0.0'::inet) % 20)
		           AND bucket = $base + ((client_ip - '10.8.0.0'::inet) % 3) * interval '1 minute'
		           AND calls = CASE WHEN client_ip = '$rehit_ip' THEN 6 ELSE 1 END)}),
	'0', 'A: every named caller_minute row is an inserted (minute, path, IP) with the right calls');
is(q1('SELECT count(*) FROM apicount.caller_minute WHERE client_ip IS NOT NULL'),
	$capacity - 1, 'A: named caller rows = max_entries minus the one of the user hit');
is(q1(qq{SELECT count(*) FROM apicount.caller_minute c
		WHERE client_ip IS NULL AND user_id IS DISTINCT FROM '(other callers)'}),
	'0', "A: every caller row without an IP is an '(other callers)' row");
is(q1(qq{SELECT count(*) FROM apicount.api_minute a
		FULL JOIN (SELECT bucket, method, path, sum(calls) AS calls, sum(ok) AS ok,
		                  sum(server_errors) AS se, count(*) FILTER (WHERE client_ip IS NULL) AS others
		           FROM apicount.caller_minute GROUP BY 1, 2, 3) c USING (bucket, method, path)
		WHERE a.calls IS DISTINCT FROM c.calls OR a.ok IS DISTINCT FROM c.ok
		   OR a.server_errors IS DISTINCT FROM c.se OR c.others > 1}),
	'0', "A: per (minute, API) the caller rows, at most one '(other callers)' row, add up to api_minute");
is(q1(qq{SELECT sum(calls) FROM apicount.caller_minute WHERE user_id = '(other callers)'}),
	$a_folded + 1, "A: the '(other callers)' rows hold folded_calls + the user's own hit");
is(q1(qq{SELECT calls > 1 FROM apicount.caller_minute
		WHERE bucket = $base + interval '1 minute' AND path = '/a/p1' AND client_ip IS NULL}),
	't', "A: the user's '(other callers)' hit and the folded callers of its API are one row");

is(q1('SELECT entries || \'|\' || api_entries || \'|\' || caller_entries FROM apicount.stats'),
	'0|0|0', 'A: the flush freed every (idle, old) entry');

# ---- Part B: an API flood ---------------------------------------------------------------------
# formula: minute 3 + g % 3, method POST when g % 10 = 0 else GET, status 503 when g % 4 = 0
my (%b_min, %b_mm);    # minute -> [calls, ok, se]; "minute|method" -> [calls, ok, se]
sub b_add
{
	my ($g, $n) = @_;
	my $m = 3 + $g % 3;
	my $meth = $g % 10 == 0 ? 'POST' : 'GET';
	for my $e ($b_min{$m} //= [ 0, 0, 0 ], $b_mm{"$m|$meth"} //= [ 0, 0, 0 ])
	{
		$e->[0] += $n;
		if ($g % 4 == 0) { $e->[2] += $n } else { $e->[1] += $n }
	}
}
my $b_sel = "$base + (3 + g % 3) * interval '1 minute' + (g % 60) * interval '1 second',
	CASE WHEN g % 10 = 0 THEN 'POST' ELSE 'GET' END, '/p/n' || g, '10.9.0.1',
	CASE WHEN g % 4 = 0 THEN 503 ELSE 200 END";
for my $t (0 .. 3)
{
	my ($lo, $hi) = (1 + $t * 5000, ($t + 1) * 5000);
	my ($ret, $out, $err) = $node->psql('postgres', qq{
		INSERT INTO apicount.requests (ts, method, path, client_ip, status)
		SELECT $b_sel FROM generate_series($lo, $hi) g;});
	is($ret, 0, "B: transaction $t (hits $lo..$hi, one new path each) succeeds") or diag($err);
}
b_add($_, 1) for 1 .. $N;
$sent += $N;

my ($b_api, $b_callers, $b_reserve, $ovh, $entries) = split /\|/,
  q1('SELECT api_entries, caller_entries, entries - api_entries - caller_entries, overflow_hits, entries FROM apicount.stats');
cmp_ok($ovh, '>', 0, "B: stats.overflow_hits > 0 ($ovh)");
is($b_api, $api_capacity, 'B: the API tier is full (api_entries = max_apis)');
is($b_reserve, '6', "B: the reserve holds one (method, '(other)') entry per minute and method (3 x 2)");
cmp_ok($b_callers, '<=', $capacity, "B: caller_entries $b_callers <= max_entries");
cmp_ok($entries, '<=', $capacity + $api_capacity + 1024,
	'B: stats.entries <= max_entries + max_apis + the reserve (1024)');
is(q1(q{SELECT string_agg(DISTINCT method, ',' ORDER BY method) FROM apicount.live
		WHERE tier = 'api' AND path = '(other)'}),
	'GET,POST', "B: the '(other)' entries keep their method; no '*' catch-all");

# an API that has an entry keeps counting under its own name while the API tier is full
my $live_key = q1(qq{
	SELECT path FROM apicount.live
	WHERE tier = 'api' AND method = 'GET' AND path LIKE '/p/n%' AND bucket = $base + interval '4 minutes'
	ORDER BY path LIMIT 1});
like($live_key, qr{^/p/n\d+$}, 'B: a named API entry exists for an inserted path');
my ($g_of_key) = $live_key =~ m{^/p/n(\d+)$};
is(3 + $g_of_key % 3, 4, 'B: that entry is in the minute its hit was sent to');
q1(qq{INSERT INTO apicount.requests (ts, path, client_ip, status)
	SELECT $base + interval '4 minutes 30 seconds', '$live_key', '10.9.0.1', 200
	FROM generate_series(1, 5)});
$b_min{4}[0] += 5;
$b_min{4}[1] += 5;
$b_mm{'4|GET'}[0] += 5;
$b_mm{'4|GET'}[1] += 5;
$sent += 5;
is(q1('SELECT overflow_hits FROM apicount.stats'), $ovh, 'B: hits on an existing API do not overflow');

# query functions see the '(other)' entries while they are only in shared memory
my $b_range = "$base + interval '3 minutes', $base + interval '6 minutes'";
is(q1("SELECT string_agg(method || ' ' || path, ',' ORDER BY method) || '|' || sum(calls) FROM apicount.top_apis(2, $b_range)"),
	"GET (other),POST (other)|$ovh",
	"B, before the flush: top_apis ranks the two '(other)' entries first with stats.overflow_hits calls");
is(q1("SELECT sum(calls) FROM apicount.top_apis(100000, $b_range)"),
	$N + 5, 'B, before the flush: top_apis over all rows sums to ' . ($N + 5));

q1('SELECT apicount.flush()');

my $b_min_sql = qq{
	SELECT (extract(epoch FROM bucket - $base) / 60)::int, sum(calls), sum(ok), sum(server_errors)
	FROM %s WHERE bucket BETWEEN $base + interval '3 minutes' AND $base + interval '5 minutes'
	GROUP BY 1 ORDER BY 1};
is(q1(sprintf($b_min_sql, 'apicount.api_minute')), truth_text(\%b_min),
	'B: api_minute per minute calls/ok/server_errors equal the truth');
is(q1(qq{SELECT (extract(epoch FROM bucket - $base) / 60)::int || '|' || method, sum(calls), sum(ok), sum(server_errors)
		FROM apicount.api_minute WHERE bucket BETWEEN $base + interval '3 minutes' AND $base + interval '5 minutes'
		GROUP BY bucket, method ORDER BY bucket, method COLLATE "C"}),
	truth_text(\%b_mm), 'B: api_minute per (minute, method) equals the truth');
is(q1(sprintf($b_min_sql, 'apicount.caller_minute')), truth_text(\%b_min),
	'B: caller_minute per minute totals equal the truth');
my ($ovf_rows, $ovf_calls, $ovf_keys) = split /\|/, q1(qq{
	SELECT count(*), coalesce(sum(calls), 0), count(DISTINCT (bucket, method))
	FROM apicount.api_minute WHERE path = '(other)'});
is("$ovf_rows|$ovf_keys", '6|6', "B: one '(other)' row per minute and method");
is($ovf_calls, $ovh, "B: the '(other)' rows hold exactly stats.overflow_hits calls");
is(q1("SELECT count(*) FROM apicount.api_minute WHERE method = '*'"), '0', "B: no '*' row");
is(q1(qq{SELECT count(*) FROM apicount.api_minute
		WHERE bucket BETWEEN $base + interval '3 minutes' AND $base + interval '5 minutes'
		  AND path <> '(other)'
		  AND NOT (path ~ '^/p/n[0-9]+\$' AND substr(path, 5)::int BETWEEN 1 AND $N
		           AND bucket = $base + (3 + substr(path, 5)::int % 3) * interval '1 minute'
		           AND method = CASE WHEN substr(path, 5)::int % 10 = 0 THEN 'POST' ELSE 'GET' END
		           AND calls = CASE WHEN path = '$live_key' THEN 6 ELSE 1 END)}),
	'0', 'B: every named api_minute row is an inserted path, in its minute, with its method and calls');
my $named = q1(qq{SELECT count(*) FROM apicount.api_minute
	WHERE bucket BETWEEN $base + interval '3 minutes' AND $base + interval '5 minutes' AND path <> '(other)'});
is($named, $api_capacity, "B: named rows ($named) = max_apis");
is($named + $ovf_calls, $N, 'B: named rows + (other) calls = the distinct paths inserted');

is(q1('SELECT entries FROM apicount.stats'), '0', 'B: the flush freed every (idle, old) entry');

# ---- Part C: recovery after the flush freed the idle (old) entries ----------------------------
my $R = 80;
q1(qq{INSERT INTO apicount.requests (ts, path, status)
	SELECT $base + interval '6 minutes', '/recovered/r' || g, 200 FROM generate_series(1, $R) g});
$sent += $R;
is(q1('SELECT overflow_hits FROM apicount.stats'), $ovh,
	"C: $R new distinct paths after the flush do not overflow");
q1('SELECT apicount.flush()');
is(q1(qq{SELECT count(*) || '|' || sum(calls) FROM apicount.api_minute
		WHERE path LIKE '/recovered/r%' AND bucket = $base + interval '6 minutes'}),
	"$R|$R", "C: the $R new paths are flushed under their own names");
is(q1('SELECT sum(calls) FROM apicount.api_minute'), $sent, "C: api_minute total is exactly $sent");

# ---- Part D: the reserve exhausted --------------------------------------------------------------
# minute M (1,300 minutes before $base) gets its catch-all by a hit that names it; the API tier
# is filled with 100 paths of minute 7; then 1,100 new paths, one in each of the minutes
# $base - 101 .. $base - 1200 minutes, need 1,100 (GET, '(other)') entries, and 1,023 fit.
my $M = "$base - interval '1300 minutes'";
my $M2 = "$base - interval '1400 minutes'";
is(q1('SELECT entries FROM apicount.stats'), '0', 'D: no entry left before the part');
my ($ovh0, $failures1) = split /\|/, q1('SELECT overflow_hits, flush_failures FROM apicount.stats');
q1("INSERT INTO apicount.requests (ts, method, path, status) VALUES ($M + interval '5 seconds', '*', '(other)', 200)");
q1(qq{INSERT INTO apicount.requests (ts, path, client_ip, status)
	SELECT $base + interval '7 minutes', '/d/fill' || g, '10.7.0.1', 200 FROM generate_series(1, $api_capacity) g});
is(q1($reserve_sql) . '|' . q1('SELECT api_entries FROM apicount.stats'), "1|$api_capacity",
	"D: the reserve holds M's catch-all; the API tier is full");
my $D = 1100;
my ($ret, $out, $err) = $node->psql('postgres', qq{
	INSERT INTO apicount.requests (ts, path, client_ip, status)
	SELECT $base - (100 + g) * interval '1 minute', '/d/x' || g, '10.7.0.2', 200
	FROM generate_series(1, $D) g});
is($ret, 0, "D: $D hits in $D minutes, each on a new path, succeed") or diag($err);
is(q1($reserve_sql), '1024', 'D: the reserve is full (1,024 entries)');
q1("INSERT INTO apicount.requests (ts, path, client_ip, status) VALUES ($M + interval '10 seconds', '/d/m', '10.7.0.3', 200)");
q1("INSERT INTO apicount.requests (ts, path, client_ip, status) VALUES ($M2, '/d/m2', '10.7.0.3', 200)");
$sent += 1 + $api_capacity + $D + 2;
is(q1('SELECT overflow_hits FROM apicount.stats') - $ovh0, 1 + $D + 2,
	"D: every hit of the part past the full API tier is counted under an '(other)' path");

my $flush_minute = q1("SELECT date_trunc('minute', now())");
($ret, $out, $err) = $node->psql('postgres', 'SELECT apicount.flush()');
is($ret, 0, 'D: flush() succeeds') or diag($err);
my $flush_minute2 = q1("SELECT date_trunc('minute', now())");
is(q1('SELECT flush_failures FROM apicount.stats'), $failures1, 'D: flush_failures unchanged');

my $spilled = $D - 1023 + 1;
is(q1(qq{SELECT count(*) || '|' || count(*) FILTER (WHERE method = 'GET' AND path = '(other)' AND calls = 1)
		FROM apicount.api_minute
		WHERE bucket BETWEEN $base - interval '1200 minutes' AND $base - interval '101 minutes'}),
	'1023|1023', "D: 1,023 flood minutes have a 'GET' '(other)' row of 1 call, the others none");
is(q1("SELECT string_agg(method || ' ' || path || ' ' || calls, ',') FROM apicount.api_minute WHERE bucket = $M"),
	'* (other) 2', "D: minute M's hit is counted under M's catch-all (the reserve is full)");
is(q1("SELECT count(*) FROM apicount.api_minute WHERE bucket = $M2"), '0',
	'D: the hit of a minute without a catch-all found no room there');
is(q1(qq{SELECT sum(calls) FROM apicount.api_minute
		WHERE method = '*' AND path = '(other)' AND bucket BETWEEN '$flush_minute' AND '$flush_minute2'}),
	$spilled, "D: the $spilled hits that found no room are written under '*' '(other)' of the flush's minute");
is(q1(qq{SELECT sum(calls) FROM apicount.caller_minute
		WHERE method = '*' AND path = '(other)' AND client_ip IS NULL AND user_id = '(other callers)'
		  AND bucket BETWEEN '$flush_minute' AND '$flush_minute2'}),
	$spilled, "D: and as the '(other callers)' row of that API");

# ---- the whole of both rollups ------------------------------------------------------------------
is(q1(qq{SELECT count(*) FROM apicount.api_minute a
		FULL JOIN (SELECT bucket, method, path, sum(calls) AS calls, sum(ok) AS ok,
		                  sum(client_errors) AS ce, sum(server_errors) AS se
		           FROM apicount.caller_minute GROUP BY 1, 2, 3) c USING (bucket, method, path)
		WHERE a.calls IS DISTINCT FROM c.calls OR a.ok IS DISTINCT FROM c.ok
		   OR a.client_errors IS DISTINCT FROM c.ce OR a.server_errors IS DISTINCT FROM c.se}),
	'0', 'caller_minute adds up to api_minute per (minute, method, path), everywhere');
is(q1('SELECT sum(calls) FROM apicount.api_minute'), $sent, "api_minute total is every hit sent ($sent)");

$node->stop('fast');
done_testing();
