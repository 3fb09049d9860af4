# 016_savepoints_past_bound.pl — savepoints whose level went past its memory bound (issue 14):
# a level of pending hits holds at most apicount.max_entries caller keys and folds the rest
# into "(other callers)"; released, rolled back or failed, the counts stay those of the rows
# that committed.  Expected counts are computed here, row by row.
#
# apicount.max_entries = 1000 (the minimum).  In one minute, one session:
#  a. 800 distinct callers of /p; SAVEPOINT a; 800 of /q; RELEASE a (the parent goes past
#     its bound while merging); COMMIT;
#  b. BEGIN; 10 calls of /s0; SAVEPOINT b; 1,500 distinct callers of /r (past the bound);
#     an error; ROLLBACK TO b; 10 calls of /s; RELEASE b; COMMIT;
#  c. BEGIN; SAVEPOINT c; 1,500 distinct callers of /t; RELEASE c; an error; ROLLBACK;
#  d. BEGIN; SAVEPOINT d; 1,200 distinct callers of /u; 1/0 inside the INSERT's own
#     statement (the statement fails past the bound); ROLLBACK TO d; 5 calls of /u; COMMIT.
# Checks after the flush: api_minute per path equals the expected counts (and /r, /t hold no
# row); per minute and API, caller rows + "(other callers)" = api_minute; live totals too.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use ApicountTest qw($CALLERS_ADD_UP);

my $node = PostgreSQL::Test::Cluster->new('savepoints');
$node->init;
$node->append_conf('postgresql.conf',
	"shared_preload_libraries = 'apicount'\n"
	  . "apicount.max_entries = 1000\n"
	  . "apicount.flush_interval = '1h'\n"
	  . "timezone = 'UTC'\n");
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION apicount');
sub q1 { return $node->safe_psql('postgres', $_[0]); }

my $sec = q1("SELECT extract(second FROM now())::int");
sleep(61 - $sec) if $sec > 30;
my $minute = q1("SELECT date_trunc('minute', now())");
my $range = "'$minute', '$minute'::timestamptz + interval '1 minute'";

# n distinct callers of a path, one call each, IPs from a base
sub ins
{
	my ($path, $n, $base) = @_;
	return "INSERT INTO apicount.requests (path, client_ip) "
	  . "SELECT '$path', '$base'::inet + g FROM generate_series(1, $n) g;";
}
my %expect;

# a. released past the bound
q1("BEGIN; " . ins('/p', 800, '10.1.0.0') . " SAVEPOINT a; " . ins('/q', 800, '10.2.0.0')
	  . " RELEASE a; COMMIT;");
$expect{'/p'} = 800;
$expect{'/q'} = 800;
# the level held 1,000 caller keys (max_entries): the other 600 of the 1,600 were folded there
# (by the backend, so no summary has them: stats.folded_unsummarized)
is(q1('SELECT folded_unsummarized FROM apicount.stats'), 800 + 800 - 1000,
	'a: the release went past the level\'s bound (600 calls folded by the backend)');

# b. rolled back past the bound, then released
my ($rc, $out, $err) = $node->psql('postgres',
	"BEGIN; " . ins('/s0', 10, '10.9.0.0') . " SAVEPOINT b; " . ins('/r', 1500, '10.3.0.0')
	  . " SELECT 1/0; ROLLBACK TO b; " . ins('/s', 10, '10.4.0.0') . " RELEASE b; COMMIT;", on_error_stop => 0);
like($err, qr/division by zero/, 'b: the error inside the savepoint happened');
$expect{'/s0'} = 10;
$expect{'/s'} = 10;

# c. released past the bound, then the whole transaction fails
($rc, $out, $err) = $node->psql('postgres',
	"BEGIN; SAVEPOINT c; " . ins('/t', 1500, '10.5.0.0') . " RELEASE c; SELECT 1/0; COMMIT;", on_error_stop => 0);
like($err, qr/division by zero/, 'c: the transaction failed after the release');

# d. the statement itself fails once past the bound
($rc, $out, $err) = $node->psql('postgres',
	"BEGIN; SAVEPOINT d; INSERT INTO apicount.requests (path, client_ip) "
	  . "SELECT '/u', '10.6.0.0'::inet + g FROM generate_series(1, 1201) g WHERE 1 / (1201 - g) >= 0; "
	  . "ROLLBACK TO d; " . ins('/u', 5, '10.7.0.0') . " COMMIT;", on_error_stop => 0);
like($err, qr/division by zero/, 'd: the INSERT failed on its 1,201st row');
$expect{'/u'} = 5;

my $sent = 0;
$sent += $_ for values %expect;
my $want = join(',', map { "$_=$expect{$_}" } sort keys %expect);
is(q1("SELECT string_agg(path || '=' || calls, ',' ORDER BY path) FROM "
	  . "(SELECT path, sum(calls) AS calls FROM apicount.minutes($range, '1 minute') GROUP BY path) x"),
	$want, 'live: the calls per path are those of the rows that committed');

q1('SELECT apicount.flush()');
is(q1("SELECT string_agg(path || '=' || calls, ',' ORDER BY path) FROM "
	  . "(SELECT path, sum(calls) AS calls FROM apicount.api_minute WHERE bucket = '$minute' GROUP BY path) x"),
	$want, 'api_minute: the calls per path are those of the rows that committed');
is(q1("SELECT coalesce(sum(calls), 0) FROM apicount.caller_minute WHERE bucket = '$minute'"),
	$sent, "caller_minute: the minute's caller rows add up to every committed call ($sent)");
is(q1($CALLERS_ADD_UP),
	'0', 'per minute and API, caller rows + "(other callers)" = api_minute');
is(q1("SELECT count(*) FROM apicount.caller_minute WHERE bucket = '$minute' AND path IN ('/r', '/t')"),
	'0', 'no caller row of the rolled-back /r and /t');

$node->stop;
done_testing();
