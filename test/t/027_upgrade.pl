# 027_upgrade.pl — ALTER EXTENSION apicount UPDATE from every older version, with data.
#
# The versions come from the tree, not from this file: every sql/apicount--X.sql (a base
# script) and sql/apicount--X--Y.sql (an upgrade script) names a version, and the control
# file's default_version is the newest.  Each older version is a starting point, in a
# cluster of its own:
#  - install it (CREATE EXTENSION ... VERSION, which runs a base script and upgrades);
#  - fill it: hits at fixed past times (minute and hour rollups, tracked and untracked
#    callers, latencies, errors), a rule that fires (the worker writes the alert), a
#    disabled rule, an audited API and a shipped position where the version has them;
#  - record more hits, which may still wait unflushed in shared memory during the update;
#  - capture the rollup, rule and alert rows and the outputs of the query functions
#    (with the columns the old version has), ALTER EXTENSION apicount UPDATE, and capture
#    them again: they must be the same, and they must match values computed here from the
#    way the hits were generated;
#  - the updated extension counts and flushes new hits, and caller rows add up;
#  - its objects match a fresh CREATE EXTENSION of the newest version (dropped and created
#    again in the same database, the only one apicount accepts): compared through the
#    catalogs, and through a schema-only pg_dump.
#
# pg_dump prints only "CREATE EXTENSION" for an extension's objects, except with
# --binary-upgrade (the mode pg_upgrade uses), which prints every member object.  The dump
# is normalized: comments, SET lines, OIDs and the binary-upgrade calls that carry storage
# details (OIDs, dropped columns, missing values of added columns) are removed, and the
# lines are sorted.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $root = $ENV{APICOUNT_ROOT} // '.';

# ---------------------------------------------------------------------------
# versions, from the tree
# ---------------------------------------------------------------------------
sub vcmp
{
	my @a = split /\./, $_[0];
	my @b = split /\./, $_[1];
	while (@a || @b)
	{
		my $c = (shift(@a) // 0) <=> (shift(@b) // 0);
		return $c if $c;
	}
	return 0;
}

my $control = slurp_file("$root/apicount.control");
my ($newest) = $control =~ /^\s*default_version\s*=\s*'([^']+)'/m;
ok(defined $newest, "apicount.control has a default_version ($newest)");
my (%versions, %steps);
for my $f (glob "$root/sql/apicount--*.sql")
{
	if ($f =~ m{/apicount--([0-9.]+)--([0-9.]+)\.sql$})
	{
		$versions{$1} = $versions{$2} = 1;
		$steps{"$1--$2"} = 1;
	}
	elsif ($f =~ m{/apicount--([0-9.]+)\.sql$})
	{
		$versions{$1} = 1;
	}
}
ok($versions{$newest}, "the default version $newest has a script in sql/");
my @older = sort { vcmp($a, $b) } grep { vcmp($_, $newest) < 0 } keys %versions;
cmp_ok(scalar @older, '>=', 2, 'older versions to start from: ' . join(', ', @older));
is(join(',', grep { vcmp($_, $newest) > 0 } keys %versions), '', 'no script is newer than the default version');

