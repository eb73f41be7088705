#!/usr/bin/env bash
# A/B benchmark of GetPage@LSN between two builds of the pageserver, on the
# same data, in one run: pgbench -i -s $SCALE is loaded once through a local
# cluster (zenith CLI of this tree), then each build's `pageserver` serves
# that workdir in turn and its own `pagebench` reads pgbench_accounts:
# 1 client x 1 in flight (latency) and 8 clients x 8 in flight
# (throughput), warm, and right after a restart of the pageserver (cold:
# no layer file open, empty page cache; $COLD_REQUESTS requests). Builds alternate for $ROUNDS rounds; the best and median of
# each figure are printed with the candidate/baseline ratio, and a JSON
# summary goes to test_runner/performance/results/pagebench_ab.json.
#
#   scripts/pagebench-ab.sh BASELINE_BIN_DIR [CANDIDATE_BIN_DIR]
#
# BIN_DIRs hold `pageserver` and `pagebench` (CANDIDATE defaults to
# target/release). Environment: SCALE (default 10), ROUNDS (3),
# REQUESTS (100000 for 1x1; 4x that for 8x8), COLD_REQUESTS (5000).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BASE="${1:?usage: $0 BASELINE_BIN_DIR [CANDIDATE_BIN_DIR]}"
CAND="${2:-$ROOT/target/release}"
SCALE="${SCALE:-10}"
ROUNDS="${ROUNDS:-3}"
REQUESTS="${REQUESTS:-100000}"
COLD_REQUESTS="${COLD_REQUESTS:-5000}"
PG="$ROOT/tmp_install"
export LD_LIBRARY_PATH="$PG/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export ZENITH_ALLOW_ROOT=1
WORK="$(mktemp -d)"
export ZENITH_REPO_DIR="$WORK/.zenith"
ZENITH="$ROOT/target/release/zenith"
PS_PID=""
cleanup() {
    [ -n "$PS_PID" ] && kill -9 "$PS_PID" 2>/dev/null || true
    "$ZENITH" stop --immediate >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PG_PORT="$(free_port)"; HTTP_PORT="$(free_port)"; COMPUTE_PORT="$(free_port)"
cat >"$WORK/init.toml" <<EOF
[computes]
base_port = $COMPUTE_PORT

[pageserver]
listen_pg_addr = "127.0.0.1:$PG_PORT"
listen_http_addr = "127.0.0.1:$HTTP_PORT"
EOF

echo "loading pgbench scale $SCALE through a local cluster in $WORK"
"$ZENITH" init --config "$WORK/init.toml" >/dev/null
"$ZENITH" start >/dev/null
"$ZENITH" pg start main --port "$COMPUTE_PORT" >/dev/null
"$PG/bin/pgbench" -h 127.0.0.1 -p "$COMPUTE_PORT" -U postgres -i -s "$SCALE" -q postgres 2>&1 | tail -1
psql_c() { "$PG/bin/psql" -X -A -t -h 127.0.0.1 -p "$COMPUTE_PORT" -U postgres -d postgres -c "$1"; }
psql_c "CHECKPOINT" >/dev/null
RELS="1663/$(psql_c "SELECT d.oid || '/' || c.relfilenode FROM pg_class c, pg_database d WHERE c.relname = 'pgbench_accounts' AND d.datname = 'postgres'")"
# A new branch waits until the pageserver has the compute's WAL; its
# timeline, read at its own last LSN, holds everything loaded.
"$ZENITH" branch bench main >/dev/null
read -r TENANT TIMELINE < <(python3 - "$ZENITH_REPO_DIR/config" <<'PY'
import sys, tomllib
c = tomllib.load(open(sys.argv[1], "rb"))
b = next(b for b in c.get("branch", []) if b["name"] == "bench")
print(b["tenant_id"], b["timeline_id"])
PY
)
"$ZENITH" stop >/dev/null
# Keys only the newer build knows would stop the older one from starting.
sed -i '/^pg_max_connections\|^pg_startup_timeout\|^pg_idle_timeout/d' "$ZENITH_REPO_DIR/pageserver/pageserver.toml"
echo "tenant $TENANT timeline $TIMELINE relation $RELS"

start_ps() {
    "$1/pageserver" -D "$ZENITH_REPO_DIR/pageserver" >>"$WORK/ps-$(basename "$1").log" 2>&1 &
    PS_PID=$!
    for _ in $(seq 1 600); do
        if curl -sf "http://127.0.0.1:$HTTP_PORT/v1/status" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    echo "pageserver from $1 did not start" >&2; exit 1
}
stop_ps() { kill -TERM "$PS_PID"; wait "$PS_PID" || true; PS_PID=""; }
bench() { # bin_dir clients pipeline requests
    "$1/pagebench" --page-service "127.0.0.1:$PG_PORT" --tenant "$TENANT" --timeline "$TIMELINE" \
        --rels "$RELS" --clients "$2" --pipeline "$3" --requests "$4" --json
}

RESULTS="$WORK/results.jsonl"
for round in $(seq 1 "$ROUNDS"); do
    for side in baseline candidate; do
        dir="$BASE"; [ "$side" = candidate ] && dir="$CAND"
        # Right after a restart: the reader cache (open layer files) and the
        # page cache are cold.
        start_ps "$dir"
        cold_one="$(bench "$dir" 1 1 "$COLD_REQUESTS")"
        stop_ps
        start_ps "$dir"
        cold_many="$(bench "$dir" 8 8 $((COLD_REQUESTS * 4)))"
        bench "$dir" 1 1 2000 >/dev/null            # warm the page cache and connections
        one="$(bench "$dir" 1 1 "$REQUESTS")"
        many="$(bench "$dir" 8 8 $((REQUESTS * 4)))"
        stop_ps
        python3 - "$side" "$round" "$one" "$many" "$cold_one" "$cold_many" >>"$RESULTS" <<'PY'
import json, sys
side, rnd = sys.argv[1], int(sys.argv[2])
one, many, cold_one, cold_many = (json.loads(a) for a in sys.argv[3:7])
for r in (one, many, cold_one, cold_many):
    assert r["errors"] == 0, r["first_error"]
print(json.dumps({"side": side, "round": rnd, "p50_us": one["latency_us"]["p50"],
                  "p99_us": one["latency_us"]["p99"], "rps_8x8": many["requests_per_s"],
                  "cold_p50_us": cold_one["latency_us"]["p50"],
                  "cold_p99_us": cold_one["latency_us"]["p99"],
                  "cold_rps_8x8": cold_many["requests_per_s"],
                  "cold_p99_us_8x8": cold_many["latency_us"]["p99"]}))
PY
        tail -1 "$RESULTS"
    done
done

mkdir -p "$ROOT/test_runner/performance/results"
python3 - "$RESULTS" "$ROOT/test_runner/performance/results/pagebench_ab.json" "$SCALE" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
summary = {"scale": int(sys.argv[3]), "rounds": rows}
print(f"\n{'figure':<22}{'baseline best/median':>24}{'candidate best/median':>26}{'ratio (median)':>16}")
for key, better in (("p50_us", min), ("p99_us", min), ("rps_8x8", max), ("cold_p50_us", min),
                    ("cold_p99_us", min), ("cold_rps_8x8", max), ("cold_p99_us_8x8", min)):
    b = [r[key] for r in rows if r["side"] == "baseline"]
    c = [r[key] for r in rows if r["side"] == "candidate"]
    mb, mc = statistics.median(b), statistics.median(c)
    summary[key] = {"baseline_best": better(b), "baseline_median": mb,
                    "candidate_best": better(c), "candidate_median": mc, "ratio_median": mc / mb}
    print(f"{key:<22}{better(b):>12.1f}/{mb:<11.1f}{better(c):>14.1f}/{mc:<11.1f}{mc / mb:>12.3f}")
json.dump(summary, open(sys.argv[2], "w"), indent=2)
print(f"\nwritten to {sys.argv[2]}")
PY
