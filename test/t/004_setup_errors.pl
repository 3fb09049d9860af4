# 004_setup_errors.pl — CREATE EXTENSION refuses configurations where apicount cannot work.
#
# Proves:
#  - without shared_preload_libraries, CREATE EXTENSION fails with SQLSTATE 55000 and a hint
#    that names shared_preload_libraries, also when apicount.* settings are present in
#    postgresql.conf (a configuration that forgot only the preload), and nothing is created;
#  - with the library preloaded, CREATE EXTENSION in a database other than apicount.database
#    fails with 55000 and a message that names apicount.database, and nothing is created;
#  - with apicount.database pointing at another database, the extension can be created there
#    (and no longer in 'postgres'), and the worker flushes hits into that database.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

# run SQL expecting an error; returns (stderr) with SQLSTATE shown (VERBOSITY verbose)
sub expect_error
{
	my ($node, $db, $sql) = @_;
	my ($ret, $out, $err) = $node->psql($db, "\\set VERBOSITY verbose\n$sql");
	return ($ret, $err);
}

# ---- node without shared_preload_libraries -----------------------------------------------
my $plain = PostgreSQL::Test::Cluster->new('no_preload');
$plain->init;
$plain->append_conf('postgresql.conf', "log_statement = none\n");
$plain->start;

my ($ret, $err) = expect_error($plain, 'postgres', 'CREATE EXTENSION apicount;');
isnt($ret, 0, 'no preload: CREATE EXTENSION fails');
like($err, qr/ERROR:\s+55000:/, 'no preload: SQLSTATE 55000');
like($err, qr/HINT:.*shared_preload_libraries/, 'no preload: hint mentions shared_preload_libraries');
is($plain->safe_psql('postgres', "SELECT count(*) FROM pg_extension WHERE extname = 'apicount'"),
	'0', 'no preload: extension not created');
is($plain->safe_psql('postgres', "SELECT count(*) FROM pg_namespace WHERE nspname = 'apicount'"),
	'0', 'no preload: schema apicount not left behind');

# The same, when postgresql.conf carries apicount settings but the preload was forgotten:
# the settings then exist only as placeholders, which must not pass for a loaded library
# (the install script must not take current_setting('apicount.database', true) IS NOT NULL as
# proof that the library is preloaded).
$plain->append_conf('postgresql.conf',
	"apicount.database = 'postgres'\napicount.flush_interval = '1s'\n");
$plain->restart;
($ret, $err) = expect_error($plain, 'postgres', 'CREATE EXTENSION apicount;');
isnt($ret, 0, 'no preload, apicount.* set in postgresql.conf: CREATE EXTENSION fails');
like($err, qr/ERROR:\s+55000:/, 'no preload, apicount.* set: SQLSTATE 55000');
like($err, qr/shared_preload_libraries/,
	'no preload, apicount.* set: message or hint mentions shared_preload_libraries');
is($plain->safe_psql('postgres', "SELECT count(*) FROM pg_extension WHERE extname = 'apicount'"),
	'0', 'no preload, apicount.* set: extension not created');
$plain->stop('fast');

# ---- node with the preload; CREATE EXTENSION in another database ---------------------------
my $node = PostgreSQL::Test::Cluster->new('preload');
$node->init;
$node->append_conf('postgresql.conf',
	"shared_preload_libraries = 'apicount'\napicount.flush_interval = '1s'\n"
	  . "log_statement = none\ntimezone = 'UTC'\n");
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE other');

($ret, $err) = expect_error($node, 'other', 'CREATE EXTENSION apicount;');
isnt($ret, 0, 'other database: CREATE EXTENSION fails');
like($err, qr/ERROR:\s+55000:/, 'other database: SQLSTATE 55000');
like($err, qr/apicount\.database/, 'other database: error mentions apicount.database');
is($node->safe_psql('other', "SELECT count(*) FROM pg_extension WHERE extname = 'apicount'"),
	'0', 'other database: extension not created');

# the configured database works
$node->safe_psql('postgres', 'CREATE EXTENSION apicount');
is($node->safe_psql('postgres', "SELECT count(*) FROM pg_extension WHERE extname = 'apicount'"),
	'1', 'apicount.database (postgres): CREATE EXTENSION succeeds');

# ---- apicount.database pointing at 'other' ------------------------------------------------
$node->safe_psql('postgres', 'DROP EXTENSION apicount');
$node->append_conf('postgresql.conf', "apicount.database = 'other'\n");
$node->restart;
($ret, $err) = expect_error($node, 'postgres', 'CREATE EXTENSION apicount;');
isnt($ret, 0, "apicount.database = 'other': CREATE EXTENSION in postgres fails");
like($err, qr/ERROR:\s+55000:/, "apicount.database = 'other': postgres gets SQLSTATE 55000");
like($err, qr/"other"/, "apicount.database = 'other': error names the configured database");

$node->safe_psql('other', 'CREATE EXTENSION apicount');
is($node->safe_psql('other', "SELECT count(*) FROM pg_extension WHERE extname = 'apicount'"),
	'1', "apicount.database = 'other': CREATE EXTENSION in other succeeds");

# 7 hits in one explicit minute; the worker must flush them into other's rollup table
$node->safe_psql('other', q{
	INSERT INTO apicount.requests (ts, method, path, status)
	SELECT date_trunc('minute', now()) - interval '3 minutes', 'GET', '/o/a', 200
	FROM generate_series(1, 7);
	SELECT apicount.flush();
});
is($node->safe_psql('other', 'SELECT coalesce(sum(calls), 0) FROM apicount.api_minute'),
	'7', "apicount.database = 'other': the worker flushes into that database");

$node->stop('fast');
done_testing();
