# 001_concurrent_rollbacks.pl — concurrent ingest with rollbacks counts exactly the committed hits.
#
# 8 pgbench clients (-c 8 -j 2) run transactions that record hits through
# INSERT INTO apicount.requests (single- and multi-row) and apicount.hit(), with random
# ROLLBACK, SAVEPOINT / ROLLBACK TO / RELEASE (nested), PL/pgSQL exception blocks that roll back
# a subtransaction after recording hits (including a multi-row INSERT whose last row is invalid),
# and SET LOCAL apicount.track_callers = off.  A concurrent pgbench script calls
# apicount.flush() so that flushes run while hits are being committed.
#
# Every statement that records hits also inserts the same rows into the plain logged table
# "truth", in the same statement (data-modifying CTE), so truth commits and rolls back exactly
# with the hits, including savepoint rollbacks.  Expected rollups are computed from truth only.
#
# Phase 1 (flush_interval 1s + concurrent flush() calls): after the load,
#   top_apis(n, from, to) and top_apis(n, '1 hour') (flushed + live) equal truth.
# The server is then restarted with flush_interval = '1h' (the shutdown flush writes phase 1).
# Phase 2 (no flush at all): a second load stays in shared memory; checked deterministically:
#   live unflushed of the API tier = phase-2 truth, of the caller tier = its tracked hits,
#   api_minute = phase-1 truth, stats.hits = phase-2 truth, and top_apis (mixed flushed + live)
#   equals truth.
# Finally flush(); api_minute equals truth per (bucket, method, path) for calls, ok,
# client_errors, server_errors, latency_sum_ms, latency_max_ms, latency_count, and caller_minute
# equals truth per (bucket, method, path, client_ip, user_id) over tracked hits, plus one
# '(other callers)' row (NULL client_ip) per (bucket, method, path) holding the untracked hits;
# so caller_minute sums to api_minute per (bucket, method, path).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('concurrent');
$node->init;
$node->append_conf('postgresql.conf',
	"shared_preload_libraries = 'apicount'\n"
	  . "apicount.flush_interval = '1s'\n"
	  . "max_connections = 30\n"
	  . "log_statement = none\n"
	  . "timezone = 'UTC'\n");
$node->start;

$node->safe_psql('postgres', q{
	CREATE EXTENSION apicount;
	CREATE TABLE truth (
		id          bigserial PRIMARY KEY,
		ts          timestamptz NOT NULL DEFAULT statement_timestamp(),
		method      text NOT NULL,
		path        text NOT NULL,
		client_ip   inet,
		user_id     text,
		status      int,
		latency_ms  float8,
		tracked     boolean NOT NULL DEFAULT current_setting('apicount.track_callers')::boolean,
		via         text NOT NULL
	);
});

# ---- the pgbench transaction script --------------------------------------------------------
# One hit site $k records n rows (n = 1 or a random 1..5) through 'requests' or 'hit'.  Paths:
# odd p -> '/r<p>/<id>' normalized to '/r<p>/:id'; even p -> '/s<p>?page=<id>' normalized to
# '/s<p>'.  Methods are sent in mixed case and counted upper-case.  Latencies are multiples of
# 0.5 ms, so sums are exact in float8.  A quarter of the sites send ts 8-11 minutes in the past
# (late hits): with flush_interval 1s their entries are flushed and freed (past the live horizon)
# while more hits for the same minutes keep arriving, so entries are freed and re-created under
# concurrent ingest.
my @set_lines;

