#!/usr/bin/env bash
# One node against this machine's ceilings, every figure of issue 7's table
# in one run: it starts its own throwaway PostgreSQL, an nginx (`return 200`,
# Debian's nginx-light) and one troupe node, then measures
#
#   ceilings  raw binary COPY (10,000-row commits); nginx POST and GET under
#             troupe_load's client (same threads, same keep-alive);
#   uploads   10-point uploads/s (troupe_load, 32 connections) and CPU per
#             upload, troupe and PostgreSQL together;
#   durable   100-point uploads: points/s committed vs raw COPY;
#   reads     GET /api/v1/devices/{id} as the admin vs nginx GET;
#   idle      resident memory per open idle keep-alive connection, troupe
#             and nginx (troupe_idle);
#   fleet     BENCH_FLEET uploaders every 5 s on their own keep-alive
#             connections while as many more hold long-polls and a commander
#             sends commands to them (troupe_fleet);
#   cold      devices loaded per second, one by one and batched
#             (troupe_coldload, on a scratch database).
#
# and prints the ratio table. Environment (all optional):
#   TROUPE_BUILD_DIR (build)  TROUPE_BIN (the troupe to measure, for A/B
#   runs; default $TROUPE_BUILD_DIR/troupe)  TROUPE_SET (extra --set k=v
#   settings for the node, space-separated)  BENCH_OUT (a temp dir)
#   BENCH_DURATION (20)  BENCH_FLEET (5000)  BENCH_FLEET_DURATION (60)
#   BENCH_IDLE_CONNECTIONS (5000)  BENCH_PARTS (all: ceilings uploads durable
#   reads idle fleet cold)  BENCH_TLS (0; 1: troupe and nginx serve HTTPS
#   only, with a throwaway certificate, and the parts that speak it run:
#   ceilings uploads reads idle fleet)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
build=${TROUPE_BUILD_DIR:-$repo/build}
pg_temp=$repo/scripts/pg-temp
duration=${BENCH_DURATION:-20}
fleet=${BENCH_FLEET:-5000}
fleet_duration=${BENCH_FLEET_DURATION:-60}
idle_conns=${BENCH_IDLE_CONNECTIONS:-5000}
tls=${BENCH_TLS:-0}
if [ "$tls" = 1 ]; then
  parts=${BENCH_PARTS:-ceilings uploads reads idle fleet}
else
  parts=${BENCH_PARTS:-ceilings uploads durable reads idle fleet cold}
fi
admin_user=admin
admin_password=bench-Admin-Pw-1
ready_timeout_s=90

die() { echo "bench/edge.sh: $*" >&2; exit 1; }
note() { echo "bench/edge.sh: $*" >&2; }
want() { [[ " $parts " == *" $1 "* ]]; }

bins=(troupe bench/troupe_load bench/troupe_ceilings bench/troupe_idle
      bench/troupe_fleet bench/troupe_coldload)
for b in "${bins[@]}"; do
  [ -x "$build/$b" ] || die "missing $build/$b; build it with: cmake --build $build --target ${b##*/}"
done
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$nginx_bin" ] || die "nginx is needed: scripts/install-deps --bench (Debian nginx-light)"
if [ "$tls" = 1 ]; then
  command -v openssl >/dev/null || die "openssl is needed: scripts/install-deps --bench"
fi
for c in curl psql python3 timeout; do
  command -v "$c" >/dev/null || die "$c is needed"
done

