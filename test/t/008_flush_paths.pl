# 008_flush_paths.pl — the flush writes each caller_minute row the cheapest safe way (a plain
# INSERT for rows not written yet, an UPDATE by TID for rows it wrote, the upsert otherwise), and
# every row stays exact when its guesses are wrong.
#
# apicount.flush_interval = 1h: flushes happen only through apicount.flush().  200 keys (path,
# client_ip) are hit in minute F, three minutes ahead of the test's start (a minute no flush of
# this worker has seen yet).  The expected rows are counted in Perl from the hits sent, plus what
# the test itself did to the table as superuser.
#
# Proves, checking every row of the keys against the truth after each flush, and the stats
# counters caller_rows_inserted / _updated / _upserted by their deltas:
#  1. first flush: 200 rows inserted;
#  2. the first row deleted by someone else and VACUUM FULL: every kept TID now holds another
#     key's row or none, so nothing is updated by TID and all 200 rows are upserted (the keys
#     get different hit counts, so counts landing on another key's row would show);
#  3. the next flush: 200 rows updated by TID;
#  4. a row updated by someone else (its TID stale) and a row deleted: 198 updated, 2 upserted;
#     the updated row keeps the other writer's +1000, the deleted row holds only the new hits;
#  5. a row already written by someone else for a key the worker thinks new: the plain INSERT
#     fails, the rows are upserted (caller_rows_inserted unchanged), the server log says so, and
#     the row holds both;
#  6. after the worker restarts: every row upserted (no plain INSERT tried, no failure logged),
#     still exact; the next flush updates by TID;
#  7. a CHECK constraint failing the plain INSERT fails the flush, leaves the worker with no
#     transaction open, and the next flush (constraint dropped) writes every row exactly.
# Rows are compared on calls, ok, client_errors and server_errors; keys have mixed statuses,
# some no client_ip and some a user id.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('flush_paths');
$node->init;
$node->append_conf('postgresql.conf',
	"shared_preload_libraries = 'apicount'\n"
	  . "apicount.flush_interval = '1h'\n"
	  . "timezone = 'UTC'\n");
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION apicount');

my $nkeys = 200;
my $f = $node->safe_psql('postgres',
	"SELECT date_trunc('minute', now()) + interval '3 minutes'");
my $f2 = $node->safe_psql('postgres', "SELECT '$f'::timestamptz + interval '1 minute'");
my $f3 = $node->safe_psql('postgres', "SELECT '$f'::timestamptz + interval '2 minutes'");

my %truth;    # "path|bucket" -> [calls, ok, client_errors, server_errors]

# key i: path /fp/k<i>; no client_ip when i % 10 = 8, user id u<i> when i % 10 = 9 (both halves of
# the NULL-safe key check); status 200, 404 or 500 by i % 3
sub status_of { my $i = shift; return (200, 404, 500)[$i % 3] }

# $hits hits on each key i < $n in minute $minute; with $vary, key i gets $hits + i % 5 hits,
# so that counts added to another key's row show
sub hit_all
{
	my ($hits, $minute, $n, $vary) = @_;
	$n //= $nkeys;
	my $extra = $vary ? 'i % 5' : '0';
	$node->safe_psql('postgres',
		"INSERT INTO apicount.requests (ts, method, path, client_ip, user_id, status, latency_ms) "
		  . "SELECT '$minute', 'GET', '/fp/k' || i, "
		  . "CASE WHEN i % 10 <> 8 THEN ('10.9.' || (i / 250) || '.' || (i % 250))::inet END, "
		  . "CASE WHEN i % 10 = 9 THEN 'u' || i END, (ARRAY[200, 404, 500])[i % 3 + 1], 1 "
		  . "FROM generate_series(0, $n - 1) i, generate_series(1, $hits + $extra)");
	for my $i (0 .. $n - 1)
	{
		my $c = $hits + ($vary ? $i % 5 : 0);
		my $t = $truth{"/fp/k$i|$minute"} //= [ 0, 0, 0, 0 ];
		$t->[0] += $c;
		$t->[ 1 + $i % 3 ] += $c;
	}
}

sub stats
{
	my @v = split /\|/, $node->safe_psql('postgres',
		'SELECT caller_rows_inserted, caller_rows_updated, caller_rows_upserted FROM apicount.stats');
	return { inserted => $v[0], updated => $v[1], upserted => $v[2] };
}

# flush; returns the stats deltas
sub flush
{
	my $before = stats();
	$node->safe_psql('postgres', 'SELECT apicount.flush()');
	my $after = stats();
	return { map { $_ => $after->{$_} - $before->{$_} } keys %$after };
}

# every row of the test's keys (all four counters) against %truth: mismatches (0 = exact)
sub rows_off
{
	my $label = shift;
	my %got = map { my ($k, $c) = split /\t/; ($k => $c) } split /\n/,
	  $node->safe_psql('postgres',
		"SELECT path || '|' || bucket, concat_ws(',', calls, ok, client_errors, server_errors) "
		  . "FROM apicount.caller_minute WHERE path LIKE '/fp/%'",
		extra_params => [ '-F', "\t" ]);
	my $off = 0;
	for my $k (sort keys %truth)
	{
		my $want = join ',', @{ $truth{$k} };
		my $g = $got{$k} // 'missing';
		if ($g ne $want) { diag("$label: $k has $g, expected $want") if $off < 5; $off++ }
	}
	for my $k (keys %got) { $off++ unless exists $truth{$k} }
	return $off;
}

