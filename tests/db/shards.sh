#!/usr/bin/env bash
# ctest db.shards (label db): a troupe node whose catalog is scripts/db-local's
# pg_auto_failover formation (data shard 0) and whose storage.shards names
# db-local's second, independent PostgreSQL instance (data shard 1), and
# storage.replicas names both read replicas (the catalog's and the shard's).
#   - 200 devices are spread over both (each shard within 40-60 %), and each
#     device's points are stored on its own shard only;
#   - under upload load the second shard's postmaster is stopped
#     (immediate shutdown) for 10 s: devices of shard 0 keep getting 202
#     for every upload; devices of shard 1 get 202 (spooled) or 503 only;
#   - while it is down, shard 1's own read replica keeps its devices in the
#     device list; with that replica stopped too, the device list still
#     names every device (shard 1's from the catalog, marked
#     data_unavailable; the page partial) and the alert list answers,
#     partial;
#   - once it is back, every point answered 202 is on its device's shard,
#     none twice, none on the other shard, and the lists are whole;
#   - a shard-1 device's history is read from shard 1's replica, complete.
#
#   tests/db/shards.sh BUILD_DIR
set -euo pipefail
build=$(cd "${1:?usage: $0 BUILD_DIR}" && pwd)
root=$(cd "$(dirname "$0")/../.." && pwd)
[ -x "$build/troupe" ] || { echo "FAIL: missing $build/troupe" >&2; exit 1; }
. "$root/tests/db/lib.sh"
db_test_init shards
db_test_tier
[ -n "${TROUPE_DB_SHARD2_URL:-}" ] || fail "scripts/db-local printed no TROUPE_DB_SHARD2_URL"
[ -n "${TROUPE_DB_SHARD2_REPLICA_URL:-}" ] || fail "scripts/db-local printed no TROUPE_DB_SHARD2_REPLICA_URL"
db_test_node shards-Pw-0123 --set "storage.shards=$TROUPE_DB_SHARD2_URL" \
  --set "storage.replicas=$TROUPE_DB_REPLICA_URL,$TROUPE_DB_SHARD2_REPLICA_URL"

python3 - "$url" "$root/scripts/db-local" "$db_dir" <<'PY'
import json, subprocess, sys, threading, time, os
import http.client
from concurrent.futures import ThreadPoolExecutor

base, db_local, db_dir = sys.argv[1], sys.argv[2], sys.argv[3]
host, port = base.split("//")[1].split(":")
catalog, shard2 = os.environ["TROUPE_DATABASE_URL"], os.environ["TROUPE_DB_SHARD2_URL"]

def fail(msg):
    print("FAIL: " + msg, file=sys.stderr)
    sys.exit(1)

def sql(url, q):
    out = subprocess.run(["psql", url, "-XAtc", q], check=True,
                         capture_output=True, text=True).stdout
    return [line.split("|") for line in out.splitlines() if line]

local = threading.local()
def call(method, path, body=None, token=None):
    if not hasattr(local, "c"):
        local.c = http.client.HTTPConnection(host, int(port), timeout=30)
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = "Bearer " + token
    try:
        local.c.request(method, path, json.dumps(body) if body is not None else None, headers)
        r = local.c.getresponse()
        data = r.read()
        return r.status, (json.loads(data) if data else None)
    except Exception as e:
        local.c.close()
        del local.c
        return 0, str(e)

st, b = call("POST", "/api/v1/login", {"username": "admin", "password": "shards-Pw-0123"})
if st != 200: fail(f"admin login: {st} {b}")
admin = b["token"]
tenant = "sh-%d" % os.getpid()
st, b = call("POST", "/api/v1/admin/tenants", {"id": tenant, "name": tenant}, admin)
if st != 201: fail(f"tenant: {st} {b}")
ids = ["shd-%d-%03d" % (os.getpid(), i) for i in range(200)]
st, b = call("POST", "/api/v1/admin/devices",
             [{"id": i, "name": i, "tenant": tenant} for i in ids], admin)
