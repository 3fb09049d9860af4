# 024_flood_guarantees.pl — never blind under a flood (issue 14), at DEFAULT settings.
#
# Three minutes of traffic from 8 clients (psql, 10 batches a second each, 125 hits a batch),
# with client IPs drawn at random from 10 million, over 200 paths /api/r0 .. /api/r199: about
# 600,000 distinct callers a minute, so the caller tier (apicount.max_entries = 100,000) is full
# within seconds and stays full.  From the second minute on:
#   - 3 scrapers (192.0.2.1-3), 2,000 calls each to one API within 60 s;
#   - a scraper whose 2,000 calls come from 2,000 addresses of one IPv6 /64;
#   - a credential-stuffing spike: 20,000 calls to /api/login from 20,000 distinct IPs, 10 %
#     with status 200, the rest 401 (no login traffic before: the baseline is 0);
#   - 40 calls by user 'mallory' to the audited API /api/export/users (audited_apis row
#     '/api/export/%').
# Each batch prints its transaction's now() (the minute of its hits), and the path of each of
# its hits is a formula of its number, so the expected counts per minute and path are computed
# here in Perl, independently of apicount (the clients' own log).
# Proves:
#  - per-API counts are exact whatever the number of callers: api_minute (after flush) equals the
#    clients' counts per minute and path, and no '(other)' or '*' row appears;
#  - for every minute and API, caller_minute rows (the "(other callers)" row included) add up to
#    api_minute's calls;
#  - hot_callers(1000, '1 minute') reports the 3 scrapers (by ip) and the IPv6 /64 (by net), each
#    with calls >= 2000 >= calls - calls_error; the rules 'scrape' (per ip) and 'scrape_net'
#    (per net) fire alerts for them;
#  - login_anomalies() reports /api/login with 20,000 calls and 2,000 ok;
#  - callers('/api/export/users') returns mallory with exactly 40 calls and calls_error 0;
#  - every caller that the summaries of heavy callers report over the whole run satisfies
#    calls - calls_error <= its true count <= calls (scrapers and mallory, whose truth is known);
#  - stats.shared_memory_bytes never changes; stats.folded_calls > 0 (the flood did fold callers).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use ApicountTest qw($CALLERS_ADD_UP);
use Time::HiRes qw(time sleep);
use POSIX qw(floor);

my $node = PostgreSQL::Test::Cluster->new('flood_guarantees');
$node->init;
$node->append_conf('postgresql.conf',
	"shared_preload_libraries = 'apicount'\n"
	  . "log_statement = none\n"
	  . "log_min_duration_statement = -1\n"
	  . "max_connections = 40\n"
	  . "timezone = 'UTC'\n");
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION apicount');

sub q1 { return $node->safe_psql('postgres', $_[0]); }

my ($capacity, $shm0) = split /\|/, q1('SELECT capacity, shared_memory_bytes FROM apicount.stats');
is($capacity, '100000', 'default apicount.max_entries (100000)');
q1(q{INSERT INTO apicount.audited_apis (pattern, comment) VALUES ('/api/export/%', 'exports')});
q1(q{INSERT INTO apicount.rules (name, path_pattern, per, threshold, "window")
     VALUES ('scrape', '/api/%', 'ip', 1000, '1 minute'),
            ('scrape_net', '/api/%', 'net', 1000, '1 minute')});

my $dir = PostgreSQL::Test::Utils::tempdir;
my $connstr = $node->connstr('postgres');
my $BATCH = 125;
my $NPATHS = 200;

# %truth{minute}{path} = calls, from the batches' outputs
my %truth;
# batch id -> [ [path, count], ... ]
my %batch_paths;

sub background_paths
{
	my ($id) = @_;
	my %c;
	$c{ '/api/r' . (($_ * 7 + $id) % $NPATHS) }++ for 1 .. $BATCH;
	return [ map { [ $_, $c{$_} ] } keys %c ];
}

