# 009_string_refs.pl — the string table's reference counts when one commit creates many keys.
#
# A commit's merge takes one string reference per new entry and per string (method, path,
# user id); within one merge a string referenced again costs an atomic add on the entry it
# already holds (strtab.c, the batch cache).  A reference too many would keep a string
# forever; one too few would drop a string that live entries still name.  A tracked hit makes
# two entries (counters.h): its API entry (method, path) and its caller entry (method, path,
# user id), so a path is named by entries of both tiers.
#
# apicount.max_entries = 2000 and apicount.max_apis = 2000 (so that the string table,
# (2000 + 2000 + 1024) / 2 + 64 = 2,576 strings, fills before either tier; the reserve of the
# audited tier, apicount.max_audited_entries = 100 more, is not for these keys),
# apicount.flush_interval = 1h (flushes only by flush()).
# Phase 1: one transaction records 3,000 rows over two minutes (10 minutes ago and now),
# with methods, paths and user ids shared by both minutes and others used by one minute
# only (a savepoint released, one rolled back).  Phase 2: one transaction creates new keys
# (in the old minute) with two new strings each (a path for the API entry, a user id for the
# caller entry), more than the string table has room for, so references are refused and given
# back in the middle of the merge.  Phase 3: with one free string, 50 keys share a new path and
# each has a new user id.  Phase 4: with one free string, 50 keys share a new method and each
# has a new path.
#
# Proves, with the truth computed from a plain table of the same rows:
#  - after phase 1, apicount.stats.strings is 3 (the permanent strings '*', '(other)' and
#    '(other callers)') plus the distinct strings of the rows;
#  - every live caller entry holds exactly its rows, under its own method, path and user id,
#    and every live API entry exactly the rows of its (minute, method, path);
#  - after flush() frees the old minute's entries, strings is 3 plus the distinct strings of
#    the current minute's rows, and those entries still hold their rows under their names;
#  - after phase 2, strings reached strings_capacity, APIs refused their path were counted
#    under '(other)' and callers refused their user id were folded, the minute's total in the
#    API tier equals the truth, strings is 3 plus the distinct strings named by live entries,
#    every named new entry carries its own names (one hit each) and a caller entry exists only
#    under an API entry of its path;
#  - after another flush (which frees phase 2's entries), the same holds;
#  - phase 3: the first key's API entry takes the last free string (the path) and keeps it;
#    every caller is refused its user id and gives its references of the method and the path
#    back: the path stays (its API entry names it), all 50 hits are under its own name, folded
#    into its '(other callers)', none overflowed, and after the flush api_minute and
#    caller_minute hold them;
#  - phase 4: the first key takes the method (the last free string), is refused its path and
#    gives the method back (freed), then takes it again for the method's '(other)' entry; the
#    other keys find it held: all 50 hits are counted under (new method, '(other)'), no entry
#    names a refused path, strings is full, and the flush succeeds and writes them;
#  - after each flush strings is 3 plus the distinct strings named by live entries, and at the
#    end api_minute holds every row (per minute, and per (minute, method, path) for every row
#    that is not '(other)'), and caller_minute adds up to api_minute per (minute, method, path).
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
	  . "apicount.max_entries = 2000\n"
	  . "apicount.max_apis = 2000\n"
	  . "apicount.max_audited_entries = 100\n"
	  . "apicount.flush_interval = '1h'\n"
	  . "log_statement = none\n"
	  . "timezone = 'UTC'\n");
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION apicount');

sub q1 { return $node->safe_psql('postgres', shift) }

my ($capacity, $api_capacity, $cap) =
  split /\|/, q1('SELECT capacity, api_capacity, strings_capacity FROM apicount.stats');
is("$capacity|$api_capacity|$cap", '2000|2000|2576',
	'capacities: 2000 callers, 2000 APIs, (2000 + 2000 + 1024) / 2 + 64 strings');
is(q1('SELECT strings FROM apicount.stats'),
	'3', "a fresh server holds the three permanent strings only ('*', '(other)', '(other callers)')");

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
	-- the strings live entries name, but the three permanent ones
	CREATE VIEW live_strings AS
	SELECT count(DISTINCT s) AS n FROM apicount.live,
	       unnest(ARRAY[method, path, user_id]) AS s
	WHERE s IS NOT NULL AND s NOT IN ('*', '(other)', '(other callers)');
});
my $strings_match = q{SELECT strings - 3 = (SELECT n FROM live_strings) FROM apicount.stats};

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
my $apis = q1(q{SELECT count(*) FROM (SELECT DISTINCT date_trunc('minute', ts), method, path
	FROM truth) k});
