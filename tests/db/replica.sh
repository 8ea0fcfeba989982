#!/usr/bin/env bash
# ctest db.replica (label db): reads that may be a little stale go to a
# streaming read replica while its measured lag is under
# storage.max_replica_lag_ms, and to the primary otherwise, always correct.
# On scripts/db-local's tier (a pg_auto_failover formation and a read
# replica), one troupe node with storage.replicas set:
#   1. the replica is current: history reads land on it (its read counter
#      grows, the primary's fallback counter does not);
#   2. its replay paused (pg_wal_replay_pause) while uploads go on: within
#      a few seconds it is left out, and reads, now on the primary, see
#      every new point;
#   3. replay resumed: it is taken back and serves reads again;
#   4. the replica stopped: reads still answer, from the primary; started
#      again: taken back.
# /api/v1/cluster shows the replica's state, lag and reads each time.
#
#   tests/db/replica.sh BUILD_DIR
set -euo pipefail
build=$(cd "${1:?usage: $0 BUILD_DIR}" && pwd)
root=$(cd "$(dirname "$0")/../.." && pwd)
[ -x "$build/troupe" ] || { echo "FAIL: missing $build/troupe" >&2; exit 1; }
. "$root/tests/db/lib.sh"
db_test_init replica
db_test_tier
db_test_node replica-Pw-0123 --set "storage.replicas=$TROUPE_DB_REPLICA_URL" \
  --set storage.max_replica_lag_ms=1000

# The API side, in Python: an admin, a device that uploads, history reads.
python3 - "$url" "$work/state.json" <<'PY' || fail "setting up the device"
import json, sys, urllib.request
url, out = sys.argv[1], sys.argv[2]
def call(method, path, body=None, token=None):
    req = urllib.request.Request(url + path, method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={'Content-Type': 'application/json',
                 **({'Authorization': 'Bearer ' + token} if token else {})})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read() or b'null')
admin = call('POST', '/api/v1/login', {'username': 'admin', 'password': 'replica-Pw-0123'})['token']
call('POST', '/api/v1/admin/tenants', {'id': 'rep', 'name': 'Replica test'}, admin)
dev = call('POST', '/api/v1/admin/devices', {'id': 'rep-1', 'name': 'r1', 'tenant': 'rep'}, admin)
json.dump({'admin': admin, 'secret': dev['secret']}, open(out, 'w'))
PY

# upload N: N more points of metric m on rep-1 (batch ids continue).
upload() {
  python3 - "$url" "$work/state.json" "$1" <<'PY'
import json, sys, time, urllib.request
url, state, n = sys.argv[1], json.load(open(sys.argv[2])), int(sys.argv[3])
def call(path, body, token=None):
    req = urllib.request.Request(url + path, method='POST', data=json.dumps(body).encode(),
        headers={'Content-Type': 'application/json',
                 **({'Authorization': 'Bearer ' + token} if token else {})})
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.status, json.loads(r.read())
_, login = call('/api/v1/device/login', {'device_id': 'rep-1', 'secret': state['secret']})
now = int(time.time() * 1000)
for i in range(n):
    st, _ = call('/api/v1/device/telemetry',
                 {'points': [{'metric': 'm', 'value': i, 'ts': now - n + i}]}, login['token'])
    assert st == 202, st
PY
}
# points: how many points of m the history read returns.
points() {
  python3 - "$url" "$work/state.json" <<'PY'
import json, sys, urllib.request
url, state = sys.argv[1], json.load(open(sys.argv[2]))
req = urllib.request.Request(url + '/api/v1/devices/rep-1/telemetry?metric=m&limit=100000',
                             headers={'Authorization': 'Bearer ' + state['admin']})
with urllib.request.urlopen(req, timeout=30) as r:
    print(len(json.loads(r.read())['points']))
PY
}
# replica FIELD: the replica's field in /api/v1/cluster's database view.
replica() {
  python3 - "$url" "$work/state.json" "$1" <<'PY'
import json, sys, urllib.request
url, state, field = sys.argv[1], json.load(open(sys.argv[2])), sys.argv[3]
req = urllib.request.Request(url + '/api/v1/cluster',
                             headers={'Authorization': 'Bearer ' + state['admin']})
with urllib.request.urlopen(req, timeout=10) as r:
    reps = json.loads(r.read())['database']['replicas']
v = reps[0].get(field, '') if reps else 'no replica'
print(str(v).lower() if isinstance(v, bool) else v)
PY
}
wait_serving() {  # true|false: until the replica's serving flag is that
  for _ in $(seq 1 100); do
    [ "$(replica serving)" = "$1" ] && return 0
    sleep 0.1
  done
  fail "the replica's serving flag did not become $1 within 10 s ($(replica why))"
}
reads() { metric troupe_db_replica_reads_total; }
fallback() { metric troupe_db_replica_fallback_reads_total; }
# Pausing replay takes a superuser: the one db-local's PostgreSQL runs as.
su=postgres
[ "$(id -u)" -eq 0 ] || su=$(id -un)
rep_sql() { psql "${TROUPE_DB_REPLICA_URL/user=troupe/user=$su}" -XAtqc "$1"; }

