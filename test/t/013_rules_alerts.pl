# 013_rules_alerts.pl — detection rules, alerts, cooldown, NOTIFY, and restarts.
#
# Every batch of hits is written in one transaction to apicount.requests and, with the same
# ts values (statement_timestamp() - 1 s unless said), to a plain table public.sent; the
# batch's commit time is read with pg_xact_commit_timestamp() (track_commit_timestamp = on).
# An alert's expected calls/errors are computed over public.sent with the documented window
# rule, never from apicount's functions: for windows <= 2 minutes the ceil(window/5 s) slots
# up to the slot holding fired_at, ts <= fired_at, and not from before a restart (README
# "Limits"); for longer windows the minute buckets from date_trunc('minute', fired_at - window)
# up to fired_at.  A batch committed > 0.1 s before fired_at (the evaluating transaction's
# start) must be counted, one committed after the evaluating transaction must not; for one
# in between, both are accepted.
#
# Rules (window '1 minute', cooldown '10 minutes', threshold T = 5 unless said):
#   r_ip      '/r/ip/%'     per ip              r_ip_off  same, enabled = false
#   r_user    '/r/user/%'   per user            r_ipuser  '/r/ipuser/%' per ip_user
#   r_api     '/r/api/%'    per api             r_err     '/r/err/%' per api, min_error_ratio 0.5
#   r_post    '/r/meth/%'   method 'post'       r_anymeth '/r/meth/%' method NULL (both per ip)
#   r_cd      '/r/cd/%'     per ip, cooldown 3 s (re-fires, never closer than 3 s)
#   r_tick    '/r/tick/%'   per ip, T = 1, cooldown 0: fires at every evaluation, used to
#                           count the worker's evaluations
#   r_long    '/r/long/%'   per ip, window '10 minutes' (minute resolution: buckets from
#                           date_trunc('minute', now() - window) up to now())
# Proves:
#  - phase A (10 x T hits per crossing key, plus keys below T and keys with a NULL grouping
#    field): exactly the expected (rule, method, path, client_ip, user_id) alerts exist, once
#    each, after the worker evaluated at least 3 more times and after 3 evaluate_rules() calls
#    by hand; calls/errors/window_start/window_end match the independent computation; NULL vs
#    'post' method, per api/user/ip_user, and min_error_ratio at 0.5 (fires) and 0.48 (not);
#  - a LISTENing psql (IPC::Run) receives one NOTIFY apicount_alert per alert, and each JSON
#    payload (JSON::PP) equals its alerts row (rule, method, path, client_ip, user_id, calls,
#    errors, timestamps) and the expected calls;
#  - phase B: a second IP crossing the same rule gets its own alert; the first IP, now at
#    20 x T in the window, still has one; r_cd alerts are >= 3 s apart and it re-fired;
#  - restart: rules and alerts survive unchanged; after the restart the same key crosses
#    again (visible in hot_callers) but stays suppressed by the cooldown while a new key fires.
# The delay between the commit of crossing hits and the alert's fired_at is reported with
# diag() (not asserted).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use JSON::PP;
use POSIX qw(floor);
use Time::HiRes qw(time usleep);

my $node = PostgreSQL::Test::Cluster->new('rules');
$node->init;
$node->append_conf('postgresql.conf',
	"shared_preload_libraries = 'apicount'\n"
	  . "apicount.flush_interval = '1s'\n"
	  . "log_statement = none\n"
	  . "track_commit_timestamp = on\n"
	  . "timezone = 'UTC'\n");
$node->start;

sub sql { return $node->safe_psql('postgres', $_[0]); }

sql('CREATE EXTENSION apicount');
sql(q{CREATE TABLE public.sent (batch int, ts timestamptz, method text, path text, ip inet,
	uid text, status int)});
