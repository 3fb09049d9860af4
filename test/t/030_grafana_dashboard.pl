# 030_grafana_dashboard.pl — runs every query of grafana/dashboards/apicount.json, expanded the
# way Grafana expands it (test/perl/GrafanaMacros.pm, itself checked by 031_grafana_macros.pl),
# as a LOGIN role that only has apicount_reader, and checks the answers against figures
# computed here in Perl from the generated traffic.
#
# Traffic (deterministic generator, 13 APIs, 30 client IPs plus hits without IP or user):
#   - history: 20 whole minutes before the setup minute, 5..123 calls per API and minute, some
#     4xx/5xx and NULL statuses, log-normal latencies (some NULL), plus a burst of 350 calls
#     from 203.0.113.77 to GET /api/v1/export 7 minutes back; then apicount.flush();
#   - live (never flushed while the dashboard is read; apicount.flush_interval = '1h'): hits
#     in the current minute, late hits into the previous (already flushed) minute, and 400
#     calls in 2.4 s from 203.0.113.66 to GET /api/v1/export (40 of them 403) that fire the
#     rule 'scraper' (per ip, threshold 300, window 1 minute);
#   - hand-written alerts: two inside the range, one exactly at its start (BETWEEN includes
#     it), one 1 ms before it and one 40 minutes back (both outside).
# Time range: from = 20 minutes before the setup minute + 17 s (so minute ranges start at the
# whole minute, alert filters at the exact instant), to = 1 s after the alert was seen; both in
# milliseconds as Grafana sends them.  Variables: path = All (the values returned by the
# dashboard's own variable query) and a subset of 4 paths including one with a quote;
# $__interval = 1m and 5m; window = every option of the custom variable; threshold = 300.
# Every query runs in a transaction that also returns now(), so sliding windows are computed
# here for that instant, with the documented rules (README "Windows"): <= 2 minutes: the
# ceil(since / 5 s) slots up to now()'s slot, ts <= now(), latency averaged over the minutes
# the window overlaps; longer: minute buckets from date_trunc('minute', now() - since) up to
# now(); ranges: buckets in [date_trunc('minute', from), to).  Percentiles are compared with
# the exact percentile_disc (rank ceil(p * N)) of the generated latencies, within 2 %.
# Checks:
#   - the JSON has the required panels, variables, annotation, refresh, min interval, data
#     source uid (the provisioned one), no SQL comments, and reads no raw rollup table;
#   - every panel target, variable query and annotation query runs without error, and every
#     one of them is exercised and checked (counted against the JSON);
#   - time_series targets return a "time" column in ascending order;
#   - values: requests/s and error ratio per API and group, the 10 busiest / most failing
#     APIs, p50/p95/p99, totals, top APIs, top callers, hot callers, alerts, annotations;
#   - live data: before and after the run the live hits are all unflushed (in both tiers) and no rollup row
#     exists for the current minute, and the requests/s panel over the current minute alone
#     returns exactly the live hits; after apicount.flush() every query is run and checked
#     again.
use strict;
use warnings;
use FindBin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use JSON::PP;
use POSIX qw(floor ceil);
use List::Util qw(min max any);
use Time::Local qw(timegm_posix);
use Time::HiRes qw(usleep);
use ApicountTest qw(wait_for);
use GrafanaMacros qw(expand strip_sql_comments);

my $ROOT = $ENV{APICOUNT_ROOT} // "$FindBin::Bin/../..";
my $READER = 'grafana_reader';
my $SLOT_US = 5_000_000;

# ------------------------------------------------------------------ dashboard structure
sub slurp { open(my $fh, '<', $_[0]) or die "$_[0]: $!"; local $/; return scalar <$fh>; }

my $dash = decode_json(slurp("$ROOT/grafana/dashboards/apicount.json"));
my $ds_yaml = slurp("$ROOT/grafana/provisioning/datasources/apicount.yaml");
my $prov_yaml = slurp("$ROOT/grafana/provisioning/dashboards/apicount.yaml");