# a psql client running a script; its output goes to a file
my @clients;
sub start_client
{
	my ($name, $sql) = @_;
	my $file = "$dir/$name.sql";
	open my $fh, '>', $file or die;
	print $fh $sql;
	close $fh;
	my $out = "$dir/$name.out";
	my $h = IPC::Run::start(
		[ 'psql', '-X', '-At', '-q', '-v', 'ON_ERROR_STOP=1', '-d', $connstr, '-f', $file ],
		'>', $out, '2>', "$dir/$name.err");
	push @clients, [ $name, $h, $out ];
	return $h;
}

# one batch: its hits, then the id and the minute of its transaction
sub batch_sql
{
	my ($id, $insert) = @_;
	return "BEGIN;\n$insert;\nSELECT 'B|$id|' || to_char(date_trunc('minute', now()), 'YYYY-MM-DD HH24:MI');\nCOMMIT;\n";
}

# ---- 8 background clients, 3 minutes ----------------------------------------------------------
my $t0 = time;
my $DURATION = 180;
my $bid = 0;
for my $c (1 .. 8)
{
	my $sql = '';
	for my $b (1 .. $DURATION * 10)
	{
		my $id = ++$bid;
		$batch_paths{$id} = background_paths($id);
		$sql .= batch_sql($id,
			"INSERT INTO apicount.requests (ts, path, client_ip, status) "
			  . "SELECT now(), '/api/r' || ((g * 7 + $id) % $NPATHS), "
			  . "'1.0.0.0'::inet + floor(random() * 10000000)::bigint, 200 "
			  . "FROM generate_series(1, $BATCH) g");
		$sql .= "SELECT pg_sleep(0.1) \\g /dev/null\n";
	}
	start_client("bg$c", $sql);
}

# ---- from the second minute: the attacks ------------------------------------------------------
my $start_attacks = $t0 + 65;
sleep($start_attacks - time) if time < $start_attacks;

my %scraper = ('192.0.2.1' => '/api/r11', '192.0.2.2' => '/api/r12', '192.0.2.3' => '/api/r13');
my $v6_path = '/api/r14';
my @attack_handles;
for my $ip (sort keys %scraper)
{
	my $sql = '';
	for my $b (1 .. 40)		# 40 batches of 50 calls, 0.75 s apart: 2,000 calls in ~30 s
	{
		my $id = ++$bid;
		$batch_paths{$id} = [ [ $scraper{$ip}, 50 ] ];
		$sql .= batch_sql($id,
			"INSERT INTO apicount.requests (path, client_ip, status) "
			  . "SELECT '$scraper{$ip}', '$ip', 200 FROM generate_series(1, 50)");
		$sql .= "SELECT pg_sleep(0.75) \\g /dev/null\n";
	}
	push @attack_handles, start_client("scraper_$ip", $sql);
}
{
	my $sql = '';
	for my $b (0 .. 39)
	{
		my $id = ++$bid;
		$batch_paths{$id} = [ [ $v6_path, 50 ] ];
		my $first = $b * 50 + 1;
		$sql .= batch_sql($id,
			"INSERT INTO apicount.requests (path, client_ip, status) "
			  . "SELECT '$v6_path', ('2001:db8:77:1::' || to_hex(g))::inet, 200 "
			  . "FROM generate_series($first, $first + 49) g");
		$sql .= "SELECT pg_sleep(0.75) \\g /dev/null\n";
	}
	push @attack_handles, start_client('scraper_v6', $sql);
}
{
	my $sql = '';
	for my $b (0 .. 19)		# 20 batches of 1,000 distinct IPs, 1 in 10 succeeds
	{
		my $id = ++$bid;
		$batch_paths{$id} = [ [ '/api/login', 1000 ] ];
		my $first = $b * 1000 + 1;
		$sql .= batch_sql($id,
			"INSERT INTO apicount.requests (path, method, client_ip, status) "
			  . "SELECT '/api/login', 'POST', '172.16.0.0'::inet + g, "
			  . "CASE WHEN g % 10 = 0 THEN 200 ELSE 401 END "
			  . "FROM generate_series($first, $first + 999) g");
		$sql .= "SELECT pg_sleep(1) \\g /dev/null\n";
	}
	push @attack_handles, start_client('stuffing', $sql);
}
{
	my $sql = '';
	for my $b (1 .. 40)
	{
		my $id = ++$bid;
		$batch_paths{$id} = [ [ '/api/export/users', 1 ] ];
		$sql .= batch_sql($id,
			"INSERT INTO apicount.requests (path, client_ip, user_id, status) "
			  . "VALUES ('/api/export/users', '198.51.100.9', 'mallory', 200)");
		$sql .= "SELECT pg_sleep(0.5) \\g /dev/null\n";
	}
	push @attack_handles, start_client('mallory', $sql);
}
my $attack_start_ts = q1("SELECT now() - interval '1 minute'");
$_->finish for @attack_handles;
my $attacks_s = time - $start_attacks;
diag(sprintf('attacks sent in %.1f s', $attacks_s));
cmp_ok($attacks_s, '<', 55, 'the attacks were sent within 55 s (so one 1-minute window holds them)');

