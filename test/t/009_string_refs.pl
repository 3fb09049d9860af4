# 009_string_refs.pl — the string table's reference counts when one commit creates many keys.
#
# A commit's merge takes one string reference per new entry and per string (method, path,
# user id); within one merge a string referenced again costs an atomic add on the entry it
# already holds (strtab.c, the batch cache).  A reference too many would keep a string
# forever; one too few would drop a string that live entries still name.
#
# apicount.max_entries = 1000, apicount.flush_interval = 1h (flushes only by flush()).
# Phase 1: one transaction records 3,000 rows over two minutes (10 minutes ago and now),
# with methods, paths and user ids shared by both minutes and others used by one minute
# only (a savepoint released, one rolled back).  Phase 2: one transaction creates new keys
# with two new strings each, more than the string table has room for, so references are
# refused and given back in the middle of the merge.  Phase 3: the same with one free
# string and a path shared by every key.
#
# Proves, with the truth computed from a plain table of the same rows:
#  - after phase 1, apicount.stats.strings is 2 (the permanent overflow strings) plus the
#    distinct strings of the rows;
#  - every live entry holds exactly its rows, under its own method, path and user id;
#  - after flush() frees the old minute's entries, strings is 2 plus the distinct strings of
#    the current minute's rows, and those entries still hold their rows under their names;
#  - after phase 2, strings reached strings_capacity, hits overflowed, the per-minute totals
#    equal the truth, and strings is 2 plus the distinct strings named by live entries;
#  - after another flush, the same holds;
#  - phase 3, with one free string left: 50 keys sharing a new path, each with a new user id,
#    all overflow (each takes the path, is refused the user id, gives the path back), the
#    string count is unchanged, the flush succeeds and api_minute equals the truth.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use lib "$ENV{APICOUNT_ROOT}/test/perl";
use ApicountTest qw(wait_for);

my $node = PostgreSQL::Test::Cluster->new('string_refs');
$node->init;
$node->append_conf('postgresql.conf',
	"shared_preload_libraries = 'apicount'\n"
	  . "apicount.max_entries = 1000\n"
	  . "apicount.flush_interval = '1h'\n"
	  . "log_statement = none\n"
	  . "timezone = 'UTC'\n");
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION apicount');

sub q1 { return $node->safe_psql('postgres', shift) }

is(q1('SELECT strings FROM apicount.stats'),
	'2', 'a fresh server holds the two overflow strings only');

# the truth: the same rows in a plain table; minute 'old' is 10 minutes ago
q1(q{
	CREATE TABLE truth (ts timestamptz, method text, path text, client_ip inet,
	                    user_id text, phase int, i int);
	CREATE FUNCTION distinct_strings(where_clause text) RETURNS bigint
	LANGUAGE plpgsql AS $f$
	DECLARE n bigint;
	BEGIN
		EXECUTE 'SELECT count(DISTINCT s) FROM truth, '
		     || 'unnest(ARRAY[method, path, user_id]) AS s WHERE s IS NOT NULL AND '
		     || where_clause INTO n;
		RETURN n;
	END $f$;
	-- the live entries' own (non-overflow) strings
	CREATE VIEW live_strings AS
	SELECT count(DISTINCT s) AS n FROM apicount.live,
	       unnest(ARRAY[method, path, user_id]) AS s
	WHERE s IS NOT NULL AND path <> '(overflow)';
});

# phase 1 rows: i even -> old minute, odd -> now (path segments are not numbers, which
# apicount.normalize_paths would turn into :id)
my $gen = q{
	SELECT CASE WHEN i % 2 = 0 THEN date_trunc('minute', now()) - interval '10 minutes'
	            ELSE now() END,
	       CASE WHEN i % 10 = 0 THEN 'PATCH' WHEN i % 10 = 5 THEN 'OPTIONS'
	            ELSE (ARRAY['GET', 'POST', 'PUT'])[i % 3 + 1] END,
	       CASE WHEN i % 5 = 0 THEN (CASE WHEN i % 2 = 0 THEN '/o/p' ELSE '/n/p' END) || (i / 10 % 8)
	            ELSE '/s/p' || (i % 7) END,
	       '10.1.0.1'::inet,
	       CASE WHEN i % 4 = 1 THEN NULL
	            WHEN i % 7 = 0 THEN (CASE WHEN i % 2 = 0 THEN 'uo' ELSE 'un' END) || (i % 3)
	            ELSE 'us' || (i % 5) END,
	       1, i
	FROM generate_series(0, 2999) AS i};
