#!/usr/bin/env bash
# test/ensure_deps.sh — owns the Debian packages that build, test, demo and bench need.
# Idempotent: installs only what is missing (apt-get update once, only then), as root.
# Not root and something missing: fails with the apt-get command to run.
set -euo pipefail

# The PostgreSQL is the one test/common.sh selects (PGBIN, PG_CONFIG or PG_MAJOR; default:
# the major of Debian's apt).  When it is missing: Debian's packages of that major if apt has
# them, else test/pg_build.sh builds it from Debian's source package (17, 18, 19 on Debian 12).
# postgresql-M: server, initdb, pg_ctl, pgbench (contrib is built in; postgresql-contrib-M
#   is only a virtual package provided by postgresql-M).
# postgresql-client-M: psql, pg_regress and PostgreSQL::Test::Cluster (under PGXS).
# postgresql-server-dev-M: pg_config --pgxs, headers (pulls clang-14/llvm-14-dev for bitcode).
# libipc-run-perl: IPC::Run for the TAP tests; perl: prove, Test::More.
# make, gcc, libc6-dev: the C build (libc6-dev is only a Recommends of gcc).
# clang-14, libclang-rt-14-dev: the libFuzzer + sanitizer runtime for test/fuzz.
# libpq-dev, libyajl-dev: apicount-ship (ship/), the access log shipper (libpq; yajl for JSON).
# nginx-light, wrk, python3: the shipper's TAP tests (a real nginx, wrk's traffic, an
#   independent parse of the logs).
ROOT=${ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
# shellcheck source=test/common.sh
. "$ROOT/test/common.sh"
PACKAGES=(
    libipc-run-perl
    perl
    make
    gcc
    libc6-dev
    clang-14
    libclang-rt-14-dev
    libpq-dev
    libyajl-dev
    nginx-light
    wrk
    python3
)

installed() {
    [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" = "install ok installed" ]
}

command -v dpkg-query >/dev/null 2>&1 || { echo "ensure_deps: dpkg-query not found: this script supports Debian/Ubuntu only" >&2; exit 1; }

# PostgreSQL itself: Debian's packages when it is Debian's (or apt has that major)
build_pg=""
if [ ! -x "$PGBIN/pg_config" ]; then
    case $PGBIN in
        "/usr/lib/postgresql/$PG_MAJOR/bin")
            PACKAGES+=("postgresql-$PG_MAJOR" "postgresql-client-$PG_MAJOR" "postgresql-server-dev-$PG_MAJOR") ;;
        "$APICOUNT_PG_CACHE/$PG_MAJOR/bin") build_pg=1 ;;
        *) echo "ensure_deps: $PGBIN/pg_config not found" >&2; exit 1 ;;
    esac
fi

missing=()
for p in "${PACKAGES[@]}"; do
    installed "$p" || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "ensure_deps: missing Debian packages: ${missing[*]}" >&2
        echo "ensure_deps: run as root, or: sudo apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
    echo "ensure_deps: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >&2
    apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null >&2
    for p in "${missing[@]}"; do
        installed "$p" || { echo "ensure_deps: $p still not installed" >&2; exit 1; }
    done
fi

if [ -n "$build_pg" ]; then
    echo "ensure_deps: PostgreSQL $PG_MAJOR is not in $PGBIN: building it (test/pg_build.sh $PG_MAJOR)" >&2
    bash "$ROOT/test/pg_build.sh" "$PG_MAJOR" >/dev/null || { echo "ensure_deps: test/pg_build.sh $PG_MAJOR failed" >&2; exit 1; }
fi
# The server runs as 'postgres': Debian's packages create the user, a source build does not.
if ! getent passwd postgres >/dev/null; then
    if [ "$(id -u)" -eq 0 ] && [ -n "$build_pg" ]; then
        useradd --system --user-group --home-dir /var/lib/postgresql --shell /bin/bash postgres
    else
        echo "ensure_deps: the 'postgres' user does not exist" >&2; exit 1
    fi
fi
[ -x "$PGBIN/pg_config" ] || { echo "ensure_deps: $PGBIN/pg_config missing" >&2; exit 1; }
perl -MIPC::Run -e 1 2>/dev/null || { echo "ensure_deps: perl module IPC::Run not loadable" >&2; exit 1; }
exit 0
