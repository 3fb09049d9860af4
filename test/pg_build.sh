#!/usr/bin/env bash
# test/pg_build.sh MAJOR — build PostgreSQL MAJOR (17, 18, 19, ...) from Debian's source
# package into a cache directory that later runs reuse; prints the path of its pg_config.
#
#   APICOUNT_PG_CACHE   cache root (default /var/cache/apicount/pg); MAJOR goes to
#                       $APICOUNT_PG_CACHE/MAJOR (bin/, lib/, share/, include/, and
#                       lib/pgxs/src/test/perl for PostgreSQL::Test::Cluster)
#   APICOUNT_PG_SUITES  Debian suites to look in (default "trixie sid experimental")
#   APICOUNT_PG_JOBS    make -j (default: number of cores)
#   APICOUNT_PG_MIRROR  Debian mirror (default http://deb.debian.org/debian)
#
# Debian 12's apt carries only PostgreSQL 15.  Debian's archive has the source packages
# postgresql-17 (trixie), postgresql-18 (sid) and postgresql-19 (experimental).  The script
# reads them through a PRIVATE sources list (apt-get -o Dir::Etc::SourceList=...): the system's
# apt configuration is never changed.  Build dependencies come from the system's own apt
# (bookworm).  The upstream tarball inside the source package is built (not Debian's patches),
# with --enable-tap-tests; a build that completed leaves a stamp file, and a later run with
# the same source version only prints the path.  Needs root for apt-get install when build
# dependencies are missing.
set -euo pipefail

HEADERS="" DEPS_ONLY=""
case ${1:-} in
    --headers) HEADERS=1; shift ;;
    --deps) DEPS_ONLY=1; shift ;;  # only install the build dependencies (before parallel builds)
esac
MAJOR=${1:-}
case $MAJOR in
    1[5-9] | [2-9][0-9]) ;;
    *) [ -n "$DEPS_ONLY" ] || { echo "usage: $0 [--headers | --deps] MAJOR   (e.g. 18)" >&2; exit 2; } ;;
esac
CACHE=${APICOUNT_PG_CACHE:-/var/cache/apicount/pg}
SUITES=${APICOUNT_PG_SUITES:-trixie sid experimental}
JOBS=${APICOUNT_PG_JOBS:-$(nproc 2>/dev/null || echo 2)}
PREFIX=$CACHE/$MAJOR
if [ -n "$HEADERS" ]; then
    # enough to compile an extension (what postgresql-server-dev ships): headers, pg_config
    # and PGXS, in $CACHE/MAJOR-headers; a few minutes instead of a full build.  A full build
    # of MAJOR serves as well: use it when it is there.
    if [ -x "$PREFIX/bin/pg_config" ] && [ -f "$PREFIX/.apicount-build" ]; then
        printf '%s\n' "$PREFIX/bin/pg_config"
        exit 0
    fi
    PREFIX=$CACHE/$MAJOR-headers
