#!/usr/bin/env bash
# bench/ab.sh — an interleaved comparison of two builds of apicount on this machine:
#   bash bench/ab.sh [OLD_REV] [ROUNDS]      (OLD_REV: a git revision, default HEAD~1; ROUNDS 3)
# Owns: building OLD_REV (in a temporary git worktree) and the working tree, installing each into
# its own relocated copy of the PostgreSQL installation (so the system's install is left alone),
# one throwaway server per build, and alternating the same workloads on them: pgbench of
# bench/workloads/ac_insert.sql, ac_hit.sql, ac_flood.sql and ac_fits.sql (8 clients, a fixed
# number of transactions), a COPY of 1,000,000 rows with 1,000,000 distinct callers ('copy',
# bench/workloads/gen_copy.sql) and one whose 40,000 keys fit in memory ('copyfit': 200 IPs,
# 50 paths, 20 seconds). 'fits' and 'copyfit' keep every key exact in any build, so they compare
# the same work; the others fill the caller tier. 'flush' (not in the default list) writes
# 90,000 caller entries in one apicount.flush() and reports the worker's CPU per entry. Each run starts a
# fresh server (empty shared memory). It prints, per run, tps or rows/s, and the backends' CPU
# time per transaction or row (the postmaster's reaped children, /proc/PID/stat), which moves
# less than tps on a shared machine; then the medians per build and their ratio (new / old).
# Run as root (the servers run as 'postgres'). Knobs: AB_TX (transactions per client, 20000),
# AB_WORKLOADS ("fits copyfit insert hit flood copy"), AB_KEEP=1 keeps the work directory.
# AB_MODE=instr counts instructions per row instead (callgrind, bench/instr.sh): no noise.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=test/common.sh
. "$ROOT/test/common.sh"

OLD_REV=${1:-HEAD~1}
ROUNDS=${2:-3}
TX=${AB_TX:-20000}
WORKLOADS=${AB_WORKLOADS:-fits copyfit insert hit flood copy}
bash "$ROOT/test/ensure_deps.sh" || die "dependencies missing (test/ensure_deps.sh)"
is_root || die "bench/ab.sh runs as root (it starts its servers as $PG_USER)"

PGC=$PGBIN/pg_config
BINDIR=$("$PGC" --bindir)
PKGLIB=$("$PGC" --pkglibdir)
SHARE=$("$PGC" --sharedir)
W=$(make_workdir)
cleanup() {
    local x
    for x in old new; do
        [ -f "$W/$x/data/postmaster.pid" ] &&
            as_pg "$W/$x$BINDIR/pg_ctl" -D "$W/$x/data" -m immediate -w stop >/dev/null 2>&1
    done
    git -C "$ROOT" worktree remove --force "$W/src-old" >/dev/null 2>&1 || true
    [ -z "${AB_KEEP:-}" ] && rm -rf "$W"
    return 0
}
trap cleanup EXIT

# a relocated copy of the installation under DIR: the same tree (bindir, pkglibdir, sharedir)
# below DIR, since PostgreSQL finds its lib and share directories relative to its binaries
make_install_copy() {  # DIR
    local d
    for d in "$BINDIR" "$PKGLIB" "$SHARE"; do
        mkdir -p "$1$(dirname "$d")"
        cp -a "$d" "$1$d"
    done
}

build_into() {  # SRC DIR
    make -s -C "$1" PG_CONFIG="$PGC" >/dev/null
    install -m 755 "$1/apicount.so" "$2$PKGLIB/apicount.so"
    install -m 644 "$1/apicount.control" "$1"/sql/apicount--*.sql "$2$SHARE/extension/"
}

log "building $OLD_REV and the working tree"
git -C "$ROOT" worktree add --detach "$W/src-old" "$OLD_REV" >/dev/null 2>&1 ||
    die "cannot check out $OLD_REV"