sub site
{
	my ($k, $via, $multi) = @_;
	push @set_lines,
	  "\\set m$k random(1, 4)",
	  "\\set p$k random(1, 12)",
	  "\\set id$k random(1, 1000000)",
	  "\\set st$k random(0, 7)",
	  "\\set lat$k random(0, 40)",
	  "\\set ip$k random(0, 4)",
	  "\\set u$k random(0, 5)",
	  "\\set old$k random(0, 11)";
	my $n = 1;
	if ($multi)
	{
		push @set_lines, "\\set n$k random(1, 5)";
		$n = ":n$k";
	}
	my $v = qq{v AS (
  SELECT CASE WHEN :old$k < 3 THEN statement_timestamp() - (8 + :old$k) * interval '1 minute' - random() * interval '59 seconds'
              ELSE statement_timestamp() END AS ts,
         (ARRAY['get','Post','PUT','delete'])[:m$k] AS m,
         CASE WHEN :p$k % 2 = 1 THEN '/r' || :p$k || '/' || (:id$k + g)
              ELSE '/s' || :p$k || '?page=' || (:id$k + g) END AS raw,
         CASE WHEN :p$k % 2 = 1 THEN '/r' || :p$k || '/:id' ELSE '/s' || :p$k END AS norm,
         CASE WHEN :ip$k = 0 THEN NULL ELSE ('10.0.0.' || :ip$k)::inet END AS ip,
         CASE WHEN :u$k = 0 THEN NULL ELSE 'user' || :u$k END AS uid,
         (ARRAY[200,201,304,404,429,500,503,NULL]::int[])[1 + (:st$k + g) % 8] AS st,
         CASE WHEN :lat$k = 0 THEN NULL ELSE ((:lat$k + g) * 0.5)::float8 END AS lat
  FROM generate_series(1, $n) g),
t AS (INSERT INTO truth (ts, method, path, client_ip, user_id, status, latency_ms, via)
      SELECT ts, upper(m), norm, ip, uid, st, lat, '$via' FROM v)};
	$v =~ s/\n\s*/ /g;
	if ($via eq 'requests')
	{
		return "WITH $v INSERT INTO apicount.requests (ts, method, path, client_ip, user_id, status, latency_ms) SELECT ts, m, raw, ip, uid, st, lat FROM v;";
	}
	return "WITH $v SELECT count(*) FROM (SELECT apicount.hit(raw, m, ip, uid, st, lat, ts) FROM v) h;";
}

# PL/pgSQL exception blocks: per iteration, record a hit (and its truth row), then maybe fail
# (a hit() with status 999, or a multi-row INSERT whose last row is invalid) -> the block's
# subtransaction, hits and truth rows included, rolls back.
my $do_block = q{DO $do$
DECLARE i int;
BEGIN
  FOR i IN 1..3 LOOP
    BEGIN
      INSERT INTO truth (method, path, client_ip, user_id, status, latency_ms, via)
      VALUES ('PATCH', '/do/a' || i, '10.0.1.1', NULL, 204, 1.5, 'do');
      PERFORM apicount.hit('/do/a' || i, 'patch', '10.0.1.1', NULL, 204, 1.5);
      IF random() < 0.4 THEN
        PERFORM apicount.hit('/do/bad', 'GET', NULL, NULL, 999);
      ELSIF random() < 0.5 THEN
        INSERT INTO truth (method, path, status, via) VALUES ('GET', '/do/m', 200, 'do'), ('GET', '/do/m', 200, 'do');
        INSERT INTO apicount.requests (path, status) VALUES ('/do/m', 200), ('/do/m', 200), ('/do/m', 700);
      END IF;
    EXCEPTION WHEN numeric_value_out_of_range THEN
      NULL;
    END;
  END LOOP;
END
$do$;};
$do_block =~ s/\n\s*/ /g;