cmp_ok($keys, '>', 200, "phase 1 has $keys distinct caller keys ($apis APIs)");
cmp_ok($keys, '<', $capacity, 'phase 1 fits in the caller tier');
is(q1('SELECT overflow_hits || \'|\' || folded_calls FROM apicount.stats'), '0|0',
	'phase 1: nothing overflowed, no caller folded');

# live entries of each tier against the truth (rows matched, rows compared)
my $exact = q{
	WITH t AS (SELECT date_trunc('minute', ts) AS bucket, method, path, client_ip,
	                  coalesce(user_id, '(null)') AS uid, count(*) AS calls
	           FROM truth WHERE %s GROUP BY 1, 2, 3, 4, 5),
	     l AS (SELECT bucket, method, path, client_ip, coalesce(user_id, '(null)') AS uid,
	                  calls
	           FROM apicount.live WHERE tier = 'caller')
	SELECT count(*) FILTER (WHERE l.calls IS DISTINCT FROM t.calls) || ',' || count(*)
	FROM t FULL JOIN l USING (bucket, method, path, client_ip, uid)};
my $exact_api = q{
	WITH t AS (SELECT date_trunc('minute', ts) AS bucket, method, path, count(*) AS calls
	           FROM truth WHERE %s GROUP BY 1, 2, 3),
	     l AS (SELECT bucket, method, path, calls FROM apicount.live WHERE tier = 'api')
	SELECT count(*) FILTER (WHERE l.calls IS DISTINCT FROM t.calls) || ',' || count(*)
	FROM t FULL JOIN l USING (bucket, method, path)};

is( q1('SELECT strings - 3 = distinct_strings($$true$$) FROM apicount.stats'),
	't', 'phase 1: one string per distinct method, path and user id of the rows');
is(q1(sprintf($exact, 'true')), "0,$keys",
	'phase 1: every live caller entry holds exactly its rows, under its names');
is(q1(sprintf($exact_api, 'true')), "0,$apis",
	'phase 1: every live API entry holds exactly the rows of its (minute, method, path)');

# free the old minute: its strings must go, the shared ones stay for the current minute
q1('SELECT apicount.flush()');
ok( wait_for(
		$node,
		"SELECT count(*) FROM apicount.live WHERE bucket < date_trunc('minute', now()) - interval '5 minutes'",
		'0', 30),
	'the old minute\'s entries were freed');
my $recent = "ts > now() - interval '5 minutes'";
my $now_keys = q1(qq{SELECT count(*) FROM (SELECT DISTINCT date_trunc('minute', ts), method, path,
	client_ip, user_id FROM truth WHERE $recent) k});
my $now_apis = q1(qq{SELECT count(*) FROM (SELECT DISTINCT date_trunc('minute', ts), method, path
	FROM truth WHERE $recent) k});
is( q1(qq{SELECT strings - 3 = distinct_strings(\$\$$recent\$\$) FROM apicount.stats}),
	't', 'after freeing: the strings of the current minute\'s rows only');
is(q1(sprintf($exact, $recent)), "0,$now_keys",
	'after freeing: the current minute\'s caller entries keep their rows and names');
is(q1(sprintf($exact_api, $recent)), "0,$now_apis",
	'after freeing: the current minute\'s API entries keep their rows and names');

# phase 2: new keys in the old minute with a new path and a new user id each (2 strings:
# the API entry's path, the caller entry's user id), more than the string table holds
my ($strings, $entries, $api_entries, $caller_entries) =
  split /\|/, q1('SELECT strings, entries, api_entries, caller_entries FROM apicount.stats');
my $n2 = int(($cap - $strings) / 2) + 200;
cmp_ok($caller_entries + $n2, '<', $capacity, "phase 2: $n2 new keys fit in the caller tier");
cmp_ok($api_entries + $n2, '<', $api_capacity, "phase 2: $n2 new APIs fit in the API tier");
my $old = "date_trunc('minute', now()) - interval '10 minutes'";
q1(qq{
	INSERT INTO truth SELECT $old, 'GET', '/f/k' || i, '10.2.0.1', 'uf' || i, 2, i
	FROM generate_series(1, $n2) AS i;
	BEGIN;
	INSERT INTO apicount.requests (ts, method, path, client_ip, user_id, status)
	SELECT ts, method, path, client_ip, user_id, 200 FROM truth WHERE phase = 2;
	COMMIT;});