out=${BENCH_OUT:-$(mktemp -d /tmp/troupe-edge-bench.XXXXXX)}
mkdir -p "$out"
pg_dir=
node_pid=
nginx_dir=
cleanup() {
  local rc=$?
  [ -n "$node_pid" ] && kill -TERM "$node_pid" 2>/dev/null && wait "$node_pid" 2>/dev/null || true
  [ -n "$nginx_dir" ] && "$nginx_bin" -p "$nginx_dir" -c "$nginx_dir/nginx.conf" -e "$nginx_dir/error.log" -s stop 2>/dev/null || true
  [ -n "$pg_dir" ] && "$pg_temp" stop "$pg_dir" || true
  rm -rf "$out/data" 2>/dev/null || true
  echo "bench/edge.sh: raw output in $out" >&2
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# shellcheck source=bench/lib.sh
. "$here/lib.sh"

# -- PostgreSQL, nginx, troupe ---------------------------------------------------

note "starting a throwaway PostgreSQL"
eval "$("$pg_temp")"
pg_dir=$TROUPE_TEST_PG_DIR
pg_base=${TROUPE_TEST_DATABASE_URL%/postgres}
psql -q "$TROUPE_TEST_DATABASE_URL" -c "create database bench_edge" -c "create database bench_cold" >/dev/null

read -r http_port nginx_port <<<"$(free_ports 2)"
nginx_dir=$out/nginx
mkdir -p "$nginx_dir"
scheme=http
nginx_tls=
troupe_tls=()
if [ "$tls" = 1 ]; then
  # The same throwaway certificate (EC P-256) for both servers.
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$out/tls.key" -out "$out/tls.crt" -days 2 -subj /CN=127.0.0.1 \
    2>/dev/null || die "openssl could not make a certificate"
  scheme=https
  nginx_tls="ssl; ssl_certificate $out/tls.crt; ssl_certificate_key $out/tls.key"
  troupe_tls=(--set "http.tls_cert=$out/tls.crt" --set "http.tls_key=$out/tls.key")
fi
cat >"$nginx_dir/nginx.conf" <<EOF
# One worker per core, as troupe has one I/O thread per core.
worker_processes auto;
worker_rlimit_nofile 40000;
pid $nginx_dir/nginx.pid;
error_log $nginx_dir/error.log;
events { worker_connections 20000; }
http {
  access_log off;
  client_body_temp_path $nginx_dir/body;
  keepalive_timeout 120s;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$nginx_port backlog=4096 $nginx_tls;
    location / { return 200 '{"ok":true}'; }
  }
}
EOF
"$nginx_bin" -p "$nginx_dir" -c "$nginx_dir/nginx.conf" -e "$nginx_dir/error.log" \
  || die "nginx did not start; see $nginx_dir/error.log"
nginx_url=$scheme://127.0.0.1:$nginx_port
for _ in $(seq 1 50); do [ "$(http_code "$nginx_url/")" = 200 ] && break; sleep 0.1; done
[ "$(http_code "$nginx_url/")" = 200 ] || die "nginx does not answer at $nginx_url"
nginx_master=$(cat "$nginx_dir/nginx.pid")
nginx_workers=$(pgrep -P "$nginx_master" | paste -sd,)

url=$scheme://127.0.0.1:$http_port
TROUPE_DATABASE_URL=$pg_base/bench_edge TROUPE_ADMIN_USER=$admin_user \
TROUPE_ADMIN_PASSWORD=$admin_password \
  "${TROUPE_BIN:-$build/troupe}" serve --listen "127.0.0.1:$http_port" \
  --data-dir "$out/data" ${TROUPE_SET:+$(printf -- '--set %s ' $TROUPE_SET)} \
  "${troupe_tls[@]}" >"$out/node.log" 2>&1 &
node_pid=$!
wait_ready "$url" "$node_pid" "$out/node.log"
note "troupe pid $node_pid at $url; nginx workers $nginx_workers at $nginx_url"

load() {  # NAME ARGS...: troupe_load against troupe, RESULT in $out/NAME.txt
  # PostgreSQL's CPU over the measured phase (it starts after the "device
  # login:" line) goes to $out/NAME.pgcpu as "before after" seconds: its
  # backends come and go, so troupe_load cannot follow them by pid.
  local name=$1
  shift
  note "$name"
  timeout --kill-after=10 900 "$build/bench/troupe_load" --url "$url" \
    --admin-user "$admin_user" --admin-password "$admin_password" \
    --tenant "bench-$name" --prefix "$name-" --pid "$node_pid" "$@" \
    >"$out/$name.txt" 2>"$out/$name.err" &
  local pid=$! rc=0 before
  while kill -0 "$pid" 2>/dev/null && ! grep -qs '^device login:' "$out/$name.txt"; do
    sleep 0.05
  done
  before=$(pg_cpu)
  wait "$pid" || rc=$?
  echo "$before $(pg_cpu)" >"$out/$name.pgcpu"
  [ "$rc" -eq 0 ] || { cat "$out/$name.txt" "$out/$name.err" >&2; die "$name failed"; }
  grep -v '^RESULT' "$out/$name.txt" >&2
}

