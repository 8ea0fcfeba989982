#!/usr/bin/env bash
# The same telemetry load through one troupe node and through three nodes
# sharing one PostgreSQL (issue 3): prints a markdown table of requests/s,
# points/s, latency, CPU seconds per 1,000 requests (all troupe processes
# together; PostgreSQL's own CPU separately) and, for three nodes, the share
# of telemetry requests forwarded to another node.
#
# It starts everything itself, on 127.0.0.1 only: a throwaway PostgreSQL
# (scripts/pg-temp), a database per scenario, the nodes (build/troupe serve)
# and troupe_load; it stops them all on the way out (SIGTERM, SIGKILL after
# 40 s). Every wait is bounded.
#
# Environment (all optional):
#   TROUPE_BUILD_DIR      where troupe and bench/troupe_load were built
#                         (default: <repo>/build)
#   BENCH_DEVICES (1000) BENCH_CONNECTIONS (32) BENCH_DURATION (20)
#   BENCH_POINTS (10) BENCH_METRICS (2)
#   BENCH_SCENARIOS       "one three" (default), or one of them
#   BENCH_IDLE (5)        seconds of idle CPU measured before the load
#   BENCH_OUT             raw output directory (default: a temp dir)
#
# The tools' reports and progress go to stderr, the table to stdout.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
build=${TROUPE_BUILD_DIR:-$repo/build}
troupe_bin=$build/troupe
load_bin=$build/bench/troupe_load
pg_temp=$repo/scripts/pg-temp

devices=${BENCH_DEVICES:-1000}
connections=${BENCH_CONNECTIONS:-32}
duration=${BENCH_DURATION:-20}
points=${BENCH_POINTS:-10}
metrics=${BENCH_METRICS:-2}
scenarios=${BENCH_SCENARIOS:-one three}
idle_s=${BENCH_IDLE:-5}
admin_user=admin
admin_password=bench-Admin-Pw-1
stop_grace_s=40
ready_timeout_s=90
# Registering hashes every secret on purpose; logins take time too.
load_timeout_s=$((duration + 900))

die() { echo "bench/cluster.sh: $*" >&2; exit 1; }
note() { echo "bench/cluster.sh: $*" >&2; }

for b in "$troupe_bin" "$load_bin"; do
  [ -x "$b" ] || die "missing $b; build it with: cmake --build $build --target troupe troupe_load"
done
for c in curl psql python3 timeout; do
  command -v "$c" >/dev/null || die "$c is needed"
done

out=${BENCH_OUT:-$(mktemp -d /tmp/troupe-cluster-bench.XXXXXX)}
mkdir -p "$out"
# Both scenarios run the same binary even if build/ is rebuilt meanwhile.
cp "$troupe_bin" "$out/troupe"
troupe_bin=$out/troupe

