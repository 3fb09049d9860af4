# 022_flush_blocked.pl — a blocked or failing flush never blocks ingest and loses nothing.
#
# apicount.flush_interval = '1s'.  8 pgbench clients (-c 8 -j 2) ingest; each transaction
# records one hit and inserts one row into the logged table `truth` (same transaction), so the
# committed hits are known independently of apicount.
#
# Part 1 — a lock on the rollup table.  While pgbench runs, another session holds ACCESS
# EXCLUSIVE on apicount.api_minute for 30 s (BEGIN; LOCK TABLE; pg_sleep(30); COMMIT).  Proves:
#  - no application insert fails: pgbench reports 0 failed transactions and no errors; its
#    latency (max and p99, overall and for transactions that ended while the lock was held, from
#    pgbench's per-transaction log) and its throughput during the lock are reported with diag(),
#    not asserted;
#  - flushes fail meanwhile (stats.flush_failures grows; the log says lock timeout) and do not
#    move stats.flushes;
#  - the worker catches up after the release: the catch-up time (release -> stats.flushes
#    increases, and release -> api_minute holds every hit committed before the release) is
#    reported and bounded loosely (< 15 s);
#  - nothing is lost or doubled: after a final flush, api_minute and caller_minute equal the
#    truth table, per path and in total.
# Part 2 — the rollup table is renamed away (ALTER TABLE apicount.api_minute RENAME TO
# api_minute_x; allowed for the owner even though it is an extension member).  Proves:
#  - flushes fail with a clear logged error naming the missing relation; stats.flush_failures
#    grows; flush() raises 55000 "apicount flush failed" with the cause in its DETAIL;
#  - the counts stay in memory: apicount.live shows them unflushed (in both tiers), and caller_minute got no
#    partial write (both rollups are written in one transaction);
#  - top_apis fails with 42P01 naming the missing table (documented: query functions read the
#    rollups), while the counts wait in shared memory;
#  - after renaming back, the worker resumes on its own and the totals are exact again.
# Part 3 — a member of apicount_reader calls apicount._read_begin() (EXECUTE is granted to the
# reader role) and leaves its transaction open for 14 s.  Proves: ingest goes on (no insert
# waits, slowest < 3 s), flushes fail meanwhile, and once the transaction ends the worker catches
# up and totals equal truth.  Reported, not asserted: how long top_apis calls of another reader
# wait meanwhile (the worker polls for its lock instead of queueing, so they should not wait).
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

my $LOCK_S = 30;

my $node = PostgreSQL::Test::Cluster->new('blocked');
$node->init;
$node->append_conf('postgresql.conf',
	"shared_preload_libraries = 'apicount'\n"
	  . "apicount.flush_interval = '1s'\n"
	  . "max_connections = 30\n"
	  . "log_statement = none\n"
	  . "timezone = 'UTC'\n");
$node->start;
$node->safe_psql('postgres', q{
	CREATE EXTENSION apicount;
	CREATE TABLE truth (id bigserial PRIMARY KEY, path text NOT NULL,
	                    committed_at timestamptz NOT NULL DEFAULT clock_timestamp());});

sub q1 { return $node->safe_psql('postgres', $_[0]); }

sub wait_for { return ApicountTest::wait_for($node, @_); }

# per-path comparison of a rollup with truth: number of paths that differ
sub diff_paths
{
	my ($table, $like) = @_;
	return q1(qq{
		SELECT count(*) FROM (SELECT path, count(*) AS n FROM truth WHERE path LIKE '$like' GROUP BY path) t
		FULL JOIN (SELECT path, sum(calls) AS c FROM apicount.$table
		           WHERE path LIKE '$like' GROUP BY path) r USING (path)
		WHERE coalesce(r.c, 0) <> coalesce(t.n, 0)});
}

ok(wait_for('SELECT worker_pid IS NOT NULL FROM apicount.stats', 't', 20), 'worker is running');

# ---- part 1: ACCESS EXCLUSIVE on api_minute for 30 s while pgbench ingests ---------------------
my $tmp = $PostgreSQL::Test::Utils::tmp_check;
my $script = "$tmp/022_ingest.sql";
PostgreSQL::Test::Utils::append_to_file($script, q{
\set p random(1, 30)
BEGIN;
INSERT INTO apicount.requests (path, client_ip, status, latency_ms) VALUES ('/blk/p' || :p, ('10.30.0.' || (:p % 5))::inet, 200, :p);
INSERT INTO truth (path) VALUES ('/blk/p' || :p);
COMMIT;
});
my $logprefix = "$tmp/022_pgb";
my ($pb_out, $pb_err) = ('', '');
my $pgbench = IPC::Run::start(
	[ 'pgbench', '-n', '-c', '8', '-j', '2', '-T', $LOCK_S + 12, '-f', $script,
	  '-l', "--log-prefix=$logprefix",
	  '-h', $node->host, '-p', $node->port, 'postgres' ],
	'>', \$pb_out, '2>', \$pb_err, IPC::Run::timeout(180));

