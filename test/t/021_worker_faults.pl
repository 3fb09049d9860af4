# 021_worker_faults.pl — the worker under signals and faults; flush() never waits forever.
#
# apicount.flush_interval = '1h': the worker writes only when asked (flush()) or when it stops,
# so every count in api_minute below comes from a known event.
#
# Proves:
#  1. SIGTERM: the worker flushes what it holds and exits — the hits inserted before are in
#     api_minute once it is gone, without anyone calling flush() — and the postmaster starts a
#     new worker (new pid).  No crash restart: shared memory (stats.hits) is kept.
#  2. SIGTERM while a session holds ACCESS EXCLUSIVE on api_minute: every shutdown flush fails
#     (lock_timeout), the worker still exits within ~20 s, and the failed flushes subtracted
#     nothing: once the lock is gone, the new worker writes the exact totals.
#  3. SIGSTOP (the worker is alive but not serving): apicount.flush() fails with SQLSTATE 55000
#     "did not finish in time" after its 30 s limit instead of waiting forever (asserted: 25..45
#     s), and it can be cancelled earlier by statement_timeout (57014); meanwhile ingest and
#     top_apis are not blocked.  After SIGCONT, flush() works and totals are exact.
#     Why SIGSTOP: it is the only deterministic way to have a worker that is registered (pid
#     set) but does not serve; catching the ~1 s restart gap after a SIGTERM is racy.
#  4. SIGKILL: crash restart (log says "reinitializing"); flushed hits survive, the unflushed
#     ones are lost (documented), and ingest + flush work afterwards.
#  5. The worker cannot start at all (apicount.database names a database that does not exist;
#     it FATALs on connect and is retried every second): stats.worker_pid is NULL, flush() in the
#     database that has the extension fails at once with 55000 "not running", and ingest and
#     the query functions still work from shared memory.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/../perl";
use ApicountTest;
use IPC::Run;
use Time::HiRes qw(usleep time);

my $node = PostgreSQL::Test::Cluster->new('faults');
$node->init;
$node->append_conf('postgresql.conf',
	"shared_preload_libraries = 'apicount'\n"
	  . "apicount.flush_interval = '1h'\n"
	  . "restart_after_crash = on\n"
	  . "log_statement = none\n"
	  . "timezone = 'UTC'\n");
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION apicount');

sub wait_for { return ApicountTest::wait_for($node, @_); }

sub q1 { return $node->safe_psql('postgres', $_[0]); }

sub worker_pid { return q1('SELECT coalesce(worker_pid, 0) FROM apicount.stats'); }

sub calls_of
{
	my ($path) = @_;
	return q1("SELECT coalesce(sum(calls), 0) FROM apicount.api_minute WHERE path = '$path'");
}

# run SQL expecting an error; returns (ret, stderr) with the SQLSTATE shown
sub try_sql
{
	my ($sql) = @_;
	my ($ret, $out, $err) = $node->psql('postgres', "\\set VERBOSITY verbose\n$sql");
	return ($ret, $err);
}

sub hits
{
	my ($path, $n, $status) = @_;
	$status //= 200;
	q1("INSERT INTO apicount.requests (path, client_ip, user_id, status) "
		  . "SELECT '$path', ('10.1.1.' || (g % 3))::inet, 'u' || (g % 2), $status FROM generate_series(1, $n) g"
	);
}

ok(wait_for('SELECT worker_pid IS NOT NULL FROM apicount.stats', 't', 20), 'worker is running');

# ---- 1. SIGTERM -------------------------------------------------------------------------------
hits('/f/term', 13, 404);
is(calls_of('/f/term'), '0', 'SIGTERM: the 13 hits are not flushed yet (flush_interval 1h)');
my $hits_before = q1('SELECT hits FROM apicount.stats');
my $pid1 = worker_pid();
cmp_ok($pid1, '>', 0, "SIGTERM: worker pid $pid1");
my $off = -s $node->logfile;
kill 'TERM', $pid1;
ok(wait_for("SELECT count(*) FROM pg_stat_activity WHERE pid = $pid1", '0', 30),
	'SIGTERM: the worker exits');
is(calls_of('/f/term'), '13',
	'SIGTERM: the 13 hits are in api_minute after the worker exited (no flush() called)');
is(q1("SELECT sum(calls) FROM apicount.caller_minute WHERE path = '/f/term'"),
	'13', 'SIGTERM: ... and in caller_minute');
ok($node->log_contains(qr/apicount worker stopped after its last flush/, $off),
	'SIGTERM: log says the worker stopped after its last flush');
ok(wait_for("SELECT worker_pid IS NOT NULL AND worker_pid <> $pid1 FROM apicount.stats", 't', 30),
	'SIGTERM: the postmaster starts a new worker (new pid)');