ceiling() {  # NAME ARGS...
  local name=$1
  shift
  note "ceiling $name"
  "$build/bench/troupe_ceilings" --name "$name" "$@" >"$out/ceil-$name.txt" \
    || die "ceiling $name failed"
  grep -v '^RESULT' "$out/ceil-$name.txt" >&2
}

# -- ceilings ----------------------------------------------------------------------

if want ceilings; then
  ceiling pg_copy --pg-url "$pg_base/bench_edge"
  ceiling nginx_post --http-url "$nginx_url" --http-method POST --http-path /x \
    --duration "$duration"
  ceiling nginx_get --http-url "$nginx_url" --http-method GET --http-path /x \
    --duration "$duration"
  # The COPY ceiling leaves gigabytes of WAL and dirty pages behind; written
  # out now, they are not charged to troupe's first part (PostgreSQL's CPU
  # there is what troupe costs it).
  psql -q "$pg_base/bench_edge" -c "CHECKPOINT" >/dev/null
fi

# -- troupe ------------------------------------------------------------------------

if want uploads; then
  load uploads --devices 1000 --connections 32 --duration "$duration" \
    --points 10 --metrics 2
fi
if want durable; then
  load durable --devices 1000 --connections 32 --duration "$duration" \
    --points 100 --metrics 10
fi
if want reads; then
  load reads --mode detail --devices 1000 --connections 32 \
    --duration "$duration"
fi
if want idle; then
  note "idle connections"
  "$build/bench/troupe_idle" --name troupe --url "$url" --path /healthz \
    --pid "$node_pid" --connections "$idle_conns" >"$out/idle-troupe.txt" \
    || die "troupe_idle against troupe failed"
  "$build/bench/troupe_idle" --name nginx --url "$nginx_url" --path / \
    --pid "$nginx_workers" --connections "$idle_conns" >"$out/idle-nginx.txt" \
    || die "troupe_idle against nginx failed"
  grep -hv '^RESULT' "$out/idle-troupe.txt" "$out/idle-nginx.txt" >&2
fi
if want fleet; then
  note "fleet: $fleet uploaders every 5 s, $fleet long-polls"
  timeout --kill-after=10 1800 "$build/bench/troupe_fleet" --url "$url" \
    --admin-user "$admin_user" --admin-password "$admin_password" \
    --tenant bench-fleet --uploaders "$fleet" --pollers "$fleet" \
    --interval-ms 5000 --points 3 --wait 30 --warmup 15 \
    --duration "$fleet_duration" --command-interval-ms 100 --pid "$node_pid" \
    >"$out/fleet.txt" 2>"$out/fleet.err" || { cat "$out/fleet.txt" "$out/fleet.err" >&2; die "fleet failed"; }
  grep -v '^RESULT' "$out/fleet.txt" >&2
fi
if want cold; then
  note "cold device loads"
  "$build/bench/troupe_coldload" --pg-url "$pg_base/bench_cold" \
    --devices 20000 >"$out/cold.txt" 2>"$out/cold.err" \
    || { cat "$out/cold.err" >&2; die "troupe_coldload failed"; }
  grep -v '^RESULT' "$out/cold.txt" >&2
fi

# -- the table ---------------------------------------------------------------------

python3 - "$out" "$node_pid" "$tls" <<'EOF'
import glob, json, os, sys

out = sys.argv[1]
res = {}
for path in glob.glob(os.path.join(out, "*.txt")):
    for line in open(path):
        if line.startswith("RESULT "):
            res[os.path.basename(path)[:-4]] = json.loads(line[7:])

def get(name, *keys):
    v = res.get(name)
    for k in keys:
        if v is None:
            return None
        v = v.get(k) if isinstance(v, dict) else None
    return v

def num(x, d=0):
    return "n/a" if x is None else f"{x:,.{d}f}"

def ratio(a, b, d=3):
    return "n/a" if a is None or not b else f"{a / b:.{d}f}"

