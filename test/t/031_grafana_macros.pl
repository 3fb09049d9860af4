# 031_grafana_macros.pl — unit checks of test/perl/GrafanaMacros.pm, the Grafana query
# expander that 030_grafana_dashboard.pl relies on.  No server.
#
# Expected strings are Grafana's own test expectations, copied from grafana/grafana:
#   pkg/tsdb/grafana-postgresql-datasource/macros_test.go (TestMacroEngine,
#     TestInterpolateSQLCommenter, TestStripSQLComments),
#   packages/grafana-sql/src/datasource/variable-interpolation.test.ts (both the version whose
#     multi-value single strings are quoted and the newer one where they are only escaped),
# plus the documented variable syntaxes ($var, ${var}, [[var]]).  Epoch seconds of the test
# ranges are computed with Time::Local, not with the module.
use strict;
use warnings;
use Test::More;
use Time::Local qw(timegm_posix);
use GrafanaMacros qw(expand expand_frontend expand_backend strip_sql_comments
  rfc3339nano go_float_v format_interval);

sub ns_of { my @t = @_; return timegm_posix($t[5], $t[4], $t[3], $t[2], $t[1] - 1, $t[0] - 1900) * 1_000_000_000; }

# ---- TestMacroEngine: 2018-04-12 18:00 .. 18:05 UTC
{
	my $from = ns_of(2018, 4, 12, 18, 0, 0);
	my $to = $from + 5 * 60 * 1_000_000_000;
	my %r = (from_ns => $from, to_ns => $to);
	my $e = sub { expand_backend($_[0], %r, %{ $_[1] // {} }) };
	is($e->('select $__time(time_column)'), 'select time_column AS "time"', '__time');
	is($e->('select min($__time(time_column))'), 'select min(time_column AS "time")',
		'__time wrapped in aggregation');
	is($e->('WHERE $__timeFilter(time_column)'),
		"WHERE time_column BETWEEN '2018-04-12T18:00:00Z' AND '2018-04-12T18:05:00Z'", '__timeFilter');
	is($e->('select $__timeFrom()'), "select '2018-04-12T18:00:00Z'", '__timeFrom');
	is($e->('select $__timeTo()'), "select '2018-04-12T18:05:00Z'", '__timeTo');
	is($e->("SELECT \$__timeGroup(time_column,'5m'), value"),
		'SELECT floor(extract(epoch from time_column)/300)*300 AS "time", value',
		'__timeGroup followed by a comma: pre-5.3 alias');
	is($e->("SELECT \$__timeGroup(time_column,'5m') as time, value"),
		'SELECT floor(extract(epoch from time_column)/300)*300 as time, value',
		'__timeGroup not followed by a comma');
	is($e->("SELECT \$__timeGroup(time_column,'5m')"),
		'SELECT floor(extract(epoch from time_column)/300)*300', '__timeGroup');
	is($e->("SELECT \$__timeGroupAlias(time_column,'5m')"),
		'SELECT floor(extract(epoch from time_column)/300)*300 AS "time"', '__timeGroupAlias');
	is($e->("\$__timeGroup(time_column , '5m')"), 'floor(extract(epoch from time_column)/300)*300',
		'__timeGroup with spaces between args');
	is($e->("\$__timeGroupAlias(time_column , '5m')"),
		'floor(extract(epoch from time_column)/300)*300 AS "time"', '__timeGroupAlias with spaces');
	my $ts = { timescaledb => 1 };
	is($e->("GROUP BY \$__timeGroup(time_column,'5m')", $ts), "GROUP BY time_bucket('300.000s',time_column)",
		'__timeGroup, TimescaleDB');
	is($e->("GROUP BY \$__timeGroup(time_column , '5m')", $ts), "GROUP BY time_bucket('300.000s',time_column)",
		'__timeGroup with spaces, TimescaleDB');
	is($e->("GROUP BY \$__timeGroup(time_column , '12d')", $ts),
		"GROUP BY time_bucket('1036800.000s',time_column)", '__timeGroup 12d, TimescaleDB');
	is($e->("GROUP BY \$__timeGroup(time_column , '20ms')", $ts), "GROUP BY time_bucket('0.020s',time_column)",
		'__timeGroup 20ms, TimescaleDB');
	my ($fs, $ts2) = ($from / 1e9, $to / 1e9);
	is($e->('select $__unixEpochFilter(time)'), "select time >= $fs AND time <= $ts2", '__unixEpochFilter');
	is($e->('select $__unixEpochNanoFilter(time)'), "select time >= $from AND time <= $to",
		'__unixEpochNanoFilter');
	is($e->('select $__unixEpochNanoFrom()'), "select $from", '__unixEpochNanoFrom');
	is($e->('select $__unixEpochNanoTo()'), "select $to", '__unixEpochNanoTo');
	is($e->("SELECT \$__unixEpochGroup(time_column+time_adjustment,'5m')"),
		'SELECT floor((time_column+time_adjustment)/300)*300', '__unixEpochGroup');
	is($e->("SELECT \$__unixEpochGroupAlias(time_column+time_adjustment,'5m')"),
		'SELECT floor((time_column+time_adjustment)/300)*300 AS "time"', '__unixEpochGroupAlias');
	# not in macros_test.go, documented: $__timeEpoch, $__unixEpochFrom/To, $__interval(_ms)
	is($e->('SELECT $__timeEpoch(c)'), 'SELECT extract(epoch from c) as "time"', '__timeEpoch');
	is($e->('SELECT $__unixEpochFrom(), $__unixEpochTo()'), "SELECT $fs, $ts2", '__unixEpochFrom/To');
	is($e->('SELECT $__interval_ms, $__interval', { interval_ms => 300_000 }), 'SELECT 300000, 5m',
		'__interval_ms and __interval (ms replaced first)');
	is($e->("SELECT \$__timeGroupAlias(c, \$__interval)", { interval_ms => 60_000 }),
		'SELECT floor(extract(epoch from c)/60)*60 AS "time"', '__interval inside __timeGroupAlias');
	is($e->("SELECT \$__timeGroup(c,'12d')"), 'SELECT floor(extract(epoch from c)/1.0368e+06)*1.0368e+06',
		'__timeGroup 12d: Go %v prints large seconds in %e form');
	ok(!defined eval { $e->('SELECT $__nosuch(c)') } && $@ =~ /unknown macro "__nosuch"/,
		'an unknown macro fails the query');
	ok(!defined eval { $e->("SELECT \$__timeGroup(c)") } && $@ =~ /needs time column and interval/,
		'__timeGroup without interval fails');
}

# ---- the other TestMacroEngine ranges (before 1970, fractional seconds)
for my $case ([ [ 1960, 2, 1, 7, 0, 0 ], [ 1965, 2, 3, 8, 0, 0 ] ],
	[ [ 1960, 2, 1, 7, 0, 0 ], [ 1980, 2, 3, 8, 0, 0 ] ])
{
	my ($f, $t) = (ns_of(@{ $case->[0] }), ns_of(@{ $case->[1] }));
	my $fmt = sub { sprintf('%04d-%02d-%02dT%02d:%02d:%02dZ', @{ $_[0] }) };
	my %r = (from_ns => $f, to_ns => $t);
	is(expand_backend('WHERE $__timeFilter(time_column)', %r),
		"WHERE time_column BETWEEN '" . $fmt->($case->[0]) . "' AND '" . $fmt->($case->[1]) . "'",
		'__timeFilter ' . $fmt->($case->[0]) . ' .. ' . $fmt->($case->[1]));
	is(expand_backend('select $__unixEpochFilter(time)', %r),
		sprintf('select time >= %d AND time <= %d', $f / 1e9, $t / 1e9), '__unixEpochFilter, negative epoch');
	is(expand_backend('select $__unixEpochNanoFilter(time)', %r),
		"select time >= $f AND time <= $t", '__unixEpochNanoFilter, negative epoch');
}
is(rfc3339nano(ns_of(1960, 2, 1, 7, 0, 0) + 500_000_000), '1960-02-01T07:00:00.5Z',
	'RFC3339Nano with half a second before 1970');
is(rfc3339nano(ns_of(1980, 2, 3, 8, 0, 0) + 500_000_000), '1980-02-03T08:00:00.5Z',
	'RFC3339Nano with half a second');
is(rfc3339nano(ns_of(2026, 11, 24, 10, 1, 2) + 123_000_000), '2026-11-24T10:01:02.123Z',
	'RFC3339Nano drops trailing zeros of milliseconds');

# ---- TestInterpolateSQLCommenter (query interval 10 minutes)
{
	my %r = (from_ns => ns_of(2018, 4, 12, 18, 0, 0), to_ns => ns_of(2018, 4, 12, 18, 5, 0),
		interval_ms => 600_000);
	is(expand_backend("SELECT \$__interval /*app='grafana',source='bi'*/", %r),
		"SELECT 10m /*app='grafana',source='bi'*/", 'keeps an inert SQLCommenter tag');
	is(expand_backend("SELECT 1 /*i='\$__interval'*/", %r), 'SELECT 1 ', 'strips a tag with a macro');
	is(expand_backend("SELECT 1 /*k='\$__timeFilter(t'*/ WHERE (x = 1)", %r), 'SELECT 1  WHERE (x = 1)',
		'strips a tag whose macro would complete across the comment boundary');
}

# ---- TestStripSQLComments
my @strip = (
	[ 'SELECT 1 -- a comment', 'SELECT 1 ' ],
	[ 'SELECT /* a comment */ 1', 'SELECT  1' ],
	[ "SELECT /*\n  multiline\n  comment\n*/ 1", 'SELECT  1' ],
	[ "SELECT '-- not a comment' AS label", "SELECT '-- not a comment' AS label" ],
	[ "SELECT '/* not a comment */' AS label", "SELECT '/* not a comment */' AS label" ],
	[ 'SELECT "col -- name" FROM t', 'SELECT "col -- name" FROM t' ],
	[ 'SELECT "col /* name */" FROM t', 'SELECT "col /* name */" FROM t' ],
	[ "SELECT 'it''s fine -- not a comment' AS v", "SELECT 'it''s fine -- not a comment' AS v" ],
	[ 'SELECT "col ""-- name""" FROM t', 'SELECT "col ""-- name""" FROM t' ],
	[ "SELECT '-- in string' AS a -- real comment", "SELECT '-- in string' AS a " ],
	[ "SELECT '/* in string */' AS a /* real comment */", "SELECT '/* in string */' AS a " ],
	[ 'SELECT col FROM t WHERE col > 1', 'SELECT col FROM t WHERE col > 1' ],
	[ "SELECT 1 -- comment\nFROM t", "SELECT 1 \nFROM t" ],
	[ 'SELECT $$ -- not a comment $$', 'SELECT $$ -- not a comment $$' ],
	[ 'SELECT $$ /* not a comment */ $$', 'SELECT $$ /* not a comment */ $$' ],
	[ 'SELECT $body$ -- not a comment $body$', 'SELECT $body$ -- not a comment $body$' ],
	[ 'SELECT $__timeFrom() -- comment', 'SELECT $__timeFrom() ' ],
	[ 'SELECT $1 -- comment', 'SELECT $1 ' ],
	[ "SELECT 1 AS value\n/*application='grafana',source='bi',route='test',feature='repro'*/;",
		"SELECT 1 AS value\n/*application='grafana',source='bi',route='test',feature='repro'*/;" ],
	[ "SELECT 1 /*application='grafana',feature='panel'*/", "SELECT 1 /*application='grafana',feature='panel'*/" ],
	[ "SELECT 1 /*range='\$__timeFilter(t)'*/", 'SELECT 1 ' ]);
is(strip_sql_comments($_->[0]), $_->[1], "stripSQLComments: $_->[0]") for @strip;

# ---- variable-interpolation.test.ts (SqlDatasource.interpolateVariable), through $v
{
	my $one = sub {
		my ($value, $flags, $mode) = @_;
		return expand_frontend('$v', { v => { %$flags, value => $value } }, single_string => $mode);
	};
	for my $flags ({ multi => 1 }, { includeAll => 1 }, { multi => 1, includeAll => 1 })
	{
		my $f = join '+', sort keys %$flags;
		is($one->('value1', $flags, 'quote'), "'value1'", "$f, one string (quoting version)");
		is($one->("O'Brien", $flags, 'quote'), "'O''Brien'", "$f, one string with a quote (quoting version)");
		is($one->('value1', $flags, 'escape'), 'value1', "$f, one string (escaping version)");
		is($one->("O'Brien", $flags, 'escape'), "O''Brien", "$f, one string with a quote (escaping version)");
		is($one->([ 'value1', 'value2', 'value3' ], $flags, 'quote'), "'value1','value2','value3'",
			"$f, array: quoted, comma-separated");
		is($one->([ "O'Brien", 'Smith', "D'Angelo" ], $flags, 'escape'), "'O''Brien','Smith','D''Angelo'",
			"$f, array with quotes");
		is($one->(['value1'], $flags, 'quote'), "'value1'", "$f, one-element array");
		is($one->([], $flags, 'quote'), '', "$f, empty array");
		is(expand_frontend('$v', { v => { %$flags, value => 42, number => 1 } }), '42', "$f, number");
	}
	is($one->("O'Brien", {}, 'quote'), "O''Brien", 'single-value variable: only escaped');
	is($one->('', {}, 'quote'), '', 'single-value variable: empty string');
}

# ---- variable syntaxes, All, unknown names left alone
{
	my %vars = (
		path => { multi => 1, includeAll => 1, value => [ '/a', "/o'b" ] },
		window => { value => '5m' },
		all => { multi => 1, includeAll => 1, value => ['$__all'], options => [ '/x', '/y' ] },
		custom_all => { includeAll => 1, value => '$__all', allValue => '.*' });
	is(expand_frontend('path IN ($path)', \%vars), "path IN ('/a','/o''b')", '$var, multi');
	is(expand_frontend('path IN (${path})', \%vars), "path IN ('/a','/o''b')", '${var}, multi');
	is(expand_frontend('path IN ([[path]])', \%vars), "path IN ('/a','/o''b')", '[[var]], multi');
	is(expand_frontend("'\$window'::interval", \%vars), "'5m'::interval", 'single value inside quotes');
	is(expand_frontend('ARRAY[$all]', \%vars), "ARRAY['/x','/y']", 'All: every option value');
	is(expand_frontend('$custom_all', \%vars), '.*', 'All with a custom allValue: unformatted');
	is(expand_frontend('$__timeFilter(c) $pathx $__interval', \%vars), '$__timeFilter(c) $pathx $__interval',
		'macros and unknown names are left for the backend');
	ok(!defined eval { expand_frontend('${path:csv}', \%vars) } && $@ =~ /not supported/,
		'an explicit format is refused rather than guessed');
}

# ---- helpers
is(format_interval($_->[0]), $_->[1], "FormatInterval($_->[0] ms) = $_->[1]")
  for ([ 60_000, '1m' ], [ 90_000, '1m' ], [ 300_000, '5m' ], [ 3_600_000, '1h' ], [ 86_400_000, '1d' ],
	[ 604_800_000, '7d' ], [ 500, '500ms' ], [ 0, '1ms' ]);
is(go_float_v($_->[0]), $_->[1], "Go %v of $_->[0]")
  for ([ 300, '300' ], [ 0.02, '0.02' ], [ 60, '60' ], [ 86400, '86400' ], [ 604800, '604800' ],
	[ 1036800, '1.0368e+06' ], [ 1e6, '1e+06' ], [ 0.0001, '0.0001' ], [ 0.00001, '1e-05' ]);

# ---- expand(): frontend then backend
is(expand("SELECT \$__timeGroupAlias(b, \$__interval) FROM t WHERE p = ANY(ARRAY[\$path]::text[])"
		  . ' AND $__timeFilter(b)',
		vars => { path => { multi => 1, includeAll => 1, value => ['/a'] } },
		from_ns => ns_of(2018, 4, 12, 18, 0, 0), to_ns => ns_of(2018, 4, 12, 18, 5, 0), interval_ms => 300_000),
	"SELECT floor(extract(epoch from b)/300)*300 AS \"time\" FROM t WHERE p = ANY(ARRAY['/a']::text[])"
	  . " AND b BETWEEN '2018-04-12T18:00:00Z' AND '2018-04-12T18:05:00Z'",
	'expand: variables, interval and macros together');

done_testing();