# the catalog description of the extension's schema: functions, columns, views,
# constraints, indexes, triggers and privileges
my $schema_sql = q{
	SELECT string_agg(x, E'\n' ORDER BY x) FROM (
		SELECT 'F ' || p.oid::regprocedure || ' ' || pg_get_functiondef(p.oid) || ' ' || coalesce(p.proacl::text, '') AS x
		FROM pg_proc p WHERE p.pronamespace = 'apicount'::regnamespace AND p.prokind <> 'a'
		UNION ALL
		SELECT 'A ' || p.oid::regprocedure FROM pg_proc p
		WHERE p.pronamespace = 'apicount'::regnamespace AND p.prokind = 'a'
		UNION ALL
		SELECT 'C ' || c.relname || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
		       || ' ' || a.attnotnull || ' ' || coalesce(pg_get_expr(d.adbin, d.adrelid), '')
		FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
		LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
		WHERE c.relnamespace = 'apicount'::regnamespace
		UNION ALL
		SELECT 'R ' || c.relname || ' ' || c.relkind::text || ' ' || coalesce(c.relacl::text, '') || ' '
		       || coalesce(c.reloptions::text, '') || ' '
		       || CASE WHEN c.relkind = 'v' THEN pg_get_viewdef(c.oid) ELSE '' END
		FROM pg_class c WHERE c.relnamespace = 'apicount'::regnamespace AND c.relkind <> 'S'
		UNION ALL
		SELECT 'K ' || conrelid::regclass || ' ' || conname || ' ' || pg_get_constraintdef(oid)
		FROM pg_constraint WHERE connamespace = 'apicount'::regnamespace
		UNION ALL
		SELECT 'I ' || indexrelid::regclass || ' ' || pg_get_indexdef(indexrelid) FROM pg_index i
		JOIN pg_class c ON c.oid = i.indrelid WHERE c.relnamespace = 'apicount'::regnamespace
		UNION ALL
		SELECT 'T ' || tgname || ' ' || pg_get_triggerdef(t.oid) FROM pg_trigger t
		JOIN pg_class c ON c.oid = t.tgrelid WHERE c.relnamespace = 'apicount'::regnamespace
		  AND NOT t.tgisinternal
		UNION ALL
		SELECT 'D ' || pg_describe_object(d.classid, d.objid, d.objsubid) FROM pg_depend d
		JOIN pg_extension e ON d.refclassid = 'pg_extension'::regclass AND d.refobjid = e.oid
		WHERE e.extname = 'apicount' AND d.deptype = 'e'
	) s};

