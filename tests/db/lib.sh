# Shared by tests/db/*.sh (sourced, after `set -euo pipefail`): a work dir,
# scripts/db-local's tier, one troupe node on it, and cleanup on exit (the
# logs' tails when the test failed). The caller sets `build` and `root`.
#
#   db_test_init NAME            work dir /tmp/troupe-db-NAME.XXXXXX, traps
#   db_test_tier                 scripts/db-local start; its exports apply
#   db_test_node PASSWORD ARGS   troupe serve (admin/PASSWORD) with ARGS;
#                                sets node_pid, port and url, waits for ready
#   metric NAME                  a metric summed over its series

fail() { echo "FAIL: $*" >&2; exit 1; }

db_test_init() {
  work=$(mktemp -d "/tmp/troupe-db-$1.XXXXXX")
  # PostgreSQL runs as the postgres user when we are root: it must reach db/.
  chmod 711 "$work"
  db_dir=$work/db
  node_pid=
  trap db_test_cleanup EXIT
  trap 'exit 130' INT TERM
}

db_test_cleanup() {
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

db_test_tier() {
  echo "# starting the tier (scripts/db-local)"
  local settings
  settings=$("$root/scripts/db-local" start "$db_dir" 2>"$work/db-local.log") \
    || { cat "$work/db-local.log" >&2; fail "scripts/db-local start"; }
  eval "$settings"
  [ -n "${TROUPE_DATABASE_URL:-}" ] || fail "scripts/db-local printed no TROUPE_DATABASE_URL"
  [ -n "${TROUPE_DB_REPLICA_URL:-}" ] || fail "scripts/db-local printed no TROUPE_DB_REPLICA_URL"
  # Each test names the settings it runs with.
  unset TROUPE_STORAGE_REPLICAS TROUPE_STORAGE_STANDBY_POLICY TROUPE_STORAGE_SHARDS
}

db_test_node() {
  local password=$1
  shift
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  url=http://127.0.0.1:$port
  TROUPE_ADMIN_USER=admin TROUPE_ADMIN_PASSWORD=$password \
    "$build/troupe" serve --listen "127.0.0.1:$port" --data-dir "$work/data" \
    "$@" >"$work/node.log" 2>&1 &
  node_pid=$!
  for _ in $(seq 1 300); do
    curl -fsS -o /dev/null "$url/readyz" 2>/dev/null && break
    kill -0 "$node_pid" 2>/dev/null || fail "the node exited"
    sleep 0.2
  done
  curl -fsS -o /dev/null "$url/readyz" || fail "the node is not ready"
}

metric() {
  curl -fsS "$url/metrics" | awk -v m="$1" '$1 == m || index($1, m "{") == 1 { s += $2 } END { printf "%d", s }'
}