# -- cleanup: nodes first, then PostgreSQL ------------------------------------
node_pids=()
pg_dir=
stop_nodes() {
  # SIGTERM every node still running, wait up to $stop_grace_s s for all,
  # SIGKILL what is left; each node's exit status and stop time go to
  # $out/stops.txt ("<label> pid rc seconds killed").
  local label=$1
  local p t0 rc killed
  [ ${#node_pids[@]} -eq 0 ] && return 0
  t0=$EPOCHREALTIME
  for p in "${node_pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  local deadline=$((SECONDS + stop_grace_s))
  for p in "${node_pids[@]}"; do
    while kill -0 "$p" 2>/dev/null && [ $SECONDS -lt $deadline ]; do
      sleep 0.2
    done
  done
  for p in "${node_pids[@]}"; do
    killed=no
    if kill -0 "$p" 2>/dev/null; then
      kill -KILL "$p" 2>/dev/null || true
      killed=yes
    fi
    rc=0
    wait "$p" 2>/dev/null || rc=$?
    echo "$label pid=$p rc=$rc after=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')s sigkill=$killed" \
      >>"$out/stops.txt"
  done
  node_pids=()
}
cleanup() {
  local rc=$?
  stop_nodes cleanup || true
  if [ -n "$pg_dir" ]; then
    "$pg_temp" stop "$pg_dir" || true
  fi
  # Node data dirs can be large; logs, metrics and RESULT lines stay.
  rm -rf "$out"/*/data-* "$out/troupe" 2>/dev/null || true
  echo "bench/cluster.sh: raw output in $out" >&2
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# shellcheck source=bench/lib.sh
. "$here/lib.sh"

# -- helpers --------------------------------------------------------------------

# N distinct free TCP ports on 127.0.0.1 (held open together while chosen).



admin_token() {  # URL
  curl -sS --max-time 30 -H 'Content-Type: application/json' \
    -d "{\"username\":\"$admin_user\",\"password\":\"$admin_password\"}" \
    "$1/api/v1/login" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])'
}

# Waits until GET /api/v1/cluster on URL shows exactly the members named in
# IDS (space-separated), each alive with shards > 0, and nothing moving.
wait_members() {  # URL TOKEN IDS FILE
  local deadline=$((SECONDS + ready_timeout_s))
  while :; do
    if curl -sS --max-time 5 -H "Authorization: Bearer $2" \
         "$1/api/v1/cluster" >"$4" 2>/dev/null \
       && python3 - "$4" "$3" <<'EOF'
import json, sys
v = json.load(open(sys.argv[1]))
want = set(sys.argv[2].split())
members = v.get("members", [])
ok = (set(m.get("id") for m in members) == want
      and all(m.get("state") == "alive" and m.get("shards", 0) > 0
              for m in members)
      and not v.get("moving"))
sys.exit(0 if ok else 1)
EOF
    then
      return 0
    fi
    [ $SECONDS -lt $deadline ] || { cat "$4" >&2; echo >&2; die "cluster at $1 did not converge on '$3' in ${ready_timeout_s}s"; }
    sleep 1
  done
}

# User+system CPU seconds of this run's PostgreSQL: the postmaster (with the
# children it has reaped) and every live child of it. Backends rename
# themselves ("postgres: troupe bench ..."), so they are found by parent pid,
# the postmaster by $pg_dir/data/postmaster.pid.

# User+system CPU seconds of the given pids together.
pids_cpu() {
  python3 - "$@" <<'EOF'
import os, sys
tick = os.sysconf("SC_CLK_TCK")
total = 0
for pid in sys.argv[1:]:
    s = open(f"/proc/{pid}/stat").read()
    f = s[s.rfind(")") + 2:].split()
    total += int(f[11]) + int(f[12])
print(total / tick)
EOF
}

scrape() {  # FILE URL...
  local file=$1 u
  shift
  : >"$file"
  for u in "$@"; do
    echo "# node $u" >>"$file"
    curl -sS --max-time 10 "$u/metrics" >>"$file" || echo "# scrape of $u failed" >>"$file"
  done
}

# -- PostgreSQL -------------------------------------------------------------------

note "starting a throwaway PostgreSQL"
eval "$("$pg_temp")"
pg_dir=$TROUPE_TEST_PG_DIR
pg_base=${TROUPE_TEST_DATABASE_URL%/postgres}
[ "$pg_base" != "$TROUPE_TEST_DATABASE_URL" ] || die "unexpected database URL $TROUPE_TEST_DATABASE_URL"

# -- one scenario -------------------------------------------------------------------

run_scenario() {  # NAME NODES
  local name=$1 n=$2 dir=$out/$1 i
  mkdir -p "$dir"
  psql -q "$TROUPE_TEST_DATABASE_URL" -c "create database bench_$name" >/dev/null
  local db_url=$pg_base/bench_$name
  read -r -a ports <<<"$(free_ports $((2 * n)))"
  local urls=() pids=() ids=()
  for ((i = 1; i <= n; i++)); do
    local hp=${ports[$((2 * i - 2))]} cp=${ports[$((2 * i - 1))]}
    local args=(serve --listen "127.0.0.1:$hp" --data-dir "$dir/data-node$i")
    if [ "$n" -gt 1 ]; then
      args+=(--set "cluster.listen=127.0.0.1:$cp" --set "cluster.node_id=node$i")
      ids+=("node$i")
    fi
    TROUPE_DATABASE_URL=$db_url TROUPE_ADMIN_USER=$admin_user \
    TROUPE_ADMIN_PASSWORD=$admin_password \
      "$troupe_bin" "${args[@]}" >"$dir/node$i.log" 2>&1 &
    node_pids+=($!)
    pids+=($!)
    urls+=("http://127.0.0.1:$hp")
    echo "node$i pid=$! http=127.0.0.1:$hp cluster=127.0.0.1:$cp" >>"$dir/nodes.txt"
    # Let the first node create the schema before the others join.
    [ "$i" -eq 1 ] && wait_ready "${urls[0]}" "${pids[0]}" "$dir/node1.log"
  done
  for ((i = 0; i < n; i++)); do
    wait_ready "${urls[$i]}" "${pids[$i]}" "$dir/node$((i + 1)).log"
  done
  if [ "$n" -gt 1 ]; then
    local token
    token=$(admin_token "${urls[0]}") || die "admin login on ${urls[0]} failed"
    wait_members "${urls[0]}" "$token" "${ids[*]}" "$dir/cluster-before.json"
  fi
  # What the idle nodes cost (heartbeats, timers) before any load.
  local c0 c1
  c0=$(pids_cpu "${pids[@]}")
  sleep "$idle_s"
  c1=$(pids_cpu "${pids[@]}")
  awk -v a="$c0" -v b="$c1" -v t="$idle_s" 'BEGIN { printf "%.4f\n", (b - a) / t }' \
    >"$dir/idle-cores.txt"
  note "$name: $n node(s) ready at ${urls[*]}, idle $(cat "$dir/idle-cores.txt") cores; loading"

  local url_list pid_list
  url_list=$(IFS=,; echo "${urls[*]}")
  pid_list=$(IFS=,; echo "${pids[*]}")
  timeout --kill-after=10 "$load_timeout_s" "$load_bin" \
    --url "$url_list" --pid "$pid_list" \
    --admin-user "$admin_user" --admin-password "$admin_password" \
    --devices "$devices" --connections "$connections" --duration "$duration" \
    --points "$points" --metrics "$metrics" \
    >"$dir/load.txt" 2>"$dir/load.err" &
  local load_pid=$!
  # The telemetry phase starts right after the "device login:" line: take
  # the "before" snapshots (metrics, PostgreSQL CPU) there.
  while kill -0 "$load_pid" 2>/dev/null && ! grep -qs '^device login:' "$dir/load.txt"; do
    sleep 0.05
  done
  scrape "$dir/metrics-before.txt" "${urls[@]}"
  pg_cpu >"$dir/pg-cpu-before.txt"
  local rc=0
  wait "$load_pid" || rc=$?
  pg_cpu >"$dir/pg-cpu-after.txt"
  scrape "$dir/metrics-after.txt" "${urls[@]}"
  if [ "$n" -gt 1 ]; then
    curl -sS --max-time 5 -H "Authorization: Bearer $token" \
      "${urls[0]}/api/v1/cluster" >"$dir/cluster-after.json" || true
  fi
  cat "$dir/load.txt" >&2
  cat "$dir/load.err" >&2
  [ "$rc" -eq 0 ] || failed+=("$name")
  [ "$rc" -eq 0 ] || note "$name: troupe_load exited $rc (see $dir/load.txt, $dir/load.err)"
  stop_nodes "$name"
  grep "^$name " "$out/stops.txt" >&2 || true
}

failed=()
for s in $scenarios; do
  case $s in
    one) run_scenario one 1 ;;
    three) run_scenario three 3 ;;
    *) die "unknown scenario '$s' (one, three)" ;;
  esac
done

# -- the table ------------------------------------------------------------------------

python3 - "$out" $scenarios <<'EOF'
import json, os, re, sys

out, names = sys.argv[1], sys.argv[2:]

def result(path):
    for line in open(path):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    return None

series_re = re.compile(r'^(\w+)(\{[^}]*\})?\s+(\S+)')
def metrics(path):
    """Sums of the series that matter, over all nodes in the file."""
    m = {"forwarded": 0.0, "moved": 0.0, "telemetry": 0.0, "telemetry_202": 0.0}
    for line in open(path):
        g = series_re.match(line)
        if not g:
            continue
        name, labels, value = g.group(1), g.group(2) or "", float(g.group(3))
        if name == "troupe_forwarded_requests_total" and 'kind="device"' in labels:
            m["forwarded"] += value
        elif name == "troupe_moved_answers_total" and 'kind="device"' in labels:
            m["moved"] += value
        elif (name == "troupe_http_requests_total"
              and 'route="/api/v1/device/telemetry"' in labels):
            m["telemetry"] += value
            if 'status="202"' in labels:
                m["telemetry_202"] += value
    return m

def num(x, d=0):
    return "n/a" if x is None else f"{x:,.{d}f}"

rows = []
notes = []
for name in names:
    d = os.path.join(out, name)
    r = result(os.path.join(d, "load.txt"))
    if r is None:
        rows.append([name, "troupe_load gave no RESULT"] + [""] * 9)
        continue
    nodes = len(r["urls"])
    req = r["requests"]
    pg = None
    try:
        pg = (float(open(os.path.join(d, "pg-cpu-after.txt")).read())
              - float(open(os.path.join(d, "pg-cpu-before.txt")).read()))
    except (OSError, ValueError):
        pass
    mb = metrics(os.path.join(d, "metrics-before.txt"))
    ma = metrics(os.path.join(d, "metrics-after.txt"))
    delta = {k: ma[k] - mb[k] for k in ma}
    share = None
    if nodes > 1 and delta["telemetry"] > 0:
        share = delta["forwarded"] / delta["telemetry"]
    lat = r["latency_ms"]
    try:
        idle = f'{float(open(os.path.join(d, "idle-cores.txt")).read()):.2f}'
    except (OSError, ValueError):
        idle = "n/a"
    rows.append([
        f"{name} ({nodes} node{'s' if nodes > 1 else ''})",
        num(r["requests_per_s"]), num(r["points_per_s"]),
        num(lat["p50"], 1), num(lat["p99"], 1),
        num(r.get("cpu_s_per_1k_requests"), 3),
        num(r.get("cpu_cores"), 2) + " (idle " + idle + ")",
        num(pg * 1000 / req if pg is not None and req else None, 3),
        "—" if nodes == 1 else (f"{share:.3f}" if share is not None else "n/a"),
        f'{r["accepted"]:,} / {r["rejected"]:,} / {r["errors"]:,} / '
        f'{r["transport_errors"]:,}',
    ])
    notes.append(
        f"{name}: {req:,} telemetry requests answered (load tool), "
        f"{delta['telemetry']:,.0f} counted by troupe "
        f"({delta['telemetry_202']:,.0f} with 202); "
        f"{delta['forwarded']:,.0f} forwarded, {delta['moved']:,.0f} "
        f"answered 'moved'; troupe CPU by node: {r.get('cpu_s_by_pid')} s; "
        f"requests by node: {r.get('requests_by_url')}; "
        f"PostgreSQL CPU {num(pg, 2)} s")

first = result(os.path.join(out, names[0], "load.txt")) or {}
print(f'{first.get("devices_ready", "?")} devices, '
      f'{first.get("connections", "?")} keep-alive connections '
      f'(round robin over the nodes), {first.get("duration_s", "?")} s, '
      f'{first.get("points_per_request", "?")} points per request '
      f'({first.get("metrics", "?")} metrics)')
print()
print("| scenario | req/s | points/s | p50 ms | p99 ms | troupe CPU s / 1k req "
      "| troupe cores busy (idle) | PostgreSQL CPU s / 1k req | forwarded share "
      "| 202 / 429+503 / other / no answer |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
for row in rows:
    print("| " + " | ".join(row) + " |")
print()
for n in notes:
    print(f"- {n}")
stops = os.path.join(out, "stops.txt")
if os.path.exists(stops):
    print()
    print("Stops (SIGTERM, SIGKILL after 40 s):")
    for line in open(stops):
        print(f"- {line.strip()}")
EOF
[ ${#failed[@]} -eq 0 ] || die "troupe_load failed in: ${failed[*]}"
