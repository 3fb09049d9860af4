#!/usr/bin/env bash
# test/package.sh — 'make test-package': builds the Debian package (debian/, pg_buildext) with
# dpkg-buildpackage -us -uc -b from a copy of the checkout, installs the .deb, and runs a smoke
# test in a clean throwaway cluster: CREATE EXTENSION, hits by INSERT, COPY and hit(), a flush,
# top_apis, and apicount-ship (from the package) shipping one access log line.  Ends with
# 'N passed, N failed' like make test.
#
# As root the .deb is installed into the system with dpkg -i, and purged afterwards; files
# it overwrote that no package owned (a 'make install') are saved first and put back, so
# the system is left as it was.  It refuses to run when the package is already installed.
# With
# APICOUNT_PKG_ROOT=DIR the package's files are unpacked onto DIR instead (a relocated copy
# of the PostgreSQL installation, whose bin/pg_config is then used), so that a machine whose
# PostgreSQL must not change can still test the package's contents.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=test/common.sh
. "$ROOT/test/common.sh"

n=0 failed=0
check() {  # check NAME CMD...
    n=$((n + 1))
    if "${@:2}"; then echo "ok $n - $1"; else echo "not ok $n - $1"; failed=$((failed + 1)); fi
}
finish() {
    echo "1..$n"
    echo "$((n - failed)) passed, $failed failed"
    [ "$failed" -eq 0 ]
}

for p in dpkg-dev debhelper postgresql-server-dev-all; do
    [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)" = "install ok installed" ] && continue
    is_root || die "missing $p (apt-get install dpkg-dev debhelper postgresql-server-dev-all)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        dpkg-dev debhelper postgresql-server-dev-all </dev/null >&2
    break
done

W=$(make_workdir)
trap 'stop_cluster "$W/c" 2>/dev/null || true' EXIT
log "work directory $W"

# ---- build --------------------------------------------------------------------------------
mkdir -p "$W/src/apicount"
(cd "$ROOT" && tar cf - --exclude='*.o' --exclude='*.so' --exclude='*.bc' --exclude=.git \
    --exclude='build-*' --exclude='bench/work' --exclude='test/fuzz/build' .) |
    tar xf - -C "$W/src/apicount"
if (cd "$W/src/apicount" && dpkg-buildpackage -us -uc -b) >"$W/build.log" 2>&1; then
    check "dpkg-buildpackage -us -uc -b" true
else
    tail -n 40 "$W/build.log"
    check "dpkg-buildpackage -us -uc -b" false
    finish; exit 1
fi
debs=("$W"/src/postgresql-*-apicount_*.deb)
check "built ${debs[*]##*/}" test -f "${debs[0]}"
major=$(dpkg-deb -f "${debs[0]}" Package | sed -n 's/^postgresql-\([0-9]*\)-apicount$/\1/p')
check "the package is postgresql-$major-apicount, for a major of debian/pgversions" \
    grep -qx "$major" "$ROOT/debian/pgversions"
version=$(sed -n "s/^[[:space:]]*default_version[[:space:]]*=[[:space:]]*'\(.*\)'/\1/p" "$ROOT/apicount.control")
contents=$(dpkg-deb -c "${debs[0]}")
files=("lib/postgresql/$major/lib/apicount.so" "lib/postgresql/$major/bin/apicount-ship"
    "share/postgresql/$major/extension/apicount.control")
for f in "$ROOT"/sql/apicount--*.sql; do files+=("share/postgresql/$major/extension/${f##*/}"); done
for f in "${files[@]}"; do
    check "the package holds /usr/$f" grep -q "\./usr/$f\$" <<<"$contents"
done
depends=$(dpkg-deb -f "${debs[0]}" Depends)
check "it depends on postgresql-$major, libpq5 and libyajl2 (Depends: $depends)" \
    bash -c '[[ "$1" == *"postgresql-$2"* && "$1" == *libpq5* && "$1" == *libyajl2* ]]' _ "$depends" "$major"

# ---- install ------------------------------------------------------------------------------
if [ -n "${APICOUNT_PKG_ROOT:-}" ]; then
    dpkg-deb -x "${debs[0]}" "$W/unpacked"
    cp -a "$W/unpacked/usr/lib/postgresql/$major/lib/." "$APICOUNT_PKG_ROOT/lib/postgresql/$major/lib/"
    cp -a "$W/unpacked/usr/share/postgresql/$major/extension/." "$APICOUNT_PKG_ROOT/share/postgresql/$major/extension/"
    PGBIN=$APICOUNT_PKG_ROOT/lib/postgresql/$major/bin
    check "unpacked onto $APICOUNT_PKG_ROOT" test -f "$APICOUNT_PKG_ROOT/lib/postgresql/$major/lib/apicount.so"