$strings = q1('SELECT strings FROM apicount.stats');
is($strings, $cap, "phase 2: the string table filled up ($strings of $cap)");
my ($ovh2, $folded2) = split /\|/, q1('SELECT overflow_hits, folded_calls FROM apicount.stats');
cmp_ok($ovh2, '>', 0, "phase 2: APIs refused their path were counted under '(other)'");
cmp_ok($folded2, '>', 0, 'phase 2: callers refused their user id were folded');
is(q1($strings_match), 't', 'phase 2: one string per distinct string named by a live entry');
is( q1(q{
	WITH t AS (SELECT date_trunc('minute', ts) AS bucket, count(*) AS calls FROM truth WHERE phase = 2
	           GROUP BY 1),
	     l AS (SELECT bucket, sum(calls) AS calls FROM apicount.live
	           WHERE tier = 'api' AND (path LIKE '/f/%' OR path = '(other)') GROUP BY 1)
	SELECT count(*) FILTER (WHERE l.calls IS DISTINCT FROM t.calls) || ',' || count(*)
	FROM t FULL JOIN l USING (bucket)}),
	'0,1', "phase 2: the minute's total in the API tier equals the truth, '(other)' included");
is( q1(q{
	SELECT count(*) FILTER (WHERE calls <> 1
	                          OR (tier = 'caller' AND user_id IS DISTINCT FROM 'uf' || substr(path, 5))
	                          OR (tier = 'api' AND user_id IS NOT NULL))
	FROM apicount.live WHERE path LIKE '/f/%'}),
	'0', 'phase 2: every named new entry carries its own path (and user id), one hit each');
is( q1(q{
	SELECT count(*) FROM apicount.live c WHERE c.tier = 'caller' AND c.path LIKE '/f/%'
	  AND NOT EXISTS (SELECT FROM apicount.live a WHERE a.tier = 'api' AND a.path = c.path
	                  AND a.method = c.method AND a.bucket = c.bucket)}),
	'0', 'phase 2: a caller entry exists only under an API entry of its path');

# a flush frees phase 2's entries (old minute): the invariant still holds
q1('SELECT apicount.flush()');
is(q1("SELECT count(*) FROM apicount.live WHERE path LIKE '/f/%' OR path = '(other)'"), '0',
	'after another flush: phase 2\'s entries were freed');
is(q1($strings_match), 't', 'after another flush: strings still match the live entries');

# one free string left: new keys of the current minute, a new path and a new user id each
# (one API entry, one caller entry), plus one key with only a new user id if the count is odd
sub leave_one_free
{
	my ($phase, $label) = @_;    # the truth's phase number of the fill rows, the label
	my $s = q1('SELECT strings FROM apicount.stats');
	my $fill = $cap - $s - 1;
	my $pairs = int($fill / 2);
	q1(qq{INSERT INTO truth SELECT now(), 'GET', '/h$phase/k' || i, '10.3.0.1', 'uh$phase-' || i, $phase, i
		FROM generate_series(1, $pairs) AS i;
		INSERT INTO truth SELECT now(), 'GET', '/s/p1', '10.3.0.1', 'uh$phase-odd', $phase, 0
		WHERE $fill % 2 = 1;
		INSERT INTO apicount.requests (ts, method, path, client_ip, user_id)
		SELECT ts, method, path, client_ip, user_id FROM truth WHERE phase = $phase;});
	is(q1('SELECT strings FROM apicount.stats'), $cap - 1, "$label: one free string left");
}

# phase 3: 50 keys (old minute) share a new path and each has a new user id: the first API
# entry takes the path (the last free string) and keeps it; every caller takes the method and
# the path, is refused its user id, gives both back and is folded
leave_one_free(30, 'phase 3');
my ($over0, $folded0) = split /\|/, q1('SELECT overflow_hits, folded_calls FROM apicount.stats');
cmp_ok(q1('SELECT api_entries FROM apicount.stats') + 1, '<', $api_capacity,
	'phase 3: the API tier has room');
cmp_ok(q1('SELECT caller_entries FROM apicount.stats') + 50, '<', $capacity,
	'phase 3: the caller tier has room for every key');
q1(qq{
	INSERT INTO truth SELECT $old, 'GET', '/g/shared', '10.4.0.1', 'ug' || i, 3, i
	FROM generate_series(1, 50) AS i;
	INSERT INTO apicount.requests (ts, method, path, client_ip, user_id)
	SELECT ts, method, path, client_ip, user_id FROM truth WHERE phase = 3;});
is( q1(qq{SELECT strings || ',' || (overflow_hits - $over0) || ',' || (folded_calls - $folded0)
	FROM apicount.stats}),
	"$cap,0,50", 'phase 3: the path took the last string and stayed; no hit overflowed; 50 callers folded');
is(q1(q{SELECT string_agg(tier || ' ' || calls, ',') FROM apicount.live WHERE path = '/g/shared'}),
	'api 50', 'phase 3: the API entry holds the 50 hits; no caller entry names a refused user id');
