#!/usr/bin/env bash
# Ingest with one data shard and with two (storage.shards), the same load:
# two throwaway PostgreSQL instances (scripts/pg-temp), A and B. Each round
# runs, interleaved:
#   one   the node on a fresh database of A only;
#   two   the node on a fresh database of A (catalog, shard 0) and one of B
#         (shard 1): devices spread over both;
# troupe_load with BENCH_DEVICES devices uploading BENCH_POINTS-point
# batches from BENCH_CONNECTIONS connections for BENCH_SECONDS. Reports
# points/s and the CPU per point of every process (troupe, PostgreSQL A,
# PostgreSQL B), medians over BENCH_RUNS rounds, and the two/one ratios.
# On a machine with fewer cores than the processes want, the second shard
# mostly shows its cost; its gain needs a core (or a machine) of its own.
#
# Environment (all optional): TROUPE_BUILD_DIR (build)  BENCH_RUNS (2)
# BENCH_SECONDS (15)  BENCH_DEVICES (400)  BENCH_CONNECTIONS (32)
# BENCH_POINTS (100)  BENCH_OUT (raw output; temp dir).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
build=${TROUPE_BUILD_DIR:-$repo/build}
runs=${BENCH_RUNS:-2}
seconds=${BENCH_SECONDS:-15}
devices=${BENCH_DEVICES:-400}
connections=${BENCH_CONNECTIONS:-32}
points=${BENCH_POINTS:-100}
out=${BENCH_OUT:-$(mktemp -d /tmp/troupe-bench-shards.XXXXXX)}
admin_password=bench-Sh-Pw-1
ready_timeout_s=90

die() { echo "bench/shards.sh: $*" >&2; exit 1; }
note() { echo "bench/shards.sh: $*" >&2; }
. "$here/lib.sh"

for b in "$build/troupe" "$build/bench/troupe_load"; do
  [ -x "$b" ] || die "missing $b (scripts/build)"
done
mkdir -p "$out"
node_pid=
pg_a= pg_b=
cleanup() {
  [ -n "$node_pid" ] && kill -TERM "$node_pid" 2>/dev/null && wait "$node_pid" 2>/dev/null || true
  for d in "$pg_a" "$pg_b"; do
    [ -n "$d" ] && "$repo/scripts/pg-temp" stop "$d" >/dev/null 2>&1 || true
  done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start_pg() {  # -> "URL DIR"
  local env
  env=$("$repo/scripts/pg-temp") || die "scripts/pg-temp failed"
  (eval "$env"; echo "$TROUPE_TEST_DATABASE_URL $TROUPE_TEST_PG_DIR")
}
read -r url_a pg_a < <(start_pg)
read -r url_b pg_b < <(start_pg)
note "PostgreSQL A: $url_a, B: $url_b"
read -r port < <(free_ports 1)
url=http://127.0.0.1:$port

fresh_db() {  # SERVER_URL NAME -> the new database's URL
  psql -q "$1" -c "CREATE DATABASE $2" >/dev/null || die "CREATE DATABASE $2"
  echo "${1%/*}/$2"
}

cpu_of() {  # PG_DIR: CPU seconds of that PostgreSQL
  pg_dir=$1 pg_cpu
}

for round in $(seq 1 "$runs"); do
  for kind in one two; do
    name=$kind-$round
    note "round $round: $kind shard(s)"
    catalog=$(fresh_db "$url_a" "bench_${kind}_${round}_a")
    args=(--set "storage.database_url=$catalog")
    if [ "$kind" = two ]; then
      args+=(--set "storage.shards=$(fresh_db "$url_b" "bench_${kind}_${round}_b")")
    fi
    TROUPE_ADMIN_USER=admin TROUPE_ADMIN_PASSWORD=$admin_password \
      "$build/troupe" serve --listen "127.0.0.1:$port" --data-dir "$out/data-$name" \
      "${args[@]}" >"$out/node-$name.log" 2>&1 &
    node_pid=$!
    wait_ready "$url" "$node_pid" "$out/node-$name.log"
    a0=$(cpu_of "$pg_a") b0=$(cpu_of "$pg_b")
    "$build/bench/troupe_load" --url "$url" --admin-password "$admin_password" \
      --tenant "s$name" --prefix "s$name-" --devices "$devices" \
      --connections "$connections" --duration "$seconds" --points "$points" \
      --pid "$node_pid" >"$out/load-$name.txt" 2>&1 \
      || { tail -n 20 "$out/load-$name.txt" >&2; die "troupe_load failed"; }
    echo "$a0 $(cpu_of "$pg_a") $b0 $(cpu_of "$pg_b")" >"$out/pg-$name.txt"
    kill -TERM "$node_pid" 2>/dev/null && wait "$node_pid" 2>/dev/null || true
    node_pid=
  done
done

python3 - "$out" "$runs" "$points" <<'EOF'
import json, statistics, sys
out, runs, per = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def result(name):
    for line in open(f"{out}/load-{name}.txt"):
        if line.startswith("RESULT "):
            return json.loads(line[7:])
rows = {}
for kind in ("one", "two"):
    xs = []
    for r in range(1, runs + 1):
        res = result(f"{kind}-{r}")
        a0, a1, b0, b1 = (float(v) for v in open(f"{out}/pg-{kind}-{r}.txt").read().split())
        n = max(1, res["requests"]) * per
        xs.append({
            "pps": res["accepted_requests_per_s"] * per,
            "p99": res["latency_ms"]["p99"],
            "troupe": res["cpu_s"] * 1e6 / n,
            "pga": (a1 - a0) * 1e6 / n,
            "pgb": (b1 - b0) * 1e6 / n,
        })
    rows[kind] = {k: statistics.median(x[k] for x in xs) for k in xs[0]}
    rows[kind]["total"] = rows[kind]["troupe"] + rows[kind]["pga"] + rows[kind]["pgb"]
print(f"| data shards | points/s | p99 ms | CPU µs/point: troupe | PostgreSQL A | PostgreSQL B | all |")
print("|---|---|---|---|---|---|---|")
for kind, v in rows.items():
    print(f"| {kind} | {v['pps']:.0f} | {v['p99']:.1f} | {v['troupe']:.1f} | {v['pga']:.1f} | {v['pgb']:.1f} | {v['total']:.1f} |")
o, t = rows["one"], rows["two"]
print(f"| two/one | {t['pps']/o['pps']:.2f} | {t['p99']/o['p99']:.2f} | {t['troupe']/o['troupe']:.2f} | - | - | {t['total']/o['total']:.2f} |")
EOF
note "raw output in $out"
