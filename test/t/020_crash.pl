# 020_crash.pl — a crash (kill -9 of a client backend) loses at most the last flush interval.
#
# 8 pgbench clients (-c 8 -j 2) ingest with apicount.flush_interval = '1s'.  Each pgbench
# transaction records one hit AND inserts a row into the logged table `truth` in the same
# transaction, so the committed hits are known independently of apicount:
#   truth.committed_at = clock_timestamp() (taken just before COMMIT), and, more precisely,
#   pg_xact_commit_timestamp(truth.xmin) (track_commit_timestamp = on; WAL-logged, so it
#   survives the crash restart).
# While pgbench runs, the test polls apicount.stats (flushes, last_flush_at, last_flush_ms) every
# 100 ms; after a few seconds it kills one pgbench backend with SIGKILL, which makes the
# postmaster kill every backend and reinitialize shared memory (restart_after_crash = on).
#
# Proves:
#  - the postmaster crash-restarts (log: signal 9, "reinitializing");
#  - nothing is counted that did not commit: api_minute <= truth, in total and per path
#    (hits are merged after the commit record, so a rollup can never be ahead of truth);
#  - api_minute, api_hour and caller_minute hold the same totals (one flush txn writes all);
#  - every hit committed before the start of the last completed flush that the test observed
#    is in the rollups: rollups >= truth rows whose commit timestamp is before
#    last_flush_at - last_flush_ms - 200 ms (the 200 ms cover the gap between the commit record
#    and the merge into shared memory, which happens after the WAL flush);
#  - the loss (truth - rollups) is at most the hits committed during one flush interval:
#    loss <= the most truth rows committed in any window W, and the lost commits span <= W,
#    where W = flush_interval + the longest flush observed + 250 ms slack (the worker waits
#    flush_interval from the END of a flush to the next one, so snapshots are flush_interval +
#    flush duration apart), or the longest observed gap between two consecutive flushes + 250 ms
#    if a loaded machine stretched it.  The kill is timed for the worst case: 85-98% of an
#    interval after the last flush ended.  The measured loss, the time span it covers and the
#    max rows in any 1 s window (from truth.committed_at) are reported with diag();
#  - after recovery, ingest works (new hits appear in top_apis at once), the worker is back
#    (stats.worker_pid not null) and flush() writes them.
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

my $FLUSH_S = 1;

my $node = PostgreSQL::Test::Cluster->new('crash');
$node->init;
$node->append_conf('postgresql.conf',
	"shared_preload_libraries = 'apicount'\n"
	  . "apicount.flush_interval = '${FLUSH_S}s'\n"
	  . "restart_after_crash = on\n"
	  . "track_commit_timestamp = on\n"
	  . "max_connections = 30\n"
	  . "log_statement = none\n"
	  . "timezone = 'UTC'\n");
$node->start;
$node->safe_psql('postgres', q{
	CREATE EXTENSION apicount;
	CREATE TABLE truth (id bigserial PRIMARY KEY, path text NOT NULL,
	                    committed_at timestamptz NOT NULL DEFAULT clock_timestamp());});

sub wait_for { return ApicountTest::wait_for($node, @_); }

ok(wait_for('SELECT worker_pid IS NOT NULL FROM apicount.stats', 't', 20),
	'worker is running');

# ---- ingest ---------------------------------------------------------------------------------
my $script = "$PostgreSQL::Test::Utils::tmp_check/020_ingest.sql";
PostgreSQL::Test::Utils::append_to_file($script, q{
\set p random(1, 40)
BEGIN;
INSERT INTO apicount.requests (path, method, client_ip, user_id, status, latency_ms) VALUES ('/crash/p' || :p, 'POST', ('10.20.0.' || (:p % 7))::inet, 'u' || (:p % 5), 200 + (:p % 2) * 300, :p);
INSERT INTO truth (path) VALUES ('/crash/p' || :p);
COMMIT;
});

# PostgreSQL::Test::Utils sets PGAPPNAME to the script name; pgbench gets its own
my ($pb_out, $pb_err) = ('', '');
my $pgbench = IPC::Run::start(
	[ 'env', 'PGAPPNAME=pgbench', 'pgbench', '-n', '-c', '8', '-j', '2', '-T', '60', '-f', $script,
	  '-h', $node->host, '-p', $node->port, 'postgres' ],
	'>', \$pb_out, '2>', \$pb_err,
	IPC::Run::timeout(120));

