# 040_ship_nginx.pl — apicount-ship counts a real nginx's access logs exactly once, in both
# formats, through rotations, a killed shipper and a server crash-restart.
#
# A Debian nginx (run as this user, listening on 127.0.0.1 only, prefix and logs in the test
# directory) has two servers: one logs the combined format with $request_time, the other JSON
# lines (escape=json).  Two wrk processes (-c 8 each) send ~20 s of traffic to them over many
# paths, methods and statuses (a Lua script picks them at random).  One apicount-ship --follow
# per log, connected as a role that only has apicount_writer.  During the traffic:
#   1. both logs are rotated by rename + nginx -s reopen;
#   2. the combined shipper is killed with SIGKILL and started again;
#   3. both logs are rotated by copytruncate (cp, then truncate).  copytruncate by itself loses
#      the lines nginx writes between the copy and the truncation (logrotate documents it), so
#      nginx is paused (SIGSTOP) around the two steps: then every line is in some file;
#   4. apicount.flush_interval is raised to 1 h and a backend is killed with SIGKILL, so the
#      server crash-restarts with hits and positions not flushed: both are lost, the view
#      apicount.sources shows the positions rewound, and the shippers ship the lines again.
# At the end the counts per normalized path and status class in apicount (apicount.minutes)
# equal an independent parse of every log file (test/ship/count_logs.py, Python), each source's
# lines equal the lines of its files, and the total equals what wrk reports as completed, up to
# the requests in flight when wrk stopped (at most one per connection: nginx logs a request
# whose response wrk no longer read; the diag shows the difference).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/../perl";
use ApicountTest;
use IPC::Run;
use File::Copy qw(copy);
use Time::HiRes qw(usleep time);

my $nginx = -x '/usr/sbin/nginx' ? '/usr/sbin/nginx' : undef;
sub in_path { my ($p) = grep { -x "$_/$_[0]" } split /:/, $ENV{PATH}; return $p ? "$p/$_[0]" : undef; }
my $wrk = in_path('wrk');
plan skip_all => 'nginx or wrk is not installed (test/ensure_deps.sh installs them)'
  unless $nginx && $wrk;

my $root = $ENV{APICOUNT_ROOT} // "$FindBin::Bin/../..";
my $ship = in_path('apicount-ship') // "$root/ship/apicount-ship";
my $count_logs = "$root/test/ship/count_logs.py";
my $SECONDS = 20;
my $CONNS = 8;

my $node = PostgreSQL::Test::Cluster->new('ship');
$node->init;
$node->append_conf('postgresql.conf',
	"shared_preload_libraries = 'apicount'\n"
	  . "apicount.flush_interval = '1s'\n"
	  . "restart_after_crash = on\n"
	  . "log_statement = none\n"
	  . "timezone = 'UTC'\n");
$node->start;
$node->safe_psql('postgres', q{
	CREATE EXTENSION apicount;
	CREATE ROLE shipper LOGIN IN ROLE apicount_writer;});

sub wait_for { return ApicountTest::wait_for($node, @_); }
sub q1 { return $node->safe_psql('postgres', $_[0]); }

# ---- nginx ------------------------------------------------------------------------------------
my $dir = "$PostgreSQL::Test::Utils::tmp_check/nginx";
mkdir $dir;
mkdir "$dir/$_" for qw(logs tmp);
my ($port_c, $port_j) = (PostgreSQL::Test::Cluster::get_free_port(),
	PostgreSQL::Test::Cluster::get_free_port());
my $locations = q{
		location /ok/ { return 200 "ok\n"; }
		location /users/ { return 200 "user\n"; }
		location /missing/ { return 404; }
		location /fail/ { return 500; }
		location /busy/ { return 503; }
		location /redir/ { return 301 /ok/home; }
		location = /teapot { return 418; }
		location / { return 200 "root\n"; }
};
PostgreSQL::Test::Utils::append_to_file("$dir/nginx.conf", qq{
worker_processes 2;
pid $dir/nginx.pid;
error_log $dir/error.log;
events { worker_connections 256; }
http {
	client_body_temp_path $dir/tmp/body;
	proxy_temp_path $dir/tmp/proxy;
	fastcgi_temp_path $dir/tmp/fastcgi;
	uwsgi_temp_path $dir/tmp/uwsgi;
	scgi_temp_path $dir/tmp/scgi;
	log_format apicount_combined '\$remote_addr - \$remote_user [\$time_local] "\$request" '
		'\$status \$body_bytes_sent "\$http_referer" "\$http_user_agent" \$request_time';
	log_format apicount_json escape=json '{"time":"\$time_iso8601",'
		'"remote_addr":"\$remote_addr","remote_user":"\$remote_user",'
		'"method":"\$request_method","uri":"\$request_uri","status":\$status,'
		'"request_time":\$request_time}';
	server {
		listen 127.0.0.1:$port_c;
		access_log $dir/logs/combined.log apicount_combined;
		$locations
	}
	server {
		listen 127.0.0.1:$port_j;
		access_log $dir/logs/json.log apicount_json;
		$locations
	}
}
});
my @nginx = ($nginx, '-p', $dir, '-c', "$dir/nginx.conf", '-e', "$dir/error.log");
system(@nginx) == 0 or BAIL_OUT("nginx did not start: " . slurp_file("$dir/error.log"));
ok(-s "$dir/nginx.pid", 'nginx started');
my $master = slurp_file("$dir/nginx.pid");
chomp $master;

