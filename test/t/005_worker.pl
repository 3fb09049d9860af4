# 005_worker.pl — the background worker: flush() return value, crash restart, SIGTERM.
#
# apicount.flush_interval is '1h', so the worker writes only when asked (flush()) or when it
# stops; every count in api_minute below is therefore attributable to a known event.
#
# Proves:
#  - apicount.flush() returns the number of live entries that had unflushed hits, computed
#    independently from the keys inserted since the previous flush: one API entry per distinct
#    (minute, method, path) plus one caller entry per distinct (minute, method, path,
#    client_ip, user_id) (every hit is tracked); a flush with nothing new returns 0;
#  - SIGKILL of the worker makes the postmaster reinitialize the whole cluster
#    (restart_after_crash = on): the server comes back, a new worker starts, flushed hits survive,
#    unflushed hits held only in shared memory are lost (documented, asserted as exactly that),
#    and ingest + flush work again;
#  - SIGTERM of the worker: it flushes what it holds and exits, the hits inserted before the
#    SIGTERM are in api_minute, flush() right after either works or fails with 55000, and the
#    postmaster starts a new worker (a different pid) that serves flush().
#    (A background worker that exits with code 0 is unregistered by the postmaster, so this
#    needs the worker to exit non-zero after a SIGTERM that is not a server shutdown.)
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/../perl";
use ApicountTest;
use Time::HiRes qw(usleep);

my $node = PostgreSQL::Test::Cluster->new('worker');
$node->init;
$node->append_conf('postgresql.conf',
	"shared_preload_libraries = 'apicount'\n"
	  . "apicount.flush_interval = '1h'\n"
	  . "restart_after_crash = on\n"
	  . "log_statement = none\n"
	  . "timezone = 'UTC'\n");
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION apicount');

# poll a query (bounded, for at most $secs seconds) until it returns $want; errors (e.g. the
sub wait_for { return ApicountTest::wait_for($node, @_); }

sub worker_pid
{
	return $node->safe_psql('postgres',
		'SELECT coalesce(worker_pid, 0) FROM apicount.stats');
}

sub api_total
{
	return $node->safe_psql('postgres',
		'SELECT coalesce(sum(calls), 0) FROM apicount.api_minute');
}

ok(wait_for('SELECT worker_pid IS NOT NULL FROM apicount.stats', 't', 20),
	'worker is running');

# a fixed minute in the past, so that all hits of a batch share one bucket
my $minute = $node->safe_psql('postgres',
	"SELECT date_trunc('minute', now()) - interval '5 minutes'");

# ---- flush() returns the number of live entries with unflushed hits ----------------------
# batch: 3 paths x 2 methods x 2 client_ips (NULL, 10.0.0.1) x 2 user_ids (NULL, 'u1'), each key
# hit (k % 3) + 1 times -> 24 distinct caller keys of 6 distinct APIs, all in one minute.
my $keys  = 0;
my $calls = 0;
my %apis;
my @values;
for my $p (1 .. 3)
{
	for my $m ('GET', 'POST')
	{
		for my $ip ('NULL', "'10.0.0.1'")
		{
			for my $u ('NULL', "'u1'")
			{
				$keys++;
				$apis{"$m $p"} = 1;
				my $times = ($keys % 3) + 1;
				for (1 .. $times)
				{
					push @values,
					  "('$minute'::timestamptz + interval '7 seconds', '$m', '/k/p$p', ${ip}::inet, $u, 200)";
					$calls++;
				}
			}
		}
	}
}
my $insert_keys =
  'INSERT INTO apicount.requests (ts, method, path, client_ip, user_id, status) VALUES '
  . join(",\n", @values);

my $napis   = scalar keys %apis;
my $entries = $keys + $napis;

$node->safe_psql('postgres', 'SELECT apicount.flush()');    # start from nothing unflushed
$node->safe_psql('postgres', $insert_keys);
is($node->safe_psql('postgres',
		"SELECT count(*) FILTER (WHERE tier = 'api') || '|' || count(*) FILTER (WHERE tier = 'caller') FROM apicount.live WHERE unflushed > 0"),
	"$napis|$keys", "live shows $napis API entries and $keys caller entries with unflushed hits");
is($node->safe_psql('postgres', 'SELECT apicount.flush()'),
	$entries, "flush() returns $entries, the distinct APIs + caller keys inserted since the last flush");
is($node->safe_psql('postgres', 'SELECT apicount.flush()'),
	'0', 'flush() with nothing new returns 0');
is(api_total(), $calls, "api_minute holds the $calls hits");
is($node->safe_psql('postgres', 'SELECT count(*) FROM apicount.caller_minute'),
	$keys, "caller_minute has one row per key ($keys)");

# the same keys again (existing entries, already flushed): still $entries entries to write
$node->safe_psql('postgres', $insert_keys);
is($node->safe_psql('postgres', 'SELECT apicount.flush()'),
	$entries, 'flush() after re-hitting the same keys returns the same number of entries');
my $flushed = 2 * $calls;
is(api_total(), $flushed, "api_minute holds $flushed hits after the second flush");

# ---- SIGKILL: crash restart of the whole cluster ------------------------------------------
my $lost = 11;
$node->safe_psql('postgres',
	"INSERT INTO apicount.requests (ts, path, status) SELECT '$minute'::timestamptz + interval '20 seconds', '/kill/lost', 500 FROM generate_series(1, $lost)"
);
is($node->safe_psql('postgres',
		"SELECT sum(unflushed) FILTER (WHERE tier = 'api') || '|' || sum(unflushed) FILTER (WHERE tier = 'caller') FROM apicount.live WHERE path = '/kill/lost'"),
	"$lost|$lost", "$lost hits are unflushed before the SIGKILL (API tier|caller tier)");