for x in old new; do make_install_copy "$W/$x"; done
build_into "$W/src-old" "$W/old"
build_into "$ROOT" "$W/new"
chown -R "$PG_USER:$PG_USER" "$W"
OLD_DESC="$(git -C "$ROOT" rev-parse --short "$OLD_REV")"
NEW_DESC=$(git -C "$ROOT" rev-parse --short HEAD)
if [ -n "$(git -C "$ROOT" status --porcelain -- src sql)" ]; then NEW_DESC+=" + uncommitted changes"; fi

PORT_old=$(free_port)
PORT_new=$(free_port)
port_of() { if [ "$1" = old ]; then echo "$PORT_old"; else echo "$PORT_new"; fi; }
pgbin() { echo "$W/$1$BINDIR"; }
for x in old new; do
    as_pg "$(pgbin $x)/initdb" -D "$W/$x/data" -A trust >/dev/null
    cat >>"$W/$x/data/postgresql.conf" <<CONF
shared_preload_libraries = 'apicount'
port = $(port_of $x)
unix_socket_directories = '$W/$x'
listen_addresses = ''
shared_buffers = 1GB
max_connections = 50
max_wal_size = 8GB
timezone = 'UTC'
CONF
done
srv() {  # start|stop BUILD
    if [ "$1" = start ]; then
        as_pg "$(pgbin "$2")/pg_ctl" -D "$W/$2/data" -l "$W/$2/server.log" -w start >/dev/null
    else
        as_pg "$(pgbin "$2")/pg_ctl" -D "$W/$2/data" -m fast -w stop >/dev/null
    fi
}
psql_on() { local x=$1; shift; as_pg "$(pgbin "$x")/psql" -qXAt -h "$W/$x" -p "$(port_of "$x")" -d postgres "$@"; }
children_ticks() { awk '{ print $16 + $17 }' "/proc/$(head -n 1 "$W/$1/data/postmaster.pid")/stat"; }

for x in old new; do srv start $x; psql_on $x -c 'CREATE EXTENSION apicount'; srv stop $x; done
if [ "${AB_MODE:-}" = instr ]; then
    # shellcheck source=bench/instr.sh
    . "$ROOT/bench/instr.sh"
    exit 0
fi
CSV=$W/copy.csv
CSVFIT=$W/copyfit.csv
if [[ " $WORKLOADS " == *" copy"* ]]; then
    cp "$ROOT/bench/workloads/gen_copy.sql" "$W/gen_copy.sql"; chown "$PG_USER" "$W/gen_copy.sql"
    srv start old
    psql_on old -v rows=1000000 -v file="$CSV" -f "$W/gen_copy.sql" >/dev/null
    psql_on old -v rows=1000000 -v file="$CSVFIT" -v ips=200 -v paths=50 -v secs=20 \
        -f "$W/gen_copy.sql" >/dev/null
    srv stop old
fi

