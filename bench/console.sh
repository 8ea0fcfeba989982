#!/usr/bin/env bash
# How long the console's device page takes to fetch and draw 30 days of one
# metric, with real data. It needs nothing running: it starts a throwaway
# PostgreSQL and one troupe node (serving the console it embeds), creates a
# tenant and a device through the API and uploads 30 days of metric `temp`
# through the device API, one point every 10 s (ts from now-30d+10min to
# now, ~259,000 points, a daily and weekly curve plus noise) in 10,000-point
# gzipped JSON requests. Once every point reads back (and the background
# analysis has merged its hourly rollups, so it does not run during the
# measurements), it measures, BENCH_RUNS times each:
#
#   api    GET /api/v1/devices/{id}/telemetry?metric=temp&from&to&step with
#          curl (gzip, as a browser asks), the plan the page makes for 30d
#          (web/src/lib/range.js: 720 buckets of 1h);
#   sql    for comparison, the same buckets computed from raw points in
#          PostgreSQL (what steps that are not whole hours cost; EXPLAIN
#          ANALYZE, TIMING OFF; the plan is kept in explain-30d.txt);
#   page   web/e2e/draw.bench.mjs in headless Chromium: logs in through the
#          page, first loads of /devices/{id}?range=30d (navigation start to
#          chart drawn) and, on a page opened at 24h, clicks on 30d timed to
#          the chart drawn, alternating with 24h so each is a real fetch.
#
# and prints a markdown table (median and max ms). Environment (all
# optional): TROUPE_BUILD_DIR (build)  TROUPE_BIN (the troupe to measure;
# default $TROUPE_BUILD_DIR/troupe)  TROUPE_SET (extra --set k=v settings
# for the node, space-separated)  CHROMIUM (/usr/bin/chromium)  BENCH_OUT
# (raw output; a temp dir)  BENCH_RUNS (5)  BENCH_DAYS (30; less for a
# quick try)  BENCH_SETTLE_S (120: how long to wait for the analysis).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
build=${TROUPE_BUILD_DIR:-$repo/build}
bin=${TROUPE_BIN:-$build/troupe}
pg_temp=$repo/scripts/pg-temp
chromium=${CHROMIUM:-/usr/bin/chromium}
runs=${BENCH_RUNS:-5}
days=${BENCH_DAYS:-30}
settle_s=${BENCH_SETTLE_S:-120}
admin_user='admin'
admin_password=bench-Admin-Pw-1
metric=temp
ready_timeout_s=90

die() { echo "bench/console.sh: $*" >&2; exit 1; }
note() { echo "bench/console.sh: $*" >&2; }

[ -x "$bin" ] || die "missing $bin; build it with: cmake --build $build --target troupe"
[ -x "$chromium" ] || die "no Chromium at $chromium (Debian: apt-get install chromium; or set CHROMIUM)"
[ -f "$repo/web/node_modules/puppeteer-core/package.json" ] \
  || die "web/node_modules has no puppeteer-core: run npm ci in $repo/web"
for c in curl psql python3 node timeout; do
  command -v "$c" >/dev/null || die "$c is needed"
done
[[ "$runs" =~ ^[1-9][0-9]*$ ]] || die "BENCH_RUNS must be a positive integer"
if ! [[ "$days" =~ ^[1-9][0-9]*$ ]] || [ "$days" -gt 30 ]; then die "BENCH_DAYS must be 1..30"; fi