sleep 3;
cmp_ok(q1('SELECT flushes FROM apicount.stats'), '>', 0, 'flushes run before the lock');
my $off = -s $node->logfile;

my ($lo, $le) = ('', '');
my $locker = IPC::Run::start(
	[ 'psql', '-X', '-At', '-v', 'ON_ERROR_STOP=1', '-h', $node->host, '-p', $node->port,
	  '-d', 'postgres', '-c', "BEGIN; LOCK TABLE apicount.api_minute IN ACCESS EXCLUSIVE MODE; "
	  . "SELECT pg_sleep($LOCK_S); COMMIT;" ],
	'>', \$lo, '2>', \$le, IPC::Run::timeout(120));

# wait for the lock to be granted
my $t_lock;
for (1 .. 200)
{
	$locker->pump_nb;
	$pgbench->pump_nb;
	if (q1("SELECT count(*) FROM pg_locks WHERE relation = 'apicount.api_minute'::regclass "
			. "AND mode = 'AccessExclusiveLock' AND granted") eq '1')
	{
		$t_lock = time;
		last;
	}
	usleep(20_000);
}
ok(defined $t_lock, 'the other session holds ACCESS EXCLUSIVE on apicount.api_minute');
$t_lock //= time;
# a flush that held its table lock before LOCK TABLE commits first; let its stats land
usleep(300_000);
my ($flushes0, $fail0) = split /\|/, q1('SELECT flushes, flush_failures FROM apicount.stats');

# while the lock is held: sample stats
my ($flushes_during, $fail_during) = ($flushes0, $fail0);
while ($locker->pumpable)
{
	$locker->pump_nb;
	$pgbench->pump_nb;
	my ($f, $ff) = split /\|/, q1('SELECT flushes, flush_failures FROM apicount.stats');
	($flushes_during, $fail_during) = ($f, $ff) if time < $t_lock + $LOCK_S - 1;
	last unless $locker->pumpable;
	usleep(100_000);
}
$locker->finish;
my $t_release = time;
my $truth_at_release = q1("SELECT count(*) FROM truth");
is($le, '', 'the lock holder committed without error') or diag($le);

# catch-up: release -> flushes increase, and -> api_minute holds every hit committed before
my ($catch_flush_ms, $catch_rollup_ms);
my ($flushes_rel) = q1('SELECT flushes FROM apicount.stats');
while (time - $t_release < 20)
{
	$pgbench->pump_nb;
	my ($f, $sum) = split /\|/, q1(
		"SELECT flushes, (SELECT coalesce(sum(calls), 0) FROM apicount.api_minute WHERE path LIKE '/blk/%') FROM apicount.stats"
	);
	$catch_flush_ms //= int((time - $t_release) * 1000) if $f > $flushes_rel;
	if ($sum >= $truth_at_release)
	{
		$catch_rollup_ms = int((time - $t_release) * 1000);
		last;
	}
	usleep(20_000);
}
$catch_flush_ms //= -1;
ok(defined $catch_rollup_ms, 'the worker catches up after the lock is released');
$catch_rollup_ms //= -1;
cmp_ok($catch_rollup_ms, '<', 15_000, "catch-up within 15 s ($catch_rollup_ms ms)");

is($flushes_during, $flushes0, 'no flush completed while the lock was held');
cmp_ok($fail_during, '>', $fail0, 'stats.flush_failures grew while the lock was held ('
	  . ($fail_during - $fail0) . ' failures)');
ok($node->log_contains(qr/apicount: flush failed, counts stay in memory.*lock timeout/, $off),
	'log: flush failed on lock timeout, counts stay in memory');

$pgbench->finish;
my $pb_rc = $pgbench->result(0);
is($pb_rc, 0, 'pgbench exits 0') or diag($pb_err);
like($pb_out, qr/number of failed transactions: 0 /, 'pgbench: 0 failed transactions');
unlike($pb_err, qr/error|abort/i, 'pgbench: no client error or abort');

