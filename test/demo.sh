#!/usr/bin/env bash
# test/demo.sh — 'make demo' / 'make demo-stop'.
# Owns the throwaway demo server in /tmp/apicount-demo: builds and installs apicount, starts
# PostgreSQL (the one test/common.sh selects; as 'postgres') on a free port with apicount preloaded, creates the extension,
# plays ~5 s of realistic API traffic with pgbench, prints the query functions' answers and
# leaves the server running for you.  'bash test/demo.sh stop' stops it and removes the dir.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=test/common.sh
. "$ROOT/test/common.sh"

DEMO=/tmp/apicount-demo

stop_demo() {
    [ -d "$DEMO" ] || return 0
    if ! (stop_cluster "$DEMO"); then
        echo "warning: could not stop the demo server cleanly" >&2
    fi
    rm -rf "$DEMO"
}

if [ "${1:-}" = stop ]; then
    if [ -d "$DEMO" ]; then stop_demo; echo "demo server stopped, $DEMO removed"; else echo "no demo running ($DEMO does not exist)"; fi
    exit 0
fi
[ $# -eq 0 ] || die "usage: $0 [stop]"

bash "$ROOT/test/ensure_deps.sh"
build_and_install

stop_demo
# shellcheck disable=SC2119  # BASE is optional
PORT=$(free_port)
log "starting a demo server in $DEMO on port $PORT"
start_cluster "$DEMO" "$PORT" \
    "apicount.database = 'postgres'" \
    "apicount.flush_interval = '1s'" \
    "log_min_messages = 'warning'"
echo "$PORT" >"$DEMO/port"
trap 'echo; echo "demo failed: server log $DEMO/server.log; stop it with: make demo-stop" >&2' ERR

cd "$DEMO"
q() { as_pg psql -X -q -v ON_ERROR_STOP=1 -P pager=off -h "$DEMO" -p "$PORT" -U postgres -d postgres "$@"; }

q -c 'CREATE EXTENSION apicount;'

# --- detection rules: the worker checks them at least once per 5 s slot and NOTIFYs apicount_alert
q <<'SQL'
INSERT INTO apicount.rules (name, path_pattern, method, per, threshold, "window", min_error_ratio, cooldown) VALUES
  ('scraper',  '/api/%',         NULL,   'ip',   1000, '1 minute', NULL, '5 minutes'),
  ('stuffing', '%login%',        'POST', 'api',   300, '1 minute', 0.5,  '5 minutes'),
  ('exporter', '/api/v1/export', NULL,   'user',   50, '1 minute', NULL, '10 minutes');
SQL

# --- traffic: 10 templates x ids = ~200 raw paths, zipfian popularity; numeric ids, query
# strings and pages normalize to ':id' / bare paths.  Mostly GET and 200s, a long latency tail;
# zipfian client IPs (a few heavy hitters), each IP with its own user (some anonymous).
cat >"$DEMO/traffic.sql" <<'SQL'
\set p random_zipfian(1, 200, 1.2)
\set tmpl :p % 10
\set id 1000 + :p / 10
\set ip random_zipfian(1, 5000, 1.1)
\set ip_hi :ip / 256
\set ip_lo :ip % 256
\set u (:ip * 7919) % 3000 + 1
\set m random(1, 100)
\set s random(1, 1000)
\set lat random_exponential(1, 2000, 15.0)
\set frac random(0, 999)
INSERT INTO apicount.requests (method, path, client_ip, user_id, status, latency_ms)
VALUES (
  CASE WHEN :tmpl = 4 THEN 'POST' WHEN :tmpl IN (5, 6, 9) OR :m <= 78 THEN 'GET'
       WHEN :m <= 90 THEN 'POST' WHEN :m <= 96 THEN 'PUT' ELSE 'DELETE' END,
  CASE :tmpl
    WHEN 0 THEN '/api/v1/users/' || :id
    WHEN 1 THEN '/api/v1/products/' || :id
    WHEN 2 THEN '/api/v1/orders'
    WHEN 3 THEN '/api/v1/orders/' || :id
    WHEN 4 THEN '/login'
    WHEN 5 THEN '/health'
    WHEN 6 THEN '/api/v1/products?page=' || (:id - 999)
    WHEN 7 THEN '/api/v1/users/' || :id || '/orders'
    WHEN 8 THEN '/api/v1/cart'
    ELSE '/api/v2/search?q=item' || :id
  END,
  ('10.0.' || :ip_hi || '.' || :ip_lo)::inet,
  CASE WHEN :u > 2700 OR :frac < 100 THEN NULL ELSE 'user' || :u END,
  CASE WHEN :tmpl = 5 OR :s <= 780 THEN 200 WHEN :s <= 830 THEN 201 WHEN :s <= 890 THEN 304
       WHEN :s <= 920 THEN 400 WHEN :s <= 940 THEN 401 WHEN :s <= 975 THEN 404
       WHEN :s <= 995 THEN 500 ELSE 503 END,
  :lat + :frac / 1000.0);
SQL

# --- a credential-stuffing bot: one IP, many user names, POST /login, almost all 401
cat >"$DEMO/stuffing.sql" <<'SQL'
\set u random(1, 20000)
\set s random(1, 100)
\set lat random_exponential(20, 400, 5.0)
INSERT INTO apicount.requests (method, path, client_ip, user_id, status, latency_ms)
VALUES ('POST', '/login', '203.0.113.77', 'user' || :u,
        CASE WHEN :s <= 2 THEN 200 ELSE 401 END, :lat);
SQL

# --- a scraper: one IP walking the product catalogue
cat >"$DEMO/scraper.sql" <<'SQL'
\set id random(1, 5000)
\set lat random_exponential(5, 300, 8.0)
INSERT INTO apicount.requests (method, path, client_ip, user_id, status, latency_ms)
VALUES ('GET', '/api/v1/products/' || :id, '192.0.2.66', NULL, 200, :lat);
SQL

# --- a reporting service paging through the sensitive export API
cat >"$DEMO/export.sql" <<'SQL'
\set page random(1, 500)
\set lat random(400, 3000)
INSERT INTO apicount.requests (method, path, client_ip, user_id, status, latency_ms)
VALUES ('GET', '/api/v1/export?format=csv&page=' || :page, '198.51.100.23', 'svc-reporting', 200, :lat);
SQL
chmod 644 "$DEMO"/*.sql

echo
echo "=== 5 seconds of API traffic with three attacks: pgbench -n -c 4 -j 2 -T 5"
echo "    (background traffic 80%, credential-stuffing bot 10%, scraper 5%, export service 5%)"
as_pg pgbench -h "$DEMO" -p "$PORT" -U postgres -n -c 4 -j 2 -T 5 \
    -f "$DEMO/traffic.sql@16" -f "$DEMO/stuffing.sql@2" -f "$DEMO/scraper.sql@1" \
    -f "$DEMO/export.sql@1" postgres 2>&1 |
    grep -E '^(number of (transactions actually|failed)|latency average|tps)' || true

show() {  # show TITLE SQL [psql options]
    local title=$1 sql=$2; shift 2
    echo
    echo "=== $title"
    echo "$sql"
    q "$@" -c "$sql"
}
show "top APIs, exact sliding minute (live counts, before or after a flush)" \
    "SELECT * FROM apicount.top_apis(10, '1 minute');"
show "top callers over the last minute" \
    "SELECT * FROM apicount.top_callers(10, '1 minute');"
show "who hammers /login (credential stuffing shows up as one IP with errors)" \
    "SELECT * FROM apicount.top_callers(5, '1 minute', '/login');"
show "calls per minute, all paths (excerpt)" \
    "SELECT * FROM (SELECT * FROM apicount.series(NULL, now() - interval '5 minutes', now(), '1 minute')) s LIMIT 10;"
show "latency percentiles per API over the last hour (log histograms, within 1.48 % of exact)" \
    "SELECT method, path, percentile, round(latency_ms::numeric, 2) AS latency_ms FROM apicount.latency_percentiles(NULL, now() - interval '1 hour', now() + interval '1 minute') WHERE path IN ('/login', '/api/v1/orders') ORDER BY 1, 2, 3;"
show "minute rollups written by the background worker (excerpt)" \
    "SELECT bucket, method, path, calls, ok, client_errors, server_errors FROM apicount.api_minute ORDER BY calls DESC, method, path LIMIT 8;"
show "attack 1 - hot callers: an IP with 1,000+ calls to one API within the sliding minute" \
    "SELECT * FROM apicount.hot_callers(1000, '1 minute') LIMIT 10;"
show "attack 2 - credential stuffing: login calls spike over their baseline with a low success rate" \
    "SELECT * FROM apicount.login_anomalies('%login%', '1 minute', '30 minutes', 100, 3, 0.5);"
show "attack 3 - data-leak tracing: who called the export API, when, how often" \
    "SELECT * FROM apicount.callers('/api/v1/export', now() - interval '1 hour', now() + interval '1 minute');"
echo
echo "(waiting 3 s for the worker's rule evaluation, which runs twice per slot)"
sleep 3
show "alerts fired by the rules (each was also sent as NOTIFY apicount_alert)" \
    "SELECT id, rule, method, path, client_ip, user_id, calls, errors, window_start FROM apicount.alerts ORDER BY id;"
show "extension statistics" \
    "SELECT * FROM apicount.stats;" -x

trap - ERR
cat <<EOF2

The demo server keeps running (data $DEMO/data, log $DEMO/server.log).
  connect: psql -h $DEMO -p $PORT -U postgres postgres
  alerts:  LISTEN apicount_alert;   (in psql; then replay an attack)
  more traffic: pgbench -h $DEMO -p $PORT -U postgres -n -c 4 -T 10 -f $DEMO/traffic.sql postgres
  stop:    make demo-stop    (bash test/demo.sh stop: stops the server and removes $DEMO)
EOF2
