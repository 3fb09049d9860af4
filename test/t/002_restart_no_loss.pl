# 002_restart_no_loss.pl — hits held only in shared memory survive clean shutdowns.
#
# apicount.flush_interval = '1h': the worker never flushes on its own during the test, so each
# batch is still entirely unflushed when the server is stopped (checked before each stop, in
# both tiers of apicount.live: every hit once in the API tier and, all hits being tracked, once in
# the caller tier), and only the worker's shutdown flush can bring it into api_minute.
#
# Each batch: 5,000 hits over 50 paths, 3 methods and 4 minutes with mixed status/latency,
# recorded through all three ingest paths (INSERT INTO apicount.requests ... SELECT,
# apicount.hit(), COPY apicount.requests FROM STDIN).  Expected rollups are computed in Perl
# from the generating formula, never read back from apicount.
#
# Proves, after each of: pg_ctl restart (fast), stop('fast') + start, stop('smart') + start,
# and a fast restart while a client that committed hits is still connected and another client
# holds an uncommitted transaction with hits:
#  - api_minute and caller_minute equal the expected totals of all committed batches, per
#    (bucket, method, path) and per caller, exactly (nothing lost, nothing doubled);
#  - uncommitted hits are not counted;
#  - the server log says "apicount worker stopped after its last flush".
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use POSIX qw(strftime);

my $node = PostgreSQL::Test::Cluster->new('restart');
$node->init;
$node->append_conf('postgresql.conf',
	"shared_preload_libraries = 'apicount'\n"
	  . "apicount.flush_interval = '1h'\n"
	  . "log_statement = none\n"
	  . "timezone = 'UTC'\n");
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION apicount');

# all hits are placed in 4 minutes starting at $base (10 minutes ago, whole minute)
my $base_epoch = $node->safe_psql('postgres',
	"SELECT extract(epoch FROM date_trunc('minute', now()) - interval '10 minutes')::bigint");
my $base = "to_timestamp($base_epoch)";

# timestamp text of base + offsets, for COPY rows (computed in Perl)
sub ts_text
{
	my ($minute, $second) = @_;
	return strftime('%Y-%m-%d %H:%M:%S+00', gmtime($base_epoch + 60 * $minute + $second));
}

# ---- the generating formula (Perl side) ---------------------------------------------------
my @METHODS = ('GET', 'POST', 'DELETE');
my @STATUS  = (200, 201, 404, 500, undef);

sub row_of
{
	my ($g) = @_;
	return {
		minute  => $g % 4,
		second  => $g % 60,
		method  => $METHODS[ $g % 3 ],
		path    => sprintf('/svc/p%02d', $g % 50),
		ip      => ($g % 4 == 0 ? undef : '10.1.0.' . ($g % 4)),
		user    => ($g % 6 == 0 ? undef : 'user' . ($g % 6)),
		status  => $STATUS[ $g % 5 ],
		latency => ($g % 7 == 0 ? undef : $g % 100),
	};
}

# the same formula in SQL, over g (used by INSERT ... SELECT and hit())
my $sql_cols = qq{
	$base + (g % 4) * interval '1 minute' + (g % 60) * interval '1 second' AS ts,
	(ARRAY['GET','POST','DELETE'])[g % 3 + 1] AS method,
	'/svc/p' || lpad((g % 50)::text, 2, '0') AS path,
	CASE WHEN g % 4 = 0 THEN NULL ELSE ('10.1.0.' || g % 4)::inet END AS client_ip,
	CASE WHEN g % 6 = 0 THEN NULL ELSE 'user' || g % 6 END AS user_id,
	(ARRAY[200,201,404,500,NULL])[g % 5 + 1] AS status,
	CASE WHEN g % 7 = 0 THEN NULL ELSE (g % 100)::float8 END AS latency_ms};

my (%api, %caller);    # expected rollups, cumulative over committed batches

