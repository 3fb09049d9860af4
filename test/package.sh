#!/usr/bin/env bash
# test/package.sh — 'make test-package': builds the Debian package (debian/, pg_buildext) with
# dpkg-buildpackage -us -uc -b from a copy of the checkout, installs the .deb, and runs a smoke
# test in a clean throwaway cluster: CREATE EXTENSION, hits by INSERT, COPY and hit(), a flush,
# top_apis.  Ends with 'N passed, N failed' like make test.
#
# As root the .deb is installed with dpkg -i (and removed afterwards).  With
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
contents=$(dpkg-deb -c "${debs[0]}")
for f in "lib/postgresql/$major/lib/apicount.so" "share/postgresql/$major/extension/apicount.control" \
    "share/postgresql/$major/extension/apicount--0.1.sql" "share/postgresql/$major/extension/apicount--0.1--0.2.sql"; do
    check "the package holds /usr/$f" grep -q "\./usr/$f\$" <<<"$contents"
done

# ---- install ------------------------------------------------------------------------------
if [ -n "${APICOUNT_PKG_ROOT:-}" ]; then
    dpkg-deb -x "${debs[0]}" "$W/unpacked"
    cp -a "$W/unpacked/usr/lib/postgresql/$major/lib/." "$APICOUNT_PKG_ROOT/lib/postgresql/$major/lib/"
    cp -a "$W/unpacked/usr/share/postgresql/$major/extension/." "$APICOUNT_PKG_ROOT/share/postgresql/$major/extension/"
    PGBIN=$APICOUNT_PKG_ROOT/lib/postgresql/$major/bin
    check "unpacked onto $APICOUNT_PKG_ROOT" test -f "$APICOUNT_PKG_ROOT/lib/postgresql/$major/lib/apicount.so"
else
    is_root || die "dpkg -i needs root (or set APICOUNT_PKG_ROOT)"
    check "dpkg -i ${debs[0]##*/}" dpkg -i "${debs[0]}"
    trap 'stop_cluster "$W/c" 2>/dev/null || true; dpkg -r "postgresql-$major-apicount" >/dev/null 2>&1 || true' EXIT
    PGBIN=/usr/lib/postgresql/$major/bin
fi
PATH="$PGBIN:$PATH"

# ---- smoke test in a clean cluster --------------------------------------------------------
port=$(free_port)
start_cluster "$W/c" "$port" "apicount.flush_interval = '1s'"
psql_c() { as_pg psql -X -q -At -h "$W/c" -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 "$@"; }
check "CREATE EXTENSION apicount (from the package)" psql_c -c "CREATE EXTENSION apicount"
check "version 0.2" test "$(psql_c -c "SELECT extversion FROM pg_extension WHERE extname = 'apicount'")" = "0.2"
check "INSERT, hit() and COPY record hits" psql_c \
    -c "INSERT INTO apicount.requests (method, path, status) VALUES ('GET', '/pkg/a', 200), ('GET', '/pkg/a', 500)" \
    -c "SELECT apicount.hit('/pkg/a', 'GET', NULL, NULL, 200, 1.0)" \
    -c "COPY apicount.requests (method, path, status) FROM PROGRAM 'printf \"GET,/pkg/b,200\\n\"' (FORMAT csv)"
check "flush()" psql_c -c "SELECT apicount.flush()"
out=$(psql_c -c "SELECT path || ':' || calls FROM apicount.top_apis(10, interval '1 hour') WHERE path LIKE '/pkg/%' ORDER BY path" || true)
check "top_apis: /pkg/a 3 calls, /pkg/b 1 (got: ${out//$'\n'/ })" test "$out" = $'/pkg/a:3\n/pkg/b:1'
stop_cluster "$W/c"
finish && rm -rf "$W"