my @body = (
	'BEGIN;',
	'\if :tc <= 15',
	'SET LOCAL apicount.track_callers = off;',
	'\endif',
	site(1, 'requests', 0),
	'SAVEPOINT s1;',
	site(2, 'hit', 0),
	site(3, 'requests', 1),
	'\if :a <= 30',
	'ROLLBACK TO SAVEPOINT s1;',
	site(4, 'hit', 1),
	'\elif :a <= 60',
	'RELEASE SAVEPOINT s1;',
	'\endif',
	'SAVEPOINT s2;',
	site(5, 'requests', 0),
	'SAVEPOINT s3;',
	site(6, 'hit', 1),
	'\if :b <= 25',
	'ROLLBACK TO SAVEPOINT s2;',
	'\elif :b <= 50',
	'RELEASE SAVEPOINT s3;',
	'ROLLBACK TO SAVEPOINT s2;',
	site(7, 'requests', 1),
	'\elif :b <= 75',
	'ROLLBACK TO SAVEPOINT s3;',
	site(8, 'hit', 0),
	'RELEASE SAVEPOINT s2;',
	'\endif',
	'\if :d <= 30',
	$do_block,
	'\endif',
	site(9, 'requests', 1),
	'\if :c <= 20',
	'ROLLBACK;',
	'\else',
	'COMMIT;',
	'\endif');
my $script = join("\n",
	'\set a random(1, 100)',
	'\set b random(1, 100)',
	'\set c random(1, 100)',
	'\set d random(1, 100)',
	'\set tc random(1, 100)',
	@set_lines, @body) . "\n";

# autocommit hits outside any explicit transaction (each statement its own transaction)
@set_lines = ();
my $auto_stmt = site(10, 'hit', 1);
my $auto_script = join("\n", @set_lines, $auto_stmt) . "\n";

my $flush_script = "SELECT apicount.flush();\n";

# ---- comparison queries ----------------------------------------------------------------------
my $api_diff = q{
WITH a AS (
	SELECT bucket, method, path, calls, ok, client_errors, server_errors,
	       latency_sum_ms, latency_max_ms, latency_count
	FROM apicount.api_minute),
t AS (
	SELECT date_trunc('minute', ts) AS bucket, method, path, count(*) AS calls,
	       count(*) FILTER (WHERE status BETWEEN 100 AND 399) AS ok,
	       count(*) FILTER (WHERE status BETWEEN 400 AND 499) AS client_errors,
	       count(*) FILTER (WHERE status BETWEEN 500 AND 599) AS server_errors,
	       coalesce(sum(latency_ms), 0) AS latency_sum_ms, max(latency_ms) AS latency_max_ms,
	       count(latency_ms) AS latency_count
	FROM truth GROUP BY 1, 2, 3)
SELECT 'only in api_minute', * FROM (SELECT * FROM a EXCEPT ALL SELECT * FROM t) x
UNION ALL
SELECT 'only in truth', * FROM (SELECT * FROM t EXCEPT ALL SELECT * FROM a) y
ORDER BY 2, 3, 4, 1};

my $caller_diff = q{
WITH c AS (
	SELECT bucket, method, path, client_ip, user_id, calls, ok, client_errors, server_errors
	FROM apicount.caller_minute),
t AS (
	SELECT date_trunc('minute', ts) AS bucket, method, path,
	       CASE WHEN tracked THEN client_ip END AS client_ip,
	       CASE WHEN tracked THEN user_id ELSE '(other callers)' END AS user_id,
	       count(*) AS calls,
	       count(*) FILTER (WHERE status BETWEEN 100 AND 399) AS ok,
	       count(*) FILTER (WHERE status BETWEEN 400 AND 499) AS client_errors,
	       count(*) FILTER (WHERE status BETWEEN 500 AND 599) AS server_errors
	FROM truth GROUP BY 1, 2, 3, 4, 5)
SELECT 'only in caller_minute', * FROM (SELECT * FROM c EXCEPT ALL SELECT * FROM t) x
UNION ALL
SELECT 'only in truth', * FROM (SELECT * FROM t EXCEPT ALL SELECT * FROM c) y
ORDER BY 2, 3, 4, 5, 6, 1};