# poll stats while pgbench runs; remember the last completed flush seen, the longest flush,
# and the longest gap between the ends of two consecutive flushes (the worker's real interval,
# which a loaded machine may stretch)
my ($last_flush_at, $last_flush_ms, $max_flush_ms, $flushes, $max_gap_ms) = ('', 0, 0, 0, 0);
my ($prev_f, $prev_end) = (0, 0);
my $age_ms = -1;

sub poll_stats
{
	my $row = $node->safe_psql('postgres',
		"SELECT flushes, coalesce(last_flush_at::text, ''), coalesce(last_flush_ms, 0), "
		  . "coalesce(extract(epoch FROM last_flush_at) * 1000, 0), "
		  . "coalesce(round(extract(epoch FROM clock_timestamp() - last_flush_at) * 1000), -1) "
		  . "FROM apicount.stats");
	my ($f, $at, $ms, $end, $age) = split /\|/, $row;
	if ($f > $flushes)
	{
		$max_gap_ms = $end - $prev_end if $prev_end > 0 && $f == $prev_f + 1 && $end - $prev_end > $max_gap_ms;
		($prev_f, $prev_end) = ($f, $end);
		($flushes, $last_flush_at, $last_flush_ms) = ($f, $at, $ms);
		$max_flush_ms = $ms if $ms > $max_flush_ms;
	}
	$age_ms = $age;
	$pgbench->pump_nb;
}

my $t_start = time;
while (time - $t_start < 5)
{
	poll_stats();
	usleep(20_000);
}
cmp_ok($flushes, '>=', 2, "the worker flushed during ingest ($flushes flushes seen)");

my $victim = $node->safe_psql('postgres',
	"SELECT pid FROM pg_stat_activity WHERE application_name = 'pgbench' "
	  . "AND backend_type = 'client backend' ORDER BY pid LIMIT 1");
like($victim, qr/^\d+$/, "found a pgbench backend to kill (pid $victim)")
  or BAIL_OUT("no pgbench backend; pgbench said: $pb_err $pb_out " . ($pgbench->pumpable ? 'running' : 'exited'));

# worst case: kill just before the next flush is due, i.e. when the last flush ended about
# 0.85-0.98 flush intervals ago (the loss is then about one whole interval); give up waiting
# for that moment after 5 s and kill anyway
my $t_wait = time;
while (time - $t_wait < 5)
{
	poll_stats();
	last if $age_ms >= 0.85 * $FLUSH_S * 1000 && $age_ms < 0.98 * $FLUSH_S * 1000;
	usleep(10_000);
}
note("killing $victim ${age_ms} ms after the end of the last flush");
my $log_offset = -s $node->logfile;
kill 'KILL', $victim;
my $t_kill = time;

# pgbench loses all its connections and stops on its own
eval { $pgbench->finish; };
note("pgbench stdout:\n$pb_out");
note("pgbench stderr (last lines):\n" . join("\n", (split /\n/, $pb_err)[-5 .. -1]));

ok(wait_for('SELECT worker_pid IS NOT NULL FROM apicount.stats', 't', 60),
	'the server accepts connections again and the worker is back after the crash');
my $recovery_s = time - $t_kill;
ok($node->log_contains(qr/was terminated by signal 9/, $log_offset),
	'log: the backend was terminated by signal 9');
ok($node->log_contains(qr/all server processes terminated; reinitializing/, $log_offset),
	'log: the postmaster reinitialized shared memory (crash restart)');

# ---- compare rollups with truth ---------------------------------------------------------------
my $truth = $node->safe_psql('postgres', 'SELECT count(*) FROM truth');
my $rollup = $node->safe_psql('postgres',
	"SELECT coalesce(sum(calls), 0) FROM apicount.api_minute WHERE path LIKE '/crash/%'");
my $caller_rollup = $node->safe_psql('postgres',
	"SELECT coalesce(sum(calls), 0) FROM apicount.caller_minute WHERE path LIKE '/crash/%'");
my $loss = $truth - $rollup;

cmp_ok($truth, '>', 1000, "pgbench committed a meaningful number of hits ($truth)");
cmp_ok($rollup, '<=', $truth, "rollup total ($rollup) <= committed hits ($truth)");
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM (SELECT path, count(*) AS n FROM truth GROUP BY path) t
	FULL JOIN (SELECT path, sum(calls) AS c FROM apicount.api_minute
	           WHERE path LIKE '/crash/%' GROUP BY path) r USING (path)
	WHERE coalesce(r.c, 0) > coalesce(t.n, 0)}),
	'0', 'no path has more calls in api_minute than committed hits in truth');
