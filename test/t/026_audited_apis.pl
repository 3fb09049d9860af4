# 026_audited_apis.pl — audited APIs keep every caller (issue 14, item 5); counts computed here.
#
# apicount.max_entries = 1000 (the caller tier fills at once), apicount.max_audited_entries =
# 25000.  Phases (each within one minute, so that the rows compared are one minute's):
#  1. the caller tier is filled by 1,000 callers of /fill; 300 distinct callers of /x/secret,
#     not audited yet, are folded into its "(other callers)" row;
#  2. a pattern is added in another session (the generation bump reaches every backend at its
#     commit); 20,000 distinct callers (IP, user id) of /x/secret, from 4 sessions, each
#     get an audited entry: callers() lists each of them with its exact count (computed here)
#     and calls_error 0, and no new call is folded;
#  3. 10,000 more distinct callers: 5,000 fit (25,000 audited entries), the other calls are
#     folded, no insert fails, stats.audited_folded counts them, and the worker fires one
#     'audited_apis_full' alert (row + NOTIFY) whose calls equal audited_folded;
#  4. per minute and API, caller rows + "(other callers)" = api_minute, after the flush.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use ApicountTest qw($CALLERS_ADD_UP);
use Time::HiRes qw(sleep);

my $node = PostgreSQL::Test::Cluster->new('audited');
$node->init;
$node->append_conf('postgresql.conf',
	"shared_preload_libraries = 'apicount'\n"
	  . "apicount.max_entries = 1000\n"
	  . "apicount.max_audited_entries = 25000\n"
	  . "apicount.flush_interval = '1s'\n"
	  . "timezone = 'UTC'\n");
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION apicount');
sub q1 { return $node->safe_psql('postgres', $_[0]); }

# start early in a minute: phases 1-3 fit in it
my $sec = q1("SELECT extract(second FROM now())::int");
sleep(61 - $sec) if $sec > 15;
my $minute = q1("SELECT date_trunc('minute', now())");
my $range = "'$minute', '$minute'::timestamptz + interval '1 minute'";

# ---- 1. tier full, not audited yet: folded --------------------------------------------------
q1("INSERT INTO apicount.requests (path, client_ip) SELECT '/fill', '10.1.0.0'::inet + g FROM generate_series(1, 1000) g");
q1("INSERT INTO apicount.requests (path, client_ip, user_id) SELECT '/x/secret', '10.3.0.0'::inet + g, 'early' || g FROM generate_series(1, 300) g");
is(q1("SELECT folded_calls || '|' || audited_entries FROM apicount.stats"), '300|0',
	'before the pattern: 300 callers of /x/secret folded, no audited entry');

# ---- 2. the pattern, then 20,000 callers from 4 sessions -----------------------------------
# a session that recorded hits before the pattern existed must see it after its commit
sub psql_session
{
	my ($in, $out) = @_;
	return IPC::Run::start(
		[ $node->installed_command('psql'), '-XAtq', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('postgres') ],
		'<', $in, '>', $out, '2>', \my $err, IPC::Run::timeout(120));
}
my ($in, $out) = ("INSERT INTO apicount.requests (path) VALUES ('/warmup');\nSELECT 'warm';\n", '');
my $other = psql_session(\$in, \$out);
$other->pump until $out =~ /warm/;
q1("INSERT INTO apicount.audited_apis VALUES ('/x/secret%', 'test')");

# caller k (1..20000): IP 10.4.x.y, user 'u<k>', k % 7 + 1 calls; a quarter from that session
my %truth;
my @sql = ('', '', '', '');
for my $s (0 .. 3)
{
	my ($lo, $hi) = ($s * 5000 + 1, ($s + 1) * 5000);
	$sql[$s] = "INSERT INTO apicount.requests (path, client_ip, user_id, status) "
	  . "SELECT '/x/secret', '10.4.0.0'::inet + k, 'u' || k, 200 "
	  . "FROM generate_series($lo, $hi) k, generate_series(1, k % 7 + 1)";
	$truth{"u$_"} = $_ % 7 + 1 for $lo .. $hi;
}
$in .= "$sql[0];\nSELECT 'done';\n";
q1($sql[$_]) for 1 .. 3;
$other->pump until $out =~ /done/;
$in = '';
$other->finish;
my $sent2 = 0;
$sent2 += $_ for values %truth;