if st != 201: fail(f"registration: {st} {b}")
items = b["items"] if isinstance(b, dict) else b
secrets = {d["id"]: d["secret"] for d in items}
placed = {r[0]: int(r[1]) for r in sql(catalog, "select id, data_shard from devices where tenant = '%s'" % tenant)}
keys = {r[0]: r[1] for r in sql(catalog, "select id, key from devices where tenant = '%s'" % tenant)}
on1 = sum(1 for s in placed.values() if s == 1)
print(f"# placement: shard 0: {len(ids) - on1}, shard 1: {on1}")
if not (80 <= on1 <= 120): fail(f"shard 1 holds {on1} of 200 devices")
copies = int(sql(shard2, "select count(*) from devices")[0][0])
if copies != on1: fail(f"shard 1 has {copies} device copies, the catalog places {on1} there")

tokens = {}
for i in ids:
    st, b = call("POST", "/api/v1/device/login", {"device_id": i, "secret": secrets[i]})
    if st != 200: fail(f"device login {i}: {st} {b}")
    tokens[i] = b["token"]

acked = {i: [] for i in ids}          # ts of acknowledged points
statuses = {0: {}, 1: {}}
latency = {0: [], 1: []}
lock = threading.Lock()
batch = {i: 0 for i in ids}
stop = threading.Event()

def upload(i):
    batch[i] += 1
    now = int(time.time() * 1000)
    pts = [{"metric": "m", "value": batch[i] * 10 + k, "ts": now - 5 + k} for k in range(5)]
    t0 = time.time()
    st, _ = call("POST", "/api/v1/device/telemetry", {"batch_id": batch[i], "points": pts}, tokens[i])
    with lock:
        s = placed[i]
        statuses[s][st] = statuses[s].get(st, 0) + 1
        latency[s].append(time.time() - t0)
        if st == 202:
            acked[i].extend(p["ts"] for p in pts)

def load():
    with ThreadPoolExecutor(16) as pool:
        while not stop.is_set():
            t0 = time.time()
            list(pool.map(upload, ids))
            time.sleep(max(0, 0.5 - (time.time() - t0)))

worker = threading.Thread(target=load)
worker.start()
time.sleep(5)
before = {s: dict(c) for s, c in statuses.items()}
subprocess.run([db_local, "stop-shard", db_dir], check=True)
stopped = time.time()
time.sleep(2)

def device_list():
    st, b = call("GET", "/api/v1/devices?limit=1000", None, admin)
    if st != 200: fail(f"device list: {st} {b}")
    return {d["id"]: d for d in b["items"] if d["id"] in placed}, b

def replica(name):
    st, b = call("GET", "/api/v1/cluster", None, admin)
    if st != 200: fail(f"cluster: {st} {b}")
    return next(r for r in b["database"]["replicas"] if r["name"] == name)

# Shard 1's own replica still serves its reads: the list is whole, with
# shard 1's latest values.
listed, page = device_list()
if "partial" in page or set(listed) != set(ids) or any("m" not in d["latest"] for d in listed.values()):
    fail(f"device list with shard 1 down and its replica serving: partial {page.get('partial')}, "
         f"{len(listed)} devices, {sum(1 for d in listed.values() if 'm' not in d['latest'])} without latest values")
print("# shard 1 down, its replica serving: the device list is whole, latest values from the replica")

# Without the replica too, lists still answer: shard 1's devices come from
# the catalog, marked; shard 0's keep their latest values; the page says it
# is partial.
subprocess.run([db_local, "stop-replica", db_dir, "shard"], check=True)
deadline = time.time() + 10
while replica("replica-1")["serving"]:
    if time.time() > deadline: fail("replica-1 still serving 10 s after it stopped")
    time.sleep(0.2)
listed, page = device_list()
if page.get("partial") is not True: fail(f"device list without shard 1 is not marked partial: {page.get('partial')}")
if set(listed) != set(ids): fail(f"device list without shard 1 has {len(listed)} of {len(ids)} devices")
for i, d in listed.items():
    if placed[i] == 1 and (d.get("data_unavailable") is not True or d["latest"]):
        fail(f"device {i} of the stopped shard: {d}")
    if placed[i] == 0 and ("data_unavailable" in d or "m" not in d["latest"]):
        fail(f"device {i} of shard 0: {d}")