# whatever happens, leave no nginx, wrk or shipper behind
my (%shipper, %wrk);
END
{
	kill 'QUIT', $master if $master;
	for my $h (values %shipper, values %wrk)
	{
		eval { $h->kill_kill; };
	}
}

# ---- shippers ---------------------------------------------------------------------------------
my %ship_log = (combined => "$dir/ship-combined.log", json => "$dir/ship-json.log");

sub start_shipper
{
	my ($fmt) = @_;
	my $conn = 'host=' . $node->host . ' port=' . $node->port . ' dbname=postgres user=shipper';
	$shipper{$fmt} = IPC::Run::start(
		[ 'env', "PGAPPNAME=ship-$fmt", $ship, '-d', $conn, "--format=$fmt",
		  "--source=nginx-$fmt", '--follow', "--reject-file=$dir/rejects-$fmt.txt",
		  "$dir/logs/$fmt.log" ],
		'<', '/dev/null', '>>', $ship_log{$fmt}, '2>>', $ship_log{$fmt});
}
start_shipper($_) for qw(combined json);

# ---- traffic ----------------------------------------------------------------------------------
PostgreSQL::Test::Utils::append_to_file("$dir/traffic.lua", q{
local paths = {
	"/ok/home", "/ok/list?page=2", "/ok/search?q=a%20b", "/users/", "/users/42/orders",
	"/missing/x", "/missing/y?z=1", "/fail/a", "/fail/b/c", "/busy/now", "/redir/old",
	"/teapot", "/", "/ok/f0e1d2c3b4a59687/x"
}
local methods = { "GET", "GET", "GET", "POST", "PUT", "DELETE" }
local n = 0
function init(args)
	math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16) % 100000)
