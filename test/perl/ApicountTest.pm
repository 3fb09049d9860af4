# test/perl/ApicountTest.pm — helpers shared by the TAP tests in test/t.
# (run_tests.sh puts test/perl on PERL5LIB.)
package ApicountTest;

use strict;
use warnings;
use Exporter 'import';
use PostgreSQL::Test::Cluster;
use POSIX qw(floor strftime);
use Test::More;
use Time::HiRes qw(usleep);

our @EXPORT_OK = qw(wait_for ts_text slot_of $SLOT_US window_node $CALLERS_ADD_UP $EXPECTED_RANGE_SQL
  same_rows);

# the API rows (api_minute) whose calls differ from the sum of their caller rows
# (caller_minute, "(other callers)" included): 0 when, per minute and API, they add up
our $CALLERS_ADD_UP = q{SELECT count(*) FROM apicount.api_minute a
        WHERE a.calls <> (SELECT coalesce(sum(c.calls), 0) FROM apicount.caller_minute c
                          WHERE c.bucket = a.bucket AND c.method = a.method AND c.path = a.path)};

# SQL functions of the tier tests (033, 034) over their plain table "mirror" of the hits
# sent (a column b: the hit's minute, and path, method): ceil_to(ts, unit), the first UTC
# hour or day boundary at or after ts; exp_hits(f, t, paths, method, a0, a1), the mirror's
# hits a range [f, t) reports when minutes are kept from a0 on and hours from a1 on
# ('-infinity': all kept): its ends widen to the buckets of the finest tier that still holds
# them (README "Ranges and tiers")
our $EXPECTED_RANGE_SQL = q{
CREATE FUNCTION ceil_to(ts timestamptz, u text) RETURNS timestamptz LANGUAGE sql IMMUTABLE AS $$
	SELECT CASE WHEN date_trunc(u, ts, 'UTC') = ts THEN ts
	            ELSE date_trunc(u, ts, 'UTC') + ('1 ' || u)::interval END $$;
CREATE FUNCTION exp_hits(f timestamptz, t timestamptz, ps text[], m text,
                         a0 timestamptz, a1 timestamptz)
RETURNS SETOF mirror LANGUAGE sql STABLE AS $$
	SELECT x.* FROM mirror x,
	  LATERAL (SELECT CASE WHEN f < a1 THEN date_trunc('day', f, 'UTC')
	                       WHEN f < a0 THEN date_trunc('hour', f, 'UTC') ELSE f END AS fe,
	                  CASE WHEN t <= a1 THEN ceil_to(t, 'day')
	                       WHEN t <= a0 THEN ceil_to(t, 'hour') ELSE t END AS te) r
	WHERE x.b >= r.fe AND x.b < r.te
	  AND (ps IS NULL OR x.path = ANY (ps)) AND (m IS NULL OR x.method = m) $$;
};

# same_rows($node, $label, $a, $b): one check that queries $a (the function's answer) and
# $b (the expected one) return the same multiset of rows on database postgres, and not none;
# on failure, a diag with up to 5 rows found only on either side
sub same_rows
{
	my ($node, $label, $a, $b) = @_;
	my $q = sub { return $node->safe_psql('postgres', $_[0]); };
	my $r = $q->("SELECT (SELECT count(*) FROM ($a) x) || ' ' || (SELECT count(*) FROM (($a) EXCEPT ALL ($b)) d)"
		  . " || ' ' || (SELECT count(*) FROM (($b) EXCEPT ALL ($a)) d)");
	my ($n, $d1, $d2) = split / /, $r;
	return ok($n > 0 && $d1 == 0 && $d2 == 0, "$label ($n rows)")
	  || diag("rows $n, only in the function's answer $d1, only in the expected $d2\n"
		  . $q->("(($a) EXCEPT ALL ($b)) LIMIT 5") . "\n--\n" . $q->("(($b) EXCEPT ALL ($a)) LIMIT 5"));
}

# the sliding-window slot at the default apicount.slot_seconds (5 s), in microseconds
our $SLOT_US = 5_000_000;

# wait_for($node, $sql, $want, $secs): poll until $sql returns $want on database
# postgres; errors (e.g. while the server restarts) count as "not yet".  Returns 1, or 0
# after $secs with a diag of the last answer.
sub wait_for
{
	my ($node, $sql, $want, $secs) = @_;
	my $last = '';
	my $end = Time::HiRes::time() + $secs;
	while (Time::HiRes::time() < $end)
	{
		my ($ret, $out, $err) = $node->psql('postgres', $sql);
		$last = "$out $err";
		return 1 if $ret == 0 && $out eq $want;
		usleep(50_000);
	}
	diag("wait_for timed out: $sql -> wanted '$want', last: $last");
	return 0;
}

# ts_text($us): microseconds since the Unix epoch -> an exact timestamptz literal (UTC)
sub ts_text
{
	my ($us) = @_;
	my $s = floor($us / 1_000_000);
	return strftime('%Y-%m-%d %H:%M:%S', gmtime($s))
	  . sprintf('.%06d+00', $us - $s * 1_000_000);
}

# slot_of($us): the number of the 5 s slot holding microsecond $us since the epoch
sub slot_of { my ($us) = @_; return floor($us / $SLOT_US); }

# window_node($name): a started node with apicount preloaded (flush every second, UTC)
# and the extension created in database postgres, as the sliding-window tests use it.
sub window_node
{
	my ($name) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init;
	$node->append_conf('postgresql.conf',
		"shared_preload_libraries = 'apicount'\n"
		  . "apicount.flush_interval = '1s'\n"
		  . "log_statement = none\n"
		  . "timezone = 'UTC'\n");
	$node->start;
	$node->safe_psql('postgres', 'CREATE EXTENSION apicount');
	return $node;
}

1;