# 1. new rows
hit_all(3, $f, $nkeys, 1);
my $d = flush();
is($d->{inserted}, $nkeys, '1: first flush inserts every row');
is($d->{updated} + $d->{upserted}, 0, '1: nothing updated or upserted');
is(rows_off('1'), 0, '1: every row equals the hits sent');

# 2. someone else deletes the first row, and VACUUM FULL moves every other row one place back:
# each TID the worker kept now holds another key's row, or none
$node->safe_psql('postgres',
	"DELETE FROM apicount.caller_minute WHERE path = '/fp/k0' AND bucket = '$f'");
$truth{"/fp/k0|$f"} = [ 0, 0, 0, 0 ];
$node->safe_psql('postgres', 'VACUUM FULL apicount.caller_minute');
hit_all(1, $f, $nkeys, 1);
$d = flush();
is($d->{updated}, 0, '2: after VACUUM FULL no TID holds its key: nothing updated there');
is($d->{upserted}, $nkeys, '2: every row upserted');
is(rows_off('2'), 0, '2: every row exact (the deleted row re-made with the new hits only)');

# 3. rows written before: update by TID
hit_all(2, $f);
$d = flush();
is($d->{updated}, $nkeys, '3: the next flush updates every row by TID');
is($d->{inserted} + $d->{upserted}, 0, '3: nothing inserted or upserted');
is(rows_off('3'), 0, '3: every row exact');

# 4. someone else updates one row (its TID goes stale) and deletes another
$node->safe_psql('postgres',
	"UPDATE apicount.caller_minute SET calls = calls + 1000 WHERE path = '/fp/k3' AND bucket = '$f'");
$truth{"/fp/k3|$f"}[0] += 1000;
$node->safe_psql('postgres',
	"DELETE FROM apicount.caller_minute WHERE path = '/fp/k1' AND bucket = '$f'");
$truth{"/fp/k1|$f"} = [ 0, 0, 0, 0 ];
hit_all(1, $f, $nkeys, 1);
$d = flush();
is($d->{updated}, $nkeys - 2, '4: rows at their TIDs updated there');
is($d->{upserted}, 2, '4: the updated and the deleted row upserted');
is(rows_off('4'), 0, "4: every row exact (the other writer's +1000 kept, the deleted row re-made)");

# 5. a row the worker has not written is already there
$node->safe_psql('postgres',
	"INSERT INTO apicount.caller_minute (bucket, method, path, client_ip, calls, ok) "
	  . "VALUES ('$f2', 'GET', '/fp/k7', '10.9.0.7', 500, 500)");
$truth{"/fp/k7|$f2"} = [ 500, 500, 0, 0 ];
my $log_offset = -s $node->logfile;
hit_all(2, $f2, 50);
$d = flush();
is($d->{inserted}, 0, '5: the plain INSERT wrote nothing');
is($d->{upserted}, 50, '5: all 50 rows upserted instead');
is(rows_off('5'), 0, '5: every row exact, the row already there adds the hits to its 500');
like(slurp_file($node->logfile, $log_offset),
	qr/caller_minute already had rows the worker had not written/,
	'5: the server log says why');

# 6. a new worker knows nothing: rows up to the latest minute of the entries it finds may exist,
# so it upserts them (no failed INSERT), then updates them by TID
my $old_pid = $node->safe_psql('postgres', 'SELECT worker_pid FROM apicount.stats');
$node->safe_psql('postgres', "SELECT pg_terminate_backend($old_pid)");
$node->poll_query_until('postgres',
	"SELECT worker_pid IS NOT NULL AND worker_pid <> $old_pid FROM apicount.stats")
  or die 'the worker did not come back';
$log_offset = -s $node->logfile;
hit_all(1, $f);
$d = flush();
is($d->{upserted}, $nkeys, '6: a restarted worker upserts every row');
is($d->{inserted}, 0, '6: and tries no plain INSERT');
unlike(slurp_file($node->logfile, $log_offset), qr/already had rows/,
	'6: so no INSERT failed');
is(rows_off('6a'), 0, '6: every row exact');
hit_all(1, $f);
$d = flush();
is($d->{updated}, $nkeys, '6: then updates them by TID');
is(rows_off('6b'), 0, '6: every row exact');

# 7. an error other than a unique violation in the plain INSERT fails the flush; the worker
# is left with no transaction open, and the next flush writes everything
$node->safe_psql('postgres',
	'ALTER TABLE apicount.caller_minute ADD CONSTRAINT fp_check CHECK (calls < 1000) NOT VALID');
hit_all(1000, $f3, 3);    # new rows, so the plain INSERT writes them
my ($ret, $out, $err) = $node->psql('postgres', 'SELECT apicount.flush()');
isnt($ret, 0, '7: the flush fails on the check constraint');
is($node->safe_psql('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'apicount worker' "
		  . "AND backend_xid IS NULL AND xact_start IS NULL"),
	'1', '7: the worker has no transaction open after the failed flush');
$node->safe_psql('postgres', 'ALTER TABLE apicount.caller_minute DROP CONSTRAINT fp_check');
hit_all(1, $f);
$d = flush();
is($d->{inserted} + $d->{updated} + $d->{upserted}, $nkeys + 3, '7: the next flush writes every row');
is(rows_off('7'), 0, '7: every row exact');

$node->stop;
done_testing();