TICK=$(getconf CLK_TCK)
RES=$W/results.txt
: >"$RES"
for r in $(seq 1 "$ROUNDS"); do
    for w in $WORKLOADS; do
        # the order alternates by round: neither build always runs on the warmer machine
        order="old new"
        [ $((r % 2)) -eq 0 ] && order="new old"
        for x in $order; do
            srv start $x
            t0=$(children_ticks $x)
            if [ "$w" = flush ]; then
                # 90,000 caller keys (1,000 paths x 90 IPs, under max_entries) in one
                # transaction, then one flush: the worker's CPU time (its /proc stat) per
                # entry written (caller and API entries)
                # (empty rollups: earlier workloads wrote different rows in each build)
                psql_on $x -c "ALTER SYSTEM SET apicount.flush_interval = '1h'" -c "SELECT pg_reload_conf()" \
                    -c "DO \$\$ DECLARE t regclass; BEGIN FOR t IN SELECT c.oid FROM pg_class c JOIN pg_am a ON a.oid = c.relam WHERE c.relnamespace = 'apicount'::regnamespace AND c.relkind = 'r' AND a.amname = 'heap' LOOP EXECUTE format('TRUNCATE %s', t); END LOOP; END \$\$" >/dev/null
                sleep 0.5
                psql_on $x -c "INSERT INTO apicount.requests (path, client_ip) SELECT '/api/v1/r' || p, ('10.1.' || (i / 256) || '.' || (i % 256))::inet FROM generate_series(1, 1000) p, generate_series(1, 90) i" >/dev/null
                wpid=$(psql_on $x -c "SELECT worker_pid FROM apicount.stats")
                w0=$(awk '{ print $14 + $15 }' "/proc/$wpid/stat")
                s0=$(date +%s%N)
                n=$(psql_on $x -c "SELECT apicount.flush()")
                s1=$(date +%s%N)
                w1=$(awk '{ print $14 + $15 }' "/proc/$wpid/stat")
                psql_on $x -c "ALTER SYSTEM RESET apicount.flush_interval" >/dev/null
                rate=$(awk -v ns=$((s1 - s0)) -v n="$n" 'BEGIN { printf "%.0f", n / (ns / 1e9) }')
                us=$(awk -v t=$((w1 - w0)) -v hz="$TICK" -v n="$n" 'BEGIN { printf "%.2f", t / hz * 1e6 / n }')
                unit="entries/s"
            elif [ "$w" = copy ] || [ "$w" = copyfit ]; then
                f=$CSV
                [ "$w" = copyfit ] && f=$CSVFIT
                s0=$(date +%s%N)
                psql_on $x -c "COPY apicount.requests (ts, method, path, client_ip, user_id, status, latency_ms) FROM '$f' WITH (FORMAT csv)" >/dev/null
                s1=$(date +%s%N)
                rate=$(awk -v ns=$((s1 - s0)) 'BEGIN { printf "%.0f", 1e6 / (ns / 1e9) }')
                n=1000000 unit="rows/s"
            else
                rate=$(cd "$W" && as_pg "$(pgbin $x)/pgbench" -n -h "$W/$x" -p "$(port_of $x)" -c 8 -j 2 \
                    -M prepared -t "$TX" -f "$ROOT/bench/workloads/ac_$w.sql" postgres 2>&1 |
                    sed -n 's/^tps = \([0-9.]*\) .*/\1/p')
                n=$((8 * TX)) unit="tps"
            fi
            sleep 0.5
            t1=$(children_ticks $x)
            srv stop $x
            [ "$w" = flush ] ||
                us=$(awk -v t=$((t1 - t0)) -v hz="$TICK" -v n="$n" 'BEGIN { printf "%.2f", t / hz * 1e6 / n }')
            printf '%s %s %s %s\n' "$w" "$x" "${rate:-0}" "$us" >>"$RES"
            printf 'round %d %-6s %-3s %12s %-6s %8s us CPU per %s\n' "$r" "$w" "$x" "${rate:-error}" "$unit" "$us" \
                "$(case $w in copy*) echo row ;; flush) echo entry ;; *) echo transaction ;; esac)"
        done
    done
done

echo
echo "medians over $ROUNDS rounds: old = $OLD_DESC, new = $NEW_DESC"
printf '%-7s %14s %14s %7s %12s %12s %7s\n' workload "old rate" "new rate" ratio "old us CPU" "new us CPU" ratio
for w in $WORKLOADS; do
    awk -v w="$w" '
        function median(a, n,    i, j, t) {
            for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
            return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
        }
        $1 == w && $2 == "old" { ro[++no] = $3; co[no] = $4 }
        $1 == w && $2 == "new" { rn[++nn] = $3; cn[nn] = $4 }
        END {
            a = median(ro, no); b = median(rn, nn); c = median(co, no); d = median(cn, nn)
            printf "%-7s %14.0f %14.0f %7.2f %12.2f %12.2f %7.2f\n", w, a, b, (a > 0 ? b / a : 0), c, d, (c > 0 ? d / c : 0)
        }' "$RES"
done
