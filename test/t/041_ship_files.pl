# 041_ship_files.pl — apicount-ship on files: the real Apache sample, bad lines, restarts,
# privileges and the limit of source slots.
#
#  - ../shared/data/apache_combined_10k.log (skipped when absent): shipped without --follow;
#    apicount's counts per normalized path and status class equal an independent Python parse
#    (test/ship/count_logs.py), and the source's lines and rejected lines add up to its lines;
#  - bad lines (garbage, status 999, a control character, invalid UTF-8, a time in the future,
#    a method of 17 characters, broken JSON) are rejected without stopping their batch, are not
#    counted, are counted per source, and are written to --reject-file as file:line: reason;
#    line numbers are known by construction;
#  - shipping again, and again after a server restart, counts nothing twice;
#  - a line that apicount refuses although the shipper's own checks passed (the retention was
#    shortened while the shipper ran) is rejected alone: its batch goes again row by row;
#  - apicount_reader reads apicount.sources; a shipper needs only apicount_writer;
#  - with apicount.max_sources = 4, a fifth source since the server started fails with SQLSTATE
#    53400 and a hint.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use IPC::Run;
use POSIX qw(strftime);
use File::Copy qw(copy);

sub in_path { my ($p) = grep { -x "$_/$_[0]" } split /:/, $ENV{PATH}; return $p ? "$p/$_[0]" : undef; }
my $root = $ENV{APICOUNT_ROOT} // "$FindBin::Bin/../..";
my $ship = in_path('apicount-ship') // "$root/ship/apicount-ship";
my $count_logs = "$root/test/ship/count_logs.py";
# ../shared/data beside the repository (APICOUNT_ROOT may be a copy of its test files)
my ($apache) = grep { -r $_ } map { "$_/../shared/data/apache_combined_10k.log" }
  ($root, "$FindBin::RealBin/../..");
$apache //= 'apache_combined_10k.log (absent)';

my $node = PostgreSQL::Test::Cluster->new('ship_files');
$node->init;
$node->append_conf('postgresql.conf',
	"shared_preload_libraries = 'apicount'\n"
	  . "apicount.flush_interval = '1s'\n"
	  . "apicount.retention = '1000 weeks'\n"    # the Apache sample is from May 2015
	  . "apicount.max_sources = 4\n"
	  . "log_statement = none\n"
	  . "timezone = 'UTC'\n");
$node->start;
$node->safe_psql('postgres', q{
	CREATE EXTENSION apicount;
	CREATE ROLE shipper LOGIN IN ROLE apicount_writer;
	CREATE ROLE watcher LOGIN IN ROLE apicount_reader;});
sub q1 { return $node->safe_psql('postgres', $_[0]); }

my $dir = $PostgreSQL::Test::Utils::tmp_check;
my $conn = 'host=' . $node->host . ' port=' . $node->port . ' dbname=postgres user=shipper';

# run the shipper to the end of its files: (exit code, stderr)
sub ship
{
	my (@args) = @_;
	my ($out, $err) = ('', '');
	IPC::Run::run([ $ship, '-d', $conn, @args ], '<', '/dev/null', '>', \$out, '2>', \$err,
		IPC::Run::timeout(120));
	return ($? >> 8, $err);
}

# apicount's ok / client_errors / server_errors per path, in a time range
sub counts
{
	my ($from) = @_;
	my %got;
	for (split /\n/, q1(qq{
		SELECT path, sum(ok), sum(client_errors), sum(server_errors)
		FROM apicount.minutes('$from', now()) GROUP BY path}))
	{
		my ($p, $ok, $ce, $se) = split /\|/;
		$got{"$p|ok"} = $ok if $ok;
		$got{"$p|client_errors"} = $ce if $ce;
		$got{"$p|server_errors"} = $se if $se;
	}
	return \%got;
}

sub truth
{
	my ($fmt, @files) = @_;
	my (%t, %meta);
	for (split /\n/, `python3 $count_logs $fmt @files`)
	{
		my ($k, $c, $n) = split /\t/;
		if ($k eq 'lines' || $k eq 'bad') { $meta{$k} = $c; next; }
		$t{"$k|$c"} = $n;
	}
	return (\%t, \%meta);
}

# ---- the real Apache sample -------------------------------------------------------------------
SKIP:
{
	skip "$apache is absent", 4 unless -r $apache;
	copy($apache, "$dir/apache.log") or die "copy: $!";
	my ($rc, $err) = ship('--format=combined', '--source=apache', "--reject-file=$dir/apache-rejects.txt",
		"$dir/apache.log");
	is($rc, 0, 'the Apache sample is shipped (exit 0)') or diag($err);
	q1('SELECT apicount.flush()');
	my ($truth, $meta) = truth('combined', "$dir/apache.log");
	is_deeply(counts('2015-01-01'), $truth,
		'apicount equals the independent parse of the Apache sample, per path and status class');
	is(q1(q{SELECT lines || '/' || rejected FROM apicount.sources WHERE name = 'apache'}),
		($meta->{lines} - $meta->{bad}) . "/$meta->{bad}", "lines and rejected lines of the sample ($meta->{lines} lines)");
	my @rejects = split /\n/, slurp_file("$dir/apache-rejects.txt");
	is(scalar(@rejects), $meta->{bad}, 'each rejected line is in the reject file');
}