ok(!$node->log_contains(qr/reinitializing/, $off), 'SIGTERM: no crash restart');
cmp_ok(q1('SELECT hits FROM apicount.stats'), '>=', $hits_before,
	'SIGTERM: shared memory is kept (stats.hits not reset)');
hits('/f/term2', 5);
is(q1('SELECT apicount.flush() > 0'), 't', 'SIGTERM: the new worker serves flush()');
is(calls_of('/f/term2'), '5', 'SIGTERM: hits after the restart are flushed');
is(calls_of('/f/term'), '13', 'SIGTERM: nothing flushed twice');

# ---- 2. SIGTERM while the rollup table is locked -----------------------------------------------
hits('/f/locked', 21, 500);
my $failures0 = q1('SELECT flush_failures FROM apicount.stats');
my $locker = $node->background_psql('postgres', on_error_stop => 1);
$locker->query_safe('BEGIN; LOCK TABLE apicount.api_minute IN ACCESS EXCLUSIVE MODE;');
my $pid2 = worker_pid();
$off = -s $node->logfile;
my $t0 = time;
kill 'TERM', $pid2;
ok(wait_for("SELECT count(*) FROM pg_stat_activity WHERE pid = $pid2", '0', 40),
	'SIGTERM + lock: the worker still exits');
my $exit_s = time - $t0;
diag(sprintf('SIGTERM while api_minute is locked: the worker exited after %.1f s', $exit_s));
cmp_ok($exit_s, '<', 30, 'SIGTERM + lock: it exits within 30 s (10 s client wait + lock_timeouts)');
ok($node->log_contains(qr/apicount: flush failed, counts stay in memory.*lock timeout/, $off),
	'SIGTERM + lock: log says the flush failed on the lock and counts stay in memory');
cmp_ok(q1('SELECT flush_failures FROM apicount.stats'), '>', $failures0,
	'SIGTERM + lock: stats.flush_failures grew');
is(q1("SELECT sum(unflushed) FILTER (WHERE tier = 'api') || '|' || sum(unflushed) FILTER (WHERE tier = 'caller') FROM apicount.live WHERE path = '/f/locked'"),
	'21|21', 'SIGTERM + lock: the 21 hits are still unflushed in shared memory (API tier|caller tier)');
$locker->query_safe('COMMIT');
$locker->quit;
ok(wait_for("SELECT worker_pid IS NOT NULL AND worker_pid <> $pid2 FROM apicount.stats", 't', 30),
	'SIGTERM + lock: a new worker starts');
my ($ret, $err) = try_sql('SELECT apicount.flush()');
is($ret, 0, 'SIGTERM + lock: flush() works once the lock is gone') or diag($err);
is(q1("SELECT sum(calls) || '/' || sum(server_errors) FROM apicount.api_minute WHERE path = '/f/locked'"),
	'21/21', 'SIGTERM + lock: the 21 hits are flushed exactly once (failed flushes subtracted nothing)');
is(q1("SELECT sum(calls) FROM apicount.caller_minute WHERE path = '/f/locked'"),
	'21', 'SIGTERM + lock: caller_minute too');

# ---- 3. SIGSTOP: flush() times out with 55000 ----------------------------------------------------
hits('/f/stop', 8);
my $pid3 = worker_pid();
kill 'STOP', $pid3;

# cancellable: statement_timeout stops the wait
$t0 = time;
($ret, $err) = try_sql("SET statement_timeout = '2s'; SELECT apicount.flush();");
my $cancel_s = time - $t0;
like($err, qr/ERROR:\s+57014:/, 'SIGSTOP: flush() is cancelled by statement_timeout (57014)');
cmp_ok($cancel_s, '<', 10, sprintf('SIGSTOP: ... after %.1f s', $cancel_s));

# the full wait, in the background, while we ingest and query
my ($fo, $fe) = ('', '');
my $flusher = IPC::Run::start(
	[ 'psql', '-X', '-At', '-h', $node->host, '-p', $node->port, '-d', 'postgres',
	  '-c', '\set VERBOSITY verbose', '-c', 'SELECT apicount.flush()' ],
	'>', \$fo, '2>', \$fe, IPC::Run::timeout(90));
$t0 = time;
usleep(500_000);
my ($r2, $o2, $e2) = $node->psql('postgres',
	"SET statement_timeout = '5s'; INSERT INTO apicount.requests (path) SELECT '/f/stop' FROM generate_series(1, 4);"
);
is($r2, 0, 'SIGSTOP: ingest is not blocked while flush() waits') or diag($e2);
is(q1("SELECT calls FROM apicount.top_apis(100, '1 minute') WHERE path = '/f/stop'"),
	'12', 'SIGSTOP: top_apis answers from shared memory while flush() waits');
