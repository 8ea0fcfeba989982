#!/usr/bin/env bash
# Measures a running troupe node against this machine's own ceilings and
# prints a markdown table of troupe's figures and their ratios to the
# ceilings. It never starts troupe: point it at one that runs.
#
# Environment:
#   TROUPE_URL              troupe base URL (required), e.g. http://127.0.0.1:8080
#   TROUPE_ADMIN_USER       admin username (default: admin)
#   TROUPE_ADMIN_PASSWORD   admin password (required)
#   TROUPE_DATABASE_URL     PostgreSQL URL for the raw COPY ceiling (optional;
#                           a scratch table is created there and dropped)
#   TROUPE_PID              troupe's pid, for CPU seconds per 1,000 requests
#                           (optional)
#   TROUPE_BUILD_DIR        where troupe_load and troupe_ceilings were built
#                           (default: <repo>/build; binaries in bench/)
#   BENCH_DEVICES (1000) BENCH_CONNECTIONS (32) BENCH_DURATION (20)
#   BENCH_POINTS (10) BENCH_METRICS (2) BENCH_TENANT (bench)
#   BENCH_HTTP_DURATION (10)  seconds of the bare cpp-httplib ceiling
#
# The tools' own reports go to stderr, the table to stdout; the RESULT lines
# are kept in $BENCH_OUT (default: a temp dir, named at the end).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
build=${TROUPE_BUILD_DIR:-$repo/build}
load_bin=$build/bench/troupe_load
ceil_bin=$build/bench/troupe_ceilings

die() { echo "bench/run.sh: $*" >&2; exit 1; }

: "${TROUPE_URL:?set TROUPE_URL to the running troupe node, e.g. http://127.0.0.1:8080}"
: "${TROUPE_ADMIN_PASSWORD:?set TROUPE_ADMIN_PASSWORD}"
admin_user=${TROUPE_ADMIN_USER:-admin}
devices=${BENCH_DEVICES:-1000}
connections=${BENCH_CONNECTIONS:-32}
duration=${BENCH_DURATION:-20}
points=${BENCH_POINTS:-10}
metrics=${BENCH_METRICS:-2}
tenant=${BENCH_TENANT:-bench}
http_duration=${BENCH_HTTP_DURATION:-10}

for b in "$load_bin" "$ceil_bin"; do
  [ -x "$b" ] || die "missing $b; build it with: cmake --build $build --target troupe_load troupe_ceilings"
done
command -v python3 >/dev/null || die "python3 is needed to format the table"

out=${BENCH_OUT:-$(mktemp -d /tmp/troupe-bench.XXXXXX)}
mkdir -p "$out"

# Fail early, and clearly, when nothing listens at TROUPE_URL.
if command -v curl >/dev/null; then
  curl -fsS --max-time 5 -o /dev/null "$TROUPE_URL/healthz" \
    || die "troupe does not answer GET $TROUPE_URL/healthz"
fi

# -- ceilings first, while troupe is idle --
ceil_args=(--http --connections "$connections" --duration "$http_duration")
if [ -n "${TROUPE_DATABASE_URL:-}" ]; then
  ceil_args+=(--pg-url "$TROUPE_DATABASE_URL")
else
  echo "bench/run.sh: TROUPE_DATABASE_URL unset: no raw COPY ceiling" >&2
fi
echo "== troupe_ceilings" >&2
"$ceil_bin" "${ceil_args[@]}" | tee "$out/ceilings.txt" >&2

# -- troupe under load --
load_args=(--url "$TROUPE_URL" --admin-user "$admin_user"
           --admin-password "$TROUPE_ADMIN_PASSWORD" --tenant "$tenant"
           --devices "$devices" --connections "$connections"
           --duration "$duration" --points "$points" --metrics "$metrics")
[ -n "${TROUPE_PID:-}" ] && load_args+=(--pid "$TROUPE_PID")
echo "== troupe_load" >&2
"$load_bin" "${load_args[@]}" | tee "$out/load.txt" >&2

# -- the table --
python3 - "$out/ceilings.txt" "$out/load.txt" <<'EOF'
import json, sys

def results(path):
    out = {}
    for line in open(path):
        if line.startswith("RESULT "):
            r = json.loads(line[len("RESULT "):])
            out[r.get("ceiling", r.get("tool"))] = r
    return out

ceil = results(sys.argv[1])
load = results(sys.argv[2]).get("troupe_load")
if load is None:
    sys.exit("bench/run.sh: troupe_load printed no RESULT line")
pg = ceil.get("pg_copy")
http = ceil.get("http")

def num(x, digits=0):
    if x is None:
        return "n/a"
    return f"{x:,.{digits}f}"

def ratio(a, b):
    if a is None or not b:
        return "n/a"
    return f"{a / b:.3f}"

lat, hlat = load["latency_ms"], (http or {}).get("latency_ms", {})
rows = [
    ("points/s stored (202) vs raw binary COPY rows/s",
     num(load["points_per_s"]), num(pg and pg["rows_per_s"]),
     ratio(load["points_per_s"], pg and pg["rows_per_s"])),
    ("requests/s vs bare cpp-httplib requests/s",
     num(load["requests_per_s"]), num(http and http["requests_per_s"]),
     ratio(load["requests_per_s"], http and http["requests_per_s"])),
    ("latency p50, ms", num(lat["p50"], 2), num(hlat.get("p50"), 2),
     ratio(lat["p50"], hlat.get("p50"))),
    ("latency p99, ms", num(lat["p99"], 2), num(hlat.get("p99"), 2),
     ratio(lat["p99"], hlat.get("p99"))),
    ("latency max, ms", num(lat["max"], 2), num(hlat.get("max"), 2), ""),
    ("troupe CPU s per 1,000 requests",
     num(load.get("cpu_s_per_1k_requests"), 4), "", ""),
    ("troupe CPU, cores busy", num(load.get("cpu_cores"), 2), "", ""),
    ("accepted / rejected (429, 503) / other errors / no answer",
     f'{load["accepted"]:,} / {load["rejected"]:,} / {load["errors"]:,} / '
     f'{load["transport_errors"]:,}', "", ""),
]
print(f'troupe at {load["url"]}: {load["devices_ready"]:,} devices, '
      f'{load["connections"]} connections, {load["duration_s"]} s, '
      f'{load["points_per_request"]} points per request '
      f'({load["metrics"]} metrics)')
print()
print("| measure | troupe | ceiling | ratio |")
print("|---|---:|---:|---:|")
for r in rows:
    print("| " + " | ".join(r) + " |")
if pg:
    print()
    print(f'Raw COPY: {pg["runs"]} run(s) of {pg["batches"]} x '
          f'{pg["rows_per_batch"]:,} rows, a commit per batch, 1 connection, '
          f'indexed table, PostgreSQL {pg["server_version"]}, median run.')
if http:
    print(f'Bare cpp-httplib: pool {http["pool"]}, {http["connections"]} '
          f'keep-alive connections, {http["body_bytes"]}-byte POST, '
          f'{http["duration_s"]} s.')
EOF
echo >&2
echo "bench/run.sh: raw output in $out" >&2