# top_apis vs truth: method, path, calls, errors exactly (in the contract's order), and
# error_ratio / avg_latency_ms within 1e-9 relative
sub top_apis_vs_truth
{
	my ($label, $call, $limit) = @_;
	my $sql = qq{
WITH f AS (
	SELECT row_number() OVER () AS rn, * FROM $call),
t AS (
	SELECT row_number() OVER (ORDER BY count(*) DESC, method, path) AS rn,
	       method, path, count(*) AS calls,
	       count(*) FILTER (WHERE status >= 400) AS errors,
	       count(*) FILTER (WHERE status >= 400)::float8 / count(*) AS error_ratio,
	       avg(latency_ms) AS avg_latency_ms
	FROM truth GROUP BY method, path
	ORDER BY count(*) DESC, method, path
	LIMIT $limit)
SELECT coalesce(f.rn, t.rn), f.method, f.path, f.calls, f.errors, t.method, t.path, t.calls, t.errors,
       f.error_ratio, t.error_ratio, f.avg_latency_ms, t.avg_latency_ms
FROM f FULL JOIN t ON f.rn = t.rn
WHERE f.method IS DISTINCT FROM t.method OR f.path IS DISTINCT FROM t.path
   OR f.calls IS DISTINCT FROM t.calls OR f.errors IS DISTINCT FROM t.errors
   OR abs(f.error_ratio - t.error_ratio) > 1e-9
   OR (f.avg_latency_ms IS NULL) <> (t.avg_latency_ms IS NULL)
   OR abs(f.avg_latency_ms - t.avg_latency_ms) > 1e-9 * greatest(1, abs(t.avg_latency_ms))
ORDER BY 1};
	my $rows = $node->safe_psql('postgres', $sql);
	is($rows, '', "$label: $call equals truth (method, path, calls, errors, ratios)");
	my $n = $node->safe_psql('postgres', "SELECT count(*) FROM $call");
	my $t = $node->safe_psql('postgres',
		"SELECT least($limit, count(DISTINCT (method, path))) FROM truth");
	is($n, $t, "$label: $call returns $t rows");
	return;
}

my $range = q{(SELECT min(ts) FROM truth), now() + interval '1 minute'};

sub run_pgbench
{
	my ($label, $tx, $files) = @_;
	$node->pgbench(
		"--no-vacuum --client=8 --jobs=2 --transactions=$tx",
		0,
		[qr{processed: \d+/\d+}],
		[qr{^$}],
		"$label: pgbench with 8 clients completes without errors",
		$files);
	return;
}

# ---- phase 1: 1s flush interval plus concurrent flush() calls -------------------------------
run_pgbench('phase 1', 300,
	{
		'001_mix_p1@20'   => $script,
		'001_auto_p1@4'   => $auto_script,
		'001_flush_p1@1'  => $flush_script,
	});

my ($truth_n, $rolled) = split /\|/, $node->safe_psql('postgres',
	"SELECT count(*), (SELECT count(DISTINCT via) FROM truth) FROM truth");
cmp_ok($truth_n, '>', 1000, "phase 1: truth holds many committed hits ($truth_n)");
cmp_ok($node->safe_psql('postgres', 'SELECT flushes FROM apicount.stats'),
	'>', 0, 'phase 1: flushes ran during the load');
is($node->safe_psql('postgres', "SELECT string_agg(DISTINCT via, ',' ORDER BY via) FROM truth"),
	'do,hit,requests', 'phase 1: truth has hits from every ingest route');

top_apis_vs_truth('phase 1', "apicount.top_apis(1000, $range)", 1000);
top_apis_vs_truth('phase 1', "apicount.top_apis(5, $range)", 5);
top_apis_vs_truth('phase 1', "apicount.top_apis(1000, interval '1 hour')", 1000);

# ---- restart with no periodic flush: the shutdown flush writes phase 1 -------------------------
$node->safe_psql('postgres', "ALTER SYSTEM SET apicount.flush_interval = '1h'");
$node->restart;
my $phase1_max = $node->safe_psql('postgres', 'SELECT max(id) FROM truth');
is($node->safe_psql('postgres', 'SELECT coalesce(sum(calls), 0) FROM apicount.api_minute'),
	$truth_n, 'after restart: api_minute holds all phase-1 hits');