$flusher->finish;
my $flush_s = time - $t0;
like($fe, qr/ERROR:\s+55000:\s+apicount flush did not finish in time/,
	'SIGSTOP: flush() fails with SQLSTATE 55000 "did not finish in time"');
like($fe, qr/HINT:/, 'SIGSTOP: ... with a hint');
diag(sprintf('SIGSTOP: flush() gave up after %.1f s; message: %s', $flush_s,
		(split /\n/, $fe)[0]));
cmp_ok($flush_s, '>=', 25, 'SIGSTOP: it waited about its documented 30 s');
cmp_ok($flush_s, '<', 45, 'SIGSTOP: ... and not much longer');
kill 'CONT', $pid3;
($ret, $err) = try_sql('SELECT apicount.flush()');
is($ret, 0, 'SIGCONT: flush() works again') or diag($err);
is(calls_of('/f/stop'), '12', 'SIGCONT: the 12 hits are flushed exactly once');
is(worker_pid(), $pid3, 'SIGCONT: the same worker (no restart)');

# ---- 4. SIGKILL: crash restart --------------------------------------------------------------------
my $flushed_total = q1('SELECT sum(calls) FROM apicount.api_minute');
hits('/f/kill-lost', 7);
my $pid4 = worker_pid();
$off = -s $node->logfile;
kill 'KILL', $pid4;
ok(wait_for("SELECT worker_pid IS NOT NULL AND worker_pid <> $pid4 FROM apicount.stats", 't', 60),
	'SIGKILL: the server comes back with a new worker');
ok($node->log_contains(qr/terminated by signal 9/, $off), 'SIGKILL: log says signal 9');
ok($node->log_contains(qr/all server processes terminated; reinitializing/, $off),
	'SIGKILL: crash restart (shared memory reinitialized)');
is(q1('SELECT sum(calls) FROM apicount.api_minute'), $flushed_total,
	'SIGKILL: every flushed hit survives');
is(calls_of('/f/kill-lost'), '0', 'SIGKILL: the 7 unflushed hits are lost (documented)');
hits('/f/kill-after', 9);
is(q1("SELECT calls FROM apicount.top_apis(100, '1 minute') WHERE path = '/f/kill-after'"),
	'9', 'SIGKILL: ingest works after the crash restart (top_apis)');
($ret, $err) = try_sql('SELECT apicount.flush()');
is($ret, 0, 'SIGKILL: flush() works after the crash restart') or diag($err);
is(calls_of('/f/kill-after'), '9', 'SIGKILL: new hits flushed');

# ---- 5. the worker cannot start ---------------------------------------------------------------------
$node->append_conf('postgresql.conf', "apicount.database = 'no_such_db'\n");
$node->restart;
ok(wait_for("SELECT count(*) > 0 FROM pg_stat_activity WHERE backend_type = 'apicount worker'", 'f', 5),
	'no worker: no apicount worker is connected');
usleep(1_500_000);    # let it fail at least once
ok($node->log_contains(qr/database "no_such_db" does not exist/),
	'no worker: the log says why the worker cannot start');
is(q1('SELECT worker_pid IS NULL FROM apicount.stats'), 't', 'no worker: stats.worker_pid is NULL');
$t0 = time;
($ret, $err) = try_sql('SELECT apicount.flush()');
my $nw_s = time - $t0;
like($err, qr/ERROR:\s+55000:\s+apicount worker is not running/,
	'no worker: flush() fails with 55000 "apicount worker is not running"');
cmp_ok($nw_s, '<', 5, sprintf('no worker: ... at once (%.2f s)', $nw_s));
hits('/f/noworker', 6);
is(q1("SELECT calls FROM apicount.top_apis(100, '1 minute') WHERE path = '/f/noworker'"),
	'6', 'no worker: ingest and top_apis still work (shared memory)');

# back to normal: the hits recorded while no worker ran are lost by the restart, because no
# worker is there to flush them at shutdown (reported, not asserted)
$node->append_conf('postgresql.conf', "apicount.database = 'postgres'\n");
$node->restart;
ok(wait_for('SELECT worker_pid IS NOT NULL FROM apicount.stats', 't', 20),
	'back to normal: the worker runs again');
note('hits recorded while the worker could not start, after a clean restart: '
	  . calls_of('/f/noworker') . ' of 6 in api_minute');
hits('/f/normal', 3);
($ret, $err) = try_sql('SELECT apicount.flush()');
is($ret, 0, 'back to normal: flush() works') or diag($err);
is(calls_of('/f/normal'), '3', 'back to normal: hits flushed');

$node->stop('fast');
done_testing();