# ---- detection, right after the attacks (the flood goes on) ----------------------------------
my %hot = map { my @f = split /\|/; ("$f[1]|$f[2]" => [ @f ]) }
  split /\n/, q1("SELECT method, path, client_ip, calls, calls_error FROM apicount.hot_callers(1000, '1 minute')");
for my $ip (sort keys %scraper)
{
	my $r = $hot{"$scraper{$ip}|$ip"};
	ok($r, "hot_callers by ip reports scraper $ip on $scraper{$ip}") or next;
	ok($r->[3] >= 2000 && $r->[3] - $r->[4] <= 2000,
		"scraper $ip: calls $r->[3] >= 2000 >= calls - calls_error ($r->[4])");
}
my ($v6) = grep { /^GET\|\Q$v6_path\E\|2001:db8:77:1::\/64\|/ }
  split /\n/, q1("SELECT method, path, client_ip, calls, calls_error FROM apicount.hot_callers(1000, '1 minute', by => 'net')");
ok($v6, 'hot_callers by net reports the IPv6 /64 scraper as 2001:db8:77:1::/64');
if ($v6)
{
	my @f = split /\|/, $v6;
	ok($f[3] >= 2000 && $f[3] - $f[4] <= 2000, "the /64: calls $f[3] >= 2000 >= calls - calls_error ($f[4])");
}
my ($v6_by_ip) = q1("SELECT count(*) FROM apicount.hot_callers(1000, '1 minute', '$v6_path') WHERE client_ip << '2001:db8:77:1::/64'");
is($v6_by_ip, '0', 'by ip, no single address of the /64 is hot (each sent one call)');

my $login = q1("SELECT calls || '|' || ok FROM apicount.login_anomalies('%login%', '1 minute')");
is($login, '20000|2000', 'login_anomalies reports /api/login: 20000 calls, 2000 ok');

is(q1("SELECT abbrev(client_ip) || '|' || user_id || '|' || calls || '|' || calls_error FROM apicount.callers('/api/export/users', '$attack_start_ts', now()) WHERE user_id = 'mallory'"),
	'198.51.100.9|mallory|40|0', 'callers() of the audited API: mallory, exactly 40 calls, calls_error 0');
is(q1("SELECT count(*) FROM apicount.callers('/api/export/users', '$attack_start_ts', now()) WHERE user_id IS DISTINCT FROM 'mallory'"),
	'0', 'callers() of the audited API: nobody else, and no "(other callers)" row');

