# 006_entry_table.pl — the shared entry table under removal and reuse.
#
# Entries of minutes that left the live horizon are freed by the worker after a flush
# (max_entries 1000 and max_apis 1000, so 3,024 entries with the reserve: 16 partition
# indexes of 512 slots, filled to about 90 each since every key has an API entry and a
# caller entry, so probe chains form and deletions shift them);
# freeing shifts index slots (backward-shift deletion) next to entries that stay, and
# new keys reuse the freed pool entries.  Proves, over 6 rounds with random key sets:
#   - after old-minute entries are freed, every remaining key is still found: one more
#     hit per key lands on its live entry (calls equal the truth per minute and path),
#     never on a second entry;
#   - apicount.live never holds two entries with the same key in one tier;
#   - new keys reuse freed entries (no overflow: at most 6 x 60 kept entries, twice that
#     if rounds cross a minute boundary, plus 350 old ones, stay under max_entries in
#     each tier);
#   - api_minute equals a plain truth table (GROUP BY over the same rows) at the end.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use lib "$ENV{APICOUNT_ROOT}/test/perl";
use ApicountTest qw(wait_for);

my $node = PostgreSQL::Test::Cluster->new('entry_table');
$node->init;
$node->append_conf('postgresql.conf',
	"shared_preload_libraries = 'apicount'\n"
	  . "apicount.max_entries = 1000\n"
	  . "apicount.max_apis = 1000\n"
	  . "apicount.flush_interval = '1h'\n"
	  . "log_statement = none\n"
	  . "timezone = 'UTC'\n");
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION apicount');
$node->safe_psql('postgres',
	'CREATE TABLE truth (ts timestamptz, path text, client_ip inet)');

srand(6);
for my $round (1 .. 6)
{
	# keys that stay (current minute) and keys that will be freed (10 minutes ago),
	# interleaved in random order so that they share partitions and probe chains
	my @keep = map { "/keep/r${round}x$_" } 1 .. 60;
	my @old = map { "/old/r${round}x$_" } 1 .. 350;
	my @rows;
	push @rows, map { "(now(), '$_', '10.0.$round.1')" } @keep;
	push @rows,
	  map { "(now() - interval '10 minutes', '$_', '10.0.$round.2')" } @old;
	for (my $i = $#rows; $i > 0; $i--)
	{
		my $j = int(rand($i + 1));
		@rows[ $i, $j ] = @rows[ $j, $i ];
	}
	my $values = join(",\n", @rows);
	$node->safe_psql(
		'postgres', qq{
		INSERT INTO truth VALUES $values;
		INSERT INTO apicount.requests (ts, path, client_ip, status)
		SELECT ts, path, client_ip, 200 FROM truth
		WHERE path LIKE '/keep/r${round}x%' OR path LIKE '/old/r${round}x%';});

	# flush: the worker writes everything, then frees the idle old-minute entries
	$node->safe_psql('postgres', 'SELECT apicount.flush()');
	ok( wait_for(
			$node,
			"SELECT count(*) FROM apicount.live WHERE path LIKE '/old/r${round}x%'",
			'0', 30),
		"round $round: the 350 old-minute entries were freed");

	# every kept key is still found: a second hit lands on the same entry
	$node->safe_psql(
		'postgres', qq{
		BEGIN;
		INSERT INTO truth SELECT now(), path, client_ip FROM truth
		WHERE path LIKE '/keep/r${round}x%';
		INSERT INTO apicount.requests (path, client_ip, status)
		SELECT path, client_ip, 200 FROM truth
		WHERE path LIKE '/keep/r${round}x%' AND ts = now();
		COMMIT;});
	my ($bad, $n) = split /,/, $node->safe_psql(
		'postgres', qq{
		WITH t AS (SELECT date_trunc('minute', ts) AS bucket, path, count(*) AS calls
		           FROM truth WHERE path LIKE '/keep/r${round}x%' GROUP BY 1, 2),
		     l AS (SELECT bucket, path, calls FROM apicount.live
		           WHERE path LIKE '/keep/r${round}x%' AND tier = 'api'),
		     c AS (SELECT bucket, path, calls FROM apicount.live
		           WHERE path LIKE '/keep/r${round}x%' AND tier = 'caller')
		SELECT count(*) FILTER (WHERE l.calls IS DISTINCT FROM t.calls
		                           OR c.calls IS DISTINCT FROM t.calls) || ',' || count(*)
		FROM t FULL JOIN l USING (bucket, path) FULL JOIN c USING (bucket, path)});
	is($bad, 0,
		"round $round: every kept key's live entries (API and caller) hold exactly its hits (both of them)");
	cmp_ok($n, ">=", 60, "round $round: $n kept (minute, path) entries compared");
	is( $node->safe_psql(
			'postgres', q{
		SELECT count(*) FROM (SELECT bucket, method, path, client_ip, user_id, tier
		                      FROM apicount.live GROUP BY 1, 2, 3, 4, 5, 6
		                      HAVING count(*) > 1) d}),
		'0', "round $round: no key has two live entries");
}

is($node->safe_psql('postgres', "SELECT overflow_hits || '|' || folded_calls FROM apicount.stats"),
	'0|0', 'freed entries were reused: no hit went to overflow, no caller was folded');

$node->safe_psql('postgres', 'SELECT apicount.flush()');
is( $node->safe_psql(
		'postgres', q{
	WITH t AS (SELECT date_trunc('minute', ts) AS bucket, path, count(*) AS calls
	           FROM truth GROUP BY 1, 2)
	SELECT count(*) FILTER (WHERE a.calls IS DISTINCT FROM t.calls)
	FROM t FULL JOIN apicount.api_minute a USING (bucket, path)}),
	'0', 'api_minute equals the truth table, row for row');

$node->stop;
done_testing();
