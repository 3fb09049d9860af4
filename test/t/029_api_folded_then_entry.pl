# 029_api_folded_then_entry.pl — an API folded into "(other)" and then given an entry of its
# own in the same minute (issue 14): nothing is counted twice or lost.  Counts computed here.
#
# apicount.max_apis = 100 (the minimum).  Within one minute:
#  1. 150 distinct paths /fill/b .. /fill/bfa (the digits of k as letters, k % 5 + 1 calls each) fill the API tier; the paths that
#     find no room are counted under "GET (other)";
#  2. /x/export, not audited yet, is called 50 times by 5 callers: folded into "(other)" too;
#  3. a pattern makes /x/export audited, and 7 callers call it 70 more times: the API gets an
#     entry in the audited tier, in the same minute.
# Checks, live and after the flush: the minute's calls over all API rows = every call sent;
# top_apis gives /x/export at least its 120 calls and at most 120 + calls_error; callers()
# gives each of its 7 audited callers exactly; the API row of /x/export holds the 70 calls
# made after its entry; per minute and API, caller rows + "(other callers)" = api_minute.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use ApicountTest qw($CALLERS_ADD_UP);

my $node = PostgreSQL::Test::Cluster->new('folded_then_entry');
$node->init;
$node->append_conf('postgresql.conf',
	"shared_preload_libraries = 'apicount'\n"
	  . "apicount.max_apis = 100\n"
	  . "apicount.flush_interval = '1h'\n"
	  . "timezone = 'UTC'\n");
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION apicount');
sub q1 { return $node->safe_psql('postgres', $_[0]); }

# start early in a minute: the three phases and the live checks fit in it
my $sec = q1("SELECT extract(second FROM now())::int");
sleep(61 - $sec) if $sec > 20;
my $minute = q1("SELECT date_trunc('minute', now())");
my $range = "'$minute', '$minute'::timestamptz + interval '1 minute'";

# ---- 1. the API tier fills ------------------------------------------------------------------
my $sent = 0;
for my $k (1 .. 150)
{
	$sent += $k % 5 + 1;
}
q1("INSERT INTO apicount.requests (path, client_ip) "
	  . "SELECT '/fill/' || translate(k::text, '0123456789', 'abcdefghij'), '10.1.0.0'::inet + k FROM generate_series(1, 150) k, generate_series(1, k % 5 + 1)");
my $other1 = q1("SELECT coalesce(sum(calls), 0) FROM apicount.minutes($range, '1 minute') WHERE path = '(other)'");
cmp_ok($other1, '>', 0, "the API tier is full: some /fill paths are counted under (other) ($other1 calls)");

# ---- 2. /x/export folded --------------------------------------------------------------------
q1("INSERT INTO apicount.requests (path, client_ip) "
	  . "SELECT '/x/export', '10.2.0.0'::inet + (g % 5) FROM generate_series(1, 50) g");
$sent += 50;
is(q1("SELECT coalesce(sum(calls), 0) FROM apicount.minutes($range, '1 minute') WHERE path = '/x/export'"),
	'0', '/x/export has no API row yet (folded)');

# ---- 3. audited: an entry of its own in the same minute -------------------------------------
q1("INSERT INTO apicount.audited_apis VALUES ('/x/export%', 'test')");
my %truth;
for my $g (1 .. 70)
{
	$truth{ '10.3.0.' . ($g % 7) } += 1;
}
q1("INSERT INTO apicount.requests (path, client_ip) "
	  . "SELECT '/x/export', ('10.3.0.' || (g % 7))::inet FROM generate_series(1, 70) g");
$sent += 70;

sub checks
{
	my ($when) = @_;
	is(q1("SELECT sum(calls) FROM apicount.minutes($range, '1 minute')"),
		$sent, "$when: the minute's API rows add up to every call sent ($sent)");
	my ($c, $e) = split /\|/,
	  q1("SELECT calls || '|' || calls_error FROM apicount.top_apis(1000, $range) WHERE path = '/x/export'");
	$c //= 0;
	$e //= 0;
	ok($c >= 120 && $c <= 120 + $e && $e <= $other1 + 50,
		"$when: top_apis gives /x/export $c calls (error $e): 120 <= calls <= 120 + calls_error, "
		  . "and calls_error <= the calls folded into (other) ($other1 + 50)");
	my %got = map { my @f = split /\|/; ($f[0] => "$f[1]|$f[2]") }
	  split /\n/, q1("SELECT host(client_ip), calls, calls_error FROM apicount.callers('/x/export', $range) WHERE client_ip << '10.3.0.0/24'");
	is(join(',', map { "$_=" . ($got{$_} // 'none') } sort keys %truth),
		join(',', map { "$_=$truth{$_}|0" } sort keys %truth),
		"$when: callers() gives each audited caller of /x/export its exact calls");
	my $row = q1("SELECT coalesce(sum(calls), 0) FROM apicount.minutes($range, '1 minute') WHERE path = '/x/export'");
	is($row, 70, "$when: the API row of /x/export holds the 70 calls since its entry");
}
checks('live');

# ---- 4. after the flush ---------------------------------------------------------------------
q1('SELECT apicount.flush()');
checks('flushed');
is(q1("SELECT sum(calls) FROM apicount.api_minute WHERE bucket = '$minute'"), $sent,
	'api_minute: the rows of the minute add up to every call sent');
is(q1($CALLERS_ADD_UP),
	'0', 'per minute and API, caller rows + "(other callers)" = api_minute');

$node->stop;
done_testing();