# one row per batch, written in the batch's transaction: its commit time is
# pg_xact_commit_timestamp(xmin) (track_commit_timestamp = on)
sql(q{CREATE TABLE public.batches (batch int)});
# server restarts: the sliding windows after a restart do not see earlier hits (README "Limits")
sql(q{CREATE TABLE public.restarts (at timestamptz)});
sql(q{INSERT INTO apicount.rules (name, path_pattern, method, per, threshold, "window",
		min_error_ratio, cooldown, enabled) VALUES
	('r_ip',      '/r/ip/%',     NULL,   'ip',      5, '1 minute', NULL, '10 minutes', true),
	('r_ip_off',  '/r/ip/%',     NULL,   'ip',      5, '1 minute', NULL, '10 minutes', false),
	('r_user',    '/r/user/%',   NULL,   'user',    5, '1 minute', NULL, '10 minutes', true),
	('r_ipuser',  '/r/ipuser/%', NULL,   'ip_user', 5, '1 minute', NULL, '10 minutes', true),
	('r_api',     '/r/api/%',    NULL,   'api',     5, '1 minute', NULL, '10 minutes', true),
	('r_err',     '/r/err/%',    NULL,   'api',     5, '1 minute', 0.5,  '10 minutes', true),
	('r_post',    '/r/meth/%',   'post', 'ip',      5, '1 minute', NULL, '10 minutes', true),
	('r_anymeth', '/r/meth/%',   NULL,   'ip',      5, '1 minute', NULL, '10 minutes', true),
	('r_cd',      '/r/cd/%',     NULL,   'ip',      5, '1 minute', NULL, '3 seconds',  true),
	('r_tick',    '/r/tick/%',   NULL,   'ip',      1, '1 minute', NULL, '0 seconds',  true),
	('r_long',    '/r/long/%',   NULL,   'ip',      5, '10 minutes', NULL, '10 minutes', true)});

my $IP1 = '198.51.100.1';

