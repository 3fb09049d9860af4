# 027_upgrade.pl — ALTER EXTENSION apicount UPDATE from 0.1 to 0.2 with data in the rollups,
# then on to 0.3 and 0.4.
#
# Installs version 0.1, records hits (tracked and untracked, two paths), flushes, then updates
# to 0.2 while more hits wait unflushed in shared memory.  Proves:
#  - every rollup row of 0.1 is still there, unchanged (compared with a copy taken before);
#  - the hits recorded before the update and those after it all reach api_minute, and per
#    minute and API the caller rows plus "(other callers)" add up to api_minute for the minutes
#    written after the update;
#  - the new objects work: stats has the tier columns, hot_callers returns calls_error,
#    audited_apis exists, the 'net' rules are accepted;
#  - the updated schema is the one a fresh CREATE EXTENSION makes (functions, columns, views,
#    constraints, indexes, triggers and privileges, read from the catalogs and compared).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('upgrade');
$node->init;
$node->append_conf('postgresql.conf',
	"shared_preload_libraries = 'apicount'\n"
	  . "apicount.database = 'up'\n"
	  . "apicount.flush_interval = '1s'\n"
	  . "timezone = 'UTC'\n");
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE up');
sub q1 { return $node->safe_psql('up', $_[0]); }

q1("CREATE EXTENSION apicount VERSION '0.1'");
is(q1("SELECT extversion FROM pg_extension WHERE extname = 'apicount'"), '0.1', 'version 0.1 installed');

q1("INSERT INTO apicount.requests (path, client_ip, user_id, status, latency_ms) "
	  . "SELECT '/up/a', ('10.0.0.' || (g % 5))::inet, 'u' || (g % 3), 200 + (g % 2) * 300, g FROM generate_series(1, 300) g");
q1("SET apicount.track_callers = off; INSERT INTO apicount.requests (path) SELECT '/up/b' FROM generate_series(1, 50)");
q1('SELECT apicount.flush()');
q1('CREATE TABLE before_api AS SELECT * FROM apicount.api_minute');
q1('CREATE TABLE before_hour AS SELECT * FROM apicount.api_hour');
q1('CREATE TABLE before_caller AS SELECT * FROM apicount.caller_minute');
is(q1('SELECT sum(calls) FROM before_api'), '350', '0.1 flushed 350 calls');

# hits waiting in shared memory across the update
q1("INSERT INTO apicount.requests (path, client_ip, status) SELECT '/up/c', '10.9.0.1', 200 FROM generate_series(1, 40)");
q1("ALTER EXTENSION apicount UPDATE TO '0.2'");
is(q1("SELECT extversion FROM pg_extension WHERE extname = 'apicount'"), '0.2', 'updated to 0.2');

my $c01 = 'bucket, method, path, client_ip, user_id, calls, ok, client_errors, server_errors';
for my $t ([ 'api_minute', 'before_api', '*' ], [ 'api_hour', 'before_hour', '*' ],
	[ 'caller_minute', 'before_caller', $c01 ])
{
	is(q1("SELECT count(*) FROM (SELECT * FROM $t->[1] EXCEPT ALL SELECT $t->[2] FROM apicount.$t->[0]) d"), '0',
		"every $t->[0] row of 0.1 is still there, unchanged");
}
is(q1('SELECT count(*) FROM apicount.caller_minute WHERE folded_before'), '0',
	'the new caller_minute.folded_before column is false on the old rows');
q1("INSERT INTO apicount.requests (path, client_ip, status) SELECT '/up/c', '10.9.0.2', 200 FROM generate_series(1, 60)");
is(q1("SELECT sum(calls) FROM apicount.top_apis(10, '1 hour') WHERE path = '/up/c'"), '100',
	'the 40 hits recorded before the update and the 60 after it are all counted');
q1('SELECT apicount.flush()');
is(q1("SELECT sum(calls) FROM apicount.api_minute WHERE path = '/up/c'"), '100', 'and flushed');
is(q1(q{SELECT count(*) FROM apicount.api_minute a WHERE a.path = '/up/c'
        AND a.calls <> (SELECT coalesce(sum(c.calls), 0) FROM apicount.caller_minute c
                        WHERE c.bucket = a.bucket AND c.method = a.method AND c.path = a.path)}),
	'0', 'caller rows add up to api_minute for the minutes written by 0.2');
is(q1("SELECT host(client_ip) || '|' || calls || '|' || calls_error FROM apicount.hot_callers(50, '1 hour', '/up/c')"),
	'10.9.0.2|60|0', 'hot_callers has calls_error');
ok(q1('SELECT api_capacity > 0 AND caller_entries >= 0 AND heavy_counters > 0 FROM apicount.stats') eq 't',
	'stats has the tier columns');
q1("INSERT INTO apicount.audited_apis VALUES ('/up/%', 'x')");
q1("INSERT INTO apicount.rules (name, path_pattern, per, threshold) VALUES ('n', '/up/%', 'net', 10)");
is(q1("SELECT count(*) FROM apicount.rules WHERE per = 'net'"), '1', "rules accept per = 'net'");

# the same schema as a fresh installation: functions, columns, views, constraints, indexes,
# privileges of the extension's schema, read from the catalogs
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
	) s};
q1('DROP TABLE before_api, before_hour, before_caller');
# on to 0.3 (shipped log positions)
q1("ALTER EXTENSION apicount UPDATE TO '0.3'");
is(q1("SELECT extversion FROM pg_extension WHERE extname = 'apicount'"), '0.3', 'updated on to 0.3');
# and to the current version (0.4: the day tier, filters, tiered retention), with hits
# flushed into api_hour by 0.3 and more waiting in shared memory across the update
q1("INSERT INTO apicount.requests (path, status) SELECT '/up/d', 200 FROM generate_series(1, 30)");
q1('SELECT apicount.flush()');
q1("INSERT INTO apicount.requests (path, status) SELECT '/up/d', 200 FROM generate_series(1, 20)");
q1('ALTER EXTENSION apicount UPDATE');
is(q1("SELECT extversion FROM pg_extension WHERE extname = 'apicount'"), '0.4', 'updated on to 0.4');
is(q1(q{SELECT count(*) FROM (SELECT date_trunc('day', bucket, 'UTC'), method, path, sum(calls)
                              FROM apicount.api_hour GROUP BY 1, 2, 3
                              EXCEPT ALL SELECT bucket, method, path, calls FROM apicount.api_day) d}),
	'0', 'the update filled api_day from api_hour');
is(q1("SELECT sum(calls) FROM apicount.top_apis(10, now() - interval '2 days', now() + interval '1 minute') WHERE path = '/up/d'"),
	'50', 'the 30 flushed and 20 unflushed hits are counted by the 0.4 top_apis');
q1('SELECT apicount.flush()');
is(q1(q{SELECT (SELECT sum(calls) FROM apicount.api_minute) || ' ' || (SELECT sum(calls) FROM apicount.api_hour)
        || ' ' || (SELECT sum(calls) FROM apicount.api_day)}),
	'500 500 500', 'after a flush by 0.4 the three tiers hold the same 500 calls');
my $up = q1($schema_sql);
q1('DROP EXTENSION apicount');
q1('CREATE EXTENSION apicount');
my $fresh = q1($schema_sql);
cmp_ok(length($up), '>', 10000, 'the catalog description of the schema is not empty');
is($up, $fresh, 'the updated schema is the one CREATE EXTENSION makes (catalogs compared)');

$node->stop;
done_testing();