is(q1("SELECT folded_calls || '|' || audited_folded FROM apicount.stats"), '301|0',
	'20,000 audited callers: no call folded (301: the 300 early calls and the other session\'s /warmup)');
is(q1('SELECT audited_entries FROM apicount.stats'), '20000', 'each has an audited entry');
my @wrong;
my $seen = 0;
for (split /\n/, q1("SELECT user_id, calls, calls_error FROM apicount.callers('/x/secret', $range) WHERE user_id LIKE 'u%'"))
{
	my ($u, $c, $e) = split /\|/;
	$seen++;
	push @wrong, "$u: $c (error $e), sent " . ($truth{$u} // 0) if $c != ($truth{$u} // -1) || $e != 0;
}
is($seen, 20000, 'callers() lists the 20,000 audited callers');
is(scalar @wrong, 0, 'each with exactly the calls sent and calls_error 0') or diag(join("\n", @wrong[ 0 .. 9 ]));

# ---- 3. past the audited tier: folded, never failed, one alert ------------------------------
my ($lin, $lout) = ("LISTEN apicount_alert;\nSELECT 'listening';\n", '');
my $listener = psql_session(\$lin, \$lout);
$listener->pump until $lout =~ /listening/;
my ($ret) = $node->psql('postgres',
	"INSERT INTO apicount.requests (path, client_ip, user_id, status) "
	  . "SELECT '/x/secret', '10.5.0.0'::inet + k, 'v' || k, 200 FROM generate_series(1, 10000) k");
is($ret, 0, '10,000 more audited callers: the insert succeeds');
is(q1('SELECT audited_entries FROM apicount.stats'), '25000', 'the audited tier is full (25,000)');
is(q1('SELECT audited_folded FROM apicount.stats'), '5000', 'stats.audited_folded counts the 5,000 calls that found no room');
my $alert = '';
for (1 .. 60)
{
	$alert = q1("SELECT string_agg(calls::text, ',') FROM apicount.alerts WHERE rule = 'audited_apis_full'");
	last if $alert ne '';
	sleep 0.5;
}
is($alert, '5000', "one 'audited_apis_full' alert, whose calls are the 5,000 folded");
# the notification may reach the listener's backend a moment after the row is visible
for my $i (1 .. 40)
{
	$lin .= "SELECT 'after$i';\n";
	$listener->pump until $lout =~ /after$i\b/;
	last if $lout =~ /apicount_alert.*audited_apis_full/;
	sleep 0.25;
}
like($lout, qr/apicount_alert.*audited_apis_full/, 'its NOTIFY apicount_alert arrived');
$lin = '';
$listener->finish;
# the 5,000 with an entry are exact rows; callers() may also name folded ones from the summaries
my %exact = map { $_ => 1 }
  split /\n/, q1("SELECT user_id FROM apicount._caller_minutes('$minute', '$minute'::timestamptz + interval '1 minute') WHERE user_id LIKE 'v%'");
is(scalar keys %exact, 5000, '5,000 of them have a caller row of their own');
my %listed = map { my @f = split /\|/; ($f[0] => "$f[1]|$f[2]") }
  split /\n/, q1("SELECT user_id, calls, calls_error FROM apicount.callers('/x/secret', $range) WHERE user_id LIKE 'v%'");
is(scalar(grep { ($listed{$_} // '') ne '1|0' } keys %exact), 0,
	'callers() lists each of them with its 1 call and calls_error 0');

# ---- 4. after the flush: the rows add up ------------------------------------------------------
q1('SELECT apicount.flush()');
is(q1("SELECT calls FROM apicount.api_minute WHERE bucket = '$minute' AND path = '/x/secret'"),
	300 + $sent2 + 10000, 'api_minute holds every call of /x/secret');
is(q1($CALLERS_ADD_UP),
	'0', 'per minute and API, caller rows + "(other callers)" = api_minute');
is(q1("SELECT calls FROM apicount.caller_minute WHERE bucket = '$minute' AND path = '/x/secret' AND user_id = '(other callers)'"),
	'5300', '"(other callers)" of /x/secret: the 300 early calls and the 5,000 without room');

$node->stop;
done_testing();
