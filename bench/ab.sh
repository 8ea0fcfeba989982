#!/usr/bin/env bash
# One run of an A/B: a troupe binary on a fresh database of a running
# scripts/pg-temp server, bench/troupe_load against it, and one line with
# the figures an A/B compares. Alternate the builds (or settings) run by run
# on the same server; the machine's noise is larger than most differences.
#
#   eval "$(scripts/pg-temp)"      # TROUPE_TEST_DATABASE_URL, TROUPE_TEST_PG_DIR
#   bench/ab.sh BIN NAME [troupe_load options...]
#
# Prints: requests/s, p99, troupe's and PostgreSQL's CPU per request, the
# size of the telemetry tables, and troupe's CPU per request by thread name
# (from /proc, over the node's whole life, so setup included). TROUPE_SET="k=v ..." passes --set options to the node.
set -euo pipefail
[ $# -ge 2 ] || { sed -n '2,13p' "$0" >&2; exit 2; }
bin=$1
name=$2
shift 2
root=$(cd "$(dirname "$0")/.." && pwd)
build=${TROUPE_BUILD_DIR:-$root/build}
: "${TROUPE_TEST_DATABASE_URL:?run eval \"\$(scripts/pg-temp)\" first}"
: "${TROUPE_TEST_PG_DIR:?run eval \"\$(scripts/pg-temp)\" first}"
die() { echo "bench/ab.sh: $*" >&2; exit 1; }
ready_timeout_s=60
pg_dir=$TROUPE_TEST_PG_DIR
# shellcheck source=bench/lib.sh
source "$root/bench/lib.sh"

out=$(mktemp -d /tmp/troupe-ab.XXXXXX)
db=ab_${name//[^a-zA-Z0-9_]/_}_$RANDOM
base=${TROUPE_TEST_DATABASE_URL%/*}
psql "$TROUPE_TEST_DATABASE_URL" -qc "CREATE DATABASE $db" >/dev/null
port=$(free_ports 1)
url=http://127.0.0.1:$port
password=bench-Admin-Pw-1
TROUPE_DATABASE_URL=$base/$db TROUPE_ADMIN_USER=admin \
TROUPE_ADMIN_PASSWORD=$password \
  "$bin" serve --listen "127.0.0.1:$port" --data-dir "$out/data" \
  ${TROUPE_SET:+$(printf -- '--set %s ' $TROUPE_SET)} >"$out/node.log" 2>&1 &
node=$!
cleanup() {
  kill "$node" 2>/dev/null || true
  wait "$node" 2>/dev/null || true
  psql "$TROUPE_TEST_DATABASE_URL" -qc "DROP DATABASE IF EXISTS $db" \
    >/dev/null 2>&1 || true
  rm -rf "$out"
}
trap cleanup EXIT
wait_ready "$url" "$node" "$out/node.log"

"$build/bench/troupe_load" --url "$url" --admin-user admin \
  --admin-password "$password" --pid "$node" "$@" >"$out/load.txt" 2>&1 &
load=$!
# PostgreSQL's CPU over the measured phase (after the device logins; in
# --mode detail there are none, and it reads 0).
while kill -0 "$load" 2>/dev/null && ! grep -qs '^device login:' "$out/load.txt"; do
  sleep 0.05
done
before=$(pg_cpu)
wait "$load" || { cat "$out/load.txt" >&2; die "troupe_load failed"; }
after=$(pg_cpu)
# Group commits: flushes and points per flush.
flushes=$(curl -s "$url/metrics" | awk '/^troupe_ingest_flushes_total/ {f += $2}
  /^troupe_ingest_batch_points_sum/ {p += $2} END {printf "%d %.1f", f, f ? p / f : 0}')
# CPU seconds per thread name over the node's life (threads of a name
# summed, a trailing number dropped): "caf.clock=1.2 troupe-http=3.4 ...".
threads=$(for t in /proc/"$node"/task/*; do
  echo "$(sed 's/-[0-9]*$//' "$t/comm") $(awk '{print $14 + $15}' "$t/stat")"
done | awk -v hz="$(getconf CLK_TCK)" '{s[$1] += $2} END {for (k in s) printf "%s=%.2f ", k, s[k] / hz}')
size=$(psql "$base/$db" -Atc "SELECT pg_size_pretty(coalesce(sum(pg_total_relation_size(oid)), 0)) FROM pg_class WHERE relkind = 'r' AND relname LIKE 'telemetry%'")
python3 - "$out/load.txt" "$name" "$before" "$after" "$threads" "$size" "$flushes" <<'EOF'
import json, sys
path, name, before, after, threads, size, flushes = sys.argv[1:]
threads = {k: float(v) for k, v in (t.split("=") for t in threads.split())}
line = [l for l in open(path) if l.startswith("RESULT ")][0]
r = json.loads(line.split(" ", 1)[1])
n = max(1, r["accepted"])
pg = float(after) - float(before)
us = lambda s: s / n * 1e6
print(f"{name}: {r['accepted_requests_per_s']:.1f} ok/s, p99 {r['latency_ms']['p99']:.1f} ms,"
      f" troupe {us(r['cpu_s']):.1f} us + PostgreSQL {us(pg):.1f} us per request"
      f", telemetry tables {size}, {flushes.split()[0]} flushes of"
      f" {flushes.split()[1]} points")
print("  per thread, us per request over the node's life: " + ", ".join(
    f"{k} {us(v):.1f}" for k, v in sorted(threads.items(), key=lambda kv: -kv[1])))
EOF
