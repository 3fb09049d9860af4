# test/common.sh — shared helpers for test/run_tests.sh, test/demo.sh and bench scripts.
# Owns: locating PostgreSQL (see pg_select below), building/installing the extension, running commands as the
# unprivileged 'postgres' user when we are root, work directories, free ports, and throwaway
# clusters (start_cluster / stop_cluster).  Source it; it defines functions and variables only.
# shellcheck shell=bash

ROOT=${ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}

# Which PostgreSQL, first match wins:
#   PGBIN       its bin directory;
#   PG_CONFIG   its pg_config (make test PG_CONFIG=...);
#   PG_MAJOR    a major version (make test PG_MAJOR=18): Debian's /usr/lib/postgresql/MAJOR
#               when installed, else test/pg_build.sh's build in $APICOUNT_PG_CACHE/MAJOR
#               (test/ensure_deps.sh installs the one or builds the other);
#   else the major of Debian's apt (APICOUNT_DEFAULT_PG_MAJOR, 15 on Debian 12).
APICOUNT_DEFAULT_PG_MAJOR=${APICOUNT_DEFAULT_PG_MAJOR:-15}
APICOUNT_PG_CACHE=${APICOUNT_PG_CACHE:-/var/cache/apicount/pg}
export APICOUNT_PG_CACHE
if [ -z "${PGBIN:-}" ] && [ -n "${PG_CONFIG:-}" ]; then
    PGBIN=$("$PG_CONFIG" --bindir) || { printf 'ERROR: %s --bindir failed\n' "$PG_CONFIG" >&2; exit 1; }
fi
PG_MAJOR=${PG_MAJOR:-$APICOUNT_DEFAULT_PG_MAJOR}
if [ -z "${PGBIN:-}" ]; then
    if [ -x "/usr/lib/postgresql/$PG_MAJOR/bin/pg_config" ] || [ "$PG_MAJOR" = "$APICOUNT_DEFAULT_PG_MAJOR" ]; then
        PGBIN=/usr/lib/postgresql/$PG_MAJOR/bin
    else
        PGBIN=$APICOUNT_PG_CACHE/$PG_MAJOR/bin
    fi
fi
PATH="$PGBIN:$PATH"
export PATH PGBIN PG_MAJOR
PG_USER=postgres

log() { printf '== %s\n' "$*" >&2; }
die() { printf 'ERROR: %s\n' "$*" >&2; exit 1; }

is_root() { [ "$(id -u)" -eq 0 ]; }

pgxs_dir() {  # /usr/lib/postgresql/MAJOR/lib/pgxs
    local mk
    mk=$("$PGBIN/pg_config" --pgxs) || die "pg_config --pgxs failed (is postgresql-server-dev-$PG_MAJOR installed?)"
    dirname "$(dirname "$(dirname "$mk")")"
}

# as_pg CMD...: run CMD as the postgres user when we are root, directly otherwise.
# The environment is passed through (runuser only resets HOME/USER/LOGNAME/SHELL);
# PATH always includes $PGBIN.  Runs in the current directory if postgres may enter it,
# else in / (initdb and pg_ctl fail when they cannot resolve their working directory).
_as_pg_cwd_ok=""
_as_pg_cwd_for=""
as_pg() {
    if ! is_root; then
        env PATH="$PATH" "$@"
        return
    fi
    if [ "$_as_pg_cwd_for" != "$PWD" ]; then
        _as_pg_cwd_for=$PWD
        if runuser -u "$PG_USER" -- test -x "$PWD" 2>/dev/null; then _as_pg_cwd_ok=1; else _as_pg_cwd_ok=""; fi
    fi
    if [ -n "$_as_pg_cwd_ok" ]; then
        runuser -u "$PG_USER" -- env PATH="$PATH" "$@"
    else
        (cd / && runuser -u "$PG_USER" -- env PATH="$PATH" "$@")
    fi
}

# make_workdir: print a new temp directory owned by postgres (world-readable).
make_workdir() {
    local d
    d=$(mktemp -d "${TMPDIR:-/tmp}/apicount-XXXXXX")
    chmod 755 "$d"
    if is_root; then chown "$PG_USER:$PG_USER" "$d"; fi
    printf '%s\n' "$d"
}