rows = []
f_up = get("fleet", "uploads")
if f_up:
    rows.append(("fleet: uploads answered 202 (%s uploaders every 5 s + %s long-polls)"
                 % (num(get("fleet", "uploaders")), num(get("fleet", "pollers"))),
                 f'{f_up["accepted_pct"]:.2f} %, p99 {num(f_up["latency_ms"]["p99"], 1)} ms',
                 "", ""))
    rows.append(("fleet: command to a long-polling device, p99 ms",
                 num(get("fleet", "commands", "latency_ms", "p99"), 1)
                 + f' ({num(get("fleet", "commands", "delivered_pct"), 2)} % delivered)',
                 "", ""))
it, ing = get("idle-troupe", "bytes_per_connection"), get("idle-nginx", "bytes_per_connection")
rows.append(("memory per open idle connection, KiB", num(it and it / 1024, 2),
             num(ing and ing / 1024, 2) + " (nginx)", ratio(it, ing, 2)))
up, np = get("uploads", "requests_per_s"), get("ceil-nginx_post", "requests_per_s")
rows.append(("10-point uploads/s vs nginx `return 200` POST", num(up),
             num(np), ratio(up, np)))
rd, ng = get("reads", "requests_per_s"), get("ceil-nginx_get", "requests_per_s")
rows.append(("device detail reads/s vs nginx `return 200` GET", num(rd),
             num(ng), ratio(rd, ng)))
dp, cp = get("durable", "points_per_s"), get("ceil-pg_copy", "rows_per_s")
rows.append(("durable points/s, 100-point uploads, vs raw binary COPY rows/s",
             num(dp), num(cp), ratio(dp, cp)))
cpu, n = get("uploads", "cpu_s"), get("uploads", "requests")
try:
    a, b = map(float, open(os.path.join(out, "uploads.pgcpu")).read().split())
    pg = b - a
except (OSError, ValueError):
    pg = None
if cpu is not None and pg is not None and n:
    rows.append(("CPU per 10-point upload, troupe + PostgreSQL, us",
                 f"{(cpu + pg) * 1e6 / n:,.0f} ({cpu * 1e6 / n:,.0f} + {pg * 1e6 / n:,.0f})",
                 "", ""))
cb, cs = get("cold", "batched_per_s"), get("cold", "single_per_s")
rows.append(("cold device loads/s, batched vs one by one", num(cb), num(cs),
             ratio(cb, cs, 1)))

if sys.argv[3] == "1":
    print("Over HTTPS: troupe and nginx both serve TLS only (EC P-256 certificate).")
    print()
print("| figure | troupe | ceiling | ratio |")
print("|---|---:|---:|---:|")
for r in rows:
    print("| " + " | ".join(r) + " |")
print()
for name in ("uploads", "durable", "reads"):
    l = get(name, "latency_ms")
    if l:
        print(f'{name}: {num(get(name, "requests_per_s"))} req/s, p50 {l["p50"]} ms, '
              f'p99 {l["p99"]} ms; accepted {get(name, "accepted")}, '
              f'rejected {get(name, "rejected")}, errors {get(name, "errors")}, '
              f'no answer {get(name, "transport_errors")}')
for name in ("ceil-nginx_post", "ceil-nginx_get"):
    l = get(name, "latency_ms")
    if l:
        print(f'{name[5:]}: {num(get(name, "requests_per_s"))} req/s, p50 {l["p50"]} ms, p99 {l["p99"]} ms')
if f_up:
    print(f'fleet: offered {f_up["offered"]:,}, 202 {f_up["accepted"]:,}, timeouts {f_up["timeouts"]}, '
          f'latency p50 {f_up["latency_ms"]["p50"]} ms p99 {f_up["latency_ms"]["p99"]} ms max {f_up["latency_ms"]["max"]} ms; '
          f'server RSS {get("fleet", "server", "rss_kib_start")} -> {get("fleet", "server", "rss_kib_end")} KiB, '
          f'{get("fleet", "server", "cpu_cores")} cores; generator {get("fleet", "generator", "cpu_cores")} cores; '
          f'connections open at end {get("fleet", "connections", "open_at_end")}')
EOF