is($caller_rollup, $rollup, 'caller_minute and api_minute hold the same total');
is($node->safe_psql('postgres',
		"SELECT coalesce(sum(calls), 0) FROM apicount.api_hour WHERE path LIKE '/crash/%'"),
	$rollup, 'api_hour and api_minute hold the same total (one flush transaction writes both)');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM apicount.api_minute WHERE path LIKE '/crash/%'
	AND (ok + client_errors + server_errors <> calls OR latency_count <> calls)}),
	'0', 'every rollup row is internally consistent (status classes and latency count add up)');

# every hit committed before the last observed flush started is in the rollups
my $must_have = $node->safe_psql('postgres', qq{
	SELECT count(*) FROM truth
	WHERE pg_xact_commit_timestamp(xmin) <
	      '$last_flush_at'::timestamptz - $last_flush_ms * interval '1 millisecond' - interval '200 milliseconds'});
cmp_ok($rollup, '>=', $must_have,
	"rollups ($rollup) hold at least the $must_have hits committed before the last observed flush started ($last_flush_at)"
);

# loss bound: the most rows committed in any window of one flush interval (+ flush time, slack)
my $win_ms = int(($max_gap_ms > $FLUSH_S * 1000 + $max_flush_ms ? $max_gap_ms : $FLUSH_S * 1000 + $max_flush_ms) + 250);
my ($max_1s, $max_win, $rate) = split /\|/, $node->safe_psql('postgres', qq{
	WITH c AS (SELECT pg_xact_commit_timestamp(xmin) AS t FROM truth)
	SELECT (SELECT max(n) FROM (SELECT count(*) OVER (ORDER BY committed_at
	            RANGE BETWEEN interval '1 second' PRECEDING AND CURRENT ROW) AS n FROM truth) w),
	       (SELECT max(n) FROM (SELECT count(*) OVER (ORDER BY t
	            RANGE BETWEEN interval '$win_ms milliseconds' PRECEDING AND CURRENT ROW) AS n FROM c) w),
	       round(count(*) / greatest(extract(epoch FROM max(t) - min(t)), 0.001))
	FROM c});
# the time span the lost hits were committed in: from the first lost commit to the last commit
my $loss_span = $node->safe_psql('postgres', qq{
	WITH c AS (SELECT pg_xact_commit_timestamp(xmin) AS t FROM truth ORDER BY 1)
	SELECT coalesce(round(extract(epoch FROM (SELECT max(t) FROM c) -
	                (SELECT t FROM c OFFSET $rollup LIMIT 1)) * 1000), 0)});
diag(sprintf(
		'crash: committed %d hits (%d/s), rollups %d, LOSS %d hits (%.2f s of traffic at the mean rate; '
		  . 'the lost commits span %d ms); max in any 1 s window %d, in any %d ms window %d; '
		  . 'longest flush seen %.1f ms, longest flush-to-flush gap seen %d ms; killed %d ms after the last flush ended; recovery to a running worker %.1f s',
		$truth, $rate, $rollup, $loss, $rate ? $loss / $rate : 0,
		$loss_span, $max_1s, $win_ms, $max_win, $max_flush_ms, $max_gap_ms, $age_ms, $recovery_s));
cmp_ok($loss, '<=', $max_win,
	"loss ($loss) <= the most hits committed in one flush interval + flush time ($max_win in $win_ms ms)"
);
cmp_ok($loss_span, '<=', $win_ms,
	"the lost hits were all committed within the last flush interval + flush time ($loss_span ms <= $win_ms ms)"
);

# ---- after recovery -----------------------------------------------------------------------------
is($node->safe_psql('postgres', 'SELECT hits FROM apicount.stats'),
	'0', 'shared memory was reinitialized (stats.hits = 0)');
$node->safe_psql('postgres',
	"INSERT INTO apicount.requests (path, status) SELECT '/after/crash', 200 FROM generate_series(1, 17)");
is($node->safe_psql('postgres',
		"SELECT calls FROM apicount.top_apis(100, '1 minute') WHERE path = '/after/crash'"),
	'17', 'ingest works after recovery: new hits show up in top_apis at once');
my ($ret, $out, $err) = $node->psql('postgres', 'SELECT apicount.flush()');
is($ret, 0, 'flush() works after recovery') or diag($err);
is($node->safe_psql('postgres',
		"SELECT sum(calls) FROM apicount.api_minute WHERE path = '/after/crash'"),
	'17', 'the new hits are flushed into api_minute');
is($node->safe_psql('postgres',
		"SELECT sum(calls) FROM apicount.api_minute WHERE path LIKE '/crash/%'"),
	$rollup, 'the rollups of before the crash are unchanged by later flushes (nothing replayed twice)');

$node->stop('fast');
done_testing();
