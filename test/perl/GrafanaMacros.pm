# test/perl/GrafanaMacros.pm — expands a Grafana PostgreSQL panel query the way Grafana does,
# so that test/t/030_grafana_dashboard.pl can run grafana/dashboards/apicount.json's SQL
# without a Grafana server.  Owns only the text transformation; running SQL is the test's job.
#
# Grafana transforms a query's rawSql in two stages (sources read in grafana/grafana):
#  1. frontend, packages/grafana-sql/src/datasource/SqlDatasource.ts: templateSrv.replace(rawSql,
#     scopedVars, interpolateVariable) with the variable regex of
#     public/app/features/variables/utils.ts:
#       \$(\w+) | \[\[([\s\S]+?)(?::(\w+))?\]\] | \$\{(\w+)(?:\.([^:^\}]+))?(?::(\w+))?\}
#     Unknown names ($__timeFilter, ...) are left alone.  interpolateVariable formats a value:
#       array            -> each value quoted ('...', ' doubled), joined with ','
#       string, multi or includeAll -> quoted like one array value  (single_string => 'quote',
#                           SqlDatasource.ts as of commit e75b5e7; newer variable-interpolation
#                           tests expect it only ' doubled: single_string => 'escape')
#       string otherwise -> ' doubled, not quoted
#       number           -> as is
#     "All" with no custom allValue is the array of every option value.
#  2. backend, pkg/tsdb/grafana-postgresql-datasource/macros.go Interpolate():
#     a. stripSQLComments (newer versions only; quote-, identifier- and dollar-quote-aware; a
#        SQLCommenter tag /*k='v',...*/ without a macro is kept)  — strip_comments => 1|0
#     b. sqleng.Interpolate: ReplaceAll "$__interval_ms" -> interval in ms, "$__interval" ->
#        gtime.FormatInterval, "$__unixEpochFrom()", "$__unixEpochTo()" -> epoch seconds
#     c. every match of \$([_a-zA-Z0-9]+)\(([^\)]*)\) is one macro call; its arguments are
#        split on ',' and trimmed of spaces.  $__timeGroup directly followed by ',' (looked up
#        at the first occurrence of the same call text) becomes $__timeGroupAlias (pre-5.3
#        compatibility).  An unknown macro makes the whole query fail.
#
# Times are integer nanoseconds since the epoch (Grafana's range has millisecond precision);
# the interval is integer milliseconds.  Usage:
#   my $sql = GrafanaMacros::expand($raw, from_ns => ..., to_ns => ..., interval_ms => 60000,
#       vars => { path => { multi => 1, includeAll => 1, value => ['/a', '/b'] },
#                 window => { value => '1m' } });
# Errors (unknown macro, bad interval, unsupported format) die with Grafana's message.
package GrafanaMacros;

use strict;
use warnings;
use POSIX qw(floor);
use Exporter 'import';

our @EXPORT_OK = qw(expand expand_frontend expand_backend strip_sql_comments
  rfc3339nano go_float_v parse_interval_ns format_interval);

# ---------------------------------------------------------------- time helpers

# days since 1970-01-01 -> (y, m, d), proleptic Gregorian (H. Hinnant's civil_from_days)
sub _civil_from_days
{
	my ($z) = @_;
	$z += 719468;
	my $era = floor($z / 146097);
	my $doe = $z - $era * 146097;
	my $yoe = floor(($doe - floor($doe / 1460) + floor($doe / 36524) - floor($doe / 146096)) / 365);
	my $y = $yoe + $era * 400;
	my $doy = $doe - (365 * $yoe + floor($yoe / 4) - floor($yoe / 100));
	my $mp = floor((5 * $doy + 2) / 153);
	my $d = $doy - floor((153 * $mp + 2) / 5) + 1;
	my $m = $mp < 10 ? $mp + 3 : $mp - 9;
	return ($m <= 2 ? $y + 1 : $y, $m, $d);
}

# Go's time.Format(time.RFC3339Nano) of a UTC instant: trailing zeros of the fraction dropped,
# no fraction at all when it is zero, "Z" for UTC
sub rfc3339nano
{
	my ($ns) = @_;
	my $sec = floor($ns / 1_000_000_000);
	my $frac = $ns - $sec * 1_000_000_000;
	my $days = floor($sec / 86400);
	my $sod = $sec - $days * 86400;
	my ($y, $m, $d) = _civil_from_days($days);
	my $s = sprintf('%04d-%02d-%02dT%02d:%02d:%02d', $y, $m, $d,
		int($sod / 3600), int(($sod % 3600) / 60), $sod % 60);
	if ($frac)
	{
		(my $f = sprintf('%09d', $frac)) =~ s/0+$//;
		$s .= ".$f";
	}
	return $s . 'Z';
}