sub expect_rows
{
	my ($lo, $hi) = @_;
	for my $g ($lo .. $hi)
	{
		my $r = row_of($g);
		my $st = $r->{status};
		my @cls = (
			(defined $st && $st < 400) ? 1 : 0,
			(defined $st && $st >= 400 && $st < 500) ? 1 : 0,
			(defined $st && $st >= 500) ? 1 : 0);
		my $ak = join('|', $r->{minute}, $r->{method}, $r->{path});
		my $a = $api{$ak} //= [ 0, 0, 0, 0, 0, 0, undef ];
		$a->[0]++;
		$a->[ 1 + $_ ] += $cls[$_] for 0 .. 2;
		if (defined $r->{latency})
		{
			$a->[4] += $r->{latency};
			$a->[5]++;
			$a->[6] = $r->{latency} if !defined $a->[6] || $r->{latency} > $a->[6];
		}
		my $ck = join('|', $r->{minute}, $r->{method}, $r->{path},
			$r->{ip} // 'NULL', $r->{user} // 'NULL');
		my $c = $caller{$ck} //= [ 0, 0, 0, 0 ];
		$c->[0]++;
		$c->[ 1 + $_ ] += $cls[$_] for 0 .. 2;
	}
}

sub expected_api
{
	return join("\n",
		sort map { join('|', $_, @{ $api{$_} }[ 0 .. 5 ], $api{$_}[6] // 'NULL') } keys %api);
}

sub expected_caller
{
	return join("\n", sort map { join('|', $_, @{ $caller{$_} }) } keys %caller);
}

sub actual_api
{
	my $out = $node->safe_psql('postgres', qq{
		SELECT (extract(epoch FROM bucket - $base) / 60)::int, method, path,
		       calls, ok, client_errors, server_errors, latency_sum_ms, latency_count,
		       coalesce(latency_max_ms::text, 'NULL')
		FROM apicount.api_minute});
	return join("\n", sort split /\n/, $out);
}

sub actual_caller
{
	my $out = $node->safe_psql('postgres', qq{
		SELECT (extract(epoch FROM bucket - $base) / 60)::int, method, path,
		       coalesce(host(client_ip), 'NULL'), coalesce(user_id, 'NULL'),
		       calls, ok, client_errors, server_errors
		FROM apicount.caller_minute});
	return join("\n", sort split /\n/, $out);
}

sub api_total
{
	return $node->safe_psql('postgres',
		'SELECT coalesce(sum(calls), 0) FROM apicount.api_minute');
}

# SQL that records hits g = lo..hi through the three ingest paths
sub batch_sql
{
	my ($lo, $hi) = @_;
	my $n  = $hi - $lo + 1;
	my $m1 = $lo + int($n / 3) - 1;
	my $m2 = $lo + int(2 * $n / 3) - 1;
	my $sql = qq{
		BEGIN;
		INSERT INTO apicount.requests (ts, method, path, client_ip, user_id, status, latency_ms)
		SELECT ts, method, path, client_ip, user_id, status, latency_ms
		FROM (SELECT $sql_cols FROM generate_series($lo, $m1) g) s;
		COMMIT;
		BEGIN;
		SELECT count(*) FROM (
			SELECT apicount.hit(path, lower(method), client_ip, user_id, status, latency_ms, ts)
			FROM (SELECT $sql_cols FROM generate_series($m1 + 1, $m2) g) s) h;
		COMMIT;
		COPY apicount.requests (ts, method, path, client_ip, user_id, status, latency_ms) FROM STDIN;
};
	for my $g ($m2 + 1 .. $hi)
	{
		my $r = row_of($g);
		$sql .= join("\t",
			ts_text($r->{minute}, $r->{second}),
			$r->{method},
			$r->{path},
			$r->{ip} // '\N',
			$r->{user} // '\N',
			$r->{status} // '\N',
			$r->{latency} // '\N') . "\n";
	}
	$sql .= "\\.\n";
	return $sql;
}

my $N = 5000;
my $next_g = 1;

# unflushed hits of each tier of apicount.live: "api|caller"
sub unflushed_by_tier
{
	return $node->safe_psql('postgres',
		"SELECT coalesce(sum(unflushed) FILTER (WHERE tier = 'api'), 0) || '|' || "
		  . "coalesce(sum(unflushed) FILTER (WHERE tier = 'caller'), 0) FROM apicount.live");
}

# record one batch of $N committed hits and check they are unflushed
sub run_batch
{
	my ($label) = @_;
	my ($lo, $hi) = ($next_g, $next_g + $N - 1);
	$next_g += $N;
	my $before = api_total();
	$node->safe_psql('postgres', batch_sql($lo, $hi));
	expect_rows($lo, $hi);
	is(unflushed_by_tier(), "$N|$N",
		"$label: the $N new hits are all unflushed before the stop (API tier|caller tier)");
	is(api_total(), $before, "$label: api_minute unchanged before the stop");
}

sub check_after
{
	my ($label, $log_offset) = @_;
	ok($node->log_contains(qr/apicount worker stopped after its last flush/, $log_offset),
		"$label: log says the worker flushed at shutdown");
	is(actual_api(), expected_api(),
		"$label: api_minute equals the expected per-(bucket, method, path) totals");
	is(actual_caller(), expected_caller(),
		"$label: caller_minute equals the expected per-caller totals");
	is($node->safe_psql('postgres',
			'SELECT coalesce(sum(unflushed), 0) FROM apicount.live'),
		'0', "$label: nothing is left unflushed after the restart");
}

# ---- 1. pg_ctl restart (fast) -------------------------------------------------------------
run_batch('restart');
my $off = -s $node->logfile;
$node->restart;
check_after('restart', $off);

# ---- 2. stop('fast') + start --------------------------------------------------------------
run_batch('fast stop');
$off = -s $node->logfile;
$node->stop('fast');
$node->start;
check_after('fast stop', $off);

# ---- 3. stop('smart') + start -------------------------------------------------------------
run_batch('smart stop');
$off = -s $node->logfile;
$node->stop('smart');
$node->start;
check_after('smart stop', $off);

# ---- 4. fast restart with connected clients -----------------------------------------------
# client A commits a batch and stays connected (idle); client B has an open transaction with
# 777 hits that must not be counted.
my $a = $node->background_psql('postgres', on_error_stop => 0);
my $b = $node->background_psql('postgres', on_error_stop => 0);
{
	my ($lo, $hi) = ($next_g, $next_g + $N - 1);
	$next_g += $N;
	$a->query_safe(
		"INSERT INTO apicount.requests (ts, method, path, client_ip, user_id, status, latency_ms)
		 SELECT ts, method, path, client_ip, user_id, status, latency_ms
		 FROM (SELECT $sql_cols FROM generate_series($lo, $hi) g) s");
	expect_rows($lo, $hi);
}
$b->query_safe('BEGIN');
$b->query_safe(
	"INSERT INTO apicount.requests (path, status) SELECT '/uncommitted', 200 FROM generate_series(1, 777)");
is(unflushed_by_tier(), "$N|$N",
	"connected clients: exactly the $N committed hits are in shared memory (API tier|caller tier)");
$off = -s $node->logfile;
$node->restart;
check_after('connected clients', $off);
is($node->safe_psql('postgres',
		"SELECT count(*) FROM apicount.api_minute WHERE path = '/uncommitted'"),
	'0', 'connected clients: the uncommitted hits are not counted');
# the sessions were terminated by the restart; reap the psql processes
eval { $a->quit; };
eval { $b->quit; };

is(api_total(), 4 * $N, 'total over all four scenarios is ' . (4 * $N));

$node->stop('fast');
done_testing();