# build_and_install: build the extension in $ROOT and install it into the PostgreSQL of $PGBIN.
# As root: make && make install.  Otherwise: make, then make install if the install
# directories are writable, else require that the installed library matches the build.
build_and_install() {
    local mk=(make -C "$ROOT" PG_CONFIG="$PGBIN/pg_config")
    # objects built for another PostgreSQL must not be reused: PGXS does not track it
    local stamp=$ROOT/.built-for-pg
    if [ "$(cat "$stamp" 2>/dev/null)" != "$PGBIN" ]; then
        "${mk[@]}" clean >/dev/null 2>&1 || true
    fi
    log "building apicount for $("$PGBIN/pg_config" --version)"
    "${mk[@]}" >&2 || die "build failed"
    printf '%s\n' "$PGBIN" >"$stamp"
    local libdir extdir
    libdir=$("$PGBIN/pg_config" --pkglibdir)
    extdir=$("$PGBIN/pg_config" --sharedir)/extension
    if is_root || { [ -w "$libdir" ] && [ -w "$extdir" ]; }; then
        log "installing apicount into $libdir"
        "${mk[@]}" install >&2 || die "make install failed"
    elif cmp -s "$ROOT/apicount.so" "$libdir/apicount.so" && [ -f "$extdir/apicount.control" ]; then
        log "not root: using the already installed apicount (identical to this build)"
    else
        die "not root and $libdir is not writable: run 'sudo make install' first (or run as root)"
    fi
}

# free_port [BASE]: print the first TCP port >= BASE (default: random in 15000..24999)
# on which nothing listens on 127.0.0.1 and no socket file /tmp/.s.PGSQL.PORT exists.
free_port() {
    local p=${1:-$((15000 + RANDOM % 10000))} last listening=""
    last=$((p + 1000))
    if command -v ss >/dev/null 2>&1; then
        listening=$(ss -Htln 2>/dev/null | awk '{print $4}' | sed 's/.*://' | sort -u)
    fi
    for ((; p < last; p++)); do
        if [ -n "$listening" ] && grep -qx "$p" <<<"$listening"; then continue; fi
        if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then continue; fi
        [ -e "/tmp/.s.PGSQL.$p" ] && continue
        printf '%s\n' "$p"
        return 0
    done
    die "no free TCP port found"
}

# start_cluster DIR PORT [CONF_LINE...]: initdb DIR/data as postgres and start it, with
# its socket in DIR, listening on 127.0.0.1:PORT only, log in DIR/server.log.
# apicount is preloaded (apicount.database='postgres'); CONF_LINEs are appended last
# and so override anything above them.
start_cluster() {
    local dir=$1 port=$2; shift 2
    mkdir -p "$dir"
    chmod 755 "$dir"
    if is_root; then chown "$PG_USER:$PG_USER" "$dir"; fi
    as_pg initdb -D "$dir/data" -U postgres --auth=trust --no-sync -E UTF8 --locale=C \
        >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; die "initdb failed in $dir/data"; }
    {
        printf '\n# added by test/common.sh start_cluster\n'
        printf "port = %s\n" "$port"
        printf "listen_addresses = '127.0.0.1'\n"
        printf "unix_socket_directories = '%s'\n" "$dir"
        printf "fsync = off\n"
        printf "shared_preload_libraries = 'apicount'\n"
        printf "apicount.database = 'postgres'\n"
        local line
        for line in "$@"; do printf '%s\n' "$line"; done
    } >>"$dir/data/postgresql.conf"
    as_pg pg_ctl -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null ||
        { tail -n 30 "$dir/server.log" >&2 || true; die "server failed to start (log: $dir/server.log)"; }
}

# stop_cluster DIR: stop the cluster in DIR/data if it is running (fast shutdown).
stop_cluster() {
    local dir=$1
    [ -f "$dir/data/postmaster.pid" ] || return 0
    as_pg pg_ctl -D "$dir/data" -m fast -w -t 60 stop >/dev/null ||
        die "could not stop the server in $dir/data"
}