my $pid1 = worker_pid();
cmp_ok($pid1, '>', 0, 'worker pid known before SIGKILL');
my $log_offset = -s $node->logfile;
kill 'KILL', $pid1;

ok(wait_for('SELECT worker_pid IS NOT NULL AND worker_pid <> ' . $pid1 . ' FROM apicount.stats',
		't', 40),
	'after SIGKILL the server accepts connections again and a new worker runs');
ok($node->log_contains(qr/terminated by signal 9/, $log_offset),
	'log: the worker was terminated by signal 9');
ok($node->log_contains(qr/all server processes terminated; reinitializing/, $log_offset),
	'log: the postmaster reinitialized shared memory (crash restart)');

is(api_total(), $flushed, 'flushed hits survive the crash restart');
is($node->safe_psql('postgres',
		"SELECT count(*) FROM apicount.api_minute WHERE path = '/kill/lost'"),
	'0', "the $lost unflushed hits are lost by the crash restart (shared memory only)");
is($node->safe_psql('postgres', 'SELECT hits FROM apicount.stats'),
	'0', 'stats.hits restarts from 0 after the crash restart');

# ingest and flush work again
$node->safe_psql('postgres',
	"INSERT INTO apicount.requests (ts, path, status) SELECT '$minute'::timestamptz + interval '30 seconds', '/kill/after', 200 FROM generate_series(1, 9)"
);
is($node->safe_psql('postgres', 'SELECT apicount.flush()'),
	'2', 'flush() after the crash restart writes the one new key (its API entry and its caller entry)');
is($node->safe_psql('postgres',
		"SELECT coalesce(sum(calls), 0) FROM apicount.api_minute WHERE path = '/kill/after'"),
	'9', 'hits inserted after the crash restart are flushed');
$flushed += 9;
is(api_total(), $flushed, "api_minute total is $flushed (nothing double counted)");

# ---- SIGTERM: flush, exit, restart --------------------------------------------------------
my $term = 13;
$node->safe_psql('postgres',
	"INSERT INTO apicount.requests (ts, path, status) SELECT '$minute'::timestamptz + interval '40 seconds', '/term/a', 404 FROM generate_series(1, $term)"
);
is(api_total(), $flushed, 'the hits before the SIGTERM are not flushed yet (flush_interval 1h)');

my $pid2 = worker_pid();
cmp_ok($pid2, '>', 0, 'worker pid known before SIGTERM');
$log_offset = -s $node->logfile;
kill 'TERM', $pid2;

ok(wait_for("SELECT count(*) FROM pg_stat_activity WHERE pid = $pid2", '0', 20),
	'the worker exits after SIGTERM');
ok($node->log_contains(qr/apicount worker stopped after its last flush/, $log_offset),
	'log: the worker flushed before it exited');
is($node->safe_psql('postgres',
		"SELECT coalesce(sum(calls), 0) || '/' || coalesce(sum(client_errors), 0) FROM apicount.api_minute WHERE path = '/term/a'"),
	"$term/$term", "the $term hits inserted before the SIGTERM are in api_minute");
is(api_total(), $flushed + $term, 'api_minute total includes them exactly once');

# right after the exit the worker may or may not be back yet: flush() either works or fails
# with 55000 (worker not running) -- never anything else
{
	my ($r, $o, $e) =
	  $node->psql('postgres', "\\set VERBOSITY verbose\nSELECT apicount.flush()");
	ok($r == 0 || $e =~ /ERROR:\s+55000:/,
		'flush() right after the worker exited: succeeds or fails with SQLSTATE 55000');
	note($r == 0 ? 'flush() succeeded (new worker already up)' : "flush() failed: $e");
}

ok(wait_for(
		"SELECT worker_pid IS NOT NULL AND worker_pid <> $pid2 FROM apicount.stats",
		't', 20),
	'the postmaster starts a new worker after the SIGTERM (different pid)');

# the restarted worker serves flush()
$node->safe_psql('postgres',
	"INSERT INTO apicount.requests (ts, path) SELECT '$minute'::timestamptz + interval '50 seconds', '/term/b' FROM generate_series(1, 4)"
);
my ($ret, $out, $err) = $node->psql('postgres', 'SELECT apicount.flush()');
is($ret, 0, 'flush() works after the SIGTERM restart') or diag($err);
is($node->safe_psql('postgres',
		"SELECT coalesce(sum(calls), 0) FROM apicount.api_minute WHERE path = '/term/b'"),
	'4', 'hits after the SIGTERM restart are flushed');

# whatever happened above, a clean restart must not lose committed hits: with a running worker
# they are flushed at shutdown (without one, they are lost)
$node->safe_psql('postgres',
	"INSERT INTO apicount.requests (ts, path) SELECT '$minute'::timestamptz + interval '55 seconds', '/term/c' FROM generate_series(1, 6)"
);
$node->restart;
is($node->safe_psql('postgres',
		"SELECT coalesce(sum(calls), 0) FROM apicount.api_minute WHERE path IN ('/term/b', '/term/c')"),
	'10', 'hits recorded after the SIGTERM survive a clean restart');

$node->stop('fast');
done_testing();
