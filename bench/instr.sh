# bench/instr.sh — instruction counts per row of two builds (sourced by bench/ab.sh when
# AB_MODE=instr, after it has built both builds, run initdb and created the extension).
# Owns: the input files (generated once by awk with a fixed seed, so both builds read the very
# same rows), one single-user server (postgres --single) per build and workload run under
# valgrind's callgrind, and the table of instructions per row, new ÷ old.
# Why: CPU time on this shared 2-core machine moves by ±20% between identical runs; an
# instruction count does not move at all, so a 1% change shows.  It does not see cache or
# lock effects of concurrent backends (that is what the timed rounds of bench/ab.sh are for).
# Each workload's figure is (Ir of the run − Ir of an empty run) ÷ rows, for the whole server
# (parse, plan, execute, commit) and for apicount.so's own functions (self cost).
# Knobs: INSTR_ROWS (statements per INSERT workload, 5000), INSTR_COPY_ROWS (200000),
# AB_WORKLOADS (the subset of "fits insert hit flood copyfit copy" to run).
# shellcheck shell=bash

command -v valgrind >/dev/null 2>&1 || {
    is_root && apt-get install -y -q valgrind >/dev/null 2>&1
    command -v valgrind >/dev/null 2>&1 || die "valgrind is missing (apt-get install valgrind)"
}
NS=${INSTR_ROWS:-5000}
NC=${INSTR_COPY_ROWS:-200000}

# gen_rows KIND N IPS PATHS: N rows as in bench/workloads (zipf-like paths, uniform IPs, the
# status and latency mix), KIND insert | hit (one statement per line) or csv (a COPY file)
gen_rows() {
    awk -v q="'" -v kind="$1" -v n="$2" -v ips="$3" -v paths="$4" 'BEGIN {
        srand(42)
        for (i = 0; i < n; i++) {
            p = int(exp(rand() * log(paths + 1))); if (p > paths) p = paths; if (p < 1) p = 1
            ip = int(rand() * ips)
            addr = sprintf("10.%d.%d.%d", int(ip / 65536), int(ip / 256) % 256, ip % 256)
            s = rand()
            st = s < 0.85 ? 200 : s < 0.90 ? 201 : s < 0.95 ? 404 : s < 0.98 ? 401 : 500
            lat = sprintf("%.3f", -log(1 - rand()) * 20)
            if (kind == "csv")
                printf "GET,/api/v1/r%d,%s,%s,%d,%s\n", p, addr, (ip % 2 ? "" : "user" ip % 20000), st, lat
            else if (kind == "hit")
                printf "SELECT apicount.hit(%s/api/v1/r%d%s, %sGET%s, %s%s%s, NULL, %d, %s);\n", q, p, q, q, q, q, addr, q, st, lat
            else
                printf "INSERT INTO apicount.requests (method, path, client_ip, user_id, status, latency_ms) VALUES (%sGET%s, %s/api/v1/r%d%s, %s%s%s, NULL, %d, %s);\n", q, q, q, p, q, q, addr, q, st, lat
        }
    }'
}

# spec_of WORKLOAD: "KIND ROWS IPS PATHS" for gen_rows (a COPY workload reads a CSV file)
spec_of() {
    case $1 in
    fits) echo "insert $NS 200 100" ;;
    insert) echo "insert $NS 100000 1000" ;;
    hit) echo "hit $NS 100000 1000" ;;
    flood) echo "insert $NS 10000000 1000" ;;
    copyfit) echo "csv $NC 200 50" ;;
    copy) echo "csv $NC 100000 1000" ;;
    *) die "AB_MODE=instr: no workload '$1' (fits insert hit flood copyfit copy)" ;;
    esac
}

WORKLOADS=${AB_WORKLOADS:-fits insert hit flood copyfit copy}
IN=$W/instr
mkdir -p "$IN"
: >"$IN/empty.sql"
for w in $WORKLOADS; do
    spec=$(spec_of "$w") || exit 1
    read -r kind rows ips paths <<<"$spec"
    if [ "$kind" = csv ]; then
        gen_rows csv "$rows" "$ips" "$paths" >"$IN/$w.csv"
        echo "COPY apicount.requests (method, path, client_ip, user_id, status, latency_ms) FROM '$IN/$w.csv' WITH (FORMAT csv);" >"$IN/$w.sql"
    else
        gen_rows "$kind" "$rows" "$ips" "$paths" >"$IN/$w.sql"
    fi
done
chown -R "$PG_USER" "$IN"

# settings per workload: the floods get a small caller tier (the minimum, 1,000; 20,000 for
# the COPY) so that most of their rows arrive with the tier full, as in a real flood
opts_of() {
    case $1 in
    flood) echo "-c apicount.max_entries=1000" ;;
    copy) echo "-c apicount.max_entries=20000" ;;
    *) echo "" ;;
    esac
}

# instr_run BUILD WORKLOAD: prints "total_Ir apicount_self_Ir"
instr_run() {
    local x=$1 w=$2 out="$IN/cg.$1.$2"
    as_pg valgrind --tool=callgrind --callgrind-out-file="$out" \
        "$(pgbin "$x")/postgres" --single -D "$W/$x/data" $(opts_of "$w") postgres \
        <"$IN/$w.sql" >"$IN/log.$x.$w" 2>&1
    callgrind_annotate --threshold=100 "$out" 2>/dev/null | awk '
        /PROGRAM TOTALS/ { gsub(",", "", $1); total = $1 }
        /apicount\.so\]$/ { gsub(",", "", $1); self += $1 }
        END { printf "%s %s\n", total, self + 0 }'
}

RES=$W/instr.txt
: >"$RES"
for w in empty $WORKLOADS; do
    rows=1
    [ "$w" = empty ] || read -r _ rows _ <<<"$(spec_of "$w")"
    for x in old new; do
        read -r tot self < <(instr_run "$x" "$w")
        printf '%s %s %s %s %s\n' "$w" "$x" "$tot" "$self" "$rows" >>"$RES"
        printf 'instr %-8s %-3s %15s Ir total %13s Ir in apicount.so\n' "$w" "$x" "$tot" "$self"
    done
done

echo
echo "instructions per row (callgrind, single-user server, minus an empty run): old = $OLD_DESC, new = $NEW_DESC"
printf '%-8s %8s %12s %12s %7s %12s %12s %7s\n' workload rows "old total" "new total" ratio "old ext" "new ext" ratio
awk '
    { tot[$1, $2] = $3; ext[$1, $2] = $4; rows[$1] = $5; if ($1 != "empty" && !seen[$1]++) order[++k] = $1 }
    END {
        for (i = 1; i <= k; i++) {
            w = order[i]; n = rows[w]
            to = (tot[w, "old"] - tot["empty", "old"]) / n; tn = (tot[w, "new"] - tot["empty", "new"]) / n
            eo = (ext[w, "old"] - ext["empty", "old"]) / n; en = (ext[w, "new"] - ext["empty", "new"]) / n
            printf "%-8s %8d %12.0f %12.0f %7.3f %12.0f %12.0f %7.3f\n", w, n, to, tn, tn / to, eo, en, (eo > 0 ? en / eo : 0)
        }
    }' "$RES"