# ---- bad lines ----------------------------------------------------------------------------------
my $now = time;
my $t = strftime('%d/%b/%Y:%H:%M:%S +0000', gmtime($now - 60));
my $future = strftime('%d/%b/%Y:%H:%M:%S +0000', gmtime($now + 3600));
my @lines = (
	qq{10.0.0.1 - - [$t] "GET /bad/a HTTP/1.1" 200 5 "-" "t" 0.010},
	qq{this is not a log line},
	qq{10.0.0.1 - - [$t] "GET /bad/a HTTP/1.1" 999 5 "-" "t" 0.010},
	qq{10.0.0.1 - - [$t] "GET /bad/\x01x HTTP/1.1" 200 5 "-" "t" 0.010},
	qq{10.0.0.1 - - [$t] "GET /bad/\xff HTTP/1.1" 200 5 "-" "t" 0.010},
	qq{10.0.0.1 - - [$future] "GET /bad/a HTTP/1.1" 200 5 "-" "t" 0.010},
	qq{10.0.0.1 - - [$t] "ABCDEFGHIJKLMNOPQ /bad/a HTTP/1.1" 200 5 "-" "t" 0.010},
	qq{10.0.0.1 - bob [$t] "POST /bad/b HTTP/1.1" 404 5 "-" "t" 0.010},
);
my @bad_at = (2, 3, 4, 5, 6, 7);
open(my $fh, '>:raw', "$dir/bad.log") or die;
print $fh "$_\n" for @lines;
close $fh;
my ($rc, $err) = ship('--format=combined', '--source=bad', '--batch-lines=100',
	"--reject-file=$dir/bad-rejects.txt", "$dir/bad.log");
is($rc, 0, 'bad lines do not stop the shipper') or diag($err);
is(q1(q{SELECT lines || '/' || rejected FROM apicount.sources WHERE name = 'bad'}), '2/6',
	'2 lines counted, 6 rejected');
q1('SELECT apicount.flush()');
is(q1(q{SELECT string_agg(method || ' ' || path || ' ' || calls, ',' ORDER BY path)
	FROM apicount.minutes(now() - interval '1 hour') WHERE path LIKE '/bad/%'}),
	'GET /bad/a 1,POST /bad/b 1', 'only the good lines, before and after the bad ones, are counted');
my @rej = split /\n/, slurp_file("$dir/bad-rejects.txt");
is(join(',', map { /^\Q$dir\E\/bad\.log:(\d+): / ? $1 : 'x' } @rej), join(',', @bad_at),
	'the reject file names each bad line by file:line');
like($rej[1], qr/:3: status out of range: /, 'with the reason');