# latency from pgbench's per-transaction logs:
#   client_id transaction_no latency_us script_no epoch_s epoch_us
my (@all, @during);
for my $f (glob("$logprefix.*"))
{
	open my $fh, '<', $f or die "$f: $!";
	while (<$fh>)
	{
		my @c = split ' ';
		next unless @c >= 6;
		my $lat = $c[2] / 1000.0;
		my $end = $c[4] + $c[5] / 1e6;
		push @all, $lat;
		push @during, $lat if $end >= $t_lock && $end <= $t_release;
	}
	close $fh;
}
sub pct
{
	my ($p, @v) = @_;
	return 0 unless @v;
	@v = sort { $a <=> $b } @v;
	return $v[ int($p * $#v) ];
}
my ($tps) = $pb_out =~ /tps = ([\d.]+)/;
diag(sprintf(
		'lock on api_minute for %d s: pgbench %s tps overall; %d tx in total, %d while locked '
		  . '(%.0f tx/s); latency ms overall p99 %.2f max %.2f; while locked p99 %.2f max %.2f; '
		  . 'flush failures during the lock %d; catch-up after release: first flush %d ms, '
		  . 'rollups complete %d ms',
		$LOCK_S, $tps // '?', scalar(@all), scalar(@during),
		@during / (($t_release - $t_lock) || 1),
		pct(0.99, @all), pct(1, @all), pct(0.99, @during), pct(1, @during),
		$fail_during - $fail0, $catch_flush_ms, $catch_rollup_ms));
cmp_ok(scalar(@during), '>', 0, 'transactions kept committing while the lock was held');

my ($ret, $out, $err) = $node->psql('postgres', 'SELECT apicount.flush()');
is($ret, 0, 'final flush() works') or diag($err);
my $truth_n = q1("SELECT count(*) FROM truth WHERE path LIKE '/blk/%'");
is(q1("SELECT sum(calls) FROM apicount.api_minute WHERE path LIKE '/blk/%'"),
	$truth_n, "api_minute total equals the $truth_n committed hits (nothing lost or doubled)");
is(diff_paths('api_minute', '/blk/%'), '0', 'api_minute equals truth per path');
is(diff_paths('caller_minute', '/blk/%'), '0', 'caller_minute equals truth per path');

# ---- part 2: api_minute renamed away ----------------------------------------------------------
q1('SELECT apicount.flush()');
my $fail1 = q1('SELECT flush_failures FROM apicount.stats');
$off = -s $node->logfile;
($ret, $out, $err) = $node->psql('postgres',
	'ALTER TABLE apicount.api_minute RENAME TO api_minute_x');
is($ret, 0, 'ALTER TABLE ... RENAME of the extension member api_minute is allowed (owner)')
  or diag($err);

my $N2 = 50;
for my $i (1 .. 5)
{
	q1("BEGIN;
		INSERT INTO apicount.requests (path, client_ip, status) SELECT '/ren/a', '10.40.0.1', 503 FROM generate_series(1, 10);
		INSERT INTO truth (path) SELECT '/ren/a' FROM generate_series(1, 10);
		COMMIT;");
}
ok(wait_for("SELECT flush_failures >= $fail1 + 2 FROM apicount.stats", 't', 15),
	'renamed: the flushes fail (stats.flush_failures grows by at least 2)');
ok($node->log_contains(
		qr/apicount: flush failed, counts stay in memory and will be retried: relation "apicount.api_minute" does not exist/,
		$off),
	'renamed: the log names the missing relation');
is(q1("SELECT sum(unflushed) FILTER (WHERE tier = 'api') || '|' || sum(unflushed) FILTER (WHERE tier = 'caller') FROM apicount.live WHERE path = '/ren/a'"),
	"$N2|$N2", "renamed: the $N2 hits stay unflushed in shared memory (apicount.live, API tier|caller tier)");
is(q1("SELECT coalesce(sum(calls), 0) FROM apicount.caller_minute WHERE path = '/ren/a'"),
	'0', 'renamed: no partial write to caller_minute');
($ret, $out, $err) = $node->psql('postgres', "\\set VERBOSITY verbose\nSELECT apicount.flush()");
like($err, qr/ERROR:\s+55000:\s+apicount flush failed/, 'renamed: flush() raises 55000 "apicount flush failed"');
like($err, qr/DETAIL:.*api_minute/, 'renamed: ... with the cause in DETAIL');
# Documented (README "Limits"): the query functions read the rollups too (top_apis over a
# sliding window takes the flushed part of avg_latency_ms from api_minute), so while a rollup
# table is missing they fail with PostgreSQL's own clear error instead of a partial answer.
($ret, $out, $err) = $node->psql('postgres',
	"\\set VERBOSITY verbose\nSELECT calls FROM apicount.top_apis(100, '1 minute') WHERE path = '/ren/a'");
isnt($ret, 0, 'renamed: top_apis(n, 1 minute) fails rather than answering in part');
like($err, qr/ERROR:\s+42P01:\s+relation "apicount.api_minute" does not exist/,
	'renamed: ... with 42P01 naming the missing rollup table');

q1('ALTER TABLE apicount.api_minute_x RENAME TO api_minute');
ok(wait_for("SELECT coalesce(sum(calls), 0) FROM apicount.api_minute WHERE path = '/ren/a'",
		$N2, 10),
	'renamed back: the worker resumes on its own and writes the held hits');
is(q1("SELECT sum(unflushed) FROM apicount.live WHERE path = '/ren/a'"), '0',
	'renamed back: nothing left unflushed for the path');
$truth_n = q1('SELECT count(*) FROM truth');
is(q1('SELECT sum(calls) FROM apicount.api_minute'), $truth_n,
	"renamed back: api_minute total equals truth ($truth_n)");
is(diff_paths('api_minute', '%'), '0', 'renamed back: api_minute equals truth per path');
is(diff_paths('caller_minute', '%'), '0', 'renamed back: caller_minute equals truth per path');
is(q1("SELECT sum(server_errors) FROM apicount.api_minute WHERE path = '/ren/a'"),
	$N2, 'renamed back: status classes are right');

# ---- part 3: a reader holds the query functions' share lock in an open transaction ---------------
# apicount_reader may execute apicount._read_begin() (the share lock the worker needs exclusively
# to commit a flush).  A reader that calls it and leaves its transaction open (or runs a long
# query function) makes every flush wait for lock_timeout and fail; while the worker waits, new
# query-function calls of other sessions queue behind its exclusive request.
q1('CREATE ROLE regress_reader LOGIN IN ROLE apicount_reader');
my $fail3 = q1('SELECT flush_failures FROM apicount.stats');
my $flushes3 = q1('SELECT flushes FROM apicount.stats');
my $holder = $node->background_psql('postgres', on_error_stop => 1,
	extra_params => [ '-U', 'regress_reader' ]);
$holder->query_safe('BEGIN');
$holder->query_safe('SELECT apicount._read_begin()');
my ($max_query_s, $max_insert_s, $n_ins, $n_q) = (0, 0, 0, 0);
my $t3 = time;
while (time - $t3 < 14)
{
	my $t = time;
	my ($r, $o, $e) = $node->psql('postgres', "BEGIN;
		INSERT INTO apicount.requests (path, status) VALUES ('/held/a', 200);
		INSERT INTO truth (path) VALUES ('/held/a');
		COMMIT;");
	my $dt = time - $t;
	$max_insert_s = $dt if $dt > $max_insert_s;
	$n_ins++ if $r == 0;
	$t = time;
	($r, $o, $e) = $node->psql('postgres',
		"SELECT count(*) FROM apicount.top_apis(10, '1 minute')",
		extra_params => [ '-U', 'regress_reader' ]);
	$dt = time - $t;
	$max_query_s = $dt if $dt > $max_query_s;
	$n_q++ if $r == 0;
	usleep(100_000);
}
my ($fails_held, $flushes_held) =
  split /\|/, q1('SELECT flush_failures, flushes FROM apicount.stats');
$holder->query_safe('COMMIT');
$holder->quit;
my $t_rel3 = time;
diag(sprintf(
		'reader holding _read_begin() for %.0f s: %d flush failures, %d flushes; %d inserts '
		  . '(slowest %.2f s); %d top_apis calls by another reader (slowest %.2f s)',
		$t_rel3 - $t3, $fails_held - $fail3, $flushes_held - $flushes3, $n_ins, $max_insert_s,
		$n_q, $max_query_s));
cmp_ok($n_ins, '>', 0, 'held share lock: ingest goes on');
cmp_ok($max_insert_s, '<', 3, 'held share lock: no insert waits for the lock (slowest < 3 s)');
cmp_ok($fails_held, '>', $fail3, 'held share lock: flushes fail meanwhile (flush_failures grows)');
my $held_truth = q1("SELECT count(*) FROM truth WHERE path = '/held/a'");
ok(wait_for("SELECT coalesce(sum(calls), 0) FROM apicount.api_minute WHERE path = '/held/a'",
		$held_truth, 15),
	"held share lock: after the commit the worker catches up ($held_truth hits)");
is(q1('SELECT sum(calls) FROM apicount.api_minute'), q1('SELECT count(*) FROM truth'),
	'held share lock: api_minute total equals truth');
is(q1('SELECT sum(calls) FROM apicount.api_hour'), q1('SELECT count(*) FROM truth'),
	'at the end: api_hour total equals truth too');
q1('DROP ROLE regress_reader');

$node->stop('fast');
done_testing();