# 1. Current replica: the reads land there.
wait_serving true
upload 20
sleep 0.5  # well within the bound; the read may see the replica's state
r0=$(reads) f0=$(fallback)
for _ in 1 2 3 4 5; do n=$(points); done
[ "$n" -eq 20 ] || fail "current replica: read $n points, want 20"
[ $(( $(reads) - r0 )) -ge 5 ] || fail "current replica: reads did not land on the replica ($(( $(reads) - r0 )) of 5)"
[ "$(fallback)" -eq "$f0" ] || fail "current replica: $(( $(fallback) - f0 )) reads went to the primary"
echo "# current: 5 reads on the replica, lag $(replica lag_ms) ms"

# 2. Replay paused while writes go on: left out, reads correct from the primary.
rep_sql "select pg_wal_replay_pause()" >/dev/null
t0=$(date +%s.%N)
upload 10
for _ in $(seq 1 60); do
  [ "$(replica serving)" = false ] && break
  upload 1
done
out_s=$(python3 -c "import time; print(f'{time.time() - $t0:.1f}')")
[ "$(replica serving)" = false ] || fail "paused replica still serving ($(replica lag_ms) ms)"
want=$(psql "$TROUPE_DATABASE_URL" -XAtqc "select count(*) from telemetry t join metrics m on m.id = t.metric_id join devices d on d.key = t.device_key where d.id = 'rep-1' and m.name = 'm'" 2>/dev/null || echo "?")
r0=$(reads) f0=$(fallback)
n=$(points)
[ "$(( $(fallback) - f0 ))" -ge 1 ] || fail "paused: the read did not go to the primary"
[ "$(reads)" -eq "$r0" ] || fail "paused: a read went to the lagging replica"
[ "$want" = "?" ] || [ "$n" -eq "$want" ] || fail "paused: read $n points, the primary has $want"
stale=$(rep_sql "select count(*) from telemetry")
echo "# paused: left out after ${out_s} s (why: $(replica why)); read $n points from the primary, the replica has $stale"
[ "$stale" -lt "$n" ] || fail "paused: the replica was not behind ($stale >= $n), the test proves nothing"

# 3. Replay resumed: taken back.
rep_sql "select pg_wal_replay_resume()" >/dev/null
wait_serving true
r0=$(reads)
n=$(points)
[ "$(( $(reads) - r0 ))" -ge 1 ] || fail "resumed: the read did not go to the replica"
[ "$n" -eq "$want" ] || [ "$want" = "?" ] || fail "resumed: read $n points, want $want"
echo "# resumed: back in reads, lag $(replica lag_ms) ms"

# 4. Replica stopped: reads answer from the primary; started: taken back.
"$root/scripts/db-local" stop-replica "$db_dir" >>"$work/db-local.log" 2>&1 || fail "stop-replica"
wait_serving false
f0=$(fallback)
n=$(points)
[ "$n" -eq "$want" ] || [ "$want" = "?" ] || fail "stopped: read $n points, want $want"
[ "$(( $(fallback) - f0 ))" -ge 1 ] || fail "stopped: the read did not go to the primary"
echo "# stopped: left out ($(replica why)); reads from the primary"
"$root/scripts/db-local" start-replica "$db_dir" >>"$work/db-local.log" 2>&1 || fail "start-replica"
wait_serving true
r0=$(reads)
n=$(points)
[ "$(( $(reads) - r0 ))" -ge 1 ] || fail "restarted: the read did not go to the replica"
echo "# restarted: back in reads; $(reads) reads served by the replica in all"
grep -c "left out of reads" "$work/node.log" | sed 's/^/# node log: left out /'

# 5. A replica of another database is refused at start, naming it: its rows
# are not the catalog's. (The second data shard, unused here, serves as that
# other catalog.)
[ -n "${TROUPE_DB_SHARD2_URL:-}" ] || fail "scripts/db-local printed no TROUPE_DB_SHARD2_URL"
if TROUPE_ADMIN_USER=admin TROUPE_ADMIN_PASSWORD=replica-Pw-0123 \
  timeout 120 "$build/troupe" serve --listen 127.0.0.1:0 --data-dir "$work/data-other" \
  --set "storage.database_url=$TROUPE_DB_SHARD2_URL" \
  --set "storage.replicas=$TROUPE_DB_REPLICA_URL" >"$work/other.log" 2>&1; then
  fail "a node whose replica replays another database started"
fi
grep -q "storage.replicas\[0\].*replays another database" "$work/other.log" \
  || { tail -n 5 "$work/other.log" >&2; fail "the refusal does not name the replica"; }
echo "# a replica of another database: refused ($(grep -o 'replays another database[^;]*' "$work/other.log" | head -n1))"
echo "ok - db.replica"
