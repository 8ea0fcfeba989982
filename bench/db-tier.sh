#!/usr/bin/env bash
# What the database tier's guarantees cost, on scripts/db-local's tier
# (a pg_auto_failover formation with a synchronous standby, a read replica):
#
#   ingest  uploads through one node, storage.standby_policy=none against
#           =spool (after every group commit the importer asks whether a
#           synchronous standby has flushed it), interleaved, BENCH_RUNS
#           rounds of BENCH_SECONDS each: uploads/s, p99, troupe CPU per
#           upload, and the spool/none ratios from the same run;
#   reads   BENCH_READS history reads of one device, with the replica in
#           storage.replicas and without: median ms, and the share the
#           replica served (from /metrics).
#
# Prints a markdown table. Environment (all optional): TROUPE_BUILD_DIR
# (build)  BENCH_RUNS (2)  BENCH_SECONDS (15)  BENCH_DEVICES (200)
# BENCH_CONNECTIONS (32)  BENCH_READS (200)  BENCH_OUT (raw output; temp dir).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
build=${TROUPE_BUILD_DIR:-$repo/build}
runs=${BENCH_RUNS:-2}
seconds=${BENCH_SECONDS:-15}
devices=${BENCH_DEVICES:-200}
connections=${BENCH_CONNECTIONS:-32}
reads=${BENCH_READS:-200}
out=${BENCH_OUT:-$(mktemp -d /tmp/troupe-bench-db.XXXXXX)}
admin_password=bench-Db-Pw-1
ready_timeout_s=90

die() { echo "bench/db-tier.sh: $*" >&2; exit 1; }
note() { echo "bench/db-tier.sh: $*" >&2; }
. "$here/lib.sh"

for b in "$build/troupe" "$build/bench/troupe_load"; do
  [ -x "$b" ] || die "missing $b (scripts/build)"
done
mkdir -p "$out"
chmod 711 "$out"
db_dir=$out/db
node_pid=
cleanup() {
  [ -n "$node_pid" ] && kill -TERM "$node_pid" 2>/dev/null && wait "$node_pid" 2>/dev/null || true
  [ -d "$db_dir" ] && "$repo/scripts/db-local" stop "$db_dir" >/dev/null 2>&1 || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

note "starting the tier (scripts/db-local; log $out/db-local.log)"
settings=$("$repo/scripts/db-local" start "$db_dir" 2>"$out/db-local.log") \
  || { tail -n 20 "$out/db-local.log" >&2; die "scripts/db-local start failed"; }
eval "$settings"
unset TROUPE_STORAGE_REPLICAS TROUPE_STORAGE_STANDBY_POLICY
read -r port < <(free_ports 1)
url=http://127.0.0.1:$port

start_node() {  # NAME --set k=v...
  local name=$1
  shift
  TROUPE_ADMIN_USER=admin TROUPE_ADMIN_PASSWORD=$admin_password \
    "$build/troupe" serve --listen "127.0.0.1:$port" --data-dir "$out/data" \
    "$@" >"$out/node-$name.log" 2>&1 &
  node_pid=$!
  wait_ready "$url" "$node_pid" "$out/node-$name.log"
}
stop_node() {
  kill -TERM "$node_pid" 2>/dev/null && wait "$node_pid" 2>/dev/null || true
  node_pid=
}
for round in $(seq 1 "$runs"); do
  for policy in none spool; do
    note "round $round: standby_policy=$policy"
    start_node "$policy-$round" --set "storage.standby_policy=$policy"
    "$build/bench/troupe_load" --url "$url" --admin-password "$admin_password" \
      --tenant "b$round$policy" --prefix "b$round$policy-" --devices "$devices" \
      --connections "$connections" --duration "$seconds" --points 10 \
      --pid "$node_pid" >"$out/ingest-$policy-$round.txt" 2>&1 \
      || { tail -n 20 "$out/ingest-$policy-$round.txt" >&2; die "troupe_load failed"; }
    stop_node
  done
done

python3 - "$out" "$runs" <<'EOF'
import json, statistics, sys
out, runs = sys.argv[1], int(sys.argv[2])
def result(policy, r):
    for line in open(f"{out}/ingest-{policy}-{r}.txt"):
        if line.startswith("RESULT "):
            return json.loads(line[7:])
rows = {}
for policy in ("none", "spool"):
    rs = [result(policy, r) for r in range(1, runs + 1)]
    rows[policy] = {
        "ups": statistics.median(x["accepted_requests_per_s"] for x in rs),
        "p99": statistics.median(x["latency_ms"]["p99"] for x in rs),
        "cpu": statistics.median(x["cpu_s"] * 1e6 / max(1, x["requests"]) for x in rs),
    }
print("| standby_policy | uploads/s | p99 ms | troupe CPU µs/upload |")
print("|---|---|---|---|")
for p, v in rows.items():
    print(f"| {p} | {v['ups']:.0f} | {v['p99']:.1f} | {v['cpu']:.0f} |")
n, s = rows["none"], rows["spool"]
print(f"| spool/none | {s['ups']/n['ups']:.2f} | {s['p99']/n['p99']:.2f} | {s['cpu']/n['cpu']:.2f} |")
EOF

# Reads: one device with an hour of points, read with and without the replica.
start_node reads-primary
python3 - "$url" "$admin_password" "$out/device.json" <<'EOF'
import json, sys, time, urllib.request
url, pw, out = sys.argv[1:4]
def call(path, body, token=None, method='POST'):
    req = urllib.request.Request(url + path, method=method, data=json.dumps(body).encode(),
        headers={'Content-Type': 'application/json', **({'Authorization': 'Bearer ' + token} if token else {})})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())
