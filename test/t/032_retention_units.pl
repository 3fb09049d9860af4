# 032_retention_units.pl — apicount.retention takes any PostgreSQL interval.
#
# Proves:
#  - a server starts with apicount.retention = '13 months', SHOW returns it, and a hit 12
#    months old is counted while one 14 months old is refused with SQLSTATE 22008 (a month
#    is 30 days, a year 365.25 days, as in extract(epoch from interval));
#  - ALTER SYSTEM (which runs the setting's check) accepts every unit and form of an
#    interval: years, months, decades, ISO 8601 ('P1Y2M'), 'HH:MM:SS', mixed units, and the
#    old short units ('12 h', '2 w');
#  - it refuses text that is not an interval, negative intervals, less than 1 hour and more
#    than 1,000 years, with a detail that names the accepted range;
#  - after a reload with '2 years', a hit 23 months old is counted.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use ApicountTest qw(wait_for);

my $node = PostgreSQL::Test::Cluster->new('retention_units');
$node->init;
$node->append_conf('postgresql.conf',
	"shared_preload_libraries = 'apicount'\n"
	  . "apicount.database = 'postgres'\n"
	  . "apicount.retention = '13 months'\n"
	  . "log_statement = none\n");
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION apicount');

is($node->safe_psql('postgres', 'SHOW apicount.retention'), '13 months',
	"the server starts with retention '13 months'");

sub hit_aged
{
	my ($age) = @_;
	return $node->psql('postgres',
		"\\set VERBOSITY verbose\n"
		  . "INSERT INTO apicount.requests (ts, path) VALUES (now() - interval '$age', '/old')"
	);
}

my ($ret, $out, $err) = hit_aged('12 months');
is($ret, 0, "retention '13 months': a hit 12 months old is counted") or diag($err);
($ret, $out, $err) = hit_aged('14 months');
isnt($ret, 0, "retention '13 months': a hit 14 months old is refused");
like($err, qr/ERROR:\s+22008:/, 'the refusal has SQLSTATE 22008');

for my $v ('2 years', '13 months', '1 decade', '1 year 2 mons 3 days', 'P1Y2M', 'P30D',
	'12 h', '2 w', '90 minutes', '36:00:00', '1.5 days', '1000 years')
{
	($ret, $out, $err) =
	  $node->psql('postgres', "ALTER SYSTEM SET apicount.retention = '$v'");
	is($ret, 0, "accepted: '$v'") or diag($err);
}

# an interval shorter than 1 hour gets its own detail; anything else, the accepted range
for my $v ('banana', '30', '59 minutes', '-2 days', '2 days ago', '1001 years', '3 parsecs', '')
{
	($ret, $out, $err) =
	  $node->psql('postgres', "ALTER SYSTEM SET apicount.retention = '$v'");
	isnt($ret, 0, "refused: '$v'");
	my $detail = ($v eq '30' || $v eq '59 minutes')
	  ? qr/must be at least 1 hour/ : qr/1 hour to 1000 years/;
	like($err, $detail, "refused '$v': the detail says why");
}

# reload with '2 years': a hit 23 months old now counts
$node->safe_psql('postgres', "ALTER SYSTEM SET apicount.retention = '2 years'");
$node->reload;
ok(wait_for($node, 'SHOW apicount.retention', '2 years', 30), "reloaded: retention '2 years'");
($ret, $out, $err) = hit_aged('23 months');
is($ret, 0, "retention '2 years': a hit 23 months old is counted") or diag($err);

$node->stop('fast');
done_testing();