my $ins = q{INSERT INTO apicount.requests (ts, method, path, client_ip, user_id, status)
	SELECT ts, method, path, client_ip, user_id, 200 FROM truth WHERE phase = 1 AND %s};
q1(sprintf(q{
	INSERT INTO truth %s;
	BEGIN;
	%s;
	SAVEPOINT a;
	%s;
	RELEASE SAVEPOINT a;
	SAVEPOINT b;
	INSERT INTO apicount.requests (path, user_id) SELECT '/rolled/back/' || i, 'rb' || i
	FROM generate_series(1, 300) AS i;
	ROLLBACK TO SAVEPOINT b;
	COMMIT;}, $gen, sprintf($ins, 'i < 1500'), sprintf($ins, 'i >= 1500')));

my $keys = q1(q{SELECT count(*) FROM (SELECT DISTINCT date_trunc('minute', ts), method, path,
	client_ip, user_id FROM truth) k});
cmp_ok($keys, '>', 200, "phase 1 has $keys distinct keys");
cmp_ok($keys, '<', 1000, 'phase 1 fits in the counter table');
is(q1('SELECT overflow_hits FROM apicount.stats'), '0', 'phase 1: nothing overflowed');

my $exact = q{
	WITH t AS (SELECT date_trunc('minute', ts) AS bucket, method, path, client_ip,
	                  coalesce(user_id, '(null)') AS uid, count(*) AS calls
	           FROM truth WHERE %s GROUP BY 1, 2, 3, 4, 5),
	     l AS (SELECT bucket, method, path, client_ip, coalesce(user_id, '(null)') AS uid,
	                  calls
	           FROM apicount.live WHERE path <> '(overflow)')
	SELECT count(*) FILTER (WHERE l.calls IS DISTINCT FROM t.calls) || ',' || count(*)
	FROM t FULL JOIN l USING (bucket, method, path, client_ip, uid)};

is( q1('SELECT strings - 2 = distinct_strings($$true$$) FROM apicount.stats'),
	't', 'phase 1: one string per distinct method, path and user id of the rows');
is(q1(sprintf($exact, 'true')), "0,$keys",
	'phase 1: every live entry holds exactly its rows, under its names');

# free the old minute: its strings must go, the shared ones stay for the current minute
q1('SELECT apicount.flush()');
ok( wait_for(
		$node,
		"SELECT count(*) FROM apicount.live WHERE bucket < date_trunc('minute', now()) - interval '5 minutes'",
		'0', 30),
	'the old minute\'s entries were freed');
my $now_keys = q1(q{SELECT count(*) FROM (SELECT DISTINCT date_trunc('minute', ts), method, path,
	client_ip, user_id FROM truth WHERE ts > now() - interval '5 minutes') k});
is( q1(q{SELECT strings - 2 = distinct_strings($$ts > now() - interval '5 minutes'$$)
	FROM apicount.stats}),
	't', 'after freeing: the strings of the current minute\'s rows only');
is(q1(sprintf($exact, "ts > now() - interval '5 minutes'")), "0,$now_keys",
	'after freeing: the current minute\'s entries keep their rows and names');

# phase 2: new keys with a new path and a new user id each, more than the table holds
my ($strings, $cap, $entries) =
  split /\|/, q1('SELECT strings, strings_capacity, entries FROM apicount.stats');
my $n2 = int(($cap - $strings) / 2) + 200;
cmp_ok($entries + $n2, '<', 1000, "phase 2: $n2 new keys fit in the counter table");
q1(qq{
	INSERT INTO truth SELECT now(), 'GET', '/f/k' || i, '10.2.0.1', 'uf' || i, 2, i
	FROM generate_series(1, $n2) AS i;
	BEGIN;
	INSERT INTO apicount.requests (ts, method, path, client_ip, user_id, status)
	SELECT ts, method, path, client_ip, user_id, 200 FROM truth WHERE phase = 2;
	COMMIT;});