admin = call('/api/v1/login', {'username': 'admin', 'password': pw})['token']
call('/api/v1/admin/tenants', {'id': 'rd', 'name': 'reads'}, admin)
secret = call('/api/v1/admin/devices', {'id': 'rd-1', 'name': 'r', 'tenant': 'rd'}, admin)['secret']
tok = call('/api/v1/device/login', {'device_id': 'rd-1', 'secret': secret})['token']
now = int(time.time() * 1000)
pts = [{'metric': 'm', 'value': i % 97, 'ts': now - 3600_000 + i * 1000} for i in range(3600)]
call('/api/v1/device/telemetry', {'points': pts}, tok)
json.dump({'admin': admin}, open(out, 'w'))
EOF
read_run() {  # NAME: median ms of BENCH_READS history reads
  python3 - "$url" "$out/device.json" "$reads" <<'EOF'
import json, statistics, sys, time, urllib.request
url, st, n = sys.argv[1], json.load(open(sys.argv[2])), int(sys.argv[3])
ms = []
for _ in range(n):
    req = urllib.request.Request(url + '/api/v1/devices/rd-1/telemetry?metric=m&limit=5000',
                                 headers={'Authorization': 'Bearer ' + st['admin']})
    t = time.perf_counter()
    with urllib.request.urlopen(req, timeout=30) as r:
        assert len(json.loads(r.read())['points']) == 3600
    ms.append((time.perf_counter() - t) * 1000)
print(f"{statistics.median(ms):.2f}")
EOF
}
primary_ms=$(read_run)
stop_node
start_node reads-replica --set "storage.replicas=$TROUPE_DB_REPLICA_URL"
for _ in $(seq 1 50); do
  m=$(curl -fsS "$url/metrics") && grep -q '^troupe_db_replica_serving{replica="replica-0"} 1' <<<"$m" && break
  sleep 0.2
done
replica_ms=$(read_run)
served=$(curl -fsS "$url/metrics" | awk '$1 ~ /^troupe_db_replica_reads_total/ { s += $2 } END { print s + 0 }')
stop_node
echo
echo "| history reads (3,600 points) | median ms | served by the replica |"
echo "|---|---|---|"
echo "| primary only | $primary_ms | - |"
echo "| with the replica | $replica_ms | $served of $reads |"
note "raw output in $out"