out=${BENCH_OUT:-$(mktemp -d /tmp/troupe-console-bench.XXXXXX)}
mkdir -p "$out"
pg_dir=
node_pid=
cleanup() {
  local rc=$?
  if [ -n "$node_pid" ] && kill -TERM "$node_pid" 2>/dev/null; then
    for _ in $(seq 1 300); do kill -0 "$node_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$node_pid" 2>/dev/null || true   # still there after 30 s
    wait "$node_pid" 2>/dev/null || true
  fi
  [ -n "$pg_dir" ] && "$pg_temp" stop "$pg_dir" || true
  rm -rf "$out/data" 2>/dev/null || true
  echo "bench/console.sh: raw output in $out" >&2
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# shellcheck source=bench/lib.sh
. "$here/lib.sh"

# -- PostgreSQL and troupe ---------------------------------------------------------

note "starting a throwaway PostgreSQL"
eval "$("$pg_temp")"
pg_dir=$TROUPE_TEST_PG_DIR
db_url=${TROUPE_TEST_DATABASE_URL%/postgres}/bench_console
psql -q "$TROUPE_TEST_DATABASE_URL" -c "create database bench_console" >/dev/null

read -r http_port <<<"$(free_ports 1)"
url=http://127.0.0.1:$http_port
# shellcheck disable=SC2086 # TROUPE_SET splits into settings
TROUPE_DATABASE_URL=$db_url TROUPE_ADMIN_USER=$admin_user \
TROUPE_ADMIN_PASSWORD=$admin_password \
  "$bin" serve --listen "127.0.0.1:$http_port" --data-dir "$out/data" \
  ${TROUPE_SET:+$(printf -- '--set %s ' $TROUPE_SET)} >"$out/node.log" 2>&1 &
node_pid=$!
wait_ready "$url" "$node_pid" "$out/node.log"
curl -fsS --max-time 10 "$url/" | grep -qi '<div id="app">' \
  || die "$url/ serves no console: build troupe with the console embedded"
note "troupe pid $node_pid at $url"

# -- tenant, device, 30 days of data -----------------------------------------------

json() {  # METHOD PATH [BODY]: the admin's call, body on stdout; fails on non-2xx
  curl -fsS --max-time 30 -X "$1" -H "Authorization: Bearer $admin_token" \
    -H 'Content-Type: application/json' ${3:+--data "$3"} "$url$2"
}
field() { python3 -c 'import json,sys; v=json.load(sys.stdin)
for k in sys.argv[1:]: v=v[int(k)] if isinstance(v,list) else v[k]
print(v)' "$@"; }

admin_token=$(curl -fsS --max-time 30 -H 'Content-Type: application/json' \
  --data "{\"username\":\"$admin_user\",\"password\":\"$admin_password\"}" \
  "$url/api/v1/login" | field token) || die "admin login failed"
tenant=bench-console
device=console-$(date +%s)
json POST /api/v1/admin/tenants "{\"id\":\"$tenant\",\"name\":\"Console bench\"}" >/dev/null
secret=$(json POST /api/v1/admin/devices \
  "{\"id\":\"$device\",\"name\":\"Console bench\",\"tenant\":\"$tenant\"}" | field secret) \
  || die "cannot register device $device"

note "uploading $days days of $metric every 10 s to $device"
python3 - "$url" "$device" "$secret" "$metric" "$days" >"$out/upload.txt" <<'EOF' \
  || { cat "$out/upload.txt" >&2; die "upload failed"; }
import gzip, json, math, random, sys, time, urllib.error, urllib.request
url, device, secret, metric, days = sys.argv[1:6]
H, D = 3600_000, 86400_000

def call(path, body, token=None, gz=False):
    data = json.dumps(body, separators=(",", ":")).encode()
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = "Bearer " + token
    if gz:
        data = gzip.compress(data, 5)
        headers["Content-Encoding"] = "gzip"
    for attempt in range(10):
        req = urllib.request.Request(url + path, data=data, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, json.load(r)
        except urllib.error.HTTPError as e:
            if e.code in (429, 503) and attempt < 9:
                time.sleep(min(5.0, float(e.headers.get("Retry-After") or 1)))
                continue
            raise SystemExit(f"{path} -> {e.code} {e.read()[:300]!r}")
    raise SystemExit(f"{path}: still refused after 10 tries")

token = call("/api/v1/device/login", {"device_id": device, "secret": secret})[1]["token"]
rng = random.Random(7)
now = int(time.time() * 1000)
step = 10_000
ts = now - int(days) * D + 10 * 60_000   # 10 min inside the 30-day limit
points, t0, batch = 0, time.monotonic(), 0
while ts <= now:
    chunk = []
    while ts <= now and len(chunk) < 10_000:
        v = (20 + 4 * math.sin(2 * math.pi * ts / D) + 1.5 * math.sin(2 * math.pi * ts / (7 * D))
             + rng.gauss(0, 0.3))
        chunk.append({"metric": metric, "value": round(v, 3), "ts": ts})
        ts += step
    batch += 1
    status, r = call("/api/v1/device/telemetry", {"batch_id": batch, "points": chunk}, token, gz=True)
    if status != 202 or r.get("accepted") != len(chunk):
        raise SystemExit(f"batch {batch}: {status} {r}")
    points += len(chunk)
el = time.monotonic() - t0
print(json.dumps({"points": points, "requests": batch, "seconds": round(el, 2),
                  "points_per_s": round(points / el), "first_ts": ts - points * step, "last_ts": ts - step}))
EOF
points=$(field points <"$out/upload.txt")
note "uploaded: $(cat "$out/upload.txt")"

# Every point readable: the day buckets of the whole range count them all.
deadline=$((SECONDS + 60))
while :; do
  got=$(json GET "/api/v1/devices/$device/telemetry?metric=$metric&from=0&step=1d&limit=100" \
    | python3 -c 'import json,sys; print(sum(p[1] for p in json.load(sys.stdin)["points"]))') || got=0
  [ "$got" -ge "$points" ] && break
  [ $SECONDS -lt $deadline ] || die "only $got of $points points readable after 60 s"
  sleep 1
done
note "all $points points readable"

# The background analysis folds the upload into hourly rollups (and checks
# them for anomalies) on its own schedule; let it finish first.
psql_q() { psql -qtAX "$db_url" -c "$1"; }
deadline=$((SECONDS + settle_s))
while :; do
  pending=$(psql_q "select (select count(*) from rollup_deltas)
                    + (select count(*) from rollups where not checked)") || pending='?'
  hours=$(psql_q "select count(*) from rollups r join devices d on d.key = r.device_key
                  where d.id = '$device'") || hours='?'
  [ "$pending" = 0 ] && [ "$hours" != 0 ] && break
  if [ $SECONDS -ge $deadline ]; then
    note "analysis not settled after ${settle_s}s ($pending rows pending); measuring anyway"
    break
  fi
  sleep 2
done
note "analysis: $hours hourly rollups, $pending pending"

# -- measurements --------------------------------------------------------------------

# The plan the page makes for 30d, from the page's own code.
read -r step step_ms <<<"$(cd "$repo/web" && node --input-type=module -e '
import { planRange, rangeByKey } from "./src/lib/range.js";
const p = planRange(rangeByKey("30d").ms, Date.now());
console.log(p.step, p.stepMs);')"
[ -n "$step_ms" ] || die "cannot read the 30d plan from web/src/lib/range.js"

note "api: GET telemetry for 30d, step=$step, $runs times"
: >"$out/api.txt"
for _ in $(seq 1 "$runs"); do
  now=$(date +%s%3N)
  from=$(( (now - 30 * 86400000) / step_ms * step_ms ))
  q="metric=$metric&from=$from&to=$now&step=$step"
  r=$(curl -sS --max-time 60 --compressed -o "$out/api-30d.json" \
    -w '%{http_code} %{time_total} %{size_download}' \
    -H "Authorization: Bearer $admin_token" "$url/api/v1/devices/$device/telemetry?$q") \
    || die "GET telemetry failed"
  read -r code secs bytes <<<"$r"
  [ "$code" = 200 ] || die "GET telemetry?$q -> $code: $(head -c 300 "$out/api-30d.json")"
  echo "$secs $bytes" >>"$out/api.txt"
done
buckets=$(python3 -c 'import json,sys; print(len(json.load(sys.stdin)["points"]))' <"$out/api-30d.json")
note "api: $buckets buckets, $(awk '{print $1 * 1000}' "$out/api.txt" | paste -sd' ') ms"

note "sql: the bucket query alone, $runs times"
key=$(psql_q "select key from devices where id = '$device'")
now=$(date +%s%3N)
from=$(( (now - 30 * 86400000) / step_ms * step_ms ))
# storage/queries.cpp bucket_history()'s query over raw points (what steps
# that are not whole hours run; whole hours come from the rollups), with
# its parameters in place, for comparison. Keep it in step with that
# function.
sql="SELECT b, n, mn, mx, av FROM (
 SELECT (t - ((t % $step_ms) + $step_ms) % $step_ms) AS b, count(*) AS n,
  min(value) AS mn, max(value) AS mx, avg(value) AS av
 FROM (SELECT p.ms AS t, p.value
  FROM telemetry_chunks c, unnest(c.ms, c.vals) AS p(ms, value)
  WHERE c.device_key = $key
  AND c.metric_id = (SELECT id FROM metrics WHERE name = '$metric')
  AND c.hour >= floor($from / 3600000.0)::bigint
  AND c.hour <= floor($now / 3600000.0)::bigint
  AND p.ms >= $from AND p.ms <= $now) p
 GROUP BY 1 ORDER BY 1 DESC LIMIT 1000) s"
psql_q "EXPLAIN (ANALYZE, BUFFERS) $sql" >"$out/explain-30d.txt" || die "EXPLAIN failed"
: >"$out/sql.txt"
for _ in $(seq 1 "$runs"); do
  psql_q "EXPLAIN (ANALYZE, TIMING OFF) $sql" | sed -n 's/^Execution Time: \([0-9.]*\) ms/\1/p' >>"$out/sql.txt"
done

note "page: headless Chromium, $runs first loads and $runs clicks each way"
TROUPE_URL=$url TROUPE_ADMIN_USER=$admin_user TROUPE_ADMIN_PASSWORD=$admin_password \
BENCH_DEVICE=$device BENCH_METRIC=$metric BENCH_RUNS=$runs CHROMIUM=$chromium \
  timeout --kill-after=10 300 node "$repo/web/e2e/draw.bench.mjs" >"$out/draw.txt" 2>"$out/draw.err" \
  || { cat "$out/draw.txt" "$out/draw.err" >&2; die "draw.bench.mjs failed"; }
grep -v '^RESULT' "$out/draw.txt" >&2

# -- the table -----------------------------------------------------------------------

python3 - "$out" "$step" "$buckets" "$days" <<'EOF'
import json, os, statistics, sys
out, step, buckets, days = sys.argv[1:5]
def read(name):
    return open(os.path.join(out, name)).read()
up = json.loads(read("upload.txt"))
api = [float(l.split()[0]) * 1000 for l in read("api.txt").split("\n") if l.strip()]
api_bytes = int(read("api.txt").split()[1])
sql = [float(l) for l in read("sql.txt").split() if l.strip()]
page = next(json.loads(l[7:]) for l in read("draw.txt").splitlines() if l.startswith("RESULT "))

def row(what, xs):
    if not xs:
        return f"| {what} | 0 | n/a | n/a |"
    return f"| {what} | {len(xs)} | {statistics.median(xs):,.0f} | {max(xs):,.0f} |"
def prow(what, s):
    return row(what, s["runs"]) if s else f"| {what} | 0 | n/a | n/a |"

print(f"{up['points']:,} points of one metric over {days} days (every 10 s), uploaded in "
      f"{up['requests']} requests in {up['seconds']} s ({up['points_per_s']:,} points/s); "
      f"30d = {buckets} buckets of {step}, {api_bytes:,} bytes gzipped.")
print()
print("| measurement | runs | median ms | max ms |")
print("|---|---:|---:|---:|")
print(row(f"API: GET telemetry 30d step={step} (curl, gzip)", api))
print(row("  for comparison, SQL: the same buckets from raw points (EXPLAIN ANALYZE, timing off)", sql))
print(prow("page: click 30d -> chart drawn", page.get("click_30d_ms")))
print(prow("  of which the 30d request (resource timing)", page.get("fetch_30d_ms")))
print(prow("  of which response end -> drawn", page.get("response_to_drawn_30d_ms")))
print(prow("page: click 24h -> chart drawn (the way back)", page.get("click_24h_ms")))
print(prow("page: first load ?range=30d, navigation -> chart drawn", page.get("first_load_ms")))
EOF