($strings, $cap) = split /\|/, q1('SELECT strings, strings_capacity FROM apicount.stats');
cmp_ok($strings, '>=', $cap - 1, "phase 2: the string table filled up ($strings of $cap)");
cmp_ok(q1('SELECT overflow_hits FROM apicount.stats'), '>', 0,
	'phase 2: keys refused for want of strings overflowed');
is( q1(q{SELECT strings - 2 = (SELECT n FROM live_strings) FROM apicount.stats}),
	't', 'phase 2: one string per distinct string named by a live entry');
is( q1(q{
	WITH t AS (SELECT date_trunc('minute', ts) AS bucket, count(*) AS calls FROM truth GROUP BY 1),
	     l AS (SELECT bucket, sum(calls) AS calls FROM apicount.live GROUP BY 1)
	SELECT count(*) FILTER (WHERE l.calls IS DISTINCT FROM t.calls)
	FROM t FULL JOIN l USING (bucket)
	WHERE bucket > now() - interval '5 minutes'}),
	'0', 'phase 2: the current minute\'s total equals the truth, overflow included');
is( q1(q{
	WITH l AS (SELECT path, user_id, calls FROM apicount.live WHERE path LIKE '/f/%')
	SELECT count(*) FILTER (WHERE l.calls <> 1 OR l.user_id IS DISTINCT FROM 'uf' || substr(l.path, 5))
	FROM l}),
	'0', 'phase 2: every named new entry carries its own path and user id, one hit each');

# a second flush changes nothing for the current minute: the invariant still holds
q1('SELECT apicount.flush()');
is( q1(q{SELECT strings - 2 = (SELECT n FROM live_strings) FROM apicount.stats}),
	't', 'after another flush: strings still match the live entries');

# phase 3: one free string left; 50 keys share a new path and each has a new user id, so
# each key takes the path (the last free string), is refused its user id and gives the
# path back: a reference the merge took and returned must not be reused by the next key
($strings, $cap, $entries) =
  split /\|/, q1('SELECT strings, strings_capacity, entries FROM apicount.stats');
my $fill = $cap - $strings - 1;
if ($fill > 0)
{
	q1(qq{INSERT INTO truth SELECT now(), 'GET', '/s/p1', '10.3.0.1', 'fill' || i, 3, i
		FROM generate_series(1, $fill) AS i;
		INSERT INTO apicount.requests (ts, method, path, client_ip, user_id)
		SELECT ts, method, path, client_ip, user_id FROM truth WHERE phase = 3;});
}
my $over0;
($strings, $entries, $over0) =
  split /\|/, q1('SELECT strings, entries, overflow_hits FROM apicount.stats');
is($strings, $cap - 1, 'phase 3: one free string left');
cmp_ok($entries + 50, '<', 1000, 'phase 3: the counter table has room for every key');
q1(q{
	INSERT INTO truth SELECT now(), 'GET', '/g/shared', '10.4.0.1', 'ug' || i, 4, i
	FROM generate_series(1, 50) AS i;
	INSERT INTO apicount.requests (ts, method, path, client_ip, user_id)
	SELECT ts, method, path, client_ip, user_id FROM truth WHERE phase = 4;});
is( q1(qq{SELECT strings || ',' || (overflow_hits - $over0) FROM apicount.stats}),
	($cap - 1) . ',50', 'phase 3: every key overflowed and the path was given back');
is(q1(q{SELECT count(*) FROM apicount.live WHERE path = '/g/shared'}),
	'0', 'phase 3: no entry names the refused path');
q1('SELECT apicount.flush()');
is( q1(q{SELECT flush_failures || ',' || (strings - 2 = (SELECT n FROM live_strings))
	FROM apicount.stats}),
	'0,true', 'phase 3: the flush names every entry; strings match the live entries');
is( q1(q{
	WITH t AS (SELECT date_trunc('minute', ts) AS bucket, count(*) AS calls FROM truth
	           WHERE ts > now() - interval '5 minutes' GROUP BY 1),
	     r AS (SELECT bucket, sum(calls) AS calls FROM apicount.api_minute
	           WHERE bucket > now() - interval '5 minutes' GROUP BY 1)
	SELECT count(*) FILTER (WHERE r.calls IS DISTINCT FROM t.calls) FROM t FULL JOIN r USING (bucket)}),
	'0', 'phase 3: api_minute holds every row of the current minute');

$node->stop;
done_testing();