is(q1($strings_match), 't', 'phase 3: strings match the live entries');
q1('SELECT apicount.flush()');
is( q1(q{SELECT flush_failures || ',' || strings || ',' || ((SELECT n FROM live_strings) + 3 = strings)
	FROM apicount.stats}),
	'0,' . ($cap - 1) . ',true',
	'phase 3: the flush succeeds and frees the path with its entry; strings match the live entries');
is( q1(q{SELECT (SELECT sum(calls) FROM apicount.api_minute WHERE path = '/g/shared') || ',' ||
	        (SELECT string_agg(coalesce(host(client_ip), '-') || ' ' || user_id || ' ' || calls, ',')
	         FROM apicount.caller_minute WHERE path = '/g/shared')}),
	"50,- (other callers) 50", "phase 3: api_minute holds the 50 hits, caller_minute as '(other callers)'");

# phase 4: 50 keys (old minute) share a new method and each has a new path: the first takes
# the method (the last free string), is refused its path and gives the method back; its
# '(other)' entry takes the method again; the other keys find it held
leave_one_free(40, 'phase 4');
($over0, $folded0) = split /\|/, q1('SELECT overflow_hits, folded_calls FROM apicount.stats');
cmp_ok(q1('SELECT entries - api_entries - caller_entries FROM apicount.stats') + 1, '<', 1024,
	'phase 4: the reserve has room');
q1(qq{
	INSERT INTO truth SELECT $old, 'MKCOL', '/g/m' || i, '10.5.0.1', NULL, 4, i
	FROM generate_series(1, 50) AS i;
	INSERT INTO apicount.requests (ts, method, path, client_ip, user_id)
	SELECT ts, method, path, client_ip, user_id FROM truth WHERE phase = 4;});
is( q1(qq{SELECT strings || ',' || (overflow_hits - $over0) || ',' || (folded_calls - $folded0)
	FROM apicount.stats}),
	"$cap,50,0", "phase 4: the method holds the last string; every hit overflowed, no caller folded");
is(q1(q{SELECT count(*) FROM apicount.live WHERE path LIKE '/g/m%'}),
	'0', 'phase 4: no entry names a refused path');
is(q1(q{SELECT string_agg(tier || ' ' || path || ' ' || calls, ',' ORDER BY tier) FROM apicount.live
	WHERE method = 'MKCOL'}),
	'api (other) 50,caller (other) 50', "phase 4: the 50 hits are under (MKCOL, '(other)'), in both tiers");
is(q1($strings_match), 't', 'phase 4: strings match the live entries');
q1('SELECT apicount.flush()');
is(q1(q{SELECT flush_failures || ',' || ((SELECT n FROM live_strings) + 3 = strings) FROM apicount.stats}),
	'0,true', 'phase 4: the flush names every entry; strings match the live entries');
is(q1(q{SELECT string_agg(path || ' ' || calls, ',') FROM apicount.api_minute WHERE method = 'MKCOL'}),
	'(other) 50', "phase 4: api_minute holds the 50 hits under (MKCOL, '(other)')");

# everything is flushed: api_minute holds every row, caller_minute adds up to it
q1('SELECT apicount.flush()');
is( q1(q{
	WITH t AS (SELECT date_trunc('minute', ts) AS bucket, count(*) AS calls FROM truth GROUP BY 1),
	     r AS (SELECT bucket, sum(calls) AS calls FROM apicount.api_minute GROUP BY 1)
	SELECT count(*) FILTER (WHERE r.calls IS DISTINCT FROM t.calls) FROM t FULL JOIN r USING (bucket)}),
	'0', 'api_minute holds every row, per minute');
is( q1(q{
	WITH t AS (SELECT date_trunc('minute', ts) AS bucket, method, path, count(*) AS calls
	           FROM truth GROUP BY 1, 2, 3)
	SELECT count(*) FROM apicount.api_minute r LEFT JOIN t USING (bucket, method, path)
	WHERE r.path <> '(other)' AND r.calls IS DISTINCT FROM t.calls}),
	'0', "every api_minute row but '(other)' holds exactly the rows of its (minute, method, path)");
is( q1(q{
	SELECT count(*) FROM apicount.api_minute a
	FULL JOIN (SELECT bucket, method, path, sum(calls) AS calls FROM apicount.caller_minute
	           GROUP BY 1, 2, 3) c USING (bucket, method, path)
	WHERE a.calls IS DISTINCT FROM c.calls}),
	'0', 'caller_minute adds up to api_minute per (minute, method, path)');

$node->stop;
done_testing();