# JSON: broken lines among good ones
open($fh, '>:raw', "$dir/bad.json") or die;
my $iso = strftime('%Y-%m-%dT%H:%M:%S+00:00', gmtime($now - 60));
print $fh qq|{"time":"$iso","method":"GET","uri":"/badj/a","status":200,"request_time":0.001}\n|;
print $fh qq|{"time":"$iso","method":"GET","uri":"/badj/b","status":200\n|;
print $fh qq|{"time":"$iso","method":"GET","status":200}\n|;
print $fh qq|{"time":"$iso","method":"GET","uri":"/badj/c","status":503,"request_time":0.001}\n|;
close $fh;
($rc, $err) = ship('--format=json', '--source=badj', "--reject-file=$dir/badj-rejects.txt", "$dir/bad.json");
is($rc, 0, 'json: bad lines do not stop the shipper') or diag($err);
is(q1(q{SELECT lines || '/' || rejected FROM apicount.sources WHERE name = 'badj'}), '2/2', 'json: 2 counted, 2 rejected');
is(join(',', map { /:(\d+): / ? $1 : 'x' } split /\n/, slurp_file("$dir/badj-rejects.txt")), '2,3',
	'json: the reject file names lines 2 and 3');

# ---- nothing twice: again, and after a restart -------------------------------------------------
($rc, $err) = ship('--format=combined', '--source=bad', "$dir/bad.log");
like($err, qr/bad: done: 0 lines counted, 0 rejected/, 'shipping the file again counts nothing');
$node->restart;
($rc, $err) = ship('--format=json', '--source=badj', "$dir/bad.json");
like($err, qr/badj: done: 0 lines counted, 0 rejected/, 'nor after a server restart');
open($fh, '>>:raw', "$dir/bad.json") or die;
print $fh qq|{"time":"$iso","method":"DELETE","uri":"/badj/d","status":204}\n|;
close $fh;
($rc, $err) = ship('--format=json', '--source=badj', "$dir/bad.json");
like($err, qr/badj: done: 1 lines counted, 0 rejected/, 'a line appended later is shipped alone');
q1('SELECT apicount.flush()');
is(q1(q{SELECT sum(calls) FROM apicount.minutes(now() - interval '1 hour') WHERE path LIKE '/badj/%'}),
	'3', 'json: 3 lines counted once each');

# ---- a line apicount refuses although the shipper's checks passed ----------------------------
# The shipper reads apicount.retention when it connects.  Shorten it while a --follow shipper
# runs, then append a line older than the new retention: the batch's COPY fails, the batch goes
# again row by row under savepoints, and only that line is rejected, with the server's reason.
my $old = strftime('%d/%b/%Y:%H:%M:%S +0000', gmtime($now - 7200));
open($fh, '>', "$dir/late.log") or die;
print $fh qq{10.0.0.1 - - [$t] "GET /late/a HTTP/1.1" 200 5\n};
close $fh;
my ($lout, $lerr) = ('', '');
my $follower = IPC::Run::start([ $ship, '-d', $conn, '--format=combined', '--source=late', '--follow',
		"--reject-file=$dir/late-rejects.txt", "$dir/late.log" ],
	'<', '/dev/null', '>', \$lout, '2>', \$lerr);
ok($node->poll_query_until('postgres', q{SELECT lines FROM apicount.sources WHERE name = 'late'}, '1'),
	'the follower shipped the first line');
q1("ALTER SYSTEM SET apicount.retention = '1 hour'; SELECT pg_reload_conf()");
$node->poll_query_until('postgres', q{SHOW apicount.retention}, '1 hour');
open($fh, '>>', "$dir/late.log") or die;
print $fh qq{10.0.0.1 - - [$t] "GET /late/b HTTP/1.1" 200 5\n};
print $fh qq{10.0.0.1 - - [$old] "GET /late/old HTTP/1.1" 200 5\n};
print $fh qq{10.0.0.1 - - [$t] "GET /late/c HTTP/1.1" 500 5\n};
close $fh;
ok($node->poll_query_until('postgres',
		q{SELECT lines || '/' || rejected FROM apicount.sources WHERE name = 'late'}, '3/1'),
	'the refused line is rejected, the two others of its batch are counted');
kill 'TERM', $follower->{KIDS}[0]{PID};
$follower->finish;
is($follower->result(0), 0, 'the follower exits 0 on SIGTERM');
like($lerr, qr/apicount refused a row of this batch .*older than the retention.*row by row/,
	'the shipper says why it went row by row');
like(slurp_file("$dir/late-rejects.txt"), qr/^\Q$dir\E\/late\.log:3: request timestamp .* is older than the retention period: /m,
	'the reject file has line 3 and the server\'s reason');
q1('SELECT apicount.flush()');
is(q1(q{SELECT string_agg(path, ',' ORDER BY path) FROM apicount.minutes(now() - interval '1 hour')
	WHERE path LIKE '/late/%'}), '/late/a,/late/b,/late/c', 'the lines around it are counted');
q1("ALTER SYSTEM RESET apicount.retention; SELECT pg_reload_conf()");

# ---- privileges and limits ----------------------------------------------------------------------
is($node->safe_psql('postgres', 'SELECT count(*) > 0 FROM apicount.sources', extra_params => [ '-U', 'watcher' ]),
	't', 'apicount_reader reads apicount.sources');
my ($ret, $o, $e) = $node->psql('postgres',
	q{SELECT apicount.ship_position('x', 'f', 1, 1, 0, NULL, NULL)}, extra_params => [ '-U', 'watcher' ]);
like($e, qr/permission denied/, 'apicount_reader cannot ship positions');
# slots are taken per server start: since the restart badj and late have one each, of 4
for my $name (qw(fourth fifth sixth))
{
	open($fh, '>', "$dir/$name.log") or die;
	print $fh qq{10.0.0.1 - - [$t] "GET /$name HTTP/1.1" 200 5\n};
	close $fh;
}
for my $name (qw(fourth fifth))
{
	($rc, $err) = ship('--format=combined', "--source=$name", "$dir/$name.log");
	is($rc, 0, "$name fits in apicount.max_sources = 4 since the restart") or diag($err);
}
($rc, $err) = ship('--format=combined', '--source=sixth', "$dir/sixth.log");
is($rc, 1, 'a fifth source since the restart fails (exit 1, no retry)');
like($err, qr/no room for source "sixth"/, 'with a message naming the source');
($ret, $o, $e) = $node->psql('postgres', q{SELECT apicount.ship_position('seventh', 'f', 1, 1, 0, NULL, NULL)},
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($e, qr/53400.*HINT:  Raise apicount.max_sources/s, 'SQLSTATE 53400, and a hint to raise the setting');
q1('SELECT apicount.flush()');
is(q1(q{SELECT string_agg(path, ',' ORDER BY path) FROM apicount.minutes(now() - interval '1 hour')
	WHERE path IN ('/fourth', '/fifth', '/sixth')}), '/fifth,/fourth', 'the refused source counted nothing');

done_testing();
