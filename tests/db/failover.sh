#!/usr/bin/env bash
# ctest db.failover (label db): a troupe node on a pg_auto_failover formation
# (scripts/db-local: monitor, primary, synchronous secondary) rides through
# failovers under upload load with nothing acknowledged lost or stored twice:
#   1. a planned failover (pg_autoctl perform failover);
#   2. SIGKILL of the new primary's postmaster and its keeper (a real
#      failover by the monitor).
# Each time, every point answered 202 is in PostgreSQL exactly once
# afterwards (count = accepted requests x points per request, and no
# duplicate (device, metric, ts)). It prints how long writes to PostgreSQL
# stopped (the importers' first "spooling" to their last "replayed") and
# the uploads' latency.
#
#   tests/db/failover.sh BUILD_DIR
set -euo pipefail
build=$(cd "${1:?usage: $0 BUILD_DIR}" && pwd)
root=$(cd "$(dirname "$0")/../.." && pwd)
for b in "$build/troupe" "$build/bench/troupe_load"; do
  [ -x "$b" ] || { echo "FAIL: missing $b" >&2; exit 1; }
done
work=$(mktemp -d /tmp/troupe-db-failover.XXXXXX)
# PostgreSQL runs as the postgres user when we are root: it must reach db/.
chmod 711 "$work"
db_dir=$work/db
node_pid=
cleanup() {
  local rc=$?
  [ -n "$node_pid" ] && kill -TERM "$node_pid" 2>/dev/null && wait "$node_pid" 2>/dev/null || true
  if [ "$rc" -ne 0 ]; then
    echo "---- scripts/db-local (tail) ----"; tail -n 30 "$work/db-local.log" 2>/dev/null || true
    echo "---- node log (tail) ----"; tail -n 40 "$work/node.log" 2>/dev/null || true
  fi
  [ -d "$db_dir" ] && "$root/scripts/db-local" stop "$db_dir" >/dev/null 2>&1 || true
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
fail() { echo "FAIL: $*" >&2; exit 1; }

echo "# starting the formation (scripts/db-local)"
settings=$("$root/scripts/db-local" start "$db_dir" 2>"$work/db-local.log") \
  || { cat "$work/db-local.log" >&2; fail "scripts/db-local start"; }
eval "$settings"
[ -n "${TROUPE_DATABASE_URL:-}" ] || fail "scripts/db-local printed no TROUPE_DATABASE_URL"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
url=http://127.0.0.1:$port
TROUPE_ADMIN_USER=admin TROUPE_ADMIN_PASSWORD=failover-Pw-0123 \
  "$build/troupe" serve --listen "127.0.0.1:$port" --data-dir "$work/data" \
  >"$work/node.log" 2>&1 &
node_pid=$!
for _ in $(seq 1 300); do
  curl -fsS -o /dev/null "$url/readyz" 2>/dev/null && break
  kill -0 "$node_pid" 2>/dev/null || fail "the node exited"
  sleep 0.2
done
curl -fsS -o /dev/null "$url/readyz" || fail "the node is not ready"

count() { psql "$TROUPE_DATABASE_URL" -XAtc "$1"; }

round() {  # NAME ACTION...: uploads for 40 s, runs ACTION after 10 s
  local name=$1
  shift
  local before
  before=$(count "select count(*) from telemetry")
  "$build/bench/troupe_load" --url "$url" --admin-user admin \
    --admin-password failover-Pw-0123 --tenant "fo-$name" --prefix "$name-" \
    --devices 100 --connections 16 --duration 40 --points 10 --metrics 2 \
    >"$work/$name.txt" 2>&1 &
  local load=$!
  sleep 10
  "$@" >>"$work/db-local.log" 2>&1 || { cat "$work/db-local.log" >&2; fail "$name: $*"; }
  wait "$load" || { cat "$work/$name.txt" >&2; fail "$name: the load failed"; }
  local accepted
  accepted=$(grep -o '"accepted":[0-9]*' "$work/$name.txt" | cut -d: -f2)
  [ -n "$accepted" ] && [ "$accepted" -gt 0 ] || fail "$name: nothing accepted"
  # Spooled batches replay within seconds once a primary is writable.
  local want=$((before + accepted * 10)) got=0
  for _ in $(seq 1 120); do
    got=$(count "select count(*) from telemetry" 2>/dev/null || echo 0)
    [ "$got" -ge "$want" ] && break
    sleep 0.5
  done
  local dups
  dups=$(count "select count(*) from (select 1 from telemetry group by device_key, metric_id, ts having count(*) > 1) d")
  grep -v '^RESULT' "$work/$name.txt" | sed "s/^/# $name: /"
  echo "# $name: accepted $accepted uploads = $((accepted * 10)) points; stored $((got - before)); duplicates $dups"
  [ "$got" -eq "$want" ] || fail "$name: $((want - got)) acknowledged points missing (or $((got - want)) extra)"
  [ "$dups" -eq 0 ] || fail "$name: $dups points stored twice"
}

gap() {  # FROM_LINE: how long writes went to the spool, from the node's log
  python3 - "$work/node.log" "$1" <<'PY'
import re, sys, datetime
first = last = None
for line in open(sys.argv[1], errors='replace').readlines()[int(sys.argv[2]):]:
    m = re.match(r'(\S+Z) ', line)
    if not m:
        continue
    t = datetime.datetime.fromisoformat(m.group(1).replace('Z', '+00:00'))
    if 'spooling' in line and first is None:
        first = t
    if 'replayed' in line:
        last = t
print('no spooling' if first is None else
      f'{(last - first).total_seconds():.1f} s' if last else 'never replayed')
PY
}

round planned "$root/scripts/db-local" failover "$db_dir"
echo "# planned failover: writes spooled for $(gap 0)"
mark=$(wc -l <"$work/node.log")
round killed "$root/scripts/db-local" kill-primary "$db_dir" --keeper
echo "# primary SIGKILLed with its keeper: writes spooled for $(gap "$mark")"
echo "ok - db.failover"