# Go's time.Unix(): whole seconds, rounded toward minus infinity
sub _unix { return floor($_[0] / 1_000_000_000); }

# Go's fmt %v of a float64: strconv.FormatFloat(x, 'g', -1, 64), i.e. the shortest decimal
# that reads back as x; %e form (two-digit exponent at least) when its exponent is < -4 or
# >= 6 (shortest 'g' decides with precision 6), otherwise positional with only the digits
# needed (300, 0.02, 1.0368e+06)
sub go_float_v
{
	my ($x) = @_;
	return '0' if $x == 0;
	my $neg = $x < 0 ? '-' : '';
	$x = -$x if $neg;
	my ($digits, $exp);
	for my $p (1 .. 17)
	{
		my $e = sprintf('%.*e', $p - 1, $x);
		if ($e + 0 == $x)
		{
			$e =~ /^(\d)(?:\.(\d+))?e([-+]\d+)$/ or die "bad %e output $e";
			$digits = $1 . ($2 // '');
			$exp = $3 + 0;
			last;
		}
	}
	$digits =~ s/0+$// if length($digits) > 1;
	$digits = '0' if $digits eq '';
	my $nd = length $digits;
	if ($exp < -4 || $exp >= 6)
	{
		my $m = substr($digits, 0, 1) . ($nd > 1 ? '.' . substr($digits, 1) : '');
		my $ae = abs $exp;
		return sprintf('%s%se%s%s', $neg, $m, $exp < 0 ? '-' : '+', $ae < 10 ? "0$ae" : $ae);
	}
	my $dp = $exp + 1;
	my $decimals = $nd - $dp > 0 ? $nd - $dp : 0;
	return $neg . sprintf('%.*f', $decimals, $x);
}

# Go's time.ParseDuration, in nanoseconds
my %GO_UNIT = (
	ns => 1, us => 1_000, "\x{b5}s" => 1_000, "\x{3bc}s" => 1_000, ms => 1_000_000,
	s => 1_000_000_000, m => 60_000_000_000, h => 3_600_000_000_000);

sub _go_parse_duration
{
	my ($s) = @_;
	my $orig = $s;
	my $sign = 1;
	if ($s =~ s/^([-+])//) { $sign = -1 if $1 eq '-'; }
	return 0 if $s eq '0';
	die qq{time: invalid duration "$orig"\n} if $s eq '';
	my $total = 0;
	while ($s ne '')
	{
		$s =~ s/^(\d*)(?:\.(\d*))?// or die qq{time: invalid duration "$orig"\n};
		my ($int, $frac) = ($1, $2);
		die qq{time: invalid duration "$orig"\n}
		  if $int eq '' && (!defined $frac || $frac eq '');
		$s =~ s/^([^\d.]+)// or die qq{time: missing unit in duration "$orig"\n};
		my $unit = $GO_UNIT{$1} // die qq{time: unknown unit "$1" in duration "$orig"\n};
		$total += ($int eq '' ? 0 : $int) * $unit;
		$total += int(("0.$frac") * $unit) if defined $frac && $frac ne '';
	}
	return $sign * $total;
}

# gtime.ParseInterval, in nanoseconds.  d and w are 24 h and 7 d (every Grafana version agrees
# in UTC); M and y differ between versions (calendar-relative or fixed), so they are refused.
sub parse_interval_ns
{
	my ($s) = @_;
	if ($s =~ /^(\d+)([dwMy])$/)
	{
		return $1 * 86_400_000_000_000 if $2 eq 'd';
		return $1 * 7 * 86_400_000_000_000 if $2 eq 'w';
		die "interval unit $2 in \"$s\" is not supported by this expander\n";
	}
	return _go_parse_duration($s);
}

# gtime.FormatInterval (what $__interval becomes): the largest whole unit, truncated
sub format_interval
{
	my ($ms) = @_;
	my $year = 365 * 86_400_000;
	return int($ms / $year) . 'y' if $ms >= $year;
	return int($ms / 86_400_000) . 'd' if $ms >= 86_400_000;
	return int($ms / 3_600_000) . 'h' if $ms >= 3_600_000;
	return int($ms / 60_000) . 'm' if $ms >= 60_000;
	return int($ms / 1000) . 's' if $ms >= 1000;
	return int($ms) . 'ms' if $ms >= 1;
	return '1ms';
}

# ---------------------------------------------------------------- frontend stage

sub _quote_literal { my ($v) = @_; $v =~ s/'/''/g; return "'$v'"; }

# SqlDatasource.interpolateVariable
sub _interpolate_variable
{
	my ($value, $var, $single_string) = @_;
	if (ref $value eq 'ARRAY')
	{
		return join(',', map { _quote_literal($_) } @$value);
	}
	if ($var->{number})
	{
		return $value;
	}
	if ($var->{multi} || $var->{includeAll})
	{
		return _quote_literal($value) if $single_string eq 'quote';
	}
	(my $v = $value) =~ s/'/''/g;
	return $v;
}

# templateSrv.replace(sql, {}, interpolateVariable).  $vars->{name} = { value => string or
# [strings] (or '$__all'), multi, includeAll, allValue, options => [all option values] }
sub expand_frontend
{
	my ($sql, $vars, %opt) = @_;
	my $single_string = $opt{single_string} // 'quote';
	$sql =~ s{\$(\w+)|\[\[([\s\S]+?)(?::(\w+))?\]\]|\$\{(\w+)(?:\.([^:^\}]+))?(?::(\w+))?\}}{
		my ($match, $name, $fmt, $path) = ($&, $1 // $2 // $4, $3 // $6, $5);
		my $var = $vars->{$name};
		if (!$var) { $match }
		else
		{
			die "variable format '$fmt' is not supported by this expander\n" if defined $fmt;
			die "variable field path '$path' is not supported by this expander\n" if defined $path;
			my $value = $var->{value};
			my $is_all = (ref $value eq 'ARRAY' && @$value == 1 && $value->[0] eq '$__all')
			  || (!ref $value && $value eq '$__all');
			if ($is_all)
			{
				# a custom allValue is inserted unformatted; otherwise every option value
				if (defined $var->{allValue}) { $var->{allValue} }
				else { _interpolate_variable([ @{ $var->{options} // [] } ], $var, $single_string) }
			}
			else { _interpolate_variable($value, $var, $single_string) }
		}
	}ge;
	return $sql;
}

# ---------------------------------------------------------------- backend stage

my $SQLCOMMENTER = qr/^\/\*\s*[a-zA-Z0-9%_.-]+='[^'*]*'(?:\s*,\s*[a-zA-Z0-9%_.-]+='[^'*]*')*\s*\*\/$/;

# sqlmacro.ContainsMacro (its source is not in the stored copy of grafana/grafana; this is
# the behaviour its tests pin down: a '$__name' anywhere, complete or not)
sub _contains_macro { return $_[0] =~ /\$__[_a-zA-Z0-9]/; }

# macros.go stripSQLComments
sub strip_sql_comments
{
	my ($sql) = @_;
	my $out = '';
	my $n = length $sql;
	my $i = 0;
	while ($i < $n)
	{
		my $c = substr($sql, $i, 1);
		my $c2 = $i + 1 < $n ? substr($sql, $i + 1, 1) : '';
		if ($c eq '$')
		{
			if ($c2 eq '$')
			{
				my $end = index($sql, '$$', $i + 2);
				$end = $end < 0 ? $n : $end + 2;
				$out .= substr($sql, $i, $end - $i);
				$i = $end;
			}
			elsif ($c2 =~ /^[A-Za-z_]$/)
			{
				my $k = $i + 1;
				$k++ while $k < $n && substr($sql, $k, 1) =~ /^[A-Za-z0-9_]$/;
				if ($k < $n && substr($sql, $k, 1) eq '$')
				{
					my $tag = substr($sql, $i, $k + 1 - $i);
					my $end = index($sql, $tag, $k + 1);
					$end = $end < 0 ? $n : $end + length $tag;
					$out .= substr($sql, $i, $end - $i);
					$i = $end;
				}
				else { $out .= $c; $i++; }
			}
			else { $out .= $c; $i++; }
		}
		elsif ($c eq "'" || $c eq '"')
		{
			my $j = $i + 1;
			while ($j < $n)
			{
				if (substr($sql, $j, 1) eq $c)
				{
					$j++;
					if ($j < $n && substr($sql, $j, 1) eq $c) { $j++; next; }
					last;
				}
				$j++;
			}
			$out .= substr($sql, $i, $j - $i);
			$i = $j;
		}
		elsif ($c eq '/' && $c2 eq '*')
		{
			my $start = $i;
			my $end = index($sql, '*/', $i + 2);
			if ($end < 0)
			{
				# unclosed: Go's scan stops at the last byte, which is then copied
				$i = $start + 2 > $n - 1 ? $start + 2 : $n - 1;
				next;
			}
			$i = $end + 2;
			my $comment = substr($sql, $start, $i - $start);
			$out .= $comment if $comment =~ $SQLCOMMENTER && !_contains_macro($comment);
		}
		elsif ($c eq '-' && $c2 eq '-')
		{
			my $nl = index($sql, "\n", $i);
			$i = $nl < 0 ? $n : $nl;
		}
		else { $out .= $c; $i++; }
	}
	return $out;
}

sub _evaluate_macro
{
	my ($name, $args, $o) = @_;
	my ($from, $to) = ($o->{from_ns}, $o->{to_ns});
	my $need_col = sub { die "missing time column argument for macro $name\n" unless @$args; };
	if ($name eq '__time') { $need_col->(); return qq{$args->[0] AS "time"}; }
	if ($name eq '__timeEpoch') { $need_col->(); return qq{extract(epoch from $args->[0]) as "time"}; }
	if ($name eq '__timeFilter')
	{
		$need_col->();
		return sprintf("%s BETWEEN '%s' AND '%s'", $args->[0], rfc3339nano($from), rfc3339nano($to));
	}
	return sprintf("'%s'", rfc3339nano($from)) if $name eq '__timeFrom';
	return sprintf("'%s'", rfc3339nano($to)) if $name eq '__timeTo';
	if ($name eq '__timeGroup' || $name eq '__unixEpochGroup')
	{
		die "macro $name needs time column and interval and optional fill value\n" if @$args < 2;
		(my $iv = $args->[1]) =~ s/^'+|'+$//g;
		my $ns = eval { parse_interval_ns($iv) };
		die "error parsing interval $args->[1]\n" unless defined $ns;
		die "interval must be positive, got $args->[1]\n" if $ns <= 0;
		die "fill modes are not supported by this expander\n" if @$args == 3;
		my $secs = go_float_v($ns / 1e9);
		if ($name eq '__timeGroup')
		{
			return sprintf('time_bucket(\'%.3fs\',%s)', $ns / 1e9, $args->[0]) if $o->{timescaledb};
			return "floor(extract(epoch from $args->[0])/$secs)*$secs";
		}
		return "floor(($args->[0])/$secs)*$secs";
	}
	return _evaluate_macro('__timeGroup', $args, $o) . ' AS "time"' if $name eq '__timeGroupAlias';
	return _evaluate_macro('__unixEpochGroup', $args, $o) . ' AS "time"'
	  if $name eq '__unixEpochGroupAlias';
	if ($name eq '__unixEpochFilter')
	{
		$need_col->();
		return sprintf('%s >= %d AND %s <= %d', $args->[0], _unix($from), $args->[0], _unix($to));
	}
	if ($name eq '__unixEpochNanoFilter')
	{
		$need_col->();
		return sprintf('%s >= %d AND %s <= %d', $args->[0], $from, $args->[0], $to);
	}
	return sprintf('%d', $from) if $name eq '__unixEpochNanoFrom';
	return sprintf('%d', $to) if $name eq '__unixEpochNanoTo';
	die qq{unknown macro "$name"\n};
}

# postgresMacroEngine.Interpolate (with sqleng.Interpolate's global substitutions first)
sub expand_backend
{
	my ($sql, %o) = @_;
	$sql = strip_sql_comments($sql) if $o{strip_comments} // 1;
	my $ms = $o{interval_ms};
	if (defined $ms)
	{
		my $fi = format_interval($ms);
		$sql =~ s/\$__interval_ms/$ms/g;
		$sql =~ s/\$__interval/$fi/g;
	}
	my $from_s = _unix($o{from_ns});
	my $to_s = _unix($o{to_ns});
	$sql =~ s/\$__unixEpochFrom\(\)/$from_s/g;
	$sql =~ s/\$__unixEpochTo\(\)/$to_s/g;

	my $orig = $sql;
	$sql =~ s{\$([_a-zA-Z0-9]+)\(([^\)]*)\)}{
		my ($whole, $name, $argstr) = ($&, $1, $2);
		if ($name eq '__timeGroup')
		{
			my $at = index($orig, $whole);
			if ($at >= 0)
			{
				$at += length $whole;
				$name = '__timeGroupAlias' if $at < length($orig) && substr($orig, $at, 1) eq ',';
			}
		}
		my @args = map { my $a = $_; $a =~ s/^ +| +$//g; $a } split(/,/, $argstr, -1);
		@args = ('') unless @args;    # Go's strings.Split("", ",") is [""]
		_evaluate_macro($name, \@args, \%o);
	}ge;
	return $sql;
}

# both stages, in Grafana's order
sub expand
{
	my ($sql, %o) = @_;
	return expand_backend(expand_frontend($sql, $o{vars} // {}, %o), %o);
}

1;