end
function request()
	n = n + 1
	local p = paths[math.random(#paths)]
	if p == "/users/" then p = p .. math.random(1, 100000) end
	local headers = {}
	if n % 7 == 0 then headers["Authorization"] = "Basic YWxpY2U6c2VjcmV0" end
	return wrk.format(methods[math.random(#methods)], p, headers)
end
});
my %wrk_out;
for my $fmt (qw(combined json))
{
	$wrk_out{$fmt} = '';
	my $port = $fmt eq 'combined' ? $port_c : $port_j;
	$wrk{$fmt} = IPC::Run::start(
		[ $wrk, '-t', '1', '-c', $CONNS, '-d', "${SECONDS}s", '-s', "$dir/traffic.lua",
		  "http://127.0.0.1:$port/" ],
		'>', \$wrk_out{$fmt}, '2>&1');
}
my $t0 = time;
sub at { my ($s) = @_; my $d = $t0 + $s - time; usleep($d * 1e6) if $d > 0; }

# 1. rename + reopen
at(3);
for my $fmt (qw(combined json))
{
	rename("$dir/logs/$fmt.log", "$dir/logs/$fmt.log.1") or die "rename: $!";
}
system(@nginx, '-s', 'reopen') == 0 or die 'nginx -s reopen failed';
note('rotated by rename + reopen at ' . sprintf('%.1f', time - $t0) . ' s');

# 2. SIGKILL the combined shipper, start it again
at(6);
kill 'KILL', $shipper{combined}->{KIDS}[0]{PID};
eval { $shipper{combined}->finish; };
note('killed the combined shipper at ' . sprintf('%.1f', time - $t0) . ' s');
at(7);
start_shipper('combined');

# 3. copytruncate, with nginx paused around it
at(9);
my @procs = ($master, split(/\s+/, `ps -o pid= --ppid $master`));
@procs = grep { /^\d+$/ } @procs;
kill 'STOP', @procs;
for my $fmt (qw(combined json))
{
	copy("$dir/logs/$fmt.log", "$dir/logs/$fmt.log.2") or die "copy: $!";
	truncate("$dir/logs/$fmt.log", 0) or die "truncate: $!";
}
kill 'CONT', @procs;
note('rotated by copytruncate at ' . sprintf('%.1f', time - $t0) . ' s');

# 4. a crash before a flush
at(11);
q1("ALTER SYSTEM SET apicount.flush_interval = '1h'; SELECT pg_reload_conf()");
at(12.5);    # the worker's current 1 s wait ends, then it waits an hour
my $flushes_before = q1('SELECT flushes FROM apicount.stats');
at(15);
is(q1('SELECT flushes FROM apicount.stats'), $flushes_before, 'no flush while flush_interval is 1 h');
my %live = map { split /\|/ } split /\n/,
  q1("SELECT name, lines FROM apicount.sources WHERE NOT flushed ORDER BY name");
is(scalar(keys %live), 2, 'both sources have unflushed positions before the crash');
my %flushed = map { split /\|/ } split /\n/, q1("SELECT name, lines FROM apicount._sources ORDER BY name");
my $victim = q1("SELECT pid FROM pg_stat_activity WHERE application_name = 'ship-json'");
like($victim, qr/^\d+$/, "the json shipper's backend ($victim) is there to kill");
my $log_offset = -s $node->logfile;
my %ship_offset = map { $_ => -s $ship_log{$_} } keys %ship_log;
kill 'KILL', $victim;
ok(wait_for('SELECT 1', '1', 60), 'the server is back after the crash');
like(slurp_file($node->logfile, $log_offset), qr/all server processes terminated; reinitializing/,
	'the server crash-restarted');
# each shipper lost its connection, and resumed from the flushed position, behind the one
# it had committed
for my $fmt (qw(combined json))
{
	my $name = "nginx-$fmt";
	my $resumed;
	my $end = time + 60;
	while (time < $end)
	{
		($resumed) = slurp_file($ship_log{$fmt}, $ship_offset{$fmt}) =~ /\Q$name\E: from offset \d+ of \S+ \((\d+) lines/;
		last if defined $resumed;
		usleep(100_000);
	}
	is($resumed, $flushed{$name} // 0,
		"$name: resumed after the crash from its flushed position ($resumed lines), not the committed one ($live{$name} lines)");
	cmp_ok($resumed, '<', $live{$name}, "$name: the crash rewound its position");
}
q1("ALTER SYSTEM RESET apicount.flush_interval; SELECT pg_reload_conf()");

# ---- the end of the traffic -------------------------------------------------------------------
my %completed;
for my $fmt (qw(combined json))
{
	$wrk{$fmt}->finish;
	($completed{$fmt}) = $wrk_out{$fmt} =~ /(\d+) requests in /;
	ok(defined $completed{$fmt}, "wrk against the $fmt server reports its completed requests")
	  or diag($wrk_out{$fmt});
	note("wrk $fmt: " . ($wrk_out{$fmt} =~ /(\d+ requests in [^\n]*)/)[0]);
}
system(@nginx, '-s', 'quit');
usleep(500_000);

# the independent count of every file
my (%truth, %lines, %bad);
for my $fmt (qw(combined json))
{
	my @files = map { "$dir/logs/$fmt.log$_" } ('.1', '.2', '');
	my $out = `python3 $count_logs $fmt @files`;
	die "count_logs.py failed" if $?;
	for (split /\n/, $out)
	{
		my ($k, $c, $n) = split /\t/;
		if ($k eq 'lines') { $lines{$fmt} = $c; next; }
		if ($k eq 'bad') { $bad{$fmt} = $c; next; }
		$truth{"$k|$c"} += $n;
	}
}

for my $fmt (qw(combined json))
{
	ok(wait_for("SELECT lines + rejected FROM apicount.sources WHERE name = 'nginx-$fmt'",
			$lines{$fmt}, 90),
		"$fmt: the shipper caught up with the $lines{$fmt} lines of its files");
}
for my $fmt (qw(combined json))
{
	kill 'TERM', $shipper{$fmt}->{KIDS}[0]{PID};
	$shipper{$fmt}->finish;
	is($shipper{$fmt}->result(0), 0, "$fmt: the shipper exits 0 on SIGTERM");
	is(q1("SELECT lines || '/' || rejected FROM apicount.sources WHERE name = 'nginx-$fmt'"),
		($lines{$fmt} - $bad{$fmt}) . "/$bad{$fmt}",
		"$fmt: counted and rejected lines equal the independent parse");
}

my $shiplogs = slurp_file($ship_log{combined}) . slurp_file($ship_log{json});
like($shiplogs, qr/rotated \(renamed\)/, 'the shippers saw the rename');
like($shiplogs, qr/truncated \(copytruncate\): finishing the copy/, 'the shippers saw the copytruncate');
like($shiplogs, qr/from offset \d+/, 'the restarted shipper resumed from its committed position');

q1('SELECT apicount.flush()');
my %got;
for (split /\n/, q1(q{
	SELECT path, sum(ok), sum(client_errors), sum(server_errors)
	FROM apicount.minutes(now() - interval '1 day') GROUP BY path}))
{
	my ($p, $ok, $ce, $se) = split /\|/;
	$got{"$p|ok"} = $ok if $ok;
	$got{"$p|client_errors"} = $ce if $ce;
	$got{"$p|server_errors"} = $se if $se;
}
my $total = 0;
$total += $_ for values %truth;
cmp_ok(scalar(keys %truth), '>=', 10, scalar(keys %truth) . ' paths and status classes in the logs');
is_deeply(\%got, \%truth, "apicount's counts per path and status class equal the parse of the logs ($total lines)");

my $wrk_total = $completed{combined} + $completed{json};
my $in_flight = $total - $wrk_total;
diag("lines logged $total, wrk completed $wrk_total, difference $in_flight");
ok($in_flight >= 0 && $in_flight <= 2 * $CONNS,
	"the logs hold wrk's $wrk_total completed requests, plus at most one in flight per connection ($in_flight)");
is(q1(q{SELECT sum(calls) FROM apicount.minutes(now() - interval '1 day')}), $total,
	'apicount counted every logged request once');

done_testing();