else
    is_root || die "dpkg -i needs root (or set APICOUNT_PKG_ROOT)"
    pkg=postgresql-$major-apicount
    [ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)" = "install ok installed" ] &&
        die "$pkg is installed already: remove it first (this test installs and purges it)"
    # files of the package already on the system and owned by no package (make install):
    # saved, and put back after the purge
    mkdir -p "$W/saved"
    while read -r f; do
        f=${f#./}
        if [ -f "/$f" ] && ! dpkg -S "/$f" >/dev/null 2>&1; then (cd / && cp -a --parents "$f" "$W/saved/"); fi
    done < <(dpkg-deb -c "${debs[0]}" | awk '$1 ~ /^-/ {print $6}')
    restore() {
        dpkg --purge "$pkg" >/dev/null 2>&1 || true
        if [ -n "$(ls -A "$W/saved")" ]; then cp -a "$W/saved/." /; fi
    }
    trap 'stop_cluster "$W/c" 2>/dev/null || true; restore' EXIT
    check "dpkg -i ${debs[0]##*/}" dpkg -i "${debs[0]}"
    check "dpkg says $pkg is installed" test "$(dpkg-query -W -f='${Status}' "$pkg")" = "install ok installed"
    PGBIN=/usr/lib/postgresql/$major/bin
fi
PATH="$PGBIN:$PATH"

# ---- smoke test in a clean cluster --------------------------------------------------------
port=$(free_port)
start_cluster "$W/c" "$port" "apicount.flush_interval = '1s'"
psql_c() { as_pg psql -X -q -At -h "$W/c" -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 "$@"; }
check "CREATE EXTENSION apicount (from the package)" psql_c -c "CREATE EXTENSION apicount"
check "version $version (the control file's default)" \
    test "$(psql_c -c "SELECT extversion FROM pg_extension WHERE extname = 'apicount'")" = "$version"
check "INSERT, hit() and COPY record hits" psql_c \
    -c "INSERT INTO apicount.requests (method, path, status) VALUES ('GET', '/pkg/a', 200), ('GET', '/pkg/a', 500)" \
    -c "SELECT apicount.hit('/pkg/a', 'GET', NULL, NULL, 200, 1.0)" \
    -c "COPY apicount.requests (method, path, status) FROM PROGRAM 'printf \"GET,/pkg/b,200\\n\"' (FORMAT csv)"
check "flush()" psql_c -o /dev/null -c "SELECT apicount.flush()"
out=$(psql_c -c "SELECT path || ':' || calls FROM apicount.top_apis(10, interval '1 hour') WHERE path LIKE '/pkg/%' ORDER BY path" || true)
check "top_apis: /pkg/a 3 calls, /pkg/b 1 (got: ${out//$'\n'/ })" test "$out" = $'/pkg/a:3\n/pkg/b:1'

# ---- apicount-ship, from the package ------------------------------------------------------
ship=$PGBIN/apicount-ship
check "apicount-ship is installed in $PGBIN" test -x "$ship"
check "apicount-ship --help" bash -c '"$1" --help | grep -q "^Usage: apicount-ship"' _ "$ship"
printf '192.0.2.7 - alice [%s] "GET /pkg/shipped?q=1 HTTP/1.1" 200 512 "-" "curl/8"\n' \
    "$(LC_ALL=C date -u '+%d/%b/%Y:%H:%M:%S +0000')" >"$W/access.log"
check "apicount-ship ships a one-line access log" \
    "$ship" -d "host=$W/c port=$port user=postgres dbname=postgres" --format=combined -s pkg "$W/access.log"
check "flush()" psql_c -o /dev/null -c "SELECT apicount.flush()"
out=$(psql_c -c "SELECT (SELECT sum(calls) FROM apicount.api_minute WHERE path = '/pkg/shipped') || ' ' ||
    (SELECT lines FROM apicount.sources WHERE name = 'pkg')" || true)
check "the shipped line is counted, and its source position is kept (got: $out)" test "$out" = "1 1"
stop_cluster "$W/c"
if [ -z "${APICOUNT_PKG_ROOT:-}" ]; then
    restore
    trap 'stop_cluster "$W/c" 2>/dev/null || true' EXIT
    check "dpkg --purge $pkg: the package is gone" \
        bash -c '! dpkg-query -W -f="\${Status}" "$1" 2>/dev/null | grep -q "ok installed"' _ "$pkg"
    check "the files it replaced are back (${#files[@]} checked)" bash -c '
        for f in "${@:2}"; do
            [ ! -e "$1/saved/usr/$f" ] || cmp -s "$1/saved/usr/$f" "/usr/$f" || exit 1
        done' _ "$W" "${files[@]}"
fi
finish && rm -rf "$W"