fi
APT=$CACHE/apt
MIRROR=${APICOUNT_PG_MIRROR:-http://deb.debian.org/debian}

log() { printf '== pg_build %s: %s\n' "$MAJOR" "$*" >&2; }
die() { printf 'pg_build %s: ERROR: %s\n' "$MAJOR" "$*" >&2; exit 1; }

# Build dependencies (bookworm): bison and flex are needed from git-less tarballs of 17 on
# (the generated parsers are no longer shipped); ICU is on by default from 16.
DEPS=(gcc make bison flex perl libipc-run-perl libreadline-dev zlib1g-dev libicu-dev pkg-config
    xz-utils bzip2 ca-certificates curl)

installed() {
    [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" = "install ok installed" ]
}

missing=()
for p in "${DEPS[@]}"; do installed "$p" || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
    [ "$(id -u)" -eq 0 ] || die "missing packages: ${missing[*]} (run as root, or apt-get install them)"
    log "installing build dependencies: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >&2
    apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null >&2
fi

[ -z "$DEPS_ONLY" ] || exit 0

# ---- private apt configuration: deb-src lines only, state under $APT ----------------------
mkdir -p "$APT/lists/partial" "$APT/cache/archives/partial" "$APT/src"
: >"$APT/sources.list"
for s in $SUITES; do
    printf 'deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] %s %s main\n' "$MIRROR" "$s" >>"$APT/sources.list"
done
APTOPT=(-o "Dir::Etc::SourceList=$APT/sources.list" -o Dir::Etc::SourceParts=/dev/null
    -o "Dir::State::Lists=$APT/lists" -o "Dir::Cache=$APT/cache" -o Debug::NoLocking=1
    -o APT::Sandbox::User=root)

# Refresh the index at most once an hour.
# (apt gives the index files the server's times, so our own stamp tells when we updated)
if [ -z "$(find "$APT/updated" -mmin -60 2>/dev/null)" ]; then
    log "apt-get update (private sources list $APT/sources.list)"
    apt-get "${APTOPT[@]}" update -q >&2 || die "apt-get update with the private sources list failed"
    touch "$APT/updated"
fi

# Newest version of postgresql-MAJOR across the suites.
version=$(apt-cache "${APTOPT[@]}" showsrc "postgresql-$MAJOR" 2>/dev/null |
    awk '/^Version:/ { print $2 }' | sort -V | tail -n 1)
[ -n "$version" ] || die "no source package postgresql-$MAJOR in: $SUITES"

STAMP=$PREFIX/.apicount-build
# the stamp holds the version built and the version the index named then (they differ when the
# pool lagged): a build for the index's current version is reused
indexed=$version
if [ -f "$STAMP" ] && grep -qxF "$version" "$STAMP" && [ -x "$PREFIX/bin/pg_config" ]; then
    log "cached: $(head -n 1 "$STAMP") in $PREFIX"
    # builds cached before auto_explain was part of them (test 033 reads plans with it): build
    # it alone from the kept tarball, with PGXS; without it 033 skips its plan checks
    if [ -z "$HEADERS" ] && [ ! -f "$("$PREFIX/bin/pg_config" --pkglibdir)/auto_explain.so" ]; then
        tarball=$(ls "$APT/src/$MAJOR"/postgresql-"$MAJOR"_*.orig.tar.* 2>/dev/null | head -n 1)
        ae=$(mktemp -d "${TMPDIR:-/tmp}/apicount-ae-XXXXXX")
        if [ -n "$tarball" ] && tar -xf "$tarball" -C "$ae" --wildcards '*/contrib/auto_explain/*' 2>/dev/null &&
            make -s -C "$ae"/*/contrib/auto_explain USE_PGXS=1 PG_CONFIG="$PREFIX/bin/pg_config" install \
                >"$ae/build.log" 2>&1; then
            chmod -R a+rX "$PREFIX"
            log "auto_explain added to the cached build"
        else
            log "auto_explain not added (no tarball in $APT/src/$MAJOR, or its build failed)"
        fi
        rm -rf "$ae"
    fi
    printf '%s\n' "$PREFIX/bin/pg_config"
    exit 0
fi

# ---- fetch and unpack the upstream tarball -------------------------------------------------
SRCDIR=$APT/src/$MAJOR${HEADERS:+-headers}
rm -rf "$SRCDIR"
mkdir -p "$SRCDIR"
# pool_fetch VERSION: the source package VERSION straight from the pool directory that the
# index names, each file checked against the SHA-256 sums of its .dsc.  For mirrors whose pool
# lags their index (seen here: trixie's index named 17.12 while the pool held 17.11).
pool_fetch() {
    local v=$1 dir dsc sum name
    dir=$(apt-cache "${APTOPT[@]}" showsrc "postgresql-$MAJOR" 2>/dev/null | awk '/^Directory:/ { print $2; exit }')
    [ -n "$dir" ] || return 1
    dsc=postgresql-${MAJOR}_${v#*:}.dsc
    curl -fsS -o "$SRCDIR/$dsc" "$MIRROR/$dir/${dsc//+/%2b}" 2>/dev/null || return 1
    while read -r sum _ name; do
        log "fetching $name from $MIRROR/$dir"
        curl -fsS -o "$SRCDIR/$name" "$MIRROR/$dir/${name//+/%2b}" || return 1
        [ "$(sha256sum "$SRCDIR/$name" | cut -d' ' -f1)" = "$sum" ] ||
            { log "$name: SHA-256 differs from its .dsc"; return 1; }
    done < <(awk '/^Checksums-Sha256:/ { on = 1; next } /^[^ ]/ { on = 0 } on && NF == 3' "$SRCDIR/$dsc")
}

log "apt-get source --download-only postgresql-$MAJOR=$version"
if ! (cd "$SRCDIR" && apt-get "${APTOPT[@]}" source --download-only -q "postgresql-$MAJOR=$version" >&2); then
    # the mirror's pool may lag its index: try the three point releases before it
    upstream=${version%%-*} debrev=${version#"$upstream"}
    minor=${upstream##*.}
    got=""
    if [ "$minor" != "$upstream" ] && [ "$minor" -ge 1 ] 2>/dev/null; then
        for ((m = minor - 1; m >= 0 && m >= minor - 3; m--)); do
            v=${upstream%.*}.$m$debrev
            log "apt-get source failed; trying $v from the pool"
            rm -f "$SRCDIR"/*
            if pool_fetch "$v"; then got=$v; break; fi
        done
    fi
    [ -n "$got" ] || die "apt-get source failed (postgresql-$MAJOR=$version), and no earlier point release is in the pool"
    version=$got
fi
orig=$(find "$SRCDIR" -maxdepth 1 -name "postgresql-${MAJOR}_*.orig.tar.*" | head -n 1)
[ -n "$orig" ] || die "no .orig tarball among $(ls "$SRCDIR")"
tar -C "$SRCDIR" -xf "$orig"
tree=$(find "$SRCDIR" -mindepth 1 -maxdepth 1 -type d -name 'postgresql-*' | head -n 1)
[ -n "$tree" ] && [ -x "$tree/configure" ] || die "unexpected tarball layout in $orig"

# ---- build ---------------------------------------------------------------------------------
start=$(date +%s)
rm -rf "$PREFIX"
log "configure --prefix=$PREFIX --enable-tap-tests ($tree)"
(cd "$tree" && ./configure --prefix="$PREFIX" --enable-tap-tests \
    --with-icu --with-readline --with-zlib >"$SRCDIR/configure.log" 2>&1) ||
    { tail -n 30 "$SRCDIR/configure.log" >&2; die "configure failed (log: $SRCDIR/configure.log)"; }
if [ -n "$HEADERS" ]; then
    log "headers, pg_config and PGXS only (log: $SRCDIR/build.log)"
    (cd "$tree" && make -s -C src/backend generated-headers >"$SRCDIR/build.log" 2>&1 &&
        make -s -j"$JOBS" -C src/bin/pg_config >>"$SRCDIR/build.log" 2>&1 &&
        make -s -C src install-local >>"$SRCDIR/build.log" 2>&1 &&
        make -s -C src/include install >>"$SRCDIR/build.log" 2>&1 &&
        make -s -C src/makefiles install >>"$SRCDIR/build.log" 2>&1 &&
        make -s -C config install >>"$SRCDIR/build.log" 2>&1 &&
        make -s -C src/bin/pg_config install >>"$SRCDIR/build.log" 2>&1) ||
        { tail -n 30 "$SRCDIR/build.log" >&2; die "headers install failed (log: $SRCDIR/build.log)"; }
    [ -f "$("$PREFIX/bin/pg_config" --pgxs)" ] || die "PGXS not installed"
    chmod -R a+rX "$PREFIX"
    printf '%s\n' "$version" "$indexed" >"$STAMP"
    log "headers of $version installed in $(($(date +%s) - start)) s"
    rm -rf "$tree"
    printf '%s\n' "$PREFIX/bin/pg_config"
    exit 0
fi
log "make -j$JOBS (log: $SRCDIR/build.log)"
(cd "$tree" && make -j"$JOBS" -s >"$SRCDIR/build.log" 2>&1 &&
    make -s install >>"$SRCDIR/build.log" 2>&1 &&
    make -s -C src/test/perl install >>"$SRCDIR/build.log" 2>&1 &&
    make -s -C contrib/auto_explain install >>"$SRCDIR/build.log" 2>&1) ||
    { tail -n 30 "$SRCDIR/build.log" >&2; die "build failed (log: $SRCDIR/build.log)"; }
# pg_regress and the TAP modules live under PGXS (lib/postgresql/pgxs: configure appends
# /postgresql to a prefix that does not name postgres)
pgxs=$(dirname "$(dirname "$(dirname "$("$PREFIX/bin/pg_config" --pgxs)")")")
[ -x "$pgxs/src/test/regress/pg_regress" ] || die "pg_regress not installed in $pgxs"
[ -f "$pgxs/src/test/perl/PostgreSQL/Test/Cluster.pm" ] || die "TAP modules not installed in $pgxs"
chmod -R a+rX "$PREFIX"
printf '%s\n' "$version" "$indexed" >"$STAMP"
log "built $version in $(($(date +%s) - start)) s"
rm -rf "$tree"
printf '%s\n' "$PREFIX/bin/pg_config"