st, b = call("GET", "/api/v1/alerts", None, admin)
if st != 200 or b.get("partial") is not True: fail(f"alert list without shard 1: {st} {b}")
print(f"# lists without shard 1 and its replica: {len(listed)} devices ({sum(1 for i in listed if placed[i] == 1)} marked data_unavailable), alerts partial")
time.sleep(max(0, 10 - (time.time() - stopped)))
subprocess.run([db_local, "start-shard", db_dir], check=True)
# The replica streams again once its primary is back.
subprocess.run([db_local, "start-replica", db_dir, "shard"], check=True)
print(f"# shard 1 down for {time.time() - stopped:.1f} s")
time.sleep(8)
stop.set()
worker.join()
print(f"# statuses: shard 0 {statuses[0]}, shard 1 {statuses[1]}")
for s in (0, 1):
    l = sorted(latency[s])
    print(f"# upload latency, devices of shard {s}: p50 {l[len(l) // 2] * 1000:.0f} ms, p99 {l[len(l) * 99 // 100] * 1000:.0f} ms, max {l[-1] * 1000:.0f} ms")
# Once shard 1 answers again, the list is whole.
deadline = time.time() + 30
while True:
    listed, page = device_list()
    if "partial" not in page and not any("data_unavailable" in d for d in listed.values()): break
    if time.time() > deadline: fail(f"the device list is still partial after shard 1 returned")
    time.sleep(0.5)
if set(statuses[0]) != {202}: fail(f"devices of shard 0 got {statuses[0]}")
if not set(statuses[1]) <= {202, 503}: fail(f"devices of shard 1 got {statuses[1]}")

# Every acknowledged point on its device's shard, once; none elsewhere.
deadline = time.time() + 60
while True:
    missing = 0
    counts = {}
    for s, url in ((0, catalog), (1, shard2)):
        for k, n in sql(url, "select device_key, count(*) from telemetry group by 1"):
            counts[(s, k)] = int(n)
    for i in ids:
        missing += max(0, len(acked[i]) - counts.get((placed[i], keys[i]), 0))
    if missing == 0 or time.time() > deadline:
        break
    time.sleep(1)
if missing: fail(f"{missing} acknowledged points are missing")
for s, url in ((0, catalog), (1, shard2)):
    dups = int(sql(url, "select count(*) from (select 1 from telemetry group by device_key, metric_id, ts having count(*) > 1) d")[0][0])
    if dups: fail(f"shard {s}: {dups} points stored twice")
    for i in ids:
        if placed[i] != s and counts.get((s, keys[i]), 0):
            fail(f"device {i} of shard {placed[i]} has points on shard {s}")
total = sum(len(a) for a in acked.values())
print(f"# {total} acknowledged points, all stored on their device's shard, none twice")

# History reads of a shard-1 device go to shard 1's replica, complete.
def replica_reads(name):
    c = http.client.HTTPConnection(host, int(port), timeout=30)
    c.request("GET", "/metrics")
    text = c.getresponse().read().decode()
    return sum(float(l.split()[-1]) for l in text.splitlines()
               if l.startswith("troupe_db_replica_reads_total{") and f'replica="{name}"' in l)
r1 = replica("replica-1")
if r1["shard"] != 1: fail(f"replica-1 is shown on shard {r1['shard']}")
if replica("replica-0")["shard"] != 0: fail("replica-0 is not shown on shard 0")
deadline = time.time() + 30
while not replica("replica-1")["serving"]:
    if time.time() > deadline: fail(f"replica-1 not serving again: {replica('replica-1')}")
    time.sleep(0.2)
dev = next(i for i in ids if placed[i] == 1 and acked[i])
deadline = time.time() + 30
while True:
    before = replica_reads("replica-1")
    st, b = call("GET", f"/api/v1/devices/{dev}/telemetry?metric=m&from=0&limit=10000", None, admin)
    if st != 200: fail(f"history of {dev}: {st} {b}")
    got = {p[0] for p in b["points"]}
    if set(acked[dev]) <= got and replica_reads("replica-1") > before: break
    if time.time() > deadline:
        fail(f"history of {dev}: {len(set(acked[dev]) - got)} acknowledged points missing, "
             f"replica-1 reads {before} -> {replica_reads('replica-1')}")
    time.sleep(0.5)
print(f"# history of a shard-1 device read from shard 1's replica: {len(got)} points, replica-1 served {replica_reads('replica-1'):.0f} reads")
PY
echo "# spool records of shard 1's importers: $(metric troupe_spool_records_total)"
echo "PASS"