# the rules: the worker evaluates them every slot
my $alerts = '';
for (1 .. 30)
{
	$alerts = q1("SELECT string_agg(rule || ' ' || path || ' ' || abbrev(client_ip), ',' ORDER BY rule, client_ip) "
		  . "FROM apicount.alerts WHERE rule LIKE 'scrape%' AND (client_ip <<= '192.0.2.0/24' OR client_ip = '2001:db8:77:1::/64')");
	last if ($alerts =~ tr/,//) >= 3;
	sleep 1;
}
for my $ip (sort keys %scraper)
{
	like($alerts, qr/scrape \Q$scraper{$ip}\E \Q$ip\E(,|$)/, "rule 'scrape' fired for $ip");
}
like($alerts, qr/scrape_net \Q$v6_path\E 2001:db8:77:1::\/64/, "rule 'scrape_net' fired for the /64");

# ---- the end of the flood: exact per-API counts -----------------------------------------------
$_->[1]->finish for @clients;
for my $c (@clients)
{
	my ($name, $h, $out) = @$c;
	is($h->result(0), 0, "client $name exited 0") or diag(slurp_file("$dir/$name.err"));
	open my $fh, '<', $out or die;
	while (<$fh>)
	{
		chomp;
		next unless /^B\|(\d+)\|(.+)$/;
		$truth{$2}{ $_->[0] } += $_->[1] for @{ $batch_paths{$1} };
	}
}
my $truth_total = 0;
$truth_total += $_ for map { values %$_ } values %truth;
diag("hits sent: $truth_total over " . scalar(keys %truth) . ' minutes');

my ($shm, $folded, $unsummarized, $bound) = split /\|/,
  q1('SELECT shared_memory_bytes, folded_calls, folded_unsummarized, heavy_bound FROM apicount.stats');
is($shm, $shm0, 'stats.shared_memory_bytes unchanged by the flood');
cmp_ok($folded, '>', 0, "the flood folded callers (stats.folded_calls $folded)");
diag("folded $folded, unsummarized $unsummarized, current heavy bound $bound");

q1('SELECT apicount.flush()');
my %got;
for (split /\n/, q1("SELECT to_char(bucket, 'YYYY-MM-DD HH24:MI'), path, calls FROM apicount.api_minute"))
{
	my ($m, $p, $c) = split /\|/;
	$got{$m}{$p} = $c;
}
my @diff;
for my $m (sort keys %{ { %truth, %got } })
{
	for my $p (sort keys %{ { %{ $truth{$m} // {} }, %{ $got{$m} // {} } } })
	{
		my ($t, $g) = ($truth{$m}{$p} // 0, $got{$m}{$p} // 0);
		push @diff, "$m $p: sent $t, api_minute $g" if $t != $g;
	}
}
is(scalar @diff, 0, 'api_minute = the clients\' own counts per minute and path')
  or diag(join("\n", @diff[ 0 .. ($#diff < 20 ? $#diff : 20) ]));
is(q1("SELECT count(*) FROM apicount.api_minute WHERE path = '(other)' OR method = '*'"), '0',
	'no (other) path and no catch-all row: callers never take an API\'s room');
is(q1($CALLERS_ADD_UP),
	'0', 'per minute and API, caller_minute rows (with "(other callers)") add up to api_minute');

# the heavy callers over the whole run, from the tables the worker wrote
for my $ip (sort keys %scraper)
{
	my ($c, $e) = split /\|/, q1("SELECT calls, calls_error FROM apicount.callers('$scraper{$ip}', '$attack_start_ts', now()) WHERE client_ip = '$ip'");
	ok(defined $e && $c >= 2000 && $c - $e <= 2000,
		"callers(): scraper $ip, calls " . ($c // '?') . ' >= 2000 >= calls - calls_error (' . ($e // '?') . ')')
	  or diag(q1("SELECT 'heavy', bucket, grouped_by, calls, calls_error FROM apicount.caller_heavy_minute WHERE client_ip = '$ip' "
			  . "UNION ALL SELECT 'live', bucket, 'ip_user', calls, calls_error FROM apicount._live_heavy('$attack_start_ts', now(), 'ip_user') WHERE client_ip = '$ip' "
			  . "UNION ALL SELECT 'caller_minute', bucket, '', calls, 0 FROM apicount.caller_minute WHERE client_ip = '$ip' ORDER BY 1, 2, 3"));
}
is(q1("SELECT calls || '|' || calls_error FROM apicount.callers('/api/export/users', '$attack_start_ts', now()) WHERE user_id = 'mallory'"),
	'40|0', 'after the flush: mallory still exactly 40 calls');

$node->stop;
done_testing();