# send a batch: list of [method, path, ip|undef, user|undef, status, n, seconds ago (default
# 1)]; returns the commit
# time (epoch seconds, float)
my $batchno = 0;
sub send_batch
{
	my @rows = @_;
	$batchno++;
	my @v = map {
		my ($m, $p, $ip, $u, $st, $n, $ago) = @$_;
		sprintf("('%s', '%s', %s, %s, %d, %d, %d)",
			$m, $p,
			defined $ip ? "'$ip'::inet" : 'NULL::inet',
			defined $u  ? "'$u'"        : 'NULL::text',
			$st, $n, $ago // 1)
	} @rows;
	my $out = sql(
		"BEGIN;
		 INSERT INTO public.sent SELECT $batchno, statement_timestamp() - v.ago * interval '1 second',
		   v.m, v.p, v.ip, v.u, v.st
		 FROM (VALUES " . join(",\n", @v) . ") v(m, p, ip, u, st, n, ago), generate_series(1, v.n);
		 INSERT INTO apicount.requests (ts, method, path, client_ip, user_id, status)
		 SELECT ts, method, path, ip, uid, status FROM public.sent WHERE batch = $batchno;
		 INSERT INTO public.batches VALUES ($batchno);
		 COMMIT;
		 SELECT extract(epoch FROM pg_xact_commit_timestamp(xmin)) FROM public.batches
		 WHERE batch = $batchno;");
	return $out + 0;
}

sub poll_until    # poll a query until it returns $want; bounded
{
	my ($q, $want, $secs) = @_;
	my $last;
	my $deadline = time() + $secs;
	while (time() < $deadline)
	{
		$last = sql($q);
		return 1 if $last eq $want;
		usleep(100_000);
	}
	diag("timed out after $secs s: $q -> '$last', wanted '$want'");
	return 0;
}

sub ticks { return sql("SELECT count(*) FROM apicount.alerts WHERE rule = 'r_tick'"); }

# wait until the worker has evaluated the rules $n more times (r_tick fires each time)
sub wait_evaluations
{
	my ($n) = @_;
	my $want = ticks() + $n;
	return poll_until("SELECT count(*) >= $want FROM apicount.alerts WHERE rule = 'r_tick'",
		't', 30);
}

# (rule method path ip user) of every alert except r_cd / r_tick, sorted, with multiplicity
sub alert_keys
{
	return sql(
		q{SELECT string_agg(k, E'\n' ORDER BY k COLLATE "C") FROM (
		    SELECT concat_ws(' ', rule, coalesce(method, '-'), coalesce(path, '-'),
		                     coalesce(host(client_ip), '-'), coalesce(user_id, '-')) AS k
		    FROM apicount.alerts WHERE rule NOT IN ('r_cd', 'r_tick')) s});
}

# alerts whose calls/errors/window differ from the independent computation over public.sent.
# A batch that committed more than 0.1 s before fired_at (the evaluating transaction's start)
# is visible to the evaluation; one that committed after the evaluating transaction did is
# not; for a batch in between (committing while the evaluation ran) both outcomes are
# accepted (there are few: see the note).  Batches from
# before a restart are not in the sliding windows after it (README "Limits").
sub check_alert_values
{
	my ($label) = @_;
	my $bad = sql(
		q{WITH x AS (
		    SELECT a.*, r.per, e.*,
		      CASE WHEN r."window" <= interval '2 minutes'
		           THEN to_timestamp((floor(extract(epoch FROM a.fired_at) / 5)
		                              - ceil(extract(epoch FROM r."window") / 5) + 1) * 5)
		           ELSE date_trunc('minute', a.fired_at - r."window") END AS exp_wstart
		    FROM apicount.alerts a JOIN apicount.rules r ON r.name = a.rule,
		    LATERAL (
		      SELECT count(*) FILTER (WHERE b.c < a.fired_at - interval '0.1 s') AS c_sure,
		             count(*) FILTER (WHERE b.c < a.fired_at - interval '0.1 s'
		                              AND s.status >= 400) AS e_sure,
		             count(*) FILTER (WHERE b.c <= pg_xact_commit_timestamp(a.xmin)) AS c_maybe,
		             count(*) FILTER (WHERE b.c <= pg_xact_commit_timestamp(a.xmin)
		                              AND s.status >= 400) AS e_maybe
		      FROM public.sent s
		      JOIN (SELECT batch, pg_xact_commit_timestamp(xmin) AS c FROM public.batches) b
		        USING (batch)
		      WHERE s.method = a.method AND s.path = a.path
		        AND (r.per IN ('api', 'user') OR s.ip = a.client_ip)
		        AND (r.per IN ('api', 'ip') OR s.uid = a.user_id)
		        AND CASE WHEN r."window" <= interval '2 minutes' THEN
		              floor(extract(epoch FROM s.ts) / 5)
		                BETWEEN floor(extract(epoch FROM a.fired_at) / 5)
		                        - ceil(extract(epoch FROM r."window") / 5) + 1
		                    AND floor(extract(epoch FROM a.fired_at) / 5)
		              AND s.ts <= a.fired_at
		              AND NOT EXISTS (SELECT 1 FROM public.restarts rs
		                              WHERE b.c < rs.at AND rs.at < a.fired_at)
		            ELSE -- minute resolution: buckets from date_trunc('minute', now() - window) to now()
		              date_trunc('minute', s.ts) >= date_trunc('minute', a.fired_at - r."window")
		              AND date_trunc('minute', s.ts) <= a.fired_at
		            END) e)
		  SELECT string_agg(format('%s %s %s %s %s: calls %s (expected %s or %s) errors %s (%s or %s) window %s/%s end %s/%s',
		           id, rule, method, path, client_ip, calls, c_sure, c_maybe, errors, e_sure,
		           e_maybe, window_start, exp_wstart, window_end, fired_at), E'\n')
		  FROM x
		  WHERE NOT ((calls, errors) IN ((c_sure, e_sure), (c_maybe, e_maybe)))
		     OR window_start <> exp_wstart OR window_end <> fired_at
		     OR (per = 'api' AND (client_ip IS NOT NULL OR user_id IS NOT NULL))
		     OR (per = 'ip' AND (client_ip IS NULL OR user_id IS NOT NULL))
		     OR (per = 'user' AND (client_ip IS NOT NULL OR user_id IS NULL))
		     OR (per = 'ip_user' AND (client_ip IS NULL OR user_id IS NULL))});
	is($bad, '', "$label: every alert's calls, errors, key columns and window match public.sent");
	my $amb = sql(
		q{SELECT count(*) FROM apicount.alerts a WHERE EXISTS (SELECT 1 FROM public.batches b
		  WHERE pg_xact_commit_timestamp(b.xmin) >= a.fired_at - interval '0.1 s'
		    AND pg_xact_commit_timestamp(b.xmin) <= pg_xact_commit_timestamp(a.xmin))});
	note("$label: $amb alerts were evaluated while a batch was committing");
}

sub report_delays
{
	my ($label, $commit, $where) = @_;
	my $out = sql(
		"SELECT rule, coalesce(host(client_ip), user_id, path), extract(epoch FROM fired_at) "
		  . "FROM apicount.alerts WHERE $where ORDER BY id");
	for my $l (split /\n/, $out)
	{
		my ($rule, $key, $fired) = split /\|/, $l;
		diag(sprintf('alert delay %s: %s %s: fired_at - commit = %.0f ms',
			$label, $rule, $key, ($fired - $commit) * 1000));
	}
}

# ---- listener ----------------------------------------------------------------------------
# psql reads its script from a pipe that stays open: LISTEN, then a marker query; psql prints
# the notifications it received after each later command, so the final "SELECT 'done'"
# (sent once the phase-A alerts exist) flushes them all before psql exits.
my ($lin, $lout, $lerr) = ("LISTEN apicount_alert;\nSELECT 'listening';\n", '', '');
my $listener = IPC::Run::start(
	[ $node->installed_command('psql'), '-XAtq', '-d', $node->connstr('postgres') ],
	'<', \$lin, '>', \$lout, '2>', \$lerr,
	IPC::Run::timeout(120));
$listener->pump until $lout =~ /^listening$/m;
ok(1, 'a psql client is LISTENing on apicount_alert');

# ---- phase A -----------------------------------------------------------------------------
usleep(int(rand(2_500_000)));    # a random phase against the worker's 2.5 s cadence
my $commit_a = send_batch(
	[ 'GET',  '/r/ip/a',     $IP1,            undef,     200, 50 ],
	[ 'GET',  '/r/ip/a',     '198.51.100.9',  undef,     200, 4 ],
	(map { [ 'GET', '/r/user/a', "198.51.100.1$_", 'mallory', 200, 10 ] } 1 .. 5),
	[ 'GET',  '/r/user/a',   '198.51.100.16', undef,     200, 20 ],
	[ 'GET',  '/r/user/a',   '198.51.100.17', 'bob',     200, 4 ],
	[ 'GET',  '/r/ipuser/a', $IP1,            'alice',   200, 50 ],
	[ 'GET',  '/r/ipuser/a', $IP1,            'bob',     200, 4 ],
	[ 'GET',  '/r/ipuser/a', $IP1,            undef,     200, 20 ],
	[ 'GET',  '/r/ipuser/a', undef,           'alice',   200, 20 ],
	(map { [ 'GET', '/r/api/a', "198.51.100.2$_", undef, 200, 5 ] } 0 .. 9),
	[ 'GET',  '/r/api/b',    $IP1,            undef,     200, 4 ],
	[ 'GET',  '/r/meth/g',   $IP1,            undef,     200, 50 ],
	[ 'POST', '/r/meth/p',   $IP1,            undef,     200, 50 ],
	[ 'GET',  '/r/err/at',   $IP1,            undef,     500, 25 ],
	[ 'GET',  '/r/err/at',   $IP1,            undef,     200, 25 ],
	[ 'GET',  '/r/err/below', $IP1,           undef,     404, 24 ],
	[ 'GET',  '/r/err/below', $IP1,           undef,     200, 26 ],
	[ 'GET',  '/r/err/all',  $IP1,            undef,     503, 10 ],
	[ 'GET',  '/r/cd/a',     $IP1,            undef,     200, 50 ],
	[ 'GET',  '/r/tick/a',   $IP1,            undef,     200, 1 ],
	# r_long (10-minute window, minute resolution): 8 and 12 minutes ago, and now
	[ 'GET',  '/r/long/a',   $IP1,            undef,     200, 3,  480 ],
	[ 'GET',  '/r/long/a',   $IP1,            undef,     200, 7,  720 ],
	[ 'GET',  '/r/long/a',   $IP1,            undef,     200, 50 ]);

my $expected_a = join("\n", sort
	"r_long GET /r/long/a $IP1 -",
	"r_anymeth GET /r/meth/g $IP1 -",
	"r_anymeth POST /r/meth/p $IP1 -",
	'r_api GET /r/api/a - -',
	'r_err GET /r/err/all - -',
	'r_err GET /r/err/at - -',
	"r_ip GET /r/ip/a $IP1 -",
	"r_ipuser GET /r/ipuser/a $IP1 alice",
	"r_post POST /r/meth/p $IP1 -",
	'r_user GET /r/user/a - mallory');
poll_until(
	q{SELECT count(DISTINCT rule || path || coalesce(host(client_ip), '') || coalesce(user_id, ''))
	  FROM apicount.alerts WHERE rule NOT IN ('r_cd', 'r_tick')}, '10', 30);
report_delays('phase A', $commit_a, "rule NOT IN ('r_cd', 'r_tick')");
ok(wait_evaluations(3), 'the worker evaluated the rules 3 more times');
is(alert_keys(), $expected_a,
	'phase A: exactly one alert per crossing key (per ip/user/ip_user/api, method, min_error_ratio)');

my $manual = 0;
for (1 .. 3)
{
	# the rows this call inserted are those with its transaction's xmin (the worker may
	# insert r_cd / r_tick alerts at the same time)
	my ($ret, $mine) = split /\n/,
	  sql('BEGIN; SELECT apicount.evaluate_rules(); '
		  . 'SELECT count(*) FROM apicount.alerts WHERE xmin = pg_current_xact_id()::xid; COMMIT;');
	$manual++ if $ret == $mine;
}
is($manual, 3, 'evaluate_rules() returns the number of alerts it inserted (3 calls)');
is(alert_keys(), $expected_a, 'after 3 evaluate_rules() by hand: still one alert per key');
is(sql(q{SELECT calls || ' ' || (window_start = date_trunc('minute', fired_at - interval '10 minutes'))
	FROM apicount.alerts WHERE rule = 'r_long'}),
	'53 true', "r_long ('10 minutes', minute resolution): 50 + the 3 calls of 8 minutes ago, "
	  . 'not the 7 of 12 minutes ago; window_start is a whole minute');
check_alert_values('phase A');

# ---- NOTIFY ------------------------------------------------------------------------------
my $maxid_listened = sql('SELECT max(id) FROM apicount.alerts');
$lin .= "SELECT pg_sleep(0.5);\nSELECT 'done';\n";
$listener->finish;
like($lout, qr/^done$/m, 'the listening psql ran to the end');
my @notes;
for my $l (split /\n/, $lout)
{
	push @notes, decode_json($1)
	  if $l =~ /^Asynchronous notification "apicount_alert" with payload "(.*)" received from server process with PID \d+\.$/;
}
note("listener stderr: $lerr") if $lerr ne '';
my %rows = map {
	my @f = split /\|/, $_, -1;
	($f[0] => \@f)
  } split /\n/,
  sql(q{SELECT id, rule, coalesce(method, '<null>'), coalesce(path, '<null>'),
	coalesce(host(client_ip), '<null>'), coalesce(user_id, '<null>'), calls, errors,
	to_json(fired_at) #>> '{}', to_json(window_start) #>> '{}', to_json(window_end) #>> '{}'
	FROM apicount.alerts});
my @mismatch;
my %noted;
for my $n (@notes)
{
	my $r = $rows{ $n->{id} };
	if (!$r)
	{
		push @mismatch, "payload id $n->{id} has no alerts row";
		next;
	}
	$noted{ $n->{id} }++;
	my @got = map { defined $n->{$_} ? $n->{$_} : '<null>' }
	  qw(id rule method path client_ip user_id calls errors fired_at window_start window_end);
	push @mismatch, 'payload ' . join(' ', @got) . ' vs row ' . join(' ', @$r)
	  unless join('|', @got) eq join('|', @$r);
}
is(join("\n", @mismatch), '', scalar(@notes) . ' NOTIFY payloads, each equal to its alerts row');
# every alert committed while the client listened was notified exactly once
my @a_ids = split /\n/, sql("SELECT id FROM apicount.alerts WHERE id <= $maxid_listened ORDER BY id");
is(join(',', map { "$_:" . ($noted{$_} // 0) } @a_ids), join(',', map { "$_:1" } @a_ids),
	'each of the ' . scalar(@a_ids) . ' alerts inserted while listening was notified exactly once');
is(scalar(grep { $_->{rule} !~ /^r_(cd|tick)$/ } @notes), 10,
	'the 10 phase-A alerts of the non-repeating rules are among them');
my ($n_ip) = grep { $_->{rule} eq 'r_ip' } @notes;
is(defined $n_ip ? "$n_ip->{rule} $n_ip->{path} $n_ip->{client_ip} $n_ip->{calls}" : 'none',
	"r_ip /r/ip/a $IP1 50", 'the r_ip payload names the path, the IP and 50 calls (10 x T)');

# ---- phase B -----------------------------------------------------------------------------
usleep(int(rand(2_500_000)));    # a random phase against the worker's 2.5 s cadence
my $commit_b = send_batch(
	[ 'GET', '/r/ip/a',   '198.51.100.2', undef, 200, 50 ],
	[ 'GET', '/r/ip/a',   $IP1,           undef, 200, 50 ],
	[ 'GET', '/r/tick/a', $IP1,           undef, 200, 1 ]);
my $maxid = sql('SELECT max(id) FROM apicount.alerts');
poll_until(q{SELECT count(*) FROM apicount.alerts WHERE rule = 'r_ip'
	AND client_ip = '198.51.100.2'}, '1', 30);
report_delays('phase B', $commit_b, "rule = 'r_ip' AND id > $maxid");
ok(wait_evaluations(3), 'the worker evaluated the rules 3 more times');
sql('SELECT apicount.evaluate_rules()') for 1 .. 2;
my $expected_b = join("\n",
	(grep { !/^r_ip / } split /\n/, $expected_a),
	"r_ip GET /r/ip/a $IP1 -", 'r_ip GET /r/ip/a 198.51.100.2 -');
$expected_b = join("\n", sort split /\n/, $expected_b);
is(alert_keys(), $expected_b,
	'phase B: the second IP has its own alert; the first IP (100 calls now) still one');
is(sql(q{SELECT calls FROM apicount.alerts WHERE rule = 'r_ip' AND client_ip = '198.51.100.2'}),
	'50', 'the second IP alert has 50 calls');
check_alert_values('phase B');

my $cd = sql(q{SELECT count(*), coalesce(min(gap), 0) >= 3 FROM (
	SELECT extract(epoch FROM fired_at - lag(fired_at) OVER (ORDER BY fired_at)) AS gap
	FROM apicount.alerts WHERE rule = 'r_cd') s});
my ($cd_n, $cd_gap) = split /\|/, $cd;
ok($cd_n >= 2, "r_cd (cooldown 3 s) fired again after its cooldown ($cd_n alerts)");
is($cd_gap, 't', 'r_cd alerts are at least 3 s apart');

# ---- restart -----------------------------------------------------------------------------
sql(q{UPDATE apicount.rules SET enabled = false WHERE name IN ('r_cd', 'r_tick')});
usleep(500_000);    # let an evaluation that started before the UPDATE finish
my $snap_sql = q{SELECT (SELECT string_agg(r::text, E'\n' ORDER BY name) FROM apicount.rules r)
	|| E'\n--\n' || (SELECT string_agg(a::text, E'\n' ORDER BY id) FROM apicount.alerts a)};
my $snap = sql($snap_sql);
sql('INSERT INTO public.restarts VALUES (clock_timestamp())');
$node->restart;
is(sql($snap_sql), $snap, 'rules and alerts are unchanged after a restart');
sql(q{UPDATE apicount.rules SET enabled = true WHERE name = 'r_tick'});

usleep(int(rand(2_500_000)));    # a random phase against the worker's 2.5 s cadence
my $commit_c = send_batch(
	[ 'GET', '/r/ip/a',   $IP1,           undef, 200, 50 ],
	[ 'GET', '/r/ip/a',   '198.51.100.3', undef, 200, 50 ],
	[ 'GET', '/r/tick/a', $IP1,           undef, 200, 1 ]);
$maxid = sql('SELECT max(id) FROM apicount.alerts');
poll_until(q{SELECT count(*) FROM apicount.alerts WHERE rule = 'r_ip'
	AND client_ip = '198.51.100.3'}, '1', 30);
report_delays('after restart', $commit_c, "rule = 'r_ip' AND id > $maxid");
ok(wait_evaluations(3), 'after the restart, the worker evaluated the rules 3 more times');
sql('SELECT apicount.evaluate_rules()') for 1 .. 2;
is(sql(q{SELECT client_ip, calls FROM apicount.hot_callers(5, '1 minute', '/r/ip/a')
	ORDER BY client_ip}),
	"$IP1|50\n198.51.100.3|50",
	'after the restart, the first IP crosses the threshold again in the sliding window');
is(sql("SELECT count(*) FROM apicount.alerts WHERE rule = 'r_ip' AND client_ip = '$IP1'"),
	'1', 'the cooldown still suppresses a second alert for that key after the restart');
my @expected_c = (split(/\n/, $expected_b), 'r_ip GET /r/ip/a 198.51.100.3 -');
is(alert_keys(), join("\n", sort @expected_c), 'after the restart: only the new key fired');
check_alert_values('after restart');

done_testing();