# a schema-only dump that shows the extension's member objects, normalized and sorted
sub schema_dump
{
	my ($node, $db) = @_;
	# pg_dump 18 can dump planner statistics, which differ with the data: leave them out
	my ($help) = run_command([ 'pg_dump', '--help' ]);
	my @nostats = $help =~ /--no-statistics/ ? ('--no-statistics') : ();
	my ($out, $err) = run_command([ 'pg_dump', '--schema-only', '--binary-upgrade', '--no-comments',
		@nostats, '-d', $node->connstr($db) ]);
	die "pg_dump failed: $err" if $err ne '';
	my @lines;
	my $skip = 0;
	for my $l (split /\n/, $out)
	{
		# binary-upgrade catalog updates (frozen xids, dropped columns) run to a ';'
		$skip = 1 if $l =~ /^UPDATE pg_catalog\.pg_(class|attribute)$/;
		if ($skip)
		{
			$skip = 0 if $l =~ /;$/;
			next;
		}
		next if $l =~ /^\s*(--.*)?$/;
		next if $l =~ /^SET |^SELECT pg_catalog\.set_config|^\\(un)?restrict /;
		next if $l =~ /binary_upgrade_set_next_|binary_upgrade_set_missing_value|pg\.dropped\./;
		next if $l =~ /pg_catalog\.setval\(/;
		$l =~ s/\d{4,}/<oid>/g if $l =~ /binary_upgrade_create_empty_extension/;
		$l =~ s/,$//;
		push @lines, $l;
	}
	return sort @lines;
}

# lines of one sorted list missing from the other, for a readable failure
sub list_diff
{
	my ($a, $b) = @_;
	my %n;
	$n{$_}++ for @$a;
	$n{$_}-- for @$b;
	return join("\n", map { ($n{$_} > 0 ? '< ' : '> ') . $_ } sort grep { $n{$_} } keys %n);
}

# ---------------------------------------------------------------------------
# the data, and what the queries must return, computed from how it is generated
# ---------------------------------------------------------------------------
# /up/a GET, g = 1..300, at H + (g % 4) minutes + (g % 50) seconds, from 10.0.0.(g % 5) and
# user u(g % 3), status 200 for even g, else 404 when g % 3 = 0, else 500, latency g ms
sub a_status { my $g = shift; return $g % 2 == 0 ? 200 : $g % 3 == 0 ? 404 : 500; }
my (%a_ip, %a_ip_err, %a_combo, %a_minute, %a_hour_err);
my $a_err = 0;
for my $g (1 .. 300)
{
	my $err = a_status($g) >= 400 ? 1 : 0;
	$a_err += $err;
	$a_ip{ '10.0.0.' . ($g % 5) }++;
	$a_ip_err{ '10.0.0.' . ($g % 5) } += $err;
	$a_combo{ '10.0.0.' . ($g % 5) . '|u' . ($g % 3) }->[0]++;
	$a_combo{ '10.0.0.' . ($g % 5) . '|u' . ($g % 3) }->[1] += $err;
	$a_minute{ $g % 4 }->[0]++;
	$a_minute{ $g % 4 }->[1] += $err;
}
# /up/b POST, 50 hits at H + 30 minutes, status 404, callers not tracked
# /up/h GET, 120 hits at H + 1 hour + (g % 60) minutes, from 10.1.0.(g % 2), status 200
# /up/r GET, now: 30 from 10.7.0.1 and 5 from 10.7.0.2; rule r1 (per ip, >= 20) fires once
# /up/c GET, now: 40 hits recorded just before the update, 60 after it

for my $from (@older)
{
	(my $tag = $from) =~ tr/./_/;
	my $node = PostgreSQL::Test::Cluster->new("up_$tag");
	$node->init;
	$node->append_conf('postgresql.conf',
		"shared_preload_libraries = 'apicount'\n"
		  . "apicount.database = 'up'\n"
		  . "apicount.flush_interval = '1s'\n"
		  . "timezone = 'UTC'\n");
	$node->start;
	$node->safe_psql('postgres', 'CREATE DATABASE up');
	my $q = sub { return $node->safe_psql('up', $_[0]); };
	my $has = sub {
		my $f = $_[0] =~ /\(/ ? 'to_regprocedure' : 'to_regclass';
		return $q->("SELECT $f('$_[0]') IS NOT NULL") eq 't';
	};

	$q->("CREATE EXTENSION apicount VERSION '$from'");
	is($q->("SELECT extversion FROM pg_extension WHERE extname = 'apicount'"), $from, "[$from] installed");
	is($q->("SELECT string_agg(version, ',' ORDER BY version COLLATE \"C\") FROM pg_available_extension_versions WHERE name = 'apicount'"),
		join(',', sort keys %versions), "[$from] the server has the scripts of every version in sql/ (Makefile DATA)");
	is($q->("SELECT count(*) FROM pg_extension_update_paths('apicount') WHERE source = '$from' AND target = '$newest' AND path IS NOT NULL"),
		'1', "[$from] there is an update path to $newest");

	my $H = $q->("SELECT date_trunc('hour', now()) - interval '3 hours'");
	my $H3 = $q->("SELECT '$H'::timestamptz + interval '3 hours'");
	$q->(q{INSERT INTO apicount.requests (ts, method, path, client_ip, user_id, status, latency_ms)
		SELECT '} . $H . q{'::timestamptz + (g % 4) * interval '1 minute' + (g % 50) * interval '1 second',
		       'GET', '/up/a', ('10.0.0.' || (g % 5))::inet, 'u' || (g % 3),
		       CASE WHEN g % 2 = 0 THEN 200 WHEN g % 3 = 0 THEN 404 ELSE 500 END, g
		FROM generate_series(1, 300) g});
	$q->("SET apicount.track_callers = off; INSERT INTO apicount.requests (ts, method, path, status) "
		  . "SELECT '$H'::timestamptz + interval '30 minutes', 'POST', '/up/b', 404 FROM generate_series(1, 50)");
	$q->("INSERT INTO apicount.requests (ts, path, client_ip, status) SELECT '$H'::timestamptz + interval '1 hour' "
		  . "+ (g % 60) * interval '1 minute', '/up/h', ('10.1.0.' || (g % 2))::inet, 200 FROM generate_series(1, 120) g");
	$q->("INSERT INTO apicount.rules (name, path_pattern, per, threshold, \"window\", cooldown) "
		  . "VALUES ('r1', '/up/r%', 'ip', 20, '1 minute', '1 hour')");
	$q->("INSERT INTO apicount.rules (name, path_pattern, method, per, threshold, min_error_ratio, enabled) "
		  . "VALUES ('r2', '/up/%', 'post', 'user', 5, 0.5, false)");
	$q->("INSERT INTO apicount.requests (path, client_ip, status) SELECT '/up/r', "
		  . "CASE WHEN g <= 30 THEN '10.7.0.1' ELSE '10.7.0.2' END::inet, 200 FROM generate_series(1, 35) g");
	$q->("INSERT INTO apicount.audited_apis VALUES ('/up/a', 'audited before the update')")
	  if $has->('apicount.audited_apis');
	if ($has->('apicount.ship_position(text,text,bigint,bigint,bigint,text,bigint)'))
	{
		$q->("BEGIN; INSERT INTO apicount.requests (ts, path, status) SELECT '$H'::timestamptz + interval '2 hours', "
			  . "'/up/s', 200 FROM generate_series(1, 7); "
			  . "SELECT apicount.ship_position('src1', 'inode:1', 4096, 8, 1, NULL, NULL); COMMIT");
	}
	$q->('SELECT apicount.flush()');
	ok($node->poll_query_until('up', 'SELECT count(*) = 1 FROM apicount.alerts'), "[$from] rule r1 fired");
	is($q->("SELECT rule || '|' || host(client_ip) || '|' || calls FROM apicount.alerts"), 'r1|10.7.0.1|30',
		"[$from] the alert is the caller over the threshold");

	# hits that may wait unflushed in shared memory during the update
	$q->("INSERT INTO apicount.requests (path, client_ip, status) SELECT '/up/c', '10.9.0.1', 200 FROM generate_series(1, 40)");

	# what is compared, with the columns of the old version: rows of the tables (those of
	# /up/c excepted, which the worker may flush at any moment) and query outputs
	my %checks;
	for my $t (qw(api_minute api_hour caller_minute rules alerts audited_apis _sources))
	{
		next unless $has->("apicount.$t");
		my $cols = $q->("SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) FROM pg_attribute "
			  . "WHERE attrelid = 'apicount.$t'::regclass AND attnum > 0 AND NOT attisdropped");
		my $where = $t =~ /minute|hour/ ? "WHERE path <> '/up/c'" : '';
		$checks{"table $t"} = "SELECT $cols FROM apicount.$t $where";
	}
	my $A = "'$H'::timestamptz";
	my $B = "'$H3'::timestamptz";
	my $real = $has->('apicount._is_other_callers(inet,text)') ? ''
	  : "WHERE NOT (client_ip IS NULL AND user_id IS NOT DISTINCT FROM '(other callers)')";
	%checks = (%checks,
		'top_apis range' => "SELECT method, path, calls, errors, error_ratio, avg_latency_ms FROM apicount.top_apis(20, $A, $B)",
		'top_apis 1 day' => "SELECT method, path, calls, errors, error_ratio, avg_latency_ms FROM apicount.top_apis(20, '1 day')",
		# (0.1 listed the "(other callers)" row of the untracked /up/b among the callers; from
		# 0.2 on, top_callers leaves it out by design: callers() shows it.  So from a version
		# without _is_other_callers, that row is left out of the comparison)
		'top_callers ip' => "SELECT client_ip, user_id, calls, errors FROM apicount.top_callers(50, '1 day', '/up/a', 'ip')",
		'top_callers user' => "SELECT client_ip, user_id, calls, errors FROM apicount.top_callers(50, '1 day', NULL, 'user') $real",
		'top_callers ip_user' => "SELECT client_ip, user_id, calls, errors FROM apicount.top_callers(50, '1 day', NULL, 'ip_user') $real",
		'series minutes' => "SELECT \"time\", method, path, calls, errors, avg_latency_ms, p95_latency_ms "
		  . "FROM apicount.series('/up/a', $A, $A + interval '10 minutes', '1 minute')",
		'series hours' => "SELECT \"time\", method, path, calls, errors, avg_latency_ms, p95_latency_ms "
		  . "FROM apicount.series(NULL, $A, $B, '1 hour')",
		'latency_percentiles' => "SELECT method, path, percentile, latency_ms "
		  . "FROM apicount.latency_percentiles('/up/a', $A, $B, '{0.5,0.95,0.99}')",
		'callers' => "SELECT client_ip, user_id, first_seen, last_seen, calls, errors FROM apicount.callers('/up/a', $A, $B)",
		'hot_callers' => "SELECT method, path, client_ip, user_id, calls, errors FROM apicount.hot_callers(10, '1 day', NULL, 'ip')",
		'minutes' => "SELECT bucket, method, path, calls, ok, client_errors, server_errors, latency_count, "
		  . "latency_sum_ms, latency_max_ms, latency_hist FROM apicount.minutes($A, $B)",
		'sources' => $has->('apicount.sources') ? 'SELECT name, file_id, file_offset, lines, rejected FROM apicount.sources' : undef);
	delete $checks{$_} for grep { !defined $checks{$_} } keys %checks;
	my $capture = sub {
		my %r;
		$r{$_} = $q->("SELECT count(*) || E' rows\n' || coalesce(string_agg(x::text, E'\n' ORDER BY x::text), '') FROM ($checks{$_}) x")
		  for keys %checks;
		return \%r;
	};
	my $before = $capture->();
	my $had_folded_before = $q->("SELECT count(*) FROM pg_attribute WHERE attrelid = 'apicount.caller_minute'::regclass "
		  . "AND attname = 'folded_before'") eq '1';

	$q->('ALTER EXTENSION apicount UPDATE');
	is($q->("SELECT extversion FROM pg_extension WHERE extname = 'apicount'"), $newest, "[$from] updated to $newest");

	# (a) the data and the query results are unchanged
	my $after = $capture->();
	for my $k (sort keys %checks)
	{
		like($before->{$k}, qr/^[1-9]\d* rows/, "[$from] $k: not empty before the update");
		is($after->{$k}, $before->{$k}, "[$from] $k: unchanged by the update");
	}

	# ... and they are the values the hits were generated to give
	is($q->("SELECT string_agg(path || '|' || calls || '|' || errors, ' ' ORDER BY path) FROM apicount.top_apis(20, $A, $B) "
			  . "WHERE path <> '/up/s'"),
		"/up/a|300|$a_err /up/b|50|50 /up/h|120|0", "[$from] top_apis over the past hours");
	is($q->("SELECT string_agg(to_char(bucket, 'HH24') || '|' || c, ' ' ORDER BY bucket) FROM (SELECT bucket, sum(calls) c "
			  . "FROM apicount.api_hour WHERE path IN ('/up/a', '/up/b', '/up/h') GROUP BY bucket) h"),
		$q->("SELECT to_char($A, 'HH24') || '|350 ' || to_char($A + interval '1 hour', 'HH24') || '|120'"),
		"[$from] api_hour: 350 hits in the first hour, 120 in the next");
	is($q->("SELECT string_agg(host(client_ip) || '|' || calls || '|' || errors, ' ' ORDER BY client_ip) "
			  . "FROM apicount.top_callers(50, '1 day', '/up/a', 'ip')"),
		join(' ', map { "$_|$a_ip{$_}|$a_ip_err{$_}" } sort keys %a_ip), "[$from] top_callers per IP of /up/a");
	is($q->("SELECT string_agg(host(client_ip) || '|' || user_id || '|' || calls || '|' || errors, ' ' "
			  . "ORDER BY client_ip, user_id) FROM apicount.callers('/up/a', $A, $B)"),
		join(' ', map { "$_|$a_combo{$_}[0]|$a_combo{$_}[1]" } sort keys %a_combo), "[$from] callers of /up/a");
	is($q->("SELECT string_agg(calls || '|' || errors, ' ' ORDER BY \"time\") "
			  . "FROM apicount.series('/up/a', $A, $A + interval '4 minutes', '1 minute')"),
		join(' ', map { "$a_minute{$_}[0]|$a_minute{$_}[1]" } 0 .. 3), "[$from] series of /up/a per minute");
	is($q->("SELECT string_agg(host(client_ip) || '|' || calls, ' ' ORDER BY client_ip) "
			  . "FROM apicount.hot_callers(10, '1 day', '/up/r', 'ip')"),
		'10.7.0.1|30', "[$from] hot_callers of /up/r");
	is($q->("SELECT string_agg(name || '|' || per || '|' || threshold || '|' || enabled, ' ' ORDER BY name) FROM apicount.rules"),
		'r1|ip|20|true r2|user|5|false', "[$from] the rules");
	is($q->('SELECT count(*) FROM apicount.caller_minute WHERE folded_before'), '0',
		"[$from] the added caller_minute.folded_before is false on the old rows")
	  if !$had_folded_before;

	# the updated extension counts, flushes, and its caller rows add up
	$q->("INSERT INTO apicount.requests (path, client_ip, status) SELECT '/up/c', '10.9.0.2', 200 FROM generate_series(1, 60)");
	is($q->("SELECT sum(calls) FROM apicount.top_apis(10, '1 hour') WHERE path = '/up/c'"), '100',
		"[$from] the 40 hits recorded before the update and the 60 after it are all counted");
	$q->('SELECT apicount.flush()');
	is($q->("SELECT sum(calls) FROM apicount.api_minute WHERE path = '/up/c'"), '100', "[$from] and flushed");
	if ($has->('apicount.api_day'))
	{
		# the day tier (0.4): filled from api_hour by the update, then written by the flushes
		is($q->(q{SELECT count(*) FROM (SELECT date_trunc('day', bucket, 'UTC'), method, path, sum(calls)
		                                FROM apicount.api_hour GROUP BY 1, 2, 3
		                                EXCEPT ALL SELECT bucket, method, path, calls FROM apicount.api_day) d}),
			'0', "[$from] api_day holds api_hour's sums per day");
		is($q->(q{SELECT (SELECT sum(calls) FROM apicount.api_minute) || ' ' || (SELECT sum(calls) FROM apicount.api_hour)
		        || ' ' || (SELECT sum(calls) FROM apicount.api_day)}),
			$q->("SELECT (SELECT sum(calls) FROM apicount.api_minute) || repeat(' ' || (SELECT sum(calls) FROM apicount.api_minute), 2)"),
			"[$from] api_minute, api_hour and api_day hold the same calls");
	}
	if ($has->('apicount.caller_hour'))
	{
		# the caller tiers (0.6): filled from caller_minute by the update, then written by the flushes
		foreach my $t ([ 'caller_minute', 'caller_hour', 'hour' ], [ 'caller_hour', 'caller_day', 'day' ])
		{
			my ($src, $dst, $unit) = @$t;
			is($q->(qq{SELECT (SELECT count(*) FROM apicount.$dst) || ' '
			        || (SELECT count(*) FROM (
			             (SELECT date_trunc('$unit', bucket, 'UTC'), method, path, client_ip, user_id,
			                     sum(calls), sum(ok), sum(client_errors), sum(server_errors), bool_or(folded_before)
			              FROM apicount.$src GROUP BY 1, 2, 3, 4, 5)
			             EXCEPT ALL
			             SELECT bucket, method, path, client_ip, user_id, calls, ok, client_errors,
			                    server_errors, folded_before FROM apicount.$dst) d)}),
				$q->("SELECT count(DISTINCT (date_trunc('$unit', bucket, 'UTC'), method, path, client_ip, user_id)) || ' 0' FROM apicount.$src"),
				"[$from] $dst holds $src\'s sums per $unit");
		}
	}
	is($q->(q{SELECT count(*) FROM apicount.api_minute a WHERE a.path = '/up/c'
	        AND a.calls <> (SELECT coalesce(sum(c.calls), 0) FROM apicount.caller_minute c
	                        WHERE c.bucket = a.bucket AND c.method = a.method AND c.path = a.path)}),
		'0', "[$from] caller rows add up to api_minute");
	is($q->("SELECT host(client_ip) || '|' || calls || '|' || calls_error FROM apicount.hot_callers(50, '1 hour', '/up/c')"),
		'10.9.0.2|60|0', "[$from] hot_callers has calls_error");
	ok($q->('SELECT api_capacity > 0 AND caller_entries >= 0 AND heavy_counters > 0 FROM apicount.stats') eq 't',
		"[$from] stats has the tier columns");
	$q->("INSERT INTO apicount.rules (name, path_pattern, per, threshold) VALUES ('n', '/up/%', 'net', 10)");
	is($q->("SELECT count(*) FROM apicount.rules WHERE per = 'net'"), '1', "[$from] rules accept per = 'net'");
	$q->("DELETE FROM apicount.rules WHERE name = 'n'");

	# (b) the objects are those of a fresh installation of the newest version (in the same
	# database: apicount can only be created in apicount.database)
	my $up_cat = $q->($schema_sql);
	my @up_dump = schema_dump($node, 'up');
	$q->('DROP EXTENSION apicount');
	$q->('CREATE EXTENSION apicount');
	my $fresh_cat = $q->($schema_sql);
	my @fresh_dump = schema_dump($node, 'up');
	cmp_ok(length($up_cat), '>', 10000, "[$from] the catalog description of the schema is not empty");
	is(list_diff([ split /\n/, $up_cat ], [ split /\n/, $fresh_cat ]), '',
		"[$from] the updated schema is the one CREATE EXTENSION makes (catalogs compared)");
	cmp_ok(scalar(grep { /^ALTER EXTENSION apicount ADD / } @up_dump), '>', 50,
		"[$from] the dump shows the extension's member objects");
	is(list_diff(\@up_dump, \@fresh_dump), '',
		"[$from] the updated schema is the one CREATE EXTENSION makes (pg_dump --schema-only compared)");
	$node->stop;
}

done_testing();