my @panels;
my $walk;
$walk = sub { for my $p (@_) { push @panels, $p; $walk->(@{ $p->{panels} // [] }); } };
$walk->(@{ $dash->{panels} // [] });

# every query of the dashboard: panel targets, annotation queries, variable queries
my @queries;
for my $p (@panels)
{
	for my $t (@{ $p->{targets} // [] })
	{
		push @queries, { key => "panel $p->{id} $t->{refId}", kind => 'panel', title => $p->{title},
			format => $t->{format} // 'time_series', sql => $t->{rawSql}, ds => $t->{datasource} // $p->{datasource} };
	}
}
for my $a (@{ $dash->{annotations}{list} // [] })
{
	next if $a->{builtIn};
	# grafana-sql migrateAnnotation: a legacy string rawQuery wins over target.rawSql
	my $sql = (defined $a->{rawQuery} && !ref $a->{rawQuery}) ? $a->{rawQuery} : $a->{target}{rawSql};
	push @queries, { key => "annotation $a->{name}", kind => 'annotation', title => $a->{name},
		format => 'table', sql => $sql, ds => $a->{datasource} };
}
my %var_def;
for my $v (@{ $dash->{templating}{list} // [] })
{
	$var_def{ $v->{name} } = $v;
	next unless $v->{type} eq 'query';
	my $sql = ref $v->{query} ? ($v->{query}{rawSql} // $v->{query}{query}) : $v->{query};
	push @queries, { key => "variable $v->{name}", kind => 'variable', title => $v->{name},
		format => 'table', sql => $sql, ds => $v->{datasource} };
}

my ($ds_uid) = $ds_yaml =~ /^\s*uid:\s*(\S+)/m;
ok(defined $ds_uid, 'the provisioned data source has a fixed uid');
for my $setting (qw(url user database sslmode password))
{
	like($ds_yaml, qr/^\s*$setting:.*\$__env\{\w+\}/m, "data source $setting comes from \$__env{...}");
}
like($ds_yaml, qr/^\s*url:\s*\$__env\{\w+\}:\$__env\{\w+\}/m, 'data source host and port from \$__env{...}');
like($ds_yaml, qr/^\s*type:\s*(postgres|grafana-postgresql-datasource)\b/m, 'data source type postgres');
like($ds_yaml, qr/^\s*postgresVersion:\s*1500\b/m, 'postgresVersion 1500');
like($ds_yaml, qr/^\s*timescaledb:\s*false\b/m, 'timescaledb false');
like($prov_yaml, qr/^\s*type:\s*file\b/m, 'dashboard provider of type file');
like($prov_yaml, qr/^\s*path:\s*\S+/m, 'dashboard provider names a folder');

is($dash->{refresh}, '5s', 'dashboard refresh 5s');
ok(($dash->{schemaVersion} // 0) >= 36, "schemaVersion $dash->{schemaVersion}");
my %want_panel = (
	'requests per second per API' => [ qr/^Requests per second per API/, 'timeseries' ],
	'error ratio per API' => [ qr/^Error ratio per API/, 'timeseries' ],
	'p50/p95/p99 latency' => [ qr/^Latency p50 \/ p95 \/ p99/, 'timeseries' ],
	'top 10 APIs' => [ qr/^Top 10 APIs/, 'table' ],
	'top callers' => [ qr/^Top 10 callers/, 'table' ],
	'hot callers' => [ qr/^Hot callers/, 'table' ],
	'recent alerts' => [ qr/^Recent alerts/, 'table' ]);
for my $w (sort keys %want_panel)
{
	my ($re, $type) = @{ $want_panel{$w} };
	my @m = grep { $_->{title} =~ $re && $_->{type} eq $type } @panels;
	is(scalar @m, 1, "one $type panel for $w");
}
for my $p (grep { $_->{type} eq 'timeseries' } @panels)
{
	is($p->{interval}, '1m', "time series '$p->{title}': min interval 1m");
	is($_->{format}, 'time_series', "time series '$p->{title}' $_->{refId}: format time_series")
	  for @{ $p->{targets} };
}
ok((any { $_->{kind} eq 'annotation' && $_->{sql} =~ /\bapicount\.alerts\b/ } @queries),
	'an annotation query reads apicount.alerts');
my $pv = $var_def{path};
ok($pv && $pv->{type} eq 'query' && $pv->{multi} && $pv->{includeAll} && ($pv->{refresh} // 0) == 2,
	'variable path: query, multi-value, include All, refreshed on time range change');
like($pv->{query}, qr/apicount\.minutes\(/, 'variable path reads apicount.minutes() (flushed + live)');
is($pv->{allValue}, 'NULL', 'variable path: "All" is NULL (every path), not the list of every path');
for my $q (grep { $_->{kind} eq 'panel' && $_->{sql} =~ /\$path\b/ } @queries)
{
	unlike($q->{sql}, qr/WHERE\s+path\s*=\s*ANY/i, "$q->{key}: passes \$path into the functions, does not filter their output");
	like($q->{sql}, qr/nullif\(ARRAY\[\$path\]::text\[\], '\{NULL\}'\)/, "$q->{key}: \$path goes in as a text[] filter (NULL for All)");
}
for my $q (grep { ($_->{format} // '') eq 'time_series' && $_->{sql} =~ /apicount\.minutes\(/ } @queries)
{
	like($q->{sql}, qr/apicount\.minutes\(\$__timeFrom\(\), \$__timeTo\(\), \$__interval_ms \* interval '1 millisecond'/,
		"$q->{key}: minutes() gets \$__interval as its step (the step picks the tier)");
}
my $wv = $var_def{window};
my @window_opts = map { s/^\s+|\s+$//gr } ($wv->{query} =~ /(?:\\,|[^,])+/g);
is_deeply(\@window_opts, [qw(1m 5m 15m 1h)], 'variable window: custom 1m,5m,15m,1h');
is_deeply([ map { $_->{value} } @{ $wv->{options} } ], \@window_opts, 'window options match its query');
ok(!$wv->{multi} && !$wv->{includeAll}, 'window is single-valued');
ok($var_def{threshold}, 'variable threshold (hot callers) exists');
for my $q (@queries)
{
	is($q->{ds}{uid}, $ds_uid, "$q->{key}: data source uid $ds_uid");
	is(strip_sql_comments($q->{sql}), $q->{sql},
		"$q->{key}: no SQL comments (same text for Grafana versions that strip them and those that do not)");
	unlike($q->{sql}, qr/\b(api_minute|api_hour|caller_minute)\b/,
		"$q->{key}: reads apicount's functions, not a raw rollup table");
}
like($_->{sql}, qr/\bapicount\.(minutes|series|top_apis|top_callers|hot_callers|latency_percentiles)\(|\bapicount\.alerts\b/,
	"$_->{key}: reads flushed + live data through apicount's functions (or the alerts table)")
  for @queries;

# ------------------------------------------------------------------ server
my $node = PostgreSQL::Test::Cluster->new('grafana');
$node->init;
$node->append_conf('postgresql.conf',
	"shared_preload_libraries = 'apicount'\n"
	  . "apicount.flush_interval = '1h'\n"    # flushes only when the test asks
	  . "log_statement = none\n"
	  . "timezone = 'UTC'\n");
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION apicount');
$node->safe_psql('postgres', "CREATE ROLE $READER LOGIN; GRANT apicount_reader TO $READER;");

my @needed = ('apicount.minutes(timestamptz,timestamptz,interval,text[],text,boolean)', 'apicount.latency_merge(bytea)',
	'apicount.latency_percentile(bytea,double precision)',
	'apicount.top_apis(integer,timestamptz,timestamptz,text[],text)',
	'apicount.latency_percentiles(text,timestamptz,timestamptz,double precision[],text,text[])');
for my $f (@needed)
{
	my $have = $node->safe_psql('postgres', "SELECT to_regprocedure('$f') IS NOT NULL");
	ok($have eq 't', "installed extension has $f") or diag('the queries that use it will fail');
}

sub sql { return $node->safe_psql('postgres', $_[0]); }
sub now_us { return sql('SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint'); }

sub ts_text
{
	my ($us) = @_;
	my $s = floor($us / 1_000_000);
	my @t = gmtime($s);
	return sprintf('%04d-%02d-%02d %02d:%02d:%02d.%06d+00', $t[5] + 1900, $t[4] + 1, @t[ 3, 2, 1, 0 ],
		$us - $s * 1_000_000);
}

# timestamptz as psql prints it in UTC -> microseconds (Time::Local, not the module's code)
sub parse_ts
{
	my ($t) = @_;
	return undef unless defined $t;
	$t =~ /^(\d{4})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d)(?:\.(\d+))?\+00$/ or die "bad timestamp $t";
	my $frac = substr(($7 // '') . '000000', 0, 6);
	return timegm_posix($6, $5, $4, $3, $2 - 1, $1 - 1900) * 1_000_000 + $frac;
}

# a "time" value: epoch seconds (from $__timeGroupAlias) or a timestamptz -> epoch seconds
sub tsec
{
	my ($t) = @_;
	return undef unless defined $t;
	return $t =~ /^-?[\d.]+(?:e[-+]?\d+)?$/i ? 0 + $t : parse_ts($t) / 1_000_000;
}

# ------------------------------------------------------------------ traffic generator
my $seed = 20261124;
sub rnd { $seed = (1103515245 * $seed + 12345) % 2147483648; return $seed / 2147483648; }
sub gauss { my $u = rnd() || 1e-9; return sqrt(-2 * log($u)) * cos(6.283185307179586 * rnd()); }

# method, path, calls per minute, median latency (ms), 4xx share, 5xx share
my @APIS = (
	[ 'GET', '/api/v1/users', 120, 4, 0.02, 0.01 ],
	[ 'GET', '/api/v1/users/:id', 104, 6, 0.10, 0.01 ],
	[ 'POST', '/api/v1/orders', 90, 40, 0.05, 0.04 ],
	[ 'GET', '/api/v1/orders', 77, 25, 0.01, 0.02 ],
	[ 'GET', '/api/v1/orders/:id', 65, 12, 0.08, 0.00 ],
	[ 'GET', '/api/v1/search', 54, 80, 0.00, 0.06 ],
	[ 'POST', '/login', 44, 30, 0.40, 0.01 ],
	[ 'GET', '/api/v1/export', 35, 400, 0.03, 0.10 ],
	[ 'GET', "/api/v1/o'reilly", 27, 15, 0.05, 0.05 ],
	[ 'PUT', '/api/v1/cart', 20, 20, 0.15, 0.02 ],
	[ 'GET', '/health', 14, 0.8, 0.00, 0.00 ],
	[ 'GET', '/api/v2/reports', 9, 900, 0.00, 0.20 ],
	[ 'DELETE', '/api/v1/users/:id', 5, 10, 0.30, 0.00 ]);
my %API_BY = map { ("$_->[0] $_->[1]" => $_) } @APIS;

my @hits;    # { ts, b (bucket, epoch s), m, p, st, lat, ip, uid, live }

sub make_hit
{
	my ($api, $ts, %o) = @_;
	my ($m, $p, undef, $med, $p4, $p5) = @$api;
	my $u = rnd();
	my $st = $o{status};
	if (!exists $o{status})
	{
		$st = $u < 0.03 ? undef
		  : $u < 0.03 + $p4 ? (401, 403, 404, 429)[ int(rnd() * 4) ]
		  : $u < 0.03 + $p4 + $p5 ? (500, 502, 503)[ int(rnd() * 3) ]
		  : (200, 200, 200, 201, 204, 302)[ int(rnd() * 6) ];
	}
	my $lat;
	if (rnd() >= 0.03)
	{
		my $v = $med * exp(0.7 * gauss());
		$v = 0.5 if $v < 0.5;
		$v = 60000 if $v > 60000;
		$lat = sprintf('%.3f', $v) + 0;
	}
	my $ip = $o{ip} // (rnd() < 0.05 ? undef : '198.51.100.' . (1 + int(30 * rnd()**2)));
	my $uid = rnd() < 0.25 ? undef : 'user' . (1 + int(50 * rnd()**1.5));
	my $h = { ts => $ts, b => 60 * floor($ts / 60_000_000), m => $m, p => $p, st => $st,
		lat => $lat, ip => $ip, uid => $uid, live => $o{live} ? 1 : 0 };
	push @hits, $h;
	return $h;
}

sub lit { my ($v) = @_; return 'NULL' unless defined $v; $v =~ s/'/''/g; return "'$v'"; }

sub insert_hits
{
	my @rows = map {
		sprintf("('%s',%s,%s,%s,%s,%s,%s)", ts_text($_->{ts}), lit($_->{m}), lit($_->{p}),
			$_->{st} // 'NULL', $_->{lat} // 'NULL', lit($_->{ip}), lit($_->{uid}))
	} @_;
	sql('INSERT INTO apicount.requests (ts, method, path, status, latency_ms, client_ip, user_id) '
		  . 'SELECT v.ts::timestamptz, v.m, v.p, v.st::int, v.lat::float8, v.ip::inet, v.uid FROM (VALUES '
		  . join(',', @rows) . ') v(ts, m, p, st, lat, ip, uid)');
}

# ---- history
my $t_setup = now_us();
my $Bh = 60_000_000 * floor($t_setup / 60_000_000);    # setup minute, microseconds
my @history;
for my $k (reverse 1 .. 20)
{
	my $bucket = $Bh - $k * 60_000_000;
	for my $api (@APIS)
	{
		my $n = $api->[2] + int(rnd() * 4);
		push @history, make_hit($api, $bucket + int(rnd() * 60_000_000)) for 1 .. $n;
	}
}
push @history, make_hit($API_BY{'GET /api/v1/export'}, $Bh - 7 * 60_000_000 + 5_000_000 + $_ * 50_000,
	ip => '203.0.113.77', status => 200) for 0 .. 349;
sql("INSERT INTO apicount.rules (name, path_pattern, method, per, threshold, \"window\", cooldown) "
	  . "VALUES ('scraper', '/api/v1/export', NULL, 'ip', 300, '1 minute', '1 hour')");
insert_hits(@history);
sql('SELECT apicount.flush()');
is(sql('SELECT coalesce(sum(unflushed), 0) FROM apicount.live'), '0', 'history is flushed');
is(sql('SELECT sum(calls) FROM apicount.api_minute'), scalar(@history), 'history is in api_minute');

# ---- hand-written alerts
my $from_ms = ($Bh - 20 * 60_000_000 + 17_000_000) / 1000;
my @manual = (
	{ rule => 'manual_in_a', fired => $Bh - 12 * 60_000_000 + 5_250_000, m => 'GET', p => '/api/v1/search',
		ip => '198.51.100.9', uid => undef, calls => 500, errors => 3 },
	{ rule => 'manual_in_b', fired => $Bh - 3 * 60_000_000, m => 'POST', p => '/login', ip => undef,
		uid => 'mallory', calls => 120, errors => 100 },
	{ rule => 'manual_edge', fired => $from_ms * 1000, m => undef, p => '/api/v1/cart', ip => '198.51.100.2',
		uid => 'bob', calls => 77, errors => 0 },
	{ rule => 'manual_before', fired => $from_ms * 1000 - 1000, m => 'GET', p => '/health', ip => '198.51.100.3',
		uid => undef, calls => 10, errors => 1 },
	{ rule => 'manual_old', fired => $Bh - 40 * 60_000_000, m => 'GET', p => '/health', ip => '198.51.100.4',
		uid => undef, calls => 11, errors => 2 });
for my $a (@manual)
{
	$a->{ws} = $a->{fired} - 60_000_000;
	$a->{we} = $a->{fired};
	sql(sprintf("INSERT INTO apicount.alerts (fired_at, rule, method, path, client_ip, user_id, calls, errors, "
		  . "window_start, window_end) VALUES ('%s', %s, %s, %s, %s, %s, %d, %d, '%s', '%s')",
		ts_text($a->{fired}), lit($a->{rule}), lit($a->{m}), lit($a->{p}), lit($a->{ip}), lit($a->{uid}),
		$a->{calls}, $a->{errors}, ts_text($a->{ws}), ts_text($a->{we})));
}

# ---- live hits (never flushed while the dashboard is read)
my $t1 = now_us();
if ($t1 % 60_000_000 < 3_000_000)
{
	usleep(3_000_000 - $t1 % 60_000_000 + 100_000);    # room for a spread inside the minute
	$t1 = now_us();
}
my $B = 60_000_000 * floor($t1 / 60_000_000);
my @live;
for my $api (@APIS)
{
	my $n = int($api->[2] / 4) + int(rnd() * 3);
	push @live, make_hit($api, $B + int(rnd() * ($t1 - 100_000 - $B)), live => 1) for 1 .. $n;
}
for my $api (@APIS[ 0 .. 2 ])
{
	push @live, make_hit($api, $B - 60_000_000 + int(rnd() * 59_000_000), live => 1) for 1 .. 10;
}
my $scrape_t0 = $t1 - 2_500_000;
for my $i (0 .. 399)
{
	push @live, make_hit($API_BY{'GET /api/v1/export'}, $scrape_t0 + $i * 6_000, ip => '203.0.113.66',
		status => $i % 10 == 9 ? 403 : 200, live => 1);
}
my $live_commit_us = now_us();
insert_hits(@live);
ok(wait_for($node, "SELECT count(*) FROM apicount.alerts WHERE rule = 'scraper'", '1', 30),
	"rule 'scraper' fired for the live burst");
my $to_ms = floor(now_us() / 1000) + 1000;

sub live_state
{
	# every hit is once in the API tier and (tracked, the caller tier has room) once in the caller tier
	return sql("SELECT coalesce(sum(unflushed) FILTER (WHERE tier = 'api'), 0) || ' unflushed (caller tier '"
		  . " || coalesce(sum(unflushed) FILTER (WHERE tier = 'caller'), 0) || '), ' FROM apicount.live")
	  . sql("SELECT count(*) FROM apicount.api_minute WHERE bucket >= '" . ts_text($B) . "'")
	  . ' rollup rows for the current minute';
}
is(live_state(), scalar(@live) . ' unflushed (caller tier ' . scalar(@live) . '), 0 rollup rows for the current minute',
	'before reading the dashboard: every live hit is unflushed');

# ------------------------------------------------------------------ running queries
sub parse_csv
{
	my ($text) = @_;
	my (@recs, @rec);
	my ($i, $n) = (0, length $text);
	while ($i < $n)
	{
		my $v;
		if (substr($text, $i, 1) eq '"')
		{
			($v, $i) = ('', $i + 1);
			while ($i < $n)
			{
				my $d = substr($text, $i, 1);
				if ($d eq '"')
				{
					if ($i + 1 < $n && substr($text, $i + 1, 1) eq '"') { $v .= '"'; $i += 2; next; }
					$i++;
					last;
				}
				$v .= $d;
				$i++;
			}
		}
		else
		{
			my $j = $i;
			$j++ while $j < $n && substr($text, $j, 1) ne ',' && substr($text, $j, 1) ne "\n";
			$v = substr($text, $i, $j - $i);
			$v = undef if $v eq '<NULL>';    # \pset null <NULL>; an empty string stays ''
			$i = $j;
		}
		push @rec, $v;
		my $d = $i < $n ? substr($text, $i, 1) : "\n";
		$i++;
		if ($d eq "\n") { push @recs, [@rec]; @rec = (); }
	}
	return \@recs;
}

# run one expanded query as the reader, in a transaction that also returns now()
sub run_reader
{
	my ($sql) = @_;
	my $script = "\\pset null <NULL>\nBEGIN;\n"
	  . "SELECT (extract(epoch FROM now()) * 1000000)::bigint AS now_us;\n$sql\n;\nCOMMIT;\n";
	my ($out, $err) = ('', '');
	IPC::Run::run([ 'psql', '-X', '-q', '--csv', '-v', 'ON_ERROR_STOP=1', '-h', $node->host, '-p', $node->port,
			'-U', $READER, '-d', 'postgres', '-f', '-' ], '<', \$script, '>', \$out, '2>', \$err);
	return { error => $err || "psql exit $?" } if $?;
	my $recs = parse_csv($out);
	die "unexpected output: $out" unless @$recs >= 3 && $recs->[0][0] eq 'now_us';
	my $cols = $recs->[2];
	my @rows = map { my $r = $_; +{ map { ($cols->[$_] => $r->[$_]) } 0 .. $#$cols } } @$recs[ 3 .. $#$recs ];
	return { now => $recs->[1][0], cols => $cols, rows => \@rows };
}

# ------------------------------------------------------------------ expectations (Perl)
sub trunc_min_s { return 60 * floor($_[0] / 60_000_000); }    # microseconds -> minute (s)
sub is_err { return defined $_[0] && $_[0] >= 400; }

# hits of a minute range [date_trunc('minute', from), to), optionally of some paths
sub range_hits
{
	my ($c, $paths) = @_;
	my $b0 = trunc_min_s($c->{from_us});
	my %sel = map { ($_ => 1) } @{ $paths // [] };
	return grep { $_->{b} >= $b0 && $_->{b} * 1_000_000 < $c->{to_us} && (!$paths || $sel{ $_->{p} }) } @hits;
}

sub group_of { my ($h, $w) = @_; return $w * floor($h->{b} / $w); }

sub pct_disc
{
	my ($vals, $p) = @_;
	return undef unless @$vals;
	my @s = sort { $a <=> $b } @$vals;
	return $s[ ceil($p * @s) - 1 ];
}

# the hits of a window ending at now (README "Windows")
sub window_hits
{
	my ($since_s, $now) = @_;
	if ($since_s <= 120)
	{
		my $cur = floor($now / $SLOT_US);
		my $first = $cur - ceil($since_s * 1_000_000 / $SLOT_US) + 1;
		return grep { my $s = floor($_->{ts} / $SLOT_US); $s >= $first && $s <= $cur && $_->{ts} <= $now } @hits;
	}
	my $b0 = trunc_min_s($now - $since_s * 1_000_000);
	return grep { $_->{b} >= $b0 && $_->{b} * 1_000_000 <= $now } @hits;
}

# the minutes whose latency top_apis averages for a window
sub window_latency_hits
{
	my ($since_s, $now) = @_;
	my $b0;
	if ($since_s <= 120)
	{
		my $cur = floor($now / $SLOT_US);
		$b0 = trunc_min_s(($cur - ceil($since_s * 1_000_000 / $SLOT_US) + 1) * $SLOT_US);
	}
	else { $b0 = trunc_min_s($now - $since_s * 1_000_000); }
	return grep { $_->{b} >= $b0 && $_->{b} * 1_000_000 <= $now } @hits;
}

sub interval_s { my %u = (m => 60, h => 3600); $_[0] =~ /^(\d+)([mh])$/ or die; return $1 * $u{$2}; }

# ------------------------------------------------------------------ comparisons
sub close_to
{
	my ($got, $want, $rel) = @_;
	return !defined $got && !defined $want if !defined $got || !defined $want;
	return abs($got - $want) <= $rel * max(abs($want), 1e-12);
}

# compare { key => value or [values] } maps; relative tolerance per value
sub compare_map
{
	my ($name, $got, $want, $rel) = @_;
	my @bad;
	for my $k (sort keys %$want)
	{
		if (!exists $got->{$k}) { push @bad, "missing $k"; next; }
		my @g = ref $got->{$k} ? @{ $got->{$k} } : ($got->{$k});
		my @w = ref $want->{$k} ? @{ $want->{$k} } : ($want->{$k});
		for my $i (0 .. $#w)
		{
			my $r = ref $rel ? $rel->[$i] : $rel;
			push @bad, sprintf('%s[%d]: got %s, want %s', $k, $i, $g[$i] // 'NULL', $w[$i] // 'NULL')
			  unless close_to($g[$i], $w[$i], $r);
		}
	}
	push @bad, "unexpected $_" for grep { !exists $want->{$_} } sort keys %$got;
	ok(!@bad && keys %$want, "$name: " . scalar(keys %$want) . ' values match')
	  or diag(join("\n", (@bad > 15 ? (@bad[ 0 .. 14 ], '...') : @bad)));
}

# top-N results ordered by calls desc: right count, calls non-increasing, every row right, and
# every key above the cut present (keys tied at the cut may come in any order)
sub compare_topn
{
	my ($name, $rows, $want, $n, $keyf, $vals) = @_;
	my @cand = sort { $b->{calls} <=> $a->{calls} } values %$want;
	my $take = min($n, scalar @cand);
	my $cut = $take ? $cand[ $take - 1 ]{calls} : 0;
	my @bad;
	push @bad, 'rows: ' . scalar(@$rows) . ", want $take" if @$rows != $take;
	for my $i (1 .. $#$rows)
	{
		push @bad, "row $i: calls not descending" if $rows->[$i]{calls} > $rows->[ $i - 1 ]{calls};
	}
	my %seen;
	for my $r (@$rows)
	{
		my $k = $keyf->($r);
		$seen{$k}++;
		my $w = $want->{$k};
		if (!$w) { push @bad, "unexpected row $k"; next; }
		push @bad, "row $k: calls $w->{calls} is below the cut $cut" if $w->{calls} < $cut;
		for my $v (@$vals)
		{
			my ($col, $rel) = @$v;
			push @bad, sprintf('%s %s: got %s, want %s', $k, $col, $r->{$col} // 'NULL', $w->{$col} // 'NULL')
			  unless close_to($r->{$col}, $w->{$col}, $rel);
		}
	}
	push @bad, "missing $_" for grep { $want->{$_}{calls} > $cut && !$seen{$_} } sort keys %$want;
	ok(!@bad, "$name: $take rows match") or diag(join("\n", @bad));
	return $take;
}

sub api_key { return "$_[0]{method} $_[0]{path}"; }
sub ip_key { return $_[0]{client_ip} // 'NULL'; }

# the 10 APIs of some hits ranked by a count desc, then method, path byte-wise (COLLATE "C")
sub top10_apis
{
	my ($hits, $countf) = @_;
	my %n;
	$n{"$_->{m} $_->{p}"} += $countf->($_) for @$hits;
	my @k = sort {
		my ($am, $ap) = split / /, $a, 2;
		my ($bm, $bp) = split / /, $b, 2;
		$n{$b} <=> $n{$a} || $am cmp $bm || $ap cmp $bp
	} grep { $n{$_} > 0 } keys %n;
	return { map { ($_ => 1) } @k[ 0 .. min(9, $#k) ] };
}

# ------------------------------------------------------------------ per-query checks
my %check = (
	'Requests per second per API' => [ [qw(path interval)], sub {
		my ($r, $c) = @_;
		my @h = range_hits($c, $c->{paths});
		my $top = top10_apis(\@h, sub { 1 });
		my (%want, %got);
		for my $x (@h)
		{
			my $k = "$x->{m} $x->{p}";
			$want{ group_of($x, $c->{w}) . "|$k" } += 1 / $c->{w} if $top->{$k};
		}
		$got{ tsec($_->{time}) . "|$_->{metric}" } = $_->{'requests/s'} for @{ $r->{rows} };
		compare_map("$c->{label}: requests/s per API and group", \%got, \%want, 1e-9);
		return scalar keys %want;
	} ],
	'Error ratio per API' => [ [qw(path interval)], sub {
		my ($r, $c) = @_;
		my @h = range_hits($c, $c->{paths});
		my $top = top10_apis(\@h, sub { is_err($_[0]{st}) ? 1 : 0 });
		my (%calls, %errs, %want, %got);
		for my $x (@h)
		{
			my $k = "$x->{m} $x->{p}";
			next unless $top->{$k};
			my $g = group_of($x, $c->{w}) . "|$k";
			$calls{$g}++;
			$errs{$g}++ if is_err($x->{st});
		}
		$want{$_} = ($errs{$_} // 0) / $calls{$_} for keys %calls;
		$got{ tsec($_->{time}) . "|$_->{metric}" } = $_->{'error ratio'} for @{ $r->{rows} };
		compare_map("$c->{label}: error ratio per API and group", \%got, \%want, 1e-9);
		return scalar keys %want;
	} ],
	'Latency p50 / p95 / p99' => [ [qw(path interval)], sub {
		my ($r, $c) = @_;
		my (%lat, %want, %got);
		for my $x (range_hits($c, $c->{paths}))
		{
			my $g = group_of($x, $c->{w});
			$lat{$g} //= [];
			push @{ $lat{$g} }, $x->{lat} if defined $x->{lat};
		}
		for my $g (keys %lat) { $want{$g} = [ map { pct_disc($lat{$g}, $_) } (0.5, 0.95, 0.99) ]; }
		$got{ tsec($_->{time}) } = [ @$_{qw(p50 p95 p99)} ] for @{ $r->{rows} };
		compare_map("$c->{label}: p50/p95/p99 per group within 2 %", \%got, \%want, 0.02);
		return scalar keys %want;
	} ],
	'All APIs' => [ [qw(interval)], sub {
		my ($r, $c) = @_;
		my (%n, %e, %lat, %want, %got);
		for my $x (range_hits($c, undef))
		{
			my $g = group_of($x, $c->{w});
			$n{$g}++;
			$e{$g}++ if is_err($x->{st});
			push @{ $lat{$g} }, $x->{lat} if defined $x->{lat};
		}
		$want{$_} = [ $n{$_} / $c->{w}, ($e{$_} // 0) / $c->{w}, pct_disc($lat{$_} // [], 0.95) ] for keys %n;
		$got{ tsec($_->{time}) } = [ @$_{ 'requests/s', 'errors/s', 'p95 ms' } ] for @{ $r->{rows} };
		compare_map("$c->{label}: totals per group (p95 within 2 %)", \%got, \%want, [ 1e-9, 1e-9, 0.02 ]);
		return scalar keys %want;
	} ],
	'Latency percentiles per API' => [ [qw(path)], sub {
		my ($r, $c) = @_;
		my (%lat, %want, %got);
		for my $x (range_hits($c, $c->{paths}))
		{
			$lat{"$x->{m} $x->{p}"} //= [];
			push @{ $lat{"$x->{m} $x->{p}"} }, $x->{lat} if defined $x->{lat};
		}
		for my $k (keys %lat) { $want{$k} = [ map { pct_disc($lat{$k}, $_) } (0.5, 0.95, 0.99) ]; }
		$got{ api_key($_) } = [ @$_{ 'p50 ms', 'p95 ms', 'p99 ms' } ] for @{ $r->{rows} };
		compare_map("$c->{label}: p50/p95/p99 per API within 2 %", \%got, \%want, 0.02);
		return scalar keys %want;
	} ],
	'Top 10 APIs' => [ [qw(window)], sub {
		my ($r, $c) = @_;
		my $since = interval_s($c->{window});
		my %want;
		for my $x (window_hits($since, $r->{now}))
		{
			my $w = $want{"$x->{m} $x->{p}"} //= { calls => 0, errors => 0 };
			$w->{calls}++;
			$w->{errors}++ if is_err($x->{st});
		}
		my (%ls, %lc);
		for my $x (grep { defined $_->{lat} } window_latency_hits($since, $r->{now}))
		{
			$ls{"$x->{m} $x->{p}"} += $x->{lat};
			$lc{"$x->{m} $x->{p}"}++;
		}
		for my $k (keys %want)
		{
			$want{$k}{error_ratio} = $want{$k}{errors} / $want{$k}{calls};
			$want{$k}{avg_latency_ms} = $lc{$k} ? $ls{$k} / $lc{$k} : undef;
		}
		return compare_topn("$c->{label}: top_apis", $r->{rows}, \%want, 10, \&api_key,
			[ [ 'errors', 0 ], [ 'error_ratio', 1e-9 ], [ 'avg_latency_ms', 1e-9 ] ]);
	} ],
	'Top 10 callers' => [ [qw(window)], sub {
		my ($r, $c) = @_;
		my %want;
		for my $x (window_hits(interval_s($c->{window}), $r->{now}))
		{
			my $w = $want{ $x->{ip} // 'NULL' } //= { calls => 0, errors => 0 };
			$w->{calls}++;
			$w->{errors}++ if is_err($x->{st});
		}
		$_->{error_ratio} = $_->{errors} / $_->{calls} for values %want;
		return compare_topn("$c->{label}: top_callers by IP", $r->{rows}, \%want, 10, \&ip_key,
			[ [ 'errors', 0 ], [ 'error_ratio', 1e-9 ] ]);
	} ],
	'Hot callers' => [ [qw(window threshold)], sub {
		my ($r, $c) = @_;
		my %n;
		for my $x (grep { defined $_->{ip} } window_hits(interval_s($c->{window}), $r->{now}))
		{
			my $w = $n{"$x->{m} $x->{p} $x->{ip}"} //= { calls => 0, errors => 0 };
			$w->{calls}++;
			$w->{errors}++ if is_err($x->{st});
		}
		my %want = map { ($_ => $n{$_}) } grep { $n{$_}{calls} >= $c->{threshold} } keys %n;
		compare_topn("$c->{label}: hot_callers >= $c->{threshold}", $r->{rows}, \%want, 100,
			sub { "$_[0]{method} $_[0]{path} $_[0]{client_ip}" }, [ [ 'errors', 0 ] ]);
		return scalar keys %want;
	} ],
	'Recent alerts' => [ [qw()], sub {
		my ($r, $c) = @_;
		my @rows = @{ $r->{rows} };
		my @bad;
		for my $i (1 .. $#rows)
		{
			push @bad, 'not newest first' if parse_ts($rows[$i]{time}) > parse_ts($rows[ $i - 1 ]{time});
		}
		my %got = map { ($_->{rule} => $_) } @rows;
		my $rules = join(',', sort map { $_->{rule} } @rows);
		my $want_rules = join(',', sort('scraper', map { $_->{rule} } grep { $_->{fired} >= $from_ms * 1000 } @manual));
		push @bad, "rules: $rules, want $want_rules" unless $rules eq $want_rules;
		for my $a (grep { $_->{fired} >= $from_ms * 1000 } @manual)
		{
			my $g = $got{ $a->{rule} } or next;
			my @w = (ts_text($a->{fired}), $a->{m}, $a->{p}, $a->{ip}, $a->{uid}, $a->{calls}, $a->{errors},
				ts_text($a->{ws}), ts_text($a->{we}));
			my @gv = ((map { defined $_ ? ts_text(parse_ts($_)) : undef } $g->{time}),
				@$g{qw(method path client_ip user_id calls errors)},
				map { ts_text(parse_ts($_)) } @$g{qw(window_start window_end)});
			push @bad, "$a->{rule}: got " . join('|', map { $_ // 'NULL' } @gv) . ', want ' . join('|', map { $_ // 'NULL' } @w)
			  unless join('|', map { $_ // 'NULL' } @gv) eq join('|', map { $_ // 'NULL' } @w);
		}
		if (my $s = $got{scraper})
		{
			my $fired = parse_ts($s->{time});
			my $ws = (floor($fired / $SLOT_US) - 11) * $SLOT_US;
			push @bad, 'scraper fired before the burst was committed' if $fired < $live_commit_us - 1_000_000;
			my $got = join('|', map { $_ // 'NULL' } @$s{qw(method path client_ip user_id calls errors)},
				parse_ts($s->{window_start}), parse_ts($s->{window_end}));
			my $want = join('|', 'GET', '/api/v1/export', '203.0.113.66', 'NULL', 400, 40, $ws, $fired);
			push @bad, "scraper: got $got, want $want" unless $got eq $want;
		}
		ok(!@bad, "$c->{label}: alerts of the range (4 rows, newest first, values)") or diag(join("\n", @bad));
		return scalar @rows;
	} ],
	'apicount alerts' => [ [qw()], sub {
		my ($r, $c) = @_;
		my @rows = @{ $r->{rows} };
		my %fired = map { ($_->{rule} => $_) } grep { $_->{fired} >= $from_ms * 1000 } @manual;
		my $scr = sql("SELECT (extract(epoch FROM window_start) * 1000000)::bigint, "
			  . "(extract(epoch FROM window_end) * 1000000)::bigint FROM apicount.alerts WHERE rule = 'scraper'");
		my ($sws, $swe) = split /\|/, $scr;
		my @want = sort { $a->[0] <=> $b->[0] } (
			(map { [ $_->{ws}, $_->{we}, "$_->{rule}: " . join(' ', grep { defined } $_->{m}, $_->{p}, $_->{ip}, $_->{uid})
				  . " ($_->{calls} calls, $_->{errors} errors)", $_->{rule} ] } values %fired),
			[ $sws, $swe, 'scraper: GET /api/v1/export 203.0.113.66 (400 calls, 40 errors)', 'scraper' ]);
		my @got = map { [ parse_ts($_->{time}), parse_ts($_->{timeend}), $_->{text}, $_->{tags} ] } @rows;
		is_deeply(\@got, \@want, "$c->{label}: one annotation per alert of the range, oldest first");
		return scalar @rows;
	} ],
	'path' => [ [qw()], sub {
		my ($r, $c) = @_;
		my %p = map { ($_->{p} => 1) } range_hits($c, undef);
		is_deeply([ sort map { $_->{path} } @{ $r->{rows} } ], [ sort keys %p ],
			"$c->{label}: every path with hits in the range");
		return scalar keys %p;
	} ]);

# the check of a query (matched by its panel title, annotation name or variable name) and
# the variables its expected values depend on: the query is run for every value of those,
# whether or not its SQL mentions them
sub checker_of
{
	my ($q) = @_;
	for my $prefix (keys %check)
	{
		return @{ $check{$prefix} } if index($q->{title}, $prefix) == 0;
	}
	return;
}

# ------------------------------------------------------------------ the runs
my %exercised;
my $all_paths;    # the variable query's answer: what "All" stands for

sub run_query
{
	my ($q, %c) = @_;
	my %vars = (
		path => { multi => $pv->{multi}, includeAll => $pv->{includeAll}, allValue => $pv->{allValue},
			value => $c{paths} // ['$__all'], options => $all_paths },
		window => { multi => $wv->{multi}, includeAll => $wv->{includeAll}, value => $c{window} // $window_opts[0] },
		threshold => { value => $c{threshold} // 300 });
	my $sql = eval {
		expand($q->{sql}, vars => \%vars, from_ns => $c{from_ms} * 1_000_000, to_ns => $c{to_ms} * 1_000_000,
			interval_ms => $c{w} ? $c{w} * 1000 : undef);
	};
	if (!defined $sql)
	{
		fail("$c{phase}: $q->{key}: Grafana would refuse to expand it: $@");
		return undef;
	}
	my ($uses) = checker_of($q);
	my %u = map { ($_ => 1) } @$uses;
	my $label = "$c{phase}: $q->{key} ($q->{title})"
	  . ($u{path} ? ', paths ' . ($c{paths} ? scalar(@{ $c{paths} }) : 'All') : '')
	  . ($u{interval} ? ", interval $c{w} s" : '')
	  . ($u{window} ? ", window $c{window}" : '');
	my $r = run_reader($sql);
	if (!ok(!$r->{error}, "$label: runs") )
	{
		diag("$r->{error}\n--- expanded SQL:\n$sql");
		return undef;
	}
	if ($q->{format} eq 'time_series' || $q->{kind} eq 'annotation')
	{
		my @t = map { tsec($_->{time}) } @{ $r->{rows} };
		my $sorted = (grep { !defined $t[$_] || ($_ > 0 && $t[$_] < $t[ $_ - 1 ]) } 0 .. $#t) ? 0 : 1;
		ok((any { $_ eq 'time' } @{ $r->{cols} }) && $sorted, "$label: has a time column in ascending order");
	}
	my (undef, $chk) = checker_of($q);
	my %ctx = (%c, label => $label, from_us => $c{from_ms} * 1000, to_us => $c{to_ms} * 1000);
	$chk->($r, \%ctx);
	$exercised{ $q->{key} }++;
	return $r;
}

ok(scalar(checker_of($_)), "$_->{key} ($_->{title}) has a check") for @queries;
my @subset = ("/api/v1/o'reilly", '/api/v1/users/:id', '/login', '/api/v1/export');

sub run_all
{
	my ($phase) = @_;
	my %base = (phase => $phase, from_ms => $from_ms, to_ms => $to_ms);
	my ($var_q) = grep { $_->{key} eq 'variable path' } @queries;
	my $vr = run_query($var_q, %base, w => 60);
	$all_paths = [ map { $_->{path} } @{ $vr->{rows} } ] if $vr && !$vr->{error};
	for my $q (grep { $_->{kind} ne 'variable' } @queries)
	{
		my ($uses) = checker_of($q);
		my %u = map { ($_ => 1) } @$uses;
		my @paths = $u{path} ? (undef, \@subset) : (undef);
		my @ws = $u{interval} ? (60, 300) : (60);
		my @windows = $u{window} ? @window_opts : (undef);
		for my $p (@paths)
		{
			for my $w (@ws)
			{
				run_query($q, %base, paths => $p, w => $w, window => $_, threshold => 300) for @windows;
			}
		}
	}
}

run_all('live');
is(live_state(), scalar(@live) . ' unflushed (caller tier ' . scalar(@live) . '), 0 rollup rows for the current minute',
	'after reading the dashboard: the live hits were still unflushed, so every check above included them');

# the current minute alone: only live (unflushed) hits exist there
{
	my ($rps) = grep { $_->{title} =~ /^Requests per second per API/ } @queries;
	my $r = run_query($rps, phase => 'live only', from_ms => $B / 1000, to_ms => $to_ms, w => 60);
	my $n = grep { $_->{b} * 1_000_000 >= $B } @hits;
	ok($n > 0 && $r && @{ $r->{rows} } > 0, "the current minute has $n live hits and the panel shows them");
}

sql('SELECT apicount.flush()');
is(sql('SELECT coalesce(sum(unflushed), 0) FROM apicount.live'), '0', 'after apicount.flush() nothing is unflushed');
run_all('flushed');

# every query of the JSON was run and checked
my @keys = map { $_->{key} } @queries;
is_deeply([ sort grep { $exercised{$_} } @keys ], [ sort @keys ], 'every dashboard query was exercised');
is(scalar(@keys), 11, '11 queries: 9 panel targets, 1 annotation, 1 variable');
note("query runs per query: " . join(', ', map { "$_=$exercised{$_}" } sort keys %exercised));

done_testing();
