#!/usr/bin/env bash
# The console's end-to-end tests: a fresh catalog database and a second data
# shard (storage.shards), two troupe nodes in one cluster, headless Chromium
# driving the console served by node 1.
#
#   eval "$(scripts/pg-temp)"        # or any server where we may CREATE DATABASE
#   tests/ui/run.sh BUILD_DIR [OUT_DIR]
#
# Needs TROUPE_TEST_DATABASE_URL, node and npm, chromium (CHROMIUM overrides
# /usr/bin/chromium). Screenshots go to OUT_DIR (default BUILD_DIR/ui-out).
# When node 1 serves no console (or TROUPE_UI_PREVIEW=1, to try the sources
# without rebuilding the binary), `vite preview` serves web/ in front of
# node 1 instead (a warning says so).
set -euo pipefail

build=$(cd "${1:?usage: $0 BUILD_DIR [OUT_DIR]}" && pwd)
out=${2:-$build/ui-out}
root=$(cd "$(dirname "$0")/../.." && pwd)
: "${TROUPE_TEST_DATABASE_URL:?needs a PostgreSQL URL (eval \"\$(scripts/pg-temp)\")}"
bin=$build/troupe
[ -x "$bin" ] || { echo "no troupe binary at $bin" >&2; exit 1; }

admin_user=admin
admin_password="admin-ui-$RANDOM$RANDOM"
db="troupe_ui_$$_$RANDOM"
base=${TROUPE_TEST_DATABASE_URL%%\?*}
query=${TROUPE_TEST_DATABASE_URL#"$base"}
db_url="${base%/*}/$db$query"
shard_url="${base%/*}/${db}_s1$query"
work=$(mktemp -d /tmp/troupe-ui.XXXXXX)
pids=()

cleanup() {
  local rc=$?
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ "$rc" -ne 0 ]; then
    for f in "$work"/*.log; do
      [ -f "$f" ] && { echo "---- tail of $(basename "$f") ----"; tail -n 30 "$f"; }
    done
  fi
  for d in "$db" "${db}_s1"; do
    psql -q "$TROUPE_TEST_DATABASE_URL" -c "DROP DATABASE IF EXISTS $d WITH (FORCE)" >/dev/null 2>&1 || true
  done
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}

start_node() { # id http_port cluster_port
  mkdir -p "$work/$1"
  TROUPE_DATABASE_URL=$db_url TROUPE_ADMIN_USER=$admin_user TROUPE_ADMIN_PASSWORD=$admin_password \
    "$bin" serve --node-id "$1" --listen "127.0.0.1:$2" --cluster-listen "127.0.0.1:$3" \
    --data-dir "$work/$1" --set analysis.interval_ms=500 --set "storage.shards=$shard_url" \
    --set cluster.heartbeat_ms=500 --set cluster.lease_ms=3000 >"$work/$1.log" 2>&1 &
  pids+=($!)
}

wait_ready() { # url
  for _ in $(seq 1 300); do
    curl -fsS -o /dev/null "$1/readyz" 2>/dev/null && return 0
    sleep 0.2
  done
  echo "node at $1 not ready after 60 s" >&2
  return 1
}

psql -q "$TROUPE_TEST_DATABASE_URL" -c "CREATE DATABASE $db" >/dev/null
psql -q "$TROUPE_TEST_DATABASE_URL" -c "CREATE DATABASE ${db}_s1" >/dev/null

h1=$(free_port); c1=$(free_port); h2=$(free_port); c2=$(free_port)
start_node ui1 "$h1" "$c1"
wait_ready "http://127.0.0.1:$h1"
start_node ui2 "$h2" "$c2"
wait_ready "http://127.0.0.1:$h2"

cd "$root/web"
[ -d node_modules ] || npm ci --no-audit --no-fund

url1="http://127.0.0.1:$h1"
console_url=$url1
if [ -n "${TROUPE_UI_PREVIEW:-}" ] || ! curl -fsS "$url1/" 2>/dev/null | grep -qi '<!doctype html'; then
  echo "WARNING: the console comes from web/ through vite preview in front of node 1, not from the node" >&2
  node node_modules/vite/bin/vite.js build --outDir "$work/dist" --emptyOutDir --logLevel warn
  pp=$(free_port)
  # vite itself, not npx, so that the trap's kill reaches the server.
  TROUPE_URL=$url1 node node_modules/vite/bin/vite.js preview --outDir "$work/dist" --port "$pp" --strictPort --host 127.0.0.1 >"$work/preview.log" 2>&1 &
  pids+=($!)
  console_url="http://127.0.0.1:$pp"
  for _ in $(seq 1 100); do curl -fsS -o /dev/null "$console_url/" 2>/dev/null && break; sleep 0.2; done
fi

mkdir -p "$out"
TROUPE_URL=$url1 TROUPE_URL2="http://127.0.0.1:$h2" TROUPE_CONSOLE_URL=$console_url \
  TROUPE_ADMIN_USER=$admin_user TROUPE_ADMIN_PASSWORD=$admin_password TROUPE_UI_OUT=$out \
  TROUPE_UI_SHARD_DB="${db}_s1" TROUPE_UI_PG_ADMIN_URL=$TROUPE_TEST_DATABASE_URL \
  TZ=UTC node e2e/console.e2e.mjs