# ---- phase 2: the load stays in shared memory -------------------------------------------------
run_pgbench('phase 2', 60,
	{
		'001_mix_p2@20'   => $script,
		'001_auto_p2@4'   => $auto_script,
	});
my $truth2 = $node->safe_psql('postgres', "SELECT count(*) FROM truth WHERE id > $phase1_max");
cmp_ok($truth2, '>', 100, "phase 2: truth holds new committed hits ($truth2)");
is($node->safe_psql('postgres', "SELECT coalesce(sum(unflushed), 0) FROM apicount.live WHERE tier = 'api'"),
	$truth2, 'phase 2: live unflushed of the API tier = the phase-2 truth (no flush since the restart)');
is($node->safe_psql('postgres', "SELECT coalesce(sum(unflushed), 0) FROM apicount.live WHERE tier = 'caller'"),
	$node->safe_psql('postgres', "SELECT count(*) FROM truth WHERE id > $phase1_max AND tracked"),
	'phase 2: live unflushed of the caller tier = the tracked phase-2 truth');
is($node->safe_psql('postgres', 'SELECT hits FROM apicount.stats'),
	$truth2, 'phase 2: stats.hits = committed hits since the restart');
is($node->safe_psql('postgres', 'SELECT coalesce(sum(calls), 0) FROM apicount.api_minute'),
	$truth_n, 'phase 2: api_minute still holds exactly the phase-1 hits');

top_apis_vs_truth('phase 2 (flushed + live)', "apicount.top_apis(1000, $range)", 1000);
top_apis_vs_truth('phase 2 (flushed + live)', "apicount.top_apis(7, $range)", 7);
top_apis_vs_truth('phase 2 (flushed + live)', "apicount.top_apis(1000, interval '1 hour')", 1000);

# ---- final flush: rollups equal truth exactly ---------------------------------------------------
$node->safe_psql('postgres', 'SELECT apicount.flush()');
is($node->safe_psql('postgres', 'SELECT coalesce(sum(unflushed), 0) FROM apicount.live'),
	'0', 'after flush(): nothing unflushed');
is($node->safe_psql('postgres', $api_diff), '',
	'api_minute equals truth per (bucket, method, path): calls, ok, client/server errors, latency sum/max/count');
is($node->safe_psql('postgres', $caller_diff), '',
	'caller_minute equals truth per (bucket, method, path, client_ip, user_id) over tracked hits, untracked as (other callers)');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM apicount.api_minute a
	FULL JOIN (SELECT bucket, method, path, sum(calls) AS calls FROM apicount.caller_minute
	           GROUP BY 1, 2, 3) c USING (bucket, method, path)
	WHERE a.calls IS DISTINCT FROM c.calls}),
	'0', 'caller_minute sums to api_minute per (bucket, method, path)');
is($node->safe_psql('postgres', 'SELECT sum(calls) FROM apicount.api_minute'),
	$node->safe_psql('postgres', 'SELECT count(*) FROM truth'),
	'api_minute total = truth total');
cmp_ok($node->safe_psql('postgres', 'SELECT count(*) FROM truth WHERE NOT tracked'),
	'>', 0, 'some hits were recorded with track_callers off');
is($node->safe_psql('postgres', "SELECT count(*) FROM apicount.api_minute WHERE path IN ('/do/bad', '(other)') OR method = '*'"),
	'0', "no rolled-back-only path and no '(other)' row in api_minute");
is($node->safe_psql('postgres', 'SELECT sum(calls) FROM apicount.top_apis(100000, ' . $range . ')'),
	$node->safe_psql('postgres', 'SELECT count(*) FROM truth'),
	'top_apis total after the flush = truth total');

$node->stop('fast');
done_testing();
