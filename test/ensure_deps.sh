#!/usr/bin/env bash
# test/ensure_deps.sh — owns the Debian packages that build, test, demo and bench need.
# Idempotent: installs only what is missing (apt-get update once, only then), as root.
# Not root and something missing: fails with the apt-get command to run.
set -euo pipefail

# postgresql-15: server, initdb, pg_ctl, pgbench (contrib is built in; postgresql-contrib-15
#   is only a virtual package provided by postgresql-15).
# postgresql-client-15: psql, pg_regress and PostgreSQL::Test::Cluster (under PGXS).
# postgresql-server-dev-15: pg_config --pgxs, headers (pulls clang-14/llvm-14-dev for bitcode).
# libipc-run-perl: IPC::Run for the TAP tests; perl: prove, Test::More.
# make, gcc, libc6-dev: the C build (libc6-dev is only a Recommends of gcc).
# clang-14, libclang-rt-14-dev: the libFuzzer + sanitizer runtime for test/fuzz.
# libpq-dev, libyajl-dev: apicount-ship (ship/), the access log shipper (libpq; yajl for JSON).
# nginx-light, wrk, python3: the shipper's TAP tests (a real nginx, wrk's traffic, an
#   independent parse of the logs).
PACKAGES=(
    postgresql-15
    postgresql-client-15
    postgresql-server-dev-15
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

getent passwd postgres >/dev/null || { echo "ensure_deps: the 'postgres' user does not exist" >&2; exit 1; }
[ -x /usr/lib/postgresql/15/bin/pg_config ] || { echo "ensure_deps: /usr/lib/postgresql/15/bin/pg_config missing" >&2; exit 1; }
perl -MIPC::Run -e 1 2>/dev/null || { echo "ensure_deps: perl module IPC::Run not loadable" >&2; exit 1; }
exit 0
